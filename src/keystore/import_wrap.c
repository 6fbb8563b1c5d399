/*
 * import_wrap.c - key material made elsewhere (KMS GetParametersForImport and
 * ImportKeyMaterial): wrapping key pairs, import tokens, and the checks that
 * turn encrypted bytes into a key version the store can hold.
 *
 * An import token is the wrapping key's private half, the wrapping algorithm
 * and the token's expiry, sealed (ks_wrap, AES-256-GCM) under a key derived
 * from the DMK for this purpose alone, with the KMS key's id in the AAD.  The
 * node keeps nothing between the two calls: any node sharing the store can
 * open the token, no other store can, and a token made for one key opens
 * for no other.  Like KMS's, a token may be used until it expires.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>

#include "common/util.h"
#include "keystore/keystore_internal.h"

#define TOKEN_VERSION 1
#define TOKEN_AAD_LABEL "hsmd/v1/import-token"
#define KEY_WRAP_KEY_LEN 32 /* RSA_AES_KEY_WRAP_*: the AES key encrypted with OAEP */
/* Larger than any PKCS#8 key hsmd takes (RSA-4096 with every CRT field, about 2.4 KiB). */
#define ENCRYPTED_MATERIAL_MAX 8192

static const char *const wrap_alg_names[HSM_WRAP_COUNT] = {
	[HSM_WRAP_RSAES_OAEP_SHA_1] = "RSAES_OAEP_SHA_1",
	[HSM_WRAP_RSAES_OAEP_SHA_256] = "RSAES_OAEP_SHA_256",
	[HSM_WRAP_RSA_AES_KEY_WRAP_SHA_1] = "RSA_AES_KEY_WRAP_SHA_1",
	[HSM_WRAP_RSA_AES_KEY_WRAP_SHA_256] = "RSA_AES_KEY_WRAP_SHA_256",
};

const char *hsm_wrap_alg_name(hsm_wrap_alg a)
{
	HSM_ASSERT((unsigned)a < HSM_WRAP_COUNT);
	return wrap_alg_names[a];
}

hsm_result hsm_wrap_alg_parse(const char *name, hsm_wrap_alg *out)
{
	for (unsigned a = 0; a < HSM_WRAP_COUNT; a++) {
		if (strcmp(wrap_alg_names[a], name) == 0) {
			*out = (hsm_wrap_alg)a;
			return HSM_SUCCESS;
		}
	}
	HSM_ENSURE(strcmp(name, "RSAES_PKCS1_V1_5") != 0, HSM_ERR_VALIDATION,
	           "WrappingAlgorithm RSAES_PKCS1_V1_5 is not offered: PKCS #1 v1.5 encryption "
	           "is open to padding-oracle attacks; use RSAES_OAEP_SHA_256 or "
	           "RSA_AES_KEY_WRAP_SHA_256");
	return HSM_FAIL(HSM_ERR_VALIDATION,
	                "WrappingAlgorithm '%.64s' is not one of RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, "
	                "RSA_AES_KEY_WRAP_SHA_1, RSA_AES_KEY_WRAP_SHA_256",
	                name);
}

hsm_result hsm_wrapping_key_spec_parse(const char *name, unsigned *bits)
{
	static const struct {
		const char *name;
		unsigned bits;
	} specs[] = {{"RSA_2048", 2048}, {"RSA_3072", 3072}, {"RSA_4096", 4096}};
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		if (strcmp(specs[i].name, name) == 0) {
			*bits = specs[i].bits;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION,
	                "WrappingKeySpec '%.64s' is not one of RSA_2048, RSA_3072, RSA_4096", name);
}

static hsm_key_spec rsa_spec(unsigned bits)
{
	return bits == 4096 ? HSM_SPEC_RSA_4096 : bits == 3072 ? HSM_SPEC_RSA_3072 : HSM_SPEC_RSA_2048;
}

static hsm_enc_alg oaep_of(hsm_wrap_alg alg)
{
	return alg == HSM_WRAP_RSAES_OAEP_SHA_1 || alg == HSM_WRAP_RSA_AES_KEY_WRAP_SHA_1
	           ? HSM_ENC_RSAES_OAEP_SHA_1
	           : HSM_ENC_RSAES_OAEP_SHA_256;
}

static hsm_result token_aad(const char *key_id, hsm_buf *aad)
{
	HSM_GUARD(hsm_buf_put_lp(aad, TOKEN_AAD_LABEL, strlen(TOKEN_AAD_LABEL)));
	return hsm_buf_put_lp(aad, key_id, strlen(key_id));
}

/* Seals pt (secure) under the import-token key, or opens a token into pt (secure). */
static hsm_result token_seal(hsm_keystore *ks, const char *key_id, bool open, const uint8_t *in,
                             size_t n, hsm_buf *out)
{
	hsm_buf aad = {0};
	hsm_result res = token_aad(key_id, &aad);
	if (hsm_ok(res)) {
		pthread_rwlock_rdlock(&ks->keys_lock);
		if (ks->keys.import_token == NULL)
			res = ks_require_unsealed(ks);
		else if (open)
			res = ks_unwrap(ks->keys.import_token, &aad, in, n, out);
		else
			res = ks_wrap(ks->keys.import_token, &aad, in, n, out);
		pthread_rwlock_unlock(&ks->keys_lock);
	}
	hsm_buf_free(&aad);
	return res;
}

hsm_result hsm_ks_import_params(hsm_keystore *ks, const char *key_id, hsm_wrap_alg alg,
                                unsigned bits, int64_t expires, hsm_buf *token,
                                hsm_buf *public_der)
{
	hsm_result res = HSM_SUCCESS;
	hsm_material *m = NULL;
	hsm_buf pt;
	hsm_buf_init_secure(&pt);
	HSM_ASSERT((unsigned)alg < HSM_WRAP_COUNT && (bits == 2048 || bits == 3072 || bits == 4096));
	HSM_GUARD(ks_require_unsealed(ks));
	HSM_TRY(hsm_material_generate(rsa_spec(bits), &m));
	HSM_TRY(hsm_buf_put_u8(&pt, TOKEN_VERSION));
	HSM_TRY(hsm_buf_put_u8(&pt, (uint8_t)alg));
	HSM_TRY(hsm_buf_put_u16(&pt, (uint16_t)bits));
	HSM_TRY(hsm_buf_put_u64(&pt, (uint64_t)expires));
	HSM_TRY(hsm_material_export(m, &pt));
	HSM_TRY(token_seal(ks, key_id, false, pt.data, pt.len, token));
	HSM_TRY(hsm_material_public_der(m, public_der));
out:
	hsm_material_free(m);
	hsm_buf_free(&pt);
	return res;
}

/* The wrapping key and algorithm an import token holds; checks whose it is and its expiry. */
static hsm_result token_open(hsm_keystore *ks, const char *key_id, const uint8_t *token,
                             size_t token_len, int64_t now, hsm_wrap_alg *alg, hsm_material **key)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf pt;
	hsm_buf_init_secure(&pt);
	hsm_cursor c;
	uint8_t version = 0, a = 0;
	uint16_t bits = 0;
	uint64_t expires = 0;
	res = token_seal(ks, key_id, true, token, token_len, &pt);
	/* Not sealed by this store for this key (ks_unwrap says KEY_UNAVAILABLE), or damaged. */
	if (res.err == HSM_ERR_KEY_UNAVAILABLE || res.err == HSM_ERR_INVALID_CIPHERTEXT ||
	    res.err == HSM_ERR_VALIDATION)
		res = HSM_FAIL(HSM_ERR_INVALID_IMPORT_TOKEN,
		               "the import token is not valid for key %s: use the ImportToken of a "
		               "GetParametersForImport response for this key",
		               key_id);
	if (hsm_failed(res))
		goto out;
	/* Sealed by this keystore: a malformed inside is corruption, not a client's mistake. */
	hsm_cursor_init(&c, pt.data, pt.len);
	HSM_TRY(hsm_cursor_get_u8(&c, &version, HSM_ERR_INTERNAL));
	HSM_TRY(hsm_cursor_get_u8(&c, &a, HSM_ERR_INTERNAL));
	HSM_TRY(hsm_cursor_get_u16(&c, &bits, HSM_ERR_INTERNAL));
	HSM_TRY(hsm_cursor_get_u64(&c, &expires, HSM_ERR_INTERNAL));
	HSM_CHECK(version == TOKEN_VERSION && a < HSM_WRAP_COUNT &&
	              (bits == 2048 || bits == 3072 || bits == 4096),
	          HSM_ERR_INTERNAL, "import token of an unknown format");
	HSM_CHECK(now < (int64_t)expires, HSM_ERR_EXPIRED_IMPORT_TOKEN,
	          "the import token expired: call GetParametersForImport again for a new one");
	HSM_TRY(hsm_material_import(rsa_spec(bits), pt.data + c.pos, hsm_cursor_remaining(&c), key));
	*alg = (hsm_wrap_alg)a;
out:
	hsm_buf_free(&pt);
	return res;
}

/* Decrypts what the importer encrypted under the wrapping key into pt (secure). */
static hsm_result unwrap_material(const hsm_material *key, hsm_wrap_alg alg, const uint8_t *enc,
                                  size_t enc_len, hsm_buf *pt)
{
	hsm_enc_alg oaep = oaep_of(alg);
	if (alg == HSM_WRAP_RSAES_OAEP_SHA_1 || alg == HSM_WRAP_RSAES_OAEP_SHA_256)
		return hsm_rsa_oaep_decrypt(key, oaep, enc, enc_len, pt);
	/* RSA_AES_KEY_WRAP: OAEP(AES key) of the modulus's length, then AES-KWP(material). */
	size_t k = hsm_spec_get(hsm_material_spec(key))->bits / 8;
	HSM_ENSURE(enc_len > k, HSM_ERR_INVALID_CIPHERTEXT,
	           "the encrypted key material is too short for %s", hsm_wrap_alg_name(alg));
	hsm_result res = HSM_SUCCESS;
	hsm_buf aes;
	hsm_buf_init_secure(&aes);
	hsm_secret *kek = NULL;
	HSM_TRY(hsm_rsa_oaep_decrypt(key, oaep, enc, k, &aes));
	HSM_CHECK(aes.len == KEY_WRAP_KEY_LEN, HSM_ERR_INVALID_CIPHERTEXT,
	          "%s needs a 256-bit AES key encrypted with the wrapping key",
	          hsm_wrap_alg_name(alg));
	HSM_TRY(hsm_secret_from(aes.data, aes.len, &kek));
	HSM_TRY(hsm_aes_kwp_unwrap_raw(kek, enc + k, enc_len - k, pt));
out:
	hsm_secret_free(kek);
	hsm_buf_free(&aes);
	return res;
}

/* HMAC-SHA256 under the import-digest key of the key id, the version and what identifies the key. */
static hsm_result material_digest(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                  const uint8_t *id, size_t id_len, hsm_buf *digest)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf msg;
	hsm_buf_init_secure(&msg);
	uint8_t mac[HSM_SHA256_LEN];
	HSM_TRY(hsm_buf_put_lp(&msg, ref->key_id, strlen(ref->key_id)));
	HSM_TRY(hsm_buf_put_u32(&msg, ref->version));
	HSM_TRY(hsm_buf_put_lp(&msg, id, id_len));
	pthread_rwlock_rdlock(&ks->keys_lock);
	if (ks->keys.import_digest == NULL)
		res = ks_require_unsealed(ks);
	else
		res = hsm_hmac_sha256(hsm_secret_bytes(ks->keys.import_digest),
		                      hsm_secret_len(ks->keys.import_digest), msg.data, msg.len, mac);
	pthread_rwlock_unlock(&ks->keys_lock);
	if (hsm_ok(res))
		res = hsm_buf_set(digest, mac, sizeof(mac));
	OPENSSL_cleanse(mac, sizeof(mac));
out:
	hsm_buf_free(&msg);
	return res;
}

/*
 * Whether known is the digest of the material id identifies, for `to`; *d is
 * the digest that matched (else that of id).  EC material imported before
 * hsmd encoded every EC public key uncompressed (hsm_material_import) was
 * identified by its public key in the point form it came in: that digest
 * matches too, or such material could never be imported again.
 */
static hsm_result same_material(hsm_keystore *ks, const hsm_ks_keyref *to, const hsm_buf *id,
                                const hsm_buf *known, hsm_buf *d, bool *same)
{
	static const char *const older[] = {OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED,
	                                    OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_HYBRID};
	hsm_result res = HSM_SUCCESS;
	hsm_buf alt = {0};
	bool ec = hsm_spec_get(to->spec)->type == HSM_KT_EC;
	HSM_TRY(material_digest(ks, to, id->data, id->len, d));
	*same = d->len == known->len && hsm_ct_equal(d->data, known->data, d->len);
	for (size_t f = 0; ec && !*same && f < sizeof(older) / sizeof(older[0]); f++) {
		hsm_buf alt_d = {0};
		hsm_buf_clear(&alt);
		HSM_TRY(hsm_spki_ec_form(id->data, id->len, older[f], &alt));
		res = material_digest(ks, to, alt.data, alt.len, &alt_d);
		*same = hsm_ok(res) && alt_d.len == known->len &&
		        hsm_ct_equal(alt_d.data, known->data, alt_d.len);
		if (*same)
			res = hsm_buf_set(d, alt_d.data, alt_d.len);
		hsm_buf_free(&alt_d);
		if (hsm_failed(res))
			goto out;
	}
out:
	hsm_buf_free(&alt);
	return res;
}

/*
 * The material must be key material of ref's spec, checked in full (here
 * only: too costly for every load), and asymmetric keys work for ref's usage.
 */
static hsm_result check_material(const hsm_ks_keyref *ref, const hsm_buf *pt, hsm_material **out)
{
	hsm_result r = hsm_material_import(ref->spec, pt->data, pt->len, out);
	if (hsm_ok(r)) {
		r = hsm_material_check_private(*out);
		if (hsm_failed(r)) {
			hsm_material_free(*out);
			*out = NULL;
		}
	}
	if (r.err == HSM_ERR_VALIDATION) {
		/* The reason names lengths, types and sizes, never the bytes. */
		char why[HSM_ERRMSG_MAX];
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		return HSM_FAIL(HSM_ERR_INCORRECT_KEY_MATERIAL, "the key material is not a %s key: %s",
		                hsm_spec_name(ref->spec), why);
	}
	HSM_GUARD(r);
	if (!hsm_spec_is_asymmetric(ref->spec))
		return HSM_SUCCESS;
	r = hsm_material_pairwise_test(*out, ref->usage);
	if (hsm_failed(r)) {
		hsm_material_free(*out);
		*out = NULL;
		if (r.err == HSM_ERR_NOMEM) /* no verdict on the material */
			return r;
		return HSM_FAIL(HSM_ERR_INCORRECT_KEY_MATERIAL,
		                "the key material fails its pairwise test for %s",
		                hsm_usage_name(ref->usage));
	}
	return HSM_SUCCESS;
}

hsm_result hsm_ks_import_material(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                  const uint8_t *token, size_t token_len, const uint8_t *enc,
                                  size_t enc_len, int64_t now, const hsm_ks_known_material *known,
                                  size_t n_known, size_t *match, hsm_buf *wrapped,
                                  hsm_buf *public_der, hsm_buf *digest)
{
	hsm_result res = HSM_SUCCESS;
	hsm_material *key = NULL, *m = NULL;
	hsm_wrap_alg alg = HSM_WRAP_RSAES_OAEP_SHA_256;
	hsm_buf pt, canonical, pub = {0}, d = {0};
	hsm_buf_init_secure(&pt);
	hsm_buf_init_secure(&canonical);
	hsm_ks_keyref to = *ref;
	HSM_GUARD(ks_require_unsealed(ks));
	HSM_ENSURE(hsm_spec_allows_usage(ref->spec, ref->usage), HSM_ERR_VALIDATION,
	           "KeyUsage %s is not valid for KeySpec %s", hsm_usage_name(ref->usage),
	           hsm_spec_name(ref->spec));
	HSM_ENSURE(enc_len > 0 && enc_len <= ENCRYPTED_MATERIAL_MAX, HSM_ERR_VALIDATION,
	           "EncryptedKeyMaterial must be 1 to %d bytes", ENCRYPTED_MATERIAL_MAX);
	HSM_TRY(token_open(ks, ref->key_id, token, token_len, now, &alg, &key));
	HSM_TRY(unwrap_material(key, alg, enc, enc_len, &pt));
	HSM_TRY(check_material(ref, &pt, &m));
	/* Stored as hsmd stores generated material: raw or re-encoded PKCS#8, whatever came in. */
	HSM_TRY(hsm_material_export(m, &canonical));
	bool asym = hsm_spec_is_asymmetric(ref->spec);
	if (asym)
		HSM_TRY(hsm_material_public_der(m, &pub));
	const hsm_buf *id = asym ? &pub : &canonical; /* what identifies the material */
	size_t i = 0;
	for (; i < n_known; i++) {
		bool same = false;
		to.version = known[i].version;
		HSM_TRY(same_material(ks, &to, id, known[i].digest, &d, &same));
		if (same)
			break;
	}
	if (i == n_known) {
		to.version = ref->version;
		HSM_TRY(material_digest(ks, &to, id->data, id->len, &d));
	}
	HSM_TRY(ks_wrap_material(ks, &to, &canonical, wrapped));
	if (asym)
		HSM_TRY(hsm_buf_set(public_der, pub.data, pub.len));
	HSM_TRY(hsm_buf_set(digest, d.data, d.len));
	*match = i;
out:
	hsm_material_free(key);
	hsm_material_free(m);
	hsm_buf_free(&pt);
	hsm_buf_free(&canonical);
	hsm_buf_free(&pub);
	hsm_buf_free(&d);
	return res;
}
