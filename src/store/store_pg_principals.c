/*
 * store_pg_principals.c - metadata values, users and access keys in PostgreSQL.
 */
#include "store/store_pg.h"

#include <string.h>

#include <openssl/crypto.h>

/* ---- Metadata ----------------------------------------------------------------------- */

static const char SQL_META_GET[] = "SELECT value FROM meta WHERE name = $1";
/* Insert only: a node initializing a store another node initialized meanwhile must fail. */
static const char SQL_META_PUT[] = "INSERT INTO meta (name, value) VALUES ($1, $2)";
static const char SQL_META_PUT_IF_ABSENT[] =
    "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

typedef struct meta_op {
	const char *name;
	hsm_buf *value;
	size_t n;
	const char *const *names;
	const hsm_buf *const *values;
} meta_op;

static hsm_result meta_get_body(pg_conn *c, void *arg)
{
	meta_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, op->name);
	HSM_GUARD(pg_run(c, SQL_META_GET, &p, &r));
	hsm_result res = HSM_SUCCESS;
	if (PQntuples(r) == 0)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "metadata %s is not set", op->name);
	else
		res = pg_col_bytea(r, 0, 0, op->value);
	/* The value may be sensitive: wipe libpq's copy before it is freed. */
	if (PQntuples(r) > 0)
		OPENSSL_cleanse(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
	PQclear(r);
	return res;
}

hsm_result pg_meta_get(hsm_store *base, const char *name, hsm_buf *out)
{
	hsm_buf value;
	/* Read into a buffer like out's, so a secure buffer stays secure and out changes only on success. */
	if (out->secure)
		hsm_buf_init_secure(&value);
	else
		hsm_buf_init(&value);
	meta_op op = {.name = name, .value = &value};
	hsm_result res = pg_read(pg_of(base), meta_get_body, &op);
	if (hsm_ok(res)) {
		hsm_buf_free(out);
		*out = value;
	} else {
		hsm_buf_free(&value);
	}
	return res;
}

hsm_result pg_put_meta(pg_conn *w, const char *name, const hsm_buf *value, bool keep_existing)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, name);
	pg_p_bytea(&p, value);
	return pg_run(w, keep_existing ? SQL_META_PUT_IF_ABSENT : SQL_META_PUT, &p, NULL);
}

static hsm_result meta_put_body(pg_conn *w, void *arg)
{
	meta_op *op = arg;
	for (size_t i = 0; i < op->n; i++)
		HSM_GUARD(pg_put_meta(w, op->names[i], op->values[i], false));
	return HSM_SUCCESS;
}

hsm_result pg_meta_put(hsm_store *base, size_t n, const char *const names[],
                       const hsm_buf *const values[])
{
	meta_op op = {.n = n, .names = names, .values = values};
	return pg_write(pg_of(base), meta_put_body, &op);
}

/* ---- Users -------------------------------------------------------------------------------- */

hsm_result pg_read_user(const PGresult *r, int row, void *item)
{
	hsm_user_record *u = item;
	char roles[128];
	HSM_GUARD(pg_col_text(r, row, 0, u->name, sizeof(u->name)));
	HSM_GUARD(pg_col_text(r, row, 1, roles, sizeof(roles)));
	if (hsm_failed(hsm_roles_parse(roles, &u->roles)))
		return pg_corrupt("unknown role");
	HSM_GUARD(pg_col_bool(r, row, 2, &u->disabled));
	HSM_GUARD(pg_col_bool(r, row, 3, &u->locked));
	HSM_GUARD(pg_col_u32(r, row, 4, &u->failed_auth));
	return pg_col_i64(r, row, 5, &u->created);
}

static const char SQL_USER_EXISTS[] = "SELECT 1 FROM users WHERE name = $1";
/*
 * A user whose name equals one ignoring ASCII case (names are ASCII: lower()
 * folds just that).  Under pg_advisory_xact_lock class "HSMU" as a number,
 * key 0, one lock for all creators: two nodes creating "alice" and "Alice"
 * at once cannot both find no twin.  The two-number form is its own key
 * space, as for certificates ("HSMC") and approvals ("HSMA").
 */
static const char SQL_LOCK_USER_CREATORS[] = "SELECT pg_advisory_xact_lock(1213418837, 0)";
static const char SQL_USER_TWIN[] =
	"SELECT " PG_USER_COLS " FROM users WHERE lower(name) = lower($1) ORDER BY name LIMIT 1";
static const char SQL_USER_INSERT[] = "INSERT INTO users (" PG_USER_COLS ") "
                                      "VALUES ($1, $2, $3, $4, $5, $6)";
static const char SQL_USER_PUT[] = "UPDATE users SET roles = $2, disabled = $3, locked = $4, "
                                   "failed_auth = $5 WHERE name = $1";
static const char *const SQL_USER_CHANGE[] = {
    [HSM_USER_DISABLE] = "UPDATE users SET disabled = true WHERE name = $1",
    [HSM_USER_ENABLE] = "UPDATE users SET disabled = false WHERE name = $1",
    [HSM_USER_UNLOCK] = "UPDATE users SET locked = false, failed_auth = 0 WHERE name = $1",
};
static const char SQL_USER_GET[] = "SELECT " PG_USER_COLS " FROM users WHERE name = $1";
static const char SQL_USER_LIST[] = "SELECT " PG_USER_COLS " FROM users ORDER BY name";
/*
 * One statement: PostgreSQL locks the row and, when another node updated it
 * meanwhile, re-evaluates the expressions on the newest version (READ
 * COMMITTED), so concurrent failures on several nodes all count.  The counter
 * saturates at UINT32_MAX; lock_after 0 never locks.
 */
/* The row locked first, so `was` is the value this update changes (a concurrent one waits). */
static const char SQL_USER_AUTH[] =
	"UPDATE users SET "
	"failed_auth = CASE WHEN $2 THEN 0 ELSE least(failed_auth + 1, 4294967295) END, "
	"locked = CASE WHEN NOT $2 AND $3::bigint > 0 AND least(failed_auth + 1, 4294967295) >= $3::bigint "
	"THEN true ELSE locked END "
	"FROM (SELECT locked AS was FROM users WHERE name = $1 FOR UPDATE) AS before "
	"WHERE name = $1 RETURNING " PG_USER_COLS ", before.was";

/* Inserts the user as given, or replaces its mutable fields (created is set only on insert). */
static hsm_result user_write(pg_conn *w, bool insert, const hsm_user_record *u)
{
	char roles[128];
	pg_params p;
	HSM_GUARD(hsm_roles_format(u->roles, roles, sizeof(roles)));
	pg_params_init(&p);
	pg_p_text(&p, u->name);
	pg_p_text(&p, roles);
	pg_p_bool(&p, u->disabled);
	pg_p_bool(&p, u->locked);
	pg_p_i64(&p, u->failed_auth);
	if (insert)
		pg_p_i64(&p, u->created);
	return pg_run(w, insert ? SQL_USER_INSERT : SQL_USER_PUT, &p, NULL);
}

hsm_result pg_insert_user(pg_conn *w, const hsm_user_record *u)
{
	return user_write(w, true, u);
}

typedef struct user_op {
	const char *name;
	const hsm_user_record *in;
	bool success;
	uint32_t lock_after;
	hsm_user_record rec;
	const hsm_access_key_record *key;
	hsm_access_key_record key_rec;
	bool active;
	st_vec v;
	hsm_user_change change;
	bool was_locked; /* user_auth_body: the user was locked before the update */
} user_op;

static hsm_result user_create_body(pg_conn *w, void *arg)
{
	user_op *op = arg;
	/* First: every statement after it sees what the creators before committed. */
	HSM_GUARD(pg_run(w, SQL_LOCK_USER_CREATORS, NULL, NULL));
	hsm_user_record twin;
	hsm_result r = pg_get_one(w, SQL_USER_TWIN, op->in->name, "user", pg_read_user, &twin);
	if (r.err != HSM_ERR_NOT_FOUND) {
		HSM_GUARD(r);
		return st_user_taken(op->in->name, twin.name);
	}
	return user_write(w, true, op->in);
}

hsm_result pg_user_create(hsm_store *base, const hsm_user_record *u)
{
	user_op op = {.in = u};
	return pg_write(pg_of(base), user_create_body, &op);
}

static hsm_result user_require(pg_conn *c, const char *sql, const char *name)
{
	bool found = false;
	HSM_GUARD(pg_exists(c, sql, name, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "user %s does not exist", name);
	return HSM_SUCCESS;
}

static hsm_result user_put_body(pg_conn *w, void *arg)
{
	user_op *op = arg;
	HSM_GUARD(user_require(w, SQL_USER_EXISTS, op->in->name));
	return user_write(w, false, op->in);
}

/* Runs an UPDATE of one named row: NOT_FOUND ("<what> <name> does not exist") if none. */
static hsm_result update_named(pg_conn *w, const char *sql, const pg_params *p, const char *what,
                               const char *name)
{
	PGresult *r = NULL;
	HSM_GUARD(pg_run(w, sql, p, &r));
	bool found = strcmp(PQcmdTuples(r), "0") != 0;
	PQclear(r);
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "%s %s does not exist", what, name);
	return HSM_SUCCESS;
}

static hsm_result user_change_body(pg_conn *w, void *arg)
{
	const user_op *op = arg;
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, op->name);
	return update_named(w, SQL_USER_CHANGE[op->change], &p, "user", op->name);
}

hsm_result pg_user_change(hsm_store *base, const char *name, hsm_user_change change)
{
	user_op op = {.name = name, .change = change};
	return pg_write(pg_of(base), user_change_body, &op);
}

hsm_result pg_user_put(hsm_store *base, const hsm_user_record *u)
{
	user_op op = {.in = u};
	return pg_write(pg_of(base), user_put_body, &op);
}

static hsm_result user_get_body(pg_conn *c, void *arg)
{
	user_op *op = arg;
	return pg_get_one(c, SQL_USER_GET, op->name, "user", pg_read_user, &op->rec);
}

hsm_result pg_user_get(hsm_store *base, const char *name, hsm_user_record *out)
{
	user_op op = {.name = name};
	HSM_GUARD(pg_read(pg_of(base), user_get_body, &op));
	*out = op.rec;
	return HSM_SUCCESS;
}

static hsm_result user_auth_body(pg_conn *w, void *arg)
{
	user_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, op->name);
	pg_p_bool(&p, op->success);
	pg_p_i64(&p, op->lock_after);
	HSM_GUARD(pg_run(w, SQL_USER_AUTH, &p, &r));
	hsm_result res = HSM_SUCCESS;
	if (PQntuples(r) == 0)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "user %s does not exist", op->name);
	else
		res = pg_read_user(r, 0, &op->rec);
	if (hsm_ok(res))
		res = pg_col_bool(r, 0, 6, &op->was_locked);
	PQclear(r);
	return res;
}

hsm_result pg_user_auth_result(hsm_store *base, const char *name, bool success,
                               uint32_t lock_after, hsm_user_record *out, bool *locked_now)
{
	user_op op = {.name = name, .success = success, .lock_after = lock_after};
	HSM_GUARD(pg_write(pg_of(base), user_auth_body, &op));
	if (out != NULL)
		*out = op.rec;
	if (locked_now != NULL)
		*locked_now = op.rec.locked && !op.was_locked;
	return HSM_SUCCESS;
}

static hsm_result user_list_body(pg_conn *c, void *arg)
{
	user_op *op = arg;
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_USER_LIST, NULL, &r));
	hsm_result res = pg_collect(r, SIZE_MAX, pg_read_user, NULL, &op->v, NULL);
	PQclear(r);
	return res;
}

hsm_result pg_user_list(hsm_store *base, hsm_user_cb cb, void *arg)
{
	user_op op = {0};
	st_vec_init(&op.v, sizeof(hsm_user_record));
	hsm_result res = pg_read(pg_of(base), user_list_body, &op);
	for (size_t i = 0; hsm_ok(res) && i < op.v.n; i++)
		res = cb(st_vec_at(&op.v, i), arg);
	st_vec_free(&op.v, NULL);
	return res;
}

/* ---- Access keys ---------------------------------------------------------------------------- */

hsm_result pg_read_access_key(const PGresult *r, int row, void *item)
{
	hsm_access_key_record *k = item;
	HSM_GUARD(pg_col_text(r, row, 0, k->access_key_id, sizeof(k->access_key_id)));
	HSM_GUARD(pg_col_text(r, row, 1, k->user, sizeof(k->user)));
	HSM_GUARD(pg_col_bool(r, row, 2, &k->active));
	HSM_GUARD(pg_col_i64(r, row, 3, &k->created));
	return pg_col_bytea(r, row, 4, &k->wrapped_secret);
}

static void clear_access_key(void *item)
{
	hsm_access_key_record_clear(item);
}

static const char SQL_AK_EXISTS[] = "SELECT 1 FROM access_keys WHERE id = $1";
static const char SQL_AK_INSERT[] = "INSERT INTO access_keys (" PG_ACCESS_KEY_COLS ") "
                                    "VALUES ($1, $2, $3, $4, $5)";
static const char SQL_USER_LOCK_FOR_KEYS[] = "SELECT 1 FROM users WHERE name = $1 FOR UPDATE";
static const char SQL_AK_COUNT_ACTIVE[] =
	"SELECT count(*) FROM access_keys WHERE user_name = $1 AND active";
static const char SQL_AK_GET[] = "SELECT " PG_ACCESS_KEY_COLS " FROM access_keys WHERE id = $1";
static const char SQL_AK_SET_ACTIVE[] = "UPDATE access_keys SET active = $2 WHERE id = $1";
static const char SQL_AK_LIST[] = "SELECT " PG_ACCESS_KEY_COLS " FROM access_keys ORDER BY id";
static const char SQL_AK_LIST_USER[] =
	"SELECT " PG_ACCESS_KEY_COLS " FROM access_keys WHERE user_name = $1 ORDER BY id";

hsm_result pg_insert_access_key(pg_conn *w, const hsm_access_key_record *k)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, k->access_key_id);
	pg_p_text(&p, k->user);
	pg_p_bool(&p, k->active);
	pg_p_i64(&p, k->created);
	pg_p_bytea(&p, &k->wrapped_secret);
	return pg_run(w, SQL_AK_INSERT, &p, NULL);
}

static hsm_result access_key_create_body(pg_conn *w, void *arg)
{
	user_op *op = arg;
	bool found = false;
	HSM_GUARD(pg_exists(w, SQL_AK_EXISTS, op->key->access_key_id, &found));
	HSM_ENSURE(!found, HSM_ERR_ALREADY_EXISTS, "access key %s already exists",
	           op->key->access_key_id);
	/* Locked to write: creators for one user count one after another. */
	HSM_GUARD(user_require(w, SQL_USER_LOCK_FOR_KEYS, op->key->user));
	int64_t held = 0;
	HSM_GUARD(pg_count(w, SQL_AK_COUNT_ACTIVE, op->key->user, NULL, &held));
	HSM_GUARD(hsm_store_access_key_room(op->key->user, held));
	return pg_insert_access_key(w, op->key);
}

hsm_result pg_access_key_create(hsm_store *base, const hsm_access_key_record *k)
{
	user_op op = {.key = k};
	return pg_write(pg_of(base), access_key_create_body, &op);
}

static hsm_result access_key_get_body(pg_conn *c, void *arg)
{
	user_op *op = arg;
	hsm_access_key_record_clear(&op->key_rec);
	return pg_get_one(c, SQL_AK_GET, op->name, "access key", pg_read_access_key, &op->key_rec);
}

hsm_result pg_access_key_get(hsm_store *base, const char *access_key_id,
                             hsm_access_key_record *out)
{
	user_op op = {.name = access_key_id};
	hsm_result res = pg_read(pg_of(base), access_key_get_body, &op);
	if (hsm_ok(res))
		*out = op.key_rec;
	else
		hsm_access_key_record_clear(&op.key_rec);
	return res;
}

static hsm_result access_key_set_active_body(pg_conn *w, void *arg)
{
	user_op *op = arg;
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, op->name);
	pg_p_bool(&p, op->active);
	return update_named(w, SQL_AK_SET_ACTIVE, &p, "access key", op->name);
}

hsm_result pg_access_key_set_active(hsm_store *base, const char *access_key_id, bool active)
{
	user_op op = {.name = access_key_id, .active = active};
	return pg_write(pg_of(base), access_key_set_active_body, &op);
}

static hsm_result access_key_list_body(pg_conn *c, void *arg)
{
	user_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	if (op->name != NULL) {
		HSM_GUARD(user_require(c, SQL_USER_EXISTS, op->name));
		pg_p_text(&p, op->name);
	}
	HSM_GUARD(pg_run(c, op->name != NULL ? SQL_AK_LIST_USER : SQL_AK_LIST, &p, &r));
	hsm_result res =
		pg_collect(r, SIZE_MAX, pg_read_access_key, clear_access_key, &op->v, NULL);
	PQclear(r);
	return res;
}

hsm_result pg_access_key_list(hsm_store *base, const char *user, hsm_access_key_cb cb, void *arg)
{
	user_op op = {.name = user};
	st_vec_init(&op.v, sizeof(hsm_access_key_record));
	hsm_result res = pg_read(pg_of(base), access_key_list_body, &op);
	for (size_t i = 0; hsm_ok(res) && i < op.v.n; i++)
		res = cb(st_vec_at(&op.v, i), arg);
	st_vec_free(&op.v, clear_access_key);
	return res;
}
