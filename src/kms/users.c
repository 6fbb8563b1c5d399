/*
 * users.c - principals: users with roles and their SigV4 access keys.
 *
 * Access-key secrets are stored wrapped under the keystore's principal key
 * (AAD = the access key id), so a sealed store reveals none and a row
 * copied onto another key id fails to unwrap.  Only crypto officers (and
 * the local operator) manage principals.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/encoding.h"
#include "kms/kms_internal.h"

#define AKID_PREFIX "AKIA"

static hsm_result require_officer(const hsm_caller *caller)
{
	HSM_ENSURE(caller->local || (caller->roles & HSM_ROLES_OFFICER) != 0, HSM_ERR_ACCESS_DENIED,
	           "only a crypto-officer may manage users and access keys");
	return HSM_SUCCESS;
}

hsm_result hsm_kms_user_name_check(const char *name)
{
	size_t n = strlen(name);
	HSM_ENSURE(n >= 1 && n <= HSM_USER_NAME_MAX, HSM_ERR_VALIDATION,
	           "user names are 1 to %d characters", HSM_USER_NAME_MAX);
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		          strchr("_+=,.@-", c) != NULL;
		HSM_ENSURE(ok, HSM_ERR_VALIDATION, "user names may contain only letters, digits and _+=,.@-");
	}
	return HSM_SUCCESS;
}

/* A user whose name differs from the one asked for only by case (IAM names are unique so). */
typedef struct name_twin {
	const char *name;
	char found[HSM_USER_NAME_MAX + 1];
} name_twin;

static hsm_result find_twin(const hsm_user_record *u, void *arg)
{
	name_twin *t = arg;
	if (t->found[0] == '\0' && strcasecmp(u->name, t->name) == 0 && strcmp(u->name, t->name) != 0)
		return hsm_strcpy(t->found, sizeof(t->found), u->name);
	return HSM_SUCCESS;
}

hsm_result kms_name_list_add(kms_name_list *l, const char *name)
{
	if (l->n == l->cap) {
		size_t cap = l->cap == 0 ? 16 : 2 * l->cap;
		void *more = realloc(l->names, cap * sizeof(*l->names));
		HSM_ENSURE(more != NULL, HSM_ERR_NOMEM, "out of memory");
		l->names = more;
		l->cap = cap;
	}
	return hsm_strcpy(l->names[l->n++], sizeof(l->names[0]), name);
}

/* Every user name of the store, for hsm_kms_user_case_twins. */
static hsm_result collect_name(const hsm_user_record *u, void *arg)
{
	return kms_name_list_add(arg, u->name);
}

static int by_folded_name(const void *a, const void *b)
{
	int c = strcasecmp(a, b);
	return c != 0 ? c : strcmp(a, b);
}

hsm_result hsm_kms_user_case_twins(hsm_store *store, char *out, size_t cap, size_t *sets)
{
	kms_name_list l = {NULL, 0, 0};
	hsm_result res = hsm_store_user_list(store, collect_name, &l);
	hsm_sb b;
	hsm_sb_init(&b, out, cap);
	*sets = 0;
	if (hsm_ok(res) && l.n > 1)
		qsort(l.names, l.n, sizeof(l.names[0]), by_folded_name);
	/* Sorted so, the spellings of one name are neighbours. */
	for (size_t i = 1; hsm_ok(res) && i < l.n; i++) {
		if (strcasecmp(l.names[i - 1], l.names[i]) != 0)
			continue;
		bool first = i == 1 || strcasecmp(l.names[i - 2], l.names[i]) != 0;
		if (first) {
			hsm_sb_add(&b, *sets > 0 ? ", " : "");
			hsm_sb_add(&b, l.names[i - 1]);
			(*sets)++;
		}
		hsm_sb_add(&b, "/");
		hsm_sb_add(&b, l.names[i]);
	}
	if (b.cut && cap >= 4)
		memcpy(out + cap - 4, "...", 4);
	free(l.names);
	return res;
}

hsm_result hsm_kms_user_create(hsm_kms *kms, const hsm_caller *caller, const char *name,
                               unsigned roles)
{
	HSM_GUARD(require_officer(caller));
	HSM_GUARD(hsm_kms_user_name_check(name));
	HSM_ENSURE(roles != 0 && (roles >> HSM_ROLE_COUNT) == 0, HSM_ERR_VALIDATION,
	           "a user needs at least one known role");
	hsm_user_record u;
	memset(&u, 0, sizeof(u));
	HSM_GUARD(hsm_strcpy(u.name, sizeof(u.name), name));
	u.roles = roles;
	u.created = kms_now(kms);
	/* aws:username conditions compare names; "Alice" beside "alice" could sidestep one. */
	name_twin twin = {name, ""};
	HSM_GUARD(hsm_store_user_list(kms->store, find_twin, &twin));
	HSM_ENSURE(twin.found[0] == '\0', HSM_ERR_ALREADY_EXISTS,
	           "user %s already exists (user names are unique regardless of case)", twin.found);
	hsm_user_record had;
	hsm_result r = kms_commit_unless_taken(hsm_store_user_get(kms->store, name, &had), caller);
	if (r.err == HSM_ERR_ALREADY_EXISTS)
		return HSM_FAIL(HSM_ERR_ALREADY_EXISTS, "user %s already exists", name);
	/* The store checks again, atomically: a twin made meanwhile (another node) is refused. */
	return hsm_ok(r) ? hsm_store_user_create(kms->store, &u) : r;
}

hsm_result hsm_kms_user_list(hsm_kms *kms, const hsm_caller *caller, hsm_user_cb cb, void *arg)
{
	HSM_GUARD(require_officer(caller));
	return hsm_store_user_list(kms->store, cb, arg);
}

static hsm_result load_user(hsm_kms *kms, const char *name, hsm_user_record *u)
{
	hsm_result r = hsm_store_user_get(kms->store, name, u);
	if (r.err == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "user %s does not exist", name);
	return r;
}

hsm_result hsm_kms_user_set_disabled(hsm_kms *kms, const hsm_caller *caller, const char *name,
                                     bool disabled)
{
	hsm_user_record u;
	HSM_GUARD(require_officer(caller));
	HSM_GUARD(load_user(kms, name, &u));
	HSM_GUARD(hsm_caller_commit(caller));
	/* The one column: a lockout or another change made meanwhile stays. */
	return hsm_store_user_change(kms->store, name,
	                             disabled ? HSM_USER_DISABLE : HSM_USER_ENABLE);
}

hsm_result hsm_kms_user_unlock(hsm_kms *kms, const hsm_caller *caller, const char *name)
{
	hsm_user_record u;
	HSM_GUARD(require_officer(caller));
	HSM_GUARD(load_user(kms, name, &u));
	HSM_GUARD(hsm_caller_commit(caller));
	/* Only the lockout's columns: a DisableUser made meanwhile stays. */
	return hsm_store_user_change(kms->store, name, HSM_USER_UNLOCK);
}

/* "AKIA" + 16 characters of RFC 4648 base32, like AWS access key ids. */
static hsm_result new_access_key_id(char out[HSM_ACCESS_KEY_ID_LEN + 1])
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	uint8_t r[16];
	HSM_GUARD(hsm_random_bytes(r, sizeof(r)));
	memcpy(out, AKID_PREFIX, 4);
	for (size_t i = 0; i < sizeof(r); i++)
		out[4 + i] = alphabet[r[i] & 31U]; /* an identifier, not a secret */
	out[HSM_ACCESS_KEY_ID_LEN] = '\0';
	return HSM_SUCCESS;
}

static hsm_result store_access_key(hsm_kms *kms, const char *user, const char *akid,
                                   const hsm_secret *secret)
{
	hsm_access_key_record k;
	memset(&k, 0, sizeof(k));
	HSM_GUARD(hsm_strcpy(k.access_key_id, sizeof(k.access_key_id), akid));
	HSM_GUARD(hsm_strcpy(k.user, sizeof(k.user), user));
	k.active = true;
	k.created = kms_now(kms);
	hsm_result r = hsm_ks_wrap_secret(kms->ks, akid, secret, &k.wrapped_secret);
	if (hsm_ok(r))
		r = hsm_store_access_key_create(kms->store, &k);
	hsm_access_key_record_clear(&k);
	return r;
}

static hsm_result count_active(const hsm_access_key_record *k, void *arg)
{
	*(int64_t *)arg += k->active;
	return HSM_SUCCESS;
}

/* The store's limit on a user's active keys, checked ahead of an approval (hsm_caller_gated). */
static hsm_result access_key_room(hsm_kms *kms, const hsm_caller *caller, const char *user)
{
	if (!hsm_caller_gated(caller))
		return HSM_SUCCESS;
	int64_t held = 0;
	HSM_GUARD(hsm_store_access_key_list(kms->store, user, count_active, &held));
	return hsm_store_access_key_room(user, held);
}

hsm_result hsm_kms_access_key_create(hsm_kms *kms, const hsm_caller *caller, const char *user,
                                     char access_key_id[HSM_ACCESS_KEY_ID_LEN + 1],
                                     hsm_secret **secret)
{
	hsm_result res = HSM_SUCCESS;
	hsm_user_record u;
	hsm_secret *raw = NULL, *text = NULL;
	hsm_buf b64;
	hsm_buf_init_secure(&b64);
	HSM_GUARD(require_officer(caller));
	HSM_GUARD(load_user(kms, user, &u));
	HSM_GUARD(access_key_room(kms, caller, user));
	HSM_GUARD(hsm_caller_commit(caller));
	HSM_TRY(new_access_key_id(access_key_id));
	/* 30 random bytes are 40 base64 characters, the length of an AWS secret key. */
	HSM_TRY(hsm_secret_random(30, &raw));
	HSM_TRY(hsm_b64_encode(&b64, hsm_secret_bytes(raw), hsm_secret_len(raw)));
	HSM_TRY(hsm_secret_from(b64.data, b64.len, &text));
	HSM_TRY(store_access_key(kms, user, access_key_id, text));
	*secret = text;
	text = NULL;
out:
	hsm_secret_free(raw);
	hsm_secret_free(text);
	hsm_buf_free(&b64);
	return res;
}

hsm_result hsm_kms_access_key_import(hsm_kms *kms, const hsm_caller *caller, const char *user,
                                     const char *access_key_id, const hsm_secret *secret)
{
	hsm_user_record u;
	HSM_GUARD(require_officer(caller));
	HSM_GUARD(load_user(kms, user, &u));
	size_t n = strlen(access_key_id);
	HSM_ENSURE(n >= 16 && n <= HSM_ACCESS_KEY_ID_LEN, HSM_ERR_VALIDATION,
	           "access key ids are 16 to %d characters", HSM_ACCESS_KEY_ID_LEN);
	HSM_ENSURE(hsm_secret_len(secret) >= 16, HSM_ERR_VALIDATION,
	           "secret access keys must be at least 16 characters");
	HSM_GUARD(hsm_caller_commit(caller));
	return store_access_key(kms, user, access_key_id, secret);
}

hsm_result hsm_kms_access_key_revoke(hsm_kms *kms, const hsm_caller *caller,
                                     const char *access_key_id)
{
	HSM_GUARD(require_officer(caller));
	/* One that is not there is refused before an approval is asked for. */
	hsm_access_key_record k;
	memset(&k, 0, sizeof(k));
	hsm_result r = hsm_store_access_key_get(kms->store, access_key_id, &k);
	hsm_access_key_record_clear(&k);
	if (hsm_ok(r))
		r = hsm_caller_commit(caller);
	if (hsm_ok(r))
		r = hsm_store_access_key_set_active(kms->store, access_key_id, false);
	if (r.err == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "access key %s does not exist", access_key_id);
	return r;
}

hsm_result hsm_kms_access_key_list(hsm_kms *kms, const hsm_caller *caller, const char *user,
                                   hsm_access_key_cb cb, void *arg)
{
	HSM_GUARD(require_officer(caller));
	return hsm_store_access_key_list(kms->store, user, cb, arg);
}

hsm_result hsm_kms_access_keys_all(hsm_kms *kms, hsm_access_key_cb cb, void *arg)
{
	return hsm_store_access_key_list(kms->store, NULL, cb, arg);
}

hsm_result hsm_kms_credential(hsm_kms *kms, const char *access_key_id, hsm_user_record *user,
                              hsm_secret **secret)
{
	hsm_result res = HSM_SUCCESS;
	hsm_access_key_record k;
	memset(&k, 0, sizeof(k));
	res = hsm_store_access_key_get(kms->store, access_key_id, &k);
	if (res.err == HSM_ERR_NOT_FOUND || (hsm_ok(res) && !k.active)) {
		res = HSM_FAIL(HSM_ERR_UNRECOGNIZED_CLIENT,
		               "The security token included in the request is invalid.");
		goto out;
	}
	HSM_TRY(res);
	HSM_TRY(hsm_store_user_get(kms->store, k.user, user));
	HSM_TRY(hsm_ks_unwrap_secret(kms->ks, access_key_id, k.wrapped_secret.data,
	                             k.wrapped_secret.len, secret));
out:
	hsm_access_key_record_clear(&k);
	return res;
}

hsm_result hsm_kms_user_admit(const hsm_user_record *user)
{
	HSM_ENSURE(!user->disabled && !user->locked, HSM_ERR_PRINCIPAL_LOCKED,
	           "User %s is %s; a crypto-officer must %s it", user->name,
	           user->disabled ? "disabled" : "locked after repeated failed authentications",
	           user->disabled ? "enable" : "unlock");
	return HSM_SUCCESS;
}

hsm_result hsm_kms_auth_outcome(hsm_kms *kms, const char *user, bool success, uint32_t lock_after,
                                bool *locked_now)
{
	hsm_user_record after;
	memset(&after, 0, sizeof(after));
	bool now = false;
	/* The failure that locked the user, whatever its count (lock_after may have been
	 * lowered below it since the last failure). */
	HSM_GUARD(hsm_store_user_auth_result(kms->store, user, success, lock_after, &after, &now));
	if (locked_now != NULL)
		*locked_now = !success && now;
	return HSM_SUCCESS;
}
