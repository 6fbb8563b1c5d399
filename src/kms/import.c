/*
 * import.c - keys whose material is made elsewhere (AWS KMS API reference,
 * "GetParametersForImport", "ImportKeyMaterial", "DeleteImportedKeyMaterial";
 * Developer Guide, "Importing key material").
 *
 * A key created with Origin EXTERNAL starts PendingImport, with a first
 * version that holds no material.  ImportKeyMaterial fills that version and
 * makes the key Enabled; the version keeps a digest of the material (keyed
 * under the DMK, kms never sees the material), so the material can later be
 * imported again, after DeleteImportedKeyMaterial or its expiry, but no other
 * material can take its place: ciphertexts made under the key stay
 * decryptable by the material that made them, or by nothing.  Such keys do
 * not rotate (rotation.c refuses).
 *
 * Policies see kms:WrappingAlgorithm and kms:WrappingKeySpec on
 * GetParametersForImport, kms:ExpirationModel and kms:ValidTo (epoch seconds)
 * on ImportKeyMaterial.
 */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "kms/kms_internal.h"

#define DAY 86400
#define MAX_VALID_DAYS 365 /* ValidTo: at most 365 days after the request */

void hsm_import_params_clear(hsm_import_params *p)
{
	if (p == NULL)
		return;
	hsm_buf_free(&p->token);
	hsm_buf_free(&p->public_der);
	memset(p, 0, sizeof(*p));
}

static hsm_result require_external(const kms_key *k, hsm_op op)
{
	HSM_ENSURE(k->rec.origin == HSM_ORIGIN_EXTERNAL, HSM_ERR_UNSUPPORTED_OPERATION,
	           "%s has Origin %s: %s applies only to keys created with Origin EXTERNAL", k->arn,
	           hsm_key_origin_name(k->rec.origin), hsm_op_get(op)->name);
	return HSM_SUCCESS;
}

hsm_result hsm_kms_get_import_params(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                     const char *wrapping_alg, const char *wrapping_key_spec,
                                     hsm_import_params *out)
{
	hsm_wrap_alg alg;
	unsigned bits;
	kms_key *k = NULL;
	HSM_ENSURE(wrapping_alg != NULL, HSM_ERR_VALIDATION, "WrappingAlgorithm is required");
	HSM_ENSURE(wrapping_key_spec != NULL, HSM_ERR_VALIDATION, "WrappingKeySpec is required");
	HSM_GUARD(hsm_wrap_alg_parse(wrapping_alg, &alg));
	HSM_GUARD(hsm_wrapping_key_spec_parse(wrapping_key_spec, &bits));
	hsm_policy_pair more[] = {{"kms:WrappingAlgorithm", wrapping_alg},
	                          {"kms:WrappingKeySpec", wrapping_key_spec}};
	kms_authz_extra extra = {.more = more, .n_more = 2};
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_GetParametersForImport, ref, &extra, &k));
	hsm_result res = require_external(k, HSM_OP_GetParametersForImport);
	int64_t valid_to = kms_now(kms) + HSM_IMPORT_PARAMS_LIFETIME;
	if (hsm_ok(res))
		res = hsm_ks_import_params(kms->ks, k->rec.key_id, alg, bits, valid_to, &out->token,
		                           &out->public_der);
	if (hsm_ok(res)) {
		memcpy(out->key_id, k->rec.key_id, sizeof(out->key_id));
		out->valid_to = valid_to;
	}
	kms_key_release(k);
	return res;
}

/* ExpirationModel and ValidTo: *valid_to 0 when the material does not expire. */
static hsm_result expiration(hsm_kms *kms, const hsm_import_req *req, int64_t *valid_to)
{
	bool expires = true; /* KMS's default, KEY_MATERIAL_EXPIRES */
	if (req->expiration_model != NULL) {
		expires = strcmp(req->expiration_model, "KEY_MATERIAL_EXPIRES") == 0;
		HSM_ENSURE(expires || strcmp(req->expiration_model, "KEY_MATERIAL_DOES_NOT_EXPIRE") == 0,
		           HSM_ERR_VALIDATION,
		           "ExpirationModel '%.64s' is not KEY_MATERIAL_EXPIRES or "
		           "KEY_MATERIAL_DOES_NOT_EXPIRE",
		           req->expiration_model);
	}
	if (!expires) {
		HSM_ENSURE(!req->has_valid_to, HSM_ERR_VALIDATION,
		           "ValidTo must be omitted when ExpirationModel is "
		           "KEY_MATERIAL_DOES_NOT_EXPIRE");
		*valid_to = 0;
		return HSM_SUCCESS;
	}
	HSM_ENSURE(req->has_valid_to, HSM_ERR_VALIDATION,
	           "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES (the default)");
	int64_t now = kms_now(kms);
	HSM_ENSURE(req->valid_to > now, HSM_ERR_VALIDATION, "ValidTo must be in the future");
	HSM_ENSURE(req->valid_to <= now + (int64_t)MAX_VALID_DAYS * DAY, HSM_ERR_VALIDATION,
	           "ValidTo must be at most %d days from now", MAX_VALID_DAYS);
	*valid_to = req->valid_to;
	return HSM_SUCCESS;
}

typedef struct material_arg {
	hsm_op op;
	int64_t now;
	int64_t valid_to; /* imports */
	bool erase;
	bool expiry; /* the scheduler: only while the material is still due to expire */
	bool not_due; /* set when expiry found the material no longer due */
} material_arg;

/* The key's side of a material change, in the store's transaction. */
static hsm_result set_material_state(hsm_key_record *rec, void *arg)
{
	material_arg *a = arg;
	if (a->expiry) {
		a->not_due = rec->state == HSM_KEY_DESTROYED || rec->valid_to == 0 ||
		             rec->valid_to > a->now;
		HSM_ENSURE(!a->not_due, HSM_ERR_CONFLICT,
		           "the material of %s is no longer due to expire", rec->key_id);
	} else {
		HSM_GUARD(kms_check_state(a->op, rec)); /* it may have changed since the lookup */
	}
	HSM_ENSURE(rec->origin == HSM_ORIGIN_EXTERNAL, HSM_ERR_UNSUPPORTED_OPERATION,
	           "%s does not have imported key material", rec->key_id);
	if (a->erase) {
		if (rec->state != HSM_KEY_PENDING_DELETION)
			rec->state = HSM_KEY_PENDING_IMPORT;
		rec->flags |= HSM_KEYFLAG_NO_MATERIAL;
		rec->valid_to = 0;
	} else {
		if (rec->state == HSM_KEY_PENDING_IMPORT)
			rec->state = HSM_KEY_ENABLED;
		rec->flags &= ~HSM_KEYFLAG_NO_MATERIAL;
		rec->valid_to = a->valid_to;
	}
	rec->updated = a->now;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_import_material(hsm_kms *kms, const hsm_caller *caller,
                                   const hsm_import_req *req, hsm_key_record *out)
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	hsm_version_record cur, v;
	memset(&cur, 0, sizeof(cur));
	memset(&v, 0, sizeof(v));
	int64_t valid_to = 0;
	char valid_to_text[24];
	HSM_ENSURE(req->token != NULL && req->token_len > 0, HSM_ERR_VALIDATION,
	           "ImportToken is required");
	HSM_ENSURE(req->encrypted != NULL && req->encrypted_len > 0, HSM_ERR_VALIDATION,
	           "EncryptedKeyMaterial is required");
	HSM_GUARD(expiration(kms, req, &valid_to));
	snprintf(valid_to_text, sizeof(valid_to_text), "%lld", (long long)valid_to);
	hsm_policy_pair more[] = {
	    {"kms:ExpirationModel",
	     valid_to != 0 ? "KEY_MATERIAL_EXPIRES" : "KEY_MATERIAL_DOES_NOT_EXPIRE"},
	    {"kms:ValidTo", valid_to_text},
	};
	kms_authz_extra extra = {.more = more, .n_more = valid_to != 0 ? 2 : 1};
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_ImportKeyMaterial, req->key, &extra, &k));
	HSM_TRY(require_external(k, HSM_OP_ImportKeyMaterial));
	HSM_TRY(hsm_store_version_get(kms->store, k->rec.key_id, k->rec.primary_version, &cur));
	bool had = cur.digest.len > 0;
	HSM_CHECK(req->type != HSM_IMPORT_NEW || !had, HSM_ERR_UNSUPPORTED_OPERATION,
	          "%s already has key material: only the same material can be imported again "
	          "(ImportType EXISTING_KEY_MATERIAL); new material for an imported key is not "
	          "supported",
	          k->arn);
	HSM_CHECK(req->type != HSM_IMPORT_EXISTING || had, HSM_ERR_VALIDATION,
	          "%s has never had key material: import it with ImportType NEW_KEY_MATERIAL or "
	          "without ImportType",
	          k->arn);
	memcpy(v.key_id, k->rec.key_id, sizeof(v.key_id));
	v.version = k->rec.primary_version;
	hsm_ks_keyref ref = kms_keyref(k, v.version);
	HSM_TRY(hsm_ks_import_material(kms->ks, &ref, req->token, req->token_len, req->encrypted,
	                               req->encrypted_len, kms_now(kms), &v.wrapped, &v.public_der,
	                               &v.digest));
	HSM_CHECK(!had || (cur.digest.len == v.digest.len &&
	                   hsm_ct_equal(cur.digest.data, v.digest.data, v.digest.len)),
	          HSM_ERR_INCORRECT_KEY_MATERIAL,
	          "the key material is not the material imported into %s before: only that "
	          "material can be imported into it again",
	          k->arn);
	material_arg a = {HSM_OP_ImportKeyMaterial, kms_now(kms), valid_to, false, false, false};
	res = hsm_store_key_set_material(kms->store, k->rec.key_id, set_material_state, &a, &v, out);
	kms_key_invalidate(kms, k->rec.key_id);
out:
	kms_key_release(k);
	hsm_version_record_clear(&cur);
	hsm_version_record_clear(&v);
	return res;
}

/* Erases the primary version's material, keeping its public key and digest. */
static hsm_result erase(hsm_kms *kms, const char *key_id, uint32_t version, material_arg *a,
                        hsm_key_record *out)
{
	hsm_version_record cur;
	memset(&cur, 0, sizeof(cur));
	HSM_GUARD(hsm_store_version_get(kms->store, key_id, version, &cur));
	hsm_buf_free(&cur.wrapped);
	hsm_result r = hsm_store_key_set_material(kms->store, key_id, set_material_state, a, &cur, out);
	hsm_version_record_clear(&cur);
	kms_key_invalidate(kms, key_id);
	hsm_ks_forget(kms->ks, key_id); /* zeroize this node's copy at once */
	return r;
}

hsm_result hsm_kms_delete_material(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   hsm_key_record *out)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_DeleteImportedKeyMaterial, ref, NULL, &k));
	hsm_result r = require_external(k, HSM_OP_DeleteImportedKeyMaterial);
	material_arg a = {HSM_OP_DeleteImportedKeyMaterial, kms_now(kms), 0, true, false, false};
	if (hsm_ok(r))
		r = erase(kms, k->rec.key_id, k->rec.primary_version, &a, out);
	kms_key_release(k);
	return r;
}

hsm_result kms_expire_due(hsm_kms *kms, const hsm_key_record *rec)
{
	hsm_key_record after;
	memset(&after, 0, sizeof(after));
	material_arg a = {HSM_OP_DeleteImportedKeyMaterial, kms_now(kms), 0, true, true, false};
	hsm_result r = erase(kms, rec->key_id, rec->primary_version, &a, &after);
	hsm_key_record_clear(&after);
	/* Imported again with a later ValidTo, or deleted, since the listing: nothing is due. */
	if (a.not_due)
		return HSM_SUCCESS;
	kms_emit(kms, "DeleteExpiredKeyMaterial", rec->key_id, rec->primary_version, r);
	if (hsm_ok(r))
		hsm_info("the imported key material of %s expired and was deleted", rec->key_id);
	return r;
}
