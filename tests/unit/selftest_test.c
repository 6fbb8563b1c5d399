#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

/*
 * This program is linked with --wrap=malloc and --wrap=calloc (tests/CMakeLists.txt):
 * hsmd's own allocations reach these two, OpenSSL's do not.  refuse_at = n refuses
 * the n-th allocation after the count was reset, as malloc does when memory runs out.
 */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);

static size_t seen, refuse_at;
static bool refused;

static bool refuse_this(void)
{
	if (++seen != refuse_at)
		return false;
	refused = true;
	errno = ENOMEM;
	return true;
}

void *__wrap_malloc(size_t n) { return refuse_this() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { return refuse_this() ? NULL : __real_calloc(n, size); }

static void test_selftest_passes(void **state)
{
	(void)state;
	unsetenv("HSM_SELFTEST_FORCE_FAIL");
	assert_succeeds(hsm_selftest_run());
}

static void test_names_are_unique(void **state)
{
	(void)state;
	size_t n = hsm_selftest_count();
	assert_true(n >= 20);
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			assert_string_not_equal(hsm_selftest_name(i), hsm_selftest_name(j));
}

/*
 * Forcing each test in turn makes the run fail, naming exactly that test, even
 * with a stale ENOMEM left in errno by something before it.
 */
static void test_each_forced_failure_is_reported(void **state)
{
	(void)state;
	for (size_t i = 0; i < hsm_selftest_count(); i++) {
		const char *name = hsm_selftest_name(i);
		assert_int_equal(setenv("HSM_SELFTEST_FORCE_FAIL", name, 1), 0);
		errno = ENOMEM;
		hsm_result r = hsm_selftest_run();
		assert_fails_with(r, HSM_ERR_CRYPTO);
		char want[128];
		snprintf(want, sizeof(want), "'%s'", name);
		if (strstr(hsm_last_message(), want) == NULL)
			fail_msg("forcing %s reported: %s", name, hsm_last_message());
	}
	unsetenv("HSM_SELFTEST_FORCE_FAIL");
	assert_succeeds(hsm_selftest_run());
}

static void test_unknown_force_name_changes_nothing(void **state)
{
	(void)state;
	assert_int_equal(setenv("HSM_SELFTEST_FORCE_FAIL", "no-such-test", 1), 0);
	assert_succeeds(hsm_selftest_run());
	unsetenv("HSM_SELFTEST_FORCE_FAIL");
}

/*
 * Every allocation of hsmd's own the self-test makes, refused in turn: the run
 * fails, saying that memory ran out or naming the test that failed, or passes if
 * the allocation had a way round; it never aborts.  (The vectors are constants,
 * so decoding one can fail only for want of memory.)
 */
static void test_a_refused_allocation_fails_the_run(void **state)
{
	(void)state;
	unsetenv("HSM_SELFTEST_FORCE_FAIL");
	seen = 0;
	refuse_at = 0;
	assert_succeeds(hsm_selftest_run());
	size_t n = seen;
	assert_true(n >= 10); /* the vectors alone are decoded into buffers of hsmd's own */
	size_t failed = 0;
	for (size_t at = 1; at <= n; at++) {
		seen = 0;
		refused = false;
		refuse_at = at;
		hsm_result r = hsm_selftest_run();
		refuse_at = 0;
		assert_true(refused);
		if (hsm_ok(r))
			continue;
		failed++;
		if (r.err != HSM_ERR_NOMEM &&
		    (r.err != HSM_ERR_CRYPTO || strstr(hsm_last_message(), "power-on self-test '") == NULL))
			fail_msg("allocation %zu of %zu refused: %s", at, n, hsm_last_message());
	}
	assert_true(failed > 0);
	assert_succeeds(hsm_selftest_run());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_selftest_passes),
	    cmocka_unit_test(test_names_are_unique),
	    cmocka_unit_test(test_each_forced_failure_is_reported),
	    cmocka_unit_test(test_unknown_force_name_changes_nothing),
	    cmocka_unit_test(test_a_refused_allocation_fails_the_run),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
