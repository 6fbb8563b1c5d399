/*
 * api_agreement.c - DeriveSharedSecret.
 *
 * Members as in the AWS KMS API reference: KeyId, KeyAgreementAlgorithm
 * (ECDH) and PublicKey (a DER SubjectPublicKeyInfo of 1-8192 bytes) are
 * required; the dispatcher reads GrantTokens and DryRun.  The response
 * carries the raw shared secret, so the dispatcher builds it in a secure
 * buffer (returns_secret in dispatch.c) and the audit record names only the
 * key and the algorithm.
 *
 * Recipient is refused (hsm_api_refuse_recipient), not ignored.
 */
#include "server/api.h"

#define PUBLIC_KEY_MAX 8192 /* DeriveSharedSecret PublicKey: 1-8192 bytes */

hsm_result hsm_api_derive_shared_secret(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	const char *key, *name;
	hsm_agree_alg alg;
	hsm_buf peer = {0}, secret;
	hsm_used_key used;
	bool present;
	hsm_buf_init_secure(&secret);
	HSM_TRY(hsm_api_key_id(c, "KeyId", &key));
	HSM_TRY(hsm_json_str(c->req, "KeyAgreementAlgorithm", true, 1, 64, &name));
	HSM_TRY(hsm_agree_alg_parse(name, &alg));
	c->audit.algorithm = hsm_agree_alg_name(alg);
	HSM_TRY(hsm_json_blob(c->req, "PublicKey", true, 1, PUBLIC_KEY_MAX, &peer, &present));
	HSM_TRY(hsm_api_refuse_recipient(c, "SharedSecret", HSM_ERR_VALIDATION));
	HSM_TRY(hsm_kms_derive_shared_secret(c->kms, c->caller, key, alg, peer.data, peer.len,
	                                     &secret, &used));
	hsm_api_note_key(c, &used);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_b64(c->w, "SharedSecret", secret.data, secret.len);
	hsm_jw_str(c->w, "KeyAgreementAlgorithm", hsm_agree_alg_name(alg));
	hsm_jw_str(c->w, "KeyOrigin", hsm_key_origin_name(used.origin));
out:
	hsm_buf_free(&peer);
	hsm_buf_free(&secret);
	return res;
}
