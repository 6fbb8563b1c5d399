/*
 * lane.c - the pool of threads for long requests (see lane.h).
 *
 * One mutex guards a FIFO of jobs and the counters; the threads sleep on one
 * condition variable.  The busiest traffic through it is RSA signatures,
 * a few thousand a second at a quarter of a millisecond each: a lock and a
 * wake-up per job cost a few microseconds of that (bench/PROFILE.md item 29).
 *
 * Each job's answer wakes the audit writer.  When brief jobs wait behind it,
 * a thread runs up to HSM_LANE_BATCH_MAX of them before it makes the calls
 * its jobs deferred (hsm_lane_at_batch_end), so at full load the writer
 * wakes once per few records instead of once per record (item 32).
 */
#include "server/lane.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"
#include "common/util.h"

#define LANE_MAX_THREADS 64U

/* On a lane thread, what it was asked to call at the end of its batch. */
static _Thread_local hsm_calls *batch_end;

struct hsm_lane {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	hsm_lane_job *head, *tail;
	size_t queued, running;
	bool stopping, joined;
	unsigned n_threads; /* started */
	char name[12];
	pthread_t threads[];
};

typedef struct lane_start {
	hsm_lane *l;
	unsigned index;
} lane_start;

/* Takes the oldest job; NULL when there is none.  Called with mu held. */
static hsm_lane_job *pop_locked(hsm_lane *l)
{
	hsm_lane_job *job = l->head;
	if (job != NULL) {
		l->head = job->next;
		if (l->head == NULL)
			l->tail = NULL;
		job->next = NULL;
		l->queued--;
	}
	return job;
}

bool hsm_lane_at_batch_end(void (*fn)(void *), void *arg)
{
	if (batch_end == NULL)
		return false;
	hsm_calls_add(batch_end, fn, arg);
	return true;
}

/*
 * Whether the batch goes on after a job: it was brief, so is the next one,
 * the batch is not full, and there is a deep backlog
 * (HSM_LANE_BACKLOG_PER_THREAD jobs waiting per thread).  Then each waiting
 * job has milliseconds to wait anyway, and the cores are saturated, so a
 * wake-up saved is throughput gained.  Under lighter load the answer goes
 * at once: at half of the RSA-2048 peak, batching whenever a brief job
 * waited raised the p99.  Called with mu held.
 */
static bool batch_goes_on(const hsm_lane *l, bool brief, unsigned in_batch)
{
	return brief && in_batch < HSM_LANE_BATCH_MAX && l->head != NULL && l->head->brief &&
	       l->queued >= HSM_LANE_BACKLOG_PER_THREAD * (size_t)l->n_threads && !l->stopping;
}

static void *lane_main(void *arg)
{
	lane_start *st = arg;
	hsm_lane *l = st->l;
	hsm_calls calls = {.n = 0};
	unsigned in_batch = 0;
	hsm_thread_name_n(l->name, st->index);
	free(st);
	batch_end = &calls;
	pthread_mutex_lock(&l->mu);
	for (;;) {
		hsm_lane_job *job = pop_locked(l);
		if (job == NULL) {
			if (l->stopping)
				break;
			pthread_cond_wait(&l->cv, &l->mu);
			continue;
		}
		bool cancelled = l->stopping, brief = job->brief;
		l->running++;
		pthread_mutex_unlock(&l->mu);
		job->fn(job->arg, cancelled); /* job may be freed by now */
		hsm_stack_wipe();
		in_batch++;
		pthread_mutex_lock(&l->mu);
		if (!batch_goes_on(l, brief, in_batch)) {
			pthread_mutex_unlock(&l->mu);
			hsm_calls_run(&calls);
			in_batch = 0;
			pthread_mutex_lock(&l->mu);
		}
		l->running--;
	}
	pthread_mutex_unlock(&l->mu);
	batch_end = NULL;
	return NULL;
}

hsm_result hsm_lane_new(unsigned threads, const char *name, hsm_lane **out)
{
	HSM_ASSERT(name != NULL && out != NULL);
	*out = NULL;
	HSM_ENSURE(threads >= 1 && threads <= LANE_MAX_THREADS, HSM_ERR_VALIDATION,
	           "a lane has 1 to %u threads", LANE_MAX_THREADS);
	hsm_lane *l = calloc(1, sizeof(*l) + threads * sizeof(pthread_t));
	HSM_ENSURE(l != NULL, HSM_ERR_NOMEM, "out of memory");
	if (pthread_mutex_init(&l->mu, NULL) != 0) {
		free(l);
		return HSM_FAIL(HSM_ERR_INTERNAL, "cannot set up the lane");
	}
	if (pthread_cond_init(&l->cv, NULL) != 0) {
		pthread_mutex_destroy(&l->mu);
		free(l);
		return HSM_FAIL(HSM_ERR_INTERNAL, "cannot set up the lane");
	}
	hsm_sb b;
	hsm_sb_init(&b, l->name, sizeof(l->name));
	hsm_sb_addn(&b, name, sizeof(l->name) - 1);
	for (unsigned i = 0; i < threads; i++) {
		lane_start *st = malloc(sizeof(*st));
		if (st == NULL)
			break;
		*st = (lane_start){l, i};
		if (pthread_create(&l->threads[i], NULL, lane_main, st) != 0) {
			free(st);
			break;
		}
		l->n_threads++;
	}
	if (l->n_threads < threads) {
		hsm_lane_free(l);
		return HSM_FAIL(HSM_ERR_INTERNAL, "cannot start the %s threads", name);
	}
	*out = l;
	return HSM_SUCCESS;
}

bool hsm_lane_submit(hsm_lane *l, hsm_lane_job *job)
{
	HSM_ASSERT(l != NULL && job != NULL && job->fn != NULL);
	pthread_mutex_lock(&l->mu);
	if (l->stopping) {
		pthread_mutex_unlock(&l->mu);
		return false;
	}
	job->next = NULL;
	if (l->tail != NULL)
		l->tail->next = job;
	else
		l->head = job;
	l->tail = job;
	l->queued++;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	return true;
}

size_t hsm_lane_depth(hsm_lane *l)
{
	pthread_mutex_lock(&l->mu);
	size_t n = l->queued + l->running;
	pthread_mutex_unlock(&l->mu);
	return n;
}

void hsm_lane_stop(hsm_lane *l)
{
	if (l == NULL)
		return;
	pthread_mutex_lock(&l->mu);
	bool joined = l->joined;
	l->stopping = true;
	l->joined = true;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	if (joined)
		return;
	/* The threads cancel what is still queued on their way out. */
	for (unsigned i = 0; i < l->n_threads; i++)
		pthread_join(l->threads[i], NULL);
}

void hsm_lane_free(hsm_lane *l)
{
	if (l == NULL)
		return;
	hsm_lane_stop(l);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l);
}
