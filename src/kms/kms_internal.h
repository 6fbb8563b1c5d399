/*
 * kms_internal.h - state shared by the kms/ source files.
 */
#ifndef HSM_KMS_INTERNAL_H
#define HSM_KMS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "common/shmap.h"
#include "kms/kms.h"
#include "kms/policy.h"

#define KMS_ARN_MAX 160

/* An immutable, reference-counted snapshot of one key's metadata. */
#define KMS_FORGET_STRIPES 64

typedef struct kms_key {
	atomic_int refs;
	hsm_key_record rec;   /* rec.policy is NULL: the text is hsm_policy_source(policy) */
	hsm_policy *policy;   /* parsed policy document, shared with keys that have the same */
	int64_t loaded_ms;
	char arn[KMS_ARN_MAX];
	/* The key's grants, read when first needed (grants.c); NULL until then. */
	_Atomic(struct kms_grant_set *) grants;
	/* Creation times of versions 1..rec.primary_version, read when a token
	 * first needs them (kms_jwt.c); NULL until then. */
	_Atomic(struct kms_version_times *) version_times;
	/*
	 * Set when the cache lets go of this snapshot (a change, a newer read,
	 * eviction) while requests may hold it.  When the last of them lets go,
	 * if this key's material was forgotten since it was read (kms_forget),
	 * it is forgotten again: a request that read the key before a DisableKey
	 * may have cached the material after.
	 */
	atomic_bool superseded;
	uint_fast64_t forgets_at_load; /* the key's hsm_kms.forgets stripe when it was read */
	struct hsm_kms *kms;
} kms_key;

/* Room for every key one round of the scheduler lists (DUE_PER_ROUND, rotation.c): a smaller
 * table gives way to a key that fails each round, and past it no failing key backs off. */
#define KMS_RETRY_MAX 1000
/* The longest pause before a failing key's scheduled work is tried again: under the 15 minutes
 * over which HsmdSchedulerFailing looks, so the alert holds while the work keeps failing. */
#define KMS_RETRY_MAX_S 600

struct hsm_kms {
	hsm_store *store;
	hsm_keystore *ks;
	hsm_kms_config cfg;
	char region[64];
	char account[16];
	hsm_shmap *keys;      /* key id -> kms_key */
	hsm_kms_event_fn event_fn;
	void *event_arg;
	int64_t (*clock)(void *arg);
	void *clock_arg;
	atomic_uint_fast64_t generation; /* bumped on every key change (kms_key_invalidate) */
	/* Bumped by kms_forget, a counter for the keys whose ids hash to each. */
	atomic_uint_fast64_t forgets[KMS_FORGET_STRIPES];
	atomic_bool closing;             /* hsm_kms_free: snapshots let go forget nothing */
	atomic_bool account_checked;     /* the store's account is this node's (CreateKey) */
	bool (*clock_ahead_fn)(void *arg); /* hsm_kms_set_clock_ahead_probe */
	void *clock_ahead_arg;
	hsm_shmap *aliases;              /* alias name -> kms_alias (kms.c) */
	atomic_uint_fast64_t alias_generation; /* bumped on every alias change */
	struct kms_jwks *jwks;           /* the JWK Set cache (kms_jwks.c) */
	hsm_shmap *policies;             /* document hash -> hsm_policy, shared by keys (kms.c) */
	hsm_usage *usage;                /* last uses of keys (usage.c); NULL: not recorded */
	atomic_size_t sweep_from;        /* where the next material sweep starts (rotation.c) */
	/* Held across each check and change of what pairs a key with a certificate: its public
	 * key (rotations), its automatic rotation, its CKA_ID (pkcs11-id aliases) and the
	 * certificates stored (certs.c), so that two such changes on this node, each fine
	 * alone, cannot both pass their checks and leave a pairing neither allows. */
	pthread_mutex_t pairing;
	/* Keys whose scheduled work failed, tried again after a pause that grows
	 * (rotation.c); read and written by the scheduler's thread only. */
	struct kms_retry {
		char key_id[HSM_UUID_STRLEN + 1];
		int64_t since;     /* the last failure */
		int64_t next;      /* not tried again before then */
		unsigned failures; /* in a row */
		bool listed;       /* among the keys due in this round */
	} retry[KMS_RETRY_MAX];
	size_t n_retry;
};

int64_t kms_now(hsm_kms *kms);
void kms_key_release(kms_key *k);
void kms_version_times_free(struct kms_version_times *t);
/* Seconds a node's JWK Set document is served before it is rebuilt, at most (kms_jwks.c). */
int64_t hsm_kms_jwks_ttl(const hsm_kms *kms);
/*
 * Whether another node sharing the store moved *k's primary version on
 * since *k was read (a rotation of a moment ago, which this node's cache may
 * not show for up to meta_cache_ttl_ms): one store read.  When it did, the
 * cached snapshot is dropped and *k released (NULL), so that the caller
 * looks the key up again and reads it afresh; so on failure too.  Always
 * false without a cache lifetime (meta_cache_ttl_ms 0: a store of this
 * node's own, whose every change the node made and saw).  Costs a store
 * read: for where a request would otherwise fail or conflict (a value none
 * of the cached versions accepts, a rotation to a version another node made
 * already), not for the requests that succeed.
 */
hsm_result kms_key_moved(hsm_kms *kms, kms_key **k, bool *moved) HSM_MUST_CHECK;
/* Zeroizes this node's cached material of a key (see kms_key.superseded). */
void kms_forget(hsm_kms *kms, const char *key_id);
/* Drops the cached snapshot of a key after a change. */
void kms_key_invalidate(hsm_kms *kms, const char *key_id);
/* Forgets every cached alias; called after each alias write, whatever its
 * outcome, and after a key's destruction (which deletes its aliases). */
void kms_aliases_changed(hsm_kms *kms);
/*
 * Whether the certificates stored with CKA_ID object_id may pair with key_id's
 * objects: each must certify its primary public key (certs.c), as an import
 * naming the key is checked.  ValidationException naming the first that does
 * not.
 */
hsm_result kms_certs_may_pair(hsm_kms *kms, const hsm_buf *object_id,
                              const char *key_id) HSM_MUST_CHECK;
/*
 * Refuses (ValidationException) to rotate key while a certificate pairs
 * with its objects: a new primary public key would leave the certificate
 * beside a key it no longer certifies.  `what` begins the message.  A
 * symmetric key has no certificate: nothing is read for it.
 */
hsm_result kms_certs_refuse_rotation(hsm_kms *kms, const hsm_key_record *key,
                                     const char *what) HSM_MUST_CHECK;
/*
 * The first alias of a key other than `except` (may be NULL) that gives it a
 * PKCS#11 CKA_ID (common/encoding.h, HSM_PKCS11_ID_ALIAS) into found, its id
 * into id; found is "" when there is none.
 */
hsm_result kms_key_id_alias(hsm_kms *kms, const char *key_id, const char *except,
                            char found[HSM_ALIAS_MAX + 1], hsm_buf *id) HSM_MUST_CHECK;
void kms_emit(hsm_kms *kms, const char *operation, const char *key_id, uint32_t version,
              hsm_result result);

/* Extra facts a key policy's conditions may test. */
typedef struct kms_authz_extra {
	const char *action; /* overrides the operation's action (kms:ReEncryptFrom/To) */
	const hsm_enc_ctx *ctx;
	const char *encryption_algorithm;
	const char *signing_algorithm;
	const char *mac_algorithm;
	/* Further condition keys (kms:GranteePrincipal, ...); a name may repeat. */
	const hsm_policy_pair *more;
	size_t n_more;
	/* CreateGrant: the grant asked for, which a grant allowing CreateGrant must cover. */
	uint32_t new_grant_ops;
	const hsm_grant_constraints *new_grant_constraints;
	/* The alias name the request named the key by (kms:RequestAlias); set by kms_lookup. */
	const char *request_alias;
	/*
	 * A key CreateKey has not stored yet (its lockout check): it has no aliases
	 * and will have new_key_tags, so neither is read from the store.
	 */
	bool new_key;
	const hsm_tag *new_key_tags;
	size_t n_new_key_tags;
} kms_authz_extra;

/* A tag as the condition key aws:ResourceTag/<key> and its value. */
typedef struct kms_cond_tag {
	char name[sizeof("aws:ResourceTag/") + sizeof(((hsm_tag *)0)->key)];
	char value[sizeof(((hsm_tag *)0)->value)];
} kms_cond_tag;

/* The values of the condition keys beyond hsm_policy_request's own fields (conditions.c). */
typedef struct kms_cond_values {
	hsm_policy_pair local[24];
	hsm_policy_pair *pairs; /* local, or allocated when more are needed */
	size_t n, cap;
	kms_cond_tag *tags;
	size_t n_tags;
	hsm_alias_record *aliases;
	size_t n_aliases, cap_aliases;
	char epoch[24], current_time[32];
} kms_cond_values;

/*
 * Fills v with every condition key value hsmd knows for caller's request to
 * key: extra->more, the facts AWS sets on every request, and the key's
 * aliases, tags and the time when its policy names them.  A store failure
 * fails the request (authorization never guesses).  Free with
 * kms_cond_values_free, also after a failure.
 */
hsm_result kms_cond_values_fill(hsm_kms *kms, const hsm_caller *caller, const kms_key *key,
                                const kms_authz_extra *extra, kms_cond_values *v) HSM_MUST_CHECK;
void kms_cond_values_free(kms_cond_values *v);

/*
 * Role check for op, then (when key is not NULL) the key's policy.
 * HSM_ERR_ACCESS_DENIED with an AWS-style message on refusal.
 */
hsm_result kms_authorize(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const kms_key *key,
                         const kms_authz_extra *extra) HSM_MUST_CHECK;
/* The key-state rule for op's class: DisabledException, KMSInvalidStateException, ... */
/* now: the service's clock (a waiting period that has ended cannot be cancelled). */
hsm_result kms_check_state(hsm_op op, const hsm_key_record *rec, int64_t now) HSM_MUST_CHECK;
/*
 * KMSInvalidStateException when imported material in use (any version up to
 * the current one) is past its ValidTo, though the scheduler has not erased
 * it yet: the key is pending import from that moment, as the erasure will
 * make it.  Reads the clock only for a key whose material expires, and the
 * store only once some of it is due.
 */
hsm_result kms_check_material(hsm_kms *kms, const kms_key *k) HSM_MUST_CHECK;

/*
 * Resolves ref, loads the key, checks the state rule and authorizes the
 * caller.  *out is a reference the caller releases with kms_key_release.
 */
hsm_result kms_lookup(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *ref,
                      const kms_authz_extra *extra, kms_key **out) HSM_MUST_CHECK;
/* The same, with the state rule of state_op's class (UpdateAlias's source key). */
hsm_result kms_lookup_as(hsm_kms *kms, const hsm_caller *caller, hsm_op op, hsm_op state_op,
                         const char *ref, const kms_authz_extra *extra,
                         kms_key **out) HSM_MUST_CHECK;
/*
 * kms_lookup for a request that changes the key or what hangs on it.  A
 * refusal for the key's state, made on a cached record, is made again on the
 * store's record: another node may have changed the state a moment ago (a
 * CancelKeyDeletion, then a TagResource on the key it brought back).  The
 * write checks the state again in its own transaction (kms_state_check).
 */
hsm_result kms_lookup_write(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *ref,
                            const kms_authz_extra *extra, kms_key **out) HSM_MUST_CHECK;
/*
 * The state rule of op's class as a condition the store asks under the
 * key's row lock (hsm_key_state_check), so a key whose state changed since
 * its lookup, on this node or another, is refused as the lookup would now
 * refuse it.
 */
hsm_key_state_check kms_state_check(hsm_op op);
/*
 * DryRun: every check a request makes before it would act has passed; it
 * stops here with DryRunOperationException.  Success when DryRun is not set.
 */
hsm_result kms_dry_run_stop(const hsm_caller *caller) HSM_MUST_CHECK;
/* Same without authorization (internal work: scheduler). */
hsm_result kms_key_load(hsm_kms *kms, const char *key_id, kms_key **out) HSM_MUST_CHECK;

/*
 * Changes a key in one store transaction: looks it up and authorizes as
 * kms_lookup does, then re-checks the state rule inside the transaction and
 * applies fn (and inserts add_version when not NULL).  *after (optional)
 * receives the record as written.  The metadata cache is refreshed.
 */
hsm_result kms_modify(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *ref,
                      hsm_key_update_fn fn, void *arg, const hsm_version_record *add_version,
                      hsm_key_record *after) HSM_MUST_CHECK;
/* The alias name ("alias/...") ref names the key by, or NULL (a key id or ARN, or invalid). */
const char *kms_ref_alias(hsm_kms *kms, const char *ref);
/* kms_modify with the operation's condition keys (extra) for the key policy. */
hsm_result kms_modify_with(hsm_kms *kms, const hsm_caller *caller, hsm_op op, const char *ref,
                           const kms_authz_extra *extra, hsm_key_update_fn fn, void *arg,
                           const hsm_version_record *add_version,
                           hsm_key_record *after) HSM_MUST_CHECK;

/* Fills a hsm_used_key from a snapshot and version. */
void kms_used(const kms_key *k, uint32_t version, hsm_used_key *used);
/* The keyref of a version of k. */
hsm_ks_keyref kms_keyref(const kms_key *k, uint32_t version);
/*
 * KMS's policy lockout safety check (PutKeyPolicy and CreateKey,
 * BypassPolicyLockoutSafetyCheck): the caller must still be allowed to
 * change the policy of the key rec (named key_arn) under the policy next,
 * judged with every condition value this caller's PutKeyPolicy would carry
 * (its principal type and name, source address, transport, the time, the
 * key's facts, aliases and tags, and BypassPolicyLockoutSafetyCheck false).
 * new_key: rec is CreateKey's key, not stored yet, with no aliases and the
 * tags new_tags (n_new_tags) it is created with; otherwise both are read from
 * the store.
 */
hsm_result kms_lockout_check(hsm_kms *kms, const hsm_caller *caller, const hsm_key_record *rec,
                             const char *key_arn, const hsm_policy *next, bool new_key,
                             const hsm_tag *new_tags, size_t n_new_tags) HSM_MUST_CHECK;
/* Validates an encryption context and appends its canonical form to out. */
hsm_result kms_canonical_ctx(const hsm_enc_ctx *ctx, hsm_buf *out) HSM_MUST_CHECK;


/* Validates a tag as TagResource does (key 1-128 characters, value 0-256, no "aws:" prefix). */
hsm_result kms_check_tag(const hsm_tag *t) HSM_MUST_CHECK;
/* The JWK Set cache (kms_jwks.c). */
struct kms_jwks;
hsm_result kms_jwks_new(struct kms_jwks **out) HSM_MUST_CHECK;
void kms_jwks_free(struct kms_jwks *j);

/* ---- Grants (grants.c) ---- */
struct kms_grant_set;
void kms_grant_set_free(struct kms_grant_set *set);
/*
 * Whether a grant of key allows caller (whose ARN is arn) op, with extra's
 * encryption context meeting the grant's constraints.  Reads the key's grants
 * once per snapshot (from the store when the caller carried grant tokens).
 */
hsm_result kms_grants_allow(hsm_kms *kms, const hsm_caller *caller, const char *arn, hsm_op op,
                            const kms_key *key, const kms_authz_extra *extra,
                            bool *allowed) HSM_MUST_CHECK;

/* Scheduler actions (keys.c, rotation.c, import.c); *acted: this node made the change (not
 * found done or undone by another node sharing the store since the listing). */
hsm_result kms_destroy_due(hsm_kms *kms, const hsm_key_record *rec, bool *acted) HSM_MUST_CHECK;
hsm_result kms_rotate_due(hsm_kms *kms, const hsm_key_record *rec) HSM_MUST_CHECK;
/* Deletes imported material whose ValidTo passed (scheduler); reported as DeleteExpiredKeyMaterial. */
hsm_result kms_expire_due(hsm_kms *kms, const hsm_key_record *rec, bool *acted) HSM_MUST_CHECK;
/* DescribeKey's ValidTo: the earliest expiry among the materials the key uses (import.c). */
hsm_result kms_valid_to_in_use(hsm_kms *kms, hsm_key_record *rec) HSM_MUST_CHECK;
/*
 * For an operation that creates a name: lookup is the store's answer for
 * that name.  ALREADY_EXISTS when it is taken (the caller words it), its
 * failure when it failed otherwise, else the caller's gate (approvals.c):
 * a name in use is refused before custodians are asked; the store's create
 * still decides a race.
 */
hsm_result kms_commit_unless_taken(hsm_result lookup, const hsm_caller *caller) HSM_MUST_CHECK;
/* RotateKeyOnDemand and scheduled rotation of imported material (import.c): the material pending rotation becomes primary. */
hsm_result kms_promote_pending(hsm_kms *kms, const hsm_caller *caller, const kms_key *k,
                               hsm_rotation_type type, hsm_key_record *out) HSM_MUST_CHECK;

/* A growing list of user names (users.c, approvals.c); free names when done. */
typedef struct kms_name_list {
	char (*names)[HSM_USER_NAME_MAX + 1];
	size_t n, cap;
} kms_name_list;

/* Appends name to l. */
hsm_result kms_name_list_add(kms_name_list *l, const char *name) HSM_MUST_CHECK;

#endif
