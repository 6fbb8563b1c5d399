/*
 * selftest_vectors.h - known answers for the power-on self-tests, as lowercase hex.
 *
 * Sources are cited beside each value in selftest_vectors.c.  The RSA and
 * ECDSA keys are test keys generated once with the openssl command line; they
 * protect nothing and are used for nothing else.  The ECDH keys are RFC 5903's.
 */
#ifndef HSM_SELFTEST_VECTORS_H
#define HSM_SELFTEST_VECTORS_H

/* The message the RSA and ECDSA known answers sign or encrypt. */
#define HSM_KAT_MESSAGE "hsmd power-on self-test"

extern const char hsm_kat_sha256_abc[];
extern const char hsm_kat_sha384_abc[];
extern const char hsm_kat_sha512_abc[];
extern const char hsm_kat_hmac_sha224[];
extern const char hsm_kat_hmac_sha256[];
extern const char hsm_kat_hmac_sha384[];
extern const char hsm_kat_hmac_sha512[];
extern const char hsm_kat_hkdf_okm[];
extern const char hsm_kat_gcm_key[];
extern const char hsm_kat_gcm_iv[];
extern const char hsm_kat_gcm_aad[];
extern const char hsm_kat_gcm_pt[];
extern const char hsm_kat_gcm_ct[];
extern const char hsm_kat_gcm_tag[];
extern const char hsm_kat_kwp_kek[];
extern const char hsm_kat_kwp_key[];
extern const char hsm_kat_kwp_wrapped[];
extern const char hsm_kat_rsa2048_pkcs8[];
extern const char hsm_kat_rsa_pkcs1_sha256[];
extern const char hsm_kat_rsa_pss_sha256[];
extern const char hsm_kat_rsa_oaep_sha256[];
extern const char hsm_kat_rsa_oaep_sha1[];
extern const char hsm_kat_ec_p256_pkcs8[];
extern const char hsm_kat_ec_p256_sig[];
extern const char hsm_kat_ec_p384_pkcs8[];
extern const char hsm_kat_ec_p384_sig[];
extern const char hsm_kat_ec_p521_pkcs8[];
extern const char hsm_kat_ec_p521_sig[];
extern const char hsm_kat_ec_secp256k1_pkcs8[];
extern const char hsm_kat_ec_secp256k1_sig[];
extern const char hsm_kat_ed25519_pkcs8[];
extern const char hsm_kat_ed25519_sig[];
extern const char hsm_kat_ecdh_p256_pkcs8[];
extern const char hsm_kat_ecdh_p256_peer[];
extern const char hsm_kat_ecdh_p256_z[];
extern const char hsm_kat_ecdh_p384_pkcs8[];
extern const char hsm_kat_ecdh_p384_peer[];
extern const char hsm_kat_ecdh_p384_z[];
extern const char hsm_kat_ecdh_p521_pkcs8[];
extern const char hsm_kat_ecdh_p521_peer[];
extern const char hsm_kat_ecdh_p521_z[];

#endif
