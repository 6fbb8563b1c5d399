#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "common/encoding.h"

static void roundtrip(const char *in, const char *b64, bool url)
{
	hsm_buf enc = {0}, dec = {0};
	if (url)
		assert_true(hsm_ok(hsm_b64url_encode(&enc, (const uint8_t *)in, strlen(in))));
	else
		assert_true(hsm_ok(hsm_b64_encode(&enc, (const uint8_t *)in, strlen(in))));
	assert_int_equal(enc.len, strlen(b64));
	assert_memory_equal(enc.data, b64, enc.len);
	if (url)
		assert_true(hsm_ok(hsm_b64url_decode(&dec, b64, strlen(b64), HSM_ERR_VALIDATION)));
	else
		assert_true(hsm_ok(hsm_b64_decode(&dec, b64, strlen(b64), HSM_ERR_VALIDATION)));
	assert_int_equal(dec.len, strlen(in));
	if (dec.len)
		assert_memory_equal(dec.data, in, dec.len);
	hsm_buf_free(&enc);
	hsm_buf_free(&dec);
}

/* RFC 4648 section 10 test vectors. */
static void test_b64_rfc4648(void **state)
{
	(void)state;
	roundtrip("", "", false);
	roundtrip("f", "Zg==", false);
	roundtrip("fo", "Zm8=", false);
	roundtrip("foo", "Zm9v", false);
	roundtrip("foob", "Zm9vYg==", false);
	roundtrip("fooba", "Zm9vYmE=", false);
	roundtrip("foobar", "Zm9vYmFy", false);
	roundtrip("f", "Zg", true);
	roundtrip("\xfb\xff", "-_8", true);
	roundtrip("\xfb\xff", "+/8=", false);
}

static void test_b64_rejects(void **state)
{
	(void)state;
	const char *bad[] = {"Zg=", "Zg", "Z===", "Zh==", "Zm9v\n", "Zm 9", "Zm9v====", "Zg=a", "-_8=", "Zm9\xc3"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hsm_buf dec = {0};
		hsm_result r = hsm_b64_decode(&dec, bad[i], strlen(bad[i]), HSM_ERR_SERIALIZATION);
		assert_int_equal(r.err, HSM_ERR_SERIALIZATION);
		assert_int_equal(dec.len, 0);
		hsm_buf_free(&dec);
	}
	hsm_buf dec = {0};
	assert_int_equal(hsm_b64url_decode(&dec, "Zh", 2, HSM_ERR_VALIDATION).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_b64url_decode(&dec, "+/8", 3, HSM_ERR_VALIDATION).err, HSM_ERR_VALIDATION);
	hsm_buf_free(&dec);
}

static void test_b64_all_bytes(void **state)
{
	(void)state;
	uint8_t all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	for (size_t n = 0; n <= sizeof(all); n++) {
		hsm_buf enc = {0}, dec = {0};
		assert_true(hsm_ok(hsm_b64_encode(&enc, all, n)));
		assert_true(hsm_ok(hsm_b64_decode(&dec, (char *)enc.data, enc.len, HSM_ERR_VALIDATION)));
		assert_int_equal(dec.len, n);
		if (n)
			assert_memory_equal(dec.data, all, n);
		hsm_buf_free(&enc);
		hsm_buf_free(&dec);
	}
}

static void test_hex(void **state)
{
	(void)state;
	const uint8_t in[] = {0x00, 0x1f, 0xa0, 0xff};
	hsm_buf enc = {0}, dec = {0};
	assert_true(hsm_ok(hsm_hex_encode(&enc, in, sizeof(in))));
	assert_int_equal(enc.len, 8);
	assert_memory_equal(enc.data, "001fa0ff", 8);
	assert_true(hsm_ok(hsm_hex_decode(&dec, "001fa0ff", 8, HSM_ERR_VALIDATION)));
	assert_memory_equal(dec.data, in, sizeof(in));
	assert_int_equal(hsm_hex_decode(&dec, "001FA0FF", 8, HSM_ERR_VALIDATION).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_hex_decode(&dec, "0g", 2, HSM_ERR_VALIDATION).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_hex_decode(&dec, "001", 3, HSM_ERR_VALIDATION).err, HSM_ERR_VALIDATION);
	assert_int_equal(dec.len, 4);
	uint8_t fixed[2];
	assert_true(hsm_ok(hsm_hex_decode_exact(fixed, 2, "beef", 4, HSM_ERR_VALIDATION)));
	assert_int_equal(fixed[0], 0xbe);
	assert_int_equal(hsm_hex_decode_exact(fixed, 2, "bee", 3, HSM_ERR_VALIDATION).err, HSM_ERR_VALIDATION);
	hsm_buf_free(&enc);
	hsm_buf_free(&dec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64_rfc4648),
	    cmocka_unit_test(test_b64_rejects),
	    cmocka_unit_test(test_b64_all_bytes),
	    cmocka_unit_test(test_hex),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
