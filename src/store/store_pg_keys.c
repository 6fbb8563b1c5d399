/*
 * store_pg_keys.c - keys and key versions in PostgreSQL.
 *
 * Same semantics as store_sqlite_keys.c; what differs is that other nodes
 * write the same rows, so every read-modify-write locks the key's row first
 * (SELECT ... FOR UPDATE): a second node's key_update waits for the first to
 * commit and then reads what it wrote, so no update is lost.
 */
#include "store/store_pg.h"

#include <stdlib.h>
#include <string.h>

/* ---- Row codecs ------------------------------------------------------------------ */

/* Enumerations are stored by name; a name this build does not know is corruption. */
static hsm_result corrupt_unless(hsm_result r, const char *what)
{
	return hsm_ok(r) ? r : pg_corrupt(what);
}

static hsm_result read_key_enums(const PGresult *r, int row, hsm_key_record *k)
{
	char text[64];
	HSM_GUARD(pg_col_text(r, row, 2, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_spec_parse(text, &k->spec), "unknown key spec"));
	HSM_GUARD(pg_col_text(r, row, 3, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_usage_parse(text, &k->usage), "unknown key usage"));
	HSM_GUARD(pg_col_text(r, row, 4, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_key_origin_parse(text, &k->origin), "unknown key origin"));
	HSM_GUARD(pg_col_text(r, row, 5, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_key_state_parse(text, &k->state), "unknown key state"));
	return HSM_SUCCESS;
}

/* Fills k from a PG_KEY_COLS row; on failure k may hold strings the caller clears. */
hsm_result pg_read_key(const PGresult *r, int row, void *item)
{
	hsm_key_record *k = item;
	HSM_GUARD(pg_col_text(r, row, 0, k->key_id, sizeof(k->key_id)));
	HSM_GUARD(pg_col_strdup(r, row, 1, &k->description));
	HSM_GUARD(read_key_enums(r, row, k));
	HSM_GUARD(pg_col_i64(r, row, 6, &k->created));
	HSM_GUARD(pg_col_i64(r, row, 7, &k->deletion_date));
	HSM_GUARD(pg_col_i32(r, row, 8, &k->pending_window_days));
	HSM_GUARD(pg_col_bool(r, row, 9, &k->rotation_enabled));
	HSM_GUARD(pg_col_i32(r, row, 10, &k->rotation_period_days));
	HSM_GUARD(pg_col_i64(r, row, 11, &k->next_rotation));
	HSM_GUARD(pg_col_u32(r, row, 12, &k->primary_version));
	HSM_GUARD(pg_col_strdup(r, row, 13, &k->policy));
	HSM_GUARD(pg_col_u32(r, row, 14, &k->flags));
	HSM_GUARD(pg_col_i64(r, row, 15, &k->updated));
	HSM_GUARD(pg_col_i64(r, row, 16, &k->valid_to));
	return HSM_SUCCESS;
}

hsm_result pg_read_version(const PGresult *r, int row, void *item)
{
	hsm_version_record *v = item;
	char text[32];
	HSM_GUARD(pg_col_text(r, row, 0, v->key_id, sizeof(v->key_id)));
	HSM_GUARD(pg_col_u32(r, row, 1, &v->version));
	HSM_GUARD(pg_col_i64(r, row, 2, &v->created));
	HSM_GUARD(pg_col_text(r, row, 3, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_rotation_type_parse(text, &v->rotation_type),
	                         "unknown rotation type"));
	HSM_GUARD(pg_col_bytea(r, row, 4, &v->wrapped));
	HSM_GUARD(pg_col_bytea(r, row, 5, &v->public_der));
	HSM_GUARD(pg_col_bytea(r, row, 6, &v->digest));
	HSM_GUARD(pg_col_i64(r, row, 7, &v->valid_to));
	return pg_col_text(r, row, 8, v->description, sizeof(v->description));
}

static void clear_key(void *item)
{
	hsm_key_record_clear(item);
}

static void clear_version(void *item)
{
	hsm_version_record_clear(item);
}

/* Parameters $1..$17 in PG_KEY_COLS order. */
static void bind_key(pg_params *p, const hsm_key_record *k)
{
	pg_p_text(p, k->key_id);
	pg_p_text(p, k->description);
	pg_p_text(p, hsm_spec_name(k->spec));
	pg_p_text(p, hsm_usage_name(k->usage));
	pg_p_text(p, hsm_key_origin_name(k->origin));
	pg_p_text(p, hsm_key_state_name(k->state));
	pg_p_i64(p, k->created);
	pg_p_i64(p, k->deletion_date);
	pg_p_i64(p, k->pending_window_days);
	pg_p_bool(p, k->rotation_enabled);
	pg_p_i64(p, k->rotation_period_days);
	pg_p_i64(p, k->next_rotation);
	pg_p_i64(p, k->primary_version);
	pg_p_text(p, k->policy);
	pg_p_i64(p, k->flags);
	pg_p_i64(p, k->updated);
	pg_p_i64(p, k->valid_to);
}

static const char SQL_KEY_INSERT[] = "INSERT INTO keys (" PG_KEY_COLS ") VALUES "
                                     "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
                                     "$14, $15, $16, $17)";
static const char SQL_KEY_UPDATE[] =
	"UPDATE keys SET description = $2, spec = $3, usage = $4, origin = $5, state = $6, "
	"created = $7, deletion_date = $8, pending_window_days = $9, rotation_enabled = $10, "
	"rotation_period_days = $11, next_rotation = $12, primary_version = $13, policy = $14, "
	"flags = $15, updated = $16, valid_to = $17 WHERE id = $1";
static const char SQL_VERSION_INSERT[] = "INSERT INTO key_versions (" PG_VERSION_COLS
                                         ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

static hsm_result write_key(pg_conn *w, const char *sql, const hsm_key_record *k)
{
	pg_params p;
	pg_params_init(&p);
	bind_key(&p, k);
	return pg_run(w, sql, &p, NULL);
}

hsm_result pg_insert_key(pg_conn *w, const hsm_key_record *k)
{
	return write_key(w, SQL_KEY_INSERT, k);
}

/* Parameters $1..$9 in PG_VERSION_COLS order. */
static void bind_version(pg_params *p, const hsm_version_record *v)
{
	pg_p_text(p, v->key_id);
	pg_p_i64(p, v->version);
	pg_p_i64(p, v->created);
	pg_p_text(p, hsm_rotation_type_name(v->rotation_type));
	pg_p_bytea(p, &v->wrapped);
	pg_p_bytea(p, &v->public_der);
	pg_p_bytea(p, &v->digest);
	pg_p_i64(p, v->valid_to);
	pg_p_text(p, v->description);
}

hsm_result pg_insert_version(pg_conn *w, const hsm_version_record *v)
{
	pg_params p;
	pg_params_init(&p);
	bind_version(&p, v);
	return pg_run(w, SQL_VERSION_INSERT, &p, NULL);
}

/* ---- Shared lookups ------------------------------------------------------------------ */

static const char SQL_KEY_EXISTS[] = "SELECT 1 FROM keys WHERE id = $1";
/* FOR SHARE: the key cannot be updated or destroyed until this transaction ends. */
static const char SQL_KEY_EXISTS_LOCKED[] = "SELECT 1 FROM keys WHERE id = $1 FOR SHARE";

hsm_result pg_key_require(pg_conn *c, const char *key_id)
{
	bool found = false;
	HSM_GUARD(pg_exists(c, SQL_KEY_EXISTS, key_id, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "key %s does not exist", key_id);
	return HSM_SUCCESS;
}

hsm_result pg_key_require_locked(pg_conn *w, const char *key_id)
{
	bool found = false;
	HSM_GUARD(pg_exists(w, SQL_KEY_EXISTS_LOCKED, key_id, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "key %s does not exist", key_id);
	return HSM_SUCCESS;
}

/*
 * A row lock waits for the writer holding the row, then reads the version
 * that writer committed (READ COMMITTED re-reads a locked row), so the state
 * read here is the latest one.
 */
static const char SQL_KEY_STATE_SHARE[] = "SELECT state FROM keys WHERE id = $1 FOR SHARE";
static const char SQL_KEY_STATE_WRITERS[] =
	"SELECT state FROM keys WHERE id = $1 FOR NO KEY UPDATE";

hsm_result pg_key_lock_state(pg_conn *w, const char *key_id, bool one_writer,
                             const hsm_key_state_check *check, hsm_key_state *state)
{
	bool row = false;
	char name[32] = "";
	HSM_GUARD(pg_text_of(w, one_writer ? SQL_KEY_STATE_WRITERS : SQL_KEY_STATE_SHARE, key_id,
	                     name, sizeof(name), &row));
	HSM_ENSURE(row, HSM_ERR_NOT_FOUND, "key %s does not exist", key_id);
	hsm_key_state held;
	return st_ask_key_state(check, key_id, name, state != NULL ? state : &held);
}

static const char SQL_KEY_GET[] = "SELECT " PG_KEY_COLS " FROM keys WHERE id = $1";
static const char SQL_KEY_GET_FOR_UPDATE[] =
	"SELECT " PG_KEY_COLS " FROM keys WHERE id = $1 FOR UPDATE";

static hsm_result load_key(pg_conn *c, const char *sql, const char *key_id, hsm_key_record *rec)
{
	return pg_get_one(c, sql, key_id, "key", pg_read_key, rec);
}

/* ---- Create, get, update, destroy ------------------------------------------------------ */

typedef struct key_op {
	const char *key_id;
	const hsm_key_record *key;
	const hsm_version_record *version;
	hsm_key_update_fn fn;
	void *arg;
	hsm_key_record rec;
	int64_t now;
	uint32_t promote;        /* key_promote: the version made primary */
	bool due_only;           /* key_destroy: only a key pending deletion and due */
	hsm_rotation_type type;  /* key_promote: its rotation type */
	size_t n_tags;           /* key_create: the key's first tags */
	const hsm_tag *tags;
} key_op;

static hsm_result key_create_body(pg_conn *w, void *arg)
{
	key_op *op = arg;
	bool found = false;
	HSM_GUARD(pg_exists(w, SQL_KEY_EXISTS, op->key->key_id, &found));
	HSM_ENSURE(!found, HSM_ERR_ALREADY_EXISTS, "key %s already exists", op->key->key_id);
	/* Another node may insert the same id meanwhile: the primary key then says ALREADY_EXISTS. */
	HSM_GUARD(pg_insert_key(w, op->key));
	HSM_GUARD(pg_insert_version(w, op->version));
	return op->n_tags > 0 ? pg_tags_put_in(w, op->key->key_id, op->n_tags, op->tags)
	                      : HSM_SUCCESS;
}

hsm_result pg_key_create(hsm_store *base, const hsm_key_record *key,
                         const hsm_version_record *first, size_t n_tags, const hsm_tag tags[])
{
	key_op op = {.key = key, .version = first, .n_tags = n_tags, .tags = tags};
	return pg_write(pg_of(base), key_create_body, &op);
}

static hsm_result key_get_body(pg_conn *c, void *arg)
{
	key_op *op = arg;
	hsm_key_record_clear(&op->rec); /* a retried attempt starts afresh */
	return load_key(c, SQL_KEY_GET, op->key_id, &op->rec);
}

hsm_result pg_key_get(hsm_store *base, const char *key_id, hsm_key_record *out)
{
	key_op op = {.key_id = key_id};
	hsm_result res = pg_read(pg_of(base), key_get_body, &op);
	if (hsm_ok(res))
		*out = op.rec;
	else
		hsm_key_record_clear(&op.rec);
	return res;
}

static hsm_result key_update_body(pg_conn *w, void *arg)
{
	key_op *op = arg;
	hsm_key_record *rec = &op->rec;
	const hsm_version_record *add = op->version;
	/* The row stays locked until COMMIT: other nodes' updates of this key wait here. */
	HSM_GUARD(load_key(w, SQL_KEY_GET_FOR_UPDATE, op->key_id, rec));
	if (add != NULL) {
		uint32_t next = rec->primary_version + 1;
		HSM_ENSURE(add->version == next, HSM_ERR_CONFLICT,
		           "key %s: version %u is not the next version (%u)", op->key_id, add->version,
		           next);
	}
	HSM_GUARD(st_edit_key(rec, op->key_id, op->fn, op->arg, add != NULL));
	if (add != NULL) {
		rec->primary_version = add->version;
		HSM_GUARD(pg_insert_version(w, add));
	}
	return write_key(w, SQL_KEY_UPDATE, rec);
}

hsm_result pg_key_update(hsm_store *base, const char *key_id, hsm_key_update_fn fn, void *arg,
                         const hsm_version_record *add_version, hsm_key_record *after)
{
	key_op op = {.key_id = key_id, .fn = fn, .arg = arg, .version = add_version};
	hsm_result res = pg_write(pg_of(base), key_update_body, &op);
	if (hsm_ok(res) && after != NULL)
		*after = op.rec;
	else
		hsm_key_record_clear(&op.rec);
	return res;
}

static const char SQL_KEY_LOCK[] = "SELECT 1 FROM keys WHERE id = $1 FOR UPDATE";
static const char SQL_KEY_MARK_DESTROYED[] =
	"UPDATE keys SET state = 'Destroyed', updated = $2 WHERE id = $1";
static const char SQL_KEY_MARK_DUE_DESTROYED[] =
	"UPDATE keys SET state = 'Destroyed', updated = $2 WHERE id = $1 "
	"AND state = 'PendingDeletion' AND deletion_date <= $2";
/*
 * An empty value, not NULL.  The row's new version holds no material; the old
 * version remains a dead tuple until VACUUM (store_pg.h, "Erasure").
 */
static const char SQL_VERSIONS_ERASE[] =
	"UPDATE key_versions SET wrapped = '\\x'::bytea WHERE key_id = $1 AND wrapped <> '\\x'::bytea";

static hsm_result key_destroy_body(pg_conn *w, void *arg)
{
	key_op *op = arg;
	pg_params p;
	bool found = false;
	HSM_GUARD(pg_exists(w, SQL_KEY_LOCK, op->key_id, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "key %s does not exist", op->key_id);
	pg_params_init(&p);
	pg_p_text(&p, op->key_id);
	pg_p_i64(&p, op->now);
	PGresult *r = NULL;
	HSM_GUARD(pg_run(w, op->due_only ? SQL_KEY_MARK_DUE_DESTROYED : SQL_KEY_MARK_DESTROYED, &p,
	                 &r));
	bool marked = strcmp(PQcmdTuples(r), "1") == 0;
	PQclear(r);
	/* Read under the row lock taken above: a cancellation committed meanwhile shows. */
	HSM_ENSURE(marked, HSM_ERR_INVALID_STATE,
	           "key %s is no longer pending deletion and due (cancelled, or destroyed already)",
	           op->key_id);
	pg_params_init(&p);
	pg_p_text(&p, op->key_id);
	HSM_GUARD(pg_run(w, SQL_VERSIONS_ERASE, &p, NULL));
	HSM_GUARD(pg_alias_delete_for_key_in(w, op->key_id));
	return pg_grant_delete_for_key_in(w, op->key_id);
}

hsm_result pg_key_destroy(hsm_store *base, const char *key_id, int64_t now, bool due_only)
{
	key_op op = {.key_id = key_id, .now = now, .due_only = due_only};
	return pg_write(pg_of(base), key_destroy_body, &op);
}

/*
 * A version in use: all but its identity and history, its digest only while
 * unset.  The replaced row stays a dead tuple until VACUUM, as after
 * key_destroy (store_pg.h, "Erasure").
 */
static const char SQL_VERSION_SET_MATERIAL[] =
	"UPDATE key_versions SET wrapped = $3, public_der = $4, digest = $5, valid_to = $6, "
	"description = $7 WHERE key_id = $1 AND version = $2 AND (length(digest) = 0 OR digest = $5)";
/* A pending version: replaced whole, as it is not yet in use. */
static const char SQL_VERSION_REPLACE[] =
	"UPDATE key_versions SET created = $3, rotation_type = $4, wrapped = $5, public_der = $6, "
	"digest = $7, valid_to = $8, description = $9 WHERE key_id = $1 AND version = $2";
static const char SQL_VERSION_STATE[] =
	"SELECT length(wrapped) > 0, valid_to FROM key_versions WHERE key_id = $1 AND version = $2";
/* What set_material derives from the versions (store.h): earliest expiry, an in-use version without material. */
static const char SQL_MATERIAL_FIELDS[] =
	"SELECT coalesce(min(valid_to) FILTER (WHERE length(wrapped) > 0 AND valid_to <> 0), 0), "
	"coalesce(bool_or(version <= $2 AND length(wrapped) = 0), false) "
	"FROM key_versions WHERE key_id = $1";

/* Whether the key has the version, and whether it holds material. */
static hsm_result version_state(pg_conn *w, const char *key_id, uint32_t version, bool *exists,
                                bool *holds, int64_t *valid_to)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, key_id);
	pg_p_i64(&p, version);
	HSM_GUARD(pg_run(w, SQL_VERSION_STATE, &p, &r));
	hsm_result res = HSM_SUCCESS;
	*exists = PQntuples(r) > 0;
	if (*exists)
		res = pg_col_bool(r, 0, 0, holds);
	if (hsm_ok(res) && *exists)
		res = pg_col_i64(r, 0, 1, valid_to);
	PQclear(r);
	return res;
}

static hsm_result replace_version(pg_conn *w, const hsm_version_record *v)
{
	pg_params p;
	pg_params_init(&p);
	bind_version(&p, v);
	return pg_run(w, SQL_VERSION_REPLACE, &p, NULL);
}

/* An in-use version's material; INCORRECT_KEY_MATERIAL when its digest is set and differs. */
static hsm_result set_in_use(pg_conn *w, const hsm_version_record *m)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, m->key_id);
	pg_p_i64(&p, m->version);
	pg_p_bytea(&p, &m->wrapped);
	pg_p_bytea(&p, &m->public_der);
	pg_p_bytea(&p, &m->digest);
	pg_p_i64(&p, m->valid_to);
	pg_p_text(&p, m->description);
	HSM_GUARD(pg_run(w, SQL_VERSION_SET_MATERIAL, &p, &r));
	bool changed = strcmp(PQcmdTuples(r), "0") != 0;
	PQclear(r);
	/* The version exists (st_material_target): only its digest can stand in the way. */
	HSM_ENSURE(changed, HSM_ERR_INCORRECT_KEY_MATERIAL,
	           "version %u of key %s holds other key material", m->version, m->key_id);
	return HSM_SUCCESS;
}

/* Writes the material where st_material_target says. */
static hsm_result write_material(pg_conn *w, const hsm_key_record *rec,
                                 const hsm_version_record *m, bool *inserted)
{
	bool exists = false, holds = false;
	int64_t valid_to = 0;
	st_material_write target;
	HSM_GUARD(version_state(w, m->key_id, m->version, &exists, &holds, &valid_to));
	HSM_GUARD(st_material_target(rec, m->version, exists, &target));
	hsm_version_record scratch;
	HSM_GUARD(st_material_to_write(m, holds, valid_to, &scratch, &m));
	*inserted = target == ST_MATERIAL_INSERT_PENDING;
	switch (target) {
	case ST_MATERIAL_INSERT_PENDING:
		return pg_insert_version(w, m);
	case ST_MATERIAL_REPLACE_PENDING:
		return replace_version(w, m);
	case ST_MATERIAL_IN_USE:
		break;
	}
	return set_in_use(w, m);
}

/* Sets the key's valid_to and NO_MATERIAL flag from its versions as they now are. */
static hsm_result derive_material_fields(pg_conn *w, hsm_key_record *rec)
{
	pg_params p;
	PGresult *r = NULL;
	int64_t earliest = 0;
	bool missing = false;
	pg_params_init(&p);
	pg_p_text(&p, rec->key_id);
	pg_p_i64(&p, rec->primary_version);
	HSM_GUARD(pg_run(w, SQL_MATERIAL_FIELDS, &p, &r));
	hsm_result res = pg_col_i64(r, 0, 0, &earliest);
	if (hsm_ok(res))
		res = pg_col_bool(r, 0, 1, &missing);
	PQclear(r);
	HSM_GUARD(res);
	st_set_material_fields(rec, earliest, missing);
	return HSM_SUCCESS;
}

/* The material goes first: fn runs only once the version's rules are met. */
static hsm_result key_set_material_body(pg_conn *w, void *arg)
{
	key_op *op = arg;
	hsm_key_record *rec = &op->rec;
	bool inserted = false;
	/* The key's row stays locked until COMMIT, as in key_update_body. */
	HSM_GUARD(load_key(w, SQL_KEY_GET_FOR_UPDATE, op->key_id, rec));
	HSM_GUARD(write_material(w, rec, op->version, &inserted));
	HSM_GUARD(derive_material_fields(w, rec));
	HSM_GUARD(st_edit_key(rec, op->key_id, op->fn, op->arg, inserted));
	return write_key(w, SQL_KEY_UPDATE, rec);
}

hsm_result pg_key_set_material(hsm_store *base, const char *key_id, hsm_key_update_fn fn,
                               void *arg, const hsm_version_record *material,
                               hsm_key_record *after)
{
	key_op op = {.key_id = key_id, .fn = fn, .arg = arg, .version = material};
	hsm_result res = pg_write(pg_of(base), key_set_material_body, &op);
	if (hsm_ok(res) && after != NULL)
		*after = op.rec;
	else
		hsm_key_record_clear(&op.rec);
	return res;
}

static const char SQL_VERSION_PROMOTE[] =
	"UPDATE key_versions SET created = $3, rotation_type = $4 WHERE key_id = $1 AND version = $2";

static hsm_result key_promote_body(pg_conn *w, void *arg)
{
	key_op *op = arg;
	hsm_key_record *rec = &op->rec;
	bool exists = false, holds = false;
	pg_params p;
	/* Locked as in key_update_body: set_material and promote of one key serialize. */
	HSM_GUARD(load_key(w, SQL_KEY_GET_FOR_UPDATE, op->key_id, rec));
	int64_t valid_to = 0;
	HSM_GUARD(version_state(w, op->key_id, op->promote, &exists, &holds, &valid_to));
	HSM_GUARD(st_check_promote(rec, op->promote, exists, holds));
	pg_params_init(&p);
	pg_p_text(&p, op->key_id);
	pg_p_i64(&p, op->promote);
	pg_p_i64(&p, op->now);
	pg_p_text(&p, hsm_rotation_type_name(op->type));
	HSM_GUARD(pg_run(w, SQL_VERSION_PROMOTE, &p, NULL));
	HSM_GUARD(st_edit_key(rec, op->key_id, op->fn, op->arg, true));
	rec->primary_version = op->promote;
	return write_key(w, SQL_KEY_UPDATE, rec);
}

hsm_result pg_key_promote(hsm_store *base, const char *key_id, uint32_t version, int64_t now,
                          hsm_rotation_type type, hsm_key_update_fn fn, void *arg,
                          hsm_key_record *after)
{
	key_op op = {.key_id = key_id, .fn = fn, .arg = arg, .now = now, .promote = version,
	             .type = type};
	hsm_result res = pg_write(pg_of(base), key_promote_body, &op);
	if (hsm_ok(res) && after != NULL)
		*after = op.rec;
	else
		hsm_key_record_clear(&op.rec);
	return res;
}

/* ---- Lists ----------------------------------------------------------------------------- */

static const char SQL_KEY_PAGE_ALL[] =
	"SELECT " PG_KEY_COLS " FROM keys WHERE id > $1 ORDER BY id LIMIT $2";
static const char SQL_KEY_PAGE_LIVE[] = "SELECT " PG_KEY_COLS " FROM keys WHERE id > $1 AND "
                                        "state <> 'Destroyed' ORDER BY id LIMIT $2";
/* The term (flags & 1) = 1 is the keys_jwt index's own predicate, so the planner can use it. */
_Static_assert(HSM_KEYFLAG_JWT == 1, "keys_jwt indexes flag bit 0");
static const char SQL_KEY_PAGE_JWT[] =
	"SELECT " PG_KEY_COLS " FROM keys WHERE (flags & 1) = 1 AND id > $1 AND "
	"state <> 'Destroyed' ORDER BY id LIMIT $2";

typedef struct page_op {
	const char *sql;
	const char *after;
	const char *key_id;
	size_t limit;
	int64_t now;
	st_vec v;
	bool more;
} page_op;

static hsm_result key_page_body(pg_conn *c, void *arg)
{
	page_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_text(&p, op->after);
	pg_p_i64(&p, (int64_t)op->limit + 1); /* one more row tells whether a page follows */
	HSM_GUARD(pg_run(c, op->sql, &p, &r));
	hsm_result res = pg_collect(r, op->limit, pg_read_key, clear_key, &op->v, &op->more);
	PQclear(r);
	return res;
}

static hsm_result emit_keys(const st_vec *v, hsm_key_cb cb, void *arg)
{
	for (size_t i = 0; i < v->n; i++)
		HSM_GUARD(cb(st_vec_at(v, i), arg));
	return HSM_SUCCESS;
}

static hsm_result list_page(hsm_store *base, const char *sql, const char *after, size_t limit,
                            hsm_key_cb cb, void *arg, bool *truncated)
{
	page_op op = {.sql = sql, .after = after, .limit = limit};
	st_vec_init(&op.v, sizeof(hsm_key_record));
	hsm_result res = pg_read(pg_of(base), key_page_body, &op);
	if (hsm_ok(res))
		res = emit_keys(&op.v, cb, arg);
	if (hsm_ok(res))
		*truncated = op.more;
	st_vec_free(&op.v, clear_key);
	return res;
}

hsm_result pg_key_list(hsm_store *base, const char *after, size_t limit, bool include_destroyed,
                       hsm_key_cb cb, void *arg, bool *truncated)
{
	return list_page(base, include_destroyed ? SQL_KEY_PAGE_ALL : SQL_KEY_PAGE_LIVE, after,
	                 limit, cb, arg, truncated);
}

hsm_result pg_jwt_key_list(hsm_store *base, const char *after, size_t limit, hsm_key_cb cb,
                           void *arg, bool *truncated)
{
	return list_page(base, SQL_KEY_PAGE_JWT, after, limit, cb, arg, truncated);
}

static const char SQL_KEY_COUNT[] = "SELECT count(*) FROM keys WHERE state <> 'Destroyed'";

static hsm_result key_count_body(pg_conn *c, void *arg)
{
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_KEY_COUNT, NULL, &r));
	hsm_result res = pg_col_i64(r, 0, 0, arg);
	PQclear(r);
	return res;
}

hsm_result pg_key_count(hsm_store *base, uint64_t *out)
{
	int64_t n = 0;
	HSM_GUARD(pg_read(pg_of(base), key_count_body, &n));
	HSM_ENSURE(n >= 0, HSM_ERR_STORE, "PostgreSQL returned a negative count");
	*out = (uint64_t)n;
	return HSM_SUCCESS;
}

static const char SQL_DUE_DELETIONS[] =
	"SELECT " PG_KEY_COLS " FROM keys WHERE state = 'PendingDeletion' AND deletion_date <= $1 "
	"ORDER BY deletion_date, id LIMIT $2";
/* The term valid_to <> 0 is keys_expiry_due's predicate, so the planner can use it. */
static const char SQL_DUE_EXPIRIES[] =
	"SELECT " PG_KEY_COLS " FROM keys WHERE valid_to <> 0 AND valid_to <= $1 AND "
	"state <> 'Destroyed' AND NOT (state = 'PendingDeletion' AND deletion_date <= $1) "
	"ORDER BY valid_to, id LIMIT $2";
/*
 * Imported keys rotate only to material imported for it (flag 4,
 * HSM_KEYFLAG_PENDING_MATERIAL); those still waiting for it come last, so
 * they cannot hold up rotations that can happen.  A key SQL_DUE_EXPIRIES
 * lists is left out: each key is listed once (its expiry goes first).
 */
_Static_assert(HSM_KEYFLAG_PENDING_MATERIAL == 4, "SQL_DUE_ROTATIONS tests flag bit 2");
static const char SQL_DUE_ROTATIONS[] =
	"SELECT " PG_KEY_COLS " FROM keys WHERE rotation_enabled AND state = 'Enabled' AND "
	"next_rotation <= $1 AND (valid_to = 0 OR valid_to > $1) "
	"ORDER BY origin = 'EXTERNAL' AND (flags & 4) = 0, next_rotation, id LIMIT $2";

static hsm_result read_due(pg_conn *c, const char *sql, page_op *op)
{
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_i64(&p, op->now);
	pg_p_i64(&p, (int64_t)(op->limit - op->v.n));
	HSM_GUARD(pg_run(c, sql, &p, &r));
	hsm_result res = pg_collect(r, op->limit, pg_read_key, clear_key, &op->v, NULL);
	PQclear(r);
	return res;
}

static hsm_result keys_due_body(pg_conn *c, void *arg)
{
	page_op *op = arg;
	/* A retry on a new connection starts afresh: no key listed twice. */
	st_vec_free(&op->v, clear_key);
	st_vec_init(&op->v, sizeof(hsm_key_record));
	HSM_GUARD(read_due(c, SQL_DUE_DELETIONS, op));
	if (op->v.n < op->limit)
		HSM_GUARD(read_due(c, SQL_DUE_EXPIRIES, op));
	if (op->v.n < op->limit)
		HSM_GUARD(read_due(c, SQL_DUE_ROTATIONS, op));
	return HSM_SUCCESS;
}

hsm_result pg_keys_due(hsm_store *base, int64_t now, size_t limit, hsm_key_cb cb, void *arg)
{
	page_op op = {.now = now, .limit = limit};
	st_vec_init(&op.v, sizeof(hsm_key_record));
	hsm_result res = pg_read(pg_of(base), keys_due_body, &op);
	if (hsm_ok(res))
		res = emit_keys(&op.v, cb, arg);
	st_vec_free(&op.v, clear_key);
	return res;
}

/* One text[] parameter: the ids as an array literal, each quoted. */
static const char SQL_KEYS_GET[] = "SELECT " PG_KEY_COLS " FROM keys WHERE id = ANY($1::text[])";

static hsm_result keys_get_body(pg_conn *c, void *arg)
{
	page_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	st_vec_free(&op->v, clear_key); /* a retry starts afresh */
	st_vec_init(&op->v, sizeof(hsm_key_record));
	pg_params_init(&p);
	pg_p_text(&p, op->after);
	HSM_GUARD(pg_run(c, SQL_KEYS_GET, &p, &r));
	hsm_result res = pg_collect(r, op->limit, pg_read_key, clear_key, &op->v, NULL);
	PQclear(r);
	return res;
}

hsm_result pg_keys_get(hsm_store *base, size_t n, const char *const key_ids[], hsm_key_cb cb,
                       void *arg)
{
	hsm_buf literal;
	hsm_buf_init(&literal);
	hsm_result res = hsm_buf_put_str(&literal, "{");
	for (size_t i = 0; i < n && hsm_ok(res); i++) {
		res = hsm_buf_put(&literal, i == 0 ? "\"" : ",\"", i == 0 ? 1 : 2);
		for (const char *ch = key_ids[i]; *ch != '\0' && hsm_ok(res); ch++) {
			if (*ch == '"' || *ch == '\\')
				res = hsm_buf_put(&literal, "\\", 1);
			if (hsm_ok(res))
				res = hsm_buf_put(&literal, ch, 1);
		}
		if (hsm_ok(res))
			res = hsm_buf_put(&literal, "\"", 1);
	}
	if (hsm_ok(res))
		res = hsm_buf_put_str(&literal, "}");
	if (hsm_ok(res))
		res = hsm_buf_terminate(&literal);
	page_op op = {.after = (const char *)literal.data, .limit = n};
	st_vec_init(&op.v, sizeof(hsm_key_record));
	if (hsm_ok(res))
		res = pg_read(pg_of(base), keys_get_body, &op);
	if (hsm_ok(res))
		res = emit_keys(&op.v, cb, arg);
	st_vec_free(&op.v, clear_key);
	hsm_buf_free(&literal);
	return res;
}

/* Each count is a range of an index (keys_rotation_due, keys_expiry_due, keys_deletion_due). */
static const char SQL_DUE_COUNT[] =
	"SELECT (SELECT count(*) FROM keys WHERE rotation_enabled AND state = 'Enabled' AND "
	"next_rotation <= $1), "
	"(SELECT count(*) FROM keys WHERE rotation_enabled AND state = 'Enabled' AND "
	"next_rotation <= $1 AND origin = 'EXTERNAL' AND ((flags & 4) = 0 OR "
	"EXISTS (SELECT 1 FROM key_versions v WHERE v.key_id = keys.id AND "
	"v.version = keys.primary_version + 1 AND v.valid_to <> 0 AND "
	"v.valid_to <= keys.next_rotation))), "
	"(SELECT count(*) FROM keys WHERE rotation_enabled AND state = 'Enabled' AND "
	"next_rotation <= $2), "
	"(SELECT count(*) FROM keys WHERE valid_to <> 0 AND valid_to <= $1 AND "
	"state <> 'Destroyed'), "
	"(SELECT count(*) FROM keys WHERE state = 'PendingDeletion' AND deletion_date <= $2)";

#define DUE_COUNT_COLS 5
typedef struct due_count_op {
	int64_t horizon, overdue_before;
	int64_t n[DUE_COUNT_COLS]; /* the columns of SQL_DUE_COUNT */
} due_count_op;

static hsm_result keys_due_count_body(pg_conn *c, void *arg)
{
	due_count_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	pg_params_init(&p);
	pg_p_i64(&p, op->horizon);
	pg_p_i64(&p, op->overdue_before);
	HSM_GUARD(pg_run(c, SQL_DUE_COUNT, &p, &r));
	hsm_result res = HSM_SUCCESS;
	for (int i = 0; i < DUE_COUNT_COLS && hsm_ok(res); i++) {
		res = pg_col_i64(r, 0, i, &op->n[i]);
		if (hsm_ok(res) && op->n[i] < 0)
			res = HSM_FAIL(HSM_ERR_STORE, "PostgreSQL returned a negative count");
	}
	PQclear(r);
	return res;
}

hsm_result pg_keys_due_count(hsm_store *base, int64_t horizon, int64_t overdue_before,
                             hsm_due_counts *out)
{
	due_count_op op = {.horizon = horizon, .overdue_before = overdue_before};
	HSM_GUARD(pg_read(pg_of(base), keys_due_count_body, &op));
	out->rotations = (uint64_t)op.n[0];
	out->material_needed = (uint64_t)op.n[1];
	out->overdue = (uint64_t)op.n[2];
	out->expirations = (uint64_t)op.n[3];
	out->deletions_overdue = (uint64_t)op.n[4];
	return HSM_SUCCESS;
}

/* ---- Versions ---------------------------------------------------------------------------- */

static const char SQL_VERSION_GET[] =
	"SELECT " PG_VERSION_COLS " FROM key_versions WHERE key_id = $1 AND version = $2";

typedef struct version_op {
	const char *key_id;
	uint32_t version;
	hsm_version_record rec;
	st_vec v;
} version_op;

static hsm_result version_get_body(pg_conn *c, void *arg)
{
	version_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	hsm_version_record_clear(&op->rec);
	pg_params_init(&p);
	pg_p_text(&p, op->key_id);
	pg_p_i64(&p, op->version);
	HSM_GUARD(pg_run(c, SQL_VERSION_GET, &p, &r));
	bool row = PQntuples(r) > 0;
	hsm_result res = row ? pg_read_version(r, 0, &op->rec) : HSM_SUCCESS;
	PQclear(r);
	HSM_GUARD(res);
	if (!row) {
		/* Tell a missing key from a missing version. */
		HSM_GUARD(pg_key_require(c, op->key_id));
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "key %s has no version %u", op->key_id, op->version);
	}
	return HSM_SUCCESS;
}

hsm_result pg_version_get(hsm_store *base, const char *key_id, uint32_t version,
                          hsm_version_record *out)
{
	version_op op = {.key_id = key_id, .version = version};
	hsm_result res = pg_read(pg_of(base), version_get_body, &op);
	if (hsm_ok(res))
		*out = op.rec;
	else
		hsm_version_record_clear(&op.rec);
	return res;
}

static const char SQL_VERSION_LIST[] =
	"SELECT " PG_VERSION_COLS " FROM key_versions WHERE key_id = $1 ORDER BY version";

static hsm_result version_list_body(pg_conn *c, void *arg)
{
	version_op *op = arg;
	pg_params p;
	PGresult *r = NULL;
	HSM_GUARD(pg_key_require(c, op->key_id));
	pg_params_init(&p);
	pg_p_text(&p, op->key_id);
	HSM_GUARD(pg_run(c, SQL_VERSION_LIST, &p, &r));
	hsm_result res = pg_collect(r, SIZE_MAX, pg_read_version, clear_version, &op->v, NULL);
	PQclear(r);
	return res;
}

hsm_result pg_version_list(hsm_store *base, const char *key_id, hsm_version_cb cb, void *arg)
{
	version_op op = {.key_id = key_id};
	st_vec_init(&op.v, sizeof(hsm_version_record));
	hsm_result res = pg_read(pg_of(base), version_list_body, &op);
	for (size_t i = 0; hsm_ok(res) && i < op.v.n; i++)
		res = cb(st_vec_at(&op.v, i), arg);
	st_vec_free(&op.v, clear_version);
	return res;
}
