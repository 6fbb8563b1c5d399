/*
 * api_gcm.c - hsmd's plain AES-GCM (X-Amz-Target HsmdCipher.<Op>; kms/gcm.c):
 *
 *   GcmEncrypt {KeyId, Plaintext, AdditionalData?}
 *     -> {KeyId, Ciphertext (ciphertext || 16-byte tag), Iv (12 bytes)}
 *   GcmDecrypt {KeyId, Ciphertext, Iv, AdditionalData?} -> {KeyId, Plaintext}
 *
 * Blobs are base64 as in the KMS API.  Plaintext 0-65536 bytes,
 * AdditionalData 0-8192.  The IV is always hsmd's: GcmEncrypt takes none.
 * The audit record names the key and version and the algorithm
 * (AES_256_GCM); never data.
 */
#include <string.h>

#include "server/api.h"

#define ALG "AES_256_GCM"

bool hsm_api_is_cipher_op(hsm_op op)
{
	return op == HSM_OP_GcmEncrypt || op == HSM_OP_GcmDecrypt || op == HSM_OP_GetKeyCheckValue;
}

hsm_result hsm_api_gcm_encrypt(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	const char *key;
	hsm_buf pt, aad = {0}, ct = {0};
	hsm_used_key used;
	uint8_t iv[HSM_GCM_IV_LEN];
	bool present;
	hsm_buf_init_secure(&pt);
	HSM_TRY(hsm_api_key_id(c, "KeyId", &key));
	HSM_TRY(hsm_json_blob(c->req, "Plaintext", true, 0, HSM_GCM_MAX_DATA, &pt, &present));
	HSM_TRY(hsm_json_blob(c->req, "AdditionalData", false, 0, HSM_GCM_MAX_AAD, &aad, &present));
	HSM_CHECK(json_object_get(c->req, "Iv") == NULL, HSM_ERR_VALIDATION,
	          "Iv is hsmd's to choose: GcmEncrypt takes none and returns the one it drew");
	hsm_api_note_ref(c, key);
	c->audit.algorithm = ALG;
	HSM_TRY(hsm_kms_gcm_encrypt(c->kms, c->caller, key, aad.data, aad.len, pt.data, pt.len, iv,
	                            &ct, &used));
	hsm_api_note_key(c, &used);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_b64(c->w, "Ciphertext", ct.data, ct.len);
	hsm_jw_b64(c->w, "Iv", iv, sizeof(iv));
out:
	hsm_buf_free(&pt);
	hsm_buf_free(&aad);
	hsm_buf_free(&ct);
	return res;
}

hsm_result hsm_api_gcm_decrypt(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	const char *key;
	hsm_buf pt, aad = {0}, ct = {0}, iv = {0};
	hsm_used_key used;
	bool present;
	hsm_buf_init_secure(&pt);
	HSM_TRY(hsm_api_key_id(c, "KeyId", &key));
	HSM_TRY(hsm_json_blob(c->req, "Ciphertext", true, HSM_GCM_TAG_LEN,
	                      HSM_GCM_MAX_DATA + HSM_GCM_TAG_LEN, &ct, &present));
	HSM_TRY(hsm_json_blob(c->req, "Iv", true, HSM_GCM_IV_LEN, HSM_GCM_IV_LEN, &iv, &present));
	HSM_TRY(hsm_json_blob(c->req, "AdditionalData", false, 0, HSM_GCM_MAX_AAD, &aad, &present));
	hsm_api_note_ref(c, key);
	c->audit.algorithm = ALG;
	HSM_TRY(hsm_kms_gcm_decrypt(c->kms, c->caller, key, iv.data, aad.data, aad.len, ct.data,
	                            ct.len, &pt, &used));
	hsm_api_note_key(c, &used);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_b64(c->w, "Plaintext", pt.data, pt.len);
out:
	hsm_buf_free(&pt);
	hsm_buf_free(&aad);
	hsm_buf_free(&ct);
	hsm_buf_free(&iv);
	return res;
}

/* KeyCheckValue: uppercase hex, as key check values are written down and compared. */
hsm_result hsm_api_get_key_check_value(hsm_api_ctx *c)
{
	const char *key;
	uint8_t kcv[HSM_KCV_LEN];
	hsm_kcv_alg alg;
	hsm_used_key used;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	hsm_api_note_ref(c, key);
	HSM_GUARD(hsm_kms_key_check_value(c->kms, c->caller, key, kcv, &alg, &used));
	hsm_api_note_key(c, &used);
	char hex[2 * HSM_KCV_LEN + 1];
	static const char digits[] = "0123456789ABCDEF";
	for (size_t i = 0; i < HSM_KCV_LEN; i++) {
		hex[2 * i] = digits[kcv[i] >> 4];
		hex[2 * i + 1] = digits[kcv[i] & 15];
	}
	hex[2 * HSM_KCV_LEN] = '\0';
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_str(c->w, "KeyCheckValue", hex);
	hsm_jw_str(c->w, "KeyCheckValueAlgorithm", hsm_kcv_alg_name(alg));
	return HSM_SUCCESS;
}
