/*
 * clockshift.c - an LD_PRELOAD library that moves a test program's wall clock.
 *
 * The wall clock (CLOCK_REALTIME and its coarse twin, time(), gettimeofday())
 * reads the real one plus the whole seconds written in the file named by
 * HSM_TEST_CLOCK_SHIFT_FILE (read again at most every 10 ms), as if an
 * administrator or a time server had stepped the clock.  The monotonic and
 * boot-time clocks do not move.  A condition-variable wait with a
 * wall-clock deadline waits by the moved clock, as the kernel's would after a
 * real step; waits on condition variables made for CLOCK_MONOTONIC are left
 * alone.  With HSM_TEST_CLOCK_SHIFT_ELAPSED set, the boot-time clock moves too: time
 * that passed rather than a step.  Built by the tests that use it (test_clock_steps.py).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static long long shift_s, read_at_ns;

static int real_clock(clockid_t id, struct timespec *ts)
{
	return (int)syscall(SYS_clock_gettime, id, ts);
}

static long long mono_ns(void)
{
	struct timespec ts;
	real_clock(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long shift(void)
{
	long long now = mono_ns();
	pthread_mutex_lock(&mu);
	if (read_at_ns == 0 || now - read_at_ns > 10000000LL) {
		read_at_ns = now;
		const char *path = getenv("HSM_TEST_CLOCK_SHIFT_FILE");
		int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC) : -1;
		if (fd >= 0) {
			char b[32] = {0};
			ssize_t n = read(fd, b, sizeof(b) - 1);
			close(fd);
			if (n > 0)
				shift_s = strtoll(b, NULL, 10);
		}
	}
	long long s = shift_s;
	pthread_mutex_unlock(&mu);
	return s;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int r = real_clock(id, ts);
	if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		ts->tv_sec += shift();
	/* HSM_TEST_CLOCK_SHIFT_ELAPSED set: the shift is time that passed, not a step of the
	 * wall clock, so the boot-time clock (hsmd's measure of elapsed time) moves too. */
	else if (r == 0 && id == CLOCK_BOOTTIME && getenv("HSM_TEST_CLOCK_SHIFT_ELAPSED") != NULL)
		ts->tv_sec += shift();
	return r;
}

time_t time(time_t *out)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (out != NULL)
		*out = ts.tv_sec;
	return ts.tv_sec;
}

int gettimeofday(struct timeval *tv, void *tz)
{
	(void)tz;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	tv->tv_sec = ts.tv_sec; /* glibc declares tv nonnull */
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}

/* The condition variables made for CLOCK_MONOTONIC (their waits are not moved). */
#define MONO_MAX 1024
static const pthread_cond_t *mono[MONO_MAX];
static int n_mono;

typedef int (*cond_init_fn)(pthread_cond_t *, const pthread_condattr_t *);
typedef int (*cond_wait_fn)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);

int pthread_cond_init(pthread_cond_t *c, const pthread_condattr_t *attr)
{
	static cond_init_fn real;
	if (real == NULL)
		real = (cond_init_fn)dlvsym(RTLD_NEXT, "pthread_cond_init", "GLIBC_2.3.2");
	clockid_t id = CLOCK_REALTIME;
	if (attr != NULL)
		pthread_condattr_getclock(attr, &id);
	pthread_mutex_lock(&mu);
	for (int i = 0; i < n_mono; i++)
		if (mono[i] == c)
			mono[i] = mono[--n_mono]; /* made again, perhaps for the other clock */
	if (id == CLOCK_MONOTONIC && n_mono < MONO_MAX)
		mono[n_mono++] = c;
	pthread_mutex_unlock(&mu);
	return real(c, attr);
}

static int is_mono(const pthread_cond_t *c)
{
	int found = 0;
	pthread_mutex_lock(&mu);
	for (int i = 0; i < n_mono && !found; i++)
		found = mono[i] == c;
	pthread_mutex_unlock(&mu);
	return found;
}

int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *until)
{
	static cond_wait_fn real;
	if (real == NULL)
		real = (cond_wait_fn)dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
	if (is_mono(c))
		return real(c, m, until);
	/* Waits by the moved clock, a slice of at most 50 ms at a time, so a step shows. */
	for (;;) {
		struct timespec now, slice;
		clock_gettime(CLOCK_REALTIME, &now);
		long long left = (until->tv_sec - now.tv_sec) * 1000000000LL +
		                 (until->tv_nsec - now.tv_nsec);
		if (left <= 0)
			return ETIMEDOUT;
		if (left > 50000000LL)
			left = 50000000LL;
		real_clock(CLOCK_REALTIME, &slice);
		long long ns = slice.tv_nsec + left;
		slice.tv_sec += ns / 1000000000LL;
		slice.tv_nsec = ns % 1000000000LL;
		int r = real(c, m, &slice);
		if (r != ETIMEDOUT)
			return r;
	}
}
