/*
 * store_sqlite_outbox.c - the audit outbox (store.h) in SQLite: the row a
 * request's write transaction carries (write_finish, store_sqlite.c, calls
 * sq_outbox_insert before COMMIT), and a node's rows listed and deleted.
 */
#include "store/store_sqlite.h"

/* A later intent of the same request updates the row (ST_OUTBOX_MERGE). */
static const char SQL_OUTBOX_INSERT[] =
	"INSERT INTO audit_outbox (node_id, request_id, created_ms, operation, principal, "
	"access_key_id, source, key_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
	ST_OUTBOX_MERGE;
/* Keyset pagination over audit_outbox_order. */
static const char SQL_OUTBOX_PAGE[] =
	"SELECT node_id, request_id, created_ms, operation, principal, access_key_id, source, "
	"key_id FROM audit_outbox WHERE node_id = ?1 AND (created_ms, request_id) > (?2, ?3) "
	"ORDER BY created_ms, request_id LIMIT ?4";
static const char SQL_OUTBOX_DELETE[] =
	"DELETE FROM audit_outbox WHERE node_id = ?1 AND request_id = ?2";

hsm_result sq_outbox_insert(sq_conn *w, hsm_store_intent *in)
{
	st_outbox_row row;
	sqlite3_stmt *st;
	st_outbox_row_of(in, &row);
	HSM_GUARD(sq_prepare(w, SQL_OUTBOX_INSERT, &st));
	sq_bind_text(w, st, 1, row.node_id);
	sq_bind_text(w, st, 2, row.request_id);
	sq_bind_i64(w, st, 3, row.created_ms);
	sq_bind_text(w, st, 4, row.operation);
	sq_bind_text(w, st, 5, row.principal);
	sq_bind_text(w, st, 6, row.access_key_id);
	sq_bind_text(w, st, 7, row.source);
	sq_bind_text(w, st, 8, row.key_id);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

static hsm_result read_row(sqlite3_stmt *st, void *item)
{
	hsm_outbox_record *r = item;
	HSM_GUARD(sq_col_strdup(st, 0, &r->node_id));
	HSM_GUARD(sq_col_strdup(st, 1, &r->request_id));
	r->created_ms = sqlite3_column_int64(st, 2);
	HSM_GUARD(sq_col_strdup(st, 3, &r->operation));
	HSM_GUARD(sq_col_strdup(st, 4, &r->principal));
	HSM_GUARD(sq_col_strdup(st, 5, &r->access_key_id));
	HSM_GUARD(sq_col_strdup(st, 6, &r->source));
	return sq_col_strdup(st, 7, &r->key_id);
}

hsm_result sq_outbox_page(hsm_store *base, const char *node_id, int64_t after_ms,
                          const char *after_id, size_t limit, st_vec *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st = NULL;
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = sq_prepare(c, SQL_OUTBOX_PAGE, &st);
	if (hsm_ok(res)) {
		sq_bind_text(c, st, 1, node_id);
		sq_bind_i64(c, st, 2, after_ms);
		sq_bind_text(c, st, 3, after_id);
		sq_bind_i64(c, st, 4, (int64_t)limit);
		res = sq_collect(c, st, limit, read_row, st_outbox_record_clear, out, NULL);
		sq_reset(st);
	}
	sq_read_end(s, c);
	return res;
}

static hsm_result delete_in(sq_conn *w, const char *node_id, const char *const *request_ids,
                            size_t n)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_OUTBOX_DELETE, &st));
	hsm_result res = HSM_SUCCESS;
	for (size_t i = 0; hsm_ok(res) && i < n; i++) {
		sq_bind_text(w, st, 1, node_id);
		sq_bind_text(w, st, 2, request_ids[i]);
		res = sq_exec(w, st);
		sq_reset(st);
	}
	return res;
}

/* The caller (hsm_store_outbox_delete) holds the thread's intent: this commit carries no row. */
hsm_result sq_outbox_delete(hsm_store *base, const char *node_id, const char *const *request_ids,
                            size_t n)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, delete_in(w, node_id, request_ids, n));
}

/* Node ids by their oldest row (the index audit_outbox_order leads with node_id). */
static const char SQL_OUTBOX_NODES[] =
	"SELECT node_id, min(created_ms), count(*) FROM audit_outbox WHERE node_id > ?1 "
	"GROUP BY node_id HAVING min(created_ms) < ?2 ORDER BY node_id LIMIT ?3";

static hsm_result read_node(sqlite3_stmt *st, void *item)
{
	hsm_outbox_node *n = item;
	HSM_GUARD(sq_col_text(st, 0, n->node_id, sizeof(n->node_id)));
	n->oldest_ms = sqlite3_column_int64(st, 1);
	n->rows = (uint64_t)sqlite3_column_int64(st, 2);
	return HSM_SUCCESS;
}

hsm_result sq_outbox_nodes_page(hsm_store *base, const char *after_node, int64_t before_ms,
                                size_t limit, st_vec *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st = NULL;
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = sq_prepare(c, SQL_OUTBOX_NODES, &st);
	if (hsm_ok(res)) {
		sq_bind_text(c, st, 1, after_node);
		sq_bind_i64(c, st, 2, before_ms);
		sq_bind_i64(c, st, 3, (int64_t)limit);
		res = sq_collect(c, st, limit, read_node, NULL, out, NULL);
		sq_reset(st);
	}
	sq_read_end(s, c);
	return res;
}

/* The caller (hsm_store_outbox_note) has an intent pending: the commit carries its row alone. */
hsm_result sq_outbox_note(hsm_store *base)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, HSM_SUCCESS);
}
