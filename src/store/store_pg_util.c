/*
 * store_pg_util.c - the PostgreSQL backend's statements, parameters, column
 * readers, error mapping and result vectors.
 *
 * Results are requested in binary (integers in network order, text and bytea
 * as raw bytes), so nothing is parsed from text and bytea needs no unescaping
 * into buffers that would not be wiped.
 */
#include "store/store_pg.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Errors ----------------------------------------------------------------------- */

/* SQLSTATEs after which the connection is gone (class 08, and the server shutting down). */
static bool state_is_lost(const char *state)
{
	return strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 ||
	       strcmp(state, "57P02") == 0 || strcmp(state, "57P03") == 0;
}

hsm_result pg_fail(pg_conn *c, const PGresult *r, const char *what)
{
	const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	/*
	 * Only the SQLSTATE and the constraint name are passed on: the message
	 * and its DETAIL line may quote row values (a duplicate key, a value
	 * that failed a check), which must not reach logs or clients.
	 */
	const char *constraint = r != NULL ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
	if (constraint == NULL)
		constraint = "";
	if (c != NULL && (PQstatus(c->db) == CONNECTION_BAD || (state && state_is_lost(state)))) {
		c->broken = true;
		return HSM_FAIL(HSM_ERR_STORE, "lost the connection to PostgreSQL while trying to %s",
		                what);
	}
	if (state == NULL) {
		/*
		 * The server answers every error with a SQLSTATE: this one is libpq's
		 * own (it ran out of memory reading an answer, say), and what the
		 * server did is not known (a statement prepared, a transaction
		 * committed).  The connection is not used again.
		 */
		if (c != NULL)
			c->broken = true;
		return HSM_FAIL(HSM_ERR_STORE, "PostgreSQL failed to %s (no SQLSTATE)", what);
	}
	if (strcmp(state, "23505") == 0)
		return HSM_FAIL(HSM_ERR_ALREADY_EXISTS, "cannot %s: already exists (%.63s)", what,
		                constraint);
	if (strcmp(state, "23503") == 0)
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "cannot %s: a referenced record does not exist (%.63s)",
		                what, constraint);
	/* lock_not_available (lock_timeout), query_canceled (statement_timeout). */
	if (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0)
		return HSM_FAIL(HSM_ERR_DEPENDENCY_TIMEOUT,
		                "PostgreSQL stayed busy beyond its timeout while trying to %s", what);
	/* serialization_failure, deadlock_detected: contention a caller may retry. */
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
		return HSM_FAIL(HSM_ERR_DEPENDENCY_TIMEOUT,
		                "PostgreSQL aborted a conflicting transaction while trying to %s", what);
	if (strncmp(state, "53", 2) == 0)
		return HSM_FAIL(HSM_ERR_STORE, "PostgreSQL is out of resources (SQLSTATE %.5s) while "
		                "trying to %s", state, what);
	if (strcmp(state, "25006") == 0)
		return HSM_FAIL(HSM_ERR_STORE, "PostgreSQL is read-only (a standby?) while trying to %s",
		                what);
	if (*constraint != '\0')
		return HSM_FAIL(HSM_ERR_STORE, "PostgreSQL failed to %s: SQLSTATE %.5s (%.63s)", what,
		                state, constraint);
	return HSM_FAIL(HSM_ERR_STORE, "PostgreSQL failed to %s: SQLSTATE %.5s", what, state);
}

hsm_result pg_corrupt(const char *what)
{
	return HSM_FAIL(HSM_ERR_STORE, "store record is corrupt: %s", what);
}

/* ---- Parameters ---------------------------------------------------------------------- */

void pg_params_init(pg_params *p)
{
	memset(p, 0, sizeof(*p));
}

static int next_param(pg_params *p)
{
	HSM_ASSERT(p->n < PG_MAX_PARAMS);
	return p->n++;
}

void pg_p_text(pg_params *p, const char *v)
{
	int i = next_param(p);
	p->values[i] = v != NULL ? v : "";
}

void pg_p_i64(pg_params *p, int64_t v)
{
	int i = next_param(p);
	snprintf(p->ints[i], sizeof(p->ints[i]), "%" PRId64, v);
	p->values[i] = p->ints[i];
}

void pg_p_bool(pg_params *p, bool v)
{
	int i = next_param(p);
	p->values[i] = v ? "t" : "f";
}

void pg_p_bytea(pg_params *p, const hsm_buf *v)
{
	int i = next_param(p);
	HSM_ASSERT(v->len <= INT32_MAX);
	/* A NULL value pointer would be SQL NULL: an empty bytea needs a non-NULL pointer. */
	p->values[i] = v->len > 0 ? (const char *)v->data : "";
	p->lengths[i] = (int)v->len;
	p->formats[i] = 1;
}

/* ---- Statements ------------------------------------------------------------------------- */

/* 1 when c's socket is ready for events, 0 at the deadline (hsm_mono_ns), -1 on error. */
static int wait_socket(pg_conn *c, short events, uint64_t deadline)
{
	int fd = PQsocket(c->db);
	if (fd < 0)
		return -1;
	for (;;) {
		uint64_t now = hsm_mono_ns();
		if (now >= deadline)
			return 0;
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, (int)((deadline - now + 999999U) / 1000000U));
		if (n != 0 || errno != EINTR)
			return n > 0 ? 1 : n;
	}
}

/*
 * The answer to what was just sent on c, as the blocking calls give it (the
 * first error, else the last result), waiting at most PG_CLIENT_TIMEOUT_MS.
 * NULL when sending failed or the connection broke (PQstatus says which),
 * or, with c->late and c->broken set, when no answer came in time.
 */
static PGresult *await_result(pg_conn *c)
{
	uint64_t deadline = hsm_mono_ns() + (uint64_t)PG_CLIENT_TIMEOUT_MS * 1000000U;
	PGresult *keep = NULL;
	int flushed;
	while ((flushed = PQflush(c->db)) == 1) {
		int w = wait_socket(c, POLLIN | POLLOUT, deadline);
		if (w == 0)
			goto late;
		if (w < 0 || !PQconsumeInput(c->db))
			break;
	}
	for (;;) {
		while (flushed >= 0 && PQisBusy(c->db)) {
			int w = wait_socket(c, POLLIN, deadline);
			if (w == 0)
				goto late;
			if (w < 0 || !PQconsumeInput(c->db))
				break;
		}
		if (PQisBusy(c->db) && PQstatus(c->db) != CONNECTION_BAD)
			break; /* cannot read on, yet not known lost: give the connection up */
		PGresult *r = PQgetResult(c->db);
		if (r == NULL)
			return keep;
		ExecStatusType kept = keep != NULL ? PQresultStatus(keep) : PGRES_COMMAND_OK;
		if (kept != PGRES_COMMAND_OK && kept != PGRES_TUPLES_OK) {
			PQclear(r); /* the first error stands */
		} else {
			PQclear(keep);
			keep = r;
		}
	}
	PQclear(keep);
	c->broken = true;
	return NULL;
late:
	PQclear(keep);
	c->late = true;
	c->broken = true; /* in an unknown state: closed, never pooled */
	return NULL;
}

PGresult *pg_exec_raw(pg_conn *c, const char *sql)
{
	return PQsendQuery(c->db, sql) ? await_result(c) : NULL;
}

/* The failure for an answer await_result did not give. */
static hsm_result no_answer(pg_conn *c, const char *what)
{
	if (c->late)
		return HSM_FAIL(HSM_ERR_DEPENDENCY_TIMEOUT,
		                "PostgreSQL did not answer within %d s while trying to %s",
		                PG_CLIENT_TIMEOUT_MS / 1000, what);
	return pg_fail(c, NULL, what);
}

static size_t slot_of(const char *sql)
{
	/* Fibonacci hashing of the address; the low bits are alignment. */
	uint64_t h = (uint64_t)(uintptr_t)sql * 0x9E3779B97F4A7C15ULL;
	return (size_t)(h >> 40) % PG_STMT_SLOTS;
}

/* The prepared statement's name for sql on c ("s<slot>"), preparing it on first use. */
static hsm_result prepared_name(pg_conn *c, const char *sql, int nparams, char name[16])
{
	size_t i = slot_of(sql);
	for (size_t probe = 0; probe < PG_STMT_SLOTS; probe++, i = (i + 1) % PG_STMT_SLOTS) {
		struct pg_slot *slot = &c->stmts[i];
		snprintf(name, 16, "s%zu", i);
		if (slot->sql == sql)
			return HSM_SUCCESS;
		if (slot->sql != NULL)
			continue;
		PGresult *r = PQsendPrepare(c->db, name, sql, nparams, NULL) ? await_result(c) : NULL;
		if (r == NULL)
			return no_answer(c, "prepare a statement");
		hsm_result res = HSM_SUCCESS;
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			res = pg_fail(c, r, "prepare a statement");
		} else {
			slot->sql = sql;
			c->ok++;
		}
		PQclear(r);
		return res;
	}
	/* More distinct statements than slots: raise PG_STMT_SLOTS. */
	hsm_abort_at(__FILE__, __LINE__, "statement cache full");
}

hsm_result pg_run(pg_conn *c, const char *sql, const pg_params *p, PGresult **out)
{
	static const pg_params none;
	if (p == NULL)
		p = &none;
	char name[16];
	HSM_GUARD(prepared_name(c, sql, p->n, name));
	PGresult *r = PQsendQueryPrepared(c->db, name, p->n, p->values, p->lengths, p->formats, 1)
	                  ? await_result(c)
	                  : NULL;
	if (r == NULL)
		return no_answer(c, "run a statement");
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		hsm_result res = pg_fail(c, r, "run a statement");
		PQclear(r);
		return res;
	}
	c->ok++;
	if (out != NULL)
		*out = r;
	else
		PQclear(r);
	return HSM_SUCCESS;
}

hsm_result pg_simple(pg_conn *c, const char *sql, const char *what)
{
	PGresult *r = pg_exec_raw(c, sql);
	if (r == NULL)
		return no_answer(c, what);
	hsm_result res = HSM_SUCCESS;
	ExecStatusType st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
		res = pg_fail(c, r, what);
	else
		c->ok++;
	PQclear(r);
	return res;
}

hsm_result pg_array_put_text(hsm_buf *a, const char *text)
{
	HSM_GUARD(hsm_buf_put_str(a, a->len > 1 ? ",\"" : "\""));
	for (const char *c = text; *c != '\0'; c++) {
		if (*c == '"' || *c == '\\')
			HSM_GUARD(hsm_buf_put(a, "\\", 1));
		HSM_GUARD(hsm_buf_put(a, c, 1));
	}
	return hsm_buf_put_str(a, "\"");
}

hsm_result pg_exists(pg_conn *c, const char *sql, const char *text, bool *found)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, text);
	HSM_GUARD(pg_run(c, sql, &p, &r));
	*found = PQntuples(r) > 0;
	PQclear(r);
	return HSM_SUCCESS;
}

hsm_result pg_text_of(pg_conn *c, const char *sql, const char *text, char *out, size_t cap,
                      bool *found)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, text);
	HSM_GUARD(pg_run(c, sql, &p, &r));
	*found = PQntuples(r) > 0;
	hsm_result res = *found ? pg_col_text(r, 0, 0, out, cap) : HSM_SUCCESS;
	PQclear(r);
	return res;
}

hsm_result pg_count(pg_conn *c, const char *sql, const char *a, const char *b, int64_t *out)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, a);
	if (b != NULL)
		pg_p_text(&p, b);
	HSM_GUARD(pg_run(c, sql, &p, &r));
	hsm_result res = pg_col_i64(r, 0, 0, out);
	PQclear(r);
	return res;
}

/* ---- Column readers --------------------------------------------------------------------- */

static hsm_result col_bytes(const PGresult *r, int row, int col, const char **p, size_t *n)
{
	if (PQgetisnull(r, row, col))
		return pg_corrupt("unexpected NULL");
	*p = PQgetvalue(r, row, col);
	*n = (size_t)PQgetlength(r, row, col);
	return HSM_SUCCESS;
}

hsm_result pg_col_text(const PGresult *r, int row, int col, char *dst, size_t cap)
{
	const char *p = NULL; /* set on success; gcc -O3 cannot tell */
	size_t n = 0;
	HSM_GUARD(col_bytes(r, row, col, &p, &n));
	HSM_ENSURE(n < cap, HSM_ERR_STORE, "store record is corrupt: text longer than its field");
	memcpy(dst, p, n);
	dst[n] = '\0';
	return HSM_SUCCESS;
}

hsm_result pg_col_strdup(const PGresult *r, int row, int col, char **out)
{
	const char *p = NULL;
	size_t n = 0;
	HSM_GUARD(col_bytes(r, row, col, &p, &n));
	char *copy = malloc(n + 1);
	HSM_ENSURE(copy != NULL, HSM_ERR_NOMEM, "out of memory");
	memcpy(copy, p, n);
	copy[n] = '\0';
	*out = copy;
	return HSM_SUCCESS;
}

hsm_result pg_col_bytea(const PGresult *r, int row, int col, hsm_buf *out)
{
	const char *p = NULL;
	size_t n = 0;
	HSM_GUARD(col_bytes(r, row, col, &p, &n));
	if (n == 0) {
		hsm_buf_clear(out);
		return HSM_SUCCESS;
	}
	return hsm_buf_set(out, p, n);
}

hsm_result pg_col_i64(const PGresult *r, int row, int col, int64_t *out)
{
	const char *p = NULL;
	size_t n = 0;
	HSM_GUARD(col_bytes(r, row, col, &p, &n));
	if (n == 8) {
		uint64_t be;
		memcpy(&be, p, 8);
		*out = (int64_t)be64toh(be);
	} else if (n == 4) {
		uint32_t be;
		memcpy(&be, p, 4);
		*out = (int32_t)be32toh(be);
	} else {
		return pg_corrupt("integer of unexpected width");
	}
	return HSM_SUCCESS;
}

hsm_result pg_col_i32(const PGresult *r, int row, int col, int32_t *out)
{
	int64_t v = 0;
	HSM_GUARD(pg_col_i64(r, row, col, &v));
	HSM_ENSURE(v >= INT32_MIN && v <= INT32_MAX, HSM_ERR_STORE,
	           "store record is corrupt: number out of range");
	*out = (int32_t)v;
	return HSM_SUCCESS;
}

hsm_result pg_col_u32(const PGresult *r, int row, int col, uint32_t *out)
{
	int64_t v = 0;
	HSM_GUARD(pg_col_i64(r, row, col, &v));
	HSM_ENSURE(v >= 0 && v <= (int64_t)UINT32_MAX, HSM_ERR_STORE,
	           "store record is corrupt: number out of range");
	*out = (uint32_t)v;
	return HSM_SUCCESS;
}

hsm_result pg_col_bool(const PGresult *r, int row, int col, bool *out)
{
	const char *p = NULL;
	size_t n = 0;
	HSM_GUARD(col_bytes(r, row, col, &p, &n));
	HSM_ENSURE(n == 1 && (p[0] == 0 || p[0] == 1), HSM_ERR_STORE,
	           "store record is corrupt: flag out of range");
	*out = p[0] == 1;
	return HSM_SUCCESS;
}

/* ---- Collecting rows ----------------------------------------------------------------------- */

hsm_result pg_get_one(pg_conn *c, const char *sql, const char *id, const char *what,
                      pg_row_reader read, void *item)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, id);
	HSM_GUARD(pg_run(c, sql, &p, &r));
	hsm_result res = PQntuples(r) == 0
	                     ? HSM_FAIL(HSM_ERR_NOT_FOUND, "%s %s does not exist", what, id)
	                     : read(r, 0, item);
	PQclear(r);
	return res;
}

hsm_result pg_collect(const PGresult *r, size_t max, pg_row_reader read,
                      void (*clear)(void *item), st_vec *v, bool *more)
{
	int rows = PQntuples(r);
	int row = 0;
	for (; row < rows && v->n < max; row++) {
		void *item;
		HSM_GUARD(st_vec_push(v, &item));
		hsm_result res = read(r, row, item);
		if (hsm_failed(res)) {
			if (clear != NULL)
				clear(item);
			v->n--;
			return res;
		}
	}
	if (more != NULL)
		*more = row < rows;
	return HSM_SUCCESS;
}
