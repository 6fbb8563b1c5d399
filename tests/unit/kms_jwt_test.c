/*
 * kms_jwt_test.c - kms/kms_jwt.c and kms/kms_jwks.c: SignToken with its
 * roles, key policy actions, key states and one-algorithm-per-key rule;
 * marking keys for JWT signing; and the JWK Set: which versions it holds
 * around a rotation (the lead and the grace rule, on a test clock), its
 * cache and ETag; which version signs tokens after a rotation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kms/jwt.h"
#include "kms/kms.h"
#include "support/kms_fixture.h"

#define T0 1800000000
#define MAX_LIFETIME 600
#define SKEW 60
#define GRACE (MAX_LIFETIME + SKEW)
/* A new version is published this long before it signs: the JWK Set's max-age here,
 * where no other node shares the store. */
#define LEAD (GRACE / 4)

typedef kms_fx fx;

static const hsm_caller officer = {.user = "olivia", .access_key_id = "AKIAOLIVIA0000000000",
                                   .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER)};
static const hsm_caller user = {.user = "ursula", .access_key_id = "AKIAURSULA0000000000",
                                .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER)};

static int setup(void **state)
{
	hsm_kms_config cfg = {.jwt_default_lifetime = 300, .jwt_max_lifetime = MAX_LIFETIME,
	                      .jwt_clock_skew = SKEW};
	return kms_fx_setup(state, &cfg, T0);
}

static void create(fx *f, hsm_key_spec spec, hsm_key_usage usage, const char *policy,
                   hsm_key_record *out)
{
	hsm_create_key_req req = {.spec = spec, .usage = usage, .policy = policy};
	memset(out, 0, sizeof(*out));
	assert_true(hsm_ok(hsm_kms_create_key(f->kms, &officer, &req, out)));
}

/* Signs {"sub":"s"} with key; the token is left in t (cleared first). */
static hsm_result sign(fx *f, const hsm_caller *c, const char *key, hsm_jws_alg alg,
                       int64_t lifetime, hsm_buf *t, hsm_jwt_issued *issued)
{
	json_t *claims = json_pack("{s:s}", "sub", "s");
	hsm_jwt_sign_req req = {.key = key, .claims = claims, .alg = alg, .lifetime = lifetime};
	hsm_buf_clear(t);
	hsm_result r = hsm_kms_sign_token(f->kms, c, &req, t, issued);
	json_decref(claims);
	return r;
}

/* The JWK Set at the test clock, parsed. */
static json_t *jwks_now(fx *f, int64_t *valid_until)
{
	hsm_buf doc = {0};
	int64_t until = 0;
	json_error_t e;
	assert_true(hsm_ok(hsm_kms_jwks_render(f->kms, f->now, &doc, &until)));
	json_t *j = json_loadb((const char *)doc.data, doc.len, 0, &e);
	assert_non_null(j);
	hsm_buf_free(&doc);
	if (valid_until != NULL)
		*valid_until = until;
	return j;
}

static bool has_kid(const json_t *jwks, const char *key_id, uint32_t version)
{
	char kid[HSM_JWT_KID_MAX];
	assert_true(hsm_ok(hsm_jwt_kid(key_id, version, kid)));
	const json_t *keys = json_object_get(jwks, "keys");
	for (size_t i = 0; i < json_array_size(keys); i++)
		if (strcmp(json_string_value(json_object_get(json_array_get(keys, i), "kid")), kid) == 0)
			return true;
	return false;
}

static void verify_ok(fx *f, const hsm_buf *t)
{
	json_t *jwks = jwks_now(f, NULL);
	hsm_jwt_verify_opts o = {f->now, 0, NULL, NULL};
	hsm_result r = hsm_jwt_verify((const char *)t->data, t->len, jwks, &o, NULL, NULL);
	if (hsm_failed(r))
		fail_msg("token does not verify: %s", hsm_last_message());
	json_decref(jwks);
}

static void test_marking_and_signing(void **state)
{
	fx *f = *state;
	hsm_key_record k, after;
	hsm_buf t = {0};
	hsm_jwt_issued is;
	create(f, HSM_SPEC_RSA_2048, HSM_USAGE_SIGN_VERIFY, NULL, &k);
	/* Not marked: no token, nothing published. */
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is).err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	json_t *jwks = jwks_now(f, NULL);
	assert_int_equal(json_array_size(json_object_get(jwks, "keys")), 0);
	json_decref(jwks);
	/* Marking is the officer's; the algorithm must fit the key. */
	assert_int_equal(hsm_kms_enable_jwt(f->kms, &user, k.key_id, HSM_JWS_NONE, NULL).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_ES256, NULL).err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	assert_true(hsm_ok(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_PS256, &after)));
	assert_true(after.flags & HSM_KEYFLAG_JWT);
	hsm_key_record_clear(&after);
	assert_true(hsm_ok(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_PS256, NULL)));
	assert_int_equal(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_RS256, NULL).err,
	                 HSM_ERR_VALIDATION);
	/* Signing is the crypto-user's, with the key's algorithm only. */
	assert_int_equal(sign(f, &officer, k.key_id, HSM_JWS_NONE, 0, &t, &is).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_RS256, 0, &t, &is).err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_PS256, 0, &t, &is)));
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is)));
	assert_int_equal(is.alg, HSM_JWS_PS256);
	assert_int_equal(is.used.version, 1);
	assert_int_equal(is.issued_at, T0);
	assert_int_equal(is.expires_at, T0 + 300); /* the configured default lifetime */
	char kid[HSM_JWT_KID_MAX];
	snprintf(kid, sizeof(kid), "%s.v1", k.key_id);
	assert_string_equal(is.kid, kid);
	verify_ok(f, &t);
	/* Lifetime: 1..max. */
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, MAX_LIFETIME, &t, &is)));
	assert_int_equal(is.expires_at, T0 + MAX_LIFETIME);
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_NONE, MAX_LIFETIME + 1, &t, &is).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_NONE, -1, &t, &is).err, HSM_ERR_VALIDATION);
	/* Aliases and ARNs name the key as for every operation. */
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/platform-jwt", k.key_id)));
	assert_true(hsm_ok(sign(f, &user, "alias/platform-jwt", HSM_JWS_NONE, 0, &t, &is)));
	assert_string_equal(is.kid, kid);
	/* Disabling JWT signing unpublishes the key and stops it signing. */
	assert_true(hsm_ok(hsm_kms_disable_jwt(f->kms, &officer, k.key_id, NULL)));
	assert_true(hsm_ok(hsm_kms_disable_jwt(f->kms, &officer, k.key_id, NULL)));
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is).err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	jwks = jwks_now(f, NULL);
	assert_false(has_kid(jwks, k.key_id, 1));
	json_decref(jwks);
	hsm_buf_free(&t);
	hsm_key_record_clear(&k);
}

static void test_keys_that_cannot_sign_tokens(void **state)
{
	fx *f = *state;
	static const struct {
		hsm_key_spec spec;
		hsm_key_usage usage;
	} cases[] = {{HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT},
	             {HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC},
	             {HSM_SPEC_RSA_2048, HSM_USAGE_ENCRYPT_DECRYPT},
	             {HSM_SPEC_ECC_SECG_P256K1, HSM_USAGE_SIGN_VERIFY}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		hsm_key_record k;
		create(f, cases[i].spec, cases[i].usage, NULL, &k);
		assert_int_equal(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_NONE, NULL).err,
		                 HSM_ERR_INVALID_KEY_USAGE);
		hsm_key_record_clear(&k);
	}
}

static void test_key_states(void **state)
{
	fx *f = *state;
	hsm_key_record k, out;
	hsm_buf t = {0};
	hsm_jwt_issued is;
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, &k);
	assert_true(hsm_ok(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_NONE, NULL)));
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_ES256, 0, &t, &is)));
	/* A disabled key signs nothing and is not published: its tokens stop verifying. */
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is).err, HSM_ERR_DISABLED);
	json_t *jwks = jwks_now(f, NULL);
	assert_false(has_kid(jwks, k.key_id, 1));
	json_decref(jwks);
	assert_true(hsm_ok(hsm_kms_enable_key(f->kms, &officer, k.key_id)));
	jwks = jwks_now(f, NULL);
	assert_true(has_kid(jwks, k.key_id, 1));
	json_decref(jwks);
	/* Pending deletion: KMSInvalidStateException for signing and for marking. */
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &out)));
	hsm_key_record_clear(&out);
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is).err,
	                 HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_disable_jwt(f->kms, &officer, k.key_id, NULL).err,
	                 HSM_ERR_INVALID_STATE);
	jwks = jwks_now(f, NULL);
	assert_false(has_kid(jwks, k.key_id, 1));
	json_decref(jwks);
	assert_int_equal(sign(f, &user, "alias/none", HSM_JWS_NONE, 0, &t, &is).err,
	                 HSM_ERR_NOT_FOUND);
	hsm_buf_free(&t);
	hsm_key_record_clear(&k);
}

#define POLICY_HEAD                                                                         \
	"{\"Version\":\"2012-10-17\",\"Statement\":["                                          \
	"{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/olivia\"}," \
	"\"Action\":[\"kms:PutKeyPolicy\",\"kms:UpdateKeyDescription\",\"kms:GetKeyPolicy\"],"   \
	"\"Resource\":\"*\"},"

static void test_policy_actions(void **state)
{
	fx *f = *state;
	hsm_key_record k;
	hsm_buf t = {0};
	hsm_jwt_issued is;
	/* Olivia may change the description but was not given kms:EnableJwtSigning. */
	const char *p1 = POLICY_HEAD
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/ursula\"},"
	    "\"Action\":\"kms:Sign\",\"Resource\":\"*\"}]}";
	create(f, HSM_SPEC_RSA_2048, HSM_USAGE_SIGN_VERIFY, p1, &k);
	assert_int_equal(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_NONE, NULL).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_set_flags(f->kms, &officer, k.key_id, HSM_KEYFLAG_JWT, 0).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_true(hsm_ok(hsm_kms_update_description(f->kms, &officer, k.key_id, "d")));
	/* With kms:EnableJwtSigning she may; ursula's kms:Sign does not cover kms:SignToken. */
	const char *p2 = POLICY_HEAD
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/olivia\"},"
	    "\"Action\":\"kms:EnableJwtSigning\",\"Resource\":\"*\"},"
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/ursula\"},"
	    "\"Action\":\"kms:Sign\",\"Resource\":\"*\"}]}";
	assert_true(hsm_ok(hsm_kms_put_policy(f->kms, &officer, k.key_id, NULL, p2, false)));
	assert_true(hsm_ok(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_PS384, NULL)));
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is).err,
	                 HSM_ERR_ACCESS_DENIED);
	/* kms:SignToken, conditioned on the KMS name of the key's algorithm. */
	const char *p3 = POLICY_HEAD
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/ursula\"},"
	    "\"Action\":\"kms:SignToken\",\"Resource\":\"*\",\"Condition\":{\"StringEquals\":"
	    "{\"kms:SigningAlgorithm\":\"RSASSA_PSS_SHA_384\"}}}]}";
	assert_true(hsm_ok(hsm_kms_put_policy(f->kms, &officer, k.key_id, NULL, p3, false)));
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is)));
	/* Asking for another algorithm is evaluated as that algorithm: denied before usage. */
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_RS256, 0, &t, &is).err,
	                 HSM_ERR_ACCESS_DENIED);
	/* An explicit deny wins. */
	const char *p4 = POLICY_HEAD
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/ursula\"},"
	    "\"Action\":\"kms:*\",\"Resource\":\"*\"},"
	    "{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:SignToken\",\"Resource\":\"*\"}"
	    "]}";
	assert_true(hsm_ok(hsm_kms_put_policy(f->kms, &officer, k.key_id, NULL, p4, false)));
	assert_int_equal(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is).err,
	                 HSM_ERR_ACCESS_DENIED);
	hsm_buf_free(&t);
	hsm_key_record_clear(&k);
}

/*
 * After a rotation the old version signs through second created(v+1) + LEAD
 * while the new one is published (so for LEAD seconds in full, whatever the
 * fraction of the second the rotation came in); then the new one signs, and
 * the old one stays published while now <= created(v+1) + LEAD +
 * max_lifetime + clock_skew, so tokens it signed keep verifying until they
 * expire.
 */
static void test_jwks_lead_and_grace_after_rotation(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	hsm_buf t1 = {0}, t2 = {0};
	hsm_jwt_issued is;
	int64_t until = 0;
	uint32_t version = 0;
	char kid[HSM_JWT_KID_MAX];
	create(f, HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_USAGE_SIGN_VERIFY, NULL, &k);
	assert_true(hsm_ok(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_NONE, NULL)));
	json_t *jwks = jwks_now(f, &until);
	assert_true(has_kid(jwks, k.key_id, 1));
	assert_int_equal(until, INT64_MAX); /* nothing leaves by itself */
	json_decref(jwks);
	f->now += 1000;
	int64_t rotated = f->now;
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	assert_int_equal(r.primary_version, 2);
	hsm_key_record_clear(&r);
	/* v2 is published at once, and v1 keeps signing until v2 has been for LEAD seconds. */
	jwks = jwks_now(f, &until);
	assert_true(has_kid(jwks, k.key_id, 1));
	assert_true(has_kid(jwks, k.key_id, 2));
	assert_int_equal(until, rotated + LEAD + 1 + GRACE);
	json_decref(jwks);
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, MAX_LIFETIME, &t1, &is)));
	assert_int_equal(is.used.version, 1);
	assert_true(hsm_ok(hsm_kms_jwt_token_version(f->kms, k.key_id, &version)));
	assert_int_equal(version, 1);
	f->now = rotated + LEAD; /* the rotation may have come at the end of its second */
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, MAX_LIFETIME, &t1, &is)));
	assert_int_equal(is.used.version, 1);
	snprintf(kid, sizeof(kid), "%s.v1", k.key_id);
	assert_string_equal(is.kid, kid);
	int64_t last_v1_exp = is.expires_at;
	f->now = rotated + LEAD + 1;
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, MAX_LIFETIME, &t2, &is)));
	assert_int_equal(is.used.version, 2);
	snprintf(kid, sizeof(kid), "%s.v2", k.key_id);
	assert_string_equal(is.kid, kid);
	assert_true(hsm_ok(hsm_kms_jwt_token_version(f->kms, k.key_id, &version)));
	assert_int_equal(version, 2);
	/* v1's last token verifies until it expires; the JWKS keeps v1 SKEW longer. */
	f->now = last_v1_exp - 1;
	verify_ok(f, &t1);
	verify_ok(f, &t2);
	f->now = last_v1_exp + SKEW;
	assert_int_equal(f->now, rotated + LEAD + GRACE);
	jwks = jwks_now(f, NULL);
	assert_true(has_kid(jwks, k.key_id, 1));
	json_decref(jwks);
	f->now = rotated + LEAD + 1 + GRACE;
	jwks = jwks_now(f, &until);
	assert_false(has_kid(jwks, k.key_id, 1));
	assert_true(has_kid(jwks, k.key_id, 2));
	assert_int_equal(until, INT64_MAX);
	json_decref(jwks);
	/* Two quick rotations: v3 and v4 are published at once and sign in their turn. */
	int64_t again = f->now;
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	hsm_key_record_clear(&r);
	f->now += 100;
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	hsm_key_record_clear(&r);
	jwks = jwks_now(f, &until);
	assert_false(has_kid(jwks, k.key_id, 1));
	assert_true(has_kid(jwks, k.key_id, 2) && has_kid(jwks, k.key_id, 3) &&
	            has_kid(jwks, k.key_id, 4));
	assert_int_equal(until, again + LEAD + 1 + GRACE);
	json_decref(jwks);
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t2, &is)));
	assert_int_equal(is.used.version, 2);
	f->now = again + LEAD;
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t2, &is)));
	assert_int_equal(is.used.version, 2);
	f->now = again + LEAD + 1;
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t2, &is)));
	assert_int_equal(is.used.version, 3);
	f->now = again + 100 + LEAD + 1;
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t2, &is)));
	assert_int_equal(is.used.version, 4);
	verify_ok(f, &t2);
	hsm_buf_free(&t1);
	hsm_buf_free(&t2);
	hsm_key_record_clear(&k);
}

/* A clock that moves a second at each reading, so time passes while a rotation works. */
static int64_t ticking_clock(void *arg)
{
	return ((fx *)arg)->now++;
}

static int64_t still_clock(void *arg)
{
	return ((fx *)arg)->now;
}

static hsm_result note_v2_created(const hsm_version_record *v, void *arg)
{
	if (v->version == 2)
		*(int64_t *)arg = v->created;
	return HSM_SUCCESS;
}

/*
 * A rotation dates its version as it commits, not when it began: generating
 * an RSA-4096 key takes seconds, and the lead before the version signs
 * tokens must count from when the JWK Set can show it.
 */
static void test_rotation_dated_at_commit(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, &k);
	assert_true(hsm_ok(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_NONE, NULL)));
	hsm_kms_set_clock(f->kms, ticking_clock, f);
	int64_t began = f->now;
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	int64_t ended = f->now;
	hsm_kms_set_clock(f->kms, still_clock, f);
	int64_t created = 0;
	assert_true(hsm_ok(hsm_store_version_list(f->store, k.key_id, note_v2_created, &created)));
	/* Later than the change's own time, read before its transaction began. */
	assert_true(created > r.updated);
	assert_true(created > began && created < ended);
	hsm_key_record_clear(&r);
	hsm_key_record_clear(&k);
}

/* The lead is the JWK Set's max-age, plus a node's document lifetime when the store is
 * shared; a key with one version signs at once.  A retired version's grace counts from
 * the last second any node may sign with it: the lead, or, when nodes share the store,
 * the lifetime of another node's cached copy of the key if that is longer (a node that
 * has not read the rotation yet signs with the version before it). */
static void test_lead(void **state)
{
	fx *f = *state;
	hsm_jwt_limits lim;
	hsm_kms_jwt_limits(f->kms, &lim);
	assert_int_equal(lim.max_age, GRACE / 4);
	assert_int_equal(lim.lead, GRACE / 4);
	assert_int_equal(lim.stale, 0);
	assert_int_equal(lim.grace, LEAD + 1 + GRACE);
	const int64_t ttl_ms[] = {1, 1000, 1500, 29001, 60000, 3600000};
	const int64_t more[] = {1, 1, 2, 30, HSM_JWKS_CACHE_TTL, HSM_JWKS_CACHE_TTL};
	const int64_t stale[] = {1, 1, 2, 30, 60, 3600};
	for (size_t i = 0; i < sizeof(ttl_ms) / sizeof(ttl_ms[0]); i++) {
		hsm_kms_config cfg = {.jwt_max_lifetime = MAX_LIFETIME, .jwt_clock_skew = SKEW,
		                      .meta_cache_ttl_ms = ttl_ms[i]};
		void *other = NULL;
		assert_int_equal(kms_fx_setup(&other, &cfg, T0), 0);
		hsm_kms_jwt_limits(((fx *)other)->kms, &lim);
		assert_int_equal(lim.max_age, GRACE / 4);
		assert_int_equal(lim.lead, GRACE / 4 + more[i]);
		assert_int_equal(lim.stale, stale[i]);
		int64_t last = lim.lead > stale[i] ? lim.lead : stale[i];
		assert_int_equal(lim.grace, last + 1 + GRACE);
		assert_true(lim.grace >= stale[i] + 1 + GRACE); /* 3600 s: far past the lead */
		assert_int_equal(kms_fx_teardown(&other), 0);
	}
	hsm_kms_config big = {.jwt_max_lifetime = 86400, .jwt_clock_skew = 60};
	void *other = NULL;
	assert_int_equal(kms_fx_setup(&other, &big, T0), 0);
	hsm_kms_jwt_limits(((fx *)other)->kms, &lim);
	assert_int_equal(lim.max_age, HSM_JWKS_MAX_AGE);
	assert_int_equal(lim.lead, HSM_JWKS_MAX_AGE);
	assert_int_equal(kms_fx_teardown(&other), 0);
	/* A new key has nothing to be published ahead of. */
	hsm_key_record k;
	hsm_buf t = {0};
	hsm_jwt_issued is;
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, &k);
	assert_true(hsm_ok(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_NONE, NULL)));
	assert_true(hsm_ok(sign(f, &user, k.key_id, HSM_JWS_NONE, 0, &t, &is)));
	assert_int_equal(is.used.version, 1);
	verify_ok(f, &t);
	hsm_buf_free(&t);
	hsm_key_record_clear(&k);
}

static char *doc_text(hsm_jwks_doc *d)
{
	size_t len = 0;
	const uint8_t *p = hsm_jwks_doc_body(d, &len);
	char *s = strndup((const char *)p, len);
	assert_non_null(s);
	return s;
}

/* The cached document follows local changes and the grace clock; the ETag follows the body. */
static void test_jwks_cache(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	hsm_jwks_doc *a = NULL, *b = NULL, *c = NULL;
	create(f, HSM_SPEC_ECC_NIST_P384, HSM_USAGE_SIGN_VERIFY, NULL, &k);
	assert_true(hsm_ok(hsm_kms_jwks(f->kms, &a)));
	assert_true(hsm_ok(hsm_kms_jwks(f->kms, &b)));
	assert_ptr_equal(a, b); /* shared, not rebuilt */
	assert_int_equal(hsm_jwks_doc_max_age(a), GRACE / 4);
	assert_int_equal(strlen(hsm_jwks_doc_etag(a)), 24); /* quotes + 22 base64url characters */
	hsm_jwks_doc_release(b);
	assert_true(hsm_ok(hsm_kms_enable_jwt(f->kms, &officer, k.key_id, HSM_JWS_NONE, NULL)));
	assert_true(hsm_ok(hsm_kms_jwks(f->kms, &b)));
	assert_ptr_not_equal(a, b);
	assert_string_not_equal(hsm_jwks_doc_etag(a), hsm_jwks_doc_etag(b));
	char *text = doc_text(b);
	assert_non_null(strstr(text, k.key_id));
	assert_non_null(strstr(text, "\"alg\":\"ES384\""));
	free(text);
	/* A rotation shows at once; v1 leaves when its lead and grace end, with no other change. */
	f->now += 10;
	int64_t rotated = f->now;
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	hsm_key_record_clear(&r);
	assert_true(hsm_ok(hsm_kms_jwks(f->kms, &c)));
	text = doc_text(c);
	assert_non_null(strstr(text, ".v1\""));
	assert_non_null(strstr(text, ".v2\""));
	free(text);
	hsm_jwks_doc_release(c);
	f->now = rotated + LEAD + GRACE;
	assert_true(hsm_ok(hsm_kms_jwks(f->kms, &c)));
	text = doc_text(c);
	assert_non_null(strstr(text, ".v1\""));
	free(text);
	hsm_jwks_doc_release(c);
	f->now = rotated + LEAD + 1 + GRACE;
	assert_true(hsm_ok(hsm_kms_jwks(f->kms, &c)));
	text = doc_text(c);
	assert_null(strstr(text, ".v1\""));
	assert_non_null(strstr(text, ".v2\""));
	free(text);
	/* The same content gives the same ETag, whenever it was built. */
	hsm_jwks_doc *d = NULL;
	f->now += HSM_JWKS_CACHE_TTL;
	assert_true(hsm_ok(hsm_kms_jwks(f->kms, &d)));
	assert_ptr_not_equal(c, d);
	assert_string_equal(hsm_jwks_doc_etag(c), hsm_jwks_doc_etag(d));
	hsm_jwks_doc_release(a);
	hsm_jwks_doc_release(b);
	hsm_jwks_doc_release(c);
	hsm_jwks_doc_release(d);
	hsm_key_record_clear(&k);
}

int main(void)
{
	if (hsm_failed(hsm_secure_process_init(1 << 22)))
		return 1;
	if (hsm_failed(hsm_crypto_init()))
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_marking_and_signing, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_keys_that_cannot_sign_tokens, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_states, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_policy_actions, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_jwks_lead_and_grace_after_rotation, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_lead, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rotation_dated_at_commit, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_jwks_cache, setup, kms_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
