/*
 * The fixed-buffer string builder: what fits, what is cut, and that the
 * result is always terminated.  Put-off calls: each made once, in order.
 * Atomic writes and the check on directories others may write to.  Passwords
 * masked in URIs and in the process's arguments.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"

static void test_sb_builds_what_fits(void **state)
{
	(void)state;
	char out[64];
	hsm_sb b;
	hsm_sb_init(&b, out, sizeof(out));
	assert_string_equal(out, "");
	hsm_sb_add(&b, "arn:aws:iam::");
	hsm_sb_add(&b, "111122223333");
	hsm_sb_add(&b, ":user/");
	hsm_sb_addn(&b, "alice-and-more", 5);
	hsm_sb_add(&b, "/");
	hsm_sb_u64(&b, 0);
	hsm_sb_add(&b, "/");
	hsm_sb_u64(&b, UINT64_MAX);
	assert_string_equal(out, "arn:aws:iam::111122223333:user/alice/0/18446744073709551615");
	assert_int_equal(b.len, strlen(out));
	assert_false(b.cut);
	hsm_sb_addn(&b, "", 10); /* nothing to add is not a cut */
	assert_false(b.cut);
}

/* Every capacity gives snprintf's answer, and cut exactly when snprintf would cut. */
static void test_sb_cuts_like_snprintf(void **state)
{
	(void)state;
	for (size_t cap = 1; cap <= 24; cap++) {
		char got[32], want[32];
		memset(got, 'x', sizeof(got));
		hsm_sb b;
		hsm_sb_init(&b, got, cap);
		hsm_sb_add(&b, "10.0.0.1");
		hsm_sb_add(&b, ":");
		hsm_sb_u64(&b, 54321);
		hsm_sb_addn(&b, "abcdef", 3);
		int n = snprintf(want, cap, "%s:%u%.3s", "10.0.0.1", 54321U, "abcdef");
		assert_string_equal(got, want);
		assert_int_equal(b.cut, (size_t)n >= cap);
		assert_int_equal(b.len, strlen(want));
		assert_int_equal(got[cap], 'x'); /* nothing written past the capacity */
	}
}

/* What the calls of the hsm_calls test made, in order. */
static char calls_log[16];
static size_t calls_len;
static hsm_calls *calls_again; /* a list note_again adds itself to */

static void note(void *arg)
{
	calls_log[calls_len++] = *(const char *)arg;
}

static void note_again(void *arg)
{
	note(arg);
	hsm_calls_add(calls_again, note_again, arg);
}

static void test_location_shown_has_no_credentials(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
	    {"postgresql://hsmd:s3cr3t@db.example:5432/hsm", "postgresql://db.example:5432/hsm"},
	    {"postgres://u:p@ss@w0rd@db1,db2:6432/hsm?sslmode=verify-full&password=s3cr3t",
	     "postgres://db1,db2:6432/hsm"},
	    {"postgresql://db/hsm?password=s3cr3t", "postgresql://db/hsm"},
	    {"postgresql://hsmd@db", "postgresql://db"},
	    {"postgresql://db/hsm#frag", "postgresql://db/hsm"},
	    {"postgresql://?host=db&password=s3cr3t", "postgresql://"},
	    {"/var/lib/hsmd", "/var/lib/hsmd"},
	    {"postgresql://hsmd:pa/ss@db.example/hsm", "postgresql://db.example/hsm"},
	    {"postgresql://hsmd:a/b@c@db/hsm?password=x", "postgresql://db/hsm"},
	    /* libpq reads the userinfo up to the '@' before the first '/': '?' and '#'
	     * before it are the password's. */
	    {"postgresql://u:s3cr?et@db.example/hsm", "postgresql://db.example/hsm"},
	    {"postgresql://u:s3cr#et@db.example/hsm?sslmode=require", "postgresql://db.example/hsm"},
	    {"postgresql://u:a?b@c#d@db/hsm", "postgresql://db/hsm"},
	    {"postgresql://u:p%40ss?@db/hsm", "postgresql://db/hsm"},
	    /* An '@' after the path is not the userinfo's. */
	    {"postgresql://db/hsm?passfile=/x@y", "postgresql://db/hsm"},
	};
	char out[128];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		hsm_location_shown(cases[i][0], out, sizeof(out));
		assert_string_equal(out, cases[i][1]);
	}
	hsm_location_shown("postgresql://u:pw@db.example/hsm", out, 12); /* cut, never overrun */
	assert_string_equal(out, "postgresql:");
}

static void test_calls_once_each_in_order(void **state)
{
	(void)state;
	static const char a = 'a', b = 'b', c = 'c', d = 'd', e = 'e';
	hsm_calls calls = {.n = 0};
	hsm_calls_add(&calls, note, (void *)&a);
	hsm_calls_add(&calls, note, (void *)&b);
	hsm_calls_add(&calls, note, (void *)&a); /* there already */
	hsm_calls_add(&calls, note, (void *)&c);
	hsm_calls_add(&calls, note, (void *)&d);
	assert_int_equal(calls_len, 0);
	hsm_calls_add(&calls, note, (void *)&e); /* full: made now */
	assert_int_equal(calls_len, 1);
	hsm_calls_run(&calls);
	assert_int_equal(calls.n, 0);
	hsm_calls_run(&calls); /* nothing left */
	calls_log[calls_len] = '\0';
	assert_string_equal(calls_log, "eabcd");

	/* A call that asks for itself again is made at the next run, not this one. */
	calls_len = 0;
	calls_again = &calls;
	hsm_calls_add(&calls, note_again, (void *)&a);
	hsm_calls_run(&calls);
	assert_int_equal(calls_len, 1);
	assert_int_equal(calls.n, 1);
	hsm_calls_run(&calls);
	assert_int_equal(calls_len, 2);
}

typedef struct batch_seen {
	bool set;
	int policy, nice_before, nice_after;
} batch_seen;

static int nice_of_this_thread(void)
{
	errno = 0;
	return getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
}

static void *batch_thread(void *arg)
{
	batch_seen *seen = arg;
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice_of_this_thread() + 3);
	seen->nice_before = nice_of_this_thread();
	seen->set = hsm_thread_batch();
	seen->policy = sched_getscheduler(0);
	seen->nice_after = nice_of_this_thread();
	return NULL;
}

static void *idle_thread(void *arg)
{
	int *policy = arg;
	struct sched_param none = {.sched_priority = 0};
	if (sched_setscheduler(0, SCHED_IDLE, &none) != 0 || !hsm_thread_batch())
		return NULL;
	*policy = sched_getscheduler(0);
	return NULL;
}

/* A policy other than the default, chosen by the operator, is kept. */
static void test_thread_batch_keeps_other_policies(void **state)
{
	(void)state;
	int policy = -1;
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, idle_thread, &policy), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(policy, SCHED_IDLE);
}

/* The policy changes for the calling thread only, and its nice value stays. */
static void test_thread_batch_keeps_nice(void **state)
{
	(void)state;
	batch_seen seen = {.policy = -1};
	int nice_main = nice_of_this_thread();
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, batch_thread, &seen), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_true(seen.set);
	assert_int_equal(seen.policy, SCHED_BATCH);
	assert_int_equal(seen.nice_after, seen.nice_before);
	assert_int_equal(seen.nice_before, nice_main + 3 > 19 ? 19 : nice_main + 3);
	assert_int_equal(sched_getscheduler(0), SCHED_OTHER);
	assert_int_equal(nice_of_this_thread(), nice_main);
}

/* The published FNV-1a 64-bit test values. */
static void test_utf8_valid_as_rfc_3629(void **state)
{
	(void)state;
	static const struct {
		const char *bytes;
		size_t len;
		bool valid;
	} cases[] = {
	    {"", 0, true},
	    {"web-tls", 7, true},
	    {"a\0b", 3, true},
	    {"\xc3\xa9t\xc3\xa9", 6, true},             /* été */
	    {"\xe2\x82\xac", 3, true},                  /* U+20AC */
	    {"\xf0\x9f\x94\x91", 4, true},              /* U+1F511 */
	    {"\xf4\x8f\xbf\xbf", 4, true},              /* U+10FFFF */
	    {"\xed\x9f\xbf", 3, true},                  /* U+D7FF */
	    {"\xee\x80\x80", 3, true},                  /* U+E000 */
	    {"\x80", 1, false},                         /* a continuation first */
	    {"\xc3", 1, false},                         /* cut short */
	    {"\xe2\x82", 2, false},
	    {"\xc3\x28", 2, false},                     /* not a continuation */
	    {"\xc0\xaf", 2, false},                     /* overlong '/' */
	    {"\xe0\x80\xaf", 3, false},
	    {"\xf0\x80\x80\xaf", 4, false},
	    {"\xed\xa0\x80", 3, false},                 /* U+D800, a surrogate */
	    {"\xed\xbf\xbf", 3, false},                 /* U+DFFF */
	    {"\xf4\x90\x80\x80", 4, false},             /* above U+10FFFF */
	    {"\xf8\x88\x80\x80\x80", 5, false},
	    {"\xff", 1, false},
	    {"ok\xc3\xa9\xc3", 5, false},               /* cut short at the end */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (hsm_utf8_valid(cases[i].bytes, cases[i].len) != cases[i].valid)
			fail_msg("case %zu", i);
	}
}

static void test_fnv1a(void **state)
{
	(void)state;
	assert_true(hsm_fnv1a("", 0) == 0xcbf29ce484222325ULL);
	assert_true(hsm_fnv1a("a", 1) == 0xaf63dc4c8601ec8cULL);
	assert_true(hsm_fnv1a("foobar", 6) == 0x85944171f73967e8ULL);
	assert_true(hsm_fnv1a("foobar", 3) == hsm_fnv1a("foo", 3)); /* n bytes, not to a NUL */
}

/*
 * Times a file or a row can claim, out of the four-digit years: each is written
 * as its number of seconds (milliseconds), always NUL-terminated inside the
 * buffer, where strftime left year 10000 unterminated and gmtime_r left 2^62
 * unconverted.  The bytes after the buffer's end are a canary.
 */
static void test_format_time_out_of_range_is_a_terminated_number(void **state)
{
	(void)state;
	static const struct {
		int64_t t;
		const char *text, *text_ms; /* text_ms: t taken as milliseconds */
	} cases[] = {
	    {0, "1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000Z"},
	    {1795915812, "2026-11-29T01:30:12Z", "1970-01-21T18:51:55.812Z"},
	    {253402300799LL, "9999-12-31T23:59:59Z", "1978-01-11T21:31:40.799Z"},
	    {253402300800LL, "253402300800", "1978-01-11T21:31:40.800Z"},      /* year 10000 */
	    {INT64_C(1) << 62, "4611686018427387904", "4611686018427387904"},
	    {INT64_MAX, "9223372036854775807", "9223372036854775807"},
	    {INT64_MIN, "-9223372036854775808", "-9223372036854775808"},
	    {-1, "1969-12-31T23:59:59Z", "1969-12-31T23:59:59.999Z"},
	    {-62167219200LL, "0000-01-01T00:00:00Z", "1968-01-12T11:19:40.800Z"},
	    {-62167219201LL, "-62167219201", "1968-01-12T11:19:40.799Z"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[21 + 8], buf_ms[25 + 8];
		memset(buf, 'x', sizeof(buf));
		memset(buf_ms, 'x', sizeof(buf_ms));
		hsm_format_time(cases[i].t, buf);
		hsm_format_time_ms(cases[i].t, buf_ms);
		assert_non_null(memchr(buf, '\0', 21));
		assert_non_null(memchr(buf_ms, '\0', 25));
		assert_string_equal(buf, cases[i].text);
		assert_string_equal(buf_ms, cases[i].text_ms);
		for (size_t k = 21; k < sizeof(buf); k++)
			assert_int_equal(buf[k], 'x');
		for (size_t k = 25; k < sizeof(buf_ms); k++)
			assert_int_equal(buf_ms[k], 'x');
	}
	/* Milliseconds past year 9999, and before year 0. */
	char ms[25];
	hsm_format_time_ms(253402300800000LL, ms);
	assert_string_equal(ms, "253402300800000");
	hsm_format_time_ms(253402300799999LL, ms);
	assert_string_equal(ms, "9999-12-31T23:59:59.999Z");
	hsm_format_time_ms(-62167219200001LL, ms);
	assert_string_equal(ms, "-62167219200001");
}

/* The names in dir, sorted and joined with spaces, into out. */
static void dir_names(const char *dir, char *out, size_t cap)
{
	struct dirent **list;
	int n = scandir(dir, &list, NULL, alphasort);
	assert_true(n >= 0);
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		if (list[i]->d_name[0] != '.') {
			size_t len = strlen(out);
			snprintf(out + len, cap - len, "%s%s", len > 0 ? " " : "", list[i]->d_name);
		}
		free(list[i]);
	}
	free(list);
}

static void read_small(const char *path, char *out, size_t cap)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, cap - 1, f);
	out[n] = '\0';
	fclose(f);
}

/* The names a temporary could be guessed by, each a link planted by another user
 * to a file of theirs: the write goes to the file it names, never through a link. */
static void test_atomic_write_follows_no_planted_link(void **state)
{
	(void)state;
	char dir[] = "/tmp/hsm-util-test-XXXXXX", path[128], victim[128], planted[256];
	char got[64], names[512];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/dev-unseal.share", dir);
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	snprintf(planted, sizeof(planted), "%s.tmp.%d", path, (int)getpid());
	FILE *f = fopen(victim, "w");
	assert_non_null(f);
	fputs("untouched", f);
	fclose(f);
	assert_int_equal(symlink(victim, planted), 0);
	assert_true(hsm_ok(hsm_write_file_atomic(path, "secret", 6, 0600)));
	read_small(victim, got, sizeof(got));
	assert_string_equal(got, "untouched");
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	read_small(path, got, sizeof(got));
	assert_string_equal(got, "secret");
	/* No temporary left beside the file. */
	char want[512];
	snprintf(want, sizeof(want), "dev-unseal.share dev-unseal.share.tmp.%d victim", (int)getpid());
	dir_names(dir, names, sizeof(names));
	assert_string_equal(names, want);
	unlink(planted);
	unlink(path);
	unlink(victim);
	rmdir(dir);
}

/* A write that fails after its temporary was made (the rename, here onto a
 * directory) removes the temporary and leaves what was there. */
static void test_atomic_write_failing_leaves_no_temporary(void **state)
{
	(void)state;
	char dir[] = "/tmp/hsm-util-test-XXXXXX", path[256], names[512];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/taken", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	hsm_result r = hsm_write_file_atomic(path, "secret", 6, 0600);
	assert_true(hsm_failed(r));
	assert_int_equal(r.err, HSM_ERR_IO);
	dir_names(dir, names, sizeof(names));
	assert_string_equal(names, "taken");
	rmdir(path);
	rmdir(dir);
}

/* A link planted in the place of a file to copy (an audit file, a backup) is not
 * followed: nothing of what it names reaches the copy directory. */
static void test_copy_follows_no_planted_link(void **state)
{
	(void)state;
	char dir[] = "/tmp/hsm-util-test-XXXXXX", from[256], to[256], victim[256], names[512];
	assert_non_null(mkdtemp(dir));
	snprintf(from, sizeof(from), "%s/from", dir);
	snprintf(to, sizeof(to), "%s/to", dir);
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	assert_int_equal(mkdir(from, 0700), 0);
	assert_int_equal(mkdir(to, 0700), 0);
	FILE *f = fopen(victim, "w");
	assert_non_null(f);
	fputs("not hsmd's", f);
	fclose(f);
	char link_path[300];
	snprintf(link_path, sizeof(link_path), "%s/audit-00000000000000000001.jsonl", from);
	assert_int_equal(symlink(victim, link_path), 0);
	hsm_result r = hsm_copy_file_into(link_path, to);
	assert_true(hsm_failed(r));
	assert_int_equal(r.err, HSM_ERR_IO);
	assert_non_null(strstr(hsm_last_message(), link_path));
	assert_non_null(strstr(hsm_last_message(), "symbolic link"));
	dir_names(to, names, sizeof(names));
	assert_string_equal(names, "");
	unlink(link_path);
	unlink(victim);
	rmdir(from);
	rmdir(to);
	rmdir(dir);
}

static void test_dirs_others_may_write_to_are_refused(void **state)
{
	(void)state;
	static const struct {
		mode_t mode;
		const char *who;
	} cases[] = {{02770, "its group (mode 2770)"},
	             {0703, "others (mode 0703)"},
	             {01777, "its group and others (mode 1777)"}};
	char dir[] = "/tmp/hsm-util-test-XXXXXX", sub[256];
	assert_non_null(mkdtemp(dir));
	assert_true(hsm_ok(hsm_dir_private(dir)));
	assert_int_equal(chmod(dir, 0750), 0); /* readable by others is not the point */
	assert_true(hsm_ok(hsm_dir_private(dir)));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(chmod(dir, cases[i].mode), 0);
		hsm_result r = hsm_dir_private(dir);
		assert_true(hsm_failed(r));
		assert_int_equal(r.err, HSM_ERR_VALIDATION);
		const char *m = hsm_last_message();
		assert_non_null(strstr(m, cases[i].who));
		char fix[300];
		snprintf(fix, sizeof(fix), "chmod go-w %s", dir);
		assert_non_null(strstr(m, fix));
	}
	/* A directory it makes is private; one that exists keeps its mode and is refused. */
	assert_int_equal(chmod(dir, 0700), 0);
	snprintf(sub, sizeof(sub), "%s/made/here", dir);
	assert_true(hsm_ok(hsm_mkdir_private(sub)));
	assert_int_equal(chmod(sub, 0770), 0);
	assert_true(hsm_failed(hsm_mkdir_private(sub)));
	rmdir(sub);
	snprintf(sub, sizeof(sub), "%s/made", dir);
	rmdir(sub);
	rmdir(dir);
}

/* An empty path names no directory: refused, not read past its terminator. */
static void test_an_empty_directory_path_is_refused(void **state)
{
	(void)state;
	hsm_result r = hsm_mkdir_p("");
	assert_int_equal(r.err, HSM_ERR_VALIDATION);
	assert_string_equal(hsm_last_message(), "the directory path is empty");
	r = hsm_mkdir_private("");
	assert_int_equal(r.err, HSM_ERR_VALIDATION);
}

static void test_uri_passwords_are_masked_in_place(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
		bool masked;
	} cases[] = {
	    {"postgresql://hsmd:s3cret@db1,db2:5432/hsm?sslmode=verify-full",
	     "postgresql://hsmd:******@db1,db2:5432/hsm?sslmode=verify-full", true},
	    /* A password holding '@', ':' and '/' ends at the last '@'. */
	    {"postgres://u:a@b:c/d@host/db", "postgres://u:*******@host/db", true},
	    {"--store=postgresql://u:pw@h/db", "--store=postgresql://u:**@h/db", true},
	    {"postgresql://u@h/db?sslmode=require&password=pw1&connect_timeout=5#x",
	     "postgresql://u@h/db?sslmode=require&password=***&connect_timeout=5#x", true},
	    {"postgresql://u:p@h/db?password=q", "postgresql://u:*@h/db?password=*", true},
	    {"postgresql://hsmd@db/hsm", "postgresql://hsmd@db/hsm", false},
	    {"postgresql://db/hsm?passwordx=1", "postgresql://db/hsm?passwordx=1", false},
	    {"postgresql://u:@h/db", "postgresql://u:@h/db", false},
	    {"/var/lib/hsmd", "/var/lib/hsmd", false},
	    /* '?' and '#' before the '@' that precedes the host are the password's (libpq). */
	    {"postgresql://u:s3cr?et@h/db", "postgresql://u:*******@h/db", true},
	    {"postgresql://u:s3cr#et@h/db", "postgresql://u:*******@h/db", true},
	    {"postgresql://u:a?b#c@d@h/db?password=q#f", "postgresql://u:*******@h/db?password=***",
	     true},
	    /* libpq knows no fragment: a '#' is the value's or the path's, and what follows
	     * it is read on (PQconninfoParse). */
	    {"postgresql://h/db?application_name=a#b&password=pw", "postgresql://h/db?application_name=a#b&password=**",
	     true},
	    {"postgresql://h/db#x?password=pw", "postgresql://h/db#x?password=**", true},
	    {"postgresql://h/db?sslkey=/k.pem&sslpassword=kp", "postgresql://h/db?sslkey=/k.pem&sslpassword=**",
	     true},
	    {"postgresql://u:p%40s?s@h/db", "postgresql://u:*******@h/db", true},
	    /* An '@' after the path is not the userinfo's. */
	    {"postgresql://h:5432/db?passfile=/a@b", "postgresql://h:5432/db?passfile=/a@b", false},
	    {"postgresql://h/db?password=x@y", "postgresql://h/db?password=***", true},
	    /* libpq decodes a parameter's name: these are "password" too. */
	    {"postgresql://h/hsm?%70assword=X", "postgresql://h/hsm?%70assword=*", true},
	    {"postgresql://h/hsm?pass%77ord=XY&a=1", "postgresql://h/hsm?pass%77ord=**&a=1", true},
	    {"postgresql://h/hsm?%70%61%73%73%77%6F%72%64=Z", "postgresql://h/hsm?%70%61%73%73%77%6F%72%64=*",
	     true},
	    {"postgresql://h/hsm?%70asswor=X", "postgresql://h/hsm?%70asswor=X", false},
	    {"postgresql://h/hsm?%7gassword=X", "postgresql://h/hsm?%7gassword=X", false},
	    {"postgresql://h/hsm?password%=X", "postgresql://h/hsm?password%=X", false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char buf[128];
		snprintf(buf, sizeof(buf), "%s", cases[i].in);
		assert_int_equal(hsm_uri_mask_password(buf), cases[i].masked);
		assert_string_equal(buf, cases[i].out);
	}
}

static void test_args_keep_a_copy_and_hide_passwords(void **state)
{
	(void)state;
	char a0[] = "hsmd", a1[] = "--store", a2[] = "postgresql://hsmd:pw@db/hsm", a3[] = "--dev",
	     a4[] = "--store=postgresql://u:xyz@h/d";
	char *argv[] = {a0, a1, a2, a3, a4, NULL};
	char **copy = NULL;
	bool masked = false;
	assert_true(hsm_ok(hsm_args_hide_passwords(5, argv, &copy, &masked)));
	assert_true(masked);
	assert_string_equal(argv[2], "postgresql://hsmd:**@db/hsm");
	assert_string_equal(argv[4], "--store=postgresql://u:***@h/d");
	assert_string_equal(copy[0], "hsmd");
	assert_string_equal(copy[2], "postgresql://hsmd:pw@db/hsm");
	assert_string_equal(copy[3], "--dev");
	assert_string_equal(copy[4], "--store=postgresql://u:xyz@h/d");
	assert_null(copy[5]);
	char *plain[] = {a0, a3, NULL};
	assert_true(hsm_ok(hsm_args_hide_passwords(2, plain, &copy, &masked)));
	assert_false(masked);
	assert_string_equal(copy[1], "--dev");
}

/* A file is read into a buffer of its own size (+1 for a terminator): doubled from 4 KiB
 * reads, a buffer for a 1 GiB audit file held up to 2 GiB, all of it wiped when freed. */
static void test_read_file_takes_the_files_size(void **state)
{
	(void)state;
	char dir[] = "/tmp/hsm-util-test-XXXXXX", path[256];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/f", dir);
	enum { SIZE = 300001 };
	char *data = malloc(SIZE);
	assert_non_null(data);
	for (size_t i = 0; i < SIZE; i++)
		data[i] = (char)('a' + i % 26);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, SIZE, f), SIZE);
	assert_int_equal(fclose(f), 0);
	hsm_buf b = {0};
	assert_true(hsm_ok(hsm_read_file(path, SIZE, &b)));
	assert_int_equal(b.len, SIZE);
	assert_int_equal(b.cap, SIZE + 1);
	assert_memory_equal(b.data, data, SIZE);
	hsm_buf_free(&b);
	/* Past max: refused, whatever the room taken. */
	assert_true(hsm_failed(hsm_read_file(path, SIZE - 1, &b)));
	hsm_buf_free(&b);
	free(data);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sb_builds_what_fits),
	    cmocka_unit_test(test_sb_cuts_like_snprintf),
	    cmocka_unit_test(test_calls_once_each_in_order),
	    cmocka_unit_test(test_location_shown_has_no_credentials),
	    cmocka_unit_test(test_thread_batch_keeps_nice),
	    cmocka_unit_test(test_thread_batch_keeps_other_policies),
	    cmocka_unit_test(test_fnv1a),
	    cmocka_unit_test(test_utf8_valid_as_rfc_3629),
	    cmocka_unit_test(test_format_time_out_of_range_is_a_terminated_number),
	    cmocka_unit_test(test_atomic_write_follows_no_planted_link),
	    cmocka_unit_test(test_atomic_write_failing_leaves_no_temporary),
	    cmocka_unit_test(test_copy_follows_no_planted_link),
	    cmocka_unit_test(test_dirs_others_may_write_to_are_refused),
	    cmocka_unit_test(test_an_empty_directory_path_is_refused),
	    cmocka_unit_test(test_uri_passwords_are_masked_in_place),
	    cmocka_unit_test(test_args_keep_a_copy_and_hide_passwords),
	    cmocka_unit_test(test_read_file_takes_the_files_size),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
