/*
 * lg_hist.h - a latency histogram for the benchmark programs.
 *
 * Log-linear buckets in the manner of HdrHistogram: exact below 512 ns, then
 * 256 buckets per power of two, so every recorded value is reported within
 * 0.4 % of itself.  Fixed size, no allocation: one per thread, merged at
 * the end.  Not thread-safe.
 */
#ifndef HSM_BENCH_LG_HIST_H
#define HSM_BENCH_LG_HIST_H

#include <stdint.h>

#define LG_HIST_SUB 256U
#define LG_HIST_BUCKETS (LG_HIST_SUB * 40U) /* up to 2^47 ns, about 39 hours */

typedef struct lg_hist {
	uint64_t counts[LG_HIST_BUCKETS];
	uint64_t n;
	uint64_t max_ns;
	double sum_ns;
} lg_hist;

void lg_hist_reset(lg_hist *h);
void lg_hist_add(lg_hist *h, uint64_t ns);
void lg_hist_merge(lg_hist *dst, const lg_hist *src);
/* The value at quantile q in [0, 1] (0 when empty), in nanoseconds. */
uint64_t lg_hist_quantile(const lg_hist *h, double q);
double lg_hist_mean(const lg_hist *h);

#endif
