/*
 * ecdh.c - key agreement as AWS KMS defines it (API reference,
 * "DeriveSharedSecret", KeyAgreementAlgorithm ECDH): the Elliptic Curve
 * Cryptography Cofactor Diffie-Hellman primitive of NIST SP 800-56A rev. 3
 * section 5.7.1.2 between a KMS key's private scalar d and a peer's public
 * point Q, whose result is the x-coordinate of h*d*Q as a field-length
 * octet string.  Every curve that allows KEY_AGREEMENT (P-256, P-384, P-521)
 * has cofactor h = 1, so it is OpenSSL's ECDH as it stands.
 *
 * The peer's key arrives from outside, so it is checked before it is used
 * (an invalid-curve point would leak bits of d): one DER
 * SubjectPublicKeyInfo, id-ecPublicKey with a named curve (RFC 5480 section
 * 2.1.1), the KMS key's curve, a point uncompressed or compressed (RFC 5480
 * section 2.2: not hybrid), and a point that passes SP 800-56A section
 * 5.6.2.3.4 (ECC partial public-key validation: not the point at infinity,
 * coordinates in range, on the curve).  Full validation (5.6.2.3.3) adds
 * n*Q = O, which every point of a cofactor-1 curve satisfies, so the
 * partial check is complete here and saves a point multiplication.
 */
#include <string.h>

#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "crypto/crypto_internal.h"

/* DeriveSharedSecret PublicKey is 1-8192 bytes; a P-521 SPKI is 158. */
#define PEER_SPKI_MAX 8192

/* The EC key spec on the curve nid, or NULL. */
static const hsm_spec_info *spec_of_curve(int nid)
{
	for (unsigned i = 0; i < HSM_SPEC_COUNT && nid != NID_undef; i++) {
		const hsm_spec_info *s = hsm_spec_get((hsm_key_spec)i);
		if (s->type != HSM_KT_EC)
			continue;
		int group = EC_curve_nist2nid(s->group); /* "P-256"; secp256k1 has no NIST name */
		if ((group != NID_undef ? group : OBJ_sn2nid(s->group)) == nid)
			return s;
	}
	return NULL;
}

/* The SubjectPublicKeyInfo is of an EC key that names want's curve. */
static hsm_result peer_curve(const X509_PUBKEY *xpk, const hsm_spec_info *want)
{
	X509_ALGOR *algor = NULL;
	const ASN1_OBJECT *alg = NULL;
	const void *param = NULL;
	int ptype = V_ASN1_UNDEF;
	HSM_OSSL_ENSURE(X509_PUBKEY_get0_param(NULL, NULL, NULL, &algor, xpk) == 1,
	                HSM_ERR_VALIDATION, "PublicKey is not a DER SubjectPublicKeyInfo");
	X509_ALGOR_get0(&alg, &ptype, &param, algor);
	HSM_ENSURE(OBJ_obj2nid(alg) == NID_X9_62_id_ecPublicKey, HSM_ERR_VALIDATION,
	           "PublicKey is not an elliptic curve key: ECDH with this %s key takes a public "
	           "key on the same curve",
	           want->name);
	HSM_ENSURE(ptype == V_ASN1_OBJECT, HSM_ERR_VALIDATION,
	           "PublicKey must name its curve (RFC 5480 namedCurve), not spell out its "
	           "parameters");
	const hsm_spec_info *got = spec_of_curve(OBJ_obj2nid(param));
	HSM_ENSURE(got == want, HSM_ERR_VALIDATION,
	           "PublicKey is on the curve of %s, the KMS key on that of %s: ECDH needs both "
	           "keys on the same curve",
	           got != NULL ? got->name : "no key spec hsmd offers", want->name);
	return HSM_SUCCESS;
}

/*
 * RFC 5480 section 2.2: the point is uncompressed (first octet 0x04) or
 * compressed (0x02, 0x03).  The hybrid form (0x06, 0x07: both y and its
 * parity bit), which OpenSSL decodes, MUST NOT be used.
 */
static hsm_result peer_point_form(const X509_PUBKEY *xpk, const hsm_spec_info *s)
{
	const unsigned char *pt = NULL;
	int n = 0;
	HSM_OSSL_ENSURE(X509_PUBKEY_get0_param(NULL, &pt, &n, NULL, xpk) == 1, HSM_ERR_VALIDATION,
	                "PublicKey is not a DER SubjectPublicKeyInfo");
	uint8_t form = n >= 1 ? pt[0] : 0x00;
	HSM_ENSURE(form != 0x06 && form != 0x07, HSM_ERR_VALIDATION,
	           "PublicKey's point is in the hybrid form (first octet 06 or 07), which RFC 5480 "
	           "section 2.2 forbids: send it uncompressed (04) or compressed (02 or 03)");
	HSM_ENSURE(form == 0x04 || form == 0x02 || form == 0x03, HSM_ERR_VALIDATION,
	           "PublicKey is not a valid point of curve %s", s->group);
	return HSM_SUCCESS;
}

/*
 * An RFC 5480 SubjectPublicKeyInfo with a named curve and an uncompressed
 * point, up to the point: what GetPublicKey, OpenSSL and the SDKs produce.
 * DER is canonical, so every such key of the curve starts with exactly these
 * bytes.  Taking the point from behind them skips OpenSSL's generic key
 * decoder, which costs three times the ECDH itself; any other form goes
 * through the decoder, and the point is checked the same way either way.
 */
static const struct spki_prefix {
	hsm_key_spec spec;
	size_t len;
	uint8_t der[26];
} prefixes[] = {
    {HSM_SPEC_ECC_NIST_P256, 26,
     {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
      0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00}},
    {HSM_SPEC_ECC_NIST_P384, 23,
     {0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
      0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00}},
    {HSM_SPEC_ECC_NIST_P521, 25,
     {0x30, 0x81, 0x9b, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
      0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23, 0x03, 0x81, 0x86, 0x00}},
};

/* The uncompressed point of a canonical SPKI of spec's curve, or false for any other bytes. */
static bool canonical_point(hsm_key_spec spec, const uint8_t *spki, size_t len,
                            const uint8_t **point, size_t *point_len)
{
	size_t n = 1 + 2 * hsm_ec_field_len(spec); /* 04 || x || y */
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		const struct spki_prefix *pr = &prefixes[i];
		if (pr->spec != spec || len != pr->len + n)
			continue;
		hsm_cursor c;
		const uint8_t *der = NULL, *pt = NULL;
		hsm_cursor_init(&c, spki, len);
		bool ok = hsm_ok(hsm_cursor_get_bytes(&c, pr->len, &der, HSM_ERR_VALIDATION)) &&
		          hsm_ok(hsm_cursor_get_bytes(&c, n, &pt, HSM_ERR_VALIDATION)) &&
		          hsm_ct_equal(der, pr->der, pr->len) && pt[0] == 0x04;
		if (ok) {
			*point = pt;
			*point_len = n;
		}
		return ok;
	}
	return false;
}

/* A public key on like's curve with the encoded point; NULL when the point is not
 * one, or when memory ran out (*nomem). */
static EVP_PKEY *key_of_point(const EVP_PKEY *like, const uint8_t *point, size_t n, bool *nomem)
{
	hsm_ossl_watch();
	EVP_PKEY *peer = EVP_PKEY_new();
	bool ok = peer != NULL && EVP_PKEY_copy_parameters(peer, like) == 1 &&
	          EVP_PKEY_set1_encoded_public_key(peer, point, n) == 1;
	*nomem = peer == NULL || hsm_ossl_ran_out();
	if (!ok) {
		EVP_PKEY_free(peer);
		return NULL;
	}
	return peer;
}

/* Any other SubjectPublicKeyInfo, through OpenSSL's decoder; *peer NULL for a bad point. */
static hsm_result decode_spki(const hsm_spec_info *s, const uint8_t *spki, size_t len,
                              EVP_PKEY **peer)
{
	hsm_result res = HSM_SUCCESS;
	const unsigned char *p = spki;
	/* The structure first: decoding the key itself fails alike for a bad point and bad DER. */
	hsm_ossl_watch();
	X509_PUBKEY *xpk = d2i_X509_PUBKEY(NULL, &p, (long)len);
	HSM_CHECK(xpk != NULL || !hsm_ossl_ran_out(), HSM_ERR_NOMEM,
	          "out of memory in the crypto library");
	HSM_CHECK(xpk != NULL, HSM_ERR_VALIDATION, "PublicKey is not a DER SubjectPublicKeyInfo");
	HSM_CHECK(p == spki + len, HSM_ERR_VALIDATION, "PublicKey has trailing bytes");
	/* DER, not any BER that decodes (indefinite or padded lengths, a constructed BIT
	 * STRING): encoded again, the structure must give back the same bytes. */
	unsigned char *again = NULL;
	int n = i2d_X509_PUBKEY(xpk, &again);
	bool der = n > 0 && (size_t)n == len && hsm_ct_equal(again, spki, len);
	OPENSSL_free(again);
	HSM_CHECK(der, HSM_ERR_VALIDATION,
	          "PublicKey is not DER (a BER encoding of a SubjectPublicKeyInfo is not taken)");
	HSM_TRY(peer_curve(xpk, s));
	HSM_TRY(peer_point_form(xpk, s));
	hsm_ossl_watch();
	*peer = X509_PUBKEY_get(xpk);
	HSM_CHECK(*peer != NULL || !hsm_ossl_ran_out(), HSM_ERR_NOMEM,
	          "out of memory in the crypto library");
out:
	X509_PUBKEY_free(xpk);
	return res;
}

/*
 * The peer's key, checked as the comment at the top says; like (may be NULL)
 * is a key of the same curve to take the parameters from.  *out is the
 * caller's to free.
 */
static hsm_result peer_key(hsm_key_spec spec, const EVP_PKEY *like, const uint8_t *spki,
                           size_t len, EVP_PKEY **out)
{
	hsm_result res = HSM_SUCCESS;
	const hsm_spec_info *s = hsm_spec_get(spec);
	const uint8_t *point = NULL;
	size_t point_len = 0;
	EVP_PKEY *peer = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	HSM_CHECK(spki != NULL && len > 0 && len <= PEER_SPKI_MAX, HSM_ERR_VALIDATION,
	          "PublicKey must be a DER SubjectPublicKeyInfo of 1 to %d bytes", PEER_SPKI_MAX);
	if (like != NULL && canonical_point(spec, spki, len, &point, &point_len)) {
		bool nomem;
		peer = key_of_point(like, point, point_len, &nomem);
		HSM_CHECK(peer != NULL || !nomem, HSM_ERR_NOMEM, "out of memory in the crypto library");
	} else {
		HSM_TRY(decode_spki(s, spki, len, &peer));
	}
	HSM_CHECK(peer != NULL, HSM_ERR_VALIDATION, "PublicKey is not a valid point of curve %s",
	          s->group);
	ctx = EVP_PKEY_CTX_new_from_pkey(NULL, peer, NULL);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_OSSL_CHECK(EVP_PKEY_public_check_quick(ctx) == 1, HSM_ERR_VALIDATION,
	               "PublicKey is not a valid point of curve %s", s->group);
	*out = peer;
	peer = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	return res;
}

hsm_result hsm_pkey_derive(EVP_PKEY *priv, EVP_PKEY *peer, size_t want, hsm_buf *secret_out)
{
	hsm_result res = HSM_SUCCESS;
	size_t old = secret_out->len, len = 0;
	uint8_t *p;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	/* The peer was validated already: OpenSSL's own check would add a point multiplication. */
	HSM_OSSL_CHECK(EVP_PKEY_derive_init(ctx) == 1 &&
	                   EVP_PKEY_derive_set_peer_ex(ctx, peer, 0) == 1 &&
	                   EVP_PKEY_derive(ctx, NULL, &len) == 1,
	               HSM_ERR_CRYPTO, "cannot set up ECDH");
	HSM_TRY(hsm_buf_append_space(secret_out, len, &p));
	HSM_OSSL_CHECK(EVP_PKEY_derive(ctx, p, &len) == 1, HSM_ERR_CRYPTO, "ECDH failed");
	/* SP 800-56A rev. 3 section 5.7.1.2: Z is the x-coordinate, field-length bytes. */
	HSM_CHECK(len == want, HSM_ERR_CRYPTO, "ECDH gave %zu bytes instead of %zu", len, want);
	secret_out->len = old + len;
out:
	if (hsm_failed(res) && secret_out->len > old) {
		OPENSSL_cleanse(secret_out->data + old, secret_out->len - old);
		secret_out->len = old;
	}
	EVP_PKEY_CTX_free(ctx);
	return res;
}

static hsm_result check_alg(hsm_key_spec spec, hsm_agree_alg alg)
{
	HSM_ENSURE(hsm_spec_allows_agree_alg(spec, alg), HSM_ERR_INVALID_KEY_USAGE,
	           "KeyAgreementAlgorithm %s is not valid for KeySpec %s", hsm_agree_alg_name(alg),
	           hsm_spec_name(spec));
	return HSM_SUCCESS;
}

hsm_result hsm_ecdh_check_peer(hsm_key_spec spec, const uint8_t *peer_spki, size_t peer_len)
{
	EVP_PKEY *peer = NULL;
	HSM_GUARD(check_alg(spec, HSM_AGREE_ECDH));
	HSM_GUARD(peer_key(spec, NULL, peer_spki, peer_len, &peer));
	EVP_PKEY_free(peer);
	return HSM_SUCCESS;
}

hsm_result hsm_ecdh_derive(const hsm_material *m, const uint8_t *peer_spki, size_t peer_len,
                           hsm_buf *secret_out)
{
	HSM_ASSERT(secret_out->secure);
	hsm_key_spec spec = hsm_material_spec(m);
	EVP_PKEY *peer = NULL;
	HSM_GUARD(check_alg(spec, HSM_AGREE_ECDH));
	HSM_GUARD(peer_key(spec, hsm_material_pkey(m), peer_spki, peer_len, &peer));
	hsm_result r =
	    hsm_pkey_derive(hsm_material_pkey(m), peer, hsm_ec_field_len(spec), secret_out);
	EVP_PKEY_free(peer);
	return r;
}
