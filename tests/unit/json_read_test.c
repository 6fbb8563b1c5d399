/*
 * The request-body JSON reader against jansson's json_loadb: the same
 * verdict and the same values on a corpus of valid and broken documents and
 * on random mutations of them, the depth limit, and error positions.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "server/json.h"
#include "support/simd_groups.h"
#include "../support/json_tiny.h"

#define DEPTH_LIMIT 64 /* hsm_json_read's; jansson's is 2048 */

static const char *const corpus[] = {
    "{}",
    "[]",
    " \t\r\n{ } \n",
    "{\"KeyId\":\"alias/app\",\"Plaintext\":\"aGVsbG8gd29ybGQ=\",\"EncryptionContext\":"
    "{\"tenant\":\"acme\",\"purpose\":\"db\"}}",
    "{\"KeyId\":\"1234abcd-12ab-34cd-56ef-1234567890ab\",\"NumberOfBytes\":32,"
    "\"KeySpec\":\"AES_256\",\"GrantTokens\":[\"a\",\"b\"],\"DryRun\":false}",
    "{\"Tags\":[{\"TagKey\":\"k\",\"TagValue\":\"v\"},{\"TagKey\":\"k2\",\"TagValue\":\"\"}],"
    "\"Policy\":\"{\\\"Version\\\":\\\"2012-10-17\\\"}\",\"BypassPolicyLockoutSafetyCheck\":true}",
    "{\"a\":null,\"b\":true,\"c\":false,\"d\":0,\"e\":-0,\"f\":-12,\"g\":1.5,\"h\":-0.0e+1,"
    "\"i\":1E3,\"j\":2.5e-3,\"k\":9223372036854775807,\"l\":-9223372036854775808}",
    "{\"big\":9223372036854775808}",
    "{\"big\":-9223372036854775809}",
    "{\"r\":1e308,\"s\":1e309,\"t\":1e-400,\"u\":123456789012345678901234567890.5}",
    "{\"esc\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0041 \\u00e9 \\u20AC \\ud83d\\ude00\"}",
    "{\"utf8\":\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf \xf4\x8f\xbf\xbf\"}",
    "{\"bad\":\"\xc0\xaf\"}",
    "{\"bad\":\"\xed\xa0\x80\"}",
    "{\"bad\":\"\xf4\x90\x80\x80\"}",
    "{\"bad\":\"\xe0\x9f\xbf\"}",
    "{\"lone\":\"\\ud800\"}",
    "{\"lone\":\"\\udc00\"}",
    "{\"pair\":\"\\ud800\\u0041\"}",
    "{\"nul\":\"\\u0000\"}",
    "{\"ctl\":\"a\tb\"}",
    "{\"dup\":1,\"dup\":2}",
    "{\"dup\":1,\"d\\u0075p\":2}",
    "{\"a\":[1,2,[3,[4,{\"b\":[]}]]],\"c\":{\"d\":{\"e\":{}}}}",
    "{\"a\":1,}",
    "[1,2,]",
    "{\"a\" 1}",
    "{a:1}",
    "{\"a\":01}",
    "{\"a\":1.}",
    "{\"a\":.5}",
    "{\"a\":+1}",
    "{\"a\":1e}",
    "{\"a\":-}",
    "{\"a\":tru}",
    "{\"a\":truex}",
    "{\"a\":nul}",
    "{\"a\":\"unterminated}",
    "{\"a\":\"\\x\"}",
    "{\"a\":\"\\u12\"}",
    "{\"a\":\"\\u12G4\"}",
    "{} {}",
    "{}x",
    "\"just a string\"",
    "42",
    "true",
    "",
    "   ",
    "\xef\xbb\xbf{}",
    "[\"a\",{\"b\":[true,false,null]},-1.25E-2,\"\\u00FF\"]",
};

static size_t depth_of(json_t *v)
{
	size_t d = 0;
	if (json_is_object(v)) {
		const char *k;
		json_t *x;
		json_object_foreach(v, k, x)
		{
			size_t e = depth_of(x);
			d = e > d ? e : d;
		}
	} else if (json_is_array(v)) {
		size_t i;
		json_t *x;
		json_array_foreach(v, i, x)
		{
			size_t e = depth_of(x);
			d = e > d ? e : d;
		}
	}
	return d + 1;
}

static void report(const uint8_t *p, size_t n, const char *what)
{
	char hex[3 * 200 + 1] = "";
	for (size_t i = 0; i < n && i < 200; i++)
		snprintf(hex + 3 * i, 4, "%02x ", p[i]);
	fail_msg("%s on %zu bytes: %s", what, n, hex);
}

/* One input: both readers agree on it. */
static void compare(const uint8_t *p, size_t n)
{
	json_t *want = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
	json_t *got = NULL;
	unsigned line = 0, col = 0;
	hsm_result r = hsm_json_read(p, n, &got, &line, &col);
	if (want == NULL) {
		if (hsm_ok(r))
			report(p, n, "accepted what jansson refuses");
		/* Valid JSON with a \u0000 in a string is refused as such, the rest as malformed. */
		if (r.err == HSM_ERR_VALIDATION)
			assert_non_null(memmem(p, n, "\\u0000", 6));
		else
			assert_int_equal(r.err, HSM_ERR_SERIALIZATION);
		assert_true(line >= 1 && col >= 1);
		return;
	}
	if (hsm_failed(r)) {
		/* The one value refused on purpose: a number below a double's range (1e-400),
		 * which jansson reads as 0. */
		if (depth_of(want) > DEPTH_LIMIT ||
		    (json_has_tiny_real(want) && (memmem(p, n, "e-", 2) || memmem(p, n, "E-", 2)))) {
			assert_int_equal(r.err, HSM_ERR_SERIALIZATION);
			json_decref(want);
			return;
		}
		/* jansson skips a NUL byte that follows a number (its stream takes a
		 * pushed-back NUL for an empty buffer); the reader refuses it.  That
		 * must be the only difference: without the NULs, the same values. */
		uint8_t strip[1024];
		size_t m = 0;
		for (size_t i = 0; i < n && m < sizeof(strip); i++)
			if (p[i] != 0)
				strip[m++] = p[i];
		if (m == n || n > sizeof(strip))
			report(p, n, "refused what jansson accepts");
		assert_true(hsm_ok(hsm_json_read(strip, m, &got, &line, &col)));
		if (!json_equal(want, got))
			report(p, n, "read different values once NULs are dropped");
		json_decref(got);
		json_decref(want);
		return;
	}
	if (!json_equal(want, got))
		report(p, n, "read different values");
	json_decref(want);
	json_decref(got);
}

static void test_corpus(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(corpus) / sizeof(corpus[0]); i++)
		compare((const uint8_t *)corpus[i], strlen(corpus[i]));
}

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Single mutations and combinations of them: bytes the grammar cares about,
 * at random places; insertions, deletions, truncations and splices. */
static void test_mutations_agree(void **state)
{
	(void)state;
	static const uint8_t interesting[] = {
	    '"', '\\', '{', '}', '[', ']', ',', ':', '0', '1', '9', '-', '+', '.', 'e', 'E', 'u',
	    'd', 'D', '8', 'n', 't', 'f', ' ', '\t', '\n', 0x00, 0x01, 0x1f, 0x7f, 0x80, 0xbf,
	    0xc0, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff};
	uint8_t buf[1024];
	const size_t n_corpus = sizeof(corpus) / sizeof(corpus[0]);
	for (int iter = 0; iter < 1000000; iter++) {
		const char *seed = corpus[next() % n_corpus];
		size_t n = strlen(seed);
		memcpy(buf, seed, n);
		int edits = 1 + (int)(next() % 3);
		for (int e = 0; e < edits; e++) {
			size_t at = n ? (size_t)(next() % n) : 0;
			uint8_t b = next() % 4 ? interesting[next() % sizeof(interesting)]
			                       : (uint8_t)next();
			switch (next() % 5) {
			case 0: /* replace */
				if (n > 0)
					buf[at] = b;
				break;
			case 1: /* insert */
				if (n < sizeof(buf) - 1) {
					memmove(buf + at + 1, buf + at, n - at);
					buf[at] = b;
					n++;
				}
				break;
			case 2: /* delete */
				if (n > 0) {
					memmove(buf + at, buf + at + 1, n - at - 1);
					n--;
				}
				break;
			case 3: /* truncate */
				n = at;
				break;
			default: { /* splice a piece of another document in */
				const char *o = corpus[next() % n_corpus];
				size_t on = strlen(o), from = on ? (size_t)(next() % on) : 0;
				size_t len = on - from > 16 ? 16 : on - from;
				if (n + len < sizeof(buf)) {
					memmove(buf + at + len, buf + at, n - at);
					memcpy(buf + at, o + from, len);
					n += len;
				}
				break;
			}
			}
		}
		compare(buf, n);
	}
}

/* Nesting: both agree up to the limit, past it the reader refuses. */
static void test_depth_limit(void **state)
{
	(void)state;
	static char doc[2 * 3000 + 8];
	for (size_t depth = DEPTH_LIMIT - 2; depth <= DEPTH_LIMIT + 2; depth++) {
		size_t o = 0;
		for (size_t i = 0; i < depth; i++)
			doc[o++] = '[';
		for (size_t i = 0; i < depth; i++)
			doc[o++] = ']';
		json_t *got = NULL;
		unsigned line, col;
		hsm_result r = hsm_json_read((const uint8_t *)doc, o, &got, &line, &col);
		if (depth <= DEPTH_LIMIT) {
			assert_true(hsm_ok(r));
			json_decref(got);
		} else {
			assert_int_equal(r.err, HSM_ERR_SERIALIZATION);
			/* Valid JSON, only too deep: said so, where the value past the limit begins. */
			assert_non_null(strstr(hsm_last_error()->message, "nests values more than 64 deep"));
			assert_int_equal(line, 1);
			assert_int_equal(col, DEPTH_LIMIT + 1);
		}
	}
	json_t *got = NULL;
	unsigned line, col;
	/* Broken JSON within the limit is still called that. */
	assert_int_equal(hsm_json_read((const uint8_t *)"[[1,]]", 6, &got, &line, &col).err,
	                 HSM_ERR_SERIALIZATION);
	assert_non_null(strstr(hsm_last_error()->message, "is not valid JSON"));
	/* Far past it: refused without exhausting the stack. */
	size_t o = 0;
	for (size_t i = 0; i < 3000; i++)
		doc[o++] = '[';
	assert_int_equal(hsm_json_read((const uint8_t *)doc, o, &got, &line, &col).err,
	                 HSM_ERR_SERIALIZATION);
	assert_null(got);
}

/* Numbers out of a double's range either way are refused, not read as another value. */
static void test_numbers_out_of_range(void **state)
{
	(void)state;
	static const char *const refused[] = {"[1e309]", "[-1e309]", "[1e-400]", "[-2.5E-999]",
	                                      "{\"a\":{\"b\":[1,1e-330]}}"};
	static const char *const read[] = {"[0.0]", "[-0e-400]", "[0e5]", "[2.5e-3]", "[1e-300]",
	                                   "[1e308]", "[2.2250738585072014e-308]"};
	json_t *got = NULL;
	unsigned line, col;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		hsm_result r = hsm_json_read((const uint8_t *)refused[i], strlen(refused[i]), &got,
		                             &line, &col);
		assert_int_equal(r.err, HSM_ERR_SERIALIZATION);
		assert_null(got);
	}
	for (size_t i = 0; i < sizeof(read) / sizeof(read[0]); i++) {
		assert_true(hsm_ok(hsm_json_read((const uint8_t *)read[i], strlen(read[i]), &got,
		                                 &line, &col)));
		json_decref(got);
		got = NULL;
	}
}

static void test_error_position(void **state)
{
	(void)state;
	const char *doc = "{\n  \"a\": 1,\n  \"\xc3\xa9\": tru\n}";
	json_t *got = NULL;
	unsigned line = 0, col = 0;
	hsm_result r = hsm_json_read((const uint8_t *)doc, strlen(doc), &got, &line, &col);
	assert_int_equal(r.err, HSM_ERR_SERIALIZATION);
	assert_int_equal(line, 3);
	assert_int_equal(col, 8); /* the 't' of "tru", counting é as one character */
	assert_null(got);
}

/* Escape-free strings are sliced from the body, escaped ones decoded: both
 * give jansson strings of the right length, including long ones. */
static void test_long_strings(void **state)
{
	(void)state;
	static char doc[8192];
	size_t o = (size_t)snprintf(doc, sizeof(doc), "{\"plain\":\"");
	for (int i = 0; i < 3000; i++)
		doc[o++] = (char)('a' + i % 26);
	o += (size_t)snprintf(doc + o, sizeof(doc) - o, "\",\"esc\":\"");
	for (int i = 0; i < 500; i++)
		o += (size_t)snprintf(doc + o, sizeof(doc) - o, "\\u00e9");
	o += (size_t)snprintf(doc + o, sizeof(doc) - o, "\"}");
	compare((const uint8_t *)doc, o);
	json_t *got = NULL;
	unsigned line, col;
	assert_true(hsm_ok(hsm_json_read((const uint8_t *)doc, o, &got, &line, &col)));
	assert_int_equal(json_string_length(json_object_get(got, "plain")), 3000);
	assert_int_equal(json_string_length(json_object_get(got, "esc")), 1000);
	json_decref(got);
}

/*
 * Strings are scanned 32 bytes at a time (AVX2), then eight at a time, up to
 * the first byte that needs a closer look: every kind of such byte, at every
 * offset of two vector steps and the word steps after them, and every short
 * length, read as jansson reads them.  main runs it with the vector steps and
 * again without them.
 */
static void test_specials_at_every_offset(void **state)
{
	(void)state;
	static const char *const special[] = {
	    "\"", "\\n", "\\\"", "\\u00e9", "\\ud83d\\ude00", "\x01", "\x1f", "\t",
	    "\x7f", " ", "~", "\xc3\xa9", "\xe2\x82\xac", "\xff", "\xc3", "\x80",
	};
	char doc[256];
	for (size_t k = 0; k < sizeof(special) / sizeof(special[0]); k++) {
		for (size_t at = 0; at <= 80; at++) {
			size_t o = (size_t)snprintf(doc, sizeof(doc), "{\"k\":\"");
			for (size_t i = 0; i < at; i++)
				doc[o++] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i * 7 % 64];
			o += (size_t)snprintf(doc + o, sizeof(doc) - o, "%s", special[k]);
			for (size_t i = 0; i < 17; i++)
				doc[o++] = (char)('a' + i);
			o += (size_t)snprintf(doc + o, sizeof(doc) - o, "\"}");
			compare((const uint8_t *)doc, o);
		}
	}
	for (size_t len = 0; len <= 100; len++) {
		size_t o = (size_t)snprintf(doc, sizeof(doc), "[\"");
		for (size_t i = 0; i < len; i++)
			doc[o++] = (char)('A' + i % 26);
		doc[o++] = '"';
		compare((const uint8_t *)doc, o); /* unterminated array */
		doc[o++] = ']';
		compare((const uint8_t *)doc, o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_corpus),
	    cmocka_unit_test(test_mutations_agree),
	    cmocka_unit_test(test_depth_limit),
	    cmocka_unit_test(test_numbers_out_of_range),
	    cmocka_unit_test(test_error_position),
	    cmocka_unit_test(test_long_strings),
	    cmocka_unit_test(test_specials_at_every_offset),
	};
	return SIMD_GROUPS_RUN(tests); /* with the AVX2 steps, then without */
}
