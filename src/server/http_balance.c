/*
 * http_balance.c - spreading keep-alive connections over the workers.
 *
 * All workers accept from one shared socket, and the first to wake takes
 * every connection waiting: a client that opens its pool of keep-alive
 * connections at once (as the AWS SDKs and the load generator do) often
 * lands entirely on one worker, which then serves it on one core while the
 * other cores idle for the life of those connections.  So a worker that holds
 * more than its share of the connections stops accepting (takes the
 * listening socket out of its epoll set, which ends its accept loop) and leaves the next ones to
 * the others; it accepts again once it is back within its share.  At least
 * one worker always accepts: a worker never pauses itself if it would be the
 * last one accepting, and it wakes the paused ones so they look again.
 * Each worker only ever enables or disables its own listener, on its own
 * thread.
 */
#include <unistd.h>

#include "server/http_internal.h"

/* Connections a worker may hold before it pauses: the fair share, rounded up. */
static uint32_t share(const hsm_http_server *srv)
{
	uint32_t total = atomic_load_explicit(&srv->n_conns, memory_order_relaxed);
	return (total + srv->n_workers - 1) / srv->n_workers;
}

/* Pauses w unless it is the last worker accepting. */
static bool try_pause(hsm_http_server *srv)
{
	uint32_t n = atomic_load(&srv->n_accepting);
	while (n > 1)
		if (atomic_compare_exchange_weak(&srv->n_accepting, &n, n - 1))
			return true;
	return false;
}

static void wake_paused(hsm_http_worker *self)
{
	hsm_http_server *srv = self->srv;
	for (unsigned i = 0; i < srv->n_workers; i++) {
		hsm_http_worker *o = &srv->workers[i];
		uint64_t one = 1;
		if (o != self && atomic_load_explicit(&o->thread_started, memory_order_acquire) &&
		    o->wake_fd >= 0) {
			ssize_t r = write(o->wake_fd, &one, sizeof(one));
			(void)r; /* a full counter means a wakeup is pending already */
		}
	}
}

/* Accepting is allowed by neither a descriptor shortage nor the balance. */
bool hsm_http_may_accept(const hsm_http_worker *w)
{
	return !w->stopping && w->listen_fd >= 0 && !w->balance_paused && w->resume_ns == 0;
}

void hsm_http_balance_rearm(hsm_http_worker *w)
{
	if (hsm_http_may_accept(w))
		hsm_http_listen_on(w, true);
}

/* Stops this pass's accept loop and leaves the queue to the others for a
 * millisecond (they were just woken); then this worker accepts again. */
static void yield_pass(hsm_http_worker *w)
{
	hsm_http_listen_on(w, false);
	w->rearm_ns = hsm_mono_ns() + 1000000ULL;
}

void hsm_http_balance(hsm_http_worker *w, bool accepted)
{
	hsm_http_server *srv = w->srv;
	if (srv->cfg.reuseport || srv->n_workers < 2 || w->listen_fd < 0 || w->stopping)
		return;
	uint32_t mine = (uint32_t)w->n_conns, fair = share(srv);
	if (!w->balance_paused && mine > fair) {
		if (try_pause(srv)) {
			w->balance_paused = true;
			hsm_http_listen_on(w, false);
			return;
		}
		/* The last one accepting: let the paused ones look again, and give
		 * them this pass of the queue. */
		wake_paused(w);
		if (accepted)
			yield_pass(w);
	} else if (w->balance_paused && mine <= fair) {
		w->balance_paused = false;
		atomic_fetch_add(&srv->n_accepting, 1);
		if (hsm_http_may_accept(w) && w->rearm_ns == 0)
			hsm_http_listen_on(w, true);
	}
}
