/*
 * store_concurrency_test.c - the store under several threads at once: no lost
 * updates through key_update, racing rotations resolved by CONFLICT (generated
 * material, and imported material through set_material and promote), atomic
 * authentication counters, readers that keep working (and see whole
 * records) while writers commit, and one user per name regardless of case.
 *
 * cmocka's assertions are not thread-safe, so worker threads count failures
 * and the main thread asserts on the counts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "store/store.h"
#include "store_test_util.h"

#define WRITERS 8
#define INCREMENTS 40
#define READERS 3

typedef struct shared {
	hsm_store *s;
	atomic_int failures;
	atomic_int conflicts;
	atomic_int reads;
	atomic_bool stop;
	char first_error[HSM_ERRMSG_MAX];
	pthread_mutex_t error_lock;
} shared;

static void note_failure(shared *sh, const char *what)
{
	if (atomic_fetch_add(&sh->failures, 1) == 0) {
		pthread_mutex_lock(&sh->error_lock);
		snprintf(sh->first_error, sizeof(sh->first_error), "%s: %s (%s)", what,
		         hsm_err_code_name(hsm_last_error()->err), hsm_last_message());
		pthread_mutex_unlock(&sh->error_lock);
	}
}

static hsm_result increment(hsm_key_record *k, void *arg)
{
	(void)arg;
	k->rotation_period_days++;
	k->updated++;
	return HSM_SUCCESS;
}

static void *increment_worker(void *arg)
{
	shared *sh = arg;
	for (int i = 0; i < INCREMENTS; i++) {
		if (hsm_failed(hsm_store_key_update(sh->s, "counter", increment, NULL, NULL, NULL)))
			note_failure(sh, "key_update");
	}
	return NULL;
}

/* Rotation as a caller does it: read, compute the next version, retry on CONFLICT. */
static void *rotate_worker(void *arg)
{
	shared *sh = arg;
	for (int done = 0; done < 5;) {
		hsm_key_record k = {0};
		if (hsm_failed(hsm_store_key_get(sh->s, "rotating", &k))) {
			note_failure(sh, "key_get");
			return NULL;
		}
		hsm_version_record v;
		st_version(&v, "rotating", k.primary_version + 1, "next", 4);
		hsm_key_record_clear(&k);
		hsm_result r = hsm_store_key_update(sh->s, "rotating", increment, NULL, &v, NULL);
		hsm_version_record_clear(&v);
		if (r.err == HSM_ERR_CONFLICT)
			atomic_fetch_add(&sh->conflicts, 1);
		else if (hsm_ok(r))
			done++;
		else
			note_failure(sh, "rotate");
	}
	return NULL;
}

static void *auth_worker(void *arg)
{
	shared *sh = arg;
	for (int i = 0; i < INCREMENTS; i++) {
		if (hsm_failed(hsm_store_user_auth_result(sh->s, "eve", false, 0, NULL, NULL)))
			note_failure(sh, "auth_result");
	}
	return NULL;
}

static hsm_result count_key(const hsm_key_record *k, void *arg)
{
	(void)k;
	(*(int *)arg)++;
	return HSM_SUCCESS;
}

/* Readers: every record they see is whole, and the counter only grows. */
static void *read_worker(void *arg)
{
	shared *sh = arg;
	int32_t last = -1;
	while (!atomic_load(&sh->stop)) {
		hsm_key_record k = {0};
		if (hsm_failed(hsm_store_key_get(sh->s, "counter", &k))) {
			note_failure(sh, "reader key_get");
			break;
		}
		if (k.rotation_period_days < last || k.updated != 1700000000 + k.rotation_period_days)
			note_failure(sh, "reader saw a torn or older record");
		last = k.rotation_period_days;
		hsm_key_record_clear(&k);
		int n = 0;
		bool truncated;
		if (hsm_failed(hsm_store_key_list(sh->s, NULL, 100, true, count_key, &n, &truncated)) ||
		    n < 2)
			note_failure(sh, "reader key_list");
		atomic_fetch_add(&sh->reads, 1);
	}
	return NULL;
}

static hsm_result check_version(const hsm_version_record *v, void *arg)
{
	uint32_t *expect = arg;
	if (v->version != ++*expect)
		return HSM_FAIL(HSM_ERR_INTERNAL, "versions are not contiguous");
	return HSM_SUCCESS;
}

static void test_no_lost_updates(void **state)
{
	(void)state;
	st_fixture f = {0};
	st_fresh_location(&f);
	shared sh = {0};
	pthread_mutex_init(&sh.error_lock, NULL);
	assert_true(hsm_ok(hsm_store_open(f.loc, &sh.s)));
	st_create_key(sh.s, "counter", "w", 1);
	st_create_key(sh.s, "rotating", "w", 1);
	hsm_user_record u = {.name = "eve", .roles = 1U << HSM_ROLE_CRYPTO_USER};
	assert_true(hsm_ok(hsm_store_user_create(sh.s, &u)));

	pthread_t readers[READERS], writers[WRITERS], rotators[4], auth[4];
	for (int i = 0; i < READERS; i++)
		assert_int_equal(pthread_create(&readers[i], NULL, read_worker, &sh), 0);
	for (int i = 0; i < WRITERS; i++)
		assert_int_equal(pthread_create(&writers[i], NULL, increment_worker, &sh), 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_create(&rotators[i], NULL, rotate_worker, &sh), 0);
		assert_int_equal(pthread_create(&auth[i], NULL, auth_worker, &sh), 0);
	}
	for (int i = 0; i < WRITERS; i++)
		pthread_join(writers[i], NULL);
	for (int i = 0; i < 4; i++) {
		pthread_join(rotators[i], NULL);
		pthread_join(auth[i], NULL);
	}
	atomic_store(&sh.stop, true);
	for (int i = 0; i < READERS; i++)
		pthread_join(readers[i], NULL);
	if (atomic_load(&sh.failures) != 0)
		fail_msg("%d failures; first: %s", atomic_load(&sh.failures), sh.first_error);

	hsm_key_record k = {0};
	assert_true(hsm_ok(hsm_store_key_get(sh.s, "counter", &k)));
	assert_int_equal(k.rotation_period_days, WRITERS * INCREMENTS);
	hsm_key_record_clear(&k);
	assert_true(hsm_ok(hsm_store_key_get(sh.s, "rotating", &k)));
	assert_int_equal(k.primary_version, 1 + 4 * 5);
	hsm_key_record_clear(&k);
	uint32_t expect = 0;
	assert_true(hsm_ok(hsm_store_version_list(sh.s, "rotating", check_version, &expect)));
	assert_int_equal(expect, 1 + 4 * 5);
	assert_true(hsm_ok(hsm_store_user_get(sh.s, "eve", &u)));
	assert_int_equal(u.failed_auth, 4 * INCREMENTS);
	assert_true(atomic_load(&sh.reads) > 0);
	print_message("reads during writes: %d, rotation conflicts resolved: %d\n",
	              atomic_load(&sh.reads), atomic_load(&sh.conflicts));

	hsm_store_close(sh.s);
	pthread_mutex_destroy(&sh.error_lock);
	st_release_location(&f);
}

/* ---- Imported material rotating: set_material and promote of one key from many threads ---- */

#define IMPORTERS 4
#define IMPORT_ROUNDS 6

typedef struct import_shared {
	shared sh;
	atomic_int promoted;
	atomic_int incorrect; /* set_material found its version in use with other material */
} import_shared;

/* Rotation of imported material as a caller does it: read, import primary+1, promote it. */
static void *import_worker(void *arg)
{
	import_shared *is = arg;
	static atomic_int serial;
	for (int i = 0; i < IMPORT_ROUNDS; i++) {
		hsm_key_record k = {0};
		if (hsm_failed(hsm_store_key_get(is->sh.s, "imported", &k))) {
			note_failure(&is->sh, "key_get");
			return NULL;
		}
		uint32_t next = k.primary_version + 1;
		hsm_key_record_clear(&k);
		/* Material of its own (digest and all), so a lost race shows as other material. */
		char digest[32];
		snprintf(digest, sizeof(digest), "DIGEST-%d", atomic_fetch_add(&serial, 1));
		hsm_version_record v;
		st_version(&v, "imported", next, "next", 4);
		hsm_result r = hsm_buf_set(&v.digest, digest, strlen(digest));
		if (hsm_ok(r))
			r = hsm_store_key_set_material(is->sh.s, "imported", NULL, NULL, &v, NULL);
		hsm_version_record_clear(&v);
		if (r.err == HSM_ERR_INCORRECT_KEY_MATERIAL) {
			atomic_fetch_add(&is->incorrect, 1);
			continue;
		}
		if (hsm_failed(r)) {
			note_failure(&is->sh, "set_material");
			continue;
		}
		r = hsm_store_key_promote(is->sh.s, "imported", next, 1700000000 + next,
		                          HSM_ROTATION_ON_DEMAND, NULL, NULL, NULL);
		if (r.err == HSM_ERR_CONFLICT)
			atomic_fetch_add(&is->sh.conflicts, 1);
		else if (hsm_ok(r))
			atomic_fetch_add(&is->promoted, 1);
		else
			note_failure(&is->sh, "promote");
	}
	return NULL;
}

static hsm_result check_imported_version(const hsm_version_record *v, void *arg)
{
	uint32_t *expect = arg;
	if (v->version != ++*expect)
		return HSM_FAIL(HSM_ERR_INTERNAL, "versions are not contiguous");
	if (v->wrapped.len == 0 || v->digest.len == 0)
		return HSM_FAIL(HSM_ERR_INTERNAL, "version %u holds no imported material", v->version);
	return HSM_SUCCESS;
}

/*
 * Racing imports and promotions of one key serialize on it: each promotion
 * moves the primary version by exactly one, none is lost, and versions stay
 * contiguous, each with material.
 */
static void test_imported_rotations_serialize(void **state)
{
	(void)state;
	st_fixture f = {0};
	st_fresh_location(&f);
	import_shared is = {0};
	pthread_mutex_init(&is.sh.error_lock, NULL);
	assert_true(hsm_ok(hsm_store_open(f.loc, &is.sh.s)));
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, "imported");
	k.origin = HSM_ORIGIN_EXTERNAL;
	st_version(&v, "imported", 1, "first", 5);
	assert_true(hsm_ok(hsm_buf_set(&v.digest, "DIGEST-FIRST", 12)));
	assert_true(hsm_ok(hsm_store_key_create(is.sh.s, &k, &v)));
	hsm_version_record_clear(&v);

	pthread_t workers[IMPORTERS];
	for (int i = 0; i < IMPORTERS; i++)
		assert_int_equal(pthread_create(&workers[i], NULL, import_worker, &is), 0);
	for (int i = 0; i < IMPORTERS; i++)
		pthread_join(workers[i], NULL);
	if (atomic_load(&is.sh.failures) != 0)
		fail_msg("%d failures; first: %s", atomic_load(&is.sh.failures), is.sh.first_error);

	hsm_key_record got = {0};
	assert_true(hsm_ok(hsm_store_key_get(is.sh.s, "imported", &got)));
	int promoted = atomic_load(&is.promoted);
	assert_true(promoted >= 1);
	assert_int_equal(got.primary_version, 1 + (uint32_t)promoted);
	hsm_key_record_clear(&got);
	uint32_t expect = 0;
	assert_true(hsm_ok(hsm_store_version_list(is.sh.s, "imported", check_imported_version,
	                                          &expect)));
	/* At most one version waits beyond the primary one. */
	assert_true(expect == 1 + (uint32_t)promoted || expect == 2 + (uint32_t)promoted);
	print_message("promotions: %d, lost to another promotion: %d, to other material: %d\n",
	              promoted, atomic_load(&is.sh.conflicts), atomic_load(&is.incorrect));

	hsm_store_close(is.sh.s);
	pthread_mutex_destroy(&is.sh.error_lock);
	st_release_location(&f);
}

/* ---- PKCS#11 CKA_ID aliases of one key asked for from many threads at once ---------------- */

#define ID_THREADS 8
#define ID_ROUNDS 5

typedef struct id_shared {
	shared sh;
	pthread_barrier_t start;
	int round;
	bool update; /* move each thread's alias from its own key, rather than create it */
	atomic_int won, refused;
} id_shared;

typedef struct id_worker_arg {
	id_shared *is;
	int n;
} id_worker_arg;

static void id_alias_name(char *out, size_t cap, int round, int n)
{
	snprintf(out, cap, "alias/pkcs11-id/%02x%02x", round, n);
}

static void *id_worker(void *arg)
{
	id_worker_arg *w = arg;
	id_shared *is = w->is;
	char name[64];
	id_alias_name(name, sizeof(name), is->round, w->n);
	pthread_barrier_wait(&is->start);
	hsm_result r = is->update ? hsm_store_alias_update(is->sh.s, name, NULL, "target", 2, NULL)
	                          : hsm_store_alias_create(is->sh.s, name, "target", 2, NULL);
	if (hsm_ok(r))
		atomic_fetch_add(&is->won, 1);
	else if (r.err == HSM_ERR_VALIDATION)
		atomic_fetch_add(&is->refused, 1);
	else
		note_failure(&is->sh, is->update ? "alias_update" : "alias_create");
	return NULL;
}

static hsm_result count_id_alias(const hsm_alias_record *a, void *arg)
{
	char *winner = arg;
	if (strncmp(a->name, "alias/pkcs11-id/", 16) == 0) {
		if (winner[0] != '\0')
			return HSM_FAIL(HSM_ERR_INTERNAL, "a second CKA_ID alias: %s", a->name);
		snprintf(winner, HSM_ALIAS_MAX + 1, "%s", a->name);
	}
	return HSM_SUCCESS;
}

/* Runs one round of ID_THREADS writers; returns the alias the target key holds after it. */
static void id_round(id_shared *is, char winner[HSM_ALIAS_MAX + 1])
{
	pthread_t t[ID_THREADS];
	id_worker_arg w[ID_THREADS];
	atomic_store(&is->won, 0);
	atomic_store(&is->refused, 0);
	pthread_barrier_init(&is->start, NULL, ID_THREADS);
	for (int i = 0; i < ID_THREADS; i++) {
		w[i] = (id_worker_arg){is, i};
		assert_int_equal(pthread_create(&t[i], NULL, id_worker, &w[i]), 0);
	}
	for (int i = 0; i < ID_THREADS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&is->start);
	if (atomic_load(&is->sh.failures) != 0)
		fail_msg("%d failures; first: %s", atomic_load(&is->sh.failures), is->sh.first_error);
	assert_int_equal(atomic_load(&is->won), 1);
	assert_int_equal(atomic_load(&is->refused), ID_THREADS - 1);
	bool more = true;
	winner[0] = '\0';
	EXPECT_OK(hsm_store_alias_list(is->sh.s, "target", NULL, 100, count_id_alias, winner, &more));
	assert_false(more);
	assert_true(winner[0] != '\0');
}

/*
 * Threads that each give one key a different PKCS#11 CKA_ID alias at once,
 * by create or by moving it from a key of its own, leave the key with
 * exactly one: the rule is read in the write that adds the alias.
 */
static void test_one_pkcs11_id_alias_under_concurrency(void **state)
{
	(void)state;
	st_fixture f = {0};
	st_fresh_location(&f);
	id_shared is = {0};
	pthread_mutex_init(&is.sh.error_lock, NULL);
	assert_true(hsm_ok(hsm_store_open(f.loc, &is.sh.s)));
	st_create_key(is.sh.s, "target", "w", 1);
	char name[64], winner[HSM_ALIAS_MAX + 1], src[16];
	for (int i = 0; i < ID_THREADS; i++) {
		snprintf(src, sizeof(src), "src-%d", i);
		st_create_key(is.sh.s, src, "w", 1);
	}
	for (is.round = 0; is.round < ID_ROUNDS; is.round++) {
		is.update = false;
		id_round(&is, winner);
		EXPECT_OK(hsm_store_alias_delete(is.sh.s, winner));
		/* The same contest by UpdateAlias: each alias starts on a key of its own. */
		is.update = true;
		for (int i = 0; i < ID_THREADS; i++) {
			id_alias_name(name, sizeof(name), is.round, i);
			snprintf(src, sizeof(src), "src-%d", i);
			EXPECT_OK(hsm_store_alias_create(is.sh.s, name, src, 1, NULL));
		}
		id_round(&is, winner);
		EXPECT_OK(hsm_store_alias_delete_for_key(is.sh.s, "target"));
		for (int i = 0; i < ID_THREADS; i++) {
			snprintf(src, sizeof(src), "src-%d", i);
			EXPECT_OK(hsm_store_alias_delete_for_key(is.sh.s, src));
		}
	}
	hsm_store_close(is.sh.s);
	pthread_mutex_destroy(&is.sh.error_lock);
	st_release_location(&f);
}

#define TWIN_THREADS 8
#define TWIN_ROUNDS 10

typedef struct twin_shared {
	shared sh;
	pthread_barrier_t start;
	int round;
	atomic_int won, taken;
} twin_shared;

typedef struct twin_worker_arg {
	twin_shared *ts;
	int n;
} twin_worker_arg;

/* Creates this round's user under the spelling of thread n: "user3", "User3", "uSer3", ... */
static void *twin_worker(void *arg)
{
	twin_worker_arg *w = arg;
	twin_shared *ts = w->ts;
	hsm_user_record u = {0};
	snprintf(u.name, sizeof(u.name), "user%d", ts->round);
	for (int b = 0; b < 4; b++)
		if ((w->n >> b) & 1)
			u.name[b] = (char)(u.name[b] - 'a' + 'A');
	u.roles = 1;
	u.created = 1700000000;
	pthread_barrier_wait(&ts->start);
	hsm_result r = hsm_store_user_create(ts->sh.s, &u);
	if (hsm_ok(r))
		atomic_fetch_add(&ts->won, 1);
	else if (r.err == HSM_ERR_ALREADY_EXISTS)
		atomic_fetch_add(&ts->taken, 1);
	else
		note_failure(&ts->sh, "user_create");
	return NULL;
}

static hsm_result count_user(const hsm_user_record *u, void *arg)
{
	(void)u;
	(*(int *)arg)++;
	return HSM_SUCCESS;
}

/*
 * Threads creating one name under different spellings of its case at once
 * ("user3", "User3", ...): exactly one is created, as when they come one
 * after another; the check is made in the write that inserts the user.
 */
static void test_one_user_per_name_regardless_of_case(void **state)
{
	(void)state;
	st_fixture f = {0};
	st_fresh_location(&f);
	twin_shared ts = {0};
	pthread_mutex_init(&ts.sh.error_lock, NULL);
	assert_true(hsm_ok(hsm_store_open(f.loc, &ts.sh.s)));
	for (ts.round = 0; ts.round < TWIN_ROUNDS; ts.round++) {
		pthread_t t[TWIN_THREADS];
		twin_worker_arg w[TWIN_THREADS];
		atomic_store(&ts.won, 0);
		atomic_store(&ts.taken, 0);
		pthread_barrier_init(&ts.start, NULL, TWIN_THREADS);
		for (int i = 0; i < TWIN_THREADS; i++) {
			w[i] = (twin_worker_arg){&ts, i};
			assert_int_equal(pthread_create(&t[i], NULL, twin_worker, &w[i]), 0);
		}
		for (int i = 0; i < TWIN_THREADS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&ts.start);
		if (atomic_load(&ts.sh.failures) != 0)
			fail_msg("%d failures; first: %s", atomic_load(&ts.sh.failures),
			         ts.sh.first_error);
		assert_int_equal(atomic_load(&ts.won), 1);
		assert_int_equal(atomic_load(&ts.taken), TWIN_THREADS - 1);
	}
	int users = 0;
	EXPECT_OK(hsm_store_user_list(ts.sh.s, count_user, &users));
	assert_int_equal(users, TWIN_ROUNDS);
	hsm_store_close(ts.sh.s);
	pthread_mutex_destroy(&ts.sh.error_lock);
	st_release_location(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_lost_updates),
		cmocka_unit_test(test_imported_rotations_serialize),
		cmocka_unit_test(test_one_pkcs11_id_alias_under_concurrency),
		cmocka_unit_test(test_one_user_per_name_regardless_of_case),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
