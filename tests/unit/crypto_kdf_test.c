#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

static void test_sha256(void **state)
{
	(void)state;
	uint8_t out[HSM_SHA256_LEN];
	hsm_buf want = {0};
	hsm_sha256("abc", 3, out); /* FIPS 180-2 B.1 */
	fixture_unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &want);
	assert_memory_equal(out, want.data, 32);
	hsm_sha256(NULL, 0, out);
	fixture_unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &want);
	assert_memory_equal(out, want.data, 32);
	hsm_buf_free(&want);
}

static void check_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                       const char *info, size_t l, const char *okm_hex)
{
	hsm_secret *s = NULL, *okm = NULL;
	hsm_buf want = {0};
	assert_succeeds(hsm_secret_from(ikm, ikm_len, &s));
	assert_succeeds(hsm_hkdf_sha256(s, salt, salt_len, info, l, &okm));
	fixture_unhex(okm_hex, &want);
	assert_int_equal(hsm_secret_len(okm), l);
	assert_memory_equal(hsm_secret_bytes(okm), want.data, l);
	hsm_secret_free(s);
	hsm_secret_free(okm);
	hsm_buf_free(&want);
}

/* RFC 5869 appendix A, test cases 1-3 (SHA-256). */
static void test_hkdf_rfc5869(void **state)
{
	(void)state;
	uint8_t ikm[80], salt[80];
	char info[81];
	memset(ikm, 0x0b, 22);
	for (int i = 0; i < 13; i++)
		salt[i] = (uint8_t)i;
	check_hkdf(ikm, 22, salt, 13, "\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9", 42,
	           "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
	for (int i = 0; i < 80; i++) {
		ikm[i] = (uint8_t)i;
		salt[i] = (uint8_t)(0x60 + i);
		info[i] = (char)(0xb0 + i);
	}
	info[80] = '\0';
	check_hkdf(ikm, 80, salt, 80, info, 82,
	           "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac78272"
	           "71cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f"
	           "1d87");
	memset(ikm, 0x0b, 22);
	check_hkdf(ikm, 22, NULL, 0, "", 42,
	           "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

static void test_hkdf_limits_and_separation(void **state)
{
	(void)state;
	hsm_secret *ikm = NULL, *a = NULL, *b = NULL;
	assert_succeeds(hsm_secret_random(32, &ikm));
	assert_fails_with(hsm_hkdf_sha256(ikm, NULL, 0, "x", 0, &a), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_hkdf_sha256(ikm, NULL, 0, "x", 255 * 32 + 1, &a), HSM_ERR_VALIDATION);
	assert_null(a);
	assert_succeeds(hsm_hkdf_sha256(ikm, NULL, 0, "x", 255 * 32, &a));
	hsm_secret_free(a);
	/* Distinct labels give unrelated keys. */
	assert_succeeds(hsm_hkdf_sha256(ikm, NULL, 0, "hsmd key wrap", 32, &a));
	assert_succeeds(hsm_hkdf_sha256(ikm, NULL, 0, "hsmd audit", 32, &b));
	assert_memory_not_equal(hsm_secret_bytes(a), hsm_secret_bytes(b), 32);
	hsm_secret_free(a);
	hsm_secret_free(b);
	hsm_secret_free(ikm);
}

static void test_random(void **state)
{
	(void)state;
	uint8_t a[32], b[32];
	assert_succeeds(hsm_random_bytes(NULL, 0));
	assert_succeeds(hsm_random_bytes(a, sizeof(a)));
	assert_succeeds(hsm_random_bytes(b, sizeof(b)));
	assert_memory_not_equal(a, b, sizeof(a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sha256),
	    cmocka_unit_test(test_hkdf_rfc5869),
	    cmocka_unit_test(test_hkdf_limits_and_separation),
	    cmocka_unit_test(test_random),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
