/*
 * audit_syslog.c - best-effort forwarding of audit lines to syslog
 * (facility LOG_AUTHPRIV), written to the local log socket (/dev/log) in
 * the form syslog(3) writes (RFC 3164's, "<PRI>Mmm dd hh:mm:ss TAG[PID]: ").
 * Written here rather than through syslog(3), which says nothing of a line
 * it could not deliver: each one lost is counted.  A send can block when the
 * log daemon stalls, so it runs on its own thread behind a bounded queue;
 * when the queue is full a line is dropped and counted.  The file remains the
 * record of truth: nothing here can delay or fail a write to it.
 */
#include "audit/audit_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define SYSLOG_QUEUE 4096
#define SYSLOG_LINE_MAX 8192 /* longer lines are cut (counted): syslog receivers cut them anyway */
#define SYSLOG_STOP_WAIT_S 2
#define SYSLOG_TAG "hsmd-audit"
#define SYSLOG_HEADER_MAX 64 /* "<86>Dec  6 04:50:11 hsmd-audit[4194304]: " */
#define SYSLOG_RETRY_NS 1000000000ULL /* a socket that could not be reached: tried again after */

struct audit_syslog {
	pthread_mutex_t mu;
	pthread_cond_t cv, stopped_cv;
	hsm_buf lines[SYSLOG_QUEUE];
	size_t head, count;
	bool stop, stopped;
	atomic_uint_fast64_t dropped, cut;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	pthread_t thread;
};

/* The syslog thread's connection to the log socket. */
typedef struct log_conn {
	int fd, type;            /* -1 when not connected; SOCK_DGRAM or SOCK_STREAM */
	int err;                 /* errno of the last failure */
	uint64_t retry_ns;       /* not reached: not tried again before this (monotonic) */
	bool unreachable;        /* said in the log, once for the spell */
	uint64_t dropped_before; /* s->dropped when the spell began */
} log_conn;

/* Connects to the socket at path as syslog(3) does: datagrams, or a stream. */
static int log_connect(const char *path, int *type)
{
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, strlen(path) + 1); /* fits: audit_syslog_start checked */
	static const int types[] = {SOCK_DGRAM, SOCK_STREAM};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		int fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			*type = types[i];
			return fd;
		}
		int e = errno;
		close(fd);
		errno = e;
		if (e != EPROTOTYPE) /* a stream socket answers a datagram connect so */
			return -1;
	}
	return -1;
}

/* "<PRI>Mmm dd hh:mm:ss hsmd-audit[PID]: " in out (local time, as syslog(3) writes it). */
static size_t log_header(char *out, size_t cap)
{
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t now = time(NULL);
	struct tm tm;
	if (localtime_r(&now, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	int n = snprintf(out, cap, "<%d>%s %2d %02d:%02d:%02d " SYSLOG_TAG "[%ld]: ",
	                 LOG_AUTHPRIV | LOG_INFO, months[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour,
	                 tm.tm_min, tm.tm_sec, (long)getpid());
	return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static bool send_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/*
 * Sends msg (a header and a line, and a NUL that ends the message on a stream
 * socket only, as syslog(3) frames it), connecting first when need be, and
 * once more after a failed send (the daemon restarted).  False when it could
 * not be sent (c->err says why); a socket not reached is tried again a second
 * later, the lines meanwhile not sent.
 */
static bool log_send(audit_syslog *s, log_conn *c, const hsm_buf *msg)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (c->fd < 0 && c->retry_ns != 0 && hsm_mono_ns() < c->retry_ns)
			return false;
		if (c->fd < 0)
			c->fd = log_connect(s->path, &c->type);
		if (c->fd >= 0 && send_all(c->fd, msg->data, msg->len - (c->type != SOCK_STREAM)))
			return true;
		c->err = errno;
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
	}
	c->retry_ns = hsm_mono_ns() + SYSLOG_RETRY_NS;
	return false;
}

/* Says in the log when syslog stops taking lines (once a spell) and when it takes them again. */
static void log_reachability(audit_syslog *s, log_conn *c, bool sent)
{
	if (!sent && !c->unreachable) {
		c->unreachable = true;
		c->dropped_before = atomic_load(&s->dropped);
		hsm_warn("audit_syslog: syslog cannot be reached at %s (%s): audit records are not "
		         "forwarded until it can be (hsmd_audit_syslog_dropped_total counts them)",
		         s->path, strerror(c->err));
	} else if (sent && c->unreachable) {
		c->unreachable = false;
		hsm_info("audit_syslog: syslog at %s takes audit records again (%llu were not "
		         "forwarded meanwhile)",
		         s->path, (unsigned long long)(atomic_load(&s->dropped) - c->dropped_before));
	}
}

static void *syslog_main(void *arg)
{
	audit_syslog *s = arg;
	hsm_buf line = {0}, msg = {0};
	log_conn c = {.fd = -1};
	hsm_thread_name("hsmd-syslog");
	/* Connected at once, as syslog(3)'s LOG_NDELAY: a socket not there is said at start. */
	c.fd = log_connect(s->path, &c.type);
	if (c.fd < 0) {
		c.err = errno;
		c.retry_ns = hsm_mono_ns() + SYSLOG_RETRY_NS;
		log_reachability(s, &c, false);
	}
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
		char header[SYSLOG_HEADER_MAX];
		size_t hn = log_header(header, sizeof(header));
		msg.len = 0;
		bool built = hsm_ok(hsm_buf_put(&msg, header, hn)) &&
		             hsm_ok(hsm_buf_put(&msg, line.data, line.len)) &&
		             hsm_ok(hsm_buf_put(&msg, "", 1));
		bool sent = built && log_send(s, &c, &msg);
		if (!sent)
			atomic_fetch_add(&s->dropped, 1);
		if (built) /* out of memory says nothing of the socket */
			log_reachability(s, &c, sent);
		line.len = 0;
		pthread_mutex_lock(&s->mu);
	}
	s->stopped = true;
	pthread_cond_signal(&s->stopped_cv);
	pthread_mutex_unlock(&s->mu);
	if (c.fd >= 0)
		close(c.fd);
	hsm_buf_free(&line);
	hsm_buf_free(&msg);
	return NULL;
}

hsm_result audit_syslog_start(const char *path, audit_syslog **out)
{
	if (path == NULL)
		path = _PATH_LOG;
	audit_syslog *s = calloc(1, sizeof(*s));
	HSM_ENSURE(s != NULL, HSM_ERR_NOMEM, "out of memory");
	if (strlen(path) >= sizeof(s->path)) {
		free(s);
		return HSM_FAIL(HSM_ERR_VALIDATION, "the syslog socket's path is too long: %s", path);
	}
	memcpy(s->path, path, strlen(path) + 1);
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
	if (n > SYSLOG_LINE_MAX) {
		n = SYSLOG_LINE_MAX;
		atomic_fetch_add(&s->cut, 1);
	}
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

uint64_t audit_syslog_cut(const audit_syslog *s)
{
	return atomic_load(&s->cut);
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
