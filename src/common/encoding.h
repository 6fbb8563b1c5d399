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

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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
/*
 * One hex digit of protocol text, in either case (percent-encoding, chunk
 * sizes), as a value 0..15, or -1.  It branches on the byte: never for
 * secrets, which the decoders above take.
 */
static inline int hsm_hex_digit_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20; /* ASCII lower case; no byte that is not a letter becomes a-f */
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Standard base64 with padding. */
hsm_result hsm_b64_encode(hsm_buf *out, const uint8_t *p, size_t n) HSM_MUST_CHECK;
hsm_result hsm_b64_decode(hsm_buf *out, const char *s, size_t n, hsm_err err) HSM_MUST_CHECK;
/* base64url without padding (RFC 7515 section 2). */
hsm_result hsm_b64url_encode(hsm_buf *out, const uint8_t *p, size_t n) HSM_MUST_CHECK;
hsm_result hsm_b64url_decode(hsm_buf *out, const char *s, size_t n, hsm_err err) HSM_MUST_CHECK;

size_t hsm_b64_encoded_len(size_t n);

/*
 * A key's PKCS#11 CKA_ID of its own is kept as an alias of the key:
 * HSM_PKCS11_ID_ALIAS followed by the id's bytes in lowercase hex, 1 to
 * HSM_PKCS11_ID_MAX bytes (so the alias stays within KMS's 256 characters).
 * An id that spells a key id is not one of a key's own: a key without one
 * has its key id as CKA_ID.  The PKCS#11 module makes such an alias for a
 * CKA_ID in a key generation template; certificates imported for the key
 * take the id as their ObjectId.
 */
#define HSM_PKCS11_ID_ALIAS "alias/pkcs11-id/"
#define HSM_PKCS11_ID_MAX 120
/* Why a key refuses a second such alias: the key id, then the alias it has. */
#define HSM_PKCS11_ID_TAKEN_FMT \
	"key %s has a PKCS#11 CKA_ID already (%s): delete that alias, or move it, first"
/* The alias that gives a key the CKA_ID id (n bytes); false when it cannot be one, or out is short. */
bool hsm_pkcs11_id_alias(const void *id, size_t n, char *out, size_t cap);
/* The CKA_ID an alias name gives its key, into id; false (id empty) if it gives none. */
bool hsm_pkcs11_id_of_alias(const char *alias_name, hsm_buf *id);

/*
 * How many of the 8 bytes at p come before the first one that JSON text
 * cannot carry as it is: '"', '\\', a control character, a byte of 128 or
 * more (a UTF-8 sequence, looked at apart), and with del the DEL character
 * too (8: none).  Zero-byte tests on a whole word: the lowest flagged byte
 * of each is exact, a borrow only running upward from a byte itself flagged.
 */
static inline unsigned hsm_json_plain8(const uint8_t *p, bool del)
{
	const uint64_t low = UINT64_C(0x0101010101010101), high = UINT64_C(0x8080808080808080);
	uint64_t x;
	memcpy(&x, p, sizeof(x));
	x = le64toh(x); /* the first byte lowest */
	uint64_t q = x ^ ('"' * low), b = x ^ ('\\' * low);
	uint64_t m = ((q - low) & ~q) | ((b - low) & ~b) | ((x - 0x20 * low) & ~x) | x;
	if (del)
		m |= (x & ~high) + low; /* top bit: a 0x7f (or 0xff) lane, no carry out */
	m &= high;
	return m == 0 ? 8U : (unsigned)__builtin_ctzll(m) / 8U;
}

#endif
