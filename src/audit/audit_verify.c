/*
 * audit_verify.c - offline verification of audit log files (hsmctl audit
 * verify): reads the files in order, parses each line (jansson is fine here,
 * off the hot path), walks the chain and checks checkpoint signatures with
 * the auditor's Ed25519 public key.
 */
#include "audit/audit_verify_internal.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/pem.h>

#include "audit/audit_internal.h"
#include "common/encoding.h"
#include "common/json_read.h"
#include "crypto/crypto.h"
#include "common/util.h"

#define VERIFY_FILE_MAX ((size_t)1 << 30)

/* ---- Reader -------------------------------------------------------------- */

static bool open_next_file(vreader *r)
{
	while (r->fi < r->n_files) {
		size_t i = r->fi;
		if (r->mem != NULL) {
			r->data = r->mem[i];
			r->len = r->mem_len[i];
		} else {
			r->owned.len = 0;
			hsm_result res = hsm_read_file(r->names[i], VERIFY_FILE_MAX, &r->owned);
			if (hsm_failed(res)) {
				if (hsm_ok(r->io))
					r->io = res;
				return false;
			}
			r->data = r->owned.data;
			r->len = r->owned.len;
		}
		r->pos = 0;
		r->line = 0;
		r->file_open = true;
		if (r->len > 0)
			return true;
		r->fi++;
	}
	return false;
}

/* Fails only for want of memory: anything else is a verdict in e. */
static hsm_result parse_checkpoint(json_t *c, ventry *e)
{
	const char *reason = json_string_value(json_object_get(c, "reason"));
	json_t *sgn = json_object_get(c, "signed");
	e->ckpt = true;
	if (reason == NULL || !json_is_boolean(sgn) ||
	    hsm_failed(hsm_strcpy(e->reason, sizeof(e->reason), reason))) {
		e->kind = VE_MALFORMED;
		return HSM_SUCCESS;
	}
	json_t *kept = json_object_get(c, "kept_from");
	if (kept != NULL) {
		/* The oldest file kept starts at or before the checkpoint's own. */
		if (!json_is_integer(kept) || json_integer_value(kept) <= 0 ||
		    (uint64_t)json_integer_value(kept) > e->seq) {
			e->kind = VE_MALFORMED;
			return HSM_SUCCESS;
		}
		e->kept_from = (uint64_t)json_integer_value(kept);
	}
	json_t *fmt = json_object_get(c, "trail_format"); /* none: an older hsmd's */
	if (fmt != NULL) {
		if (!json_is_integer(fmt) || json_integer_value(fmt) <= 0 ||
		    json_integer_value(fmt) > 999) {
			e->kind = VE_MALFORMED;
			return HSM_SUCCESS;
		}
		e->trail_format = (unsigned)json_integer_value(fmt);
	}
	e->ckpt_signed = json_is_true(sgn);
	if (!e->ckpt_signed)
		return HSM_SUCCESS;
	const char *alg = json_string_value(json_object_get(c, "alg"));
	const char *sig = json_string_value(json_object_get(c, "sig"));
	hsm_buf raw = {0};
	hsm_result res = HSM_SUCCESS;
	if (alg != NULL && strcmp(alg, "Ed25519") == 0 && sig != NULL)
		res = hsm_b64_decode(&raw, sig, strlen(sig), HSM_ERR_VALIDATION);
	e->ckpt_sig_ok_form = alg != NULL && strcmp(alg, "Ed25519") == 0 && sig != NULL &&
	                      hsm_ok(res) && raw.len == sizeof(e->sig);
	if (e->ckpt_sig_ok_form)
		memcpy(e->sig, raw.data, sizeof(e->sig));
	hsm_buf_free(&raw);
	return res.err == HSM_ERR_NOMEM ? res : HSM_SUCCESS;
}

/*
 * The format an AuditLogOpened declares ("extra":{"trail_format":"N"}; a
 * checkpoint's is parse_checkpoint's): 0 when it declares none (an older
 * hsmd's), false when the value is not a format.
 */
static bool parse_trail_format(json_t *j, ventry *e)
{
	json_t *v = json_object_get(json_object_get(j, "extra"), "trail_format");
	if (v == NULL)
		return true;
	int64_t t = 0;
	if (!json_is_string(v) || hsm_failed(hsm_parse_i64(json_string_value(v), 1, 999, &t)))
		return false;
	e->trail_format = (unsigned)t;
	return true;
}

/* What an AuditLogOpened says of the run before it ("extra":{"previous_shutdown":...}). */
static bool parse_previous_shutdown(json_t *j, ventry *e)
{
	json_t *v = json_object_get(json_object_get(j, "extra"), "previous_shutdown");
	if (v == NULL)
		return true;
	const char *t = json_string_value(v);
	if (t == NULL || (strcmp(t, "none") != 0 && strcmp(t, "clean") != 0 &&
	                  strcmp(t, "unclean") != 0))
		return false;
	memcpy(e->previous_shutdown, t, strlen(t) + 1);
	return true;
}

/* What an AuditLogOpened says of the unsigned records it found at the end of the trail;
 * false when it states them malformed. */
static bool parse_unsigned_tail(json_t *j, ventry *e)
{
	json_t *x = json_object_get(j, "extra");
	const char *f = json_string_value(json_object_get(x, "unsigned_first_seq"));
	const char *l = json_string_value(json_object_get(x, "unsigned_last_seq"));
	const char *h = json_string_value(json_object_get(x, "unsigned_head"));
	if (f == NULL && l == NULL && h == NULL)
		return true;
	int64_t lo = 0, hi = 0;
	if (f == NULL || l == NULL || !audit_is_hash_hex(h) ||
	    hsm_failed(hsm_parse_i64(f, 1, INT64_MAX, &lo)) ||
	    hsm_failed(hsm_parse_i64(l, lo, INT64_MAX, &hi)) || (uint64_t)hi >= e->seq ||
	    hsm_failed(hsm_hex_decode_exact(e->unsigned_head, AUDIT_HASH_LEN, h, AUDIT_HASH_HEX,
	                                    HSM_ERR_VALIDATION)))
		return false;
	e->unsigned_first = (uint64_t)lo;
	e->unsigned_last = (uint64_t)hi;
	return true;
}

/* The records an AuditRecordsLost names ("extra":{"first_seq":...,"last_seq":...}). */
static void parse_lost(json_t *j, ventry *e)
{
	json_t *x = json_object_get(j, "extra");
	const char *f = json_string_value(json_object_get(x, "first_seq"));
	const char *l = json_string_value(json_object_get(x, "last_seq"));
	int64_t lo = 0, hi = 0;
	if (f == NULL || l == NULL || hsm_failed(hsm_parse_i64(f, 1, INT64_MAX, &lo)) ||
	    hsm_failed(hsm_parse_i64(l, lo, INT64_MAX, &hi)) || (uint64_t)hi >= e->seq)
		return;
	e->lost_first = (uint64_t)lo;
	e->lost_last = (uint64_t)hi;
}

/* What an AuditForeignBytes says (audit_writer.c, record_foreign); what it omits stays 0 or "". */
static void parse_foreign(json_t *j, ventry *e)
{
	json_t *x = json_object_get(j, "extra");
	static const char *const nums[] = {"offset", "length", "saved_bytes"};
	uint64_t *to[] = {&e->foreign_offset, &e->foreign_length, &e->foreign_saved};
	for (size_t i = 0; i < 3; i++) {
		const char *v = json_string_value(json_object_get(x, nums[i]));
		int64_t n = 0;
		if (v != NULL && hsm_ok(hsm_parse_i64(v, 0, INT64_MAX, &n)))
			*to[i] = (uint64_t)n;
	}
	const char *file = json_string_value(json_object_get(x, "file"));
	const char *saved_to = json_string_value(json_object_get(x, "saved_to"));
	if (file == NULL || hsm_failed(hsm_strcpy(e->foreign_file, sizeof(e->foreign_file), file)))
		e->foreign_file[0] = '\0';
	if (saved_to == NULL ||
	    hsm_failed(hsm_strcpy(e->foreign_saved_to, sizeof(e->foreign_saved_to), saved_to)))
		e->foreign_saved_to[0] = '\0';
	/* Names a report prints: no control character from the trail reaches a terminal. */
	for (char *c = e->foreign_file; *c != '\0'; c++)
		*c = (unsigned char)*c < 0x20 || *c == 0x7f ? '?' : *c;
	for (char *c = e->foreign_saved_to; *c != '\0'; c++)
		*c = (unsigned char)*c < 0x20 || *c == 0x7f ? '?' : *c;
}

/*
 * A checkpoint's signature covers its node, seq, time, reason, kept_from and
 * prev, and a later record's chain covers its every byte; but the last record
 * of a trail (the shutdown checkpoint) has no later one.  So a checkpoint of
 * the current format must be byte for byte what hsmd writes for those fields
 * (audit_format_checkpoint_body): nothing added, nothing changed beside them.
 * Older formats are taken as they are.  Fails only for want of memory.
 */
static hsm_result check_canonical(const uint8_t *p, size_t n, ventry *e, json_t *c)
{
	e->canonical = true;
	if (e->trail_format != AUDIT_TRAIL_FORMAT)
		return HSM_SUCCESS;
	const char *why = json_string_value(json_object_get(c, "why"));
	if (e->ckpt_signed ? !e->ckpt_sig_ok_form : why == NULL) {
		e->canonical = false;
		return HSM_SUCCESS;
	}
	hsm_buf body = {0}, line = {0};
	hsm_result res = audit_format_checkpoint_body(&body, e->node, e->time_ms, e->reason,
	                                              e->kept_from, e->ckpt_signed ? e->sig : NULL,
	                                              sizeof(e->sig), why);
	if (hsm_ok(res))
		res = audit_format_line(&line, e->seq, body.data, body.len, e->prev);
	if (hsm_ok(res))
		e->canonical = line.len == n && hsm_ct_equal(line.data, p, n);
	else if (res.err != HSM_ERR_NOMEM)
		e->canonical = false, res = HSM_SUCCESS; /* a field hsmd could not have written */
	hsm_buf_free(&body);
	hsm_buf_free(&line);
	return res;
}

/*
 * Fails only for want of memory, which is no verdict on the line: jansson's
 * json_loadb would read a line it had no memory for as malformed (or as
 * another line), hence hsmd's own reader.
 */
static hsm_result parse_entry(const uint8_t *p, size_t n, ventry *e)
{
	hsm_result res = HSM_SUCCESS;
	hsm_crypto_watch();
	HSM_ENSURE(EVP_Digest(p, n, e->hash, NULL, EVP_sha256(), NULL) == 1, HSM_ERR_NOMEM,
	           "out of memory hashing an audit record");
	e->kind = VE_MALFORMED;
	/* hsmd writes no longer line: one is malformed, unread (read, hostile JSON would
	 * cost dozens of times its size in memory). */
	if (n > AUDIT_LINE_MAX)
		return HSM_SUCCESS;
	json_t *j = NULL;
	unsigned line, col;
	res = hsm_json_read(p, n, &j, &line, &col);
	if (res.err == HSM_ERR_NOMEM)
		return res;
	json_t *seq = json_object_get(j, "seq");
	const char *prev = json_string_value(json_object_get(j, "prev"));
	const char *type = json_string_value(json_object_get(j, "type"));
	const char *time = json_string_value(json_object_get(j, "time"));
	const char *node = json_string_value(json_object_get(j, "node"));
	int64_t t;
	bool ok = json_is_object(j) && json_is_integer(seq) && json_integer_value(seq) > 0 &&
	          audit_is_hash_hex(prev) && type != NULL && time != NULL && audit_parse_time(time, &t) &&
	          node != NULL && hsm_ok(hsm_strcpy(e->node, sizeof(e->node), node)) &&
	          hsm_ok(hsm_strcpy(e->time, sizeof(e->time), time)) &&
	          (strcmp(type, "request") == 0 || strcmp(type, "event") == 0 ||
	           strcmp(type, "checkpoint") == 0) &&
	          hsm_ok(hsm_hex_decode_exact(e->prev, AUDIT_HASH_LEN, prev, AUDIT_HASH_HEX,
	                                      HSM_ERR_VALIDATION));
	if (ok) {
		e->kind = VE_RECORD;
		e->seq = (uint64_t)json_integer_value(seq);
		e->time_ms = t;
		memcpy(e->prev_hex, prev, sizeof(e->prev_hex));
		static const uint8_t zero[AUDIT_HASH_LEN];
		e->genesis = hsm_ct_equal(e->prev, zero, AUDIT_HASH_LEN);
		if (strcmp(type, "checkpoint") == 0) {
			res = parse_checkpoint(json_object_get(j, "checkpoint"), e);
		} else {
			const char *op = json_string_value(json_object_get(j, "op"));
			const char *outcome = json_string_value(json_object_get(j, "outcome"));
			e->request = strcmp(type, "request") == 0;
			e->event = !e->request;
			e->success = outcome != NULL && strcmp(outcome, "success") == 0;
			if (op != NULL && strlen(op) < sizeof(e->op)) /* a longer one is none of ours */
				memcpy(e->op, op, strlen(op) + 1);
			json_t *lat = json_object_get(j, "latency_us");
			if (json_is_integer(lat) && json_integer_value(lat) >= 0)
				e->latency_us = (uint64_t)json_integer_value(lat);
			if (e->event && strcmp(e->op, "AuditLogOpened") == 0 &&
			    (!parse_trail_format(j, e) || !parse_previous_shutdown(j, e) ||
			     !parse_unsigned_tail(j, e)))
				e->kind = VE_MALFORMED;
			if (e->event && strcmp(e->op, "AuditRecordsLost") == 0)
				parse_lost(j, e);
			if (e->event && strcmp(e->op, "AuditForeignBytes") == 0)
				parse_foreign(j, e);
		}
		const char *source = json_string_value(json_object_get(j, "source"));
		e->offline = source != NULL && strcmp(source, "hsmctl") == 0;
		if (hsm_ok(res) && e->ckpt && e->kind == VE_RECORD)
			res = check_canonical(p, n, e, json_object_get(j, "checkpoint"));
	}
	json_decref(j);
	return res.err == HSM_ERR_NOMEM ? res : HSM_SUCCESS;
}

/* Reads the next line of the log into e; false at the end. */
static bool read_entry(vreader *r, ventry *e)
{
	if (!r->file_open || r->pos >= r->len) {
		if (r->file_open)
			r->fi++;
		r->file_open = false;
		if (!open_next_file(r))
			return false;
	}
	memset(e, 0, sizeof(*e));
	e->file = r->fi;
	e->first_in_file = r->pos == 0;
	e->offset = r->pos;
	e->line = ++r->line;
	const uint8_t *start = r->data + r->pos;
	const uint8_t *nl = memchr(start, '\n', r->len - r->pos);
	if (nl == NULL) {
		e->kind = VE_TORN;
		e->len = r->len - r->pos;
		r->pos = r->len;
		return true;
	}
	e->len = (size_t)(nl - start);
	r->pos += e->len + 1;
	hsm_result res = parse_entry(start, e->len, e);
	if (hsm_failed(res)) { /* no verdict: the run fails (r->io) */
		if (hsm_ok(r->io))
			r->io = res;
		return false;
	}
	return true;
}

const ventry *vreader_peek(vreader *r, size_t i)
{
	while (r->win_count <= i && !r->eof) {
		ventry *e = &r->win[(r->win_head + r->win_count) % (VERIFY_WINDOW + 1)];
		if (!read_entry(r, e)) {
			r->eof = true;
			break;
		}
		r->win_count++;
	}
	return i < r->win_count ? &r->win[(r->win_head + i) % (VERIFY_WINDOW + 1)] : NULL;
}

void vreader_pop(vreader *r)
{
	r->win_head = (r->win_head + 1) % (VERIFY_WINDOW + 1);
	r->win_count--;
}

const ventry *vstate_back(const vstate *s, size_t i)
{
	return &s->hist[(s->hist_head + VERIFY_WINDOW - 1 - i) % VERIFY_WINDOW];
}

void vstate_push(vstate *s, const ventry *e)
{
	s->hist[s->hist_head] = *e;
	s->hist_head = (s->hist_head + 1) % VERIFY_WINDOW;
	if (s->hist_count < VERIFY_WINDOW)
		s->hist_count++;
	s->have_p = true;
}

/* ---- Checks beyond the chain --------------------------------------------- */

typedef enum { SIG_NONE, SIG_UNCHECKED, SIG_VERIFIED } sig_state;

/* Checks a checkpoint's signature; the caller counts it once the checkpoint is accepted. */
static bool check_signature(vreader *r, EVP_PKEY *pub, const ventry *e,
                            hsm_audit_verify_report *rep, sig_state *st)
{
	*st = SIG_NONE;
	if (!e->ckpt_signed)
		return true;
	if (!e->ckpt_sig_ok_form) {
		verify_report_at(r, rep, HSM_AUDIT_BAD_SIGNATURE, e, "checkpoint signature is not an "
		                 "Ed25519 signature");
		return false;
	}
	if (pub == NULL) {
		*st = SIG_UNCHECKED;
		return true;
	}
	hsm_buf msg = {0};
	hsm_crypto_watch();
	hsm_result made = audit_checkpoint_message(&msg, e->node, e->seq, e->time, e->reason,
	                                           e->kept_from, e->prev_hex);
	EVP_MD_CTX *ctx = hsm_ok(made) ? EVP_MD_CTX_new() : NULL;
	bool set = ctx != NULL && EVP_DigestVerifyInit_ex(ctx, NULL, NULL, NULL, NULL, pub, NULL) == 1;
	bool ok = set && EVP_DigestVerify(ctx, e->sig, sizeof(e->sig), msg.data, msg.len) == 1;
	EVP_MD_CTX_free(ctx);
	hsm_buf_free(&msg);
	/* Short of memory: no verdict on the signature; the run fails (r->io). */
	if (!ok && (hsm_failed(made) || !set || hsm_crypto_ran_out())) {
		if (hsm_ok(r->io))
			r->io = hsm_failed(made) ? made : HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
		return false;
	}
	if (!ok) {
		verify_report_at(r, rep, HSM_AUDIT_BAD_SIGNATURE, e,
		                 "checkpoint signature does not verify with the given public key");
		return false;
	}
	*st = SIG_VERIFIED;
	return true;
}

static void count_checkpoint(const ventry *e, sig_state st, hsm_audit_verify_report *rep)
{
	if (st == SIG_NONE) {
		rep->checkpoints_unsigned++;
	} else if (st == SIG_UNCHECKED) {
		rep->checkpoints_unchecked++;
	} else {
		rep->checkpoints_verified++;
		rep->last_verified_seq = e->seq;
	}
}

/* A file must begin where its name says and end with a rotation checkpoint. */
static bool check_file_edges(vreader *r, const ventry *e, hsm_audit_verify_report *rep)
{
	if (!e->first_in_file)
		return true;
	uint64_t named;
	if (audit_parse_file_name(hsm_path_base(r->names[e->file]), &named) && named != e->seq) {
		verify_report_at(r, rep, named < e->seq ? HSM_AUDIT_DELETED : HSM_AUDIT_MODIFIED, e,
		                 "the file name says it starts at seq %llu, its first record has seq %llu",
		                 (unsigned long long)named, (unsigned long long)e->seq);
		return false;
	}
	return true;
}

static bool check_file_end(vreader *r, const vstate *s, const ventry *e,
                           hsm_audit_verify_report *rep)
{
	const ventry *p = s->have_p ? vstate_back(s, 0) : NULL;
	if (p == NULL || e->file == p->file || (p->ckpt && strcmp(p->reason, "rotate") == 0))
		return true;
	verify_report_at(r, rep, HSM_AUDIT_TRUNCATED, p,
	                 "truncated: the file ends at seq %llu without its rotation checkpoint",
	                 (unsigned long long)p->seq);
	return false;
}

/*
 * The floor the checkpoints state (every record from kept_from on is kept)
 * rises only at a "retention" checkpoint, which hsmd writes before it deletes
 * expired files.  Any other rise means files left the start of the log some
 * other way: by hand, or while hsmd was stopped (it states, at its next start,
 * the oldest file it finds).  A lower floor (files put back) is no loss.
 *
 * With a public key the retention checkpoint must be signed: anyone who can
 * write the trail can delete its start and append an unsigned one.  hsmd
 * deletes nothing under an unsigned one (it counts as not written), so its
 * kept_from is passed over, not reported: a later checkpoint stating it, or
 * a log that starts after the floor, is then a deletion.
 */
static bool check_floor(vreader *r, vstate *s, const ventry *e, sig_state sig, bool keyed,
                        hsm_audit_verify_report *rep)
{
	if (!s->ckpt_seen) {
		s->ckpt_seen = true;
		s->older_start = e->kept_from == 0;
	}
	if (e->kept_from == 0)
		return true;
	bool retention = strcmp(e->reason, "retention") == 0;
	if (retention && keyed && sig != SIG_VERIFIED)
		return true;
	const ventry *f = &s->floor_at;
	if (f->kept_from != 0 && e->kept_from > f->kept_from && !retention) {
		verify_report_at(r, rep, HSM_AUDIT_DELETED, e,
		                 "deleted: records %llu to %llu left the start of the log without "
		                 "retention (the checkpoint at seq %llu keeps every record from seq "
		                 "%llu, this %s checkpoint from seq %llu; only a retention checkpoint, "
		                 "signed when a public key is given, raises it)",
		                 (unsigned long long)f->kept_from, (unsigned long long)e->kept_from - 1,
		                 (unsigned long long)f->seq, (unsigned long long)f->kept_from, e->reason,
		                 (unsigned long long)e->kept_from);
		return false;
	}
	s->floor_at = *e;
	rep->kept_from = e->kept_from;
	rep->kept_from_seq = e->seq;
	if (retention) {
		rep->retention_seq = e->seq;
		rep->retention_kept_from = e->kept_from;
	}
	return true;
}

/* The record an anchor names must be the one the anchor was taken from. */
static bool check_anchor_record(vreader *r, const ventry *e, const hsm_audit_verify_options *o,
                                hsm_audit_verify_report *rep)
{
	if (o->anchor_seq == 0 || e->seq != o->anchor_seq ||
	    hsm_ct_equal(e->hash, o->anchor_hash, AUDIT_HASH_LEN))
		return true;
	verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
	                 "modified: seq %llu is not the record the anchor names (its SHA-256 "
	                 "differs): the log was rewritten from this record or before it",
	                 (unsigned long long)e->seq);
	return false;
}

/* Requests in flight when a node seals may still succeed, and be recorded, this long after. */
#define SEAL_GRACE_MS 60000
/* An unseal makes the keystore usable a moment before the signer is set: a checkpoint may
 * be written unsigned that long after the first request it answered. */
#define UNSEAL_GRACE_MS 2000

static bool op_in(const char *op, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(op, list[i]) == 0)
			return true;
	return false;
}

/*
 * A request that succeeds only on an unsealed node.  hsmctl without shares
 * reads users and access keys, and copies a store, with nothing unsealed.
 */
static bool shows_unsealed(const ventry *e)
{
	static const char *const sealed_ok[] = {"Status", "Unseal", "Init", "Seal"};
	static const char *const offline_sealed_ok[] = {"ListUsers", "ListAccessKeys", "StoreCopy"};
	if (!e->request || !e->success)
		return false;
	return !op_in(e->op, sealed_ok, sizeof(sealed_ok) / sizeof(sealed_ok[0])) &&
	       !(e->offline && op_in(e->op, offline_sealed_ok,
	                             sizeof(offline_sealed_ok) / sizeof(offline_sealed_ok[0])));
}

static bool is_opening(const ventry *e)
{
	return e->event && strcmp(e->op, "AuditLogOpened") == 0;
}

/* What e is, for a message: "AuditLogOpened" or "<reason> checkpoint". */
static const char *declarer(const ventry *e, char *buf, size_t n)
{
	if (!e->ckpt)
		return "AuditLogOpened";
	snprintf(buf, n, "%s checkpoint", e->reason);
	return buf;
}

/*
 * The trail format rises at an AuditLogOpened or checkpoint that declares a
 * higher one and never falls: hsmd declares it at every start and in every
 * checkpoint, so with a public key one that declares less than an earlier
 * record did is refused.  Dropping the declarations to get an older hsmd's
 * leniency means rewriting the chain from there on, which the signed
 * checkpoints after it show, unless their signatures go too, and then every
 * run from the first declaration on must pass as an older hsmd's, a range
 * verify reports (older_format_through).
 *
 * The first opening or checkpoint also settles the records before it, when
 * the log given starts inside a run: a checkpoint speaks for its own run, so
 * those records are held to the rules it declares; before an opening they
 * are another run's, of which only the chain is checked (the opening ends
 * any signing), and a run before an undeclared one is older too.
 */
static bool check_format(vreader *r, vstate *s, const ventry *e, EVP_PKEY *pub,
                         hsm_audit_verify_report *rep)
{
	if (!is_opening(e) && !e->ckpt)
		return true;
	if (e->trail_format > AUDIT_TRAIL_FORMAT) {
		char what[48];
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: this %s declares trail format %u, newer than the %u this "
		                 "verifier knows: an edit, or a newer hsmd's trail (verify that with "
		                 "the newer hsmctl)",
		                 declarer(e, what, sizeof(what)), e->trail_format, AUDIT_TRAIL_FORMAT);
		return false;
	}
	if (e->trail_format < s->trail_format && pub != NULL) {
		char what[48];
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: this %s declares trail format %u, but seq %llu declared "
		                 "%u: the log was rewritten from here (or an older hsmd was started on a "
		                 "trail a newer one had written)",
		                 declarer(e, what, sizeof(what)), e->trail_format,
		                 (unsigned long long)s->trail_format_seq, s->trail_format);
		return false;
	}
	if (!s->format_known) {
		s->format_known = true;
		if (e->trail_format < AUDIT_TRAIL_FORMAT)
			s->sign = s->sign_older;
	}
	if (e->trail_format > s->trail_format) {
		s->trail_format = e->trail_format;
		s->trail_format_seq = e->seq;
	}
	return true;
}

/*
 * What an older hsmd (records before the trail declares its format) wrote
 * when it stopped signing without a signed checkpoint to say so: a successful
 * Seal request (builds before the "seal" checkpoint cleared the signer while
 * it ran) or a Shutdown event (builds before the signed "shutdown"
 * checkpoint cleared it right after that event).
 */
static bool older_signer_end(const ventry *e)
{
	return (e->request && e->success && strcmp(e->op, "Seal") == 0) ||
	       (e->event && e->success && strcmp(e->op, "Shutdown") == 0);
}

/*
 * An older hsmd's Seal request is recorded once it has run, after it cleared
 * the signer: a checkpoint written in between is unsigned, and the Seal
 * record follows it (before any signed checkpoint or restart) with a start
 * (its time less its latency) no later than the checkpoint.  A second of
 * slack: the two times come from different threads' reads of the clock.
 */
static bool older_seal_follows(vreader *r, const ventry *e)
{
	for (size_t i = 1; i < VERIFY_WINDOW; i++) {
		const ventry *x = vreader_peek(r, i);
		if (x == NULL || x->kind != VE_RECORD || is_opening(x) || (x->ckpt && x->ckpt_signed))
			return false;
		if (x->request && x->success && strcmp(x->op, "Seal") == 0)
			return e->time_ms + 1000 >= x->time_ms - (int64_t)(x->latency_us / 1000);
	}
	return false;
}

/* What a record other than a checkpoint tells of the signing, under an older hsmd's rules
 * or the current ones. */
static void note_signing(vsigning *g, const ventry *e, bool older)
{
	if (is_opening(e)) {
		g->must_sign = false;
		g->sealed_by_checkpoint = false;
		return;
	}
	if (older && older_signer_end(e)) { /* as a signed "seal" or "shutdown" checkpoint now */
		g->must_sign = false;
		g->sealed_by_checkpoint = true;
		g->sealed_ms = e->time_ms;
		return;
	}
	if (!g->must_sign && shows_unsealed(e) &&
	    (!g->sealed_by_checkpoint || e->time_ms > g->sealed_ms + SEAL_GRACE_MS)) {
		g->must_sign = true;
		g->must_sign_seq = e->seq;
		g->must_sign_by_request = true;
		g->must_sign_ms = e->time_ms;
	}
}

/*
 * A restart ends the signing (a new run begins sealed), so whoever rewrites
 * a trail could put an AuditLogOpened before each checkpoint whose signature
 * the rewrite broke, and pass it off unsigned.  But a run that answered a
 * request only an unsealed node answers was unsealed, and an unsealed node
 * writes a signed checkpoint at once (the "signer" one, moments after the
 * unseal) and then every minute: under the current rules, a run with such a
 * request and no verified checkpoint before or after it, ended by a restart,
 * was not written by hsmd (short of a crash within moments of an unseal).
 * One that signed before it crashed (a kill -9, a power cut) leaves the
 * requests since its last checkpoint unsigned: a verified checkpoint of a
 * later run covers them, by the chain, and a log that ends before one is
 * refused at its end (check_end).  A minute after a seal, as for must_sign,
 * requests in flight may still finish.
 */
static bool check_restart(vreader *r, vstate *s, const ventry *e, hsm_audit_verify_report *rep)
{
	const vsigning *g = &s->sign;
	if (is_opening(e)) {
		if (s->use_unsigned && !s->use_unsigned_run_signed) {
			verify_report_at(r, rep, HSM_AUDIT_UNSIGNED, e,
			                 "unsigned: this AuditLogOpened says hsmd restarted, but seq %llu "
			                 "answered a request only an unsealed node answers and no signed "
			                 "checkpoint came before or after it in its run: the log was "
			                 "rewritten after seq %llu (or hsmd crashed within moments of an "
			                 "unseal)",
			                 (unsigned long long)s->use_unsigned_seq,
			                 (unsigned long long)s->use_unsigned_seq);
			return false;
		}
		/* A run that signed, then crashed before its next checkpoint: the requests since
		 * are unsigned, and the next verified checkpoint covers them (check_signing);
		 * with none, the log's end says so (check_end). */
		if (s->use_unsigned && s->use_unsigned_restart_seq == 0)
			s->use_unsigned_restart_seq = e->seq;
		s->run_signed = false;
		return true;
	}
	bool current = s->format_known && s->trail_format >= AUDIT_TRAIL_FORMAT;
	if (current && !s->use_unsigned && shows_unsealed(e) &&
	    (!g->sealed_by_checkpoint || e->time_ms > g->sealed_ms + SEAL_GRACE_MS)) {
		s->use_unsigned = true;
		s->use_unsigned_seq = e->seq;
		s->use_unsigned_run_signed = s->run_signed;
	}
	return true;
}

/*
 * An AuditLogOpened says how the run before it ended, from the last record
 * it found: "clean" after a shutdown checkpoint (and no torn line), "none"
 * with no record before it.  A restart inserted into a rewritten trail, or a
 * cut back to any other record, contradicts that.
 */
static bool check_opening(vreader *r, const vstate *s, const ventry *e,
                          hsm_audit_verify_report *rep)
{
	if (!is_opening(e) || e->trail_format < AUDIT_TRAIL_FORMAT)
		return true;
	const ventry *p = s->have_p ? vstate_back(s, 0) : NULL;
	if (strcmp(e->previous_shutdown, "none") == 0 && !e->genesis) {
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: this AuditLogOpened says no record came before it, but it "
		                 "chains to an earlier one: a restart was inserted");
		return false;
	}
	if (p != NULL && strcmp(e->previous_shutdown, "clean") == 0 &&
	    !(p->ckpt && strcmp(p->reason, "shutdown") == 0)) {
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: this AuditLogOpened says the run before it shut down "
		                 "cleanly, but seq %llu before it is no shutdown checkpoint: records "
		                 "were cut there, or a restart was inserted",
		                 (unsigned long long)p->seq);
		return false;
	}
	return true;
}

/*
 * With a public key, signatures cannot simply be stripped.  Whoever rewrites
 * the log from some record on must give every later checkpoint up, and a
 * checkpoint may say it is unsigned ("why":"sealed"), so the key alone would
 * not notice.  But an unsealed node signs every checkpoint until it seals,
 * stops or restarts, and each of those is marked: a signed "seal" or
 * "shutdown" checkpoint, an AuditLogOpened event (a new run begins sealed).
 * A verified signature shows the node unsealed, and so does a request only
 * an unsealed node can answer (a minute after a seal: requests in flight
 * then may still finish).  An unsigned checkpoint after either, with no seal,
 * shutdown or restart between, was not written by hsmd (but for one within
 * UNSEAL_GRACE_MS of such a request: an unseal makes the keystore usable
 * just before it sets the signer).  In a run that declares no format, an
 * older hsmd's Seal request or Shutdown event ends the signing as those
 * checkpoints do (older_signer_end, older_seal_follows); until the log given
 * says which (check_format), both states are kept.
 */
static bool check_signing(vreader *r, vstate *s, const ventry *e, sig_state sig,
                          hsm_audit_verify_report *rep)
{
	bool older = s->trail_format < AUDIT_TRAIL_FORMAT;
	vsigning *g = &s->sign;
	if (!e->ckpt) {
		if (!check_restart(r, s, e, rep))
			return false;
		note_signing(g, e, older && s->format_known);
		if (!s->format_known)
			note_signing(&s->sign_older, e, true);
		return true;
	}
	if (sig == SIG_VERIFIED) {
		s->use_unsigned = false;
		s->use_unsigned_restart_seq = 0;
		s->run_signed = true;
	}
	if (sig == SIG_VERIFIED) {
		bool ends = strcmp(e->reason, "seal") == 0 || strcmp(e->reason, "shutdown") == 0;
		g->must_sign = !ends;
		g->must_sign_seq = e->seq;
		g->must_sign_by_request = false;
		g->sealed_by_checkpoint = ends;
		g->sealed_ms = e->time_ms;
		return true;
	}
	if (sig == SIG_NONE && g->must_sign &&
	    !(g->must_sign_by_request && e->time_ms <= g->must_sign_ms + UNSEAL_GRACE_MS) &&
	    !(older && older_seal_follows(r, e))) {
		verify_report_at(r, rep, HSM_AUDIT_UNSIGNED, e,
		                 "unsigned: this %s checkpoint carries no signature, but seq %llu shows "
		                 "the node unsealed, and it was not sealed, stopped or restarted since: "
		                 "the log was rewritten after seq %llu (or the node's signer failed)",
		                 e->reason, (unsigned long long)g->must_sign_seq,
		                 (unsigned long long)g->must_sign_seq);
		return false;
	}
	return true;
}

/*
 * The node's live file lost under it (cut, deleted, moved or replaced): hsmd
 * went on in a new file whose first records are those not yet synced, then
 * an AuditRecordsLost naming the records of the old file that went (docs/
 * audit.md, "Files").  However many records were not yet synced, they come
 * first, and when they ended with a rotation checkpoint the AuditRecordsLost
 * is the first record of the file after.  e, the first record of a file, may
 * be such a continuation when a gap comes before it, or when it chains to the
 * last record p of a file that ends without its rotation checkpoint (the file
 * was put back).  *linked: the latter.
 */
static bool loss_candidate(const vstate *s, const ventry *e, bool *linked)
{
	const ventry *p = s->have_p ? vstate_back(s, 0) : NULL;
	if (!e->first_in_file || e->kind != VE_RECORD || e->genesis)
		return false;
	bool rotated = p != NULL && p->ckpt && strcmp(p->reason, "rotate") == 0;
	bool chained = p != NULL && e->seq == p->seq + 1 && hsm_ct_equal(e->prev, p->hash,
	                                                                  AUDIT_HASH_LEN);
	uint64_t from = p != NULL ? p->seq + 1 : 1;
	if (linked != NULL)
		*linked = chained;
	return !((chained && rotated) || (!chained && e->seq <= from));
}

/*
 * e may continue a lost live file (loss_candidate): the usual rules' verdict
 * on it is kept aside (pend_verdict) while the chain is followed to the
 * AuditRecordsLost that would name the loss (follow_pending).  A log that
 * starts with such a file is judged at once (a gap at its start is
 * check_start's), the loss noted if it comes.  False: e fails now (rep says
 * why).
 */
static bool open_pending(vreader *r, vstate *s, const ventry *e, bool linked,
                         hsm_audit_verify_report *rep)
{
	hsm_audit_verify_report *v = &s->pend_verdict;
	*v = *rep;
	bool pass = check_file_end(r, s, e, v) && verify_rules_check(r, s, v);
	if (!s->have_p && !pass) {
		*rep = *v;
		return false;
	}
	s->pend = true;
	s->pend_fails = !pass;
	s->pend_linked = linked;
	s->pend_have_p = s->have_p;
	s->pend_p_seq = s->have_p ? vstate_back(s, 0)->seq : 0;
	s->pend_at = *e;
	s->pend_again_first = s->pend_again_last = 0;
	return true;
}

/* The pending file start is no recorded loss: the usual rules' verdict on it stands. */
static bool drop_pending(vstate *s, hsm_audit_verify_report *rep)
{
	s->pend = false;
	if (!s->pend_fails)
		return true;
	*rep = s->pend_verdict;
	return false;
}

/* x, the node's AuditRecordsLost, names the pending file start's loss. */
static void note_loss(vstate *s, const ventry *x, hsm_audit_verify_report *rep)
{
	s->pend = false;
	if (rep->lost_seq == 0) {
		rep->lost_first = x->lost_first;
		rep->lost_last = x->lost_last;
		rep->lost_seq = x->seq;
		rep->lost_present = s->pend_linked;
	}
	size_t k = rep->n_lost++;
	if (k < sizeof(rep->lost) / sizeof(rep->lost[0])) {
		rep->lost[k].first = x->lost_first;
		rep->lost[k].last = x->lost_last;
		rep->lost[k].seq = x->seq;
		rep->lost[k].present = s->pend_linked;
		rep->lost[k].again_first = s->pend_again_first;
		rep->lost[k].again_last = s->pend_again_last;
	}
	/* Put back: nothing is missing.  A gap at the start of the log is the start's to
	 * judge (check_start). */
	if (s->pend_linked || !s->pend_have_p)
		return;
	if (!s->loss_gap) {
		s->loss_gap = true;
		s->loss_at = s->pend_at;
	}
	size_t i = s->n_losses++;
	if (i < VERIFY_LOSSES_SHOWN) {
		s->losses[i].first = x->lost_first;
		s->losses[i].last = x->lost_last;
		s->losses[i].seq = x->seq;
	}
}

/*
 * e, a record after a pending file start: the first AuditRecordsLost of
 * that file (or of the next, after its rotation checkpoint) settles it.  It
 * is the node's recorded loss when it is of the same node and names exactly
 * the records missing before the file start (the file's records, or those
 * cut from it), or, when that start chains to the last record of a file that
 * ends without its rotation checkpoint, the records up to it.  Then a gap is
 * still the verdict (records are missing) unless something else is wrong
 * first, but the chain is followed past it, so the records after it are
 * verified.  Any other AuditRecordsLost, a later file, or another break in
 * the chain first, and the usual rules judge the file start: false, rep says
 * why.
 */
static bool follow_pending(vstate *s, const ventry *e, hsm_audit_verify_report *rep)
{
	if (e->file > s->pend_at.file + 1 ||
	    (e->file != s->pend_at.file && loss_candidate(s, e, NULL)))
		return drop_pending(s, rep);
	if (!e->event || strcmp(e->op, "AuditRecordsLost") != 0 || e->lost_last == 0)
		return true;
	const ventry *f = &s->pend_at;
	bool names = s->pend_linked
	                 ? e->lost_last == s->pend_p_seq && e->lost_first <= s->pend_p_seq
	                 : e->lost_last == f->seq - 1 &&
	                       (!s->pend_have_p || e->lost_first == s->pend_p_seq + 1);
	if (strcmp(e->node, f->node) != 0 || !names)
		return drop_pending(s, rep);
	note_loss(s, e, rep);
	return true;
}

/*
 * e, the first record of a file, may begin records the node wrote again
 * (vstate, again): its seq is one of the file before, after that file's
 * first, and that file, whose last record p is no rotation checkpoint (a file
 * hsmd closed is no live file it lost), was put back; the file's name says
 * where it begins, and no other file start is pending.
 */
static bool again_candidate(vreader *r, const vstate *s, const ventry *e)
{
	if (s->pend || !s->have_p || !e->first_in_file || e->kind != VE_RECORD || e->genesis)
		return false;
	const ventry *p = vstate_back(s, 0);
	hsm_audit_verify_report scratch = {0};
	return !(p->ckpt && strcmp(p->reason, "rotate") == 0) && e->seq > s->file_first &&
	       e->seq <= p->seq && check_file_edges(r, e, &scratch);
}

/* The records written again do not all repeat what was read: the usual verdict stands. */
static bool again_fails(vstate *s, hsm_audit_verify_report *rep)
{
	s->again = false;
	s->again_done = false;
	*rep = s->again_verdict;
	return false;
}

/*
 * e, read again, chains from again_at.  Once it has the seq of p, the last
 * record read, it must be p byte for byte; then they were all read already,
 * and the file start is pending as a file put back (follow_pending): the
 * node's AuditRecordsLost must name the records up to again_at's seq - 1,
 * those it had synced into the file it lost.
 */
static bool again_step(vstate *s, const ventry *e, hsm_audit_verify_report *rep)
{
	const ventry *p = vstate_back(s, 0);
	s->again_last = *e;
	if (e->seq < p->seq)
		return true;
	if (e->seq != p->seq || !hsm_ct_equal(e->hash, p->hash, AUDIT_HASH_LEN))
		return again_fails(s, rep);
	s->again = false;
	s->again_done = true;
	s->pend = true;
	s->pend_fails = true;
	s->pend_verdict = s->again_verdict;
	s->pend_linked = true;
	s->pend_have_p = true;
	s->pend_p_seq = s->again_at.seq - 1;
	s->pend_at = s->again_at;
	s->pend_again_first = s->again_at.seq;
	s->pend_again_last = p->seq;
	s->file_first = s->again_at.seq;
	return true;
}

/* e starts records written again (again_candidate); the usual verdict on it is kept aside. */
static bool open_again(vreader *r, vstate *s, const ventry *e, hsm_audit_verify_report *rep)
{
	s->again_verdict = *rep;
	/* The file before ends without its rotation checkpoint: truncated, as the usual rules
	 * find it here. */
	(void)check_file_end(r, s, e, &s->again_verdict);
	s->again = true;
	s->again_at = *e;
	return again_step(s, e, rep);
}

/* e follows records written again: the next of them, or (again_done) the first after. */
static bool follow_again(vstate *s, const ventry *e, hsm_audit_verify_report *rep)
{
	const ventry *last = s->again_done ? vstate_back(s, 0) : &s->again_last;
	bool chained = e->kind == VE_RECORD && e->file == s->again_at.file &&
	               e->seq == last->seq + 1 && hsm_ct_equal(e->prev, last->hash, AUDIT_HASH_LEN);
	if (!chained)
		return again_fails(s, rep);
	if (s->again_done) {
		s->again_done = false;
		return true;
	}
	return again_step(s, e, rep);
}

/*
 * A new run (its AuditLogOpened) after records no checkpoint of their run
 * signed: a crash before its next checkpoint, or a run that stayed sealed.
 * The next run's signatures cover them by the chain, as it found them: they
 * were never signed by the run that wrote them, and the report lists them
 * (the trail still verifies).  hsmd names them in the AuditLogOpened, with
 * the head it found; that must be the record before it.
 */
static bool check_inherited(vreader *r, vstate *s, const ventry *e, hsm_audit_verify_report *rep)
{
	if (!is_opening(e) || !s->have_p)
		return true;
	const ventry *p = vstate_back(s, 0);
	if (p->event && strcmp(p->op, "AuditTornTail") == 0 && s->hist_count > 1)
		p = vstate_back(s, 1); /* the new run set a torn line aside first */
	if (e->unsigned_last != 0 &&
	    (e->unsigned_last != p->seq || !hsm_ct_equal(e->unsigned_head, p->hash, AUDIT_HASH_LEN))) {
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: this AuditLogOpened says the trail it found ended with "
		                 "unsigned records up to seq %llu (with the SHA-256 it names), but seq "
		                 "%llu before it is not that record",
		                 (unsigned long long)e->unsigned_last, (unsigned long long)p->seq);
		return false;
	}
	if (s->last_signed_seq == p->seq || s->unsigned_listed_to == p->seq)
		return true;
	/* From the last signed checkpoint, or from after the range an earlier restart listed
	 * (a sealed run after a crash, hsmctl offline: each run's own records). */
	uint64_t first = s->last_signed_seq != 0 ? s->last_signed_seq + 1 : rep->first_seq;
	if (s->unsigned_listed_to >= first)
		first = s->unsigned_listed_to + 1;
	s->unsigned_listed_to = p->seq;
	size_t i = rep->n_unsigned_at_write++;
	if (i < sizeof(rep->unsigned_at_write) / sizeof(rep->unsigned_at_write[0])) {
		rep->unsigned_at_write[i].first = first;
		rep->unsigned_at_write[i].last = p->seq;
		rep->unsigned_at_write[i].opened_seq = e->seq;
		rep->unsigned_at_write[i].stated = e->unsigned_last != 0;
	}
	return true;
}

/*
 * Times that go back: a record more than HSM_AUDIT_TIME_BACK_MS before the
 * latest time so far.  Nothing a chain or a signature can refuse (a clock may
 * be stepped back), but worth an auditor's look: a wall clock set ahead at a
 * start and put right later makes retention take current records for
 * expired and delete them under a signed retention checkpoint; what is left
 * then verifies, and only the times show it.
 */
static void note_time(vstate *s, const ventry *e, hsm_audit_verify_report *rep)
{
	if (s->latest_seq != 0 && e->time_ms < s->latest_ms - HSM_AUDIT_TIME_BACK_MS) {
		if (rep->time_backs++ == 0) {
			rep->time_back_seq = e->seq;
			rep->time_back_from_seq = s->latest_seq;
			snprintf(rep->time_back_from, sizeof(rep->time_back_from), "%s", s->latest);
			snprintf(rep->time_back_to, sizeof(rep->time_back_to), "%s", e->time);
		}
	}
	if (s->latest_seq == 0 || e->time_ms > s->latest_ms) {
		s->latest_ms = e->time_ms;
		s->latest_seq = e->seq;
		snprintf(s->latest, sizeof(s->latest), "%s", e->time);
	}
}

/*
 * Bytes hsmd found in its live file that it had not written (AuditForeignBytes):
 * no verdict (it cut them off, so the chain verifies without them), but a note
 * for the auditor, who finds them where the record says they were kept.
 */
static void note_foreign(const ventry *e, hsm_audit_verify_report *rep)
{
	size_t k = rep->n_foreign++;
	if (k >= sizeof(rep->foreign) / sizeof(rep->foreign[0]))
		return;
	rep->foreign[k].seq = e->seq;
	rep->foreign[k].offset = e->foreign_offset;
	rep->foreign[k].length = e->foreign_length;
	rep->foreign[k].saved = e->foreign_saved;
	memcpy(rep->foreign[k].file, e->foreign_file, sizeof(rep->foreign[k].file));
	memcpy(rep->foreign[k].saved_to, e->foreign_saved_to, sizeof(rep->foreign[k].saved_to));
}

static bool check_entry(vreader *r, vstate *s, EVP_PKEY *pub, const hsm_audit_verify_options *o,
                        hsm_audit_verify_report *rep)
{
	const ventry *e = vreader_peek(r, 0);
	/* Records the node wrote again are read once (vstate, again), and the record after
	 * them goes on from the last: if not, the verdict is the usual one at their start. */
	bool resumed = s->again_done;
	if (s->again || s->again_done) {
		if (!follow_again(s, e, rep))
			return false;
		if (!resumed)
			return true;
	}
	/*
	 * A live log read while hsmd writes a batch: the newest file may end in the
	 * first part of a line (its size grows a page at a time under the write).
	 * Not a record yet: left out, and said so, as report's second read does.
	 */
	if (e->kind == VE_TORN && e->file + 1 == r->n_files && o->allow_open_tail) {
		rep->in_progress_bytes = e->len;
		return true;
	}
	if (e->kind == VE_TORN && e->file + 1 == r->n_files) {
		verify_report_at(r, rep, HSM_AUDIT_TORN, e,
		                 "torn: the log ends with %llu bytes of an incomplete line (a write cut "
		                 "short by a crash or power loss, or a cut: hsmd's next start sets them "
		                 "aside and records AuditTornTail)",
		                 (unsigned long long)e->len);
		return false;
	}
	if (e->kind == VE_TORN) { /* hsmd only ever appends to the newest file */
		verify_report_at(r, rep, HSM_AUDIT_TORN, e,
		                 "torn: the file ends with %llu bytes of an incomplete line, and later "
		                 "files follow it",
		                 (unsigned long long)e->len);
		return false;
	}
	if (e->kind == VE_MALFORMED && e->len > AUDIT_LINE_MAX) {
		verify_report_at(r, rep, HSM_AUDIT_MALFORMED, e,
		                 "modified: a line of %llu bytes, longer than hsmd writes (at most "
		                 "%zu)",
		                 (unsigned long long)e->len, AUDIT_LINE_MAX);
		return false;
	}
	if (e->kind == VE_MALFORMED) {
		verify_report_at(r, rep, HSM_AUDIT_MALFORMED, e, "modified: not a valid audit record");
		return false;
	}
	if (s->pend && !follow_pending(s, e, rep))
		return false;
	if (!resumed && again_candidate(r, s, e))
		return open_again(r, s, e, rep);
	bool linked = false, lost = !s->pend && !resumed && loss_candidate(s, e, &linked);
	if (lost && !open_pending(r, s, e, linked, rep))
		return false;
	/* After records written again, the file's next record continues the one before. */
	if ((!lost && ((!resumed && !check_file_end(r, s, e, rep)) ||
	               !verify_rules_check(r, s, rep))) ||
	    !check_file_edges(r, e, rep))
		return false;
	if (e->ckpt && !e->canonical) {
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: this %s checkpoint is not what hsmd writes for its fields "
		                 "(a member added, removed or changed beside them)",
		                 e->reason);
		return false;
	}
	if (!check_opening(r, s, e, rep) || !check_inherited(r, s, e, rep))
		return false;
	/* A shutdown checkpoint is its run's last record: what follows opens a new run
	 * (its AuditLogOpened, after the AuditTornTail of a torn line set aside).  Records
	 * appended after one would be no run's. */
	bool torn_note = e->event && strcmp(e->op, "AuditTornTail") == 0;
	if (s->after_shutdown && !is_opening(e) && !torn_note && s->format_known &&
	    s->trail_format >= AUDIT_TRAIL_FORMAT) {
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: seq %llu follows a shutdown checkpoint, which ends its "
		                 "run, but is no AuditLogOpened (a new run): records were added "
		                 "after the run ended",
		                 (unsigned long long)e->seq);
		return false;
	}
	s->after_shutdown = (e->ckpt && strcmp(e->reason, "shutdown") == 0) ||
	                    (s->after_shutdown && torn_note);
	sig_state sig = SIG_NONE;
	if (e->ckpt && (!check_signature(r, pub, e, rep, &sig) ||
	                !check_floor(r, s, e, sig, pub != NULL, rep)))
		return false;
	if (!check_anchor_record(r, e, o, rep))
		return false;
	if (!check_format(r, s, e, pub, rep) || (pub != NULL && !check_signing(r, s, e, sig, rep)))
		return false;
	if (s->format_known && s->trail_format < AUDIT_TRAIL_FORMAT)
		rep->older_format_through = e->seq;
	if (e->ckpt)
		count_checkpoint(e, sig, rep);
	if (e->ckpt && sig != SIG_NONE)
		s->last_signed_seq = e->seq;
	note_time(s, e, rep);
	if (e->event && strcmp(e->op, "AuditForeignBytes") == 0)
		note_foreign(e, rep);
	if (rep->records == 0)
		rep->first_seq = e->seq;
	rep->records++;
	rep->last_seq = e->seq;
	memcpy(rep->last_hash, e->hash, sizeof(rep->last_hash));
	if (e->first_in_file)
		s->file_first = e->seq;
	vstate_push(s, e);
	return true;
}

/*
 * A log may start past seq 1 only where a retention checkpoint (signed and
 * verified when a public key is given) states that floor: no other record
 * tells records retention deleted from records deleted by hand or lost (the
 * floor the other checkpoints state is what their node took for it).  A log
 * given from an older hsmd's records on (its first checkpoint states no
 * floor: that hsmd's retention wrote none) is passed over, as before.
 */
static bool check_start(vreader *r, const vstate *s, bool keyed, hsm_audit_verify_report *rep)
{
	const ventry *f = &s->floor_at;
	if (rep->first_seq <= 1 || f->kept_from == 0 || s->older_start ||
	    rep->retention_kept_from >= rep->first_seq)
		return true;
	uint64_t from = rep->retention_kept_from != 0 ? rep->retention_kept_from : 1;
	if (rep->retention_seq != 0)
		verify_report_at(r, rep, HSM_AUDIT_DELETED, f,
		                 "deleted: records %llu to %llu are missing: the log starts at seq %llu, "
		                 "but the last retention checkpoint (seq %llu) keeps every record from "
		                 "seq %llu; they were lost or deleted, and not by retention",
		                 (unsigned long long)from, (unsigned long long)rep->first_seq - 1,
		                 (unsigned long long)rep->first_seq,
		                 (unsigned long long)rep->retention_seq,
		                 (unsigned long long)rep->retention_kept_from);
	else
		verify_report_at(r, rep, HSM_AUDIT_DELETED, f,
		                 "deleted: records %llu to %llu are missing: the log starts at seq %llu "
		                 "and no retention checkpoint%s states that floor; they were lost or "
		                 "deleted, and not by retention",
		                 (unsigned long long)from, (unsigned long long)rep->first_seq - 1,
		                 (unsigned long long)rep->first_seq,
		                 keyed ? " (signed, with the key)" : "");
	return false;
}

static bool check_end(vreader *r, const vstate *s, const hsm_audit_verify_options *o,
                      hsm_audit_verify_report *rep)
{
	if (!s->have_p) {
		rep->valid = false;
		rep->problem = HSM_AUDIT_TRUNCATED;
		snprintf(rep->detail, sizeof(rep->detail), "truncated: no audit records");
		if (r->n_files > 0)
			snprintf(rep->file, sizeof(rep->file), "%s", r->names[0]);
		return false;
	}
	const ventry *p = vstate_back(s, 0), *f = &s->floor_at;
	if (f->kept_from != 0 && rep->first_seq > f->kept_from) {
		verify_report_at(r, rep, HSM_AUDIT_DELETED, f,
		                 "deleted: the log starts at seq %llu, but the checkpoint at seq %llu "
		                 "keeps every record from seq %llu: records %llu to %llu were not given, "
		                 "or were deleted, and not by retention",
		                 (unsigned long long)rep->first_seq, (unsigned long long)f->seq,
		                 (unsigned long long)f->kept_from, (unsigned long long)f->kept_from,
		                 (unsigned long long)rep->first_seq - 1);
		return false;
	}
	if (!check_start(r, s, o->pubkey_pem != NULL, rep))
		return false;
	if (o->anchor_seq > p->seq) {
		verify_report_at(r, rep, HSM_AUDIT_TRUNCATED, p,
		                 "truncated: the log ends at seq %llu, before seq %llu that the anchor "
		                 "names: records were cut from its end",
		                 (unsigned long long)p->seq, (unsigned long long)o->anchor_seq);
		return false;
	}
	if (o->anchor_seq != 0 && o->anchor_seq < rep->first_seq) {
		verify_report_at(r, rep, HSM_AUDIT_DELETED, p,
		                 "the anchor names seq %llu, before the first record given (seq %llu): "
		                 "it cannot be checked",
		                 (unsigned long long)o->anchor_seq, (unsigned long long)rep->first_seq);
		return false;
	}
	/* A log that ends without a checkpoint is truncated, or live (below): said so
	 * first, as a live trail's last minute is unsigned yet. */
	if (o->pubkey_pem != NULL && s->use_unsigned && s->use_unsigned_restart_seq != 0) {
		verify_report_at(r, rep, HSM_AUDIT_UNSIGNED, p,
		                 "unsigned: the log ends, but seq %llu answered a request only an "
		                 "unsealed node answers, hsmd restarted after it (seq %llu) and no "
		                 "signed checkpoint followed: the log was rewritten after seq %llu, or "
		                 "hsmd crashed then and has not been unsealed since",
		                 (unsigned long long)s->use_unsigned_seq,
		                 (unsigned long long)s->use_unsigned_restart_seq,
		                 (unsigned long long)s->use_unsigned_seq);
		return false;
	}
	if (o->pubkey_pem != NULL && !o->allow_open_tail && s->use_unsigned && p->ckpt) {
		verify_report_at(r, rep, HSM_AUDIT_UNSIGNED, p,
		                 "unsigned: the log ends, but seq %llu answered a request only an "
		                 "unsealed node answers and no signed checkpoint followed it: the log "
		                 "was rewritten after seq %llu",
		                 (unsigned long long)s->use_unsigned_seq,
		                 (unsigned long long)s->use_unsigned_seq);
		return false;
	}
	if (o->allow_open_tail || (p->ckpt && strcmp(p->reason, "shutdown") == 0))
		return true;
	verify_report_at(r, rep, HSM_AUDIT_TRUNCATED, p,
	                 "truncated: the log ends at seq %llu without a shutdown checkpoint: records "
	                 "after it are missing, or hsmd is still writing it (--live), or it stopped "
	                 "without closing it (a crash or kill -9; its next start records that)",
	                 (unsigned long long)p->seq);
	return false;
}

/* ---- Entry points -------------------------------------------------------- */

static hsm_result load_pubkey(const char *pem, EVP_PKEY **out)
{
	BIO *bio = BIO_new_mem_buf(pem, -1);
	HSM_ENSURE(bio != NULL, HSM_ERR_NOMEM, "out of memory");
	EVP_PKEY *k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	HSM_ENSURE(k != NULL, HSM_ERR_VALIDATION, "the public key is not a PEM public key");
	if (!EVP_PKEY_is_a(k, "ED25519")) {
		EVP_PKEY_free(k);
		return HSM_FAIL(HSM_ERR_VALIDATION, "the public key is not an Ed25519 key");
	}
	*out = k;
	return HSM_SUCCESS;
}

/* The verdict on the records hsmd lost with its live file and recorded so: every range. */
static void report_losses(vreader *r, const vstate *s, hsm_audit_verify_report *rep)
{
	char more[HSM_AUDIT_DETAIL_MAX] = "";
	size_t n = 0, shown = s->n_losses < VERIFY_LOSSES_SHOWN ? s->n_losses : VERIFY_LOSSES_SHOWN;
	for (size_t i = 1; i < shown && n < sizeof(more); i++)
		n += (size_t)snprintf(more + n, sizeof(more) - n,
		                      "; so are records %llu to %llu (AuditRecordsLost, seq %llu)",
		                      (unsigned long long)s->losses[i].first,
		                      (unsigned long long)s->losses[i].last,
		                      (unsigned long long)s->losses[i].seq);
	if (s->n_losses > shown && n < sizeof(more))
		snprintf(more + n, sizeof(more) - n, "; and %zu more ranges recorded lost so",
		         s->n_losses - shown);
	verify_report_at(r, rep, HSM_AUDIT_DELETED, &s->loss_at,
	                 "deleted: records %llu to %llu are missing: hsmd lost them with its live "
	                 "file and recorded the loss (AuditRecordsLost, seq %llu)%s; the records "
	                 "before and after them verify",
	                 (unsigned long long)s->losses[0].first,
	                 (unsigned long long)s->losses[0].last,
	                 (unsigned long long)s->losses[0].seq, more);
}

static hsm_result run(vreader *r, const hsm_audit_verify_options *opts,
                      hsm_audit_verify_report *rep)
{
	static const hsm_audit_verify_options none = {0};
	const hsm_audit_verify_options *o = opts ? opts : &none;
	memset(rep, 0, sizeof(*rep));
	rep->valid = true;
	rep->files = r->n_files;
	EVP_PKEY *pub = NULL;
	if (o->pubkey_pem != NULL)
		HSM_GUARD(load_pubkey(o->pubkey_pem, &pub));
	vstate *s = calloc(1, sizeof(*s));
	hsm_result res = HSM_SUCCESS;
	HSM_CHECK(s != NULL, HSM_ERR_NOMEM, "out of memory");
	bool ok = true;
	while (ok && vreader_peek(r, 0) != NULL) {
		ok = check_entry(r, s, pub, o, rep);
		if (ok)
			vreader_pop(r);
	}
	HSM_TRY(r->io);
	/* Records written again that the log ends among are not read once: the usual verdict. */
	if (ok && (s->again || s->again_done))
		ok = again_fails(s, rep);
	/* A file start no AuditRecordsLost settled is judged as the usual rules judged it:
	 * it came before whatever stopped the walk, or the log ended first. */
	if (s->pend)
		ok = drop_pending(s, rep) && ok;
	if (ok)
		ok = check_end(r, s, o, rep);
	if (ok && s->loss_gap)
		report_losses(r, s, rep);
	else if (!rep->valid && rep->problem == HSM_AUDIT_DELETED && rep->lost_seq != 0 &&
	         !rep->lost_present && strstr(rep->detail, "AuditRecordsLost") == NULL) {
		size_t n = strlen(rep->detail);
		snprintf(rep->detail + n, sizeof(rep->detail) - n,
		         " (hsmd recorded the loss of records %llu to %llu with its live file: "
		         "AuditRecordsLost, seq %llu)",
		         (unsigned long long)rep->lost_first, (unsigned long long)rep->lost_last,
		         (unsigned long long)rep->lost_seq);
	}
	if (rep->valid)
		rep->problem = HSM_AUDIT_VALID;
	rep->uncovered = rep->last_verified_seq ? rep->last_seq - rep->last_verified_seq : rep->records;
out:
	free(s);
	EVP_PKEY_free(pub);
	return res;
}

static int cmp_base(const void *x, const void *y)
{
	return strcmp(hsm_path_base(*(const char *const *)x), hsm_path_base(*(const char *const *)y));
}

/* Whether the files at x and y hold the same bytes; a read failure sets *io. */
static bool same_bytes(const char *x, const char *y, hsm_result *io)
{
	enum { CHUNK = 1 << 16 };
	FILE *fx = fopen(x, "rb"), *fy = fopen(y, "rb");
	uint8_t *bx = malloc(CHUNK), *by = malloc(CHUNK);
	bool same = fx != NULL && fy != NULL && bx != NULL && by != NULL;
	if (fx == NULL || fy == NULL)
		*io = HSM_FAIL(HSM_ERR_IO, "cannot open %s", fx == NULL ? x : y);
	else if (bx == NULL || by == NULL)
		*io = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	while (same) {
		size_t nx = fread(bx, 1, CHUNK, fx), ny = fread(by, 1, CHUNK, fy);
		same = nx == ny && hsm_ct_equal(bx, by, nx);
		if (nx < CHUNK || !same)
			break;
	}
	if (same && (ferror(fx) || ferror(fy))) {
		*io = HSM_FAIL(HSM_ERR_IO, "cannot read %s", ferror(fx) ? x : y);
		same = false;
	}
	free(bx);
	free(by);
	if (fx != NULL)
		fclose(fx);
	if (fy != NULL)
		fclose(fy);
	return same;
}

/*
 * Files of the same name given twice (the node's directory and its copy
 * directory, say): read once when they hold the same bytes; otherwise one
 * of them is not what hsmd wrote, reported as modified.  Sorted names in,
 * *n reduced.
 */
static bool drop_copies(const char **sorted, size_t *n, hsm_audit_verify_report *rep,
                        hsm_result *io)
{
	size_t w = 0;
	for (size_t i = 0; i < *n; i++) {
		if (w > 0 && strcmp(hsm_path_base(sorted[w - 1]), hsm_path_base(sorted[i])) == 0) {
			if (same_bytes(sorted[w - 1], sorted[i], io))
				continue;
			if (hsm_failed(*io))
				return false;
			memset(rep, 0, sizeof(*rep));
			rep->problem = HSM_AUDIT_MODIFIED;
			snprintf(rep->file, sizeof(rep->file), "%s", sorted[i]);
			snprintf(rep->detail, sizeof(rep->detail),
			         "modified: %s and %s have the same name but differ: one of them is not "
			         "the file hsmd wrote (verify each set alone to tell which)",
			         sorted[w - 1], sorted[i]);
			return false;
		}
		sorted[w++] = sorted[i];
	}
	*n = w;
	return true;
}

/* Files sorted by name verified as one log: copies dropped, then the chain read. */
static hsm_result verify_as_one(const char *const *paths, size_t n,
                                const hsm_audit_verify_options *opts,
                                hsm_audit_verify_report *report)
{
	const char **unique = calloc(n ? n : 1, sizeof(*unique));
	vreader *r = calloc(1, sizeof(*r));
	hsm_result res = HSM_SUCCESS;
	HSM_CHECK(unique != NULL && r != NULL, HSM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		unique[i] = paths[i];
	hsm_result io = HSM_SUCCESS;
	size_t n_unique = n;
	if (!drop_copies(unique, &n_unique, report, &io)) {
		res = io;
	} else {
		r->names = unique;
		r->n_files = n_unique;
		res = run(r, opts, report);
	}
out:
	if (r != NULL)
		hsm_buf_free(&r->owned);
	free(r);
	free(unique);
	return res;
}

hsm_result hsm_audit_verify_files(const char *const *paths, size_t n_paths,
                                  const hsm_audit_verify_options *opts,
                                  hsm_audit_verify_report *report)
{
	HSM_ASSERT(report != NULL && (paths != NULL || n_paths == 0));
	const char **sorted = calloc(n_paths ? n_paths : 1, sizeof(*sorted));
	hsm_result res = HSM_SUCCESS;
	HSM_CHECK(sorted != NULL, HSM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n_paths; i++)
		sorted[i] = paths[i];
	qsort(sorted, n_paths, sizeof(*sorted), cmp_base);
	HSM_TRY(verify_as_one(sorted, n_paths, opts, report));
	/*
	 * Files that do not verify as one log may be two nodes' trails; each is
	 * verified alone, and a verdict on any of them stands.
	 */
	if (!report->valid)
		res = audit_verify_several_trails(sorted, n_paths, verify_as_one, opts, report);
out:
	free(sorted);
	return res;
}

hsm_result hsm_audit_verify_memory(const char *const *names, const uint8_t *const *data,
                                   const size_t *lens, size_t n,
                                   const hsm_audit_verify_options *opts,
                                   hsm_audit_verify_report *report)
{
	HSM_ASSERT(report != NULL && (n == 0 || (names != NULL && data != NULL && lens != NULL)));
	vreader *r = calloc(1, sizeof(*r));
	HSM_ENSURE(r != NULL, HSM_ERR_NOMEM, "out of memory");
	r->names = names;
	r->mem = data;
	r->mem_len = lens;
	r->n_files = n;
	hsm_result res = run(r, opts, report);
	free(r);
	return res;
}

const char *hsm_audit_problem_name(hsm_audit_problem p)
{
	switch (p) {
	case HSM_AUDIT_VALID: return "valid";
	case HSM_AUDIT_MALFORMED: return "modified (malformed)";
	case HSM_AUDIT_MODIFIED: return "modified";
	case HSM_AUDIT_DELETED: return "deleted (gap)";
	case HSM_AUDIT_INSERTED: return "inserted";
	case HSM_AUDIT_REORDERED: return "reordered";
	case HSM_AUDIT_TORN: return "torn";
	case HSM_AUDIT_TRUNCATED: return "truncated";
	case HSM_AUDIT_BAD_SIGNATURE: return "bad signature";
	case HSM_AUDIT_UNSIGNED: return "unsigned";
	case HSM_AUDIT_SEVERAL_TRAILS: return "several trails";
	}
	return "unknown";
}
