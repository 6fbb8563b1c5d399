/*
 * kms_grants_test.c - grants in the KMS layer: what a grant allows and to
 * whom, constraints, grants made by grantees, retiring and revoking, grant
 * tokens, and grants of a destroyed key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "kms/kms.h"
#include "support/kms_fixture.h"

typedef kms_fx fx;

static const hsm_caller officer = {.user = "olivia",
                                   .access_key_id = "AKIAOLIVIA0000000000",
                                   .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER) |
                                            HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER)};
static const hsm_caller alice = {.user = "alice",
                                 .access_key_id = "AKIAALICE00000000000",
                                 .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER)};
static const hsm_caller bob = {.user = "bob",
                               .access_key_id = "AKIABOB0000000000000",
                               .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER)};

#define ALICE "arn:aws:iam::111122223333:user/alice"
#define BOB "arn:aws:iam::111122223333:user/bob"
#define OFFICER_ONLY                                                                               \
	"{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\","                        \
	"\"Principal\":{\"AWS\":"                                                                  \
	"\"arn:aws:iam::111122223333:user/"                                                        \
	"olivia\"},\"Action\":\"kms:*\",\"Resource\":\"*\"}]}"

/* The officer may do anything; then the statements given (a JSON fragment). */
#define OFFICER_AND(statements)                                                                    \
	"{\"Version\":\"2012-10-17\",\"Statement\":["                                                \
	"{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/olivia\"},"  \
	"\"Action\":\"kms:*\",\"Resource\":\"*\"}," statements "]}"

static int setup(void **state)
{
	return kms_fx_setup(state, NULL, 1800000000);
}

static void create_key_with(fx *f, hsm_key_spec spec, hsm_key_usage usage, const char *policy,
                            char id[HSM_UUID_STRLEN + 1])
{
	hsm_create_key_req req = {.spec = spec, .usage = usage, .policy = policy};
	hsm_key_record out;
	memset(&out, 0, sizeof(out));
	assert_true(hsm_ok(hsm_kms_create_key(f->kms, &officer, &req, &out)));
	memcpy(id, out.key_id, HSM_UUID_STRLEN + 1);
	hsm_key_record_clear(&out);
}

static void create_key(fx *f, hsm_key_spec spec, hsm_key_usage usage, char id[HSM_UUID_STRLEN + 1])
{
	create_key_with(f, spec, usage, OFFICER_ONLY, id);
}

typedef struct grant_args {
	const char *grantee;
	const char *retiring;
	const char *ops[4];
	hsm_ctx_pair equals[2], subset[2];
	size_t n_equals, n_subset; /* SIZE_MAX: absent */
	const char *name;
} grant_args;

static hsm_result grant(fx *f, const hsm_caller *c, const char *key, const grant_args *a,
                        char id[HSM_GRANT_ID_LEN + 1], hsm_buf *token)
{
	hsm_create_grant_req req = {.key = key,
	                            .grantee = a->grantee,
	                            .retiring = a->retiring,
	                            .operations = a->ops,
	                            .name = a->name};
	while (req.n_operations < 4 && a->ops[req.n_operations] != NULL)
		req.n_operations++;
	if (a->n_equals != SIZE_MAX)
		req.constraints.equals =
		    (hsm_grant_ctx){true, (hsm_ctx_pair *)a->equals, a->n_equals};
	if (a->n_subset != SIZE_MAX)
		req.constraints.subset =
		    (hsm_grant_ctx){true, (hsm_ctx_pair *)a->subset, a->n_subset};
	char key_id[HSM_UUID_STRLEN + 1];
	hsm_buf_clear(token);
	return hsm_kms_create_grant(f->kms, c, &req, id, token, key_id);
}

static hsm_result encrypt(fx *f, const hsm_caller *c, const char *key, const hsm_ctx_pair *ctx,
                          size_t n)
{
	hsm_encrypt_req req = {
	    .key = key, .plaintext = (const uint8_t *)"data", .plaintext_len = 4, .ctx = {ctx, n}};
	hsm_used_key used;
	hsm_buf ct = {0};
	hsm_result r = hsm_kms_encrypt(f->kms, c, &req, &ct, &used);
	hsm_buf_free(&ct);
	return r;
}

static hsm_result count_one(const hsm_grant_record *g, void *arg)
{
	(void)g;
	(*(size_t *)arg)++;
	return HSM_SUCCESS;
}

static size_t count_grants(fx *f, const char *key)
{
	size_t n = 0;
	bool truncated;
	hsm_result r = hsm_kms_list_grants(f->kms, &officer, key, NULL, NULL, NULL, 100, count_one,
	                                   &n, &truncated);
	assert_int_equal(r.err, HSM_OK);
	return n;
}

static void test_grant_allows_grantee_only(void **state)
{
	fx *f = *state;
	char key[HSM_UUID_STRLEN + 1], id[HSM_GRANT_ID_LEN + 1];
	hsm_buf token = {0};
	create_key(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, key);
	assert_int_equal(encrypt(f, &alice, key, NULL, 0).err, HSM_ERR_ACCESS_DENIED);
	grant_args a = {
	    .grantee = ALICE, .ops = {"Encrypt"}, .n_equals = SIZE_MAX, .n_subset = SIZE_MAX};
	assert_int_equal(grant(f, &officer, key, &a, id, &token).err, HSM_OK);
	assert_int_equal(strlen(id), HSM_GRANT_ID_LEN);
	assert_int_equal(encrypt(f, &alice, key, NULL, 0).err, HSM_OK);
	assert_int_equal(encrypt(f, &bob, key, NULL, 0).err, HSM_ERR_ACCESS_DENIED);
	/* The token names the grant. */
	char tk[HSM_UUID_STRLEN + 1], tg[HSM_GRANT_ID_LEN + 1];
	assert_true(hsm_ok(hsm_buf_terminate(&token)));
	assert_int_equal(hsm_grant_token_parse((const char *)token.data, tk, tg).err, HSM_OK);
	assert_string_equal(tk, key);
	assert_string_equal(tg, id);
	/* A token made before tokens carried 16 random bytes (version 1) still names it. */
	hsm_buf raw = {0}, old = {0};
	assert_true(hsm_ok(hsm_b64url_decode(&raw, (const char *)token.data, token.len,
	                                     HSM_ERR_INVALID_GRANT_TOKEN)));
	assert_int_equal(raw.len, 1 + 16 + HSM_GRANT_ID_LEN / 2 + 16);
	raw.data[0] = 1;
	assert_true(hsm_ok(hsm_b64url_encode(&old, raw.data, raw.len - 16)));
	assert_true(hsm_ok(hsm_buf_terminate(&old)));
	assert_int_equal(hsm_grant_token_parse((const char *)old.data, tk, tg).err, HSM_OK);
	assert_string_equal(tg, id);
	raw.data[0] = 2; /* version 2 without its random bytes: not a token */
	hsm_buf_clear(&old);
	assert_true(hsm_ok(hsm_b64url_encode(&old, raw.data, raw.len - 16)));
	assert_true(hsm_ok(hsm_buf_terminate(&old)));
	assert_int_equal(hsm_grant_token_parse((const char *)old.data, tk, tg).err,
	                 HSM_ERR_INVALID_GRANT_TOKEN);
	hsm_buf_free(&raw);
	hsm_buf_free(&old);
	/* One changed character: refused, or another grant's name (which allows
	 * nothing). */
	token.data[3] = token.data[3] == 'A' ? 'B' : 'A';
	hsm_result r = hsm_grant_token_parse((const char *)token.data, tk, tg);
	assert_true(r.err == HSM_ERR_INVALID_GRANT_TOKEN || strcmp(tk, key) != 0 ||
	            strcmp(tg, id) != 0);
	assert_int_equal(hsm_grant_token_parse("", tk, tg).err, HSM_ERR_INVALID_GRANT_TOKEN);
	assert_int_equal(hsm_grant_token_parse("!!", tk, tg).err, HSM_ERR_INVALID_GRANT_TOKEN);
	/* Revoked: refused again, on the cached key too. */
	assert_int_equal(hsm_kms_revoke_grant(f->kms, &officer, key, id).err, HSM_OK);
	assert_int_equal(encrypt(f, &alice, key, NULL, 0).err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_revoke_grant(f->kms, &officer, key, id).err, HSM_ERR_NOT_FOUND);
	hsm_buf_free(&token);
}

static void test_constraints(void **state)
{
	fx *f = *state;
	char key[HSM_UUID_STRLEN + 1], id[HSM_GRANT_ID_LEN + 1];
	hsm_buf token = {0};
	create_key(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, key);
	grant_args a = {.grantee = ALICE,
	                .ops = {"Encrypt"},
	                .n_equals = SIZE_MAX,
	                .subset = {{"Tenant", "acme"}},
	                .n_subset = 1};
	assert_int_equal(grant(f, &officer, key, &a, id, &token).err, HSM_OK);
	hsm_ctx_pair ok[] = {{"tenant", "acme"}, {"x", "y"}}, wrong[] = {{"tenant", "ACME"}};
	assert_int_equal(encrypt(f, &alice, key, ok, 2).err, HSM_OK);
	assert_int_equal(encrypt(f, &alice, key, wrong, 1).err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(encrypt(f, &alice, key, NULL, 0).err, HSM_ERR_ACCESS_DENIED);

	grant_args e = {.grantee = BOB,
	                .ops = {"Encrypt"},
	                .equals = {{"a", "1"}, {"b", "2"}},
	                .n_equals = 2,
	                .n_subset = SIZE_MAX};
	assert_int_equal(grant(f, &officer, key, &e, id, &token).err, HSM_OK);
	hsm_ctx_pair same[] = {{"B", "2"}, {"A", "1"}},
	             more[] = {{"a", "1"}, {"b", "2"}, {"c", "3"}}, less[] = {{"a", "1"}};
	assert_int_equal(encrypt(f, &bob, key, same, 2).err, HSM_OK);
	assert_int_equal(encrypt(f, &bob, key, more, 3).err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(encrypt(f, &bob, key, less, 1).err, HSM_ERR_ACCESS_DENIED);

	/* Two keys differing only by case, and an empty key: refused, nothing stored.
	 */
	size_t before = count_grants(f, key);
	grant_args dup = {.grantee = ALICE,
	                  .ops = {"Encrypt"},
	                  .n_equals = SIZE_MAX,
	                  .subset = {{"k", "1"}, {"K", "2"}},
	                  .n_subset = 2};
	assert_int_equal(grant(f, &officer, key, &dup, id, &token).err, HSM_ERR_VALIDATION);
	grant_args empty = {.grantee = ALICE,
	                    .ops = {"Encrypt"},
	                    .n_equals = SIZE_MAX,
	                    .subset = {{"", "1"}},
	                    .n_subset = 1};
	assert_int_equal(grant(f, &officer, key, &empty, id, &token).err, HSM_ERR_VALIDATION);
	assert_int_equal(count_grants(f, key), before);
	hsm_buf_free(&token);
}

/* On CreateGrant, kms:EncryptionContext:* and kms:EncryptionContextKeys see the grant's
 * constraint context (AWS KMS "kms:EncryptionContext:context-key"). */
static void test_create_grant_conditions_see_the_constraint_context(void **state)
{
	fx *f = *state;
	char key[HSM_UUID_STRLEN + 1], id[HSM_GRANT_ID_LEN + 1];
	hsm_buf token = {0};
	static const char policy[] = OFFICER_AND(
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"" ALICE "\"},"
	    "\"Action\":\"kms:CreateGrant\",\"Resource\":\"*\",\"Condition\":{"
	    "\"ForAllValues:StringEquals\":{\"kms:EncryptionContextKeys\":[\"tenant\",\"stage\"]}}},"
	    "{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":\"kms:CreateGrant\","
	    "\"Resource\":\"*\",\"Condition\":{"
	    "\"StringEquals\":{\"kms:EncryptionContext:stage\":\"restricted\"}}}");
	create_key_with(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, policy, key);
	grant_args a = {.grantee = BOB,
	                .ops = {"Encrypt"},
	                .n_equals = SIZE_MAX,
	                .subset = {{"tenant", "acme"}},
	                .n_subset = 1};
	assert_int_equal(grant(f, &alice, key, &a, id, &token).err, HSM_OK);
	/* A key outside the allowed set: AWS denies it; so does hsmd now. */
	grant_args other = {.grantee = BOB,
	                    .ops = {"Encrypt"},
	                    .n_equals = SIZE_MAX,
	                    .subset = {{"other", "x"}},
	                    .n_subset = 1};
	assert_int_equal(grant(f, &alice, key, &other, id, &token).err, HSM_ERR_ACCESS_DENIED);
	/* The explicit Deny on the context's value: for everyone, the officer too. */
	grant_args restricted = {.grantee = BOB,
	                         .ops = {"Encrypt"},
	                         .equals = {{"tenant", "acme"}, {"stage", "restricted"}},
	                         .n_equals = 2,
	                         .n_subset = SIZE_MAX};
	assert_int_equal(grant(f, &alice, key, &restricted, id, &token).err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(grant(f, &officer, key, &restricted, id, &token).err,
	                 HSM_ERR_ACCESS_DENIED);
	restricted.equals[1].value = "open";
	assert_int_equal(grant(f, &alice, key, &restricted, id, &token).err, HSM_OK);
	hsm_buf_free(&token);
}

/* kms:GrantIsForAWSResource is false on CreateGrant, ListGrants and RevokeGrant alike. */
static void test_grant_is_for_aws_resource_on_every_grant_operation(void **state)
{
	fx *f = *state;
	char key[HSM_UUID_STRLEN + 1], id[HSM_GRANT_ID_LEN + 1];
	hsm_buf token = {0};
	static const char policy[] = OFFICER_AND(
	    "{\"Effect\":\"Deny\",\"Principal\":\"*\","
	    "\"Action\":[\"kms:ListGrants\",\"kms:RevokeGrant\"],\"Resource\":\"*\","
	    "\"Condition\":{\"Bool\":{\"kms:GrantIsForAWSResource\":\"false\"}}}");
	create_key_with(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, policy, key);
	grant_args a = {.grantee = BOB, .ops = {"Encrypt"}, .n_equals = SIZE_MAX, .n_subset = SIZE_MAX};
	assert_int_equal(grant(f, &officer, key, &a, id, &token).err, HSM_OK);
	size_t n = 0;
	bool truncated;
	assert_int_equal(hsm_kms_list_grants(f->kms, &officer, key, NULL, NULL, NULL, 100, count_one,
	                                     &n, &truncated)
	                     .err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_revoke_grant(f->kms, &officer, key, id).err, HSM_ERR_ACCESS_DENIED);
	hsm_buf_free(&token);
}

static void test_grantee_grants_within_its_own(void **state)
{
	fx *f = *state;
	char key[HSM_UUID_STRLEN + 1], id[HSM_GRANT_ID_LEN + 1];
	hsm_buf token = {0};
	create_key(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, key);
	grant_args a = {.grantee = ALICE,
	                .ops = {"Encrypt", "Decrypt", "CreateGrant"},
	                .n_equals = SIZE_MAX,
	                .subset = {{"team", "a"}},
	                .n_subset = 1};
	assert_int_equal(grant(f, &officer, key, &a, id, &token).err, HSM_OK);
	struct {
		grant_args g;
		hsm_err want;
	} cases[] = {
	    /* more operations than its own */
	    {{.grantee = BOB,
	      .ops = {"Encrypt", "GenerateDataKey"},
	      .n_equals = SIZE_MAX,
	      .subset = {{"team", "a"}},
	      .n_subset = 1},
	     HSM_ERR_ACCESS_DENIED},
	    /* no constraint, or another value */
	    {{.grantee = BOB, .ops = {"Encrypt"}, .n_equals = SIZE_MAX, .n_subset = SIZE_MAX},
	     HSM_ERR_ACCESS_DENIED},
	    {{.grantee = BOB,
	      .ops = {"Encrypt"},
	      .n_equals = SIZE_MAX,
	      .subset = {{"team", "b"}},
	      .n_subset = 1},
	     HSM_ERR_ACCESS_DENIED},
	    {{.grantee = BOB,
	      .ops = {"Encrypt"},
	      .equals = {{"x", "1"}},
	      .n_equals = 1,
	      .n_subset = SIZE_MAX},
	     HSM_ERR_ACCESS_DENIED},
	    /* stricter: a larger subset, or an exact context holding the pair */
	    {{.grantee = BOB,
	      .ops = {"Encrypt"},
	      .n_equals = SIZE_MAX,
	      .subset = {{"TEAM", "a"}, {"x", "1"}},
	      .n_subset = 2},
	     HSM_OK},
	    {{.grantee = BOB,
	      .ops = {"Decrypt"},
	      .equals = {{"team", "a"}, {"y", "2"}},
	      .n_equals = 2,
	      .n_subset = SIZE_MAX},
	     HSM_OK},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		hsm_result r = grant(f, &alice, key, &cases[i].g, id, &token);
		if (r.err != cases[i].want)
			fail_msg("case %zu: %d", i, r.err);
	}
	hsm_ctx_pair ctx[] = {{"team", "a"}, {"x", "1"}};
	assert_int_equal(encrypt(f, &bob, key, ctx, 2).err, HSM_OK);
	assert_int_equal(encrypt(f, &bob, key, ctx, 1).err, HSM_ERR_ACCESS_DENIED);
	hsm_buf_free(&token);
}

static void test_operations_must_suit_the_key(void **state)
{
	fx *f = *state;
	char sym[HSM_UUID_STRLEN + 1], sig[HSM_UUID_STRLEN + 1], mac[HSM_UUID_STRLEN + 1],
	    id[HSM_GRANT_ID_LEN + 1];
	hsm_buf token = {0};
	create_key(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, sym);
	create_key(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, sig);
	create_key(f, HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC, mac);
	struct {
		const char *key, *op;
		hsm_err want;
	} cases[] = {
	    {sym, "Encrypt", HSM_OK},
	    {sym, "GenerateDataKeyPair", HSM_OK},
	    {sym, "Sign", HSM_ERR_VALIDATION},
	    {sym, "GetPublicKey", HSM_ERR_VALIDATION},
	    {sig, "Sign", HSM_OK},
	    {sig, "GetPublicKey", HSM_OK},
	    {sig, "Decrypt", HSM_ERR_VALIDATION},
	    {mac, "VerifyMac", HSM_OK},
	    {mac, "Encrypt", HSM_ERR_VALIDATION},
	    {mac, "DescribeKey", HSM_OK},
	    {sig, "DeriveSharedSecret", HSM_ERR_VALIDATION},
	    {sig, "Frobnicate", HSM_ERR_VALIDATION},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		grant_args a = {.grantee = ALICE,
		                .ops = {cases[i].op},
		                .n_equals = SIZE_MAX,
		                .n_subset = SIZE_MAX};
		hsm_result r = grant(f, &officer, cases[i].key, &a, id, &token);
		if (r.err != cases[i].want)
			fail_msg("case %zu (%s): %d", i, cases[i].op, r.err);
	}
	/* Aliases are not taken; a grant to an unknown key is NotFound. */
	grant_args a = {
	    .grantee = ALICE, .ops = {"Encrypt"}, .n_equals = SIZE_MAX, .n_subset = SIZE_MAX};
	assert_int_equal(hsm_kms_create_alias(f->kms, &officer, "alias/g", sym).err, HSM_OK);
	assert_int_equal(grant(f, &officer, "alias/g", &a, id, &token).err, HSM_ERR_VALIDATION);
	assert_int_equal(
	    grant(f, &officer, "00000000-0000-4000-8000-000000000000", &a, id, &token).err,
	    HSM_ERR_NOT_FOUND);
	hsm_buf_free(&token);
}

/* The grant id a token names (the token NUL-terminated in place). */
static void token_names(hsm_buf *token, const char *key, const char *id)
{
	char tk[HSM_UUID_STRLEN + 1], tg[HSM_GRANT_ID_LEN + 1];
	assert_true(hsm_ok(hsm_buf_terminate(token)));
	assert_int_equal(hsm_grant_token_parse((const char *)token->data, tk, tg).err, HSM_OK);
	assert_string_equal(tk, key);
	assert_string_equal(tg, id);
}

/* A retried CreateGrant with the same Name answers the first grant, and so does its token. */
static void test_retried_create_token_names_the_first_grant(void **state)
{
	fx *f = *state;
	char key[HSM_UUID_STRLEN + 1], id[HSM_GRANT_ID_LEN + 1], again[HSM_GRANT_ID_LEN + 1];
	char kid[HSM_UUID_STRLEN + 1];
	hsm_buf first_token = {0}, token = {0};
	create_key(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, key);
	grant_args a = {.grantee = ALICE,
	                .retiring = BOB,
	                .ops = {"Encrypt"},
	                .n_equals = SIZE_MAX,
	                .n_subset = SIZE_MAX,
	                .name = "retried"};
	assert_int_equal(grant(f, &officer, key, &a, id, &first_token).err, HSM_OK);
	assert_int_equal(grant(f, &officer, key, &a, again, &token).err, HSM_OK);
	assert_string_equal(again, id);
	assert_int_equal(count_grants(f, key), 1);
	token_names(&first_token, key, id);
	token_names(&token, key, id);
	assert_false(token.len == first_token.len &&
	             memcmp(token.data, first_token.data, token.len) == 0);
	/* The retry's token retires the grant, and the grantee loses what it allowed. */
	assert_int_equal(encrypt(f, &alice, key, NULL, 0).err, HSM_OK);
	assert_int_equal(
	    hsm_kms_retire_grant(f->kms, &bob, (const char *)token.data, NULL, NULL, kid).err,
	    HSM_OK);
	assert_string_equal(kid, key);
	assert_int_equal(count_grants(f, key), 0);
	assert_int_equal(encrypt(f, &alice, key, NULL, 0).err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(
	    hsm_kms_retire_grant(f->kms, &bob, (const char *)first_token.data, NULL, NULL, kid)
	        .err,
	    HSM_ERR_NOT_FOUND);
	hsm_buf_free(&first_token);
	hsm_buf_free(&token);
}

static void test_retire_and_destruction(void **state)
{
	fx *f = *state;
	char key[HSM_UUID_STRLEN + 1], id[HSM_GRANT_ID_LEN + 1], kid[HSM_UUID_STRLEN + 1];
	hsm_buf token = {0};
	create_key(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, key);
	grant_args a = {.grantee = ALICE,
	                .retiring = BOB,
	                .ops = {"Encrypt"},
	                .n_equals = SIZE_MAX,
	                .n_subset = SIZE_MAX};
	assert_int_equal(grant(f, &officer, key, &a, id, &token).err, HSM_OK);
	assert_int_equal(hsm_kms_retire_grant(f->kms, &alice, NULL, key, id, kid).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_retire_grant(f->kms, &bob, NULL, key, id, kid).err, HSM_OK);
	assert_string_equal(kid, key);
	assert_int_equal(hsm_kms_retire_grant(f->kms, &bob, NULL, key, id, kid).err,
	                 HSM_ERR_NOT_FOUND);
	assert_int_equal(encrypt(f, &alice, key, NULL, 0).err, HSM_ERR_ACCESS_DENIED);

	/* The account as retiring principal: its crypto-officers retire the grant. */
	grant_args acct = {.grantee = ALICE,
	                   .retiring = "arn:aws:iam::111122223333:root",
	                   .ops = {"Encrypt"},
	                   .n_equals = SIZE_MAX,
	                   .n_subset = SIZE_MAX};
	assert_int_equal(grant(f, &officer, key, &acct, id, &token).err, HSM_OK);
	assert_int_equal(hsm_kms_retire_grant(f->kms, &bob, NULL, key, id, kid).err,
	                 HSM_ERR_ACCESS_DENIED); /* a crypto-user of the account: no */
	assert_int_equal(hsm_kms_retire_grant(f->kms, &officer, NULL, key, id, kid).err, HSM_OK);

	/* Destroying the key deletes its grants. */
	assert_int_equal(grant(f, &officer, key, &a, id, &token).err, HSM_OK);
	assert_int_equal(count_grants(f, key), 1);
	hsm_key_record r;
	memset(&r, 0, sizeof(r));
	assert_int_equal(hsm_kms_schedule_deletion(f->kms, &officer, key, 7, &r).err, HSM_OK);
	hsm_key_record_clear(&r);
	f->now += 7 * 86400;
	size_t done = 0;
	assert_int_equal(hsm_kms_run_due(f->kms, &done).err, HSM_OK);
	assert_int_equal(done, 1);
	bool truncated;
	size_t n = 0;
	assert_int_equal(
	    hsm_store_grant_list(f->store, key, NULL, NULL, 10, count_one, &n, &truncated).err,
	    HSM_OK);
	assert_int_equal(n, 0);
	assert_int_equal(hsm_kms_retire_grant(f->kms, &bob, NULL, key, id, kid).err,
	                 HSM_ERR_NOT_FOUND);
	hsm_buf_free(&token);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_grant_allows_grantee_only, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_constraints, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_create_grant_conditions_see_the_constraint_context,
	                                    setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_grant_is_for_aws_resource_on_every_grant_operation,
	                                    setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_grantee_grants_within_its_own, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_operations_must_suit_the_key, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_retried_create_token_names_the_first_grant, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_retire_and_destruction, setup, kms_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
