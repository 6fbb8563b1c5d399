/*
 * shamir.h - Shamir's secret sharing over GF(2^8), byte by byte.
 *
 * A secret of L bytes is split into `count` shares of L bytes each; any
 * `threshold` of them give the secret back, fewer give no information about
 * it (A. Shamir, "How to share a secret", CACM 22(11), 1979).  Each byte of
 * the secret is the constant term of its own random polynomial of degree
 * threshold-1 over GF(2^8) with the AES reduction polynomial
 * x^8 + x^4 + x^3 + x + 1 (FIPS 197 section 4.2); share i is the value of
 * every polynomial at x = i, for i = 1..count.
 *
 * Constant time: the field arithmetic uses shifts, xors and masks only -- no
 * lookup table indexed by a secret byte and no branch on secret data -- and
 * inverts by exponentiation (a^254).  Share x-coordinates are public.
 *
 * Ownership: every hsm_secret returned here belongs to the caller, who frees
 * it with hsm_secret_free() (which wipes it).  Intermediate values live in
 * the secure heap and are wiped before returning.
 */
#ifndef HSM_SHAMIR_H
#define HSM_SHAMIR_H

#include <stdbool.h>
#include <stdint.h>

#include "common/result.h"
#include "common/secret.h"

/* Largest number of shares of one split (custodians of one store). */
#define HSM_SHAMIR_MAX_SHARES 16U

/*
 * Checks a threshold/count pair: 2 <= threshold <= count <= 16.  A 1-of-1
 * split (the share *is* the secret) is accepted only when dev is true, for
 * single-operator development stores.  Fails with HSM_ERR_VALIDATION and a
 * message saying which bound was broken.
 */
hsm_result hsm_shamir_check_params(unsigned threshold, unsigned count, bool dev) HSM_MUST_CHECK;

/*
 * Splits secret into count shares.  shares_out must have count entries; on
 * success shares_out[i] is a new secret of the same length as `secret`
 * holding the share whose x-coordinate is i + 1, owned by the caller.  On
 * failure shares_out is left untouched.  Coefficients come from
 * RAND_priv_bytes.
 */
hsm_result hsm_shamir_split(const hsm_secret *secret, unsigned threshold, unsigned count,
                            bool dev, hsm_secret *shares_out[]) HSM_MUST_CHECK;

/*
 * Rebuilds the secret from k shares (1 <= k <= 16): ys[i] is the share whose
 * x-coordinate is xs[i].  All ys must have the same length.  With fewer
 * shares than the split's threshold the result is a random-looking value,
 * not an error: the caller checks it (the keystore against a key check
 * value).  Fails with HSM_ERR_SHARE_INVALID for a zero x or shares of
 * different lengths, HSM_ERR_SHARE_DUPLICATE for an x given twice.  On
 * success *out is a new secret owned by the caller.
 */
hsm_result hsm_shamir_combine(const uint8_t xs[], const hsm_secret *const ys[], unsigned k,
                              hsm_secret **out) HSM_MUST_CHECK;

/* GF(2^8) arithmetic, constant time; exposed for the known-answer tests. */
uint8_t hsm_gf256_mul(uint8_t a, uint8_t b);
/* The multiplicative inverse, a^254; maps 0 to 0. */
uint8_t hsm_gf256_inv(uint8_t a);

#endif
