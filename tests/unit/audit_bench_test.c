/*
 * audit_bench_test.c - submit -> done throughput and latency of the audit
 * log with 1 to 4 submitting threads.
 *
 * In the default suite it runs a short pass (20,000 records per thread
 * count) that checks every callback fired with success and the log verifies.
 * HSM_AUDIT_BENCH=1 runs the full measurement (500,000 records each) and
 * prints the numbers; HSM_AUDIT_BENCH_DIR picks the filesystem to measure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "audit_test_util.h"

#define WINDOW 512 /* records in flight per thread, like concurrent requests */

typedef struct bench_thread {
	hsm_audit *a;
	size_t n;
	uint64_t *lat_ns;
	atomic_size_t done, inflight;
	atomic_size_t failed;
	pthread_t tid;
} bench_thread;

typedef struct bench_item {
	bench_thread *t;
	size_t i;
	uint64_t t0;
} bench_item;

static void bench_done(void *arg, hsm_result r)
{
	bench_item *it = arg;
	it->t->lat_ns[it->i] = hsm_mono_ns() - it->t0;
	if (hsm_failed(r))
		atomic_fetch_add(&it->t->failed, 1);
	atomic_fetch_sub(&it->t->inflight, 1);
	atomic_fetch_add(&it->t->done, 1);
}

static void *bench_main(void *arg)
{
	bench_thread *t = arg;
	bench_item *items = calloc(t->n, sizeof(*items));
	assert_non_null(items);
	for (size_t i = 0; i < t->n; i++) {
		while (atomic_load(&t->inflight) >= WINDOW)
			sched_yield();
		items[i] = (bench_item){t, i, hsm_mono_ns()};
		hsm_audit_record r = t_record((unsigned)i);
		atomic_fetch_add(&t->inflight, 1);
		hsm_result res = hsm_audit_submit(t->a, &r, bench_done, &items[i]);
		if (hsm_failed(res)) { /* queue full: counts as a failure, no callback */
			atomic_fetch_sub(&t->inflight, 1);
			atomic_fetch_add(&t->failed, 1);
			atomic_fetch_add(&t->done, 1);
			t->lat_ns[i] = 0;
		}
	}
	while (atomic_load(&t->done) < t->n)
		sched_yield();
	free(items);
	return NULL;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return a < b ? -1 : a > b;
}

static void run(int threads, size_t per_thread, const char *base, bool report)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/hsm-audit-bench-XXXXXX", base);
	assert_non_null(mkdtemp(dir));
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	bench_thread *t = calloc((size_t)threads, sizeof(*t));
	assert_non_null(t);
	uint64_t start = hsm_mono_ns();
	for (int i = 0; i < threads; i++) {
		t[i].a = a;
		t[i].n = per_thread;
		t[i].lat_ns = calloc(per_thread, sizeof(uint64_t));
		assert_non_null(t[i].lat_ns);
		assert_int_equal(pthread_create(&t[i].tid, NULL, bench_main, &t[i]), 0);
	}
	for (int i = 0; i < threads; i++)
		pthread_join(t[i].tid, NULL);
	uint64_t elapsed = hsm_mono_ns() - start;
	hsm_audit_close(a);
	size_t total = per_thread * (size_t)threads, failed = 0;
	uint64_t *all = calloc(total, sizeof(uint64_t));
	assert_non_null(all);
	for (int i = 0; i < threads; i++) {
		failed += atomic_load(&t[i].failed);
		memcpy(all + (size_t)i * per_thread, t[i].lat_ns, per_thread * sizeof(uint64_t));
		free(t[i].lat_ns);
	}
	qsort(all, total, sizeof(uint64_t), cmp_u64);
	double rate = (double)total / ((double)elapsed / 1e9);
	if (report)
		print_message("audit bench: %d thread(s), %zu records: %.0f records/s, latency p50 %.1f us, "
		              "p99 %.1f us, max %.1f us, %zu failed\n",
		              threads, total, rate, (double)all[total / 2] / 1e3,
		              (double)all[total * 99 / 100] / 1e3, (double)all[total - 1] / 1e3, failed);
	assert_int_equal(failed, 0);
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	assert_true(r.records >= total);
	free(all);
	free(t);
	t_rm_rf(dir);
}

static void test_submit_throughput(void **state)
{
	(void)state;
	const char *full = getenv("HSM_AUDIT_BENCH");
	bool bench = full != NULL && strcmp(full, "1") == 0;
	const char *base = getenv("HSM_AUDIT_BENCH_DIR");
	if (base == NULL)
		base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	for (int threads = 1; threads <= 4; threads++)
		run(threads, bench ? 500000 : 20000, base, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_submit_throughput),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
