/*
 * store_pg_copy.c - export, import and snapshot for PostgreSQL.
 *
 * Export reads every table inside one REPEATABLE READ READ ONLY transaction,
 * so what it passes on is one consistent state of the database however long
 * it takes, while other nodes keep writing.  Tables are read in pages by
 * primary key (keyset pagination), so memory stays bounded at any size.
 */
#include "store/store_pg.h"

#include <stdlib.h>
#include <string.h>

/* Rows per page of an export. */
#define EXPORT_PAGE 500

/* ---- Export ---------------------------------------------------------------------- */

typedef struct table {
	/* $1, $2: the last row's key (text, and a second part or "" / 0); $3: page size. */
	const char *sql;
	size_t item_size;
	pg_row_reader read;
	void (*clear)(void *item);
	hsm_result (*emit)(const hsm_store_sink *sink, const void *item);
	/* The item's key, to start the next page after it. */
	void (*cursor)(const void *item, const char **text, const char **text2, int64_t *num);
	bool numeric_second; /* whether $2 is the number (else text) */
} table;

typedef struct meta_item {
	char name[256];
	hsm_buf value;
} meta_item;

typedef struct tag_item {
	char key_id[HSM_UUID_STRLEN + 1];
	hsm_tag tag;
} tag_item;

static hsm_result read_meta(const PGresult *r, int row, void *item)
{
	meta_item *m = item;
	hsm_buf_init_secure(&m->value); /* metadata may be sensitive */
	HSM_GUARD(pg_col_text(r, row, 0, m->name, sizeof(m->name)));
	return pg_col_bytea(r, row, 1, &m->value);
}

static hsm_result read_tag_item(const PGresult *r, int row, void *item)
{
	tag_item *t = item;
	HSM_GUARD(pg_col_text(r, row, 0, t->key_id, sizeof(t->key_id)));
	HSM_GUARD(pg_col_text(r, row, 1, t->tag.key, sizeof(t->tag.key)));
	return pg_col_text(r, row, 2, t->tag.value, sizeof(t->tag.value));
}

static void clear_meta(void *item)
{
	hsm_buf_free(&((meta_item *)item)->value);
}
static void clear_key(void *item)
{
	hsm_key_record_clear(item);
}
static void clear_version(void *item)
{
	hsm_version_record_clear(item);
}
static void clear_access_key(void *item)
{
	hsm_access_key_record_clear(item);
}
static void clear_grant(void *item)
{
	hsm_grant_record_clear(item);
}
static void clear_cert(void *item)
{
	hsm_cert_record_clear(item);
}

static hsm_result emit_meta(const hsm_store_sink *k, const void *item)
{
	const meta_item *m = item;
	return k->meta(k->arg, m->name, &m->value);
}
static hsm_result emit_user(const hsm_store_sink *k, const void *item)
{
	return k->user(k->arg, item);
}
static hsm_result emit_access_key(const hsm_store_sink *k, const void *item)
{
	return k->access_key(k->arg, item);
}
static hsm_result emit_key(const hsm_store_sink *k, const void *item)
{
	return k->key(k->arg, item);
}
static hsm_result emit_version(const hsm_store_sink *k, const void *item)
{
	return k->version(k->arg, item);
}
static hsm_result emit_alias(const hsm_store_sink *k, const void *item)
{
	return k->alias(k->arg, item);
}
static hsm_result emit_tag(const hsm_store_sink *k, const void *item)
{
	const tag_item *t = item;
	return k->tag(k->arg, t->key_id, &t->tag);
}
static hsm_result emit_grant(const hsm_store_sink *k, const void *item)
{
	return k->grant(k->arg, item);
}
static hsm_result emit_cert(const hsm_store_sink *k, const void *item)
{
	return k->certificate(k->arg, item);
}

static void cursor_meta(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)b, (void)n;
	*a = ((const meta_item *)item)->name;
}
static void cursor_user(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)b, (void)n;
	*a = ((const hsm_user_record *)item)->name;
}
static void cursor_access_key(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)b, (void)n;
	*a = ((const hsm_access_key_record *)item)->access_key_id;
}
static void cursor_key(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)b, (void)n;
	*a = ((const hsm_key_record *)item)->key_id;
}
static void cursor_version(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)b;
	const hsm_version_record *v = item;
	*a = v->key_id;
	*n = v->version;
}
static void cursor_alias(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)b, (void)n;
	*a = ((const hsm_alias_record *)item)->name;
}
static void cursor_tag(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)n;
	const tag_item *t = item;
	*a = t->key_id;
	*b = t->tag.key;
}
static void cursor_grant(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)b, (void)n;
	*a = ((const hsm_grant_record *)item)->grant_id;
}
static void cursor_cert(const void *item, const char **a, const char **b, int64_t *n)
{
	(void)b, (void)n;
	*a = ((const hsm_cert_record *)item)->cert_id;
}

/* $2 is unused by single-column keys but still typed, so every statement takes three. */
static const table tables[] = {
	{"SELECT name, value FROM meta WHERE name > $1 AND $2::text IS NOT NULL "
	 "ORDER BY name LIMIT $3",
	 sizeof(meta_item), read_meta, clear_meta, emit_meta, cursor_meta, false},
	{"SELECT " PG_USER_COLS " FROM users WHERE name > $1 AND $2::text IS NOT NULL "
	 "ORDER BY name LIMIT $3",
	 sizeof(hsm_user_record), pg_read_user, NULL, emit_user, cursor_user, false},
	{"SELECT " PG_ACCESS_KEY_COLS " FROM access_keys WHERE id > $1 AND $2::text IS NOT NULL "
	 "ORDER BY id LIMIT $3",
	 sizeof(hsm_access_key_record), pg_read_access_key, clear_access_key, emit_access_key,
	 cursor_access_key, false},
	{"SELECT " PG_KEY_COLS " FROM keys WHERE id > $1 AND $2::text IS NOT NULL "
	 "ORDER BY id LIMIT $3",
	 sizeof(hsm_key_record), pg_read_key, clear_key, emit_key, cursor_key, false},
	{"SELECT " PG_VERSION_COLS " FROM key_versions WHERE (key_id, version) > ($1, $2::bigint) "
	 "ORDER BY key_id, version LIMIT $3",
	 sizeof(hsm_version_record), pg_read_version, clear_version, emit_version, cursor_version,
	 true},
	{"SELECT " PG_ALIAS_COLS " FROM aliases WHERE name > $1 AND $2::text IS NOT NULL "
	 "ORDER BY name LIMIT $3",
	 sizeof(hsm_alias_record), pg_read_alias, NULL, emit_alias, cursor_alias, false},
	{"SELECT key_id, tag_key, tag_value FROM tags WHERE (key_id, tag_key) > ($1, $2::text) "
	 "ORDER BY key_id, tag_key LIMIT $3",
	 sizeof(tag_item), read_tag_item, NULL, emit_tag, cursor_tag, false},
	{"SELECT " PG_GRANT_COLS " FROM grants WHERE grant_id > $1 AND $2::text IS NOT NULL "
	 "ORDER BY grant_id LIMIT $3",
	 sizeof(hsm_grant_record), pg_read_grant, clear_grant, emit_grant, cursor_grant, false},
	{"SELECT " PG_CERT_COLS " FROM certificates WHERE cert_id > $1 AND $2::text IS NOT NULL "
	 "ORDER BY cert_id LIMIT $3",
	 sizeof(hsm_cert_record), pg_read_cert, clear_cert, emit_cert, cursor_cert, false},
};

typedef struct export_op {
	const hsm_store_sink *sink;
} export_op;

/* One page after the cursor into v; *more tells whether the table may hold more. */
static hsm_result export_page(pg_conn *c, const table *t, const char *a, const char *b,
                              int64_t n, st_vec *v, bool *more)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, a);
	if (t->numeric_second)
		pg_p_i64(&p, n);
	else
		pg_p_text(&p, b);
	pg_p_i64(&p, EXPORT_PAGE);
	HSM_GUARD(pg_run(c, t->sql, &p, &r));
	hsm_result res = pg_collect(r, EXPORT_PAGE, t->read, t->clear, v, NULL);
	*more = PQntuples(r) == EXPORT_PAGE;
	PQclear(r);
	return res;
}

static hsm_result export_table(pg_conn *c, const table *t, const hsm_store_sink *sink)
{
	/* The cursor is copied out of the page before the page is freed. */
	char a[HSM_ALIAS_MAX + 1] = "", b[sizeof(((hsm_tag *)0)->key)] = "";
	int64_t n = 0;
	hsm_result res = HSM_SUCCESS;
	for (bool more = true; more && hsm_ok(res);) {
		st_vec v;
		st_vec_init(&v, t->item_size);
		res = export_page(c, t, a, b, n, &v, &more);
		for (size_t i = 0; hsm_ok(res) && i < v.n; i++)
			res = t->emit(sink, st_vec_at(&v, i));
		if (hsm_ok(res) && v.n > 0) {
			const char *ca = "", *cb = "";
			t->cursor(st_vec_at(&v, v.n - 1), &ca, &cb, &n);
			res = hsm_strcpy(a, sizeof(a), ca);
			if (hsm_ok(res))
				res = hsm_strcpy(b, sizeof(b), cb);
		}
		st_vec_free(&v, t->clear);
	}
	return res;
}

/*
 * The export reads the tables this build knows, so it must read a database
 * at exactly this build's schema.  The version is read again here, in the
 * export's own snapshot: in a cluster being upgraded a newer node may have
 * migrated the database since this node opened it, and a copy that left
 * out the newer tables, labelled with this build's schema, would lose them
 * silently on restore.
 */
static hsm_result check_exportable(pg_conn *c)
{
	int64_t current = 0;
	int known = pg_schema_latest();
	HSM_GUARD(pg_schema_current(c, &current));
	HSM_GUARD(pg_schema_not_newer(current, " to back up or copy the store"));
	HSM_ENSURE(current == known, HSM_ERR_STORE,
	           "the store is at schema %lld, older than this build's (%d): start this "
	           "version's hsmd on it once (which migrates it), or back it up with the "
	           "hsmctl of its own version",
	           (long long)current, known);
	return HSM_SUCCESS;
}

static hsm_result export_body(pg_conn *c, void *arg)
{
	export_op *op = arg;
	HSM_GUARD(check_exportable(c));
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
		HSM_GUARD(export_table(c, &tables[i], op->sink));
	return HSM_SUCCESS;
}

hsm_result pg_export(hsm_store *base, const hsm_store_sink *sink)
{
	export_op op = {sink};
	return pg_read_snapshot(pg_of(base), export_body, &op);
}

/* ---- Import ------------------------------------------------------------------------ */

/*
 * The records of schema upgrades (ST_UPGRADE_META) say what happened to a
 * store, not what it holds: a destination that was itself upgraded before the
 * import keeps its own.
 */
static hsm_result sink_meta(void *arg, const char *name, const hsm_buf *value)
{
	return pg_put_meta(arg, name, value, st_meta_is_upgrade(name));
}
static hsm_result sink_user(void *arg, const hsm_user_record *u)
{
	return pg_insert_user(arg, u);
}
static hsm_result sink_access_key(void *arg, const hsm_access_key_record *k)
{
	return pg_insert_access_key(arg, k);
}
static hsm_result sink_key(void *arg, const hsm_key_record *k)
{
	return pg_insert_key(arg, k);
}
static hsm_result sink_version(void *arg, const hsm_version_record *v)
{
	return pg_insert_version(arg, v);
}
static hsm_result sink_alias(void *arg, const hsm_alias_record *a)
{
	return pg_insert_alias(arg, a);
}
static hsm_result sink_tag(void *arg, const char *key_id, const hsm_tag *t)
{
	return pg_insert_tag(arg, key_id, t);
}
static hsm_result sink_grant(void *arg, const hsm_grant_record *g)
{
	return pg_insert_grant(arg, g);
}
static hsm_result sink_certificate(void *arg, const hsm_cert_record *c)
{
	return pg_insert_cert(arg, c);
}

typedef struct import_op {
	hsm_store_producer produce;
	void *arg;
} import_op;

/* Empty: no keys, no users, no metadata but the records of its own schema upgrades. */
static const char SQL_EMPTY[] = "SELECT (SELECT count(*) FROM (SELECT 1 FROM meta WHERE "
                                "substr(name, 1, 14) <> 'schema_upgrade' LIMIT 1) m) + "
                                "(SELECT count(*) FROM (SELECT 1 FROM keys LIMIT 1) k) + "
                                "(SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1) u)";

static hsm_result import_body(pg_conn *w, void *arg)
{
	import_op *op = arg;
	PGresult *r = NULL;
	int64_t held = 0;
	/*
	 * Another node may be writing: the lock makes the emptiness check and
	 * the import one step (writers wait; LOCK waits at most lock_timeout).
	 */
	HSM_GUARD(pg_simple(w,
	                    "LOCK TABLE meta, keys, key_versions, aliases, tags, grants, users, "
	                    "access_keys, certificates IN SHARE ROW EXCLUSIVE MODE",
	                    "lock the store for an import"));
	HSM_GUARD(pg_run(w, SQL_EMPTY, NULL, &r));
	hsm_result res = pg_col_i64(r, 0, 0, &held);
	PQclear(r);
	HSM_GUARD(res);
	HSM_ENSURE(held == 0, HSM_ERR_CONFLICT,
	           "the destination store is not empty (it holds metadata, keys or users)");
	const hsm_store_sink sink = {w,          sink_meta,    sink_user,  sink_access_key,
	                             sink_key,   sink_version, sink_alias, sink_tag,
	                             sink_grant, sink_certificate};
	return op->produce(&sink, op->arg);
}

hsm_result pg_import(hsm_store *base, hsm_store_producer produce, void *arg)
{
	import_op op = {produce, arg};
	return pg_write(pg_of(base), import_body, &op);
}

static hsm_result holds_any_body(pg_conn *c, void *arg)
{
	PGresult *r = NULL;
	int64_t held = 0;
	HSM_GUARD(pg_run(c, SQL_EMPTY, NULL, &r));
	hsm_result res = pg_col_i64(r, 0, 0, &held);
	PQclear(r);
	if (hsm_ok(res))
		*(bool *)arg = held != 0;
	return res;
}

/* Reads meta, keys and users alone, which every schema has: a store opened as it is answers. */
hsm_result pg_holds_any(hsm_store *base, bool *any)
{
	return pg_read(pg_of(base), holds_any_body, any);
}

/* ---- Snapshot --------------------------------------------------------------------------- */

/* Backups and restores handle SQLite store files: PostgreSQL's snapshot is one (store.h). */
hsm_result pg_snapshot(hsm_store *base, const char *path)
{
	return hsm_store_snapshot_to_sqlite(base, path);
}
