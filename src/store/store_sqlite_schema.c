/*
 * store_sqlite_schema.c - the SQLite schema, versioned.
 *
 * The schema is a list of migrations, each one transaction that also records
 * its number in schema_version, so a crash leaves the database at one step
 * or the next, never between.  Opening runs every step newer than the
 * database; a database newer than the last step is refused rather than
 * guessed at.  Append steps; never edit one that has shipped.
 *
 * Conventions: enumerations are stored as their names (text), times as
 * integer epoch seconds, booleans as 0/1.  Indexes exist for every lookup
 * the store makes, so each stays logarithmic at millions of keys; lists use
 * keyset pagination over these indexes, never OFFSET.
 */
#include "store/store_sqlite.h"

#include <stdio.h>
#include <string.h>

/* Marks the file as an hsmd store ("HSMD") for PRAGMA application_id. */
#define HSM_SQLITE_APPLICATION_ID 0x48534D44

typedef struct migration {
	int version;
	const char *sql;
} migration;

static const migration migrations[] = {
	{1,
	 "PRAGMA application_id = 1213418820;" /* HSM_SQLITE_APPLICATION_ID */
	 "CREATE TABLE meta ("
	 "  name  TEXT PRIMARY KEY,"
	 "  value BLOB NOT NULL"
	 ") WITHOUT ROWID;"

	 "CREATE TABLE keys ("
	 "  id                   TEXT PRIMARY KEY,"
	 "  description          TEXT NOT NULL,"
	 "  spec                 TEXT NOT NULL,"
	 "  usage                TEXT NOT NULL,"
	 "  origin               TEXT NOT NULL,"
	 "  state                TEXT NOT NULL CHECK (state IN"
	 "                         ('Enabled', 'Disabled', 'PendingDeletion', 'Destroyed')),"
	 "  created              INTEGER NOT NULL,"
	 "  deletion_date        INTEGER NOT NULL,"
	 "  pending_window_days  INTEGER NOT NULL,"
	 "  rotation_enabled     INTEGER NOT NULL CHECK (rotation_enabled IN (0, 1)),"
	 "  rotation_period_days INTEGER NOT NULL,"
	 "  next_rotation        INTEGER NOT NULL,"
	 "  primary_version      INTEGER NOT NULL CHECK (primary_version >= 1),"
	 "  policy               TEXT NOT NULL,"
	 "  flags                INTEGER NOT NULL,"
	 "  updated              INTEGER NOT NULL"
	 ");"
	 /* keys_due: pending deletions by date; rotations of Enabled keys by date. */
	 "CREATE INDEX keys_deletion_due ON keys (state, deletion_date);"
	 "CREATE INDEX keys_rotation_due ON keys (rotation_enabled, state, next_rotation);"

	 "CREATE TABLE key_versions ("
	 "  key_id        TEXT NOT NULL REFERENCES keys (id),"
	 "  version       INTEGER NOT NULL CHECK (version >= 1),"
	 "  created       INTEGER NOT NULL,"
	 "  rotation_type TEXT NOT NULL,"
	 "  wrapped       BLOB NOT NULL,"
	 "  public_der    BLOB NOT NULL,"
	 "  PRIMARY KEY (key_id, version)"
	 ");"

	 "CREATE TABLE aliases ("
	 "  name    TEXT PRIMARY KEY,"
	 "  key_id  TEXT NOT NULL REFERENCES keys (id),"
	 "  created INTEGER NOT NULL,"
	 "  updated INTEGER NOT NULL"
	 ");"
	 "CREATE INDEX aliases_by_key ON aliases (key_id, name);"

	 "CREATE TABLE tags ("
	 "  key_id    TEXT NOT NULL REFERENCES keys (id),"
	 "  tag_key   TEXT NOT NULL,"
	 "  tag_value TEXT NOT NULL,"
	 "  PRIMARY KEY (key_id, tag_key)"
	 ") WITHOUT ROWID;"

	 "CREATE TABLE users ("
	 "  name        TEXT PRIMARY KEY,"
	 "  role        TEXT NOT NULL,"
	 "  disabled    INTEGER NOT NULL CHECK (disabled IN (0, 1)),"
	 "  locked      INTEGER NOT NULL CHECK (locked IN (0, 1)),"
	 "  failed_auth INTEGER NOT NULL CHECK (failed_auth >= 0),"
	 "  created     INTEGER NOT NULL"
	 ");"

	 "CREATE TABLE access_keys ("
	 "  id             TEXT PRIMARY KEY,"
	 "  user           TEXT NOT NULL REFERENCES users (name),"
	 "  active         INTEGER NOT NULL CHECK (active IN (0, 1)),"
	 "  created        INTEGER NOT NULL,"
	 "  wrapped_secret BLOB NOT NULL"
	 ");"
	 "CREATE INDEX access_keys_by_user ON access_keys (user, id);"},
	/* The keys marked for JWT signing (flag bit 0, HSM_KEYFLAG_JWT), for the JWK Set: a
	 * partial index, so listing them costs what they number, not what the store holds. */
	{2, "CREATE INDEX keys_jwt ON keys (id) WHERE (flags & 1) = 1;"},
	/*
	 * Grants (KMS CreateGrant).  Indexes: a key's grants in grant id order
	 * (ListGrants, the per-key limit, key destruction); a key's grants of one
	 * grantee (ListGrants filtered by GranteePrincipal, the per-grantee limit,
	 * a retried CreateGrant); grants by retiring principal across keys
	 * (ListRetirableGrants).
	 */
	{3,
	 "CREATE TABLE grants ("
	 "  grant_id    TEXT PRIMARY KEY,"
	 "  key_id      TEXT NOT NULL REFERENCES keys (id),"
	 "  name        TEXT NOT NULL,"
	 "  grantee     TEXT NOT NULL,"
	 "  retiring    TEXT NOT NULL,"
	 "  operations  INTEGER NOT NULL CHECK (operations BETWEEN 1 AND 4294967295),"
	 "  constraints TEXT NOT NULL,"
	 "  created     INTEGER NOT NULL"
	 ");"
	 "CREATE INDEX grants_by_key ON grants (key_id, grant_id);"
	 "CREATE INDEX grants_by_grantee ON grants (key_id, grantee, grant_id);"
	 "CREATE INDEX grants_by_retiring ON grants (retiring, grant_id);"},
};

#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

int hsm_store_sqlite_schema_latest(void)
{
	return migrations[MIGRATION_COUNT - 1].version;
}

static hsm_result exec_sql(sq_conn *w, const char *sql, const char *what)
{
	int rc = sqlite3_exec(w->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return sq_fail(w, rc, what);
	return HSM_SUCCESS;
}

/* A single integer from a one-row query, run uncached (open time only). */
static hsm_result query_int(sq_conn *w, const char *sql, int64_t *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(w->db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	hsm_result res = HSM_SUCCESS;
	if (rc == SQLITE_ROW)
		*out = (int64_t)sqlite3_column_int64(st, 0);
	else
		res = sq_fail(w, rc, "read the schema version");
	sqlite3_finalize(st);
	return res;
}

static hsm_result rollback(sq_conn *w, hsm_result res)
{
	if (!sqlite3_get_autocommit(w->db))
		(void)sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
	return res;
}

/* Runs one step and records it, in one transaction. */
static hsm_result apply(sq_conn *w, const migration *m)
{
	char record[128];
	snprintf(record, sizeof(record),
	         "INSERT INTO schema_version (version, applied)"
	         " VALUES (%d, CAST(strftime('%%s', 'now') AS INTEGER))",
	         m->version);
	hsm_result res = exec_sql(w, "BEGIN IMMEDIATE", "begin a schema migration");
	if (hsm_ok(res))
		res = exec_sql(w, m->sql, "apply a schema migration");
	if (hsm_ok(res))
		res = exec_sql(w, record, "record a schema migration");
	if (hsm_ok(res))
		res = exec_sql(w, "COMMIT", "commit a schema migration");
	return rollback(w, res);
}

static hsm_result check_application_id(sq_conn *w)
{
	int64_t id = 0;
	HSM_GUARD(query_int(w, "PRAGMA application_id", &id));
	HSM_ENSURE(id == 0 || id == HSM_SQLITE_APPLICATION_ID, HSM_ERR_STORE,
	           "the database file is not an hsmd store");
	return HSM_SUCCESS;
}

hsm_result sq_schema_migrate(sq_conn *w, int *version)
{
	HSM_GUARD(check_application_id(w));
	HSM_GUARD(exec_sql(w,
	                   "CREATE TABLE IF NOT EXISTS schema_version ("
	                   "  version INTEGER PRIMARY KEY,"
	                   "  applied INTEGER NOT NULL)",
	                   "create the schema version table"));
	int64_t current = 0;
	HSM_GUARD(query_int(w, "SELECT coalesce(max(version), 0) FROM schema_version", &current));
	int latest = hsm_store_sqlite_schema_latest();
	HSM_ENSURE(current <= latest, HSM_ERR_STORE,
	           "the store has schema version %lld, newer than this hsmd knows (%d): "
	           "upgrade hsmd to open it",
	           (long long)current, latest);
	HSM_ENSURE(current >= 0, HSM_ERR_STORE, "the store's schema version is corrupt");
	for (int i = 0; i < MIGRATION_COUNT; i++) {
		if (migrations[i].version > current)
			HSM_GUARD(apply(w, &migrations[i]));
	}
	*version = latest;
	return HSM_SUCCESS;
}
