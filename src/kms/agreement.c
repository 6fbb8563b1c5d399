/*
 * agreement.c - DeriveSharedSecret (AWS KMS API reference,
 * "DeriveSharedSecret").
 *
 * The key must have KeyUsage KEY_AGREEMENT (InvalidKeyUsageException
 * otherwise, as for any key used against its usage) and the algorithm is
 * ECDH, the only KeyAgreementAlgorithmSpec, which key policies and grants
 * see as the condition key kms:KeyAgreementAlgorithm.  The primary version
 * derives: GetPublicKey hands out the primary version's public key, so that
 * is the one peers hold.
 *
 * DryRun checks everything a real call checks before it fails with
 * DryRunOperationException: permissions, key state, key usage, and the
 * peer's public key (form, curve, point).
 */
#include "crypto/crypto.h"
#include "kms/kms_internal.h"

static hsm_result require_agreement(const kms_key *k, hsm_agree_alg alg)
{
	HSM_ENSURE(k->rec.usage == HSM_USAGE_KEY_AGREEMENT, HSM_ERR_INVALID_KEY_USAGE,
	           "%s key usage is %s, not KEY_AGREEMENT", k->arn, hsm_usage_name(k->rec.usage));
	HSM_ENSURE(hsm_spec_allows_agree_alg(k->rec.spec, alg), HSM_ERR_INVALID_KEY_USAGE,
	           "KeyAgreementAlgorithm %s is not valid for %s (KeySpec %s)",
	           hsm_agree_alg_name(alg), k->arn, hsm_spec_name(k->rec.spec));
	return HSM_SUCCESS;
}

hsm_result hsm_kms_derive_shared_secret(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                        hsm_agree_alg alg, const uint8_t *peer_spki,
                                        size_t peer_len, hsm_buf *secret, hsm_used_key *used)
{
	kms_key *k = NULL;
	const hsm_policy_pair cond = {"kms:KeyAgreementAlgorithm", hsm_agree_alg_name(alg)};
	kms_authz_extra extra = {.more = &cond, .n_more = 1};
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_DeriveSharedSecret, key, &extra, &k));
	hsm_ks_keyref ref = kms_keyref(k, k->rec.primary_version);
	hsm_result r = require_agreement(k, alg);
	if (hsm_ok(r) && caller->dry_run) {
		r = hsm_ecdh_check_peer(k->rec.spec, peer_spki, peer_len);
		if (hsm_ok(r))
			r = kms_dry_run_stop(caller);
	} else if (hsm_ok(r)) {
		r = hsm_ks_derive_shared_secret(kms->ks, &ref, peer_spki, peer_len, secret);
	}
	if (hsm_ok(r))
		kms_used(k, ref.version, used);
	kms_key_release(k);
	return r;
}
