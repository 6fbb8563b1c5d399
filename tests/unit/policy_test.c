/*
 * Key policies: validation messages, evaluation order (deny wins, implicit
 * deny), Not* elements, wildcards, principals, every condition operator and
 * the default key policy.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kms/policy.h"
#include "kms/policy_internal.h"

#define ACCT "111122223333"
#define ALICE "arn:aws:iam::111122223333:user/alice"
#define BOB "arn:aws:iam::111122223333:user/team/bob"
#define ROLE "arn:aws:iam::111122223333:role/app"
#define EVE "arn:aws:iam::444455556666:user/eve"
#define KEY_ARN "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

#define STMT(body) "{\"Version\": \"2012-10-17\", \"Statement\": [" body "]}"
#define ALLOW_ALL_BODY "\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"*\", \"Resource\": \"*\""

static hsm_policy *parse_ok(const char *json)
{
	hsm_policy *p = NULL;
	if (hsm_failed(hsm_policy_parse(json, strlen(json), &p)))
		fail_msg("policy rejected: %s\n%s", hsm_last_message(), json);
	return p;
}

static hsm_policy_request req(const char *principal, const char *action)
{
	const char *account = strncmp(principal, "arn:aws:iam::444455556666", 25) == 0
	                          ? "444455556666"
	                          : ACCT;
	hsm_policy_request r = {.principal_arn = principal, .account_id = account,
	                        .action = action, .resource = KEY_ARN};
	return r;
}

static hsm_policy_decision decide(const hsm_policy *p, const hsm_policy_request *r)
{
	return hsm_policy_evaluate(p, r, NULL);
}

/* ---- Validation ----------------------------------------------------------------------- */

typedef struct bad_case {
	const char *json;
	const char *message; /* exact, or a prefix when it ends in "..." */
} bad_case;

static const bad_case bad[] = {
    {"{", "The policy document is not valid JSON (line 1, column 2): a syntax error or a "
          "duplicate key."},
    {"{\"Version\": \"2012-10-17\",\n \"Version\": \"2012-10-17\"}",
     "The policy document is not valid JSON (line 2, column ..."},
    {"{\"Version\": \"2012-10-17\", \"Sid\": \"a\\u0000b\"}",
     "The policy document is not valid JSON (line 1, column 36): a string holds U+0000."},
    {"[]", "The policy document must be a JSON object."},
    {"{\"Version\": \"2012-10-17\", \"Foo\": 1, \"Statement\": {" ALLOW_ALL_BODY "}}",
     "Unknown field 'Foo' in the policy document."},
    {"{\"Version\": \"2010-01-01\", \"Statement\": {" ALLOW_ALL_BODY "}}",
     "Version must be \"2012-10-17\" or \"2008-10-17\"."},
    {"{\"Version\": 2012, \"Statement\": {" ALLOW_ALL_BODY "}}",
     "Version must be \"2012-10-17\" or \"2008-10-17\"."},
    {"{\"Id\": 5, \"Statement\": {" ALLOW_ALL_BODY "}}", "Id must be a string."},
    {"{\"Version\": \"2012-10-17\"}", "The policy document requires a Statement."},
    {STMT(""), "Statement must be an object or a non-empty array of objects."},
    {"{\"Statement\": \"x\"}", "Statement must be an object or a non-empty array of objects."},
    {STMT("1"), "Statement 1 must be an object."},
    {STMT("{" ALLOW_ALL_BODY "}, {\"Effects\": \"Allow\"}"), "Statement 2: unknown field 'Effects'."},
    {STMT("{\"Principal\": \"*\", \"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: Effect is required and must be a string."},
    {STMT("{\"Effect\": \"allow\", \"Principal\": \"*\", \"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: Effect must be \"Allow\" or \"Deny\", not 'allow'."},
    {STMT("{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: Principal or NotPrincipal is required."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"NotPrincipal\": \"*\", \"Action\": \"*\", "
          "\"Resource\": \"*\"}"),
     "Statement 1: Principal and NotPrincipal cannot both be present."},
    {STMT("{\"Effect\": \"Allow\", \"NotPrincipal\": {\"AWS\": \"" ALICE "\"}, \"Action\": \"*\", "
          "\"Resource\": \"*\"}"),
     "Statement 1: NotPrincipal is supported with \"Effect\": \"Deny\" only."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"" ALICE "\", \"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: a Principal string must be \"*\"; name principals as {\"AWS\": ...}."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": {}, \"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: Principal must be \"*\" or a non-empty object."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": {\"Federated\": \"x\"}, \"Action\": \"*\", "
          "\"Resource\": \"*\"}"),
     "Statement 1: unsupported principal type 'Federated' (use AWS or Service)."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": \"arn:aws:iam::12345:root\"}, "
          "\"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: Policy contains a statement with one or more invalid principals: "
     "'arn:aws:iam::12345:root'."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": [\"" ALICE "\", "
          "\"arn:aws:iam::111122223333:user/*\"]}, \"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: Policy contains a statement with one or more invalid principals: "
     "'arn:aws:iam::111122223333:user/*'."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": \"arn:aws:iam::111122223333:group/g\"}, "
          "\"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: Policy contains a statement with one or more invalid principals: "
     "'arn:aws:iam::111122223333:group/g'."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": []}, \"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: principal values must be a string or a non-empty array."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": [5]}, \"Action\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: principal values must be non-empty strings."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Resource\": \"*\"}"),
     "Statement 1: Action or NotAction is required."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"*\", \"NotAction\": \"*\", "
          "\"Resource\": \"*\"}"),
     "Statement 1: Action and NotAction cannot both be present."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": 5, \"Resource\": \"*\"}"),
     "Statement 1: Action must be a string or a non-empty array of strings."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"NotAction\": [], \"Resource\": \"*\"}"),
     "Statement 1: NotAction must be a string or a non-empty array of strings."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": [\"kms:Encrypt\", 3], "
          "\"Resource\": \"*\"}"),
     "Statement 1: Action must contain only strings."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"Encrypt\", \"Resource\": \"*\"}"),
     "Statement 1: Action contains an invalid value 'Encrypt'."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"kms:En crypt\", \"Resource\": \"*\"}"),
     "Statement 1: Action contains an invalid value 'kms:En crypt'."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"*\"}"),
     "Statement 1: Resource or NotResource is required."},
    {STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"*\", \"Resource\": \"key/1\"}"),
     "Statement 1: Resource contains an invalid value 'key/1'."},
    {STMT("{\"Sid\": 5, " ALLOW_ALL_BODY "}"),
     "Statement 1: Sid must be a string of at most 256 bytes."},
    {STMT("{\"Sid\": \"a\", " ALLOW_ALL_BODY "}, {\"Sid\": \"b\", " ALLOW_ALL_BODY "}, "
          "{\"Sid\": \"a\", " ALLOW_ALL_BODY "}"),
     "Statement 3: Sid 'a' is already used by statement 1."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": \"x\"}"), "Statement 1: Condition must be an object."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": \"x\"}}"),
     "Statement 1: condition operator 'StringEquals' needs an object of condition keys."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-02-29\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-02-29'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-13-01\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-13-01'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-01-31T12:00:00\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-01-31T12:00:00'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-01-31T24:00:00Z\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-01-31T24:00:00Z'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-01-31 12:00:00Z\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-01-31 12:00:00Z'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-1-31\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-1-31'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"26-01-31\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '26-01-31'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-01-31T12:00:00+1:00\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-01-31T12:00:00+1:00'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-01-31T12Z\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-01-31T12Z'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-01-31T12:00:00.Z\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-01-31T12:00:00.Z'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"yesterday\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not 'yesterday'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"DateLessThan\": {\"aws:CurrentTime\": \"2026-01-31Z\"}}}"),
     "Statement 1: Date conditions take ISO 8601 dates (such as 2026-01-31T12:00:00Z) or "
     "seconds since the epoch, not '2026-01-31Z'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"10.0.0.0/33\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '10.0.0.0/33'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"10.0.0\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '10.0.0'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"10.0.0.0/\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '10.0.0.0/'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"10.0.0.0/-1\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '10.0.0.0/-1'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"10.0.0.0/ 8\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '10.0.0.0/ 8'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"10.0.0.0/08x\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '10.0.0.0/08x'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"2001:db8::/129\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '2001:db8::/129'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"2001:db8:::1\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '2001:db8:::1'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"example.com\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not 'example.com'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NotIpAddress\": {\"aws:SourceIp\": \"10.0.0.1/8/8\"}}}"),
     "Statement 1: IpAddress conditions take an IPv4 or IPv6 address or CIDR range (such as "
     "203.0.113.0/24), not '10.0.0.1/8/8'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NumericLessThan\": {\"kms:ValidTo\": \"soon\"}}}"),
     "Statement 1: Numeric conditions take numbers, not 'soon'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NumericEquals\": {\"kms:ValidTo\": \" 5\"}}}"),
     "Statement 1: Numeric conditions take numbers, not ' 5'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NumericEquals\": {\"kms:ValidTo\": \"0x10\"}}}"),
     "Statement 1: Numeric conditions take numbers, not '0x10'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEqualz\": {\"kms:CallerAccount\": \"1\"}}}"),
     "Statement 1: condition operator 'StringEqualz' is not supported."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"ForAnyValue:Null\": {\"kms:CallerAccount\": true}}}"),
     "Statement 1: the Null operator takes no set prefix or IfExists suffix."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": "
          "{\"kms:EncryptionContex:Purpose\": \"x\"}}}"),
     "Statement 1: condition key 'kms:EncryptionContex:Purpose' is not supported."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": {\"aws:Usename\": \"x\"}}}"),
     "Statement 1: condition key 'aws:Usename' is not supported."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": {\"Purpose\": \"x\"}}}"),
     "Statement 1: condition key 'Purpose' is not of the form <service>:<name>."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": {\"kms:EncryptionContext:\": \"x\"}}}"),
     "Statement 1: kms:EncryptionContext: needs a context key after the colon."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"ForAllValues:StringEquals\": "
          "{\"kms:EncryptionContext:Purpose\": \"x\"}}}"),
     "Statement 1: OverlyPermissiveCondition: Using the ForAllValues set operator with a "
     "single-valued condition key matches requests without the specified encryption context or "
     "with an unspecified encryption context. To fix, remove ForAllValues."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": {\"kms:CallerAccount\": []}}}"),
     "Statement 1: condition key 'kms:CallerAccount' has an empty list of values."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": {\"kms:CallerAccount\": {\"a\": 1}}}}"),
     "Statement 1: values of condition key 'kms:CallerAccount' must be strings, booleans or "
     "integers."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": {\"kms:CallerAccount\": 1.5}}}"),
     "Statement 1: values of condition key 'kms:CallerAccount' must be strings, booleans or "
     "integers."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"Bool\": {\"aws:SecureTransport\": \"yes\"}}}"),
     "Statement 1: Bool conditions take true or false, not 'yes'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"Null\": {\"kms:EncryptionContextKeys\": \"maybe\"}}}"),
     "Statement 1: Null conditions take true or false, not 'maybe'."},
    {STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"ForAllValues:StringEquals\": "
          "{\"aws:RequestTag/env\": \"prod\"}}}"),
     "Statement 1: OverlyPermissiveCondition: Using the ForAllValues set operator with a "
     "single-valued condition key matches requests without the specified tag or with an "
     "unspecified tag. To fix, remove ForAllValues."},
};

static void test_validation_messages(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hsm_policy *p = NULL;
		hsm_result r = hsm_policy_parse(bad[i].json, strlen(bad[i].json), &p);
		if (r.err != HSM_ERR_MALFORMED_POLICY)
			fail_msg("case %zu accepted or wrong error %s:\n%s", i, hsm_err_code_name(r.err),
			         bad[i].json);
		assert_null(p);
		size_t n = strlen(bad[i].message);
		bool prefix = n > 3 && strcmp(bad[i].message + n - 3, "...") == 0;
		bool same = prefix ? strncmp(hsm_last_message(), bad[i].message, n - 3) == 0
		                   : strcmp(hsm_last_message(), bad[i].message) == 0;
		if (!same)
			fail_msg("case %zu: message\n  %s\nexpected\n  %s", i, hsm_last_message(),
			         bad[i].message);
		assert_string_equal(hsm_err_kms_name(r.err), "MalformedPolicyDocumentException");
	}
}

/* The 32 KB quota: a document of exactly 32768 bytes is fine, one more byte is not. */
static void test_size_limit(void **state)
{
	(void)state;
	static char doc[HSM_POLICY_MAX_BYTES + 2];
	const char *body = STMT("{" ALLOW_ALL_BODY "}");
	size_t n = strlen(body);
	memcpy(doc, body, n);
	memset(doc + n, ' ', sizeof(doc) - n);
	hsm_policy *p = NULL;
	assert_true(hsm_ok(hsm_policy_parse(doc, HSM_POLICY_MAX_BYTES, &p)));
	hsm_policy_free(p);
	p = NULL;
	assert_int_equal(hsm_policy_parse(doc, HSM_POLICY_MAX_BYTES + 1, &p).err,
	                 HSM_ERR_MALFORMED_POLICY);
	assert_string_equal(hsm_last_message(),
	                    "The policy document is 32769 bytes; the limit is 32768 bytes.");
	assert_null(p);
}

/* Statement may be one object; Version may be absent or the older one. */
static void test_accepted_forms(void **state)
{
	(void)state;
	static const char *const good[] = {
	    "{\"Statement\": {" ALLOW_ALL_BODY "}}",
	    "{\"Version\": \"2008-10-17\", \"Id\": \"x\", \"Statement\": {" ALLOW_ALL_BODY "}}",
	    STMT("{\"Sid\": \"\", " ALLOW_ALL_BODY "}, {" ALLOW_ALL_BODY "}, {" ALLOW_ALL_BODY "}"),
	    STMT("{\"Effect\": \"Deny\", \"NotPrincipal\": {\"AWS\": [\"" ACCT "\", \"" ROLE "\", "
	         "\"arn:aws:sts::111122223333:assumed-role/app/session\"], \"Service\": "
	         "\"logs.amazonaws.com\"}, \"NotAction\": \"kms:Get*\", \"NotResource\": "
	         "[\"arn:aws:kms:*\"], \"Condition\": {}}"),
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		hsm_policy_free(parse_ok(good[i]));
	hsm_policy *p = parse_ok(good[2]);
	assert_int_equal(hsm_policy_statement_count(p), 3);
	hsm_policy_free(p);
}

/* A parsed policy is shared by reference and knows the document it came from. */
static void test_shared_by_reference(void **state)
{
	(void)state;
	const char *doc = STMT("{" ALLOW_ALL_BODY "}");
	size_t len = strlen(doc);
	hsm_policy *p = parse_ok(doc);
	assert_true(hsm_policy_parsed_from(p, doc, len));
	assert_false(hsm_policy_parsed_from(p, doc, len - 1));
	char other[256];
	memcpy(other, doc, len + 1);
	other[len - 3] = ' '; /* same length, one byte changed */
	assert_false(hsm_policy_parsed_from(p, other, len));
	hsm_policy_request r = req(ALICE, "kms:Encrypt");
	assert_ptr_equal(hsm_policy_ref(p), p);
	hsm_policy_free(p); /* the second reference still holds it (ASan would see a use after free) */
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	assert_true(hsm_policy_parsed_from(p, doc, len));
	hsm_policy_free(p);
}

/* ---- Evaluation order ------------------------------------------------------------------ */

static void test_default_policy(void **state)
{
	(void)state;
	hsm_buf doc = {0};
	hsm_policy_verdict v;
	assert_true(hsm_ok(hsm_policy_default(ACCT, &doc)));
	/* The document itself: KMS's default key policy. */
	json_error_t err;
	json_t *j = json_loadb((const char *)doc.data, doc.len, 0, &err);
	assert_non_null(j);
	json_t *st = json_array_get(json_object_get(j, "Statement"), 0);
	assert_string_equal(json_string_value(json_object_get(j, "Version")), "2012-10-17");
	assert_string_equal(json_string_value(json_object_get(st, "Sid")), "Enable IAM User Permissions");
	assert_string_equal(json_string_value(json_object_get(st, "Effect")), "Allow");
	assert_string_equal(json_string_value(json_object_get(json_object_get(st, "Principal"), "AWS")),
	                    "arn:aws:iam::111122223333:root");
	assert_string_equal(json_string_value(json_object_get(st, "Action")), "kms:*");
	assert_string_equal(json_string_value(json_object_get(st, "Resource")), "*");
	json_decref(j);

	hsm_policy *p = NULL;
	assert_true(hsm_ok(hsm_policy_parse((const char *)doc.data, doc.len, &p)));
	static const char *const actions[] = {"kms:Encrypt", "kms:Decrypt", "kms:PutKeyPolicy",
	                                      "kms:ScheduleKeyDeletion", "kms:GenerateMac"};
	static const char *const insiders[] = {ALICE, BOB, ROLE, "arn:aws:iam::111122223333:root"};
	for (size_t a = 0; a < 5; a++) {
		for (size_t i = 0; i < 4; i++) {
			hsm_policy_request r = req(insiders[i], actions[a]);
			assert_int_equal(hsm_policy_evaluate(p, &r, &v), HSM_POLICY_ALLOW);
			assert_string_equal(v.sid, "Enable IAM User Permissions");
			assert_int_equal(v.statement, 0);
		}
		hsm_policy_request r = req(EVE, actions[a]);
		assert_int_equal(hsm_policy_evaluate(p, &r, &v), HSM_POLICY_IMPLICIT_DENY);
		assert_null(v.sid);
		assert_int_equal(v.statement, -1);
	}
	/* Only kms: actions. */
	hsm_policy_request r = req(ALICE, "iam:CreateUser");
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	hsm_policy_free(p);
	hsm_buf_free(&doc);
	assert_int_equal(hsm_policy_default("1234", &doc).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_policy_default("11112222333a", &doc).err, HSM_ERR_VALIDATION);
	assert_int_equal(doc.len, 0);
}

static void test_deny_wins(void **state)
{
	(void)state;
	const char *docs[] = {STMT("{\"Sid\": \"AllowAccount\", \"Effect\": \"Allow\", \"Principal\": "
	                           "{\"AWS\": \"" ACCT "\"}, \"Action\": \"kms:*\", \"Resource\": \"*\"}, "
	                           "{\"Sid\": \"NoDelete\", \"Effect\": \"Deny\", \"Principal\": "
	                           "{\"AWS\": \"" ALICE "\"}, \"Action\": \"kms:ScheduleKeyDeletion\", "
	                           "\"Resource\": \"*\"}"),
	                      STMT("{\"Sid\": \"NoDelete\", \"Effect\": \"Deny\", \"Principal\": "
	                           "{\"AWS\": \"" ALICE "\"}, \"Action\": \"kms:ScheduleKeyDeletion\", "
	                           "\"Resource\": \"*\"}, {\"Sid\": \"AllowAccount\", \"Effect\": "
	                           "\"Allow\", \"Principal\": {\"AWS\": \"" ACCT "\"}, \"Action\": "
	                           "\"kms:*\", \"Resource\": \"*\"}")};
	for (int d = 0; d < 2; d++) {
		hsm_policy *p = parse_ok(docs[d]);
		hsm_policy_verdict v;
		hsm_policy_request r = req(ALICE, "kms:ScheduleKeyDeletion");
		assert_int_equal(hsm_policy_evaluate(p, &r, &v), HSM_POLICY_EXPLICIT_DENY);
		assert_string_equal(v.sid, "NoDelete");
		assert_int_equal(v.statement, d == 0 ? 1 : 0);
		r = req(ALICE, "kms:Encrypt");
		assert_int_equal(hsm_policy_evaluate(p, &r, &v), HSM_POLICY_ALLOW);
		assert_string_equal(v.sid, "AllowAccount");
		r = req(BOB, "kms:ScheduleKeyDeletion");
		assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
		r = req(EVE, "kms:Encrypt");
		assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
		hsm_policy_free(p);
	}
	/* Of several matching Allows, the first one is reported. */
	hsm_policy *two = parse_ok(STMT("{\"Sid\": \"First\", " ALLOW_ALL_BODY "}, {\"Sid\": "
	                                "\"Second\", " ALLOW_ALL_BODY "}"));
	hsm_policy_verdict v2;
	hsm_policy_request r2 = req(ALICE, "kms:Encrypt");
	assert_int_equal(hsm_policy_evaluate(two, &r2, &v2), HSM_POLICY_ALLOW);
	assert_string_equal(v2.sid, "First");
	assert_int_equal(v2.statement, 0);
	hsm_policy_free(two);
	/* A Deny without any Allow is still a Deny, and an empty match is an implicit deny. */
	hsm_policy *p = parse_ok(STMT("{\"Effect\": \"Deny\", \"Principal\": \"*\", \"Action\": "
	                              "\"kms:Decrypt\", \"Resource\": \"*\"}"));
	hsm_policy_request r = req(ALICE, "kms:Decrypt");
	assert_int_equal(decide(p, &r), HSM_POLICY_EXPLICIT_DENY);
	r = req(ALICE, "kms:Encrypt");
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	hsm_policy_free(p);
	assert_string_equal(hsm_policy_decision_name(HSM_POLICY_ALLOW), "Allow");
	assert_string_equal(hsm_policy_decision_name(HSM_POLICY_EXPLICIT_DENY), "ExplicitDeny");
	assert_string_equal(hsm_policy_decision_name(HSM_POLICY_IMPLICIT_DENY), "ImplicitDeny");
}

static void test_not_elements(void **state)
{
	(void)state;
	hsm_policy *p = parse_ok(STMT(
	    "{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": \"" ACCT "\"}, \"Action\": \"kms:*\", "
	    "\"Resource\": \"*\"},"
	    "{\"Sid\": \"OnlyCrypt\", \"Effect\": \"Deny\", \"Principal\": {\"AWS\": \"" ALICE "\"}, "
	    "\"NotAction\": [\"kms:Encrypt\", \"kms:Decrypt\"], \"Resource\": \"*\"},"
	    "{\"Sid\": \"OnlyAliceDecrypts\", \"Effect\": \"Deny\", \"NotPrincipal\": {\"AWS\": \"" ALICE
	    "\"}, \"Action\": \"kms:Decrypt\", \"Resource\": \"*\"}"));
	hsm_policy_verdict v;
	hsm_policy_request r = req(ALICE, "kms:Sign");
	assert_int_equal(hsm_policy_evaluate(p, &r, &v), HSM_POLICY_EXPLICIT_DENY);
	assert_string_equal(v.sid, "OnlyCrypt");
	r = req(ALICE, "kms:Decrypt");
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	r = req(BOB, "kms:Decrypt");
	assert_int_equal(hsm_policy_evaluate(p, &r, &v), HSM_POLICY_EXPLICIT_DENY);
	assert_string_equal(v.sid, "OnlyAliceDecrypts");
	r = req(BOB, "kms:Sign");
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	hsm_policy_free(p);

	/* AWS's pattern to deny all but one user: the user and its account in NotPrincipal.
	 * The account names its root there, not every user of it. */
	p = parse_ok(STMT(
	    "{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": \"" ACCT "\"}, \"Action\": \"kms:*\", "
	    "\"Resource\": \"*\"},"
	    "{\"Effect\": \"Deny\", \"NotPrincipal\": {\"AWS\": [\"" ALICE
	    "\", \"arn:aws:iam::" ACCT ":root\"]}, \"Action\": \"kms:Decrypt\", \"Resource\": \"*\"}"));
	r = req(ALICE, "kms:Decrypt");
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	r = req(BOB, "kms:Decrypt");
	assert_int_equal(decide(p, &r), HSM_POLICY_EXPLICIT_DENY);
	r = req("arn:aws:iam::" ACCT ":root", "kms:Decrypt");
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	hsm_policy_free(p);

	/* Another partition's ARNs name none of hsmd's callers, in Principal or NotPrincipal. */
	p = parse_ok(STMT("{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": [\"arn:aws-cn:iam::" ACCT
	                  ":root\", \"arn:aws-us-gov:iam::" ACCT ":user/alice\"]}, \"Action\": "
	                  "\"kms:*\", \"Resource\": \"*\"}"));
	r = req(ALICE, "kms:Encrypt");
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	hsm_policy_free(p);

	p = parse_ok(STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"kms:*\", "
	                  "\"NotResource\": \"arn:aws:kms:*:*:key/secret-*\"}"));
	r = req(ALICE, "kms:Encrypt");
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	r.resource = "arn:aws:kms:eu-west-1:111122223333:key/secret-1";
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	hsm_policy_free(p);
}

static void test_wildcards(void **state)
{
	(void)state;
	hsm_policy *p = parse_ok(STMT("{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": "
	                              "[\"kms:Generate*\", \"KMS:?ncrypt\", \"kms:describekey\"], "
	                              "\"Resource\": \"arn:aws:kms:eu-west-1:" ACCT ":key/*\"}"));
	static const char *const yes[] = {"kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
	                                  "kms:GenerateMac", "kms:Encrypt", "kms:ENCRYPT",
	                                  "kms:DescribeKey"};
	static const char *const no[] = {"kms:Decrypt", "kms:ReEncrypt", "kms:Generat",
	                                 "kms:ListKeys", "kmsx:Encrypt"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		hsm_policy_request r = req(ALICE, yes[i]);
		if (decide(p, &r) != HSM_POLICY_ALLOW)
			fail_msg("%s should match", yes[i]);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		hsm_policy_request r = req(ALICE, no[i]);
		if (decide(p, &r) != HSM_POLICY_IMPLICIT_DENY)
			fail_msg("%s should not match", no[i]);
	}
	/* Resources match case-sensitively. */
	hsm_policy_request r = req(ALICE, "kms:Encrypt");
	r.resource = "arn:aws:kms:EU-west-1:111122223333:key/x";
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	r.resource = "arn:aws:kms:eu-west-1:111122223333:alias/x";
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	hsm_policy_free(p);

	assert_true(hsm_pol_glob("*", ""));
	assert_true(hsm_pol_glob("", ""));
	assert_false(hsm_pol_glob("", "a"));
	assert_false(hsm_pol_glob("?", ""));
	assert_true(hsm_pol_glob("a*b*c", "aXbYbZc"));
	assert_false(hsm_pol_glob("a*b*c", "aXbYbZ"));
	assert_true(hsm_pol_glob("*a?", "bbbab"));
	assert_true(hsm_pol_glob("**x**", "x"));
	assert_false(hsm_pol_glob("abc", "ABC"));
	assert_true(hsm_pol_glob("a*?c", "abc"));
	assert_false(hsm_pol_glob("*?", ""));
	assert_true(hsm_pol_glob("*ab*ab", "abaabab"));
	assert_false(hsm_pol_glob("*ab*abc", "abaabab"));
	assert_true(hsm_pol_glob("k*y/*", "key/1"));
}

static void test_principals(void **state)
{
	(void)state;
#define ALICE2 "arn:aws:iam::111122223333:user/alice2"
	static const struct {
		const char *principal;
		const char *const match[5];
	} cases[] = {
	    {"\"*\"", {ALICE, BOB, ROLE, EVE, ALICE2}},
	    {"{\"AWS\": \"*\"}", {ALICE, BOB, ROLE, EVE, ALICE2}},
	    {"{\"AWS\": \"" ACCT "\"}", {ALICE, BOB, ROLE, ALICE2, NULL}},
	    {"{\"AWS\": \"arn:aws:iam::" ACCT ":root\"}", {ALICE, BOB, ROLE, ALICE2, NULL}},
	    {"{\"AWS\": [\"" ALICE "\", \"" ROLE "\"]}", {ALICE, ROLE, NULL, NULL, NULL}},
	    {"{\"AWS\": \"arn:aws:iam::444455556666:root\"}", {EVE, NULL, NULL, NULL, NULL}},
	    {"{\"Service\": \"logs.amazonaws.com\"}", {NULL, NULL, NULL, NULL, NULL}},
	};
	static const char *const everyone[] = {ALICE, BOB, ROLE, EVE, ALICE2};
	char doc[1024];
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		snprintf(doc, sizeof(doc),
		         STMT("{\"Effect\": \"Allow\", \"Principal\": %s, \"Action\": \"*\", "
		              "\"Resource\": \"*\"}"),
		         cases[c].principal);
		hsm_policy *p = parse_ok(doc);
		for (size_t i = 0; i < 5; i++) {
			bool expected = false;
			for (size_t k = 0; k < 5; k++)
				expected = expected || (cases[c].match[k] != NULL &&
				                        strcmp(cases[c].match[k], everyone[i]) == 0);
			hsm_policy_request r = req(everyone[i], "kms:Encrypt");
			if ((decide(p, &r) == HSM_POLICY_ALLOW) != expected)
				fail_msg("principal %s, caller %s: expected %d", cases[c].principal,
				         everyone[i], expected);
		}
		hsm_policy_free(p);
	}
}

/* ---- Conditions -------------------------------------------------------------------------- */

/* Does an allow-everything statement guarded by `condition` (a JSON object) allow r? */
static bool holds(const char *condition, const hsm_policy_request *r)
{
	char doc[4096];
	snprintf(doc, sizeof(doc), STMT("{" ALLOW_ALL_BODY ", \"Condition\": %s}"), condition);
	hsm_policy *p = parse_ok(doc);
	bool ok = decide(p, r) == HSM_POLICY_ALLOW;
	hsm_policy_free(p);
	return ok;
}

static hsm_policy_request with_ctx(const hsm_policy_pair *ctx, size_t n)
{
	hsm_policy_request r = req(ALICE, "kms:Encrypt");
	r.encryption_context = ctx;
	r.n_encryption_context = n;
	return r;
}

#define CTX(...) ((const hsm_policy_pair[]){__VA_ARGS__})
#define WITH(...) with_ctx(CTX(__VA_ARGS__), sizeof(CTX(__VA_ARGS__)) / sizeof(hsm_policy_pair))

static void expect_holds(const char *condition, hsm_policy_request r, bool expected, int line)
{
	if (holds(condition, &r) != expected)
		fail_msg("line %d: %s should be %s", line, condition, expected ? "true" : "false");
}
static hsm_policy_request with_extra(const char *key, const char *value);
#define HOLDS(c, r) expect_holds((c), (r), true, __LINE__)
#define FAILS(c, r) expect_holds((c), (r), false, __LINE__)

/*
 * A stored document is read as the hsmd that accepted it read it: an older one took
 * strtod's hexadecimal in Numeric values, and its keys stay usable with the same
 * meaning; a new document (CreateKey, PutKeyPolicy) with one is refused.
 */
static void test_stored_policy_keeps_older_numbers(void **state)
{
	(void)state;
	char doc[4096];
	snprintf(doc, sizeof(doc),
	         STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NumericLessThan\": "
	              "{\"kms:EncryptionContext:n\": \"0x1E\"}}}"));
	hsm_policy *p = NULL;
	assert_true(hsm_failed(hsm_policy_parse(doc, strlen(doc), &p)));
	assert_null(p);
	assert_true(hsm_ok(hsm_policy_parse_stored(doc, strlen(doc), &p)));
	hsm_policy_request below = WITH({"n", "29"}), at = WITH({"n", "30"});
	assert_int_equal(decide(p, &below), HSM_POLICY_ALLOW);
	assert_int_not_equal(decide(p, &at), HSM_POLICY_ALLOW);
	hsm_policy_free(p);
	/* What no hsmd ever accepted stays refused in a stored document too. */
	snprintf(doc, sizeof(doc),
	         STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"NumericLessThan\": "
	              "{\"kms:EncryptionContext:n\": \"thirty\"}}}"));
	assert_true(hsm_failed(hsm_policy_parse_stored(doc, strlen(doc), &p)));
}

static void test_string_operators(void **state)
{
	(void)state;
	hsm_policy_request none = with_ctx(NULL, 0);
	const char *eq = "{\"StringEquals\": {\"kms:EncryptionContext:Purpose\": \"x\"}}";
	HOLDS(eq, WITH({"Purpose", "x"}));
	HOLDS(eq, WITH({"Other", "y"}, {"Purpose", "x"}));
	FAILS(eq, WITH({"Purpose", "y"}));
	FAILS(eq, WITH({"Purpose", "X"}));
	FAILS(eq, none);
	/* KMS: the context key named in the condition key is not case sensitive. */
	HOLDS(eq, WITH({"purpose", "x"}));
	HOLDS("{\"StringEquals\": {\"KMS:EncryptionContext:PURPOSE\": \"x\"}}", WITH({"Purpose", "x"}));

	const char *ne = "{\"StringNotEquals\": {\"kms:EncryptionContext:Purpose\": [\"a\", \"b\"]}}";
	HOLDS(ne, WITH({"Purpose", "x"}));
	FAILS(ne, WITH({"Purpose", "a"}));
	FAILS(ne, WITH({"Purpose", "b"}));
	HOLDS(ne, none); /* a negated operator holds for an absent key */

	const char *eqic = "{\"StringEqualsIgnoreCase\": {\"kms:EncryptionContext:Purpose\": \"x\"}}";
	HOLDS(eqic, WITH({"Purpose", "X"}));
	FAILS(eqic, WITH({"Purpose", "y"}));
	FAILS(eqic, none);
	const char *neic = "{\"StringNotEqualsIgnoreCase\": {\"kms:EncryptionContext:Purpose\": \"x\"}}";
	FAILS(neic, WITH({"Purpose", "X"}));
	HOLDS(neic, WITH({"Purpose", "y"}));
	HOLDS(neic, none);

	/* ? is one character, however many bytes its UTF-8 takes. */
	HOLDS("{\"StringLike\": {\"kms:EncryptionContext:p\": \"a?c\"}}", WITH({"p", "a\xc3\xa9" "c"}));
	HOLDS("{\"StringLike\": {\"kms:EncryptionContext:p\": \"a?c\"}}", WITH({"p", "a\xe2\x82\xac" "c"}));
	FAILS("{\"StringLike\": {\"kms:EncryptionContext:p\": \"a??c\"}}", WITH({"p", "a\xc3\xa9" "c"}));
	const char *like = "{\"StringLike\": {\"kms:EncryptionContext:Purpose\": \"app-*-v?\"}}";
	HOLDS(like, WITH({"Purpose", "app-foo-v1"}));
	HOLDS(like, WITH({"Purpose", "app--v9"}));
	FAILS(like, WITH({"Purpose", "app-foo-v10"}));
	FAILS(like, WITH({"Purpose", "APP-foo-v1"}));
	FAILS(like, none);
	const char *nlike = "{\"StringNotLike\": {\"kms:EncryptionContext:Purpose\": \"app-*-v?\"}}";
	HOLDS(nlike, WITH({"Purpose", "app-foo-v10"}));
	FAILS(nlike, WITH({"Purpose", "app-foo-v1"}));
	HOLDS(nlike, none);

	/* Numeric operators compare numbers, not text: "10" > "9", "1e3" == "1000". */
	const char *lt = "{\"NumericLessThan\": {\"kms:EncryptionContext:n\": \"10\"}}";
	HOLDS(lt, WITH({"n", "9"}));
	HOLDS(lt, WITH({"n", "-3.5"}));
	FAILS(lt, WITH({"n", "10"}));
	FAILS(lt, WITH({"n", "100"}));
	FAILS(lt, WITH({"n", "nine"})); /* not a number: no match */
	FAILS(lt, none);
	const char *le = "{\"NumericLessThanEquals\": {\"kms:EncryptionContext:n\": 10}}";
	HOLDS(le, WITH({"n", "10"}));
	FAILS(le, WITH({"n", "10.5"}));
	const char *gt = "{\"NumericGreaterThan\": {\"kms:EncryptionContext:n\": \"10\"}}";
	HOLDS(gt, WITH({"n", "11"}));
	FAILS(gt, WITH({"n", "10"}));
	FAILS(gt, WITH({"n", "9"}));
	FAILS(gt, WITH({"n", "0x10"})); /* decimal only, not 16 */
	const char *ge = "{\"NumericGreaterThanEquals\": {\"kms:EncryptionContext:n\": \"10\"}}";
	HOLDS(ge, WITH({"n", "10"}));
	FAILS(ge, WITH({"n", "9.99"}));
	const char *neq = "{\"NumericEquals\": {\"kms:EncryptionContext:n\": [\"1000\", \"7\"]}}";
	HOLDS(neq, WITH({"n", "1e3"}));
	HOLDS(neq, WITH({"n", "7"}));
	FAILS(neq, WITH({"n", "8"}));
	const char *nne = "{\"NumericNotEquals\": {\"kms:EncryptionContext:n\": \"7\"}}";
	HOLDS(nne, WITH({"n", "8"}));
	FAILS(nne, WITH({"n", "7.0"}));
	HOLDS(nne, none);

	hsm_policy_request alice = req(ALICE, "kms:Encrypt"), role = req(ROLE, "kms:Encrypt");
	const char *arn = "{\"ArnLike\": {\"aws:PrincipalArn\": \"arn:aws:iam::*:user/*\"}}";
	HOLDS(arn, alice);
	FAILS(arn, role);
	HOLDS("{\"ArnEquals\": {\"aws:PrincipalArn\": \"" ALICE "\"}}", alice);
	FAILS("{\"ArnNotEquals\": {\"aws:PrincipalArn\": \"" ALICE "\"}}", alice);
	HOLDS("{\"ArnNotLike\": {\"aws:PrincipalArn\": \"*:user/*\"}}", role);
	/* IAM matches an ARN part by part: no wildcard spans the colons between them. */
	FAILS("{\"ArnLike\": {\"aws:PrincipalArn\": \"arn:aws:*/alice\"}}", alice);
	HOLDS("{\"StringLike\": {\"aws:PrincipalArn\": \"arn:aws:*/alice\"}}", alice);
	HOLDS("{\"ArnLike\": {\"aws:PrincipalArn\": \"arn:*:iam::111122223333:user/*\"}}", alice);
	HOLDS("{\"ArnLike\": {\"aws:PrincipalArn\": \"arn:aws:iam::*:*\"}}", alice);
	FAILS("{\"ArnLike\": {\"aws:PrincipalArn\": \"arn:aws:iam:*:user/alice\"}}", alice);
	HOLDS("{\"ArnNotLike\": {\"aws:PrincipalArn\": \"arn:aws:*/alice\"}}", alice);
	hsm_policy_request res = with_extra("aws:SourceArn", "arn:aws:kms:eu-west-1:1:key/a:b");
	HOLDS("{\"ArnLike\": {\"aws:SourceArn\": \"arn:aws:kms:*:*:key/a:*\"}}", res);
	FAILS("{\"ArnLike\": {\"aws:SourceArn\": \"arn:aws:kms:*:key/a:*\"}}", res);
}

#define WITH_EXTRA(k, v) with_extra((k), (v))
/* Policy variables: expanded in 2012-10-17 policies, text in 2008-10-17 ones and without Version. */
static void test_policy_variables(void **state)
{
	(void)state;
	/* AWS KMS's per-user example: each user may use only the context naming them. */
	const char *mine = "{\"StringEquals\": {\"kms:EncryptionContext:user\": \"${aws:username}\"}}";
	HOLDS(mine, WITH({"user", "alice"}));
	FAILS(mine, WITH({"user", "bob"}));
	FAILS(mine, WITH({"user", "${aws:username}"})); /* the literal text is nobody's */
	hsm_policy_request bob = req(BOB, "kms:Encrypt");
	bob.encryption_context = CTX({"user", "bob"});
	bob.n_encryption_context = 1;
	HOLDS(mine, bob); /* the name, not the path */
	hsm_policy_request role = req(ROLE, "kms:Encrypt"); /* no aws:username: matches nothing */
	role.encryption_context = CTX({"user", "app"});
	role.n_encryption_context = 1;
	FAILS(mine, role);
	HOLDS("{\"StringNotEquals\": {\"kms:EncryptionContext:user\": \"${aws:username}\"}}", role);
	/* Names in any case; the other variables; Like; the escapes. */
	HOLDS("{\"StringEquals\": {\"kms:EncryptionContext:who\": \"${AWS:UserName}@${aws:PrincipalAccount}\"}}",
	      WITH({"who", "alice@" ACCT}));
	HOLDS("{\"StringEquals\": {\"kms:EncryptionContext:who\": \"${aws:PrincipalArn}\"}}",
	      WITH({"who", ALICE}));
	HOLDS("{\"StringEquals\": {\"kms:EncryptionContext:who\": \"${kms:CallerAccount}\"}}",
	      WITH({"who", ACCT}));
	HOLDS("{\"StringLike\": {\"kms:EncryptionContext:path\": \"home/${aws:username}/*\"}}",
	      WITH({"path", "home/alice/docs"}));
	FAILS("{\"StringLike\": {\"kms:EncryptionContext:path\": \"home/${aws:username}/*\"}}",
	      WITH({"path", "home/bob/docs"}));
	HOLDS("{\"StringEquals\": {\"kms:EncryptionContext:p\": \"${$}{x}${*}${?}\"}}",
	      WITH({"p", "${x}*?"}));
	FAILS("{\"StringEquals\": {\"kms:EncryptionContext:p\": \"${*}\"}}", WITH({"p", "abc"}));
	/* A Deny keyed on a variable fires for the user it names only. */
	hsm_policy *p = parse_ok(STMT("{" ALLOW_ALL_BODY "}, {\"Effect\": \"Deny\", \"Principal\": \"*\", "
	                              "\"Action\": \"kms:Decrypt\", \"Resource\": \"*\", "
	                              "\"Condition\": {\"StringEquals\": "
	                              "{\"kms:EncryptionContext:owner\": \"${aws:username}\"}}}"));
	hsm_policy_request r = with_ctx(CTX({"owner", "alice"}), 1);
	r.action = "kms:Decrypt";
	assert_int_equal(decide(p, &r), HSM_POLICY_EXPLICIT_DENY);
	r.encryption_context = CTX({"owner", "carol"});
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	hsm_policy_free(p);
	/* 2008-10-17, or no Version: text, as IAM reads such policies. */
	const char *old[] = {"{\"Version\": \"2008-10-17\", \"Statement\": [{" ALLOW_ALL_BODY
	                     ", \"Condition\": {\"StringEquals\": {\"kms:EncryptionContext:user\": "
	                     "\"${aws:username}\"}}}]}",
	                     "{\"Statement\": [{" ALLOW_ALL_BODY
	                     ", \"Condition\": {\"StringEquals\": {\"kms:EncryptionContext:user\": "
	                     "\"${aws:username}\"}}}]}"};
	for (size_t i = 0; i < 2; i++) {
		p = parse_ok(old[i]);
		r = WITH({"user", "${aws:username}"});
		assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
		r = WITH({"user", "alice"});
		assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
		hsm_policy_free(p);
	}
	/* Never compared as text in a 2012-10-17 policy: what hsmd cannot expand is refused. */
	const char *refused[] = {"${aws:userid}", "${aws:username, 'x'}", "abc${aws:username",
	                         "${kms:EncryptionContext:x}"};
	for (size_t i = 0; i < 4; i++) {
		char doc[1024];
		snprintf(doc, sizeof(doc),
		         STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringEquals\": "
		              "{\"kms:EncryptionContext:u\": \"%s\"}}}"),
		         refused[i]);
		hsm_policy *q = NULL;
		assert_int_equal(hsm_policy_parse(doc, strlen(doc), &q).err, HSM_ERR_MALFORMED_POLICY);
		assert_null(q);
		assert_non_null(strstr(hsm_last_message(), "${"));
	}
	const char *like_star = STMT("{" ALLOW_ALL_BODY ", \"Condition\": {\"StringLike\": "
	                             "{\"kms:EncryptionContext:u\": \"a${*}\"}}}");
	hsm_policy *q = NULL;
	assert_int_equal(hsm_policy_parse(like_star, strlen(like_star), &q).err,
	                 HSM_ERR_MALFORMED_POLICY);
}

/* A Deny with a negated operator: a context key spelt twice cannot slip past it. */
static void test_case_variant_context_keys_and_deny(void **state)
{
	(void)state;
	hsm_policy *p = parse_ok(STMT("{" ALLOW_ALL_BODY "}, {\"Effect\": \"Deny\", \"Principal\": \"*\", "
	                              "\"Action\": \"kms:Encrypt\", \"Resource\": \"*\", "
	                              "\"Condition\": {\"StringNotEquals\": "
	                              "{\"kms:EncryptionContext:stage\": \"ok\"}}}"));
	hsm_policy_request r = WITH({"stage", "ok"});
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	r = WITH({"stage", "prod"});
	assert_int_equal(decide(p, &r), HSM_POLICY_EXPLICIT_DENY);
	r = WITH({"stage", "ok"}, {"Stage", "prod"});
	assert_int_equal(decide(p, &r), HSM_POLICY_EXPLICIT_DENY);
	r = WITH({"Stage", "ok"}, {"stage", "ok"});
	assert_int_equal(decide(p, &r), HSM_POLICY_ALLOW);
	r = with_ctx(NULL, 0); /* absent: a negated operator holds */
	assert_int_equal(decide(p, &r), HSM_POLICY_EXPLICIT_DENY);
	hsm_policy_free(p);
	/* In an Allow the same condition keeps its meaning: no spelling matches "prod". */
	const char *ne = "{\"StringNotEquals\": {\"kms:EncryptionContext:stage\": \"prod\"}}";
	FAILS(ne, WITH({"stage", "ok"}, {"Stage", "prod"}));
	HOLDS(ne, WITH({"stage", "ok"}));
	/* An Allow for one tenant is not met by a context that also names another. */
	const char *eq = "{\"StringEquals\": {\"kms:EncryptionContext:tenant\": \"alice\"}}";
	HOLDS(eq, WITH({"tenant", "alice"}));
	HOLDS(eq, WITH({"Tenant", "alice"}, {"tenant", "alice"}));
	FAILS(eq, WITH({"tenant", "bob"}, {"Tenant", "alice"}));
	FAILS(eq, WITH({"Tenant", "alice"}, {"tenant", "bob"}));
}

/* Does an allow-everything policy with a Deny of everything guarded by `condition` deny r? */
static void expect_denies(const char *condition, hsm_policy_request r, bool expected, int line)
{
	char doc[4096];
	snprintf(doc, sizeof(doc),
	         STMT("{" ALLOW_ALL_BODY "}, {\"Effect\": \"Deny\", \"Principal\": \"*\", "
	              "\"Action\": \"*\", \"Resource\": \"*\", \"Condition\": %s}"),
	         condition);
	hsm_policy *p = parse_ok(doc);
	if ((decide(p, &r) == HSM_POLICY_EXPLICIT_DENY) != expected)
		fail_msg("line %d: a Deny on %s should %s", line, condition,
		         expected ? "deny" : "not deny");
	hsm_policy_free(p);
}
#define DENIES(c, r) expect_denies((c), (r), true, __LINE__)
#define LETS_BY(c, r) expect_denies((c), (r), false, __LINE__)

/*
 * kms:EncryptionContext:<key> is single-valued: ForAnyValue on it means the
 * plain operator, so the rule for two spellings of the context key holds with
 * that prefix too (an Allow needs every spelling, a Deny any one).
 */
static void test_case_variant_context_keys_and_set_operators(void **state)
{
	(void)state;
	hsm_policy_request none = with_ctx(NULL, 0);
	static const char *const prefixes[] = {"", "ForAnyValue:"};
	for (size_t i = 0; i < 2; i++) {
		char eq[256], ne[256], deny_eq[256], deny_ne[256];
		snprintf(eq, sizeof(eq), "{\"%sStringEquals\": {\"kms:EncryptionContext:tenant\": "
		         "\"acme\"}}", prefixes[i]);
		snprintf(ne, sizeof(ne), "{\"%sStringNotEquals\": {\"kms:EncryptionContext:tenant\": "
		         "\"evil\"}}", prefixes[i]);
		snprintf(deny_eq, sizeof(deny_eq), "{\"%sStringEquals\": "
		         "{\"kms:EncryptionContext:tenant\": \"evil\"}}", prefixes[i]);
		snprintf(deny_ne, sizeof(deny_ne), "{\"%sStringNotEquals\": "
		         "{\"kms:EncryptionContext:tenant\": \"acme\"}}", prefixes[i]);
		/* In an Allow: every spelling must satisfy the operator. */
		HOLDS(eq, WITH({"tenant", "acme"}));
		HOLDS(eq, WITH({"Tenant", "acme"}, {"tenant", "acme"}));
		FAILS(eq, WITH({"tenant", "evil"}, {"Tenant", "acme"}));
		FAILS(eq, WITH({"Tenant", "acme"}, {"tenant", "evil"}));
		HOLDS(ne, WITH({"tenant", "acme"}));
		HOLDS(ne, WITH({"TENANT", "acme"}, {"tenant", "other"}));
		FAILS(ne, WITH({"tenant", "evil"}, {"Tenant", "acme"}));
		FAILS(ne, WITH({"Tenant", "acme"}, {"tenant", "evil"}));
		/* In a Deny: one spelling satisfying it is enough. */
		LETS_BY(deny_eq, WITH({"tenant", "acme"}));
		DENIES(deny_eq, WITH({"tenant", "evil"}));
		DENIES(deny_eq, WITH({"tenant", "acme"}, {"Tenant", "evil"}));
		DENIES(deny_eq, WITH({"Tenant", "evil"}, {"tenant", "acme"}));
		LETS_BY(deny_ne, WITH({"tenant", "acme"}, {"Tenant", "acme"}));
		DENIES(deny_ne, WITH({"tenant", "acme"}, {"Tenant", "evil"}));
		DENIES(deny_ne, WITH({"Tenant", "evil"}, {"tenant", "acme"}));
	}
	/* The prefix still decides for an absent key: ForAnyValue over no value is false,
	 * a plain negated operator true. */
	FAILS("{\"StringEquals\": {\"kms:EncryptionContext:tenant\": \"acme\"}}", none);
	HOLDS("{\"StringNotEquals\": {\"kms:EncryptionContext:tenant\": \"evil\"}}", none);
	FAILS("{\"ForAnyValue:StringEquals\": {\"kms:EncryptionContext:tenant\": \"acme\"}}",
	      none);
	FAILS("{\"ForAnyValue:StringNotEquals\": {\"kms:EncryptionContext:tenant\": \"evil\"}}",
	      none);
	LETS_BY("{\"ForAnyValue:StringNotEquals\": {\"kms:EncryptionContext:tenant\": "
	        "\"acme\"}}", none);
	/* IfExists: an absent key holds; present spellings still must all match. */
	HOLDS("{\"ForAnyValue:StringEqualsIfExists\": {\"kms:EncryptionContext:tenant\": "
	      "\"acme\"}}", none);
	FAILS("{\"ForAnyValue:StringEqualsIfExists\": {\"kms:EncryptionContext:tenant\": "
	      "\"acme\"}}", WITH({"tenant", "acme"}, {"Tenant", "evil"}));
	/* ForAllValues on it is refused as overly permissive, in a Deny as in an Allow. */
	const char *deny_all = STMT("{" ALLOW_ALL_BODY "}, {\"Effect\": \"Deny\", "
	                            "\"Principal\": \"*\", \"Action\": \"*\", "
	                            "\"Resource\": \"*\", \"Condition\": "
	                            "{\"ForAllValues:StringEquals\": "
	                            "{\"kms:EncryptionContext:tenant\": \"evil\"}}}");
	hsm_policy *q = NULL;
	assert_int_equal(hsm_policy_parse(deny_all, strlen(deny_all), &q).err,
	                 HSM_ERR_MALFORMED_POLICY);
	assert_null(q);
}

static hsm_policy_request with_extra(const char *key, const char *value)
{
	static hsm_policy_pair pair;
	pair = (hsm_policy_pair){key, value};
	hsm_policy_request r = req(ALICE, "kms:Encrypt");
	r.extra = &pair;
	r.n_extra = 1;
	return r;
}

/* Date operators compare instants, whatever their spelling, and ignore what is not one. */
static void test_date_operators(void **state)
{
	(void)state;
	hsm_policy_request none = req(ALICE, "kms:Encrypt");
	const char *lt = "{\"DateLessThan\": {\"aws:CurrentTime\": \"2026-06-01T00:00:00Z\"}}";
	HOLDS(lt, WITH_EXTRA("aws:CurrentTime", "2026-05-31T23:59:59Z"));
	FAILS(lt, WITH_EXTRA("aws:CurrentTime", "2026-06-01T00:00:00Z"));
	FAILS(lt, WITH_EXTRA("aws:CurrentTime", "2026-06-01T00:00:01Z"));
	FAILS(lt, WITH_EXTRA("aws:CurrentTime", "soon")); /* not an instant: no match */
	FAILS(lt, none);
	/* A zone offset moves the instant; fractions of a second count. */
	HOLDS(lt, WITH_EXTRA("aws:CurrentTime", "2026-06-01T01:59:59+02:00"));
	FAILS(lt, WITH_EXTRA("aws:CurrentTime", "2026-05-31T22:00:00-02:00"));
	HOLDS(lt, WITH_EXTRA("aws:CurrentTime", "2026-05-31T23:59:59.999Z"));
	/* Epoch seconds on either side: 2026-06-01T00:00:00Z is 1780272000. */
	HOLDS(lt, WITH_EXTRA("aws:CurrentTime", "1780271999"));
	FAILS(lt, WITH_EXTRA("aws:CurrentTime", "1780272000"));
	const char *ge = "{\"DateGreaterThanEquals\": {\"aws:EpochTime\": 1780272000}}";
	HOLDS(ge, WITH_EXTRA("aws:EpochTime", "1780272000"));
	HOLDS(ge, WITH_EXTRA("aws:EpochTime", "2026-06-01"));
	FAILS(ge, WITH_EXTRA("aws:EpochTime", "2026-05-31T23:59:59Z"));
	const char *gt = "{\"DateGreaterThan\": {\"aws:CurrentTime\": \"2026-01\"}}";
	HOLDS(gt, WITH_EXTRA("aws:CurrentTime", "2026-01-01T00:00:01Z"));
	FAILS(gt, WITH_EXTRA("aws:CurrentTime", "2026-01-01T00:00:00Z"));
	/* A number is always seconds since the epoch, never a year. */
	const char *year = "{\"DateLessThan\": {\"aws:CurrentTime\": \"2026\"}}";
	HOLDS(year, WITH_EXTRA("aws:CurrentTime", "1970-01-01T00:33:45Z"));
	FAILS(year, WITH_EXTRA("aws:CurrentTime", "1970-01-01T00:33:46Z"));
	const char *le = "{\"DateLessThanEquals\": {\"aws:CurrentTime\": \"2024-02\"}}";
	HOLDS(le, WITH_EXTRA("aws:CurrentTime", "2024-02-01T00:00:00Z"));
	FAILS(le, WITH_EXTRA("aws:CurrentTime", "2024-02-01T00:00:01Z"));
	/* Leap days and centuries: 2000-02-29 exists, 1900 is before the epoch. */
	const char *eq = "{\"DateEquals\": {\"aws:CurrentTime\": [\"2000-02-29T12:00Z\", "
	                 "\"1900-01-01\"]}}";
	HOLDS(eq, WITH_EXTRA("aws:CurrentTime", "951825600"));
	HOLDS(eq, WITH_EXTRA("aws:CurrentTime", "-2208988800"));
	FAILS(eq, WITH_EXTRA("aws:CurrentTime", "951825601"));
	const char *ne = "{\"DateNotEquals\": {\"aws:CurrentTime\": \"2000-02-29T12:00:00Z\"}}";
	FAILS(ne, WITH_EXTRA("aws:CurrentTime", "2000-02-29T13:00:00+01:00"));
	HOLDS(ne, WITH_EXTRA("aws:CurrentTime", "2000-03-01T12:00:00Z"));
	HOLDS(ne, none);
	HOLDS("{\"DateLessThanIfExists\": {\"kms:ValidTo\": \"2030-01-01\"}}", none);
	FAILS("{\"DateLessThanIfExists\": {\"kms:ValidTo\": \"2030-01-01\"}}",
	      WITH_EXTRA("kms:ValidTo", "1893456000"));
}

/* IpAddress matches addresses inside a network, IPv4 or IPv6. */
static void test_ip_operators(void **state)
{
	(void)state;
	hsm_policy_request none = req(ALICE, "kms:Encrypt");
	const char *ip = "{\"IpAddress\": {\"aws:SourceIp\": [\"203.0.113.0/24\", "
	                 "\"2001:db8:1234::/48\", \"192.0.2.7\"]}}";
	HOLDS(ip, WITH_EXTRA("aws:SourceIp", "203.0.113.0"));
	HOLDS(ip, WITH_EXTRA("aws:SourceIp", "203.0.113.255"));
	FAILS(ip, WITH_EXTRA("aws:SourceIp", "203.0.114.1"));
	HOLDS(ip, WITH_EXTRA("aws:SourceIp", "192.0.2.7"));
	FAILS(ip, WITH_EXTRA("aws:SourceIp", "192.0.2.8"));
	HOLDS(ip, WITH_EXTRA("aws:SourceIp", "2001:db8:1234:ffff::1"));
	FAILS(ip, WITH_EXTRA("aws:SourceIp", "2001:db8:1235::1"));
	/* An IPv4 client seen through a dual-stack socket is still an IPv4 client. */
	HOLDS(ip, WITH_EXTRA("aws:SourceIp", "::ffff:203.0.113.9"));
	FAILS(ip, WITH_EXTRA("aws:SourceIp", "::ffff:203.0.114.9"));
	FAILS(ip, WITH_EXTRA("aws:SourceIp", "not-an-address"));
	FAILS(ip, WITH_EXTRA("aws:SourceIp", "203.0.113.0/24")); /* a request value is an address */
	FAILS(ip, none);
	/* Prefixes that are not whole bytes, and the whole address space. */
	const char *odd = "{\"IpAddress\": {\"aws:SourceIp\": \"10.96.0.0/11\"}}";
	HOLDS(odd, WITH_EXTRA("aws:SourceIp", "10.127.255.255"));
	FAILS(odd, WITH_EXTRA("aws:SourceIp", "10.128.0.0"));
	FAILS(odd, WITH_EXTRA("aws:SourceIp", "10.95.255.255"));
	HOLDS("{\"IpAddress\": {\"aws:SourceIp\": \"0.0.0.0/0\"}}",
	      WITH_EXTRA("aws:SourceIp", "198.51.100.1"));
	FAILS("{\"IpAddress\": {\"aws:SourceIp\": \"0.0.0.0/0\"}}",
	      WITH_EXTRA("aws:SourceIp", "::1")); /* an IPv4 range holds no IPv6 address */
	HOLDS("{\"IpAddress\": {\"aws:SourceIp\": \"::/0\"}}", WITH_EXTRA("aws:SourceIp", "::1"));
	const char *not = "{\"NotIpAddress\": {\"aws:SourceIp\": [\"127.0.0.0/8\", \"::1\"]}}";
	FAILS(not, WITH_EXTRA("aws:SourceIp", "127.0.0.1"));
	FAILS(not, WITH_EXTRA("aws:SourceIp", "::1"));
	HOLDS(not, WITH_EXTRA("aws:SourceIp", "192.0.2.1"));
	HOLDS(not, none);
}

static void test_null_bool_if_exists(void **state)
{
	(void)state;
	hsm_policy_request none = with_ctx(NULL, 0);
	HOLDS("{\"Null\": {\"kms:EncryptionContextKeys\": false}}", WITH({"Purpose", "x"}));
	FAILS("{\"Null\": {\"kms:EncryptionContextKeys\": \"false\"}}", none);
	HOLDS("{\"Null\": {\"kms:EncryptionContextKeys\": \"true\"}}", none);
	FAILS("{\"Null\": {\"kms:EncryptionContextKeys\": true}}", WITH({"Purpose", "x"}));
	hsm_policy_request r = req(ALICE, "kms:Encrypt");
	HOLDS("{\"Null\": {\"kms:EncryptionAlgorithm\": true}}", r);
	r.encryption_algorithm = "SYMMETRIC_DEFAULT";
	FAILS("{\"Null\": {\"kms:EncryptionAlgorithm\": true}}", r);

	const hsm_policy_pair tls[] = {{"aws:SecureTransport", "true"}};
	const hsm_policy_pair plain[] = {{"aws:SecureTransport", "false"}};
	const char *b = "{\"Bool\": {\"aws:SecureTransport\": true}}";
	r = req(ALICE, "kms:Encrypt");
	FAILS(b, r); /* absent */
	HOLDS("{\"BoolIfExists\": {\"aws:SecureTransport\": \"true\"}}", r);
	r.extra = tls;
	r.n_extra = 1;
	HOLDS(b, r);
	HOLDS("{\"Bool\": {\"aws:SecureTransport\": \"TRUE\"}}", r);
	FAILS("{\"Bool\": {\"aws:SecureTransport\": false}}", r);
	r.extra = plain;
	FAILS(b, r);
	FAILS("{\"BoolIfExists\": {\"aws:SecureTransport\": \"true\"}}", r);

	const char *ie = "{\"StringEqualsIfExists\": {\"kms:EncryptionAlgorithm\": \"SYMMETRIC_DEFAULT\"}}";
	const char *nie = "{\"StringNotEqualsIfExists\": {\"kms:EncryptionAlgorithm\": \"SYMMETRIC_DEFAULT\"}}";
	r = req(ALICE, "kms:Encrypt");
	HOLDS(ie, r);
	HOLDS(nie, r);
	r.encryption_algorithm = "SYMMETRIC_DEFAULT";
	HOLDS(ie, r);
	FAILS(nie, r);
	r.encryption_algorithm = "RSAES_OAEP_SHA_256";
	FAILS(ie, r);
	HOLDS(nie, r);
}

static void test_set_operators(void **state)
{
	(void)state;
	hsm_policy_request none = with_ctx(NULL, 0);
	const char *any = "{\"ForAnyValue:StringEquals\": {\"kms:EncryptionContextKeys\": \"AppName\"}}";
	HOLDS(any, WITH({"AppName", "a"}, {"Project", "p"}));
	FAILS(any, WITH({"Project", "p"}));
	FAILS(any, none); /* ForAnyValue over an empty set is false */
	FAILS(any, WITH({"appname", "a"}));
	HOLDS("{\"ForAnyValue:StringEqualsIgnoreCase\": {\"kms:EncryptionContextKeys\": \"AppName\"}}",
	      WITH({"appname", "a"}));

	const char *all = "{\"ForAllValues:StringEquals\": {\"kms:EncryptionContextKeys\": "
	                  "[\"AppName\", \"Project\"]}}";
	HOLDS(all, WITH({"AppName", "a"}));
	HOLDS(all, WITH({"Project", "p"}, {"AppName", "a"}));
	FAILS(all, WITH({"AppName", "a"}, {"Other", "o"}));
	HOLDS(all, none); /* ForAllValues over an empty set is true */

	const char *all_not = "{\"ForAllValues:StringNotEquals\": {\"kms:EncryptionContextKeys\": \"Secret\"}}";
	HOLDS(all_not, WITH({"AppName", "a"}, {"Project", "p"}));
	FAILS(all_not, WITH({"AppName", "a"}, {"Secret", "s"}));
	HOLDS(all_not, none);

	const char *any_not = "{\"ForAnyValue:StringNotLike\": {\"kms:EncryptionContextKeys\": \"tmp-*\"}}";
	FAILS(any_not, WITH({"tmp-1", "a"}));
	HOLDS(any_not, WITH({"tmp-1", "a"}, {"x", "b"}));
	FAILS(any_not, none);

	HOLDS("{\"ForAllValues:StringLike\": {\"kms:EncryptionContextKeys\": \"*\"}}", none);
	HOLDS("{\"ForAnyValue:StringEqualsIfExists\": {\"kms:EncryptionContextKeys\": \"x\"}}", none);
	/* A single-valued key is a set of one. */
	hsm_policy_request alice = req(ALICE, "kms:Encrypt");
	HOLDS("{\"ForAnyValue:StringLike\": {\"kms:CallerAccount\": \"1111*\"}}", alice);
	FAILS("{\"ForAllValues:StringLike\": {\"kms:CallerAccount\": \"4444*\"}}", alice);
	/* Multi-valued keys supplied by the caller. */
	const hsm_policy_pair tags[] = {{"aws:TagKeys", "env"}, {"aws:TagKeys", "owner"}};
	alice.extra = tags;
	alice.n_extra = 2;
	HOLDS("{\"ForAllValues:StringEquals\": {\"aws:TagKeys\": [\"env\", \"owner\", \"x\"]}}", alice);
	FAILS("{\"ForAllValues:StringEquals\": {\"aws:TagKeys\": [\"env\"]}}", alice);
	HOLDS("{\"ForAnyValue:StringEquals\": {\"aws:TagKeys\": [\"owner\"]}}", alice);
}

static void test_condition_combinations(void **state)
{
	(void)state;
	/* Values of one key are OR'ed. */
	const char *or = "{\"StringEquals\": {\"kms:EncryptionContext:Purpose\": [\"x\", \"y\"]}}";
	HOLDS(or, WITH({"Purpose", "x"}));
	HOLDS(or, WITH({"Purpose", "y"}));
	FAILS(or, WITH({"Purpose", "z"}));
	/* Keys under one operator are AND'ed. */
	const char *and_keys = "{\"StringEquals\": {\"kms:EncryptionContext:Purpose\": \"x\", "
	                       "\"kms:CallerAccount\": \"" ACCT "\"}}";
	hsm_policy_request r = WITH({"Purpose", "x"});
	HOLDS(and_keys, r);
	r.principal_arn = EVE;
	r.account_id = "444455556666";
	FAILS(and_keys, r);
	/* Operators are AND'ed. */
	const char *and_ops = "{\"StringEquals\": {\"kms:EncryptionContext:Purpose\": \"x\"}, "
	                      "\"StringLike\": {\"aws:PrincipalArn\": \"*:user/alice\"}}";
	r = WITH({"Purpose", "x"});
	HOLDS(and_ops, r);
	r.principal_arn = BOB;
	FAILS(and_ops, r);
	r = WITH({"Purpose", "y"});
	FAILS(and_ops, r);
	/* Integers compare as their decimal text. */
	HOLDS("{\"StringEquals\": {\"Kms:CallerAccount\": 111122223333}}", req(ALICE, "kms:Encrypt"));
}

/* What a policy's conditions read, so that only those values are worked out per request. */
static void test_needs(void **state)
{
	(void)state;
	static const struct {
		const char *cond;
		unsigned needs;
	} cases[] = {
	    {"{\"StringEquals\": {\"kms:KeyOrigin\": \"EXTERNAL\"}}", HSM_POLICY_NEEDS_EXTRA},
	    {"{\"ForAnyValue:StringLike\": {\"KMS:resourceAliases\": \"alias/a*\"}}",
	     HSM_POLICY_NEEDS_RESOURCE_ALIASES | HSM_POLICY_NEEDS_EXTRA},
	    {"{\"StringEquals\": {\"aws:resourcetag/team\": \"x\"}}",
	     HSM_POLICY_NEEDS_RESOURCE_TAGS | HSM_POLICY_NEEDS_EXTRA},
	    {"{\"NumericLessThan\": {\"aws:EpochTime\": 5}, "
	     "\"StringLike\": {\"aws:ResourceTag/a\": \"x\"}}",
	     HSM_POLICY_NEEDS_TIME | HSM_POLICY_NEEDS_RESOURCE_TAGS | HSM_POLICY_NEEDS_EXTRA},
	    {"{\"StringLike\": {\"aws:CurrentTime\": \"2026-*\"}}",
	     HSM_POLICY_NEEDS_TIME | HSM_POLICY_NEEDS_EXTRA},
	    {"{\"StringLike\": {\"kms:RequestAlias\": \"alias/app-*\"}}",
	     HSM_POLICY_NEEDS_REQUEST_ALIAS},
	    /* Keys of hsm_policy_request's own fields need nothing worked out. */
	    {"{\"StringEquals\": {\"kms:EncryptionContext:aws:ResourceTag/x\": \"y\"}}", 0},
	    {"{\"StringEquals\": {\"kms:SigningAlgorithm\": \"ECDSA_SHA_256\"}}", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char doc[1024];
		snprintf(doc, sizeof(doc), STMT("{" ALLOW_ALL_BODY ", \"Condition\": %s}"), cases[i].cond);
		hsm_policy *p = parse_ok(doc);
		assert_int_equal(hsm_policy_needs(p), cases[i].needs);
		hsm_policy_free(p);
	}
	hsm_policy *p = parse_ok(STMT("{" ALLOW_ALL_BODY "}"));
	assert_int_equal(hsm_policy_needs(p), 0);
	hsm_policy_free(p);
}

static void test_condition_keys(void **state)
{
	(void)state;
	hsm_policy_request r = req(ALICE, "kms:Sign");
	HOLDS("{\"StringEquals\": {\"aws:username\": \"alice\"}}", r);
	HOLDS("{\"StringEquals\": {\"aws:PrincipalAccount\": \"" ACCT "\"}}", r);
	HOLDS("{\"StringEquals\": {\"kms:CallerAccount\": \"" ACCT "\"}}", r);
	HOLDS("{\"StringEquals\": {\"aws:PrincipalArn\": \"" ALICE "\"}}", r);
	HOLDS("{\"StringEquals\": {\"aws:username\": \"bob\"}}", req(BOB, "kms:Sign"));
	HOLDS("{\"Null\": {\"aws:username\": true}}", req(ROLE, "kms:Sign")); /* users only */
	r.signing_algorithm = "ECDSA_SHA_256";
	r.mac_algorithm = "HMAC_SHA_256";
	r.key_spec = "ECC_NIST_P256";
	r.key_usage = "SIGN_VERIFY";
	r.request_alias = "alias/app";
	HOLDS("{\"StringEquals\": {\"kms:SigningAlgorithm\": \"ECDSA_SHA_256\"}}", r);
	HOLDS("{\"StringEquals\": {\"kms:MacAlgorithm\": \"HMAC_SHA_256\"}}", r);
	HOLDS("{\"StringLike\": {\"kms:KeySpec\": \"ECC_*\"}}", r);
	HOLDS("{\"StringLike\": {\"kms:CustomerMasterKeySpec\": \"ECC_*\"}}", r);
	HOLDS("{\"StringEquals\": {\"kms:KeyUsage\": \"SIGN_VERIFY\"}}", r);
	HOLDS("{\"StringEquals\": {\"kms:CustomerMasterKeyUsage\": \"SIGN_VERIFY\"}}", r);
	HOLDS("{\"StringEquals\": {\"kms:RequestAlias\": \"alias/app\"}}", r);
	FAILS("{\"StringEquals\": {\"kms:EncryptionAlgorithm\": \"SYMMETRIC_DEFAULT\"}}", r);
	/* Keys hsmd does not model come from the caller's extra values, else are absent. */
	const char *via = "{\"StringEquals\": {\"kms:ViaService\": \"ec2.eu-west-1.amazonaws.com\"}}";
	FAILS(via, r);
	const hsm_policy_pair extra[] = {{"KMS:VIASERVICE", "ec2.eu-west-1.amazonaws.com"},
	                                 {"aws:RequestTag/Env", "prod"}};
	r.extra = extra;
	r.n_extra = 2;
	HOLDS(via, r);
	HOLDS("{\"StringEquals\": {\"aws:RequestTag/Env\": \"prod\"}}", r);
	/* Another service's key never occurs: positive operators fail, negated ones hold. */
	FAILS("{\"StringEquals\": {\"s3:prefix\": \"x\"}}", r);
	HOLDS("{\"StringNotEquals\": {\"s3:prefix\": \"x\"}}", r);
}

/* A grant of Encrypt only, for one encryption context. */
static void test_encrypt_only_with_context(void **state)
{
	(void)state;
	hsm_policy *p = parse_ok(STMT(
	    "{\"Sid\": \"EncryptForBackup\", \"Effect\": \"Allow\", \"Principal\": {\"AWS\": \"" ALICE
	    "\"}, \"Action\": \"kms:Encrypt\", \"Resource\": \"*\", \"Condition\": {\"StringEquals\": "
	    "{\"kms:EncryptionContext:Purpose\": \"backup\"}}}"));
	hsm_policy_verdict v;
	hsm_policy_request r = WITH({"Purpose", "backup"});
	assert_int_equal(hsm_policy_evaluate(p, &r, &v), HSM_POLICY_ALLOW);
	assert_string_equal(v.sid, "EncryptForBackup");
	r.action = "kms:Decrypt";
	assert_int_equal(hsm_policy_evaluate(p, &r, &v), HSM_POLICY_IMPLICIT_DENY);
	assert_null(v.sid);
	r = WITH({"Purpose", "restore"});
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	r = with_ctx(NULL, 0);
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	r = WITH({"Purpose", "backup"});
	r.principal_arn = BOB;
	assert_int_equal(decide(p, &r), HSM_POLICY_IMPLICIT_DENY);
	hsm_policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_validation_messages),
	    cmocka_unit_test(test_size_limit),
	    cmocka_unit_test(test_accepted_forms),
	    cmocka_unit_test(test_shared_by_reference),
	    cmocka_unit_test(test_default_policy),
	    cmocka_unit_test(test_deny_wins),
	    cmocka_unit_test(test_not_elements),
	    cmocka_unit_test(test_wildcards),
	    cmocka_unit_test(test_principals),
	    cmocka_unit_test(test_string_operators),
	    cmocka_unit_test(test_policy_variables),
	    cmocka_unit_test(test_case_variant_context_keys_and_deny),
	    cmocka_unit_test(test_case_variant_context_keys_and_set_operators),
	    cmocka_unit_test(test_null_bool_if_exists),
	    cmocka_unit_test(test_stored_policy_keeps_older_numbers),
	    cmocka_unit_test(test_date_operators),
	    cmocka_unit_test(test_ip_operators),
	    cmocka_unit_test(test_set_operators),
	    cmocka_unit_test(test_condition_combinations),
	    cmocka_unit_test(test_condition_keys),
	    cmocka_unit_test(test_needs),
	    cmocka_unit_test(test_encrypt_only_with_context),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
