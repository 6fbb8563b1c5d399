/*
 * kms_import_test.c - keys with imported material in the KMS layer:
 * CreateKey with Origin EXTERNAL, GetParametersForImport, ImportKeyMaterial
 * with each wrapping algorithm and key type, tokens of other keys and expired
 * ones, other material, DeleteImportedKeyMaterial, expiry by the scheduler,
 * the key-state rules, new material and rotation to it, deletion, roles and
 * policy conditions.  The
 * material is wrapped here with OpenSSL directly, as an importer would.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "crypto/blob.h"
#include "kms/kms.h"
#include "support/kms_fixture.h"

typedef kms_fx fx;

#define NOW 1800000000LL
#define DAY 86400

static const hsm_caller officer = {.user = "olivia", .access_key_id = "AKIAOLIVIA0000000000",
                                   .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER)};
static const hsm_caller user = {.user = "ursula", .access_key_id = "AKIAURSULA0000000000",
                                .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER)};

static uint32_t ver; /* the version a material went to, where a test does not look */

static int setup(void **state)
{
	return kms_fx_setup(state, NULL, NOW);
}

static void create(fx *f, hsm_key_spec spec, hsm_key_usage usage, hsm_key_origin origin,
                   hsm_key_record *out)
{
	hsm_create_key_req req = {.spec = spec, .usage = usage, .origin = origin};
	memset(out, 0, sizeof(out[0]));
	assert_true(hsm_ok(hsm_kms_create_key(f->kms, &officer, &req, out)));
}

static hsm_key_state state_of(fx *f, const char *key)
{
	hsm_key_record r;
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, key, &r)));
	hsm_key_state s = r.state;
	hsm_key_record_clear(&r);
	return s;
}

/* RSA-OAEP with the wrapping key, MGF1 with the same hash, empty label. */
static void oaep(const hsm_buf *spki, const EVP_MD *md, const uint8_t *pt, size_t n, hsm_buf *out)
{
	const unsigned char *p = spki->data;
	EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spki->len);
	assert_non_null(pub);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
	assert_int_equal(EVP_PKEY_encrypt_init(ctx), 1);
	assert_true(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0);
	assert_true(EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) > 0);
	assert_true(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) > 0);
	size_t len = 0;
	assert_int_equal(EVP_PKEY_encrypt(ctx, NULL, &len, pt, n), 1);
	uint8_t *dst;
	assert_true(hsm_ok(hsm_buf_append_space(out, len, &dst)));
	assert_int_equal(EVP_PKEY_encrypt(ctx, dst, &len, pt, n), 1);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pub);
}

/* RSA_AES_KEY_WRAP_*: OAEP(fresh AES-256 key) || AES-KWP(material) under it. */
static void key_wrap(const hsm_buf *spki, const EVP_MD *md, const uint8_t *pt, size_t n,
                     hsm_buf *out)
{
	uint8_t aes[32];
	assert_int_equal(RAND_bytes(aes, sizeof(aes)), 1);
	oaep(spki, md, aes, sizeof(aes), out);
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_wrap_pad(), NULL, aes, NULL), 1);
	uint8_t *dst;
	int len = 0;
	assert_true(hsm_ok(hsm_buf_append_space(out, n + 16, &dst)));
	assert_int_equal(EVP_EncryptUpdate(c, dst, &len, pt, (int)n), 1);
	out->len -= n + 16 - (size_t)len;
	EVP_CIPHER_CTX_free(c);
}

typedef struct params {
	hsm_import_params p;
	hsm_buf enc;
} params;

/* GetParametersForImport, then the material encrypted under its public key. */
static void wrap_for(fx *f, const char *key, const char *alg, const char *spec, const uint8_t *pt,
                     size_t n, params *out)
{
	memset(out, 0, sizeof(*out));
	assert_true(hsm_ok(hsm_kms_get_import_params(f->kms, &officer, key, alg, spec, &out->p)));
	const EVP_MD *md = strstr(alg, "SHA_256") != NULL ? EVP_sha256() : EVP_sha1();
	if (strncmp(alg, "RSAES_OAEP", 10) == 0)
		oaep(&out->p.public_der, md, pt, n, &out->enc);
	else
		key_wrap(&out->p.public_der, md, pt, n, &out->enc);
}

static void params_clear(params *p)
{
	hsm_import_params_clear(&p->p);
	hsm_buf_free(&p->enc);
}

static hsm_result import(fx *f, const char *key, const params *p, const char *model,
                         int64_t valid_to, hsm_key_record *after)
{
	hsm_import_req req = {.key = key,
	                      .token = p->p.token.data,
	                      .token_len = p->p.token.len,
	                      .encrypted = p->enc.data,
	                      .encrypted_len = p->enc.len,
	                      .expiration_model = model,
	                      .has_valid_to = valid_to != 0,
	                      .valid_to = valid_to};
	memset(after, 0, sizeof(*after));
	uint32_t version;
	return hsm_kms_import_material(f->kms, &officer, &req, after, &version);
}

/* Imports pt into key with alg, material that does not expire; the key after in *after. */
static hsm_result import_with(fx *f, const char *key, const char *alg, const uint8_t *pt,
                              size_t n, hsm_key_record *after)
{
	params p;
	wrap_for(f, key, alg, "RSA_2048", pt, n, &p);
	hsm_result r = import(f, key, &p, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, after);
	params_clear(&p);
	return r;
}

static void encrypt(fx *f, const char *key, hsm_buf *ct)
{
	hsm_encrypt_req req = {.key = key, .plaintext = (const uint8_t *)"secret", .plaintext_len = 6};
	hsm_used_key used;
	hsm_buf_clear(ct);
	assert_true(hsm_ok(hsm_kms_encrypt(f->kms, &user, &req, ct, &used)));
}

static hsm_result decrypt(fx *f, const hsm_buf *ct)
{
	hsm_decrypt_req req = {.ciphertext = ct->data, .ciphertext_len = ct->len};
	hsm_buf pt;
	hsm_buf_init_secure(&pt);
	hsm_used_key used;
	hsm_enc_alg alg;
	hsm_result r = hsm_kms_decrypt(f->kms, &user, &req, &pt, &used, &alg);
	if (hsm_ok(r)) {
		assert_int_equal(pt.len, 6);
		assert_memory_equal(pt.data, "secret", 6);
	}
	hsm_buf_free(&pt);
	return r;
}

/* An EXTERNAL key starts PendingImport and serves nothing until its material comes. */
static void test_external_key_waits_for_material(void **state)
{
	fx *f = *state;
	hsm_key_record k, d, after;
	hsm_buf ct = {0};
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &k);
	assert_int_equal(k.state, HSM_KEY_PENDING_IMPORT);
	assert_int_equal(k.origin, HSM_ORIGIN_EXTERNAL);
	assert_int_equal(k.valid_to, 0);
	assert_string_equal(hsm_key_state_name(k.state), "PendingImport");
	hsm_encrypt_req req = {.key = k.key_id, .plaintext = (const uint8_t *)"x", .plaintext_len = 1};
	hsm_used_key used;
	assert_int_equal(hsm_kms_encrypt(f->kms, &user, &req, &ct, &used).err, HSM_ERR_INVALID_STATE);
	assert_non_null(strstr(hsm_last_message(), "pending import"));
	assert_int_equal(hsm_kms_enable_key(f->kms, &officer, k.key_id).err, HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_disable_key(f->kms, &officer, k.key_id).err, HSM_ERR_INVALID_STATE);
	/* What KMS's key state table says for CancelKeyDeletion outside PendingDeletion. */
	assert_int_equal(hsm_kms_cancel_deletion(f->kms, &officer, k.key_id, &after).err,
	                 HSM_ERR_INVALID_STATE);
	assert_non_null(strstr(hsm_last_message(), "is not pending deletion"));
	/* No material to delete: success without effect, as in KMS's key state table. */
	ver = 99;
	assert_true(hsm_ok(hsm_kms_delete_material(f->kms, &officer, k.key_id, NULL, &after, &ver)));
	assert_int_equal(ver, 0);
	assert_int_equal(after.state, HSM_KEY_PENDING_IMPORT);
	hsm_key_record_clear(&after);
	/* Metadata changes are allowed. */
	assert_true(hsm_ok(hsm_kms_update_description(f->kms, &officer, k.key_id, "for import")));
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/imported", k.key_id)));
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, "alias/imported", &d)));
	assert_int_equal(d.state, HSM_KEY_PENDING_IMPORT);
	hsm_key_record_clear(&d);
	/* A key of hsmd's own material takes no import. */
	hsm_key_record own;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_AWS_KMS, &own);
	hsm_import_params p;
	memset(&p, 0, sizeof(p));
	assert_int_equal(hsm_kms_get_import_params(f->kms, &officer, own.key_id, "RSAES_OAEP_SHA_256",
	                                           "RSA_2048", &p)
	                     .err,
	                 HSM_ERR_UNSUPPORTED_OPERATION);
	assert_int_equal(hsm_kms_delete_material(f->kms, &officer, own.key_id, NULL, &after, &ver).err,
	                 HSM_ERR_UNSUPPORTED_OPERATION);
	hsm_buf_free(&ct);
	hsm_key_record_clear(&k);
	hsm_key_record_clear(&own);
}

static void test_parameters(void **state)
{
	fx *f = *state;
	hsm_key_record k;
	hsm_import_params p;
	memset(&p, 0, sizeof(p));
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &k);
	static const struct {
		const char *spec;
		hsm_key_spec want;
	} specs[] = {{"RSA_2048", HSM_SPEC_RSA_2048},
	             {"RSA_3072", HSM_SPEC_RSA_3072},
	             {"RSA_4096", HSM_SPEC_RSA_4096}};
	for (size_t i = 0; i < 3; i++) {
		assert_true(hsm_ok(hsm_kms_get_import_params(f->kms, &officer, k.key_id,
		                                             "RSA_AES_KEY_WRAP_SHA_256", specs[i].spec,
		                                             &p)));
		hsm_key_spec got;
		assert_true(hsm_ok(hsm_spki_spec(p.public_der.data, p.public_der.len, &got)));
		assert_int_equal(got, specs[i].want);
		assert_string_equal(p.key_id, k.key_id);
		assert_int_equal(p.valid_to, NOW + DAY);
		assert_true(p.token.len > 0 && p.token.len <= 6144);
		hsm_import_params_clear(&p);
	}
	/* PKCS #1 v1.5 is refused, with the reason; unknown names are refused. */
	assert_int_equal(hsm_kms_get_import_params(f->kms, &officer, k.key_id, "RSAES_PKCS1_V1_5",
	                                           "RSA_2048", &p)
	                     .err,
	                 HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "padding-oracle"));
	assert_int_equal(
	    hsm_kms_get_import_params(f->kms, &officer, k.key_id, "RSAES_OAEP_SHA_512", "RSA_2048", &p)
	        .err,
	    HSM_ERR_VALIDATION);
	assert_int_equal(
	    hsm_kms_get_import_params(f->kms, &officer, k.key_id, "RSAES_OAEP_SHA_1", "RSA_1024", &p)
	        .err,
	    HSM_ERR_VALIDATION);
	/* Officers only. */
	assert_int_equal(
	    hsm_kms_get_import_params(f->kms, &user, k.key_id, "RSAES_OAEP_SHA_1", "RSA_2048", &p).err,
	    HSM_ERR_ACCESS_DENIED);
	hsm_key_record_clear(&k);
}

/* Symmetric material through each wrapping algorithm: the key then encrypts and decrypts. */
static void test_import_symmetric(void **state)
{
	fx *f = *state;
	static const char *const algs[] = {"RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256",
	                                   "RSA_AES_KEY_WRAP_SHA_1", "RSA_AES_KEY_WRAP_SHA_256"};
	for (size_t i = 0; i < 4; i++) {
		hsm_key_record k, after;
		hsm_buf ct = {0};
		uint8_t material[32];
		assert_int_equal(RAND_bytes(material, sizeof(material)), 1);
		create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL,
		       &k);
		hsm_result r = import_with(f, k.key_id, algs[i], material, sizeof(material), &after);
		if (hsm_failed(r))
			fail_msg("%s: %s", algs[i], hsm_last_message());
		assert_int_equal(after.state, HSM_KEY_ENABLED);
		assert_int_equal(after.valid_to, 0);
		assert_int_equal(after.flags & HSM_KEYFLAG_NO_MATERIAL, 0);
		encrypt(f, k.key_id, &ct);
		assert_true(hsm_ok(decrypt(f, &ct)));
		hsm_buf_free(&ct);
		hsm_key_record_clear(&after);
		hsm_key_record_clear(&k);
	}
}

/* The key is the imported bytes: an HMAC by hsmd equals one computed with them outside. */
static void test_imported_material_is_the_key(void **state)
{
	fx *f = *state;
	hsm_key_record k, after;
	uint8_t material[32];
	assert_int_equal(RAND_bytes(material, sizeof(material)), 1);
	create(f, HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC, HSM_ORIGIN_EXTERNAL, &k);
	assert_true(hsm_ok(import_with(f, k.key_id, "RSAES_OAEP_SHA_256", material, 32, &after)));
	hsm_buf mac = {0};
	hsm_used_key used;
	assert_true(hsm_ok(hsm_kms_generate_mac(f->kms, &user, k.key_id, HSM_MAC_HMAC_SHA_256,
	                                        (const uint8_t *)"message", 7, &mac, &used)));
	uint8_t want[32];
	unsigned int wlen = 0;
	assert_non_null(HMAC(EVP_sha256(), material, 32, (const unsigned char *)"message", 7, want,
	                     &wlen));
	assert_int_equal(mac.len, 32);
	assert_memory_equal(mac.data, want, 32);
	hsm_buf_free(&mac);
	hsm_key_record_clear(&after);
	hsm_key_record_clear(&k);
	/* HMAC keys take from the digest length to the block size. */
	uint8_t long_key[64];
	assert_int_equal(RAND_bytes(long_key, sizeof(long_key)), 1);
	create(f, HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC, HSM_ORIGIN_EXTERNAL, &k);
	assert_true(hsm_ok(import_with(f, k.key_id, "RSAES_OAEP_SHA_256", long_key, 64, &after)));
	hsm_key_record_clear(&after);
	hsm_key_record_clear(&k);
	create(f, HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC, HSM_ORIGIN_EXTERNAL, &k);
	assert_int_equal(import_with(f, k.key_id, "RSAES_OAEP_SHA_256", long_key, 31, &after).err,
	                 HSM_ERR_INCORRECT_KEY_MATERIAL);
	assert_int_equal(state_of(f, k.key_id), HSM_KEY_PENDING_IMPORT);
	hsm_key_record_clear(&k);
}

/* Asymmetric material: PKCS#8 made by OpenSSL, signing with hsmd, verified with OpenSSL. */
static void test_import_asymmetric(void **state)
{
	fx *f = *state;
	static const struct {
		hsm_key_spec spec;
		const char *type, *param;
		hsm_sign_alg alg;
	} keys[] = {
	    {HSM_SPEC_RSA_2048, "RSA", NULL, HSM_SIGN_RSASSA_PSS_SHA_256},
	    {HSM_SPEC_ECC_NIST_P256, "EC", "P-256", HSM_SIGN_ECDSA_SHA_256},
	    {HSM_SPEC_ECC_NIST_P384, "EC", "P-384", HSM_SIGN_ECDSA_SHA_384},
	};
	for (size_t i = 0; i < 3; i++) {
		EVP_PKEY *pk = keys[i].param != NULL
		                   ? EVP_PKEY_Q_keygen(NULL, NULL, keys[i].type, keys[i].param)
		                   : EVP_PKEY_Q_keygen(NULL, NULL, keys[i].type, (size_t)2048);
		assert_non_null(pk);
		unsigned char *der = NULL;
		PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pk);
		int der_len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
		PKCS8_PRIV_KEY_INFO_free(p8);
		assert_true(der_len > 0);
		hsm_key_record k, after;
		create(f, keys[i].spec, HSM_USAGE_SIGN_VERIFY, HSM_ORIGIN_EXTERNAL, &k);
		hsm_result r = import_with(f, k.key_id, "RSA_AES_KEY_WRAP_SHA_256", der,
		                           (size_t)der_len, &after);
		if (hsm_failed(r))
			fail_msg("%s: %s", hsm_spec_name(keys[i].spec), hsm_last_message());
		assert_int_equal(after.state, HSM_KEY_ENABLED);
		hsm_key_record_clear(&after);
		/* GetPublicKey answers the imported key's public half. */
		hsm_buf spki = {0}, sig = {0};
		hsm_key_record pub_rec;
		memset(&pub_rec, 0, sizeof(pub_rec));
		assert_true(hsm_ok(hsm_kms_get_public_key(f->kms, &user, k.key_id, &spki, &pub_rec)));
		unsigned char *want = NULL;
		int want_len = i2d_PUBKEY(pk, &want);
		assert_int_equal(spki.len, (size_t)want_len);
		assert_memory_equal(spki.data, want, spki.len);
		OPENSSL_free(want);
		hsm_key_record_clear(&pub_rec);
		/* A signature by hsmd verifies with the original key. */
		hsm_used_key used;
		assert_true(hsm_ok(hsm_kms_sign(f->kms, &user, k.key_id, keys[i].alg, HSM_MSG_RAW,
		                                (const uint8_t *)"hello", 5, &sig, &used)));
		EVP_MD_CTX *mc = EVP_MD_CTX_new();
		EVP_PKEY_CTX *pc = NULL;
		const EVP_MD *md = keys[i].alg == HSM_SIGN_ECDSA_SHA_384 ? EVP_sha384() : EVP_sha256();
		assert_int_equal(EVP_DigestVerifyInit(mc, &pc, md, NULL, pk), 1);
		if (keys[i].spec == HSM_SPEC_RSA_2048) {
			assert_true(EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PSS_PADDING) > 0);
			assert_true(EVP_PKEY_CTX_set_rsa_pss_saltlen(pc, RSA_PSS_SALTLEN_DIGEST) > 0);
		}
		assert_int_equal(EVP_DigestVerify(mc, sig.data, sig.len, (const uint8_t *)"hello", 5),
		                 1);
		EVP_MD_CTX_free(mc);
		/* A key of another size or curve is not this key's material. */
		hsm_key_record other;
		create(f, keys[i].spec == HSM_SPEC_ECC_NIST_P256 ? HSM_SPEC_ECC_NIST_P384
		                                                  : HSM_SPEC_ECC_NIST_P256,
		       HSM_USAGE_SIGN_VERIFY, HSM_ORIGIN_EXTERNAL, &other);
		assert_int_equal(import_with(f, other.key_id, "RSA_AES_KEY_WRAP_SHA_256", der,
		                             (size_t)der_len, &after)
		                     .err,
		                 HSM_ERR_INCORRECT_KEY_MATERIAL);
		hsm_key_record_clear(&other);
		hsm_buf_free(&spki);
		hsm_buf_free(&sig);
		OPENSSL_free(der);
		EVP_PKEY_free(pk);
		hsm_key_record_clear(&after);
		hsm_key_record_clear(&k);
	}
}

/* PKCS#8 DER of pk into a new buffer. */
static void pkcs8_of(EVP_PKEY *pk, hsm_buf *out)
{
	unsigned char *der = NULL;
	PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pk);
	int len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
	PKCS8_PRIV_KEY_INFO_free(p8);
	assert_true(len > 0);
	assert_true(hsm_ok(hsm_buf_set(out, der, (size_t)len)));
	OPENSSL_clear_free(der, (size_t)len);
}

/* An Ed25519 signing key and a P-256 key agreement key made elsewhere. */
static void test_import_ed25519_and_agreement(void **state)
{
	fx *f = *state;
	hsm_key_record k, after;
	hsm_buf der = {0}, sig = {0}, peer_spki = {0}, secret;
	hsm_buf_init_secure(&secret);
	hsm_used_key used;
	/* Ed25519: hsmd's signature verifies with the original key. */
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	pkcs8_of(ed, &der);
	create(f, HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_USAGE_SIGN_VERIFY, HSM_ORIGIN_EXTERNAL, &k);
	assert_true(hsm_ok(import_with(f, k.key_id, "RSA_AES_KEY_WRAP_SHA_1", der.data, der.len,
	                               &after)));
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(hsm_kms_sign(f->kms, &user, k.key_id, HSM_SIGN_ED25519_SHA_512,
	                                HSM_MSG_RAW, (const uint8_t *)"edwards", 7, &sig, &used)));
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(mc, NULL, NULL, NULL, ed), 1);
	assert_int_equal(EVP_DigestVerify(mc, sig.data, sig.len, (const uint8_t *)"edwards", 7), 1);
	EVP_MD_CTX_free(mc);
	hsm_key_record_clear(&k);
	/* P-256 for KEY_AGREEMENT: hsmd's ECDH secret is the one the original key computes. */
	EVP_PKEY *mine = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(mine);
	assert_non_null(peer);
	pkcs8_of(mine, &der);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT, HSM_ORIGIN_EXTERNAL, &k);
	assert_true(hsm_ok(import_with(f, k.key_id, "RSA_AES_KEY_WRAP_SHA_256", der.data, der.len,
	                               &after)));
	hsm_key_record_clear(&after);
	unsigned char *spki = NULL;
	int spki_len = i2d_PUBKEY(peer, &spki);
	assert_true(spki_len > 0);
	assert_true(hsm_ok(hsm_buf_set(&peer_spki, spki, (size_t)spki_len)));
	OPENSSL_free(spki);
	assert_true(hsm_ok(hsm_kms_derive_shared_secret(f->kms, &user, k.key_id, HSM_AGREE_ECDH,
	                                                peer_spki.data, peer_spki.len, &secret,
	                                                &used)));
	EVP_PKEY_CTX *dc = EVP_PKEY_CTX_new_from_pkey(NULL, mine, NULL);
	uint8_t want[32];
	size_t wlen = sizeof(want);
	assert_int_equal(EVP_PKEY_derive_init(dc), 1);
	assert_int_equal(EVP_PKEY_derive_set_peer(dc, peer), 1);
	assert_int_equal(EVP_PKEY_derive(dc, want, &wlen), 1);
	EVP_PKEY_CTX_free(dc);
	assert_int_equal(secret.len, wlen);
	assert_memory_equal(secret.data, want, wlen);
	hsm_key_record_clear(&k);
	EVP_PKEY_free(ed);
	EVP_PKEY_free(mine);
	EVP_PKEY_free(peer);
	hsm_buf_free(&der);
	hsm_buf_free(&sig);
	hsm_buf_free(&peer_spki);
	hsm_buf_free(&secret);
}

/* Tokens belong to one key and expire; bad ciphertexts and other material change nothing. */
static void test_tokens_and_material(void **state)
{
	fx *f = *state;
	hsm_key_record a, b, after;
	uint8_t m1[32], m2[32];
	assert_int_equal(RAND_bytes(m1, 32), 1);
	assert_int_equal(RAND_bytes(m2, 32), 1);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &a);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &b);
	params pa;
	wrap_for(f, a.key_id, "RSAES_OAEP_SHA_256", "RSA_2048", m1, 32, &pa);
	/* A's token does not open for B. */
	assert_int_equal(import(f, b.key_id, &pa, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, &after).err,
	                 HSM_ERR_INVALID_IMPORT_TOKEN);
	/* A token changed in one bit is not a token. */
	pa.p.token.data[pa.p.token.len / 2] ^= 0x10;
	assert_int_equal(import(f, a.key_id, &pa, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, &after).err,
	                 HSM_ERR_INVALID_IMPORT_TOKEN);
	pa.p.token.data[pa.p.token.len / 2] ^= 0x10;
	/* A changed ciphertext does not decrypt. */
	pa.enc.data[3] ^= 0x01;
	assert_int_equal(import(f, a.key_id, &pa, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, &after).err,
	                 HSM_ERR_INVALID_CIPHERTEXT);
	pa.enc.data[3] ^= 0x01;
	assert_int_equal(state_of(f, a.key_id), HSM_KEY_PENDING_IMPORT);
	/* After 24 hours the token has expired. */
	f->now = NOW + DAY;
	assert_int_equal(import(f, a.key_id, &pa, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, &after).err,
	                 HSM_ERR_EXPIRED_IMPORT_TOKEN);
	f->now = NOW + DAY - 1;
	assert_true(hsm_ok(import(f, a.key_id, &pa, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, &after)));
	hsm_key_record_clear(&after);
	f->now = NOW;
	params_clear(&pa);
	hsm_buf ct = {0};
	encrypt(f, a.key_id, &ct);
	/* The same material again (a new expiration) is fine; other material is refused. */
	params p2;
	wrap_for(f, a.key_id, "RSAES_OAEP_SHA_1", "RSA_3072", m1, 32, &p2);
	assert_true(hsm_ok(import(f, a.key_id, &p2, NULL, NOW + 30 * DAY, &after)));
	assert_int_equal(after.valid_to, NOW + 30 * DAY);
	assert_int_equal(after.state, HSM_KEY_ENABLED);
	hsm_key_record_clear(&after);
	params_clear(&p2);
	assert_int_equal(import_with(f, a.key_id, "RSAES_OAEP_SHA_256", m2, 32, &after).err,
	                 HSM_ERR_INCORRECT_KEY_MATERIAL);
	assert_true(hsm_ok(decrypt(f, &ct)));
	/* Other material is refused also after the material was deleted. */
	assert_true(hsm_ok(hsm_kms_delete_material(f->kms, &officer, a.key_id, NULL, &after, &ver)));
	hsm_key_record_clear(&after);
	assert_int_equal(import_with(f, a.key_id, "RSAES_OAEP_SHA_256", m2, 32, &after).err,
	                 HSM_ERR_INCORRECT_KEY_MATERIAL);
	assert_int_equal(state_of(f, a.key_id), HSM_KEY_PENDING_IMPORT);
	assert_int_equal(import_with(f, a.key_id, "RSAES_OAEP_SHA_256", m1, 31, &after).err,
	                 HSM_ERR_INCORRECT_KEY_MATERIAL);
	assert_true(hsm_ok(import_with(f, a.key_id, "RSAES_OAEP_SHA_256", m1, 32, &after)));
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(decrypt(f, &ct)));
	/* B took none of it: the same bytes are B's first material, a different key. */
	assert_true(hsm_ok(import_with(f, b.key_id, "RSAES_OAEP_SHA_256", m1, 32, &after)));
	hsm_key_record_clear(&after);
	hsm_buf_free(&ct);
	hsm_key_record_clear(&a);
	hsm_key_record_clear(&b);
}

static void test_expiration_model(void **state)
{
	fx *f = *state;
	hsm_key_record k, after;
	uint8_t m[32];
	assert_int_equal(RAND_bytes(m, 32), 1);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &k);
	params p;
	wrap_for(f, k.key_id, "RSAES_OAEP_SHA_256", "RSA_2048", m, 32, &p);
	/* KEY_MATERIAL_EXPIRES, also by default, needs a ValidTo in (now, now + 365 days]. */
	assert_int_equal(import(f, k.key_id, &p, NULL, 0, &after).err, HSM_ERR_VALIDATION);
	assert_int_equal(import(f, k.key_id, &p, "KEY_MATERIAL_EXPIRES", 0, &after).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(import(f, k.key_id, &p, "KEY_MATERIAL_EXPIRES", NOW, &after).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(import(f, k.key_id, &p, NULL, NOW + 365 * DAY + 1, &after).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(import(f, k.key_id, &p, "KEY_MATERIAL_DOES_NOT_EXPIRE", NOW + DAY, &after).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(import(f, k.key_id, &p, "NEVER", 0, &after).err, HSM_ERR_VALIDATION);
	assert_int_equal(state_of(f, k.key_id), HSM_KEY_PENDING_IMPORT);
	assert_true(hsm_ok(import(f, k.key_id, &p, "KEY_MATERIAL_EXPIRES", NOW + 365 * DAY, &after)));
	assert_int_equal(after.valid_to, NOW + 365 * DAY);
	hsm_key_record_clear(&after);
	/* ImportType: NEW material must be other material; EXISTING only for a key that had some. */
	hsm_import_req req = {.key = k.key_id,
	                      .token = p.p.token.data,
	                      .token_len = p.p.token.len,
	                      .encrypted = p.enc.data,
	                      .encrypted_len = p.enc.len,
	                      .expiration_model = "KEY_MATERIAL_DOES_NOT_EXPIRE",
	                      .type = HSM_IMPORT_NEW};
	memset(&after, 0, sizeof(after));
	assert_int_equal(hsm_kms_import_material(f->kms, &officer, &req, &after, &ver).err,
	                 HSM_ERR_INCORRECT_KEY_MATERIAL);
	assert_non_null(strstr(hsm_last_message(), "EXISTING_KEY_MATERIAL"));
	req.type = HSM_IMPORT_EXISTING;
	assert_true(hsm_ok(hsm_kms_import_material(f->kms, &officer, &req, &after, &ver)));
	assert_int_equal(after.valid_to, 0);
	hsm_key_record_clear(&after);
	params_clear(&p);
	hsm_key_record fresh;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &fresh);
	wrap_for(f, fresh.key_id, "RSAES_OAEP_SHA_256", "RSA_2048", m, 32, &p);
	req.key = fresh.key_id;
	req.token = p.p.token.data;
	req.token_len = p.p.token.len;
	req.encrypted = p.enc.data;
	req.encrypted_len = p.enc.len;
	assert_int_equal(hsm_kms_import_material(f->kms, &officer, &req, &after, &ver).err,
	                 HSM_ERR_VALIDATION);
	req.type = HSM_IMPORT_NEW;
	assert_true(hsm_ok(hsm_kms_import_material(f->kms, &officer, &req, &after, &ver)));
	hsm_key_record_clear(&after);
	params_clear(&p);
	hsm_key_record_clear(&fresh);
	hsm_key_record_clear(&k);
}

static void note_event(void *arg, const hsm_kms_event *ev)
{
	char *last = arg;
	snprintf(last, 128, "%s %s %s", ev->operation, ev->key_id, hsm_err_code_name(ev->result.err));
}

/* Expired material is deleted by the scheduler; the key waits for the same material again. */
static void test_expiry(void **state)
{
	fx *f = *state;
	hsm_key_record k, after;
	hsm_buf ct = {0};
	char last[128] = "";
	uint8_t m[32];
	assert_int_equal(RAND_bytes(m, 32), 1);
	hsm_kms_set_event_sink(f->kms, note_event, last);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &k);
	params p;
	wrap_for(f, k.key_id, "RSAES_OAEP_SHA_256", "RSA_2048", m, 32, &p);
	assert_true(hsm_ok(import(f, k.key_id, &p, NULL, NOW + 100, &after)));
	hsm_key_record_clear(&after);
	encrypt(f, k.key_id, &ct);
	size_t done = 0;
	f->now = NOW + 99;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 0);
	assert_int_equal(state_of(f, k.key_id), HSM_KEY_ENABLED);
	f->now = NOW + 100;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	char want[128];
	snprintf(want, sizeof(want), "DeleteExpiredKeyMaterial %s HSM_OK", k.key_id);
	assert_string_equal(last, want);
	hsm_key_record d;
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &d)));
	assert_int_equal(d.state, HSM_KEY_PENDING_IMPORT);
	assert_int_equal(d.valid_to, 0);
	assert_int_not_equal(d.flags & HSM_KEYFLAG_NO_MATERIAL, 0);
	hsm_key_record_clear(&d);
	assert_int_equal(decrypt(f, &ct).err, HSM_ERR_INVALID_STATE);
	/* Nothing is due any more. */
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 0);
	/* The stored version holds no material; its digest remains. */
	hsm_version_record v;
	memset(&v, 0, sizeof(v));
	assert_true(hsm_ok(hsm_store_version_get(f->store, k.key_id, 1, &v)));
	assert_int_equal(v.wrapped.len, 0);
	assert_int_equal(v.digest.len, 32);
	hsm_version_record_clear(&v);
	/* The token is still valid (24 hours): the same material brings the key back. */
	assert_true(hsm_ok(import(f, k.key_id, &p, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, &after)));
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(decrypt(f, &ct)));
	hsm_kms_set_event_sink(f->kms, NULL, NULL);
	params_clear(&p);
	hsm_buf_free(&ct);
	hsm_key_record_clear(&k);
}

/*
 * A key Disabled when its material expires comes back Disabled with the
 * material: importing is not enabling.  Between ValidTo and the erasure,
 * DescribeKey already answers as it will after it, fields included.
 */
static void test_expiry_of_a_disabled_key(void **state)
{
	fx *f = *state;
	hsm_key_record k, after, early, late;
	memset(&early, 0, sizeof(early));
	memset(&late, 0, sizeof(late));
	uint8_t m[32];
	assert_int_equal(RAND_bytes(m, 32), 1);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &k);
	params p;
	wrap_for(f, k.key_id, "RSAES_OAEP_SHA_256", "RSA_2048", m, 32, &p);
	assert_true(hsm_ok(import(f, k.key_id, &p, NULL, NOW + 100, &after)));
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	f->now = NOW + 100;
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &early)));
	size_t done = 0;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &late)));
	assert_int_equal(late.state, HSM_KEY_PENDING_IMPORT);
	assert_int_equal(early.state, late.state);
	assert_int_not_equal(late.flags & HSM_KEYFLAG_NO_MATERIAL, 0);
	assert_int_equal(early.flags & HSM_KEYFLAG_NO_MATERIAL, late.flags & HSM_KEYFLAG_NO_MATERIAL);
	/* PendingImport refuses DisableKey and EnableKey; the key remembers it was disabled. */
	assert_int_equal(hsm_kms_disable_key(f->kms, &officer, k.key_id).err, HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_enable_key(f->kms, &officer, k.key_id).err, HSM_ERR_INVALID_STATE);
	assert_true(hsm_ok(import(f, k.key_id, &p, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, &after)));
	assert_int_equal(after.state, HSM_KEY_DISABLED);
	assert_int_equal(after.flags & HSM_KEYFLAG_STAYS_DISABLED, 0);
	hsm_key_record_clear(&after);
	assert_int_equal(state_of(f, k.key_id), HSM_KEY_DISABLED);
	f->now = NOW;
	params_clear(&p);
	hsm_key_record_clear(&early);
	hsm_key_record_clear(&late);
	hsm_key_record_clear(&k);
}

/* Deletion, its cancellation, rotation and DeleteImportedKeyMaterial in each state. */
static void test_states(void **state)
{
	fx *f = *state;
	hsm_key_record k, after;
	uint8_t m[32];
	assert_int_equal(RAND_bytes(m, 32), 1);
	/* A key that never had material: deletion cancelled leaves it PendingImport. */
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &k);
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &after)));
	assert_int_equal(after.state, HSM_KEY_PENDING_DELETION);
	hsm_key_record_clear(&after);
	hsm_import_params ip;
	memset(&ip, 0, sizeof(ip));
	assert_int_equal(hsm_kms_get_import_params(f->kms, &officer, k.key_id, "RSAES_OAEP_SHA_256",
	                                           "RSA_2048", &ip)
	                     .err,
	                 HSM_ERR_INVALID_STATE);
	assert_true(hsm_ok(hsm_kms_cancel_deletion(f->kms, &officer, k.key_id, &after)));
	assert_int_equal(after.state, HSM_KEY_PENDING_IMPORT);
	hsm_key_record_clear(&after);
	/* Its material comes Disabled, as a cancelled deletion leaves a key; EnableKey enables it. */
	assert_true(hsm_ok(import_with(f, k.key_id, "RSAES_OAEP_SHA_256", m, 32, &after)));
	assert_int_equal(after.state, HSM_KEY_DISABLED);
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(hsm_kms_enable_key(f->kms, &officer, k.key_id)));
	/* Imported: rotation only to new imported material (on demand, or on a schedule below). */
	assert_int_equal(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &after).err,
	                 HSM_ERR_INVALID_STATE);
	assert_non_null(strstr(hsm_last_message(), "NEW_KEY_MATERIAL"));
	/* Disabled keys take their material again and stay Disabled. */
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	assert_true(hsm_ok(import_with(f, k.key_id, "RSAES_OAEP_SHA_1", m, 32, &after)));
	assert_int_equal(after.state, HSM_KEY_DISABLED);
	hsm_key_record_clear(&after);
	/* Deleting the material of a key pending deletion leaves it pending deletion, and
	 * cancelling then leaves it PendingImport, to be Disabled when the material is back. */
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &after)));
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(hsm_kms_delete_material(f->kms, &officer, k.key_id, NULL, &after, &ver)));
	assert_int_equal(after.state, HSM_KEY_PENDING_DELETION);
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(hsm_kms_cancel_deletion(f->kms, &officer, k.key_id, &after)));
	assert_int_equal(after.state, HSM_KEY_PENDING_IMPORT);
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(import_with(f, k.key_id, "RSAES_OAEP_SHA_256", m, 32, &after)));
	assert_int_equal(after.state, HSM_KEY_DISABLED);
	assert_int_equal(after.flags & HSM_KEYFLAG_STAYS_DISABLED, 0);
	hsm_key_record_clear(&after);
	/* With material, a cancelled deletion leaves the key Disabled, as for any key. */
	assert_true(hsm_ok(hsm_kms_enable_key(f->kms, &officer, k.key_id)));
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &after)));
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(hsm_kms_cancel_deletion(f->kms, &officer, k.key_id, &after)));
	assert_int_equal(after.state, HSM_KEY_DISABLED);
	hsm_key_record_clear(&after);
	/* Users cannot import or delete material. */
	assert_int_equal(hsm_kms_delete_material(f->kms, &user, k.key_id, NULL, &after, &ver).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(state_of(f, k.key_id), HSM_KEY_DISABLED);
	/* Destruction at the end of the waiting period. */
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &after)));
	hsm_key_record_clear(&after);
	f->now = NOW + 8 * DAY;
	size_t done = 0;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	hsm_key_record d;
	memset(&d, 0, sizeof(d));
	assert_int_equal(hsm_kms_describe_key(f->kms, &officer, k.key_id, &d).err, HSM_ERR_NOT_FOUND);
	f->now = NOW;
	hsm_key_record_clear(&k);
}

/* ImportKeyMaterial with every member: fresh parameters, RSAES_OAEP_SHA_256. */
static hsm_result import_full(fx *f, const char *key, const uint8_t *m, int64_t valid_to,
                              hsm_import_type type, const char *material_id,
                              const char *description, uint32_t *version)
{
	params p;
	hsm_key_record after;
	wrap_for(f, key, "RSAES_OAEP_SHA_256", "RSA_2048", m, 32, &p);
	hsm_import_req req = {.key = key,
	                      .token = p.p.token.data,
	                      .token_len = p.p.token.len,
	                      .encrypted = p.enc.data,
	                      .encrypted_len = p.enc.len,
	                      .expiration_model = valid_to != 0 ? "KEY_MATERIAL_EXPIRES"
	                                                        : "KEY_MATERIAL_DOES_NOT_EXPIRE",
	                      .has_valid_to = valid_to != 0,
	                      .valid_to = valid_to,
	                      .type = type,
	                      .material_id = material_id,
	                      .description = description};
	memset(&after, 0, sizeof(after));
	hsm_result r = hsm_kms_import_material(f->kms, &officer, &req, &after, version);
	hsm_key_record_clear(&after);
	params_clear(&p);
	return r;
}

typedef struct listed {
	uint32_t versions[8];
	size_t n;
	hsm_version_record last;
} listed;

static hsm_result note_listed(const hsm_version_record *v, void *arg)
{
	listed *l = arg;
	assert_true(l->n < 8);
	l->versions[l->n++] = v->version;
	hsm_version_record_clear(&l->last);
	l->last.version = v->version;
	l->last.created = v->created;
	l->last.rotation_type = v->rotation_type;
	l->last.valid_to = v->valid_to;
	memcpy(l->last.description, v->description, sizeof(l->last.description));
	return HSM_SUCCESS;
}

/* Lists the key's materials (all, or rotations only); returns how many. */
static size_t list_materials(fx *f, const char *key, bool all, listed *l, hsm_key_record *k)
{
	memset(l, 0, sizeof(*l));
	memset(k, 0, sizeof(*k));
	assert_true(hsm_ok(hsm_kms_list_rotations(f->kms, &officer, key, all, k, note_listed, l)));
	return l->n;
}

static uint32_t version_of(const hsm_buf *ct)
{
	hsm_blob b;
	assert_true(hsm_ok(hsm_blob_parse(ct->data, ct->len, &b)));
	return b.key_version;
}

/*
 * New material for an imported key: it waits, pending rotation, without
 * being used; it can be deleted and replaced; RotateKeyOnDemand makes it
 * current; every material keeps its own expiry and description, and the key
 * serves only while every material it uses is there.
 */
static void test_rotation_to_new_material(void **state)
{
	fx *f = *state;
	hsm_key_record k, d, after;
	hsm_buf ct1 = {0}, ct2 = {0};
	listed l;
	uint8_t m1[32], m2[32], m3[32], m4[32];
	char last[128] = "", id1[HSM_MATERIAL_ID_LEN + 1], id2[HSM_MATERIAL_ID_LEN + 1];
	uint32_t v = 0;
	assert_int_equal(RAND_bytes(m1, 32), 1);
	assert_int_equal(RAND_bytes(m2, 32), 1);
	assert_int_equal(RAND_bytes(m3, 32), 1);
	assert_int_equal(RAND_bytes(m4, 32), 1);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &k);
	assert_true(hsm_ok(hsm_kms_material_id(k.key_id, 1, id1)));
	assert_true(hsm_ok(hsm_kms_material_id(k.key_id, 2, id2)));
	assert_int_equal(strlen(id1), HSM_MATERIAL_ID_LEN);
	assert_string_not_equal(id1, id2);
	assert_true(hsm_ok(import_full(f, k.key_id, m1, 0, HSM_IMPORT_ANY, NULL, "first", &v)));
	assert_int_equal(v, 1);
	encrypt(f, k.key_id, &ct1);
	/* The same material is not new material; new material needs no id. */
	assert_int_equal(import_full(f, k.key_id, m1, 0, HSM_IMPORT_NEW, NULL, NULL, &v).err,
	                 HSM_ERR_INCORRECT_KEY_MATERIAL);
	assert_int_equal(import_full(f, k.key_id, m2, 0, HSM_IMPORT_NEW, id1, NULL, &v).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(import_full(f, k.key_id, m2, 0, HSM_IMPORT_ANY, NULL, NULL, &v).err,
	                 HSM_ERR_INCORRECT_KEY_MATERIAL); /* after the first: EXISTING by default */
	assert_int_equal(import_full(f, k.key_id, m2, 0, HSM_IMPORT_NEW, NULL, "bad|char", &v).err,
	                 HSM_ERR_VALIDATION);
	/* New material waits in version 2; the key still encrypts under version 1. */
	assert_true(hsm_ok(import_full(f, k.key_id, m2, NOW + 100, HSM_IMPORT_NEW, NULL,
	                               "second one", &v)));
	assert_int_equal(v, 2);
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &d)));
	assert_int_equal(d.primary_version, 1);
	assert_int_equal(d.state, HSM_KEY_ENABLED);
	assert_int_not_equal(d.flags & HSM_KEYFLAG_PENDING_MATERIAL, 0);
	assert_int_equal(d.valid_to, 0); /* only the waiting material expires */
	hsm_key_record_clear(&d);
	encrypt(f, k.key_id, &ct2);
	assert_int_equal(version_of(&ct2), 1);
	assert_int_equal(list_materials(f, k.key_id, false, &l, &d), 0);
	hsm_key_record_clear(&d);
	assert_int_equal(list_materials(f, k.key_id, true, &l, &d), 2);
	assert_int_equal(l.last.version, 2);
	assert_int_equal(l.last.valid_to, NOW + 100);
	assert_string_equal(l.last.description, "second one");
	assert_int_equal(d.primary_version, 1);
	hsm_key_record_clear(&d);
	/* One waiting material at a time. */
	assert_int_equal(import_full(f, k.key_id, m3, 0, HSM_IMPORT_NEW, NULL, NULL, &v).err,
	                 HSM_ERR_INVALID_STATE);
	/* Deleted, the waiting material cannot be rotated to, and other material may take its place. */
	assert_true(hsm_ok(hsm_kms_delete_material(f->kms, &officer, k.key_id, id2, &after, &v)));
	assert_int_equal(v, 2);
	assert_int_equal(after.state, HSM_KEY_ENABLED);
	assert_int_equal(after.flags & HSM_KEYFLAG_PENDING_MATERIAL, 0);
	hsm_key_record_clear(&after);
	assert_int_equal(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &after).err,
	                 HSM_ERR_INVALID_STATE);
	assert_true(hsm_ok(import_full(f, k.key_id, m3, 0, HSM_IMPORT_NEW, NULL, NULL, &v)));
	assert_int_equal(v, 2);
	assert_int_equal(list_materials(f, k.key_id, true, &l, &d), 2);
	assert_string_equal(l.last.description, ""); /* another material: not the deleted one's */
	assert_int_equal(l.last.valid_to, 0);
	hsm_key_record_clear(&d);
	/* Users cannot rotate; officers can, to m3. */
	assert_int_equal(hsm_kms_rotate_now(f->kms, &user, k.key_id, &after).err,
	                 HSM_ERR_ACCESS_DENIED);
	f->now = NOW + 10;
	memset(&after, 0, sizeof(after));
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &after)));
	assert_int_equal(after.primary_version, 2);
	assert_int_equal(after.flags & HSM_KEYFLAG_PENDING_MATERIAL, 0);
	hsm_key_record_clear(&after);
	assert_int_equal(list_materials(f, k.key_id, false, &l, &d), 1);
	assert_int_equal(l.last.version, 2);
	assert_int_equal(l.last.created, NOW + 10); /* RotationDate */
	assert_int_equal(l.last.rotation_type, HSM_ROTATION_ON_DEMAND);
	hsm_key_record_clear(&d);
	encrypt(f, k.key_id, &ct2);
	assert_int_equal(version_of(&ct2), 2);
	assert_true(hsm_ok(decrypt(f, &ct1)));
	assert_true(hsm_ok(decrypt(f, &ct2)));
	/* Nothing waits now. */
	assert_int_equal(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &after).err,
	                 HSM_ERR_INVALID_STATE);
	/* EXISTING finds the material by its bytes, or checks it against the id it is given. */
	assert_true(hsm_ok(import_full(f, k.key_id, m1, NOW + 200, HSM_IMPORT_EXISTING, NULL, NULL,
	                               &v)));
	assert_int_equal(v, 1);
	assert_int_equal(import_full(f, k.key_id, m1, 0, HSM_IMPORT_EXISTING, id2, NULL, &v).err,
	                 HSM_ERR_INCORRECT_KEY_MATERIAL);
	char unknown[HSM_MATERIAL_ID_LEN + 1];
	assert_true(hsm_ok(hsm_kms_material_id(k.key_id, 7, unknown)));
	assert_int_equal(import_full(f, k.key_id, m1, 0, HSM_IMPORT_EXISTING, unknown, NULL, &v).err,
	                 HSM_ERR_NOT_FOUND);
	assert_int_equal(import_full(f, k.key_id, m1, 0, HSM_IMPORT_EXISTING, "ABC", NULL, &v).err,
	                 HSM_ERR_VALIDATION);
	assert_true(hsm_ok(import_full(f, k.key_id, m3, 0, HSM_IMPORT_EXISTING, id2, "third", &v)));
	assert_int_equal(v, 2);
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &d)));
	assert_int_equal(d.valid_to, NOW + 200); /* the earliest of the materials in use */
	hsm_key_record_clear(&d);
	/* The description stays when an import does not give one. */
	assert_true(hsm_ok(import_full(f, k.key_id, m3, 0, HSM_IMPORT_EXISTING, NULL, NULL, &v)));
	assert_int_equal(v, 2);
	assert_int_equal(list_materials(f, k.key_id, true, &l, &d), 2);
	assert_string_equal(l.last.description, "third");
	hsm_key_record_clear(&d);
	/* Without an older material the key is unusable, even with the current one there. */
	assert_true(hsm_ok(hsm_kms_delete_material(f->kms, &officer, k.key_id, id1, &after, &v)));
	assert_int_equal(v, 1);
	assert_int_equal(after.state, HSM_KEY_PENDING_IMPORT);
	hsm_key_record_clear(&after);
	assert_int_equal(decrypt(f, &ct2).err, HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_delete_material(f->kms, &officer, k.key_id, id1, &after, &v).err,
	                 HSM_ERR_INVALID_STATE); /* nothing left to delete there */
	assert_true(hsm_ok(import_full(f, k.key_id, m1, NOW + 200, HSM_IMPORT_EXISTING, id1, NULL,
	                               &v)));
	assert_int_equal(state_of(f, k.key_id), HSM_KEY_ENABLED);
	assert_true(hsm_ok(decrypt(f, &ct1)));
	assert_true(hsm_ok(decrypt(f, &ct2)));
	/* Waiting material expires as any other: the scheduler deletes it, and the key is untouched. */
	hsm_kms_set_event_sink(f->kms, note_event, last);
	assert_true(hsm_ok(import_full(f, k.key_id, m4, NOW + 50, HSM_IMPORT_NEW, NULL, NULL, &v)));
	assert_int_equal(v, 3);
	size_t done = 0;
	f->now = NOW + 50;
	assert_int_equal(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &after).err,
	                 HSM_ERR_INVALID_STATE); /* expired: not made current */
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	char want[128];
	snprintf(want, sizeof(want), "DeleteExpiredKeyMaterial %s HSM_OK", k.key_id);
	assert_string_equal(last, want);
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &d)));
	assert_int_equal(d.state, HSM_KEY_ENABLED);
	assert_int_equal(d.primary_version, 2);
	assert_int_equal(d.flags & (HSM_KEYFLAG_PENDING_MATERIAL | HSM_KEYFLAG_NO_MATERIAL), 0);
	hsm_key_record_clear(&d);
	hsm_version_record gone;
	memset(&gone, 0, sizeof(gone));
	assert_true(hsm_ok(hsm_store_version_get(f->store, k.key_id, 3, &gone)));
	assert_int_equal(gone.wrapped.len, 0);
	hsm_version_record_clear(&gone);
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 0);
	/* Then the version that used to expire first, material 1 at NOW + 200. */
	f->now = NOW + 200;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	assert_int_equal(state_of(f, k.key_id), HSM_KEY_PENDING_IMPORT);
	hsm_kms_set_event_sink(f->kms, NULL, NULL);
	f->now = NOW;
	hsm_version_record_clear(&l.last);
	hsm_buf_free(&ct1);
	hsm_buf_free(&ct2);
	hsm_key_record_clear(&k);
}

/*
 * Scheduled rotation of imported material: on the date the waiting material
 * becomes current (AUTOMATIC); without one the key stays, counted as due,
 * and rotates once the material comes.
 */
static void test_scheduled_rotation_to_new_material(void **state)
{
	fx *f = *state;
	hsm_key_record k, d;
	listed l;
	char last[128] = "";
	uint8_t m1[32], m2[32], m3[32];
	uint32_t v = 0;
	size_t done = 0;
	assert_int_equal(RAND_bytes(m1, 32), 1);
	assert_int_equal(RAND_bytes(m2, 32), 1);
	assert_int_equal(RAND_bytes(m3, 32), 1);
	hsm_kms_set_event_sink(f->kms, note_event, last);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, HSM_ORIGIN_EXTERNAL, &k);
	assert_true(hsm_ok(import_full(f, k.key_id, m1, 0, HSM_IMPORT_ANY, NULL, NULL, &v)));
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 30)));
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_rotation_status(f->kms, &officer, k.key_id, &d)));
	assert_true(d.rotation_enabled);
	assert_int_equal(d.next_rotation, NOW + 30 * DAY);
	hsm_key_record_clear(&d);
	/* The material for the next period, imported ahead; nothing happens before the date. */
	assert_true(hsm_ok(import_full(f, k.key_id, m2, 0, HSM_IMPORT_NEW, NULL, "next", &v)));
	f->now = NOW + 30 * DAY - 1;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 0);
	f->now = NOW + 30 * DAY;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	char want[128];
	snprintf(want, sizeof(want), "RotateKey %s HSM_OK", k.key_id);
	assert_string_equal(last, want);
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &d)));
	assert_int_equal(d.primary_version, 2);
	assert_int_equal(d.next_rotation, NOW + 60 * DAY);
	assert_int_equal(d.flags & HSM_KEYFLAG_PENDING_MATERIAL, 0);
	hsm_key_record_clear(&d);
	assert_int_equal(list_materials(f, k.key_id, false, &l, &d), 1);
	assert_int_equal(l.last.rotation_type, HSM_ROTATION_AUTOMATIC);
	assert_int_equal(l.last.created, NOW + 30 * DAY);
	hsm_key_record_clear(&d);
	/* The next date comes without material: the key stays and is not worked on again. */
	f->now = NOW + 61 * DAY;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 0);
	assert_int_equal(state_of(f, k.key_id), HSM_KEY_ENABLED);
	/* Imported late, the material becomes current at the next pass. */
	assert_true(hsm_ok(import_full(f, k.key_id, m3, 0, HSM_IMPORT_NEW, NULL, NULL, &v)));
	assert_int_equal(v, 3);
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &d)));
	assert_int_equal(d.primary_version, 3);
	assert_int_equal(d.next_rotation, NOW + 91 * DAY);
	hsm_key_record_clear(&d);
	/* With the schedule off, waiting material stays waiting. */
	uint8_t m4[32];
	assert_int_equal(RAND_bytes(m4, 32), 1);
	assert_true(hsm_ok(import_full(f, k.key_id, m4, 0, HSM_IMPORT_NEW, NULL, NULL, &v)));
	assert_true(hsm_ok(hsm_kms_disable_rotation(f->kms, &officer, k.key_id)));
	f->now = NOW + 200 * DAY;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 0);
	memset(&d, 0, sizeof(d));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &officer, k.key_id, &d)));
	assert_int_equal(d.primary_version, 3);
	assert_int_not_equal(d.flags & HSM_KEYFLAG_PENDING_MATERIAL, 0);
	hsm_key_record_clear(&d);
	hsm_kms_set_event_sink(f->kms, NULL, NULL);
	f->now = NOW;
	hsm_version_record_clear(&l.last);
	hsm_key_record_clear(&k);
}

/* kms:WrappingAlgorithm, kms:WrappingKeySpec, kms:ExpirationModel and kms:ValidTo in policies. */
static void test_policy_conditions(void **state)
{
	fx *f = *state;
	char policy[2048];
	snprintf(policy, sizeof(policy),
	         "{\"Version\":\"2012-10-17\",\"Statement\":["
	         "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::%s:root\"},"
	         "\"Action\":\"kms:*\",\"Resource\":\"*\"},"
	         "{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:GetParametersForImport\","
	         "\"Resource\":\"*\",\"Condition\":{\"StringNotEquals\":{"
	         "\"kms:WrappingAlgorithm\":\"RSA_AES_KEY_WRAP_SHA_256\"}}},"
	         "{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:GetParametersForImport\","
	         "\"Resource\":\"*\",\"Condition\":{\"StringNotEquals\":{"
	         "\"kms:WrappingKeySpec\":\"RSA_4096\"}}},"
	         "{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:ImportKeyMaterial\","
	         "\"Resource\":\"*\",\"Condition\":{\"StringEquals\":{"
	         "\"kms:ExpirationModel\":\"KEY_MATERIAL_DOES_NOT_EXPIRE\"}}},"
	         "{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:ImportKeyMaterial\","
	         "\"Resource\":\"*\",\"Condition\":{\"NumericGreaterThan\":{"
	         "\"kms:ValidTo\":\"%lld\"}}}]}",
	         f->cfg.account_id, NOW + 30 * DAY);
	hsm_create_key_req req = {.spec = HSM_SPEC_SYMMETRIC_DEFAULT,
	                          .usage = HSM_USAGE_ENCRYPT_DECRYPT,
	                          .origin = HSM_ORIGIN_EXTERNAL,
	                          .policy = policy,
	                          .bypass_lockout_check = true};
	hsm_key_record k, after;
	memset(&k, 0, sizeof(k));
	assert_true(hsm_ok(hsm_kms_create_key(f->kms, &officer, &req, &k)));
	hsm_import_params ip;
	memset(&ip, 0, sizeof(ip));
	assert_int_equal(hsm_kms_get_import_params(f->kms, &officer, k.key_id, "RSAES_OAEP_SHA_256",
	                                           "RSA_4096", &ip)
	                     .err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_get_import_params(f->kms, &officer, k.key_id,
	                                           "RSA_AES_KEY_WRAP_SHA_256", "RSA_2048", &ip)
	                     .err,
	                 HSM_ERR_ACCESS_DENIED);
	uint8_t m[32];
	assert_int_equal(RAND_bytes(m, 32), 1);
	params p;
	wrap_for(f, k.key_id, "RSA_AES_KEY_WRAP_SHA_256", "RSA_4096", m, 32, &p);
	assert_int_equal(import(f, k.key_id, &p, "KEY_MATERIAL_DOES_NOT_EXPIRE", 0, &after).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(import(f, k.key_id, &p, NULL, NOW + 31 * DAY, &after).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_true(hsm_ok(import(f, k.key_id, &p, NULL, NOW + 30 * DAY, &after)));
	hsm_key_record_clear(&after);
	params_clear(&p);
	hsm_key_record_clear(&k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_external_key_waits_for_material, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_parameters, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_import_symmetric, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_imported_material_is_the_key, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_import_asymmetric, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_import_ed25519_and_agreement, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_tokens_and_material, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_expiration_model, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_expiry, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_expiry_of_a_disabled_key, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_states, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rotation_to_new_material, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_scheduled_rotation_to_new_material, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_policy_conditions, setup, kms_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
