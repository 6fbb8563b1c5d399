/*
 * kwp.c - AES key wrap with padding, RFC 5649 (NIST SP 800-38F KWP), with a
 * 256-bit key-encryption key, through OpenSSL's "AES-256-WRAP-PAD" cipher.
 *
 * A wrap cipher works in one update call: the whole input at once.  Unwrap
 * checks the integrity value and the padding (RFC 5649 section 3); like
 * every decryption in hsmd it fails with one error and message and releases
 * nothing unless the checks passed.
 */
#include <string.h>

#include "crypto/crypto_internal.h"

#define KWP_BLOCK 8

static EVP_CIPHER_CTX *kwp_ctx(const hsm_secret *kek, bool wrap)
{
	HSM_ASSERT(kek != NULL && hsm_secret_len(kek) == HSM_AES_KEY_LEN);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (ctx == NULL)
		return NULL;
	EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	if (EVP_CipherInit_ex2(ctx, hsm_crypto_algs()->aes_256_kwp, hsm_secret_bytes(kek), NULL,
	                       wrap ? 1 : 0, NULL) != 1) {
		EVP_CIPHER_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

hsm_result hsm_aes_kwp_wrap_raw(const hsm_secret *kek, const uint8_t *pt, size_t pt_len,
                                hsm_buf *out)
{
	/* RFC 5649 section 4.1 wraps 1 to 2^32 - 1 bytes; hsmd never needs more than a key. */
	HSM_ENSURE(pt != NULL && pt_len > 0 && pt_len <= HSM_BUF_MAX / 2, HSM_ERR_VALIDATION,
	           "key wrap takes 1 to %zu bytes", (size_t)HSM_BUF_MAX / 2);
	size_t want = (pt_len + KWP_BLOCK - 1) / KWP_BLOCK * KWP_BLOCK + KWP_BLOCK;
	hsm_result res = HSM_SUCCESS;
	size_t old = out->len;
	uint8_t *p;
	int n = 0, fin = 0;
	EVP_CIPHER_CTX *ctx = kwp_ctx(kek, true);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_CRYPTO, "cannot set up AES key wrap");
	HSM_TRY(hsm_buf_append_space(out, want, &p));
	HSM_OSSL_CHECK(EVP_EncryptUpdate(ctx, p, &n, pt, (int)pt_len) == 1 && (size_t)n == want &&
	                   EVP_EncryptFinal_ex(ctx, p + n, &fin) == 1 && fin == 0,
	               HSM_ERR_CRYPTO, "AES key wrap failed");
out:
	if (hsm_failed(res))
		out->len = old;
	EVP_CIPHER_CTX_free(ctx);
	return res;
}

hsm_result hsm_aes_kwp_unwrap_raw(const hsm_secret *kek, const uint8_t *ct, size_t ct_len,
                                  hsm_buf *pt_out)
{
	HSM_ASSERT(pt_out->secure);
	/* RFC 5649 section 3: at least two 64-bit blocks, and whole blocks only. */
	HSM_ENSURE(ct != NULL && ct_len >= 2 * KWP_BLOCK && ct_len % KWP_BLOCK == 0 &&
	               ct_len <= HSM_BUF_MAX,
	           HSM_ERR_INVALID_CIPHERTEXT, HSM_MSG_BAD_CIPHERTEXT);
	hsm_result res = HSM_SUCCESS;
	size_t old = pt_out->len;
	uint8_t *p = NULL;
	int n = 0, fin = 0;
	EVP_CIPHER_CTX *ctx = kwp_ctx(kek, false);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_CRYPTO, "cannot set up AES key unwrap");
	/* The provider wants room for the whole input, though the key is 8+ bytes shorter. */
	HSM_TRY(hsm_buf_append_space(pt_out, ct_len, &p));
	pt_out->len = old;
	HSM_OSSL_CHECK(EVP_DecryptUpdate(ctx, p, &n, ct, (int)ct_len) == 1 && n > 0 &&
	                   (size_t)n <= ct_len - KWP_BLOCK &&
	                   EVP_DecryptFinal_ex(ctx, p + n, &fin) == 1 && fin == 0,
	               HSM_ERR_INVALID_CIPHERTEXT, HSM_MSG_BAD_CIPHERTEXT);
	OPENSSL_cleanse(p + n, ct_len - (size_t)n);
	pt_out->len = old + (size_t)n;
out:
	if (hsm_failed(res) && p != NULL)
		OPENSSL_cleanse(p, ct_len);
	EVP_CIPHER_CTX_free(ctx);
	return res;
}

static hsm_result check_material(const hsm_material *m)
{
	HSM_ENSURE(hsm_material_spec(m) == HSM_SPEC_SYMMETRIC_DEFAULT, HSM_ERR_INVALID_KEY_USAGE,
	           "KeySpec %s cannot be used for AES key wrap",
	           hsm_spec_name(hsm_material_spec(m)));
	return HSM_SUCCESS;
}

hsm_result hsm_aes_kwp_wrap(const hsm_material *m, const uint8_t *pt, size_t pt_len, hsm_buf *out)
{
	HSM_GUARD(check_material(m));
	return hsm_aes_kwp_wrap_raw(hsm_material_secret(m), pt, pt_len, out);
}

hsm_result hsm_aes_kwp_unwrap(const hsm_material *m, const uint8_t *ct, size_t ct_len,
                              hsm_buf *pt_out)
{
	HSM_GUARD(check_material(m));
	return hsm_aes_kwp_unwrap_raw(hsm_material_secret(m), ct, ct_len, pt_out);
}
