/*
 * selftest.c - power-on self-tests (FIPS 140-3 section 7.10.2 style): a
 * known-answer test for every algorithm hsmd offers, run through the same
 * functions that serve requests, before the node may serve anything.
 *
 * Signature schemes with randomness (PSS, ECDSA) verify a stored signature
 * and then sign and verify; deterministic ones (PKCS#1 v1.5, Ed25519) must
 * reproduce the stored signature exactly.  ECDH must reproduce the stored
 * shared secret and refuse the peer's point moved off its curve.
 *
 * HSM_SELFTEST_FORCE_FAIL=<name> corrupts that test's known answer, input or
 * signature, so the test fails through its real comparison; it exists to
 * prove the error state works.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "crypto/crypto_internal.h"
#include "crypto/selftest_vectors.h"

#define MSG ((const uint8_t *)HSM_KAT_MESSAGE)
#define MSG_LEN (sizeof(HSM_KAT_MESSAGE) - 1)

typedef bool (*kat_fn)(bool corrupt);

/*
 * Decodes a vector; secret ones go to a secure buffer.  The vectors are
 * constants, so the decoding can fail only when memory is refused; that fails
 * the self-test like a wrong answer.  The buffer is ready to free either way,
 * and holds at least one byte when this returns true.
 */
static bool unhex(const char *hex, bool secret, hsm_buf *out)
{
	if (secret)
		hsm_buf_init_secure(out);
	else
		hsm_buf_init(out);
	return hsm_ok(hsm_hex_decode(out, hex, strlen(hex), HSM_ERR_INTERNAL)) && out->len > 0;
}

/* got == expected, where a corrupted run flips one bit of the expected value. */
static bool matches(const uint8_t *got, size_t got_len, const char *expected_hex, bool corrupt)
{
	hsm_buf want;
	bool ok = unhex(expected_hex, false, &want);
	if (ok && corrupt)
		want.data[0] ^= 0x01;
	ok = ok && got != NULL && got_len == want.len && hsm_ct_equal(got, want.data, want.len);
	hsm_buf_free(&want);
	return ok;
}

static bool import(hsm_key_spec spec, const char *pkcs8_hex, hsm_material **m)
{
	hsm_buf der;
	bool ok = unhex(pkcs8_hex, true, &der) &&
	          hsm_ok(hsm_material_import(spec, der.data, der.len, m));
	hsm_buf_free(&der);
	return ok;
}

/* ---- hashes, MACs, KDF --------------------------------------------------- */

static bool kat_digest(const char *md, const char *expected, bool corrupt)
{
	uint8_t out[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (strcmp(md, "SHA256") == 0) {
		/* the public helper, which the store and audit chain use */
		if (hsm_failed(hsm_sha256("abc", 3, out)))
			return false;
		len = HSM_SHA256_LEN;
	} else if (EVP_Digest("abc", 3, out, &len, hsm_crypto_md(md), NULL) != 1) {
		return false;
	}
	return matches(out, len, expected, corrupt);
}

static bool kat_sha256(bool c) { return kat_digest("SHA256", hsm_kat_sha256_abc, c); }
static bool kat_sha384(bool c) { return kat_digest("SHA384", hsm_kat_sha384_abc, c); }
static bool kat_sha512(bool c) { return kat_digest("SHA512", hsm_kat_sha512_abc, c); }

static bool kat_hmac(hsm_mac_alg alg, const char *expected, bool corrupt)
{
	static const char data[] = "what do ya want for nothing?";
	const hsm_mac_alg_info *info = hsm_mac_alg_get(alg);
	uint8_t out[EVP_MAX_MD_SIZE];
	return hsm_ok(hsm_hmac_compute((const uint8_t *)"Jefe", 4, info->digest,
	                               (const uint8_t *)data, sizeof(data) - 1, out,
	                               info->mac_len)) &&
	       matches(out, info->mac_len, expected, corrupt);
}

static bool kat_hmac224(bool c) { return kat_hmac(HSM_MAC_HMAC_SHA_224, hsm_kat_hmac_sha224, c); }
static bool kat_hmac256(bool c) { return kat_hmac(HSM_MAC_HMAC_SHA_256, hsm_kat_hmac_sha256, c); }
static bool kat_hmac384(bool c) { return kat_hmac(HSM_MAC_HMAC_SHA_384, hsm_kat_hmac_sha384, c); }
static bool kat_hmac512(bool c) { return kat_hmac(HSM_MAC_HMAC_SHA_512, hsm_kat_hmac_sha512, c); }

static bool kat_hkdf(bool corrupt)
{
	static const char info[] = "\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9";
	uint8_t ikm_bytes[22], salt[13];
	memset(ikm_bytes, 0x0b, sizeof(ikm_bytes));
	for (uint8_t i = 0; i < sizeof(salt); i++)
		salt[i] = i;
	hsm_secret *ikm = NULL, *okm = NULL;
	bool ok = hsm_ok(hsm_secret_from(ikm_bytes, sizeof(ikm_bytes), &ikm)) &&
	          hsm_ok(hsm_hkdf_sha256(ikm, salt, sizeof(salt), info, 42, &okm)) &&
	          matches(hsm_secret_bytes(okm), hsm_secret_len(okm), hsm_kat_hkdf_okm, corrupt);
	hsm_secret_free(ikm);
	hsm_secret_free(okm);
	return ok;
}

/* ---- symmetric ciphers --------------------------------------------------- */

static bool gcm_rejects_tampering(const hsm_material *m, const hsm_buf *iv, const hsm_buf *aad,
                                  const hsm_buf *ct, const uint8_t tag[HSM_GCM_TAG_LEN])
{
	uint8_t bad_tag[HSM_GCM_TAG_LEN];
	hsm_buf pt;
	hsm_buf_init_secure(&pt);
	memcpy(bad_tag, tag, sizeof(bad_tag));
	bad_tag[HSM_GCM_TAG_LEN - 1] ^= 0x80;
	hsm_result r = hsm_aes_gcm_open(m, iv->data, aad->data, aad->len, ct->data, ct->len, bad_tag,
	                                &pt);
	bool ok = r.err == HSM_ERR_INVALID_CIPHERTEXT && pt.len == 0;
	hsm_buf_free(&pt);
	return ok;
}

static bool kat_gcm(bool corrupt)
{
	hsm_buf key, iv, aad, pt, ct = {0}, out;
	uint8_t tag[HSM_GCM_TAG_LEN];
	hsm_material *m = NULL;
	/* every buffer is decoded (or at least made ready to free) before any test */
	bool ok = unhex(hsm_kat_gcm_key, true, &key);
	ok = unhex(hsm_kat_gcm_iv, false, &iv) && ok;
	ok = unhex(hsm_kat_gcm_aad, false, &aad) && ok;
	ok = unhex(hsm_kat_gcm_pt, true, &pt) && ok;
	hsm_buf_init_secure(&out);
	ok = ok && hsm_ok(hsm_material_import(HSM_SPEC_SYMMETRIC_DEFAULT, key.data, key.len, &m)) &&
	          hsm_ok(hsm_aes_gcm_seal(m, iv.data, aad.data, aad.len, pt.data, pt.len, &ct,
	                                  tag)) &&
	          matches(ct.data, ct.len, hsm_kat_gcm_ct, corrupt) &&
	          matches(tag, sizeof(tag), hsm_kat_gcm_tag, false) &&
	          hsm_ok(hsm_aes_gcm_open(m, iv.data, aad.data, aad.len, ct.data, ct.len, tag,
	                                  &out)) &&
	          out.len == pt.len && hsm_ct_equal(out.data, pt.data, pt.len) &&
	          gcm_rejects_tampering(m, &iv, &aad, &ct, tag);
	hsm_material_free(m);
	hsm_buf_free(&key);
	hsm_buf_free(&iv);
	hsm_buf_free(&aad);
	hsm_buf_free(&pt);
	hsm_buf_free(&ct);
	hsm_buf_free(&out);
	return ok;
}

static bool kat_kwp(bool corrupt)
{
	hsm_buf kek_bytes, key, wrapped = {0}, unwrapped;
	hsm_secret *kek = NULL;
	bool ok = unhex(hsm_kat_kwp_kek, true, &kek_bytes);
	ok = unhex(hsm_kat_kwp_key, true, &key) && ok;
	hsm_buf_init_secure(&unwrapped);
	ok = ok && hsm_ok(hsm_secret_from(kek_bytes.data, kek_bytes.len, &kek)) &&
	          hsm_ok(hsm_aes_kwp_wrap_raw(kek, key.data, key.len, &wrapped)) &&
	          matches(wrapped.data, wrapped.len, hsm_kat_kwp_wrapped, corrupt) &&
	          hsm_ok(hsm_aes_kwp_unwrap_raw(kek, wrapped.data, wrapped.len, &unwrapped)) &&
	          unwrapped.len == key.len && hsm_ct_equal(unwrapped.data, key.data, key.len);
	hsm_secret_free(kek);
	hsm_buf_free(&kek_bytes);
	hsm_buf_free(&key);
	hsm_buf_free(&wrapped);
	hsm_buf_free(&unwrapped);
	return ok;
}

/* ---- signatures and RSA encryption ---------------------------------------- */

/* Verifies a stored signature (corrupted: one bit of it flipped), then signs and verifies. */
static bool verify_known_then_roundtrip(const hsm_material *m, hsm_sign_alg alg,
                                        const char *sig_hex, bool corrupt)
{
	hsm_buf known, sig = {0};
	bool ok = unhex(sig_hex, false, &known);
	if (ok && corrupt)
		known.data[known.len / 2] ^= 0x01;
	ok = ok && hsm_ok(hsm_verify(m, alg, HSM_MSG_RAW, MSG, MSG_LEN, known.data, known.len)) &&
	          hsm_ok(hsm_sign(m, alg, HSM_MSG_RAW, MSG, MSG_LEN, &sig)) &&
	          hsm_ok(hsm_verify(m, alg, HSM_MSG_RAW, MSG, MSG_LEN, sig.data, sig.len));
	hsm_buf_free(&known);
	hsm_buf_free(&sig);
	return ok;
}

/* Deterministic schemes: the signature must come out exactly as stored. */
static bool sign_exact(const hsm_material *m, hsm_sign_alg alg, const uint8_t *msg,
                       size_t msg_len, const char *sig_hex, bool corrupt)
{
	hsm_buf sig = {0};
	bool ok = hsm_ok(hsm_sign(m, alg, HSM_MSG_RAW, msg, msg_len, &sig)) &&
	          matches(sig.data, sig.len, sig_hex, corrupt) &&
	          hsm_ok(hsm_verify(m, alg, HSM_MSG_RAW, msg, msg_len, sig.data, sig.len));
	hsm_buf_free(&sig);
	return ok;
}

static bool kat_rsa_pkcs1(bool corrupt)
{
	hsm_material *m = NULL;
	bool ok = import(HSM_SPEC_RSA_2048, hsm_kat_rsa2048_pkcs8, &m) &&
	          sign_exact(m, HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_256, MSG, MSG_LEN,
	                     hsm_kat_rsa_pkcs1_sha256, corrupt);
	hsm_material_free(m);
	return ok;
}

static bool kat_rsa_pss(bool corrupt)
{
	hsm_material *m = NULL;
	bool ok = import(HSM_SPEC_RSA_2048, hsm_kat_rsa2048_pkcs8, &m) &&
	          verify_known_then_roundtrip(m, HSM_SIGN_RSASSA_PSS_SHA_256, hsm_kat_rsa_pss_sha256,
	                                      corrupt);
	hsm_material_free(m);
	return ok;
}

static bool kat_oaep(hsm_enc_alg alg, const char *ct_hex, bool corrupt)
{
	hsm_material *m = NULL;
	hsm_buf ct, pt;
	bool ok = unhex(ct_hex, false, &ct);
	hsm_buf_init_secure(&pt);
	if (ok && corrupt)
		ct.data[ct.len - 1] ^= 0x01;
	ok = ok && import(HSM_SPEC_RSA_2048, hsm_kat_rsa2048_pkcs8, &m) &&
	          hsm_ok(hsm_rsa_oaep_decrypt(m, alg, ct.data, ct.len, &pt)) && pt.len == MSG_LEN &&
	          hsm_ct_equal(pt.data, MSG, MSG_LEN);
	hsm_material_free(m);
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
	return ok;
}

static bool kat_oaep_sha1(bool c) { return kat_oaep(HSM_ENC_RSAES_OAEP_SHA_1, hsm_kat_rsa_oaep_sha1, c); }
static bool kat_oaep_sha256(bool c)
{
	return kat_oaep(HSM_ENC_RSAES_OAEP_SHA_256, hsm_kat_rsa_oaep_sha256, c);
}

static bool kat_ecdsa(hsm_key_spec spec, hsm_sign_alg alg, const char *pkcs8, const char *sig,
                      bool corrupt)
{
	hsm_material *m = NULL;
	bool ok = import(spec, pkcs8, &m) && verify_known_then_roundtrip(m, alg, sig, corrupt);
	hsm_material_free(m);
	return ok;
}

static bool kat_p256(bool c)
{
	return kat_ecdsa(HSM_SPEC_ECC_NIST_P256, HSM_SIGN_ECDSA_SHA_256, hsm_kat_ec_p256_pkcs8,
	                 hsm_kat_ec_p256_sig, c);
}
static bool kat_p384(bool c)
{
	return kat_ecdsa(HSM_SPEC_ECC_NIST_P384, HSM_SIGN_ECDSA_SHA_384, hsm_kat_ec_p384_pkcs8,
	                 hsm_kat_ec_p384_sig, c);
}
static bool kat_p521(bool c)
{
	return kat_ecdsa(HSM_SPEC_ECC_NIST_P521, HSM_SIGN_ECDSA_SHA_512, hsm_kat_ec_p521_pkcs8,
	                 hsm_kat_ec_p521_sig, c);
}
static bool kat_secp256k1(bool c)
{
	return kat_ecdsa(HSM_SPEC_ECC_SECG_P256K1, HSM_SIGN_ECDSA_SHA_256,
	                 hsm_kat_ec_secp256k1_pkcs8, hsm_kat_ec_secp256k1_sig, c);
}

static bool kat_ed25519(bool corrupt)
{
	static const uint8_t empty[1];
	hsm_material *m = NULL;
	bool ok = import(HSM_SPEC_ECC_NIST_EDWARDS25519, hsm_kat_ed25519_pkcs8, &m) &&
	          sign_exact(m, HSM_SIGN_ED25519_SHA_512, empty, 0, hsm_kat_ed25519_sig, corrupt);
	hsm_material_free(m);
	return ok;
}

/* ---- key agreement --------------------------------------------------------- */

static bool kat_ecdh(hsm_key_spec spec, const char *pkcs8, const char *peer_hex,
                     const char *z_hex, bool corrupt)
{
	hsm_material *m = NULL;
	hsm_buf peer, z;
	bool ok = unhex(peer_hex, false, &peer);
	hsm_buf_init_secure(&z);
	ok = ok && import(spec, pkcs8, &m) && hsm_ok(hsm_ecdh_derive(m, peer.data, peer.len, &z)) &&
	          matches(z.data, z.len, z_hex, corrupt);
	if (ok) {
		/* y with its lowest bit flipped is neither y nor p - y: off the curve, no secret. */
		hsm_buf_clear(&z);
		peer.data[peer.len - 1] ^= 0x01;
		ok = hsm_ecdh_derive(m, peer.data, peer.len, &z).err == HSM_ERR_VALIDATION &&
		     z.len == 0;
	}
	hsm_material_free(m);
	hsm_buf_free(&peer);
	hsm_buf_free(&z);
	return ok;
}

static bool kat_ecdh_p256(bool c)
{
	return kat_ecdh(HSM_SPEC_ECC_NIST_P256, hsm_kat_ecdh_p256_pkcs8, hsm_kat_ecdh_p256_peer,
	                hsm_kat_ecdh_p256_z, c);
}
static bool kat_ecdh_p384(bool c)
{
	return kat_ecdh(HSM_SPEC_ECC_NIST_P384, hsm_kat_ecdh_p384_pkcs8, hsm_kat_ecdh_p384_peer,
	                hsm_kat_ecdh_p384_z, c);
}
static bool kat_ecdh_p521(bool c)
{
	return kat_ecdh(HSM_SPEC_ECC_NIST_P521, hsm_kat_ecdh_p521_pkcs8, hsm_kat_ecdh_p521_peer,
	                hsm_kat_ecdh_p521_z, c);
}

/* ---- random generator ---------------------------------------------------- */

/* Health check in the spirit of SP 800-90A 11.3: both DRBGs work and do not repeat. */
static bool kat_drbg(bool corrupt)
{
	uint8_t a[32], b[32];
	hsm_secret *s1 = NULL, *s2 = NULL;
	bool ok = hsm_ok(hsm_random_bytes(a, sizeof(a))) && hsm_ok(hsm_random_bytes(b, sizeof(b))) &&
	          !hsm_ct_equal(a, corrupt ? a : b, sizeof(a)) &&
	          hsm_ok(hsm_secret_random(32, &s1)) && hsm_ok(hsm_secret_random(32, &s2)) &&
	          !hsm_ct_equal(hsm_secret_bytes(s1), hsm_secret_bytes(s2), 32);
	hsm_secret_free(s1);
	hsm_secret_free(s2);
	return ok;
}

static const struct {
	const char *name;
	kat_fn run;
} kats[] = {
    {"sha256", kat_sha256},
    {"sha384", kat_sha384},
    {"sha512", kat_sha512},
    {"hmac-sha224", kat_hmac224},
    {"hmac-sha256", kat_hmac256},
    {"hmac-sha384", kat_hmac384},
    {"hmac-sha512", kat_hmac512},
    {"hkdf-sha256", kat_hkdf},
    {"aes-256-gcm", kat_gcm},
    {"aes-256-kwp", kat_kwp},
    {"rsa-pkcs1-sha256", kat_rsa_pkcs1},
    {"rsa-pss-sha256", kat_rsa_pss},
    {"rsa-oaep-sha1", kat_oaep_sha1},
    {"rsa-oaep-sha256", kat_oaep_sha256},
    {"ecdsa-p256", kat_p256},
    {"ecdsa-p384", kat_p384},
    {"ecdsa-p521", kat_p521},
    {"ecdsa-secp256k1", kat_secp256k1},
    {"ed25519", kat_ed25519},
    {"ecdh-p256", kat_ecdh_p256},
    {"ecdh-p384", kat_ecdh_p384},
    {"ecdh-p521", kat_ecdh_p521},
    {"drbg", kat_drbg},
};

#define KAT_COUNT (sizeof(kats) / sizeof(kats[0]))

size_t hsm_selftest_count(void) { return KAT_COUNT; }

const char *hsm_selftest_name(size_t i)
{
	HSM_ASSERT(i < KAT_COUNT);
	return kats[i].name;
}

hsm_result hsm_selftest_run(void)
{
	HSM_GUARD(hsm_crypto_init());
	const char *force = getenv("HSM_SELFTEST_FORCE_FAIL");
	for (size_t i = 0; i < KAT_COUNT; i++) {
		bool corrupt = force != NULL && strcmp(force, kats[i].name) == 0;
		errno = 0; /* a stale ENOMEM must not turn a wrong answer into "out of memory" */
		if (!kats[i].run(corrupt))
			return HSM_OSSL_FAIL(HSM_ERR_CRYPTO, "power-on self-test '%s' failed", kats[i].name);
	}
	ERR_clear_error();
	return HSM_SUCCESS;
}
