/*
 * jwt_fuzz.c - a relying party's view of outside tokens and JWK Sets:
 * hsm_jwt_verify (hsmctl jwt verify) and hsm_jwk_to_spki / hsm_jwk_from_spki
 * (kms/jwt.h).
 *
 * Input: byte 0 is the leeway in seconds; the rest is a JWK Set as JSON
 * text, a newline, and a compact token.  The clock reads 1800000000.
 *
 * Properties: a refused token fails with ValidationException (malformed,
 * claims), NotFoundException (no such kid), InvalidKeyUsageException (the
 * key's algorithm or type) or KMSInvalidSignatureException and hands back
 * nothing; a token that verifies has a JSON object header naming an
 * algorithm hsmd knows, a kid (when it has one) held by exactly one key of
 * the set, and an "exp" after the clock less the leeway.  Every JWK of the
 * set either converts to a SubjectPublicKeyInfo of a key spec hsmd knows,
 * which hsm_jwk_from_spki renders back into a JWK of the same key, or is
 * refused as ValidationException leaving the output as it was.
 */
#include "fuzz.h"

#include <jansson.h>

#include "crypto/keyspec.h"
#include "kms/jwt.h"

#define NOW 1800000000
#define MAX_JWKS 8

static void check_jwk(const json_t *jwk)
{
	hsm_buf spki = {0}, again = {0};
	json_t *back = NULL;
	FUZZ_ASSERT(hsm_ok(hsm_buf_put_u8(&spki, 0xAA)));
	hsm_result r = hsm_jwk_to_spki(jwk, &spki);
	if (hsm_failed(r)) {
		FUZZ_EXPECT_ERR(r, HSM_ERR_VALIDATION, HSM_ERR_NOMEM);
		FUZZ_ASSERT(spki.len == 1);
		goto out;
	}
	hsm_key_spec spec;
	hsm_jws_alg alg;
	FUZZ_ASSERT(hsm_ok(hsm_spki_spec(spki.data + 1, spki.len - 1, &spec)));
	FUZZ_ASSERT(hsm_ok(hsm_jws_default_alg(spec, &alg)));
	/* Rendered again, the key is the same key: no member of the JWK was misread. */
	FUZZ_ASSERT(hsm_ok(hsm_jwk_from_spki(spki.data + 1, spki.len - 1, alg, "k", &back)));
	FUZZ_ASSERT(json_object_get(back, "d") == NULL);
	FUZZ_ASSERT(hsm_ok(hsm_jwk_to_spki(back, &again)));
	FUZZ_ASSERT(again.len == spki.len - 1 && memcmp(again.data, spki.data + 1, again.len) == 0);
out:
	json_decref(back);
	hsm_buf_free(&spki);
	hsm_buf_free(&again);
}

/* How many keys of the set carry kid. */
static size_t keys_with_kid(const json_t *jwks, const char *kid)
{
	const json_t *keys = json_object_get(jwks, "keys");
	size_t n = 0;
	for (size_t i = 0; i < json_array_size(keys); i++) {
		const char *id = json_string_value(json_object_get(json_array_get(keys, i), "kid"));
		n += id != NULL && strcmp(id, kid) == 0;
	}
	return n;
}

static void check_verified(const json_t *jwks, json_t *header, json_t *claims, int64_t leeway)
{
	FUZZ_ASSERT(json_is_object(header) && json_is_object(claims));
	hsm_jws_alg alg;
	FUZZ_ASSERT(hsm_ok(hsm_jws_alg_parse(json_string_value(json_object_get(header, "alg")), &alg)));
	const char *kid = json_string_value(json_object_get(header, "kid"));
	if (kid != NULL)
		FUZZ_ASSERT(keys_with_kid(jwks, kid) == 1);
	else
		FUZZ_ASSERT(json_array_size(json_object_get(jwks, "keys")) == 1);
	const json_t *exp = json_object_get(claims, "exp");
	FUZZ_ASSERT(json_is_number(exp) && (double)NOW < json_number_value(exp) + (double)leeway);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int64_t leeway = data[0];
	const uint8_t *rest = data + 1, *nl = memchr(rest, '\n', size - 1);
	if (nl == NULL)
		return 0;
	json_t *jwks = json_loadb((const char *)rest, (size_t)(nl - rest), 0, NULL);
	if (jwks == NULL)
		return 0;
	const json_t *keys = json_object_get(jwks, "keys");
	for (size_t i = 0; i < json_array_size(keys) && i < MAX_JWKS; i++)
		check_jwk(json_array_get(keys, i));
	const char *token = (const char *)nl + 1;
	size_t token_len = size - 1 - (size_t)(nl + 1 - rest);
	hsm_jwt_verify_opts o = {NOW, leeway, NULL, NULL};
	json_t *header = NULL, *claims = NULL;
	hsm_result r = hsm_jwt_verify(token, token_len, jwks, &o, &header, &claims);
	if (hsm_failed(r)) {
		FUZZ_EXPECT_ERR(r, HSM_ERR_VALIDATION, HSM_ERR_NOT_FOUND, HSM_ERR_INVALID_KEY_USAGE,
		                HSM_ERR_INVALID_SIGNATURE, HSM_ERR_NOMEM);
		FUZZ_ASSERT(header == NULL && claims == NULL);
	} else {
		check_verified(jwks, header, claims, leeway);
	}
	json_decref(header);
	json_decref(claims);
	json_decref(jwks);
	return 0;
}
