/*
 * http.c - the HTTP server's life cycle: workers, their event loops and
 * listening sockets, start, graceful stop and free.
 *
 * Each worker is a thread running its own event_base (created without locks:
 * nothing else touches it) with its own evhttp.  By default all workers
 * accept from one shared listening socket.  Per-worker SO_REUSEPORT sockets
 * (cfg.reuseport) measured no faster on two cores, with keep-alive or with a
 * connection per request, and they have a hazard: a second process of the
 * same user binding the same port joins the group and silently receives a
 * share of the connections, where a plain socket makes it fail with
 * EADDRINUSE.  Other threads reach a worker only through its completion
 * stack and eventfd (http_resp.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "common/log.h"
#include "server/http_internal.h"

#define ACCEPT_PAUSE_MS 100U
#define SWEEP_MIN_MS 10U
#define SWEEP_MAX_MS 1000U

void hsm_http_config_defaults(hsm_http_config *cfg)
{
	HSM_ASSERT(cfg != NULL);
	memset(cfg, 0, sizeof(*cfg));
	cfg->listen = "127.0.0.1:8443";
	cfg->max_body_bytes = HSM_HTTP_DEFAULT_MAX_BODY;
	cfg->max_header_bytes = HSM_HTTP_DEFAULT_MAX_HEADERS;
	cfg->read_timeout_ms = HSM_HTTP_DEFAULT_READ_TIMEOUT_MS;
	cfg->idle_timeout_ms = HSM_HTTP_DEFAULT_IDLE_TIMEOUT_MS;
	cfg->write_timeout_ms = HSM_HTTP_DEFAULT_WRITE_TIMEOUT_MS;
	cfg->max_connections = HSM_HTTP_DEFAULT_MAX_CONNECTIONS;
	cfg->client_auth = HSM_HTTP_CLIENT_AUTH_NONE;
}

static struct timeval tv_ms(uint32_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000U), .tv_usec = (suseconds_t)((ms % 1000U) * 1000U)};
	return tv;
}

static hsm_result check_config(const hsm_http_config *cfg)
{
	HSM_ENSURE(cfg->listen != NULL, HSM_ERR_VALIDATION, "no listen address");
	HSM_ENSURE(cfg->workers <= HSM_HTTP_MAX_WORKERS, HSM_ERR_VALIDATION,
	           "at most %u workers", HSM_HTTP_MAX_WORKERS);
	HSM_ENSURE(cfg->max_body_bytes > 0 && cfg->max_body_bytes <= HSM_BUF_MAX &&
	               cfg->max_header_bytes >= 256 && cfg->max_header_bytes <= HSM_BUF_MAX,
	           HSM_ERR_VALIDATION, "body and header limits out of range");
	HSM_ENSURE(cfg->read_timeout_ms > 0 && cfg->idle_timeout_ms > 0 && cfg->write_timeout_ms > 0,
	           HSM_ERR_VALIDATION, "timeouts must be positive");
	HSM_ENSURE(cfg->max_connections > 0, HSM_ERR_VALIDATION, "max_connections must be positive");
	HSM_ENSURE((cfg->tls_cert == NULL) == (cfg->tls_key == NULL), HSM_ERR_VALIDATION,
	           "tls_cert and tls_key go together");
	HSM_ENSURE(cfg->client_auth == HSM_HTTP_CLIENT_AUTH_NONE || cfg->tls_cert != NULL,
	           HSM_ERR_VALIDATION, "client certificates need TLS");
	return HSM_SUCCESS;
}

static unsigned cpu_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > (long)HSM_HTTP_MAX_WORKERS ? HSM_HTTP_MAX_WORKERS : (unsigned)n;
}

/* ---- worker callbacks ------------------------------------------------------ */

void hsm_http_worker_check_stopped(hsm_http_worker *w)
{
	if (w->stopping && w->n_conns == 0)
		event_base_loopbreak(w->base);
}

static void begin_stop(hsm_http_worker *w)
{
	w->stopping = true;
	if (w->bound != NULL) {
		evhttp_del_accept_socket(w->http, w->bound);
		w->bound = NULL;
	}
	event_del(w->resume_ev);
	event_del(w->rearm_ev);
	hsm_http_conn_close_idle(w, false);
	struct timeval tv = tv_ms(atomic_load(&w->srv->grace_ms));
	event_add(w->stop_ev, &tv);
	hsm_http_worker_check_stopped(w);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	hsm_http_worker *w = arg;
	uint64_t v;
	ssize_t n = read(fd, &v, sizeof(v));
	(void)n; /* nothing to read only means another pass emptied it */
	hsm_http_worker_drain(w, true);
	if (atomic_load(&w->srv->stopping) && !w->stopping)
		begin_stop(w);
	else
		hsm_http_balance(w, false);
}

/* The grace period is over: drop whatever is left and leave the loop. */
static void on_grace_over(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	hsm_http_worker *w = arg;
	hsm_http_conn_close_idle(w, true);
	event_base_loopbreak(w->base);
}

/*
 * accept() failed for lack of descriptors or memory.  The socket stays
 * readable, so pause accepting briefly instead of spinning.
 */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	(void)arg;
	int err = errno;
	hsm_http_worker *w = hsm_http_current_worker();
	if (w != NULL && atomic_load(&w->srv->stopping)) {
		evconnlistener_disable(lev); /* the shared socket was shut down under us */
		return;
	}
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		evconnlistener_disable(lev);
		struct timeval tv = tv_ms(ACCEPT_PAUSE_MS);
		if (w != NULL)
			event_add(w->resume_ev, &tv);
		hsm_warn("accept: %s; pausing for %u ms", strerror(err), ACCEPT_PAUSE_MS);
	} else {
		hsm_warn("accept: %s", strerror(err));
	}
}

static void on_resume_accept(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	hsm_http_worker *w = arg;
	if (!w->stopping && w->bound != NULL && !w->balance_paused)
		evconnlistener_enable(evhttp_bound_socket_get_listener(w->bound));
}

static void *worker_main(void *arg)
{
	hsm_http_worker *w = arg;
	hsm_http_set_current_worker(w);
	if (event_base_dispatch(w->base) < 0)
		hsm_error("http worker %u: event loop failed", w->index);
	hsm_http_set_current_worker(NULL);
	return NULL;
}

/* ---- worker set-up and tear-down ---------------------------------------------- */

static hsm_result worker_listen(hsm_http_worker *w, int fd, bool own)
{
	unsigned flags = LEV_OPT_CLOSE_ON_EXEC | (own ? LEV_OPT_CLOSE_ON_FREE : 0U);
	struct evconnlistener *lev = evconnlistener_new(w->base, NULL, NULL, flags, 0, fd);
	HSM_ENSURE(lev != NULL, HSM_ERR_NOMEM, "cannot create a listener");
	if (own)
		w->listen_fd = -1; /* the listener owns it now */
	evconnlistener_set_error_cb(lev, on_accept_error);
	w->bound = evhttp_bind_listener(w->http, lev);
	if (w->bound == NULL) {
		evconnlistener_free(lev);
		return HSM_FAIL(HSM_ERR_NOMEM, "cannot bind the listener");
	}
	return HSM_SUCCESS;
}

static hsm_result worker_events(hsm_http_worker *w)
{
	const hsm_http_config *cfg = &w->srv->cfg;
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	HSM_ENSURE(w->wake_fd >= 0, HSM_ERR_IO, "eventfd: %s", strerror(errno));
	w->wake_ev = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST, on_wake, w);
	w->adopt_ev = event_new(w->base, -1, 0, hsm_http_conn_adopt_cb, w);
	w->local_ev = event_new(w->base, -1, 0, hsm_http_local_cb, w);
	w->sweep_ev = event_new(w->base, -1, EV_PERSIST, hsm_http_conn_sweep_cb, w);
	w->stop_ev = evtimer_new(w->base, on_grace_over, w);
	w->resume_ev = evtimer_new(w->base, on_resume_accept, w);
	w->rearm_ev = evtimer_new(w->base, hsm_http_balance_rearm_cb, w);
	HSM_ENSURE(w->wake_ev && w->adopt_ev && w->local_ev && w->sweep_ev && w->stop_ev &&
	               w->resume_ev && w->rearm_ev,
	           HSM_ERR_NOMEM, "out of memory");
	/* A quarter of the read timeout: a late request is cut within 1.25 times it. */
	uint32_t sweep = cfg->read_timeout_ms / 4U;
	sweep = sweep < SWEEP_MIN_MS ? SWEEP_MIN_MS : sweep > SWEEP_MAX_MS ? SWEEP_MAX_MS : sweep;
	struct timeval tv = tv_ms(sweep);
	HSM_ENSURE(event_add(w->wake_ev, NULL) == 0 && event_add(w->sweep_ev, &tv) == 0,
	           HSM_ERR_INTERNAL, "cannot add events");
	return HSM_SUCCESS;
}

static hsm_result worker_init(hsm_http_server *srv, hsm_http_worker *w, int fd, bool own)
{
	const hsm_http_config *cfg = &srv->cfg;
	w->srv = srv;
	w->listen_fd = own ? fd : -1;
	w->rand_pos = sizeof(w->rand_pool); /* refill on first use */
	w->date_sec = -1;
	struct event_config *ec = event_config_new();
	HSM_ENSURE(ec != NULL, HSM_ERR_NOMEM, "out of memory");
	/* evhttp switches a connection between reading and writing twice a request;
	 * the changelist folds each switch into one epoll_ctl (2 a request, not 4:
	 * about 15% less CPU per request measured).  No descriptor here is dup()ed,
	 * the changelist's one caveat. */
	event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	w->base = event_base_new_with_config(ec);
	event_config_free(ec);
	HSM_ENSURE(w->base != NULL, HSM_ERR_INTERNAL, "cannot create an event loop");
	w->http = evhttp_new(w->base);
	HSM_ENSURE(w->http != NULL, HSM_ERR_NOMEM, "out of memory");
	evhttp_set_max_body_size(w->http, (ev_ssize_t)cfg->max_body_bytes);
	evhttp_set_max_headers_size(w->http, (ev_ssize_t)cfg->max_header_bytes);
	/* Let every known method through so the others get 405 rather than 501. */
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                        EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                                        EVHTTP_REQ_PATCH);
	evhttp_set_gencb(w->http, hsm_http_request_cb, w);
	evhttp_set_bevcb(w->http, hsm_http_conn_bevcb, w);
	HSM_GUARD(worker_events(w));
	return worker_listen(w, fd, own);
}

static void worker_free(hsm_http_worker *w)
{
	if (w->base == NULL) {
		if (w->listen_fd >= 0)
			close(w->listen_fd);
		return;
	}
	w->stopping = true;
	if (w->adopt_ev != NULL)
		hsm_http_conn_adopt_cb(-1, 0, w); /* closes connections not yet adopted */
	if (w->http != NULL)
		evhttp_free(w->http); /* closes every connection: on_close frees each record */
	struct event *evs[] = {w->wake_ev, w->adopt_ev,  w->local_ev, w->sweep_ev,
	                       w->stop_ev, w->resume_ev, w->rearm_ev};
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	/* Runs pending finalizers: buffers referencing response bodies release them. */
	event_base_free(w->base);
	hsm_http_req_pool_free(w);
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	if (w->listen_fd >= 0)
		close(w->listen_fd);
}

/* ---- server ---------------------------------------------------------------- */

static hsm_result open_workers(hsm_http_server *srv, struct sockaddr_storage *ss, socklen_t len,
                               const char *name)
{
	bool shared = !srv->cfg.reuseport;
	if (shared) {
		HSM_GUARD(hsm_http_listen_socket(ss, len, false, name, &srv->shared_fd));
	}
	for (unsigned i = 0; i < srv->n_workers; i++) {
		hsm_http_worker *w = &srv->workers[i];
		w->index = i;
		int fd = srv->shared_fd;
		if (!shared) {
			HSM_GUARD(hsm_http_listen_socket(ss, len, true, name, &fd));
		}
		if (i == 0) {
			struct sockaddr_storage bound;
			socklen_t blen = sizeof(bound);
			if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
				if (!shared)
					close(fd);
				return HSM_FAIL(HSM_ERR_IO, "getsockname: %s", strerror(errno));
			}
			srv->port = hsm_http_sockaddr_port(&bound);
			hsm_http_sockaddr_set_port(ss, srv->port); /* the others join this port */
		}
		HSM_GUARD(worker_init(srv, w, fd, !shared));
	}
	return HSM_SUCCESS;
}

hsm_result hsm_http_server_new(const hsm_http_config *cfg, hsm_http_handler handler, void *arg,
                               hsm_http_server **out)
{
	HSM_ASSERT(cfg != NULL && handler != NULL && out != NULL);
	hsm_result res = HSM_SUCCESS;
	struct sockaddr_storage ss;
	socklen_t len = 0;
	HSM_GUARD(check_config(cfg));
	HSM_GUARD(hsm_http_parse_addr(cfg->listen, &ss, &len));
	hsm_http_server *srv = calloc(1, sizeof(*srv));
	HSM_ENSURE(srv != NULL, HSM_ERR_NOMEM, "out of memory");
	srv->cfg = *cfg;
	srv->handler = handler;
	srv->arg = arg;
	srv->shared_fd = -1;
	srv->n_workers = cfg->workers != 0 ? cfg->workers : cpu_count();
	atomic_store(&srv->n_accepting, srv->n_workers);
	if (cfg->tls_cert != NULL)
		HSM_TRY(hsm_http_tls_new(cfg, &srv->tls));
	srv->cfg.listen = srv->cfg.tls_cert = srv->cfg.tls_key = srv->cfg.tls_client_ca = NULL;
	HSM_TRY(hsm_http_fd_table_init(srv));
	srv->workers = calloc(srv->n_workers, sizeof(*srv->workers));
	HSM_CHECK(srv->workers != NULL, HSM_ERR_NOMEM, "out of memory");
	for (unsigned i = 0; i < srv->n_workers; i++)
		srv->workers[i].listen_fd = srv->workers[i].wake_fd = -1;
	HSM_TRY(open_workers(srv, &ss, len, cfg->listen));
	*out = srv;
	srv = NULL;
out:
	hsm_http_server_free(srv);
	return res;
}

hsm_result hsm_http_server_start(hsm_http_server *srv)
{
	HSM_ASSERT(srv != NULL);
	HSM_ENSURE(!srv->started && !srv->joined, HSM_ERR_INVALID_STATE, "server already started");
	srv->started = true;
	/* Workers block every signal: SIGPIPE becomes EPIPE, and the caller handles the rest. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = 0;
	for (unsigned i = 0; i < srv->n_workers && rc == 0; i++) {
		hsm_http_worker *w = &srv->workers[i];
		rc = pthread_create(&w->thread, NULL, worker_main, w);
		w->thread_started = rc == 0;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		hsm_http_server_stop(srv, 0);
		return HSM_FAIL(HSM_ERR_INTERNAL, "cannot start a worker thread: %s", strerror(rc));
	}
	return HSM_SUCCESS;
}

void hsm_http_server_stop(hsm_http_server *srv, uint32_t grace_ms)
{
	HSM_ASSERT(srv != NULL && hsm_http_current_worker() == NULL);
	if (srv->joined)
		return;
	atomic_store(&srv->grace_ms, grace_ms);
	atomic_store(&srv->stopping, true);
	/* A shared socket refuses new clients now rather than queueing them until
	 * the end of the grace period (Linux aborts a listening socket on shutdown). */
	if (srv->shared_fd >= 0)
		(void)shutdown(srv->shared_fd, SHUT_RDWR);
	for (unsigned i = 0; i < srv->n_workers; i++) {
		uint64_t one = 1;
		if (srv->workers[i].thread_started) {
			ssize_t n = write(srv->workers[i].wake_fd, &one, sizeof(one));
			(void)n; /* a failed write means a wakeup is already pending */
		}
	}
	bool all_ran = srv->n_workers > 0;
	for (unsigned i = 0; i < srv->n_workers; i++) {
		all_ran = all_ran && srv->workers[i].thread_started;
		if (srv->workers[i].thread_started)
			pthread_join(srv->workers[i].thread, NULL);
	}
	/* Every worker has let go of a shared socket: stop queueing connections on it. */
	if (all_ran && srv->shared_fd >= 0) {
		close(srv->shared_fd);
		srv->shared_fd = -1;
	}
	srv->joined = true;
}

void hsm_http_server_free(hsm_http_server *srv)
{
	if (srv == NULL)
		return;
	size_t left = 0;
	if (srv->workers != NULL) {
		hsm_http_server_stop(srv, 0);
		for (unsigned i = 0; i < srv->n_workers; i++) {
			hsm_http_worker_drain(&srv->workers[i], false);
			left += atomic_load(&srv->workers[i].inflight);
		}
	}
	if (left > 0) {
		hsm_error("http server: %zu requests were never answered; not freeing the server", left);
		return;
	}
	for (unsigned i = 0; srv->workers != NULL && i < srv->n_workers; i++)
		worker_free(&srv->workers[i]);
	if (srv->shared_fd >= 0)
		close(srv->shared_fd);
	SSL_CTX_free(srv->tls);
	free(srv->by_fd);
	free(srv->workers);
	free(srv);
}

uint16_t hsm_http_server_port(const hsm_http_server *srv) { return srv->port; }
unsigned hsm_http_server_workers(const hsm_http_server *srv) { return srv->n_workers; }

size_t hsm_http_server_inflight(const hsm_http_server *srv)
{
	size_t n = 0;
	for (unsigned i = 0; i < srv->n_workers; i++)
		n += atomic_load_explicit(&srv->workers[i].inflight, memory_order_relaxed);
	return n;
}
