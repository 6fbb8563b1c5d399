#include "crypto/keyspec.h"

#include <string.h>

#define BIT(x) (1U << (x))
#define U_ENC BIT(HSM_USAGE_ENCRYPT_DECRYPT)
#define U_SIGN BIT(HSM_USAGE_SIGN_VERIFY)
#define U_MAC BIT(HSM_USAGE_GENERATE_VERIFY_MAC)
#define U_AGREE BIT(HSM_USAGE_KEY_AGREEMENT)
#define ECDH BIT(HSM_AGREE_ECDH)
#define RSA_ENC (BIT(HSM_ENC_RSAES_OAEP_SHA_1) | BIT(HSM_ENC_RSAES_OAEP_SHA_256))
#define RSA_SIGN                                                                             \
	(BIT(HSM_SIGN_RSASSA_PSS_SHA_256) | BIT(HSM_SIGN_RSASSA_PSS_SHA_384) |                   \
	 BIT(HSM_SIGN_RSASSA_PSS_SHA_512) | BIT(HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_256) |            \
	 BIT(HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_384) | BIT(HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_512))

/*
 * KMS Developer Guide, "Key spec reference".  Ed25519 offers ED25519_SHA_512
 * (PureEdDSA over the RAW message); ED25519_PH_SHA_512 needs Ed25519ph,
 * which the OpenSSL 3.0 of Debian 12 does not provide, so it is not offered.
 * KEY_AGREEMENT (ECDH) is for the NIST curves only: KMS API reference,
 * CreateKey KeyUsage ("ECC_SECG_P256K1 ... specify SIGN_VERIFY").
 */
static const hsm_spec_info specs[HSM_SPEC_COUNT] = {
    [HSM_SPEC_SYMMETRIC_DEFAULT] = {HSM_SPEC_SYMMETRIC_DEFAULT, "SYMMETRIC_DEFAULT", HSM_KT_AES,
                                    256, NULL, 32, U_ENC, BIT(HSM_ENC_SYMMETRIC_DEFAULT), 0, 0, 0,
                                    false},
    [HSM_SPEC_RSA_2048] = {HSM_SPEC_RSA_2048, "RSA_2048", HSM_KT_RSA, 2048, NULL, 0,
                           U_ENC | U_SIGN, RSA_ENC, RSA_SIGN, 0, 0, true},
    [HSM_SPEC_RSA_3072] = {HSM_SPEC_RSA_3072, "RSA_3072", HSM_KT_RSA, 3072, NULL, 0,
                           U_ENC | U_SIGN, RSA_ENC, RSA_SIGN, 0, 0, true},
    [HSM_SPEC_RSA_4096] = {HSM_SPEC_RSA_4096, "RSA_4096", HSM_KT_RSA, 4096, NULL, 0,
                           U_ENC | U_SIGN, RSA_ENC, RSA_SIGN, 0, 0, true},
    [HSM_SPEC_ECC_NIST_P256] = {HSM_SPEC_ECC_NIST_P256, "ECC_NIST_P256", HSM_KT_EC, 256,
                                "P-256", 0, U_SIGN | U_AGREE, 0, BIT(HSM_SIGN_ECDSA_SHA_256), 0,
                                ECDH, true},
    [HSM_SPEC_ECC_NIST_P384] = {HSM_SPEC_ECC_NIST_P384, "ECC_NIST_P384", HSM_KT_EC, 384,
                                "P-384", 0, U_SIGN | U_AGREE, 0, BIT(HSM_SIGN_ECDSA_SHA_384), 0,
                                ECDH, true},
    [HSM_SPEC_ECC_NIST_P521] = {HSM_SPEC_ECC_NIST_P521, "ECC_NIST_P521", HSM_KT_EC, 521,
                                "P-521", 0, U_SIGN | U_AGREE, 0, BIT(HSM_SIGN_ECDSA_SHA_512), 0,
                                ECDH, true},
    [HSM_SPEC_ECC_SECG_P256K1] = {HSM_SPEC_ECC_SECG_P256K1, "ECC_SECG_P256K1", HSM_KT_EC, 256,
                                  "secp256k1", 0, U_SIGN, 0, BIT(HSM_SIGN_ECDSA_SHA_256), 0, 0,
                                  true},
    [HSM_SPEC_ECC_NIST_EDWARDS25519] = {HSM_SPEC_ECC_NIST_EDWARDS25519, "ECC_NIST_EDWARDS25519",
                                        HSM_KT_ED25519, 256, NULL, 0, U_SIGN, 0,
                                        BIT(HSM_SIGN_ED25519_SHA_512), 0, 0, true},
    [HSM_SPEC_HMAC_224] = {HSM_SPEC_HMAC_224, "HMAC_224", HSM_KT_HMAC, 224, NULL, 28, U_MAC, 0,
                           0, BIT(HSM_MAC_HMAC_SHA_224), 0, false},
    [HSM_SPEC_HMAC_256] = {HSM_SPEC_HMAC_256, "HMAC_256", HSM_KT_HMAC, 256, NULL, 32, U_MAC, 0,
                           0, BIT(HSM_MAC_HMAC_SHA_256), 0, false},
    [HSM_SPEC_HMAC_384] = {HSM_SPEC_HMAC_384, "HMAC_384", HSM_KT_HMAC, 384, NULL, 48, U_MAC, 0,
                           0, BIT(HSM_MAC_HMAC_SHA_384), 0, false},
    [HSM_SPEC_HMAC_512] = {HSM_SPEC_HMAC_512, "HMAC_512", HSM_KT_HMAC, 512, NULL, 64, U_MAC, 0,
                           0, BIT(HSM_MAC_HMAC_SHA_512), 0, false},
};

static const char *const usage_names[HSM_USAGE_COUNT] = {
    [HSM_USAGE_ENCRYPT_DECRYPT] = "ENCRYPT_DECRYPT",
    [HSM_USAGE_SIGN_VERIFY] = "SIGN_VERIFY",
    [HSM_USAGE_GENERATE_VERIFY_MAC] = "GENERATE_VERIFY_MAC",
    [HSM_USAGE_KEY_AGREEMENT] = "KEY_AGREEMENT",
};

/* KMS API reference, DeriveSharedSecret: "The only valid value is ECDH." */
static const char *const agree_names[HSM_AGREE_COUNT] = {
    [HSM_AGREE_ECDH] = "ECDH",
};

static const char *const enc_names[HSM_ENC_COUNT] = {
    [HSM_ENC_SYMMETRIC_DEFAULT] = "SYMMETRIC_DEFAULT",
    [HSM_ENC_RSAES_OAEP_SHA_1] = "RSAES_OAEP_SHA_1",
    [HSM_ENC_RSAES_OAEP_SHA_256] = "RSAES_OAEP_SHA_256",
};

/* KMS API reference, Sign: "MessageType ... DIGEST" must be the digest's length. */
static const hsm_sign_alg_info sign_algs[HSM_SIGN_COUNT] = {
    [HSM_SIGN_RSASSA_PSS_SHA_256] = {HSM_SIGN_RSASSA_PSS_SHA_256, "RSASSA_PSS_SHA_256",
                                     HSM_SCHEME_RSA_PSS, "SHA256", 32},
    [HSM_SIGN_RSASSA_PSS_SHA_384] = {HSM_SIGN_RSASSA_PSS_SHA_384, "RSASSA_PSS_SHA_384",
                                     HSM_SCHEME_RSA_PSS, "SHA384", 48},
    [HSM_SIGN_RSASSA_PSS_SHA_512] = {HSM_SIGN_RSASSA_PSS_SHA_512, "RSASSA_PSS_SHA_512",
                                     HSM_SCHEME_RSA_PSS, "SHA512", 64},
    [HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_256] = {HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_256,
                                            "RSASSA_PKCS1_V1_5_SHA_256", HSM_SCHEME_RSA_PKCS1,
                                            "SHA256", 32},
    [HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_384] = {HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_384,
                                            "RSASSA_PKCS1_V1_5_SHA_384", HSM_SCHEME_RSA_PKCS1,
                                            "SHA384", 48},
    [HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_512] = {HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_512,
                                            "RSASSA_PKCS1_V1_5_SHA_512", HSM_SCHEME_RSA_PKCS1,
                                            "SHA512", 64},
    [HSM_SIGN_ECDSA_SHA_256] = {HSM_SIGN_ECDSA_SHA_256, "ECDSA_SHA_256", HSM_SCHEME_ECDSA,
                                "SHA256", 32},
    [HSM_SIGN_ECDSA_SHA_384] = {HSM_SIGN_ECDSA_SHA_384, "ECDSA_SHA_384", HSM_SCHEME_ECDSA,
                                "SHA384", 48},
    [HSM_SIGN_ECDSA_SHA_512] = {HSM_SIGN_ECDSA_SHA_512, "ECDSA_SHA_512", HSM_SCHEME_ECDSA,
                                "SHA512", 64},
    [HSM_SIGN_ED25519_SHA_512] = {HSM_SIGN_ED25519_SHA_512, "ED25519_SHA_512", HSM_SCHEME_EDDSA,
                                  "SHA512", 64},
};

static const hsm_mac_alg_info mac_algs[HSM_MAC_COUNT] = {
    [HSM_MAC_HMAC_SHA_224] = {HSM_MAC_HMAC_SHA_224, "HMAC_SHA_224", "SHA224", 28},
    [HSM_MAC_HMAC_SHA_256] = {HSM_MAC_HMAC_SHA_256, "HMAC_SHA_256", "SHA256", 32},
    [HSM_MAC_HMAC_SHA_384] = {HSM_MAC_HMAC_SHA_384, "HMAC_SHA_384", "SHA384", 48},
    [HSM_MAC_HMAC_SHA_512] = {HSM_MAC_HMAC_SHA_512, "HMAC_SHA_512", "SHA512", 64},
};

const hsm_spec_info *hsm_spec_get(hsm_key_spec spec)
{
	HSM_ASSERT((unsigned)spec < HSM_SPEC_COUNT);
	return &specs[spec];
}

const hsm_sign_alg_info *hsm_sign_alg_get(hsm_sign_alg alg)
{
	HSM_ASSERT((unsigned)alg < HSM_SIGN_COUNT);
	return &sign_algs[alg];
}

const hsm_mac_alg_info *hsm_mac_alg_get(hsm_mac_alg alg)
{
	HSM_ASSERT((unsigned)alg < HSM_MAC_COUNT);
	return &mac_algs[alg];
}

const char *hsm_spec_name(hsm_key_spec spec) { return hsm_spec_get(spec)->name; }
const char *hsm_sign_alg_name(hsm_sign_alg alg) { return hsm_sign_alg_get(alg)->name; }
const char *hsm_mac_alg_name(hsm_mac_alg alg) { return hsm_mac_alg_get(alg)->name; }

const char *hsm_usage_name(hsm_key_usage usage)
{
	HSM_ASSERT((unsigned)usage < HSM_USAGE_COUNT);
	return usage_names[usage];
}

const char *hsm_enc_alg_name(hsm_enc_alg alg)
{
	HSM_ASSERT((unsigned)alg < HSM_ENC_COUNT);
	return enc_names[alg];
}

const char *hsm_agree_alg_name(hsm_agree_alg alg)
{
	HSM_ASSERT((unsigned)alg < HSM_AGREE_COUNT);
	return agree_names[alg];
}

/* Names AWS KMS defines that hsmd does not offer: a feature missing, not a malformed request. */
static bool aws_name(const char *name, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/* aws_name over a whole array. */
#define NAMED_IN(name, names) aws_name(name, names, sizeof(names) / sizeof(names[0]))

hsm_result hsm_spec_parse(const char *name, hsm_key_spec *out)
{
	return hsm_spec_parse_member("KeySpec", name, out);
}

hsm_result hsm_spec_parse_member(const char *member, const char *name, hsm_key_spec *out)
{
	/* Each member's own list in AWS's model: KeySpec has them all, DataKeyPairSpec no
	 * ML-DSA (a data key pair is for use outside KMS), the deprecated
	 * CustomerMasterKeySpec only SM2 (it gained no spec since). */
	static const char *const not_offered[] = {"SM2",         "ML_KEM_512", "ML_KEM_768",
	                                          "ML_KEM_1024", "ML_DSA_44",  "ML_DSA_65",
	                                          "ML_DSA_87"};
	size_t n = strcmp(member, "KeyPairSpec") == 0             ? 4
	           : strcmp(member, "CustomerMasterKeySpec") == 0 ? 1
	                                                          : 7;
	for (unsigned i = 0; i < HSM_SPEC_COUNT; i++) {
		if (strcmp(name, specs[i].name) == 0) {
			*out = (hsm_key_spec)i;
			return HSM_SUCCESS;
		}
	}
	HSM_ENSURE(!aws_name(name, not_offered, n), HSM_ERR_UNSUPPORTED_OPERATION,
	           "%s %s is not offered: this build's OpenSSL has no %s keys", member, name,
	           name[0] == 'S' ? "SM2" : name[3] == 'D' ? "ML-DSA" : "ML-KEM");
	return HSM_FAIL(HSM_ERR_VALIDATION, "%s '%.64s' is not supported", member, name);
}

hsm_result hsm_usage_parse(const char *name, hsm_key_usage *out)
{
	static const char *const not_offered[] = {"KEY_ENCAPSULATION"};
	for (unsigned i = 0; i < HSM_USAGE_COUNT; i++) {
		if (strcmp(name, usage_names[i]) == 0) {
			*out = (hsm_key_usage)i;
			return HSM_SUCCESS;
		}
	}
	HSM_ENSURE(!NAMED_IN(name, not_offered), HSM_ERR_UNSUPPORTED_OPERATION,
	           "KeyUsage %s is not offered: it needs ML-KEM keys, which this build's OpenSSL "
	           "does not have",
	           name);
	return HSM_FAIL(HSM_ERR_VALIDATION, "KeyUsage '%.64s' is not supported", name);
}

hsm_result hsm_enc_alg_parse(const char *name, hsm_enc_alg *out)
{
	/* EncryptionAlgorithmSpec names no key here takes (SM2 keys are not offered). */
	static const char *const not_offered[] = {"SM2PKE"};
	for (unsigned i = 0; i < HSM_ENC_COUNT; i++) {
		if (strcmp(name, enc_names[i]) == 0) {
			*out = (hsm_enc_alg)i;
			return HSM_SUCCESS;
		}
	}
	HSM_ENSURE(!NAMED_IN(name, not_offered), HSM_ERR_UNSUPPORTED_OPERATION,
	           "EncryptionAlgorithm %s is not offered: it needs SM2 keys", name);
	return HSM_FAIL(HSM_ERR_VALIDATION, "EncryptionAlgorithm '%.64s' is not supported", name);
}

hsm_result hsm_sign_alg_parse(const char *name, hsm_sign_alg *out)
{
	/* SigningAlgorithmSpec names no key here takes: SM2 and ML-DSA keys are not offered,
	 * and Debian 12's OpenSSL has no Ed25519ph. */
	static const char *const not_offered[] = {"SM2DSA", "ML_DSA_SHAKE_256",
	                                          "ED25519_PH_SHA_512"};
	for (unsigned i = 0; i < HSM_SIGN_COUNT; i++) {
		if (strcmp(name, sign_algs[i].name) == 0) {
			*out = (hsm_sign_alg)i;
			return HSM_SUCCESS;
		}
	}
	HSM_ENSURE(!NAMED_IN(name, not_offered), HSM_ERR_UNSUPPORTED_OPERATION,
	           "SigningAlgorithm %s is not offered by any key here", name);
	return HSM_FAIL(HSM_ERR_VALIDATION, "SigningAlgorithm '%.64s' is not supported", name);
}

hsm_result hsm_mac_alg_parse(const char *name, hsm_mac_alg *out)
{
	for (unsigned i = 0; i < HSM_MAC_COUNT; i++) {
		if (strcmp(name, mac_algs[i].name) == 0) {
			*out = (hsm_mac_alg)i;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "MacAlgorithm '%.64s' is not supported", name);
}

hsm_result hsm_agree_alg_parse(const char *name, hsm_agree_alg *out)
{
	for (unsigned i = 0; i < HSM_AGREE_COUNT; i++) {
		if (strcmp(name, agree_names[i]) == 0) {
			*out = (hsm_agree_alg)i;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "KeyAgreementAlgorithm '%.64s' is not supported", name);
}

bool hsm_spec_allows_usage(hsm_key_spec spec, hsm_key_usage usage)
{
	return (hsm_spec_get(spec)->usages & BIT(usage)) != 0;
}

bool hsm_spec_allows_enc_alg(hsm_key_spec spec, hsm_key_usage usage, hsm_enc_alg alg)
{
	return usage == HSM_USAGE_ENCRYPT_DECRYPT && (hsm_spec_get(spec)->enc_algs & BIT(alg)) != 0;
}

bool hsm_spec_allows_sign_alg(hsm_key_spec spec, hsm_sign_alg alg)
{
	return (hsm_spec_get(spec)->sign_algs & BIT(alg)) != 0;
}

bool hsm_spec_allows_mac_alg(hsm_key_spec spec, hsm_mac_alg alg)
{
	return (hsm_spec_get(spec)->mac_algs & BIT(alg)) != 0;
}

bool hsm_spec_allows_agree_alg(hsm_key_spec spec, hsm_agree_alg alg)
{
	return (hsm_spec_get(spec)->agree_algs & BIT(alg)) != 0;
}

bool hsm_spec_is_asymmetric(hsm_key_spec spec)
{
	hsm_key_type t = hsm_spec_get(spec)->type;
	return t == HSM_KT_RSA || t == HSM_KT_EC || t == HSM_KT_ED25519;
}

size_t hsm_rsa_oaep_max_plaintext(hsm_key_spec spec, hsm_enc_alg alg)
{
	const hsm_spec_info *s = hsm_spec_get(spec);
	if (s->type != HSM_KT_RSA || alg == HSM_ENC_SYMMETRIC_DEFAULT)
		return 0;
	size_t k = s->bits / 8, hlen = alg == HSM_ENC_RSAES_OAEP_SHA_1 ? 20 : 32;
	return k - 2 * hlen - 2;
}
