/*
 * sigv4_internal.h - pieces shared by the SigV4 verifier and signer.
 *
 * Not part of the public interface: only src/auth/sigv4*.c include it.
 */
#ifndef HSM_AUTH_SIGV4_INTERNAL_H
#define HSM_AUTH_SIGV4_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "auth/sigv4.h"

#define HSM_SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define HSM_SIGV4_TERMINATOR "aws4_request"

/* ASCII-only case folding: header names and hex are ASCII, and locales must not matter. */
static inline char hsm_sigv4_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* True when a (NUL-terminated) equals b[0..blen) ignoring ASCII case. */
bool hsm_sigv4_name_eq(const char *a, const char *b, size_t blen);

/*
 * Number of headers named `name` (case-insensitive); *first receives the
 * value of the first one (or NULL).
 */
size_t hsm_sigv4_header_find(const hsm_sigv4_request *req, const char *name, const char **first);

/* Refuses requests outside the HSM_SIGV4_MAX_* bounds (HSM_ERR_VALIDATION). */
hsm_result hsm_sigv4_check_bounds(const hsm_sigv4_request *req) HSM_MUST_CHECK;

/* True when `name` is one of the entries of the ';'-separated list. */
bool hsm_sigv4_list_has(const char *list, const char *name);

/*
 * Appends the canonical request to out.  payload_hex is the lowercase hex
 * SHA-256 of the body (64 characters).
 */
hsm_result hsm_sigv4_build_canonical(const hsm_sigv4_request *req, const char *signed_headers,
                                     const char *payload_hex, hsm_buf *out) HSM_MUST_CHECK;

/* Lowercase hex SHA-256 of p[0..n) into out (65 bytes with the NUL). */
hsm_result hsm_sigv4_sha256_hex(const void *p, size_t n,
                                char out[HSM_SIGV4_HEX_HASH_LEN + 1]) HSM_MUST_CHECK;
/* HMAC-SHA256. */
hsm_result hsm_sigv4_hmac(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                          uint8_t out[HSM_SIGV4_SIG_LEN]) HSM_MUST_CHECK;

/*
 * An HMAC-SHA256 context keyed with a signing key, for computing many
 * signatures with one key without re-deriving the HMAC pads each time.
 * Free with EVP_MAC_CTX_free.
 */
hsm_result hsm_sigv4_mac_new(const hsm_secret *key, EVP_MAC_CTX **out) HSM_MUST_CHECK;

/* Bounded by the lengths parse and sign enforce on each field. */
#define HSM_SIGV4_STS_MAX                                                                  \
	(sizeof(HSM_SIGV4_ALGORITHM) + HSM_SIGV4_AMZ_DATE_LEN + HSM_SIGV4_DATE_LEN +           \
	 HSM_SIGV4_REGION_MAX + HSM_SIGV4_SERVICE_MAX + sizeof(HSM_SIGV4_TERMINATOR) +         \
	 HSM_SIGV4_HEX_HASH_LEN + 16)

/* The string to sign for a canonical request, from amz_date and the scope, into sts[0..*len). */
hsm_result hsm_sigv4_string_to_sign(const hsm_buf *canonical, const char *amz_date,
                                    const char *date, const char *region, const char *service,
                                    char sts[HSM_SIGV4_STS_MAX], size_t *len) HSM_MUST_CHECK;

/*
 * Computes the signature for a canonical request: builds the string to sign
 * and MACs it with mac (from hsm_sigv4_mac_new).
 */
hsm_result hsm_sigv4_compute(const hsm_buf *canonical, const char *amz_date, const char *date,
                             const char *region, const char *service, EVP_MAC_CTX *mac,
                             uint8_t out[HSM_SIGV4_SIG_LEN]) HSM_MUST_CHECK;

/* "YYYYMMDDTHHMMSSZ" <-> epoch seconds.  Parsing is strict (real calendar dates only). */
bool hsm_sigv4_parse_amz_date(const char *s, int64_t *t);
void hsm_sigv4_format_amz_date(int64_t t, char out[HSM_SIGV4_AMZ_DATE_LEN + 1]);
/* RFC 7231 IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT"; "+0000"/"-0000" accepted for "GMT". */
bool hsm_sigv4_parse_http_date(const char *s, int64_t *t);

#endif
