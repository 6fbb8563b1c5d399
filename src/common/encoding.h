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

#include <stdbool.h>
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
/* The alias that gives a key the CKA_ID id (n bytes); false when it cannot be one, or out is short. */
bool hsm_pkcs11_id_alias(const void *id, size_t n, char *out, size_t cap);
/* The CKA_ID an alias name gives its key, into id; false (id empty) if it gives none. */
bool hsm_pkcs11_id_of_alias(const char *alias_name, hsm_buf *id);

#endif
