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
/*
 * For code outside this module that calls OpenSSL itself: hsm_crypto_watch()
 * before the call and, when it failed, hsm_crypto_ran_out() says whether
 * memory ran out (OpenSSL's error queue, or malloc's ENOMEM), so that the
 * failure is not read as a verdict.  The queue is dropped either way.
 */
void hsm_crypto_watch(void);
bool hsm_crypto_ran_out(void);

/* ---- Key material -------------------------------------------------------- */

typedef struct hsm_material hsm_material;

/* Generates fresh material for spec; asymmetric keys pass a pairwise test first. */
hsm_result hsm_material_generate(hsm_key_spec spec, hsm_material **out) HSM_MUST_CHECK;
/*
 * Serializes the secret part: PKCS#8 DER for asymmetric keys, the raw key
 * for AES and HMAC.  out must be a secure buffer (hsm_buf_init_secure).
 */
hsm_result hsm_material_export(const hsm_material *m, hsm_buf *out) HSM_MUST_CHECK;
/*
 * Inverse of export; checks that the bytes really are a key of this spec:
 * AES keys must have the spec's exact length, HMAC keys from the digest
 * length to the hash's block size (64 bytes for HMAC_224/256, 128 above); asymmetric keys must be
 * one DER PrivateKeyInfo (no trailing bytes) of the spec's type, modulus size
 * or curve, RSA keys with an odd public exponent 2^16 < e < 2^256 (FIPS 186-5
 * A.1.1); EC keys must pass OpenSSL's pairwise check (public point = d*G),
 * and every asymmetric key a sign/verify test (RSA also encrypt/decrypt).
 * Bytes that are not such a key fail with HSM_ERR_VALIDATION.
 */
hsm_result hsm_material_import(hsm_key_spec spec, const uint8_t *p, size_t n,
                               hsm_material **out) HSM_MUST_CHECK;
/* DER SubjectPublicKeyInfo of an asymmetric key (appended to out). */
hsm_result hsm_material_public_der(const hsm_material *m, hsm_buf *out) HSM_MUST_CHECK;
/*
 * The key spec a DER SubjectPublicKeyInfo corresponds to (RSA modulus of
 * exactly 2048/3072/4096 bits, one of the spec table's curves, Ed25519);
 * anything else, or trailing bytes, is HSM_ERR_VALIDATION.
 */
hsm_result hsm_spki_spec(const uint8_t *spki, size_t spki_len, hsm_key_spec *out) HSM_MUST_CHECK;
/*
 * An EC SubjectPublicKeyInfo again with its point in form (an
 * OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_* name), appended to out; anything
 * but an EC key is HSM_ERR_VALIDATION.
 */
hsm_result hsm_spki_ec_form(const uint8_t *spki, size_t spki_len, const char *form,
                            hsm_buf *out) HSM_MUST_CHECK;
/*
 * The full check of an RSA private key, made once where material enters
 * from outside (ImportKeyMaterial), not on every load (a key-cache miss):
 * OpenSSL's key validation, which tests p and q for primality and that n =
 * p*q, that d inverts e and that dP, dQ and qInv fit p and q.  The import's
 * pairwise tests miss a key with a wrong d or CRT value, or a q that does
 * not divide n: OpenSSL answers a CRT result that does not verify with a
 * second exponentiation by d, so such a key works at twice the cost (or
 * signs with a d it never checked).  Costs about 40 ms for RSA-2048 and
 * 350 ms for RSA-4096 (the primality tests).  Other key types pass at once:
 * hsm_material_import checks them in full.  HSM_ERR_VALIDATION when the key
 * fails.
 */
hsm_result hsm_material_check_private(const hsm_material *m) HSM_MUST_CHECK;
/*
 * Pairwise consistency test (FIPS 140-3 IG 10.3.A): sign-and-verify,
 * encrypt-and-decrypt, or for KEY_AGREEMENT an ECDH with an ephemeral peer
 * key computed from both sides.  Fails with HSM_ERR_CRYPTO; a usage
 * the spec does not allow is HSM_ERR_INVALID_KEY_USAGE.  AES and HMAC keys
 * have no pair to test and always pass.
 */
hsm_result hsm_material_pairwise_test(const hsm_material *m, hsm_key_usage usage) HSM_MUST_CHECK;
hsm_key_spec hsm_material_spec(const hsm_material *m);
/*
 * A key check value: bytes that show two holders have the same secret key
 * without revealing it (PKCS#11's CKA_CHECK_VALUE).  AES keys: the first
 * HSM_KCV_LEN bytes of the key's AES-ECB encryption of one all-zero block
 * (HSM_KCV_ZERO_BLOCK); HMAC keys: of the SHA-1 hash of the key
 * (HSM_KCV_SHA1).  Asymmetric keys have none: HSM_ERR_UNSUPPORTED_OPERATION.
 */
#define HSM_KCV_LEN 3
typedef enum hsm_kcv_alg { HSM_KCV_ZERO_BLOCK, HSM_KCV_SHA1 } hsm_kcv_alg;
/* "AES_ZERO_BLOCK" or "SHA_1": the name hsmd's answers give the algorithm. */
const char *hsm_kcv_alg_name(hsm_kcv_alg alg);
hsm_result hsm_material_check_value(const hsm_material *m, uint8_t kcv[HSM_KCV_LEN],
                                    hsm_kcv_alg *alg) HSM_MUST_CHECK;
/* Drops one reference; the last one wipes and frees the key.  NULL is a no-op. */
void hsm_material_free(hsm_material *m);
/* Adds a reference (for caches); released by hsm_material_free. */
hsm_material *hsm_material_ref(hsm_material *m);

/*
 * A material of the wrong spec passed to any operation below fails with
 * HSM_ERR_INVALID_KEY_USAGE, as does an algorithm the spec does not allow.
 */

/* ---- AES-256-GCM --------------------------------------------------------- */

/*
 * Seals pt under the material's AES key.  iv must be fresh random bytes for
 * every call (hsm_random_iv); the caller chooses it because the blob
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

/* ---- AES key wrap with padding (RFC 5649) --------------------------------- */

/*
 * Wraps pt (1 byte or more) under a 256-bit AES key with the RFC 5649
 * algorithm (AES-KWP), appending ceil(pt_len / 8) * 8 + 8 bytes to out.
 * Deterministic: use it for keys (PKCS#11 C_WrapKey, backups), not for data.
 */
hsm_result hsm_aes_kwp_wrap(const hsm_material *m, const uint8_t *pt, size_t pt_len,
                            hsm_buf *out) HSM_MUST_CHECK;
/*
 * Unwraps and checks the integrity value and padding; appends the key to
 * pt_out (a secure buffer).  Every failure is HSM_ERR_INVALID_CIPHERTEXT
 * with the same message, and nothing is appended.
 */
hsm_result hsm_aes_kwp_unwrap(const hsm_material *m, const uint8_t *ct, size_t ct_len,
                              hsm_buf *pt_out) HSM_MUST_CHECK;
/* Same with a raw 32-byte key-encryption key. */
hsm_result hsm_aes_kwp_wrap_raw(const hsm_secret *kek, const uint8_t *pt, size_t pt_len,
                                hsm_buf *out) HSM_MUST_CHECK;
hsm_result hsm_aes_kwp_unwrap_raw(const hsm_secret *kek, const uint8_t *ct, size_t ct_len,
                                  hsm_buf *pt_out) HSM_MUST_CHECK;

/* ---- RSAES-OAEP ---------------------------------------------------------- */

/*
 * RSAES_OAEP_SHA_1 / _SHA_256 as in KMS: OAEP (RFC 8017 section 7.1) with
 * that hash, MGF1 with the same hash, and an empty label.
 */

/* Encrypts with the public half; pt longer than hsm_rsa_oaep_max_plaintext fails (VALIDATION). */
hsm_result hsm_rsa_oaep_encrypt(const hsm_material *m, hsm_enc_alg alg, const uint8_t *pt,
                                size_t pt_len, hsm_buf *out) HSM_MUST_CHECK;
/* Same with a DER SubjectPublicKeyInfo of an RSA key spec instead of material. */
hsm_result hsm_rsa_oaep_encrypt_pub(const uint8_t *spki, size_t spki_len, hsm_enc_alg alg,
                                    const uint8_t *pt, size_t pt_len, hsm_buf *out) HSM_MUST_CHECK;
/*
 * Decrypts into pt_out (a secure buffer); any failure is
 * HSM_ERR_INVALID_CIPHERTEXT with one message (no padding oracle detail).
 */
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
/*
 * Verifies; a wrong signature of any kind (bad value, bad encoding, wrong
 * length, garbage) is HSM_ERR_INVALID_SIGNATURE.  Message type rules as for
 * hsm_sign.  RSASSA-PSS requires salt length = digest length.
 */
hsm_result hsm_verify(const hsm_material *m, hsm_sign_alg alg, hsm_message_type type,
                      const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                      size_t sig_len) HSM_MUST_CHECK;
/*
 * Same, with a DER SubjectPublicKeyInfo whose key must be of a spec that
 * allows alg (see hsm_spki_spec); an unusable SPKI is HSM_ERR_VALIDATION,
 * a key of another spec HSM_ERR_INVALID_KEY_USAGE.
 */
hsm_result hsm_verify_pub(const uint8_t *spki, size_t spki_len, hsm_sign_alg alg,
                          hsm_message_type type, const uint8_t *msg, size_t msg_len,
                          const uint8_t *sig, size_t sig_len) HSM_MUST_CHECK;

/*
 * ECDSA signature formats: DER (X9.62 Ecdsa-Sig-Value, SEQUENCE of two
 * INTEGERs) <-> IEEE P1363 r||s with each half field_len bytes (JOSE,
 * RFC 7518 section 3.4).  DER input must be strict DER: minimal lengths and
 * integers, no negative or zero r or s, nothing after the SEQUENCE, values
 * that fit field_len.  P1363 input must be exactly 2 * field_len bytes with
 * non-zero halves.  Malformed input is HSM_ERR_INVALID_SIGNATURE; the result
 * is appended to out.
 */
hsm_result hsm_ecdsa_der_to_p1363(const uint8_t *der, size_t der_len, size_t field_len,
                                  hsm_buf *out) HSM_MUST_CHECK;
hsm_result hsm_ecdsa_p1363_to_der(const uint8_t *sig, size_t sig_len, size_t field_len,
                                  hsm_buf *out) HSM_MUST_CHECK;
/* Byte length of r or s for an EC spec (32, 48, 66); 0 for other specs. */
size_t hsm_ec_field_len(hsm_key_spec spec);

/* ---- HMAC ---------------------------------------------------------------- */

/* Appends the full HMAC (RFC 2104) of msg, mac_len bytes of the algorithm, to mac_out. */
hsm_result hsm_hmac(const hsm_material *m, hsm_mac_alg alg, const uint8_t *msg, size_t msg_len,
                    hsm_buf *mac_out) HSM_MUST_CHECK;
/*
 * Recomputes and compares in constant time; a mismatch, and any mac_len but
 * the algorithm's full length (truncated MACs are not accepted, as in KMS
 * VerifyMac), is HSM_ERR_INVALID_MAC.
 */
hsm_result hsm_hmac_verify(const hsm_material *m, hsm_mac_alg alg, const uint8_t *msg,
                           size_t msg_len, const uint8_t *mac, size_t mac_len) HSM_MUST_CHECK;

/* ---- Key agreement ------------------------------------------------------- */

/*
 * ECDH as KMS DeriveSharedSecret computes it (ecdh.c): the raw shared
 * secret Z, the x-coordinate of the shared point as field-length bytes (32,
 * 48 or 66), appended to secret_out (a secure buffer).  peer_spki is the
 * peer's DER SubjectPublicKeyInfo: an EC key with a named curve, the
 * material's curve, and a valid point (not at infinity, on the curve).
 * Anything else is HSM_ERR_VALIDATION; a material whose spec offers no key
 * agreement is HSM_ERR_INVALID_KEY_USAGE.  Nothing is appended on failure.
 */
hsm_result hsm_ecdh_derive(const hsm_material *m, const uint8_t *peer_spki, size_t peer_len,
                           hsm_buf *secret_out) HSM_MUST_CHECK;
/* The checks of hsm_ecdh_derive on a peer key for a key of spec, without deriving. */
hsm_result hsm_ecdh_check_peer(hsm_key_spec spec, const uint8_t *peer_spki,
                               size_t peer_len) HSM_MUST_CHECK;

/* ---- Hashes, KDF, randomness --------------------------------------------- */

#define HSM_SHA256_LEN 32
/* Fails only when OpenSSL cannot allocate its digest context (HSM_ERR_NOMEM). */
hsm_result hsm_sha256(const void *p, size_t n, uint8_t out[HSM_SHA256_LEN]) HSM_MUST_CHECK;
/* HMAC-SHA256 with a raw key. */
hsm_result hsm_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                           uint8_t out[HSM_SHA256_LEN]) HSM_MUST_CHECK;
/*
 * HMAC-SHA256 of several messages under one raw key, keyed once: each MAC
 * after the first restarts from the keyed state instead of hashing the key
 * into its pads again.  The keyed state is wiped by hsm_keyed_hmac_free; keep
 * one only for the messages at hand (it lives outside the secure heap).
 */
typedef struct hsm_keyed_hmac hsm_keyed_hmac;
hsm_result hsm_keyed_hmac_new(const uint8_t *key, size_t key_len,
                              hsm_keyed_hmac **out) HSM_MUST_CHECK;
hsm_result hsm_keyed_hmac_of(hsm_keyed_hmac *h, const void *msg, size_t msg_len,
                             uint8_t out[HSM_SHA256_LEN]) HSM_MUST_CHECK;
/* Wipes and frees, or gives a pool's back to it.  NULL is a no-op. */
void hsm_keyed_hmac_free(hsm_keyed_hmac *h);
/*
 * Keyed HMAC-SHA256 states for one key used by many threads on every
 * request (a SigV4 signing key, the audit trail's hash key): a context is
 * lent, restarted from the key's pads and given back, instead of being made
 * and keyed for each use.  Safe to share between threads.  The pool holds the
 * keyed state outside the secure heap until its last reference goes: its
 * owner's (hsm_hmac_pool_free) and each loan's.
 */
typedef struct hsm_hmac_pool hsm_hmac_pool;
hsm_result hsm_hmac_pool_new(const uint8_t *key, size_t key_len,
                             hsm_hmac_pool **out) HSM_MUST_CHECK;
/* A keyed HMAC lent by p (or, when every pooled one is out, a new one of the
 * caller's); hsm_keyed_hmac_free gives it back.  It keeps p alive until then. */
hsm_result hsm_hmac_pool_take(hsm_hmac_pool *p, hsm_keyed_hmac **out) HSM_MUST_CHECK;
/* Drops the owner's reference; the states are wiped once no loan is out.  NULL: no-op. */
void hsm_hmac_pool_free(hsm_hmac_pool *p);
/*
 * HKDF-SHA256 (RFC 5869) into a new secret of out_len bytes (1..8160); info
 * is the NUL-terminated label that separates purposes, salt may be empty.
 */
hsm_result hsm_hkdf_sha256(const hsm_secret *ikm, const uint8_t *salt, size_t salt_len,
                           const char *info, size_t out_len, hsm_secret **out) HSM_MUST_CHECK;
/* Public random bytes (identifiers, GenerateRandom) from the DRBG; secrets use hsm_secret_random. */
hsm_result hsm_random_bytes(uint8_t *out, size_t n) HSM_MUST_CHECK;
/*
 * A fresh random 96-bit GCM IV from the public DRBG, through a per-thread
 * pool (no RAND_bytes call for most IVs).  Never the same bytes twice, and
 * HSM_ERR_CRYPTO rather than stale or zero bytes when the DRBG fails.
 * Thread-safe and fork-safe.
 */
hsm_result hsm_random_iv(uint8_t iv[HSM_GCM_IV_LEN]) HSM_MUST_CHECK;

/* ---- Power-on self-tests ------------------------------------------------- */

/*
 * Known-answer tests for every algorithm hsmd offers (AES-GCM, HMAC, HKDF,
 * SHA-2, RSA PKCS#1 v1.5 / PSS / OAEP, ECDSA on each curve, Ed25519, ECDH
 * on each NIST curve, DRBG).
 * On failure returns HSM_ERR_CRYPTO naming the failed test.  When the
 * environment variable HSM_SELFTEST_FORCE_FAIL names a test, that test is
 * made to fail (so tests can prove the error state works).
 */
hsm_result hsm_selftest_run(void) HSM_MUST_CHECK;
/* The self-tests' names, for HSM_SELFTEST_FORCE_FAIL: i in [0, hsm_selftest_count()). */
size_t hsm_selftest_count(void);
const char *hsm_selftest_name(size_t i);

#endif
