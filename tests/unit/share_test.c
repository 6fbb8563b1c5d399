#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/buf.h"
#include "common/encoding.h"
#include "common/util.h"
#include "crypto/crypto.h"
#include "keystore/share.h"

#define STORE_A "0b8e5d1c-7c7a-4f0e-9a51-3c2d7b1e9f40"
#define STORE_B "5f3e2a10-1111-4abc-8def-0123456789ab"
static const uint8_t SET_A[HSM_SHARE_SET_ID_LEN] = {0x3f, 0x9a, 0x0c, 0x12, 0xd4, 0xe5, 0xb6, 0xa7};
static const uint8_t SET_B[HSM_SHARE_SET_ID_LEN] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
static const char *const NAMES[5] = {"alice", "bob.smith", "carol@example.com", "dave_1", "eve-2"};

typedef struct fixture {
	hsm_secret *dmk;
	hsm_share shares[5];
	hsm_buf files[5];
	char value_hex[5][2 * HSM_SHARE_VALUE_LEN + 1];
} fixture;

static void hex_of(const hsm_secret *s, char out[2 * HSM_SHARE_VALUE_LEN + 1])
{
	hsm_buf b = {0};
	hsm_buf_init_secure(&b);
	assert_true(hsm_ok(hsm_hex_encode(&b, hsm_secret_bytes(s), hsm_secret_len(s))));
	assert_int_equal(b.len, 2 * HSM_SHARE_VALUE_LEN);
	memcpy(out, b.data, b.len);
	out[b.len] = '\0';
	hsm_buf_free(&b);
}

/*
 * A message must not reveal the share value, not even part of it: no run of
 * 12 hex digits of the value may appear in it.
 */
static void assert_no_value(const char *msg, const char *hex)
{
	size_t n = strlen(hex), w = 12;
	for (size_t i = 0; i + w <= n; i++) {
		char window[13];
		memcpy(window, hex + i, w);
		window[w] = '\0';
		if (strstr(msg, window) != NULL)
			fail_msg("error message reveals share value bytes: %s", msg);
	}
}

static void make_fixture(fixture *f, const char *const names[])
{
	memset(f, 0, sizeof(*f));
	assert_true(hsm_ok(hsm_secret_random(HSM_SHARE_VALUE_LEN, &f->dmk)));
	assert_true(hsm_ok(hsm_shares_create(f->dmk, STORE_A, SET_A, 3, 5, names, false, f->shares)));
	for (unsigned i = 0; i < 5; i++) {
		hsm_buf_init_secure(&f->files[i]);
		assert_true(hsm_ok(hsm_share_encode(&f->shares[i], &f->files[i])));
		assert_true(hsm_ok(hsm_buf_terminate(&f->files[i]))); /* lets tests use strstr */
		hex_of(f->shares[i].value, f->value_hex[i]);
	}
}

static void free_fixture(fixture *f)
{
	for (unsigned i = 0; i < 5; i++) {
		hsm_share_clear(&f->shares[i]);
		hsm_buf_free(&f->files[i]);
	}
	hsm_secret_free(f->dmk);
}

static void assert_same_share(const hsm_share *a, const hsm_share *b)
{
	assert_string_equal(a->store_id, b->store_id);
	assert_memory_equal(a->set_id, b->set_id, HSM_SHARE_SET_ID_LEN);
	assert_int_equal(a->index, b->index);
	assert_int_equal(a->threshold, b->threshold);
	assert_int_equal(a->count, b->count);
	assert_string_equal(a->custodian, b->custodian);
	assert_int_equal(hsm_secret_len(a->value), hsm_secret_len(b->value));
	assert_memory_equal(hsm_secret_bytes(a->value), hsm_secret_bytes(b->value),
	                    HSM_SHARE_VALUE_LEN);
}

/* ---- The file format ------------------------------------------------------ */

static void test_exact_format(void **state)
{
	(void)state;
	uint8_t v[HSM_SHARE_VALUE_LEN];
	for (unsigned i = 0; i < sizeof(v); i++)
		v[i] = (uint8_t)(0xa0 + i);
	hsm_share s = {.store_id = STORE_A, .index = 2, .threshold = 3, .count = 5,
	               .custodian = "carol@example.com"};
	memcpy(s.set_id, SET_A, sizeof(SET_A));
	assert_true(hsm_ok(hsm_secret_from(v, sizeof(v), &s.value)));
	const char *body = "hsmd-share v1\n"
	                   "store " STORE_A "\n"
	                   "set 3f9a0c12d4e5b6a7\n"
	                   "index 2\n"
	                   "threshold 3\n"
	                   "count 5\n"
	                   "custodian carol@example.com\n"
	                   "value a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\n";
	/* The check line: the first 8 bytes of SHA-256 over everything above, in hex. */
	uint8_t md[32];
	unsigned md_len = 0;
	assert_int_equal(EVP_Digest(body, strlen(body), md, &md_len, EVP_sha256(), NULL), 1);
	char expect[512];
	snprintf(expect, sizeof(expect), "%scheck %02x%02x%02x%02x%02x%02x%02x%02x\n", body, md[0],
	         md[1], md[2], md[3], md[4], md[5], md[6], md[7]);

	hsm_buf out;
	hsm_buf_init_secure(&out);
	assert_true(hsm_ok(hsm_share_encode(&s, &out)));
	assert_int_equal(out.len, strlen(expect));
	assert_memory_equal(out.data, expect, out.len);

	/* Without a custodian the line is left out. */
	s.custodian[0] = '\0';
	hsm_buf_clear(&out);
	assert_true(hsm_ok(hsm_share_encode(&s, &out)));
	assert_true(hsm_ok(hsm_buf_terminate(&out)));
	assert_null(strstr((const char *)out.data, "custodian"));
	assert_non_null(strstr((const char *)out.data, "\ncount 5\nvalue a0a1"));
	hsm_buf_free(&out);
	hsm_share_clear(&s);
}

static void test_round_trip(void **state)
{
	(void)state;
	const char *const *variants[] = {NAMES, NULL};
	for (size_t v = 0; v < 2; v++) {
		fixture f;
		make_fixture(&f, variants[v]);
		for (unsigned i = 0; i < 5; i++) {
			hsm_share d = {0};
			assert_true(hsm_ok(hsm_share_decode(f.files[i].data, f.files[i].len, &d)));
			assert_same_share(&d, &f.shares[i]);
			assert_int_equal(d.index, i + 1);
			assert_string_equal(d.custodian, variants[v] ? NAMES[i] : "");
			/* Encoding is canonical: re-encoding gives the same bytes. */
			hsm_buf again;
			hsm_buf_init_secure(&again);
			assert_true(hsm_ok(hsm_share_encode(&d, &again)));
			assert_int_equal(again.len, f.files[i].len);
			assert_memory_equal(again.data, f.files[i].data, again.len);
			hsm_buf_free(&again);
			hsm_share_clear(&d);
			assert_null(d.value);
		}
		free_fixture(&f);
	}
}

/* ---- Corruption ----------------------------------------------------------- */

/* "sha256:<hex of p[0..n)>", what every description ends with. */
static void sha_part(const uint8_t *p, size_t n, char out[8 + 2 * HSM_SHA256_LEN])
{
	uint8_t fp[HSM_SHA256_LEN];
	char hex[2 * HSM_SHA256_LEN + 1];
	assert_true(hsm_ok(hsm_sha256(p, n, fp)));
	hsm_hex_encode_str(hex, fp, sizeof(fp));
	snprintf(out, 8 + 2 * HSM_SHA256_LEN, "sha256:%s", hex);
}

/*
 * A file that does not decode is still named for the audit trail: the header
 * fields that parse and its SHA-256, never any part of the value.
 */
static void test_describe_names_what_parses(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	const hsm_buf *file = &f.files[3]; /* share 4, custodian dave_1 */
	char out[200], sha[8 + 2 * HSM_SHA256_LEN], want[300];
	sha_part(file->data, file->len, sha);
	assert_true(hsm_ok(hsm_share_describe(file->data, file->len, out, sizeof(out))));
	snprintf(want, sizeof(want), "share 4 of 5, custodian dave_1, %s", sha);
	assert_string_equal(out, want);
	/* A mistyped value: the header is named as it reads. */
	hsm_buf typo;
	hsm_buf_init_secure(&typo);
	assert_true(hsm_ok(hsm_buf_put(&typo, file->data, file->len)));
	char *v = strstr((char *)typo.data, "\nvalue ") + 7;
	*v = *v == 'f' ? 'e' : 'f';
	hsm_share s;
	assert_int_equal(hsm_share_decode(typo.data, typo.len, &s).err, HSM_ERR_SHARE_INVALID);
	assert_true(hsm_ok(hsm_share_describe(typo.data, typo.len, out, sizeof(out))));
	sha_part(typo.data, typo.len, sha);
	snprintf(want, sizeof(want), "share 4 of 5, custodian dave_1, %s", sha);
	assert_string_equal(out, want);
	hsm_buf_free(&typo);
	/* Every truncation: what is named grows with the header, and always ends in the hash. */
	/* A field is read once the newline ending its line is there: the one before the next. */
	const char *after_index = strstr((const char *)file->data, "\nthreshold ");
	const char *after_count = strstr((const char *)file->data, "\ncustodian ");
	const char *after_custodian = strstr((const char *)file->data, "\nvalue ");
	for (size_t n = 0; n < file->len; n++) {
		assert_true(hsm_ok(hsm_share_describe(file->data, n, out, sizeof(out))));
		sha_part(file->data, n, sha);
		const char *end = (const char *)file->data + n;
		if (end <= after_index)
			snprintf(want, sizeof(want), "%s", sha);
		else if (end <= after_count)
			snprintf(want, sizeof(want), "share 4, %s", sha);
		else if (end <= after_custodian)
			snprintf(want, sizeof(want), "share 4 of 5, %s", sha);
		else
			snprintf(want, sizeof(want), "share 4 of 5, custodian dave_1, %s", sha);
		if (strcmp(out, want) != 0)
			fail_msg("%zu bytes: \"%s\", not \"%s\"", n, out, want);
		assert_no_value(out, f.value_hex[3]);
	}
	/* Not a share at all; and a capacity too small truncates, never overflows. */
	assert_true(hsm_ok(hsm_share_describe((const uint8_t *)"x", 1, out, sizeof(out))));
	assert_int_equal(strncmp(out, "sha256:", 7), 0);
	assert_int_equal(strlen(out), 7 + 2 * HSM_SHA256_LEN);
	char small[10];
	assert_true(hsm_ok(hsm_share_describe(file->data, file->len, small, sizeof(small))));
	assert_true(strlen(small) < sizeof(small));
	free_fixture(&f);
}

static void check_refused(const uint8_t *p, size_t n, const char *value_hex)
{
	hsm_share d = {.index = 77};
	hsm_result r = hsm_share_decode(p, n, &d);
	if (hsm_ok(r)) {
		hsm_share_clear(&d);
		fail_msg("a corrupted share file (%zu bytes) was accepted", n);
	}
	assert_int_equal(r.err, HSM_ERR_SHARE_INVALID);
	assert_int_equal(d.index, 77); /* output untouched */
	assert_null(d.value);
	assert_no_value(hsm_last_message(), value_hex);
}

static void test_every_single_byte_change_is_refused(void **state)
{
	(void)state;
	const char *const *variants[] = {NAMES, NULL};
	unsigned tried = 0, by_checksum = 0;
	for (size_t v = 0; v < 2; v++) {
		fixture f;
		make_fixture(&f, variants[v]);
		/* Every file of the split, named (custodians of several lengths) and unnamed. */
		for (unsigned i = 0; i < 5; i++) {
			const hsm_buf *file = &f.files[i];
			uint8_t copy[HSM_SHARE_FILE_MAX];
			for (size_t pos = 0; pos < file->len; pos++) {
				for (unsigned b = 0; b < 256; b++) {
					if (b == file->data[pos])
						continue;
					memcpy(copy, file->data, file->len);
					copy[pos] = (uint8_t)b;
					check_refused(copy, file->len, f.value_hex[i]);
					if (strstr(hsm_last_message(), "checksum does not match") != NULL)
						by_checksum++;
					tried++;
				}
			}
		}
		free_fixture(&f);
	}
	/* Both the parser and the checksum did part of the work. */
	assert_true(by_checksum > 0 && by_checksum < tried);
	print_message("refused %u single-byte changes (%u by the checksum)\n", tried, by_checksum);
}

/* Swapping two neighbouring characters, a common typing slip, is refused too. */
static void test_every_adjacent_swap_is_refused(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	unsigned tried = 0;
	for (unsigned i = 0; i < 5; i++) {
		const hsm_buf *file = &f.files[i];
		uint8_t copy[HSM_SHARE_FILE_MAX];
		for (size_t pos = 0; pos + 1 < file->len; pos++) {
			if (file->data[pos] == file->data[pos + 1])
				continue; /* swapping equal bytes changes nothing */
			memcpy(copy, file->data, file->len);
			copy[pos] = file->data[pos + 1];
			copy[pos + 1] = file->data[pos];
			check_refused(copy, file->len, f.value_hex[i]);
			tried++;
		}
	}
	assert_true(tried > 5 * 150);
	free_fixture(&f);
}

static void test_truncation_and_extension_are_refused(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	const hsm_buf *file = &f.files[0];
	for (size_t n = 0; n < file->len; n++)
		check_refused(file->data, n, f.value_hex[0]);
	uint8_t longer[HSM_SHARE_FILE_MAX + 2];
	memcpy(longer, file->data, file->len);
	for (unsigned b = 0; b < 256; b++) {
		longer[file->len] = (uint8_t)b;
		check_refused(longer, file->len + 1, f.value_hex[0]);
	}
	/* A second trailing newline is named as such. */
	longer[file->len] = '\n';
	check_refused(longer, file->len + 1, f.value_hex[0]);
	assert_non_null(strstr(hsm_last_message(), "exactly one newline"));
	/* Oversized input is refused before parsing. */
	uint8_t *big = calloc(1, HSM_SHARE_FILE_MAX + 1);
	assert_non_null(big);
	memcpy(big, file->data, file->len);
	check_refused(big, HSM_SHARE_FILE_MAX + 1, f.value_hex[0]);
	free(big);
	free_fixture(&f);
}

/* Replaces the first occurrence of `from` in the file with `to` and expects msg. */
static void expect_edit_refused(const hsm_buf *file, const char *from, const char *to,
                                const char *msg, const char *value_hex)
{
	char text[HSM_SHARE_FILE_MAX + 64];
	assert_true(file->len < sizeof(text));
	memcpy(text, file->data, file->len);
	text[file->len] = '\0';
	char *at = strstr(text, from);
	assert_non_null(at);
	char edited[sizeof(text) + 64];
	int n = snprintf(edited, sizeof(edited), "%.*s%s%s", (int)(at - text), text, to,
	                 at + strlen(from));
	assert_true(n > 0 && (size_t)n < sizeof(edited));
	check_refused((const uint8_t *)edited, (size_t)n, value_hex);
	if (strstr(hsm_last_message(), msg) == NULL)
		fail_msg("expected \"%s\" in \"%s\"", msg, hsm_last_message());
}

static void test_messages_name_the_fault(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	const hsm_buf *file = &f.files[1];
	const char *hex = f.value_hex[1];
	char digit[2] = {hex[10], '\0'}, other[2] = {hex[10] == '0' ? '1' : '0', '\0'};
	char from[32], to[32];
	snprintf(from, sizeof(from), "value %.10s%s", hex, digit);
	snprintf(to, sizeof(to), "value %.10s%s", hex, other);
	expect_edit_refused(file, from, to,
	                    "line 9 (check): checksum does not match: this share file was altered or "
	                    "mistyped",
	                    hex);
	snprintf(to, sizeof(to), "value %.10sG", hex);
	expect_edit_refused(file, from, to, "line 8 (value): expected 64 lowercase hex digits", hex);
	expect_edit_refused(file, "hsmd-share v1", "hsmd-share v2", "unsupported share file version",
	                    hex);
	expect_edit_refused(file, "hsmd-share", "hsmd-sharf", "line 1: not an hsmd share file", hex);
	expect_edit_refused(file, "index 2\n", "index 02\n", "line 4 (index): expected a whole number",
	                    hex);
	expect_edit_refused(file, "count 5\n", "count 17\n", "line 6 (count)", hex);
	expect_edit_refused(file, "threshold", "Threshold", "line 5: expected the \"threshold\" field",
	                    hex);
	expect_edit_refused(file, "set 3f9a", "set 3F9A", "line 3 (set): expected 16 lowercase hex",
	                    hex);
	expect_edit_refused(file, "store 0b8e", "store 0B8E", "line 2 (store): expected a lowercase UUID",
	                    hex);
	expect_edit_refused(file, "custodian bob.smith", "custodian bob smith", "line 7 (custodian)",
	                    hex);
	expect_edit_refused(file, "count 5\n", "count 5\r\n", "carriage return", hex);
	expect_edit_refused(file, "hsmd-share v1\n", "hsmd-share v1\r\n",
	                    "line 1 (hsmd-share): ends with a carriage return", hex);
	expect_edit_refused(file, "\ncheck ", "\nchecksum ", "line 9: expected the \"check\" field",
	                    hex);
	/* The file cut after the value line. */
	const char *check = strstr((const char *)file->data, "\ncheck ");
	assert_non_null(check);
	check_refused(file->data, (size_t)(check - (const char *)file->data) + 1, hex);
	assert_string_equal(hsm_last_message(),
	                    "line 9: the file ends before the \"check\" field (truncated?)");
	free_fixture(&f);
}

static void test_decode_checks_fields_together(void **state)
{
	(void)state;
	/* A file with a valid checksum whose fields disagree (index above count). */
	hsm_share s = {.store_id = STORE_A, .index = 2, .threshold = 2, .count = 3};
	memcpy(s.set_id, SET_A, sizeof(SET_A));
	assert_true(hsm_ok(hsm_secret_random(HSM_SHARE_VALUE_LEN, &s.value)));
	char hex[2 * HSM_SHARE_VALUE_LEN + 1];
	hex_of(s.value, hex);
	hsm_buf good;
	hsm_buf_init_secure(&good);
	assert_true(hsm_ok(hsm_share_encode(&s, &good)));
	/* Rewrite "index 2" as "index 4" and recompute the checksum. */
	char text[HSM_SHARE_FILE_MAX];
	memcpy(text, good.data, good.len);
	text[good.len] = '\0';
	char *idx = strstr(text, "index 2\n");
	assert_non_null(idx);
	idx[6] = '4';
	char *check = strstr(text, "check ");
	assert_non_null(check);
	size_t body = (size_t)(check - text);
	uint8_t md[32];
	unsigned md_len = 0;
	assert_int_equal(EVP_Digest(text, body, md, &md_len, EVP_sha256(), NULL), 1);
	snprintf(check, sizeof(text) - body, "check %02x%02x%02x%02x%02x%02x%02x%02x\n", md[0], md[1],
	         md[2], md[3], md[4], md[5], md[6], md[7]);
	check_refused((const uint8_t *)text, strlen(text), hex);
	assert_non_null(strstr(hsm_last_message(), "index: 4 is not between 1 and the count, 3"));
	hsm_buf_free(&good);
	hsm_share_clear(&s);
}

static void test_encode_refuses_invalid_shares(void **state)
{
	(void)state;
	hsm_share s = {.store_id = STORE_A, .index = 1, .threshold = 2, .count = 3};
	memcpy(s.set_id, SET_A, sizeof(SET_A));
	assert_true(hsm_ok(hsm_secret_random(HSM_SHARE_VALUE_LEN, &s.value)));
	hsm_buf out;
	hsm_buf_init_secure(&out);
	assert_true(hsm_ok(hsm_buf_put_str(&out, "prefix")));
	hsm_share bad = s;
	bad.index = 4;
	assert_int_equal(hsm_share_encode(&bad, &out).err, HSM_ERR_VALIDATION);
	bad = s;
	bad.threshold = 1;
	assert_int_equal(hsm_share_encode(&bad, &out).err, HSM_ERR_VALIDATION);
	bad = s;
	memcpy(bad.custodian, "no spaces", 10);
	assert_int_equal(hsm_share_encode(&bad, &out).err, HSM_ERR_VALIDATION);
	bad = s;
	memcpy(bad.store_id, STORE_A, sizeof(STORE_A));
	bad.store_id[0] = 'G';
	assert_int_equal(hsm_share_encode(&bad, &out).err, HSM_ERR_VALIDATION);
	bad = s;
	bad.count = 17;
	assert_int_equal(hsm_share_encode(&bad, &out).err, HSM_ERR_VALIDATION);
	/* The buffer is unchanged by each failure. */
	assert_int_equal(out.len, 6);
	/* A 1-of-1 share (dev stores) is valid. */
	bad = s;
	bad.threshold = bad.count = 1;
	assert_true(hsm_ok(hsm_share_encode(&bad, &out)));
	hsm_share d = {0};
	assert_true(hsm_ok(hsm_share_decode(out.data + 6, out.len - 6, &d)));
	assert_int_equal(d.threshold, 1);
	hsm_share_clear(&d);
	hsm_buf_free(&out);
	hsm_share_clear(&s);
}

static void test_custodian_names(void **state)
{
	(void)state;
	assert_true(hsm_share_custodian_valid("a"));
	assert_true(hsm_share_custodian_valid("Alice.Smith_2@example-corp.com"));
	char longest[HSM_SHARE_CUSTODIAN_MAX + 2];
	memset(longest, 'x', sizeof(longest));
	longest[HSM_SHARE_CUSTODIAN_MAX] = '\0';
	assert_true(hsm_share_custodian_valid(longest));
	longest[HSM_SHARE_CUSTODIAN_MAX] = 'x';
	longest[HSM_SHARE_CUSTODIAN_MAX + 1] = '\0';
	assert_false(hsm_share_custodian_valid(longest));
	assert_false(hsm_share_custodian_valid(""));
	assert_false(hsm_share_custodian_valid("a b"));
	assert_false(hsm_share_custodian_valid("a/b"));
	assert_false(hsm_share_custodian_valid("a\nb"));
	assert_false(hsm_share_custodian_valid("caf\xc3\xa9"));
}

/* ---- Creating shares ------------------------------------------------------ */

static void test_create_validates(void **state)
{
	(void)state;
	hsm_secret *dmk = NULL;
	assert_true(hsm_ok(hsm_secret_random(HSM_SHARE_VALUE_LEN, &dmk)));
	hsm_share out[HSM_SHAMIR_MAX_SHARES];
	memset(out, 0xee, sizeof(out));
	unsigned char untouched[sizeof(out)];
	memcpy(untouched, out, sizeof(out));

	assert_int_equal(hsm_shares_create(dmk, STORE_A, SET_A, 1, 1, NULL, false, out).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(hsm_shares_create(dmk, STORE_A, SET_A, 1, 3, NULL, true, out).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(hsm_shares_create(dmk, STORE_A, SET_A, 4, 3, NULL, false, out).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(hsm_shares_create(dmk, STORE_A, SET_A, 2, 17, NULL, false, out).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(hsm_shares_create(dmk, "not-a-uuid", SET_A, 2, 3, NULL, false, out).err,
	                 HSM_ERR_VALIDATION);
	const char *const bad_name[] = {"alice", "bob smith", "carol"};
	assert_int_equal(hsm_shares_create(dmk, STORE_A, SET_A, 2, 3, bad_name, false, out).err,
	                 HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "custodian 2"));
	const char *const twice[] = {"alice", "bob", "alice"};
	assert_int_equal(hsm_shares_create(dmk, STORE_A, SET_A, 2, 3, twice, false, out).err,
	                 HSM_ERR_VALIDATION);
	assert_string_equal(hsm_last_message(), "custodian alice is named twice");
	/* One person under two spellings would hold two shares of the quorum. */
	const char *const by_case[] = {"alice", "bob", "Alice"};
	assert_int_equal(hsm_shares_create(dmk, STORE_A, SET_A, 2, 3, by_case, false, out).err,
	                 HSM_ERR_VALIDATION);
	assert_string_equal(hsm_last_message(), "custodians alice and Alice differ only by case: "
	                                        "custodian names are unique regardless of case");
	assert_memory_equal(out, untouched, sizeof(out));

	/* Dev mode: a 1-of-1 split whose only share is the key itself. */
	assert_true(hsm_ok(hsm_shares_create(dmk, STORE_A, SET_A, 1, 1, NULL, true, out)));
	assert_memory_equal(hsm_secret_bytes(out[0].value), hsm_secret_bytes(dmk), HSM_SHARE_VALUE_LEN);
	hsm_share_set *set = NULL;
	hsm_secret *back = NULL;
	assert_true(hsm_ok(hsm_share_set_new(STORE_A, SET_A, 1, 1, &set)));
	assert_true(hsm_ok(hsm_share_set_add(set, &out[0])));
	assert_true(hsm_ok(hsm_share_set_combine(set, &back)));
	assert_memory_equal(hsm_secret_bytes(back), hsm_secret_bytes(dmk), HSM_SHARE_VALUE_LEN);
	hsm_secret_free(back);
	hsm_share_set_free(set);
	hsm_share_clear(&out[0]);

	/* Some named, some not. */
	const char *const partly[] = {"alice", "", "carol"};
	assert_true(hsm_ok(hsm_shares_create(dmk, STORE_A, SET_A, 2, 3, partly, false, out)));
	assert_string_equal(out[0].custodian, "alice");
	assert_string_equal(out[1].custodian, "");
	assert_string_equal(out[2].custodian, "carol");
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(out[i].index, i + 1);
		assert_int_equal(out[i].threshold, 2);
		assert_int_equal(out[i].count, 3);
		assert_string_equal(out[i].store_id, STORE_A);
		assert_memory_equal(out[i].set_id, SET_A, HSM_SHARE_SET_ID_LEN);
		hsm_share_clear(&out[i]);
	}
	hsm_secret_free(dmk);
}

static void test_set_id_is_random(void **state)
{
	(void)state;
	uint8_t a[HSM_SHARE_SET_ID_LEN], b[HSM_SHARE_SET_ID_LEN];
	assert_true(hsm_ok(hsm_share_set_id_new(a)));
	assert_true(hsm_ok(hsm_share_set_id_new(b)));
	assert_true(memcmp(a, b, sizeof(a)) != 0);
}

/* ---- Quorum collection ---------------------------------------------------- */

/* Decodes file i of the fixture into a share. */
static void decode_file(const fixture *f, unsigned i, hsm_share *out)
{
	assert_true(hsm_ok(hsm_share_decode(f->files[i].data, f->files[i].len, out)));
}

static void assert_no_values(const fixture *f, const char *msg)
{
	for (unsigned i = 0; i < 5; i++)
		assert_no_value(msg, f->value_hex[i]);
}

static void test_set_refuses_foreign_shares(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	hsm_share s = {0};

	/* Another store. */
	hsm_share_set *other_store = NULL;
	assert_true(hsm_ok(hsm_share_set_new(STORE_B, SET_A, 3, 5, &other_store)));
	decode_file(&f, 0, &s);
	assert_int_equal(hsm_share_set_add(other_store, &s).err, HSM_ERR_SHARE_MISMATCH);
	assert_string_equal(hsm_last_message(),
	                    "share is for store " STORE_A ", this store is " STORE_B);
	assert_non_null(s.value); /* still the caller's */
	assert_no_values(&f, hsm_last_message());
	assert_int_equal(hsm_share_set_have(other_store), 0);
	hsm_share_set_free(other_store);

	/* Another split of the key (same store, new set id). */
	hsm_share_set *new_split = NULL;
	assert_true(hsm_ok(hsm_share_set_new(STORE_A, SET_B, 3, 5, &new_split)));
	assert_int_equal(hsm_share_set_add(new_split, &s).err, HSM_ERR_SHARE_MISMATCH);
	assert_string_equal(hsm_last_message(),
	                    "share is of split 3f9a0c12d4e5b6a7; this store or backup is of a "
	                    "different split: give its split's shares (`hsmctl status --data-dir` "
	                    "names a store's, `hsmctl backup inspect` a backup's)");
	assert_no_values(&f, hsm_last_message());
	hsm_share_set_free(new_split);

	/* Same set id but other parameters. */
	hsm_share_set *params = NULL;
	assert_true(hsm_ok(hsm_share_set_new(STORE_A, SET_A, 2, 5, &params)));
	assert_int_equal(hsm_share_set_add(params, &s).err, HSM_ERR_SHARE_MISMATCH);
	assert_string_equal(hsm_last_message(), "share is from a 3-of-5 split, this store uses 2 of 5");
	hsm_share_set_free(params);

	/* An index outside the set (a share built in memory, not decoded). */
	hsm_share_set *set = NULL;
	assert_true(hsm_ok(hsm_share_set_new(STORE_A, SET_A, 3, 5, &set)));
	s.index = 6;
	assert_int_equal(hsm_share_set_add(set, &s).err, HSM_ERR_SHARE_MISMATCH);
	assert_string_equal(hsm_last_message(), "share index 6 is outside 1..5");
	s.index = 1;
	assert_true(hsm_ok(hsm_share_set_add(set, &s)));
	assert_null(s.value); /* ownership moved to the set */
	hsm_share_clear(&s);
	hsm_share_set_free(set);
	free_fixture(&f);
}

static void test_set_duplicates_and_quorum(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	hsm_share_set *set = NULL;
	hsm_secret *dmk = NULL;
	hsm_share s = {0};
	assert_true(hsm_ok(hsm_share_set_new(STORE_A, SET_A, 3, 5, &set)));
	assert_int_equal(hsm_share_set_needed(set), 3);
	assert_int_equal(hsm_share_set_threshold(set), 3);
	assert_int_equal(hsm_share_set_combine(set, &dmk).err, HSM_ERR_QUORUM_REQUIRED);
	assert_string_equal(hsm_last_message(), "0 of 3 shares provided; 3 more needed");

	decode_file(&f, 2, &s);
	assert_true(hsm_ok(hsm_share_set_add(set, &s)));
	hsm_share_clear(&s);
	decode_file(&f, 2, &s);
	assert_int_equal(hsm_share_set_add(set, &s).err, HSM_ERR_SHARE_DUPLICATE);
	assert_string_equal(hsm_last_message(), "share 3 was already provided");
	assert_no_values(&f, hsm_last_message());
	assert_non_null(s.value);
	hsm_share_clear(&s);

	decode_file(&f, 4, &s);
	assert_true(hsm_ok(hsm_share_set_add(set, &s)));
	hsm_share_clear(&s);
	assert_int_equal(hsm_share_set_have(set), 2);
	assert_int_equal(hsm_share_set_needed(set), 1);
	assert_true(hsm_share_set_has(set, 3));
	assert_true(hsm_share_set_has(set, 5));
	assert_false(hsm_share_set_has(set, 1));
	assert_false(hsm_share_set_has(set, 0));
	assert_false(hsm_share_set_has(set, 6));
	assert_int_equal(hsm_share_set_combine(set, &dmk).err, HSM_ERR_QUORUM_REQUIRED);
	assert_string_equal(hsm_last_message(), "2 of 3 shares provided; 1 more needed");
	assert_null(dmk);

	decode_file(&f, 0, &s);
	assert_true(hsm_ok(hsm_share_set_add(set, &s)));
	hsm_share_clear(&s);
	assert_int_equal(hsm_share_set_needed(set), 0);
	assert_true(hsm_ok(hsm_share_set_combine(set, &dmk)));
	assert_memory_equal(hsm_secret_bytes(dmk), hsm_secret_bytes(f.dmk), HSM_SHARE_VALUE_LEN);
	hsm_secret_free(dmk);

	/* A fourth share is accepted and takes part. */
	decode_file(&f, 1, &s);
	assert_true(hsm_ok(hsm_share_set_add(set, &s)));
	hsm_share_clear(&s);
	assert_int_equal(hsm_share_set_have(set), 4);
	assert_true(hsm_ok(hsm_share_set_combine(set, &dmk)));
	assert_memory_equal(hsm_secret_bytes(dmk), hsm_secret_bytes(f.dmk), HSM_SHARE_VALUE_LEN);
	hsm_secret_free(dmk);
	hsm_share_set_free(set);
	hsm_share_set_free(NULL);
	free_fixture(&f);
}

static void test_old_split_is_refused(void **state)
{
	(void)state;
	/* The same DMK split twice: shares of the first split do not join the second. */
	fixture f;
	make_fixture(&f, NULL);
	hsm_share second[5];
	uint8_t new_set[HSM_SHARE_SET_ID_LEN];
	assert_true(hsm_ok(hsm_share_set_id_new(new_set)));
	assert_true(hsm_ok(hsm_shares_create(f.dmk, STORE_A, new_set, 3, 5, NULL, false, second)));
	hsm_share_set *set = NULL;
	assert_true(hsm_ok(hsm_share_set_new(STORE_A, new_set, 3, 5, &set)));
	assert_true(hsm_ok(hsm_share_set_add(set, &second[0])));
	assert_true(hsm_ok(hsm_share_set_add(set, &second[1])));
	hsm_share old = {0};
	decode_file(&f, 2, &old);
	assert_int_equal(hsm_share_set_add(set, &old).err, HSM_ERR_SHARE_MISMATCH);
	assert_non_null(strstr(hsm_last_message(), "is of a different split"));
	assert_no_values(&f, hsm_last_message());
	hsm_share_clear(&old);
	hsm_share_set_free(set);
	for (unsigned i = 0; i < 5; i++)
		hsm_share_clear(&second[i]);
	free_fixture(&f);
}

/* Writes the five share files to a fresh directory and rebuilds the DMK from every quorum. */
static void test_every_quorum_from_files(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	char dir[] = "/tmp/hsm-share-test-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char paths[5][64];
	for (unsigned i = 0; i < 5; i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/custodian-%u.share", dir, i + 1);
		assert_true(hsm_ok(hsm_write_file_atomic(paths[i], f.files[i].data, f.files[i].len, 0600)));
	}
	unsigned quorums = 0;
	for (unsigned mask = 0; mask < 32; mask++) {
		unsigned k = (unsigned)__builtin_popcount(mask);
		if (k < 3)
			continue;
		hsm_share_set *set = NULL;
		assert_true(hsm_ok(hsm_share_set_new(STORE_A, SET_A, 3, 5, &set)));
		for (unsigned i = 0; i < 5; i++) {
			if (!(mask & (1U << i)))
				continue;
			hsm_buf file;
			hsm_buf_init_secure(&file);
			assert_true(hsm_ok(hsm_read_file(paths[i], HSM_SHARE_FILE_MAX, &file)));
			hsm_share s = {0};
			assert_true(hsm_ok(hsm_share_decode(file.data, file.len, &s)));
			assert_string_equal(s.custodian, NAMES[i]);
			assert_true(hsm_ok(hsm_share_set_add(set, &s)));
			hsm_share_clear(&s);
			hsm_buf_free(&file);
		}
		hsm_secret *dmk = NULL;
		assert_true(hsm_ok(hsm_share_set_combine(set, &dmk)));
		assert_memory_equal(hsm_secret_bytes(dmk), hsm_secret_bytes(f.dmk), HSM_SHARE_VALUE_LEN);
		hsm_secret_free(dmk);
		hsm_share_set_free(set);
		quorums++;
	}
	assert_int_equal(quorums, 16); /* C(5,3) + C(5,4) + C(5,5) = 10 + 5 + 1 */
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(unlink(paths[i]), 0);
	assert_int_equal(rmdir(dir), 0);
	free_fixture(&f);
}

/*
 * Version 2 commitments bind the custodian name (an unnamed share to the empty
 * name): a share relabelled with another name commits differently, while
 * version 1, kept for splits made before names were bound, does not see it.
 * Store, set, index and value are bound by both.
 */
static void test_commitment_binds_the_custodian_name(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	hsm_share s = {0};
	uint8_t v1[HSM_SHARE_COMMIT_LEN], v2[HSM_SHARE_COMMIT_LEN], c[HSM_SHARE_COMMIT_LEN];
	decode_file(&f, 0, &s);
	assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V1, v1)));
	assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V2, v2)));
	assert_memory_not_equal(v1, v2, sizeof(v1));
	/* The same share, once more: the same commitments. */
	assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V2, c)));
	assert_memory_equal(c, v2, sizeof(c));
	/* Relabelled with bob.smith's name, or with none: only version 1 stays the same. */
	const char *relabels[] = {"bob.smith", "", "alicf", "alice2"};
	for (size_t i = 0; i < sizeof(relabels) / sizeof(relabels[0]); i++) {
		snprintf(s.custodian, sizeof(s.custodian), "%s", relabels[i]);
		assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V2, c)));
		assert_memory_not_equal(c, v2, sizeof(c));
		assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V1, c)));
		assert_memory_equal(c, v1, sizeof(c));
	}
	/* The unnamed share commits to the empty name, unlike a named one. */
	s.custodian[0] = '\0';
	uint8_t unnamed[HSM_SHARE_COMMIT_LEN];
	assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V2, unnamed)));
	snprintf(s.custodian, sizeof(s.custodian), "alice");
	assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V2, c)));
	assert_memory_equal(c, v2, sizeof(c));
	/* Index: bound by both versions. */
	s.index = 2;
	assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V2, c)));
	assert_memory_not_equal(c, v2, sizeof(c));
	assert_true(hsm_ok(hsm_share_commitment(&s, HSM_SHARE_COMMIT_V1, c)));
	assert_memory_not_equal(c, v1, sizeof(c));
	hsm_share_clear(&s);
	free_fixture(&f);
}

/* A new set of f's split holding f's shares idx[0..n) (0-based). */
static hsm_share_set *set_of(fixture *f, const unsigned idx[], size_t n)
{
	hsm_share_set *set = NULL;
	assert_true(hsm_ok(hsm_share_set_new(STORE_A, SET_A, 3, 5, &set)));
	for (size_t i = 0; i < n; i++) {
		hsm_share s = {0};
		decode_file(f, idx[i], &s);
		assert_true(hsm_ok(hsm_share_set_add(set, &s)));
		hsm_share_clear(&s);
	}
	return set;
}

/*
 * A share beyond the quorum, with no commitments at hand, is checked against
 * the polynomial the quorum defines: every share of the split passes, one
 * with any byte of its value changed does not, and neither changes the set.
 */
static void test_extra_share_checked_against_the_quorum(void **state)
{
	(void)state;
	fixture f;
	make_fixture(&f, NAMES);
	const unsigned quorum[] = {0, 2, 4};
	hsm_share_set *set = set_of(&f, quorum, 1);
	hsm_share s = {0};
	decode_file(&f, 1, &s);
	assert_int_equal(hsm_share_set_check_member(set, &s).err, HSM_ERR_QUORUM_REQUIRED);
	hsm_share_set_free(set);
	set = set_of(&f, quorum, 3);
	for (unsigned i = 0; i < 5; i++) { /* its own members too */
		hsm_share_clear(&s);
		decode_file(&f, i, &s);
		assert_true(hsm_ok(hsm_share_set_check_member(set, &s)));
		assert_non_null(s.value);
	}
	/* Share 2 with one byte of its value changed, at each position. */
	for (size_t pos = 0; pos < HSM_SHARE_VALUE_LEN; pos++) {
		hsm_share_clear(&s);
		decode_file(&f, 1, &s);
		uint8_t v[HSM_SHARE_VALUE_LEN];
		memcpy(v, hsm_secret_bytes(s.value), sizeof(v));
		v[pos] ^= (uint8_t)(1U << (pos % 8));
		hsm_secret_free(s.value);
		assert_true(hsm_ok(hsm_secret_from(v, sizeof(v), &s.value)));
		assert_int_equal(hsm_share_set_check_member(set, &s).err, HSM_ERR_SHARE_INVALID);
		assert_string_equal(hsm_last_message(),
		                    "share 2 is not a share of the split the others rebuild (altered "
		                    "or forged): refused");
		assert_no_values(&f, hsm_last_message());
	}
	/* A real share's value under another index, and a share of another store. */
	hsm_share_clear(&s);
	decode_file(&f, 3, &s);
	s.index = 2;
	assert_int_equal(hsm_share_set_check_member(set, &s).err, HSM_ERR_SHARE_INVALID);
	snprintf(s.store_id, sizeof(s.store_id), "%s", STORE_B);
	assert_int_equal(hsm_share_set_check_member(set, &s).err, HSM_ERR_SHARE_MISMATCH);
	hsm_share_clear(&s);
	/* The set is as it was: three shares, rebuilding the DMK. */
	assert_int_equal(hsm_share_set_have(set), 3);
	hsm_secret *dmk = NULL;
	assert_true(hsm_ok(hsm_share_set_combine(set, &dmk)));
	assert_memory_equal(hsm_secret_bytes(dmk), hsm_secret_bytes(f.dmk), HSM_SHARE_VALUE_LEN);
	hsm_secret_free(dmk);
	hsm_share_set_free(set);
	free_fixture(&f);
}

static int setup(void **state)
{
	(void)state;
	return hsm_ok(hsm_secure_process_init(1 << 20)) ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exact_format),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_every_single_byte_change_is_refused),
	    cmocka_unit_test(test_every_adjacent_swap_is_refused),
	    cmocka_unit_test(test_truncation_and_extension_are_refused),
	    cmocka_unit_test(test_describe_names_what_parses),
	    cmocka_unit_test(test_messages_name_the_fault),
	    cmocka_unit_test(test_decode_checks_fields_together),
	    cmocka_unit_test(test_encode_refuses_invalid_shares),
	    cmocka_unit_test(test_custodian_names),
	    cmocka_unit_test(test_create_validates),
	    cmocka_unit_test(test_set_id_is_random),
	    cmocka_unit_test(test_set_refuses_foreign_shares),
	    cmocka_unit_test(test_set_duplicates_and_quorum),
	    cmocka_unit_test(test_old_split_is_refused),
	    cmocka_unit_test(test_every_quorum_from_files),
	    cmocka_unit_test(test_commitment_binds_the_custodian_name),
	    cmocka_unit_test(test_extra_share_checked_against_the_quorum),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
