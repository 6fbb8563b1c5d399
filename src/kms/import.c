/*
 * import.c - keys whose material is made elsewhere (AWS KMS API reference,
 * "GetParametersForImport", "ImportKeyMaterial", "DeleteImportedKeyMaterial",
 * "RotateKeyOnDemand", "ListKeyRotations"; Developer Guide, "Importing key
 * material").
 *
 * A key created with Origin EXTERNAL starts PendingImport, with a first
 * version that holds no material.  ImportKeyMaterial fills that version and
 * makes the key Enabled; the version keeps a digest of the material (keyed
 * under the DMK, kms never sees the material), so the material can later be
 * imported again, after DeleteImportedKeyMaterial or its expiry, but no other
 * material can take its place: ciphertexts made under a version stay
 * decryptable by the material that made them, or by nothing.
 *
 * Each version is one key material (KMS KeyMaterialId, hsm_kms_material_id),
 * with an expiry and a description of its own.  New material for a key that
 * has some (ImportType NEW_KEY_MATERIAL) goes to version primary+1, pending
 * rotation: nothing uses it, it may be deleted or replaced by other new
 * material, and RotateKeyOnDemand makes it the primary version, for good.
 * KMS offers this for symmetric encryption keys; hsmd, which rotates every
 * key type, for every imported key, and on a schedule too (rotation.c):
 * with rotation enabled, the scheduler makes the waiting material current
 * when the date comes.  The key is usable (Enabled) only while
 * every version up to the primary holds its material; the store keeps the
 * flag that says so and the earliest expiry (hsm_store_key_set_material).
 *
 * Policies see kms:WrappingAlgorithm and kms:WrappingKeySpec on
 * GetParametersForImport, kms:ExpirationModel and kms:ValidTo (epoch seconds)
 * on ImportKeyMaterial.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
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

/* KeyMaterialDescription: 0-256 characters of [a-zA-Z0-9:/_ whitespace .-] (KMS's pattern). */
static hsm_result check_description(const char *d)
{
	if (d == NULL)
		return HSM_SUCCESS;
	size_t n = strlen(d);
	HSM_ENSURE(n <= HSM_MATERIAL_DESC_MAX, HSM_ERR_VALIDATION,
	           "KeyMaterialDescription must be at most %d characters", HSM_MATERIAL_DESC_MAX);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)d[i];
		HSM_ENSURE((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		               (ch >= '0' && ch <= '9') || strchr(":/_.- \t\n\r\f\v", ch) != NULL,
		           HSM_ERR_VALIDATION,
		           "KeyMaterialDescription may hold only letters, digits, whitespace and :/_.-");
	}
	return HSM_SUCCESS;
}

hsm_result hsm_kms_material_id(const char *key_id, uint32_t version,
                               char out[HSM_MATERIAL_ID_LEN + 1])
{
	static const char label[] = "hsmd key material id";
	uint8_t msg[sizeof(label) + HSM_UUID_STRLEN + 4], d[HSM_SHA256_LEN];
	size_t n = strnlen(key_id, HSM_UUID_STRLEN);
	memcpy(msg, label, sizeof(label)); /* with its NUL: a separator */
	memcpy(msg + sizeof(label), key_id, n);
	uint8_t *be = msg + sizeof(label) + n;
	be[0] = (uint8_t)(version >> 24);
	be[1] = (uint8_t)(version >> 16);
	be[2] = (uint8_t)(version >> 8);
	be[3] = (uint8_t)version;
	HSM_GUARD(hsm_sha256(msg, sizeof(label) + n + 4, d));
	hsm_hex_encode_str(out, d, sizeof(d));
	return HSM_SUCCESS;
}

/* KeyMaterialId's form; NULL (not given) passes. */
static hsm_result check_material_id(const char *id)
{
	bool ok = id == NULL || strlen(id) == HSM_MATERIAL_ID_LEN;
	for (size_t i = 0; ok && id != NULL && id[i] != '\0'; i++)
		ok = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f');
	HSM_ENSURE(ok, HSM_ERR_VALIDATION, "KeyMaterialId must be %d lowercase hexadecimal digits",
	           HSM_MATERIAL_ID_LEN);
	return HSM_SUCCESS;
}

/* ---- A key's materials ------------------------------------------------------------ */

/* The versions of a key, read before a change (the change re-checks in its transaction). */
typedef struct materials {
	hsm_version_record *v;
	size_t n, cap;
} materials;

static void materials_free(materials *m)
{
	for (size_t i = 0; i < m->n; i++)
		hsm_version_record_clear(&m->v[i]);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

static hsm_result collect_version(const hsm_version_record *v, void *arg)
{
	materials *m = arg;
	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 8;
		hsm_version_record *p = realloc(m->v, cap * sizeof(*p));
		HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
		m->v = p;
		m->cap = cap;
	}
	hsm_version_record *d = &m->v[m->n];
	memset(d, 0, sizeof(*d));
	memcpy(d->key_id, v->key_id, sizeof(d->key_id));
	d->version = v->version;
	d->created = v->created;
	d->rotation_type = v->rotation_type;
	d->valid_to = v->valid_to;
	memcpy(d->description, v->description, sizeof(d->description));
	/* Whether it holds material, not the material: kms never needs the wrapped bytes here. */
	hsm_result r = hsm_buf_set(&d->wrapped, (const uint8_t *)"", v->wrapped.len > 0 ? 1 : 0);
	if (hsm_ok(r))
		r = hsm_buf_set(&d->public_der, v->public_der.data, v->public_der.len);
	if (hsm_ok(r))
		r = hsm_buf_set(&d->digest, v->digest.data, v->digest.len);
	m->n++;
	return r;
}

static hsm_result materials_read(hsm_kms *kms, const char *key_id, materials *m)
{
	hsm_result r = hsm_store_version_list(kms->store, key_id, collect_version, m);
	if (hsm_failed(r))
		materials_free(m);
	return r;
}

static const hsm_version_record *materials_find(const materials *m, uint32_t version)
{
	for (size_t i = 0; i < m->n; i++) {
		if (m->v[i].version == version)
			return &m->v[i];
	}
	return NULL;
}

/* The version a KeyMaterialId names among those that ever held material. */
static hsm_result materials_by_id(const materials *m, const kms_key *k, const char *id,
                                  const hsm_version_record **out)
{
	char mine[HSM_MATERIAL_ID_LEN + 1];
	for (size_t i = 0; i < m->n; i++) {
		if (m->v[i].digest.len == 0 && m->v[i].wrapped.len == 0)
			continue; /* never imported */
		HSM_GUARD(hsm_kms_material_id(k->rec.key_id, m->v[i].version, mine));
		if (strcmp(mine, id) == 0) {
			*out = &m->v[i];
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_NOT_FOUND, "%s has no key material with KeyMaterialId %.64s", k->arn,
	                id);
}

/* ---- Changes, in the store's transaction ---------------------------------------------- */

typedef enum material_change {
	CHANGE_IMPORT,  /* material into a version the key uses */
	CHANGE_PENDING, /* new material into version primary+1, pending rotation */
	CHANGE_PENDING_AGAIN, /* the material pending rotation, imported again */
	CHANGE_ERASE,   /* DeleteImportedKeyMaterial, or expiry */
	CHANGE_PROMOTE, /* RotateKeyOnDemand: the pending material becomes primary */
} material_change;

typedef struct material_arg {
	hsm_op op;
	material_change change;
	int64_t now;
	uint32_t primary;  /* the primary version the change was planned against */
	uint32_t version;  /* the version changed */
	bool expiry;       /* the scheduler, not a caller */
	bool scheduled;    /* an automatic rotation: only while it is still due */
} material_arg;

/* The key's side of a material change; the store has set NO_MATERIAL and valid_to. */
static hsm_result set_material_state(hsm_key_record *rec, void *arg)
{
	const material_arg *a = arg;
	if (a->scheduled)
		HSM_ENSURE(rec->state == HSM_KEY_ENABLED && rec->rotation_enabled &&
		               rec->next_rotation <= a->now,
		           HSM_ERR_CONFLICT, "the rotation of %s is no longer due", rec->key_id);
	else if (!a->expiry)
		HSM_GUARD(kms_check_state(a->op, rec, a->now)); /* it may have changed since the lookup */
	HSM_ENSURE(rec->origin == HSM_ORIGIN_EXTERNAL, HSM_ERR_UNSUPPORTED_OPERATION,
	           "%s does not have imported key material", rec->key_id);
	bool pending = a->version == rec->primary_version + 1;
	switch (a->change) {
	case CHANGE_IMPORT:
		break;
	case CHANGE_PENDING:
		HSM_ENSURE((rec->flags & HSM_KEYFLAG_PENDING_MATERIAL) == 0, HSM_ERR_CONFLICT,
		           "%s got other new key material meanwhile", rec->key_id);
		/* fall through */
	case CHANGE_PENDING_AGAIN:
		HSM_ENSURE(rec->primary_version == a->primary, HSM_ERR_CONFLICT,
		           "%s was rotated meanwhile: repeat the import", rec->key_id);
		rec->flags |= HSM_KEYFLAG_PENDING_MATERIAL;
		break;
	case CHANGE_ERASE:
		if (pending)
			rec->flags &= ~HSM_KEYFLAG_PENDING_MATERIAL;
		break;
	case CHANGE_PROMOTE:
		HSM_ENSURE((rec->flags & HSM_KEYFLAG_PENDING_MATERIAL) != 0, HSM_ERR_INVALID_STATE,
		           "%s has no key material pending rotation", rec->key_id);
		rec->flags &= ~HSM_KEYFLAG_PENDING_MATERIAL;
		/* As in rotation.c (and KMS): an automatic rotation starts the next period; one
		 * on demand leaves the automatic schedule as it was, unless its date has passed
		 * (no material was there for it): it is then the rotation that was due, and the
		 * next material, imported for the next date, must not be rotated to at once. */
		if (rec->rotation_enabled && (a->scheduled || rec->next_rotation <= a->now))
			rec->next_rotation = a->now + (int64_t)rec->rotation_period_days * DAY;
		break;
	}
	bool gone = (rec->flags & HSM_KEYFLAG_NO_MATERIAL) != 0;
	if (rec->state != HSM_KEY_PENDING_DELETION && rec->state != HSM_KEY_PENDING_IMPORT && gone) {
		/*
		 * Remembered, as PendingImport refuses DisableKey: the material's
		 * return must not undo an administrator's DisableKey (that takes
		 * kms:EnableKey, which an importer need not have).
		 */
		if (rec->state == HSM_KEY_DISABLED)
			rec->flags |= HSM_KEYFLAG_STAYS_DISABLED;
		else
			rec->flags &= ~HSM_KEYFLAG_STAYS_DISABLED;
		rec->state = HSM_KEY_PENDING_IMPORT;
	} else if (rec->state == HSM_KEY_PENDING_IMPORT && !gone) {
		rec->state = (rec->flags & HSM_KEYFLAG_STAYS_DISABLED) != 0 ? HSM_KEY_DISABLED
		                                                             : HSM_KEY_ENABLED;
		rec->flags &= ~HSM_KEYFLAG_STAYS_DISABLED;
	}
	rec->updated = a->now;
	return HSM_SUCCESS;
}

/* ---- ImportKeyMaterial ------------------------------------------------------------------ */

/* Where the material goes: a version, and the versions it may already be (see the keystore). */
typedef struct import_plan {
	material_change change;
	uint32_t version; /* the new material's version when it matches none of known */
	hsm_ks_known_material *known; /* room for every version of the key */
	size_t n_known;
	bool want_match;  /* EXISTING: it must be one of known */
} import_plan;

static void plan_add(import_plan *p, const hsm_version_record *v)
{
	p->known[p->n_known].version = v->version;
	p->known[p->n_known].digest = &v->digest;
	p->n_known++;
}

static hsm_result plan_import(const kms_key *k, const materials *m, const hsm_import_req *req,
                              import_plan *p)
{
	uint32_t primary = k->rec.primary_version;
	bool had = false;
	for (size_t i = 0; i < m->n; i++)
		had |= m->v[i].version <= primary && m->v[i].digest.len > 0;
	hsm_import_type type = req->type;
	if (type == HSM_IMPORT_ANY)
		type = had ? HSM_IMPORT_EXISTING : HSM_IMPORT_NEW;
	HSM_ENSURE(req->material_id == NULL || type == HSM_IMPORT_EXISTING, HSM_ERR_VALIDATION,
	           "KeyMaterialId cannot be given with ImportType NEW_KEY_MATERIAL");
	memset(p, 0, sizeof(*p));
	p->known = calloc(m->n + 1, sizeof(*p->known));
	HSM_ENSURE(p->known != NULL, HSM_ERR_NOMEM, "out of memory");
	if (type == HSM_IMPORT_EXISTING) {
		HSM_ENSURE(had, HSM_ERR_VALIDATION,
		           "%s has never had key material: import it with ImportType "
		           "NEW_KEY_MATERIAL or without ImportType",
		           k->arn);
		p->want_match = true;
		if (req->material_id != NULL) {
			const hsm_version_record *v = NULL;
			HSM_GUARD(materials_by_id(m, k, req->material_id, &v));
			plan_add(p, v);
		} else {
			for (size_t i = 0; i < m->n; i++) {
				if (m->v[i].digest.len > 0)
					plan_add(p, &m->v[i]);
			}
		}
		return HSM_SUCCESS;
	}
	if (!had) {
		p->change = CHANGE_IMPORT;
		p->version = primary;
		return HSM_SUCCESS;
	}
	/* New material to rotate to: version primary+1, unless one is already waiting there. */
	const hsm_version_record *waiting = materials_find(m, primary + 1);
	if (waiting != NULL && waiting->wrapped.len > 0) {
		char id[HSM_MATERIAL_ID_LEN + 1];
		HSM_GUARD(hsm_kms_material_id(k->rec.key_id, waiting->version, id));
		return HSM_FAIL(HSM_ERR_INVALID_STATE,
		                "%s already has new key material pending rotation (KeyMaterialId %s): "
		                "rotate to it (RotateKeyOnDemand) or delete it first",
		                k->arn, id);
	}
	p->change = CHANGE_PENDING;
	p->version = primary + 1;
	/* It must not be a material the key has: each is imported once, and used in one version. */
	for (size_t i = 0; i < m->n; i++) {
		if (m->v[i].digest.len > 0 && m->v[i].version <= primary)
			plan_add(p, &m->v[i]);
	}
	return HSM_SUCCESS;
}

hsm_result hsm_kms_import_material(hsm_kms *kms, const hsm_caller *caller,
                                   const hsm_import_req *req, hsm_key_record *out,
                                   uint32_t *version)
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	materials m = {0};
	hsm_version_record v;
	memset(&v, 0, sizeof(v));
	int64_t valid_to = 0;
	char valid_to_text[24];
	import_plan plan = {0};
	size_t match = 0;
	HSM_ENSURE(req->token != NULL && req->token_len > 0, HSM_ERR_VALIDATION,
	           "ImportToken is required");
	HSM_ENSURE(req->encrypted != NULL && req->encrypted_len > 0, HSM_ERR_VALIDATION,
	           "EncryptedKeyMaterial is required");
	HSM_GUARD(expiration(kms, req, &valid_to));
	HSM_GUARD(check_description(req->description));
	HSM_GUARD(check_material_id(req->material_id));
	snprintf(valid_to_text, sizeof(valid_to_text), "%lld", (long long)valid_to);
	hsm_policy_pair more[] = {
	    {"kms:ExpirationModel",
	     valid_to != 0 ? "KEY_MATERIAL_EXPIRES" : "KEY_MATERIAL_DOES_NOT_EXPIRE"},
	    {"kms:ValidTo", valid_to_text},
	};
	kms_authz_extra extra = {.more = more, .n_more = valid_to != 0 ? 2 : 1};
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_ImportKeyMaterial, req->key, &extra, &k));
	HSM_TRY(require_external(k, HSM_OP_ImportKeyMaterial));
	HSM_TRY(materials_read(kms, k->rec.key_id, &m));
	HSM_TRY(plan_import(k, &m, req, &plan));
	hsm_ks_keyref ref = kms_keyref(k, plan.version);
	HSM_TRY(hsm_ks_import_material(kms->ks, &ref, req->token, req->token_len, req->encrypted,
	                               req->encrypted_len, kms_now(kms), plan.known, plan.n_known,
	                               &match, &v.wrapped, &v.public_der, &v.digest));
	if (plan.want_match) {
		HSM_CHECK(match < plan.n_known, HSM_ERR_INCORRECT_KEY_MATERIAL,
		          "the key material is not %s imported into %s before: only that material "
		          "can be imported again (new material: ImportType NEW_KEY_MATERIAL)",
		          req->material_id != NULL ? "the material KeyMaterialId names," : "a material",
		          k->arn);
		v.version = plan.known[match].version;
		plan.change = v.version <= k->rec.primary_version ? CHANGE_IMPORT : CHANGE_PENDING_AGAIN;
	} else {
		HSM_CHECK(match == plan.n_known, HSM_ERR_INCORRECT_KEY_MATERIAL,
		          "the key material is already a material of %s: import it again with "
		          "ImportType EXISTING_KEY_MATERIAL",
		          k->arn);
		v.version = plan.version;
	}
	const hsm_version_record *had = materials_find(&m, v.version);
	memcpy(v.key_id, k->rec.key_id, sizeof(v.key_id));
	v.created = had != NULL ? had->created : kms_now(kms);
	v.rotation_type = had != NULL ? had->rotation_type : HSM_ROTATION_NONE;
	v.valid_to = valid_to;
	if (req->description != NULL)
		snprintf(v.description, sizeof(v.description), "%s", req->description);
	else if (had != NULL && had->digest.len > 0 && hsm_ct_equal(had->digest.data, v.digest.data,
	                                                           v.digest.len))
		memcpy(v.description, had->description, sizeof(v.description)); /* kept */
	material_arg a = {HSM_OP_ImportKeyMaterial, plan.change, kms_now(kms),
	                  k->rec.primary_version, v.version, false, false};
	HSM_TRY(hsm_caller_commit_key(caller, k->rec.key_id));
	res = hsm_store_key_set_material(kms->store, k->rec.key_id, set_material_state, &a, &v, out);
	kms_key_invalidate(kms, k->rec.key_id);
	if (hsm_ok(res))
		*version = v.version;
out:
	kms_key_release(k);
	free(plan.known);
	materials_free(&m);
	hsm_version_record_clear(&v);
	return res;
}

/* ---- DeleteImportedKeyMaterial and expiry ----------------------------------------------- */

/*
 * Erases a version's material, keeping its public key, digest and
 * description.  expect_valid_to (expiry) is the expiry the scheduler saw:
 * a material imported again since is left alone (CONFLICT).
 */
static hsm_result erase(hsm_kms *kms, const char *key_id, const hsm_version_record *cur,
                        material_arg *a, int64_t expect_valid_to, hsm_key_record *out)
{
	hsm_version_record v;
	memset(&v, 0, sizeof(v));
	memcpy(v.key_id, cur->key_id, sizeof(v.key_id));
	v.version = cur->version;
	v.created = cur->created;
	v.rotation_type = cur->rotation_type;
	v.valid_to = expect_valid_to; /* the store's precondition for an erasure; 0: none */
	memcpy(v.description, cur->description, sizeof(v.description));
	hsm_result r = hsm_buf_set(&v.public_der, cur->public_der.data, cur->public_der.len);
	if (hsm_ok(r))
		r = hsm_buf_set(&v.digest, cur->digest.data, cur->digest.len);
	if (hsm_ok(r))
		r = hsm_store_key_set_material(kms->store, key_id, set_material_state, a, &v, out);
	hsm_version_record_clear(&v);
	kms_key_invalidate(kms, key_id);
	kms_forget(kms, key_id); /* zeroize this node's copy at once */
	return r;
}

hsm_result hsm_kms_delete_material(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   const char *material_id, hsm_key_record *out,
                                   uint32_t *version)
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	materials m = {0};
	HSM_GUARD(check_material_id(material_id));
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_DeleteImportedKeyMaterial, ref, NULL, &k));
	HSM_TRY(require_external(k, HSM_OP_DeleteImportedKeyMaterial));
	HSM_TRY(materials_read(kms, k->rec.key_id, &m));
	const hsm_version_record *v = materials_find(&m, k->rec.primary_version);
	if (material_id != NULL)
		HSM_TRY(materials_by_id(&m, k, material_id, &v));
	if (material_id == NULL && (v == NULL || v->wrapped.len == 0)) {
		/*
		 * The key state table (AWS KMS Developer Guide, "Key states of AWS
		 * KMS keys"): on a key without its current material, PendingImport
		 * or pending deletion, the operation succeeds and has no effect.
		 * *version 0: no material was erased.
		 */
		HSM_TRY(hsm_caller_commit_key(caller, k->rec.key_id));
		HSM_TRY(hsm_key_record_copy(out, &k->rec));
		*version = 0;
		goto out;
	}
	HSM_CHECK(v != NULL && v->wrapped.len > 0, HSM_ERR_INVALID_STATE,
	          "%s: the key material %s is not imported", k->arn,
	          material_id != NULL ? "KeyMaterialId names" : "in use");
	material_arg a = {HSM_OP_DeleteImportedKeyMaterial, CHANGE_ERASE, kms_now(kms),
	                  k->rec.primary_version, v->version, false, false};
	HSM_TRY(hsm_caller_commit_key(caller, k->rec.key_id));
	res = erase(kms, k->rec.key_id, v, &a, 0, out);
	if (hsm_ok(res))
		*version = v->version;
out:
	kms_key_release(k);
	materials_free(&m);
	return res;
}

hsm_result kms_expire_due(hsm_kms *kms, const hsm_key_record *rec, bool *acted)
{
	*acted = false;
	materials m = {0};
	hsm_result r = HSM_SUCCESS;
	int64_t now = kms_now(kms);
	HSM_GUARD(materials_read(kms, rec->key_id, &m));
	for (size_t i = 0; i < m.n && hsm_ok(r); i++) {
		const hsm_version_record *v = &m.v[i];
		if (v->wrapped.len == 0 || v->valid_to == 0 || v->valid_to > now)
			continue;
		hsm_key_record after;
		memset(&after, 0, sizeof(after));
		material_arg a = {HSM_OP_DeleteImportedKeyMaterial, CHANGE_ERASE, now, 0, v->version,
		                  true, false};
		hsm_result one = erase(kms, rec->key_id, v, &a, v->valid_to, &after);
		hsm_key_record_clear(&after);
		/* Imported again since the listing (a new ValidTo), or destroyed: nothing is due. */
		if (one.err == HSM_ERR_CONFLICT || one.err == HSM_ERR_INVALID_STATE ||
		    one.err == HSM_ERR_NOT_FOUND)
			continue;
		kms_emit(kms, "DeleteExpiredKeyMaterial", rec->key_id, v->version, one);
		if (hsm_ok(one))
			hsm_info("the imported key material of %s (version %u) expired and was deleted",
			         rec->key_id, v->version);
		*acted |= hsm_ok(one);
		r = one;
	}
	materials_free(&m);
	return r;
}

hsm_result kms_valid_to_in_use(hsm_kms *kms, hsm_key_record *rec)
{
	/* The store's valid_to counts the material pending rotation too; DescribeKey's does not. */
	if (rec->origin != HSM_ORIGIN_EXTERNAL || (rec->flags & HSM_KEYFLAG_PENDING_MATERIAL) == 0 ||
	    rec->valid_to == 0)
		return HSM_SUCCESS;
	materials m = {0};
	HSM_GUARD(materials_read(kms, rec->key_id, &m));
	int64_t earliest = 0;
	for (size_t i = 0; i < m.n; i++) {
		const hsm_version_record *v = &m.v[i];
		if (v->version <= rec->primary_version && v->wrapped.len > 0 && v->valid_to != 0 &&
		    (earliest == 0 || v->valid_to < earliest))
			earliest = v->valid_to;
	}
	rec->valid_to = earliest;
	materials_free(&m);
	return HSM_SUCCESS;
}

/* ---- RotateKeyOnDemand ------------------------------------------------------------------- */

hsm_result kms_promote_pending(hsm_kms *kms, const hsm_caller *caller, const kms_key *k,
                               hsm_rotation_type type, hsm_key_record *out)
{
	hsm_version_record v;
	memset(&v, 0, sizeof(v));
	uint32_t next = k->rec.primary_version + 1;
	hsm_result r = hsm_store_version_get(kms->store, k->rec.key_id, next, &v);
	if (r.err == HSM_ERR_NOT_FOUND || (hsm_ok(r) && v.wrapped.len == 0))
		r = HSM_FAIL(HSM_ERR_INVALID_STATE,
		             "%s has no key material pending rotation: import new key material "
		             "(ImportType NEW_KEY_MATERIAL) first",
		             k->arn);
	else if (hsm_ok(r) && v.valid_to != 0 && v.valid_to <= kms_now(kms))
		r = HSM_FAIL(HSM_ERR_INVALID_STATE,
		             "the key material of %s pending rotation has expired: import it again "
		             "with a later ValidTo",
		             k->arn);
	hsm_version_record_clear(&v);
	HSM_GUARD(r);
	if (caller != NULL)
		HSM_GUARD(hsm_caller_commit_key(caller, k->rec.key_id));
	material_arg a = {HSM_OP_RotateKeyOnDemand, CHANGE_PROMOTE, kms_now(kms),
	                  k->rec.primary_version, next, false, type == HSM_ROTATION_AUTOMATIC};
	r = hsm_store_key_promote(kms->store, k->rec.key_id, next, a.now, type, set_material_state,
	                          &a, out);
	kms_key_invalidate(kms, k->rec.key_id);
	return r;
}
