#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

static uint8_t data[512];

static void fill(void)
{
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);
}

/* Plain OpenSSL, configured explicitly as KMS documents RSAES_OAEP_SHA_*: hash = MGF1 hash, no label. */
static EVP_PKEY_CTX *openssl_ctx(EVP_PKEY *pk, hsm_enc_alg alg, bool encrypt)
{
	const char *md = alg == HSM_ENC_RSAES_OAEP_SHA_1 ? "SHA1" : "SHA256";
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
	assert_non_null(ctx);
	assert_int_equal(encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, md, NULL), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, md, NULL), 1);
	return ctx;
}

static void check_interop(const hsm_material *m, hsm_enc_alg alg)
{
	hsm_buf der, ct = {0}, pt;
	hsm_buf_init_secure(&der);
	hsm_buf_init_secure(&pt);
	assert_succeeds(hsm_material_export(m, &der));
	const unsigned char *p = der.data;
	EVP_PKEY *pk = d2i_AutoPrivateKey(NULL, &p, (long)der.len);
	assert_non_null(pk);
	/* hsmd encrypts, OpenSSL decrypts. */
	assert_succeeds(hsm_rsa_oaep_encrypt(m, alg, data, 100, &ct));
	uint8_t out[512];
	size_t out_len = sizeof(out);
	EVP_PKEY_CTX *ctx = openssl_ctx(pk, alg, false);
	assert_int_equal(EVP_PKEY_decrypt(ctx, out, &out_len, ct.data, ct.len), 1);
	assert_int_equal(out_len, 100);
	assert_memory_equal(out, data, 100);
	EVP_PKEY_CTX_free(ctx);
	/* OpenSSL encrypts, hsmd decrypts. */
	ctx = openssl_ctx(pk, alg, true);
	out_len = sizeof(out);
	assert_int_equal(EVP_PKEY_encrypt(ctx, out, &out_len, data, 50), 1);
	assert_succeeds(hsm_rsa_oaep_decrypt(m, alg, out, out_len, &pt));
	assert_int_equal(pt.len, 50);
	assert_memory_equal(pt.data, data, 50);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pk);
	hsm_buf_free(&der);
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
}

/* Max plaintext encrypts; one byte more is refused; empty works; the SPKI path agrees. */
static void check_limits(hsm_key_spec spec, hsm_enc_alg alg)
{
	const hsm_material *m = fixture_key(spec);
	size_t max = hsm_rsa_oaep_max_plaintext(spec, alg);
	size_t k = hsm_spec_get(spec)->bits / 8;
	hsm_buf ct = {0}, pt, pub = {0};
	hsm_buf_init_secure(&pt);
	assert_succeeds(hsm_material_public_der(m, &pub));
	size_t lens[] = {0, 1, max};
	for (size_t i = 0; i < 3; i++) {
		hsm_buf_clear(&ct);
		hsm_buf_clear(&pt);
		assert_succeeds(hsm_rsa_oaep_encrypt_pub(pub.data, pub.len, alg, data, lens[i], &ct));
		assert_int_equal(ct.len, k);
		assert_succeeds(hsm_rsa_oaep_decrypt(m, alg, ct.data, ct.len, &pt));
		assert_int_equal(pt.len, lens[i]);
		if (lens[i] > 0)
			assert_memory_equal(pt.data, data, lens[i]);
	}
	hsm_buf_clear(&ct);
	assert_fails_with(hsm_rsa_oaep_encrypt(m, alg, data, max + 1, &ct), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_rsa_oaep_encrypt_pub(pub.data, pub.len, alg, data, max + 1, &ct),
	                  HSM_ERR_VALIDATION);
	assert_int_equal(ct.len, 0);
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
	hsm_buf_free(&pub);
}

static void test_limits_every_spec(void **state)
{
	(void)state;
	for (hsm_key_spec s = HSM_SPEC_RSA_2048; s <= HSM_SPEC_RSA_4096; s++) {
		check_limits(s, HSM_ENC_RSAES_OAEP_SHA_1);
		check_limits(s, HSM_ENC_RSAES_OAEP_SHA_256);
	}
	/* The documented boundaries for RSA_2048. */
	hsm_buf ct = {0};
	const hsm_material *m = fixture_key(HSM_SPEC_RSA_2048);
	assert_succeeds(hsm_rsa_oaep_encrypt(m, HSM_ENC_RSAES_OAEP_SHA_256, data, 190, &ct));
	assert_fails_with(hsm_rsa_oaep_encrypt(m, HSM_ENC_RSAES_OAEP_SHA_256, data, 191, &ct),
	                  HSM_ERR_VALIDATION);
	assert_succeeds(hsm_rsa_oaep_encrypt(m, HSM_ENC_RSAES_OAEP_SHA_1, data, 214, &ct));
	assert_fails_with(hsm_rsa_oaep_encrypt(m, HSM_ENC_RSAES_OAEP_SHA_1, data, 215, &ct),
	                  HSM_ERR_VALIDATION);
	hsm_buf_free(&ct);
}

static void test_interop_with_openssl(void **state)
{
	(void)state;
	check_interop(fixture_key(HSM_SPEC_RSA_2048), HSM_ENC_RSAES_OAEP_SHA_1);
	check_interop(fixture_key(HSM_SPEC_RSA_2048), HSM_ENC_RSAES_OAEP_SHA_256);
	check_interop(fixture_key(HSM_SPEC_RSA_3072), HSM_ENC_RSAES_OAEP_SHA_256);
}

/* Every decryption failure: one error, one message, nothing released. */
static void test_decrypt_failures_look_alike(void **state)
{
	(void)state;
	const hsm_material *m = fixture_key(HSM_SPEC_RSA_2048);
	hsm_buf ct = {0}, pt;
	hsm_buf_init_secure(&pt);
	assert_succeeds(hsm_rsa_oaep_encrypt(m, HSM_ENC_RSAES_OAEP_SHA_256, data, 32, &ct));
	char first[HSM_ERRMSG_MAX] = "";
	for (size_t i = 0; i < ct.len; i += 13) {
		ct.data[i] ^= 0x20;
		assert_fails_with(hsm_rsa_oaep_decrypt(m, HSM_ENC_RSAES_OAEP_SHA_256, ct.data, ct.len,
		                                       &pt),
		                  HSM_ERR_INVALID_CIPHERTEXT);
		if (first[0] == '\0')
			snprintf(first, sizeof(first), "%s", hsm_last_message());
		assert_string_equal(hsm_last_message(), first);
		ct.data[i] ^= 0x20;
	}
	/* Wrong hash, wrong length, another key, empty. */
	assert_fails_with(hsm_rsa_oaep_decrypt(m, HSM_ENC_RSAES_OAEP_SHA_1, ct.data, ct.len, &pt),
	                  HSM_ERR_INVALID_CIPHERTEXT);
	assert_string_equal(hsm_last_message(), first);
	assert_fails_with(hsm_rsa_oaep_decrypt(m, HSM_ENC_RSAES_OAEP_SHA_256, ct.data, ct.len - 1,
	                                       &pt),
	                  HSM_ERR_INVALID_CIPHERTEXT);
	assert_string_equal(hsm_last_message(), first);
	assert_fails_with(hsm_rsa_oaep_decrypt(fixture_key(HSM_SPEC_RSA_3072),
	                                       HSM_ENC_RSAES_OAEP_SHA_256, ct.data, ct.len, &pt),
	                  HSM_ERR_INVALID_CIPHERTEXT);
	assert_fails_with(hsm_rsa_oaep_decrypt(m, HSM_ENC_RSAES_OAEP_SHA_256, NULL, 0, &pt),
	                  HSM_ERR_INVALID_CIPHERTEXT);
	assert_int_equal(pt.len, 0);
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
}

static void test_wrong_key_or_algorithm(void **state)
{
	(void)state;
	hsm_buf ct = {0}, pt, pub = {0};
	hsm_buf_init_secure(&pt);
	assert_fails_with(hsm_rsa_oaep_encrypt(fixture_key(HSM_SPEC_RSA_2048),
	                                       HSM_ENC_SYMMETRIC_DEFAULT, data, 1, &ct),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_rsa_oaep_encrypt(fixture_key(HSM_SPEC_ECC_NIST_P256),
	                                       HSM_ENC_RSAES_OAEP_SHA_256, data, 1, &ct),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_rsa_oaep_decrypt(fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT),
	                                       HSM_ENC_RSAES_OAEP_SHA_256, data, 256, &pt),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_succeeds(hsm_material_public_der(fixture_key(HSM_SPEC_ECC_NIST_P256), &pub));
	assert_fails_with(hsm_rsa_oaep_encrypt_pub(pub.data, pub.len, HSM_ENC_RSAES_OAEP_SHA_256,
	                                           data, 1, &ct),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_rsa_oaep_encrypt_pub(data, 30, HSM_ENC_RSAES_OAEP_SHA_256, data, 1,
	                                           &ct),
	                  HSM_ERR_VALIDATION);
	assert_int_equal(ct.len, 0);
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
	hsm_buf_free(&pub);
}

static int setup(void **state)
{
	fill();
	return crypto_fixture_setup(state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_limits_every_spec),
	    cmocka_unit_test(test_interop_with_openssl),
	    cmocka_unit_test(test_decrypt_failures_look_alike),
	    cmocka_unit_test(test_wrong_key_or_algorithm),
	};
	return cmocka_run_group_tests(tests, setup, crypto_fixture_teardown);
}
