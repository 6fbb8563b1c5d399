/*
 * http_conn.c - connection bookkeeping around evhttp: counting against
 * max_connections, the read deadline, and closing at stop.
 *
 * evhttp tells a server little about its connections, so this file hooks in
 * at the three places libevent 2.1 offers:
 * - the bufferevent callback (evhttp_set_bevcb) runs for every accepted
 *   socket: the connection record is made there;
 * - on the next pass of the loop the record is "adopted": the evhttp
 *   connection is found (it is the bufferevent's callback argument) and given
 *   a close callback, which is where the record ends.  A reference taken on
 *   the bufferevent keeps this safe even if evhttp gave up on the socket;
 * - a callback on the bufferevent's input buffer notices the first byte of
 *   the next request on a keep-alive connection, which starts its read
 *   deadline.
 * evhttp's own bufferevent timeouts can only say "nothing arrived for N
 * seconds", which a client trickling one byte at a time never trips, so a
 * periodic sweep closes connections whose request is not complete by the
 * deadline (the defence against slowloris).  The bufferevent's read timeout
 * is the idle timeout and its write timeout the write timeout.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/log.h"
#include "server/http_internal.h"

/* File descriptors above this are not tracked (and closed); see hsm_http_fd_table_init. */
#define FD_TABLE_CAP ((size_t)1 << 22)
/* Descriptors kept free for everything else the daemon opens. */
#define FD_RESERVE 256U

static struct timeval tv_of_ms(uint32_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000U), .tv_usec = (suseconds_t)((ms % 1000U) * 1000U)};
	return tv;
}

static void set_deadline(hsm_http_conn *conn)
{
	conn->state = CONN_READING;
	conn->deadline_ns = hsm_mono_ns() + (uint64_t)conn->w->srv->cfg.read_timeout_ms * 1000000ULL;
}

/* Input buffer callback: the first byte of a request after an idle spell. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	hsm_http_conn *conn = arg;
	if (info->n_added == 0 || conn->state != CONN_IDLE)
		return;
	set_deadline(conn);
	evbuffer_cb_clear_flags(buf, conn->input_cb, EVBUFFER_CB_ENABLED);
}

static struct bufferevent *new_bev(hsm_http_worker *w, struct event_base *base)
{
	if (w->srv->tls == NULL)
		return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	SSL *ssl = SSL_new(w->srv->tls);
	if (ssl == NULL)
		return NULL;
	struct bufferevent *bev = bufferevent_openssl_socket_new(base, -1, ssl,
	                                                         BUFFEREVENT_SSL_ACCEPTING,
	                                                         BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(ssl);
		return NULL;
	}
	/* A client closing without close_notify is an ordinary end of connection:
	 * HTTP's own framing says whether a message was complete. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static void link_conn(hsm_http_worker *w, hsm_http_conn *conn)
{
	conn->next = w->conns;
	if (w->conns != NULL)
		w->conns->prev = conn;
	w->conns = conn;
	w->n_conns++;
	conn->next_new = w->new_conns;
	w->new_conns = conn;
}

static void unlink_conn(hsm_http_worker *w, hsm_http_conn *conn)
{
	if (conn->prev != NULL)
		conn->prev->next = conn->next;
	else
		w->conns = conn->next;
	if (conn->next != NULL)
		conn->next->prev = conn->prev;
	w->n_conns--;
	atomic_fetch_sub_explicit(&w->srv->n_conns, 1, memory_order_relaxed);
}

/* evhttp_set_bevcb: runs on accept, before evhttp makes its connection. */
struct bufferevent *hsm_http_conn_bevcb(struct event_base *base, void *arg)
{
	hsm_http_worker *w = arg;
	const hsm_http_config *cfg = &w->srv->cfg;
	hsm_http_conn *conn = calloc(1, sizeof(*conn));
	if (conn == NULL)
		return NULL; /* evhttp falls back to a bufferevent of its own */
	struct bufferevent *bev = new_bev(w, base);
	if (bev == NULL) {
		free(conn);
		return NULL;
	}
	conn->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), on_input, conn);
	if (conn->input_cb == NULL) {
		bufferevent_free(bev);
		free(conn);
		return NULL;
	}
	conn->w = w;
	conn->bev = bev;
	conn->fd = -1;
	conn->tls = w->srv->tls != NULL;
	set_deadline(conn); /* the first request (and TLS handshake) start now */
	evbuffer_cb_clear_flags(bufferevent_get_input(bev), conn->input_cb, EVBUFFER_CB_ENABLED);
	struct timeval rd = tv_of_ms(cfg->idle_timeout_ms), wr = tv_of_ms(cfg->write_timeout_ms);
	bufferevent_set_timeouts(bev, &rd, &wr);
	uint32_t n = atomic_fetch_add_explicit(&w->srv->n_conns, 1, memory_order_relaxed) + 1;
	conn->reject = n > cfg->max_connections;
	bufferevent_incref(bev); /* until adoption: see the file comment */
	link_conn(w, conn);
	hsm_http_balance(w, true);
	event_active(w->adopt_ev, EV_TIMEOUT, 0);
	return bev;
}

static void forget_conn(hsm_http_conn *conn)
{
	hsm_http_worker *w = conn->w;
	evbuffer_remove_cb_entry(bufferevent_get_input(conn->bev), conn->input_cb);
	if (conn->fd >= 0 && (size_t)conn->fd < w->srv->by_fd_len)
		atomic_store_explicit(&w->srv->by_fd[conn->fd], NULL, memory_order_relaxed);
	unlink_conn(w, conn);
	if (conn->hold_ev != NULL)
		event_free(conn->hold_ev);
	free(conn->client_subject);
	free(conn);
	hsm_http_balance(w, false);
}

/* evhttp_connection_set_closecb: evhttp is about to free the connection. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	hsm_http_conn *conn = arg;
	hsm_http_worker *w = conn->w;
	forget_conn(conn);
	hsm_http_worker_check_stopped(w);
}

/*
 * The hold event.  evhttp stops reading a connection while its request is
 * answered and starts writing when the reply comes.  A reply given in the same
 * loop pass folds the two into one epoll change; a reply that comes later
 * (from the audit writer: nearly every request) would take the socket out of
 * epoll and put it back, two costlier system calls per request.  A persistent
 * read event of our own on the socket keeps it registered throughout.  It
 * does nothing while evhttp reads too.  It may run just after evhttp took a
 * whole request in the same loop pass; if the socket is really readable while
 * a request is being answered (data sent early, or the client closing), it
 * lets go, since evhttp will not read until the reply is written and a
 * level-triggered event would fire on every pass; the reply re-arms it.  Best
 * effort: without it only the extra calls come back.
 */
static void on_hold(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	hsm_http_conn *conn = arg;
	if (conn->state != CONN_HANDLING)
		return;
	if (conn->hold_skip) {
		/* Most often the bytes of the request itself, read by evhttp in this
		 * same pass: nothing to look at.  Were they new bytes, the event stays
		 * ready and comes back next pass. */
		conn->hold_skip = false;
		return;
	}
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT); /* data (> 0), EOF (0) or error */
	if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
		(void)event_del(conn->hold_ev);
}

void hsm_http_conn_hold(hsm_http_conn *conn)
{
	if (conn->hold_ev != NULL && !event_pending(conn->hold_ev, EV_READ, NULL))
		(void)event_add(conn->hold_ev, NULL);
}

/*
 * evhttp writes a reply when epoll next reports the socket writable: one more
 * loop pass and two epoll changes (write on, then off again) per request.
 * A reply sent from the completion drain is written here at once instead;
 * when all of it went out, evhttp is told as its write event would have told
 * it, and the changes cancel before they reach epoll.  A short or failed write
 * leaves the rest to evhttp's own write event, as before.  A TLS connection's
 * bufferevent only writes from its write event, so that event is made active
 * instead: it runs later in this same pass, with the same effect on epoll
 * (struct bufferevent's ev_write, libevent 2.1's bufferevent_struct.h).
 */
void hsm_http_conn_write_now(hsm_http_conn *conn)
{
	if (conn->fd < 0)
		return;
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	if (evbuffer_get_length(out) == 0)
		return;
	if (conn->tls) {
		/* OpenSSL writes the header and the body as two records, two write(2)
		 * calls: corked, they leave as one TCP segment, and the loopback or
		 * network path runs once.  Uncorked once all of it is written
		 * (hsm_http_conn_sent); closing the socket flushes it too. */
		int one = 1;
		if (!conn->corked &&
		    setsockopt(conn->fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one)) == 0)
			conn->corked = true;
		event_active(&conn->bev->ev_write, EV_WRITE, 1);
		return;
	}
	if (evbuffer_write(out, conn->fd) > 0 && evbuffer_get_length(out) == 0)
		bufferevent_trigger(conn->bev, EV_WRITE, 0); /* evhttp's write callback: may free conn */
}

static void adopt(hsm_http_worker *w, hsm_http_conn *conn)
{
	struct bufferevent *bev = conn->bev;
	void *evcon = NULL;
	bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
	if (evcon == NULL) {
		/* evhttp dropped the socket (out of memory): only our reference is left. */
		forget_conn(conn);
		bufferevent_decref(bev);
		return;
	}
	conn->evcon = evcon;
	evhttp_connection_set_closecb(conn->evcon, on_close, conn);
	int fd = (int)bufferevent_getfd(bev);
	int one = 1;
	if (fd >= 0 && (size_t)fd < w->srv->by_fd_len) {
		conn->fd = fd;
		atomic_store_explicit(&w->srv->by_fd[fd], conn, memory_order_relaxed);
		/* Each response is written whole; Nagle would only delay it. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		conn->hold_ev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_hold, conn);
		hsm_http_conn_hold(conn);
	} else {
		conn->reject = true;
	}
	bufferevent_decref(bev); /* evhttp holds its own reference */
	if (conn->reject || w->stopping)
		evhttp_connection_free(conn->evcon); /* calls on_close */
}

void hsm_http_conn_adopt_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	hsm_http_worker *w = arg;
	while (w->new_conns != NULL) {
		hsm_http_conn *conn = w->new_conns;
		w->new_conns = conn->next_new;
		conn->next_new = NULL;
		adopt(w, conn);
	}
}

void hsm_http_conn_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	hsm_http_worker *w = arg;
	uint64_t now = hsm_mono_ns();
	hsm_http_conn *next;
	for (hsm_http_conn *conn = w->conns; conn != NULL; conn = next) {
		next = conn->next;
		if (conn->evcon != NULL && conn->state == CONN_READING && now >= conn->deadline_ns)
			evhttp_connection_free(conn->evcon); /* unlinks conn via on_close */
	}
}

hsm_http_conn *hsm_http_conn_of(hsm_http_worker *w, struct evhttp_request *evreq)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(evreq);
	if (evcon == NULL)
		return NULL;
	evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (fd < 0 || (size_t)fd >= w->srv->by_fd_len)
		return NULL;
	hsm_http_conn *conn = atomic_load_explicit(&w->srv->by_fd[fd], memory_order_relaxed);
	return conn != NULL && conn->w == w && conn->evcon == evcon ? conn : NULL;
}

void hsm_http_conn_handling(hsm_http_conn *conn)
{
	conn->state = CONN_HANDLING;
	conn->hold_skip = true;
	if (conn->tls && !conn->subject_done) {
		conn->subject_done = true;
		conn->client_subject = hsm_http_tls_client_subject(bufferevent_openssl_get_ssl(conn->bev));
	}
}

/* evhttp_request_set_on_complete_cb: the response has been written. */
void hsm_http_conn_sent(struct evhttp_request *evreq, void *arg)
{
	(void)evreq;
	hsm_http_conn *conn = arg;
	if (conn->corked) {
		int zero = 0;
		(void)setsockopt(conn->fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
		conn->corked = false;
	}
	struct evbuffer *in = bufferevent_get_input(conn->bev);
	if (evbuffer_get_length(in) > 0) {
		set_deadline(conn); /* a pipelined request has begun */
	} else {
		conn->state = CONN_IDLE;
		evbuffer_cb_set_flags(in, conn->input_cb, EVBUFFER_CB_ENABLED);
	}
}

void hsm_http_conn_close_idle(hsm_http_worker *w, bool all_but_handling)
{
	hsm_http_conn *next;
	for (hsm_http_conn *conn = w->conns; conn != NULL; conn = next) {
		next = conn->next;
		if (conn->evcon == NULL)
			continue; /* adoption closes it (w->stopping) */
		if (conn->state == CONN_IDLE || (all_but_handling && conn->state != CONN_HANDLING))
			evhttp_connection_free(conn->evcon);
		else if (all_but_handling && conn->fd >= 0)
			(void)shutdown(conn->fd, SHUT_RDWR); /* its response is abandoned */
	}
}

/*
 * Sizes the descriptor-to-connection table, raising the soft RLIMIT_NOFILE
 * toward the hard one when max_connections needs it.
 */
hsm_result hsm_http_fd_table_init(hsm_http_server *srv)
{
	struct rlimit rl;
	HSM_ENSURE(getrlimit(RLIMIT_NOFILE, &rl) == 0, HSM_ERR_IO, "getrlimit: %s", strerror(errno));
	rlim_t want = (rlim_t)srv->cfg.max_connections + FD_RESERVE;
	if (rl.rlim_cur < want && rl.rlim_cur != RLIM_INFINITY) {
		rlim_t raised = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
		struct rlimit nl = {.rlim_cur = raised, .rlim_max = rl.rlim_max};
		if (setrlimit(RLIMIT_NOFILE, &nl) == 0)
			rl.rlim_cur = raised;
		if (rl.rlim_cur < want)
			hsm_warn("open-file limit %llu is below max_connections + %u; raise it (ulimit -n)",
			         (unsigned long long)rl.rlim_cur, FD_RESERVE);
	}
	size_t len = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > FD_TABLE_CAP ? FD_TABLE_CAP
	                                                                          : (size_t)rl.rlim_cur;
	srv->by_fd = calloc(len, sizeof(*srv->by_fd));
	HSM_ENSURE(srv->by_fd != NULL, HSM_ERR_NOMEM, "out of memory");
	srv->by_fd_len = len;
	return HSM_SUCCESS;
}
