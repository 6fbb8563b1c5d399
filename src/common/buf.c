#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

void hsm_buf_init(hsm_buf *b)
{
	memset(b, 0, sizeof(*b));
}

void hsm_buf_init_secure(hsm_buf *b)
{
	memset(b, 0, sizeof(*b));
	b->secure = true;
}

void hsm_buf_free(hsm_buf *b)
{
	if (b == NULL)
		return;
	if (b->data != NULL) {
		if (b->secure) {
			OPENSSL_secure_clear_free(b->data, b->cap);
		} else {
			explicit_bzero(b->data, b->cap);
			free(b->data);
		}
	}
	bool secure = b->secure;
	memset(b, 0, sizeof(*b));
	b->secure = secure;
}

void hsm_buf_clear(hsm_buf *b)
{
	if (b->data != NULL)
		explicit_bzero(b->data, b->cap);
	b->len = 0;
}

static hsm_result reserve(hsm_buf *b, size_t extra, bool exact)
{
	HSM_ENSURE(extra <= HSM_BUF_MAX && b->len <= HSM_BUF_MAX - extra, HSM_ERR_LIMIT_EXCEEDED,
	           "buffer would exceed %zu bytes", (size_t)HSM_BUF_MAX);
	size_t need = b->len + extra + 1; /* +1 keeps room for hsm_buf_terminate */
	if (need <= b->cap)
		return HSM_SUCCESS;
	size_t cap = exact ? need : b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	uint8_t *p;
	if (b->secure) {
		p = OPENSSL_secure_zalloc(cap);
		HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "secure heap exhausted");
		if (b->data != NULL) {
			memcpy(p, b->data, b->len);
			OPENSSL_secure_clear_free(b->data, b->cap);
		}
	} else {
		/* Not realloc: the old block would be freed with the bytes in it. */
		p = malloc(cap);
		HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
		if (b->data != NULL) {
			memcpy(p, b->data, b->len);
			explicit_bzero(b->data, b->cap);
			free(b->data);
		}
	}
	b->data = p;
	b->cap = cap;
	return HSM_SUCCESS;
}

hsm_result hsm_buf_reserve(hsm_buf *b, size_t extra)
{
	return reserve(b, extra, false);
}

hsm_result hsm_buf_reserve_exact(hsm_buf *b, size_t extra)
{
	return reserve(b, extra, true);
}

hsm_result hsm_buf_append_space(hsm_buf *b, size_t n, uint8_t **out)
{
	HSM_GUARD(hsm_buf_reserve(b, n));
	*out = b->data + b->len;
	b->len += n;
	return HSM_SUCCESS;
}

hsm_result hsm_buf_put(hsm_buf *b, const void *p, size_t n)
{
	if (n == 0)
		return HSM_SUCCESS;
	/* Room for n bytes and the terminator already: the common case, no checks beyond. */
	if (n < b->cap - b->len && b->len + n <= HSM_BUF_MAX) {
		memcpy(b->data + b->len, p, n);
		b->len += n;
		return HSM_SUCCESS;
	}
	uint8_t *dst;
	HSM_GUARD(hsm_buf_append_space(b, n, &dst));
	memcpy(dst, p, n);
	return HSM_SUCCESS;
}

hsm_result hsm_buf_put_u8(hsm_buf *b, uint8_t v)
{
	return hsm_buf_put(b, &v, 1);
}

hsm_result hsm_buf_put_u16(hsm_buf *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	return hsm_buf_put(b, x, sizeof(x));
}

hsm_result hsm_buf_put_u32(hsm_buf *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	return hsm_buf_put(b, x, sizeof(x));
}

hsm_result hsm_buf_put_u64(hsm_buf *b, uint64_t v)
{
	HSM_GUARD(hsm_buf_put_u32(b, (uint32_t)(v >> 32)));
	return hsm_buf_put_u32(b, (uint32_t)v);
}

hsm_result hsm_buf_put_str(hsm_buf *b, const char *s)
{
	return hsm_buf_put(b, s, strlen(s));
}

hsm_result hsm_buf_printf(hsm_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	HSM_ENSURE(n >= 0, HSM_ERR_INTERNAL, "format error");
	HSM_GUARD(hsm_buf_reserve(b, (size_t)n));
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return HSM_SUCCESS;
}

hsm_result hsm_buf_put_lp(hsm_buf *b, const void *p, size_t n)
{
	HSM_ENSURE(n <= UINT32_MAX, HSM_ERR_LIMIT_EXCEEDED, "field too long");
	HSM_GUARD(hsm_buf_put_u32(b, (uint32_t)n));
	return hsm_buf_put(b, p, n);
}

hsm_result hsm_buf_terminate(hsm_buf *b)
{
	HSM_GUARD(hsm_buf_reserve(b, 0));
	b->data[b->len] = 0;
	return HSM_SUCCESS;
}

hsm_result hsm_buf_set(hsm_buf *b, const void *p, size_t n)
{
	hsm_buf_clear(b);
	return hsm_buf_put(b, p, n);
}

void hsm_cursor_init(hsm_cursor *c, const void *p, size_t len)
{
	c->p = p;
	c->len = p != NULL ? len : 0;
	c->pos = 0;
}

size_t hsm_cursor_remaining(const hsm_cursor *c)
{
	return c->len - c->pos;
}

hsm_result hsm_cursor_get_bytes(hsm_cursor *c, size_t n, const uint8_t **out, hsm_err err)
{
	HSM_ENSURE(n <= hsm_cursor_remaining(c), err, "input is truncated");
	*out = c->p + c->pos;
	c->pos += n;
	return HSM_SUCCESS;
}

hsm_result hsm_cursor_copy(hsm_cursor *c, void *out, size_t n, hsm_err err)
{
	const uint8_t *p;
	HSM_GUARD(hsm_cursor_get_bytes(c, n, &p, err));
	memcpy(out, p, n);
	return HSM_SUCCESS;
}

hsm_result hsm_cursor_get_u8(hsm_cursor *c, uint8_t *v, hsm_err err)
{
	const uint8_t *p;
	HSM_GUARD(hsm_cursor_get_bytes(c, 1, &p, err));
	*v = p[0];
	return HSM_SUCCESS;
}

hsm_result hsm_cursor_get_u16(hsm_cursor *c, uint16_t *v, hsm_err err)
{
	const uint8_t *p;
	HSM_GUARD(hsm_cursor_get_bytes(c, 2, &p, err));
	*v = (uint16_t)((unsigned)p[0] << 8 | p[1]);
	return HSM_SUCCESS;
}

hsm_result hsm_cursor_get_u32(hsm_cursor *c, uint32_t *v, hsm_err err)
{
	const uint8_t *p;
	HSM_GUARD(hsm_cursor_get_bytes(c, 4, &p, err));
	*v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return HSM_SUCCESS;
}

hsm_result hsm_cursor_get_u64(hsm_cursor *c, uint64_t *v, hsm_err err)
{
	uint32_t hi, lo;
	HSM_GUARD(hsm_cursor_get_u32(c, &hi, err));
	HSM_GUARD(hsm_cursor_get_u32(c, &lo, err));
	*v = (uint64_t)hi << 32 | lo;
	return HSM_SUCCESS;
}

hsm_result hsm_cursor_get_lp(hsm_cursor *c, size_t max, const uint8_t **out, size_t *n, hsm_err err)
{
	uint32_t len;
	HSM_GUARD(hsm_cursor_get_u32(c, &len, err));
	HSM_ENSURE(len <= max, err, "field too long");
	HSM_GUARD(hsm_cursor_get_bytes(c, len, out, err));
	*n = len;
	return HSM_SUCCESS;
}

hsm_result hsm_cursor_expect_end(const hsm_cursor *c, hsm_err err)
{
	HSM_ENSURE(hsm_cursor_remaining(c) == 0, err, "unexpected trailing bytes");
	return HSM_SUCCESS;
}
