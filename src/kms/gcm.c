/*
 * gcm.c - GcmEncrypt and GcmDecrypt: plain AES-256-GCM with a symmetric
 * key, for what speaks AES-GCM itself (PKCS#11 CKM_AES_GCM through
 * libhsm_pkcs11.so) rather than KMS's self-describing ciphertexts.
 *
 * hsmd draws every IV (as AWS CloudHSM does for CKM_AES_GCM): a caller that
 * chose its own could repeat one, and a repeated GCM nonce gives away the
 * authentication key and the XOR of the plaintexts.  The output is the
 * standard GCM ciphertext and 16-byte tag, so material imported into the key
 * (BYOK) opens it anywhere.  Nothing in it names the key version: decryption
 * tries the versions the key uses, newest first, and only the one that made
 * it verifies the tag (a forgery that verifies under some version is as
 * hard as against one key).  Expect one attempt per rotation since; when
 * none verifies, the key is read again once (kms_key_moved), for a version
 * another node sharing the store rotated in.
 *
 * The blobs of Encrypt and the GenerateDataKey family use the same material,
 * authenticated with their header and encryption context as AAD: additional
 * data that begins as such a header is refused (crypto/blob.h), or
 * GcmDecrypt would open blobs that the policy's kms:Decrypt conditions and
 * grants deny.
 *
 * GetKeyCheckValue, beside them, tells an AES or HMAC key's check value.
 */
#include <string.h>

#include "crypto/blob.h"
#include "kms/kms_internal.h"

static hsm_result require_aes(const kms_key *k)
{
	HSM_ENSURE(k->rec.spec == HSM_SPEC_SYMMETRIC_DEFAULT &&
	               k->rec.usage == HSM_USAGE_ENCRYPT_DECRYPT,
	           HSM_ERR_INVALID_KEY_USAGE,
	           "%s is a %s %s key: AES-GCM needs a SYMMETRIC_DEFAULT ENCRYPT_DECRYPT key",
	           k->arn, hsm_spec_name(k->rec.spec), hsm_usage_name(k->rec.usage));
	return HSM_SUCCESS;
}

static hsm_result check_aad(size_t aad_len)
{
	HSM_ENSURE(aad_len <= HSM_GCM_MAX_AAD, HSM_ERR_VALIDATION,
	           "AdditionalData must be at most %d bytes", HSM_GCM_MAX_AAD);
	return HSM_SUCCESS;
}

hsm_result hsm_kms_gcm_encrypt(hsm_kms *kms, const hsm_caller *caller, const char *key,
                               const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                               size_t pt_len, uint8_t iv[12], hsm_buf *ct, hsm_used_key *used)
{
	kms_key *k = NULL;
	HSM_GUARD(check_aad(aad_len));
	HSM_ENSURE(pt_len <= HSM_GCM_MAX_DATA, HSM_ERR_VALIDATION,
	           "Plaintext must be at most %d bytes", HSM_GCM_MAX_DATA);
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_GcmEncrypt, key, NULL, &k));
	hsm_result r = require_aes(k);
	if (hsm_ok(r))
		r = hsm_blob_refuse_header_aad(aad, aad_len, k->rec.key_id, NULL);
	if (hsm_ok(r))
		r = kms_dry_run_stop(caller);
	if (hsm_ok(r)) {
		hsm_ks_keyref ref = kms_keyref(k, k->rec.primary_version);
		r = hsm_ks_gcm_seal(kms->ks, &ref, aad, aad_len, pt, pt_len, iv, ct);
		if (hsm_ok(r))
			kms_used(k, ref.version, used);
	}
	kms_key_release(k);
	return r;
}

/* GcmDecrypt's key: looked up, authorized and checked; released on failure. */
static hsm_result decrypt_lookup(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                 const uint8_t iv[12], const uint8_t *aad, size_t aad_len,
                                 kms_key **out)
{
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_GcmDecrypt, key, NULL, out));
	hsm_result r = require_aes(*out);
	if (hsm_ok(r))
		r = hsm_blob_refuse_header_aad(aad, aad_len, (*out)->rec.key_id, iv);
	if (hsm_failed(r)) {
		kms_key_release(*out);
		*out = NULL;
	}
	return r;
}

/*
 * Tries k's versions newest first, down to the one above `tried` (those
 * were tried already); only the one that sealed the ciphertext verifies its
 * tag.  One uniform failure when none does.
 */
static hsm_result open_above(hsm_kms *kms, const kms_key *k, uint32_t tried, const uint8_t iv[12],
                             const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                             size_t ct_len, hsm_buf *pt, hsm_used_key *used)
{
	for (uint32_t v = k->rec.primary_version; v > tried; v--) {
		hsm_ks_keyref ref = kms_keyref(k, v);
		hsm_result r = hsm_ks_gcm_open(kms->ks, &ref, iv, aad, aad_len, ct, ct_len, pt);
		if (hsm_ok(r))
			kms_used(k, v, used);
		else
			hsm_buf_clear(pt);
		if (r.err != HSM_ERR_INVALID_CIPHERTEXT)
			return r;
	}
	return HSM_FAIL(HSM_ERR_INVALID_CIPHERTEXT,
	                "The ciphertext, IV or additional data is not valid for this key");
}

hsm_result hsm_kms_gcm_decrypt(hsm_kms *kms, const hsm_caller *caller, const char *key,
                               const uint8_t iv[12], const uint8_t *aad, size_t aad_len,
                               const uint8_t *ct, size_t ct_len, hsm_buf *pt, hsm_used_key *used)
{
	kms_key *k = NULL;
	HSM_GUARD(check_aad(aad_len));
	HSM_ENSURE(ct_len >= HSM_GCM_TAG_LEN && ct_len <= HSM_GCM_MAX_DATA + HSM_GCM_TAG_LEN,
	           HSM_ERR_VALIDATION, "Ciphertext must be %d to %d bytes (the tag included)",
	           HSM_GCM_TAG_LEN, HSM_GCM_MAX_DATA + HSM_GCM_TAG_LEN);
	HSM_GUARD(decrypt_lookup(kms, caller, key, iv, aad, aad_len, &k));
	uint32_t tried = k->rec.primary_version;
	hsm_result r = open_above(kms, k, 0, iv, aad, aad_len, ct, ct_len, pt, used);
	if (r.err == HSM_ERR_INVALID_CIPHERTEXT) {
		/* Perhaps sealed with a version another node sharing the store rotated in since. */
		bool moved = false;
		r = kms_key_moved(kms, &k, &moved);
		if (hsm_ok(r) && moved)
			r = decrypt_lookup(kms, caller, key, iv, aad, aad_len, &k);
		if (hsm_ok(r))
			r = open_above(kms, k, tried, iv, aad, aad_len, ct, ct_len, pt, used);
	}
	kms_key_release(k);
	/* A dry run opens the ciphertext too (kms.h, dry_run): a forged one fails as ever. */
	if (hsm_ok(r) && caller->dry_run) {
		hsm_buf_clear(pt);
		r = kms_dry_run_stop(caller);
	}
	return r;
}

hsm_result hsm_kms_key_check_value(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                   uint8_t kcv[HSM_KCV_LEN], hsm_kcv_alg *alg, hsm_used_key *used)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_GetKeyCheckValue, key, NULL, &k));
	hsm_result r = HSM_SUCCESS;
	if (hsm_spec_is_asymmetric(k->rec.spec))
		r = HSM_FAIL(HSM_ERR_UNSUPPORTED_OPERATION,
		             "%s is a %s key: key check values are for AES and HMAC keys", k->arn,
		             hsm_spec_name(k->rec.spec));
	if (hsm_ok(r)) {
		hsm_ks_keyref ref = kms_keyref(k, k->rec.primary_version);
		r = hsm_ks_check_value(kms->ks, &ref, kcv, alg);
		if (hsm_ok(r))
			kms_used(k, ref.version, used);
	}
	kms_key_release(k);
	return r;
}
