/*
 * audit_hash.c - keyed hashes of values too sensitive to record in clear
 * (encryption context values): HMAC-SHA256 (RFC 2104) under the audit hash
 * key, which the keystore holds and passes in for each call.
 */
#include "audit/audit.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "audit/audit_format.h"

hsm_result hsm_audit_hash_value(const hsm_secret *key, const void *value, size_t n,
                                char out[HSM_AUDIT_HASH_HEX_LEN + 1])
{
	HSM_ASSERT(key != NULL && out != NULL && (value != NULL || n == 0));
	uint8_t mac[AUDIT_HASH_LEN];
	unsigned int len = 0;
	static const uint8_t empty[1] = {0};
	const uint8_t *msg = n > 0 ? value : empty;
	HSM_ENSURE(HMAC(EVP_sha256(), hsm_secret_bytes(key), (int)hsm_secret_len(key), msg, n, mac,
	                &len) != NULL &&
	               len == AUDIT_HASH_LEN,
	           HSM_ERR_CRYPTO, "HMAC-SHA256 failed");
	audit_hex32(mac, out);
	OPENSSL_cleanse(mac, sizeof(mac));
	return HSM_SUCCESS;
}
