/*
 * encoding.h - hex and base64 (RFC 4648) codecs.
 *
 * Decoders are strict: standard alphabets only, canonical padding, no
 * whitespace, no non-zero trailing bits.  They run in time independent of the
 * byte values (no table lookups indexed by data), since they decode
 * plaintexts and shares.  Output goes to an hsm_buf the caller owns; use a
 * secure buffer for secrets.
 */
#ifndef HSM_ENCODING_H
#define HSM_ENCODING_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

hsm_result hsm_hex_encode(hsm_buf *out, const uint8_t *p, size_t n) HSM_MUST_CHECK; /* lowercase */
/* The same into a fixed array: out holds 2*n characters and a NUL. */
void hsm_hex_encode_str(char *out, const uint8_t *p, size_t n);
/* Decodes lowercase hex only (uppercase is refused so each value has one spelling). */
hsm_result hsm_hex_decode(hsm_buf *out, const char *s, size_t n, hsm_err err) HSM_MUST_CHECK;
/* Fixed-size variant: s must be exactly 2*n lowercase hex digits.  On a bad
 * digit out is zeroed; on a wrong length it is not touched. */
hsm_result hsm_hex_decode_exact(uint8_t *out, size_t n, const char *s, size_t slen,
                                hsm_err err) HSM_MUST_CHECK;

/* Standard base64 with padding. */
hsm_result hsm_b64_encode(hsm_buf *out, const uint8_t *p, size_t n) HSM_MUST_CHECK;
hsm_result hsm_b64_decode(hsm_buf *out, const char *s, size_t n, hsm_err err) HSM_MUST_CHECK;
/* base64url without padding (RFC 7515 section 2). */
hsm_result hsm_b64url_encode(hsm_buf *out, const uint8_t *p, size_t n) HSM_MUST_CHECK;
hsm_result hsm_b64url_decode(hsm_buf *out, const char *s, size_t n, hsm_err err) HSM_MUST_CHECK;

size_t hsm_b64_encoded_len(size_t n);

#endif
