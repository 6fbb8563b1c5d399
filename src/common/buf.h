/*
 * buf.h - bounded byte buffers and read cursors.
 *
 * Every parse and serialize of outside bytes (HTTP bodies, base64 fields,
 * ciphertext blobs, share files, backups, audit lines) goes through these two
 * types; there is no raw pointer arithmetic on untrusted bytes elsewhere.
 *
 * hsm_buf is a growable, owned output buffer.  A zero-initialized hsm_buf is
 * empty and valid.  Its storage is wiped on every reallocation and on free,
 * since any buffer may hold bytes of a request (encryption context values,
 * pieces of a body).  When created with hsm_buf_init_secure() the storage
 * comes from OpenSSL's secure heap (locked, out of core dumps); use that for
 * anything that holds key material or plaintext.
 *
 * hsm_cursor is a read-only view over bytes owned by someone else; it never
 * reads past its end and reports HSM_ERR_VALIDATION (with the caller-chosen
 * error code where the API takes one) when input is short.
 */
#ifndef HSM_BUF_H
#define HSM_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/result.h"

/* Upper bound for any single buffer: protects against size arithmetic overflow. */
#define HSM_BUF_MAX ((size_t)1 << 30)

typedef struct hsm_buf {
	uint8_t *data; /* owned; NULL when cap == 0 */
	size_t len;
	size_t cap;
	bool secure; /* storage in the secure heap, wiped on free */
} hsm_buf;

void hsm_buf_init(hsm_buf *b);
void hsm_buf_init_secure(hsm_buf *b);
/* Wipes and frees storage and resets to empty.  NULL is a no-op. */
void hsm_buf_free(hsm_buf *b);
/* Wipes contents and sets len to 0, keeping capacity. */
void hsm_buf_clear(hsm_buf *b);
/* Makes room for `extra` more bytes. */
hsm_result hsm_buf_reserve(hsm_buf *b, size_t extra) HSM_MUST_CHECK;
/* The same, growing to exactly what is needed (a buffer filled once, such as a file's;
 * hsm_buf_free wipes the whole capacity, so the room given beyond is touched then). */
hsm_result hsm_buf_reserve_exact(hsm_buf *b, size_t extra) HSM_MUST_CHECK;
hsm_result hsm_buf_put(hsm_buf *b, const void *p, size_t n) HSM_MUST_CHECK;
hsm_result hsm_buf_put_u8(hsm_buf *b, uint8_t v) HSM_MUST_CHECK;
hsm_result hsm_buf_put_u16(hsm_buf *b, uint16_t v) HSM_MUST_CHECK; /* big-endian */
hsm_result hsm_buf_put_u32(hsm_buf *b, uint32_t v) HSM_MUST_CHECK; /* big-endian */
hsm_result hsm_buf_put_u64(hsm_buf *b, uint64_t v) HSM_MUST_CHECK; /* big-endian */
hsm_result hsm_buf_put_str(hsm_buf *b, const char *s) HSM_MUST_CHECK; /* no NUL */
hsm_result hsm_buf_printf(hsm_buf *b, const char *fmt, ...) HSM_MUST_CHECK HSM_PRINTF(2, 3);
/* Appends a length-prefixed (u32 big-endian) byte string. */
hsm_result hsm_buf_put_lp(hsm_buf *b, const void *p, size_t n) HSM_MUST_CHECK;
/* Reserves n bytes at the end, sets *out to them and grows len by n. */
hsm_result hsm_buf_append_space(hsm_buf *b, size_t n, uint8_t **out) HSM_MUST_CHECK;
/* Ensures data[len] == 0 (not counted in len) so the contents read as a C string. */
hsm_result hsm_buf_terminate(hsm_buf *b) HSM_MUST_CHECK;
/* Replaces contents with a copy of p[0..n). */
hsm_result hsm_buf_set(hsm_buf *b, const void *p, size_t n) HSM_MUST_CHECK;

typedef struct hsm_cursor {
	const uint8_t *p;
	size_t len;
	size_t pos;
} hsm_cursor;

void hsm_cursor_init(hsm_cursor *c, const void *p, size_t len);
size_t hsm_cursor_remaining(const hsm_cursor *c);
/* Each getter fails with `err` (use HSM_ERR_VALIDATION or a more precise code) when short. */
hsm_result hsm_cursor_get_u8(hsm_cursor *c, uint8_t *v, hsm_err err) HSM_MUST_CHECK;
hsm_result hsm_cursor_get_u16(hsm_cursor *c, uint16_t *v, hsm_err err) HSM_MUST_CHECK;
hsm_result hsm_cursor_get_u32(hsm_cursor *c, uint32_t *v, hsm_err err) HSM_MUST_CHECK;
hsm_result hsm_cursor_get_u64(hsm_cursor *c, uint64_t *v, hsm_err err) HSM_MUST_CHECK;
/* Points *out at the next n bytes (no copy) and advances. */
hsm_result hsm_cursor_get_bytes(hsm_cursor *c, size_t n, const uint8_t **out, hsm_err err) HSM_MUST_CHECK;
/* Copies the next n bytes into out. */
hsm_result hsm_cursor_copy(hsm_cursor *c, void *out, size_t n, hsm_err err) HSM_MUST_CHECK;
/* Reads a u32-length-prefixed byte string of at most max bytes. */
hsm_result hsm_cursor_get_lp(hsm_cursor *c, size_t max, const uint8_t **out, size_t *n,
                             hsm_err err) HSM_MUST_CHECK;
/* Fails with err unless every byte was consumed. */
hsm_result hsm_cursor_expect_end(const hsm_cursor *c, hsm_err err) HSM_MUST_CHECK;

#endif
