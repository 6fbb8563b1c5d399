/*
 * json_read.c - the JSON reader (json_read.h).
 *
 * Every API request body goes through here, so it is written for that one
 * job: one pass over the bytes, strings without escapes handed to jansson as
 * they lie in the body, no per-character stream or buffer calls (jansson's
 * own json_loadb spends about 140 instructions per byte of a small KMS
 * request that way).  It builds the same jansson values and, within its
 * depth limit, accepts exactly what json_loadb(JSON_REJECT_DUPLICATES)
 * accepts, which the unit test checks against jansson itself on a corpus and
 * on a million mutations of it:
 *   - RFC 8259 grammar; the top level must be an object or an array;
 *   - strings are valid UTF-8 (no overlong forms, surrogates or code points
 *     past U+10FFFF), have no raw control characters, and \u escapes must
 *     pair surrogates correctly; \u0000 is refused;
 *   - numbers without fraction or exponent are 64-bit integers (a larger one
 *     is an error), others doubles (overflow to infinity is an error);
 *   - duplicate object keys are an error;
 *   - nesting deeper than 64 values is an error (jansson: 2048), which
 *     bounds the stack a request can make the reader use.
 * One more difference: jansson skips a NUL byte that directly follows a
 * number (a quirk of its push-back); here it is an error like any other
 * stray byte.
 */
#include "common/json_read.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/encoding.h"
#include "common/simd.h"

#define MAX_DEPTH 64 /* a KMS request nests 3 deep; jansson allows 2048 */
#define STACK_STR 256

typedef struct reader {
	const uint8_t *p;
	const uint8_t *end;
	unsigned depth;
	bool nomem;
	bool nul; /* stopped at a \u0000: valid JSON, but not a string hsmd takes */
	bool deep; /* stopped at a value nested deeper than MAX_DEPTH: maybe valid JSON */
} reader;

static json_t *read_value(reader *r);

static void skip_ws(reader *r)
{
	while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
		r->p++;
}

/* Length of the valid UTF-8 sequence of a non-ASCII character at p, or 0. */
static size_t utf8_seq(const uint8_t *p, const uint8_t *end)
{
	uint8_t c = p[0];
	size_t n;
	uint32_t cp;
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		cp = c & 0x1FU;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		cp = c & 0x0FU;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		cp = c & 0x07U;
	} else {
		return 0; /* continuation byte, overlong lead (C0, C1) or past U+10FFFF (F5..) */
	}
	if ((size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0U) != 0x80U)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3FU);
	}
	if ((n == 3 && cp < 0x800U) || (n == 4 && (cp < 0x10000U || cp > 0x10FFFFU)) ||
	    (cp >= 0xD800U && cp <= 0xDFFFU))
		return 0;
	return n;
}

static int hex4(const uint8_t *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		uint8_t c = p[i];
		int d = c >= '0' && c <= '9'   ? c - '0'
		        : c >= 'a' && c <= 'f' ? c - 'a' + 10
		        : c >= 'A' && c <= 'F' ? c - 'A' + 10
		                               : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

static size_t put_utf8(uint8_t *d, uint32_t cp)
{
	if (cp < 0x80U) {
		d[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800U) {
		d[0] = (uint8_t)(0xC0U | (cp >> 6));
		d[1] = (uint8_t)(0x80U | (cp & 0x3FU));
		return 2;
	}
	if (cp < 0x10000U) {
		d[0] = (uint8_t)(0xE0U | (cp >> 12));
		d[1] = (uint8_t)(0x80U | ((cp >> 6) & 0x3FU));
		d[2] = (uint8_t)(0x80U | (cp & 0x3FU));
		return 3;
	}
	d[0] = (uint8_t)(0xF0U | (cp >> 18));
	d[1] = (uint8_t)(0x80U | ((cp >> 12) & 0x3FU));
	d[2] = (uint8_t)(0x80U | ((cp >> 6) & 0x3FU));
	d[3] = (uint8_t)(0x80U | (cp & 0x3FU));
	return 4;
}

/*
 * Decodes the string whose opening quote r->p is at.  Returns its bytes in
 * *s and *len: a slice of the body when it has no escapes, else a decoded copy in
 * buf (STACK_STR bytes) or in *heap, which the caller frees.  False on a
 * malformed string (r->p left at the fault) or out of memory.
 */
static bool read_string(reader *r, uint8_t *buf, uint8_t **heap, const uint8_t **s, size_t *len)
{
	const uint8_t *start = ++r->p;
	bool escaped = false;
	/* Pass 1: validate and find the end. */
	for (;;) {
		/* Runs of plain characters (base64 blobs) 32 at a time with AVX2, then eight. */
		r->p += hsm_simd_json_plain(r->p, (size_t)(r->end - r->p));
		while (r->end - r->p >= 8) {
			unsigned k = hsm_json_plain8(r->p, false);
			r->p += k;
			if (k < 8)
				break;
		}
		if (r->p >= r->end)
			return false;
		uint8_t c = *r->p;
		if (c == '"')
			break;
		if (c < 0x20)
			return false;
		if (c == '\\') {
			escaped = true;
			if (r->end - r->p < 2)
				return false;
			uint8_t e = r->p[1];
			if (e != 'u') {
				if (strchr("\"\\/bfnrt", e) == NULL || e == '\0')
					return false;
				r->p += 2;
				continue;
			}
			if (r->end - r->p < 6)
				return false;
			int u = hex4(r->p + 2);
			r->nul = u == 0;
			if (u < 0 || u == 0 || (u >= 0xDC00 && u <= 0xDFFF))
				return false;
			if (u >= 0xD800 && u <= 0xDBFF) {
				if (r->end - r->p < 12 || r->p[6] != '\\' || r->p[7] != 'u')
					return false;
				int lo = hex4(r->p + 8);
				if (lo < 0xDC00 || lo > 0xDFFF)
					return false;
				r->p += 6;
			}
			r->p += 6;
			continue;
		}
		if (c < 0x80) {
			r->p++;
			continue;
		}
		size_t n = utf8_seq(r->p, r->end);
		if (n == 0)
			return false;
		r->p += n;
	}
	size_t raw = (size_t)(r->p - start);
	r->p++; /* the closing quote */
	if (!escaped) {
		*s = start;
		*len = raw;
		return true;
	}
	/* Pass 2: decode; the result is never longer than the source. */
	uint8_t *d = buf;
	if (raw > STACK_STR) {
		d = *heap = malloc(raw);
		if (d == NULL) {
			r->nomem = true;
			return false;
		}
	}
	size_t o = 0;
	for (const uint8_t *q = start; q < start + raw;) {
		if (*q != '\\') {
			d[o++] = *q++;
			continue;
		}
		uint8_t e = q[1];
		q += 2;
		switch (e) {
		case 'b': d[o++] = '\b'; break;
		case 'f': d[o++] = '\f'; break;
		case 'n': d[o++] = '\n'; break;
		case 'r': d[o++] = '\r'; break;
		case 't': d[o++] = '\t'; break;
		case 'u': {
			uint32_t cp = (uint32_t)hex4(q);
			q += 4;
			if (cp >= 0xD800U && cp <= 0xDBFFU) {
				uint32_t lo = (uint32_t)hex4(q + 2);
				q += 6;
				cp = 0x10000U + ((cp - 0xD800U) << 10) + (lo - 0xDC00U);
			}
			o += put_utf8(d + o, cp);
			break;
		}
		default: d[o++] = e; break; /* " \ / */
		}
	}
	*s = d;
	*len = o;
	return true;
}

static json_t *read_string_value(reader *r)
{
	uint8_t buf[STACK_STR], *heap = NULL;
	const uint8_t *s;
	size_t len;
	if (!read_string(r, buf, &heap, &s, &len))
		return NULL;
	json_t *v = json_stringn_nocheck((const char *)s, len);
	/* The reader's own decoded copy may hold (the base64 of) a plaintext:
	 * wiped before it is released. */
	if (heap != NULL) {
		OPENSSL_cleanse(heap, len);
		free(heap);
	} else if (s == buf) {
		OPENSSL_cleanse(buf, len);
	}
	r->nomem = v == NULL;
	return v;
}

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static json_t *read_number(reader *r)
{
	const uint8_t *start = r->p;
	bool neg = false, real = false;
	if (r->p < r->end && *r->p == '-') {
		neg = true;
		r->p++;
	}
	if (r->p >= r->end || !is_digit(*r->p))
		return NULL;
	if (*r->p == '0') {
		r->p++;
		if (r->p < r->end && is_digit(*r->p))
			return NULL;
	} else {
		while (r->p < r->end && is_digit(*r->p))
			r->p++;
	}
	if (r->p < r->end && *r->p == '.') {
		real = true;
		r->p++;
		if (r->p >= r->end || !is_digit(*r->p))
			return NULL;
		while (r->p < r->end && is_digit(*r->p))
			r->p++;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		real = true;
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (r->p >= r->end || !is_digit(*r->p))
			return NULL;
		while (r->p < r->end && is_digit(*r->p))
			r->p++;
	}
	json_t *v;
	if (!real) {
		/* Accumulate as a negative number: its range is the larger one. */
		long long x = 0;
		for (const uint8_t *q = start + neg; q < r->p; q++) {
			int d = *q - '0';
			if (x < (LLONG_MIN + d) / 10) {
				r->p = start;
				return NULL; /* too big an integer */
			}
			x = x * 10 - d;
		}
		if (!neg) {
			if (x == LLONG_MIN) {
				r->p = start;
				return NULL;
			}
			x = -x;
		}
		v = json_integer(x);
	} else {
		size_t n = (size_t)(r->p - start);
		char small[64], *text = small;
		if (n >= sizeof(small)) {
			text = malloc(n + 1);
			if (text == NULL) {
				r->nomem = true;
				return NULL;
			}
		}
		memcpy(text, start, n);
		text[n] = '\0';
		errno = 0;
		double d = strtod(text, NULL);
		/* Out of a double's range either way: too large, or so small that it would
		 * read as 0 or lose digits (1e-400); a value the sender never wrote is refused. */
		bool out_of_range = errno == ERANGE;
		if (text != small)
			free(text);
		if (out_of_range) {
			r->p = start;
			return NULL;
		}
		v = json_real(d);
	}
	r->nomem = v == NULL;
	return v;
}

static bool literal(reader *r, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(r->end - r->p) < n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (r->p[i] != (uint8_t)word[i])
			return false;
	r->p += n;
	return true;
}

static json_t *read_object(reader *r)
{
	json_t *o = json_object();
	if (o == NULL) {
		r->nomem = true;
		return NULL;
	}
	r->p++; /* { */
	skip_ws(r);
	if (r->p < r->end && *r->p == '}') {
		r->p++;
		return o;
	}
	for (;;) {
		uint8_t buf[STACK_STR + 1], *heap = NULL;
		const uint8_t *k;
		size_t klen;
		skip_ws(r);
		if (r->p >= r->end || *r->p != '"' || !read_string(r, buf, &heap, &k, &klen))
			goto fail;
		/* Keys are C strings to jansson: copy to terminate (no NUL inside: \u0000 is refused). */
		char kbuf[STACK_STR + 1], *key = kbuf;
		if (klen > STACK_STR) {
			key = malloc(klen + 1);
			if (key == NULL) {
				free(heap);
				r->nomem = true;
				goto fail;
			}
		}
		memcpy(key, k, klen);
		key[klen] = '\0';
		free(heap);
		bool ok = json_object_get(o, key) == NULL; /* duplicates are refused */
		json_t *v = NULL;
		if (ok) {
			skip_ws(r);
			ok = r->p < r->end && *r->p == ':';
		}
		if (ok) {
			r->p++;
			v = read_value(r);
			ok = v != NULL;
		}
		if (ok && json_object_set_new_nocheck(o, key, v) != 0) {
			r->nomem = true;
			ok = false;
		}
		if (key != kbuf)
			free(key);
		if (!ok)
			goto fail;
		skip_ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		if (r->p < r->end && *r->p == '}') {
			r->p++;
			return o;
		}
		goto fail;
	}
fail:
	json_decref(o);
	return NULL;
}

static json_t *read_array(reader *r)
{
	json_t *a = json_array();
	if (a == NULL) {
		r->nomem = true;
		return NULL;
	}
	r->p++; /* [ */
	skip_ws(r);
	if (r->p < r->end && *r->p == ']') {
		r->p++;
		return a;
	}
	for (;;) {
		json_t *v = read_value(r);
		if (v == NULL)
			goto fail;
		if (json_array_append_new(a, v) != 0) {
			r->nomem = true;
			goto fail;
		}
		skip_ws(r);
		if (r->p < r->end && *r->p == ',') {
			r->p++;
			continue;
		}
		if (r->p < r->end && *r->p == ']') {
			r->p++;
			return a;
		}
		goto fail;
	}
fail:
	json_decref(a);
	return NULL;
}

static json_t *read_value(reader *r)
{
	skip_ws(r);
	if (r->p >= r->end)
		return NULL;
	if (r->depth == MAX_DEPTH) {
		r->deep = true;
		return NULL;
	}
	r->depth++;
	json_t *v = NULL;
	switch (*r->p) {
	case '{': v = read_object(r); break;
	case '[': v = read_array(r); break;
	case '"': v = read_string_value(r); break;
	case 't': v = literal(r, "true") ? json_true() : NULL; break;
	case 'f': v = literal(r, "false") ? json_false() : NULL; break;
	case 'n': v = literal(r, "null") ? json_null() : NULL; break;
	default:
		if (*r->p == '-' || is_digit(*r->p))
			v = read_number(r);
		break;
	}
	r->depth--;
	return v;
}

/* Line and column (in characters) of the byte at pos, both from 1. */
static void position(const uint8_t *body, const uint8_t *pos, unsigned *line, unsigned *col)
{
	unsigned l = 1, c = 1;
	for (const uint8_t *q = body; q < pos; q++) {
		if (*q == '\n') {
			l++;
			c = 1;
		} else if ((*q & 0xC0U) != 0x80U) {
			c++;
		}
	}
	*line = l;
	*col = c;
}

hsm_result hsm_json_read(const uint8_t *body, size_t n, json_t **out, unsigned *line,
                         unsigned *col)
{
	reader r = {.p = body, .end = body + n};
	*out = NULL;
	*line = *col = 0;
	skip_ws(&r);
	json_t *v = NULL;
	if (r.p < r.end && (*r.p == '{' || *r.p == '['))
		v = read_value(&r);
	if (v != NULL) {
		skip_ws(&r);
		if (r.p == r.end) {
			*out = v;
			return HSM_SUCCESS;
		}
		json_decref(v);
	}
	HSM_ENSURE(!r.nomem, HSM_ERR_NOMEM, "out of memory");
	position(body, r.p > r.end ? r.end : r.p, line, col);
	HSM_ENSURE(!r.nul, HSM_ERR_VALIDATION,
	           "The request has a string with the character U+0000 (line %u, column %u), which "
	           "hsmd does not accept in any member",
	           *line, *col);
	HSM_ENSURE(!r.deep, HSM_ERR_SERIALIZATION,
	           "The request body nests values more than %d deep (line %u, column %u), more "
	           "than hsmd reads",
	           MAX_DEPTH, *line, *col);
	return HSM_FAIL(HSM_ERR_SERIALIZATION, "The request body is not valid JSON (line %u, column %u)",
	                *line, *col);
}

hsm_result hsm_json_text(const json_t *v, size_t flags, char **out)
{
	*out = NULL;
	/* json_dumpb writes into the caller's buffer, where no write can fail. */
	size_t n = json_dumpb(v, NULL, 0, flags);
	HSM_ENSURE(n > 0, HSM_ERR_NOMEM, "out of memory");
	char *text = malloc(n + 1);
	HSM_ENSURE(text != NULL, HSM_ERR_NOMEM, "out of memory");
	if (json_dumpb(v, text, n, flags) != n) {
		free(text);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	text[n] = '\0';
	*out = text;
	return HSM_SUCCESS;
}
