/*
 * store_principals_test.c - users, authentication counters and access keys
 * (store.h) on the SQLite backend.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>

#include "store/store.h"
#include "store_test_util.h"

static void user(hsm_user_record *u, const char *name, hsm_role role)
{
	memset(u, 0, sizeof(*u));
	snprintf(u->name, sizeof(u->name), "%s", name);
	u->roles = 1U << role;
	u->created = 1700000000;
}

/* ---- Users --------------------------------------------------------------------------- */

typedef struct seen {
	char names[8][HSM_USER_NAME_MAX + 1];
	size_t n;
} seen;

static hsm_result collect_user(const hsm_user_record *u, void *arg)
{
	seen *s = arg;
	assert_true(s->n < 8);
	snprintf(s->names[s->n++], sizeof(s->names[0]), "%s", u->name);
	return HSM_SUCCESS;
}

static void test_user_crud(void **state)
{
	st_fixture *f = *state;
	hsm_user_record u, got;
	user(&u, "olivia", HSM_ROLE_CRYPTO_OFFICER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	EXPECT_ERR(hsm_store_user_create(f->s, &u), HSM_ERR_ALREADY_EXISTS);
	user(&u, "aaron", HSM_ROLE_AUDITOR);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	/* A name equal to one held ignoring case is taken too, and names the user held. */
	for (size_t i = 0; i < 2; i++) {
		user(&u, i == 0 ? "Olivia" : "AARON", HSM_ROLE_CUSTODIAN);
		EXPECT_ERR(hsm_store_user_create(f->s, &u), HSM_ERR_ALREADY_EXISTS);
		assert_string_equal(hsm_last_message(),
		                    i == 0 ? "user olivia already exists (user names are unique "
		                             "regardless of case)"
		                           : "user aaron already exists (user names are unique "
		                             "regardless of case)");
		EXPECT_ERR(hsm_store_user_get(f->s, u.name, &got), HSM_ERR_NOT_FOUND);
	}
	user(&u, "", HSM_ROLE_AUDITOR);
	EXPECT_ERR(hsm_store_user_create(f->s, &u), HSM_ERR_VALIDATION);

	EXPECT_OK(hsm_store_user_get(f->s, "olivia", &got));
	assert_string_equal(got.name, "olivia");
	assert_int_equal(got.roles, 1U << HSM_ROLE_CRYPTO_OFFICER);
	assert_false(got.disabled);
	assert_false(got.locked);
	assert_int_equal(got.failed_auth, 0);
	assert_int_equal(got.created, 1700000000);
	EXPECT_ERR(hsm_store_user_get(f->s, "nobody", &got), HSM_ERR_NOT_FOUND);

	/* put replaces the mutable fields, never created. */
	user(&u, "olivia", HSM_ROLE_CRYPTO_USER);
	u.disabled = true;
	u.locked = true;
	u.failed_auth = 4;
	u.created = 5;
	EXPECT_OK(hsm_store_user_put(f->s, &u));
	st_reopen(f);
	EXPECT_OK(hsm_store_user_get(f->s, "olivia", &got));
	assert_int_equal(got.roles, 1U << HSM_ROLE_CRYPTO_USER);
	assert_true(got.disabled);
	assert_true(got.locked);
	assert_int_equal(got.failed_auth, 4);
	assert_int_equal(got.created, 1700000000);
	user(&u, "nobody", HSM_ROLE_CRYPTO_USER);
	EXPECT_ERR(hsm_store_user_put(f->s, &u), HSM_ERR_NOT_FOUND);

	seen s = {0};
	EXPECT_OK(hsm_store_user_list(f->s, collect_user, &s));
	assert_int_equal(s.n, 2);
	assert_string_equal(s.names[0], "aaron");
	assert_string_equal(s.names[1], "olivia");
}

static void test_auth_result_counts_and_locks(void **state)
{
	st_fixture *f = *state;
	hsm_user_record u, got;
	user(&u, "carol", HSM_ROLE_CRYPTO_USER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	EXPECT_OK(hsm_store_user_auth_result(f->s, "carol", false, 3, &got, NULL));
	assert_int_equal(got.failed_auth, 1);
	assert_false(got.locked);
	EXPECT_OK(hsm_store_user_auth_result(f->s, "carol", true, 3, &got, NULL));
	assert_int_equal(got.failed_auth, 0); /* success resets */
	EXPECT_OK(hsm_store_user_auth_result(f->s, "carol", false, 3, NULL, NULL));
	EXPECT_OK(hsm_store_user_auth_result(f->s, "carol", false, 3, &got, NULL));
	assert_int_equal(got.failed_auth, 2);
	assert_false(got.locked);
	st_reopen(f); /* the count survives a restart */
	EXPECT_OK(hsm_store_user_get(f->s, "carol", &got));
	assert_int_equal(got.failed_auth, 2);
	bool now = false;
	EXPECT_OK(hsm_store_user_auth_result(f->s, "carol", false, 3, &got, &now));
	assert_int_equal(got.failed_auth, 3);
	assert_true(got.locked); /* at the threshold */
	assert_true(now);
	/* A failure counted on a locked user (one in flight as it locked) did not lock it. */
	EXPECT_OK(hsm_store_user_auth_result(f->s, "carol", false, 3, &got, &now));
	assert_true(got.locked);
	assert_false(now);
	st_reopen(f);
	EXPECT_OK(hsm_store_user_get(f->s, "carol", &got));
	assert_true(got.locked);
	/* A success resets the counter but does not unlock. */
	EXPECT_OK(hsm_store_user_auth_result(f->s, "carol", true, 3, &got, NULL));
	assert_int_equal(got.failed_auth, 0);
	assert_true(got.locked);

	/* A threshold lowered below the count: the next failure locks, and says so once. */
	user(&u, "fred", HSM_ROLE_CRYPTO_USER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	for (int i = 0; i < 3; i++) {
		EXPECT_OK(hsm_store_user_auth_result(f->s, "fred", false, 5, &got, &now));
		assert_false(now);
	}
	EXPECT_OK(hsm_store_user_auth_result(f->s, "fred", false, 2, &got, &now));
	assert_int_equal(got.failed_auth, 4);
	assert_true(got.locked && now);
	EXPECT_OK(hsm_store_user_auth_result(f->s, "fred", false, 2, &got, &now));
	assert_true(got.locked && !now);

	/* lock_after 0 never locks. */
	user(&u, "dave", HSM_ROLE_CRYPTO_USER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	for (int i = 0; i < 10; i++)
		EXPECT_OK(hsm_store_user_auth_result(f->s, "dave", false, 0, &got, NULL));
	assert_int_equal(got.failed_auth, 10);
	assert_false(got.locked);
	/* The counter saturates instead of wrapping. */
	u.failed_auth = UINT32_MAX;
	EXPECT_OK(hsm_store_user_put(f->s, &u));
	EXPECT_OK(hsm_store_user_auth_result(f->s, "dave", false, 0, &got, NULL));
	assert_int_equal(got.failed_auth, UINT32_MAX);
	EXPECT_ERR(hsm_store_user_auth_result(f->s, "nobody", false, 3, &got, NULL), HSM_ERR_NOT_FOUND);
}

/*
 * Concurrent failures across the threshold, through two handles on PostgreSQL
 * (two nodes): exactly one reports that it locked the user (UserLocked once).
 * Odd rounds start above a threshold lowered since (no failure's count equals
 * it): the one that locks says so all the same.
 */
#define LOCK_THREADS 8
#define LOCK_ROUNDS 30
typedef struct lock_run {
	hsm_store *s;
	const char *name;
	pthread_barrier_t *start;
	atomic_int *locked_now, *failures;
} lock_run;

static void *lock_worker(void *arg)
{
	lock_run *r = arg;
	pthread_barrier_wait(r->start);
	bool now = false;
	if (hsm_failed(hsm_store_user_auth_result(r->s, r->name, false, 3, NULL, &now)))
		atomic_fetch_add(r->failures, 1);
	else if (now)
		atomic_fetch_add(r->locked_now, 1);
	return NULL;
}

static void test_concurrent_failures_lock_once(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[2] = {f->s, NULL};
	bool second = st_is_pg() && hsm_ok(hsm_store_open(f->loc, &nodes[1]));
	if (!second)
		nodes[1] = f->s; /* SQLite: one handle, its writes serialized */
	int bad = 0;
	for (int round = 0; round < LOCK_ROUNDS; round++) {
		char name[32];
		snprintf(name, sizeof(name), "racer%d", round);
		hsm_user_record u;
		user(&u, name, HSM_ROLE_CRYPTO_USER);
		EXPECT_OK(hsm_store_user_create(f->s, &u));
		/* Two failures already (the next one locks), or four under a threshold of 10. */
		int before = round % 2 ? 4 : 2;
		for (int i = 0; i < before; i++)
			EXPECT_OK(hsm_store_user_auth_result(f->s, name, false, round % 2 ? 10 : 3, NULL,
			                                     NULL));
		pthread_barrier_t start;
		pthread_barrier_init(&start, NULL, LOCK_THREADS);
		atomic_int locked_now = 0, failures = 0;
		lock_run runs[LOCK_THREADS];
		pthread_t th[LOCK_THREADS];
		for (int i = 0; i < LOCK_THREADS; i++) {
			runs[i] = (lock_run){nodes[i % 2], name, &start, &locked_now, &failures};
			assert_int_equal(pthread_create(&th[i], NULL, lock_worker, &runs[i]), 0);
		}
		for (int i = 0; i < LOCK_THREADS; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&start);
		hsm_user_record got;
		EXPECT_OK(hsm_store_user_get(f->s, name, &got));
		if (atomic_load(&locked_now) != 1 || atomic_load(&failures) != 0 || !got.locked ||
		    got.failed_auth != (uint32_t)(before + LOCK_THREADS)) {
			print_message("round %d: locked_now=%d failures=%d locked=%d count=%u\n", round,
			              atomic_load(&locked_now), atomic_load(&failures), got.locked,
			              got.failed_auth);
			bad++;
		}
	}
	if (second)
		hsm_store_close(nodes[1]);
	assert_int_equal(bad, 0);
}

/* Each change writes its own columns: a lockout and a DisableUser made meanwhile both stay. */
static void test_user_changes_touch_their_columns_only(void **state)
{
	st_fixture *f = *state;
	hsm_user_record u, got;
	user(&u, "erin", HSM_ROLE_CRYPTO_USER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	for (int i = 0; i < 3; i++)
		EXPECT_OK(hsm_store_user_auth_result(f->s, "erin", false, 3, NULL, NULL));
	/* Disabling (an officer who read the user before the lockout) keeps the lockout. */
	EXPECT_OK(hsm_store_user_change(f->s, "erin", HSM_USER_DISABLE));
	EXPECT_OK(hsm_store_user_get(f->s, "erin", &got));
	assert_true(got.disabled && got.locked);
	assert_int_equal(got.failed_auth, 3);
	/* Unlocking (an officer who read the user before it was disabled) keeps it disabled. */
	EXPECT_OK(hsm_store_user_change(f->s, "erin", HSM_USER_UNLOCK));
	EXPECT_OK(hsm_store_user_get(f->s, "erin", &got));
	assert_true(got.disabled);
	assert_false(got.locked);
	assert_int_equal(got.failed_auth, 0);
	EXPECT_OK(hsm_store_user_auth_result(f->s, "erin", false, 3, NULL, NULL));
	EXPECT_OK(hsm_store_user_change(f->s, "erin", HSM_USER_ENABLE));
	st_reopen(f);
	EXPECT_OK(hsm_store_user_get(f->s, "erin", &got));
	assert_false(got.disabled || got.locked);
	assert_int_equal(got.failed_auth, 1); /* the failure counted meanwhile stays */
	assert_int_equal(got.roles, 1U << HSM_ROLE_CRYPTO_USER);
	EXPECT_ERR(hsm_store_user_change(f->s, "nobody", HSM_USER_UNLOCK), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_user_change(f->s, "erin", (hsm_user_change)7), HSM_ERR_VALIDATION);
}

/* ---- Access keys ------------------------------------------------------------------------ */

typedef struct aks {
	char ids[8][HSM_ACCESS_KEY_ID_LEN + 1];
	size_t n;
} aks;

static hsm_result collect_ak(const hsm_access_key_record *k, void *arg)
{
	aks *a = arg;
	assert_true(a->n < 8);
	snprintf(a->ids[a->n++], sizeof(a->ids[0]), "%s", k->access_key_id);
	return HSM_SUCCESS;
}

static void access_key(hsm_access_key_record *k, const char *id, const char *u)
{
	memset(k, 0, sizeof(*k));
	snprintf(k->access_key_id, sizeof(k->access_key_id), "%s", id);
	snprintf(k->user, sizeof(k->user), "%s", u);
	k->active = true;
	k->created = 1700000100;
	if (hsm_failed(hsm_buf_set(&k->wrapped_secret, "sealed-secret", 13)))
		abort();
}

static void test_access_keys(void **state)
{
	st_fixture *f = *state;
	hsm_user_record u;
	user(&u, "olivia", HSM_ROLE_CRYPTO_OFFICER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	user(&u, "ulrich", HSM_ROLE_CRYPTO_USER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));

	hsm_access_key_record k, got = {0};
	access_key(&k, "AKIAZZZZZZZZZZZZZZZ1", "ulrich");
	EXPECT_OK(hsm_store_access_key_create(f->s, &k));
	EXPECT_ERR(hsm_store_access_key_create(f->s, &k), HSM_ERR_ALREADY_EXISTS);
	hsm_access_key_record_clear(&k);
	access_key(&k, "AKIAAAAAAAAAAAAAAAA2", "olivia");
	EXPECT_OK(hsm_store_access_key_create(f->s, &k));
	hsm_access_key_record_clear(&k);
	access_key(&k, "AKIAMMMMMMMMMMMMMMM3", "ulrich");
	EXPECT_OK(hsm_store_access_key_create(f->s, &k));
	hsm_access_key_record_clear(&k);
	access_key(&k, "AKIAXXXXXXXXXXXXXXX4", "nobody");
	EXPECT_ERR(hsm_store_access_key_create(f->s, &k), HSM_ERR_NOT_FOUND);
	hsm_access_key_record_clear(&k);

	st_reopen(f);
	EXPECT_OK(hsm_store_access_key_get(f->s, "AKIAZZZZZZZZZZZZZZZ1", &got));
	assert_string_equal(got.user, "ulrich");
	assert_true(got.active);
	assert_int_equal(got.created, 1700000100);
	assert_int_equal(got.wrapped_secret.len, 13);
	assert_memory_equal(got.wrapped_secret.data, "sealed-secret", 13);
	hsm_access_key_record_clear(&got);
	EXPECT_ERR(hsm_store_access_key_get(f->s, "AKIAXXXXXXXXXXXXXXX4", &got), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_access_key_get(f->s, "AKIA-much-too-long-to-be-an-id", &got),
	           HSM_ERR_NOT_FOUND);

	EXPECT_OK(hsm_store_access_key_set_active(f->s, "AKIAZZZZZZZZZZZZZZZ1", false));
	EXPECT_OK(hsm_store_access_key_get(f->s, "AKIAZZZZZZZZZZZZZZZ1", &got));
	assert_false(got.active);
	hsm_access_key_record_clear(&got);
	EXPECT_ERR(hsm_store_access_key_set_active(f->s, "AKIAXXXXXXXXXXXXXXX4", true),
	           HSM_ERR_NOT_FOUND);

	aks all = {0}, mine = {0};
	EXPECT_OK(hsm_store_access_key_list(f->s, NULL, collect_ak, &all));
	assert_int_equal(all.n, 3);
	assert_string_equal(all.ids[0], "AKIAAAAAAAAAAAAAAAA2");
	assert_string_equal(all.ids[1], "AKIAMMMMMMMMMMMMMMM3");
	assert_string_equal(all.ids[2], "AKIAZZZZZZZZZZZZZZZ1");
	EXPECT_OK(hsm_store_access_key_list(f->s, "ulrich", collect_ak, &mine));
	assert_int_equal(mine.n, 2);
	assert_string_equal(mine.ids[0], "AKIAMMMMMMMMMMMMMMM3");
	assert_string_equal(mine.ids[1], "AKIAZZZZZZZZZZZZZZZ1");
	EXPECT_ERR(hsm_store_access_key_list(f->s, "nobody", collect_ak, &mine), HSM_ERR_NOT_FOUND);
}

typedef struct key_run {
	hsm_store *s;
	int n;
	pthread_barrier_t *start;
	atomic_int *made, *refused;
} key_run;

static void *key_worker(void *arg)
{
	key_run *r = arg;
	char id[32];
	hsm_access_key_record k;
	snprintf(id, sizeof(id), "AKIARACE%012d", r->n);
	access_key(&k, id, "many");
	pthread_barrier_wait(r->start);
	hsm_err e = hsm_store_access_key_create(r->s, &k).err;
	atomic_fetch_add(e == HSM_OK ? r->made : r->refused, e == HSM_OK || e == HSM_ERR_LIMIT_EXCEEDED);
	hsm_access_key_record_clear(&k);
	return NULL;
}

/*
 * A user holds at most HSM_ACCESS_KEYS_PER_USER active keys: creators racing for the last
 * places (on PostgreSQL from two nodes) land only as many; a revoked key frees its place.
 */
static void test_access_keys_per_user(void **state)
{
	st_fixture *f = *state;
	enum { RACERS = 6 };
	hsm_user_record u;
	user(&u, "many", HSM_ROLE_CRYPTO_USER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	user(&u, "other", HSM_ROLE_CRYPTO_USER);
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	char id[32];
	hsm_access_key_record k;
	for (int i = 0; i < HSM_ACCESS_KEYS_PER_USER - 2; i++) {
		snprintf(id, sizeof(id), "AKIAMANY%012d", i);
		access_key(&k, id, "many");
		EXPECT_OK(hsm_store_access_key_create(f->s, &k));
		hsm_access_key_record_clear(&k);
	}
	hsm_store *nodes[2] = {f->s, NULL};
	bool second = st_is_pg() && hsm_ok(hsm_store_open(f->loc, &nodes[1]));
	if (!second)
		nodes[1] = f->s;
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, RACERS);
	atomic_int made = 0, refused = 0;
	key_run runs[RACERS];
	pthread_t th[RACERS];
	for (int i = 0; i < RACERS; i++) {
		runs[i] = (key_run){nodes[i % 2], i, &start, &made, &refused};
		assert_int_equal(pthread_create(&th[i], NULL, key_worker, &runs[i]), 0);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&start);
	if (second)
		hsm_store_close(nodes[1]);
	assert_int_equal(atomic_load(&made), 2);
	assert_int_equal(atomic_load(&refused), RACERS - 2);

	access_key(&k, "AKIAMANYEXTRA0000001", "many");
	EXPECT_ERR(hsm_store_access_key_create(f->s, &k), HSM_ERR_LIMIT_EXCEEDED);
	hsm_access_key_record_clear(&k);
	access_key(&k, "AKIAOTHER00000000001", "other"); /* another user's are apart */
	EXPECT_OK(hsm_store_access_key_create(f->s, &k));
	hsm_access_key_record_clear(&k);
	EXPECT_OK(hsm_store_access_key_set_active(f->s, "AKIAMANY000000000000", false));
	access_key(&k, "AKIAMANYEXTRA0000001", "many");
	EXPECT_OK(hsm_store_access_key_create(f->s, &k));
	hsm_access_key_record_clear(&k);
	access_key(&k, "AKIAMANYEXTRA0000002", "many");
	EXPECT_ERR(hsm_store_access_key_create(f->s, &k), HSM_ERR_LIMIT_EXCEEDED);
	hsm_access_key_record_clear(&k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_user_crud, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_auth_result_counts_and_locks, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_failures_lock_once, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_user_changes_touch_their_columns_only, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_access_keys, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_access_keys_per_user, st_setup, st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
