/*
 * store_pg_usage.c - each key's last use (store.h, GetKeyLastUsage) in
 * PostgreSQL.  Nodes write their batches in any order; the upsert's WHERE
 * keeps the later use, and the row lock it takes orders two nodes' writes
 * of the same key.
 */
#include "store/store_pg.h"

#include <stdio.h>

static const char SQL_USAGE_PUT[] =
	"INSERT INTO key_usage (key_id, operation, used_ms, request_id) VALUES ($1, $2, $3, $4) "
	"ON CONFLICT (key_id) DO UPDATE SET operation = excluded.operation, "
	"used_ms = excluded.used_ms, request_id = excluded.request_id "
	"WHERE excluded.used_ms >= key_usage.used_ms";
static const char SQL_USAGE_GET[] =
	"SELECT key_id, operation, used_ms, request_id FROM key_usage WHERE key_id = $1";
static const char SQL_USAGE_SINCE[] = "SELECT min(since) FROM usage_tracking";

typedef struct usage_op {
	size_t n;
	const hsm_key_usage_record *recs;
	hsm_key_usage_record rec;
	int64_t since;
} usage_op;

static hsm_result usage_put_body(pg_conn *w, void *arg)
{
	const usage_op *op = arg;
	for (size_t i = 0; i < op->n; i++) {
		pg_params p;
		pg_params_init(&p);
		pg_p_text(&p, op->recs[i].key_id);
		pg_p_text(&p, op->recs[i].operation);
		pg_p_i64(&p, op->recs[i].used_ms);
		pg_p_text(&p, op->recs[i].request_id);
		HSM_GUARD(pg_run(w, SQL_USAGE_PUT, &p, NULL));
	}
	return HSM_SUCCESS;
}

hsm_result pg_usage_put(hsm_store *base, size_t n, const hsm_key_usage_record *recs)
{
	usage_op op = {.n = n, .recs = recs};
	return pg_write(pg_of(base), usage_put_body, &op);
}

static hsm_result read_usage(const PGresult *r, int row, void *item)
{
	hsm_key_usage_record *u = item;
	HSM_GUARD(pg_col_text(r, row, 0, u->key_id, sizeof(u->key_id)));
	HSM_GUARD(pg_col_text(r, row, 1, u->operation, sizeof(u->operation)));
	HSM_GUARD(pg_col_i64(r, row, 2, &u->used_ms));
	return pg_col_text(r, row, 3, u->request_id, sizeof(u->request_id));
}

static hsm_result usage_get_body(pg_conn *c, void *arg)
{
	usage_op *op = arg;
	return pg_get_one(c, SQL_USAGE_GET, op->rec.key_id, "a recorded use of key", read_usage,
	                  &op->rec);
}

hsm_result pg_usage_get(hsm_store *base, const char *key_id, hsm_key_usage_record *out)
{
	usage_op op = {0};
	snprintf(op.rec.key_id, sizeof(op.rec.key_id), "%s", key_id);
	HSM_GUARD(pg_read(pg_of(base), usage_get_body, &op));
	*out = op.rec;
	return HSM_SUCCESS;
}

static hsm_result usage_since_body(pg_conn *c, void *arg)
{
	usage_op *op = arg;
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_USAGE_SINCE, NULL, &r));
	hsm_result res = pg_col_i64(r, 0, 0, &op->since);
	PQclear(r);
	return res;
}

hsm_result pg_usage_since(hsm_store *base, int64_t *out)
{
	usage_op op = {0};
	HSM_GUARD(pg_read(pg_of(base), usage_since_body, &op));
	*out = op.since;
	return HSM_SUCCESS;
}
