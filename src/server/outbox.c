/*
 * outbox.c - settling the store's audit outbox (outbox.h).
 */
#include "server/outbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "common/log.h"
#include "common/util.h"
#include "server/server.h"
#include "store/store.h"

#define ID_CAP 65
/* A request's record is looked for from this long before its commit (the clock may have moved). */
#define SEARCH_MARGIN_MS (10LL * 60 * 1000)
#define RECOVERED_EVENT "RequestRecordRecovered"

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
};

/* One row, copied out of the store's listing. */
typedef struct row {
	char id[ID_CAP], op[65], principal[161], akid[129], source[81], key_id[65];
	int64_t created_ms;
	bool in_trail;
} row;

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

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
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

/* The listing of this node's rows, kept when named in want (sorted). */
typedef struct collect {
	const settled *want;
	size_t n_want;
	row *rows;
	size_t n, cap;
} collect;

static hsm_result collect_row(const hsm_outbox_record *r, void *arg)
{
	collect *c = arg;
	settled key;
	snprintf(key.id, sizeof(key.id), "%s", r->request_id);
	if (c->want != NULL && bsearch(&key, c->want, c->n_want, sizeof(*c->want), cmp_settled) == NULL)
		return HSM_SUCCESS;
	if (c->n == c->cap) {
		size_t cap = c->cap != 0 ? c->cap * 2 : 16;
		row *nv = realloc(c->rows, cap * sizeof(*nv));
		HSM_ENSURE(nv != NULL, HSM_ERR_NOMEM, "out of memory");
		c->rows = nv;
		c->cap = cap;
	}
	row *w = &c->rows[c->n++];
	memset(w, 0, sizeof(*w));
	snprintf(w->id, sizeof(w->id), "%s", r->request_id);
	snprintf(w->op, sizeof(w->op), "%s", r->operation ? r->operation : "");
	snprintf(w->principal, sizeof(w->principal), "%s", r->principal ? r->principal : "");
	snprintf(w->akid, sizeof(w->akid), "%s", r->access_key_id ? r->access_key_id : "");
	snprintf(w->source, sizeof(w->source), "%s", r->source ? r->source : "");
	snprintf(w->key_id, sizeof(w->key_id), "%s", r->key_id ? r->key_id : "");
	w->created_ms = r->created_ms;
	return HSM_SUCCESS;
}

/* The record written in place of the request's own. */
static hsm_result record_in_stead(hsm_server *s, const row *w, bool at_start)
{
	char committed[25];
	hsm_format_time_ms(w->created_ms, committed);
	hsm_audit_field f[6];
	size_t n = 0;
	f[n++] = (hsm_audit_field){"request_op", w->op};
	if (w->principal[0] != '\0')
		f[n++] = (hsm_audit_field){"request_principal", w->principal};
	if (w->akid[0] != '\0')
		f[n++] = (hsm_audit_field){"request_access_key", w->akid};
	if (w->source[0] != '\0')
		f[n++] = (hsm_audit_field){"request_source", w->source};
	f[n++] = (hsm_audit_field){"committed", committed};
	f[n++] = (hsm_audit_field){"record_lost",
	                           at_start ? "the node stopped before writing it (or its trail "
	                                      "failed it before the stop)"
	                                    : "the audit trail could not write it"};
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_EVENT,
	    .principal = "hsmd",
	    .operation = RECOVERED_EVENT,
	    .key_id = w->key_id[0] != '\0' ? w->key_id : NULL,
	    .outcome = HSM_AUDIT_SUCCESS,
	    .request_id = w->id,
	    .extra = f,
	    .n_extra = n,
	};
	return hsm_audit_append(s->audit, &rec);
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
	collect c = {.want = want, .n_want = n_want};
	*recorded = 0;
	hsm_result r = hsm_store_outbox_list(s->store, s->node_id, collect_row, &c);
	const char **ids = NULL;
	bool *found = NULL;
	if (hsm_ok(r) && c.n > 0) {
		ids = malloc(c.n * sizeof(*ids));
		found = calloc(c.n, sizeof(*found));
		if (ids == NULL || found == NULL)
			r = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	int64_t since = INT64_MAX;
	for (size_t i = 0; hsm_ok(r) && i < c.n; i++) {
		ids[i] = c.rows[i].id;
		if (c.rows[i].created_ms < since)
			since = c.rows[i].created_ms;
	}
	if (hsm_ok(r) && c.n > 0) {
		qsort(ids, c.n, sizeof(*ids), cmp_str);
		r = hsm_audit_find_requests(s->audit_dir, since - SEARCH_MARGIN_MS, ids, c.n, found);
	}
	for (size_t i = 0; hsm_ok(r) && i < c.n; i++) {
		row *w = &c.rows[i];
		const char *id = w->id;
		const char *const *at = bsearch(&id, ids, c.n, sizeof(*ids), cmp_str);
		HSM_ASSERT(at != NULL);
		if (found[at - ids])
			continue;
		settled key;
		memcpy(key.id, w->id, sizeof(key.id));
		const settled *e = bsearch(&key, want, n_want, sizeof(*want), cmp_settled);
		r = record_in_stead(s, w, e != NULL && e->at_start);
		if (hsm_ok(r)) {
			(*recorded)++;
			atomic_fetch_add(&s->outbox->recovered, 1);
		}
	}
	if (hsm_ok(r)) {
		settled e = {.below = hsm_audit_next_seq(s->audit)};
		pthread_mutex_lock(&s->outbox->mu);
		for (size_t i = 0; i < c.n && hsm_ok(r); i++) {
			memcpy(e.id, ids[i], sizeof(e.id));
			if (!push(&s->outbox->done, &e))
				r = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
		}
		pthread_mutex_unlock(&s->outbox->mu);
	}
	free(ids);
	free(found);
	free(c.rows);
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

void hsm_outbox_recover(hsm_server *s)
{
	hsm_result r = hsm_store_outbox_list(s->store, s->node_id, note_left, s->outbox);
	if (hsm_failed(r))
		hsm_log_failure("audit outbox: reading the requests left by the last run; settled at "
		                "the next start");
	else if (hsm_audit_accepting(s->audit))
		settle_lost(s);
}
