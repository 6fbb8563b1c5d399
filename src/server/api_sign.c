/*
 * api_sign.c - Sign, Verify, GenerateMac, VerifyMac, GetPublicKey.
 */
#include <string.h>

#include "server/api.h"

/*
 * SigningAlgorithm and MessageType.  An algorithm AWS defines that no key here takes is,
 * once the key (key, for op) is found and the caller may use it, the key's
 * InvalidKeyUsageException, as AWS answers an algorithm the key's spec does not take.
 */
static hsm_result read_sign_alg(hsm_api_ctx *c, hsm_op op, const char *key, hsm_sign_alg *alg,
                                hsm_message_type *type)
{
	const char *name, *mt = NULL;
	HSM_GUARD(hsm_json_str(c->req, "SigningAlgorithm", true, 1, 64, &name));
	hsm_result parsed = hsm_sign_alg_parse(name, alg);
	if (parsed.err != HSM_ERR_UNSUPPORTED_OPERATION)
		HSM_GUARD(parsed);
	HSM_GUARD(hsm_json_str(c->req, "MessageType", false, 1, 16, &mt));
	*type = HSM_MSG_RAW;
	if (mt != NULL && strcmp(mt, "DIGEST") == 0)
		*type = HSM_MSG_DIGEST;
	else if (mt != NULL && strcmp(mt, "RAW") != 0)
		return HSM_FAIL(HSM_ERR_VALIDATION, "MessageType must be RAW or DIGEST");
	if (hsm_failed(parsed))
		return hsm_kms_refuse_algorithm(c->kms, c->caller, op, NULL, key, "SigningAlgorithm",
		                                name, *type == HSM_MSG_DIGEST ? "DIGEST" : "RAW");
	c->audit.algorithm = hsm_sign_alg_name(*alg);
	c->audit.message_type = *type == HSM_MSG_RAW ? "RAW" : "DIGEST";
	return HSM_SUCCESS;
}

static hsm_result read_message(hsm_api_ctx *c, hsm_buf *msg)
{
	bool present;
	return hsm_json_blob(c->req, "Message", true, 1, HSM_MAX_SIGN_MESSAGE, msg, &present);
}

hsm_result hsm_api_sign(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	const char *key;
	hsm_sign_alg alg;
	hsm_message_type type;
	hsm_buf msg = {0}, sig = {0};
	hsm_used_key used;
	HSM_TRY(hsm_api_key_id(c, "KeyId", &key));
	HSM_TRY(read_message(c, &msg));
	HSM_TRY(read_sign_alg(c, HSM_OP_Sign, key, &alg, &type));
	HSM_TRY(hsm_kms_sign(c->kms, c->caller, key, alg, type, msg.data, msg.len, &sig, &used));
	hsm_api_note_key(c, &used);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_b64(c->w, "Signature", sig.data, sig.len);
	hsm_jw_str(c->w, "SigningAlgorithm", hsm_sign_alg_name(alg));
out:
	hsm_buf_free(&msg);
	hsm_buf_free(&sig);
	return res;
}

hsm_result hsm_api_verify(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	const char *key;
	hsm_sign_alg alg;
	hsm_message_type type;
	hsm_buf msg = {0}, sig = {0};
	hsm_used_key used;
	bool present;
	HSM_TRY(hsm_api_key_id(c, "KeyId", &key));
	HSM_TRY(read_message(c, &msg));
	HSM_TRY(hsm_json_blob(c->req, "Signature", true, 1, 6144, &sig, &present));
	HSM_TRY(read_sign_alg(c, HSM_OP_Verify, key, &alg, &type));
	HSM_TRY(hsm_kms_verify(c->kms, c->caller, key, alg, type, msg.data, msg.len, sig.data,
	                       sig.len, &used));
	hsm_api_note_key(c, &used);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_bool(c->w, "SignatureValid", true);
	hsm_jw_str(c->w, "SigningAlgorithm", hsm_sign_alg_name(alg));
out:
	hsm_buf_free(&msg);
	hsm_buf_free(&sig);
	return res;
}

static hsm_result read_mac_request(hsm_api_ctx *c, const char **key, hsm_mac_alg *alg,
                                   hsm_buf *msg)
{
	const char *name;
	bool present;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", key));
	HSM_GUARD(hsm_json_blob(c->req, "Message", true, 1, HSM_MAX_MAC_MESSAGE, msg, &present));
	HSM_GUARD(hsm_json_str(c->req, "MacAlgorithm", true, 1, 64, &name));
	HSM_GUARD(hsm_mac_alg_parse(name, alg));
	c->audit.algorithm = hsm_mac_alg_name(*alg);
	return HSM_SUCCESS;
}

hsm_result hsm_api_generate_mac(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	const char *key;
	hsm_mac_alg alg;
	hsm_buf msg = {0}, mac = {0};
	hsm_used_key used;
	HSM_TRY(read_mac_request(c, &key, &alg, &msg));
	HSM_TRY(hsm_kms_generate_mac(c->kms, c->caller, key, alg, msg.data, msg.len, &mac, &used));
	hsm_api_note_key(c, &used);
	hsm_jw_b64(c->w, "Mac", mac.data, mac.len);
	hsm_jw_str(c->w, "MacAlgorithm", hsm_mac_alg_name(alg));
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
out:
	hsm_buf_free(&msg);
	hsm_buf_free(&mac);
	return res;
}

hsm_result hsm_api_verify_mac(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	const char *key;
	hsm_mac_alg alg;
	hsm_buf msg = {0}, mac = {0};
	hsm_used_key used;
	bool present;
	HSM_TRY(read_mac_request(c, &key, &alg, &msg));
	HSM_TRY(hsm_json_blob(c->req, "Mac", true, 1, 6144, &mac, &present));
	HSM_TRY(hsm_kms_verify_mac(c->kms, c->caller, key, alg, msg.data, msg.len, mac.data, mac.len,
	                           &used));
	hsm_api_note_key(c, &used);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_bool(c->w, "MacValid", true);
	hsm_jw_str(c->w, "MacAlgorithm", hsm_mac_alg_name(alg));
out:
	hsm_buf_free(&msg);
	hsm_buf_free(&mac);
	return res;
}

hsm_result hsm_api_get_public_key(hsm_api_ctx *c)
{
	const char *key;
	hsm_buf spki = {0};
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	hsm_result r = hsm_kms_get_public_key(c->kms, c->caller, key, &spki, &rec);
	if (hsm_ok(r)) {
		memcpy(c->audit.key_id, rec.key_id, sizeof(c->audit.key_id));
		c->audit.key_version = rec.primary_version;
		hsm_api_write_key_arn(c, "KeyId", rec.key_id);
		hsm_jw_b64(c->w, "PublicKey", spki.data, spki.len);
		hsm_jw_str(c->w, "CustomerMasterKeySpec", hsm_spec_name(rec.spec));
		hsm_jw_str(c->w, "KeySpec", hsm_spec_name(rec.spec));
		hsm_jw_str(c->w, "KeyUsage", hsm_usage_name(rec.usage));
		hsm_api_write_algorithms(c, rec.spec, rec.usage);
	}
	hsm_buf_free(&spki);
	hsm_key_record_clear(&rec);
	return r;
}
