#include "common/encoding.h"

#include <endian.h>
#include <string.h>

#include "common/simd.h"
#include "common/util.h"

/* Constant-time helpers: each returns all-ones (0xff...) when true, 0 otherwise. */
static unsigned ct_ge(unsigned a, unsigned b) { return 0U - ((((a - b) >> 8) & 1U) ^ 1U); }
static unsigned ct_range(unsigned c, unsigned lo, unsigned hi)
{
	/* c, lo, hi are byte values; (x - y) >> 8 is 1 exactly when x < y. */
	return ct_ge(c, lo) & ct_ge(hi, c);
}

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

/*
 * Four bytes into eight digits at once, still without a lookup table: the
 * nibbles are spread one to a byte of a 64-bit word, in output order, and
 * each byte gets '0' plus 39 more ('a' - '0' - 10) where it is 10 or above
 * (nibble + 6 carries into bit 4 exactly then; no byte overflows into the
 * next).
 */
static void hex_encode4(uint8_t *dst, const uint8_t *p)
{
	uint32_t x;
	memcpy(&x, p, sizeof(x));
	uint64_t v = le32toh(x); /* byte j at bits 8j */
	v = (v | v << 16) & 0x0000FFFF0000FFFFULL;
	v = (v | v << 8) & 0x00FF00FF00FF00FFULL; /* byte j at bits 16j */
	v = (v >> 4 & 0x000F000F000F000FULL) | (v & 0x000F000F000F000FULL) << 8;
	uint64_t letter = ((v + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL;
	v = htole64(v + 0x3030303030303030ULL + letter * 39U);
	memcpy(dst, &v, sizeof(v));
}

static void hex_encode_into(uint8_t *dst, const uint8_t *p, size_t n)
{
	size_t i = 0;
	for (; i + 4 <= n; i += 4)
		hex_encode4(dst + 2 * i, p + i);
	for (; i < n; i++) {
		dst[2 * i] = (uint8_t)hex_digit(p[i] >> 4);
		dst[2 * i + 1] = (uint8_t)hex_digit(p[i] & 15U);
	}
}

hsm_result hsm_hex_encode(hsm_buf *out, const uint8_t *p, size_t n)
{
	uint8_t *dst;
	HSM_ENSURE(n <= HSM_BUF_MAX / 2, HSM_ERR_LIMIT_EXCEEDED, "input too long");
	HSM_GUARD(hsm_buf_append_space(out, 2 * n, &dst));
	hex_encode_into(dst, p, n);
	return HSM_SUCCESS;
}

void hsm_hex_encode_str(char *out, const uint8_t *p, size_t n)
{
	hex_encode_into((uint8_t *)out, p, n);
	out[2 * n] = '\0';
}

size_t hsm_b64_encoded_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

/*
 * Base64, and hex decoding, eight characters at a time.
 *
 * Both directions work on a uint64_t holding eight 6-bit values, one per
 * byte ("lane"), so six bytes of data <-> eight characters per step.  The
 * per-character work is done for all eight lanes at once with plain
 * additions, shifts and masks ("SWAR"): no branch and no memory address
 * depends on the data, only on lengths and on where padding starts, which
 * are public.  Every step keeps each lane within 0..255, so no carry or
 * borrow ever crosses from one lane into the next.
 *
 * In base64 the first character of a group is the most significant: words
 * are loaded and stored big-endian, so character j of a step sits in lane
 * 7 - j.  Hex decoding loads little-endian (see hex_values8).
 */
#define LANES_LOW UINT64_C(0x0101010101010101)
#define LANES_HIGH UINT64_C(0x8080808080808080)
#define LANES(v) ((uint64_t)(v) * LANES_LOW) /* v (a byte) in every lane */
/*
 * The step functions and the two codec bodies are inlined into each public
 * function, so that the alphabet's characters become constants and the
 * loops keep everything in registers.
 */
#define B64_INLINE __attribute__((always_inline)) static inline

/* Bit 0 of each lane set where that lane of x (each below 128) is >= k, 1 <= k <= 128. */
B64_INLINE uint64_t lanes_ge(uint64_t x, unsigned k)
{
	/* lane + 128 - k reaches 128 (its top bit) exactly when lane >= k; it stays below 256. */
	return (x + LANES(128U - k)) >> 7 & LANES_LOW;
}

/* Bit 0 of each lane set where that lane of x (each below 128) is in first..last. */
B64_INLINE uint64_t lanes_in(uint64_t x, unsigned first, unsigned last)
{
	return lanes_ge(x, first) & ~lanes_ge(x, last + 1);
}

/*
 * Eight hex digits -> four bytes, in the low byte of each 16-bit lane; sets
 * *bad's top bit in the lanes of characters that are not lowercase hex
 * digits.  Characters are loaded little-endian (the first in the lowest
 * lane) and masked below 128 for the range checks; one of 128 or more is
 * flagged by its own top bit.
 */
B64_INLINE uint64_t hex_values8(const char *s, uint64_t *bad)
{
	uint64_t x;
	memcpy(&x, s, sizeof(x));
	x = le64toh(x);
	uint64_t y = x & ~LANES_HIGH;
	uint64_t digit = lanes_in(y, '0', '9'), lower = lanes_in(y, 'a', 'f');
	*bad |= ((~(digit | lower) & LANES_LOW) << 7) | (x & LANES_HIGH);
	/* y + 128 minus at most 'a' - 10 cannot borrow into the next lane. */
	uint64_t v = ((((y | LANES_HIGH) - LANES('0')) & digit * 0xff) |
	              (((y | LANES_HIGH) - LANES('a' - 10)) & lower * 0xff)) &
	             LANES(0x0f);
	/* The even characters are high nibbles. */
	return (v & UINT64_C(0x00ff00ff00ff00ff)) << 4 | (v >> 8 & UINT64_C(0x00ff00ff00ff00ff));
}

static hsm_result hex_decode_into(uint8_t *dst, const char *s, size_t n, hsm_err err)
{
	unsigned bad = 0;
	uint64_t bad8 = 0;
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		uint64_t w = hex_values8(s + 2 * i, &bad8);
		dst[i] = (uint8_t)w;
		dst[i + 1] = (uint8_t)(w >> 16);
		dst[i + 2] = (uint8_t)(w >> 32);
		dst[i + 3] = (uint8_t)(w >> 48);
	}
	for (; i < n; i++) {
		int hi = hex_value((unsigned char)s[2 * i]);
		int lo = hex_value((unsigned char)s[2 * i + 1]);
		bad |= (unsigned)(hi | lo) & 0x100U;
		dst[i] = (uint8_t)((unsigned)hi << 4 | ((unsigned)lo & 15U));
	}
	HSM_ENSURE(bad == 0 && bad8 == 0, err, "invalid hex digit (lowercase hex expected)");
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
	hsm_result r = hex_decode_into(out, s, n, err);
	if (hsm_failed(r))
		memset(out, 0, n); /* no half-decoded value is left behind */
	return r;
}

/* The two alphabets share 'A'..'Z', 'a'..'z' and '0'..'9' for 0..61. */
typedef struct b64_alphabet {
	int c62, c63; /* the characters for 62 and 63 */
	bool padded;  /* '=' pads the text to a multiple of 4 characters */
} b64_alphabet;

/* RFC 4648 section 4 (base64) and section 5 (base64url, unpadded as in RFC 7515 section 2). */
static const b64_alphabet B64 = {'+', '/', true};
static const b64_alphabet B64URL = {'-', '_', false};

/* Eight 6-bit values (one per lane) -> their characters. */
B64_INLINE uint64_t b64_chars(uint64_t v, const b64_alphabet *a)
{
	/*
	 * v + (first character - first value) of v's range: start from the
	 * range 'A'..'Z' and change the offset at each boundary.  The
	 * increases come first, so that no lane ever goes below 0 (nor above
	 * 255); this needs c63 > c62 and c62 < '0' + 10, as in both alphabets.
	 */
	uint64_t c = v + LANES('A');
	c += lanes_ge(v, 26) * (unsigned)(('a' - 26) - 'A');
	c += lanes_ge(v, 63) * (unsigned)((a->c63 - 63) - (a->c62 - 62));
	c -= lanes_ge(v, 52) * (unsigned)(('a' - 26) - ('0' - 52));
	c -= lanes_ge(v, 62) * (unsigned)(('0' - 52) - (a->c62 - 62));
	return c;
}

#define OFFSET64(d) ((unsigned)(d) & 63U) /* d mod 64 */

/* Eight characters -> their 6-bit values; sets *bad's top bit in the lanes of other characters. */
B64_INLINE uint64_t b64_values(uint64_t x, const b64_alphabet *a, uint64_t *bad)
{
	uint64_t c = x & ~LANES_HIGH; /* 7 bits; a set top bit is refused below */
	uint64_t up = lanes_in(c, 'A', 'Z'), lo = lanes_in(c, 'a', 'z'), dg = lanes_in(c, '0', '9');
	uint64_t s62 = lanes_in(c, (unsigned)a->c62, (unsigned)a->c62);
	uint64_t s63 = lanes_in(c, (unsigned)a->c63, (unsigned)a->c63);
	/* value = character + (first value - first character) of its range (they are disjoint), mod 64 */
	uint64_t off = up * OFFSET64(0 - 'A') | lo * OFFSET64(26 - 'a') | dg * OFFSET64(52 - '0') |
	               s62 * OFFSET64(62 - a->c62) | s63 * OFFSET64(63 - a->c63);
	*bad |= (x | ~((up | lo | dg | s62 | s63) << 7)) & LANES_HIGH;
	return (c + off) & LANES(63);
}

/* Lane i (counted from the least significant) gets bits 6i..6i+5 of the 48-bit x. */
B64_INLINE uint64_t spread6(uint64_t x)
{
	x = (x & 0x0000000000ffffff) | (x << 8 & 0x00ffffff00000000);
	x = (x & 0x00000fff00000fff) | (x << 4 & 0x0fff00000fff0000);
	return (x & 0x003f003f003f003f) | (x << 2 & 0x3f003f003f003f00);
}

/* The inverse of spread6: eight 6-bit lanes -> 48 bits. */
B64_INLINE uint64_t pack6(uint64_t v)
{
	v = (v & 0x003f003f003f003f) | (v >> 2 & 0x0fc00fc00fc00fc0);
	v = (v & 0x00000fff00000fff) | (v >> 4 & 0x00fff00000fff000);
	return (v & 0x0000000000ffffff) | (v >> 8 & 0x0000ffffff000000);
}

B64_INLINE uint64_t load_be64(const uint8_t *p)
{
	uint64_t x;
	memcpy(&x, p, sizeof(x));
	return be64toh(x);
}

B64_INLINE void store_be64(uint8_t *p, uint64_t x)
{
	x = htobe64(x);
	memcpy(p, &x, sizeof(x));
}

/* The low 48 bits of x, big-endian. */
B64_INLINE void store_be48(uint8_t *p, uint64_t x)
{
	uint32_t hi = htobe32((uint32_t)(x >> 16));
	uint16_t lo = htobe16((uint16_t)x);
	memcpy(p, &hi, sizeof(hi));
	memcpy(p + sizeof(hi), &lo, sizeof(lo));
}

/* For the last partial step: p[0..n) big-endian into a w-byte word (n <= w <= 8), then `fill`s. */
static uint64_t load_be_partial(const uint8_t *p, size_t n, size_t w, uint8_t fill)
{
	uint64_t x = 0;
	for (size_t j = 0; j < w; j++)
		x = x << 8 | (j < n ? p[j] : fill);
	return x;
}

/* For the last partial step: the top n bytes of the w-byte word x (n <= w <= 8), big-endian. */
static void store_be_partial(uint8_t *p, uint64_t x, size_t n, size_t w)
{
	for (size_t j = 0; j < n; j++)
		p[j] = (uint8_t)(x >> (8 * (w - 1 - j)));
}

B64_INLINE hsm_result b64_encode(hsm_buf *out, const uint8_t *p, size_t n, const b64_alphabet *a)
{
	HSM_ENSURE(n <= HSM_BUF_MAX / 2, HSM_ERR_LIMIT_EXCEEDED, "input too long");
	uint8_t *dst;
	HSM_GUARD(hsm_buf_append_space(out, hsm_b64_encoded_len(n), &dst));
	/* Whole 24-byte steps with AVX2 where the CPU has it (simd.c), the rest here. */
	size_t i = hsm_simd_b64_encode(dst, p, n, a->c62, a->c63), o = i / 3 * 4;
	for (; n - i >= 8; i += 6, o += 8) /* reads 8 bytes, uses 6 */
		store_be64(dst + o, b64_chars(spread6(load_be64(p + i) >> 16), a));
	while (i < n) {
		/* The last 1..7 bytes; zero bits complete the last group (RFC 4648 section 4). */
		size_t take = n - i < 6 ? n - i : 6, chars = (8 * take + 5) / 6;
		uint64_t c = b64_chars(spread6(load_be_partial(p + i, take, 6, 0)), a);
		store_be_partial(dst + o, c, chars, 8);
		i += take;
		o += chars;
	}
	for (; a->padded && o % 4 != 0; o++)
		dst[o] = '=';
	out->len -= hsm_b64_encoded_len(n) - o; /* url form drops padding */
	return HSM_SUCCESS;
}

hsm_result hsm_b64_encode(hsm_buf *out, const uint8_t *p, size_t n)
{
	return b64_encode(out, p, n, &B64);
}

hsm_result hsm_b64url_encode(hsm_buf *out, const uint8_t *p, size_t n)
{
	return b64_encode(out, p, n, &B64URL);
}

B64_INLINE hsm_result b64_decode(hsm_buf *out, const char *text, size_t n, const b64_alphabet *a,
                                 hsm_err err)
{
	const uint8_t *s = (const uint8_t *)text;
	size_t pad = 0;
	if (a->padded) {
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
	uint64_t bad = 0;
	bool simd_bad = false;
	size_t i = hsm_simd_b64_decode(dst, s, chars, a->c62, a->c63, &simd_bad), o = i / 4 * 3;
	for (; chars - i >= 8; i += 8, o += 6) /* 8 characters -> 6 bytes */
		store_be48(dst + o, pack6(b64_values(load_be64(s + i), a, &bad)));
	if (i < chars) {
		/* 2, 3, 4, 6 or 7 characters left; 'A' (value 0) stands for the missing ones. */
		size_t left = chars - i, bytes = left * 6 / 8;
		uint64_t v = pack6(b64_values(load_be_partial(s + i, left, 8, 'A'), a, &bad));
		store_be_partial(dst + o, v, bytes, 6);
		o += bytes;
		/* The bits past the last whole byte must be zero: each byte string has one encoding. */
		bad |= v & (((uint64_t)1 << (48 - 8 * bytes)) - 1);
	}
	if (bad != 0 || simd_bad || o != outlen) {
		memset(dst, 0, outlen);
		out->len = start;
		return HSM_FAIL(err, "invalid base64");
	}
	return HSM_SUCCESS;
}

hsm_result hsm_b64_decode(hsm_buf *out, const char *s, size_t n, hsm_err err)
{
	return b64_decode(out, s, n, &B64, err);
}

hsm_result hsm_b64url_decode(hsm_buf *out, const char *s, size_t n, hsm_err err)
{
	return b64_decode(out, s, n, &B64URL, err);
}

/* ---- PKCS#11 ids kept as aliases ---------------------------------------------------------- */

/* Whether an id spells a key id (a UUID), which every key without an id of its own has. */
static bool spells_key_id(const void *id, size_t n)
{
	char s[HSM_UUID_STRLEN + 1];
	if (n != HSM_UUID_STRLEN)
		return false;
	memcpy(s, id, n);
	s[n] = '\0';
	return hsm_is_uuid(s);
}

bool hsm_pkcs11_id_alias(const void *id, size_t n, char *out, size_t cap)
{
	size_t prefix = strlen(HSM_PKCS11_ID_ALIAS);
	if (n == 0 || n > HSM_PKCS11_ID_MAX || spells_key_id(id, n) || cap < prefix + 2 * n + 1)
		return false;
	memcpy(out, HSM_PKCS11_ID_ALIAS, prefix);
	hsm_hex_encode_str(out + prefix, id, n);
	return true;
}

bool hsm_pkcs11_id_of_alias(const char *alias_name, hsm_buf *id)
{
	hsm_buf_clear(id);
	if (!hsm_str_has_prefix(alias_name, HSM_PKCS11_ID_ALIAS))
		return false;
	const char *hex = alias_name + strlen(HSM_PKCS11_ID_ALIAS);
	size_t n = strlen(hex);
	bool ok = n >= 2 && n <= 2 * HSM_PKCS11_ID_MAX && n % 2 == 0 &&
	          hsm_ok(hsm_hex_decode(id, hex, n, HSM_ERR_VALIDATION)) &&
	          !spells_key_id(id->data, id->len);
	if (!ok)
		hsm_buf_clear(id);
	return ok;
}
