/*
 * store_pg_schema.c - the PostgreSQL schema, versioned.
 *
 * As in the SQLite backend (store_sqlite_schema.c), the schema is a list of
 * migrations, each applied in one transaction that also records its number;
 * a database newer than the last step is refused.  PostgreSQL's version
 * numbers are its own: the two backends' schemas evolve separately.
 *
 * Several nodes may open one empty database at the same moment.  Each step's
 * transaction first takes a transaction-scoped advisory lock (released at
 * COMMIT or ROLLBACK, so a crashed node never leaves it held) and then
 * re-reads the version, so exactly one node applies each step and the others
 * see it done.
 *
 * Conventions: enumerations stored as their names, times as bigint epoch
 * seconds, other integers as bigint (read back with range checks), flags as
 * boolean, blobs as bytea.  Text keys use the "C" collation, so ordering and
 * keyset pagination compare bytes, as SQLite does, whatever the database's
 * locale.
 */
#include "store/store_pg.h"

#include <stdio.h>

/* pg_advisory_xact_lock key: "HSMD" as a number, so other applications' locks do not collide. */
#define PG_SCHEMA_LOCK "1213418820"

typedef struct migration {
	int version;
	const char *sql;
} migration;

static const migration migrations[] = {
	{1,
	 "CREATE TABLE meta ("
	 "  name  text COLLATE \"C\" PRIMARY KEY,"
	 "  value bytea NOT NULL"
	 ");"

	 "CREATE TABLE keys ("
	 "  id                   text COLLATE \"C\" PRIMARY KEY,"
	 "  description          text NOT NULL,"
	 "  spec                 text NOT NULL,"
	 "  usage                text NOT NULL,"
	 "  origin               text NOT NULL,"
	 "  state                text NOT NULL CHECK (state IN"
	 "                         ('Enabled', 'Disabled', 'PendingDeletion', 'Destroyed')),"
	 "  created              bigint NOT NULL,"
	 "  deletion_date        bigint NOT NULL,"
	 "  pending_window_days  bigint NOT NULL,"
	 "  rotation_enabled     boolean NOT NULL,"
	 "  rotation_period_days bigint NOT NULL,"
	 "  next_rotation        bigint NOT NULL,"
	 "  primary_version      bigint NOT NULL CHECK (primary_version >= 1),"
	 "  policy               text NOT NULL,"
	 "  flags                bigint NOT NULL,"
	 "  updated              bigint NOT NULL"
	 ");"
	 /* keys_due: pending deletions by date; rotations of Enabled keys by date. */
	 "CREATE INDEX keys_deletion_due ON keys (state, deletion_date);"
	 "CREATE INDEX keys_rotation_due ON keys (rotation_enabled, state, next_rotation);"
	 /* The JWT-flagged keys (HSM_KEYFLAG_JWT, bit 0), for the JWK Set. */
	 "CREATE INDEX keys_jwt ON keys (id) WHERE (flags & 1) = 1;"

	 "CREATE TABLE key_versions ("
	 "  key_id        text COLLATE \"C\" NOT NULL REFERENCES keys (id),"
	 "  version       bigint NOT NULL CHECK (version >= 1),"
	 "  created       bigint NOT NULL,"
	 "  rotation_type text NOT NULL,"
	 "  wrapped       bytea NOT NULL,"
	 "  public_der    bytea NOT NULL,"
	 "  PRIMARY KEY (key_id, version)"
	 ");"

	 "CREATE TABLE aliases ("
	 "  name    text COLLATE \"C\" PRIMARY KEY,"
	 "  key_id  text COLLATE \"C\" NOT NULL REFERENCES keys (id),"
	 "  created bigint NOT NULL,"
	 "  updated bigint NOT NULL"
	 ");"
	 "CREATE INDEX aliases_by_key ON aliases (key_id, name);"

	 "CREATE TABLE tags ("
	 "  key_id    text COLLATE \"C\" NOT NULL REFERENCES keys (id),"
	 "  tag_key   text COLLATE \"C\" NOT NULL,"
	 "  tag_value text NOT NULL,"
	 "  PRIMARY KEY (key_id, tag_key)"
	 ");"

	 "CREATE TABLE users ("
	 "  name        text COLLATE \"C\" PRIMARY KEY,"
	 "  roles       text NOT NULL,"
	 "  disabled    boolean NOT NULL,"
	 "  locked      boolean NOT NULL,"
	 "  failed_auth bigint NOT NULL CHECK (failed_auth >= 0),"
	 "  created     bigint NOT NULL"
	 ");"

	 "CREATE TABLE access_keys ("
	 "  id             text COLLATE \"C\" PRIMARY KEY,"
	 "  user_name      text COLLATE \"C\" NOT NULL REFERENCES users (name),"
	 "  active         boolean NOT NULL,"
	 "  created        bigint NOT NULL,"
	 "  wrapped_secret bytea NOT NULL"
	 ");"
	 "CREATE INDEX access_keys_by_user ON access_keys (user_name, id);"},
	/*
	 * Grants (KMS CreateGrant), with the SQLite schema's indexes (its step 3):
	 * a key's grants in grant id order, a key's grants of one grantee, grants
	 * by retiring principal across keys.
	 */
	{2,
	 "CREATE TABLE grants ("
	 "  grant_id    text COLLATE \"C\" PRIMARY KEY,"
	 "  key_id      text COLLATE \"C\" NOT NULL REFERENCES keys (id),"
	 "  name        text NOT NULL,"
	 "  grantee     text COLLATE \"C\" NOT NULL,"
	 "  retiring    text COLLATE \"C\" NOT NULL,"
	 "  operations  bigint NOT NULL CHECK (operations BETWEEN 1 AND 4294967295),"
	 "  constraints text NOT NULL,"
	 "  created     bigint NOT NULL"
	 ");"
	 "CREATE INDEX grants_by_key ON grants (key_id, grant_id);"
	 "CREATE INDEX grants_by_grantee ON grants (key_id, grantee, grant_id);"
	 "CREATE INDEX grants_by_retiring ON grants (retiring, grant_id);"},
	/*
	 * Imported key material, as the SQLite schema's step 4: the PendingImport
	 * state, valid_to (0 = never) and the versions' digests.  The state check
	 * was declared inline in step 1, so PostgreSQL named it keys_state_check.
	 * Columns with a constant default are added without rewriting the
	 * tables.  keys_expiry_due holds only keys whose material expires; id in
	 * it gives keys_due its order without a sort.
	 */
	{3,
	 "ALTER TABLE keys DROP CONSTRAINT keys_state_check;"
	 "ALTER TABLE keys ADD CONSTRAINT keys_state_check CHECK (state IN"
	 "  ('Enabled', 'Disabled', 'PendingDeletion', 'Destroyed', 'PendingImport'));"
	 "ALTER TABLE keys ADD COLUMN valid_to bigint NOT NULL DEFAULT 0;"
	 "ALTER TABLE key_versions ADD COLUMN digest bytea NOT NULL DEFAULT '\\x'::bytea;"
	 "CREATE INDEX keys_expiry_due ON keys (valid_to, id) WHERE valid_to <> 0;"},
	/*
	 * Imported material per version, as the SQLite schema's step 5: each
	 * version's expiry (valid_to, 0 = never) and KeyMaterialDescription, and
	 * the expiry of each imported key (until now its one version's) moved
	 * onto the versions holding imported material.  keys.valid_to stays, now
	 * the earliest expiry among the versions (hsm_store_key_set_material).
	 */
	{4,
	 "ALTER TABLE key_versions ADD COLUMN valid_to bigint NOT NULL DEFAULT 0;"
	 "ALTER TABLE key_versions ADD COLUMN description text NOT NULL DEFAULT '';"
	 "UPDATE key_versions v SET valid_to = k.valid_to FROM keys k "
	 "WHERE k.id = v.key_id AND k.valid_to <> 0 AND length(v.digest) > 0 "
	 "AND length(v.wrapped) > 0;"},
	/*
	 * Quorum approvals, as the SQLite schema's step 6: requests waiting for
	 * custodians and their approvers in the order they approved, with the
	 * same constraints and indexes.  Several nodes approve and use one request
	 * at once; store_pg_approvals.c says how they serialize.
	 */
	{5,
	 "CREATE TABLE approvals ("
	 "  id          text COLLATE \"C\" PRIMARY KEY,"
	 "  fingerprint text COLLATE \"C\" NOT NULL,"
	 "  operation   text NOT NULL,"
	 "  requester   text NOT NULL,"
	 "  request     text NOT NULL,"
	 "  state       text NOT NULL CHECK (state IN ('Pending', 'Used', 'Denied', 'Cancelled')),"
	 "  required    bigint NOT NULL CHECK (required BETWEEN 1 AND 16),"
	 "  created     bigint NOT NULL,"
	 "  expires     bigint NOT NULL,"
	 "  closed      bigint NOT NULL,"
	 "  closed_by   text NOT NULL"
	 ");"
	 "CREATE INDEX approvals_open ON approvals (fingerprint, state, expires);"
	 "CREATE INDEX approvals_newest ON approvals (created DESC, id);"
	 "CREATE INDEX approvals_expiry ON approvals (expires);"
	 "CREATE TABLE approval_votes ("
	 "  approval_id text COLLATE \"C\" NOT NULL REFERENCES approvals (id) ON DELETE CASCADE,"
	 "  approver    text COLLATE \"C\" NOT NULL,"
	 "  position    bigint NOT NULL CHECK (position BETWEEN 1 AND 16),"
	 "  created     bigint NOT NULL,"
	 "  PRIMARY KEY (approval_id, approver),"
	 "  UNIQUE (approval_id, position)"
	 ");"},
	/*
	 * Certificates, as the SQLite schema's step 7, with the same size checks
	 * (octet_length: bytes, whatever the encoding).  How creators on several
	 * nodes keep to HSM_MAX_CERTIFICATES: store_pg_certs.c.
	 */
	{6,
	 "CREATE TABLE certificates ("
	 "  cert_id   text COLLATE \"C\" PRIMARY KEY,"
	 "  label     text NOT NULL CHECK (octet_length(label) <= 256),"
	 "  object_id bytea NOT NULL CHECK (octet_length(object_id) <= 256),"
	 "  der       bytea NOT NULL CHECK (octet_length(der) BETWEEN 1 AND 32768),"
	 "  creator   text NOT NULL,"
	 "  created   bigint NOT NULL,"
	 "  not_after bigint NOT NULL DEFAULT 0"
	 ");"
	 "CREATE INDEX certificates_not_after ON certificates (not_after);"
	 "CREATE INDEX certificates_object_id ON certificates (object_id, cert_id);"
	 "CREATE INDEX certificates_label ON certificates (label, cert_id);"},
	/* Key usage, as the SQLite schema's step 8. */
	{7,
	 "CREATE TABLE key_usage ("
	 "  key_id     text COLLATE \"C\" PRIMARY KEY,"
	 "  operation  text NOT NULL,"
	 "  used_ms    bigint NOT NULL,"
	 "  request_id text NOT NULL"
	 ");"
	 "CREATE TABLE usage_tracking (since bigint NOT NULL);"},
};
_Static_assert(HSM_CERT_LABEL_MAX == 256 && HSM_CERT_OBJECT_ID_MAX == 256 &&
                   HSM_CERT_DER_MAX == 32768,
               "schema step 6 checks the certificate sizes: a change needs a new step");

#define MIGRATION_COUNT ((int)(sizeof(migrations) / sizeof(migrations[0])))

int pg_schema_latest(void)
{
	return migrations[MIGRATION_COUNT - 1].version;
}

int hsm_store_pg_schema_latest(void)
{
	return pg_schema_latest();
}

static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock(" PG_SCHEMA_LOCK ")";
static const char SQL_VERSION_TABLE[] = "CREATE TABLE IF NOT EXISTS schema_version ("
                                        "  version bigint PRIMARY KEY,"
                                        "  applied bigint NOT NULL)";
static const char SQL_CURRENT[] = "SELECT coalesce(max(version), 0) FROM schema_version";
static const char SQL_RECORD[] = "INSERT INTO schema_version (version, applied) "
                                 "VALUES ($1, extract(epoch FROM now())::bigint)";

typedef struct step {
	const migration *m; /* NULL: only create the version table and read the version */
	int64_t current;
} step;

/* Under the lock: reads the version and applies m if the database is still below it. */
static hsm_result step_body(pg_conn *c, void *arg)
{
	step *st = arg;
	PGresult *r = NULL;
	HSM_GUARD(pg_simple(c, SQL_LOCK, "lock the schema"));
	HSM_GUARD(pg_simple(c, SQL_VERSION_TABLE, "create the schema version table"));
	HSM_GUARD(pg_run(c, SQL_CURRENT, NULL, &r));
	hsm_result res = pg_col_i64(r, 0, 0, &st->current);
	PQclear(r);
	HSM_GUARD(res);
	if (st->m == NULL || st->current >= st->m->version)
		return HSM_SUCCESS;
	HSM_GUARD(pg_simple(c, st->m->sql, "apply a schema migration"));
	pg_params p;
	pg_params_init(&p);
	pg_p_i64(&p, st->m->version);
	HSM_GUARD(pg_run(c, SQL_RECORD, &p, NULL));
	st->current = st->m->version;
	return HSM_SUCCESS;
}

/* Two nodes opening a new store at once may both insert: readers take the earliest. */
static hsm_result usage_start_body(pg_conn *c, void *arg)
{
	(void)arg;
	return pg_simple(c,
	                 "INSERT INTO usage_tracking (since) "
	                 "SELECT floor(extract(epoch FROM now()))::bigint "
	                 "WHERE NOT EXISTS (SELECT 1 FROM usage_tracking)",
	                 "record when key uses began to be recorded");
}

hsm_result pg_schema_migrate(pg_store *s, int *version)
{
	step st = {NULL, 0};
	HSM_GUARD(pg_write(s, step_body, &st));
	int latest = pg_schema_latest();
	HSM_ENSURE(st.current <= latest, HSM_ERR_STORE,
	           "the store has schema version %lld, newer than this hsmd knows (%d): "
	           "upgrade hsmd to open it",
	           (long long)st.current, latest);
	HSM_ENSURE(st.current >= 0, HSM_ERR_STORE, "the store's schema version is corrupt");
	for (int i = 0; i < MIGRATION_COUNT; i++) {
		if (migrations[i].version <= st.current)
			continue;
		st.m = &migrations[i];
		HSM_GUARD(pg_write(s, step_body, &st));
	}
	/* When the store began recording key uses (the SQLite schema's note). */
	HSM_GUARD(pg_write(s, usage_start_body, NULL));
	*version = latest;
	return HSM_SUCCESS;
}
