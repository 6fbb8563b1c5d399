/*
 * audit_syslog.c - best-effort forwarding of audit lines to syslog
 * (facility LOG_AUTHPRIV).  syslog(3) can block when the log daemon stalls,
 * so it runs on its own thread behind a bounded queue; when the queue is
 * full a line is dropped and counted.  The file remains the record of truth:
 * nothing here can delay or fail a write to it.
 */
#include "audit/audit_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#include "common/log.h"
#include "common/util.h"

#define SYSLOG_QUEUE 4096
#define SYSLOG_LINE_MAX 8192 /* longer lines are cut: syslog receivers cut them anyway */
#define SYSLOG_STOP_WAIT_S 2

struct audit_syslog {
	pthread_mutex_t mu;
	pthread_cond_t cv, stopped_cv;
	hsm_buf lines[SYSLOG_QUEUE];
	size_t head, count;
	bool stop, stopped;
	atomic_uint_fast64_t dropped;
	pthread_t thread;
};

static void *syslog_main(void *arg)
{
	audit_syslog *s = arg;
	hsm_buf line = {0};
	hsm_thread_name("hsmd-syslog");
	openlog("hsmd-audit", LOG_NDELAY | LOG_PID, LOG_AUTHPRIV);
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (s->count == 0 && !s->stop)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->count == 0)
			break;
		hsm_buf tmp = line;
		line = s->lines[s->head];
		s->lines[s->head] = tmp;
		s->head = (s->head + 1) % SYSLOG_QUEUE;
		s->count--;
		pthread_mutex_unlock(&s->mu);
		syslog(LOG_AUTHPRIV | LOG_INFO, "%.*s", (int)line.len, (const char *)line.data);
		line.len = 0;
		pthread_mutex_lock(&s->mu);
	}
	s->stopped = true;
	pthread_cond_signal(&s->stopped_cv);
	pthread_mutex_unlock(&s->mu);
	closelog();
	hsm_buf_free(&line);
	return NULL;
}

hsm_result audit_syslog_start(audit_syslog **out)
{
	audit_syslog *s = calloc(1, sizeof(*s));
	HSM_ENSURE(s != NULL, HSM_ERR_NOMEM, "out of memory");
	pthread_condattr_t ca; /* the stop waits by the monotonic clock, whatever the wall clock does */
	bool ok = pthread_condattr_init(&ca) == 0;
	ok = ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
	     pthread_mutex_init(&s->mu, NULL) == 0 && pthread_cond_init(&s->cv, NULL) == 0 &&
	     pthread_cond_init(&s->stopped_cv, &ca) == 0 &&
	     pthread_create(&s->thread, NULL, syslog_main, s) == 0;
	pthread_condattr_destroy(&ca);
	if (!ok) {
		free(s);
		return HSM_FAIL(HSM_ERR_INTERNAL, "cannot start audit syslog forwarding");
	}
	*out = s;
	return HSM_SUCCESS;
}

void audit_syslog_forward(audit_syslog *s, const uint8_t *line, size_t n)
{
	if (n > SYSLOG_LINE_MAX)
		n = SYSLOG_LINE_MAX;
	pthread_mutex_lock(&s->mu);
	bool ok = s->count < SYSLOG_QUEUE;
	if (ok) {
		hsm_buf *b = &s->lines[(s->head + s->count) % SYSLOG_QUEUE];
		b->len = 0;
		ok = hsm_ok(hsm_buf_put(b, line, n));
		if (ok) {
			s->count++;
			pthread_cond_signal(&s->cv);
		}
	}
	pthread_mutex_unlock(&s->mu);
	if (!ok)
		atomic_fetch_add(&s->dropped, 1);
}

uint64_t audit_syslog_dropped(const audit_syslog *s)
{
	return atomic_load(&s->dropped);
}

void audit_syslog_stop(audit_syslog *s)
{
	if (s == NULL)
		return;
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += SYSLOG_STOP_WAIT_S;
	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_signal(&s->cv);
	int rc = 0;
	while (!s->stopped && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&s->stopped_cv, &s->mu, &dl);
	bool stopped = s->stopped;
	pthread_mutex_unlock(&s->mu);
	if (!stopped) { /* syslog(3) is stuck: leave it, never hang shutdown */
		hsm_warn("audit syslog forwarding is stuck; not waiting for it");
		pthread_detach(s->thread);
		return;
	}
	pthread_join(s->thread, NULL);
	for (size_t i = 0; i < SYSLOG_QUEUE; i++)
		hsm_buf_free(&s->lines[i]);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	pthread_cond_destroy(&s->stopped_cv);
	free(s);
}
