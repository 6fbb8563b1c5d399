/*
 * audit_internal.h - state shared by the files of src/audit.  Not a public
 * interface.
 *
 * Locking: `mu` guards the queue, the health flag, the watchdog's view of the
 * current I/O operation, the hand-overs to the syncer and sweeper threads and
 * the request counters.  Everything in `w` (the file, the sequence, the chain head, the
 * bytes not yet durable) belongs to the writer thread alone.  `signer_mu` is held while the signer runs, so
 * hsm_audit_set_signer can wait for a call in progress.
 */
#ifndef HSM_AUDIT_INTERNAL_H
#define HSM_AUDIT_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "audit/audit.h"
#include "audit/audit_format.h"
#include "common/buf.h"

#define AUDIT_BATCH_MAX 1024
#define AUDIT_FILE_PREFIX "audit-"
#define AUDIT_FILE_SUFFIX ".jsonl"
#define AUDIT_SEQ_DIGITS 20
/* How far back from the end of a file a damaged tail is looked for. */
#define AUDIT_TAIL_WINDOW ((size_t)1 << 20)
/* Recorded losses (AuditRecordsLost) one retention pass may pass. */
#define AUDIT_LOSSES_MAX 8
/*
 * Space kept allocated ahead of the end of the current file (fallocate,
 * keeping its size), so that the records of requests already served still
 * fit when the disk fills: once that space cannot be kept, new requests are
 * refused (low_space) while what was admitted is written into it.
 */
#define AUDIT_RESERVE_BYTES ((uint64_t)4 << 20)
/*
 * Bytes someone else wrote into the live file are copied aside before the
 * writer cuts them off (audit_io_recover): at most this many from where they
 * begin, the whole length noted in the AuditForeignBytes that records them.
 */
#define AUDIT_FOREIGN_KEEP_MAX ((uint64_t)1 << 20)
/* Such findings not yet recorded that the writer holds (more are logged only). */
#define AUDIT_FOREIGN_NOTES 4

typedef struct audit_slot {
	hsm_buf body;
	hsm_audit_done_fn cb;
	void *arg;
} audit_slot;

/* The hand-over of one background fdatasync between writer and syncer. */
typedef enum audit_sync_state {
	AUDIT_SYNC_IDLE,      /* nothing asked */
	AUDIT_SYNC_REQUESTED, /* the writer asked; the syncer has not started */
	AUDIT_SYNC_RUNNING,   /* the syncer is inside fdatasync */
	AUDIT_SYNC_DONE,      /* finished; result in sync_err, for the writer to collect */
} audit_sync_state;

typedef struct audit_cbent {
	hsm_audit_done_fn cb;
	void *arg;
} audit_cbent;

/* ack_durable: a written record's callback, held until every record below `below` is durable. */
typedef struct audit_held {
	audit_cbent cb;
	uint64_t below;
} audit_held;

/*
 * The signed checkpoint the open-time scan took a floor above 1 from: what
 * its signature covers, so retention can check it is this node's (the
 * signer signs its message again: Ed25519 signatures are deterministic)
 * before it deletes anything under that floor.
 */
typedef struct audit_floor_ckpt {
	bool set;            /* a floor above 1 from a checkpoint, not checked yet */
	uint64_t seq, kept_from;
	char node[HSM_AUDIT_NAME_MAX + 1]; /* the writer that signed it */
	char time[32];
	char reason[32];
	char prev[AUDIT_HASH_HEX + 1];
	uint8_t sig[64];
} audit_floor_ckpt;

/* What the open-time scan found at the end of the log. */
typedef struct audit_tail_info {
	uint64_t next_seq;
	uint8_t head[AUDIT_HASH_LEN];
	bool found;          /* some earlier record exists */
	bool clean;          /* the last record is a shutdown checkpoint (or the log is new) */
	bool needs_new_file; /* last file ends with a rotation checkpoint, or there is none */
	char path[PATH_MAX]; /* file to continue (when !needs_new_file) */
	uint64_t file_first_seq;
	int64_t file_first_ms;
	uint64_t kept_from;  /* every record from it on is kept: the floor the trail states */
	bool floor_seen;     /* the scan found the checkpoint it took kept_from from */
	bool window_whole;   /* the newest file's scan window held all of it */
	audit_floor_ckpt floor_ckpt;
	/*
	 * When floor_ckpt is an offline hsmctl's (it carries the floor it found
	 * forward): the newest signed checkpoint before it that is not
	 * hsmctl's, stating the same floor: where the floor came from.
	 * origin_wanted: still looked for.
	 */
	audit_floor_ckpt floor_origin;
	bool origin_wanted;
	uint64_t torn_bytes; /* damaged bytes moved aside */
	char torn_path[PATH_MAX];
	/*
	 * The records at the end of the trail no checkpoint that says it is
	 * signed follows: unsigned_first to next_seq - 1 (0: none, the last
	 * record is a signed checkpoint).  A run that crashed, or ran sealed,
	 * left them; the new run's checkpoints cover them only as it found them.
	 */
	uint64_t unsigned_first;
} audit_tail_info;

/*
 * Bytes found in the live file that hsmd did not write there (appended by
 * another process, or left after the last whole record of a cut file),
 * copied to saved_to in the audit directory and cut off; recorded by
 * AuditForeignBytes.
 */
typedef struct audit_foreign_note {
	char file[NAME_MAX + 1];     /* the live file's name */
	char saved_to[NAME_MAX + 1]; /* the side file's name, in the audit directory */
	uint64_t offset, length;     /* where they began in the file, and how many */
	uint64_t saved;              /* how many were kept (at most AUDIT_FOREIGN_KEEP_MAX) */
	uint8_t sha256[AUDIT_HASH_LEN]; /* of the bytes kept */
} audit_foreign_note;

/* The writer thread's own state. */
typedef struct audit_writer {
	int fd;                  /* -1: a new file named by next_seq is needed */
	char path[PATH_MAX];
	uint64_t file_first_seq;
	int64_t file_opened_ms;
	uint64_t synced_off;     /* file bytes known durable */
	hsm_buf pending;         /* formatted lines after synced_off, some maybe written */
	size_t written;          /* bytes of pending already written */
	uint64_t pending_records;
	uint64_t unsynced_since_ns; /* oldest write no sync covers yet, 0 = none */
	uint64_t lag_since_ns;   /* oldest write not yet durable (covered or not), 0 = none */
	uint64_t req_off;        /* file offset the background sync in flight covers */
	uint64_t req_records;    /* pending records it covers */
	uint64_t req_seq;        /* next_seq when it was asked */
	uint64_t next_seq;
	uint8_t head[AUDIT_HASH_LEN]; /* SHA-256 of the last formatted line */
	EVP_MD_CTX *md_ctx;
	EVP_MD *sha256;
	int64_t next_checkpoint_ms;
	int64_t next_retention_ms;
	uint64_t retry_at_ns;
	uint64_t held_since_ns;  /* acknowledgements held by the lag bound since, 0 = not held */
	uint64_t pending_first_seq; /* seq of the first line in pending */
	uint64_t kept_from;      /* checkpoints state it: every record from this seq on is kept */
	audit_floor_ckpt floor_ckpt; /* where kept_from came from at open, until checked */
	audit_floor_ckpt floor_origin; /* see audit_tail_info */
	bool rotate_pending;     /* a rotation checkpoint ends the file: start a new one */
	uint64_t reserved_to;    /* file offset up to which space is allocated (0: none yet) */
	bool reserve_unsupported; /* the file system cannot allocate ahead: no reserve kept */
	uint64_t reserve_retry_ns; /* low on space: when to try to allocate again */
	uint64_t low_since_ns;   /* when the low-space spell began (0: none) */
	bool low_ended;          /* a spell ended: its event is still to be written */
	int last_errno;          /* errno of the last failed I/O step */
	/* Records found lost (their file deleted or cut under the log), not yet recorded
	 * (AuditRecordsLost): lost_first..lost_last, lost_last 0 = none. */
	uint64_t lost_first, lost_last;
	bool lost_checkpoint;    /* recorded: the checkpoint after it is still to be written */
	/* Foreign bytes kept aside, not yet recorded (AuditForeignBytes), oldest first. */
	audit_foreign_note foreign[AUDIT_FOREIGN_NOTES];
	size_t n_foreign;
	hsm_buf scratch;
	audit_slot batch[AUDIT_BATCH_MAX];
	audit_cbent cbs[AUDIT_BATCH_MAX];
	audit_cbent drained[AUDIT_BATCH_MAX]; /* queued records failed by an outage */
} audit_writer;

typedef struct audit_syslog audit_syslog;

struct hsm_audit {
	hsm_audit_config cfg;
	char dir[PATH_MAX];
	char node[HSM_AUDIT_NAME_MAX + 1];
	int lock_fd;

	pthread_mutex_t mu;
	pthread_cond_t wake_writer;
	pthread_cond_t wake_waiters;
	pthread_cond_t wake_watchdog;
	audit_slot *slots;
	size_t cap, head, count;
	bool writer_idle;
	atomic_bool healthy;
	atomic_bool stopping;
	atomic_bool low_space;   /* the reserve ahead of the file cannot be kept (writer's) */
	atomic_uint_fast64_t refused_low; /* requests refused meanwhile (hsm_audit_note_refused) */
	bool writer_ready;       /* the open events are written (or failed) */
	bool writer_exited;
	bool watchdog_stop;

	/* Requests from other threads to the writer, answered by generation. */
	bool req_rotate, req_checkpoint, req_seal;
	uint64_t req_gen, done_gen;
	hsm_result req_result;

	/* The watchdog's view of the writer's current operation. */
	uint64_t op_start_ns;    /* 0: no blocking operation in progress */
	bool op_timed_out;
	const audit_cbent *inflight; /* callbacks of the batch being written, or NULL */
	size_t n_inflight;
	audit_cbent wd_cbs[AUDIT_BATCH_MAX];

	/* ack_durable (under mu): callbacks of records written, not yet durable, in seq order:
	 * held[held_head .. held_n).  Released by the writer as the syncs finish, failed by
	 * audit_fail_locked. */
	audit_held *held;
	size_t held_head, held_n, held_cap;

	/* The background sync (under mu): see audit_sync_state. */
	pthread_cond_t wake_syncer;
	audit_sync_state sync_state;
	int sync_fd;             /* the file to sync, while REQUESTED or RUNNING */
	uint64_t sync_len;       /* the bytes it must hold by then (every one written) */
	int sync_err;            /* 0 or the errno of the finished sync */
	uint64_t sync_start_ns;  /* when RUNNING began, for the watchdog */
	bool sync_timed_out;     /* the watchdog gave up on the running sync */
	bool syncer_stop, syncer_exited;
	/* Retention, run by the sweeper thread (under mu): see audit_sweeper_main. */
	pthread_cond_t wake_sweeper;
	bool sweep_requested;    /* the writer asked for a pass */
	bool sweep_running;
	bool sweep_done;         /* a pass deleted files: wakes the writer to record them */
	atomic_bool sweep_unrecorded; /* swept is not empty (read by the writer without mu) */
	char sweep_keep[PATH_MAX]; /* the current file's name when asked: never deleted */
	hsm_buf swept;           /* comma-separated names deleted, not yet recorded */
	char copy_dir[PATH_MAX]; /* "" when closed files are not copied */
	char copied_upto[PATH_MAX]; /* the sweeper's: files named up to this one were checked */
	/* The sweeper's request for a retention checkpoint before it deletes. */
	bool ret_requested;
	uint64_t ret_kept_from, ret_gen, ret_done_gen;
	audit_floor_ckpt ret_losses[AUDIT_LOSSES_MAX]; /* see audit_declare_kept_from */
	size_t ret_n_losses;
	hsm_result ret_result;
	bool sweeper_stop, sweeper_exited;
	/* The wall clock and the elapsed time at open (audit_clock_ahead_ms); the sweeper's
	 * last finding, under mu. */
	int64_t wall0_ms, elapsed0_ms;
	bool has_elapsed, retention_held;
	/* The time of the trail's newest record at open (0: none), and whether the last pass
	 * kept files the wall clock would have expired (audit_retention_now_ms). */
	int64_t trail_newest0_ms;
	bool retention_start_ahead;
	bool retention_unsigned; /* the last pass deleted nothing: no signer to sign its checkpoint */
	bool retention_blocked;  /* the last pass deleted nothing: the chain does not prove the floor */
	bool floor_unsigned;     /* the checkpoint the floor came from is not this node's signed one */
	/* The floor the writer's checkpoints state (w.kept_from), for the sweeper. */
	atomic_uint_fast64_t kept_from_pub;

	/* The current outage (under mu). */
	uint64_t outage_start_ns;
	int outage_errno;        /* ETIMEDOUT when the deadline was exceeded */

	/* Counters (under mu). */
	uint64_t refused_total, refused_in_outage, written_total, outages;
	uint64_t ckpt_signed, ckpt_unsigned, files_expired, files_copied, copy_failures;
	uint64_t acks_held, acks_held_ns;
	atomic_uint_fast64_t next_seq_pub;
	atomic_uint_fast64_t durable_seq_pub; /* every record below this seq is durable */
	/* fdatasync durations (atomics: the writer and the syncer both sync). */
	atomic_uint_fast64_t sync_ns;
	atomic_uint_fast64_t sync_buckets[HSM_AUDIT_SYNC_BUCKETS + 1];

	pthread_mutex_t signer_mu;
	hsm_audit_sign_fn signer;
	void *signer_arg;
	atomic_bool signer_changed;

	audit_syslog *syslog;
	audit_tail_info opened; /* what the open-time scan found, for the open event */
	audit_writer w;
	pthread_t writer_thread, watchdog_thread, syncer_thread, sweeper_thread;
};

/* How long a wait on the writer may last: long enough to drain a full queue,
 * short enough that close (or a pass waiting for its checkpoint) never hangs. */
uint64_t audit_close_timeout_ms(const hsm_audit *a);
/* Wall clock (UTC ms), through the configured clock. */
int64_t audit_now_ms(const hsm_audit *a);

/* ---- audit_tail.c: what is on disk at open ------------------------------- */

/* Finds the log's last valid record, moves a torn tail aside. */
hsm_result audit_tail_scan(hsm_audit *a, audit_tail_info *out) HSM_MUST_CHECK;
/* Lists the log files of dir sorted by name (= by first seq); caller frees with audit_free_list. */
hsm_result audit_list_files(const char *dir, char ***names, size_t *n) HSM_MUST_CHECK;
void audit_free_list(char **names, size_t n);
/* Parses "audit-<20 digits>.jsonl"; false for any other name. */
bool audit_parse_file_name(const char *name, uint64_t *first_seq);
/* Reads the last complete line of a file; false when there is none. */
bool audit_read_last_line(const char *path, hsm_buf *line);
/* Reads the first line of a file (up to 64 KiB, without its newline); false when there is none. */
bool audit_read_first_line(const char *path, hsm_buf *line);
/* Whether s is a record hash as the trail writes it: AUDIT_HASH_HEX lowercase hex digits. */
bool audit_is_hash_hex(const char *s);
/* The "time" of a line, in ms; false when it has none. */
bool audit_line_time(const uint8_t *line, size_t n, int64_t *t_ms);
/* Reads the whole file at path into *out (replacing what it held); false on failure. */
bool audit_read_whole(const char *path, hsm_buf *out);
/* Whether line[0..n) is a checkpoint stating a floor that says it is signed; fills *fc. */
bool audit_line_signed_ckpt(const uint8_t *line, size_t n, audit_floor_ckpt *fc);
/* The last record a damaged live file still holds, whole and chained. */
typedef struct audit_kept_record {
	bool found;
	uint64_t seq;
	uint64_t end; /* the byte after its newline */
	uint8_t hash[AUDIT_HASH_LEN];
} audit_kept_record;
/*
 * Looks back from byte limit of fd (over the last AUDIT_TAIL_WINDOW bytes)
 * for the last complete, well-formed line with a seq from first_seq to
 * last_seq whose predecessor is the line before it (seq one less, prev its
 * hash), or which is the file's first (seq first_seq).  False when the file
 * cannot be read; out->found false when no such line is there.
 */
bool audit_last_record_in(int fd, uint64_t limit, uint64_t first_seq, uint64_t last_seq,
                          audit_kept_record *out);

/* ---- audit_io.c: the file, under the watchdog ---------------------------- */

/* Marks the start and end of an operation that may block; end returns false
 * when the watchdog declared it timed out meanwhile. */
void audit_op_begin(hsm_audit *a, const audit_cbent *cbs, size_t n);
bool audit_op_end(hsm_audit *a);
/* Writes every unwritten pending byte. */
hsm_result audit_io_write(hsm_audit *a) HSM_MUST_CHECK;
/* fdatasync; on success every pending byte is durable and pending is emptied. */
hsm_result audit_io_sync(hsm_audit *a) HSM_MUST_CHECK;
/*
 * Creates the file for the first pending record, or next_seq (when fd < 0).
 * A file already of that name is refused unless regular; one that holds the
 * first bytes of pending and nothing else is taken as it is (written set to
 * them); any other bytes in it are kept aside (AuditForeignBytes) and cut.
 */
hsm_result audit_io_new_file(hsm_audit *a) HSM_MUST_CHECK;
/* Brings the file back to synced_off + pending after a failure. */
hsm_result audit_io_recover(hsm_audit *a) HSM_MUST_CHECK;
/*
 * Keeps AUDIT_RESERVE_BYTES allocated ahead of the end of the current file;
 * sets low_space when it cannot (retried every retry_interval_ms) and clears
 * it when it can again.  The writer's.
 */
void audit_io_keep_reserve(hsm_audit *a);
/* Closes the current file, giving back the space kept ahead of it. */
void audit_io_close(hsm_audit *a);
/* fdatasync(fd) (through the test hook): 0 or an errno value.  Touches no writer state. */
int audit_io_fdatasync(hsm_audit *a, int fd);
/*
 * Whether fd is still the live file at path, holding at least len bytes
 * (exact: exactly len): 0, or ESTALE when it was deleted, renamed away or
 * replaced, EIO when it was cut shorter or grew (and logs which).  A record
 * acknowledged into a file nobody can read any more would be a record lost,
 * so every write batch (exact) and every sync checks this: the log then
 * fails, refuses requests, and goes on in a new file, where the gap shows
 * what went.  Touches no writer state.
 */
int audit_io_check_file(int fd, const char *path, uint64_t len, bool exact);
/* Copies closed files missing from copy_dir there (when set), then deletes
 * the oldest files whose newest record is older than the retention (and
 * their copies), never keep_file nor the newest file nor one not copied.
 * Appends the names deleted (comma-separated) to deleted.  Touches no
 * writer state. */
/* How far the wall clock has run ahead of the elapsed time since open; 0 when unknown. */
int64_t audit_clock_ahead_ms(const hsm_audit *a);
/*
 * The time retention measures files against: the wall clock, unless at open
 * it was already more than HSM_AUDIT_START_AHEAD_MAX_MS ahead of the trail's
 * newest record (*start_ahead_ms: by how much; else 0).  A clock set wrong
 * before the start cannot be told from time that passed while the node was
 * stopped, and audit_clock_ahead_ms measures from the start, so it cannot see
 * it: then no more of the stop than that bound counts, the newest record's
 * time plus the bound plus the time elapsed since open.  A clock set ahead
 * before a start can so make retention delete files at most that much early;
 * files that expire only by the wall clock wait (for a later start, which
 * measures from a newer record).
 */
int64_t audit_retention_now_ms(const hsm_audit *a, int64_t *start_ahead_ms);
hsm_result audit_retention_apply(hsm_audit *a, const char *keep_file,
                                 hsm_buf *deleted) HSM_MUST_CHECK;

/* ---- audit_writer.c ------------------------------------------------------ */

#define NS_PER_MS 1000000ULL
/* How often retention runs besides after each rotation. */
#define RETENTION_PERIOD_MS ((int64_t)3600 * 1000)

/* Waits on cv (mu held) until woken or the CLOCK_MONOTONIC time mono_ns. */
void audit_timedwait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t mono_ns);
/* The writer's: appends an event (op, outcome, fields) and makes it durable. */
hsm_result audit_write_event(hsm_audit *a, const char *op, hsm_audit_outcome outcome,
                             const hsm_audit_field *extra, size_t n_extra);
/* The writer's: appends a checkpoint (signed when a signer is set) and makes it durable. */
hsm_result audit_write_checkpoint(hsm_audit *a, const char *reason);
/* The same; *signed_out says whether it went out signed (false on failure). */
hsm_result audit_write_checkpoint_signed(hsm_audit *a, const char *reason, bool *signed_out);
/* Whether a signer is set now (it may be cleared the moment after). */
bool audit_has_signer(hsm_audit *a);
/*
 * The writer's: whether this node signed the checkpoint fc, told by signing its
 * message again (Ed25519 signatures are deterministic).  *no_signer: no signer
 * was set (or it failed), nothing was told.
 */
bool audit_ckpt_ours(hsm_audit *a, const audit_floor_ckpt *fc, bool *no_signer);
/* An offline hsmctl's node id ("hsmctl-<host>-<hash of its data directory>"). */
bool audit_node_offline(const char *node);
/*
 * The writer's, before it signs a checkpoint or retention deletes: checks (once,
 * with a signer) that the checkpoint the floor came from at open (w.floor_ckpt)
 * is this node's.  If not, the floor goes back to seq 1 (the checkpoints never
 * repeat a floor the node did not sign), floor_unsigned is set, and false is
 * returned, then and from then on.  *no_signer: not checked yet, for want of one.
 */
bool audit_check_floor(hsm_audit *a, bool *no_signer);

void *audit_writer_main(void *arg);
void *audit_watchdog_main(void *arg);
void *audit_syncer_main(void *arg);
void *audit_sweeper_main(void *arg);
/* Turns the log unhealthy (if it is not already) and fails every queued record; mu held. */
void audit_fail_locked(hsm_audit *a, audit_cbent *out, size_t *n_out, size_t max);
/*
 * From the sweeper, before it deletes: has the writer write a "retention"
 * checkpoint stating kept_from and waits until it is durable (or fails).
 * losses[0..n_losses): the signed checkpoints after the AuditRecordsLost
 * records of the gaps the pass passes; the writer checks that this node
 * signed each (HSM_ERR_INVALID_STATE if not: nothing is written).
 */
hsm_result audit_declare_kept_from(hsm_audit *a, uint64_t kept_from,
                                   const audit_floor_ckpt *losses,
                                   size_t n_losses) HSM_MUST_CHECK;

/* ---- audit_sweep.c: the writer's side of the sweeper ---------------------- */

/* Asks the sweeper for a pass (after a rotation, at open, hourly). */
void audit_request_retention(hsm_audit *a);
/* Writes the retention checkpoint a pass waits for, if one is asked for. */
void audit_answer_retention(hsm_audit *a);
/* Records what the last passes deleted (AuditFilesExpired). */
void audit_record_sweep(hsm_audit *a);
/* At shutdown: lets a pass in progress finish, answering it, then records it. */
void audit_stop_sweeper(hsm_audit *a);

/* ---- audit_syslog.c ------------------------------------------------------ */

/* Forwards to the log socket at path (NULL: /dev/log), from a thread of its own. */
hsm_result audit_syslog_start(const char *path, audit_syslog **out) HSM_MUST_CHECK;
/*
 * Queues a copy of a line, cut to its first 8192 bytes (counted); drops it
 * (counted) when the queue is full.
 */
void audit_syslog_forward(audit_syslog *s, const uint8_t *line, size_t n);
/* Lines not delivered: the queue full, or the socket not reached or refusing them. */
uint64_t audit_syslog_dropped(const audit_syslog *s);
/* Lines forwarded cut. */
uint64_t audit_syslog_cut(const audit_syslog *s);
void audit_syslog_stop(audit_syslog *s);

#endif
