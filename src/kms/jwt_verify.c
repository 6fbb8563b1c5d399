/*
 * jwt_verify.c - offline verification of a compact JWS token against a JWK
 * Set, as a relying party does it (RFC 7515 section 5.2, RFC 7519 section
 * 7.2, RFC 8725 sections 2 and 3).
 *
 * The token, the header and the claims are outside input: every part is
 * length-checked and decoded strictly before anything looks at it, and the
 * algorithm comes from the header only after it was matched against the key
 * (the JWK's "alg" and type), never the other way round.
 */
#include <math.h>
#include <string.h>

#include "common/encoding.h"
#include "crypto/crypto.h"
#include "kms/jwt.h"

/* The three base64url parts of a compact JWS. */
typedef struct parts {
	const char *header, *payload, *sig;
	size_t header_len, payload_len, sig_len;
} parts;

static hsm_result split(const char *token, size_t len, parts *p)
{
	HSM_ENSURE(len > 0 && len <= HSM_JWT_TOKEN_MAX, HSM_ERR_VALIDATION,
	           "a token must be 1 to %d bytes", HSM_JWT_TOKEN_MAX);
	const char *dot1 = memchr(token, '.', len);
	HSM_ENSURE(dot1 != NULL, HSM_ERR_VALIDATION, "the token is not a compact JWS (no '.')");
	size_t off1 = (size_t)(dot1 - token);
	const char *dot2 = memchr(dot1 + 1, '.', len - off1 - 1);
	HSM_ENSURE(dot2 != NULL, HSM_ERR_VALIDATION, "the token is not a compact JWS (one '.')");
	size_t off2 = (size_t)(dot2 - token);
	HSM_ENSURE(memchr(dot2 + 1, '.', len - off2 - 1) == NULL, HSM_ERR_VALIDATION,
	           "the token has more than three parts (a JWE or a JWS with detached parts?)");
	p->header = token;
	p->header_len = off1;
	p->payload = dot1 + 1;
	p->payload_len = off2 - off1 - 1;
	p->sig = dot2 + 1;
	p->sig_len = len - off2 - 1;
	HSM_ENSURE(p->header_len > 0 && p->payload_len > 0 && p->sig_len > 0, HSM_ERR_VALIDATION,
	           "the token has an empty part");
	return HSM_SUCCESS;
}

/* Decodes a base64url part holding a JSON object. */
static hsm_result decode_object(const char *s, size_t n, const char *what, json_t **out)
{
	hsm_buf raw = {0};
	json_error_t e;
	hsm_result r = hsm_b64url_decode(&raw, s, n, HSM_ERR_VALIDATION);
	if (hsm_failed(r)) {
		hsm_buf_free(&raw); /* a refused decode may have reserved its room */
		return HSM_FAIL(HSM_ERR_VALIDATION, "the token's %s is not base64url", what);
	}
	json_t *o = json_loadb((const char *)raw.data, raw.len, JSON_REJECT_DUPLICATES, &e);
	hsm_buf_free(&raw);
	HSM_ENSURE(o != NULL, HSM_ERR_VALIDATION, "the token's %s is not JSON", what);
	if (!json_is_object(o)) {
		json_decref(o);
		return HSM_FAIL(HSM_ERR_VALIDATION, "the token's %s is not a JSON object", what);
	}
	*out = o;
	return HSM_SUCCESS;
}

static hsm_result read_header(const json_t *h, hsm_jws_alg *alg, const char **kid)
{
	const char *name = json_string_value(json_object_get(h, "alg"));
	HSM_ENSURE(name != NULL, HSM_ERR_VALIDATION, "the token header has no \"alg\"");
	/* "none" and every algorithm hsmd does not sign with fail here (RFC 8725 section 3.1). */
	HSM_GUARD(hsm_jws_alg_parse(name, alg));
	/* RFC 7515 section 4.1.11: extensions a recipient does not understand make it reject. */
	HSM_ENSURE(json_object_get(h, "crit") == NULL, HSM_ERR_VALIDATION,
	           "the token header has \"crit\" extensions, which are not supported");
	/* RFC 7515 section 4.1.4: optional; without it the JWK Set must leave no choice. */
	const json_t *k = json_object_get(h, "kid");
	*kid = json_string_value(k);
	HSM_ENSURE(k == NULL || *kid != NULL, HSM_ERR_VALIDATION,
	           "the token header's \"kid\" is not a string");
	return HSM_SUCCESS;
}

static hsm_result find_jwk(const json_t *jwks, const char *kid, const json_t **out)
{
	const json_t *keys = json_object_get(jwks, "keys");
	const json_t *found = NULL;
	HSM_ENSURE(json_is_array(keys), HSM_ERR_VALIDATION,
	           "the JWK Set is not a JSON object with a \"keys\" array");
	if (kid == NULL) {
		size_t n = json_array_size(keys);
		HSM_ENSURE(n == 1, n == 0 ? HSM_ERR_NOT_FOUND : HSM_ERR_VALIDATION,
		           "the token header has no \"kid\" and the JWK Set holds %zu keys: "
		           "which one signed it is not said",
		           n);
		*out = json_array_get(keys, 0);
		return HSM_SUCCESS;
	}
	for (size_t i = 0; i < json_array_size(keys); i++) {
		const json_t *k = json_array_get(keys, i);
		const char *id = json_string_value(json_object_get(k, "kid"));
		if (id == NULL || strcmp(id, kid) != 0)
			continue;
		HSM_ENSURE(found == NULL, HSM_ERR_VALIDATION,
		           "the JWK Set has several keys with kid '%.64s'", kid);
		found = k;
	}
	HSM_ENSURE(found != NULL, HSM_ERR_NOT_FOUND,
	           "no key in the JWK Set has kid '%.64s' (unknown, or retired after rotation)", kid);
	*out = found;
	return HSM_SUCCESS;
}

/* RFC 8725 section 3.1: the key decides the algorithm; the header must agree. */
static hsm_result check_key_use(const json_t *jwk, hsm_jws_alg alg)
{
	const char *jalg = json_string_value(json_object_get(jwk, "alg"));
	const char *use = json_string_value(json_object_get(jwk, "use"));
	HSM_ENSURE(json_object_get(jwk, "alg") == NULL || jalg != NULL, HSM_ERR_VALIDATION,
	           "the JWK's \"alg\" is not a string");
	HSM_ENSURE(jalg == NULL || strcmp(jalg, hsm_jws_alg_name(alg)) == 0,
	           HSM_ERR_INVALID_KEY_USAGE,
	           "the token says alg %s but its key (kid) is for %.16s: refused",
	           hsm_jws_alg_name(alg), jalg != NULL ? jalg : "");
	HSM_ENSURE(json_object_get(jwk, "use") == NULL || (use != NULL && strcmp(use, "sig") == 0),
	           HSM_ERR_INVALID_KEY_USAGE, "the token's key is not a signature key (use)");
	/* RFC 7517 section 4.3: a key that lists its operations is used for those alone. */
	const json_t *ops = json_object_get(jwk, "key_ops");
	if (ops == NULL)
		return HSM_SUCCESS;
	HSM_ENSURE(json_is_array(ops), HSM_ERR_VALIDATION, "the JWK's \"key_ops\" is not an array");
	bool verify = false;
	for (size_t i = 0; i < json_array_size(ops); i++) {
		const char *op = json_string_value(json_array_get(ops, i));
		HSM_ENSURE(op != NULL, HSM_ERR_VALIDATION,
		           "the JWK's \"key_ops\" holds a member that is not a string");
		verify = verify || strcmp(op, "verify") == 0;
	}
	HSM_ENSURE(verify, HSM_ERR_INVALID_KEY_USAGE,
	           "the token's key is not for verifying signatures (key_ops)");
	return HSM_SUCCESS;
}

static hsm_result check_signature(const parts *p, const json_t *jwk, hsm_jws_alg alg)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf spki = {0}, sig = {0}, der = {0};
	hsm_key_spec spec;
	HSM_TRY(check_key_use(jwk, alg));
	HSM_TRY(hsm_jwk_to_spki(jwk, &spki));
	HSM_TRY(hsm_spki_spec(spki.data, spki.len, &spec));
	HSM_CHECK(hsm_jws_alg_fits(alg, spec), HSM_ERR_INVALID_KEY_USAGE,
	          "the token says alg %s but its key is a %s key", hsm_jws_alg_name(alg),
	          hsm_spec_name(spec));
	res = hsm_b64url_decode(&sig, p->sig, p->sig_len, HSM_ERR_INVALID_SIGNATURE);
	HSM_CHECK(hsm_ok(res) || res.err == HSM_ERR_NOMEM, HSM_ERR_INVALID_SIGNATURE,
	          "the token's signature is not base64url");
	HSM_TRY(res);
	const uint8_t *s = sig.data;
	size_t s_len = sig.len;
	if (hsm_jws_alg_get(alg)->type == HSM_KT_EC) {
		/* RFC 7518 section 3.4: exactly R || S at field length; hsmd verifies DER. */
		HSM_TRY(hsm_ecdsa_p1363_to_der(sig.data, sig.len, hsm_ec_field_len(spec), &der));
		s = der.data;
		s_len = der.len;
	}
	size_t input_len = p->header_len + 1 + p->payload_len; /* header "." payload */
	HSM_TRY(hsm_verify_pub(spki.data, spki.len, hsm_jws_alg_get(alg)->sign_alg, HSM_MSG_RAW,
	                       (const uint8_t *)p->header, input_len, s, s_len));
out:
	hsm_buf_free(&spki);
	hsm_buf_free(&sig);
	hsm_buf_free(&der);
	return res;
}

/* A NumericDate claim (RFC 7519 section 2): a JSON number; absent is allowed unless required. */
static hsm_result numeric_date(const json_t *claims, const char *name, bool required,
                               double *out, bool *present)
{
	const json_t *v = json_object_get(claims, name);
	*present = v != NULL;
	if (v == NULL) {
		HSM_ENSURE(!required, HSM_ERR_VALIDATION, "the token has no \"%s\" claim", name);
		return HSM_SUCCESS;
	}
	HSM_ENSURE(json_is_number(v) && isfinite(json_number_value(v)), HSM_ERR_VALIDATION,
	           "the token's \"%s\" claim is not a NumericDate", name);
	*out = json_number_value(v);
	return HSM_SUCCESS;
}

static hsm_result check_times(const json_t *claims, const hsm_jwt_verify_opts *o)
{
	double exp = 0, nbf = 0, iat = 0, now = (double)o->now, leeway = (double)o->leeway;
	bool has;
	/* RFC 7519 4.1.4: the current time must be before exp; hsmd's tokens always have one. */
	HSM_GUARD(numeric_date(claims, "exp", true, &exp, &has));
	HSM_ENSURE(now < exp + leeway, HSM_ERR_VALIDATION,
	           "the token expired at %.0f (now %lld, leeway %llds)", exp, (long long)o->now,
	           (long long)o->leeway);
	HSM_GUARD(numeric_date(claims, "nbf", false, &nbf, &has));
	HSM_ENSURE(!has || now + leeway >= nbf, HSM_ERR_VALIDATION,
	           "the token is not valid before %.0f (now %lld)", nbf, (long long)o->now);
	HSM_GUARD(numeric_date(claims, "iat", false, &iat, &has));
	HSM_ENSURE(!has || now + leeway >= iat, HSM_ERR_VALIDATION,
	           "the token was issued in the future (iat %.0f, now %lld)", iat,
	           (long long)o->now);
	return HSM_SUCCESS;
}

static bool aud_contains(const json_t *aud, const char *who)
{
	if (json_is_string(aud))
		return strcmp(json_string_value(aud), who) == 0;
	for (size_t i = 0; json_is_array(aud) && i < json_array_size(aud); i++) {
		const char *s = json_string_value(json_array_get(aud, i));
		if (s != NULL && strcmp(s, who) == 0)
			return true;
	}
	return false;
}

static hsm_result check_claims(const json_t *claims, const hsm_jwt_verify_opts *o)
{
	HSM_GUARD(check_times(claims, o));
	if (o->issuer != NULL) {
		const char *iss = json_string_value(json_object_get(claims, "iss"));
		HSM_ENSURE(iss != NULL && strcmp(iss, o->issuer) == 0, HSM_ERR_VALIDATION,
		           "the token's issuer is not '%.128s'", o->issuer);
	}
	const json_t *aud = json_object_get(claims, "aud");
	if (o->audience != NULL)
		HSM_ENSURE(aud != NULL && aud_contains(aud, o->audience), HSM_ERR_VALIDATION,
		           "the token is not meant for audience '%.128s'", o->audience);
	else
		HSM_ENSURE(aud == NULL, HSM_ERR_VALIDATION,
		           "the token names audiences (aud): say which one you are (RFC 7519 4.1.3)");
	return HSM_SUCCESS;
}

hsm_result hsm_jwt_verify(const char *token, size_t len, const json_t *jwks,
                          const hsm_jwt_verify_opts *opts, json_t **header, json_t **claims)
{
	hsm_result res = HSM_SUCCESS;
	parts p = {0};
	json_t *h = NULL, *c = NULL;
	const json_t *jwk = NULL;
	hsm_jws_alg alg;
	const char *kid;
	HSM_ASSERT(token != NULL && jwks != NULL && opts != NULL);
	HSM_GUARD(split(token, len, &p));
	HSM_TRY(decode_object(p.header, p.header_len, "header", &h));
	HSM_TRY(read_header(h, &alg, &kid));
	HSM_TRY(find_jwk(jwks, kid, &jwk));
	HSM_TRY(check_signature(&p, jwk, alg));
	/* Only a verified payload is parsed and believed. */
	HSM_TRY(decode_object(p.payload, p.payload_len, "payload", &c));
	HSM_TRY(check_claims(c, opts));
	if (header != NULL) {
		*header = h;
		h = NULL;
	}
	if (claims != NULL) {
		*claims = c;
		c = NULL;
	}
out:
	json_decref(h);
	json_decref(c);
	return res;
}
