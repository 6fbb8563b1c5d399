/*
 * master.c - the domain master key: init, unseal from custodian shares,
 * seal, and the keys derived from it.
 *
 * The DMK itself lives only for the moment it takes to check it against the
 * key check value and derive the per-purpose keys (HKDF-SHA256, salt = store
 * id, one label per purpose), then it is wiped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "common/log.h"
#include "keystore/keystore_internal.h"

#define LABEL_KCV "hsmd/v1/kcv"
#define LABEL_MATERIAL "hsmd/v1/wrap/key-material"
#define LABEL_PRINCIPAL "hsmd/v1/wrap/principal-secret"
#define LABEL_AUDIT "hsmd/v1/wrap/audit-signing-key"
#define LABEL_AUDIT_HASH "hsmd/v1/audit-hash"
#define LABEL_BACKUP "hsmd/v1/backup"
#define LABEL_IMPORT_TOKEN "hsmd/v1/wrap/import-token"
#define LABEL_IMPORT_DIGEST "hsmd/v1/import-digest"
#define AAD_AUDIT_KEY "hsmd/v1/audit-signing-key"
/* Keys that outlive a rekey (rekey.c) are kept wrapped under this one. */
#define LABEL_CARRIED "hsmd/v1/wrap/carried-key"
#define AAD_IMPORT_DIGEST_KEY "hsmd/v1/import-digest-key"

hsm_result ks_wrap(const hsm_secret *key, const hsm_buf *aad, const uint8_t *pt, size_t n,
                   hsm_buf *out)
{
	uint8_t iv[HSM_GCM_IV_LEN], tag[HSM_GCM_TAG_LEN];
	HSM_GUARD(hsm_random_iv(iv));
	HSM_GUARD(hsm_buf_put_u8(out, KS_WRAP_VERSION));
	HSM_GUARD(hsm_buf_put(out, iv, sizeof(iv)));
	HSM_GUARD(hsm_aes_gcm_seal_raw(key, iv, aad->data, aad->len, pt, n, out, tag));
	return hsm_buf_put(out, tag, sizeof(tag));
}

hsm_result ks_unwrap(const hsm_secret *key, const hsm_buf *aad, const uint8_t *p, size_t n,
                     hsm_buf *pt)
{
	hsm_cursor c;
	uint8_t version;
	const uint8_t *iv, *ct, *tag;
	hsm_cursor_init(&c, p, n);
	HSM_ENSURE(n >= 1 + HSM_GCM_IV_LEN + HSM_GCM_TAG_LEN, HSM_ERR_KEY_UNAVAILABLE,
	           "wrapped secret is truncated");
	size_t ct_len = n - 1 - HSM_GCM_IV_LEN - HSM_GCM_TAG_LEN;
	HSM_GUARD(hsm_cursor_get_u8(&c, &version, HSM_ERR_KEY_UNAVAILABLE));
	HSM_ENSURE(version == KS_WRAP_VERSION, HSM_ERR_KEY_UNAVAILABLE,
	           "wrapped secret has unknown format %u", version);
	HSM_GUARD(hsm_cursor_get_bytes(&c, HSM_GCM_IV_LEN, &iv, HSM_ERR_KEY_UNAVAILABLE));
	HSM_GUARD(hsm_cursor_get_bytes(&c, ct_len, &ct, HSM_ERR_KEY_UNAVAILABLE));
	HSM_GUARD(hsm_cursor_get_bytes(&c, HSM_GCM_TAG_LEN, &tag, HSM_ERR_KEY_UNAVAILABLE));
	hsm_result r = hsm_aes_gcm_open_raw(key, iv, aad->data, aad->len, ct, ct_len, tag, pt);
	/* Only a tag that did not verify is a tampered store: short of memory is no such alarm. */
	HSM_GUARD(r.err == HSM_ERR_INVALID_CIPHERTEXT ? HSM_SUCCESS : r);
	HSM_ENSURE(hsm_ok(r), HSM_ERR_KEY_UNAVAILABLE,
	           "stored secret failed its integrity check (edited, moved or wrong master key)");
	return HSM_SUCCESS;
}

hsm_result ks_material_aad(const hsm_ks_keyref *ref, hsm_buf *aad)
{
	HSM_GUARD(hsm_buf_put_lp(aad, "hsmd/v1/key-material", 20));
	HSM_GUARD(hsm_buf_put_lp(aad, ref->key_id, strlen(ref->key_id)));
	HSM_GUARD(hsm_buf_put_u32(aad, ref->version));
	const char *spec = hsm_spec_name(ref->spec), *usage = hsm_usage_name(ref->usage);
	HSM_GUARD(hsm_buf_put_lp(aad, spec, strlen(spec)));
	return hsm_buf_put_lp(aad, usage, strlen(usage));
}

/* AAD binding the wrapped audit signing key to its store. */
static hsm_result audit_key_aad(const char *store_id, hsm_buf *aad)
{
	HSM_GUARD(hsm_buf_put_lp(aad, AAD_AUDIT_KEY, strlen(AAD_AUDIT_KEY)));
	return hsm_buf_put_lp(aad, store_id, strlen(store_id));
}

void ks_keys_wipe(ks_keys *k)
{
	hsm_secret_free(k->material);
	hsm_secret_free(k->principal);
	hsm_secret_free(k->audit);
	hsm_secret_free(k->audit_hash);
	hsm_hmac_pool_free(k->audit_hash_macs); /* wiped once the last loan is back */
	hsm_secret_free(k->backup);
	hsm_secret_free(k->import_token);
	hsm_secret_free(k->import_digest);
	hsm_material_free(k->audit_signer);
	memset(k, 0, sizeof(*k));
}

static hsm_result derive(const hsm_secret *dmk, const char *store_id, const char *label,
                         size_t len, hsm_secret **out)
{
	return hsm_hkdf_sha256(dmk, (const uint8_t *)store_id, strlen(store_id), label, len, out);
}

hsm_result ks_derive_all(const hsm_secret *dmk, const char *store_id, ks_keys *k)
{
	hsm_result res = HSM_SUCCESS;
	ks_keys t = {0};
	HSM_TRY(derive(dmk, store_id, LABEL_MATERIAL, HSM_AES_KEY_LEN, &t.material));
	HSM_TRY(derive(dmk, store_id, LABEL_PRINCIPAL, HSM_AES_KEY_LEN, &t.principal));
	HSM_TRY(derive(dmk, store_id, LABEL_AUDIT, HSM_AES_KEY_LEN, &t.audit));
	HSM_TRY(derive(dmk, store_id, LABEL_AUDIT_HASH, HSM_SHA256_LEN, &t.audit_hash));
	HSM_TRY(hsm_hmac_pool_new(hsm_secret_bytes(t.audit_hash), hsm_secret_len(t.audit_hash),
	                          &t.audit_hash_macs));
	HSM_TRY(derive(dmk, store_id, LABEL_BACKUP, HSM_SHA256_LEN, &t.backup));
	HSM_TRY(derive(dmk, store_id, LABEL_IMPORT_TOKEN, HSM_AES_KEY_LEN, &t.import_token));
	HSM_TRY(derive(dmk, store_id, LABEL_IMPORT_DIGEST, HSM_SHA256_LEN, &t.import_digest));
	*k = t;
	memset(&t, 0, sizeof(t));
out:
	ks_keys_wipe(&t);
	return res;
}

hsm_result ks_compute_kcv(const hsm_secret *dmk, const char *store_id, uint8_t kcv[KS_KCV_LEN])
{
	hsm_secret *v = NULL;
	HSM_GUARD(derive(dmk, store_id, LABEL_KCV, KS_KCV_LEN, &v));
	memcpy(kcv, hsm_secret_bytes(v), KS_KCV_LEN);
	hsm_secret_free(v);
	return HSM_SUCCESS;
}

/* ---- meta ---------------------------------------------------------------- */

static hsm_result meta_text(hsm_store *s, const char *name, char *out, size_t cap)
{
	hsm_buf b = {0};
	hsm_result res = HSM_SUCCESS;
	HSM_TRY(hsm_store_meta_get(s, name, &b));
	HSM_CHECK(b.len < cap, HSM_ERR_STORE, "store metadata '%s' is malformed", name);
	memcpy(out, b.data, b.len);
	out[b.len] = '\0';
out:
	hsm_buf_free(&b);
	return res;
}

static hsm_result meta_uint(hsm_store *s, const char *name, unsigned max, unsigned *out)
{
	char text[16];
	int64_t v;
	HSM_GUARD(meta_text(s, name, text, sizeof(text)));
	hsm_result r = hsm_parse_i64(text, 1, max, &v);
	HSM_ENSURE(hsm_ok(r), HSM_ERR_STORE, "store metadata '%s' is malformed", name);
	*out = (unsigned)v;
	return HSM_SUCCESS;
}

static hsm_result meta_hex(hsm_store *s, const char *name, uint8_t *out, size_t n)
{
	char text[2 * 64 + 1];
	HSM_ASSERT(n <= 64);
	HSM_GUARD(meta_text(s, name, text, sizeof(text)));
	hsm_result r = hsm_hex_decode_exact(out, n, text, strlen(text), HSM_ERR_STORE);
	HSM_ENSURE(hsm_ok(r), HSM_ERR_STORE, "store metadata '%s' is malformed", name);
	return HSM_SUCCESS;
}

bool hsm_keystore_master_replaced(hsm_keystore *ks)
{
	uint8_t set_id[sizeof(ks->set_id)], kcv[sizeof(ks->kcv)];
	if (ks->store == NULL ||
	    hsm_failed(meta_hex(ks->store, META_SHARE_SET, set_id, sizeof(set_id))) ||
	    hsm_failed(meta_hex(ks->store, META_KCV, kcv, sizeof(kcv))))
		return false;
	pthread_mutex_lock(&ks->lock);
	bool same_set = hsm_ct_equal(set_id, ks->set_id, sizeof(set_id));
	bool same_kcv = hsm_ct_equal(kcv, ks->kcv, sizeof(kcv)); /* both compared, whatever the first */
	bool same = same_set && same_kcv;
	pthread_mutex_unlock(&ks->lock);
	return !same;
}

hsm_result ks_load_meta(hsm_keystore *ks)
{
	HSM_GUARD(meta_text(ks->store, META_STORE_ID, ks->store_id, sizeof(ks->store_id)));
	HSM_ENSURE(hsm_is_uuid(ks->store_id), HSM_ERR_STORE, "store id is malformed");
	HSM_GUARD(meta_hex(ks->store, META_SHARE_SET, ks->set_id, sizeof(ks->set_id)));
	HSM_GUARD(meta_hex(ks->store, META_KCV, ks->kcv, sizeof(ks->kcv)));
	unsigned threshold = 0, count = 0;
	HSM_GUARD(meta_uint(ks->store, META_THRESHOLD, HSM_MAX_SHARES, &threshold));
	HSM_GUARD(meta_uint(ks->store, META_SHARES, HSM_MAX_SHARES, &count));
	HSM_ENSURE(threshold <= count, HSM_ERR_STORE, "store quorum settings are malformed");
	ks->threshold = threshold;
	ks->count = count;
	hsm_buf commits = {0};
	hsm_result r = hsm_store_meta_get(ks->store, META_SHARE_COMMITS, &commits);
	if (r.err == HSM_ERR_NOT_FOUND)
		r = ks_set_commits(ks, NULL, 0); /* a store from before commitments */
	else if (hsm_ok(r))
		r = ks_set_commits(ks, commits.data, commits.len);
	hsm_buf_free(&commits);
	return r;
}

hsm_result ks_set_commits(hsm_keystore *ks, const uint8_t *hex, size_t len)
{
	static const char v2[] = META_COMMITS_V2_PREFIX;
	unsigned version = HSM_SHARE_COMMIT_V1; /* bare hex: a split made by an earlier hsmd */
	ks->n_commits = 0;
	if (len == 0)
		return HSM_SUCCESS;
	if (len >= sizeof(v2) - 1 && strncmp((const char *)hex, v2, sizeof(v2) - 1) == 0) {
		version = HSM_SHARE_COMMIT_V2;
		hex += sizeof(v2) - 1;
		len -= sizeof(v2) - 1;
	}
	HSM_ENSURE(len == (size_t)ks->count * 2 * HSM_SHARE_COMMIT_LEN, HSM_ERR_STORE,
	           "store metadata '%s' is malformed", META_SHARE_COMMITS);
	hsm_result r = hsm_hex_decode_exact(&ks->commits[0][0], ks->count * HSM_SHARE_COMMIT_LEN,
	                                    (const char *)hex, len, HSM_ERR_STORE);
	HSM_ENSURE(hsm_ok(r), HSM_ERR_STORE, "store metadata '%s' is malformed", META_SHARE_COMMITS);
	ks->commits_version = version;
	ks->n_commits = ks->count;
	return HSM_SUCCESS;
}

/*
 * Several nodes may share one store (PostgreSQL): a node that started before
 * another node initialized the store still believes it uninitialized.  Under
 * ks->lock, reads the store again and moves an uninitialized node to Sealed
 * when the store now holds a master key.  A read failure leaves it as it was.
 */
static void refresh_uninitialized(hsm_keystore *ks)
{
	if (ks->store == NULL || atomic_load(&ks->state) != HSM_NODE_UNINITIALIZED)
		return;
	hsm_buf probe = {0};
	hsm_result meta = hsm_store_meta_get(ks->store, META_STORE_ID, &probe);
	hsm_buf_free(&probe);
	if (hsm_failed(meta))
		return;
	if (hsm_failed(ks_load_meta(ks))) {
		ks->store_id[0] = '\0';
		return;
	}
	atomic_store(&ks->state, HSM_NODE_SEALED);
	hsm_info("store %s was initialized by another node; this node is sealed", ks->store_id);
}

/* ---- audit signing key ---------------------------------------------------- */

/* Creates the audit signing key: wrapped PKCS#8 into *wrapped, PEM public key into *pem. */
static hsm_result make_audit_key(const ks_keys *k, const char *store_id, hsm_material **signer,
                                 hsm_buf *wrapped, hsm_buf *pem)
{
	hsm_result res = HSM_SUCCESS;
	hsm_material *m = NULL;
	hsm_buf pkcs8, aad = {0}, der = {0};
	hsm_buf_init_secure(&pkcs8);
	HSM_TRY(hsm_material_generate(HSM_SPEC_ECC_NIST_EDWARDS25519, &m));
	HSM_TRY(hsm_material_export(m, &pkcs8));
	HSM_TRY(audit_key_aad(store_id, &aad));
	HSM_TRY(ks_wrap(k->audit, &aad, pkcs8.data, pkcs8.len, wrapped));
	HSM_TRY(hsm_material_public_der(m, &der));
	HSM_TRY(hsm_buf_put_str(pem, "-----BEGIN PUBLIC KEY-----\n"));
	HSM_TRY(hsm_b64_encode(pem, der.data, der.len));
	HSM_TRY(hsm_buf_put_str(pem, "\n-----END PUBLIC KEY-----\n"));
	*signer = m;
	m = NULL;
out:
	hsm_material_free(m);
	hsm_buf_free(&pkcs8);
	hsm_buf_free(&aad);
	hsm_buf_free(&der);
	return res;
}

hsm_result ks_load_audit_key(hsm_keystore *ks, const hsm_secret *from, hsm_material **signer,
                             const hsm_secret *rewrap_to, hsm_buf *rewrapped)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf wrapped = {0}, aad = {0}, pkcs8;
	hsm_buf_init_secure(&pkcs8);
	HSM_TRY(hsm_store_meta_get(ks->store, META_AUDIT_KEY, &wrapped));
	HSM_TRY(audit_key_aad(ks->store_id, &aad));
	HSM_TRY(ks_unwrap(from, &aad, wrapped.data, wrapped.len, &pkcs8));
	if (rewrap_to != NULL)
		HSM_TRY(ks_wrap(rewrap_to, &aad, pkcs8.data, pkcs8.len, rewrapped));
	HSM_TRY(hsm_material_import(HSM_SPEC_ECC_NIST_EDWARDS25519, pkcs8.data, pkcs8.len, signer));
out:
	hsm_buf_free(&wrapped);
	hsm_buf_free(&aad);
	hsm_buf_free(&pkcs8);
	return res;
}

/* ---- keys carried across a rekey ------------------------------------------------ */

static hsm_result carried_wrap_key(const hsm_secret *dmk, const char *store_id, hsm_secret **out)
{
	return derive(dmk, store_id, LABEL_CARRIED, HSM_AES_KEY_LEN, out);
}

static hsm_result import_digest_aad(const char *store_id, hsm_buf *aad)
{
	HSM_GUARD(hsm_buf_put_lp(aad, AAD_IMPORT_DIGEST_KEY, strlen(AAD_IMPORT_DIGEST_KEY)));
	return hsm_buf_put_lp(aad, store_id, strlen(store_id));
}

hsm_result ks_wrap_import_digest_key(const hsm_secret *dmk, const char *store_id,
                                     const hsm_secret *digest_key, hsm_buf *out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_secret *kek = NULL;
	hsm_buf aad = {0};
	HSM_TRY(carried_wrap_key(dmk, store_id, &kek));
	HSM_TRY(import_digest_aad(store_id, &aad));
	HSM_TRY(ks_wrap(kek, &aad, hsm_secret_bytes(digest_key), hsm_secret_len(digest_key), out));
out:
	hsm_secret_free(kek);
	hsm_buf_free(&aad);
	return res;
}

/*
 * The import-digest key of a store that was rekeyed: digests of imported
 * material stay valid across rekeys (a reimport of erased material must
 * match the digest kept for it), so the first master key's derived key is
 * carried, wrapped under each new one.  A store never rekeyed has none.
 */
static hsm_result load_import_digest_key(hsm_keystore *ks, const hsm_secret *dmk, ks_keys *k)
{
	hsm_result res = HSM_SUCCESS;
	hsm_secret *kek = NULL, *key = NULL;
	hsm_buf wrapped = {0}, aad = {0}, pt;
	hsm_buf_init_secure(&pt);
	hsm_result got = hsm_store_meta_get(ks->store, META_IMPORT_DIGEST_KEY, &wrapped);
	if (got.err == HSM_ERR_NOT_FOUND)
		goto out;
	HSM_TRY(got);
	HSM_TRY(carried_wrap_key(dmk, ks->store_id, &kek));
	HSM_TRY(import_digest_aad(ks->store_id, &aad));
	HSM_TRY(ks_unwrap(kek, &aad, wrapped.data, wrapped.len, &pt));
	HSM_TRY(hsm_secret_from(pt.data, pt.len, &key));
	hsm_secret_free(k->import_digest);
	k->import_digest = key;
	key = NULL;
out:
	hsm_secret_free(kek);
	hsm_secret_free(key);
	hsm_buf_free(&wrapped);
	hsm_buf_free(&aad);
	hsm_buf_free(&pt);
	return res;
}

/* ---- init ------------------------------------------------------------------- */

hsm_result hsm_keystore_check_quorum(unsigned threshold, unsigned count, bool dev)
{
	if (dev && threshold == 1 && count == 1)
		return HSM_SUCCESS;
	HSM_ENSURE(count >= 2 && count <= HSM_MAX_SHARES, HSM_ERR_VALIDATION,
	           "shares must be between 2 and %d (1-of-1 only in dev mode)", HSM_MAX_SHARES);
	HSM_ENSURE(threshold >= 2 && threshold <= count, HSM_ERR_VALIDATION,
	           "threshold must be between 2 and the number of shares (%u)", count);
	return HSM_SUCCESS;
}

struct hsm_ks_init {
	char store_id[HSM_UUID_STRLEN + 1];
	uint8_t set_id[KS_SET_ID_LEN];
	uint8_t kcv[KS_KCV_LEN];
	unsigned threshold, count;
	bool dev;
	ks_keys keys;          /* derived from the new DMK, with the audit signer */
	hsm_buf audit_wrapped; /* META_AUDIT_KEY */
	hsm_buf audit_pem;     /* META_AUDIT_PUB */
	hsm_buf commits;       /* META_SHARE_COMMITS */
};

void hsm_ks_init_free(hsm_ks_init *in)
{
	if (in == NULL)
		return;
	ks_keys_wipe(&in->keys);
	hsm_buf_free(&in->audit_wrapped);
	hsm_buf_free(&in->audit_pem);
	hsm_buf_free(&in->commits);
	free(in);
}

void hsm_ks_init_identity(const hsm_ks_init *in, hsm_ks_identity *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->store_id, in->store_id, sizeof(out->store_id));
	memcpy(out->set_id, in->set_id, sizeof(out->set_id));
	memcpy(out->kcv, in->kcv, sizeof(out->kcv));
	out->threshold = in->threshold;
	out->count = in->count;
}

hsm_result hsm_ks_init_audit_public_pem(const hsm_ks_init *in, hsm_buf *out)
{
	return hsm_buf_put(out, in->audit_pem.data, in->audit_pem.len);
}

static hsm_result put_init_meta(hsm_keystore *ks, const hsm_ks_init *in)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf id = {0}, set = {0}, thr = {0}, cnt = {0}, kcv = {0}, created = {0}, devb = {0};
	HSM_TRY(hsm_buf_put_str(&id, in->store_id));
	HSM_TRY(hsm_hex_encode(&set, in->set_id, sizeof(in->set_id)));
	HSM_TRY(hsm_buf_printf(&thr, "%u", in->threshold));
	HSM_TRY(hsm_buf_printf(&cnt, "%u", in->count));
	HSM_TRY(hsm_hex_encode(&kcv, in->kcv, sizeof(in->kcv)));
	HSM_TRY(hsm_buf_printf(&created, "%lld", (long long)hsm_now()));
	HSM_TRY(hsm_buf_put_str(&devb, in->dev ? "1" : "0"));
	const char *names[] = {META_STORE_ID, META_SHARE_SET, META_THRESHOLD, META_SHARES,
	                       META_KCV,      META_CREATED,   META_DEV,       META_AUDIT_KEY,
	                       META_AUDIT_PUB, META_SHARE_COMMITS};
	const hsm_buf *values[] = {&id,      &set,  &thr,      &cnt,          &kcv,
	                           &created, &devb, &in->audit_wrapped, &in->audit_pem,
	                           &in->commits};
	HSM_TRY(hsm_store_meta_put(ks->store, sizeof(names) / sizeof(names[0]), names, values));
out:
	hsm_buf_free(&id);
	hsm_buf_free(&set);
	hsm_buf_free(&thr);
	hsm_buf_free(&cnt);
	hsm_buf_free(&kcv);
	hsm_buf_free(&created);
	hsm_buf_free(&devb);
	return res;
}

hsm_result ks_encode_shares(const hsm_secret *dmk, const char *store_id,
                            const uint8_t set_id[KS_SET_ID_LEN], unsigned threshold,
                            unsigned count, const char *const custodians[], bool dev,
                            hsm_buf out[], hsm_buf *commits)
{
	hsm_result res = HSM_SUCCESS;
	hsm_share shares[HSM_MAX_SHARES];
	memset(shares, 0, sizeof(shares));
	HSM_TRY(hsm_shares_create(dmk, store_id, set_id, threshold, count, custodians, dev, shares));
	HSM_TRY(hsm_buf_put_str(commits, META_COMMITS_V2_PREFIX));
	for (unsigned i = 0; i < count; i++) {
		uint8_t c[HSM_SHARE_COMMIT_LEN];
		hsm_buf_init_secure(&out[i]);
		HSM_TRY(hsm_share_encode(&shares[i], &out[i]));
		HSM_ASSERT(shares[i].index == i + 1);
		HSM_TRY(hsm_share_commitment(&shares[i], HSM_SHARE_COMMIT_CURRENT, c));
		HSM_TRY(hsm_hex_encode(commits, c, sizeof(c)));
	}
out:
	for (unsigned i = 0; i < count; i++)
		hsm_share_clear(&shares[i]);
	if (hsm_failed(res))
		for (unsigned i = 0; i < count; i++)
			hsm_buf_free(&out[i]);
	return res;
}

/* Under ks->lock: the new DMK, its derived keys, the audit key and the shares. */
static hsm_result prepare_init_locked(hsm_keystore *ks, hsm_ks_init *in,
                                      const char *const custodians[], hsm_buf shares_out[])
{
	hsm_result res = HSM_SUCCESS;
	hsm_secret *dmk = NULL;
	HSM_CHECK(atomic_load(&ks->state) != HSM_NODE_ERROR, HSM_ERR_NODE_ERROR,
	          "node is in the error state: %s", ks->error_reason);
	refresh_uninitialized(ks);
	HSM_CHECK(atomic_load(&ks->state) == HSM_NODE_UNINITIALIZED, HSM_ERR_CONFLICT,
	          "this store is already initialized (store id %s)", ks->store_id);
	HSM_TRY(hsm_keystore_check_quorum(in->threshold, in->count, in->dev));
	HSM_TRY(hsm_uuid_new(in->store_id));
	HSM_TRY(hsm_random_bytes(in->set_id, sizeof(in->set_id)));
	HSM_TRY(hsm_secret_random(HSM_AES_KEY_LEN, &dmk));
	HSM_TRY(ks_compute_kcv(dmk, in->store_id, in->kcv));
	HSM_TRY(ks_derive_all(dmk, in->store_id, &in->keys));
	HSM_TRY(make_audit_key(&in->keys, in->store_id, &in->keys.audit_signer, &in->audit_wrapped,
	                       &in->audit_pem));
	HSM_TRY(ks_encode_shares(dmk, in->store_id, in->set_id, in->threshold, in->count,
	                         custodians, in->dev, shares_out, &in->commits));
out:
	hsm_secret_free(dmk);
	return res;
}

hsm_result hsm_ks_init_prepare(hsm_keystore *ks, unsigned threshold, unsigned count,
                               const char *const custodians[], bool dev, hsm_buf shares_out[],
                               hsm_ks_init **out)
{
	hsm_ks_init *in = calloc(1, sizeof(*in));
	HSM_ENSURE(in != NULL, HSM_ERR_NOMEM, "out of memory");
	in->threshold = threshold;
	in->count = count;
	in->dev = dev;
	pthread_mutex_lock(&ks->lock);
	hsm_result res = prepare_init_locked(ks, in, custodians, shares_out);
	pthread_mutex_unlock(&ks->lock);
	if (hsm_failed(res)) {
		hsm_ks_init_free(in);
		return res;
	}
	*out = in;
	return HSM_SUCCESS;
}

/* After a failed commit: does the store hold this ceremony's store id? */
static hsm_ks_init_outcome init_read_back(hsm_keystore *ks, const hsm_ks_init *in)
{
	char id[HSM_UUID_STRLEN + 1];
	hsm_result r = meta_text(ks->store, META_STORE_ID, id, sizeof(id));
	if (r.err == HSM_ERR_NOT_FOUND)
		return HSM_KS_INIT_UNCHANGED;
	if (hsm_failed(r))
		return HSM_KS_INIT_UNKNOWN;
	return strcmp(id, in->store_id) == 0 ? HSM_KS_INIT_DONE : HSM_KS_INIT_UNCHANGED;
}

static hsm_result commit_init_locked(hsm_keystore *ks, hsm_ks_init *in,
                                     hsm_ks_init_outcome *outcome)
{
	hsm_result res = HSM_SUCCESS;
	*outcome = HSM_KS_INIT_UNCHANGED;
	HSM_CHECK(atomic_load(&ks->state) != HSM_NODE_ERROR, HSM_ERR_NODE_ERROR,
	          "node is in the error state: %s", ks->error_reason);
	HSM_CHECK(in->keys.material != NULL, HSM_ERR_VALIDATION, "this init cannot be committed");
	refresh_uninitialized(ks);
	HSM_CHECK(atomic_load(&ks->state) == HSM_NODE_UNINITIALIZED, HSM_ERR_CONFLICT,
	          "this store was initialized by another node meanwhile (store id %s)",
	          ks->store_id);
	res = put_init_meta(ks, in);
	if (hsm_failed(res)) {
		char why[HSM_ERRMSG_MAX];
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		*outcome = init_read_back(ks, in);
		if (*outcome != HSM_KS_INIT_DONE) {
			/* ALREADY_EXISTS: another node sharing the store initialized it first. */
			if (*outcome == HSM_KS_INIT_UNCHANGED)
				refresh_uninitialized(ks);
			res = res.err == HSM_ERR_ALREADY_EXISTS
			          ? HSM_FAIL(HSM_ERR_CONFLICT,
			                     "this store was initialized by another node meanwhile")
			          : HSM_FAIL(res.err, "%s", why);
			goto out;
		}
		hsm_warn("init: committed, then: %s", why);
		res = HSM_SUCCESS;
	}
	*outcome = HSM_KS_INIT_DONE;
	memcpy(ks->store_id, in->store_id, sizeof(ks->store_id));
	memcpy(ks->set_id, in->set_id, sizeof(ks->set_id));
	memcpy(ks->kcv, in->kcv, sizeof(ks->kcv));
	ks->threshold = in->threshold;
	ks->count = in->count;
	if (hsm_failed(ks_set_commits(ks, in->commits.data, in->commits.len)))
		ks->n_commits = 0; /* cannot be: made here; the next unseal reads the store's */
	pthread_rwlock_wrlock(&ks->keys_lock);
	ks->keys = in->keys;
	memset(&in->keys, 0, sizeof(in->keys));
	pthread_rwlock_unlock(&ks->keys_lock);
	atomic_store(&ks->state, HSM_NODE_UNSEALED);
	hsm_info("store %s initialized: %u-of-%u custodian quorum", ks->store_id, ks->threshold,
	         ks->count);
out:
	return res;
}

hsm_result hsm_ks_init_commit(hsm_keystore *ks, hsm_ks_init *in, hsm_ks_init_outcome *outcome)
{
	pthread_mutex_lock(&ks->lock);
	hsm_result r = commit_init_locked(ks, in, outcome);
	pthread_mutex_unlock(&ks->lock);
	return r;
}

hsm_result hsm_keystore_init(hsm_keystore *ks, unsigned threshold, unsigned count,
                             const char *const custodians[], bool dev, hsm_buf shares_out[])
{
	hsm_ks_init *in = NULL;
	hsm_ks_init_outcome outcome;
	HSM_GUARD(hsm_ks_init_prepare(ks, threshold, count, custodians, dev, shares_out, &in));
	hsm_result r = hsm_ks_init_commit(ks, in, &outcome);
	hsm_ks_init_free(in);
	if (hsm_failed(r))
		for (unsigned i = 0; i < count; i++)
			hsm_buf_free(&shares_out[i]);
	return r;
}

/* ---- unseal / seal ---------------------------------------------------------- */

static void progress_of(hsm_keystore *ks, hsm_unseal_progress *p)
{
	p->threshold = ks->threshold;
	p->have = ks->pending != NULL ? hsm_share_set_have(ks->pending) : 0;
	p->unsealed = atomic_load(&ks->state) == HSM_NODE_UNSEALED;
	if (p->unsealed)
		p->have = ks->threshold;
}

/* Reconstructs, checks and installs the DMK-derived keys once the quorum is met. */
static hsm_result complete_unseal(hsm_keystore *ks)
{
	hsm_result res = HSM_SUCCESS;
	hsm_secret *dmk = NULL;
	ks_keys keys = {0};
	uint8_t kcv[KS_KCV_LEN];
	HSM_TRY(hsm_share_set_combine(ks->pending, &dmk));
	HSM_TRY(ks_compute_kcv(dmk, ks->store_id, kcv));
	HSM_CHECK(hsm_ct_equal(kcv, ks->kcv, sizeof(kcv)), HSM_ERR_WRONG_MASTER_KEY,
	          "the shares do not reconstruct this store's master key (key check value "
	          "mismatch); all shares given so far were discarded");
	HSM_TRY(ks_derive_all(dmk, ks->store_id, &keys));
	if (ks->store != NULL) { /* a detached keystore has no audit key to load */
		HSM_TRY(ks_load_audit_key(ks, keys.audit, &keys.audit_signer, NULL, NULL));
		HSM_TRY(load_import_digest_key(ks, dmk, &keys));
	}
	pthread_rwlock_wrlock(&ks->keys_lock);
	ks->keys = keys;
	memset(&keys, 0, sizeof(keys));
	pthread_rwlock_unlock(&ks->keys_lock);
	atomic_store(&ks->state, HSM_NODE_UNSEALED);
	if (ks->keep_quorum && ks->n_commits == 0) { /* see hsm_keystore::quorum */
		hsm_share_set_free(ks->quorum);
		ks->quorum = ks->pending;
		ks->pending = NULL;
	}
out:
	hsm_share_set_free(ks->pending);
	ks->pending = NULL;
	hsm_secret_free(dmk);
	ks_keys_wipe(&keys);
	return res;
}

void ks_forget_shares(hsm_keystore *ks)
{
	hsm_share_set_free(ks->pending);
	ks->pending = NULL;
	hsm_share_set_free(ks->quorum);
	ks->quorum = NULL;
	memset(ks->given, 0, sizeof(ks->given));
}

static bool was_given(const hsm_keystore *ks, unsigned index)
{
	return index <= HSM_MAX_SHARES && (((unsigned)ks->given[index / 8] >> (index % 8)) & 1U) != 0;
}

static void note_given(hsm_keystore *ks, unsigned index)
{
	if (index <= HSM_MAX_SHARES)
		ks->given[index / 8] |= (uint8_t)(1U << (index % 8));
}

/* A partial unseal left pending_ttl_ns after its last share is forgotten (shares wiped). */
static void expire_pending(hsm_keystore *ks)
{
	uint64_t ttl = ks->pending_ttl_ns != 0 ? ks->pending_ttl_ns
	                                       : (uint64_t)HSM_UNSEAL_PENDING_TTL_MS * 1000000U;
	if (ks->pending != NULL && hsm_mono_ns() - ks->pending_since_ns > ttl) {
		hsm_warn("an unseal left unfinished for %llu s was abandoned: its %u share(s) are "
		         "forgotten",
		         (unsigned long long)(ttl / 1000000000U), hsm_share_set_have(ks->pending));
		ks->abandoned += hsm_share_set_have(ks->pending);
		hsm_share_set_free(ks->pending);
		ks->pending = NULL;
	}
}

/*
 * A share of this store's current split must be one it issued: checked
 * against the split's commitment before it joins the others, so a forged or
 * altered share is refused by itself and cannot spoil the shares given so
 * far.  (Shares of another store or split are refused by hsm_share_set_add,
 * with their own message.)
 */
static hsm_result check_commitment(const hsm_keystore *ks, const hsm_share *share)
{
	if (ks->n_commits == 0 || strcmp(share->store_id, ks->store_id) != 0 ||
	    !hsm_ct_equal(share->set_id, ks->set_id, sizeof(ks->set_id)) || share->index < 1 ||
	    share->index > ks->n_commits)
		return HSM_SUCCESS;
	uint8_t c[HSM_SHARE_COMMIT_LEN];
	HSM_GUARD(hsm_share_commitment(share, ks->commits_version, c));
	if (hsm_ct_equal(c, ks->commits[share->index - 1], sizeof(c)))
		return HSM_SUCCESS;
	/* Version 1 commitments never bound the name: only version 2 can find a relabelling. */
	return HSM_FAIL(HSM_ERR_SHARE_INVALID,
	                "share %u is not the share this store issued as share %u (%s): refused; "
	                "the shares given so far are kept",
	                share->index, share->index,
	                ks->commits_version == HSM_SHARE_COMMIT_V2
	                    ? "altered, forged, or carrying a custodian name it was not issued to"
	                    : "altered or forged");
}

static hsm_result unseal_locked(hsm_keystore *ks, const uint8_t *file, size_t len,
                                hsm_unseal_progress *progress)
{
	hsm_result res = HSM_SUCCESS;
	hsm_share share;
	memset(&share, 0, sizeof(share));
	progress->share[0] = '\0';
	/* Named before anything can refuse it: a refused share is on the trail too. */
	HSM_TRY(hsm_share_describe(file, len, progress->share, sizeof(progress->share)));
	hsm_node_state st = (hsm_node_state)atomic_load(&ks->state);
	HSM_CHECK(st != HSM_NODE_ERROR, HSM_ERR_NODE_ERROR, "node is in the error state: %s",
	          ks->error_reason);
	refresh_uninitialized(ks);
	st = (hsm_node_state)atomic_load(&ks->state);
	HSM_CHECK(st != HSM_NODE_UNINITIALIZED, HSM_ERR_SEALED,
	          "this store is not initialized: run 'hsmctl init' first");
	HSM_CHECK(st != HSM_NODE_UNSEALED, HSM_ERR_CONFLICT, "the node is already unsealed");
	HSM_TRY(hsm_share_decode(file, len, &share));
	expire_pending(ks);
	/* The first share of an unseal reads the master key's identity again: on a shared
	 * store, `hsmctl rekey` may have replaced it since this node started. */
	if (ks->pending == NULL && ks->store != NULL)
		HSM_TRY(ks_load_meta(ks));
	HSM_TRY(check_commitment(ks, &share));
	if (ks->pending == NULL) {
		HSM_TRY(hsm_share_set_new(ks->store_id, ks->set_id, ks->threshold, ks->count,
		                          &ks->pending));
		memset(ks->given, 0, sizeof(ks->given)); /* a new unseal begins */
		ks->pending_since_ns = hsm_mono_ns();
	}
	res = hsm_share_set_add(ks->pending, &share);
	if (hsm_failed(res)) {
		/* A first share refused begins no unseal: nothing is left pending to expire. */
		if (hsm_share_set_have(ks->pending) == 0) {
			hsm_share_set_free(ks->pending);
			ks->pending = NULL;
		}
		goto out;
	}
	note_given(ks, share.index);
	ks->pending_since_ns = hsm_mono_ns();
	if (hsm_share_set_have(ks->pending) >= ks->threshold)
		HSM_TRY(complete_unseal(ks));
out:
	hsm_share_clear(&share);
	progress_of(ks, progress);
	return res;
}

hsm_result hsm_keystore_unseal(hsm_keystore *ks, const uint8_t *share_file, size_t len,
                               hsm_unseal_progress *progress)
{
	pthread_mutex_lock(&ks->lock);
	hsm_result r = unseal_locked(ks, share_file, len, progress);
	pthread_mutex_unlock(&ks->lock);
	if (hsm_ok(r) && progress->unsealed)
		hsm_info("store %s unsealed", ks->store_id);
	return r;
}

hsm_result hsm_keystore_check_share(hsm_keystore *ks, const uint8_t *share_file, size_t len,
                                    hsm_unseal_progress *progress)
{
	hsm_result res = HSM_SUCCESS;
	hsm_share share;
	hsm_share_set *set = NULL;
	memset(&share, 0, sizeof(share));
	pthread_mutex_lock(&ks->lock);
	progress->share[0] = '\0';
	HSM_TRY(hsm_share_describe(share_file, len, progress->share, sizeof(progress->share)));
	HSM_TRY(hsm_share_decode(share_file, len, &share));
	HSM_TRY(check_commitment(ks, &share));
	HSM_TRY(hsm_share_set_new(ks->store_id, ks->set_id, ks->threshold, ks->count, &set));
	/* With no commitments, only the kept quorum can tell a forged share: none, no check. */
	HSM_CHECK(ks->n_commits > 0 || ks->quorum != NULL, HSM_ERR_INTERNAL,
	          "share %u cannot be checked: this store keeps no commitments and the quorum "
	          "that unsealed it was not kept",
	          share.index);
	if (ks->quorum != NULL) /* before the value moves into set */
		HSM_TRY(hsm_share_set_check_member(ks->quorum, &share));
	HSM_TRY(hsm_share_set_add(set, &share)); /* of this store and split, and whole */
	/* A fresh set per share sees no repeat: the indexes given since the unseal do. */
	HSM_CHECK(!was_given(ks, share.index), HSM_ERR_SHARE_DUPLICATE,
	          "share %u was already provided", share.index);
	note_given(ks, share.index);
out:
	hsm_share_set_free(set);
	hsm_share_clear(&share);
	progress_of(ks, progress);
	pthread_mutex_unlock(&ks->lock);
	return res;
}

void hsm_keystore_keep_quorum(hsm_keystore *ks)
{
	pthread_mutex_lock(&ks->lock);
	ks->keep_quorum = true;
	pthread_mutex_unlock(&ks->lock);
}

void hsm_keystore_unseal_status(hsm_keystore *ks, hsm_unseal_progress *progress)
{
	pthread_mutex_lock(&ks->lock);
	refresh_uninitialized(ks);
	expire_pending(ks);
	progress->share[0] = '\0';
	progress_of(ks, progress);
	pthread_mutex_unlock(&ks->lock);
}

void hsm_keystore_set_unseal_ttl_ms(hsm_keystore *ks, uint64_t ms)
{
	pthread_mutex_lock(&ks->lock);
	ks->pending_ttl_ns = ms * 1000000U;
	pthread_mutex_unlock(&ks->lock);
}

unsigned hsm_keystore_unseal_expire(hsm_keystore *ks)
{
	pthread_mutex_lock(&ks->lock);
	expire_pending(ks);
	unsigned n = ks->abandoned;
	ks->abandoned = 0;
	pthread_mutex_unlock(&ks->lock);
	return n;
}

void hsm_keystore_unseal_reset(hsm_keystore *ks)
{
	pthread_mutex_lock(&ks->lock);
	hsm_share_set_free(ks->pending);
	ks->pending = NULL;
	memset(ks->given, 0, sizeof(ks->given));
	pthread_mutex_unlock(&ks->lock);
}

void hsm_keystore_seal(hsm_keystore *ks)
{
	pthread_mutex_lock(&ks->lock);
	if (atomic_load(&ks->state) == HSM_NODE_UNSEALED)
		atomic_store(&ks->state, HSM_NODE_SEALED);
	pthread_rwlock_wrlock(&ks->keys_lock);
	ks_keys_wipe(&ks->keys);
	pthread_rwlock_unlock(&ks->keys_lock);
	ks_cache_drop_all(ks);
	ks_forget_shares(ks);
	pthread_mutex_unlock(&ks->lock);
}
