/*
 * http_parse_test.c - the request-head and chunked-body parsers
 * (server/http_parse.h): each rule of the header, one case or more apiece,
 * and the incremental entry points fed a byte at a time, which must reach
 * what one call on the whole input reaches.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/http_parse.h"

/* A string literal with its length, so that embedded NULs count. */
#define LIT(s) (s), (sizeof(s) - 1)

#define HOST "Host: kms\r\n"

/* ---- Heads --------------------------------------------------------------- */

static uint8_t head_buf[64 * 1024];

/* Parses text, a whole head (hsm_http_head_end must find its end at n). */
static hsm_http_parse parse_n(const char *text, size_t n, hsm_http_head *h)
{
	assert_true(n <= sizeof(head_buf));
	memcpy(head_buf, text, n);
	size_t scan = 0;
	assert_int_equal(hsm_http_head_end(head_buf, n, &scan), n);
	return hsm_http_parse_head(head_buf, n, h);
}

static hsm_http_parse parse(const char *text, hsm_http_head *h)
{
	return parse_n(text, strlen(text), h);
}

static void test_get_with_query(void **state)
{
	(void)state;
	hsm_http_head h;
	assert_int_equal(parse("GET /keys/k1?x=1&y=%20 HTTP/1.1\r\n" HOST "User-Agent: sdk/1\r\n\r\n",
	                       &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.method, "GET");
	assert_string_equal(h.path, "/keys/k1");
	assert_string_equal(h.query, "x=1&y=%20");
	assert_int_equal(h.minor, 1);
	assert_int_equal(h.n_fields, 2);
	assert_string_equal(h.fields[0].name, "Host");
	assert_string_equal(h.fields[0].value, "kms");
	assert_string_equal(h.fields[1].name, "User-Agent");
	assert_string_equal(h.fields[1].value, "sdk/1");
	assert_int_equal(h.body, HSM_HTTP_BODY_NONE);
	assert_true(h.keep_alive);
	assert_false(h.expect_continue);

	/* The first '?' splits; an empty query is "" as when there is none. */
	assert_int_equal(parse("get /a?b?c/d HTTP/1.1\r\n" HOST "\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.method, "get"); /* case kept */
	assert_string_equal(h.path, "/a");
	assert_string_equal(h.query, "b?c/d");
	assert_int_equal(parse("GET /a? HTTP/1.1\r\n" HOST "\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.query, "");
	assert_int_equal(parse("GET / HTTP/1.1\r\n" HOST "\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.path, "/");
	assert_string_equal(h.query, "");
	assert_int_equal(parse("OPTIONS * HTTP/1.1\r\n" HOST "\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.path, "*");
	assert_int_equal(parse("X-Y.Z~! / HTTP/1.1\r\n" HOST "\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.method, "X-Y.Z~!");
}

/* The character classes the response side checks handler-given fields with. */
static void test_token_and_value_classes(void **state)
{
	(void)state;
	assert_true(hsm_http_is_token("X-Amz-Target"));
	assert_true(hsm_http_is_token("!#$%&'*+-.^_`|~09azAZ"));
	assert_false(hsm_http_is_token(""));
	assert_false(hsm_http_is_token("Bad Name"));
	assert_false(hsm_http_is_token("Bad:Name"));
	assert_false(hsm_http_is_token("Bad\r\nHeader"));
	assert_false(hsm_http_is_token("caf\xc3\xa9"));
	assert_true(hsm_http_is_field_value(""));
	assert_true(hsm_http_is_field_value("text/plain; q=0.5\tx"));
	assert_true(hsm_http_is_field_value("obs-text \x80\xff"));
	assert_false(hsm_http_is_field_value("a\rb"));
	assert_false(hsm_http_is_field_value("a\nb"));
	assert_false(hsm_http_is_field_value("a\x7f"));
	assert_false(hsm_http_is_field_value("a\x01"));
}

/* RFC 9112 section 3.2.2: absolute-form is accepted; its authority is the Host. */
static void test_absolute_form(void **state)
{
	(void)state;
	hsm_http_head h;
	assert_int_equal(parse("POST http://kms.example:8443/a/b?x=1 HTTP/1.1\r\nHost: other\r\n"
	                       "X-A: 1\r\n\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.method, "POST");
	assert_string_equal(h.path, "/a/b");
	assert_string_equal(h.query, "x=1");
	assert_string_equal(h.authority, "kms.example:8443");
	assert_string_equal(hsm_http_head_field(&h, "host"), "kms.example:8443");
	assert_string_equal(hsm_http_head_field(&h, "X-A"), "1");
	/* An empty path is "/"; the scheme is case-insensitive. */
	assert_int_equal(parse("GET HTTPS://kms HTTP/1.1\r\n" HOST "\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.path, "/");
	assert_string_equal(h.query, "");
	assert_string_equal(h.authority, "kms");
	assert_int_equal(parse("GET http://[::1]:9?q HTTP/1.1\r\n" HOST "\r\n", &h),
	                 HSM_HTTP_PARSE_OK);
	assert_string_equal(h.path, "/");
	assert_string_equal(h.query, "q");
	assert_string_equal(h.authority, "[::1]:9");
	/* Origin-form has none. */
	assert_int_equal(parse("GET /x HTTP/1.1\r\n" HOST "\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_null(h.authority);
	assert_string_equal(hsm_http_head_field(&h, "Host"), "kms");
}

static void test_post_content_length(void **state)
{
	(void)state;
	hsm_http_head h;
	assert_int_equal(parse("POST / HTTP/1.1\r\n" HOST "Content-Length: 42\r\n"
	                       "Expect: 100-Continue\r\n\r\n", &h), HSM_HTTP_PARSE_OK);
	assert_string_equal(h.method, "POST");
	assert_int_equal(h.body, HSM_HTTP_BODY_LENGTH);
	assert_int_equal(h.content_length, 42);
	assert_true(h.expect_continue);
	assert_int_equal(parse("POST / HTTP/1.1\r\n" HOST "content-length: 0\r\n\r\n", &h),
	                 HSM_HTTP_PARSE_OK);
	assert_int_equal(h.body, HSM_HTTP_BODY_LENGTH);
	assert_int_equal(h.content_length, 0);
	assert_false(h.expect_continue);
	/* Values are trimmed first; leading zeros are digits like any other. */
	assert_int_equal(parse("POST / HTTP/1.1\r\n" HOST "Content-Length: \t007 \r\n\r\n", &h),
	                 HSM_HTTP_PARSE_OK);
	assert_int_equal(h.content_length, 7);
	/* 2^63 is the largest length accepted. */
	assert_int_equal(parse("POST / HTTP/1.1\r\n" HOST "Content-Length: 9223372036854775808\r\n\r\n",
	                       &h), HSM_HTTP_PARSE_OK);
	assert_true(h.content_length == UINT64_C(1) << 63);
	/* Expect means nothing from an HTTP/1.0 client, or with another value. */
	assert_int_equal(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &h),
	                 HSM_HTTP_PARSE_OK);
	assert_false(h.expect_continue);
	assert_int_equal(parse("POST / HTTP/1.1\r\n" HOST "Expect: 100-continued\r\n\r\n", &h),
	                 HSM_HTTP_PARSE_OK);
	assert_false(h.expect_continue);
	/* Chunked, in any case. */
	assert_int_equal(parse("POST / HTTP/1.1\r\n" HOST "Transfer-Encoding: Chunked\r\n\r\n", &h),
	                 HSM_HTTP_PARSE_OK);
	assert_int_equal(h.body, HSM_HTTP_BODY_CHUNKED);
}

static void test_keep_alive(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		bool keep_alive;
	} cases[] = {
	    {"GET / HTTP/1.1\r\n" HOST "\r\n", true},
	    {"GET / HTTP/1.1\r\n" HOST "Connection: close\r\n\r\n", false},
	    {"GET / HTTP/1.1\r\n" HOST "Connection: CLOSE\r\n\r\n", false},
	    {"GET / HTTP/1.1\r\n" HOST "Connection: foo, close\r\n\r\n", false},
	    {"GET / HTTP/1.1\r\n" HOST "Connection: ,,close\t,\r\n\r\n", false},
	    {"GET / HTTP/1.1\r\n" HOST "Connection: foo\r\nConnection: close\r\n\r\n", false},
	    {"GET / HTTP/1.1\r\n" HOST "Connection: closed, xclose\r\n\r\n", true},
	    {"GET / HTTP/1.1\r\n" HOST "Connection: keep-alive\r\n\r\n", true},
	    {"GET / HTTP/1.1\r\n" HOST "X-Connection: close\r\n\r\n", true},
	    {"GET / HTTP/1.0\r\n\r\n", false},
	    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
	    {"GET / HTTP/1.0\r\nConnection: Upgrade, Keep-Alive\r\n\r\n", true},
	    {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
	    {"GET / HTTP/1.0\r\nConnection: keep-alive-ish\r\n\r\n", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		hsm_http_head h;
		assert_int_equal(parse(cases[i].text, &h), HSM_HTTP_PARSE_OK);
		if (h.keep_alive != cases[i].keep_alive)
			fail_msg("case %zu: keep_alive %d", i, h.keep_alive);
	}
}

static void test_line_endings(void **state)
{
	(void)state;
	static const char *const texts[] = {
	    "GET /x?q HTTP/1.1\nHost: kms\nX-A:  v \n\n",
	    "GET /x?q HTTP/1.1\r\nHost: kms\nX-A:  v \r\n\n",
	    "\r\n\n\r\nGET /x?q HTTP/1.1\r\nHost: kms\r\nX-A: v\r\n\r\n",
	    "\n\nGET /x?q HTTP/1.1\nHost: kms\r\nX-A: v\n\r\n",
	};
	for (size_t i = 0; i < sizeof(texts) / sizeof(*texts); i++) {
		hsm_http_head h;
		assert_int_equal(parse(texts[i], &h), HSM_HTTP_PARSE_OK);
		assert_string_equal(h.method, "GET");
		assert_string_equal(h.path, "/x");
		assert_string_equal(h.query, "q");
		assert_int_equal(h.n_fields, 2);
		assert_string_equal(h.fields[1].value, "v");
	}
}

/* hsm_http_head_end on text fed one byte at a time, into a buffer that grows. */
static size_t head_end_bytewise(const char *text, size_t n)
{
	size_t scan = 0;
	for (size_t len = 0; len <= n; len++) {
		uint8_t *b = malloc(len > 0 ? len : 1); /* exact size: ASan sees overreads */
		assert_non_null(b);
		memcpy(b, text, len);
		size_t end = hsm_http_head_end(b, len, &scan);
		free(b);
		if (end != 0) {
			assert_int_equal(end, len); /* found as soon as it is there */
			return end;
		}
	}
	return 0;
}

static void test_head_end(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		size_t end; /* 0: no end in text */
	} cases[] = {
	    {"GET / HTTP/1.1\r\nHost: k\r\n\r\n", 27},
	    {"GET / HTTP/1.1\r\nHost: k\r\n\r\nPOST / HTTP/1.1\r\n\r\n", 27},
	    {"GET / HTTP/1.1\nHost: k\n\n{}", 24},
	    {"GET / HTTP/1.1\nHost: k\r\n\n", 25},
	    {"GET / HTTP/1.1\r\nHost: k\n\r\n", 26},
	    {"\r\n\r\n\n\nGET / HTTP/1.0\r\n\r\n", 24},
	    {"GET / HTTP/1.0\n\n", 16},
	    {"\r\n\r\n\n\n\r\n", 0},
	    {"GET / HTTP/1.1\r\nHost: k\r\n\r", 0},
	    {"GET / HTTP/1.1\r\nHost: k\r\n", 0},
	    {"GET / HTTP/1.1\r\nHost: k\r\r\n", 0}, /* "k\r" is not empty */
	    {"", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		const char *t = cases[i].text;
		size_t scan = 0;
		size_t all = hsm_http_head_end((const uint8_t *)t, strlen(t), &scan);
		if (all != cases[i].end)
			fail_msg("case %zu: end %zu, not %zu", i, all, cases[i].end);
		assert_int_equal(head_end_bytewise(t, strlen(t)), all);
	}
}

/* Two 4 KiB-line heads, fed in pieces of every size from 1 to 9 bytes. */
static void test_head_end_pieces(void **state)
{
	(void)state;
	static char text[10000];
	int w = snprintf(text, sizeof(text), "\r\n\nPUT /%04000d HTTP/1.1\r\nHost: k\r\nX: %04000d\n\r\n",
	                 1, 2);
	assert_true(w > 0 && (size_t)w < sizeof(text));
	size_t n = (size_t)w, scan = 0;
	size_t all = hsm_http_head_end((const uint8_t *)text, n, &scan);
	assert_int_equal(all, n);
	for (size_t piece = 1; piece < 10; piece++) {
		size_t end = 0, len = 0;
		scan = 0;
		while (end == 0 && len < n) {
			len = len + piece < n ? len + piece : n;
			end = hsm_http_head_end((const uint8_t *)text, len, &scan);
		}
		assert_int_equal(end, all);
	}
}

/* Whether a request can still begin with these bytes: after empty lines, a token byte. */
static void test_head_start(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		size_t n;
		hsm_http_parse want;
		size_t skip;
	} cases[] = {
	    {"GET / HTTP/1.1\r\n", 16, HSM_HTTP_PARSE_OK, 0},
	    {"\r\n\nPOST", 7, HSM_HTTP_PARSE_OK, 3},
	    {"\r\n\r\n", 4, HSM_HTTP_PARSE_PARTIAL, 4},
	    {"", 0, HSM_HTTP_PARSE_PARTIAL, 0},
	    {"\x16\x03\x01\x02\x00", 5, HSM_HTTP_PARSE_BAD, 0}, /* a TLS ClientHello */
	    {"\x80\x2e\x01", 3, HSM_HTTP_PARSE_BAD, 0},          /* an SSLv2-style one */
	    {"\r\n\x16\x03", 4, HSM_HTTP_PARSE_BAD, 2},
	    {" GET / HTTP/1.1", 15, HSM_HTTP_PARSE_BAD, 0},
	    {"\0", 1, HSM_HTTP_PARSE_BAD, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		size_t skip = 0;
		hsm_http_parse got =
		    hsm_http_head_start((const uint8_t *)cases[i].text, cases[i].n, &skip);
		if (got != cases[i].want || skip != cases[i].skip)
			fail_msg("case %zu: %d after %zu", i, (int)got, skip);
		/* Byte by byte, resuming: the same answer, each byte looked at once. */
		skip = 0;
		for (size_t len = 0; len <= cases[i].n; len++)
			got = hsm_http_head_start((const uint8_t *)cases[i].text, len, &skip);
		assert_int_equal(got, cases[i].want);
		assert_int_equal(skip, cases[i].skip);
	}
	assert_true(hsm_http_may_begin_request('G') && hsm_http_may_begin_request('\n'));
	assert_false(hsm_http_may_begin_request(0x16) || hsm_http_may_begin_request(0x80));
}

static void expect_code(const char *text, size_t n, hsm_http_parse want)
{
	hsm_http_head h;
	hsm_http_parse got = parse_n(text, n, &h);
	if (got != want)
		fail_msg("%.*s: got %d, want %d", (int)n, text, (int)got, (int)want);
}

#define EXPECT(text, want) expect_code(LIT(text), (want))

static void test_bad_request_line(void **state)
{
	(void)state;
	EXPECT("GET  / HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1 \r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT(" GET / HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET\t/ HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("G(T / HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET /\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET http:// HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_HOST);
	EXPECT("GET http:///x HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_HOST);
	EXPECT("GET http://user@kms/ HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_HOST);
	EXPECT("GET ftp://kms/ HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET http:/kms/ HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("CONNECT kms:443 HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET *x HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET /a#frag HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET /a\x7f HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET /a\x80 HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET /a\x00 HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET /a\rb HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	/* Versions: well-formed but unserved is VERSION, anything else BAD. */
	EXPECT("GET / HTTP/2.0\r\n" HOST "\r\n", HSM_HTTP_PARSE_VERSION);
	EXPECT("GET / HTTP/1.2\r\n" HOST "\r\n", HSM_HTTP_PARSE_VERSION);
	EXPECT("GET / HTTP/0.9\r\n\r\n", HSM_HTTP_PARSE_VERSION);
	EXPECT("GET / HTTP/1.1x\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/11.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / http/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1,1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/a.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_BAD);
}

static void test_bad_fields(void **state)
{
	(void)state;
	/* Obsolete line folding, RFC 9112 section 5.2. */
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: 1\r\n 2\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: 1\r\n\t2\r\n\r\n", HSM_HTTP_PARSE_BAD);
	/* Whitespace before the colon, section 5.1; no colon; no name. */
	EXPECT("GET / HTTP/1.1\r\nHost : kms\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A\t: 1\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST ": 1\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X(A): 1\r\n\r\n", HSM_HTTP_PARSE_BAD);
	/* Characters of values: NUL, controls, DEL, and bare CRs anywhere. */
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: a\x00" "b\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: a\x01" "b\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: a\x1f\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: a\x7f\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: a\rb\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: a\r\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X\rA: a\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "\rX-A: a\r\n\r\n", HSM_HTTP_PARSE_BAD);
	EXPECT("GET / HTTP/1.1\r\n" HOST "X-A: \t\x80\xff ~!\r\n\r\n", HSM_HTTP_PARSE_OK);
	/* Host, RFC 9112 section 3.2: exactly one in HTTP/1.1, at most one in 1.0. */
	EXPECT("GET / HTTP/1.1\r\n\r\n", HSM_HTTP_PARSE_HOST);
	EXPECT("GET / HTTP/1.1\r\nX-Host: kms\r\n\r\n", HSM_HTTP_PARSE_HOST);
	EXPECT("GET / HTTP/1.1\r\n" HOST "HOST: kms\r\n\r\n", HSM_HTTP_PARSE_HOST);
	EXPECT("GET / HTTP/1.1\r\nhost: kms\r\n\r\n", HSM_HTTP_PARSE_OK);
	EXPECT("GET / HTTP/1.1\r\nHost:\r\n\r\n", HSM_HTTP_PARSE_OK);
	EXPECT("GET / HTTP/1.0\r\n\r\n", HSM_HTTP_PARSE_OK);
	EXPECT("GET / HTTP/1.0\r\n" HOST HOST "\r\n", HSM_HTTP_PARSE_HOST);
}

/* RFC 9112 section 3.2: a Host value that is not uri-host [":" port] is a 400. */
static void test_host_values(void **state)
{
	(void)state;
	static const char *const good[] = {
	    "kms", "KMS.Example.COM", "kms-1.eu_west.example.", "127.0.0.1", "127.0.0.1:18441",
	    "localhost:1", "h:0", "h:65535", "h:00080", "999.1.1.1", "a%2Db", "x!$&'()*+,;=~",
	    "[::1]", "[::1]:8443", "[2001:db8::ff00:42:8329]", "[::ffff:192.0.2.1]:443",
	    "[v1.fe80::a+en1]", "[V7.x:y]:1"};
	static const char *const bad[] = {
	    "a b", "evil@127.0.0.1", "127.0.0.1:18441/path", "\xff\xfe", "x:99999", "x:65536",
	    "x:", ":80", "x:123456", "x:8a", "x:+80", "x:-1", "x::80", "a:1:2", "a/b", "a?b", "a#b",
	    "a\\b", "a\"b", "a%", "a%2", "a%zz", "a\tb", "::1", "[::1", "::1]", "[]", "[::1]x",
	    "[::1]:", "[::1]:99999", "[::g]", "[1.2.3.4]", "[fe80::1%25eth0]", "[v.x]", "[v1.]",
	    "[vz.x]", "[v1x]", "caf\xc3\xa9", "[::1] :80", "x :80"};
	char text[256];
	hsm_http_head h;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(text, sizeof(text), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
		if (parse(text, &h) != HSM_HTTP_PARSE_OK)
			fail_msg("Host: %s refused", good[i]);
		assert_string_equal(hsm_http_head_field(&h, "host"), good[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
		if (parse(text, &h) != HSM_HTTP_PARSE_HOST)
			fail_msg("Host: %s accepted", bad[i]);
		/* HTTP/1.0 takes no Host at all, but not an invalid one. */
		snprintf(text, sizeof(text), "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", bad[i]);
		if (parse(text, &h) != HSM_HTTP_PARSE_HOST)
			fail_msg("HTTP/1.0 Host: %s accepted", bad[i]);
		/* The authority of an absolute-form target is a Host too (where it ends
		 * before a '/' or '?', the rest is the path or query). */
		if (strpbrk(bad[i], "/?") != NULL)
			continue;
		snprintf(text, sizeof(text), "GET http://%s/ HTTP/1.1\r\n" HOST "\r\n", bad[i]);
		hsm_http_parse r = parse(text, &h);
		if (r != HSM_HTTP_PARSE_HOST && r != HSM_HTTP_PARSE_BAD)
			fail_msg("GET http://%s/ accepted", bad[i]);
	}
	/* A NUL inside the brackets does not end the address early. */
	EXPECT("GET http://[::1\0]/ HTTP/1.1\r\n" HOST "\r\n", HSM_HTTP_PARSE_HOST);
	/* The Host field is checked even when an absolute-form target replaces it. */
	EXPECT("GET http://kms/ HTTP/1.1\r\nHost: a b\r\n\r\n", HSM_HTTP_PARSE_HOST);
}

static void test_field_limit(void **state)
{
	(void)state;
	static char text[(HSM_HTTP_MAX_FIELDS + 2) * 16 + 64]; /* "X-n: v\r\n" each */
	hsm_http_head h;
	for (size_t n = HSM_HTTP_MAX_FIELDS; n <= HSM_HTTP_MAX_FIELDS + 1; n++) {
		hsm_sb b;
		hsm_sb_init(&b, text, sizeof(text));
		hsm_sb_add(&b, "GET / HTTP/1.1\r\n" HOST);
		for (size_t i = 1; i < n; i++) {
			hsm_sb_add(&b, "X-");
			hsm_sb_u64(&b, i);
			hsm_sb_add(&b, ": v\r\n");
		}
		hsm_sb_add(&b, "\r\n");
		assert_false(b.cut);
		hsm_http_parse r = parse(text, &h);
		if (n == HSM_HTTP_MAX_FIELDS) {
			assert_int_equal(r, HSM_HTTP_PARSE_OK);
			assert_int_equal(h.n_fields, HSM_HTTP_MAX_FIELDS);
			char last[16];
			snprintf(last, sizeof(last), "X-%d", HSM_HTTP_MAX_FIELDS - 1);
			assert_string_equal(h.fields[n - 1].name, last);
		} else {
			assert_int_equal(r, HSM_HTTP_PARSE_TOO_LARGE);
		}
	}
}

static void test_values_trimmed_and_lookup(void **state)
{
	(void)state;
	hsm_http_head h;
	assert_int_equal(parse("GET / HTTP/1.1\r\n" HOST "X-Dup: \t v a l \t \r\nx-dup: 2\r\n"
	                       "X-Empty:\r\nX-Blank: \t \r\nX-Tight:t\r\n\r\n", &h),
	                 HSM_HTTP_PARSE_OK);
	assert_int_equal(h.n_fields, 6);
	assert_string_equal(h.fields[1].name, "X-Dup");
	assert_string_equal(h.fields[1].value, "v a l");
	assert_string_equal(h.fields[2].name, "x-dup"); /* case kept */
	assert_string_equal(h.fields[3].value, "");
	assert_string_equal(h.fields[4].value, "");
	assert_string_equal(h.fields[5].value, "t");
	/* Lookup: any case, the first of several, whole names only. */
	assert_string_equal(hsm_http_head_field(&h, "X-DUP"), "v a l");
	assert_string_equal(hsm_http_head_field(&h, "x-dup"), "v a l");
	assert_string_equal(hsm_http_head_field(&h, "host"), "kms");
	assert_string_equal(hsm_http_head_field(&h, "X-Empty"), "");
	assert_null(hsm_http_head_field(&h, "X-Du"));
	assert_null(hsm_http_head_field(&h, "X-Dupe"));
	assert_null(hsm_http_head_field(&h, ""));
	assert_null(hsm_http_head_field(&h, "Content-Length"));
}

static void test_framing(void **state)
{
	(void)state;
#define POST "POST / HTTP/1.1\r\n" HOST
	EXPECT(POST "Content-Length: +3\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Content-Length: -1\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Content-Length:\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Content-Length: 3,3\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Content-Length: 3 3\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Content-Length: 0x10\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Content-Length: 3\r\nContent-Length: 3\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Content-Length: 3\r\ncontent-length: 4\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Transfer-Encoding: gzip\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Transfer-Encoding: gzip, chunked\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Transfer-Encoding: chunked, chunked\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Transfer-Encoding:\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	       HSM_HTTP_PARSE_FRAMING);
	EXPECT("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
	EXPECT(POST "Transfer-Encoding:  chunked \r\n\r\n", HSM_HTTP_PARSE_OK);
	/* Beyond 2^63, or beyond 19 digits whatever their value: a length too large (413). */
	EXPECT(POST "Content-Length: 9223372036854775809\r\n\r\n", HSM_HTTP_PARSE_LENGTH_TOO_LARGE);
	EXPECT(POST "Content-Length: 9999999999999999999\r\n\r\n", HSM_HTTP_PARSE_LENGTH_TOO_LARGE);
	EXPECT(POST "Content-Length: 18446744073709551617\r\n\r\n", HSM_HTTP_PARSE_LENGTH_TOO_LARGE);
	EXPECT(POST "Content-Length: 00000000000000000001\r\n\r\n", HSM_HTTP_PARSE_LENGTH_TOO_LARGE);
	EXPECT(POST "Content-Length: 0000000000000000001\r\n\r\n", HSM_HTTP_PARSE_OK);
	EXPECT(POST "Content-Length: 123456789012345678901234567890x\r\n\r\n", HSM_HTTP_PARSE_FRAMING);
#undef POST
}

/* ---- Chunked bodies ------------------------------------------------------ */

typedef struct decoded {
	hsm_http_parse r;
	size_t out, pos;
	uint8_t *buf; /* owned; the body is buf[0..out) */
} decoded;

/* One call on the whole wire text. */
static decoded decode_all(const char *wire, size_t n, size_t max_body)
{
	decoded d = {.buf = malloc(n > 0 ? n : 1)};
	assert_non_null(d.buf);
	memcpy(d.buf, wire, n);
	hsm_http_chunked c;
	hsm_http_chunked_init(&c);
	d.r = hsm_http_chunked_step(&c, d.buf, n, max_body);
	d.out = c.out;
	d.pos = c.pos;
	return d;
}

/*
 * One byte at a time, each call on a new allocation of exactly the bytes so
 * far (the old contents memcpy'd over, as a growing connection buffer does).
 */
static decoded decode_bytewise(const char *wire, size_t n, size_t max_body)
{
	decoded d = {.r = HSM_HTTP_PARSE_PARTIAL};
	hsm_http_chunked c = {0};
	for (size_t len = 1; len <= n && d.r == HSM_HTTP_PARSE_PARTIAL; len++) {
		uint8_t *nb = malloc(len);
		assert_non_null(nb);
		if (d.buf != NULL)
			memcpy(nb, d.buf, len - 1);
		nb[len - 1] = (uint8_t)wire[len - 1];
		free(d.buf);
		d.buf = nb;
		d.r = hsm_http_chunked_step(&c, d.buf, len, max_body);
		if (d.r == HSM_HTTP_PARSE_PARTIAL)
			assert_int_equal(c.pos, len);
		assert_true(c.out < c.pos);
	}
	d.out = c.out;
	d.pos = c.pos;
	return d;
}

/* Decodes both ways; they must agree.  Returns the whole-input result. */
static decoded decode(const char *wire, size_t n, size_t max_body)
{
	decoded a = decode_all(wire, n, max_body), b = decode_bytewise(wire, n, max_body);
	assert_int_equal(a.r, b.r);
	if (a.r == HSM_HTTP_PARSE_OK || a.r == HSM_HTTP_PARSE_PARTIAL) {
		assert_int_equal(a.out, b.out);
		assert_int_equal(a.pos, b.pos);
		assert_memory_equal(a.buf, b.buf, a.out);
		assert_true(a.out <= max_body);
	}
	free(b.buf);
	return a;
}

static void expect_body(const char *wire, size_t n, const char *body, size_t max_body)
{
	decoded d = decode(wire, n, max_body);
	if (d.r != HSM_HTTP_PARSE_OK)
		fail_msg("%.*s: got %d", (int)n, wire, (int)d.r);
	assert_int_equal(d.pos, n);
	assert_int_equal(d.out, strlen(body));
	assert_memory_equal(d.buf, body, d.out);
	free(d.buf);
}

static void expect_chunked(const char *wire, size_t n, hsm_http_parse want, size_t max_body)
{
	decoded d = decode(wire, n, max_body);
	if (d.r != want)
		fail_msg("%.*s: got %d, want %d", (int)n, wire, (int)d.r, (int)want);
	free(d.buf);
}

#define BODY(wire, body) expect_body(LIT(wire), (body), SIZE_MAX)
#define CHUNKED(wire, want) expect_chunked(LIT(wire), (want), SIZE_MAX)

static void test_chunked_good(void **state)
{
	(void)state;
	BODY("5\r\nhello\r\n0\r\n\r\n", "hello");
	BODY("0\r\n\r\n", "");
	BODY("3\r\nabc\r\n1\r\nd\r\na\r\n0123456789\r\nA\r\nABCDEFGHIJ\r\n0\r\n\r\n",
	     "abcd0123456789ABCDEFGHIJ");
	BODY("0000000000000003\r\n\r\n\n\r\n0\r\n\r\n", "\r\n\n"); /* data is data */
	/* Extensions are skipped, with BWS before each ';'. */
	BODY("5;name=value\r\nhello\r\n3 ;a=\"q;x\"\t; b\r\nabc\r\n0;last\r\n\r\n", "helloabc");
	/* Trailer fields are read and ignored. */
	BODY("5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n", "hello");
	/* Bare LF for CRLF everywhere (RFC 9112 section 2.2). */
	BODY("5\nhello\n0\nX-T: 1\n\n", "hello");
	BODY("5;x\nhello\r\n0\r\nX-T: 1\n\r\n", "hello");
	/* The body may reach max_body exactly. */
	expect_body(LIT("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"), "helloworld", 10);
	expect_body(LIT("0\r\n\r\n"), "", 0);
}

static void test_chunked_bad(void **state)
{
	(void)state;
	CHUNKED("g\r\nhello\r\n0\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("\r\nhello\r\n0\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED(";x\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED(" 5\r\nhello\r\n0\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("5 \r\nhello\r\n0\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("5 5\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("5x\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("-5\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("0x5\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("5\rhello", HSM_HTTP_PARSE_BAD);
	CHUNKED("5;a\x01\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("5;a\rb\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("00000000000000005\r\nhello\r\n", HSM_HTTP_PARSE_BAD); /* 17 digits */
	/* Chunk data not followed by CRLF or LF. */
	CHUNKED("5\r\nhelloX\r\n0\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("5\r\nhello\rX\n0\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("5\r\nhello\r\r\n", HSM_HTTP_PARSE_BAD);
	/* Trailer lines must be field lines; the final CR must have its LF. */
	CHUNKED("0\r\nno-colon\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("0\r\n: v\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("0\r\nX-A : v\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("0\r\nX-A: 1\r\n folded\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("0\r\nX-A: a\rb\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("0\r\nX-A: a\x00\r\n\r\n", HSM_HTTP_PARSE_BAD);
	CHUNKED("0\r\n\rX", HSM_HTTP_PARSE_BAD);
	/* Sizes over 2^63. */
	CHUNKED("8000000000000001\r\n", HSM_HTTP_PARSE_TOO_LARGE);
	CHUNKED("ffffffffffffffff\r\n", HSM_HTTP_PARSE_TOO_LARGE);
	if (SIZE_MAX > UINT32_MAX) /* 2^63 itself is a size, waiting for its data */
		CHUNKED("8000000000000000\r\nabc", HSM_HTTP_PARSE_PARTIAL);
	/* Over max_body: refused at the size line, before the data comes. */
	expect_chunked(LIT("5\r\nhello\r\n6\r\n"), HSM_HTTP_PARSE_TOO_LARGE, 10);
	expect_chunked(LIT("b\r\n"), HSM_HTTP_PARSE_TOO_LARGE, 10);
	expect_chunked(LIT("1\r\n"), HSM_HTTP_PARSE_TOO_LARGE, 0);
}

/* A size line or trailer section of exactly the limit, then one byte more. */
static void test_chunked_limits(void **state)
{
	(void)state;
	static char wire[HSM_HTTP_TRAILER_MAX + 64];
	for (size_t extra = 0; extra <= 1; extra++) {
		/* "5;" and 'x's: HSM_HTTP_CHUNK_LINE_MAX bytes before the CRLF, or one more. */
		size_t n = 0, line = HSM_HTTP_CHUNK_LINE_MAX + extra;
		memcpy(wire, "5;", 2);
		memset(wire + 2, 'x', line - 2);
		n = line;
		memcpy(wire + n, "\r\nhello\r\n0\r\n\r\n", 15);
		n += 15;
		expect_chunked(wire, n, extra == 0 ? HSM_HTTP_PARSE_OK : HSM_HTTP_PARSE_BAD, SIZE_MAX);
	}
	for (size_t extra = 0; extra <= 1; extra++) {
		/* "0\r\n", then "X: xxx...\r\n" and "\r\n": the trailer section is
		 * HSM_HTTP_TRAILER_MAX bytes, or one more. */
		size_t trailer = HSM_HTTP_TRAILER_MAX + extra;
		size_t n = 0;
		memcpy(wire, "0\r\nX: ", 6);
		n = 6;
		memset(wire + n, 'x', trailer - 4 - 3);
		n += trailer - 4 - 3;
		memcpy(wire + n, "\r\n\r\n", 4);
		n += 4;
		assert_int_equal(n, 3 + trailer);
		expect_chunked(wire, n, extra == 0 ? HSM_HTTP_PARSE_OK : HSM_HTTP_PARSE_TOO_LARGE,
		               SIZE_MAX);
	}
}

static void test_chunked_partial_and_pipelined(void **state)
{
	(void)state;
	/* What has been decoded so far is at the front, and all input consumed. */
	static const char wire[] = "5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
	                           "GET / HTTP/1.1\r\nHost: kms\r\n\r\n";
	size_t body_end = (size_t)(strstr(wire, "GET") - wire);
	uint8_t buf[sizeof(wire)];
	memcpy(buf, wire, sizeof(wire));
	hsm_http_chunked c;
	hsm_http_chunked_init(&c);
	assert_int_equal(hsm_http_chunked_step(&c, buf, 6, SIZE_MAX), HSM_HTTP_PARSE_PARTIAL);
	assert_int_equal(c.pos, 6);
	assert_int_equal(c.out, 3);
	assert_memory_equal(buf, "hel", 3);
	assert_int_equal(hsm_http_chunked_step(&c, buf, 6, SIZE_MAX), HSM_HTTP_PARSE_PARTIAL);
	assert_int_equal(hsm_http_chunked_step(&c, buf, body_end - 1, SIZE_MAX),
	                 HSM_HTTP_PARSE_PARTIAL);
	assert_int_equal(c.out, 8);
	/* Given the next request too, the decoder stops right before it. */
	assert_int_equal(hsm_http_chunked_step(&c, buf, sizeof(wire) - 1, SIZE_MAX),
	                 HSM_HTTP_PARSE_OK);
	assert_int_equal(c.pos, body_end);
	assert_int_equal(c.out, 8);
	assert_memory_equal(buf, "helloabc", 8);
	assert_memory_equal(buf + c.pos, "GET / HTTP/1.1", 14);
	/* The same, all at once and byte by byte. */
	decoded d = decode(wire, sizeof(wire) - 1, SIZE_MAX);
	assert_int_equal(d.r, HSM_HTTP_PARSE_OK);
	assert_int_equal(d.pos, body_end);
	free(d.buf);
	/* A zeroed decoder is an initialized one. */
	hsm_http_chunked z = {0};
	hsm_http_chunked_init(&c);
	assert_memory_equal(&z, &c, sizeof(c));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get_with_query),
	    cmocka_unit_test(test_absolute_form),
	    cmocka_unit_test(test_token_and_value_classes),
	    cmocka_unit_test(test_post_content_length),
	    cmocka_unit_test(test_keep_alive),
	    cmocka_unit_test(test_line_endings),
	    cmocka_unit_test(test_head_end),
	    cmocka_unit_test(test_head_end_pieces),
	    cmocka_unit_test(test_head_start),
	    cmocka_unit_test(test_bad_request_line),
	    cmocka_unit_test(test_bad_fields),
	    cmocka_unit_test(test_host_values),
	    cmocka_unit_test(test_field_limit),
	    cmocka_unit_test(test_values_trimmed_and_lookup),
	    cmocka_unit_test(test_framing),
	    cmocka_unit_test(test_chunked_good),
	    cmocka_unit_test(test_chunked_bad),
	    cmocka_unit_test(test_chunked_limits),
	    cmocka_unit_test(test_chunked_partial_and_pipelined),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
