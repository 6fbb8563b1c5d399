/*
 * sign.c - Sign, Verify, GenerateMac, VerifyMac, GetPublicKey.
 *
 * Signing and MAC generation use the primary version.  Signatures and MACs
 * carry no version, so Verify and VerifyMac try the versions newest first:
 * after a rotation, values made with an older version keep verifying.  When
 * none verifies, the key is read again once (kms_key_moved): another node
 * sharing the store may have rotated it and signed with the new version.  A
 * mismatch is an error (KMSInvalidSignatureException /
 * KMSInvalidMacException), never a "false" result, as in KMS.
 */
#include <string.h>

#include "kms/kms_internal.h"

#define MAX_SIGNATURE 6144 /* Verify Signature: 1-6144 bytes */
#define MAX_MAC 6144

static hsm_result require_sign_alg(const kms_key *k, hsm_sign_alg alg)
{
	HSM_ENSURE(k->rec.usage == HSM_USAGE_SIGN_VERIFY, HSM_ERR_INVALID_KEY_USAGE,
	           "%s key usage is %s, not SIGN_VERIFY", k->arn, hsm_usage_name(k->rec.usage));
	HSM_ENSURE(hsm_spec_allows_sign_alg(k->rec.spec, alg), HSM_ERR_INVALID_KEY_USAGE,
	           "SigningAlgorithm %s is not valid for %s (KeySpec %s)", hsm_sign_alg_name(alg),
	           k->arn, hsm_spec_name(k->rec.spec));
	return HSM_SUCCESS;
}

static hsm_result require_mac_alg(const kms_key *k, hsm_mac_alg alg)
{
	HSM_ENSURE(k->rec.usage == HSM_USAGE_GENERATE_VERIFY_MAC, HSM_ERR_INVALID_KEY_USAGE,
	           "%s key usage is %s, not GENERATE_VERIFY_MAC", k->arn,
	           hsm_usage_name(k->rec.usage));
	HSM_ENSURE(hsm_spec_allows_mac_alg(k->rec.spec, alg), HSM_ERR_INVALID_KEY_USAGE,
	           "MacAlgorithm %s is not valid for %s (KeySpec %s)", hsm_mac_alg_name(alg), k->arn,
	           hsm_spec_name(k->rec.spec));
	return HSM_SUCCESS;
}

/* KMS Sign: Message 1-4096 bytes; a DIGEST must be exactly the algorithm's digest length. */
static hsm_result check_message(hsm_sign_alg alg, hsm_message_type type, size_t len)
{
	HSM_ENSURE(len >= 1 && len <= HSM_MAX_SIGN_MESSAGE, HSM_ERR_VALIDATION,
	           "Message must be between 1 and %d bytes", HSM_MAX_SIGN_MESSAGE);
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	if (type == HSM_MSG_DIGEST) {
		HSM_ENSURE(info->scheme != HSM_SCHEME_EDDSA, HSM_ERR_VALIDATION,
		           "%s signs RAW messages only", info->name);
		HSM_ENSURE(len == info->digest_len, HSM_ERR_VALIDATION,
		           "Digest is %zu bytes; %s takes a %zu-byte digest", len, info->name,
		           info->digest_len);
	}
	return HSM_SUCCESS;
}

static hsm_result sign_lookup(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *key,
                              hsm_sign_alg alg, hsm_message_type type, kms_key **out)
{
	hsm_policy_pair cond = {"kms:MessageType", type == HSM_MSG_DIGEST ? "DIGEST" : "RAW"};
	kms_authz_extra extra = {
	    .signing_algorithm = hsm_sign_alg_name(alg), .more = &cond, .n_more = 1};
	HSM_GUARD(kms_lookup(kms, caller, op, key, &extra, out));
	hsm_result r = require_sign_alg(*out, alg);
	/* Its signatures over any bytes would be tokens the JWK Set vouches for, of any lifetime
	 * and claims, made without kms:SignToken and audited as something else. */
	if (hsm_ok(r) && op == HSM_OP_Sign && ((*out)->rec.flags & HSM_KEYFLAG_JWT) != 0)
		r = HSM_FAIL(HSM_ERR_INVALID_KEY_USAGE,
		             "%s signs JWTs only (HsmdJwt.SignToken): any signature it made would "
		             "verify as a token; use another key, or DisableJwtSigning first",
		             (*out)->arn);
	if (hsm_ok(r))
		r = kms_dry_run_stop(caller);
	if (hsm_failed(r)) {
		kms_key_release(*out);
		*out = NULL;
	}
	return r;
}

hsm_result hsm_kms_sign(hsm_kms *kms, const hsm_caller *caller, const char *key,
                        hsm_sign_alg alg, hsm_message_type type, const uint8_t *msg, size_t len,
                        hsm_buf *sig, hsm_used_key *used)
{
	kms_key *k = NULL;
	HSM_GUARD(check_message(alg, type, len));
	HSM_GUARD(sign_lookup(kms, caller, HSM_OP_Sign, key, alg, type, &k));
	hsm_ks_keyref ref = kms_keyref(k, k->rec.primary_version);
	hsm_result r = hsm_ks_sign(kms->ks, &ref, alg, type, msg, len, sig);
	if (hsm_ok(r))
		kms_used(k, ref.version, used);
	kms_key_release(k);
	return r;
}

/*
 * Tries k's versions newest first, down to the one above `tried` (those
 * were tried already): KMSInvalidSignatureException when none verifies.
 */
static hsm_result verify_above(hsm_kms *kms, const kms_key *k, uint32_t tried, hsm_sign_alg alg,
                               hsm_message_type type, const uint8_t *msg, size_t len,
                               const uint8_t *sig, size_t sig_len, hsm_used_key *used)
{
	for (uint32_t v = k->rec.primary_version; v > tried; v--) {
		hsm_ks_keyref ref = kms_keyref(k, v);
		hsm_result r = hsm_ks_verify(kms->ks, &ref, alg, type, msg, len, sig, sig_len);
		if (hsm_ok(r))
			kms_used(k, v, used);
		if (r.err != HSM_ERR_INVALID_SIGNATURE)
			return r;
	}
	return HSM_FAIL(HSM_ERR_INVALID_SIGNATURE, "the signature is not valid");
}

hsm_result hsm_kms_verify(hsm_kms *kms, const hsm_caller *caller, const char *key,
                          hsm_sign_alg alg, hsm_message_type type, const uint8_t *msg,
                          size_t len, const uint8_t *sig, size_t sig_len, hsm_used_key *used)
{
	kms_key *k = NULL;
	HSM_GUARD(check_message(alg, type, len));
	HSM_ENSURE(sig_len >= 1 && sig_len <= MAX_SIGNATURE, HSM_ERR_VALIDATION,
	           "Signature must be between 1 and %d bytes", MAX_SIGNATURE);
	HSM_GUARD(sign_lookup(kms, caller, HSM_OP_Verify, key, alg, type, &k));
	uint32_t tried = k->rec.primary_version;
	hsm_result r = verify_above(kms, k, 0, alg, type, msg, len, sig, sig_len, used);
	if (r.err == HSM_ERR_INVALID_SIGNATURE) {
		/* Perhaps made with a version another node sharing the store rotated in since. */
		bool moved = false;
		r = kms_key_moved(kms, &k, &moved);
		if (hsm_ok(r) && moved)
			r = sign_lookup(kms, caller, HSM_OP_Verify, key, alg, type, &k);
		if (hsm_ok(r))
			r = verify_above(kms, k, tried, alg, type, msg, len, sig, sig_len, used);
	}
	kms_key_release(k);
	return r;
}

static hsm_result mac_lookup(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *key,
                             hsm_mac_alg alg, size_t len, kms_key **out)
{
	kms_authz_extra extra = {.mac_algorithm = hsm_mac_alg_name(alg)};
	HSM_ENSURE(len >= 1 && len <= HSM_MAX_MAC_MESSAGE, HSM_ERR_VALIDATION,
	           "Message must be between 1 and %d bytes", HSM_MAX_MAC_MESSAGE);
	HSM_GUARD(kms_lookup(kms, caller, op, key, &extra, out));
	hsm_result r = require_mac_alg(*out, alg);
	if (hsm_ok(r))
		r = kms_dry_run_stop(caller);
	if (hsm_failed(r)) {
		kms_key_release(*out);
		*out = NULL;
	}
	return r;
}

hsm_result hsm_kms_generate_mac(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                hsm_mac_alg alg, const uint8_t *msg, size_t len, hsm_buf *mac,
                                hsm_used_key *used)
{
	kms_key *k = NULL;
	HSM_GUARD(mac_lookup(kms, caller, HSM_OP_GenerateMac, key, alg, len, &k));
	hsm_ks_keyref ref = kms_keyref(k, k->rec.primary_version);
	hsm_result r = hsm_ks_mac(kms->ks, &ref, alg, msg, len, mac);
	if (hsm_ok(r))
		kms_used(k, ref.version, used);
	kms_key_release(k);
	return r;
}

/* verify_above's counterpart for MACs: KMSInvalidMacException when none verifies. */
static hsm_result verify_mac_above(hsm_kms *kms, const kms_key *k, uint32_t tried,
                                   hsm_mac_alg alg, const uint8_t *msg, size_t len,
                                   const uint8_t *mac, size_t mac_len, hsm_used_key *used)
{
	for (uint32_t v = k->rec.primary_version; v > tried; v--) {
		hsm_ks_keyref ref = kms_keyref(k, v);
		hsm_result r = hsm_ks_verify_mac(kms->ks, &ref, alg, msg, len, mac, mac_len);
		if (hsm_ok(r))
			kms_used(k, v, used);
		if (r.err != HSM_ERR_INVALID_MAC)
			return r;
	}
	return HSM_FAIL(HSM_ERR_INVALID_MAC, "the MAC is not valid");
}

hsm_result hsm_kms_verify_mac(hsm_kms *kms, const hsm_caller *caller, const char *key,
                              hsm_mac_alg alg, const uint8_t *msg, size_t len, const uint8_t *mac,
                              size_t mac_len, hsm_used_key *used)
{
	kms_key *k = NULL;
	HSM_ENSURE(mac_len >= 1 && mac_len <= MAX_MAC, HSM_ERR_VALIDATION,
	           "Mac must be between 1 and %d bytes", MAX_MAC);
	HSM_GUARD(mac_lookup(kms, caller, HSM_OP_VerifyMac, key, alg, len, &k));
	uint32_t tried = k->rec.primary_version;
	hsm_result r = verify_mac_above(kms, k, 0, alg, msg, len, mac, mac_len, used);
	if (r.err == HSM_ERR_INVALID_MAC) {
		/* Perhaps made with a version another node sharing the store rotated in since. */
		bool moved = false;
		r = kms_key_moved(kms, &k, &moved);
		if (hsm_ok(r) && moved)
			r = mac_lookup(kms, caller, HSM_OP_VerifyMac, key, alg, len, &k);
		if (hsm_ok(r))
			r = verify_mac_above(kms, k, tried, alg, msg, len, mac, mac_len, used);
	}
	kms_key_release(k);
	return r;
}

hsm_result hsm_kms_version_public_key(hsm_kms *kms, const char *key_id, uint32_t version,
                                      hsm_buf *spki)
{
	hsm_version_record v;
	memset(&v, 0, sizeof(v));
	HSM_GUARD(hsm_store_version_get(kms->store, key_id, version, &v));
	hsm_result r = v.public_der.len > 0
	                   ? hsm_buf_put(spki, v.public_der.data, v.public_der.len)
	                   : HSM_FAIL(HSM_ERR_UNSUPPORTED_OPERATION, "%s has no public key", key_id);
	hsm_version_record_clear(&v);
	return r;
}

hsm_result hsm_kms_get_public_key(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                  hsm_buf *spki, hsm_key_record *out)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_GetPublicKey, key, NULL, &k));
	hsm_result r = HSM_SUCCESS;
	if (!hsm_spec_is_asymmetric(k->rec.spec))
		r = HSM_FAIL(HSM_ERR_UNSUPPORTED_OPERATION,
		             "%s is not an asymmetric key: it has no public key", k->arn);
	if (hsm_ok(r))
		r = hsm_kms_version_public_key(kms, k->rec.key_id, k->rec.primary_version, spki);
	if (hsm_ok(r))
		r = hsm_key_record_copy(out, &k->rec);
	kms_key_release(k);
	return r;
}
