/*
 * kdf.c - SHA-256, HKDF-SHA256 (RFC 5869) and the random generator.
 *
 * Secrets (keys, the domain master key) come from RAND_priv_bytes through
 * hsm_secret_random; hsm_random_bytes serves public values such as
 * GenerateRandom output from RAND_bytes, OpenSSL's separate public DRBG, and
 * hsm_random_iv serves GCM IVs from the same DRBG through a per-thread pool.
 */
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "crypto/crypto_internal.h"

/* RFC 5869 section 2.3: L <= 255 * HashLen. */
#define HKDF_SHA256_MAX (255 * HSM_SHA256_LEN)

hsm_result hsm_sha256(const void *p, size_t n, uint8_t out[HSM_SHA256_LEN])
{
	static const uint8_t empty[1];
	unsigned int len = 0;
	/* EVP_Digest allocates a context: out of memory, it fails. */
	HSM_OSSL_ENSURE(EVP_Digest(n > 0 ? p : empty, n, out, &len, hsm_crypto_algs()->sha256, NULL) ==
	                        1 &&
	                    len == HSM_SHA256_LEN,
	                HSM_ERR_NOMEM, "out of memory");
	return HSM_SUCCESS;
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

/* ---- GCM IVs ------------------------------------------------------------- */

/*
 * Each GCM IV is 96 fresh bits from the public DRBG (NIST SP 800-38D section
 * 8.2.2, the RBG-based construction), but drawn from a per-thread pool filled
 * by one RAND_bytes call per IV_POOL_IVS IVs rather than one per encryption:
 * in OpenSSL 3.0 every RAND_bytes call takes a lock and makes a getpid()
 * system call (its fork check).
 *
 * Uniqueness rests on three rules.  A pool belongs to one thread
 * (thread-local), so no two threads read the same bytes.  Bytes are handed
 * out once and wiped as they go, so no used IV stays in memory or comes out
 * twice.  A refill that fails leaves the pool empty and the call fails: never
 * stale or zero bytes.  A new thread's pool starts empty; bytes a thread
 * leaves unused when it exits are never handed out.
 *
 * Fork: a child would inherit its parent's pool and repeat the parent's next
 * IVs under the same keys.  hsmd does not fork after start-up, but a
 * pthread_atfork child handler empties the pool of the forking thread (the
 * only thread the child has) all the same; if that handler cannot be
 * registered, every IV comes straight from RAND_bytes instead.
 */
#define IV_POOL_IVS (4096 / HSM_GCM_IV_LEN) /* 341 IVs, 4,092 bytes, per refill */
#define IV_POOL_BYTES (IV_POOL_IVS * HSM_GCM_IV_LEN)

typedef struct iv_pool {
	uint8_t bytes[IV_POOL_BYTES];
	size_t left; /* unused bytes, at the end of `bytes`; 0 = empty (the initial state) */
} iv_pool;

static _Thread_local iv_pool thread_pool;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static bool atfork_ok;

static void iv_pool_empty(iv_pool *p)
{
	OPENSSL_cleanse(p->bytes, sizeof(p->bytes));
	p->left = 0;
}

static void iv_pool_after_fork(void)
{
	iv_pool_empty(&thread_pool);
}

static void register_atfork(void)
{
	atfork_ok = pthread_atfork(NULL, NULL, iv_pool_after_fork) == 0;
}

hsm_result hsm_random_iv(uint8_t iv[HSM_GCM_IV_LEN])
{
	HSM_ASSERT(iv != NULL);
	iv_pool *p = &thread_pool;
	if (pthread_once(&atfork_once, register_atfork) != 0 || !atfork_ok)
		return hsm_random_bytes(iv, HSM_GCM_IV_LEN);
	if (p->left == 0) {
		if (RAND_bytes(p->bytes, (int)sizeof(p->bytes)) != 1) {
			iv_pool_empty(p); /* RAND_bytes may have written part of it */
			return HSM_OSSL_FAIL(HSM_ERR_CRYPTO, "random generator failed");
		}
		p->left = sizeof(p->bytes);
	}
	uint8_t *next = p->bytes + (sizeof(p->bytes) - p->left);
	memcpy(iv, next, HSM_GCM_IV_LEN);
	OPENSSL_cleanse(next, HSM_GCM_IV_LEN);
	p->left -= HSM_GCM_IV_LEN;
	return HSM_SUCCESS;
}
