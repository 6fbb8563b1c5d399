#include "crypto/shamir.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

/*
 * Field arithmetic.  Every operation runs the same instructions whatever the
 * operands: bits are selected with masks (0 or 0xff) instead of branches, and
 * nothing indexes memory with a secret value.
 */
uint8_t hsm_gf256_mul(uint8_t a, uint8_t b)
{
	unsigned x = a, y = b, p = 0;
	for (int i = 0; i < 8; i++) {
		p ^= x & (0U - (y & 1U));
		y >>= 1;
		/* Multiply x by the polynomial "x": shift, and reduce by 0x11b when bit 7 fell out. */
		unsigned carry = 0U - ((x >> 7) & 1U);
		x = ((x << 1) ^ (carry & 0x1bU)) & 0xffU;
	}
	return (uint8_t)p;
}

uint8_t hsm_gf256_inv(uint8_t a)
{
	/* The multiplicative group has order 255, so a^254 = a^-1 (and 0^254 = 0). */
	uint8_t r = 1, sq = a;
	for (int i = 1; i < 8; i++) {
		sq = hsm_gf256_mul(sq, sq); /* a^(2^i) */
		r = hsm_gf256_mul(r, sq);   /* accumulates a^(2 + 4 + ... + 128) = a^254 */
	}
	return r;
}

hsm_result hsm_shamir_check_params(unsigned threshold, unsigned count, bool dev)
{
	HSM_ENSURE(count >= 1 && count <= HSM_SHAMIR_MAX_SHARES, HSM_ERR_VALIDATION,
	           "the number of shares must be from 1 to %u (got %u)", HSM_SHAMIR_MAX_SHARES, count);
	HSM_ENSURE(threshold >= 1 && threshold <= count, HSM_ERR_VALIDATION,
	           "the threshold must be from 1 to the number of shares, %u (got %u)", count,
	           threshold);
	if (threshold == 1) {
		/* With threshold 1 every share is the secret itself: acceptable only for a lone developer. */
		HSM_ENSURE(dev && count == 1, HSM_ERR_VALIDATION,
		           "a threshold of 1 hands the whole master key to each custodian; it is allowed only "
		           "as a 1-of-1 split in dev mode (use a threshold of at least 2)");
	}
	return HSM_SUCCESS;
}

/*
 * coef holds `t` rows of `len` bytes: row 0 is the secret, rows 1..t-1 the
 * random coefficients.  Writes the value of every byte's polynomial at x.
 */
static void eval_at(const uint8_t *coef, unsigned t, size_t len, uint8_t x, uint8_t *y)
{
	for (size_t j = 0; j < len; j++) {
		/* Horner's rule from the highest coefficient down. */
		uint8_t acc = coef[(size_t)(t - 1) * len + j];
		for (unsigned d = t - 1; d > 0; d--)
			acc = (uint8_t)(hsm_gf256_mul(acc, x) ^ coef[(size_t)(d - 1) * len + j]);
		y[j] = acc;
	}
}

hsm_result hsm_shamir_split(const hsm_secret *secret, unsigned threshold, unsigned count,
                            bool dev, hsm_secret *shares_out[])
{
	HSM_ASSERT(secret != NULL && shares_out != NULL);
	HSM_GUARD(hsm_shamir_check_params(threshold, count, dev));
	hsm_result res = HSM_SUCCESS;
	size_t len = hsm_secret_len(secret);
	hsm_secret *coef = NULL;
	hsm_secret *shares[HSM_SHAMIR_MAX_SHARES] = {0};
	/* Keeps len * threshold within what hsm_secret_new and RAND_priv_bytes accept. */
	HSM_CHECK(len < ((size_t)1 << 20), HSM_ERR_VALIDATION, "secret too long to split");

	HSM_TRY(hsm_secret_new(len * threshold, &coef));
	uint8_t *c = hsm_secret_bytes(coef);
	memcpy(c, hsm_secret_bytes(secret), len);
	if (threshold > 1)
		HSM_CHECK(RAND_priv_bytes(c + len, (int)(len * (threshold - 1))) == 1, HSM_ERR_CRYPTO,
		          "random generator failed");
	for (unsigned i = 0; i < count; i++) {
		HSM_TRY(hsm_secret_new(len, &shares[i]));
		eval_at(c, threshold, len, (uint8_t)(i + 1), hsm_secret_bytes(shares[i]));
	}
	memcpy(shares_out, shares, count * sizeof(shares[0]));
	memset(shares, 0, sizeof(shares));
out:
	for (unsigned i = 0; i < HSM_SHAMIR_MAX_SHARES; i++)
		hsm_secret_free(shares[i]);
	hsm_secret_free(coef);
	return res;
}

/*
 * The Lagrange basis polynomial of point i evaluated at 0:
 *   l_i(0) = prod_{m != i} x_m / (x_m - x_i),
 * where subtraction in GF(2^8) is xor.  Depends only on the public xs.
 */
static uint8_t lagrange_at_zero(const uint8_t xs[], unsigned k, unsigned i)
{
	uint8_t num = 1, den = 1;
	for (unsigned m = 0; m < k; m++) {
		if (m == i)
			continue;
		num = hsm_gf256_mul(num, xs[m]);
		den = hsm_gf256_mul(den, (uint8_t)(xs[m] ^ xs[i]));
	}
	return hsm_gf256_mul(num, hsm_gf256_inv(den));
}

static hsm_result check_points(const uint8_t xs[], const hsm_secret *const ys[], unsigned k)
{
	HSM_ENSURE(k >= 1 && k <= HSM_SHAMIR_MAX_SHARES, HSM_ERR_SHARE_INVALID,
	           "between 1 and %u shares are needed (got %u)", HSM_SHAMIR_MAX_SHARES, k);
	HSM_ASSERT(ys[0] != NULL);
	size_t len = hsm_secret_len(ys[0]);
	for (unsigned i = 0; i < k; i++) {
		HSM_ASSERT(ys[i] != NULL);
		/* x = 0 would be the secret itself: no split produces such a share. */
		HSM_ENSURE(xs[i] != 0, HSM_ERR_SHARE_INVALID, "share index 0 is not valid");
		HSM_ENSURE(hsm_secret_len(ys[i]) == len, HSM_ERR_SHARE_INVALID,
		           "share %u has a different length from the others", (unsigned)xs[i]);
		for (unsigned m = 0; m < i; m++)
			HSM_ENSURE(xs[m] != xs[i], HSM_ERR_SHARE_DUPLICATE, "share %u was given twice",
			           (unsigned)xs[i]);
	}
	return HSM_SUCCESS;
}

hsm_result hsm_shamir_combine(const uint8_t xs[], const hsm_secret *const ys[], unsigned k,
                              hsm_secret **out)
{
	HSM_ASSERT(xs != NULL && ys != NULL && out != NULL);
	HSM_GUARD(check_points(xs, ys, k));

	uint8_t basis[HSM_SHAMIR_MAX_SHARES];
	for (unsigned i = 0; i < k; i++)
		basis[i] = lagrange_at_zero(xs, k, i);

	size_t len = hsm_secret_len(ys[0]);
	hsm_secret *s;
	HSM_GUARD(hsm_secret_new(len, &s));
	uint8_t *dst = hsm_secret_bytes(s);
	for (size_t j = 0; j < len; j++) {
		uint8_t acc = 0;
		for (unsigned i = 0; i < k; i++)
			acc ^= hsm_gf256_mul(hsm_secret_bytes(ys[i])[j], basis[i]);
		dst[j] = acc;
	}
	OPENSSL_cleanse(basis, sizeof(basis));
	*out = s;
	return HSM_SUCCESS;
}
