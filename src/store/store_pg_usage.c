/*
 * store_pg_usage.c - each key's last use (store.h, GetKeyLastUsage) in
 * PostgreSQL.  Nodes write their batches in any order; the upsert's WHERE
 * keeps the later use, and the row lock it takes orders two nodes' writes
 * of the same key.
 */
#include "store/store_pg.h"

#include <stdio.h>
#include <string.h>

/*
 * A whole batch in one statement (one round trip, not one per key): the
 * records go as four arrays of the same length, unnest pairs them up again.
 * A batch holds each key once, as ON CONFLICT may change a row only once.
 */
static const char SQL_USAGE_PUT[] =
	"INSERT INTO key_usage (key_id, operation, used_ms, request_id) "
	"SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) "
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

typedef struct usage_arrays {
	hsm_buf ids, ops, times, reqs;
} usage_arrays;

static void arrays_free(usage_arrays *a)
{
	hsm_buf_free(&a->ids);
	hsm_buf_free(&a->ops);
	hsm_buf_free(&a->times);
	hsm_buf_free(&a->reqs);
}

/* The batch as four array literals ({"a","b"}), NUL-terminated. */
static hsm_result build_arrays(size_t n, const hsm_key_usage_record *recs, usage_arrays *a)
{
	hsm_buf *all[] = {&a->ids, &a->ops, &a->times, &a->reqs};
	for (size_t k = 0; k < 4; k++)
		HSM_GUARD(hsm_buf_put_str(all[k], "{"));
	for (size_t i = 0; i < n; i++) {
		char ms[24];
		snprintf(ms, sizeof(ms), "%lld", (long long)recs[i].used_ms);
		HSM_GUARD(pg_array_put_text(&a->ids, recs[i].key_id));
		HSM_GUARD(pg_array_put_text(&a->ops, recs[i].operation));
		HSM_GUARD(pg_array_put_text(&a->times, ms));
		HSM_GUARD(pg_array_put_text(&a->reqs, recs[i].request_id));
	}
	for (size_t k = 0; k < 4; k++) {
		HSM_GUARD(hsm_buf_put_str(all[k], "}"));
		HSM_GUARD(hsm_buf_terminate(all[k]));
	}
	return HSM_SUCCESS;
}

static hsm_result usage_put_body(pg_conn *w, void *arg)
{
	const usage_arrays *a = arg;
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, (const char *)a->ids.data);
	pg_p_text(&p, (const char *)a->ops.data);
	pg_p_text(&p, (const char *)a->times.data);
	pg_p_text(&p, (const char *)a->reqs.data);
	return pg_run(w, SQL_USAGE_PUT, &p, NULL);
}

hsm_result pg_usage_put(hsm_store *base, size_t n, const hsm_key_usage_record *recs)
{
	usage_arrays a;
	memset(&a, 0, sizeof(a));
	hsm_result res = build_arrays(n, recs, &a);
	if (hsm_ok(res))
		res = pg_write(pg_of(base), usage_put_body, &a);
	arrays_free(&a);
	return res;
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
