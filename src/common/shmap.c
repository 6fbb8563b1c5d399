#include "common/shmap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 64U
#define BUCKETS 512U

typedef struct entry {
	struct entry *next;
	void *value;
	uint64_t last_used;
	uint64_t hash;
	char key[HSM_SHMAP_KEY_MAX + 1];
} entry;

typedef struct shard {
	pthread_mutex_t lock;
	size_t count;
	uint64_t tick;
	entry *buckets[BUCKETS];
} shard;

struct hsm_shmap {
	size_t per_shard;
	hsm_shmap_ref_fn ref;
	hsm_shmap_unref_fn unref;
	atomic_uint_fast64_t hits, misses;
	shard shards[SHARDS];
};

/* FNV-1a; keys are identifiers of existing objects, not attacker-chosen floods. */
static uint64_t hash_of(const char *key)
{
	uint64_t h = 1469598103934665603ULL;
	for (const char *p = key; *p; p++)
		h = (h ^ (uint8_t)*p) * 1099511628211ULL;
	return h;
}

static shard *shard_of(hsm_shmap *m, uint64_t h)
{
	return &m->shards[h % SHARDS];
}

static entry **bucket_of(shard *s, uint64_t h)
{
	return &s->buckets[(h / SHARDS) % BUCKETS];
}

hsm_result hsm_shmap_new(size_t capacity, hsm_shmap_ref_fn ref, hsm_shmap_unref_fn unref,
                         hsm_shmap **out)
{
	hsm_shmap *m = calloc(1, sizeof(*m));
	HSM_ENSURE(m != NULL, HSM_ERR_NOMEM, "out of memory");
	m->per_shard = capacity / SHARDS > 0 ? capacity / SHARDS : 1;
	m->ref = ref;
	m->unref = unref;
	for (unsigned i = 0; i < SHARDS; i++)
		pthread_mutex_init(&m->shards[i].lock, NULL);
	*out = m;
	return HSM_SUCCESS;
}

void hsm_shmap_free(hsm_shmap *m)
{
	if (m == NULL)
		return;
	hsm_shmap_clear(m);
	for (unsigned i = 0; i < SHARDS; i++)
		pthread_mutex_destroy(&m->shards[i].lock);
	free(m);
}

static void drop(hsm_shmap *m, shard *s, entry **pp)
{
	entry *e = *pp;
	*pp = e->next;
	m->unref(e->value);
	free(e);
	s->count--;
}

bool hsm_shmap_get(hsm_shmap *m, const char *key, void **out)
{
	uint64_t h = hash_of(key);
	shard *s = shard_of(m, h);
	bool found = false;
	pthread_mutex_lock(&s->lock);
	for (entry *e = *bucket_of(s, h); e != NULL; e = e->next) {
		if (e->hash == h && strcmp(e->key, key) == 0) {
			e->last_used = ++s->tick;
			*out = m->ref(e->value);
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add_explicit(found ? &m->hits : &m->misses, 1, memory_order_relaxed);
	return found;
}

/* Evicts the least recently used entry of a full shard (lock held). */
static void evict_lru(hsm_shmap *m, shard *s)
{
	entry **victim = NULL;
	for (unsigned b = 0; b < BUCKETS; b++)
		for (entry **pp = &s->buckets[b]; *pp != NULL; pp = &(*pp)->next)
			if (victim == NULL || (*pp)->last_used < (*victim)->last_used)
				victim = pp;
	if (victim != NULL)
		drop(m, s, victim);
}

hsm_result hsm_shmap_put(hsm_shmap *m, const char *key, void *value)
{
	size_t klen = strlen(key);
	HSM_ASSERT(klen <= HSM_SHMAP_KEY_MAX);
	entry *n = calloc(1, sizeof(*n));
	HSM_ENSURE(n != NULL, HSM_ERR_NOMEM, "out of memory");
	memcpy(n->key, key, klen + 1);
	n->hash = hash_of(key);
	n->value = m->ref(value);
	shard *s = shard_of(m, n->hash);
	pthread_mutex_lock(&s->lock);
	entry **head = bucket_of(s, n->hash);
	for (entry **pp = head; *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->hash == n->hash && strcmp((*pp)->key, key) == 0) {
			drop(m, s, pp);
			break;
		}
	}
	if (s->count >= m->per_shard)
		evict_lru(m, s);
	n->last_used = ++s->tick;
	n->next = *head;
	*head = n;
	s->count++;
	pthread_mutex_unlock(&s->lock);
	return HSM_SUCCESS;
}

void hsm_shmap_remove(hsm_shmap *m, const char *key)
{
	uint64_t h = hash_of(key);
	shard *s = shard_of(m, h);
	pthread_mutex_lock(&s->lock);
	for (entry **pp = bucket_of(s, h); *pp != NULL; pp = &(*pp)->next) {
		if ((*pp)->hash == h && strcmp((*pp)->key, key) == 0) {
			drop(m, s, pp);
			break;
		}
	}
	pthread_mutex_unlock(&s->lock);
}

static void remove_matching(hsm_shmap *m, const char *prefix)
{
	size_t plen = prefix != NULL ? strlen(prefix) : 0;
	for (unsigned i = 0; i < SHARDS; i++) {
		shard *s = &m->shards[i];
		pthread_mutex_lock(&s->lock);
		for (unsigned b = 0; b < BUCKETS && s->count > 0; b++) {
			entry **pp = &s->buckets[b];
			while (*pp != NULL) {
				if (prefix == NULL || strncmp((*pp)->key, prefix, plen) == 0)
					drop(m, s, pp);
				else
					pp = &(*pp)->next;
			}
		}
		pthread_mutex_unlock(&s->lock);
	}
}

void hsm_shmap_remove_prefix(hsm_shmap *m, const char *prefix)
{
	remove_matching(m, prefix);
}

void hsm_shmap_clear(hsm_shmap *m)
{
	remove_matching(m, NULL);
}

void hsm_shmap_get_stats(hsm_shmap *m, hsm_shmap_stats *out)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < SHARDS; i++) {
		pthread_mutex_lock(&m->shards[i].lock);
		n += m->shards[i].count;
		pthread_mutex_unlock(&m->shards[i].lock);
	}
	out->hits = atomic_load(&m->hits);
	out->misses = atomic_load(&m->misses);
	out->entries = n;
}
