/*
 * store_test_util.h - helpers shared by the store tests (header only: each
 * store_*_test.c is its own program).  Include it after <cmocka.h>.
 *
 * The backend under test: SQLite, unless HSM_TEST_STORE=pg, which runs the
 * same tests on PostgreSQL.  Then HSM_TEST_PG_DIR names the directory of a
 * server started by tests/support/pg-server.sh (its connection URI is in
 * DIR/uri), and every fixture gets a database of its own, created from
 * template0 and dropped afterwards.  A test that needs SQLite's files
 * (fault injection through the raw database, file modes) calls
 * st_sqlite_only() and is skipped on PostgreSQL.
 */
#ifndef HSM_STORE_TEST_UTIL_H
#define HSM_STORE_TEST_UTIL_H

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "common/util.h"
#include "store/store.h"

/* A fresh private directory under $TMPDIR (or /tmp). */
static inline void st_tmpdir(char out[PATH_MAX])
{
	const char *base = getenv("TMPDIR");
	if (base == NULL || *base == '\0')
		base = "/tmp";
	snprintf(out, PATH_MAX, "%s/hsmd-store-XXXXXX", base);
	if (mkdtemp(out) == NULL) {
		perror("mkdtemp");
		abort();
	}
}

static inline int st_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline void st_rm_rf(const char *dir)
{
	nftw(dir, st_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void st_path(char out[PATH_MAX], const char *dir, const char *name)
{
	if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		abort();
}

/* A plausible Enabled symmetric key record (strings point at literals: do not clear). */
static inline void st_key(hsm_key_record *k, const char *id)
{
	memset(k, 0, sizeof(*k));
	snprintf(k->key_id, sizeof(k->key_id), "%s", id);
	k->description = (char *)"test key";
	k->spec = HSM_SPEC_SYMMETRIC_DEFAULT;
	k->usage = HSM_USAGE_ENCRYPT_DECRYPT;
	k->origin = HSM_ORIGIN_AWS_KMS;
	k->state = HSM_KEY_ENABLED;
	k->created = 1700000000;
	k->pending_window_days = 30;
	k->primary_version = 1;
	k->policy = (char *)"{\"Version\":\"2012-10-17\"}";
	k->updated = 1700000000;
}

/* A version whose wrapped bytes are given (copied into the record: clear it). */
static inline void st_version(hsm_version_record *v, const char *id, uint32_t version,
                              const void *wrapped, size_t n)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->key_id, sizeof(v->key_id), "%s", id);
	v->version = version;
	v->created = 1700000000 + version;
	v->rotation_type = version == 1 ? HSM_ROTATION_NONE : HSM_ROTATION_ON_DEMAND;
	if (hsm_failed(hsm_buf_set(&v->wrapped, wrapped, n)))
		abort();
}

/* Key ids that sort in creation order: "00000000-0000-4000-8000-00000000000N". */
static inline void st_key_id(char out[HSM_UUID_STRLEN + 1], unsigned n)
{
	snprintf(out, HSM_UUID_STRLEN + 1, "%08x-0000-4000-8000-%012x", n, n);
}

/* Runs SQL on the database directly, bypassing the store (fault injection, inspection). */
static inline int st_raw_exec(const char *dir, const char *sql)
{
	char path[PATH_MAX];
	sqlite3 *db = NULL;
	st_path(path, dir, "hsmd.db");
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

/* One integer from a query on the raw database, or -1. */
static inline long long st_raw_int(const char *dir, const char *sql)
{
	char path[PATH_MAX];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long long v = -1;
	st_path(path, dir, "hsmd.db");
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* Asserts a result code, printing the failure's message when it differs. */
#define EXPECT_ERR(expr, code)                                                             \
	do {                                                                                   \
		hsm_result r_ = (expr);                                                            \
		if (r_.err != (code))                                                              \
			fail_msg("%s: expected %s, got %s (%s)", #expr, hsm_err_code_name(code),     \
			         hsm_err_code_name(r_.err), hsm_last_message());                     \
	} while (0)
#define EXPECT_OK(expr) EXPECT_ERR(expr, HSM_OK)

/* ---- PostgreSQL ---------------------------------------------------------------- */

static inline bool st_is_pg(void)
{
	const char *b = getenv("HSM_TEST_STORE");
	return b != NULL && strcmp(b, "pg") == 0;
}

#define ST_URI_MAX (PATH_MAX + 64)

/*
 * The test server's URI (for its "postgres" database).  Missing server:
 * the test fails, it never passes without having run.
 */
static inline void st_pg_server_uri(char out[ST_URI_MAX])
{
	const char *dir = getenv("HSM_TEST_PG_DIR");
	char path[PATH_MAX];
	if (dir == NULL || *dir == '\0')
		fail_msg("HSM_TEST_STORE=pg needs HSM_TEST_PG_DIR (a tests/support/pg-server.sh "
		         "directory)");
	st_path(path, dir, "uri");
	FILE *fp = fopen(path, "r");
	if (fp == NULL)
		fail_msg("no PostgreSQL test server: %s is missing (did pg-server.sh start fail? "
		         "PostgreSQL 15 comes with scripts/install-deps.sh)", path);
	if (fgets(out, ST_URI_MAX, fp) == NULL)
		fail_msg("%s is empty", path);
	fclose(fp);
	out[strcspn(out, "\n")] = '\0';
}

/* The URI of another database on the test server. */
static inline void st_pg_uri_for(char out[ST_URI_MAX], const char *db)
{
	char server[ST_URI_MAX];
	st_pg_server_uri(server);
	char *slash = strrchr(server, '/');
	assert_non_null(slash);
	*slash = '\0';
	if (snprintf(out, ST_URI_MAX, "%s/%s", server, db) >= ST_URI_MAX)
		abort();
}

/* Runs SQL on a database of the test server (NULL: the server's "postgres"); 0 on success. */
static inline int st_pg_exec(const char *db, const char *sql)
{
	char uri[ST_URI_MAX];
	if (db != NULL)
		st_pg_uri_for(uri, db);
	else
		st_pg_server_uri(uri);
	PGconn *c = PQconnectdb(uri);
	int rc = -1;
	if (PQstatus(c) == CONNECTION_OK) {
		PGresult *r = PQexec(c, sql);
		ExecStatusType st = PQresultStatus(r);
		rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
		if (rc != 0)
			print_message("st_pg_exec: %s", PQresultErrorMessage(r));
		PQclear(r);
	} else {
		print_message("st_pg_exec: %s", PQerrorMessage(c));
	}
	PQfinish(c);
	return rc;
}

/* One integer from a query on a test database, or -1. */
static inline long long st_pg_int(const char *db, const char *sql)
{
	char uri[ST_URI_MAX];
	st_pg_uri_for(uri, db);
	PGconn *c = PQconnectdb(uri);
	long long v = -1;
	if (PQstatus(c) == CONNECTION_OK) {
		PGresult *r = PQexec(c, sql);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
			v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
	}
	PQfinish(c);
	return v;
}

/* A fresh, empty database; out receives its name. */
static inline void st_pg_create_db(char out[64])
{
	static unsigned counter;
	char sql[128];
	snprintf(out, 64, "hsmt_%ld_%u", (long)getpid(), counter++);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE template0", out);
	if (st_pg_exec(NULL, sql) != 0)
		fail_msg("cannot create test database %s", out);
}

static inline void st_pg_drop_db(const char *db)
{
	char sql[128];
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
	(void)st_pg_exec(NULL, sql);
}

/* ---- Fixture ------------------------------------------------------------------------- */

/*
 * A store opened on a fresh location for one test: a fresh directory
 * (SQLite), or a fresh database (PostgreSQL; dir is then a scratch
 * directory for files a test writes).
 */
typedef struct st_fixture {
	char dir[PATH_MAX];
	char loc[ST_URI_MAX]; /* what hsm_store_open is given */
	char db[64];          /* PostgreSQL: the database's name */
	hsm_store *s;
} st_fixture;

/* Sets f->dir and f->loc to a fresh, empty location of the backend under test. */
static inline void st_fresh_location(st_fixture *f)
{
	st_tmpdir(f->dir);
	if (st_is_pg()) {
		st_pg_create_db(f->db);
		st_pg_uri_for(f->loc, f->db);
	} else {
		snprintf(f->loc, sizeof(f->loc), "%s", f->dir);
	}
}

static inline void st_release_location(st_fixture *f)
{
	if (f->db[0] != '\0')
		st_pg_drop_db(f->db);
	st_rm_rf(f->dir);
}

static inline int st_setup(void **state)
{
	st_fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	st_fresh_location(f);
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	*state = f;
	return 0;
}

static inline int st_teardown(void **state)
{
	st_fixture *f = *state;
	hsm_store_close(f->s);
	st_release_location(f);
	free(f);
	return 0;
}

static inline void st_reopen(st_fixture *f)
{
	hsm_store_close(f->s);
	f->s = NULL;
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
}

/* Appends b as lowercase hex and a "|" (record dumps that compare stores). */
static inline void st_put_hex(hsm_buf *out, const hsm_buf *b)
{
	for (size_t i = 0; i < b->len; i++)
		assert_true(hsm_ok(hsm_buf_printf(out, "%02x", b->data[i])));
	assert_true(hsm_ok(hsm_buf_put_str(out, "|")));
}

/* SQLite's plan for sql on the store's database in dir, its steps joined by "; ". */
static inline void st_sqlite_plan(const char *dir, const char *sql, char *out, size_t cap)
{
	char path[PATH_MAX], q[512];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	st_path(path, dir, "hsmd.db");
	snprintf(q, sizeof(q), "EXPLAIN QUERY PLAN %s", sql);
	out[0] = '\0';
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, q, -1, &st, NULL), SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW) {
		size_t len = strlen(out);
		snprintf(out + len, cap - len, "%s; ", (const char *)sqlite3_column_text(st, 3));
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/*
 * Fault injection: a trigger that makes `event` ("INSERT" or "UPDATE") on
 * table fail where cond holds (a condition on NEW, valid in both SQL
 * dialects).  The store is closed around the change and reopened.
 */
static inline void st_poison_on(st_fixture *f, const char *event, const char *table,
                                const char *cond)
{
	char sql[1024];
	hsm_store_close(f->s);
	f->s = NULL;
	if (st_is_pg()) {
		snprintf(sql, sizeof(sql),
		         "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS "
		         "$$BEGIN RAISE EXCEPTION 'injected'; END$$;"
		         "CREATE TRIGGER poison BEFORE %s ON %s FOR EACH ROW WHEN (%s) "
		         "EXECUTE FUNCTION poison()",
		         event, table, cond);
		assert_int_equal(st_pg_exec(f->db, sql), 0);
	} else {
		snprintf(sql, sizeof(sql),
		         "CREATE TRIGGER poison BEFORE %s ON %s WHEN %s BEGIN "
		         "SELECT RAISE(ABORT, 'injected'); END",
		         event, table, cond);
		assert_int_equal(st_raw_exec(f->dir, sql), SQLITE_OK);
	}
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
}

/* Inserts into table fail where cond holds. */
static inline void st_poison(st_fixture *f, const char *table, const char *cond)
{
	st_poison_on(f, "INSERT", table, cond);
}

/* The raw part of st_schema_before_usage, on a closed store. */
static inline void st_drop_usage(st_fixture *f)
{
	if (st_is_pg()) {
		assert_int_equal(st_pg_exec(f->db, "BEGIN;"
		                                   "DROP TABLE key_usage;"
		                                   "DROP TABLE usage_tracking;"
		                                   "DELETE FROM schema_version WHERE version >= 7;"
		                                   "COMMIT"),
		                 0);
		return;
	}
	assert_int_equal(st_raw_exec(f->dir, "BEGIN;"
	                                     "DROP TABLE key_usage;"
	                                     "DROP TABLE usage_tracking;"
	                                     "DELETE FROM schema_version WHERE version >= 8;"
	                                     "COMMIT"),
	                 SQLITE_OK);
}

/*
 * Closes the store and takes it back to the schema before key usage
 * (SQLite step 7, PostgreSQL step 6), keeping its other records.
 */
static inline void st_schema_before_usage(st_fixture *f)
{
	hsm_store_close(f->s);
	f->s = NULL;
	st_drop_usage(f);
}

/* The raw part of st_schema_before_certificates, on a closed store. */
static inline void st_drop_certificates(st_fixture *f)
{
	st_drop_usage(f);
	if (st_is_pg()) {
		assert_int_equal(st_pg_exec(f->db, "BEGIN;"
		                                   "DROP TABLE certificates;"
		                                   "DELETE FROM schema_version WHERE version >= 6;"
		                                   "COMMIT"),
		                 0);
		return;
	}
	assert_int_equal(st_raw_exec(f->dir, "BEGIN;"
	                                     "DROP TABLE certificates;"
	                                     "DELETE FROM schema_version WHERE version >= 7;"
	                                     "COMMIT"),
	                 SQLITE_OK);
}

/*
 * Closes the store and takes it back to the schema before certificates
 * (SQLite step 6, PostgreSQL step 5), keeping its other records.
 */
static inline void st_schema_before_certificates(st_fixture *f)
{
	hsm_store_close(f->s);
	f->s = NULL;
	st_drop_certificates(f);
}

/* The raw part of st_schema_before_approvals, on a closed store. */
static inline void st_drop_approvals(st_fixture *f)
{
	st_drop_certificates(f);
	if (st_is_pg()) {
		assert_int_equal(st_pg_exec(f->db, "BEGIN;"
		                                   "DROP TABLE approval_votes;"
		                                   "DROP TABLE approvals;"
		                                   "DELETE FROM schema_version WHERE version >= 5;"
		                                   "COMMIT"),
		                 0);
		return;
	}
	assert_int_equal(st_raw_exec(f->dir, "BEGIN;"
	                                     "DROP TABLE approval_votes;"
	                                     "DROP TABLE approvals;"
	                                     "DELETE FROM schema_version WHERE version >= 6;"
	                                     "COMMIT"),
	                 SQLITE_OK);
}

/*
 * Closes the store and takes it back to the schema before quorum approvals
 * (SQLite step 5, PostgreSQL step 4), keeping its other records.
 */
static inline void st_schema_before_approvals(st_fixture *f)
{
	hsm_store_close(f->s);
	f->s = NULL;
	st_drop_approvals(f);
}

/* The raw part of st_schema_before_version_material, on a closed store. */
static inline void st_drop_version_material(st_fixture *f)
{
	st_drop_approvals(f);
	if (st_is_pg()) {
		assert_int_equal(st_pg_exec(f->db,
		                            "BEGIN;"
		                            "ALTER TABLE key_versions DROP COLUMN valid_to;"
		                            "ALTER TABLE key_versions DROP COLUMN description;"
		                            "DELETE FROM schema_version WHERE version >= 4;"
		                            "COMMIT"),
		                 0);
		return;
	}
	assert_int_equal(st_raw_exec(f->dir, "BEGIN;"
	                                     "ALTER TABLE key_versions DROP COLUMN valid_to;"
	                                     "ALTER TABLE key_versions DROP COLUMN description;"
	                                     "DELETE FROM schema_version WHERE version >= 5;"
	                                     "COMMIT"),
	                 SQLITE_OK);
}

/*
 * Closes the store and takes it back to the schema before per-version
 * imported material (SQLite step 4, PostgreSQL step 3: no valid_to or
 * description on key_versions), keeping its records.  What the versions
 * held in those columns is lost, as an older hsmd never wrote it; keys
 * keep their valid_to.
 */
static inline void st_schema_before_version_material(st_fixture *f)
{
	hsm_store_close(f->s);
	f->s = NULL;
	st_drop_version_material(f);
}

/*
 * Closes the store and takes it back to the schema before imported key
 * material (SQLite step 3, PostgreSQL step 2), keeping its records: a store
 * as an older hsmd wrote it.  Its keys must be in the states that schema
 * knew.  The tables and constraints are those of the older steps, so the
 * next open runs the newer steps on them as it would on a real old store.
 */
static inline void st_schema_before_import(st_fixture *f)
{
	hsm_store_close(f->s);
	f->s = NULL;
	st_drop_version_material(f);
	if (st_is_pg()) {
		assert_int_equal(st_pg_exec(f->db,
		                            "BEGIN;"
		                            "DROP INDEX keys_expiry_due;"
		                            "ALTER TABLE key_versions DROP COLUMN digest;"
		                            "ALTER TABLE keys DROP COLUMN valid_to;"
		                            "ALTER TABLE keys DROP CONSTRAINT keys_state_check;"
		                            "ALTER TABLE keys ADD CONSTRAINT keys_state_check "
		                            "CHECK (state IN ('Enabled', 'Disabled', "
		                            "'PendingDeletion', 'Destroyed'));"
		                            "DELETE FROM schema_version WHERE version >= 3;"
		                            "COMMIT"),
		                 0);
		return;
	}
	/* SQLite's own way to change a table (see store_sqlite_schema.c, step 4). */
	assert_int_equal(st_raw_exec(f->dir,
	                             "PRAGMA foreign_keys=OFF; BEGIN;"
	                             "CREATE TABLE keys_old ("
	                             "  id                   TEXT PRIMARY KEY,"
	                             "  description          TEXT NOT NULL,"
	                             "  spec                 TEXT NOT NULL,"
	                             "  usage                TEXT NOT NULL,"
	                             "  origin               TEXT NOT NULL,"
	                             "  state                TEXT NOT NULL CHECK (state IN"
	                             "    ('Enabled', 'Disabled', 'PendingDeletion', 'Destroyed')),"
	                             "  created              INTEGER NOT NULL,"
	                             "  deletion_date        INTEGER NOT NULL,"
	                             "  pending_window_days  INTEGER NOT NULL,"
	                             "  rotation_enabled     INTEGER NOT NULL"
	                             "                         CHECK (rotation_enabled IN (0, 1)),"
	                             "  rotation_period_days INTEGER NOT NULL,"
	                             "  next_rotation        INTEGER NOT NULL,"
	                             "  primary_version      INTEGER NOT NULL"
	                             "                         CHECK (primary_version >= 1),"
	                             "  policy               TEXT NOT NULL,"
	                             "  flags                INTEGER NOT NULL,"
	                             "  updated              INTEGER NOT NULL);"
	                             "INSERT INTO keys_old SELECT id, description, spec, usage, "
	                             "  origin, state, created, deletion_date, "
	                             "  pending_window_days, rotation_enabled, "
	                             "  rotation_period_days, next_rotation, primary_version, "
	                             "  policy, flags, updated FROM keys;"
	                             "DROP TABLE keys;"
	                             "ALTER TABLE keys_old RENAME TO keys;"
	                             "CREATE INDEX keys_deletion_due ON keys "
	                             "  (state, deletion_date);"
	                             "CREATE INDEX keys_rotation_due ON keys "
	                             "  (rotation_enabled, state, next_rotation);"
	                             "CREATE INDEX keys_jwt ON keys (id) WHERE (flags & 1) = 1;"
	                             "ALTER TABLE key_versions DROP COLUMN digest;"
	                             "DELETE FROM schema_version WHERE version >= 4;"
	                             "COMMIT"),
	                 SQLITE_OK);
}

/* For tests of SQLite's files and raw database: skipped when PostgreSQL is under test. */
#define st_sqlite_only()            \
	do {                            \
		if (st_is_pg())             \
			skip();                 \
	} while (0)

/* Creates an Enabled key whose first version holds the given wrapped bytes. */
static inline void st_create_key(hsm_store *s, const char *id, const void *wrapped, size_t n)
{
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, id);
	st_version(&v, id, 1, wrapped, n);
	EXPECT_OK(hsm_store_key_create(s, &k, &v));
	hsm_version_record_clear(&v);
}

#endif
