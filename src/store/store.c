/*
 * store.c - the public store functions: argument checks, then dispatch to
 * the backend's ops table (store_impl.h); plus the record helpers and the
 * enumeration name tables.
 */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_impl.h"

/* ---- Enumeration names ------------------------------------------------------ */

/* KMS KeyState values (AWS KMS API reference, KeyMetadata). */
static const char *const key_state_names[HSM_KEY_STATE_COUNT] = {
	[HSM_KEY_ENABLED] = "Enabled",
	[HSM_KEY_DISABLED] = "Disabled",
	[HSM_KEY_PENDING_DELETION] = "PendingDeletion",
	[HSM_KEY_DESTROYED] = "Destroyed",
	[HSM_KEY_PENDING_IMPORT] = "PendingImport",
};

static const char *const role_names[HSM_ROLE_COUNT] = {
	[HSM_ROLE_CRYPTO_OFFICER] = "crypto-officer",
	[HSM_ROLE_CRYPTO_USER] = "crypto-user",
	[HSM_ROLE_AUDITOR] = "auditor",
	[HSM_ROLE_CUSTODIAN] = "custodian",
};

/* KMS Origin values (KeyMetadata.Origin). */
static const char *const origin_names[] = {
	[HSM_ORIGIN_AWS_KMS] = "AWS_KMS",
	[HSM_ORIGIN_EXTERNAL] = "EXTERNAL",
};

/* KMS RotationType values (ListKeyRotations); NONE marks a key's first version. */
static const char *const rotation_type_names[] = {
	[HSM_ROTATION_NONE] = "NONE",
	[HSM_ROTATION_AUTOMATIC] = "AUTOMATIC",
	[HSM_ROTATION_ON_DEMAND] = "ON_DEMAND",
};

/* States of a quorum approval (store.h, "Quorum approvals"). */
static const char *const approval_state_names[HSM_APPROVAL_STATE_COUNT] = {
	[HSM_APPROVAL_PENDING] = "Pending",
	[HSM_APPROVAL_USED] = "Used",
	[HSM_APPROVAL_DENIED] = "Denied",
	[HSM_APPROVAL_CANCELLED] = "Cancelled",
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static hsm_result name_parse(const char *const *names, size_t n, const char *name,
                             const char *what, unsigned *out)
{
	HSM_ASSERT(name != NULL && out != NULL);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(names[i], name) == 0) {
			*out = (unsigned)i;
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION, "unknown %s '%.64s'", what, name);
}

const char *hsm_key_state_name(hsm_key_state s)
{
	HSM_ASSERT((unsigned)s < COUNT_OF(key_state_names));
	return key_state_names[s];
}

const char *hsm_role_name(hsm_role r)
{
	HSM_ASSERT((unsigned)r < COUNT_OF(role_names));
	return role_names[r];
}

const char *hsm_key_origin_name(hsm_key_origin o)
{
	HSM_ASSERT((unsigned)o < COUNT_OF(origin_names));
	return origin_names[o];
}

const char *hsm_rotation_type_name(hsm_rotation_type t)
{
	HSM_ASSERT((unsigned)t < COUNT_OF(rotation_type_names));
	return rotation_type_names[t];
}

const char *hsm_approval_state_name(hsm_approval_state s)
{
	HSM_ASSERT((unsigned)s < COUNT_OF(approval_state_names));
	return approval_state_names[s];
}

hsm_result hsm_role_parse(const char *name, hsm_role *out)
{
	unsigned v = 0; /* set on success; gcc -O3 cannot tell */
	HSM_GUARD(name_parse(role_names, COUNT_OF(role_names), name,
	                     "role (expected crypto-officer, crypto-user, auditor or custodian)", &v));
	*out = (hsm_role)v;
	return HSM_SUCCESS;
}

hsm_result hsm_roles_format(unsigned roles, char *out, size_t cap)
{
	size_t used = 0;
	HSM_ENSURE(cap > 0, HSM_ERR_INTERNAL, "no room for roles");
	out[0] = '\0';
	for (unsigned r = 0; r < HSM_ROLE_COUNT; r++) {
		if ((roles & (1U << r)) == 0)
			continue;
		int n = snprintf(out + used, cap - used, "%s%s", used ? "," : "",
		                 hsm_role_name((hsm_role)r));
		HSM_ENSURE(n > 0 && (size_t)n < cap - used, HSM_ERR_INTERNAL, "roles do not fit");
		used += (size_t)n;
	}
	return HSM_SUCCESS;
}

hsm_result hsm_roles_parse(const char *text, unsigned *out)
{
	char buf[128];
	unsigned roles = 0;
	HSM_GUARD(hsm_strcpy(buf, sizeof(buf), text));
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t != NULL;
	     t = strtok_r(NULL, ",", &save)) {
		hsm_role r;
		HSM_GUARD(hsm_role_parse(t, &r));
		roles |= 1U << r;
	}
	HSM_ENSURE(roles != 0, HSM_ERR_VALIDATION, "at least one role is required");
	*out = roles;
	return HSM_SUCCESS;
}

hsm_result hsm_key_state_parse(const char *name, hsm_key_state *out)
{
	unsigned v = 0; /* set on success; gcc -O3 cannot tell */
	HSM_GUARD(name_parse(key_state_names, COUNT_OF(key_state_names), name, "key state", &v));
	*out = (hsm_key_state)v;
	return HSM_SUCCESS;
}

hsm_result hsm_key_origin_parse(const char *name, hsm_key_origin *out)
{
	unsigned v = 0; /* set on success; gcc -O3 cannot tell */
	HSM_GUARD(name_parse(origin_names, COUNT_OF(origin_names), name, "key origin", &v));
	*out = (hsm_key_origin)v;
	return HSM_SUCCESS;
}

hsm_result hsm_rotation_type_parse(const char *name, hsm_rotation_type *out)
{
	unsigned v = 0; /* set on success; gcc -O3 cannot tell */
	HSM_GUARD(name_parse(rotation_type_names, COUNT_OF(rotation_type_names), name,
	                     "rotation type", &v));
	*out = (hsm_rotation_type)v;
	return HSM_SUCCESS;
}

hsm_result hsm_approval_state_parse(const char *name, hsm_approval_state *out)
{
	unsigned v = 0; /* set on success; gcc -O3 cannot tell */
	HSM_GUARD(name_parse(approval_state_names, COUNT_OF(approval_state_names), name,
	                     "approval state", &v));
	*out = (hsm_approval_state)v;
	return HSM_SUCCESS;
}

/* ---- Records ------------------------------------------------------------------ */

void hsm_key_record_clear(hsm_key_record *r)
{
	if (r == NULL)
		return;
	free(r->description);
	free(r->policy);
	memset(r, 0, sizeof(*r));
}

void hsm_version_record_clear(hsm_version_record *r)
{
	if (r == NULL)
		return;
	hsm_buf_free(&r->wrapped);
	hsm_buf_free(&r->public_der);
	hsm_buf_free(&r->digest);
	memset(r, 0, sizeof(*r));
}

void hsm_access_key_record_clear(hsm_access_key_record *r)
{
	if (r == NULL)
		return;
	hsm_buf_free(&r->wrapped_secret);
	memset(r, 0, sizeof(*r));
}

void hsm_grant_record_clear(hsm_grant_record *r)
{
	if (r == NULL)
		return;
	free(r->constraints);
	memset(r, 0, sizeof(*r));
}

void hsm_cert_record_clear(hsm_cert_record *r)
{
	if (r == NULL)
		return;
	hsm_buf_free(&r->object_id);
	hsm_buf_free(&r->der);
	memset(r, 0, sizeof(*r));
}

void hsm_approval_record_clear(hsm_approval_record *r)
{
	if (r == NULL)
		return;
	free(r->request);
	memset(r, 0, sizeof(*r));
}

static hsm_result dup_or_null(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL)
		return HSM_SUCCESS;
	*out = strdup(s);
	HSM_ENSURE(*out != NULL, HSM_ERR_NOMEM, "out of memory");
	return HSM_SUCCESS;
}

hsm_result hsm_key_record_copy(hsm_key_record *dst, const hsm_key_record *src)
{
	HSM_ASSERT(dst != NULL && src != NULL);
	hsm_result res = HSM_SUCCESS;
	hsm_key_record tmp = *src;
	tmp.description = NULL;
	tmp.policy = NULL;
	HSM_TRY(dup_or_null(src->description, &tmp.description));
	HSM_TRY(dup_or_null(src->policy, &tmp.policy));
	*dst = tmp;
	return HSM_SUCCESS;
out:
	hsm_key_record_clear(&tmp);
	return res;
}

/* ---- Argument checks ---------------------------------------------------------- */

/* A string that must be non-empty and fit a field of cap bytes (with the NUL). */
static hsm_result check_name(const char *s, size_t cap, const char *what)
{
	HSM_ASSERT(s != NULL);
	size_t n = strnlen(s, cap);
	HSM_ENSURE(n > 0, HSM_ERR_VALIDATION, "%s must not be empty", what);
	HSM_ENSURE(n < cap, HSM_ERR_VALIDATION, "%s is longer than %zu bytes", what, cap - 1);
	return HSM_SUCCESS;
}

/* A string that may be empty but must fit a field of cap bytes (with the NUL). */
static hsm_result check_fits(const char *s, size_t cap, const char *what)
{
	HSM_ASSERT(s != NULL);
	HSM_ENSURE(strnlen(s, cap) < cap, HSM_ERR_VALIDATION, "%s is longer than %zu bytes", what,
	           cap - 1);
	return HSM_SUCCESS;
}

/*
 * Identifiers used for lookups: one that cannot fit the field cannot exist,
 * so it is reported as absent rather than malformed.
 */
static hsm_result check_lookup(const char *s, size_t cap, const char *what)
{
	HSM_ASSERT(s != NULL);
	size_t n = strnlen(s, cap);
	HSM_ENSURE(n > 0, HSM_ERR_VALIDATION, "%s must not be empty", what);
	HSM_ENSURE(n < cap, HSM_ERR_NOT_FOUND, "%s does not exist", what);
	return HSM_SUCCESS;
}

#define KEY_ID_CAP (HSM_UUID_STRLEN + 1)

/* Whether s is exactly len lowercase hex digits (reads at most len + 1 bytes of it). */
static bool is_lower_hex(const char *s, size_t len)
{
	HSM_ASSERT(s != NULL);
	size_t n = strnlen(s, len + 1);
	bool ok = n == len;
	for (size_t i = 0; ok && i < n; i++)
		ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
	return ok;
}

static hsm_result check_limit(size_t limit)
{
	HSM_ENSURE(limit >= 1 && limit <= HSM_STORE_LIST_MAX, HSM_ERR_VALIDATION,
	           "limit must be between 1 and %d", HSM_STORE_LIST_MAX);
	return HSM_SUCCESS;
}

static const char *cursor_or_empty(const char *after)
{
	return after != NULL ? after : "";
}

static hsm_result check_key_record(const hsm_key_record *k)
{
	HSM_ASSERT(k != NULL);
	HSM_GUARD(check_name(k->key_id, sizeof(k->key_id), "key id"));
	HSM_ASSERT((unsigned)k->spec < HSM_SPEC_COUNT && (unsigned)k->usage < HSM_USAGE_COUNT);
	HSM_ASSERT((unsigned)k->origin < COUNT_OF(origin_names));
	HSM_ASSERT((unsigned)k->state < HSM_KEY_STATE_COUNT);
	HSM_ENSURE(k->primary_version >= 1, HSM_ERR_VALIDATION, "key versions start at 1");
	return HSM_SUCCESS;
}

static hsm_result check_version_record(const hsm_version_record *v)
{
	HSM_ASSERT(v != NULL);
	HSM_GUARD(check_name(v->key_id, sizeof(v->key_id), "key id"));
	HSM_ASSERT((unsigned)v->rotation_type < COUNT_OF(rotation_type_names));
	HSM_ENSURE(v->version >= 1, HSM_ERR_VALIDATION, "key versions start at 1");
	/* 0 means "never": a negative expiry would pass for the earliest of all (store.h, set_material). */
	HSM_ENSURE(v->valid_to >= 0, HSM_ERR_VALIDATION, "key material cannot expire before 1970");
	HSM_GUARD(check_fits(v->description, sizeof(v->description), "key material description"));
	return HSM_SUCCESS;
}

static hsm_result check_user_record(const hsm_user_record *u)
{
	HSM_ASSERT(u != NULL);
	HSM_GUARD(check_name(u->name, sizeof(u->name), "user name"));
	HSM_ASSERT(u->roles != 0 && (u->roles >> HSM_ROLE_COUNT) == 0);
	return HSM_SUCCESS;
}

/* ---- Opening -------------------------------------------------------------------- */

static const struct backend {
	const char *prefix;
	bool whole; /* the backend gets the whole location, prefix included */
	hsm_store_backend_open_fn open;
} backends[] = {
	{"sqlite:", false, hsm_store_sqlite_open},
	/* libpq takes the URI as it is (its own two spellings of the scheme). */
	{"postgresql://", true, hsm_store_pg_open},
	{"postgres://", true, hsm_store_pg_open},
};

hsm_result hsm_store_open(const char *location, hsm_store **out)
{
	HSM_ASSERT(location != NULL && out != NULL);
	HSM_ENSURE(*location != '\0', HSM_ERR_VALIDATION, "the store location is empty");
	for (size_t i = 0; i < COUNT_OF(backends); i++) {
		if (hsm_str_has_prefix(location, backends[i].prefix)) {
			const char *rest = location + strlen(backends[i].prefix);
			HSM_ENSURE(*rest != '\0', HSM_ERR_VALIDATION, "the store location is empty");
			return backends[i].open(backends[i].whole ? location : rest, out);
		}
	}
	/* Anything shaped like a URL names a backend this build does not have. */
	HSM_ENSURE(strstr(location, "://") == NULL, HSM_ERR_VALIDATION,
	           "unsupported store location (expected a directory, sqlite:DIR or "
	           "postgresql://...)");
	return hsm_store_sqlite_open(location, out);
}

void hsm_store_close(hsm_store *s)
{
	if (s != NULL)
		s->ops->close(s);
}

int hsm_store_schema_version(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	return s->ops->schema_version(s);
}

/* ---- Metadata -------------------------------------------------------------------- */

#define META_NAME_CAP 256

hsm_result hsm_store_meta_get(hsm_store *s, const char *name, hsm_buf *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_lookup(name, META_NAME_CAP, "metadata name"));
	return s->ops->meta_get(s, name, out);
}

hsm_result hsm_store_meta_put(hsm_store *s, size_t n, const char *const names[],
                              const hsm_buf *const values[])
{
	HSM_ASSERT(s != NULL);
	if (n == 0)
		return HSM_SUCCESS;
	HSM_ASSERT(names != NULL && values != NULL);
	for (size_t i = 0; i < n; i++) {
		HSM_GUARD(check_name(names[i], META_NAME_CAP, "metadata name"));
		HSM_ASSERT(values[i] != NULL);
	}
	return s->ops->meta_put(s, n, names, values);
}

/* ---- Keys ---------------------------------------------------------------------------- */

hsm_result hsm_store_key_create(hsm_store *s, const hsm_key_record *key,
                                const hsm_version_record *first)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_key_record(key));
	HSM_GUARD(check_version_record(first));
	HSM_ENSURE(strcmp(key->key_id, first->key_id) == 0, HSM_ERR_VALIDATION,
	           "the first version belongs to another key");
	HSM_ENSURE(first->version == key->primary_version, HSM_ERR_VALIDATION,
	           "the first version must be the key's primary version");
	HSM_ENSURE(key->state != HSM_KEY_DESTROYED, HSM_ERR_INVALID_STATE,
	           "a key cannot be created destroyed");
	return s->ops->key_create(s, key, first);
}

hsm_result hsm_store_key_get(hsm_store *s, const char *key_id, hsm_key_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->key_get(s, key_id, out);
}

hsm_result hsm_store_key_update(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
                                const hsm_version_record *add_version, hsm_key_record *after)
{
	HSM_ASSERT(s != NULL && fn != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	if (add_version != NULL) {
		HSM_GUARD(check_version_record(add_version));
		HSM_ENSURE(strcmp(add_version->key_id, key_id) == 0, HSM_ERR_VALIDATION,
		           "the new version belongs to another key");
	}
	return s->ops->key_update(s, key_id, fn, arg, add_version, after);
}

hsm_result hsm_store_key_destroy(hsm_store *s, const char *key_id, int64_t now)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->key_destroy(s, key_id, now);
}

hsm_result hsm_store_key_set_material(hsm_store *s, const char *key_id, hsm_key_update_fn fn,
                                      void *arg, const hsm_version_record *material,
                                      hsm_key_record *after)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(check_version_record(material));
	HSM_ENSURE(strcmp(material->key_id, key_id) == 0, HSM_ERR_VALIDATION,
	           "the material belongs to another key");
	return s->ops->key_set_material(s, key_id, fn, arg, material, after);
}

hsm_result hsm_store_key_promote(hsm_store *s, const char *key_id, uint32_t version, int64_t now,
                                 hsm_rotation_type type, hsm_key_update_fn fn, void *arg,
                                 hsm_key_record *after)
{
	HSM_ASSERT(s != NULL);
	HSM_ASSERT((unsigned)type < COUNT_OF(rotation_type_names));
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_ENSURE(version >= 1, HSM_ERR_VALIDATION, "key versions start at 1");
	return s->ops->key_promote(s, key_id, version, now, type, fn, arg, after);
}

hsm_result hsm_store_key_list(hsm_store *s, const char *after, size_t limit,
                              bool include_destroyed, hsm_key_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(check_limit(limit));
	return s->ops->key_list(s, cursor_or_empty(after), limit, include_destroyed, cb, arg,
	                        truncated);
}

hsm_result hsm_store_jwt_key_list(hsm_store *s, const char *after, size_t limit, hsm_key_cb cb,
                                  void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(check_limit(limit));
	return s->ops->jwt_key_list(s, cursor_or_empty(after), limit, cb, arg, truncated);
}

hsm_result hsm_store_key_count(hsm_store *s, uint64_t *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	return s->ops->key_count(s, out);
}

hsm_result hsm_store_lead(hsm_store *s, bool want, bool *leading)
{
	HSM_ASSERT(s != NULL && leading != NULL);
	*leading = false;
	return s->ops->lead(s, want, leading);
}

hsm_result hsm_store_snapshot(hsm_store *s, const char *path)
{
	HSM_ASSERT(s != NULL && path != NULL);
	HSM_ENSURE(*path != '\0', HSM_ERR_VALIDATION, "snapshot path is empty");
	return s->ops->snapshot(s, path);
}

hsm_result hsm_store_rekey(hsm_store *s, const hsm_store_rekey_req *req,
                           hsm_store_rekey_counts *counts)
{
	HSM_ASSERT(s != NULL && req != NULL && req->fn != NULL);
	HSM_ASSERT(req->n_expect == 0 || (req->expect_names != NULL && req->expect_values != NULL));
	HSM_ASSERT(req->n_meta == 0 || (req->meta_names != NULL && req->meta_values != NULL));
	for (size_t i = 0; i < req->n_expect; i++) {
		HSM_GUARD(check_name(req->expect_names[i], META_NAME_CAP, "metadata name"));
		HSM_ASSERT(req->expect_values[i] != NULL);
	}
	for (size_t i = 0; i < req->n_meta; i++) {
		HSM_GUARD(check_name(req->meta_names[i], META_NAME_CAP, "metadata name"));
		HSM_ASSERT(req->meta_values[i] != NULL);
	}
	hsm_store_rekey_counts c = {0};
	HSM_GUARD(s->ops->rekey(s, req, &c));
	if (counts != NULL)
		*counts = c;
	return HSM_SUCCESS;
}

hsm_result st_rekey_expect(const hsm_store_rekey_req *req, size_t i, bool found,
                           const hsm_buf *value)
{
	const hsm_buf *want = req->expect_values[i];
	HSM_ENSURE(found && value->len == want->len &&
	               hsm_ct_equal(value->data, want->data, want->len),
	           HSM_ERR_CONFLICT,
	           "the store's master key changed meanwhile (metadata %s differs): nothing was "
	           "changed",
	           req->expect_names[i]);
	return HSM_SUCCESS;
}

void st_rekey_row_clear(void *item)
{
	st_rekey_row *row = item;
	hsm_buf_free(&row->wrapped);
}

hsm_result st_rekey_wrap(const hsm_store_rekey_req *req, hsm_wrapped_kind kind,
                         const st_rekey_row *row, hsm_buf *out)
{
	hsm_wrapped_item item = {.kind = kind,
	                         .id = row->id,
	                         .version = row->version,
	                         .spec = row->spec,
	                         .usage = row->usage,
	                         .wrapped = &row->wrapped};
	out->len = 0;
	HSM_GUARD(req->fn(&item, out, req->arg));
	HSM_ENSURE(out->len > 0, HSM_ERR_INTERNAL, "re-wrapping produced nothing");
	return HSM_SUCCESS;
}

hsm_result st_rekey_kind(void *conn, const hsm_store_rekey_req *req, hsm_wrapped_kind kind,
                         st_rekey_read_fn read_page, st_rekey_write_fn write_row, uint64_t *count)
{
	hsm_result res = HSM_SUCCESS;
	st_rekey_row last = {0};
	hsm_buf wrapped = {0};
	st_vec page;
	st_vec_init(&page, sizeof(st_rekey_row));
	for (;;) {
		HSM_TRY(read_page(conn, kind, &last, &page));
		for (size_t i = 0; i < page.n; i++) {
			const st_rekey_row *row = st_vec_at(&page, i);
			HSM_TRY(st_rekey_wrap(req, kind, row, &wrapped));
			HSM_TRY(write_row(conn, kind, row, &wrapped));
			(*count)++;
		}
		if (page.n < ST_REKEY_PAGE)
			break;
		const st_rekey_row *end = st_vec_at(&page, page.n - 1);
		memcpy(last.id, end->id, sizeof(last.id));
		last.version = end->version;
		st_vec_free(&page, st_rekey_row_clear);
		st_vec_init(&page, sizeof(st_rekey_row));
	}
out:
	st_vec_free(&page, st_rekey_row_clear);
	hsm_buf_free(&wrapped);
	return res;
}

hsm_result hsm_store_keys_due(hsm_store *s, int64_t now, size_t limit, hsm_key_cb cb, void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	HSM_GUARD(check_limit(limit));
	return s->ops->keys_due(s, now, limit, cb, arg);
}

hsm_result hsm_store_keys_due_count(hsm_store *s, int64_t horizon, int64_t overdue_before,
                                    hsm_due_counts *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	*out = (hsm_due_counts){0, 0, 0, 0};
	return s->ops->keys_due_count(s, horizon, overdue_before, out);
}

/* ---- Key versions ------------------------------------------------------------------------ */

hsm_result hsm_store_version_get(hsm_store *s, const char *key_id, uint32_t version,
                                 hsm_version_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_ENSURE(version >= 1, HSM_ERR_NOT_FOUND, "key version 0 does not exist");
	return s->ops->version_get(s, key_id, version, out);
}

hsm_result hsm_store_version_list(hsm_store *s, const char *key_id, hsm_version_cb cb, void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->version_list(s, key_id, cb, arg);
}

/* ---- Aliases ------------------------------------------------------------------------------ */

#define ALIAS_CAP (HSM_ALIAS_MAX + 1)

hsm_result hsm_store_alias_create(hsm_store *s, const char *name, const char *key_id, int64_t now)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_name(name, ALIAS_CAP, "alias name"));
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->alias_create(s, name, key_id, now);
}

hsm_result hsm_store_alias_update(hsm_store *s, const char *name, const char *key_id, int64_t now)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(name, ALIAS_CAP, "alias"));
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->alias_update(s, name, key_id, now);
}

hsm_result hsm_store_alias_delete(hsm_store *s, const char *name)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(name, ALIAS_CAP, "alias"));
	return s->ops->alias_delete(s, name);
}

hsm_result hsm_store_alias_get(hsm_store *s, const char *name, hsm_alias_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_lookup(name, ALIAS_CAP, "alias"));
	return s->ops->alias_get(s, name, out);
}

hsm_result hsm_store_alias_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                                hsm_alias_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(check_limit(limit));
	if (key_id != NULL)
		HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->alias_list(s, key_id, cursor_or_empty(after), limit, cb, arg, truncated);
}

hsm_result hsm_store_alias_delete_for_key(hsm_store *s, const char *key_id)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->alias_delete_for_key(s, key_id);
}

/* ---- Tags ---------------------------------------------------------------------------------- */

hsm_result hsm_store_tags_put(hsm_store *s, const char *key_id, size_t n, const hsm_tag tags[])
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	if (n == 0)
		return HSM_SUCCESS;
	HSM_ASSERT(tags != NULL);
	HSM_ENSURE(n <= HSM_MAX_TAGS_PER_KEY, HSM_ERR_LIMIT_EXCEEDED,
	           "a key holds at most %d tags", HSM_MAX_TAGS_PER_KEY);
	for (size_t i = 0; i < n; i++) {
		HSM_GUARD(check_name(tags[i].key, sizeof(tags[i].key), "tag key"));
		HSM_ENSURE(strnlen(tags[i].value, sizeof(tags[i].value)) < sizeof(tags[i].value),
		           HSM_ERR_VALIDATION, "tag value is too long");
	}
	return s->ops->tags_put(s, key_id, n, tags);
}

hsm_result hsm_store_tags_remove(hsm_store *s, const char *key_id, size_t n,
                                 const char *const keys[])
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	if (n == 0)
		return HSM_SUCCESS;
	HSM_ASSERT(keys != NULL);
	for (size_t i = 0; i < n; i++)
		HSM_ASSERT(keys[i] != NULL);
	return s->ops->tags_remove(s, key_id, n, keys);
}

hsm_result hsm_store_tags_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                               hsm_tag_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(check_limit(limit));
	return s->ops->tags_list(s, key_id, cursor_or_empty(after), limit, cb, arg, truncated);
}

/* ---- Grants ---------------------------------------------------------------------------------- */

#define GRANT_PRINCIPAL_CAP (HSM_GRANT_PRINCIPAL_MAX + 1)

/*
 * Grant ids have one shape (64 lowercase hex digits, store.h), so any other
 * text is malformed rather than absent, in lookups too: the KMS layer tells
 * an invalid grant id from an unknown one.
 */
static hsm_result check_grant_id(const char *id)
{
	HSM_ENSURE(is_lower_hex(id, HSM_GRANT_ID_LEN), HSM_ERR_VALIDATION,
	           "a grant id is %d lowercase hex digits", HSM_GRANT_ID_LEN);
	return HSM_SUCCESS;
}

static hsm_result check_grant_record(const hsm_grant_record *g)
{
	HSM_ASSERT(g != NULL);
	HSM_GUARD(check_grant_id(g->grant_id));
	HSM_GUARD(check_lookup(g->key_id, sizeof(g->key_id), "key"));
	HSM_GUARD(check_fits(g->name, sizeof(g->name), "grant name"));
	HSM_GUARD(check_name(g->grantee, sizeof(g->grantee), "grantee principal"));
	HSM_GUARD(check_fits(g->retiring, sizeof(g->retiring), "retiring principal"));
	HSM_ENSURE(g->operations != 0, HSM_ERR_VALIDATION, "a grant allows at least one operation");
	return HSM_SUCCESS;
}

hsm_result hsm_store_grant_create(hsm_store *s, hsm_grant_record *g, bool *existed)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_grant_record(g));
	bool found = false;
	HSM_GUARD(s->ops->grant_create(s, g, &found));
	if (existed != NULL)
		*existed = found;
	return HSM_SUCCESS;
}

hsm_result hsm_store_grant_get(hsm_store *s, const char *key_id, const char *grant_id,
                               hsm_grant_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(check_grant_id(grant_id));
	return s->ops->grant_get(s, key_id, grant_id, out);
}

hsm_result hsm_store_grant_delete(hsm_store *s, const char *key_id, const char *grant_id)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(check_grant_id(grant_id));
	return s->ops->grant_delete(s, key_id, grant_id);
}

hsm_result hsm_store_grant_list(hsm_store *s, const char *key_id, const char *grantee,
                                const char *after, size_t limit, hsm_grant_cb cb, void *arg,
                                bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(check_lookup(key_id, KEY_ID_CAP, "key"));
	if (grantee != NULL)
		HSM_GUARD(check_name(grantee, GRANT_PRINCIPAL_CAP, "grantee principal"));
	HSM_GUARD(check_limit(limit));
	return s->ops->grant_list(s, key_id, grantee, cursor_or_empty(after), limit, cb, arg,
	                          truncated);
}

hsm_result hsm_store_grant_list_retiring(hsm_store *s, const char *retiring, const char *after,
                                         size_t limit, hsm_grant_cb cb, void *arg,
                                         bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(check_name(retiring, GRANT_PRINCIPAL_CAP, "retiring principal"));
	HSM_GUARD(check_limit(limit));
	return s->ops->grant_list_retiring(s, retiring, cursor_or_empty(after), limit, cb, arg,
	                                   truncated);
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
	HSM_GUARD(check_lookup(name, USER_CAP, "user"));
	return s->ops->user_get(s, name, out);
}

hsm_result hsm_store_user_put(hsm_store *s, const hsm_user_record *u)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_user_record(u));
	return s->ops->user_put(s, u);
}

hsm_result hsm_store_user_auth_result(hsm_store *s, const char *name, bool success,
                                      uint32_t lock_after, hsm_user_record *out)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(name, USER_CAP, "user"));
	return s->ops->user_auth_result(s, name, success, lock_after, out);
}

hsm_result hsm_store_user_list(hsm_store *s, hsm_user_cb cb, void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	return s->ops->user_list(s, cb, arg);
}

hsm_result hsm_store_access_key_create(hsm_store *s, const hsm_access_key_record *k)
{
	HSM_ASSERT(s != NULL && k != NULL);
	HSM_GUARD(check_name(k->access_key_id, sizeof(k->access_key_id), "access key id"));
	HSM_GUARD(check_lookup(k->user, sizeof(k->user), "user"));
	return s->ops->access_key_create(s, k);
}

hsm_result hsm_store_access_key_get(hsm_store *s, const char *access_key_id,
                                    hsm_access_key_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(check_lookup(access_key_id, ACCESS_KEY_CAP, "access key"));
	return s->ops->access_key_get(s, access_key_id, out);
}

hsm_result hsm_store_access_key_set_active(hsm_store *s, const char *access_key_id, bool active)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_lookup(access_key_id, ACCESS_KEY_CAP, "access key"));
	return s->ops->access_key_set_active(s, access_key_id, active);
}

hsm_result hsm_store_access_key_list(hsm_store *s, const char *user, hsm_access_key_cb cb,
                                     void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	if (user != NULL)
		HSM_GUARD(check_lookup(user, USER_CAP, "user"));
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
	HSM_GUARD(check_fits(c->label, sizeof(c->label), "certificate label"));
	HSM_ENSURE(c->object_id.len <= HSM_CERT_OBJECT_ID_MAX, HSM_ERR_VALIDATION,
	           "a certificate's object id (CKA_ID) is longer than %d bytes",
	           HSM_CERT_OBJECT_ID_MAX);
	HSM_ENSURE(c->der.len > 0, HSM_ERR_VALIDATION, "a certificate needs its DER bytes");
	HSM_ENSURE(c->der.len <= HSM_CERT_DER_MAX, HSM_ERR_VALIDATION,
	           "a certificate is longer than %d bytes of DER", HSM_CERT_DER_MAX);
	HSM_GUARD(check_fits(c->creator, sizeof(c->creator), "certificate creator"));
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
	HSM_GUARD(check_limit(limit));
	const hsm_cert_match all = {NULL, NULL};
	return s->ops->cert_list(s, &all, cursor_or_empty(after), limit, cb, arg, truncated);
}

hsm_result hsm_store_cert_find(hsm_store *s, const hsm_cert_match *m, const char *after,
                               size_t limit, hsm_cert_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && m != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(check_limit(limit));
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
	return s->ops->cert_list(s, m, cursor_or_empty(after), limit, cb, arg, truncated);
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
	HSM_ENSURE(is_lower_hex(id, HSM_APPROVAL_ID_LEN), HSM_ERR_NOT_FOUND,
	           "approval %.*s does not exist", HSM_APPROVAL_ID_LEN, id);
	return HSM_SUCCESS;
}

static hsm_result check_fingerprint(const char *fingerprint)
{
	HSM_ENSURE(is_lower_hex(fingerprint, HSM_APPROVAL_FINGERPRINT_LEN), HSM_ERR_VALIDATION,
	           "an approval fingerprint is %d lowercase hex digits",
	           HSM_APPROVAL_FINGERPRINT_LEN);
	return HSM_SUCCESS;
}

static hsm_result check_approval_record(const hsm_approval_record *a)
{
	HSM_ASSERT(a != NULL);
	HSM_ENSURE(is_lower_hex(a->id, HSM_APPROVAL_ID_LEN), HSM_ERR_VALIDATION,
	           "an approval id is %d lowercase hex digits", HSM_APPROVAL_ID_LEN);
	HSM_GUARD(check_fingerprint(a->fingerprint));
	HSM_GUARD(check_name(a->operation, sizeof(a->operation), "approval operation"));
	HSM_GUARD(check_name(a->requester, sizeof(a->requester), "approval requester"));
	HSM_ENSURE(a->required >= 1 && a->required <= HSM_APPROVERS_MAX, HSM_ERR_VALIDATION,
	           "an approval requires between 1 and %d approvers", HSM_APPROVERS_MAX);
	HSM_ENSURE(a->expires > a->created, HSM_ERR_VALIDATION,
	           "an approval must expire after it is created");
	HSM_ENSURE(a->request != NULL, HSM_ERR_VALIDATION, "an approval needs its request");
	HSM_ENSURE(strnlen(a->request, HSM_APPROVAL_REQUEST_MAX + 1) <= HSM_APPROVAL_REQUEST_MAX,
	           HSM_ERR_VALIDATION, "an approval's request is longer than %d bytes",
	           HSM_APPROVAL_REQUEST_MAX);
	return HSM_SUCCESS;
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
	HSM_GUARD(check_name(approver, USER_CAP, "approver"));
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
		HSM_GUARD(check_fits(by, USER_CAP, "closing user"));
	else
		HSM_GUARD(check_name(by, USER_CAP, "closing user"));
	HSM_GUARD(check_approval_id(id));
	return s->ops->approval_close(s, id, to, to == HSM_APPROVAL_USED ? "" : by, now, out);
}

hsm_result hsm_store_approval_reopen(hsm_store *s, const char *id)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_approval_id(id));
	return s->ops->approval_reopen(s, id);
}

hsm_result hsm_store_approval_list(hsm_store *s, bool open_only, int64_t now, size_t limit,
                                   hsm_approval_cb cb, void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	HSM_GUARD(check_limit(limit));
	return s->ops->approval_list(s, open_only, now, limit, cb, arg);
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

hsm_result st_check_grant_limits(const char *key_id, int64_t for_grantee, int64_t for_key)
{
	HSM_ENSURE(for_grantee < HSM_MAX_GRANTS_PER_GRANTEE, HSM_ERR_LIMIT_EXCEEDED,
	           "key %s already holds %d grants for this grantee, the most allowed", key_id,
	           HSM_MAX_GRANTS_PER_GRANTEE);
	HSM_ENSURE(for_key < HSM_MAX_GRANTS_PER_KEY, HSM_ERR_LIMIT_EXCEEDED,
	           "key %s already holds %d grants, the most allowed", key_id, HSM_MAX_GRANTS_PER_KEY);
	return HSM_SUCCESS;
}

hsm_result st_check_cert_limit(int64_t held)
{
	HSM_ENSURE(held < HSM_MAX_CERTIFICATES, HSM_ERR_LIMIT_EXCEEDED,
	           "the store already holds %d certificates, the most allowed",
	           HSM_MAX_CERTIFICATES);
	return HSM_SUCCESS;
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

hsm_result st_approval_fresh(const hsm_approval_record *a, hsm_approval_record *out)
{
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
	for (uint32_t i = 0; i < a->n_approvers; i++)
		HSM_ENSURE(strcmp(a->approvers[i], approver) != 0, HSM_ERR_ALREADY_EXISTS,
		           "%s already approved approval %s", approver, a->id);
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
