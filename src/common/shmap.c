#include "common/shmap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define SHARDS 64U
#define MIN_BUCKETS 16U

/*
 * Each shard is a chained hash table with at least as many buckets as it
 * may hold entries, and a doubly linked recency list through the same
 * entries: a hit moves its entry to the front and a full shard evicts the
 * one at the back, so no operation but a prefix removal walks the shard.
 */
typedef struct entry {
	struct entry *next;          /* bucket chain */
	struct entry *newer, *older; /* recency list */
	void *value;
	uint64_t hash;
	char key[]; /* as long as it is: a key id is 36 bytes, the bound 95 */
} entry;

typedef struct shard {
	pthread_mutex_t lock;
	size_t count;
	entry *newest, *oldest;
	entry **buckets;
} shard;

struct hsm_shmap {
	bool grouped; /* the shard follows the key's group, the part before its first '/' */
	size_t per_shard;
	size_t bucket_mask;
	hsm_shmap_ref_fn ref;
	hsm_shmap_unref_fn unref;
	atomic_uint_fast64_t hits, misses;
	shard shards[SHARDS];
};

/* Keys are identifiers of existing objects, not attacker-chosen floods. */
static uint64_t hash_of(const char *key)
{
	return hsm_fnv1a(key, strlen(key));
}

/* The shard of a key whose whole-key hash is h. */
static shard *shard_of(hsm_shmap *m, const char *key, uint64_t h)
{
	if (m->grouped) {
		const char *slash = strchr(key, '/');
		if (slash != NULL)
			h = hsm_fnv1a(key, (size_t)(slash - key));
	}
	return &m->shards[h % SHARDS];
}

/* The link that points at key's entry, or the bucket's final NULL link (lock held). */
static entry **find(hsm_shmap *m, shard *s, uint64_t h, const char *key)
{
	entry **pp = &s->buckets[(h / SHARDS) & m->bucket_mask];
	while (*pp != NULL && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
		pp = &(*pp)->next;
	return pp;
}

static void unlink_recency(shard *s, entry *e)
{
	if (e->newer != NULL)
		e->newer->older = e->older;
	else
		s->newest = e->older;
	if (e->older != NULL)
		e->older->newer = e->newer;
	else
		s->oldest = e->newer;
	e->newer = e->older = NULL;
}

static void push_newest(shard *s, entry *e)
{
	e->newer = NULL;
	e->older = s->newest;
	if (s->newest != NULL)
		s->newest->newer = e;
	else
		s->oldest = e;
	s->newest = e;
}

/* Unlinks the entry *pp points at and drops the map's reference (lock held). */
static void drop(hsm_shmap *m, shard *s, entry **pp)
{
	entry *e = *pp;
	*pp = e->next;
	unlink_recency(s, e);
	m->unref(e->value);
	free(e);
	s->count--;
}

hsm_result hsm_shmap_new(size_t capacity, hsm_shmap_ref_fn ref, hsm_shmap_unref_fn unref,
                         hsm_shmap **out)
{
	return hsm_shmap_new_grouped(capacity, ref, unref, false, out);
}

hsm_result hsm_shmap_new_grouped(size_t capacity, hsm_shmap_ref_fn ref, hsm_shmap_unref_fn unref,
                                 bool grouped, hsm_shmap **out)
{
	hsm_shmap *m = calloc(1, sizeof(*m));
	HSM_ENSURE(m != NULL, HSM_ERR_NOMEM, "out of memory");
	m->grouped = grouped;
	m->per_shard = capacity / SHARDS > 0 ? capacity / SHARDS : 1;
	size_t buckets = MIN_BUCKETS;
	while (buckets < m->per_shard)
		buckets *= 2;
	m->bucket_mask = buckets - 1;
	m->ref = ref;
	m->unref = unref;
	bool ok = true;
	for (unsigned i = 0; i < SHARDS; i++) {
		pthread_mutex_init(&m->shards[i].lock, NULL);
		m->shards[i].buckets = calloc(buckets, sizeof(entry *));
		ok = ok && m->shards[i].buckets != NULL;
	}
	if (!ok) {
		hsm_shmap_free(m);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	*out = m;
	return HSM_SUCCESS;
}

void hsm_shmap_free(hsm_shmap *m)
{
	if (m == NULL)
		return;
	hsm_shmap_clear(m);
	for (unsigned i = 0; i < SHARDS; i++) {
		pthread_mutex_destroy(&m->shards[i].lock);
		free(m->shards[i].buckets);
	}
	free(m);
}

bool hsm_shmap_get(hsm_shmap *m, const char *key, void **out)
{
	uint64_t h = hash_of(key);
	shard *s = shard_of(m, key, h);
	pthread_mutex_lock(&s->lock);
	entry *e = *find(m, s, h, key);
	if (e != NULL) {
		if (s->newest != e) {
			unlink_recency(s, e);
			push_newest(s, e);
		}
		*out = m->ref(e->value);
	}
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add_explicit(e != NULL ? &m->hits : &m->misses, 1, memory_order_relaxed);
	return e != NULL;
}

hsm_result hsm_shmap_put(hsm_shmap *m, const char *key, void *value)
{
	size_t klen = strlen(key);
	HSM_ASSERT(klen <= HSM_SHMAP_KEY_MAX);
	entry *n = calloc(1, sizeof(*n) + klen + 1);
	HSM_ENSURE(n != NULL, HSM_ERR_NOMEM, "out of memory");
	memcpy(n->key, key, klen + 1);
	n->hash = hash_of(key);
	n->value = m->ref(value);
	shard *s = shard_of(m, key, n->hash);
	pthread_mutex_lock(&s->lock);
	entry **pp = find(m, s, n->hash, key);
	if (*pp != NULL)
		drop(m, s, pp);
	if (s->count >= m->per_shard) {
		entry *victim = s->oldest;
		drop(m, s, find(m, s, victim->hash, victim->key));
	}
	pp = find(m, s, n->hash, key); /* the eviction may have shortened this chain */
	*pp = n;
	push_newest(s, n);
	s->count++;
	pthread_mutex_unlock(&s->lock);
	return HSM_SUCCESS;
}

void hsm_shmap_remove(hsm_shmap *m, const char *key)
{
	uint64_t h = hash_of(key);
	shard *s = shard_of(m, key, h);
	pthread_mutex_lock(&s->lock);
	entry **pp = find(m, s, h, key);
	if (*pp != NULL)
		drop(m, s, pp);
	pthread_mutex_unlock(&s->lock);
}

static void remove_in_shard(hsm_shmap *m, shard *s, const char *prefix)
{
	size_t plen = prefix != NULL ? strlen(prefix) : 0;
	pthread_mutex_lock(&s->lock);
	entry *e = s->newest;
	while (e != NULL) {
		entry *older = e->older;
		if (prefix == NULL || strncmp(e->key, prefix, plen) == 0)
			drop(m, s, find(m, s, e->hash, e->key));
		e = older;
	}
	pthread_mutex_unlock(&s->lock);
}

static void remove_matching(hsm_shmap *m, const char *prefix)
{
	/* A prefix that names a whole group: every match shares the group's shard. */
	if (m->grouped && prefix != NULL && strchr(prefix, '/') != NULL) {
		remove_in_shard(m, shard_of(m, prefix, 0), prefix);
		return;
	}
	for (unsigned i = 0; i < SHARDS; i++)
		remove_in_shard(m, &m->shards[i], prefix);
}

void hsm_shmap_remove_prefix(hsm_shmap *m, const char *prefix)
{
	remove_matching(m, prefix);
}

void hsm_shmap_clear(hsm_shmap *m)
{
	remove_matching(m, NULL);
}

void hsm_shmap_each_key(hsm_shmap *m, void (*cb)(const char *key, void *arg), void *arg)
{
	for (unsigned i = 0; i < SHARDS; i++) {
		shard *s = &m->shards[i];
		pthread_mutex_lock(&s->lock);
		for (const entry *e = s->newest; e != NULL; e = e->older)
			cb(e->key, arg);
		pthread_mutex_unlock(&s->lock);
	}
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
