/*
 * The bound on unauthenticated refusals' audit records: a source's burst and
 * rate, the bound over all sources, IPv6 /64s as one source, the summaries
 * (counts, kinds, access key ids, when they are due), giving a summary back,
 * and the shared entry for sources that find no room.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/refusals.h"

#define T0 1000000

static hsm_refusals *guard(uint32_t per_source, uint32_t total, uint32_t capacity)
{
	hsm_refusals_config cfg = {.per_source = per_source, .total = total, .capacity = capacity};
	hsm_refusals *g = NULL;
	assert_true(hsm_ok(hsm_refusals_new(&cfg, &g)));
	return g;
}

/* How many of n refusals from addr at now get a record of their own. */
static unsigned own(hsm_refusals *g, const char *addr, unsigned n, int64_t now, const char *kind)
{
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++)
		k += hsm_refusals_take(g, addr, kind, NULL, false, now, now);
	return k;
}

static uint64_t kind_count(const hsm_refusal_summary *s, const char *name)
{
	for (size_t i = 0; i < s->n_kinds; i++)
		if (strcmp(s->kinds[i].name, name) == 0)
			return s->kinds[i].n;
	return 0;
}

static void test_burst_then_rate(void **state)
{
	(void)state;
	hsm_refusals *g = guard(5, 0, 0);
	/* Ten seconds' worth at once, then nothing until time passes. */
	assert_int_equal(own(g, "192.0.2.1", 80, T0, "InvalidSignatureException"), 50);
	assert_int_equal(hsm_refusals_summarized(g), 30);
	/* One second earns five more; a second source has its own burst. */
	assert_int_equal(own(g, "192.0.2.1", 10, T0 + 1000, "InvalidSignatureException"), 5);
	assert_int_equal(own(g, "192.0.2.2", 60, T0 + 1000, "InvalidSignatureException"), 50);
	/* Half a second earns two and a half: two records, the half kept. */
	assert_int_equal(own(g, "192.0.2.1", 10, T0 + 1500, "InvalidSignatureException"), 2);
	assert_int_equal(own(g, "192.0.2.1", 10, T0 + 1600, "InvalidSignatureException"), 1);
	/* A quiet spell refills it, but never beyond the burst. */
	assert_int_equal(own(g, "192.0.2.1", 200, T0 + 1000000, "InvalidSignatureException"), 50);
	hsm_refusals_free(g);
}

static void test_zero_rate_means_every_refusal_has_its_record(void **state)
{
	(void)state;
	hsm_refusals *g = guard(0, 0, 0);
	assert_int_equal(own(g, "192.0.2.1", 1000, T0, "MissingAuthenticationTokenException"), 1000);
	assert_int_equal(hsm_refusals_summarized(g), 0);
	hsm_refusal_summary out[4];
	assert_int_equal(hsm_refusals_due(g, T0, true, out, 4), 0);
	hsm_refusals_free(g);
}

/* Rates set again (a configuration reload): the new ones from the next refusal on. */
static void test_rates_set_again(void **state)
{
	(void)state;
	hsm_refusals *g = guard(0, 0, 0);
	assert_int_equal(own(g, "192.0.2.1", 100, T0, "InvalidSignatureException"), 100);
	hsm_refusals_set_rates(g, 1, 0); /* ten at once from now on */
	assert_int_equal(own(g, "192.0.2.1", 30, T0, "InvalidSignatureException"), 10);
	hsm_refusals_set_rates(g, 1, 2); /* and twenty over all sources */
	assert_int_equal(own(g, "192.0.2.2", 30, T0, "InvalidSignatureException"), 10);
	assert_int_equal(own(g, "192.0.2.3", 30, T0, "InvalidSignatureException"), 10);
	assert_int_equal(own(g, "192.0.2.4", 30, T0, "InvalidSignatureException"), 0);
	assert_int_equal(hsm_refusals_summarized(g), 20 + 20 + 20 + 30);
	hsm_refusals_set_rates(g, 0, 0); /* every refusal its own record again */
	assert_int_equal(own(g, "192.0.2.1", 50, T0, "InvalidSignatureException"), 50);
	hsm_refusals_free(g);
}

static void test_total_bounds_many_sources(void **state)
{
	(void)state;
	hsm_refusals *g = guard(10, 3, 0); /* 100 per source at once, 30 over all */
	unsigned k = 0;
	char addr[32];
	for (unsigned i = 0; i < 20; i++) {
		snprintf(addr, sizeof(addr), "198.51.100.%u", i);
		k += own(g, addr, 5, T0, "UnrecognizedClientException");
	}
	assert_int_equal(k, 30);
	assert_int_equal(hsm_refusals_summarized(g), 70);
	/* A source held back by the total keeps its own tokens for later. */
	assert_int_equal(own(g, "198.51.100.19", 1, T0 + 1000, "UnrecognizedClientException"), 1);
	hsm_refusals_free(g);
}

static void test_ipv6_slash64_is_one_source(void **state)
{
	(void)state;
	hsm_refusals *g = guard(1, 0, 0); /* 10 at once */
	unsigned k = 0;
	char addr[64];
	for (unsigned i = 0; i < 30; i++) {
		snprintf(addr, sizeof(addr), "2001:db8:1:2::%x", i + 1);
		k += own(g, addr, 1, T0, "InvalidSignatureException");
	}
	assert_int_equal(k, 10);
	/* The next /64 is another source; an IPv4-mapped address is its IPv4 address. */
	assert_int_equal(own(g, "2001:db8:1:3::1", 20, T0, "InvalidSignatureException"), 10);
	assert_int_equal(own(g, "::ffff:192.0.2.7", 6, T0, "InvalidSignatureException"), 6);
	assert_int_equal(own(g, "192.0.2.7", 6, T0, "InvalidSignatureException"), 4);
	hsm_refusal_summary out[8];
	size_t n = hsm_refusals_due(g, T0, true, out, 8);
	assert_int_equal(n, 3);
	bool seen_prefix = false, seen_v4 = false;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(out[i].source, "2001:db8:1:2::/64") == 0) {
			seen_prefix = true;
			assert_int_equal(out[i].count, 20);
		}
		if (strcmp(out[i].source, "192.0.2.7") == 0) {
			seen_v4 = true;
			assert_int_equal(out[i].count, 2);
		}
	}
	assert_true(seen_prefix);
	assert_true(seen_v4);
	hsm_refusals_free(g);
}

static void test_summary_counts_kinds_and_access_keys(void **state)
{
	(void)state;
	hsm_refusals *g = guard(1, 0, 0);
	assert_int_equal(own(g, "203.0.113.9", 10, T0, "InvalidSignatureException"), 10);
	char akid[32];
	for (unsigned i = 0; i < 12; i++) {
		snprintf(akid, sizeof(akid), "AKIDEXAMPLE%02u", i % 6);
		assert_false(hsm_refusals_take(g, "203.0.113.9", "InvalidSignatureException", akid,
		                               false, T0 + 10 + i, T0 + 10 + i));
	}
	assert_false(hsm_refusals_take(g, "203.0.113.9", "Status", NULL, false, T0 + 50, T0 + 50));
	/* More kinds than a summary names: the rest are counted as other. */
	char kind[32];
	for (unsigned i = 0; i < HSM_REFUSALS_KINDS + 2; i++) {
		snprintf(kind, sizeof(kind), "Kind%u", i);
		assert_false(hsm_refusals_take(g, "203.0.113.9", kind, NULL, false, T0 + 60, T0 + 60));
	}
	hsm_refusal_summary out[2];
	assert_int_equal(hsm_refusals_due(g, T0 + 100, true, out, 2), 1);
	const hsm_refusal_summary *s = &out[0];
	assert_string_equal(s->source, "203.0.113.9");
	assert_int_equal(s->count, 12 + 1 + HSM_REFUSALS_KINDS + 2);
	assert_int_equal(s->first_ms, T0 + 10);
	assert_int_equal(s->last_ms, T0 + 60);
	assert_int_equal(kind_count(s, "InvalidSignatureException"), 12);
	assert_int_equal(kind_count(s, "Status"), 1);
	assert_int_equal(s->n_kinds, HSM_REFUSALS_KINDS);
	assert_int_equal(s->other_kinds, 4); /* 8 named: 2 above and Kind0..Kind5; Kind6..9 other */
	assert_int_equal(s->n_akids, HSM_REFUSALS_AKIDS);
	assert_string_equal(s->akids[0], "AKIDEXAMPLE00");
	assert_true(s->more_akids);
	/* Taken: nothing is left to write. */
	assert_int_equal(hsm_refusals_due(g, T0 + 100, true, out, 2), 0);
	hsm_refusals_free(g);
}

static void test_known_access_keys_are_named_first_and_times_are_wall_clock(void **state)
{
	(void)state;
	hsm_refusals *g = guard(1, 0, 0);
	const int64_t wall = 1764633600000; /* the summary's times; the buckets run on T0 */
	assert_int_equal(own(g, "198.51.100.4", 10, T0, "InvalidSignatureException"), 10);
	char akid[32];
	for (unsigned i = 0; i < 6; i++) { /* made-up ids fill the summary's names */
		snprintf(akid, sizeof(akid), "AKIDMADEUP%02u", i);
		assert_false(hsm_refusals_take(g, "198.51.100.4", "UnrecognizedClientException", akid,
		                               false, T0 + 1, wall + i));
	}
	/* A key of the store, refused later (its user locked): it takes a made-up one's place. */
	assert_false(hsm_refusals_take(g, "198.51.100.4", "AccessDeniedException",
	                               "AKIDREALKEY000000001", true, T0 + 2, wall + 10));
	hsm_refusal_summary out[1];
	assert_int_equal(hsm_refusals_due(g, T0 + 3, true, out, 1), 1);
	bool named = false;
	for (size_t i = 0; i < out[0].n_akids; i++)
		if (strcmp(out[0].akids[i], "AKIDREALKEY000000001") == 0)
			named = out[0].akid_known[i];
	assert_true(named);
	assert_true(out[0].more_akids);
	assert_int_equal(out[0].first_ms, wall);
	assert_int_equal(out[0].last_ms, wall + 10);
	assert_int_equal(out[0].first_mono_ms, T0 + 1);
	hsm_refusals_free(g);
}

static void test_summaries_fall_due_after_a_period(void **state)
{
	(void)state;
	hsm_refusals_config cfg = {.per_source = 1, .period_ms = 5000};
	hsm_refusals *g = NULL;
	assert_true(hsm_ok(hsm_refusals_new(&cfg, &g)));
	assert_int_equal(own(g, "192.0.2.1", 15, T0, "InvalidSignatureException"), 10);
	hsm_refusal_summary out[2];
	assert_int_equal(hsm_refusals_due(g, T0 + 4999, false, out, 2), 0);
	assert_int_equal(hsm_refusals_due(g, T0 + 5000, false, out, 2), 1);
	assert_int_equal(out[0].count, 5);
	/* Given back (the trail could not take it): counted again with what came since. */
	hsm_refusals_restore(g, &out[0], T0 + 5000);
	/* Five seconds earned five records; three more are summarized. */
	assert_int_equal(own(g, "192.0.2.1", 8, T0 + 5001, "MissingAuthenticationTokenException"), 5);
	assert_int_equal(hsm_refusals_due(g, T0 + 5001, false, out, 2), 1);
	assert_int_equal(out[0].count, 8);
	assert_int_equal(out[0].first_ms, T0);
	assert_int_equal(out[0].last_ms, T0 + 5001);
	assert_int_equal(kind_count(&out[0], "MissingAuthenticationTokenException"), 3);
	/* cap bounds what one call moves; the rest wait for the next. */
	own(g, "192.0.2.2", 11, T0, "x");
	own(g, "192.0.2.3", 11, T0, "x");
	assert_int_equal(hsm_refusals_due(g, T0, true, out, 1), 1);
	assert_int_equal(hsm_refusals_due(g, T0, true, out, 2), 1);
	assert_int_equal(hsm_refusals_due(g, T0, true, out, 2), 0);
	hsm_refusals_free(g);
}

static void test_sources_without_room_share_one_entry(void **state)
{
	(void)state;
	hsm_refusals *g = guard(1, 0, 4); /* four slots */
	char addr[32];
	unsigned k = 0;
	for (unsigned i = 0; i < 40; i++) {
		snprintf(addr, sizeof(addr), "10.0.0.%u", i);
		k += own(g, addr, 11, T0, "InvalidSignatureException"); /* each: one summarized */
	}
	/* Four sources with their own bursts; the 36 others share one burst of 10. */
	assert_int_equal(k, 4 * 10 + 10);
	hsm_refusal_summary out[8];
	size_t n = hsm_refusals_due(g, T0, true, out, 8);
	assert_int_equal(n, 5);
	uint64_t total = 0;
	bool other = false;
	for (size_t i = 0; i < n; i++) {
		total += out[i].count;
		other = other || strcmp(out[i].source, HSM_REFUSALS_OTHER_SOURCES) == 0;
	}
	assert_true(other);
	assert_int_equal(total, 40 * 11 - k);
	assert_int_equal(hsm_refusals_summarized(g), total);
	/* Once quiet and written, a slot is free for a new source again. */
	assert_int_equal(own(g, "10.0.1.1", 11, T0 + 20000, "InvalidSignatureException"), 10);
	assert_int_equal(hsm_refusals_due(g, T0 + 20000, true, out, 8), 1);
	assert_string_equal(out[0].source, "10.0.1.1");
	hsm_refusals_free(g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_then_rate),
	    cmocka_unit_test(test_zero_rate_means_every_refusal_has_its_record),
	    cmocka_unit_test(test_total_bounds_many_sources),
	    cmocka_unit_test(test_rates_set_again),
	    cmocka_unit_test(test_ipv6_slash64_is_one_source),
	    cmocka_unit_test(test_summary_counts_kinds_and_access_keys),
	    cmocka_unit_test(test_known_access_keys_are_named_first_and_times_are_wall_clock),
	    cmocka_unit_test(test_summaries_fall_due_after_a_period),
	    cmocka_unit_test(test_sources_without_room_share_one_entry),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
