/*
 * server.c - hsmd's life cycle: open the store, keystore, audit trail and
 * KMS service, serve, run scheduled key work, stop.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/log.h"
#include "common/secret.h"
#include "common/util.h"
#include "kms/jwt.h"
#include "server/outbox.h"
#include "server/server.h"

/* A rotation this long past its date did not happen: the scheduler is stuck, or an imported key
 * has no material to rotate to (hsmd_keys_rotation_overdue).  The same bound for a destruction
 * that did not happen (hsmd_keys_deletion_overdue): no scheduler, or the destruction fails. */
#define HSM_ROTATION_OVERDUE_S 3600
/* How often the last uses of keys are written to the store by default (GetKeyLastUsage). */
#define USAGE_FLUSH_MS 1000
#define DEV_SHARE_FILE "dev-unseal.share"
#define DEV_USER "dev"

hsm_result hsm_server_audit_signer(void *arg, const uint8_t *msg, size_t n, hsm_buf *sig)
{
	return hsm_ks_audit_sign(arg, msg, n, sig);
}

/* An event of the node's own; request_id names the outbox row of its change (or NULL). */
static bool server_event(hsm_server *s, const char *event, const char *key_id, uint32_t version,
                         hsm_result result, const hsm_audit_field *extra, size_t n_extra,
                         const char *request_id)
{
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_EVENT,
	    .principal = "hsmd",
	    .operation = event,
	    .key_id = key_id,
	    .key_version = version,
	    .outcome = hsm_ok(result) ? HSM_AUDIT_SUCCESS : HSM_AUDIT_ERROR,
	    .error = hsm_ok(result) ? NULL : hsm_err_kms_name(result.err),
	    .request_id = request_id,
	    .extra = extra,
	    .n_extra = n_extra,
	};
	if (s->audit != NULL && hsm_ok(hsm_audit_append(s->audit, &rec)))
		return true;
	hsm_error("could not audit event %s (key %s)", event, key_id ? key_id : "-");
	return false;
}

void hsm_server_event(hsm_server *s, const char *event, const char *key_id, uint32_t version,
                      hsm_result result, const hsm_audit_field *extra, size_t n_extra)
{
	(void)server_event(s, event, key_id, version, result, extra, n_extra, NULL);
}

bool hsm_server_event_of(hsm_server *s, const char *request_id, const char *event,
                         hsm_result result, const hsm_audit_field *extra, size_t n_extra)
{
	return server_event(s, event, NULL, 0, result, extra, n_extra, request_id);
}

/*
 * The scheduler's key work (rotation, expiry, destruction) changes the store
 * before its event is written, as a request does.  Each action runs under an
 * outbox intent of its own, named by an id its event carries as request_id:
 * a kill between the commit and the event leaves the row, and the next
 * start records the change (outbox.h).  One commit, then its event: the
 * event ends the action's intent and begins the next one's.
 */
typedef struct sched_action {
	hsm_server *s;
	hsm_store_intent in;
	char id[HSM_UUID_STRLEN + 1];
	bool active;
} sched_action;

static _Thread_local sched_action *current_action;

static void action_begin(sched_action *a)
{
	a->active = hsm_ok(hsm_uuid_new(a->id));
	if (!a->active)
		return; /* no id: this action's change is not outboxed (the RNG failed: logged) */
	memset(&a->in, 0, sizeof(a->in));
	a->in.node_id = a->s->node_id;
	a->in.request_id = a->id;
	a->in.operation = "ScheduledKeyWork";
	a->in.principal = "hsmd";
	hsm_store_intent_begin(&a->in);
	current_action = a;
}

/* Ends the action; its row goes once its event is durable, or is settled with a record. */
static void action_end(sched_action *a, bool recorded)
{
	if (!a->active)
		return;
	hsm_store_intent_end();
	current_action = NULL;
	a->active = false;
	if (a->in.written)
		hsm_outbox_settled(a->s->outbox, a->id, recorded, hsm_audit_next_seq(a->s->audit));
}

static void on_kms_event(void *arg, const hsm_kms_event *ev)
{
	hsm_server *s = arg;
	sched_action *a = current_action;
	if (a == NULL || a->s != s) {
		hsm_server_event(s, ev->operation, ev->key_id, ev->key_version, ev->result, NULL, 0);
		return;
	}
	bool ok = server_event(s, ev->operation, ev->key_id, ev->key_version, ev->result, NULL, 0,
	                       a->in.written ? a->id : NULL);
	action_end(a, ok);
	action_begin(a);
}

hsm_result hsm_server_blame(const hsm_server *s, const char *setting, hsm_result r)
{
	if (hsm_failed(r) && s->opt.failed_setting != NULL)
		*s->opt.failed_setting = setting;
	return r;
}

/*
 * The setting a failure to open the HTTP server is about: its messages begin
 * with the TLS setting they concern, or say the address cannot be listened on.
 */
static hsm_result blame_http(const hsm_server *s, hsm_result r)
{
	static const char *const tls[] = {"tls_client_ca", "tls_cert", "tls_key"};
	if (hsm_ok(r))
		return r;
	const char *m = hsm_last_message();
	for (size_t i = 0; i < sizeof(tls) / sizeof(tls[0]); i++)
		if (r.err == HSM_ERR_VALIDATION && hsm_str_has_prefix(m, tls[i]) &&
		    m[strlen(tls[i])] == ' ')
			return hsm_server_blame(s, tls[i], r);
	if (r.err == HSM_ERR_IO && hsm_str_has_prefix(m, "cannot listen on "))
		return hsm_server_blame(s, "listen", r);
	return r;
}

static hsm_result copy_opt(char *dst, size_t cap, const char *src, const char *what)
{
	HSM_ENSURE(src != NULL && *src != '\0', HSM_ERR_VALIDATION, "%s is required", what);
	return hsm_strcpy(dst, cap, src);
}

/* The audit writer answers requests in batches: one wake-up per worker per batch. */
static void batch_hook(bool begin)
{
	if (begin)
		hsm_http_hold_wakeups();
	else
		hsm_http_release_wakeups();
}

/* A copy directory that is the directory it copies would copy nothing anywhere. */
hsm_result hsm_server_distinct_copy_dir(const char *dir, const char *dir_name, const char *what,
                                        const char *copy_dir)
{
	struct stat a, c;
	HSM_ENSURE(stat(dir, &a) == 0 && stat(copy_dir, &c) == 0, HSM_ERR_VALIDATION,
	           "%s = '%.256s' cannot be read: %s", what, copy_dir, strerror(errno));
	HSM_ENSURE(a.st_dev != c.st_dev || a.st_ino != c.st_ino, HSM_ERR_VALIDATION,
	           "%s = '%.256s' is the %s itself: give a directory on another disk or in "
	           "another region",
	           what, copy_dir, dir_name);
	return HSM_SUCCESS;
}

/*
 * The directory this node copies its closed audit files to: its own
 * audit_copy_dir/NODE_ID, so nodes sharing one mount (a cluster's copy in
 * the other region, under one configuration) never meet, although every
 * trail's files are named alike from seq 1 on.
 */
static hsm_result copy_dir_of_node(const hsm_server *s, char *out, size_t cap)
{
	static const char node_dir[] = "audit_copy_dir/NODE_ID";
	HSM_GUARD(hsm_server_usable_dir("audit_copy_dir", s->audit_copy_dir, false));
	HSM_GUARD(hsm_server_distinct_copy_dir(s->audit_dir, "audit directory", "audit_copy_dir",
	                                       s->audit_copy_dir));
	HSM_ENSURE((size_t)snprintf(out, cap, "%s/%s", s->audit_copy_dir, s->node_id) < cap,
	           HSM_ERR_VALIDATION, "audit_copy_dir is too long");
	HSM_GUARD(hsm_server_usable_dir(node_dir, out, true));
	return hsm_server_distinct_copy_dir(s->audit_dir, "audit directory", node_dir, out);
}

/*
 * dir, made private, belongs to the user hsmd runs as: what hsmd makes there
 * (audit files, backups; 0600) must be files the node can open at its next
 * start as that user, and a directory
 * another user owns is one that user may fill with links hsmd would follow
 * (an audit or backups directory pointing elsewhere), as hsmctl refuses too.
 */
static hsm_result own_private_dir(const char *dir)
{
	HSM_GUARD(hsm_mkdir_private(dir));
	struct stat st;
	HSM_ENSURE(stat(dir, &st) == 0, HSM_ERR_IO, "cannot read %s: %s", dir, strerror(errno));
	HSM_ENSURE(st.st_uid == geteuid(), HSM_ERR_VALIDATION,
	           "%s belongs to uid %ld, not to the user hsmd runs as (uid %ld): run hsmd as the "
	           "directory's owner (the unit's user hsmd), or the files it makes there would be "
	           "ones the node cannot open, and the owner could point them elsewhere",
	           dir, (long)st.st_uid, (long)geteuid());
	return HSM_SUCCESS;
}

/*
 * The audit trail's directories (copy_dir: this node's copy directory, or
 * "").  Checked with the backups' before the store is opened too: opening
 * migrates an older store's schema, which a start refused for a mistyped
 * directory must not leave behind (and on a shared store, the nodes not yet
 * upgraded lose their leadership to it).
 */
static hsm_result check_audit_dirs(hsm_server *s, char *copy_dir, size_t cap)
{
	HSM_GUARD(hsm_server_blame(s, "audit_dir", own_private_dir(s->audit_dir)));
	copy_dir[0] = '\0';
	if (s->audit_copy_dir[0] != '\0')
		HSM_GUARD(hsm_server_blame(s, "audit_copy_dir", copy_dir_of_node(s, copy_dir, cap)));
	return HSM_SUCCESS;
}

static hsm_result open_audit(hsm_server *s)
{
	char copy_dir[sizeof(s->audit_copy_dir) + HSM_CONFIG_NAME_MAX + 1];
	HSM_GUARD(check_audit_dirs(s, copy_dir, sizeof(copy_dir)));
	hsm_audit_config ac = {
	    .dir = s->audit_dir,
	    .node_id = s->node_id,
	    .fsync_interval_ms = s->opt.audit_fsync_ms,
	    .fsync_max_lag_ms = s->opt.audit_fsync_max_lag_ms,
	    .checkpoint_interval_ms = s->opt.audit_checkpoint_seconds * 1000U,
	    .rotate_bytes = s->opt.audit_rotate_bytes,
	    .rotate_age_ms = s->opt.audit_rotate_seconds * 1000U,
	    .retention_days = s->opt.audit_retention_days,
	    .copy_dir = copy_dir[0] != '\0' ? copy_dir : NULL,
	    .syslog = s->opt.audit_syslog,
	    .ack_durable = s->opt.audit_ack_durable,
	    .batch_scheduling = s->opt.http.batch_scheduling,
	    .batch_hook = batch_hook,
	};
	return hsm_audit_open(&ac, &s->audit);
}

/*
 * Threads for long requests (lane.h): one per core, so they can use the whole
 * machine as the workers did when they ran these requests themselves, and at
 * least two, so one key generation of seconds does not hold up every store
 * write behind it.
 */
static unsigned lane_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 2 ? 2U : n > 16 ? 16U : (unsigned)n;
}

/*
 * A production node on its own SQLite file serves the store the key ceremony
 * made (hsmctl init, or a restore).  Where there is none, data_dir is
 * mistyped, or its disk is not mounted yet: starting would make an empty
 * store, with its audit trail and backups, where the real one should be.
 */
static hsm_result check_store_exists(const hsm_server *s)
{
	char path[PATH_MAX];
	struct stat st;
	HSM_ENSURE((size_t)snprintf(path, sizeof(path), "%s/" HSM_STORE_DB_FILE, s->data_dir) <
	               sizeof(path),
	           HSM_ERR_VALIDATION, "data_dir is too long");
	if (stat(path, &st) == 0) {
		/* An empty file (a copy or a restore cut short) would be made an empty store. */
		HSM_ENSURE(st.st_size > 0, HSM_ERR_VALIDATION,
		           "data_dir %s: %s is empty (0 bytes), so it holds no store: restore a "
		           "backup (hsmctl restore) into a new data directory, or put the store's "
		           "file back; hsmd does not make an empty store in its place",
		           s->data_dir, path);
		return HSM_SUCCESS;
	}
	HSM_ENSURE(errno == ENOENT, HSM_ERR_IO, "data_dir: cannot read %s: %s", path,
	           strerror(errno));
	return HSM_FAIL(HSM_ERR_VALIDATION,
	                "data_dir %s holds no store (" HSM_STORE_DB_FILE "): make one with the key "
	                "ceremony (hsmctl init --data-dir %s) or a restore, or check the setting "
	                "(mistyped? its disk not mounted yet?)",
	                s->data_dir, s->data_dir);
}

/* Whether data_dir holds a store file that is not empty (one that cannot be read is said to). */
static bool store_file_found(const hsm_server *s)
{
	char path[PATH_MAX];
	struct stat st;
	if ((size_t)snprintf(path, sizeof(path), "%s/" HSM_STORE_DB_FILE, s->data_dir) >=
	    sizeof(path))
		return true;
	if (stat(path, &st) != 0)
		return errno != ENOENT;
	return st.st_size > 0;
}

/*
 * The store keeps, for each node id, when that node's audit trail first
 * began on it ("audit_trail:<node_id>").  A trail that begins beside an
 * initialized store is news only when the store has seen this node's trail
 * before: a node joining a shared store (or given its first audit_dir) is not
 * one whose trail was taken away.
 */
static void trail_meta_name(const hsm_server *s, char *out, size_t cap)
{
	snprintf(out, cap, "audit_trail:%s", s->node_id);
}

/* Whether the store has seen this node's trail (true when it cannot tell: the caution). */
static bool store_knows_trail(hsm_server *s)
{
	char name[96];
	hsm_buf v;
	hsm_buf_init(&v);
	trail_meta_name(s, name, sizeof(name));
	hsm_result r = hsm_store_meta_get(s->store, name, &v);
	hsm_buf_free(&v);
	return r.err != HSM_ERR_NOT_FOUND;
}

/*
 * Records that this node's trail is on the store, once: at start, after a
 * dev-mode init, and else from the scheduler's passes until it is done (a
 * node started before the ceremony, or a store that could not be written).
 */
static void note_trail(hsm_server *s, bool say_failure)
{
	if (atomic_load(&s->trail_noted))
		return;
	bool done = store_knows_trail(s);
	if (!done) {
		char name[96], when[24];
		trail_meta_name(s, name, sizeof(name));
		int n = snprintf(when, sizeof(when), "%lld", (long long)hsm_now());
		hsm_buf v = {.data = (uint8_t *)when, .len = (size_t)n};
		const char *names[] = {name};
		const hsm_buf *values[] = {&v};
		done = hsm_ok(hsm_store_meta_put(s->store, 1, names, values));
		if (!done && say_failure)
			hsm_log_failure("could not record this node's audit trail in the store (retried)");
	}
	atomic_store(&s->trail_noted, done);
}

/*
 * How long a start waits for its node id while another session holds it: a
 * node that vanished (power lost, network cut) keeps its session, and so the
 * id, until the database's keepalives end it (about 11 s, store_pg.h).
 */
#define NODE_CLAIM_WAIT_MS 20000
#define NODE_CLAIM_RETRY_MS 500
/*
 * How long a node waits for its id while another node holds it to adopt
 * the id's old audit outbox rows (outbox.c, hsm_store_node_hold): such a
 * hold ends by itself within outbox.c's bound on the work done under it
 * (ADOPT_HOLD_WORST_MS), so a node, at its start or running, waits for it
 * instead of stopping.
 */
#define NODE_ADOPT_WAIT_MS 60000
_Static_assert(NODE_ADOPT_WAIT_MS > HSM_OUTBOX_ADOPT_HOLD_WORST_MS,
               "a node must outwait any adoption hold on its id");

/*
 * Claims the id, retrying while it is held: by an adoption hold up to
 * NODE_ADOPT_WAIT_MS, by anything else up to wait_ms.  running: the
 * scheduler's check, whose wait a stop cuts short.
 */
static hsm_result claim_node_waiting(hsm_server *s, uint32_t wait_ms, bool running)
{
	uint64_t start = hsm_mono_ns();
	bool said = false, said_adopting = false;
	for (;;) {
		bool adopting = false;
		hsm_result r = hsm_store_claim_node_why(s->store, s->node_id, &adopting);
		uint64_t waited_ms = (hsm_mono_ns() - start) / 1000000U;
		if (r.err != HSM_ERR_CONFLICT || waited_ms >= (adopting ? NODE_ADOPT_WAIT_MS : wait_ms))
			return r;
		if (adopting && !said_adopting)
			hsm_warn("%s; waiting up to %d s for the adoption to end", hsm_last_message(),
			         NODE_ADOPT_WAIT_MS / 1000);
		else if (!adopting && !said)
			hsm_warn("%s; waiting up to %" PRIu32 " s for it to be freed (a node that vanished "
			         "keeps it until the database ends its session)",
			         hsm_last_message(), wait_ms / 1000);
		said_adopting |= adopting;
		said |= !adopting;
		if (!running) {
			struct timespec nap = {0, NODE_CLAIM_RETRY_MS * 1000000L};
			nanosleep(&nap, NULL);
			continue;
		}
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += NODE_CLAIM_RETRY_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&s->stop_lock);
		int rc = 0;
		while (!s->stopping && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&s->stop_cond, &s->stop_lock, &until);
		bool stopping = s->stopping;
		pthread_mutex_unlock(&s->stop_lock);
		if (stopping)
			return r;
	}
}

/*
 * Before anything is done under the node id against the store (the trail's
 * first opening, the outbox's rows): no other running node may hold it.
 */
static hsm_result claim_node_id(hsm_server *s)
{
	return claim_node_waiting(s, NODE_CLAIM_WAIT_MS, false);
}

/*
 * The store records the account and region its keys belong to (CreateKey
 * does, and a start on a store with keys): a node of another refuses to
 * start.  Read from the metadata, which every schema has, before the schema
 * is brought forward (refuse_early).
 */
static hsm_result check_account_recorded(hsm_server *s)
{
	return hsm_kms_account_check(s->store, s->account, s->region, false);
}

/*
 * Once the schema is current: a store with keys made before the account was
 * recorded is recorded as this node's, unless the first key's policy says
 * the keys are another account's: then only a warning, as nothing tells
 * which is right.  Refused here only when another node recorded another
 * account in the meantime.
 */
static hsm_result check_account(hsm_server *s)
{
	char other[13];
	bool seen = false;
	if (hsm_failed(hsm_kms_account_of_keys(s->store, s->account, other, &seen)))
		return HSM_SUCCESS; /* unread: checked again at the next start and CreateKey */
	/* Nothing at start would say why every key request is refused: a warning does. */
	if (other[0] != '\0') {
		hsm_warn("the store's key policies name account %s, and this node's account_id is %s: "
		         "their principals match none of its callers, so key requests will be refused "
		         "(a store restored or copied from another node: give this one its account_id "
		         "and region)",
		         other, s->account);
		return HSM_SUCCESS;
	}
	if (!seen)
		return HSM_SUCCESS;
	hsm_result r = hsm_kms_account_check(s->store, s->account, s->region, true);
	return r.err == HSM_ERR_CONFLICT ? r : HSM_SUCCESS;
}

/*
 * A store split 1 of 1 (as hsmd --dev makes its own) unseals with a single
 * share: no custodian quorum stands behind its keys.  Served without --dev,
 * it is worth a word at every start.
 */
static void warn_single_share(hsm_server *s, hsm_node_state st)
{
	if (s->opt.dev || st != HSM_NODE_SEALED)
		return;
	hsm_ks_identity id;
	hsm_keystore_identity(s->ks, &id);
	if (id.count == 1)
		hsm_warn("the store's master key is split 1 of 1, as hsmd --dev makes it: one share "
		         "unseals it, with no custodian quorum behind it; for production keys give it "
		         "custodians (hsmctl rekey --shares N --threshold M) or start from a key "
		         "ceremony (hsmctl init)");
}

/*
 * Users whose names differ only by case, made before CreateUser refused
 * such names: they keep working, but each pair may be one person holding
 * two accounts (two custodians' approvals), and a key policy's aws:username
 * condition names one spelling only.  Worth a word at every start.
 */
static void warn_user_case_twins(hsm_server *s)
{
	char twins[512];
	size_t sets = 0;
	if (hsm_failed(hsm_kms_user_case_twins(s->store, twins, sizeof(twins), &sets))) {
		hsm_log_failure("reading the users' names");
		return;
	}
	if (sets > 0)
		hsm_warn("users whose names differ only by case: %s (made before user names were "
		         "unique regardless of case): each may be one person holding two accounts, "
		         "or two custodians' approvals; disable the one not meant (hsmctl user "
		         "disable NAME)",
		         twins);
}

/*
 * The Startup record: which build runs, and the store's schema.  An upgrade
 * is on the trail of the node that made it: the store keeps each migration
 * until a Startup record said it, so one made by a start that then stopped
 * (killed, or its store failing it before the record) is said by the
 * next start, whichever node makes it.
 */
static void report_startup(hsm_server *s, hsm_node_state st)
{
	int migrated = hsm_store_migration_unreported(s->store);
	/* The quorum is the node's configuration, not the API's: the trail says what it was. */
	char quorum[16], schema[16], from[16];
	snprintf(quorum, sizeof(quorum), "%u", (unsigned)s->opt.approval_quorum);
	snprintf(schema, sizeof(schema), "%d", hsm_store_schema_version(s->store));
	snprintf(from, sizeof(from), "%d", migrated);
	hsm_audit_field f[] = {
	    {"self_test", st == HSM_NODE_ERROR ? hsm_keystore_error_reason(s->ks) : "passed"},
	    {"approval_quorum", quorum},
	    {"version", hsm_version()},
	    {"store_schema", schema},
	    {"schema_migrated_from", from}};
	bool written = hsm_server_event_of(s, NULL, "Startup",
	                                   st == HSM_NODE_ERROR
	                                       ? HSM_FAIL(HSM_ERR_NODE_ERROR, "self-test failed")
	                                       : HSM_SUCCESS,
	                                   f, migrated != 0 ? 5 : 4);
	if (written && migrated != 0 && hsm_failed(hsm_store_migration_reported(s->store, migrated)))
		hsm_log_failure("could not record in the store that the schema upgrade was audited (the "
		                "next start says it again)");
}

static hsm_result dev_check_no_leftovers(hsm_server *s, bool trail_began_here);

/*
 * Whatever may still refuse the start for its settings or its identity, on
 * the store opened as it is: an older schema is brought forward only after
 * these, so a refused start leaves it for the nodes still serving it (on a
 * shared store they would give up the scheduled work to a node that never
 * ran).  What they read is in every schema: the metadata, the users.  The
 * audit trail opens, and the listening socket is bound (the address free,
 * the TLS files loaded), here too: nothing is served before hsm_server_start.
 */
static hsm_result refuse_early(hsm_server *s)
{
	HSM_GUARD(hsm_server_blame(s, "account_id", check_account_recorded(s)));
	HSM_GUARD(hsm_server_blame(s, "node_id", claim_node_id(s)));
	HSM_GUARD(hsm_server_quorum_check(s));
	HSM_GUARD(open_audit(s));
	s->opt.http.refused = hsm_server_http_refused;
	return blame_http(s, hsm_http_server_new(&s->opt.http, hsm_server_on_request, s, &s->http));
}

/* The purge of old approval requests asks this at its moment (hsm_kms_set_clock_ahead_probe). */
static bool clock_ahead_now(void *arg)
{
	const hsm_server *s = arg;
	return s->audit != NULL && hsm_audit_clock_ahead_ms(s->audit) > HSM_AUDIT_CLOCK_AHEAD_MS;
}

static hsm_result open_parts(hsm_server *s)
{
	bool shared = s->opt.store != NULL && s->opt.store[0] != '\0';
	if (!s->opt.dev && !shared)
		HSM_GUARD(hsm_server_blame(s, "data_dir", check_store_exists(s)));
	HSM_GUARD(hsm_server_blame(s, "data_dir", own_private_dir(s->data_dir)));
	if (s->opt.dev)
		s->dev_db_found = shared || store_file_found(s);
	/* Before the store is opened (which makes hsmd.db) and the audit and backup directories
	 * are made: a refused start leaves the data directory as it found it, and the next one
	 * sees what this one saw. */
	if (s->opt.dev && !s->dev_db_found)
		HSM_GUARD(dev_check_no_leftovers(s, false));
	char copy_dir[sizeof(s->audit_copy_dir) + HSM_CONFIG_NAME_MAX + 1];
	HSM_GUARD(check_audit_dirs(s, copy_dir, sizeof(copy_dir)));
	HSM_GUARD(hsm_server_backup_dirs_check(s));
	const char *where = shared ? "store" : "data_dir";
	HSM_GUARD(hsm_server_blame(s, where,
	                           hsm_store_open_unmigrated(shared ? s->opt.store : s->data_dir,
	                                                     &s->store)));
	atomic_store(&s->store_up, true);
	if (shared && s->opt.store_cache_ms == 0)
		hsm_warn("store_cache_ms is 0 with a shared store: this node trusts what it cached "
		         "until it changes it itself, so a key disabled, scheduled for deletion or "
		         "given a new policy through another node stays usable here; unless this is "
		         "the only node, leave it at its default (1000) or set a few hundred ms");
	HSM_GUARD(refuse_early(s));
	HSM_GUARD(hsm_server_blame(s, where, hsm_store_migrate(s->store)));
	HSM_GUARD(hsm_server_blame(s, "account_id", check_account(s)));
	HSM_GUARD(hsm_keystore_new(s->store, 0, &s->ks));
	if (s->opt.unseal_timeout != 0)
		hsm_keystore_set_unseal_ttl_ms(s->ks, (uint64_t)s->opt.unseal_timeout * 1000U);
	hsm_node_state st = hsm_keystore_state(s->ks);
	report_startup(s, st);
	warn_single_share(s, st);
	warn_user_case_twins(s);
	/*
	 * An audit directory with no record, beside a store initialized before
	 * this start and that has seen this node's trail: a node given a new
	 * audit_dir, or one whose trail was taken away.  hsmd cannot tell which;
	 * the new trail says so from its start.  A node id the store has not seen
	 * is a node joining it, which its trail says too (not flagged).
	 */
	bool began = hsm_audit_began_here(s->audit) && st != HSM_NODE_UNINITIALIZED;
	/*
	 * A node id the store has not seen, beside the trails of others it has:
	 * a node joining them only while one of them runs.  Otherwise (SQLite, or
	 * every one stopped) it may be a stopped node's id changed after its
	 * trail was taken away, flagged as such (trail_nodes.c).
	 */
	char known[HSM_AUDIT_VALUE_MAX] = "";
	bool renamed = false;
	if (began && !store_knows_trail(s)) {
		bool live = false;
		hsm_server_trail_nodes(s, known, sizeof(known), &live);
		renamed = known[0] != '\0' && !live;
		if (!renamed) {
			hsm_audit_field g[] = {{"node_id", s->node_id}, {"known_nodes", known}};
			hsm_server_event(s, "AuditTrailJoinsStore", NULL, 0, HSM_SUCCESS, g,
			                 known[0] != '\0' ? 2 : 1);
			began = false;
		}
	}
	if (st != HSM_NODE_UNINITIALIZED)
		note_trail(s, true);
	if (renamed) {
		hsm_warn("the audit trail in %s begins now under node id %s, new to the store, which "
		         "has seen the trails of %s, none of them running: if this node ran under "
		         "one of those ids, its trail is gone",
		         s->audit_dir, s->node_id, known);
		hsm_audit_field g[] = {{"store", "initialized before this trail began"},
		                       {"node_id", s->node_id},
		                       {"known_nodes", known}};
		hsm_server_event(s, "AuditTrailBeginsAfterStore", NULL, 0, HSM_SUCCESS, g, 3);
	} else if (began) {
		hsm_warn("the audit trail in %s begins now, but the store was initialized before: if "
		         "this node kept a trail there, it is gone",
		         s->audit_dir);
		hsm_audit_field g[] = {{"store", "initialized before this trail began"}};
		hsm_server_event(s, "AuditTrailBeginsAfterStore", NULL, 0, HSM_SUCCESS, g, 1);
	}
	/* Changes the last run made but did not record (killed, or its trail failed them). */
	HSM_GUARD(hsm_outbox_new(&s->outbox));
	hsm_outbox_recover(s);
	hsm_kms_config kc = {.region = s->region,
	                     .account_id = s->account,
	                     .jwt_default_lifetime = s->opt.jwt_default_lifetime,
	                     .jwt_max_lifetime = s->opt.jwt_max_lifetime,
	                     .jwt_clock_skew = s->opt.jwt_clock_skew,
	                     .meta_cache_ttl_ms = s->opt.store_cache_ms,
	                     .approval_quorum = s->opt.approval_quorum,
	                     .approval_ttl = s->opt.approval_ttl};
	HSM_GUARD(hsm_kms_new(s->store, s->ks, &kc, &s->kms));
	hsm_kms_set_event_sink(s->kms, on_kms_event, s);
	hsm_kms_set_clock_ahead_probe(s->kms, clock_ahead_now, s);
	HSM_GUARD(hsm_usage_new(s->store, &s->usage));
	hsm_kms_set_usage(s->kms, s->usage);
	HSM_GUARD(hsm_server_auth_init(s));
	hsm_refusals_config rc = {.per_source = s->opt.refusal_record_rate,
	                          .total = s->opt.refusal_record_rate_total};
	HSM_GUARD(hsm_refusals_new(&rc, &s->refusals));
	return hsm_lane_new(lane_threads(), "hsmd-lane", &s->lane);
}

/* Token lifetimes (kms/jwt.h): 15 minutes by default, at most a day, 60 s of skew. */
static hsm_result jwt_defaults(hsm_server_options *o)
{
	if (o->jwt_max_lifetime == 0)
		o->jwt_max_lifetime = HSM_JWT_MAX_LIFETIME;
	if (o->jwt_default_lifetime == 0)
		o->jwt_default_lifetime = o->jwt_max_lifetime < HSM_JWT_DEFAULT_LIFETIME
		                              ? o->jwt_max_lifetime
		                              : HSM_JWT_DEFAULT_LIFETIME;
	if (o->jwt_clock_skew == 0)
		o->jwt_clock_skew = HSM_JWT_DEFAULT_CLOCK_SKEW;
	HSM_ENSURE(o->jwt_max_lifetime >= 1 && o->jwt_default_lifetime >= 1 &&
	               o->jwt_default_lifetime <= o->jwt_max_lifetime && o->jwt_clock_skew >= 1,
	           HSM_ERR_VALIDATION,
	           "token lifetimes must satisfy 1 <= default <= maximum, and the clock skew >= 1");
	return HSM_SUCCESS;
}

hsm_result hsm_server_new(const hsm_server_options *opt, hsm_server **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_server *s = calloc(1, sizeof(*s));
	HSM_ENSURE(s != NULL, HSM_ERR_NOMEM, "out of memory");
	s->opt = *opt;
	pthread_mutex_init(&s->stop_lock, NULL);
	/* The scheduler and the flusher sleep on it by the monotonic clock: a step of the
	 * wall clock back would otherwise stop their work for as long as the step. */
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->stop_cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&s->backup_lock, NULL);
	pthread_mutex_init(&s->akids_lock, NULL);
	pthread_mutex_init(&s->withheld.lock, NULL);
	s->akid_lookups = HSM_BUCKET_NEW;
	s->started = hsm_now();
	atomic_store(&s->backup_copies_missing, -1);
	/* What the files say now, before the HTTP server loads them; a reload
	 * (tls_reload.c) says it again of what it loads.  The stamps too: a file
	 * changed after this is loaded again by tls_watch. */
	pthread_mutex_init(&s->tls_reload_lock, NULL);
	hsm_server_tls_stamp(s);
	int64_t expiry = 0;
	if (opt->http.tls_cert != NULL &&
	    hsm_ok(hsm_http_tls_file_expiry(opt->http.tls_cert, &expiry)))
		atomic_store(&s->tls_cert_expiry, expiry); /* else the TLS set-up reports the fault */
	/* The bundle counts only where it is used (a reload loads it only then too). */
	if (opt->http.tls_client_ca != NULL && opt->http.client_auth != HSM_HTTP_CLIENT_AUTH_NONE &&
	    hsm_ok(hsm_http_tls_file_expiry(opt->http.tls_client_ca, &expiry)))
		atomic_store(&s->tls_ca_expiry, expiry);
	HSM_TRY(copy_opt(s->data_dir, sizeof(s->data_dir), opt->data_dir, "data_dir"));
	if (opt->audit_dir != NULL && *opt->audit_dir != '\0')
		HSM_TRY(hsm_strcpy(s->audit_dir, sizeof(s->audit_dir), opt->audit_dir));
	else
		HSM_CHECK((size_t)snprintf(s->audit_dir, sizeof(s->audit_dir), "%s/audit", s->data_dir) <
		              sizeof(s->audit_dir),
		          HSM_ERR_VALIDATION, "data_dir is too long");
	if (opt->backup_dir != NULL && *opt->backup_dir != '\0')
		HSM_TRY(hsm_strcpy(s->backup_dir, sizeof(s->backup_dir), opt->backup_dir));
	else
		HSM_CHECK((size_t)snprintf(s->backup_dir, sizeof(s->backup_dir), "%s/backups",
		                           s->data_dir) < sizeof(s->backup_dir),
		          HSM_ERR_VALIDATION, "data_dir is too long");
	if (opt->backup_copy_dir != NULL)
		HSM_TRY(hsm_strcpy(s->backup_copy_dir, sizeof(s->backup_copy_dir), opt->backup_copy_dir));
	if (opt->audit_copy_dir != NULL)
		HSM_TRY(hsm_strcpy(s->audit_copy_dir, sizeof(s->audit_copy_dir), opt->audit_copy_dir));
	if (s->opt.backup_retention_days == 0)
		s->opt.backup_retention_days = 90;
	if (s->opt.scheduler_interval == 0)
		s->opt.scheduler_interval = 5;
	if (s->opt.leader_lease == 0)
		s->opt.leader_lease = 30;
	HSM_TRY(copy_opt(s->node_id, sizeof(s->node_id), opt->node_id, "node_id"));
	HSM_TRY(copy_opt(s->region, sizeof(s->region), opt->region, "region"));
	HSM_TRY(copy_opt(s->account, sizeof(s->account), opt->account_id, "account_id"));
	s->opt.data_dir = s->data_dir;
	s->opt.audit_dir = s->audit_dir;
	s->opt.backup_dir = s->backup_dir;
	s->opt.backup_copy_dir = s->backup_copy_dir[0] ? s->backup_copy_dir : NULL;
	s->opt.audit_copy_dir = s->audit_copy_dir[0] ? s->audit_copy_dir : NULL;
	if (s->opt.lockout_threshold == 0)
		s->opt.lockout_threshold = 5;
	atomic_init(&s->lockout_threshold, s->opt.lockout_threshold);
	HSM_TRY(jwt_defaults(&s->opt));
	HSM_TRY(hsm_server_approval_ops(opt->approval_operations != NULL ? opt->approval_operations
	                                                                 : HSM_APPROVAL_OPS_DEFAULT,
	                                &s->approval_kms_ops, &s->approval_admin_ops));
	s->opt.approval_operations = NULL; /* parsed: the caller's text is not kept */
	HSM_TRY(open_parts(s));
	HSM_TRY(hsm_server_approvals_check(s));
	HSM_TRY(hsm_server_backup_init(s));
	*out = s;
	s = NULL;
out:
	hsm_server_free(s);
	return res;
}

/* ---- development mode ------------------------------------------------------ */

static hsm_result dev_share_path(hsm_server *s, char *out, size_t cap)
{
	HSM_ENSURE((size_t)snprintf(out, cap, "%s/%s", s->data_dir, DEV_SHARE_FILE) < cap,
	           HSM_ERR_VALIDATION, "data_dir is too long");
	return HSM_SUCCESS;
}

/*
 * Whether dir holds a backup file (a directory that cannot be read is said to, the
 * caution).  A path that is no directory holds none: the backup_dir check refuses it.
 */
static bool has_backups(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno != ENOENT && errno != ENOTDIR;
	bool found = false;
	for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
		size_t n = strlen(e->d_name), k = strlen(HSM_BACKUP_SUFFIX);
		found = n > k && strcmp(e->d_name + n - k, HSM_BACKUP_SUFFIX) == 0;
	}
	closedir(d);
	return found;
}

/*
 * A dev store is made only where no earlier one left anything: beside its
 * share, its trail or its backups, a missing, empty or uninitialized
 * hsmd.db is a store lost, and a new one would overwrite the only share
 * that opens those backups.  A trail counts only when it shows a store
 * (dev_trail.c): the one that starts which never initialized one left (a
 * first start that could not listen) is no reason to refuse, nor is the
 * trail this start began (trail_began_here).  Where hsmd.db is missing or
 * empty this runs before the store is opened, so a refusal creates nothing.
 */
static hsm_result dev_check_no_leftovers(hsm_server *s, bool trail_began_here)
{
	struct stat st;
	char share_path[4200], why[128] = "", note[160] = "";
	const char *what = NULL, *where = NULL;
	HSM_GUARD(dev_share_path(s, share_path, sizeof(share_path)));
	if (lstat(share_path, &st) == 0 || errno != ENOENT)
		what = "the share", where = share_path;
	else if (!trail_began_here &&
	         hsm_server_trail_shows_store(s->audit_dir, why, sizeof(why))) {
		what = "the audit trail in", where = s->audit_dir;
		snprintf(note, sizeof(note), " (%s)", why);
	} else if (has_backups(s->backup_dir))
		what = "the backups in", where = s->backup_dir;
	HSM_ENSURE(what == NULL, HSM_ERR_CONFLICT,
	           "data_dir %s %s, yet an earlier store left %s %s%s: no new dev store is made, "
	           "as its share would replace the one the old backups need. Restore a backup "
	           "into a new data directory (hsmctl restore --data-dir NEW --share %s FILE), "
	           "or move " DEV_SHARE_FILE ", the audit trail and the backups away",
	           s->data_dir,
	           s->dev_db_found ? "holds an uninitialized store (" HSM_STORE_DB_FILE
	                             " was never initialized)"
	                           : "has no store (" HSM_STORE_DB_FILE " missing or empty)",
	           what, where, note, share_path);
	return HSM_SUCCESS;
}

static hsm_result dev_init_or_unseal(hsm_server *s)
{
	char path[4200];
	hsm_buf share;
	hsm_unseal_progress p;
	HSM_GUARD(dev_share_path(s, path, sizeof(path)));
	hsm_buf_init_secure(&share);
	hsm_result r = HSM_SUCCESS;
	if (hsm_keystore_state(s->ks) == HSM_NODE_UNINITIALIZED) {
		/* Where hsmd.db was missing or empty, checked before the store was opened. */
		if (s->dev_db_found)
			r = dev_check_no_leftovers(s, hsm_audit_began_here(s->audit));
		if (hsm_ok(r))
			r = hsm_keystore_init(s->ks, 1, 1, NULL, true, &share);
		if (hsm_ok(r))
			r = hsm_write_file_atomic(path, share.data, share.len, 0600);
		hsm_server_event(s, "Init", NULL, 0, r, NULL, 0);
		if (hsm_ok(r))
			note_trail(s, true);
	} else if (hsm_keystore_state(s->ks) == HSM_NODE_SEALED) {
		r = hsm_read_own_file(path, 4096, &share);
		if (hsm_ok(r))
			r = hsm_keystore_unseal(s->ks, share.data, share.len, &p);
		hsm_server_event(s, "Unseal", NULL, 0, r, NULL, 0);
	}
	hsm_buf_free(&share);
	if (hsm_ok(r))
		hsm_audit_set_signer(s->audit, hsm_server_audit_signer, s->ks);
	return r;
}

hsm_result hsm_server_dev_bootstrap(hsm_server *s, const char *akid, const hsm_secret *secret)
{
	static const hsm_caller local = {.user = "dev-bootstrap", .access_key_id = "", .local = true};
	HSM_GUARD(dev_init_or_unseal(s));
	hsm_user_record u;
	if (hsm_failed(hsm_store_user_get(s->store, DEV_USER, &u)))
		HSM_GUARD(hsm_kms_user_create(s->kms, &local, DEV_USER,
		                              HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR));
	hsm_access_key_record k;
	memset(&k, 0, sizeof(k));
	hsm_result have = hsm_store_access_key_get(s->store, akid, &k);
	hsm_access_key_record_clear(&k);
	if (have.err == HSM_ERR_NOT_FOUND)
		HSM_GUARD(hsm_kms_access_key_import(s->kms, &local, DEV_USER, akid, secret));
	else
		HSM_GUARD(have);
	/* The secret of an existing key id must be the one given, or clients would fail later. */
	hsm_user_record who;
	hsm_secret *stored = NULL;
	HSM_GUARD(hsm_kms_credential(s->kms, akid, &who, &stored));
	bool same = hsm_secret_len(stored) == hsm_secret_len(secret) &&
	            hsm_ct_equal(hsm_secret_bytes(stored), hsm_secret_bytes(secret),
	                         hsm_secret_len(secret));
	hsm_secret_free(stored);
	HSM_ENSURE(same, HSM_ERR_CONFLICT,
	           "access key %s already exists in %s with another secret; use that secret or a "
	           "new data directory",
	           akid, s->data_dir);
	return HSM_SUCCESS;
}

/* ---- running ------------------------------------------------------------------- */

/* How often, at most, a store still found damaged is logged again. */
#define CORRUPT_LOG_EVERY_NS (60ULL * 1000 * 1000 * 1000)

/*
 * Requests that met a damaged store file (SQLITE_CORRUPT, SQLITE_NOTADB)
 * failed with KMSInternalException, and the node is no longer ready
 * (/readyz): logged when first seen, then at most once a minute while more
 * fail.  No full check runs at start (it would cost seconds on a large
 * store); the damage is found where a request reads it.
 */
static void note_corrupt_store(hsm_server *s)
{
	uint64_t seen = hsm_store_corrupt_seen(s->store), now = hsm_mono_ns();
	if (seen == s->corrupt_logged ||
	    (s->corrupt_logged != 0 && now - s->corrupt_logged_ns < CORRUPT_LOG_EVERY_NS))
		return;
	hsm_error("the store's database file is damaged: %llu operation(s) found it corrupt so "
	          "far (%llu since the last report); this node is not ready (/readyz) and stays "
	          "so: stop it, keep the damaged file for study and restore the latest backup "
	          "(hsmctl restore) into a new data directory",
	          (unsigned long long)seen, (unsigned long long)(seen - s->corrupt_logged));
	s->corrupt_logged = seen;
	s->corrupt_logged_ns = now;
}

/* Reads one small value: can this node reach its store?  Logs only changes. */
static void probe_store(hsm_server *s)
{
	hsm_buf id = {0};
	hsm_result r = hsm_store_meta_get(s->store, "store_id", &id);
	hsm_buf_free(&id);
	/* A probe that ran out of memory on this side says nothing of the store: a node
	 * called not ready for it would be taken out of service by its load balancer. */
	if (r.err == HSM_ERR_NOMEM)
		return;
	bool up = hsm_ok(r) || r.err == HSM_ERR_NOT_FOUND; /* NOT_FOUND: not initialized yet */
	bool was = atomic_exchange(&s->store_up, up);
	if (was && !up)
		hsm_log_failure("the store does not answer; this node is not ready");
	else if (!was && up)
		hsm_info("the store answers again");
	note_corrupt_store(s);
}

typedef struct approval_counts {
	hsm_kms *kms;
	uint64_t open;     /* waiting for custodians: valid approvals short of the quorum */
	uint64_t approved; /* approved, waiting for the requester to send the request again */
	hsm_approval_cursor last; /* where the next page goes on */
} approval_counts;

static hsm_result count_approval(const hsm_approval_record *a, void *arg)
{
	approval_counts *c = arg;
	c->last.created = a->created;
	memcpy(c->last.id, a->id, sizeof(c->last.id));
	if (hsm_kms_approval_approved(c->kms, a))
		c->approved++;
	else
		c->open++;
	return HSM_SUCCESS;
}

/* Counts the store-wide gauges of /metrics (zero while sealed, as the store's keys are then
 * not this node's to report).  A failure keeps the last counts, whose time then falls behind. */
static void count_store_gauges(hsm_server *s)
{
	probe_store(s);
	if (!atomic_load(&s->store_up))
		return;
	uint64_t keys = 0, certs = 0, certs_expiring = 0;
	approval_counts approvals = {s->kms, 0, 0, {0, ""}};
	hsm_due_counts due = {0, 0, 0, 0, 0};
	bool certs_counted = true;
	if (hsm_keystore_state(s->ks) == HSM_NODE_UNSEALED) {
		hsm_result r = hsm_store_key_count(s->store, &keys);
		if (hsm_ok(r))
			r = hsm_store_keys_due_count(s->store, hsm_now() + 7 * 86400,
			                             hsm_now() - HSM_ROTATION_OVERDUE_S, &due);
		/* Every open request, page after page (a page ends at a few MiB of their texts). */
		bool more = s->opt.approval_quorum > 0;
		for (bool first = true; hsm_ok(r) && more; first = false)
			r = hsm_store_approval_list(s->store, true, hsm_now(),
			                            first ? NULL : &approvals.last, HSM_STORE_LIST_MAX,
			                            count_approval, &approvals, &more);
		if (hsm_failed(r)) {
			atomic_fetch_add(&s->metrics.scheduler_failures, 1);
			hsm_log_failure("counting keys for /metrics");
			return;
		}
		/* Certificates apart: a failure to count them keeps their last counts, not the keys'. */
		r = hsm_store_cert_count(s->store, &certs);
		if (hsm_ok(r))
			r = hsm_store_cert_count_expiring(s->store, hsm_now() + 30 * 86400,
			                                  &certs_expiring);
		if (hsm_failed(r)) {
			atomic_fetch_add(&s->metrics.scheduler_failures, 1);
			hsm_log_failure("counting certificates for /metrics");
			certs_counted = false;
		}
	}
	atomic_store(&s->gauge_keys, keys);
	atomic_store(&s->gauge_rotations_due, due.rotations);
	atomic_store(&s->gauge_expirations_due, due.expirations);
	atomic_store(&s->gauge_material_needed, due.material_needed);
	atomic_store(&s->gauge_rotations_overdue, due.overdue);
	atomic_store(&s->gauge_deletions_overdue, due.deletions_overdue);
	atomic_store(&s->gauge_approvals_open, approvals.open);
	atomic_store(&s->gauge_approvals_approved, approvals.approved);
	if (certs_counted) {
		atomic_store(&s->gauge_certs, certs);
		atomic_store(&s->gauge_certs_expiring, certs_expiring);
	}
	/* Sealed too: the users need no master key, and a start would count them so. */
	unsigned custodians = 0;
	if (s->opt.approval_quorum > 0) {
		if (hsm_ok(hsm_kms_custodians_in(s->store, &custodians)))
			atomic_store(&s->gauge_custodians, custodians);
		else {
			atomic_fetch_add(&s->metrics.scheduler_failures, 1);
			hsm_log_failure("counting custodians for /metrics");
		}
	}
	atomic_store(&s->gauges_counted_at, hsm_now());
}

void hsm_server_recount(hsm_server *s)
{
	pthread_mutex_lock(&s->stop_lock);
	s->recount = true;
	pthread_cond_broadcast(&s->stop_cond);
	pthread_mutex_unlock(&s->stop_lock);
}

/*
 * Asks for the store's leadership when this node can do the scheduled work
 * (unsealed, its audit trail accepting records), and gives it up when it
 * cannot, so another node sharing the store does it instead.  Logs changes.
 */
static bool lead(hsm_server *s, bool can_work)
{
	bool leading = false;
	hsm_result r = hsm_store_lead(s->store, can_work, s->opt.leader_lease * 1000U, &leading);
	bool was = atomic_exchange(&s->leading, leading);
	/* A try that fails while not leading (a node older than the store's schema) is said once. */
	if (can_work) {
		bool refused = hsm_failed(r) && !was;
		if (refused && !s->lead_refused)
			hsm_log_failure("this node cannot take the store's leadership");
		else if (hsm_ok(r) && s->lead_refused)
			hsm_info("this node can take the store's leadership again");
		if (refused || hsm_ok(r))
			s->lead_refused = refused;
	}
	if (hsm_failed(r) && was)
		hsm_log_failure("the store's leadership is lost");
	else if (leading && !was)
		hsm_info("this node runs the store's scheduled work (rotation, destruction, backups)");
	else if (!leading && was)
		hsm_info("this node no longer runs the store's scheduled work");
	/*
	 * The copies backup_copy_dir lacks are the leader's to count and make: what this
	 * node counted when it last led is stale (another leader made backups, and copied
	 * them or failed to), so a new leader looks again at its first round, and a node
	 * that gave the lead up no longer reports its old count (unknown: shown as 0).
	 */
	if (leading != was) {
		atomic_store(&s->backup_copies_missing, -1);
		atomic_store(&s->backup_copy_next_try, 0);
	}
	return leading;
}

/*
 * Each scheduler pass proves the node still holds its id.  A database that
 * cannot be reached changes nothing here (the node is unready for it
 * already).  An id another node took while this node's session was lost
 * (the database ended it: a network cut, a restart, an administrator) means
 * two running nodes share it: this one stops, as for SIGTERM, and exits
 * non-zero, so that it does nothing more under an id that is not its own.
 * An id held by another node adopting its old outbox rows (the leader saw
 * it free while this node's session was lost) is waited for instead: the
 * hold ends by itself.
 */
static void check_node_id(hsm_server *s)
{
	hsm_result r = claim_node_waiting(s, 0, true);
	pthread_mutex_lock(&s->stop_lock);
	bool stopping = s->stopping;
	pthread_mutex_unlock(&s->stop_lock);
	if (stopping || r.err != HSM_ERR_CONFLICT || atomic_exchange(&s->node_id_lost, true))
		return;
	hsm_log_failure("this node's id was taken while its session to the store was lost; stopping");
	kill(getpid(), SIGTERM); /* main's sigwait: the orderly stop */
}

bool hsm_server_node_id_lost(const hsm_server *s)
{
	return atomic_load(&s->node_id_lost);
}

/*
 * An unseal whose time is up is wiped now, not when someone next asks the
 * node, and recorded: custodians who find the progress back at 0 (and the
 * auditors) see on the trail that the shares given were dropped, and how many.
 */
static void note_unseal_abandoned(hsm_server *s)
{
	unsigned n = hsm_keystore_unseal_expire(s->ks);
	if (n == 0)
		return;
	char count[12];
	snprintf(count, sizeof(count), "%u", n);
	hsm_audit_field f[] = {{"shares_forgotten", count}};
	hsm_server_event(s, "UnsealAbandoned", NULL, 0, HSM_SUCCESS, f, 1);
}

/* Keys whose records a scheduler pass reads again to drop unusable material (rotation.c). */
#define MATERIAL_SWEEP_MAX 1000

static void *scheduler_main(void *arg)
{
	hsm_server *s = arg;
	hsm_thread_name("hsmd-sched");
	bool sweep_failing = false;
	/* The next full round: a recount asked for between rounds does not put it off, or
	 * recounts asked for more often than the interval would stop the scheduled work. */
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += s->opt.scheduler_interval;
	pthread_mutex_lock(&s->stop_lock);
	while (!s->stopping) {
		int rc = 0;
		while (!s->stopping && !s->recount && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&s->stop_cond, &s->stop_lock, &until);
		if (s->stopping)
			break;
		bool recount_only = s->recount && rc != ETIMEDOUT;
		s->recount = false;
		pthread_mutex_unlock(&s->stop_lock);
		note_unseal_abandoned(s);
		/* The probe first: a store that does not answer (frozen, cut off) makes the node
		 * unready after one wait, not after the node id's and the master key's checks
		 * have each waited their full limit on it as well. */
		count_store_gauges(s);
		if (atomic_load(&s->store_up)) {
			check_node_id(s);
			if (!recount_only)
				hsm_server_check_master_key(s);
		}
		if (!recount_only)
			hsm_server_tls_watch(s);
		if (hsm_keystore_state(s->ks) != HSM_NODE_UNINITIALIZED)
			note_trail(s, false);
		bool can_work = hsm_keystore_state(s->ks) == HSM_NODE_UNSEALED &&
		                hsm_audit_accepting(s->audit);
		/* Every node: material of keys another node disabled or destroyed goes here too
		 * (a failure is said once a streak: the store's own outage is reported apart). */
		size_t forgotten = 0;
		if (!recount_only && hsm_keystore_state(s->ks) == HSM_NODE_UNSEALED) {
			bool failed = hsm_failed(
			    hsm_kms_sweep_material(s->kms, MATERIAL_SWEEP_MAX, &forgotten));
			if (failed && !sweep_failing)
				hsm_log_failure("dropping the material of keys changed on other nodes");
			sweep_failing = failed;
		}
		/* A wall clock run ahead of the time this node has been up (a bad time server)
		 * would make every destruction, expiry and rotation due at once, and the first two
		 * cannot be undone: held, as audit retention is, until the clock agrees again. */
		int64_t ahead_ms = hsm_audit_clock_ahead_ms(s->audit);
		bool ahead = ahead_ms > HSM_AUDIT_CLOCK_AHEAD_MS;
		bool clock_held = atomic_exchange(&s->scheduler_clock_held, ahead); /* until now */
		if (ahead && !clock_held)
			hsm_warn("scheduled key work holds: the wall clock is %lld s ahead of the time "
			         "hsmd has run; no key is destroyed, expired or rotated until it agrees "
			         "again (check the clock)",
			         (long long)(ahead_ms / 1000));
		else if (!ahead && clock_held)
			hsm_info("scheduled key work runs again: the wall clock agrees with the time elapsed");
		if (lead(s, can_work) && !recount_only) {
			size_t done = 0;
			sched_action action = {.s = s};
			action_begin(&action);
			hsm_result r = ahead ? HSM_SUCCESS : hsm_kms_run_due(s->kms, &done);
			/* A commit no event followed has no record to wait for. */
			action_end(&action, true);
			atomic_fetch_add(&s->metrics.scheduler_actions, done);
			if (hsm_failed(r)) {
				atomic_fetch_add(&s->metrics.scheduler_failures, 1);
				hsm_log_failure("scheduled key work");
			}
			/* Asked again: the key work may have taken long, and a backup made after the
			 * lead was lost would be made twice, here and by the new leader. */
			if (lead(s, can_work)) {
				hsm_server_backup_if_due(s);
				/* Rows of nodes that did not come back (outbox.h); safe on any node, done by one. */
				hsm_outbox_adopt(s);
			}
		}
		hsm_stack_wipe(); /* rotations make key material; backups and sweeps read it */
		if (!recount_only) {
			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_sec += s->opt.scheduler_interval;
		}
		pthread_mutex_lock(&s->stop_lock);
	}
	pthread_mutex_unlock(&s->stop_lock);
	return NULL;
}

/* Writes the uses of keys noted since the last pass; logs a failure once per streak. */
static void flush_usage(hsm_server *s, bool *failing)
{
	hsm_result r = hsm_usage_flush(s->usage);
	if (hsm_failed(r) && !*failing)
		hsm_log_failure("recording the last uses of keys (GetKeyLastUsage); kept in memory, "
		                "retried every second");
	else if (hsm_ok(r) && *failing)
		hsm_info("the last uses of keys are recorded in the store again");
	*failing = hsm_failed(r);
}

/*
 * Every second: the summaries of refused requests that are due and the list
 * of access key ids; every key_usage_flush_ms, the last uses of keys.
 */
static void *flusher_main(void *arg)
{
	hsm_server *s = arg;
	bool failing = false;
	int64_t period_ms = s->opt.key_usage_flush_ms != 0 ? (int64_t)s->opt.key_usage_flush_ms
	                                                   : USAGE_FLUSH_MS;
	int64_t tick_ms = period_ms < 1000 ? period_ms : 1000;
	int64_t usage_due = hsm_now_ms() + period_ms;
	hsm_thread_name("hsmd-usage");
	pthread_mutex_lock(&s->stop_lock);
	while (!s->stopping) {
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += (time_t)(tick_ms / 1000);
		until.tv_nsec += (long)(tick_ms % 1000) * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		int rc = 0;
		while (!s->stopping && rc != ETIMEDOUT)
			rc = pthread_cond_timedwait(&s->stop_cond, &s->stop_lock, &until);
		pthread_mutex_unlock(&s->stop_lock);
		int64_t now = hsm_now_ms();
		if (now >= usage_due || now < usage_due - period_ms) { /* due, or the clock stepped back */
			flush_usage(s, &failing);
			usage_due = now + period_ms;
		}
		hsm_server_flush_refusals(s, false);
		hsm_server_akids_refresh(s);
		hsm_outbox_pass(s);
		hsm_server_flush_withheld(s, false);
		pthread_mutex_lock(&s->stop_lock);
	}
	pthread_mutex_unlock(&s->stop_lock);
	return NULL;
}

hsm_result hsm_server_start(hsm_server *s)
{
	count_store_gauges(s); /* the first scrape reads counts, not zeros */
	hsm_server_akids_refresh(s);
	HSM_GUARD(blame_http(s, hsm_http_server_start(s->http)));
	HSM_ENSURE(pthread_create(&s->scheduler, NULL, scheduler_main, s) == 0, HSM_ERR_INTERNAL,
	           "cannot start the scheduler thread");
	s->scheduler_running = true;
	HSM_ENSURE(pthread_create(&s->flusher, NULL, flusher_main, s) == 0, HSM_ERR_INTERNAL,
	           "cannot start the key usage thread");
	s->flusher_running = true;
	return HSM_SUCCESS;
}

void hsm_server_stop(hsm_server *s)
{
	pthread_mutex_lock(&s->stop_lock);
	s->stopping = true;
	pthread_cond_broadcast(&s->stop_cond);
	pthread_mutex_unlock(&s->stop_lock);
	if (s->scheduler_running) {
		pthread_join(s->scheduler, NULL);
		s->scheduler_running = false;
	}
	if (s->flusher_running) {
		pthread_join(s->flusher, NULL);
		s->flusher_running = false;
	}
	if (s->http != NULL)
		hsm_http_server_stop(s->http, 5000);
	/* After the workers: nothing submits any more.  Before anything is freed:
	 * a running job still uses the keystore, the store and the audit trail. */
	hsm_lane_stop(s->lane);
}

void hsm_server_free(hsm_server *s)
{
	if (s == NULL)
		return;
	hsm_server_stop(s);
	hsm_http_server_free(s->http);
	hsm_lane_free(s->lane);
	/* Nothing is refused any more: what was counted but not yet written goes now. */
	if (s->audit != NULL && s->refusals != NULL)
		hsm_server_flush_refusals(s, true);
	if (s->audit != NULL)
		hsm_server_flush_withheld(s, true);
	hsm_refusals_free(s->refusals);
	s->refusals = NULL;
	if (s->audit != NULL && s->ks != NULL)
		hsm_server_event(s, "Shutdown", NULL, 0, HSM_SUCCESS, NULL, 0);
	/*
	 * Before the keystore goes: while unsealed, the shutdown checkpoint is
	 * signed, so no record of the trail, its end included, is left to the
	 * chain alone.  Close returns only once the signer is no longer used.
	 */
	uint64_t durable = 0;
	bool closed = hsm_audit_close_durable(s->audit, &durable);
	/* The rows of the records the close made durable go.  A trail that could
	 * not close (a stuck disk) may still answer records: its outbox stays. */
	if (s->outbox != NULL && s->store != NULL && closed)
		hsm_outbox_final(s, durable);
	if (closed)
		hsm_outbox_free(s->outbox);
	hsm_server_auth_free(s);
	hsm_kms_free(s->kms);
	hsm_keystore_free(s->ks);
	/* After the trail's last callback, which may note a use; before the store closes. */
	if (s->usage != NULL) {
		if (hsm_failed(hsm_usage_flush(s->usage)))
			hsm_log_failure("recording the last uses of keys at shutdown; those since "
			                "the previous flush are lost (the audit trail holds them)");
		hsm_usage_free(s->usage);
	}
	hsm_store_close(s->store);
	pthread_cond_destroy(&s->stop_cond);
	pthread_mutex_destroy(&s->stop_lock);
	pthread_mutex_destroy(&s->backup_lock);
	pthread_mutex_destroy(&s->tls_reload_lock);
	hsm_server_akids_free(s);
	pthread_mutex_destroy(&s->akids_lock);
	pthread_mutex_destroy(&s->withheld.lock);
	free(s);
}

uint16_t hsm_server_port(hsm_server *s)
{
	return hsm_http_server_port(s->http);
}

/* ---- /metrics --------------------------------------------------------------------- */

/* The configuration read again on SIGHUP (config_reload.c). */
static hsm_result render_config(const hsm_server *s, hsm_buf *out)
{
	return hsm_buf_printf(
	    out,
	    "# HELP hsmd_config_reloads_total Readings of the configuration after start (SIGHUP), "
	    "by result.\n"
	    "# TYPE hsmd_config_reloads_total counter\n"
	    "hsmd_config_reloads_total{result=\"success\"} %llu\n"
	    "hsmd_config_reloads_total{result=\"failure\"} %llu\n"
	    "# HELP hsmd_config_last_reload_successful 0 when the configuration did not load at "
	    "the last SIGHUP: as it stands it would not start the node; 1 otherwise.\n"
	    "# TYPE hsmd_config_last_reload_successful gauge\n"
	    "hsmd_config_last_reload_successful %d\n"
	    "# HELP hsmd_config_restart_pending Settings the last SIGHUP found changed that take "
	    "effect only at the next start.\n"
	    "# TYPE hsmd_config_restart_pending gauge\n"
	    "hsmd_config_restart_pending %u\n",
	    (unsigned long long)atomic_load(&s->config_reloads),
	    (unsigned long long)atomic_load(&s->config_reload_failures),
	    atomic_load(&s->config_reload_failing) ? 0 : 1, atomic_load(&s->config_restart_pending));
}

/* When the TLS files last loaded stop serving (only those configured), and the reloads. */
static hsm_result render_tls(const hsm_server *s, hsm_buf *out)
{
	int64_t cert = atomic_load(&s->tls_cert_expiry), ca = atomic_load(&s->tls_ca_expiry);
	if (s->opt.http.tls_cert == NULL)
		return HSM_SUCCESS;
	HSM_GUARD(hsm_buf_printf(out,
	                         "# HELP hsmd_tls_reloads_total Loads of the TLS files after start "
	                         "(SIGHUP, or tls_watch seeing a change), by result; after a "
	                         "failure new connections still get what was loaded before.\n"
	                         "# TYPE hsmd_tls_reloads_total counter\n"
	                         "hsmd_tls_reloads_total{result=\"success\"} %llu\n"
	                         "hsmd_tls_reloads_total{result=\"failure\"} %llu\n"
	                         "# HELP hsmd_tls_last_reload_successful 0 when the last load of "
	                         "the TLS files failed (new connections get what was loaded "
	                         "before), 1 otherwise.\n"
	                         "# TYPE hsmd_tls_last_reload_successful gauge\n"
	                         "hsmd_tls_last_reload_successful %d\n",
	                         (unsigned long long)atomic_load(&s->tls_reloads),
	                         (unsigned long long)atomic_load(&s->tls_reload_failures),
	                         atomic_load(&s->tls_reload_failing) ? 0 : 1));
	if (cert == 0 && ca == 0)
		return HSM_SUCCESS;
	HSM_GUARD(hsm_buf_put_str(out, "# HELP hsmd_tls_certificate_expiry_time_seconds The earliest "
	                               "notAfter among the certificates of tls_cert (the chain "
	                               "served) and of tls_client_ca, as last loaded.\n"
	                               "# TYPE hsmd_tls_certificate_expiry_time_seconds gauge\n"));
	if (cert != 0)
		HSM_GUARD(hsm_buf_printf(out,
		                         "hsmd_tls_certificate_expiry_time_seconds{file=\"tls_cert\"} "
		                         "%lld\n",
		                         (long long)cert));
	if (ca != 0)
		HSM_GUARD(hsm_buf_printf(out,
		                         "hsmd_tls_certificate_expiry_time_seconds{file=\"tls_client_ca\"} "
		                         "%lld\n",
		                         (long long)ca));
	return HSM_SUCCESS;
}

/*
 * Space left on the file systems of the audit trail, the backups and the
 * data directory, read at each scrape: the trail keeps years of records, and
 * a full disk stops the node (a request that cannot be audited is refused);
 * on a full data directory the SQLite store refuses every write (and a
 * backup's snapshot, made there first, fails).
 */
static hsm_result render_disk(const hsm_server *s, hsm_buf *out)
{
	static const char *const names[] = {"audit", "backup", "data"};
	const char *dirs[] = {s->audit_dir, s->backup_dir, s->data_dir};
	for (size_t i = 0; i < 3; i++) {
		HSM_GUARD(hsm_buf_printf(out,
		                         "# HELP hsmd_%s_disk_free_bytes Bytes an unprivileged writer may "
		                         "still use on the file system of %s_dir.\n"
		                         "# TYPE hsmd_%s_disk_free_bytes gauge\n",
		                         names[i], names[i], names[i]));
		struct statvfs v;
		if (dirs[i][0] != '\0' && statvfs(dirs[i], &v) == 0)
			HSM_GUARD(hsm_buf_printf(out, "hsmd_%s_disk_free_bytes %llu\n", names[i],
			                         (unsigned long long)v.f_bavail * v.f_frsize));
	}
	return HSM_SUCCESS;
}

static hsm_result render_audit_syncs(const hsm_audit_stats *as, hsm_buf *out)
{
	HSM_GUARD(hsm_buf_put_str(
	    out, "# HELP hsmd_audit_sync_duration_seconds fdatasync of the audit file: every "
	         "acknowledged record is durable within fsync_max_lag_ms of its write (with "
	         "audit_ack_durable, before it is acknowledged).\n"
	         "# TYPE hsmd_audit_sync_duration_seconds histogram\n"));
	uint64_t cumulative = 0;
	for (size_t b = 0; b < HSM_AUDIT_SYNC_BUCKETS; b++) {
		cumulative += as->sync_buckets[b];
		HSM_GUARD(hsm_buf_printf(out, "hsmd_audit_sync_duration_seconds_bucket{le=\"%g\"} %llu\n",
		                         hsm_audit_sync_bucket_le[b], (unsigned long long)cumulative));
	}
	cumulative += as->sync_buckets[HSM_AUDIT_SYNC_BUCKETS];
	return hsm_buf_printf(
	    out,
	    "hsmd_audit_sync_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
	    "hsmd_audit_sync_duration_seconds_sum %.6f\n"
	    "hsmd_audit_sync_duration_seconds_count %llu\n"
	    "# HELP hsmd_audit_acks_held_total Times responses waited for an audit sync that ran "
	    "past fsync_max_lag_ms.\n"
	    "# TYPE hsmd_audit_acks_held_total counter\nhsmd_audit_acks_held_total %llu\n"
	    "# HELP hsmd_audit_acks_held_seconds_total Time responses waited for such syncs.\n"
	    "# TYPE hsmd_audit_acks_held_seconds_total counter\n"
	    "hsmd_audit_acks_held_seconds_total %.6f\n",
	    (unsigned long long)cumulative, as->sync_seconds, (unsigned long long)cumulative,
	    (unsigned long long)as->acks_held, as->acks_held_seconds);
}

hsm_result hsm_server_render_metrics(hsm_server *s, hsm_buf *out)
{
	hsm_node_state st = hsm_keystore_state(s->ks);
	hsm_audit_stats as;
	hsm_audit_get_stats(s->audit, &as);
	hsm_ks_stats ks;
	hsm_ks_get_stats(s->ks, &ks);
	HSM_GUARD(hsm_buf_printf(
	    out,
	    "# HELP hsmd_up 1 while the process answers.\n"
	    "# TYPE hsmd_up gauge\nhsmd_up 1\n"
	    "# HELP hsmd_sealed 1 while the master key is sealed.\n"
	    "# TYPE hsmd_sealed gauge\nhsmd_sealed %d\n"
	    "# HELP hsmd_error_state 1 when the node stopped serving after an unrecoverable fault.\n"
	    "# TYPE hsmd_error_state gauge\nhsmd_error_state %d\n"
	    "# HELP hsmd_start_time_seconds When this process started (Unix seconds).\n"
	    "# TYPE hsmd_start_time_seconds gauge\nhsmd_start_time_seconds %lld\n"
	    "# HELP hsmd_keys Keys in the store, not destroyed (counted every few seconds).\n"
	    "# TYPE hsmd_keys gauge\nhsmd_keys %llu\n"
	    "# HELP hsmd_keys_rotation_due_7d Keys whose automatic rotation is due within 7 days.\n"
	    "# TYPE hsmd_keys_rotation_due_7d gauge\nhsmd_keys_rotation_due_7d %llu\n"
	    "# HELP hsmd_keys_rotation_material_needed_7d Imported keys whose rotation is due within 7 "
	    "days with no new key material imported to rotate to.\n"
	    "# TYPE hsmd_keys_rotation_material_needed_7d gauge\n"
	    "hsmd_keys_rotation_material_needed_7d %llu\n"
	    "# HELP hsmd_keys_rotation_overdue Keys whose rotation date passed more than an hour ago "
	    "without a rotation.\n"
	    "# TYPE hsmd_keys_rotation_overdue gauge\nhsmd_keys_rotation_overdue %llu\n"
	    "# HELP hsmd_keys_deletion_overdue Keys scheduled for deletion whose deletion date passed "
	    "more than an hour ago and that are not destroyed.\n"
	    "# TYPE hsmd_keys_deletion_overdue gauge\nhsmd_keys_deletion_overdue %llu\n"
	    "# HELP hsmd_keys_material_expiring_7d Keys whose imported key material expires (and is "
	    "deleted, leaving the key unusable) within 7 days, or has expired.\n"
	    "# TYPE hsmd_keys_material_expiring_7d gauge\nhsmd_keys_material_expiring_7d %llu\n"
	    "# HELP hsmd_keys_counted_time_seconds When the key gauges were last counted.\n"
	    "# TYPE hsmd_keys_counted_time_seconds gauge\nhsmd_keys_counted_time_seconds %lld\n"
	    "# HELP hsmd_scheduler_interval_seconds How often the key gauges are counted and the "
	    "scheduled work runs (scheduler_interval_seconds).\n"
	    "# TYPE hsmd_scheduler_interval_seconds gauge\nhsmd_scheduler_interval_seconds %u\n"
	    "# HELP hsmd_approvals_open Approval requests waiting for custodians (approval_quorum).\n"
	    "# TYPE hsmd_approvals_open gauge\nhsmd_approvals_open %llu\n"
	    "# HELP hsmd_approvals_approved Approval requests custodians approved, waiting for the "
	    "requester to send the request again.\n"
	    "# TYPE hsmd_approvals_approved gauge\nhsmd_approvals_approved %llu\n"
	    "# HELP hsmd_approval_quorum Custodians' approvals a sensitive request needs "
	    "(approval_quorum; 0: none).\n"
	    "# TYPE hsmd_approval_quorum gauge\nhsmd_approval_quorum %u\n"
	    "# HELP hsmd_approval_custodians Custodians who could approve now: enabled, holding an "
	    "active access key (counted while approval_quorum > 0).\n"
	    "# TYPE hsmd_approval_custodians gauge\nhsmd_approval_custodians %llu\n"
	    "# HELP hsmd_certificates Certificates kept beside the keys.\n"
	    "# TYPE hsmd_certificates gauge\nhsmd_certificates %llu\n"
	    "# HELP hsmd_certificates_expiring_30d Certificates whose notAfter is within 30 days, "
	    "or past.\n"
	    "# TYPE hsmd_certificates_expiring_30d gauge\nhsmd_certificates_expiring_30d %llu\n"
	    "# HELP hsmd_audit_healthy 1 while the audit trail takes records.\n"
	    "# TYPE hsmd_audit_healthy gauge\nhsmd_audit_healthy %d\n"
	    "# HELP hsmd_store_up Whether the store answered the last probe (every scheduler round).\n"
	    "# TYPE hsmd_store_up gauge\nhsmd_store_up %d\n"
	    "# HELP hsmd_store_corrupt_errors_total Store operations that found its database file "
	    "damaged (SQLite: malformed, not a database); the node is not ready from the first.\n"
	    "# TYPE hsmd_store_corrupt_errors_total counter\nhsmd_store_corrupt_errors_total %llu\n"
	    "# HELP hsmd_scheduler_leader Whether this node runs the store's scheduled work "
	    "(rotation, destruction, scheduled backups): one node of those sharing a store.\n"
	    "# TYPE hsmd_scheduler_leader gauge\nhsmd_scheduler_leader %d\n"
	    "# HELP hsmd_audit_records_total Records written to the audit trail.\n"
	    "# TYPE hsmd_audit_records_total counter\nhsmd_audit_records_total %llu\n"
	    "# HELP hsmd_audit_failed_records_total Records the audit trail could not write.\n"
	    "# TYPE hsmd_audit_failed_records_total counter\nhsmd_audit_failed_records_total %llu\n"
	    "# HELP hsmd_audit_outages_total Times the audit trail stopped taking records.\n"
	    "# TYPE hsmd_audit_outages_total counter\nhsmd_audit_outages_total %llu\n"
	    "# HELP hsmd_audit_records_recovered_total Changes recorded after the fact: requests "
	    "that changed the store but whose own records were lost to a stop or an outage "
	    "(RequestRecordRecovered).\n"
	    "# TYPE hsmd_audit_records_recovered_total counter\nhsmd_audit_records_recovered_total "
	    "%llu\n"
	    "# HELP hsmd_audit_records_adopted_total Those of them this node wrote for the audit "
	    "outbox rows of another node that did not come back (outbox_adopt_after_seconds).\n"
	    "# TYPE hsmd_audit_records_adopted_total counter\nhsmd_audit_records_adopted_total "
	    "%llu\n"
	    "# HELP hsmd_audit_next_sequence The sequence number of the next audit record.\n"
	    "# TYPE hsmd_audit_next_sequence gauge\nhsmd_audit_next_sequence %llu\n"
	    "# HELP hsmd_audit_files_expired_total Audit files deleted by the retention.\n"
	    "# TYPE hsmd_audit_files_expired_total counter\nhsmd_audit_files_expired_total %llu\n"
	    "# HELP hsmd_audit_files_copied_total Closed audit files copied to audit_copy_dir.\n"
	    "# TYPE hsmd_audit_files_copied_total counter\nhsmd_audit_files_copied_total %llu\n"
	    "# HELP hsmd_audit_copy_failures_total Audit files not copied to audit_copy_dir when "
	    "tried (retried each pass: after a rotation, hourly), or expired copies not deleted.\n"
	    "# TYPE hsmd_audit_copy_failures_total counter\nhsmd_audit_copy_failures_total %llu\n"
	    "# HELP hsmd_audit_retention_held 1 when the last audit retention pass deleted nothing "
	    "because the wall clock ran more than an hour ahead of the time hsmd has run, or kept "
	    "files that expire only by a clock already more than a week ahead of the trail's "
	    "newest record at start.\n"
	    "# TYPE hsmd_audit_retention_held gauge\nhsmd_audit_retention_held %d\n"
	    "# HELP hsmd_audit_retention_blocked 1 when the last audit retention pass deleted "
	    "nothing because records are missing among the files it would delete or the first "
	    "it keeps (deleted by hand, or lost): put them back.\n"
	    "# TYPE hsmd_audit_retention_blocked gauge\nhsmd_audit_retention_blocked %d\n"
	    "# HELP hsmd_audit_low_space 1 while the audit disk has no room for the space hsmd "
	    "keeps ahead of the trail: requests are refused until there is.\n"
	    "# TYPE hsmd_audit_low_space gauge\nhsmd_audit_low_space %d\n"
	    "# HELP hsmd_key_cache_hits_total Key lookups answered from the cache.\n"
	    "# TYPE hsmd_key_cache_hits_total counter\nhsmd_key_cache_hits_total %llu\n"
	    "# HELP hsmd_key_cache_misses_total Key lookups that read the store.\n"
	    "# TYPE hsmd_key_cache_misses_total counter\nhsmd_key_cache_misses_total %llu\n"
	    "# HELP hsmd_key_cache_entries Keys held in the cache.\n"
	    "# TYPE hsmd_key_cache_entries gauge\nhsmd_key_cache_entries %llu\n"
	    "# HELP hsmd_lane_requests Long requests (key generation, store writes, administration) "
	    "queued or running beside the HTTP workers.\n"
	    "# TYPE hsmd_lane_requests gauge\nhsmd_lane_requests %zu\n",
	    st != HSM_NODE_UNSEALED, st == HSM_NODE_ERROR, (long long)s->started,
	    (unsigned long long)atomic_load(&s->gauge_keys),
	    (unsigned long long)atomic_load(&s->gauge_rotations_due),
	    (unsigned long long)atomic_load(&s->gauge_material_needed),
	    (unsigned long long)atomic_load(&s->gauge_rotations_overdue),
	    (unsigned long long)atomic_load(&s->gauge_deletions_overdue),
	    (unsigned long long)atomic_load(&s->gauge_expirations_due),
	    (long long)atomic_load(&s->gauges_counted_at), (unsigned)s->opt.scheduler_interval,
	    (unsigned long long)atomic_load(&s->gauge_approvals_open),
	    (unsigned long long)atomic_load(&s->gauge_approvals_approved),
	    (unsigned)s->opt.approval_quorum, (unsigned long long)atomic_load(&s->gauge_custodians),
	    (unsigned long long)atomic_load(&s->gauge_certs),
	    (unsigned long long)atomic_load(&s->gauge_certs_expiring), hsm_audit_healthy(s->audit),
	    (int)atomic_load(&s->store_up),
	    (unsigned long long)hsm_store_corrupt_seen(s->store), (int)atomic_load(&s->leading),
	    (unsigned long long)as.written, (unsigned long long)as.refused,
	    (unsigned long long)as.outages, (unsigned long long)hsm_outbox_recovered(s->outbox),
	    (unsigned long long)hsm_outbox_adopted(s->outbox),
	    (unsigned long long)as.next_seq,
	    (unsigned long long)as.files_expired, (unsigned long long)as.files_copied,
	    (unsigned long long)as.copy_failures, (int)as.retention_held,
	    (int)as.retention_blocked, (int)as.low_space,
	    (unsigned long long)ks.cache_hits, (unsigned long long)ks.cache_misses,
	    (unsigned long long)ks.cache_entries, s->lane != NULL ? hsm_lane_depth(s->lane) : 0));
	HSM_GUARD(hsm_buf_printf(
	    out,
	    "# HELP hsmd_audit_syslog_dropped_total Audit records not forwarded to syslog "
	    "(audit_syslog): its socket not reached or refusing them, or the forwarding queue "
	    "full.  The audit files hold them all.\n"
	    "# TYPE hsmd_audit_syslog_dropped_total counter\nhsmd_audit_syslog_dropped_total %llu\n"
	    "# HELP hsmd_audit_syslog_cut_total Audit records forwarded to syslog cut to their "
	    "first 8192 bytes.\n"
	    "# TYPE hsmd_audit_syslog_cut_total counter\nhsmd_audit_syslog_cut_total %llu\n"
	    "# HELP hsmd_scheduler_clock_held 1 while the wall clock runs more than an hour ahead "
	    "of the time hsmd has run: no key is destroyed, expired or rotated, and no backup "
	    "deleted, meanwhile.\n"
	    "# TYPE hsmd_scheduler_clock_held gauge\nhsmd_scheduler_clock_held %d\n",
	    (unsigned long long)as.syslog_dropped, (unsigned long long)as.syslog_cut,
	    (int)atomic_load(&s->scheduler_clock_held)));
	HSM_GUARD(hsm_buf_printf(
	    out,
	    "# HELP hsmd_refusals_summarized_total Requests refused before authentication (or "
	    "unauthenticated Status calls) past their source's rate of audit records "
	    "(refusal_record_rate), counted in RefusalsSummarized events instead.\n"
	    "# TYPE hsmd_refusals_summarized_total counter\nhsmd_refusals_summarized_total %llu\n"
	    "# HELP hsmd_auth_unknown_keys_unlooked_total Requests naming an access key id no active "
	    "key has, refused without a store lookup (the node's list of ids, read every second).\n"
	    "# TYPE hsmd_auth_unknown_keys_unlooked_total counter\n"
	    "hsmd_auth_unknown_keys_unlooked_total %llu\n",
	    (unsigned long long)hsm_refusals_summarized(s->refusals),
	    (unsigned long long)atomic_load(&s->akids_spared)));
	hsm_http_stats hs;
	memset(&hs, 0, sizeof(hs));
	if (s->http != NULL)
		hsm_http_server_stats(s->http, &hs);
	HSM_GUARD(hsm_buf_printf(
	    out,
	    "# HELP hsmd_http_connections Open client connections (max_connections).\n"
	    "# TYPE hsmd_http_connections gauge\nhsmd_http_connections %u\n"
	    "# HELP hsmd_http_connections_refused_total Connections closed as soon as accepted: "
	    "at max_connections with none to give way, or from a source holding "
	    "max_connections_per_source.\n"
	    "# TYPE hsmd_http_connections_refused_total counter\n"
	    "hsmd_http_connections_refused_total{reason=\"max_connections\"} %llu\n"
	    "hsmd_http_connections_refused_total{reason=\"per_source\"} %llu\n"
	    "# HELP hsmd_http_connections_evicted_total Connections closed at max_connections to "
	    "make room for a new one (stalled ones first, then the longest idle).\n"
	    "# TYPE hsmd_http_connections_evicted_total counter\n"
	    "hsmd_http_connections_evicted_total %llu\n"
	    "# HELP hsmd_http_buffered_bytes Request input held in buffers beyond each "
	    "connection's first 16 KiB (past 256 MiB, requests needing more get 503).\n"
	    "# TYPE hsmd_http_buffered_bytes gauge\nhsmd_http_buffered_bytes %zu\n"
	    "# HELP hsmd_http_tls_warm_connections TLS connections keeping OpenSSL's record "
	    "buffers (up to 33 KiB each) between requests: at most %u a worker, each until it "
	    "idles for %u ms.\n"
	    "# TYPE hsmd_http_tls_warm_connections gauge\nhsmd_http_tls_warm_connections %zu\n",
	    hs.open, (unsigned long long)hs.refused_full, (unsigned long long)hs.refused_source,
	    (unsigned long long)hs.evicted, hs.buffered, HSM_HTTP_TLS_WARM_MAX,
	    HSM_HTTP_TLS_WARM_IDLE_MS, hs.tls_warm));
	int64_t missing = atomic_load(&s->backup_copies_missing);
	HSM_GUARD(hsm_buf_printf(
	    out,
	    "# HELP hsmd_backup_last_success_time_seconds When the newest backup of this store in "
	    "backup_dir was made (0: none).\n"
	    "# TYPE hsmd_backup_last_success_time_seconds gauge\n"
	    "hsmd_backup_last_success_time_seconds %lld\n"
	    "# HELP hsmd_backup_last_size_bytes The size of the newest backup in backup_dir.\n"
	    "# TYPE hsmd_backup_last_size_bytes gauge\nhsmd_backup_last_size_bytes %llu\n"
	    "# HELP hsmd_backup_last_duration_seconds How long the last backup of this run took "
	    "(0: none yet).\n"
	    "# TYPE hsmd_backup_last_duration_seconds gauge\nhsmd_backup_last_duration_seconds %.3f\n"
	    "# HELP hsmd_backups_created_total Backups this process made.\n"
	    "# TYPE hsmd_backups_created_total counter\nhsmd_backups_created_total %llu\n"
	    "# HELP hsmd_backup_failures_total Backups that failed, or expired backups not deleted "
	    "from backup_dir.\n"
	    "# TYPE hsmd_backup_failures_total counter\nhsmd_backup_failures_total %llu\n"
	    "# HELP hsmd_backup_copy_failures_total Backups not copied to backup_copy_dir, or expired "
	    "copies not deleted.\n"
	    "# TYPE hsmd_backup_copy_failures_total counter\nhsmd_backup_copy_failures_total %llu\n"
	    "# HELP hsmd_backups_expired_total Backups deleted by retention.\n"
	    "# TYPE hsmd_backups_expired_total counter\nhsmd_backups_expired_total %llu\n"
	    "# HELP hsmd_backup_interval_seconds backup_interval_seconds (0: no scheduled "
	    "backups), for the stale-backup alert.\n"
	    "# TYPE hsmd_backup_interval_seconds gauge\nhsmd_backup_interval_seconds %u\n"
	    "# HELP hsmd_backup_copies_missing This store's backups in backup_dir that "
	    "backup_copy_dir lacks, at the last look (retried every 5 minutes; 0 without a copy "
	    "directory).\n"
	    "# TYPE hsmd_backup_copies_missing gauge\nhsmd_backup_copies_missing %lld\n",
	    (long long)atomic_load(&s->backup_last_success),
	    (unsigned long long)atomic_load(&s->backup_last_bytes),
	    (double)atomic_load(&s->backup_last_ms) / 1000.0,
	    (unsigned long long)atomic_load(&s->backups_made),
	    (unsigned long long)atomic_load(&s->backup_failures),
	    (unsigned long long)atomic_load(&s->backup_copy_failures),
	    (unsigned long long)atomic_load(&s->backups_expired), (unsigned)s->opt.backup_interval,
	    (long long)(missing > 0 ? missing : 0)));
	HSM_GUARD(render_audit_syncs(&as, out));
	HSM_GUARD(render_disk(s, out));
	HSM_GUARD(render_tls(s, out));
	HSM_GUARD(render_config(s, out));
	return hsm_metrics_render(&s->metrics, out);
}
