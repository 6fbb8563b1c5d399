/*
 * http.h - hsmd's HTTP/1.1 server (plain or TLS): its own event loops over
 * epoll and its own request reader (http_parse.c, RFC 9112), with threads,
 * limits, TLS policy, asynchronous completion and the response headers every
 * answer carries.
 *
 * Threads.  hsm_http_server_start() runs W worker threads.  Each owns an
 * epoll loop accepting from one socket shared by all workers (or, with
 * reuseport, its own SO_REUSEPORT socket), and every connection it accepts
 * stays with it.  The handler is called on the worker that read the request, so it
 * must be thread-safe; it must not block for long, because the worker's other
 * connections wait meanwhile.
 *
 * Requests.  The handler receives an hsm_http_req whose method, path, headers
 * and body have been fully read and checked against the configured limits.
 * The handler (or whoever it hands the request to) answers exactly once with
 * hsm_http_respond(), immediately or later, from any thread.  A response made
 * on another thread is queued to the owning worker and written there: one
 * wakeup per batch, and a connection is never touched off its worker.
 *
 * What the framework answers by itself: methods other than GET, POST and
 * HEAD get 405 with the Allow header of their path, or 404 at a path hsmd
 * does not serve (hsm_http_respond_not_allowed); unknown methods 501; a
 * body over the limit 413 (as soon as the Content-Length says so, without
 * reading the body); an
 * oversized or malformed header block, or framing a proxy could read
 * differently (RFC 9112 section 11.2), 400; versions other than HTTP/1.0 and
 * 1.1, 505.  After each of these the connection is closed.  "Expect:
 * 100-continue" is answered before the body is read.  A client that takes longer than
 * the read timeout to send a request (counted from its first byte, or from
 * accept for the first request) is disconnected, as is one idle longer than
 * the idle timeout or not reading a response for longer than the write
 * timeout.  One source (an IPv4 address, an IPv6 /64; behind a trusted
 * load balancer, the client its PROXY header names) may hold at most
 * max_connections_per_source connections; more are closed at once.  A
 * connection beyond max_connections takes the place of one of the accepting
 * worker's connections that has not completed a request (or handshake) in
 * the second since it began one, the oldest first, else of its longest-idle
 * keep-alive connection, so connections held open, silent or trickling,
 * cannot keep new clients out; with none such, it is accepted and closed at
 * once.  Sockets send at most HSM_HTTP_SNDBUF bytes ahead of the client's
 * reading, so pipelined requests from a client that reads nothing stall
 * (and meet the write timeout) instead of piling responses up in the
 * kernel.  A connection from a trusted load
 * balancer (proxy_protocol_from) is closed unless it begins, within the read
 * timeout, with a valid PROXY protocol header.
 *
 * Every response carries Content-Type, Content-Length, Date and
 * x-amzn-RequestId (the request id); keep-alive follows HTTP/1.1 (RFC 9112
 * section 9.3), and while the server stops, responses say Connection: close.
 */
#ifndef HSM_SERVER_HTTP_H
#define HSM_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/types.h>

#include "common/result.h"

#define HSM_HTTP_DEFAULT_MAX_BODY ((size_t)1 << 20)
/* Request input buffered beyond each connection's first 16 KB, all connections together. */
#define HSM_HTTP_DEFAULT_MAX_BUFFERED ((size_t)256 << 20)
#define HSM_HTTP_DEFAULT_MAX_HEADERS ((size_t)16 << 10)
#define HSM_HTTP_DEFAULT_READ_TIMEOUT_MS 10000U
#define HSM_HTTP_DEFAULT_IDLE_TIMEOUT_MS 60000U
#define HSM_HTTP_DEFAULT_WRITE_TIMEOUT_MS 10000U
#define HSM_HTTP_DEFAULT_MAX_CONNECTIONS 10000U
#define HSM_HTTP_DEFAULT_MAX_CONNECTIONS_PER_SOURCE 1000U
/* SO_SNDBUF of each connection (Linux doubles it for its bookkeeping). */
#define HSM_HTTP_SNDBUF (64 << 10)
#define HSM_HTTP_MAX_WORKERS 256U
/* Networks in proxy_protocol_from. */
#define HSM_HTTP_PROXY_NETS_MAX 64
/* "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535" plus the NUL. */
#define HSM_HTTP_ADDR_MAX 56

typedef enum hsm_http_client_auth {
	HSM_HTTP_CLIENT_AUTH_NONE,     /* no certificate requested */
	HSM_HTTP_CLIENT_AUTH_OPTIONAL, /* requested; a presented one must verify */
	HSM_HTTP_CLIENT_AUTH_REQUIRED, /* a verified certificate is mandatory */
} hsm_http_client_auth;

/*
 * Server settings.  Strings are borrowed only for the duration of
 * hsm_http_server_new().  Start from hsm_http_config_defaults().
 */
typedef struct hsm_http_server hsm_http_server;
typedef struct hsm_http_req hsm_http_req;

typedef struct hsm_http_config {
	const char *listen;          /* "127.0.0.1:8443", "[::1]:8443"; port 0 picks a free port */
	unsigned workers;            /* 0: one per online CPU */
	size_t max_body_bytes;       /* larger bodies get 413 */
	size_t max_header_bytes;     /* request line + headers; larger get 431 */
	/*
	 * Input all connections together may hold beyond their first 16 KB
	 * (large bodies being read): a request that would pass it gets 503 and
	 * its connection is closed, so many large or slow bodies at once cannot
	 * exhaust memory.  0: HSM_HTTP_DEFAULT_MAX_BUFFERED.
	 */
	size_t max_buffered_bytes;
	uint32_t read_timeout_ms;    /* whole request, first byte to last */
	uint32_t idle_timeout_ms;    /* keep-alive connection with no request */
	uint32_t write_timeout_ms;   /* no progress writing a response */
	uint32_t max_connections;    /* open connections, all workers together */
	/* Open connections one source (an IPv4 address, an IPv6 /64) may hold; 0: no bound. */
	uint32_t max_connections_per_source;
	bool reuseport;              /* one SO_REUSEPORT socket per worker instead of one shared */
	bool batch_scheduling;       /* workers under SCHED_BATCH (hsm_thread_batch) */
	const char *tls_cert;        /* PEM certificate chain; NULL: plain HTTP */
	const char *tls_key;         /* PEM private key (unencrypted), required with tls_cert */
	const char *tls_client_ca;   /* PEM CA bundle for client certificates */
	hsm_http_client_auth client_auth;
	/*
	 * Networks ("10.0.0.0/8,2001:db8::/32", common/net.h) of load balancers
	 * that relay connections with a PROXY protocol header (v1 or v2).  A
	 * connection from inside them must begin with one, before any TLS, and
	 * the client it names becomes the connection's remote address; one
	 * without a valid header is closed.  A connection from elsewhere is read
	 * as it comes: a header from it is just a malformed request.  NULL or
	 * "": none.
	 */
	const char *proxy_protocol_from;
	/*
	 * Told, on the worker, of each request the framework answers by itself
	 * (above: malformed or too large, a method or path nothing serves), just
	 * before the answer goes: its status, the __type of the error, and a
	 * constant reason.  The handler's arg is passed.  It must not answer or
	 * keep req; the request's method and path may be "" (not parsed).
	 * NULL: nobody is told.
	 */
	void (*refused)(hsm_http_req *req, int status, const char *type, const char *reason,
	                void *arg);
} hsm_http_config;

void hsm_http_config_defaults(hsm_http_config *cfg);


/*
 * Called on a worker thread for each GET, POST or HEAD request.  The handler
 * takes ownership of req and must pass it to hsm_http_respond() exactly once,
 * on any thread, now or later.
 */
typedef void (*hsm_http_handler)(hsm_http_req *req, void *arg);

/*
 * Creates the server and binds its listening sockets (so the port is known
 * and a busy address fails here), loading the TLS certificate and key when
 * configured.  Nothing is served before hsm_http_server_start().
 */
hsm_result hsm_http_server_new(const hsm_http_config *cfg, hsm_http_handler handler, void *arg,
                               hsm_http_server **out) HSM_MUST_CHECK;
/* Starts the worker threads.  They block every signal; the caller's thread keeps them. */
hsm_result hsm_http_server_start(hsm_http_server *srv) HSM_MUST_CHECK;
/*
 * Graceful stop: closes the listening sockets and idle connections, lets
 * requests in progress finish (their responses say Connection: close) for at
 * most grace_ms, then drops what is left and joins the workers.  Requests
 * still held by their handler after that may still be passed to
 * hsm_http_respond(): nothing is sent, and hsm_http_server_free() releases
 * them (until then they count in hsm_http_server_inflight()).  Idempotent;
 * call it from one thread, never from a handler running on a worker (it
 * joins them).
 */
void hsm_http_server_stop(hsm_http_server *srv, uint32_t grace_ms);
/*
 * Stops (with no grace) if needed and frees.  Every request must have been
 * passed to hsm_http_respond() before; if some have not, the server is
 * deliberately leaked (and an error logged) rather than freed under them.
 * NULL is a no-op.
 */
void hsm_http_server_free(hsm_http_server *srv);
/* The bound TCP port (useful with port 0). */
uint16_t hsm_http_server_port(const hsm_http_server *srv);
unsigned hsm_http_server_workers(const hsm_http_server *srv);
/*
 * OpenSSL's record buffers (up to 33 KiB a TLS connection) are given back
 * whenever they empty (SSL_MODE_RELEASE_BUFFERS), which costs each request
 * two large allocations and a wipe of the whole read buffer
 * (SSL_OP_CLEANSE_PLAINTEXT).  Up to HSM_HTTP_TLS_WARM_MAX connections a
 * worker keep them between requests instead, until they idle for
 * HSM_HTTP_TLS_WARM_IDLE_MS (given back at the next sweep) or close; every
 * other connection, and every handshake, gives them back as before.  What a
 * request decrypted is still wiped as it is taken, by OpenSSL.
 */
#define HSM_HTTP_TLS_WARM_MAX 128U
#define HSM_HTTP_TLS_WARM_IDLE_MS 1000U
/* What the connection limits did, for /metrics. */
typedef struct hsm_http_stats {
	uint32_t open;             /* connections open now */
	uint64_t refused_full;     /* closed at once: max_connections, with none to give way */
	uint64_t refused_source;   /* closed at once: their source held max_connections_per_source */
	uint64_t evicted;          /* closed to make room for a new one at max_connections */
	size_t buffered;           /* input buffered now, against max_buffered_bytes */
	size_t tls_warm;           /* TLS connections keeping their record buffers (above) */
} hsm_http_stats;
void hsm_http_server_stats(const hsm_http_server *srv, hsm_http_stats *out);
/*
 * A new max_connections_per_source (0: no bound), for the connections opened
 * from now on (a SIGHUP): a source above it keeps what it holds until those
 * connections close.  Any thread.
 */
void hsm_http_server_set_per_source(hsm_http_server *srv, uint32_t per_source);
/* Requests handed to the handler and not yet responded to (approximate while running). */
size_t hsm_http_server_inflight(const hsm_http_server *srv);

/*
 * Request accessors.  They may be called from any thread while the caller
 * owns req; every pointer returned stays valid until hsm_http_respond(req).
 */
const char *hsm_http_req_method(const hsm_http_req *req);  /* "GET", "POST" or "HEAD" */
/* The request target's path as received (still percent-encoded), e.g. "/". */
const char *hsm_http_req_path(const hsm_http_req *req);
/* The raw query string without '?', or "" when there is none. */
const char *hsm_http_req_query(const hsm_http_req *req);
/* The first header of that name (compared case-insensitively), or NULL. */
const char *hsm_http_req_header(const hsm_http_req *req, const char *name);

/* Iterates the headers in the order received: zero-initialize, then call until false. */
typedef struct hsm_http_header_iter {
	const void *next_;
	bool started_;
} hsm_http_header_iter;
bool hsm_http_req_next_header(const hsm_http_req *req, hsm_http_header_iter *it,
                              const char **name, const char **value);

/* The body (possibly empty, then *len is 0); bounded by max_body_bytes. */
const uint8_t *hsm_http_req_body(const hsm_http_req *req, size_t *len);
/*
 * The client's IP address as text ("127.0.0.1", "::1") and port: the peer's,
 * or the source named by a trusted load balancer's PROXY protocol header.
 */
const char *hsm_http_req_remote_addr(const hsm_http_req *req);
uint16_t hsm_http_req_remote_port(const hsm_http_req *req);
bool hsm_http_req_is_tls(const hsm_http_req *req);
/*
 * The subject (RFC 4514 string) of the client certificate, when the client
 * presented one and it verified against tls_client_ca; otherwise NULL.
 */
const char *hsm_http_req_client_subject(const hsm_http_req *req);
/*
 * The earliest notAfter (Unix seconds) among the certificates of a PEM file
 * (tls_cert's chain, tls_client_ca's bundle): when the file stops serving.
 * HSM_ERR_VALIDATION when it holds no readable certificate.
 */
hsm_result hsm_http_tls_file_expiry(const char *path, int64_t *not_after) HSM_MUST_CHECK;

/*
 * Loading the TLS files again without a restart (a renewed certificate, a
 * changed client CA bundle).  hsm_http_tls_load() reads cfg's tls_cert,
 * tls_key, tls_client_ca and client_auth into a new context under the same
 * policy as at start, checking that the key is the certificate's;
 * hsm_http_server_use_tls() makes it the one new connections begin with and
 * takes it over (freeing it when it cannot).  Connections already open go on
 * with the context they began with, and tickets issued under the old one do
 * not resume under the new (a full handshake, so every client is checked
 * against what was loaded).  A server that speaks plain HTTP cannot begin
 * TLS this way (HSM_ERR_VALIDATION).
 */
hsm_result hsm_http_tls_load(const hsm_http_config *cfg, SSL_CTX **out) HSM_MUST_CHECK;
hsm_result hsm_http_server_use_tls(hsm_http_server *srv, SSL_CTX *ctx) HSM_MUST_CHECK;
/* What a loaded context serves, for the log, the audit trail and /metrics. */
typedef struct hsm_http_tls_info {
	char subject[256];   /* the certificate's subject (RFC 2253), cut to fit */
	char sha256[65];     /* the certificate's SHA-256 fingerprint, lowercase hex */
	int64_t cert_expiry; /* the earliest notAfter of the chain served */
	int64_t ca_expiry;   /* ... of tls_client_ca's certificates; 0 without one */
} hsm_http_tls_info;
hsm_result hsm_http_tls_describe(SSL_CTX *ctx, hsm_http_tls_info *out) HSM_MUST_CHECK;
/*
 * HSM_ERR_VALIDATION, naming tls_cert (cert_path) and the date, when the
 * certificate a loaded context serves has expired or is not valid yet: every
 * client would refuse it.  A reload refuses such a certificate; a start only
 * warns of it, so that a node can be started and its certificate renewed.
 */
hsm_result hsm_http_tls_check_dates(SSL_CTX *ctx, const char *cert_path) HSM_MUST_CHECK;
/* A fresh version-4 UUID naming this request; sent back as x-amzn-RequestId. */
const char *hsm_http_req_id(const hsm_http_req *req);
/* CLOCK_MONOTONIC nanoseconds (hsm_mono_ns) when the request had been fully read. */
uint64_t hsm_http_req_start_ns(const hsm_http_req *req);

typedef struct hsm_http_header {
	const char *name;
	const char *value;
} hsm_http_header;

/*
 * Answers req and gives it back: req must not be touched afterwards.  Callable
 * once per request, from any thread.  status is a final status (200..599);
 * content_type NULL means "application/octet-stream"; a 204 carries no
 * Content-Type (nor Content-Length).  body, the content type
 * and the extra headers are copied before this returns (the copy is wiped once
 * sent: a body may hold plaintext).  Extra headers must not repeat the ones the
 * framework sets; a name or value that is not valid HTTP (CR, LF, ...) is
 * dropped and logged.  If the response cannot be built (out of memory) the
 * client gets a bare 500.  HEAD responses carry the Content-Length of body
 * but not the body.
 */
void hsm_http_respond(hsm_http_req *req, int status, const char *content_type, const void *body,
                      size_t len, size_t n_headers, const hsm_http_header *headers);
/*
 * Answers a method the request's path does not take: 405 with the methods
 * that path takes in Allow (RFC 9110 sections 10.2.1 and 15.5.6; POST for
 * "/", GET and HEAD for the health, readiness and metrics paths, and
 * OPTIONS as well for the JWK Set's, which answers CORS preflights), or
 * 404 NotFoundException for a path hsmd serves nothing at.
 */
void hsm_http_respond_not_allowed(hsm_http_req *req);
/* Whether path is one hsmd serves something at (one with an Allow of its own above). */
bool hsm_http_path_is_resource(const char *path);

/*
 * Calls fn(arg) on this worker once the requests that arrived in the current
 * event-loop pass have all been handled (once per pass for the same fn and
 * arg); at once on any other thread, or if too many calls are pending.  A
 * handler that queues work for another thread uses it to wake that thread
 * once per pass instead of once per request.
 */
void hsm_http_at_pass_end(void (*fn)(void *), void *arg);

/*
 * Batching of wake-ups.  A thread that answers many requests in a row (the
 * audit writer firing a batch of callbacks) brackets them with hold and
 * release: each worker that got a response in between is then woken once, at
 * release, instead of once per response, which would make it wake, send one
 * response and sleep again for every record.  Per thread; the pair must not
 * nest and release must follow hold without blocking in between.
 */
void hsm_http_hold_wakeups(void);
void hsm_http_release_wakeups(void);

/*
 * Parses a listen address: "a.b.c.d:port" or "[ipv6]:port", numeric only,
 * port 0..65535.  Used by the configuration to validate "listen".
 */
hsm_result hsm_http_parse_addr(const char *text, struct sockaddr_storage *ss,
                               socklen_t *len) HSM_MUST_CHECK;
/* True when ss is an IPv4 127/8 or the IPv6 ::1 address. */
bool hsm_http_addr_is_loopback(const struct sockaddr_storage *ss);

#endif
