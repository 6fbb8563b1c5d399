/*
 * The token bucket: it starts full, earns rate tokens a second up to its
 * burst, never more after a long quiet spell, and earns nothing while the
 * clock stands still or steps back; a burst lowered since holds at once.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>

#include "common/bucket.h"

static unsigned takes(hsm_bucket *b, uint32_t rate, uint32_t burst, int64_t now, unsigned n)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++)
		k += hsm_bucket_take(b, rate, burst, now);
	return k;
}

static void test_burst_rate_and_cap(void **state)
{
	(void)state;
	hsm_bucket b = HSM_BUCKET_NEW;
	assert_true(hsm_bucket_full(&b, 20, 40, 1000));
	assert_int_equal(takes(&b, 20, 40, 1000, 100), 40);
	assert_false(hsm_bucket_full(&b, 20, 40, 1000));
	assert_int_equal(takes(&b, 20, 40, 1050, 10), 1);  /* 50 ms at 20/s: one token */
	assert_int_equal(takes(&b, 20, 40, 1075, 10), 0);  /* half a token so far */
	assert_int_equal(takes(&b, 20, 40, 1100, 10), 1);  /* the half kept, now whole */
	assert_int_equal(takes(&b, 20, 40, 1000000000, 100), 40); /* never more than the burst */
}

static void test_a_clock_that_steps_back_earns_nothing(void **state)
{
	(void)state;
	hsm_bucket b = HSM_BUCKET_NEW;
	assert_int_equal(takes(&b, 10, 10, 5000, 20), 10);
	assert_int_equal(takes(&b, 10, 10, 4000, 5), 0);
	assert_int_equal(takes(&b, 10, 10, 5000, 5), 0); /* back where it was: still nothing */
	assert_int_equal(takes(&b, 10, 10, 5100, 5), 1);
}

static void test_ready_and_spend_take_one_token(void **state)
{
	(void)state;
	hsm_bucket b = HSM_BUCKET_NEW;
	hsm_bucket_refill(&b, 1, 2, 0);
	assert_true(hsm_bucket_ready(&b));
	hsm_bucket_spend(&b);
	assert_true(hsm_bucket_ready(&b));
	hsm_bucket_spend(&b);
	assert_false(hsm_bucket_ready(&b));
}

/* A burst lowered under a bucket that holds more (a configuration reload): the new burst. */
static void test_a_lowered_burst_holds_at_once(void **state)
{
	(void)state;
	hsm_bucket b = HSM_BUCKET_NEW;
	assert_int_equal(takes(&b, 10, 100, 1000, 30), 30); /* 70 left */
	assert_int_equal(takes(&b, 1, 10, 1000, 30), 10);
	assert_int_equal(takes(&b, 1, 10, 2000, 5), 1); /* and the new rate */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_rate_and_cap),
	    cmocka_unit_test(test_a_clock_that_steps_back_earns_nothing),
	    cmocka_unit_test(test_ready_and_spend_take_one_token),
	    cmocka_unit_test(test_a_lowered_burst_holds_at_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
