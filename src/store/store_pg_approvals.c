/*
 * store_pg_approvals.c - quorum approvals (store.h, "Quorum approvals") in
 * PostgreSQL.
 *
 * Same semantics and tables as store_sqlite_approvals.c.  What differs is
 * that nodes sharing the database open, approve and use one request at the
 * same moment, so each write reads and writes under a lock, in one
 * transaction:
 *
 *  - approve, close and reopen lock the request's row (SELECT ... FOR UPDATE)
 *    before they read its approvers and check the rules.  Writers of one
 *    request then run one after another, each seeing what the previous one
 *    committed (under READ COMMITTED every statement after the lock reads a
 *    fresh snapshot): of two nodes using one approved request the second
 *    finds it Used, and two approvers at once both land, in the order they
 *    got the lock.
 *  - open has no row to lock before it inserts one, so it takes an advisory
 *    lock on the fingerprint for the transaction: openers of one request
 *    queue, and the second finds what the first opened.  A unique index on
 *    the fingerprints of Pending rows cannot stand in, as an expired request
 *    stays Pending until purged while its request may be opened anew.
 *  - purge's DELETE waits for the row locks of approvers still writing, and
 *    the foreign key's ON DELETE CASCADE then deletes what they committed: no
 *    approver outlives its request.
 *
 * Reads run in one REPEATABLE READ transaction, so a record and its
 * approvers come from one snapshot.
 */
#include "store/store_pg.h"

#include <stdlib.h>

#define APPROVAL_COLS                                                                      \
	"id, fingerprint, operation, requester, request, state, required, created, expires, " \
	"closed, closed_by"

/*
 * pg_advisory_xact_lock(class, key): the class is "HSMA" as a number (the
 * schema and leadership locks take single bigint keys, another key space);
 * the key is the fingerprint's first 32 bits.  Fingerprints sharing them
 * share a lock, which only makes their openers wait for each other.
 */
static const char SQL_LOCK_FINGERPRINT[] =
	"SELECT pg_advisory_xact_lock(1213418817, ('x' || substr($1, 1, 8))::bit(32)::int)";
/* Openers for one requester queue here too ("HSMB"), after the fingerprint's lock, so that
 * each counts what the one before opened. */
static const char SQL_LOCK_REQUESTER[] = "SELECT pg_advisory_xact_lock(1213418818, hashtext($1))";
static const char SQL_APPROVALS_HELD[] = "SELECT count(*) FROM approvals WHERE requester = $1 "
                                         "AND state = 'Pending' AND expires > $2";
static const char SQL_APPROVAL_GET[] = "SELECT " APPROVAL_COLS " FROM approvals WHERE id = $1";
static const char SQL_APPROVAL_LOCK[] =
	"SELECT " APPROVAL_COLS " FROM approvals WHERE id = $1 FOR UPDATE";
/* The open request of a fingerprint (approvals_open); the newest, should there be several. */
static const char SQL_APPROVAL_OPEN_FOR[] =
	"SELECT " APPROVAL_COLS " FROM approvals WHERE fingerprint = $1 AND state = 'Pending' "
	"AND expires > $2 ORDER BY created DESC, id LIMIT 1";
static const char SQL_APPROVAL_EXISTS[] = "SELECT 1 FROM approvals WHERE id = $1";
static const char SQL_APPROVAL_INSERT[] = "INSERT INTO approvals (" APPROVAL_COLS ") "
                                          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
static const char SQL_APPROVAL_SET_STATE[] =
	"UPDATE approvals SET state = $2, closed = $3, closed_by = $4 WHERE id = $1";
static const char SQL_VOTES[] =
	"SELECT approver FROM approval_votes WHERE approval_id = $1 ORDER BY position";
static const char SQL_VOTE_INSERT[] = "INSERT INTO approval_votes "
                                      "(approval_id, approver, position, created) "
                                      "VALUES ($1, $2, $3, $4)";
/*
 * A page walks approvals_newest from after the cursor: the records of older
 * seconds, and those of its second with a greater id.  $1 is the page's
 * limit (one more for the records, to tell whether more follow); the open
 * ones' then take $2 = now, $3 and $4 the cursor's created and id, all
 * others' $2 and $3 (PostgreSQL types every parameter from the query, so
 * none may go unused).  Its approvers come in the page's order, so they are
 * matched to the records in one pass (st_approval_page_find).
 */
#define AFTER_CURSOR(c, i) "created <= " c " AND (created < " c " OR id > " i ")"
static const char SQL_PAGE_ALL[] = "SELECT " APPROVAL_COLS " FROM approvals WHERE "
                                   AFTER_CURSOR("$2", "$3") " ORDER BY created DESC, id LIMIT $1";
static const char SQL_PAGE_OPEN[] = "SELECT " APPROVAL_COLS " FROM approvals "
                                    "WHERE state = 'Pending' AND expires > $2 AND "
                                    AFTER_CURSOR("$3", "$4") " ORDER BY created DESC, id LIMIT $1";
/* The sizes of the texts of the page's records, to end it at ST_APPROVAL_PAGE_BYTES. */
static const char SQL_PAGE_SIZES_ALL[] = "SELECT octet_length(request) FROM approvals WHERE "
                                         AFTER_CURSOR("$2", "$3")
                                         " ORDER BY created DESC, id LIMIT $1";
static const char SQL_PAGE_SIZES_OPEN[] = "SELECT octet_length(request) FROM approvals "
                                          "WHERE state = 'Pending' AND expires > $2 AND "
                                          AFTER_CURSOR("$3", "$4")
                                          " ORDER BY created DESC, id LIMIT $1";
static const char SQL_PAGE_VOTES_ALL[] =
	"SELECT p.id, v.approver FROM "
	"(SELECT id, created FROM approvals WHERE " AFTER_CURSOR("$2", "$3")
	" ORDER BY created DESC, id LIMIT $1) AS p "
	"JOIN approval_votes AS v ON v.approval_id = p.id "
	"ORDER BY p.created DESC, p.id, v.position";
static const char SQL_PAGE_VOTES_OPEN[] =
	"SELECT p.id, v.approver FROM "
	"(SELECT id, created FROM approvals WHERE state = 'Pending' AND expires > $2 AND "
	AFTER_CURSOR("$3", "$4") " ORDER BY created DESC, id LIMIT $1) AS p "
	"JOIN approval_votes AS v ON v.approval_id = p.id "
	"ORDER BY p.created DESC, p.id, v.position";
static const char SQL_PURGE[] = "DELETE FROM approvals WHERE expires < $1";
/* A page of hsm_store_approval_rewrite's walk: the records after $1 in id order (the primary key). */
static const char SQL_REWRITE_PAGE[] =
	"SELECT id, request FROM approvals WHERE id > $1 ORDER BY id LIMIT $2";
static const char SQL_SET_REQUEST[] = "UPDATE approvals SET request = $2 WHERE id = $1";

typedef struct approval_op {
	const hsm_approval_record *in; /* open */
	const char *id;
	const char *fingerprint;
	const char *who; /* approve: the approver; close: what closed_by becomes */
	hsm_approval_state to;
	int64_t now;
	hsm_approval_record rec;
	/* Lists. */
	bool open_only;
	const hsm_approval_cursor *after;
	size_t limit;
	bool more;
	st_vec v;
	/* Purge. */
	uint64_t deleted;
} approval_op;

/* ---- Rows ------------------------------------------------------------------------------ */

static hsm_result read_approval(const PGresult *r, int row, void *item)
{
	hsm_approval_record *a = item;
	char state[16];
	HSM_GUARD(pg_col_text(r, row, 0, a->id, sizeof(a->id)));
	HSM_GUARD(pg_col_text(r, row, 1, a->fingerprint, sizeof(a->fingerprint)));
	HSM_GUARD(pg_col_text(r, row, 2, a->operation, sizeof(a->operation)));
	HSM_GUARD(pg_col_text(r, row, 3, a->requester, sizeof(a->requester)));
	HSM_GUARD(pg_col_strdup(r, row, 4, &a->request));
	HSM_GUARD(pg_col_text(r, row, 5, state, sizeof(state)));
	if (hsm_failed(hsm_approval_state_parse(state, &a->state)))
		return pg_corrupt("unknown approval state");
	HSM_GUARD(pg_col_u32(r, row, 6, &a->required));
	HSM_GUARD(pg_col_i64(r, row, 7, &a->created));
	HSM_GUARD(pg_col_i64(r, row, 8, &a->expires));
	HSM_GUARD(pg_col_i64(r, row, 9, &a->closed));
	return pg_col_text(r, row, 10, a->closed_by, sizeof(a->closed_by));
}

static void clear_approval(void *item)
{
	hsm_approval_record_clear(item);
}

/* Appends the approver in column col of r's row to a. */
static hsm_result read_vote(const PGresult *r, int row, int col, hsm_approval_record *a)
{
	char approver[HSM_USER_NAME_MAX + 1];
	HSM_GUARD(pg_col_text(r, row, col, approver, sizeof(approver)));
	return st_approval_add(a, approver);
}

/* Reads a's approvers, in the order they approved. */
static hsm_result load_votes(pg_conn *c, hsm_approval_record *a)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, a->id);
	HSM_GUARD(pg_run(c, SQL_VOTES, &p, &r));
	hsm_result res = HSM_SUCCESS;
	for (int row = 0; hsm_ok(res) && row < PQntuples(r); row++)
		res = read_vote(r, row, 0, a);
	PQclear(r);
	return res;
}

/* Runs sql with p: the record of its first row, with its approvers; *found tells. */
static hsm_result load_from(pg_conn *c, const char *sql, const pg_params *p,
                            hsm_approval_record *a, bool *found)
{
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, sql, p, &r));
	*found = PQntuples(r) > 0;
	hsm_result res = *found ? read_approval(r, 0, a) : HSM_SUCCESS;
	PQclear(r);
	if (hsm_ok(res) && *found)
		res = load_votes(c, a);
	return res;
}

/* The request id names (sql: SQL_APPROVAL_GET, or SQL_APPROVAL_LOCK to lock its row). */
static hsm_result load_by_id(pg_conn *c, const char *sql, const char *id,
                             hsm_approval_record *a)
{
	pg_params p;
	bool found = false;
	pg_params_init(&p);
	pg_p_text(&p, id);
	HSM_GUARD(load_from(c, sql, &p, a, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "approval %s does not exist", id);
	return HSM_SUCCESS;
}

/* The open request (Pending, expires > now) of a fingerprint, if any. */
static hsm_result load_open(pg_conn *c, const char *fingerprint, int64_t now,
                            hsm_approval_record *a, bool *found)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, fingerprint);
	pg_p_i64(&p, now);
	return load_from(c, SQL_APPROVAL_OPEN_FOR, &p, a, found);
}

/* ---- Writes ---------------------------------------------------------------------------- */

static hsm_result insert_approval(pg_conn *w, const hsm_approval_record *a)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, a->id);
	pg_p_text(&p, a->fingerprint);
	pg_p_text(&p, a->operation);
	pg_p_text(&p, a->requester);
	pg_p_text(&p, a->request);
	pg_p_text(&p, hsm_approval_state_name(a->state));
	pg_p_i64(&p, a->required);
	pg_p_i64(&p, a->created);
	pg_p_i64(&p, a->expires);
	pg_p_i64(&p, a->closed);
	pg_p_text(&p, a->closed_by);
	return pg_run(w, SQL_APPROVAL_INSERT, &p, NULL);
}

/* Writes the state, closed and closed_by of a. */
static hsm_result write_state(pg_conn *w, const hsm_approval_record *a)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, a->id);
	pg_p_text(&p, hsm_approval_state_name(a->state));
	pg_p_i64(&p, a->closed);
	pg_p_text(&p, a->closed_by);
	return pg_run(w, SQL_APPROVAL_SET_STATE, &p, NULL);
}

/* Writes a's last approver (st_approval_approve appended it), at its position. */
static hsm_result insert_last_vote(pg_conn *w, const hsm_approval_record *a, int64_t now)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, a->id);
	pg_p_text(&p, a->approvers[a->n_approvers - 1]);
	pg_p_i64(&p, a->n_approvers);
	pg_p_i64(&p, now);
	return pg_run(w, SQL_VOTE_INSERT, &p, NULL);
}

/* Runs body in a write transaction: *out receives op->rec on success (when out is not NULL). */
static hsm_result write_op(hsm_store *base, pg_body body, approval_op *op,
                           hsm_approval_record *out)
{
	hsm_result res = pg_write(pg_of(base), body, op);
	if (hsm_ok(res) && out != NULL)
		*out = op->rec;
	else
		hsm_approval_record_clear(&op->rec);
	return res;
}

static hsm_result open_body(pg_conn *w, void *arg)
{
	approval_op *op = arg;
	const hsm_approval_record *a = op->in;
	pg_params p;
	bool found = false;
	/* Openers of one request on every node queue here (see the top of this file). */
	pg_params_init(&p);
	pg_p_text(&p, a->fingerprint);
	HSM_GUARD(pg_run(w, SQL_LOCK_FINGERPRINT, &p, NULL));
	/* The same request opened before and still open: its record, approvals and all. */
	HSM_GUARD(load_open(w, a->fingerprint, a->created, &op->rec, &found));
	if (found)
		return HSM_SUCCESS;
	bool taken = false;
	HSM_GUARD(pg_exists(w, SQL_APPROVAL_EXISTS, a->id, &taken));
	HSM_ENSURE(!taken, HSM_ERR_ALREADY_EXISTS, "approval %s already exists", a->id);
	PGresult *r = NULL;
	int64_t held = 0;
	pg_params_init(&p);
	pg_p_text(&p, a->requester);
	HSM_GUARD(pg_run(w, SQL_LOCK_REQUESTER, &p, NULL));
	pg_p_i64(&p, a->created);
	HSM_GUARD(pg_run(w, SQL_APPROVALS_HELD, &p, &r));
	hsm_result res = pg_col_i64(r, 0, 0, &held);
	PQclear(r);
	HSM_GUARD(res);
	HSM_GUARD(st_approval_fresh(a, held, &op->rec));
	/* The same id opened for another request meanwhile: the primary key says ALREADY_EXISTS. */
	return insert_approval(w, &op->rec);
}

hsm_result pg_approval_open(hsm_store *base, const hsm_approval_record *a,
                            hsm_approval_record *out)
{
	approval_op op = {.in = a};
	return write_op(base, open_body, &op, out);
}

static hsm_result approve_body(pg_conn *w, void *arg)
{
	approval_op *op = arg;
	HSM_GUARD(load_by_id(w, SQL_APPROVAL_LOCK, op->id, &op->rec));
	HSM_GUARD(st_approval_approve(&op->rec, op->who, op->now));
	return insert_last_vote(w, &op->rec, op->now);
}

hsm_result pg_approval_approve(hsm_store *base, const char *id, const char *approver,
                               int64_t now, hsm_approval_record *out)
{
	approval_op op = {.id = id, .who = approver, .now = now};
	return write_op(base, approve_body, &op, out);
}

static hsm_result close_body(pg_conn *w, void *arg)
{
	approval_op *op = arg;
	HSM_GUARD(load_by_id(w, SQL_APPROVAL_LOCK, op->id, &op->rec));
	HSM_GUARD(st_approval_close(&op->rec, op->to, op->who, op->now));
	return write_state(w, &op->rec);
}

hsm_result pg_approval_close(hsm_store *base, const char *id, hsm_approval_state to,
                             const char *by, int64_t now, hsm_approval_record *out)
{
	approval_op op = {.id = id, .to = to, .who = by, .now = now};
	return write_op(base, close_body, &op, out);
}

static hsm_result reopen_body(pg_conn *w, void *arg)
{
	approval_op *op = arg;
	HSM_GUARD(load_by_id(w, SQL_APPROVAL_LOCK, op->id, &op->rec));
	HSM_GUARD(st_approval_reopen(&op->rec));
	return write_state(w, &op->rec);
}

hsm_result pg_approval_reopen(hsm_store *base, const char *id)
{
	approval_op op = {.id = id};
	return write_op(base, reopen_body, &op, NULL);
}

static hsm_result purge_body(pg_conn *w, void *arg)
{
	approval_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	int64_t n = 0;
	pg_params_init(&p);
	pg_p_i64(&p, op->now);
	HSM_GUARD(pg_run(w, SQL_PURGE, &p, &r));
	hsm_result res = hsm_parse_i64(PQcmdTuples(r), 0, INT64_MAX, &n);
	PQclear(r);
	HSM_ENSURE(hsm_ok(res), HSM_ERR_STORE, "PostgreSQL did not count the approvals it purged");
	op->deleted = (uint64_t)n;
	return HSM_SUCCESS;
}

hsm_result pg_approval_purge(hsm_store *base, int64_t before, uint64_t *deleted)
{
	approval_op op = {.now = before};
	HSM_GUARD(pg_write(pg_of(base), purge_body, &op));
	*deleted = op.deleted;
	return HSM_SUCCESS;
}

typedef struct rewrite_op {
	hsm_approval_rewrite_fn fn;
	void *arg;
	uint64_t rewritten;
} rewrite_op;

/* Offers row `row` of page r to fn and writes the replacement it gives, if any. */
static hsm_result rewrite_one(pg_conn *w, const PGresult *r, int row, rewrite_op *op,
                              char after[HSM_APPROVAL_ID_LEN + 1])
{
	char *request = NULL, *replacement = NULL;
	HSM_GUARD(pg_col_text(r, row, 0, after, HSM_APPROVAL_ID_LEN + 1));
	HSM_GUARD(pg_col_strdup(r, row, 1, &request));
	hsm_result res = op->fn(request, &replacement, op->arg);
	if (hsm_ok(res) && replacement != NULL)
		res = st_approval_check_request(replacement);
	if (hsm_ok(res) && replacement != NULL) {
		pg_params p;
		pg_params_init(&p);
		pg_p_text(&p, after);
		pg_p_text(&p, replacement);
		res = pg_run(w, SQL_SET_REQUEST, &p, NULL);
		if (hsm_ok(res))
			op->rewritten++;
	}
	free(replacement);
	free(request);
	return res;
}

static hsm_result rewrite_body(pg_conn *w, void *arg)
{
	rewrite_op *op = arg;
	char after[HSM_APPROVAL_ID_LEN + 1] = "";
	int got;
	op->rewritten = 0; /* a retried transaction starts over */
	do {
		pg_params p;
		PGresult *r = NULL;
		pg_params_init(&p);
		pg_p_text(&p, after);
		pg_p_i64(&p, ST_APPROVAL_REWRITE_PAGE);
		HSM_GUARD(pg_run(w, SQL_REWRITE_PAGE, &p, &r));
		got = PQntuples(r);
		hsm_result res = HSM_SUCCESS;
		for (int row = 0; hsm_ok(res) && row < got; row++)
			res = rewrite_one(w, r, row, op, after);
		PQclear(r);
		HSM_GUARD(res);
	} while (got == ST_APPROVAL_REWRITE_PAGE);
	return HSM_SUCCESS;
}

hsm_result pg_approval_rewrite(hsm_store *base, hsm_approval_rewrite_fn fn, void *arg,
                               uint64_t *rewritten)
{
	/*
	 * The replaced texts stay on disk as dead row versions until VACUUM, and
	 * in the WAL, base backups and replicas (store_pg.h, "Erasure").
	 */
	rewrite_op op = {.fn = fn, .arg = arg};
	HSM_GUARD(pg_write(pg_of(base), rewrite_body, &op));
	*rewritten = op.rewritten;
	return HSM_SUCCESS;
}

/* ---- Reads ------------------------------------------------------------------------------ */

/* Runs body in one REPEATABLE READ transaction: *out receives op->rec on success. */
static hsm_result read_op(hsm_store *base, pg_body body, approval_op *op,
                          hsm_approval_record *out)
{
	hsm_result res = pg_read_snapshot(pg_of(base), body, op);
	if (hsm_ok(res))
		*out = op->rec;
	else
		hsm_approval_record_clear(&op->rec);
	return res;
}

static hsm_result get_body(pg_conn *c, void *arg)
{
	approval_op *op = arg;
	return load_by_id(c, SQL_APPROVAL_GET, op->id, &op->rec);
}

hsm_result pg_approval_get(hsm_store *base, const char *id, hsm_approval_record *out)
{
	approval_op op = {.id = id};
	return read_op(base, get_body, &op, out);
}

static hsm_result find_body(pg_conn *c, void *arg)
{
	approval_op *op = arg;
	bool found = false;
	HSM_GUARD(load_open(c, op->fingerprint, op->now, &op->rec, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "no open approval has fingerprint %s", op->fingerprint);
	return HSM_SUCCESS;
}

hsm_result pg_approval_find(hsm_store *base, const char *fingerprint, int64_t now,
                            hsm_approval_record *out)
{
	approval_op op = {.fingerprint = fingerprint, .now = now};
	return read_op(base, find_body, &op, out);
}

/* Runs sql, a page query of op's kind: at most rows rows, after op's cursor. */
static hsm_result run_page(pg_conn *c, const char *sql, const approval_op *op, size_t rows,
                           PGresult **r)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_i64(&p, (int64_t)rows);
	if (op->open_only)
		pg_p_i64(&p, op->now);
	pg_p_i64(&p, op->after->created);
	pg_p_text(&p, op->after->id);
	return pg_run(c, sql, &p, r);
}

static hsm_result page_votes(pg_conn *c, approval_op *op)
{
	PGresult *r = NULL;
	size_t at = 0;
	HSM_GUARD(run_page(c, op->open_only ? SQL_PAGE_VOTES_OPEN : SQL_PAGE_VOTES_ALL, op,
	                   op->limit, &r));
	hsm_result res = HSM_SUCCESS;
	for (int row = 0; hsm_ok(res) && row < PQntuples(r); row++) {
		char id[HSM_APPROVAL_ID_LEN + 1];
		hsm_approval_record *a = NULL;
		res = pg_col_text(r, row, 0, id, sizeof(id));
		if (hsm_ok(res))
			res = st_approval_page_find(&op->v, &at, id, &a);
		if (hsm_ok(res))
			res = read_vote(r, row, 1, a);
	}
	PQclear(r);
	return res;
}

/* Shortens op's page to the records whose texts fit ST_APPROVAL_PAGE_BYTES (one at least). */
static hsm_result page_fit(pg_conn *c, approval_op *op)
{
	PGresult *r = NULL;
	int64_t bytes = 0;
	HSM_GUARD(run_page(c, op->open_only ? SQL_PAGE_SIZES_OPEN : SQL_PAGE_SIZES_ALL, op,
	                   op->limit, &r));
	hsm_result res = HSM_SUCCESS;
	for (int row = 0; hsm_ok(res) && row < PQntuples(r); row++) {
		int64_t n = 0;
		res = pg_col_i64(r, row, 0, &n);
		bytes += n;
		if (hsm_ok(res) && row > 0 && bytes > ST_APPROVAL_PAGE_BYTES) {
			op->limit = (size_t)row; /* the next page goes on from the last record of this one */
			break;
		}
	}
	PQclear(r);
	return res;
}

static hsm_result list_body(pg_conn *c, void *arg)
{
	approval_op *op = arg;
	PGresult *r = NULL;
	HSM_GUARD(page_fit(c, op));
	/* One more than the page: whether more follow. */
	HSM_GUARD(run_page(c, op->open_only ? SQL_PAGE_OPEN : SQL_PAGE_ALL, op, op->limit + 1, &r));
	hsm_result res = pg_collect(r, op->limit, read_approval, clear_approval, &op->v, &op->more);
	PQclear(r);
	HSM_GUARD(res);
	return page_votes(c, op);
}

hsm_result pg_approval_list(hsm_store *base, bool open_only, int64_t now,
                            const hsm_approval_cursor *after, size_t limit, hsm_approval_cb cb,
                            void *arg, bool *truncated)
{
	approval_op op = {.open_only = open_only, .now = now, .after = after, .limit = limit};
	st_vec_init(&op.v, sizeof(hsm_approval_record));
	hsm_result res = pg_read_snapshot(pg_of(base), list_body, &op);
	for (size_t i = 0; hsm_ok(res) && i < op.v.n; i++)
		res = cb(st_vec_at(&op.v, i), arg);
	st_vec_free(&op.v, clear_approval);
	if (hsm_ok(res))
		*truncated = op.more;
	return res;
}
