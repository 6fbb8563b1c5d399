/*
 * store_pg_rekey.c - re-wrapping every secret under a new master key
 * (hsm_store_rekey) in PostgreSQL.
 *
 * One transaction: the tables holding wrapped secrets are locked against
 * writers first (SHARE ROW EXCLUSIVE: readers go on, a writer waits and then
 * times out), so nothing can be wrapped under the old key beside the rekey,
 * and the metadata against readers too (ACCESS EXCLUSIVE).  Then it is
 * refused while another hsmd session is connected to the database: a node
 * that stays up would keep the old master key's wrapping keys and go on
 * using them after the commit.  Nodes are told apart by application_name,
 * which store_pg.c sets to one starting with "hsmd" whatever the URI says,
 * and by the node id and leadership advisory locks they hold; this handle's
 * own sessions are left out by their process ids.  A node that connects
 * after that check reads the metadata (the key check value and share set it
 * unseals against) only once the rekey has committed or rolled back, so it
 * cannot unseal with the old shares and then write under the old key.  Then the
 * metadata naming the old key is checked, the rows are rewritten a page at
 * a time in primary-key order, and the metadata is replaced.
 */
#include "store/store_pg.h"

#include <stdio.h>
#include <string.h>

static const char SQL_LOCK[] = "LOCK TABLE key_versions, access_keys IN SHARE ROW EXCLUSIVE MODE;"
                               "LOCK TABLE meta IN ACCESS EXCLUSIVE MODE";
/*
 * hsmd's sessions in this database but this handle's: named by hsmd (the
 * pool's "hsmd", "hsmd node <id>", "hsmd adopting <id>", whatever the
 * URI says: conn_open), or holding a node id's or the leadership's
 * advisory lock, whatever their name (a session may rename itself).
 */
static const char SQL_OTHER_SESSIONS[] =
	"SELECT count(*) FROM pg_stat_activity a WHERE a.datname = current_database() "
	"AND NOT (a.pid = ANY ($1::int[])) AND (a.application_name LIKE '" PG_APP_NAME "%' "
	"OR EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' "
	"AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
	"AND ((l.classid = " PG_NODE_LOCK_CLASS "::int8::oid AND l.objsubid = 2) "
	"OR (l.classid >= " PG_NODE_LOCK64_CLASSID_MIN "::int8::oid AND l.objsubid = 1) "
	"OR (l.classid = 0 AND l.objid = " PG_LEAD_LOCK "::int8::oid AND l.objsubid = 1))))";
static const char SQL_META_GET[] = "SELECT value FROM meta WHERE name = $1";
static const char SQL_META_SET[] = "INSERT INTO meta (name, value) VALUES ($1, $2) "
                                   "ON CONFLICT (name) DO UPDATE SET value = excluded.value";
static const char SQL_VERSIONS_PAGE[] =
	"SELECT v.key_id, v.version, k.spec, k.usage, v.wrapped "
	"FROM key_versions v JOIN keys k ON k.id = v.key_id "
	"WHERE length(v.wrapped) > 0 AND (v.key_id, v.version) > ($1, $2) "
	"ORDER BY v.key_id, v.version LIMIT $3";
static const char SQL_VERSION_SET[] =
	"UPDATE key_versions SET wrapped = $3 WHERE key_id = $1 AND version = $2";
static const char SQL_ACCESS_KEYS_PAGE[] =
	"SELECT id, wrapped_secret FROM access_keys "
	"WHERE length(wrapped_secret) > 0 AND id > $1 ORDER BY id LIMIT $2";
static const char SQL_ACCESS_KEY_SET[] = "UPDATE access_keys SET wrapped_secret = $2 WHERE id = $1";

typedef struct rekey_op {
	pg_store *s;
	const hsm_store_rekey_req *req;
	hsm_store_rekey_counts counts;
} rekey_op;

/* CONFLICT while another hsmd session (a running node) is connected to the database. */
static hsm_result refuse_other_sessions(pg_store *s, pg_conn *w)
{
	int pids[PG_POOL_MAX + 3]; /* the pool, leadership, node id, w */
	size_t n = pg_own_sessions(s, pids, sizeof(pids) / sizeof(pids[0]) - 1);
	pids[n++] = PQbackendPID(w->db);
	char list[(PG_POOL_MAX + 3) * 12 + 3];
	hsm_sb b;
	hsm_sb_init(&b, list, sizeof(list));
	hsm_sb_add(&b, "{");
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			hsm_sb_add(&b, ",");
		hsm_sb_u64(&b, (uint64_t)(unsigned)pids[i]);
	}
	hsm_sb_add(&b, "}");
	pg_params p;
	PGresult *r = NULL;
	int64_t others = 0;
	pg_params_init(&p);
	pg_p_text(&p, list);
	HSM_GUARD(pg_run(w, SQL_OTHER_SESSIONS, &p, &r));
	hsm_result res = pg_col_i64(r, 0, 0, &others);
	PQclear(r);
	HSM_GUARD(res);
	HSM_ENSURE(others == 0, HSM_ERR_CONFLICT,
	           "%lld other hsmd session%s connected to this database: stop every node "
	           "(and other hsmctl commands) on this store first",
	           (long long)others, others == 1 ? " is" : "s are");
	return HSM_SUCCESS;
}

static hsm_result check_expected(pg_conn *w, const hsm_store_rekey_req *req)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf value = {0};
	for (size_t i = 0; i < req->n_expect && hsm_ok(res); i++) {
		pg_params p;
		PGresult *r = NULL;
		pg_params_init(&p);
		pg_p_text(&p, req->expect_names[i]);
		HSM_TRY(pg_run(w, SQL_META_GET, &p, &r));
		bool found = PQntuples(r) > 0;
		value.len = 0;
		if (found)
			res = pg_col_bytea(r, 0, 0, &value);
		PQclear(r);
		if (hsm_ok(res))
			res = st_rekey_expect(req, i, found, &value);
	}
out:
	hsm_buf_free(&value);
	return res;
}

static hsm_result corrupt_unless(hsm_result r, const char *what)
{
	return hsm_ok(r) ? r : pg_corrupt(what);
}

static hsm_result read_version_row(const PGresult *r, int row, void *item)
{
	st_rekey_row *x = item;
	char text[64];
	HSM_GUARD(pg_col_text(r, row, 0, x->id, sizeof(x->id)));
	HSM_GUARD(pg_col_u32(r, row, 1, &x->version));
	HSM_GUARD(pg_col_text(r, row, 2, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_spec_parse(text, &x->spec), "unknown key spec"));
	HSM_GUARD(pg_col_text(r, row, 3, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_usage_parse(text, &x->usage), "unknown key usage"));
	return pg_col_bytea(r, row, 4, &x->wrapped);
}

static hsm_result read_access_key_row(const PGresult *r, int row, void *item)
{
	st_rekey_row *x = item;
	HSM_GUARD(pg_col_text(r, row, 0, x->id, sizeof(x->id)));
	return pg_col_bytea(r, row, 1, &x->wrapped);
}

/* Reads the next page of kind after *last into page (empty on entry). */
static hsm_result read_page(void *conn, hsm_wrapped_kind kind, const st_rekey_row *last,
                            st_vec *page)
{
	pg_conn *w = conn;
	bool versions = kind == HSM_WRAPPED_KEY_MATERIAL;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, last->id);
	if (versions)
		pg_p_i64(&p, last->version);
	pg_p_i64(&p, ST_REKEY_PAGE);
	HSM_GUARD(pg_run(w, versions ? SQL_VERSIONS_PAGE : SQL_ACCESS_KEYS_PAGE, &p, &r));
	hsm_result res = pg_collect(r, ST_REKEY_PAGE, versions ? read_version_row : read_access_key_row,
	                            st_rekey_row_clear, page, NULL);
	PQclear(r);
	return res;
}

static hsm_result write_row(void *conn, hsm_wrapped_kind kind, const st_rekey_row *row,
                            const hsm_buf *wrapped)
{
	pg_conn *w = conn;
	bool versions = kind == HSM_WRAPPED_KEY_MATERIAL;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, row->id);
	if (versions)
		pg_p_i64(&p, row->version);
	pg_p_bytea(&p, wrapped);
	HSM_GUARD(pg_run(w, versions ? SQL_VERSION_SET : SQL_ACCESS_KEY_SET, &p, &r));
	bool changed = strcmp(PQcmdTuples(r), "1") == 0;
	PQclear(r);
	HSM_ENSURE(changed, HSM_ERR_STORE, "a re-wrapped row vanished");
	return HSM_SUCCESS;
}

static hsm_result rekey_body(pg_conn *w, void *arg)
{
	rekey_op *op = arg;
	const hsm_store_rekey_req *req = op->req;
	op->counts = (hsm_store_rekey_counts){0};
	HSM_GUARD(pg_simple(w, SQL_LOCK, "lock the tables holding wrapped secrets"));
	HSM_GUARD(refuse_other_sessions(op->s, w));
	HSM_GUARD(check_expected(w, req));
	HSM_GUARD(st_rekey_kind(w, req, HSM_WRAPPED_KEY_MATERIAL, read_page, write_row,
	                        &op->counts.versions));
	HSM_GUARD(st_rekey_kind(w, req, HSM_WRAPPED_ACCESS_KEY, read_page, write_row,
	                        &op->counts.access_keys));
	for (size_t i = 0; i < req->n_meta; i++) {
		pg_params p;
		pg_params_init(&p);
		pg_p_text(&p, req->meta_names[i]);
		pg_p_bytea(&p, req->meta_values[i]);
		HSM_GUARD(pg_run(w, SQL_META_SET, &p, NULL));
	}
	return HSM_SUCCESS;
}

hsm_result pg_rekey(hsm_store *base, const hsm_store_rekey_req *req,
                    hsm_store_rekey_counts *counts)
{
	rekey_op op = {.s = pg_of(base), .req = req};
	HSM_GUARD(pg_write(pg_of(base), rekey_body, &op));
	*counts = op.counts;
	return HSM_SUCCESS;
}
