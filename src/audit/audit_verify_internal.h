/*
 * audit_verify_internal.h - the verifier's parts: a reader that turns files
 * into parsed entries with a lookahead window, and the rules that name the
 * first bad record.  Internal to src/audit.
 */
#ifndef HSM_AUDIT_VERIFY_INTERNAL_H
#define HSM_AUDIT_VERIFY_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "audit/audit.h"
#include "audit/audit_format.h"

/* How far ahead (and back) the rules look to tell a reorder or an insertion from a change. */
#define VERIFY_WINDOW 64
/* The recorded losses of the live file a verdict names (the rest are counted). */
#define VERIFY_LOSSES_SHOWN 4

typedef enum { VE_RECORD, VE_MALFORMED, VE_TORN } ventry_kind;

typedef struct ventry {
	ventry_kind kind;
	size_t file;
	uint64_t line, offset, len;
	uint64_t seq;
	uint8_t hash[AUDIT_HASH_LEN], prev[AUDIT_HASH_LEN];
	char prev_hex[AUDIT_HASH_HEX + 1];
	bool genesis;       /* prev is all zeros: claims to be the first record ever */
	bool first_in_file;
	int64_t time_ms;
	/* Requests and events: what and whether it succeeded */
	bool request, event, success;
	char op[HSM_AUDIT_NAME_MAX + 1];
	uint64_t latency_us;    /* requests: how long it ran before it was recorded */
	unsigned trail_format;  /* AuditLogOpened, checkpoint: the format declared, 0 = none (older) */
	bool offline;           /* written by hsmctl ("source":"hsmctl") */
	char previous_shutdown[8]; /* AuditLogOpened: "none", "clean", "unclean"; "" unstated */
	uint64_t lost_first, lost_last; /* AuditRecordsLost: the records it names (0: none) */
	/* AuditForeignBytes: where the bytes were, how many, how many were kept, and where */
	uint64_t foreign_offset, foreign_length, foreign_saved;
	char foreign_file[64], foreign_saved_to[128];
	/* AuditLogOpened: the unsigned records it found at the end of the trail (0: none
	 * stated), and the SHA-256 of the last */
	uint64_t unsigned_first, unsigned_last;
	uint8_t unsigned_head[AUDIT_HASH_LEN];
	/* Checkpoints */
	bool ckpt, ckpt_signed, ckpt_sig_ok_form;
	bool canonical; /* checkpoint: the line is byte for byte what hsmd writes for its fields */
	char reason[16], time[25], node[HSM_AUDIT_NAME_MAX + 1];
	uint64_t kept_from; /* 0: the checkpoint does not state it */
	uint8_t sig[64];
} ventry;

typedef struct vreader {
	const char *const *names; /* display names, sorted */
	const uint8_t *const *mem; /* in-memory contents, or NULL to read names from disk */
	const size_t *mem_len;
	size_t n_files, fi;
	hsm_buf owned;            /* the current file when read from disk */
	const uint8_t *data;
	size_t len, pos;
	uint64_t line;
	bool file_open;
	hsm_result io;            /* first read failure */
	ventry win[VERIFY_WINDOW + 1];
	size_t win_head, win_count;
	bool eof;
} vreader;

/* The entry i places ahead (0 = current), or NULL at the end of the log. */
const ventry *vreader_peek(vreader *r, size_t i);
void vreader_pop(vreader *r);

/* With a public key (audit_verify.c, check_signing): every checkpoint must be signed
 * since the record at must_sign_seq showed the node unsealed. */
typedef struct vsigning {
	bool must_sign;
	uint64_t must_sign_seq;
	bool must_sign_by_request;  /* ...a request only an unsealed node answers, at must_sign_ms */
	int64_t must_sign_ms;
	bool sealed_by_checkpoint; /* the last reset was a verified "seal" checkpoint... */
	int64_t sealed_ms;         /* ...written then */
} vsigning;

/* State of the walk along the chain. */
typedef struct vstate {
	bool have_p;
	ventry hist[VERIFY_WINDOW]; /* accepted records, newest at hist_head-1 */
	size_t hist_head, hist_count;
	ventry floor_at;            /* the last checkpoint stating kept_from (kept_from 0: none) */
	/* The log given starts with an older hsmd's records: its first checkpoint states no
	 * kept_from (that hsmd's retention wrote no retention checkpoint). */
	bool ckpt_seen, older_start;
	vsigning sign;
	/* With a public key, under the current rules: a request only an unsealed node answers
	 * (at use_unsigned_seq) that no verified checkpoint has followed yet in its run. */
	bool use_unsigned;
	uint64_t use_unsigned_seq;
	/* ...whether its run had shown a verified checkpoint before it (an unsealed node
	 * signs one at once), and the seq of an AuditLogOpened since (0: none): a run that
	 * signed, then crashed before the next minute's checkpoint.  A verified checkpoint of
	 * a later run covers its unsigned tail by the chain; with none, the log's end fails. */
	bool use_unsigned_run_signed;
	uint64_t use_unsigned_restart_seq;
	bool run_signed; /* a verified checkpoint since the last AuditLogOpened */
	/* The last record was a shutdown checkpoint: only a new run (an AuditLogOpened)
	 * may follow it, the run that wrote it having ended. */
	bool after_shutdown;
	/* The log given may start inside a run whose AuditLogOpened retention removed.  Until
	 * the first opening or checkpoint says which format the run keeps (format_known), sign
	 * follows the current rules and sign_older an older hsmd's, and that record picks one. */
	bool format_known;
	vsigning sign_older;
	/* The highest trail format an opening or checkpoint has declared so far: 0 while the
	 * records are an older hsmd's (audit_format.h, AUDIT_TRAIL_FORMAT). */
	unsigned trail_format;
	uint64_t trail_format_seq; /* ...and the seq of the record that declared it */
	/* Records missing where the node's live file was lost, which its AuditRecordsLost
	 * names: the chain goes on past them, and unless something else is wrong first the
	 * verdict is that they are missing, at loss_at (the first record after the first
	 * such gap).  The first VERIFY_LOSSES_SHOWN gaps (range, and the seq of the
	 * AuditRecordsLost naming it) of n_losses. */
	bool loss_gap;
	ventry loss_at;
	struct {
		uint64_t first, last, seq;
	} losses[VERIFY_LOSSES_SHOWN];
	size_t n_losses;
	/*
	 * A file that begins where the node's live file may have been lost: hsmd
	 * rewrites the records not yet synced into the new file and only then
	 * records the loss, so the AuditRecordsLost naming it may come any number
	 * of records later (in that file, or in the next one when those records
	 * ended with a rotation checkpoint).  The chain is followed meanwhile;
	 * pend_verdict is the report as it would stand had the file been judged
	 * by the usual rules at its first record (pend_at), which stands unless
	 * the node's AuditRecordsLost naming exactly the records missing arrives
	 * first (pend_fails false: the usual rules found nothing wrong there).
	 */
	bool pend, pend_fails, pend_linked, pend_crossed, pend_have_p;
	ventry pend_at;
	uint64_t pend_p_seq;  /* the last record before pend_at, when pend_have_p */
	hsm_audit_verify_report pend_verdict;
	/* Records hsmd wrote again into the pending file start (again_first to again_last,
	 * below), or 0: none. */
	uint64_t pend_again_first, pend_again_last;
	/*
	 * A file that begins with records the node wrote again: its live file was
	 * replaced by a copy of itself (sed -i; cp, then mv) while records written
	 * into it waited for their fsync, so the copy holds them too.  hsmd cannot
	 * know that copy will stay: it goes on in a new file, writes them there
	 * again first, then records the loss (docs/audit.md, "Files").  Put back,
	 * the file before ends with them, without its rotation checkpoint.  From
	 * again_at (the file's first record) each must chain to the one before it
	 * (again_last) up to the last record read (the copy's last), and be that
	 * record byte for byte (the same SHA-256): then by the chain each is the
	 * record of its seq already read, and is not read twice.  Anything else,
	 * and the usual rules' verdict at again_at (again_verdict) stands.
	 * again_done: the record after them comes next; it must chain to the last.
	 */
	bool again, again_done;
	ventry again_at, again_last;
	hsm_audit_verify_report again_verdict;
	uint64_t file_first; /* the first seq of the file of the last record accepted */
	/* The last checkpoint that is signed (verified with a key; said so without): the
	 * records after it are unsigned until the next one. 0: none yet. */
	uint64_t last_signed_seq;
	uint64_t unsigned_listed_to; /* the end of the last range listed as unsigned at write */
	/* The latest time of the records accepted so far, and its record (0: none yet). */
	int64_t latest_ms;
	uint64_t latest_seq;
	char latest[32];
} vstate;

const ventry *vstate_back(const vstate *s, size_t i); /* 0 = last accepted */
void vstate_push(vstate *s, const ventry *e);

/*
 * Checks e (the current entry) against the chain so far; on a problem fills
 * the report's problem fields and returns false.
 */
bool verify_rules_check(vreader *r, const vstate *s, hsm_audit_verify_report *rep);
void verify_report_at(vreader *r, hsm_audit_verify_report *rep, hsm_audit_problem p,
                      const ventry *e, const char *fmt, ...) HSM_PRINTF(5, 6);

/* Verifies paths[0..n) as one log into rep (hsm_audit_verify_files without this check). */
typedef hsm_result (*audit_verify_group_fn)(const char *const *paths, size_t n,
                                            const hsm_audit_verify_options *opts,
                                            hsm_audit_verify_report *rep);

/*
 * After files failed to verify as one log (rep holds that verdict): whether
 * they hold more than one node's trail (audit_verify_trails.c).  Only when a
 * seq appears in two groups of files with no node id in common are the groups
 * verified each alone with verify(opts): if one fails, rep gets its verdict;
 * if all verify, rep says the files hold several trails and names them
 * (HSM_AUDIT_SEVERAL_TRAILS).  Otherwise, or if a file cannot be read here,
 * rep is left as it is.  Fails only when verify does (or memory runs out).
 */
hsm_result audit_verify_several_trails(const char *const *paths, size_t n,
                                       audit_verify_group_fn verify,
                                       const hsm_audit_verify_options *opts,
                                       hsm_audit_verify_report *rep) HSM_MUST_CHECK;

#endif
