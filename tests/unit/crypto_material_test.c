#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

static EVP_PKEY *parse_spki(const hsm_buf *der)
{
	const unsigned char *p = der->data;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)der->len);
	assert_non_null(pk);
	assert_ptr_equal(p, der->data + der->len);
	return pk;
}

/* What an independent parser (OpenSSL's) says the public key is. */
static void check_public_key_is_spec(const hsm_buf *der, hsm_key_spec spec)
{
	const hsm_spec_info *s = hsm_spec_get(spec);
	EVP_PKEY *pk = parse_spki(der);
	char group[64] = "";
	size_t len;
	switch (s->type) {
	case HSM_KT_RSA:
		assert_true(EVP_PKEY_is_a(pk, "RSA"));
		assert_int_equal(EVP_PKEY_get_bits(pk), s->bits);
		break;
	case HSM_KT_EC:
		assert_true(EVP_PKEY_is_a(pk, "EC"));
		assert_int_equal(EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group,
		                                                sizeof(group), &len),
		                 1);
		assert_int_equal(EVP_PKEY_get_bits(pk), s->bits);
		break;
	default:
		assert_true(EVP_PKEY_is_a(pk, "ED25519"));
	}
	EVP_PKEY_free(pk);
	hsm_key_spec seen;
	assert_succeeds(hsm_spki_spec(der->data, der->len, &seen));
	assert_int_equal(seen, spec);
}

static void round_trip(hsm_key_spec spec)
{
	const hsm_spec_info *s = hsm_spec_get(spec);
	const hsm_material *m = fixture_key(spec);
	hsm_material *back = NULL;
	hsm_buf exp, exp2, pub = {0}, pub2 = {0};
	hsm_buf_init_secure(&exp);
	hsm_buf_init_secure(&exp2);
	assert_int_equal(hsm_material_spec(m), spec);
	assert_succeeds(hsm_material_export(m, &exp));
	if (!hsm_spec_is_asymmetric(spec))
		assert_int_equal(exp.len, s->secret_len);
	assert_succeeds(hsm_material_import(spec, exp.data, exp.len, &back));
	assert_int_equal(ERR_peek_error(), 0); /* no stale OpenSSL errors left behind */
	assert_int_equal(hsm_material_spec(back), spec);
	assert_succeeds(hsm_material_export(back, &exp2));
	assert_int_equal(exp.len, exp2.len);
	assert_memory_equal(exp.data, exp2.data, exp.len);
	for (unsigned u = 0; u < HSM_USAGE_COUNT; u++) {
		hsm_result r = hsm_material_pairwise_test(back, (hsm_key_usage)u);
		if (hsm_spec_allows_usage(spec, (hsm_key_usage)u))
			assert_succeeds(r);
		else
			assert_fails_with(r, HSM_ERR_INVALID_KEY_USAGE);
	}
	if (hsm_spec_is_asymmetric(spec)) {
		assert_succeeds(hsm_material_public_der(m, &pub));
		assert_succeeds(hsm_material_public_der(back, &pub2));
		assert_int_equal(pub.len, pub2.len);
		assert_memory_equal(pub.data, pub2.data, pub.len);
		check_public_key_is_spec(&pub, spec);
	} else {
		assert_fails_with(hsm_material_public_der(m, &pub), HSM_ERR_UNSUPPORTED_OPERATION);
		assert_int_equal(pub.len, 0);
	}
	hsm_material_free(back);
	hsm_buf_free(&exp);
	hsm_buf_free(&exp2);
	hsm_buf_free(&pub);
	hsm_buf_free(&pub2);
}

static void test_round_trip_every_spec(void **state)
{
	(void)state;
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++)
		round_trip((hsm_key_spec)s);
}

static void test_generated_keys_differ(void **state)
{
	(void)state;
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++) {
		if (s >= HSM_SPEC_RSA_2048 && s <= HSM_SPEC_RSA_4096)
			continue; /* slow; the EC and symmetric cases show the generator is fresh */
		hsm_material *m2 = NULL;
		hsm_buf x, y;
		hsm_buf_init_secure(&x);
		hsm_buf_init_secure(&y);
		assert_succeeds(hsm_material_generate((hsm_key_spec)s, &m2));
		assert_succeeds(hsm_material_export(fixture_key((hsm_key_spec)s), &x));
		assert_succeeds(hsm_material_export(m2, &y));
		assert_true(x.len != y.len || memcmp(x.data, y.data, x.len) != 0);
		hsm_material_free(m2);
		hsm_buf_free(&x);
		hsm_buf_free(&y);
	}
}

/*
 * Every asymmetric key's PKCS#8 is refused under every other asymmetric spec.
 * (Raw AES/HMAC keys are any bytes of the right length, so only their length
 * can be checked: test_symmetric_lengths_checked.)
 */
static void test_wrong_spec_import_refused(void **state)
{
	(void)state;
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++) {
		if (!hsm_spec_is_asymmetric((hsm_key_spec)s))
			continue;
		hsm_buf der;
		hsm_buf_init_secure(&der);
		assert_succeeds(hsm_material_export(fixture_key((hsm_key_spec)s), &der));
		for (unsigned t = 0; t < HSM_SPEC_COUNT; t++) {
			hsm_material *m = NULL;
			if (t == s || !hsm_spec_is_asymmetric((hsm_key_spec)t))
				continue;
			hsm_result r = hsm_material_import((hsm_key_spec)t, der.data, der.len, &m);
			assert_fails_with(r, HSM_ERR_VALIDATION);
			assert_null(m);
		}
		hsm_buf_free(&der);
	}
}

static void test_symmetric_lengths_checked(void **state)
{
	(void)state;
	uint8_t key[129] = {1};
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++) {
		const hsm_spec_info *info = hsm_spec_get((hsm_key_spec)s);
		if (hsm_spec_is_asymmetric((hsm_key_spec)s))
			continue;
		/* AES: exactly its length; HMAC: the digest length up to the hash's block size. */
		bool hmac = info->type == HSM_KT_HMAC;
		size_t max = !hmac ? info->secret_len : info->secret_len <= 32 ? 64 : 128;
		size_t bad[] = {0, 1, info->secret_len - 1, max + 1};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			hsm_material *m = NULL;
			assert_fails_with(hsm_material_import((hsm_key_spec)s, key, bad[i], &m),
			                  HSM_ERR_VALIDATION);
			assert_null(m);
		}
		size_t good[] = {info->secret_len, max};
		for (size_t i = 0; i < 2; i++) {
			hsm_material *m = NULL;
			assert_true(hsm_ok(hsm_material_import((hsm_key_spec)s, key, good[i], &m)));
			hsm_material_free(m);
		}
	}
}

static void test_malformed_pkcs8_refused(void **state)
{
	(void)state;
	hsm_buf der;
	hsm_buf_init_secure(&der);
	assert_succeeds(hsm_material_export(fixture_key(HSM_SPEC_ECC_NIST_P256), &der));
	hsm_material *m = NULL;
	/* Every truncation. */
	for (size_t n = 0; n < der.len; n++)
		assert_fails_with(hsm_material_import(HSM_SPEC_ECC_NIST_P256, der.data, n, &m),
		                  HSM_ERR_VALIDATION);
	/* A trailing byte. */
	assert_succeeds(hsm_buf_put_u8(&der, 0));
	assert_fails_with(hsm_material_import(HSM_SPEC_ECC_NIST_P256, der.data, der.len, &m),
	                  HSM_ERR_VALIDATION);
	/* Garbage. */
	uint8_t junk[200];
	memset(junk, 0x30, sizeof(junk));
	assert_fails_with(hsm_material_import(HSM_SPEC_RSA_2048, junk, sizeof(junk), &m),
	                  HSM_ERR_VALIDATION);
	assert_null(m);
	assert_int_equal(ERR_peek_error(), 0);
	hsm_buf_free(&der);
}

/* A key in its type's own structure (SEC1 ECPrivateKey, PKCS#1 RSAPrivateKey), which
 * OpenSSL's PrivateKeyInfo decoder also takes, is not PKCS#8: refused, as KMS does. */
static void test_type_specific_encodings_refused(void **state)
{
	(void)state;
	static const hsm_key_spec specs[] = {HSM_SPEC_ECC_NIST_P256, HSM_SPEC_RSA_2048};
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		hsm_buf der;
		hsm_buf_init_secure(&der);
		assert_succeeds(hsm_material_export(fixture_key(specs[i]), &der));
		hsm_material *m = NULL;
		assert_succeeds(hsm_material_import(specs[i], der.data, der.len, &m));
		hsm_material_free(m);
		m = NULL;
		const unsigned char *q = der.data;
		EVP_PKEY *pk = d2i_AutoPrivateKey(NULL, &q, (long)der.len);
		assert_non_null(pk);
		unsigned char *own = NULL;
		int n = i2d_PrivateKey(pk, &own);
		assert_true(n > 0);
		assert_true(own[0] == 0x30 && ((size_t)n != der.len || memcmp(own, der.data, der.len)));
		assert_fails_with(hsm_material_import(specs[i], own, (size_t)n, &m), HSM_ERR_VALIDATION);
		assert_non_null(strstr(hsm_last_message(), "PKCS#8"));
		assert_null(m);
		assert_int_equal(ERR_peek_error(), 0);
		OPENSSL_clear_free(own, (size_t)n);
		EVP_PKEY_free(pk);
		hsm_buf_free(&der);
	}
}

static void pkcs8_of(EVP_PKEY *pk, hsm_buf *out)
{
	unsigned char *p = NULL;
	size_t n = 0;
	OSSL_ENCODER_CTX *e =
	    OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_KEYPAIR, "DER", "PrivateKeyInfo", NULL);
	assert_non_null(e);
	assert_int_equal(OSSL_ENCODER_to_data(e, &p, &n), 1);
	assert_succeeds(hsm_buf_set(out, p, n));
	OPENSSL_free(p);
	OSSL_ENCODER_CTX_free(e);
}

/* FIPS 186-5 A.1.1: e = 3 is refused although the key is otherwise a fine RSA-2048 key. */
static void test_small_rsa_exponent_refused(void **state)
{
	(void)state;
	EVP_PKEY *pk = NULL;
	unsigned int e = 3;
	OSSL_PARAM params[] = {OSSL_PARAM_construct_uint(OSSL_PKEY_PARAM_RSA_E, &e),
	                       OSSL_PARAM_construct_end()};
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048), 1);
	assert_int_equal(EVP_PKEY_CTX_set_params(ctx, params), 1);
	assert_int_equal(EVP_PKEY_generate(ctx, &pk), 1);
	hsm_buf der;
	hsm_buf_init_secure(&der);
	pkcs8_of(pk, &der);
	hsm_material *m = NULL;
	assert_fails_with(hsm_material_import(HSM_SPEC_RSA_2048, der.data, der.len, &m),
	                  HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "exponent"));
	EVP_PKEY_free(pk);
	EVP_PKEY_CTX_free(ctx);
	hsm_buf_free(&der);
}

/* An EC PKCS#8 whose embedded public key belongs to another private key is refused. */
static void test_mismatched_key_pair_refused(void **state)
{
	(void)state;
	hsm_material *other = NULL, *m = NULL;
	hsm_buf der, pub = {0};
	hsm_buf_init_secure(&der);
	assert_succeeds(hsm_material_generate(HSM_SPEC_ECC_NIST_P256, &other));
	assert_succeeds(hsm_material_export(fixture_key(HSM_SPEC_ECC_NIST_P256), &der));
	assert_succeeds(hsm_material_public_der(other, &pub));
	/* Both encodings end with the 65-byte uncompressed point. */
	assert_true(der.len > 65 && pub.len > 65);
	assert_memory_not_equal(der.data + der.len - 65, pub.data + pub.len - 65, 65);
	memcpy(der.data + der.len - 65, pub.data + pub.len - 65, 65);
	assert_fails_with(hsm_material_import(HSM_SPEC_ECC_NIST_P256, der.data, der.len, &m),
	                  HSM_ERR_VALIDATION);
	assert_null(m);
	hsm_material_free(other);
	hsm_buf_free(&der);
	hsm_buf_free(&pub);
}

static void spki_of(EVP_PKEY *pk, hsm_buf *out)
{
	int n = i2d_PUBKEY(pk, NULL);
	assert_true(n > 0);
	uint8_t *p;
	assert_succeeds(hsm_buf_append_space(out, (size_t)n, &p));
	assert_int_equal(i2d_PUBKEY(pk, &p), n);
}

/* A PKCS#8 whose public key is compressed (or hybrid) is imported with it uncompressed. */
static void test_ec_public_key_uncompressed_whatever_form_came_in(void **state)
{
	(void)state;
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	assert_non_null(pk);
	hsm_buf compressed = {0}, uncompressed = {0}, pub = {0}, again = {0}, der;
	hsm_buf_init_secure(&der);
	spki_of(pk, &uncompressed);
	assert_int_equal(EVP_PKEY_set_utf8_string_param(
	                     pk, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
	                     OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED),
	                 1);
	spki_of(pk, &compressed);
	assert_int_equal(compressed.len + 32, uncompressed.len);
	OSSL_ENCODER_CTX *e =
	    OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_KEYPAIR, "DER", "PrivateKeyInfo", NULL);
	unsigned char *p8 = NULL;
	size_t p8_len = 0;
	assert_int_equal(OSSL_ENCODER_to_data(e, &p8, &p8_len), 1);
	OSSL_ENCODER_CTX_free(e);
	hsm_material *m = NULL;
	assert_succeeds(hsm_material_import(HSM_SPEC_ECC_NIST_P256, p8, p8_len, &m));
	assert_succeeds(hsm_material_public_der(m, &pub));
	assert_int_equal(pub.len, uncompressed.len);
	assert_memory_equal(pub.data, uncompressed.data, pub.len);
	assert_succeeds(hsm_material_export(m, &der));
	assert_true(der.len > p8_len); /* the stored PKCS#8 carries the uncompressed point too */
	/* And back to the form the importer used, to recognise material identified by it. */
	assert_succeeds(hsm_spki_ec_form(pub.data, pub.len,
	                                 OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED, &again));
	assert_int_equal(again.len, compressed.len);
	assert_memory_equal(again.data, compressed.data, again.len);
	hsm_buf_clear(&again);
	hsm_buf_clear(&pub);
	assert_succeeds(hsm_material_public_der(fixture_key(HSM_SPEC_RSA_2048), &pub));
	assert_fails_with(hsm_spki_ec_form(pub.data, pub.len,
	                                   OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED, &again),
	                  HSM_ERR_VALIDATION);
	assert_int_equal(again.len, 0);
	OPENSSL_clear_free(p8, p8_len);
	hsm_material_free(m);
	EVP_PKEY_free(pk);
	hsm_buf_free(&compressed);
	hsm_buf_free(&uncompressed);
	hsm_buf_free(&pub);
	hsm_buf_free(&again);
	hsm_buf_free(&der);
}

/* An RSA key whose modulus was altered no longer signs verifiably: refused. */
static void test_corrupt_rsa_key_refused(void **state)
{
	(void)state;
	hsm_material *m = NULL;
	hsm_buf der;
	hsm_buf_init_secure(&der);
	assert_succeeds(hsm_material_export(fixture_key(HSM_SPEC_RSA_2048), &der));
	/* PrivateKeyInfo header (26 bytes), version, then the 257-byte modulus from offset 38. */
	assert_memory_equal(der.data + 33, "\x02\x82\x01\x01\x00", 5);
	der.data[100] ^= 0x01;
	assert_fails_with(hsm_material_import(HSM_SPEC_RSA_2048, der.data, der.len, &m),
	                  HSM_ERR_VALIDATION);
	assert_null(m);
	hsm_buf_free(&der);
}

/*
 * An RSA key with one private value that does not fit (here dP, add 2):
 * hsm_material_import takes it, as its pairwise tests pass (OpenSSL redoes a
 * bad CRT result with d); hsm_material_check_private, made at import, refuses it.
 */
static void test_inconsistent_rsa_values_refused_by_the_full_check(void **state)
{
	(void)state;
	static const char *const names[] = {
	    OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
	    OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
	    OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
	    OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
	const hsm_material *good = fixture_key(HSM_SPEC_RSA_2048);
	assert_succeeds(hsm_material_check_private(good));
	assert_succeeds(hsm_material_check_private(fixture_key(HSM_SPEC_ECC_NIST_P256)));
	assert_succeeds(hsm_material_check_private(fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT)));
	hsm_buf der;
	hsm_buf_init_secure(&der);
	assert_succeeds(hsm_material_export(good, &der));
	const unsigned char *p = der.data;
	EVP_PKEY *pk = d2i_AutoPrivateKey(NULL, &p, (long)der.len);
	assert_non_null(pk);
	BIGNUM *v[8] = {0};
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	assert_non_null(b);
	for (size_t i = 0; i < 8; i++) {
		assert_int_equal(EVP_PKEY_get_bn_param(pk, names[i], &v[i]), 1);
		if (strcmp(names[i], OSSL_PKEY_PARAM_RSA_EXPONENT1) == 0)
			assert_int_equal(BN_add_word(v[i], 2), 1);
		assert_int_equal(OSSL_PARAM_BLD_push_BN(b, names[i], v[i]), 1);
	}
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	EVP_PKEY *bad = NULL;
	assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
	assert_int_equal(EVP_PKEY_fromdata(ctx, &bad, EVP_PKEY_KEYPAIR, params), 1);
	hsm_buf_clear(&der);
	pkcs8_of(bad, &der);
	hsm_material *m = NULL;
	assert_succeeds(hsm_material_import(HSM_SPEC_RSA_2048, der.data, der.len, &m));
	assert_fails_with(hsm_material_check_private(m), HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "do not fit together"));
	hsm_material_free(m);
	EVP_PKEY_free(bad);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	for (size_t i = 0; i < 8; i++)
		BN_clear_free(v[i]);
	EVP_PKEY_free(pk);
	hsm_buf_free(&der);
}

static void test_spki_spec_refuses_junk(void **state)
{
	(void)state;
	hsm_key_spec s;
	hsm_buf pub = {0};
	uint8_t junk[10] = {0x30, 0x08};
	assert_fails_with(hsm_spki_spec(junk, sizeof(junk), &s), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_spki_spec(NULL, 0, &s), HSM_ERR_VALIDATION);
	assert_succeeds(hsm_material_public_der(fixture_key(HSM_SPEC_ECC_NIST_P384), &pub));
	assert_fails_with(hsm_spki_spec(pub.data, pub.len - 1, &s), HSM_ERR_VALIDATION);
	assert_succeeds(hsm_buf_put_u8(&pub, 0));
	assert_fails_with(hsm_spki_spec(pub.data, pub.len, &s), HSM_ERR_VALIDATION);
	hsm_buf_free(&pub);
}

/*
 * Key check values against values computed apart (python3-cryptography's
 * AES-ECB and hashlib's SHA-1 of 32 zero bytes): AES-256 with a zero key
 * encrypts the zero block to DC95C078..., SHA-1 of 32 zero bytes is
 * DE8A847B...; each key check value is the first three bytes.
 */
static void test_check_values(void **state)
{
	(void)state;
	static const uint8_t zero[32];
	static const uint8_t aes_kcv[HSM_KCV_LEN] = {0xDC, 0x95, 0xC0};
	static const uint8_t sha1_kcv[HSM_KCV_LEN] = {0xDE, 0x8A, 0x84};
	uint8_t kcv[HSM_KCV_LEN];
	hsm_kcv_alg alg;
	hsm_material *m = NULL;
	assert_succeeds(hsm_material_import(HSM_SPEC_SYMMETRIC_DEFAULT, zero, sizeof(zero), &m));
	assert_succeeds(hsm_material_check_value(m, kcv, &alg));
	assert_memory_equal(kcv, aes_kcv, HSM_KCV_LEN);
	assert_int_equal(alg, HSM_KCV_ZERO_BLOCK);
	hsm_material_free(m);
	assert_succeeds(hsm_material_import(HSM_SPEC_HMAC_256, zero, sizeof(zero), &m));
	assert_succeeds(hsm_material_check_value(m, kcv, &alg));
	assert_memory_equal(kcv, sha1_kcv, HSM_KCV_LEN);
	assert_int_equal(alg, HSM_KCV_SHA1);
	hsm_material_free(m);
	/* Asymmetric keys have none. */
	assert_succeeds(hsm_material_generate(HSM_SPEC_ECC_NIST_P256, &m));
	assert_fails_with(hsm_material_check_value(m, kcv, &alg), HSM_ERR_UNSUPPORTED_OPERATION);
	hsm_material_free(m);
}

static void test_refcount(void **state)
{
	(void)state;
	hsm_material *m = NULL;
	assert_succeeds(hsm_material_generate(HSM_SPEC_HMAC_256, &m));
	hsm_material *r = hsm_material_ref(m);
	assert_ptr_equal(r, m);
	hsm_material_free(m);
	/* Still alive through the second reference. */
	hsm_buf mac = {0};
	assert_succeeds(hsm_hmac(r, HSM_MAC_HMAC_SHA_256, (const uint8_t *)"x", 1, &mac));
	hsm_material_free(r);
	hsm_material_free(NULL);
	hsm_buf_free(&mac);
}

/* One key, many threads, each with its own contexts: every signature verifies. */
static void *sign_many(void *arg)
{
	const hsm_material *m = arg;
	uintptr_t bad = 0;
	for (int i = 0; i < 200; i++) {
		hsm_buf sig = {0};
		uint8_t msg[4] = {(uint8_t)i};
		if (hsm_failed(hsm_sign(m, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW, msg, 4, &sig)) ||
		    hsm_failed(hsm_verify(m, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW, msg, 4, sig.data,
		                          sig.len)))
			bad++;
		hsm_buf_free(&sig);
	}
	return (void *)bad;
}

static void test_concurrent_use(void **state)
{
	(void)state;
	hsm_material *m = hsm_material_ref((hsm_material *)fixture_key(HSM_SPEC_ECC_NIST_P256));
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, sign_many, m), 0);
	for (int i = 0; i < 4; i++) {
		void *bad;
		assert_int_equal(pthread_join(t[i], &bad), 0);
		assert_null(bad);
	}
	hsm_material_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_every_spec),
	    cmocka_unit_test(test_generated_keys_differ),
	    cmocka_unit_test(test_wrong_spec_import_refused),
	    cmocka_unit_test(test_symmetric_lengths_checked),
	    cmocka_unit_test(test_malformed_pkcs8_refused),
	    cmocka_unit_test(test_type_specific_encodings_refused),
	    cmocka_unit_test(test_small_rsa_exponent_refused),
	    cmocka_unit_test(test_mismatched_key_pair_refused),
	    cmocka_unit_test(test_ec_public_key_uncompressed_whatever_form_came_in),
	    cmocka_unit_test(test_corrupt_rsa_key_refused),
	    cmocka_unit_test(test_inconsistent_rsa_values_refused_by_the_full_check),
	    cmocka_unit_test(test_spki_spec_refuses_junk),
	    cmocka_unit_test(test_check_values),
	    cmocka_unit_test(test_refcount),
	    cmocka_unit_test(test_concurrent_use),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
