/*
 * store_sqlite_usage.c - each key's last use (store.h, GetKeyLastUsage) in
 * SQLite: one row per key, replaced by a use at the same time or later.
 */
#include "store/store_sqlite.h"

static const char SQL_USAGE_PUT[] =
	"INSERT INTO key_usage (key_id, operation, used_ms, request_id) VALUES (?1, ?2, ?3, ?4) "
	"ON CONFLICT (key_id) DO UPDATE SET operation = excluded.operation, "
	"used_ms = excluded.used_ms, request_id = excluded.request_id "
	"WHERE excluded.used_ms >= key_usage.used_ms";
static const char SQL_USAGE_GET[] =
	"SELECT key_id, operation, used_ms, request_id FROM key_usage WHERE key_id = ?1";
static const char SQL_USAGE_SINCE[] = "SELECT min(since) FROM usage_tracking";

static hsm_result usage_put_in(sq_conn *w, size_t n, const hsm_key_usage_record *recs)
{
	for (size_t i = 0; i < n; i++) {
		sqlite3_stmt *st;
		HSM_GUARD(sq_prepare(w, SQL_USAGE_PUT, &st));
		sq_bind_text(w, st, 1, recs[i].key_id);
		sq_bind_text(w, st, 2, recs[i].operation);
		sq_bind_i64(w, st, 3, recs[i].used_ms);
		sq_bind_text(w, st, 4, recs[i].request_id);
		hsm_result res = sq_exec(w, st);
		sq_reset(st);
		HSM_GUARD(res);
	}
	return HSM_SUCCESS;
}

hsm_result sq_usage_put(hsm_store *base, size_t n, const hsm_key_usage_record *recs)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, usage_put_in(w, n, recs));
}

static hsm_result usage_get_on(sq_conn *c, const char *key_id, hsm_key_usage_record *u)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, SQL_USAGE_GET, &st));
	sq_bind_text(c, st, 1, key_id);
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && !row)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "no use of key %s is recorded", key_id);
	if (hsm_ok(res))
		res = sq_col_text(st, 0, u->key_id, sizeof(u->key_id));
	if (hsm_ok(res))
		res = sq_col_text(st, 1, u->operation, sizeof(u->operation));
	if (hsm_ok(res))
		u->used_ms = sqlite3_column_int64(st, 2);
	if (hsm_ok(res))
		res = sq_col_text(st, 3, u->request_id, sizeof(u->request_id));
	sq_reset(st);
	return res;
}

hsm_result sq_usage_get(hsm_store *base, const char *key_id, hsm_key_usage_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	hsm_key_usage_record u = {0};
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = usage_get_on(c, key_id, &u);
	sq_read_end(s, c);
	if (hsm_ok(res))
		*out = u;
	return res;
}

hsm_result sq_usage_since(hsm_store *base, int64_t *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = sq_prepare(c, SQL_USAGE_SINCE, &st);
	if (hsm_ok(res)) {
		res = sq_step(c, st, &row);
		if (hsm_ok(res) && (!row || sqlite3_column_type(st, 0) == SQLITE_NULL))
			res = HSM_FAIL(HSM_ERR_STORE, "the store does not say when it began recording key uses");
		if (hsm_ok(res))
			*out = sqlite3_column_int64(st, 0);
		sq_reset(st);
	}
	sq_read_end(s, c);
	return res;
}
