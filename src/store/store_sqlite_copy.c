/*
 * store_sqlite_copy.c - export and import for SQLite (hsm_store_copy).
 *
 * Export steps through each table inside one read transaction on a pooled
 * read connection (WAL: writers do not wait for it), passing rows to the
 * sink as it goes.  Import writes verbatim rows inside one write transaction.
 */
#include "store/store_sqlite.h"

#include <string.h>

/* ---- Export ----------------------------------------------------------------------- */

typedef struct meta_row {
	char name[256];
	hsm_buf value;
} meta_row;

typedef struct tag_row {
	char key_id[HSM_UUID_STRLEN + 1];
	hsm_tag tag;
} tag_row;

typedef union any_row {
	meta_row meta;
	hsm_user_record user;
	hsm_access_key_record access_key;
	hsm_key_record key;
	hsm_version_record version;
	hsm_alias_record alias;
	tag_row tag;
	hsm_grant_record grant;
	hsm_cert_record cert;
} any_row;

typedef enum row_kind {
	ROW_META,
	ROW_USER,
	ROW_AK,
	ROW_KEY,
	ROW_VERSION,
	ROW_ALIAS,
	ROW_TAG,
	ROW_GRANT,
	ROW_CERT
} row_kind;

/* Tables in the sink's order (referenced rows first), each in primary-key order. */
static const struct table {
	row_kind kind;
	const char *sql;
} tables[] = {
	{ROW_META, "SELECT name, value FROM meta ORDER BY name"},
	{ROW_USER, "SELECT " SQ_USER_COLS " FROM users ORDER BY name"},
	{ROW_AK, "SELECT " SQ_ACCESS_KEY_COLS " FROM access_keys ORDER BY id"},
	{ROW_KEY, "SELECT " SQ_KEY_COLS " FROM keys ORDER BY id"},
	{ROW_VERSION, "SELECT " SQ_VERSION_COLS " FROM key_versions ORDER BY key_id, version"},
	{ROW_ALIAS, "SELECT " SQ_ALIAS_COLS " FROM aliases ORDER BY name"},
	{ROW_TAG, "SELECT key_id, tag_key, tag_value FROM tags ORDER BY key_id, tag_key"},
	{ROW_GRANT, "SELECT " SQ_GRANT_COLS " FROM grants ORDER BY grant_id"},
	{ROW_CERT, "SELECT " SQ_CERT_COLS " FROM certificates ORDER BY cert_id"},
};

static hsm_result read_row(row_kind kind, sqlite3_stmt *st, any_row *row)
{
	switch (kind) {
	case ROW_META:
		hsm_buf_init_secure(&row->meta.value); /* metadata may be sensitive */
		HSM_GUARD(sq_col_text(st, 0, row->meta.name, sizeof(row->meta.name)));
		return sq_col_blob(st, 1, &row->meta.value);
	case ROW_USER:
		return sq_read_user(st, &row->user);
	case ROW_AK:
		return sq_read_access_key(st, &row->access_key);
	case ROW_KEY:
		return sq_read_key(st, &row->key);
	case ROW_VERSION:
		return sq_read_version(st, &row->version);
	case ROW_ALIAS:
		return sq_read_alias(st, &row->alias);
	case ROW_TAG:
		HSM_GUARD(sq_col_text(st, 0, row->tag.key_id, sizeof(row->tag.key_id)));
		HSM_GUARD(sq_col_text(st, 1, row->tag.tag.key, sizeof(row->tag.tag.key)));
		return sq_col_text(st, 2, row->tag.tag.value, sizeof(row->tag.tag.value));
	case ROW_GRANT:
		return sq_read_grant(st, &row->grant);
	case ROW_CERT:
		return sq_read_cert(st, &row->cert);
	}
	hsm_abort_at(__FILE__, __LINE__, "unknown row kind");
}

static hsm_result emit_row(row_kind kind, const any_row *row, const hsm_store_sink *k)
{
	switch (kind) {
	case ROW_META:
		return k->meta(k->arg, row->meta.name, &row->meta.value);
	case ROW_USER:
		return k->user(k->arg, &row->user);
	case ROW_AK:
		return k->access_key(k->arg, &row->access_key);
	case ROW_KEY:
		return k->key(k->arg, &row->key);
	case ROW_VERSION:
		return k->version(k->arg, &row->version);
	case ROW_ALIAS:
		return k->alias(k->arg, &row->alias);
	case ROW_TAG:
		return k->tag(k->arg, row->tag.key_id, &row->tag.tag);
	case ROW_GRANT:
		return k->grant(k->arg, &row->grant);
	case ROW_CERT:
		return k->certificate(k->arg, &row->cert);
	}
	hsm_abort_at(__FILE__, __LINE__, "unknown row kind");
}

static void clear_row(row_kind kind, any_row *row)
{
	switch (kind) {
	case ROW_META:
		hsm_buf_free(&row->meta.value);
		break;
	case ROW_AK:
		hsm_access_key_record_clear(&row->access_key);
		break;
	case ROW_KEY:
		hsm_key_record_clear(&row->key);
		break;
	case ROW_VERSION:
		hsm_version_record_clear(&row->version);
		break;
	case ROW_GRANT:
		hsm_grant_record_clear(&row->grant);
		break;
	case ROW_CERT:
		hsm_cert_record_clear(&row->cert);
		break;
	default:
		break;
	}
	memset(row, 0, sizeof(*row));
}

static hsm_result export_table(sq_conn *c, const struct table *t, const hsm_store_sink *sink)
{
	sqlite3_stmt *st;
	bool more = false;
	hsm_result res = HSM_SUCCESS;
	HSM_GUARD(sq_prepare(c, t->sql, &st));
	for (;;) {
		any_row row;
		memset(&row, 0, sizeof(row));
		HSM_TRY(sq_step(c, st, &more));
		if (!more)
			break;
		res = read_row(t->kind, st, &row);
		if (hsm_ok(res))
			res = emit_row(t->kind, &row, sink);
		clear_row(t->kind, &row);
		if (hsm_failed(res))
			goto out;
	}
out:
	sq_reset(st);
	return res;
}

hsm_result sq_export(hsm_store *base, const hsm_store_sink *sink)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	HSM_GUARD(sq_read_begin(s, &c));
	/* One read transaction: every table as of the same commit. */
	int rc = sqlite3_exec(c->db, "BEGIN", NULL, NULL, NULL);
	hsm_result res = rc == SQLITE_OK ? HSM_SUCCESS : sq_fail(c, rc, "begin an export");
	for (size_t i = 0; hsm_ok(res) && i < sizeof(tables) / sizeof(tables[0]); i++)
		res = export_table(c, &tables[i], sink);
	if (!sqlite3_get_autocommit(c->db))
		(void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL); /* read only: nothing to keep */
	sq_read_end(s, c);
	return res;
}

/* ---- Import ------------------------------------------------------------------------- */

/*
 * The records of schema upgrades (ST_UPGRADE_META) say what happened to a
 * store, not what it holds: a destination that was itself upgraded before the
 * import keeps its own.
 */
static hsm_result sink_meta(void *arg, const char *name, const hsm_buf *value)
{
	return sq_put_meta(arg, name, value, st_meta_is_upgrade(name));
}
static hsm_result sink_user(void *arg, const hsm_user_record *u)
{
	return sq_insert_user(arg, u);
}
static hsm_result sink_access_key(void *arg, const hsm_access_key_record *k)
{
	return sq_insert_access_key(arg, k);
}
static hsm_result sink_key(void *arg, const hsm_key_record *k)
{
	return sq_insert_key(arg, k);
}
static hsm_result sink_version(void *arg, const hsm_version_record *v)
{
	return sq_insert_version(arg, v);
}
static hsm_result sink_alias(void *arg, const hsm_alias_record *a)
{
	return sq_insert_alias(arg, a);
}
static hsm_result sink_tag(void *arg, const char *key_id, const hsm_tag *t)
{
	return sq_insert_tag(arg, key_id, t);
}
static hsm_result sink_grant(void *arg, const hsm_grant_record *g)
{
	return sq_insert_grant(arg, g);
}
static hsm_result sink_certificate(void *arg, const hsm_cert_record *c)
{
	return sq_insert_cert(arg, c);
}

/* Empty: no keys, no users, no metadata but the records of its own schema upgrades. */
static const char SQL_HOLDS_ANY[] = "SELECT 1 FROM meta WHERE substr(name, 1, 14) <> 'schema_upgrade' "
                                    "UNION ALL SELECT 1 FROM keys "
                                    "UNION ALL SELECT 1 FROM users LIMIT 1";

static hsm_result import_in(sq_conn *w, hsm_store_producer produce, void *arg)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(w, SQL_HOLDS_ANY, &st));
	hsm_result res = sq_step(w, st, &row);
	sq_reset(st);
	HSM_GUARD(res);
	HSM_ENSURE(!row, HSM_ERR_CONFLICT,
	           "the destination store is not empty (it holds metadata, keys or users)");
	const hsm_store_sink sink = {w,          sink_meta,    sink_user,  sink_access_key,
	                             sink_key,   sink_version, sink_alias, sink_tag,
	                             sink_grant, sink_certificate};
	return produce(&sink, arg);
}

hsm_result sq_import(hsm_store *base, hsm_store_producer produce, void *arg)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, import_in(w, produce, arg));
}

/* Reads meta, keys and users alone, which every schema has: a store opened as it is answers. */
hsm_result sq_holds_any(hsm_store *base, bool *any)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = sq_prepare(c, SQL_HOLDS_ANY, &st);
	if (hsm_ok(res)) {
		res = sq_step(c, st, &row);
		sq_reset(st);
	}
	sq_read_end(s, c);
	if (hsm_ok(res))
		*any = row;
	return res;
}
