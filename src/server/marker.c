/*
 * marker.c - pagination markers bound to the listing that issued them
 * (marker.h).
 */
#include <string.h>

#include "common/encoding.h"
#include "common/util.h"
#include "kms/kms.h"
#include "server/api.h"
#include "server/json.h"
#include "server/marker.h"
#include "store/store.h"

#define ALIAS_PREFIX "alias/"
#define NO_SCOPE "-"

/* The first part of each kind's markers: the listing that issued them. */
static const char *const listing[HSM_MARKER_KIND_COUNT] = {
    [HSM_MARKER_KEYS] = "keys",
    [HSM_MARKER_DESCRIBE_KEYS] = "describe-keys",
    [HSM_MARKER_ALIASES] = "aliases",
    [HSM_MARKER_TAGS] = "tags",
    [HSM_MARKER_ROTATIONS] = "rotations",
    [HSM_MARKER_GRANTS] = "grants",
    [HSM_MARKER_RETIRABLE_GRANTS] = "retirable-grants",
    /* Short: its markers (59 characters) fit the 64-byte buffers of clients built when
     * they were bare certificate ids. */
    [HSM_MARKER_CERTIFICATES] = "certs",
    [HSM_MARKER_APPROVALS] = "approvals",
    [HSM_MARKER_ALL_APPROVALS] = "all-approvals",
};

#define APPROVAL_CREATED_DIGITS 19 /* INT64_MAX */

/*
 * The n characters at s as hsmd writes a number: decimal digits, no sign or
 * space, no leading 0 (but "0" itself), at most max_digits (19 at most, so
 * *v cannot overflow).
 */
static bool canonical_decimal(const char *s, size_t n, size_t max_digits, uint64_t *v)
{
	if (n == 0 || n > max_digits || (s[0] == '0' && n > 1))
		return false;
	*v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		*v = *v * 10 + (uint64_t)(s[i] - '0');
	}
	return true;
}

/* A version number as hsmd writes it: 1-4294967295. */
static bool canonical_version(const char *s)
{
	uint64_t v;
	return canonical_decimal(s, strlen(s), 10, &v) && v >= 1 && v <= UINT32_MAX;
}

/* An alias name ListAliases could list: alias/ and KMS's AliasName pattern [a-zA-Z0-9:/_-]. */
static bool alias_name(const char *s)
{
	size_t n = strlen(s);
	if (!hsm_str_has_prefix(s, ALIAS_PREFIX) || n <= strlen(ALIAS_PREFIX) || n > HSM_ALIAS_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == ':' || c == '/' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* A tag key: 1-128 characters of valid UTF-8 (kms_check_tag), so no NUL either. */
static bool tag_key(const char *s)
{
	size_t n = strlen(s), chars = 0;
	if (n == 0 || !hsm_utf8_valid(s, n))
		return false;
	for (size_t i = 0; i < n; i++)
		chars += ((unsigned char)s[i] & 0xC0) != 0x80;
	return chars <= HSM_TAG_KEY_MAX;
}

/*
 * Splits an approval position "<created>.<id>": created canonical decimal
 * (0-INT64_MAX, no sign, space or leading 0), id HSM_APPROVAL_ID_LEN
 * lowercase hex digits.  False when p is not one.
 */
static bool approval_position(const char *p, int64_t *created, const char **id)
{
	const char *dot = strchr(p, '.');
	uint64_t v;
	if (dot == NULL || !canonical_decimal(p, (size_t)(dot - p), APPROVAL_CREATED_DIGITS, &v) ||
	    v > INT64_MAX || strlen(dot + 1) != HSM_APPROVAL_ID_LEN ||
	    strspn(dot + 1, "0123456789abcdef") != HSM_APPROVAL_ID_LEN)
		return false;
	*created = (int64_t)v;
	*id = dot + 1;
	return true;
}

static bool position_valid(hsm_marker_kind kind, const char *p)
{
	switch (kind) {
	case HSM_MARKER_KEYS:
	case HSM_MARKER_DESCRIBE_KEYS:
	case HSM_MARKER_CERTIFICATES:
		return hsm_is_uuid(p);
	case HSM_MARKER_ALIASES:
		return alias_name(p);
	case HSM_MARKER_TAGS:
		return tag_key(p);
	case HSM_MARKER_ROTATIONS:
		return canonical_version(p);
	case HSM_MARKER_GRANTS:
	case HSM_MARKER_RETIRABLE_GRANTS:
		return hsm_grant_id_valid(p);
	case HSM_MARKER_APPROVALS:
	case HSM_MARKER_ALL_APPROVALS: {
		int64_t created;
		const char *id;
		return approval_position(p, &created, &id);
	}
	case HSM_MARKER_KIND_COUNT:
		break;
	}
	return false;
}

hsm_result hsm_marker_encode(hsm_marker_kind kind, const char *scope, const char *position,
                             hsm_buf *out)
{
	HSM_ASSERT((unsigned)kind < HSM_MARKER_KIND_COUNT);
	HSM_ENSURE(scope == NULL || hsm_is_uuid(scope), HSM_ERR_INTERNAL,
	           "a marker's scope must be a key id");
	HSM_ENSURE(position_valid(kind, position), HSM_ERR_INTERNAL,
	           "a %s marker cannot hold that position", listing[kind]);
	hsm_buf text = {0};
	hsm_result r = hsm_buf_printf(&text, "%s:%s:%s", listing[kind],
	                              scope != NULL ? scope : NO_SCOPE, position);
	if (hsm_ok(r)) {
		hsm_buf_clear(out);
		r = hsm_b64url_encode(out, text.data, text.len);
	}
	hsm_buf_free(&text);
	return r;
}

/* Splits "<listing>:<scope>:<position>" in place; false when it has no such form. */
static bool split(char *text, char **scope, char **position)
{
	char *a = strchr(text, ':');
	char *b = a != NULL ? strchr(a + 1, ':') : NULL;
	if (b == NULL)
		return false;
	*a = '\0';
	*b = '\0';
	*scope = a + 1;
	*position = b + 1;
	return true;
}

hsm_result hsm_marker_decode(hsm_marker_kind kind, const char *scope, bool check_scope,
                             const char *marker, hsm_buf *position)
{
	HSM_ASSERT((unsigned)kind < HSM_MARKER_KIND_COUNT);
	hsm_result res = HSM_SUCCESS;
	hsm_buf text = {0}, again = {0};
	size_t n = strlen(marker);
	/* Canonical base64url only: one marker per position, as hsm_marker_encode writes it. */
	HSM_TRY(hsm_b64url_decode(&text, marker, n, HSM_ERR_INVALID_MARKER));
	HSM_TRY(hsm_b64url_encode(&again, text.data, text.len));
	HSM_TRY(hsm_buf_terminate(&again));
	HSM_CHECK(strcmp((const char *)again.data, marker) == 0, HSM_ERR_INVALID_MARKER,
	          "Marker is invalid");
	HSM_TRY(hsm_buf_terminate(&text));
	char *s = (char *)text.data, *got_scope = NULL, *at = NULL;
	HSM_CHECK(text.len > 0 && strlen(s) == text.len && split(s, &got_scope, &at),
	          HSM_ERR_INVALID_MARKER, "Marker is invalid");
	const char *want = scope != NULL ? scope : NO_SCOPE;
	HSM_CHECK(strcmp(s, listing[kind]) == 0, HSM_ERR_INVALID_MARKER, "Marker is invalid");
	HSM_CHECK(check_scope ? strcmp(got_scope, want) == 0
	                      : strcmp(got_scope, NO_SCOPE) == 0 || hsm_is_uuid(got_scope),
	          HSM_ERR_INVALID_MARKER, "Marker is invalid");
	HSM_CHECK(position_valid(kind, at), HSM_ERR_INVALID_MARKER, "Marker is invalid");
	HSM_TRY(hsm_buf_set(position, at, strlen(at)));
	res = hsm_buf_terminate(position);
out:
	hsm_buf_free(&text);
	hsm_buf_free(&again);
	return res;
}

hsm_result hsm_marker_approval_position(int64_t created, const char *id,
                                        char out[HSM_MARKER_APPROVAL_POSITION_MAX])
{
	int64_t c;
	const char *at;
	int n = snprintf(out, HSM_MARKER_APPROVAL_POSITION_MAX, "%lld.%s", (long long)created, id);
	HSM_ENSURE(n > 0 && n < HSM_MARKER_APPROVAL_POSITION_MAX && approval_position(out, &c, &at),
	           HSM_ERR_INTERNAL, "an approval listing cannot hold that position");
	return HSM_SUCCESS;
}

hsm_result hsm_marker_approval_at(const char *position, int64_t *created, const char **id)
{
	return approval_position(position, created, id)
	           ? HSM_SUCCESS
	           : HSM_FAIL(HSM_ERR_INVALID_MARKER, "Marker is invalid");
}

/* ---- The API's side ------------------------------------------------------------------------ */

/* The key id ref names, for a scope: false when it names none (the listing fails on it). */
static bool scope_of(hsm_api_ctx *c, const char *ref, char id[HSM_UUID_STRLEN + 1])
{
	return hsm_ok(hsm_kms_resolve(c->kms, ref, id));
}

hsm_result hsm_api_marker_position(hsm_api_ctx *c, hsm_marker_kind kind, const char *ref,
                                   const char *marker, hsm_buf *position)
{
	hsm_buf_clear(position);
	if (marker == NULL)
		return HSM_SUCCESS;
	char id[HSM_UUID_STRLEN + 1];
	bool known = ref == NULL || scope_of(c, ref, id);
	return hsm_marker_decode(kind, ref != NULL && known ? id : NULL, known, marker, position);
}

hsm_result hsm_api_write_next_marker(hsm_api_ctx *c, hsm_marker_kind kind, const char *ref,
                                     const char *position)
{
	char id[HSM_UUID_STRLEN + 1];
	if (ref != NULL)
		HSM_ENSURE(scope_of(c, ref, id), HSM_ERR_NOT_FOUND, "Key '%.64s' does not exist", ref);
	hsm_buf next = {0};
	hsm_result r = hsm_marker_encode(kind, ref != NULL ? id : NULL, position, &next);
	if (hsm_ok(r))
		hsm_jw_str_n(c->w, "NextMarker", (const char *)next.data, next.len);
	hsm_buf_free(&next);
	return r;
}
