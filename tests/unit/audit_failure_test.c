/*
 * audit_failure_test.c - fail closed in bounded time, then recover by
 * itself: a real full filesystem (a tiny tmpfs mounted here, or a file size
 * limit where mounting is not allowed), a writer stuck in write or fsync
 * (the watchdog), a slow fsync (the lag bound), an fsync that fails, and a
 * retention pass that hangs, also while the log closes.  After each, the log
 * is gap-free and its chain verifies.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "audit_test_util.h"

#define DEADLINE_MS 200
/* The watchdog looks at least every 50 ms; the rest is scheduling slack. */
#define BOUND_MS (DEADLINE_MS + 50 + 250)

/* Appends records from..to, each acknowledged; the number after the last. */
static unsigned append_records(hsm_audit *a, unsigned from, unsigned to)
{
	for (unsigned i = from; i <= to; i++) {
		hsm_audit_record r = t_record(i);
		assert_true(hsm_ok(hsm_audit_append(a, &r)));
	}
	return to + 1;
}

typedef struct done_rec {
	uint64_t submit_ms;
	atomic_ullong done_ms;
	atomic_int err; /* -1 until done */
} done_rec;

static void on_done(void *arg, hsm_result r)
{
	done_rec *d = arg;
	atomic_store(&d->err, (int)r.err);
	atomic_store(&d->done_ms, t_now_ms());
}

static bool wait_healthy(hsm_audit *a, uint64_t ms)
{
	uint64_t end = t_now_ms() + ms;
	while (!hsm_audit_healthy(a) && t_now_ms() < end)
		usleep(10000);
	return hsm_audit_healthy(a);
}

/* Whether new requests are taken (the space kept ahead is checked on its own timer). */
static bool wait_accepting(hsm_audit *a, bool want, uint64_t ms)
{
	uint64_t end = t_now_ms() + ms;
	while (hsm_audit_accepting(a) != want && t_now_ms() < end)
		usleep(5000);
	return hsm_audit_accepting(a) == want;
}

static bool wait_done(done_rec *d, size_t n, uint64_t ms)
{
	uint64_t end = t_now_ms() + ms;
	for (;;) {
		size_t left = 0;
		for (size_t i = 0; i < n; i++)
			left += atomic_load(&d[i].err) == -1;
		if (left == 0)
			return true;
		if (t_now_ms() > end)
			return false;
		usleep(2000);
	}
}

/*
 * Waits (3 s at most) until every record acknowledged so far is durable.  A
 * record a sync has not covered yet is written again after an outage, so a
 * test that takes the live file away must wait for the sync, not sleep.
 */
static void wait_synced(hsm_audit *a)
{
	uint64_t below = hsm_audit_next_seq(a), t0 = t_now_ms();
	while (hsm_audit_durable_seq(a) < below && t_now_ms() - t0 < 3000)
		usleep(1000);
	assert_true(hsm_audit_durable_seq(a) >= below);
}

/* Whether some file of the log holds the event op, with each of the texts after it. */
static bool log_has_event(const char *dir, const char *op, const char *const *texts, size_t n)
{
	static char paths[T_MAX_FILES][PATH_MAX];
	size_t nf = t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES);
	char want[128];
	snprintf(want, sizeof(want), "\"op\":\"%s\"", op);
	bool found = false;
	for (size_t i = 0; i < nf && !found; i++) {
		char *s = t_slurp(paths[i], NULL);
		char *ev = strstr(s, want);
		found = ev != NULL;
		for (size_t j = 0; j < n && found; j++)
			found = strstr(ev, texts[j]) != NULL;
		free(s);
	}
	return found;
}

static void check_recovered_log(const char *dir, const char *cause)
{
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	assert_int_equal(r.first_seq, 1);
	assert_int_equal(r.records, r.last_seq); /* no sequence gap */
	const char *texts[] = {cause, "\"refused\":\"", "\"duration_ms\":\""};
	assert_true(log_has_event(dir, "AuditOutageEnded", texts, 3));
}

/* ---- A full filesystem --------------------------------------------------- */

typedef struct space {
	char mnt[PATH_MAX];
	char filler[PATH_MAX];
	bool mounted;
	struct rlimit saved;
} space;

/* Makes the log directory's filesystem full (tmpfs) or its files unable to grow (rlimit). */
static void space_setup(space *s, char dir[PATH_MAX])
{
	t_mkdtemp(s->mnt, "audit-full");
	/* Room for the space the log keeps ahead of its file (AUDIT_RESERVE_BYTES) and more. */
	s->mounted = mount("tmpfs", s->mnt, "tmpfs", 0, "size=16m,mode=0700") == 0;
	if (!s->mounted)
		print_message("tmpfs mount not permitted (%s): using RLIMIT_FSIZE instead\n",
		              strerror(errno));
	assert_true(snprintf(dir, PATH_MAX, "%s/log", s->mnt) < PATH_MAX);
	assert_true(snprintf(s->filler, sizeof(s->filler), "%s/filler", s->mnt) < PATH_MAX);
}

static void space_fill(space *s, const char *current_file)
{
	if (s->mounted) {
		int fd = open(s->filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(fd >= 0);
		char block[4096];
		memset(block, 'z', sizeof(block));
		while (write(fd, block, sizeof(block)) > 0)
			;
		assert_int_equal(errno, ENOSPC);
		/* Leave room for a few dozen records, so the disk fills while in use. */
		off_t size = lseek(fd, 0, SEEK_END);
		assert_int_equal(ftruncate(fd, size - 65536), 0);
		close(fd);
		return;
	}
	struct stat st;
	assert_int_equal(stat(current_file, &st), 0);
	signal(SIGXFSZ, SIG_IGN); /* the write fails with EFBIG instead */
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &s->saved), 0);
	struct rlimit lim = {(rlim_t)st.st_size + 4096, s->saved.rlim_max};
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
}

static void space_free(space *s)
{
	if (s->mounted)
		assert_int_equal(unlink(s->filler), 0);
	else
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &s->saved), 0);
}

static void space_teardown(space *s)
{
	if (s->mounted)
		assert_int_equal(umount(s->mnt), 0);
	t_rm_rf(s->mnt);
}

static void test_full_disk_fails_closed_then_recovers(void **state)
{
	(void)state;
	space sp;
	char dir[PATH_MAX];
	space_setup(&sp, dir);
	hsm_audit_config c = t_config(dir);
	c.io_deadline_ms = DEADLINE_MS;
	c.retry_interval_ms = 50;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	space_fill(&sp, paths[0]);

	/* Submit until the log refuses; every accepted record must be answered in time (the
	 * records of requests already admitted fill the space kept ahead first). */
	enum { MAX = 60000 };
	done_rec *d = calloc(MAX, sizeof(*d));
	assert_non_null(d);
	size_t n = 0;
	bool refused = false;
	while (n < MAX && !refused) {
		atomic_store(&d[n].err, -1);
		d[n].submit_ms = t_now_ms();
		hsm_audit_record r = t_record((unsigned)n);
		hsm_result res = hsm_audit_submit(a, &r, on_done, &d[n]);
		if (hsm_failed(res)) {
			assert_int_equal(res.err, HSM_ERR_AUDIT_UNAVAILABLE);
			refused = true;
		} else {
			n++;
		}
		if (n % 8 == 0)
			usleep(1000);
	}
	assert_true(refused);
	assert_true(wait_done(d, n, BOUND_MS));
	size_t ok = 0, failed = 0;
	for (size_t i = 0; i < n; i++) {
		int e = atomic_load(&d[i].err);
		assert_true(e == HSM_OK || e == HSM_ERR_AUDIT_UNAVAILABLE);
		if (e == HSM_OK) {
			ok++;
		} else {
			failed++;
			assert_true(atomic_load(&d[i].done_ms) - d[i].submit_ms <= BOUND_MS);
		}
	}
	print_message("full disk: %zu written, %zu failed, then refused at submit\n", ok, failed);
	assert_true(ok > 0);
	assert_false(hsm_audit_healthy(a));
	assert_false(hsm_audit_accepting(a));
	hsm_audit_record r = t_record(1);
	assert_int_equal(hsm_audit_append(a, &r).err, HSM_ERR_AUDIT_UNAVAILABLE);

	/* Space comes back: the log resumes by itself. */
	space_free(&sp);
	assert_true(wait_healthy(a, 3000));
	assert_true(wait_accepting(a, true, 3000));
	for (unsigned i = 0; i < 10; i++) {
		r = t_record(i);
		assert_true(hsm_ok(hsm_audit_append(a, &r)));
	}
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.outages, 1);
	assert_true(st.refused >= failed + 2);
	hsm_audit_close(a);
	check_recovered_log(dir, sp.mounted ? "No space left on device" : "File too large");
	free(d);
	space_teardown(&sp);
}

static int reserve_enospc_hook(void *arg, hsm_audit_io_op op)
{
	return op == HSM_AUDIT_IO_RESERVE && atomic_load((atomic_bool *)arg) ? ENOSPC : 0;
}

/*
 * The disk fills while requests are served: the space kept ahead of the
 * file runs low first, and the log stops accepting new requests while the
 * records of those already admitted (submitted after the check) are all
 * written, none refused, so no change a request made goes unrecorded.  When
 * space comes back, requests are accepted again.  On a real tmpfs when one
 * can be mounted, else by making the allocation ahead fail.
 */
static void test_full_disk_refuses_before_records_fail(void **state)
{
	(void)state;
	space sp;
	char dir[PATH_MAX];
	space_setup(&sp, dir);
	atomic_bool no_room = false;
	hsm_audit_config c = t_config(dir);
	c.io_deadline_ms = DEADLINE_MS;
	c.retry_interval_ms = 50;
	c.test_io_hook = reserve_enospc_hook;
	c.test_io_arg = &no_room;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	assert_true(wait_accepting(a, true, 2000));
	if (sp.mounted) { /* fill it all: what is left is the space kept ahead of the file */
		int fd = open(sp.filler, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(fd >= 0);
		char block[4096];
		memset(block, 'z', sizeof(block));
		while (write(fd, block, sizeof(block)) > 0)
			;
		assert_int_equal(errno, ENOSPC);
		close(fd);
	} else {
		atomic_store(&no_room, true);
	}
	/* Requests are served while the log accepts them, each record submitted after the check. */
	enum { MAX = 60000, IN_FLIGHT = 200 };
	done_rec *d = calloc(MAX, sizeof(*d));
	assert_non_null(d);
	size_t n = 0;
	while (n < MAX - IN_FLIGHT && hsm_audit_accepting(a)) {
		atomic_store(&d[n].err, -1);
		hsm_audit_record r = t_record((unsigned)n);
		assert_true(hsm_ok(hsm_audit_submit(a, &r, on_done, &d[n])));
		n++;
		if (n % 64 == 0)
			assert_true(wait_done(d, n, BOUND_MS)); /* as served requests wait on theirs */
	}
	assert_true(wait_accepting(a, false, 3000));
	assert_true(hsm_audit_low_space(a));
	/* Requests admitted just before the log stopped accepting: their records are written. */
	for (size_t i = 0; i < IN_FLIGHT; i++, n++) {
		atomic_store(&d[n].err, -1);
		hsm_audit_record r = t_record((unsigned)n);
		assert_true(hsm_ok(hsm_audit_submit(a, &r, on_done, &d[n])));
	}
	assert_true(wait_done(d, n, BOUND_MS));
	for (size_t i = 0; i < n; i++)
		assert_int_equal(atomic_load(&d[i].err), HSM_OK);
	assert_true(hsm_audit_healthy(a));
	/* Requests refused meanwhile get no record each, only a count. */
	for (int i = 0; i < 3; i++)
		hsm_audit_note_refused(a);
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.outages, 0);
	assert_int_equal(st.refused, 0);
	assert_true(st.low_space);
	print_message("low space after %zu records; %d in flight written\n", n - IN_FLIGHT,
	              (int)IN_FLIGHT);
	/* Space comes back: requests are accepted again. */
	if (sp.mounted)
		assert_int_equal(unlink(sp.filler), 0);
	atomic_store(&no_room, false);
	assert_true(wait_accepting(a, true, 3000));
	assert_false(hsm_audit_low_space(a));
	hsm_audit_record r = t_record(1);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	hsm_audit_close(a);
	hsm_audit_verify_report v = t_verify_dir(dir, NULL, false);
	assert_true(v.valid);
	assert_int_equal(v.records, v.last_seq); /* no sequence gap */
	const char *refused[] = {"\"refused\":\"3\""};
	assert_true(log_has_event(dir, "AuditLowSpaceEnded", refused, 1));
	free(d);
	if (sp.mounted)
		assert_int_equal(umount(sp.mnt), 0);
	t_rm_rf(sp.mnt);
}

/* ---- A stuck device (watchdog) and a failing fsync ----------------------- */

typedef struct stall {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stuck;
	hsm_audit_io_op op;
	atomic_int fail_errno;
	atomic_int hits;
} stall;

static int stall_hook(void *arg, hsm_audit_io_op op)
{
	stall *s = arg;
	int e = atomic_load(&s->fail_errno);
	if (e != 0 && op == HSM_AUDIT_IO_SYNC)
		return e;
	pthread_mutex_lock(&s->mu);
	while (s->stuck && op == s->op) {
		atomic_fetch_add(&s->hits, 1);
		pthread_cond_wait(&s->cv, &s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static void set_stuck(stall *s, bool stuck)
{
	pthread_mutex_lock(&s->mu);
	s->stuck = stuck;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* A log whose I/O steps of kind s->op block while s->stuck (set s's fields first). */
static hsm_audit_config stall_config(stall *s, const char *dir)
{
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	hsm_audit_config c = t_config(dir);
	c.test_io_hook = stall_hook;
	c.test_io_arg = s;
	return c;
}

/* Waits (up to ms) until an I/O step of s's kind is stuck in it. */
static bool wait_stuck(stall *s, uint64_t ms)
{
	uint64_t t0 = t_now_ms();
	while (atomic_load(&s->hits) == 0 && t_now_ms() - t0 < ms)
		usleep(1000);
	return atomic_load(&s->hits) >= 1;
}

/* Frees s and removes the log's directory. */
static void stall_done(stall *s, const char *dir)
{
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	t_rm_rf(dir);
}

static void run_stall(hsm_audit_io_op op)
{
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-stall");
	stall s = {.stuck = false, .op = op};
	hsm_audit_config c = stall_config(&s, dir);
	c.io_deadline_ms = DEADLINE_MS;
	c.retry_interval_ms = 50;
	c.fsync_interval_ms = 5;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_records(a, 0, 4);
	usleep(20000); /* let the group fsync of those run */
	set_stuck(&s, true);
	enum { N = 50 };
	static done_rec d[N];
	for (size_t i = 0; i < N; i++) {
		atomic_store(&d[i].err, -1);
		d[i].submit_ms = t_now_ms();
		hsm_audit_record r = t_record((unsigned)(100 + i));
		hsm_result res = hsm_audit_submit(a, &r, on_done, &d[i]);
		if (hsm_failed(res)) { /* already refused: counts as answered now */
			assert_int_equal(res.err, HSM_ERR_AUDIT_UNAVAILABLE);
			atomic_store(&d[i].err, HSM_ERR_AUDIT_UNAVAILABLE);
			atomic_store(&d[i].done_ms, t_now_ms());
		}
		usleep(2000);
	}
	/* Every callback fires within the bound although the writer is still blocked. */
	assert_true(wait_done(d, N, BOUND_MS + 200));
	size_t unavailable = 0;
	for (size_t i = 0; i < N; i++) {
		uint64_t took = atomic_load(&d[i].done_ms) - d[i].submit_ms;
		if (took > BOUND_MS)
			print_message("record %zu answered after %llu ms\n", i, (unsigned long long)took);
		assert_true(took <= BOUND_MS);
		unavailable += atomic_load(&d[i].err) == HSM_ERR_AUDIT_UNAVAILABLE;
	}
	assert_true(atomic_load(&s.hits) >= 1);
	/*
	 * The queue is FIFO and nothing is acknowledged once the writer is stuck:
	 * the successes are a prefix of the submissions (how long it is depends on
	 * scheduling), and the stall did refuse the rest.
	 */
	assert_true(unavailable >= 1);
	for (size_t i = 0; i + 1 < N; i++)
		assert_false(atomic_load(&d[i].err) == HSM_ERR_AUDIT_UNAVAILABLE &&
		             atomic_load(&d[i + 1].err) == HSM_OK);
	assert_false(hsm_audit_healthy(a));
	uint64_t t0 = t_now_ms();
	hsm_audit_record r = t_record(7);
	assert_int_equal(hsm_audit_append(a, &r).err, HSM_ERR_AUDIT_UNAVAILABLE);
	assert_true(t_now_ms() - t0 < 50); /* refused at once, not after a wait */

	set_stuck(&s, false);
	assert_true(wait_healthy(a, 3000));
	for (unsigned i = 0; i < 5; i++) {
		r = t_record(200 + i);
		assert_true(hsm_ok(hsm_audit_append(a, &r)));
	}
	hsm_audit_close(a);
	check_recovered_log(dir, "deadline exceeded");
	stall_done(&s, dir);
}

static void test_stuck_write_watchdog(void **state)
{
	(void)state;
	run_stall(HSM_AUDIT_IO_WRITE);
}

static void test_stuck_fsync_watchdog(void **state)
{
	(void)state;
	run_stall(HSM_AUDIT_IO_SYNC);
}

/*
 * A retention pass that does not return (a directory on a hung device) holds
 * up no record: the writer goes on writing, acknowledging and rotating
 * beside it, and the log stays healthy.
 */
static void test_stuck_retention_holds_up_nothing(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-stuck-retention");
	stall s = {.stuck = true, .op = HSM_AUDIT_IO_RETENTION};
	hsm_audit_config c = stall_config(&s, dir);
	c.io_deadline_ms = DEADLINE_MS;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a))); /* asks for a pass, which blocks */
	/* The records go in once the pass is stuck (the sweeper thread may start late on a busy machine). */
	assert_true(wait_stuck(&s, 5000));
	enum { N = 50 };
	static done_rec d[N];
	for (size_t i = 0; i < N; i++) {
		atomic_store(&d[i].err, -1);
		d[i].submit_ms = t_now_ms();
		hsm_audit_record r = t_record((unsigned)i);
		assert_true(hsm_ok(hsm_audit_submit(a, &r, on_done, &d[i])));
		if (i == N / 2)
			assert_true(hsm_ok(hsm_audit_rotate(a))); /* asks for another pass */
	}
	assert_true(wait_done(d, N, 10000));
	for (size_t i = 0; i < N; i++)
		assert_int_equal(atomic_load(&d[i].err), HSM_OK);
	assert_true(hsm_audit_healthy(a));
	assert_true(atomic_load(&s.hits) >= 1);
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_true(st.retention_running);
	set_stuck(&s, false);
	hsm_audit_close(a); /* the pass asked for by the rotation runs, then the log closes */
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_true(rep.valid);
	assert_int_equal(rep.records, N + 3); /* and the open event, the rotate and shutdown checkpoints */
	stall_done(&s, dir);
}

/* Waits up to 10 s for the child pid to exit with 0; kills it and fails with why if it hangs. */
static void expect_child_passes(pid_t pid, const char *why)
{
	int status = 0;
	pid_t got = 0;
	for (int i = 0; i < 1000 && got == 0; i++) {
		got = waitpid(pid, &status, WNOHANG);
		if (got == 0)
			usleep(10000);
	}
	if (got == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail_msg("%s", why);
	}
	assert_int_equal(got, pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * Closes a log whose I/O step op hangs, in a child process (a cmocka
 * assertion there would go on with the parent's tests): 0 when all holds,
 * else the number of the check that failed.  The step is stuck from the
 * start for a retention pass (asked for at open), after one record for a
 * write or an fsync.  close must return within its bound; the parent then
 * checks the log it left.
 */
static int close_while_stuck(const char *dir, hsm_audit_io_op op)
{
	stall s = {.stuck = op == HSM_AUDIT_IO_RETENTION, .op = op};
	hsm_audit_config c = stall_config(&s, dir);
	c.io_deadline_ms = DEADLINE_MS;
	hsm_audit *a = NULL;
	if (hsm_failed(hsm_audit_open(&c, &a)))
		return 1;
	hsm_audit_record r = t_record(0);
	if (hsm_failed(hsm_audit_append(a, &r)))
		return 2;
	if (op != HSM_AUDIT_IO_RETENTION) {
		usleep(30000); /* the record's group fsync */
		set_stuck(&s, true);
		r = t_record(1);
		hsm_err e = hsm_audit_append(a, &r).err; /* a stuck fsync may still acknowledge it */
		if (e != HSM_ERR_AUDIT_UNAVAILABLE && (op == HSM_AUDIT_IO_WRITE || e != HSM_OK))
			return 3;
		for (int i = 0; i < 2000 && hsm_audit_healthy(a); i++) /* the watchdog */
			usleep(1000);
		if (hsm_audit_healthy(a))
			return 3;
	}
	for (int i = 0; i < 2000 && atomic_load(&s.hits) == 0; i++)
		usleep(1000);
	if (atomic_load(&s.hits) == 0)
		return 4;
	uint64_t t0 = t_now_ms();
	hsm_audit_close(a); /* waits up to its bound, then leaves the stuck thread */
	uint64_t took = t_now_ms() - t0;
	uint64_t bound = op == HSM_AUDIT_IO_WRITE ? 2 * DEADLINE_MS + 2000 : DEADLINE_MS + 1000;
	if (took > bound + 1000)
		return 5;
	return 0;
}

static void run_close_while_stuck(hsm_audit_io_op op)
{
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-stuck-close");
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(close_while_stuck(dir, op));
	expect_child_passes(pid, "close hung on a stuck I/O step"); /* 10 s at most */
	/*
	 * With a retention pass stuck, the writer closed the log: the open event,
	 * record 0 and the shutdown checkpoint.  With the writer or the fsync
	 * stuck, the log ends as after a crash (no shutdown checkpoint), and
	 * holds at least what was acknowledged: the open event and record 0.
	 */
	bool closed = op == HSM_AUDIT_IO_RETENTION;
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, !closed);
	assert_true(rep.valid);
	if (closed)
		assert_int_equal(rep.records, 3);
	else
		assert_true(rep.records >= 2);
	t_rm_rf(dir);
}

/*
 * A thread still stuck in I/O when the log closes: close waits for it up
 * to a bound, then returns, leaving that thread and the log's state behind
 * (freeing them under a thread that may wake would be worse).  In a child,
 * which _exits, since the state is leaked on purpose.
 */
static void test_close_leaves_a_stuck_retention_behind(void **state)
{
	(void)state;
	run_close_while_stuck(HSM_AUDIT_IO_RETENTION);
}

static void test_close_leaves_a_stuck_writer_behind(void **state)
{
	(void)state;
	run_close_while_stuck(HSM_AUDIT_IO_WRITE);
}

static void test_close_leaves_a_stuck_fsync_behind(void **state)
{
	(void)state;
	run_close_while_stuck(HSM_AUDIT_IO_SYNC);
}

/*
 * A slow fsync (inside the deadline) runs beside the writer: records keep
 * being acknowledged while it runs, until the oldest record not yet durable
 * is older than fsync_max_lag_ms; then they wait for the sync, and go out
 * once it finishes.  The log never turns unhealthy.
 */
static void test_slow_fsync_holds_acks_only_past_the_lag(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-lag");
	stall s = {.stuck = false, .op = HSM_AUDIT_IO_SYNC};
	hsm_audit_config c = stall_config(&s, dir);
	c.io_deadline_ms = 5000;
	c.fsync_interval_ms = 5;
	c.fsync_max_lag_ms = 300;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_record r = t_record(0);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	usleep(30000); /* its group fsync */

	set_stuck(&s, true);
	r = t_record(1);
	assert_true(hsm_ok(hsm_audit_append(a, &r))); /* A: written, its sync will hang */
	assert_true(wait_stuck(&s, 2000)); /* the sync covering A is stuck now */
	/* The stuck sync's time (and A's lag) began before this, however late the
	 * writer and its sync thread were scheduled: the waits below count from here. */
	uint64_t t0 = t_now_ms();

	/* B, inside the lag: acknowledged although the sync has not finished. */
	done_rec b = {.submit_ms = t_now_ms()};
	atomic_store(&b.err, -1);
	r = t_record(2);
	assert_true(hsm_ok(hsm_audit_submit(a, &r, on_done, &b)));
	assert_true(wait_done(&b, 1, 250));
	assert_int_equal(atomic_load(&b.err), HSM_OK);

	/* C, past the lag: held until the sync finishes. */
	while (t_now_ms() - t0 < 400)
		usleep(5000);
	done_rec d = {.submit_ms = t_now_ms()};
	atomic_store(&d.err, -1);
	r = t_record(3);
	assert_true(hsm_ok(hsm_audit_submit(a, &r, on_done, &d)));
	/* C's hold begins when the writer takes it up, which load may delay: its
	 * 200 ms are counted from when the hold is seen to have begun. */
	hsm_audit_stats st;
	uint64_t h0 = t_now_ms();
	do {
		usleep(1000);
		hsm_audit_get_stats(a, &st);
	} while (st.acks_held == 0 && t_now_ms() - h0 < 2000);
	assert_true(st.acks_held >= 1);
	assert_false(wait_done(&d, 1, 200));
	assert_true(hsm_audit_healthy(a));
	set_stuck(&s, false);
	assert_true(wait_done(&d, 1, 2000));
	assert_int_equal(atomic_load(&d.err), HSM_OK);
	assert_true(hsm_audit_healthy(a));
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.outages, 0);
	/* Counted for /metrics: C's wait (at least 200 ms, in one hold), and the
	 * stuck sync (at least 600 ms: from when it was seen stuck until released)
	 * among the others. */
	assert_true(st.acks_held >= 1);
	assert_true(st.acks_held_seconds >= 0.19);
	uint64_t syncs = 0, over_250ms = 0;
	for (size_t k = 0; k <= HSM_AUDIT_SYNC_BUCKETS; k++) {
		syncs += st.sync_buckets[k];
		if (k == HSM_AUDIT_SYNC_BUCKETS || hsm_audit_sync_bucket_le[k] > 0.25)
			over_250ms += st.sync_buckets[k];
	}
	assert_true(syncs >= 2);
	assert_true(over_250ms >= 1);
	assert_true(st.sync_seconds >= 0.59);
	hsm_audit_close(a);
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_true(rep.valid);
	assert_int_equal(rep.records, rep.last_seq);
	stall_done(&s, dir);
}

/*
 * No sync runs before fsync_interval_ms has passed, and records are
 * acknowledged meanwhile: an interval longer than fsync_max_lag_ms is cut to
 * it, so an acknowledged record is durable within the lag bound still.
 */
static void test_a_sync_interval_past_the_lag_is_cut_to_it(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-interval");
	hsm_audit_config c = t_config(dir);
	c.fsync_interval_ms = 10000;
	c.fsync_max_lag_ms = 50;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_record r = t_record(0);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	uint64_t below = hsm_audit_next_seq(a), t0 = t_now_ms();
	while (hsm_audit_durable_seq(a) < below && t_now_ms() - t0 < 3000)
		usleep(5000);
	assert_true(hsm_audit_durable_seq(a) >= below); /* not 10 s later */
	hsm_audit_close(a);
	t_rm_rf(dir);
}

/*
 * ack_durable: a record is acknowledged only once a sync made it durable.
 * Its sync stuck (inside the deadline), it waits; released, it goes, with
 * the records written meanwhile, which the next sync takes in one.
 */
static void test_durable_acks_wait_for_their_sync(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-durable");
	stall s = {.stuck = false, .op = HSM_AUDIT_IO_SYNC};
	hsm_audit_config c = stall_config(&s, dir);
	c.io_deadline_ms = 5000;
	c.ack_durable = true;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_record r = t_record(0);
	assert_true(hsm_ok(hsm_audit_append(a, &r))); /* returns once durable */
	assert_true(hsm_audit_durable_seq(a) >= hsm_audit_next_seq(a));

	set_stuck(&s, true);
	uint64_t first = hsm_audit_next_seq(a);
	done_rec d[4];
	for (size_t i = 0; i < 4; i++) {
		d[i] = (done_rec){.submit_ms = t_now_ms()};
		atomic_store(&d[i].err, -1);
		r = t_record(1 + i);
		assert_true(hsm_ok(hsm_audit_submit(a, &r, on_done, &d[i])));
		if (i == 0)
			assert_true(wait_stuck(&s, 2000)); /* the first one's sync is stuck */
	}
	/* Written (the writer does not wait for the sync), not acknowledged. */
	uint64_t t0 = t_now_ms();
	while (hsm_audit_next_seq(a) < first + 4 && t_now_ms() - t0 < 2000)
		usleep(1000);
	assert_true(hsm_audit_next_seq(a) >= first + 4);
	assert_false(wait_done(d, 4, 300));
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(atomic_load(&d[i].err), -1);
	assert_true(hsm_audit_healthy(a));
	set_stuck(&s, false);
	assert_true(wait_done(d, 4, 3000));
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(atomic_load(&d[i].err), HSM_OK);
	assert_true(hsm_audit_durable_seq(a) >= hsm_audit_next_seq(a));
	hsm_audit_close(a);
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_true(rep.valid);
	assert_int_equal(rep.records, rep.last_seq);
	stall_done(&s, dir);
}

/* ack_durable: a sync that fails, or outlasts the deadline, fails the records it held. */
static void run_durable_ack_failure(bool stuck)
{
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-durable-fail");
	stall s = {.stuck = false, .op = HSM_AUDIT_IO_SYNC};
	hsm_audit_config c = stall_config(&s, dir);
	c.io_deadline_ms = DEADLINE_MS;
	c.retry_interval_ms = 50;
	c.ack_durable = true;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_record r = t_record(0);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	if (stuck)
		set_stuck(&s, true);
	else
		atomic_store(&s.fail_errno, EIO);
	done_rec d = {.submit_ms = t_now_ms()};
	atomic_store(&d.err, -1);
	r = t_record(1);
	assert_true(hsm_ok(hsm_audit_submit(a, &r, on_done, &d)));
	assert_true(wait_done(&d, 1, BOUND_MS + 1000));
	assert_int_equal(atomic_load(&d.err), HSM_ERR_AUDIT_UNAVAILABLE);
	assert_false(hsm_audit_healthy(a));
	if (stuck)
		set_stuck(&s, false);
	else
		atomic_store(&s.fail_errno, 0);
	assert_true(wait_healthy(a, 5000));
	/* Back: acknowledged once durable again. */
	r = t_record(2);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	assert_true(hsm_audit_durable_seq(a) >= hsm_audit_next_seq(a));
	hsm_audit_close(a);
	stall_done(&s, dir);
}

static void test_durable_acks_fail_with_a_failed_sync(void **state)
{
	(void)state;
	run_durable_ack_failure(false);
}

static void test_durable_acks_fail_with_a_stuck_sync(void **state)
{
	(void)state;
	run_durable_ack_failure(true);
}

static void test_fsync_error_rewrites_and_recovers(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-eio");
	stall s = {.stuck = false};
	hsm_audit_config c = stall_config(&s, dir);
	c.io_deadline_ms = DEADLINE_MS;
	c.retry_interval_ms = 50;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_record r0 = t_record(0);
	assert_true(hsm_ok(hsm_audit_append(a, &r0)));
	usleep(20000); /* its group fsync */
	atomic_store(&s.fail_errno, EIO);
	/* Written (acknowledged) but its fsync fails: the log turns unhealthy. */
	hsm_audit_record r = t_record(1);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	uint64_t end = t_now_ms() + 1000;
	while (hsm_audit_healthy(a) && t_now_ms() < end)
		usleep(5000);
	assert_false(hsm_audit_healthy(a));
	usleep(200000); /* several retries fail too */
	assert_false(hsm_audit_healthy(a));
	atomic_store(&s.fail_errno, 0);
	assert_true(wait_healthy(a, 3000));
	r = t_record(2);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	hsm_audit_close(a);
	check_recovered_log(dir, "Input/output error");
	stall_done(&s, dir);
}

/*
 * The live file deleted, or replaced by a copy, under the running log:
 * records written after it would go to a file nobody can read.  The next
 * sync notices, the log refuses requests, and it goes on in a new file; what
 * was taken away shows as a gap, and nothing acknowledged since is lost.
 */
static void live_file_taken(bool replace)
{
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-taken");
	hsm_audit_config c = t_config(dir);
	c.retry_interval_ms = 50;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_records(a, 1, 5);
	wait_synced(a);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	if (replace) { /* a copy put in its place, as sed -i or an editor would */
		char tmp[PATH_MAX + 8];
		snprintf(tmp, sizeof(tmp), "%s.tmp", paths[0]);
		size_t n = 0;
		char *s = t_slurp(paths[0], &n);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		assert_true(fd >= 0 && write(fd, s, n) == (ssize_t)n);
		close(fd);
		free(s);
		assert_int_equal(rename(tmp, paths[0]), 0);
	} else {
		assert_int_equal(unlink(paths[0]), 0);
	}
	/* Requests go on: at the next sync the log fails, then recovers in a new file. */
	unsigned acked = 0;
	uint64_t end = t_now_ms() + 3000;
	bool failed = false;
	for (unsigned i = 6; t_now_ms() < end; i++) {
		hsm_audit_record r = t_record(i);
		if (hsm_ok(hsm_audit_append(a, &r)))
			acked++;
		else
			failed = true;
		if (failed && hsm_audit_healthy(a) && acked > 0)
			break;
		usleep(2000);
	}
	assert_true(failed);
	assert_true(wait_healthy(a, 3000));
	hsm_audit_record r = t_record(999);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_true(st.outages >= 1);
	hsm_audit_close(a);
	/* Every record acknowledged after the change is in the files hsmd wrote next. */
	size_t n = t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES);
	assert_true(n >= (replace ? 2 : 1));
	unsigned found = 0;
	for (size_t i = 0; i < n; i++) {
		char *s = t_slurp(paths[i], NULL);
		for (char *p = s; (p = strstr(p, "\"request_id\":\"req-")) != NULL; p++)
			found++;
		free(s);
	}
	assert_true(found >= acked + 1);
	/* The break shows: without a deleted file the log starts after the seq it keeps
	 * from.  A whole copy in its place holds every record, and the new file chains to
	 * its last: it verifies, the loss hsmd recorded (AuditRecordsLost) noted. */
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	if (replace) {
		assert_true(rep.valid);
		assert_true(rep.lost_present);
		assert_int_equal(rep.lost_first, 1);
		assert_true(rep.lost_seq > rep.lost_last);
	} else {
		assert_false(rep.valid);
		assert_int_equal(rep.problem, HSM_AUDIT_DELETED);
		assert_int_equal(rep.lost_first, 1);
		assert_false(rep.lost_present);
	}
	t_rm_rf(dir);
}

static void test_live_file_deleted(void **state)
{
	(void)state;
	live_file_taken(false);
}

static void test_live_file_replaced(void **state)
{
	(void)state;
	live_file_taken(true);
}

/* Sets the prev of every line of s from line `from` on to the SHA-256 of the line before. */
static void rechain_from(char *s, size_t from)
{
	char *line = s, *prev = NULL;
	for (size_t i = 0; *line != '\0'; i++) {
		char *nl = strchr(line, '\n');
		assert_non_null(nl);
		if (i >= from && prev != NULL) {
			uint8_t h[32];
			assert_int_equal(EVP_Digest(prev, (size_t)(line - 1 - prev), h, NULL, EVP_sha256(),
			                            NULL),
			                 1);
			char *hex = nl - 2 - 64; /* ,"prev":"<64 hex>"} */
			for (size_t k = 0; k < 32; k++) {
				char two[3];
				snprintf(two, sizeof(two), "%02x", h[k]);
				memcpy(hex + 2 * k, two, 2);
			}
		}
		prev = line;
		line = nl + 1;
	}
}

/*
 * Records cut from the end of the live file under the running log: the next
 * write finds the cut before it writes (never at the cut file's new end),
 * the cut file keeps exactly what was left, and the new file names exactly
 * the records cut (AuditRecordsLost), which verify reports as missing, the
 * loss recorded.  An AuditRecordsLost naming another range (rewritten, the
 * chain made again) is not taken for the node's: the cut file is truncated.
 */
static void test_live_file_cut(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-cut");
	hsm_audit_config c = t_config(dir);
	c.retry_interval_ms = 50;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_records(a, 1, 8);
	wait_synced(a);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	size_t len = 0;
	char *s = t_slurp(paths[0], &len);
	size_t lines = t_count_lines(s), keep = lines - 3;
	char *cut = s;
	for (size_t i = 0; i < keep; i++)
		cut = strchr(cut, '\n') + 1;
	size_t kept_len = (size_t)(cut - s);
	assert_int_equal(truncate(paths[0], (off_t)kept_len), 0);
	uint64_t kept_last = keep; /* the log's first file starts at seq 1 */
	bool failed = false;
	uint64_t end = t_now_ms() + 3000;
	for (unsigned i = 9; t_now_ms() < end; i++) {
		hsm_audit_record r = t_record(i);
		failed |= hsm_failed(hsm_audit_append(a, &r));
		if (failed && hsm_audit_healthy(a))
			break;
		usleep(2000);
	}
	assert_true(failed);
	assert_true(wait_healthy(a, 3000));
	hsm_audit_close(a);
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 2);
	size_t now_len = 0;
	char *now = t_slurp(paths[0], &now_len);
	assert_int_equal(now_len, kept_len);
	assert_memory_equal(now, s, kept_len);
	free(now);
	free(s);
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_false(rep.valid);
	assert_int_equal(rep.problem, HSM_AUDIT_DELETED);
	assert_int_equal(rep.lost_first, kept_last + 1);
	const char *base = strrchr(paths[1], '/') + 1;
	uint64_t next_first = strtoull(base + strlen("audit-"), NULL, 10);
	assert_int_equal(rep.lost_last, next_first - 1);
	assert_false(rep.lost_present);
	assert_non_null(strstr(rep.detail, "recorded the loss"));

	/* Another range named, the new file chained again: no loss of the node's. */
	size_t n2 = 0;
	char *s2 = t_slurp(paths[1], &n2);
	char want[64];
	snprintf(want, sizeof(want), "\"first_seq\":\"%llu\"", (unsigned long long)kept_last + 1);
	char *f = strstr(s2, want);
	assert_non_null(f);
	char digit = f[strlen("\"first_seq\":\"")];
	f[strlen("\"first_seq\":\"")] = digit == '1' ? '2' : '1';
	rechain_from(s2, 1);
	t_spit(paths[1], s2, n2);
	free(s2);
	rep = t_verify_dir(dir, NULL, false);
	assert_false(rep.valid);
	assert_int_equal(rep.problem, HSM_AUDIT_TRUNCATED);
	assert_int_equal(rep.lost_seq, 0);
	t_rm_rf(dir);
}

/* The one side file of foreign bytes in dir (<live file>.foreign-<offset>-<ms>): its path. */
static size_t foreign_files(const char *dir, char paths[][PATH_MAX])
{
	static char all[T_MAX_FILES][PATH_MAX];
	size_t n = t_list(dir, "audit-", "", all, T_MAX_FILES), k = 0;
	for (size_t i = 0; i < n; i++)
		if (strstr(strrchr(all[i], '/'), ".jsonl.foreign-") != NULL)
			memcpy(paths[k++], all[i], PATH_MAX);
	return k;
}

/* The audit directory holds one side file, named from prefix on, 0600, holding bytes[0..n). */
static void one_side_file(const char *dir, const char *prefix, const char *bytes, size_t n,
                          char side[][PATH_MAX])
{
	assert_int_equal(foreign_files(dir, side), 1);
	assert_true(strncmp(side[0], prefix, strlen(prefix)) == 0);
	struct stat st;
	assert_int_equal(stat(side[0], &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	size_t kept_len = 0;
	char *kept = t_slurp(side[0], &kept_len);
	assert_int_equal(kept_len, n);
	assert_memory_equal(kept, bytes, n);
	free(kept);
}

/* Appends n bytes to the file at path, as another process would (O_APPEND). */
static void append_bytes(const char *path, const char *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	close(fd);
}

/* Whether the hook makes the copy of foreign bytes fail (ENOSPC) while armed. */
static int foreign_hook(void *arg, hsm_audit_io_op op)
{
	return op == HSM_AUDIT_IO_FOREIGN && atomic_load((atomic_bool *)arg) ? ENOSPC : 0;
}

/*
 * Bytes another process appends to the live file, after records written and
 * not yet synced, are evidence of tampering: the next write finds the file
 * longer than what was written and fails, and the recovery keeps exactly
 * those bytes (not the log's own unsynced records, written again in place)
 * in <file>.foreign-<offset>-<ms>, mode 0600, before it cuts them off, and
 * records where they were (AuditForeignBytes: offset, length, how many kept,
 * their SHA-256).  The trail loses nothing and verifies.  While they cannot
 * be kept (the hook: no space), nothing is cut and the log stays failed.
 */
static void test_live_file_foreign_bytes(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-foreign");
	atomic_bool fail_copy = true;
	hsm_audit_config c = t_config(dir);
	c.retry_interval_ms = 50;
	c.fsync_interval_ms = 10000; /* the records after the checkpoint stay unsynced */
	c.fsync_max_lag_ms = 10000;
	c.test_io_hook = foreign_hook;
	c.test_io_arg = &fail_copy;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	unsigned i = append_records(a, 1, 4);
	assert_true(hsm_ok(hsm_audit_checkpoint(a))); /* synced up to here */
	i = append_records(a, i, 7);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	size_t before = 0;
	free(t_slurp(paths[0], &before));
	static const char foreign[] = "{\"seq\":999,\"op\":\"Forged\"}\nnot a record";
	size_t flen = sizeof(foreign) - 1;
	append_bytes(paths[0], foreign, flen);

	hsm_audit_record r = t_record(i++);
	assert_true(hsm_failed(hsm_audit_append(a, &r)));
	usleep(300000); /* several tries, each unable to keep the bytes */
	assert_false(hsm_audit_healthy(a));
	size_t held = 0;
	char *s = t_slurp(paths[0], &held);
	assert_int_equal(held, before + flen); /* not cut */
	assert_memory_equal(s + before, foreign, flen);
	free(s);
	static char side[T_MAX_FILES][PATH_MAX];
	assert_int_equal(foreign_files(dir, side), 0); /* no half copy left */

	atomic_store(&fail_copy, false);
	assert_true(wait_healthy(a, 3000));
	r = t_record(i++);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	hsm_audit_close(a);

	char want_name[PATH_MAX + 64];
	snprintf(want_name, sizeof(want_name), "%s.foreign-%zu-", paths[0], before);
	one_side_file(dir, want_name, foreign, flen, side);

	uint8_t h[32];
	char hex[65], off[64], len[64], saved_to[PATH_MAX + 32];
	assert_int_equal(EVP_Digest(foreign, flen, h, NULL, EVP_sha256(), NULL), 1);
	for (size_t k = 0; k < 32; k++)
		snprintf(hex + 2 * k, 3, "%02x", h[k]);
	snprintf(off, sizeof(off), "\"offset\":\"%zu\"", before);
	snprintf(len, sizeof(len), "\"length\":\"%zu\"", flen);
	snprintf(saved_to, sizeof(saved_to), "\"saved_to\":\"%s\"", strrchr(side[0], '/') + 1);
	char sha[80], file[PATH_MAX + 16], saved[64];
	snprintf(sha, sizeof(sha), "\"sha256\":\"%s\"", hex);
	snprintf(file, sizeof(file), "\"file\":\"%s\"", strrchr(paths[0], '/') + 1);
	snprintf(saved, sizeof(saved), "\"saved_bytes\":\"%zu\"", flen);
	const char *texts[] = {file, off, len, saved_to, saved, sha};
	assert_true(log_has_event(dir, "AuditForeignBytes", texts, 6));
	assert_false(log_has_event(dir, "AuditRecordsLost", NULL, 0));

	/* The live file holds the log's records only: every one, none twice, none foreign. */
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	s = t_slurp(paths[0], NULL);
	assert_null(strstr(s, "Forged"));
	assert_null(strstr(s, "not a record"));
	for (unsigned k = 1; k < i; k++) {
		char rid[40];
		snprintf(rid, sizeof(rid), "\"request_id\":\"req-%08u\"", k);
		char *at = strstr(s, rid);
		/* The record refused during the outage is in the log or not; none is twice. */
		assert_true(at != NULL || k == 8);
		assert_true(at == NULL || strstr(at + 1, rid) == NULL);
	}
	free(s);
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_true(rep.valid);
	assert_int_equal(rep.first_seq, 1);
	assert_int_equal(rep.records, rep.last_seq);
	assert_int_equal(rep.n_foreign, 1);
	assert_int_equal(rep.foreign[0].offset, before);
	assert_int_equal(rep.foreign[0].length, flen);
	t_rm_rf(dir);
}

/* Counts the copies of foreign bytes the hook makes fail (ENOSPC) while armed. */
typedef struct foreign_fail {
	atomic_bool armed;
	atomic_uint tries;
} foreign_fail;

static int counting_foreign_hook(void *arg, hsm_audit_io_op op)
{
	foreign_fail *f = arg;
	if (op != HSM_AUDIT_IO_FOREIGN || !atomic_load(&f->armed))
		return 0;
	atomic_fetch_add(&f->tries, 1);
	return ENOSPC;
}

/* Puts a file holding p[0..n) at path in one step (rename), as `mv` would. */
static void put_in_place(const char *path, const void *p, size_t n)
{
	char tmp[PATH_MAX + 8];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	t_spit(tmp, p, n);
	assert_int_equal(chmod(tmp, 0600), 0);
	assert_int_equal(rename(tmp, path), 0);
}

/*
 * The name of the file a rotation begins is taken.  A symbolic link there
 * is not followed: the log stays failed.  A file of other bytes is not
 * written over nor left to block the log: they are kept in
 * <file>.foreign-0-<ms> (nothing is cut while that fails) and recorded
 * (AuditForeignBytes), and the log goes on in that file, which then holds
 * its records only.  The trail verifies, the bytes noted.
 */
static void test_next_file_name_taken(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-name-taken");
	foreign_fail fail = {.armed = true};
	hsm_audit_config c = t_config(dir);
	c.retry_interval_ms = 50;
	c.test_io_hook = counting_foreign_hook;
	c.test_io_arg = &fail;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	unsigned i = append_records(a, 1, 3);
	/* The rotate checkpoint takes the next seq; the new file starts after it. */
	uint64_t first = hsm_audit_next_seq(a) + 1;
	char name[PATH_MAX + 40], target[PATH_MAX + 16];
	snprintf(name, sizeof(name), "%s/audit-%020llu.jsonl", dir, (unsigned long long)first);
	snprintf(target, sizeof(target), "%s/elsewhere", dir);
	assert_int_equal(symlink(target, name), 0);
	assert_true(hsm_failed(hsm_audit_rotate(a)));
	assert_false(hsm_audit_healthy(a));
	struct stat st;
	assert_int_equal(lstat(target, &st), -1); /* the link was not followed */

	static const char planted[] = "{\"seq\":4,\"op\":\"Planted\"}\nnot hsmd's";
	size_t plen = sizeof(planted) - 1;
	put_in_place(name, planted, plen);
	uint64_t end = t_now_ms() + 3000;
	while (atomic_load(&fail.tries) < 2 && t_now_ms() < end)
		usleep(2000);
	assert_true(atomic_load(&fail.tries) >= 2);
	assert_false(hsm_audit_healthy(a));
	size_t held = 0;
	char *s = t_slurp(name, &held);
	assert_int_equal(held, plen); /* nothing cut while the bytes cannot be kept */
	assert_memory_equal(s, planted, plen);
	free(s);
	static char side[T_MAX_FILES][PATH_MAX];
	assert_int_equal(foreign_files(dir, side), 0);

	atomic_store(&fail.armed, false);
	assert_true(wait_healthy(a, 3000));
	hsm_audit_record r = t_record(i++);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	hsm_audit_close(a);

	char want_side[PATH_MAX + 64];
	snprintf(want_side, sizeof(want_side), "%s.foreign-0-", name);
	one_side_file(dir, want_side, planted, plen, side);
	char file[PATH_MAX + 16], len[64];
	snprintf(file, sizeof(file), "\"file\":\"%s\"", strrchr(name, '/') + 1);
	snprintf(len, sizeof(len), "\"length\":\"%zu\"", plen);
	const char *texts[] = {file, "\"offset\":\"0\"", len};
	assert_true(log_has_event(dir, "AuditForeignBytes", texts, 3));
	assert_false(log_has_event(dir, "AuditRecordsLost", NULL, 0));

	/* The file holds the log's records, from the one after the rotation on. */
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 2);
	assert_string_equal(paths[1], name);
	s = t_slurp(name, NULL);
	char want_first[48];
	snprintf(want_first, sizeof(want_first), "{\"seq\":%llu,", (unsigned long long)first);
	assert_true(strncmp(s, want_first, strlen(want_first)) == 0);
	assert_null(strstr(s, "Planted"));
	assert_null(strstr(s, "not hsmd's"));
	free(s);
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_true(rep.valid);
	assert_int_equal(rep.first_seq, 1);
	assert_int_equal(rep.records, rep.last_seq);
	assert_int_equal(rep.n_foreign, 1);
	assert_int_equal(rep.foreign[0].offset, 0);
	assert_int_equal(rep.foreign[0].length, plen);
	t_rm_rf(dir);
}

/*
 * The file a rotation began is replaced by a copy of itself (`sed -i`;
 * `cp`, then `mv`) while its first records wait for their fsync.  The new
 * file the log wants begins with those same records, so it has the copy's
 * name: the copy, which holds them and nothing else, is taken as that file
 * and the log goes on in it, as it would have in an empty one.  Nothing is
 * lost, nothing is foreign, and the trail verifies.
 */
static void test_next_file_replaced_by_its_copy_before_its_first_sync(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-copy-unsynced");
	hsm_audit_config c = t_config(dir);
	c.retry_interval_ms = 50;
	c.fsync_interval_ms = 10000; /* the records after the rotation stay unsynced */
	c.fsync_max_lag_ms = 10000;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	unsigned i = append_records(a, 1, 2);
	assert_true(hsm_ok(hsm_audit_rotate(a)));
	i = append_records(a, i, 5);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 2);
	size_t n = 0;
	char *copy = t_slurp(paths[1], &n);
	assert_true(n > 0);
	assert_true(hsm_audit_durable_seq(a) < hsm_audit_next_seq(a)); /* none of them synced */
	put_in_place(paths[1], copy, n);
	struct stat st;
	assert_int_equal(stat(paths[1], &st), 0);
	ino_t copy_ino = st.st_ino;

	hsm_audit_record r = t_record(i++);
	assert_true(hsm_failed(hsm_audit_append(a, &r))); /* the replacement is found */
	assert_true(wait_healthy(a, 3000));
	r = t_record(i++);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	hsm_audit_close(a);

	/* The copy is the new file: begun with what it held, then the log's next records. */
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 2);
	assert_int_equal(stat(paths[1], &st), 0);
	assert_int_equal(st.st_ino, copy_ino);
	size_t now_len = 0;
	char *s = t_slurp(paths[1], &now_len);
	assert_true(now_len > n);
	assert_memory_equal(s, copy, n);
	free(s);
	free(copy);
	static char side[T_MAX_FILES][PATH_MAX];
	assert_int_equal(foreign_files(dir, side), 0);
	assert_false(log_has_event(dir, "AuditRecordsLost", NULL, 0));
	assert_false(log_has_event(dir, "AuditForeignBytes", NULL, 0));
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_true(rep.valid);
	assert_int_equal(rep.first_seq, 1);
	assert_int_equal(rep.records, rep.last_seq); /* none twice, none missing */
	assert_int_equal(rep.n_foreign, 0);
	check_recovered_log(dir, "Stale file handle");
	t_rm_rf(dir);
}

/*
 * The whole directory deleted and made again under the running log (an
 * operator's rm -rf and mkdir), where another process may then hold the new
 * .lock: the log must not go on in it beside that writer.  It stays failed
 * while the lock is held elsewhere, writes nothing there, and takes the lock
 * and recovers once it is free.
 */
static void test_directory_made_again_under_the_log(void **state)
{
	(void)state;
	char dir[PATH_MAX], lock[PATH_MAX + 8];
	t_mkdtemp(dir, "audit-remade");
	snprintf(lock, sizeof(lock), "%s/.lock", dir);
	hsm_audit_config c = t_config(dir);
	c.retry_interval_ms = 50;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_records(a, 1, 5);
	usleep(50000);
	t_rm_rf(dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	int other = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600); /* another writer's lock */
	assert_true(other >= 0);
	assert_int_equal(flock(other, LOCK_EX | LOCK_NB), 0);
	/* Requests go on until the next sync notices the file is gone; then, held off. */
	bool failed = false;
	uint64_t end = t_now_ms() + 3000;
	for (unsigned i = 6; !failed && t_now_ms() < end; i++) {
		hsm_audit_record r = t_record(i);
		failed = hsm_failed(hsm_audit_append(a, &r));
		usleep(2000);
	}
	assert_true(failed);
	usleep(500000); /* about ten tries at recovery */
	assert_false(hsm_audit_healthy(a));
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 0);
	/* Freed, the lock is the log's: it recovers in the new directory and holds it. */
	close(other);
	assert_true(wait_healthy(a, 3000));
	hsm_audit_record r = t_record(999);
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
	other = open(lock, O_RDWR | O_CLOEXEC);
	assert_true(other >= 0);
	assert_int_not_equal(flock(other, LOCK_EX | LOCK_NB), 0);
	close(other);
	hsm_audit_close(a);
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	char *s = t_slurp(paths[0], NULL);
	assert_non_null(strstr(s, "\"request_id\":\"req-00000999\""));
	free(s);
	t_rm_rf(dir);
}

/*
 * The whole process held (SIGSTOP, a paused VM) while a write or an fsync
 * is under way is no outage: the step was held just as long, and goes on
 * afterwards within its deadline.  In a child, which the parent stops for
 * four deadlines once the step has begun, then lets go on; 0 when all
 * holds, else the number of the check that failed.
 */
typedef struct pause_io {
	int to_parent, from_parent;
	hsm_audit_io_op op;
	atomic_bool armed;
} pause_io;

static int pause_hook(void *arg, hsm_audit_io_op op)
{
	pause_io *p = arg;
	if (op != p->op || !atomic_exchange(&p->armed, false))
		return 0;
	char c = 'p';
	if (write(p->to_parent, &c, 1) != 1 || read(p->from_parent, &c, 1) != 1)
		return EIO;
	usleep(DEADLINE_MS / 2 * 1000); /* the step goes on past the pause, within its deadline */
	return 0;
}

static int held_child(const char *dir, hsm_audit_io_op op, int to_parent, int from_parent)
{
	pause_io p = {.to_parent = to_parent, .from_parent = from_parent, .op = op};
	hsm_audit_config c = t_config(dir);
	c.test_io_hook = pause_hook;
	c.test_io_arg = &p;
	c.io_deadline_ms = DEADLINE_MS;
	c.retry_interval_ms = 50;
	c.fsync_interval_ms = 5;
	hsm_audit *a = NULL;
	if (hsm_failed(hsm_audit_open(&c, &a)))
		return 1;
	hsm_audit_record r = t_record(0);
	if (hsm_failed(hsm_audit_append(a, &r)))
		return 2;
	usleep(30000); /* the record's group fsync */
	atomic_store(&p.armed, true);
	r = t_record(1);
	if (hsm_failed(hsm_audit_append(a, &r)))
		return 3;
	for (int i = 0; i < 200 && atomic_load(&p.armed); i++) /* an fsync may come after the ack */
		usleep(5000);
	usleep(2 * DEADLINE_MS * 1000); /* the step is over, and the watchdog has looked since */
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	if (!hsm_audit_healthy(a) || st.outages != 0 || st.refused != 0)
		return 4;
	r = t_record(2);
	if (hsm_failed(hsm_audit_append(a, &r)))
		return 5;
	hsm_audit_close(a);
	return 0;
}

static void run_held(hsm_audit_io_op op)
{
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-held");
	int up[2], down[2];
	assert_int_equal(pipe(up), 0);
	assert_int_equal(pipe(down), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(held_child(dir, op, up[1], down[0]));
	/* The child's ends closed here: a child that dies early is an EOF, not a wait forever. */
	close(up[1]);
	close(down[0]);
	char c = 0;
	assert_int_equal(read(up[0], &c, 1), 1); /* the step has begun */
	assert_int_equal(kill(pid, SIGSTOP), 0);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, WUNTRACED), pid);
	assert_true(WIFSTOPPED(status));
	usleep(4 * DEADLINE_MS * 1000);
	assert_int_equal(kill(pid, SIGCONT), 0);
	assert_int_equal(write(down[1], &c, 1), 1);
	expect_child_passes(pid, "the held log did not finish");
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_true(rep.valid);
	close(up[0]);
	close(down[1]);
	t_rm_rf(dir);
}

static void test_held_process_write_is_no_outage(void **state)
{
	(void)state;
	run_held(HSM_AUDIT_IO_WRITE);
}

static void test_held_process_fsync_is_no_outage(void **state)
{
	(void)state;
	run_held(HSM_AUDIT_IO_SYNC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full_disk_fails_closed_then_recovers),
	    cmocka_unit_test(test_full_disk_refuses_before_records_fail),
	    cmocka_unit_test(test_stuck_write_watchdog),
	    cmocka_unit_test(test_stuck_fsync_watchdog),
	    cmocka_unit_test(test_stuck_retention_holds_up_nothing),
	    cmocka_unit_test(test_close_leaves_a_stuck_retention_behind),
	    cmocka_unit_test(test_close_leaves_a_stuck_writer_behind),
	    cmocka_unit_test(test_close_leaves_a_stuck_fsync_behind),
	    cmocka_unit_test(test_slow_fsync_holds_acks_only_past_the_lag),
	    cmocka_unit_test(test_a_sync_interval_past_the_lag_is_cut_to_it),
	    cmocka_unit_test(test_durable_acks_wait_for_their_sync),
	    cmocka_unit_test(test_durable_acks_fail_with_a_failed_sync),
	    cmocka_unit_test(test_durable_acks_fail_with_a_stuck_sync),
	    cmocka_unit_test(test_fsync_error_rewrites_and_recovers),
	    cmocka_unit_test(test_live_file_deleted),
	    cmocka_unit_test(test_directory_made_again_under_the_log),
	    cmocka_unit_test(test_live_file_replaced),
	    cmocka_unit_test(test_live_file_cut),
	    cmocka_unit_test(test_live_file_foreign_bytes),
	    cmocka_unit_test(test_next_file_name_taken),
	    cmocka_unit_test(test_next_file_replaced_by_its_copy_before_its_first_sync),
	    cmocka_unit_test(test_held_process_write_is_no_outage),
	    cmocka_unit_test(test_held_process_fsync_is_no_outage),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
