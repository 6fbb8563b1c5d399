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

#include "common/log.h"

/* Marks the file as an hsmd store ("HSMD") for PRAGMA application_id. */
#define HSM_SQLITE_APPLICATION_ID 0x48534D44

typedef struct migration {
	int version;
	const char *sql;
	/*
	 * The step rebuilds a table that others reference (DROP TABLE and
	 * RENAME), so foreign key enforcement is off while it runs and the
	 * references are checked before it commits (apply_rebuild).
	 */
	bool rebuilds;
	/* What SQL alone cannot say, run in the step's transaction before sql (or NULL). */
	hsm_result (*code)(sq_conn *w);
} migration;

static hsm_result certificates_reshape(sq_conn *w);

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
	 "CREATE INDEX access_keys_by_user ON access_keys (user, id);",
	 false, NULL},
	/* The keys marked for JWT signing (flag bit 0, HSM_KEYFLAG_JWT), for the JWK Set: a
	 * partial index, so listing them costs what they number, not what the store holds. */
	{2, "CREATE INDEX keys_jwt ON keys (id) WHERE (flags & 1) = 1;", false, NULL},
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
	 "CREATE INDEX grants_by_retiring ON grants (retiring, grant_id);",
	 false, NULL},
	/*
	 * Imported key material (KMS ImportKeyMaterial): the PendingImport state,
	 * when the material expires (valid_to, 0 = never) and the digest that
	 * identifies a version's imported material.  SQLite cannot alter a CHECK
	 * constraint, so keys is rebuilt as https://www.sqlite.org/lang_altertable.html
	 * ("Making Other Kinds Of Table Schema Changes") prescribes: new table,
	 * copy, drop, rename, then every index on keys again.  keys_expiry_due
	 * holds only keys whose material expires: finding the expired ones walks
	 * those, not the whole table.
	 */
	{4,
	 "CREATE TABLE keys_new ("
	 "  id                   TEXT PRIMARY KEY,"
	 "  description          TEXT NOT NULL,"
	 "  spec                 TEXT NOT NULL,"
	 "  usage                TEXT NOT NULL,"
	 "  origin               TEXT NOT NULL,"
	 "  state                TEXT NOT NULL CHECK (state IN"
	 "                         ('Enabled', 'Disabled', 'PendingDeletion', 'Destroyed',"
	 "                          'PendingImport')),"
	 "  created              INTEGER NOT NULL,"
	 "  deletion_date        INTEGER NOT NULL,"
	 "  pending_window_days  INTEGER NOT NULL,"
	 "  rotation_enabled     INTEGER NOT NULL CHECK (rotation_enabled IN (0, 1)),"
	 "  rotation_period_days INTEGER NOT NULL,"
	 "  next_rotation        INTEGER NOT NULL,"
	 "  primary_version      INTEGER NOT NULL CHECK (primary_version >= 1),"
	 "  policy               TEXT NOT NULL,"
	 "  flags                INTEGER NOT NULL,"
	 "  updated              INTEGER NOT NULL,"
	 "  valid_to             INTEGER NOT NULL DEFAULT 0"
	 ");"
	 "INSERT INTO keys_new (id, description, spec, usage, origin, state, created, "
	 "  deletion_date, pending_window_days, rotation_enabled, rotation_period_days, "
	 "  next_rotation, primary_version, policy, flags, updated) "
	 "SELECT id, description, spec, usage, origin, state, created, deletion_date, "
	 "  pending_window_days, rotation_enabled, rotation_period_days, next_rotation, "
	 "  primary_version, policy, flags, updated FROM keys;"
	 "DROP TABLE keys;"
	 "ALTER TABLE keys_new RENAME TO keys;"
	 "CREATE INDEX keys_deletion_due ON keys (state, deletion_date);"
	 "CREATE INDEX keys_rotation_due ON keys (rotation_enabled, state, next_rotation);"
	 "CREATE INDEX keys_jwt ON keys (id) WHERE (flags & 1) = 1;"
	 "CREATE INDEX keys_expiry_due ON keys (valid_to) WHERE valid_to <> 0;"
	 "ALTER TABLE key_versions ADD COLUMN digest BLOB NOT NULL DEFAULT x'';",
	 true, NULL},
	/*
	 * Imported material per version (KMS imported keys that rotate): each
	 * version's own expiry (valid_to, 0 = never) and KeyMaterialDescription.
	 * Until now an imported key had exactly one version and keys.valid_to was
	 * its expiry, so that expiry moves onto the versions holding imported
	 * material (a digest and wrapped bytes); keys.valid_to stays, now the
	 * earliest expiry among the versions (hsm_store_key_set_material).
	 */
	{5,
	 "ALTER TABLE key_versions ADD COLUMN valid_to INTEGER NOT NULL DEFAULT 0;"
	 "ALTER TABLE key_versions ADD COLUMN description TEXT NOT NULL DEFAULT '';"
	 "UPDATE key_versions SET valid_to = "
	 "  (SELECT k.valid_to FROM keys k WHERE k.id = key_versions.key_id) "
	 "WHERE length(digest) > 0 AND length(wrapped) > 0;",
	 false, NULL},
	/*
	 * Quorum approvals (store.h): a request waiting for custodians, and its
	 * approvers numbered in the order they approved.  The primary key keeps
	 * approvers distinct, the position's uniqueness and range the count.
	 * Deleting a request deletes its approvers (purge).  Indexes: the open
	 * request of a fingerprint (open, find), newest first (list), by expiry
	 * (purge).
	 */
	{6,
	 "CREATE TABLE approvals ("
	 "  id          TEXT PRIMARY KEY,"
	 "  fingerprint TEXT NOT NULL,"
	 "  operation   TEXT NOT NULL,"
	 "  requester   TEXT NOT NULL,"
	 "  request     TEXT NOT NULL,"
	 "  state       TEXT NOT NULL CHECK (state IN ('Pending', 'Used', 'Denied', 'Cancelled')),"
	 "  required    INTEGER NOT NULL CHECK (required BETWEEN 1 AND 16),"
	 "  created     INTEGER NOT NULL,"
	 "  expires     INTEGER NOT NULL,"
	 "  closed      INTEGER NOT NULL,"
	 "  closed_by   TEXT NOT NULL"
	 ");"
	 "CREATE INDEX approvals_open ON approvals (fingerprint, state, expires);"
	 "CREATE INDEX approvals_newest ON approvals (created DESC, id);"
	 "CREATE INDEX approvals_expiry ON approvals (expires);"
	 "CREATE TABLE approval_votes ("
	 "  approval_id TEXT NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,"
	 "  approver    TEXT NOT NULL,"
	 "  position    INTEGER NOT NULL CHECK (position BETWEEN 1 AND 16),"
	 "  created     INTEGER NOT NULL,"
	 "  PRIMARY KEY (approval_id, approver),"
	 "  UNIQUE (approval_id, position)"
	 ") WITHOUT ROWID;",
	 false, NULL},
	/*
	 * Certificates (store.h, PKCS#11 CKO_CERTIFICATE objects).  The checks
	 * hold the sizes the records promise (HSM_CERT_*_MAX; length() of a blob
	 * counts bytes, of text characters, hence the cast).  A rowid table, as
	 * rows carry up to 32 KiB of DER; cert_id's own index serves lookups,
	 * the pages in cert_id order and the count, not_after's the count of
	 * those expiring that /metrics reports, and (object_id, cert_id) and
	 * (label, cert_id) the pages of a PKCS#11 search by CKA_ID or CKA_LABEL.
	 */
	{7,
	 "CREATE TABLE certificates ("
	 "  cert_id   TEXT PRIMARY KEY,"
	 "  label     TEXT NOT NULL CHECK (length(CAST(label AS BLOB)) <= 256),"
	 "  object_id BLOB NOT NULL CHECK (length(object_id) <= 256),"
	 "  der       BLOB NOT NULL CHECK (length(der) BETWEEN 1 AND 32768),"
	 "  creator   TEXT NOT NULL,"
	 "  created   INTEGER NOT NULL,"
	 "  not_after INTEGER NOT NULL DEFAULT 0"
	 ");"
	 "CREATE INDEX certificates_not_after ON certificates (not_after);"
	 "CREATE INDEX certificates_object_id ON certificates (object_id, cert_id);"
	 "CREATE INDEX certificates_label ON certificates (label, cert_id);",
	 false, NULL},
	/*
	 * Key usage (store.h, GetKeyLastUsage): each key's last use, and when
	 * this store began recording them (set_usage_start).
	 */
	{8,
	 "CREATE TABLE key_usage ("
	 "  key_id     TEXT PRIMARY KEY,"
	 "  operation  TEXT NOT NULL,"
	 "  used_ms    INTEGER NOT NULL,"
	 "  request_id TEXT NOT NULL"
	 ") WITHOUT ROWID;"
	 "CREATE TABLE usage_tracking (since INTEGER NOT NULL);",
	 false, NULL},
	/*
	 * The certificates table as step 7 now reads.  Step 7 was edited after
	 * it shipped (not_after and its index, then the object id and label
	 * indexes), so a store that took the first version of it is marked as
	 * having it without them.  certificates_reshape adds not_after where it
	 * is missing and fills it in from each certificate's DER (0 would count
	 * as expiring); the indexes follow, where missing.
	 */
	{9,
	 "CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);"
	 "CREATE INDEX IF NOT EXISTS certificates_object_id ON certificates (object_id, cert_id);"
	 "CREATE INDEX IF NOT EXISTS certificates_label ON certificates (label, cert_id);",
	 false, certificates_reshape},
	/*
	 * The audit outbox (store.h): one row per request whose change committed
	 * and whose audit record may not be written yet, listed per node in the
	 * order they were written.  IF NOT EXISTS: the step may run again on a
	 * store whose record of it was lost.
	 */
	{10,
	 "CREATE TABLE IF NOT EXISTS audit_outbox ("
	 "  node_id       TEXT NOT NULL,"
	 "  request_id    TEXT NOT NULL,"
	 "  created_ms    INTEGER NOT NULL,"
	 "  operation     TEXT NOT NULL,"
	 "  principal     TEXT NOT NULL DEFAULT '',"
	 "  access_key_id TEXT NOT NULL DEFAULT '',"
	 "  source        TEXT NOT NULL DEFAULT '',"
	 "  key_id        TEXT NOT NULL DEFAULT '',"
	 "  PRIMARY KEY (node_id, request_id)"
	 ") WITHOUT ROWID;"
	 "CREATE INDEX IF NOT EXISTS audit_outbox_order "
	 "ON audit_outbox (node_id, created_ms, request_id);",
	 false, NULL},
};
_Static_assert(HSM_CERT_LABEL_MAX == 256 && HSM_CERT_OBJECT_ID_MAX == 256 &&
                   HSM_CERT_DER_MAX == 32768,
               "schema step 7 checks the certificate sizes: a change needs a new step");

#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

int hsm_store_sqlite_schema_latest(void)
{
	return migrations[MIGRATION_COUNT - 1].version;
}

size_t hsm_store_sqlite_schema_steps(void)
{
	return (size_t)MIGRATION_COUNT;
}

int hsm_store_sqlite_schema_step(size_t i, const char **sql)
{
	HSM_ASSERT(i < (size_t)MIGRATION_COUNT);
	*sql = migrations[i].sql;
	return migrations[i].version;
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

/* Fails when PRAGMA foreign_key_check reports any row that references nothing. */
static hsm_result check_references(sq_conn *w)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(w->db, "PRAGMA foreign_key_check", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	hsm_result res = HSM_SUCCESS;
	if (rc == SQLITE_ROW)
		res = HSM_FAIL(HSM_ERR_STORE, "a schema migration left records without their key");
	else if (rc != SQLITE_DONE)
		res = sq_fail(w, rc, "check the store's references");
	sqlite3_finalize(st);
	return res;
}

/* Whether table has a column of that name. */
static hsm_result has_column(sq_conn *w, const char *table, const char *column, bool *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(w->db, "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
	                            -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 2, column, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	hsm_result res = HSM_SUCCESS;
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0) > 0;
	else
		res = sq_fail(w, rc, "read a table's columns");
	sqlite3_finalize(st);
	return res;
}

/*
 * The next certificate after `after` (by id) whose not_after is 0: *found
 * false when none is left.  id receives its id, *not_after what its DER
 * says, or 0 (with a warning) if the DER cannot be read.
 */
static hsm_result next_unfilled(sq_conn *w, const char *after, char id[HSM_UUID_STRLEN + 1],
                                int64_t *not_after, bool *found)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(w->db,
	                            "SELECT cert_id, der FROM certificates WHERE not_after = 0 "
	                            "AND cert_id > ?1 ORDER BY cert_id LIMIT 1",
	                            -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	hsm_result res = HSM_SUCCESS;
	*found = rc == SQLITE_ROW;
	if (rc == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(st, 0);
		const void *der = sqlite3_column_blob(st, 1);
		int len = sqlite3_column_bytes(st, 1);
		res = hsm_strcpy(id, HSM_UUID_STRLEN + 1, text != NULL ? text : "");
		if (hsm_ok(res) && hsm_failed(st_cert_not_after(der, len > 0 ? (size_t)len : 0,
		                                                not_after))) {
			hsm_warn("store: certificate %s: its notAfter cannot be read, so it stays 0", id);
			*not_after = 0;
		}
	} else if (rc != SQLITE_DONE) {
		res = sq_fail(w, rc, "read the certificates");
	}
	sqlite3_finalize(st);
	return res;
}

static hsm_result set_not_after(sq_conn *w, const char *id, int64_t not_after)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(w->db, "UPDATE certificates SET not_after = ?2 WHERE cert_id = ?1",
	                            -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, not_after);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	hsm_result res = rc == SQLITE_DONE ? HSM_SUCCESS : sq_fail(w, rc, "fill in a notAfter");
	sqlite3_finalize(st);
	return res;
}

/* Step 9's code: not_after where it is missing, filled in from the DER where it is 0. */
static hsm_result certificates_reshape(sq_conn *w)
{
	bool present = false;
	HSM_GUARD(has_column(w, "certificates", "not_after", &present));
	if (!present)
		HSM_GUARD(exec_sql(w,
		                   "ALTER TABLE certificates ADD COLUMN not_after INTEGER NOT NULL "
		                   "DEFAULT 0",
		                   "add the certificates' notAfter"));
	char after[HSM_UUID_STRLEN + 1] = "";
	for (;;) {
		char id[HSM_UUID_STRLEN + 1];
		int64_t not_after = 0;
		bool found = false;
		HSM_GUARD(next_unfilled(w, after, id, &not_after, &found));
		if (!found)
			return HSM_SUCCESS;
		if (not_after != 0)
			HSM_GUARD(set_not_after(w, id, not_after));
		memcpy(after, id, sizeof(after));
	}
}

/*
 * Runs one step and records it, in one transaction; from: the version the
 * migration began at, kept on the store's record of the upgrade
 * (ST_UPGRADE_META) unless it began from nothing (a new store).
 */
static hsm_result apply(sq_conn *w, const migration *m, int64_t from)
{
	char record[128], upgrade[192];
	snprintf(record, sizeof(record),
	         "INSERT INTO schema_version (version, applied)"
	         " VALUES (%d, CAST(strftime('%%s', 'now') AS INTEGER))",
	         m->version);
	snprintf(upgrade, sizeof(upgrade),
	         "INSERT OR IGNORE INTO meta (name, value)"
	         " VALUES ('" ST_UPGRADE_META "sqlite:%d', CAST('%lld' AS BLOB))",
	         hsm_store_sqlite_schema_latest(), (long long)from);
	hsm_result res = exec_sql(w, "BEGIN IMMEDIATE", "begin a schema migration");
	if (hsm_ok(res) && m->code != NULL)
		res = m->code(w);
	if (hsm_ok(res))
		res = exec_sql(w, m->sql, "apply a schema migration");
	if (hsm_ok(res) && m->rebuilds)
		res = check_references(w);
	if (hsm_ok(res))
		res = exec_sql(w, record, "record a schema migration");
	if (hsm_ok(res) && from > 0)
		res = exec_sql(w, upgrade, "record the schema upgrade");
	if (hsm_ok(res))
		res = exec_sql(w, "COMMIT", "commit a schema migration");
	return rollback(w, res);
}

/*
 * A step that rebuilds a referenced table, with foreign key enforcement off
 * around its transaction.  With it on, DROP TABLE deletes every row first,
 * which the rows referencing them refuse; PRAGMA defer_foreign_keys does not
 * help, as the renamed table does not clear the violations the drop counted
 * and COMMIT fails.  The pragma is a no-op inside a transaction, hence outside
 * it here.  If it did not take, the drop fails and so does the step, leaving
 * the store as it was.  check_references stands in for the enforcement
 * before COMMIT.
 */
static hsm_result apply_rebuild(sq_conn *w, const migration *m, int64_t from)
{
	int64_t on = 0;
	HSM_GUARD(exec_sql(w, "PRAGMA foreign_keys=OFF", "suspend foreign key enforcement"));
	hsm_result res = apply(w, m, from);
	/* The writer keeps this connection for the store's life: it must enforce again. */
	hsm_result back = exec_sql(w, "PRAGMA foreign_keys=ON", "restore foreign key enforcement");
	if (hsm_ok(back))
		back = query_int(w, "PRAGMA foreign_keys", &on);
	if (hsm_ok(back) && on != 1)
		back = HSM_FAIL(HSM_ERR_STORE, "cannot restore foreign key enforcement");
	return hsm_ok(res) ? back : res;
}

static hsm_result check_application_id(sq_conn *w)
{
	int64_t id = 0;
	HSM_GUARD(query_int(w, "PRAGMA application_id", &id));
	HSM_ENSURE(id == 0 || id == HSM_SQLITE_APPLICATION_ID, HSM_ERR_STORE,
	           "the database file is not an hsmd store");
	return HSM_SUCCESS;
}

static hsm_result check_version(int64_t current)
{
	return st_check_schema(current, hsm_store_sqlite_schema_latest());
}

hsm_result sq_schema_read(sq_conn *w, const char *dir, int *version)
{
	int64_t tables = 0, current = 0;
	HSM_GUARD(check_application_id(w));
	HSM_GUARD(query_int(w,
	                    "SELECT count(*) FROM sqlite_schema "
	                    "WHERE type = 'table' AND name = 'schema_version'",
	                    &tables));
	HSM_ENSURE(tables == 1, HSM_ERR_NOT_FOUND,
	           "no hsmd store in %s (its " HSM_STORE_DB_FILE " holds no hsmd schema)", dir);
	HSM_GUARD(query_int(w, "SELECT coalesce(max(version), 0) FROM schema_version", &current));
	HSM_GUARD(check_version(current));
	*version = (int)current;
	return HSM_SUCCESS;
}

hsm_result sq_schema_migrate(sq_conn *w, int *version, int *migrated_from)
{
	HSM_GUARD(check_application_id(w));
	HSM_GUARD(exec_sql(w,
	                   "CREATE TABLE IF NOT EXISTS schema_version ("
	                   "  version INTEGER PRIMARY KEY,"
	                   "  applied INTEGER NOT NULL)",
	                   "create the schema version table"));
	int64_t current = 0;
	HSM_GUARD(query_int(w, "SELECT coalesce(max(version), 0) FROM schema_version", &current));
	HSM_GUARD(check_version(current));
	int latest = hsm_store_sqlite_schema_latest();
	for (int i = 0; i < MIGRATION_COUNT; i++) {
		if (migrations[i].version <= current)
			continue;
		if (migrations[i].rebuilds)
			HSM_GUARD(apply_rebuild(w, &migrations[i], current));
		else
			HSM_GUARD(apply(w, &migrations[i], current));
	}
	/* An upgrade is said (a new store, from 0, is a creation). */
	*migrated_from = 0;
	if (current > 0 && current < latest) {
		hsm_info("store: SQLite schema migrated from version %lld to %d", (long long)current,
		         latest);
		*migrated_from = (int)current;
	}
	/*
	 * When the store began recording key uses: at its first opening with the
	 * tables, which for a snapshot (whose copy is emptied of uses and of
	 * this) is the restore, not the backup.
	 */
	HSM_GUARD(exec_sql(w,
	                   "INSERT INTO usage_tracking (since) "
	                   "SELECT CAST(strftime('%s', 'now') AS INTEGER) "
	                   "WHERE NOT EXISTS (SELECT 1 FROM usage_tracking)",
	                   "record when key uses began to be recorded"));
	*version = latest;
	return HSM_SUCCESS;
}
