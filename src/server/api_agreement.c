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
 * Recipient (an AWS Nitro Enclaves or NitroTPM attestation document, for
 * the secret to come back encrypted to the enclave's key as
 * CiphertextForRecipient) has no meaning outside AWS.  It is refused, not
 * ignored: ignoring it would answer in the clear a secret the caller asked
 * to receive encrypted.
 */
#include "server/api.h"

#define PUBLIC_KEY_MAX 8192 /* DeriveSharedSecret PublicKey: 1-8192 bytes */

static hsm_result refuse_recipient(hsm_api_ctx *c)
{
	json_t *r = json_object_get(c->req, "Recipient");
	HSM_ENSURE(r == NULL || json_is_null(r), HSM_ERR_UNSUPPORTED_OPERATION,
	           "Recipient is not supported: hsmd does not verify AWS Nitro Enclaves or NitroTPM "
	           "attestation documents; leave it out to receive the SharedSecret");
	return HSM_SUCCESS;
}

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
	HSM_TRY(refuse_recipient(c));
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
