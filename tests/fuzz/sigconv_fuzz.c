/*
 * sigconv_fuzz.c - ECDSA signature encodings, DER <-> IEEE P1363
 * (hsm_ecdsa_der_to_p1363, hsm_ecdsa_p1363_to_der in crypto/crypto.h).
 *
 * Input: one byte choosing the field length (32, 48 or 66 bytes: P-256,
 * P-384, P-521), then the signature bytes, tried as DER and as P1363.
 *
 * Properties: failures are KMSInvalidSignatureException and append
 * nothing; DER input is strict, so an accepted DER signature converts to
 * P1363 and back to exactly the same bytes; an accepted P1363 signature
 * converts to DER and back to itself.
 */
#include "fuzz.h"

#include "crypto/crypto.h"

static const size_t field_lens[] = {32, 48, 66};

static void check_der(const uint8_t *p, size_t n, size_t fl)
{
	hsm_buf a = {0}, b = {0};
	FUZZ_ASSERT(hsm_ok(hsm_buf_put_u8(&a, 0xAA)));
	hsm_result r = hsm_ecdsa_der_to_p1363(p, n, fl, &a);
	if (hsm_failed(r)) {
		FUZZ_ASSERT(r.err == HSM_ERR_INVALID_SIGNATURE);
		FUZZ_ASSERT(a.len == 1);
	} else {
		FUZZ_ASSERT(a.len == 1 + 2 * fl);
		FUZZ_ASSERT(hsm_ok(hsm_ecdsa_p1363_to_der(a.data + 1, 2 * fl, fl, &b)));
		FUZZ_ASSERT(b.len == n && memcmp(b.data, p, n) == 0);
	}
	hsm_buf_free(&a);
	hsm_buf_free(&b);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

static void check_p1363(const uint8_t *p, size_t n, size_t fl)
{
	hsm_buf a = {0}, b = {0};
	hsm_result r = hsm_ecdsa_p1363_to_der(p, n, fl, &a);
	if (hsm_failed(r)) {
		FUZZ_ASSERT(r.err == HSM_ERR_INVALID_SIGNATURE);
		FUZZ_ASSERT(a.len == 0);
		/* Only a wrong length or a zero half is refused. */
		FUZZ_ASSERT(n != 2 * fl || all_zero(p, fl) || all_zero(p + fl, fl));
	} else {
		FUZZ_ASSERT(n == 2 * fl);
		FUZZ_ASSERT(hsm_ok(hsm_ecdsa_der_to_p1363(a.data, a.len, fl, &b)));
		FUZZ_ASSERT(b.len == n && memcmp(b.data, p, n) == 0);
	}
	hsm_buf_free(&a);
	hsm_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	size_t fl = field_lens[fuzz_u8(&in) % 3];
	check_der(in.p, in.n, fl);
	check_p1363(in.p, in.n, fl);
	return 0;
}
