/*
 * keys.c - key life cycle: CreateKey, DescribeKey, ListKeys, DescribeKeys,
 * EnableKey, DisableKey, UpdateKeyDescription, ScheduleKeyDeletion,
 * CancelKeyDeletion, and destruction once the waiting period ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kms/kms_internal.h"

#define DESCRIPTION_MAX 8192 /* CreateKey Description: 0-8192 characters */
#define MIN_PENDING_DAYS 7   /* ScheduleKeyDeletion PendingWindowInDays: 7-30 */
#define MAX_PENDING_DAYS 30
#define DAY 86400

static hsm_result check_description(const char *d)
{
	HSM_ENSURE(hsm_utf16_units(d) <= DESCRIPTION_MAX, HSM_ERR_VALIDATION,
	           "Description must be at most %d characters", DESCRIPTION_MAX);
	return HSM_SUCCESS;
}

static hsm_result build_record(hsm_kms *kms, const hsm_create_key_req *req, hsm_key_record *rec)
{
	rec->description = strdup(req->description != NULL ? req->description : "");
	HSM_ENSURE(rec->description != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_buf policy = {0};
	if (req->policy != NULL)
		HSM_GUARD(hsm_buf_put_str(&policy, req->policy));
	else
		HSM_GUARD(hsm_policy_default(kms->account, &policy));
	hsm_result r = hsm_buf_terminate(&policy);
	if (hsm_failed(r)) {
		hsm_buf_free(&policy);
		return r;
	}
	rec->policy = (char *)policy.data; /* ownership moves to the record */
	rec->spec = req->spec;
	rec->usage = req->usage;
	rec->origin = req->origin;
	rec->state = HSM_KEY_ENABLED;
	if (req->origin == HSM_ORIGIN_EXTERNAL) {
		/* The material comes later, through ImportKeyMaterial. */
		rec->state = HSM_KEY_PENDING_IMPORT;
		rec->flags |= HSM_KEYFLAG_NO_MATERIAL;
	}
	rec->created = kms_now(kms);
	rec->updated = rec->created;
	rec->primary_version = 1;
	rec->flags |= req->flags;
	return HSM_SUCCESS;
}

static hsm_result validate_create(const hsm_create_key_req *req)
{
	if (req->description != NULL)
		HSM_GUARD(check_description(req->description));
	HSM_ENSURE(hsm_spec_allows_usage(req->spec, req->usage), HSM_ERR_VALIDATION,
	           "KeyUsage %s is not compatible with KeySpec %s", hsm_usage_name(req->usage),
	           hsm_spec_name(req->spec));
	if (req->policy != NULL) {
		hsm_policy *p = NULL;
		HSM_GUARD(hsm_policy_parse(req->policy, strlen(req->policy), &p));
		hsm_policy_free(p);
	}
	HSM_ENSURE(req->n_tags <= HSM_MAX_TAGS_PER_KEY, HSM_ERR_LIMIT_EXCEEDED,
	           "a key can have at most %d tags", HSM_MAX_TAGS_PER_KEY);
	for (size_t i = 0; i < req->n_tags; i++)
		HSM_GUARD(kms_check_tag(&req->tags[i]));
	HSM_ENSURE((req->flags & HSM_KEYFLAG_JWT) == 0 || req->usage == HSM_USAGE_SIGN_VERIFY,
	           HSM_ERR_VALIDATION, "only SIGN_VERIFY keys can sign tokens");
	HSM_ENSURE((req->flags & (HSM_KEYFLAG_NO_MATERIAL | HSM_KEYFLAG_STAYS_DISABLED)) == 0,
	           HSM_ERR_VALIDATION, "flags %#x are the store's to set",
	           HSM_KEYFLAG_NO_MATERIAL | HSM_KEYFLAG_STAYS_DISABLED);
	HSM_ENSURE(req->origin == HSM_ORIGIN_AWS_KMS || req->origin == HSM_ORIGIN_EXTERNAL,
	           HSM_ERR_VALIDATION, "unknown key origin");
	return HSM_SUCCESS;
}

/* A given policy must let the creator change it later, unless the check is bypassed. */
static hsm_result check_lockout(hsm_kms *kms, const hsm_caller *caller,
                                const hsm_key_record *rec, const hsm_create_key_req *req)
{
	const char *policy = req->policy;
	hsm_policy *p = NULL;
	hsm_buf arn = {0};
	hsm_result r = hsm_policy_parse(policy, strlen(policy), &p);
	if (hsm_ok(r))
		r = hsm_kms_key_arn(kms, rec->key_id, &arn);
	if (hsm_ok(r))
		r = hsm_buf_terminate(&arn);
	if (hsm_ok(r))
		r = kms_lockout_check(kms, caller, rec, (const char *)arn.data, p, true, req->tags,
		                      req->n_tags);
	hsm_policy_free(p);
	hsm_buf_free(&arn);
	return r;
}

#define META_ACCOUNT "account"

hsm_result hsm_kms_account_check(hsm_store *store, const char *account_id, const char *region,
                                 bool record)
{
	char mine[96];
	snprintf(mine, sizeof(mine), "%s %s", account_id, region);
	hsm_buf v;
	hsm_buf_init(&v);
	hsm_result r = hsm_store_meta_get(store, META_ACCOUNT, &v);
	if (r.err == HSM_ERR_NOT_FOUND) {
		if (!record) {
			hsm_buf_free(&v);
			return HSM_SUCCESS;
		}
		const char *names[] = {META_ACCOUNT};
		hsm_buf value = {.data = (uint8_t *)mine, .len = strlen(mine)};
		const hsm_buf *values[] = {&value};
		r = hsm_store_meta_put(store, 1, names, values);
		if (r.err != HSM_ERR_ALREADY_EXISTS) { /* recorded, or not: either way no other */
			hsm_buf_free(&v);
			return r;
		}
		r = hsm_store_meta_get(store, META_ACCOUNT, &v); /* another node's, just now */
	}
	char theirs[96];
	snprintf(theirs, sizeof(theirs), "%.*s", (int)(v.len < sizeof(theirs) - 1 ? v.len : 95),
	         v.data != NULL ? (const char *)v.data : "");
	hsm_buf_free(&v);
	HSM_GUARD(r);
	if (strcmp(theirs, mine) == 0)
		return HSM_SUCCESS;
	char *space = strchr(theirs, ' ');
	if (space != NULL)
		*space = '\0';
	return HSM_FAIL(HSM_ERR_CONFLICT,
	                "the store's keys belong to account %s in region %s, and this node's "
	                "account_id and region are %s and %s: give it the store's (its key ARNs and "
	                "policies name them)",
	                theirs, space != NULL ? space + 1 : "?", account_id, region);
}

hsm_result hsm_kms_account_recorded(hsm_store *store, char account[13],
                                    char region[HSM_REGION_NAME_MAX + 1], bool *recorded)
{
	account[0] = region[0] = '\0';
	*recorded = false;
	hsm_buf v;
	hsm_buf_init(&v);
	hsm_result r = hsm_store_meta_get(store, META_ACCOUNT, &v);
	if (r.err == HSM_ERR_NOT_FOUND) {
		hsm_buf_free(&v);
		return HSM_SUCCESS;
	}
	/* "<account> <region>", as hsm_kms_account_check writes it. */
	const char *p = v.data != NULL ? (const char *)v.data : "";
	const char *space = hsm_ok(r) ? memchr(p, ' ', v.len) : NULL;
	size_t n_account = space != NULL ? (size_t)(space - p) : 0;
	size_t n_region = space != NULL ? v.len - n_account - 1 : 0;
	if (hsm_ok(r) && (n_account != 12 || n_region == 0 || n_region > HSM_REGION_NAME_MAX))
		r = HSM_FAIL(HSM_ERR_STORE, "the store's record of its account and region is malformed");
	if (hsm_ok(r)) {
		memcpy(account, p, 12);
		account[12] = '\0';
		memcpy(region, space + 1, n_region);
		region[n_region] = '\0';
		*recorded = true;
	}
	hsm_buf_free(&v);
	return r;
}

hsm_result hsm_kms_create_key(hsm_kms *kms, const hsm_caller *caller,
                              const hsm_create_key_req *req, hsm_key_record *out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_key_record rec;
	hsm_version_record v;
	memset(&rec, 0, sizeof(rec));
	memset(&v, 0, sizeof(v));
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_CreateKey, NULL, NULL));
	HSM_GUARD(validate_create(req));
	if (!atomic_load_explicit(&kms->account_checked, memory_order_acquire)) {
		/* The account's record is no change of this request's: the request's outbox row
		 * goes with the key's own write, not with it. */
		hsm_store_intent *intent = hsm_store_intent_current();
		hsm_store_intent_end();
		hsm_result checked =
		    hsm_kms_account_check(kms->store, kms->cfg.account_id, kms->cfg.region, true);
		if (intent != NULL)
			hsm_store_intent_begin(intent);
		HSM_GUARD(checked);
		atomic_store_explicit(&kms->account_checked, true, memory_order_release);
	}
	HSM_TRY(hsm_uuid_new(rec.key_id));
	HSM_TRY(build_record(kms, req, &rec));
	if (req->policy != NULL && !req->bypass_lockout_check)
		HSM_TRY(check_lockout(kms, caller, &rec, req));
	memcpy(v.key_id, rec.key_id, sizeof(v.key_id));
	v.version = 1;
	v.created = rec.created;
	v.rotation_type = HSM_ROTATION_NONE;
	hsm_ks_keyref ref = {rec.key_id, 1, rec.spec, rec.usage};
	HSM_TRY(hsm_caller_commit(caller)); /* before the (possibly long) key generation */
	if (req->origin != HSM_ORIGIN_EXTERNAL)
		HSM_TRY(hsm_ks_generate(kms->ks, &ref, &v.wrapped, &v.public_der));
	/* The key and its tags in one transaction: a failed tag write leaves no key behind. */
	HSM_TRY(hsm_store_key_create_tagged(kms->store, &rec, &v, req->n_tags, req->tags));
	if (req->flags != 0)
		kms_key_invalidate(kms, rec.key_id); /* a key to publish appeared (JWKS cache) */
	*out = rec;
	memset(&rec, 0, sizeof(rec));
out:
	hsm_key_record_clear(&rec);
	hsm_version_record_clear(&v);
	return res;
}

hsm_result hsm_kms_describe_key(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                hsm_key_record *out)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_DescribeKey, ref, NULL, &k));
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	hsm_result r = hsm_key_record_copy(&rec, &k->rec);
	/*
	 * Material in use past its ValidTo: pending import before the scheduler
	 * erases it, and described as after (no ExpirationModel, ValidTo or, for
	 * a first material, CurrentKeyMaterialId), as the store will flag it then.
	 */
	if (hsm_ok(r) && (rec.state == HSM_KEY_ENABLED || rec.state == HSM_KEY_DISABLED)) {
		hsm_result gone = kms_check_material(kms, k);
		if (gone.err == HSM_ERR_INVALID_STATE) {
			rec.state = HSM_KEY_PENDING_IMPORT;
			rec.flags |= HSM_KEYFLAG_NO_MATERIAL;
		} else {
			r = gone;
		}
	}
	kms_key_release(k);
	if (hsm_ok(r))
		r = kms_valid_to_in_use(kms, &rec);
	if (hsm_ok(r))
		*out = rec;
	else
		hsm_key_record_clear(&rec);
	return r;
}

hsm_result hsm_kms_custom_key_stores(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                     const char *name)
{
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_DescribeCustomKeyStores, NULL, NULL));
	HSM_ENSURE(id == NULL || name == NULL, HSM_ERR_VALIDATION,
	           "give CustomKeyStoreId or CustomKeyStoreName, not both");
	HSM_ENSURE(id == NULL && name == NULL, HSM_ERR_CUSTOM_KEY_STORE_NOT_FOUND,
	           "that custom key store does not exist: hsmd holds its keys itself and has no "
	           "custom key stores");
	return HSM_SUCCESS;
}

hsm_result hsm_kms_list_keys(hsm_kms *kms, const hsm_caller *caller, const char *marker,
                             size_t limit, hsm_key_cb cb, void *arg, bool *truncated)
{
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_ListKeys, NULL, NULL));
	HSM_ENSURE(marker == NULL || *marker == '\0' || hsm_is_uuid(marker), HSM_ERR_INVALID_MARKER,
	           "Marker is invalid");
	return hsm_store_key_list(kms->store, marker, limit, false, cb, arg, truncated);
}

typedef struct id_page {
	char (*ids)[HSM_UUID_STRLEN + 1];
	size_t n;
} id_page;

static hsm_result collect_id(const hsm_key_record *r, void *arg)
{
	id_page *p = arg;
	memcpy(p->ids[p->n++], r->key_id, HSM_UUID_STRLEN + 1);
	return HSM_SUCCESS;
}

/*
 * Failures that concern one key of a DescribeKeys page (the caller may not
 * read it, it went, or its state or kind has no public key to give), not
 * the request: the key is left out, or shown without its public key.
 */
static bool about_the_key(hsm_err e)
{
	return e == HSM_ERR_ACCESS_DENIED || e == HSM_ERR_NOT_FOUND || e == HSM_ERR_DISABLED ||
	       e == HSM_ERR_INVALID_STATE || e == HSM_ERR_INVALID_KEY_USAGE ||
	       e == HSM_ERR_UNSUPPORTED_OPERATION;
}

static hsm_result describe_one(hsm_kms *kms, const hsm_caller *caller, const char *key_id,
                               hsm_key_desc_cb cb, void *arg)
{
	hsm_key_record rec, pub_rec;
	memset(&rec, 0, sizeof(rec));
	memset(&pub_rec, 0, sizeof(pub_rec));
	hsm_buf spki = {0};
	bool has_public = false;
	hsm_result r = hsm_kms_describe_key(kms, caller, key_id, &rec);
	if (hsm_failed(r))
		return about_the_key(r.err) ? HSM_SUCCESS : r;
	if (hsm_spec_is_asymmetric(rec.spec)) {
		r = hsm_kms_get_public_key(kms, caller, key_id, &spki, &pub_rec);
		has_public = hsm_ok(r);
		if (hsm_failed(r) && about_the_key(r.err))
			r = HSM_SUCCESS;
	}
	if (hsm_ok(r))
		r = cb(&rec, has_public ? &spki : NULL, arg);
	hsm_buf_free(&spki);
	hsm_key_record_clear(&pub_rec);
	hsm_key_record_clear(&rec);
	return r;
}

hsm_result hsm_kms_describe_keys(hsm_kms *kms, const hsm_caller *caller, const char *marker,
                                 size_t limit, hsm_key_desc_cb cb, void *arg, bool *truncated,
                                 char last[HSM_UUID_STRLEN + 1])
{
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_DescribeKeys, NULL, NULL));
	HSM_ENSURE(marker == NULL || *marker == '\0' || hsm_is_uuid(marker), HSM_ERR_INVALID_MARKER,
	           "Marker is invalid");
	HSM_ENSURE(limit > 0, HSM_ERR_VALIDATION, "Limit must be at least 1");
	/* The page's ids first: each key is then read outside the store's listing. */
	id_page page = {calloc(limit, sizeof(*page.ids)), 0};
	HSM_ENSURE(page.ids != NULL, HSM_ERR_NOMEM, "out of memory");
	*truncated = false;
	hsm_result r = hsm_store_key_list(kms->store, marker, limit, false, collect_id, &page, truncated);
	for (size_t i = 0; hsm_ok(r) && i < page.n; i++)
		r = describe_one(kms, caller, page.ids[i], cb, arg);
	if (hsm_ok(r) && page.n > 0)
		memcpy(last, page.ids[page.n - 1], HSM_UUID_STRLEN + 1);
	*truncated = hsm_ok(r) && *truncated && page.n > 0;
	free(page.ids);
	return r;
}

hsm_result hsm_kms_describe_keys_one(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                     hsm_key_desc_cb cb, void *arg)
{
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_DescribeKeys, NULL, NULL));
	return describe_one(kms, caller, ref, cb, arg);
}

static hsm_result set_enabled(hsm_key_record *rec, void *arg)
{
	rec->state = *(bool *)arg ? HSM_KEY_ENABLED : HSM_KEY_DISABLED;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_enable_key(hsm_kms *kms, const hsm_caller *caller, const char *ref)
{
	bool on = true;
	return kms_modify(kms, caller, HSM_OP_EnableKey, ref, set_enabled, &on, NULL, NULL);
}

hsm_result hsm_kms_disable_key(hsm_kms *kms, const hsm_caller *caller, const char *ref)
{
	bool on = false;
	hsm_key_record after;
	memset(&after, 0, sizeof(after));
	HSM_GUARD(kms_modify(kms, caller, HSM_OP_DisableKey, ref, set_enabled, &on, NULL, &after));
	kms_forget(kms, after.key_id); /* zeroize the cached material at once */
	hsm_key_record_clear(&after);
	return HSM_SUCCESS;
}

static hsm_result set_description(hsm_key_record *rec, void *arg)
{
	char *d = strdup(arg);
	HSM_ENSURE(d != NULL, HSM_ERR_NOMEM, "out of memory");
	free(rec->description);
	rec->description = d;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_update_description(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                      const char *description)
{
	HSM_ENSURE(description != NULL, HSM_ERR_VALIDATION, "Description is required");
	HSM_GUARD(check_description(description));
	return kms_modify(kms, caller, HSM_OP_UpdateKeyDescription, ref, set_description,
	                  (void *)(uintptr_t)description, NULL, NULL);
}

typedef struct schedule_arg {
	int days;
	int64_t now;
} schedule_arg;

static hsm_result set_pending(hsm_key_record *rec, void *arg)
{
	const schedule_arg *s = arg;
	rec->state = HSM_KEY_PENDING_DELETION;
	rec->pending_window_days = s->days;
	rec->deletion_date = s->now + (int64_t)s->days * DAY;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_schedule_deletion(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                     int days, hsm_key_record *out)
{
	if (days == 0)
		days = kms->cfg.default_pending_days;
	HSM_ENSURE(days >= MIN_PENDING_DAYS && days <= MAX_PENDING_DAYS, HSM_ERR_VALIDATION,
	           "PendingWindowInDays must be between %d and %d", MIN_PENDING_DAYS,
	           MAX_PENDING_DAYS);
	schedule_arg s = {days, kms_now(kms)};
	char window[16];
	snprintf(window, sizeof(window), "%d", days);
	hsm_policy_pair cond = {"kms:ScheduleKeyDeletionPendingWindowInDays", window};
	kms_authz_extra extra = {.more = &cond, .n_more = 1};
	HSM_GUARD(kms_modify_with(kms, caller, HSM_OP_ScheduleKeyDeletion, ref, &extra, set_pending,
	                          &s, NULL, out));
	kms_forget(kms, out->key_id);
	return HSM_SUCCESS;
}

static hsm_result clear_pending(hsm_key_record *rec, void *arg)
{
	(void)arg;
	/*
	 * KMS leaves a key whose deletion was cancelled Disabled, or PendingImport
	 * without material: then Disabled once the material is imported again.
	 */
	if ((rec->flags & HSM_KEYFLAG_NO_MATERIAL) != 0) {
		rec->state = HSM_KEY_PENDING_IMPORT;
		rec->flags |= HSM_KEYFLAG_STAYS_DISABLED;
	} else {
		rec->state = HSM_KEY_DISABLED;
		rec->flags &= ~HSM_KEYFLAG_STAYS_DISABLED;
	}
	rec->deletion_date = 0;
	rec->pending_window_days = 0;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_cancel_deletion(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   hsm_key_record *out)
{
	return kms_modify(kms, caller, HSM_OP_CancelKeyDeletion, ref, clear_pending, NULL, NULL, out);
}

typedef struct flags_arg {
	uint32_t set, clear;
} flags_arg;

static hsm_result set_flags(hsm_key_record *rec, void *arg)
{
	const flags_arg *f = arg;
	HSM_ENSURE((f->set & HSM_KEYFLAG_JWT) == 0 || rec->usage == HSM_USAGE_SIGN_VERIFY,
	           HSM_ERR_INVALID_KEY_USAGE, "only SIGN_VERIFY keys can sign tokens");
	rec->flags = (rec->flags | f->set) & ~f->clear;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_set_flags(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                             uint32_t set, uint32_t clear)
{
	flags_arg f = {set, clear};
	/* The only flag marks keys for JWT signing: its own action, not a description change. */
	hsm_op op = (set & HSM_KEYFLAG_JWT) != 0 ? HSM_OP_EnableJwtSigning : HSM_OP_DisableJwtSigning;
	return kms_modify(kms, caller, op, ref, set_flags, &f, NULL, NULL);
}

/* Destroys a key whose waiting period ended (scheduler). */
hsm_result kms_destroy_due(hsm_kms *kms, const hsm_key_record *rec, bool *acted)
{
	*acted = false;
	/*
	 * Look again just before: the deletion may have been cancelled since the
	 * listing, here or by another node sharing the store, or that node may
	 * have destroyed the key already.  The store decides again under the
	 * key's row lock, for what happens between this look and the write.
	 */
	hsm_key_record now_rec;
	memset(&now_rec, 0, sizeof(now_rec));
	HSM_GUARD(hsm_store_key_get(kms->store, rec->key_id, &now_rec));
	bool due = now_rec.state == HSM_KEY_PENDING_DELETION && now_rec.deletion_date <= kms_now(kms);
	hsm_key_record_clear(&now_rec);
	if (!due)
		return HSM_SUCCESS;
	hsm_result r = hsm_store_key_destroy_due(kms->store, rec->key_id, kms_now(kms));
	if (r.err == HSM_ERR_INVALID_STATE)
		return HSM_SUCCESS; /* cancelled or destroyed since the look above: nothing done */
	kms_key_invalidate(kms, rec->key_id);
	kms_aliases_changed(kms); /* the store deleted the key's aliases with it */
	kms_forget(kms, rec->key_id);
	kms_emit(kms, "DeleteKey", rec->key_id, rec->primary_version, r);
	if (hsm_ok(r))
		hsm_info("key %s destroyed: its deletion waiting period ended", rec->key_id);
	*acted = hsm_ok(r);
	return r;
}
