/*
 * store.c - the public store functions: argument checks, then dispatch to
 * the backend's ops table (store_impl.h); plus the record helpers and the
 * enumeration name tables.  Principals, certificates, key usage and quorum
 * approvals are in store_admin.c.
 */
#include "store/store.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/x509.h"
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
hsm_result st_check_name(const char *s, size_t cap, const char *what)
{
	HSM_ASSERT(s != NULL);
	size_t n = strnlen(s, cap);
	HSM_ENSURE(n > 0, HSM_ERR_VALIDATION, "%s must not be empty", what);
	HSM_ENSURE(n < cap, HSM_ERR_VALIDATION, "%s is longer than %zu bytes", what, cap - 1);
	return HSM_SUCCESS;
}

/* A string that may be empty but must fit a field of cap bytes (with the NUL). */
hsm_result st_check_fits(const char *s, size_t cap, const char *what)
{
	HSM_ASSERT(s != NULL);
	HSM_ENSURE(strnlen(s, cap) < cap, HSM_ERR_VALIDATION, "%s is longer than %zu bytes", what,
	           cap - 1);
	return HSM_SUCCESS;
}

hsm_result st_check_schema(int64_t current, int latest)
{
	HSM_ENSURE(current <= latest, HSM_ERR_STORE,
	           "the store has schema version %lld, newer than this hsmd knows (%d): "
	           "upgrade hsmd to open it",
	           (long long)current, latest);
	HSM_ENSURE(current >= 0, HSM_ERR_STORE, "the store's schema version is corrupt");
	return HSM_SUCCESS;
}

/*
 * Identifiers used for lookups: one that cannot fit the field cannot exist,
 * so it is reported as absent rather than malformed.
 */
hsm_result st_check_lookup(const char *s, size_t cap, const char *what)
{
	HSM_ASSERT(s != NULL);
	size_t n = strnlen(s, cap);
	HSM_ENSURE(n > 0, HSM_ERR_VALIDATION, "%s must not be empty", what);
	HSM_ENSURE(n < cap, HSM_ERR_NOT_FOUND, "%s does not exist", what);
	return HSM_SUCCESS;
}

#define KEY_ID_CAP (HSM_UUID_STRLEN + 1)

/* Whether s is exactly len lowercase hex digits (reads at most len + 1 bytes of it). */
bool st_is_lower_hex(const char *s, size_t len)
{
	HSM_ASSERT(s != NULL);
	size_t n = strnlen(s, len + 1);
	bool ok = n == len;
	for (size_t i = 0; ok && i < n; i++)
		ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
	return ok;
}

hsm_result st_check_limit(size_t limit)
{
	HSM_ENSURE(limit >= 1 && limit <= HSM_STORE_LIST_MAX, HSM_ERR_VALIDATION,
	           "limit must be between 1 and %d", HSM_STORE_LIST_MAX);
	return HSM_SUCCESS;
}

static hsm_result check_key_record(const hsm_key_record *k)
{
	HSM_ASSERT(k != NULL);
	HSM_GUARD(st_check_name(k->key_id, sizeof(k->key_id), "key id"));
	HSM_ASSERT((unsigned)k->spec < HSM_SPEC_COUNT && (unsigned)k->usage < HSM_USAGE_COUNT);
	HSM_ASSERT((unsigned)k->origin < COUNT_OF(origin_names));
	HSM_ASSERT((unsigned)k->state < HSM_KEY_STATE_COUNT);
	HSM_ENSURE(k->primary_version >= 1, HSM_ERR_VALIDATION, "key versions start at 1");
	return HSM_SUCCESS;
}

static hsm_result check_version_record(const hsm_version_record *v)
{
	HSM_ASSERT(v != NULL);
	HSM_GUARD(st_check_name(v->key_id, sizeof(v->key_id), "key id"));
	HSM_ASSERT((unsigned)v->rotation_type < COUNT_OF(rotation_type_names));
	HSM_ENSURE(v->version >= 1, HSM_ERR_VALIDATION, "key versions start at 1");
	/* 0 means "never": a negative expiry would pass for the earliest of all (store.h, set_material). */
	HSM_ENSURE(v->valid_to >= 0, HSM_ERR_VALIDATION, "key material cannot expire before 1970");
	HSM_GUARD(st_check_fits(v->description, sizeof(v->description), "key material description"));
	return HSM_SUCCESS;
}

/* ---- Opening -------------------------------------------------------------------- */

static const struct backend {
	const char *prefix;
	bool whole; /* the backend gets the whole location, prefix included */
	hsm_store_backend_open_fn open;
} backends[] = {
	{"sqlite:", false, hsm_store_sqlite_open_mode},
	/* libpq takes the URI as it is (its own two spellings of the scheme). */
	{"postgresql://", true, hsm_store_pg_open},
	{"postgres://", true, hsm_store_pg_open},
};

static hsm_result open_backend(const char *location, hsm_store_open_mode mode, hsm_store **out)
{
	HSM_ASSERT(location != NULL && out != NULL);
	HSM_ENSURE(*location != '\0', HSM_ERR_VALIDATION, "the store location is empty");
	for (size_t i = 0; i < COUNT_OF(backends); i++) {
		if (hsm_str_has_prefix(location, backends[i].prefix)) {
			const char *rest = location + strlen(backends[i].prefix);
			HSM_ENSURE(*rest != '\0', HSM_ERR_VALIDATION, "the store location is empty");
			return backends[i].open(backends[i].whole ? location : rest, mode, out);
		}
	}
	/* Anything shaped like a URL names a backend this build does not have. */
	HSM_ENSURE(strstr(location, "://") == NULL, HSM_ERR_VALIDATION,
	           "unsupported store location (expected a directory, sqlite:DIR or "
	           "postgresql://...)");
	return hsm_store_sqlite_open_mode(location, mode, out);
}

/* An opening's schema migrations are no request's change: they carry no outbox row. */
static hsm_result open_mode(const char *location, hsm_store_open_mode mode, hsm_store **out)
{
	hsm_store_intent *held = st_intent_hold();
	hsm_result res = open_backend(location, mode, out);
	st_intent_restore(held);
	return res;
}

hsm_result hsm_store_open(const char *location, hsm_store **out)
{
	return open_mode(location, HSM_STORE_MIGRATE, out);
}

hsm_result hsm_store_open_existing(const char *location, hsm_store **out)
{
	return open_mode(location, HSM_STORE_EXISTING, out);
}

hsm_result hsm_store_open_unmigrated(const char *location, hsm_store **out)
{
	hsm_result r = open_mode(location, HSM_STORE_EXISTING, out);
	if (r.err != HSM_ERR_NOT_FOUND)
		return r;
	return open_mode(location, HSM_STORE_MIGRATE, out);
}

hsm_result hsm_store_migrate(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	/* Run on a current store too, for what the opening would have done besides the steps
	 * (SQLite: the file restricted to its owner, its directory entries made durable).  As
	 * an opening's, the steps are no request's change, and carry no outbox row. */
	hsm_store_intent *held = st_intent_hold();
	hsm_result r = s->ops->migrate(s);
	st_intent_restore(held);
	return r;
}

hsm_result hsm_store_holds_any(hsm_store *s, bool *any)
{
	HSM_ASSERT(s != NULL && any != NULL);
	return s->ops->holds_any(s, any);
}

void hsm_store_close(hsm_store *s)
{
	if (s != NULL)
		s->ops->close(s);
}

hsm_result hsm_store_check(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	return s->ops->check != NULL ? s->ops->check(s) : HSM_SUCCESS;
}

uint64_t hsm_store_corrupt_seen(const hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	return atomic_load(&s->corrupt_seen);
}

int hsm_store_schema_version(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	return s->ops->schema_version(s);
}

int hsm_store_schema_latest(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	return s->ops->schema_latest();
}

hsm_result hsm_store_claim_node(hsm_store *s, const char *node_id)
{
	HSM_ASSERT(s != NULL && node_id != NULL);
	HSM_ENSURE(node_id[0] != '\0', HSM_ERR_VALIDATION, "the node id is empty");
	bool adopting = false;
	return s->ops->claim_node(s, node_id, &adopting);
}

hsm_result hsm_store_claim_node_why(hsm_store *s, const char *node_id, bool *adopting)
{
	HSM_ASSERT(s != NULL && node_id != NULL && adopting != NULL);
	*adopting = false;
	HSM_ENSURE(node_id[0] != '\0', HSM_ERR_VALIDATION, "the node id is empty");
	return s->ops->claim_node(s, node_id, adopting);
}

int hsm_store_migrated_from(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	return s->migrated_from;
}

#define META_NAME_CAP 256

static void upgrade_meta_name(hsm_store *s, const char *prefix, char *out, size_t cap)
{
	snprintf(out, cap, "%s%s:%d", prefix, s->ops->name, s->ops->schema_latest());
}

/* Whether the metadata value is a schema version, 1..latest - 1; 0 if not. */
static int upgrade_from_value(const hsm_buf *v, int latest)
{
	if (v->len == 0 || v->len > 9)
		return 0;
	int from = 0;
	for (size_t i = 0; i < v->len; i++) {
		if (v->data[i] < '0' || v->data[i] > '9')
			return 0;
		from = from * 10 + (v->data[i] - '0');
	}
	return from > 0 && from < latest ? from : 0;
}

int hsm_store_migration_unreported(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	if (s->ops->schema_version(s) != s->ops->schema_latest())
		return 0; /* opened as it is: nothing was migrated to this build's schema */
	char name[META_NAME_CAP];
	hsm_buf v;
	hsm_buf_init(&v);
	upgrade_meta_name(s, ST_UPGRADE_REPORTED_META, name, sizeof(name));
	hsm_result r = s->ops->meta_get(s, name, &v);
	int from = 0;
	if (r.err == HSM_ERR_NOT_FOUND) {
		upgrade_meta_name(s, ST_UPGRADE_META, name, sizeof(name));
		r = s->ops->meta_get(s, name, &v);
		if (hsm_ok(r))
			from = upgrade_from_value(&v, s->ops->schema_latest());
	}
	hsm_buf_free(&v);
	if (hsm_failed(r) && r.err != HSM_ERR_NOT_FOUND)
		return s->migrated_from;
	return from;
}

hsm_result hsm_store_migration_reported(hsm_store *s, int from)
{
	HSM_ASSERT(s != NULL && from > 0);
	char name[META_NAME_CAP], value[16];
	upgrade_meta_name(s, ST_UPGRADE_REPORTED_META, name, sizeof(name));
	int n = snprintf(value, sizeof(value), "%d", from);
	hsm_buf v = {.data = (uint8_t *)value, .len = (size_t)n};
	const char *names[] = {name};
	const hsm_buf *values[] = {&v};
	hsm_result r = s->ops->meta_put(s, 1, names, values);
	return r.err == HSM_ERR_ALREADY_EXISTS ? HSM_SUCCESS : r;
}

/* ---- Metadata -------------------------------------------------------------------- */


hsm_result hsm_store_meta_get(hsm_store *s, const char *name, hsm_buf *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(st_check_lookup(name, META_NAME_CAP, "metadata name"));
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
		HSM_GUARD(st_check_name(names[i], META_NAME_CAP, "metadata name"));
		HSM_ASSERT(values[i] != NULL);
	}
	return s->ops->meta_put(s, n, names, values);
}

/* ---- Keys ---------------------------------------------------------------------------- */

static hsm_result check_tags(size_t n, const hsm_tag tags[])
{
	if (n == 0)
		return HSM_SUCCESS;
	HSM_ASSERT(tags != NULL);
	HSM_ENSURE(n <= HSM_MAX_TAGS_PER_KEY, HSM_ERR_LIMIT_EXCEEDED,
	           "a key holds at most %d tags", HSM_MAX_TAGS_PER_KEY);
	for (size_t i = 0; i < n; i++) {
		HSM_GUARD(st_check_name(tags[i].key, sizeof(tags[i].key), "tag key"));
		HSM_ENSURE(strnlen(tags[i].value, sizeof(tags[i].value)) < sizeof(tags[i].value),
		           HSM_ERR_VALIDATION, "tag value is too long");
	}
	return HSM_SUCCESS;
}

hsm_result hsm_store_key_create(hsm_store *s, const hsm_key_record *key,
                                const hsm_version_record *first)
{
	return hsm_store_key_create_tagged(s, key, first, 0, NULL);
}

hsm_result hsm_store_key_create_tagged(hsm_store *s, const hsm_key_record *key,
                                       const hsm_version_record *first, size_t n_tags,
                                       const hsm_tag tags[])
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
	HSM_GUARD(check_tags(n_tags, tags));
	st_intent_note_key(key->key_id);
	return s->ops->key_create(s, key, first, n_tags, tags);
}

hsm_result hsm_store_key_get(hsm_store *s, const char *key_id, hsm_key_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->key_get(s, key_id, out);
}

hsm_result hsm_store_keys_get(hsm_store *s, size_t n, const char *const key_ids[], hsm_key_cb cb,
                              void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL && (n == 0 || key_ids != NULL));
	HSM_ENSURE(n <= HSM_STORE_KEYS_GET_MAX, HSM_ERR_VALIDATION,
	           "at most %d keys can be read at once", HSM_STORE_KEYS_GET_MAX);
	for (size_t i = 0; i < n; i++) {
		hsm_result r = st_check_lookup(key_ids[i], KEY_ID_CAP, "key");
		if (r.err == HSM_ERR_NOT_FOUND) /* too long to be an id: no such key */
			continue;
		HSM_GUARD(r);
	}
	return n == 0 ? HSM_SUCCESS : s->ops->keys_get(s, n, key_ids, cb, arg);
}

hsm_result hsm_store_key_update(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
                                const hsm_version_record *add_version, hsm_key_record *after)
{
	HSM_ASSERT(s != NULL && fn != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	if (add_version != NULL) {
		HSM_GUARD(check_version_record(add_version));
		HSM_ENSURE(strcmp(add_version->key_id, key_id) == 0, HSM_ERR_VALIDATION,
		           "the new version belongs to another key");
	}
	st_intent_note_key(key_id);
	return s->ops->key_update(s, key_id, fn, arg, add_version, after);
}

hsm_result hsm_store_key_destroy(hsm_store *s, const char *key_id, int64_t now)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	st_intent_note_key(key_id);
	return s->ops->key_destroy(s, key_id, now, false);
}

hsm_result hsm_store_key_destroy_due(hsm_store *s, const char *key_id, int64_t now)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	st_intent_note_key(key_id);
	return s->ops->key_destroy(s, key_id, now, true);
}

hsm_result hsm_store_key_set_material(hsm_store *s, const char *key_id, hsm_key_update_fn fn,
                                      void *arg, const hsm_version_record *material,
                                      hsm_key_record *after)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(check_version_record(material));
	HSM_ENSURE(strcmp(material->key_id, key_id) == 0, HSM_ERR_VALIDATION,
	           "the material belongs to another key");
	st_intent_note_key(key_id);
	return s->ops->key_set_material(s, key_id, fn, arg, material, after);
}

hsm_result hsm_store_key_promote(hsm_store *s, const char *key_id, uint32_t version, int64_t now,
                                 hsm_rotation_type type, hsm_key_update_fn fn, void *arg,
                                 hsm_key_record *after)
{
	HSM_ASSERT(s != NULL);
	HSM_ASSERT((unsigned)type < COUNT_OF(rotation_type_names));
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_ENSURE(version >= 1, HSM_ERR_VALIDATION, "key versions start at 1");
	st_intent_note_key(key_id);
	return s->ops->key_promote(s, key_id, version, now, type, fn, arg, after);
}

hsm_result hsm_store_key_list(hsm_store *s, const char *after, size_t limit,
                              bool include_destroyed, hsm_key_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(st_check_limit(limit));
	return s->ops->key_list(s, st_cursor(after), limit, include_destroyed, cb, arg,
	                        truncated);
}

hsm_result hsm_store_jwt_key_list(hsm_store *s, const char *after, size_t limit, hsm_key_cb cb,
                                  void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(st_check_limit(limit));
	return s->ops->jwt_key_list(s, st_cursor(after), limit, cb, arg, truncated);
}

hsm_result hsm_store_key_count(hsm_store *s, uint64_t *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	return s->ops->key_count(s, out);
}

hsm_result hsm_store_lead(hsm_store *s, bool want, uint32_t lease_ms, bool *leading)
{
	HSM_ASSERT(s != NULL && leading != NULL && lease_ms > 0);
	*leading = false;
	return s->ops->lead(s, want, lease_ms, leading);
}

hsm_result hsm_store_snapshot(hsm_store *s, const char *path)
{
	HSM_ASSERT(s != NULL && path != NULL);
	HSM_ENSURE(*path != '\0', HSM_ERR_VALIDATION, "snapshot path is empty");
	/* A snapshot's writes land in the copy, not in s: no outbox row (store.h). */
	hsm_store_intent *held = st_intent_hold();
	hsm_result res = s->ops->snapshot(s, path);
	st_intent_restore(held);
	return res;
}

int hsm_store_snapshot_schema(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	return s->ops->snapshot_schema != NULL ? s->ops->snapshot_schema(s)
	                                       : hsm_store_sqlite_schema_latest();
}

hsm_result hsm_store_rekey(hsm_store *s, const hsm_store_rekey_req *req,
                           hsm_store_rekey_counts *counts)
{
	HSM_ASSERT(s != NULL && req != NULL && req->fn != NULL);
	HSM_ASSERT(req->n_expect == 0 || (req->expect_names != NULL && req->expect_values != NULL));
	HSM_ASSERT(req->n_meta == 0 || (req->meta_names != NULL && req->meta_values != NULL));
	for (size_t i = 0; i < req->n_expect; i++) {
		HSM_GUARD(st_check_name(req->expect_names[i], META_NAME_CAP, "metadata name"));
		HSM_ASSERT(req->expect_values[i] != NULL);
	}
	for (size_t i = 0; i < req->n_meta; i++) {
		HSM_GUARD(st_check_name(req->meta_names[i], META_NAME_CAP, "metadata name"));
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
	HSM_GUARD(st_check_limit(limit));
	return s->ops->keys_due(s, now, limit, cb, arg);
}

hsm_result hsm_store_keys_due_count(hsm_store *s, int64_t horizon, int64_t overdue_before,
                                    hsm_due_counts *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	*out = (hsm_due_counts){0, 0, 0, 0, 0};
	return s->ops->keys_due_count(s, horizon, overdue_before, out);
}

/* ---- Key versions ------------------------------------------------------------------------ */

hsm_result hsm_store_version_get(hsm_store *s, const char *key_id, uint32_t version,
                                 hsm_version_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_ENSURE(version >= 1, HSM_ERR_NOT_FOUND, "key version 0 does not exist");
	return s->ops->version_get(s, key_id, version, out);
}

hsm_result hsm_store_version_list(hsm_store *s, const char *key_id, hsm_version_cb cb, void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->version_list(s, key_id, cb, arg);
}

/* ---- Aliases ------------------------------------------------------------------------------ */

#define ALIAS_CAP (HSM_ALIAS_MAX + 1)

hsm_result hsm_store_alias_create(hsm_store *s, const char *name, const char *key_id, int64_t now,
                                  const hsm_key_state_check *check)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_name(name, ALIAS_CAP, "alias name"));
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	st_intent_note_key(key_id);
	return s->ops->alias_create(s, name, key_id, now, check);
}

hsm_result hsm_store_alias_update(hsm_store *s, const char *name, const char *from,
                                  const char *key_id, int64_t now,
                                  const hsm_key_state_check *check)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(name, ALIAS_CAP, "alias"));
	if (from != NULL)
		HSM_GUARD(st_check_lookup(from, KEY_ID_CAP, "key"));
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	st_intent_note_key(key_id);
	return s->ops->alias_update(s, name, from, key_id, now, check);
}

hsm_result hsm_store_alias_delete(hsm_store *s, const char *name)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(name, ALIAS_CAP, "alias"));
	return s->ops->alias_delete(s, name);
}

hsm_result hsm_store_alias_get(hsm_store *s, const char *name, hsm_alias_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(st_check_lookup(name, ALIAS_CAP, "alias"));
	return s->ops->alias_get(s, name, out);
}

hsm_result hsm_store_alias_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                                hsm_alias_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(st_check_limit(limit));
	if (key_id != NULL)
		HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->alias_list(s, key_id, st_cursor(after), limit, cb, arg, truncated);
}

hsm_result hsm_store_alias_delete_for_key(hsm_store *s, const char *key_id)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	return s->ops->alias_delete_for_key(s, key_id);
}

/* ---- Tags ---------------------------------------------------------------------------------- */

hsm_result hsm_store_tags_put(hsm_store *s, const char *key_id, size_t n, const hsm_tag tags[],
                              const hsm_key_state_check *check)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	if (n == 0)
		return HSM_SUCCESS;
	HSM_GUARD(check_tags(n, tags));
	st_intent_note_key(key_id);
	return s->ops->tags_put(s, key_id, n, tags, check);
}

hsm_result hsm_store_tags_remove(hsm_store *s, const char *key_id, size_t n,
                                 const char *const keys[], const hsm_key_state_check *check)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	if (n == 0)
		return HSM_SUCCESS;
	HSM_ASSERT(keys != NULL);
	for (size_t i = 0; i < n; i++)
		HSM_ASSERT(keys[i] != NULL);
	st_intent_note_key(key_id);
	return s->ops->tags_remove(s, key_id, n, keys, check);
}

hsm_result hsm_store_tags_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                               hsm_tag_cb cb, void *arg, bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(st_check_limit(limit));
	return s->ops->tags_list(s, key_id, st_cursor(after), limit, cb, arg, truncated);
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
	HSM_ENSURE(st_is_lower_hex(id, HSM_GRANT_ID_LEN), HSM_ERR_VALIDATION,
	           "a grant id is %d lowercase hex digits", HSM_GRANT_ID_LEN);
	return HSM_SUCCESS;
}

static hsm_result check_grant_record(const hsm_grant_record *g)
{
	HSM_ASSERT(g != NULL);
	HSM_GUARD(check_grant_id(g->grant_id));
	HSM_GUARD(st_check_lookup(g->key_id, sizeof(g->key_id), "key"));
	HSM_GUARD(st_check_fits(g->name, sizeof(g->name), "grant name"));
	HSM_GUARD(st_check_name(g->grantee, sizeof(g->grantee), "grantee principal"));
	HSM_GUARD(st_check_fits(g->retiring, sizeof(g->retiring), "retiring principal"));
	HSM_ENSURE(g->operations != 0, HSM_ERR_VALIDATION, "a grant allows at least one operation");
	return HSM_SUCCESS;
}

hsm_result hsm_store_grant_create(hsm_store *s, hsm_grant_record *g, bool *existed,
                                  const hsm_key_state_check *check)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(check_grant_record(g));
	bool found = false;
	st_intent_note_key(g->key_id);
	HSM_GUARD(s->ops->grant_create(s, g, &found, check));
	if (existed != NULL)
		*existed = found;
	return HSM_SUCCESS;
}

hsm_result hsm_store_grant_fits(hsm_store *s, const hsm_grant_record *g)
{
	HSM_ASSERT(s != NULL && g != NULL);
	HSM_GUARD(st_check_lookup(g->key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(st_check_name(g->grantee, GRANT_PRINCIPAL_CAP, "grantee principal"));
	return s->ops->grant_fits(s, g);
}

hsm_result hsm_store_grant_get(hsm_store *s, const char *key_id, const char *grant_id,
                               hsm_grant_record *out)
{
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(check_grant_id(grant_id));
	return s->ops->grant_get(s, key_id, grant_id, out);
}

hsm_result hsm_store_grant_delete(hsm_store *s, const char *key_id, const char *grant_id)
{
	HSM_ASSERT(s != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	HSM_GUARD(check_grant_id(grant_id));
	st_intent_note_key(key_id);
	return s->ops->grant_delete(s, key_id, grant_id);
}

hsm_result hsm_store_grant_list(hsm_store *s, const char *key_id, const char *grantee,
                                const char *after, size_t limit, hsm_grant_cb cb, void *arg,
                                bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(st_check_lookup(key_id, KEY_ID_CAP, "key"));
	if (grantee != NULL)
		HSM_GUARD(st_check_name(grantee, GRANT_PRINCIPAL_CAP, "grantee principal"));
	HSM_GUARD(st_check_limit(limit));
	return s->ops->grant_list(s, key_id, grantee, st_cursor(after), limit, cb, arg,
	                          truncated);
}

hsm_result hsm_store_grant_list_retiring(hsm_store *s, const char *retiring, const char *after,
                                         size_t limit, hsm_grant_cb cb, void *arg,
                                         bool *truncated)
{
	HSM_ASSERT(s != NULL && cb != NULL && truncated != NULL);
	HSM_GUARD(st_check_name(retiring, GRANT_PRINCIPAL_CAP, "retiring principal"));
	HSM_GUARD(st_check_limit(limit));
	return s->ops->grant_list_retiring(s, retiring, st_cursor(after), limit, cb, arg,
	                                   truncated);
}

/* ---- Certificates ------------------------------------------------------------------------ */

hsm_result st_cert_not_after(const uint8_t *der, size_t len, int64_t *out)
{
	X509 *x = hsm_x509_from_der(der, len, HSM_CERT_DER_MAX);
	HSM_ENSURE(x != NULL, HSM_ERR_VALIDATION, "a stored certificate is not DER X.509");
	struct tm tm;
	const ASN1_TIME *t = X509_get0_notAfter(x);
	bool read = t != NULL && ASN1_TIME_to_tm(t, &tm) == 1;
	X509_free(x);
	HSM_ENSURE(read, HSM_ERR_VALIDATION, "a stored certificate's notAfter cannot be read");
	*out = (int64_t)timegm(&tm);
	return HSM_SUCCESS;
}
