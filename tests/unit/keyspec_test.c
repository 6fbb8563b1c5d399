#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/keyspec.h"

static void test_spec_names_round_trip(void **state)
{
	(void)state;
	for (unsigned i = 0; i < HSM_SPEC_COUNT; i++) {
		hsm_key_spec s;
		const hsm_spec_info *info = hsm_spec_get((hsm_key_spec)i);
		assert_int_equal(info->spec, i); /* the table is indexed by its own enum */
		assert_true(hsm_ok(hsm_spec_parse(hsm_spec_name((hsm_key_spec)i), &s)));
		assert_int_equal(s, i);
	}
	hsm_key_spec s = HSM_SPEC_RSA_4096;
	assert_int_equal(hsm_spec_parse("rsa_2048", &s).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_spec_parse("", &s).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_spec_parse("RSA_1024", &s).err, HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "KeySpec"));
	assert_int_equal(s, HSM_SPEC_RSA_4096); /* output untouched on failure */
}

static void test_other_names_round_trip(void **state)
{
	(void)state;
	for (unsigned i = 0; i < HSM_USAGE_COUNT; i++) {
		hsm_key_usage u;
		assert_true(hsm_ok(hsm_usage_parse(hsm_usage_name((hsm_key_usage)i), &u)));
		assert_int_equal(u, i);
	}
	for (unsigned i = 0; i < HSM_ENC_COUNT; i++) {
		hsm_enc_alg a;
		assert_true(hsm_ok(hsm_enc_alg_parse(hsm_enc_alg_name((hsm_enc_alg)i), &a)));
		assert_int_equal(a, i);
	}
	for (unsigned i = 0; i < HSM_SIGN_COUNT; i++) {
		hsm_sign_alg a;
		assert_int_equal(hsm_sign_alg_get((hsm_sign_alg)i)->alg, i);
		assert_true(hsm_ok(hsm_sign_alg_parse(hsm_sign_alg_name((hsm_sign_alg)i), &a)));
		assert_int_equal(a, i);
	}
	for (unsigned i = 0; i < HSM_MAC_COUNT; i++) {
		hsm_mac_alg a;
		assert_int_equal(hsm_mac_alg_get((hsm_mac_alg)i)->alg, i);
		assert_true(hsm_ok(hsm_mac_alg_parse(hsm_mac_alg_name((hsm_mac_alg)i), &a)));
		assert_int_equal(a, i);
	}
	for (unsigned i = 0; i < HSM_AGREE_COUNT; i++) {
		hsm_agree_alg a;
		assert_true(hsm_ok(hsm_agree_alg_parse(hsm_agree_alg_name((hsm_agree_alg)i), &a)));
		assert_int_equal(a, i);
	}
	assert_string_equal(hsm_usage_name(HSM_USAGE_KEY_AGREEMENT), "KEY_AGREEMENT");
	assert_string_equal(hsm_agree_alg_name(HSM_AGREE_ECDH), "ECDH");
	hsm_agree_alg g;
	assert_int_equal(hsm_agree_alg_parse("ecdh", &g).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_agree_alg_parse("SM2DH", &g).err, HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "KeyAgreementAlgorithm"));
	hsm_key_usage u;
	hsm_enc_alg e;
	hsm_sign_alg s;
	hsm_mac_alg m;
	assert_int_equal(hsm_usage_parse("SIGN", &u).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_enc_alg_parse("RSAES_PKCS1_V1_5", &e).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_sign_alg_parse("RSASSA_PKCS1_V1_5_SHA_1", &s).err, HSM_ERR_VALIDATION);
	/* AWS's names for what no key here takes: the key refuses them (InvalidKeyUsage). */
	assert_int_equal(hsm_enc_alg_parse("SM2PKE", &e).err, HSM_ERR_UNSUPPORTED_OPERATION);
	for (size_t i = 0; i < 3; i++) {
		static const char *const aws_only[] = {"SM2DSA", "ML_DSA_SHAKE_256", "ED25519_PH_SHA_512"};
		assert_int_equal(hsm_sign_alg_parse(aws_only[i], &s).err, HSM_ERR_UNSUPPORTED_OPERATION);
	}
	assert_int_equal(hsm_mac_alg_parse("HMAC_SHA_1", &m).err, HSM_ERR_VALIDATION);
}

/* AWS KMS Developer Guide, "Key spec reference": which usages each spec allows. */
static void test_usages(void **state)
{
	(void)state;
	const hsm_key_usage E = HSM_USAGE_ENCRYPT_DECRYPT, S = HSM_USAGE_SIGN_VERIFY,
	                    M = HSM_USAGE_GENERATE_VERIFY_MAC, A = HSM_USAGE_KEY_AGREEMENT;
	assert_true(hsm_spec_allows_usage(HSM_SPEC_SYMMETRIC_DEFAULT, E));
	assert_false(hsm_spec_allows_usage(HSM_SPEC_SYMMETRIC_DEFAULT, S));
	assert_false(hsm_spec_allows_usage(HSM_SPEC_SYMMETRIC_DEFAULT, M));
	for (hsm_key_spec r = HSM_SPEC_RSA_2048; r <= HSM_SPEC_RSA_4096; r++) {
		assert_true(hsm_spec_allows_usage(r, E));
		assert_true(hsm_spec_allows_usage(r, S));
		assert_false(hsm_spec_allows_usage(r, M));
		assert_true(hsm_spec_is_asymmetric(r));
	}
	for (hsm_key_spec c = HSM_SPEC_ECC_NIST_P256; c <= HSM_SPEC_ECC_NIST_EDWARDS25519; c++) {
		assert_false(hsm_spec_allows_usage(c, E));
		assert_true(hsm_spec_allows_usage(c, S));
		assert_false(hsm_spec_allows_usage(c, M));
		assert_true(hsm_spec_is_asymmetric(c));
	}
	for (hsm_key_spec h = HSM_SPEC_HMAC_224; h <= HSM_SPEC_HMAC_512; h++) {
		assert_true(hsm_spec_allows_usage(h, M));
		assert_false(hsm_spec_allows_usage(h, E));
		assert_false(hsm_spec_is_asymmetric(h));
	}
	/* KEY_AGREEMENT: the NIST curves only (CreateKey KeyUsage), never secp256k1 or Ed25519. */
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++) {
		bool nist = s == HSM_SPEC_ECC_NIST_P256 || s == HSM_SPEC_ECC_NIST_P384 ||
		            s == HSM_SPEC_ECC_NIST_P521;
		assert_int_equal(hsm_spec_allows_usage((hsm_key_spec)s, A), nist);
		assert_int_equal(hsm_spec_allows_agree_alg((hsm_key_spec)s, HSM_AGREE_ECDH), nist);
	}
	assert_false(hsm_spec_is_asymmetric(HSM_SPEC_SYMMETRIC_DEFAULT));
}

static void test_algorithms_per_spec(void **state)
{
	(void)state;
	const hsm_key_usage E = HSM_USAGE_ENCRYPT_DECRYPT;
	assert_true(hsm_spec_allows_enc_alg(HSM_SPEC_SYMMETRIC_DEFAULT, E, HSM_ENC_SYMMETRIC_DEFAULT));
	assert_false(hsm_spec_allows_enc_alg(HSM_SPEC_SYMMETRIC_DEFAULT, E, HSM_ENC_RSAES_OAEP_SHA_256));
	assert_true(hsm_spec_allows_enc_alg(HSM_SPEC_RSA_3072, E, HSM_ENC_RSAES_OAEP_SHA_1));
	assert_false(hsm_spec_allows_enc_alg(HSM_SPEC_RSA_3072, E, HSM_ENC_SYMMETRIC_DEFAULT));
	/* An RSA key created for signing does not encrypt. */
	assert_false(hsm_spec_allows_enc_alg(HSM_SPEC_RSA_3072, HSM_USAGE_SIGN_VERIFY,
	                                     HSM_ENC_RSAES_OAEP_SHA_1));

	for (unsigned a = 0; a < HSM_SIGN_COUNT; a++) {
		hsm_sig_scheme sc = hsm_sign_alg_get((hsm_sign_alg)a)->scheme;
		bool rsa = sc == HSM_SCHEME_RSA_PSS || sc == HSM_SCHEME_RSA_PKCS1;
		assert_int_equal(hsm_spec_allows_sign_alg(HSM_SPEC_RSA_2048, (hsm_sign_alg)a), rsa);
		assert_false(hsm_spec_allows_sign_alg(HSM_SPEC_SYMMETRIC_DEFAULT, (hsm_sign_alg)a));
		assert_false(hsm_spec_allows_sign_alg(HSM_SPEC_HMAC_256, (hsm_sign_alg)a));
	}
	/* Each curve has exactly one ECDSA algorithm; Ed25519 only ED25519_SHA_512. */
	assert_true(hsm_spec_allows_sign_alg(HSM_SPEC_ECC_NIST_P256, HSM_SIGN_ECDSA_SHA_256));
	assert_false(hsm_spec_allows_sign_alg(HSM_SPEC_ECC_NIST_P256, HSM_SIGN_ECDSA_SHA_384));
	assert_true(hsm_spec_allows_sign_alg(HSM_SPEC_ECC_NIST_P384, HSM_SIGN_ECDSA_SHA_384));
	assert_true(hsm_spec_allows_sign_alg(HSM_SPEC_ECC_NIST_P521, HSM_SIGN_ECDSA_SHA_512));
	assert_true(hsm_spec_allows_sign_alg(HSM_SPEC_ECC_SECG_P256K1, HSM_SIGN_ECDSA_SHA_256));
	assert_true(hsm_spec_allows_sign_alg(HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_SIGN_ED25519_SHA_512));
	assert_false(hsm_spec_allows_sign_alg(HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_SIGN_ECDSA_SHA_512));

	for (unsigned m = 0; m < HSM_MAC_COUNT; m++)
		for (unsigned s = 0; s < HSM_SPEC_COUNT; s++) {
			bool want = s == HSM_SPEC_HMAC_224 + m;
			assert_int_equal(hsm_spec_allows_mac_alg((hsm_key_spec)s, (hsm_mac_alg)m), want);
		}
}

/* RFC 8017 7.1.1: k - 2 hLen - 2. */
static void test_oaep_limits(void **state)
{
	(void)state;
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_RSA_2048, HSM_ENC_RSAES_OAEP_SHA_256), 190);
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_RSA_2048, HSM_ENC_RSAES_OAEP_SHA_1), 214);
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_RSA_3072, HSM_ENC_RSAES_OAEP_SHA_256), 318);
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_RSA_3072, HSM_ENC_RSAES_OAEP_SHA_1), 342);
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_RSA_4096, HSM_ENC_RSAES_OAEP_SHA_256), 446);
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_RSA_4096, HSM_ENC_RSAES_OAEP_SHA_1), 470);
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_RSA_2048, HSM_ENC_SYMMETRIC_DEFAULT), 0);
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_ECC_NIST_P256, HSM_ENC_RSAES_OAEP_SHA_1), 0);
	assert_int_equal(hsm_rsa_oaep_max_plaintext(HSM_SPEC_SYMMETRIC_DEFAULT, HSM_ENC_SYMMETRIC_DEFAULT), 0);
}

static void test_lengths_and_properties(void **state)
{
	(void)state;
	static const size_t digest_len[] = {32, 48, 64, 32, 48, 64, 32, 48, 64, 64};
	for (unsigned a = 0; a < HSM_SIGN_COUNT; a++)
		assert_int_equal(hsm_sign_alg_get((hsm_sign_alg)a)->digest_len, digest_len[a]);
	static const size_t mac_len[] = {28, 32, 48, 64};
	for (unsigned m = 0; m < HSM_MAC_COUNT; m++) {
		assert_int_equal(hsm_mac_alg_get((hsm_mac_alg)m)->mac_len, mac_len[m]);
		/* An HMAC key is as long as its MAC (KMS: HMAC_224 has a 224-bit key ...). */
		assert_int_equal(hsm_spec_get((hsm_key_spec)(HSM_SPEC_HMAC_224 + m))->secret_len,
		                 mac_len[m]);
	}
	assert_int_equal(hsm_spec_get(HSM_SPEC_SYMMETRIC_DEFAULT)->secret_len, 32);
	assert_int_equal(hsm_spec_get(HSM_SPEC_RSA_3072)->bits, 3072);
	assert_string_equal(hsm_spec_get(HSM_SPEC_ECC_NIST_P384)->group, "P-384");
	assert_null(hsm_spec_get(HSM_SPEC_RSA_2048)->group);
	/* DataKeyPairSpec: asymmetric specs only. */
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++)
		assert_int_equal(hsm_spec_get((hsm_key_spec)s)->data_key_pair,
		                 hsm_spec_is_asymmetric((hsm_key_spec)s));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spec_names_round_trip),
	    cmocka_unit_test(test_other_names_round_trip),
	    cmocka_unit_test(test_usages),
	    cmocka_unit_test(test_algorithms_per_spec),
	    cmocka_unit_test(test_oaep_limits),
	    cmocka_unit_test(test_lengths_and_properties),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
