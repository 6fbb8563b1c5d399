/*
 * http_internal.h - the HTTP server's private structures, shared by
 * http.c (server and workers), http_conn.c (connections), http_req.c
 * (requests and responses), http_tls.c and http_addr.c.
 *
 * Ownership.  The server owns its workers.  A worker owns its event_base,
 * evhttp, listener, connections (hsm_http_conn) and its pool of free
 * requests; all of them are touched only by the worker's thread, except the
 * completion stack (`done`) and the wakeup eventfd, which any thread may use.
 * A request (hsm_http_req) belongs to its handler between the handler call and
 * hsm_http_respond(), and to its worker otherwise.
 */
#ifndef HSM_SERVER_HTTP_INTERNAL_H
#define HSM_SERVER_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>
#include <openssl/ssl.h>

#include "common/buf.h"
#include "common/util.h"
#include "server/http.h"

struct event_base;
struct event;
struct evhttp;
struct evhttp_bound_socket;
struct evhttp_connection;
struct evhttp_request;
struct bufferevent;
struct evbuffer_cb_entry;

typedef struct hsm_http_worker hsm_http_worker;
typedef struct hsm_http_conn hsm_http_conn;

/* Where a connection is in its request cycle; decides which timeout applies. */
typedef enum conn_state {
	CONN_READING,  /* a request has begun (or the connection is new): read deadline */
	CONN_HANDLING, /* a request is with the handler or being written */
	CONN_IDLE,     /* keep-alive, waiting for the next request: idle timeout */
} conn_state;

struct hsm_http_conn {
	hsm_http_worker *w;
	struct bufferevent *bev;
	struct evhttp_connection *evcon; /* NULL until adopted (conn_adopt_new) */
	struct evbuffer_cb_entry *input_cb;
	conn_state state;
	uint64_t deadline_ns; /* end of the read deadline, when CONN_READING */
	int fd;
	bool tls;
	bool reject;          /* over max_connections: close once adopted */
	bool subject_done;    /* client_subject has been looked up */
	char *client_subject; /* owned; NULL without a verified client certificate */
	/* Keeps the socket in epoll while a response is pending (http_conn.c). */
	struct event *hold_ev;
	bool hold_skip; /* the hold event's next run is the request's own bytes */
	bool corked;    /* TCP_CORK set until the reply is written (TLS) */
	hsm_http_conn *prev, *next; /* the worker's list of connections */
	hsm_http_conn *next_new;    /* the worker's list awaiting adoption */
};

typedef enum req_state { REQ_FREE, REQ_HANDLER, REQ_QUEUED, REQ_SENDING } req_state;

struct hsm_http_req {
	hsm_http_worker *w;
	struct evhttp_request *evreq;
	hsm_http_conn *conn;
	hsm_http_req *next; /* pool or completion stack */
	req_state state;
	const char *method;
	const char *path;
	const char *query;
	const uint8_t *body;
	size_t body_len;
	const char *remote_addr;
	uint16_t remote_port;
	uint64_t start_ns;
	bool head;
	char id[HSM_UUID_STRLEN + 1];
	/* The response, copied by hsm_http_respond: content type, then
	 * n_extra name/value pairs (each NUL-terminated), then the body. */
	int status;
	bool failed; /* the copy failed: answer a bare 500 */
	bool close;  /* end the connection after this response */
	size_t n_extra;
	size_t resp_body_off;
	size_t resp_body_len;
	hsm_buf out; /* wiped before reuse or free: the body may be plaintext */
};

#define HSM_HTTP_RAND_POOL 4096
#define HSM_HTTP_REQ_POOL_MAX 1024
#define HSM_HTTP_PASS_END_MAX 4

struct hsm_http_worker {
	hsm_http_server *srv;
	unsigned index;
	pthread_t thread;
	bool thread_started;
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	int listen_fd;         /* own socket (SO_REUSEPORT) or -1 when shared */
	int wake_fd;           /* eventfd: completions queued or stop requested */
	struct event *wake_ev;
	struct event *adopt_ev; /* adopts connections accepted in this loop pass */
	struct event *sweep_ev; /* enforces read deadlines */
	struct event *stop_ev;  /* end of the grace period */
	struct event *resume_ev; /* resumes accepting after EMFILE */
	struct event *rearm_ev;  /* accepts again after yielding a pass (http_balance.c) */
	_Atomic(hsm_http_req *) done; /* completion stack, pushed from any thread */
	/* Replies given on the worker itself, sent later in the same loop pass,
	 * and the calls asked for at the end of the pass (hsm_http_at_pass_end) */
	hsm_http_req *local_head, *local_tail;
	struct {
		void (*fn)(void *);
		void *arg;
	} pass_end[HSM_HTTP_PASS_END_MAX];
	size_t n_pass_end;
	struct event *local_ev;
	hsm_http_conn *conns;
	size_t n_conns;
	hsm_http_conn *new_conns;
	hsm_http_req *pool;
	size_t n_pool;
	_Atomic size_t inflight; /* requests with the handler or queued back */
	bool stopping;
	bool balance_paused;    /* not accepting: it holds more than its share (http_balance.c) */
	uint8_t rand_pool[HSM_HTTP_RAND_POOL];
	size_t rand_pos;
	int64_t date_sec;
	char date[32];
};

struct hsm_http_server {
	hsm_http_config cfg; /* strings dropped: not kept after _new */
	hsm_http_handler handler;
	void *arg;
	SSL_CTX *tls;
	unsigned n_workers;
	hsm_http_worker *workers;
	int shared_fd;
	uint16_t port;
	_Atomic uint32_t n_conns;
	_Atomic uint32_t n_accepting; /* workers not paused by the balance (shared socket) */
	_Atomic bool stopping;
	_Atomic uint32_t grace_ms;
	/* Connection of each file descriptor, to find it from a request. */
	_Atomic(hsm_http_conn *) *by_fd;
	size_t by_fd_len;
	bool started;
	bool joined;
};

/* http_addr.c: a listening socket bound to addr (SO_REUSEPORT if asked). */
hsm_result hsm_http_listen_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport,
                                  const char *name, int *fd) HSM_MUST_CHECK;
uint16_t hsm_http_sockaddr_port(const struct sockaddr_storage *ss);
void hsm_http_sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port);

/* http_tls.c */
hsm_result hsm_http_tls_new(const hsm_http_config *cfg, SSL_CTX **out) HSM_MUST_CHECK;
/* http_tls_ticket.c: session tickets under keys rotated hourly. */
hsm_result hsm_http_tls_tickets_init(SSL_CTX *ctx) HSM_MUST_CHECK;
/* The verified client certificate's subject, or NULL (also on allocation failure). */
char *hsm_http_tls_client_subject(SSL *ssl);

/* http_conn.c */
struct bufferevent *hsm_http_conn_bevcb(struct event_base *base, void *arg);
void hsm_http_conn_adopt_cb(evutil_socket_t fd, short what, void *arg);
void hsm_http_conn_sweep_cb(evutil_socket_t fd, short what, void *arg);
hsm_http_conn *hsm_http_conn_of(hsm_http_worker *w, struct evhttp_request *evreq);
/* The request was handed to the handler / its response was written. */
void hsm_http_conn_handling(hsm_http_conn *conn);
/* Re-arms conn's hold event if it let go (http_conn.c); called as a response starts. */
void hsm_http_conn_hold(hsm_http_conn *conn);
/*
 * Writes the reply evhttp has just queued on conn, now rather than on the next
 * loop pass, and lets evhttp finish the request (which may free conn).  Only
 * where no evhttp call for conn is on the stack: the completion drain (run from
 * the wake event, the local event, or another connection's request callback).
 */
void hsm_http_conn_write_now(hsm_http_conn *conn);
void hsm_http_conn_sent(struct evhttp_request *evreq, void *arg);
/* Closes idle connections (start of a stop) or all but those handling (its end). */
void hsm_http_conn_close_idle(hsm_http_worker *w, bool all_but_handling);
void hsm_http_worker_check_stopped(hsm_http_worker *w);
hsm_result hsm_http_fd_table_init(hsm_http_server *srv) HSM_MUST_CHECK;

/* http_req.c */
void hsm_http_request_cb(struct evhttp_request *evreq, void *arg);
hsm_http_req *hsm_http_req_get(hsm_http_worker *w);
/* Wipes the response buffer and returns req to its worker's pool. */
void hsm_http_req_put(hsm_http_req *req);
/* Frees a worker's pool of requests. */
void hsm_http_req_pool_free(hsm_http_worker *w);
/* The current Date header value. */
const char *hsm_http_worker_date(hsm_http_worker *w);

/* http_balance.c: after a connection was accepted by (accepted) or removed
 * from w, on w's thread; and the rearm_ev callback. */
void hsm_http_balance(hsm_http_worker *w, bool accepted);
void hsm_http_balance_rearm_cb(evutil_socket_t fd, short what, void *arg);

/* http_resp.c */
/* Marks the calling thread as w's worker thread (NULL when it leaves). */
void hsm_http_set_current_worker(hsm_http_worker *w);
hsm_http_worker *hsm_http_current_worker(void);
void hsm_http_inflight_add(hsm_http_worker *w, int delta);
/*
 * Takes every queued completion of w: writes them (send) or, once the worker
 * has stopped, only releases them.
 */
void hsm_http_worker_drain(hsm_http_worker *w, bool send);
/* local_ev: sends the replies given on the worker during this loop pass,
 * then makes the calls asked for at its end. */
void hsm_http_local_cb(evutil_socket_t fd, short what, void *arg);

#endif
