#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

static const uint8_t msg[] = "sign me, as KMS would";
#define MSG_LEN (sizeof(msg) - 1)

static void digest_of(const hsm_sign_alg_info *info, const uint8_t *m, size_t n, uint8_t *out)
{
	unsigned int len = 0;
	EVP_MD *md = EVP_MD_fetch(NULL, info->digest, NULL);
	assert_int_equal(EVP_Digest(m, n, out, &len, md, NULL), 1);
	assert_int_equal(len, info->digest_len);
	EVP_MD_free(md);
}

/*
 * An independent check with plain OpenSSL and the public key only: what any
 * KMS client (aws-cli, JOSE libraries, openssl dgst) would do with the signature.
 */
static bool openssl_verifies(const hsm_buf *spki, hsm_sign_alg alg, const uint8_t *sig,
                             size_t sig_len)
{
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	const unsigned char *p = spki->data;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)spki->len);
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	const char *md = info->scheme == HSM_SCHEME_EDDSA ? NULL : info->digest;
	bool ok = pk != NULL && mctx != NULL &&
	          EVP_DigestVerifyInit_ex(mctx, &pctx, md, NULL, NULL, pk, NULL) == 1;
	if (ok && info->scheme == HSM_SCHEME_RSA_PSS)
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, (int)info->digest_len) == 1;
	ok = ok && EVP_DigestVerify(mctx, sig, sig_len, msg, MSG_LEN) == 1;
	EVP_MD_CTX_free(mctx);
	EVP_PKEY_free(pk);
	return ok;
}

static void expect_bad_signature(hsm_result r)
{
	assert_fails_with(r, HSM_ERR_INVALID_SIGNATURE);
}

static void check_digest_lengths(const hsm_material *m, hsm_sign_alg alg)
{
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	uint8_t d[80] = {0};
	hsm_buf sig = {0};
	size_t bad[] = {0, info->digest_len - 1, info->digest_len + 1, 20};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_fails_with(hsm_sign(m, alg, HSM_MSG_DIGEST, d, bad[i], &sig), HSM_ERR_VALIDATION);
		assert_int_equal(sig.len, 0);
		assert_fails_with(hsm_verify(m, alg, HSM_MSG_DIGEST, d, bad[i], d, 64),
		                  HSM_ERR_VALIDATION);
	}
}

/* RAW and DIGEST agree both ways; tampering with message or signature fails. */
static void check_alg(hsm_key_spec spec, hsm_sign_alg alg)
{
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	const hsm_material *m = fixture_key(spec);
	hsm_buf pub = {0}, raw = {0}, dig = {0};
	uint8_t d[64];
	digest_of(info, msg, MSG_LEN, d);
	assert_succeeds(hsm_material_public_der(m, &pub));
	assert_succeeds(hsm_buf_put_str(&raw, "prefix")); /* output is appended */
	assert_succeeds(hsm_sign(m, alg, HSM_MSG_RAW, msg, MSG_LEN, &raw));
	assert_memory_equal(raw.data, "prefix", 6);
	const uint8_t *sig = raw.data + 6;
	size_t sig_len = raw.len - 6;
	assert_succeeds(hsm_sign(m, alg, HSM_MSG_DIGEST, d, info->digest_len, &dig));

	assert_succeeds(hsm_verify(m, alg, HSM_MSG_RAW, msg, MSG_LEN, sig, sig_len));
	assert_succeeds(hsm_verify(m, alg, HSM_MSG_DIGEST, d, info->digest_len, sig, sig_len));
	assert_succeeds(hsm_verify(m, alg, HSM_MSG_RAW, msg, MSG_LEN, dig.data, dig.len));
	assert_succeeds(hsm_verify_pub(pub.data, pub.len, alg, HSM_MSG_RAW, msg, MSG_LEN, sig, sig_len));
	assert_succeeds(hsm_verify_pub(pub.data, pub.len, alg, HSM_MSG_DIGEST, d, info->digest_len,
	                               dig.data, dig.len));
	assert_true(openssl_verifies(&pub, alg, sig, sig_len));
	assert_true(openssl_verifies(&pub, alg, dig.data, dig.len));
	if (info->scheme == HSM_SCHEME_RSA_PKCS1) /* deterministic: DIGEST wraps the same DigestInfo */
		assert_memory_equal(sig, dig.data, sig_len);

	expect_bad_signature(hsm_verify(m, alg, HSM_MSG_RAW, msg, MSG_LEN - 1, sig, sig_len));
	d[0] ^= 1;
	expect_bad_signature(hsm_verify(m, alg, HSM_MSG_DIGEST, d, info->digest_len, sig, sig_len));
	for (size_t i = 0; i < sig_len; i += sig_len / 7 + 1) {
		raw.data[6 + i] ^= 0x10;
		expect_bad_signature(hsm_verify(m, alg, HSM_MSG_RAW, msg, MSG_LEN, sig, sig_len));
		expect_bad_signature(
		    hsm_verify_pub(pub.data, pub.len, alg, HSM_MSG_RAW, msg, MSG_LEN, sig, sig_len));
		raw.data[6 + i] ^= 0x10;
	}
	check_digest_lengths(m, alg);
	hsm_buf_free(&pub);
	hsm_buf_free(&raw);
	hsm_buf_free(&dig);
}

static void test_rsa(void **state)
{
	(void)state;
	for (hsm_key_spec s = HSM_SPEC_RSA_2048; s <= HSM_SPEC_RSA_4096; s++)
		for (unsigned a = 0; a < HSM_SIGN_COUNT; a++)
			if (hsm_spec_allows_sign_alg(s, (hsm_sign_alg)a))
				check_alg(s, (hsm_sign_alg)a);
}

static void test_ecdsa(void **state)
{
	(void)state;
	for (hsm_key_spec s = HSM_SPEC_ECC_NIST_P256; s <= HSM_SPEC_ECC_SECG_P256K1; s++)
		for (unsigned a = 0; a < HSM_SIGN_COUNT; a++)
			if (hsm_spec_allows_sign_alg(s, (hsm_sign_alg)a))
				check_alg(s, (hsm_sign_alg)a);
}

/* ECDSA output is a DER SEQUENCE of two INTEGERs, as KMS returns it. */
static void test_ecdsa_signature_is_der(void **state)
{
	(void)state;
	hsm_buf sig = {0}, p1363 = {0};
	const hsm_material *m = fixture_key(HSM_SPEC_ECC_NIST_P521);
	assert_succeeds(hsm_sign(m, HSM_SIGN_ECDSA_SHA_512, HSM_MSG_RAW, msg, MSG_LEN, &sig));
	assert_int_equal(sig.data[0], 0x30);
	assert_succeeds(hsm_ecdsa_der_to_p1363(sig.data, sig.len, 66, &p1363));
	assert_int_equal(p1363.len, 132);
	hsm_buf_free(&sig);
	hsm_buf_free(&p1363);
}

static void test_ed25519(void **state)
{
	(void)state;
	const hsm_material *m = fixture_key(HSM_SPEC_ECC_NIST_EDWARDS25519);
	hsm_buf sig = {0}, pub = {0};
	uint8_t d[64] = {0};
	assert_succeeds(hsm_material_public_der(m, &pub));
	assert_succeeds(hsm_sign(m, HSM_SIGN_ED25519_SHA_512, HSM_MSG_RAW, msg, MSG_LEN, &sig));
	assert_int_equal(sig.len, 64);
	assert_succeeds(hsm_verify(m, HSM_SIGN_ED25519_SHA_512, HSM_MSG_RAW, msg, MSG_LEN, sig.data,
	                           sig.len));
	assert_succeeds(hsm_verify_pub(pub.data, pub.len, HSM_SIGN_ED25519_SHA_512, HSM_MSG_RAW, msg,
	                               MSG_LEN, sig.data, sig.len));
	assert_true(openssl_verifies(&pub, HSM_SIGN_ED25519_SHA_512, sig.data, sig.len));
	/* PureEdDSA has no pre-hashed form here: DIGEST is refused both ways. */
	hsm_buf none = {0};
	assert_fails_with(hsm_sign(m, HSM_SIGN_ED25519_SHA_512, HSM_MSG_DIGEST, d, 64, &none),
	                  HSM_ERR_VALIDATION);
	assert_int_equal(none.len, 0);
	assert_fails_with(hsm_verify(m, HSM_SIGN_ED25519_SHA_512, HSM_MSG_DIGEST, d, 64, sig.data,
	                             sig.len),
	                  HSM_ERR_VALIDATION);
	sig.data[10] ^= 1;
	expect_bad_signature(hsm_verify(m, HSM_SIGN_ED25519_SHA_512, HSM_MSG_RAW, msg, MSG_LEN,
	                                sig.data, sig.len));
	hsm_buf_free(&sig);
	hsm_buf_free(&pub);
}

static void test_empty_message(void **state)
{
	(void)state;
	static const hsm_key_spec specs[] = {HSM_SPEC_RSA_2048, HSM_SPEC_ECC_NIST_P256,
	                                     HSM_SPEC_ECC_NIST_EDWARDS25519};
	static const hsm_sign_alg algs[] = {HSM_SIGN_RSASSA_PSS_SHA_256, HSM_SIGN_ECDSA_SHA_256,
	                                    HSM_SIGN_ED25519_SHA_512};
	for (size_t i = 0; i < 3; i++) {
		hsm_buf sig = {0};
		const hsm_material *m = fixture_key(specs[i]);
		assert_succeeds(hsm_sign(m, algs[i], HSM_MSG_RAW, NULL, 0, &sig));
		assert_succeeds(hsm_verify(m, algs[i], HSM_MSG_RAW, NULL, 0, sig.data, sig.len));
		expect_bad_signature(
		    hsm_verify(m, algs[i], HSM_MSG_RAW, (const uint8_t *)"x", 1, sig.data, sig.len));
		hsm_buf_free(&sig);
	}
}

/* Garbage of any length is an invalid signature, never another error or a crash. */
static void test_garbage_signatures(void **state)
{
	(void)state;
	uint8_t junk[600];
	size_t lens[] = {0, 1, 8, 64, 71, 72, 256, 512, 513, sizeof(junk)};
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++) {
		if (!hsm_spec_is_asymmetric((hsm_key_spec)s))
			continue;
		for (unsigned a = 0; a < HSM_SIGN_COUNT; a++) {
			if (!hsm_spec_allows_sign_alg((hsm_key_spec)s, (hsm_sign_alg)a))
				continue;
			const hsm_material *m = fixture_key((hsm_key_spec)s);
			for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
				expect_bad_signature(hsm_verify(m, (hsm_sign_alg)a, HSM_MSG_RAW, msg, MSG_LEN,
				                                junk, lens[l]));
			expect_bad_signature(
			    hsm_verify(m, (hsm_sign_alg)a, HSM_MSG_RAW, msg, MSG_LEN, NULL, 0));
		}
	}
}

static void test_wrong_key_or_algorithm(void **state)
{
	(void)state;
	hsm_buf sig = {0}, pub = {0};
	const hsm_material *p256 = fixture_key(HSM_SPEC_ECC_NIST_P256);
	assert_fails_with(hsm_sign(p256, HSM_SIGN_ECDSA_SHA_384, HSM_MSG_RAW, msg, MSG_LEN, &sig),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_sign(p256, HSM_SIGN_RSASSA_PSS_SHA_256, HSM_MSG_RAW, msg, MSG_LEN, &sig),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_sign(fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT), HSM_SIGN_ECDSA_SHA_256,
	                           HSM_MSG_RAW, msg, MSG_LEN, &sig),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_verify(fixture_key(HSM_SPEC_HMAC_256), HSM_SIGN_ECDSA_SHA_256,
	                             HSM_MSG_RAW, msg, MSG_LEN, msg, 8),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_int_equal(sig.len, 0);
	/* A signature by one key does not verify under another key of the same spec. */
	hsm_material *other = NULL;
	assert_succeeds(hsm_material_generate(HSM_SPEC_ECC_NIST_P256, &other));
	assert_succeeds(hsm_sign(other, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW, msg, MSG_LEN, &sig));
	expect_bad_signature(
	    hsm_verify(p256, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW, msg, MSG_LEN, sig.data, sig.len));
	/* verify_pub: the SPKI decides the spec. */
	assert_succeeds(hsm_material_public_der(p256, &pub));
	assert_fails_with(hsm_verify_pub(pub.data, pub.len, HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_256,
	                                 HSM_MSG_RAW, msg, MSG_LEN, sig.data, sig.len),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_verify_pub(pub.data, 5, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW, msg,
	                                 MSG_LEN, sig.data, sig.len),
	                  HSM_ERR_VALIDATION);
	hsm_material_free(other);
	hsm_buf_free(&sig);
	hsm_buf_free(&pub);
}

/*
 * Signing contexts are copied from per-key templates made on first use: many
 * threads racing to make them, and then copying them, on fresh keys, with
 * every algorithm of the key interleaved; every signature must verify with
 * plain OpenSSL.
 */
typedef struct racer {
	const hsm_material *m;
	const hsm_buf *pub;
	const hsm_sign_alg *algs;
	size_t n_algs;
	pthread_barrier_t *start;
	atomic_int *bad;
} racer;

static void *race_sign(void *arg)
{
	racer *r = arg;
	pthread_barrier_wait(r->start);
	for (int i = 0; i < 40; i++) {
		hsm_sign_alg alg = r->algs[(size_t)i % r->n_algs];
		hsm_buf sig = {0};
		if (hsm_failed(hsm_sign(r->m, alg, HSM_MSG_RAW, msg, MSG_LEN, &sig)) ||
		    !openssl_verifies(r->pub, alg, sig.data, sig.len) ||
		    hsm_failed(hsm_verify(r->m, alg, HSM_MSG_RAW, msg, MSG_LEN, sig.data, sig.len)))
			atomic_fetch_add(r->bad, 1);
		hsm_buf_free(&sig);
	}
	return NULL;
}

static void test_concurrent_first_use(void **state)
{
	(void)state;
	static const hsm_sign_alg rsa_algs[] = {
	    HSM_SIGN_RSASSA_PSS_SHA_256, HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_256,
	    HSM_SIGN_RSASSA_PSS_SHA_512, HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_384};
	static const hsm_sign_alg ec_algs[] = {HSM_SIGN_ECDSA_SHA_256};
	const struct {
		hsm_key_spec spec;
		const hsm_sign_alg *algs;
		size_t n;
	} cases[] = {{HSM_SPEC_RSA_2048, rsa_algs, 4}, {HSM_SPEC_ECC_NIST_P256, ec_algs, 1}};
	enum { THREADS = 6 };
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		hsm_material *m = NULL;
		hsm_buf pub = {0};
		assert_succeeds(hsm_material_generate(cases[c].spec, &m));
		assert_succeeds(hsm_material_public_der(m, &pub));
		atomic_int bad = 0;
		pthread_barrier_t start;
		pthread_barrier_init(&start, NULL, THREADS);
		pthread_t t[THREADS];
		racer r = {m, &pub, cases[c].algs, cases[c].n, &start, &bad};
		for (int i = 0; i < THREADS; i++)
			assert_int_equal(pthread_create(&t[i], NULL, race_sign, &r), 0);
		for (int i = 0; i < THREADS; i++)
			pthread_join(t[i], NULL);
		pthread_barrier_destroy(&start);
		assert_int_equal(atomic_load(&bad), 0);
		hsm_buf_free(&pub);
		hsm_material_free(m);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rsa),
	    cmocka_unit_test(test_ecdsa),
	    cmocka_unit_test(test_ecdsa_signature_is_der),
	    cmocka_unit_test(test_ed25519),
	    cmocka_unit_test(test_empty_message),
	    cmocka_unit_test(test_garbage_signatures),
	    cmocka_unit_test(test_wrong_key_or_algorithm),
	    cmocka_unit_test(test_concurrent_first_use),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
