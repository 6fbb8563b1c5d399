/*
 * store_sqlite_names.c - aliases and tags in SQLite.
 */
#include "store/store_sqlite.h"

#include <string.h>

#include "common/encoding.h"

/* ---- Aliases ---------------------------------------------------------------------- */

#define ALIAS_COLS SQ_ALIAS_COLS

hsm_result sq_read_alias(sqlite3_stmt *st, void *item)
{
	hsm_alias_record *a = item;
	HSM_GUARD(sq_col_text(st, 0, a->name, sizeof(a->name)));
	HSM_GUARD(sq_col_text(st, 1, a->key_id, sizeof(a->key_id)));
	a->created = sqlite3_column_int64(st, 2);
	a->updated = sqlite3_column_int64(st, 3);
	return HSM_SUCCESS;
}

static const char SQL_ALIAS_EXISTS[] = "SELECT 1 FROM aliases WHERE name = ?1";
static const char SQL_ALIAS_TARGET[] = "SELECT key_id FROM aliases WHERE name = ?1";
static const char SQL_ALIAS_INSERT[] =
	"INSERT INTO aliases (" ALIAS_COLS ") VALUES (?1, ?2, ?3, ?3)";
static const char SQL_ALIAS_IMPORT[] =
	"INSERT INTO aliases (" ALIAS_COLS ") VALUES (?1, ?2, ?3, ?4)";
static const char SQL_ALIAS_UPDATE[] =
	"UPDATE aliases SET key_id = ?2, updated = ?3 WHERE name = ?1";
static const char SQL_ALIAS_COUNT_OTHERS[] =
	"SELECT count(*) FROM aliases WHERE key_id = ?1 AND name <> ?2";
static const char SQL_ALIAS_PKCS11_IDS_OTHERS[] =
	"SELECT " ALIAS_COLS " FROM aliases WHERE key_id = ?1 AND name <> ?2 AND "
	ST_SQL_PKCS11_ID_NAME " ORDER BY name";
static const char SQL_ALIAS_DELETE[] = "DELETE FROM aliases WHERE name = ?1";
static const char SQL_ALIAS_DELETE_FOR_KEY[] = "DELETE FROM aliases WHERE key_id = ?1";
static const char SQL_ALIAS_GET[] = "SELECT " ALIAS_COLS " FROM aliases WHERE name = ?1";
static const char SQL_ALIAS_PAGE[] =
	"SELECT " ALIAS_COLS " FROM aliases WHERE name > ?1 ORDER BY name LIMIT ?2";
static const char SQL_ALIAS_PAGE_FOR_KEY[] = "SELECT " ALIAS_COLS " FROM aliases "
                                             "WHERE key_id = ?3 AND name > ?1 "
                                             "ORDER BY name LIMIT ?2";

/* Runs sql with ?1 = name, ?2 = key_id (unless NULL), ?3 = now. */
static hsm_result alias_write(sq_conn *w, const char *sql, const char *name, const char *key_id,
                              int64_t now)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, sql, &st));
	sq_bind_text(w, st, 1, name);
	if (key_id != NULL) {
		sq_bind_text(w, st, 2, key_id);
		sq_bind_i64(w, st, 3, now);
	}
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

/* The one-CKA_ID rule (st_check_pkcs11_id), read on the write connection. */
static hsm_result alias_id_free(sq_conn *w, const char *key_id, const char *name)
{
	sqlite3_stmt *st;
	st_vec v;
	if (!hsm_str_has_prefix(name, HSM_PKCS11_ID_ALIAS))
		return HSM_SUCCESS;
	st_vec_init(&v, sizeof(hsm_alias_record));
	HSM_GUARD(sq_prepare(w, SQL_ALIAS_PKCS11_IDS_OTHERS, &st));
	sq_bind_text(w, st, 1, key_id);
	sq_bind_text(w, st, 2, name);
	/* Within the limit, checked first: the key has fewer others than this. */
	hsm_result res = sq_collect(w, st, HSM_MAX_ALIASES_PER_KEY, sq_read_alias, NULL, &v, NULL);
	sq_reset(st);
	if (hsm_ok(res))
		res = st_check_pkcs11_id(key_id, name, &v);
	st_vec_free(&v, NULL);
	return res;
}

/*
 * The key exists and may take the alias `name` (held by another key or
 * none).  Writes are serialized (sq_write_begin), so what this reads holds
 * until the write ends.
 */
static hsm_result alias_key_accepts(sq_conn *w, const char *key_id, const char *name,
                                    const hsm_key_state_check *check)
{
	int64_t others = 0;
	HSM_GUARD(sq_key_state(w, key_id, check, NULL));
	HSM_GUARD(sq_count(w, SQL_ALIAS_COUNT_OTHERS, key_id, name, &others));
	HSM_GUARD(hsm_store_alias_room(key_id, others));
	return alias_id_free(w, key_id, name);
}

static hsm_result alias_create_in(sq_conn *w, const char *name, const char *key_id, int64_t now,
                                  const hsm_key_state_check *check)
{
	bool taken = false;
	HSM_GUARD(sq_exists(w, SQL_ALIAS_EXISTS, name, &taken));
	HSM_ENSURE(!taken, HSM_ERR_ALREADY_EXISTS, "alias %s already exists", name);
	HSM_GUARD(alias_key_accepts(w, key_id, name, check));
	return alias_write(w, SQL_ALIAS_INSERT, name, key_id, now);
}

hsm_result sq_alias_create(hsm_store *base, const char *name, const char *key_id, int64_t now,
                           const hsm_key_state_check *check)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, alias_create_in(w, name, key_id, now, check));
}

static hsm_result alias_require(sq_conn *c, const char *name)
{
	bool found = false;
	HSM_GUARD(sq_exists(c, SQL_ALIAS_EXISTS, name, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "alias %s does not exist", name);
	return HSM_SUCCESS;
}

/* The alias exists and, when `from` is given, still points at that key. */
static hsm_result alias_require_target(sq_conn *w, const char *name, const char *from)
{
	bool row = false;
	char target[HSM_UUID_STRLEN + 1] = "";
	HSM_GUARD(sq_text_of(w, SQL_ALIAS_TARGET, name, target, sizeof(target), &row));
	return st_check_alias_target(name, row ? target : NULL, from);
}

static hsm_result alias_update_in(sq_conn *w, const char *name, const char *from,
                                  const char *key_id, int64_t now,
                                  const hsm_key_state_check *check)
{
	HSM_GUARD(alias_require_target(w, name, from));
	HSM_GUARD(alias_key_accepts(w, key_id, name, check));
	return alias_write(w, SQL_ALIAS_UPDATE, name, key_id, now);
}

hsm_result sq_alias_update(hsm_store *base, const char *name, const char *from, const char *key_id,
                           int64_t now, const hsm_key_state_check *check)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, alias_update_in(w, name, from, key_id, now, check));
}

static hsm_result alias_delete_in(sq_conn *w, const char *name)
{
	HSM_GUARD(alias_require(w, name));
	return alias_write(w, SQL_ALIAS_DELETE, name, NULL, 0);
}

hsm_result sq_alias_delete(hsm_store *base, const char *name)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, alias_delete_in(w, name));
}

hsm_result sq_insert_alias(sq_conn *w, const hsm_alias_record *a)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_ALIAS_IMPORT, &st));
	sq_bind_text(w, st, 1, a->name);
	sq_bind_text(w, st, 2, a->key_id);
	sq_bind_i64(w, st, 3, a->created);
	sq_bind_i64(w, st, 4, a->updated);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

hsm_result sq_alias_delete_for_key_in(sq_conn *w, const char *key_id)
{
	return alias_write(w, SQL_ALIAS_DELETE_FOR_KEY, key_id, NULL, 0);
}

hsm_result sq_alias_delete_for_key(hsm_store *base, const char *key_id)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	hsm_result res = sq_key_require(w, key_id);
	if (hsm_ok(res))
		res = sq_alias_delete_for_key_in(w, key_id);
	return sq_write_end(s, w, res);
}

static hsm_result load_alias(sq_conn *c, const char *name, hsm_alias_record *rec)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, SQL_ALIAS_GET, &st));
	sq_bind_text(c, st, 1, name);
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && !row)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "alias %s does not exist", name);
	if (hsm_ok(res))
		res = sq_read_alias(st, rec);
	sq_reset(st);
	return res;
}

hsm_result sq_alias_get(hsm_store *base, const char *name, hsm_alias_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	hsm_alias_record rec = {0};
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = load_alias(c, name, &rec);
	sq_read_end(s, c);
	if (hsm_ok(res))
		*out = rec;
	return res;
}

static hsm_result read_alias_page(sq_conn *c, const char *key_id, const char *after,
                                  size_t limit, st_vec *v, bool *more)
{
	sqlite3_stmt *st;
	if (key_id != NULL)
		HSM_GUARD(sq_key_require(c, key_id));
	HSM_GUARD(sq_prepare(c, key_id != NULL ? SQL_ALIAS_PAGE_FOR_KEY : SQL_ALIAS_PAGE, &st));
	sq_bind_text(c, st, 1, after);
	sq_bind_i64(c, st, 2, (int64_t)limit + 1);
	if (key_id != NULL)
		sq_bind_text(c, st, 3, key_id);
	hsm_result res = sq_collect(c, st, limit, sq_read_alias, NULL, v, more);
	sq_reset(st);
	return res;
}

hsm_result sq_alias_list(hsm_store *base, const char *key_id, const char *after, size_t limit,
                         hsm_alias_cb cb, void *arg, bool *truncated)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	bool more = false;
	st_vec_init(&v, sizeof(hsm_alias_record));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = read_alias_page(c, key_id, after, limit, &v, &more);
	sq_read_end(s, c);
	for (size_t i = 0; hsm_ok(res) && i < v.n; i++)
		res = cb(st_vec_at(&v, i), arg);
	if (hsm_ok(res))
		*truncated = more;
	st_vec_free(&v, NULL);
	return res;
}

/* ---- Tags ----------------------------------------------------------------------------- */

/* TagResource replaces the value of a tag key that exists (AWS KMS API reference). */
static const char SQL_TAG_UPSERT[] =
	"INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3) "
	"ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value";
static const char SQL_TAG_COUNT[] = "SELECT count(*) FROM tags WHERE key_id = ?1";
static const char SQL_TAG_DELETE[] = "DELETE FROM tags WHERE key_id = ?1 AND tag_key = ?2";
static const char SQL_TAG_PAGE[] = "SELECT tag_key, tag_value FROM tags "
                                   "WHERE key_id = ?1 AND tag_key > ?2 "
                                   "ORDER BY tag_key LIMIT ?3";

static hsm_result tag_write(sq_conn *w, const char *sql, const char *key_id, const char *tag_key,
                            const char *value)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, sql, &st));
	sq_bind_text(w, st, 1, key_id);
	sq_bind_text(w, st, 2, tag_key);
	if (value != NULL)
		sq_bind_text(w, st, 3, value);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

hsm_result sq_insert_tag(sq_conn *w, const char *key_id, const hsm_tag *t)
{
	return tag_write(w, SQL_TAG_UPSERT, key_id, t->key, t->value);
}

hsm_result sq_tags_put_in(sq_conn *w, const char *key_id, size_t n, const hsm_tag tags[])
{
	for (size_t i = 0; i < n; i++)
		HSM_GUARD(tag_write(w, SQL_TAG_UPSERT, key_id, tags[i].key, tags[i].value));
	/* Counted after the writes so replaced values do not count twice. */
	int64_t count = 0;
	HSM_GUARD(sq_count(w, SQL_TAG_COUNT, key_id, NULL, &count));
	HSM_ENSURE(count <= HSM_MAX_TAGS_PER_KEY, HSM_ERR_LIMIT_EXCEEDED,
	           "key %s would have %lld tags; at most %d are allowed", key_id, (long long)count,
	           HSM_MAX_TAGS_PER_KEY);
	return HSM_SUCCESS;
}

static hsm_result tags_put_in(sq_conn *w, const char *key_id, size_t n, const hsm_tag tags[],
                              const hsm_key_state_check *check)
{
	HSM_GUARD(sq_key_state(w, key_id, check, NULL));
	return sq_tags_put_in(w, key_id, n, tags);
}

hsm_result sq_tags_put(hsm_store *base, const char *key_id, size_t n, const hsm_tag tags[],
                       const hsm_key_state_check *check)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, tags_put_in(w, key_id, n, tags, check));
}

static hsm_result tags_remove_in(sq_conn *w, const char *key_id, size_t n,
                                 const char *const keys[], const hsm_key_state_check *check)
{
	HSM_GUARD(sq_key_state(w, key_id, check, NULL));
	for (size_t i = 0; i < n; i++)
		HSM_GUARD(tag_write(w, SQL_TAG_DELETE, key_id, keys[i], NULL));
	return HSM_SUCCESS;
}

hsm_result sq_tags_remove(hsm_store *base, const char *key_id, size_t n, const char *const keys[],
                          const hsm_key_state_check *check)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, tags_remove_in(w, key_id, n, keys, check));
}

static hsm_result read_tag(sqlite3_stmt *st, void *item)
{
	hsm_tag *t = item;
	HSM_GUARD(sq_col_text(st, 0, t->key, sizeof(t->key)));
	return sq_col_text(st, 1, t->value, sizeof(t->value));
}

static hsm_result read_tag_page(sq_conn *c, const char *key_id, const char *after, size_t limit,
                                st_vec *v, bool *more)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_key_require(c, key_id));
	HSM_GUARD(sq_prepare(c, SQL_TAG_PAGE, &st));
	sq_bind_text(c, st, 1, key_id);
	sq_bind_text(c, st, 2, after);
	sq_bind_i64(c, st, 3, (int64_t)limit + 1);
	hsm_result res = sq_collect(c, st, limit, read_tag, NULL, v, more);
	sq_reset(st);
	return res;
}

hsm_result sq_tags_list(hsm_store *base, const char *key_id, const char *after, size_t limit,
                        hsm_tag_cb cb, void *arg, bool *truncated)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	bool more = false;
	st_vec_init(&v, sizeof(hsm_tag));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = read_tag_page(c, key_id, after, limit, &v, &more);
	sq_read_end(s, c);
	for (size_t i = 0; hsm_ok(res) && i < v.n; i++)
		res = cb(st_vec_at(&v, i), arg);
	if (hsm_ok(res))
		*truncated = more;
	st_vec_free(&v, NULL);
	return res;
}
