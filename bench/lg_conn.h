/*
 * lg_conn.h - one keep-alive HTTP/1.1 client connection of the load
 * generator, over plain TCP or TLS, driven by an edge-triggered epoll loop.
 *
 * A connection carries one request at a time (no pipelining), as AWS SDKs
 * do.  Connecting and the TLS handshake are blocking (they happen before
 * the measurement, or after an error); requests and responses are
 * non-blocking.  The connection owns its socket, its SSL and both buffers.
 */
#ifndef HSM_BENCH_LG_CONN_H
#define HSM_BENCH_LG_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "common/buf.h"
#include "common/result.h"

typedef struct lg_target {
	struct sockaddr_storage addr;
	socklen_t addr_len;
	char host_header[300]; /* "127.0.0.1:8080", sent as Host and signed */
	SSL_CTX *tls;          /* NULL: plain HTTP; borrowed */
} lg_target;

typedef enum lg_state { LG_IDLE, LG_BUSY, LG_DEAD } lg_state;

typedef enum lg_io { LG_IO_AGAIN, LG_IO_DONE, LG_IO_ERROR } lg_io;

typedef struct lg_conn {
	int fd;
	SSL *ssl;
	lg_state st;
	hsm_buf out;        /* the request being written */
	size_t out_off;
	hsm_buf in;         /* the response being read */
	size_t hdr_len;     /* 0 until the header block is complete */
	size_t body_len;
	int status;         /* HTTP status of the response */
	bool server_closes; /* the response said Connection: close */
	uint64_t sched_ns;  /* when the request in flight was due */
	uint64_t next_ns;   /* constant-rate mode: when the next request is due */
} lg_conn;

/* Connects (and handshakes) in blocking mode, then makes the socket non-blocking. */
hsm_result lg_conn_open(lg_conn *c, const lg_target *t) HSM_MUST_CHECK;
/* Closes the socket and frees the buffers; the struct can be opened again. */
void lg_conn_close(lg_conn *c);
/* Starts sending c->out (filled by the caller) and reads the response. */
lg_io lg_conn_start(lg_conn *c);
/* Makes progress after an epoll event. */
lg_io lg_conn_pump(lg_conn *c);
/* The response body of the last completed exchange. */
const char *lg_conn_body(const lg_conn *c, size_t *len);

#endif
