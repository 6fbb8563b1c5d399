/*
 * kms.c - the service object, the operation table, the key-state rules,
 * key resolution, the metadata cache and authorization.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "kms/kms_internal.h"

/* Distinct key policy documents whose parsed form is kept for sharing. */
#define POLICY_CACHE_CAPACITY 4096

/* ---- Operation table -------------------------------------------------------- */

static const hsm_op_info ops[HSM_OP_COUNT] = {
#define HSM_OP_ROW(name, cls, roles, mutating) \
	[HSM_OP_##name] = {HSM_OP_##name, #name, "kms:" #name, cls, roles, mutating},
    HSM_OP_TABLE(HSM_OP_ROW)
#undef HSM_OP_ROW
};

const hsm_op_info *hsm_op_get(hsm_op op)
{
	HSM_ASSERT((unsigned)op < HSM_OP_COUNT);
	return &ops[op];
}

const hsm_op_info *hsm_op_find(const char *name)
{
	for (unsigned i = 0; i < HSM_OP_COUNT; i++)
		if (strcmp(ops[i].name, name) == 0)
			return &ops[i];
	return NULL;
}

/*
 * Key state x operation class, from the AWS KMS Developer Guide, "Key states
 * of AWS KMS keys" (key state table).  Disabled keys refuse cryptographic use,
 * new grants and rotation changes with DisabledException; keys pending deletion refuse
 * everything but reads, alias deletion, policy changes and cancellation
 * with KMSInvalidStateException.  Destroyed keys no longer exist for the API.
 */
static const hsm_err state_rules[HSM_KEY_STATE_COUNT][HSM_OPC_COUNT] = {
    [HSM_KEY_ENABLED] =
        {
            [HSM_OPC_CANCEL_DELETION] = HSM_ERR_INVALID_STATE,
        },
    [HSM_KEY_DISABLED] =
        {
            [HSM_OPC_CRYPTO] = HSM_ERR_DISABLED,
            [HSM_OPC_GRANT] = HSM_ERR_DISABLED,
            [HSM_OPC_ROTATION] = HSM_ERR_DISABLED,
            [HSM_OPC_CANCEL_DELETION] = HSM_ERR_INVALID_STATE,
        },
    [HSM_KEY_PENDING_DELETION] =
        {
            [HSM_OPC_CRYPTO] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_MODIFY] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_GRANT] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_ENABLE] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_DISABLE] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_SCHEDULE_DELETION] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_ROTATION] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_IMPORT] = HSM_ERR_INVALID_STATE,
        },
    /*
     * Without (some of) its material a key can get it, have another of its
     * materials deleted, be described, changed and deleted; nothing more.
     */
    [HSM_KEY_PENDING_IMPORT] =
        {
            [HSM_OPC_CRYPTO] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_GRANT] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_ENABLE] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_DISABLE] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_CANCEL_DELETION] = HSM_ERR_INVALID_STATE,
            [HSM_OPC_ROTATION] = HSM_ERR_INVALID_STATE,
        },
    [HSM_KEY_DESTROYED] =
        {
            [HSM_OPC_CRYPTO] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_READ] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_MODIFY] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_GRANT] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_ENABLE] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_DISABLE] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_SCHEDULE_DELETION] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_CANCEL_DELETION] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_ROTATION] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_IMPORT] = HSM_ERR_NOT_FOUND,
            [HSM_OPC_DELETE_MATERIAL] = HSM_ERR_NOT_FOUND,
        },
};

hsm_result kms_check_state(hsm_op op, const hsm_key_record *rec, int64_t now)
{
	HSM_ASSERT((unsigned)rec->state < HSM_KEY_STATE_COUNT);
	hsm_err e = state_rules[rec->state][hsm_op_get(op)->cls];
	/*
	 * A waiting period that has ended cannot be cancelled: the key is due for
	 * destruction (which may have been approved by custodians), and only the
	 * scheduler's next pass, not the key's state, says it is not gone yet.
	 */
	if (e == HSM_OK && rec->state == HSM_KEY_PENDING_DELETION && rec->deletion_date != 0 &&
	    rec->deletion_date <= now && hsm_op_get(op)->cls == HSM_OPC_CANCEL_DELETION) {
		char when[21];
		hsm_format_time(rec->deletion_date, when);
		return HSM_FAIL(HSM_ERR_INVALID_STATE,
		                "%s is being deleted: its waiting period ended at %s", rec->key_id,
		                when);
	}
	if (e == HSM_OK)
		return HSM_SUCCESS;
	if (e == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(e, "Key '%s' does not exist", rec->key_id);
	if (e == HSM_ERR_DISABLED)
		return HSM_FAIL(e, "%s is disabled.", rec->key_id);
	/* The table's note for CancelKeyDeletion in every state but PendingDeletion. */
	if (hsm_op_get(op)->cls == HSM_OPC_CANCEL_DELETION)
		return HSM_FAIL(e, "%s is not pending deletion.", rec->key_id);
	if (rec->state == HSM_KEY_PENDING_IMPORT)
		return HSM_FAIL(e, "%s is pending import.", rec->key_id);
	return HSM_FAIL(e, "%s is pending deletion.", rec->key_id);
}

typedef struct expiry_scan {
	uint32_t upto; /* the current version: material pending rotation is not in use */
	int64_t now;
	int64_t expired; /* the earliest ValidTo passed; 0: none */
} expiry_scan;

static hsm_result note_expired(const hsm_version_record *v, void *arg)
{
	expiry_scan *e = arg;
	if (v->version <= e->upto && v->wrapped.len > 0 && v->valid_to != 0 && v->valid_to <= e->now &&
	    (e->expired == 0 || v->valid_to < e->expired))
		e->expired = v->valid_to;
	return HSM_SUCCESS;
}

hsm_result kms_check_material(hsm_kms *kms, const kms_key *k)
{
	/* The record's valid_to is the earliest of its materials': nothing has expired before it. */
	if (k->rec.valid_to == 0)
		return HSM_SUCCESS;
	expiry_scan e = {k->rec.primary_version, kms_now(kms), 0};
	if (k->rec.valid_to > e.now)
		return HSM_SUCCESS;
	HSM_GUARD(hsm_store_version_list(kms->store, k->rec.key_id, note_expired, &e));
	if (e.expired == 0)
		return HSM_SUCCESS;
	char when[21];
	hsm_format_time(e.expired, when);
	return HSM_FAIL(HSM_ERR_INVALID_STATE,
	                "%s is pending import: its imported key material expired at %s", k->arn,
	                when);
}

/* ---- Service ---------------------------------------------------------------- */

static void *key_ref(void *p)
{
	kms_key *k = p;
	atomic_fetch_add_explicit(&k->refs, 1, memory_order_relaxed);
	return k;
}

/* The kms_forget counter of a key's stripe (FNV-1a of its id). */
static atomic_uint_fast64_t *forgets_of(hsm_kms *kms, const char *key_id)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)key_id; *p != '\0'; p++)
		h = (h ^ *p) * 16777619u;
	return &kms->forgets[h % KMS_FORGET_STRIPES];
}

void kms_key_release(kms_key *k)
{
	if (k == NULL || atomic_fetch_sub_explicit(&k->refs, 1, memory_order_acq_rel) != 1)
		return;
	hsm_kms *kms = k->kms;
	if (kms != NULL && atomic_load_explicit(&k->superseded, memory_order_acquire) &&
	    !atomic_load_explicit(&kms->closing, memory_order_acquire) &&
	    atomic_load_explicit(forgets_of(kms, k->rec.key_id), memory_order_acquire) !=
	        k->forgets_at_load)
		hsm_ks_forget(kms->ks, k->rec.key_id);
	hsm_key_record_clear(&k->rec);
	hsm_policy_free(k->policy);
	kms_grant_set_free(atomic_load_explicit(&k->grants, memory_order_acquire));
	kms_version_times_free(atomic_load_explicit(&k->version_times, memory_order_acquire));
	free(k);
}

/* The cache lets go of its snapshot (removed, replaced, evicted): see kms_key.superseded. */
static void key_unref(void *p)
{
	atomic_store_explicit(&((kms_key *)p)->superseded, true, memory_order_release);
	kms_key_release(p);
}

static void *policy_ref(void *p)
{
	return hsm_policy_ref(p);
}

static void policy_unref(void *p)
{
	hsm_policy_free(p);
}

/*
 * A cached alias: the key it named when read, and the alias generation it
 * was read under.  An alias write bumps the generation (after the write), so
 * an entry read before it, even one stored after it, is never used.
 */
typedef struct kms_alias {
	atomic_int refs;
	uint_fast64_t generation;
	int64_t loaded_ms;
	char key_id[HSM_UUID_STRLEN + 1];
} kms_alias;

static void *alias_ref(void *p)
{
	kms_alias *a = p;
	atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
	return a;
}

static void alias_unref(void *p)
{
	kms_alias *a = p;
	if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
		free(a);
}

static int64_t system_clock(void *arg)
{
	(void)arg;
	return hsm_now();
}

hsm_result hsm_kms_new(hsm_store *store, hsm_keystore *ks, const hsm_kms_config *cfg,
                       hsm_kms **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_kms *kms = calloc(1, sizeof(*kms));
	HSM_ENSURE(kms != NULL, HSM_ERR_NOMEM, "out of memory");
	kms->store = store;
	kms->ks = ks;
	kms->cfg = *cfg;
	HSM_TRY(hsm_strcpy(kms->region, sizeof(kms->region), cfg->region));
	HSM_TRY(hsm_strcpy(kms->account, sizeof(kms->account), cfg->account_id));
	kms->cfg.region = kms->region;
	kms->cfg.account_id = kms->account;
	if (kms->cfg.default_rotation_days <= 0)
		kms->cfg.default_rotation_days = 90;
	if (kms->cfg.default_pending_days <= 0)
		kms->cfg.default_pending_days = 30;
	if (kms->cfg.approval_ttl <= 0)
		kms->cfg.approval_ttl = 86400;
	kms->clock = system_clock;
	pthread_mutex_init(&kms->pairing, NULL);
	HSM_TRY(hsm_shmap_new(200000, key_ref, key_unref, &kms->keys));
	HSM_TRY(hsm_shmap_new(200000, alias_ref, alias_unref, &kms->aliases));
	HSM_TRY(hsm_shmap_new(POLICY_CACHE_CAPACITY, policy_ref, policy_unref, &kms->policies));
	HSM_TRY(kms_jwks_new(&kms->jwks));
	*out = kms;
	kms = NULL;
out:
	hsm_kms_free(kms);
	return res;
}

void hsm_kms_free(hsm_kms *kms)
{
	if (kms == NULL)
		return;
	atomic_store(&kms->closing, true);
	hsm_shmap_free(kms->keys);
	hsm_shmap_free(kms->policies);
	hsm_shmap_free(kms->aliases);
	kms_jwks_free(kms->jwks);
	pthread_mutex_destroy(&kms->pairing);
	free(kms);
}

void hsm_kms_set_clock_ahead_probe(hsm_kms *kms, bool (*fn)(void *arg), void *arg)
{
	kms->clock_ahead_fn = fn;
	kms->clock_ahead_arg = arg;
}

void hsm_kms_set_event_sink(hsm_kms *kms, hsm_kms_event_fn fn, void *arg)
{
	kms->event_fn = fn;
	kms->event_arg = arg;
}

void hsm_kms_set_clock(hsm_kms *kms, int64_t (*now)(void *arg), void *arg)
{
	kms->clock = now != NULL ? now : system_clock;
	kms->clock_arg = arg;
}

hsm_store *hsm_kms_store(hsm_kms *kms) { return kms->store; }
hsm_keystore *hsm_kms_keystore(hsm_kms *kms) { return kms->ks; }
const hsm_kms_config *hsm_kms_config_get(hsm_kms *kms) { return &kms->cfg; }

int64_t kms_now(hsm_kms *kms)
{
	return kms->clock(kms->clock_arg);
}

void kms_emit(hsm_kms *kms, const char *operation, const char *key_id, uint32_t version,
              hsm_result result)
{
	if (kms->event_fn == NULL)
		return;
	hsm_kms_event ev = {operation, key_id, version, result};
	kms->event_fn(kms->event_arg, &ev);
}

/* ---- ARNs and resolution ------------------------------------------------------ */

hsm_result hsm_kms_key_arn(hsm_kms *kms, const char *key_id, hsm_buf *out)
{
	return hsm_buf_printf(out, "arn:aws:kms:%s:%s:key/%s", kms->region, kms->account, key_id);
}

void hsm_kms_caller_arn(hsm_kms *kms, const hsm_caller *caller, char out[HSM_PRINCIPAL_ARN_MAX])
{
	/* Account ids are 12 digits and user names at most 64 characters: it always fits. */
	hsm_sb b;
	hsm_sb_init(&b, out, HSM_PRINCIPAL_ARN_MAX);
	hsm_sb_add(&b, "arn:aws:iam::");
	hsm_sb_add(&b, kms->account);
	if (caller->local) {
		hsm_sb_add(&b, ":root");
	} else {
		hsm_sb_add(&b, ":user/");
		hsm_sb_addn(&b, caller->user, 64);
	}
}

void hsm_kms_arn_prefix(hsm_kms *kms, hsm_sb *b)
{
	hsm_sb_add(b, "arn:aws:kms:");
	hsm_sb_add(b, kms->region);
	hsm_sb_add(b, ":");
	hsm_sb_add(b, kms->account);
	hsm_sb_add(b, ":");
}

/* Strips "arn:aws:kms:<region>:<account>:" when it names this region and account. */
static hsm_result strip_arn(hsm_kms *kms, const char *ref, const char **rest)
{
	char prefix[128];
	hsm_sb b;
	hsm_sb_init(&b, prefix, sizeof(prefix));
	hsm_kms_arn_prefix(kms, &b);
	if (hsm_str_has_prefix(ref, prefix)) {
		*rest = ref + strlen(prefix);
		return HSM_SUCCESS;
	}
	HSM_ENSURE(!hsm_str_has_prefix(ref, "arn:"), HSM_ERR_NOT_FOUND,
	           "Key '%.256s' does not exist in this region and account", ref);
	*rest = ref;
	return HSM_SUCCESS;
}

/*
 * Cache ages run on the monotonic clock: a wall clock stepped back by an hour
 * would otherwise keep every cached key, policy and alias for that hour, and
 * another node's DisableKey or PutKeyPolicy unseen on this one.
 */
static int64_t cache_clock_ms(void) { return (int64_t)(hsm_mono_ns() / 1000000u); }

static bool cache_fresh(hsm_kms *kms, int64_t loaded_ms)
{
	return kms->cfg.meta_cache_ttl_ms <= 0 ||
	       cache_clock_ms() - loaded_ms < kms->cfg.meta_cache_ttl_ms;
}

/* The key an alias names, from the cache; false when it is not there or stale. */
static bool alias_cached(hsm_kms *kms, const char *name, char key_id[HSM_UUID_STRLEN + 1])
{
	void *hit = NULL;
	if (strlen(name) > HSM_SHMAP_KEY_MAX || !hsm_shmap_get(kms->aliases, name, &hit))
		return false;
	kms_alias *a = hit;
	bool ok = a->generation == atomic_load_explicit(&kms->alias_generation, memory_order_acquire) &&
	          cache_fresh(kms, a->loaded_ms);
	if (ok)
		memcpy(key_id, a->key_id, HSM_UUID_STRLEN + 1);
	alias_unref(a);
	return ok;
}

/* Caches what the store said an alias named; read under generation.  Best effort. */
static void alias_remember(hsm_kms *kms, const char *name, const char *key_id,
                           uint_fast64_t generation, int64_t read_ms)
{
	if (strlen(name) > HSM_SHMAP_KEY_MAX)
		return;
	kms_alias *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return;
	atomic_init(&a->refs, 1);
	a->generation = generation;
	a->loaded_ms = read_ms; /* when the store was asked: an answer may come late */
	memcpy(a->key_id, key_id, HSM_UUID_STRLEN + 1);
	if (hsm_failed(hsm_shmap_put(kms->aliases, name, a))) /* costs a store read next time */
		hsm_debug("alias cache: %s not stored", name);
	alias_unref(a);
}

void kms_aliases_changed(hsm_kms *kms)
{
	atomic_fetch_add_explicit(&kms->alias_generation, 1, memory_order_acq_rel);
}

/*
 * Splits ref into what it names: *alias is "alias/<name>" (from an alias name
 * or alias ARN) or else *id a key id (from an id or key ARN).
 */
static hsm_result parse_ref(hsm_kms *kms, const char *ref, const char **alias, const char **id)
{
	const char *rest = NULL;
	HSM_ENSURE(ref != NULL && *ref != '\0', HSM_ERR_VALIDATION, "KeyId is required");
	bool is_arn = hsm_str_has_prefix(ref, "arn:"), is_key_arn = false;
	HSM_GUARD(strip_arn(kms, ref, &rest));
	if (is_arn && hsm_str_has_prefix(rest, "key/")) {
		rest += 4;
		is_key_arn = true;
	}
	/* A key ARN's resource is "key/<id>", an alias ARN's "alias/<name>": nothing else. */
	*alias = *id = NULL;
	if (!is_key_arn && hsm_str_has_prefix(rest, "alias/")) {
		*alias = rest;
		return HSM_SUCCESS;
	}
	HSM_ENSURE(hsm_is_uuid(rest) && (!is_arn || is_key_arn), HSM_ERR_NOT_FOUND,
	           "Invalid keyId '%.256s'", ref);
	*id = rest;
	return HSM_SUCCESS;
}

const char *kms_ref_alias(hsm_kms *kms, const char *ref)
{
	const char *alias = NULL, *id = NULL;
	return hsm_ok(parse_ref(kms, ref, &alias, &id)) ? alias : NULL;
}

hsm_result hsm_kms_resolve(hsm_kms *kms, const char *ref, char key_id[HSM_UUID_STRLEN + 1])
{
	const char *alias = NULL, *id = NULL;
	HSM_GUARD(parse_ref(kms, ref, &alias, &id));
	if (id != NULL) {
		memcpy(key_id, id, HSM_UUID_STRLEN + 1);
		return HSM_SUCCESS;
	}
	if (alias_cached(kms, alias, key_id))
		return HSM_SUCCESS;
	/* The generation is read before the store: a write in between makes the entry stale. */
	uint_fast64_t generation = atomic_load_explicit(&kms->alias_generation, memory_order_acquire);
	int64_t read_ms = cache_clock_ms();
	hsm_alias_record a;
	hsm_result r = hsm_store_alias_get(kms->store, alias, &a);
	if (r.err == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "Alias %s is not found.", ref);
	HSM_GUARD(r);
	alias_remember(kms, alias, a.key_id, generation, read_ms);
	memcpy(key_id, a.key_id, HSM_UUID_STRLEN + 1);
	return HSM_SUCCESS;
}

/* ---- Metadata cache ------------------------------------------------------------ */

/*
 * The parsed form of a key's policy document.  Most keys carry the same
 * document (the default policy), so keys whose documents are byte for byte
 * equal share one parsed policy: a cold key costs no JSON parse, and a
 * million cached keys do not hold a million parsed copies.  The map's key
 * is a fast hash of the document; a hit counts only if the document
 * matches, so a collision costs a parse and nothing else.
 */
static hsm_result policy_of(hsm_kms *kms, const char *doc, hsm_policy **out)
{
	size_t len = strlen(doc);
	uint64_t h = hsm_fnv1a(doc, len);
	char name[48];
	snprintf(name, sizeof(name), "%016llx/%zu", (unsigned long long)h, len);
	void *hit = NULL;
	if (hsm_shmap_get(kms->policies, name, &hit)) {
		if (hsm_policy_parsed_from(hit, doc, len)) {
			*out = hit;
			return HSM_SUCCESS;
		}
		hsm_policy_free(hit);
	}
	hsm_policy *p = NULL;
	HSM_GUARD(hsm_policy_parse_stored(doc, len, &p));
	hsm_result r = hsm_shmap_put(kms->policies, name, p);
	if (hsm_failed(r)) {
		hsm_policy_free(p);
		return r;
	}
	*out = p;
	return HSM_SUCCESS;
}

static hsm_result snapshot_new(hsm_kms *kms, const hsm_key_record *rec, kms_key **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf arn = {0};
	kms_key *k = calloc(1, sizeof(*k));
	HSM_ENSURE(k != NULL, HSM_ERR_NOMEM, "out of memory");
	atomic_init(&k->refs, 1);
	k->kms = kms;
	/* The policy text is not copied: the shared parsed policy keeps it (a copy per key was half
	 * of a cached key's memory, though most keys carry the same document). */
	hsm_key_record without_policy = *rec;
	without_policy.policy = NULL;
	HSM_TRY(hsm_key_record_copy(&k->rec, &without_policy));
	HSM_TRY(policy_of(kms, rec->policy, &k->policy));
	HSM_TRY(hsm_kms_key_arn(kms, rec->key_id, &arn));
	HSM_TRY(hsm_buf_terminate(&arn));
	HSM_TRY(hsm_strcpy(k->arn, sizeof(k->arn), (const char *)arn.data));
	k->loaded_ms = cache_clock_ms();
	*out = k;
	k = NULL;
out:
	kms_key_release(k);
	hsm_buf_free(&arn);
	return res;
}

hsm_result kms_key_load(hsm_kms *kms, const char *key_id, kms_key **out)
{
	hsm_result res = HSM_SUCCESS;
	void *hit = NULL;
	kms_key *k = NULL;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	if (hsm_shmap_get(kms->keys, key_id, &hit)) {
		if (cache_fresh(kms, ((kms_key *)hit)->loaded_ms)) {
			*out = hit;
			return HSM_SUCCESS;
		}
		kms_key_release(hit);
	}
	/*
	 * Read before the store: a change of the key after it (kms_key_invalidate
	 * bumps the generation first) takes back what this call caches, or a
	 * reader that read the old record could cache it after the change's
	 * removal and keep a disabled key usable.
	 */
	uint_fast64_t generation = atomic_load_explicit(&kms->generation, memory_order_acquire);
	uint_fast64_t forgets = atomic_load_explicit(forgets_of(kms, key_id), memory_order_acquire);
	/* Fresh from when the store was asked, not from when its answer came (late, at times). */
	int64_t read_ms = cache_clock_ms();
	res = hsm_store_key_get(kms->store, key_id, &rec);
	if (res.err == HSM_ERR_NOT_FOUND)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "Key '%s' does not exist", key_id);
	if (hsm_failed(res))
		goto out;
	/* Destroyed, or its imported material deleted, by another node sharing the store: drop
	 * what this node still holds of it. */
	if (rec.state == HSM_KEY_DESTROYED || (rec.flags & HSM_KEYFLAG_NO_MATERIAL) != 0)
		kms_forget(kms, key_id);
	HSM_TRY(snapshot_new(kms, &rec, &k));
	k->forgets_at_load = forgets;
	k->loaded_ms = read_ms;
	HSM_TRY(hsm_shmap_put(kms->keys, key_id, k));
	if (atomic_load_explicit(&kms->generation, memory_order_acquire) != generation)
		hsm_shmap_remove(kms->keys, key_id); /* this call still uses its snapshot */
	*out = k;
	k = NULL;
out:
	kms_key_release(k);
	hsm_key_record_clear(&rec);
	return res;
}

bool hsm_kms_spec_hint(hsm_kms *kms, const char *ref, hsm_key_spec *out)
{
	const char *alias = NULL, *id = NULL;
	char key_id[HSM_UUID_STRLEN + 1];
	kms_key *k = NULL;
	if (hsm_failed(parse_ref(kms, ref, &alias, &id)))
		return false;
	if (id != NULL)
		memcpy(key_id, id, HSM_UUID_STRLEN + 1);
	else if (!alias_cached(kms, alias, key_id))
		return false;
	if (hsm_failed(kms_key_load(kms, key_id, &k)))
		return false;
	*out = k->rec.spec;
	kms_key_release(k);
	return true;
}

void kms_key_invalidate(hsm_kms *kms, const char *key_id)
{
	/* The generation first (JWKS cache, and kms_key_load's check), then the entry. */
	atomic_fetch_add_explicit(&kms->generation, 1, memory_order_acq_rel);
	hsm_shmap_remove(kms->keys, key_id);
}

hsm_result kms_key_moved(hsm_kms *kms, kms_key **k, bool *moved)
{
	*moved = false;
	if (kms->cfg.meta_cache_ttl_ms <= 0)
		return HSM_SUCCESS;
	hsm_key_record now;
	memset(&now, 0, sizeof(now));
	hsm_result r = hsm_store_key_get(kms->store, (*k)->rec.key_id, &now);
	bool stale = hsm_ok(r) && now.primary_version != (*k)->rec.primary_version;
	hsm_key_record_clear(&now);
	if (stale)
		kms_key_invalidate(kms, (*k)->rec.key_id);
	if (hsm_failed(r) || stale) {
		kms_key_release(*k);
		*k = NULL;
	}
	*moved = stale;
	return r;
}

void kms_forget(hsm_kms *kms, const char *key_id)
{
	atomic_fetch_add_explicit(forgets_of(kms, key_id), 1, memory_order_acq_rel);
	hsm_ks_forget(kms->ks, key_id);
}

/* ---- Authorization --------------------------------------------------------------- */

static hsm_result deny(hsm_kms *kms, const hsm_caller *caller, const char *action,
                       const kms_key *key, const char *why)
{
	char arn[HSM_PRINCIPAL_ARN_MAX];
	hsm_kms_caller_arn(kms, caller, arn);
	return HSM_FAIL(HSM_ERR_ACCESS_DENIED,
	                "User: %s is not authorized to perform: %s on resource: %s %s", arn, action,
	                key != NULL ? key->arn : "*", why);
}

hsm_result kms_authorize(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const kms_key *key,
                         const kms_authz_extra *extra)
{
	if (caller->local)
		return HSM_SUCCESS; /* an operator holding the data directory and the quorum */
	/* The action asked of this key: kms:ReEncryptFrom or To for ReEncrypt's two. */
	const char *action =
	    extra != NULL && extra->action != NULL ? extra->action : hsm_op_get(op)->action;
	if ((hsm_op_get(op)->roles & caller->roles) == 0)
		return deny(kms, caller, action, key, "because no role of this user allows it");
	if (key == NULL)
		return HSM_SUCCESS;
	char arn[HSM_PRINCIPAL_ARN_MAX];
	hsm_kms_caller_arn(kms, caller, arn);
	hsm_policy_request req = {
	    .principal_arn = arn,
	    .account_id = kms->account,
	    .action = action,
	    .resource = key->arn,
	    .key_spec = hsm_spec_name(key->rec.spec),
	    .key_usage = hsm_usage_name(key->rec.usage),
	};
	hsm_policy_pair ctx_small[16], *ctx = ctx_small;
	size_t n_ctx = extra != NULL && extra->ctx != NULL ? extra->ctx->n : 0;
	if (n_ctx > 16) {
		ctx = calloc(n_ctx, sizeof(*ctx));
		if (ctx == NULL)
			return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < n_ctx; i++)
		ctx[i] = (hsm_policy_pair){extra->ctx->pairs[i].key, extra->ctx->pairs[i].value};
	req.encryption_context = ctx;
	req.n_encryption_context = n_ctx;
	if (extra != NULL) {
		req.encryption_algorithm = extra->encryption_algorithm;
		req.signing_algorithm = extra->signing_algorithm;
		req.mac_algorithm = extra->mac_algorithm;
		req.request_alias = extra->request_alias;
	}
	kms_cond_values more;
	hsm_result r = kms_cond_values_fill(kms, caller, key, extra, &more);
	req.extra = more.pairs;
	req.n_extra = more.n;
	hsm_policy_decision d =
	    hsm_ok(r) ? hsm_policy_evaluate(key->policy, &req, NULL) : HSM_POLICY_EXPLICIT_DENY;
	/*
	 * A grant allows SignToken through its Sign operation (grants.c): the
	 * authority it uses is kms:Sign, so a Deny of kms:Sign stands against it
	 * as it stands against Sign itself.
	 */
	if (d == HSM_POLICY_IMPLICIT_DENY && op == HSM_OP_SignToken) {
		req.action = "kms:Sign";
		if (hsm_policy_evaluate(key->policy, &req, NULL) == HSM_POLICY_EXPLICIT_DENY)
			d = HSM_POLICY_EXPLICIT_DENY;
		req.action = action;
	}
	kms_cond_values_free(&more);
	if (ctx != ctx_small)
		free(ctx);
	HSM_GUARD(r);
	if (d == HSM_POLICY_ALLOW)
		return HSM_SUCCESS;
	/* Grants only allow: an explicit deny in the key policy stands. */
	if (d == HSM_POLICY_IMPLICIT_DENY) {
		bool granted = false;
		HSM_GUARD(kms_grants_allow(kms, caller, arn, op, key, extra, &granted));
		if (granted)
			return HSM_SUCCESS;
	}
	return deny(kms, caller, action, key,
	            d == HSM_POLICY_EXPLICIT_DENY
	                ? "with an explicit deny in a resource-based policy"
	                : "because no resource-based policy allows the action");
}

hsm_result kms_dry_run_stop(const hsm_caller *caller)
{
	HSM_ENSURE(!caller->dry_run, HSM_ERR_DRY_RUN,
	           "The request would have succeeded, but the DryRun option is set.");
	return HSM_SUCCESS;
}

hsm_result kms_lookup(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *ref,
                      const kms_authz_extra *extra, kms_key **out)
{
	return kms_lookup_as(kms, caller, op, op, ref, extra, out);
}

hsm_result kms_lookup_write(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *ref,
                            const kms_authz_extra *extra, kms_key **out)
{
	hsm_result found = kms_lookup(kms, caller, op, ref, extra, out);
	char id[HSM_UUID_STRLEN + 1];
	if ((found.err == HSM_ERR_INVALID_STATE || found.err == HSM_ERR_DISABLED) &&
	    kms->cfg.meta_cache_ttl_ms > 0 && hsm_ok(hsm_kms_resolve(kms, ref, id))) {
		kms_key_invalidate(kms, id);
		found = kms_lookup(kms, caller, op, ref, extra, out);
	}
	return found;
}

static hsm_result state_still_allows(const char *key_id, hsm_key_state state, const void *arg)
{
	const hsm_op_info *op = arg;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_strcpy(rec.key_id, sizeof(rec.key_id), key_id));
	rec.state = state;
	/* No clock: it matters only to CancelKeyDeletion, which changes the key itself. */
	HSM_ASSERT(op->cls != HSM_OPC_CANCEL_DELETION);
	return kms_check_state(op->op, &rec, 0);
}

hsm_key_state_check kms_state_check(hsm_op op)
{
	return (hsm_key_state_check){state_still_allows, hsm_op_get(op)};
}

hsm_result kms_lookup_as(hsm_kms *kms, const hsm_caller *caller, hsm_op op, hsm_op state_op,
                         const char *ref, const kms_authz_extra *extra, kms_key **out)
{
	char key_id[HSM_UUID_STRLEN + 1];
	kms_key *k = NULL;
	HSM_GUARD(hsm_kms_resolve(kms, ref, key_id));
	HSM_GUARD(kms_key_load(kms, key_id, &k));
	/* Named by an alias: a policy that asks sees it as kms:RequestAlias. */
	const char *alias = (hsm_policy_needs(k->policy) & HSM_POLICY_NEEDS_REQUEST_ALIAS) != 0
	                        ? kms_ref_alias(kms, ref)
	                        : NULL;
	kms_authz_extra named = {0};
	if (alias != NULL) {
		if (extra != NULL)
			named = *extra;
		named.request_alias = alias;
		extra = &named;
	}
	/* A destroyed key is gone for every caller; authorization comes before other states. */
	hsm_result r = k->rec.state == HSM_KEY_DESTROYED
	                   ? HSM_FAIL(HSM_ERR_NOT_FOUND, "Key '%s' does not exist", k->arn)
	                   : kms_authorize(kms, caller, op, k, extra);
	if (hsm_ok(r)) {
		int64_t now = kms_now(kms);
		r = kms_check_state(state_op, &k->rec, now);
		/*
		 * An enabled or disabled key whose material in use expired is pending
		 * import, whatever its record says: what PendingImport refuses (use,
		 * grants, EnableKey, DisableKey, rotation) is refused before the
		 * scheduler erases the material too.  (A key pending deletion stays
		 * that: its cancellation is not refused for it.)
		 */
		bool live = k->rec.state == HSM_KEY_ENABLED || k->rec.state == HSM_KEY_DISABLED;
		if (hsm_ok(r) && live &&
		    state_rules[HSM_KEY_PENDING_IMPORT][hsm_op_get(state_op)->cls] != HSM_OK)
			r = kms_check_material(kms, k);
	}
	if (hsm_failed(r)) {
		kms_key_release(k);
		return r;
	}
	*out = k;
	return HSM_SUCCESS;
}

/* ---- Modification --------------------------------------------------------------- */

typedef struct modify_ctx {
	hsm_op op;
	hsm_key_update_fn fn;
	void *arg;
	int64_t now;
} modify_ctx;

static hsm_result modify_in_txn(hsm_key_record *rec, void *arg)
{
	modify_ctx *m = arg;
	HSM_GUARD(kms_check_state(m->op, rec, m->now)); /* it may have changed since the lookup */
	HSM_GUARD(m->fn(rec, m->arg));
	rec->updated = m->now;
	return HSM_SUCCESS;
}

/*
 * Before a request opens or uses an approval, its change is tried on a copy
 * of the key's record, so a change the key refuses (a JWT algorithm that
 * does not fit it, say) is refused before custodians are asked.  The store
 * transaction applies it again to the record as it then is.
 */
static hsm_result rehearse(const hsm_caller *caller, const hsm_key_record *rec, modify_ctx *m)
{
	if (caller->gate == NULL || caller->gate->passed)
		return HSM_SUCCESS;
	hsm_key_record copy;
	memset(&copy, 0, sizeof(copy));
	hsm_result r = hsm_key_record_copy(&copy, rec);
	if (hsm_ok(r))
		r = modify_in_txn(&copy, m);
	hsm_key_record_clear(&copy);
	return r;
}

hsm_result kms_modify(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *ref,
                      hsm_key_update_fn fn, void *arg, const hsm_version_record *add_version,
                      hsm_key_record *after)
{
	return kms_modify_with(kms, caller, op, ref, NULL, fn, arg, add_version, after);
}

hsm_result kms_modify_with(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *ref,
                           const kms_authz_extra *extra, hsm_key_update_fn fn, void *arg,
                           const hsm_version_record *add_version, hsm_key_record *after)
{
	kms_key *k = NULL;
	/* A CancelKeyDeletion right after another node's ScheduleKeyDeletion is so not refused. */
	HSM_GUARD(kms_lookup_write(kms, caller, op, ref, extra, &k));
	modify_ctx m = {op, fn, arg, kms_now(kms)};
	hsm_result r = rehearse(caller, &k->rec, &m);
	if (hsm_ok(r))
		r = hsm_caller_commit_key(caller, k->rec.key_id);
	if (hsm_failed(r)) {
		kms_key_release(k);
		return r;
	}
	r = hsm_store_key_update(kms->store, k->rec.key_id, modify_in_txn, &m, add_version, after);
	kms_key_invalidate(kms, k->rec.key_id);
	kms_key_release(k);
	return r;
}

void kms_used(const kms_key *k, uint32_t version, hsm_used_key *used)
{
	memcpy(used->key_id, k->rec.key_id, sizeof(used->key_id));
	used->version = version;
	used->spec = k->rec.spec;
	used->usage = k->rec.usage;
	used->origin = k->rec.origin;
}

hsm_ks_keyref kms_keyref(const kms_key *k, uint32_t version)
{
	hsm_ks_keyref ref = {k->rec.key_id, version, k->rec.spec, k->rec.usage};
	return ref;
}
