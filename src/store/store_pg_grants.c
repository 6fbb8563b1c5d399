/*
 * store_pg_grants.c - grants in PostgreSQL.
 *
 * Same semantics as store_sqlite_grants.c.  What differs is that other nodes
 * create grants on the same key at the same moment, so grant_create locks the
 * key's row first (FOR NO KEY UPDATE, as tags_put does: it conflicts with
 * itself and with key_update and key_destroy's FOR UPDATE), and the key
 * state it is asked about is the one the locked row holds.  Creators on one
 * key then run one after another, each counting what the previous one
 * committed, so no limit is passed and a retried creation finds the grant its
 * first attempt made.
 */
#include "store/store_pg.h"

#include <string.h>

hsm_result pg_read_grant(const PGresult *r, int row, void *item)
{
	hsm_grant_record *g = item;
	HSM_GUARD(pg_col_text(r, row, 0, g->grant_id, sizeof(g->grant_id)));
	HSM_GUARD(pg_col_text(r, row, 1, g->key_id, sizeof(g->key_id)));
	HSM_GUARD(pg_col_text(r, row, 2, g->name, sizeof(g->name)));
	HSM_GUARD(pg_col_text(r, row, 3, g->grantee, sizeof(g->grantee)));
	HSM_GUARD(pg_col_text(r, row, 4, g->retiring, sizeof(g->retiring)));
	HSM_GUARD(pg_col_u32(r, row, 5, &g->operations));
	HSM_GUARD(pg_col_strdup(r, row, 6, &g->constraints));
	return pg_col_i64(r, row, 7, &g->created);
}

static void clear_grant(void *item)
{
	hsm_grant_record_clear(item);
}

static const char SQL_GRANT_INSERT[] =
	"INSERT INTO grants (" PG_GRANT_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
static const char SQL_GRANT_EXISTS[] = "SELECT 1 FROM grants WHERE grant_id = $1";
static const char SQL_GRANT_LOCK[] =
	"SELECT 1 FROM grants WHERE grant_id = $1 AND key_id = $2 FOR UPDATE";
static const char SQL_GRANT_GET[] =
	"SELECT " PG_GRANT_COLS " FROM grants WHERE grant_id = $1 AND key_id = $2";
static const char SQL_GRANT_DELETE[] = "DELETE FROM grants WHERE grant_id = $1 AND key_id = $2";
static const char SQL_GRANT_DELETE_FOR_KEY[] = "DELETE FROM grants WHERE key_id = $1";
/* The retried-creation lookup walks grants_by_grantee: at most a grantee's few hundred rows. */
static const char SQL_GRANT_SAME[] =
	"SELECT grant_id, created FROM grants WHERE key_id = $1 AND grantee = $2 AND name = $3 "
	"AND retiring = $4 AND operations = $5 AND constraints = $6 ORDER BY grant_id LIMIT 1";
static const char SQL_GRANT_COUNT_KEY[] = "SELECT count(*) FROM grants WHERE key_id = $1";
static const char SQL_GRANT_COUNT_GRANTEE[] =
	"SELECT count(*) FROM grants WHERE key_id = $1 AND grantee = $2";
/* Keyset pagination over grants_by_key, grants_by_grantee and grants_by_retiring. */
static const char SQL_GRANT_PAGE[] = "SELECT " PG_GRANT_COLS " FROM grants "
                                     "WHERE key_id = $1 AND grant_id > $2 "
                                     "ORDER BY grant_id LIMIT $3";
static const char SQL_GRANT_PAGE_GRANTEE[] = "SELECT " PG_GRANT_COLS " FROM grants "
                                             "WHERE key_id = $1 AND grantee = $4 AND "
                                             "grant_id > $2 ORDER BY grant_id LIMIT $3";
static const char SQL_GRANT_PAGE_RETIRING[] = "SELECT " PG_GRANT_COLS " FROM grants "
                                              "WHERE retiring = $1 AND grant_id > $2 "
                                              "ORDER BY grant_id LIMIT $3";

hsm_result pg_insert_grant(pg_conn *w, const hsm_grant_record *g)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, g->grant_id);
	pg_p_text(&p, g->key_id);
	pg_p_text(&p, g->name);
	pg_p_text(&p, g->grantee);
	pg_p_text(&p, g->retiring);
	pg_p_i64(&p, g->operations);
	pg_p_text(&p, g->constraints); /* NULL is "" */
	pg_p_i64(&p, g->created);
	return pg_run(w, SQL_GRANT_INSERT, &p, NULL);
}

hsm_result pg_grant_delete_for_key_in(pg_conn *w, const char *key_id)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, key_id);
	return pg_run(w, SQL_GRANT_DELETE_FOR_KEY, &p, NULL);
}

typedef struct grant_op {
	hsm_grant_record *g; /* create */
	const hsm_key_state_check *check; /* create */
	const char *key_id;
	const char *grant_id;
	bool found; /* create: a retried creation's grant exists */
	char twin_id[HSM_GRANT_ID_LEN + 1];
	int64_t twin_created;
	hsm_grant_record rec;
	/* Lists: sql with $1 = first, $2 = after, $3 = limit + 1, $4 = second (unless NULL). */
	const char *sql;
	const char *first;
	const char *second;
	const char *after;
	size_t limit;
	st_vec v;
	bool more;
} grant_op;

/* ---- Create ------------------------------------------------------------------------- */

/*
 * Locks the key's row and asks the caller's condition of its state;
 * NOT_FOUND for a missing key, INVALID_STATE for a Destroyed one.
 */
static hsm_result lock_live_key(pg_conn *w, const char *key_id, const hsm_key_state_check *check)
{
	hsm_key_state state;
	HSM_GUARD(pg_key_lock_state(w, key_id, true, check, &state));
	HSM_ENSURE(state != HSM_KEY_DESTROYED, HSM_ERR_INVALID_STATE, "key %s is destroyed", key_id);
	return HSM_SUCCESS;
}

/* The grant a retried CreateGrant asked for before, if the key holds it. */
static hsm_result find_twin(pg_conn *w, grant_op *op)
{
	const hsm_grant_record *g = op->g;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, g->key_id);
	pg_p_text(&p, g->grantee);
	pg_p_text(&p, g->name);
	pg_p_text(&p, g->retiring);
	pg_p_i64(&p, g->operations);
	pg_p_text(&p, g->constraints);
	HSM_GUARD(pg_run(w, SQL_GRANT_SAME, &p, &r));
	hsm_result res = HSM_SUCCESS;
	op->found = PQntuples(r) > 0;
	if (op->found)
		res = pg_col_text(r, 0, 0, op->twin_id, sizeof(op->twin_id));
	if (hsm_ok(res) && op->found)
		res = pg_col_i64(r, 0, 1, &op->twin_created);
	PQclear(r);
	return res;
}

/* KMS quotas: grants per key, and per key and grantee principal (store.h). */
static hsm_result check_limits(pg_conn *w, const hsm_grant_record *g)
{
	int64_t for_grantee = 0, for_key = 0;
	HSM_GUARD(pg_count(w, SQL_GRANT_COUNT_GRANTEE, g->key_id, g->grantee, &for_grantee));
	HSM_GUARD(pg_count(w, SQL_GRANT_COUNT_KEY, g->key_id, NULL, &for_key));
	return hsm_store_grant_room(g->key_id, for_grantee, for_key);
}

static hsm_result grant_create_body(pg_conn *w, void *arg)
{
	grant_op *op = arg;
	const hsm_grant_record *g = op->g;
	/* The key row lock serializes grant creators of this key on every node. */
	HSM_GUARD(lock_live_key(w, g->key_id, op->check));
	/* Checked before the limits: a retry at the limit gets the grant it made. */
	if (g->name[0] != '\0') {
		HSM_GUARD(find_twin(w, op));
		if (op->found)
			return HSM_SUCCESS;
	}
	bool taken = false;
	HSM_GUARD(pg_exists(w, SQL_GRANT_EXISTS, g->grant_id, &taken));
	HSM_ENSURE(!taken, HSM_ERR_ALREADY_EXISTS, "grant %s already exists", g->grant_id);
	HSM_GUARD(check_limits(w, g));
	/* The same id created on another key meanwhile: the primary key says ALREADY_EXISTS. */
	return pg_insert_grant(w, g);
}

typedef struct grant_fit {
	const hsm_grant_record *g;
} grant_fit;

static hsm_result grant_fits_body(pg_conn *c, void *arg)
{
	const grant_fit *f = arg;
	return check_limits(c, f->g);
}

hsm_result pg_grant_fits(hsm_store *base, const hsm_grant_record *g)
{
	grant_fit f = {g};
	return pg_read(pg_of(base), grant_fits_body, &f);
}

hsm_result pg_grant_create(hsm_store *base, hsm_grant_record *g, bool *existed,
                           const hsm_key_state_check *check)
{
	grant_op op = {.g = g, .check = check};
	HSM_GUARD(pg_write(pg_of(base), grant_create_body, &op));
	if (op.found) {
		memcpy(g->grant_id, op.twin_id, sizeof(g->grant_id));
		g->created = op.twin_created;
	}
	*existed = op.found;
	return HSM_SUCCESS;
}

/* ---- Get and delete ------------------------------------------------------------------- */

/* $1 = grant_id, $2 = key_id. */
static hsm_result run_for_grant(pg_conn *c, const char *sql, const grant_op *op,
                                PGresult **out)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, op->grant_id);
	pg_p_text(&p, op->key_id);
	return pg_run(c, sql, &p, out);
}

static hsm_result grant_get_body(pg_conn *c, void *arg)
{
	grant_op *op = arg;
	PGresult *r = NULL;
	hsm_grant_record_clear(&op->rec); /* a retried attempt starts afresh */
	HSM_GUARD(run_for_grant(c, SQL_GRANT_GET, op, &r));
	hsm_result res = PQntuples(r) == 0 ? HSM_FAIL(HSM_ERR_NOT_FOUND, "key %s holds no grant %s",
	                                              op->key_id, op->grant_id)
	                                   : pg_read_grant(r, 0, &op->rec);
	PQclear(r);
	return res;
}

hsm_result pg_grant_get(hsm_store *base, const char *key_id, const char *grant_id,
                        hsm_grant_record *out)
{
	grant_op op = {.key_id = key_id, .grant_id = grant_id};
	hsm_result res = pg_read(pg_of(base), grant_get_body, &op);
	if (hsm_ok(res))
		*out = op.rec;
	else
		hsm_grant_record_clear(&op.rec);
	return res;
}

static hsm_result grant_delete_body(pg_conn *w, void *arg)
{
	grant_op *op = arg;
	PGresult *r = NULL;
	HSM_GUARD(run_for_grant(w, SQL_GRANT_LOCK, op, &r));
	bool found = PQntuples(r) > 0;
	PQclear(r);
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "key %s holds no grant %s", op->key_id, op->grant_id);
	return run_for_grant(w, SQL_GRANT_DELETE, op, NULL);
}

hsm_result pg_grant_delete(hsm_store *base, const char *key_id, const char *grant_id)
{
	grant_op op = {.key_id = key_id, .grant_id = grant_id};
	return pg_write(pg_of(base), grant_delete_body, &op);
}

/* ---- Lists ------------------------------------------------------------------------------ */

static hsm_result grant_page_body(pg_conn *c, void *arg)
{
	grant_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	if (op->key_id != NULL)
		HSM_GUARD(pg_key_require(c, op->key_id));
	pg_params_init(&p);
	pg_p_text(&p, op->first);
	pg_p_text(&p, op->after);
	pg_p_i64(&p, (int64_t)op->limit + 1); /* one more row tells whether a page follows */
	if (op->second != NULL)
		pg_p_text(&p, op->second);
	HSM_GUARD(pg_run(c, op->sql, &p, &r));
	hsm_result res = pg_collect(r, op->limit, pg_read_grant, clear_grant, &op->v, &op->more);
	PQclear(r);
	return res;
}

static hsm_result list_grants(hsm_store *base, grant_op *op, hsm_grant_cb cb, void *arg,
                              bool *truncated)
{
	st_vec_init(&op->v, sizeof(hsm_grant_record));
	hsm_result res = pg_read(pg_of(base), grant_page_body, op);
	for (size_t i = 0; hsm_ok(res) && i < op->v.n; i++)
		res = cb(st_vec_at(&op->v, i), arg);
	if (hsm_ok(res))
		*truncated = op->more;
	st_vec_free(&op->v, clear_grant);
	return res;
}

hsm_result pg_grant_list(hsm_store *base, const char *key_id, const char *grantee,
                         const char *after, size_t limit, hsm_grant_cb cb, void *arg,
                         bool *truncated)
{
	grant_op op = {.sql = grantee != NULL ? SQL_GRANT_PAGE_GRANTEE : SQL_GRANT_PAGE,
	               .key_id = key_id,
	               .first = key_id,
	               .second = grantee,
	               .after = after,
	               .limit = limit};
	return list_grants(base, &op, cb, arg, truncated);
}

hsm_result pg_grant_list_retiring(hsm_store *base, const char *retiring, const char *after,
                                  size_t limit, hsm_grant_cb cb, void *arg, bool *truncated)
{
	grant_op op = {.sql = SQL_GRANT_PAGE_RETIRING, .first = retiring, .after = after,
	               .limit = limit};
	return list_grants(base, &op, cb, arg, truncated);
}
