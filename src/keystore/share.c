#include "keystore/share.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/encoding.h"
#include "crypto/crypto.h"
#include "crypto/shamir.h"

#define SHARE_MAGIC "hsmd-share"
#define SHARE_VERSION 1U

/* ---- Field rules shared by the encoder, the decoder and the creator ------ */

static bool custodian_char(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '@' || c == '-';
}

static bool custodian_ok(const uint8_t *p, size_t n)
{
	if (n < 1 || n > HSM_SHARE_CUSTODIAN_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!custodian_char(p[i]))
			return false;
	return true;
}

bool hsm_share_custodian_valid(const char *name)
{
	HSM_ASSERT(name != NULL);
	return custodian_ok((const uint8_t *)name, strnlen(name, HSM_SHARE_CUSTODIAN_MAX + 1));
}

hsm_result hsm_share_set_id_new(uint8_t out[HSM_SHARE_SET_ID_LEN])
{
	HSM_ENSURE(RAND_bytes(out, HSM_SHARE_SET_ID_LEN) == 1, HSM_ERR_CRYPTO,
	           "random generator failed");
	return HSM_SUCCESS;
}

/* Rules between fields, checked on encode and after a decode; err says whose fault. */
static hsm_result check_share(const hsm_share *s, hsm_err err)
{
	HSM_ENSURE(hsm_is_uuid(s->store_id), err, "store: not a lowercase UUID");
	HSM_ENSURE(s->count >= 1 && s->count <= HSM_SHAMIR_MAX_SHARES, err,
	           "count: must be from 1 to %u", HSM_SHAMIR_MAX_SHARES);
	HSM_ENSURE(s->threshold >= 1 && s->threshold <= s->count, err,
	           "threshold: %u is not between 1 and the count, %u", s->threshold, s->count);
	/* Threshold 1 exists only as the 1-of-1 split of a dev store. */
	HSM_ENSURE(s->threshold >= 2 || s->count == 1, err,
	           "threshold: 1 is allowed only in a 1-of-1 split");
	HSM_ENSURE(s->index >= 1 && s->index <= s->count, err,
	           "index: %u is not between 1 and the count, %u", s->index, s->count);
	HSM_ENSURE(s->custodian[0] == '\0' || hsm_share_custodian_valid(s->custodian), err,
	           "custodian: must be 1 to %d of A-Z a-z 0-9 . _ @ -", HSM_SHARE_CUSTODIAN_MAX);
	HSM_ENSURE(s->value != NULL && hsm_secret_len(s->value) == HSM_SHARE_VALUE_LEN, err,
	           "value: a share is %d bytes", HSM_SHARE_VALUE_LEN);
	return HSM_SUCCESS;
}

/* The first HSM_SHARE_CHECK_LEN bytes of SHA-256(p[0..n)). */
static hsm_result checksum(const uint8_t *p, size_t n, uint8_t out[HSM_SHARE_CHECK_LEN])
{
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned md_len = 0;
	errno = 0;
	int ok = EVP_Digest(p, n, md, &md_len, EVP_sha256(), NULL);
	if (ok != 1 || md_len < HSM_SHARE_CHECK_LEN) {
		/* Short of memory, OpenSSL fails the digest: that is no fault of the share. */
		hsm_err e = hsm_nomem_or(HSM_ERR_CRYPTO);
		return HSM_FAIL(e, e == HSM_ERR_NOMEM ? "out of memory" : "SHA-256 failed");
	}
	memcpy(out, md, HSM_SHARE_CHECK_LEN);
	OPENSSL_cleanse(md, sizeof(md));
	return HSM_SUCCESS;
}

/* ---- Encoding ------------------------------------------------------------- */

static hsm_result put_hex_line(hsm_buf *out, const char *key, const uint8_t *p, size_t n)
{
	HSM_GUARD(hsm_buf_printf(out, "%s ", key));
	HSM_GUARD(hsm_hex_encode(out, p, n));
	return hsm_buf_put_u8(out, '\n');
}

static hsm_result encode_body(const hsm_share *s, hsm_buf *out)
{
	HSM_GUARD(hsm_buf_printf(out, SHARE_MAGIC " v%u\nstore %s\n", SHARE_VERSION, s->store_id));
	HSM_GUARD(put_hex_line(out, "set", s->set_id, HSM_SHARE_SET_ID_LEN));
	HSM_GUARD(hsm_buf_printf(out, "index %u\nthreshold %u\ncount %u\n", s->index, s->threshold,
	                         s->count));
	if (s->custodian[0] != '\0')
		HSM_GUARD(hsm_buf_printf(out, "custodian %s\n", s->custodian));
	return put_hex_line(out, "value", hsm_secret_bytes(s->value), HSM_SHARE_VALUE_LEN);
}

hsm_result hsm_share_encode(const hsm_share *s, hsm_buf *out)
{
	HSM_ASSERT(s != NULL && out != NULL && out->secure);
	HSM_GUARD(check_share(s, HSM_ERR_VALIDATION));
	hsm_result res = HSM_SUCCESS;
	size_t start = out->len;
	uint8_t check[HSM_SHARE_CHECK_LEN];
	HSM_TRY(encode_body(s, out));
	HSM_TRY(checksum(out->data + start, out->len - start, check));
	HSM_TRY(put_hex_line(out, "check", check, sizeof(check)));
out:
	if (hsm_failed(res) && out->data != NULL) {
		OPENSSL_cleanse(out->data + start, out->len - start);
		out->len = start;
	}
	return res;
}

/* ---- Decoding ------------------------------------------------------------- */

typedef struct line_reader {
	hsm_cursor c;
	unsigned line; /* number of the line read last, from 1 */
} line_reader;

typedef struct field {
	const uint8_t *p; /* the value after "key ", inside the caller's input */
	size_t n;
	size_t start; /* offset of the line's first byte in the file */
} field;

static bool bytes_are(const uint8_t *p, size_t n, const char *s)
{
	return n == strlen(s) && strncmp((const char *)p, s, n) == 0;
}

/*
 * Reads the next line, which must be "key value\n", into *f.  Messages name
 * the line and the field but never echo the input: it may hold the share.
 */
static hsm_result read_field(line_reader *r, const char *key, field *f)
{
	r->line++;
	size_t left = hsm_cursor_remaining(&r->c);
	HSM_ENSURE(left > 0, HSM_ERR_SHARE_INVALID,
	           "line %u: the file ends before the \"%s\" field (truncated?)", r->line, key);
	hsm_cursor peek = r->c;
	const uint8_t *rest;
	HSM_GUARD(hsm_cursor_get_bytes(&peek, left, &rest, HSM_ERR_SHARE_INVALID));
	const uint8_t *nl = memchr(rest, '\n', left);
	HSM_ENSURE(nl != NULL, HSM_ERR_SHARE_INVALID,
	           "line %u (%s): the file ends in the middle of a line (truncated?)", r->line, key);
	size_t len = (size_t)(nl - rest);
	size_t klen = strlen(key);
	HSM_ENSURE(len > klen && strncmp((const char *)rest, key, klen) == 0 && rest[klen] == ' ',
	           HSM_ERR_SHARE_INVALID, "line %u: expected the \"%s\" field", r->line, key);
	HSM_ENSURE(rest[len - 1] != '\r', HSM_ERR_SHARE_INVALID,
	           "line %u (%s): ends with a carriage return; share files use \\n line endings",
	           r->line, key);
	f->start = r->c.pos;
	f->p = rest + klen + 1;
	f->n = len - klen - 1;
	return hsm_cursor_get_bytes(&r->c, len + 1, &rest, HSM_ERR_SHARE_INVALID);
}

/* Whether the next line starts with "key " (for the optional custodian line). */
static bool next_is(const line_reader *r, const char *key)
{
	hsm_cursor peek = r->c;
	size_t klen = strlen(key);
	const uint8_t *p;
	if (hsm_failed(hsm_cursor_get_bytes(&peek, klen + 1, &p, HSM_ERR_SHARE_INVALID)))
		return false;
	return strncmp((const char *)p, key, klen) == 0 && p[klen] == ' ';
}

/* A decimal number from 1 to HSM_SHAMIR_MAX_SHARES, without leading zeros. */
static hsm_result parse_small(const line_reader *r, const char *key, const field *f, unsigned *out)
{
	unsigned v = 0;
	bool ok = f->n >= 1 && f->n <= 2 && f->p[0] != '0';
	for (size_t i = 0; ok && i < f->n; i++) {
		ok = f->p[i] >= '0' && f->p[i] <= '9';
		v = v * 10 + (unsigned)(f->p[i] - '0');
	}
	HSM_ENSURE(ok && v <= HSM_SHAMIR_MAX_SHARES, HSM_ERR_SHARE_INVALID,
	           "line %u (%s): expected a whole number from 1 to %u", r->line, key,
	           HSM_SHAMIR_MAX_SHARES);
	*out = v;
	return HSM_SUCCESS;
}

static hsm_result parse_hex(const line_reader *r, const char *key, const field *f, uint8_t *out,
                            size_t n)
{
	HSM_ENSURE(f->n == 2 * n && hsm_ok(hsm_hex_decode_exact(out, n, (const char *)f->p, f->n,
	                                                        HSM_ERR_SHARE_INVALID)),
	           HSM_ERR_SHARE_INVALID, "line %u (%s): expected %zu lowercase hex digits", r->line,
	           key, 2 * n);
	return HSM_SUCCESS;
}

static hsm_result parse_header(line_reader *r, hsm_share *s)
{
	field f;
	hsm_result first = read_field(r, SHARE_MAGIC, &f);
	/* A share file whose line endings an editor or a transfer made \r\n says so. */
	if (hsm_failed(first) && strstr(hsm_last_message(), "carriage return") != NULL)
		return first;
	HSM_ENSURE(hsm_ok(first), HSM_ERR_SHARE_INVALID,
	           "line 1: not an hsmd share file (the first line must be \"%s v%u\")", SHARE_MAGIC,
	           SHARE_VERSION);
	HSM_ENSURE(bytes_are(f.p, f.n, "v1"), HSM_ERR_SHARE_INVALID,
	           "line 1: unsupported share file version (this hsmd reads version %u)",
	           SHARE_VERSION);

	HSM_GUARD(read_field(r, "store", &f));
	HSM_ENSURE(f.n == HSM_UUID_STRLEN, HSM_ERR_SHARE_INVALID,
	           "line %u (store): expected a lowercase UUID", r->line);
	memcpy(s->store_id, f.p, HSM_UUID_STRLEN);
	s->store_id[HSM_UUID_STRLEN] = '\0';
	HSM_ENSURE(hsm_is_uuid(s->store_id), HSM_ERR_SHARE_INVALID,
	           "line %u (store): expected a lowercase UUID", r->line);

	HSM_GUARD(read_field(r, "set", &f));
	HSM_GUARD(parse_hex(r, "set", &f, s->set_id, HSM_SHARE_SET_ID_LEN));
	HSM_GUARD(read_field(r, "index", &f));
	HSM_GUARD(parse_small(r, "index", &f, &s->index));
	HSM_GUARD(read_field(r, "threshold", &f));
	HSM_GUARD(parse_small(r, "threshold", &f, &s->threshold));
	HSM_GUARD(read_field(r, "count", &f));
	HSM_GUARD(parse_small(r, "count", &f, &s->count));

	s->custodian[0] = '\0';
	if (next_is(r, "custodian")) {
		HSM_GUARD(read_field(r, "custodian", &f));
		HSM_ENSURE(custodian_ok(f.p, f.n), HSM_ERR_SHARE_INVALID,
		           "line %u (custodian): must be 1 to %d of A-Z a-z 0-9 . _ @ -", r->line,
		           HSM_SHARE_CUSTODIAN_MAX);
		memcpy(s->custodian, f.p, f.n);
		s->custodian[f.n] = '\0';
	}
	return HSM_SUCCESS;
}

/* Reads the check line and compares it with the checksum of file[0..end). */
static hsm_result verify_check(line_reader *r, const uint8_t *file)
{
	field f;
	uint8_t want[HSM_SHARE_CHECK_LEN], got[HSM_SHARE_CHECK_LEN];
	HSM_GUARD(read_field(r, "check", &f));
	HSM_GUARD(parse_hex(r, "check", &f, got, sizeof(got)));
	HSM_ENSURE(hsm_cursor_remaining(&r->c) == 0, HSM_ERR_SHARE_INVALID,
	           "line %u: unexpected bytes after the check line (the file must end with "
	           "exactly one newline)", r->line + 1);
	HSM_GUARD(checksum(file, f.start, want));
	HSM_ENSURE(hsm_ct_equal(want, got, sizeof(want)), HSM_ERR_SHARE_INVALID,
	           "line %u (check): checksum does not match: this share file was altered or mistyped",
	           r->line);
	return HSM_SUCCESS;
}

hsm_result hsm_share_decode(const uint8_t *p, size_t n, hsm_share *out)
{
	HSM_ASSERT(out != NULL && (p != NULL || n == 0));
	HSM_ENSURE(n <= HSM_SHARE_FILE_MAX, HSM_ERR_SHARE_INVALID,
	           "a share file is at most %d bytes; this one has %zu", HSM_SHARE_FILE_MAX, n);
	hsm_result res = HSM_SUCCESS;
	hsm_share s = {0};
	line_reader r = {.line = 0};
	field f;
	hsm_cursor_init(&r.c, p, n);

	HSM_TRY(parse_header(&r, &s));
	HSM_TRY(read_field(&r, "value", &f));
	HSM_TRY(hsm_secret_new(HSM_SHARE_VALUE_LEN, &s.value));
	HSM_TRY(parse_hex(&r, "value", &f, hsm_secret_bytes(s.value), HSM_SHARE_VALUE_LEN));
	HSM_TRY(verify_check(&r, p));
	HSM_TRY(check_share(&s, HSM_ERR_SHARE_INVALID));
	*out = s;
	memset(&s, 0, sizeof(s));
out:
	hsm_share_clear(&s);
	return res;
}

hsm_result hsm_share_describe(const uint8_t *p, size_t n, char *out, size_t cap)
{
	HSM_ASSERT(out != NULL && cap > 0 && (p != NULL || n == 0));
	out[0] = '\0';
	uint8_t fp[HSM_SHA256_LEN];
	char hex[2 * HSM_SHA256_LEN + 1];
	HSM_GUARD(hsm_sha256(p, n, fp));
	hsm_hex_encode_str(hex, fp, sizeof(fp));
	hsm_share s = {0}; /* the header's fields only: its value stays NULL */
	line_reader r = {.line = 0};
	hsm_cursor_init(&r.c, p, n);
	/* What parsed before a fault is named all the same; the fault is the decoder's to tell. */
	(void)parse_header(&r, &s);
	hsm_sb b;
	hsm_sb_init(&b, out, cap);
	if (s.index != 0) {
		hsm_sb_add(&b, "share ");
		hsm_sb_u64(&b, s.index);
		if (s.count != 0) {
			hsm_sb_add(&b, " of ");
			hsm_sb_u64(&b, s.count);
		}
		if (s.custodian[0] != '\0') {
			hsm_sb_add(&b, ", custodian ");
			hsm_sb_add(&b, s.custodian);
		}
		hsm_sb_add(&b, ", ");
	}
	hsm_sb_add(&b, "sha256:");
	hsm_sb_add(&b, hex);
	hsm_share_clear(&s);
	return HSM_SUCCESS;
}

void hsm_share_clear(hsm_share *s)
{
	if (s == NULL)
		return;
	hsm_secret_free(s->value);
	OPENSSL_cleanse(s, sizeof(*s));
}

/* ---- Creating the shares of a split --------------------------------------- */

static hsm_result check_custodians(const char *const names[], unsigned count)
{
	if (names == NULL)
		return HSM_SUCCESS;
	for (unsigned i = 0; i < count; i++) {
		HSM_ASSERT(names[i] != NULL);
		if (names[i][0] == '\0')
			continue;
		HSM_ENSURE(hsm_share_custodian_valid(names[i]), HSM_ERR_VALIDATION,
		           "custodian %u: a name is 1 to %d of A-Z a-z 0-9 . _ @ -", i + 1,
		           HSM_SHARE_CUSTODIAN_MAX);
		/* Names are people: "alice" and "Alice" would be one person holding two shares. */
		for (unsigned j = 0; j < i; j++) {
			HSM_ENSURE(strcmp(names[i], names[j]) != 0, HSM_ERR_VALIDATION,
			           "custodian %s is named twice", names[i]);
			HSM_ENSURE(strcasecmp(names[i], names[j]) != 0, HSM_ERR_VALIDATION,
			           "custodians %s and %s differ only by case: custodian names are unique "
			           "regardless of case",
			           names[j], names[i]);
		}
	}
	return HSM_SUCCESS;
}

/*
 * Recombines shares first..first+t-1 and compares with the secret, so a
 * fault in the split is caught while the DMK can still be split again.
 */
static hsm_result self_check(const hsm_secret *dmk, hsm_secret *const ys[], unsigned first,
                             unsigned t)
{
	uint8_t xs[HSM_SHAMIR_MAX_SHARES];
	const hsm_secret *pick[HSM_SHAMIR_MAX_SHARES];
	for (unsigned i = 0; i < t; i++) {
		xs[i] = (uint8_t)(first + i + 1);
		pick[i] = ys[first + i];
	}
	hsm_secret *back;
	HSM_GUARD(hsm_shamir_combine(xs, pick, t, &back));
	bool same = hsm_ct_equal(hsm_secret_bytes(back), hsm_secret_bytes(dmk), HSM_SHARE_VALUE_LEN);
	hsm_secret_free(back);
	HSM_ENSURE(same, HSM_ERR_CRYPTO, "the master key split failed its self-check");
	return HSM_SUCCESS;
}

hsm_result hsm_shares_create(const hsm_secret *dmk, const char *store_id,
                             const uint8_t set_id[HSM_SHARE_SET_ID_LEN], unsigned threshold,
                             unsigned count, const char *const custodians[], bool dev,
                             hsm_share out[])
{
	HSM_ASSERT(dmk != NULL && store_id != NULL && set_id != NULL && out != NULL);
	HSM_ASSERT(hsm_secret_len(dmk) == HSM_SHARE_VALUE_LEN);
	HSM_GUARD(hsm_shamir_check_params(threshold, count, dev));
	HSM_ENSURE(hsm_is_uuid(store_id), HSM_ERR_VALIDATION, "store id is not a lowercase UUID");
	HSM_GUARD(check_custodians(custodians, count));

	hsm_result res = HSM_SUCCESS;
	hsm_secret *ys[HSM_SHAMIR_MAX_SHARES] = {0};
	HSM_TRY(hsm_shamir_split(dmk, threshold, count, dev, ys));
	HSM_TRY(self_check(dmk, ys, 0, threshold));
	HSM_TRY(self_check(dmk, ys, count - threshold, threshold));
	for (unsigned i = 0; i < count; i++) {
		hsm_share *s = &out[i];
		memset(s, 0, sizeof(*s));
		memcpy(s->store_id, store_id, HSM_UUID_STRLEN + 1);
		memcpy(s->set_id, set_id, HSM_SHARE_SET_ID_LEN);
		s->index = i + 1;
		s->threshold = threshold;
		s->count = count;
		if (custodians != NULL)
			memcpy(s->custodian, custodians[i], strlen(custodians[i]) + 1);
		s->value = ys[i];
		ys[i] = NULL;
	}
out:
	for (unsigned i = 0; i < HSM_SHAMIR_MAX_SHARES; i++)
		hsm_secret_free(ys[i]);
	return res;
}

/* ---- Collecting a quorum -------------------------------------------------- */

struct hsm_share_set {
	char store_id[HSM_UUID_STRLEN + 1];
	uint8_t set_id[HSM_SHARE_SET_ID_LEN];
	unsigned threshold, count, have;
	hsm_secret *values[HSM_SHAMIR_MAX_SHARES + 1]; /* by index; [0] unused */
};

hsm_result hsm_share_set_new(const char *store_id, const uint8_t set_id[HSM_SHARE_SET_ID_LEN],
                             unsigned threshold, unsigned count, hsm_share_set **out)
{
	HSM_ASSERT(store_id != NULL && set_id != NULL && out != NULL);
	/* The store's record decides; a 1-of-1 record exists only for dev stores. */
	HSM_GUARD(hsm_shamir_check_params(threshold, count, true));
	HSM_ENSURE(hsm_is_uuid(store_id), HSM_ERR_VALIDATION, "store id is not a lowercase UUID");
	hsm_share_set *set = calloc(1, sizeof(*set));
	HSM_ENSURE(set != NULL, HSM_ERR_NOMEM, "out of memory");
	memcpy(set->store_id, store_id, HSM_UUID_STRLEN + 1);
	memcpy(set->set_id, set_id, HSM_SHARE_SET_ID_LEN);
	set->threshold = threshold;
	set->count = count;
	*out = set;
	return HSM_SUCCESS;
}

static void set_id_hex(const uint8_t id[HSM_SHARE_SET_ID_LEN],
                       char out[2 * HSM_SHARE_SET_ID_LEN + 1])
{
	hsm_hex_encode_str(out, id, HSM_SHARE_SET_ID_LEN);
}

static hsm_result check_belongs(const hsm_share_set *set, const hsm_share *share)
{
	HSM_ENSURE(strcmp(share->store_id, set->store_id) == 0, HSM_ERR_SHARE_MISMATCH,
	           "share is for store %s, this store is %s", share->store_id, set->store_id);
	/*
	 * The current set id is not told: Unseal answers anyone, and a set id is
	 * what a share made up by someone without one would lack (the check that
	 * follows it is an unkeyed digest).  Operators read it with
	 * `hsmctl status --data-dir`.  Which split is the newer is not said
	 * either: a current share given for a backup made before a rekey is as
	 * refused as an old share given for the store.
	 */
	if (!hsm_ct_equal(share->set_id, set->set_id, HSM_SHARE_SET_ID_LEN)) {
		char theirs[2 * HSM_SHARE_SET_ID_LEN + 1];
		set_id_hex(share->set_id, theirs);
		return HSM_FAIL(HSM_ERR_SHARE_MISMATCH,
		                "share is of split %s; this store or backup is of a different split: "
		                "give its split's shares (`hsmctl status --data-dir` names a store's, "
		                "`hsmctl backup inspect` a backup's)",
		                theirs);
	}
	HSM_ENSURE(share->threshold == set->threshold && share->count == set->count,
	           HSM_ERR_SHARE_MISMATCH, "share is from a %u-of-%u split, this store uses %u of %u",
	           share->threshold, share->count, set->threshold, set->count);
	HSM_ENSURE(share->index >= 1 && share->index <= set->count, HSM_ERR_SHARE_MISMATCH,
	           "share index %u is outside 1..%u", share->index, set->count);
	return HSM_SUCCESS;
}

hsm_result hsm_share_set_add(hsm_share_set *set, hsm_share *share)
{
	HSM_ASSERT(set != NULL && share != NULL && share->value != NULL);
	HSM_GUARD(check_belongs(set, share));
	HSM_ENSURE(hsm_secret_len(share->value) == HSM_SHARE_VALUE_LEN, HSM_ERR_SHARE_INVALID,
	           "share %u has the wrong length", share->index);
	HSM_ENSURE(set->values[share->index] == NULL, HSM_ERR_SHARE_DUPLICATE,
	           "share %u was already provided", share->index);
	set->values[share->index] = share->value;
	share->value = NULL;
	set->have++;
	return HSM_SUCCESS;
}

unsigned hsm_share_set_have(const hsm_share_set *set)
{
	return set->have;
}

unsigned hsm_share_set_needed(const hsm_share_set *set)
{
	return set->have >= set->threshold ? 0 : set->threshold - set->have;
}

unsigned hsm_share_set_threshold(const hsm_share_set *set)
{
	return set->threshold;
}

bool hsm_share_set_has(const hsm_share_set *set, unsigned index)
{
	return index >= 1 && index <= set->count && set->values[index] != NULL;
}

hsm_result hsm_share_set_combine(const hsm_share_set *set, hsm_secret **dmk)
{
	HSM_ASSERT(set != NULL && dmk != NULL);
	HSM_ENSURE(set->have >= set->threshold, HSM_ERR_QUORUM_REQUIRED,
	           "%u of %u shares provided; %u more needed", set->have, set->threshold,
	           hsm_share_set_needed(set));
	uint8_t xs[HSM_SHAMIR_MAX_SHARES];
	const hsm_secret *ys[HSM_SHAMIR_MAX_SHARES];
	unsigned k = 0;
	for (unsigned x = 1; x <= set->count; x++) {
		if (set->values[x] == NULL)
			continue;
		xs[k] = (uint8_t)x;
		ys[k++] = set->values[x];
	}
	/* All shares given take part, so one inconsistent share shows as a wrong key. */
	return hsm_shamir_combine(xs, ys, k, dmk);
}

/* Rebuilds from the first `want` shares of set whose index is not skip, then extra if given. */
static hsm_result combine_some(const hsm_share_set *set, unsigned want, unsigned skip,
                               const hsm_share *extra, hsm_secret **out)
{
	uint8_t xs[HSM_SHAMIR_MAX_SHARES];
	const hsm_secret *ys[HSM_SHAMIR_MAX_SHARES];
	unsigned k = 0;
	for (unsigned x = 1; x <= set->count && k < want; x++) {
		if (set->values[x] == NULL || x == skip)
			continue;
		xs[k] = (uint8_t)x;
		ys[k++] = set->values[x];
	}
	HSM_ASSERT(k == want);
	if (extra != NULL) {
		xs[k] = (uint8_t)extra->index;
		ys[k++] = extra->value;
	}
	return hsm_shamir_combine(xs, ys, k, out);
}

hsm_result hsm_share_set_check_member(const hsm_share_set *set, const hsm_share *share)
{
	hsm_result res = HSM_SUCCESS;
	hsm_secret *want = NULL, *got = NULL;
	HSM_ASSERT(set != NULL && share != NULL);
	HSM_ENSURE(set->have >= set->threshold, HSM_ERR_QUORUM_REQUIRED,
	           "%u of %u shares provided; %u more needed", set->have, set->threshold,
	           hsm_share_set_needed(set));
	HSM_GUARD(check_belongs(set, share));
	HSM_ENSURE(share->value != NULL && hsm_secret_len(share->value) == HSM_SHARE_VALUE_LEN,
	           HSM_ERR_SHARE_INVALID, "share %u has the wrong length", share->index);
	/*
	 * Any threshold shares of a split fix its polynomial, so a share of it, put in
	 * place of one of them, rebuilds the same secret; a share off the polynomial
	 * changes every byte it differs in (each Lagrange weight at 0 is nonzero).
	 */
	HSM_TRY(combine_some(set, set->threshold, 0, NULL, &want));
	HSM_TRY(combine_some(set, set->threshold - 1, share->index, share, &got));
	HSM_CHECK(hsm_ct_equal(hsm_secret_bytes(want), hsm_secret_bytes(got), HSM_SHARE_VALUE_LEN),
	          HSM_ERR_SHARE_INVALID,
	          "share %u is not a share of the split the others rebuild (altered or forged): "
	          "refused",
	          share->index);
out:
	hsm_secret_free(want);
	hsm_secret_free(got);
	return res;
}

void hsm_share_set_free(hsm_share_set *set)
{
	if (set == NULL)
		return;
	for (unsigned x = 0; x <= HSM_SHAMIR_MAX_SHARES; x++)
		hsm_secret_free(set->values[x]);
	OPENSSL_cleanse(set, sizeof(*set));
	free(set);
}

hsm_result hsm_share_commitment(const hsm_share *s, unsigned version,
                                uint8_t out[HSM_SHARE_COMMIT_LEN])
{
	/* A label per version, so the two versions never commit alike. */
	static const char label_v1[] = "hsmd/v1/share-commitment";
	static const char label_v2[] = "hsmd/v2/share-commitment";
	uint8_t buf[sizeof(label_v2) + HSM_UUID_STRLEN + HSM_SHARE_SET_ID_LEN + 4 + 1 +
	            HSM_SHARE_CUSTODIAN_MAX + HSM_SHARE_VALUE_LEN];
	size_t n = 0;
	HSM_ASSERT(version == HSM_SHARE_COMMIT_V1 || version == HSM_SHARE_COMMIT_V2);
	memcpy(buf + n, version == HSM_SHARE_COMMIT_V1 ? label_v1 : label_v2, sizeof(label_v2));
	n += sizeof(label_v2);
	memcpy(buf + n, s->store_id, HSM_UUID_STRLEN);
	n += HSM_UUID_STRLEN;
	memcpy(buf + n, s->set_id, HSM_SHARE_SET_ID_LEN);
	n += HSM_SHARE_SET_ID_LEN;
	for (int i = 3; i >= 0; i--)
		buf[n++] = (uint8_t)(s->index >> (8 * i));
	if (version == HSM_SHARE_COMMIT_V2) {
		/* Length-prefixed, so no name can run into the value that follows. */
		size_t name_len = strnlen(s->custodian, sizeof(s->custodian));
		HSM_ASSERT(name_len <= HSM_SHARE_CUSTODIAN_MAX);
		buf[n++] = (uint8_t)name_len;
		memcpy(buf + n, s->custodian, name_len);
		n += name_len;
	}
	HSM_ASSERT(hsm_secret_len(s->value) == HSM_SHARE_VALUE_LEN);
	memcpy(buf + n, hsm_secret_bytes(s->value), HSM_SHARE_VALUE_LEN);
	n += HSM_SHARE_VALUE_LEN;
	hsm_result r = hsm_sha256(buf, n, out);
	OPENSSL_cleanse(buf, sizeof(buf));
	return r;
}
