/*
 * http_client.h - a deliberately small HTTP/1.1 client for the server's unit
 * tests: plain sockets or OpenSSL, buffered so pipelined responses can be
 * read one by one.  It reports failures instead of asserting, so it is safe
 * on any thread.
 */
#ifndef HSM_TEST_HTTP_CLIENT_H
#define HSM_TEST_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define TC_BUF_MAX (256 * 1024)

typedef struct tc_conn {
	int fd;
	SSL *ssl; /* NULL for plain HTTP; owned */
	size_t len;
	char buf[TC_BUF_MAX];
} tc_conn;

typedef struct tc_resp {
	int status;
	char head[16384]; /* status line and headers, NUL-terminated */
	char *body;       /* malloc'd, NUL-terminated; free with tc_resp_clear */
	size_t body_len;
} tc_resp;

/* Connects to 127.0.0.1 (or ::1 when v6) on port; receive timeout in ms. NULL on failure. */
tc_conn *tc_connect(uint16_t port, bool v6, int timeout_ms);
/* Connects to 127.0.0.1 from src_ip (another loopback address: "127.0.0.2"). */
tc_conn *tc_connect_from(uint16_t port, const char *src_ip, int timeout_ms);
/* Runs a TLS handshake over c with ctx; false (and SSL left for inspection) on failure. */
bool tc_tls(tc_conn *c, SSL_CTX *ctx);
void tc_close(tc_conn *c);
bool tc_send(tc_conn *c, const void *p, size_t n);
bool tc_sendf(tc_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reads one response; head_only for answers to HEAD.  False on EOF, timeout or garbage. */
bool tc_read(tc_conn *c, tc_resp *r, bool head_only);
void tc_resp_clear(tc_resp *r);
/* Copies header name's value (case-insensitive) into out; false when absent. */
bool tc_header(const tc_resp *r, const char *name, char *out, size_t cap);
/*
 * Waits up to timeout_ms for the server to close c (read returns 0 or an
 * error other than a timeout); discards data meanwhile.  Returns the ms
 * waited, or -1 if still open.
 */
long tc_wait_closed(tc_conn *c, int timeout_ms);
/* One request on a new connection; true when a response with `status` came back. */
bool tc_simple(uint16_t port, const char *request, int status, tc_resp *out);
long tc_ms_since(const struct timespec *start);

#endif
