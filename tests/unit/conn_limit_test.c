/*
 * Connections per source: a source holds at most its bound, IPv6 counts by
 * /64 and IPv4-mapped addresses as IPv4, a closed connection gives its slot
 * back, and the table stays right (every source findable, counts exact)
 * through heavy churn with colliding sources and backward-shift deletion.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "server/conn_limit.h"

static hsm_source src(const char *text)
{
	hsm_source s = hsm_source_of_text(text);
	assert_int_not_equal(s.family, 0);
	return s;
}

static void test_bound_per_source(void **state)
{
	(void)state;
	hsm_conn_limit *l = NULL;
	assert_true(hsm_ok(hsm_conn_limit_new(3, 100, &l)));
	hsm_source a = src("192.0.2.1"), b = src("192.0.2.2");
	for (int i = 0; i < 3; i++)
		assert_true(hsm_conn_limit_take(l, &a));
	assert_false(hsm_conn_limit_take(l, &a));
	assert_int_equal(hsm_conn_limit_held(l, &a), 3);
	assert_true(hsm_conn_limit_take(l, &b)); /* another source is not held back */
	hsm_conn_limit_give(l, &a);
	assert_int_equal(hsm_conn_limit_held(l, &a), 2);
	assert_true(hsm_conn_limit_take(l, &a));
	assert_false(hsm_conn_limit_take(l, &a));
	for (int i = 0; i < 3; i++)
		hsm_conn_limit_give(l, &a);
	hsm_conn_limit_give(l, &b);
	assert_int_equal(hsm_conn_limit_held(l, &a), 0);
	assert_int_equal(hsm_conn_limit_held(l, &b), 0);
	hsm_conn_limit_free(l);
}

static void test_ipv6_by_prefix_and_mapped_ipv4(void **state)
{
	(void)state;
	hsm_conn_limit *l = NULL;
	assert_true(hsm_ok(hsm_conn_limit_new(2, 100, &l)));
	hsm_source x1 = src("2001:db8:1:2::1"), x2 = src("2001:db8:1:2:ffff::9");
	hsm_source other = src("2001:db8:1:3::1");
	assert_true(hsm_conn_limit_take(l, &x1));
	assert_true(hsm_conn_limit_take(l, &x2));
	assert_false(hsm_conn_limit_take(l, &x1)); /* one /64 */
	assert_true(hsm_conn_limit_take(l, &other));
	hsm_source v4 = src("198.51.100.7"), mapped = src("::ffff:198.51.100.7");
	assert_true(hsm_conn_limit_take(l, &v4));
	assert_true(hsm_conn_limit_take(l, &mapped));
	assert_false(hsm_conn_limit_take(l, &v4));
	hsm_conn_limit_free(l);
}

static void test_no_bound(void **state)
{
	(void)state;
	hsm_conn_limit *l = NULL;
	assert_true(hsm_ok(hsm_conn_limit_new(0, 100, &l)));
	hsm_source a = src("192.0.2.1");
	for (int i = 0; i < 1000; i++)
		assert_true(hsm_conn_limit_take(l, &a));
	assert_int_equal(hsm_conn_limit_held(l, &a), 1000); /* counted all the same */
	hsm_conn_limit_free(l);
}

/*
 * A bound set while connections are open (a SIGHUP) meets the counts made
 * without one: a source above it keeps what it holds and opens nothing more
 * until it is below it.
 */
static void test_bound_changed(void **state)
{
	(void)state;
	hsm_conn_limit *l = NULL;
	assert_true(hsm_ok(hsm_conn_limit_new(0, 100, &l)));
	assert_int_equal(hsm_conn_limit_bound(l), 0);
	hsm_source a = src("192.0.2.1"), b = src("192.0.2.2");
	for (int i = 0; i < 5; i++)
		assert_true(hsm_conn_limit_take(l, &a));
	assert_true(hsm_conn_limit_take(l, &b));
	assert_int_equal(hsm_conn_limit_held(l, &a), 5);
	hsm_conn_limit_set(l, 3);
	assert_int_equal(hsm_conn_limit_bound(l), 3);
	assert_false(hsm_conn_limit_take(l, &a));
	assert_int_equal(hsm_conn_limit_held(l, &a), 5);
	assert_true(hsm_conn_limit_take(l, &b));
	assert_true(hsm_conn_limit_take(l, &b));
	assert_false(hsm_conn_limit_take(l, &b));
	hsm_conn_limit_give(l, &a);
	hsm_conn_limit_give(l, &a);
	assert_false(hsm_conn_limit_take(l, &a)); /* 3 held: at the bound */
	hsm_conn_limit_give(l, &a);
	assert_true(hsm_conn_limit_take(l, &a));
	assert_false(hsm_conn_limit_take(l, &a));
	/* Raised, then lifted. */
	hsm_conn_limit_set(l, 4);
	assert_true(hsm_conn_limit_take(l, &a));
	assert_false(hsm_conn_limit_take(l, &a));
	hsm_conn_limit_set(l, 0);
	for (int i = 0; i < 10; i++)
		assert_true(hsm_conn_limit_take(l, &a));
	assert_int_equal(hsm_conn_limit_held(l, &a), 14);
	assert_int_equal(hsm_conn_limit_held(l, &b), 3);
	for (int i = 0; i < 14; i++)
		hsm_conn_limit_give(l, &a);
	assert_int_equal(hsm_conn_limit_held(l, &a), 0);
	assert_int_equal(hsm_conn_limit_held(l, &b), 3);
	hsm_conn_limit_free(l);
}

/* Many sources in a small table, taken and given at random, against a plain count. */
static void test_churn_keeps_counts_exact(void **state)
{
	(void)state;
	enum { SOURCES = 40, BOUND = 3, ROUNDS = 200000 };
	hsm_conn_limit *l = NULL;
	/* 40 sources holding at most 3 each: 120 open at most; the table has 256 slots. */
	assert_true(hsm_ok(hsm_conn_limit_new(BOUND, SOURCES * BOUND, &l)));
	hsm_source s[SOURCES];
	unsigned held[SOURCES] = {0};
	for (int i = 0; i < SOURCES; i++) {
		char text[32];
		snprintf(text, sizeof(text), "10.0.%d.%d", i / 7, i * 13 % 251);
		s[i] = src(text);
	}
	srand(7);
	for (int r = 0; r < ROUNDS; r++) {
		int i = rand() % SOURCES;
		if (rand() % 2) {
			bool ok = hsm_conn_limit_take(l, &s[i]);
			assert_int_equal(ok, held[i] < BOUND);
			held[i] += ok;
		} else if (held[i] > 0) {
			hsm_conn_limit_give(l, &s[i]);
			held[i]--;
		}
		if (r % 997 == 0)
			for (int j = 0; j < SOURCES; j++)
				assert_int_equal(hsm_conn_limit_held(l, &s[j]), held[j]);
	}
	for (int j = 0; j < SOURCES; j++)
		assert_int_equal(hsm_conn_limit_held(l, &s[j]), held[j]);
	hsm_conn_limit_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bound_per_source),
	    cmocka_unit_test(test_ipv6_by_prefix_and_mapped_ipv4),
	    cmocka_unit_test(test_no_bound),
	    cmocka_unit_test(test_bound_changed),
	    cmocka_unit_test(test_churn_keeps_counts_exact),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
