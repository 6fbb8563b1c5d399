/*
 * store_usage_test.c - each key's last use (store.h, GetKeyLastUsage): a
 * use recorded and read back, a later use replacing an earlier one and
 * never the reverse (nodes flush in any order), a batch in one transaction,
 * the argument rules, when the store began recording, the schema step
 * that adds the tables to an older store, and copies and snapshots, which
 * carry no uses.  SQLite unless HSM_TEST_STORE=pg
 * (store_test_util.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/stat.h>
#include <time.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

#define T0 1764567890000LL

static hsm_key_usage_record use(unsigned key, const char *op, int64_t ms, unsigned req)
{
	hsm_key_usage_record u;
	memset(&u, 0, sizeof(u));
	st_key_id(u.key_id, key);
	snprintf(u.operation, sizeof(u.operation), "%s", op);
	u.used_ms = ms;
	st_key_id(u.request_id, 1000 + req);
	return u;
}

static void expect_use(hsm_store *s, unsigned key, const char *op, int64_t ms, unsigned req)
{
	hsm_key_usage_record want = use(key, op, ms, req), got;
	memset(&got, 0, sizeof(got));
	EXPECT_OK(hsm_store_usage_get(s, want.key_id, &got));
	assert_string_equal(got.key_id, want.key_id);
	assert_string_equal(got.operation, op);
	assert_int_equal(got.used_ms, ms);
	assert_string_equal(got.request_id, want.request_id);
}

static void expect_none(hsm_store *s, unsigned key)
{
	char id[HSM_UUID_STRLEN + 1];
	hsm_key_usage_record got;
	memset(&got, 0x5a, sizeof(got));
	st_key_id(id, key);
	EXPECT_ERR(hsm_store_usage_get(s, id, &got), HSM_ERR_NOT_FOUND);
	assert_int_equal(got.used_ms, 0x5a5a5a5a5a5a5a5aLL); /* untouched on failure */
}

static void test_recorded_and_read_back(void **state)
{
	st_fixture *f = *state;
	expect_none(f->s, 1);
	hsm_key_usage_record u = use(1, "Encrypt", T0, 1);
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &u));
	expect_use(f->s, 1, "Encrypt", T0, 1);
	expect_none(f->s, 2);
	/* It is durable: a reopened store still has it. */
	st_reopen(f);
	expect_use(f->s, 1, "Encrypt", T0, 1);
	/* Text goes in and out as given, whatever PostgreSQL's array syntax makes of it. */
	hsm_key_usage_record odd = use(7, "Sign", T0 + 1, 7), got;
	snprintf(odd.key_id, sizeof(odd.key_id), "k\"1\\,{} NULL");
	snprintf(odd.operation, sizeof(odd.operation), "NULL");
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &odd));
	memset(&got, 0, sizeof(got));
	EXPECT_OK(hsm_store_usage_get(f->s, odd.key_id, &got));
	assert_string_equal(got.key_id, odd.key_id);
	assert_string_equal(got.operation, "NULL");
	assert_string_equal(got.request_id, odd.request_id);
	/* An identifier no key can have names no use. */
	EXPECT_ERR(hsm_store_usage_get(f->s, "", &u), HSM_ERR_NOT_FOUND);
	char longer[HSM_UUID_STRLEN + 8];
	memset(longer, 'a', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	EXPECT_ERR(hsm_store_usage_get(f->s, longer, &u), HSM_ERR_NOT_FOUND);
}

static void test_only_a_later_use_replaces(void **state)
{
	st_fixture *f = *state;
	hsm_key_usage_record u = use(1, "Sign", T0 + 500, 1);
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &u));
	/* Another node's older use, flushed after: the stored one stays. */
	u = use(1, "Decrypt", T0 + 100, 2);
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &u));
	expect_use(f->s, 1, "Sign", T0 + 500, 1);
	/* A use at the same millisecond replaces it; a later one does. */
	u = use(1, "Verify", T0 + 500, 3);
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &u));
	expect_use(f->s, 1, "Verify", T0 + 500, 3);
	u = use(1, "GenerateMac", T0 + 900, 4);
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &u));
	expect_use(f->s, 1, "GenerateMac", T0 + 900, 4);
}

static void test_batch(void **state)
{
	st_fixture *f = *state;
	enum { N = 300 };
	static hsm_key_usage_record batch[N];
	for (unsigned i = 0; i < N; i++)
		batch[i] = use(i, i % 2 ? "Encrypt" : "GenerateDataKeyPairWithoutPlaintext", T0 + i, i);
	EXPECT_OK(hsm_store_usage_put(f->s, N, batch));
	for (unsigned i = 0; i < N; i += 37)
		expect_use(f->s, i, i % 2 ? "Encrypt" : "GenerateDataKeyPairWithoutPlaintext", T0 + i, i);
	expect_use(f->s, N - 1, "Encrypt", T0 + N - 1, N - 1);
	/* A batch with one record the store cannot hold writes none of them. */
	batch[0] = use(0, "Decrypt", T0 + 5000, 7);
	batch[1] = use(N + 1, "Decrypt", T0 + 5000, 8);
	batch[2] = use(N + 2, "", T0 + 5000, 9);
	EXPECT_ERR(hsm_store_usage_put(f->s, 3, batch), HSM_ERR_VALIDATION);
	expect_use(f->s, 0, "GenerateDataKeyPairWithoutPlaintext", T0, 0);
	expect_none(f->s, N + 1);
}

static void test_validation(void **state)
{
	st_fixture *f = *state;
	hsm_key_usage_record u = use(1, "Encrypt", 0, 1);
	EXPECT_ERR(hsm_store_usage_put(f->s, 1, &u), HSM_ERR_VALIDATION);
	u = use(1, "Encrypt", -5, 1);
	EXPECT_ERR(hsm_store_usage_put(f->s, 1, &u), HSM_ERR_VALIDATION);
	u = use(1, "", T0, 1);
	EXPECT_ERR(hsm_store_usage_put(f->s, 1, &u), HSM_ERR_VALIDATION);
	u = use(1, "Encrypt", T0, 1);
	u.key_id[0] = '\0';
	EXPECT_ERR(hsm_store_usage_put(f->s, 1, &u), HSM_ERR_VALIDATION);
	u = use(1, "Encrypt", T0, 1);
	memset(u.operation, 'x', sizeof(u.operation)); /* no terminator */
	EXPECT_ERR(hsm_store_usage_put(f->s, 1, &u), HSM_ERR_VALIDATION);
	expect_none(f->s, 1);
}

/*
 * The second of the precise clock, the one SQLite's 'now' and PostgreSQL's
 * now() read.  time() may read the kernel's coarse clock instead, up to a
 * tick behind it: a bound from time() holds only below a store's time.
 */
static int64_t precise_now(void)
{
	struct timespec ts;
	assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts), 0);
	return (int64_t)ts.tv_sec;
}

static void test_since(void **state)
{
	st_fixture *f = *state;
	/* The fixture's store was created just now. */
	int64_t since = 0, now = precise_now();
	EXPECT_OK(hsm_store_usage_since(f->s, &since));
	assert_true(since <= now && since >= now - 120);
	/* It is the store's, not the opening's: the same after a reopen. */
	sleep(1);
	st_reopen(f);
	int64_t again = 0;
	EXPECT_OK(hsm_store_usage_since(f->s, &again));
	assert_int_equal(again, since);
}

/* A store written before uses were recorded begins recording when it is opened. */
static void test_added_to_an_older_store(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k1", "w", 1);
	st_schema_before_usage(f);
	sleep(1);
	int64_t before = (int64_t)time(NULL);
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	int latest = st_is_pg() ? hsm_store_pg_schema_latest() : hsm_store_sqlite_schema_latest();
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	int64_t since = 0;
	EXPECT_OK(hsm_store_usage_since(f->s, &since));
	assert_true(since >= before && since <= precise_now());
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(f->s, "k1", &k));
	hsm_key_record_clear(&k);
	expect_none(f->s, 1);
	hsm_key_usage_record u = use(1, "Sign", T0, 1);
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &u));
	st_reopen(f);
	expect_use(f->s, 1, "Sign", T0, 1);
}

/* A copy (a restore, a move to PostgreSQL) carries no uses and begins its own record. */
static void test_copy_begins_afresh(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k1", "w", 1);
	hsm_key_usage_record u = use(1, "Sign", T0, 1);
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &u));
	st_fixture dst;
	memset(&dst, 0, sizeof(dst));
	st_fresh_location(&dst);
	EXPECT_OK(hsm_store_open(dst.loc, &dst.s));
	EXPECT_OK(hsm_store_copy(f->s, dst.s));
	expect_none(dst.s, 1);
	int64_t a = 0, b = 0;
	EXPECT_OK(hsm_store_usage_since(f->s, &a));
	EXPECT_OK(hsm_store_usage_since(dst.s, &b));
	assert_true(b >= a);
	hsm_store_close(dst.s);
	st_release_location(&dst);
}

/*
 * A snapshot (what a backup holds) carries no uses and no tracking start:
 * the store restored from it begins recording when it is first opened.
 */
static void test_snapshot_begins_afresh(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k1", "w", 1);
	hsm_key_usage_record u = use(1, "Sign", T0, 1);
	EXPECT_OK(hsm_store_usage_put(f->s, 1, &u));
	int64_t a = 0;
	EXPECT_OK(hsm_store_usage_since(f->s, &a));
	char snapdir[PATH_MAX], file[PATH_MAX];
	st_path(snapdir, f->dir, "snap");
	assert_int_equal(mkdir(snapdir, 0700), 0);
	st_path(file, snapdir, HSM_STORE_DB_FILE);
	EXPECT_OK(hsm_store_snapshot(f->s, file));
	assert_int_equal(st_raw_int(snapdir, "SELECT count(*) FROM key_usage"), 0);
	assert_int_equal(st_raw_int(snapdir, "SELECT count(*) FROM usage_tracking"), 0);
	sleep(1);
	int64_t before = (int64_t)time(NULL);
	hsm_store *snap = NULL;
	EXPECT_OK(hsm_store_open(snapdir, &snap));
	expect_none(snap, 1);
	int64_t b = 0;
	EXPECT_OK(hsm_store_usage_since(snap, &b));
	assert_true(b >= before && b > a);
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(snap, "k1", &k));
	hsm_key_record_clear(&k);
	hsm_store_close(snap);
	/* The source keeps both. */
	expect_use(f->s, 1, "Sign", T0, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_recorded_and_read_back, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_only_a_later_use_replaces, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_batch, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_validation, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_since, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_added_to_an_older_store, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_copy_begins_afresh, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_begins_afresh, st_setup, st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
