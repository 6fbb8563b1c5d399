/*
 * jwk.c - public keys as JSON Web Keys (RFC 7517 section 4) and back.
 *
 * Parameters: RSA "n", "e" (RFC 7518 section 6.3.1: unsigned big-endian,
 * minimal length), EC "crv", "x", "y" (RFC 7518 section 6.2.1: each
 * coordinate at the full size of the field), OKP "crv" "Ed25519", "x"
 * (RFC 8037 section 2: the 32-byte public key).  Only public keys exist
 * here: hsmd never renders private key members, and the parser refuses a
 * JWK that carries them.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "common/encoding.h"
#include "crypto/crypto.h"
#include "kms/jwt.h"

#define JWK_RSA_MAX_BYTES 1024 /* 8192-bit modulus: far above hsmd's largest key */
#define ED25519_LEN 32

/* The "crv" of an EC or OKP key spec (RFC 7518 section 6.2.1.1, RFC 8037 section 2). */
static const char *curve_name(hsm_key_spec spec)
{
	switch (spec) {
	case HSM_SPEC_ECC_NIST_P256: return "P-256";
	case HSM_SPEC_ECC_NIST_P384: return "P-384";
	case HSM_SPEC_ECC_NIST_P521: return "P-521";
	case HSM_SPEC_ECC_NIST_EDWARDS25519: return "Ed25519";
	default: return NULL;
	}
}

static hsm_result set_b64url(json_t *o, const char *name, const uint8_t *p, size_t n)
{
	hsm_buf b = {0};
	hsm_result r = hsm_b64url_encode(&b, p, n);
	if (hsm_ok(r) && json_object_set_new(o, name, json_stringn((const char *)b.data, b.len)) != 0)
		r = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	hsm_buf_free(&b);
	return r;
}

/* A BIGNUM parameter of pkey, big-endian, padded to pad bytes (0: minimal). */
static hsm_result set_bn(json_t *o, const char *name, const EVP_PKEY *pkey, const char *param,
                         size_t pad)
{
	BIGNUM *bn = NULL;
	uint8_t bytes[JWK_RSA_MAX_BYTES];
	if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1) {
		ERR_clear_error();
		return HSM_FAIL(HSM_ERR_CRYPTO, "cannot read the public key's %s", name);
	}
	int n = BN_num_bytes(bn);
	if (pad == 0)
		pad = (size_t)(n > 0 ? n : 1);
	int len = n >= 0 && (size_t)n <= pad && pad <= sizeof(bytes)
	              ? BN_bn2binpad(bn, bytes, (int)pad)
	              : -1;
	BN_free(bn);
	HSM_ENSURE(len > 0, HSM_ERR_CRYPTO, "the public key's %s is out of range", name);
	return set_b64url(o, name, bytes, (size_t)len);
}

static hsm_result put_key_members(json_t *o, const EVP_PKEY *pkey, hsm_key_spec spec)
{
	switch (hsm_spec_get(spec)->type) {
	case HSM_KT_RSA:
		HSM_GUARD(set_bn(o, "n", pkey, OSSL_PKEY_PARAM_RSA_N, 0));
		return set_bn(o, "e", pkey, OSSL_PKEY_PARAM_RSA_E, 0);
	case HSM_KT_EC:
		HSM_ENSURE(json_object_set_new(o, "crv", json_string(curve_name(spec))) == 0,
		           HSM_ERR_NOMEM, "out of memory");
		HSM_GUARD(set_bn(o, "x", pkey, OSSL_PKEY_PARAM_EC_PUB_X, hsm_ec_field_len(spec)));
		return set_bn(o, "y", pkey, OSSL_PKEY_PARAM_EC_PUB_Y, hsm_ec_field_len(spec));
	case HSM_KT_ED25519: {
		uint8_t x[ED25519_LEN];
		size_t len = sizeof(x);
		HSM_ENSURE(EVP_PKEY_get_raw_public_key(pkey, x, &len) == 1 && len == sizeof(x),
		           HSM_ERR_CRYPTO, "cannot read the Ed25519 public key");
		HSM_ENSURE(json_object_set_new(o, "crv", json_string("Ed25519")) == 0, HSM_ERR_NOMEM,
		           "out of memory");
		return set_b64url(o, "x", x, len);
	}
	default:
		return HSM_FAIL(HSM_ERR_INVALID_KEY_USAGE, "KeySpec %s has no JWK form",
		                hsm_spec_name(spec));
	}
}

static const char *kty_of(hsm_key_spec spec)
{
	hsm_key_type t = hsm_spec_get(spec)->type;
	return t == HSM_KT_RSA ? "RSA" : t == HSM_KT_EC ? "EC" : "OKP";
}

hsm_result hsm_jwk_from_spki(const uint8_t *spki, size_t spki_len, hsm_jws_alg alg,
                             const char *kid, json_t **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_key_spec spec;
	EVP_PKEY *pkey = NULL;
	json_t *o = NULL;
	HSM_ASSERT(kid != NULL);
	HSM_GUARD(hsm_spki_spec(spki, spki_len, &spec));
	HSM_ENSURE(hsm_jws_alg_fits(alg, spec), HSM_ERR_INVALID_KEY_USAGE,
	           "%s keys cannot sign %s tokens", hsm_spec_name(spec), hsm_jws_alg_name(alg));
	const unsigned char *p = spki;
	pkey = d2i_PUBKEY(NULL, &p, (long)spki_len);
	HSM_CHECK(pkey != NULL, HSM_ERR_VALIDATION, "the public key is not a SubjectPublicKeyInfo");
	o = json_object();
	HSM_CHECK(o != NULL, HSM_ERR_NOMEM, "out of memory");
	/* RFC 7517 sections 4.1-4.5; "use": "sig" since these keys only verify signatures. */
	int rc = json_object_set_new(o, "kty", json_string(kty_of(spec)));
	rc |= json_object_set_new(o, "use", json_string("sig"));
	rc |= json_object_set_new(o, "alg", json_string(hsm_jws_alg_name(alg)));
	rc |= json_object_set_new(o, "kid", json_string(kid));
	HSM_CHECK(rc == 0, HSM_ERR_VALIDATION, "kid must be UTF-8 text");
	HSM_TRY(put_key_members(o, pkey, spec));
	*out = o;
	o = NULL;
out:
	if (hsm_failed(res))
		ERR_clear_error();
	json_decref(o);
	EVP_PKEY_free(pkey);
	return res;
}

/* ---- Parsing ------------------------------------------------------------------------ */

/* A base64url member decoded into out (replacing its contents). */
static hsm_result get_b64url(const json_t *jwk, const char *name, hsm_buf *out)
{
	const json_t *v = json_object_get(jwk, name);
	HSM_ENSURE(json_is_string(v), HSM_ERR_VALIDATION, "the JWK has no \"%s\" string", name);
	hsm_buf_clear(out);
	hsm_result r = hsm_b64url_decode(out, json_string_value(v), json_string_length(v),
	                                 HSM_ERR_VALIDATION);
	if (hsm_failed(r))
		return HSM_FAIL(HSM_ERR_VALIDATION, "the JWK's \"%s\" is not base64url", name);
	return HSM_SUCCESS;
}

static hsm_result spki_of(EVP_PKEY *pkey, hsm_buf *spki)
{
	int len = i2d_PUBKEY(pkey, NULL);
	uint8_t *p;
	if (len <= 0) {
		ERR_clear_error();
		return HSM_FAIL(HSM_ERR_VALIDATION, "the JWK does not hold a usable public key");
	}
	size_t start = spki->len;
	HSM_GUARD(hsm_buf_append_space(spki, (size_t)len, &p));
	if (i2d_PUBKEY(pkey, &p) != len) {
		spki->len = start;
		ERR_clear_error();
		return HSM_FAIL(HSM_ERR_CRYPTO, "cannot encode the public key");
	}
	return HSM_SUCCESS;
}

/* Builds a public EVP_PKEY of type from params; NULL when OpenSSL refuses them. */
static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static hsm_result rsa_from_jwk(const json_t *jwk, EVP_PKEY **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf n = {0}, e = {0};
	BIGNUM *bn = NULL, *be = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	HSM_TRY(get_b64url(jwk, "n", &n));
	HSM_TRY(get_b64url(jwk, "e", &e));
	HSM_CHECK(n.len >= 1 && n.len <= JWK_RSA_MAX_BYTES && n.data[0] != 0 && e.len >= 1 &&
	              e.len <= 8 && e.data[0] != 0,
	          HSM_ERR_VALIDATION, "the JWK's \"n\" and \"e\" must be minimal big-endian integers");
	bn = BN_bin2bn(n.data, (int)n.len, NULL);
	be = BN_bin2bn(e.data, (int)e.len, NULL);
	bld = OSSL_PARAM_BLD_new();
	HSM_CHECK(bn != NULL && be != NULL && bld != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_CHECK(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
	              OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1,
	          HSM_ERR_NOMEM, "out of memory");
	*out = pkey_from_params("RSA", bld);
	HSM_CHECK(*out != NULL, HSM_ERR_VALIDATION, "the JWK is not a valid RSA public key");
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	hsm_buf_free(&n);
	hsm_buf_free(&e);
	return res;
}

static hsm_result ec_from_jwk(const json_t *jwk, hsm_key_spec spec, EVP_PKEY **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf x = {0}, y = {0}, point = {0};
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY_CTX *check = NULL;
	size_t field = hsm_ec_field_len(spec);
	HSM_TRY(get_b64url(jwk, "x", &x));
	HSM_TRY(get_b64url(jwk, "y", &y));
	HSM_CHECK(x.len == field && y.len == field, HSM_ERR_VALIDATION,
	          "the JWK's \"x\" and \"y\" must be %zu bytes each for %s", field, curve_name(spec));
	/* SEC 1 section 2.3.3: the uncompressed point 04 || X || Y. */
	HSM_TRY(hsm_buf_put_u8(&point, 0x04));
	HSM_TRY(hsm_buf_put(&point, x.data, x.len));
	HSM_TRY(hsm_buf_put(&point, y.data, y.len));
	bld = OSSL_PARAM_BLD_new();
	HSM_CHECK(bld != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_CHECK(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
	                                          hsm_spec_get(spec)->group, 0) == 1 &&
	              OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data,
	                                               point.len) == 1,
	          HSM_ERR_NOMEM, "out of memory");
	*out = pkey_from_params("EC", bld);
	HSM_CHECK(*out != NULL, HSM_ERR_VALIDATION, "the JWK's point is not on %s",
	          curve_name(spec));
	/* Refuse invalid points explicitly (SP 800-56A section 5.6.2.3.3). */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL);
	if (check == NULL || EVP_PKEY_public_check(check) != 1) {
		EVP_PKEY_free(*out);
		*out = NULL;
		res = HSM_FAIL(HSM_ERR_VALIDATION, "the JWK's point is not a valid %s public key",
		               curve_name(spec));
	}
out:
	EVP_PKEY_CTX_free(check);
	OSSL_PARAM_BLD_free(bld);
	hsm_buf_free(&x);
	hsm_buf_free(&y);
	hsm_buf_free(&point);
	return res;
}

static hsm_result okp_from_jwk(const json_t *jwk, EVP_PKEY **out)
{
	hsm_buf x = {0};
	hsm_result r = get_b64url(jwk, "x", &x); /* x is freed below, refused or not */
	if (hsm_ok(r) && x.len != ED25519_LEN)
		r = HSM_FAIL(HSM_ERR_VALIDATION, "the JWK's \"x\" must be 32 bytes");
	if (hsm_ok(r)) {
		*out = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, x.data, x.len);
		if (*out == NULL)
			r = HSM_FAIL(HSM_ERR_VALIDATION, "the JWK is not a valid Ed25519 public key");
	}
	hsm_buf_free(&x);
	return r;
}

/* The key spec a JWK's kty and crv name. */
static hsm_result jwk_spec(const json_t *jwk, hsm_key_spec *spec)
{
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	HSM_ENSURE(kty != NULL, HSM_ERR_VALIDATION, "the JWK has no \"kty\"");
	if (strcmp(kty, "RSA") == 0) {
		*spec = HSM_SPEC_RSA_2048; /* any RSA spec: the modulus decides later */
		return HSM_SUCCESS;
	}
	HSM_ENSURE(strcmp(kty, "EC") == 0 || strcmp(kty, "OKP") == 0, HSM_ERR_VALIDATION,
	           "JWK kty '%.16s' is not supported (RSA, EC, OKP)", kty);
	static const hsm_key_spec curves[] = {HSM_SPEC_ECC_NIST_P256, HSM_SPEC_ECC_NIST_P384,
	                                      HSM_SPEC_ECC_NIST_P521, HSM_SPEC_ECC_NIST_EDWARDS25519};
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]) && crv != NULL; i++) {
		bool okp = curves[i] == HSM_SPEC_ECC_NIST_EDWARDS25519;
		if (strcmp(crv, curve_name(curves[i])) == 0 && okp == (strcmp(kty, "OKP") == 0)) {
			*spec = curves[i];
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "JWK kty %s with crv '%.16s' is not supported", kty,
	                crv != NULL ? crv : "");
}

hsm_result hsm_jwk_to_spki(const json_t *jwk, hsm_buf *spki)
{
	static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
	hsm_key_spec spec = HSM_SPEC_COUNT;
	EVP_PKEY *pkey = NULL;
	HSM_ENSURE(json_is_object(jwk), HSM_ERR_VALIDATION, "a JWK must be a JSON object");
	for (size_t i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
		HSM_ENSURE(json_object_get(jwk, private_members[i]) == NULL, HSM_ERR_VALIDATION,
		           "the JWK holds a private or secret key (\"%s\"): refused",
		           private_members[i]);
	HSM_GUARD(jwk_spec(jwk, &spec));
	hsm_key_type type = hsm_spec_get(spec)->type;
	hsm_result r = type == HSM_KT_RSA  ? rsa_from_jwk(jwk, &pkey)
	               : type == HSM_KT_EC ? ec_from_jwk(jwk, spec, &pkey)
	                                   : okp_from_jwk(jwk, &pkey);
	size_t start = spki->len;
	if (hsm_ok(r))
		r = spki_of(pkey, spki);
	/* Only keys of hsmd's key specs (RSA 2048/3072/4096 bits, the named curves). */
	hsm_key_spec got;
	if (hsm_ok(r) && hsm_failed(hsm_spki_spec(spki->data + start, spki->len - start, &got))) {
		spki->len = start;
		r = HSM_FAIL(HSM_ERR_VALIDATION, "the JWK's key is not of a supported size or curve");
	}
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return r;
}
