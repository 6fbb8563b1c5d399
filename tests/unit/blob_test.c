#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/blob.h"
#include "support/crypto_fixture.h"

static const char *const key_id = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0";

/* Encrypt as the KMS layer will: header || ct || tag, AAD = header || canonical context. */
static void make_blob(const hsm_material *m, uint32_t version, const hsm_ctx_pair *ctx, size_t n,
                      const uint8_t *pt, size_t pt_len, hsm_buf *blob)
{
	uint8_t iv[HSM_GCM_IV_LEN], tag[HSM_GCM_TAG_LEN];
	hsm_buf aad = {0};
	assert_succeeds(hsm_random_bytes(iv, sizeof(iv)));
	assert_succeeds(hsm_blob_write_header(blob, key_id, version, iv));
	assert_int_equal(blob->len, HSM_BLOB_HEADER_LEN);
	assert_succeeds(hsm_buf_put(&aad, blob->data, HSM_BLOB_HEADER_LEN));
	assert_succeeds(hsm_enc_ctx_canonical(ctx, n, &aad));
	assert_succeeds(hsm_aes_gcm_seal(m, iv, aad.data, aad.len, pt, pt_len, blob, tag));
	assert_succeeds(hsm_buf_put(blob, tag, sizeof(tag)));
	hsm_buf_free(&aad);
}

static hsm_result open_blob(const hsm_material *m, const uint8_t *p, size_t n,
                            const hsm_ctx_pair *ctx, size_t n_ctx, hsm_buf *pt)
{
	hsm_blob b;
	hsm_buf aad = {0};
	hsm_result r = hsm_blob_parse(p, n, &b);
	if (hsm_ok(r)) {
		assert_succeeds(hsm_buf_put(&aad, b.header, HSM_BLOB_HEADER_LEN));
		assert_succeeds(hsm_enc_ctx_canonical(ctx, n_ctx, &aad));
		r = hsm_aes_gcm_open(m, b.iv, aad.data, aad.len, b.ct, b.ct_len, b.tag, pt);
	}
	hsm_buf_free(&aad);
	return r;
}

static void test_header_layout_and_parse(void **state)
{
	(void)state;
	uint8_t iv[HSM_GCM_IV_LEN];
	for (size_t i = 0; i < sizeof(iv); i++)
		iv[i] = (uint8_t)(0xc0 + i);
	hsm_buf blob = {0};
	assert_succeeds(hsm_blob_write_header(&blob, key_id, 0x01020304, iv));
	static const uint8_t want[HSM_BLOB_HEADER_LEN] = {
	    HSM_BLOB_VERSION, 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x49, 0x78, 0x86, 0x95, 0xa4,
	    0xb3, 0xc2, 0xd1, 0xe0, 0xf0, 0x01, 0x02, 0x03, 0x04, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4,
	    0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb};
	assert_int_equal(blob.len, HSM_BLOB_HEADER_LEN);
	assert_memory_equal(blob.data, want, sizeof(want));
	assert_succeeds(hsm_buf_put(&blob, "CIPHERTEXT+TAG..................", 26));
	hsm_blob b;
	assert_succeeds(hsm_blob_parse(blob.data, blob.len, &b));
	assert_string_equal(b.key_id, key_id);
	assert_int_equal(b.key_version, 0x01020304);
	assert_ptr_equal(b.header, blob.data);
	assert_memory_equal(b.iv, iv, sizeof(iv));
	assert_int_equal(b.ct_len, 10);
	assert_memory_equal(b.ct, "CIPHERTEXT", 10);
	assert_ptr_equal(b.tag, blob.data + HSM_BLOB_HEADER_LEN + 10);
	/* An empty ciphertext is a well-formed blob. */
	assert_succeeds(hsm_blob_parse(blob.data, HSM_BLOB_OVERHEAD, &b));
	assert_int_equal(b.ct_len, 0);
	hsm_buf_free(&blob);
}

static void test_header_needs_uuid(void **state)
{
	(void)state;
	uint8_t iv[HSM_GCM_IV_LEN] = {0};
	hsm_buf blob = {0};
	assert_fails_with(hsm_blob_write_header(&blob, "alias/foo", 1, iv), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_blob_write_header(&blob, "0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F0", 1, iv),
	                  HSM_ERR_VALIDATION);
	assert_int_equal(blob.len, 0);
	hsm_buf_free(&blob);
}

/*
 * Plain AES-GCM may not use AAD that begins as a blob header of the same key;
 * opening, not one of any key that carries the IV used either (keys holding
 * the same imported material would open each other's blobs).
 */
static void test_header_aad_refused(void **state)
{
	(void)state;
	uint8_t iv[HSM_GCM_IV_LEN] = {0}, other_iv[HSM_GCM_IV_LEN] = {0};
	const char *other_key = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1";
	hsm_buf h = {0};
	for (size_t i = 0; i < sizeof(iv); i++)
		iv[i] = other_iv[i] = (uint8_t)(0xa0 + i);
	other_iv[11] ^= 1;
	assert_succeeds(hsm_blob_write_header(&h, key_id, 7, iv));
	assert_succeeds(hsm_buf_put(&h, "context", 7));
	for (size_t n = 17; n <= h.len; n++) {
		assert_fails_with(hsm_blob_refuse_header_aad(h.data, n, key_id, NULL),
		                  HSM_ERR_VALIDATION);
		assert_fails_with(hsm_blob_refuse_header_aad(h.data, n, key_id, other_iv),
		                  HSM_ERR_VALIDATION);
	}
	for (size_t n = 0; n < 17; n++) {
		assert_succeeds(hsm_blob_refuse_header_aad(n ? h.data : NULL, n, key_id, NULL));
		assert_succeeds(hsm_blob_refuse_header_aad(n ? h.data : NULL, n, other_key, iv));
	}
	/* Another key's header: sealing and opening with another IV may use it, opening
	 * with the IV it carries may not, once the whole header is there. */
	assert_succeeds(hsm_blob_refuse_header_aad(h.data, h.len, other_key, NULL));
	assert_succeeds(hsm_blob_refuse_header_aad(h.data, h.len, other_key, other_iv));
	for (size_t n = 17; n < HSM_BLOB_HEADER_LEN; n++)
		assert_succeeds(hsm_blob_refuse_header_aad(h.data, n, other_key, iv));
	for (size_t n = HSM_BLOB_HEADER_LEN; n <= h.len; n++)
		assert_fails_with(hsm_blob_refuse_header_aad(h.data, n, other_key, iv),
		                  HSM_ERR_VALIDATION);
	/* Another format version, one byte of the id changed. */
	h.data[0] ^= 0xff;
	assert_succeeds(hsm_blob_refuse_header_aad(h.data, h.len, key_id, NULL));
	assert_succeeds(hsm_blob_refuse_header_aad(h.data, h.len, other_key, iv));
	h.data[0] ^= 0xff;
	h.data[16] ^= 1;
	assert_succeeds(hsm_blob_refuse_header_aad(h.data, h.len, key_id, NULL));
	assert_fails_with(hsm_blob_refuse_header_aad(h.data, h.len, key_id, iv), HSM_ERR_VALIDATION);
	/* Not a key id: refused, whatever the AAD. */
	assert_fails_with(hsm_blob_refuse_header_aad(NULL, 0, "alias/x", NULL), HSM_ERR_VALIDATION);
	hsm_buf_free(&h);
}

static void test_round_trip_and_binding(void **state)
{
	(void)state;
	const hsm_material *m = fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT);
	hsm_ctx_pair ctx[] = {{"purpose", "test"}, {"tenant", "42"}};
	hsm_ctx_pair other[] = {{"purpose", "test"}, {"tenant", "43"}};
	hsm_buf blob = {0}, pt;
	hsm_buf_init_secure(&pt);
	make_blob(m, 7, ctx, 2, (const uint8_t *)"secret data", 11, &blob);
	assert_int_equal(blob.len, HSM_BLOB_OVERHEAD + 11);
	assert_succeeds(open_blob(m, blob.data, blob.len, ctx, 2, &pt));
	assert_int_equal(pt.len, 11);
	assert_memory_equal(pt.data, "secret data", 11);
	/* Another context, no context, or an edited header (key version) fails. */
	hsm_buf_clear(&pt);
	assert_fails_with(open_blob(m, blob.data, blob.len, other, 2, &pt), HSM_ERR_INVALID_CIPHERTEXT);
	assert_fails_with(open_blob(m, blob.data, blob.len, NULL, 0, &pt), HSM_ERR_INVALID_CIPHERTEXT);
	for (size_t i = 1; i < HSM_BLOB_HEADER_LEN; i++) {
		blob.data[i] ^= 0x01;
		assert_fails_with(open_blob(m, blob.data, blob.len, ctx, 2, &pt),
		                  HSM_ERR_INVALID_CIPHERTEXT);
		blob.data[i] ^= 0x01;
	}
	assert_int_equal(pt.len, 0);
	hsm_buf_free(&blob);
	hsm_buf_free(&pt);
}

/*
 * Every truncation is rejected: shorter than header + tag fails to parse,
 * anything longer parses as a shorter ciphertext whose tag then fails.  Both
 * failures carry the same error and message.
 */
static void test_every_truncation_rejected(void **state)
{
	(void)state;
	const hsm_material *m = fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT);
	hsm_buf blob = {0}, pt;
	hsm_buf_init_secure(&pt);
	make_blob(m, 1, NULL, 0, (const uint8_t *)"0123456789abcdef0123", 20, &blob);
	char msg[HSM_ERRMSG_MAX] = "";
	for (size_t n = 0; n < blob.len; n++) {
		hsm_blob b;
		hsm_result parsed = hsm_blob_parse(blob.data, n, &b);
		assert_true(hsm_ok(parsed) == (n >= HSM_BLOB_OVERHEAD));
		assert_fails_with(open_blob(m, blob.data, n, NULL, 0, &pt), HSM_ERR_INVALID_CIPHERTEXT);
		if (msg[0] == '\0')
			snprintf(msg, sizeof(msg), "%s", hsm_last_message());
		assert_string_equal(hsm_last_message(), msg);
	}
	assert_fails_with(open_blob(m, NULL, 0, NULL, 0, &pt), HSM_ERR_INVALID_CIPHERTEXT);
	assert_int_equal(pt.len, 0);
	assert_succeeds(open_blob(m, blob.data, blob.len, NULL, 0, &pt));
	hsm_buf_free(&blob);
	hsm_buf_free(&pt);
}

static void test_wrong_version_and_size(void **state)
{
	(void)state;
	const hsm_material *m = fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT);
	hsm_buf blob = {0}, big = {0};
	hsm_blob b;
	make_blob(m, 1, NULL, 0, (const uint8_t *)"x", 1, &blob);
	static const uint8_t versions[] = {0, 2, 0x7f, 0xff};
	for (size_t i = 0; i < sizeof(versions); i++) {
		blob.data[0] = versions[i];
		assert_fails_with(hsm_blob_parse(blob.data, blob.len, &b), HSM_ERR_INVALID_CIPHERTEXT);
	}
	/* Larger than KMS's CiphertextBlob limit. */
	uint8_t *p;
	assert_succeeds(hsm_buf_append_space(&big, HSM_MAX_CIPHERTEXT_BLOB + 1, &p));
	memset(p, 0, big.len);
	p[0] = HSM_BLOB_VERSION;
	assert_fails_with(hsm_blob_parse(big.data, big.len, &b), HSM_ERR_INVALID_CIPHERTEXT);
	assert_succeeds(hsm_blob_parse(big.data, HSM_MAX_CIPHERTEXT_BLOB, &b));
	hsm_buf_free(&blob);
	hsm_buf_free(&big);
}

static void canonical(const hsm_ctx_pair *pairs, size_t n, hsm_buf *out)
{
	hsm_buf_clear(out);
	assert_succeeds(hsm_enc_ctx_canonical(pairs, n, out));
}

static void test_canonical_context(void **state)
{
	(void)state;
	hsm_buf a = {0}, b = {0};
	canonical(NULL, 0, &a);
	assert_int_equal(a.len, 4);
	assert_memory_equal(a.data, "\0\0\0\0", 4);

	hsm_ctx_pair one[] = {{"k", "vv"}};
	canonical(one, 1, &a);
	static const uint8_t want[] = {0, 0, 0, 1, 0, 0, 0, 1, 'k', 0, 0, 0, 2, 'v', 'v'};
	assert_int_equal(a.len, sizeof(want));
	assert_memory_equal(a.data, want, sizeof(want));

	/* Every order of the same pairs encodes the same; the order is bytewise on the key. */
	hsm_ctx_pair p[4] = {{"b", "2"}, {"B", "1"}, {"\xc3\xa9", "4"}, {"a", "3"}};
	canonical(p, 4, &a);
	static const int perms[][4] = {{0, 1, 2, 3}, {3, 2, 1, 0}, {2, 0, 3, 1}, {1, 3, 0, 2}};
	for (size_t i = 0; i < 4; i++) {
		hsm_ctx_pair q[4];
		for (size_t j = 0; j < 4; j++)
			q[j] = p[perms[i][j]];
		canonical(q, 4, &b);
		assert_int_equal(a.len, b.len);
		assert_memory_equal(a.data, b.data, a.len);
	}
	hsm_ctx_pair sorted[4] = {{"B", "1"}, {"a", "3"}, {"b", "2"}, {"\xc3\xa9", "4"}};
	hsm_buf manual = {0};
	assert_succeeds(hsm_buf_put_u32(&manual, 4));
	for (size_t i = 0; i < 4; i++) {
		assert_succeeds(hsm_buf_put_lp(&manual, sorted[i].key, strlen(sorted[i].key)));
		assert_succeeds(hsm_buf_put_lp(&manual, sorted[i].value, strlen(sorted[i].value)));
	}
	assert_int_equal(manual.len, a.len);
	assert_memory_equal(manual.data, a.data, a.len);
	/* Length prefixes keep ("ab","c") and ("a","bc") apart. */
	hsm_ctx_pair x[] = {{"ab", "c"}}, y[] = {{"a", "bc"}};
	canonical(x, 1, &a);
	canonical(y, 1, &b);
	assert_memory_not_equal(a.data, b.data, a.len);
	hsm_buf_free(&a);
	hsm_buf_free(&b);
	hsm_buf_free(&manual);
}

static void test_duplicate_keys_refused(void **state)
{
	(void)state;
	hsm_buf out = {0};
	assert_succeeds(hsm_buf_put_str(&out, "kept"));
	hsm_ctx_pair dup[] = {{"a", "1"}, {"b", "2"}, {"a", "1"}};
	assert_fails_with(hsm_enc_ctx_canonical(dup, 3, &out), HSM_ERR_VALIDATION);
	hsm_ctx_pair dup2[] = {{"z", "1"}, {"z", "2"}};
	assert_fails_with(hsm_enc_ctx_canonical(dup2, 2, &out), HSM_ERR_VALIDATION);
	assert_int_equal(out.len, 4);
	hsm_buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_header_layout_and_parse),
	    cmocka_unit_test(test_header_needs_uuid),
	    cmocka_unit_test(test_header_aad_refused),
	    cmocka_unit_test(test_round_trip_and_binding),
	    cmocka_unit_test(test_every_truncation_rejected),
	    cmocka_unit_test(test_wrong_version_and_size),
	    cmocka_unit_test(test_canonical_context),
	    cmocka_unit_test(test_duplicate_keys_refused),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
