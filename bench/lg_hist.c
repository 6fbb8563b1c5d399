/*
 * lg_hist.c - see lg_hist.h.
 */
#include "lg_hist.h"

#include <string.h>

static unsigned bucket_of(uint64_t v)
{
	if (v < 2 * LG_HIST_SUB)
		return (unsigned)v;
	unsigned e = 63U - (unsigned)__builtin_clzll(v) - 8U; /* v >> e is in [256, 511] */
	unsigned idx = LG_HIST_SUB * (e + 1U) + (unsigned)((v >> e) - LG_HIST_SUB);
	return idx < LG_HIST_BUCKETS ? idx : LG_HIST_BUCKETS - 1U;
}

/* The middle of a bucket's range. */
static uint64_t value_of(unsigned idx)
{
	if (idx < 2 * LG_HIST_SUB)
		return idx;
	unsigned e = idx / LG_HIST_SUB - 1U;
	uint64_t m = idx % LG_HIST_SUB + LG_HIST_SUB;
	return (m << e) + ((1ULL << e) >> 1);
}

void lg_hist_reset(lg_hist *h)
{
	memset(h, 0, sizeof(*h));
}

void lg_hist_add(lg_hist *h, uint64_t ns)
{
	h->counts[bucket_of(ns)]++;
	h->n++;
	h->sum_ns += (double)ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

void lg_hist_merge(lg_hist *dst, const lg_hist *src)
{
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
		dst->counts[i] += src->counts[i];
	dst->n += src->n;
	dst->sum_ns += src->sum_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
}

uint64_t lg_hist_quantile(const lg_hist *h, double q)
{
	if (h->n == 0)
		return 0;
	/* The smallest value with at least ceil(q * n) values at or below it. */
	uint64_t rank = (uint64_t)(q * (double)h->n + 0.999999);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			uint64_t v = value_of(i);
			return v < h->max_ns ? v : h->max_ns;
		}
	}
	return h->max_ns;
}

double lg_hist_mean(const lg_hist *h)
{
	return h->n ? h->sum_ns / (double)h->n : 0.0;
}
