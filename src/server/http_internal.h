/*
 * http_internal.h - the HTTP server's private structures, shared by http.c
 * (server, workers and their event loops), http_conn.c (connections: reading,
 * parsing, writing, timeouts), http_req.c (requests), http_resp.c (responses
 * and the way back to a worker), http_balance.c, http_tls.c and http_addr.c.
 *
 * Ownership.  The server owns its workers.  A worker owns its epoll instance,
 * its connections (hsm_http_conn), its pools of free requests and input
 * buffers; all of them are touched only by the worker's thread, except the
 * completion stack (`done`) and the wakeup eventfd, which any thread may use.
 * A request (hsm_http_req) belongs to its handler between the handler call and
 * hsm_http_respond(), and to its worker otherwise.  While a request is with its
 * handler, its connection's input buffer (where the request's strings and body
 * live) is neither read into nor moved.
 */
#ifndef HSM_SERVER_HTTP_INTERNAL_H
#define HSM_SERVER_HTTP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/buf.h"
#include "common/net.h"
#include "common/util.h"
#include "server/conn_limit.h"
#include "server/http.h"
#include "common/http_parse.h"

typedef struct hsm_http_worker hsm_http_worker;
typedef struct hsm_http_conn hsm_http_conn;

/* Where a connection is in its request cycle; decides which timeout applies. */
typedef enum conn_state {
	CONN_PROXY,     /* a trusted balancer's PROXY header, before all else: read deadline from accept */
	CONN_HANDSHAKE, /* TLS handshake: read deadline from accept */
	CONN_READING,   /* a request has begun (or the connection is new): read deadline */
	CONN_HANDLING,  /* a request is with the handler: no deadline */
	CONN_WRITING,   /* its response is going out: write timeout since the last progress */
	CONN_IDLE,      /* keep-alive, waiting for the next request: idle timeout */
	CONN_LINGER,    /* answered, closing: input discarded until EOF, briefly */
} conn_state;

struct hsm_http_conn {
	hsm_http_worker *w;
	int fd;
	SSL *ssl; /* NULL for plain HTTP */
	conn_state state;
	uint64_t deadline_ns;
	/* Bytes read and not yet consumed; wiped when consumed or freed. */
	uint8_t *in;
	size_t in_len, in_cap;
	size_t scan;       /* hsm_http_head_end's resume point */
	size_t lead;       /* hsm_http_head_start's: empty lines' bytes before the request */
	size_t head_len;   /* the current request's head, once parsed (else 0) */
	size_t consumed;   /* bytes of in the current request takes, once complete */
	hsm_http_chunked chunked;
	hsm_http_req *req; /* the request being read, handled or answered */
	size_t out_pos;    /* bytes of req->out written */
	bool rd_ready;     /* may hold unread bytes without a new epoll edge */
	bool sock_drained; /* TLS: OpenSSL's last read from the socket came back short */
	bool peer_closed;  /* the client shut its side (EOF or EPOLLRDHUP) */
	bool close_after;  /* close once the response is written (after a linger: http_conn.c) */
	bool continue_sent;
	bool closed;       /* closed: freed at the end of the pass, or when its request returns */
	bool queued;       /* on the worker's run queue */
	bool deferred;     /* on the worker's later list: its budget for a pass was spent */
	bool subject_done; /* client_subject has been looked up */
	bool hs_started;   /* TLS: the handshake has had its first step (a ClientHello came) */
	bool hs_queued;    /* on the worker's queue of handshakes waiting for a later pass */
	bool tls_warm;     /* TLS: keeps OpenSSL's record buffers between requests */
	char *client_subject; /* owned; NULL without a verified client certificate */
	char addr[HSM_HTTP_ADDR_MAX];
	uint16_t port;
	hsm_source src;   /* the source counted in the server's conn_limit */
	bool src_counted; /* src holds one of its max_connections_per_source for this connection */
	hsm_http_conn *prev, *next; /* the worker's list of open connections */
	hsm_http_conn *next_q;      /* the worker's run queue */
	hsm_http_conn *next_later;  /* the worker's later list */
	hsm_http_conn *next_grave;  /* the worker's list of connections closed in this pass */
	hsm_http_conn *hs_prev, *hs_next; /* the worker's handshake queue */
};

typedef enum req_state { REQ_FREE, REQ_READING, REQ_HANDLER, REQ_QUEUED, REQ_SENDING } req_state;

struct hsm_http_req {
	hsm_http_worker *w;
	hsm_http_conn *conn;
	hsm_http_req *next; /* pool, completion stack or local list */
	req_state state;
	hsm_http_head head; /* strings point into conn->in */
	const uint8_t *body;
	size_t body_len;
	uint64_t start_ns;
	bool is_head; /* method HEAD: the response has no body */
	bool close;   /* end the connection after this response */
	char id[HSM_UUID_STRLEN + 1];
	/* The whole response as it goes on the wire (status line, header, body),
	 * built by hsm_http_respond; wiped before reuse or free: the body may be
	 * plaintext.  A response that could not be built is sent as a bare 500. */
	bool failed;
	hsm_buf out;
};

#define HSM_HTTP_RAND_POOL 4096
#define HSM_HTTP_REQ_POOL_MAX 1024
#define HSM_HTTP_BUF_POOL_MAX 256

/*
 * A connection accepted at max_connections by a worker with none of its own
 * to give way, handed to another worker that may have one (http_conn.c).
 * Its slots (the server's count, its source's) are taken already.
 */
typedef struct hsm_http_handed {
	struct hsm_http_handed *next;
	int fd;
	bool via_proxy;
	hsm_source src;
	struct sockaddr_storage ss;
} hsm_http_handed;

struct hsm_http_worker {
	hsm_http_server *srv;
	unsigned index;
	pthread_t thread;
	atomic_bool thread_started; /* read by other workers (wake_paused) while later ones start */
	int ep;        /* epoll instance */
	int listen_fd; /* the shared socket or this worker's own (reuseport); -1 once let go */
	bool own_listen_fd;
	bool listening;          /* listen_fd is in ep */
	int wake_fd;             /* eventfd: completions queued or stop requested */
	uint64_t resume_ns;      /* accept paused (EMFILE) until then; 0: not paused */
	uint64_t rearm_ns;       /* accepting yielded to the others until then (http_balance.c) */
	uint64_t sweep_ns;       /* next deadline sweep */
	uint64_t proxy_warn_ns;  /* no warning about missing PROXY headers before then */
	uint64_t limit_warn_ns;  /* no warning about connections refused at a limit before then */
	uint64_t grace_end_ns;   /* end of a stop's grace period; 0: not stopping */
	bool quit;
	_Atomic(hsm_http_req *) done; /* completion stack, pushed from any thread */
	/* Replies given on the worker itself, sent once their handler returns. */
	hsm_http_req *local_head, *local_tail;
	hsm_calls pass_end; /* hsm_http_at_pass_end */
	hsm_http_conn *conns;  /* open connections */
	size_t n_conns;
	_Atomic uint32_t n_open; /* n_conns, for the other workers (conn_hand_over) */
	_Atomic(hsm_http_handed *) handed; /* handed to this worker, pushed from any worker */
	hsm_http_conn *runq;    /* connections to run again in this pass */
	hsm_http_conn *later;   /* connections to run again in the next pass (a spent budget) */
	hsm_http_conn *running; /* the connection being run (http_conn.c), or NULL */
	hsm_http_conn *grave;  /* closed in this pass: freed at its end */
	/* TLS handshake steps left in this pass, and those waiting for a later one (FIFO). */
	unsigned hs_budget;
	hsm_http_conn *hs_head, *hs_tail;
	hsm_http_req *pool;
	size_t n_pool;
	uint8_t *bufs[HSM_HTTP_BUF_POOL_MAX]; /* free input buffers of HSM_HTTP_IN_BUF bytes */
	size_t n_bufs;
	_Atomic size_t n_tls_warm; /* connections keeping their TLS buffers; read by stats */
	_Atomic size_t inflight; /* requests with the handler or queued back */
	bool stopping;
	bool balance_paused; /* not accepting: it holds more than its share (http_balance.c) */
	uint8_t rand_pool[HSM_HTTP_RAND_POOL];
	size_t rand_pos;
};

/* The size of a pooled input buffer: a whole KMS request, headers and body, fits. */
#define HSM_HTTP_IN_BUF ((size_t)16 << 10)

struct hsm_http_server {
	hsm_http_config cfg; /* strings dropped: not kept after _new */
	hsm_http_handler handler;
	void *arg;
	/* What new TLS connections begin with (NULL: plain HTTP); replaced by
	 * hsm_http_server_use_tls() under tls_mu, which SSL_new() holds too.  A
	 * connection keeps a reference to the context it began with. */
	SSL_CTX *tls;
	pthread_mutex_t tls_mu;
	bool tls_on; /* fixed at _new: whether connections speak TLS */
	/* Peers that must begin with a PROXY protocol header (proxy_protocol_from). */
	hsm_net proxy_from[HSM_HTTP_PROXY_NETS_MAX];
	size_t n_proxy_from;
	unsigned n_workers;
	hsm_http_worker *workers;
	int shared_fd;
	uint16_t port;
	_Atomic uint32_t n_conns;
	_Atomic uint32_t n_handed; /* accepted connections handed to another worker, not yet taken */
	hsm_conn_limit *per_source; /* max_connections_per_source */
	_Atomic uint64_t refused_full, refused_source, evicted;
	/* Accept failures for want of descriptors or memory this spell, all workers' (http_conn.c). */
	_Atomic uint64_t accept_failures;
	_Atomic uint64_t accept_failed_ns; /* when the last of them happened (monotonic); 0: never */
	_Atomic size_t buffered; /* bytes of input buffers larger than HSM_HTTP_IN_BUF */
	_Atomic uint32_t n_accepting; /* workers not paused by the balance (shared socket) */
	_Atomic bool stopping;
	_Atomic uint32_t grace_ms;
	bool started;
	bool joined;
};

/* http.c */
/* Adds or removes the listening socket from the worker's epoll set. */
void hsm_http_listen_on(hsm_http_worker *w, bool on);

/* http_addr.c: a listening socket bound to addr (SO_REUSEPORT if asked). */
hsm_result hsm_http_listen_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport,
                                  const char *name, int *fd) HSM_MUST_CHECK;
uint16_t hsm_http_sockaddr_port(const struct sockaddr_storage *ss);
void hsm_http_sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port);

/* http_tls_ticket.c: session tickets under keys rotated hourly. */
hsm_result hsm_http_tls_tickets_init(SSL_CTX *ctx) HSM_MUST_CHECK;
/* For tests: stops the clock of ctx's ticket keys (at the first call, where the
 * newest key began) and moves it on by seconds. */
void hsm_http_tls_tickets_age(SSL_CTX *ctx, int64_t seconds);
/* The verified client certificate's subject, or NULL (also on allocation failure). */
char *hsm_http_tls_client_subject(SSL *ssl);

/* http_conn.c */
typedef enum hsm_io { HSM_IO_DONE, HSM_IO_WAIT, HSM_IO_EOF, HSM_IO_FAIL } hsm_io;
/* One read into p[0..room) or one write of p[0..len), plain or TLS; *n bytes moved. */
hsm_io hsm_http_conn_read(hsm_http_conn *conn, uint8_t *p, size_t room, size_t *n);
hsm_io hsm_http_conn_write(hsm_http_conn *conn, const uint8_t *p, size_t len, size_t *n);
/* Closes conn (idempotent); see the file comment for when it is freed. */
void hsm_http_conn_close(hsm_http_conn *conn);
/* Responses one connection may complete in one run before the others' turn (pipelining). */
#define HSM_HTTP_RUN_RESPONSES 32
/* At the start of a pass: the connections whose budget ran out go on the run queue. */
void hsm_http_conn_resume_later(hsm_http_worker *w);
/*
 * TLS handshake steps one worker runs in one loop pass.  A handshake costs
 * the server 0.3-2 ms of CPU (a signature, a key exchange), a request on an
 * open connection microseconds: so that a flood of new connections cannot
 * starve the clients already connected, handshakes beyond this wait for the
 * next pass, in order of arrival, while every pass serves all the requests.
 */
#define HSM_HTTP_HANDSHAKES_PER_PASS 2U
/* At the start of a pass: refills the handshake budget and runs the waiting ones first. */
void hsm_http_conn_run_handshakes(hsm_http_worker *w);
/* Accepts what is waiting on the listening socket. */
void hsm_http_accept(hsm_http_worker *w);
/* Runs conn after epoll reported events on it. */
void hsm_http_conn_event(hsm_http_conn *conn, uint32_t events);
/* Starts writing req's response (on its worker); conn runs again later in the pass if need be. */
void hsm_http_conn_deliver(hsm_http_req *req, bool now);
/* Runs the connections queued by deliver; frees those closed during the pass. */
void hsm_http_conn_pass_end(hsm_http_worker *w);
/* Closes connections whose deadline has passed. */
void hsm_http_conn_sweep(hsm_http_worker *w, uint64_t now);
/* Closes idle connections (start of a stop) or all (its end). */
void hsm_http_conn_close_idle(hsm_http_worker *w, bool all);
/* Takes the connections other workers handed to w: each makes room or is turned away. */
void hsm_http_conn_adopt_handed(hsm_http_worker *w);
/* Frees a connection closed while its request was with the handler. */
void hsm_http_conn_free_closed(hsm_http_conn *conn);
/* Raises the open-file limit for max_connections. */
hsm_result hsm_http_fd_limit(hsm_http_server *srv) HSM_MUST_CHECK;

/* http_read.c: the input side of a connection. */
/*
 * Reads and parses until a request is complete (then dispatched: true, the
 * connection's state has changed), or it has to wait for bytes (false), or
 * it was closed (false).
 */
bool hsm_http_conn_input(hsm_http_conn *conn);
/* Drops the first n bytes of conn's input, wiping them; keeps what follows. */
void hsm_http_in_consume(hsm_http_conn *conn, size_t n);
/* Wipes and gives back conn's input buffer (to the worker's pool when it fits). */
void hsm_http_in_release(hsm_http_conn *conn);
/*
 * Answers with a framework refusal (hsm_http_req_refuse) and ends the
 * connection after it; for a connection refused before any request was read
 * (plain HTTP on a TLS port).  True: conn has changed state; false: closed.
 */
bool hsm_http_conn_refuse(hsm_http_conn *conn, int status, const char *type,
                          const char *message);

/* http_req.c */
hsm_http_req *hsm_http_req_get(hsm_http_worker *w);
/* Wipes the response buffer and returns req to its worker's pool. */
void hsm_http_req_put(hsm_http_req *req);
/* Frees a worker's pool of requests. */
void hsm_http_req_pool_free(hsm_http_worker *w);
/* Gives a complete request to the handler, or answers it (405, 501) itself. */
void hsm_http_req_dispatch(hsm_http_conn *conn, hsm_http_req *req);
/*
 * Answers on the framework's behalf (malformed input, limits) and closes after,
 * with a KMS-style body whose __type (a string literal, as is message) goes with
 * status: SDKs report the type, and retry by it, so a 503 must not read as the
 * caller's fault.
 */
void hsm_http_req_refuse(hsm_http_conn *conn, hsm_http_req *req, int status, const char *type,
                         const char *message);

/* http_balance.c: after a connection was accepted by (accepted) or removed
 * from w, on w's thread; and when rearm_ns has passed. */
void hsm_http_balance(hsm_http_worker *w, bool accepted);
void hsm_http_balance_rearm(hsm_http_worker *w);
bool hsm_http_may_accept(const hsm_http_worker *w);

/* http_resp.c */
/* Marks the calling thread as w's worker thread (NULL when it leaves). */
void hsm_http_set_current_worker(hsm_http_worker *w);
hsm_http_worker *hsm_http_current_worker(void);
void hsm_http_inflight_add(hsm_http_worker *w, int delta);
/*
 * Takes every queued completion of w: starts writing them (send) or, once the
 * worker has stopped, only releases them.
 */
void hsm_http_worker_drain(hsm_http_worker *w, bool send);
/* Sends the replies given on the worker during a handler call. */
void hsm_http_flush_local(hsm_http_worker *w);
/* Makes the calls asked for at the end of the pass. */
void hsm_http_run_pass_end(hsm_http_worker *w);
/* A bare 500 for a response that could not be built. */
extern const char hsm_http_bare_500[];
extern const size_t hsm_http_bare_500_len;

#endif
