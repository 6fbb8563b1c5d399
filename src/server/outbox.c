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
 * The rows hsmctl's offline changes on this node's store left
 * (hsm_outbox_rows_list_offline: hsmctl stopped between a change and its
 * record; on a SQLite store every such row, under whatever path or host
 * name the directory had then): a record in place of each request that
 * none of the trails holds (hsmctl's, <data_dir>/audit, and this node's),
 * then the rows go once those records are durable.  Kept for the next start
 * (or hsmctl's next offline command there) when anything fails: the search
 * finds what was written meanwhile, so nothing is recorded twice.
 */
static void settle_offline(hsm_server *s)
{
	char local[PATH_MAX];
	if (strlen(s->data_dir) + sizeof("/audit") > sizeof(local))
		return; /* no hsmctl trail can be there either */
	snprintf(local, sizeof(local), "%.*s/audit", PATH_MAX - 8, s->data_dir);
	const char *dirs[] = {local, strcmp(local, s->audit_dir) != 0 ? s->audit_dir : NULL};
	hsm_outbox_rows rows = {0};
	size_t recorded = 0;
	hsm_result r = hsm_outbox_rows_list_offline(s->store, s->data_dir, NULL, NULL, &rows);
	if (hsm_ok(r))
		r = hsm_outbox_rows_record_missing(&rows, dirs, 2, s->audit, "hsmd", why_hsmctl, NULL,
		                                   &recorded);
	atomic_fetch_add(&s->outbox->recovered, recorded);
	if (recorded > 0)
		hsm_warn("audit: %zu offline change(s) by hsmctl reached the store without a record in "
		         "the trail (hsmctl stopped first); each is recorded now as " RECOVERED_EVENT,
		         recorded);
	if (hsm_ok(r) && rows.n > 0 && wait_durable(s, hsm_audit_next_seq(s->audit)))
		r = hsm_outbox_rows_delete(s->store, &rows);
	if (hsm_failed(r))
		hsm_log_failure("audit outbox: settling the offline changes hsmctl left; retried at the "
		                "next start");
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
/* Rows settled per hold of the node's id: records, fdatasync, delete. */
#define ADOPT_BATCH 500
/*
 * No batch begins after a pass has spent this long on one node; what is
 * left waits for the next scheduler round.
 */
#define ADOPT_PASS_NS (5ULL * 1000 * 1000 * 1000)
/*
 * A hold older than this deletes nothing: the rows stay for the next pass
 * (whose search of this trail finds the records written), and the id goes
 * back.  The trail is searched before the hold is taken, so what runs under
 * it is bounded: a listing, a batch's records and their fdatasync (at most
 * 10 s, wait_durable), the delete.  A node wanting its id meanwhile waits
 * longer than that (server.c, NODE_ADOPT_WAIT_MS).
 */
#define ADOPT_HOLD_MAX_NS (20ULL * 1000 * 1000 * 1000)
_Static_assert(ADOPT_HOLD_MAX_NS / 1000000U + 10000U <= HSM_OUTBOX_ADOPT_HOLD_WORST_MS,
               "the hold's bound must be what nodes are told to outwait");
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
 * wrote (settle_offline).
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
	int64_t before_ms; /* only rows committed before this are adopted */
	char why[256];
	size_t listed;
	/* Under the hold: only the rows listed (and searched for) before it, sorted. */
	const char **known;
	size_t n_known;
} adopting;

static int cmp_id(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static bool first_batch(const char *request_id, void *arg)
{
	adopting *a = arg;
	if (a->known != NULL &&
	    bsearch(&request_id, a->known, a->n_known, sizeof(*a->known), cmp_id) == NULL)
		return false;
	return a->listed++ < ADOPT_BATCH;
}

/*
 * The first batch of node's rows, oldest first, each older than
 * a->before_ms: a node that runs may have young rows (and old ones) at any
 * moment, and only what is old is given up for it.
 */
static hsm_result list_batch(hsm_server *s, adopting *a, hsm_outbox_rows *rows)
{
	a->listed = 0;
	HSM_GUARD(hsm_outbox_rows_list(s->store, a->node, first_batch, a, rows));
	size_t n = 0;
	while (n < rows->n && rows->v[n].created_ms < a->before_ms)
		n++;
	rows->n = n;
	return HSM_SUCCESS;
}

static const char *why_adopted(const hsm_outbox_row *row, void *arg)
{
	(void)row;
	return ((const adopting *)arg)->why;
}

/* found[] of the earlier listing, for each of rows' rows (a subset of it). */
static void found_again(const hsm_outbox_rows *earlier, const bool *found_earlier,
                        const hsm_outbox_rows *rows, bool *found)
{
	for (size_t i = 0; i < rows->n; i++) {
		found[i] = false;
		for (size_t j = 0; j < earlier->n; j++)
			if (strcmp(earlier->v[j].id, rows->v[i].id) == 0) {
				found[i] = found_earlier[j];
				break;
			}
	}
}

/*
 * One batch of node's rows: listed, and this node's trail searched for the
 * records an earlier pass wrote for them (which can take long: it runs
 * before the hold).  Then, under a hold of the node's id (NULL: the node
 * runs, nothing done), the rows listed again (any the node settled
 * meanwhile are gone), a record in this node's trail in place of each not
 * found, and once those are durable, the hold proven again, the rows go.
 * *settled: rows deleted; *recorded: records written; *left: the batch was
 * full, so more may be waiting.
 */
static hsm_result adopt_batch(hsm_server *s, adopting *a, size_t *settled_n, size_t *recorded,
                              bool *left)
{
	hsm_outbox_rows first = {0}, rows = {0};
	const char **ids = NULL;
	bool *found_first = NULL, *found = NULL;
	hsm_node_hold *h = NULL;
	*settled_n = *recorded = 0;
	*left = false;
	a->known = NULL;
	hsm_result r = list_batch(s, a, &first);
	if (hsm_ok(r) && first.n == 0)
		goto out;
	*left = first.n == ADOPT_BATCH;
	const char *dirs[] = {s->audit_dir};
	found_first = calloc(first.n, sizeof(*found_first));
	a->known = hsm_outbox_rows_ids(&first);
	if (hsm_ok(r) && (found_first == NULL || a->known == NULL))
		r = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	if (hsm_ok(r))
		r = hsm_outbox_rows_find(&first, dirs, 1, found_first);
	if (hsm_ok(r)) {
		a->n_known = first.n;
		qsort(a->known, a->n_known, sizeof(*a->known), cmp_id);
		r = hsm_store_node_hold(s->store, a->node, &h);
	}
	if (hsm_ok(r) && h == NULL) {
		hsm_debug("audit outbox: node %s has old rows but runs (its id is held): left to it",
		          a->node);
		*left = false;
		goto out;
	}
	uint64_t held_at = hsm_mono_ns();
	if (hsm_ok(r))
		r = list_batch(s, a, &rows);
	if (hsm_ok(r) && rows.n > 0) {
		ids = hsm_outbox_rows_ids(&rows);
		found = calloc(rows.n, sizeof(*found));
		if (ids == NULL || found == NULL)
			r = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	if (hsm_ok(r) && rows.n > 0) {
		found_again(&first, found_first, &rows, found);
		rows.request_node = a->node;
		r = hsm_outbox_rows_record_unfound(&rows, found, s->audit, "hsmd", why_adopted, a,
		                                   recorded);
	}
	atomic_fetch_add(&s->outbox->recovered, *recorded);
	atomic_fetch_add(&s->outbox->adopted, *recorded);
	if (hsm_ok(r) && rows.n > 0 && !wait_durable(s, hsm_audit_next_seq(s->audit)))
		r = HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE,
		             "the audit trail did not make the records durable in time");
	/* The id must still be held when the rows go: a hold whose session was lost is not. */
	if (hsm_ok(r) && rows.n > 0 && hsm_mono_ns() - held_at > ADOPT_HOLD_MAX_NS)
		r = HSM_FAIL(HSM_ERR_DEPENDENCY_TIMEOUT,
		             "the node id was held too long to delete its rows now");
	if (hsm_ok(r) && rows.n > 0)
		r = hsm_node_hold_check(h);
	if (hsm_ok(r) && rows.n > 0)
		r = hsm_store_outbox_delete(s->store, a->node, ids, rows.n);
	if (hsm_ok(r))
		*settled_n = rows.n;
out:
	hsm_node_hold_release(h);
	free(found);
	free(found_first);
	free(ids);
	free(a->known);
	a->known = NULL;
	hsm_outbox_rows_free(&first);
	hsm_outbox_rows_free(&rows);
	if (hsm_failed(r))
		*left = false;
	return r;
}

/*
 * node's rows older than outbox_adopt_after, a batch at a time, each under
 * a hold of its id (so the node cannot start meanwhile, nor another leader
 * adopt them too), released after each.  A failure leaves the rows not yet
 * deleted for the next pass, whose search of this trail finds the records
 * already written.  *more: rows are left because the pass reached
 * ADOPT_PASS_NS.
 */
static hsm_result adopt_node(hsm_server *s, const char *node, int64_t before_ms, bool *more)
{
	*more = false;
	adopting a = {.node = node, .after_s = s->opt.outbox_adopt_after, .before_ms = before_ms};
	snprintf(a.why, sizeof(a.why),
	         "node %.64s did not come back within outbox_adopt_after_seconds (%" PRIu32
	         " s) to record it; its own trail, not searched here, may hold the record",
	         node, a.after_s);
	size_t settled_total = 0, recorded_total = 0, settled_n = 0, recorded = 0;
	uint64_t until = hsm_mono_ns() + ADOPT_PASS_NS;
	hsm_result r = HSM_SUCCESS;
	do {
		r = adopt_batch(s, &a, &settled_n, &recorded, more);
		settled_total += settled_n;
		recorded_total += recorded;
	} while (*more && hsm_mono_ns() < until);
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
	int64_t before_ms = hsm_now_ms() - (int64_t)after * 1000;
	hsm_result r = hsm_store_outbox_nodes(s->store, before_ms, note_stale_node, &scan);
	bool more = false;
	/* One node's failure (its rows stay for the next pass) does not hold the others up. */
	for (size_t i = 0; i < scan.ids.n; i++) {
		bool left = false;
		hsm_result one = adopt_node(s, scan.ids.v[i], before_ms, &left);
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
