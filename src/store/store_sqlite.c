/*
 * store_sqlite.c - the embedded SQLite backend: opening, the data-directory
 * lock, connection setup, the read pool and write transactions.
 *
 * Settings (https://www.sqlite.org/pragma.html):
 *   journal_mode=WAL     readers never wait for the writer
 *   synchronous=FULL     a commit is on disk before it is acknowledged, even
 *                        across power loss (NORMAL would only survive kill -9)
 *   foreign_keys=ON      versions, aliases, tags and grants cannot outlive their key
 *   secure_delete=ON     deleted or overwritten bytes are zeroed in the file
 *   busy_timeout         lock waits end in HSM_ERR_DEPENDENCY_TIMEOUT
 *   temp_store=MEMORY    no row data in temporary files, which nothing erases
 *   trusted_schema=OFF, SQLITE_DBCONFIG_DEFENSIVE: a tampered database file
 *                        cannot make SQL functions or schema edits run
 */
#include "store/store_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

/* The store whose write lock this thread holds (catches re-entry from a key_update fn). */
static _Thread_local const sq_store *sq_writing;

static hsm_result join_path(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);
	HSM_ENSURE(n > 0 && (size_t)n < cap, HSM_ERR_VALIDATION, "store directory path is too long");
	return HSM_SUCCESS;
}

/* ---- The data-directory lock ------------------------------------------------------- */

/* Best effort: the pid the holder wrote into the lock file, or 0. */
static long lock_holder(int fd)
{
	char text[32] = {0};
	ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	char *nl = strchr(text, '\n');
	if (nl != NULL)
		*nl = '\0';
	int64_t pid = 0;
	if (hsm_failed(hsm_parse_i64(text, 1, INT32_MAX, &pid)))
		return 0;
	return (long)pid;
}

/*
 * An exclusive, non-blocking flock on DIR/hsmd.lock for the life of the
 * handle: two writers on one SQLite file would each believe they own the
 * schema and the WAL.  flock locks belong to the open file description, so a
 * second handle in this same process is refused too.
 */
static hsm_result lock_directory(const char *dir, int *out)
{
	hsm_result res = HSM_SUCCESS;
	char path[PATH_MAX];
	HSM_GUARD(join_path(path, sizeof(path), dir, "hsmd.lock"));
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot open %s: %s", path, hsm_own_file_error(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;
		HSM_CHECK(err == EWOULDBLOCK, HSM_ERR_IO, "cannot lock %s: %s", path, strerror(err));
		long pid = lock_holder(fd);
		if (pid > 0)
			res = HSM_FAIL(HSM_ERR_CONFLICT, "data directory %s is in use by process %ld", dir,
			               pid);
		else
			res = HSM_FAIL(HSM_ERR_CONFLICT, "data directory %s is in use by another process",
			               dir);
		goto out;
	}
	char text[32];
	int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	HSM_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, text, (size_t)n, 0) == (ssize_t)n,
	          HSM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
	*out = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return res;
}

/*
 * path, where it is, readable and writable by its owner only.  By name, never
 * through a descriptor of its own: closing any descriptor of a file drops every
 * POSIX lock this process holds on it, and SQLite's connections keep theirs on
 * the database and its -shm for as long as they are open (another process that
 * then found the -shm unlocked would take the store for unused and reset it).
 * The data directory is its owner's alone (0700), so the name cannot be swapped.
 */
static hsm_result restrict_file(const char *path)
{
	struct stat st;
	if (lstat(path, &st) != 0) {
		HSM_ENSURE(errno == ENOENT, HSM_ERR_IO, "cannot read %s: %s", path,
		           hsm_own_file_error(errno));
		return HSM_SUCCESS;
	}
	HSM_ENSURE(S_ISREG(st.st_mode), HSM_ERR_IO, "%s is not a regular file", path);
	if ((st.st_mode & 07077) != 0)
		HSM_ENSURE(chmod(path, 0600) == 0, HSM_ERR_IO, "cannot restrict %s to its owner: %s",
		           path, strerror(errno));
	return HSM_SUCCESS;
}

/*
 * The database and the files SQLite keeps beside it (-wal, -shm, and a
 * rollback -journal an older run left), restricted before SQLite opens them:
 * it makes the side files with the database file's mode, and one made while
 * the database was readable by others keeps that mode.
 */
static hsm_result restrict_store_files(const char *db_path)
{
	static const char *const sides[] = {"", "-wal", "-shm", "-journal"};
	for (size_t i = 0; i < sizeof(sides) / sizeof(sides[0]); i++) {
		char path[PATH_MAX];
		int n = snprintf(path, sizeof(path), "%s%s", db_path, sides[i]);
		HSM_ENSURE(n > 0 && (size_t)n < sizeof(path), HSM_ERR_VALIDATION,
		           "the data directory's path is too long");
		HSM_GUARD(restrict_file(path));
	}
	return HSM_SUCCESS;
}

/*
 * Creates the database file with mode 0600 before SQLite opens it: SQLite
 * creates files with 0644 (less the umask) and gives the -wal and -shm files
 * the database file's mode.  An existing one (sq_migrate's, whose writer is
 * open) is restricted by name, as its side files are (restrict_store_files).
 */
static hsm_result prepare_db_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 && errno != EEXIST)
		return HSM_FAIL(HSM_ERR_IO, "cannot open %s: %s", path, hsm_own_file_error(errno));
	if (fd >= 0) { /* new: no connection can hold a lock on it yet */
		int rc = fchmod(fd, 0600);
		int err = errno;
		close(fd);
		HSM_ENSURE(rc == 0, HSM_ERR_IO, "cannot restrict %s to its owner: %s", path,
		           strerror(err));
	}
	return restrict_store_files(path);
}

/* ---- Connections ------------------------------------------------------------------------ */

static void conn_close(sq_conn *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < SQ_STMT_SLOTS; i++)
		sqlite3_finalize(c->stmts[i].st);
	if (sqlite3_close(c->db) != SQLITE_OK)
		hsm_warn("store: closing a connection failed: %s", sqlite3_errmsg(c->db));
	free(c);
}

static hsm_result conn_exec(sq_conn *c, const char *sql)
{
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return sq_fail(c, rc, "configure a connection");
	return HSM_SUCCESS;
}

/* journal_mode answers with the mode in force, which must be WAL. */
static hsm_result conn_set_wal(sq_conn *c)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	bool wal = rc == SQLITE_ROW &&
	           sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
	hsm_result res = HSM_SUCCESS;
	if (rc != SQLITE_ROW)
		res = sq_fail(c, rc, "switch to WAL mode");
	else if (!wal)
		res = HSM_FAIL(HSM_ERR_STORE, "the store's file system does not support WAL mode");
	sqlite3_finalize(st);
	return res;
}

static hsm_result conn_open(const char *path, bool writer, sq_conn **out)
{
	hsm_result res = HSM_SUCCESS;
	sq_conn *c = calloc(1, sizeof(*c));
	HSM_ENSURE(c != NULL, HSM_ERR_NOMEM, "out of memory");
	/* NOMUTEX: each connection is used by one thread at a time (store_sqlite.h). */
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_PRIVATECACHE |
	            SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE;
	int rc = sqlite3_open_v2(path, &c->db, flags, NULL);
	HSM_CHECK(c->db != NULL, HSM_ERR_NOMEM, "out of memory opening the store");
	if (rc != SQLITE_OK) {
		res = sq_fail(c, rc, "open the database");
		goto out;
	}
	sqlite3_busy_timeout(c->db, SQ_BUSY_TIMEOUT_MS);
	HSM_CHECK(sqlite3_db_config(c->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL) == SQLITE_OK &&
	              sqlite3_db_config(c->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL) == SQLITE_OK,
	          HSM_ERR_STORE, "cannot harden the store connection");
	if (writer)
		HSM_TRY(conn_set_wal(c));
	HSM_TRY(conn_exec(c, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
	                     "PRAGMA secure_delete=ON; PRAGMA temp_store=MEMORY;"));
	if (!writer)
		HSM_TRY(conn_exec(c, "PRAGMA query_only=ON;"));
	*out = c;
	c = NULL;
out:
	conn_close(c);
	return res;
}

/* ---- Read pool ------------------------------------------------------------------------------ */

hsm_result sq_read_begin(sq_store *s, sq_conn **out)
{
	pthread_mutex_lock(&s->pool_lock);
	sq_conn *c = s->idle;
	if (c != NULL) {
		s->idle = c->next;
		s->idle_count--;
	}
	pthread_mutex_unlock(&s->pool_lock);
	if (c == NULL)
		HSM_GUARD(conn_open(s->db_path, false, &c));
	c->next = NULL;
	c->corrupt_seen = &s->base.corrupt_seen;
	*out = c;
	return HSM_SUCCESS;
}

void sq_read_end(sq_store *s, sq_conn *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&s->pool_lock);
	bool keep = s->idle_count < SQ_POOL_IDLE_MAX;
	if (keep) {
		c->next = s->idle;
		s->idle = c;
		s->idle_count++;
	}
	pthread_mutex_unlock(&s->pool_lock);
	if (!keep)
		conn_close(c);
}

/* ---- Write transactions ------------------------------------------------------------------------ */

static hsm_result run_cached(sq_conn *c, const char *sql)
{
	sqlite3_stmt *st;
	HSM_GUARD(sq_prepare(c, sql, &st));
	hsm_result res = sq_exec(c, st);
	sq_reset(st);
	return res;
}

static const char SQL_BEGIN[] = "BEGIN IMMEDIATE";
static const char SQL_COMMIT[] = "COMMIT";

hsm_result sq_write_begin(sq_store *s, sq_conn **out)
{
	HSM_ASSERT(sq_writing != s); /* a key_update fn called back into the store */
	pthread_mutex_lock(&s->write_lock);
	sq_writing = s;
	s->writer->corrupt_seen = &s->base.corrupt_seen;
	hsm_result res = run_cached(s->writer, SQL_BEGIN);
	if (hsm_failed(res)) {
		sq_writing = NULL;
		pthread_mutex_unlock(&s->write_lock);
		return res;
	}
	*out = s->writer;
	return HSM_SUCCESS;
}

/*
 * Rolls back whatever is still open.  Uses SQLite directly so a failure here
 * does not overwrite the error that caused the rollback.
 */
static void rollback_if_open(sq_conn *c)
{
	if (sqlite3_get_autocommit(c->db))
		return;
	if (sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
		hsm_warn("store: rollback failed: %s", sqlite3_errmsg(c->db));
}

/*
 * PRAGMA wal_checkpoint(TRUNCATE) as an API call: copies every WAL frame into
 * the database, syncs it and truncates the WAL to zero bytes.  It waits (busy
 * handler) for readers still on older snapshots.
 */
static hsm_result checkpoint_truncate(sq_conn *c, bool wait)
{
	/* An owed scrub tried again at the end of another change does not wait for readers
	 * (a backup's VACUUM INTO, an outside reader): it would hold every write up. */
	if (!wait)
		sqlite3_busy_timeout(c->db, 0);
	int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	if (!wait)
		sqlite3_busy_timeout(c->db, SQ_BUSY_TIMEOUT_MS);
	if (rc != SQLITE_OK)
		return sq_fail(c, rc, "checkpoint the write-ahead log");
	return HSM_SUCCESS;
}

/*
 * The thread's outbox row (store.h, "Audit outbox") goes in just before
 * COMMIT, in the same transaction: a failed insert rolls the change back.
 */
static hsm_result write_finish(sq_store *s, sq_conn *c, hsm_result res, bool scrub)
{
	HSM_ASSERT(c == s->writer && sq_writing == s);
	hsm_store_intent *in = st_intent_pending();
	if (hsm_ok(res) && in != NULL)
		res = sq_outbox_insert(c, in);
	if (hsm_ok(res))
		res = run_cached(c, SQL_COMMIT);
	if (hsm_ok(res) && in != NULL)
		in->written = true;
	rollback_if_open(c);
	/*
	 * The change is committed: a checkpoint that fails now (a full disk: it grows the
	 * database file) must not report it as failed, which the caller would answer and
	 * audit as a change that did not happen.  The erasure of the old bytes is owed,
	 * and tried again at the end of every later write transaction until it is done.
	 */
	if ((hsm_ok(res) && scrub) || s->scrub_owed) {
		if (hsm_failed(checkpoint_truncate(c, hsm_ok(res) && scrub))) {
			if (!s->scrub_owed)
				hsm_warn("store: a change was committed, but the old bytes it replaced stay "
				         "in the write-ahead log until a checkpoint succeeds: %s",
				         hsm_last_message());
			s->scrub_owed = true;
		} else {
			if (s->scrub_owed)
				hsm_info("store: the write-ahead log is checkpointed and emptied again");
			s->scrub_owed = false;
		}
	}
	sq_writing = NULL;
	pthread_mutex_unlock(&s->write_lock);
	return res;
}

hsm_result sq_write_end(sq_store *s, sq_conn *c, hsm_result res)
{
	return write_finish(s, c, res, false);
}

hsm_result sq_write_end_scrub(sq_store *s, sq_conn *c, hsm_result res)
{
	return write_finish(s, c, res, true);
}

/* ---- Snapshot ------------------------------------------------------------------------------- */

/*
 * Approvals are short-lived and no part of copies and backups (store.h), and
 * neither are the last uses of keys and when their recording began, nor the
 * audit outbox (a node's own, until its trail catches up): the copy drops
 * them; every other table stays (certificates too: they are part of
 * backups).  It is a private scratch file, removed on any failure, so it
 * needs no journal beside it and no sync; secure_delete (conn_open) zeroes
 * the pages they held.
 */
/* Whether the database on c has a table of that name: an SQLite result code. */
static int table_exists(sq_conn *c, const char *name, bool *out)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(c->db,
	                            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' "
	                            "AND name = ?1",
	                            -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0) > 0;
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

hsm_result hsm_store_sqlite_drop_transient(const char *path)
{
	static const char begin[] = "PRAGMA query_only=OFF; PRAGMA journal_mode=MEMORY;"
	                            "PRAGMA synchronous=OFF; BEGIN IMMEDIATE;";
	/* A copy of a store at an older schema (hsm_store_open_existing) may lack the tables. */
	static const char *const tables[] = {"approval_votes", "approvals",    "key_usage",
	                                     "usage_tracking", "audit_outbox"};
	sq_conn *c = NULL;
	HSM_GUARD(conn_open(path, false, &c));
	int rc = sqlite3_exec(c->db, begin, NULL, NULL, NULL);
	for (size_t i = 0; rc == SQLITE_OK && i < sizeof(tables) / sizeof(tables[0]); i++) {
		bool there = false;
		rc = table_exists(c, tables[i], &there);
		if (rc == SQLITE_OK && there) {
			char sql[64]; /* the names are the constants above: nothing to quote */
			snprintf(sql, sizeof(sql), "DELETE FROM %s", tables[i]);
			rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
		}
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL);
	hsm_result res = rc == SQLITE_OK ? HSM_SUCCESS : sq_fail(c, rc, "drop what a copy does not carry");
	conn_close(c); /* rolls back what a failure left open */
	return res;
}

/*
 * VACUUM INTO reads the database in one read transaction (a consistent
 * snapshot that the writer does not wait for) and writes a compact copy.  It
 * needs a connection that may write, though only to the new file, so it gets
 * its own connection rather than a pooled query-only one.  The file is made
 * first, empty and with mode 0600, as VACUUM INTO would create it 0644.
 * Then the approvals and key uses leave the copy (hsm_store_sqlite_drop_transient).
 */
static hsm_result sq_snapshot(hsm_store *base, const char *path)
{
	sq_store *s = sq_of(base);
	hsm_result res = HSM_SUCCESS;
	sq_conn *c = NULL;
	sqlite3_stmt *st = NULL;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
	close(fd);
	HSM_TRY(conn_open(s->db_path, false, &c));
	HSM_TRY(conn_exec(c, "PRAGMA query_only=OFF;"));
	int rc = sqlite3_prepare_v2(c->db, "VACUUM INTO ?1", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		res = sq_fail(c, rc, "copy the store");
	else
		res = hsm_store_sqlite_drop_transient(path);
out:
	sqlite3_finalize(st);
	conn_close(c);
	if (hsm_failed(res))
		unlink(path);
	return res;
}

/* ---- Open and close ---------------------------------------------------------------------------- */

static void sq_close(hsm_store *base)
{
	sq_store *s = sq_of(base);
	while (s->idle != NULL) {
		sq_conn *c = s->idle;
		s->idle = c->next;
		conn_close(c);
	}
	/* The writer goes last: the last connection to close checkpoints the WAL. */
	conn_close(s->writer);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* releases the flock; the file stays for the next holder */
	pthread_mutex_destroy(&s->write_lock);
	pthread_mutex_destroy(&s->pool_lock);
	free(s);
}

/*
 * hsm_store_migrate: the steps hsm_store_sqlite_open_mode's MIGRATE mode
 * would have run, on the writer the handle opened as it is; the file is
 * restricted to its owner as that mode does.
 */
static hsm_result sq_migrate(hsm_store *base)
{
	sq_store *s = sq_of(base);
	HSM_GUARD(prepare_db_file(s->db_path));
	pthread_mutex_lock(&s->write_lock);
	hsm_result r = sq_schema_migrate(s->writer, &s->schema_version, &s->base.migrated_from);
	pthread_mutex_unlock(&s->write_lock);
	HSM_GUARD(r);
	return hsm_fsync_dir(s->dir);
}

static int sq_schema_version_op(hsm_store *base)
{
	return sq_of(base)->schema_version;
}

/* quick_check answers one row "ok", or a row per problem (the first is enough to name). */
static hsm_result sq_check(hsm_store *base)
{
	sq_store *s = sq_of(base);
	sq_conn *c = NULL;
	sqlite3_stmt *st = NULL;
	const char *verdict = NULL;
	hsm_result res = HSM_SUCCESS;
	HSM_GUARD(sq_read_begin(s, &c));
	int rc = sqlite3_prepare_v2(c->db, "PRAGMA quick_check(1)", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		res = sq_fail(c, rc, "check the database"); /* a damaged header fails here */
		goto out;
	}
	if (rc == SQLITE_ROW)
		verdict = (const char *)sqlite3_column_text(st, 0);
	HSM_CHECK(verdict != NULL && strcmp(verdict, "ok") == 0, HSM_ERR_STORE, "%s is damaged: %.200s",
	          s->db_path, verdict != NULL ? verdict : "quick_check gave no answer");
out:
	sqlite3_finalize(st);
	sq_read_end(s, c);
	return res;
}

/* The directory lock makes this process the store's only user: it leads when it wants to. */
static hsm_result sq_lead(hsm_store *base, bool want, uint32_t lease_ms, bool *leading)
{
	(void)base, (void)lease_ms;
	*leading = want;
	return HSM_SUCCESS;
}

/* The directory lock already keeps every other process out of this store. */
static hsm_result sq_claim_node(hsm_store *base, const char *node_id, bool *adopting)
{
	(void)base;
	(void)node_id;
	*adopting = false;
	return HSM_SUCCESS;
}

/*
 * The directory lock keeps every other process out of this store, so no
 * node runs under any id but this one's: holding one needs nothing more.
 */
static hsm_result sq_node_hold(hsm_store *base, const char *node_id, void **session, bool *held)
{
	(void)base;
	(void)node_id;
	*session = NULL;
	*held = true;
	return HSM_SUCCESS;
}

static hsm_result sq_node_hold_check(hsm_store *base, void *session)
{
	(void)base;
	(void)session;
	return HSM_SUCCESS;
}

static void sq_node_hold_release(hsm_store *base, void *session, const char *node_id)
{
	(void)base;
	(void)session;
	(void)node_id;
}

static const hsm_store_ops sqlite_ops = {
	.name = "sqlite",
	.close = sq_close,
	.schema_version = sq_schema_version_op,
	.schema_latest = hsm_store_sqlite_schema_latest,
	.claim_node = sq_claim_node,
	.migrate = sq_migrate,
	.check = sq_check,
	.meta_get = sq_meta_get,
	.meta_put = sq_meta_put,
	.rekey = sq_rekey,
	.key_create = sq_key_create,
	.key_get = sq_key_get,
	.keys_get = sq_keys_get,
	.key_update = sq_key_update,
	.key_destroy = sq_key_destroy,
	.key_set_material = sq_key_set_material,
	.key_promote = sq_key_promote,
	.key_list = sq_key_list,
	.jwt_key_list = sq_jwt_key_list,
	.key_count = sq_key_count,
	.snapshot = sq_snapshot,
	.snapshot_schema = sq_schema_version_op, /* a copy of the file: its schema */
	.lead = sq_lead,
	.keys_due = sq_keys_due,
	.keys_due_count = sq_keys_due_count,
	.version_get = sq_version_get,
	.version_list = sq_version_list,
	.alias_create = sq_alias_create,
	.alias_update = sq_alias_update,
	.alias_delete = sq_alias_delete,
	.alias_get = sq_alias_get,
	.alias_list = sq_alias_list,
	.alias_delete_for_key = sq_alias_delete_for_key,
	.tags_put = sq_tags_put,
	.tags_remove = sq_tags_remove,
	.tags_list = sq_tags_list,
	.grant_create = sq_grant_create,
	.grant_get = sq_grant_get,
	.grant_delete = sq_grant_delete,
	.grant_fits = sq_grant_fits,
	.grant_list = sq_grant_list,
	.grant_list_retiring = sq_grant_list_retiring,
	.cert_create = sq_cert_create,
	.cert_get = sq_cert_get,
	.cert_delete = sq_cert_delete,
	.cert_list = sq_cert_list,
	.cert_count = sq_cert_count,
	.cert_count_expiring = sq_cert_count_expiring,
	.usage_put = sq_usage_put,
	.usage_get = sq_usage_get,
	.usage_since = sq_usage_since,
	.user_create = sq_user_create,
	.user_get = sq_user_get,
	.user_put = sq_user_put,
	.user_change = sq_user_change,
	.user_auth_result = sq_user_auth_result,
	.user_list = sq_user_list,
	.access_key_create = sq_access_key_create,
	.access_key_get = sq_access_key_get,
	.access_key_set_active = sq_access_key_set_active,
	.access_key_list = sq_access_key_list,
	.approval_open = sq_approval_open,
	.approval_get = sq_approval_get,
	.approval_find = sq_approval_find,
	.approval_approve = sq_approval_approve,
	.approval_close = sq_approval_close,
	.approval_reopen = sq_approval_reopen,
	.approval_list = sq_approval_list,
	.approval_purge = sq_approval_purge,
	.approval_rewrite = sq_approval_rewrite,
	.export_all = sq_export,
	.import_all = sq_import,
	.holds_any = sq_holds_any,
	.outbox_page = sq_outbox_page,
	.outbox_delete = sq_outbox_delete,
	.outbox_note = sq_outbox_note,
	.outbox_nodes_page = sq_outbox_nodes_page,
	.node_hold = sq_node_hold,
	.node_hold_check = sq_node_hold_check,
	.node_hold_release = sq_node_hold_release,
};

static hsm_result store_alloc(sq_store **out)
{
	/* Connections are shared across threads (one at a time): SQLite must be thread-safe. */
	HSM_ENSURE(sqlite3_threadsafe() != 0, HSM_ERR_STORE,
	           "the SQLite library was built without thread support");
	sq_store *s = calloc(1, sizeof(*s));
	HSM_ENSURE(s != NULL, HSM_ERR_NOMEM, "out of memory");
	s->base.ops = &sqlite_ops;
	s->lock_fd = -1;
	pthread_mutex_init(&s->write_lock, NULL);
	pthread_mutex_init(&s->pool_lock, NULL);
	*out = s;
	return HSM_SUCCESS;
}

/*
 * HSM_STORE_EXISTING: the database file must be there before anything is
 * made (a mistyped directory gets no hsmd.lock, hsmd.db or directory), and
 * its schema is read, not migrated.
 */
static hsm_result open_existing(sq_store *s, const char *dir)
{
	struct stat st;
	HSM_ENSURE(stat(s->db_path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0,
	           HSM_ERR_NOT_FOUND, "no hsmd store in %s (no " HSM_STORE_DB_FILE " there)", dir);
	HSM_GUARD(lock_directory(dir, &s->lock_fd));
	HSM_GUARD(restrict_store_files(s->db_path));
	HSM_GUARD(conn_open(s->db_path, true, &s->writer));
	return sq_schema_read(s->writer, dir, &s->schema_version);
}

hsm_result hsm_store_sqlite_open_mode(const char *dir, hsm_store_open_mode mode, hsm_store **out)
{
	HSM_ASSERT(dir != NULL && out != NULL);
	hsm_result res = HSM_SUCCESS;
	sq_store *s = NULL;
	HSM_TRY(store_alloc(&s));
	HSM_TRY(hsm_strcpy(s->dir, sizeof(s->dir), dir));
	HSM_TRY(join_path(s->db_path, sizeof(s->db_path), dir, HSM_STORE_DB_FILE));
	if (mode == HSM_STORE_EXISTING) {
		HSM_TRY(open_existing(s, dir));
	} else {
		HSM_TRY(hsm_mkdir_p(dir));
		HSM_TRY(lock_directory(dir, &s->lock_fd));
		HSM_TRY(prepare_db_file(s->db_path));
		HSM_TRY(conn_open(s->db_path, true, &s->writer));
		HSM_TRY(sq_schema_migrate(s->writer, &s->schema_version, &s->base.migrated_from));
		/* The database, -wal and -shm files may be new: make their directory entries durable. */
		HSM_TRY(hsm_fsync_dir(dir));
	}
	*out = &s->base;
	s = NULL;
out:
	if (s != NULL)
		sq_close(&s->base);
	return res;
}

hsm_result hsm_store_sqlite_open(const char *dir, hsm_store **out)
{
	return hsm_store_sqlite_open_mode(dir, HSM_STORE_MIGRATE, out);
}
