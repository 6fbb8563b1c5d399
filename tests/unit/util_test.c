/*
 * The fixed-buffer string builder: what fits, what is cut, and that the
 * result is always terminated.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

static void test_sb_builds_what_fits(void **state)
{
	(void)state;
	char out[64];
	hsm_sb b;
	hsm_sb_init(&b, out, sizeof(out));
	assert_string_equal(out, "");
	hsm_sb_add(&b, "arn:aws:iam::");
	hsm_sb_add(&b, "111122223333");
	hsm_sb_add(&b, ":user/");
	hsm_sb_addn(&b, "alice-and-more", 5);
	hsm_sb_add(&b, "/");
	hsm_sb_u64(&b, 0);
	hsm_sb_add(&b, "/");
	hsm_sb_u64(&b, UINT64_MAX);
	assert_string_equal(out, "arn:aws:iam::111122223333:user/alice/0/18446744073709551615");
	assert_int_equal(b.len, strlen(out));
	assert_false(b.cut);
	hsm_sb_addn(&b, "", 10); /* nothing to add is not a cut */
	assert_false(b.cut);
}

/* Every capacity gives snprintf's answer, and cut exactly when snprintf would cut. */
static void test_sb_cuts_like_snprintf(void **state)
{
	(void)state;
	for (size_t cap = 1; cap <= 24; cap++) {
		char got[32], want[32];
		memset(got, 'x', sizeof(got));
		hsm_sb b;
		hsm_sb_init(&b, got, cap);
		hsm_sb_add(&b, "10.0.0.1");
		hsm_sb_add(&b, ":");
		hsm_sb_u64(&b, 54321);
		hsm_sb_addn(&b, "abcdef", 3);
		int n = snprintf(want, cap, "%s:%u%.3s", "10.0.0.1", 54321U, "abcdef");
		assert_string_equal(got, want);
		assert_int_equal(b.cut, (size_t)n >= cap);
		assert_int_equal(b.len, strlen(want));
		assert_int_equal(got[cap], 'x'); /* nothing written past the capacity */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sb_builds_what_fits),
	    cmocka_unit_test(test_sb_cuts_like_snprintf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
