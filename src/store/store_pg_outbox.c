/*
 * store_pg_outbox.c - the audit outbox (store.h) in PostgreSQL: the row a
 * request's write transaction carries (transaction, store_pg.c, calls
 * pg_outbox_insert before COMMIT), and a node's rows listed and deleted.
 * Each node lists and deletes only its own rows, so nodes sharing the
 * database never contend for them.
 */
#include "store/store_pg.h"

#include <string.h>

/*
 * A later intent of the same request updates the row (ST_OUTBOX_MERGE).  It
 * answers the transaction's id, which says after a lost COMMIT answer
 * whether this transaction, not an earlier one of the request, committed.
 */
static const char SQL_OUTBOX_INSERT[] =
	"INSERT INTO audit_outbox (node_id, request_id, created_ms, operation, principal, "
	"access_key_id, source, key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
	ST_OUTBOX_MERGE " RETURNING txid_current()";
/* Keyset pagination over audit_outbox_order. */
static const char SQL_OUTBOX_PAGE[] =
	"SELECT node_id, request_id, created_ms, operation, principal, access_key_id, source, "
	"key_id FROM audit_outbox WHERE node_id = $1 AND (created_ms, request_id) > ($2, $3) "
	"ORDER BY created_ms, request_id LIMIT $4";
/* A batch of ids as one array literal: one round trip per OUTBOX_DELETE_BATCH ids. */
static const char SQL_OUTBOX_DELETE[] =
	"DELETE FROM audit_outbox WHERE node_id = $1 AND request_id = ANY ($2::text[])";
#define OUTBOX_DELETE_BATCH 1000

/* in's row, and parameters that begin with its key: $1 node id, $2 request id. */
static void row_params(hsm_store_intent *in, st_outbox_row *row, pg_params *p)
{
	st_outbox_row_of(in, row);
	pg_params_init(p);
	pg_p_text(p, row->node_id);
	pg_p_text(p, row->request_id);
}

hsm_result pg_outbox_insert(pg_conn *w, hsm_store_intent *in, int64_t *xid)
{
	st_outbox_row row;
	pg_params p;
	row_params(in, &row, &p);
	pg_p_i64(&p, row.created_ms);
	pg_p_text(&p, row.operation);
	pg_p_text(&p, row.principal);
	pg_p_text(&p, row.access_key_id);
	pg_p_text(&p, row.source);
	pg_p_text(&p, row.key_id);
	PGresult *r = NULL;
	HSM_GUARD(pg_run(w, SQL_OUTBOX_INSERT, &p, &r));
	hsm_result res = PQntuples(r) == 1 ? pg_col_i64(r, 0, 0, xid) : pg_corrupt("no row");
	PQclear(r);
	return res;
}

typedef struct page_op {
	const char *node_id;
	int64_t after_ms;
	const char *after_id;
	size_t limit;
	st_vec *out;
} page_op;

static hsm_result read_row(const PGresult *r, int row, void *item)
{
	hsm_outbox_record *o = item;
	HSM_GUARD(pg_col_strdup(r, row, 0, &o->node_id));
	HSM_GUARD(pg_col_strdup(r, row, 1, &o->request_id));
	HSM_GUARD(pg_col_i64(r, row, 2, &o->created_ms));
	HSM_GUARD(pg_col_strdup(r, row, 3, &o->operation));
	HSM_GUARD(pg_col_strdup(r, row, 4, &o->principal));
	HSM_GUARD(pg_col_strdup(r, row, 5, &o->access_key_id));
	HSM_GUARD(pg_col_strdup(r, row, 6, &o->source));
	return pg_col_strdup(r, row, 7, &o->key_id);
}

static hsm_result page_body(pg_conn *c, void *arg)
{
	page_op *op = arg;
	PGresult *r = NULL;
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, op->node_id);
	pg_p_i64(&p, op->after_ms);
	pg_p_text(&p, op->after_id);
	pg_p_i64(&p, (int64_t)op->limit);
	HSM_GUARD(pg_run(c, SQL_OUTBOX_PAGE, &p, &r));
	hsm_result res = pg_collect(r, op->limit, read_row, st_outbox_record_clear, op->out, NULL);
	PQclear(r);
	return res;
}

hsm_result pg_outbox_page(hsm_store *base, const char *node_id, int64_t after_ms,
                          const char *after_id, size_t limit, st_vec *out)
{
	page_op op = {node_id, after_ms, after_id, limit, out};
	return pg_read(pg_of(base), page_body, &op);
}

typedef struct delete_op {
	const char *node_id;
	const char *const *ids;
	size_t n;
} delete_op;

static hsm_result delete_batch(pg_conn *w, const char *node_id, const char *const *ids, size_t n,
                               hsm_buf *a)
{
	hsm_buf_clear(a);
	HSM_GUARD(hsm_buf_put_str(a, "{"));
	for (size_t i = 0; i < n; i++)
		HSM_GUARD(pg_array_put_text(a, ids[i]));
	HSM_GUARD(hsm_buf_put_str(a, "}"));
	HSM_GUARD(hsm_buf_terminate(a));
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, node_id);
	pg_p_text(&p, (const char *)a->data);
	return pg_run(w, SQL_OUTBOX_DELETE, &p, NULL);
}

static hsm_result delete_body(pg_conn *w, void *arg)
{
	const delete_op *op = arg;
	hsm_buf a = {0};
	hsm_result res = HSM_SUCCESS;
	for (size_t done = 0; hsm_ok(res) && done < op->n; done += OUTBOX_DELETE_BATCH) {
		size_t n = op->n - done < OUTBOX_DELETE_BATCH ? op->n - done : OUTBOX_DELETE_BATCH;
		res = delete_batch(w, op->node_id, op->ids + done, n, &a);
	}
	hsm_buf_free(&a);
	return res;
}

/* The caller (hsm_store_outbox_delete) holds the thread's intent: this commit carries no row. */
hsm_result pg_outbox_delete(hsm_store *base, const char *node_id, const char *const *request_ids,
                            size_t n)
{
	delete_op op = {node_id, request_ids, n};
	return pg_write(pg_of(base), delete_body, &op);
}

/* Node ids by their oldest row (node_id is COLLATE "C": strcmp's order). */
static const char SQL_OUTBOX_NODES[] =
	"SELECT node_id, min(created_ms), count(*) FROM audit_outbox WHERE node_id > $1 "
	"GROUP BY node_id HAVING min(created_ms) < $2 ORDER BY node_id LIMIT $3";

typedef struct nodes_op {
	const char *after_node;
	int64_t before_ms;
	size_t limit;
	st_vec *out;
} nodes_op;

static hsm_result read_node(const PGresult *r, int row, void *item)
{
	hsm_outbox_node *n = item;
	int64_t rows = 0;
	HSM_GUARD(pg_col_text(r, row, 0, n->node_id, sizeof(n->node_id)));
	HSM_GUARD(pg_col_i64(r, row, 1, &n->oldest_ms));
	HSM_GUARD(pg_col_i64(r, row, 2, &rows));
	n->rows = rows > 0 ? (uint64_t)rows : 0;
	return HSM_SUCCESS;
}

static hsm_result nodes_body(pg_conn *c, void *arg)
{
	nodes_op *op = arg;
	PGresult *r = NULL;
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, op->after_node);
	pg_p_i64(&p, op->before_ms);
	pg_p_i64(&p, (int64_t)op->limit);
	HSM_GUARD(pg_run(c, SQL_OUTBOX_NODES, &p, &r));
	hsm_result res = pg_collect(r, op->limit, read_node, NULL, op->out, NULL);
	PQclear(r);
	return res;
}

hsm_result pg_outbox_nodes_page(hsm_store *base, const char *after_node, int64_t before_ms,
                                size_t limit, st_vec *out)
{
	nodes_op op = {after_node, before_ms, limit, out};
	return pg_read(pg_of(base), nodes_body, &op);
}

static hsm_result note_body(pg_conn *w, void *arg)
{
	(void)w;
	(void)arg;
	return HSM_SUCCESS;
}

/* The caller (hsm_store_outbox_note) has an intent pending: the commit carries its row alone. */
hsm_result pg_outbox_note(hsm_store *base)
{
	return pg_write(pg_of(base), note_body, NULL);
}
