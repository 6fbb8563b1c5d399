/*
 * shmap.h - a bounded, sharded map from short strings to referenced values.
 *
 * Used for the caches on the hot path (unwrapped key versions, key
 * metadata).  A lookup takes one shard's mutex for a few instructions, so
 * threads rarely contend and there is no global lock.  Values are
 * reference-counted by the caller's functions: the map holds one reference
 * per entry and hands out a new one on every hit, so an entry removed while
 * in use stays valid until its user releases it.  When a shard is full the
 * least recently used entry of that shard is evicted.
 */
#ifndef HSM_SHMAP_H
#define HSM_SHMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/result.h"

#define HSM_SHMAP_KEY_MAX 95

typedef struct hsm_shmap hsm_shmap;
typedef void *(*hsm_shmap_ref_fn)(void *value);  /* returns value with one more reference */
typedef void (*hsm_shmap_unref_fn)(void *value); /* drops one reference */

hsm_result hsm_shmap_new(size_t capacity, hsm_shmap_ref_fn ref, hsm_shmap_unref_fn unref,
                         hsm_shmap **out) HSM_MUST_CHECK;
/*
 * With grouped, keys of the form "group/rest" that share a group share a
 * shard, so removing a prefix that contains a '/' visits that one shard
 * instead of the whole map.  Only for keys whose groups are many and evenly
 * spread (key ids), since a group's entries compete for one shard's room.
 */
hsm_result hsm_shmap_new_grouped(size_t capacity, hsm_shmap_ref_fn ref,
                                 hsm_shmap_unref_fn unref, bool grouped,
                                 hsm_shmap **out) HSM_MUST_CHECK;
/* Drops every entry and frees the map.  NULL is a no-op. */
void hsm_shmap_free(hsm_shmap *m);
/* On a hit, *out receives a new reference. */
bool hsm_shmap_get(hsm_shmap *m, const char *key, void **out);
/* Inserts or replaces; the map takes its own reference to value. */
hsm_result hsm_shmap_put(hsm_shmap *m, const char *key, void *value) HSM_MUST_CHECK;
void hsm_shmap_remove(hsm_shmap *m, const char *key);
/* Removes every entry whose key starts with prefix (scans the whole map, or in
 * a grouped map one shard when the prefix contains a '/'). */
void hsm_shmap_remove_prefix(hsm_shmap *m, const char *prefix);
void hsm_shmap_clear(hsm_shmap *m);
/* Calls cb with each key, a shard's lock held: cb must be brief and not use the map. */
void hsm_shmap_each_key(hsm_shmap *m, void (*cb)(const char *key, void *arg), void *arg);

typedef struct hsm_shmap_stats {
	uint64_t hits, misses, entries;
} hsm_shmap_stats;
void hsm_shmap_get_stats(hsm_shmap *m, hsm_shmap_stats *out);

#endif
