/*
 * store_scale_test.c - store speed at a given number of keys.
 *
 * By default it runs with 1,000 keys (created through the API) so the suite
 * stays fast; HSM_STORE_SCALE=1 runs the same measurements on 1,000,000 keys
 * (bulk-loaded below the API, since a million durable single-key commits
 * would measure the disk's fsync for the whole run), HSM_STORE_SCALE=N on
 * N keys.  Every run checks that each read returns the key it asked for, and
 * prints:
 *   key_get latency (one thread; p50/p99/max over random existing keys)
 *   key_get throughput with several reader threads while a writer commits
 *   key_create throughput (each create a durable transaction)
 *   key_list (one page of 100), keys_due (limit 100) and key_count latency
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include <openssl/rand.h>

#include "store/store.h"
#include "store_test_util.h"

#define GETS 20000
#define READERS 4
/* Creates timed per phase: fewer in the default run, which also runs under ASan. */
#define CREATES (scale() > 10000 ? 2000U : 300U)

static unsigned scale(void)
{
	const char *v = getenv("HSM_STORE_SCALE");
	if (v == NULL || *v == '\0' || strcmp(v, "0") == 0)
		return 1000;
	if (strcmp(v, "1") == 0)
		return 1000000;
	int64_t n = 0;
	if (hsm_failed(hsm_parse_i64(v, 10, 100000000, &n)))
		return 1000;
	return (unsigned)n;
}

static unsigned random_below(unsigned n)
{
	unsigned r;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		abort();
	return r % n;
}

/* A policy the size of KMS's default key policy, so rows are realistically large. */
#define POLICY                                                                                 \
	"{\"Version\":\"2012-10-17\",\"Id\":\"key-default-1\",\"Statement\":[{\"Sid\":\"Enable " \
	"IAM User Permissions\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::"     \
	"111122223333:root\"},\"Action\":\"kms:*\",\"Resource\":\"*\"},{\"Sid\":\"Allow use\","  \
	"\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:role/app\"},"   \
	"\"Action\":[\"kms:Encrypt\",\"kms:Decrypt\",\"kms:GenerateDataKey*\"],\"Resource\":\"*\"}]}"

/*
 * Bulk load below the API: ids from st_key_id(1..n), 1% with rotation on, a
 * few pending deletion, a 60-byte wrapped AES-256 key each (key, IV, tag).
 */
static void bulk_load(const char *dir, unsigned n)
{
	char sql[4096];
	snprintf(sql, sizeof(sql),
	         "PRAGMA synchronous=OFF; BEGIN;"
	         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %u) "
	         "INSERT INTO keys SELECT printf('%%08x-0000-4000-8000-%%012x', i, i), 'bulk key', "
	         "'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS', "
	         "CASE WHEN i %% 997 = 0 THEN 'PendingDeletion' ELSE 'Enabled' END, 1700000000, "
	         "CASE WHEN i %% 997 = 0 THEN 1700000000 + i ELSE 0 END, 30, "
	         "i %% 100 = 0, 365, CASE WHEN i %% 100 = 0 THEN 1700000000 + i ELSE 0 END, 1, "
	         "'%s', 0, 1700000000 FROM n;"
	         "INSERT INTO key_versions SELECT id, 1, 1700000000, 'NONE', randomblob(60), x'' "
	         "FROM keys;"
	         "COMMIT;",
	         n, POLICY);
	assert_int_equal(st_raw_exec(dir, sql), SQLITE_OK);
}

static void api_load(hsm_store *s, unsigned n)
{
	uint8_t wrapped[60] = {1};
	for (unsigned i = 1; i <= n; i++) {
		char id[HSM_UUID_STRLEN + 1];
		hsm_key_record k;
		hsm_version_record v;
		st_key_id(id, i);
		st_key(&k, id);
		k.policy = (char *)POLICY;
		st_version(&v, id, 1, wrapped, sizeof(wrapped));
		assert_true(hsm_ok(hsm_store_key_create(s, &k, &v)));
		hsm_version_record_clear(&v);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void get_latency(hsm_store *s, unsigned n)
{
	uint64_t *lat = calloc(GETS, sizeof(*lat));
	assert_non_null(lat);
	for (int i = 0; i < GETS; i++) {
		char id[HSM_UUID_STRLEN + 1];
		hsm_key_record k = {0};
		st_key_id(id, 1 + random_below(n));
		uint64_t t0 = hsm_mono_ns();
		hsm_result r = hsm_store_key_get(s, id, &k);
		lat[i] = hsm_mono_ns() - t0;
		assert_true(hsm_ok(r));
		assert_string_equal(k.key_id, id);
		hsm_key_record_clear(&k);
	}
	qsort(lat, GETS, sizeof(*lat), cmp_u64);
	print_message("key_get, %u keys, 1 thread: p50 %.1f us, p99 %.1f us, max %.1f us (%d gets)\n",
	              n, lat[GETS / 2] / 1e3, lat[GETS * 99 / 100] / 1e3, lat[GETS - 1] / 1e3, GETS);
	free(lat);
}

typedef struct load {
	hsm_store *s;
	unsigned n;
	atomic_bool stop;
	atomic_long gets;
	atomic_int failures;
} load;

static void *reader(void *arg)
{
	load *l = arg;
	while (!atomic_load(&l->stop)) {
		char id[HSM_UUID_STRLEN + 1];
		hsm_key_record k = {0};
		st_key_id(id, 1 + random_below(l->n));
		if (hsm_failed(hsm_store_key_get(l->s, id, &k)) || strcmp(k.key_id, id) != 0)
			atomic_fetch_add(&l->failures, 1);
		hsm_key_record_clear(&k);
		atomic_fetch_add(&l->gets, 1);
	}
	return NULL;
}

static void create_range(hsm_store *s, unsigned first, unsigned count, atomic_int *failures)
{
	uint8_t wrapped[60] = {2};
	for (unsigned i = first; i < first + count; i++) {
		char id[HSM_UUID_STRLEN + 1];
		hsm_key_record k;
		hsm_version_record v;
		st_key_id(id, i);
		st_key(&k, id);
		k.policy = (char *)POLICY;
		st_version(&v, id, 1, wrapped, sizeof(wrapped));
		if (hsm_failed(hsm_store_key_create(s, &k, &v)))
			atomic_fetch_add(failures, 1);
		hsm_version_record_clear(&v);
	}
}

static void *writer(void *arg)
{
	load *l = arg;
	create_range(l->s, l->n + 1 + CREATES, CREATES, &l->failures);
	return NULL;
}

static void create_throughput(hsm_store *s, unsigned n)
{
	atomic_int failures = 0;
	uint64_t t0 = hsm_mono_ns();
	create_range(s, n + 1, CREATES, &failures);
	double secs = (double)(hsm_mono_ns() - t0) / 1e9;
	assert_int_equal(atomic_load(&failures), 0);
	print_message("key_create, %u keys, 1 thread: %.0f creates/s (%.2f ms each, durable)\n", n,
	              CREATES / secs, secs * 1e3 / CREATES);
}

static void concurrent_reads(hsm_store *s, unsigned n)
{
	load l = {.s = s, .n = n};
	pthread_t r[READERS], w;
	uint64_t t0 = hsm_mono_ns();
	for (int i = 0; i < READERS; i++)
		assert_int_equal(pthread_create(&r[i], NULL, reader, &l), 0);
	assert_int_equal(pthread_create(&w, NULL, writer, &l), 0);
	pthread_join(w, NULL);
	double secs = (double)(hsm_mono_ns() - t0) / 1e9;
	atomic_store(&l.stop, true);
	for (int i = 0; i < READERS; i++)
		pthread_join(r[i], NULL);
	assert_int_equal(atomic_load(&l.failures), 0);
	print_message("key_get, %u keys, %d threads while 1 thread creates: %.0f gets/s; "
	              "creates meanwhile: %.0f/s\n",
	              n, READERS, (double)atomic_load(&l.gets) / secs, CREATES / secs);
}

static hsm_result count_cb(const hsm_key_record *k, void *arg)
{
	(void)k;
	(*(size_t *)arg)++;
	return HSM_SUCCESS;
}

static void other_latencies(hsm_store *s, unsigned n)
{
	char after[HSM_UUID_STRLEN + 1];
	size_t seen = 0;
	bool truncated = false;
	st_key_id(after, n / 2);
	uint64_t t0 = hsm_mono_ns();
	assert_true(hsm_ok(hsm_store_key_list(s, after, 100, false, count_cb, &seen, &truncated)));
	uint64_t t1 = hsm_mono_ns();
	assert_int_equal(seen, 100);
	assert_true(truncated);
	seen = 0;
	assert_true(hsm_ok(hsm_store_keys_due(s, 1700000000 + (int64_t)n, 100, count_cb, &seen)));
	uint64_t t2 = hsm_mono_ns();
	uint64_t count = 0;
	assert_true(hsm_ok(hsm_store_key_count(s, &count)));
	uint64_t t3 = hsm_mono_ns();
	assert_true(count >= n);
	print_message("key_list page of 100 from the middle: %.0f us; keys_due (limit 100, %zu due): "
	              "%.0f us; key_count (%llu): %.1f ms\n",
	              (t1 - t0) / 1e3, seen, (t2 - t1) / 1e3, (unsigned long long)count,
	              (t3 - t2) / 1e6);
}

static void test_scale(void **state)
{
	(void)state;
	unsigned n = scale();
	char dir[PATH_MAX];
	hsm_store *s = NULL;
	st_tmpdir(dir);
	assert_true(hsm_ok(hsm_store_open(dir, &s)));
	uint64_t t0 = hsm_mono_ns();
	if (n <= 10000) {
		api_load(s, n);
	} else {
		hsm_store_close(s);
		bulk_load(dir, n);
		assert_true(hsm_ok(hsm_store_open(dir, &s)));
	}
	print_message("loaded %u keys in %.1f s (%s)\n", n, (double)(hsm_mono_ns() - t0) / 1e9,
	              n <= 10000 ? "through key_create" : "bulk SQL");
	get_latency(s, n);
	create_throughput(s, n);
	concurrent_reads(s, n);
	other_latencies(s, n);
	hsm_store_close(s);
	st_rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scale),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
