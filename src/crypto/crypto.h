/*
 * crypto.h - hsmd's cryptographic primitives, on OpenSSL 3 EVP.
 *
 * This layer knows algorithms and formats, nothing about the store, states
 * or policies.  The keystore (keystore/keystore.h) is its only caller for
 * operations with secret keys; everything else reaches keys through the
 * keystore.  Public-key-only helpers (verify with a public key, format
 * conversions) may be used anywhere.
 *
 * Ownership: hsm_material is opaque; _new/_parse give the caller a reference
 * it releases with hsm_material_free().  A material is immutable after
 * creation and may be used from several threads at once.
 */
#ifndef HSM_CRYPTO_H
#define HSM_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"
#include "common/secret.h"
#include "crypto/keyspec.h"

#define HSM_AES_KEY_LEN 32
#define HSM_GCM_IV_LEN 12
#define HSM_GCM_TAG_LEN 16

/* ---- Library set-up ------------------------------------------------------ */

/*
 * Fetches the algorithm implementations once (OpenSSL 3's implicit fetch on
 * every call is a measurable cost on the hot path).  Call once per process
 * before any other function here; idempotent and thread-safe.
 */
hsm_result hsm_crypto_init(void) HSM_MUST_CHECK;

/* ---- Key material -------------------------------------------------------- */

typedef struct hsm_material hsm_material;

/* Generates fresh material for spec; asymmetric keys pass a pairwise test first. */
hsm_result hsm_material_generate(hsm_key_spec spec, hsm_material **out) HSM_MUST_CHECK;
/*
 * Serializes the secret part: PKCS#8 DER for asymmetric keys, the raw key
 * for AES and HMAC.  out must be a secure buffer (hsm_buf_init_secure).
 */
hsm_result hsm_material_export(const hsm_material *m, hsm_buf *out) HSM_MUST_CHECK;
/* Inverse of export; checks that the bytes really are a key of this spec. */
hsm_result hsm_material_import(hsm_key_spec spec, const uint8_t *p, size_t n,
                               hsm_material **out) HSM_MUST_CHECK;
/* DER SubjectPublicKeyInfo of an asymmetric key (appended to out). */
hsm_result hsm_material_public_der(const hsm_material *m, hsm_buf *out) HSM_MUST_CHECK;
/*
 * Pairwise consistency test (FIPS 140-3 IG 10.3.A): sign-and-verify or
 * encrypt-and-decrypt with the new key.  Fails with HSM_ERR_CRYPTO.
 */
hsm_result hsm_material_pairwise_test(const hsm_material *m, hsm_key_usage usage) HSM_MUST_CHECK;
hsm_key_spec hsm_material_spec(const hsm_material *m);
void hsm_material_free(hsm_material *m);
/* Adds a reference (for caches); released by hsm_material_free. */
hsm_material *hsm_material_ref(hsm_material *m);

/* ---- AES-256-GCM --------------------------------------------------------- */

/*
 * Seals pt under the material's AES key.  iv must be fresh random bytes for
 * every call (hsm_random_bytes); the caller chooses it because the blob
 * header that carries it is part of the AAD.  Appends the ciphertext (same
 * length as pt) to ct_out and writes the tag.
 */
hsm_result hsm_aes_gcm_seal(const hsm_material *m, const uint8_t iv[HSM_GCM_IV_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t pt_len,
                            hsm_buf *ct_out, uint8_t tag[HSM_GCM_TAG_LEN]) HSM_MUST_CHECK;
/*
 * Opens a GCM ciphertext.  Plaintext is released (appended to pt_out, a
 * secure buffer) only after the tag verified; every failure is
 * HSM_ERR_INVALID_CIPHERTEXT with the same message.
 */
hsm_result hsm_aes_gcm_open(const hsm_material *m, const uint8_t iv[HSM_GCM_IV_LEN],
                            const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t ct_len,
                            const uint8_t tag[HSM_GCM_TAG_LEN], hsm_buf *pt_out) HSM_MUST_CHECK;
/* Same with a raw 32-byte key (used for wrapping keys derived from the DMK). */
hsm_result hsm_aes_gcm_seal_raw(const hsm_secret *key, const uint8_t iv[HSM_GCM_IV_LEN],
                                const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                                size_t pt_len, hsm_buf *ct_out,
                                uint8_t tag[HSM_GCM_TAG_LEN]) HSM_MUST_CHECK;
hsm_result hsm_aes_gcm_open_raw(const hsm_secret *key, const uint8_t iv[HSM_GCM_IV_LEN],
                                const uint8_t *aad, size_t aad_len, const uint8_t *ct,
                                size_t ct_len, const uint8_t tag[HSM_GCM_TAG_LEN],
                                hsm_buf *pt_out) HSM_MUST_CHECK;

/* ---- RSAES-OAEP ---------------------------------------------------------- */

/* Encrypts with the public half; pt longer than hsm_rsa_oaep_max_plaintext fails (VALIDATION). */
hsm_result hsm_rsa_oaep_encrypt(const hsm_material *m, hsm_enc_alg alg, const uint8_t *pt,
                                size_t pt_len, hsm_buf *out) HSM_MUST_CHECK;
/* Same with a DER SubjectPublicKeyInfo instead of material. */
hsm_result hsm_rsa_oaep_encrypt_pub(const uint8_t *spki, size_t spki_len, hsm_enc_alg alg,
                                    const uint8_t *pt, size_t pt_len, hsm_buf *out) HSM_MUST_CHECK;
/* Decrypts; any failure is HSM_ERR_INVALID_CIPHERTEXT (no padding oracle detail). */
hsm_result hsm_rsa_oaep_decrypt(const hsm_material *m, hsm_enc_alg alg, const uint8_t *ct,
                                size_t ct_len, hsm_buf *pt_out) HSM_MUST_CHECK;

/* ---- Signatures ---------------------------------------------------------- */

/*
 * Signs.  With HSM_MSG_RAW the message is hashed with the algorithm's digest
 * (Ed25519 signs it directly); with HSM_MSG_DIGEST msg must be exactly the
 * digest length (else VALIDATION) and is signed as that digest, wrapped as
 * the scheme requires (DigestInfo for PKCS#1 v1.5).  DIGEST is refused for
 * Ed25519 (VALIDATION).  ECDSA signatures are DER, as KMS returns them.
 */
hsm_result hsm_sign(const hsm_material *m, hsm_sign_alg alg, hsm_message_type type,
                    const uint8_t *msg, size_t msg_len, hsm_buf *sig_out) HSM_MUST_CHECK;
/* Verifies; a wrong signature is HSM_ERR_INVALID_SIGNATURE. */
hsm_result hsm_verify(const hsm_material *m, hsm_sign_alg alg, hsm_message_type type,
                      const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                      size_t sig_len) HSM_MUST_CHECK;
/* Same, with a DER SubjectPublicKeyInfo. */
hsm_result hsm_verify_pub(const uint8_t *spki, size_t spki_len, hsm_sign_alg alg,
                          hsm_message_type type, const uint8_t *msg, size_t msg_len,
                          const uint8_t *sig, size_t sig_len) HSM_MUST_CHECK;

/* ECDSA signature formats: DER (X9.62 Ecdsa-Sig-Value) <-> IEEE P1363 r||s. */
hsm_result hsm_ecdsa_der_to_p1363(const uint8_t *der, size_t der_len, size_t field_len,
                                  hsm_buf *out) HSM_MUST_CHECK;
hsm_result hsm_ecdsa_p1363_to_der(const uint8_t *sig, size_t sig_len, hsm_buf *out) HSM_MUST_CHECK;
/* Byte length of r or s for an EC spec (32, 48, 66). */
size_t hsm_ec_field_len(hsm_key_spec spec);

/* ---- HMAC ---------------------------------------------------------------- */

hsm_result hsm_hmac(const hsm_material *m, hsm_mac_alg alg, const uint8_t *msg, size_t msg_len,
                    hsm_buf *mac_out) HSM_MUST_CHECK;
/* Recomputes and compares in constant time; mismatch is HSM_ERR_INVALID_MAC. */
hsm_result hsm_hmac_verify(const hsm_material *m, hsm_mac_alg alg, const uint8_t *msg,
                           size_t msg_len, const uint8_t *mac, size_t mac_len) HSM_MUST_CHECK;

/* ---- Hashes, KDF, randomness --------------------------------------------- */

#define HSM_SHA256_LEN 32
void hsm_sha256(const void *p, size_t n, uint8_t out[HSM_SHA256_LEN]);
/* HMAC-SHA256 with a raw key. */
hsm_result hsm_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                           uint8_t out[HSM_SHA256_LEN]) HSM_MUST_CHECK;
/* HKDF-SHA256 (RFC 5869) into a new secret of out_len bytes. */
hsm_result hsm_hkdf_sha256(const hsm_secret *ikm, const uint8_t *salt, size_t salt_len,
                           const char *info, size_t out_len, hsm_secret **out) HSM_MUST_CHECK;
hsm_result hsm_random_bytes(uint8_t *out, size_t n) HSM_MUST_CHECK;

/* ---- Power-on self-tests ------------------------------------------------- */

/*
 * Known-answer tests for every algorithm hsmd offers (AES-GCM, HMAC, HKDF,
 * SHA-2, RSA PKCS#1 v1.5 / PSS / OAEP, ECDSA on each curve, Ed25519, DRBG).
 * On failure returns HSM_ERR_CRYPTO naming the failed test.  When the
 * environment variable HSM_SELFTEST_FORCE_FAIL names a test, that test is
 * made to fail (so tests can prove the error state works).
 */
hsm_result hsm_selftest_run(void) HSM_MUST_CHECK;

#endif
