#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

static void test_field_lengths(void **state)
{
	(void)state;
	assert_int_equal(hsm_ec_field_len(HSM_SPEC_ECC_NIST_P256), 32);
	assert_int_equal(hsm_ec_field_len(HSM_SPEC_ECC_NIST_P384), 48);
	assert_int_equal(hsm_ec_field_len(HSM_SPEC_ECC_NIST_P521), 66);
	assert_int_equal(hsm_ec_field_len(HSM_SPEC_ECC_SECG_P256K1), 32);
	assert_int_equal(hsm_ec_field_len(HSM_SPEC_ECC_NIST_EDWARDS25519), 0);
	assert_int_equal(hsm_ec_field_len(HSM_SPEC_RSA_2048), 0);
}

/* Real signatures on every curve: DER -> P1363 -> DER is the identity, and both verify. */
static void test_round_trip_real_signatures(void **state)
{
	(void)state;
	static const hsm_key_spec specs[] = {HSM_SPEC_ECC_NIST_P256, HSM_SPEC_ECC_NIST_P384,
	                                     HSM_SPEC_ECC_NIST_P521, HSM_SPEC_ECC_SECG_P256K1};
	static const hsm_sign_alg algs[] = {HSM_SIGN_ECDSA_SHA_256, HSM_SIGN_ECDSA_SHA_384,
	                                    HSM_SIGN_ECDSA_SHA_512, HSM_SIGN_ECDSA_SHA_256};
	for (size_t i = 0; i < 4; i++) {
		const hsm_material *m = fixture_key(specs[i]);
		size_t field = hsm_ec_field_len(specs[i]);
		for (int round = 0; round < 20; round++) {
			uint8_t msg[1] = {(uint8_t)round};
			hsm_buf der = {0}, p1363 = {0}, back = {0};
			assert_succeeds(hsm_sign(m, algs[i], HSM_MSG_RAW, msg, 1, &der));
			assert_succeeds(hsm_ecdsa_der_to_p1363(der.data, der.len, field, &p1363));
			assert_int_equal(p1363.len, 2 * field);
			assert_succeeds(hsm_ecdsa_p1363_to_der(p1363.data, p1363.len, field, &back));
			assert_int_equal(back.len, der.len);
			assert_memory_equal(back.data, der.data, der.len);
			assert_succeeds(hsm_verify(m, algs[i], HSM_MSG_RAW, msg, 1, back.data, back.len));
			hsm_buf_free(&der);
			hsm_buf_free(&p1363);
			hsm_buf_free(&back);
		}
	}
}

/* Hand-built P1363 values: leading zeros stripped, high bit padded, long form for P-521. */
static void test_p1363_encoding(void **state)
{
	(void)state;
	uint8_t sig[132];
	hsm_buf der = {0}, back = {0};
	memset(sig, 0, sizeof(sig));
	sig[31] = 0x01;        /* r = 1 */
	sig[32] = 0x80;        /* s = 0x80 00..00, needs a 0x00 pad */
	assert_succeeds(hsm_ecdsa_p1363_to_der(sig, 64, 32, &der));
	static const uint8_t head[] = {0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80};
	assert_int_equal(der.len, 2 + 3 + 2 + 33);
	assert_memory_equal(der.data, head, sizeof(head));
	assert_succeeds(hsm_ecdsa_der_to_p1363(der.data, der.len, 32, &back));
	assert_memory_equal(back.data, sig, 64);

	memset(sig, 0xff, sizeof(sig));
	sig[0] = sig[66] = 0x01; /* P-521 values are 521 bits */
	hsm_buf_clear(&der);
	assert_succeeds(hsm_ecdsa_p1363_to_der(sig, 132, 66, &der));
	assert_int_equal(der.data[0], 0x30);
	assert_int_equal(der.data[1], 0x81); /* 136 content bytes: long form */
	assert_int_equal(der.data[2], 136);
	hsm_buf_clear(&back);
	assert_succeeds(hsm_ecdsa_der_to_p1363(der.data, der.len, 66, &back));
	assert_memory_equal(back.data, sig, 132);
	hsm_buf_free(&der);
	hsm_buf_free(&back);
}

static void test_p1363_rejects(void **state)
{
	(void)state;
	uint8_t sig[132];
	hsm_buf der = {0};
	memset(sig, 0x11, sizeof(sig));
	size_t bad_len[] = {0, 1, 63, 65, 96, 128};
	for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++)
		assert_fails_with(hsm_ecdsa_p1363_to_der(sig, bad_len[i], 32, &der),
		                  HSM_ERR_INVALID_SIGNATURE);
	assert_fails_with(hsm_ecdsa_p1363_to_der(NULL, 0, 32, &der), HSM_ERR_INVALID_SIGNATURE);
	memset(sig, 0, 32); /* r = 0 */
	assert_fails_with(hsm_ecdsa_p1363_to_der(sig, 64, 32, &der), HSM_ERR_INVALID_SIGNATURE);
	memset(sig, 0x11, 32);
	memset(sig + 32, 0, 32); /* s = 0 */
	assert_fails_with(hsm_ecdsa_p1363_to_der(sig, 64, 32, &der), HSM_ERR_INVALID_SIGNATURE);
	assert_int_equal(der.len, 0);
	hsm_buf_free(&der);
}

typedef struct bad_der {
	const char *why;
	const char *hex;
} bad_der;

/* Each is a near miss of 3006 020101 020102 (r = 1, s = 2), with 4-byte fields. */
static const bad_der bad_ders[] = {
    {"empty", ""},
    {"wrong outer tag", "3106020101020102"},
    {"outer length too long", "3007020101020102"},
    {"outer length too short", "3005020101020102"},
    {"trailing byte", "300602010102010200"},
    {"non-minimal outer length", "308106020101020102"},
    {"indefinite outer length", "3080020101020102" "0000"},
    {"two-byte length form", "30820006020101020102"},
    {"wrong integer tag", "3006030101020102"},
    {"negative r", "3006020181020102"},
    {"non-minimal r", "300702020001020102"},
    {"zero r", "3006020100020102"},
    {"empty r", "30050200020102"},
    {"missing s", "3003020101"},
    {"third integer", "3009020101020102020103"},
    {"r longer than the field", "300b0206010203040506020102"},
    {"s padded beyond the field", "300b020101020600ffffffffff"},
    {"non-minimal integer length", "300702810101020102"},
    {"truncated", "30060201010201"},
};

static void test_strict_der(void **state)
{
	(void)state;
	hsm_buf der = {0}, out = {0};
	fixture_unhex("3006020101020102", &der);
	assert_succeeds(hsm_ecdsa_der_to_p1363(der.data, der.len, 4, &out));
	static const uint8_t want[] = {0, 0, 0, 1, 0, 0, 0, 2};
	assert_memory_equal(out.data, want, 8);
	fixture_unhex("300a02050080000000020102", &der); /* r = 0x80000000 fills 4 bytes */
	hsm_buf_clear(&out);
	assert_succeeds(hsm_ecdsa_der_to_p1363(der.data, der.len, 4, &out));
	for (size_t i = 0; i < sizeof(bad_ders) / sizeof(bad_ders[0]); i++) {
		fixture_unhex(bad_ders[i].hex, &der);
		hsm_buf_clear(&out);
		hsm_result r = hsm_ecdsa_der_to_p1363(der.data, der.len, 4, &out);
		if (r.err != HSM_ERR_INVALID_SIGNATURE)
			fail_msg("accepted DER with %s", bad_ders[i].why);
		assert_int_equal(out.len, 0);
	}
	hsm_buf_free(&der);
	hsm_buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_field_lengths),
	    cmocka_unit_test(test_round_trip_real_signatures),
	    cmocka_unit_test(test_p1363_encoding),
	    cmocka_unit_test(test_p1363_rejects),
	    cmocka_unit_test(test_strict_der),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
