/*
 * jwt.c - JWS algorithms as data, the kid, the claims rules and the
 * assembly of a compact JWS (RFC 7515 section 7.1).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/encoding.h"
#include "common/json_read.h"
#include "crypto/crypto.h"
#include "kms/jwt.h"

/*
 * RFC 7518 section 3.1 (RS*, PS*, ES*) and RFC 8037 section 3.1 (EdDSA).
 * PS*: RSASSA-PSS with MGF1 of the same hash and a salt as long as the hash
 * (RFC 7518 section 3.5), which is how hsmd's RSASSA_PSS_* sign.  ES*: each
 * algorithm names one curve (RFC 7518 section 3.4).
 */
static const hsm_jws_alg_info algs[HSM_JWS_COUNT] = {
    [HSM_JWS_RS256] = {HSM_JWS_RS256, "RS256", HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_256, HSM_KT_RSA,
                       HSM_SPEC_COUNT},
    [HSM_JWS_RS384] = {HSM_JWS_RS384, "RS384", HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_384, HSM_KT_RSA,
                       HSM_SPEC_COUNT},
    [HSM_JWS_RS512] = {HSM_JWS_RS512, "RS512", HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_512, HSM_KT_RSA,
                       HSM_SPEC_COUNT},
    [HSM_JWS_PS256] = {HSM_JWS_PS256, "PS256", HSM_SIGN_RSASSA_PSS_SHA_256, HSM_KT_RSA,
                       HSM_SPEC_COUNT},
    [HSM_JWS_PS384] = {HSM_JWS_PS384, "PS384", HSM_SIGN_RSASSA_PSS_SHA_384, HSM_KT_RSA,
                       HSM_SPEC_COUNT},
    [HSM_JWS_PS512] = {HSM_JWS_PS512, "PS512", HSM_SIGN_RSASSA_PSS_SHA_512, HSM_KT_RSA,
                       HSM_SPEC_COUNT},
    [HSM_JWS_ES256] = {HSM_JWS_ES256, "ES256", HSM_SIGN_ECDSA_SHA_256, HSM_KT_EC,
                       HSM_SPEC_ECC_NIST_P256},
    [HSM_JWS_ES384] = {HSM_JWS_ES384, "ES384", HSM_SIGN_ECDSA_SHA_384, HSM_KT_EC,
                       HSM_SPEC_ECC_NIST_P384},
    [HSM_JWS_ES512] = {HSM_JWS_ES512, "ES512", HSM_SIGN_ECDSA_SHA_512, HSM_KT_EC,
                       HSM_SPEC_ECC_NIST_P521},
    [HSM_JWS_EDDSA] = {HSM_JWS_EDDSA, "EdDSA", HSM_SIGN_ED25519_SHA_512, HSM_KT_ED25519,
                       HSM_SPEC_ECC_NIST_EDWARDS25519},
};

const hsm_jws_alg_info *hsm_jws_alg_get(hsm_jws_alg alg)
{
	HSM_ASSERT(alg > HSM_JWS_NONE && alg < HSM_JWS_COUNT);
	return &algs[alg];
}

const char *hsm_jws_alg_name(hsm_jws_alg alg)
{
	return hsm_jws_alg_get(alg)->name;
}

hsm_result hsm_jws_alg_parse(const char *name, hsm_jws_alg *out)
{
	for (int a = HSM_JWS_NONE + 1; a < HSM_JWS_COUNT && name != NULL; a++) {
		if (strcmp(algs[a].name, name) == 0) {
			*out = (hsm_jws_alg)a;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION,
	                "Algorithm '%.32s' is not supported: use RS256, RS384, RS512, PS256, PS384, "
	                "PS512, ES256, ES384, ES512 or EdDSA",
	                name != NULL ? name : "");
}

bool hsm_jws_alg_fits(hsm_jws_alg alg, hsm_key_spec spec)
{
	if (alg <= HSM_JWS_NONE || alg >= HSM_JWS_COUNT || (unsigned)spec >= HSM_SPEC_COUNT)
		return false;
	const hsm_jws_alg_info *a = &algs[alg];
	if (a->type == HSM_KT_RSA)
		return hsm_spec_get(spec)->type == HSM_KT_RSA;
	return a->spec == spec;
}

hsm_result hsm_jws_default_alg(hsm_key_spec spec, hsm_jws_alg *out)
{
	static const struct {
		hsm_key_spec spec;
		hsm_jws_alg alg;
	} defaults[] = {
	    {HSM_SPEC_RSA_2048, HSM_JWS_RS256},       {HSM_SPEC_RSA_3072, HSM_JWS_RS256},
	    {HSM_SPEC_RSA_4096, HSM_JWS_RS256},       {HSM_SPEC_ECC_NIST_P256, HSM_JWS_ES256},
	    {HSM_SPEC_ECC_NIST_P384, HSM_JWS_ES384},  {HSM_SPEC_ECC_NIST_P521, HSM_JWS_ES512},
	    {HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_JWS_EDDSA},
	};
	for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
		if (defaults[i].spec == spec) {
			*out = defaults[i].alg;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_INVALID_KEY_USAGE,
	                "KeySpec %s cannot sign tokens: JWT signing needs an RSA, ECC_NIST_P256, "
	                "ECC_NIST_P384, ECC_NIST_P521 or ECC_NIST_EDWARDS25519 key",
	                hsm_spec_name(spec));
}

hsm_result hsm_jwt_key_alg(const hsm_key_record *key, hsm_jws_alg *out)
{
	HSM_ENSURE((key->flags & HSM_KEYFLAG_JWT) != 0, HSM_ERR_INVALID_KEY_USAGE,
	           "key %s is not enabled for JWT signing (HsmdJwt.EnableJwtSigning)", key->key_id);
	unsigned code = (key->flags & HSM_KEYFLAG_JWT_ALG_MASK) >> HSM_KEYFLAG_JWT_ALG_SHIFT;
	if (code == HSM_JWS_NONE)
		return hsm_jws_default_alg(key->spec, out);
	HSM_ENSURE(code < HSM_JWS_COUNT && hsm_jws_alg_fits((hsm_jws_alg)code, key->spec),
	           HSM_ERR_INVALID_KEY_USAGE, "key %s has no valid JWT signing algorithm",
	           key->key_id);
	*out = (hsm_jws_alg)code;
	return HSM_SUCCESS;
}

/* ---- kid ------------------------------------------------------------------------ */

hsm_result hsm_jwt_kid(const char *key_id, uint32_t version, char out[HSM_JWT_KID_MAX])
{
	HSM_ASSERT(key_id != NULL);
	HSM_ENSURE(hsm_is_uuid(key_id) && version >= 1, HSM_ERR_VALIDATION,
	           "a kid names a key id and a version >= 1");
	int n = snprintf(out, HSM_JWT_KID_MAX, "%s.v%u", key_id, version);
	HSM_ENSURE(n > 0 && n < HSM_JWT_KID_MAX, HSM_ERR_INTERNAL, "kid too long");
	return HSM_SUCCESS;
}

hsm_result hsm_jwt_kid_parse(const char *kid, char key_id[HSM_UUID_STRLEN + 1],
                             uint32_t *version)
{
	char id[HSM_UUID_STRLEN + 1];
	size_t len = strnlen(kid, HSM_JWT_KID_MAX);
	HSM_ENSURE(len > HSM_UUID_STRLEN + 2 && len < HSM_JWT_KID_MAX &&
	               kid[HSM_UUID_STRLEN] == '.' && kid[HSM_UUID_STRLEN + 1] == 'v',
	           HSM_ERR_VALIDATION, "kid is not of the form <key id>.v<version>");
	memcpy(id, kid, HSM_UUID_STRLEN);
	id[HSM_UUID_STRLEN] = '\0';
	const char *digits = kid + HSM_UUID_STRLEN + 2;
	int64_t v = 0;
	/* One spelling per kid: no sign, no leading zero. */
	HSM_ENSURE(hsm_is_uuid(id) && digits[0] >= '1' && digits[0] <= '9' &&
	               hsm_ok(hsm_parse_i64(digits, 1, UINT32_MAX, &v)),
	           HSM_ERR_VALIDATION, "kid is not of the form <key id>.v<version>");
	memcpy(key_id, id, sizeof(id));
	*version = (uint32_t)v;
	return HSM_SUCCESS;
}

/* ---- Claims ------------------------------------------------------------------------ */

static hsm_result put_compact_json(hsm_buf *text, const json_t *v);

static bool is_string_array(const json_t *v)
{
	if (!json_is_array(v) || json_array_size(v) == 0)
		return false;
	for (size_t i = 0; i < json_array_size(v); i++)
		if (!json_is_string(json_array_get(v, i)))
			return false;
	return true;
}

hsm_result hsm_jwt_check_claims(const json_t *claims)
{
	static const char *const owned[] = {"iat", "nbf", "exp"};
	static const char *const strings[] = {"iss", "sub", "jti"};
	HSM_ENSURE(json_is_object(claims), HSM_ERR_VALIDATION, "Claims must be a JSON object");
	/* Measured as the token carries them (a real as short as reads back exactly), not
	 * as jansson writes them at full precision: 0.1 is 3 bytes, not 19. */
	hsm_buf text = {0};
	hsm_result r = put_compact_json(&text, claims);
	size_t size = text.len;
	hsm_buf_free(&text);
	HSM_GUARD(r);
	HSM_ENSURE(size <= HSM_JWT_CLAIMS_MAX, HSM_ERR_VALIDATION,
	           "Claims must be at most %d bytes of JSON (got %zu)", HSM_JWT_CLAIMS_MAX, size);
	for (size_t i = 0; i < sizeof(owned) / sizeof(owned[0]); i++)
		HSM_ENSURE(json_object_get(claims, owned[i]) == NULL, HSM_ERR_VALIDATION,
		           "Claims must not contain \"%s\": hsmd sets iat, nbf and exp itself (choose "
		           "the lifetime with LifetimeSeconds)",
		           owned[i]);
	/* RFC 7519 sections 4.1.1, 4.1.2 and 4.1.7: StringOrURI / string values. */
	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		const json_t *v = json_object_get(claims, strings[i]);
		HSM_ENSURE(v == NULL || json_is_string(v), HSM_ERR_VALIDATION,
		           "claim \"%s\" must be a string (RFC 7519 section 4.1)", strings[i]);
	}
	/* RFC 7519 section 4.1.3: one StringOrURI or an array of them. */
	const json_t *aud = json_object_get(claims, "aud");
	HSM_ENSURE(aud == NULL || json_is_string(aud) || is_string_array(aud), HSM_ERR_VALIDATION,
	           "claim \"aud\" must be a string or a non-empty array of strings (RFC 7519 "
	           "section 4.1.3)");
	return HSM_SUCCESS;
}

static hsm_result header_value(const json_t *header, const char *name, const char **out)
{
	const json_t *v = json_object_get(header, name);
	*out = NULL;
	if (v == NULL)
		return HSM_SUCCESS;
	HSM_ENSURE(json_is_string(v) && json_string_length(v) >= 1 &&
	               json_string_length(v) <= HSM_JWT_HEADER_VALUE_MAX &&
	               strlen(json_string_value(v)) == json_string_length(v),
	           HSM_ERR_VALIDATION, "Header \"%s\" must be a string of 1 to %d characters", name,
	           HSM_JWT_HEADER_VALUE_MAX);
	*out = json_string_value(v);
	return HSM_SUCCESS;
}

hsm_result hsm_jwt_check_header(const json_t *header, const char **typ, const char **cty)
{
	const char *name;
	const json_t *v;
	HSM_ENSURE(json_is_object(header), HSM_ERR_VALIDATION, "Header must be a JSON object");
	json_object_foreach((json_t *)(uintptr_t)header, name, v)
	{
		HSM_ENSURE(strcmp(name, "typ") == 0 || strcmp(name, "cty") == 0, HSM_ERR_VALIDATION,
		           "Header may set only \"typ\" and \"cty\"; \"%.32s\" is not allowed (hsmd "
		           "sets \"alg\" and \"kid\")",
		           name);
	}
	const char *t = NULL, *c = NULL;
	HSM_GUARD(header_value(header, "typ", &t));
	HSM_GUARD(header_value(header, "cty", &c));
	/* RFC 7519 5.2: "JWT" says the payload is itself a signed or encrypted JWT, which the
	 * claims hsmd writes never are; a verifier following it would misread the token. */
	HSM_ENSURE(c == NULL || strcasecmp(c, "JWT") != 0, HSM_ERR_VALIDATION,
	           "Header \"cty\" \"JWT\" announces a nested JWT (RFC 7519 section 5.2); the "
	           "payload hsmd signs is the claims object itself: leave \"cty\" out");
	*typ = t;
	*cty = c;
	return HSM_SUCCESS;
}

/* ---- Token assembly ------------------------------------------------------------------ */

/* The fewest significant digits (1..17) that give x back when read. */
static int digits_for(double x)
{
	char text[40];
	for (int p = 1; p < 17; p++) {
		snprintf(text, sizeof(text), "%.*g", p, x);
		if (strtod(text, NULL) == x)
			return p;
	}
	return 17;
}

/*
 * A real number as jansson writes one (a '.' or an exponent always, the
 * exponent without '+' or leading zeros), with the fewest digits that read
 * back exactly: 0.1, not 0.10000000000000001.
 */
static void format_real(double x, char out[40])
{
	char text[40];
	snprintf(text, sizeof(text), "%.*g", digits_for(x), x);
	char *e = strpbrk(text, "eE");
	size_t n = 0;
	for (const char *p = text; *p != '\0' && p != e; p++)
		out[n++] = *p;
	if (e == NULL && strchr(text, '.') == NULL) {
		out[n++] = '.';
		out[n++] = '0';
	}
	if (e != NULL) {
		const char *p = e + 1;
		out[n++] = 'e';
		if (*p == '-')
			out[n++] = *p;
		if (*p == '-' || *p == '+')
			p++;
		while (*p == '0' && p[1] != '\0')
			p++;
		while (*p != '\0')
			out[n++] = *p++;
	}
	out[n] = '\0';
}

/*
 * Appends the compact JSON of v as a token carries it.  Each number with a
 * fraction is written as short as reads back exactly, on its own: jansson
 * writes every real of a document with one precision, so the text (at full
 * precision) is rewritten number by number outside its strings.
 */
static hsm_result put_compact_json(hsm_buf *text, const json_t *v)
{
	hsm_result res = HSM_SUCCESS;
	char *full = NULL;
	HSM_GUARD(hsm_json_text(v, JSON_COMPACT | (size_t)JSON_REAL_PRECISION(17), &full));
	bool in_string = false;
	for (const char *p = full; *p != '\0';) {
		if (in_string || (*p != '-' && (*p < '0' || *p > '9'))) {
			if (in_string && *p == '\\' && p[1] != '\0') {
				HSM_TRY(hsm_buf_put(text, p, 2));
				p += 2;
				continue;
			}
			if (*p == '"')
				in_string = !in_string;
			HSM_TRY(hsm_buf_put(text, p, 1));
			p++;
			continue;
		}
		size_t len = strspn(p, "+-0123456789.eE");
		char real[40];
		if (memchr(p, '.', len) != NULL || memchr(p, 'e', len) != NULL ||
		    memchr(p, 'E', len) != NULL) {
			format_real(strtod(p, NULL), real);
			HSM_TRY(hsm_buf_put_str(text, real));
		} else {
			HSM_TRY(hsm_buf_put(text, p, len)); /* an integer: as written */
		}
		p += len;
	}
out:
	free(full);
	return res;
}

/* Appends BASE64URL(compact JSON of v), written as put_compact_json writes it. */
static hsm_result put_b64url_json(hsm_buf *out, const json_t *v)
{
	hsm_buf text = {0};
	hsm_result res = put_compact_json(&text, v);
	if (hsm_ok(res))
		res = hsm_b64url_encode(out, text.data, text.len);
	hsm_buf_free(&text);
	return res;
}

static hsm_result build_header(const hsm_jwt_header *h, json_t **out)
{
	json_t *o = json_object();
	HSM_ENSURE(o != NULL, HSM_ERR_NOMEM, "out of memory");
	/* jansson answers NULL both for text that is not UTF-8 and for want of
	 * memory; only malloc leaves ENOMEM. */
	errno = 0;
	/* Member order is fixed so equal inputs give equal tokens. */
	int rc = json_object_set_new(o, "alg", json_string(hsm_jws_alg_name(h->alg)));
	rc |= json_object_set_new(o, "kid", json_string(h->kid));
	rc |= json_object_set_new(o, "typ", json_string(h->typ != NULL ? h->typ : "JWT"));
	if (h->cty != NULL)
		rc |= json_object_set_new(o, "cty", json_string(h->cty));
	if (rc != 0) {
		json_decref(o);
		HSM_ENSURE(errno != ENOMEM, HSM_ERR_NOMEM, "out of memory");
		return HSM_FAIL(HSM_ERR_VALIDATION, "the token header is not valid UTF-8 text");
	}
	*out = o;
	return HSM_SUCCESS;
}

static hsm_result build_payload(const json_t *claims, int64_t iat, int64_t exp, json_t **out)
{
	json_t *o = json_deep_copy(claims);
	HSM_ENSURE(o != NULL, HSM_ERR_NOMEM, "out of memory");
	/* RFC 7519 sections 4.1.4-4.1.6: NumericDate, seconds since the epoch. */
	int rc = json_object_set_new(o, "iat", json_integer(iat));
	rc |= json_object_set_new(o, "nbf", json_integer(iat));
	rc |= json_object_set_new(o, "exp", json_integer(exp));
	if (rc != 0) {
		json_decref(o);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	*out = o;
	return HSM_SUCCESS;
}

hsm_result hsm_jwt_signing_input(const hsm_jwt_header *h, const json_t *claims, int64_t iat,
                                 int64_t exp, hsm_buf *out)
{
	hsm_result res = HSM_SUCCESS;
	json_t *header = NULL, *payload = NULL;
	size_t start = out->len;
	HSM_ASSERT(h != NULL && h->kid != NULL);
	HSM_GUARD(hsm_jwt_check_claims(claims));
	HSM_ENSURE(exp > iat, HSM_ERR_VALIDATION, "a token must expire after it is issued");
	HSM_TRY(build_header(h, &header));
	HSM_TRY(build_payload(claims, iat, exp, &payload));
	HSM_TRY(put_b64url_json(out, header));
	HSM_TRY(hsm_buf_put_u8(out, '.'));
	HSM_TRY(put_b64url_json(out, payload));
	HSM_CHECK(out->len - start <= HSM_JWT_TOKEN_MAX, HSM_ERR_VALIDATION,
	          "the token would exceed %d bytes", HSM_JWT_TOKEN_MAX);
out:
	if (hsm_failed(res))
		out->len = start;
	json_decref(header);
	json_decref(payload);
	return res;
}

hsm_result hsm_jwt_append_signature(hsm_buf *token, hsm_jws_alg alg, hsm_key_spec spec,
                                    const uint8_t *sig, size_t sig_len)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf raw = {0};
	size_t start = token->len;
	HSM_ENSURE(hsm_jws_alg_fits(alg, spec), HSM_ERR_INVALID_KEY_USAGE,
	           "%s does not fit KeySpec %s", hsm_jws_alg_name(alg), hsm_spec_name(spec));
	if (hsm_jws_alg_get(alg)->type == HSM_KT_EC) {
		HSM_TRY(hsm_ecdsa_der_to_p1363(sig, sig_len, hsm_ec_field_len(spec), &raw));
		sig = raw.data;
		sig_len = raw.len;
	}
	HSM_TRY(hsm_buf_put_u8(token, '.'));
	HSM_TRY(hsm_b64url_encode(token, sig, sig_len));
out:
	if (hsm_failed(res))
		token->len = start;
	hsm_buf_free(&raw);
	return res;
}
