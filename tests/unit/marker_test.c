/*
 * Pagination markers: each goes back to the position it was made for, and
 * only for the listing and key that made it; anything else is
 * HSM_ERR_INVALID_MARKER.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "common/encoding.h"
#include "kms/kms.h"
#include "server/marker.h"

#define KEY_A "1234abcd-12ab-34cd-56ef-1234567890ab"
#define KEY_B "0000abcd-12ab-34cd-56ef-1234567890ab"
#define APPROVAL "0123456789abcdef0123456789abcdef"

static char grant_id[HSM_GRANT_ID_LEN + 1];

static void encode(hsm_marker_kind kind, const char *scope, const char *position, char *out,
                   size_t cap)
{
	hsm_buf b = {0};
	assert_true(hsm_ok(hsm_marker_encode(kind, scope, position, &b)));
	assert_true(b.len < cap);
	memcpy(out, b.data, b.len);
	out[b.len] = '\0';
	hsm_buf_free(&b);
}

static hsm_err decode(hsm_marker_kind kind, const char *scope, bool check_scope,
                      const char *marker, char *position, size_t cap)
{
	hsm_buf p = {0};
	hsm_result r = hsm_marker_decode(kind, scope, check_scope, marker, &p);
	if (hsm_ok(r)) {
		assert_true(p.len < cap);
		snprintf(position, cap, "%s", (const char *)p.data);
		assert_int_equal(strlen(position), p.len);
	}
	hsm_buf_free(&p);
	return r.err;
}

/* The base64url of raw bytes: markers hsmd did not write. */
static void forge(const void *raw, size_t n, char *out, size_t cap)
{
	hsm_buf b = {0};
	assert_true(hsm_ok(hsm_b64url_encode(&b, raw, n)));
	assert_true(b.len < cap);
	memcpy(out, b.data, b.len);
	out[b.len] = '\0';
	hsm_buf_free(&b);
}

static void test_round_trip(void **state)
{
	(void)state;
	memset(grant_id, 'a', HSM_GRANT_ID_LEN);
	const struct {
		hsm_marker_kind kind;
		const char *scope, *position;
	} cases[] = {
	    {HSM_MARKER_KEYS, NULL, KEY_B},
	    {HSM_MARKER_DESCRIBE_KEYS, NULL, KEY_A},
	    {HSM_MARKER_ALIASES, NULL, "alias/app:prod/x_y-z"},
	    {HSM_MARKER_ALIASES, KEY_A, "alias/a"},
	    {HSM_MARKER_TAGS, KEY_A, "t:1 \xc3\xa9\xf0\x9f\x94\x91"}, /* ':' and UTF-8 in a tag key */
	    {HSM_MARKER_ROTATIONS, KEY_A, "4294967295"},
	    {HSM_MARKER_GRANTS, KEY_A, grant_id},
	    {HSM_MARKER_RETIRABLE_GRANTS, NULL, grant_id},
	    {HSM_MARKER_CERTIFICATES, NULL, KEY_A},
	    {HSM_MARKER_APPROVALS, NULL, "1800000000." APPROVAL},
	    {HSM_MARKER_ALL_APPROVALS, NULL, "0." APPROVAL},
	    {HSM_MARKER_ALL_APPROVALS, NULL, "9223372036854775807." APPROVAL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char m[1100], p[600];
		encode(cases[i].kind, cases[i].scope, cases[i].position, m, sizeof(m));
		/* Opaque: base64url, within the API's Marker pattern and length. */
		assert_true(strlen(m) <= 1024);
		/* A certificates marker fits the 64-byte buffers of earlier clients. */
		assert_true(cases[i].kind != HSM_MARKER_CERTIFICATES || strlen(m) < 64);
		assert_null(strpbrk(m, "=+/:"));
		assert_int_equal(decode(cases[i].kind, cases[i].scope, true, m, p, sizeof(p)), HSM_OK);
		assert_string_equal(p, cases[i].position);
		/* Not for another listing, nor for another key (or none). */
		for (int k = 0; k < HSM_MARKER_KIND_COUNT; k++)
			if ((hsm_marker_kind)k != cases[i].kind)
				assert_int_equal(decode((hsm_marker_kind)k, cases[i].scope, true, m, p, sizeof(p)),
				                 HSM_ERR_INVALID_MARKER);
		assert_int_equal(decode(cases[i].kind, KEY_B, true, m, p, sizeof(p)),
		                 cases[i].scope == NULL || strcmp(cases[i].scope, KEY_B) != 0
		                     ? HSM_ERR_INVALID_MARKER
		                     : HSM_OK);
		if (cases[i].scope != NULL)
			assert_int_equal(decode(cases[i].kind, NULL, true, m, p, sizeof(p)),
			                 HSM_ERR_INVALID_MARKER);
		/* A KeyId that names no key: the scope is not checked (the listing fails on it). */
		assert_int_equal(decode(cases[i].kind, NULL, false, m, p, sizeof(p)), HSM_OK);
	}
}

static void test_forged(void **state)
{
	(void)state;
	char m[256], p[256];
	/* The bare positions of before, and text hsmd never wrote. */
	const char *bare[] = {KEY_A, "alias/zzzz", " 1", "01", "1", "dA", "_w", "", "-", "::"};
	for (size_t i = 0; i < sizeof(bare) / sizeof(bare[0]); i++)
		for (int k = 0; k < HSM_MARKER_KIND_COUNT; k++)
			assert_int_equal(decode((hsm_marker_kind)k, KEY_A, true, bare[i], p, sizeof(p)),
			                 HSM_ERR_INVALID_MARKER);
	/* The right envelope around positions hsmd could not have issued. */
	const struct {
		hsm_marker_kind kind;
		const char *text;
		size_t n;
	} forged[] = {
	    {HSM_MARKER_ROTATIONS, "rotations:" KEY_A ":01", 0},
	    {HSM_MARKER_ROTATIONS, "rotations:" KEY_A ": 1", 0},
	    {HSM_MARKER_ROTATIONS, "rotations:" KEY_A ":0", 0},
	    {HSM_MARKER_ROTATIONS, "rotations:" KEY_A ":4294967296", 0},
	    {HSM_MARKER_ROTATIONS, "rotations:" KEY_A ":+1", 0},
	    {HSM_MARKER_TAGS, "tags:" KEY_A ":\xff", 0},
	    {HSM_MARKER_TAGS, "tags:" KEY_A ":", 0},
	    {HSM_MARKER_TAGS, "tags:" KEY_A ":a\0b", sizeof("tags:" KEY_A ":a") + 1},
	    {HSM_MARKER_KEYS, "keys:-:1234ABCD-12AB-34CD-56EF-1234567890AB", 0},
	    {HSM_MARKER_KEYS, "keys:-:" KEY_A "0", 0},
	    {HSM_MARKER_KEYS, "keys:" KEY_A, 0},
	    {HSM_MARKER_ALIASES, "aliases:-:alias/", 0},
	    {HSM_MARKER_ALIASES, "aliases:-:alias/a b", 0},
	    {HSM_MARKER_ALIASES, "aliases:-:zzzz", 0},
	    {HSM_MARKER_GRANTS, "grants:" KEY_A ":not-a-grant", 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:" APPROVAL, 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:01." APPROVAL, 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:-1." APPROVAL, 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:+1." APPROVAL, 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:." APPROVAL, 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:9223372036854775808." APPROVAL, 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:1.0123456789ABCDEF0123456789abcdef", 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:1.0123456789abcdef0123456789abcde", 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:1." APPROVAL "0", 0},
	    {HSM_MARKER_APPROVALS, "approvals:-:1." APPROVAL ".", 0},
	};
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
		size_t n = forged[i].n != 0 ? forged[i].n : strlen(forged[i].text);
		forge(forged[i].text, n, m, sizeof(m));
		/* Not even with the scope left unchecked. */
		assert_int_equal(decode(forged[i].kind, NULL, false, m, p, sizeof(p)),
		                 HSM_ERR_INVALID_MARKER);
	}
	/* Padding or other spellings of the same bytes are not hsmd's. */
	encode(HSM_MARKER_ROTATIONS, KEY_A, "2", m, sizeof(m));
	char padded[300];
	snprintf(padded, sizeof(padded), "%s=", m);
	assert_int_equal(decode(HSM_MARKER_ROTATIONS, KEY_A, true, padded, p, sizeof(p)),
	                 HSM_ERR_INVALID_MARKER);
}

/* hsmd never writes a marker it would refuse. */
static void test_encode_refuses_what_decode_would(void **state)
{
	(void)state;
	hsm_buf b = {0};
	assert_int_equal(hsm_marker_encode(HSM_MARKER_ROTATIONS, KEY_A, "0", &b).err,
	                 HSM_ERR_INTERNAL);
	assert_int_equal(hsm_marker_encode(HSM_MARKER_TAGS, "alias/x", "t", &b).err,
	                 HSM_ERR_INTERNAL);
	assert_int_equal(hsm_marker_encode(HSM_MARKER_KEYS, NULL, "alias/x", &b).err,
	                 HSM_ERR_INTERNAL);
	hsm_buf_free(&b);
}

/* An approval listing's position: its request's creation time and id, and back. */
static void test_approval_positions(void **state)
{
	(void)state;
	char pos[HSM_MARKER_APPROVAL_POSITION_MAX];
	int64_t created = 0;
	const char *id = NULL;
	assert_true(hsm_ok(hsm_marker_approval_position(1800000000, APPROVAL, pos)));
	assert_string_equal(pos, "1800000000." APPROVAL);
	assert_true(hsm_ok(hsm_marker_approval_at(pos, &created, &id)));
	assert_int_equal(created, 1800000000);
	assert_string_equal(id, APPROVAL);
	assert_true(hsm_ok(hsm_marker_approval_position(INT64_MAX, APPROVAL, pos)));
	assert_true(hsm_ok(hsm_marker_approval_at(pos, &created, &id)));
	assert_true(created == INT64_MAX);
	/* Nothing the listing could not have issued. */
	assert_int_equal(hsm_marker_approval_position(-1, APPROVAL, pos).err, HSM_ERR_INTERNAL);
	assert_int_equal(hsm_marker_approval_position(1, "0123", pos).err, HSM_ERR_INTERNAL);
	assert_int_equal(hsm_marker_approval_at(APPROVAL, &created, &id).err,
	                 HSM_ERR_INVALID_MARKER);
	assert_int_equal(hsm_marker_approval_at("1." KEY_A, &created, &id).err,
	                 HSM_ERR_INVALID_MARKER);
	/* A marker one listing of approvals issued is not the other's. */
	char m[200], p[200];
	encode(HSM_MARKER_APPROVALS, NULL, "1." APPROVAL, m, sizeof(m));
	assert_int_equal(decode(HSM_MARKER_ALL_APPROVALS, NULL, true, m, p, sizeof(p)),
	                 HSM_ERR_INVALID_MARKER);
	assert_int_equal(decode(HSM_MARKER_APPROVALS, NULL, true, m, p, sizeof(p)), HSM_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_forged),
	    cmocka_unit_test(test_encode_refuses_what_decode_would),
	    cmocka_unit_test(test_approval_positions),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
