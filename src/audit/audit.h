/*
 * audit.h - the tamper-evident audit trail (see docs/audit.md for the format
 * and the guarantees).
 *
 * One record per request and per internal event, written as JSON Lines into
 * files under one directory.  Each line carries the SHA-256 of the line before
 * it ("prev"), so the records form one hash chain across rotated files;
 * checkpoint records carry an Ed25519 signature over the chain head, made
 * through a signer callback (the signing key lives in the keystore, never
 * here).  hsm_audit_verify_files() checks a set of files offline.
 *
 * Threads: a dedicated writer thread owns the file; a watchdog thread bounds
 * the time any write, fsync or signature may take.  hsm_audit_submit() never
 * blocks on I/O: it formats the record into a bounded queue and returns.
 *
 * Fail closed, bounded time: when the log cannot be written (write or fsync
 * error, or an operation slower than the deadline), the module turns
 * unhealthy, refuses new records and completes every pending one with
 * HSM_ERR_AUDIT_UNAVAILABLE within the deadline.  It retries by itself and
 * turns healthy again once a write and fsync succeed.
 *
 * Ownership: hsm_audit is opaque; hsm_audit_open gives the caller an object
 * it releases with hsm_audit_close.  Records passed in are copied; the caller
 * keeps ownership of every string it passes.
 */
#ifndef HSM_AUDIT_H
#define HSM_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"
#include "common/secret.h"

/* ---- Records ------------------------------------------------------------- */

typedef enum hsm_audit_type {
	HSM_AUDIT_REQUEST,
	HSM_AUDIT_EVENT,
	HSM_AUDIT_CHECKPOINT /* written by the module only; refused from callers */
} hsm_audit_type;

typedef enum hsm_audit_outcome {
	HSM_AUDIT_SUCCESS,
	HSM_AUDIT_DENIED,
	HSM_AUDIT_ERROR
} hsm_audit_outcome;

/* One extra named field (signing algorithm, message type, hashed context...). */
typedef struct hsm_audit_field {
	const char *name;  /* at most HSM_AUDIT_NAME_MAX bytes are kept */
	const char *value; /* at most HSM_AUDIT_VALUE_MAX bytes are kept */
} hsm_audit_field;

#define HSM_AUDIT_MAX_EXTRA 10 /* the Rekey record has the most */
#define HSM_AUDIT_NAME_MAX 64
#define HSM_AUDIT_VALUE_MAX 512
/* Longer values are cut at a UTF-8 boundary and end with this marker. */
#define HSM_AUDIT_TRUNCATED_MARK "...[truncated]"

/*
 * What the server and keystore fill in.  Every string may be NULL (the field
 * is then left out of the line).  Strings are copied and JSON-escaped; they
 * must never hold plaintext, key material, shares, secrets, signatures or
 * whole ciphertexts: sensitive values go in as keyed hashes
 * (hsm_audit_hash_value).  Sequence number, node id and the chain hash are
 * assigned by the module.
 */
typedef struct hsm_audit_record {
	hsm_audit_type type;
	int64_t time_ms;            /* UTC ms when it happened; 0 = when submitted */
	const char *principal;      /* e.g. the user's ARN or name */
	const char *access_key_id;
	const char *source;         /* client address, "ip:port" */
	const char *operation;      /* "Encrypt"; for events the event name */
	const char *key_id;
	uint32_t key_version;       /* 0 = none */
	hsm_audit_outcome outcome;
	const char *error;          /* error name (KMS exception) when outcome != SUCCESS */
	const char *request_id;
	uint64_t latency_us;        /* written for requests only */
	const hsm_audit_field *extra;
	size_t n_extra;             /* <= HSM_AUDIT_MAX_EXTRA */
} hsm_audit_record;

/* ---- Configuration ------------------------------------------------------- */

/* Which I/O step the test hook is about to run. */
typedef enum hsm_audit_io_op {
	HSM_AUDIT_IO_WRITE,
	HSM_AUDIT_IO_SYNC,
	HSM_AUDIT_IO_RETENTION, /* a retention pass (on the sweeper thread) */
	HSM_AUDIT_IO_RESERVE,   /* keeping the space ahead of the file (audit_io_keep_reserve) */
	HSM_AUDIT_IO_FOREIGN,   /* copying aside bytes someone else wrote into the live file */
} hsm_audit_io_op;

typedef struct hsm_audit_config {
	const char *dir;              /* directory of the log files (created 0700) */
	const char *node_id;          /* [A-Za-z0-9._-]{1,64} */
	uint32_t fsync_interval_ms;   /* N: 0 = default 10; cut to L when above it */
	uint32_t fsync_max_records;   /* K: 0 = default 4096 */
	/* L: records are not acknowledged while the oldest one not yet durable is
	 * older than this and a sync is running; 0 = default 50 */
	uint32_t fsync_max_lag_ms;
	uint32_t checkpoint_interval_ms; /* 0 = default 60000 */
	uint32_t io_deadline_ms;      /* 0 = default 1000 */
	uint32_t retry_interval_ms;   /* 0 = default 500 */
	uint64_t rotate_bytes;        /* 0 = default 64 MiB */
	uint64_t rotate_age_ms;       /* 0 = default 1 day */
	uint32_t retention_days;      /* 0 = default 2557 (7 years) */
	/*
	 * NULL, or a second directory (another disk, a mount elsewhere) that
	 * receives a copy of each closed file and keeps it as long as the
	 * retention keeps the original; retention deletes no file not copied.
	 */
	const char *copy_dir;
	/*
	 * No retention pass at all: nothing is copied to copy_dir and nothing is
	 * deleted.  For a process that writes to a node's trail without its
	 * configuration (hsmctl's offline commands): the node alone applies its
	 * audit_retention_days and audit_copy_dir.
	 */
	bool no_retention;
	uint32_t queue_capacity;      /* records waiting for the writer; 0 = default 16384 */
	/*
	 * Acknowledge a record only once it is durable (fdatasync'd): a sync is
	 * asked as soon as records are written, and their done callbacks run when
	 * it finishes (fsync_interval_ms and fsync_max_lag_ms then do not apply).
	 * A power loss then takes no acknowledged record; each acknowledgement
	 * waits for one sync (the records written meanwhile share the next).
	 */
	bool ack_durable;
	bool syslog;                  /* also forward each line to syslog(LOG_AUTHPRIV) */
	const char *syslog_path;      /* the log socket (read at open); NULL = /dev/log */
	bool batch_scheduling;        /* the writer under SCHED_BATCH (hsm_thread_batch) */
	/* Wall clock in UTC ms; NULL = the system clock.  Tests move time with it. */
	int64_t (*clock_ms)(void *arg);
	void *clock_arg;
	/*
	 * Time elapsed in ms from any origin, which a step of the wall clock does
	 * not move (called with clock_arg).  NULL: CLOCK_BOOTTIME when clock_ms is
	 * NULL too, else none (a test moving the wall clock alone).  While the
	 * wall clock has run more than HSM_AUDIT_CLOCK_AHEAD_MS ahead of it since
	 * open, retention deletes nothing (a clock stepped years ahead would
	 * otherwise delete the whole trail and its copies at once).
	 */
	int64_t (*elapsed_ms)(void *arg);
	/*
	 * Optional: called with true before the log runs a group of done
	 * callbacks in a row and with false after the last, on the same thread
	 * (the server batches its workers' wake-ups with it).  Must not block.
	 */
	void (*batch_hook)(bool begin);
	/*
	 * For tests only: called before each write and fsync (by the writer or
	 * the syncer thread), each retention pass (by the sweeper) and each copy
	 * of foreign bytes set aside (hsm_audit_io_op).  It may block (a stuck
	 * device) or return an errno value to make that step fail as if the
	 * kernel had returned it; 0 lets the step run.
	 */
	int (*test_io_hook)(void *arg, hsm_audit_io_op op);
	void *test_io_arg;
} hsm_audit_config;

typedef struct hsm_audit hsm_audit;

/*
 * Opens (or creates) the log in cfg->dir, checks the tail of the newest file
 * (a torn last line is moved to a side file and reported), continues the
 * sequence and chain, applies retention and starts the threads.  Fails with
 * HSM_ERR_IO when the directory cannot be used or is locked by another
 * process.  cfg is copied (strings included).
 */
hsm_result hsm_audit_open(const hsm_audit_config *cfg, hsm_audit **out) HSM_MUST_CHECK;

/*
 * Drains the queue, writes a shutdown checkpoint (signed when a signer is
 * set: close before clearing the signer), syncs and closes.  Bounded in time:
 * if the writer is stuck in the kernel past the deadline, the pending records
 * are failed, the state is leaked on purpose (the stuck thread still uses it)
 * and close returns.  Either way, once it returns the signer is no longer in
 * use and never called again, so what it uses may be freed.  NULL is a no-op.
 */
void hsm_audit_close(hsm_audit *a);
/*
 * hsm_audit_close, telling how it ended: true when every thread stopped
 * (*durable_seq: every record below it is durable), false when a stuck
 * writer, sweeper or fsync was abandoned (*durable_seq 0; done callbacks of
 * records it held may still run later, from the watchdog or the writer).
 */
bool hsm_audit_close_durable(hsm_audit *a, uint64_t *durable_seq);

/* ---- Writing ------------------------------------------------------------- */

/*
 * Called exactly once per accepted record, from the writer or the watchdog
 * thread, never from inside hsm_audit_submit: with HSM_SUCCESS once the line
 * is written to the file (write(2) returned; fsync follows within the bound
 * in docs/audit.md); with HSM_ERR_AUDIT_UNAVAILABLE when the trail went down
 * (hsm_audit_healthy false) or is stopping; or with the record's own failure
 * while the trail stays up: HSM_ERR_NOMEM (no memory to format the record or
 * to hold its acknowledgement), HSM_ERR_LIMIT_EXCEEDED (too long to format).
 * It must not block and must not call hsm_audit_append or hsm_audit_close.
 */
typedef void (*hsm_audit_done_fn)(void *cb_arg, hsm_result result);

/*
 * Copies rec into the queue without blocking on I/O.  On HSM_SUCCESS, done_cb
 * will be called exactly once.  On failure done_cb is never called:
 * HSM_ERR_AUDIT_UNAVAILABLE when the log is unhealthy or closing;
 * HSM_ERR_THROTTLING when its queue is full (the trail is up, behind);
 * HSM_ERR_VALIDATION for a CHECKPOINT type; else the record's own failure
 * (HSM_ERR_NOMEM, HSM_ERR_LIMIT_EXCEEDED: no memory for it, too long).
 */
hsm_result hsm_audit_submit(hsm_audit *a, const hsm_audit_record *rec, hsm_audit_done_fn done_cb,
                            void *cb_arg) HSM_MUST_CHECK;

/*
 * Like hsm_audit_submit, but leaves the writer asleep: the caller promises to
 * call hsm_audit_kick() soon, without blocking in between.  An event loop
 * submitting the records of several requests in one pass kicks once at the
 * end of the pass, so the writer wakes once for all of them.
 */
hsm_result hsm_audit_submit_lazy(hsm_audit *a, const hsm_audit_record *rec,
                                 hsm_audit_done_fn done_cb, void *cb_arg) HSM_MUST_CHECK;
/* Wakes the writer if records are waiting for it. */
void hsm_audit_kick(hsm_audit *a);

/*
 * Blocking form for internal events and tools: returns once the record is
 * written or has failed (within the deadline).  Must not be called from a
 * done callback or a signer.
 */
hsm_result hsm_audit_append(hsm_audit *a, const hsm_audit_record *rec) HSM_MUST_CHECK;

/* False while the log cannot be written (readyz reports it). */
bool hsm_audit_healthy(const hsm_audit *a);
/* True when a record submitted now would be accepted: check before executing.  False
 * too while the space kept ahead of the trail cannot be kept (hsm_audit_low_space). */
bool hsm_audit_accepting(const hsm_audit *a);
/* True while the disk has no room for the space kept ahead of the trail. */
bool hsm_audit_low_space(const hsm_audit *a);
/* How far the wall clock has run ahead of the time elapsed since the trail was opened (ms;
 * 0 when it cannot be told): above HSM_AUDIT_CLOCK_AHEAD_MS, a clock stepped ahead. */
int64_t hsm_audit_clock_ahead_ms(const hsm_audit *a);
/*
 * A request refused because the trail did not accept it (hsm_audit_accepting
 * false) and given no record of its own: while the disk is low on space its
 * record would eat into the space kept for requests already admitted.  The
 * count goes into the event that ends the spell (AuditLowSpaceEnded).
 */
void hsm_audit_note_refused(hsm_audit *a);

/*
 * Starts a new file now (a checkpoint ends the old one) and applies
 * retention; returns when done.  For operators and tests.
 */
hsm_result hsm_audit_rotate(hsm_audit *a) HSM_MUST_CHECK;

/* Writes a checkpoint now and waits for it. */
hsm_result hsm_audit_checkpoint(hsm_audit *a) HSM_MUST_CHECK;

/* How far the wall clock may run ahead of the elapsed time before retention holds. */
#define HSM_AUDIT_CLOCK_AHEAD_MS (3600LL * 1000)
/*
 * How much of the time between the trail's newest record and a start
 * retention counts as having passed (audit_internal.h, audit_retention_now_ms):
 * a clock set ahead before a start can make files go at most this early.
 */
#define HSM_AUDIT_START_AHEAD_MAX_MS (7LL * 24 * 3600 * 1000)
/* How far back the records' times may go before verify warns (hsm_audit_verify_report). */
#define HSM_AUDIT_TIME_BACK_MS (300LL * 1000)

/* Counters for metrics. */
#define HSM_AUDIT_SYNC_BUCKETS 10
typedef struct hsm_audit_stats {
	uint64_t next_seq;        /* sequence number the next record will get */
	uint64_t written;         /* records written since open */
	uint64_t refused;         /* records refused or failed since open */
	uint64_t outages;         /* times the log turned unhealthy */
	uint64_t syslog_dropped;  /* lines not forwarded to syslog (queue full, not reached) */
	uint64_t syslog_cut;      /* lines forwarded cut to their first 8192 bytes */
	uint64_t checkpoints_signed;
	uint64_t checkpoints_unsigned;
	uint64_t files_expired;   /* files deleted by the retention since open */
	uint64_t files_copied;    /* closed files copied to copy_dir since open */
	uint64_t copy_failures;   /* files not copied (or copies not deleted) when tried */
	bool retention_running;   /* a retention pass is asked for or running */
	bool retention_held;      /* the last pass deleted nothing: the wall clock ran ahead */
	bool retention_blocked;   /* the last pass deleted nothing: records missing among the files */
	bool low_space;           /* the space ahead of the file cannot be kept: no new requests */
	/*
	 * fdatasync calls on the audit file (background and synchronous): their
	 * total time, and how many took at most hsm_audit_sync_bucket_le[b]
	 * seconds and more than the bound before it (not cumulative); the last
	 * bucket holds those over every bound.  A slow disk shows here before it
	 * shows as request latency.
	 */
	double sync_seconds;
	uint64_t sync_buckets[HSM_AUDIT_SYNC_BUCKETS + 1];
	/* Time responses waited because a sync ran past fsync_max_lag_ms, and how often. */
	uint64_t acks_held;
	double acks_held_seconds;
} hsm_audit_stats;

/* Upper bounds (seconds) of the sync duration buckets; above the last: +Inf only. */
extern const double hsm_audit_sync_bucket_le[HSM_AUDIT_SYNC_BUCKETS];

void hsm_audit_get_stats(const hsm_audit *a, hsm_audit_stats *out);

/* ---- Checkpoint signatures ----------------------------------------------- */

/*
 * Signs msg[0..n) with the audit signing key (Ed25519, RFC 8032) and appends
 * the 64-byte signature to sig.  Called from the writer thread.
 */
typedef hsm_result (*hsm_audit_sign_fn)(void *arg, const uint8_t *msg, size_t n, hsm_buf *sig);

/*
 * Sets (fn != NULL, on unseal) or clears (fn == NULL, on seal) the signer.
 * When it returns, the previous signer is no longer in use.  Setting a signer
 * writes a signed checkpoint soon after, which covers every earlier record.
 */
void hsm_audit_set_signer(hsm_audit *a, hsm_audit_sign_fn fn, void *arg);
/*
 * On seal: writes a checkpoint with reason "seal", signed while the signer is
 * still there, waits for it, then clears the signer.  The checkpoints that
 * follow are unsigned ("why":"sealed"); a verifier given the public key
 * accepts that only after a signed "seal" checkpoint or a restart
 * (AuditLogOpened), so unsigned checkpoints cannot stand in for signed ones
 * in a rewritten trail.  The signer is cleared even when the checkpoint
 * cannot be written (the result says so).
 */
hsm_result hsm_audit_seal(hsm_audit *a);
/*
 * The sequence number the next record will get, and the one below which
 * every record is durable (fdatasync'd).  A record acknowledged to its
 * submitter has a number below hsm_audit_next_seq() read afterwards; it is
 * durable once hsm_audit_durable_seq() has passed that value.
 */
uint64_t hsm_audit_next_seq(const hsm_audit *a);
uint64_t hsm_audit_durable_seq(const hsm_audit *a);
/*
 * Which of the request ids ids[0..n) (sorted by strcmp, no duplicates) have a
 * record in the log in dir: any line whose "request_id" is the id (the
 * request's own record, or one written in its stead).  found[i] answers for
 * ids[i].  Files are read newest first; the search ends after the first file
 * whose first record is older than since_ms (UTC ms).  Reads only; safe
 * while a node writes the log.
 */
hsm_result hsm_audit_find_requests(const char *dir, int64_t since_ms, const char *const *ids,
                                   size_t n, bool *found) HSM_MUST_CHECK;
/* True when the log found no earlier record when it was opened: it began at seq 1. */
bool hsm_audit_began_here(const hsm_audit *a);

/* ---- Keyed hashes of sensitive values ------------------------------------ */

#define HSM_AUDIT_HASH_HEX_LEN 64

/*
 * HMAC-SHA256(key, value) as lowercase hex into out (HSM_AUDIT_HASH_HEX_LEN + 1
 * bytes, NUL-terminated).  key is the audit hash key the keystore derives once
 * unsealed.  An auditor who knows a candidate value can recompute it.
 */
hsm_result hsm_audit_hash_value(const hsm_secret *key, const void *value, size_t n,
                                char out[HSM_AUDIT_HASH_HEX_LEN + 1]) HSM_MUST_CHECK;

/* ---- Offline verification ------------------------------------------------ */

typedef enum hsm_audit_problem {
	HSM_AUDIT_VALID,
	HSM_AUDIT_MALFORMED,     /* not a well-formed record (modified) */
	HSM_AUDIT_MODIFIED,      /* contents changed: the chain or a field does not match */
	HSM_AUDIT_DELETED,       /* sequence gap: records missing */
	HSM_AUDIT_INSERTED,      /* a record that is not part of the chain */
	HSM_AUDIT_REORDERED,     /* records out of order */
	HSM_AUDIT_TORN,          /* incomplete last line */
	HSM_AUDIT_TRUNCATED,     /* the log or a file ends early */
	HSM_AUDIT_BAD_SIGNATURE, /* checkpoint signature does not verify */
	HSM_AUDIT_UNSIGNED,      /* unsigned where the node was signing: the signatures were stripped */
	/* Not a verdict: the files hold more than one node's trail, to verify each alone. */
	HSM_AUDIT_SEVERAL_TRAILS
} hsm_audit_problem;

#define HSM_AUDIT_DETAIL_MAX 512
#define HSM_AUDIT_PATH_MAX 512

typedef struct hsm_audit_verify_options {
	const char *pubkey_pem;  /* Ed25519 public key (PEM SubjectPublicKeyInfo), or NULL */
	bool allow_open_tail;    /* a live log: need not end with a shutdown checkpoint */
	/*
	 * An anchor kept outside the log (the head an earlier verification
	 * printed), or anchor_seq 0 for none: the log must hold the record with
	 * this seq, and its line must have this SHA-256.  Neither the chain nor
	 * the signatures show records cut from the end back to a signed
	 * checkpoint; the anchor does, for every record it covers.
	 */
	uint64_t anchor_seq;
	uint8_t anchor_hash[32];
} hsm_audit_verify_options;

typedef struct hsm_audit_verify_report {
	bool valid;
	size_t files;
	uint64_t records;
	uint64_t first_seq, last_seq;
	uint64_t checkpoints_verified; /* signed, and the signature verified */
	uint64_t checkpoints_unchecked; /* signed, but no public key was given */
	uint64_t checkpoints_unsigned;
	uint64_t last_verified_seq;    /* seq of the last verified signed checkpoint, 0 = none */
	uint64_t uncovered;            /* records after it (not covered by a signature) */
	uint8_t last_hash[32];         /* SHA-256 of the last record's line: the head to anchor */
	/* The last checkpoint stating it says every record from kept_from on is
	 * kept (earlier ones were deleted by retention); 0 = none states it. */
	uint64_t kept_from, kept_from_seq;
	/* The seq of the last retention checkpoint taken (signed and verified
	 * when a public key is given) and the floor it states; 0 = none. */
	uint64_t retention_seq, retention_kept_from;
	/* Records first_seq to older_format_through are in runs whose
	 * AuditLogOpened and checkpoints declare no trail format: an older hsmd
	 * wrote them (docs/audit.md, "Trails from older hsmd"); 0 = none. */
	uint64_t older_format_through;
	/* The first loss hsmd recorded itself (AuditRecordsLost, at lost_seq) of
	 * records lost_first to lost_last with its live file, next to where they
	 * are missing; lost_present: they are all there (the file was put back)
	 * and chain to what follows.  0 = none. */
	uint64_t lost_first, lost_last, lost_seq;
	bool lost_present;
	/* Every loss hsmd recorded so, in the trail's order (lost[0] is the one
	 * above): the first four of n_lost.  again_first to again_last (0: none):
	 * records not yet synced when the file went, which are in it put back and,
	 * the same bytes, at the start of the next file (hsmd wrote them again):
	 * read once. */
	struct {
		uint64_t first, last, seq;
		bool present;
		uint64_t again_first, again_last;
	} lost[4];
	size_t n_lost;
	/* Bytes hsmd found in its live file that it had not written, kept aside
	 * and cut off (AuditForeignBytes, at seq): where they were, how many, and
	 * how many it kept in saved_to (in the audit directory).  The chain never
	 * held them.  The first four of n_foreign, in the trail's order. */
	struct {
		uint64_t seq, offset, length, saved;
		char file[64], saved_to[128]; /* "" when the record does not say */
	} foreign[4];
	size_t n_foreign;
	/* A live log (allow_open_tail): the bytes of an unfinished last line of the
	 * newest file, a record hsmd is writing, left out of the verdict; 0 = none. */
	uint64_t in_progress_bytes;
	/* Records no checkpoint of the run that wrote them signed: a run that
	 * crashed (or stayed sealed) before its next signed checkpoint, and the
	 * next run's AuditLogOpened (at opened_seq) that found them.  Later
	 * signatures cover them only by the chain, as that run found them.  The
	 * first HSM_AUDIT_UNSIGNED_RANGES of n_unsigned_at_write. */
	struct {
		uint64_t first, last, opened_seq;
		bool stated; /* the AuditLogOpened names them, with their head */
	} unsigned_at_write[4];
	size_t n_unsigned_at_write;
	/*
	 * Not a verdict but a warning: the records' times went back by more than
	 * HSM_AUDIT_TIME_BACK_MS (a wall clock stepped back, or one that ran
	 * ahead for a while put right: retention may then have deleted records it
	 * took for expired, under a checkpoint of its own).  time_backs counts
	 * the records dated so before an earlier one; the first is seq
	 * time_back_seq at time_back_to, after seq time_back_from_seq at
	 * time_back_from, the latest time before it.
	 */
	uint64_t time_backs;
	uint64_t time_back_seq, time_back_from_seq;
	char time_back_from[32], time_back_to[32];
	/* The first problem, when !valid. */
	hsm_audit_problem problem;
	char file[HSM_AUDIT_PATH_MAX];
	uint64_t line;                 /* 1-based line number in that file */
	uint64_t offset;               /* byte offset of that line */
	uint64_t seq;                  /* its seq when it has one, else 0 */
	char detail[HSM_AUDIT_DETAIL_MAX];
} hsm_audit_verify_report;

/*
 * Verifies the files (sorted by name, which sorts them by first sequence
 * number) as one log: sequence, chain, checkpoint signatures, torn or
 * truncated tails.  Two files of the same name (a file and its copy) are
 * read once if they hold the same bytes, and reported as modified if not.
 * Files that fail as one log and hold more than one node's trail (groups of
 * files with no node id in common, a seq claimed by a record in each) are
 * verified each trail alone: if one fails, the report is its verdict; only
 * if every one verifies is there no verdict: report->problem is
 * HSM_AUDIT_SEVERAL_TRAILS, and report->detail names the trails.  Returns HSM_SUCCESS when the check
 * ran (the verdict is in report->valid) and a failure only when a file or the
 * key cannot be read.
 */
hsm_result hsm_audit_verify_files(const char *const *paths, size_t n_paths,
                                  const hsm_audit_verify_options *opts,
                                  hsm_audit_verify_report *report) HSM_MUST_CHECK;

/*
 * The files that args (what a user gave verify or report) name: a directory
 * stands for its log files (audit-SEQ.jsonl; not its subdirectories), and
 * one without any is refused; anything else is taken as a file.  *out gets
 * *n_out malloc'd paths, freed with hsm_audit_free_paths().
 */
hsm_result hsm_audit_expand_paths(const char *const *args, size_t n, char ***out,
                                  size_t *n_out) HSM_MUST_CHECK;
void hsm_audit_free_paths(char **paths, size_t n);
/*
 * The log files (audit-SEQ.jsonl) of one audit directory, oldest first, as
 * *n_out malloc'd paths (none is no error, unlike hsm_audit_expand_paths),
 * freed with hsm_audit_free_paths().  A directory that cannot be read fails.
 */
hsm_result hsm_audit_trail_files(const char *dir, char ***out, size_t *n_out) HSM_MUST_CHECK;

/*
 * Same over contents already in memory (data[i] of lens[i] bytes, shown as
 * names[i]), in the order given.  For tools and tests.
 */
hsm_result hsm_audit_verify_memory(const char *const *names, const uint8_t *const *data,
                                   const size_t *lens, size_t n,
                                   const hsm_audit_verify_options *opts,
                                   hsm_audit_verify_report *report) HSM_MUST_CHECK;

const char *hsm_audit_problem_name(hsm_audit_problem p);

#endif
