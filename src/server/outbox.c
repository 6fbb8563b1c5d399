/*
 * outbox.c - settling the store's audit outbox (outbox.h).
 */
#include "server/outbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "audit/outbox_rows.h"
#include "common/log.h"
#include "common/util.h"
#include "server/server.h"
#include "store/store.h"

#define ID_CAP (HSM_OUTBOX_REQUEST_ID_MAX + 1)
#define RECOVERED_EVENT HSM_OUTBOX_RECOVERED_EVENT
#define LOST_AT_STOP "the node stopped before writing it (or its trail failed it before the stop)"
#define LOST_IN_OUTAGE "the audit trail could not write it"
#define LOST_BY_HSMCTL "hsmctl stopped before writing it (or its trail failed it)"

typedef struct settled {
	char id[ID_CAP];
	uint64_t below;  /* done: durable once the trail's durable seq reaches this */
	bool at_start;   /* lost: a row the node left behind when it stopped */
} settled;

typedef struct settled_vec {
	settled *v;
	size_t n, cap;
} settled_vec;

struct hsm_outbox {
	pthread_mutex_t mu;
	settled_vec done; /* recorded: rows to delete once the records are durable */
	settled_vec lost; /* not recorded: rows to settle with a record in their stead */
	bool delete_failing, settle_failing; /* said once a streak */
	atomic_uint_fast64_t recovered;
	/* Adoption of other nodes' rows (the scheduler thread's alone, while it leads). */
	uint64_t adopt_due_ns; /* the next pass, on the monotonic clock; 0: at once */
	bool adopt_failing;
	atomic_uint_fast64_t adopted;
};

hsm_result hsm_outbox_new(hsm_outbox **out)
{
	hsm_outbox *o = calloc(1, sizeof(*o));
	HSM_ENSURE(o != NULL, HSM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&o->mu, NULL);
	*out = o;
	return HSM_SUCCESS;
}

void hsm_outbox_free(hsm_outbox *o)
{
	if (o == NULL)
		return;
	free(o->done.v);
	free(o->lost.v);
	pthread_mutex_destroy(&o->mu);
	free(o);
}

uint64_t hsm_outbox_recovered(const hsm_outbox *o)
{
	return o != NULL ? atomic_load(&((hsm_outbox *)(uintptr_t)o)->recovered) : 0;
}

uint64_t hsm_outbox_adopted(const hsm_outbox *o)
{
	return o != NULL ? atomic_load(&((hsm_outbox *)(uintptr_t)o)->adopted) : 0;
}

static bool push(settled_vec *v, const settled *e)
{
	if (v->n == v->cap) {
		size_t cap = v->cap != 0 ? v->cap * 2 : 64;
		settled *nv = realloc(v->v, cap * sizeof(*nv));
		if (nv == NULL)
			return false;
		v->v = nv;
		v->cap = cap;
	}
	v->v[v->n++] = *e;
	return true;
}

void hsm_outbox_settled(hsm_outbox *o, const char *request_id, bool recorded,
                        uint64_t below_seq)
{
	settled e = {.below = below_seq};
	snprintf(e.id, sizeof(e.id), "%s", request_id);
	pthread_mutex_lock(&o->mu);
	bool ok = push(recorded ? &o->done : &o->lost, &e);
	pthread_mutex_unlock(&o->mu);
	if (!ok) /* the row stays; the next start settles it */
		hsm_warn("audit outbox: out of memory noting request %s", e.id);
}

static int cmp_settled(const void *x, const void *y)
{
	return strcmp(((const settled *)x)->id, ((const settled *)y)->id);
}

/* Rows whose records are below durable (all durable): deleted; put back when the store fails. */
static void delete_done(hsm_server *s, uint64_t durable)
{
	hsm_outbox *o = s->outbox;
	pthread_mutex_lock(&o->mu);
	settled_vec take = {0}, keep = {0};
	bool ok = true;
	for (size_t i = 0; i < o->done.n && ok; i++)
		ok = push(o->done.v[i].below <= durable ? &take : &keep, &o->done.v[i]);
	if (ok) {
		free(o->done.v);
		o->done = keep;
	} else {
		free(keep.v);
		free(take.v);
		take = (settled_vec){0};
	}
	pthread_mutex_unlock(&o->mu);
	if (take.n == 0) {
		free(take.v);
		return;
	}
	const char **ids = malloc(take.n * sizeof(*ids));
	hsm_result r = ids != NULL ? HSM_SUCCESS : HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; ids != NULL && i < take.n; i++)
		ids[i] = take.v[i].id;
	if (hsm_ok(r))
		r = hsm_store_outbox_delete(s->store, s->node_id, ids, take.n);
	free(ids);
	if (hsm_failed(r)) {
		if (!o->delete_failing)
			hsm_log_failure("audit outbox: deleting the rows of recorded requests; retried "
			                "every second");
		o->delete_failing = true;
		pthread_mutex_lock(&o->mu);
		for (size_t i = 0; i < take.n; i++)
			(void)push(&o->done, &take.v[i]); /* one not kept back is settled at the next start */
		pthread_mutex_unlock(&o->mu);
	} else if (o->delete_failing) {
		hsm_info("audit outbox: the rows of recorded requests are deleted again");
		o->delete_failing = false;
	}
	free(take.v);
}

/* want: the settled entries asked for, sorted by id. */
typedef struct wanted {
	const settled *v;
	size_t n;
} wanted;

static bool is_wanted(const char *request_id, void *arg)
{
	const wanted *w = arg;
	settled key;
	snprintf(key.id, sizeof(key.id), "%s", request_id);
	return bsearch(&key, w->v, w->n, sizeof(*w->v), cmp_settled) != NULL;
}

/* A row left at a stop (noted at start) or by a record an outage failed. */
static const char *why_lost(const hsm_outbox_row *row, void *arg)
{
	const wanted *w = arg;
	settled key;
	memcpy(key.id, row->id, sizeof(key.id));
	const settled *e = bsearch(&key, w->v, w->n, sizeof(*w->v), cmp_settled);
	return e != NULL && e->at_start ? LOST_AT_STOP : LOST_IN_OUTAGE;
}

static const char *why_hsmctl(const hsm_outbox_row *row, void *arg)
{
	(void)row;
	(void)arg;
	return LOST_BY_HSMCTL;
}

/*
 * Settles the rows named in want[0..n) (sorted by id): a record in place of
 * each request the trail has none for; then the rows join those deleted
 * once their records are durable (those written here, and those found,
 * which may be a killed run's last writes, not yet synced).  *recorded: how
 * many records were written.  On failure nothing is settled (the caller
 * keeps want): the records written meanwhile are found in the trail next
 * time, so none is written twice.
 */
static hsm_result settle(hsm_server *s, const settled *want, size_t n_want, size_t *recorded)
{
	wanted wt = {want, n_want};
	hsm_outbox_rows rows = {0};
	*recorded = 0;
	hsm_result r = hsm_outbox_rows_list(s->store, s->node_id, is_wanted, &wt, &rows);
	const char *dirs[] = {s->audit_dir};
	if (hsm_ok(r))
		r = hsm_outbox_rows_record_missing(&rows, dirs, 1, s->audit, "hsmd", why_lost, &wt,
		                                   recorded);
	atomic_fetch_add(&s->outbox->recovered, *recorded);
	if (hsm_ok(r)) {
		settled e = {.below = hsm_audit_next_seq(s->audit)};
		pthread_mutex_lock(&s->outbox->mu);
		for (size_t i = 0; i < rows.n && hsm_ok(r); i++) {
			memcpy(e.id, rows.v[i].id, sizeof(e.id));
			if (!push(&s->outbox->done, &e))
				r = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
		}
		pthread_mutex_unlock(&s->outbox->mu);
	}
	hsm_outbox_rows_free(&rows);
	return r;
}

/* Settles every lost request noted so far; those settled leave the list. */
static void settle_lost(hsm_server *s)
{
	hsm_outbox *o = s->outbox;
	pthread_mutex_lock(&o->mu);
	settled_vec want = o->lost;
	o->lost = (settled_vec){0};
	pthread_mutex_unlock(&o->mu);
	if (want.n == 0) {
		free(want.v);
		return;
	}
	qsort(want.v, want.n, sizeof(*want.v), cmp_settled);
	size_t recorded = 0;
	hsm_result r = settle(s, want.v, want.n, &recorded);
	if (recorded > 0)
		hsm_warn("audit: %zu request(s) changed the store without a record in the trail (the "
		         "node stopped first, or its trail failed them); each is recorded now as " RECOVERED_EVENT,
		         recorded);
	if (hsm_failed(r)) {
		if (!o->settle_failing)
			hsm_log_failure("audit outbox: recording requests whose records were lost; "
			                "retried every second while the trail takes records");
		o->settle_failing = true;
		pthread_mutex_lock(&o->mu);
		for (size_t i = 0; i < want.n; i++)
			if (!push(&o->lost, &want.v[i]))
				break; /* the rest stay in the store for the next start */
		pthread_mutex_unlock(&o->mu);
	} else if (o->settle_failing) {
		hsm_info("audit outbox: requests whose records were lost are recorded again");
		o->settle_failing = false;
	}
	free(want.v);
}

void hsm_outbox_pass(hsm_server *s)
{
	delete_done(s, hsm_audit_durable_seq(s->audit));
	if (hsm_audit_accepting(s->audit))
		settle_lost(s);
}

void hsm_outbox_final(hsm_server *s, uint64_t durable_seq)
{
	delete_done(s, durable_seq);
}

static hsm_result note_left(const hsm_outbox_record *r, void *arg)
{
	hsm_outbox *o = arg;
	settled e = {.at_start = true};
	snprintf(e.id, sizeof(e.id), "%s", r->request_id);
	pthread_mutex_lock(&o->mu);
	bool ok = push(&o->lost, &e);
	pthread_mutex_unlock(&o->mu);
	HSM_ENSURE(ok, HSM_ERR_NOMEM, "out of memory");
	return HSM_SUCCESS;
}

/* Waits (up to about 10 s) until every record below seq is durable. */
static bool wait_durable(hsm_server *s, uint64_t seq)
{
	for (int i = 0; i < 1000 && hsm_audit_durable_seq(s->audit) < seq; i++) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return hsm_audit_durable_seq(s->audit) >= seq;
}

/*
 * The rows hsmctl's offline changes on this node's data directory left
 * (hsm_outbox_offline_node: hsmctl stopped between a change and its
 * record): a record in place of each request that none of the trails
 * holds (hsmctl's, <data_dir>/audit, and this node's), then the rows go
 * once those records are durable.  Kept for the next start (or hsmctl's next
 * offline command there) when anything fails: the search finds what was
 * written meanwhile, so nothing is recorded twice.
 */
static void settle_offline(hsm_server *s)
{
	char node[HSM_OUTBOX_NODE_ID_MAX + 1], local[PATH_MAX];
	if (strlen(s->data_dir) + sizeof("/audit") > sizeof(local))
		return; /* no hsmctl trail can be there either */
	snprintf(local, sizeof(local), "%.*s/audit", PATH_MAX - 8, s->data_dir);
	hsm_outbox_offline_node(s->data_dir, node);
	const char *dirs[] = {local, strcmp(local, s->audit_dir) != 0 ? s->audit_dir : NULL};
	hsm_outbox_rows rows = {0};
	const char **ids = NULL;
	size_t recorded = 0;
	hsm_result r = hsm_outbox_rows_list(s->store, node, NULL, NULL, &rows);
	if (hsm_ok(r) && rows.n > 0) {
		ids = hsm_outbox_rows_ids(&rows);
		r = ids != NULL ? HSM_SUCCESS : HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	if (hsm_ok(r))
		r = hsm_outbox_rows_record_missing(&rows, dirs, 2, s->audit, "hsmd", why_hsmctl, NULL,
		                                   &recorded);
	atomic_fetch_add(&s->outbox->recovered, recorded);
	if (recorded > 0)
		hsm_warn("audit: %zu offline change(s) by hsmctl reached the store without a record in "
		         "the trail (hsmctl stopped first); each is recorded now as " RECOVERED_EVENT,
		         recorded);
	if (hsm_ok(r) && rows.n > 0 && wait_durable(s, hsm_audit_next_seq(s->audit)))
		r = hsm_store_outbox_delete(s->store, node, ids, rows.n);
	if (hsm_failed(r))
		hsm_log_failure("audit outbox: settling the offline changes hsmctl left; retried at the "
		                "next start");
	free(ids);
	hsm_outbox_rows_free(&rows);
}

void hsm_outbox_recover(hsm_server *s)
{
	if (hsm_audit_accepting(s->audit))
		settle_offline(s);
	hsm_result r = hsm_store_outbox_list(s->store, s->node_id, note_left, s->outbox);
	if (hsm_failed(r))
		hsm_log_failure("audit outbox: reading the requests left by the last run; settled at "
		                "the next start");
	else if (hsm_audit_accepting(s->audit))
		settle_lost(s);
}

/* ---- Rows of nodes that do not come back ---------------------------------------------- */

#define ADOPT_EVERY_NS (60ULL * 1000 * 1000 * 1000)
/* Rows settled per round trip proving the hold: records, fdatasync, delete. */
#define ADOPT_BATCH 500
/*
 * No batch begins after the hold is this old: the node, started meanwhile,
 * waits 20 s for its id (server.c) and must get it.  What is left waits for
 * the next scheduler round, which leaves the id free in between.
 */
#define ADOPT_HOLD_NS (5ULL * 1000 * 1000 * 1000)
#define OFFLINE_PREFIX "hsmctl-"

typedef struct node_ids {
	char (*v)[HSM_OUTBOX_NODE_ID_MAX + 1];
	size_t n, cap;
} node_ids;

typedef struct adopt_scan {
	const hsm_server *s;
	node_ids ids;
} adopt_scan;

/*
 * Another node's rows, old enough: this node's own are settled at its start
 * and by its flusher, hsmctl's by the node serving their data directory (or
 * the next offline command there), which alone can search the trail hsmctl
 * wrote.
 */
static hsm_result note_stale_node(const hsm_outbox_node *n, void *arg)
{
	adopt_scan *a = arg;
	if (strcmp(n->node_id, a->s->node_id) == 0 ||
	    strncmp(n->node_id, OFFLINE_PREFIX, sizeof(OFFLINE_PREFIX) - 1) == 0)
		return HSM_SUCCESS;
	node_ids *v = &a->ids;
	if (v->n == v->cap) {
		size_t cap = v->cap != 0 ? v->cap * 2 : 8;
		void *nv = realloc(v->v, cap * sizeof(*v->v));
		HSM_ENSURE(nv != NULL, HSM_ERR_NOMEM, "out of memory");
		v->v = nv;
		v->cap = cap;
	}
	snprintf(v->v[v->n++], sizeof(*v->v), "%s", n->node_id);
	return HSM_SUCCESS;
}

typedef struct adopting {
	const char *node;
	uint32_t after_s;
	char why[256];
	size_t listed;
} adopting;

static bool first_batch(const char *request_id, void *arg)
{
	(void)request_id;
	adopting *a = arg;
	return a->listed++ < ADOPT_BATCH;
}

static const char *why_adopted(const hsm_outbox_row *row, void *arg)
{
	(void)row;
	return ((const adopting *)arg)->why;
}

/*
 * One batch of node's rows (the hold proven first): a record in this
 * node's trail in place of each that this trail does not hold yet (an
 * earlier pass may have written it before failing), then, once those
 * records are durable, the rows go.  *settled: rows deleted; *recorded:
 * records written.
 */
static hsm_result adopt_batch(hsm_server *s, hsm_node_hold *h, adopting *a, size_t *settled_n,
                              size_t *recorded)
{
	hsm_outbox_rows rows = {0};
	const char **ids = NULL;
	*settled_n = *recorded = 0;
	a->listed = 0;
	hsm_result r = hsm_node_hold_check(h);
	if (hsm_ok(r))
		r = hsm_outbox_rows_list(s->store, a->node, first_batch, a, &rows);
	if (hsm_ok(r) && rows.n > 0) {
		ids = hsm_outbox_rows_ids(&rows);
		r = ids != NULL ? HSM_SUCCESS : HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	rows.request_node = a->node;
	const char *dirs[] = {s->audit_dir};
	if (hsm_ok(r))
		r = hsm_outbox_rows_record_missing(&rows, dirs, 1, s->audit, "hsmd", why_adopted, a,
		                                   recorded);
	atomic_fetch_add(&s->outbox->recovered, *recorded);
	atomic_fetch_add(&s->outbox->adopted, *recorded);
	if (hsm_ok(r) && rows.n > 0 && !wait_durable(s, hsm_audit_next_seq(s->audit)))
		r = HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE,
		             "the audit trail did not make the records durable in time");
	if (hsm_ok(r) && rows.n > 0)
		r = hsm_store_outbox_delete(s->store, a->node, ids, rows.n);
	if (hsm_ok(r))
		*settled_n = rows.n;
	free(ids);
	hsm_outbox_rows_free(&rows);
	return r;
}

/*
 * node's rows, if node is not running: its id held throughout (it cannot
 * start meanwhile, nor another leader adopt them too), released at the end.
 * A failure leaves the rows not yet deleted for the next pass, whose search
 * of this trail finds the records already written.  *more: rows are left
 * because the hold reached ADOPT_HOLD_NS.
 */
static hsm_result adopt_node(hsm_server *s, const char *node, bool *more)
{
	*more = false;
	hsm_node_hold *h = NULL;
	HSM_GUARD(hsm_store_node_hold(s->store, node, &h));
	if (h == NULL) {
		hsm_debug("audit outbox: node %s has old rows but runs (its id is held): left to it",
		          node);
		return HSM_SUCCESS;
	}
	adopting a = {.node = node, .after_s = s->opt.outbox_adopt_after};
	snprintf(a.why, sizeof(a.why),
	         "node %.64s did not come back within outbox_adopt_after_seconds (%" PRIu32
	         " s) to record it; its own trail, not searched here, may hold the record",
	         node, a.after_s);
	size_t settled_total = 0, recorded_total = 0, settled_n = 0, recorded = 0;
	uint64_t until = hsm_mono_ns() + ADOPT_HOLD_NS;
	hsm_result r = HSM_SUCCESS;
	do {
		r = adopt_batch(s, h, &a, &settled_n, &recorded);
		settled_total += settled_n;
		recorded_total += recorded;
		*more = hsm_ok(r) && settled_n == ADOPT_BATCH;
	} while (*more && hsm_mono_ns() < until);
	hsm_node_hold_release(h);
	if (settled_total > 0 || recorded_total > 0)
		hsm_warn("audit outbox: adopted %zu row(s) of node %s, which did not come back within "
		         "%" PRIu32 " s; %zu recorded now as " RECOVERED_EVENT " (request_node %s)",
		         settled_total, node, a.after_s, recorded_total, node);
	return r;
}

void hsm_outbox_adopt(hsm_server *s)
{
	hsm_outbox *o = s->outbox;
	uint32_t after = s->opt.outbox_adopt_after;
	uint64_t now = hsm_mono_ns();
	if (after == 0 || !hsm_audit_accepting(s->audit) ||
	    (o->adopt_due_ns != 0 && now < o->adopt_due_ns))
		return;
	o->adopt_due_ns = now + ADOPT_EVERY_NS;
	adopt_scan scan = {.s = s};
	hsm_result r = hsm_store_outbox_nodes(s->store, hsm_now_ms() - (int64_t)after * 1000,
	                                      note_stale_node, &scan);
	bool more = false;
	/* One node's failure (its rows stay for the next pass) does not hold the others up. */
	for (size_t i = 0; i < scan.ids.n; i++) {
		bool left = false;
		hsm_result one = adopt_node(s, scan.ids.v[i], &left);
		if (hsm_failed(one))
			r = one;
		more |= left;
	}
	free(scan.ids.v);
	if (more)
		o->adopt_due_ns = 0; /* the rest at the next round */
	if (hsm_failed(r)) {
		if (!o->adopt_failing)
			hsm_log_failure("audit outbox: adopting the rows of nodes that did not come back; "
			                "retried every minute");
		o->adopt_failing = true;
	} else if (o->adopt_failing) {
		hsm_info("audit outbox: the rows of nodes that did not come back are adopted again");
		o->adopt_failing = false;
	}
}
