/*
 * simd_groups.c - see simd_groups.h.
 */
#include "support/simd_groups.h"

#include "common/simd.h"

static int portable_on(void **state)
{
	(void)state;
	hsm_simd_set(false);
	return hsm_simd_active() ? -1 : 0;
}

static int portable_off(void **state)
{
	(void)state;
	hsm_simd_set(true);
	return 0;
}

int simd_groups_run(const struct CMUnitTest *tests, size_t n)
{
	if (!hsm_simd_active())
		print_message("this CPU has no AVX2: both groups test the portable code\n");
	int failed = _cmocka_run_group_tests("as built", tests, n, NULL, NULL);
	return failed + _cmocka_run_group_tests("portable", tests, n, portable_on, portable_off);
}
