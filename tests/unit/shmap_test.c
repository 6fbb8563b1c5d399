/*
 * The sharded cache map: what it returns, that it stays within its
 * capacity by evicting the least recently used entries, and that every
 * reference it takes is dropped exactly once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/shmap.h"

/* Values are counters: the map's references plus the test's own. */
typedef struct counted {
	int refs;
	int id;
} counted;

static void *counted_ref(void *v)
{
	((counted *)v)->refs++;
	return v;
}

static void counted_unref(void *v)
{
	counted *c = v;
	assert_true(c->refs > 0);
	c->refs--;
}

static hsm_shmap *new_map(size_t capacity)
{
	hsm_shmap *m = NULL;
	assert_true(hsm_ok(hsm_shmap_new(capacity, counted_ref, counted_unref, &m)));
	return m;
}

static void name_of(char *out, size_t n, int i)
{
	snprintf(out, n, "3f1c2b7e-0000-4000-8000-%012d/1", i);
}

static size_t entries(hsm_shmap *m)
{
	hsm_shmap_stats st;
	hsm_shmap_get_stats(m, &st);
	return (size_t)st.entries;
}

static bool holds(hsm_shmap *m, const char *key, const counted *expect)
{
	void *v = NULL;
	if (!hsm_shmap_get(m, key, &v))
		return false;
	assert_ptr_equal(v, expect);
	counted_unref(v);
	return true;
}

static void test_get_put_replace_remove(void **state)
{
	(void)state;
	hsm_shmap *m = new_map(1000);
	counted a = {.id = 1}, b = {.id = 2};
	void *v = NULL;
	assert_false(hsm_shmap_get(m, "k", &v));
	assert_true(hsm_ok(hsm_shmap_put(m, "k", &a)));
	assert_int_equal(a.refs, 1);
	assert_true(holds(m, "k", &a));
	assert_true(hsm_ok(hsm_shmap_put(m, "k", &b))); /* replaces: a's reference goes */
	assert_int_equal(a.refs, 0);
	assert_int_equal(b.refs, 1);
	assert_true(holds(m, "k", &b));
	assert_int_equal(entries(m), 1);
	hsm_shmap_stats st;
	hsm_shmap_get_stats(m, &st);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 1);
	/* A value removed while in use stays valid for its user. */
	assert_true(hsm_shmap_get(m, "k", &v));
	hsm_shmap_remove(m, "k");
	assert_int_equal(b.refs, 1);
	assert_false(hsm_shmap_get(m, "k", &v));
	counted_unref(&b);
	assert_int_equal(b.refs, 0);
	assert_int_equal(entries(m), 0);
	hsm_shmap_remove(m, "absent");
	/* Keys up to the bound, each entry sized to its key (ASan checks the bytes). */
	char longest[HSM_SHMAP_KEY_MAX + 1];
	memset(longest, 'k', HSM_SHMAP_KEY_MAX);
	longest[HSM_SHMAP_KEY_MAX] = '\0';
	assert_true(hsm_ok(hsm_shmap_put(m, longest, &a)));
	assert_true(hsm_ok(hsm_shmap_put(m, "", &b)));
	assert_true(holds(m, longest, &a));
	assert_true(holds(m, "", &b));
	longest[HSM_SHMAP_KEY_MAX - 1] = 'j';
	assert_false(hsm_shmap_get(m, longest, &v));
	hsm_shmap_free(m);
	assert_int_equal(a.refs + b.refs, 0);
}

enum { N = 20000, CAPACITY = 256 }; /* 64 shards of 4 */

static void test_stays_within_capacity_evicting_the_oldest(void **state)
{
	(void)state;
	counted *vals = calloc(N, sizeof(*vals));
	assert_non_null(vals);
	hsm_shmap *m = new_map(CAPACITY);
	char key[64];
	counted hot = {.id = -1};
	assert_true(hsm_ok(hsm_shmap_put(m, "hot", &hot)));
	for (int i = 0; i < N; i++) {
		vals[i].id = i;
		name_of(key, sizeof(key), i);
		assert_true(hsm_ok(hsm_shmap_put(m, key, &vals[i])));
		assert_true(entries(m) <= CAPACITY);
		/* Used after every insertion, it is never the least recently used. */
		assert_true(holds(m, "hot", &hot));
	}
	/* Twenty thousand keys over 64 shards of 4 fill every shard. */
	assert_int_equal(entries(m), CAPACITY);
	int present = 0, references = 0;
	for (int i = 0; i < N; i++) {
		name_of(key, sizeof(key), i);
		present += holds(m, key, &vals[i]);
		references += vals[i].refs;
	}
	assert_int_equal(present, CAPACITY - 1);
	assert_int_equal(references, CAPACITY - 1); /* every evicted value was released */
	/* The newest keys are the newest of their shards: none was evicted. */
	for (int i = N - 3; i < N; i++) {
		name_of(key, sizeof(key), i);
		assert_true(holds(m, key, &vals[i]));
	}
	/* The first keys, never used again, were. */
	for (int i = 0; i < 100; i++) {
		name_of(key, sizeof(key), i);
		void *v = NULL;
		assert_false(hsm_shmap_get(m, key, &v));
	}
	hsm_shmap_free(m);
	assert_int_equal(hot.refs, 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(vals[i].refs, 0);
	free(vals);
}

/* A hit renews an entry: of two entries, the one not used is the one evicted. */
static void test_a_hit_renews_the_entry(void **state)
{
	(void)state;
	hsm_shmap *m = new_map(1); /* one entry per shard */
	counted vals[3] = {{.id = 0}, {.id = 1}, {.id = 2}};
	/* Keys that share a shard are found by what the map does: the second
	 * put into a full shard evicts the first. */
	char keys[3][64];
	int found = 0;
	name_of(keys[0], sizeof(keys[0]), 0);
	assert_true(hsm_ok(hsm_shmap_put(m, keys[0], &vals[0])));
	for (int i = 1; i < 100000 && found < 1; i++) {
		char key[64];
		counted probe = {.id = i};
		name_of(key, sizeof(key), i);
		assert_true(hsm_ok(hsm_shmap_put(m, key, &probe)));
		bool evicted = vals[0].refs == 0;
		hsm_shmap_remove(m, key);
		assert_int_equal(probe.refs, 0);
		if (evicted) {
			memcpy(keys[1], key, sizeof(key));
			found = 1;
		}
	}
	assert_int_equal(found, 1);
	hsm_shmap_free(m);

	/* Capacity for two per shard: keys[0] and keys[1] share one. */
	m = new_map(128);
	assert_true(hsm_ok(hsm_shmap_put(m, keys[0], &vals[0])));
	assert_true(hsm_ok(hsm_shmap_put(m, keys[1], &vals[1])));
	assert_true(holds(m, keys[0], &vals[0])); /* keys[1] is now the older */
	/* A third key of the same shard evicts keys[1], not keys[0]. */
	for (int i = 100000; i < 400000; i++) {
		name_of(keys[2], sizeof(keys[2]), i);
		assert_true(hsm_ok(hsm_shmap_put(m, keys[2], &vals[2])));
		if (vals[0].refs == 0 || vals[1].refs == 0)
			break;
		hsm_shmap_remove(m, keys[2]);
	}
	assert_int_equal(vals[0].refs, 1);
	assert_int_equal(vals[1].refs, 0);
	assert_int_equal(vals[2].refs, 1);
	hsm_shmap_free(m);
	assert_int_equal(vals[0].refs + vals[1].refs + vals[2].refs, 0);
}

static void test_remove_prefix_and_clear(void **state)
{
	(void)state;
	hsm_shmap *m = new_map(10000);
	counted vals[200];
	char key[64];
	for (int i = 0; i < 200; i++) {
		vals[i] = (counted){.id = i};
		snprintf(key, sizeof(key), "%s-%d/%d", i % 2 ? "odd" : "even", i / 2, i);
		assert_true(hsm_ok(hsm_shmap_put(m, key, &vals[i])));
	}
	hsm_shmap_remove_prefix(m, "odd-1/"); /* exactly one: odd-1/3, not odd-10/.. */
	assert_int_equal(entries(m), 199);
	assert_int_equal(vals[3].refs, 0);
	hsm_shmap_remove_prefix(m, "odd-");
	assert_int_equal(entries(m), 100);
	for (int i = 0; i < 200; i++)
		assert_int_equal(vals[i].refs, i % 2 ? 0 : 1);
	snprintf(key, sizeof(key), "even-%d/%d", 7, 14);
	assert_true(holds(m, key, &vals[14]));
	hsm_shmap_clear(m);
	assert_int_equal(entries(m), 0);
	for (int i = 0; i < 200; i++)
		assert_int_equal(vals[i].refs, 0);
	/* Usable after a clear. */
	assert_true(hsm_ok(hsm_shmap_put(m, key, &vals[14])));
	assert_true(holds(m, key, &vals[14]));
	hsm_shmap_free(m);
	assert_int_equal(vals[14].refs, 0);
}

static void count_key(const char *key, void *arg)
{
	int *seen = arg;
	int i = -1;
	assert_int_equal(sscanf(key, "k%d", &i), 1);
	assert_true(i >= 0 && i < 300);
	seen[i]++;
}

/* Every key, once, whatever shard it is in; removed keys are not among them. */
static void test_each_key(void **state)
{
	(void)state;
	hsm_shmap *m = new_map(10000);
	counted vals[300];
	char key[32];
	for (int i = 0; i < 300; i++) {
		vals[i] = (counted){.id = i};
		snprintf(key, sizeof(key), "k%d", i);
		assert_true(hsm_ok(hsm_shmap_put(m, key, &vals[i])));
	}
	hsm_shmap_remove(m, "k7");
	int seen[300] = {0};
	hsm_shmap_each_key(m, count_key, seen);
	for (int i = 0; i < 300; i++)
		assert_int_equal(seen[i], i == 7 ? 0 : 1);
	hsm_shmap_free(m);
}

/* A grouped map keeps "group/..." keys of a group together; removing by a
 * prefix with a '/' takes exactly the matching keys, one without takes
 * every group it starts. */
static void test_grouped_remove_prefix(void **state)
{
	(void)state;
	enum { GROUPS = 300, VERSIONS = 4 };
	hsm_shmap *m = NULL;
	assert_true(hsm_ok(hsm_shmap_new_grouped(100000, counted_ref, counted_unref, true, &m)));
	static counted vals[GROUPS][VERSIONS + 1];
	char key[64];
	for (int g = 0; g < GROUPS; g++) {
		for (int v = 0; v < VERSIONS; v++) {
			vals[g][v] = (counted){.id = g * 10 + v};
			snprintf(key, sizeof(key), "g%d/%d/spec", g, v);
			assert_true(hsm_ok(hsm_shmap_put(m, key, &vals[g][v])));
		}
		vals[g][VERSIONS] = (counted){.id = -g}; /* a key without a group */
		snprintf(key, sizeof(key), "g%d", g);
		assert_true(hsm_ok(hsm_shmap_put(m, key, &vals[g][VERSIONS])));
	}
	hsm_shmap_remove_prefix(m, "g17/");
	hsm_shmap_remove_prefix(m, "g42/3");
	for (int g = 0; g < GROUPS; g++)
		for (int v = 0; v <= VERSIONS; v++) {
			bool gone = (g == 17 && v < VERSIONS) || (g == 42 && v == 3);
			assert_int_equal(vals[g][v].refs, gone ? 0 : 1);
			if (v < VERSIONS)
				snprintf(key, sizeof(key), "g%d/%d/spec", g, v);
			else
				snprintf(key, sizeof(key), "g%d", g);
			assert_int_equal(holds(m, key, &vals[g][v]), !gone);
		}
	assert_int_equal(entries(m), GROUPS * (VERSIONS + 1) - VERSIONS - 1);
	/* No '/': every group whose name starts so, grouped keys and plain ones. */
	hsm_shmap_remove_prefix(m, "g29");
	for (int g = 0; g < GROUPS; g++) {
		char name[16];
		snprintf(name, sizeof(name), "g%d", g);
		bool starts = strncmp(name, "g29", 3) == 0;
		assert_int_equal(vals[g][VERSIONS].refs, starts ? 0 : 1);
		assert_int_equal(vals[g][0].refs, starts || g == 17 ? 0 : 1);
	}
	hsm_shmap_free(m);
	for (int g = 0; g < GROUPS; g++)
		for (int v = 0; v <= VERSIONS; v++)
			assert_int_equal(vals[g][v].refs, 0);
}

/* Random operations against a plain array that knows what must be there. */
static void model_check(bool grouped)
{
	enum { KEYS = 3000, OPS = 200000 };
	hsm_shmap *m = NULL; /* never full: the model needs no eviction rule */
	assert_true(hsm_ok(hsm_shmap_new_grouped(1u << 20, counted_ref, counted_unref, grouped, &m)));
	counted *vals = calloc(KEYS, sizeof(*vals));
	bool *in = calloc(KEYS, sizeof(*in));
	assert_non_null(vals);
	assert_non_null(in);
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	size_t count = 0;
	char key[64];
	for (int op = 0; op < OPS; op++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		int k = (int)(x % KEYS);
		if (grouped) /* a few versions per group, as the key cache holds them */
			snprintf(key, sizeof(key), "3f1c2b7e-0000-4000-8000-%012d/%d/7/1", k / 3, k % 3);
		else
			name_of(key, sizeof(key), k);
		switch ((x >> 32) % 4) {
		case 0:
		case 1:
			assert_int_equal(holds(m, key, &vals[k]), in[k]);
			break;
		case 2:
			assert_true(hsm_ok(hsm_shmap_put(m, key, &vals[k])));
			count += !in[k];
			in[k] = true;
			break;
		default:
			hsm_shmap_remove(m, key);
			count -= in[k];
			in[k] = false;
			break;
		}
		assert_int_equal(vals[k].refs, in[k] ? 1 : 0);
	}
	assert_int_equal(entries(m), count);
	hsm_shmap_free(m);
	for (int i = 0; i < KEYS; i++)
		assert_int_equal(vals[i].refs, 0);
	free(vals);
	free(in);
}

static void test_matches_a_model(void **state)
{
	(void)state;
	model_check(false);
	model_check(true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get_put_replace_remove),
	    cmocka_unit_test(test_stays_within_capacity_evicting_the_oldest),
	    cmocka_unit_test(test_a_hit_renews_the_entry),
	    cmocka_unit_test(test_remove_prefix_and_clear),
	    cmocka_unit_test(test_each_key),
	    cmocka_unit_test(test_grouped_remove_prefix),
	    cmocka_unit_test(test_matches_a_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
