/*
 * store_sqlite_principals.c - metadata values, users and access keys in SQLite.
 */
#include "store/store_sqlite.h"

#include <string.h>

/* ---- Metadata ----------------------------------------------------------------------- */

static const char SQL_META_GET[] = "SELECT value FROM meta WHERE name = ?1";
/* Insert only: a node initializing a store another node initialized meanwhile must fail. */
static const char SQL_META_PUT[] = "INSERT INTO meta (name, value) VALUES (?1, ?2)";
static const char SQL_META_PUT_IF_ABSENT[] =
    "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING";

static hsm_result load_meta(sq_conn *c, const char *name, hsm_buf *value)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, SQL_META_GET, &st));
	sq_bind_text(c, st, 1, name);
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && !row)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "metadata %s is not set", name);
	if (hsm_ok(res))
		res = sq_col_blob(st, 0, value);
	sq_reset(st);
	return res;
}

hsm_result sq_meta_get(hsm_store *base, const char *name, hsm_buf *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	hsm_buf value;
	/* Read into a buffer like out's, so a secure buffer stays secure and out changes only on success. */
	if (out->secure)
		hsm_buf_init_secure(&value);
	else
		hsm_buf_init(&value);
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = load_meta(c, name, &value);
	sq_read_end(s, c);
	if (hsm_ok(res)) {
		hsm_buf_free(out);
		*out = value;
	} else {
		hsm_buf_free(&value);
	}
	return res;
}

hsm_result sq_put_meta(sq_conn *w, const char *name, const hsm_buf *value, bool keep_existing)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, keep_existing ? SQL_META_PUT_IF_ABSENT : SQL_META_PUT, &st));
	sq_bind_text(w, st, 1, name);
	sq_bind_blob(w, st, 2, value);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

static hsm_result meta_put_in(sq_conn *w, size_t n, const char *const names[],
                              const hsm_buf *const values[])
{
	for (size_t i = 0; i < n; i++)
		HSM_GUARD(sq_put_meta(w, names[i], values[i], false));
	return HSM_SUCCESS;
}

hsm_result sq_meta_put(hsm_store *base, size_t n, const char *const names[],
                       const hsm_buf *const values[])
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, meta_put_in(w, n, names, values));
}

/* ---- Users -------------------------------------------------------------------------------- */

#define USER_COLS SQ_USER_COLS

hsm_result sq_read_user(sqlite3_stmt *st, void *item)
{
	hsm_user_record *u = item;
	char roles[128];
	HSM_GUARD(sq_col_text(st, 0, u->name, sizeof(u->name)));
	HSM_GUARD(sq_col_text(st, 1, roles, sizeof(roles)));
	if (hsm_failed(hsm_roles_parse(roles, &u->roles)))
		return sq_corrupt("unknown role");
	HSM_GUARD(sq_col_bool(st, 2, &u->disabled));
	HSM_GUARD(sq_col_bool(st, 3, &u->locked));
	HSM_GUARD(sq_col_u32(st, 4, &u->failed_auth));
	u->created = sqlite3_column_int64(st, 5);
	return HSM_SUCCESS;
}

static const char SQL_USER_EXISTS[] = "SELECT 1 FROM users WHERE name = ?1";
/* A user whose name equals one ignoring ASCII case (NOCASE folds just that). */
static const char SQL_USER_TWIN[] =
	"SELECT " USER_COLS " FROM users WHERE name = ?1 COLLATE NOCASE ORDER BY name LIMIT 1";
static const char SQL_USER_INSERT[] = "INSERT INTO users (" USER_COLS ") "
                                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
static const char SQL_USER_PUT[] = "UPDATE users SET role = ?2, disabled = ?3, locked = ?4, "
                                   "failed_auth = ?5 WHERE name = ?1";
static const char *const SQL_USER_CHANGE[] = {
    [HSM_USER_DISABLE] = "UPDATE users SET disabled = 1 WHERE name = ?1",
    [HSM_USER_ENABLE] = "UPDATE users SET disabled = 0 WHERE name = ?1",
    [HSM_USER_UNLOCK] = "UPDATE users SET locked = 0, failed_auth = 0 WHERE name = ?1",
};
static const char SQL_USER_GET[] = "SELECT " USER_COLS " FROM users WHERE name = ?1";
static const char SQL_USER_LIST[] = "SELECT " USER_COLS " FROM users ORDER BY name";
/*
 * One statement, so the count cannot be lost between concurrent failures.
 * The right-hand sides see the row as it was; the counter saturates at
 * UINT32_MAX; lock_after 0 never locks.
 */
static const char SQL_USER_LOCKED[] = "SELECT locked FROM users WHERE name = ?1";
static const char SQL_USER_AUTH[] =
	"UPDATE users SET "
	"failed_auth = CASE WHEN ?2 THEN 0 ELSE min(failed_auth + 1, 4294967295) END, "
	"locked = CASE WHEN NOT ?2 AND ?3 > 0 AND min(failed_auth + 1, 4294967295) >= ?3 "
	"THEN 1 ELSE locked END "
	"WHERE name = ?1 RETURNING " USER_COLS;

/* Inserts the user, or replaces its mutable fields (created is set only on insert). */
static hsm_result user_write(sq_conn *w, bool insert, const hsm_user_record *u)
{
	sqlite3_stmt *st;
	char roles[128];
	HSM_GUARD(hsm_roles_format(u->roles, roles, sizeof(roles)));
	HSM_GUARD(sq_prepare(w, insert ? SQL_USER_INSERT : SQL_USER_PUT, &st));
	sq_bind_text(w, st, 1, u->name);
	sq_bind_text(w, st, 2, roles);
	sq_bind_i64(w, st, 3, u->disabled ? 1 : 0);
	sq_bind_i64(w, st, 4, u->locked ? 1 : 0);
	sq_bind_i64(w, st, 5, u->failed_auth);
	if (insert)
		sq_bind_i64(w, st, 6, u->created);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

hsm_result sq_insert_user(sq_conn *w, const hsm_user_record *u)
{
	return user_write(w, true, u);
}

/* In the write transaction: no other writer can add a twin between the look and the insert. */
static hsm_result user_create_in(sq_conn *w, const hsm_user_record *u)
{
	sqlite3_stmt *st = NULL;
	hsm_user_record twin = {0};
	bool row = false;
	hsm_result res = HSM_SUCCESS;
	HSM_TRY(sq_prepare(w, SQL_USER_TWIN, &st));
	sq_bind_text(w, st, 1, u->name);
	HSM_TRY(sq_step(w, st, &row));
	if (row) {
		HSM_TRY(sq_read_user(st, &twin));
		res = st_user_taken(u->name, twin.name);
	}
out:
	sq_reset(st);
	return hsm_ok(res) ? user_write(w, true, u) : res;
}

hsm_result sq_user_create(hsm_store *base, const hsm_user_record *u)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, user_create_in(w, u));
}

static hsm_result user_require(sq_conn *c, const char *name)
{
	bool found = false;
	HSM_GUARD(sq_exists(c, SQL_USER_EXISTS, name, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "user %s does not exist", name);
	return HSM_SUCCESS;
}

static hsm_result user_put_in(sq_conn *w, const hsm_user_record *u)
{
	HSM_GUARD(user_require(w, u->name));
	return user_write(w, false, u);
}

static hsm_result user_change_in(sq_conn *w, const char *name, hsm_user_change change)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_USER_CHANGE[change], &st));
	sq_bind_text(w, st, 1, name);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	HSM_GUARD(res);
	HSM_ENSURE(sqlite3_changes(w->db) == 1, HSM_ERR_NOT_FOUND, "user %s does not exist", name);
	return HSM_SUCCESS;
}

hsm_result sq_user_change(hsm_store *base, const char *name, hsm_user_change change)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, user_change_in(w, name, change));
}

hsm_result sq_user_put(hsm_store *base, const hsm_user_record *u)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, user_put_in(w, u));
}

hsm_result sq_user_get(hsm_store *base, const char *name, hsm_user_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st = NULL;
	hsm_user_record rec = {0};
	bool row = false;
	hsm_result res = HSM_SUCCESS;
	HSM_GUARD(sq_read_begin(s, &c));
	HSM_TRY(sq_prepare(c, SQL_USER_GET, &st));
	sq_bind_text(c, st, 1, name);
	HSM_TRY(sq_step(c, st, &row));
	HSM_CHECK(row, HSM_ERR_NOT_FOUND, "user %s does not exist", name);
	HSM_TRY(sq_read_user(st, &rec));
	*out = rec;
out:
	sq_reset(st);
	sq_read_end(s, c);
	return res;
}

static hsm_result user_auth_in(sq_conn *w, const char *name, bool success, uint32_t lock_after,
                               hsm_user_record *rec, bool *was_locked)
{
	sqlite3_stmt *st;
	bool row = false;
	/* Read in the same write transaction: no other write comes between. */
	HSM_GUARD(sq_prepare(w, SQL_USER_LOCKED, &st));
	sq_bind_text(w, st, 1, name);
	hsm_result res = sq_step(w, st, &row);
	*was_locked = hsm_ok(res) && row && sqlite3_column_int64(st, 0) != 0;
	sq_reset(st);
	HSM_GUARD(res);
	HSM_GUARD(sq_prepare(w, SQL_USER_AUTH, &st));
	sq_bind_text(w, st, 1, name);
	sq_bind_i64(w, st, 2, success ? 1 : 0);
	sq_bind_i64(w, st, 3, lock_after);
	res = sq_step(w, st, &row);
	if (hsm_ok(res) && !row)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "user %s does not exist", name);
	if (hsm_ok(res))
		res = sq_read_user(st, rec);
	if (hsm_ok(res))
		res = sq_step(w, st, &row); /* RETURNING finishes its work on the last step */
	sq_reset(st);
	return res;
}

hsm_result sq_user_auth_result(hsm_store *base, const char *name, bool success,
                               uint32_t lock_after, hsm_user_record *out, bool *locked_now)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_user_record rec = {0};
	bool was_locked = false;
	HSM_GUARD(sq_write_begin(s, &w));
	hsm_result res =
	    sq_write_end(s, w, user_auth_in(w, name, success, lock_after, &rec, &was_locked));
	if (hsm_ok(res) && out != NULL)
		*out = rec;
	if (hsm_ok(res) && locked_now != NULL)
		*locked_now = rec.locked && !was_locked;
	return res;
}

hsm_result sq_user_list(hsm_store *base, hsm_user_cb cb, void *arg)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st = NULL;
	st_vec v;
	st_vec_init(&v, sizeof(hsm_user_record));
	hsm_result res = sq_read_begin(s, &c);
	if (hsm_failed(res))
		return res;
	res = sq_prepare(c, SQL_USER_LIST, &st);
	if (hsm_ok(res))
		res = sq_collect(c, st, SIZE_MAX, sq_read_user, NULL, &v, NULL);
	sq_reset(st);
	sq_read_end(s, c);
	for (size_t i = 0; hsm_ok(res) && i < v.n; i++)
		res = cb(st_vec_at(&v, i), arg);
	st_vec_free(&v, NULL);
	return res;
}

/* ---- Access keys ---------------------------------------------------------------------------- */

#define ACCESS_KEY_COLS SQ_ACCESS_KEY_COLS

hsm_result sq_read_access_key(sqlite3_stmt *st, void *item)
{
	hsm_access_key_record *k = item;
	HSM_GUARD(sq_col_text(st, 0, k->access_key_id, sizeof(k->access_key_id)));
	HSM_GUARD(sq_col_text(st, 1, k->user, sizeof(k->user)));
	HSM_GUARD(sq_col_bool(st, 2, &k->active));
	k->created = sqlite3_column_int64(st, 3);
	return sq_col_blob(st, 4, &k->wrapped_secret);
}

static void clear_access_key(void *item)
{
	hsm_access_key_record_clear(item);
}

static const char SQL_AK_EXISTS[] = "SELECT 1 FROM access_keys WHERE id = ?1";
static const char SQL_AK_INSERT[] = "INSERT INTO access_keys (" ACCESS_KEY_COLS ") "
                                    "VALUES (?1, ?2, ?3, ?4, ?5)";
static const char SQL_AK_GET[] = "SELECT " ACCESS_KEY_COLS " FROM access_keys WHERE id = ?1";
static const char SQL_AK_COUNT_ACTIVE[] =
	"SELECT count(*) FROM access_keys WHERE user = ?1 AND active = 1";
static const char SQL_AK_SET_ACTIVE[] = "UPDATE access_keys SET active = ?2 WHERE id = ?1";
static const char SQL_AK_LIST[] = "SELECT " ACCESS_KEY_COLS " FROM access_keys ORDER BY id";
static const char SQL_AK_LIST_USER[] =
	"SELECT " ACCESS_KEY_COLS " FROM access_keys WHERE user = ?1 ORDER BY id";

static hsm_result access_key_create_in(sq_conn *w, const hsm_access_key_record *k)
{
	bool found = false;
	HSM_GUARD(sq_exists(w, SQL_AK_EXISTS, k->access_key_id, &found));
	HSM_ENSURE(!found, HSM_ERR_ALREADY_EXISTS, "access key %s already exists", k->access_key_id);
	HSM_GUARD(user_require(w, k->user));
	int64_t held = 0;
	HSM_GUARD(sq_count(w, SQL_AK_COUNT_ACTIVE, k->user, NULL, &held));
	HSM_GUARD(hsm_store_access_key_room(k->user, held));
	return sq_insert_access_key(w, k);
}

hsm_result sq_insert_access_key(sq_conn *w, const hsm_access_key_record *k)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_AK_INSERT, &st));
	sq_bind_text(w, st, 1, k->access_key_id);
	sq_bind_text(w, st, 2, k->user);
	sq_bind_i64(w, st, 3, k->active ? 1 : 0);
	sq_bind_i64(w, st, 4, k->created);
	sq_bind_blob(w, st, 5, &k->wrapped_secret);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

hsm_result sq_access_key_create(hsm_store *base, const hsm_access_key_record *k)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, access_key_create_in(w, k));
}

hsm_result sq_access_key_get(hsm_store *base, const char *access_key_id,
                             hsm_access_key_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st = NULL;
	hsm_access_key_record rec = {0};
	bool row = false;
	hsm_result res = HSM_SUCCESS;
	HSM_GUARD(sq_read_begin(s, &c));
	HSM_TRY(sq_prepare(c, SQL_AK_GET, &st));
	sq_bind_text(c, st, 1, access_key_id);
	HSM_TRY(sq_step(c, st, &row));
	HSM_CHECK(row, HSM_ERR_NOT_FOUND, "access key %s does not exist", access_key_id);
	HSM_TRY(sq_read_access_key(st, &rec));
	*out = rec;
	rec = (hsm_access_key_record){0};
out:
	sq_reset(st);
	sq_read_end(s, c);
	hsm_access_key_record_clear(&rec);
	return res;
}

static hsm_result access_key_set_active_in(sq_conn *w, const char *access_key_id, bool active)
{
	bool found = false;
	HSM_GUARD(sq_exists(w, SQL_AK_EXISTS, access_key_id, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "access key %s does not exist", access_key_id);
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_AK_SET_ACTIVE, &st));
	sq_bind_text(w, st, 1, access_key_id);
	sq_bind_i64(w, st, 2, active ? 1 : 0);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

hsm_result sq_access_key_set_active(hsm_store *base, const char *access_key_id, bool active)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, access_key_set_active_in(w, access_key_id, active));
}

static hsm_result read_access_keys(sq_conn *c, const char *user, st_vec *v)
{
	sqlite3_stmt *st;
	if (user != NULL)
		HSM_GUARD(user_require(c, user));
	HSM_GUARD(sq_prepare(c, user != NULL ? SQL_AK_LIST_USER : SQL_AK_LIST, &st));
	if (user != NULL)
		sq_bind_text(c, st, 1, user);
	hsm_result res = sq_collect(c, st, SIZE_MAX, sq_read_access_key, clear_access_key, v, NULL);
	sq_reset(st);
	return res;
}

hsm_result sq_access_key_list(hsm_store *base, const char *user, hsm_access_key_cb cb, void *arg)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	st_vec_init(&v, sizeof(hsm_access_key_record));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = read_access_keys(c, user, &v);
	sq_read_end(s, c);
	for (size_t i = 0; hsm_ok(res) && i < v.n; i++)
		res = cb(st_vec_at(&v, i), arg);
	st_vec_free(&v, clear_access_key);
	return res;
}
