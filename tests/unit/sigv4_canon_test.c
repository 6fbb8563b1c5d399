/*
 * The SigV4 canonical request, piece by piece: path normalization and
 * encoding, query ordering and encoding, header folding and joining.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "auth/sigv4.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const hsm_sigv4_header host_only[] = {{"Host", "h"}};

/* The canonical request of a GET with only a Host header, for path and query cases. */
static void expect_uri_query(const char *path, const char *query, const char *uri,
                             const char *cquery)
{
	hsm_sigv4_request r = {.method = "GET", .path = path, .query = query,
	                       .headers = host_only, .n_headers = 1};
	hsm_buf out = {0}, want = {0};
	assert_true(hsm_ok(hsm_buf_printf(&want, "GET\n%s\n%s\nhost:h\n\nhost\n" EMPTY_SHA256, uri,
	                                  cquery)));
	assert_true(hsm_ok(hsm_buf_terminate(&want)));
	if (hsm_failed(hsm_sigv4_canonical_request(&r, "host", &out)))
		fail_msg("%s?%s: %s", path, query ? query : "", hsm_last_message());
	assert_true(hsm_ok(hsm_buf_terminate(&out)));
	assert_string_equal((const char *)out.data, (const char *)want.data);
	hsm_buf_free(&out);
	hsm_buf_free(&want);
}

static void test_path_normalization(void **state)
{
	(void)state;
	expect_uri_query("/", NULL, "/", "");
	expect_uri_query("/a/./b/../c//d/", NULL, "/a/c/d/", "");
	expect_uri_query("/a/b/..", NULL, "/a", "");
	expect_uri_query("/..", NULL, "/", "");
	expect_uri_query("/../../a", NULL, "/a", "");
	expect_uri_query("/a/.", NULL, "/a", "");
	expect_uri_query("///", NULL, "/", "");
	expect_uri_query("/...", NULL, "/...", "");
	expect_uri_query("/.a/..b", NULL, "/.a/..b", "");
}

static void test_path_encoding(void **state)
{
	(void)state;
	/* The path is encoded as received: escapes the client sent are encoded again. */
	expect_uri_query("/a%20b", NULL, "/a%2520b", "");
	expect_uri_query("/a b", NULL, "/a%20b", "");
	expect_uri_query("/~-._AZaz09", NULL, "/~-._AZaz09", "");
	expect_uri_query("/!$&'()*+,;=:@", NULL, "/%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40", "");
	expect_uri_query("/\xc3\xa9", NULL, "/%C3%A9", "");
}

static void test_query_order_and_encoding(void **state)
{
	(void)state;
	/* Sorted by name, then value, byte-wise on the encoded form. */
	expect_uri_query("/", "b=2&a=3&a=1&A=x&a-b=0", "/", "A=x&a=1&a=3&a-b=0&b=2");
	expect_uri_query("/", "a=b=c", "/", "a=b%3Dc");
	expect_uri_query("/", "sp=x+y&pct=%41%7e%7E", "/", "pct=A~~&sp=x%20y");
	expect_uri_query("/", "k=%2f%2F/?:@", "/", "k=%2F%2F%2F%3F%3A%40");
	expect_uri_query("/", "flag&e=", "/", "e=&flag=");
	expect_uri_query("/", "&&a=1&&", "/", "a=1");
	expect_uri_query("/", "%e2%82%ac=\xe2\x82\xac", "/", "%E2%82%AC=%E2%82%AC");
	expect_uri_query("/", "=v", "/", "=v");
	expect_uri_query("/", "", "/", "");
	/* Escapes are decoded before sorting: "%61" is "a" and sorts with it. */
	expect_uri_query("/", "b=1&%61=2", "/", "a=2&b=1");
}

static void test_malformed_escapes(void **state)
{
	(void)state;
	static const char *const bad[] = {"a=%", "a=%4", "a=%zz", "%g1=1", "a=1%"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hsm_sigv4_request r = {.method = "GET", .path = "/", .query = bad[i],
		                       .headers = host_only, .n_headers = 1};
		hsm_buf out = {0};
		assert_int_equal(hsm_sigv4_canonical_request(&r, "host", &out).err, HSM_ERR_VALIDATION);
		hsm_buf_free(&out);
	}
	hsm_sigv4_request r = {.method = "GET", .path = "relative", .headers = host_only,
	                       .n_headers = 1};
	hsm_buf out = {0};
	assert_int_equal(hsm_sigv4_canonical_request(&r, "host", &out).err, HSM_ERR_VALIDATION);
	hsm_buf_free(&out);
}

static void test_header_folding_and_duplicates(void **state)
{
	(void)state;
	static const hsm_sigv4_header h[] = {
	    {"Host", "h"},
	    {"X-Fold", "\t a  \t b \r\n  c \t"},
	    {"X-Dup", " one "},
	    {"x-DUP", "two  words"},
	    {"X-Empty", "   "},
	    {"X-Unsigned", "ignored"},
	    {"X-DUP", ""},
	};
	hsm_sigv4_request r = {.method = "POST", .path = "/", .headers = h, .n_headers = 7,
	                       .body = (const uint8_t *)"{}", .body_len = 2};
	hsm_buf out = {0};
	assert_true(hsm_ok(hsm_sigv4_canonical_request(&r, "host;x-dup;x-empty;x-fold", &out)));
	assert_true(hsm_ok(hsm_buf_terminate(&out)));
	assert_string_equal((const char *)out.data,
	                    "POST\n/\n\nhost:h\nx-dup:one,two words,\nx-empty:\nx-fold:a b c\n\n"
	                    "host;x-dup;x-empty;x-fold\n"
	                    "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
	hsm_buf_free(&out);
	/* A name in the list that the request lacks is an error, not an empty value. */
	assert_int_equal(hsm_sigv4_canonical_request(&r, "host;x-missing", &out).err,
	                 HSM_ERR_INCOMPLETE_SIGNATURE);
	hsm_buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_path_normalization),
	    cmocka_unit_test(test_path_encoding),
	    cmocka_unit_test(test_query_order_and_encoding),
	    cmocka_unit_test(test_malformed_escapes),
	    cmocka_unit_test(test_header_folding_and_duplicates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
