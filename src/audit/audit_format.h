/*
 * audit_format.h - the hand-written JSON Lines writer of audit records.
 *
 * Internal to src/audit.  A line is
 *   {"seq":N,<body>,"prev":"<64 hex>"}
 * where the body (every field between seq and prev, in the fixed order of
 * docs/audit.md) is formatted by the submitting thread and the writer adds
 * seq and prev.  All strings pass through one escaper that keeps the output
 * valid JSON and valid UTF-8 whatever the input bytes are.
 */
#ifndef HSM_AUDIT_FORMAT_H
#define HSM_AUDIT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "audit/audit.h"
#include "common/buf.h"

#define AUDIT_HASH_LEN 32
#define AUDIT_HASH_HEX 64
/*
 * The trail format hsmd declares in every AuditLogOpened event
 * ("extra":{"trail_format":"2"}) and every checkpoint ("trail_format":2 in
 * its checkpoint object): from 2 on, an unsealed node signs every checkpoint
 * until a signed "seal" or "shutdown" checkpoint.  A run that declares none
 * was written by an older hsmd (format 1, never written out), which left its
 * shutdown checkpoint, and the checkpoints after a Seal request, unsigned;
 * the verifier holds such a run to that.
 */
#define AUDIT_TRAIL_FORMAT 2
#define AUDIT_TRAIL_FORMAT_STR "2"

/* A line never exceeds this (bounded fields x worst-case escaping, plus room). */
#define AUDIT_LINE_MAX ((size_t)64 << 10)

/* Appends s as a JSON string (quotes included), keeping at most max input bytes. */
hsm_result audit_put_json_string(hsm_buf *b, const char *s, size_t max) HSM_MUST_CHECK;

/* Appends the body of rec (fields from "time" to "extra"). */
hsm_result audit_format_body(hsm_buf *b, const char *node, const hsm_audit_record *rec,
                             int64_t time_ms) HSM_MUST_CHECK;

/*
 * Appends the body of a checkpoint.  kept_from is the seq from which hsmd
 * keeps every record (0: not stated, as before it was recorded); the trail
 * format (AUDIT_TRAIL_FORMAT) follows it, outside the signed message.  sig is NULL
 * for an unsigned checkpoint; why says then why ("sealed", "signer failed").
 */
hsm_result audit_format_checkpoint_body(hsm_buf *b, const char *node, int64_t time_ms,
                                        const char *reason, uint64_t kept_from,
                                        const uint8_t *sig, size_t sig_len,
                                        const char *why) HSM_MUST_CHECK;

/*
 * The message a checkpoint signature covers: a fixed label, node, seq, time,
 * reason, kept_from and the chain head (hex SHA-256 of the line before the
 * checkpoint).  kept_from 0 gives the first version's message, without it.
 */
hsm_result audit_checkpoint_message(hsm_buf *b, const char *node, uint64_t seq,
                                    const char *time_str, const char *reason,
                                    uint64_t kept_from, const char *prev_hex) HSM_MUST_CHECK;

/* Appends a full line {"seq":N,body,"prev":"hex"} without the newline. */
hsm_result audit_format_line(hsm_buf *b, uint64_t seq, const uint8_t *body, size_t body_len,
                             const uint8_t prev[AUDIT_HASH_LEN]) HSM_MUST_CHECK;

/* "2026-11-29T01:30:12.345Z"; out holds 25 bytes.  Fast on the hot path. */
void audit_format_time(int64_t t_ms, char out[25]);
/* Parses that form back into ms; false if it is not exactly that form. */
bool audit_parse_time(const char *s, int64_t *t_ms);

/* Lowercase hex of a 32-byte hash into out (65 bytes, NUL-terminated). */
void audit_hex32(const uint8_t h[AUDIT_HASH_LEN], char out[AUDIT_HASH_HEX + 1]);

#endif
