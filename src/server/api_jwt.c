/*
 * api_jwt.c - hsmd's token API, next to the KMS one (X-Amz-Target:
 * HsmdJwt.<Op>): SignToken, EnableJwtSigning, DisableJwtSigning.
 *
 * These go through the same pipeline as every KMS operation (SigV4,
 * audit-accepting check, key policy through kms/, audit record before the
 * response); the operations are rows of kms/kms.h's table, with the policy
 * actions kms:SignToken, kms:EnableJwtSigning and kms:DisableJwtSigning.
 * Request and response members are documented in docs/jwt.md.
 */
#include <string.h>

#include "common/log.h"
#include "kms/jwt.h"
#include "server/api.h"

bool hsm_api_is_jwt_op(hsm_op op)
{
	return op == HSM_OP_SignToken || op == HSM_OP_EnableJwtSigning ||
	       op == HSM_OP_DisableJwtSigning;
}

static hsm_result read_alg(hsm_api_ctx *c, hsm_jws_alg *alg)
{
	const char *name = NULL;
	*alg = HSM_JWS_NONE;
	HSM_GUARD(hsm_json_str(c->req, "Algorithm", false, 1, 16, &name));
	if (name != NULL)
		HSM_GUARD(hsm_jws_alg_parse(name, alg));
	return HSM_SUCCESS;
}

/* Claims (required object), Header (optional object: typ, cty). */
static hsm_result read_token_parts(hsm_api_ctx *c, hsm_jwt_sign_req *req)
{
	const json_t *claims = json_object_get(c->req, "Claims");
	const json_t *header = json_object_get(c->req, "Header");
	HSM_ENSURE(claims != NULL && !json_is_null(claims), HSM_ERR_VALIDATION,
	           "1 validation error detected: Value null at 'claims' failed to satisfy "
	           "constraint: Member must not be null");
	HSM_GUARD(hsm_jwt_check_claims(claims));
	req->claims = claims;
	if (header != NULL && !json_is_null(header))
		HSM_GUARD(hsm_jwt_check_header(header, &req->typ, &req->cty));
	return HSM_SUCCESS;
}

hsm_result hsm_api_sign_token(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	hsm_jwt_sign_req req;
	hsm_jwt_issued issued;
	hsm_jwt_limits lim;
	hsm_buf token = {0};
	bool present;
	memset(&req, 0, sizeof(req));
	hsm_kms_jwt_limits(c->kms, &lim);
	HSM_TRY(hsm_api_key_id(c, "KeyId", &req.key));
	hsm_api_note_ref(c, req.key);
	HSM_TRY(read_token_parts(c, &req));
	HSM_TRY(read_alg(c, &req.alg));
	HSM_TRY(hsm_json_int(c->req, "LifetimeSeconds", false, 1, lim.max_lifetime, &req.lifetime,
	                     &present));
	HSM_TRY(hsm_kms_sign_token(c->kms, c->caller, &req, &token, &issued));
	hsm_api_note_key(c, &issued.used);
	c->audit.algorithm = hsm_jws_alg_name(issued.alg);
	hsm_jw_str_n(c->w, "Token", (const char *)token.data, token.len);
	hsm_api_write_key_arn(c, "KeyId", issued.used.key_id);
	hsm_jw_int(c->w, "KeyVersion", issued.used.version);
	hsm_jw_str(c->w, "Kid", issued.kid);
	hsm_jw_str(c->w, "Algorithm", hsm_jws_alg_name(issued.alg));
	hsm_jw_time(c->w, "IssuedAt", issued.issued_at);
	hsm_jw_time(c->w, "ExpiresAt", issued.expires_at);
out:
	hsm_buf_free(&token);
	return res;
}

/* The audit record and response of a marking change. */
static void write_marking(hsm_api_ctx *c, const hsm_key_record *rec)
{
	hsm_jws_alg alg;
	memcpy(c->audit.key_id, rec->key_id, sizeof(c->audit.key_id));
	c->audit.key_version = rec->primary_version;
	hsm_api_write_key_arn(c, "KeyId", rec->key_id);
	bool on = hsm_ok(hsm_jwt_key_alg(rec, &alg));
	hsm_jw_bool(c->w, "JwtSigningEnabled", on);
	if (on) {
		char kid[HSM_JWT_KID_MAX];
		uint32_t version = 0;
		c->audit.algorithm = hsm_jws_alg_name(alg);
		hsm_jw_str(c->w, "Algorithm", hsm_jws_alg_name(alg));
		/* The kid new tokens carry, which a rotation changes only after its lead. */
		if (hsm_failed(hsm_kms_jwt_token_version(c->kms, rec->key_id, &version)))
			hsm_log_failure("EnableJwtSigning: token version unknown, Kid left out");
		else if (hsm_ok(hsm_jwt_kid(rec->key_id, version, kid)))
			hsm_jw_str(c->w, "Kid", kid);
	}
}

hsm_result hsm_api_enable_jwt_signing(hsm_api_ctx *c)
{
	const char *key;
	hsm_jws_alg alg;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	hsm_api_note_ref(c, key);
	HSM_GUARD(read_alg(c, &alg));
	HSM_GUARD(hsm_kms_enable_jwt(c->kms, c->caller, key, alg, &rec));
	write_marking(c, &rec);
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}

hsm_result hsm_api_disable_jwt_signing(hsm_api_ctx *c)
{
	const char *key;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	hsm_api_note_ref(c, key);
	HSM_GUARD(hsm_kms_disable_jwt(c->kms, c->caller, key, &rec));
	write_marking(c, &rec);
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}
