/*
 * simd.c - see simd.h.
 *
 * Base64 with AVX2, 24 bytes <-> 32 characters a step, after the method of
 * Muła and Lemire ("Faster Base64 Encoding and Decoding Using AVX2
 * Instructions", 2018), written here for hsmd's two alphabets and its
 * strict decoder.  Every step is the same instructions whatever the data:
 * the only table lookups are in-register byte shuffles (vpshufb), whose
 * time does not depend on the index, so plaintexts and data keys passing
 * through keep the constant-time property of the portable code.
 *
 * The JSON scan flags the bytes a string cannot carry as they are with
 * three compares a step, and stops at the first.
 */
#include "common/simd.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define HSM_AVX2 1
#include <immintrin.h>
#endif

static bool simd_off;

bool hsm_simd_active(void)
{
#ifdef HSM_AVX2
	return !simd_off && __builtin_cpu_supports("avx2");
#else
	return false;
#endif
}

void hsm_simd_set(bool on)
{
	simd_off = !on;
}

#ifdef HSM_AVX2

#define B(x) ((char)(x)) /* a byte constant for the _mm256_set* intrinsics */

__attribute__((target("avx2"))) static size_t encode_avx2(uint8_t *dst, const uint8_t *p,
                                                          size_t n, int c62, int c63)
{
	/*
	 * The low 128-bit lane holds p[0..16), the high one p[8..24): each
	 * serves 12 bytes, four groups (a, b, c), and each 32-bit element gets
	 * the bytes b, a, c, b of one group.  As two 16-bit words that is
	 * a:b and b:c, where the four 6-bit values sit at bits 10..15 and 4..9
	 * of the first and 6..11 and 0..5 of the second.
	 */
	const __m256i spread = _mm256_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10,  //
	                                        5, 4, 6, 5, 8, 7, 9, 8, 11, 10, 12, 11, 14, 13, 15, 14);
	/* Values 1 and 3 of a group, shifted down to bits 0..5 of their word by a high product. */
	const __m256i mask13 = _mm256_set1_epi32(0x0fc0fc00), mul13 = _mm256_set1_epi32(0x04000040);
	/* Values 2 and 4, shifted up to bits 8..13 of their word by a low product. */
	const __m256i mask24 = _mm256_set1_epi32(0x003f03f0), mul24 = _mm256_set1_epi32(0x01000010);
	/*
	 * Value -> character: a class number (13 for 0..25, 0 for 26..51, 1..12
	 * for 52..63), then the offset of that class from a shuffle of `offset`.
	 */
	const __m256i v51 = _mm256_set1_epi8(51), v26 = _mm256_set1_epi8(26), v13 = _mm256_set1_epi8(13);
	const __m256i offset = _mm256_setr_epi8(
	    B('a' - 26), B('0' - 52), B('0' - 52), B('0' - 52), B('0' - 52), B('0' - 52), B('0' - 52),
	    B('0' - 52), B('0' - 52), B('0' - 52), B('0' - 52), B(c62 - 62), B(c63 - 63), B('A'), 0, 0,
	    B('a' - 26), B('0' - 52), B('0' - 52), B('0' - 52), B('0' - 52), B('0' - 52), B('0' - 52),
	    B('0' - 52), B('0' - 52), B('0' - 52), B('0' - 52), B(c62 - 62), B(c63 - 63), B('A'), 0, 0);
	size_t i = 0, o = 0;
	for (; n - i >= 24; i += 24, o += 32) {
		__m128i lo = _mm_loadu_si128((const void *)(p + i));
		__m128i hi = _mm_loadu_si128((const void *)(p + i + 8));
		__m256i in = _mm256_shuffle_epi8(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1),
		                                 spread);
		__m256i v = _mm256_or_si256(_mm256_mulhi_epu16(_mm256_and_si256(in, mask13), mul13),
		                            _mm256_mullo_epi16(_mm256_and_si256(in, mask24), mul24));
		__m256i class = _mm256_or_si256(_mm256_subs_epu8(v, v51),
		                                _mm256_and_si256(_mm256_cmpgt_epi8(v26, v), v13));
		_mm256_storeu_si256((void *)(dst + o),
		                    _mm256_add_epi8(v, _mm256_shuffle_epi8(offset, class)));
	}
	return i;
}

__attribute__((target("avx2"))) static size_t decode_avx2(uint8_t *dst, const uint8_t *s,
                                                          size_t n, int c62, int c63, bool *bad)
{
	/* Range tests on signed bytes: a character of 128 or more is negative and in no range. */
	const __m256i below_A = _mm256_set1_epi8('A' - 1), above_Z = _mm256_set1_epi8('Z' + 1);
	const __m256i below_a = _mm256_set1_epi8('a' - 1), above_z = _mm256_set1_epi8('z' + 1);
	const __m256i below_0 = _mm256_set1_epi8('0' - 1), above_9 = _mm256_set1_epi8('9' + 1);
	const __m256i is62 = _mm256_set1_epi8(B(c62)), is63 = _mm256_set1_epi8(B(c63));
	/* Character -> value: the offset of its range, added modulo 256. */
	const __m256i off_A = _mm256_set1_epi8(B(0 - 'A')), off_a = _mm256_set1_epi8(B(26 - 'a'));
	const __m256i off_0 = _mm256_set1_epi8(B(52 - '0'));
	const __m256i off62 = _mm256_set1_epi8(B(62 - c62)), off63 = _mm256_set1_epi8(B(63 - c63));
	/* Four 6-bit values -> 24 bits: pairs into 12 bits (v0 * 64 + v1), then those into 24. */
	const __m256i pairs = _mm256_set1_epi32(0x01400140), quads = _mm256_set1_epi32(0x00011000);
	/* The three bytes of each 32-bit element, most significant first; 12 per lane. */
	const __m256i order = _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,  //
	                                       2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
	const __m256i join = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7); /* the 24 bytes together */
	/*
	 * 0xff for the runs of eight characters (c >> 3) that lie wholly in the
	 * alphabet: '0'..'7', 'H'..'W', 'h'..'w'.  OR-ing it into the range
	 * tests changes nothing (they find those characters valid too), but it
	 * says that their validity rests on their top five bits alone, in a form
	 * valgrind's memcheck can follow: a vector comparison of a byte with
	 * some secret bits is all secret to it, an OR with a known one is not.
	 * tests/unit/encoding_test.c checks under memcheck that the decoder
	 * branches on no secret bit, with such characters.
	 */
	const __m256i whole_run = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, -1, 0, 0, -1, -1, 0, 0, -1, -1, 0,  //
	                                           0, 0, 0, 0, 0, 0, -1, 0, 0, -1, -1, 0, 0, -1, -1, 0);
	const __m256i low4 = _mm256_set1_epi8(0x0f), top = _mm256_set1_epi8(B(0x80));
	__m256i invalid = _mm256_setzero_si256();
	size_t i = 0, o = 0;
	for (; n - i >= 32; i += 32, o += 24) {
		__m256i c = _mm256_loadu_si256((const void *)(s + i));
		__m256i up = _mm256_and_si256(_mm256_cmpgt_epi8(c, below_A), _mm256_cmpgt_epi8(above_Z, c));
		__m256i lo = _mm256_and_si256(_mm256_cmpgt_epi8(c, below_a), _mm256_cmpgt_epi8(above_z, c));
		__m256i dg = _mm256_and_si256(_mm256_cmpgt_epi8(c, below_0), _mm256_cmpgt_epi8(above_9, c));
		__m256i s62 = _mm256_cmpeq_epi8(c, is62), s63 = _mm256_cmpeq_epi8(c, is63);
		/* The run's number, with bit 7 set for characters of 128 or more (vpshufb gives 0). */
		__m256i run = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 3), low4),
		                              _mm256_and_si256(c, top));
		__m256i valid = _mm256_or_si256(_mm256_or_si256(_mm256_shuffle_epi8(whole_run, run), up),
		                                _mm256_or_si256(_mm256_or_si256(lo, dg),
		                                                _mm256_or_si256(s62, s63)));
		invalid = _mm256_or_si256(invalid, _mm256_cmpeq_epi8(valid, _mm256_setzero_si256()));
		__m256i off = _mm256_or_si256(
		    _mm256_or_si256(_mm256_and_si256(up, off_A), _mm256_and_si256(lo, off_a)),
		    _mm256_or_si256(_mm256_and_si256(dg, off_0),
		                    _mm256_or_si256(_mm256_and_si256(s62, off62), _mm256_and_si256(s63, off63))));
		__m256i v = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_add_epi8(c, off), pairs), quads);
		v = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(v, order), join);
		_mm_storeu_si128((void *)(dst + o), _mm256_castsi256_si128(v));
		_mm_storel_epi64((void *)(dst + o + 16), _mm256_extracti128_si256(v, 1));
	}
	*bad = *bad || !_mm256_testz_si256(invalid, invalid);
	return i;
}

__attribute__((target("avx2"))) static size_t json_plain_avx2(const uint8_t *p, size_t n)
{
	/* Signed: a byte of 128 or more is negative, so "below 0x20" flags it too. */
	const __m256i space = _mm256_set1_epi8(0x20), quote = _mm256_set1_epi8('"');
	const __m256i backslash = _mm256_set1_epi8('\\');
	size_t i = 0;
	for (; n - i >= 32; i += 32) {
		__m256i c = _mm256_loadu_si256((const void *)(p + i));
		__m256i stop = _mm256_or_si256(_mm256_cmpgt_epi8(space, c),
		                               _mm256_or_si256(_mm256_cmpeq_epi8(c, quote),
		                                               _mm256_cmpeq_epi8(c, backslash)));
		unsigned m = (unsigned)_mm256_movemask_epi8(stop);
		if (m != 0)
			return i + (unsigned)__builtin_ctz(m);
	}
	return i;
}

#undef B

#endif

size_t hsm_simd_b64_encode(uint8_t *dst, const uint8_t *p, size_t n, int c62, int c63)
{
#ifdef HSM_AVX2
	if (hsm_simd_active())
		return encode_avx2(dst, p, n, c62, c63);
#else
	(void)dst, (void)p, (void)n, (void)c62, (void)c63;
#endif
	return 0;
}

size_t hsm_simd_b64_decode(uint8_t *dst, const uint8_t *s, size_t n, int c62, int c63, bool *bad)
{
#ifdef HSM_AVX2
	if (hsm_simd_active())
		return decode_avx2(dst, s, n, c62, c63, bad);
#else
	(void)dst, (void)s, (void)n, (void)c62, (void)c63, (void)bad;
#endif
	return 0;
}

size_t hsm_simd_json_plain(const uint8_t *p, size_t n)
{
#ifdef HSM_AVX2
	if (hsm_simd_active())
		return json_plain_avx2(p, n);
#else
	(void)p, (void)n;
#endif
	return 0;
}
