/*
 * store_sqlite.h - internals shared by the SQLite backend's files.
 *
 *   store_sqlite.c             open/close, directory lock, connections,
 *                              read pool, write transactions
 *   store_sqlite_util.c        statement cache, binders, column readers,
 *                              error mapping, result vectors
 *   store_sqlite_schema.c      versioned schema and migrations
 *   store_sqlite_keys.c        keys and key versions
 *   store_sqlite_names.c       aliases and tags
 *   store_sqlite_grants.c      grants
 *   store_sqlite_certs.c       certificates
 *   store_sqlite_principals.c  metadata, users, access keys
 *   store_sqlite_approvals.c   quorum approvals
 *   store_sqlite_copy.c        export and import (hsm_store_copy)
 *   store_sqlite_rekey.c       re-wrapping under a new master key (hsm_store_rekey)
 *   store_sqlite_outbox.c      the audit outbox
 *
 * Concurrency: one write connection, guarded by a mutex and used only inside
 * BEGIN IMMEDIATE transactions; reads use connections from a pool, so in WAL
 * mode they never wait for the writer.  Each connection is used by one thread
 * at a time and caches its prepared statements.
 */
#ifndef HSM_STORE_SQLITE_H
#define HSM_STORE_SQLITE_H

#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>

#include "store/store_impl.h"

/* Distinct SQL statements one connection may cache (open addressing). */
#define SQ_STMT_SLOTS 128
/* How long a statement waits for a lock before DEPENDENCY_TIMEOUT. */
#define SQ_BUSY_TIMEOUT_MS 5000
/* Idle read connections kept open; more are opened on demand and closed after use. */
#define SQ_POOL_IDLE_MAX 16

typedef struct sq_conn {
	sqlite3 *db;
	struct sq_conn *next; /* idle-pool link */
	int bind_rc;          /* first failed bind since the last sq_prepare */
	/* The store's hsm_store_corrupt_seen count, or NULL (a connection to another file). */
	_Atomic uint64_t *corrupt_seen;
	struct sq_slot {
		const char *sql; /* the statement's text, identified by address */
		sqlite3_stmt *st;
	} stmts[SQ_STMT_SLOTS];
} sq_conn;

typedef struct sq_store {
	hsm_store base;
	char dir[PATH_MAX];
	char db_path[PATH_MAX];
	int lock_fd;
	int schema_version;
	pthread_mutex_t write_lock;
	sq_conn *writer;
	/* A committed erasure whose truncating checkpoint failed (a full disk): the next
	 * write transaction's end tries it again (write_lock). */
	bool scrub_owed;
	pthread_mutex_t pool_lock;
	sq_conn *idle;
	size_t idle_count;
} sq_store;

static inline sq_store *sq_of(hsm_store *s)
{
	return (sq_store *)s;
}

/* ---- Statements (store_sqlite.c) ---------------------------------------------------- */

/*
 * The cached statement for sql on c (prepared on first use).  sql must be a
 * string with static storage: its address is the cache key.  Finish every
 * use with sq_reset, which also ends the implicit read transaction.
 */
hsm_result sq_prepare(sq_conn *c, const char *sql, sqlite3_stmt **out) HSM_MUST_CHECK;
void sq_reset(sqlite3_stmt *st);

/*
 * Binders record the first failure in c->bind_rc, which the next sq_step
 * reports, so call sites bind without checking each call.  Text and blobs are
 * bound without copying: they must stay valid until sq_reset.
 */
void sq_bind_text(sq_conn *c, sqlite3_stmt *st, int i, const char *v);
void sq_bind_blob(sq_conn *c, sqlite3_stmt *st, int i, const hsm_buf *v);
void sq_bind_i64(sq_conn *c, sqlite3_stmt *st, int i, int64_t v);

/* Steps once: *row tells whether a row is available (false: done). */
hsm_result sq_step(sq_conn *c, sqlite3_stmt *st, bool *row) HSM_MUST_CHECK;
/* Steps a statement that returns no row. */
hsm_result sq_exec(sq_conn *c, sqlite3_stmt *st) HSM_MUST_CHECK;
/* Prepares (cached), runs a statement binding ?1 = text, and tells whether it returned a row. */
hsm_result sq_exists(sq_conn *c, const char *sql, const char *text, bool *found) HSM_MUST_CHECK;
/* The same, with the first column of the row (text that fits cap) copied to out. */
hsm_result sq_text_of(sq_conn *c, const char *sql, const char *text, char *out, size_t cap,
                      bool *found) HSM_MUST_CHECK;
/* The count(*) that sql returns with ?1 = a and ?2 = b (unless NULL). */
hsm_result sq_count(sq_conn *c, const char *sql, const char *a, const char *b,
                    int64_t *out) HSM_MUST_CHECK;

/* Builds the failure for SQLite result rc on c: its message, no data values. */
hsm_result sq_fail(sq_conn *c, int rc, const char *what);
/* A value read back that the schema does not allow. */
hsm_result sq_corrupt(const char *what);

/* Column readers (copying out of SQLite's buffers). */
hsm_result sq_col_text(sqlite3_stmt *st, int i, char *dst, size_t cap) HSM_MUST_CHECK;
hsm_result sq_col_strdup(sqlite3_stmt *st, int i, char **out) HSM_MUST_CHECK;
hsm_result sq_col_blob(sqlite3_stmt *st, int i, hsm_buf *out) HSM_MUST_CHECK;
hsm_result sq_col_u32(sqlite3_stmt *st, int i, uint32_t *out) HSM_MUST_CHECK;
hsm_result sq_col_i32(sqlite3_stmt *st, int i, int32_t *out) HSM_MUST_CHECK;
hsm_result sq_col_bool(sqlite3_stmt *st, int i, bool *out) HSM_MUST_CHECK;

/* ---- Connections and transactions (store_sqlite.c) ----------------------------------- */

/* Borrows a read connection from the pool (opening one if none is idle). */
hsm_result sq_read_begin(sq_store *s, sq_conn **out) HSM_MUST_CHECK;
/* Returns it; c == NULL is a no-op. */
void sq_read_end(sq_store *s, sq_conn *c);

/*
 * Takes the write lock and begins a BEGIN IMMEDIATE transaction on the write
 * connection.  Aborts if this thread already holds the lock (re-entry from a
 * key_update fn would deadlock).
 */
hsm_result sq_write_begin(sq_store *s, sq_conn **out) HSM_MUST_CHECK;
/* Commits when res is a success, else rolls back; releases the lock; returns the outcome. */
hsm_result sq_write_end(sq_store *s, sq_conn *c, hsm_result res) HSM_MUST_CHECK;
/*
 * As sq_write_end, then (after a commit) checkpoints the WAL into the
 * database and truncates it, so erased bytes do not linger in old WAL frames.
 */
hsm_result sq_write_end_scrub(sq_store *s, sq_conn *c, hsm_result res) HSM_MUST_CHECK;

/* ---- Result collection for list callbacks ----------------------------------------------- */


/* Reads one row of st into a zeroed item; on failure the caller's clear releases it. */
typedef hsm_result (*sq_row_reader)(sqlite3_stmt *st, void *item);
/*
 * Steps st, appending rows to v until v holds max items; *more (if not NULL)
 * tells whether another row followed.  Does not reset st.
 */
hsm_result sq_collect(sq_conn *c, sqlite3_stmt *st, size_t max, sq_row_reader read,
                      void (*clear)(void *item), st_vec *v, bool *more) HSM_MUST_CHECK;

/* ---- Schema (store_sqlite_schema.c) --------------------------------------------------------- */

/* Brings the database on the write connection to the latest schema; *version receives it. */
hsm_result sq_schema_migrate(sq_conn *w, int *version, int *migrated_from) HSM_MUST_CHECK;
/*
 * Reads the version of an existing store in dir (named in messages) without
 * changing anything: HSM_ERR_NOT_FOUND when the database has no hsmd schema.
 */
hsm_result sq_schema_read(sq_conn *w, const char *dir, int *version) HSM_MUST_CHECK;

/* ---- Row codecs shared with the copy code (store_sqlite_copy.c) ---------------------------- */

#define SQ_KEY_COLS                                                                    \
	"id, description, spec, usage, origin, state, created, deletion_date, "            \
	"pending_window_days, rotation_enabled, rotation_period_days, next_rotation, " \
	"primary_version, policy, flags, updated, valid_to"
#define SQ_VERSION_COLS \
	"key_id, version, created, rotation_type, wrapped, public_der, digest, valid_to, description"
#define SQ_ALIAS_COLS "name, key_id, created, updated"
#define SQ_USER_COLS "name, role, disabled, locked, failed_auth, created"
#define SQ_ACCESS_KEY_COLS "id, user, active, created, wrapped_secret"
#define SQ_GRANT_COLS \
	"grant_id, key_id, name, grantee, retiring, operations, constraints, created"
#define SQ_CERT_COLS "cert_id, label, object_id, der, creator, created, not_after"

hsm_result sq_read_key(sqlite3_stmt *st, void *item);
hsm_result sq_read_version(sqlite3_stmt *st, void *item);
hsm_result sq_read_alias(sqlite3_stmt *st, void *item);
hsm_result sq_read_user(sqlite3_stmt *st, void *item);
hsm_result sq_read_access_key(sqlite3_stmt *st, void *item);
hsm_result sq_read_grant(sqlite3_stmt *st, void *item);
hsm_result sq_read_cert(sqlite3_stmt *st, void *item);
/* Insert records exactly as given, inside the caller's write transaction. */
hsm_result sq_insert_key(sq_conn *w, const hsm_key_record *k) HSM_MUST_CHECK;
hsm_result sq_insert_version(sq_conn *w, const hsm_version_record *v) HSM_MUST_CHECK;
hsm_result sq_insert_alias(sq_conn *w, const hsm_alias_record *a) HSM_MUST_CHECK;
hsm_result sq_insert_tag(sq_conn *w, const char *key_id, const hsm_tag *t) HSM_MUST_CHECK;
hsm_result sq_insert_user(sq_conn *w, const hsm_user_record *u) HSM_MUST_CHECK;
hsm_result sq_insert_access_key(sq_conn *w, const hsm_access_key_record *k) HSM_MUST_CHECK;
hsm_result sq_insert_grant(sq_conn *w, const hsm_grant_record *g) HSM_MUST_CHECK;
hsm_result sq_insert_cert(sq_conn *w, const hsm_cert_record *c) HSM_MUST_CHECK;
/* keep_existing: a name already there keeps its value (otherwise a conflict). */
hsm_result sq_put_meta(sq_conn *w, const char *name, const hsm_buf *value,
                       bool keep_existing) HSM_MUST_CHECK;

/* ---- Operations (the ops table in store_sqlite.c points at these) --------------------------- */

hsm_result sq_meta_get(hsm_store *s, const char *name, hsm_buf *out);
hsm_result sq_meta_put(hsm_store *s, size_t n, const char *const names[],
                       const hsm_buf *const values[]);
hsm_result sq_rekey(hsm_store *s, const hsm_store_rekey_req *req, hsm_store_rekey_counts *counts);

hsm_result sq_key_create(hsm_store *s, const hsm_key_record *key, const hsm_version_record *first,
                         size_t n_tags, const hsm_tag tags[]);
hsm_result sq_key_get(hsm_store *s, const char *key_id, hsm_key_record *out);
hsm_result sq_keys_get(hsm_store *s, size_t n, const char *const key_ids[], hsm_key_cb cb,
                       void *arg);
hsm_result sq_key_update(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
                         const hsm_version_record *add_version, hsm_key_record *after);
hsm_result sq_key_destroy(hsm_store *s, const char *key_id, int64_t now, bool due_only);
hsm_result sq_key_set_material(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
                               const hsm_version_record *material, hsm_key_record *after);
hsm_result sq_key_promote(hsm_store *s, const char *key_id, uint32_t version, int64_t now,
                          hsm_rotation_type type, hsm_key_update_fn fn, void *arg,
                          hsm_key_record *after);
hsm_result sq_key_list(hsm_store *s, const char *after, size_t limit, bool include_destroyed,
                       hsm_key_cb cb, void *arg, bool *truncated);
hsm_result sq_jwt_key_list(hsm_store *s, const char *after, size_t limit, hsm_key_cb cb,
                           void *arg, bool *truncated);
hsm_result sq_key_count(hsm_store *s, uint64_t *out);
hsm_result sq_keys_due(hsm_store *s, int64_t now, size_t limit, hsm_key_cb cb, void *arg);
hsm_result sq_keys_due_count(hsm_store *s, int64_t horizon, int64_t overdue_before,
                             hsm_due_counts *out);
hsm_result sq_version_get(hsm_store *s, const char *key_id, uint32_t version,
                          hsm_version_record *out);
hsm_result sq_version_list(hsm_store *s, const char *key_id, hsm_version_cb cb, void *arg);
/* Whether a key row exists (any state), on connection c. */
hsm_result sq_key_exists(sq_conn *c, const char *key_id, bool *found) HSM_MUST_CHECK;
/* NOT_FOUND unless the key exists, on connection c. */
hsm_result sq_key_require(sq_conn *c, const char *key_id) HSM_MUST_CHECK;
/*
 * NOT_FOUND unless the key exists; asks `check` (may be NULL) of its state,
 * which *state (may be NULL) receives.  On the write connection, inside the
 * write (sq_write_begin), the state holds until the write ends.
 */
hsm_result sq_key_state(sq_conn *c, const char *key_id, const hsm_key_state_check *check,
                        hsm_key_state *state) HSM_MUST_CHECK;

hsm_result sq_alias_create(hsm_store *s, const char *name, const char *key_id, int64_t now,
                           const hsm_key_state_check *check);
hsm_result sq_alias_update(hsm_store *s, const char *name, const char *from, const char *key_id,
                           int64_t now, const hsm_key_state_check *check);
hsm_result sq_alias_delete(hsm_store *s, const char *name);
hsm_result sq_alias_get(hsm_store *s, const char *name, hsm_alias_record *out);
hsm_result sq_alias_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                         hsm_alias_cb cb, void *arg, bool *truncated);
hsm_result sq_alias_delete_for_key(hsm_store *s, const char *key_id);
/* Deletes a key's aliases inside the caller's write transaction. */
hsm_result sq_alias_delete_for_key_in(sq_conn *w, const char *key_id) HSM_MUST_CHECK;

hsm_result sq_tags_put(hsm_store *s, const char *key_id, size_t n, const hsm_tag tags[],
                       const hsm_key_state_check *check);
/* The tag writes and count of sq_tags_put inside w's open write transaction (the key exists). */
hsm_result sq_tags_put_in(sq_conn *w, const char *key_id, size_t n,
                          const hsm_tag tags[]) HSM_MUST_CHECK;
hsm_result sq_tags_remove(hsm_store *s, const char *key_id, size_t n, const char *const keys[],
                          const hsm_key_state_check *check);
hsm_result sq_tags_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                        hsm_tag_cb cb, void *arg, bool *truncated);

hsm_result sq_grant_create(hsm_store *s, hsm_grant_record *g, bool *existed,
                           const hsm_key_state_check *check);
hsm_result sq_grant_fits(hsm_store *s, const hsm_grant_record *g);
hsm_result sq_grant_get(hsm_store *s, const char *key_id, const char *grant_id,
                        hsm_grant_record *out);
hsm_result sq_grant_delete(hsm_store *s, const char *key_id, const char *grant_id);
hsm_result sq_grant_list(hsm_store *s, const char *key_id, const char *grantee,
                         const char *after, size_t limit, hsm_grant_cb cb, void *arg,
                         bool *truncated);
hsm_result sq_grant_list_retiring(hsm_store *s, const char *retiring, const char *after,
                                  size_t limit, hsm_grant_cb cb, void *arg, bool *truncated);
/* Deletes a key's grants inside the caller's write transaction. */
hsm_result sq_grant_delete_for_key_in(sq_conn *w, const char *key_id) HSM_MUST_CHECK;

hsm_result sq_cert_create(hsm_store *s, const hsm_cert_record *c);
hsm_result sq_cert_get(hsm_store *s, const char *cert_id, hsm_cert_record *out);
hsm_result sq_cert_delete(hsm_store *s, const char *cert_id);
hsm_result sq_cert_list(hsm_store *s, const hsm_cert_match *m, const char *after, size_t limit,
                        hsm_cert_cb cb, void *arg, bool *truncated);
hsm_result sq_cert_count(hsm_store *s, uint64_t *out);
hsm_result sq_cert_count_expiring(hsm_store *s, int64_t before, uint64_t *out);

hsm_result sq_usage_put(hsm_store *s, size_t n, const hsm_key_usage_record *recs);
hsm_result sq_usage_get(hsm_store *s, const char *key_id, hsm_key_usage_record *out);
hsm_result sq_usage_since(hsm_store *s, int64_t *out);

hsm_result sq_user_create(hsm_store *s, const hsm_user_record *u);
hsm_result sq_user_get(hsm_store *s, const char *name, hsm_user_record *out);
hsm_result sq_user_put(hsm_store *s, const hsm_user_record *u);
hsm_result sq_user_change(hsm_store *s, const char *name, hsm_user_change change);
hsm_result sq_user_auth_result(hsm_store *s, const char *name, bool success, uint32_t lock_after,
                               hsm_user_record *out, bool *locked_now);
hsm_result sq_user_list(hsm_store *s, hsm_user_cb cb, void *arg);
hsm_result sq_access_key_create(hsm_store *s, const hsm_access_key_record *k);
hsm_result sq_access_key_get(hsm_store *s, const char *access_key_id, hsm_access_key_record *out);
hsm_result sq_access_key_set_active(hsm_store *s, const char *access_key_id, bool active);
hsm_result sq_access_key_list(hsm_store *s, const char *user, hsm_access_key_cb cb, void *arg);

hsm_result sq_approval_open(hsm_store *s, const hsm_approval_record *a, hsm_approval_record *out);
hsm_result sq_approval_get(hsm_store *s, const char *id, hsm_approval_record *out);
hsm_result sq_approval_find(hsm_store *s, const char *fingerprint, int64_t now,
                            hsm_approval_record *out);
hsm_result sq_approval_approve(hsm_store *s, const char *id, const char *approver, int64_t now,
                               hsm_approval_record *out);
hsm_result sq_approval_close(hsm_store *s, const char *id, hsm_approval_state to, const char *by,
                             int64_t now, hsm_approval_record *out);
hsm_result sq_approval_reopen(hsm_store *s, const char *id);
hsm_result sq_approval_list(hsm_store *s, bool open_only, int64_t now,
                            const hsm_approval_cursor *after, size_t limit, hsm_approval_cb cb,
                            void *arg, bool *truncated);
hsm_result sq_approval_purge(hsm_store *s, int64_t before, uint64_t *deleted);
hsm_result sq_approval_rewrite(hsm_store *s, hsm_approval_rewrite_fn fn, void *arg,
                               uint64_t *rewritten);

hsm_result sq_export(hsm_store *s, const hsm_store_sink *sink);
hsm_result sq_import(hsm_store *s, hsm_store_producer produce, void *arg);
hsm_result sq_holds_any(hsm_store *s, bool *any);

/* Inserts in's row (store.h, "Audit outbox") inside w's open write transaction. */
hsm_result sq_outbox_insert(sq_conn *w, hsm_store_intent *in) HSM_MUST_CHECK;
hsm_result sq_outbox_page(hsm_store *s, const char *node_id, int64_t after_ms,
                          const char *after_id, size_t limit, st_vec *out);
hsm_result sq_outbox_delete(hsm_store *s, const char *node_id, const char *const *request_ids,
                            size_t n);
hsm_result sq_outbox_note(hsm_store *s);
hsm_result sq_outbox_nodes_page(hsm_store *s, const char *after_node, int64_t before_ms,
                                size_t limit, st_vec *out);

#endif
