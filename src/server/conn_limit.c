/*
 * conn_limit.c - open connections per source (conn_limit.h).
 *
 * An open-addressing table with linear probing, at most half full: it has
 * room for twice as many sources as connections can be open, and a source
 * holds an entry only while it holds a connection.  Connections are counted
 * even while there is no bound, so a bound set later (a SIGHUP) meets true
 * counts.  A source's last connection frees its entry by backward-shift
 * deletion, so no tombstones pile up however many sources come and go.
 */
#include "server/conn_limit.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/random.h>

#include "common/util.h"

typedef struct slot {
	hsm_source src;
	uint32_t n; /* 0: free */
} slot;

struct hsm_conn_limit {
	uint32_t per_source; /* under lock */
	pthread_mutex_t lock;
	uint64_t seed;
	slot *table;
	size_t mask; /* capacity - 1; capacity a power of two */
};

hsm_result hsm_conn_limit_new(uint32_t per_source, uint32_t max_open, hsm_conn_limit **out)
{
	hsm_conn_limit *l = calloc(1, sizeof(*l));
	HSM_ENSURE(l != NULL, HSM_ERR_NOMEM, "out of memory");
	l->per_source = per_source;
	size_t cap = 16;
	while (cap < 2 * (size_t)max_open + 2)
		cap *= 2;
	l->table = calloc(cap, sizeof(*l->table));
	if (l->table == NULL || pthread_mutex_init(&l->lock, NULL) != 0) {
		free(l->table);
		free(l);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	l->mask = cap - 1;
	/* Not a secret: it only keeps chosen addresses from sharing probe runs on every node. */
	if (getrandom(&l->seed, sizeof(l->seed), GRND_NONBLOCK) != (ssize_t)sizeof(l->seed))
		l->seed = (uint64_t)hsm_mono_ns();
	*out = l;
	return HSM_SUCCESS;
}

void hsm_conn_limit_free(hsm_conn_limit *l)
{
	if (l == NULL)
		return;
	free(l->table);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

/* src's slot, or the free slot where it would go (NULL: the table is full). */
static slot *find(hsm_conn_limit *l, const hsm_source *src)
{
	size_t i = (size_t)hsm_source_hash(src, l->seed) & l->mask;
	for (size_t probes = 0; probes <= l->mask; probes++, i = (i + 1) & l->mask) {
		slot *s = &l->table[i];
		if (s->n == 0 || hsm_source_equal(&s->src, src))
			return s;
	}
	return NULL;
}

bool hsm_conn_limit_take(hsm_conn_limit *l, const hsm_source *src)
{
	pthread_mutex_lock(&l->lock);
	slot *s = find(l, src);
	bool ok = s != NULL && (l->per_source == 0 || s->n < l->per_source);
	if (ok) {
		if (s->n == 0)
			s->src = *src;
		s->n++;
	}
	pthread_mutex_unlock(&l->lock);
	return ok;
}

/* Frees slot i, moving later entries of its probe run back so every entry stays findable. */
static void remove_at(hsm_conn_limit *l, size_t i)
{
	size_t hole = i;
	for (size_t j = (i + 1) & l->mask; l->table[j].n != 0; j = (j + 1) & l->mask) {
		size_t home = (size_t)hsm_source_hash(&l->table[j].src, l->seed) & l->mask;
		/* j's entry may fill the hole unless its home lies cyclically in (hole, j]. */
		bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
		if (!stays) {
			l->table[hole] = l->table[j];
			hole = j;
		}
	}
	l->table[hole].n = 0;
}

void hsm_conn_limit_give(hsm_conn_limit *l, const hsm_source *src)
{
	pthread_mutex_lock(&l->lock);
	slot *s = find(l, src);
	if (s != NULL && s->n > 0 && --s->n == 0)
		remove_at(l, (size_t)(s - l->table));
	pthread_mutex_unlock(&l->lock);
}

uint32_t hsm_conn_limit_held(hsm_conn_limit *l, const hsm_source *src)
{
	pthread_mutex_lock(&l->lock);
	slot *s = find(l, src);
	uint32_t n = s != NULL ? s->n : 0;
	pthread_mutex_unlock(&l->lock);
	return n;
}

void hsm_conn_limit_set(hsm_conn_limit *l, uint32_t per_source)
{
	pthread_mutex_lock(&l->lock);
	l->per_source = per_source;
	pthread_mutex_unlock(&l->lock);
}

uint32_t hsm_conn_limit_bound(hsm_conn_limit *l)
{
	pthread_mutex_lock(&l->lock);
	uint32_t n = l->per_source;
	pthread_mutex_unlock(&l->lock);
	return n;
}
