/*
 * encoding_simd.h - base64 32 characters at a time with AVX2, for
 * common/encoding.c (internal).
 *
 * Each function does the whole steps it can and returns how much of its
 * input it consumed; encoding.c finishes the rest with its portable code.
 * Both alphabets of RFC 4648 are served: c62 and c63 are the characters for
 * the values 62 and 63 ('+' '/' or '-' '_').  Like the portable code they
 * are constant-time: no branch and no memory address depends on the data,
 * only on lengths.  On a CPU without AVX2, or when turned off, they consume
 * nothing.
 */
#ifndef HSM_COMMON_ENCODING_SIMD_H
#define HSM_COMMON_ENCODING_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Encodes whole 24-byte steps of p[0..n) into dst (32 characters each) while
 * at least 28 bytes are left (each step reads 28); returns the bytes
 * consumed, a multiple of 24.  dst has room for the whole encoding of n.
 */
size_t hsm_b64_simd_encode(uint8_t *dst, const uint8_t *p, size_t n, int c62, int c63);

/*
 * Decodes whole 32-character steps of s[0..n) (24 bytes each) while at least
 * 64 characters are left (each step stores 32 bytes, the last 8 of them
 * scratch that the next step or encoding.c overwrites); returns the
 * characters consumed, a multiple of 32.  dst has room for the decoding of
 * all n characters.  Sets *bad to true if any consumed character is not in
 * the alphabet (and leaves it alone otherwise).
 */
size_t hsm_b64_simd_decode(uint8_t *dst, const uint8_t *s, size_t n, int c62, int c63, bool *bad);

/*
 * Whether the functions above do anything on this CPU.  Tests turn them off
 * (hsm_b64_simd_set(false)) to check the portable code against the same
 * reference; hsm_b64_simd_set(true) turns them back on where AVX2 exists.
 * Not thread-safe: call it before any thread encodes.
 */
bool hsm_b64_simd_active(void);
void hsm_b64_simd_set(bool on);

#endif
