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
#include <string.h>

#include "common/log.h"

/* pg_advisory_xact_lock key: "HSMD" as a number, so other applications' locks do not collide. */
#define PG_SCHEMA_LOCK "1213418820"

typedef struct migration {
	int version;
	const char *sql;
	/* What SQL alone does not say, run in the step's transaction after sql (or NULL). */
	hsm_result (*code)(pg_conn *c);
} migration;

static hsm_result certificates_fill_not_after(pg_conn *c);

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
	 "CREATE INDEX access_keys_by_user ON access_keys (user_name, id);",
	 NULL},
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
	 "CREATE INDEX grants_by_retiring ON grants (retiring, grant_id);",
	 NULL},
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
	 "CREATE INDEX keys_expiry_due ON keys (valid_to, id) WHERE valid_to <> 0;",
	 NULL},
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
	 "AND length(v.wrapped) > 0;",
	 NULL},
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
	 ");",
	 NULL},
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
	 "CREATE INDEX certificates_label ON certificates (label, cert_id);",
	 NULL},
	/* Key usage, as the SQLite schema's step 8. */
	{7,
	 "CREATE TABLE key_usage ("
	 "  key_id     text COLLATE \"C\" PRIMARY KEY,"
	 "  operation  text NOT NULL,"
	 "  used_ms    bigint NOT NULL,"
	 "  request_id text NOT NULL"
	 ");"
	 "CREATE TABLE usage_tracking (since bigint NOT NULL);",
	 NULL},
	/*
	 * The certificates table as step 6 now reads, as the SQLite schema's
	 * step 9: step 6 was edited after it shipped (not_after and its index,
	 * then the object id and label indexes), so a store that took its first
	 * version is marked as having it without them.  not_after is filled in
	 * from each certificate's DER (certificates_fill_not_after), as 0 would
	 * count as expiring.
	 */
	{8,
	 "ALTER TABLE certificates ADD COLUMN IF NOT EXISTS not_after bigint NOT NULL DEFAULT 0;"
	 "CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);"
	 "CREATE INDEX IF NOT EXISTS certificates_object_id ON certificates (object_id, cert_id);"
	 "CREATE INDEX IF NOT EXISTS certificates_label ON certificates (label, cert_id);",
	 certificates_fill_not_after},
	/* The audit outbox, as the SQLite schema's step 10. */
	{9,
	 "CREATE TABLE IF NOT EXISTS audit_outbox ("
	 "  node_id       text COLLATE \"C\" NOT NULL,"
	 "  request_id    text COLLATE \"C\" NOT NULL,"
	 "  created_ms    bigint NOT NULL,"
	 "  operation     text NOT NULL,"
	 "  principal     text NOT NULL DEFAULT '',"
	 "  access_key_id text NOT NULL DEFAULT '',"
	 "  source        text NOT NULL DEFAULT '',"
	 "  key_id        text NOT NULL DEFAULT '',"
	 "  PRIMARY KEY (node_id, request_id)"
	 ");"
	 "CREATE INDEX IF NOT EXISTS audit_outbox_order "
	 "ON audit_outbox (node_id, created_ms, request_id);",
	 NULL},
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

size_t hsm_store_pg_schema_steps(void)
{
	return (size_t)MIGRATION_COUNT;
}

int hsm_store_pg_schema_step(size_t i, const char **sql)
{
	HSM_ASSERT(i < (size_t)MIGRATION_COUNT);
	*sql = migrations[i].sql;
	return migrations[i].version;
}

/* ---- Step 8: the certificates' notAfter ---------------------------------------------------- */

static const char SQL_CERT_UNFILLED[] = "SELECT cert_id, der FROM certificates "
                                        "WHERE not_after = 0 AND cert_id > $1 "
                                        "ORDER BY cert_id LIMIT 1";
static const char SQL_CERT_FILL[] = "UPDATE certificates SET not_after = $2 WHERE cert_id = $1";

/* The next certificate after `after` whose not_after is 0, and what its DER says (or 0). */
static hsm_result next_unfilled(pg_conn *c, const char *after, char id[HSM_UUID_STRLEN + 1],
                                int64_t *not_after, bool *found)
{
	PGresult *r = NULL;
	hsm_buf der = {0};
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, after);
	HSM_GUARD(pg_run(c, SQL_CERT_UNFILLED, &p, &r));
	hsm_result res = HSM_SUCCESS;
	*found = PQntuples(r) > 0;
	if (*found)
		res = pg_col_text(r, 0, 0, id, HSM_UUID_STRLEN + 1);
	if (*found && hsm_ok(res))
		res = pg_col_bytea(r, 0, 1, &der);
	PQclear(r);
	if (*found && hsm_ok(res) && hsm_failed(st_cert_not_after(der.data, der.len, not_after))) {
		hsm_warn("store: certificate %s: its notAfter cannot be read, so it stays 0", id);
		*not_after = 0;
	}
	hsm_buf_free(&der);
	return res;
}

static hsm_result certificates_fill_not_after(pg_conn *c)
{
	char after[HSM_UUID_STRLEN + 1] = "";
	for (;;) {
		char id[HSM_UUID_STRLEN + 1];
		int64_t not_after = 0;
		bool found = false;
		HSM_GUARD(next_unfilled(c, after, id, &not_after, &found));
		if (!found)
			return HSM_SUCCESS;
		if (not_after != 0) {
			pg_params p;
			pg_params_init(&p);
			pg_p_text(&p, id);
			pg_p_i64(&p, not_after);
			HSM_GUARD(pg_run(c, SQL_CERT_FILL, &p, NULL));
		}
		memcpy(after, id, sizeof(after));
	}
}

static const char SQL_LOCK[] = "SELECT pg_advisory_xact_lock(" PG_SCHEMA_LOCK ")";
static const char SQL_VERSION_TABLE[] = "CREATE TABLE IF NOT EXISTS schema_version ("
                                        "  version bigint PRIMARY KEY,"
                                        "  applied bigint NOT NULL)";
static const char SQL_CURRENT[] = "SELECT coalesce(max(version), 0) FROM schema_version";
static const char SQL_RECORD[] = "INSERT INTO schema_version (version, applied) "
                                 "VALUES ($1, extract(epoch FROM now())::bigint)";
/* The store's record of an upgrade (ST_UPGRADE_META): the earliest version stays. */
static const char SQL_UPGRADE[] = "INSERT INTO meta (name, value) VALUES ($1, $2) "
                                  "ON CONFLICT (name) DO NOTHING";

typedef struct step {
	const migration *m; /* NULL: only create the version table and read the version */
	int64_t current;
	int64_t before;     /* the version read under the lock, before m */
	int64_t start;      /* the version this opening found first: 0 for a new database */
	bool applied;       /* m was applied by this attempt (not by another node first) */
} step;

/*
 * Keeps, in the step's transaction, the version the store had before it, so
 * that the upgrade reaches an audit trail even if this start goes no further.
 */
static hsm_result record_upgrade(pg_conn *c, int64_t before)
{
	char name[64], value[24];
	snprintf(name, sizeof(name), ST_UPGRADE_META "postgresql:%d", pg_schema_latest());
	int n = snprintf(value, sizeof(value), "%lld", (long long)before);
	hsm_buf v = {.data = (uint8_t *)value, .len = (size_t)n};
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, name);
	pg_p_bytea(&p, &v);
	return pg_run(c, SQL_UPGRADE, &p, NULL);
}

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
	st->before = st->current;
	st->applied = false; /* set again by each attempt pg_write makes */
	if (st->m == NULL || st->current >= st->m->version)
		return HSM_SUCCESS;
	HSM_GUARD(pg_simple(c, st->m->sql, "apply a schema migration"));
	if (st->m->code != NULL)
		HSM_GUARD(st->m->code(c));
	pg_params p;
	pg_params_init(&p);
	pg_p_i64(&p, st->m->version);
	HSM_GUARD(pg_run(c, SQL_RECORD, &p, NULL));
	if (st->start > 0)
		HSM_GUARD(record_upgrade(c, st->before));
	st->current = st->m->version;
	st->applied = true;
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

hsm_result pg_schema_not_newer(int64_t current, const char *tail)
{
	int known = pg_schema_latest();
	HSM_ENSURE(current <= known, HSM_ERR_STORE,
	           "the store was upgraded to schema %lld by a newer hsmd; upgrade this node "
	           "(it knows schema %d)%s",
	           (long long)current, known, tail);
	return HSM_SUCCESS;
}

hsm_result pg_schema_check(int64_t current)
{
	return st_check_schema(current, pg_schema_latest());
}

hsm_result pg_schema_current(pg_conn *c, int64_t *out)
{
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_CURRENT, NULL, &r));
	hsm_result res = pg_col_i64(r, 0, 0, out);
	PQclear(r);
	return res;
}

static const char SQL_HAS_VERSION_TABLE[] = "SELECT to_regclass('schema_version') IS NOT NULL";

typedef struct existing {
	bool found;
	int64_t current;
} existing;

static hsm_result read_body(pg_conn *c, void *arg)
{
	existing *e = arg;
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_HAS_VERSION_TABLE, NULL, &r));
	hsm_result res = pg_col_bool(r, 0, 0, &e->found);
	PQclear(r);
	HSM_GUARD(res);
	return e->found ? pg_schema_current(c, &e->current) : HSM_SUCCESS;
}

hsm_result pg_schema_read(pg_store *s, int *version)
{
	existing e = {false, 0};
	HSM_GUARD(pg_read_snapshot(s, read_body, &e));
	HSM_ENSURE(e.found, HSM_ERR_NOT_FOUND,
	           "no hsmd store in that PostgreSQL database (it has no schema_version table)");
	HSM_GUARD(pg_schema_check(e.current));
	*version = (int)e.current;
	return HSM_SUCCESS;
}

hsm_result pg_schema_migrate(pg_store *s, int *version, int *migrated_from)
{
	step st = {NULL, 0, 0, 0, false};
	HSM_GUARD(pg_write(s, step_body, &st));
	st.start = st.current;
	int latest = pg_schema_latest();
	HSM_GUARD(pg_schema_check(st.current));
	int64_t from = -1; /* the version before the first step this node applied */
	for (int i = 0; i < MIGRATION_COUNT; i++) {
		if (migrations[i].version <= st.current)
			continue;
		st.m = &migrations[i];
		HSM_GUARD(pg_write(s, step_body, &st));
		if (st.applied && from < 0)
			from = st.before;
	}
	/*
	 * An upgrade is said (a new database, from 0, is a creation) by the node
	 * that made it: steps another node applied first are not this node's.
	 */
	*migrated_from = 0;
	if (from > 0) {
		hsm_info("store: PostgreSQL schema migrated from version %lld to %d", (long long)from,
		         latest);
		*migrated_from = (int)from;
	}
	/* When the store began recording key uses (the SQLite schema's note). */
	HSM_GUARD(pg_write(s, usage_start_body, NULL));
	*version = latest;
	return HSM_SUCCESS;
}
