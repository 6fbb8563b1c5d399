#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "common/buf.h"
#include "common/secret.h"

static void test_put_and_read_back(void **state)
{
	(void)state;
	hsm_buf b = {0};
	assert_true(hsm_ok(hsm_buf_put_u8(&b, 0x01)));
	assert_true(hsm_ok(hsm_buf_put_u16(&b, 0x0203)));
	assert_true(hsm_ok(hsm_buf_put_u32(&b, 0x04050607)));
	assert_true(hsm_ok(hsm_buf_put_u64(&b, 0x08090a0b0c0d0e0fULL)));
	assert_true(hsm_ok(hsm_buf_put_lp(&b, "abc", 3)));
	assert_true(hsm_ok(hsm_buf_printf(&b, "%d-%s", 42, "x")));

	hsm_cursor c;
	hsm_cursor_init(&c, b.data, b.len);
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	const uint8_t *p;
	size_t n;
	assert_true(hsm_ok(hsm_cursor_get_u8(&c, &u8, HSM_ERR_VALIDATION)));
	assert_true(hsm_ok(hsm_cursor_get_u16(&c, &u16, HSM_ERR_VALIDATION)));
	assert_true(hsm_ok(hsm_cursor_get_u32(&c, &u32, HSM_ERR_VALIDATION)));
	assert_true(hsm_ok(hsm_cursor_get_u64(&c, &u64, HSM_ERR_VALIDATION)));
	assert_int_equal(u8, 1);
	assert_int_equal(u16, 0x0203);
	assert_int_equal(u32, 0x04050607);
	assert_true(u64 == 0x08090a0b0c0d0e0fULL);
	assert_true(hsm_ok(hsm_cursor_get_lp(&c, 16, &p, &n, HSM_ERR_VALIDATION)));
	assert_int_equal(n, 3);
	assert_memory_equal(p, "abc", 3);
	assert_true(hsm_ok(hsm_cursor_get_bytes(&c, 4, &p, HSM_ERR_VALIDATION)));
	assert_memory_equal(p, "42-x", 4);
	assert_true(hsm_ok(hsm_cursor_expect_end(&c, HSM_ERR_VALIDATION)));
	/* Reading past the end fails with the caller's code and does not move. */
	assert_int_equal(hsm_cursor_get_u8(&c, &u8, HSM_ERR_INVALID_CIPHERTEXT).err, HSM_ERR_INVALID_CIPHERTEXT);
	assert_int_equal(hsm_cursor_remaining(&c), 0);
	hsm_buf_free(&b);
}

static void test_lp_limit_and_truncation(void **state)
{
	(void)state;
	hsm_buf b = {0};
	assert_true(hsm_ok(hsm_buf_put_lp(&b, "abcdef", 6)));
	hsm_cursor c;
	const uint8_t *p;
	size_t n;
	hsm_cursor_init(&c, b.data, b.len);
	assert_int_equal(hsm_cursor_get_lp(&c, 5, &p, &n, HSM_ERR_VALIDATION).err, HSM_ERR_VALIDATION);
	hsm_cursor_init(&c, b.data, b.len - 1);
	assert_int_equal(hsm_cursor_get_lp(&c, 16, &p, &n, HSM_ERR_VALIDATION).err, HSM_ERR_VALIDATION);
	hsm_buf_free(&b);
}

static void test_secure_buffer_grows(void **state)
{
	(void)state;
	hsm_buf b;
	hsm_buf_init_secure(&b);
	for (int i = 0; i < 1000; i++)
		assert_true(hsm_ok(hsm_buf_put_u32(&b, (uint32_t)i)));
	assert_int_equal(b.len, 4000);
	assert_true(hsm_ok(hsm_buf_terminate(&b)));
	hsm_buf_free(&b);
	assert_null(b.data);
	assert_true(b.secure);
}

static void test_secret(void **state)
{
	(void)state;
	hsm_secret *s = NULL, *d = NULL;
	assert_true(hsm_ok(hsm_secret_random(32, &s)));
	assert_int_equal(hsm_secret_len(s), 32);
	assert_true(hsm_ok(hsm_secret_dup(s, &d)));
	assert_memory_equal(hsm_secret_bytes(s), hsm_secret_bytes(d), 32);
	hsm_secret_free(s);
	hsm_secret_free(d);
	hsm_secret_free(NULL);
}

static int setup(void **state)
{
	(void)state;
	return hsm_ok(hsm_secure_process_init(1 << 20)) ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_put_and_read_back),
	    cmocka_unit_test(test_lp_limit_and_truncation),
	    cmocka_unit_test(test_secure_buffer_grows),
	    cmocka_unit_test(test_secret),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
