#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

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

/* Forcing each test in turn makes the run fail, naming exactly that test. */
static void test_each_forced_failure_is_reported(void **state)
{
	(void)state;
	for (size_t i = 0; i < hsm_selftest_count(); i++) {
		const char *name = hsm_selftest_name(i);
		assert_int_equal(setenv("HSM_SELFTEST_FORCE_FAIL", name, 1), 0);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_selftest_passes),
	    cmocka_unit_test(test_names_are_unique),
	    cmocka_unit_test(test_each_forced_failure_is_reported),
	    cmocka_unit_test(test_unknown_force_name_changes_nothing),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
