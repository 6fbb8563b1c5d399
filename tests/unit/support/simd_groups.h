/*
 * simd_groups.h - a unit test's group run twice: as hsmd runs (the AVX2
 * steps of common/simd.c where the CPU has them), then with the portable
 * code alone, which CPUs without AVX2 run.
 */
#ifndef HSM_TEST_SIMD_GROUPS_H
#define HSM_TEST_SIMD_GROUPS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

/* Runs tests[0..n) both ways; the number of failures, as cmocka_run_group_tests. */
int simd_groups_run(const struct CMUnitTest *tests, size_t n);

#define SIMD_GROUPS_RUN(tests) simd_groups_run((tests), sizeof(tests) / sizeof((tests)[0]))

#endif
