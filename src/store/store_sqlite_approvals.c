/*
 * store_sqlite_approvals.c - quorum approvals (store.h, "Quorum approvals")
 * in SQLite.
 *
 * A request is a row of approvals; its approvers are rows of approval_votes,
 * numbered in the order they approved.  Every write runs in one BEGIN
 * IMMEDIATE transaction, which the store's single write connection
 * serializes: the record a write loads and checks (one open request per
 * fingerprint, distinct approvers, one use) is still the record when it
 * commits.  Reads run in one read transaction, so a record and its approvers
 * come from the same commit.
 */
#include "store/store_sqlite.h"

#include <stdlib.h>
#include <string.h>

#define APPROVAL_COLS                                                                      \
	"id, fingerprint, operation, requester, request, state, required, created, expires, " \
	"closed, closed_by"

static const char SQL_APPROVAL_GET[] = "SELECT " APPROVAL_COLS " FROM approvals WHERE id = ?1";
/* The open request of a fingerprint (approvals_open); the newest, should there be several. */
static const char SQL_APPROVAL_OPEN_FOR[] =
	"SELECT " APPROVAL_COLS " FROM approvals WHERE fingerprint = ?1 AND state = 'Pending' "
	"AND expires > ?2 ORDER BY created DESC, id LIMIT 1";
static const char SQL_APPROVAL_EXISTS[] = "SELECT 1 FROM approvals WHERE id = ?1";
static const char SQL_APPROVALS_HELD[] = "SELECT count(*) FROM approvals WHERE requester = ?1 "
                                         "AND state = 'Pending' AND expires > ?2";
static const char SQL_APPROVAL_INSERT[] = "INSERT INTO approvals (" APPROVAL_COLS ") "
                                          "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
static const char SQL_APPROVAL_SET_STATE[] =
	"UPDATE approvals SET state = ?2, closed = ?3, closed_by = ?4 WHERE id = ?1";
static const char SQL_VOTES[] =
	"SELECT approver FROM approval_votes WHERE approval_id = ?1 ORDER BY position";
static const char SQL_VOTE_INSERT[] = "INSERT INTO approval_votes "
                                      "(approval_id, approver, position, created) "
                                      "VALUES (?1, ?2, ?3, ?4)";
/*
 * A page walks approvals_newest from after the cursor (?3 = its created, ?4
 * = its id): the records of older seconds, and those of its second with a
 * greater id.  ?1 is the page's limit (one more for the records, to tell
 * whether more follow), ?2 now for the open ones.  Its approvers come in
 * the page's order, so they are matched to the records in one pass
 * (st_approval_page_find).
 */
#define AFTER_CURSOR "created <= ?3 AND (created < ?3 OR id > ?4)"
static const char SQL_PAGE_ALL[] = "SELECT " APPROVAL_COLS " FROM approvals WHERE " AFTER_CURSOR
                                   " ORDER BY created DESC, id LIMIT ?1";
static const char SQL_PAGE_OPEN[] = "SELECT " APPROVAL_COLS " FROM approvals "
                                    "WHERE state = 'Pending' AND expires > ?2 AND " AFTER_CURSOR
                                    " ORDER BY created DESC, id LIMIT ?1";
/* The sizes of the texts of the page's records, to end it at ST_APPROVAL_PAGE_BYTES. */
static const char SQL_PAGE_SIZES_ALL[] = "SELECT length(CAST(request AS BLOB)) FROM approvals "
                                         "WHERE " AFTER_CURSOR " ORDER BY created DESC, id LIMIT ?1";
static const char SQL_PAGE_SIZES_OPEN[] = "SELECT length(CAST(request AS BLOB)) FROM approvals "
                                          "WHERE state = 'Pending' AND expires > ?2 AND "
                                          AFTER_CURSOR " ORDER BY created DESC, id LIMIT ?1";
static const char SQL_PAGE_VOTES_ALL[] =
	"SELECT p.id, v.approver FROM "
	"(SELECT id, created FROM approvals WHERE " AFTER_CURSOR
	" ORDER BY created DESC, id LIMIT ?1) AS p "
	"JOIN approval_votes AS v ON v.approval_id = p.id "
	"ORDER BY p.created DESC, p.id, v.position";
static const char SQL_PAGE_VOTES_OPEN[] =
	"SELECT p.id, v.approver FROM "
	"(SELECT id, created FROM approvals WHERE state = 'Pending' AND expires > ?2 AND " AFTER_CURSOR
	" ORDER BY created DESC, id LIMIT ?1) AS p "
	"JOIN approval_votes AS v ON v.approval_id = p.id "
	"ORDER BY p.created DESC, p.id, v.position";
static const char SQL_EXPIRED_COUNT[] = "SELECT count(*) FROM approvals WHERE expires < ?1";
/* The foreign key's ON DELETE CASCADE deletes the approvers. */
static const char SQL_PURGE[] = "DELETE FROM approvals WHERE expires < ?1";
static const char SQL_READ_BEGIN[] = "BEGIN";
/* A page of hsm_store_approval_rewrite's walk: the records after ?1 in id order (the primary key). */
static const char SQL_REWRITE_PAGE[] =
	"SELECT id, request FROM approvals WHERE id > ?1 ORDER BY id LIMIT ?2";
static const char SQL_SET_REQUEST[] = "UPDATE approvals SET request = ?2 WHERE id = ?1";

/* ---- Rows ------------------------------------------------------------------------------ */

static hsm_result read_approval(sqlite3_stmt *st, void *item)
{
	hsm_approval_record *a = item;
	char state[16];
	HSM_GUARD(sq_col_text(st, 0, a->id, sizeof(a->id)));
	HSM_GUARD(sq_col_text(st, 1, a->fingerprint, sizeof(a->fingerprint)));
	HSM_GUARD(sq_col_text(st, 2, a->operation, sizeof(a->operation)));
	HSM_GUARD(sq_col_text(st, 3, a->requester, sizeof(a->requester)));
	HSM_GUARD(sq_col_strdup(st, 4, &a->request));
	HSM_GUARD(sq_col_text(st, 5, state, sizeof(state)));
	if (hsm_failed(hsm_approval_state_parse(state, &a->state)))
		return sq_corrupt("unknown approval state");
	HSM_GUARD(sq_col_u32(st, 6, &a->required));
	a->created = sqlite3_column_int64(st, 7);
	a->expires = sqlite3_column_int64(st, 8);
	a->closed = sqlite3_column_int64(st, 9);
	return sq_col_text(st, 10, a->closed_by, sizeof(a->closed_by));
}

static void clear_approval(void *item)
{
	hsm_approval_record_clear(item);
}

/* Appends the approver in column col of st's row to a. */
static hsm_result read_vote(sqlite3_stmt *st, int col, hsm_approval_record *a)
{
	char approver[HSM_USER_NAME_MAX + 1];
	HSM_GUARD(sq_col_text(st, col, approver, sizeof(approver)));
	return st_approval_add(a, approver);
}

/* Reads a's approvers, in the order they approved. */
static hsm_result load_votes(sq_conn *c, hsm_approval_record *a)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, SQL_VOTES, &st));
	sq_bind_text(c, st, 1, a->id);
	hsm_result res;
	while (hsm_ok(res = sq_step(c, st, &row)) && row) {
		res = read_vote(st, 0, a);
		if (hsm_failed(res))
			break;
	}
	sq_reset(st);
	return res;
}

/* Steps st (prepared and bound) once: the record it returns, with its approvers; *found tells. */
static hsm_result load_from(sq_conn *c, sqlite3_stmt *st, hsm_approval_record *a, bool *found)
{
	hsm_result res = sq_step(c, st, found);
	if (hsm_ok(res) && *found)
		res = read_approval(st, a);
	sq_reset(st);
	if (hsm_ok(res) && *found)
		res = load_votes(c, a);
	return res;
}

static hsm_result load_by_id(sq_conn *c, const char *id, hsm_approval_record *a)
{
	sqlite3_stmt *st;
	bool found = false;
	HSM_GUARD(sq_prepare(c, SQL_APPROVAL_GET, &st));
	sq_bind_text(c, st, 1, id);
	HSM_GUARD(load_from(c, st, a, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "approval %s does not exist", id);
	return HSM_SUCCESS;
}

/* The open request (Pending, expires > now) of a fingerprint, if any. */
static hsm_result load_open(sq_conn *c, const char *fingerprint, int64_t now,
                            hsm_approval_record *a, bool *found)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(c, SQL_APPROVAL_OPEN_FOR, &st));
	sq_bind_text(c, st, 1, fingerprint);
	sq_bind_i64(c, st, 2, now);
	return load_from(c, st, a, found);
}

/*
 * Runs body on a pooled read connection inside one read transaction (WAL:
 * a snapshot that writers do not wait for), so what it reads in several
 * statements is one commit's state.
 */
typedef hsm_result (*read_body)(sq_conn *c, void *arg);

static hsm_result read_snapshot(sq_store *s, read_body body, void *arg)
{
	sq_conn *c;
	sqlite3_stmt *st;
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = sq_prepare(c, SQL_READ_BEGIN, &st);
	if (hsm_ok(res)) {
		res = sq_exec(c, st);
		sq_reset(st);
	}
	if (hsm_ok(res))
		res = body(c, arg);
	if (!sqlite3_get_autocommit(c->db))
		(void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL); /* read only: nothing to keep */
	sq_read_end(s, c);
	return res;
}

/* ---- Writes ---------------------------------------------------------------------------- */

static hsm_result insert_approval(sq_conn *w, const hsm_approval_record *a)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_APPROVAL_INSERT, &st));
	sq_bind_text(w, st, 1, a->id);
	sq_bind_text(w, st, 2, a->fingerprint);
	sq_bind_text(w, st, 3, a->operation);
	sq_bind_text(w, st, 4, a->requester);
	sq_bind_text(w, st, 5, a->request);
	sq_bind_text(w, st, 6, hsm_approval_state_name(a->state));
	sq_bind_i64(w, st, 7, a->required);
	sq_bind_i64(w, st, 8, a->created);
	sq_bind_i64(w, st, 9, a->expires);
	sq_bind_i64(w, st, 10, a->closed);
	sq_bind_text(w, st, 11, a->closed_by);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

/* Writes the state, closed and closed_by of a. */
static hsm_result write_state(sq_conn *w, const hsm_approval_record *a)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_APPROVAL_SET_STATE, &st));
	sq_bind_text(w, st, 1, a->id);
	sq_bind_text(w, st, 2, hsm_approval_state_name(a->state));
	sq_bind_i64(w, st, 3, a->closed);
	sq_bind_text(w, st, 4, a->closed_by);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

/* Writes a's last approver (st_approval_approve appended it), at its position. */
static hsm_result insert_last_vote(sq_conn *w, const hsm_approval_record *a, int64_t now)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_VOTE_INSERT, &st));
	sq_bind_text(w, st, 1, a->id);
	sq_bind_text(w, st, 2, a->approvers[a->n_approvers - 1]);
	sq_bind_i64(w, st, 3, a->n_approvers);
	sq_bind_i64(w, st, 4, now);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

/* Ends a write that produced rec: *out receives it on success (when out is not NULL). */
static hsm_result write_done(sq_store *s, sq_conn *w, hsm_result res, hsm_approval_record *rec,
                             hsm_approval_record *out)
{
	res = sq_write_end(s, w, res);
	if (hsm_ok(res) && out != NULL)
		*out = *rec;
	else
		hsm_approval_record_clear(rec);
	return res;
}

/* The open requests of a's requester at a's creation. */
static hsm_result held_by(sq_conn *w, const hsm_approval_record *a, int64_t *held)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(w, SQL_APPROVALS_HELD, &st));
	sq_bind_text(w, st, 1, a->requester);
	sq_bind_i64(w, st, 2, a->created);
	hsm_result res = sq_step(w, st, &row);
	if (hsm_ok(res) && row)
		*held = sqlite3_column_int64(st, 0);
	else if (hsm_ok(res))
		res = HSM_FAIL(HSM_ERR_STORE, "store failed to count open approvals");
	sq_reset(st);
	return res;
}

static hsm_result open_in(sq_conn *w, const hsm_approval_record *a, hsm_approval_record *rec)
{
	bool found = false;
	/* The same request opened before and still open: its record, approvals and all. */
	HSM_GUARD(load_open(w, a->fingerprint, a->created, rec, &found));
	if (found)
		return HSM_SUCCESS;
	bool taken = false;
	HSM_GUARD(sq_exists(w, SQL_APPROVAL_EXISTS, a->id, &taken));
	HSM_ENSURE(!taken, HSM_ERR_ALREADY_EXISTS, "approval %s already exists", a->id);
	int64_t held = 0;
	HSM_GUARD(held_by(w, a, &held));
	HSM_GUARD(st_approval_fresh(a, held, rec));
	return insert_approval(w, rec);
}

hsm_result sq_approval_open(hsm_store *base, const hsm_approval_record *a,
                            hsm_approval_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_approval_record rec = {0};
	HSM_GUARD(sq_write_begin(s, &w));
	return write_done(s, w, open_in(w, a, &rec), &rec, out);
}

static hsm_result approve_in(sq_conn *w, const char *id, const char *approver, int64_t now,
                             hsm_approval_record *rec)
{
	HSM_GUARD(load_by_id(w, id, rec));
	HSM_GUARD(st_approval_approve(rec, approver, now));
	return insert_last_vote(w, rec, now);
}

hsm_result sq_approval_approve(hsm_store *base, const char *id, const char *approver,
                               int64_t now, hsm_approval_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_approval_record rec = {0};
	HSM_GUARD(sq_write_begin(s, &w));
	return write_done(s, w, approve_in(w, id, approver, now, &rec), &rec, out);
}

static hsm_result close_in(sq_conn *w, const char *id, hsm_approval_state to, const char *by,
                           int64_t now, hsm_approval_record *rec)
{
	HSM_GUARD(load_by_id(w, id, rec));
	HSM_GUARD(st_approval_close(rec, to, by, now));
	return write_state(w, rec);
}

hsm_result sq_approval_close(hsm_store *base, const char *id, hsm_approval_state to,
                             const char *by, int64_t now, hsm_approval_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_approval_record rec = {0};
	HSM_GUARD(sq_write_begin(s, &w));
	return write_done(s, w, close_in(w, id, to, by, now, &rec), &rec, out);
}

static hsm_result reopen_in(sq_conn *w, const char *id, hsm_approval_record *rec)
{
	HSM_GUARD(load_by_id(w, id, rec));
	HSM_GUARD(st_approval_reopen(rec));
	return write_state(w, rec);
}

hsm_result sq_approval_reopen(hsm_store *base, const char *id)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_approval_record rec = {0};
	HSM_GUARD(sq_write_begin(s, &w));
	return write_done(s, w, reopen_in(w, id, &rec), &rec, NULL);
}

static hsm_result purge_in(sq_conn *w, int64_t before, uint64_t *deleted)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(w, SQL_EXPIRED_COUNT, &st));
	sq_bind_i64(w, st, 1, before);
	hsm_result res = sq_step(w, st, &row);
	if (hsm_ok(res) && row)
		*deleted = (uint64_t)sqlite3_column_int64(st, 0);
	else if (hsm_ok(res))
		res = HSM_FAIL(HSM_ERR_STORE, "store failed to count expired approvals");
	sq_reset(st);
	HSM_GUARD(res);
	HSM_GUARD(sq_prepare(w, SQL_PURGE, &st));
	sq_bind_i64(w, st, 1, before);
	res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

hsm_result sq_approval_purge(hsm_store *base, int64_t before, uint64_t *deleted)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	uint64_t n = 0;
	HSM_GUARD(sq_write_begin(s, &w));
	HSM_GUARD(sq_write_end(s, w, purge_in(w, before, &n)));
	*deleted = n;
	return HSM_SUCCESS;
}

typedef struct rewrite_row {
	char id[HSM_APPROVAL_ID_LEN + 1];
	char *request;
} rewrite_row;

/* Reads the records after `after` (at most a page) into rows; *n says how many. */
static hsm_result rewrite_page(sq_conn *w, const char *after, rewrite_row *rows, size_t *n)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(w, SQL_REWRITE_PAGE, &st));
	sq_bind_text(w, st, 1, after);
	sq_bind_i64(w, st, 2, ST_APPROVAL_REWRITE_PAGE);
	hsm_result res;
	while (hsm_ok(res = sq_step(w, st, &row)) && row && *n < ST_APPROVAL_REWRITE_PAGE) {
		rewrite_row *r = &rows[*n];
		res = sq_col_text(st, 0, r->id, sizeof(r->id));
		if (hsm_ok(res))
			res = sq_col_strdup(st, 1, &r->request);
		if (hsm_failed(res))
			break;
		(*n)++;
	}
	sq_reset(st);
	return res;
}

/* Offers one record's text to fn and writes the replacement it gives, if any. */
static hsm_result rewrite_one(sq_conn *w, const rewrite_row *r, hsm_approval_rewrite_fn fn,
                              void *arg, uint64_t *n)
{
	char *replacement = NULL;
	sqlite3_stmt *st;
	hsm_result res = fn(r->request, &replacement, arg);
	if (hsm_ok(res) && replacement != NULL)
		res = st_approval_check_request(replacement);
	if (hsm_ok(res) && replacement != NULL)
		res = sq_prepare(w, SQL_SET_REQUEST, &st);
	if (hsm_ok(res) && replacement != NULL) {
		sq_bind_text(w, st, 1, r->id);
		sq_bind_text(w, st, 2, replacement);
		res = sq_exec(w, st);
		sq_reset(st);
		if (hsm_ok(res))
			(*n)++;
	}
	free(replacement);
	return res;
}

static hsm_result rewrite_in(sq_conn *w, hsm_approval_rewrite_fn fn, void *arg, uint64_t *n)
{
	rewrite_row rows[ST_APPROVAL_REWRITE_PAGE];
	char after[HSM_APPROVAL_ID_LEN + 1] = "";
	size_t got;
	hsm_result res;
	do {
		memset(rows, 0, sizeof(rows));
		got = 0;
		res = rewrite_page(w, after, rows, &got);
		for (size_t i = 0; hsm_ok(res) && i < got; i++)
			res = rewrite_one(w, &rows[i], fn, arg, n);
		if (got > 0)
			memcpy(after, rows[got - 1].id, sizeof(after));
		for (size_t i = 0; i < got; i++)
			free(rows[i].request);
	} while (hsm_ok(res) && got == ST_APPROVAL_REWRITE_PAGE);
	return res;
}

hsm_result sq_approval_rewrite(hsm_store *base, hsm_approval_rewrite_fn fn, void *arg,
                               uint64_t *rewritten)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	uint64_t n = 0;
	HSM_GUARD(sq_write_begin(s, &w));
	hsm_result res = rewrite_in(w, fn, arg, &n);
	/*
	 * secure_delete zeroes the replaced texts inside the database pages; the
	 * truncating checkpoint then writes those pages home and empties the WAL,
	 * whose older frames still held them.
	 */
	HSM_GUARD(n > 0 ? sq_write_end_scrub(s, w, res) : sq_write_end(s, w, res));
	*rewritten = n;
	return HSM_SUCCESS;
}

/* ---- Reads ------------------------------------------------------------------------------ */

typedef struct approval_read {
	const char *id;
	const char *fingerprint;
	int64_t now;
	hsm_approval_record rec;
	/* Lists. */
	bool open_only;
	const hsm_approval_cursor *after;
	size_t limit;
	bool more;
	st_vec v;
} approval_read;

static hsm_result get_body(sq_conn *c, void *arg)
{
	approval_read *q = arg;
	return load_by_id(c, q->id, &q->rec);
}

hsm_result sq_approval_get(hsm_store *base, const char *id, hsm_approval_record *out)
{
	approval_read q = {.id = id};
	hsm_result res = read_snapshot(sq_of(base), get_body, &q);
	if (hsm_ok(res))
		*out = q.rec;
	else
		hsm_approval_record_clear(&q.rec);
	return res;
}

static hsm_result find_body(sq_conn *c, void *arg)
{
	approval_read *q = arg;
	bool found = false;
	HSM_GUARD(load_open(c, q->fingerprint, q->now, &q->rec, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "no open approval has fingerprint %s", q->fingerprint);
	return HSM_SUCCESS;
}

hsm_result sq_approval_find(hsm_store *base, const char *fingerprint, int64_t now,
                            hsm_approval_record *out)
{
	approval_read q = {.fingerprint = fingerprint, .now = now};
	hsm_result res = read_snapshot(sq_of(base), find_body, &q);
	if (hsm_ok(res))
		*out = q.rec;
	else
		hsm_approval_record_clear(&q.rec);
	return res;
}

/* Prepares sql, a page query of q's kind: at most rows rows (?1), ?2 = now for the open
 * ones, after q's cursor (?3, ?4). */
static hsm_result prepare_page(sq_conn *c, const char *sql, const approval_read *q, size_t rows,
                               sqlite3_stmt **st)
{
	HSM_GUARD(sq_prepare(c, sql, st));
	sq_bind_i64(c, *st, 1, (int64_t)rows);
	if (q->open_only)
		sq_bind_i64(c, *st, 2, q->now);
	sq_bind_i64(c, *st, 3, q->after->created);
	sq_bind_text(c, *st, 4, q->after->id);
	return HSM_SUCCESS;
}

static hsm_result page_votes(sq_conn *c, approval_read *q)
{
	sqlite3_stmt *st;
	bool row = false;
	size_t at = 0;
	HSM_GUARD(prepare_page(c, q->open_only ? SQL_PAGE_VOTES_OPEN : SQL_PAGE_VOTES_ALL, q,
	                       q->limit, &st));
	hsm_result res;
	while (hsm_ok(res = sq_step(c, st, &row)) && row) {
		char id[HSM_APPROVAL_ID_LEN + 1];
		hsm_approval_record *a = NULL;
		res = sq_col_text(st, 0, id, sizeof(id));
		if (hsm_ok(res))
			res = st_approval_page_find(&q->v, &at, id, &a);
		if (hsm_ok(res))
			res = read_vote(st, 1, a);
		if (hsm_failed(res))
			break;
	}
	sq_reset(st);
	return res;
}

/* Shortens q's page to the records whose texts fit ST_APPROVAL_PAGE_BYTES (one at least). */
static hsm_result page_fit(sq_conn *c, approval_read *q)
{
	sqlite3_stmt *st;
	bool row = false;
	size_t n = 0;
	int64_t bytes = 0;
	HSM_GUARD(prepare_page(c, q->open_only ? SQL_PAGE_SIZES_OPEN : SQL_PAGE_SIZES_ALL, q,
	                       q->limit, &st));
	hsm_result res;
	while (hsm_ok(res = sq_step(c, st, &row)) && row) {
		bytes += sqlite3_column_int64(st, 0);
		if (n > 0 && bytes > ST_APPROVAL_PAGE_BYTES) {
			q->limit = n; /* the next page goes on from the last record of this one */
			break;
		}
		n++;
	}
	sq_reset(st);
	return res;
}

static hsm_result list_body(sq_conn *c, void *arg)
{
	approval_read *q = arg;
	sqlite3_stmt *st;
	HSM_GUARD(page_fit(c, q));
	/* One more than the page: whether more follow. */
	HSM_GUARD(prepare_page(c, q->open_only ? SQL_PAGE_OPEN : SQL_PAGE_ALL, q, q->limit + 1, &st));
	hsm_result res = sq_collect(c, st, q->limit, read_approval, clear_approval, &q->v, &q->more);
	sq_reset(st);
	HSM_GUARD(res);
	return page_votes(c, q);
}

hsm_result sq_approval_list(hsm_store *base, bool open_only, int64_t now,
                            const hsm_approval_cursor *after, size_t limit, hsm_approval_cb cb,
                            void *arg, bool *truncated)
{
	approval_read q = {.now = now, .open_only = open_only, .after = after, .limit = limit};
	st_vec_init(&q.v, sizeof(hsm_approval_record));
	hsm_result res = read_snapshot(sq_of(base), list_body, &q);
	for (size_t i = 0; hsm_ok(res) && i < q.v.n; i++)
		res = cb(st_vec_at(&q.v, i), arg);
	st_vec_free(&q.v, clear_approval);
	if (hsm_ok(res))
		*truncated = q.more;
	return res;
}
