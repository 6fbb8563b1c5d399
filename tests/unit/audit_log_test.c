/*
 * audit_log_test.c - the audit log on disk: sequence continuity across
 * reopen and rotation, retention, torn tails, checkpoints, syslog, lazy
 * submission and the batch hook.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "audit_test_util.h"
#include "audit/audit_format.h"

static void append_n(hsm_audit *a, unsigned from, unsigned n)
{
	for (unsigned i = from; i < from + n; i++) {
		hsm_audit_record r = t_record(i);
		assert_true(hsm_ok(hsm_audit_append(a, &r)));
	}
}

/* Done callbacks, and whether each ran inside the batch hook's bracket. */
static atomic_int lazy_done, lazy_outside, hook_begins;
static _Thread_local bool in_batch;

static void lazy_cb(void *arg, hsm_result r)
{
	(void)arg;
	if (!in_batch)
		atomic_fetch_add(&lazy_outside, 1);
	if (hsm_ok(r))
		atomic_fetch_add(&lazy_done, 1);
}

static void count_hook(bool begin)
{
	assert_true(in_batch != begin); /* begin and end alternate, never nest */
	in_batch = begin;
	if (begin)
		atomic_fetch_add(&hook_begins, 1);
}

static bool wait_done(int n, int timeout_ms)
{
	for (int waited = 0; atomic_load(&lazy_done) < n && waited < timeout_ms; waited += 2)
		usleep(2000);
	return atomic_load(&lazy_done) >= n;
}

/*
 * Lazy submissions wait for one kick, then are written as usual, their
 * callbacks bracketed by the batch hook; a forgotten kick delays a record
 * (the writer's own timed wake-up) but never strands it.
 */
static void test_lazy_submit_kick_and_batch_hook(void **state)
{
	(void)state;
	enum { N = 300 };
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-lazy");
	hsm_audit_config c = t_config(dir);
	c.batch_hook = count_hook;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	for (unsigned i = 0; i < N; i++) {
		hsm_audit_record r = t_record(i);
		assert_true(hsm_ok(hsm_audit_submit_lazy(a, &r, lazy_cb, NULL)));
	}
	hsm_audit_kick(a);
	assert_true(wait_done(N, 5000));
	assert_int_equal(atomic_load(&lazy_outside), 0);
	int begins = atomic_load(&hook_begins);
	assert_true(begins >= 1 && begins < N); /* batched, not one bracket per record */

	hsm_audit_record r = t_record(N);
	assert_true(hsm_ok(hsm_audit_submit_lazy(a, &r, lazy_cb, NULL))); /* no kick */
	assert_true(wait_done(N + 1, 2000));
	hsm_audit_close(a);
	hsm_audit_verify_report rep = t_verify_dir(dir, NULL, false);
	assert_true(rep.valid);
	assert_int_equal(rep.records, rep.last_seq);
	assert_true(rep.records >= N + 1);
	t_rm_rf(dir);
}

static void test_continuity_across_reopen(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-reopen");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	uint64_t next_before = 0;
	for (int round = 0; round < 3; round++) {
		assert_true(hsm_ok(hsm_audit_open(&c, &a)));
		hsm_audit_stats st;
		hsm_audit_get_stats(a, &st);
		if (round > 0) /* continues exactly where the last run ended (+ its open event) */
			assert_true(st.next_seq >= next_before);
		append_n(a, (unsigned)round * 100, 100);
		hsm_audit_get_stats(a, &st);
		next_before = st.next_seq + 1; /* the shutdown checkpoint takes one */
		hsm_audit_close(a);
	}
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	assert_int_equal(r.first_seq, 1);
	assert_int_equal(r.last_seq, next_before - 1);
	assert_int_equal(r.records, r.last_seq); /* gap-free */
	/* Every run wrote an open event and a shutdown checkpoint: 3 x (100 + 2). */
	assert_int_equal(r.records, 306);
	assert_int_equal(r.checkpoints_unsigned, 3);
	t_rm_rf(dir);
}

static void test_continuity_across_rotation(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-rotate");
	hsm_audit_config c = t_config(dir);
	c.rotate_bytes = 8192;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 0, 300);
	assert_true(hsm_ok(hsm_audit_rotate(a)));
	append_n(a, 300, 10);
	hsm_audit_close(a);
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 310, 10);
	hsm_audit_close(a);

	static char paths[T_MAX_FILES][PATH_MAX];
	size_t n = t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES);
	assert_true(n >= 5);
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	assert_int_equal(r.files, n);
	assert_int_equal(r.first_seq, 1);
	assert_int_equal(r.records, r.last_seq);
	/* Each closed file ends with its rotation checkpoint. */
	for (size_t i = 0; i + 1 < n; i++) {
		char *s = t_slurp(paths[i], NULL);
		char *last = strrchr(s, '\n');
		*last = '\0';
		char *line = strrchr(s, '\n');
		line = line ? line + 1 : s;
		assert_non_null(strstr(line, "\"checkpoint\":{\"reason\":\"rotate\""));
		free(s);
	}
	/* Dropping a middle file is reported as a gap, with the file it happened in. */
	assert_int_equal(unlink(paths[2]), 0);
	r = t_verify_dir(dir, NULL, false);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_DELETED);
	assert_string_equal(r.file, paths[3]);
	assert_int_equal(r.line, 1);
	t_rm_rf(dir);
}

/* ---- Retention with a movable clock -------------------------------------- */

static atomic_llong fake_now;
static int64_t fake_clock(void *arg)
{
	(void)arg;
	return atomic_load(&fake_now);
}

#define DAY_MS (86400LL * 1000)

/* A log whose clock the test moves, rotated only when the test asks. */
static hsm_audit_config retention_config(const char *dir)
{
	hsm_audit_config c = t_config(dir);
	c.clock_ms = fake_clock;
	c.checkpoint_interval_ms = 3600 * 1000;
	c.rotate_age_ms = (uint64_t)200000 * DAY_MS;
	return c;
}

static t_signer log_signer;

/* Opens c's log with a signer, as an unsealed node: retention deletes only under one. */
static void open_unsealed(hsm_audit_config *c, hsm_audit **a)
{
	if (log_signer.key == NULL)
		t_signer_init(&log_signer);
	assert_true(hsm_ok(hsm_audit_open(c, a)));
	hsm_audit_set_signer(*a, t_sign, &log_signer);
}

/* Waits (up to 10 s) for the retention pass asked for by the last rotation to end. */
static void wait_retention(hsm_audit *a)
{
	hsm_audit_stats st;
	for (int i = 0; i < 1000; i++) {
		hsm_audit_get_stats(a, &st);
		if (!st.retention_running)
			return;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	fail_msg("the retention pass did not end");
}

/* At time at_ms: five records from first, then a rotation and its retention pass. */
static void fill_and_rotate(hsm_audit *a, int64_t at_ms, unsigned first)
{
	atomic_store(&fake_now, at_ms);
	append_n(a, first, 5);
	assert_true(hsm_ok(hsm_audit_rotate(a)));
	wait_retention(a);
}

static void test_retention_deletes_only_expired(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-retention");
	int64_t now = hsm_now_ms();
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	atomic_store(&fake_now, now - 3000 * DAY_MS);
	open_unsealed(&c, &a);
	fill_and_rotate(a, now - 3000 * DAY_MS, 0); /* file 1: newest record 3000 days old */
	fill_and_rotate(a, now - 2556 * DAY_MS, 5); /* file 2: 2556 days old, still kept */
	static char before[T_MAX_FILES][PATH_MAX];
	size_t nb = t_list(dir, "audit-", ".jsonl", before, T_MAX_FILES);
	assert_int_equal(nb, 3);
	fill_and_rotate(a, now, 10); /* retention runs after rotation, beside the writer */
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.files_expired, 1);
	/*
	 * The writer records the deletion when it next looks after the pass: a
	 * checkpoint asked for since comes after the record, unless the writer
	 * was already past that look; then the next checkpoint does.
	 */
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a))); /* the deletion's record is written by now */
	static char after[T_MAX_FILES][PATH_MAX];
	size_t na = t_list(dir, "audit-", ".jsonl", after, T_MAX_FILES);
	assert_int_equal(na, 3); /* file 1 gone, file 2, file 3 and the new current one */
	assert_string_equal(after[0], before[1]);
	assert_string_equal(after[1], before[2]);
	/* The deletion itself is audited (in whichever file was current then). */
	char *f1 = t_slurp(after[1], NULL), *f2 = t_slurp(after[2], NULL);
	const char *b1 = strrchr(before[0], '/') + 1;
	char *ev = strstr(f1, "AuditFilesExpired") ? strstr(f1, "AuditFilesExpired")
	                                           : strstr(f2, "AuditFilesExpired");
	assert_non_null(ev);
	assert_non_null(strstr(ev, b1));
	free(f1);
	free(f2);
	/* Far in the future every closed file has expired, but the current one stays. */
	char current[PATH_MAX], old1[PATH_MAX], old2[PATH_MAX];
	snprintf(current, sizeof(current), "%s", after[2]);
	snprintf(old1, sizeof(old1), "%s", strrchr(after[0], '/') + 1);
	snprintf(old2, sizeof(old2), "%s", strrchr(after[1], '/') + 1);
	atomic_store(&fake_now, now + 100000 * DAY_MS);
	assert_true(hsm_ok(hsm_audit_checkpoint(a))); /* retention is due: a pass is asked for */
	hsm_audit_close(a); /* lets the pass finish and records it before the shutdown checkpoint */
	na = t_list(dir, "audit-", ".jsonl", after, T_MAX_FILES);
	assert_int_equal(na, 1);
	assert_string_equal(after[0], current);
	char *cur = t_slurp(current, NULL);
	char *last = strrchr(cur, '\n');
	*last = '\0';
	last = strrchr(cur, '\n');
	assert_non_null(last);
	assert_non_null(strstr(last, "\"checkpoint\":{\"reason\":\"shutdown\""));
	*last = '\0'; /* what came before the shutdown checkpoint */
	ev = strstr(cur, "AuditFilesExpired");
	assert_non_null(ev);
	assert_non_null(strstr(ev, old1));
	assert_non_null(strstr(ev, old2));
	free(cur);
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_close(a);
	assert_int_equal(t_list(dir, "audit-", ".jsonl", after, T_MAX_FILES), 1);
	/* What remains still verifies: a chain anchored after the deleted start. */
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	assert_true(r.first_seq > 1);
	t_rm_rf(dir);
}

/* The time elapsed, moved by the test apart from the wall clock. */
static atomic_llong fake_elapsed;
static int64_t fake_elapsed_clock(void *arg)
{
	(void)arg;
	return atomic_load(&fake_elapsed);
}

/*
 * A wall clock stepped far ahead of the time elapsed (a bad time server)
 * makes every file look expired: retention deletes nothing and says so
 * (retention_held) until the clock agrees with the time elapsed again; time
 * that truly passes expires files as before.
 */
static void test_retention_holds_while_the_clock_runs_ahead(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-retention-ahead");
	int64_t now = hsm_now_ms();
	hsm_audit_config c = retention_config(dir);
	c.elapsed_ms = fake_elapsed_clock;
	c.retention_days = 1;
	hsm_audit *a = NULL;
	atomic_store(&fake_now, now);
	atomic_store(&fake_elapsed, 1000);
	open_unsealed(&c, &a);
	fill_and_rotate(a, now, 0);
	fill_and_rotate(a, now + 1000, 5);
	static char files[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	/* Ten years ahead while a second elapsed: nothing goes. */
	atomic_store(&fake_elapsed, 2000);
	fill_and_rotate(a, now + 3653 * DAY_MS, 10);
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_true(st.retention_held);
	assert_int_equal(st.files_expired, 0);
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 4);
	/* An hour ahead is within the tolerance; the clock back where it was, the hold lifts. */
	atomic_store(&fake_elapsed, 3000);
	fill_and_rotate(a, now + 3000 + HSM_AUDIT_CLOCK_AHEAD_MS - 1000, 15);
	hsm_audit_get_stats(a, &st);
	assert_false(st.retention_held);
	assert_int_equal(st.files_expired, 0); /* nothing is a day old yet */
	/* Two days truly pass: the files older than a day go. */
	atomic_store(&fake_elapsed, 3000 + 2 * DAY_MS);
	fill_and_rotate(a, now + 2 * DAY_MS + 4000, 20);
	hsm_audit_get_stats(a, &st);
	assert_false(st.retention_held);
	assert_true(st.files_expired >= 2);
	hsm_audit_close(a);
	t_rm_rf(dir);
}

/*
 * Retention removes only a prefix of the log: a closed file whose newest
 * record has expired stays while an older file is kept, here because the
 * clock went back between them, so no gap opens inside the log.
 */
static void test_retention_keeps_the_log_whole(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-retention-prefix");
	int64_t now = hsm_now_ms();
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	atomic_store(&fake_now, now - 2600 * DAY_MS);
	open_unsealed(&c, &a);
	fill_and_rotate(a, now - 2600 * DAY_MS, 0);  /* file 1: expired at the end */
	fill_and_rotate(a, now - 100 * DAY_MS, 5);   /* file 2: kept */
	fill_and_rotate(a, now - 2650 * DAY_MS, 10); /* file 3: the clock went back; expired */
	static char before[T_MAX_FILES][PATH_MAX];
	size_t nb = t_list(dir, "audit-", ".jsonl", before, T_MAX_FILES);
	assert_int_equal(nb, 4);
	fill_and_rotate(a, now, 15);
	hsm_audit_close(a);
	static char after[T_MAX_FILES][PATH_MAX];
	size_t na = t_list(dir, "audit-", ".jsonl", after, T_MAX_FILES);
	assert_int_equal(na, 4); /* file 1 gone; files 2, 3, 4 and the current one */
	assert_string_equal(after[0], before[1]);
	assert_string_equal(after[1], before[2]);
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	t_rm_rf(dir);
}

/* The first seq a log file's name gives. */
static uint64_t file_seq(const char *path)
{
	const char *base = strrchr(path, '/') + 1;
	return strtoull(base + strlen("audit-"), NULL, 10);
}

/* Every remaining file of dir, concatenated in order. */
static char *slurp_log(const char *dir)
{
	static char paths[T_MAX_FILES][PATH_MAX];
	size_t n = t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES);
	hsm_buf all = {0};
	for (size_t i = 0; i < n; i++) {
		size_t len = 0;
		char *f = t_slurp(paths[i], &len);
		assert_true(hsm_ok(hsm_buf_put(&all, f, len)));
		free(f);
	}
	assert_true(hsm_ok(hsm_buf_terminate(&all)));
	return (char *)all.data;
}

/*
 * Before it deletes, retention states in a checkpoint the first record it
 * keeps; verify takes that as the start of the log.  A file deleted from the
 * start by hand afterwards is then a deletion, not retention.
 */
static void test_retention_states_what_it_keeps_before_deleting(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-retention-kept");
	int64_t now = hsm_now_ms();
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	atomic_store(&fake_now, now - 3000 * DAY_MS);
	open_unsealed(&c, &a);
	fill_and_rotate(a, now - 3000 * DAY_MS, 0); /* file 1: expired at the third pass */
	fill_and_rotate(a, now - 2556 * DAY_MS, 5); /* file 2: kept */
	static char before[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", before, T_MAX_FILES), 3);
	fill_and_rotate(a, now, 10);
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	hsm_audit_close(a);
	uint64_t kept = file_seq(before[1]);
	char want[80];
	snprintf(want, sizeof(want), "\"reason\":\"retention\",\"kept_from\":%llu,",
	         (unsigned long long)kept);
	char *log = slurp_log(dir);
	char *ck = strstr(log, want), *ev = strstr(log, "AuditFilesExpired");
	assert_non_null(ck);
	assert_true(ev != NULL && ev > ck); /* stated first, then deleted and recorded */
	free(log);
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	assert_int_equal(r.first_seq, kept);
	assert_int_equal(r.kept_from, kept);
	/* The oldest kept file deleted by hand. */
	assert_int_equal(unlink(before[1]), 0);
	r = t_verify_dir(dir, NULL, false);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_DELETED);
	assert_non_null(strstr(r.detail, "not by retention"));
	t_rm_rf(dir);
}

/* At time at_ms: five events (which need no unsealed node), then a rotation. */
static void events_and_rotate(hsm_audit *a, int64_t at_ms)
{
	atomic_store(&fake_now, at_ms);
	for (int i = 0; i < 5; i++) {
		hsm_audit_record ev = {.type = HSM_AUDIT_EVENT, .principal = "hsmd",
		                       .operation = "KeyRotated", .outcome = HSM_AUDIT_SUCCESS};
		assert_true(hsm_ok(hsm_audit_append(a, &ev)));
	}
	assert_true(hsm_ok(hsm_audit_rotate(a)));
	wait_retention(a);
}

static hsm_result failing_signer(void *arg, const uint8_t *msg, size_t n, hsm_buf *sig)
{
	(void)arg;
	(void)msg;
	(void)n;
	(void)sig;
	return HSM_FAIL(HSM_ERR_INTERNAL, "test signer fails");
}

/*
 * Only a signed retention checkpoint raises the floor verify accepts, so a
 * sealed node (no signer) deletes nothing past retention, nor does one whose
 * retention checkpoint could not be signed; once a signer is set, the pass
 * put off runs, and what remains verifies with the key.
 */
static void test_retention_waits_for_a_signer(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-retention-sealed");
	int64_t now = hsm_now_ms();
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	if (log_signer.key == NULL)
		t_signer_init(&log_signer);
	atomic_store(&fake_now, now - 3000 * DAY_MS);
	assert_true(hsm_ok(hsm_audit_open(&c, &a))); /* sealed */
	events_and_rotate(a, now - 3000 * DAY_MS);  /* file 1: expired at the next pass */
	events_and_rotate(a, now);
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	wait_retention(a);
	static char files[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.files_expired, 0);
	char *log = slurp_log(dir);
	assert_null(strstr(log, "\"reason\":\"retention\""));
	free(log);
	uint64_t kept = file_seq(files[1]);
	/* A signer that fails: the retention checkpoint goes out unsigned, counts as not
	 * written, and nothing is deleted. */
	hsm_audit_set_signer(a, failing_signer, NULL);
	assert_true(hsm_ok(hsm_audit_rotate(a)));
	wait_retention(a);
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 4);
	log = slurp_log(dir);
	assert_non_null(strstr(log, "\"reason\":\"retention\",\"kept_from\""));
	free(log);
	hsm_audit_set_signer(a, t_sign, &log_signer); /* unsealed: the pass put off runs now */
	for (int i = 0; i < 1000 && t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES) != 3; i++) {
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	assert_true(hsm_ok(hsm_audit_checkpoint(a)));
	assert_true(hsm_ok(hsm_audit_checkpoint(a))); /* the deletion's record is written by now */
	hsm_audit_close(a);
	char *pem = t_signer_pem(&log_signer);
	hsm_audit_verify_report r = t_verify_dir(dir, pem, false);
	if (!r.valid)
		print_message("%s\n", r.detail);
	assert_true(r.valid);
	assert_int_equal(r.first_seq, kept);
	assert_int_equal(r.kept_from, kept);
	free(pem);
	t_rm_rf(dir);
}

/*
 * Files deleted from the start while hsmd is stopped: at its next start it
 * takes the floor from the trail's own checkpoints, not from the oldest file
 * it finds, so it goes on stating every record from seq 1 kept, and verify
 * names the records missing, not retention.
 */
static void test_files_deleted_while_stopped_show(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-deleted-stopped");
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	atomic_store(&fake_now, hsm_now_ms());
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	fill_and_rotate(a, hsm_now_ms(), 0);
	fill_and_rotate(a, hsm_now_ms(), 5);
	hsm_audit_close(a);
	static char files[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	assert_true(t_verify_dir(dir, NULL, false).valid);
	assert_int_equal(unlink(files[0]), 0);
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 10, 2);
	hsm_audit_close(a);
	char *log = slurp_log(dir);
	assert_non_null(strstr(log, "\"reason\":\"shutdown\",\"kept_from\":1,"));
	free(log);
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_DELETED);
	assert_non_null(strstr(r.detail, "records 1 to "));
	assert_non_null(strstr(r.detail, "not by retention"));
	t_rm_rf(dir);
}

/*
 * Retention states only a floor the chain proves.  A file deleted by hand
 * between an expired file and the first one kept, or the oldest file deleted
 * before an expired one, would otherwise be passed off as retention (the
 * retention checkpoint stating the first seq of the first file kept): the
 * pass deletes nothing and says so (retention_blocked), and verify names the
 * records missing.
 */
static void test_retention_states_only_a_floor_the_chain_proves(void **state)
{
	(void)state;
	static char files[T_MAX_FILES][PATH_MAX];
	int64_t now = hsm_now_ms();
	for (int gone = 0; gone < 2; gone++) {
		char dir[PATH_MAX];
		t_mkdtemp(dir, "audit-retention-gap");
		hsm_audit_config c = retention_config(dir);
		hsm_audit *a = NULL;
		atomic_store(&fake_now, now - 3000 * DAY_MS);
		assert_true(hsm_ok(hsm_audit_open(&c, &a))); /* no signer: retention waits */
		fill_and_rotate(a, now - 3000 * DAY_MS, 0); /* file 1: expired */
		/* file 2: kept (gone 0: deleted by hand), or expired (gone 1: file 1 is) */
		fill_and_rotate(a, gone == 0 ? now : now - 2900 * DAY_MS, 5);
		hsm_audit_close(a);
		assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
		assert_int_equal(unlink(files[gone == 0 ? 1 : 0]), 0);
		char kept_name[PATH_MAX];
		memcpy(kept_name, files[gone == 0 ? 0 : 1], sizeof(kept_name));
		atomic_store(&fake_now, now);
		open_unsealed(&c, &a);
		fill_and_rotate(a, now, 10); /* a pass at open and one after the rotation */
		hsm_audit_stats st;
		hsm_audit_get_stats(a, &st);
		assert_int_equal(st.files_expired, 0);
		assert_true(st.retention_blocked);
		hsm_audit_close(a);
		assert_int_equal(access(kept_name, F_OK), 0); /* the expired file is still there */
		char *log = slurp_log(dir);
		assert_null(strstr(log, "\"reason\":\"retention\""));
		assert_null(strstr(log, "AuditFilesExpired"));
		free(log);
		hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
		assert_false(r.valid);
		assert_int_equal(r.problem, HSM_AUDIT_DELETED);
		assert_non_null(strstr(r.detail, gone == 0 ? " are missing" : "records 1 to "));
		t_rm_rf(dir);
	}
}

/* Cuts the last line off the file at path (a run killed before it was written). */
static void drop_last_line(const char *path)
{
	size_t len = 0;
	char *f = t_slurp(path, &len);
	assert_true(len > 1 && f[len - 1] == '\n');
	size_t start = len - 1;
	while (start > 0 && f[start - 1] != '\n')
		start--;
	assert_int_equal(truncate(path, (off_t)start), 0);
	free(f);
}

/*
 * Appends to the file at path what anyone able to write the trail can: a
 * retention checkpoint stating kept_from, chained to the file's last line,
 * with sig (64 bytes, not this node's signature) or unsigned (sig NULL).
 */
static void append_forged_checkpoint(const char *path, uint64_t kept_from, const uint8_t *sig)
{
	size_t len = 0;
	char *f = t_slurp(path, &len);
	assert_true(len > 1 && f[len - 1] == '\n');
	size_t start = len - 1;
	while (start > 0 && f[start - 1] != '\n')
		start--;
	uint8_t prev[AUDIT_HASH_LEN];
	assert_int_equal(EVP_Digest(f + start, len - 1 - start, prev, NULL, EVP_sha256(), NULL), 1);
	const char *seq = strstr(f + start, "\"seq\":");
	assert_non_null(seq);
	hsm_buf body = {0}, line = {0};
	assert_true(hsm_ok(audit_format_checkpoint_body(&body, "node-test", atomic_load(&fake_now),
	                                                "retention", kept_from, sig, sig ? 64 : 0,
	                                                sig ? NULL : "sealed")));
	assert_true(hsm_ok(audit_format_line(&line, strtoull(seq + 6, NULL, 10) + 1, body.data,
	                                     body.len, prev)));
	assert_true(hsm_ok(hsm_buf_put_u8(&line, '\n')));
	FILE *fp = fopen(path, "a");
	assert_non_null(fp);
	assert_int_equal(fwrite(line.data, 1, line.len, fp), line.len);
	assert_int_equal(fclose(fp), 0);
	hsm_buf_free(&body);
	hsm_buf_free(&line);
	free(f);
}

/* Appends to the file at path an AuditRecordsLost naming lo..hi, chained to its last line. */
static void append_forged_loss(const char *path, uint64_t lo, uint64_t hi)
{
	size_t len = 0;
	char *f = t_slurp(path, &len);
	assert_true(len > 1 && f[len - 1] == '\n');
	size_t start = len - 1;
	while (start > 0 && f[start - 1] != '\n')
		start--;
	uint8_t prev[AUDIT_HASH_LEN];
	assert_int_equal(EVP_Digest(f + start, len - 1 - start, prev, NULL, EVP_sha256(), NULL), 1);
	const char *seq = strstr(f + start, "\"seq\":");
	assert_non_null(seq);
	char first[24], last[24];
	snprintf(first, sizeof(first), "%llu", (unsigned long long)lo);
	snprintf(last, sizeof(last), "%llu", (unsigned long long)hi);
	hsm_audit_field extra[] = {{"first_seq", first}, {"last_seq", last}};
	hsm_audit_record rec = {.type = HSM_AUDIT_EVENT, .operation = "AuditRecordsLost",
	                        .outcome = HSM_AUDIT_ERROR, .extra = extra, .n_extra = 2};
	hsm_buf body = {0}, line = {0};
	assert_true(hsm_ok(audit_format_body(&body, "node-test", &rec, atomic_load(&fake_now))));
	assert_true(hsm_ok(audit_format_line(&line, strtoull(seq + 6, NULL, 10) + 1, body.data,
	                                     body.len, prev)));
	assert_true(hsm_ok(hsm_buf_put_u8(&line, '\n')));
	FILE *fp = fopen(path, "a");
	assert_non_null(fp);
	assert_int_equal(fwrite(line.data, 1, line.len, fp), line.len);
	assert_int_equal(fclose(fp), 0);
	hsm_buf_free(&body);
	hsm_buf_free(&line);
	free(f);
}

/* A pass at now: deletes nothing, blocked; keep still there; verify names records missing. */
static void assert_retention_blocked(hsm_audit_config *c, int64_t now, const char *keep)
{
	hsm_audit *a = NULL;
	atomic_store(&fake_now, now);
	open_unsealed(c, &a);
	fill_and_rotate(a, now, 100); /* a pass at open and one after the rotation */
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.files_expired, 0);
	assert_true(st.retention_blocked);
	hsm_audit_close(a);
	assert_int_equal(access(keep, F_OK), 0);
	char *log = slurp_log(c->dir);
	assert_null(strstr(log, "AuditFilesExpired"));
	free(log);
	char *pem = t_signer_pem(&log_signer);
	hsm_audit_verify_report r = t_verify_dir(c->dir, pem, false);
	free(pem);
	assert_false(r.valid);
}

/*
 * hsmd killed after a rotation, before the new file's first checkpoint, and
 * every earlier file deleted by hand: no checkpoint is left to state the
 * floor.  The trail is of the current format, so its floor is seq 1 (the
 * records before the oldest file are a loss), never the oldest file's first
 * seq: retention does not pass the deletion off as its own.
 */
static void test_a_floor_is_never_taken_from_a_file_name(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-floor-name");
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	int64_t now = hsm_now_ms(), then = now - 3000 * DAY_MS;
	atomic_store(&fake_now, then);
	open_unsealed(&c, &a);
	fill_and_rotate(a, then, 0);
	append_n(a, 5, 2); /* into the new file, before any checkpoint there */
	hsm_audit_close(a);
	static char files[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 2);
	drop_last_line(files[1]); /* killed: no shutdown checkpoint */
	char *f = t_slurp(files[1], NULL);
	assert_null(strstr(f, "\"checkpoint\""));
	free(f);
	assert_int_equal(unlink(files[0]), 0);
	open_unsealed(&c, &a); /* restarted; its checkpoints state every record kept */
	assert_true(hsm_ok(hsm_audit_rotate(a))); /* the file with its records expires */
	wait_retention(a);
	hsm_audit_close(a);
	char *log = slurp_log(dir);
	assert_non_null(strstr(log, "\"reason\":\"rotate\",\"kept_from\":1,"));
	free(log);
	assert_retention_blocked(&c, now, files[1]);
	t_rm_rf(dir);
}

/*
 * A checkpoint added to the trail while hsmd is stopped, stating a higher
 * floor: unsigned, it states none (only a signed checkpoint raises the
 * floor); signed, but not by this node's audit key, retention deletes
 * nothing under it.  Either way the files deleted by hand before it stay a
 * loss, and the expired file after them is kept.
 */
static void test_retention_takes_a_floor_only_this_node_signed(void **state)
{
	(void)state;
	static char files[T_MAX_FILES][PATH_MAX];
	int64_t now = hsm_now_ms(), then = now - 3000 * DAY_MS;
	for (int forged_sig = 0; forged_sig < 2; forged_sig++) {
		char dir[PATH_MAX];
		t_mkdtemp(dir, "audit-floor-forged");
		hsm_audit_config c = retention_config(dir);
		hsm_audit *a = NULL;
		atomic_store(&fake_now, then);
		open_unsealed(&c, &a);
		fill_and_rotate(a, then, 0);  /* file 1: deleted by hand */
		fill_and_rotate(a, then, 5);  /* file 2: expired */
		append_n(a, 10, 2);           /* file 3: live */
		hsm_audit_close(a);
		assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
		assert_int_equal(unlink(files[0]), 0);
		uint8_t sig[64];
		memset(sig, 0x5a, sizeof(sig));
		append_forged_checkpoint(files[2], file_seq(files[1]), forged_sig ? sig : NULL);
		assert_retention_blocked(&c, now, files[1]);
		/* The node's own checkpoints since never repeated that floor: still blocked. */
		char *log = slurp_log(dir);
		char *last = strstr(log, "\"reason\":\"shutdown\"");
		for (char *p = last; p != NULL; p = strstr(p + 1, "\"reason\":\"shutdown\""))
			last = p;
		assert_non_null(last);
		const char *want = "\"reason\":\"shutdown\",\"kept_from\":1,";
		assert_int_equal(strncmp(last, want, strlen(want)), 0);
		free(log);
		assert_retention_blocked(&c, now, files[1]);
		t_rm_rf(dir);
	}
}

/* Waits (up to 10 s) until the log in dir holds needle. */
static void wait_for_log(const char *dir, const char *needle)
{
	for (int i = 0; i < 1000; i++) {
		char *log = slurp_log(dir);
		bool there = strstr(log, needle) != NULL;
		free(log);
		if (there)
			return;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	char *log = slurp_log(dir);
	print_message("%s\n", log);
	free(log);
	fail_msg("the log never held %s", needle);
}

/*
 * Records lost under the running node (their file deleted while hsmd wrote
 * it) are recorded as such: AuditRecordsLost names them, a signed checkpoint
 * follows.  Verify reports the gap while the files around it remain; once
 * every file up to the gap has expired, retention passes it (the loss is
 * on the record, nothing is left to put back) instead of blocking for good.
 */
static void test_retention_passes_a_recorded_loss(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-recorded-loss");
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	int64_t now = hsm_now_ms(), then = now - 3000 * DAY_MS;
	atomic_store(&fake_now, then);
	open_unsealed(&c, &a);
	fill_and_rotate(a, then, 0);   /* file 1 */
	append_n(a, 5, 5);             /* file 2: lost under the node */
	assert_true(hsm_ok(hsm_audit_checkpoint(a))); /* synced: they were written */
	static char files[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 2);
	assert_int_equal(unlink(files[1]), 0);
	hsm_audit_record r = t_record(10);
	hsm_result ar = hsm_audit_append(a, &r); /* its sync finds the file gone */
	(void)ar;             /* written again in the new file, or refused: either way */
	wait_for_log(dir, "\"reason\":\"lost\"");
	char *log = slurp_log(dir);
	char want[96];
	snprintf(want, sizeof(want), "\"first_seq\":\"%llu\"", (unsigned long long)file_seq(files[1]));
	assert_non_null(strstr(log, "AuditRecordsLost"));
	assert_non_null(strstr(log, want));
	free(log);
	assert_true(hsm_ok(hsm_audit_rotate(a))); /* the file recording the loss ends */
	wait_retention(a);
	hsm_audit_close(a);
	char *pem = t_signer_pem(&log_signer);
	hsm_audit_verify_report v = t_verify_dir(dir, pem, false);
	assert_false(v.valid); /* the gap shows while the files around it remain */
	assert_int_equal(v.problem, HSM_AUDIT_DELETED);

	atomic_store(&fake_now, now);
	open_unsealed(&c, &a);
	fill_and_rotate(a, now, 100);
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_false(st.retention_blocked);
	assert_int_equal(st.files_expired, 2); /* the files before and after the gap */
	hsm_audit_close(a);
	assert_int_equal(access(files[0], F_OK), -1);
	log = slurp_log(dir);
	assert_non_null(strstr(log, "\"reason\":\"retention\""));
	free(log);
	v = t_verify_dir(dir, pem, false);
	assert_true(v.valid);
	free(pem);
	t_rm_rf(dir);
}

/*
 * Only the node's own record of a loss lets retention pass a gap: an
 * AuditRecordsLost added by hand while hsmd was stopped, followed by a
 * checkpoint that is unsigned or whose signature is not this node's, leaves
 * the gap a deletion, and retention blocked.
 */
static void test_retention_passes_no_loss_recorded_by_hand(void **state)
{
	(void)state;
	static char files[T_MAX_FILES][PATH_MAX];
	int64_t now = hsm_now_ms(), then = now - 3000 * DAY_MS;
	for (int forged_sig = 0; forged_sig < 2; forged_sig++) {
		char dir[PATH_MAX];
		t_mkdtemp(dir, "audit-loss-forged");
		hsm_audit_config c = retention_config(dir);
		hsm_audit *a = NULL;
		atomic_store(&fake_now, then);
		open_unsealed(&c, &a);
		fill_and_rotate(a, then, 0);  /* file 1: expired */
		fill_and_rotate(a, then, 5);  /* file 2: deleted by hand */
		append_n(a, 10, 2);           /* file 3: expired, once rotated */
		hsm_audit_close(a);
		assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
		assert_int_equal(unlink(files[1]), 0);
		uint8_t sig[64];
		memset(sig, 0x5a, sizeof(sig));
		append_forged_loss(files[2], file_seq(files[1]), file_seq(files[2]) - 1);
		append_forged_checkpoint(files[2], 1, forged_sig ? sig : NULL);
		atomic_store(&fake_now, then);
		open_unsealed(&c, &a);
		assert_true(hsm_ok(hsm_audit_rotate(a))); /* file 3 ends */
		wait_retention(a);
		hsm_audit_close(a);
		assert_retention_blocked(&c, now, files[0]);
		t_rm_rf(dir);
	}
}

/*
 * The floor is looked for through whole files: a retention checkpoint more
 * than the tail window (1 MiB) before the end of the newest file, with no
 * checkpoint after it (hsmd killed before its next one), still states it.
 */
static void test_the_floor_is_found_beyond_the_tail_window(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-floor-far");
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	int64_t now = hsm_now_ms();
	atomic_store(&fake_now, now - 3000 * DAY_MS);
	open_unsealed(&c, &a);
	fill_and_rotate(a, now - 3000 * DAY_MS, 0); /* file 1: expires at the next pass */
	fill_and_rotate(a, now, 5); /* file 2: kept; the pass states its seq */
	static char files[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 2);
	uint64_t floor = file_seq(files[0]);
	append_n(a, 10, 4000); /* more than a window of records after the retention checkpoint */
	hsm_audit_close(a);
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 2);
	drop_last_line(files[1]); /* killed: no shutdown checkpoint */
	struct stat st;
	assert_int_equal(stat(files[1], &st), 0);
	assert_true(st.st_size > (off_t)(1 << 20));
	assert_true(hsm_ok(hsm_audit_open(&c, &a))); /* sealed: the floor needs no signer */
	hsm_audit_close(a);
	char want[96];
	snprintf(want, sizeof(want), "\"reason\":\"shutdown\",\"kept_from\":%llu,",
	         (unsigned long long)floor);
	char *log = slurp_log(dir);
	assert_non_null(strstr(log, want));
	free(log);
	assert_true(t_verify_dir(dir, NULL, false).valid);
	t_rm_rf(dir);
}

/* Fails every write once a retention pass has begun, while armed. */
static atomic_bool fail_after_pass_armed, fail_writes;
static int fail_after_pass(void *arg, hsm_audit_io_op op)
{
	(void)arg;
	if (op == HSM_AUDIT_IO_RETENTION && atomic_load(&fail_after_pass_armed))
		atomic_store(&fail_writes, true);
	return op == HSM_AUDIT_IO_WRITE && atomic_load(&fail_writes) ? EIO : 0;
}

/* Retention that cannot state what it keeps deletes nothing. */
static void test_retention_deletes_nothing_it_cannot_state(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-retention-unstated");
	int64_t now = hsm_now_ms();
	hsm_audit_config c = retention_config(dir);
	c.test_io_hook = fail_after_pass;
	hsm_audit *a = NULL;
	atomic_store(&fake_now, now - 3000 * DAY_MS);
	open_unsealed(&c, &a);
	fill_and_rotate(a, now - 3000 * DAY_MS, 0); /* file 1: expired at the third pass */
	fill_and_rotate(a, now - 2556 * DAY_MS, 5);
	static char files[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	atomic_store(&fail_after_pass_armed, true); /* before the clock: any pass from now on fails */
	atomic_store(&fake_now, now); /* retention is due: the next pass deletes file 1 */
	hsm_result ck = hsm_audit_checkpoint(a); /* the writer asks for the pass, then fails */
	(void)ck;
	wait_retention(a);
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	assert_false(hsm_audit_healthy(a));
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.files_expired, 0);
	atomic_store(&fail_after_pass_armed, false);
	atomic_store(&fail_writes, false);
	hsm_audit_close(a);
	assert_int_equal(t_list(dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	t_rm_rf(dir);
}

/* Whether the files at x and y hold the same bytes. */
static bool same_file(const char *x, const char *y)
{
	size_t nx = 0, ny = 0;
	char *a = t_slurp(x, &nx), *b = t_slurp(y, &ny);
	bool same = nx == ny && memcmp(a, b, nx) == 0;
	free(a);
	free(b);
	return same;
}

/* The path of name (a log file's path) in dir. */
static void in_dir(char out[PATH_MAX], const char *dir, const char *path)
{
	int n = snprintf(out, PATH_MAX, "%.2048s/%.1024s", dir, strrchr(path, '/') + 1);
	assert_true(n > 0 && n < PATH_MAX);
}

/* A log and its copy directory, opened with the clock 3000 days back. */
typedef struct copy_fx {
	char dir[PATH_MAX], copies[PATH_MAX];
	hsm_audit_config c;
	hsm_audit *a;
	int64_t now;
} copy_fx;

static void copy_open(copy_fx *x, const char *tag)
{
	char tag2[64];
	t_mkdtemp(x->dir, tag);
	snprintf(tag2, sizeof(tag2), "%s-copies", tag);
	t_mkdtemp(x->copies, tag2);
	x->now = hsm_now_ms();
	x->c = retention_config(x->dir);
	x->c.copy_dir = x->copies;
	x->a = NULL;
	atomic_store(&fake_now, x->now - 3000 * DAY_MS);
	open_unsealed(&x->c, &x->a);
}

static void copy_done(copy_fx *x)
{
	t_rm_rf(x->dir);
	t_rm_rf(x->copies);
}

/*
 * With a copy directory, each closed file is copied there, the current one
 * is not, and retention deletes a copy with its original; the copies and
 * the current file verify as one log.
 */
static void test_closed_files_are_copied_and_expire_with_their_originals(void **state)
{
	(void)state;
	char path[PATH_MAX];
	copy_fx x;
	copy_open(&x, "audit-copy");
	fill_and_rotate(x.a, x.now - 3000 * DAY_MS, 0);
	fill_and_rotate(x.a, x.now - 2556 * DAY_MS, 5);
	static char files[T_MAX_FILES][PATH_MAX], copied[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(x.dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	assert_int_equal(t_list(x.copies, "audit-", ".jsonl", copied, T_MAX_FILES), 2);
	for (int i = 0; i < 2; i++) {
		in_dir(path, x.dir, copied[i]);
		assert_string_equal(path, files[i]);
		assert_true(same_file(files[i], copied[i]));
	}
	hsm_audit_stats st;
	hsm_audit_get_stats(x.a, &st);
	assert_int_equal(st.files_copied, 2);
	assert_int_equal(st.copy_failures, 0);
	fill_and_rotate(x.a, x.now, 10); /* file 3 copied; file 1 and its copy expire */
	hsm_audit_close(x.a);
	assert_int_equal(t_list(x.copies, "audit-", ".jsonl", copied, T_MAX_FILES), 2);
	in_dir(path, x.copies, files[1]);
	assert_string_equal(copied[0], path);
	assert_int_equal(t_list(x.dir, "audit-", ".jsonl", files, T_MAX_FILES), 3);
	assert_true(same_file(files[1], copied[1]));
	/* The copies, then the file still being written when hsmd stopped: one log. */
	const char *log[3] = {copied[0], copied[1], files[2]};
	hsm_audit_verify_options o = {0};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_files(log, 3, &o, &r)));
	assert_true(r.valid);
	assert_int_equal(r.first_seq, file_seq(copied[0]));
	uint64_t records = r.records;
	/* Both directories given whole: a file and its copy are read once. */
	const char *both[5] = {copied[0], copied[1], files[0], files[1], files[2]};
	assert_true(hsm_ok(hsm_audit_verify_files(both, 5, &o, &r)));
	assert_true(r.valid);
	assert_int_equal(r.records, records);
	assert_int_equal(r.files, 3);
	/* A copy that is not its original's bytes: named, whichever the chain would take. */
	FILE *f = fopen(copied[1], "r+");
	assert_non_null(f);
	assert_int_equal(fseek(f, 10, SEEK_SET), 0);
	assert_int_equal(fputc('X', f), 'X');
	fclose(f);
	assert_true(hsm_ok(hsm_audit_verify_files(both, 5, &o, &r)));
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_MODIFIED);
	assert_non_null(strstr(r.detail, "have the same name but differ"));
	copy_done(&x);
}

/*
 * Two nodes' trails, each numbered from seq 1, given together are not one log: no
 * verdict (HSM_AUDIT_SEVERAL_TRAILS), the detail naming each trail by its node and
 * directory, where the mix was reported as modified; each verifies alone.  A trail
 * with a changed record beside its own copy is still modified (the test above).
 */
static void test_two_nodes_trails_are_told_apart(void **state)
{
	(void)state;
	char dirs[2][PATH_MAX];
	static const char *const nodes[2] = {"node-a", "node-b"};
	static char files[2][T_MAX_FILES][PATH_MAX];
	const char *both[2 * T_MAX_FILES];
	size_t n_both = 0;
	for (int i = 0; i < 2; i++) {
		t_mkdtemp(dirs[i], nodes[i]);
		hsm_audit_config c = t_config(dirs[i]);
		c.node_id = nodes[i];
		c.rotate_bytes = 8192;
		hsm_audit *a = NULL;
		assert_true(hsm_ok(hsm_audit_open(&c, &a)));
		append_n(a, 0, 80 - 50 * (unsigned)i); /* node-b's last file: seqs node-a has */
		assert_true(hsm_ok(hsm_audit_rotate(a)));
		append_n(a, 100, 10);
		hsm_audit_close(a);
		assert_true(t_verify_dir(dirs[i], NULL, false).valid);
		size_t n = t_list(dirs[i], "audit-", ".jsonl", files[i], T_MAX_FILES);
		assert_true(n >= 2);
		for (size_t k = 0; k < n; k++)
			both[n_both++] = files[i][k];
	}
	hsm_audit_verify_options o = {0};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_files(both, n_both, &o, &r)));
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_SEVERAL_TRAILS);
	assert_string_equal(hsm_audit_problem_name(r.problem), "several trails");
	assert_non_null(strstr(r.detail, "the files given hold 2 audit trails"));
	assert_non_null(strstr(r.detail, "verify each trail alone"));
	for (int i = 0; i < 2; i++) {
		char named[3 * PATH_MAX];
		snprintf(named, sizeof(named), "%s's (", nodes[i]);
		assert_non_null(strstr(r.detail, named));
		snprintf(named, sizeof(named), " files in %s)", dirs[i]);
		assert_non_null(strstr(r.detail, named));
	}
	/*
	 * One trail's files beside the other's later file only (no name in common):
	 * that file alone does not verify (its trail's start is missing), and
	 * verified alone is how it is judged: INVALID, its own verdict.
	 */
	const char *mixed[T_MAX_FILES + 1];
	size_t n_mixed = 0;
	for (size_t k = 0; both[k] != files[1][0]; k++)
		mixed[n_mixed++] = both[k];
	mixed[n_mixed++] = both[n_both - 1];
	assert_true(hsm_ok(hsm_audit_verify_files(mixed, n_mixed, &o, &r)));
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_DELETED);
	assert_string_equal(r.file, both[n_both - 1]);
	for (int i = 0; i < 2; i++)
		t_rm_rf(dirs[i]);
}

/* A trail of node's own in a new directory, of at least `files` files; *n gets their count. */
static void trail_of(char dir[PATH_MAX], const char *node, size_t files,
                     char paths[][PATH_MAX], size_t *n)
{
	t_mkdtemp(dir, node);
	hsm_audit_config c = t_config(dir);
	c.node_id = node;
	c.rotate_bytes = 8192;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	for (unsigned i = 0; t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES) < files; i++)
		append_n(a, 10 * i, 10);
	hsm_audit_close(a);
	assert_true(t_verify_dir(dir, NULL, false).valid);
	*n = t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES);
}

/* Rewrites path: without its line `cut` (1-based; 0 = none), each "node":"from" as "to". */
static void tamper(const char *path, size_t cut, const char *from, const char *to)
{
	char *text = t_slurp(path, NULL), *out = calloc(1, strlen(text) * 2 + 1), *w = out;
	assert_non_null(out);
	char old[64], new[64];
	snprintf(old, sizeof(old), "\"node\":\"%s\"", from);
	snprintf(new, sizeof(new), "\"node\":\"%s\"", to);
	size_t line = 1;
	for (const char *p = text; *p != '\0';) {
		const char *end = strchr(p, '\n');
		size_t len = end != NULL ? (size_t)(end - p) + 1 : strlen(p);
		if (line++ != cut) {
			for (const char *q = p; q < p + len;) {
				if (strncmp(q, old, strlen(old)) == 0) {
					w += sprintf(w, "%s", new);
					q += strlen(old);
				} else {
					*w++ = *q++;
				}
			}
		}
		p += len;
	}
	t_spit(path, out, (size_t)(w - out));
	free(out);
	free(text);
}

static hsm_audit_verify_report verify_paths(char paths[][PATH_MAX], size_t n)
{
	const char *ptrs[2 * T_MAX_FILES];
	for (size_t i = 0; i < n; i++)
		ptrs[i] = paths[i];
	hsm_audit_verify_options o = {0};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_files(ptrs, n, &o, &r)));
	return r;
}

/*
 * One trail whose middle file had its node rewritten (and a record cut from
 * it) is not two trails: no seq appears in both groups, so its verdict as
 * one log stands (INVALID), where the seq ranges' overlap made it a usage
 * error with the verdict wiped.
 */
static void test_a_trail_with_a_renamed_file_is_invalid_not_several(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	static char files[T_MAX_FILES][PATH_MAX];
	size_t n = 0;
	for (size_t cut = 0; cut <= 1; cut++) {
		trail_of(dir, "node-a", 3, files, &n);
		tamper(files[1], cut, "node-a", "node-x");
		hsm_audit_verify_report r = verify_paths(files, n);
		assert_false(r.valid);
		assert_int_not_equal(r.problem, HSM_AUDIT_SEVERAL_TRAILS);
		assert_null(strstr(r.detail, "audit trails"));
		assert_string_equal(r.file, files[1]);
		assert_int_equal(r.problem, HSM_AUDIT_MODIFIED);
		assert_non_null(strstr(r.detail, cut == 0 ? "\"prev\" does not match the previous record"
		                                          : "do not follow seq"));
		t_rm_rf(dir);
	}
}

/*
 * Two nodes' trails given together whose seqs collide, one of them tampered
 * with: each is verified alone, and the tampered one's verdict is the
 * answer (INVALID), not "several trails"; both genuine is still that.
 */
static void test_a_tampered_trail_beside_another_nodes_is_invalid(void **state)
{
	(void)state;
	char dirs[2][PATH_MAX];
	static char files[2][T_MAX_FILES][PATH_MAX], both[2 * T_MAX_FILES][PATH_MAX];
	size_t n[2], n_both = 0;
	trail_of(dirs[0], "node-a", 2, files[0], &n[0]);
	trail_of(dirs[1], "node-b", 2, files[1], &n[1]);
	for (int i = 0; i < 2; i++)
		for (size_t k = 0; k < n[i]; k++)
			memcpy(both[n_both++], files[i][k], PATH_MAX);
	assert_int_equal(verify_paths(both, n_both).problem, HSM_AUDIT_SEVERAL_TRAILS);
	/* node-b's first file loses its fifth line: node-b alone says so. */
	tamper(files[1][0], 5, "node-b", "node-b");
	hsm_audit_verify_report alone = verify_paths(files[1], n[1]);
	assert_false(alone.valid);
	hsm_audit_verify_report r = verify_paths(both, n_both);
	assert_false(r.valid);
	assert_int_equal(r.problem, alone.problem);
	assert_int_not_equal(r.problem, HSM_AUDIT_SEVERAL_TRAILS);
	assert_string_equal(r.file, files[1][0]);
	assert_int_equal(r.seq, alone.seq);
	assert_string_equal(r.detail, alone.detail);
	/* Given the other way round (node-b's files first), the same. */
	memcpy(both[n_both], both[0], PATH_MAX);
	r = verify_paths(both + 1, n_both);
	assert_int_equal(r.problem, alone.problem);
	for (int i = 0; i < 2; i++)
		t_rm_rf(dirs[i]);
}

static hsm_audit_verify_report verify_anchored(char paths[][PATH_MAX], size_t n,
                                               const hsm_audit_verify_report *head, bool live)
{
	const char *ptrs[2 * T_MAX_FILES];
	for (size_t i = 0; i < n; i++)
		ptrs[i] = paths[i];
	hsm_audit_verify_options o = {.allow_open_tail = live, .anchor_seq = head->last_seq};
	memcpy(o.anchor_hash, head->last_hash, sizeof(o.anchor_hash));
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_files(ptrs, n, &o, &r)));
	return r;
}

/*
 * An anchor names one record of one trail: given with two nodes' trails, it
 * is checked on the trail holding that record only, where it was checked on
 * both and the other's genuine trail was called modified.  Both genuine:
 * "several trails", naming the anchor's own.  The anchor's trail cut back
 * past it (only the anchor shows that, on a live trail): INVALID, never
 * "several trails", though every trail verifies without the anchor.
 */
static void test_an_anchor_is_checked_on_its_own_trail_only(void **state)
{
	(void)state;
	char dirs[2][PATH_MAX];
	static const char *const nodes[2] = {"node-a", "node-b"};
	static char files[2][T_MAX_FILES][PATH_MAX], both[2 * T_MAX_FILES][PATH_MAX];
	size_t n[2], n_both = 0;
	hsm_audit_verify_report head[2];
	for (int i = 0; i < 2; i++) {
		trail_of(dirs[i], nodes[i], 2, files[i], &n[i]);
		head[i] = verify_paths(files[i], n[i]);
		assert_true(head[i].valid);
		assert_true(verify_anchored(files[i], n[i], &head[i], false).valid);
	}
	for (int i = 0; i < 2; i++) /* node-b's files first, then node-a's */
		for (size_t k = 0; k < n[1 - i]; k++)
			memcpy(both[n_both++], files[1 - i][k], PATH_MAX);
	for (int i = 0; i < 2; i++) {
		hsm_audit_verify_report r = verify_anchored(both, n_both, &head[i], false);
		assert_false(r.valid);
		assert_int_equal(r.problem, HSM_AUDIT_SEVERAL_TRAILS);
		assert_null(strstr(r.detail, "modified"));
		char named[3 * PATH_MAX];
		snprintf(named, sizeof(named),
		         "give the anchor only with its own trail, %s's (%zu files in %s): ", nodes[i],
		         n[i], dirs[i]);
		assert_non_null(strstr(r.detail, named));
	}
	/* node-a's last record, the one its anchor names, cut: alone and live it verifies. */
	size_t len = 0, lines = 0;
	char *text = t_slurp(files[0][n[0] - 1], &len);
	for (size_t k = 0; k < len; k++)
		lines += text[k] == '\n';
	free(text);
	tamper(files[0][n[0] - 1], lines, "node-a", "node-a");
	assert_true(verify_anchored(files[0], n[0], &(hsm_audit_verify_report){0}, true).valid);
	hsm_audit_verify_report alone = verify_anchored(files[0], n[0], &head[0], true);
	assert_false(alone.valid);
	assert_int_equal(alone.problem, HSM_AUDIT_TRUNCATED);
	hsm_audit_verify_report r = verify_anchored(both, n_both, &head[0], true);
	assert_false(r.valid);
	assert_int_not_equal(r.problem, HSM_AUDIT_SEVERAL_TRAILS);
	assert_string_equal(r.file, "");
	assert_int_equal(r.seq, head[0].last_seq);
	assert_non_null(strstr(r.detail, "a record none of the 2 audit trails given holds"));
	/* node-b's anchor still finds its own trail, and node-a's cut is not seen without one. */
	assert_int_equal(verify_anchored(both, n_both, &head[1], true).problem,
	                 HSM_AUDIT_SEVERAL_TRAILS);
	for (int i = 0; i < 2; i++)
		t_rm_rf(dirs[i]);
}

/* A file the copy directory does not hold is kept past its retention, until it is copied. */
static void test_retention_keeps_files_not_copied(void **state)
{
	(void)state;
	copy_fx x;
	copy_open(&x, "audit-copy-fails");
	/* The copy directory's disk went away: a file stands where it was. */
	assert_int_equal(rmdir(x.copies), 0);
	FILE *f = fopen(x.copies, "w");
	assert_non_null(f);
	fclose(f);
	fill_and_rotate(x.a, x.now - 3000 * DAY_MS, 0);
	fill_and_rotate(x.a, x.now - 2556 * DAY_MS, 5);
	fill_and_rotate(x.a, x.now, 10); /* file 1 has expired, but has no copy */
	static char files[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(x.dir, "audit-", ".jsonl", files, T_MAX_FILES), 4);
	assert_int_equal(file_seq(files[0]), 1);
	hsm_audit_stats st;
	hsm_audit_get_stats(x.a, &st);
	assert_int_equal(st.files_expired, 0);
	assert_int_equal(st.files_copied, 0);
	assert_true(st.copy_failures >= 3);
	/* It is back: the next pass copies everything closed, then retention goes on. */
	assert_int_equal(unlink(x.copies), 0);
	assert_int_equal(mkdir(x.copies, 0700), 0);
	fill_and_rotate(x.a, x.now, 15);
	hsm_audit_get_stats(x.a, &st);
	assert_int_equal(st.files_copied, 4);
	assert_int_equal(st.files_expired, 1);
	hsm_audit_close(x.a);
	static char copied[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(x.copies, "audit-", ".jsonl", copied, T_MAX_FILES), 3);
	assert_int_equal(t_list(x.dir, "audit-", ".jsonl", files, T_MAX_FILES), 4);
	assert_true(file_seq(files[0]) > 1 && file_seq(copied[0]) == file_seq(files[0]));
	copy_done(&x);
}

/*
 * A copy directory holding a different file under a log file's name
 * (another node's log, or a copy changed since) is left as it is: reported,
 * and the original is kept.  Compared by size, then by its last line.
 */
static void test_a_different_file_in_the_copy_dir_is_left_alone(void **state)
{
	(void)state;
	copy_fx x;
	copy_open(&x, "audit-copy-other");
	fill_and_rotate(x.a, x.now - 3000 * DAY_MS, 0);
	hsm_audit_close(x.a);
	static char copied[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(x.copies, "audit-", ".jsonl", copied, T_MAX_FILES), 1);
	/* The copy changed in its last line, keeping its size. */
	size_t len = 0;
	char *body = t_slurp(copied[0], &len);
	body[len - 1] = '\0';
	char *last = strrchr(body, '\n');
	body[len - 1] = '\n';
	assert_non_null(last);
	char *seq = strstr(last, "\"seq\":");
	assert_non_null(seq);
	seq[6] = seq[6] == '9' ? '8' : (char)(seq[6] + 1);
	FILE *f = fopen(copied[0], "w");
	assert_non_null(f);
	assert_int_equal(fwrite(body, 1, len, f), len);
	fclose(f);
	atomic_store(&fake_now, x.now);
	open_unsealed(&x.c, &x.a); /* a new process: compares it once */
	fill_and_rotate(x.a, x.now, 5);                  /* file 1 has expired */
	hsm_audit_stats st;
	hsm_audit_get_stats(x.a, &st);
	assert_int_equal(st.files_expired, 0);
	assert_true(st.copy_failures >= 1);
	hsm_audit_close(x.a);
	char *after = t_slurp(copied[0], NULL);
	assert_string_equal(after, body); /* left as it was */
	static char files[T_MAX_FILES][PATH_MAX];
	t_list(x.dir, "audit-", ".jsonl", files, T_MAX_FILES);
	assert_int_equal(file_seq(files[0]), 1); /* the original is kept */
	free(after);
	free(body);
	copy_done(&x);
}

/*
 * A wall clock stepped back (an NTP correction, a restored VM snapshot) puts
 * off no checkpoint: the next one still comes within one interval, so the
 * records written meanwhile do not wait for the clock to catch up before a
 * signature covers them.
 */
static void test_clock_stepped_back_puts_off_no_checkpoint(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-clock-back");
	int64_t t0 = hsm_now_ms();
	hsm_audit_config c = t_config(dir);
	c.clock_ms = fake_clock;
	c.checkpoint_interval_ms = 1000;
	atomic_store(&fake_now, t0);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 0, 3);
	atomic_store(&fake_now, t0 - DAY_MS);
	append_n(a, 3, 3);
	usleep(600 * 1000); /* the writer looks at the clock at least every 250 ms */
	atomic_store(&fake_now, t0 - DAY_MS + 1500);
	append_n(a, 6, 3);
	usleep(600 * 1000);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	char *text = t_slurp(paths[0], NULL);
	assert_non_null(strstr(text, "\"reason\":\"interval\""));
	free(text);
	hsm_audit_close(a);
	t_rm_rf(dir);
}

/* ---- Torn tail ----------------------------------------------------------- */

static void test_torn_tail_detected_preserved_continued(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-torn");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 0, 20);
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	hsm_audit_close(a);
	uint64_t last_good = st.next_seq; /* the shutdown checkpoint's seq */

	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	size_t len = 0;
	char *s = t_slurp(paths[0], &len);
	size_t lines = t_count_lines(s);
	/* A power loss mid-write: half a line, no newline. */
	const char torn[] = "{\"seq\":999,\"time\":\"2026-01-01T00:00:00.000Z\",\"node\":\"no";
	char *damaged = malloc(len + sizeof(torn));
	assert_non_null(damaged);
	memcpy(damaged, s, len);
	memcpy(damaged + len, torn, sizeof(torn) - 1);
	t_spit(paths[0], damaged, len + sizeof(torn) - 1);

	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_false(r.valid);
	assert_int_equal(r.problem, HSM_AUDIT_TORN);
	assert_int_equal(r.line, lines + 1);
	assert_int_equal(r.offset, len);
	char want[48];
	snprintf(want, sizeof(want), "%zu bytes", sizeof(torn) - 1);
	assert_non_null(strstr(r.detail, want));
	/* Read as a live trail (--live), the same bytes could be a record being written:
	 * left out and counted, the records before them valid. */
	r = t_verify_dir(dir, NULL, true);
	assert_true(r.valid);
	assert_int_equal(r.in_progress_bytes, sizeof(torn) - 1);

	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 20, 5);
	hsm_audit_close(a);
	/* The damaged bytes are kept aside, byte for byte. */
	static char side[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", "", side, T_MAX_FILES), 2);
	size_t sl = 0;
	char *saved = t_slurp(strstr(side[0], ".torn-") ? side[0] : side[1], &sl);
	assert_int_equal(sl, sizeof(torn) - 1);
	assert_memory_equal(saved, torn, sl);
	/* The log continues from the last valid record, says what happened, and verifies. */
	char *now = t_slurp(paths[0], NULL);
	assert_memory_equal(now, s, len);
	char expect[64];
	snprintf(expect, sizeof(expect), "{\"seq\":%llu,", (unsigned long long)last_good + 1);
	assert_non_null(strstr(now, expect));
	assert_non_null(strstr(now, "\"op\":\"AuditTornTail\""));
	snprintf(want, sizeof(want), "\"bytes\":\"%zu\"", sizeof(torn) - 1);
	assert_non_null(strstr(now, want));
	assert_non_null(strstr(now, "\"previous_shutdown\":\"unclean\""));
	r = t_verify_dir(dir, NULL, false);
	if (!r.valid)
		print_message("%s\n", r.detail);
	assert_true(r.valid);
	assert_int_equal(r.records, r.last_seq);
	free(s);
	free(damaged);
	free(saved);
	free(now);
	t_rm_rf(dir);
}

static void test_damaged_last_lines_cut_back_to_valid(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-zeros");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 0, 10);
	hsm_audit_close(a);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	size_t len = 0;
	char *s = t_slurp(paths[0], &len);
	/* The last line's blocks came back as zeros, newline included. */
	char *last = s + len - 1;
	while (last > s && last[-1] != '\n')
		last--;
	size_t keep = (size_t)(last - s);
	memset(last, 0, len - keep);
	t_spit(paths[0], s, len);
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_close(a);
	char *now = t_slurp(paths[0], NULL);
	assert_memory_equal(now, s, keep);
	hsm_audit_verify_report r = t_verify_dir(dir, NULL, false);
	assert_true(r.valid);
	assert_int_equal(r.records, r.last_seq);
	free(s);
	free(now);
	t_rm_rf(dir);
}

static void test_second_writer_refused_and_checkpoint_type_refused(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-lock");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL, *b = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	assert_int_equal(hsm_audit_open(&c, &b).err, HSM_ERR_IO);
	hsm_audit_record r = t_record(1);
	r.type = HSM_AUDIT_CHECKPOINT;
	assert_int_equal(hsm_audit_append(a, &r).err, HSM_ERR_VALIDATION);
	hsm_audit_config bad = t_config(dir);
	bad.node_id = "node\nx";
	assert_int_equal(hsm_audit_open(&bad, &b).err, HSM_ERR_VALIDATION);
	hsm_audit_close(a);
	t_rm_rf(dir);
}

static void test_syslog_forwarding_never_blocks_the_log(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-syslog");
	hsm_audit_config c = t_config(dir);
	c.syslog = true;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 0, 50);
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.written, 50);
	hsm_audit_close(a);
	assert_true(t_verify_dir(dir, NULL, false).valid);
	t_rm_rf(dir);
}

/* A datagram socket at path standing in for /dev/log; receives time out after 5 s. */
static int t_log_socket(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	struct timeval tv = {.tv_sec = 5};
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	return fd;
}

/* The next message on fd (NUL-terminated in buf), its length; fails the test on a timeout. */
static size_t t_log_recv(int fd, char *buf, size_t cap)
{
	ssize_t n = recv(fd, buf, cap - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	return (size_t)n;
}

static void t_wait_syslog_dropped(hsm_audit *a, uint64_t n)
{
	hsm_audit_stats st;
	for (int i = 0; i < 500; i++) {
		hsm_audit_get_stats(a, &st);
		if (st.syslog_dropped >= n)
			break;
		usleep(10000);
	}
	assert_true(st.syslog_dropped >= n);
}

/* A record of the most extra values, 512 control characters each: escaped as \u0001, 30 KiB. */
static void append_big(hsm_audit *a)
{
	static char v[513];
	memset(v, 1, 512);
	hsm_audit_field f[HSM_AUDIT_MAX_EXTRA];
	static const char *const names[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};
	_Static_assert(sizeof(names) / sizeof(names[0]) == HSM_AUDIT_MAX_EXTRA, "a name each");
	for (size_t i = 0; i < HSM_AUDIT_MAX_EXTRA; i++)
		f[i] = (hsm_audit_field){names[i], v};
	hsm_audit_record r = t_record(999);
	r.extra = f;
	r.n_extra = HSM_AUDIT_MAX_EXTRA;
	assert_true(hsm_ok(hsm_audit_append(a, &r)));
}

static void test_syslog_lines_reach_the_socket_as_syslog_writes_them(void **state)
{
	(void)state;
	char dir[PATH_MAX], path[PATH_MAX + 8], buf[16384];
	t_mkdtemp(dir, "audit-syslog");
	snprintf(path, sizeof(path), "%s/log", dir);
	int fd = t_log_socket(path);
	hsm_audit_config c = t_config(dir);
	c.syslog = true;
	c.syslog_path = path;
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 0, 3);
	append_big(a);
	/* The log's opening event, the three, the big one: each a message of its own. */
	size_t big = 0;
	for (int i = 0; i < 5 && big == 0; i++) {
		size_t n = t_log_recv(fd, buf, sizeof(buf));
		assert_memory_equal(buf, "<86>", 4); /* LOG_AUTHPRIV | LOG_INFO */
		char *body = strstr(buf, " hsmd-audit[");
		assert_non_null(body);
		body = strstr(body, "]: {\"seq\":");
		assert_non_null(body);
		if (strstr(body, "req-00000999") != NULL)
			big = n - (size_t)(body + 3 - buf);
		else
			assert_int_equal(buf[n - 1], '}'); /* whole, no NUL: a datagram is framed */
	}
	assert_int_equal(big, 8192); /* cut, and counted */
	hsm_audit_stats st;
	hsm_audit_get_stats(a, &st);
	assert_int_equal(st.syslog_cut, 1);
	assert_int_equal(st.syslog_dropped, 0);
	hsm_audit_close(a);
	close(fd);
	t_rm_rf(dir);
}

static void test_syslog_not_reached_counts_lines_dropped_until_it_is(void **state)
{
	(void)state;
	char dir[PATH_MAX], path[PATH_MAX + 8], buf[16384];
	t_mkdtemp(dir, "audit-syslog");
	snprintf(path, sizeof(path), "%s/log", dir);
	hsm_audit_config c = t_config(dir);
	c.syslog = true;
	c.syslog_path = path; /* nothing there yet */
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	append_n(a, 0, 20);
	t_wait_syslog_dropped(a, 21); /* and the opening event */
	/* The daemon comes: a second on, lines reach it again. */
	int fd = t_log_socket(path);
	bool reached = false;
	for (unsigned i = 100; i < 400 && !reached; i++) {
		append_n(a, i, 1);
		usleep(10000);
		reached = recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0;
	}
	assert_true(reached);
	hsm_audit_close(a);
	close(fd);
	t_rm_rf(dir);
}

/* ---- Looking records up by request id (the server's outbox) --------------- */

static void test_requests_are_found_by_id_across_files(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-find");
	hsm_audit_config c = retention_config(dir);
	hsm_audit *a = NULL;
	atomic_store(&fake_now, 10 * DAY_MS);
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	uint64_t below = hsm_audit_next_seq(a);
	append_n(a, 0, 5); /* req-00000000 .. 04, in the first file */
	/* Acknowledged records are below next_seq; durable once the watermark passes it. */
	assert_true(hsm_audit_next_seq(a) >= below + 5);
	assert_true(hsm_ok(hsm_audit_rotate(a)));
	assert_true(hsm_audit_durable_seq(a) >= below + 5);
	atomic_store(&fake_now, 12 * DAY_MS);
	append_n(a, 5, 5); /* req-00000005 .. 09, in the second */
	assert_true(hsm_ok(hsm_audit_rotate(a)));
	atomic_store(&fake_now, 20 * DAY_MS);
	append_n(a, 10, 5); /* req-00000010 .. 14, in the third */
	uint64_t last = hsm_audit_next_seq(a), durable = 0;
	/* A close that stopped every thread made every record durable, its checkpoint too. */
	assert_true(hsm_audit_close_durable(a, &durable));
	assert_int_equal(durable, last + 1);

	/* sorted: "req-0000000" (a prefix of ids, not an id) < ...01 < ...07 < ...12 < ...99 */
	const char *ids[] = {"req-0000000", "req-00000001", "req-00000007", "req-00000012",
	                     "req-00000099"};
	bool found[5];
	assert_true(hsm_ok(hsm_audit_find_requests(dir, 0, ids, 5, found)));
	assert_false(found[0]);
	assert_true(found[1] && found[2] && found[3]);
	assert_false(found[4]);
	/* The search ends with the first file that begins before since_ms (it may hold later
	 * records): the second is read, the first is not. */
	assert_true(hsm_ok(hsm_audit_find_requests(dir, 15 * DAY_MS, ids, 5, found)));
	assert_false(found[1]);
	assert_true(found[2] && found[3]);
	/* No log files at all: nothing found, no failure. */
	char empty[PATH_MAX];
	t_mkdtemp(empty, "audit-find-empty");
	assert_true(hsm_ok(hsm_audit_find_requests(empty, 0, ids, 5, found)));
	assert_false(found[1] || found[2] || found[3]);
	t_rm_rf(empty);
	t_rm_rf(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lazy_submit_kick_and_batch_hook),
	    cmocka_unit_test(test_continuity_across_reopen),
	    cmocka_unit_test(test_continuity_across_rotation),
	    cmocka_unit_test(test_retention_deletes_only_expired),
	    cmocka_unit_test(test_retention_holds_while_the_clock_runs_ahead),
	    cmocka_unit_test(test_retention_keeps_the_log_whole),
	    cmocka_unit_test(test_retention_states_what_it_keeps_before_deleting),
	    cmocka_unit_test(test_retention_waits_for_a_signer),
	    cmocka_unit_test(test_files_deleted_while_stopped_show),
	    cmocka_unit_test(test_retention_states_only_a_floor_the_chain_proves),
	    cmocka_unit_test(test_a_floor_is_never_taken_from_a_file_name),
	    cmocka_unit_test(test_the_floor_is_found_beyond_the_tail_window),
	    cmocka_unit_test(test_retention_takes_a_floor_only_this_node_signed),
	    cmocka_unit_test(test_retention_passes_a_recorded_loss),
	    cmocka_unit_test(test_retention_passes_no_loss_recorded_by_hand),
	    cmocka_unit_test(test_retention_deletes_nothing_it_cannot_state),
	    cmocka_unit_test(test_closed_files_are_copied_and_expire_with_their_originals),
	    cmocka_unit_test(test_retention_keeps_files_not_copied),
	    cmocka_unit_test(test_a_different_file_in_the_copy_dir_is_left_alone),
	    cmocka_unit_test(test_clock_stepped_back_puts_off_no_checkpoint),
	    cmocka_unit_test(test_torn_tail_detected_preserved_continued),
	    cmocka_unit_test(test_damaged_last_lines_cut_back_to_valid),
	    cmocka_unit_test(test_second_writer_refused_and_checkpoint_type_refused),
	    cmocka_unit_test(test_syslog_forwarding_never_blocks_the_log),
	    cmocka_unit_test(test_syslog_lines_reach_the_socket_as_syslog_writes_them),
	    cmocka_unit_test(test_syslog_not_reached_counts_lines_dropped_until_it_is),
	    cmocka_unit_test(test_requests_are_found_by_id_across_files),
	    cmocka_unit_test(test_two_nodes_trails_are_told_apart),
	    cmocka_unit_test(test_a_trail_with_a_renamed_file_is_invalid_not_several),
	    cmocka_unit_test(test_a_tampered_trail_beside_another_nodes_is_invalid),
	    cmocka_unit_test(test_an_anchor_is_checked_on_its_own_trail_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
