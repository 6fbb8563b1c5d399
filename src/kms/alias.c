/*
 * alias.c - CreateAlias, UpdateAlias, DeleteAlias, ListAliases.
 *
 * Naming rules from the AWS KMS API reference (CreateAlias, AliasName):
 * "alias/" followed by a name, 1-256 characters in all, of letters, digits
 * and "/_-:"; the "alias/aws/" prefix is reserved for AWS managed keys.
 */
#include <string.h>

#include "common/encoding.h"
#include "kms/kms_internal.h"

#define ALIAS_PREFIX "alias/"
#define RESERVED_PREFIX "alias/aws/"

/*
 * create: CreateAlias, the one operation whose model declares
 * InvalidAliasNameException.  UpdateAlias and DeleteAlias name an alias that
 * exists: a malformed name is a ValidationException there, and a reserved
 * one names no alias hsmd can hold (NotFoundException).
 */
static hsm_result check_alias_name(const char *name, bool create)
{
	hsm_err invalid = create ? HSM_ERR_INVALID_ALIAS_NAME : HSM_ERR_VALIDATION;
	size_t n = strlen(name);
	HSM_ENSURE(n >= 1 && n <= HSM_ALIAS_MAX, HSM_ERR_VALIDATION,
	           "AliasName must be between 1 and %d characters", HSM_ALIAS_MAX);
	HSM_ENSURE(hsm_str_has_prefix(name, ALIAS_PREFIX) && n > strlen(ALIAS_PREFIX), invalid,
	           "Alias must start with the prefix \"alias/\" followed by a name");
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		          c == '/' || c == '_' || c == '-' || c == ':';
		HSM_ENSURE(ok, HSM_ERR_VALIDATION,
		           "AliasName may contain only letters, digits and /_-: characters");
	}
	if (!create)
		HSM_ENSURE(!hsm_str_has_prefix(name, RESERVED_PREFIX), HSM_ERR_NOT_FOUND,
		           "Alias %s is not found: alias/aws/ names AWS managed keys, which hsmd does "
		           "not have",
		           name);
	HSM_ENSURE(!hsm_str_has_prefix(name, RESERVED_PREFIX), HSM_ERR_INVALID_ALIAS_NAME,
	           "Alias names that begin with alias/aws/ are reserved");
	return HSM_SUCCESS;
}

/* A key's aliases, a page at a time, until one other than `except` gives it a CKA_ID. */
typedef struct id_walk {
	const char *except;
	hsm_buf *id;
	char *found;
	char last[HSM_ALIAS_MAX + 1];
} id_walk;

static hsm_result id_walk_cb(const hsm_alias_record *a, void *arg)
{
	id_walk *w = arg;
	memcpy(w->last, a->name, sizeof(w->last));
	if (w->found[0] == '\0' && (w->except == NULL || strcmp(a->name, w->except) != 0) &&
	    hsm_pkcs11_id_of_alias(a->name, w->id))
		memcpy(w->found, a->name, HSM_ALIAS_MAX + 1);
	return HSM_SUCCESS;
}

hsm_result kms_key_id_alias(hsm_kms *kms, const char *key_id, const char *except,
                            char found[HSM_ALIAS_MAX + 1], hsm_buf *id)
{
	id_walk w = {.except = except, .id = id, .found = found};
	bool more = true;
	found[0] = '\0';
	while (more && found[0] == '\0')
		HSM_GUARD(hsm_store_alias_list(kms->store, key_id, w.last, 100, id_walk_cb, &w, &more));
	return HSM_SUCCESS;
}

/*
 * Names under alias/pkcs11-id/ give their key its PKCS#11 CKA_ID
 * (common/encoding.h): such a name must spell one id one way, and a key has
 * at most one, so that adding a name never changes an id a script uses.
 * The store checks the second rule again in its write (store.h), which is
 * what holds against concurrent CreateAlias and UpdateAlias calls; this
 * earlier look refuses the plain case before an approval is claimed.
 */
/* The CKA_ID an alias/pkcs11-id/ name spells, into id (freed on failure). */
static hsm_result pkcs11_id_spelled(const char *alias, hsm_err invalid, hsm_buf *id)
{
	bool ok = hsm_pkcs11_id_of_alias(alias, id);
	if (!ok)
		hsm_buf_free(id);
	HSM_ENSURE(ok, invalid,
	           "%s names a PKCS#11 CKA_ID: after alias/pkcs11-id/ come 1 to %d bytes in "
	           "lowercase hex, not spelling a key id",
	           alias, HSM_PKCS11_ID_MAX);
	return HSM_SUCCESS;
}

hsm_result hsm_kms_alias_name_check(const char *alias)
{
	HSM_GUARD(check_alias_name(alias, true));
	if (!hsm_str_has_prefix(alias, HSM_PKCS11_ID_ALIAS))
		return HSM_SUCCESS;
	hsm_buf id = {0};
	HSM_GUARD(pkcs11_id_spelled(alias, HSM_ERR_INVALID_ALIAS_NAME, &id));
	hsm_buf_free(&id);
	return HSM_SUCCESS;
}

static hsm_result check_pkcs11_id(hsm_kms *kms, const char *alias, const char *key_id,
                                  hsm_err invalid)
{
	if (!hsm_str_has_prefix(alias, HSM_PKCS11_ID_ALIAS))
		return HSM_SUCCESS;
	hsm_buf id = {0};
	HSM_GUARD(pkcs11_id_spelled(alias, invalid, &id));
	/* Certificates stored with that id beforehand would pair with the key from now on. */
	hsm_result r = kms_certs_may_pair(kms, &id, key_id);
	if (hsm_failed(r)) {
		hsm_buf_free(&id);
		return r;
	}
	char other[HSM_ALIAS_MAX + 1];
	r = kms_key_id_alias(kms, key_id, alias, other, &id);
	hsm_buf_free(&id);
	HSM_GUARD(r);
	HSM_ENSURE(other[0] == '\0', HSM_ERR_VALIDATION, HSM_PKCS11_ID_TAKEN_FMT, key_id, other);
	return HSM_SUCCESS;
}

/*
 * A key that loses its pkcs11-id alias (deleted, or moved to another key) takes its key id
 * back as its objects' CKA_ID: certificates stored under that id pair with it again, and
 * must certify it as for any id a key takes (a rotation since may have replaced its key).
 */
static hsm_result check_id_given_back(hsm_kms *kms, const char *alias, const char *key_id)
{
	if (!hsm_str_has_prefix(alias, HSM_PKCS11_ID_ALIAS))
		return HSM_SUCCESS;
	hsm_buf id = {0};
	HSM_GUARD(hsm_buf_set(&id, key_id, strlen(key_id)));
	hsm_result r = kms_certs_may_pair(kms, &id, key_id);
	hsm_buf_free(&id);
	return r;
}

/* A target must be named by key id or key ARN, not by another alias. */
static hsm_result check_target(const char *target)
{
	HSM_ENSURE(target != NULL && *target != '\0', HSM_ERR_VALIDATION, "TargetKeyId is required");
	HSM_ENSURE(strstr(target, "alias/") == NULL, HSM_ERR_VALIDATION,
	           "TargetKeyId must be a key ID or key ARN, not an alias");
	return HSM_SUCCESS;
}

typedef struct alias_count {
	const char *name; /* the alias being made or moved: not one of the others */
	int64_t others;
} alias_count;

static hsm_result count_other(const hsm_alias_record *a, void *arg)
{
	alias_count *c = arg;
	c->others += strcmp(a->name, c->name) != 0;
	return HSM_SUCCESS;
}

/* The store's limit on the aliases of key_id, checked ahead of an approval (hsm_caller_gated). */
static hsm_result alias_room(hsm_kms *kms, const hsm_caller *caller, const char *key_id,
                             const char *name)
{
	if (!hsm_caller_gated(caller))
		return HSM_SUCCESS;
	alias_count c = {name, 0};
	bool truncated = false;
	HSM_GUARD(hsm_store_alias_list(kms->store, key_id, NULL, HSM_MAX_ALIASES_PER_KEY + 1,
	                               count_other, &c, &truncated));
	return hsm_store_alias_room(key_id, c.others);
}

static hsm_result create_alias(hsm_kms *kms, const hsm_caller *caller, const char *alias, const char *target)
{
	kms_key *k = NULL;
	HSM_GUARD(check_alias_name(alias, true));
	HSM_GUARD(check_target(target));
	HSM_GUARD(kms_lookup_write(kms, caller, HSM_OP_CreateAlias, target, NULL, &k));
	hsm_alias_record had;
	hsm_result r = check_pkcs11_id(kms, alias, k->rec.key_id, HSM_ERR_INVALID_ALIAS_NAME);
	if (hsm_ok(r)) {
		/* A name in use is refused first, as the store refuses it (before its limit). */
		hsm_result taken = hsm_store_alias_get(kms->store, alias, &had);
		if (taken.err == HSM_ERR_NOT_FOUND)
			r = alias_room(kms, caller, k->rec.key_id, alias);
		if (hsm_ok(r))
			r = kms_commit_unless_taken(taken, caller);
	}
	if (hsm_ok(r)) {
		hsm_key_state_check still = kms_state_check(HSM_OP_CreateAlias);
		r = hsm_store_alias_create(kms->store, alias, k->rec.key_id, kms_now(kms), &still);
		kms_aliases_changed(kms);
	}
	if (r.err == HSM_ERR_ALREADY_EXISTS)
		r = HSM_FAIL(HSM_ERR_ALREADY_EXISTS, "An alias with the name %s already exists", alias);
	kms_key_release(k);
	return r;
}

/* KMS: "The current and new KMS key must be the same type ... and have the same key usage." */
static bool same_kind(const hsm_key_record *a, const hsm_key_record *b)
{
	const hsm_spec_info *sa = hsm_spec_get(a->spec), *sb = hsm_spec_get(b->spec);
	bool asym_a = hsm_spec_is_asymmetric(a->spec), asym_b = hsm_spec_is_asymmetric(b->spec);
	return a->usage == b->usage && asym_a == asym_b &&
	       (sa->type == HSM_KT_HMAC) == (sb->type == HSM_KT_HMAC);
}

/* One attempt; CONFLICT when the alias moved between its read and the write. */
static hsm_result update_alias_once(hsm_kms *kms, const hsm_caller *caller, const char *alias,
                                    const char *target)
{
	hsm_alias_record a;
	kms_key *cur = NULL, *next = NULL;
	hsm_result res = HSM_SUCCESS;
	HSM_GUARD(check_alias_name(alias, false));
	HSM_GUARD(check_target(target));
	res = hsm_store_alias_get(kms->store, alias, &a);
	if (res.err == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "Alias %s is not found.", alias);
	HSM_GUARD(res);
	/* The key it leaves may be pending deletion (moving off such a key is the
	 * point); the one it goes to may not (key state table, note 10). */
	HSM_TRY(kms_lookup_as(kms, caller, HSM_OP_UpdateAlias, HSM_OP_DeleteAlias, a.key_id, NULL,
	                      &cur));
	HSM_TRY(kms_lookup_write(kms, caller, HSM_OP_UpdateAlias, target, NULL, &next));
	HSM_CHECK(same_kind(&cur->rec, &next->rec), HSM_ERR_VALIDATION,
	          "%s and %s are different key types or usages: an alias can only move to a key of "
	          "the same type and usage", cur->rec.key_id, next->rec.key_id);
	HSM_TRY(check_pkcs11_id(kms, alias, next->rec.key_id, HSM_ERR_VALIDATION));
	if (strcmp(cur->rec.key_id, next->rec.key_id) != 0)
		HSM_TRY(check_id_given_back(kms, alias, cur->rec.key_id));
	HSM_TRY(alias_room(kms, caller, next->rec.key_id, alias));
	HSM_TRY(hsm_caller_commit(caller));
	/*
	 * The write holds if the alias still points at the key the caller was
	 * authorized on here, and the key it goes to is still in a state to take
	 * it.
	 */
	hsm_key_state_check still = kms_state_check(HSM_OP_UpdateAlias);
	res = hsm_store_alias_update(kms->store, alias, cur->rec.key_id, next->rec.key_id,
	                             kms_now(kms), &still);
	kms_aliases_changed(kms);
out:
	kms_key_release(cur);
	kms_key_release(next);
	return res;
}

/*
 * Moved meanwhile by another request: the decision is made again on where it
 * now points.  Each lost attempt is another request's committed move, so
 * with fewer than this many moving one alias at once none is refused.
 */
#define UPDATE_ALIAS_ATTEMPTS 10

static hsm_result update_alias(hsm_kms *kms, const hsm_caller *caller, const char *alias,
                               const char *target)
{
	hsm_result r = update_alias_once(kms, caller, alias, target);
	for (int i = 1; i < UPDATE_ALIAS_ATTEMPTS && r.err == HSM_ERR_CONFLICT; i++)
		r = update_alias_once(kms, caller, alias, target);
	if (r.err == HSM_ERR_CONFLICT)
		r = HSM_FAIL(HSM_ERR_CONFLICT,
		             "Alias %s kept moving to other keys while it was being updated; try again",
		             alias);
	return r;
}

static hsm_result delete_alias(hsm_kms *kms, const hsm_caller *caller, const char *alias)
{
	hsm_alias_record a;
	kms_key *k = NULL;
	HSM_GUARD(check_alias_name(alias, false));
	hsm_result r = hsm_store_alias_get(kms->store, alias, &a);
	if (r.err == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "Alias %s is not found.", alias);
	HSM_GUARD(r);
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_DeleteAlias, a.key_id, NULL, &k));
	r = check_id_given_back(kms, alias, k->rec.key_id);
	if (hsm_ok(r))
		r = hsm_caller_commit(caller);
	if (hsm_ok(r)) {
		r = hsm_store_alias_delete(kms->store, alias);
		kms_aliases_changed(kms);
	}
	kms_key_release(k);
	return r;
}

/* A pkcs11-id alias sets its key's CKA_ID: made, moved and deleted under kms->pairing. */
static bool sets_an_id(const char *alias)
{
	return alias != NULL && hsm_str_has_prefix(alias, HSM_PKCS11_ID_ALIAS);
}

hsm_result hsm_kms_create_alias(hsm_kms *kms, const hsm_caller *caller, const char *alias,
                                const char *target)
{
	if (!sets_an_id(alias))
		return create_alias(kms, caller, alias, target);
	pthread_mutex_lock(&kms->pairing);
	hsm_result r = create_alias(kms, caller, alias, target);
	pthread_mutex_unlock(&kms->pairing);
	return r;
}

hsm_result hsm_kms_update_alias(hsm_kms *kms, const hsm_caller *caller, const char *alias,
                                const char *target)
{
	if (!sets_an_id(alias))
		return update_alias(kms, caller, alias, target);
	pthread_mutex_lock(&kms->pairing);
	hsm_result r = update_alias(kms, caller, alias, target);
	pthread_mutex_unlock(&kms->pairing);
	return r;
}

hsm_result hsm_kms_delete_alias(hsm_kms *kms, const hsm_caller *caller, const char *alias)
{
	if (!sets_an_id(alias))
		return delete_alias(kms, caller, alias);
	pthread_mutex_lock(&kms->pairing);
	hsm_result r = delete_alias(kms, caller, alias);
	pthread_mutex_unlock(&kms->pairing);
	return r;
}

hsm_result hsm_kms_list_aliases(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                const char *marker, size_t limit, hsm_alias_cb cb, void *arg,
                                bool *truncated)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_ListAliases, NULL, NULL));
	HSM_ENSURE(marker == NULL || *marker == '\0' || hsm_str_has_prefix(marker, ALIAS_PREFIX),
	           HSM_ERR_INVALID_MARKER, "Marker is invalid");
	/* As in AWS KMS, ListAliases is the caller's permission alone: the key's policy is not
	 * asked (the listing without KeyId shows the same aliases), only whether it exists. */
	char key_id[HSM_UUID_STRLEN + 1];
	if (ref != NULL) {
		HSM_GUARD(hsm_kms_resolve(kms, ref, key_id));
		HSM_GUARD(kms_key_load(kms, key_id, &k));
		if (k->rec.state == HSM_KEY_DESTROYED) {
			hsm_result gone = HSM_FAIL(HSM_ERR_NOT_FOUND, "Key '%s' does not exist", k->arn);
			kms_key_release(k);
			return gone;
		}
	}
	hsm_result r = hsm_store_alias_list(kms->store, k != NULL ? k->rec.key_id : NULL, marker,
	                                    limit, cb, arg, truncated);
	kms_key_release(k);
	return r;
}
