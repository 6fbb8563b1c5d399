/*
 * The lane (src/server/lane.c): jobs run once each, in order, on the lane's
 * threads and side by side; stopping lets running jobs finish, cancels the
 * queued ones and refuses new ones; calls deferred to the end of a batch
 * wait through brief jobs only, and only while there is a backlog.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/lane.h"

typedef struct rec {
	hsm_lane_job job;
	pthread_t main;
	atomic_int runs;
	atomic_int cancels;
	atomic_bool on_main;
	atomic_int order; /* position in which it ran */
	pthread_barrier_t *meet; /* waited on while running, when set */
	atomic_bool *release;    /* spun on while running, when set */
} rec;

static atomic_int ran_count;

static void job_fn(void *arg, bool cancelled)
{
	rec *r = arg;
	if (pthread_equal(pthread_self(), r->main))
		atomic_store(&r->on_main, true);
	if (cancelled) {
		atomic_fetch_add(&r->cancels, 1);
		return;
	}
	atomic_store(&r->order, atomic_fetch_add(&ran_count, 1));
	if (r->meet != NULL)
		pthread_barrier_wait(r->meet);
	while (r->release != NULL && !atomic_load(r->release)) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	atomic_fetch_add(&r->runs, 1);
}

static void rec_init(rec *r)
{
	memset(r, 0, sizeof(*r));
	r->job.fn = job_fn;
	r->job.arg = r;
	r->main = pthread_self();
}

static void wait_depth(hsm_lane *l, size_t want)
{
	for (int i = 0; i < 5000 && hsm_lane_depth(l) != want; i++) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	assert_int_equal(hsm_lane_depth(l), want);
}

static void test_jobs_run_once_in_order_off_the_caller(void **state)
{
	(void)state;
	hsm_lane *l = NULL;
	assert_true(hsm_ok(hsm_lane_new(1, "t", &l)));
	enum { N = 200 };
	rec *r = calloc(N, sizeof(*r));
	assert_non_null(r);
	atomic_store(&ran_count, 0);
	for (int i = 0; i < N; i++) {
		rec_init(&r[i]);
		assert_true(hsm_lane_submit(l, &r[i].job));
	}
	wait_depth(l, 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(atomic_load(&r[i].runs), 1);
		assert_int_equal(atomic_load(&r[i].cancels), 0);
		assert_false(atomic_load(&r[i].on_main));
		assert_int_equal(atomic_load(&r[i].order), i); /* one thread: submission order */
	}
	hsm_lane_free(l);
	free(r);
}

/* Two jobs that can only finish together: they must run at the same time. */
static void test_jobs_run_side_by_side(void **state)
{
	(void)state;
	hsm_lane *l = NULL;
	assert_true(hsm_ok(hsm_lane_new(2, "t", &l)));
	pthread_barrier_t meet;
	pthread_barrier_init(&meet, NULL, 2);
	rec a, b;
	rec_init(&a);
	rec_init(&b);
	a.meet = b.meet = &meet;
	assert_true(hsm_lane_submit(l, &a.job));
	assert_true(hsm_lane_submit(l, &b.job));
	wait_depth(l, 0);
	assert_int_equal(atomic_load(&a.runs), 1);
	assert_int_equal(atomic_load(&b.runs), 1);
	hsm_lane_free(l);
	pthread_barrier_destroy(&meet);
}

static atomic_bool release_flag;

static void *release_later(void *arg)
{
	(void)arg;
	struct timespec ts = {0, 50000000};
	nanosleep(&ts, NULL);
	atomic_store(&release_flag, true);
	return NULL;
}

/* Stopping: the running job finishes its work, the queued ones are cancelled, new ones refused. */
static void test_stop_finishes_running_and_cancels_queued(void **state)
{
	(void)state;
	hsm_lane *l = NULL;
	assert_true(hsm_ok(hsm_lane_new(1, "t", &l)));
	atomic_store(&release_flag, false);
	atomic_store(&ran_count, 0);
	rec running, queued[3], late;
	rec_init(&running);
	running.release = &release_flag;
	assert_true(hsm_lane_submit(l, &running.job));
	for (int i = 0; i < 3; i++) {
		rec_init(&queued[i]);
		assert_true(hsm_lane_submit(l, &queued[i].job));
	}
	wait_depth(l, 4); /* one running, three waiting behind it */
	for (int i = 0; i < 5000 && atomic_load(&ran_count) == 0; i++) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	assert_int_equal(atomic_load(&ran_count), 1); /* the first has begun */
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, release_later, NULL), 0);
	hsm_lane_stop(l); /* returns once the running job is done and the rest cancelled */
	pthread_join(t, NULL);
	assert_int_equal(atomic_load(&running.runs), 1);
	assert_int_equal(atomic_load(&running.cancels), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(atomic_load(&queued[i].runs), 0);
		assert_int_equal(atomic_load(&queued[i].cancels), 1);
		assert_false(atomic_load(&queued[i].on_main));
	}
	rec_init(&late);
	assert_false(hsm_lane_submit(l, &late.job));
	assert_int_equal(atomic_load(&late.runs) + atomic_load(&late.cancels), 0);
	assert_int_equal(hsm_lane_depth(l), 0);
	hsm_lane_stop(l); /* again: nothing to do */
	hsm_lane_free(l);
}

/* What the batch test saw, in order: job names, and F for each deferred call. */
static char batch_log[64];
static atomic_size_t batch_len;

static void batch_note(char c)
{
	size_t i = atomic_fetch_add(&batch_len, 1);
	if (i < sizeof(batch_log) - 1)
		batch_log[i] = c;
}

static void batch_flush(void *arg)
{
	(void)arg;
	batch_note('F');
}

typedef struct batch_job {
	hsm_lane_job job;
	char name;
} batch_job;

static void batch_fn(void *arg, bool cancelled)
{
	batch_job *b = arg;
	assert_false(cancelled);
	batch_note(b->name);
	/* Asked for twice, made once. */
	assert_true(hsm_lane_at_batch_end(batch_flush, batch_log));
	assert_true(hsm_lane_at_batch_end(batch_flush, batch_log));
}

/*
 * One thread, held up by a first job while the others queue: brief jobs
 * 1-4, a long one L, brief 5-9 and a-e.  A batch ends after three jobs
 * (1-3), before a job that is not brief (after 4, with ten waiting), after
 * one (L), and when fewer than eight jobs wait (6 goes on with eight left,
 * 8 stops with six).
 */
static void test_calls_wait_for_the_end_of_a_batch(void **state)
{
	(void)state;
	assert_false(hsm_lane_at_batch_end(batch_flush, batch_log)); /* not a lane thread */
	assert_int_equal(atomic_load(&batch_len), 0);
	hsm_lane *l = NULL;
	assert_true(hsm_ok(hsm_lane_new(1, "t", &l)));
	atomic_store(&release_flag, false);
	rec gate;
	rec_init(&gate);
	gate.release = &release_flag;
	assert_true(hsm_lane_submit(l, &gate.job));
	const char *names = "1234L56789abcde";
	enum { N = 15 };
	batch_job jobs[N];
	for (size_t i = 0; i < N; i++) {
		jobs[i] = (batch_job){.job = {.fn = batch_fn, .arg = &jobs[i], .brief = names[i] != 'L'},
		                      .name = names[i]};
		assert_true(hsm_lane_submit(l, &jobs[i].job));
	}
	atomic_store(&release_flag, true);
	wait_depth(l, 0);
	hsm_lane_free(l);
	batch_log[atomic_load(&batch_len)] = '\0';
	assert_int_equal(HSM_LANE_BATCH_MAX, 3);
	assert_int_equal(HSM_LANE_BACKLOG_PER_THREAD, 8);
	assert_string_equal(batch_log, "123F4FLF567F8F9FaFbFcFdFeF");
}

static void test_thread_counts_are_checked(void **state)
{
	(void)state;
	hsm_lane *l = NULL;
	assert_true(hsm_failed(hsm_lane_new(0, "t", &l)));
	assert_null(l);
	assert_true(hsm_failed(hsm_lane_new(1000, "t", &l)));
	assert_null(l);
	hsm_lane_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jobs_run_once_in_order_off_the_caller),
	    cmocka_unit_test(test_jobs_run_side_by_side),
	    cmocka_unit_test(test_stop_finishes_running_and_cancels_queued),
	    cmocka_unit_test(test_calls_wait_for_the_end_of_a_batch),
	    cmocka_unit_test(test_thread_counts_are_checked),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
