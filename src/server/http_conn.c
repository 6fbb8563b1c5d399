/*
 * http_conn.c - connections: accepting them, running each through its
 * request cycle (TLS handshake, reading, handling, writing, idle), the
 * deadlines, and closing.
 *
 * Each socket is registered once with epoll, edge-triggered, for input and
 * output (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET): no epoll_ctl per request.
 * Edge-triggered means an event says "something changed", so a connection
 * remembers that more may be readable (rd_ready) until a read comes back
 * short or would block, and a write that would block waits for the next
 * EPOLLOUT edge, which Linux sends once room frees up after such a write.
 * While a request is with its handler the connection is not read at all (its
 * input buffer holds the request's strings), so a client sending early or
 * pipelining costs nothing until the response is out.
 *
 * A connection from a trusted load balancer (proxy_protocol_from) begins
 * with a PROXY protocol header (proxy_proto.h), read once, before the TLS
 * handshake, by peeking at the socket and then taking exactly the header's
 * bytes, so that what follows is left for OpenSSL or the request reader.
 * The source it names replaces the peer's address (c->addr, c->port) for
 * everything after: requests, audit records, key-policy conditions, logs.
 * Anything else from such a peer closes the connection; from any other peer
 * a header is not looked for (and is then a malformed request).
 *
 * A client that begins in plain HTTP on a TLS port (a byte that starts no
 * TLS record) is told so in a plain 400 and the connection ends; bytes that
 * begin no HTTP request on a plain port (a ClientHello) are refused with 400
 * as soon as they come (http_read.c).  Neither waits for the read deadline.
 *
 * Deadlines (the defence against slowloris and against clients that never
 * read): a request must arrive whole within read_timeout of its first byte
 * (of the accept, for the first one, PROXY header and handshake included); a keep-alive
 * connection may idle for idle_timeout; a response must make progress within
 * write_timeout.  A periodic sweep (http.c) closes the late ones.
 *
 * A connection closed while its request is with the handler is kept (its
 * input buffer still holds the request) until the response comes back and
 * finds it closed; any other closed connection is freed at the end of the
 * loop pass, so events and queued runs later in the pass find it marked.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "common/log.h"
#include "server/http_internal.h"
#include "server/proxy_proto.h"

/* Descriptors kept free for everything else the daemon opens. */
#define FD_RESERVE 256U
#define ACCEPT_PAUSE_MS 100U
/*
 * A spell of accept failures ends only after this long without one: each
 * pause gives a descriptor back (evictable), so an accept succeeds after
 * nearly every pause while the shortage lasts, and is not its end.
 */
#define ACCEPT_QUIET_MS 5000U
#define ACCEPT_BATCH 64
/* How long a refused client may go on sending before the connection is closed. */
#define LINGER_MS 2000U
/* Connections handed between workers at max_connections and not yet taken, at most. */
#define HAND_INFLIGHT_MAX 8U
/* At most one warning of each kind per worker this often (PROXY headers missing, limits). */
#define WARN_EVERY_MS 60000U

static uint64_t after_ms(uint32_t ms)
{
	return hsm_mono_ns() + (uint64_t)ms * 1000000ULL;
}

/* ---- the worker's lists ---------------------------------------------------- */

static void link_conn(hsm_http_worker *w, hsm_http_conn *c)
{
	c->next = w->conns;
	if (w->conns != NULL)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	atomic_store_explicit(&w->n_open, (uint32_t)w->n_conns, memory_order_relaxed);
}

static void unlink_conn(hsm_http_worker *w, hsm_http_conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	w->n_conns--;
	atomic_store_explicit(&w->n_open, (uint32_t)w->n_conns, memory_order_relaxed);
	atomic_fetch_sub_explicit(&w->srv->n_conns, 1, memory_order_relaxed);
}

static void runq_add(hsm_http_conn *c)
{
	if (c->queued || c->closed)
		return;
	c->queued = true;
	c->next_q = c->w->runq;
	c->w->runq = c;
}

void hsm_http_conn_free_closed(hsm_http_conn *c)
{
	hsm_http_in_release(c);
	free(c->client_subject);
	free(c);
}

/* Takes c off the later list (it is closing: the list must not outlive it). */
static void later_remove(hsm_http_worker *w, hsm_http_conn *c)
{
	for (hsm_http_conn **p = &w->later; *p != NULL; p = &(*p)->next_later) {
		if (*p == c) {
			*p = c->next_later;
			break;
		}
	}
	c->next_later = NULL;
	c->deferred = false;
}

static void hs_unlink(hsm_http_worker *w, hsm_http_conn *c)
{
	if (!c->hs_queued)
		return;
	if (c->hs_prev != NULL)
		c->hs_prev->hs_next = c->hs_next;
	else
		w->hs_head = c->hs_next;
	if (c->hs_next != NULL)
		c->hs_next->hs_prev = c->hs_prev;
	else
		w->hs_tail = c->hs_prev;
	c->hs_prev = c->hs_next = NULL;
	c->hs_queued = false;
}

static void hs_enqueue(hsm_http_worker *w, hsm_http_conn *c)
{
	if (c->hs_queued)
		return;
	c->hs_queued = true;
	c->hs_next = NULL;
	c->hs_prev = w->hs_tail;
	if (w->hs_tail != NULL)
		w->hs_tail->hs_next = c;
	else
		w->hs_head = c;
	w->hs_tail = c;
}

static void conn_run(hsm_http_conn *c);

void hsm_http_conn_run_handshakes(hsm_http_worker *w)
{
	w->hs_budget = HSM_HTTP_HANDSHAKES_PER_PASS;
	while (w->hs_budget > 0 && w->hs_head != NULL) {
		hsm_http_conn *c = w->hs_head;
		hs_unlink(w, c);
		conn_run(c);
	}
}

void hsm_http_conn_resume_later(hsm_http_worker *w)
{
	hsm_http_conn *c = w->later;
	w->later = NULL;
	while (c != NULL) {
		hsm_http_conn *next = c->next_later;
		c->next_later = NULL;
		c->deferred = false;
		runq_add(c);
		c = next;
	}
}

void hsm_http_conn_close(hsm_http_conn *c)
{
	if (c->closed)
		return;
	hsm_http_worker *w = c->w;
	c->closed = true;
	if (c->deferred)
		later_remove(w, c);
	hs_unlink(w, c);
	unlink_conn(w, c);
	if (c->src_counted)
		hsm_conn_limit_give(w->srv->per_source, &c->src);
	c->src_counted = false;
	if (c->tls_warm)
		atomic_fetch_sub_explicit(&w->n_tls_warm, 1, memory_order_relaxed);
	c->tls_warm = false;
	SSL_free(c->ssl); /* no close_notify: HTTP's framing says what was complete */
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd); /* also takes it out of epoll */
	c->fd = -1;
	if (c->state == CONN_HANDLING) {
		/* The handler still reads the request in c->in: c lives until it answers. */
		hsm_http_balance(w, false);
		return;
	}
	if (c->req != NULL)
		hsm_http_req_put(c->req);
	c->req = NULL;
	hsm_http_in_release(c);
	c->next_grave = w->grave;
	w->grave = c;
	hsm_http_balance(w, false);
}

/* ---- TLS and socket I/O ------------------------------------------------------ */

/* What a TLS call that returned r <= 0 means for the connection. */
static hsm_io tls_result(hsm_http_conn *c, int r)
{
	int e = SSL_get_error(c->ssl, r);
	int err = errno;
	ERR_clear_error();
	switch (e) {
	case SSL_ERROR_WANT_READ:
		c->rd_ready = false;
		return HSM_IO_WAIT;
	case SSL_ERROR_WANT_WRITE:
		return HSM_IO_WAIT; /* an EPOLLOUT edge follows once there is room */
	case SSL_ERROR_ZERO_RETURN:
		return HSM_IO_EOF;
	case SSL_ERROR_SYSCALL:
		/* No close_notify: an ordinary end of connection for HTTP. */
		return err == 0 || err == ECONNRESET || err == EPIPE ? HSM_IO_EOF : HSM_IO_FAIL;
	default:
		return HSM_IO_FAIL;
	}
}

hsm_io hsm_http_conn_read(hsm_http_conn *c, uint8_t *p, size_t room, size_t *n)
{
	*n = 0;
	if (c->ssl != NULL) {
		ERR_clear_error(); /* SSL_get_error reads the queue: only this call's errors */
		c->sock_drained = false;
		int r = SSL_read(c->ssl, p, room > INT_MAX ? INT_MAX : (int)room);
		if (r > 0) {
			/* Nothing buffered in OpenSSL and the socket found empty by its
			 * last read: the next bytes bring a new edge, so reading again
			 * now could only come back with "want more".  Not once the
			 * client has shut its side: no edge follows its FIN, and the
			 * next read must see the end of input (as for plain HTTP). */
			if (c->sock_drained && SSL_has_pending(c->ssl) == 0 && !c->peer_closed)
				c->rd_ready = false;
			*n = (size_t)r;
			return HSM_IO_DONE;
		}
		return tls_result(c, r);
	}
	for (;;) {
		ssize_t r = read(c->fd, p, room);
		if (r > 0) {
			/* A short read of a stream socket emptied it: the next bytes bring a new edge.
			 * Not when the client has shut its side: its FIN came with that same edge,
			 * and no other will come, so the next read must see the EOF. */
			if ((size_t)r < room && !c->peer_closed)
				c->rd_ready = false;
			*n = (size_t)r;
			return HSM_IO_DONE;
		}
		if (r == 0)
			return HSM_IO_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			c->rd_ready = false;
			return HSM_IO_WAIT;
		}
		return errno == ECONNRESET ? HSM_IO_EOF : HSM_IO_FAIL;
	}
}

hsm_io hsm_http_conn_write(hsm_http_conn *c, const uint8_t *p, size_t len, size_t *n)
{
	*n = 0;
	if (c->ssl != NULL) {
		ERR_clear_error();
		int r = SSL_write(c->ssl, p, len > INT_MAX ? INT_MAX : (int)len);
		if (r > 0) {
			*n = (size_t)r;
			return HSM_IO_DONE;
		}
		return tls_result(c, r);
	}
	for (;;) {
		ssize_t r = send(c->fd, p, len, MSG_NOSIGNAL);
		if (r >= 0) {
			*n = (size_t)r;
			return HSM_IO_DONE;
		}
		if (errno == EINTR)
			continue;
		return errno == EAGAIN || errno == EWOULDBLOCK ? HSM_IO_WAIT : HSM_IO_FAIL;
	}
}

/*
 * Watches OpenSSL's reads from the socket (BIO_set_callback_ex): one that
 * returns fewer bytes than asked, or none, emptied the socket at that moment.
 */
static long watch_reads(BIO *b, int oper, const char *argp, size_t len, int argi, long argl,
                        int ret, size_t *processed)
{
	(void)argp, (void)argi, (void)argl;
	if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
		hsm_http_conn *c = (hsm_http_conn *)BIO_get_callback_arg(b);
		if (ret <= 0 || (processed != NULL && *processed < len))
			c->sock_drained = true;
	}
	return ret;
}

/*
 * Whether the client began in plain HTTP where its TLS ClientHello was due.
 * A TLS record begins with its content type, 20 to 24 (RFC 8446 section
 * 5.1), an SSLv2-style hello with a length whose high bit is set: never a
 * byte a request may begin with, a method's first character or the CR or LF
 * of an empty line.  One byte peeked at, once there is input.
 */
static bool plain_http_first(hsm_http_conn *c)
{
	uint8_t b;
	ssize_t n;
	do
		n = recv(c->fd, &b, 1, MSG_PEEK);
	while (n < 0 && errno == EINTR);
	return n == 1 && hsm_http_may_begin_request(b);
}

/*
 * Plain HTTP on the TLS port: a plain answer saying so, which the client can
 * read (closing without a word leaves it guessing), then the connection ends.
 * The request is not read: its bytes are discarded as a refused request's
 * are, and nothing of it is echoed.
 */
static void refuse_plain_http(hsm_http_conn *c)
{
	SSL_free(c->ssl);
	c->ssl = NULL;
	(void)hsm_http_conn_refuse(c, 400, "ValidationException",
	                           "This port speaks TLS: send the request over HTTPS");
}

static hsm_io handshake(hsm_http_conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1)
		return HSM_IO_DONE;
	hsm_io io = tls_result(c, r);
	return io == HSM_IO_EOF ? HSM_IO_FAIL : io;
}

/*
 * A connection closed at a limit: counted in /metrics always, logged at most
 * once a minute per worker (a flood must not flood the log too).
 */
static void limit_refused(hsm_http_worker *w, const hsm_source *src, bool per_source)
{
	hsm_http_server *srv = w->srv;
	atomic_fetch_add_explicit(per_source ? &srv->refused_source : &srv->refused_full, 1,
	                          memory_order_relaxed);
	uint64_t now = hsm_mono_ns();
	if (w->limit_warn_ns != 0 && now < w->limit_warn_ns)
		return;
	w->limit_warn_ns = now + (uint64_t)WARN_EVERY_MS * 1000000ULL;
	char text[HSM_SOURCE_TEXT_MAX];
	hsm_source_text(src, text);
	if (per_source)
		hsm_warn("connection from %s closed: it holds max_connections_per_source (%u) "
		         "already (hsmd_http_connections_refused_total counts every one)",
		         text, hsm_conn_limit_bound(srv->per_source));
	else
		hsm_warn("connection from %s closed: max_connections (%u) reached, with no "
		         "stalled or idle connection to give way "
		         "(hsmd_http_connections_refused_total counts every one)",
		         text, srv->cfg.max_connections);
}

/* ---- a trusted balancer's PROXY protocol header ------------------------------ */

static bool proxy_trusted(const hsm_http_server *srv, const struct sockaddr_storage *ss)
{
	hsm_net peer;
	if (srv->n_proxy_from == 0 || !hsm_net_from_sockaddr(ss, &peer))
		return false;
	for (size_t i = 0; i < srv->n_proxy_from; i++)
		if (hsm_net_contains(&srv->proxy_from[i], &peer))
			return true;
	return false;
}

/*
 * A misconfigured balancer (no send-proxy) shows as closed connections: say
 * why, now and then, naming the peer only.  A connection closed before
 * sending anything (a plain TCP health check) is not worth a warning.
 */
static void proxy_refused(hsm_http_conn *c)
{
	uint64_t now = hsm_mono_ns();
	if (c->w->proxy_warn_ns != 0 && now < c->w->proxy_warn_ns)
		return;
	c->w->proxy_warn_ns = now + (uint64_t)WARN_EVERY_MS * 1000000ULL;
	hsm_warn("connection from %s (in proxy_protocol_from) closed: no valid PROXY protocol "
	         "header", c->addr);
}

/*
 * CONN_PROXY.  Peeks at what has arrived (never more than a header can
 * take) and, once a whole header is there, takes exactly its bytes.  A
 * header in pieces is peeked at again, whole, as each piece brings an edge.
 */
static hsm_io proxy_header(hsm_http_conn *c)
{
	uint8_t buf[HSM_PROXY_MAX];
	hsm_proxy_header h;
	ssize_t n;
	do
		n = recv(c->fd, buf, sizeof(buf), MSG_PEEK);
	while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		c->rd_ready = false;
		return HSM_IO_WAIT;
	}
	if (n <= 0)
		return HSM_IO_FAIL; /* closed or reset before a whole header */
	hsm_proxy_parse r = hsm_proxy_parse_header(buf, (size_t)n, &h);
	OPENSSL_cleanse(buf, (size_t)n); /* may hold the start of a request */
	if (r == HSM_PROXY_PARTIAL && !c->peer_closed) {
		c->rd_ready = false;
		return HSM_IO_WAIT;
	}
	if (r != HSM_PROXY_OK) {
		proxy_refused(c); /* malformed, too long, or truncated by the peer's close */
		return HSM_IO_FAIL;
	}
	do
		n = recv(c->fd, buf, h.len, 0);
	while (n < 0 && errno == EINTR);
	OPENSSL_cleanse(buf, h.len);
	if (n < 0 || (size_t)n != h.len)
		return HSM_IO_FAIL; /* the bytes peeked are there: cannot happen */
	if (h.has_source) {
		if (!hsm_proxy_source_text(&h, c->addr, sizeof(c->addr)))
			return HSM_IO_FAIL;
		c->port = h.port;
	}
	/* The client the balancer names holds this connection from now on (the balancer's
	 * own connections were not counted: they carry everyone's). */
	c->src = hsm_source_of_text(c->addr);
	if (!hsm_conn_limit_take(c->w->srv->per_source, &c->src)) {
		limit_refused(c->w, &c->src, true);
		return HSM_IO_FAIL;
	}
	c->src_counted = true;
	c->rd_ready = true; /* what follows the header may be there already */
	return HSM_IO_DONE;
}

/* ---- writing a response -------------------------------------------------- */

/* A TLS connection going idle keeps OpenSSL's buffers if a warm slot is free. */
static void tls_idle(hsm_http_conn *c)
{
	hsm_http_worker *w = c->w;
	if (c->ssl == NULL || c->tls_warm)
		return;
	if (atomic_load_explicit(&w->n_tls_warm, memory_order_relaxed) < HSM_HTTP_TLS_WARM_MAX) {
		c->tls_warm = true;
		atomic_fetch_add_explicit(&w->n_tls_warm, 1, memory_order_relaxed);
		SSL_clear_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
	}
}

/* Gives an idle warm connection's buffers back, and its slot. */
static void tls_cool(hsm_http_conn *c)
{
	if (!c->tls_warm)
		return;
	SSL_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
	/* Refused only while OpenSSL holds unread or unsent bytes: they are then
	 * given back as they drain, under the mode just set. */
	(void)SSL_free_buffers(c->ssl);
	c->tls_warm = false;
	atomic_fetch_sub_explicit(&c->w->n_tls_warm, 1, memory_order_relaxed);
}

/* The response is out: on to the next request, idling, or closing.  False when closed. */
static bool response_done(hsm_http_conn *c)
{
	hsm_http_worker *w = c->w;
	hsm_http_req *req = c->req;
	c->req = NULL;
	hsm_http_req_put(req);
	hsm_http_in_consume(c, c->consumed);
	if (c->close_after && !w->stopping) {
		/*
		 * A refused request (413 on its Content-Length, malformed input) may
		 * still be arriving, and a client may send more after a request that
		 * ends the connection (Connection: close, HTTP/1.0) before it reads
		 * the answer.  Closing with unread input would reset the connection:
		 * the reset can reach the client before the answer does, and the
		 * kernel drops the part of the answer still queued (RFC 9112 section
		 * 9.6).  So stop sending, and discard what comes until the client
		 * closes.  Even when it has shut its side (EPOLLRDHUP): what it sent
		 * before may still be unread, and the drain then ends at once, at the
		 * EOF.
		 */
		(void)shutdown(c->fd, SHUT_WR);
		hsm_http_in_release(c);
		c->state = CONN_LINGER;
		uint32_t ms = w->srv->cfg.read_timeout_ms < LINGER_MS ? w->srv->cfg.read_timeout_ms : LINGER_MS;
		c->deadline_ns = after_ms(ms);
		c->rd_ready = true;
		return true;
	}
	/* A client that shut its side and sent nothing more is done. */
	if (c->close_after || w->stopping || (c->peer_closed && c->in_len == 0 && !c->rd_ready)) {
		hsm_http_conn_close(c);
		return false;
	}
	if (c->in_len > 0) {
		c->state = CONN_READING; /* a pipelined request has begun */
		c->deadline_ns = after_ms(w->srv->cfg.read_timeout_ms);
	} else {
		c->state = CONN_IDLE;
		c->deadline_ns = after_ms(w->srv->cfg.idle_timeout_ms);
		hsm_http_in_release(c); /* idle connections hold no buffer of hsmd's */
		tls_idle(c);
	}
	return true;
}

/* Writes what is left of the response.  True when it is all out and c is open. */
static bool send_response(hsm_http_conn *c)
{
	const hsm_http_req *req = c->req;
	const uint8_t *p = req->failed ? (const uint8_t *)hsm_http_bare_500 : req->out.data;
	size_t len = req->failed ? hsm_http_bare_500_len : req->out.len;
	while (c->out_pos < len) {
		size_t n = 0;
		hsm_io io = hsm_http_conn_write(c, p + c->out_pos, len - c->out_pos, &n);
		if (io == HSM_IO_WAIT)
			return false;
		if (io != HSM_IO_DONE) {
			hsm_http_conn_close(c);
			return false;
		}
		c->out_pos += n;
		c->deadline_ns = after_ms(c->w->srv->cfg.write_timeout_ms);
	}
	return response_done(c);
}

void hsm_http_conn_deliver(hsm_http_req *req, bool now)
{
	hsm_http_conn *c = req->conn;
	hsm_http_worker *w = req->w;
	hsm_http_inflight_add(w, -1);
	if (c->closed) {
		/* The client went away while the handler had the request. */
		hsm_http_req_put(req);
		c->req = NULL;
		hsm_http_conn_free_closed(c);
		return;
	}
	req->state = REQ_SENDING;
	c->state = CONN_WRITING;
	c->out_pos = 0;
	c->close_after = req->close || req->failed;
	c->deadline_ns = after_ms(w->srv->cfg.write_timeout_ms);
	if (now) {
		if (send_response(c) && (c->in_len > 0 || c->rd_ready))
			runq_add(c);
	} else if (c != w->running) {
		runq_add(c);
	}
}

/* ---- the request cycle -------------------------------------------------------- */

/* CONN_LINGER: reads and drops input until EOF, or closes at once on an error. */
static void linger_drain(hsm_http_conn *c)
{
	uint8_t sink[4096];
	while (c->rd_ready) {
		ssize_t r = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (r > 0 || (r < 0 && errno == EINTR))
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->rd_ready = false;
			return;
		}
		break; /* EOF or error */
	}
	if (c->rd_ready)
		hsm_http_conn_close(c);
}

/* Runs c until it has to wait for the network or for its handler. */
static void conn_run(hsm_http_conn *c)
{
	hsm_http_worker *w = c->w;
	hsm_http_conn *outer = w->running;
	unsigned responses = 0;
	w->running = c;
	while (!c->closed) {
		if (c->state == CONN_HANDLING)
			break;
		if (c->state == CONN_LINGER) {
			linger_drain(c);
			break;
		}
		if (c->state == CONN_WRITING) {
			if (!send_response(c))
				break;
			/*
			 * A client pipelining requests without end gets its budget, then
			 * waits for the next pass, so the others' events are served first.
			 */
			if (++responses >= HSM_HTTP_RUN_RESPONSES && !c->closed &&
			    c->state != CONN_WRITING && (c->in_len > 0 || c->rd_ready)) {
				if (!c->deferred) {
					c->deferred = true;
					c->next_later = w->later;
					w->later = c;
				}
				break;
			}
			continue;
		}
		if (c->state == CONN_PROXY) {
			hsm_io io = proxy_header(c);
			if (io == HSM_IO_DONE) {
				c->state = c->ssl != NULL ? CONN_HANDSHAKE : CONN_READING;
			} else if (io == HSM_IO_WAIT) {
				break;
			} else {
				hsm_http_conn_close(c);
			}
			continue;
		}
		if (c->state == CONN_HANDSHAKE) {
			/* Nothing to do before the ClientHello: the handshake allocates its
			 * buffers then, not for every connection that merely opened. */
			if (!c->hs_started && !c->rd_ready)
				break;
			if (!c->hs_started && plain_http_first(c)) {
				refuse_plain_http(c);
				continue;
			}
			if (w->hs_budget == 0) {
				hs_enqueue(w, c);
				break;
			}
			w->hs_budget--;
			c->hs_started = true;
			hsm_io io = handshake(c);
			if (io == HSM_IO_DONE)
				c->state = CONN_READING;
			else if (io == HSM_IO_WAIT)
				break;
			else
				hsm_http_conn_close(c);
			continue;
		}
		if (!hsm_http_conn_input(c))
			break;
	}
	w->running = outer;
}

void hsm_http_conn_event(hsm_http_conn *c, uint32_t events)
{
	if (c->closed)
		return;
	if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0)
		c->rd_ready = true;
	if ((events & (EPOLLRDHUP | EPOLLHUP)) != 0)
		c->peer_closed = true;
	/* Reset or gone both ways while the handler works: its answer has nowhere to go. */
	if ((events & (EPOLLHUP | EPOLLERR)) != 0 && c->state == CONN_HANDLING) {
		hsm_http_conn_close(c);
		return;
	}
	conn_run(c);
}

void hsm_http_conn_pass_end(hsm_http_worker *w)
{
	while (w->runq != NULL) {
		hsm_http_conn *c = w->runq;
		w->runq = c->next_q;
		c->queued = false;
		c->next_q = NULL;
		if (!c->closed)
			conn_run(c);
	}
	while (w->grave != NULL) {
		hsm_http_conn *c = w->grave;
		w->grave = c->next_grave;
		hsm_http_conn_free_closed(c);
	}
}

void hsm_http_conn_sweep(hsm_http_worker *w, uint64_t now)
{
	uint64_t idle_ns = (uint64_t)w->srv->cfg.idle_timeout_ms * 1000000ULL;
	uint64_t cool_ns = (uint64_t)HSM_HTTP_TLS_WARM_IDLE_MS * 1000000ULL;
	hsm_http_conn *next;
	for (hsm_http_conn *c = w->conns; c != NULL; c = next) {
		next = c->next;
		if (c->state != CONN_HANDLING && now >= c->deadline_ns)
			hsm_http_conn_close(c);
		/* Idle since deadline_ns - idle_timeout. */
		else if (c->tls_warm && c->state == CONN_IDLE && now + idle_ns >= c->deadline_ns + cool_ns)
			tls_cool(c);
	}
	hsm_http_conn_pass_end(w);
}

void hsm_http_conn_close_idle(hsm_http_worker *w, bool all)
{
	hsm_http_conn *next;
	for (hsm_http_conn *c = w->conns; c != NULL; c = next) {
		next = c->next;
		if (all || (c->state == CONN_IDLE && c->in_len == 0) || c->state == CONN_LINGER)
			hsm_http_conn_close(c);
	}
}

/* ---- accepting -------------------------------------------------------------- */

static void peer_text(hsm_http_conn *c, const struct sockaddr_storage *ss)
{
	const void *a = NULL;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		a = &in->sin_addr;
		c->port = ntohs(in->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		a = &in6->sin6_addr;
		c->port = ntohs(in6->sin6_port);
	}
	if (a == NULL || inet_ntop(ss->ss_family, a, c->addr, sizeof(c->addr)) == NULL)
		c->addr[0] = '\0';
}

static hsm_http_conn *conn_new(hsm_http_worker *w, int fd, const struct sockaddr_storage *ss)
{
	hsm_http_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->w = w;
	c->fd = fd;
	peer_text(c, ss);
	if (w->srv->tls_on) {
		pthread_mutex_lock(&w->srv->tls_mu);
		c->ssl = SSL_new(w->srv->tls);
		pthread_mutex_unlock(&w->srv->tls_mu);
		if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
			SSL_free(c->ssl);
			free(c);
			return NULL;
		}
		SSL_set_accept_state(c->ssl);
		BIO *rbio = SSL_get_rbio(c->ssl);
		BIO_set_callback_ex(rbio, watch_reads);
		BIO_set_callback_arg(rbio, (char *)c);
		/* Write what the socket takes and resume from a moved pointer later. */
		SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		c->state = CONN_HANDSHAKE;
	} else {
		c->state = CONN_READING;
	}
	if (proxy_trusted(w->srv, ss))
		c->state = CONN_PROXY;
	/* The first request (and the header and handshake) must arrive within the read timeout. */
	c->deadline_ns = after_ms(w->srv->cfg.read_timeout_ms);
	return c;
}

/*
 * At max_connections, the connection of this worker a new one may take the
 * place of, or NULL.  First one stalled: it began a request (or, new, its
 * PROXY header or TLS handshake) a second ago or more and has not completed
 * it, whether it sent nothing or some bytes (requests take milliseconds;
 * this is how connections are held open on purpose), the oldest first.
 * Else a keep-alive connection waiting for its next request, the one
 * waiting longest.  Never one whose request is with the handler or being
 * answered.
 */
static hsm_http_conn *evictable(hsm_http_worker *w)
{
	const uint64_t read_ns = (uint64_t)w->srv->cfg.read_timeout_ms * 1000000ULL;
	uint64_t now = hsm_mono_ns();
	hsm_http_conn *idle = NULL, *stalled = NULL;
	for (hsm_http_conn *c = w->conns; c != NULL; c = c->next) {
		if (c == w->running || (c->req != NULL && c->req->state != REQ_READING))
			continue;
		if (c->state == CONN_LINGER)
			return c; /* answered and closing: only waiting for the client's EOF */
		if (c->state == CONN_IDLE) {
			if (c->in_len == 0 && (idle == NULL || c->deadline_ns < idle->deadline_ns))
				idle = c;
		} else if ((c->state == CONN_READING || c->state == CONN_HANDSHAKE ||
		            c->state == CONN_PROXY) &&
		           c->deadline_ns + 1000000000ULL <= now + read_ns) {
			if (stalled == NULL || c->deadline_ns < stalled->deadline_ns)
				stalled = c;
		}
	}
	return stalled != NULL ? stalled : idle;
}

/* Closes an accepted connection that gets no place, giving back the slots it took. */
static void conn_turned_away(hsm_http_worker *w, int fd, const hsm_source *src, bool via_proxy)
{
	hsm_http_server *srv = w->srv;
	if (!w->stopping)
		limit_refused(w, src, false);
	close(fd);
	atomic_fetch_sub_explicit(&srv->n_conns, 1, memory_order_relaxed);
	if (!via_proxy)
		hsm_conn_limit_give(srv->per_source, src);
}

/* Makes an accepted connection, its slots taken, one of w's. */
static void conn_register(hsm_http_worker *w, int fd, const struct sockaddr_storage *ss,
                          const hsm_source *src, bool via_proxy)
{
	hsm_http_conn *c = !w->stopping ? conn_new(w, fd, ss) : NULL;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
	if (c == NULL || epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
		if (c != NULL) { /* out of memory: closed at once */
			SSL_free(c->ssl);
			free(c);
		}
		conn_turned_away(w, fd, src, via_proxy);
		return;
	}
	c->src = *src;
	c->src_counted = !via_proxy;
	int one = 1;
	/* Each response is written whole; Nagle would only delay it. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Bounded, so that responses to pipelined requests the client never reads stall in
	 * the write timeout instead of growing the kernel's buffer to megabytes each. */
	int sndbuf = HSM_HTTP_SNDBUF;
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	link_conn(w, c);
	hsm_http_balance(w, true);
}

/* At max_connections: closes w's connection that gives way; false when it has none. */
static bool make_room(hsm_http_worker *w)
{
	hsm_http_conn *old = evictable(w);
	if (old == NULL)
		return false;
	hsm_http_conn_close(old); /* gives its slot back */
	atomic_fetch_add_explicit(&w->srv->evicted, 1, memory_order_relaxed);
	return true;
}

/*
 * At max_connections with nothing of its own to give way, a worker hands the
 * new connection to the worker holding the most (its idle or stalled ones
 * are as much the server's as this one's: the balance may have left this
 * worker only busy ones), which makes room or turns it away.  False when
 * there is no such worker (or no memory): the caller turns it away.
 */
static bool conn_hand_over(hsm_http_worker *w, int fd, const struct sockaddr_storage *ss,
                           const hsm_source *src, bool via_proxy)
{
	hsm_http_server *srv = w->srv;
	hsm_http_worker *to = NULL;
	uint32_t most = 0;
	for (unsigned i = 0; i < srv->n_workers; i++) {
		hsm_http_worker *o = &srv->workers[i];
		uint32_t n = atomic_load_explicit(&o->n_open, memory_order_relaxed);
		if (o != w && n > most &&
		    atomic_load_explicit(&o->thread_started, memory_order_acquire) && o->wake_fd >= 0) {
			to = o;
			most = n;
		}
	}
	if (to == NULL || atomic_load(&srv->stopping))
		return false;
	/* A few at a time: each holds a descriptor until taken, and a flood with nothing to
	 * give way anywhere must not run the process out of them (FD_RESERVE). */
	if (atomic_fetch_add(&srv->n_handed, 1) >= HAND_INFLIGHT_MAX) {
		atomic_fetch_sub(&srv->n_handed, 1);
		return false;
	}
	hsm_http_handed *h = malloc(sizeof(*h));
	if (h == NULL) {
		atomic_fetch_sub(&srv->n_handed, 1);
		return false;
	}
	*h = (hsm_http_handed){.fd = fd, .via_proxy = via_proxy, .src = *src, .ss = *ss};
	h->next = atomic_load_explicit(&to->handed, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&to->handed, &h->next, h,
	                                              memory_order_release, memory_order_relaxed))
		;
	uint64_t one = 1;
	ssize_t r = write(to->wake_fd, &one, sizeof(one));
	(void)r; /* a full counter means a wakeup is pending already */
	return true;
}

void hsm_http_conn_adopt_handed(hsm_http_worker *w)
{
	hsm_http_handed *h = atomic_exchange_explicit(&w->handed, NULL, memory_order_acquire);
	while (h != NULL) {
		hsm_http_handed *next = h->next;
		/* Another connection may have closed meanwhile: then no room is needed. */
		bool over = atomic_load_explicit(&w->srv->n_conns, memory_order_relaxed) >
		            w->srv->cfg.max_connections;
		if (!w->stopping && (!over || make_room(w)))
			conn_register(w, h->fd, &h->ss, &h->src, h->via_proxy);
		else
			conn_turned_away(w, h->fd, &h->src, h->via_proxy);
		free(h);
		atomic_fetch_sub(&w->srv->n_handed, 1);
		h = next;
	}
}

static void conn_open(hsm_http_worker *w, int fd, const struct sockaddr_storage *ss)
{
	hsm_http_server *srv = w->srv;
	/* A source at its bound is turned away before it can make anyone else's connection
	 * give way.  A trusted balancer's connections count for the client they name. */
	bool via_proxy = proxy_trusted(srv, ss);
	hsm_source src = hsm_source_of_sockaddr(ss);
	if (!via_proxy && !hsm_conn_limit_take(srv->per_source, &src)) {
		limit_refused(w, &src, true);
		close(fd);
		return;
	}
	uint32_t n = atomic_fetch_add_explicit(&srv->n_conns, 1, memory_order_relaxed) + 1;
	if (n > srv->cfg.max_connections && !w->stopping && !make_room(w)) {
		if (!conn_hand_over(w, fd, ss, &src, via_proxy))
			conn_turned_away(w, fd, &src, via_proxy);
		return;
	}
	conn_register(w, fd, ss, &src, via_proxy);
}

/* Whether ACCEPT_QUIET_MS passed between the accept failure at last_ns and now_ns. */
static bool quiet_since(uint64_t last_ns, uint64_t now_ns)
{
	return now_ns - last_ns >= (uint64_t)ACCEPT_QUIET_MS * 1000000ULL;
}

/* An accept worked: the spell of failures (every worker's) ends once it has been quiet. */
static void accept_worked(hsm_http_server *srv)
{
	if (atomic_load_explicit(&srv->accept_failures, memory_order_relaxed) == 0 ||
	    !quiet_since(atomic_load(&srv->accept_failed_ns), hsm_mono_ns()))
		return;
	uint64_t n = atomic_exchange(&srv->accept_failures, 0);
	if (n > 0)
		hsm_info("accepting connections again (%llu accept failures for want of descriptors "
		         "or memory)",
		         (unsigned long long)n);
}

/* An accept failed for want of descriptors or memory: said once a spell, by any worker. */
static void accept_failed(hsm_http_server *srv, int err)
{
	uint64_t now = hsm_mono_ns(), last = atomic_exchange(&srv->accept_failed_ns, now);
	if (last != 0 && quiet_since(last, now))
		atomic_store(&srv->accept_failures, 0); /* no accept ended the last spell: a new one */
	if (atomic_fetch_add(&srv->accept_failures, 1) == 0)
		hsm_warn("accept: %s; pausing %u ms at a time and closing stalled or idle connections "
		         "until it works (said once a spell, which ends %u s after its last failure)",
		         strerror(err), ACCEPT_PAUSE_MS, ACCEPT_QUIET_MS / 1000);
}

void hsm_http_accept(hsm_http_worker *w)
{
	for (int i = 0; i < ACCEPT_BATCH && w->listening; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(w->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			accept_worked(w->srv);
			conn_open(w, fd, &ss);
			continue;
		}
		int err = errno;
		if (err == EINTR || err == ECONNABORTED)
			continue;
		if (err == EAGAIN || err == EWOULDBLOCK)
			return;
		if (atomic_load(&w->srv->stopping)) {
			hsm_http_listen_on(w, false); /* the shared socket was shut down under us */
			return;
		}
		if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
			/*
			 * The socket stays readable: pause accepting instead of spinning, and
			 * give a stalled or idle connection's descriptor back, as at
			 * max_connections, so a new client waits 100 ms, not for a timeout.
			 * Said once a spell, not every pause (accept_failed).
			 */
			hsm_http_listen_on(w, false);
			w->resume_ns = after_ms(ACCEPT_PAUSE_MS);
			(void)make_room(w);
			accept_failed(w->srv, err);
		} else {
			hsm_warn("accept: %s", strerror(err));
		}
		return;
	}
}

/* Raises the soft RLIMIT_NOFILE toward the hard one when max_connections needs it. */
hsm_result hsm_http_fd_limit(hsm_http_server *srv)
{
	struct rlimit rl;
	HSM_ENSURE(getrlimit(RLIMIT_NOFILE, &rl) == 0, HSM_ERR_IO, "getrlimit: %s", strerror(errno));
	rlim_t want = (rlim_t)srv->cfg.max_connections + FD_RESERVE;
	if (rl.rlim_cur < want && rl.rlim_cur != RLIM_INFINITY) {
		rlim_t raised = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
		struct rlimit nl = {.rlim_cur = raised, .rlim_max = rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
			rl.rlim_cur = raised;
		/*
		 * Fewer connections than max_connections fit: take the smaller number,
		 * so a full server closes a stalled or idle connection for a new one
		 * (evictable) instead of failing to accept it.
		 */
		rlim_t room = rl.rlim_cur > 2 * FD_RESERVE ? rl.rlim_cur - FD_RESERVE : rl.rlim_cur / 2;
		if (rl.rlim_cur < want && room < srv->cfg.max_connections) {
			srv->cfg.max_connections = room > 0 ? (uint32_t)room : 1;
			hsm_warn("open-file limit %llu is below max_connections + %u: max_connections "
			         "lowered to %u; raise the limit (ulimit -n, LimitNOFILE=)",
			         (unsigned long long)rl.rlim_cur, FD_RESERVE, srv->cfg.max_connections);
		}
	}
	return HSM_SUCCESS;
}
