/*
 * store_sqlite_keys.c - keys and key versions in SQLite.
 */
#include "store/store_sqlite.h"

#include <stdlib.h>
#include <string.h>

/* ---- Row codecs ------------------------------------------------------------------ */

/* Column order shared by every key SELECT and by bind_key's parameters ?1..?17 (store_sqlite.h). */
#define KEY_COLS SQ_KEY_COLS
#define VERSION_COLS SQ_VERSION_COLS

static void bind_key(sq_conn *c, sqlite3_stmt *st, const hsm_key_record *k)
{
	sq_bind_text(c, st, 1, k->key_id);
	sq_bind_text(c, st, 2, k->description);
	sq_bind_text(c, st, 3, hsm_spec_name(k->spec));
	sq_bind_text(c, st, 4, hsm_usage_name(k->usage));
	sq_bind_text(c, st, 5, hsm_key_origin_name(k->origin));
	sq_bind_text(c, st, 6, hsm_key_state_name(k->state));
	sq_bind_i64(c, st, 7, k->created);
	sq_bind_i64(c, st, 8, k->deletion_date);
	sq_bind_i64(c, st, 9, k->pending_window_days);
	sq_bind_i64(c, st, 10, k->rotation_enabled ? 1 : 0);
	sq_bind_i64(c, st, 11, k->rotation_period_days);
	sq_bind_i64(c, st, 12, k->next_rotation);
	sq_bind_i64(c, st, 13, k->primary_version);
	sq_bind_text(c, st, 14, k->policy);
	sq_bind_i64(c, st, 15, k->flags);
	sq_bind_i64(c, st, 16, k->updated);
	sq_bind_i64(c, st, 17, k->valid_to);
}

/* Enumerations are stored by name; a name this build does not know is corruption. */
static hsm_result corrupt_unless(hsm_result r, const char *what)
{
	return hsm_ok(r) ? r : sq_corrupt(what);
}

static hsm_result read_key_enums(sqlite3_stmt *st, hsm_key_record *k)
{
	char text[64];
	HSM_GUARD(sq_col_text(st, 2, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_spec_parse(text, &k->spec), "unknown key spec"));
	HSM_GUARD(sq_col_text(st, 3, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_usage_parse(text, &k->usage), "unknown key usage"));
	HSM_GUARD(sq_col_text(st, 4, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_key_origin_parse(text, &k->origin), "unknown key origin"));
	HSM_GUARD(sq_col_text(st, 5, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_key_state_parse(text, &k->state), "unknown key state"));
	return HSM_SUCCESS;
}

/* Fills k from a KEY_COLS row; on failure k may hold strings the caller clears. */
hsm_result sq_read_key(sqlite3_stmt *st, void *item)
{
	hsm_key_record *k = item;
	HSM_GUARD(sq_col_text(st, 0, k->key_id, sizeof(k->key_id)));
	HSM_GUARD(sq_col_strdup(st, 1, &k->description));
	HSM_GUARD(read_key_enums(st, k));
	k->created = sqlite3_column_int64(st, 6);
	k->deletion_date = sqlite3_column_int64(st, 7);
	HSM_GUARD(sq_col_i32(st, 8, &k->pending_window_days));
	HSM_GUARD(sq_col_bool(st, 9, &k->rotation_enabled));
	HSM_GUARD(sq_col_i32(st, 10, &k->rotation_period_days));
	k->next_rotation = sqlite3_column_int64(st, 11);
	HSM_GUARD(sq_col_u32(st, 12, &k->primary_version));
	HSM_GUARD(sq_col_strdup(st, 13, &k->policy));
	HSM_GUARD(sq_col_u32(st, 14, &k->flags));
	k->updated = sqlite3_column_int64(st, 15);
	k->valid_to = sqlite3_column_int64(st, 16);
	return HSM_SUCCESS;
}

hsm_result sq_read_version(sqlite3_stmt *st, void *item)
{
	hsm_version_record *v = item;
	char text[32];
	HSM_GUARD(sq_col_text(st, 0, v->key_id, sizeof(v->key_id)));
	HSM_GUARD(sq_col_u32(st, 1, &v->version));
	v->created = sqlite3_column_int64(st, 2);
	HSM_GUARD(sq_col_text(st, 3, text, sizeof(text)));
	HSM_GUARD(corrupt_unless(hsm_rotation_type_parse(text, &v->rotation_type),
	                         "unknown rotation type"));
	HSM_GUARD(sq_col_blob(st, 4, &v->wrapped));
	HSM_GUARD(sq_col_blob(st, 5, &v->public_der));
	HSM_GUARD(sq_col_blob(st, 6, &v->digest));
	v->valid_to = sqlite3_column_int64(st, 7);
	return sq_col_text(st, 8, v->description, sizeof(v->description));
}

static void clear_key(void *item)
{
	hsm_key_record_clear(item);
}

static void clear_version(void *item)
{
	hsm_version_record_clear(item);
}

static hsm_result emit_keys(const st_vec *v, hsm_key_cb cb, void *arg)
{
	for (size_t i = 0; i < v->n; i++)
		HSM_GUARD(cb(st_vec_at(v, i), arg));
	return HSM_SUCCESS;
}

/* ---- Shared lookups ---------------------------------------------------------------- */

static const char SQL_KEY_EXISTS[] = "SELECT 1 FROM keys WHERE id = ?1";

hsm_result sq_key_exists(sq_conn *c, const char *key_id, bool *found)
{
	return sq_exists(c, SQL_KEY_EXISTS, key_id, found);
}

hsm_result sq_key_require(sq_conn *c, const char *key_id)
{
	bool found = false;
	HSM_GUARD(sq_key_exists(c, key_id, &found));
	HSM_ENSURE(found, HSM_ERR_NOT_FOUND, "key %s does not exist", key_id);
	return HSM_SUCCESS;
}

static const char SQL_KEY_STATE[] = "SELECT state FROM keys WHERE id = ?1";

hsm_result sq_key_state(sq_conn *c, const char *key_id, const hsm_key_state_check *check,
                        hsm_key_state *state)
{
	bool row = false;
	char name[32] = "";
	HSM_GUARD(sq_text_of(c, SQL_KEY_STATE, key_id, name, sizeof(name), &row));
	HSM_ENSURE(row, HSM_ERR_NOT_FOUND, "key %s does not exist", key_id);
	hsm_key_state held;
	return st_ask_key_state(check, key_id, name, state != NULL ? state : &held);
}

static const char SQL_KEY_GET[] = "SELECT " KEY_COLS " FROM keys WHERE id = ?1";

static hsm_result load_key(sq_conn *c, const char *key_id, hsm_key_record *rec)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(c, SQL_KEY_GET, &st));
	sq_bind_text(c, st, 1, key_id);
	bool row = false;
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && !row)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "key %s does not exist", key_id);
	if (hsm_ok(res))
		res = sq_read_key(st, rec);
	sq_reset(st);
	return res;
}

static const char SQL_KEY_INSERT[] = "INSERT INTO keys (" KEY_COLS ") VALUES "
                                     "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
                                     "?14, ?15, ?16, ?17)";
static const char SQL_KEY_UPDATE[] =
	"UPDATE keys SET description = ?2, spec = ?3, usage = ?4, origin = ?5, state = ?6, "
	"created = ?7, deletion_date = ?8, pending_window_days = ?9, rotation_enabled = ?10, "
	"rotation_period_days = ?11, next_rotation = ?12, primary_version = ?13, policy = ?14, "
	"flags = ?15, updated = ?16, valid_to = ?17 WHERE id = ?1";
static const char SQL_VERSION_INSERT[] = "INSERT INTO key_versions (" VERSION_COLS
                                         ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

static hsm_result write_key(sq_conn *w, const char *sql, const hsm_key_record *k)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, sql, &st));
	bind_key(w, st, k);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

/* Parameters ?1..?9 in VERSION_COLS order. */
static void bind_version(sq_conn *c, sqlite3_stmt *st, const hsm_version_record *v)
{
	sq_bind_text(c, st, 1, v->key_id);
	sq_bind_i64(c, st, 2, v->version);
	sq_bind_i64(c, st, 3, v->created);
	sq_bind_text(c, st, 4, hsm_rotation_type_name(v->rotation_type));
	sq_bind_blob(c, st, 5, &v->wrapped);
	sq_bind_blob(c, st, 6, &v->public_der);
	sq_bind_blob(c, st, 7, &v->digest);
	sq_bind_i64(c, st, 8, v->valid_to);
	sq_bind_text(c, st, 9, v->description);
}

/* Runs sql with a version's columns as its parameters. */
static hsm_result write_version(sq_conn *w, const char *sql, const hsm_version_record *v)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, sql, &st));
	bind_version(w, st, v);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

hsm_result sq_insert_version(sq_conn *w, const hsm_version_record *v)
{
	return write_version(w, SQL_VERSION_INSERT, v);
}

hsm_result sq_insert_key(sq_conn *w, const hsm_key_record *k)
{
	return write_key(w, SQL_KEY_INSERT, k);
}

/* ---- Create, get, update, destroy ---------------------------------------------------- */

static hsm_result key_create_in(sq_conn *w, const hsm_key_record *key,
                                const hsm_version_record *first, size_t n_tags,
                                const hsm_tag tags[])
{
	bool found = false;
	HSM_GUARD(sq_key_exists(w, key->key_id, &found));
	HSM_ENSURE(!found, HSM_ERR_ALREADY_EXISTS, "key %s already exists", key->key_id);
	HSM_GUARD(write_key(w, SQL_KEY_INSERT, key));
	HSM_GUARD(sq_insert_version(w, first));
	return n_tags > 0 ? sq_tags_put_in(w, key->key_id, n_tags, tags) : HSM_SUCCESS;
}

hsm_result sq_key_create(hsm_store *base, const hsm_key_record *key,
                         const hsm_version_record *first, size_t n_tags, const hsm_tag tags[])
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	return sq_write_end(s, w, key_create_in(w, key, first, n_tags, tags));
}

hsm_result sq_key_get(hsm_store *base, const char *key_id, hsm_key_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	hsm_key_record rec = {0};
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = load_key(c, key_id, &rec);
	sq_read_end(s, c);
	if (hsm_ok(res))
		*out = rec;
	else
		hsm_key_record_clear(&rec);
	return res;
}

/* One read transaction, one indexed lookup a key: the file is local, a query costs little. */
hsm_result sq_keys_get(hsm_store *base, size_t n, const char *const key_ids[], hsm_key_cb cb,
                       void *arg)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	st_vec_init(&v, sizeof(hsm_key_record));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = HSM_SUCCESS;
	for (size_t i = 0; i < n && hsm_ok(res); i++) {
		hsm_key_record *rec;
		res = st_vec_push(&v, (void **)&rec);
		if (hsm_failed(res))
			break;
		res = load_key(c, key_ids[i], rec);
		if (hsm_failed(res)) {
			hsm_key_record_clear(rec);
			st_vec_pop(&v);
			if (res.err == HSM_ERR_NOT_FOUND)
				res = HSM_SUCCESS;
		}
	}
	sq_read_end(s, c);
	if (hsm_ok(res))
		res = emit_keys(&v, cb, arg);
	st_vec_free(&v, clear_key);
	return res;
}

static hsm_result key_update_in(sq_conn *w, const char *key_id, hsm_key_update_fn fn, void *arg,
                                const hsm_version_record *add_version, hsm_key_record *rec)
{
	HSM_GUARD(load_key(w, key_id, rec));
	if (add_version != NULL) {
		uint32_t next = rec->primary_version + 1;
		HSM_ENSURE(add_version->version == next, HSM_ERR_CONFLICT,
		           "key %s: version %u is not the next version (%u)", key_id,
		           add_version->version, next);
	}
	HSM_GUARD(st_edit_key(rec, key_id, fn, arg, add_version != NULL));
	if (add_version != NULL) {
		rec->primary_version = add_version->version;
		HSM_GUARD(sq_insert_version(w, add_version));
	}
	return write_key(w, SQL_KEY_UPDATE, rec);
}

hsm_result sq_key_update(hsm_store *base, const char *key_id, hsm_key_update_fn fn, void *arg,
                         const hsm_version_record *add_version, hsm_key_record *after)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_key_record rec = {0};
	HSM_GUARD(sq_write_begin(s, &w));
	hsm_result res = key_update_in(w, key_id, fn, arg, add_version, &rec);
	res = sq_write_end(s, w, res);
	if (hsm_ok(res) && after != NULL)
		*after = rec;
	else
		hsm_key_record_clear(&rec);
	return res;
}

static const char SQL_KEY_MARK_DESTROYED[] =
	"UPDATE keys SET state = 'Destroyed', updated = ?2 WHERE id = ?1";
static const char SQL_KEY_MARK_DUE_DESTROYED[] =
	"UPDATE keys SET state = 'Destroyed', updated = ?2 WHERE id = ?1 "
	"AND state = 'PendingDeletion' AND deletion_date <= ?2";
/* An empty blob, not NULL: the column stays NOT NULL and records read back as empty. */
static const char SQL_VERSIONS_ERASE[] = "UPDATE key_versions SET wrapped = x'' WHERE key_id = ?1";

static hsm_result run_for_key(sq_conn *w, const char *sql, const char *key_id, const int64_t *now)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, sql, &st));
	sq_bind_text(w, st, 1, key_id);
	if (now != NULL)
		sq_bind_i64(w, st, 2, *now);
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	return res;
}

static hsm_result key_destroy_in(sq_conn *w, const char *key_id, int64_t now, bool due_only)
{
	HSM_GUARD(sq_key_require(w, key_id));
	HSM_GUARD(run_for_key(w, due_only ? SQL_KEY_MARK_DUE_DESTROYED : SQL_KEY_MARK_DESTROYED,
	                      key_id, &now));
	/* Inside the write transaction: a cancellation committed before it shows. */
	HSM_ENSURE(sqlite3_changes(w->db) == 1, HSM_ERR_INVALID_STATE,
	           "key %s is no longer pending deletion and due (cancelled, or destroyed already)",
	           key_id);
	HSM_GUARD(run_for_key(w, SQL_VERSIONS_ERASE, key_id, NULL));
	HSM_GUARD(sq_alias_delete_for_key_in(w, key_id));
	return sq_grant_delete_for_key_in(w, key_id);
}

hsm_result sq_key_destroy(hsm_store *base, const char *key_id, int64_t now, bool due_only)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	HSM_GUARD(sq_write_begin(s, &w));
	/*
	 * secure_delete zeroes the old bytes inside the database pages; the
	 * truncating checkpoint then writes those pages home and empties the WAL,
	 * whose older frames still held the material.
	 */
	return sq_write_end_scrub(s, w, key_destroy_in(w, key_id, now, due_only));
}

/* A version in use: all but its identity and history; its digest only while unset. */
static const char SQL_VERSION_SET_MATERIAL[] =
	"UPDATE key_versions SET wrapped = ?3, public_der = ?4, digest = ?5, valid_to = ?6, "
	"description = ?7 WHERE key_id = ?1 AND version = ?2 AND (length(digest) = 0 OR digest = ?5)";
/* A pending version: replaced whole, as it is not yet in use. */
static const char SQL_VERSION_REPLACE[] =
	"UPDATE key_versions SET created = ?3, rotation_type = ?4, wrapped = ?5, public_der = ?6, "
	"digest = ?7, valid_to = ?8, description = ?9 WHERE key_id = ?1 AND version = ?2";
static const char SQL_VERSION_STATE[] =
	"SELECT length(wrapped) > 0, valid_to FROM key_versions WHERE key_id = ?1 AND version = ?2";
/* What set_material derives from the versions (store.h): earliest expiry, an in-use version without material. */
static const char SQL_MATERIAL_FIELDS[] =
	"SELECT coalesce(min(CASE WHEN length(wrapped) > 0 AND valid_to <> 0 THEN valid_to END), 0), "
	"coalesce(max(version <= ?2 AND length(wrapped) = 0), 0) "
	"FROM key_versions WHERE key_id = ?1";

/* Whether the key has the version, whether it holds material, and its expiry. */
static hsm_result version_state(sq_conn *w, const char *key_id, uint32_t version, bool *exists,
                                bool *holds, int64_t *valid_to)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_VERSION_STATE, &st));
	sq_bind_text(w, st, 1, key_id);
	sq_bind_i64(w, st, 2, version);
	hsm_result res = sq_step(w, st, exists);
	if (hsm_ok(res) && *exists) {
		*holds = sqlite3_column_int64(st, 0) != 0;
		*valid_to = sqlite3_column_int64(st, 1);
	}
	sq_reset(st);
	return res;
}

/* An in-use version's material; INCORRECT_KEY_MATERIAL when its digest is set and differs. */
static hsm_result set_in_use(sq_conn *w, const hsm_version_record *m)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(w, SQL_VERSION_SET_MATERIAL, &st));
	sq_bind_text(w, st, 1, m->key_id);
	sq_bind_i64(w, st, 2, m->version);
	sq_bind_blob(w, st, 3, &m->wrapped);
	sq_bind_blob(w, st, 4, &m->public_der);
	sq_bind_blob(w, st, 5, &m->digest);
	sq_bind_i64(w, st, 6, m->valid_to);
	sq_bind_text(w, st, 7, m->description);
	hsm_result res = sq_exec(w, st);
	bool changed = sqlite3_changes(w->db) == 1;
	sq_reset(st);
	HSM_GUARD(res);
	/* The version exists (st_material_target): only its digest can stand in the way. */
	HSM_ENSURE(changed, HSM_ERR_INCORRECT_KEY_MATERIAL,
	           "version %u of key %s holds other key material", m->version, m->key_id);
	return HSM_SUCCESS;
}

/*
 * Writes the material where st_material_target says.  *discarded tells
 * whether a pending version's material was replaced (to be overwritten on
 * disk as an erasure is).
 */
static hsm_result write_material(sq_conn *w, const hsm_key_record *rec,
                                 const hsm_version_record *m, bool *inserted, bool *discarded)
{
	bool exists = false, holds = false;
	int64_t valid_to = 0;
	st_material_write target;
	HSM_GUARD(version_state(w, m->key_id, m->version, &exists, &holds, &valid_to));
	HSM_GUARD(st_material_target(rec, m->version, exists, &target));
	hsm_version_record scratch;
	HSM_GUARD(st_material_to_write(m, holds, valid_to, &scratch, &m));
	*inserted = target == ST_MATERIAL_INSERT_PENDING;
	*discarded = target == ST_MATERIAL_REPLACE_PENDING && holds;
	switch (target) {
	case ST_MATERIAL_INSERT_PENDING:
		return sq_insert_version(w, m);
	case ST_MATERIAL_REPLACE_PENDING:
		return write_version(w, SQL_VERSION_REPLACE, m);
	case ST_MATERIAL_IN_USE:
		break;
	}
	return set_in_use(w, m);
}

/* Sets the key's valid_to and NO_MATERIAL flag from its versions as they now are. */
static hsm_result derive_material_fields(sq_conn *w, hsm_key_record *rec)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(w, SQL_MATERIAL_FIELDS, &st));
	sq_bind_text(w, st, 1, rec->key_id);
	sq_bind_i64(w, st, 2, rec->primary_version);
	hsm_result res = sq_step(w, st, &row);
	if (hsm_ok(res) && !row)
		res = HSM_FAIL(HSM_ERR_STORE, "store failed to read key %s's versions", rec->key_id);
	if (hsm_ok(res))
		st_set_material_fields(rec, sqlite3_column_int64(st, 0),
		                       sqlite3_column_int64(st, 1) != 0);
	sq_reset(st);
	return res;
}

/* The material goes first: fn runs only once the version's rules are met. */
static hsm_result key_set_material_in(sq_conn *w, const char *key_id, hsm_key_update_fn fn,
                                      void *arg, const hsm_version_record *material,
                                      hsm_key_record *rec, bool *discarded)
{
	bool inserted = false;
	HSM_GUARD(load_key(w, key_id, rec));
	HSM_GUARD(write_material(w, rec, material, &inserted, discarded));
	HSM_GUARD(derive_material_fields(w, rec));
	HSM_GUARD(st_edit_key(rec, key_id, fn, arg, inserted));
	return write_key(w, SQL_KEY_UPDATE, rec);
}

hsm_result sq_key_set_material(hsm_store *base, const char *key_id, hsm_key_update_fn fn,
                               void *arg, const hsm_version_record *material,
                               hsm_key_record *after)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_key_record rec = {0};
	bool discarded = false;
	HSM_GUARD(sq_write_begin(s, &w));
	hsm_result res = key_set_material_in(w, key_id, fn, arg, material, &rec, &discarded);
	/* An erasure, or pending material replaced, is overwritten on disk as in sq_key_destroy. */
	if (material->wrapped.len == 0 || discarded)
		res = sq_write_end_scrub(s, w, res);
	else
		res = sq_write_end(s, w, res);
	if (hsm_ok(res) && after != NULL)
		*after = rec;
	else
		hsm_key_record_clear(&rec);
	return res;
}

typedef struct promote_op {
	const char *key_id;
	uint32_t version;
	int64_t now;
	hsm_rotation_type type;
	hsm_key_update_fn fn;
	void *arg;
} promote_op;

static const char SQL_VERSION_PROMOTE[] =
	"UPDATE key_versions SET created = ?3, rotation_type = ?4 WHERE key_id = ?1 AND version = ?2";

static hsm_result key_promote_in(sq_conn *w, const promote_op *op, hsm_key_record *rec)
{
	bool exists = false, holds = false;
	sqlite3_stmt *st;
	HSM_GUARD(load_key(w, op->key_id, rec));
	int64_t valid_to = 0;
	HSM_GUARD(version_state(w, op->key_id, op->version, &exists, &holds, &valid_to));
	HSM_GUARD(st_check_promote(rec, op->version, exists, holds));
	HSM_GUARD(sq_prepare(w, SQL_VERSION_PROMOTE, &st));
	sq_bind_text(w, st, 1, op->key_id);
	sq_bind_i64(w, st, 2, op->version);
	sq_bind_i64(w, st, 3, op->now);
	sq_bind_text(w, st, 4, hsm_rotation_type_name(op->type));
	hsm_result res = sq_exec(w, st);
	sq_reset(st);
	HSM_GUARD(res);
	HSM_GUARD(st_edit_key(rec, op->key_id, op->fn, op->arg, true));
	rec->primary_version = op->version;
	return write_key(w, SQL_KEY_UPDATE, rec);
}

hsm_result sq_key_promote(hsm_store *base, const char *key_id, uint32_t version, int64_t now,
                          hsm_rotation_type type, hsm_key_update_fn fn, void *arg,
                          hsm_key_record *after)
{
	sq_store *s = sq_of(base);
	sq_conn *w;
	hsm_key_record rec = {0};
	const promote_op op = {key_id, version, now, type, fn, arg};
	HSM_GUARD(sq_write_begin(s, &w));
	hsm_result res = sq_write_end(s, w, key_promote_in(w, &op, &rec));
	if (hsm_ok(res) && after != NULL)
		*after = rec;
	else
		hsm_key_record_clear(&rec);
	return res;
}

/* ---- Lists ----------------------------------------------------------------------------- */

/* Keyset pagination: the primary key index gives both the start and the order. */
static const char SQL_KEY_PAGE_ALL[] =
	"SELECT " KEY_COLS " FROM keys WHERE id > ?1 ORDER BY id LIMIT ?2";
static const char SQL_KEY_PAGE_LIVE[] = "SELECT " KEY_COLS " FROM keys WHERE id > ?1 AND "
                                        "state != 'Destroyed' ORDER BY id LIMIT ?2";

static hsm_result read_page(sq_conn *c, const char *sql, const char *after, size_t limit,
                            st_vec *v, bool *more)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(c, sql, &st));
	sq_bind_text(c, st, 1, after);
	sq_bind_i64(c, st, 2, (int64_t)limit + 1); /* one more row tells whether a page follows */
	hsm_result res = sq_collect(c, st, limit, sq_read_key, clear_key, v, more);
	sq_reset(st);
	return res;
}

/* The term (flags & 1) = 1 is the keys_jwt index's own condition, so the planner walks it. */
_Static_assert(HSM_KEYFLAG_JWT == 1, "keys_jwt indexes flag bit 0");
static const char SQL_KEY_PAGE_JWT[] =
	"SELECT " KEY_COLS " FROM keys WHERE (flags & 1) = 1 AND id > ?1 AND "
	"state != 'Destroyed' ORDER BY id LIMIT ?2";

static hsm_result list_page(hsm_store *base, const char *sql, const char *after, size_t limit,
                            hsm_key_cb cb, void *arg, bool *truncated)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	bool more = false;
	st_vec_init(&v, sizeof(hsm_key_record));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = read_page(c, sql, after, limit, &v, &more);
	sq_read_end(s, c);
	if (hsm_ok(res))
		res = emit_keys(&v, cb, arg);
	if (hsm_ok(res))
		*truncated = more;
	st_vec_free(&v, clear_key);
	return res;
}

hsm_result sq_key_list(hsm_store *base, const char *after, size_t limit, bool include_destroyed,
                       hsm_key_cb cb, void *arg, bool *truncated)
{
	return list_page(base, include_destroyed ? SQL_KEY_PAGE_ALL : SQL_KEY_PAGE_LIVE, after,
	                 limit, cb, arg, truncated);
}

hsm_result sq_jwt_key_list(hsm_store *base, const char *after, size_t limit, hsm_key_cb cb,
                           void *arg, bool *truncated)
{
	return list_page(base, SQL_KEY_PAGE_JWT, after, limit, cb, arg, truncated);
}

/* count(*) of the whole table walks the smallest index; the Destroyed count is a range. */
static const char SQL_KEY_COUNT[] =
	"SELECT (SELECT count(*) FROM keys) - "
	"(SELECT count(*) FROM keys WHERE state = 'Destroyed')";

hsm_result sq_key_count(hsm_store *base, uint64_t *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st = NULL;
	bool row = false;
	hsm_result res = HSM_SUCCESS;
	HSM_GUARD(sq_read_begin(s, &c));
	HSM_TRY(sq_prepare(c, SQL_KEY_COUNT, &st));
	HSM_TRY(sq_step(c, st, &row));
	HSM_CHECK(row, HSM_ERR_STORE, "store failed to count keys");
	*out = (uint64_t)sqlite3_column_int64(st, 0);
out:
	sq_reset(st);
	sq_read_end(s, c);
	return res;
}

/*
 * Each branch walks its own index in due order (keys_deletion_due,
 * keys_expiry_due, keys_rotation_due).  The term valid_to <> 0 is
 * keys_expiry_due's own condition, so the planner may use that partial index.
 */
static const char SQL_DUE_DELETIONS[] =
	"SELECT " KEY_COLS " FROM keys WHERE state = 'PendingDeletion' AND deletion_date <= ?1 "
	"ORDER BY deletion_date LIMIT ?2";
static const char SQL_DUE_EXPIRIES[] =
	"SELECT " KEY_COLS " FROM keys WHERE valid_to <> 0 AND valid_to <= ?1 AND "
	"state != 'Destroyed' AND NOT (state = 'PendingDeletion' AND deletion_date <= ?1) "
	"ORDER BY valid_to LIMIT ?2";
/*
 * Imported keys rotate only to material imported for it (flag 4,
 * HSM_KEYFLAG_PENDING_MATERIAL); those still waiting for it come last, so
 * they cannot hold up rotations that can happen.  A key SQL_DUE_EXPIRIES
 * lists is left out: each key is listed once (its expiry goes first).
 */
_Static_assert(HSM_KEYFLAG_PENDING_MATERIAL == 4, "SQL_DUE_ROTATIONS tests flag bit 2");
static const char SQL_DUE_ROTATIONS[] =
	"SELECT " KEY_COLS " FROM keys WHERE rotation_enabled = 1 AND state = 'Enabled' AND "
	"next_rotation <= ?1 AND (valid_to = 0 OR valid_to > ?1) "
	"ORDER BY origin = 'EXTERNAL' AND (flags & 4) = 0, next_rotation LIMIT ?2";

static hsm_result read_due(sq_conn *c, const char *sql, int64_t now, size_t limit, st_vec *v)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(c, sql, &st));
	sq_bind_i64(c, st, 1, now);
	sq_bind_i64(c, st, 2, (int64_t)(limit - v->n));
	hsm_result res = sq_collect(c, st, limit, sq_read_key, clear_key, v, NULL);
	sq_reset(st);
	return res;
}

hsm_result sq_keys_due(hsm_store *base, int64_t now, size_t limit, hsm_key_cb cb, void *arg)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	st_vec_init(&v, sizeof(hsm_key_record));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = read_due(c, SQL_DUE_DELETIONS, now, limit, &v);
	if (hsm_ok(res) && v.n < limit)
		res = read_due(c, SQL_DUE_EXPIRIES, now, limit, &v);
	if (hsm_ok(res) && v.n < limit)
		res = read_due(c, SQL_DUE_ROTATIONS, now, limit, &v);
	sq_read_end(s, c);
	if (hsm_ok(res))
		res = emit_keys(&v, cb, arg);
	st_vec_free(&v, clear_key);
	return res;
}

/* Each count is a range of an index (keys_rotation_due, keys_expiry_due, keys_deletion_due). */
static const char SQL_DUE_COUNT[] =
	"SELECT (SELECT count(*) FROM keys WHERE rotation_enabled = 1 AND state = 'Enabled' AND "
	"next_rotation <= ?1), "
	"(SELECT count(*) FROM keys WHERE rotation_enabled = 1 AND state = 'Enabled' AND "
	"next_rotation <= ?1 AND origin = 'EXTERNAL' AND ((flags & 4) = 0 OR "
	"EXISTS (SELECT 1 FROM key_versions v WHERE v.key_id = keys.id AND "
	"v.version = keys.primary_version + 1 AND v.valid_to <> 0 AND "
	"v.valid_to <= keys.next_rotation))), "
	"(SELECT count(*) FROM keys WHERE rotation_enabled = 1 AND state = 'Enabled' AND "
	"next_rotation <= ?2), "
	"(SELECT count(*) FROM keys WHERE valid_to <> 0 AND valid_to <= ?1 AND "
	"state != 'Destroyed'), "
	"(SELECT count(*) FROM keys WHERE state = 'PendingDeletion' AND deletion_date <= ?2)";

hsm_result sq_keys_due_count(hsm_store *base, int64_t horizon, int64_t overdue_before,
                             hsm_due_counts *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	sqlite3_stmt *st = NULL;
	bool row = false;
	hsm_result res = HSM_SUCCESS;
	HSM_GUARD(sq_read_begin(s, &c));
	HSM_TRY(sq_prepare(c, SQL_DUE_COUNT, &st));
	sq_bind_i64(c, st, 1, horizon);
	sq_bind_i64(c, st, 2, overdue_before);
	HSM_TRY(sq_step(c, st, &row));
	HSM_CHECK(row, HSM_ERR_STORE, "store failed to count keys with work due");
	out->rotations = (uint64_t)sqlite3_column_int64(st, 0);
	out->material_needed = (uint64_t)sqlite3_column_int64(st, 1);
	out->overdue = (uint64_t)sqlite3_column_int64(st, 2);
	out->expirations = (uint64_t)sqlite3_column_int64(st, 3);
	out->deletions_overdue = (uint64_t)sqlite3_column_int64(st, 4);
out:
	sq_reset(st);
	sq_read_end(s, c);
	return res;
}

/* ---- Versions ---------------------------------------------------------------------------- */

static const char SQL_VERSION_GET[] =
	"SELECT " VERSION_COLS " FROM key_versions WHERE key_id = ?1 AND version = ?2";

static hsm_result load_version(sq_conn *c, const char *key_id, uint32_t version,
                               hsm_version_record *rec)
{
	sqlite3_stmt *st;
	bool row = false;
	HSM_GUARD(sq_prepare(c, SQL_VERSION_GET, &st));
	sq_bind_text(c, st, 1, key_id);
	sq_bind_i64(c, st, 2, version);
	hsm_result res = sq_step(c, st, &row);
	if (hsm_ok(res) && row)
		res = sq_read_version(st, rec);
	sq_reset(st);
	if (hsm_ok(res) && !row) {
		/* Tell a missing key from a missing version. */
		res = sq_key_require(c, key_id);
		if (hsm_ok(res))
			res = HSM_FAIL(HSM_ERR_NOT_FOUND, "key %s has no version %u", key_id, version);
	}
	return res;
}

hsm_result sq_version_get(hsm_store *base, const char *key_id, uint32_t version,
                          hsm_version_record *out)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	hsm_version_record rec = {0};
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = load_version(c, key_id, version, &rec);
	sq_read_end(s, c);
	if (hsm_ok(res))
		*out = rec;
	else
		hsm_version_record_clear(&rec);
	return res;
}

static const char SQL_VERSION_LIST[] =
	"SELECT " VERSION_COLS " FROM key_versions WHERE key_id = ?1 ORDER BY version";

static hsm_result read_versions(sq_conn *c, const char *key_id, st_vec *v)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_key_require(c, key_id));
	HSM_GUARD(sq_prepare(c, SQL_VERSION_LIST, &st));
	sq_bind_text(c, st, 1, key_id);
	hsm_result res = sq_collect(c, st, SIZE_MAX, sq_read_version, clear_version, v, NULL);
	sq_reset(st);
	return res;
}

hsm_result sq_version_list(hsm_store *base, const char *key_id, hsm_version_cb cb, void *arg)
{
	sq_store *s = sq_of(base);
	sq_conn *c;
	st_vec v;
	st_vec_init(&v, sizeof(hsm_version_record));
	HSM_GUARD(sq_read_begin(s, &c));
	hsm_result res = read_versions(c, key_id, &v);
	sq_read_end(s, c);
	for (size_t i = 0; hsm_ok(res) && i < v.n; i++)
		res = cb(st_vec_at(&v, i), arg);
	st_vec_free(&v, clear_version);
	return res;
}
