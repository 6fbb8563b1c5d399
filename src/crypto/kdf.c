/*
 * kdf.c - SHA-256, HKDF-SHA256 (RFC 5869) and the random generator.
 *
 * Secrets (keys, the domain master key) come from RAND_priv_bytes through
 * hsm_secret_random; hsm_random_bytes serves public values such as IVs and
 * GenerateRandom output from RAND_bytes, OpenSSL's separate public DRBG.
 */
#include <limits.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/rand.h>

#include "crypto/crypto_internal.h"

/* RFC 5869 section 2.3: L <= 255 * HashLen. */
#define HKDF_SHA256_MAX (255 * HSM_SHA256_LEN)

void hsm_sha256(const void *p, size_t n, uint8_t out[HSM_SHA256_LEN])
{
	static const uint8_t empty[1];
	unsigned int len = 0;
	/* Fails only if OpenSSL itself is broken: nothing a caller could handle. */
	HSM_ASSERT(EVP_Digest(n > 0 ? p : empty, n, out, &len, hsm_crypto_algs()->sha256, NULL) ==
	               1 &&
	           len == HSM_SHA256_LEN);
}

hsm_result hsm_hkdf_sha256(const hsm_secret *ikm, const uint8_t *salt, size_t salt_len,
                           const char *info, size_t out_len, hsm_secret **out)
{
	HSM_ASSERT(ikm != NULL && info != NULL && (salt != NULL || salt_len == 0));
	HSM_ENSURE(out_len > 0 && out_len <= HKDF_SHA256_MAX, HSM_ERR_VALIDATION,
	           "HKDF-SHA256 output must be 1 to %d bytes", HKDF_SHA256_MAX);
	hsm_result res = HSM_SUCCESS;
	hsm_secret *okm = NULL;
	hsm_buf params_data = {0}; /* writable copies: OSSL_PARAM takes non-const pointers */
	char md_name[] = "SHA256";
	size_t info_len = strlen(info);
	EVP_KDF_CTX *ctx = NULL;
	HSM_TRY(hsm_buf_put(&params_data, salt, salt_len));
	HSM_TRY(hsm_buf_put(&params_data, info, info_len));
	HSM_TRY(hsm_buf_reserve(&params_data, 0));
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, md_name, 0),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, hsm_secret_bytes(ikm),
	                                      hsm_secret_len(ikm)),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, params_data.data + salt_len,
	                                      info_len),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, params_data.data, salt_len),
	    OSSL_PARAM_construct_end(),
	};
	if (salt_len == 0)
		params[3] = OSSL_PARAM_construct_end(); /* RFC 5869 2.2: no salt = HashLen zeros */
	HSM_TRY(hsm_secret_new(out_len, &okm));
	ctx = EVP_KDF_CTX_new(hsm_crypto_algs()->hkdf);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_OSSL_CHECK(EVP_KDF_derive(ctx, hsm_secret_bytes(okm), out_len, params) == 1,
	               HSM_ERR_CRYPTO, "HKDF-SHA256 failed");
	*out = okm;
	okm = NULL;
out:
	EVP_KDF_CTX_free(ctx);
	hsm_secret_free(okm);
	hsm_buf_free(&params_data);
	return res;
}

hsm_result hsm_random_bytes(uint8_t *out, size_t n)
{
	HSM_ASSERT(out != NULL || n == 0);
	if (n == 0)
		return HSM_SUCCESS;
	HSM_ENSURE(n <= INT_MAX, HSM_ERR_VALIDATION, "too many random bytes requested");
	HSM_OSSL_ENSURE(RAND_bytes(out, (int)n) == 1, HSM_ERR_CRYPTO, "random generator failed");
	return HSM_SUCCESS;
}
