/*
 * rekey.c - replacing the domain master key and its custodians' shares.
 *
 * Old shares reconstruct the old DMK forever, so taking their power away
 * takes a new DMK: every secret the store holds is unwrapped under the old
 * DMK's wrapping keys and wrapped under the new one's, inside one store
 * transaction that also records the new key check value, share-set id and
 * quorum (hsm_store_rekey).  Until that commit the store is wholly on the old
 * key; after it, wholly on the new.
 *
 * What changes: every wrapping key, the audit-hash key and the backup key
 * (new derivations of the new DMK).  What stays: the key material itself,
 * access-key secrets, the audit signing key pair (so the trail verifies
 * with the same public key across the rekey) and the import-digest key
 * (carried, wrapped under the new DMK: digests of erased imported material
 * cannot be recomputed, and a reimport must match them).  Import tokens
 * handed out before the rekey no longer open (they are sealed under a
 * DMK-derived key): GetParametersForImport gives new ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "common/log.h"
#include "keystore/keystore_internal.h"

struct hsm_ks_rekey {
	char store_id[HSM_UUID_STRLEN + 1];
	ks_keys keys; /* derived from the new DMK; import_digest carried over */
	uint8_t set_id[KS_SET_ID_LEN];
	uint8_t kcv[KS_KCV_LEN];
	unsigned threshold, count;
	hsm_buf audit_wrapped;  /* META_AUDIT_KEY under the new DMK */
	hsm_buf digest_wrapped; /* META_IMPORT_DIGEST_KEY under the new DMK */
	hsm_buf commits;        /* META_SHARE_COMMITS of the new split */
};

void hsm_ks_rekey_free(hsm_ks_rekey *rk)
{
	if (rk == NULL)
		return;
	ks_keys_wipe(&rk->keys);
	hsm_buf_free(&rk->audit_wrapped);
	hsm_buf_free(&rk->digest_wrapped);
	hsm_buf_free(&rk->commits);
	free(rk);
}

void hsm_ks_rekey_identity(const hsm_ks_rekey *rk, hsm_ks_identity *out)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->store_id, rk->store_id, sizeof(out->store_id));
	memcpy(out->set_id, rk->set_id, sizeof(out->set_id));
	memcpy(out->kcv, rk->kcv, sizeof(out->kcv));
	out->threshold = rk->threshold;
	out->count = rk->count;
}

/* A development store's share sits beside its data for hsmd --dev to unseal with. */
static hsm_result refuse_dev_store(hsm_keystore *ks)
{
	hsm_buf dev = {0};
	hsm_result r = hsm_store_meta_get(ks->store, META_DEV, &dev);
	bool is_dev = hsm_ok(r) && dev.len == 1 && dev.data[0] == '1';
	hsm_buf_free(&dev);
	if (hsm_failed(r) && r.err != HSM_ERR_NOT_FOUND)
		return r; /* its message stands */
	HSM_ENSURE(!is_dev, HSM_ERR_VALIDATION,
	           "a development store (1-of-1, its share beside the data) is not rekeyed");
	return HSM_SUCCESS;
}

/* Under ks->lock, unsealed: the new DMK, its derived keys, shares and wrapped metadata. */
static hsm_result prepare_locked(hsm_keystore *ks, hsm_ks_rekey *rk,
                                 const char *const custodians[], hsm_buf shares_out[])
{
	hsm_result res = HSM_SUCCESS;
	hsm_secret *dmk = NULL;
	HSM_TRY(ks_require_unsealed(ks));
	HSM_CHECK(ks->store != NULL, HSM_ERR_VALIDATION, "only a store's keystore is rekeyed");
	HSM_TRY(refuse_dev_store(ks));
	memcpy(rk->store_id, ks->store_id, sizeof(rk->store_id));
	HSM_TRY(hsm_keystore_check_quorum(rk->threshold, rk->count, false));
	do /* a new split must never be taken for the old one */
		HSM_TRY(hsm_random_bytes(rk->set_id, sizeof(rk->set_id)));
	while (hsm_ct_equal(rk->set_id, ks->set_id, sizeof(rk->set_id)));
	HSM_TRY(hsm_secret_random(HSM_AES_KEY_LEN, &dmk));
	HSM_TRY(ks_compute_kcv(dmk, ks->store_id, rk->kcv));
	HSM_TRY(ks_derive_all(dmk, ks->store_id, &rk->keys));
	hsm_secret_free(rk->keys.import_digest);
	rk->keys.import_digest = NULL;
	HSM_TRY(hsm_secret_from(hsm_secret_bytes(ks->keys.import_digest),
	                        hsm_secret_len(ks->keys.import_digest), &rk->keys.import_digest));
	HSM_TRY(ks_wrap_import_digest_key(dmk, ks->store_id, rk->keys.import_digest,
	                                  &rk->digest_wrapped));
	/* The audit signing key, unwrapped under the current keys and wrapped under rk's. */
	HSM_TRY(ks_load_audit_key(ks, ks->keys.audit, &rk->keys.audit_signer, rk->keys.audit,
	                          &rk->audit_wrapped));
	HSM_TRY(ks_encode_shares(dmk, ks->store_id, rk->set_id, rk->threshold, rk->count, custodians,
	                         false, shares_out, &rk->commits));
out:
	hsm_secret_free(dmk);
	return res;
}

hsm_result hsm_ks_rekey_prepare(hsm_keystore *ks, unsigned threshold, unsigned count,
                                const char *const custodians[], hsm_buf shares_out[],
                                hsm_ks_rekey **out)
{
	hsm_ks_rekey *rk = calloc(1, sizeof(*rk));
	HSM_ENSURE(rk != NULL, HSM_ERR_NOMEM, "out of memory");
	rk->threshold = threshold;
	rk->count = count;
	pthread_mutex_lock(&ks->lock);
	hsm_result res = prepare_locked(ks, rk, custodians, shares_out);
	pthread_mutex_unlock(&ks->lock);
	if (hsm_failed(res)) {
		hsm_ks_rekey_free(rk);
		return res;
	}
	*out = rk;
	return HSM_SUCCESS;
}

/* ---- commit ---------------------------------------------------------------------------- */

typedef struct rewrap_ctx {
	const ks_keys *from, *to;
} rewrap_ctx;

/* hsm_rewrap_fn: one stored secret from the old wrapping keys to the new (AAD unchanged). */
static hsm_result rewrap_item(const hsm_wrapped_item *item, hsm_buf *out, void *arg)
{
	const rewrap_ctx *c = arg;
	hsm_result res = HSM_SUCCESS;
	hsm_buf aad = {0}, pt;
	hsm_buf_init_secure(&pt);
	const hsm_secret *from = c->from->principal, *to = c->to->principal;
	if (item->kind == HSM_WRAPPED_KEY_MATERIAL) {
		hsm_ks_keyref ref = {.key_id = item->id, .version = item->version, .spec = item->spec,
		                     .usage = item->usage};
		from = c->from->material;
		to = c->to->material;
		HSM_TRY(ks_material_aad(&ref, &aad));
	} else {
		HSM_TRY(ks_principal_aad(item->id, &aad));
	}
	res = ks_unwrap(from, &aad, item->wrapped->data, item->wrapped->len, &pt);
	/* Named, so the operator can look at that row; the transaction rolls back. */
	if (hsm_failed(res) && item->kind == HSM_WRAPPED_KEY_MATERIAL)
		res = HSM_FAIL(HSM_ERR_KEY_UNAVAILABLE,
		               "key %s version %u does not unwrap under the current master key",
		               item->id, item->version);
	else if (hsm_failed(res))
		res = HSM_FAIL(HSM_ERR_KEY_UNAVAILABLE,
		               "the secret of access key %s does not unwrap under the current master "
		               "key",
		               item->id);
	HSM_TRY(res);
	HSM_TRY(ks_wrap(to, &aad, pt.data, pt.len, out));
out:
	hsm_buf_free(&aad);
	hsm_buf_free(&pt);
	return res;
}

/* Reads the share-set id back: whether the store is on rk's master key. */
static hsm_ks_rekey_outcome read_back(hsm_keystore *ks, const hsm_ks_rekey *rk)
{
	hsm_buf got = {0}, new = {0};
	hsm_ks_rekey_outcome o = HSM_KS_REKEY_UNKNOWN;
	if (hsm_ok(hsm_store_meta_get(ks->store, META_SHARE_SET, &got)) &&
	    hsm_ok(hsm_hex_encode(&new, rk->set_id, sizeof(rk->set_id)))) {
		bool landed = got.len == new.len && hsm_ct_equal(got.data, new.data, new.len);
		o = landed ? HSM_KS_REKEY_DONE : HSM_KS_REKEY_UNCHANGED;
	}
	hsm_buf_free(&got);
	hsm_buf_free(&new);
	return o;
}

/* The metadata naming the old key, and the values naming the new one. */
typedef struct rekey_meta {
	hsm_buf old_set, old_kcv, set, kcv, thr, cnt;
} rekey_meta;

static void rekey_meta_free(rekey_meta *m)
{
	hsm_buf_free(&m->old_set);
	hsm_buf_free(&m->old_kcv);
	hsm_buf_free(&m->set);
	hsm_buf_free(&m->kcv);
	hsm_buf_free(&m->thr);
	hsm_buf_free(&m->cnt);
}

static hsm_result rekey_meta_make(const hsm_keystore *ks, const hsm_ks_rekey *rk, rekey_meta *m)
{
	HSM_GUARD(hsm_hex_encode(&m->old_set, ks->set_id, sizeof(ks->set_id)));
	HSM_GUARD(hsm_hex_encode(&m->old_kcv, ks->kcv, sizeof(ks->kcv)));
	HSM_GUARD(hsm_hex_encode(&m->set, rk->set_id, sizeof(rk->set_id)));
	HSM_GUARD(hsm_hex_encode(&m->kcv, rk->kcv, sizeof(rk->kcv)));
	HSM_GUARD(hsm_buf_printf(&m->thr, "%u", rk->threshold));
	return hsm_buf_printf(&m->cnt, "%u", rk->count);
}

/* Serves on with rk's keys and identity (ks->lock held). */
static void install(hsm_keystore *ks, hsm_ks_rekey *rk)
{
	pthread_rwlock_wrlock(&ks->keys_lock);
	ks_keys_wipe(&ks->keys);
	ks->keys = rk->keys;
	memset(&rk->keys, 0, sizeof(rk->keys));
	pthread_rwlock_unlock(&ks->keys_lock);
	memcpy(ks->set_id, rk->set_id, sizeof(ks->set_id));
	memcpy(ks->kcv, rk->kcv, sizeof(ks->kcv));
	ks->threshold = rk->threshold;
	ks->count = rk->count;
	if (hsm_failed(ks_set_commits(ks, rk->commits.data, rk->commits.len)))
		ks->n_commits = 0; /* cannot be: made here; the next unseal reads the store's */
	ks_forget_shares(ks); /* the old split's shares check none of the new one */
	ks_cache_drop_all(ks);
}

static hsm_result commit_locked(hsm_keystore *ks, hsm_ks_rekey *rk, hsm_store_rekey_counts *counts,
                                hsm_ks_rekey_outcome *outcome)
{
	hsm_result res = HSM_SUCCESS;
	rekey_meta m = {0};
	*outcome = HSM_KS_REKEY_UNCHANGED;
	HSM_TRY(ks_require_unsealed(ks));
	HSM_CHECK(ks->store != NULL && rk->keys.material != NULL, HSM_ERR_VALIDATION,
	          "this rekey cannot be committed here");
	HSM_TRY(rekey_meta_make(ks, rk, &m));
	const char *expect_names[] = {META_SHARE_SET, META_KCV};
	const hsm_buf *expect_values[] = {&m.old_set, &m.old_kcv};
	const char *names[] = {META_SHARE_SET, META_KCV,       META_THRESHOLD,        META_SHARES,
	                       META_AUDIT_KEY, META_IMPORT_DIGEST_KEY, META_SHARE_COMMITS};
	const hsm_buf *values[] = {&m.set,         &m.kcv, &m.thr, &m.cnt, &rk->audit_wrapped,
	                           &rk->digest_wrapped, &rk->commits};
	/* Only ks->lock's holder replaces ks->keys, so they are read here without keys_lock. */
	rewrap_ctx ctx = {.from = &ks->keys, .to = &rk->keys};
	hsm_store_rekey_req req = {.n_expect = 2,
	                           .expect_names = expect_names,
	                           .expect_values = expect_values,
	                           .fn = rewrap_item,
	                           .arg = &ctx,
	                           .n_meta = sizeof(names) / sizeof(names[0]),
	                           .meta_names = names,
	                           .meta_values = values};
	res = hsm_store_rekey(ks->store, &req, counts);
	if (hsm_failed(res)) {
		char why[HSM_ERRMSG_MAX];
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		*outcome = read_back(ks, rk);
		if (*outcome != HSM_KS_REKEY_DONE) {
			res = HSM_FAIL(res.err, "%s", why);
			goto out;
		}
		hsm_warn("rekey: committed, then: %s", why);
		res = HSM_SUCCESS;
	}
	*outcome = HSM_KS_REKEY_DONE;
	install(ks, rk);
	hsm_info("store %s rekeyed: %u-of-%u custodian quorum", ks->store_id, ks->threshold,
	         ks->count);
out:
	rekey_meta_free(&m);
	return res;
}

hsm_result hsm_ks_rekey_commit(hsm_keystore *ks, hsm_ks_rekey *rk, hsm_store_rekey_counts *counts,
                               hsm_ks_rekey_outcome *outcome)
{
	pthread_mutex_lock(&ks->lock);
	hsm_result r = commit_locked(ks, rk, counts, outcome);
	pthread_mutex_unlock(&ks->lock);
	return r;
}
