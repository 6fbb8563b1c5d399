/*
 * http_balance.c - spreading keep-alive connections over the workers.
 *
 * All workers accept from one shared socket, and the first to wake takes
 * every connection waiting: a client that opens its pool of keep-alive
 * connections at once (as the AWS SDKs and the load generator do) often
 * lands entirely on one worker, which then serves it on one core while the
 * other cores idle for the life of those connections.  So a worker that holds
 * more than its share of the connections stops accepting (libevent's accept
 * loop ends as soon as the listener is disabled) and leaves the next ones to
 * the others; it accepts again once it is back within its share.  At least
 * one worker always accepts: a worker never pauses itself if it would be the
 * last one accepting, and it wakes the paused ones so they look again.
 * Each worker only ever enables or disables its own listener, on its own
 * thread.
 */
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <unistd.h>

#include "server/http_internal.h"

/* Connections a worker may hold before it pauses: the fair share, rounded up. */
static uint32_t share(const hsm_http_server *srv)
{
	uint32_t total = atomic_load_explicit(&srv->n_conns, memory_order_relaxed);
	return (total + srv->n_workers - 1) / srv->n_workers;
}

static struct evconnlistener *listener_of(hsm_http_worker *w)
{
	return w->bound != NULL ? evhttp_bound_socket_get_listener(w->bound) : NULL;
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
		if (o != self && o->thread_started && o->wake_fd >= 0) {
			ssize_t r = write(o->wake_fd, &one, sizeof(one));
			(void)r; /* a full counter means a wakeup is pending already */
		}
	}
}

/* Accepting is allowed by neither a descriptor shortage nor the balance. */
static bool may_accept(hsm_http_worker *w)
{
	return !w->stopping && w->bound != NULL && !w->balance_paused &&
	       event_pending(w->resume_ev, EV_TIMEOUT, NULL) == 0;
}

void hsm_http_balance_rearm_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	hsm_http_worker *w = arg;
	if (may_accept(w))
		evconnlistener_enable(listener_of(w));
}

/* Stops libevent's accept loop and leaves the queue to the others for a
 * millisecond (they were just woken); then this worker accepts again. */
static void yield_pass(hsm_http_worker *w, struct evconnlistener *lev)
{
	static const struct timeval pause = {0, 1000};
	evconnlistener_disable(lev);
	event_add(w->rearm_ev, &pause);
}

void hsm_http_balance(hsm_http_worker *w, bool accepted)
{
	hsm_http_server *srv = w->srv;
	struct evconnlistener *lev = listener_of(w);
	if (srv->cfg.reuseport || srv->n_workers < 2 || lev == NULL || w->stopping)
		return;
	uint32_t mine = (uint32_t)w->n_conns, fair = share(srv);
	if (!w->balance_paused && mine > fair) {
		if (try_pause(srv)) {
			w->balance_paused = true;
			evconnlistener_disable(lev);
			return;
		}
		/* The last one accepting: let the paused ones look again, and give
		 * them this pass of the queue. */
		wake_paused(w);
		if (accepted)
			yield_pass(w, lev);
	} else if (w->balance_paused && mine <= fair) {
		w->balance_paused = false;
		atomic_fetch_add(&srv->n_accepting, 1);
		if (may_accept(w))
			evconnlistener_enable(lev);
	}
}
