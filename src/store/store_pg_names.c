/*
 * store_pg_names.c - aliases and tags in PostgreSQL.
 *
 * Writes lock the key row they depend on, so an alias cannot be attached to
 * a key another node is destroying at that moment, and the key state they
 * ask for (hsm_key_state_check) is the state the row holds; alias and tag
 * writers lock it FOR NO KEY UPDATE, so two nodes cannot together pass the
 * limit of aliases or tags a key may have.
 */
#include "store/store_pg.h"

#include <string.h>

#include "common/encoding.h"

/* ---- Aliases ---------------------------------------------------------------------- */

hsm_result pg_read_alias(const PGresult *r, int row, void *item)
{
	hsm_alias_record *a = item;
	HSM_GUARD(pg_col_text(r, row, 0, a->name, sizeof(a->name)));
	HSM_GUARD(pg_col_text(r, row, 1, a->key_id, sizeof(a->key_id)));
	HSM_GUARD(pg_col_i64(r, row, 2, &a->created));
	return pg_col_i64(r, row, 3, &a->updated);
}

static const char SQL_ALIAS_EXISTS[] = "SELECT 1 FROM aliases WHERE name = $1";
static const char SQL_ALIAS_EXISTS_LOCKED[] = "SELECT 1 FROM aliases WHERE name = $1 FOR UPDATE";
static const char SQL_ALIAS_TARGET_LOCKED[] =
	"SELECT key_id FROM aliases WHERE name = $1 FOR UPDATE";
static const char SQL_ALIAS_INSERT[] =
	"INSERT INTO aliases (" PG_ALIAS_COLS ") VALUES ($1, $2, $3, $4)";
static const char SQL_ALIAS_UPDATE[] =
	"UPDATE aliases SET key_id = $2, updated = $3 WHERE name = $1";
static const char SQL_ALIAS_COUNT_OTHERS[] =
	"SELECT count(*) FROM aliases WHERE key_id = $1 AND name <> $2";
static const char SQL_ALIAS_PKCS11_IDS_OTHERS[] =
	"SELECT " PG_ALIAS_COLS " FROM aliases WHERE key_id = $1 AND name <> $2 AND "
	ST_SQL_PKCS11_ID_NAME " ORDER BY name";
static const char SQL_ALIAS_DELETE[] = "DELETE FROM aliases WHERE name = $1";
static const char SQL_ALIAS_DELETE_FOR_KEY[] = "DELETE FROM aliases WHERE key_id = $1";
static const char SQL_ALIAS_GET[] = "SELECT " PG_ALIAS_COLS " FROM aliases WHERE name = $1";
static const char SQL_ALIAS_PAGE[] =
	"SELECT " PG_ALIAS_COLS " FROM aliases WHERE name > $1 ORDER BY name LIMIT $2";
static const char SQL_ALIAS_PAGE_FOR_KEY[] = "SELECT " PG_ALIAS_COLS " FROM aliases "
                                             "WHERE key_id = $3 AND name > $1 "
                                             "ORDER BY name LIMIT $2";

hsm_result pg_insert_alias(pg_conn *w, const hsm_alias_record *a)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, a->name);
	pg_p_text(&p, a->key_id);
	pg_p_i64(&p, a->created);
	pg_p_i64(&p, a->updated);
	return pg_run(w, SQL_ALIAS_INSERT, &p, NULL);
}

typedef struct alias_op {
	const char *name;
	const char *from;
	const char *key_id;
	const hsm_key_state_check *check;
	int64_t now;
	const char *after;
	size_t limit;
	hsm_alias_record rec;
	st_vec v;
	bool more;
} alias_op;

/* The one-CKA_ID rule (st_check_pkcs11_id), read under the key row lock. */
static hsm_result alias_id_free(pg_conn *w, const char *key_id, const char *name)
{
	pg_params p;
	PGresult *r = NULL;
	st_vec v;
	if (!hsm_str_has_prefix(name, HSM_PKCS11_ID_ALIAS))
		return HSM_SUCCESS;
	pg_params_init(&p);
	pg_p_text(&p, key_id);
	pg_p_text(&p, name);
	HSM_GUARD(pg_run(w, SQL_ALIAS_PKCS11_IDS_OTHERS, &p, &r));
	st_vec_init(&v, sizeof(hsm_alias_record));
	/* Within the limit, checked first: the key has fewer others than this. */
	hsm_result res = pg_collect(r, HSM_MAX_ALIASES_PER_KEY, pg_read_alias, NULL, &v, NULL);
	PQclear(r);
	if (hsm_ok(res))
		res = st_check_pkcs11_id(key_id, name, &v);
	st_vec_free(&v, NULL);
	return res;
}

/*
 * The key exists and may take the alias `name` (held by another key or
 * none).  The key row lock serializes alias writers of this key on every
 * node, so the count and the CKA_ID read hold until the transaction ends
 * (writes run at READ COMMITTED: each statement sees what the previous
 * holder of the lock committed).
 */
static hsm_result alias_key_accepts(pg_conn *w, const char *key_id, const char *name,
                                    const hsm_key_state_check *check)
{
	int64_t others = 0;
	HSM_GUARD(pg_key_lock_state(w, key_id, true, check, NULL));
	HSM_GUARD(pg_count(w, SQL_ALIAS_COUNT_OTHERS, key_id, name, &others));
	HSM_GUARD(hsm_store_alias_room(key_id, others));
	return alias_id_free(w, key_id, name);
}

static hsm_result alias_create_body(pg_conn *w, void *arg)
{
	alias_op *op = arg;
	bool taken = false;
	HSM_GUARD(pg_exists(w, SQL_ALIAS_EXISTS, op->name, &taken));
	HSM_ENSURE(!taken, HSM_ERR_ALREADY_EXISTS, "alias %s already exists", op->name);
	HSM_GUARD(alias_key_accepts(w, op->key_id, op->name, op->check));
	/* A concurrent create of the same name ends in the primary key: ALREADY_EXISTS. */
	hsm_alias_record a = {.created = op->now, .updated = op->now};
	HSM_GUARD(hsm_strcpy(a.name, sizeof(a.name), op->name));
	HSM_GUARD(hsm_strcpy(a.key_id, sizeof(a.key_id), op->key_id));
	return pg_insert_alias(w, &a);
}

hsm_result pg_alias_create(hsm_store *base, const char *name, const char *key_id, int64_t now,
                           const hsm_key_state_check *check)
{
	alias_op op = {.name = name, .key_id = key_id, .now = now, .check = check};
	return pg_write(pg_of(base), alias_create_body, &op);
}

static hsm_result alias_require_locked(pg_conn *w, const char *name)
{
	bool found = false;
	HSM_GUARD(pg_exists(w, SQL_ALIAS_EXISTS_LOCKED, name, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "alias %s does not exist", name);
	return HSM_SUCCESS;
}

/* The alias exists and, when `from` is given, still points at that key; its row stays locked. */
static hsm_result alias_lock_target(pg_conn *w, const char *name, const char *from)
{
	bool row = false;
	char target[HSM_UUID_STRLEN + 1] = "";
	HSM_GUARD(pg_text_of(w, SQL_ALIAS_TARGET_LOCKED, name, target, sizeof(target), &row));
	return st_check_alias_target(name, row ? target : NULL, from);
}

static hsm_result alias_update_body(pg_conn *w, void *arg)
{
	alias_op *op = arg;
	pg_params p;
	HSM_GUARD(alias_lock_target(w, op->name, op->from));
	HSM_GUARD(alias_key_accepts(w, op->key_id, op->name, op->check));
	pg_params_init(&p);
	pg_p_text(&p, op->name);
	pg_p_text(&p, op->key_id);
	pg_p_i64(&p, op->now);
	return pg_run(w, SQL_ALIAS_UPDATE, &p, NULL);
}

hsm_result pg_alias_update(hsm_store *base, const char *name, const char *from, const char *key_id,
                           int64_t now, const hsm_key_state_check *check)
{
	alias_op op = {.name = name, .from = from, .key_id = key_id, .now = now, .check = check};
	return pg_write(pg_of(base), alias_update_body, &op);
}

static hsm_result run_one_text(pg_conn *w, const char *sql, const char *text)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, text);
	return pg_run(w, sql, &p, NULL);
}

static hsm_result alias_delete_body(pg_conn *w, void *arg)
{
	alias_op *op = arg;
	HSM_GUARD(alias_require_locked(w, op->name));
	return run_one_text(w, SQL_ALIAS_DELETE, op->name);
}

hsm_result pg_alias_delete(hsm_store *base, const char *name)
{
	alias_op op = {.name = name};
	return pg_write(pg_of(base), alias_delete_body, &op);
}

hsm_result pg_alias_delete_for_key_in(pg_conn *w, const char *key_id)
{
	return run_one_text(w, SQL_ALIAS_DELETE_FOR_KEY, key_id);
}

static hsm_result alias_delete_for_key_body(pg_conn *w, void *arg)
{
	alias_op *op = arg;
	HSM_GUARD(pg_key_require_locked(w, op->key_id));
	return pg_alias_delete_for_key_in(w, op->key_id);
}

hsm_result pg_alias_delete_for_key(hsm_store *base, const char *key_id)
{
	alias_op op = {.key_id = key_id};
	return pg_write(pg_of(base), alias_delete_for_key_body, &op);
}

static hsm_result alias_get_body(pg_conn *c, void *arg)
{
	alias_op *op = arg;
	return pg_get_one(c, SQL_ALIAS_GET, op->name, "alias", pg_read_alias, &op->rec);
}

hsm_result pg_alias_get(hsm_store *base, const char *name, hsm_alias_record *out)
{
	alias_op op = {.name = name};
	HSM_GUARD(pg_read(pg_of(base), alias_get_body, &op));
	*out = op.rec;
	return HSM_SUCCESS;
}

static hsm_result alias_page_body(pg_conn *c, void *arg)
{
	alias_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	if (op->key_id != NULL)
		HSM_GUARD(pg_key_require(c, op->key_id));
	pg_params_init(&p);
	pg_p_text(&p, op->after);
	pg_p_i64(&p, (int64_t)op->limit + 1);
	if (op->key_id != NULL)
		pg_p_text(&p, op->key_id);
	HSM_GUARD(pg_run(c, op->key_id != NULL ? SQL_ALIAS_PAGE_FOR_KEY : SQL_ALIAS_PAGE, &p, &r));
	hsm_result res = pg_collect(r, op->limit, pg_read_alias, NULL, &op->v, &op->more);
	PQclear(r);
	return res;
}

hsm_result pg_alias_list(hsm_store *base, const char *key_id, const char *after, size_t limit,
                         hsm_alias_cb cb, void *arg, bool *truncated)
{
	alias_op op = {.key_id = key_id, .after = after, .limit = limit};
	st_vec_init(&op.v, sizeof(hsm_alias_record));
	hsm_result res = pg_read(pg_of(base), alias_page_body, &op);
	for (size_t i = 0; hsm_ok(res) && i < op.v.n; i++)
		res = cb(st_vec_at(&op.v, i), arg);
	if (hsm_ok(res))
		*truncated = op.more;
	st_vec_free(&op.v, NULL);
	return res;
}

/* ---- Tags ----------------------------------------------------------------------------- */

/* TagResource replaces the value of a tag key that exists (AWS KMS API reference). */
static const char SQL_TAG_UPSERT[] =
	"INSERT INTO tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3) "
	"ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value";
static const char SQL_TAG_INSERT[] =
	"INSERT INTO tags (key_id, tag_key, tag_value) VALUES ($1, $2, $3)";
static const char SQL_TAG_COUNT[] = "SELECT count(*) FROM tags WHERE key_id = $1";
static const char SQL_TAG_DELETE[] = "DELETE FROM tags WHERE key_id = $1 AND tag_key = $2";
static const char SQL_TAG_PAGE[] = "SELECT tag_key, tag_value FROM tags "
                                   "WHERE key_id = $1 AND tag_key > $2 "
                                   "ORDER BY tag_key LIMIT $3";

static hsm_result tag_write(pg_conn *w, const char *sql, const char *key_id, const char *tag_key,
                            const char *value)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, key_id);
	pg_p_text(&p, tag_key);
	if (value != NULL)
		pg_p_text(&p, value);
	return pg_run(w, sql, &p, NULL);
}

hsm_result pg_insert_tag(pg_conn *w, const char *key_id, const hsm_tag *t)
{
	return tag_write(w, SQL_TAG_INSERT, key_id, t->key, t->value);
}

typedef struct tag_op {
	const char *key_id;
	const hsm_key_state_check *check;
	size_t n;
	const hsm_tag *tags;
	const char *const *keys;
	const char *after;
	size_t limit;
	st_vec v;
	bool more;
} tag_op;

hsm_result pg_tags_put_in(pg_conn *w, const char *key_id, size_t n, const hsm_tag tags[])
{
	for (size_t i = 0; i < n; i++)
		HSM_GUARD(tag_write(w, SQL_TAG_UPSERT, key_id, tags[i].key, tags[i].value));
	/* Counted after the writes so replaced values do not count twice. */
	int64_t count = 0;
	HSM_GUARD(pg_count(w, SQL_TAG_COUNT, key_id, NULL, &count));
	HSM_ENSURE(count <= HSM_MAX_TAGS_PER_KEY, HSM_ERR_LIMIT_EXCEEDED,
	           "key %s would have %lld tags; at most %d are allowed", key_id, (long long)count,
	           HSM_MAX_TAGS_PER_KEY);
	return HSM_SUCCESS;
}

static hsm_result tags_put_body(pg_conn *w, void *arg)
{
	tag_op *op = arg;
	/* The key row lock serializes tag writers of this key on every node. */
	HSM_GUARD(pg_key_lock_state(w, op->key_id, true, op->check, NULL));
	return pg_tags_put_in(w, op->key_id, op->n, op->tags);
}

hsm_result pg_tags_put(hsm_store *base, const char *key_id, size_t n, const hsm_tag tags[],
                       const hsm_key_state_check *check)
{
	tag_op op = {.key_id = key_id, .check = check, .n = n, .tags = tags};
	return pg_write(pg_of(base), tags_put_body, &op);
}

static hsm_result tags_remove_body(pg_conn *w, void *arg)
{
	tag_op *op = arg;
	HSM_GUARD(pg_key_lock_state(w, op->key_id, false, op->check, NULL));
	for (size_t i = 0; i < op->n; i++)
		HSM_GUARD(tag_write(w, SQL_TAG_DELETE, op->key_id, op->keys[i], NULL));
	return HSM_SUCCESS;
}

hsm_result pg_tags_remove(hsm_store *base, const char *key_id, size_t n, const char *const keys[],
                          const hsm_key_state_check *check)
{
	tag_op op = {.key_id = key_id, .check = check, .n = n, .keys = keys};
	return pg_write(pg_of(base), tags_remove_body, &op);
}

static hsm_result read_tag(const PGresult *r, int row, void *item)
{
	hsm_tag *t = item;
	HSM_GUARD(pg_col_text(r, row, 0, t->key, sizeof(t->key)));
	return pg_col_text(r, row, 1, t->value, sizeof(t->value));
}

static hsm_result tag_page_body(pg_conn *c, void *arg)
{
	tag_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	HSM_GUARD(pg_key_require(c, op->key_id));
	pg_params_init(&p);
	pg_p_text(&p, op->key_id);
	pg_p_text(&p, op->after);
	pg_p_i64(&p, (int64_t)op->limit + 1);
	HSM_GUARD(pg_run(c, SQL_TAG_PAGE, &p, &r));
	hsm_result res = pg_collect(r, op->limit, read_tag, NULL, &op->v, &op->more);
	PQclear(r);
	return res;
}

hsm_result pg_tags_list(hsm_store *base, const char *key_id, const char *after, size_t limit,
                        hsm_tag_cb cb, void *arg, bool *truncated)
{
	tag_op op = {.key_id = key_id, .after = after, .limit = limit};
	st_vec_init(&op.v, sizeof(hsm_tag));
	hsm_result res = pg_read(pg_of(base), tag_page_body, &op);
	for (size_t i = 0; hsm_ok(res) && i < op.v.n; i++)
		res = cb(st_vec_at(&op.v, i), arg);
	if (hsm_ok(res))
		*truncated = op.more;
	st_vec_free(&op.v, NULL);
	return res;
}
