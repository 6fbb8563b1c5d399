/*
 * keyspec.h - the rules of AWS KMS key specs, usages and algorithms, as data.
 *
 * Sources: AWS KMS Developer Guide, "Key spec reference" (symmetric, RSA,
 * ECC, HMAC key specs and the algorithms each allows) and the API reference
 * for CreateKey (KeySpec x KeyUsage), Encrypt (RSA plaintext limits), Sign
 * (MessageType, digest lengths), GenerateMac and DeriveSharedSecret.
 *
 * Everything else in hsmd asks this table instead of hard-coding a rule.
 */
#ifndef HSM_KEYSPEC_H
#define HSM_KEYSPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/result.h"

typedef enum hsm_key_spec {
	HSM_SPEC_SYMMETRIC_DEFAULT, /* AES-256-GCM */
	HSM_SPEC_RSA_2048,
	HSM_SPEC_RSA_3072,
	HSM_SPEC_RSA_4096,
	HSM_SPEC_ECC_NIST_P256,
	HSM_SPEC_ECC_NIST_P384,
	HSM_SPEC_ECC_NIST_P521,
	HSM_SPEC_ECC_SECG_P256K1,
	HSM_SPEC_ECC_NIST_EDWARDS25519,
	HSM_SPEC_HMAC_224,
	HSM_SPEC_HMAC_256,
	HSM_SPEC_HMAC_384,
	HSM_SPEC_HMAC_512,
	HSM_SPEC_COUNT
} hsm_key_spec;

typedef enum hsm_key_usage {
	HSM_USAGE_ENCRYPT_DECRYPT,
	HSM_USAGE_SIGN_VERIFY,
	HSM_USAGE_GENERATE_VERIFY_MAC,
	HSM_USAGE_KEY_AGREEMENT,
	HSM_USAGE_COUNT
} hsm_key_usage;

typedef enum hsm_key_type {
	HSM_KT_AES,
	HSM_KT_RSA,
	HSM_KT_EC,
	HSM_KT_ED25519,
	HSM_KT_HMAC,
} hsm_key_type;

/* EncryptionAlgorithmSpec */
typedef enum hsm_enc_alg {
	HSM_ENC_SYMMETRIC_DEFAULT,
	HSM_ENC_RSAES_OAEP_SHA_1,
	HSM_ENC_RSAES_OAEP_SHA_256,
	HSM_ENC_COUNT
} hsm_enc_alg;

/* SigningAlgorithmSpec */
typedef enum hsm_sign_alg {
	HSM_SIGN_RSASSA_PSS_SHA_256,
	HSM_SIGN_RSASSA_PSS_SHA_384,
	HSM_SIGN_RSASSA_PSS_SHA_512,
	HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_256,
	HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_384,
	HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_512,
	HSM_SIGN_ECDSA_SHA_256,
	HSM_SIGN_ECDSA_SHA_384,
	HSM_SIGN_ECDSA_SHA_512,
	HSM_SIGN_ED25519_SHA_512,
	HSM_SIGN_COUNT
} hsm_sign_alg;

/* MacAlgorithmSpec */
typedef enum hsm_mac_alg {
	HSM_MAC_HMAC_SHA_224,
	HSM_MAC_HMAC_SHA_256,
	HSM_MAC_HMAC_SHA_384,
	HSM_MAC_HMAC_SHA_512,
	HSM_MAC_COUNT
} hsm_mac_alg;

/* KeyAgreementAlgorithmSpec */
typedef enum hsm_agree_alg {
	HSM_AGREE_ECDH,
	HSM_AGREE_COUNT
} hsm_agree_alg;

/* MessageType of Sign/Verify. */
typedef enum hsm_message_type { HSM_MSG_RAW, HSM_MSG_DIGEST } hsm_message_type;

typedef enum hsm_sig_scheme {
	HSM_SCHEME_RSA_PSS,
	HSM_SCHEME_RSA_PKCS1,
	HSM_SCHEME_ECDSA,
	HSM_SCHEME_EDDSA,
} hsm_sig_scheme;

typedef struct hsm_spec_info {
	hsm_key_spec spec;
	const char *name;     /* KMS KeySpec name */
	hsm_key_type type;
	unsigned bits;        /* modulus / curve / key size */
	const char *group;    /* OpenSSL group name for EC keys, else NULL */
	size_t secret_len;    /* raw key length for AES and HMAC, else 0 */
	unsigned usages;      /* bit (1 << hsm_key_usage) per allowed usage */
	unsigned enc_algs;    /* bit per hsm_enc_alg */
	unsigned sign_algs;   /* bit per hsm_sign_alg */
	unsigned mac_algs;    /* bit per hsm_mac_alg */
	unsigned agree_algs;  /* bit per hsm_agree_alg */
	bool data_key_pair;   /* allowed as a DataKeyPairSpec */
} hsm_spec_info;

typedef struct hsm_sign_alg_info {
	hsm_sign_alg alg;
	const char *name;     /* KMS SigningAlgorithmSpec name */
	hsm_sig_scheme scheme;
	const char *digest;   /* OpenSSL digest name ("SHA256", ...) */
	size_t digest_len;    /* length a DIGEST message must have */
} hsm_sign_alg_info;

typedef struct hsm_mac_alg_info {
	hsm_mac_alg alg;
	const char *name;
	const char *digest;
	size_t mac_len;
} hsm_mac_alg_info;

const hsm_spec_info *hsm_spec_get(hsm_key_spec spec);
const hsm_sign_alg_info *hsm_sign_alg_get(hsm_sign_alg alg);
const hsm_mac_alg_info *hsm_mac_alg_get(hsm_mac_alg alg);

/* Name <-> enum.  Lookups fail with HSM_ERR_VALIDATION naming the field. */
hsm_result hsm_spec_parse(const char *name, hsm_key_spec *out) HSM_MUST_CHECK;
/* A spec named by a request's member ("KeySpec", "KeyPairSpec", "CustomerMasterKeySpec"):
 * a name AWS defines for that member that hsmd does not offer is UNSUPPORTED_OPERATION,
 * any other VALIDATION; the messages name the member. */
hsm_result hsm_spec_parse_member(const char *member, const char *name,
                                 hsm_key_spec *out) HSM_MUST_CHECK;
hsm_result hsm_usage_parse(const char *name, hsm_key_usage *out) HSM_MUST_CHECK;
/* An algorithm AWS defines for the member that no key here takes (SM2PKE; SM2DSA,
 * ML_DSA_SHAKE_256, ED25519_PH_SHA_512) is UNSUPPORTED_OPERATION, which the caller turns
 * into the key's InvalidKeyUsageException (hsm_kms_refuse_algorithm); any other VALIDATION. */
hsm_result hsm_enc_alg_parse(const char *name, hsm_enc_alg *out) HSM_MUST_CHECK;
hsm_result hsm_sign_alg_parse(const char *name, hsm_sign_alg *out) HSM_MUST_CHECK;
hsm_result hsm_mac_alg_parse(const char *name, hsm_mac_alg *out) HSM_MUST_CHECK;
hsm_result hsm_agree_alg_parse(const char *name, hsm_agree_alg *out) HSM_MUST_CHECK;
const char *hsm_spec_name(hsm_key_spec spec);
const char *hsm_usage_name(hsm_key_usage usage);
const char *hsm_enc_alg_name(hsm_enc_alg alg);
const char *hsm_sign_alg_name(hsm_sign_alg alg);
const char *hsm_mac_alg_name(hsm_mac_alg alg);
const char *hsm_agree_alg_name(hsm_agree_alg alg);

bool hsm_spec_allows_usage(hsm_key_spec spec, hsm_key_usage usage);
bool hsm_spec_allows_enc_alg(hsm_key_spec spec, hsm_key_usage usage, hsm_enc_alg alg);
bool hsm_spec_allows_sign_alg(hsm_key_spec spec, hsm_sign_alg alg);
bool hsm_spec_allows_mac_alg(hsm_key_spec spec, hsm_mac_alg alg);
bool hsm_spec_allows_agree_alg(hsm_key_spec spec, hsm_agree_alg alg);
bool hsm_spec_is_asymmetric(hsm_key_spec spec);

/*
 * Largest plaintext an RSAES-OAEP key of this spec takes with this
 * algorithm: k - 2*hLen - 2 (RFC 8017 section 7.1.1), e.g. 190 bytes for
 * RSA_2048 with SHA-256.  0 when the pair is not an RSA encryption pair.
 */
size_t hsm_rsa_oaep_max_plaintext(hsm_key_spec spec, hsm_enc_alg alg);

/* Longest Sign/Verify RAW message and GenerateMac message KMS accepts. */
#define HSM_MAX_SIGN_MESSAGE 4096
#define HSM_MAX_MAC_MESSAGE 4096
/* Encrypt plaintext limit (bytes) and GenerateRandom / data key limits. */
#define HSM_MAX_PLAINTEXT 4096
#define HSM_MAX_RANDOM 1024
#define HSM_MAX_DATA_KEY_BYTES 1024
#define HSM_MAX_CIPHERTEXT_BLOB 6144

#endif
