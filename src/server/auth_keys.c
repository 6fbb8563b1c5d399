/*
 * auth_keys.c - which access key ids exist, so that a request naming one that
 * does not costs no store lookup.
 *
 * Authentication loads a credential from the store when its cache misses:
 * for a PostgreSQL store a round trip, on the HTTP worker, for every request
 * naming an id nobody has (a revoked key still configured somewhere, or made-up
 * ids sent on purpose), about ten times what refusing an unsigned request
 * costs.  So the node keeps the sorted list of the store's active access key
 * ids, read again every second by the flusher thread (and looked past, until
 * then, after a principal change on this node).  An id missing
 * from a fresh list is still looked up at a bounded rate (it may have been
 * made on another node within the second); past that rate it is refused as
 * unknown without a lookup, until the list catches up.  A list that could
 * not be read for a few seconds is not trusted: every id is looked up, as
 * before.
 */
#include <stdlib.h>
#include <string.h>

#include "common/bucket.h"
#include "common/log.h"
#include "common/util.h"
#include "server/server.h"

#define FRESH_MS 2500        /* a list older than this is not trusted (read every second) */
#define LOOKUP_RATE 20       /* lookups a second of ids missing from the list */
#define LOOKUP_BURST 40
#define MIN_ID_LEN 16        /* the shortest id a key can be given (hsm_kms_access_key_import) */

typedef char akid_t[HSM_ACCESS_KEY_ID_LEN + 1];

typedef struct collect {
	akid_t *ids;
	size_t n, cap;
} collect;

static hsm_result collect_id(const hsm_access_key_record *k, void *arg)
{
	collect *c = arg;
	if (!k->active)
		return HSM_SUCCESS; /* a revoked key authenticates no one */
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		akid_t *ids = realloc(c->ids, cap * sizeof(*ids));
		HSM_ENSURE(ids != NULL, HSM_ERR_NOMEM, "out of memory");
		c->ids = ids;
		c->cap = cap;
	}
	memcpy(c->ids[c->n++], k->access_key_id, sizeof(akid_t));
	return HSM_SUCCESS;
}

static int by_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

void hsm_server_akids_refresh(hsm_server *s)
{
	collect c = {NULL, 0, 0};
	/* A key made here while the store is read may be missing from what is read:
	 * its hsm_server_akids_stale must not be undone by publishing that as fresh. */
	pthread_mutex_lock(&s->akids_lock);
	uint64_t staled = s->akids_staled;
	pthread_mutex_unlock(&s->akids_lock);
	hsm_result r = hsm_kms_access_keys_all(s->kms, collect_id, &c);
	if (hsm_failed(r)) {
		free(c.ids); /* the old list ages out (FRESH_MS): then every id is looked up */
		return;
	}
	if (c.n > 1)
		qsort(c.ids, c.n, sizeof(*c.ids), by_id); /* the store's order need not be strcmp's */
	pthread_mutex_lock(&s->akids_lock);
	akid_t *old = s->akids;
	s->akids = c.ids;
	s->n_akids = c.n;
	s->akids_loaded_ms = s->akids_staled == staled ? (int64_t)(hsm_mono_ns() / 1000000) : 0;
	pthread_mutex_unlock(&s->akids_lock);
	free(old);
}

void hsm_server_akids_stale(hsm_server *s)
{
	pthread_mutex_lock(&s->akids_lock);
	s->akids_loaded_ms = 0; /* every id is looked up until the next read */
	s->akids_staled++;
	pthread_mutex_unlock(&s->akids_lock);
}

void hsm_server_akids_free(hsm_server *s)
{
	free(s->akids);
	s->akids = NULL;
	s->n_akids = 0;
}

bool hsm_server_akid_may_exist(hsm_server *s, const char *akid)
{
	size_t len = strlen(akid);
	bool may = len >= MIN_ID_LEN && len <= HSM_ACCESS_KEY_ID_LEN; /* else no key has it */
	int64_t now_ms = (int64_t)(hsm_mono_ns() / 1000000);
	pthread_mutex_lock(&s->akids_lock);
	if (may && s->akids_loaded_ms != 0 && now_ms - s->akids_loaded_ms < FRESH_MS &&
	    (s->n_akids == 0 || bsearch(akid, s->akids, s->n_akids, sizeof(*s->akids), by_id) == NULL))
		may = hsm_bucket_take(&s->akid_lookups, LOOKUP_RATE, LOOKUP_BURST, now_ms);
	pthread_mutex_unlock(&s->akids_lock);
	if (!may)
		atomic_fetch_add_explicit(&s->akids_spared, 1, memory_order_relaxed);
	return may;
}
