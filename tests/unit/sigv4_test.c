/*
 * SigV4 verification rules: what is signed, the time window, the scope,
 * malformed Authorization headers, bounds, and the signer's round trip.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth/sigv4.h"
#include "auth/sigv4_internal.h"
#include "support/sigv4_support.h"

#define REGION "eu-west-1"
#define T0 (SV_T2015 + 1000) /* 2015-08-30T12:52:40Z */
#define MISMATCH                                                                          \
	"The request signature we calculated does not match the signature you provided. " \
	"Check your AWS Secret Access Key and signing method. Consult the service "        \
	"documentation for details."

static const hsm_sigv4_header base_headers[] = {
    {"Host", "kms.eu-west-1.hsmd.test"},
    {"Content-Type", "application/x-amz-json-1.1"},
    {"X-Amz-Target", "TrentService.Encrypt"},
    {"X-Custom", "a  b"},
    {"User-Agent", "hsmctl/0.1"},
};

static const char base_body[] = "{\"KeyId\":\"alias/app\",\"Plaintext\":\"aGVsbG8=\"}";

static const hsm_sigv4_request base = {
    .method = "POST",
    .path = "/x/y",
    .query = "b=2&a=1",
    .headers = base_headers,
    .n_headers = sizeof(base_headers) / sizeof(base_headers[0]),
    .body = (const uint8_t *)base_body,
    .body_len = sizeof(base_body) - 1,
};

/* A request signed at T0 for REGION/kms. */
static void signed_base(sv_req *req)
{
	sv_sign(req, &base, REGION, NULL, T0);
	assert_int_equal(sv_verify(&req->r, REGION, NULL, T0), HSM_OK);
}

static void expect(const sv_req *req, hsm_err err, const char *message)
{
	hsm_err got = sv_verify(&req->r, REGION, NULL, T0);
	if (got != err)
		fail_msg("expected %s, got %s (%s)", hsm_err_code_name(err), hsm_err_code_name(got),
		         hsm_last_message());
	if (message != NULL)
		assert_string_equal(hsm_last_message(), message);
}

static const char *header_value(const sv_req *req, const char *name)
{
	for (size_t i = 0; i < req->r.n_headers; i++) {
		if (strcasecmp(req->h[i].name, name) == 0)
			return req->h[i].value;
	}
	fail_msg("no header %s", name);
	return NULL;
}

/* ---- What the signature covers ------------------------------------------------ */

static void test_round_trip(void **state)
{
	(void)state;
	sv_req req;
	signed_base(&req);
	assert_string_equal(req.sig.amz_date, "20150830T125240Z");
	assert_non_null(strstr(req.sig.authorization,
	                       "Credential=AKIDEXAMPLE/20150830/eu-west-1/kms/aws4_request, "
	                       "SignedHeaders=content-type;host;x-amz-date;x-amz-target;x-custom, "
	                       "Signature="));
}

static void test_flipped_signed_parts_are_rejected(void **state)
{
	(void)state;
	sv_req req, m;
	char buf[8][256];
	uint8_t body[sizeof(base_body)];
	signed_base(&req);

	sv_copy(&m, &req.r);
	m.r.method = "PUT";
	expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
	sv_copy(&m, &req.r);
	m.r.path = "/x/z";
	expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
	sv_copy(&m, &req.r);
	m.r.query = "b=2&a=2";
	expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
	sv_copy(&m, &req.r);
	m.r.query = NULL;
	expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);

	/* One changed character in each signed header, the date included. */
	static const char *const signed_names[] = {"Host", "Content-Type", "X-Amz-Target",
	                                           "X-Custom", "X-Amz-Date"};
	for (size_t i = 0; i < 5; i++) {
		snprintf(buf[i], sizeof(buf[i]), "%s", header_value(&req, signed_names[i]));
		size_t last = strlen(buf[i]) - 1;
		/* The date's last character is 'Z': change the seconds digit before it. */
		size_t at = strcmp(signed_names[i], "X-Amz-Date") == 0 ? last - 1 : last;
		buf[i][at] = buf[i][at] == '1' ? '2' : '1';
		sv_copy(&m, &req.r);
		sv_set(&m, signed_names[i], buf[i]);
		expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
	}

	memcpy(body, base_body, sizeof(base_body));
	body[5] ^= 0x01;
	sv_copy(&m, &req.r);
	m.r.body = body;
	expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
	sv_copy(&m, &req.r);
	m.r.body_len--;
	expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
}

/* Rewrites the Authorization header with one substring replaced. */
static void replace_auth(sv_req *m, const sv_req *req, const char *from, const char *to,
                         char *buf, size_t cap)
{
	const char *auth = req->sig.authorization;
	const char *at = strstr(auth, from);
	assert_non_null(at);
	snprintf(buf, cap, "%.*s%s%s", (int)(at - auth), auth, to, at + strlen(from));
	sv_copy(m, &req->r);
	sv_set(m, "Authorization", buf);
}

static void test_flipped_scope_and_signature_are_rejected(void **state)
{
	(void)state;
	sv_req req, m;
	char buf[2048], sig[65];
	signed_base(&req);

	replace_auth(&m, &req, "/eu-west-1/", "/eu-west-2/", buf, sizeof(buf));
	expect(&m, HSM_ERR_BAD_SIGNATURE,
	       "Credential should be scoped to a valid region, not 'eu-west-2'.");
	replace_auth(&m, &req, "/kms/", "/kmt/", buf, sizeof(buf));
	expect(&m, HSM_ERR_BAD_SIGNATURE, "Credential should be scoped to correct service: 'kms'.");
	replace_auth(&m, &req, "/20150830/", "/20150831/", buf, sizeof(buf));
	expect(&m, HSM_ERR_BAD_SIGNATURE,
	       "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
	       "from HTTP: '20150831' != '20150830', from '20150830T125240Z'.");
	replace_auth(&m, &req, "/aws4_request", "/aws4_requesu", buf, sizeof(buf));
	expect(&m, HSM_ERR_BAD_SIGNATURE,
	       "Credential should be scoped with a valid terminator: 'aws4_request', not "
	       "'aws4_requesu'.");
	replace_auth(&m, &req, "AKIDEXAMPLE", "AKIDEXAMPLF", buf, sizeof(buf));
	expect(&m, HSM_ERR_UNRECOGNIZED_CLIENT,
	       "The security token included in the request is invalid.");

	/* Each hex digit of the signature matters. */
	const char *s = strstr(req.sig.authorization, "Signature=") + strlen("Signature=");
	for (size_t i = 0; i < 64; i += 7) {
		snprintf(sig, sizeof(sig), "%s", s);
		sig[i] = sig[i] == '0' ? '1' : '0';
		replace_auth(&m, &req, s, sig, buf, sizeof(buf));
		expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
	}
	/* Dropping a name from SignedHeaders changes what is signed. */
	replace_auth(&m, &req, ";x-custom,", ",", buf, sizeof(buf));
	expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
}

static void test_unsigned_changes_are_accepted(void **state)
{
	(void)state;
	sv_req req, m;
	signed_base(&req);
	sv_copy(&m, &req.r);
	sv_set(&m, "User-Agent", "something else entirely");
	sv_set(&m, "X-Forwarded-For", "192.0.2.1");
	sv_set(&m, "Content-Length", "46");
	expect(&m, HSM_OK, NULL);
	sv_del(&m, "User-Agent");
	expect(&m, HSM_OK, NULL);
	/* Whitespace that canonicalization folds away is not a change either. */
	sv_set(&m, "X-Custom", "  a \t b ");
	sv_set(&m, "HOST", "kms.eu-west-1.hsmd.test");
	expect(&m, HSM_OK, NULL);
	/* A second line of a signed header is a change (values are joined with ','). */
	m.h[m.r.n_headers].name = "x-custom";
	m.h[m.r.n_headers].value = "c";
	m.r.n_headers++;
	expect(&m, HSM_ERR_BAD_SIGNATURE, MISMATCH);
}

static void test_signature_never_in_messages(void **state)
{
	(void)state;
	sv_req req, m, expected;
	signed_base(&req);
	sv_copy(&m, &req.r);
	m.r.path = "/other";
	expect(&m, HSM_ERR_BAD_SIGNATURE, NULL);
	/* The signature the server computed is the one a correct client would send. */
	sv_sign(&expected, &m.r, REGION, NULL, T0);
	const char *sig = strstr(expected.sig.authorization, "Signature=") + strlen("Signature=");
	assert_null(strstr(hsm_last_message(), sig));
	assert_null(strstr(hsm_last_message(), "x-amz-target"));
	assert_null(strstr(hsm_last_message(), "AWS4-HMAC-SHA256\n"));
}

/* ---- Time window ----------------------------------------------------------------- */

static void test_window_edges(void **state)
{
	(void)state;
	sv_req req;
	signed_base(&req);
	assert_int_equal(sv_verify(&req.r, REGION, NULL, T0 + 300), HSM_OK);
	assert_int_equal(sv_verify(&req.r, REGION, NULL, T0 - 300), HSM_OK);
	assert_int_equal(sv_verify(&req.r, REGION, NULL, T0 + 301), HSM_ERR_BAD_SIGNATURE);
	assert_string_equal(hsm_last_message(),
	                    "Signature expired: 20150830T125240Z is now earlier than 20150830T125241Z "
	                    "(20150830T125741Z - 5 min.)");
	assert_int_equal(sv_verify(&req.r, REGION, NULL, T0 - 301), HSM_ERR_BAD_SIGNATURE);
	assert_string_equal(hsm_last_message(),
	                    "Signature not yet current: 20150830T125240Z is still later than "
	                    "20150830T125239Z (20150830T124739Z + 5 min.)");
	/* A configured window. */
	assert_int_equal(sv_verify_skew(&req.r, REGION, NULL, T0 + 60, 60), HSM_OK);
	assert_int_equal(sv_verify_skew(&req.r, REGION, NULL, T0 + 61, 60), HSM_ERR_BAD_SIGNATURE);
	assert_string_equal(hsm_last_message(),
	                    "Signature expired: 20150830T125240Z is now earlier than 20150830T125241Z "
	                    "(20150830T125341Z - 1 min.)");
	assert_int_equal(sv_verify_skew(&req.r, REGION, NULL, T0 - 46, 45), HSM_ERR_BAD_SIGNATURE);
	assert_string_equal(hsm_last_message(),
	                    "Signature not yet current: 20150830T125240Z is still later than "
	                    "20150830T125239Z (20150830T125154Z + 45 sec.)");
}

static void test_wrong_region_or_service(void **state)
{
	(void)state;
	sv_req req;
	signed_base(&req);
	assert_int_equal(sv_verify(&req.r, "us-west-2", NULL, T0), HSM_ERR_BAD_SIGNATURE);
	assert_string_equal(hsm_last_message(),
	                    "Credential should be scoped to a valid region, not 'eu-west-1'.");
	assert_int_equal(sv_verify(&req.r, REGION, "sqs", T0), HSM_ERR_BAD_SIGNATURE);
	assert_string_equal(hsm_last_message(), "Credential should be scoped to correct service: 'sqs'.");
	/* Signed for another service, sent to kms. */
	sv_sign(&req, &base, REGION, "sqs", T0);
	assert_int_equal(sv_verify(&req.r, REGION, NULL, T0), HSM_ERR_BAD_SIGNATURE);
	assert_int_equal(sv_verify(&req.r, REGION, "sqs", T0), HSM_OK);
}

/* ---- Malformed Authorization --------------------------------------------------- */

#define CRED "Credential=AKIDEXAMPLE/20150830/eu-west-1/kms/aws4_request"
#define SH "SignedHeaders=content-type;host;x-amz-date;x-amz-target;x-custom"
#define SIG "Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define ALG "AWS4-HMAC-SHA256 "

static void test_malformed_authorization(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "AWS4-HMAC-SHA1 " CRED ", " SH ", " SIG,
	    "AWS4-HMAC-SHA256",
	    "AWS4-HMAC-SHA256 ",
	    "AWS4-HMAC-SHA256" CRED ", " SH ", " SIG,
	    "Bearer abc",
	    ALG SH ", " SIG,
	    ALG CRED ", " SIG,
	    ALG CRED ", " SH,
	    ALG CRED ", " SH ", " SIG ", " SIG,
	    ALG CRED ", " SH ", " SIG ", Foo=bar",
	    ALG CRED ", , " SH ", " SIG,
	    ALG "Credential AKIDEXAMPLE/20150830/eu-west-1/kms/aws4_request, " SH ", " SIG,
	    ALG "Credential=AKIDEXAMPLE/20150830/eu-west-1/kms, " SH ", " SIG,
	    ALG "Credential=AKIDEXAMPLE/20150830/eu-west-1/kms/aws4_request/x, " SH ", " SIG,
	    ALG "Credential=/20150830/eu-west-1/kms/aws4_request, " SH ", " SIG,
	    ALG "Credential=AKID-EXAMPLE/20150830/eu-west-1/kms/aws4_request, " SH ", " SIG,
	    ALG "Credential=AKIDEXAMPLE/2015083/eu-west-1/kms/aws4_request, " SH ", " SIG,
	    ALG "Credential=AKIDEXAMPLE/2015O830/eu-west-1/kms/aws4_request, " SH ", " SIG,
	    ALG "Credential=AKIDEXAMPLE/20150830/EU-WEST-1/kms/aws4_request, " SH ", " SIG,
	    ALG "Credential=AKIDEXAMPLE/20150830//kms/aws4_request, " SH ", " SIG,
	    ALG CRED ", SignedHeaders=host;content-type;x-amz-date, " SIG,
	    ALG CRED ", SignedHeaders=Host;x-amz-date, " SIG,
	    ALG CRED ", SignedHeaders=host;host;x-amz-date, " SIG,
	    ALG CRED ", SignedHeaders=, " SIG,
	    ALG CRED ", SignedHeaders=host;x-amz-date;, " SIG,
	    ALG CRED ", SignedHeaders=host;;x-amz-date, " SIG,
	    ALG CRED ", SignedHeaders=host x;x-amz-date, " SIG,
	    ALG CRED ", " SH ", Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
	    ALG CRED ", " SH ", Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0",
	    ALG CRED ", " SH ", Signature=0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
	    ALG CRED ", " SH ", Signature=0123456789abcdeg0123456789abcdef0123456789abcdef0123456789abcdef",
	    ALG CRED ", " SH ", Signature=",
	};
	sv_req req, m;
	signed_base(&req);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		sv_copy(&m, &req.r);
		sv_set(&m, "Authorization", bad[i]);
		hsm_err err = sv_verify(&m.r, REGION, NULL, T0);
		if (err != HSM_ERR_INCOMPLETE_SIGNATURE)
			fail_msg("case %zu (%s): got %s", i, bad[i], hsm_err_code_name(err));
	}
	sv_copy(&m, &req.r);
	sv_set(&m, "Authorization", ALG SH ", " SIG);
	expect(&m, HSM_ERR_INCOMPLETE_SIGNATURE, "Authorization header requires 'Credential' parameter.");
	sv_set(&m, "Authorization", ALG "Credential AKIDEXAMPLE, " SH ", " SIG);
	expect(&m, HSM_ERR_INCOMPLETE_SIGNATURE,
	       "'Credential AKIDEXAMPLE' not a valid key=value pair (missing equal-sign) in "
	       "Authorization header.");
	/* Spacing around the separators is free, as SDKs differ there. */
	sv_set(&m, "Authorization",
	       ALG "  " CRED " ,SignedHeaders=host;x-amz-date;x-amz-target,\t" SIG);
	assert_int_not_equal(sv_verify(&m.r, REGION, NULL, T0), HSM_ERR_INCOMPLETE_SIGNATURE);
	/* X-Amz-Target names the operation: present, it must be signed. */
	sv_set(&m, "Authorization", ALG CRED ", SignedHeaders=host;x-amz-date, " SIG);
	expect(&m, HSM_ERR_INCOMPLETE_SIGNATURE,
	       "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.");
}

static void test_authorization_presence(void **state)
{
	(void)state;
	sv_req req, m;
	char longv[HSM_SIGV4_MAX_AUTH_HEADER + 64];
	signed_base(&req);
	sv_copy(&m, &req.r);
	sv_del(&m, "Authorization");
	expect(&m, HSM_ERR_MISSING_AUTH, "Request is missing Authentication Token");
	sv_copy(&m, &req.r);
	m.h[m.r.n_headers].name = "authorization";
	m.h[m.r.n_headers].value = req.sig.authorization;
	m.r.n_headers++;
	expect(&m, HSM_ERR_INCOMPLETE_SIGNATURE, "Only one Authorization header is allowed.");
	snprintf(longv, sizeof(longv), "%s, ", req.sig.authorization);
	size_t n = strlen(longv);
	memset(longv + n, ' ', sizeof(longv) - n - 1);
	longv[sizeof(longv) - 1] = '\0';
	sv_copy(&m, &req.r);
	sv_set(&m, "Authorization", longv);
	expect(&m, HSM_ERR_INCOMPLETE_SIGNATURE, NULL);
}

/* ---- Required headers -------------------------------------------------------------- */

static void test_required_headers(void **state)
{
	(void)state;
	sv_req req, m;
	char buf[2048];
	signed_base(&req);

	replace_auth(&m, &req, "content-type;host;", "content-type;", buf, sizeof(buf));
	expect(&m, HSM_ERR_BAD_SIGNATURE,
	       "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
	replace_auth(&m, &req, "host;x-amz-date;", "host;", buf, sizeof(buf));
	expect(&m, HSM_ERR_BAD_SIGNATURE,
	       "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.");

	sv_copy(&m, &req.r);
	sv_del(&m, "X-Custom");
	expect(&m, HSM_ERR_INCOMPLETE_SIGNATURE,
	       "'x-custom' is named as a SignedHeader, but it does not exist in the HTTP request.");
	sv_copy(&m, &req.r);
	sv_del(&m, "X-Amz-Date");
	expect(&m, HSM_ERR_INCOMPLETE_SIGNATURE,
	       "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
	sv_copy(&m, &req.r);
	sv_set(&m, "X-Amz-Date", "2015-08-30T12:52:40Z");
	expect(&m, HSM_ERR_INCOMPLETE_SIGNATURE, NULL);
	/* With X-Amz-Date present, Date is an ordinary (here unsigned) header. */
	sv_copy(&m, &req.r);
	sv_set(&m, "Date", "Sun, 30 Aug 2015 12:52:40 GMT");
	expect(&m, HSM_OK, NULL);
}

/*
 * Repeated, X-Amz-Target is signed as one value joined with ',', while the
 * server runs one operation and a proxy may judge by another: refused like
 * the other repeated headers the signature depends on, even signed.
 */
static void test_repeated_target(void **state)
{
	(void)state;
	sv_req req, m;
	sv_copy(&m, &base);
	m.h[m.r.n_headers].name = "x-amz-target";
	m.h[m.r.n_headers].value = "TrentService.ListKeys";
	m.r.n_headers++;
	sv_sign(&req, &m.r, REGION, NULL, T0);
	assert_non_null(strstr(req.sig.authorization, ";x-amz-target"));
	expect(&req, HSM_ERR_INCOMPLETE_SIGNATURE, "Only one X-Amz-Target header is allowed.");
	/* One target, however spelled, is still accepted. */
	sv_copy(&m, &base);
	sv_del(&m, "X-Amz-Target");
	sv_set(&m, "x-amz-TARGET", "TrentService.Encrypt");
	sv_sign(&req, &m.r, REGION, NULL, T0);
	expect(&req, HSM_OK, NULL);
}

static void test_payload_hash_header(void **state)
{
	(void)state;
	sv_req req, m;
	char hex[65];
	assert_true(hsm_ok(hsm_sigv4_sha256_hex(base_body, sizeof(base_body) - 1, hex)));
	sv_copy(&m, &base);
	sv_set(&m, "X-Amz-Content-SHA256", hex);
	sv_sign(&req, &m.r, REGION, NULL, T0);
	assert_non_null(strstr(req.sig.authorization, ";x-amz-content-sha256;"));
	expect(&req, HSM_OK, NULL);
	/* A changed body no longer matches the declared hash. */
	sv_copy(&m, &req.r);
	m.r.body_len--;
	expect(&m, HSM_ERR_BAD_SIGNATURE,
	       "The provided 'x-amz-content-sha256' header does not match what was computed.");
	/* S3's unsigned payload does not apply to KMS. */
	sv_copy(&m, &base);
	sv_set(&m, "X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD");
	sv_sign(&req, &m.r, REGION, NULL, T0);
	expect(&req, HSM_ERR_BAD_SIGNATURE, NULL);
}

/* ---- Bounds ------------------------------------------------------------------------ */

static void test_bounds(void **state)
{
	(void)state;
	static char big[HSM_SIGV4_MAX_QUERY + 2];
	static char params[HSM_SIGV4_MAX_QUERY];
	sv_req req, m;
	signed_base(&req);

	sv_copy(&m, &req.r);
	while (m.r.n_headers <= HSM_SIGV4_MAX_HEADERS) {
		m.h[m.r.n_headers].name = "X-Filler";
		m.h[m.r.n_headers].value = "x";
		m.r.n_headers++;
	}
	expect(&m, HSM_ERR_VALIDATION, NULL);

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	sv_copy(&m, &req.r);
	m.r.query = big;
	expect(&m, HSM_ERR_VALIDATION, NULL);
	big[0] = '/';
	big[HSM_SIGV4_MAX_PATH + 1] = '\0';
	sv_copy(&m, &req.r);
	m.r.path = big;
	expect(&m, HSM_ERR_VALIDATION, NULL);
	memset(big, 'v', HSM_SIGV4_MAX_HEADER_VALUE + 1);
	big[HSM_SIGV4_MAX_HEADER_VALUE + 1] = '\0';
	sv_copy(&m, &req.r);
	sv_set(&m, "X-Custom", big); /* signed */
	expect(&m, HSM_ERR_VALIDATION,
	       "The value of signed header 'x-custom' is longer than 8192 bytes.");
	sv_copy(&m, &req.r);
	sv_set(&m, "X-Unsigned", big); /* not read: the HTTP reader bounds the head */
	expect(&m, HSM_OK, NULL);

	/* More query parameters than allowed. */
	size_t n = 0;
	for (int i = 0; i <= HSM_SIGV4_MAX_QUERY_PARAMS; i++)
		n += (size_t)snprintf(params + n, sizeof(params) - n, "%sp%d", i ? "&" : "", i);
	sv_copy(&m, &req.r);
	m.r.query = params;
	expect(&m, HSM_ERR_VALIDATION, "The query string has more than 256 parameters.");
}

/* ---- Signer ------------------------------------------------------------------------ */

static void test_signer_round_trips(void **state)
{
	(void)state;
	static uint8_t body[4096];
	static const char *const queries[] = {NULL, "", "a=1", "z=%7e&y=a+b&x", "k=%E2%82%AC"};
	static const char *const paths[] = {"/", "/a/b/", "/a%20b/../c", "//x//y"};
	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 131 + 7);
	for (size_t i = 0; i < 40; i++) {
		sv_req m, req;
		sv_copy(&m, &base);
		m.r.query = queries[i % 5];
		m.r.path = paths[i % 4];
		m.r.body = body;
		m.r.body_len = (i * 97) % sizeof(body);
		if (i % 3 == 0)
			sv_set(&m, "X-Extra", "  spaced   out  ");
		if (i % 2 == 0)
			sv_del(&m, "X-Custom");
		int64_t t = T0 + (int64_t)i * 3600;
		sv_sign(&req, &m.r, REGION, NULL, t);
		if (sv_verify(&req.r, REGION, NULL, t) != HSM_OK)
			fail_msg("round trip %zu: %s", i, hsm_last_message());
		req.r.body_len ^= 1;
		assert_int_equal(sv_verify(&req.r, REGION, NULL, t), HSM_ERR_BAD_SIGNATURE);
	}
}

/* The signer derives a new signing key when the UTC day changes. */
static void test_signer_day_rollover(void **state)
{
	(void)state;
	hsm_secret *secret = sv_secret(SV_SECRET);
	hsm_sigv4_signer *s = NULL;
	hsm_sigv4_signature sig;
	sv_req req;
	const int64_t midnight = 1440979200; /* 2015-08-31T00:00:00Z */
	assert_true(hsm_ok(hsm_sigv4_signer_new(SV_AKID, secret, REGION, NULL, &s)));
	for (int64_t t = midnight - 2; t <= midnight + 1; t++) {
		assert_true(hsm_ok(hsm_sigv4_sign(s, &base, t, &sig)));
		sv_copy(&req, &base);
		sv_set(&req, "X-Amz-Date", sig.amz_date);
		sv_set(&req, "Authorization", sig.authorization);
		assert_int_equal(sv_verify(&req.r, REGION, NULL, t), HSM_OK);
		assert_non_null(strstr(sig.authorization, t < midnight ? "/20150830/" : "/20150831/"));
	}
	hsm_sigv4_signer_free(s);
	hsm_secret_free(secret);
}

static void test_signer_rejects_bad_input(void **state)
{
	(void)state;
	hsm_secret *secret = sv_secret(SV_SECRET), *key = NULL;
	hsm_sigv4_signer *s = NULL;
	hsm_sigv4_signature sig;
	sv_req m;
	assert_int_equal(hsm_sigv4_signer_new("AK/ID", secret, REGION, NULL, &s).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(hsm_sigv4_signer_new(SV_AKID, secret, "Eu-West-1", NULL, &s).err,
	                 HSM_ERR_VALIDATION);
	assert_null(s);
	assert_true(hsm_ok(hsm_sigv4_signer_new(SV_AKID, secret, REGION, NULL, &s)));
	sv_copy(&m, &base);
	sv_del(&m, "Host");
	assert_int_equal(hsm_sigv4_sign(s, &m.r, T0, &sig).err, HSM_ERR_VALIDATION);
	sv_copy(&m, &base);
	sv_set(&m, "Bad Name", "x");
	assert_int_equal(hsm_sigv4_sign(s, &m.r, T0, &sig).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_sigv4_signing_key(secret, "2015083", REGION, "kms", &key).err,
	                 HSM_ERR_VALIDATION);
	assert_null(key);
	hsm_sigv4_signer_free(s);
	hsm_secret_free(secret);
}

/* ---- Timestamps ----------------------------------------------------------------------- */

static void test_date_formats(void **state)
{
	(void)state;
	int64_t t = 0;
	assert_true(hsm_sigv4_parse_amz_date("20150830T123600Z", &t));
	assert_int_equal(t, SV_T2015);
	assert_true(hsm_sigv4_parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT", &t));
	assert_int_equal(t, SV_T2015);
	assert_true(hsm_sigv4_parse_http_date("Sun, 30 Aug 2015 12:36:00 -0000", &t));
	assert_int_equal(t, SV_T2015);
	assert_true(hsm_sigv4_parse_amz_date("20160229T000000Z", &t));
	static const char *const bad_amz[] = {"20150830T123600", "20150830t123600Z",
	                                      "2015-08-30T12:36:00Z", "20150230T000000Z",
	                                      "20150830T240000Z", "20150830T126000Z",
	                                      "20150830T123660Z", "2015083OT123600Z", ""};
	for (size_t i = 0; i < sizeof(bad_amz) / sizeof(bad_amz[0]); i++)
		assert_false(hsm_sigv4_parse_amz_date(bad_amz[i], &t));
	static const char *const bad_http[] = {"Sun, 30 Aug 2015 12:36:00 UTC",
	                                       "Sun, 30 Aug 2015 12:36:00 +0100",
	                                       "Sun, 31 Sep 2015 12:36:00 GMT",
	                                       "Xyz, 30 Aug 2015 12:36:00 GMT",
	                                       "Sun, 30 Foo 2015 12:36:00 GMT",
	                                       "Sunday, 30-Aug-15 12:36:00 GMT"};
	for (size_t i = 0; i < sizeof(bad_http) / sizeof(bad_http[0]); i++)
		assert_false(hsm_sigv4_parse_http_date(bad_http[i], &t));
	char s[17];
	hsm_sigv4_format_amz_date(SV_T2015, s);
	assert_string_equal(s, "20150830T123600Z");
}

/* The arithmetic formatter agrees with gmtime_r everywhere (four-digit years). */
static void expect_like_gmtime(int64_t t)
{
	char got[17], want[32];
	time_t tt = (time_t)t;
	struct tm tm;
	assert_non_null(gmtime_r(&tt, &tm));
	snprintf(want, sizeof(want), "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	hsm_sigv4_format_amz_date(t, got);
	if (strcmp(got, want) != 0)
		fail_msg("t=%lld: got %s, want %s", (long long)t, got, want);
	int64_t back = 0;
	if (t >= 0 && strlen(want) == 16) { /* what the parser accepts: 1970..9999 */
		assert_true(hsm_sigv4_parse_amz_date(got, &back));
		assert_int_equal(back, t);
	}
}

static void test_amz_date_arithmetic(void **state)
{
	(void)state;
	static const int64_t fixed[] = {
	    0,           -1,           86399,        86400,          951782400 /* 2000-02-29 */,
	    951868800,   4107542400LL /* 2100-03-01 */, 4107456000LL, 253402300799LL,
	    -62167219200LL /* 0000-01-01 */, -62135596800LL /* 0001-01-01 */,
	    -2208988800LL /* 1900-01-01 */, 2147483647LL, 2147483648LL};
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		for (int64_t d = -2; d <= 2; d++)
			if (fixed[i] + d >= -62167219200LL && fixed[i] + d <= 253402300799LL)
				expect_like_gmtime(fixed[i] + d);
	/* Every day's first and last second over 1600..2400, and a stride through 0000..9999. */
	for (int64_t t = -11676096000LL; t < 13569465600LL; t += 86400) {
		expect_like_gmtime(t);
		expect_like_gmtime(t + 86399);
	}
	for (int64_t t = -62167219200LL; t <= 253402300799LL; t += 9999991)
		expect_like_gmtime(t);
	/* The parser takes exactly the calendar's days, as timegm would. */
	static const int years[] = {1970, 1999, 2000, 2023, 2024, 2100, 2400, 9999};
	for (size_t i = 0; i < sizeof(years) / sizeof(years[0]); i++)
		for (int mo = 0; mo <= 13; mo++)
			for (int d = 0; d <= 32; d++) {
				char in[32];
				snprintf(in, sizeof(in), "%04d%02d%02dT235958Z", years[i], mo, d);
				struct tm tm = {.tm_year = years[i] - 1900, .tm_mon = mo - 1,
				                .tm_mday = d, .tm_hour = 23, .tm_min = 59, .tm_sec = 58};
				time_t want = timegm(&tm);
				bool valid = mo >= 1 && mo <= 12 && tm.tm_mday == d && tm.tm_mon == mo - 1;
				int64_t got = 0;
				assert_int_equal(hsm_sigv4_parse_amz_date(in, &got), valid);
				if (valid)
					assert_int_equal(got, (int64_t)want);
			}
	/* Outside four-digit years the nearest one that fits. */
	char out[17];
	hsm_sigv4_format_amz_date(253402300800LL, out);
	assert_string_equal(out, "99991231T235959Z");
	hsm_sigv4_format_amz_date(INT64_MIN, out);
	assert_string_equal(out, "00000101T000000Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_flipped_signed_parts_are_rejected),
	    cmocka_unit_test(test_flipped_scope_and_signature_are_rejected),
	    cmocka_unit_test(test_unsigned_changes_are_accepted),
	    cmocka_unit_test(test_signature_never_in_messages),
	    cmocka_unit_test(test_window_edges),
	    cmocka_unit_test(test_wrong_region_or_service),
	    cmocka_unit_test(test_malformed_authorization),
	    cmocka_unit_test(test_authorization_presence),
	    cmocka_unit_test(test_required_headers),
	    cmocka_unit_test(test_repeated_target),
	    cmocka_unit_test(test_payload_hash_header),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_signer_round_trips),
	    cmocka_unit_test(test_signer_day_rollover),
	    cmocka_unit_test(test_signer_rejects_bad_input),
	    cmocka_unit_test(test_date_formats),
	    cmocka_unit_test(test_amz_date_arithmetic),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
