/*
 * rsa_oaep.c - RSAES-OAEP as AWS KMS offers it (API reference, "Encrypt",
 * EncryptionAlgorithm RSAES_OAEP_SHA_1 / RSAES_OAEP_SHA_256): RFC 8017
 * section 7.1 with that hash for both the label hash and MGF1, and an empty
 * label.
 *
 * Decryption failures of every kind return the same error and message and
 * release nothing: the difference between "bad padding" and "bad length" must
 * not be observable (Manger's attack, CRYPTO 2001).
 */
#include <string.h>

#include <openssl/rsa.h>

#include "crypto/crypto_internal.h"

static const EVP_MD *oaep_md(hsm_enc_alg alg)
{
	const hsm_algs *a = hsm_crypto_algs();
	return alg == HSM_ENC_RSAES_OAEP_SHA_1 ? a->sha1 : a->sha256;
}

static bool configure(EVP_PKEY_CTX *ctx, hsm_enc_alg alg)
{
	const EVP_MD *md = oaep_md(alg);
	return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
	       EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) > 0 && EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) > 0;
}

static hsm_result check_alg(hsm_key_spec spec, hsm_enc_alg alg)
{
	HSM_ENSURE(alg != HSM_ENC_SYMMETRIC_DEFAULT &&
	               hsm_spec_allows_enc_alg(spec, HSM_USAGE_ENCRYPT_DECRYPT, alg),
	           HSM_ERR_INVALID_KEY_USAGE, "EncryptionAlgorithm %s is not valid for KeySpec %s",
	           hsm_enc_alg_name(alg), hsm_spec_name(spec));
	return HSM_SUCCESS;
}

hsm_result hsm_pkey_oaep_encrypt(EVP_PKEY *pkey, hsm_key_spec spec, hsm_enc_alg alg,
                                 const uint8_t *pt, size_t pt_len, hsm_buf *out)
{
	size_t max = hsm_rsa_oaep_max_plaintext(spec, alg);
	HSM_ENSURE(pt_len <= max, HSM_ERR_VALIDATION,
	           "Plaintext is %zu bytes; %s with %s takes at most %zu", pt_len,
	           hsm_enc_alg_name(alg), hsm_spec_name(spec), max);
	static const uint8_t empty[1];
	if (pt == NULL) {
		HSM_ASSERT(pt_len == 0);
		pt = empty;
	}
	hsm_result res = HSM_SUCCESS;
	size_t old = out->len, len = 0;
	uint8_t *p;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_OSSL_CHECK(EVP_PKEY_encrypt_init(ctx) == 1 && configure(ctx, alg) &&
	                   EVP_PKEY_encrypt(ctx, NULL, &len, pt, pt_len) == 1,
	               HSM_ERR_CRYPTO, "cannot set up %s", hsm_enc_alg_name(alg));
	HSM_TRY(hsm_buf_append_space(out, len, &p));
	HSM_OSSL_CHECK(EVP_PKEY_encrypt(ctx, p, &len, pt, pt_len) == 1, HSM_ERR_CRYPTO,
	               "%s encryption failed", hsm_enc_alg_name(alg));
	out->len = old + len;
out:
	if (hsm_failed(res))
		out->len = old;
	EVP_PKEY_CTX_free(ctx);
	return res;
}

hsm_result hsm_rsa_oaep_encrypt(const hsm_material *m, hsm_enc_alg alg, const uint8_t *pt,
                                size_t pt_len, hsm_buf *out)
{
	HSM_GUARD(check_alg(hsm_material_spec(m), alg));
	return hsm_pkey_oaep_encrypt(hsm_material_pkey(m), hsm_material_spec(m), alg, pt, pt_len,
	                             out);
}

hsm_result hsm_rsa_oaep_encrypt_pub(const uint8_t *spki, size_t spki_len, hsm_enc_alg alg,
                                    const uint8_t *pt, size_t pt_len, hsm_buf *out)
{
	EVP_PKEY *pkey = NULL;
	hsm_key_spec spec;
	HSM_GUARD(hsm_spki_parse(spki, spki_len, &pkey));
	hsm_result res = hsm_pkey_spec(pkey, &spec);
	if (hsm_ok(res))
		res = check_alg(spec, alg);
	if (hsm_ok(res))
		res = hsm_pkey_oaep_encrypt(pkey, spec, alg, pt, pt_len, out);
	EVP_PKEY_free(pkey);
	return res;
}

hsm_result hsm_rsa_oaep_decrypt(const hsm_material *m, hsm_enc_alg alg, const uint8_t *ct,
                                size_t ct_len, hsm_buf *pt_out)
{
	HSM_ASSERT(pt_out->secure);
	HSM_GUARD(check_alg(hsm_material_spec(m), alg));
	EVP_PKEY *pkey = hsm_material_pkey(m);
	size_t k = (size_t)EVP_PKEY_get_size(pkey), old = pt_out->len, len = k;
	/* The length is public: a ciphertext is always exactly k bytes (RFC 8017 7.1.2 step 1). */
	HSM_ENSURE(ct != NULL && ct_len == k, HSM_ERR_INVALID_CIPHERTEXT, HSM_MSG_BAD_CIPHERTEXT);

	hsm_result res = HSM_SUCCESS;
	uint8_t *p = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_OSSL_CHECK(EVP_PKEY_decrypt_init(ctx) == 1 && configure(ctx, alg), HSM_ERR_CRYPTO,
	               "cannot set up %s", hsm_enc_alg_name(alg));
	HSM_TRY(hsm_buf_append_space(pt_out, k, &p));
	HSM_OSSL_CHECK(EVP_PKEY_decrypt(ctx, p, &len, ct, ct_len) == 1 && len <= k,
	               HSM_ERR_INVALID_CIPHERTEXT, HSM_MSG_BAD_CIPHERTEXT);
	OPENSSL_cleanse(p + len, k - len); /* the constant-time unpadding may write past len */
	pt_out->len = old + len;
out:
	if (hsm_failed(res) && p != NULL) {
		OPENSSL_cleanse(p, k);
		pt_out->len = old;
	}
	EVP_PKEY_CTX_free(ctx);
	return res;
}
