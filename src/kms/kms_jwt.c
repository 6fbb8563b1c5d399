/*
 * kms_jwt.c - SignToken, EnableJwtSigning and DisableJwtSigning.
 *
 * A token is signed like a KMS Sign of its signing input, with the key's
 * primary version and the one algorithm the key is marked with; the
 * service adds what a caller must not choose: alg, kid, iat, nbf and exp.
 */
#include <string.h>

#include "kms/jwt.h"
#include "kms/kms_internal.h"

void hsm_kms_jwt_limits(hsm_kms *kms, hsm_jwt_limits *out)
{
	const hsm_kms_config *cfg = &kms->cfg;
	out->max_lifetime = cfg->jwt_max_lifetime > 0 ? cfg->jwt_max_lifetime : HSM_JWT_MAX_LIFETIME;
	out->default_lifetime =
	    cfg->jwt_default_lifetime > 0 ? cfg->jwt_default_lifetime : HSM_JWT_DEFAULT_LIFETIME;
	if (out->default_lifetime > out->max_lifetime)
		out->default_lifetime = out->max_lifetime;
	out->clock_skew = cfg->jwt_clock_skew > 0 ? cfg->jwt_clock_skew : HSM_JWT_DEFAULT_CLOCK_SKEW;
}

static hsm_result check_request(hsm_kms *kms, const hsm_jwt_sign_req *req, int64_t *lifetime)
{
	hsm_jwt_limits lim;
	hsm_kms_jwt_limits(kms, &lim);
	HSM_GUARD(hsm_jwt_check_claims(req->claims));
	*lifetime = req->lifetime != 0 ? req->lifetime : lim.default_lifetime;
	HSM_ENSURE(*lifetime >= 1 && *lifetime <= lim.max_lifetime, HSM_ERR_VALIDATION,
	           "LifetimeSeconds must be between 1 and %lld (the configured maximum token "
	           "lifetime)",
	           (long long)lim.max_lifetime);
	HSM_ENSURE(req->alg >= HSM_JWS_NONE && req->alg < HSM_JWS_COUNT, HSM_ERR_VALIDATION,
	           "Algorithm is not a JWS algorithm");
	return HSM_SUCCESS;
}

/*
 * kms_lookup's steps, with the algorithm known before authorization: key
 * policies may test kms:SigningAlgorithm, and a token's algorithm is the
 * key's own unless the request names one.
 */
static hsm_result token_lookup(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                               hsm_jws_alg requested, kms_key **out, hsm_jws_alg *alg)
{
	char key_id[HSM_UUID_STRLEN + 1];
	kms_key *k = NULL;
	HSM_GUARD(hsm_kms_resolve(kms, ref, key_id));
	HSM_GUARD(kms_key_load(kms, key_id, &k));
	hsm_jws_alg key_alg = HSM_JWS_NONE;
	if (hsm_failed(hsm_jwt_key_alg(&k->rec, &key_alg)))
		key_alg = HSM_JWS_NONE; /* reported below, after authorization */
	hsm_jws_alg policy_alg = requested != HSM_JWS_NONE ? requested : key_alg;
	hsm_policy_pair cond = {"kms:MessageType", "RAW"}; /* the token's header.payload */
	kms_authz_extra extra = {
	    .signing_algorithm = policy_alg != HSM_JWS_NONE
	                             ? hsm_sign_alg_name(hsm_jws_alg_get(policy_alg)->sign_alg)
	                             : NULL,
	    .more = &cond,
	    .n_more = 1,
	    .request_alias = kms_ref_alias(kms, ref),
	};
	hsm_result r = k->rec.state == HSM_KEY_DESTROYED
	                   ? HSM_FAIL(HSM_ERR_NOT_FOUND, "Key '%s' does not exist", k->arn)
	                   : kms_authorize(kms, caller, HSM_OP_SignToken, k, &extra);
	if (hsm_ok(r))
		r = kms_check_state(HSM_OP_SignToken, &k->rec);
	if (hsm_ok(r))
		r = hsm_jwt_key_alg(&k->rec, &key_alg);
	if (hsm_ok(r) && requested != HSM_JWS_NONE && requested != key_alg)
		r = HSM_FAIL(HSM_ERR_INVALID_KEY_USAGE,
		             "%s signs tokens with %s only, not %s (RFC 8725 3.1: one algorithm per "
		             "key)",
		             k->arn, hsm_jws_alg_name(key_alg), hsm_jws_alg_name(requested));
	if (hsm_failed(r)) {
		kms_key_release(k);
		return r;
	}
	*out = k;
	*alg = key_alg;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_sign_token(hsm_kms *kms, const hsm_caller *caller,
                              const hsm_jwt_sign_req *req, hsm_buf *token, hsm_jwt_issued *out)
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	hsm_buf input = {0}, sig = {0};
	hsm_jwt_issued issued;
	int64_t lifetime = 0;
	memset(&issued, 0, sizeof(issued));
	HSM_GUARD(check_request(kms, req, &lifetime));
	HSM_GUARD(token_lookup(kms, caller, req->key, req->alg, &k, &issued.alg));
	uint32_t version = k->rec.primary_version;
	HSM_TRY(hsm_jwt_kid(k->rec.key_id, version, issued.kid));
	issued.issued_at = kms_now(kms);
	issued.expires_at = issued.issued_at + lifetime;
	hsm_jwt_header h = {issued.alg, issued.kid, req->typ, req->cty};
	HSM_TRY(hsm_jwt_signing_input(&h, req->claims, issued.issued_at, issued.expires_at, &input));
	HSM_TRY(kms_dry_run_stop(caller));
	hsm_ks_keyref ref = kms_keyref(k, version);
	HSM_TRY(hsm_ks_sign(kms->ks, &ref, hsm_jws_alg_get(issued.alg)->sign_alg, HSM_MSG_RAW,
	                    input.data, input.len, &sig));
	HSM_TRY(hsm_jwt_append_signature(&input, issued.alg, k->rec.spec, sig.data, sig.len));
	HSM_TRY(hsm_buf_put(token, input.data, input.len));
	kms_used(k, version, &issued.used);
	*out = issued;
out:
	kms_key_release(k);
	hsm_buf_free(&input);
	hsm_buf_free(&sig);
	return res;
}

/* ---- Marking keys ---------------------------------------------------------------- */

static hsm_result enable_in_txn(hsm_key_record *rec, void *arg)
{
	hsm_jws_alg alg = *(const hsm_jws_alg *)arg;
	HSM_ENSURE(rec->usage == HSM_USAGE_SIGN_VERIFY, HSM_ERR_INVALID_KEY_USAGE,
	           "key %s has KeyUsage %s: only SIGN_VERIFY keys can sign tokens", rec->key_id,
	           hsm_usage_name(rec->usage));
	/*
	 * The algorithm a key signed tokens with stays its own, marked or not: a
	 * kid names a key version, and verifiers that cached its JWK match tokens
	 * by kid (RFC 7517 4.5, RFC 8725 3.1), so the same kid with another
	 * algorithm would be refused by them.  (Marked before this rule, a key
	 * unmarked since has no algorithm kept.)
	 */
	unsigned code = (rec->flags & HSM_KEYFLAG_JWT_ALG_MASK) >> HSM_KEYFLAG_JWT_ALG_SHIFT;
	hsm_jws_alg previous = HSM_JWS_NONE;
	if (code != HSM_JWS_NONE && code < HSM_JWS_COUNT)
		previous = (hsm_jws_alg)code;
	else if ((rec->flags & HSM_KEYFLAG_JWT) != 0)
		HSM_GUARD(hsm_jws_default_alg(rec->spec, &previous));
	if (alg == HSM_JWS_NONE && previous != HSM_JWS_NONE)
		alg = previous;
	if (alg == HSM_JWS_NONE)
		HSM_GUARD(hsm_jws_default_alg(rec->spec, &alg));
	HSM_ENSURE(hsm_jws_alg_fits(alg, rec->spec), HSM_ERR_INVALID_KEY_USAGE,
	           "a %s key cannot sign %s tokens", hsm_spec_name(rec->spec), hsm_jws_alg_name(alg));
	HSM_ENSURE(previous == HSM_JWS_NONE || previous == alg, HSM_ERR_VALIDATION,
	           "key %s signs tokens with %s%s; its kids name key versions, and verifiers that "
	           "cached them expect that algorithm: use a new key for %s",
	           rec->key_id, hsm_jws_alg_name(previous),
	           (rec->flags & HSM_KEYFLAG_JWT) != 0 ? "" : " (JWT signing is disabled)",
	           hsm_jws_alg_name(alg));
	rec->flags &= ~HSM_KEYFLAG_JWT_ALG_MASK;
	rec->flags |= HSM_KEYFLAG_JWT | ((uint32_t)alg << HSM_KEYFLAG_JWT_ALG_SHIFT);
	*(hsm_jws_alg *)arg = alg;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_enable_jwt(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                              hsm_jws_alg alg, hsm_key_record *after)
{
	HSM_ENSURE(alg >= HSM_JWS_NONE && alg < HSM_JWS_COUNT, HSM_ERR_VALIDATION,
	           "Algorithm is not a JWS algorithm");
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(kms_modify(kms, caller, HSM_OP_EnableJwtSigning, ref, enable_in_txn, &alg, NULL,
	                     &rec));
	if (after != NULL)
		*after = rec;
	else
		hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}

static hsm_result disable_in_txn(hsm_key_record *rec, void *arg)
{
	(void)arg;
	rec->flags &= ~HSM_KEYFLAG_JWT; /* its algorithm stays (enable_in_txn) */
	return HSM_SUCCESS;
}

hsm_result hsm_kms_disable_jwt(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                               hsm_key_record *after)
{
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(kms_modify(kms, caller, HSM_OP_DisableJwtSigning, ref, disable_in_txn, NULL, NULL,
	                     &rec));
	if (after != NULL)
		*after = rec;
	else
		hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}
