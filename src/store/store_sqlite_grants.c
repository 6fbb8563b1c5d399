/*
 * store_sqlite_grants.c - grants (KMS CreateGrant, ListGrants, RetireGrant,
 * RevokeGrant) in SQLite.
 *
 * Every write runs in one BEGIN IMMEDIATE transaction, which the store's
 * single write connection serializes, so the limits counted before an insert
 * still hold when it commits.
 */
#include "store/store_sqlite.h"

#include <string.h>

#define GRANT_COLS SQ_GRANT_COLS

hsm_result sq_read_grant(sqlite3_stmt *st, void *item)
{
	hsm_grant_record *g = item;
	HSM_GUARD(sq_col_text(st, 0, g->grant_id, sizeof(g->grant_id)));
	HSM_GUARD(sq_col_text(st, 1, g->key_id, sizeof(g->key_id)));
	HSM_GUARD(sq_col_text(st, 2, g->name, sizeof(g->name)));
	HSM_GUARD(sq_col_text(st, 3, g->grantee, sizeof(g->grantee)));
	HSM_GUARD(sq_col_text(st, 4, g->retiring, sizeof(g->retiring)));
	HSM_GUARD(sq_col_u32(st, 5, &g->operations));
	HSM_GUARD(sq_col_strdup(st, 6, &g->constraints));
	g->created = sqlite3_column_int64(st, 7);
	return HSM_SUCCESS;
}

static void clear_grant(void *item)
{
	hsm_grant_record_clear(item);
}

static const char SQL_GRANT_INSERT[] =
	"INSERT INTO grants (" GRANT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
static const char SQL_GRANT_EXISTS[] = "SELECT 1 FROM grants WHERE grant_id = ?1";
static const char SQL_GRANT_EXISTS_FOR_KEY[] =
	"SELECT 1 FROM grants WHERE grant_id = ?1 AND key_id = ?2";
static const char SQL_GRANT_GET[] =
	"SELECT " GRANT_COLS " FROM grants WHERE grant_id = ?1 AND key_id = ?2";
static const char SQL_GRANT_DELETE[] = "DELETE FROM grants WHERE grant_id = ?1 AND key_id = ?2";
static const char SQL_GRANT_DELETE_FOR_KEY[] = "DELETE FROM grants WHERE key_id = ?1";
/* The retried-creation lookup walks grants_by_grantee: at most a grantee's few hundred rows. */
static const char SQL_GRANT_SAME[] =
	"SELECT grant_id, created FROM grants WHERE key_id = ?1 AND grantee = ?2 AND name = ?3 "
	"AND retiring = ?4 AND operations = ?5 AND constraints = ?6 ORDER BY grant_id LIMIT 1";
static const char SQL_GRANT_COUNT_KEY[] = "SELECT count(*) FROM grants WHERE key_id = ?1";
static const char SQL_GRANT_COUNT_GRANTEE[] =
	"SELECT count(*) FROM grants WHERE key_id = ?1 AND grantee = ?2";
/* Keyset pagination over grants_by_key, grants_by_grantee and grants_by_retiring. */
static const char SQL_GRANT_PAGE[] = "SELECT " GRANT_COLS " FROM grants "
                                     "WHERE key_id = ?1 AND grant_id > ?2 "
                                     "ORDER BY grant_id LIMIT ?3";
static const char SQL_GRANT_PAGE_GRANTEE[] = "SELECT " GRANT_COLS " FROM grants "
                                             "WHERE key_id = ?1 AND grantee = ?4 AND "
                                             "grant_id > ?2 ORDER BY grant_id LIMIT ?3";
static const char SQL_GRANT_PAGE_RETIRING[] = "SELECT " GRANT_COLS " FROM grants "
                                              "WHERE retiring = ?1 AND grant_id > ?2 "
                                              "ORDER BY grant_id LIMIT ?3";

/* Parameters ?1..?8 in GRANT_COLS order; NULL constraints bind as "". */
static void bind_grant(sq_conn *c, sqlite3_stmt *st, const hsm_grant_record *g)
{
	sq_bind_text(c, st, 1, g->grant_id);
	sq_bind_text(c, st, 2, g->key_id);
	sq_bind_text(c, st, 3, g->name);
	sq_bind_text(c, st, 4, g->grantee);
	sq_bind_text(c, st, 5, g->retiring);
	sq_bind_i64(c, st, 6, g->operations);
	sq_bind_text(c, st, 7, g->constraints);
	sq_bind_i64(c, st, 8, g->created);
}

hsm_result sq_insert_grant(sq_conn *w, const hsm_grant_record *g)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_GRANT_INSERT, &st));
	bind_grant(w, st, g);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

/* Runs sql with ?1 = a and ?2 = b (unless NULL). */
static hsm_result grant_write(sq_conn *w, const char *sql, const char *a, const char *b)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, sql, &st));
	sq_bind_text(w, st, 1, a);
	if (b != NULL)
		sq_bind_text(w, st, 2, b);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

hsm_result sq_grant_delete_for_key_in(sq_conn *w, const char *key_id)
{
	return grant_write(w, SQL_GRANT_DELETE_FOR_KEY, key_id, NULL);
}

/* ---- Create ------------------------------------------------------------------------- */

/*
 * NOT_FOUND for a missing key, INVALID_STATE for a Destroyed one (grants need
 * a usable key), and the caller's condition on its state.
 */
static hsm_result require_live_key(sq_conn *w, const char *key_id,
                                   const hsm_key_state_check *check)
{
	hsm_key_state state;
	HSM_GUARD(sq_key_state(w, key_id, check, &state));
	HSM_ENSURE(state != HSM_KEY_DESTROYED, HSM_ERR_INVALID_STATE, "key %s is destroyed", key_id);
	return HSM_SUCCESS;
}

/* The grant a retried CreateGrant asked for before, if the key holds it. */
typedef struct grant_twin {
	bool found;
	char grant_id[HSM_GRANT_ID_LEN + 1];
	int64_t created;
} grant_twin;

static hsm_result find_twin(sq_conn *w, const hsm_grant_record *g, grant_twin *twin)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_GRANT_SAME, &st));
	sq_bind_text(w, st, 1, g->key_id);
	sq_bind_text(w, st, 2, g->grantee);
	sq_bind_text(w, st, 3, g->name);
	sq_bind_text(w, st, 4, g->retiring);
	sq_bind_i64(w, st, 5, g->operations);
	sq_bind_text(w, st, 6, g->constraints);
	hsm_result res = sq_step(w, st, &twin->found);
	if (hsm_ok(res) && twin->found) {
		res = sq_col_text(st, 0, twin->grant_id, sizeof(twin->grant_id));
		twin->created = sqlite3_column_int64(st, 1);
	}
	sq_reset(st);
	return res;
}

/* KMS quotas: grants per key, and per key and grantee principal (store.h). */
static hsm_result check_limits(sq_conn *w, const hsm_grant_record *g)
{
	int64_t for_grantee = 0, for_key = 0;
	HSM_GUARD(sq_count(w, SQL_GRANT_COUNT_GRANTEE, g->key_id, g->grantee, &for_grantee));
	HSM_GUARD(sq_count(w, SQL_GRANT_COUNT_KEY, g->key_id, NULL, &for_key));
	return hsm_store_grant_room(g->key_id, for_grantee, for_key);
}

static hsm_result grant_create_in(sq_conn *w, const hsm_grant_record *g, grant_twin *twin,
                                  const hsm_key_state_check *check)
{
	HSM_GUARD(require_live_key(w, g->key_id, check));
	/* Checked before the limits: a retry at the limit gets the grant it made. */
	if (g->name[0] != '\0') {
		HSM_GUARD(find_twin(w, g, twin));
		if (twin->found)
			return HSM_SUCCESS;
	}
	bool taken = false;
	HSM_GUARD(sq_exists(w, SQL_GRANT_EXISTS, g->grant_id, &taken));
	HSM_ENSURE(!taken, HSM_ERR_ALREADY_EXISTS, "grant %s already exists", g->grant_id);
	HSM_GUARD(check_limits(w, g));
	return sq_insert_grant(w, g);
}

hsm_result sq_grant_fits(hsm_store *base, const hsm_grant_record *g)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = check_limits(c, g);
	sq_read_end(s, c);
	return res;
}

hsm_result sq_grant_create(hsm_store *base, hsm_grant_record *g, bool *existed,
                           const hsm_key_state_check *check)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	grant_twin twin = {0};
	HSM_GUARD(sq_write_begin(s, &w));
	HSM_GUARD(sq_write_end(s, w, grant_create_in(w, g, &twin, check)));
	if (twin.found) {
		memcpy(g->grant_id, twin.grant_id, sizeof(g->grant_id));
		g->created = twin.created;
	}
	*existed = twin.found;
	return HSM_SUCCESS;
}

/* ---- Get and delete ------------------------------------------------------------------- */

static hsm_result load_grant(sq_conn *c, const char *key_id, const char *grant_id,
                             hsm_grant_record *rec)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, SQL_GRANT_GET, &st));
	sq_bind_text(c, st, 1, grant_id);
	sq_bind_text(c, st, 2, key_id);
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && !row)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "key %s holds no grant %s", key_id, grant_id);
	if (hsm_ok(res))
		res = sq_read_grant(st, rec);
	sq_reset(st);
	return res;
}

hsm_result sq_grant_get(hsm_store *base, const char *key_id, const char *grant_id,
                        hsm_grant_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	hsm_grant_record rec = {0};
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = load_grant(c, key_id, grant_id, &rec);
	sq_read_end(s, c);
	if (hsm_ok(res))
		*out = rec;
	else
		hsm_grant_record_clear(&rec);
	return res;
}

static hsm_result grant_delete_in(sq_conn *w, const char *key_id, const char *grant_id)
{
	sqlite3_stmt *st;
	bool found = false;
	HSM_GUARD(sq_prepare(w, SQL_GRANT_EXISTS_FOR_KEY, &st));
	sq_bind_text(w, st, 1, grant_id);
	sq_bind_text(w, st, 2, key_id);
	hsm_result res = sq_step(w, st, &found);
	sq_reset(st);
	HSM_GUARD(res);
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "key %s holds no grant %s", key_id, grant_id);
	return grant_write(w, SQL_GRANT_DELETE, grant_id, key_id);
}

hsm_result sq_grant_delete(hsm_store *base, const char *key_id, const char *grant_id)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, grant_delete_in(w, key_id, grant_id));
}

/* ---- Lists ------------------------------------------------------------------------------ */

typedef struct grant_page {
	const char *sql;
	const char *key_id; /* required to exist (NOT_FOUND), or NULL */
	const char *first;  /* ?1 */
	const char *second; /* ?4, or NULL when sql has none */
} grant_page;

static hsm_result read_grant_page(sq_conn *c, const grant_page *q, const char *after,
                                  size_t limit, st_vec *v, bool *more)
{
	sqlite3_stmt *st;
	if (q->key_id != NULL)
		HSM_GUARD(sq_key_require(c, q->key_id));
	HSM_GUARD(sq_prepare(c, q->sql, &st));
	sq_bind_text(c, st, 1, q->first);
	sq_bind_text(c, st, 2, after);
	sq_bind_i64(c, st, 3, (int64_t)limit + 1); /* one more row tells whether a page follows */
	if (q->second != NULL)
		sq_bind_text(c, st, 4, q->second);
	hsm_result res = sq_collect(c, st, limit, sq_read_grant, clear_grant, v, more);
	sq_reset(st);
	return res;
}

static hsm_result list_grants(hsm_store *base, const grant_page *q, const char *after,
                              size_t limit, hsm_grant_cb cb, void *arg, bool *truncated)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	bool more = false;
	st_vec_init(&v, sizeof(hsm_grant_record));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = read_grant_page(c, q, after, limit, &v, &more);
	sq_read_end(s, c);
	for (size_t i = 0; hsm_ok(res) && i < v.n; i++)
		res = cb(st_vec_at(&v, i), arg);
	if (hsm_ok(res))
		*truncated = more;
	st_vec_free(&v, clear_grant);
	return res;
}

hsm_result sq_grant_list(hsm_store *base, const char *key_id, const char *grantee,
                         const char *after, size_t limit, hsm_grant_cb cb, void *arg,
                         bool *truncated)
{
	const grant_page q = {grantee != NULL ? SQL_GRANT_PAGE_GRANTEE : SQL_GRANT_PAGE, key_id,
	                      key_id, grantee};
	return list_grants(base, &q, after, limit, cb, arg, truncated);
}

hsm_result sq_grant_list_retiring(hsm_store *base, const char *retiring, const char *after,
                                  size_t limit, hsm_grant_cb cb, void *arg, bool *truncated)
{
	const grant_page q = {SQL_GRANT_PAGE_RETIRING, NULL, retiring, NULL};
	return list_grants(base, &q, after, limit, cb, arg, truncated);
}
