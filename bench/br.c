/*
 * br.c - see br.h.
 */
#include "br.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "lg_hist.h"

typedef struct br_shared {
	const br_op *op;
	void *arg;
	pthread_barrier_t start;
	atomic_bool stop;
	atomic_bool failed;
} br_shared;

typedef struct br_thread {
	br_shared *sh;
	unsigned index;
	uint64_t ops;
	lg_hist hist;
	pthread_t tid;
} br_thread;

static void *thread_main(void *p)
{
	br_thread *t = p;
	br_shared *sh = t->sh;
	void *state = NULL;
	if (hsm_failed(sh->op->setup(sh->arg, t->index, &state))) {
		fprintf(stderr, "%s: setup: %s\n", sh->op->name, hsm_last_message());
		atomic_store(&sh->failed, true);
	}
	pthread_barrier_wait(&sh->start);
	unsigned batch = 1;
	while (state != NULL && !atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
		uint64_t t0 = hsm_mono_ns();
		hsm_result r = sh->op->run(state);
		uint64_t took = hsm_mono_ns() - t0;
		lg_hist_add(&t->hist, took);
		for (unsigned i = 1; i < batch && hsm_ok(r); i++)
			r = sh->op->run(state);
		if (hsm_failed(r)) {
			fprintf(stderr, "%s: %s\n", sh->op->name, hsm_last_message());
			atomic_store(&sh->failed, true);
			break;
		}
		t->ops += batch;
		/* Time every operation unless the clock reads would weigh on it. */
		batch = took > BR_TIME_EVERY_NS ? 1 : BR_SAMPLE;
	}
	if (state != NULL)
		sh->op->teardown(state);
	return NULL;
}

hsm_result br_run(const br_op *op, void *arg, unsigned threads, double duration_s, br_result *out)
{
	br_shared sh = {.op = op, .arg = arg};
	br_thread *ts = calloc(threads, sizeof(*ts));
	HSM_ENSURE(ts != NULL, HSM_ERR_NOMEM, "out of memory");
	pthread_barrier_init(&sh.start, NULL, threads + 1);
	for (unsigned i = 0; i < threads; i++) {
		ts[i].sh = &sh;
		ts[i].index = i;
		HSM_ASSERT(pthread_create(&ts[i].tid, NULL, thread_main, &ts[i]) == 0);
	}
	pthread_barrier_wait(&sh.start);
	uint64_t t0 = hsm_mono_ns();
	struct timespec d = {(time_t)duration_s, (long)((duration_s - (double)(time_t)duration_s) * 1e9)};
	while (nanosleep(&d, &d) != 0 && errno == EINTR)
		;
	atomic_store(&sh.stop, true);
	static lg_hist all;
	lg_hist_reset(&all);
	uint64_t ops = 0;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(ts[i].tid, NULL);
		ops += ts[i].ops;
		lg_hist_merge(&all, &ts[i].hist);
	}
	/* Threads stop after their current batch: count until the last one has joined. */
	double secs = (double)(hsm_mono_ns() - t0) / 1e9;
	pthread_barrier_destroy(&sh.start);
	free(ts);
	HSM_ENSURE(!atomic_load(&sh.failed), HSM_ERR_INTERNAL, "%s failed", op->name);
	out->ops = ops;
	out->seconds = secs;
	out->ops_per_s = (double)ops / secs;
	out->p50_us = (double)lg_hist_quantile(&all, 0.5) / 1e3;
	out->p99_us = (double)lg_hist_quantile(&all, 0.99) / 1e3;
	out->p999_us = (double)lg_hist_quantile(&all, 0.999) / 1e3;
	return HSM_SUCCESS;
}

void br_print(const char *impl, const char *op, unsigned threads, const br_result *r)
{
	printf("{\"impl\":\"%s\",\"op\":\"%s\",\"threads\":%u,\"ops\":%llu,\"seconds\":%.3f,"
	       "\"ops_per_s\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f}\n",
	       impl, op, threads, (unsigned long long)r->ops, r->seconds, r->ops_per_s, r->p50_us,
	       r->p99_us, r->p999_us);
	fflush(stdout);
}

hsm_result br_parse_args(int argc, char **argv, br_args *out)
{
	memset(out, 0, sizeof(*out));
	out->duration_s = 2;
	for (int i = 1; i < argc; i++) {
		int64_t v = 0;
		HSM_ENSURE(i + 1 < argc, HSM_ERR_VALIDATION, "%s needs a value", argv[i]);
		if (strcmp(argv[i], "--threads") == 0) {
			HSM_GUARD(hsm_parse_i64(argv[++i], 0, 1024, &v));
			out->threads = (unsigned)v;
		} else if (strcmp(argv[i], "--duration") == 0) {
			HSM_GUARD(hsm_parse_i64(argv[++i], 1, 3600, &v));
			out->duration_s = (double)v;
		} else if (strcmp(argv[i], "--op") == 0) {
			HSM_ENSURE(out->n_ops < sizeof(out->ops) / sizeof(out->ops[0]), HSM_ERR_VALIDATION,
			           "too many --op");
			out->ops[out->n_ops++] = argv[++i];
		} else {
			return HSM_FAIL(HSM_ERR_VALIDATION, "unknown option %s", argv[i]);
		}
	}
	if (out->threads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		out->threads = n > 0 ? (unsigned)n : 1;
	}
	return HSM_SUCCESS;
}

int br_wanted(const br_args *a, const char *op)
{
	if (a->n_ops == 0)
		return 1;
	for (size_t i = 0; i < a->n_ops; i++)
		if (strcmp(a->ops[i], op) == 0)
			return 1;
	return 0;
}

int br_run_wanted(const char *impl, const br_op *ops, size_t n, void *arg, const br_args *a)
{
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		br_result r;
		if (!br_wanted(a, ops[i].name))
			continue;
		if (hsm_failed(br_run(&ops[i], arg, a->threads, a->duration_s, &r))) {
			fprintf(stderr, "%s: %s\n", impl, hsm_last_message());
			rc = 1;
			continue;
		}
		br_print(impl, ops[i].name, a->threads, &r);
	}
	return rc;
}
