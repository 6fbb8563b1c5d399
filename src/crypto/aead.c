/*
 * aead.c - AES-256-GCM (NIST SP 800-38D) with a 96-bit IV and a 128-bit tag,
 * the only configuration hsmd uses.
 *
 * Opening follows libsodium's crypto_secretbox_open_detached: the plaintext
 * is decrypted into space the caller cannot see yet (beyond pt_out->len),
 * and becomes part of pt_out only once the tag verified; on failure that
 * space is wiped.  Every failure gives the same error and message.
 */
#include <string.h>

#include "crypto/crypto_internal.h"

static hsm_result check_material(const hsm_material *m)
{
	HSM_ENSURE(hsm_material_spec(m) == HSM_SPEC_SYMMETRIC_DEFAULT, HSM_ERR_INVALID_KEY_USAGE,
	           "KeySpec %s cannot be used with AES-GCM", hsm_spec_name(hsm_material_spec(m)));
	return HSM_SUCCESS;
}

static void check_args(const hsm_secret *key, const uint8_t *aad, size_t aad_len,
                       const uint8_t *in, size_t in_len)
{
	HSM_ASSERT(key != NULL && hsm_secret_len(key) == HSM_AES_KEY_LEN);
	HSM_ASSERT(aad != NULL || aad_len == 0);
	HSM_ASSERT(in != NULL || in_len == 0);
}

hsm_result hsm_aes_gcm_seal_raw(const hsm_secret *key, const uint8_t iv[HSM_GCM_IV_LEN],
                                const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                                size_t pt_len, hsm_buf *ct_out, uint8_t tag[HSM_GCM_TAG_LEN])
{
	check_args(key, aad, aad_len, pt, pt_len);
	HSM_ENSURE(aad_len <= HSM_BUF_MAX && pt_len <= HSM_BUF_MAX, HSM_ERR_LIMIT_EXCEEDED,
	           "input too long for AES-GCM");
	hsm_result res = HSM_SUCCESS;
	size_t old = ct_out->len;
	uint8_t *p = NULL;
	int n = 0;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_OSSL_CHECK(EVP_EncryptInit_ex2(ctx, hsm_crypto_algs()->aes_256_gcm,
	                                   hsm_secret_bytes(key), iv, NULL) == 1,
	               HSM_ERR_CRYPTO, "cannot set up AES-GCM");
	if (aad_len > 0)
		HSM_OSSL_CHECK(EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1,
		               HSM_ERR_CRYPTO, "AES-GCM failed");
	HSM_TRY(hsm_buf_append_space(ct_out, pt_len, &p));
	if (pt_len > 0)
		HSM_OSSL_CHECK(EVP_EncryptUpdate(ctx, p, &n, pt, (int)pt_len) == 1 &&
		                   (size_t)n == pt_len,
		               HSM_ERR_CRYPTO, "AES-GCM failed");
	HSM_OSSL_CHECK(EVP_EncryptFinal_ex(ctx, p + pt_len, &n) == 1 && n == 0 &&
	                   EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, HSM_GCM_TAG_LEN, tag) == 1,
	               HSM_ERR_CRYPTO, "AES-GCM failed");
out:
	if (hsm_failed(res))
		ct_out->len = old;
	EVP_CIPHER_CTX_free(ctx); /* clears the key schedule */
	return res;
}

hsm_result hsm_aes_gcm_open_raw(const hsm_secret *key, const uint8_t iv[HSM_GCM_IV_LEN],
                                const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                                size_t ct_len, const uint8_t tag[HSM_GCM_TAG_LEN],
                                hsm_buf *pt_out)
{
	check_args(key, aad, aad_len, ct, ct_len);
	HSM_ASSERT(pt_out->secure);
	HSM_ENSURE(aad_len <= HSM_BUF_MAX && ct_len <= HSM_BUF_MAX, HSM_ERR_INVALID_CIPHERTEXT,
	           HSM_MSG_BAD_CIPHERTEXT);
	hsm_result res = HSM_SUCCESS;
	size_t old = pt_out->len;
	uint8_t *p = NULL;
	uint8_t tag_copy[HSM_GCM_TAG_LEN];
	int n = 0;
	memcpy(tag_copy, tag, sizeof(tag_copy)); /* the ctrl takes a non-const pointer */
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_OSSL_CHECK(EVP_DecryptInit_ex2(ctx, hsm_crypto_algs()->aes_256_gcm,
	                                   hsm_secret_bytes(key), iv, NULL) == 1,
	               HSM_ERR_CRYPTO, "cannot set up AES-GCM");
	if (aad_len > 0)
		HSM_OSSL_CHECK(EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1,
		               HSM_ERR_INVALID_CIPHERTEXT, HSM_MSG_BAD_CIPHERTEXT);
	HSM_TRY(hsm_buf_append_space(pt_out, ct_len, &p));
	pt_out->len = old; /* not released until the tag verifies */
	if (ct_len > 0)
		HSM_OSSL_CHECK(EVP_DecryptUpdate(ctx, p, &n, ct, (int)ct_len) == 1 &&
		                   (size_t)n == ct_len,
		               HSM_ERR_INVALID_CIPHERTEXT, HSM_MSG_BAD_CIPHERTEXT);
	HSM_OSSL_CHECK(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, HSM_GCM_TAG_LEN, tag_copy) ==
	                       1 &&
	                   EVP_DecryptFinal_ex(ctx, p + ct_len, &n) == 1 && n == 0,
	               HSM_ERR_INVALID_CIPHERTEXT, HSM_MSG_BAD_CIPHERTEXT);
	pt_out->len = old + ct_len;
out:
	if (hsm_failed(res) && p != NULL)
		OPENSSL_cleanse(p, ct_len);
	EVP_CIPHER_CTX_free(ctx);
	return res;
}

hsm_result hsm_aes_gcm_seal(const hsm_material *m, const uint8_t iv[HSM_GCM_IV_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t pt_len,
                            hsm_buf *ct_out, uint8_t tag[HSM_GCM_TAG_LEN])
{
	HSM_GUARD(check_material(m));
	return hsm_aes_gcm_seal_raw(hsm_material_secret(m), iv, aad, aad_len, pt, pt_len, ct_out,
	                            tag);
}

hsm_result hsm_aes_gcm_open(const hsm_material *m, const uint8_t iv[HSM_GCM_IV_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t ct_len,
                            const uint8_t tag[HSM_GCM_TAG_LEN], hsm_buf *pt_out)
{
	HSM_GUARD(check_material(m));
	return hsm_aes_gcm_open_raw(hsm_material_secret(m), iv, aad, aad_len, ct, ct_len, tag,
	                            pt_out);
}
