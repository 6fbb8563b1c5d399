/*
 * store_sqlite_certs.c - certificates (store.h, PKCS#11 certificate objects)
 * in SQLite.
 *
 * Creation counts the table and inserts in one BEGIN IMMEDIATE transaction,
 * which the store's single write connection serializes, so the count a
 * creator checks against HSM_MAX_CERTIFICATES still holds when it commits.
 */
#include "store/store_sqlite.h"

#define CERT_COLS SQ_CERT_COLS

hsm_result sq_read_cert(sqlite3_stmt *st, void *item)
{
	hsm_cert_record *c = item;
	HSM_GUARD(sq_col_text(st, 0, c->cert_id, sizeof(c->cert_id)));
	HSM_GUARD(sq_col_text(st, 1, c->label, sizeof(c->label)));
	HSM_GUARD(sq_col_blob(st, 2, &c->object_id));
	HSM_GUARD(sq_col_blob(st, 3, &c->der));
	HSM_GUARD(sq_col_text(st, 4, c->creator, sizeof(c->creator)));
	c->created = sqlite3_column_int64(st, 5);
	c->not_after = sqlite3_column_int64(st, 6);
	return HSM_SUCCESS;
}

static void clear_cert(void *item)
{
	hsm_cert_record_clear(item);
}

static const char SQL_CERT_INSERT[] =
	"INSERT INTO certificates (" CERT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
static const char SQL_CERT_EXISTS[] = "SELECT 1 FROM certificates WHERE cert_id = ?1";
/* Counts the entries of an index (SQLite takes the smallest: not_after's). */
static const char SQL_CERT_COUNT[] = "SELECT count(*) FROM certificates";
/* Over not_after's index. */
static const char SQL_CERT_EXPIRING[] = "SELECT count(*) FROM certificates WHERE not_after < ?1";
static const char SQL_CERT_GET[] = "SELECT " CERT_COLS " FROM certificates WHERE cert_id = ?1";
static const char SQL_CERT_DELETE[] = "DELETE FROM certificates WHERE cert_id = ?1";
/*
 * Keyset pagination over cert_id's index, or over (object_id, cert_id)'s and
 * (label, cert_id)'s for a search: ?1 the cursor, ?2 the page's rows, ?3 and
 * ?4 what is matched.
 */
static const char SQL_CERT_PAGE[] = "SELECT " CERT_COLS " FROM certificates "
                                    "WHERE cert_id > ?1 ORDER BY cert_id LIMIT ?2";
static const char SQL_CERT_PAGE_ID[] = "SELECT " CERT_COLS " FROM certificates "
                                       "WHERE object_id = ?3 AND cert_id > ?1 "
                                       "ORDER BY cert_id LIMIT ?2";
static const char SQL_CERT_PAGE_LABEL[] = "SELECT " CERT_COLS " FROM certificates "
                                          "WHERE label = ?4 AND cert_id > ?1 "
                                          "ORDER BY cert_id LIMIT ?2";
static const char SQL_CERT_PAGE_BOTH[] = "SELECT " CERT_COLS " FROM certificates "
                                         "WHERE object_id = ?3 AND label = ?4 AND cert_id > ?1 "
                                         "ORDER BY cert_id LIMIT ?2";

hsm_result sq_insert_cert(sq_conn *w, const hsm_cert_record *c)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_CERT_INSERT, &st));
	sq_bind_text(w, st, 1, c->cert_id);
	sq_bind_text(w, st, 2, c->label);
	sq_bind_blob(w, st, 3, &c->object_id);
	sq_bind_blob(w, st, 4, &c->der);
	sq_bind_text(w, st, 5, c->creator);
	sq_bind_i64(w, st, 6, c->created);
	sq_bind_i64(w, st, 7, c->not_after);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

/* The single count(*) row of SQL_CERT_COUNT (or, before > 0, SQL_CERT_EXPIRING), on connection c. */
static hsm_result count_on(sq_conn *c, int64_t before, int64_t *out)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, before > 0 ? SQL_CERT_EXPIRING : SQL_CERT_COUNT, &st));
	if (before > 0)
		sq_bind_i64(c, st, 1, before);
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && row)
		*out = sqlite3_column_int64(st, 0);
	else if (hsm_ok(res))
		res = HSM_FAIL(HSM_ERR_STORE, "store failed to count certificates");
	sq_reset(st);
	return res;
}

/* ---- Create --------------------------------------------------------------------------- */

static hsm_result cert_create_in(sq_conn *w, const hsm_cert_record *c)
{
	bool taken = false;
	int64_t held = 0;
	/* Checked before the limit: a duplicate is refused as one even in a full store. */
	HSM_GUARD(sq_exists(w, SQL_CERT_EXISTS, c->cert_id, &taken));
	HSM_ENSURE(!taken, HSM_ERR_ALREADY_EXISTS, "certificate %s already exists", c->cert_id);
	HSM_GUARD(count_on(w, 0, &held));
	HSM_GUARD(hsm_store_cert_room(held));
	return sq_insert_cert(w, c);
}

hsm_result sq_cert_create(hsm_store *base, const hsm_cert_record *c)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, cert_create_in(w, c));
}

/* ---- Get, delete, count ------------------------------------------------------------------ */

static hsm_result load_cert(sq_conn *c, const char *cert_id, hsm_cert_record *rec)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, SQL_CERT_GET, &st));
	sq_bind_text(c, st, 1, cert_id);
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && !row)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "certificate %s does not exist", cert_id);
	if (hsm_ok(res))
		res = sq_read_cert(st, rec);
	sq_reset(st);
	return res;
}

hsm_result sq_cert_get(hsm_store *base, const char *cert_id, hsm_cert_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	hsm_cert_record rec = {0};
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = load_cert(c, cert_id, &rec);
	sq_read_end(s, c);
	if (hsm_ok(res))
		*out = rec;
	else
		hsm_cert_record_clear(&rec);
	return res;
}

static hsm_result cert_delete_in(sq_conn *w, const char *cert_id)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_CERT_DELETE, &st));
	sq_bind_text(w, st, 1, cert_id);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	HSM_GUARD(res);
	/* The rows the DELETE just removed: none means there was no such certificate. */
	HSM_ENSURE(sqlite3_changes(w->db) > 0, HSM_ERR_NOT_FOUND, "certificate %s does not exist",
	           cert_id);
	return HSM_SUCCESS;
}

hsm_result sq_cert_delete(hsm_store *base, const char *cert_id)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, cert_delete_in(w, cert_id));
}

static hsm_result count(hsm_store *base, int64_t before, uint64_t *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	int64_t n = 0;
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = count_on(c, before, &n);
	sq_read_end(s, c);
	HSM_GUARD(res);
	HSM_ENSURE(n >= 0, HSM_ERR_STORE, "store returned a negative count");
	*out = (uint64_t)n;
	return HSM_SUCCESS;
}

hsm_result sq_cert_count(hsm_store *base, uint64_t *out)
{
	return count(base, 0, out);
}

hsm_result sq_cert_count_expiring(hsm_store *base, int64_t before, uint64_t *out)
{
	/* Nothing is stored before the epoch's first second. */
	if (before <= 0) {
		*out = 0;
		return HSM_SUCCESS;
	}
	return count(base, before, out);
}

/* ---- List ------------------------------------------------------------------------------- */

static hsm_result read_cert_page(sq_conn *c, const hsm_cert_match *m, const char *after,
                                 size_t limit, st_vec *v, bool *more)
{
	sqlite3_stmt *st;
	const char *sql = m->object_id != NULL ? (m->label != NULL ? SQL_CERT_PAGE_BOTH : SQL_CERT_PAGE_ID)
	                  : m->label != NULL   ? SQL_CERT_PAGE_LABEL
	                                       : SQL_CERT_PAGE;
	HSM_GUARD(sq_prepare(c, sql, &st));
	sq_bind_text(c, st, 1, after);
	sq_bind_i64(c, st, 2, (int64_t)limit + 1); /* one more row tells whether a page follows */
	if (m->object_id != NULL)
		sq_bind_blob(c, st, 3, m->object_id);
	if (m->label != NULL)
		sq_bind_text(c, st, 4, m->label);
	hsm_result res = sq_collect(c, st, limit, sq_read_cert, clear_cert, v, more);
	sq_reset(st);
	return res;
}

hsm_result sq_cert_list(hsm_store *base, const hsm_cert_match *m, const char *after,
                        size_t limit, hsm_cert_cb cb, void *arg, bool *truncated)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	bool more = false;
	st_vec_init(&v, sizeof(hsm_cert_record));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = read_cert_page(c, m, after, limit, &v, &more);
	sq_read_end(s, c);
	for (size_t i = 0; hsm_ok(res) && i < v.n; i++)
		res = cb(st_vec_at(&v, i), arg);
	if (hsm_ok(res))
		*truncated = more;
	st_vec_free(&v, clear_cert);
	return res;
}
