/*
 * sign.c - Sign / Verify as AWS KMS defines them (API reference, "Sign",
 * "Verify"; Developer Guide, "Key spec reference"):
 *
 *   RSASSA_PSS_*        RFC 8017 section 8.1, MGF1 with the same hash, salt
 *                       length = digest length
 *   RSASSA_PKCS1_V1_5_* RFC 8017 section 8.2 (DigestInfo-wrapped digest)
 *   ECDSA_*             FIPS 186-5, signature as DER Ecdsa-Sig-Value
 *   ED25519_SHA_512     RFC 8032 PureEdDSA over the raw message
 *
 * MessageType RAW hashes the message first; DIGEST takes the digest itself,
 * which must have exactly the algorithm's digest length.  Each call uses its
 * own EVP_PKEY_CTX over the shared, immutable EVP_PKEY, which is what makes
 * concurrent use of one key safe; for a stored key's material it is a copy of
 * a template the material keeps (material.c).
 */
#include <string.h>

#include <openssl/rsa.h>

#include "crypto/crypto_internal.h"

/*
 * RSA needs the digest named: PKCS #1 v1.5 wraps it in a DigestInfo, PSS
 * hashes it again with MGF1.  ECDSA signs the digest's bytes as they are;
 * naming the digest would only have OpenSSL check its length (a lookup by
 * name per signature), and message_digest has checked that already.
 */
static bool configure(EVP_PKEY_CTX *ctx, const hsm_sign_alg_info *info)
{
	const EVP_MD *md = hsm_crypto_md(info->digest);
	if (md == NULL)
		return false;
	switch (info->scheme) {
	case HSM_SCHEME_RSA_PSS:
		return EVP_PKEY_CTX_set_signature_md(ctx, md) > 0 &&
		       EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) > 0 &&
		       EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) > 0 &&
		       EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) > 0;
	case HSM_SCHEME_RSA_PKCS1:
		return EVP_PKEY_CTX_set_signature_md(ctx, md) > 0 &&
		       EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0;
	case HSM_SCHEME_ECDSA:
	case HSM_SCHEME_EDDSA:
		return true;
	}
	return false;
}

/* The digest to sign: computed for RAW, checked and copied for DIGEST. */
static hsm_result message_digest(const hsm_sign_alg_info *info, hsm_message_type type,
                                 const uint8_t *msg, size_t msg_len,
                                 uint8_t dgst[EVP_MAX_MD_SIZE], size_t *dgst_len)
{
	if (type == HSM_MSG_DIGEST) {
		HSM_ENSURE(msg_len == info->digest_len, HSM_ERR_VALIDATION,
		           "with MessageType DIGEST and %s the message must be a %zu-byte digest",
		           info->name, info->digest_len);
		memcpy(dgst, msg, msg_len);
		*dgst_len = msg_len;
		return HSM_SUCCESS;
	}
	unsigned int len = 0;
	HSM_OSSL_ENSURE(EVP_Digest(msg, msg_len, dgst, &len, hsm_crypto_md(info->digest), NULL) == 1,
	                HSM_ERR_CRYPTO, "cannot hash the message");
	*dgst_len = len;
	return HSM_SUCCESS;
}

static hsm_result eddsa_sign(EVP_PKEY *pkey, const uint8_t *msg, size_t msg_len, hsm_buf *out)
{
	hsm_result res = HSM_SUCCESS;
	size_t old = out->len, len = 0;
	uint8_t *p;
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	HSM_OSSL_CHECK(mctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_OSSL_CHECK(EVP_DigestSignInit_ex(mctx, NULL, NULL, NULL, NULL, pkey, NULL) == 1 &&
	                   EVP_DigestSign(mctx, NULL, &len, msg, msg_len) == 1,
	               HSM_ERR_CRYPTO, "cannot set up Ed25519 signing");
	HSM_TRY(hsm_buf_append_space(out, len, &p));
	HSM_OSSL_CHECK(EVP_DigestSign(mctx, p, &len, msg, msg_len) == 1, HSM_ERR_CRYPTO,
	               "Ed25519 signing failed");
	out->len = old + len;
out:
	if (hsm_failed(res))
		out->len = old;
	EVP_MD_CTX_free(mctx);
	return res;
}

static bool eddsa_verify(EVP_PKEY *pkey, const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                         size_t sig_len)
{
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	bool ok = mctx != NULL &&
	          EVP_DigestVerifyInit_ex(mctx, NULL, NULL, NULL, NULL, pkey, NULL) == 1 &&
	          EVP_DigestVerify(mctx, sig, sig_len, msg, msg_len) == 1;
	EVP_MD_CTX_free(mctx);
	return ok;
}

EVP_PKEY_CTX *hsm_sign_ctx_new(EVP_PKEY *pkey, hsm_sign_alg alg, bool sign)
{
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (ctx == NULL)
		return NULL;
	if ((sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) != 1 || !configure(ctx, info)) {
		EVP_PKEY_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static EVP_PKEY_CTX *op_ctx(EVP_PKEY *pkey, const hsm_material *m, hsm_sign_alg alg, bool sign)
{
	return m != NULL ? hsm_material_sign_ctx(m, alg, sign) : hsm_sign_ctx_new(pkey, alg, sign);
}

static hsm_result sign_digest(EVP_PKEY *pkey, const hsm_material *m, hsm_sign_alg alg,
                              const uint8_t *dgst, size_t dgst_len, hsm_buf *out)
{
	hsm_result res = HSM_SUCCESS;
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	size_t old = out->len, len = 0;
	uint8_t *p;
	EVP_PKEY_CTX *ctx = op_ctx(pkey, m, alg, true);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_CRYPTO, "cannot set up %s signing", info->name);
	/* The key's maximum signature size, which EVP_PKEY keeps (asking
	 * EVP_PKEY_sign for it would compute it again). */
	int max = EVP_PKEY_get_size(pkey);
	HSM_CHECK(max > 0, HSM_ERR_CRYPTO, "cannot set up %s signing", info->name);
	len = (size_t)max;
	HSM_TRY(hsm_buf_append_space(out, len, &p));
	/* The length is checked too: OpenSSL 3.0's ECDSA reports success with a
	 * length of (size_t)(unsigned)-1 when encoding the signature runs out of
	 * memory. */
	HSM_OSSL_CHECK(EVP_PKEY_sign(ctx, p, &len, dgst, dgst_len) == 1 && len > 0 &&
	                   len <= (size_t)max,
	               HSM_ERR_CRYPTO, "%s signing failed", info->name);
	out->len = old + len; /* ECDSA signatures may be shorter than the maximum */
out:
	if (hsm_failed(res))
		out->len = old;
	EVP_PKEY_CTX_free(ctx);
	return res;
}

static bool verify_digest(EVP_PKEY *pkey, const hsm_material *m, hsm_sign_alg alg,
                          const uint8_t *dgst, size_t dgst_len, const uint8_t *sig, size_t sig_len)
{
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	/* RFC 8017 sections 8.1.2 and 8.2.2 step 1: an RSA signature is exactly k bytes. */
	if (info->scheme != HSM_SCHEME_ECDSA && (int)sig_len != EVP_PKEY_get_size(pkey))
		return false;
	EVP_PKEY_CTX *ctx = op_ctx(pkey, m, alg, false);
	bool ok = ctx != NULL && EVP_PKEY_verify(ctx, sig, sig_len, dgst, dgst_len) == 1;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

hsm_result hsm_pkey_sign(EVP_PKEY *pkey, hsm_sign_alg alg, hsm_message_type type,
                         const uint8_t *msg, size_t msg_len, hsm_buf *sig_out)
{
	return hsm_key_sign(pkey, NULL, alg, type, msg, msg_len, sig_out);
}

hsm_result hsm_key_sign(EVP_PKEY *pkey, const hsm_material *m, hsm_sign_alg alg,
                        hsm_message_type type, const uint8_t *msg, size_t msg_len,
                        hsm_buf *sig_out)
{
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	HSM_ASSERT(msg != NULL || msg_len == 0);
	if (info->scheme == HSM_SCHEME_EDDSA) {
		HSM_ENSURE(type == HSM_MSG_RAW, HSM_ERR_VALIDATION,
		           "%s signs RAW messages only; MessageType DIGEST is not supported",
		           info->name);
		return eddsa_sign(pkey, msg, msg_len, sig_out);
	}
	uint8_t dgst[EVP_MAX_MD_SIZE];
	size_t dgst_len = 0;
	HSM_GUARD(message_digest(info, type, msg, msg_len, dgst, &dgst_len));
	return sign_digest(pkey, m, alg, dgst, dgst_len, sig_out);
}

hsm_result hsm_pkey_verify(EVP_PKEY *pkey, hsm_sign_alg alg, hsm_message_type type,
                           const uint8_t *msg, size_t msg_len, const uint8_t *sig, size_t sig_len)
{
	return hsm_key_verify(pkey, NULL, alg, type, msg, msg_len, sig, sig_len);
}

hsm_result hsm_key_verify(EVP_PKEY *pkey, const hsm_material *m, hsm_sign_alg alg,
                          hsm_message_type type, const uint8_t *msg, size_t msg_len,
                          const uint8_t *sig, size_t sig_len)
{
	const hsm_sign_alg_info *info = hsm_sign_alg_get(alg);
	HSM_ASSERT(msg != NULL || msg_len == 0);
	bool ok;
	if (info->scheme == HSM_SCHEME_EDDSA) {
		HSM_ENSURE(type == HSM_MSG_RAW, HSM_ERR_VALIDATION,
		           "%s verifies RAW messages only; MessageType DIGEST is not supported",
		           info->name);
		ok = sig != NULL && eddsa_verify(pkey, msg, msg_len, sig, sig_len);
	} else {
		uint8_t dgst[EVP_MAX_MD_SIZE];
		size_t dgst_len = 0;
		HSM_GUARD(message_digest(info, type, msg, msg_len, dgst, &dgst_len));
		ok = sig != NULL && verify_digest(pkey, m, alg, dgst, dgst_len, sig, sig_len);
	}
	HSM_OSSL_ENSURE(ok, HSM_ERR_INVALID_SIGNATURE, "the signature is not valid");
	return HSM_SUCCESS;
}

static hsm_result check_alg(hsm_key_spec spec, hsm_sign_alg alg)
{
	HSM_ENSURE(hsm_spec_allows_sign_alg(spec, alg), HSM_ERR_INVALID_KEY_USAGE,
	           "SigningAlgorithm %s is not valid for KeySpec %s", hsm_sign_alg_name(alg),
	           hsm_spec_name(spec));
	return HSM_SUCCESS;
}

hsm_result hsm_sign(const hsm_material *m, hsm_sign_alg alg, hsm_message_type type,
                    const uint8_t *msg, size_t msg_len, hsm_buf *sig_out)
{
	HSM_GUARD(check_alg(hsm_material_spec(m), alg));
	return hsm_key_sign(hsm_material_pkey(m), m, alg, type, msg, msg_len, sig_out);
}

hsm_result hsm_verify(const hsm_material *m, hsm_sign_alg alg, hsm_message_type type,
                      const uint8_t *msg, size_t msg_len, const uint8_t *sig, size_t sig_len)
{
	HSM_GUARD(check_alg(hsm_material_spec(m), alg));
	return hsm_key_verify(hsm_material_pkey(m), m, alg, type, msg, msg_len, sig, sig_len);
}

hsm_result hsm_verify_pub(const uint8_t *spki, size_t spki_len, hsm_sign_alg alg,
                          hsm_message_type type, const uint8_t *msg, size_t msg_len,
                          const uint8_t *sig, size_t sig_len)
{
	EVP_PKEY *pkey = NULL;
	hsm_key_spec spec;
	HSM_GUARD(hsm_spki_parse(spki, spki_len, &pkey));
	hsm_result res = hsm_pkey_spec(pkey, &spec);
	if (hsm_ok(res))
		res = check_alg(spec, alg);
	if (hsm_ok(res))
		res = hsm_pkey_verify(pkey, alg, type, msg, msg_len, sig, sig_len);
	EVP_PKEY_free(pkey);
	return res;
}
