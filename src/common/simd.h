/*
 * simd.h - AVX2 steps of the codecs (internal): base64 32 characters at a
 * time for common/encoding.c, and the JSON reader's scan for plain bytes
 * 32 at a time.
 *
 * Each function does the whole steps it can and returns how much of its
 * input it consumed; the caller finishes the rest with its portable code.
 * On a CPU without AVX2, or when turned off, they consume nothing.
 */
#ifndef HSM_COMMON_SIMD_H
#define HSM_COMMON_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Base64: both alphabets of RFC 4648 are served, c62 and c63 being the
 * characters for the values 62 and 63 ('+' '/' or '-' '_').  Like the
 * portable code these are constant-time: no branch and no memory address
 * depends on the data, only on lengths.
 *
 * Encodes whole 24-byte steps of p[0..n) into dst, 32 characters each;
 * returns the bytes consumed, a multiple of 24.  Reads p[0..n) and writes
 * dst[0..consumed / 3 * 4), no further.
 */
size_t hsm_simd_b64_encode(uint8_t *dst, const uint8_t *p, size_t n, int c62, int c63);

/*
 * Decodes whole 32-character steps of s[0..n) into dst, 24 bytes each;
 * returns the characters consumed, a multiple of 32.  Reads s[0..n) and
 * writes dst[0..consumed / 4 * 3), no further.  Sets *bad to true if any
 * consumed character is not in the alphabet (and leaves it alone
 * otherwise); the bytes written for such a step are garbage.
 */
size_t hsm_simd_b64_decode(uint8_t *dst, const uint8_t *s, size_t n, int c62, int c63, bool *bad);

/*
 * How many bytes from p, in whole 32-byte steps while at least 32 of the n
 * are left, come before the first one a JSON string cannot carry as it is
 * (as hsm_json_plain8 without DEL: '"', '\\', a control character, a byte
 * of 128 or more).  Returns the offset of that byte if a step found one;
 * otherwise the bytes scanned (a multiple of 32), the rest being the
 * caller's.  Not constant-time: it stops at the first such byte.
 */
size_t hsm_simd_json_plain(const uint8_t *p, size_t n);

/*
 * Whether the functions above do anything on this CPU.  Tests turn them off
 * (hsm_simd_set(false)) to check the portable code against the same
 * reference; hsm_simd_set(true) turns them back on where AVX2 exists.
 * Not thread-safe: call it before any thread encodes.
 */
bool hsm_simd_active(void);
void hsm_simd_set(bool on);

#endif
