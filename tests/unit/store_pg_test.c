/*
 * store_pg_test.c - what only the PostgreSQL backend has to get right:
 * several nodes (handles) on one database, grant limits against creators on
 * both, concurrent first opens, lost connections, lock timeouts, messages
 * without data values or passwords, erasure from live rows.  The contract
 * itself is tested by the other store_*_test programs, which run on
 * PostgreSQL too (HSM_TEST_STORE=pg).  Needs the test server
 * (store_test_util.h); fails without it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store/store_pg.h"
#include "store_test_util.h"

static int pg_setup(void **state)
{
	if (!st_is_pg())
		setenv("HSM_TEST_STORE", "pg", 1); /* this program is about PostgreSQL only */
	return st_setup(state);
}

/* ---- Two nodes ------------------------------------------------------------------------ */

#define NODES 2
#define THREADS_PER_NODE 4
#define INCREMENTS 25

typedef struct node_run {
	hsm_store *s;
	atomic_int *failures;
} node_run;

static hsm_result increment(hsm_key_record *k, void *arg)
{
	(void)arg;
	k->rotation_period_days++;
	return HSM_SUCCESS;
}

static void *node_worker(void *arg)
{
	node_run *n = arg;
	for (int i = 0; i < INCREMENTS; i++) {
		if (hsm_failed(hsm_store_key_update(n->s, "shared", increment, NULL, NULL, NULL)))
			atomic_fetch_add(n->failures, 1);
		if (hsm_failed(hsm_store_user_auth_result(n->s, "eve", false, 0, NULL, NULL)))
			atomic_fetch_add(n->failures, 1);
	}
	return NULL;
}

static void test_two_nodes_no_lost_update(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[NODES] = {f->s, NULL};
	EXPECT_OK(hsm_store_open(f->loc, &nodes[1])); /* no lock: a second node may open it */
	st_create_key(f->s, "shared", "w", 1);
	hsm_user_record u = {.name = "eve", .roles = 1U << HSM_ROLE_CRYPTO_USER};
	EXPECT_OK(hsm_store_user_create(f->s, &u));

	atomic_int failures = 0;
	node_run runs[NODES * THREADS_PER_NODE];
	pthread_t threads[NODES * THREADS_PER_NODE];
	uint64_t t0 = hsm_mono_ns();
	for (int i = 0; i < NODES * THREADS_PER_NODE; i++) {
		runs[i] = (node_run){nodes[i % NODES], &failures};
		assert_int_equal(pthread_create(&threads[i], NULL, node_worker, &runs[i]), 0);
	}
	for (int i = 0; i < NODES * THREADS_PER_NODE; i++)
		pthread_join(threads[i], NULL);
	double secs = (double)(hsm_mono_ns() - t0) / 1e9;
	assert_int_equal(atomic_load(&failures), 0);

	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(nodes[1], "shared", &k));
	assert_int_equal(k.rotation_period_days, NODES * THREADS_PER_NODE * INCREMENTS);
	hsm_key_record_clear(&k);
	EXPECT_OK(hsm_store_user_get(nodes[0], "eve", &u));
	assert_int_equal(u.failed_auth, NODES * THREADS_PER_NODE * INCREMENTS);
	print_message("%d contended key updates + %d counter updates from 2 nodes in %.2f s\n",
	              NODES * THREADS_PER_NODE * INCREMENTS, NODES * THREADS_PER_NODE * INCREMENTS,
	              secs);
	hsm_store_close(nodes[1]);
}

/* ---- Aliases created on two nodes at once ------------------------------------------------- */

#define ALIAS_THREADS 8
#define ALIAS_ROUNDS 5

typedef struct aliaser {
	hsm_store *s;
	char name[32];
	pthread_barrier_t *start;
	atomic_int *created, *refused, *failed;
	hsm_err refusal; /* the error a loser expects */
} aliaser;

static void *alias_worker(void *arg)
{
	aliaser *w = arg;
	pthread_barrier_wait(w->start);
	hsm_result r = hsm_store_alias_create(w->s, w->name, "shared", 1, NULL);
	if (hsm_ok(r))
		atomic_fetch_add(w->created, 1);
	else
		atomic_fetch_add(r.err == w->refusal ? w->refused : w->failed, 1);
	return NULL;
}

/*
 * The aliases-per-key limit holds against creators on two nodes: with the
 * key one alias short of it, threads on both ask for one more at once and
 * exactly one gets it, because the key row lock serializes them.
 */
static void test_two_nodes_alias_limit(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[NODES] = {f->s, NULL};
	char name[32];
	EXPECT_OK(hsm_store_open(f->loc, &nodes[1]));
	st_create_key(f->s, "shared", "w", 1);
	for (int i = 0; i < HSM_MAX_ALIASES_PER_KEY - 1; i++) {
		snprintf(name, sizeof(name), "alias/base-%02d", i);
		EXPECT_OK(hsm_store_alias_create(f->s, name, "shared", 1, NULL));
	}
	for (int round = 0; round < ALIAS_ROUNDS; round++) {
		atomic_int created = 0, refused = 0, failed = 0;
		pthread_barrier_t start;
		pthread_t t[ALIAS_THREADS];
		aliaser w[ALIAS_THREADS];
		pthread_barrier_init(&start, NULL, ALIAS_THREADS);
		for (int i = 0; i < ALIAS_THREADS; i++) {
			w[i] = (aliaser){nodes[i % NODES], "", &start, &created, &refused, &failed,
			                 HSM_ERR_LIMIT_EXCEEDED};
			snprintf(w[i].name, sizeof(w[i].name), "alias/r%d-t%d", round, i);
			assert_int_equal(pthread_create(&t[i], NULL, alias_worker, &w[i]), 0);
		}
		for (int i = 0; i < ALIAS_THREADS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&start);
		assert_int_equal(atomic_load(&failed), 0);
		assert_int_equal(atomic_load(&created), 1);
		assert_int_equal(atomic_load(&refused), ALIAS_THREADS - 1);
		assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM aliases"),
		                 HSM_MAX_ALIASES_PER_KEY);
		for (int i = 0; i < ALIAS_THREADS; i++) /* back to one short, for the next round */
			if (hsm_ok(hsm_store_alias_delete(f->s, w[i].name)))
				break;
	}
	hsm_store_close(nodes[1]);
}

/*
 * One PKCS#11 CKA_ID alias a key holds against creators on two nodes: threads
 * on both give the key a different one at once and exactly one gets it.
 */
static void test_two_nodes_one_pkcs11_id_alias(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[NODES] = {f->s, NULL};
	EXPECT_OK(hsm_store_open(f->loc, &nodes[1]));
	st_create_key(f->s, "shared", "w", 1);
	for (int round = 0; round < ALIAS_ROUNDS; round++) {
		atomic_int created = 0, refused = 0, failed = 0;
		pthread_barrier_t start;
		pthread_t t[ALIAS_THREADS];
		aliaser w[ALIAS_THREADS];
		pthread_barrier_init(&start, NULL, ALIAS_THREADS);
		for (int i = 0; i < ALIAS_THREADS; i++) {
			w[i] = (aliaser){nodes[i % NODES], "", &start, &created, &refused, &failed,
			                 HSM_ERR_VALIDATION};
			snprintf(w[i].name, sizeof(w[i].name), "alias/pkcs11-id/%02x%02x", round, i);
			assert_int_equal(pthread_create(&t[i], NULL, alias_worker, &w[i]), 0);
		}
		for (int i = 0; i < ALIAS_THREADS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&start);
		assert_int_equal(atomic_load(&failed), 0);
		assert_int_equal(atomic_load(&created), 1);
		assert_int_equal(atomic_load(&refused), ALIAS_THREADS - 1);
		assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM aliases"), 1);
		EXPECT_OK(hsm_store_alias_delete_for_key(f->s, "shared"));
	}
	hsm_store_close(nodes[1]);
}

/* ---- Grants created on two nodes at once ---------------------------------------------------- */

#define GRANT_THREADS 8
#define GRANT_TRIES 75 /* 600 attempts in all, for a limit of 500 */

typedef struct granter {
	hsm_store *s;
	unsigned first; /* this thread's grant ids: first, first + 1, ... */
	unsigned tries;
	const char *name;
	pthread_barrier_t *start;
	atomic_int *created, *existed, *refused, *failed;
	char id[HSM_GRANT_ID_LEN + 1]; /* the id the last success returned */
} granter;

static void *grant_worker(void *arg)
{
	granter *w = arg;
	pthread_barrier_wait(w->start);
	for (unsigned i = 0; i < w->tries; i++) {
		hsm_grant_record g = {.operations = 1, .created = 1};
		bool existed = false;
		snprintf(g.grant_id, sizeof(g.grant_id), "%064x", w->first + i);
		snprintf(g.key_id, sizeof(g.key_id), "shared");
		snprintf(g.grantee, sizeof(g.grantee), "app");
		snprintf(g.name, sizeof(g.name), "%s", w->name);
		hsm_result r = hsm_store_grant_create(w->s, &g, &existed, NULL);
		if (hsm_ok(r)) {
			atomic_fetch_add(existed ? w->existed : w->created, 1);
			memcpy(w->id, g.grant_id, sizeof(w->id));
		} else {
			atomic_fetch_add(r.err == HSM_ERR_LIMIT_EXCEEDED ? w->refused : w->failed, 1);
		}
	}
	return NULL;
}

/* Threads on two nodes create grants of one key at once; returns the counts of outcomes. */
static void create_grants_at_once(hsm_store *nodes[NODES], unsigned tries, const char *name,
                                  granter w[GRANT_THREADS], int counts[4])
{
	atomic_int created = 0, existed = 0, refused = 0, failed = 0;
	pthread_barrier_t start;
	pthread_t t[GRANT_THREADS];
	pthread_barrier_init(&start, NULL, GRANT_THREADS);
	for (int i = 0; i < GRANT_THREADS; i++) {
		w[i] = (granter){nodes[i % NODES], 1000U * (unsigned)(i + 1), tries, name, &start,
		                 &created, &existed, &refused, &failed, ""};
		assert_int_equal(pthread_create(&t[i], NULL, grant_worker, &w[i]), 0);
	}
	for (int i = 0; i < GRANT_THREADS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&start);
	counts[0] = atomic_load(&created);
	counts[1] = atomic_load(&existed);
	counts[2] = atomic_load(&refused);
	counts[3] = atomic_load(&failed);
}

/* The per-grantee limit holds against creators on two nodes: the key row lock serializes them. */
static void test_two_nodes_grant_limit(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[NODES] = {f->s, NULL};
	EXPECT_OK(hsm_store_open(f->loc, &nodes[1]));
	st_create_key(f->s, "shared", "w", 1);
	granter w[GRANT_THREADS];
	int n[4];
	uint64_t t0 = hsm_mono_ns();
	create_grants_at_once(nodes, GRANT_TRIES, "", w, n);
	print_message("%d concurrent grant creations from 2 nodes in %.2f s\n",
	              GRANT_THREADS * GRANT_TRIES, (double)(hsm_mono_ns() - t0) / 1e9);
	assert_int_equal(n[3], 0);
	assert_int_equal(n[0], HSM_MAX_GRANTS_PER_GRANTEE);
	assert_int_equal(n[1], 0);
	assert_int_equal(n[2], GRANT_THREADS * GRANT_TRIES - HSM_MAX_GRANTS_PER_GRANTEE);
	assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM grants"),
	                 HSM_MAX_GRANTS_PER_GRANTEE);
	hsm_store_close(nodes[1]);
}

/* A named grant requested by threads on two nodes at once is created once; all get its id. */
static void test_two_nodes_retried_grant(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[NODES] = {f->s, NULL};
	EXPECT_OK(hsm_store_open(f->loc, &nodes[1]));
	st_create_key(f->s, "shared", "w", 1);
	granter w[GRANT_THREADS];
	int n[4];
	create_grants_at_once(nodes, 1, "once", w, n);
	assert_int_equal(n[3], 0);
	assert_int_equal(n[2], 0);
	assert_int_equal(n[0], 1);
	assert_int_equal(n[1], GRANT_THREADS - 1);
	for (int i = 1; i < GRANT_THREADS; i++)
		assert_string_equal(w[i].id, w[0].id);
	assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM grants"), 1);
	hsm_store_close(nodes[1]);
}

/* ---- Concurrent first open -------------------------------------------------------------- */

#define OPENERS 4

typedef struct opener {
	const char *loc;
	pthread_barrier_t *start;
	hsm_result res;
	hsm_store *s;
} opener;

static void *open_worker(void *arg)
{
	opener *o = arg;
	pthread_barrier_wait(o->start);
	o->res = hsm_store_open(o->loc, &o->s);
	return NULL;
}

static void test_concurrent_first_open(void **state)
{
	(void)state;
	setenv("HSM_TEST_STORE", "pg", 1);
	for (int round = 0; round < 3; round++) {
		st_fixture f = {0};
		st_fresh_location(&f); /* an empty database */
		pthread_barrier_t start;
		pthread_barrier_init(&start, NULL, OPENERS);
		opener o[OPENERS];
		pthread_t t[OPENERS];
		for (int i = 0; i < OPENERS; i++) {
			o[i] = (opener){.loc = f.loc, .start = &start};
			assert_int_equal(pthread_create(&t[i], NULL, open_worker, &o[i]), 0);
		}
		for (int i = 0; i < OPENERS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&start);
		for (int i = 0; i < OPENERS; i++) {
			if (hsm_failed(o[i].res))
				fail_msg("opener %d: %s", i, hsm_err_code_name(o[i].res.err));
			assert_int_equal(hsm_store_schema_version(o[i].s), hsm_store_pg_schema_latest());
		}
		/* One schema, recorded once. */
		assert_int_equal(st_pg_int(f.db, "SELECT count(*) FROM schema_version"),
		                 hsm_store_pg_schema_latest());
		st_create_key(o[0].s, "k", "w", 1);
		hsm_key_record k = {0};
		EXPECT_OK(hsm_store_key_get(o[OPENERS - 1].s, "k", &k));
		hsm_key_record_clear(&k);
		for (int i = 0; i < OPENERS; i++)
			hsm_store_close(o[i].s);
		st_release_location(&f);
	}
}

static void test_refuses_newer_schema(void **state)
{
	st_fixture *f = *state;
	hsm_store_close(f->s);
	f->s = NULL;
	assert_int_equal(st_pg_exec(f->db, "INSERT INTO schema_version VALUES (999, 0)"), 0);
	EXPECT_ERR(hsm_store_open(f->loc, &f->s), HSM_ERR_STORE);
	assert_non_null(strstr(hsm_last_message(), "newer"));
	assert_null(f->s);
	assert_int_equal(st_pg_exec(f->db, "DELETE FROM schema_version WHERE version = 999"), 0);
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
}

/* An upgrade stays on the store's record until a Startup record said it (store.h). */
static void test_upgrade_kept_until_reported(void **state)
{
	st_fixture *f = *state;
	int latest = hsm_store_pg_schema_latest();
	assert_int_equal(hsm_store_migration_unreported(f->s), 0); /* a new store: no upgrade */
	hsm_store_close(f->s);
	f->s = NULL;
	char sql[96];
	snprintf(sql, sizeof(sql), "DELETE FROM schema_version WHERE version = %d", latest);
	assert_int_equal(st_pg_exec(f->db, sql), 0); /* the last step is idempotent */
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	assert_int_equal(hsm_store_migrated_from(f->s), latest - 1);
	hsm_store_close(f->s);
	f->s = NULL;
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	assert_int_equal(hsm_store_migrated_from(f->s), 0);
	assert_int_equal(hsm_store_migration_unreported(f->s), latest - 1);
	EXPECT_OK(hsm_store_migration_reported(f->s, latest - 1));
	EXPECT_OK(hsm_store_migration_reported(f->s, latest - 1));
	assert_int_equal(hsm_store_migration_unreported(f->s), 0);
}

/* ---- Lost connections ------------------------------------------------------------------------ */

/* Ends every server session of the test database but the caller's own, and waits (up to 5 s) until each has exited. */
static void kill_sessions(const char *db)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
	         "WHERE datname = '%s' AND pid <> pg_backend_pid()",
	         db);
	assert_int_equal(st_pg_exec(NULL, sql), 0);
}

/* Holds a pooled connection for a moment, so concurrent readers each open one. */
static void *reader(void *arg)
{
	for (int i = 0; i < 20; i++) {
		hsm_key_record k = {0};
		if (hsm_ok(hsm_store_key_get(arg, "k", &k)))
			hsm_key_record_clear(&k);
	}
	return NULL;
}

static void test_connection_killed_under_the_store(void **state)
{
	st_fixture *f = *state;
	hsm_key_record k = {0};
	st_create_key(f->s, "k", "w", 1);

	/* A read on a pooled connection that died: retried on a new one. */
	kill_sessions(f->db);
	EXPECT_OK(hsm_store_key_get(f->s, "k", &k));
	hsm_key_record_clear(&k);

	/* A write: BEGIN finds the connection dead before anything happened, so it is retried. */
	kill_sessions(f->db);
	EXPECT_OK(hsm_store_key_update(f->s, "k", increment, NULL, NULL, NULL));
	EXPECT_OK(hsm_store_key_get(f->s, "k", &k));
	assert_int_equal(k.rotation_period_days, 1); /* applied exactly once */
	hsm_key_record_clear(&k);

	/*
	 * Every pooled connection lost at once (a server restart): the pool holds
	 * several (readers ran side by side), and the next call still succeeds.
	 */
	for (int i = 0; i < 3; i++) {
		pthread_t t[4];
		for (int j = 0; j < 4; j++)
			assert_int_equal(pthread_create(&t[j], NULL, reader, f->s), 0);
		for (int j = 0; j < 4; j++)
			pthread_join(t[j], NULL);
		kill_sessions(f->db);
		uint64_t n = 0;
		EXPECT_OK(hsm_store_key_count(f->s, &n));
		assert_int_equal(n, 1);
	}
}

/* ---- Leadership ---------------------------------------------------------------------------------- */

#define LEASE_MS 30000

static bool leads_for(hsm_store *s, uint32_t lease_ms)
{
	bool leading = true;
	EXPECT_OK(hsm_store_lead(s, true, lease_ms, &leading));
	return leading;
}

static bool leads(hsm_store *s)
{
	return leads_for(s, LEASE_MS);
}

static void test_one_leader_at_a_time(void **state)
{
	st_fixture *f = *state;
	hsm_store *b = NULL;
	EXPECT_OK(hsm_store_open(f->loc, &b));
	assert_true(leads(f->s));
	assert_false(leads(b));
	/* Asked again: the leader keeps it. */
	assert_true(leads(f->s));
	assert_false(leads(b));
	/* Given up: the next to ask takes it. */
	bool leading = true;
	EXPECT_OK(hsm_store_lead(f->s, false, LEASE_MS, &leading));
	assert_false(leading);
	assert_true(leads(b));
	assert_false(leads(f->s));
	/*
	 * Every session ends (the leader died, or the server restarted): the
	 * first to ask leads, and the old leader finds out it no longer does.
	 */
	kill_sessions(f->db);
	assert_true(leads(f->s));
	assert_false(leads(b));
	/*
	 * The leader's handle closed: it unlocks before it lets go, so the other
	 * takes over at once, without waiting for the server's backend to exit.
	 */
	hsm_store_close(f->s);
	f->s = NULL;
	assert_true(leads(b));
	hsm_store_close(b);
}

/*
 * The leadership is a lease: a leader that stops asking (stopped, hung, with
 * its connection open) loses it once the lease has passed without a
 * statement, and finds that out when it asks again; one that keeps asking
 * within its lease keeps it.
 */
static void test_a_leader_that_stops_asking_loses_the_lease(void **state)
{
	st_fixture *f = *state;
	hsm_store *b = NULL;
	EXPECT_OK(hsm_store_open(f->loc, &b));
	assert_true(leads_for(f->s, 1500));
	for (int i = 0; i < 4; i++) { /* 2 s in all, asking every 0.5 s */
		nanosleep(&(struct timespec){0, 500 * 1000 * 1000}, NULL);
		assert_true(leads_for(f->s, 1500));
		assert_false(leads_for(b, 1500));
	}
	nanosleep(&(struct timespec){3, 0}, NULL); /* twice the lease without a statement */
	assert_true(leads_for(b, 1500));
	assert_false(leads_for(f->s, 1500));
	hsm_store_close(b);
}

/* ---- Node ids ------------------------------------------------------------------------------------ */

static bool pid_is_own(hsm_store *s, int pid)
{
	int pids[64];
	size_t n = pg_own_sessions((pg_store *)s, pids, 64);
	for (size_t i = 0; i < n; i++)
		if (pids[i] == pid)
			return true;
	return false;
}

static void test_one_running_node_per_node_id(void **state)
{
	st_fixture *f = *state;
	hsm_store *b = NULL, *c = NULL;
	EXPECT_OK(hsm_store_open(f->loc, &b));
	EXPECT_OK(hsm_store_open(f->loc, &c));
	EXPECT_OK(hsm_store_claim_node(f->s, "node-a"));
	/* Asked again, the holder keeps it; another id is another claim. */
	EXPECT_OK(hsm_store_claim_node(f->s, "node-a"));
	EXPECT_OK(hsm_store_claim_node(c, "node-c"));
	/* A second handle with the same id is refused, and told who holds it. */
	hsm_result r = hsm_store_claim_node(b, "node-a");
	assert_int_equal(r.err, HSM_ERR_CONFLICT);
	const char *m = hsm_last_message();
	assert_non_null(strstr(m, "node_id 'node-a' is held by another running node on this store"));
	assert_non_null(strstr(m, "\"hsmd node node-a\""));
	int holder = 0;
	assert_int_equal(sscanf(strstr(m, "PostgreSQL session "), "PostgreSQL session %d", &holder),
	                 1);
	assert_true(pid_is_own(f->s, holder));
	assert_false(pid_is_own(b, holder));
	assert_int_equal(hsm_store_claim_node(b, "node-a").err, HSM_ERR_CONFLICT);
	/* The holder's handle closed: it unlocks, and the id is free at once. */
	hsm_store_close(f->s);
	f->s = NULL;
	EXPECT_OK(hsm_store_claim_node(b, "node-a"));
	/*
	 * The holder's session ended under it (the database restarted, an
	 * administrator, a network cut): the next check takes the id again when
	 * it is free, and is refused when another node took it first.
	 */
	kill_sessions(f->db);
	EXPECT_OK(hsm_store_claim_node(b, "node-a"));
	EXPECT_OK(hsm_store_claim_node(c, "node-c"));
	kill_sessions(f->db);
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	EXPECT_OK(hsm_store_claim_node(f->s, "node-a"));
	assert_int_equal(hsm_store_claim_node(b, "node-a").err, HSM_ERR_CONFLICT);
	hsm_store_close(b);
	hsm_store_close(c);
}

static void test_node_lock_key_is_fixed(void **state)
{
	(void)state;
	/* Nodes of every build meet on these numbers: FNV-1a, sign bit cleared. */
	assert_int_equal(pg_node_lock_key(""), 2166136261U & 0x7fffffffU);
	assert_int_equal(pg_node_lock_key("a"), 0xe40c292cU & 0x7fffffffU);
	assert_int_equal(pg_node_lock_key("foobar"), 0xbf9cf968U & 0x7fffffffU);
	assert_true(pg_node_lock_key("node-a") != pg_node_lock_key("node-b"));
	/* FNV-1a (64 bits), top bit set (these three have it already): an int8 below zero. */
	const uint64_t top = 0x8000000000000000U;
	assert_true(pg_node_lock_key64("") == (int64_t)(0xcbf29ce484222325U - top) + INT64_MIN);
	assert_true(pg_node_lock_key64("a") == (int64_t)(0xaf63dc4c8601ec8cU - top) + INT64_MIN);
	assert_true(pg_node_lock_key64("foobar") == (int64_t)(0x85944171f73967e8U - top) + INT64_MIN);
	assert_true(pg_node_lock_key64("node-a") < 0);
	/* Two ids that meet on the 31 bits part on the 63. */
	assert_int_equal(pg_node_lock_key("hsm-node-58538"), pg_node_lock_key("hsm-node-1019222"));
	assert_true(pg_node_lock_key64("hsm-node-58538") != pg_node_lock_key64("hsm-node-1019222"));
}

/* ---- Timeouts and messages -------------------------------------------------------------------- */

static void test_lock_wait_maps_to_dependency_timeout(void **state)
{
	st_fixture *f = *state;
	char uri[ST_URI_MAX];
	st_pg_uri_for(uri, f->db);
	/* Another session inserts the same name and does not commit: the upsert must wait for it. */
	PGconn *other = PQconnectdb(uri);
	assert_int_equal(PQstatus(other), CONNECTION_OK);
	PGresult *r = PQexec(other, "BEGIN; INSERT INTO meta VALUES ('n', '\\x01')");
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	hsm_buf v = {0}, out = {0};
	assert_true(hsm_ok(hsm_buf_set(&v, "x", 1)));
	const char *names[] = {"n"};
	const hsm_buf *values[] = {&v};
	uint64_t t0 = hsm_mono_ns();
	EXPECT_ERR(hsm_store_meta_put(f->s, 1, names, values), HSM_ERR_DEPENDENCY_TIMEOUT);
	assert_true(hsm_mono_ns() - t0 >= 4000000000ULL);
	/* Readers do not wait for that writer. */
	EXPECT_ERR(hsm_store_meta_get(f->s, "n", &out), HSM_ERR_NOT_FOUND);
	r = PQexec(other, "ROLLBACK");
	PQclear(r);
	PQfinish(other);
	EXPECT_OK(hsm_store_meta_put(f->s, 1, names, values));
	hsm_buf_free(&v);
	hsm_buf_free(&out);
}

static void test_messages_hold_no_values(void **state)
{
	st_fixture *f = *state;
	/* A failure whose server message and DETAIL quote the row's value. */
	assert_int_equal(
		st_pg_exec(f->db, "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$"
		                  "BEGIN RAISE EXCEPTION 'bad value %', encode(NEW.value, 'escape') "
		                  "USING DETAIL = 'value ' || encode(NEW.value, 'escape'); END $$;"
		                  "CREATE TRIGGER poison BEFORE INSERT ON meta FOR EACH ROW "
		                  "EXECUTE FUNCTION poison()"),
		0);
	hsm_buf v = {0};
	assert_true(hsm_ok(hsm_buf_set(&v, "SECRETVALUE", 11)));
	const char *names[] = {"n"};
	const hsm_buf *values[] = {&v};
	EXPECT_ERR(hsm_store_meta_put(f->s, 1, names, values), HSM_ERR_STORE);
	assert_null(strstr(hsm_last_message(), "SECRETVALUE"));
	assert_non_null(strstr(hsm_last_message(), "P0001")); /* the SQLSTATE is what is told */
	hsm_buf_free(&v);
}

static void test_bad_locations_and_passwords(void **state)
{
	(void)state;
	char uri[ST_URI_MAX], bad[ST_URI_MAX];
	st_pg_server_uri(uri);
	hsm_store *s = NULL;
	/* Wrong password: refused, and the password appears in no message. */
	char *at = strchr(uri + strlen("postgresql://"), '@');
	assert_non_null(at);
	snprintf(bad, sizeof(bad), "postgresql://hsmd:WRONGPASSWORD%s", at);
	EXPECT_ERR(hsm_store_open(bad, &s), HSM_ERR_STORE);
	assert_null(strstr(hsm_last_message(), "WRONGPASSWORD"));
	/* Nobody listening. */
	EXPECT_ERR(hsm_store_open("postgresql://hsmd:TOPSECRET@127.0.0.1:1/x", &s), HSM_ERR_STORE);
	assert_null(strstr(hsm_last_message(), "TOPSECRET"));
	/* Not a URI libpq accepts. */
	EXPECT_ERR(hsm_store_open("postgresql://hsmd:TOPSECRET@h/db?nosuchparam=1", &s),
	           HSM_ERR_VALIDATION);
	assert_null(strstr(hsm_last_message(), "TOPSECRET"));
	EXPECT_ERR(hsm_store_open("postgresql://", &s), HSM_ERR_VALIDATION);
	assert_null(s);
}

/*
 * A server that accepts connections and never answers: libpq's connect_timeout ends the wait.
 * libpq before 17 counts it in whole seconds of time(), so a wait may end up to a second
 * early (when a second begins between two of its polls): 3 s waits at least 2.
 */
static void test_connect_timeout_maps_to_dependency_timeout(void **state)
{
	(void)state;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 8), 0); /* the kernel completes handshakes; nobody reads */
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	char uri[128];
	snprintf(uri, sizeof(uri), "postgresql://hsmd:TOPSECRET@127.0.0.1:%u/x?connect_timeout=3",
	         (unsigned)ntohs(a.sin_port));
	hsm_store *s = NULL;
	uint64_t t0 = hsm_mono_ns();
	EXPECT_ERR(hsm_store_open(uri, &s), HSM_ERR_DEPENDENCY_TIMEOUT);
	uint64_t waited = hsm_mono_ns() - t0;
	assert_true(waited >= 1500000000ULL && waited < 10000000000ULL);
	assert_null(strstr(hsm_last_message(), "TOPSECRET"));
	close(fd);
}

/*
 * Durability is never lowered: a database whose default is off gets on; one
 * that asks for more (remote_apply) keeps it.  A trigger records the setting
 * the store's own session commits with.
 */
static void test_synchronous_commit_never_lowered(void **state)
{
	st_fixture *f = *state;
	char sql[256];
	assert_int_equal(
		st_pg_exec(f->db, "CREATE TABLE seen (v text);"
		                  "CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
		                  "INSERT INTO seen VALUES (current_setting('synchronous_commit')); "
		                  "RETURN NEW; END$$;"
		                  "CREATE TRIGGER note BEFORE INSERT ON meta FOR EACH ROW "
		                  "EXECUTE FUNCTION note()"),
		0);
	const char *levels[][2] = {{"off", "on"}, {"remote_apply", "remote_apply"}};
	for (int i = 0; i < 2; i++) {
		hsm_store_close(f->s);
		f->s = NULL;
		snprintf(sql, sizeof(sql), "ALTER DATABASE %s SET synchronous_commit = %s", f->db,
		         levels[i][0]);
		assert_int_equal(st_pg_exec(NULL, sql), 0);
		EXPECT_OK(hsm_store_open(f->loc, &f->s));
		hsm_buf v = {0};
		const char *names[] = {i == 0 ? "a" : "b"};
		const hsm_buf *values[] = {&v};
		EXPECT_OK(hsm_store_meta_put(f->s, 1, names, values));
		snprintf(sql, sizeof(sql), "SELECT count(*) FROM seen WHERE v = '%s'", levels[i][1]);
		assert_int_equal(st_pg_int(f->db, sql), 1);
	}
}

/* ---- Erasure ------------------------------------------------------------------------------------- */

static void test_destroy_leaves_no_live_material(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "victim", "MATERIAL", 8);
	st_create_key(f->s, "bystander", "KEEP", 4);
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/victim", "victim", 1, NULL));
	hsm_grant_record g = {.key_id = "victim", .grantee = "app", .operations = 1};
	memset(g.grant_id, 'a', HSM_GRANT_ID_LEN);
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	EXPECT_OK(hsm_store_key_destroy(f->s, "victim", 1900000000));
	assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM key_versions "
	                                  "WHERE position('MATERIAL'::bytea IN wrapped) > 0"),
	                 0);
	assert_int_equal(st_pg_int(f->db, "SELECT length(wrapped) FROM key_versions "
	                                  "WHERE key_id = 'victim'"),
	                 0);
	assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM aliases"), 0);
	assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM grants"), 0);
	assert_int_equal(st_pg_int(f->db, "SELECT length(wrapped) FROM key_versions "
	                                  "WHERE key_id = 'bystander'"),
	                 4);
	/* Repeating the destruction is harmless. */
	EXPECT_OK(hsm_store_key_destroy(f->s, "victim", 1900000001));
}

/* ---- A newer node migrated the shared store ---------------------------------------------- */

/*
 * In a cluster being upgraded, a newer node migrates the shared schema while
 * this (older) node runs.  Its backups would leave out the tables it does not
 * know, labelled with its older schema: the backup is refused by name, and
 * the node gives up the scheduled work it led.
 */
static void test_newer_schema_stops_backups_and_leadership(void **state)
{
	st_fixture *f = *state;
	char path[PATH_MAX], sql[128];
	bool leading = false;
	EXPECT_OK(hsm_store_lead(f->s, true, LEASE_MS, &leading));
	assert_true(leading);
	st_path(path, f->dir, "before.db");
	EXPECT_OK(hsm_store_snapshot(f->s, path)); /* control: the same schema backs up */

	int newer = hsm_store_pg_schema_latest() + 1;
	snprintf(sql, sizeof(sql), "INSERT INTO schema_version VALUES (%d, 1)", newer);
	assert_int_equal(st_pg_exec(f->db, sql), 0);

	st_path(path, f->dir, "after.db");
	EXPECT_ERR(hsm_store_snapshot(f->s, path), HSM_ERR_STORE);
	char want[96];
	snprintf(want, sizeof(want), "the store was upgraded to schema %d by a newer hsmd", newer);
	assert_non_null(strstr(hsm_last_message(), want));
	assert_non_null(strstr(hsm_last_message(), "upgrade this node"));
	assert_int_equal(access(path, F_OK), -1); /* nothing left behind */

	EXPECT_ERR(hsm_store_lead(f->s, true, LEASE_MS, &leading), HSM_ERR_STORE);
	assert_false(leading);
	assert_non_null(strstr(hsm_last_message(), want));
	/* Not taken again either while the store stays newer. */
	EXPECT_ERR(hsm_store_lead(f->s, true, LEASE_MS, &leading), HSM_ERR_STORE);
	assert_false(leading);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_two_nodes_no_lost_update, pg_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_two_nodes_alias_limit, pg_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_two_nodes_one_pkcs11_id_alias, pg_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_two_nodes_grant_limit, pg_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_two_nodes_retried_grant, pg_setup, st_teardown),
		cmocka_unit_test(test_concurrent_first_open),
		cmocka_unit_test_setup_teardown(test_refuses_newer_schema, pg_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_upgrade_kept_until_reported, pg_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_connection_killed_under_the_store, pg_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_one_leader_at_a_time, pg_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_a_leader_that_stops_asking_loses_the_lease, pg_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_one_running_node_per_node_id, pg_setup, st_teardown),
		cmocka_unit_test(test_node_lock_key_is_fixed),
		cmocka_unit_test_setup_teardown(test_lock_wait_maps_to_dependency_timeout, pg_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_messages_hold_no_values, pg_setup, st_teardown),
		cmocka_unit_test(test_bad_locations_and_passwords),
		cmocka_unit_test(test_connect_timeout_maps_to_dependency_timeout),
		cmocka_unit_test_setup_teardown(test_synchronous_commit_never_lowered, pg_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema_stops_backups_and_leadership, pg_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_leaves_no_live_material, pg_setup,
		                                st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
