/*
 * http.c - the HTTP server's life cycle: workers, their event loops and
 * listening sockets, start, graceful stop and free.
 *
 * Each worker is a thread running its own epoll loop; nothing else touches
 * its connections.  By default all workers accept from one shared listening
 * socket.  Per-worker SO_REUSEPORT sockets (cfg.reuseport) measured no faster
 * on two cores, with keep-alive or with a connection per request, and they
 * have a hazard: a second process of the same user binding the same port
 * joins the group and silently receives a share of the connections, where a
 * plain socket makes it fail with EADDRINUSE.  Other threads reach a worker
 * only through its completion stack and eventfd (http_resp.c).
 *
 * A loop pass: epoll_wait (sleeping until the next timer at most), then the
 * ready descriptors in order (connections, the listening socket, the wakeup
 * eventfd), then the connections queued to run again, then the calls asked
 * for at the end of the pass (hsm_http_at_pass_end), then the timers.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/secret.h"
#include "server/http_internal.h"

#define SWEEP_MIN_MS 10U
#define SWEEP_MAX_MS 1000U
#define WORKER_EVENTS 64

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
	cfg->max_connections_per_source = HSM_HTTP_DEFAULT_MAX_CONNECTIONS_PER_SOURCE;
	cfg->max_buffered_bytes = HSM_HTTP_DEFAULT_MAX_BUFFERED;
	cfg->client_auth = HSM_HTTP_CLIENT_AUTH_NONE;
}

/* A quarter of the shortest timeout: a deadline is enforced within 1.25 times it. */
static uint32_t sweep_ms(const hsm_http_config *cfg)
{
	uint32_t t = cfg->read_timeout_ms;
	if (cfg->idle_timeout_ms < t)
		t = cfg->idle_timeout_ms;
	if (cfg->write_timeout_ms < t)
		t = cfg->write_timeout_ms;
	t /= 4U;
	return t < SWEEP_MIN_MS ? SWEEP_MIN_MS : t > SWEEP_MAX_MS ? SWEEP_MAX_MS : t;
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

/* ---- worker loop ------------------------------------------------------------ */

/* What epoll hands back for the worker's own descriptors (connections give themselves). */
static char tag_listen, tag_wake;

void hsm_http_listen_on(hsm_http_worker *w, bool on)
{
	if (w->listen_fd < 0 || w->listening == on)
		return;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_listen};
	if (epoll_ctl(w->ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->listen_fd, &ev) == 0)
		w->listening = on;
	else
		hsm_warn("http worker %u: epoll_ctl on the listening socket: %s", w->index,
		         strerror(errno));
}

static void begin_stop(hsm_http_worker *w)
{
	w->stopping = true;
	hsm_http_listen_on(w, false);
	if (w->own_listen_fd && w->listen_fd >= 0) {
		close(w->listen_fd);
		w->listen_fd = -1;
	}
	hsm_http_conn_close_idle(w, false);
	w->grace_end_ns = hsm_mono_ns() + (uint64_t)atomic_load(&w->srv->grace_ms) * 1000000ULL + 1;
}

static void on_wake(hsm_http_worker *w)
{
	uint64_t v;
	ssize_t n = read(w->wake_fd, &v, sizeof(v));
	(void)n; /* nothing to read only means another pass emptied it */
	hsm_http_worker_drain(w, true);
	hsm_http_conn_adopt_handed(w);
	if (atomic_load(&w->srv->stopping) && !w->stopping)
		begin_stop(w);
	else
		hsm_http_balance(w, false);
}

/* The timers: deadline sweep, end of the grace period, accept pauses. */
static void run_timers(hsm_http_worker *w, uint64_t now)
{
	if (now >= w->sweep_ns) {
		hsm_http_conn_sweep(w, now);
		w->sweep_ns = now + (uint64_t)sweep_ms(&w->srv->cfg) * 1000000ULL;
	}
	if (w->grace_end_ns != 0 && now >= w->grace_end_ns) {
		hsm_http_conn_close_idle(w, true);
		w->quit = true;
	}
	if (w->resume_ns != 0 && now >= w->resume_ns) {
		w->resume_ns = 0;
		if (hsm_http_may_accept(w))
			hsm_http_listen_on(w, true);
	}
	if (w->rearm_ns != 0 && now >= w->rearm_ns) {
		w->rearm_ns = 0;
		hsm_http_balance_rearm(w);
	}
}

/* Milliseconds epoll_wait may sleep: until the earliest timer. */
static int wait_ms(const hsm_http_worker *w, uint64_t now)
{
	if (w->later != NULL || w->hs_head != NULL)
		return 0; /* connections wait for their next turn, not for an event */
	uint64_t next = w->sweep_ns;
	const uint64_t t[] = {w->grace_end_ns, w->resume_ns, w->rearm_ns};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (t[i] != 0 && t[i] < next)
			next = t[i];
	if (next <= now)
		return 0;
	return (int)((next - now + 999999ULL) / 1000000ULL);
}

static void run_pass(hsm_http_worker *w, const struct epoll_event *evs, int n)
{
	hsm_http_conn_resume_later(w); /* run after this pass's events, not before them */
	hsm_http_conn_run_handshakes(w); /* those waiting since earlier passes go first */
	for (int i = 0; i < n; i++) {
		void *p = evs[i].data.ptr;
		if (p == &tag_wake)
			on_wake(w);
		else if (p == &tag_listen)
			hsm_http_accept(w);
		else
			hsm_http_conn_event(p, evs[i].events);
	}
	hsm_http_conn_pass_end(w);
	hsm_http_run_pass_end(w);
	hsm_http_conn_pass_end(w); /* connections the calls answered */
}

static void *worker_main(void *arg)
{
	hsm_http_worker *w = arg;
	struct epoll_event evs[WORKER_EVENTS];
	hsm_thread_name_n("hsmd-http", w->index);
	if (w->srv->cfg.batch_scheduling && !hsm_thread_batch())
		hsm_warn("http worker %u: cannot run under SCHED_BATCH: %s", w->index, strerror(errno));
	hsm_http_set_current_worker(w);
	w->sweep_ns = hsm_mono_ns() + (uint64_t)sweep_ms(&w->srv->cfg) * 1000000ULL;
	while (!w->quit) {
		int n = epoll_wait(w->ep, evs, WORKER_EVENTS, wait_ms(w, hsm_mono_ns()));
		if (n < 0 && errno != EINTR) {
			hsm_error("http worker %u: epoll_wait: %s", w->index, strerror(errno));
			break;
		}
		run_pass(w, evs, n > 0 ? n : 0);
		hsm_stack_wipe(); /* what the pass's requests left below this frame */
		run_timers(w, hsm_mono_ns());
		if (w->stopping && w->n_conns == 0)
			w->quit = true;
	}
	hsm_http_conn_close_idle(w, true);
	hsm_http_conn_pass_end(w);
	hsm_http_set_current_worker(NULL);
	return NULL;
}

/* ---- worker set-up and tear-down ---------------------------------------------- */

static hsm_result worker_init(hsm_http_server *srv, hsm_http_worker *w, int fd, bool own)
{
	w->srv = srv;
	w->listen_fd = fd;
	w->own_listen_fd = own;
	w->rand_pos = sizeof(w->rand_pool); /* refill on first use */
	w->ep = epoll_create1(EPOLL_CLOEXEC);
	HSM_ENSURE(w->ep >= 0, HSM_ERR_IO, "epoll_create1: %s", strerror(errno));
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	HSM_ENSURE(w->wake_fd >= 0, HSM_ERR_IO, "eventfd: %s", strerror(errno));
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_wake};
	HSM_ENSURE(epoll_ctl(w->ep, EPOLL_CTL_ADD, w->wake_fd, &ev) == 0, HSM_ERR_IO,
	           "epoll_ctl: %s", strerror(errno));
	hsm_http_listen_on(w, true);
	HSM_ENSURE(w->listening, HSM_ERR_IO, "cannot watch the listening socket");
	return HSM_SUCCESS;
}

static void worker_free(hsm_http_worker *w)
{
	w->stopping = true;
	hsm_http_conn_adopt_handed(w); /* turned away: closed, their slots given back */
	hsm_http_conn_close_idle(w, true); /* workers that never ran */
	hsm_http_conn_pass_end(w);
	hsm_http_req_pool_free(w);
	for (size_t i = 0; i < w->n_bufs; i++)
		free(w->bufs[i]); /* wiped when returned */
	w->n_bufs = 0;
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	if (w->ep >= 0)
		close(w->ep);
	if (w->own_listen_fd && w->listen_fd >= 0)
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

static hsm_result proxy_nets(hsm_http_server *srv, const char *text)
{
	if (hsm_ok(hsm_net_list_parse(text, srv->proxy_from, HSM_HTTP_PROXY_NETS_MAX,
	                              &srv->n_proxy_from)))
		return HSM_SUCCESS;
	char why[HSM_ERRMSG_MAX];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	return HSM_FAIL(HSM_ERR_VALIDATION, "proxy_protocol_from: %s", why);
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
	pthread_mutex_init(&srv->tls_mu, NULL);
	if (srv->cfg.max_buffered_bytes == 0)
		srv->cfg.max_buffered_bytes = HSM_HTTP_DEFAULT_MAX_BUFFERED;
	srv->handler = handler;
	srv->arg = arg;
	srv->shared_fd = -1;
	srv->n_workers = cfg->workers != 0 ? cfg->workers : cpu_count();
	atomic_store(&srv->n_accepting, srv->n_workers);
	if (cfg->proxy_protocol_from != NULL)
		HSM_TRY(proxy_nets(srv, cfg->proxy_protocol_from));
	if (cfg->tls_cert != NULL) {
		HSM_TRY(hsm_http_tls_load(cfg, &srv->tls));
		/* Started all the same: the operator can then renew it and reload. */
		if (hsm_failed(hsm_http_tls_check_dates(srv->tls, cfg->tls_cert)))
			hsm_warn("%s; replace it and reload the TLS files (SIGHUP, or tls_watch)",
			         hsm_last_message());
	}
	srv->tls_on = srv->tls != NULL;
	srv->cfg.listen = srv->cfg.tls_cert = srv->cfg.tls_key = srv->cfg.tls_client_ca = NULL;
	srv->cfg.proxy_protocol_from = NULL;
	HSM_TRY(hsm_http_fd_limit(srv));
	HSM_TRY(hsm_conn_limit_new(cfg->max_connections_per_source, srv->cfg.max_connections,
	                           &srv->per_source));
	srv->workers = calloc(srv->n_workers, sizeof(*srv->workers));
	HSM_CHECK(srv->workers != NULL, HSM_ERR_NOMEM, "out of memory");
	for (unsigned i = 0; i < srv->n_workers; i++)
		srv->workers[i].listen_fd = srv->workers[i].wake_fd = srv->workers[i].ep = -1;
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
		atomic_store_explicit(&w->thread_started, rc == 0, memory_order_release);
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
		if (atomic_load(&srv->workers[i].thread_started)) {
			ssize_t n = write(srv->workers[i].wake_fd, &one, sizeof(one));
			(void)n; /* a failed write means a wakeup is already pending */
		}
	}
	bool all_ran = srv->n_workers > 0;
	for (unsigned i = 0; i < srv->n_workers; i++) {
		bool ran = atomic_load(&srv->workers[i].thread_started);
		all_ran = all_ran && ran;
		if (ran)
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
	pthread_mutex_destroy(&srv->tls_mu);
	free(srv->workers);
	hsm_conn_limit_free(srv->per_source);
	free(srv);
}

hsm_result hsm_http_server_use_tls(hsm_http_server *srv, SSL_CTX *ctx)
{
	HSM_ASSERT(srv != NULL && ctx != NULL);
	if (!srv->tls_on) {
		SSL_CTX_free(ctx);
		return HSM_FAIL(HSM_ERR_VALIDATION, "the server speaks plain HTTP: no TLS to replace");
	}
	pthread_mutex_lock(&srv->tls_mu);
	SSL_CTX *old = srv->tls;
	srv->tls = ctx;
	pthread_mutex_unlock(&srv->tls_mu);
	SSL_CTX_free(old); /* freed once the last connection that began with it closes */
	return HSM_SUCCESS;
}

uint16_t hsm_http_server_port(const hsm_http_server *srv) { return srv->port; }
unsigned hsm_http_server_workers(const hsm_http_server *srv) { return srv->n_workers; }

void hsm_http_server_stats(const hsm_http_server *srv, hsm_http_stats *out)
{
	out->open = atomic_load_explicit(&srv->n_conns, memory_order_relaxed);
	out->refused_full = atomic_load_explicit(&srv->refused_full, memory_order_relaxed);
	out->refused_source = atomic_load_explicit(&srv->refused_source, memory_order_relaxed);
	out->evicted = atomic_load_explicit(&srv->evicted, memory_order_relaxed);
	out->buffered = atomic_load_explicit(&srv->buffered, memory_order_relaxed);
	out->tls_warm = 0;
	for (unsigned i = 0; i < srv->n_workers; i++)
		out->tls_warm += atomic_load_explicit(&srv->workers[i].n_tls_warm, memory_order_relaxed);
}

void hsm_http_server_set_per_source(hsm_http_server *srv, uint32_t per_source)
{
	hsm_conn_limit_set(srv->per_source, per_source);
}

size_t hsm_http_server_inflight(const hsm_http_server *srv)
{
	size_t n = 0;
	for (unsigned i = 0; i < srv->n_workers; i++)
		n += atomic_load_explicit(&srv->workers[i].inflight, memory_order_relaxed);
	return n;
}
