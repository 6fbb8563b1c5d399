/*
 * server.h - the hsmd daemon: store, keystore, KMS service, audit trail and
 * HTTP front end wired together, plus the request pipeline
 *
 *   parse -> authenticate -> authorize -> execute -> audit -> render
 *
 * for the KMS API (TrentService.*), hsmd's admin API (HsmdAdmin.*) and the
 * unauthenticated monitoring endpoints (/healthz, /readyz, /metrics) and
 * the JWKS document.
 */
#ifndef HSM_SERVER_H
#define HSM_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "audit/audit.h"
#include "backup/backup.h"
#include "auth/sigv4.h"
#include "common/bucket.h"
#include "common/shmap.h"
#include "kms/kms.h"
#include "server/config.h"
#include "server/http.h"
#include "server/json.h"
#include "server/lane.h"
#include "server/metrics.h"
#include "server/refusals.h"

typedef struct hsm_server_options {
	const char *data_dir;
	const char *store;           /* NULL or "": SQLite in data_dir; else a store location */
	uint32_t store_cache_ms;     /* key metadata cache lifetime; 0: until changed here */
	uint32_t key_usage_flush_ms; /* last uses of keys written to the store this often; 0: 1000 */
	const char *audit_dir;       /* NULL: <data_dir>/audit */
	const char *audit_copy_dir;  /* NULL: closed audit files are not copied */
	const char *backup_dir;      /* NULL: <data_dir>/backups */
	const char *backup_copy_dir; /* NULL: backups are not copied */
	uint32_t backup_interval;    /* seconds between scheduled backups; 0: none */
	uint32_t scheduler_interval; /* seconds between a node's background rounds; 0: 5 */
	uint32_t leader_lease;       /* seconds a shared store's leader may go without a round; 0: 30 */
	/* Seconds before the leader adopts the audit outbox rows of a node not running (outbox.h); 0: never. */
	uint32_t outbox_adopt_after;
	uint32_t backup_retention_days; /* 0: 90 */
	const char *node_id;
	const char *region;
	const char *account_id;
	hsm_http_config http;
	int64_t sigv4_skew_seconds;
	uint32_t lockout_threshold;
	/* Records of their own for unauthenticated refusals (refusals.h), a second: per source
	 * (0: every refusal gets one) and over all sources (0: no bound but per source's). */
	uint32_t refusal_record_rate;
	uint32_t refusal_record_rate_total;
	uint32_t audit_fsync_ms;
	uint32_t audit_fsync_max_lag_ms;
	uint64_t audit_rotate_bytes;
	uint64_t audit_rotate_seconds;
	uint32_t audit_retention_days;
	uint32_t audit_checkpoint_seconds;
	bool audit_syslog;
	bool audit_ack_durable; /* a request's answer waits for its record's fdatasync */
	bool tls_watch;         /* load the TLS files again when they change (tls_reload.c) */
	int64_t jwt_default_lifetime;
	int64_t jwt_max_lifetime;
	int64_t jwt_clock_skew;      /* verifiers' clock skew the JWKS grace period allows */
	size_t secure_heap_bytes;
	bool dev;
	/* Quorum approvals (approvals.c): custodians per sensitive request; 0 = off. */
	uint32_t approval_quorum;
	uint32_t approval_ttl;           /* seconds an approval request stays open; 0 = 86400 */
	const char *approval_operations; /* comma-separated names; NULL: HSM_APPROVAL_OPS_DEFAULT */
	uint32_t unseal_timeout; /* seconds an unfinished unseal waits for a share; 0: 900 */
	/*
	 * Out (may be NULL): when hsm_server_new or hsm_server_start fails because
	 * of a setting's value, the setting's name ("backup_dir"), for the
	 * operator-facing message; left alone otherwise.
	 */
	const char **failed_setting;
} hsm_server_options;


/* What a file was when last looked at: a change of any part is a new file. */
typedef struct hsm_file_stamp {
	bool exists;
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
} hsm_file_stamp;

/*
 * Requests whose answer was withheld, waiting to be said so on the trail
 * (withheld.c).  Past HSM_WITHHELD_MAX (an outage fails up to a full queue
 * at once) they are only counted.
 */
#define HSM_WITHHELD_MAX 256
typedef struct hsm_withheld_list {
	pthread_mutex_t lock;
	struct {
		char id[HSM_UUID_STRLEN + 1];
		char op[64];
	} v[HSM_WITHHELD_MAX];
	size_t n;
	uint64_t more;
} hsm_withheld_list;

typedef struct hsm_server {
	hsm_server_options opt;
	char data_dir[4096];
	char audit_dir[4096];
	char audit_copy_dir[4096]; /* "" when closed audit files are not copied */
	char backup_dir[4096];
	char backup_copy_dir[4096]; /* "" when backups are not copied */
	char node_id[65];
	char region[64];
	char account[16];
	hsm_store *store;
	hsm_keystore *ks;
	hsm_kms *kms;
	hsm_audit *audit;
	hsm_http_server *http;
	hsm_lane *lane; /* long requests: key generation, store writes, administration */
	hsm_shmap *creds; /* access key id -> authenticated credential (auth.c) */
	hsm_refusals *refusals; /* unauthenticated refusals beyond their records' rate */
	hsm_withheld_list withheld; /* answers withheld for want of a record (withheld.c) */
	/* Failed authentications that lock a user: opt's, or a configuration reload's. */
	atomic_uint lockout_threshold;
	/* The store's active access key ids, sorted, and when they were read (auth_keys.c). */
	pthread_mutex_t akids_lock;
	char (*akids)[HSM_ACCESS_KEY_ID_LEN + 1];
	size_t n_akids;
	int64_t akids_loaded_ms; /* monotonic; 0: never */
	uint64_t akids_staled;   /* hsm_server_akids_stale calls, under akids_lock */
	hsm_bucket akid_lookups; /* lookups of ids missing from the list */
	atomic_uint_fast64_t akids_spared; /* requests refused as unknown without a lookup */
	/* Credential cache flushes (auth.c): a credential read before one is not cached. */
	atomic_uint_fast64_t creds_flushed;
	hsm_sigv4_config sigv4;
	hsm_metrics metrics;
	pthread_t scheduler;
	bool scheduler_running;
	hsm_usage *usage;   /* last uses of keys, written to the store by the flusher */
	struct hsm_outbox *outbox; /* requests whose records the store's outbox waits for */
	pthread_t flusher;
	bool flusher_running;
	/*
	 * The store-wide gauges of /metrics, counted by the scheduler thread every
	 * period: counting is a scan of the key table (about 20 ms with a million
	 * keys), too long for an HTTP worker, whose other connections would wait.
	 */
	atomic_uint_fast64_t gauge_keys, gauge_rotations_due, gauge_expirations_due;
	atomic_uint_fast64_t gauge_material_needed, gauge_rotations_overdue;
	atomic_uint_fast64_t gauge_deletions_overdue; /* destruction dates an hour past */
	atomic_uint_fast64_t gauge_approvals_open; /* approval requests waiting for custodians */
	atomic_uint_fast64_t gauge_approvals_approved; /* approved ones waiting for their retry */
	atomic_uint_fast64_t gauge_custodians; /* custodians who could approve (approval_quorum > 0) */
	atomic_bool scheduler_clock_held;      /* key work held: the wall clock runs ahead */
	atomic_uint_fast64_t gauge_certs;          /* certificates kept beside the keys */
	atomic_uint_fast64_t gauge_certs_expiring; /* of those, expiring within 30 days or expired */
	atomic_int_fast64_t gauges_counted_at; /* Unix seconds; 0 = not yet */
	/*
	 * Whether the store answered the scheduler's last probe.  A node that
	 * cannot reach a shared store is not ready (/readyz), so a load balancer
	 * sends its clients to a node that can.
	 */
	atomic_bool store_up;
	/* hsm_store_corrupt_seen when the scheduler last logged it, and when (monotonic ns). */
	uint64_t corrupt_logged, corrupt_logged_ns;
	atomic_bool trail_noted; /* the store records this node's audit trail (server.c note_trail) */
	/* Development mode: hsmd.db was there, not empty, before this start opened it. */
	bool dev_db_found;
	/*
	 * Whether this node holds the store's leadership (hsm_store_lead) and so
	 * runs the scheduled work: rotation, destruction, scheduled backups.
	 * Nodes sharing a store take turns: exactly one runs it at a time, and
	 * another takes over when it stops, dies, is sealed or loses the store.
	 */
	atomic_bool leading;
	atomic_bool node_id_lost; /* another node took this node's id: it stops (main's exit status) */
	bool lead_refused; /* the scheduler's: the last try for the leadership failed (logged once) */
	pthread_mutex_t stop_lock;
	pthread_cond_t stop_cond;
	bool stopping;
	bool recount; /* the scheduler is to count the gauges now (seal, unseal) */
	/* Backups (backups.c): one at a time; the figures /metrics reports. */
	pthread_mutex_t backup_lock;
	/* scheduler thread only: when a failed backup is tried again (monotonic seconds) */
	int64_t backup_next_try;
	atomic_int_fast64_t backup_last_success; /* Unix seconds of the newest backup; 0 = none */
	atomic_uint_fast64_t backup_last_bytes, backup_last_ms;
	atomic_uint_fast64_t backups_made, backup_failures, backup_copy_failures, backups_expired;
	/* This store's backups in backup_dir not (or not whole) in backup_copy_dir at the last
	 * look; -1 until the first look (at the scheduler's first pass as leader). */
	atomic_int_fast64_t backup_copies_missing;
	atomic_int_fast64_t backup_copy_next_try; /* when missing copies are tried again (ditto) */
	bool backup_retention_held; /* under backup_lock: held for a clock run ahead (logged once) */
	bool backup_copy_mounted;   /* backup_copy_dir was a mount point at start (backups.c) */
	int64_t started;
	/* Earliest notAfter of tls_cert's chain and of tls_client_ca's bundle as last loaded
	 * (at start, or by a reload); 0: not set. */
	atomic_int_fast64_t tls_cert_expiry, tls_ca_expiry;
	/* TLS files loaded again (tls_reload.c): one load at a time, what the files were
	 * when last loaded or tried (tls_watch compares), and the counts /metrics reports. */
	pthread_mutex_t tls_reload_lock;
	hsm_file_stamp tls_stamps[3]; /* tls_cert, tls_key, tls_client_ca */
	atomic_uint_fast64_t tls_reloads, tls_reload_failures;
	atomic_bool tls_reload_failing; /* the last load failed: the files are not what is served */
	/* The configuration read again (config_reload.c, on SIGHUP): the counts, whether the
	 * last reading loaded, and how many settings it found changed that wait for a restart. */
	atomic_uint_fast64_t config_reloads, config_reload_failures;
	atomic_bool config_reload_failing;
	atomic_bool auth_record_failing; /* failed authentications cannot be counted (auth.c) */
	atomic_uint config_restart_pending;
	/* approval_operations as bit sets: by hsm_op, and by hsm_admin_index. */
	uint64_t approval_kms_ops;
	uint32_t approval_admin_ops;
} hsm_server;

hsm_result hsm_server_new(const hsm_server_options *opt, hsm_server **out) HSM_MUST_CHECK;
/* Development mode: initializes (1-of-1) on first start, unseals, ensures the dev user. */
hsm_result hsm_server_dev_bootstrap(hsm_server *s, const char *akid,
                                    const hsm_secret *secret) HSM_MUST_CHECK;
hsm_result hsm_server_start(hsm_server *s) HSM_MUST_CHECK;
void hsm_server_stop(hsm_server *s);
/* Has the scheduler count the store-wide gauges of /metrics now, not at its next period. */
void hsm_server_recount(hsm_server *s);
void hsm_server_free(hsm_server *s);
/*
 * Whether the node stopped itself because another running node took its
 * node_id on the shared store (hsm_store_claim_node): main exits non-zero.
 */
bool hsm_server_node_id_lost(const hsm_server *s);
uint16_t hsm_server_port(hsm_server *s);

/* ---- Pipeline pieces (server-internal) ----------------------------------------- */

/* The authenticated caller of a request (auth.c). */
typedef struct hsm_auth_result {
	hsm_caller caller;
	char user[HSM_USER_NAME_MAX + 1];
	char akid[HSM_SIGV4_AKID_MAX + 1]; /* as claimed, even when authentication failed */
	bool key_found;        /* akid is an active access key of the store */
	bool counted_failure;  /* a wrong signature counted toward its user's lockout */
	/* authentication changed the store (a failure counted, a count reset): the request's
	 * outbox row waits for its record (outbox.h) */
	bool outboxed;
} hsm_auth_result;

/* Who sent a request, as its record names them: "ip:port" and the user's ARN ("" when none). */
typedef struct hsm_sender {
	char source[HSM_HTTP_ADDR_MAX + 8];
	char principal[160];
} hsm_sender;
void hsm_server_sender(const hsm_server *s, hsm_http_req *req, const char *user,
                       hsm_sender *out);

hsm_result hsm_server_auth_init(hsm_server *s) HSM_MUST_CHECK;
void hsm_server_auth_free(hsm_server *s);
/* Verifies SigV4 and loads the principal; counts failures toward the lockout. */
hsm_result hsm_server_authenticate(hsm_server *s, hsm_http_req *req,
                                   hsm_auth_result *out) HSM_MUST_CHECK;
/*
 * Sets out->akid to the access key id req's Authorization header claims, once
 * the header parses (its syntax, the id's among it, checked), and nothing
 * else: no lookup, no signature checked.  For a refusal that comes before
 * authentication (a sealed node), whose record names the id as claimed.
 * This thread's last error (the refusal's, for its answer) is kept.
 */
void hsm_server_claimed_akid(hsm_http_req *req, hsm_auth_result *out);
/* Forgets cached credentials (after seal, principal changes). */
void hsm_server_auth_flush(hsm_server *s);
/* Reads the store's active access key ids again (auth_keys.c; every second, on the flusher). */
void hsm_server_akids_refresh(hsm_server *s);
/* Distrusts the list until its next read (a key was made or changed here). */
void hsm_server_akids_stale(hsm_server *s);
void hsm_server_akids_free(hsm_server *s);
/*
 * False when no active access key can have this id: not in the list read
 * within the last seconds and past the rate of lookups of such ids, or of a
 * length no key has.  True means: look it up.
 */
bool hsm_server_akid_may_exist(hsm_server *s, const char *akid);

/*
 * Refusals of requests nobody authenticated (refused.c, refusals.h): whether
 * this one gets an audit record of its own (true), or is counted in its
 * source's summary (false: answer it without a record).  operation is the
 * name the request gave, err its outcome.
 */
bool hsm_server_own_record(hsm_server *s, hsm_http_req *req, const char *operation,
                           const hsm_auth_result *auth, hsm_err err);
/*
 * Text a client chose, as a record shows it: letters, digits and the bytes
 * of extra, any other byte a '?', cut at HSM_PLAIN_MAX bytes and then ending
 * with HSM_AUDIT_TRUNCATED_MARK.  A record cannot then pose as anything, nor
 * carry control bytes or kilobytes of a client's choosing.
 */
#define HSM_PLAIN_MAX 64
#define HSM_PLAIN_CAP (HSM_PLAIN_MAX + sizeof(HSM_AUDIT_TRUNCATED_MARK))
void hsm_server_plain_text(const char *in, const char *extra, char out[HSM_PLAIN_CAP]);

/*
 * hsm_http_config.refused: a request answered before it was read as an API
 * call (malformed, too large, a method or path hsmd does not serve) gets an
 * HttpRequest record, within the same bound as the refusals above.  The
 * answer does not wait for it: the request was refused either way.
 */
void hsm_server_http_refused(hsm_http_req *req, int status, const char *type, const char *reason,
                             void *arg);
/* Writes the summaries that are due (all of them when all is set) as RefusalsSummarized events. */
void hsm_server_flush_refusals(hsm_server *s, bool all);

/*
 * Requests answered 409 because their record failed (withheld.c): noted
 * from the audit writer's callback (never blocks for long), and said on the
 * trail as RequestAnswerWithheld events once it takes records again (all:
 * at the stop, whatever it takes).
 */
void hsm_server_note_withheld(hsm_server *s, const char *request_id, const char *operation);
void hsm_server_flush_withheld(hsm_server *s, bool all);

/*
 * The node ids other than this one whose audit trails the store has seen
 * (trail_nodes.c), comma-separated into known ("" when none; a note in
 * parentheses when they cannot be read), and whether any of them runs now.
 */
void hsm_server_trail_nodes(hsm_server *s, char *known, size_t cap, bool *live);

/*
 * Whether the audit trail in dir shows a store that was initialized
 * (dev_trail.c): a signed checkpoint, or the success of what only such a
 * store does.  why gets the first record that shows it, or why the trail
 * is taken to (a file that cannot be read).  A directory that is not there,
 * or holds no log file, shows none.
 */
bool hsm_server_trail_shows_store(const char *dir, char *why, size_t cap);

/* The handler registered with the HTTP layer (dispatch.c). */
void hsm_server_on_request(hsm_http_req *req, void *arg);

/* Admin API (admin.c): HsmdAdmin.<Op>. */
typedef struct hsm_admin_ctx {
	hsm_server *s;
	const hsm_auth_result *auth; /* NULL for the unauthenticated operations */
	json_t *req;
	hsm_jw *w;
	const char *source;
	/* What the audit record says beyond the operation (approval, key, certificate). */
	struct hsm_api_audit *audit;
} hsm_admin_ctx;

/* The largest body of an admin operation that takes no credentials (a share file is
 * at most 512 bytes; JSON escaping can double it). */
#define HSM_ADMIN_UNAUTH_BODY_MAX 4096

typedef struct hsm_admin_op {
	const char *name;
	bool needs_auth;  /* false: Unseal and Status, usable while sealed */
	hsm_result (*fn)(hsm_admin_ctx *c);
} hsm_admin_op;

const hsm_admin_op *hsm_admin_find(const char *name);
/* The name of the admin operation at index (hsm_admin_index), or NULL past the last. */
const char *hsm_admin_name(unsigned index);
/* The operation's position in the admin table (below 32). */
unsigned hsm_admin_index(const hsm_admin_op *op);

/* ---- Quorum approvals (approvals.c) ------------------------------------------------- */

/*
 * Parses an approval_operations list into bit sets (by hsm_op, by
 * hsm_admin_index).  VALIDATION names an operation that is unknown or that
 * changes nothing (reads need no approval).
 */
hsm_result hsm_server_approval_ops(const char *list, uint64_t *kms_ops,
                                   uint32_t *admin_ops) HSM_MUST_CHECK;
/*
 * Whether this request (its parsed body: doc) waits for approval: listed,
 * approvals on, and the caller holds the role.  ImportKeyMaterial setting an
 * expiry waits where DeleteImportedKeyMaterial does.
 */
bool hsm_server_kms_needs_approval(const hsm_server *s, const hsm_op_info *info,
                                   const hsm_caller *caller, const json_t *doc);
bool hsm_server_admin_needs_approval(const hsm_server *s, const hsm_admin_op *op,
                                     const hsm_caller *caller);
/*
 * The approval gate of a request that waits for custodians.  Set as its
 * caller's gate (hsm_caller.gate), it is met where the operation is about to
 * change something, after every check that could refuse the request, so a
 * request refused anyway never opens an approval request.  Meeting it is
 * hsm_kms_approval_gate on the request document's canonical text; approval
 * says what came of it (release it if the request then fails).
 */
typedef struct hsm_server_gate {
	hsm_commit_gate commit;
	hsm_server *s;
	const char *operation;
	const hsm_caller *requester;
	json_t *doc;
	hsm_approval_gate approval;
} hsm_server_gate;
void hsm_server_gate_init(hsm_server_gate *g, hsm_server *s, const char *operation,
                          const hsm_caller *requester, json_t *doc);
/*
 * At start, once the store's schema is current: describes the blob members
 * of requests an older hsmd stored whole (hsm_kms_approval_redact_stored).
 */
hsm_result hsm_server_approvals_check(hsm_server *s) HSM_MUST_CHECK;
/*
 * At start, before the store's schema is brought forward (it reads only the
 * users, in any schema): refuses an approval_quorum that the store's
 * custodians cannot meet.
 */
hsm_result hsm_server_quorum_check(hsm_server *s) HSM_MUST_CHECK;
/*
 * Refuses a quorum (0: none) the store's custodians cannot meet; names no
 * setting.  *have: the custodians who could approve (0 for no quorum).
 */
hsm_result hsm_server_quorum_met(hsm_server *s, unsigned quorum, unsigned *have) HSM_MUST_CHECK;
/* HsmdAdmin.ListApprovals, GetApproval, ApproveRequest, DenyRequest, CancelRequest. */
hsm_result hsm_admin_list_approvals(hsm_admin_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_admin_get_approval(hsm_admin_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_admin_approve_request(hsm_admin_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_admin_deny_request(hsm_admin_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_admin_cancel_request(hsm_admin_ctx *c) HSM_MUST_CHECK;

/* HsmdAdmin.ImportCertificate, GetCertificate, ListCertificates, DeleteCertificate (certs.c). */
hsm_result hsm_admin_import_certificate(hsm_admin_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_admin_get_certificate(hsm_admin_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_admin_list_certificates(hsm_admin_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_admin_delete_certificate(hsm_admin_ctx *c) HSM_MUST_CHECK;

/* The audit trail's checkpoint signer: the keystore's audit key (arg: hsm_keystore). */
hsm_result hsm_server_audit_signer(void *arg, const uint8_t *msg, size_t n, hsm_buf *sig) HSM_MUST_CHECK;

/* Answers GET /.well-known/jwks.json (jwks.c). */
void hsm_server_jwks(hsm_server *s, hsm_http_req *req);
/* OPTIONS /.well-known/jwks.json: the CORS preflight (jwks.c). */
void hsm_server_jwks_preflight(hsm_http_req *req);

/* ---- Backups (backups.c) ------------------------------------------------------------ */

/*
 * At start: checks that backup_dir and backup_copy_dir are usable, distinct directories
 * (making backup_dir if missing, never backup_copy_dir; VALIDATION naming the setting if not), removes what
 * an interrupted backup left, reads the newest backup's time and size.
 */
hsm_result hsm_server_backup_init(hsm_server *s) HSM_MUST_CHECK;
/* hsm_server_backup_init's directory checks alone: run before the store is opened too. */
hsm_result hsm_server_backup_dirs_check(hsm_server *s) HSM_MUST_CHECK;
/* A directory (made if missing, when create) in which a file can be created (VALIDATION naming setting). */
hsm_result hsm_server_usable_dir(const char *setting, const char *dir, bool create) HSM_MUST_CHECK;
/*
 * Refuses (VALIDATION naming what, the setting) a copy directory that is dir
 * itself, by device and inode, so also through a symlink or "dir/.": its
 * copies would be the files themselves.  dir_name says what dir is in the
 * message ("audit directory").
 */
hsm_result hsm_server_distinct_copy_dir(const char *dir, const char *dir_name, const char *what,
                                        const char *copy_dir) HSM_MUST_CHECK;
/* Returns r; when it failed, names setting as its cause (options' failed_setting). */
hsm_result hsm_server_blame(const hsm_server *s, const char *setting, hsm_result r);
/*
 * Makes a backup now (trigger "scheduled" or "requested"), copies it to the
 * copy directory, deletes expired backups in both, counts and audits it.
 * *copied says whether the copy was made (false also when none is configured).
 */
hsm_result hsm_server_backup(hsm_server *s, const char *trigger, char *path, size_t cap,
                             hsm_backup_info *info, bool *copied) HSM_MUST_CHECK;
/* The scheduler's part: a backup when one is due, and the copies of earlier backups that
 * backup_copy_dir lacks (a copy that failed), tried again every 5 minutes until made. */
void hsm_server_backup_if_due(hsm_server *s);
/*
 * Seals the node when the store's master key is no longer the one it
 * unsealed with (a rekey it did not see: master_watch.c); the scheduler's,
 * each round before the scheduled work.
 */
void hsm_server_check_master_key(hsm_server *s);

/*
 * Loads tls_cert, tls_key and tls_client_ca again (tls_reload.c): new
 * connections begin with them once their "TlsReload" event is written;
 * connections open keep what they began with.  A failure changes nothing but
 * the counts, the log and the trail.  trigger says what asked ("signal",
 * "file change").  Without TLS it does nothing.  It logs its own outcome.
 */
hsm_result hsm_server_reload_tls(hsm_server *s, const char *trigger);
/* The files' identities now, before they are first loaded (tls_watch compares later ones). */
void hsm_server_tls_stamp(hsm_server *s);
/* The scheduler's part, with tls_watch: a reload when one of the files changed. */
void hsm_server_tls_watch(hsm_server *s);

/*
 * Reads the configuration again from the sources it was started with (argv,
 * the environment, the file; config_reload.c) and compares it with running,
 * the configuration the node runs with.  log_level, lockout_threshold and
 * the refusal record rates change at once; every other changed setting is
 * named in the log and the trail as taking effect at the next start, and
 * counted for /metrics.  A configuration that does not
 * load, and so would not start the node, changes nothing and is reported the
 * same ways.  The "ConfigReload" event is written before the change: one
 * that cannot be recorded is not made.  running is updated for what changed;
 * the server's options, which point into it, are not touched otherwise.
 */
hsm_result hsm_server_reload_config(hsm_server *s, hsm_config *running, int argc,
                                    char *const argv[]);

/* Writes /metrics (metrics.c). */
hsm_result hsm_server_render_metrics(hsm_server *s, hsm_buf *out) HSM_MUST_CHECK;
/* Audits an internal event synchronously (startup, seal, rotation, ...). */
void hsm_server_event(hsm_server *s, const char *event, const char *key_id, uint32_t version,
                      hsm_result result, const hsm_audit_field *extra, size_t n_extra);
/* The same, carrying request_id (an outbox row's: NULL for none); false if it was not written. */
bool hsm_server_event_of(hsm_server *s, const char *request_id, const char *event,
                         hsm_result result, const hsm_audit_field *extra, size_t n_extra);

#endif
