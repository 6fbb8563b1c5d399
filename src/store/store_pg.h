/*
 * store_pg.h - internals shared by the PostgreSQL backend's files.
 *
 *   store_pg.c             open/close, the connection pool, reconnection,
 *                          read and write transactions
 *   store_pg_util.c        statements, parameters, column readers, error
 *                          mapping, result vectors
 *   store_pg_schema.c      versioned schema and migrations
 *   store_pg_keys.c        keys and key versions
 *   store_pg_names.c       aliases and tags
 *   store_pg_grants.c      grants
 *   store_pg_certs.c       certificates
 *   store_pg_principals.c  metadata, users, access keys
 *   store_pg_approvals.c   quorum approvals
 *   store_pg_copy.c        export, import and snapshot
 *   store_pg_rekey.c       re-wrapping under a new master key (hsm_store_rekey)
 *   store_pg_outbox.c      the audit outbox
 *
 * Why this backend exists: several hsmd nodes share one database.  So there
 * is no lock on the location (unlike the SQLite directory lock); every
 * read-modify-write locks its row (SELECT ... FOR UPDATE) so nodes serialize
 * on it; schema migrations take a transaction-scoped advisory lock, so nodes
 * opening an empty database at the same moment create it once.
 *
 * Connections: a bounded pool shared by readers and writers (PostgreSQL's
 * MVCC lets readers and writers run side by side).  Each connection is used
 * by one thread at a time and caches its prepared statements.  A connection
 * found broken (server restart, failover behind the same address) is
 * replaced on next use; an operation retries once on a fresh connection only
 * when the first statement it sent failed that way, before anything could
 * have taken effect.  A write whose COMMIT got no answer is never retried: its
 * outcome is unknown and the caller is told so.
 *
 * Durability: synchronous_commit is never lowered (raised to on where the
 * server default is off), so a commit is acknowledged once it is flushed on
 * the primary (and on synchronous standbys where the operator configured
 * them).
 *
 * Erasure: PostgreSQL keeps an updated or deleted row's old version as a dead
 * tuple until VACUUM reclaims the space, and its bytes also live on in the
 * WAL, in base backups and on replicas.  So "deleted secrets are
 * overwritten" (store.h) holds only for the live rows here: destroying a key
 * replaces the wrapped material by an empty value in the same transaction,
 * so no live row holds it.  The material is wrapped under the domain master
 * key, which the database never sees; destroying a key is final in hsmd, not
 * a guarantee that the old ciphertext has left every disk.
 */
#ifndef HSM_STORE_PG_H
#define HSM_STORE_PG_H

#include <libpq-fe.h>
#include <pthread.h>

#include "store/store_impl.h"

/* Connections one handle keeps at most; callers beyond wait for one to be free. */
#define PG_POOL_MAX 16
/* How long a caller waits for a free pooled connection. */
#define PG_POOL_WAIT_MS 10000
/* Session limits (SET at connect): a lock wait or statement beyond them is DEPENDENCY_TIMEOUT. */
#define PG_LOCK_TIMEOUT_MS 5000
#define PG_STATEMENT_TIMEOUT_MS 15000
/* A node wedged inside a transaction does not hold row locks beyond this. */
#define PG_IDLE_TX_TIMEOUT_MS 60000
/*
 * How long hsmd waits for any answer of the server, whatever it is doing:
 * the limits above are the server's to enforce, and a server that is
 * stopped, frozen or cut off behind a link that still answers TCP enforces
 * nothing.  Past it the connection is given up (closed, not pooled) and the
 * request fails with DEPENDENCY_TIMEOUT rather than hanging.
 */
#define PG_CLIENT_TIMEOUT_MS (PG_STATEMENT_TIMEOUT_MS + 5000)
/*
 * The leadership session (store.h, hsm_store_lead) is ended by the server
 * after the lease it is given without a statement: the leader's scheduler
 * proves it every round (hsmd's scheduler_interval_seconds and
 * leader_lease_seconds, 5 s and 30 s by default), so a leader that is
 * stopped, or hung, without its connection closing (SIGSTOP, a frozen VM, a
 * round stuck on a hung disk) loses the lead, which another node then takes.
 * A round longer than the lease (a very large backup) may hand the lead over
 * meanwhile: harmless, as every scheduled change is decided again under its
 * row lock.
 */
/* The oldest server accepted (PQserverVersion): idle_session_timeout came in 14. */
#define PG_SERVER_VERSION_MIN 140000
/* Seconds libpq waits to connect, unless the location names its own connect_timeout. */
#define PG_CONNECT_TIMEOUT_S "5"
/*
 * A peer that vanishes without closing its connections (a machine that lost
 * power, a network cut) is noticed within about PG_TCP_USER_TIMEOUT_MS on
 * both ends: TCP keepalive probes after PG_KEEPALIVE_IDLE_S of silence, every
 * PG_KEEPALIVE_INTERVAL_S, PG_KEEPALIVE_COUNT unanswered end the connection,
 * as does data left unacknowledged that long.  Without it, the server keeps a
 * dead leader's session, and its advisory lock, for the system's keepalive
 * time (two hours and more), and a node cut off from the server waits as
 * long on each statement.  libpq's side is a default the location may
 * override; the server's side is SET on every session.
 */
#define PG_KEEPALIVE_IDLE_S "5"
#define PG_KEEPALIVE_INTERVAL_S "2"
#define PG_KEEPALIVE_COUNT "3"
#define PG_TCP_USER_TIMEOUT_MS "10000"
/* Distinct statements one connection may prepare (open addressing). */
#define PG_STMT_SLOTS 128
/* Parameters one statement takes at most (a key row: PG_KEY_COLS). */
#define PG_MAX_PARAMS 17

/* The longest node id a claim keeps (the server's are at most 64 bytes). */
#define HSM_PG_NODE_ID_MAX 128

typedef struct pg_conn {
	PGconn *db;
	struct pg_conn *next; /* idle-pool link */
	bool broken;          /* lost its server: closed instead of pooled */
	bool late;            /* a statement's answer did not come within PG_CLIENT_TIMEOUT_MS */
	unsigned ok;          /* statements that succeeded since checkout (the retry rule) */
	struct pg_slot {
		const char *sql; /* the statement's text, identified by address */
	} stmts[PG_STMT_SLOTS];
} pg_conn;

typedef struct pg_store {
	hsm_store base;
	char *conninfo; /* the location as given; holds the password: never log it */
	int schema_version;
	pthread_mutex_t pool_lock;
	pthread_cond_t pool_free;
	pg_conn *idle;
	size_t open_count; /* connections open, idle or in use */
	/* Leadership (hsm_store_lead): a session of its own, holding the advisory lock when leading. */
	pthread_mutex_t lead_lock;
	pg_conn *lead;
	bool leading;
	/* This node's id (hsm_store_claim_node): a session of its own, holding its lock. */
	pthread_mutex_t node_lock;
	pg_conn *node;
	char node_id[HSM_PG_NODE_ID_MAX + 1];
} pg_store;

static inline pg_store *pg_of(hsm_store *s)
{
	return (pg_store *)s;
}

/* ---- Parameters and statements (store_pg_util.c) --------------------------------------- */

/* Parameters of one statement: text (integers formatted) or binary bytea. */
typedef struct pg_params {
	int n;
	const char *values[PG_MAX_PARAMS];
	int lengths[PG_MAX_PARAMS];
	int formats[PG_MAX_PARAMS];
	char ints[PG_MAX_PARAMS][24];
} pg_params;

void pg_params_init(pg_params *p);
/* Text is not copied: it must outlive the statement. */
void pg_p_text(pg_params *p, const char *v);
void pg_p_i64(pg_params *p, int64_t v);
void pg_p_bool(pg_params *p, bool v);
/* Bytes are not copied; an empty buffer is an empty bytea (never NULL). */
void pg_p_bytea(pg_params *p, const hsm_buf *v);

/*
 * Runs sql (a string with static storage: its address names the cached
 * prepared statement) with the parameters; results come back in binary.
 * *out (if not NULL) receives the result, which the caller PQclear()s;
 * without out, the result is cleared here.
 */
hsm_result pg_run(pg_conn *c, const char *sql, const pg_params *p, PGresult **out) HSM_MUST_CHECK;
/* A one-off statement (no cache): transaction control, session settings. */
hsm_result pg_simple(pg_conn *c, const char *sql, const char *what) HSM_MUST_CHECK;
/*
 * sql's result (PQexec's), waiting at most PG_CLIENT_TIMEOUT_MS; NULL when
 * none came (c->broken set, and c->late if time ran out).  Sets no error.
 */
PGresult *pg_exec_raw(pg_conn *c, const char *sql);
/*
 * Appends text as an element of the array literal being built in a ("{"
 * first, "}" last): quoted, with " and \\ escaped, after a comma unless it
 * is the first.
 */
hsm_result pg_array_put_text(hsm_buf *a, const char *text) HSM_MUST_CHECK;
/* Whether sql with $1 = text returns a row. */
hsm_result pg_exists(pg_conn *c, const char *sql, const char *text, bool *found) HSM_MUST_CHECK;
/* The same, with the first column of the first row (text that fits cap) copied to out. */
hsm_result pg_text_of(pg_conn *c, const char *sql, const char *text, char *out, size_t cap,
                      bool *found) HSM_MUST_CHECK;
/* The count(*) that sql returns with $1 = a and $2 = b (unless NULL). */
hsm_result pg_count(pg_conn *c, const char *sql, const char *a, const char *b,
                    int64_t *out) HSM_MUST_CHECK;

/*
 * The failure for a result (or NULL) on c: mapped by SQLSTATE, with at most
 * the constraint name; libpq's message and DETAIL (which quote row values)
 * are never passed on.  Marks c broken when the connection is gone.
 */
hsm_result pg_fail(pg_conn *c, const PGresult *r, const char *what);
hsm_result pg_corrupt(const char *what);

/* Column readers for binary results (row, column). */
hsm_result pg_col_text(const PGresult *r, int row, int col, char *dst, size_t cap) HSM_MUST_CHECK;
hsm_result pg_col_strdup(const PGresult *r, int row, int col, char **out) HSM_MUST_CHECK;
hsm_result pg_col_bytea(const PGresult *r, int row, int col, hsm_buf *out) HSM_MUST_CHECK;
hsm_result pg_col_i64(const PGresult *r, int row, int col, int64_t *out) HSM_MUST_CHECK;
hsm_result pg_col_i32(const PGresult *r, int row, int col, int32_t *out) HSM_MUST_CHECK;
hsm_result pg_col_u32(const PGresult *r, int row, int col, uint32_t *out) HSM_MUST_CHECK;
hsm_result pg_col_bool(const PGresult *r, int row, int col, bool *out) HSM_MUST_CHECK;

/* ---- Result collection for list callbacks --------------------------------------------------- */


/* Reads row `row` of r into a zeroed item; on failure the caller's clear releases it. */
typedef hsm_result (*pg_row_reader)(const PGresult *r, int row, void *item);
/*
 * Appends r's rows to v, at most max in all; *more (if not NULL) tells
 * whether r held a row beyond them.
 */
hsm_result pg_collect(const PGresult *r, size_t max, pg_row_reader read,
                      void (*clear)(void *item), st_vec *v, bool *more) HSM_MUST_CHECK;

/*
 * Runs sql with one text parameter ($1 = id) and reads its first row into
 * item with read; NOT_FOUND ("<what> <id> does not exist") when it has none.
 */
hsm_result pg_get_one(pg_conn *c, const char *sql, const char *id, const char *what,
                      pg_row_reader read, void *item) HSM_MUST_CHECK;

/* ---- Transactions (store_pg.c) ----------------------------------------------------------------- */

/* The body of an operation, run on a connection; the kind decides the transaction around it. */
typedef hsm_result (*pg_body)(pg_conn *c, void *arg);

/*
 * Reads: body runs on a pooled connection in autocommit mode (each statement
 * its own snapshot, as the SQLite backend's reads are).  Retried once on a
 * fresh connection when the first statement found the connection broken.
 */
hsm_result pg_read(pg_store *s, pg_body body, void *arg) HSM_MUST_CHECK;
/*
 * Writes: body runs inside BEGIN ... COMMIT (READ COMMITTED, with row locks
 * where a body reads before it writes).  Rolled back when body fails.
 * Retried only when BEGIN found the connection broken.  Aborts when this
 * thread is already inside a write of this store (a key_update fn calling
 * back into the store would wait on its own row lock).  Carries the
 * thread's outbox row when an intent is pending (store.h, "Audit outbox").
 */
hsm_result pg_write(pg_store *s, pg_body body, void *arg) HSM_MUST_CHECK;
/*
 * body inside one REPEATABLE READ READ ONLY transaction (one snapshot of the
 * whole database) on a connection of its own for the duration.
 */
hsm_result pg_read_snapshot(pg_store *s, pg_body body, void *arg) HSM_MUST_CHECK;

/*
 * The server process ids of this handle's idle pooled sessions, its
 * leadership session and its node id's, at most cap (a rekey tells them
 * from other nodes').
 */
size_t pg_own_sessions(pg_store *s, int *pids, size_t cap);

/*
 * Every session hsmd opens is named PG_APP_NAME, or a name starting with it
 * ("hsmd node <id>", "hsmd adopting <id>"): a rekey refuses to run beside
 * one.  The URI cannot override it (conn_open).
 */
#define PG_APP_NAME "hsmd"
/* The leadership's pg_try_advisory_lock(int8) key: "HSML" as a number (the schema's: "HSMD"). */
#define PG_LEAD_LOCK "1213418828"
/* A node id's pg_try_advisory_lock(int4, int4) first key: "HSMN" as a number. */
#define PG_NODE_LOCK_CLASS "1213418830"
/* The least classid pg_locks shows for a node id's int8 lock (pg_node_lock_key64). */
#define PG_NODE_LOCK64_CLASSID_MIN "2147483648"

/*
 * The advisory lock keys a node id is claimed under: earlier releases' 31
 * bits (pg_try_advisory_lock(int4, int4)'s second), and 63 bits, the top
 * bit set (pg_try_advisory_lock(int8)).  Fixed for good.
 */
int32_t pg_node_lock_key(const char *node_id);
int64_t pg_node_lock_key64(const char *node_id);

/* ---- Schema (store_pg_schema.c) ------------------------------------------------------------------- */

int pg_schema_latest(void);
/* Brings the database to the latest schema (safe against other nodes doing the same). */
hsm_result pg_schema_migrate(pg_store *s, int *version, int *migrated_from) HSM_MUST_CHECK;
/* Reads an existing store's version without changing it (NOT_FOUND: no hsmd schema). */
hsm_result pg_schema_read(pg_store *s, int *version) HSM_MUST_CHECK;
/* The database's schema version now, read on c (inside the caller's transaction). */
hsm_result pg_schema_current(pg_conn *c, int64_t *out) HSM_MUST_CHECK;
/* Refuses a version newer than this build knows (or a corrupt one). */
hsm_result pg_schema_check(int64_t current) HSM_MUST_CHECK;
/*
 * A store a newer node has migrated since this one opened it (a cluster
 * being upgraded) is refused, the message naming both versions and ending
 * with what this node does meanwhile (tail).
 */
hsm_result pg_schema_not_newer(int64_t current, const char *tail) HSM_MUST_CHECK;

/* ---- Row codecs shared with the copy code --------------------------------------------------------- */

#define PG_KEY_COLS                                                                    \
	"id, description, spec, usage, origin, state, created, deletion_date, "            \
	"pending_window_days, rotation_enabled, rotation_period_days, next_rotation, " \
	"primary_version, policy, flags, updated, valid_to"
#define PG_VERSION_COLS \
	"key_id, version, created, rotation_type, wrapped, public_der, digest, valid_to, description"
#define PG_ALIAS_COLS "name, key_id, created, updated"
#define PG_USER_COLS "name, roles, disabled, locked, failed_auth, created"
#define PG_ACCESS_KEY_COLS "id, user_name, active, created, wrapped_secret"
#define PG_GRANT_COLS \
	"grant_id, key_id, name, grantee, retiring, operations, constraints, created"
#define PG_CERT_COLS "cert_id, label, object_id, der, creator, created, not_after"

hsm_result pg_read_key(const PGresult *r, int row, void *item);
hsm_result pg_read_version(const PGresult *r, int row, void *item);
hsm_result pg_read_alias(const PGresult *r, int row, void *item);
hsm_result pg_read_user(const PGresult *r, int row, void *item);
hsm_result pg_read_access_key(const PGresult *r, int row, void *item);
hsm_result pg_read_grant(const PGresult *r, int row, void *item);
hsm_result pg_read_cert(const PGresult *r, int row, void *item);
/* Inserts records exactly as given (the import path; the create paths use them too). */
hsm_result pg_insert_key(pg_conn *w, const hsm_key_record *k) HSM_MUST_CHECK;
hsm_result pg_insert_version(pg_conn *w, const hsm_version_record *v) HSM_MUST_CHECK;
hsm_result pg_insert_alias(pg_conn *w, const hsm_alias_record *a) HSM_MUST_CHECK;
hsm_result pg_insert_tag(pg_conn *w, const char *key_id, const hsm_tag *t) HSM_MUST_CHECK;
hsm_result pg_insert_user(pg_conn *w, const hsm_user_record *u) HSM_MUST_CHECK;
hsm_result pg_insert_access_key(pg_conn *w, const hsm_access_key_record *k) HSM_MUST_CHECK;
hsm_result pg_insert_grant(pg_conn *w, const hsm_grant_record *g) HSM_MUST_CHECK;
hsm_result pg_insert_cert(pg_conn *w, const hsm_cert_record *c) HSM_MUST_CHECK;
/* keep_existing: a name already there keeps its value (otherwise a conflict). */
hsm_result pg_put_meta(pg_conn *w, const char *name, const hsm_buf *value,
                       bool keep_existing) HSM_MUST_CHECK;
/* NOT_FOUND unless the key exists; locks its row against key_update/destroy (FOR SHARE). */
hsm_result pg_key_require_locked(pg_conn *w, const char *key_id) HSM_MUST_CHECK;
hsm_result pg_key_require(pg_conn *c, const char *key_id) HSM_MUST_CHECK;
/*
 * NOT_FOUND unless the key exists; locks its row, FOR NO KEY UPDATE when
 * one_writer (writers of one key's aliases, tags or grants then run one
 * after another on every node) or else FOR SHARE, and asks `check` (may be
 * NULL) of the state the row holds, which *state (may be NULL) receives.
 */
hsm_result pg_key_lock_state(pg_conn *w, const char *key_id, bool one_writer,
                             const hsm_key_state_check *check,
                             hsm_key_state *state) HSM_MUST_CHECK;

/* ---- Operations (the ops table in store_pg.c points at these) ------------------------------------- */

hsm_result pg_meta_get(hsm_store *s, const char *name, hsm_buf *out);
hsm_result pg_meta_put(hsm_store *s, size_t n, const char *const names[],
                       const hsm_buf *const values[]);
hsm_result pg_rekey(hsm_store *s, const hsm_store_rekey_req *req, hsm_store_rekey_counts *counts);

hsm_result pg_key_create(hsm_store *s, const hsm_key_record *key, const hsm_version_record *first,
                         size_t n_tags, const hsm_tag tags[]);
hsm_result pg_key_get(hsm_store *s, const char *key_id, hsm_key_record *out);
hsm_result pg_keys_get(hsm_store *s, size_t n, const char *const key_ids[], hsm_key_cb cb,
                       void *arg);
hsm_result pg_key_update(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
                         const hsm_version_record *add_version, hsm_key_record *after);
hsm_result pg_key_destroy(hsm_store *s, const char *key_id, int64_t now, bool due_only);
hsm_result pg_key_set_material(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
                               const hsm_version_record *material, hsm_key_record *after);
hsm_result pg_key_promote(hsm_store *s, const char *key_id, uint32_t version, int64_t now,
                          hsm_rotation_type type, hsm_key_update_fn fn, void *arg,
                          hsm_key_record *after);
hsm_result pg_key_list(hsm_store *s, const char *after, size_t limit, bool include_destroyed,
                       hsm_key_cb cb, void *arg, bool *truncated);
hsm_result pg_jwt_key_list(hsm_store *s, const char *after, size_t limit, hsm_key_cb cb,
                           void *arg, bool *truncated);
hsm_result pg_key_count(hsm_store *s, uint64_t *out);
hsm_result pg_keys_due(hsm_store *s, int64_t now, size_t limit, hsm_key_cb cb, void *arg);
hsm_result pg_keys_due_count(hsm_store *s, int64_t horizon, int64_t overdue_before,
                             hsm_due_counts *out);
hsm_result pg_version_get(hsm_store *s, const char *key_id, uint32_t version,
                          hsm_version_record *out);
hsm_result pg_version_list(hsm_store *s, const char *key_id, hsm_version_cb cb, void *arg);

hsm_result pg_alias_create(hsm_store *s, const char *name, const char *key_id, int64_t now,
                           const hsm_key_state_check *check);
hsm_result pg_alias_update(hsm_store *s, const char *name, const char *from, const char *key_id,
                           int64_t now, const hsm_key_state_check *check);
hsm_result pg_alias_delete(hsm_store *s, const char *name);
hsm_result pg_alias_get(hsm_store *s, const char *name, hsm_alias_record *out);
hsm_result pg_alias_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                         hsm_alias_cb cb, void *arg, bool *truncated);
hsm_result pg_alias_delete_for_key(hsm_store *s, const char *key_id);
/* Deletes a key's aliases inside the caller's write transaction. */
hsm_result pg_alias_delete_for_key_in(pg_conn *w, const char *key_id) HSM_MUST_CHECK;

hsm_result pg_tags_put(hsm_store *s, const char *key_id, size_t n, const hsm_tag tags[],
                       const hsm_key_state_check *check);
/* The tag writes and count of pg_tags_put inside w's open transaction (the key row locked). */
hsm_result pg_tags_put_in(pg_conn *w, const char *key_id, size_t n,
                          const hsm_tag tags[]) HSM_MUST_CHECK;
hsm_result pg_tags_remove(hsm_store *s, const char *key_id, size_t n, const char *const keys[],
                          const hsm_key_state_check *check);
hsm_result pg_tags_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                        hsm_tag_cb cb, void *arg, bool *truncated);

hsm_result pg_grant_create(hsm_store *s, hsm_grant_record *g, bool *existed,
                           const hsm_key_state_check *check);
hsm_result pg_grant_fits(hsm_store *s, const hsm_grant_record *g);
hsm_result pg_grant_get(hsm_store *s, const char *key_id, const char *grant_id,
                        hsm_grant_record *out);
hsm_result pg_grant_delete(hsm_store *s, const char *key_id, const char *grant_id);
hsm_result pg_grant_list(hsm_store *s, const char *key_id, const char *grantee,
                         const char *after, size_t limit, hsm_grant_cb cb, void *arg,
                         bool *truncated);
hsm_result pg_grant_list_retiring(hsm_store *s, const char *retiring, const char *after,
                                  size_t limit, hsm_grant_cb cb, void *arg, bool *truncated);
/* Deletes a key's grants inside the caller's write transaction. */
hsm_result pg_grant_delete_for_key_in(pg_conn *w, const char *key_id) HSM_MUST_CHECK;

hsm_result pg_cert_create(hsm_store *s, const hsm_cert_record *c);
hsm_result pg_cert_get(hsm_store *s, const char *cert_id, hsm_cert_record *out);
hsm_result pg_cert_delete(hsm_store *s, const char *cert_id);
hsm_result pg_cert_list(hsm_store *s, const hsm_cert_match *m, const char *after, size_t limit,
                        hsm_cert_cb cb, void *arg, bool *truncated);
hsm_result pg_cert_count(hsm_store *s, uint64_t *out);
hsm_result pg_cert_count_expiring(hsm_store *s, int64_t before, uint64_t *out);

hsm_result pg_usage_put(hsm_store *s, size_t n, const hsm_key_usage_record *recs);
hsm_result pg_usage_get(hsm_store *s, const char *key_id, hsm_key_usage_record *out);
hsm_result pg_usage_since(hsm_store *s, int64_t *out);

hsm_result pg_user_create(hsm_store *s, const hsm_user_record *u);
hsm_result pg_user_get(hsm_store *s, const char *name, hsm_user_record *out);
hsm_result pg_user_put(hsm_store *s, const hsm_user_record *u);
hsm_result pg_user_change(hsm_store *s, const char *name, hsm_user_change change);
hsm_result pg_user_auth_result(hsm_store *s, const char *name, bool success, uint32_t lock_after,
                               hsm_user_record *out, bool *locked_now);
hsm_result pg_user_list(hsm_store *s, hsm_user_cb cb, void *arg);
hsm_result pg_access_key_create(hsm_store *s, const hsm_access_key_record *k);
hsm_result pg_access_key_get(hsm_store *s, const char *access_key_id, hsm_access_key_record *out);
hsm_result pg_access_key_set_active(hsm_store *s, const char *access_key_id, bool active);
hsm_result pg_access_key_list(hsm_store *s, const char *user, hsm_access_key_cb cb, void *arg);

hsm_result pg_approval_open(hsm_store *s, const hsm_approval_record *a, hsm_approval_record *out);
hsm_result pg_approval_get(hsm_store *s, const char *id, hsm_approval_record *out);
hsm_result pg_approval_find(hsm_store *s, const char *fingerprint, int64_t now,
                            hsm_approval_record *out);
hsm_result pg_approval_approve(hsm_store *s, const char *id, const char *approver, int64_t now,
                               hsm_approval_record *out);
hsm_result pg_approval_close(hsm_store *s, const char *id, hsm_approval_state to, const char *by,
                             int64_t now, hsm_approval_record *out);
hsm_result pg_approval_reopen(hsm_store *s, const char *id);
hsm_result pg_approval_list(hsm_store *s, bool open_only, int64_t now,
                            const hsm_approval_cursor *after, size_t limit, hsm_approval_cb cb,
                            void *arg, bool *truncated);
hsm_result pg_approval_purge(hsm_store *s, int64_t before, uint64_t *deleted);
hsm_result pg_approval_rewrite(hsm_store *s, hsm_approval_rewrite_fn fn, void *arg,
                               uint64_t *rewritten);

hsm_result pg_export(hsm_store *s, const hsm_store_sink *sink);
hsm_result pg_import(hsm_store *s, hsm_store_producer produce, void *arg);
hsm_result pg_holds_any(hsm_store *s, bool *any);
hsm_result pg_snapshot(hsm_store *s, const char *path);

/*
 * Inserts in's row (store.h, "Audit outbox") inside w's open write
 * transaction, or merges it into the row an earlier transaction of the
 * request committed; *xid: the transaction's id (txid_current()).
 */
hsm_result pg_outbox_insert(pg_conn *w, hsm_store_intent *in, int64_t *xid) HSM_MUST_CHECK;
hsm_result pg_outbox_page(hsm_store *s, const char *node_id, int64_t after_ms,
                          const char *after_id, size_t limit, st_vec *out);
hsm_result pg_outbox_delete(hsm_store *s, const char *node_id, const char *const *request_ids,
                            size_t n);
hsm_result pg_outbox_note(hsm_store *s);
hsm_result pg_outbox_nodes_page(hsm_store *s, const char *after_node, int64_t before_ms,
                                size_t limit, st_vec *out);

#endif
