/*
 * store_sqlite_util.c - the SQLite backend's statement cache, binders,
 * steppers, column readers, error mapping and result vectors.
 */
#include "store/store_sqlite.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- Errors -------------------------------------------------------------------- */

hsm_result sq_fail(sq_conn *c, int rc, const char *what)
{
	/*
	 * Use the connection's message only when it describes this failure; a
	 * bind error, for one, may leave an older message behind.  SQLite's
	 * messages name tables, columns and constraints, never row values.
	 */
	const char *msg = sqlite3_errstr(rc);
	if (c != NULL && c->db != NULL && sqlite3_extended_errcode(c->db) == rc)
		msg = sqlite3_errmsg(c->db);
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return HSM_FAIL(HSM_ERR_DEPENDENCY_TIMEOUT, "store busy beyond %d ms while trying to %s",
		                SQ_BUSY_TIMEOUT_MS, what);
	case SQLITE_NOMEM:
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory in the store while trying to %s", what);
	case SQLITE_CONSTRAINT:
		if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
			return HSM_FAIL(HSM_ERR_ALREADY_EXISTS, "cannot %s: %s", what, msg);
		if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
			return HSM_FAIL(HSM_ERR_NOT_FOUND, "cannot %s: %s", what, msg);
		break;
	case SQLITE_FULL:
		return HSM_FAIL(HSM_ERR_STORE, "store failed to %s: its file system is full", what);
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		if (c != NULL && c->corrupt_seen != NULL)
			atomic_fetch_add(c->corrupt_seen, 1);
		break;
	case SQLITE_IOERR:
		/* A write that met a full disk can come back as an I/O error (at start, say). */
		if (c != NULL && c->db != NULL && sqlite3_system_errno(c->db) == ENOSPC)
			return HSM_FAIL(HSM_ERR_STORE, "store failed to %s: its file system is full",
			                what);
		break;
	default:
		break;
	}
	return HSM_FAIL(HSM_ERR_STORE, "store failed to %s: %s", what, msg);
}

hsm_result sq_corrupt(const char *what)
{
	return HSM_FAIL(HSM_ERR_STORE, "store record is corrupt: %s", what);
}

/* ---- Statement cache ------------------------------------------------------------- */

static size_t slot_of(const char *sql)
{
	/* Fibonacci hashing of the address; the low bits are alignment. */
	uint64_t h = (uint64_t)(uintptr_t)sql * 0x9E3779B97F4A7C15ULL;
	return (size_t)(h >> 40) % SQ_STMT_SLOTS;
}

hsm_result sq_prepare(sq_conn *c, const char *sql, sqlite3_stmt **out)
{
	size_t i = slot_of(sql);
	for (size_t probe = 0; probe < SQ_STMT_SLOTS; probe++, i = (i + 1) % SQ_STMT_SLOTS) {
		struct sq_slot *slot = &c->stmts[i];
		if (slot->sql == sql) {
			c->bind_rc = SQLITE_OK;
			*out = slot->st;
			return HSM_SUCCESS;
		}
		if (slot->sql != NULL)
			continue;
		sqlite3_stmt *st = NULL;
		int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
		if (rc != SQLITE_OK)
			return sq_fail(c, rc, "prepare a statement");
		slot->sql = sql;
		slot->st = st;
		c->bind_rc = SQLITE_OK;
		*out = st;
		return HSM_SUCCESS;
	}
	/* More distinct statements than slots: raise SQ_STMT_SLOTS. */
	hsm_abort_at(__FILE__, __LINE__, "statement cache full");
}

void sq_reset(sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	/* The return value repeats the last step's error, already reported. */
	(void)sqlite3_reset(st);
	(void)sqlite3_clear_bindings(st);
}

/* ---- Binding and stepping --------------------------------------------------------- */

static void note_bind(sq_conn *c, int rc)
{
	if (rc != SQLITE_OK && c->bind_rc == SQLITE_OK)
		c->bind_rc = rc;
}

void sq_bind_text(sq_conn *c, sqlite3_stmt *st, int i, const char *v)
{
	note_bind(c, sqlite3_bind_text(st, i, v != NULL ? v : "", -1, SQLITE_STATIC));
}

void sq_bind_blob(sq_conn *c, sqlite3_stmt *st, int i, const hsm_buf *v)
{
	/* An empty hsm_buf has data == NULL, which SQLite would store as NULL. */
	if (v->len == 0)
		note_bind(c, sqlite3_bind_zeroblob(st, i, 0));
	else
		note_bind(c, sqlite3_bind_blob64(st, i, v->data, v->len, SQLITE_STATIC));
}

void sq_bind_i64(sq_conn *c, sqlite3_stmt *st, int i, int64_t v)
{
	note_bind(c, sqlite3_bind_int64(st, i, (sqlite3_int64)v));
}

hsm_result sq_step(sq_conn *c, sqlite3_stmt *st, bool *row)
{
	if (c->bind_rc != SQLITE_OK)
		return sq_fail(c, c->bind_rc, "bind a value");
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*row = true;
		return HSM_SUCCESS;
	}
	if (rc == SQLITE_DONE) {
		*row = false;
		return HSM_SUCCESS;
	}
	return sq_fail(c, rc, "run a statement");
}

hsm_result sq_exec(sq_conn *c, sqlite3_stmt *st)
{
	bool row;
	HSM_GUARD(sq_step(c, st, &row));
	/* Statements with RETURNING are stepped to completion by their callers. */
	HSM_ENSURE(!row, HSM_ERR_INTERNAL, "statement unexpectedly returned a row");
	return HSM_SUCCESS;
}

hsm_result sq_exists(sq_conn *c, const char *sql, const char *text, bool *found)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(c, sql, &st));
	sq_bind_text(c, st, 1, text);
	hsm_result res = sq_step(c, st, found);
	sq_reset(st);
	return res;
}

hsm_result sq_text_of(sq_conn *c, const char *sql, const char *text, char *out, size_t cap,
                      bool *found)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(c, sql, &st));
	sq_bind_text(c, st, 1, text);
	hsm_result res = sq_step(c, st, found);
	if (hsm_ok(res) && *found)
		res = sq_col_text(st, 0, out, cap);
	sq_reset(st);
	return res;
}

hsm_result sq_count(sq_conn *c, const char *sql, const char *a, const char *b, int64_t *out)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, sql, &st));
	sq_bind_text(c, st, 1, a);
	if (b != NULL)
		sq_bind_text(c, st, 2, b);
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && row)
		*out = sqlite3_column_int64(st, 0);
	else if (hsm_ok(res))
		res = HSM_FAIL(HSM_ERR_STORE, "store failed to count rows");
	sq_reset(st);
	return res;
}

/* ---- Column readers ------------------------------------------------------------------ */

/* NULL from sqlite3_column_text/blob: a NULL value (corrupt here) or out of memory. */
static hsm_result null_column(sqlite3_stmt *st, int i)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return sq_corrupt("unexpected NULL");
	return HSM_FAIL(HSM_ERR_NOMEM, "out of memory reading the store");
}

static hsm_result column_text(sqlite3_stmt *st, int i, const char **p, size_t *n)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	if (t == NULL)
		return null_column(st, i);
	int len = sqlite3_column_bytes(st, i);
	*p = (const char *)t;
	*n = (size_t)len;
	HSM_ENSURE(strlen(*p) == *n, HSM_ERR_STORE, "store record is corrupt: NUL inside text");
	return HSM_SUCCESS;
}

hsm_result sq_col_text(sqlite3_stmt *st, int i, char *dst, size_t cap)
{
	const char *p = NULL; /* set on success; gcc -O3 cannot tell */
	size_t n = 0;
	HSM_GUARD(column_text(st, i, &p, &n));
	HSM_ENSURE(n < cap, HSM_ERR_STORE, "store record is corrupt: text longer than its field");
	memcpy(dst, p, n + 1);
	return HSM_SUCCESS;
}

hsm_result sq_col_strdup(sqlite3_stmt *st, int i, char **out)
{
	const char *p = NULL; /* set on success; gcc -O3 cannot tell */
	size_t n = 0;
	HSM_GUARD(column_text(st, i, &p, &n));
	char *copy = malloc(n + 1);
	HSM_ENSURE(copy != NULL, HSM_ERR_NOMEM, "out of memory");
	memcpy(copy, p, n + 1);
	*out = copy;
	return HSM_SUCCESS;
}

hsm_result sq_col_blob(sqlite3_stmt *st, int i, hsm_buf *out)
{
	const void *p = sqlite3_column_blob(st, i);
	int n = sqlite3_column_bytes(st, i);
	if (p == NULL && n == 0 && sqlite3_column_type(st, i) != SQLITE_NULL) {
		hsm_buf_clear(out);
		return HSM_SUCCESS; /* an empty blob */
	}
	if (p == NULL)
		return null_column(st, i);
	return hsm_buf_set(out, p, (size_t)n);
}

hsm_result sq_col_u32(sqlite3_stmt *st, int i, uint32_t *out)
{
	sqlite3_int64 v = sqlite3_column_int64(st, i);
	HSM_ENSURE(v >= 0 && v <= (sqlite3_int64)UINT32_MAX, HSM_ERR_STORE,
	           "store record is corrupt: number out of range");
	*out = (uint32_t)v;
	return HSM_SUCCESS;
}

hsm_result sq_col_i32(sqlite3_stmt *st, int i, int32_t *out)
{
	sqlite3_int64 v = sqlite3_column_int64(st, i);
	HSM_ENSURE(v >= INT32_MIN && v <= INT32_MAX, HSM_ERR_STORE,
	           "store record is corrupt: number out of range");
	*out = (int32_t)v;
	return HSM_SUCCESS;
}

hsm_result sq_col_bool(sqlite3_stmt *st, int i, bool *out)
{
	sqlite3_int64 v = sqlite3_column_int64(st, i);
	HSM_ENSURE(v == 0 || v == 1, HSM_ERR_STORE, "store record is corrupt: flag out of range");
	*out = v == 1;
	return HSM_SUCCESS;
}

/* ---- Collecting rows -------------------------------------------------------------------- */

hsm_result sq_collect(sq_conn *c, sqlite3_stmt *st, size_t max, sq_row_reader read,
                      void (*clear)(void *item), st_vec *v, bool *more)
{
	bool row = false;
	for (;;) {
		HSM_GUARD(sq_step(c, st, &row));
		if (!row || v->n == max)
			break;
		void *item;
		HSM_GUARD(st_vec_push(v, &item));
		hsm_result res = read(st, item);
		if (hsm_failed(res)) {
			if (clear != NULL)
				clear(item);
			st_vec_pop(v);
			return res;
		}
	}
	if (more != NULL)
		*more = row;
	return HSM_SUCCESS;
}
