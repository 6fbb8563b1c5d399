/*
 * store_pg.c - the PostgreSQL backend: opening, the connection pool,
 * reconnection and transactions (design notes in store_pg.h).
 *
 * Location: a libpq connection URI, "postgresql://user:password@host:port/db"
 * or "postgres://...", with any libpq parameter in its query string
 * (https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING).
 * Defaults the URI may override: connect_timeout=5,
 * target_session_attrs=read-write (after a failover, only the new primary is
 * accepted), and TCP keepalives and a user timeout (store_pg.h,
 * PG_KEEPALIVE_IDLE_S).  application_name is imposed, "hsmd" (the node id's
 * session renames itself "hsmd node <id>"): a rekey tells hsmd's sessions by
 * it, so a URI's own is ignored.  The URI may hold the password: it is kept
 * only to reconnect and appears in no message.
 */
#include "store/store_pg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "common/log.h"

/* The store whose write transaction this thread is inside (catches re-entry from a key_update fn). */
static _Thread_local const pg_store *pg_writing;

/* ---- Connections ------------------------------------------------------------------------- */

static void conn_close(pg_conn *c)
{
	if (c == NULL)
		return;
	PQfinish(c->db);
	free(c);
}

/* libpq's message for a failed connection, first line only (it never holds the password). */
static hsm_result connect_failure(PGconn *db)
{
	char msg[160];
	const char *text = db != NULL ? PQerrorMessage(db) : "out of memory";
	snprintf(msg, sizeof(msg), "%s", text);
	msg[strcspn(msg, "\n")] = '\0';
	if (strstr(text, "timeout expired") != NULL)
		return HSM_FAIL(HSM_ERR_DEPENDENCY_TIMEOUT, HSM_STORE_CONNECT_FAILED ": %s", msg);
	return HSM_FAIL(HSM_ERR_STORE, HSM_STORE_CONNECT_FAILED ": %s", msg);
}

/*
 * Session settings.  Timeouts turn waits into DEPENDENCY_TIMEOUT; the
 * commit level is raised to on where the server's default is off, and never
 * lowered (a server may require remote_apply from its synchronous standbys).
 */
#define STR_(x) #x
#define STR(x) STR_(x)
static const char SQL_SESSION[] =
	"SET statement_timeout = " STR(PG_STATEMENT_TIMEOUT_MS) ";"
	"SET lock_timeout = " STR(PG_LOCK_TIMEOUT_MS) ";"
	"SET idle_in_transaction_session_timeout = " STR(PG_IDLE_TX_TIMEOUT_MS) ";"
	"SET tcp_keepalives_idle = " PG_KEEPALIVE_IDLE_S ";"
	"SET tcp_keepalives_interval = " PG_KEEPALIVE_INTERVAL_S ";"
	"SET tcp_keepalives_count = " PG_KEEPALIVE_COUNT ";"
	"SET tcp_user_timeout = " PG_TCP_USER_TIMEOUT_MS ";"
	"SET default_transaction_isolation = 'read committed';"
	"SET client_min_messages = warning;"
	"SELECT set_config('synchronous_commit', 'on', false)"
	" WHERE current_setting('synchronous_commit') = 'off'";

/*
 * libpq prints server notices and warnings on stderr by default; the store's
 * own statements cause none worth an operator's attention (and a notice may
 * quote values), so they are dropped.
 */
static void drop_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static hsm_result conn_open(const pg_store *s, pg_conn **out)
{
	hsm_result res = HSM_SUCCESS;
	pg_conn *c = calloc(1, sizeof(*c));
	HSM_ENSURE(c != NULL, HSM_ERR_NOMEM, "out of memory");
	/*
	 * Keywords before dbname are defaults the URI overrides (the URI is
	 * expanded where dbname appears); those after it are imposed.
	 */
	const char *const keys[] = {"connect_timeout",  "target_session_attrs", "keepalives",
	                            "keepalives_idle",  "keepalives_interval",  "keepalives_count",
	                            "tcp_user_timeout", "dbname",               "client_encoding",
	                            "application_name", NULL};
	const char *const values[] = {PG_CONNECT_TIMEOUT_S,    "read-write",
	                              "1",                     PG_KEEPALIVE_IDLE_S,
	                              PG_KEEPALIVE_INTERVAL_S, PG_KEEPALIVE_COUNT,
	                              PG_TCP_USER_TIMEOUT_MS,  s->conninfo,
	                              "UTF8",                  PG_APP_NAME,
	                              NULL};
	c->db = PQconnectdbParams(keys, values, 1);
	if (c->db == NULL || PQstatus(c->db) != CONNECTION_OK) {
		res = connect_failure(c->db);
		goto out;
	}
	/*
	 * The leadership's lease and the adoption hold end an idle session by
	 * idle_session_timeout, which older servers lack: refused at once, not
	 * every scheduler round.
	 */
	const char *version = PQparameterStatus(c->db, "server_version");
	HSM_CHECK(PQserverVersion(c->db) >= PG_SERVER_VERSION_MIN, HSM_ERR_STORE,
	          "the PostgreSQL server is version %.32s: hsmd needs %d or later",
	          version != NULL ? version : "unknown", PG_SERVER_VERSION_MIN / 10000);
	PQsetNoticeProcessor(c->db, drop_notice, NULL);
	/* Sending never blocks either: every wait is await_result's, with its deadline. */
	HSM_CHECK(PQsetnonblocking(c->db, 1) == 0, HSM_ERR_STORE,
	          "cannot make the PostgreSQL connection non-blocking");
	HSM_TRY(pg_simple(c, SQL_SESSION, "configure a connection"));
	c->ok = 0;
	*out = c;
	c = NULL;
out:
	conn_close(c);
	return res;
}

/* ---- The pool -------------------------------------------------------------------------------- */

static void deadline_after_ms(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/*
 * An idle connection, else a new one while fewer than PG_POOL_MAX are open,
 * else waits up to PG_POOL_WAIT_MS for one to come back.
 */
static hsm_result pool_get(pg_store *s, pg_conn **out)
{
	struct timespec deadline;
	deadline_after_ms(&deadline, PG_POOL_WAIT_MS);
	pthread_mutex_lock(&s->pool_lock);
	while (s->idle == NULL && s->open_count >= PG_POOL_MAX) {
		int rc = pthread_cond_timedwait(&s->pool_free, &s->pool_lock, &deadline);
		if (rc == ETIMEDOUT && s->idle == NULL && s->open_count >= PG_POOL_MAX) {
			pthread_mutex_unlock(&s->pool_lock);
			return HSM_FAIL(HSM_ERR_DEPENDENCY_TIMEOUT,
			                "all %d PostgreSQL connections stayed busy beyond %d ms",
			                PG_POOL_MAX, PG_POOL_WAIT_MS);
		}
	}
	pg_conn *c = s->idle;
	if (c != NULL) {
		s->idle = c->next;
		pthread_mutex_unlock(&s->pool_lock);
		c->next = NULL;
		c->ok = 0;
		*out = c;
		return HSM_SUCCESS;
	}
	s->open_count++; /* reserved while connecting outside the lock */
	pthread_mutex_unlock(&s->pool_lock);
	hsm_result res = conn_open(s, &c);
	if (hsm_failed(res)) {
		pthread_mutex_lock(&s->pool_lock);
		s->open_count--;
		pthread_cond_signal(&s->pool_free);
		pthread_mutex_unlock(&s->pool_lock);
		return res;
	}
	*out = c;
	return HSM_SUCCESS;
}

/*
 * Returns c to the pool, or closes it when broken or left inside a
 * transaction.  A connection that lost its server usually means the server
 * restarted or failed over, so the idle ones are closed with it: they would
 * fail the same way, and a retry must get a fresh connection, not the next
 * dead one.
 */
static void pool_put(pg_store *s, pg_conn *c)
{
	bool keep = !c->broken && PQstatus(c->db) == CONNECTION_OK &&
	            PQtransactionStatus(c->db) == PQTRANS_IDLE;
	pg_conn *stale = NULL;
	if (!keep)
		conn_close(c);
	pthread_mutex_lock(&s->pool_lock);
	if (keep) {
		c->next = s->idle;
		s->idle = c;
	} else {
		s->open_count--;
		stale = s->idle;
		s->idle = NULL;
		for (pg_conn *i = stale; i != NULL; i = i->next)
			s->open_count--;
	}
	pthread_cond_broadcast(&s->pool_free);
	pthread_mutex_unlock(&s->pool_lock);
	while (stale != NULL) {
		pg_conn *next = stale->next;
		conn_close(stale);
		stale = next;
	}
}

/* ---- Transactions ------------------------------------------------------------------------------ */

/*
 * Whether a failed attempt may be repeated on a fresh connection: only when
 * the connection turned out dead before any statement succeeded on it, so
 * nothing of the attempt can have taken effect.
 */
static bool may_retry(const pg_conn *c, hsm_result res, int attempt)
{
	/* Not after a timeout: the server may be frozen, and the caller has waited enough. */
	return hsm_failed(res) && c->broken && !c->late && c->ok == 0 && attempt == 0;
}

hsm_result pg_read(pg_store *s, pg_body body, void *arg)
{
	for (int attempt = 0;; attempt++) {
		pg_conn *c;
		HSM_GUARD(pool_get(s, &c));
		hsm_result res = body(c, arg);
		bool retry = may_retry(c, res, attempt);
		pool_put(s, c);
		if (!retry)
			return res;
		hsm_debug("store: PostgreSQL connection lost; retrying the read on a new one");
	}
}

/* Rolls back whatever is open, through libpq directly so the body's error is kept. */
static void rollback_if_open(pg_conn *c)
{
	if (c->broken || PQtransactionStatus(c->db) == PQTRANS_IDLE)
		return;
	PGresult *r = pg_exec_raw(c, "ROLLBACK");
	if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK)
		c->broken = true; /* not reused in an unknown state */
	PQclear(r);
}

/*
 * *unanswered: the COMMIT's own answer never came, so its outcome is
 * unknown: no result (a lost connection, no answer in time), or a failure
 * libpq made up itself, without the server's SQLSTATE (as when it ran out of
 * memory reading the answer).  Such a connection is not used again.
 */
static hsm_result commit(pg_conn *c, bool *unanswered)
{
	PGresult *r = pg_exec_raw(c, "COMMIT");
	hsm_result res = HSM_SUCCESS;
	*unanswered = r == NULL || (PQresultStatus(r) != PGRES_COMMAND_OK &&
	                            PQresultErrorField(r, PG_DIAG_SQLSTATE) == NULL);
	if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK)
		res = pg_fail(c, r, "commit a transaction");
	else
		c->ok++;
	PQclear(r);
	*unanswered |= c->broken;
	if (*unanswered)
		c->broken = true;
	if (hsm_failed(res) && c->late)
		return HSM_FAIL(HSM_ERR_DEPENDENCY_TIMEOUT,
		                "PostgreSQL did not answer the COMMIT within %d s: the change may or "
		                "may not have been applied",
		                PG_CLIENT_TIMEOUT_MS / 1000);
	if (hsm_failed(res) && c->broken)
		return HSM_FAIL(HSM_ERR_STORE, "lost the connection to PostgreSQL during COMMIT: the "
		                               "change may or may not have been applied");
	return res;
}

/* How long a lost COMMIT's transaction is waited for to end, and how often it is asked. */
#define SETTLE_WAIT_MS PG_STATEMENT_TIMEOUT_MS
#define SETTLE_POLL_MS 20

static const char SQL_XACT_STATUS[] = "SELECT txid_status($1)";

/*
 * xid's outcome, asked on c: "committed", "aborted" or "in progress" (or ""
 * when the server no longer knows: too old).
 */
static hsm_result xact_status(pg_conn *c, int64_t xid, char *out, size_t cap)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_i64(&p, xid);
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_XACT_STATUS, &p, &r));
	hsm_result res = HSM_SUCCESS;
	if (PQntuples(r) != 1)
		res = pg_corrupt("no row");
	else if (PQgetisnull(r, 0, 0))
		out[0] = '\0';
	else
		res = pg_col_text(r, 0, 0, out, cap);
	PQclear(r);
	return res;
}

/*
 * A COMMIT was sent and its answer never came (the connection broke, or the
 * answer could not be read for want of memory): the change may or may not
 * have been applied.  The transaction's own id (xid, from its outbox row's
 * insert) says which once it has ended, asked on another connection, so the
 * request is neither answered nor recorded as failed when its change was
 * made, nor as made when it was not (an earlier transaction of the same
 * request, its authentication's, may have committed the row it merged into).
 * *settled: the outcome is known; unknown stays unknown when asking fails or
 * the transaction has not ended within SETTLE_WAIT_MS.
 */
static hsm_result resolve_commit(pg_store *s, int64_t xid, hsm_result failed, bool *settled)
{
	char why[HSM_ERRMSG_MAX];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	*settled = false;
	pg_conn *c;
	if (hsm_failed(pool_get(s, &c)))
		return HSM_FAIL(failed.err, "%s", why);
	char status[32] = "";
	hsm_result r = HSM_SUCCESS;
	for (int waited = 0;; waited += SETTLE_POLL_MS) {
		r = xact_status(c, xid, status, sizeof(status));
		if (hsm_failed(r) || strcmp(status, "in progress") != 0 || waited >= SETTLE_WAIT_MS)
			break;
		struct timespec pause = {0, SETTLE_POLL_MS * 1000000L};
		nanosleep(&pause, NULL);
	}
	rollback_if_open(c);
	pool_put(s, c);
	if (hsm_failed(r) || (strcmp(status, "committed") != 0 && strcmp(status, "aborted") != 0))
		return HSM_FAIL(failed.err, "%s", why);
	*settled = true;
	if (strcmp(status, "committed") == 0) {
		hsm_warn("store: the answer to a COMMIT was lost (%s); the change was applied", why);
		return HSM_SUCCESS;
	}
	return HSM_FAIL(failed.err, "the answer to a COMMIT was lost, and the change was not applied");
}

/*
 * body inside begin ... COMMIT.  A write (outbox) carries the thread's
 * outbox row (store.h, "Audit outbox"), inserted just before COMMIT in the
 * same transaction: a failed insert rolls the change back.  written is set
 * only once the COMMIT succeeded, or was found to have (resolve_commit); a
 * COMMIT whose outcome stays unknown leaves it as it was and sets uncertain.
 */
static const char SQL_XACT_ID[] = "SELECT txid_current()";

/* The id of c's open transaction (a write's: it has one once it wrote). */
static hsm_result xact_id(pg_conn *c, int64_t *xid)
{
	PGresult *r = NULL;
	HSM_GUARD(pg_run(c, SQL_XACT_ID, NULL, &r));
	hsm_result res = PQntuples(r) == 1 ? pg_col_i64(r, 0, 0, xid) : pg_corrupt("no row");
	PQclear(r);
	return res;
}

static hsm_result transaction(pg_store *s, const char *begin, bool outbox, pg_body body,
                              void *arg)
{
	/* in: the request's row, not yet committed; of, the request, written or not (the
	 * second write of a request that waited for approval: its first closed the approval). */
	hsm_store_intent *in = outbox ? st_intent_pending() : NULL;
	hsm_store_intent *of = outbox ? hsm_store_intent_current() : NULL;
	for (int attempt = 0;; attempt++) {
		pg_conn *c;
		HSM_GUARD(pool_get(s, &c));
		hsm_result res = pg_simple(c, begin, "begin a transaction");
		if (hsm_failed(res)) {
			bool retry = may_retry(c, res, attempt);
			pool_put(s, c);
			if (retry)
				continue;
			return res;
		}
		res = body(c, arg);
		int64_t xid = 0;
		if (hsm_ok(res) && in != NULL)
			res = pg_outbox_insert(c, in, &xid);
		else if (hsm_ok(res) && of != NULL)
			res = xact_id(c, &xid);
		/* A COMMIT that failed with an answer (a serialization failure) did nothing. */
		bool unanswered = false;
		if (hsm_ok(res))
			res = commit(c, &unanswered);
		/* Not after a timeout: asking would wait as long again on a frozen server. */
		bool resolvable = unanswered && !c->late && of != NULL;
		rollback_if_open(c);
		pool_put(s, c);
		bool settled = !unanswered;
		if (hsm_failed(res) && resolvable)
			res = resolve_commit(s, xid, res, &settled);
		if (hsm_ok(res) && in != NULL)
			in->written = true;
		if (!settled && of != NULL)
			of->uncertain = true;
		return res;
	}
}

hsm_result pg_write(pg_store *s, pg_body body, void *arg)
{
	HSM_ASSERT(pg_writing != s); /* a key_update fn called back into the store */
	pg_writing = s;
	hsm_result res = transaction(s, "BEGIN", true, body, arg);
	pg_writing = NULL;
	return res;
}

hsm_result pg_read_snapshot(pg_store *s, pg_body body, void *arg)
{
	return transaction(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", false, body, arg);
}

size_t pg_own_sessions(pg_store *s, int *pids, size_t cap)
{
	size_t n = 0;
	pthread_mutex_lock(&s->pool_lock);
	for (pg_conn *c = s->idle; c != NULL && n < cap; c = c->next)
		pids[n++] = PQbackendPID(c->db);
	pthread_mutex_unlock(&s->pool_lock);
	pthread_mutex_lock(&s->lead_lock);
	if (s->lead != NULL && n < cap)
		pids[n++] = PQbackendPID(s->lead->db);
	pthread_mutex_unlock(&s->lead_lock);
	pthread_mutex_lock(&s->node_lock);
	if (s->node != NULL && n < cap)
		pids[n++] = PQbackendPID(s->node->db);
	pthread_mutex_unlock(&s->node_lock);
	return n;
}

/* ---- Open and close ---------------------------------------------------------------------------- */

/* ---- Leadership -------------------------------------------------------------------------------- */

static const char SQL_LEAD_TRY[] = "SELECT pg_try_advisory_lock(" PG_LEAD_LOCK ")";
static const char SQL_LEAD_RELEASE[] = "SELECT pg_advisory_unlock(" PG_LEAD_LOCK ")";

static void lead_drop(pg_store *s)
{
	conn_close(s->lead); /* ending the session releases the lock */
	s->lead = NULL;
	s->leading = false;
}

/*
 * Leadership given up on purpose: unlock before closing, so the next node
 * to ask takes over at once.  Closing alone frees the lock only when the
 * server's backend has exited, a moment later; if the unlock fails (the
 * session is already gone), that exit frees it all the same.
 */
static void lead_release(pg_store *s)
{
	if (s->lead != NULL && s->leading) {
		hsm_result r = pg_simple(s->lead, SQL_LEAD_RELEASE, "release leadership");
		if (hsm_failed(r))
			hsm_log_failure("leadership is freed when the session ends instead");
	}
	lead_drop(s);
}

/*
 * A node whose build is older than the store's schema (a newer node migrated
 * it during an upgrade of the cluster) must not run the scheduled work: its
 * backups would leave out what it does not know.  The leadership session
 * reads the version on each pass anyway (the round trip that proves it
 * alive), so a node steps down within one pass of the migration.
 */
static hsm_result lead_check_schema(pg_store *s, bool *gone)
{
	int64_t current = 0;
	hsm_result r = pg_schema_current(s->lead, &current);
	*gone = hsm_failed(r);
	HSM_GUARD(r);
	return pg_schema_not_newer(current, ": it does not run scheduled work meanwhile");
}

static hsm_result lead_try(pg_store *s, uint32_t lease_ms)
{
	if (s->lead != NULL) {
		/* A round trip proves the session, and so the lock it holds, still lives. */
		bool gone = false;
		hsm_result r = lead_check_schema(s, &gone);
		if (gone) {
			lead_drop(s);
		} else if (hsm_failed(r)) {
			lead_release(s);
			return r;
		}
	}
	if (s->lead == NULL) {
		HSM_GUARD(conn_open(s, &s->lead));
		/* A lease: the lock lives only as long as the leader keeps proving itself. */
		char sql[64];
		snprintf(sql, sizeof(sql), "SET idle_session_timeout = %" PRIu32, lease_ms);
		hsm_result r = pg_simple(s->lead, sql, "limit the leadership session's idle time");
		if (hsm_failed(r)) {
			lead_drop(s);
			return r;
		}
	}
	if (s->leading)
		return HSM_SUCCESS;
	bool gone = false;
	hsm_result r = lead_check_schema(s, &gone);
	if (hsm_failed(r)) {
		lead_drop(s);
		return r;
	}
	PGresult *res = NULL;
	r = pg_run(s->lead, SQL_LEAD_TRY, NULL, &res);
	if (hsm_ok(r))
		r = pg_col_bool(res, 0, 0, &s->leading);
	PQclear(res);
	if (hsm_failed(r))
		lead_drop(s);
	return r;
}

static hsm_result pg_lead(hsm_store *base, bool want, uint32_t lease_ms, bool *leading)
{
	pg_store *s = pg_of(base);
	hsm_result r = HSM_SUCCESS;
	pthread_mutex_lock(&s->lead_lock);
	if (!want)
		lead_release(s);
	else
		r = lead_try(s, lease_ms);
	*leading = hsm_ok(r) && s->leading;
	pthread_mutex_unlock(&s->lead_lock);
	return r;
}

/* ---- This node's id ----------------------------------------------------------------------------- */

/*
 * A node id is claimed under two session advisory locks on a session of
 * its own:
 *  - pg_try_advisory_lock(int8) on pg_node_lock_key64: 63 bits, so two ids
 *    meet on it about once in 2^63;
 *  - pg_try_advisory_lock(int4, int4) on "HSMN" and pg_node_lock_key (31
 *    bits), the only one of earlier releases, so that a node of an earlier
 *    release and one of this release never both run with one id.
 * Two ids meet on the 31-bit key about once in 2^31 pairs: the second to
 * start then holds only its 63-bit key, once the 31-bit one's holder has
 * named itself with another id ("hsmd node <id>", "hsmd adopting <id>").
 */
static const char SQL_NODE_NAME[] = "SELECT set_config('application_name', $1, false)";
static const char SQL_NODE_TRY[] = "SELECT pg_try_advisory_lock($1::int8)";
static const char SQL_NODE_RELEASE[] = "SELECT pg_advisory_unlock($1::int8)";
static const char SQL_NODE_TRY_OLD[] =
    "SELECT pg_try_advisory_lock(" PG_NODE_LOCK_CLASS ", $1::int4)";
static const char SQL_NODE_RELEASE_OLD[] =
    "SELECT pg_advisory_unlock(" PG_NODE_LOCK_CLASS ", $1::int4)";
static const char SQL_NODE_ALIVE[] = "SELECT 1";
/*
 * Who holds a lock, as pg_locks shows it ($1 classid, $2 objid, $3
 * objsubid): pg_locks shows every session's locks, those of the same lock
 * in other databases (other stores) too; pg_stat_activity hides others'
 * roles' details.
 */
static const char SQL_NODE_HOLDER[] =
    "SELECT l.pid, coalesce(host(a.client_addr), ''), coalesce(a.application_name, '') "
    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.classid = $1::int8::oid "
    "AND l.objid = $2::int8::oid AND l.objsubid = $3::int2 AND l.granted "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1";

/* FNV-1a (32 bits) of the id, its sign bit cleared.  Fixed for good: nodes of all builds meet on it. */
int32_t pg_node_lock_key(const char *node_id)
{
	uint32_t h = 2166136261U;
	for (const unsigned char *p = (const unsigned char *)node_id; *p != '\0'; p++)
		h = (h ^ *p) * 16777619U;
	return (int32_t)(h & 0x7fffffffU);
}

/*
 * FNV-1a (64 bits) of the id, its top bit set: pg_locks shows it with a
 * classid (its upper half) of 2^31 or more, which the one-key leadership and
 * schema locks (under 2^31) never have.  Fixed for good, like the above.
 */
int64_t pg_node_lock_key64(const char *node_id)
{
	uint64_t h = 14695981039346656037U;
	for (const unsigned char *p = (const unsigned char *)node_id; *p != '\0'; p++)
		h = (h ^ *p) * 1099511628211U;
	return (int64_t)(h & (uint64_t)INT64_MAX) + INT64_MIN; /* the top bit set, as an int8 */
}

/* A node id's two keys as SQL parameters, and how pg_locks shows each. */
typedef struct node_keys {
	char key[24], key_hi[16], key_lo[16]; /* pg_node_lock_key64; its classid, objid */
	char old[16];                         /* pg_node_lock_key; classid "HSMN" */
} node_keys;

static void node_keys_of(const char *node_id, node_keys *k)
{
	int64_t key = pg_node_lock_key64(node_id);
	uint64_t u = (uint64_t)key;
	snprintf(k->key, sizeof(k->key), "%" PRId64, key);
	snprintf(k->key_hi, sizeof(k->key_hi), "%" PRIu64, u >> 32);
	snprintf(k->key_lo, sizeof(k->key_lo), "%" PRIu64, u & 0xffffffffU);
	snprintf(k->old, sizeof(k->old), "%d", (int)pg_node_lock_key(node_id));
}

static void node_drop(pg_store *s)
{
	conn_close(s->node); /* ending the session releases the lock */
	s->node = NULL;
}

/* What a node names its id's session, and an adoption hold (pg_node_hold) its own: the id follows. */
#define PG_NODE_APP PG_APP_NAME " node "
#define PG_NODE_HOLD_APP PG_APP_NAME " adopting "
/* How much of the id the names hold (application_name keeps 63 bytes). */
#define PG_NODE_APP_ID "%.48s"

/* The session holding a lock, as far as this role may see it; seen false: none. */
typedef struct node_holder {
	bool seen;
	int32_t pid;
	char addr[64], app[96];
} node_holder;

static void node_holder_find(pg_conn *c, const char *classid, const char *objid,
                             const char *objsubid, node_holder *h)
{
	*h = (node_holder){0};
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, classid);
	pg_p_text(&p, objid);
	pg_p_text(&p, objsubid);
	PGresult *res = NULL;
	if (hsm_ok(pg_run(c, SQL_NODE_HOLDER, &p, &res)) && PQntuples(res) == 1) {
		h->seen = true;
		if (hsm_failed(pg_col_i32(res, 0, 0, &h->pid)) ||
		    hsm_failed(pg_col_text(res, 0, 1, h->addr, sizeof(h->addr))) ||
		    hsm_failed(pg_col_text(res, 0, 2, h->app, sizeof(h->app))))
			h->pid = 0;
	}
	PQclear(res);
}

/* The id a session's name says it holds, NULL when it names none. */
static const char *node_id_named(const char *app)
{
	if (strncmp(app, PG_NODE_APP, sizeof(PG_NODE_APP) - 1) == 0)
		return app + sizeof(PG_NODE_APP) - 1;
	if (strncmp(app, PG_NODE_HOLD_APP, sizeof(PG_NODE_HOLD_APP) - 1) == 0)
		return app + sizeof(PG_NODE_HOLD_APP) - 1;
	return NULL;
}

/* Whether the holder names itself with an id other than node_id: the two ids share a key. */
static bool holder_has_other_id(const node_holder *h, const char *node_id)
{
	char mine[64];
	snprintf(mine, sizeof(mine), PG_NODE_APP_ID, node_id);
	const char *theirs = node_id_named(h->app);
	return h->pid != 0 && theirs != NULL && strcmp(theirs, mine) != 0;
}

/*
 * The conflict, naming the holder as far as this role may see it;
 * *adopting: the holder named itself an adoption hold of this id.
 */
static hsm_result node_held_elsewhere(const char *node_id, const node_holder *h, bool *adopting)
{
	char who[256] = "";
	if (h->pid != 0)
		snprintf(who, sizeof(who), " (PostgreSQL session %d%s%s%s%s%s)", (int)h->pid,
		         h->addr[0] != '\0' ? " from " : "", h->addr,
		         h->app[0] != '\0' ? ", \"" : "", h->app, h->app[0] != '\0' ? "\"" : "");
	if (holder_has_other_id(h, node_id))
		return HSM_FAIL(HSM_ERR_CONFLICT,
		                "node_id '%.64s' and the node_id '%.48s' of a running node on this "
		                "store%s share one lock key: give this node another node_id",
		                node_id, node_id_named(h->app), who);
	*adopting = h->pid != 0 &&
	            strncmp(h->app, PG_NODE_HOLD_APP, sizeof(PG_NODE_HOLD_APP) - 1) == 0;
	if (*adopting)
		return HSM_FAIL(HSM_ERR_CONFLICT,
		                "node_id '%.64s' is held for a moment by another node adopting its old "
		                "audit outbox rows%s",
		                node_id, who);
	return HSM_FAIL(HSM_ERR_CONFLICT,
	                "node_id '%.64s' is held by another running node on this store%s: each "
	                "node sharing a store needs a node_id of its own",
	                node_id, who);
}

static hsm_result node_lock_try(pg_conn *c, const char *sql, const char *key, bool *got)
{
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, key);
	PGresult *res = NULL;
	hsm_result r = pg_run(c, sql, &p, &res);
	if (hsm_ok(r))
		r = pg_col_bool(res, 0, 0, got);
	PQclear(res);
	return r;
}

/*
 * Takes node_id's locks on c: *held both, or the 63-bit one where the
 * 31-bit one is held under another id.  Not held: *h is the holder of the
 * lock missed, and c holds neither.
 */
static hsm_result node_lock(pg_conn *c, const char *node_id, bool *held, node_holder *h)
{
	node_keys k;
	node_keys_of(node_id, &k);
	bool got = false, got_old = false;
	*held = false;
	HSM_GUARD(node_lock_try(c, SQL_NODE_TRY, k.key, &got));
	if (!got) {
		node_holder_find(c, k.key_hi, k.key_lo, "1", h);
		return HSM_SUCCESS;
	}
	HSM_GUARD(node_lock_try(c, SQL_NODE_TRY_OLD, k.old, &got_old));
	if (!got_old) {
		node_holder_find(c, PG_NODE_LOCK_CLASS, k.old, "2", h);
		if (holder_has_other_id(h, node_id)) {
			hsm_warn("store: node_id '%.64s' shares the lock key of earlier hsmd releases "
			         "with the running node_id '%.48s'; it is held under this release's key "
			         "alone",
			         node_id, node_id_named(h->app));
			*held = true;
			return HSM_SUCCESS;
		}
		pg_params p;
		pg_params_init(&p);
		pg_p_text(&p, k.key);
		HSM_GUARD(pg_run(c, SQL_NODE_RELEASE, &p, NULL));
		return HSM_SUCCESS;
	}
	*held = true;
	return HSM_SUCCESS;
}

/*
 * Opens a session named app and tries node_id's locks on it: *out is the
 * session, *held whether it holds them (the caller closes it if not), *h
 * the holder when not.
 */
static hsm_result node_session(pg_store *s, const char *node_id, const char *app,
                               pg_conn **out, bool *held, node_holder *h)
{
	pg_conn *c = NULL;
	HSM_GUARD(conn_open(s, &c));
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, app);
	hsm_result r = pg_run(c, SQL_NODE_NAME, &p, NULL);
	if (hsm_ok(r))
		r = node_lock(c, node_id, held, h);
	if (hsm_failed(r)) {
		conn_close(c);
		return r;
	}
	*out = c;
	return HSM_SUCCESS;
}

/* Opens the node's own session, names it, tries the locks; the session is kept only when held. */
static hsm_result node_try(pg_store *s, const char *node_id, bool *adopting)
{
	char app[64];
	/* Where pg_stat_activity shows it, the holder names itself to a node refused its id. */
	snprintf(app, sizeof(app), PG_NODE_APP PG_NODE_APP_ID, node_id);
	/*
	 * A holder gone between the try and the look (an adoption's hold let
	 * go) is no conflict: tried again, a few times at most.
	 */
	for (int tries = 1;; tries++) {
		pg_conn *c = NULL;
		bool held = false;
		node_holder h;
		HSM_GUARD(node_session(s, node_id, app, &c, &held, &h));
		if (held) {
			s->node = c;
			return HSM_SUCCESS;
		}
		conn_close(c);
		*adopting = false;
		hsm_result r = node_held_elsewhere(node_id, &h, adopting);
		if (h.seen || tries == 3)
			return r;
	}
}

static hsm_result pg_claim_node(hsm_store *base, const char *node_id, bool *adopting)
{
	pg_store *s = pg_of(base);
	HSM_ENSURE(strlen(node_id) <= HSM_PG_NODE_ID_MAX, HSM_ERR_VALIDATION,
	           "a node id is at most %d bytes", HSM_PG_NODE_ID_MAX);
	hsm_result r = HSM_SUCCESS;
	pthread_mutex_lock(&s->node_lock);
	HSM_ASSERT(s->node_id[0] == '\0' || strcmp(s->node_id, node_id) == 0);
	snprintf(s->node_id, sizeof(s->node_id), "%s", node_id);
	/* A round trip proves the session, and so the lock it holds, still lives. */
	if (s->node != NULL && hsm_failed(pg_run(s->node, SQL_NODE_ALIVE, NULL, NULL)))
		node_drop(s);
	if (s->node == NULL)
		r = node_try(s, node_id, adopting);
	pthread_mutex_unlock(&s->node_lock);
	return r;
}

/* Unlocks node_id's locks on c (one not held is a warning the session drops). */
static hsm_result node_unlock(pg_conn *c, const char *node_id)
{
	node_keys k;
	node_keys_of(node_id, &k);
	pg_params p;
	pg_params_init(&p);
	pg_p_text(&p, k.key);
	HSM_GUARD(pg_run(c, SQL_NODE_RELEASE, &p, NULL));
	pg_params_init(&p);
	pg_p_text(&p, k.old);
	return pg_run(c, SQL_NODE_RELEASE_OLD, &p, NULL);
}

/* Unlocked before closing, so a node started next with the id takes it at once. */
static void node_release(pg_store *s)
{
	if (s->node != NULL && hsm_failed(node_unlock(s->node, s->node_id)))
		hsm_log_failure("the node id is freed when the session ends instead");
	node_drop(s);
}

/*
 * Another node's id, held to adopt its audit outbox rows (store.h,
 * hsm_store_node_hold): the claim's own locks, on a session of its own
 * that the server ends after HSM_NODE_HOLD_IDLE_MS without a statement, so
 * a holder that hangs does not keep the id from its node for ever.
 */
static hsm_result pg_node_hold(hsm_store *base, const char *node_id, void **session, bool *held)
{
	pg_store *s = pg_of(base);
	char app[64];
	snprintf(app, sizeof(app), PG_NODE_HOLD_APP PG_NODE_APP_ID, node_id);
	pg_conn *c = NULL;
	node_holder h;
	*held = false;
	HSM_GUARD(node_session(s, node_id, app, &c, held, &h));
	char sql[64];
	snprintf(sql, sizeof(sql), "SET idle_session_timeout = %d", HSM_NODE_HOLD_IDLE_MS);
	hsm_result r = *held ? pg_simple(c, sql, "limit the held node id's idle time") : HSM_SUCCESS;
	if (hsm_failed(r) || !*held) {
		conn_close(c); /* ending the session frees the locks it may hold */
		*held = false;
		return r;
	}
	*session = c;
	return HSM_SUCCESS;
}

static hsm_result pg_node_hold_check(hsm_store *base, void *session)
{
	(void)base;
	return pg_run(session, SQL_NODE_ALIVE, NULL, NULL);
}

/* Unlocked before closing, so the node, started again, takes its id at once. */
static void pg_node_hold_release(hsm_store *base, void *session, const char *node_id)
{
	(void)base;
	pg_conn *c = session;
	if (!c->broken && hsm_failed(node_unlock(c, node_id)))
		hsm_log_failure("the held node id is freed when the session ends instead");
	conn_close(c);
}

static void pg_close(hsm_store *base)
{
	pg_store *s = pg_of(base);
	while (s->idle != NULL) {
		pg_conn *c = s->idle;
		s->idle = c->next;
		conn_close(c);
	}
	if (s->conninfo != NULL) {
		OPENSSL_cleanse(s->conninfo, strlen(s->conninfo)); /* holds the password */
		free(s->conninfo);
	}
	lead_release(s);
	node_release(s);
	pthread_mutex_destroy(&s->node_lock);
	pthread_mutex_destroy(&s->lead_lock);
	pthread_cond_destroy(&s->pool_free);
	pthread_mutex_destroy(&s->pool_lock);
	free(s);
}

/* hsm_store_migrate: the steps an opening in MIGRATE mode would have run. */
static hsm_result pg_migrate(hsm_store *base)
{
	pg_store *s = pg_of(base);
	return pg_schema_migrate(s, &s->schema_version, &s->base.migrated_from);
}

static int pg_schema_version_op(hsm_store *base)
{
	return pg_of(base)->schema_version;
}

static const hsm_store_ops pg_ops = {
	.name = "postgresql",
	.close = pg_close,
	.schema_version = pg_schema_version_op,
	.schema_latest = hsm_store_pg_schema_latest,
	.claim_node = pg_claim_node,
	.migrate = pg_migrate,
	.meta_get = pg_meta_get,
	.meta_put = pg_meta_put,
	.rekey = pg_rekey,
	.key_create = pg_key_create,
	.key_get = pg_key_get,
	.keys_get = pg_keys_get,
	.key_update = pg_key_update,
	.key_destroy = pg_key_destroy,
	.key_set_material = pg_key_set_material,
	.key_promote = pg_key_promote,
	.key_list = pg_key_list,
	.jwt_key_list = pg_jwt_key_list,
	.key_count = pg_key_count,
	.snapshot = pg_snapshot,
	.lead = pg_lead,
	.keys_due = pg_keys_due,
	.keys_due_count = pg_keys_due_count,
	.version_get = pg_version_get,
	.version_list = pg_version_list,
	.alias_create = pg_alias_create,
	.alias_update = pg_alias_update,
	.alias_delete = pg_alias_delete,
	.alias_get = pg_alias_get,
	.alias_list = pg_alias_list,
	.alias_delete_for_key = pg_alias_delete_for_key,
	.tags_put = pg_tags_put,
	.tags_remove = pg_tags_remove,
	.tags_list = pg_tags_list,
	.grant_create = pg_grant_create,
	.grant_get = pg_grant_get,
	.grant_delete = pg_grant_delete,
	.grant_fits = pg_grant_fits,
	.grant_list = pg_grant_list,
	.grant_list_retiring = pg_grant_list_retiring,
	.cert_create = pg_cert_create,
	.cert_get = pg_cert_get,
	.cert_delete = pg_cert_delete,
	.cert_list = pg_cert_list,
	.cert_count = pg_cert_count,
	.cert_count_expiring = pg_cert_count_expiring,
	.usage_put = pg_usage_put,
	.usage_get = pg_usage_get,
	.usage_since = pg_usage_since,
	.user_create = pg_user_create,
	.user_get = pg_user_get,
	.user_put = pg_user_put,
	.user_change = pg_user_change,
	.user_auth_result = pg_user_auth_result,
	.user_list = pg_user_list,
	.access_key_create = pg_access_key_create,
	.access_key_get = pg_access_key_get,
	.access_key_set_active = pg_access_key_set_active,
	.access_key_list = pg_access_key_list,
	.approval_open = pg_approval_open,
	.approval_get = pg_approval_get,
	.approval_find = pg_approval_find,
	.approval_approve = pg_approval_approve,
	.approval_close = pg_approval_close,
	.approval_reopen = pg_approval_reopen,
	.approval_list = pg_approval_list,
	.approval_purge = pg_approval_purge,
	.approval_rewrite = pg_approval_rewrite,
	.export_all = pg_export,
	.import_all = pg_import,
	.holds_any = pg_holds_any,
	.outbox_page = pg_outbox_page,
	.outbox_delete = pg_outbox_delete,
	.outbox_note = pg_outbox_note,
	.outbox_nodes_page = pg_outbox_nodes_page,
	.node_hold = pg_node_hold,
	.node_hold_check = pg_node_hold_check,
	.node_hold_release = pg_node_hold_release,
};

static hsm_result store_alloc(const char *location, pg_store **out)
{
	/* Connections move between threads (one at a time): libpq must be thread-safe. */
	HSM_ENSURE(PQisthreadsafe() != 0, HSM_ERR_STORE,
	           "the libpq library was built without thread support");
	pg_store *s = calloc(1, sizeof(*s));
	HSM_ENSURE(s != NULL, HSM_ERR_NOMEM, "out of memory");
	s->base.ops = &pg_ops;
	pthread_mutex_init(&s->pool_lock, NULL);
	pthread_mutex_init(&s->lead_lock, NULL);
	pthread_mutex_init(&s->node_lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&s->pool_free, &attr);
	pthread_condattr_destroy(&attr);
	s->conninfo = strdup(location);
	if (s->conninfo == NULL) {
		pg_close(&s->base);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	*out = s;
	return HSM_SUCCESS;
}

hsm_result hsm_store_pg_open(const char *location, hsm_store_open_mode mode, hsm_store **out)
{
	HSM_ASSERT(location != NULL && out != NULL);
	hsm_result res = HSM_SUCCESS;
	pg_store *s = NULL;
	/* Parse first, so a malformed URI is a validation error, not a connection failure. */
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(location, &err);
	PQconninfoFree(opts);
	if (opts == NULL) {
		PQfreemem(err); /* libpq's message may quote the URI, password included */
		return HSM_FAIL(HSM_ERR_VALIDATION, "the PostgreSQL connection URI is malformed");
	}
	HSM_TRY(store_alloc(location, &s));
	if (mode == HSM_STORE_EXISTING)
		HSM_TRY(pg_schema_read(s, &s->schema_version));
	else
		HSM_TRY(pg_schema_migrate(s, &s->schema_version, &s->base.migrated_from));
	*out = &s->base;
	s = NULL;
out:
	if (s != NULL)
		pg_close(&s->base);
	return res;
}
