/*
 * material.c - key material: generation, PKCS#8 export/import, public keys,
 * pairwise consistency tests.
 *
 * A material is immutable once made, so any number of threads may use it at
 * once: AES and HMAC keys sit in an hsm_secret (secure heap); asymmetric keys
 * are an EVP_PKEY, which OpenSSL 3 allows to be shared as long as each
 * operation has its own EVP_PKEY_CTX.  Lifetime is a C11 atomic refcount.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/encoder.h>
#include <openssl/x509.h>

#include "crypto/crypto_internal.h"

/* An RSA-4096 PrivateKeyInfo with CRT values is about 2.4 KB. */
#define PKCS8_MAX 16384

struct hsm_material {
	atomic_uint refs;
	hsm_key_spec spec;
	hsm_secret *secret; /* AES and HMAC */
	EVP_PKEY *pkey;     /* RSA, EC, Ed25519 */
	/* Set-up verifying [0] and signing [1] contexts per algorithm, made on
	 * first use (hsm_material_sign_ctx), only ever copied from; asymmetric
	 * keys only.  A cache, so it may be filled through a const material. */
	struct sign_tmpl {
		_Atomic(EVP_PKEY_CTX *) t[2][HSM_SIGN_COUNT];
	} *tmpl;
};

static const uint8_t pairwise_msg[] = "hsmd pairwise consistency test";

/* Takes ownership of secret and pkey, also on failure. */
static hsm_result material_new(hsm_key_spec spec, hsm_secret *secret, EVP_PKEY *pkey,
                               hsm_material **out)
{
	hsm_material *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		hsm_secret_free(secret);
		EVP_PKEY_free(pkey);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	if (pkey != NULL) {
		m->tmpl = calloc(1, sizeof(*m->tmpl));
		if (m->tmpl == NULL) {
			free(m);
			hsm_secret_free(secret);
			EVP_PKEY_free(pkey);
			return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
		}
	}
	atomic_init(&m->refs, 1);
	m->spec = spec;
	m->secret = secret;
	m->pkey = pkey;
	*out = m;
	return HSM_SUCCESS;
}

hsm_material *hsm_material_ref(hsm_material *m)
{
	HSM_ASSERT(m != NULL);
	atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}

void hsm_material_free(hsm_material *m)
{
	if (m == NULL)
		return;
	/* acq_rel: every use by other holders happens before the free below. */
	if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
		return;
	hsm_secret_free(m->secret);
	for (size_t i = 0; m->tmpl != NULL && i < 2; i++)
		for (size_t a = 0; a < HSM_SIGN_COUNT; a++)
			EVP_PKEY_CTX_free(atomic_load_explicit(&m->tmpl->t[i][a], memory_order_acquire));
	free(m->tmpl);
	EVP_PKEY_free(m->pkey); /* OpenSSL clears private key components on free */
	free(m);
}

EVP_PKEY_CTX *hsm_material_sign_ctx(const hsm_material *m, hsm_sign_alg alg, bool sign)
{
	HSM_ASSERT(m->tmpl != NULL && (unsigned)alg < HSM_SIGN_COUNT);
	/* Set once, under a compare-and-swap. */
	_Atomic(EVP_PKEY_CTX *) *slot = &m->tmpl->t[sign][alg];
	EVP_PKEY_CTX *t = atomic_load_explicit(slot, memory_order_acquire);
	if (t == NULL) {
		EVP_PKEY_CTX *made = hsm_sign_ctx_new(m->pkey, alg, sign);
		if (made == NULL)
			return NULL;
		if (atomic_compare_exchange_strong_explicit(slot, &t, made, memory_order_acq_rel,
		                                            memory_order_acquire)) {
			t = made;
		} else {
			EVP_PKEY_CTX_free(made); /* another thread's came first: t is it */
		}
	}
	/* Copying reads the template and takes references (atomic counts): safe
	 * from any number of threads at once, as the shared EVP_PKEY is. */
	return EVP_PKEY_CTX_dup(t);
}

hsm_key_spec hsm_material_spec(const hsm_material *m) { return m->spec; }
EVP_PKEY *hsm_material_pkey(const hsm_material *m) { return m->pkey; }
const hsm_secret *hsm_material_secret(const hsm_material *m) { return m->secret; }

/* ---- key check values --------------------------------------------------------- */

static hsm_result zero_block_kcv(const hsm_secret *key, uint8_t kcv[HSM_KCV_LEN])
{
	static const uint8_t zero[16];
	uint8_t block[sizeof(zero) * 2];
	hsm_result res = HSM_SUCCESS;
	int n = 0;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_OSSL_CHECK(EVP_EncryptInit_ex2(ctx, hsm_crypto_algs()->aes_256_ecb,
	                                   hsm_secret_bytes(key), NULL, NULL) == 1 &&
	                   EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
	                   EVP_EncryptUpdate(ctx, block, &n, zero, (int)sizeof(zero)) == 1 &&
	                   n == (int)sizeof(zero),
	               HSM_ERR_CRYPTO, "cannot compute the key check value");
	memcpy(kcv, block, HSM_KCV_LEN);
out:
	EVP_CIPHER_CTX_free(ctx); /* clears the key schedule */
	return res;
}

const char *hsm_kcv_alg_name(hsm_kcv_alg alg)
{
	return alg == HSM_KCV_ZERO_BLOCK ? "AES_ZERO_BLOCK" : "SHA_1";
}

hsm_result hsm_material_check_value(const hsm_material *m, uint8_t kcv[HSM_KCV_LEN],
                                    hsm_kcv_alg *alg)
{
	HSM_ENSURE(m->secret != NULL, HSM_ERR_UNSUPPORTED_OPERATION,
	           "an asymmetric key has no key check value");
	if (m->spec == HSM_SPEC_SYMMETRIC_DEFAULT) {
		*alg = HSM_KCV_ZERO_BLOCK;
		return zero_block_kcv(m->secret, kcv);
	}
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	*alg = HSM_KCV_SHA1;
	HSM_ENSURE(EVP_Digest(hsm_secret_bytes(m->secret), hsm_secret_len(m->secret), md, &len,
	                      hsm_crypto_algs()->sha1, NULL) == 1 &&
	               len >= HSM_KCV_LEN,
	           HSM_ERR_CRYPTO, "cannot compute the key check value");
	memcpy(kcv, md, HSM_KCV_LEN);
	return HSM_SUCCESS;
}

/* ---- pairwise consistency ------------------------------------------------- */

static hsm_result pairwise_sign(const hsm_material *m)
{
	const hsm_spec_info *s = hsm_spec_get(m->spec);
	hsm_sign_alg alg = HSM_SIGN_COUNT;
	for (unsigned i = 0; i < HSM_SIGN_COUNT && alg == HSM_SIGN_COUNT; i++)
		if (s->sign_algs & (1U << i))
			alg = (hsm_sign_alg)i;
	HSM_ASSERT(alg != HSM_SIGN_COUNT);
	hsm_buf sig = {0};
	hsm_result res = hsm_pkey_sign(m->pkey, alg, HSM_MSG_RAW, pairwise_msg,
	                               sizeof(pairwise_msg), &sig);
	if (hsm_ok(res))
		res = hsm_pkey_verify(m->pkey, alg, HSM_MSG_RAW, pairwise_msg, sizeof(pairwise_msg),
		                      sig.data, sig.len);
	hsm_buf_free(&sig);
	if (res.err == HSM_ERR_NOMEM) /* no verdict on the key */
		return res;
	if (hsm_failed(res))
		return HSM_FAIL(HSM_ERR_CRYPTO, "pairwise consistency test (sign/verify) failed for %s",
		                s->name);
	return HSM_SUCCESS;
}

static hsm_result pairwise_encrypt(const hsm_material *m)
{
	hsm_buf ct = {0}, pt;
	hsm_buf_init_secure(&pt);
	hsm_result res = hsm_pkey_oaep_encrypt(m->pkey, m->spec, HSM_ENC_RSAES_OAEP_SHA_256,
	                                       pairwise_msg, sizeof(pairwise_msg), &ct);
	if (hsm_ok(res))
		res = hsm_rsa_oaep_decrypt(m, HSM_ENC_RSAES_OAEP_SHA_256, ct.data, ct.len, &pt);
	bool same = hsm_ok(res) && pt.len == sizeof(pairwise_msg) &&
	            hsm_ct_equal(pt.data, pairwise_msg, sizeof(pairwise_msg));
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
	if (res.err == HSM_ERR_NOMEM) /* no verdict on the key */
		return res;
	if (!same)
		return HSM_FAIL(HSM_ERR_CRYPTO,
		                "pairwise consistency test (encrypt/decrypt) failed for %s",
		                hsm_spec_name(m->spec));
	return HSM_SUCCESS;
}

static hsm_result generate_pkey(const hsm_spec_info *s, EVP_PKEY **out);

/*
 * ECDH with an ephemeral key pair on the same curve, computed from both
 * sides (d*E and e*Q), must agree.  The shared point is d*e*G either way
 * only if Q = d*G, which is what SP 800-56A rev. 3 section 5.6.2.1.4 asks
 * the owner of a key agreement key pair to be assured of.
 */
static hsm_result pairwise_agree(const hsm_material *m)
{
	const hsm_spec_info *s = hsm_spec_get(m->spec);
	size_t n = hsm_ec_field_len(m->spec);
	EVP_PKEY *eph = NULL;
	hsm_buf ours, theirs;
	hsm_buf_init_secure(&ours);
	hsm_buf_init_secure(&theirs);
	hsm_result res = generate_pkey(s, &eph);
	if (hsm_ok(res))
		res = hsm_pkey_derive(m->pkey, eph, n, &ours);
	if (hsm_ok(res))
		res = hsm_pkey_derive(eph, m->pkey, n, &theirs);
	bool same = hsm_ok(res) && ours.len == n && theirs.len == n &&
	            hsm_ct_equal(ours.data, theirs.data, n);
	EVP_PKEY_free(eph);
	hsm_buf_free(&ours);
	hsm_buf_free(&theirs);
	if (res.err == HSM_ERR_NOMEM) /* no verdict on the key */
		return res;
	if (!same)
		return HSM_FAIL(HSM_ERR_CRYPTO,
		                "pairwise consistency test (key agreement) failed for %s", s->name);
	return HSM_SUCCESS;
}

hsm_result hsm_material_pairwise_test(const hsm_material *m, hsm_key_usage usage)
{
	HSM_ENSURE(hsm_spec_allows_usage(m->spec, usage), HSM_ERR_INVALID_KEY_USAGE,
	           "KeyUsage %s is not valid for KeySpec %s", hsm_usage_name(usage),
	           hsm_spec_name(m->spec));
	if (m->pkey == NULL)
		return HSM_SUCCESS; /* IG 10.3.A concerns key pairs only */
	if (usage == HSM_USAGE_ENCRYPT_DECRYPT)
		return pairwise_encrypt(m);
	if (usage == HSM_USAGE_KEY_AGREEMENT)
		return pairwise_agree(m);
	return pairwise_sign(m);
}

/*
 * Every usage the spec allows: a new or imported key may serve any of them.
 * pair_checked: the key already passed OpenSSL's Q = d*G check (imported EC
 * keys), which is the assurance SP 800-56A rev. 3 section 5.6.2.1.4 asks of a
 * key agreement key pair, so the ECDH test would add only its cost (a
 * fifth of an imported P-256 key's) on every key-cache miss.
 */
static hsm_result pairwise_all(const hsm_material *m, bool pair_checked)
{
	for (unsigned u = 0; u < HSM_USAGE_COUNT; u++) {
		if (pair_checked && u == HSM_USAGE_KEY_AGREEMENT)
			continue;
		if (hsm_spec_allows_usage(m->spec, (hsm_key_usage)u))
			HSM_GUARD(hsm_material_pairwise_test(m, (hsm_key_usage)u));
	}
	return HSM_SUCCESS;
}

/* ---- generation ------------------------------------------------------------ */

static hsm_result generate_pkey(const hsm_spec_info *s, EVP_PKEY **out)
{
	hsm_result res = HSM_SUCCESS;
	const char *type = s->type == HSM_KT_RSA ? "RSA" : s->type == HSM_KT_EC ? "EC" : "ED25519";
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	HSM_OSSL_CHECK(ctx != NULL && EVP_PKEY_keygen_init(ctx) == 1, HSM_ERR_CRYPTO,
	               "cannot set up %s key generation", s->name);
	/* RSA keeps OpenSSL's default public exponent, 65537, as KMS does. */
	if (s->type == HSM_KT_RSA)
		HSM_OSSL_CHECK(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)s->bits) == 1,
		               HSM_ERR_CRYPTO, "cannot set the RSA modulus size");
	if (s->type == HSM_KT_EC)
		HSM_OSSL_CHECK(EVP_PKEY_CTX_set_group_name(ctx, s->group) == 1, HSM_ERR_CRYPTO,
		               "cannot select curve %s", s->group);
	HSM_OSSL_CHECK(EVP_PKEY_generate(ctx, &pkey) == 1, HSM_ERR_CRYPTO,
	               "%s key generation failed", s->name);
	*out = pkey;
out:
	EVP_PKEY_CTX_free(ctx);
	return res;
}

hsm_result hsm_material_generate(hsm_key_spec spec, hsm_material **out)
{
	const hsm_spec_info *s = hsm_spec_get(spec);
	hsm_material *m = NULL;
	if (s->type == HSM_KT_AES || s->type == HSM_KT_HMAC) {
		hsm_secret *secret;
		HSM_GUARD(hsm_secret_random(s->secret_len, &secret));
		HSM_GUARD(material_new(spec, secret, NULL, &m));
	} else {
		EVP_PKEY *pkey = NULL;
		HSM_GUARD(generate_pkey(s, &pkey));
		HSM_GUARD(material_new(spec, NULL, pkey, &m));
		hsm_result res = pairwise_all(m, false);
		if (hsm_failed(res)) {
			hsm_material_free(m);
			return res;
		}
	}
	*out = m;
	return HSM_SUCCESS;
}

/* ---- export ----------------------------------------------------------------- */

hsm_result hsm_material_export(const hsm_material *m, hsm_buf *out)
{
	HSM_ASSERT(out->secure);
	if (m->secret != NULL)
		return hsm_buf_put(out, hsm_secret_bytes(m->secret), hsm_secret_len(m->secret));

	hsm_result res = HSM_SUCCESS;
	unsigned char *der = NULL;
	size_t der_len = 0;
	OSSL_ENCODER_CTX *ectx = OSSL_ENCODER_CTX_new_for_pkey(m->pkey, EVP_PKEY_KEYPAIR, "DER",
	                                                       "PrivateKeyInfo", NULL);
	HSM_OSSL_CHECK(ectx != NULL && OSSL_ENCODER_CTX_get_num_encoders(ectx) > 0, HSM_ERR_CRYPTO,
	               "no PKCS#8 encoder for %s", hsm_spec_name(m->spec));
	HSM_OSSL_CHECK(OSSL_ENCODER_to_data(ectx, &der, &der_len) == 1, HSM_ERR_CRYPTO,
	               "cannot encode the %s key as PKCS#8", hsm_spec_name(m->spec));
	HSM_TRY(hsm_buf_put(out, der, der_len));
out:
	OPENSSL_clear_free(der, der_len);
	OSSL_ENCODER_CTX_free(ectx);
	return res;
}

hsm_result hsm_material_public_der(const hsm_material *m, hsm_buf *out)
{
	HSM_ENSURE(m->pkey != NULL, HSM_ERR_UNSUPPORTED_OPERATION,
	           "KeySpec %s has no public key", hsm_spec_name(m->spec));
	int len = i2d_PUBKEY(m->pkey, NULL);
	HSM_OSSL_ENSURE(len > 0, HSM_ERR_CRYPTO, "cannot encode the public key");
	uint8_t *p;
	size_t old = out->len;
	HSM_GUARD(hsm_buf_append_space(out, (size_t)len, &p));
	if (i2d_PUBKEY(m->pkey, &p) != len) {
		out->len = old;
		return HSM_OSSL_FAIL(HSM_ERR_CRYPTO, "cannot encode the public key");
	}
	return HSM_SUCCESS;
}

/* ---- import ----------------------------------------------------------------- */

static hsm_result decode_pkcs8(const uint8_t *p, size_t n, EVP_PKEY **out)
{
	hsm_result res = HSM_SUCCESS;
	EVP_PKEY *pkey = NULL;
	const unsigned char *data = p;
	size_t left = n;
	/* The decoder tries several key types and leaves errors behind even when one
	 * succeeds; they are dropped, but one that says memory ran out is heeded,
	 * even when a key came out: OpenSSL 3.0 can return an EC key whose public
	 * point it could not compute. */
	hsm_ossl_watch();
	/* The decoder asked for PrivateKeyInfo also takes a bare SEC1 ECPrivateKey or
	 * PKCS#1 RSAPrivateKey: the outer structure is checked first, as KMS does. */
	const unsigned char *outer = p;
	PKCS8_PRIV_KEY_INFO *info = d2i_PKCS8_PRIV_KEY_INFO(NULL, &outer, (long)n);
	bool is_pkcs8 = info != NULL;
	PKCS8_PRIV_KEY_INFO_free(info);
	OSSL_DECODER_CTX *dctx = NULL;
	bool decoded = false;
	if (is_pkcs8) {
		dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "DER", "PrivateKeyInfo", NULL,
		                                     EVP_PKEY_KEYPAIR, NULL, NULL);
		decoded = dctx != NULL && OSSL_DECODER_from_data(dctx, &data, &left) == 1 && pkey != NULL;
	}
	bool nomem = hsm_ossl_ran_out();
	HSM_CHECK(!nomem, HSM_ERR_NOMEM, "out of memory in the crypto library");
	HSM_CHECK(!is_pkcs8 || dctx != NULL, HSM_ERR_CRYPTO, "no PKCS#8 decoder available");
	HSM_CHECK(decoded, HSM_ERR_VALIDATION, "the key material is not a DER PKCS#8 private key");
	HSM_CHECK(left == 0, HSM_ERR_VALIDATION, "the key material has trailing bytes");
	*out = pkey;
	pkey = NULL;
out:
	EVP_PKEY_free(pkey);
	OSSL_DECODER_CTX_free(dctx);
	return res;
}

/* FIPS 186-5 appendix A.1.1: the public exponent is odd and 2^16 < e < 2^256. */
static hsm_result check_rsa_exponent(const EVP_PKEY *pkey)
{
	BIGNUM *e = NULL;
	HSM_OSSL_ENSURE(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) == 1,
	                HSM_ERR_VALIDATION, "the RSA key has no public exponent");
	int bits = BN_num_bits(e);
	bool ok = BN_is_odd(e) && bits >= 17 && bits <= 256;
	BN_free(e);
	HSM_ENSURE(ok, HSM_ERR_VALIDATION,
	           "the RSA public exponent must be odd and between 2^16 and 2^256");
	return HSM_SUCCESS;
}

/*
 * The decoder keeps the point form of the PKCS#8's public key (compressed or
 * hybrid, X9.62 4.3.6); hsmd encodes EC public keys uncompressed, as KMS's
 * GetPublicKey does (RFC 5480 2.2: the form implementations must support),
 * whatever form an importer's tool wrote.  The public key also identifies
 * imported material: one key must have one encoding.
 */
static hsm_result ec_uncompressed(EVP_PKEY *pkey)
{
	HSM_OSSL_ENSURE(EVP_PKEY_set_utf8_string_param(
	                    pkey, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
	                    OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) == 1,
	                HSM_ERR_CRYPTO, "cannot set the EC key's point form");
	return HSM_SUCCESS;
}

/*
 * EC keys: the encoded public point must be the private scalar times G
 * (OpenSSL's pairwise check, one point multiplication).  RSA keys skip it:
 * OpenSSL 3.0 runs the full SP 800-56B key-pair validation there, primality
 * tests included (about 50 ms for RSA-2048, on every key-cache miss); the
 * sign/verify and encrypt/decrypt tests that follow prove d inverts e mod n,
 * and OpenSSL checks each CRT result before releasing it.
 */
static hsm_result check_key_pair(EVP_PKEY *pkey)
{
	if (!EVP_PKEY_is_a(pkey, "EC"))
		return HSM_SUCCESS;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	HSM_OSSL_ENSURE(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	int rc = EVP_PKEY_pairwise_check(ctx);
	EVP_PKEY_CTX_free(ctx);
	HSM_OSSL_ENSURE(rc == 1, HSM_ERR_VALIDATION,
	                "the private and public halves of the key do not match");
	return HSM_SUCCESS;
}

hsm_result hsm_material_check_private(const hsm_material *m)
{
	if (m->pkey == NULL || !EVP_PKEY_is_a(m->pkey, "RSA"))
		return HSM_SUCCESS;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, m->pkey, NULL);
	HSM_OSSL_ENSURE(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_ossl_watch();
	int rc = EVP_PKEY_check(ctx);
	EVP_PKEY_CTX_free(ctx);
	HSM_OSSL_ENSURE(rc == 1, HSM_ERR_VALIDATION,
	                "its private values do not fit together (p and q must be primes whose "
	                "product is the modulus; d, dP, dQ and qInv must fit them and e)");
	return HSM_SUCCESS;
}

static hsm_result import_pkey(hsm_key_spec spec, const uint8_t *p, size_t n, hsm_material **out)
{
	hsm_result res = HSM_SUCCESS;
	EVP_PKEY *pkey = NULL;
	hsm_material *m = NULL;
	hsm_key_spec actual;
	HSM_CHECK(n > 0 && n <= PKCS8_MAX, HSM_ERR_VALIDATION,
	          "the key material must be a DER PKCS#8 private key of at most %d bytes", PKCS8_MAX);
	HSM_TRY(decode_pkcs8(p, n, &pkey));
	HSM_TRY(hsm_pkey_spec(pkey, &actual));
	HSM_CHECK(actual == spec, HSM_ERR_VALIDATION, "the key material is a %s key, not %s",
	          hsm_spec_name(actual), hsm_spec_name(spec));
	if (hsm_spec_get(spec)->type == HSM_KT_RSA)
		HSM_TRY(check_rsa_exponent(pkey));
	if (hsm_spec_get(spec)->type == HSM_KT_EC)
		HSM_TRY(ec_uncompressed(pkey));
	HSM_TRY(check_key_pair(pkey));
	res = material_new(spec, NULL, pkey, &m);
	pkey = NULL; /* owned by m, or already freed by material_new's failure */
	if (hsm_failed(res))
		goto out;
	res = pairwise_all(m, hsm_spec_get(spec)->type == HSM_KT_EC); /* check_key_pair ran */
	if (hsm_failed(res)) {
		if (res.err != HSM_ERR_NOMEM) /* out of memory is not the material's fault */
			res = HSM_FAIL(HSM_ERR_VALIDATION, "the key material fails its pairwise test");
		goto out;
	}
	*out = m;
	m = NULL;
out:
	EVP_PKEY_free(pkey);
	hsm_material_free(m);
	return res;
}

hsm_result hsm_material_import(hsm_key_spec spec, const uint8_t *p, size_t n, hsm_material **out)
{
	const hsm_spec_info *s = hsm_spec_get(spec);
	if (s->type == HSM_KT_HMAC) {
		/* From the digest length to the hash's block size, as KMS takes imported HMAC keys. */
		size_t max = s->secret_len <= 32 ? 64 : 128;
		HSM_ENSURE(n >= s->secret_len && n <= max, HSM_ERR_VALIDATION,
		           "%s key material must be %zu to %zu bytes", s->name, s->secret_len, max);
		hsm_secret *secret;
		HSM_GUARD(hsm_secret_from(p, n, &secret));
		return material_new(spec, secret, NULL, out);
	}
	if (s->type == HSM_KT_AES) {
		HSM_ENSURE(n == s->secret_len, HSM_ERR_VALIDATION,
		           "%s key material must be %zu bytes", s->name, s->secret_len);
		hsm_secret *secret;
		HSM_GUARD(hsm_secret_from(p, n, &secret));
		return material_new(spec, secret, NULL, out);
	}
	return import_pkey(spec, p, n, out);
}
