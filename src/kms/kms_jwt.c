/*
 * kms_jwt.c - SignToken, EnableJwtSigning and DisableJwtSigning.
 *
 * A token is signed like a KMS Sign of its signing input, with the key's
 * token version (its newest version published long enough, see jwt.h) and
 * the one algorithm the key is marked with; the service adds what a caller
 * must not choose: alg, kid, iat, nbf and exp.
 */
#include <stdatomic.h>
#include <stdlib.h>
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
	/* Refreshed several times within a grace period, and never less than once in 5 minutes. */
	int64_t age = (out->max_lifetime + out->clock_skew) / 4;
	out->max_age = age < 1 ? 1 : age > HSM_JWKS_MAX_AGE ? HSM_JWKS_MAX_AGE : age;
	out->lead = out->max_age + (cfg->meta_cache_ttl_ms > 0 ? hsm_kms_jwks_ttl(kms) : 0);
	out->stale = cfg->meta_cache_ttl_ms > 0 ? (cfg->meta_cache_ttl_ms + 999) / 1000 : 0;
	int64_t last_signed = out->lead > out->stale ? out->lead : out->stale;
	out->grace = last_signed + 1 + out->max_lifetime + out->clock_skew;
}

/* ---- The token version ----------------------------------------------------------- */

struct kms_version_times {
	uint32_t n;        /* versions 1..n */
	int64_t created[]; /* created[v - 1]; 0: no record (counts as long published) */
};

void kms_version_times_free(struct kms_version_times *t)
{
	free(t);
}

static hsm_result note_created(const hsm_version_record *v, void *arg)
{
	struct kms_version_times *t = arg;
	if (v->version >= 1 && v->version <= t->n)
		t->created[v->version - 1] = v->created;
	return HSM_SUCCESS;
}

/* The versions' creation times, read once per snapshot of the key (they never change). */
static hsm_result version_times(hsm_kms *kms, kms_key *k, const struct kms_version_times **out)
{
	struct kms_version_times *t = atomic_load_explicit(&k->version_times, memory_order_acquire);
	if (t == NULL) {
		uint32_t n = k->rec.primary_version;
		struct kms_version_times *fresh = calloc(1, sizeof(*fresh) + n * sizeof(int64_t));
		HSM_ENSURE(fresh != NULL, HSM_ERR_NOMEM, "out of memory");
		fresh->n = n;
		hsm_result r = hsm_store_version_list(kms->store, k->rec.key_id, note_created, fresh);
		if (hsm_failed(r)) {
			free(fresh);
			return r;
		}
		struct kms_version_times *expected = NULL;
		if (atomic_compare_exchange_strong_explicit(&k->version_times, &expected, fresh,
		                                            memory_order_acq_rel,
		                                            memory_order_acquire)) {
			t = fresh;
		} else {
			free(fresh);
			t = expected;
		}
	}
	*out = t;
	return HSM_SUCCESS;
}

/* The version that signs a token issued at now (jwt.h, hsm_kms_sign_token). */
static hsm_result token_version(hsm_kms *kms, kms_key *k, int64_t now, uint32_t *out)
{
	uint32_t v = k->rec.primary_version;
	if (v > 1) {
		const struct kms_version_times *t = NULL;
		hsm_jwt_limits lim;
		hsm_kms_jwt_limits(kms, &lim);
		HSM_GUARD(version_times(kms, k, &t));
		/* Times are whole seconds: created in second c, a version has been published for
		 * the lead in full only from second c + lead + 1 (now - created > lead). */
		while (v > 1 && v <= t->n && t->created[v - 1] >= now - lim.lead)
			v--;
	}
	*out = v;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_jwt_token_version(hsm_kms *kms, const char *key_id, uint32_t *version)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_key_load(kms, key_id, &k));
	hsm_result r = token_version(kms, k, kms_now(kms), version);
	kms_key_release(k);
	return r;
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
		r = kms_check_state(HSM_OP_SignToken, &k->rec, kms_now(kms));
	if (hsm_ok(r))
		r = kms_check_material(kms, k);
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
	uint32_t version = 0;
	issued.issued_at = kms_now(kms);
	HSM_TRY(token_version(kms, k, issued.issued_at, &version));
	HSM_TRY(hsm_jwt_kid(k->rec.key_id, version, issued.kid));
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
	           "%s keys cannot sign %s tokens", hsm_spec_name(rec->spec), hsm_jws_alg_name(alg));
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
