#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

/* McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16 (AES-256). */
#define TC16_KEY "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
#define TC16_IV "cafebabefacedbaddecaf888"
#define TC16_AAD "feedfacedeadbeeffeedfacedeadbeefabaddad2"
#define TC16_PT                                                                                   \
	"d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b5" \
	"25b16aedf5aa0de657ba637b39"
#define TC16_CT                                                                                   \
	"522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b105682" \
	"8838c5f61e6393ba7a0abcc9f662"
#define TC16_TAG "76fc6ece0f4e1768cddf8853bb2d551b"

typedef struct gcm_case {
	hsm_buf key, iv, aad, pt, ct, tag;
} gcm_case;

static void load_tc16(gcm_case *c)
{
	memset(c, 0, sizeof(*c));
	hsm_buf_init_secure(&c->key);
	hsm_buf_init_secure(&c->pt);
	fixture_unhex(TC16_KEY, &c->key);
	fixture_unhex(TC16_IV, &c->iv);
	fixture_unhex(TC16_AAD, &c->aad);
	fixture_unhex(TC16_PT, &c->pt);
	fixture_unhex(TC16_CT, &c->ct);
	fixture_unhex(TC16_TAG, &c->tag);
}

static void free_case(gcm_case *c)
{
	hsm_buf *all[] = {&c->key, &c->iv, &c->aad, &c->pt, &c->ct, &c->tag};
	for (size_t i = 0; i < 6; i++)
		hsm_buf_free(all[i]);
}

static void test_gcm_known_answer(void **state)
{
	(void)state;
	gcm_case c;
	load_tc16(&c);
	hsm_material *m = NULL;
	hsm_secret *raw = NULL;
	hsm_buf ct = {0}, pt;
	uint8_t tag[HSM_GCM_TAG_LEN];
	hsm_buf_init_secure(&pt);
	assert_succeeds(hsm_material_import(HSM_SPEC_SYMMETRIC_DEFAULT, c.key.data, c.key.len, &m));
	assert_succeeds(hsm_aes_gcm_seal(m, c.iv.data, c.aad.data, c.aad.len, c.pt.data, c.pt.len,
	                                 &ct, tag));
	assert_int_equal(ct.len, c.ct.len);
	assert_memory_equal(ct.data, c.ct.data, ct.len);
	assert_memory_equal(tag, c.tag.data, HSM_GCM_TAG_LEN);
	assert_succeeds(hsm_aes_gcm_open(m, c.iv.data, c.aad.data, c.aad.len, c.ct.data, c.ct.len,
	                                 c.tag.data, &pt));
	assert_int_equal(pt.len, c.pt.len);
	assert_memory_equal(pt.data, c.pt.data, pt.len);
	/* The raw-key functions give the same result. */
	assert_succeeds(hsm_secret_from(c.key.data, c.key.len, &raw));
	hsm_buf_clear(&ct);
	hsm_buf_clear(&pt);
	assert_succeeds(hsm_aes_gcm_seal_raw(raw, c.iv.data, c.aad.data, c.aad.len, c.pt.data,
	                                     c.pt.len, &ct, tag));
	assert_memory_equal(ct.data, c.ct.data, ct.len);
	assert_memory_equal(tag, c.tag.data, HSM_GCM_TAG_LEN);
	assert_succeeds(hsm_aes_gcm_open_raw(raw, c.iv.data, c.aad.data, c.aad.len, ct.data, ct.len,
	                                     tag, &pt));
	assert_memory_equal(pt.data, c.pt.data, pt.len);
	hsm_secret_free(raw);
	hsm_material_free(m);
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
	free_case(&c);
}

static void test_gcm_round_trip_lengths(void **state)
{
	(void)state;
	static const size_t lens[] = {0, 1, 15, 16, 17, 255, 4096};
	const hsm_material *m = fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT);
	uint8_t data[4096], iv[HSM_GCM_IV_LEN], tag[HSM_GCM_TAG_LEN];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)i;
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		hsm_buf ct = {0}, pt;
		hsm_buf_init_secure(&pt);
		assert_succeeds(hsm_random_bytes(iv, sizeof(iv)));
		assert_succeeds(hsm_aes_gcm_seal(m, iv, NULL, 0, data, lens[i], &ct, tag));
		assert_int_equal(ct.len, lens[i]);
		assert_succeeds(hsm_aes_gcm_open(m, iv, NULL, 0, ct.data, ct.len, tag, &pt));
		assert_int_equal(pt.len, lens[i]);
		if (lens[i] > 0)
			assert_memory_equal(pt.data, data, lens[i]);
		hsm_buf_free(&ct);
		hsm_buf_free(&pt);
	}
}

/*
 * Flips every byte of iv, aad, ciphertext and tag in turn: each open fails
 * with the same error and message, pt_out keeps its length, and the space
 * the plaintext was decrypted into is wiped.
 */
static void expect_rejected(const hsm_material *m, const gcm_case *c, hsm_buf *pt,
                            const char *first_msg)
{
	size_t before = pt->len;
	hsm_result r = hsm_aes_gcm_open(m, c->iv.data, c->aad.data, c->aad.len, c->ct.data,
	                                c->ct.len, c->tag.data, pt);
	assert_fails_with(r, HSM_ERR_INVALID_CIPHERTEXT);
	assert_string_equal(hsm_last_message(), first_msg);
	assert_int_equal(pt->len, before);
	for (size_t i = 0; i < c->ct.len && before + c->ct.len <= pt->cap; i++)
		assert_int_equal(pt->data[before + i], 0);
}

static void flip_each(const hsm_material *m, gcm_case *c, hsm_buf *field, hsm_buf *pt,
                      const char *msg)
{
	for (size_t i = 0; i < field->len; i++) {
		field->data[i] ^= 0x01;
		expect_rejected(m, c, pt, msg);
		field->data[i] ^= 0x01;
	}
}

static void test_gcm_tamper(void **state)
{
	(void)state;
	gcm_case c;
	load_tc16(&c);
	hsm_material *m = NULL, *other = NULL;
	hsm_buf pt;
	hsm_buf_init_secure(&pt);
	assert_succeeds(hsm_buf_put_str(&pt, "kept")); /* existing contents survive failures */
	assert_succeeds(hsm_material_import(HSM_SPEC_SYMMETRIC_DEFAULT, c.key.data, c.key.len, &m));
	c.tag.data[0] ^= 1;
	assert_fails_with(hsm_aes_gcm_open(m, c.iv.data, c.aad.data, c.aad.len, c.ct.data, c.ct.len,
	                                   c.tag.data, &pt),
	                  HSM_ERR_INVALID_CIPHERTEXT);
	c.tag.data[0] ^= 1;
	char msg[HSM_ERRMSG_MAX];
	snprintf(msg, sizeof(msg), "%s", hsm_last_message());
	flip_each(m, &c, &c.iv, &pt, msg);
	flip_each(m, &c, &c.aad, &pt, msg);
	flip_each(m, &c, &c.ct, &pt, msg);
	flip_each(m, &c, &c.tag, &pt, msg);
	/* A shorter ciphertext, missing AAD, another key: all the same failure. */
	c.ct.len--;
	expect_rejected(m, &c, &pt, msg);
	c.ct.len++;
	c.aad.len = 0;
	expect_rejected(m, &c, &pt, msg);
	c.aad.len = 20;
	assert_succeeds(hsm_material_generate(HSM_SPEC_SYMMETRIC_DEFAULT, &other));
	expect_rejected(other, &c, &pt, msg);
	assert_int_equal(pt.len, 4);
	assert_memory_equal(pt.data, "kept", 4);
	hsm_material_free(m);
	hsm_material_free(other);
	hsm_buf_free(&pt);
	free_case(&c);
}

static void test_gcm_wrong_key_spec(void **state)
{
	(void)state;
	uint8_t iv[HSM_GCM_IV_LEN] = {0}, tag[HSM_GCM_TAG_LEN] = {0};
	hsm_buf ct = {0}, pt;
	hsm_buf_init_secure(&pt);
	assert_fails_with(hsm_aes_gcm_seal(fixture_key(HSM_SPEC_HMAC_256), iv, NULL, 0,
	                                   (const uint8_t *)"x", 1, &ct, tag),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_aes_gcm_open(fixture_key(HSM_SPEC_ECC_NIST_P256), iv, NULL, 0,
	                                   (const uint8_t *)"x", 1, tag, &pt),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_int_equal(ct.len, 0);
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
}

/* ---- AES-KWP ------------------------------------------------------------- */

/* AES-256 KWP of a 21-byte key, computed with pyca/cryptography (an independent implementation). */
#define KWP_KEK "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KWP_KEY "00112233445566778899aabbccddeeff0001020304"
#define KWP_WRAPPED "308d49692b5f8cf638d54bb4b985633504237329964c76ebb3f669870a708dbc"

static void test_kwp_known_answer(void **state)
{
	(void)state;
	hsm_buf kek, key, wrapped = {0}, expect = {0}, out;
	hsm_secret *raw = NULL;
	hsm_material *m = NULL;
	hsm_buf_init_secure(&kek);
	hsm_buf_init_secure(&key);
	hsm_buf_init_secure(&out);
	fixture_unhex(KWP_KEK, &kek);
	fixture_unhex(KWP_KEY, &key);
	fixture_unhex(KWP_WRAPPED, &expect);
	assert_succeeds(hsm_secret_from(kek.data, kek.len, &raw));
	assert_succeeds(hsm_aes_kwp_wrap_raw(raw, key.data, key.len, &wrapped));
	assert_int_equal(wrapped.len, expect.len);
	assert_memory_equal(wrapped.data, expect.data, expect.len);
	assert_succeeds(hsm_aes_kwp_unwrap_raw(raw, wrapped.data, wrapped.len, &out));
	assert_int_equal(out.len, key.len);
	assert_memory_equal(out.data, key.data, key.len);
	/* The material functions agree with the raw ones. */
	assert_succeeds(hsm_material_import(HSM_SPEC_SYMMETRIC_DEFAULT, kek.data, kek.len, &m));
	hsm_buf_clear(&wrapped);
	assert_succeeds(hsm_aes_kwp_wrap(m, key.data, key.len, &wrapped));
	assert_memory_equal(wrapped.data, expect.data, expect.len);
	hsm_material_free(m);
	hsm_secret_free(raw);
	hsm_buf_free(&kek);
	hsm_buf_free(&key);
	hsm_buf_free(&wrapped);
	hsm_buf_free(&expect);
	hsm_buf_free(&out);
}

/* RFC 5649: output is the input padded to 8 bytes plus one 8-byte block; every length works. */
static void test_kwp_lengths_and_tamper(void **state)
{
	(void)state;
	const hsm_material *m = fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT);
	uint8_t key[70];
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(0xa0 + i);
	for (size_t n = 1; n <= sizeof(key); n++) {
		hsm_buf w = {0}, out;
		hsm_buf_init_secure(&out);
		assert_succeeds(hsm_aes_kwp_wrap(m, key, n, &w));
		assert_int_equal(w.len, (n + 7) / 8 * 8 + 8);
		assert_succeeds(hsm_aes_kwp_unwrap(m, w.data, w.len, &out));
		assert_int_equal(out.len, n);
		assert_memory_equal(out.data, key, n);
		for (size_t i = 0; i < w.len; i++) {
			w.data[i] ^= 0x04;
			hsm_buf_clear(&out);
			assert_fails_with(hsm_aes_kwp_unwrap(m, w.data, w.len, &out),
			                  HSM_ERR_INVALID_CIPHERTEXT);
			assert_int_equal(out.len, 0);
			w.data[i] ^= 0x04;
		}
		/* Dropping or adding a block fails too. */
		assert_fails_with(hsm_aes_kwp_unwrap(m, w.data, w.len - 8, &out),
		                  HSM_ERR_INVALID_CIPHERTEXT);
		hsm_buf_free(&w);
		hsm_buf_free(&out);
	}
}

static void test_kwp_bad_input(void **state)
{
	(void)state;
	const hsm_material *m = fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT);
	uint8_t junk[40] = {0};
	hsm_buf w = {0}, out;
	hsm_buf_init_secure(&out);
	assert_fails_with(hsm_aes_kwp_wrap(m, junk, 0, &w), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_aes_kwp_wrap(m, NULL, 0, &w), HSM_ERR_VALIDATION);
	size_t bad[] = {0, 1, 8, 15, 17, 23, 40};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_fails_with(hsm_aes_kwp_unwrap(m, junk, bad[i], &out), HSM_ERR_INVALID_CIPHERTEXT);
	assert_fails_with(hsm_aes_kwp_wrap(fixture_key(HSM_SPEC_HMAC_256), junk, 16, &w),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_int_equal(w.len, 0);
	assert_int_equal(out.len, 0);
	hsm_buf_free(&w);
	hsm_buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_gcm_known_answer),
	    cmocka_unit_test(test_gcm_round_trip_lengths),
	    cmocka_unit_test(test_gcm_tamper),
	    cmocka_unit_test(test_gcm_wrong_key_spec),
	    cmocka_unit_test(test_kwp_known_answer),
	    cmocka_unit_test(test_kwp_lengths_and_tamper),
	    cmocka_unit_test(test_kwp_bad_input),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
