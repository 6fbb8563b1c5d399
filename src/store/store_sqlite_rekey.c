/*
 * store_sqlite_rekey.c - re-wrapping every secret under a new master key
 * (hsm_store_rekey) in SQLite.
 *
 * One BEGIN IMMEDIATE transaction on the write connection: the metadata
 * naming the old master key is checked, the key versions holding material
 * and the access keys are read a page at a time in primary-key order and
 * each row rewritten with what the keystore made of it, then the metadata
 * is replaced.  A running hsmd holds the directory lock, so it cannot be
 * running beside this.  After the commit the WAL is checkpointed and
 * truncated (secure_delete is on), so the old wrapped bytes leave the disk.
 */
#include "store/store_sqlite.h"

#include <string.h>

static const char SQL_META_GET[] = "SELECT value FROM meta WHERE name = ?1";
static const char SQL_META_SET[] = "INSERT INTO meta (name, value) VALUES (?1, ?2) "
                                   "ON CONFLICT (name) DO UPDATE SET value = excluded.value";
/* Versions holding material after (?1, ?2), with their key's spec and usage. */
static const char SQL_VERSIONS_PAGE[] =
	"SELECT v.key_id, v.version, k.spec, k.usage, v.wrapped "
	"FROM key_versions v JOIN keys k ON k.id = v.key_id "
	"WHERE length(v.wrapped) > 0 AND (v.key_id > ?1 OR (v.key_id = ?1 AND v.version > ?2)) "
	"ORDER BY v.key_id, v.version LIMIT ?3";
static const char SQL_VERSION_SET[] =
	"UPDATE key_versions SET wrapped = ?3 WHERE key_id = ?1 AND version = ?2";
static const char SQL_ACCESS_KEYS_PAGE[] =
	"SELECT id, wrapped_secret FROM access_keys "
	"WHERE length(wrapped_secret) > 0 AND id > ?1 ORDER BY id LIMIT ?2";
static const char SQL_ACCESS_KEY_SET[] = "UPDATE access_keys SET wrapped_secret = ?2 WHERE id = ?1";

static hsm_result check_expected(sq_conn *w, const hsm_store_rekey_req *req)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf value = {0};
	for (size_t i = 0; i < req->n_expect && hsm_ok(res); i++) {
		sqlite3_stmt *st;
		bool row = false;
		HSM_TRY(sq_prepare(w, SQL_META_GET, &st));
		sq_bind_text(w, st, 1, req->expect_names[i]);
		value.len = 0;
		res = sq_step(w, st, &row);
		if (hsm_ok(res) && row)
			res = sq_col_blob(st, 0, &value);
		sq_reset(st);
		if (hsm_ok(res))
			res = st_rekey_expect(req, i, row, &value);
	}
out:
	hsm_buf_free(&value);
	return res;
}

static hsm_result corrupt_unless(hsm_result r, const char *what)
{
	return hsm_ok(r) ? r : sq_corrupt(what);
}

static hsm_result read_version_row(sqlite3_stmt *st, void *item)
{
	st_rekey_row *row = item;
	char text[64];
	HSM_GUARD(sq_col_text(st, 0, row->id, sizeof(row->id)));
	HSM_GUARD(sq_col_u32(st, 1, &row->version));
	HSM_GUARD(sq_col_text(st, 2, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_spec_parse(text, &row->spec), "unknown key spec"));
	HSM_GUARD(sq_col_text(st, 3, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_usage_parse(text, &row->usage), "unknown key usage"));
	return sq_col_blob(st, 4, &row->wrapped);
}

static hsm_result read_access_key_row(sqlite3_stmt *st, void *item)
{
	st_rekey_row *row = item;
	HSM_GUARD(sq_col_text(st, 0, row->id, sizeof(row->id)));
	return sq_col_blob(st, 1, &row->wrapped);
}

/* Reads the next page of kind after *last into page (empty on entry). */
static hsm_result read_page(void *conn, hsm_wrapped_kind kind, const st_rekey_row *last,
                            st_vec *page)
{
	sq_conn *w = conn;
	sqlite3_stmt *st;
	bool versions = kind == HSM_WRAPPED_KEY_MATERIAL;
	HSM_GUARD(sq_prepare(w, versions ? SQL_VERSIONS_PAGE : SQL_ACCESS_KEYS_PAGE, &st));
	sq_bind_text(w, st, 1, last->id);
	if (versions)
		sq_bind_i64(w, st, 2, last->version);
	sq_bind_i64(w, st, versions ? 3 : 2, ST_REKEY_PAGE);
	hsm_result res = sq_collect(w, st, ST_REKEY_PAGE,
	                            versions ? read_version_row : read_access_key_row,
	                            st_rekey_row_clear, page, NULL);
	sq_reset(st);
	return res;
}

static hsm_result write_row(void *conn, hsm_wrapped_kind kind, const st_rekey_row *row,
                            const hsm_buf *wrapped)
{
	sq_conn *w = conn;
	sqlite3_stmt *st;
	bool versions = kind == HSM_WRAPPED_KEY_MATERIAL;
	HSM_GUARD(sq_prepare(w, versions ? SQL_VERSION_SET : SQL_ACCESS_KEY_SET, &st));
	sq_bind_text(w, st, 1, row->id);
	if (versions)
		sq_bind_i64(w, st, 2, row->version);
	sq_bind_blob(w, st, versions ? 3 : 2, wrapped);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	HSM_GUARD(res);
	HSM_ENSURE(sqlite3_changes(w->db) == 1, HSM_ERR_STORE, "a re-wrapped row vanished");
	return HSM_SUCCESS;
}

static hsm_result rekey_in(sq_conn *w, const hsm_store_rekey_req *req,
                           hsm_store_rekey_counts *counts)
{
	HSM_GUARD(check_expected(w, req));
	HSM_GUARD(st_rekey_kind(w, req, HSM_WRAPPED_KEY_MATERIAL, read_page, write_row,
	                        &counts->versions));
	HSM_GUARD(st_rekey_kind(w, req, HSM_WRAPPED_ACCESS_KEY, read_page, write_row,
	                        &counts->access_keys));
	for (size_t i = 0; i < req->n_meta; i++) {
		sqlite3_stmt *st;
		HSM_GUARD(sq_prepare(w, SQL_META_SET, &st));
		sq_bind_text(w, st, 1, req->meta_names[i]);
		sq_bind_blob(w, st, 2, req->meta_values[i]);
		hsm_result res = sq_exec(w, st);
		sq_reset(st);
		HSM_GUARD(res);
	}
	return HSM_SUCCESS;
}

hsm_result sq_rekey(hsm_store *base, const hsm_store_rekey_req *req,
                    hsm_store_rekey_counts *counts)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_store_rekey_counts c = {0};
	HSM_GUARD(sq_write_begin(s, &w));
	HSM_GUARD(sq_write_end_scrub(s, w, rekey_in(w, req, &c)));
	*counts = c;
	return HSM_SUCCESS;
}
