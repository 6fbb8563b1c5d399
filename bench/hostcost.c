/*
 * hostcost - what the host charges for the kernel work every request pays,
 * recorded with each benchmark run so that runs on differently behaving
 * hosts can be told apart (bench/PROFILE.md item 49).
 *
 * On a virtual machine the price of entering the kernel and of switching
 * between threads and processes depends on the hypervisor and the guest
 * kernel, and has been seen to change between boots of the same kind of
 * machine enough to move every result: hsmd makes about three system calls
 * per request, SoftHSMv2 three to seven getpid() calls per operation, and
 * OpenSSL 3.0's random generator one getpid() per draw (its fork check).
 * Measured, each the median of five rounds:
 *   syscall_ns         one system call that does nothing (getpid)
 *   rand16_ns          RAND_bytes of 16 bytes (OpenSSL's public generator)
 *   thread_rtt_us      a byte sent and answered through two pipes between
 *                      two threads of one process on one core (two switches)
 *   process_rtt_us     the same between two processes on one core
 *
 * usage: hostcost   (prints one JSON line)
 */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#define ROUNDS 5
#define SYSCALLS 100000
#define DRAWS 100000
#define TRIPS 20000

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v)
{
	qsort(v, ROUNDS, sizeof(*v), cmp_double);
	return v[ROUNDS / 2];
}

static double syscall_ns(void)
{
	double v[ROUNDS];
	for (int r = 0; r < ROUNDS; r++) {
		double t0 = now_s();
		for (int i = 0; i < SYSCALLS; i++)
			(void)syscall(SYS_getpid);
		v[r] = (now_s() - t0) / SYSCALLS * 1e9;
	}
	return median(v);
}

static double rand16_ns(void)
{
	unsigned char b[16];
	double v[ROUNDS];
	for (int r = 0; r < ROUNDS; r++) {
		double t0 = now_s();
		for (int i = 0; i < DRAWS; i++) {
			if (RAND_bytes(b, (int)sizeof(b)) != 1)
				return -1;
		}
		v[r] = (now_s() - t0) / DRAWS * 1e9;
	}
	return median(v);
}

/* The answering side: echoes each byte from in to out until in closes. */
typedef struct echo {
	int in, out;
} echo;

static void *echo_main(void *arg)
{
	const echo *e = arg;
	char c;
	while (read(e->in, &c, 1) == 1) {
		if (write(e->out, &c, 1) != 1)
			break;
	}
	return NULL;
}

/* Median round trip in microseconds, or -1 when the pipes or the peer fail. */
static double round_trips(int to_peer, int from_peer)
{
	double v[ROUNDS];
	char c = 'x';
	for (int r = 0; r < ROUNDS; r++) {
		double t0 = now_s();
		for (int i = 0; i < TRIPS; i++) {
			if (write(to_peer, &c, 1) != 1 || read(from_peer, &c, 1) != 1)
				return -1;
		}
		v[r] = (now_s() - t0) / TRIPS * 1e6;
	}
	return median(v);
}

/* threads: a thread of this process answers; otherwise a child process. */
static double switch_rtt_us(int threads)
{
	int a[2], b[2];
	if (pipe(a) != 0)
		return -1;
	if (pipe(b) != 0) {
		close(a[0]);
		close(a[1]);
		return -1;
	}
	echo e = {a[0], b[1]};
	pthread_t t;
	pid_t child = -1;
	double rtt = -1;
	if (threads) {
		if (pthread_create(&t, NULL, echo_main, &e) != 0)
			goto out;
	} else {
		child = fork();
		if (child < 0)
			goto out;
		if (child == 0) {
			close(a[1]);
			close(b[0]);
			echo_main(&e);
			_exit(0);
		}
	}
	rtt = round_trips(a[1], b[0]);
	close(a[1]); /* the peer reads end-of-file and stops */
	a[1] = -1;
	if (threads)
		pthread_join(t, NULL);
	else
		waitpid(child, NULL, 0);
out:
	if (a[1] >= 0)
		close(a[1]);
	close(a[0]);
	close(b[0]);
	close(b[1]);
	return rtt;
}

int main(void)
{
	/* One core for the whole program (and the child): every trip is two switches. */
	cpu_set_t one;
	int cpu = sched_getcpu();
	CPU_ZERO(&one);
	CPU_SET((size_t)(cpu >= 0 ? cpu : 0), &one);
	int pinned = sched_setaffinity(0, sizeof(one), &one) == 0;
	double sc = syscall_ns(), rnd = rand16_ns();
	double thr = pinned ? switch_rtt_us(1) : -1, proc = pinned ? switch_rtt_us(0) : -1;
	printf("{\"syscall_ns\":%.0f,\"rand16_ns\":%.0f,\"thread_rtt_us\":%.2f,"
	       "\"process_rtt_us\":%.2f}\n",
	       sc, rnd, thr, proc);
	return sc > 0 && rnd > 0 && thr > 0 && proc > 0 ? 0 : 1;
}
