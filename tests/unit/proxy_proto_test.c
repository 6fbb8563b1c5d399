/*
 * proxy_proto_test.c - the PROXY protocol header reader (server/proxy_proto.h):
 * versions 1 and 2, the forms that keep the connection's own address, the
 * limits, malformed headers, and delivery a byte at a time, which must reach
 * the verdict of one call on the whole input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/proxy_proto.h"

/* A string literal with its length, so that embedded NULs count. */
#define LIT(s) (const uint8_t *)(s), (sizeof(s) - 1)

#define V2_SIG "\r\n\r\n\0\r\nQUIT\n"
/* PROXY over TCP/IPv4: 203.0.113.7:51000 -> 10.0.0.1:443 */
#define V2_TCP4 V2_SIG "\x21\x11\x00\x0c" "\xcb\x00\x71\x07" "\x0a\x00\x00\x01" "\xc7\x38\x01\xbb"

/* The verdict on p[0..n), checked to be reached also when fed a byte at a time. */
static hsm_proxy_parse parse(const uint8_t *p, size_t n, hsm_proxy_header *h)
{
	uint8_t *copy = malloc(n > 0 ? n : 1); /* exact size: overreads show under ASan */
	assert_non_null(copy);
	memcpy(copy, p, n);
	hsm_proxy_parse all = hsm_proxy_parse_header(copy, n, h);
	free(copy);
	hsm_proxy_header h2 = {0};
	hsm_proxy_parse r = HSM_PROXY_PARTIAL;
	size_t k = 0;
	while (r == HSM_PROXY_PARTIAL && k < n) {
		uint8_t *piece = malloc(++k);
		assert_non_null(piece);
		memcpy(piece, p, k);
		r = hsm_proxy_parse_header(piece, k, &h2);
		free(piece);
	}
	assert_int_equal(r, all);
	if (all == HSM_PROXY_OK) {
		assert_int_equal(k, h->len); /* decided as soon as the header is complete */
		assert_int_equal(h2.len, h->len);
		assert_int_equal(h2.has_source, h->has_source);
		assert_memory_equal(h2.addr, h->addr, sizeof(h->addr));
		assert_int_equal(h2.port, h->port);
	}
	return all;
}

static void assert_source(const hsm_proxy_header *h, const char *addr, uint16_t port)
{
	char text[64];
	assert_true(h->has_source);
	assert_true(hsm_proxy_source_text(h, text, sizeof(text)));
	assert_string_equal(text, addr);
	assert_int_equal(h->port, port);
}

static void assert_bad(const uint8_t *p, size_t n)
{
	hsm_proxy_header h = {.len = 12345};
	assert_int_equal(parse(p, n, &h), HSM_PROXY_BAD);
	assert_int_equal(h.len, 12345); /* untouched */
}

/* ---- version 1 ------------------------------------------------------------------- */

static void test_v1_tcp4(void **state)
{
	(void)state;
	hsm_proxy_header h = {0};
#define LINE "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n"
	/* What follows the header is not the reader's business. */
	assert_int_equal(parse(LIT(LINE "GET / HTTP/1.1\r\n"), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, sizeof(LINE) - 1);
#undef LINE
	assert_int_equal(h.version, 1);
	assert_false(h.v6);
	assert_source(&h, "203.0.113.7", 51000);
	assert_int_equal(parse(LIT("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"), &h),
	                 HSM_PROXY_OK);
	assert_source(&h, "0.0.0.0", 0);
}

static void test_v1_tcp6(void **state)
{
	(void)state;
	hsm_proxy_header h = {0};
	assert_int_equal(parse(LIT("PROXY TCP6 2001:db8::7 2001:db8::1 40000 8443\r\n\x16\x03"), &h),
	                 HSM_PROXY_OK);
	assert_true(h.v6);
	assert_source(&h, "2001:db8::7", 40000);
	/* The longest TCP6 line (104 bytes); with UNKNOWN, the longest of all: 107. */
	static const char longest[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(parse(LIT(longest), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, 104);
	assert_source(&h, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
}

static void test_v1_unknown(void **state)
{
	(void)state;
	hsm_proxy_header h = {.has_source = true};
	assert_int_equal(parse(LIT("PROXY UNKNOWN\r\nGET"), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, 15);
	assert_false(h.has_source);
	/* Whatever follows UNKNOWN on the line is ignored (section 2.1). */
	assert_int_equal(parse(LIT("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), &h), HSM_PROXY_OK);
	assert_false(h.has_source);
	static const char longest[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(sizeof(longest) - 1, HSM_PROXY_V1_MAX);
	assert_int_equal(parse(LIT(longest), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, HSM_PROXY_V1_MAX);
	char text[64];
	assert_false(hsm_proxy_source_text(&h, text, sizeof(text)));
	assert_bad(LIT("PROXY UNKNOWNX\r\n"));
}

static void test_v1_malformed(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\n",       /* LF without CR */
	    "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\rX",      /* CR without LF */
	    "PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\n",          /* a field missing */
	    "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443 1\r\n",    /* one too many */
	    "PROXY TCP4  203.0.113.7 10.0.0.1 51000 443\r\n",     /* two spaces */
	    "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443 \r\n",     /* trailing space */
	    "PROXY TCP4 203.0.113.7\t10.0.0.1 51000 443\r\n",     /* a tab */
	    "PROXY TCP4 203.0.113.256 10.0.0.1 51000 443\r\n",    /* not an address */
	    "PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",      /* port out of range */
	    "PROXY TCP4 203.0.113.7 10.0.0.1 051000 443\r\n",     /* leading zero */
	    "PROXY TCP4 203.0.113.7 10.0.0.1 -1 443\r\n",         /* sign */
	    "PROXY TCP4 203.0.113.7 10.0.0.1 +1 443\r\n",
	    "PROXY TCP5 203.0.113.7 10.0.0.1 51000 443\r\n",      /* unknown protocol */
	    "PROXY tcp4 203.0.113.7 10.0.0.1 51000 443\r\n",      /* case matters */
	    "PROXY UDP4 203.0.113.7 10.0.0.1 51000 443\r\n",
	    "PROXY TCP4 2001:db8::7 10.0.0.1 51000 443\r\n",      /* family mismatch */
	    "PROXY TCP4 203.0.113.7 2001:db8::1 51000 443\r\n",
	    "PROXY TCP6 203.0.113.7 2001:db8::1 51000 443\r\n",
	    "PROXY TCP6 ::ffff:203.0.113.7 10.0.0.1 51000 443\r\n",
	    "PROXY\r\n",
	    "PROXY \r\n",
	    "proxy TCP4 203.0.113.7 10.0.0.1 51000 443\r\n",      /* not the signature */
	    "PROXYTCP4 203.0.113.7 10.0.0.1 51000 443\r\n",
	    " PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n",
	    "GET / HTTP/1.1\r\nHost: kms\r\n\r\n",                 /* no header at all */
	    "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",        /* a TLS ClientHello */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_bad((const uint8_t *)bad[i], strlen(bad[i]));
	/* A NUL or another control byte in the line. */
	assert_bad(LIT("PROXY TCP4 203.0.113.7\0 10.0.0.1 51000 443\r\n"));
	assert_bad(LIT("PROXY UNKNOWN \x01\r\n"));
}

static void test_v1_too_long_or_unterminated(void **state)
{
	(void)state;
	hsm_proxy_header h = {0};
	/* 107 bytes without a line end: it can no longer become a header. */
	char line[256];
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	assert_int_equal(parse((const uint8_t *)line, HSM_PROXY_V1_MAX - 1, &h), HSM_PROXY_PARTIAL);
	assert_bad((const uint8_t *)line, HSM_PROXY_V1_MAX);
	/* 108 bytes with CRLF: one too long, whether the LF has arrived or not. */
	line[HSM_PROXY_V1_MAX - 1] = '\r';
	line[HSM_PROXY_V1_MAX] = '\n';
	assert_int_equal(parse((const uint8_t *)line, HSM_PROXY_V1_MAX, &h), HSM_PROXY_PARTIAL);
	assert_bad((const uint8_t *)line, HSM_PROXY_V1_MAX + 1);
	/* 107 bytes with CRLF: accepted. */
	line[HSM_PROXY_V1_MAX - 2] = '\r';
	line[HSM_PROXY_V1_MAX - 1] = '\n';
	assert_int_equal(parse((const uint8_t *)line, HSM_PROXY_V1_MAX, &h), HSM_PROXY_OK);
	assert_int_equal(h.len, HSM_PROXY_V1_MAX);
	/* Truncated: every proper prefix of a header waits for more. */
	static const char full[] = "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";
	for (size_t n = 0; n < sizeof(full) - 1; n++)
		assert_int_equal(hsm_proxy_parse_header((const uint8_t *)full, n, &h),
		                 HSM_PROXY_PARTIAL);
}

/* ---- version 2 ------------------------------------------------------------------- */

static void test_v2_tcp4(void **state)
{
	(void)state;
	hsm_proxy_header h = {0};
	assert_int_equal(parse(LIT(V2_TCP4 "\x16\x03\x01"), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, 28);
	assert_int_equal(h.version, 2);
	assert_false(h.v6);
	assert_source(&h, "203.0.113.7", 51000);
}

static void test_v2_tcp6(void **state)
{
	(void)state;
	hsm_proxy_header h = {0};
	static const char v6[] = V2_SIG "\x21\x21\x00\x24"
	                         "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07"
	                         "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
	                         "\x9c\x40\x20\xfb";
	assert_int_equal(parse(LIT(v6), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, 52);
	assert_true(h.v6);
	assert_source(&h, "2001:db8::7", 40000);
}

static void test_v2_local_and_other_families(void **state)
{
	(void)state;
	hsm_proxy_header h = {.has_source = true};
	/* LOCAL: a health check from the balancer; family and addresses ignored. */
	assert_int_equal(parse(LIT(V2_SIG "\x20\x00\x00\x00" "GET"), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, 16);
	assert_false(h.has_source);
	assert_int_equal(parse(LIT(V2_SIG "\x20\x11\x00\x0c" "\xcb\x00\x71\x07\x0a\x00\x00\x01"
	                                  "\xc7\x38\x01\xbb"),
	                       &h),
	                 HSM_PROXY_OK);
	assert_false(h.has_source);
	assert_int_equal(parse(LIT(V2_SIG "\x20\xff\x00\x02" "ab"), &h), HSM_PROXY_OK);
	assert_false(h.has_source);
	/* PROXY with UNSPEC, a UNIX socket or datagrams: no TCP client to name. */
	assert_int_equal(parse(LIT(V2_SIG "\x21\x00\x00\x00"), &h), HSM_PROXY_OK);
	assert_false(h.has_source);
	assert_int_equal(parse(LIT(V2_SIG "\x21\x12\x00\x0c" "\xcb\x00\x71\x07\x0a\x00\x00\x01"
	                                  "\xc7\x38\x01\xbb"),
	                       &h),
	                 HSM_PROXY_OK);
	assert_false(h.has_source);
	uint8_t unix_hdr[16 + 216] = {0};
	memcpy(unix_hdr, V2_SIG "\x21\x31\x00\xd8", 16);
	assert_int_equal(parse(unix_hdr, sizeof(unix_hdr), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, sizeof(unix_hdr));
	assert_false(h.has_source);
}

static void test_v2_tlvs_skipped(void **state)
{
	(void)state;
	hsm_proxy_header h = {0};
	/* An AWS NLB's VPC endpoint TLV (0xEA), then CRC32C (0x03) and NOOP (0x04) TLVs. */
#define TLV V2_SIG "\x21\x11\x00\x34" \
	                          "\xcb\x00\x71\x07" "\x0a\x00\x00\x01" "\xc7\x38\x01\xbb" \
	                          "\xea\x00\x17\x01" "vpce-08d2bf15fac5001c9" \
	                          "\x03\x00\x04" "\x01\x02\x03\x04" \
	                          "\x04\x00\x04" "abcd"
	assert_int_equal(sizeof(TLV) - 1, 16 + 0x34);
	assert_int_equal(parse(LIT(TLV "\x16\x03"), &h), HSM_PROXY_OK);
#undef TLV
	assert_int_equal(h.len, 16 + 0x34);
	assert_source(&h, "203.0.113.7", 51000);
	/* The largest block accepted, nearly all TLVs. */
	uint8_t big[HSM_PROXY_MAX + 1];
	memset(big, 0xee, sizeof(big));
	memcpy(big, V2_TCP4, 28);
	big[14] = (uint8_t)(HSM_PROXY_V2_REST_MAX >> 8);
	big[15] = (uint8_t)(HSM_PROXY_V2_REST_MAX & 0xff);
	assert_int_equal(parse(big, HSM_PROXY_MAX - 1, &h), HSM_PROXY_PARTIAL);
	assert_int_equal(parse(big, sizeof(big), &h), HSM_PROXY_OK);
	assert_int_equal(h.len, HSM_PROXY_MAX);
	assert_source(&h, "203.0.113.7", 51000);
}

static void test_v2_oversized(void **state)
{
	(void)state;
	/* One byte over the limit: refused from the fixed part alone. */
	uint8_t hdr[16];
	memcpy(hdr, V2_SIG "\x21\x11", 14);
	hdr[14] = (uint8_t)((HSM_PROXY_V2_REST_MAX + 1) >> 8);
	hdr[15] = (uint8_t)((HSM_PROXY_V2_REST_MAX + 1) & 0xff);
	assert_bad(hdr, sizeof(hdr));
	assert_bad(LIT(V2_SIG "\x21\x11\xff\xff"));
	assert_bad(LIT(V2_SIG "\x20\x00\xff\xff")); /* LOCAL too */
}

static void test_v2_malformed(void **state)
{
	(void)state;
	/* Bad signature, anywhere in its 12 bytes. */
	assert_bad(LIT("\r\n\r\n\0\r\nQUIT\r" "\x21\x11\x00\x0c"));
	assert_bad(LIT("\r\n\r\n\x01"));
	assert_bad(LIT("\r\r"));
	/* Versions other than 2, commands other than LOCAL and PROXY. */
	assert_bad(LIT(V2_SIG "\x11\x11\x00\x0c"));
	assert_bad(LIT(V2_SIG "\x31\x11\x00\x0c"));
	assert_bad(LIT(V2_SIG "\x01\x11\x00\x0c"));
	assert_bad(LIT(V2_SIG "\x22\x11\x00\x0c"));
	assert_bad(LIT(V2_SIG "\x2f\x11\x00\x0c"));
	/* Unknown family or transport. */
	assert_bad(LIT(V2_SIG "\x21\x41\x00\x0c"));
	assert_bad(LIT(V2_SIG "\x21\x13\x00\x0c"));
	/* Family and length disagree: too short for the addresses. */
	assert_bad(LIT(V2_SIG "\x21\x11\x00\x0b"));
	assert_bad(LIT(V2_SIG "\x21\x21\x00\x0c" "\xcb\x00\x71\x07\x0a\x00\x00\x01\xc7\x38\x01\xbb"));
	assert_bad(LIT(V2_SIG "\x21\x31\x00\x24"));
}

static void test_v2_truncated_and_bytewise(void **state)
{
	(void)state;
	hsm_proxy_header h = {0};
	static const uint8_t full[] = V2_TCP4;
	for (size_t n = 0; n < sizeof(full) - 1; n++)
		assert_int_equal(hsm_proxy_parse_header(full, n, &h), HSM_PROXY_PARTIAL);
	/* parse() also feeds every header of these tests a byte at a time. */
	assert_int_equal(parse(full, sizeof(full) - 1, &h), HSM_PROXY_OK);
	assert_source(&h, "203.0.113.7", 51000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_v1_tcp4),
	    cmocka_unit_test(test_v1_tcp6),
	    cmocka_unit_test(test_v1_unknown),
	    cmocka_unit_test(test_v1_malformed),
	    cmocka_unit_test(test_v1_too_long_or_unterminated),
	    cmocka_unit_test(test_v2_tcp4),
	    cmocka_unit_test(test_v2_tcp6),
	    cmocka_unit_test(test_v2_local_and_other_families),
	    cmocka_unit_test(test_v2_tlvs_skipped),
	    cmocka_unit_test(test_v2_oversized),
	    cmocka_unit_test(test_v2_malformed),
	    cmocka_unit_test(test_v2_truncated_and_bytewise),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
