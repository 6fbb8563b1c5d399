/*
 * store_pg_certs.c - certificates (store.h, PKCS#11 certificate objects) in
 * PostgreSQL.
 *
 * Same semantics as store_sqlite_certs.c.  What differs is that creators on
 * other nodes insert at the same moment, and the limit is on the whole
 * table: two transactions that each count HSM_MAX_CERTIFICATES - 1 under
 * READ COMMITTED would both insert.  There is no row to lock for "the
 * table", so cert_create first takes a transaction-level advisory lock on a
 * fixed key, which every creator on every node takes: creators run one after
 * another.  The lock is taken by the transaction's first statement and the
 * count runs in a later one, whose fresh snapshot (READ COMMITTED) sees every
 * creation committed before the lock was granted, as a transaction's locks
 * are released only after its commit is visible.  It goes at COMMIT or
 * ROLLBACK, so a node that dies holding it does not block the others.
 *
 * Deletions take no lock: one that commits between a creator's count and its
 * insert only makes that count too high, never too low.  Imports write
 * records as given (their source kept the limit) under the import's table
 * locks (store_pg_copy.c), which creators wait for.
 */
#include "store/store_pg.h"

#define CERT_COLS PG_CERT_COLS

/*
 * pg_advisory_xact_lock(class, key): the class is "HSMC" as a number; the
 * key is 0, one lock for all creators.  The two-number form is its own key
 * space, apart from the single bigint keys of the schema and leadership
 * locks; approvals use the class "HSMA".
 */
static const char SQL_LOCK_CREATORS[] = "SELECT pg_advisory_xact_lock(1213418819, 0)";
static const char SQL_CERT_INSERT[] =
	"INSERT INTO certificates (" CERT_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7)";
static const char SQL_CERT_EXISTS[] = "SELECT 1 FROM certificates WHERE cert_id = $1";
static const char SQL_CERT_COUNT[] = "SELECT count(*) FROM certificates";
/* Over not_after's index. */
static const char SQL_CERT_EXPIRING[] = "SELECT count(*) FROM certificates WHERE not_after < $1";
static const char SQL_CERT_GET[] = "SELECT " CERT_COLS " FROM certificates WHERE cert_id = $1";
static const char SQL_CERT_DELETE[] = "DELETE FROM certificates WHERE cert_id = $1 RETURNING 1";
/*
 * Keyset pagination over the primary key, or over (object_id, cert_id)'s
 * and (label, cert_id)'s indexes for a search ($3, $4: what is matched).
 */
static const char SQL_CERT_PAGE[] = "SELECT " CERT_COLS " FROM certificates "
                                    "WHERE cert_id > $1 ORDER BY cert_id LIMIT $2";
static const char SQL_CERT_PAGE_ID[] = "SELECT " CERT_COLS " FROM certificates "
                                       "WHERE object_id = $3 AND cert_id > $1 "
                                       "ORDER BY cert_id LIMIT $2";
static const char SQL_CERT_PAGE_LABEL[] = "SELECT " CERT_COLS " FROM certificates "
                                          "WHERE label = $3 AND cert_id > $1 "
                                          "ORDER BY cert_id LIMIT $2";
static const char SQL_CERT_PAGE_BOTH[] = "SELECT " CERT_COLS " FROM certificates "
                                         "WHERE object_id = $3 AND label = $4 AND cert_id > $1 "
                                         "ORDER BY cert_id LIMIT $2";

hsm_result pg_read_cert(const PGresult *r, int row, void *item)
{
	hsm_cert_record *c = item;
	HSM_GUARD(pg_col_text(r, row, 0, c->cert_id, sizeof(c->cert_id)));
	HSM_GUARD(pg_col_text(r, row, 1, c->label, sizeof(c->label)));
	HSM_GUARD(pg_col_bytea(r, row, 2, &c->object_id));
	HSM_GUARD(pg_col_bytea(r, row, 3, &c->der));
	HSM_GUARD(pg_col_text(r, row, 4, c->creator, sizeof(c->creator)));
	HSM_GUARD(pg_col_i64(r, row, 5, &c->created));
	return pg_col_i64(r, row, 6, &c->not_after);
}

static void clear_cert(void *item)
{
	hsm_cert_record_clear(item);
}

hsm_result pg_insert_cert(pg_conn *w, const hsm_cert_record *c)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, c->cert_id);
	pg_p_text(&p, c->label);
	pg_p_bytea(&p, &c->object_id);
	pg_p_bytea(&p, &c->der);
	pg_p_text(&p, c->creator);
	pg_p_i64(&p, c->created);
	pg_p_i64(&p, c->not_after);
	return pg_run(w, SQL_CERT_INSERT, &p, NULL);
}

typedef struct cert_op {
	const hsm_cert_record *in; /* create */
	const char *cert_id;
	hsm_cert_record rec;
	int64_t count;
	int64_t before; /* count: those expiring before it (0: all) */
	/* List. */
	const hsm_cert_match *m;
	const char *after;
	size_t limit;
	st_vec v;
	bool more;
} cert_op;

static hsm_result count_on(pg_conn *c, int64_t *out)
{
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_CERT_COUNT, NULL, &r));
	hsm_result res = pg_col_i64(r, 0, 0, out);
	PQclear(r);
	return res;
}

/* ---- Create --------------------------------------------------------------------------- */

static hsm_result cert_create_body(pg_conn *w, void *arg)
{
	const cert_op *op = arg;
	bool taken = false;
	int64_t held = 0;
	/* First: every statement after it sees what the creators before committed. */
	HSM_GUARD(pg_run(w, SQL_LOCK_CREATORS, NULL, NULL));
	/* Checked before the limit: a duplicate is refused as one even in a full store. */
	HSM_GUARD(pg_exists(w, SQL_CERT_EXISTS, op->in->cert_id, &taken));
	HSM_ENSURE(!taken, HSM_ERR_ALREADY_EXISTS, "certificate %s already exists",
	           op->in->cert_id);
	HSM_GUARD(count_on(w, &held));
	HSM_GUARD(hsm_store_cert_room(held));
	return pg_insert_cert(w, op->in);
}

hsm_result pg_cert_create(hsm_store *base, const hsm_cert_record *c)
{
	cert_op op = {.in = c};
	return pg_write(pg_of(base), cert_create_body, &op);
}

/* ---- Get, delete, count ------------------------------------------------------------------ */

static hsm_result cert_get_body(pg_conn *c, void *arg)
{
	cert_op *op = arg;
	hsm_cert_record_clear(&op->rec); /* a retried attempt starts afresh */
	return pg_get_one(c, SQL_CERT_GET, op->cert_id, "certificate", pg_read_cert, &op->rec);
}

hsm_result pg_cert_get(hsm_store *base, const char *cert_id, hsm_cert_record *out)
{
	cert_op op = {.cert_id = cert_id};
	hsm_result res = pg_read(pg_of(base), cert_get_body, &op);
	if (hsm_ok(res))
		*out = op.rec;
	else
		hsm_cert_record_clear(&op.rec);
	return res;
}

static hsm_result cert_delete_body(pg_conn *w, void *arg)
{
	const cert_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, op->cert_id);
	HSM_GUARD(pg_run(w, SQL_CERT_DELETE, &p, &r));
	bool found = PQntuples(r) > 0;
	PQclear(r);
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "certificate %s does not exist", op->cert_id);
	return HSM_SUCCESS;
}

hsm_result pg_cert_delete(hsm_store *base, const char *cert_id)
{
	cert_op op = {.cert_id = cert_id};
	return pg_write(pg_of(base), cert_delete_body, &op);
}

static hsm_result cert_count_body(pg_conn *c, void *arg)
{
	cert_op *op = arg;
	if (op->before == 0)
		return count_on(c, &op->count);
	pg_params p;
	pg_params_init(&p);
	pg_p_i64(&p, op->before);
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_CERT_EXPIRING, &p, &r));
	hsm_result res = pg_col_i64(r, 0, 0, &op->count);
	PQclear(r);
	return res;
}

static hsm_result count(hsm_store *base, int64_t before, uint64_t *out)
{
	cert_op op = {.before = before};
	HSM_GUARD(pg_read(pg_of(base), cert_count_body, &op));
	HSM_ENSURE(op.count >= 0, HSM_ERR_STORE, "PostgreSQL returned a negative count");
	*out = (uint64_t)op.count;
	return HSM_SUCCESS;
}

hsm_result pg_cert_count(hsm_store *base, uint64_t *out)
{
	return count(base, 0, out);
}

hsm_result pg_cert_count_expiring(hsm_store *base, int64_t before, uint64_t *out)
{
	/* Nothing is stored before the epoch's first second. */
	if (before <= 0) {
		*out = 0;
		return HSM_SUCCESS;
	}
	return count(base, before, out);
}

/* ---- List ------------------------------------------------------------------------------- */

static hsm_result cert_page_body(pg_conn *c, void *arg)
{
	cert_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, op->after);
	pg_p_i64(&p, (int64_t)op->limit + 1); /* one more row tells whether a page follows */
	const hsm_cert_match *m = op->m;
	if (m->object_id != NULL)
		pg_p_bytea(&p, m->object_id);
	if (m->label != NULL)
		pg_p_text(&p, m->label);
	const char *sql = m->object_id != NULL ? (m->label != NULL ? SQL_CERT_PAGE_BOTH : SQL_CERT_PAGE_ID)
	                  : m->label != NULL   ? SQL_CERT_PAGE_LABEL
	                                       : SQL_CERT_PAGE;
	HSM_GUARD(pg_run(c, sql, &p, &r));
	hsm_result res = pg_collect(r, op->limit, pg_read_cert, clear_cert, &op->v, &op->more);
	PQclear(r);
	return res;
}

hsm_result pg_cert_list(hsm_store *base, const hsm_cert_match *m, const char *after,
                        size_t limit, hsm_cert_cb cb, void *arg, bool *truncated)
{
	cert_op op = {.after = after, .limit = limit, .m = m};
	st_vec_init(&op.v, sizeof(hsm_cert_record));
	hsm_result res = pg_read(pg_of(base), cert_page_body, &op);
	for (size_t i = 0; hsm_ok(res) && i < op.v.n; i++)
		res = cb(st_vec_at(&op.v, i), arg);
	if (hsm_ok(res))
		*truncated = op.more;
	st_vec_free(&op.v, clear_cert);
	return res;
}
