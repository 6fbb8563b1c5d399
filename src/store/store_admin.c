/*
 * store_admin.c - the public store functions for principals (users and
 * access keys), certificates, key usage and quorum approvals: argument
 * checks, then dispatch to the backend's ops table (store_impl.h); plus the
 * approval record helpers both backends share (st_approval_*).
 */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/encoding.h"
#include "store/store_impl.h"

static hsm_result check_user_record(const hsm_user_record *u)
{
	HSM_ASSERT(u != NULL);
	HSM_GUARD(st_check_name(u->name, sizeof(u->name), "user name"));
	HSM_ASSERT(u->roles != 0 && (u->roles >> HSM_ROLE_COUNT) == 0);
	return HSM_SUCCESS;
}

/* ---- Principals ---------------------------------------------------------------------------- */

#define USER_CAP (HSM_USER_NAME_MAX + 1)
#define ACCESS_KEY_CAP (HSM_ACCESS_KEY_ID_LEN + 1)

hsm_result hsm_store_user_create(hsm_store *s, const hsm_user_record *u)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_user_record(u));
	return s->ops->user_create(s, u);
}

hsm_result hsm_store_user_get(hsm_store *s, const char *name, hsm_user_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(st_check_lookup(name, USER_CAP, "user"));
	return s->ops->user_get(s, name, out);
}

hsm_result hsm_store_user_change(hsm_store *s, const char *name, hsm_user_change change)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(name, USER_CAP, "user"));
	HSM_ENSURE(change == HSM_USER_DISABLE || change == HSM_USER_ENABLE ||
	               change == HSM_USER_UNLOCK,
	           HSM_ERR_VALIDATION, "not a user change");
	return s->ops->user_change(s, name, change);
}

hsm_result hsm_store_user_put(hsm_store *s, const hsm_user_record *u)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_user_record(u));
	return s->ops->user_put(s, u);
}

hsm_result hsm_store_user_auth_result(hsm_store *s, const char *name, bool success,
                                      uint32_t lock_after, hsm_user_record *out,
                                      bool *locked_now)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(name, USER_CAP, "user"));
	return s->ops->user_auth_result(s, name, success, lock_after, out, locked_now);
}

hsm_result hsm_store_user_list(hsm_store *s, hsm_user_cb cb, void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	return s->ops->user_list(s, cb, arg);
}

hsm_result hsm_store_access_key_create(hsm_store *s, const hsm_access_key_record *k)
{
	HSM_ASSERT(s != NULL && k != NULL);
	HSM_GUARD(st_check_name(k->access_key_id, sizeof(k->access_key_id), "access key id"));
	HSM_GUARD(st_check_lookup(k->user, sizeof(k->user), "user"));
	return s->ops->access_key_create(s, k);
}

hsm_result hsm_store_access_key_get(hsm_store *s, const char *access_key_id,
                                    hsm_access_key_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(st_check_lookup(access_key_id, ACCESS_KEY_CAP, "access key"));
	return s->ops->access_key_get(s, access_key_id, out);
}

hsm_result hsm_store_access_key_set_active(hsm_store *s, const char *access_key_id, bool active)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(access_key_id, ACCESS_KEY_CAP, "access key"));
	return s->ops->access_key_set_active(s, access_key_id, active);
}

hsm_result hsm_store_access_key_list(hsm_store *s, const char *user, hsm_access_key_cb cb,
                                     void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	if (user != NULL)
		HSM_GUARD(st_check_lookup(user, USER_CAP, "user"));
	return s->ops->access_key_list(s, user, cb, arg);
}

/* ---- Certificates ------------------------------------------------------------------------------ */

#define CERT_ID_CAP (HSM_UUID_STRLEN + 1)

/* Whether id is a lowercase UUID (reads at most CERT_ID_CAP bytes of it). */
static bool is_cert_id(const char *id)
{
	HSM_ASSERT(id != NULL);
	/* hsm_is_uuid runs strlen: only on a string known to end within the field. */
	return strnlen(id, CERT_ID_CAP) == HSM_UUID_STRLEN && hsm_is_uuid(id);
}

/*
 * Certificate ids have one shape (a lowercase UUID the server assigns,
 * store.h): no certificate holds any other text, so a lookup by it is
 * NOT_FOUND, as the rule for identifiers that cannot exist says.  The text
 * is not quoted: it may be anything a client sent.
 */
static hsm_result check_cert_lookup(const char *id)
{
	HSM_ENSURE(is_cert_id(id), HSM_ERR_NOT_FOUND,
	           "the certificate does not exist (certificate ids are lowercase UUIDs)");
	return HSM_SUCCESS;
}

/* An hsm_buf that holds len bytes has them: anything else is a programmer's error. */
static void assert_buf(const hsm_buf *b)
{
	HSM_ASSERT(b->len == 0 || b->data != NULL);
}

static hsm_result check_cert_record(const hsm_cert_record *c)
{
	HSM_ASSERT(c != NULL);
	assert_buf(&c->object_id);
	assert_buf(&c->der);
	HSM_ENSURE(is_cert_id(c->cert_id), HSM_ERR_VALIDATION,
	           "a certificate id is a lowercase UUID");
	HSM_GUARD(st_check_fits(c->label, sizeof(c->label), "certificate label"));
	HSM_ENSURE(c->object_id.len <= HSM_CERT_OBJECT_ID_MAX, HSM_ERR_VALIDATION,
	           "a certificate's object id (CKA_ID) is longer than %d bytes",
	           HSM_CERT_OBJECT_ID_MAX);
	HSM_ENSURE(c->der.len > 0, HSM_ERR_VALIDATION, "a certificate needs its DER bytes");
	HSM_ENSURE(c->der.len <= HSM_CERT_DER_MAX, HSM_ERR_VALIDATION,
	           "a certificate is longer than %d bytes of DER", HSM_CERT_DER_MAX);
	HSM_GUARD(st_check_fits(c->creator, sizeof(c->creator), "certificate creator"));
	return HSM_SUCCESS;
}

hsm_result hsm_store_cert_create(hsm_store *s, const hsm_cert_record *c)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_cert_record(c));
	return s->ops->cert_create(s, c);
}

hsm_result hsm_store_cert_get(hsm_store *s, const char *cert_id, hsm_cert_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_cert_lookup(cert_id));
	return s->ops->cert_get(s, cert_id, out);
}

hsm_result hsm_store_cert_delete(hsm_store *s, const char *cert_id)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_cert_lookup(cert_id));
	return s->ops->cert_delete(s, cert_id);
}

hsm_result hsm_store_cert_list(hsm_store *s, const char *after, size_t limit, hsm_cert_cb cb,
                               void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(st_check_limit(limit));
	const hsm_cert_match all = {NULL, NULL};
	return s->ops->cert_list(s, &all, st_cursor(after), limit, cb, arg, truncated);
}

hsm_result hsm_store_cert_find(hsm_store *s, const hsm_cert_match *m, const char *after,
                               size_t limit, hsm_cert_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && m != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(st_check_limit(limit));
	if (m->object_id != NULL) {
		assert_buf(m->object_id);
		/* None longer is stored: nothing matches. */
		if (m->object_id->len > HSM_CERT_OBJECT_ID_MAX) {
			*truncated = false;
			return HSM_SUCCESS;
		}
	}
	if (m->label != NULL && strnlen(m->label, HSM_CERT_LABEL_MAX + 1) > HSM_CERT_LABEL_MAX) {
		*truncated = false;
		return HSM_SUCCESS;
	}
	return s->ops->cert_list(s, m, st_cursor(after), limit, cb, arg, truncated);
}

hsm_result hsm_store_cert_count(hsm_store *s, uint64_t *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	return s->ops->cert_count(s, out);
}

hsm_result hsm_store_cert_count_expiring(hsm_store *s, int64_t before, uint64_t *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	return s->ops->cert_count_expiring(s, before, out);
}

/* ---- Key usage --------------------------------------------------------------------------------- */

hsm_result hsm_store_usage_put(hsm_store *s, size_t n, const hsm_key_usage_record *recs)
{
	HSM_ASSERT(s != NULL && recs != NULL && n >= 1);
	for (size_t i = 0; i < n; i++) {
		const hsm_key_usage_record *u = &recs[i];
		HSM_ENSURE(u->key_id[0] != '\0' && u->operation[0] != '\0' && u->used_ms > 0 &&
		               memchr(u->key_id, '\0', sizeof(u->key_id)) != NULL &&
		               memchr(u->operation, '\0', sizeof(u->operation)) != NULL &&
		               memchr(u->request_id, '\0', sizeof(u->request_id)) != NULL,
		           HSM_ERR_VALIDATION, "a key use needs a key, an operation and a time");
	}
	return s->ops->usage_put(s, n, recs);
}

hsm_result hsm_store_usage_get(hsm_store *s, const char *key_id, hsm_key_usage_record *out)
{
	HSM_ASSERT(s != NULL && key_id != NULL && out != NULL);
	HSM_ENSURE(key_id[0] != '\0' && strnlen(key_id, HSM_UUID_STRLEN + 1) <= HSM_UUID_STRLEN,
	           HSM_ERR_NOT_FOUND, "no use of that key is recorded");
	return s->ops->usage_get(s, key_id, out);
}

hsm_result hsm_store_usage_since(hsm_store *s, int64_t *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	return s->ops->usage_since(s, out);
}

/* ---- Quorum approvals ------------------------------------------------------------------------ */

/*
 * Approval ids have one shape (HSM_APPROVAL_ID_LEN lowercase hex digits,
 * store.h): any other text names no approval, so a lookup by it is
 * NOT_FOUND (the contract of hsm_store_approval_get), and so is every other
 * lookup by id, as the general rule for identifiers that cannot exist says.
 */
static hsm_result check_approval_id(const char *id)
{
	HSM_ENSURE(st_is_lower_hex(id, HSM_APPROVAL_ID_LEN), HSM_ERR_NOT_FOUND,
	           "approval %.*s does not exist", HSM_APPROVAL_ID_LEN, id);
	return HSM_SUCCESS;
}

static hsm_result check_fingerprint(const char *fingerprint)
{
	HSM_ENSURE(st_is_lower_hex(fingerprint, HSM_APPROVAL_FINGERPRINT_LEN), HSM_ERR_VALIDATION,
	           "an approval fingerprint is %d lowercase hex digits",
	           HSM_APPROVAL_FINGERPRINT_LEN);
	return HSM_SUCCESS;
}

static hsm_result check_approval_record(const hsm_approval_record *a)
{
	HSM_ASSERT(a != NULL);
	HSM_ENSURE(st_is_lower_hex(a->id, HSM_APPROVAL_ID_LEN), HSM_ERR_VALIDATION,
	           "an approval id is %d lowercase hex digits", HSM_APPROVAL_ID_LEN);
	HSM_GUARD(check_fingerprint(a->fingerprint));
	HSM_GUARD(st_check_name(a->operation, sizeof(a->operation), "approval operation"));
	HSM_GUARD(st_check_name(a->requester, sizeof(a->requester), "approval requester"));
	HSM_ENSURE(a->required >= 1 && a->required <= HSM_APPROVERS_MAX, HSM_ERR_VALIDATION,
	           "an approval requires between 1 and %d approvers", HSM_APPROVERS_MAX);
	HSM_ENSURE(a->expires > a->created, HSM_ERR_VALIDATION,
	           "an approval must expire after it is created");
	return st_approval_check_request(a->request);
}

hsm_result hsm_store_approval_open(hsm_store *s, const hsm_approval_record *a,
                                   hsm_approval_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_approval_record(a));
	return s->ops->approval_open(s, a, out);
}

hsm_result hsm_store_approval_get(hsm_store *s, const char *id, hsm_approval_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_approval_id(id));
	return s->ops->approval_get(s, id, out);
}

hsm_result hsm_store_approval_find(hsm_store *s, const char *fingerprint, int64_t now,
                                   hsm_approval_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_fingerprint(fingerprint));
	return s->ops->approval_find(s, fingerprint, now, out);
}

hsm_result hsm_store_approval_approve(hsm_store *s, const char *id, const char *approver,
                                      int64_t now, hsm_approval_record *out)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_name(approver, USER_CAP, "approver"));
	HSM_GUARD(check_approval_id(id));
	return s->ops->approval_approve(s, id, approver, now, out);
}

hsm_result hsm_store_approval_close(hsm_store *s, const char *id, hsm_approval_state to,
                                    const char *by, int64_t now, hsm_approval_record *out)
{
	HSM_ASSERT(s != NULL && by != NULL);
	HSM_ENSURE(to == HSM_APPROVAL_USED || to == HSM_APPROVAL_DENIED ||
	               to == HSM_APPROVAL_CANCELLED,
	           HSM_ERR_VALIDATION, "an approval closes as Used, Denied or Cancelled");
	/* Who refused or withdrew a request is on record; a use is the requester's own. */
	if (to == HSM_APPROVAL_USED)
		HSM_GUARD(st_check_fits(by, USER_CAP, "closing user"));
	else
		HSM_GUARD(st_check_name(by, USER_CAP, "closing user"));
	HSM_GUARD(check_approval_id(id));
	return s->ops->approval_close(s, id, to, to == HSM_APPROVAL_USED ? "" : by, now, out);
}

hsm_result hsm_store_approval_reopen(hsm_store *s, const char *id)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_approval_id(id));
	return s->ops->approval_reopen(s, id);
}

hsm_result hsm_store_approval_list(hsm_store *s, bool open_only, int64_t now,
                                   const hsm_approval_cursor *after, size_t limit,
                                   hsm_approval_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	HSM_GUARD(st_check_limit(limit));
	/* The start: before every record (created <= INT64_MAX, and any id sorts after ""). */
	hsm_approval_cursor from = {INT64_MAX, ""};
	if (after != NULL) {
		HSM_ENSURE(after->created >= 0 && st_is_lower_hex(after->id, HSM_APPROVAL_ID_LEN),
		           HSM_ERR_VALIDATION, "an approval listing's position is malformed");
		from = *after;
	}
	bool more = false;
	HSM_GUARD(s->ops->approval_list(s, open_only, now, &from, limit, cb, arg, &more));
	if (truncated != NULL)
		*truncated = more;
	return HSM_SUCCESS;
}

hsm_result hsm_store_approval_purge(hsm_store *s, int64_t before, uint64_t *deleted)
{
	HSM_ASSERT(s != NULL);
	uint64_t n = 0;
	HSM_GUARD(s->ops->approval_purge(s, before, &n));
	if (deleted != NULL)
		*deleted = n;
	return HSM_SUCCESS;
}

hsm_result hsm_store_approval_rewrite(hsm_store *s, hsm_approval_rewrite_fn fn, void *arg,
                                      uint64_t *rewritten)
{
	HSM_ASSERT(s != NULL && fn != NULL);
	uint64_t n = 0;
	HSM_GUARD(s->ops->approval_rewrite(s, fn, arg, &n));
	if (rewritten != NULL)
		*rewritten = n;
	return HSM_SUCCESS;
}

hsm_result st_approval_check_request(const char *request)
{
	HSM_ENSURE(request != NULL, HSM_ERR_VALIDATION, "an approval needs its request");
	HSM_ENSURE(strnlen(request, HSM_APPROVAL_REQUEST_MAX + 1) <= HSM_APPROVAL_REQUEST_MAX,
	           HSM_ERR_VALIDATION, "an approval's request is longer than %d bytes",
	           HSM_APPROVAL_REQUEST_MAX);
	return HSM_SUCCESS;
}

/* ---- Helpers every backend uses ------------------------------------------------------ */

void st_vec_init(st_vec *v, size_t item_size)
{
	memset(v, 0, sizeof(*v));
	v->size = item_size;
}

hsm_result st_vec_push(st_vec *v, void **item)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 16;
		HSM_ENSURE(cap <= SIZE_MAX / v->size, HSM_ERR_NOMEM, "out of memory");
		unsigned char *p = realloc(v->items, cap * v->size);
		HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
		v->items = p;
		v->cap = cap;
	}
	void *slot = v->items + v->n * v->size;
	memset(slot, 0, v->size);
	v->n++;
	*item = slot;
	return HSM_SUCCESS;
}

void *st_vec_at(const st_vec *v, size_t i)
{
	HSM_ASSERT(i < v->n);
	return v->items + i * v->size;
}

void st_vec_pop(st_vec *v)
{
	HSM_ASSERT(v->n > 0);
	v->n--;
}

void st_vec_free(st_vec *v, void (*clear)(void *item))
{
	if (clear != NULL) {
		for (size_t i = 0; i < v->n; i++)
			clear(v->items + i * v->size);
	}
	free(v->items);
	memset(v, 0, sizeof(*v));
}

hsm_result st_check_transition(hsm_key_state before, hsm_key_state after, bool new_version)
{
	if (before == HSM_KEY_DESTROYED) {
		HSM_ENSURE(after == HSM_KEY_DESTROYED, HSM_ERR_INVALID_STATE,
		           "a destroyed key cannot change state");
		HSM_ENSURE(!new_version, HSM_ERR_INVALID_STATE,
		           "a destroyed key cannot get a new version");
	} else {
		HSM_ENSURE(after != HSM_KEY_DESTROYED, HSM_ERR_INVALID_STATE,
		           "a key is destroyed only by key destroy");
	}
	return HSM_SUCCESS;
}

hsm_result st_check_material_change(const hsm_key_record *k)
{
	/* Destruction erased the material for good; nothing may bring it back. */
	HSM_ENSURE(k->state != HSM_KEY_DESTROYED, HSM_ERR_INVALID_STATE,
	           "key %s is destroyed: its key material cannot change", k->key_id);
	return HSM_SUCCESS;
}

/* primary_version + 1 without wrapping: a key at UINT32_MAX has no next version. */
static bool is_next_version(const hsm_key_record *k, uint32_t version)
{
	return (uint64_t)version == (uint64_t)k->primary_version + 1;
}

hsm_result st_material_target(const hsm_key_record *k, uint32_t version, bool exists,
                              st_material_write *out)
{
	HSM_GUARD(st_check_material_change(k));
	if (version <= k->primary_version) {
		HSM_ENSURE(exists, HSM_ERR_NOT_FOUND, "key %s has no version %u", k->key_id, version);
		*out = ST_MATERIAL_IN_USE;
		return HSM_SUCCESS;
	}
	/* Only the next version may wait for promotion: versions stay contiguous. */
	HSM_ENSURE(is_next_version(k, version), HSM_ERR_NOT_FOUND,
	           "key %s has no version %u (its next version is %llu)", k->key_id, version,
	           (unsigned long long)k->primary_version + 1);
	*out = exists ? ST_MATERIAL_REPLACE_PENDING : ST_MATERIAL_INSERT_PENDING;
	return HSM_SUCCESS;
}

hsm_result st_material_to_write(const hsm_version_record *m, bool holds, int64_t valid_to,
                                hsm_version_record *scratch, const hsm_version_record **out)
{
	*out = m;
	if (m->wrapped.len > 0)
		return HSM_SUCCESS;
	HSM_ENSURE(m->valid_to == 0 || (holds && valid_to == m->valid_to), HSM_ERR_CONFLICT,
	           "version %u of key %s no longer holds material expiring then", m->version,
	           m->key_id);
	*scratch = *m; /* shares m's buffers: read only */
	scratch->valid_to = 0; /* an erased material expires no more */
	*out = scratch;
	return HSM_SUCCESS;
}

void st_set_material_fields(hsm_key_record *k, int64_t earliest_valid_to, bool in_use_missing)
{
	k->valid_to = earliest_valid_to;
	if (in_use_missing)
		k->flags |= HSM_KEYFLAG_NO_MATERIAL;
	else
		k->flags &= ~HSM_KEYFLAG_NO_MATERIAL;
}

hsm_result st_check_promote(const hsm_key_record *k, uint32_t version, bool exists,
                            bool holds_material)
{
	HSM_ENSURE(k->state != HSM_KEY_DESTROYED, HSM_ERR_INVALID_STATE,
	           "key %s is destroyed: it gets no new primary version", k->key_id);
	HSM_ENSURE(is_next_version(k, version), HSM_ERR_CONFLICT,
	           "key %s: version %u is not the next version (%llu)", k->key_id, version,
	           (unsigned long long)k->primary_version + 1);
	HSM_ENSURE(exists, HSM_ERR_NOT_FOUND, "key %s has no version %u", k->key_id, version);
	HSM_ENSURE(holds_material, HSM_ERR_INVALID_STATE,
	           "version %u of key %s holds no key material to make primary", version, k->key_id);
	return HSM_SUCCESS;
}

hsm_result st_edit_key(hsm_key_record *rec, const char *key_id, hsm_key_update_fn fn, void *arg,
                       bool new_version)
{
	hsm_key_state before = rec->state;
	if (fn != NULL)
		HSM_GUARD(fn(rec, arg));
	HSM_ASSERT(strcmp(rec->key_id, key_id) == 0); /* fn must not change the key id */
	HSM_GUARD(st_check_transition(before, rec->state, new_version));
	HSM_GUARD(st_fill_empty(&rec->description));
	return st_fill_empty(&rec->policy);
}

hsm_result hsm_store_alias_room(const char *key_id, int64_t others)
{
	HSM_ENSURE(others < HSM_MAX_ALIASES_PER_KEY, HSM_ERR_LIMIT_EXCEEDED,
	           "key %s already has %d aliases, the most allowed", key_id, HSM_MAX_ALIASES_PER_KEY);
	return HSM_SUCCESS;
}

_Static_assert(sizeof(HSM_PKCS11_ID_ALIAS) - 1 == 16, "ST_SQL_PKCS11_ID_NAME compares 16 bytes");

hsm_result st_check_pkcs11_id(const char *key_id, const char *name, const st_vec *others)
{
	hsm_buf id = {0};
	const char *held = NULL;
	if (hsm_pkcs11_id_of_alias(name, &id))
		for (size_t i = 0; held == NULL && i < others->n; i++) {
			const hsm_alias_record *a = st_vec_at(others, i);
			if (hsm_pkcs11_id_of_alias(a->name, &id))
				held = a->name;
		}
	hsm_buf_free(&id);
	HSM_ENSURE(held == NULL, HSM_ERR_VALIDATION, HSM_PKCS11_ID_TAKEN_FMT, key_id, held);
	return HSM_SUCCESS;
}

hsm_result st_check_alias_target(const char *name, const char *target, const char *from)
{
	HSM_ENSURE(target != NULL, HSM_ERR_NOT_FOUND, "alias %s does not exist", name);
	HSM_ENSURE(from == NULL || strcmp(target, from) == 0, HSM_ERR_CONFLICT,
	           "alias %s was moved to another key meanwhile", name);
	return HSM_SUCCESS;
}

hsm_result st_ask_key_state(const hsm_key_state_check *check, const char *key_id,
                            const char *state_name, hsm_key_state *state)
{
	/* A state name the store does not know is a damaged row, not a state to judge. */
	HSM_GUARD(hsm_key_state_parse(state_name, state));
	if (check == NULL || check->fn == NULL)
		return HSM_SUCCESS;
	return check->fn(key_id, *state, check->arg);
}

hsm_result hsm_store_grant_room(const char *key_id, int64_t for_grantee, int64_t for_key)
{
	HSM_ENSURE(for_grantee < HSM_MAX_GRANTS_PER_GRANTEE, HSM_ERR_LIMIT_EXCEEDED,
	           "key %s already holds %d grants for this grantee, the most allowed", key_id,
	           HSM_MAX_GRANTS_PER_GRANTEE);
	HSM_ENSURE(for_key < HSM_MAX_GRANTS_PER_KEY, HSM_ERR_LIMIT_EXCEEDED,
	           "key %s already holds %d grants, the most allowed", key_id, HSM_MAX_GRANTS_PER_KEY);
	return HSM_SUCCESS;
}

hsm_result hsm_store_cert_room(int64_t held)
{
	HSM_ENSURE(held < HSM_MAX_CERTIFICATES, HSM_ERR_LIMIT_EXCEEDED,
	           "the store already holds %d certificates, the most allowed",
	           HSM_MAX_CERTIFICATES);
	return HSM_SUCCESS;
}

hsm_result st_user_taken(const char *name, const char *held)
{
	if (strcmp(name, held) == 0)
		return HSM_FAIL(HSM_ERR_ALREADY_EXISTS, "user %s already exists", name);
	return HSM_FAIL(HSM_ERR_ALREADY_EXISTS,
	                "user %s already exists (user names are unique regardless of case)", held);
}

hsm_result st_fill_empty(char **s)
{
	if (*s == NULL) {
		*s = strdup("");
		HSM_ENSURE(*s != NULL, HSM_ERR_NOMEM, "out of memory");
	}
	return HSM_SUCCESS;
}

/* ---- Approvals' rules (store.h, "Quorum approvals") ----------------------------------------- */

/* Open: Pending and not expired (expiry is checked at each use: nothing marks it in the store). */
static hsm_result check_open(const hsm_approval_record *a, int64_t now)
{
	HSM_ENSURE(a->state == HSM_APPROVAL_PENDING, HSM_ERR_INVALID_STATE, "approval %s is %s",
	           a->id, hsm_approval_state_name(a->state));
	HSM_ENSURE(now < a->expires, HSM_ERR_INVALID_STATE, "approval %s has expired", a->id);
	return HSM_SUCCESS;
}

hsm_result hsm_store_access_key_room(const char *user, int64_t held)
{
	HSM_ENSURE(held < HSM_ACCESS_KEYS_PER_USER, HSM_ERR_LIMIT_EXCEEDED,
	           "user %s already has %d active access keys, the most one user may hold; revoke "
	           "one first (hsmctl access-key revoke ID)",
	           user, HSM_ACCESS_KEYS_PER_USER);
	return HSM_SUCCESS;
}

hsm_result st_approval_fresh(const hsm_approval_record *a, int64_t held,
                             hsm_approval_record *out)
{
	HSM_ENSURE(held < HSM_APPROVALS_OPEN_PER_USER, HSM_ERR_LIMIT_EXCEEDED,
	           "%s already has %d approval requests open, the most one user may hold; cancel "
	           "one (hsmctl approval cancel ID) or wait for one to be used or to expire",
	           a->requester, HSM_APPROVALS_OPEN_PER_USER);
	hsm_approval_record r = {0};
	memcpy(r.id, a->id, sizeof(r.id));
	memcpy(r.fingerprint, a->fingerprint, sizeof(r.fingerprint));
	memcpy(r.operation, a->operation, sizeof(r.operation));
	memcpy(r.requester, a->requester, sizeof(r.requester));
	r.state = HSM_APPROVAL_PENDING;
	r.required = a->required;
	r.created = a->created;
	r.expires = a->expires;
	r.request = strdup(a->request);
	HSM_ENSURE(r.request != NULL, HSM_ERR_NOMEM, "out of memory");
	*out = r;
	return HSM_SUCCESS;
}

hsm_result st_approval_add(hsm_approval_record *a, const char *approver)
{
	HSM_ENSURE(a->n_approvers < HSM_APPROVERS_MAX, HSM_ERR_STORE,
	           "store record is corrupt: approval %s has too many approvers", a->id);
	HSM_ENSURE(strlen(approver) < sizeof(a->approvers[0]), HSM_ERR_STORE,
	           "store record is corrupt: approver name longer than its field");
	memcpy(a->approvers[a->n_approvers], approver, strlen(approver) + 1);
	a->n_approvers++;
	return HSM_SUCCESS;
}

hsm_result st_approval_page_find(const st_vec *page, size_t *at, const char *id,
                                 hsm_approval_record **out)
{
	for (; *at < page->n; (*at)++) {
		hsm_approval_record *a = st_vec_at(page, *at);
		if (strcmp(a->id, id) == 0) {
			*out = a;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_STORE, "store read an approver of an approval outside the page");
}

hsm_result st_approval_approve(hsm_approval_record *a, const char *approver, int64_t now)
{
	HSM_GUARD(check_open(a, now));
	/* One custodian under any spelling of the name (user names are ASCII). */
	for (uint32_t i = 0; i < a->n_approvers; i++)
		HSM_ENSURE(strcasecmp(a->approvers[i], approver) != 0, HSM_ERR_ALREADY_EXISTS,
		           "%s already approved approval %s", a->approvers[i], a->id);
	HSM_ENSURE(a->n_approvers < HSM_APPROVERS_MAX, HSM_ERR_LIMIT_EXCEEDED,
	           "approval %s already holds %d approvers, the most allowed", a->id,
	           HSM_APPROVERS_MAX);
	return st_approval_add(a, approver);
}

hsm_result st_approval_close(hsm_approval_record *a, hsm_approval_state to, const char *by,
                             int64_t now)
{
	HSM_GUARD(check_open(a, now));
	HSM_ENSURE(to != HSM_APPROVAL_USED || a->n_approvers >= a->required, HSM_ERR_INVALID_STATE,
	           "approval %s holds %u of the %u approvals it requires", a->id, a->n_approvers,
	           a->required);
	HSM_ENSURE(strlen(by) < sizeof(a->closed_by), HSM_ERR_INTERNAL, "closing user too long");
	a->state = to;
	a->closed = now;
	memcpy(a->closed_by, by, strlen(by) + 1);
	return HSM_SUCCESS;
}

hsm_result st_approval_reopen(hsm_approval_record *a)
{
	HSM_ENSURE(a->state == HSM_APPROVAL_USED, HSM_ERR_INVALID_STATE,
	           "approval %s is %s: only a used approval reopens", a->id,
	           hsm_approval_state_name(a->state));
	a->state = HSM_APPROVAL_PENDING;
	a->closed = 0;
	a->closed_by[0] = '\0';
	return HSM_SUCCESS;
}
