/*
 * jwt_test.c - kms/jwt.c, kms/jwk.c, kms/jwt_verify.c: the algorithm table,
 * kid format, claims and header rules, token assembly and JOSE encoding,
 * ECDSA signatures as fixed-length R || S, JWK rendering and parsing for
 * every key type, and offline verification with its refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/encoding.h"
#include "kms/jwt.h"
#include "support/crypto_fixture.h"

#define KEY_ID "0f6c2b1e-4d3a-4c5b-9a1e-2b3c4d5e6f70"
#define NOW 1800000000

static json_t *parse(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
	if (j == NULL)
		fail_msg("bad JSON in test: %s", e.text);
	return j;
}

static char *b64url_json_decode(const char *s, size_t n)
{
	hsm_buf raw = {0};
	assert_succeeds(hsm_b64url_decode(&raw, s, n, HSM_ERR_VALIDATION));
	assert_succeeds(hsm_buf_terminate(&raw));
	char *out = strdup((const char *)raw.data);
	hsm_buf_free(&raw);
	return out;
}

/* ---- Algorithms and kid --------------------------------------------------------- */

static void test_alg_table(void **state)
{
	(void)state;
	static const char *names[] = {"RS256", "RS384", "RS512", "PS256", "PS384",
	                              "PS512", "ES256", "ES384", "ES512", "EdDSA"};
	for (int a = 1; a < HSM_JWS_COUNT; a++) {
		hsm_jws_alg got;
		assert_string_equal(hsm_jws_alg_name((hsm_jws_alg)a), names[a - 1]);
		assert_succeeds(hsm_jws_alg_parse(names[a - 1], &got));
		assert_int_equal(got, a);
	}
	hsm_jws_alg got;
	assert_fails_with(hsm_jws_alg_parse("none", &got), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_jws_alg_parse("HS256", &got), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_jws_alg_parse("rs256", &got), HSM_ERR_VALIDATION);
	/* Which key fits which algorithm (RFC 7518 3.3-3.5, RFC 8037 3.1). */
	assert_true(hsm_jws_alg_fits(HSM_JWS_PS512, HSM_SPEC_RSA_2048));
	assert_true(hsm_jws_alg_fits(HSM_JWS_RS256, HSM_SPEC_RSA_4096));
	assert_true(hsm_jws_alg_fits(HSM_JWS_ES384, HSM_SPEC_ECC_NIST_P384));
	assert_false(hsm_jws_alg_fits(HSM_JWS_ES256, HSM_SPEC_ECC_NIST_P384));
	assert_false(hsm_jws_alg_fits(HSM_JWS_ES256, HSM_SPEC_ECC_SECG_P256K1));
	assert_false(hsm_jws_alg_fits(HSM_JWS_RS256, HSM_SPEC_ECC_NIST_P256));
	assert_false(hsm_jws_alg_fits(HSM_JWS_EDDSA, HSM_SPEC_ECC_NIST_P256));
	assert_true(hsm_jws_alg_fits(HSM_JWS_EDDSA, HSM_SPEC_ECC_NIST_EDWARDS25519));
	assert_false(hsm_jws_alg_fits(HSM_JWS_NONE, HSM_SPEC_RSA_2048));
	/* Defaults per key spec. */
	static const struct {
		hsm_key_spec spec;
		hsm_jws_alg alg;
	} defs[] = {{HSM_SPEC_RSA_4096, HSM_JWS_RS256}, {HSM_SPEC_ECC_NIST_P256, HSM_JWS_ES256},
	            {HSM_SPEC_ECC_NIST_P384, HSM_JWS_ES384}, {HSM_SPEC_ECC_NIST_P521, HSM_JWS_ES512},
	            {HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_JWS_EDDSA}};
	for (size_t i = 0; i < sizeof(defs) / sizeof(defs[0]); i++) {
		assert_succeeds(hsm_jws_default_alg(defs[i].spec, &got));
		assert_int_equal(got, defs[i].alg);
	}
	assert_fails_with(hsm_jws_default_alg(HSM_SPEC_ECC_SECG_P256K1, &got),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_jws_default_alg(HSM_SPEC_HMAC_256, &got), HSM_ERR_INVALID_KEY_USAGE);
}

static void test_key_alg_from_flags(void **state)
{
	(void)state;
	hsm_key_record k;
	hsm_jws_alg alg;
	memset(&k, 0, sizeof(k));
	strcpy(k.key_id, KEY_ID);
	k.spec = HSM_SPEC_RSA_2048;
	assert_fails_with(hsm_jwt_key_alg(&k, &alg), HSM_ERR_INVALID_KEY_USAGE); /* not marked */
	k.flags = HSM_KEYFLAG_JWT; /* marked without an algorithm: the spec's default */
	assert_succeeds(hsm_jwt_key_alg(&k, &alg));
	assert_int_equal(alg, HSM_JWS_RS256);
	k.flags = HSM_KEYFLAG_JWT | ((uint32_t)HSM_JWS_PS384 << HSM_KEYFLAG_JWT_ALG_SHIFT);
	assert_succeeds(hsm_jwt_key_alg(&k, &alg));
	assert_int_equal(alg, HSM_JWS_PS384);
	k.flags = HSM_KEYFLAG_JWT | ((uint32_t)HSM_JWS_ES256 << HSM_KEYFLAG_JWT_ALG_SHIFT);
	assert_fails_with(hsm_jwt_key_alg(&k, &alg), HSM_ERR_INVALID_KEY_USAGE); /* RSA + ES256 */
	k.flags = HSM_KEYFLAG_JWT | (200U << HSM_KEYFLAG_JWT_ALG_SHIFT);
	assert_fails_with(hsm_jwt_key_alg(&k, &alg), HSM_ERR_INVALID_KEY_USAGE);
}

static void test_kid_format(void **state)
{
	(void)state;
	char kid[HSM_JWT_KID_MAX], id[HSM_UUID_STRLEN + 1];
	uint32_t v = 0;
	assert_succeeds(hsm_jwt_kid(KEY_ID, 3, kid));
	assert_string_equal(kid, KEY_ID ".v3");
	assert_succeeds(hsm_jwt_kid_parse(kid, id, &v));
	assert_string_equal(id, KEY_ID);
	assert_int_equal(v, 3);
	assert_succeeds(hsm_jwt_kid(KEY_ID, UINT32_MAX, kid));
	assert_string_equal(kid, KEY_ID ".v4294967295");
	assert_succeeds(hsm_jwt_kid_parse(kid, id, &v));
	assert_int_equal(v, UINT32_MAX);
	assert_fails_with(hsm_jwt_kid(KEY_ID, 0, kid), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_jwt_kid("alias/x", 1, kid), HSM_ERR_VALIDATION);
	static const char *bad[] = {KEY_ID ".v0", KEY_ID ".v01", KEY_ID ".v", KEY_ID ".1",
	                            KEY_ID "v1", KEY_ID ".v4294967296", KEY_ID ".v-1",
	                            KEY_ID ".v1 ", "0f6c2b1e.v1", ""};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_fails_with(hsm_jwt_kid_parse(bad[i], id, &v), HSM_ERR_VALIDATION);
}

/* ---- Claims and header rules ----------------------------------------------------- */

static void expect_claims_error(const char *json, const char *needle)
{
	json_t *c = parse(json);
	hsm_result r = hsm_jwt_check_claims(c);
	json_decref(c);
	assert_int_equal(r.err, HSM_ERR_VALIDATION);
	if (strstr(hsm_last_message(), needle) == NULL)
		fail_msg("message '%s' does not mention '%s'", hsm_last_message(), needle);
}

static void test_claims_rules(void **state)
{
	(void)state;
	json_t *ok = parse("{\"iss\":\"catalytic-computing-api\",\"sub\":\"user-1\","
	                   "\"aud\":[\"catalytic-api\",\"saas-api\"],\"jti\":\"x\",\"scope\":[1,{}]}");
	assert_succeeds(hsm_jwt_check_claims(ok));
	json_decref(ok);
	ok = parse("{}");
	assert_succeeds(hsm_jwt_check_claims(ok));
	json_decref(ok);
	expect_claims_error("[1]", "JSON object");
	expect_claims_error("\"text\"", "JSON object");
	expect_claims_error("{\"exp\":1}", "\"exp\"");
	expect_claims_error("{\"sub\":\"a\",\"iat\":1}", "\"iat\"");
	expect_claims_error("{\"nbf\":null}", "\"nbf\"");
	expect_claims_error("{\"iss\":5}", "\"iss\"");
	expect_claims_error("{\"sub\":[\"a\"]}", "\"sub\"");
	expect_claims_error("{\"jti\":true}", "\"jti\"");
	expect_claims_error("{\"aud\":[]}", "\"aud\"");
	expect_claims_error("{\"aud\":[\"a\",2]}", "\"aud\"");
	expect_claims_error("{\"aud\":{}}", "\"aud\"");
	/* Size: exactly at the limit passes, one byte more fails. */
	size_t pad = HSM_JWT_CLAIMS_MAX - strlen("{\"p\":\"\"}");
	char *big = malloc(HSM_JWT_CLAIMS_MAX + 2);
	memset(big, 'a', HSM_JWT_CLAIMS_MAX + 1);
	big[pad] = '\0';
	json_t *c = json_pack("{s:s}", "p", big);
	assert_succeeds(hsm_jwt_check_claims(c));
	json_object_set_new(c, "p", json_stringn(big, pad + 1));
	assert_fails_with(hsm_jwt_check_claims(c), HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "16384"));
	json_decref(c);
	free(big);
	/*
	 * Measured as the token carries them: a real as short as reads back
	 * exactly (0.1 is 3 bytes), not at jansson's full precision (19).
	 */
	c = json_object();
	json_t *reals = json_array();
	for (int i = 0; i < 2000; i++)
		json_array_append_new(reals, json_real(0.1));
	json_object_set_new(c, "scores", reals); /* {"scores":[0.1,...]}: 8,011 bytes */
	assert_succeeds(hsm_jwt_check_claims(c));
	json_decref(c);
}

static void test_header_rules(void **state)
{
	(void)state;
	const char *typ = "x", *cty = "x";
	json_t *h = parse("{\"typ\":\"at+jwt\"}");
	assert_succeeds(hsm_jwt_check_header(h, &typ, &cty));
	assert_string_equal(typ, "at+jwt");
	assert_null(cty);
	json_decref(h);
	static const char *bad[] = {"{\"alg\":\"none\"}", "{\"kid\":\"k\"}", "{\"crit\":[\"b64\"]}",
	                            "{\"typ\":\"\"}", "{\"typ\":7}", "{\"cty\":null}", "[]",
	                            /* RFC 7519 5.2: a nested JWT, which the payload never is */
	                            "{\"cty\":\"JWT\"}", "{\"cty\":\"jwt\"}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		h = parse(bad[i]);
		assert_fails_with(hsm_jwt_check_header(h, &typ, &cty), HSM_ERR_VALIDATION);
		json_decref(h);
	}
}

/* ---- Assembly ------------------------------------------------------------------ */

static void test_signing_input_encoding(void **state)
{
	(void)state;
	json_t *claims = parse("{\"sub\":\"alice\",\"aud\":[\"a\",\"b\"]}");
	hsm_jwt_header h = {HSM_JWS_ES256, KEY_ID ".v2", NULL, NULL};
	hsm_buf in = {0};
	assert_succeeds(hsm_jwt_signing_input(&h, claims, NOW, NOW + 900, &in));
	const char *dot = memchr(in.data, '.', in.len);
	assert_non_null(dot);
	/* base64url without padding (RFC 7515 section 2): no '=', '+' or '/'. */
	for (size_t i = 0; i < in.len; i++)
		assert_null(strchr("=+/ \n", in.data[i]));
	size_t hlen = (size_t)(dot - (const char *)in.data);
	char *header = b64url_json_decode((const char *)in.data, hlen);
	char *payload = b64url_json_decode(dot + 1, in.len - hlen - 1);
	assert_string_equal(header, "{\"alg\":\"ES256\",\"kid\":\"" KEY_ID ".v2\",\"typ\":\"JWT\"}");
	assert_string_equal(payload, "{\"sub\":\"alice\",\"aud\":[\"a\",\"b\"],\"iat\":1800000000,"
	                             "\"nbf\":1800000000,\"exp\":1800000900}");
	free(header);
	free(payload);
	/* typ and cty from the caller; the same input gives the same bytes. */
	hsm_jwt_header h2 = {HSM_JWS_EDDSA, KEY_ID ".v1", "at+jwt", "example"};
	hsm_buf a = {0}, b = {0};
	assert_succeeds(hsm_jwt_signing_input(&h2, claims, NOW, NOW + 1, &a));
	assert_succeeds(hsm_jwt_signing_input(&h2, claims, NOW, NOW + 1, &b));
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	dot = memchr(a.data, '.', a.len);
	header = b64url_json_decode((const char *)a.data, (size_t)(dot - (const char *)a.data));
	assert_string_equal(header, "{\"alg\":\"EdDSA\",\"kid\":\"" KEY_ID
	                            ".v1\",\"typ\":\"at+jwt\",\"cty\":\"example\"}");
	free(header);
	/* Numbers with a fraction come out as short as reads back exactly. */
	json_t *reals = parse("{\"a\":0.1,\"b\":[1.5,{\"c\":-2.25e-7}],\"n\":3}");
	hsm_buf rb = {0};
	assert_succeeds(hsm_jwt_signing_input(&h, reals, NOW, NOW + 1, &rb));
	dot = memchr(rb.data, '.', rb.len);
	payload = b64url_json_decode(dot + 1, rb.len - (size_t)(dot + 1 - (const char *)rb.data));
	assert_string_equal(payload, "{\"a\":0.1,\"b\":[1.5,{\"c\":-2.25e-7}],\"n\":3,"
	                             "\"iat\":1800000000,\"nbf\":1800000000,\"exp\":1800000001}");
	free(payload);
	json_decref(reals);
	/* One that needs all 17 digits keeps them, and the others beside it stay short; a
	 * whole real stays a real, and strings holding digits are left alone. */
	reals = parse("{\"n\":0.1,\"x\":0.30000000000000004,\"w\":[1.0,-1e20,2.5e-300],"
	              "\"s\":\"0.10000000000000001 \\\" 1.0\",\"i\":-12}");
	hsm_buf_clear(&rb);
	assert_succeeds(hsm_jwt_signing_input(&h, reals, NOW, NOW + 1, &rb));
	dot = memchr(rb.data, '.', rb.len);
	payload = b64url_json_decode(dot + 1, rb.len - (size_t)(dot + 1 - (const char *)rb.data));
	assert_non_null(strstr(payload, "{\"n\":0.1,\"x\":0.30000000000000004,\"w\":[1.0,-1e20,"
	                                "2.5e-300],\"s\":\"0.10000000000000001 \\\" 1.0\",\"i\":-12,"));
	free(payload);
	json_decref(reals);
	hsm_buf_free(&rb);
	/* A token must expire after it is issued; bad claims fail here too, leaving out as it was. */
	size_t before = in.len;
	assert_fails_with(hsm_jwt_signing_input(&h, claims, NOW, NOW, &in), HSM_ERR_VALIDATION);
	json_t *bad = parse("{\"exp\":5}");
	assert_fails_with(hsm_jwt_signing_input(&h, bad, NOW, NOW + 5, &in), HSM_ERR_VALIDATION);
	assert_int_equal(in.len, before);
	json_decref(bad);
	json_decref(claims);
	hsm_buf_free(&in);
	hsm_buf_free(&a);
	hsm_buf_free(&b);
}

/* A JWKS document with one key, as the service renders it. */
static json_t *jwks_of(const hsm_material *m, hsm_jws_alg alg, const char *kid)
{
	hsm_buf spki = {0};
	json_t *jwk = NULL;
	assert_succeeds(hsm_material_public_der(m, &spki));
	assert_succeeds(hsm_jwk_from_spki(spki.data, spki.len, alg, kid, &jwk));
	hsm_buf_free(&spki);
	return json_pack("{s:[o]}", "keys", jwk);
}

/* Signs claims with m the way the service does, appending the token to out. */
static void make_token(const hsm_material *m, hsm_jws_alg alg, const char *kid,
                       const char *claims_json, int64_t iat, int64_t exp, hsm_buf *out)
{
	json_t *claims = parse(claims_json);
	hsm_jwt_header h = {alg, kid, NULL, NULL};
	hsm_buf sig = {0};
	assert_succeeds(hsm_jwt_signing_input(&h, claims, iat, exp, out));
	assert_succeeds(hsm_sign(m, hsm_jws_alg_get(alg)->sign_alg, HSM_MSG_RAW, out->data, out->len,
	                         &sig));
	assert_succeeds(hsm_jwt_append_signature(out, alg, hsm_material_spec(m), sig.data, sig.len));
	assert_succeeds(hsm_buf_terminate(out));
	hsm_buf_free(&sig);
	json_decref(claims);
}

/* A token whose header has no kid, {"alg":...,"typ":"JWT"}, signed with m (another issuer's,
 * say: hsmd's own tokens always name theirs). */
static void make_token_without_kid(const hsm_material *m, hsm_jws_alg alg, const char *claims,
                                   hsm_buf *out)
{
	char header[64];
	snprintf(header, sizeof(header), "{\"alg\":\"%s\",\"typ\":\"JWT\"}", hsm_jws_alg_name(alg));
	hsm_buf sig = {0};
	assert_succeeds(hsm_b64url_encode(out, (const uint8_t *)header, strlen(header)));
	assert_succeeds(hsm_buf_put(out, ".", 1));
	assert_succeeds(hsm_b64url_encode(out, (const uint8_t *)claims, strlen(claims)));
	assert_succeeds(hsm_sign(m, hsm_jws_alg_get(alg)->sign_alg, HSM_MSG_RAW, out->data, out->len,
	                         &sig));
	assert_succeeds(hsm_jwt_append_signature(out, alg, hsm_material_spec(m), sig.data, sig.len));
	assert_succeeds(hsm_buf_terminate(out));
	hsm_buf_free(&sig);
}

static size_t signature_len(const hsm_buf *token)
{
	const char *last = strrchr((const char *)token->data, '.');
	hsm_buf raw = {0};
	assert_succeeds(hsm_b64url_decode(&raw, last + 1, strlen(last + 1), HSM_ERR_VALIDATION));
	size_t n = raw.len;
	hsm_buf_free(&raw);
	return n;
}

/* ES*: fixed-length R || S, never DER (RFC 7518 section 3.4), on every curve, many times. */
static void test_es_signature_fixed_length(void **state)
{
	(void)state;
	static const struct {
		hsm_key_spec spec;
		hsm_jws_alg alg;
		size_t len;
	} cases[] = {{HSM_SPEC_ECC_NIST_P256, HSM_JWS_ES256, 64},
	             {HSM_SPEC_ECC_NIST_P384, HSM_JWS_ES384, 96},
	             {HSM_SPEC_ECC_NIST_P521, HSM_JWS_ES512, 132}};
	hsm_jwt_verify_opts o = {NOW, 0, NULL, NULL};
	for (size_t i = 0; i < 3; i++) {
		const hsm_material *m = fixture_key(cases[i].spec);
		json_t *jwks = jwks_of(m, cases[i].alg, KEY_ID ".v1");
		/* DER lengths vary with leading zeros of r and s; the JOSE form never does. */
		for (int round = 0; round < 16; round++) {
			hsm_buf t = {0};
			char claims[32];
			snprintf(claims, sizeof(claims), "{\"n\":%d}", round);
			make_token(m, cases[i].alg, KEY_ID ".v1", claims, NOW, NOW + 60, &t);
			assert_int_equal(signature_len(&t), cases[i].len);
			assert_succeeds(hsm_jwt_verify((const char *)t.data, t.len, jwks, &o, NULL, NULL));
			hsm_buf_free(&t);
		}
		json_decref(jwks);
	}
	/* A signature that is not DER cannot be turned into a token. */
	hsm_buf t = {0};
	static const uint8_t junk[] = {0x30, 0x03, 0x02, 0x01};
	assert_fails_with(hsm_jwt_append_signature(&t, HSM_JWS_ES256, HSM_SPEC_ECC_NIST_P256, junk,
	                                           sizeof(junk)),
	                  HSM_ERR_INVALID_SIGNATURE);
	assert_int_equal(t.len, 0);
	assert_fails_with(hsm_jwt_append_signature(&t, HSM_JWS_ES256, HSM_SPEC_ECC_NIST_P384, junk,
	                                           sizeof(junk)),
	                  HSM_ERR_INVALID_KEY_USAGE);
	hsm_buf_free(&t);
}

/* ---- JWK ---------------------------------------------------------------------- */

static void test_jwk_round_trip(void **state)
{
	(void)state;
	static const struct {
		hsm_key_spec spec;
		hsm_jws_alg alg;
		const char *kty, *crv;
		size_t coord; /* EC / OKP coordinate length */
	} cases[] = {{HSM_SPEC_RSA_2048, HSM_JWS_PS256, "RSA", NULL, 0},
	             {HSM_SPEC_ECC_NIST_P256, HSM_JWS_ES256, "EC", "P-256", 32},
	             {HSM_SPEC_ECC_NIST_P384, HSM_JWS_ES384, "EC", "P-384", 48},
	             {HSM_SPEC_ECC_NIST_P521, HSM_JWS_ES512, "EC", "P-521", 66},
	             {HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_JWS_EDDSA, "OKP", "Ed25519", 32}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		hsm_buf spki = {0}, back = {0}, raw = {0};
		json_t *jwk = NULL;
		assert_succeeds(hsm_material_public_der(fixture_key(cases[i].spec), &spki));
		assert_succeeds(hsm_jwk_from_spki(spki.data, spki.len, cases[i].alg, "k1", &jwk));
		assert_string_equal(json_string_value(json_object_get(jwk, "kty")), cases[i].kty);
		assert_string_equal(json_string_value(json_object_get(jwk, "use")), "sig");
		assert_string_equal(json_string_value(json_object_get(jwk, "kid")), "k1");
		assert_string_equal(json_string_value(json_object_get(jwk, "alg")),
		                    hsm_jws_alg_name(cases[i].alg));
		assert_null(json_object_get(jwk, "d"));
		if (cases[i].crv != NULL) {
			assert_string_equal(json_string_value(json_object_get(jwk, "crv")), cases[i].crv);
			const char *x = json_string_value(json_object_get(jwk, "x"));
			assert_succeeds(hsm_b64url_decode(&raw, x, strlen(x), HSM_ERR_VALIDATION));
			assert_int_equal(raw.len, cases[i].coord);
			assert_true((json_object_get(jwk, "y") != NULL) == (cases[i].kty[0] == 'E'));
		} else {
			const char *n = json_string_value(json_object_get(jwk, "n"));
			assert_succeeds(hsm_b64url_decode(&raw, n, strlen(n), HSM_ERR_VALIDATION));
			assert_int_equal(raw.len, 256);
			assert_string_equal(json_string_value(json_object_get(jwk, "e")), "AQAB");
		}
		assert_succeeds(hsm_jwk_to_spki(jwk, &back));
		assert_int_equal(back.len, spki.len);
		assert_memory_equal(back.data, spki.data, spki.len);
		/* The key does not fit every algorithm. */
		json_t *no = NULL;
		hsm_jws_alg other = cases[i].alg == HSM_JWS_EDDSA ? HSM_JWS_RS256 : HSM_JWS_EDDSA;
		assert_fails_with(hsm_jwk_from_spki(spki.data, spki.len, other, "k1", &no),
		                  HSM_ERR_INVALID_KEY_USAGE);
		assert_null(no);
		json_decref(jwk);
		hsm_buf_free(&spki);
		hsm_buf_free(&back);
		hsm_buf_free(&raw);
	}
}

static void expect_jwk_refused(const char *json)
{
	json_t *jwk = parse(json);
	hsm_buf spki = {0};
	assert_fails_with(hsm_jwk_to_spki(jwk, &spki), HSM_ERR_VALIDATION);
	assert_int_equal(spki.len, 0);
	hsm_buf_free(&spki);
	json_decref(jwk);
}

static void test_jwk_parse_refusals(void **state)
{
	(void)state;
	/* A P-256 JWK whose y is changed is no longer on the curve. */
	hsm_buf spki = {0};
	json_t *jwk = NULL;
	assert_succeeds(hsm_material_public_der(fixture_key(HSM_SPEC_ECC_NIST_P256), &spki));
	assert_succeeds(hsm_jwk_from_spki(spki.data, spki.len, HSM_JWS_ES256, "k", &jwk));
	char *y = strdup(json_string_value(json_object_get(jwk, "y")));
	y[5] = y[5] == 'A' ? 'B' : 'A';
	json_object_set_new(jwk, "y", json_string(y));
	char *text = json_dumps(jwk, 0);
	expect_jwk_refused(text);
	free(text);
	free(y);
	/* Private members are refused rather than ignored. */
	json_object_set_new(jwk, "d", json_string("AAAA"));
	text = json_dumps(jwk, 0);
	expect_jwk_refused(text);
	free(text);
	json_decref(jwk);
	hsm_buf_free(&spki);
	expect_jwk_refused("{\"kty\":\"oct\",\"k\":\"AAAA\"}");
	expect_jwk_refused("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\"}");
	expect_jwk_refused("{\"kty\":\"EC\",\"crv\":\"secp256k1\",\"x\":\"AA\",\"y\":\"AA\"}");
	expect_jwk_refused("{\"kty\":\"OKP\",\"crv\":\"Ed448\",\"x\":\"AAAA\"}");
	expect_jwk_refused("{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}");
	expect_jwk_refused("{\"kty\":\"EC\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"}");
	expect_jwk_refused("{\"kty\":\"RSA\",\"n\":\"AAEC\",\"e\":\"AQAB\"}"); /* leading zero */
	expect_jwk_refused("{\"kty\":\"RSA\",\"n\":\"q83v\",\"e\":\"AQAB\"}"); /* 24-bit modulus */
	expect_jwk_refused("{\"kty\":\"RSA\",\"n\":\"q8=3v\",\"e\":\"AQAB\"}");
	expect_jwk_refused("{\"n\":\"q83v\",\"e\":\"AQAB\"}");
	expect_jwk_refused("[]");
}

/* ---- Verification ---------------------------------------------------------------- */

typedef struct alg_case {
	hsm_key_spec spec;
	hsm_jws_alg alg;
} alg_case;

static const alg_case every_alg[] = {
    {HSM_SPEC_RSA_2048, HSM_JWS_RS256},      {HSM_SPEC_RSA_2048, HSM_JWS_RS384},
    {HSM_SPEC_RSA_2048, HSM_JWS_RS512},      {HSM_SPEC_RSA_2048, HSM_JWS_PS256},
    {HSM_SPEC_RSA_2048, HSM_JWS_PS384},      {HSM_SPEC_RSA_2048, HSM_JWS_PS512},
    {HSM_SPEC_ECC_NIST_P256, HSM_JWS_ES256}, {HSM_SPEC_ECC_NIST_P384, HSM_JWS_ES384},
    {HSM_SPEC_ECC_NIST_P521, HSM_JWS_ES512}, {HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_JWS_EDDSA},
};

/* Flips one bit of the character at pos of a copy of token and verifies it. */
static hsm_result verify_tampered(const hsm_buf *t, size_t pos, const json_t *jwks,
                                  const hsm_jwt_verify_opts *o)
{
	char *copy = strdup((const char *)t->data);
	/* Swap to another base64url character so only the value, not the alphabet, changes. */
	copy[pos] = copy[pos] == 'A' ? 'B' : 'A';
	hsm_result r = hsm_jwt_verify(copy, strlen(copy), jwks, o, NULL, NULL);
	free(copy);
	return r;
}

static void test_verify_every_algorithm(void **state)
{
	(void)state;
	hsm_jwt_verify_opts o = {NOW + 10, 0, "catalytic-computing-api", "saas-api"};
	const char *claims = "{\"iss\":\"catalytic-computing-api\",\"sub\":\"u1\","
	                     "\"aud\":[\"catalytic-api\",\"saas-api\"]}";
	for (size_t i = 0; i < sizeof(every_alg) / sizeof(every_alg[0]); i++) {
		const hsm_material *m = fixture_key(every_alg[i].spec);
		json_t *jwks = jwks_of(m, every_alg[i].alg, KEY_ID ".v7");
		hsm_buf t = {0};
		json_t *h = NULL, *c = NULL;
		make_token(m, every_alg[i].alg, KEY_ID ".v7", claims, NOW, NOW + 900, &t);
		assert_succeeds(hsm_jwt_verify((const char *)t.data, t.len, jwks, &o, &h, &c));
		assert_string_equal(json_string_value(json_object_get(h, "alg")),
		                    hsm_jws_alg_name(every_alg[i].alg));
		assert_string_equal(json_string_value(json_object_get(c, "sub")), "u1");
		assert_int_equal(json_integer_value(json_object_get(c, "exp")), NOW + 900);
		json_decref(h);
		json_decref(c);
		/* A changed byte in the header, the payload or the signature fails. */
		const char *s = (const char *)t.data;
		size_t d1 = (size_t)(strchr(s, '.') - s), d2 = (size_t)(strrchr(s, '.') - s);
		assert_int_not_equal(verify_tampered(&t, 3, jwks, &o).err, HSM_OK);
		assert_fails_with(verify_tampered(&t, d1 + 5, jwks, &o), HSM_ERR_INVALID_SIGNATURE);
		assert_fails_with(verify_tampered(&t, d2 + 3, jwks, &o), HSM_ERR_INVALID_SIGNATURE);
		hsm_buf_free(&t);
		json_decref(jwks);
	}
}

/* RFC 7515 section 4.1.4: "kid" is optional.  Without it, a JWK Set of one key is the key;
 * a set of several leaves the choice open, and that is refused, not guessed. */
static void test_verify_without_kid(void **state)
{
	(void)state;
	const hsm_material *ec = fixture_key(HSM_SPEC_ECC_NIST_P256);
	const hsm_material *rsa = fixture_key(HSM_SPEC_RSA_2048);
	hsm_jwt_verify_opts o = {NOW, 0, NULL, NULL};
	hsm_buf t = {0};
	char claims[64];
	snprintf(claims, sizeof(claims), "{\"sub\":\"s\",\"exp\":%d}", NOW + 60);
	make_token_without_kid(ec, HSM_JWS_ES256, claims, &t);
	const char *tok = (const char *)t.data;
	json_t *one = jwks_of(ec, HSM_JWS_ES256, "any-kid"), *claims_out = NULL;
	assert_succeeds(hsm_jwt_verify(tok, t.len, one, &o, NULL, &claims_out));
	assert_string_equal(json_string_value(json_object_get(claims_out, "sub")), "s");
	json_decref(claims_out);
	/* The one key still decides the algorithm, and still has to have signed. */
	json_t *wrong = jwks_of(rsa, HSM_JWS_RS256, "any-kid");
	assert_fails_with(hsm_jwt_verify(tok, t.len, wrong, &o, NULL, NULL),
	                  HSM_ERR_INVALID_KEY_USAGE);
	json_decref(wrong);
	char *forged = strdup(tok);
	char *last = strrchr(forged, '.') + 1;
	last[3] = last[3] == 'A' ? 'B' : 'A';
	assert_fails_with(hsm_jwt_verify(forged, t.len, one, &o, NULL, NULL),
	                  HSM_ERR_INVALID_SIGNATURE);
	free(forged);
	/* Two keys (the signer among them), or none. */
	json_t *two = jwks_of(ec, HSM_JWS_ES256, "a");
	json_array_append_new(json_object_get(two, "keys"),
	                      json_deep_copy(json_array_get(json_object_get(one, "keys"), 0)));
	assert_fails_with(hsm_jwt_verify(tok, t.len, two, &o, NULL, NULL), HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "holds 2 keys"));
	json_t *none = parse("{\"keys\":[]}");
	assert_fails_with(hsm_jwt_verify(tok, t.len, none, &o, NULL, NULL), HSM_ERR_NOT_FOUND);
	/* A kid that is there but not a string is malformed, not absent. */
	hsm_buf bad = {0};
	static const char header[] = "{\"alg\":\"ES256\",\"kid\":7}";
	assert_succeeds(hsm_b64url_encode(&bad, (const uint8_t *)header, sizeof(header) - 1));
	const char *rest = strchr(tok, '.');
	assert_succeeds(hsm_buf_put(&bad, rest, strlen(rest)));
	assert_fails_with(hsm_jwt_verify((const char *)bad.data, bad.len, one, &o, NULL, NULL),
	                  HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "not a string"));
	hsm_buf_free(&bad);
	json_decref(none);
	json_decref(two);
	json_decref(one);
	hsm_buf_free(&t);
}

static void test_verify_refusals(void **state)
{
	(void)state;
	const hsm_material *rsa = fixture_key(HSM_SPEC_RSA_2048);
	const hsm_material *ec = fixture_key(HSM_SPEC_ECC_NIST_P256);
	json_t *jwks = jwks_of(rsa, HSM_JWS_RS256, KEY_ID ".v1");
	hsm_jwt_verify_opts o = {NOW, 5, NULL, NULL};
	hsm_buf t = {0};
	/* Time: exp passed (beyond the leeway), nbf in the future. */
	make_token(rsa, HSM_JWS_RS256, KEY_ID ".v1", "{}", NOW - 100, NOW - 6, &t);
	assert_fails_with(hsm_jwt_verify((const char *)t.data, t.len, jwks, &o, NULL, NULL),
	                  HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "expired"));
	o.leeway = 10;
	assert_succeeds(hsm_jwt_verify((const char *)t.data, t.len, jwks, &o, NULL, NULL));
	hsm_buf_clear(&t);
	make_token(rsa, HSM_JWS_RS256, KEY_ID ".v1", "{}", NOW + 11, NOW + 60, &t);
	assert_fails_with(hsm_jwt_verify((const char *)t.data, t.len, jwks, &o, NULL, NULL),
	                  HSM_ERR_VALIDATION);
	/* Issuer and audience. */
	hsm_buf_clear(&t);
	make_token(rsa, HSM_JWS_RS256, KEY_ID ".v1", "{\"iss\":\"a\",\"aud\":\"x\"}", NOW, NOW + 60,
	           &t);
	const char *tok = (const char *)t.data;
	assert_fails_with(hsm_jwt_verify(tok, t.len, jwks, &o, NULL, NULL), HSM_ERR_VALIDATION);
	o.audience = "x";
	assert_succeeds(hsm_jwt_verify(tok, t.len, jwks, &o, NULL, NULL));
	o.issuer = "b";
	assert_fails_with(hsm_jwt_verify(tok, t.len, jwks, &o, NULL, NULL), HSM_ERR_VALIDATION);
	o.issuer = "a";
	o.audience = "y";
	assert_fails_with(hsm_jwt_verify(tok, t.len, jwks, &o, NULL, NULL), HSM_ERR_VALIDATION);
	o.audience = "x";
	/* Unknown kid; a key whose JWK names another algorithm; a key of another type. */
	json_t *other = jwks_of(rsa, HSM_JWS_RS256, KEY_ID ".v2");
	assert_fails_with(hsm_jwt_verify(tok, t.len, other, &o, NULL, NULL), HSM_ERR_NOT_FOUND);
	json_decref(other);
	other = jwks_of(rsa, HSM_JWS_PS256, KEY_ID ".v1");
	assert_fails_with(hsm_jwt_verify(tok, t.len, other, &o, NULL, NULL),
	                  HSM_ERR_INVALID_KEY_USAGE);
	json_decref(other);
	other = jwks_of(ec, HSM_JWS_ES256, KEY_ID ".v1");
	json_object_del(json_array_get(json_object_get(other, "keys"), 0), "alg");
	assert_fails_with(hsm_jwt_verify(tok, t.len, other, &o, NULL, NULL),
	                  HSM_ERR_INVALID_KEY_USAGE);
	json_decref(other);
	/* key_ops (RFC 7517 section 4.3): a key listing its operations verifies only with "verify". */
	static const struct {
		const char *ops;
		hsm_err want;
	} ops[] = {
	    {"[\"verify\"]", HSM_OK},
	    {"[\"sign\",\"verify\"]", HSM_OK},
	    {"[\"encrypt\"]", HSM_ERR_INVALID_KEY_USAGE},
	    {"[]", HSM_ERR_INVALID_KEY_USAGE},
	    {"\"verify\"", HSM_ERR_VALIDATION},
	    {"[\"verify\",1]", HSM_ERR_VALIDATION},
	};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		other = jwks_of(rsa, HSM_JWS_RS256, KEY_ID ".v1");
		json_object_set_new(json_array_get(json_object_get(other, "keys"), 0), "key_ops",
		                    parse(ops[i].ops));
		hsm_result r = hsm_jwt_verify(tok, t.len, other, &o, NULL, NULL);
		if (ops[i].want == HSM_OK)
			assert_succeeds(r);
		else
			assert_fails_with(r, ops[i].want);
		json_decref(other);
	}
	/* Structure: parts, alg "none", crit, garbage. */
	static const char *bad[] = {"", "abc", "a.b", "a.b.c.d", "..", "e30.e30.", "e30..AA"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_fails_with(hsm_jwt_verify(bad[i], strlen(bad[i]), jwks, &o, NULL, NULL),
		                  HSM_ERR_VALIDATION);
	/* {"alg":"none","kid":"<kid>"} with an empty-ish signature. */
	static const char none[] = "eyJhbGciOiJub25lIiwia2lkIjoiMGY2YzJiMWUtNGQzYS00YzViLTlhMWUtMm"
	                           "IzYzRkNWU2ZjcwLnYxIn0.e30.AA";
	assert_fails_with(hsm_jwt_verify(none, strlen(none), jwks, &o, NULL, NULL),
	                  HSM_ERR_VALIDATION);
	/* {"alg":"RS256","kid":"<kid>","crit":["exp"]} */
	static const char crit[] = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjBmNmMyYjFlLTRkM2EtNGM1Yi05YTFlLT"
	                           "JiM2M0ZDVlNmY3MC52MSIsImNyaXQiOlsiZXhwIl19.e30.AA";
	assert_fails_with(hsm_jwt_verify(crit, strlen(crit), jwks, &o, NULL, NULL),
	                  HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "crit"));
	json_t *not_set = parse("{\"keys\":{}}");
	assert_fails_with(hsm_jwt_verify(tok, t.len, not_set, &o, NULL, NULL), HSM_ERR_VALIDATION);
	json_decref(not_set);
	hsm_buf_free(&t);
	json_decref(jwks);
}

/* An ES256 signature must be exactly 64 bytes: DER, or R || S of another length, is refused. */
static void test_verify_es_signature_form(void **state)
{
	(void)state;
	const hsm_material *m = fixture_key(HSM_SPEC_ECC_NIST_P256);
	json_t *jwks = jwks_of(m, HSM_JWS_ES256, KEY_ID ".v1");
	hsm_jwt_verify_opts o = {NOW, 0, NULL, NULL};
	hsm_buf t = {0}, der = {0};
	json_t *claims = parse("{}");
	hsm_jwt_header h = {HSM_JWS_ES256, KEY_ID ".v1", NULL, NULL};
	assert_succeeds(hsm_jwt_signing_input(&h, claims, NOW, NOW + 60, &t));
	assert_succeeds(hsm_sign(m, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW, t.data, t.len, &der));
	assert_succeeds(hsm_buf_put_u8(&t, '.'));
	assert_succeeds(hsm_b64url_encode(&t, der.data, der.len)); /* DER, as KMS Sign returns */
	assert_fails_with(hsm_jwt_verify((const char *)t.data, t.len, jwks, &o, NULL, NULL),
	                  HSM_ERR_INVALID_SIGNATURE);
	hsm_buf_free(&t);
	hsm_buf_free(&der);
	json_decref(claims);
	json_decref(jwks);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_alg_table),
	    cmocka_unit_test(test_key_alg_from_flags),
	    cmocka_unit_test(test_kid_format),
	    cmocka_unit_test(test_claims_rules),
	    cmocka_unit_test(test_header_rules),
	    cmocka_unit_test(test_signing_input_encoding),
	    cmocka_unit_test(test_es_signature_fixed_length),
	    cmocka_unit_test(test_jwk_round_trip),
	    cmocka_unit_test(test_jwk_parse_refusals),
	    cmocka_unit_test(test_verify_every_algorithm),
	    cmocka_unit_test(test_verify_refusals),
	    cmocka_unit_test(test_verify_without_kid),
	    cmocka_unit_test(test_verify_es_signature_form),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
