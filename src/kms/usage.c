/*
 * usage.c - each key's last successful cryptographic use (GetKeyLastUsage).
 *
 * The server notes a use once the request's audit record is written, so a
 * use the service reports is one its audit trail holds.  Notes go to an
 * in-memory table (one entry per key, the latest use kept) and a flusher
 * writes them to the store in batches every second or so; a reader merges
 * the store's record with the entries not yet written, so this node's own
 * answers are current and other nodes sharing the store see a use within
 * a flush.  While the store refuses writes the entries stay in memory, up
 * to USAGE_MAX keys; uses of keys beyond that are counted as dropped (the
 * audit trail still holds them).
 *
 * Two tables: `cur` takes new notes; a flush moves it to `out` under the
 * mutex and writes `out` without it, so notes never wait for the store,
 * and a reader looks in both until the write is done.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kms/kms_internal.h"

#define USAGE_MAX (1U << 18)   /* keys with unwritten uses kept at most */
#define USAGE_BATCH 5000       /* records per store transaction (one fsync each) */

typedef struct usage_tab {
	hsm_key_usage_record *recs;
	uint32_t *slots; /* index + 1 into recs; 0 = empty; linear probing */
	size_t n, cap;   /* cap: records allocated; slots: 2 * cap */
} usage_tab;

struct hsm_usage {
	hsm_store *store;
	pthread_mutex_t mu;
	usage_tab cur, out;
	pthread_mutex_t flush_mu; /* one flush at a time */
	uint64_t dropped;         /* uses not kept: the table was full */
	int64_t since;            /* the store's tracking start (0: not read yet) */
};

static uint32_t hash_id(const char *id)
{
	uint32_t h = 2166136261u;
	for (; *id != '\0'; id++)
		h = (h ^ (uint8_t)*id) * 16777619u;
	return h;
}

static void tab_free(usage_tab *t)
{
	free(t->recs);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* The record of key_id in t, or NULL. */
static hsm_key_usage_record *tab_find(const usage_tab *t, const char *key_id)
{
	if (t->n == 0)
		return NULL;
	size_t mask = 2 * t->cap - 1;
	for (size_t i = hash_id(key_id) & mask;; i = (i + 1) & mask) {
		uint32_t s = t->slots[i];
		if (s == 0)
			return NULL;
		if (strcmp(t->recs[s - 1].key_id, key_id) == 0)
			return &t->recs[s - 1];
	}
}

static void tab_index(usage_tab *t, size_t rec)
{
	size_t mask = 2 * t->cap - 1;
	size_t i = hash_id(t->recs[rec].key_id) & mask;
	while (t->slots[i] != 0)
		i = (i + 1) & mask;
	t->slots[i] = (uint32_t)rec + 1;
}

/* Room for one more record; false when out of memory or at USAGE_MAX. */
static bool tab_room(usage_tab *t)
{
	if (t->n < t->cap)
		return true;
	size_t cap = t->cap == 0 ? 64 : 2 * t->cap;
	if (cap > USAGE_MAX)
		return false;
	hsm_key_usage_record *recs = realloc(t->recs, cap * sizeof(*recs));
	if (recs == NULL)
		return false;
	t->recs = recs;
	uint32_t *slots = calloc(2 * cap, sizeof(*slots));
	if (slots == NULL)
		return false;
	free(t->slots);
	t->slots = slots;
	t->cap = cap;
	for (size_t i = 0; i < t->n; i++)
		tab_index(t, i);
	return true;
}

/* Keeps u in t unless t holds a later use of the same key.  mu held. */
static void tab_note(hsm_usage *us, usage_tab *t, const hsm_key_usage_record *u)
{
	hsm_key_usage_record *have = tab_find(t, u->key_id);
	if (have != NULL) {
		if (u->used_ms >= have->used_ms)
			*have = *u;
		return;
	}
	if (!tab_room(t)) {
		us->dropped++;
		return;
	}
	t->recs[t->n] = *u;
	tab_index(t, t->n);
	t->n++;
}

hsm_result hsm_usage_new(hsm_store *store, hsm_usage **out)
{
	hsm_usage *u = calloc(1, sizeof(*u));
	HSM_ENSURE(u != NULL, HSM_ERR_NOMEM, "out of memory");
	u->store = store;
	pthread_mutex_init(&u->mu, NULL);
	pthread_mutex_init(&u->flush_mu, NULL);
	*out = u;
	return HSM_SUCCESS;
}

void hsm_usage_free(hsm_usage *u)
{
	if (u == NULL)
		return;
	tab_free(&u->cur);
	tab_free(&u->out);
	pthread_mutex_destroy(&u->mu);
	pthread_mutex_destroy(&u->flush_mu);
	free(u);
}

void hsm_usage_note(hsm_usage *u, const char *key_id, const char *operation,
                    const char *request_id, int64_t used_ms)
{
	hsm_key_usage_record r;
	memset(&r, 0, sizeof(r));
	if (key_id[0] == '\0' || hsm_failed(hsm_strcpy(r.key_id, sizeof(r.key_id), key_id)) ||
	    hsm_failed(hsm_strcpy(r.operation, sizeof(r.operation), operation)) ||
	    hsm_failed(hsm_strcpy(r.request_id, sizeof(r.request_id), request_id)))
		return; /* none is that long: the server's own values */
	r.used_ms = used_ms > 0 ? used_ms : 1;
	pthread_mutex_lock(&u->mu);
	tab_note(u, &u->cur, &r);
	pthread_mutex_unlock(&u->mu);
}

hsm_result hsm_usage_flush(hsm_usage *u)
{
	hsm_result res = HSM_SUCCESS;
	size_t done = 0;
	pthread_mutex_lock(&u->flush_mu);
	pthread_mutex_lock(&u->mu);
	usage_tab t = u->cur; /* out is empty between flushes */
	u->out = t;
	memset(&u->cur, 0, sizeof(u->cur));
	uint64_t dropped = u->dropped;
	u->dropped = 0;
	pthread_mutex_unlock(&u->mu);
	if (dropped > 0)
		hsm_warn("%llu uses of keys went unrecorded for GetKeyLastUsage while the store "
		         "was not written (the audit trail holds them)",
		         (unsigned long long)dropped);
	while (done < t.n) {
		size_t n = t.n - done < USAGE_BATCH ? t.n - done : USAGE_BATCH;
		res = hsm_store_usage_put(u->store, n, t.recs + done);
		if (hsm_failed(res))
			break;
		done += n;
	}
	pthread_mutex_lock(&u->mu);
	memset(&u->out, 0, sizeof(u->out));
	if (hsm_failed(res)) /* kept for the next flush, behind any later use */
		for (size_t i = done; i < t.n; i++)
			tab_note(u, &u->cur, &t.recs[i]);
	pthread_mutex_unlock(&u->mu);
	tab_free(&t);
	pthread_mutex_unlock(&u->flush_mu);
	return res;
}

/* The latest use of key_id this node has not written yet; false when none. */
static bool unwritten(hsm_usage *u, const char *key_id, hsm_key_usage_record *out)
{
	pthread_mutex_lock(&u->mu);
	const hsm_key_usage_record *a = tab_find(&u->cur, key_id);
	const hsm_key_usage_record *b = tab_find(&u->out, key_id);
	if (a == NULL || (b != NULL && b->used_ms > a->used_ms))
		a = b;
	if (a != NULL)
		*out = *a;
	pthread_mutex_unlock(&u->mu);
	return a != NULL;
}

void hsm_kms_set_usage(hsm_kms *kms, hsm_usage *u)
{
	kms->usage = u;
}

hsm_result hsm_kms_key_last_usage(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                  hsm_key_last_usage *out)
{
	HSM_ENSURE(kms->usage != NULL, HSM_ERR_INTERNAL, "key usage is not recorded on this node");
	hsm_usage *u = kms->usage;
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_GetKeyLastUsage, ref, NULL, &k));
	hsm_key_last_usage r;
	memset(&r, 0, sizeof(r));
	memcpy(r.key_id, k->rec.key_id, sizeof(r.key_id));
	r.created = k->rec.created;
	kms_key_release(k);
	pthread_mutex_lock(&u->mu);
	int64_t since = u->since;
	pthread_mutex_unlock(&u->mu);
	if (since == 0) {
		HSM_GUARD(hsm_store_usage_since(u->store, &since));
		pthread_mutex_lock(&u->mu);
		u->since = since;
		pthread_mutex_unlock(&u->mu);
	}
	r.tracking_start = since > r.created ? since : r.created;
	hsm_key_usage_record stored, local;
	hsm_result got = hsm_store_usage_get(u->store, r.key_id, &stored);
	if (hsm_failed(got) && got.err != HSM_ERR_NOT_FOUND)
		return got;
	r.used = hsm_ok(got);
	if (r.used)
		r.last = stored;
	if (unwritten(u, r.key_id, &local) && (!r.used || local.used_ms >= r.last.used_ms)) {
		r.last = local;
		r.used = true;
	}
	*out = r;
	return HSM_SUCCESS;
}
