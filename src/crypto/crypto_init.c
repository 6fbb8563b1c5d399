/*
 * crypto_init.c - fetches every algorithm implementation hsmd uses, once.
 *
 * OpenSSL 3 resolves "implicit fetches" (EVP_aes_256_gcm(), EVP_sha256(), a
 * name passed to EVP_MAC_fetch ...) through its method store on every
 * operation; holding explicitly fetched handles removes that lookup from the
 * hot path (OpenSSL 3 "crypto(7)", section "Performance").  The handles are
 * immutable and may be used by any number of threads at once.
 */
#include <pthread.h>
#include <string.h>

#include "crypto/crypto_internal.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static hsm_algs algs;
static bool init_ok;

static void fetch_all(void)
{
	algs.aes_256_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	algs.aes_256_kwp = EVP_CIPHER_fetch(NULL, "AES-256-WRAP-PAD", NULL);
	algs.aes_256_ecb = EVP_CIPHER_fetch(NULL, "AES-256-ECB", NULL);
	algs.sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
	algs.sha224 = EVP_MD_fetch(NULL, "SHA224", NULL);
	algs.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	algs.sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
	algs.sha512 = EVP_MD_fetch(NULL, "SHA512", NULL);
	algs.hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	algs.hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	init_ok = algs.aes_256_gcm != NULL && algs.aes_256_kwp != NULL &&
	          algs.aes_256_ecb != NULL && algs.sha1 != NULL &&
	          algs.sha224 != NULL && algs.sha256 != NULL && algs.sha384 != NULL &&
	          algs.sha512 != NULL && algs.hmac != NULL && algs.hkdf != NULL;
	if (!init_ok)
		ERR_clear_error();
}

hsm_result hsm_crypto_init(void)
{
	HSM_ENSURE(pthread_once(&init_once, fetch_all) == 0, HSM_ERR_INTERNAL,
	           "cannot initialize the cryptographic library");
	HSM_ENSURE(init_ok, HSM_ERR_CRYPTO,
	           "the OpenSSL default provider lacks an algorithm hsmd needs");
	return HSM_SUCCESS;
}

const hsm_algs *hsm_crypto_algs(void)
{
	/* Every entry point reaches here, so forgetting hsm_crypto_init() is harmless. */
	HSM_ASSERT(pthread_once(&init_once, fetch_all) == 0);
	HSM_ASSERT(init_ok);
	return &algs;
}

const EVP_MD *hsm_crypto_md(const char *name)
{
	const hsm_algs *a = hsm_crypto_algs();
	if (strcmp(name, "SHA256") == 0)
		return a->sha256;
	if (strcmp(name, "SHA384") == 0)
		return a->sha384;
	if (strcmp(name, "SHA512") == 0)
		return a->sha512;
	if (strcmp(name, "SHA224") == 0)
		return a->sha224;
	if (strcmp(name, "SHA1") == 0)
		return a->sha1;
	return NULL;
}

void hsm_crypto_watch(void)
{
	hsm_ossl_watch();
}

bool hsm_crypto_ran_out(void)
{
	return hsm_ossl_ran_out();
}

bool hsm_ossl_drop_errors(void)
{
	bool nomem = false;
	unsigned long e;
	while ((e = ERR_get_error()) != 0)
		if (ERR_GET_REASON(e) == ERR_GET_REASON(ERR_R_MALLOC_FAILURE))
			nomem = true;
	return nomem;
}
