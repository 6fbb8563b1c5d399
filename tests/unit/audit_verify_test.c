/*
 * audit_verify_test.c - the verifier against a real 1,000-record log: every
 * single-byte change in the first 50 records, deletions, insertions,
 * reorders and truncations are all detected at the right (first bad) record;
 * checkpoint signatures verify with the right Ed25519 key and fail when
 * forged or checked with another key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <time.h>
#include <cmocka.h>

#include <jansson.h>

#include "audit/audit_format.h"
#include "audit_test_util.h"

#define N_RECORDS 1000
#define MAX_LINES 1100

typedef struct log_fixture {
	char *data;        /* the file's bytes */
	size_t len;
	size_t n_lines;
	size_t off[MAX_LINES + 1]; /* off[i] = start of line i (0-based); off[n] = len */
	char *pem;
	t_signer signer;
} log_fixture;

static log_fixture fx;
static const char *const NAME = "audit-00000000000000000001.jsonl";

static int build_log(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-verify");
	t_signer_init(&fx.signer);
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	for (unsigned i = 0; i < N_RECORDS; i++) {
		hsm_audit_record r = t_record(i);
		assert_true(hsm_ok(hsm_audit_append(a, &r)));
		if (i == 20 || i % 250 == 249)
			assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	}
	hsm_audit_close(a);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	fx.data = t_slurp(paths[0], &fx.len);
	fx.pem = t_signer_pem(&fx.signer);
	for (size_t i = 0; i < fx.len; i++)
		if (i == 0 || fx.data[i - 1] == '\n') {
			assert_true(fx.n_lines < MAX_LINES);
			fx.off[fx.n_lines++] = i;
		}
	fx.off[fx.n_lines] = fx.len;
	assert_true(fx.n_lines > N_RECORDS && fx.n_lines < MAX_LINES);
	t_rm_rf(dir);
	return 0;
}

static int free_log(void **state)
{
	(void)state;
	free(fx.data);
	free(fx.pem);
	EVP_PKEY_free(fx.signer.key);
	return 0;
}

static hsm_audit_verify_report verify_buf(const char *p, size_t n, const char *pem)
{
	const char *names[1] = {NAME};
	const uint8_t *data[1] = {(const uint8_t *)p};
	size_t lens[1] = {n};
	hsm_audit_verify_options o = {.pubkey_pem = pem};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 1, &o, &r)));
	return r;
}

/* Builds a log from the fixture's lines in the order given (indices, 0-based). */
static char *assemble(const size_t *order, size_t n, size_t *len)
{
	char *out = malloc(fx.len * 2 + 1);
	assert_non_null(out);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		size_t l = fx.off[order[i] + 1] - fx.off[order[i]];
		memcpy(out + o, fx.data + fx.off[order[i]], l);
		o += l;
	}
	*len = o;
	return out;
}

static void expect_bad(hsm_audit_verify_report r, hsm_audit_problem p, uint64_t line)
{
	if (r.valid || r.problem != p || r.line != line)
		print_message("expected %s at line %llu, got %s at line %llu: %s\n",
		              hsm_audit_problem_name(p), (unsigned long long)line,
		              hsm_audit_problem_name(r.problem), (unsigned long long)r.line, r.detail);
	assert_false(r.valid);
	assert_int_equal(r.problem, p);
	assert_int_equal(r.line, line);
}

static void test_intact_log_verifies(void **state)
{
	(void)state;
	hsm_audit_verify_report r = verify_buf(fx.data, fx.len, fx.pem);
	assert_true(r.valid);
	assert_int_equal(r.records, fx.n_lines);
	assert_int_equal(r.first_seq, 1);
	assert_int_equal(r.last_seq, fx.n_lines);
	assert_int_equal(r.checkpoints_verified, 1 + 1 + 4 + 1); /* signer, i==20, 4 x 250, shutdown */
	assert_int_equal(r.checkpoints_unsigned, 0);
	assert_int_equal(r.last_verified_seq, fx.n_lines);
	assert_int_equal(r.uncovered, 0);
}

/* Every byte of the first 50 records, each changed to two other values. */
static void test_every_single_byte_change_detected(void **state)
{
	(void)state;
	/* Each change is verified from the first line: about 44,000 verifications.  Under
	 * AddressSanitizer, ten times slower, every fifth byte, starting one byte further on
	 * each line so that the lines together still reach every field; the other builds
	 * try them all. */
#if defined(__SANITIZE_ADDRESS__)
	const size_t stride = 5;
#else
	const size_t stride = 1;
#endif
	char *buf = malloc(fx.len);
	assert_non_null(buf);
	memcpy(buf, fx.data, fx.len);
	size_t tried = 0, detected = 0;
	for (size_t line = 0; line < 50; line++) {
		for (size_t i = fx.off[line] + line % stride; i < fx.off[line + 1]; i += stride) {
			char orig = buf[i];
			const char variants[2] = {(char)(orig ^ 0x01), orig == '\n' ? 'x' : '\n'};
			for (int v = 0; v < 2; v++) {
				buf[i] = variants[v];
				hsm_audit_verify_report r = verify_buf(buf, fx.len, NULL);
				tried++;
				bool ok = !r.valid && r.line == line + 1 &&
				          (r.problem == HSM_AUDIT_MODIFIED || r.problem == HSM_AUDIT_MALFORMED ||
				           /* a checkpoint's base64 no longer decodes to a signature */
				           r.problem == HSM_AUDIT_BAD_SIGNATURE);
				if (!ok)
					print_message("byte %zu of line %zu (0x%02x->0x%02x): %s at line %llu: %s\n",
					              i - fx.off[line], line + 1, (unsigned char)orig,
					              (unsigned char)variants[v], r.valid ? "valid" : "reported",
					              (unsigned long long)r.line, r.detail);
				detected += ok;
			}
			buf[i] = orig;
		}
	}
	print_message("single-byte changes: %zu tried, %zu detected at the right record\n", tried,
	              detected);
	assert_true(tried > 50 * 200 / stride);
	assert_int_equal(detected, tried);
	free(buf);
}

/* With the public key, a changed signature byte is caught as a bad signature at that line. */
static void test_signature_byte_changes_detected_with_key(void **state)
{
	(void)state;
	const char *ck = strstr(fx.data, "\"sig\":\"");
	assert_non_null(ck);
	size_t line = 0;
	while (fx.off[line + 1] <= (size_t)(ck - fx.data))
		line++;
	char *buf = malloc(fx.len);
	assert_non_null(buf);
	memcpy(buf, fx.data, fx.len);
	size_t s = (size_t)(ck - fx.data) + 7;
	for (size_t i = s; i < s + 86; i++) {
		char orig = buf[i];
		buf[i] = orig == 'A' ? 'B' : 'A';
		hsm_audit_verify_report r = verify_buf(buf, fx.len, fx.pem);
		assert_false(r.valid);
		assert_int_equal(r.line, line + 1);
		assert_true(r.problem == HSM_AUDIT_BAD_SIGNATURE || r.problem == HSM_AUDIT_MODIFIED);
		buf[i] = orig;
	}
	free(buf);
}

static void test_deletions_detected(void **state)
{
	(void)state;
	static size_t order[MAX_LINES];
	for (size_t k = 0; k < fx.n_lines; k += (k < 60 ? 1 : 13)) {
		for (size_t width = 1; width <= 3; width += 2) {
			if (k + width > fx.n_lines)
				continue;
			size_t n = 0;
			for (size_t i = 0; i < fx.n_lines; i++)
				if (i < k || i >= k + width)
					order[n++] = i;
			size_t len;
			char *b = assemble(order, n, &len);
			hsm_audit_verify_report r = verify_buf(b, len, NULL);
			if (k + width == fx.n_lines) /* the tail is gone: ends without shutdown */
				expect_bad(r, HSM_AUDIT_TRUNCATED, k);
			else
				expect_bad(r, HSM_AUDIT_DELETED, k + 1);
			free(b);
		}
	}
}

static void test_insertions_detected(void **state)
{
	(void)state;
	static size_t order[MAX_LINES + 1];
	for (size_t k = 1; k + 2 < fx.n_lines; k += (k < 60 ? 1 : 17)) {
		/* A copy of an earlier record, and of the record itself, after line k. */
		size_t copies[2] = {k / 2, k};
		for (int c = 0; c < 2; c++) {
			size_t n = 0;
			for (size_t i = 0; i < fx.n_lines; i++) {
				order[n++] = i;
				if (i == k)
					order[n++] = copies[c];
			}
			size_t len;
			char *b = assemble(order, n, &len);
			expect_bad(verify_buf(b, len, NULL), HSM_AUDIT_INSERTED, k + 2);
			free(b);
		}
	}
}

/* A forger who computes seq and prev right is still caught at the next record. */
static void test_forged_inserted_record_detected(void **state)
{
	(void)state;
	size_t k = 30; /* insert after line index 30 (seq 31) */
	uint8_t h[32];
	EVP_Digest(fx.data + fx.off[k], fx.off[k + 1] - fx.off[k] - 1, h, NULL, EVP_sha256(), NULL);
	char hex[65];
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	char forged[512];
	int fl = snprintf(forged, sizeof(forged),
	                  "{\"seq\":%zu,\"time\":\"2026-01-01T00:00:00.000Z\",\"node\":\"node-test\","
	                  "\"type\":\"request\",\"op\":\"Decrypt\",\"outcome\":\"success\","
	                  "\"latency_us\":1,\"prev\":\"%s\"}\n", k + 2, hex);
	char *b = malloc(fx.len + (size_t)fl);
	assert_non_null(b);
	size_t cut = fx.off[k + 1];
	memcpy(b, fx.data, cut);
	memcpy(b + cut, forged, (size_t)fl);
	memcpy(b + cut + fl, fx.data + cut, fx.len - cut);
	expect_bad(verify_buf(b, fx.len + (size_t)fl, NULL), HSM_AUDIT_INSERTED, k + 2);
	/* Garbage inserted is a malformed record at its line. */
	memcpy(b + cut, "hello\n", 6);
	memcpy(b + cut + 6, fx.data + cut, fx.len - cut);
	expect_bad(verify_buf(b, fx.len + 6, NULL), HSM_AUDIT_MALFORMED, k + 2);
	free(b);
}

static void test_reorders_detected(void **state)
{
	(void)state;
	static size_t order[MAX_LINES];
	for (size_t k = 1; k + 8 < fx.n_lines; k += (k < 60 ? 1 : 11)) {
		for (int kind = 0; kind < 3; kind++) {
			size_t n = 0;
			for (size_t i = 0; i < fx.n_lines; i++)
				order[n++] = i;
			if (kind == 0) { /* swap k and k+1 */
				order[k] = k + 1;
				order[k + 1] = k;
			} else if (kind == 1) { /* move k after k+5 */
				for (size_t i = k; i < k + 5; i++)
					order[i] = i + 1;
				order[k + 5] = k;
			} else { /* move k+5 before k */
				for (size_t i = k + 5; i > k; i--)
					order[i] = i - 1;
				order[k] = k + 5;
			}
			size_t len;
			char *b = assemble(order, n, &len);
			expect_bad(verify_buf(b, len, NULL), HSM_AUDIT_REORDERED, k + 1);
			free(b);
		}
	}
}

static void test_truncations_detected(void **state)
{
	(void)state;
	size_t tried = 0;
	for (size_t cut = 0; cut < fx.len; cut += (cut < 4000 ? 7 : 997)) {
		hsm_audit_verify_report r = verify_buf(fx.data, cut, NULL);
		size_t line = 0; /* lines wholly kept */
		while (line < fx.n_lines && fx.off[line + 1] <= cut)
			line++;
		if (cut == 0)
			assert_int_equal(r.problem, HSM_AUDIT_TRUNCATED);
		else if (fx.off[line] == cut)
			expect_bad(r, HSM_AUDIT_TRUNCATED, line);
		else
			expect_bad(r, HSM_AUDIT_TORN, line + 1);
		if (cut != 0) /* how a crash's torn or open end resolves itself */
			assert_non_null(strstr(r.detail, "next start"));
		tried++;
	}
	/* Every line boundary too (a clean cut between records). */
	for (size_t line = 1; line < fx.n_lines; line++) {
		expect_bad(verify_buf(fx.data, fx.off[line], NULL), HSM_AUDIT_TRUNCATED, line);
		tried++;
	}
	assert_true(tried > 1500);
	/* A live log may end anywhere between checkpoints when the caller says so. */
	const char *names[1] = {NAME};
	const uint8_t *data[1] = {(const uint8_t *)fx.data};
	size_t lens[1] = {fx.off[500]};
	hsm_audit_verify_options o = {.allow_open_tail = true};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 1, &o, &r)));
	assert_true(r.valid);
	assert_int_equal(r.in_progress_bytes, 0);
	/* Or in the middle of a line hsmd is writing: that line is left out, and said so. */
	lens[0] = fx.off[500] + 17;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 1, &o, &r)));
	assert_true(r.valid);
	assert_int_equal(r.records, 500);
	assert_int_equal(r.in_progress_bytes, 17);
}

/* Replaces the "prev" of every line from index `from` so the chain is consistent again. */
static char *rechain(const char *src, size_t len, size_t from)
{
	char *b = malloc(len + 1);
	assert_non_null(b);
	memcpy(b, src, len);
	b[len] = '\0';
	size_t start = 0, idx = 0, prev_start = 0, prev_len = 0;
	while (start < len) {
		char *nl = memchr(b + start, '\n', len - start);
		assert_non_null(nl);
		size_t l = (size_t)(nl - (b + start));
		if (idx >= from) {
			uint8_t h[32];
			EVP_Digest(b + prev_start, prev_len, h, NULL, EVP_sha256(), NULL);
			char *p = b + start + l - 66; /* "prev":"<64 hex>"} ends the line */
			for (int i = 0; i < 32; i++) {
				char two[3];
				snprintf(two, sizeof(two), "%02x", h[i]);
				p[2 * i] = two[0];
				p[2 * i + 1] = two[1];
			}
		}
		prev_start = start;
		prev_len = l;
		start += l + 1;
		idx++;
	}
	return b;
}

static void test_checkpoint_signatures(void **state)
{
	(void)state;
	/* A different key: the first signed checkpoint fails. */
	t_signer other;
	t_signer_init(&other);
	char *other_pem = t_signer_pem(&other);
	hsm_audit_verify_report r = verify_buf(fx.data, fx.len, other_pem);
	size_t first_ck = 0;
	while (strstr(fx.data + fx.off[first_ck], "\"signed\":true") > fx.data + fx.off[first_ck + 1] ||
	       strstr(fx.data + fx.off[first_ck], "\"signed\":true") == NULL)
		first_ck++;
	expect_bad(r, HSM_AUDIT_BAD_SIGNATURE, first_ck + 1);
	/* Without a key the signatures are counted as unchecked, not as verified. */
	r = verify_buf(fx.data, fx.len, NULL);
	assert_true(r.valid);
	assert_int_equal(r.checkpoints_verified, 0);
	assert_int_equal(r.checkpoints_unchecked, 7);
	assert_int_equal(r.last_verified_seq, 0);

	/* A forger rewrites a checkpoint's signature with their own key and fixes the chain. */
	size_t ck = first_ck;
	char *sig = strstr(fx.data + fx.off[ck], "\"sig\":\"") + 7;
	size_t sig_off = (size_t)(sig - fx.data);
	hsm_buf fsig = {0};
	assert_true(hsm_ok(t_sign(&other, (const uint8_t *)"forged", 6, &fsig)));
	unsigned char enc[128];
	int el = EVP_EncodeBlock(enc, fsig.data, (int)fsig.len);
	assert_int_equal(el, 88);
	char *forged = malloc(fx.len);
	assert_non_null(forged);
	memcpy(forged, fx.data, fx.len);
	memcpy(forged + sig_off, enc, 88);
	char *fixed = rechain(forged, fx.len, ck + 1);
	r = verify_buf(fixed, fx.len, fx.pem);
	expect_bad(r, HSM_AUDIT_BAD_SIGNATURE, ck + 1);
	/* The same forgery is invisible to the chain alone: that is what the signature is for. */
	r = verify_buf(fixed, fx.len, NULL);
	assert_true(r.valid);
	free(fixed);
	free(forged);
	hsm_buf_free(&fsig);
	free(other_pem);
	EVP_PKEY_free(other.key);
}

/* Index of the n-th (0-based) line holding needle. */
static size_t nth_line_with(const char *needle, size_t n)
{
	for (size_t i = 0; i < fx.n_lines; i++) {
		const char *hit = strstr(fx.data + fx.off[i], needle);
		if (hit != NULL && hit < fx.data + fx.off[i + 1] && n-- == 0)
			return i;
	}
	fail_msg("no line %zu holding %s", n, needle);
	return 0;
}

/* A copy of the log with the value of line i's "kept_from" set to v (one digit), rechained. */
static char *with_kept_from(size_t i, char v)
{
	char *b = malloc(fx.len);
	assert_non_null(b);
	memcpy(b, fx.data, fx.len);
	char *k = strstr(b + fx.off[i], "\"kept_from\":1,");
	assert_true(k != NULL && k < b + fx.off[i + 1]);
	k[strlen("\"kept_from\":")] = v;
	char *fixed = rechain(b, fx.len, i + 1);
	free(b);
	return fixed;
}

/*
 * Every checkpoint states the first seq hsmd keeps; the signature covers it,
 * and only a retention checkpoint may raise it, so records deleted from the
 * start other than by retention show.
 */
static void test_kept_from_is_signed_and_rises_only_at_retention(void **state)
{
	(void)state;
	hsm_audit_verify_report r = verify_buf(fx.data, fx.len, fx.pem);
	assert_true(r.valid);
	assert_int_equal(r.kept_from, 1);
	size_t last = fx.n_lines - 1, first = nth_line_with("\"kept_from\":1,", 0);
	assert_non_null(strstr(fx.data + fx.off[last], "\"reason\":\"shutdown\",\"kept_from\":1,"));
	assert_int_equal(r.kept_from_seq, last + 1);
	/* Raised at the shutdown checkpoint: its signature fails; the chain alone shows a deletion. */
	char *raised = with_kept_from(last, '2');
	expect_bad(verify_buf(raised, fx.len, fx.pem), HSM_AUDIT_BAD_SIGNATURE, last + 1);
	r = verify_buf(raised, fx.len, NULL);
	expect_bad(r, HSM_AUDIT_DELETED, last + 1);
	assert_non_null(strstr(r.detail, "without retention"));
	free(raised);
	/* At the first checkpoint nothing earlier states a floor: it is the signature that shows. */
	raised = with_kept_from(first, '2');
	expect_bad(verify_buf(raised, fx.len, fx.pem), HSM_AUDIT_BAD_SIGNATURE, first + 1);
	free(raised);
	/* Zero is no floor: malformed. */
	char *zero = with_kept_from(first, '0');
	expect_bad(verify_buf(zero, fx.len, NULL), HSM_AUDIT_MALFORMED, first + 1);
	free(zero);
	/* A file holding the log from its second record on misses record 1, which the
	 * checkpoints keep; before checkpoints stated it, this read as retention. */
	const char *names[1] = {"audit-00000000000000000002.jsonl"};
	const uint8_t *data[1] = {(const uint8_t *)fx.data + fx.off[1]};
	size_t lens[1] = {fx.len - fx.off[1]};
	hsm_audit_verify_options o = {.pubkey_pem = fx.pem};
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 1, &o, &r)));
	expect_bad(r, HSM_AUDIT_DELETED, last); /* reported at the last checkpoint stating it */
	assert_non_null(strstr(r.detail, "records 1 to 1 were not given, or were deleted"));
}

static void test_sealed_checkpoints_unsigned_then_covered(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-sealed");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	/* A sealed node refuses what it is asked (t_record(7) is a denial). */
	hsm_audit_record refused = t_record(7), rec = t_record(1);
	assert_true(hsm_ok(hsm_audit_append(a, &refused)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a))); /* sealed: unsigned */
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	int calls = atomic_load(&fx.signer.calls);
	assert_true(hsm_ok(hsm_audit_seal(a))); /* sealed again: a signed "seal" checkpoint */
	assert_int_equal(atomic_load(&fx.signer.calls), calls + 1);
	calls = atomic_load(&fx.signer.calls);
	assert_true(hsm_ok(hsm_audit_append(a, &refused)));
	hsm_audit_close(a);
	assert_int_equal(atomic_load(&fx.signer.calls), calls); /* no use after clearing */
	hsm_audit_verify_report r = t_verify_dir(dir, fx.pem, false);
	assert_true(r.valid);
	assert_true(r.checkpoints_verified >= 2);
	assert_int_equal(r.checkpoints_unsigned, 2); /* the sealed one and the shutdown */
	assert_true(r.last_verified_seq > 3);
	assert_int_equal(r.uncovered, r.last_seq - r.last_verified_seq);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	char *s = t_slurp(paths[0], NULL);
	assert_non_null(strstr(s, "\"signed\":false,\"why\":\"sealed\""));
	assert_non_null(strstr(s, "\"reason\":\"seal\""));
	free(s);
	t_rm_rf(dir);
}

/*
 * A signer taken away without the signed "seal" checkpoint (what a log
 * rewritten after its last signature looks like: later checkpoints claim to
 * be unsigned) fails verification with the key, and passes without it.
 */
static void test_signatures_cannot_be_stripped(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-stripped");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	hsm_audit_record rec = t_record(1);
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	hsm_audit_set_signer(a, NULL, NULL); /* no seal checkpoint */
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	hsm_audit_close(a); /* an unsigned shutdown checkpoint */
	hsm_audit_verify_report r = t_verify_dir(dir, fx.pem, false);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_UNSIGNED);
	assert_non_null(strstr(r.detail, "shutdown checkpoint carries no signature"));
	assert_int_equal(r.seq, r.last_seq + 1);
	r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	t_rm_rf(dir);
}

/* ---- Trails begun by an older hsmd ---------------------------------------- */

/* The declarations of the trail format: an opening's, a checkpoint's. */
static const char *const MARKER = ",\"trail_format\":\"" AUDIT_TRAIL_FORMAT_STR "\"";
static const char *const CK_MARKER = ",\"trail_format\":" AUDIT_TRAIL_FORMAT_STR ",";

/* The only log file in dir, read whole. */
static char *slurp_only(const char *dir, char path[PATH_MAX], size_t *len)
{
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	snprintf(path, PATH_MAX, "%s", paths[0]);
	return t_slurp(path, len);
}

/* Index (0-based) of the n-th (0-based) line of s holding needle. */
static size_t line_with(const char *s, const char *needle, size_t n)
{
	size_t i = 0;
	for (const char *p = s; *p; p = strchr(p, '\n') + 1, i++) {
		const char *hit = strstr(p, needle);
		if (hit != NULL && hit < strchr(p, '\n') && n-- == 0)
			return i;
	}
	fail_msg("no line %zu holding %s", n, needle);
	return 0;
}

/* Line i of s (0-based). */
static char *line_at(char *s, size_t i)
{
	for (; i > 0; i--)
		s = strchr(s, '\n') + 1;
	return s;
}

/* Signs the checkpoint line l (in place: the signature keeps its length) with fx's key. */
static void resign(char *l, size_t n)
{
	json_t *j = json_loadb(l, n, 0, NULL);
	json_t *c = json_object_get(j, "checkpoint");
	hsm_buf msg = {0}, sig = {0};
	json_t *kept = json_object_get(c, "kept_from");
	assert_true(hsm_ok(audit_checkpoint_message(
	    &msg, json_string_value(json_object_get(j, "node")),
	    (uint64_t)json_integer_value(json_object_get(j, "seq")),
	    json_string_value(json_object_get(j, "time")),
	    json_string_value(json_object_get(c, "reason")),
	    kept ? (uint64_t)json_integer_value(kept) : 0, json_string_value(json_object_get(j, "prev")))));
	assert_true(hsm_ok(t_sign(&fx.signer, msg.data, msg.len, &sig)));
	unsigned char enc[128];
	assert_int_equal(EVP_EncodeBlock(enc, sig.data, (int)sig.len), 88);
	char *at = strstr(l, "\"sig\":\"");
	assert_true(at != NULL && at < l + n);
	memcpy(at + 7, enc, 88);
	hsm_buf_free(&msg);
	hsm_buf_free(&sig);
	json_decref(j);
}

/*
 * The log as an hsmd older than the trail format would have left it from
 * line `from` on: its AuditLogOpened events and checkpoints declare no
 * format.  Then the
 * chain is redone from there and, if sign, its signed checkpoints signed
 * again, as that hsmd did when it wrote them.
 */
static char *older_from(const char *src, size_t from, bool sign, size_t *out_len)
{
	size_t n = strlen(src);
	char *b = calloc(n + 1, 1);
	assert_non_null(b);
	size_t o = 0, idx = 0, ml = strlen(MARKER), cl = strlen(CK_MARKER);
	for (const char *p = src; *p;) {
		const char *nl = strchr(p, '\n');
		const char *m = strstr(p, MARKER), *ck = strstr(p, CK_MARKER);
		if (idx >= from && m != NULL && m < nl && strstr(p, "\"op\":\"AuditLogOpened\"") < nl) {
			memcpy(b + o, p, (size_t)(m - p));
			o += (size_t)(m - p);
			p = m + ml;
		} else if (idx >= from && ck != NULL && ck < nl) { /* keep the comma after it */
			memcpy(b + o, p, (size_t)(ck - p));
			o += (size_t)(ck - p);
			p = ck + cl - 1;
		}
		memcpy(b + o, p, (size_t)(nl + 1 - p));
		o += (size_t)(nl + 1 - p);
		p = nl + 1;
		idx++;
	}
	char *fixed = rechain(b, o, from > 0 ? from : 1); /* line 0 keeps its all-zero prev */
	free(b);
	size_t start = 0, i = 0;
	while (start < o) {
		size_t l = (size_t)(strchr(fixed + start, '\n') - (fixed + start));
		if (i >= from && sign) {
			const char *sg = strstr(fixed + start, "\"signed\":true");
			if (sg != NULL && sg < fixed + start + l) {
				resign(fixed + start, l);
				/* the next line's prev changes with it */
				char *again = rechain(fixed, o, i + 1);
				free(fixed);
				fixed = again;
			}
		}
		start += l + 1;
		i++;
	}
	*out_len = o;
	return fixed;
}

/* An old build's run: a seal that cleared the signer without a checkpoint, a stop likewise. */
static void write_older_run(const char *dir)
{
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	hsm_audit_record rec = t_record(1);
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	/* Seal: the signer goes first, a checkpoint may come before the Seal record. */
	hsm_audit_set_signer(a, NULL, NULL);
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	hsm_audit_record seal = {.type = HSM_AUDIT_REQUEST, .principal = "ops",
	                         .operation = "Seal", .outcome = HSM_AUDIT_SUCCESS,
	                         .request_id = "seal-1", .latency_us = 5000};
	assert_true(hsm_ok(hsm_audit_append(a, &seal)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	/* Unsealed again, then stopped: the signer cleared after the Shutdown event. */
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	rec = t_record(2);
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	hsm_audit_record down = {.type = HSM_AUDIT_EVENT, .principal = "hsmd",
	                         .operation = "Shutdown", .outcome = HSM_AUDIT_SUCCESS};
	assert_true(hsm_ok(hsm_audit_append(a, &down)));
	hsm_audit_set_signer(a, NULL, NULL);
	hsm_audit_close(a); /* an unsigned shutdown checkpoint */
}

/* The current hsmd continues the trail: unsealed, a request, a seal, a stop. */
static void write_current_run(const char *dir)
{
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	hsm_audit_record rec = t_record(3);
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	assert_true(hsm_ok(hsm_audit_seal(a)));
	hsm_audit_close(a);
}

/* Writes the older run and rewrites it into an older hsmd's shape; *older_len its bytes. */
static void make_upgraded_trail(const char *dir, size_t *older_len, uint64_t *older_last)
{
	write_older_run(dir);
	char path[PATH_MAX];
	size_t n;
	char *s = slurp_only(dir, path, &n);
	assert_non_null(strstr(s, MARKER)); /* hsmd declares it now */
	char *old = older_from(s, 0, true, older_len);
	assert_null(strstr(old, "trail_format"));
	t_spit(path, old, *older_len);
	*older_last = t_count_lines(old);
	free(old);
	free(s);
	write_current_run(dir);
}

/*
 * A trail an older hsmd began (its seal and its stop left unsigned
 * checkpoints) and the current one continued verifies with the key; verify
 * says where the older records end.
 */
static void test_trail_begun_by_older_hsmd_verifies(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-older");
	size_t older_len;
	uint64_t older_last;
	write_older_run(dir);
	char path[PATH_MAX];
	size_t n;
	char *s = slurp_only(dir, path, &n);
	char *old = older_from(s, 0, true, &older_len);
	/* The older run alone: VALID with the key, all of it older. */
	hsm_audit_verify_report r = verify_buf(old, older_len, fx.pem);
	if (!r.valid)
		print_message("%s\n", r.detail);
	assert_true(r.valid);
	assert_int_equal(r.older_format_through, r.last_seq);
	assert_int_equal(r.checkpoints_unsigned, 3); /* before and after the Seal record, shutdown */
	free(old);
	free(s);
	t_rm_rf(dir);

	t_mkdtemp(dir, "audit-upgraded");
	make_upgraded_trail(dir, &older_len, &older_last);
	r = t_verify_dir(dir, fx.pem, false);
	assert_true(r.valid);
	assert_int_equal(r.older_format_through, older_last);
	assert_true(r.last_seq > older_last + 3);
	/* Covered up to the current run's signed seal checkpoint; a sealed stop follows it. */
	assert_int_equal(r.last_verified_seq, r.last_seq - 1);
	/* The same records written by the current hsmd: its own rules, no older range. */
	t_rm_rf(dir);
	t_mkdtemp(dir, "audit-current");
	write_current_run(dir);
	r = t_verify_dir(dir, fx.pem, false);
	assert_true(r.valid);
	assert_int_equal(r.older_format_through, 0);
	t_rm_rf(dir);
}

/*
 * The older hsmd's leniency is no way around the signatures: its unsigned
 * checkpoints are still chained and covered by the signed ones after them,
 * the current runs keep the current rules, and the declaration cannot be
 * dropped or lowered without the key noticing.
 */
static void test_older_format_cannot_be_forged(void **state)
{
	(void)state;
	char dir[PATH_MAX], path[PATH_MAX];
	t_mkdtemp(dir, "audit-older-forged");
	size_t older_len, n;
	uint64_t older_last;
	make_upgraded_trail(dir, &older_len, &older_last);
	char *s = slurp_only(dir, path, &n);
	/* An older unsigned checkpoint edited: the chain shows it... */
	size_t ck = line_with(s, "\"why\":\"sealed\"", 0);
	char *b = strdup(s);
	assert_non_null(b);
	strstr(line_at(b, ck), "\"sealed\"")[1] = 'S';
	expect_bad(verify_buf(b, n, fx.pem), HSM_AUDIT_MODIFIED, ck + 1);
	/* ...and with the chain redone, the next signed checkpoint. */
	char *re = rechain(b, n, ck + 1);
	hsm_audit_verify_report r = verify_buf(re, n, fx.pem);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_BAD_SIGNATURE);
	assert_true(r.seq > ck + 1);
	free(re);
	free(b);

	/* The current run's declaration dropped: its signed checkpoints no longer verify. */
	size_t cur = (size_t)older_last, len2;
	char *dropped = older_from(s, cur, false, &len2);
	r = verify_buf(dropped, len2, fx.pem);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_BAD_SIGNATURE);
	free(dropped);

	/* A run after it that declares no format (an older build started on the trail, or
	 * the declaration dropped from the last run): refused at its opening with the key. */
	write_current_run(dir);
	free(s);
	s = slurp_only(dir, path, &n);
	size_t third = line_with(s, "\"op\":\"AuditLogOpened\"", 2);
	char *older = older_from(s, third, true, &len2);
	r = verify_buf(older, len2, fx.pem);
	expect_bad(r, HSM_AUDIT_MODIFIED, third + 1);
	assert_non_null(strstr(r.detail, "declares trail format 0"));
	assert_true(verify_buf(older, len2, NULL).valid);
	free(older);
	free(s);
	t_rm_rf(dir);
}

/*
 * In a run that declares the format, what an older hsmd's stop looked like
 * (a Shutdown event, then the signer cleared without a signed checkpoint) is
 * what a rewritten tail looks like: refused.
 */
static void test_current_run_gets_no_older_leniency(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-no-leniency");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	hsm_audit_record rec = t_record(1);
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	hsm_audit_record seal = {.type = HSM_AUDIT_REQUEST, .principal = "ops",
	                         .operation = "Seal", .outcome = HSM_AUDIT_SUCCESS,
	                         .request_id = "seal-1", .latency_us = 5000};
	assert_true(hsm_ok(hsm_audit_append(a, &seal)));
	hsm_audit_record down = {.type = HSM_AUDIT_EVENT, .principal = "hsmd",
	                         .operation = "Shutdown", .outcome = HSM_AUDIT_SUCCESS};
	assert_true(hsm_ok(hsm_audit_append(a, &down)));
	hsm_audit_set_signer(a, NULL, NULL);
	hsm_audit_close(a);
	hsm_audit_verify_report r = t_verify_dir(dir, fx.pem, false);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_UNSIGNED);
	assert_int_equal(r.seq, r.last_seq + 1);
	t_rm_rf(dir);
}

/* ---- The format declared in checkpoints ----------------------------------- */

/*
 * A checkpoint that declares a lower format than an earlier record did (the
 * declaration dropped, the chain redone after it) is refused with the key:
 * its own signature still verifies, since the declaration is outside the
 * signed message, so this is what shows it.  A value that is not a format
 * is malformed.
 */
static void test_checkpoint_declaring_a_lower_format_is_refused(void **state)
{
	(void)state;
	size_t i = nth_line_with("\"reason\":\"manual\"", 2);
	const char *line = fx.data + fx.off[i];
	const char *m = strstr(line, CK_MARKER);
	assert_true(m != NULL && m < fx.data + fx.off[i + 1]);
	size_t cut = strlen(CK_MARKER) - 1, at = (size_t)(m - fx.data); /* keeps the comma after */
	char *b = malloc(fx.len);
	assert_non_null(b);
	memcpy(b, fx.data, at);
	memcpy(b + at, fx.data + at + cut, fx.len - at - cut);
	char *fixed = rechain(b, fx.len - cut, i + 1);
	hsm_audit_verify_report r = verify_buf(fixed, fx.len - cut, fx.pem);
	expect_bad(r, HSM_AUDIT_MODIFIED, i + 1);
	assert_non_null(strstr(r.detail, "this manual checkpoint declares trail format 0, but seq"));
	assert_true(verify_buf(fixed, fx.len - cut, NULL).valid); /* the chain alone cannot tell */
	free(fixed);

	/* "trail_format":"2" (a string, as in an opening's extra) is no checkpoint's. */
	memcpy(b, fx.data, fx.len);
	char *v = b + at + strlen(",\"trail_format\":");
	assert_int_equal(*v, AUDIT_TRAIL_FORMAT_STR[0]);
	*v = '0';
	expect_bad(verify_buf(b, fx.len, NULL), HSM_AUDIT_MALFORMED, i + 1);
	free(b);
}

/*
 * A record like fx's line i, given seq; if reason, a checkpoint stating it
 * and kept_from, with room for a signature if sign (resign fills it in).  An
 * AuditLogOpened (line 0) says the run before it shut down cleanly: the
 * lines forged here follow fx's shutdown checkpoint.
 */
static char *forged_line(size_t i, uint64_t seq, const char *reason, uint64_t kept_from,
                         bool sign)
{
	json_t *j = json_loadb(fx.data + fx.off[i], fx.off[i + 1] - fx.off[i], 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_object_set_new(j, "seq", json_integer((json_int_t)seq)), 0);
	json_t *extra = json_object_get(j, "extra");
	if (json_object_get(extra, "previous_shutdown") != NULL)
		assert_int_equal(json_object_set_new(extra, "previous_shutdown", json_string("clean")),
		                 0);
	if (reason != NULL) {
		char sig[89];
		memset(sig, 'A', 86);
		memcpy(sig + 86, "==", 3);
		json_t *c = sign ? json_pack("{s:s,s:I,s:i,s:b,s:s,s:s}", "reason", reason, "kept_from",
		                             (json_int_t)kept_from, "trail_format", AUDIT_TRAIL_FORMAT,
		                             "signed", 1, "alg", "Ed25519", "sig", sig)
		                 : json_pack("{s:s,s:I,s:i,s:b,s:s}", "reason", reason, "kept_from",
		                             (json_int_t)kept_from, "trail_format", AUDIT_TRAIL_FORMAT,
		                             "signed", 0, "why", "sealed");
		assert_non_null(c);
		assert_int_equal(json_object_set_new(j, "checkpoint", c), 0);
	}
	char *l = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_non_null(l);
	json_decref(j);
	return l;
}

/*
 * A log of fx's lines from index `from` on, then the lines given (rechained,
 * and their checkpoints with room for a signature signed with fx's key).
 */
static char *with_tail(size_t from, char **lines, size_t n, size_t *len)
{
	size_t kept = fx.len - fx.off[from], o = kept;
	char *b = malloc(kept + 4096 * n + 1);
	assert_non_null(b);
	memcpy(b, fx.data + fx.off[from], kept);
	for (size_t i = 0; i < n; i++) {
		o += (size_t)snprintf(b + o, 4096, "%s\n", lines[i]);
		free(lines[i]);
	}
	size_t first = fx.n_lines - from;
	char *fixed = rechain(b, o, first);
	free(b);
	for (size_t i = first; i < first + n; i++) {
		char *l = line_at(fixed, i);
		size_t l_len = (size_t)(strchr(l, '\n') - l);
		const char *sg = strstr(l, "\"signed\":true");
		if (sg != NULL && sg < l + l_len) {
			resign(l, l_len);
			char *again = rechain(fixed, o, i + 1);
			free(fixed);
			fixed = again;
		}
	}
	*len = o;
	return fixed;
}

static hsm_audit_verify_report verify_named(const char *name, const char *p, size_t n,
                                            const char *pem)
{
	const char *names[1] = {name};
	const uint8_t *data[1] = {(const uint8_t *)p};
	size_t lens[1] = {n};
	hsm_audit_verify_options o = {.pubkey_pem = pem};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 1, &o, &r)));
	return r;
}

static const char *const CUT_NAME = "audit-00000000000000000041.jsonl";

/* The first line of the fixture after its opening that is not a checkpoint (where the
 * fixture's checkpoints fall depends on how fast it was written). */
static size_t record_line(void)
{
	static const char ckpt[] = "\"type\":\"checkpoint\"";
	for (size_t i = 1; i + 1 < fx.n_lines; i++)
		if (memmem(fx.data + fx.off[i], fx.off[i + 1] - fx.off[i], ckpt, sizeof(ckpt) - 1) ==
		    NULL)
			return i;
	fail_msg("the fixture holds no record but checkpoints");
	return 0;
}

/*
 * What an attacker who can write the trail does while hsmd is stopped:
 * deletes its oldest records (1 to 40), names what is left after its first
 * record, and appends a made-up run of a sealed node whose unsigned retention
 * checkpoint states kept_from 41.  Only a signed retention checkpoint raises
 * the floor, so with the key this is a deletion; the chain alone cannot tell.
 */
static void test_unsigned_retention_does_not_raise_the_floor(void **state)
{
	(void)state;
	size_t last = fx.n_lines - 1, len;
	uint64_t seq = (uint64_t)fx.n_lines;
	char *tail[4] = {forged_line(0, seq + 1, NULL, 0, false), /* AuditLogOpened */
	                 forged_line(last, seq + 2, "retention", 41, false),
	                 forged_line(record_line(), seq + 3, NULL, 0, false),
	                 forged_line(last, seq + 4, "shutdown", 41, false)};
	char *forged = with_tail(40, tail, 4, &len);
	hsm_audit_verify_report r = verify_named(CUT_NAME, forged, len, fx.pem);
	size_t lines = fx.n_lines - 40 + 4;
	expect_bad(r, HSM_AUDIT_DELETED, lines); /* the shutdown checkpoint raises it */
	assert_non_null(strstr(r.detail, "without retention"));
	r = verify_named(CUT_NAME, forged, len, NULL);
	if (!r.valid)
		print_message("%s\n", r.detail);
	assert_true(r.valid); /* as before, without a key */
	free(forged);

	/* Laundered: the node restarted on it and unsealed signs checkpoints stating 41. */
	char *laundered[4] = {forged_line(0, seq + 1, NULL, 0, false),
	                      forged_line(last, seq + 2, "retention", 41, false),
	                      forged_line(last, seq + 3, "signer", 41, true),
	                      forged_line(last, seq + 4, "shutdown", 41, true)};
	forged = with_tail(40, laundered, 4, &len);
	r = verify_named(CUT_NAME, forged, len, fx.pem);
	expect_bad(r, HSM_AUDIT_DELETED, lines - 1);
	assert_non_null(strstr(r.detail, "records 1 to 40 left the start of the log"));
	free(forged);

	/* A retention checkpoint that went out unsigned (the signer cleared meanwhile) after
	 * which nothing was deleted: later checkpoints keep the old floor, and it verifies. */
	char *failed[3] = {forged_line(0, seq + 1, NULL, 0, false),
	                   forged_line(last, seq + 2, "retention", 41, false),
	                   forged_line(last, seq + 3, "shutdown", 1, false)};
	char *genuine = with_tail(0, failed, 3, &len);
	r = verify_named(NAME, genuine, len, fx.pem);
	if (!r.valid)
		print_message("%s\n", r.detail);
	assert_true(r.valid);
	assert_int_equal(r.kept_from, 1);
	free(genuine);
}

/*
 * A log may start past seq 1 only where a retention checkpoint states that
 * floor.  Here the log starts at seq 41 with a run whose signed checkpoints
 * state kept_from 41, as a node that took its floor from the oldest file it
 * found would after files 1 to 40 were deleted by hand (or lost): no
 * retention checkpoint says they were retention's, so they were deleted.
 * The same run with a signed retention checkpoint stating 41 verifies.
 */
static void test_a_start_past_seq_1_needs_a_retention_checkpoint(void **state)
{
	(void)state;
	size_t last = fx.n_lines - 1, len;
	char *run[3] = {forged_line(0, 41, NULL, 0, false), /* AuditLogOpened */
	                forged_line(last, 42, "signer", 41, true),
	                forged_line(last, 43, "shutdown", 41, true)};
	char *log = with_tail(fx.n_lines, run, 3, &len);
	hsm_audit_verify_report r = verify_named(CUT_NAME, log, len, fx.pem);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_DELETED);
	assert_non_null(strstr(r.detail, "records 1 to 40 are missing"));
	assert_non_null(strstr(r.detail, "no retention checkpoint"));
	free(log);

	char *kept[3] = {forged_line(0, 41, NULL, 0, false),
	                 forged_line(last, 42, "retention", 41, true),
	                 forged_line(last, 43, "shutdown", 41, true)};
	log = with_tail(fx.n_lines, kept, 3, &len);
	r = verify_named(CUT_NAME, log, len, fx.pem);
	if (!r.valid)
		print_message("%s\n", r.detail);
	assert_true(r.valid);
	assert_int_equal(r.retention_seq, 42);
	assert_int_equal(r.retention_kept_from, 41);
	free(log);
}

/* ---- Restarts and the last checkpoint --------------------------------------- */

/* fx's line i as a JSON object (the caller owns it). */
static json_t *fx_json(size_t i)
{
	json_t *j = json_loadb(fx.data + fx.off[i], fx.off[i + 1] - fx.off[i], 0, NULL);
	assert_non_null(j);
	return j;
}

/* Appends j to b at *o with seq, compact and in order, and a newline; frees j. */
static void put_json(char *b, size_t *o, json_t *j, uint64_t seq)
{
	assert_int_equal(json_object_set_new(j, "seq", json_integer((json_int_t)seq)), 0);
	char *l = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_non_null(l);
	*o += (size_t)sprintf(b + *o, "%s\n", l);
	free(l);
	json_decref(j);
}

/*
 * fx rewritten from line `victim` on, as someone without the audit key could:
 * the victim deleted, every later signed checkpoint made unsigned ("sealed"),
 * and, when opening is not NULL, a restart saying `opening` put before each,
 * renumbered and rechained.  Returns the log; *first_opening is the line
 * (1-based) of the first restart put in.
 */
static char *stripped_behind_restarts(size_t victim, const char *opening, size_t *len,
                                      uint64_t *first_opening)
{
	char *b = malloc(fx.len * 2 + 1);
	assert_non_null(b);
	memcpy(b, fx.data, fx.off[victim]);
	size_t o = fx.off[victim];
	uint64_t seq = victim; /* the seq of the last line written */
	*first_opening = 0;
	for (size_t i = victim + 1; i < fx.n_lines; i++) {
		json_t *j = fx_json(i);
		json_t *c = json_object_get(j, "checkpoint");
		if (json_is_true(json_object_get(c, "signed"))) {
			if (opening != NULL) {
				json_t *open = fx_json(0);
				json_object_set_new(json_object_get(open, "extra"), "previous_shutdown",
				                    json_string(opening));
				json_object_set(open, "time", json_object_get(j, "time"));
				put_json(b, &o, open, ++seq);
				if (*first_opening == 0)
					*first_opening = seq;
			}
			json_object_del(c, "alg");
			json_object_del(c, "sig");
			json_object_set_new(c, "signed", json_false());
			json_object_set_new(c, "why", json_string("sealed"));
		}
		put_json(b, &o, j, ++seq);
	}
	char *fixed = rechain(b, o, victim);
	free(b);
	*len = o;
	return fixed;
}

static void test_restarts_cannot_hide_stripped_signatures(void **state)
{
	(void)state;
	size_t victim = 30, len; /* a request after the first signed checkpoint (i == 20) */
	assert_memory_equal(strstr(fx.data + fx.off[victim], "\"type\":"), "\"type\":\"request\"",
	                    16);
	uint64_t at;
	/* Stripped alone: the first checkpoint after the rewrite is unsigned in an unsealed run. */
	char *log = stripped_behind_restarts(victim, NULL, &len, &at);
	hsm_audit_verify_report r = verify_buf(log, len, fx.pem);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_UNSIGNED);
	assert_non_null(strstr(r.detail, "checkpoint carries no signature"));
	free(log);
	/* Behind restarts after crashes: the victim's run signed, then "crashed"; a crash
	 * leaves a minute unsigned, which a later run's signature would cover, but none
	 * follows: the log's end is refused. */
	log = stripped_behind_restarts(victim, "unclean", &len, &at);
	r = verify_buf(log, len, fx.pem);
	expect_bad(r, HSM_AUDIT_UNSIGNED, t_count_lines(log));
	assert_non_null(strstr(r.detail, "hsmd restarted after it"));
	free(log);
	/* The same from the start of the victim's run, before it signed: refused at the
	 * first restart, as no run that signed nothing answers such requests. */
	log = stripped_behind_restarts(1, "unclean", &len, &at);
	r = verify_buf(log, len, fx.pem);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_UNSIGNED);
	free(log);
	/* Behind clean restarts: no shutdown checkpoint came before them. */
	log = stripped_behind_restarts(victim, "clean", &len, &at);
	r = verify_buf(log, len, fx.pem);
	expect_bad(r, HSM_AUDIT_MODIFIED, at);
	assert_non_null(strstr(r.detail, "shut down cleanly"));
	free(log);
}

static void test_a_restart_says_how_the_run_before_it_ended(void **state)
{
	(void)state;
	size_t len, last = fx.n_lines - 1;
	uint64_t seq = (uint64_t)fx.n_lines;
	/* After fx's shutdown checkpoint, a clean restart and an unsigned shutdown: a
	 * sealed run, as hsmd writes it. */
	char *clean[2] = {forged_line(0, seq + 1, NULL, 0, false),
	                  forged_line(last, seq + 2, "shutdown", 1, false)};
	char *log = with_tail(0, clean, 2, &len);
	hsm_audit_verify_report r = verify_buf(log, len, fx.pem);
	if (!r.valid)
		print_message("%s\n", r.detail);
	assert_true(r.valid);
	free(log);
	/* A restart that says no record came before it, chained to one. */
	json_t *j = fx_json(0);
	assert_non_null(json_object_get(json_object_get(j, "extra"), "previous_shutdown"));
	char *none = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(j);
	char *tail[2] = {none, forged_line(last, seq + 2, "shutdown", 1, false)};
	json_t *k = json_loads(tail[0], 0, NULL);
	json_object_set_new(k, "seq", json_integer((json_int_t)(seq + 1)));
	free(tail[0]);
	tail[0] = json_dumps(k, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(k);
	log = with_tail(0, tail, 2, &len);
	r = verify_buf(log, len, NULL);
	expect_bad(r, HSM_AUDIT_MODIFIED, seq + 1);
	assert_non_null(strstr(r.detail, "no record came before it"));
	free(log);
}

/* fx, then a restart stating the unsigned tail it found (up to seq `stated`, head hex),
 * then an unsigned shutdown. */
static char *restart_stating(uint64_t stated, const char *head, size_t *len)
{
	uint64_t seq = (uint64_t)fx.n_lines;
	char *opening = forged_line(0, seq + 1, NULL, 0, false);
	json_t *j = json_loads(opening, 0, NULL);
	assert_non_null(j);
	free(opening);
	json_t *extra = json_object_get(j, "extra");
	char text[24];
	snprintf(text, sizeof(text), "%llu", (unsigned long long)stated);
	assert_int_equal(json_object_set_new(extra, "unsigned_first_seq", json_string("1")), 0);
	assert_int_equal(json_object_set_new(extra, "unsigned_last_seq", json_string(text)), 0);
	assert_int_equal(json_object_set_new(extra, "unsigned_head", json_string(head)), 0);
	char *tail[2] = {json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER),
	                 forged_line(fx.n_lines - 1, seq + 2, "shutdown", 1, false)};
	json_decref(j);
	return with_tail(0, tail, 2, len);
}

/*
 * A restart's AuditLogOpened names the unsigned records it found at the end
 * of the trail, by the last one's seq and hash: a statement that does not
 * match the record before it is a rewrite.
 */
static void test_a_restart_must_name_the_unsigned_tail_it_found(void **state)
{
	(void)state;
	uint64_t seq = (uint64_t)fx.n_lines; /* fx's last record: its signed shutdown checkpoint */
	/* The hash of that record, as the restart chains to it. */
	size_t len;
	char head[65];
	memset(head, '0', 64);
	head[64] = '\0';
	char *log = restart_stating(seq, head, &len);
	const char *at = line_at(log, fx.n_lines);
	json_t *opening = json_loadb(at, len - (size_t)(at - log), JSON_DISABLE_EOF_CHECK, NULL);
	assert_non_null(opening);
	snprintf(head, sizeof(head), "%s", json_string_value(json_object_get(opening, "prev")));
	assert_int_equal(strlen(head), 64);
	json_decref(opening);
	free(log);

	log = restart_stating(seq, head, &len);
	hsm_audit_verify_report r = verify_buf(log, len, NULL);
	if (!r.valid)
		print_message("the true statement: %s\n", r.detail);
	assert_true(r.valid);
	free(log);

	static const struct {
		bool earlier; /* another record, or the right seq with another hash */
	} cases[] = {{true}, {false}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t stated = cases[i].earlier ? seq - 1 : seq;
		char other[65];
		snprintf(other, sizeof(other), "%s", head);
		if (!cases[i].earlier)
			other[0] = other[0] == 'a' ? 'b' : 'a';
		log = restart_stating(stated, other, &len);
		r = verify_buf(log, len, NULL);
		expect_bad(r, HSM_AUDIT_MODIFIED, seq + 1);
		char says[64];
		snprintf(says, sizeof(says), "unsigned records up to seq %llu", (unsigned long long)stated);
		assert_non_null(strstr(r.detail, says));
		free(log);
	}
}

/* fx with its last line (the signed shutdown checkpoint) replaced by `last`. */
static char *with_last_line(const char *last, size_t *len)
{
	size_t keep = fx.off[fx.n_lines - 1];
	char *b = malloc(keep + strlen(last) + 2);
	assert_non_null(b);
	memcpy(b, fx.data, keep);
	*len = keep + (size_t)sprintf(b + keep, "%s\n", last);
	return b;
}

static void test_the_last_checkpoint_holds_only_what_hsmd_writes(void **state)
{
	(void)state;
	size_t last = fx.n_lines - 1, len;
	uint64_t line = fx.n_lines;
	char text[4096];
	size_t n = fx.off[last + 1] - fx.off[last] - 1;
	memcpy(text, fx.data + fx.off[last], n);
	text[n] = '\0';
	assert_non_null(strstr(text, "\"reason\":\"shutdown\""));
	/* No later record chains it, and its signature covers node, seq, time, reason,
	 * kept_from and prev: every other byte must be hsmd's. */
	static const char *const edits[][2] = {
	    {"\"type\":\"checkpoint\"", "\"type\":\"checkpoint\",\"op\":\"Decrypt\""},
	    {"\"signed\":true", "\"extra\":1,\"signed\":true"},
	    {"{\"seq\"", "{ \"seq\""},
	};
	for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		char edited[4200];
		const char *at = strstr(text, edits[i][0]);
		assert_non_null(at);
		snprintf(edited, sizeof(edited), "%.*s%s%s", (int)(at - text), text, edits[i][1],
		         at + strlen(edits[i][0]));
		char *log = with_last_line(edited, &len);
		hsm_audit_verify_report r = verify_buf(log, len, fx.pem);
		expect_bad(r, HSM_AUDIT_MODIFIED, line);
		assert_non_null(strstr(r.detail, "not what hsmd writes"));
		free(log);
	}
	/* A format this verifier does not know. */
	char newer[4200];
	const char *at = strstr(text, CK_MARKER);
	assert_non_null(at);
	snprintf(newer, sizeof(newer), "%.*s,\"trail_format\":%u,%s", (int)(at - text), text,
	         AUDIT_TRAIL_FORMAT + 1, at + strlen(CK_MARKER));
	char *log = with_last_line(newer, &len);
	hsm_audit_verify_report r = verify_buf(log, len, fx.pem);
	expect_bad(r, HSM_AUDIT_MODIFIED, line);
	assert_non_null(strstr(r.detail, "newer than the"));
	free(log);
	/* Unedited, it verifies. */
	log = with_last_line(text, &len);
	r = verify_buf(log, len, fx.pem);
	assert_true(r.valid);
	free(log);
}

/* A run of the real writer on dir: n requests of op from source, then close. */
static void run_on(const char *dir, bool signer, const char *op, const char *source, unsigned n)
{
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	if (signer)
		hsm_audit_set_signer(a, t_sign, &fx.signer);
	for (unsigned i = 0; i < n; i++) {
		hsm_audit_record rec = t_record(i + 1);
		rec.operation = op;
		rec.source = source;
		rec.outcome = HSM_AUDIT_SUCCESS;
		rec.error = NULL;
		assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	}
	hsm_audit_close(a);
}

static void test_sealed_runs_between_signed_ones(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-sealed-runs");
	run_on(dir, true, "Encrypt", "10.0.0.7:51234", 5);
	/* hsmctl without shares lists users with nothing unsealed: no signature owed. */
	run_on(dir, false, "ListUsers", "hsmctl", 1);
	run_on(dir, false, "Status", "10.0.0.7:51234", 2);
	run_on(dir, true, "Encrypt", "10.0.0.7:51234", 5);
	hsm_audit_verify_report r = t_verify_dir(dir, fx.pem, false);
	if (!r.valid)
		print_message("%s\n", r.detail);
	assert_true(r.valid);
	/* A run that answered Encrypt and signed nothing, then a restart: not hsmd's. */
	run_on(dir, false, "Encrypt", "10.0.0.7:51234", 1);
	run_on(dir, true, "Encrypt", "10.0.0.7:51234", 1);
	r = t_verify_dir(dir, fx.pem, false);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_UNSIGNED);
	assert_non_null(strstr(r.detail, "says hsmd restarted"));
	t_rm_rf(dir);
}

static atomic_llong fake_now;
static int64_t fake_clock(void *arg)
{
	(void)arg;
	return atomic_load(&fake_now);
}

#define DAY_MS (86400LL * 1000)

/* Waits (up to 10 s) for the retention pass asked for by the last rotation to end. */
static void wait_retention(hsm_audit *a)
{
	hsm_audit_stats st;
	for (int i = 0; i < 1000; i++) {
		hsm_audit_get_stats(a, &st);
		if (!st.retention_running)
			return;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	fail_msg("the retention pass did not end");
}

/*
 * One run of the current hsmd over years: a file written 3000 days ago, then
 * one begun then and continued now (the clock's step writes an interval
 * checkpoint, its first), whose rotation lets retention delete the first
 * file, with the run's AuditLogOpened.  If seal_unsigned, the second file's
 * requests end with a Seal request after which the signer is cleared without
 * a seal checkpoint (what an older hsmd did), so that checkpoint is unsigned.
 * Returns the 1-based line of the first checkpoint in the first file left.
 */
static uint64_t write_run_cut_by_retention(const char *dir, bool seal_unsigned)
{
	int64_t now = hsm_now_ms();
	hsm_audit_config c = t_config(dir);
	c.clock_ms = fake_clock;
	c.checkpoint_interval_ms = 3600 * 1000;
	c.rotate_age_ms = (uint64_t)200000 * DAY_MS;
	atomic_store(&fake_now, now - 3000 * DAY_MS);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	for (unsigned i = 0; i < 10; i++) {
		hsm_audit_record rec = t_record(i);
		assert_true(hsm_ok(hsm_audit_append(a, &rec)));
		if (i == 4) {
			assert_true(hsm_ok(hsm_audit_rotate(a)));
			wait_retention(a);
		}
	}
	if (seal_unsigned) {
		hsm_audit_record seal = {.type = HSM_AUDIT_REQUEST, .principal = "ops",
		                         .operation = "Seal", .outcome = HSM_AUDIT_SUCCESS,
		                         .request_id = "seal-1", .latency_us = 5000};
		assert_true(hsm_ok(hsm_audit_append(a, &seal)));
		hsm_audit_set_signer(a, NULL, NULL);
	}
	atomic_store(&fake_now, now);
	hsm_audit_record rec = t_record(10);
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	hsm_audit_set_signer(a, t_sign, &fx.signer);
	assert_true(hsm_ok(hsm_audit_rotate(a))); /* the first file is 3000 days old: deleted */
	wait_retention(a);
	rec = t_record(11);
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a))); /* the deletion's record is written by now */
	hsm_audit_close(a);
	/* The log left starts inside the run: no AuditLogOpened, and requests first. */
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 2);
	char *first = t_slurp(paths[0], NULL);
	assert_null(strstr(first, "AuditLogOpened"));
	assert_non_null(strstr(first, "\"op\":\"Encrypt\""));
	assert_true(strstr(first, "\"op\":\"Encrypt\"") < strstr(first, "\"type\":\"checkpoint\""));
	uint64_t line = (uint64_t)line_with(first, "\"type\":\"checkpoint\"", 0) + 1;
	free(first);
	return line;
}

/*
 * A trail whose oldest files retention removed starts inside a run, before
 * any AuditLogOpened.  Its first checkpoint declares the format for the run
 * it belongs to, records before it included: VALID with the key, and no
 * record is said to be an older hsmd's (older_format_through 0).
 */
static void test_trail_cut_by_retention_is_not_taken_for_an_older_hsmds(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-cut");
	(void)write_run_cut_by_retention(dir, false);
	hsm_audit_verify_report r = t_verify_dir(dir, fx.pem, false);
	assert_true(r.valid);
	assert_true(r.first_seq > 1);
	assert_int_equal(r.kept_from, r.first_seq);
	assert_int_equal(r.older_format_through, 0);
	assert_int_equal(r.checkpoints_unsigned, 0);
	assert_int_equal(r.last_verified_seq, r.last_seq);
	t_rm_rf(dir);
}

/*
 * The records before the first checkpoint of such a trail are that
 * checkpoint's run's, held to the rules it declares: a Seal request there
 * does not end the signing as an older hsmd's did, so an unsigned checkpoint
 * after it is refused with the key.
 */
static void test_trail_cut_by_retention_gets_no_older_leniency(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-cut-seal");
	uint64_t ck = write_run_cut_by_retention(dir, true);
	hsm_audit_verify_report r = t_verify_dir(dir, fx.pem, false);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_UNSIGNED);
	assert_int_equal(r.line, ck);
	assert_non_null(strstr(r.file, "audit-"));
	assert_null(strstr(r.detail, "older"));
	assert_true(t_verify_dir(dir, NULL, false).valid);
	t_rm_rf(dir);
}

/* ---- Losses of the live file the node recorded ----------------------------- */

/* This node's AuditRecordsLost naming lo..hi, made from one of fx's records, with seq. */
static void put_lost(char *b, size_t *o, uint64_t seq, uint64_t lo, uint64_t hi)
{
	json_t *j = fx_json(record_line());
	json_t *prev = json_incref(json_object_get(j, "prev"));
	char f[24], l[24];
	snprintf(f, sizeof(f), "%llu", (unsigned long long)lo);
	snprintf(l, sizeof(l), "%llu", (unsigned long long)hi);
	assert_int_equal(json_object_del(j, "prev"), 0);
	json_object_set_new(j, "type", json_string("event"));
	json_object_set_new(j, "op", json_string("AuditRecordsLost"));
	json_object_set_new(j, "outcome", json_string("error"));
	json_object_set_new(j, "extra", json_pack("{s:s,s:s}", "first_seq", f, "last_seq", l));
	json_object_set_new(j, "prev", prev); /* last, as hsmd writes it (rechain) */
	put_json(b, o, j, seq);
}

/*
 * fx's lines from..to-1 (seq from+1 to to), the first chained to the record
 * before it in fx (so to nothing here), as hsmd writes a new file after its
 * live file was lost: the line at index from+lost (0: none) made this node's
 * AuditRecordsLost naming lo..hi, and those at from+rot[0] and from+rot[1]
 * (0: none) rotation checkpoints; chained on from the first line changed.
 */
static char *loss_stretch(size_t from, size_t to, size_t lost, uint64_t lo, uint64_t hi,
                          const size_t rot[2], size_t *len)
{
	static const size_t none[2] = {0, 0};
	rot = rot != NULL ? rot : none;
	char *b = malloc(fx.len * 2 + 1);
	assert_non_null(b);
	size_t o = 0, first = 0;
	for (size_t i = from; i < to; i++) {
		size_t k = i - from;
		if (k != 0 && (k == lost || k == rot[0] || k == rot[1]) && first == 0)
			first = k;
		if (lost != 0 && k == lost) {
			put_lost(b, &o, i + 1, lo, hi);
		} else if (k != 0 && (k == rot[0] || k == rot[1])) {
			char *l = forged_line(nth_line_with("\"type\":\"checkpoint\"", 1), i + 1, "rotate",
			                      1, false);
			o += (size_t)sprintf(b + o, "%s\n", l);
			free(l);
		} else {
			memcpy(b + o, fx.data + fx.off[i], fx.off[i + 1] - fx.off[i]);
			o += fx.off[i + 1] - fx.off[i];
		}
	}
	char *fixed = rechain(b, o, first != 0 ? first : to - from);
	free(b);
	*len = o;
	return fixed;
}

/* The byte offset of line i (0-based) of s. */
static size_t line_off(const char *s, size_t i)
{
	return (size_t)(line_at((char *)s, i) - s);
}

/* Verifies n files (names by their first seq), the log's end open (a live trail). */
static hsm_audit_verify_report verify_files_open(const char *const *names, const char *const *p,
                                                 const size_t *lens, size_t n)
{
	const uint8_t *data[4];
	assert_true(n <= 4);
	for (size_t i = 0; i < n; i++)
		data[i] = (const uint8_t *)p[i];
	hsm_audit_verify_options o = {.allow_open_tail = true};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, n, &o, &r)));
	return r;
}

static void expect_recorded_loss(hsm_audit_verify_report r, uint64_t lo, uint64_t hi,
                                 uint64_t lost_seq, uint64_t records)
{
	char want[128];
	snprintf(want, sizeof(want), "deleted: records %llu to %llu are missing: hsmd lost them",
	         (unsigned long long)lo, (unsigned long long)hi);
	if (r.valid || r.problem != HSM_AUDIT_DELETED || strstr(r.detail, want) == NULL)
		print_message("expected the recorded loss of %llu to %llu, got %s: %s\n",
		              (unsigned long long)lo, (unsigned long long)hi,
		              hsm_audit_problem_name(r.problem), r.detail);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_DELETED);
	assert_non_null(strstr(r.detail, want));
	assert_int_equal(r.lost_first, lo);
	assert_int_equal(r.lost_last, hi);
	assert_int_equal(r.lost_seq, lost_seq);
	assert_false(r.lost_present);
	assert_int_equal(r.records, records); /* every record after the gap verified too */
	assert_int_equal(r.line, 1);          /* at the new file's first record */
}

/*
 * The live file cut back to seq 100 while seq 151 to 250 were not yet
 * synced: hsmd writes those 100 records into the new file first, and only
 * then the AuditRecordsLost (seq 251) naming 101 to 150, far more records
 * into the file than the rules look ahead.  It is still the node's recorded
 * loss; named wrongly, or not at all, the cut file is truncated.
 */
static void test_loss_recorded_after_many_rewritten_records(void **state)
{
	(void)state;
	const char *names[2] = {NAME, "audit-00000000000000000151.jsonl"};
	size_t n2 = 0;
	char *f2 = loss_stretch(150, 600, 100, 101, 150, NULL, &n2);
	const char *p[2] = {fx.data, f2};
	size_t lens[2] = {fx.off[100], n2};
	expect_recorded_loss(verify_files_open(names, p, lens, 2), 101, 150, 251, 100 + 450);
	free(f2);

	/* Another range named, or none: the usual verdict at the cut file's end. */
	for (int named = 0; named < 2; named++) {
		f2 = loss_stretch(150, 600, named ? 100 : 0, 101, 149, NULL, &n2);
		p[1] = f2;
		lens[1] = n2;
		hsm_audit_verify_report r = verify_files_open(names, p, lens, 2);
		assert_false(r.valid);
		assert_int_equal(r.problem, HSM_AUDIT_TRUNCATED);
		assert_int_equal(r.seq, 100);
		assert_int_equal(r.records, 100);
		assert_int_equal(r.lost_seq, 0);
		free(f2);
	}
}

/*
 * The records not yet synced ended with a rotation checkpoint: hsmd writes
 * them into a new file (seq 151 to 250, the rotation checkpoint last), opens
 * the next and records the loss there first (seq 251).  An AuditRecordsLost
 * in a later file than that is no longer this gap's.
 */
static void test_loss_recorded_in_the_file_after_a_rotation(void **state)
{
	(void)state;
	const char *names[3] = {NAME, "audit-00000000000000000151.jsonl",
	                        "audit-00000000000000000251.jsonl"};
	size_t n = 0;
	static const size_t rot[2] = {99, 0};
	char *s = loss_stretch(150, 600, 100, 101, 150, rot, &n);
	size_t cut = line_off(s, 100);
	const char *p[4] = {fx.data, s, s + cut, NULL};
	size_t lens[4] = {fx.off[100], cut, n - cut, 0};
	expect_recorded_loss(verify_files_open(names, p, lens, 3), 101, 150, 251, 100 + 450);
	free(s);

	/* Two files on (rotations at seq 200 and 250): the cut file is truncated. */
	const char *names4[4] = {NAME, "audit-00000000000000000151.jsonl",
	                         "audit-00000000000000000201.jsonl",
	                         "audit-00000000000000000251.jsonl"};
	static const size_t rot2[2] = {49, 99};
	s = loss_stretch(150, 600, 100, 101, 150, rot2, &n);
	size_t c1 = line_off(s, 50), c2 = line_off(s, 100);
	p[1] = s, p[2] = s + c1, p[3] = s + c2;
	lens[1] = c1, lens[2] = c2 - c1, lens[3] = n - c2;
	hsm_audit_verify_report r = verify_files_open(names4, p, lens, 4);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_TRUNCATED);
	assert_int_equal(r.seq, 100);
	assert_int_equal(r.lost_seq, 0);
	free(s);
}

/*
 * hsmd appends only to the newest file: an incomplete line at the end of an
 * earlier one is a cut there, not a crash's torn write, even when the next
 * file goes on with the whole record.
 */
static void test_a_torn_line_before_the_last_file_is_reported(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-torn-early");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	for (unsigned i = 0; i < 60; i++) {
		hsm_audit_record rec = t_record(i);
		assert_true(hsm_ok(hsm_audit_append(a, &rec)));
		if (i == 29)
			assert_true(hsm_ok(hsm_audit_rotate(a)));
	}
	hsm_audit_close(a);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 2);
	size_t lens[2];
	char *text[2] = {t_slurp(paths[0], &lens[0]), t_slurp(paths[1], &lens[1])};
	const char *names[2] = {hsm_path_base(paths[0]), hsm_path_base(paths[1])};
	const uint8_t *data[2] = {(const uint8_t *)text[0], (const uint8_t *)text[1]};
	hsm_audit_verify_options o = {0};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 2, &o, &r)));
	if (!r.valid)
		print_message("the rotated trail: %s\n", r.detail);
	assert_true(r.valid);

	/* The first file ends with the first ten bytes of the second's first line. */
	size_t whole = lens[0];
	char *cut = malloc(whole + 10);
	assert_non_null(cut);
	memcpy(cut, text[0], whole);
	memcpy(cut + whole, text[1], 10);
	data[0] = (const uint8_t *)cut;
	lens[0] = whole + 10;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 2, &o, &r)));
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_TORN);
	assert_string_equal(r.file, names[0]);
	assert_non_null(strstr(r.detail, "later files follow it"));
	/* The same ten bytes at the end of the last file are a crash's torn write. */
	data[0] = (const uint8_t *)text[0];
	lens[0] = whole;
	char *last = malloc(lens[1] + 10);
	assert_non_null(last);
	memcpy(last, text[1], lens[1]);
	memcpy(last + lens[1], text[1], 10);
	data[1] = (const uint8_t *)last;
	lens[1] += 10;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 2, &o, &r)));
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_TORN);
	assert_string_equal(r.file, names[1]);
	assert_null(strstr(r.detail, "later files follow it"));
	/* Of a live trail (--live), a write in progress: left out, the rest valid. */
	hsm_audit_verify_options live = {.allow_open_tail = true};
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 2, &live, &r)));
	assert_true(r.valid);
	assert_int_equal(r.in_progress_bytes, 10);
	/* But only at the end of the newest file: hsmd never writes into an older one. */
	data[0] = (const uint8_t *)cut;
	lens[0] = whole + 10;
	assert_true(hsm_ok(hsm_audit_verify_memory(names, data, lens, 2, &live, &r)));
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_TORN);
	assert_non_null(strstr(r.detail, "later files follow it"));
	free(last);
	free(cut);
	free(text[0]);
	free(text[1]);
	t_rm_rf(dir);
}

/* Two losses the node recorded: the verdict names both ranges. */
static void test_every_recorded_loss_is_named(void **state)
{
	(void)state;
	const char *names[3] = {NAME, "audit-00000000000000000151.jsonl",
	                        "audit-00000000000000000451.jsonl"};
	size_t n2 = 0, n3 = 0;
	char *f2 = loss_stretch(150, 400, 10, 101, 150, NULL, &n2);
	char *f3 = loss_stretch(450, 700, 10, 401, 450, NULL, &n3);
	const char *p[3] = {fx.data, f2, f3};
	size_t lens[3] = {fx.off[100], n2, n3};
	hsm_audit_verify_report r = verify_files_open(names, p, lens, 3);
	expect_recorded_loss(r, 101, 150, 161, 100 + 250 + 250);
	assert_non_null(strstr(r.detail, "records 401 to 450 (AuditRecordsLost, seq 461)"));
	/* The report holds both too, for the summary's notes. */
	assert_int_equal(r.n_lost, 2);
	assert_int_equal(r.lost[0].first, 101);
	assert_int_equal(r.lost[0].last, 150);
	assert_int_equal(r.lost[0].seq, 161);
	assert_int_equal(r.lost[1].first, 401);
	assert_int_equal(r.lost[1].last, 450);
	assert_int_equal(r.lost[1].seq, 461);
	assert_false(r.lost[0].present || r.lost[1].present);
	free(f2);
	free(f3);
}

/* ---- A live file replaced by a copy of itself, put back --------------------- */

static const char *const AGAIN_NAME = "audit-00000000000000000121.jsonl";

/* The copy put back: fx's records 1 to `last`, ending without a rotation checkpoint. */
static size_t put_back_len(uint64_t last)
{
	return fx.off[last];
}

/*
 * The next file as hsmd writes it when its live file (records 1 to 150) was
 * replaced by a copy of itself while records 121 to 150 waited for their
 * fsync: those again, byte for byte, then its AuditRecordsLost (seq 151)
 * naming lo..hi (lost 0: none), then the records after, rechained.
 */
static char *written_again(uint64_t lo, uint64_t hi, size_t lost, size_t *len)
{
	return loss_stretch(120, 600, lost, lo, hi, NULL, len);
}

static hsm_audit_verify_report verify_again(const char *a, size_t a_len, const char *name,
                                            const char *b, size_t b_len)
{
	const char *names[2] = {NAME, name};
	const char *p[2] = {a, b};
	size_t lens[2] = {a_len, b_len};
	return verify_files_open(names, p, lens, 2);
}

/* The verdict without records written again: the copy put back ends without its rotation
 * checkpoint, at seq `last`, and nothing after it was read. */
static void expect_copy_truncated(hsm_audit_verify_report r, uint64_t last)
{
	if (r.valid || r.problem != HSM_AUDIT_TRUNCATED || r.seq != last)
		print_message("expected the copy truncated at %llu, got %s at seq %llu: %s\n",
		              (unsigned long long)last, hsm_audit_problem_name(r.problem),
		              (unsigned long long)r.seq, r.detail);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_TRUNCATED);
	assert_int_equal(r.seq, last);
	assert_string_equal(r.file, NAME);
	assert_int_equal(r.records, last);
	assert_int_equal(r.lost_seq, 0);
}

/*
 * The copy put back holds records 121 to 150, which the next file begins
 * with too (hsmd wrote them again, not knowing the copy would stay): each is
 * read once, the loss noted as put back, and the records after verified.
 * However many (here also 21 to 150, more than the rules look ahead).
 */
static void test_records_written_again_after_a_copy_put_back_are_read_once(void **state)
{
	(void)state;
	size_t n = 0;
	char *b = written_again(1, 120, 30, &n);
	hsm_audit_verify_report r = verify_again(fx.data, put_back_len(150), AGAIN_NAME, b, n);
	if (!r.valid)
		print_message("records written again: %s\n", r.detail);
	assert_true(r.valid);
	assert_int_equal(r.records, 600);
	assert_int_equal(r.first_seq, 1);
	assert_int_equal(r.last_seq, 600);
	assert_int_equal(r.n_lost, 1);
	assert_int_equal(r.lost[0].first, 1);
	assert_int_equal(r.lost[0].last, 120);
	assert_int_equal(r.lost[0].seq, 151);
	assert_true(r.lost[0].present && r.lost_present);
	assert_int_equal(r.lost[0].again_first, 121);
	assert_int_equal(r.lost[0].again_last, 150);
	free(b);

	b = loss_stretch(20, 600, 130, 1, 20, NULL, &n);
	r = verify_again(fx.data, put_back_len(150), "audit-00000000000000000021.jsonl", b, n);
	assert_true(r.valid);
	assert_int_equal(r.records, 600);
	assert_int_equal(r.lost[0].again_first, 21);
	assert_int_equal(r.lost[0].again_last, 150);
	free(b);
}

/* Line i (0-based) of s removed; *len less its bytes. */
static void drop_line(char *s, size_t *len, size_t i)
{
	size_t from = line_off(s, i), to = line_off(s, i + 1);
	memmove(s + from, s + to, *len - to);
	*len -= to - from;
}

/*
 * Only records that repeat the copy's last ones byte for byte, up to its
 * end, in a file that follows one ending without its rotation checkpoint,
 * and followed by the node's record of the loss, are read once.  Whatever
 * else comes is judged as before: the copy ends truncated (or the repeat is
 * a second copy of a record), so nothing can be altered, dropped, reordered
 * or hidden behind records written again.
 */
static void test_records_written_again_are_judged_as_before_otherwise(void **state)
{
	(void)state;
	size_t n = 0, a_len = put_back_len(150);
	char *b = written_again(1, 120, 30, &n);

	/* A byte changed in a record written again (the rest rechained): it is no repeat. */
	for (size_t i = 0; i < 2; i++) {
		size_t at = i == 0 ? 14 : 29; /* seq 135; the last, seq 150 */
		char *c = malloc(n + 1);
		assert_non_null(c);
		memcpy(c, b, n);
		char *id = strstr(line_at(c, at), "req-");
		assert_non_null(id);
		id[3] = 'Q';
		char *fixed = rechain(c, n, at + 1);
		expect_copy_truncated(verify_again(fx.data, a_len, AGAIN_NAME, fixed, n), 150);
		free(fixed);
		free(c);
	}
	/* A record left out of them (seq 135): the rest no longer chain. */
	char *c = malloc(n + 1);
	assert_non_null(c);
	memcpy(c, b, n);
	size_t c_len = n;
	drop_line(c, &c_len, 14);
	expect_copy_truncated(verify_again(fx.data, a_len, AGAIN_NAME, c, c_len), 150);
	free(c);

	/* They stop short of the copy's end (its 151 to 160 are not the next file's). */
	expect_copy_truncated(verify_again(fx.data, put_back_len(160), AGAIN_NAME, b, n), 160);
	/* The next file ends among them (a live trail read while hsmd writes them). */
	expect_copy_truncated(verify_again(fx.data, a_len, AGAIN_NAME, b, line_off(b, 20)), 150);
	/* Its name says it begins elsewhere. */
	expect_copy_truncated(verify_again(fx.data, a_len, "audit-00000000000000000151.jsonl", b, n),
	                      150);

	/* The record after them does not chain to the last. */
	c = malloc(n + 1);
	assert_non_null(c);
	memcpy(c, b, n);
	char *prev = strstr(line_at(c, 30), "\"prev\":\"");
	assert_non_null(prev);
	prev[8] = prev[8] == '0' ? '1' : '0';
	expect_copy_truncated(verify_again(fx.data, a_len, AGAIN_NAME, c, n), 150);
	free(c);

	/* No AuditRecordsLost, or one naming another range than the records before them. */
	free(b);
	for (int named = 0; named < 3; named++) {
		uint64_t hi = named == 2 ? 150 : 119;
		b = written_again(1, hi, named ? 30 : 0, &n);
		expect_copy_truncated(verify_again(fx.data, a_len, AGAIN_NAME, b, n), 150);
		free(b);
	}

	/* The same records in one file: a second copy, as ever. */
	b = written_again(1, 120, 30, &n);
	char *one = malloc(a_len + n + 1);
	assert_non_null(one);
	memcpy(one, fx.data, a_len);
	memcpy(one + a_len, b, n);
	hsm_audit_verify_report r = verify_again(one, a_len + n, AGAIN_NAME, "", 0);
	expect_bad(r, HSM_AUDIT_INSERTED, 151);
	assert_string_equal(r.file, NAME);
	free(one);
	free(b);

	/* After a rotation checkpoint: the file was closed, not lost (seq 150, rotate). */
	static const size_t rot[2] = {149, 0};
	char *s = loss_stretch(0, 600, 150, 1, 120, rot, &n);
	size_t end = line_off(s, 150), start = line_off(s, 120);
	r = verify_again(s, end, AGAIN_NAME, s + start, n - start);
	expect_bad(r, HSM_AUDIT_INSERTED, 1);
	assert_string_equal(r.file, AGAIN_NAME);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_intact_log_verifies),
	    cmocka_unit_test(test_every_single_byte_change_detected),
	    cmocka_unit_test(test_signature_byte_changes_detected_with_key),
	    cmocka_unit_test(test_deletions_detected),
	    cmocka_unit_test(test_insertions_detected),
	    cmocka_unit_test(test_forged_inserted_record_detected),
	    cmocka_unit_test(test_reorders_detected),
	    cmocka_unit_test(test_truncations_detected),
	    cmocka_unit_test(test_checkpoint_signatures),
	    cmocka_unit_test(test_kept_from_is_signed_and_rises_only_at_retention),
	    cmocka_unit_test(test_a_start_past_seq_1_needs_a_retention_checkpoint),
	    cmocka_unit_test(test_unsigned_retention_does_not_raise_the_floor),
	    cmocka_unit_test(test_restarts_cannot_hide_stripped_signatures),
	    cmocka_unit_test(test_a_restart_says_how_the_run_before_it_ended),
	    cmocka_unit_test(test_the_last_checkpoint_holds_only_what_hsmd_writes),
	    cmocka_unit_test(test_sealed_runs_between_signed_ones),
	    cmocka_unit_test(test_sealed_checkpoints_unsigned_then_covered),
	    cmocka_unit_test(test_signatures_cannot_be_stripped),
	    cmocka_unit_test(test_trail_begun_by_older_hsmd_verifies),
	    cmocka_unit_test(test_older_format_cannot_be_forged),
	    cmocka_unit_test(test_current_run_gets_no_older_leniency),
	    cmocka_unit_test(test_checkpoint_declaring_a_lower_format_is_refused),
	    cmocka_unit_test(test_trail_cut_by_retention_is_not_taken_for_an_older_hsmds),
	    cmocka_unit_test(test_trail_cut_by_retention_gets_no_older_leniency),
	    cmocka_unit_test(test_loss_recorded_after_many_rewritten_records),
	    cmocka_unit_test(test_loss_recorded_in_the_file_after_a_rotation),
	    cmocka_unit_test(test_every_recorded_loss_is_named),
	    cmocka_unit_test(test_a_torn_line_before_the_last_file_is_reported),
	    cmocka_unit_test(test_a_restart_must_name_the_unsigned_tail_it_found),
	    cmocka_unit_test(test_records_written_again_after_a_copy_put_back_are_read_once),
	    cmocka_unit_test(test_records_written_again_are_judged_as_before_otherwise),
	};
	return cmocka_run_group_tests(tests, build_log, free_log);
}
