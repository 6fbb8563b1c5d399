/*
 * lane.h - a small pool of threads for the requests that take long.
 *
 * An HTTP worker runs a request's handler on its own thread, and every other
 * connection it serves waits meanwhile.  That is right for the operations
 * that take microseconds (an encryption, an ECDSA signature), and wrong for
 * the ones that take long: generating an RSA-4096 key pair takes one to three
 * seconds, every store write waits for an fsync, and an RSA signature takes
 * 0.25 to 4 ms, during which requests queued on that worker wait even when
 * another is idle.  The dispatcher hands those to the lane (dispatch.c says
 * which); the worker goes on with its other connections, the lane's threads
 * share one queue, and they answer through the usual way back
 * (hsm_http_respond from any thread).
 *
 * Jobs run in the order they were submitted, each on one of the lane's
 * threads.  The job's storage is the caller's (usually inside the request's
 * own state), so submitting allocates nothing and cannot fail for memory.
 */
#ifndef HSM_SERVER_LANE_H
#define HSM_SERVER_LANE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/result.h"

typedef struct hsm_lane hsm_lane;

/*
 * Runs a job.  cancelled is true when the lane stopped before the job began:
 * the job must then finish quickly (refuse its request) instead of doing its
 * work.  Either way the call is the job's last use of the lane.
 */
typedef void (*hsm_lane_fn)(void *arg, bool cancelled);

typedef struct hsm_lane_job {
	hsm_lane_fn fn;
	void *arg;
	/*
	 * The job takes well under a millisecond (an RSA-2048 signature).  Calls
	 * deferred with hsm_lane_at_batch_end may wait through a few brief jobs,
	 * never through one that is not.
	 */
	bool brief;
	struct hsm_lane_job *next; /* the lane's own */
} hsm_lane_job;

/* Starts threads (at least one) named name-0, name-1, ... (ps, top -H). */
hsm_result hsm_lane_new(unsigned threads, const char *name, hsm_lane **out) HSM_MUST_CHECK;

/*
 * Queues job (fn and arg set by the caller).  False once the lane is
 * stopping: the job was not queued, and the caller runs it itself.
 */
bool hsm_lane_submit(hsm_lane *l, hsm_lane_job *job);

/*
 * On a lane thread: calls fn(arg) once the thread's current batch of jobs
 * ends, once however often it is asked for (like hsm_http_at_pass_end).  A
 * batch ends after any job that is not brief, when the next job waiting is
 * not brief, when fewer than HSM_LANE_BACKLOG_PER_THREAD jobs per thread
 * wait, or after HSM_LANE_BATCH_MAX jobs.  Returns false, and calls nothing,
 * on any other thread.
 */
#define HSM_LANE_BATCH_MAX 3U
#define HSM_LANE_BACKLOG_PER_THREAD 8U
bool hsm_lane_at_batch_end(void (*fn)(void *), void *arg);

/* Jobs queued or running now (the /metrics gauge). */
size_t hsm_lane_depth(hsm_lane *l);

/*
 * Stops taking jobs, lets the running ones finish, cancels the ones not yet
 * begun (fn(arg, true)) and joins the threads.  Idempotent.
 */
void hsm_lane_stop(hsm_lane *l);

/* Stops the lane if needed and frees it.  NULL is ignored. */
void hsm_lane_free(hsm_lane *l);

#endif
