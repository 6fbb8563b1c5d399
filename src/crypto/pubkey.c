/*
 * pubkey.c - which KMS key spec an OpenSSL key is, and SubjectPublicKeyInfo parsing.
 *
 * A key counts as a spec only if it is exactly what KMS would have made for
 * it (AWS KMS Developer Guide, "Key spec reference"): an rsaEncryption key
 * with a modulus of exactly 2048, 3072 or 4096 bits, an EC key on one of the
 * named curves of the spec table, or an Ed25519 key.
 */
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "crypto/crypto_internal.h"

/* Largest SPKI we parse: an RSA-4096 SPKI is 550 bytes. */
#define SPKI_MAX 4096

/* NID of a curve named either the NIST way ("P-256") or by its SEC 2 / X9.62 name. */
static int curve_nid(const char *name)
{
	int nid = EC_curve_nist2nid(name);
	if (nid == NID_undef)
		nid = OBJ_sn2nid(name);
	return nid;
}

static hsm_result ec_spec(const EVP_PKEY *pkey, hsm_key_spec *out)
{
	char group[64];
	size_t len = 0;
	HSM_OSSL_ENSURE(EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
	                                               sizeof(group), &len) == 1,
	                HSM_ERR_VALIDATION, "the EC key does not use a named curve");
	int nid = curve_nid(group);
	for (unsigned i = 0; i < HSM_SPEC_COUNT && nid != NID_undef; i++) {
		const hsm_spec_info *s = hsm_spec_get((hsm_key_spec)i);
		if (s->type == HSM_KT_EC && curve_nid(s->group) == nid) {
			*out = (hsm_key_spec)i;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "the EC key's curve is not supported");
}

static hsm_result rsa_spec(const EVP_PKEY *pkey, hsm_key_spec *out)
{
	int bits = EVP_PKEY_get_bits(pkey);
	for (unsigned i = 0; i < HSM_SPEC_COUNT; i++) {
		const hsm_spec_info *s = hsm_spec_get((hsm_key_spec)i);
		if (s->type == HSM_KT_RSA && bits >= 0 && s->bits == (unsigned)bits) {
			*out = (hsm_key_spec)i;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "RSA keys must have a 2048, 3072 or 4096-bit modulus");
}

hsm_result hsm_pkey_spec(const EVP_PKEY *pkey, hsm_key_spec *out)
{
	/* EVP_PKEY_is_a("RSA") is false for id-RSASSA-PSS keys, which KMS never makes.
	 * Looking a type up by name can allocate: a failure there is not a key type. */
	hsm_ossl_watch();
	if (EVP_PKEY_is_a(pkey, "RSA"))
		return rsa_spec(pkey, out);
	if (EVP_PKEY_is_a(pkey, "EC"))
		return ec_spec(pkey, out);
	if (EVP_PKEY_is_a(pkey, "ED25519")) {
		*out = HSM_SPEC_ECC_NIST_EDWARDS25519;
		return HSM_SUCCESS;
	}
	return HSM_OSSL_FAIL(HSM_ERR_VALIDATION, "the key type is not supported");
}

hsm_result hsm_spki_parse(const uint8_t *spki, size_t spki_len, EVP_PKEY **out)
{
	HSM_ENSURE(spki != NULL && spki_len > 0 && spki_len <= SPKI_MAX, HSM_ERR_VALIDATION,
	           "the public key must be a DER SubjectPublicKeyInfo of at most %d bytes",
	           SPKI_MAX);
	const unsigned char *p = spki;
	hsm_ossl_watch(); /* d2i_PUBKEY goes through the decoders too (material.c) */
	EVP_PKEY *pkey = d2i_PUBKEY(NULL, &p, (long)spki_len);
	bool nomem = hsm_ossl_ran_out();
	HSM_ENSURE(pkey != NULL || !nomem, HSM_ERR_NOMEM, "out of memory in the crypto library");
	HSM_ENSURE(pkey != NULL, HSM_ERR_VALIDATION, "the public key is not a DER SubjectPublicKeyInfo");
	if (p != spki + spki_len) {
		EVP_PKEY_free(pkey);
		return HSM_FAIL(HSM_ERR_VALIDATION, "the public key has trailing bytes");
	}
	*out = pkey;
	return HSM_SUCCESS;
}

hsm_result hsm_spki_spec(const uint8_t *spki, size_t spki_len, hsm_key_spec *out)
{
	EVP_PKEY *pkey = NULL;
	HSM_GUARD(hsm_spki_parse(spki, spki_len, &pkey));
	hsm_result res = hsm_pkey_spec(pkey, out);
	EVP_PKEY_free(pkey);
	return res;
}

hsm_result hsm_spki_ec_form(const uint8_t *spki, size_t spki_len, const char *form, hsm_buf *out)
{
	hsm_result res = HSM_SUCCESS;
	EVP_PKEY *pkey = NULL;
	uint8_t *p;
	size_t old = out->len;
	HSM_GUARD(hsm_spki_parse(spki, spki_len, &pkey));
	HSM_CHECK(EVP_PKEY_is_a(pkey, "EC"), HSM_ERR_VALIDATION, "the public key is not an EC key");
	HSM_OSSL_CHECK(EVP_PKEY_set_utf8_string_param(
	                   pkey, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, form) == 1,
	               HSM_ERR_CRYPTO, "cannot set the EC key's point form");
	int len = i2d_PUBKEY(pkey, NULL);
	HSM_OSSL_CHECK(len > 0, HSM_ERR_CRYPTO, "cannot encode the public key");
	HSM_TRY(hsm_buf_append_space(out, (size_t)len, &p));
	if (i2d_PUBKEY(pkey, &p) != len) {
		out->len = old;
		res = HSM_OSSL_FAIL(HSM_ERR_CRYPTO, "cannot encode the public key");
	}
out:
	EVP_PKEY_free(pkey);
	return res;
}
