#include "common/encoding.h"

#include <string.h>

/* Constant-time helpers: each returns all-ones (0xff...) when true, 0 otherwise. */
static unsigned ct_ge(unsigned a, unsigned b) { return 0U - ((((a - b) >> 8) & 1U) ^ 1U); }
static unsigned ct_range(unsigned c, unsigned lo, unsigned hi)
{
	/* c, lo, hi are byte values; (x - y) >> 8 is 1 exactly when x < y. */
	return ct_ge(c, lo) & ct_ge(hi, c);
}
static unsigned ct_eq(unsigned a, unsigned b) { return ct_range(a, b, b); }

static char hex_digit(unsigned v)
{
	/* v in 0..15 -> '0'..'9','a'..'f' without a lookup table. */
	unsigned letter = ct_ge(v, 10);
	return (char)((v + '0') + (letter & ('a' - '0' - 10)));
}

static int hex_value(unsigned c)
{
	unsigned digit = ct_range(c, '0', '9');
	unsigned lower = ct_range(c, 'a', 'f');
	unsigned v = (digit & (c - '0')) | (lower & (c - 'a' + 10));
	unsigned ok = digit | lower;
	return (int)((ok & v) | (~ok & 0x100U)); /* 0x100 flags an invalid digit */
}

hsm_result hsm_hex_encode(hsm_buf *out, const uint8_t *p, size_t n)
{
	uint8_t *dst;
	HSM_ENSURE(n <= HSM_BUF_MAX / 2, HSM_ERR_LIMIT_EXCEEDED, "input too long");
	HSM_GUARD(hsm_buf_append_space(out, 2 * n, &dst));
	for (size_t i = 0; i < n; i++) {
		dst[2 * i] = (uint8_t)hex_digit(p[i] >> 4);
		dst[2 * i + 1] = (uint8_t)hex_digit(p[i] & 15U);
	}
	return HSM_SUCCESS;
}

static hsm_result hex_decode_into(uint8_t *dst, const char *s, size_t n, hsm_err err)
{
	unsigned bad = 0;
	for (size_t i = 0; i < n; i++) {
		int hi = hex_value((unsigned char)s[2 * i]);
		int lo = hex_value((unsigned char)s[2 * i + 1]);
		bad |= (unsigned)(hi | lo) & 0x100U;
		dst[i] = (uint8_t)((unsigned)hi << 4 | ((unsigned)lo & 15U));
	}
	HSM_ENSURE(bad == 0, err, "invalid hex digit (lowercase hex expected)");
	return HSM_SUCCESS;
}

hsm_result hsm_hex_decode(hsm_buf *out, const char *s, size_t n, hsm_err err)
{
	HSM_ENSURE(n % 2 == 0, err, "hex string has an odd length");
	size_t start = out->len;
	uint8_t *dst;
	HSM_GUARD(hsm_buf_append_space(out, n / 2, &dst));
	hsm_result r = hex_decode_into(dst, s, n / 2, err);
	if (hsm_failed(r)) {
		memset(dst, 0, n / 2);
		out->len = start;
	}
	return r;
}

hsm_result hsm_hex_decode_exact(uint8_t *out, size_t n, const char *s, size_t slen, hsm_err err)
{
	HSM_ENSURE(slen == 2 * n, err, "expected %zu hex digits", 2 * n);
	return hex_decode_into(out, s, n, err);
}

size_t hsm_b64_encoded_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

static char b64_char(unsigned v, bool url)
{
	/* v in 0..63 -> alphabet character, branch- and table-free. */
	unsigned c = v + 'A';
	c += ct_ge(v, 26) & ('a' - 'A' - 26);
	c += ct_ge(v, 52) & (unsigned)('0' - 'a' - 26);
	unsigned c62 = url ? '-' : '+', c63 = url ? '_' : '/';
	c = (c & ~ct_eq(v, 62)) | (ct_eq(v, 62) & c62);
	c = (c & ~ct_eq(v, 63)) | (ct_eq(v, 63) & c63);
	return (char)(c & 0xffU);
}

static unsigned b64_value(unsigned c, bool url, unsigned *bad)
{
	unsigned up = ct_range(c, 'A', 'Z'), lo = ct_range(c, 'a', 'z'), dg = ct_range(c, '0', '9');
	unsigned s62 = ct_eq(c, url ? '-' : '+'), s63 = ct_eq(c, url ? '_' : '/');
	unsigned v = (up & (c - 'A')) | (lo & (c - 'a' + 26)) | (dg & (c - '0' + 52)) | (s62 & 62U) |
	             (s63 & 63U);
	*bad |= ~(up | lo | dg | s62 | s63) & 1U;
	return v & 63U;
}

static hsm_result b64_encode(hsm_buf *out, const uint8_t *p, size_t n, bool url)
{
	HSM_ENSURE(n <= HSM_BUF_MAX / 2, HSM_ERR_LIMIT_EXCEEDED, "input too long");
	uint8_t *dst;
	HSM_GUARD(hsm_buf_append_space(out, hsm_b64_encoded_len(n), &dst));
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned b0 = p[i], b1 = i + 1 < n ? p[i + 1] : 0, b2 = i + 2 < n ? p[i + 2] : 0;
		unsigned w = b0 << 16 | b1 << 8 | b2;
		dst[o++] = (uint8_t)b64_char(w >> 18 & 63U, url);
		dst[o++] = (uint8_t)b64_char(w >> 12 & 63U, url);
		if (i + 1 < n)
			dst[o++] = (uint8_t)b64_char(w >> 6 & 63U, url);
		else if (!url)
			dst[o++] = '=';
		if (i + 2 < n)
			dst[o++] = (uint8_t)b64_char(w & 63U, url);
		else if (!url)
			dst[o++] = '=';
	}
	out->len -= hsm_b64_encoded_len(n) - o; /* url form drops padding */
	return HSM_SUCCESS;
}

hsm_result hsm_b64_encode(hsm_buf *out, const uint8_t *p, size_t n)
{
	return b64_encode(out, p, n, false);
}

hsm_result hsm_b64url_encode(hsm_buf *out, const uint8_t *p, size_t n)
{
	return b64_encode(out, p, n, true);
}

static hsm_result b64_decode(hsm_buf *out, const char *s, size_t n, bool url, hsm_err err)
{
	size_t pad = 0;
	if (!url) {
		HSM_ENSURE(n % 4 == 0, err, "base64 length is not a multiple of 4");
		if (n >= 1 && s[n - 1] == '=')
			pad++;
		if (n >= 2 && s[n - 2] == '=')
			pad++;
	} else {
		HSM_ENSURE(n % 4 != 1, err, "invalid base64url length");
	}
	size_t chars = n - pad;
	size_t outlen = chars / 4 * 3 + (chars % 4 == 0 ? 0 : chars % 4 - 1);
	size_t start = out->len;
	uint8_t *dst;
	HSM_GUARD(hsm_buf_append_space(out, outlen, &dst));
	unsigned bad = 0, acc = 0, bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < chars; i++) {
		acc = (acc << 6 | b64_value((unsigned char)s[i], url, &bad)) & 0xffffffU;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			dst[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* Leftover bits must be zero: each byte string has exactly one encoding. */
	bad |= (acc & ((1U << bits) - 1U)) != 0;
	if (bad != 0 || o != outlen) {
		memset(dst, 0, outlen);
		out->len = start;
		return HSM_FAIL(err, "invalid base64");
	}
	return HSM_SUCCESS;
}

hsm_result hsm_b64_decode(hsm_buf *out, const char *s, size_t n, hsm_err err)
{
	return b64_decode(out, s, n, false, err);
}

hsm_result hsm_b64url_decode(hsm_buf *out, const char *s, size_t n, hsm_err err)
{
	return b64_decode(out, s, n, true, err);
}
