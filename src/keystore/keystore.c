/*
 * keystore.c - life cycle of the keystore and every operation that uses key
 * material.  See keystore.h for the boundary this file implements.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "common/log.h"
#include "common/util.h"
#include "keystore/keystore_internal.h"

#define DEFAULT_CACHE_CAPACITY 100000

const char *hsm_node_state_name(hsm_node_state s)
{
	switch (s) {
	case HSM_NODE_UNINITIALIZED:
		return "uninitialized";
	case HSM_NODE_SEALED:
		return "sealed";
	case HSM_NODE_UNSEALED:
		return "unsealed";
	case HSM_NODE_ERROR:
		return "error";
	}
	return "unknown";
}

static void *cache_ref(void *m)
{
	return hsm_material_ref(m);
}

static void cache_unref(void *m)
{
	hsm_material_free(m);
}

hsm_result ks_alloc(size_t cache_capacity, hsm_keystore **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_keystore *ks = calloc(1, sizeof(*ks));
	HSM_ENSURE(ks != NULL, HSM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&ks->lock, NULL);
	pthread_rwlock_init(&ks->keys_lock, NULL);
	atomic_init(&ks->state, HSM_NODE_UNINITIALIZED);
	/* Grouped by key id: forgetting a key's versions visits one shard. */
	HSM_TRY(hsm_shmap_new_grouped(cache_capacity ? cache_capacity : DEFAULT_CACHE_CAPACITY,
	                              cache_ref, cache_unref, true, &ks->cache));
	HSM_TRY(hsm_crypto_init());
	if (hsm_failed(hsm_selftest_run()))
		hsm_keystore_set_error(ks, hsm_last_message());
	*out = ks;
	ks = NULL;
out:
	hsm_keystore_free(ks);
	return res;
}

hsm_result hsm_keystore_new(hsm_store *store, size_t cache_capacity, hsm_keystore **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_keystore *ks = NULL;
	HSM_TRY(ks_alloc(cache_capacity, &ks));
	ks->store = store;
	if (atomic_load(&ks->state) != HSM_NODE_ERROR) {
		hsm_buf probe = {0};
		hsm_result meta = hsm_store_meta_get(store, META_STORE_ID, &probe);
		hsm_buf_free(&probe);
		if (hsm_ok(meta)) {
			HSM_TRY(ks_load_meta(ks));
			atomic_store(&ks->state, HSM_NODE_SEALED);
		} else if (meta.err != HSM_ERR_NOT_FOUND) {
			res = meta;
			goto out;
		}
	}
	*out = ks;
	ks = NULL;
out:
	hsm_keystore_free(ks);
	return res;
}

hsm_result hsm_keystore_new_detached(const hsm_ks_identity *id, hsm_keystore **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_keystore *ks = NULL;
	HSM_CHECK(hsm_is_uuid(id->store_id), HSM_ERR_VALIDATION, "store id is malformed");
	HSM_CHECK(id->threshold >= 1 && id->threshold <= id->count && id->count <= HSM_MAX_SHARES,
	          HSM_ERR_VALIDATION, "quorum settings are malformed");
	HSM_TRY(ks_alloc(64, &ks));
	memcpy(ks->store_id, id->store_id, sizeof(ks->store_id));
	memcpy(ks->set_id, id->set_id, sizeof(ks->set_id));
	memcpy(ks->kcv, id->kcv, sizeof(ks->kcv));
	ks->threshold = id->threshold;
	ks->count = id->count;
	ks->keep_quorum = true; /* backup verify checks shares past the quorum against it */
	if (atomic_load(&ks->state) != HSM_NODE_ERROR)
		atomic_store(&ks->state, HSM_NODE_SEALED);
	*out = ks;
	ks = NULL;
out:
	hsm_keystore_free(ks);
	return res;
}

void hsm_keystore_identity(hsm_keystore *ks, hsm_ks_identity *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&ks->lock);
	memcpy(out->store_id, ks->store_id, sizeof(out->store_id));
	memcpy(out->set_id, ks->set_id, sizeof(out->set_id));
	memcpy(out->kcv, ks->kcv, sizeof(out->kcv));
	out->threshold = ks->threshold;
	out->count = ks->count;
	pthread_mutex_unlock(&ks->lock);
}

void hsm_keystore_free(hsm_keystore *ks)
{
	if (ks == NULL)
		return;
	if (ks->cache != NULL)
		hsm_keystore_seal(ks);
	hsm_shmap_free(ks->cache);
	pthread_rwlock_destroy(&ks->keys_lock);
	pthread_mutex_destroy(&ks->lock);
	free(ks);
}

hsm_node_state hsm_keystore_state(hsm_keystore *ks)
{
	return (hsm_node_state)atomic_load(&ks->state);
}

const char *hsm_keystore_store_id(hsm_keystore *ks)
{
	return ks->store_id;
}

void hsm_keystore_set_error(hsm_keystore *ks, const char *why)
{
	pthread_mutex_lock(&ks->lock);
	snprintf(ks->error_reason, sizeof(ks->error_reason), "%s", why);
	atomic_store(&ks->state, HSM_NODE_ERROR);
	pthread_rwlock_wrlock(&ks->keys_lock);
	ks_keys_wipe(&ks->keys);
	pthread_rwlock_unlock(&ks->keys_lock);
	if (ks->cache != NULL)
		ks_cache_drop_all(ks);
	ks_forget_shares(ks); /* share values: wiped with the keys */
	pthread_mutex_unlock(&ks->lock);
	hsm_error("node entered the error state: %s", why);
}

const char *hsm_keystore_error_reason(hsm_keystore *ks)
{
	return ks->error_reason;
}

hsm_result ks_require_unsealed(hsm_keystore *ks)
{
	switch ((hsm_node_state)atomic_load_explicit(&ks->state, memory_order_acquire)) {
	case HSM_NODE_UNSEALED:
		return HSM_SUCCESS;
	case HSM_NODE_SEALED:
		return HSM_FAIL(HSM_ERR_SEALED,
		                "hsmd is sealed: %u of %u custodian shares are needed to unseal it",
		                ks->threshold, ks->count);
	case HSM_NODE_UNINITIALIZED:
		return HSM_FAIL(HSM_ERR_SEALED, "hsmd is not initialized: run 'hsmctl init'");
	case HSM_NODE_ERROR:
		break;
	}
	return HSM_FAIL(HSM_ERR_NODE_ERROR, "hsmd is in the error state and serves nothing: %s",
	                ks->error_reason);
}

/* ---- material ------------------------------------------------------------- */

static hsm_result unwrap_version(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                 const hsm_version_record *v, hsm_material **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf aad = {0}, pt;
	hsm_buf_init_secure(&pt);
	HSM_TRY(ks_material_aad(ref, &aad));
	pthread_rwlock_rdlock(&ks->keys_lock);
	if (ks->keys.material == NULL)
		res = ks_require_unsealed(ks);
	else
		res = ks_unwrap(ks->keys.material, &aad, v->wrapped.data, v->wrapped.len, &pt);
	pthread_rwlock_unlock(&ks->keys_lock);
	if (hsm_failed(res))
		goto out;
	res = hsm_material_import(ref->spec, pt.data, pt.len, out);
	/* Stored material passed these checks when it was made or imported: failing them
	 * now is the node's trouble, never the caller's (a ValidationException). */
	if (res.err == HSM_ERR_VALIDATION) {
		char why[HSM_ERRMSG_MAX]; /* copied first: the message is formatted into its own buffer */
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		res = HSM_FAIL(HSM_ERR_KEY_UNAVAILABLE, "stored key material of %s is not usable: %s",
		               ref->key_id, why);
	}
out:
	hsm_buf_free(&aad);
	hsm_buf_free(&pt);
	return res;
}

/*
 * The material of one key version: from the cache, or fetched from the
 * store, unwrapped (which proves the row belongs to this identity) and
 * cached.  HSM_ERR_NOT_FOUND when the version does not exist.
 */
static hsm_result material_get(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_material **out)
{
	hsm_result res = HSM_SUCCESS;
	void *hit = NULL;
	hsm_material *m = NULL;
	hsm_version_record v;
	char key[HSM_SHMAP_KEY_MAX + 1];
	memset(&v, 0, sizeof(v));
	HSM_GUARD(ks_require_unsealed(ks));
	/* Spec and usage are part of the cache key: metadata that changed misses and is re-unwrapped,
	 * which fails if the change was not genuine (the AAD binds both). */
	hsm_sb b;
	hsm_sb_init(&b, key, sizeof(key));
	hsm_sb_addn(&b, ref->key_id, 36);
	hsm_sb_add(&b, "/");
	hsm_sb_u64(&b, ref->version);
	hsm_sb_add(&b, "/");
	hsm_sb_u64(&b, (uint64_t)ref->spec);
	hsm_sb_add(&b, "/");
	hsm_sb_u64(&b, (uint64_t)ref->usage);
	if (hsm_shmap_get(ks->cache, key, &hit)) {
		*out = hit;
		return HSM_SUCCESS;
	}
	/* Read before the store: a forget or seal after it takes back what this call caches. */
	uint_fast64_t epoch = atomic_load_explicit(&ks->cache_epoch, memory_order_acquire);
	HSM_TRY(hsm_store_version_get(ks->store, ref->key_id, ref->version, &v));
	HSM_CHECK(v.wrapped.len > 0, HSM_ERR_KEY_UNAVAILABLE,
	          "the key material of %s was destroyed", ref->key_id);
	HSM_TRY(unwrap_version(ks, ref, &v, &m));
	HSM_TRY(hsm_shmap_put(ks->cache, key, m));
	if (atomic_load_explicit(&ks->cache_epoch, memory_order_acquire) != epoch)
		hsm_shmap_remove(ks->cache, key); /* this call still uses it; the cache does not keep it */
	*out = m;
	m = NULL;
out:
	hsm_material_free(m);
	hsm_version_record_clear(&v);
	return res;
}

hsm_result ks_wrap_material(hsm_keystore *ks, const hsm_ks_keyref *ref, const hsm_buf *pt,
                            hsm_buf *wrapped)
{
	hsm_buf aad = {0};
	hsm_result res = ks_material_aad(ref, &aad);
	if (hsm_ok(res)) {
		pthread_rwlock_rdlock(&ks->keys_lock);
		if (ks->keys.material == NULL)
			res = ks_require_unsealed(ks);
		else
			res = ks_wrap(ks->keys.material, &aad, pt->data, pt->len, wrapped);
		pthread_rwlock_unlock(&ks->keys_lock);
	}
	hsm_buf_free(&aad);
	return res;
}

hsm_result hsm_ks_generate(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_buf *wrapped,
                           hsm_buf *public_der)
{
	hsm_result res = HSM_SUCCESS;
	hsm_material *m = NULL;
	hsm_buf pt;
	hsm_buf_init_secure(&pt);
	HSM_GUARD(ks_require_unsealed(ks));
	HSM_ENSURE(hsm_spec_allows_usage(ref->spec, ref->usage), HSM_ERR_VALIDATION,
	           "KeyUsage %s is not valid for KeySpec %s", hsm_usage_name(ref->usage),
	           hsm_spec_name(ref->spec));
	HSM_TRY(hsm_material_generate(ref->spec, &m));
	if (hsm_spec_is_asymmetric(ref->spec)) {
		HSM_TRY(hsm_material_pairwise_test(m, ref->usage));
		HSM_TRY(hsm_material_public_der(m, public_der));
	}
	HSM_TRY(hsm_material_export(m, &pt));
	res = ks_wrap_material(ks, ref, &pt, wrapped);
out:
	hsm_material_free(m);
	hsm_buf_free(&pt);
	return res;
}

void hsm_ks_forget(hsm_keystore *ks, const char *key_id)
{
	char prefix[HSM_UUID_STRLEN + 2];
	snprintf(prefix, sizeof(prefix), "%.36s/", key_id);
	atomic_fetch_add_explicit(&ks->cache_epoch, 1, memory_order_acq_rel);
	hsm_shmap_remove_prefix(ks->cache, prefix);
}

void ks_cache_drop_all(hsm_keystore *ks)
{
	atomic_fetch_add_explicit(&ks->cache_epoch, 1, memory_order_acq_rel);
	hsm_shmap_clear(ks->cache);
}

typedef struct key_list {
	char (*ids)[HSM_UUID_STRLEN + 1];
	size_t n, cap;
	bool nomem;
} key_list;

/* Cache keys are "<key id>/<version>": the id (each version's; made unique after). */
static void collect_key(const char *cache_key, void *arg)
{
	key_list *l = arg;
	const char *slash = strchr(cache_key, '/');
	size_t len = slash != NULL ? (size_t)(slash - cache_key) : strlen(cache_key);
	if (len != HSM_UUID_STRLEN || l->nomem)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		void *p = realloc(l->ids, cap * sizeof(*l->ids));
		if (p == NULL) {
			l->nomem = true;
			return;
		}
		l->ids = p;
		l->cap = cap;
	}
	memcpy(l->ids[l->n], cache_key, len);
	l->ids[l->n++][len] = '\0';
}

static int by_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

hsm_result hsm_ks_cached_keys(hsm_keystore *ks, char (**ids)[HSM_UUID_STRLEN + 1], size_t *n)
{
	key_list l = {0};
	hsm_shmap_each_key(ks->cache, collect_key, &l);
	if (l.nomem) {
		free(l.ids);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	/* A key with several versions cached was collected once for each: once it is. */
	if (l.n > 1)
		qsort(l.ids, l.n, sizeof(*l.ids), by_id);
	size_t u = 0;
	for (size_t i = 0; i < l.n; i++)
		if (u == 0 || strcmp(l.ids[u - 1], l.ids[i]) != 0)
			memmove(l.ids[u++], l.ids[i], sizeof(*l.ids));
	*ids = l.ids;
	*n = u;
	return HSM_SUCCESS;
}

void hsm_ks_get_stats(hsm_keystore *ks, hsm_ks_stats *out)
{
	hsm_shmap_stats st;
	hsm_shmap_get_stats(ks->cache, &st);
	out->cache_hits = st.hits;
	out->cache_misses = st.misses;
	out->cache_entries = st.entries;
}

/* ---- symmetric -------------------------------------------------------------- */

hsm_result hsm_ks_encrypt(hsm_keystore *ks, const hsm_ks_keyref *ref, const hsm_buf *ctx,
                          const uint8_t *pt, size_t pt_len, hsm_buf *blob)
{
	hsm_result res = HSM_SUCCESS;
	hsm_material *m = NULL;
	uint8_t iv[HSM_GCM_IV_LEN], tag[HSM_GCM_TAG_LEN];
	hsm_buf aad = {0};
	size_t start = blob->len;
	HSM_GUARD(material_get(ks, ref, &m));
	HSM_TRY(hsm_random_iv(iv));
	HSM_TRY(hsm_blob_write_header(blob, ref->key_id, ref->version, iv));
	HSM_TRY(hsm_buf_put(&aad, blob->data + start, HSM_BLOB_HEADER_LEN));
	HSM_TRY(hsm_buf_put(&aad, ctx->data, ctx->len));
	HSM_TRY(hsm_aes_gcm_seal(m, iv, aad.data, aad.len, pt, pt_len, blob, tag));
	HSM_TRY(hsm_buf_put(blob, tag, sizeof(tag)));
out:
	if (hsm_failed(res))
		blob->len = start;
	hsm_material_free(m);
	hsm_buf_free(&aad);
	return res;
}

hsm_result hsm_ks_decrypt(hsm_keystore *ks, const hsm_ks_keyref *ref, const hsm_blob *blob,
                          const hsm_buf *ctx, hsm_buf *pt)
{
	hsm_result res = HSM_SUCCESS;
	hsm_material *m = NULL;
	hsm_buf aad = {0};
	HSM_ENSURE(strcmp(ref->key_id, blob->key_id) == 0 && ref->version == blob->key_version,
	           HSM_ERR_INVALID_CIPHERTEXT, "the ciphertext was not made with this key version");
	res = material_get(ks, ref, &m);
	if (res.err == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(HSM_ERR_INVALID_CIPHERTEXT,
		                "the ciphertext names a key version that does not exist");
	if (hsm_failed(res))
		return res;
	HSM_TRY(hsm_buf_put(&aad, blob->header, HSM_BLOB_HEADER_LEN));
	HSM_TRY(hsm_buf_put(&aad, ctx->data, ctx->len));
	HSM_TRY(hsm_aes_gcm_open(m, blob->iv, aad.data, aad.len, blob->ct, blob->ct_len, blob->tag,
	                         pt));
out:
	hsm_material_free(m);
	hsm_buf_free(&aad);
	return res;
}

hsm_result hsm_ks_gcm_seal(hsm_keystore *ks, const hsm_ks_keyref *ref, const uint8_t *aad,
                           size_t aad_len, const uint8_t *pt, size_t pt_len,
                           uint8_t iv[HSM_GCM_IV_LEN], hsm_buf *ct)
{
	hsm_result res = HSM_SUCCESS;
	hsm_material *m = NULL;
	uint8_t tag[HSM_GCM_TAG_LEN];
	size_t start = ct->len;
	HSM_ENSURE(ref->spec == HSM_SPEC_SYMMETRIC_DEFAULT, HSM_ERR_INVALID_KEY_USAGE,
	           "AES-GCM needs a SYMMETRIC_DEFAULT key");
	HSM_GUARD(hsm_blob_refuse_header_aad(aad, aad_len, ref->key_id, NULL));
	HSM_GUARD(material_get(ks, ref, &m));
	HSM_TRY(hsm_random_iv(iv));
	HSM_TRY(hsm_aes_gcm_seal(m, iv, aad, aad_len, pt, pt_len, ct, tag));
	HSM_TRY(hsm_buf_put(ct, tag, sizeof(tag)));
out:
	if (hsm_failed(res))
		ct->len = start;
	hsm_material_free(m);
	return res;
}

hsm_result hsm_ks_gcm_open(hsm_keystore *ks, const hsm_ks_keyref *ref,
                           const uint8_t iv[HSM_GCM_IV_LEN], const uint8_t *aad, size_t aad_len,
                           const uint8_t *ct, size_t ct_len, hsm_buf *pt)
{
	hsm_material *m = NULL;
	HSM_ENSURE(ref->spec == HSM_SPEC_SYMMETRIC_DEFAULT, HSM_ERR_INVALID_KEY_USAGE,
	           "AES-GCM needs a SYMMETRIC_DEFAULT key");
	HSM_ENSURE(ct_len >= HSM_GCM_TAG_LEN, HSM_ERR_INVALID_CIPHERTEXT,
	           "the ciphertext is shorter than its tag");
	HSM_GUARD(hsm_blob_refuse_header_aad(aad, aad_len, ref->key_id, iv));
	HSM_GUARD(material_get(ks, ref, &m));
	size_t n = ct_len - HSM_GCM_TAG_LEN;
	hsm_result r = hsm_aes_gcm_open(m, iv, aad, aad_len, ct, n, ct + n, pt);
	hsm_material_free(m);
	return r;
}

/* ---- RSA encryption ------------------------------------------------------------ */

hsm_result hsm_ks_rsa_encrypt(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_enc_alg alg,
                              const uint8_t *pt, size_t pt_len, hsm_buf *ct)
{
	hsm_material *m = NULL;
	HSM_GUARD(material_get(ks, ref, &m));
	hsm_result r = hsm_rsa_oaep_encrypt(m, alg, pt, pt_len, ct);
	hsm_material_free(m);
	return r;
}

hsm_result hsm_ks_rsa_decrypt(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_enc_alg alg,
                              const uint8_t *ct, size_t ct_len, hsm_buf *pt)
{
	hsm_material *m = NULL;
	HSM_GUARD(material_get(ks, ref, &m));
	hsm_result r = hsm_rsa_oaep_decrypt(m, alg, ct, ct_len, pt);
	hsm_material_free(m);
	return r;
}

/* ---- signatures and MACs ------------------------------------------------------- */

hsm_result hsm_ks_sign(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_sign_alg alg,
                       hsm_message_type type, const uint8_t *msg, size_t len, hsm_buf *sig)
{
	hsm_material *m = NULL;
	HSM_GUARD(material_get(ks, ref, &m));
	hsm_result r = hsm_sign(m, alg, type, msg, len, sig);
	hsm_material_free(m);
	return r;
}

hsm_result hsm_ks_verify(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_sign_alg alg,
                         hsm_message_type type, const uint8_t *msg, size_t len,
                         const uint8_t *sig, size_t sig_len)
{
	hsm_material *m = NULL;
	HSM_GUARD(material_get(ks, ref, &m));
	hsm_result r = hsm_verify(m, alg, type, msg, len, sig, sig_len);
	hsm_material_free(m);
	return r;
}

hsm_result hsm_ks_mac(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_mac_alg alg,
                      const uint8_t *msg, size_t len, hsm_buf *mac)
{
	hsm_material *m = NULL;
	HSM_GUARD(material_get(ks, ref, &m));
	hsm_result r = hsm_hmac(m, alg, msg, len, mac);
	hsm_material_free(m);
	return r;
}

hsm_result hsm_ks_verify_mac(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_mac_alg alg,
                             const uint8_t *msg, size_t len, const uint8_t *mac, size_t mac_len)
{
	hsm_material *m = NULL;
	HSM_GUARD(material_get(ks, ref, &m));
	hsm_result r = hsm_hmac_verify(m, alg, msg, len, mac, mac_len);
	hsm_material_free(m);
	return r;
}

hsm_result hsm_ks_check_value(hsm_keystore *ks, const hsm_ks_keyref *ref, uint8_t kcv[HSM_KCV_LEN],
                              hsm_kcv_alg *alg)
{
	hsm_material *m = NULL;
	HSM_GUARD(material_get(ks, ref, &m));
	hsm_result r = hsm_material_check_value(m, kcv, alg);
	hsm_material_free(m);
	return r;
}

/* ---- key agreement ------------------------------------------------------------- */

hsm_result hsm_ks_derive_shared_secret(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                       const uint8_t *peer_spki, size_t peer_len,
                                       hsm_buf *secret)
{
	hsm_material *m = NULL;
	HSM_ENSURE(ref->usage == HSM_USAGE_KEY_AGREEMENT, HSM_ERR_INVALID_KEY_USAGE,
	           "key usage %s does not derive shared secrets", hsm_usage_name(ref->usage));
	HSM_GUARD(material_get(ks, ref, &m));
	hsm_result r = hsm_ecdh_derive(m, peer_spki, peer_len, secret);
	hsm_material_free(m);
	return r;
}

/* ---- data keys ----------------------------------------------------------------- */

hsm_result hsm_ks_generate_data_key(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                    const hsm_buf *ctx, size_t n, hsm_buf *pt, hsm_buf *blob)
{
	hsm_result res = HSM_SUCCESS;
	hsm_secret *dk = NULL;
	HSM_ENSURE(n >= 1 && n <= HSM_MAX_DATA_KEY_BYTES, HSM_ERR_VALIDATION,
	           "NumberOfBytes must be between 1 and %d", HSM_MAX_DATA_KEY_BYTES);
	HSM_GUARD(ks_require_unsealed(ks));
	HSM_TRY(hsm_secret_random(n, &dk));
	HSM_TRY(hsm_ks_encrypt(ks, ref, ctx, hsm_secret_bytes(dk), n, blob));
	if (pt != NULL)
		HSM_TRY(hsm_buf_put(pt, hsm_secret_bytes(dk), n));
out:
	hsm_secret_free(dk);
	return res;
}

hsm_result hsm_ks_generate_data_key_pair(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                         const hsm_buf *ctx, hsm_key_spec pair_spec,
                                         hsm_buf *priv, hsm_buf *priv_blob, hsm_buf *pub)
{
	hsm_result res = HSM_SUCCESS;
	hsm_material *m = NULL;
	hsm_buf pkcs8;
	hsm_buf_init_secure(&pkcs8);
	HSM_ENSURE(hsm_spec_get(pair_spec)->data_key_pair, HSM_ERR_VALIDATION,
	           "KeyPairSpec %s is not supported", hsm_spec_name(pair_spec));
	HSM_GUARD(ks_require_unsealed(ks));
	HSM_TRY(hsm_material_generate(pair_spec, &m));
	HSM_TRY(hsm_material_export(m, &pkcs8));
	HSM_TRY(hsm_ks_encrypt(ks, ref, ctx, pkcs8.data, pkcs8.len, priv_blob));
	HSM_TRY(hsm_material_public_der(m, pub));
	if (priv != NULL)
		HSM_TRY(hsm_buf_put(priv, pkcs8.data, pkcs8.len));
out:
	hsm_material_free(m);
	hsm_buf_free(&pkcs8);
	return res;
}

/* ---- other secrets ------------------------------------------------------------- */

hsm_result ks_principal_aad(const char *identity, hsm_buf *aad)
{
	HSM_GUARD(hsm_buf_put_lp(aad, "hsmd/v1/principal-secret", 24));
	return hsm_buf_put_lp(aad, identity, strlen(identity));
}

hsm_result hsm_ks_wrap_secret(hsm_keystore *ks, const char *identity, const hsm_secret *secret,
                              hsm_buf *wrapped)
{
	hsm_buf aad = {0};
	hsm_result res = ks_principal_aad(identity, &aad);
	if (hsm_ok(res)) {
		pthread_rwlock_rdlock(&ks->keys_lock);
		res = ks->keys.principal == NULL
		          ? ks_require_unsealed(ks)
		          : ks_wrap(ks->keys.principal, &aad, hsm_secret_bytes(secret),
		                    hsm_secret_len(secret), wrapped);
		pthread_rwlock_unlock(&ks->keys_lock);
	}
	hsm_buf_free(&aad);
	return res;
}

hsm_result hsm_ks_unwrap_secret(hsm_keystore *ks, const char *identity, const uint8_t *wrapped,
                                size_t len, hsm_secret **secret)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf aad = {0}, pt;
	hsm_buf_init_secure(&pt);
	HSM_TRY(ks_principal_aad(identity, &aad));
	pthread_rwlock_rdlock(&ks->keys_lock);
	res = ks->keys.principal == NULL
	          ? ks_require_unsealed(ks)
	          : ks_unwrap(ks->keys.principal, &aad, wrapped, len, &pt);
	pthread_rwlock_unlock(&ks->keys_lock);
	if (hsm_failed(res))
		goto out;
	HSM_CHECK(pt.len > 0, HSM_ERR_KEY_UNAVAILABLE, "stored secret is empty");
	HSM_TRY(hsm_secret_from(pt.data, pt.len, secret));
out:
	hsm_buf_free(&aad);
	hsm_buf_free(&pt);
	return res;
}

hsm_result hsm_ks_audit_sign(hsm_keystore *ks, const uint8_t *msg, size_t len, hsm_buf *sig)
{
	pthread_rwlock_rdlock(&ks->keys_lock);
	hsm_result r = ks->keys.audit_signer == NULL
	                   ? ks_require_unsealed(ks)
	                   : hsm_sign(ks->keys.audit_signer, HSM_SIGN_ED25519_SHA_512, HSM_MSG_RAW,
	                              msg, len, sig);
	pthread_rwlock_unlock(&ks->keys_lock);
	return r;
}

hsm_result hsm_ks_audit_hasher(hsm_keystore *ks, hsm_keyed_hmac **out)
{
	pthread_rwlock_rdlock(&ks->keys_lock);
	hsm_result r = ks->keys.audit_hash_macs == NULL
	                   ? ks_require_unsealed(ks)
	                   : hsm_hmac_pool_take(ks->keys.audit_hash_macs, out);
	pthread_rwlock_unlock(&ks->keys_lock);
	return r;
}

hsm_result hsm_ks_audit_hash(hsm_keystore *ks, const uint8_t *value, size_t len,
                             char out[2 * HSM_SHA256_LEN + 1])
{
	uint8_t mac[HSM_SHA256_LEN];
	hsm_keyed_hmac *h = NULL;
	HSM_GUARD(hsm_ks_audit_hasher(ks, &h));
	hsm_result r = hsm_keyed_hmac_of(h, value, len, mac);
	hsm_keyed_hmac_free(h);
	HSM_GUARD(r);
	hsm_hex_encode_str(out, mac, sizeof(mac));
	return HSM_SUCCESS;
}

hsm_result hsm_ks_audit_public_pem(hsm_keystore *ks, hsm_buf *out)
{
	return hsm_store_meta_get(ks->store, META_AUDIT_PUB, out);
}

hsm_result hsm_ks_random(hsm_keystore *ks, size_t n, hsm_buf *out)
{
	uint8_t *p;
	HSM_GUARD(ks_require_unsealed(ks));
	HSM_ENSURE(n >= 1 && n <= HSM_MAX_RANDOM, HSM_ERR_VALIDATION,
	           "NumberOfBytes must be between 1 and %d", HSM_MAX_RANDOM);
	HSM_GUARD(hsm_buf_append_space(out, n, &p));
	return hsm_random_bytes(p, n);
}
