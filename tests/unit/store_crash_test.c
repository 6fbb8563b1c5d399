/*
 * store_crash_test.c - DESIGN.md invariant 2: a key the store acknowledged
 * survives kill -9 at any point.
 *
 * A child process opens the store and creates keys in a loop; each key's
 * first version carries wrapped bytes derived from its id, and the id goes
 * down a pipe only after hsm_store_key_create returned success.  The parent
 * SIGKILLs the child at random moments (before or while it opens and
 * migrates a fresh store, or an older store holding keys, after a few
 * acknowledgements, mid-stream), then
 * reopens the store and checks that every acknowledged key is there and
 * complete, and that no key exists without its first version or the reverse.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

#define ACK_LEN (HSM_UUID_STRLEN + 1) /* id and '\n': one write, atomic below PIPE_BUF */
#define WRAPPED_LEN 64

/* The wrapped bytes of a key: SHA-256(id) || SHA-256("2" || id). */
static void derive(const char *id, uint8_t out[WRAPPED_LEN])
{
	char second[HSM_UUID_STRLEN + 2];
	snprintf(second, sizeof(second), "2%s", id);
	if (!EVP_Q_digest(NULL, "SHA256", NULL, id, strlen(id), out, NULL) ||
	    !EVP_Q_digest(NULL, "SHA256", NULL, second, strlen(second), out + 32, NULL))
		abort();
}

static void write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(5);
		c += w;
		n -= (size_t)w;
	}
}

static _Noreturn void child_main(const char *dir, int ack_fd)
{
	hsm_store *s = NULL;
	if (hsm_failed(hsm_store_open(dir, &s)))
		_exit(3);
	for (;;) {
		char id[HSM_UUID_STRLEN + 1];
		uint8_t wrapped[WRAPPED_LEN];
		hsm_key_record k;
		hsm_version_record v;
		if (hsm_failed(hsm_uuid_new(id)))
			_exit(4);
		derive(id, wrapped);
		st_key(&k, id);
		st_version(&v, id, 1, wrapped, sizeof(wrapped));
		if (hsm_failed(hsm_store_key_create(s, &k, &v)))
			_exit(4);
		hsm_version_record_clear(&v);
		char line[ACK_LEN + 1];
		snprintf(line, sizeof(line), "%s\n", id);
		write_all(ack_fd, line, ACK_LEN); /* only now is the key acknowledged */
	}
}

typedef struct acks {
	char (*ids)[HSM_UUID_STRLEN + 1];
	size_t n, cap;
	char partial[ACK_LEN];
	size_t partial_len;
} acks;

static void acks_add(acks *a, const char *line)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 256;
		a->ids = realloc(a->ids, a->cap * sizeof(*a->ids));
		assert_non_null(a->ids);
	}
	assert_int_equal(line[HSM_UUID_STRLEN], '\n');
	memcpy(a->ids[a->n], line, HSM_UUID_STRLEN);
	a->ids[a->n][HSM_UUID_STRLEN] = '\0';
	assert_true(hsm_is_uuid(a->ids[a->n]));
	a->n++;
}

/* Reads what is available (blocking up to timeout_ms); false at end of file. */
static bool read_acks(int fd, acks *a, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int rc = poll(&p, 1, timeout_ms);
	if (rc <= 0)
		return true;
	char buf[4096];
	ssize_t n = read(fd, buf, sizeof(buf));
	if (n == 0)
		return false;
	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	for (ssize_t i = 0; i < n; i++) {
		a->partial[a->partial_len++] = buf[i];
		if (a->partial_len == ACK_LEN) {
			acks_add(a, a->partial);
			a->partial_len = 0;
		}
	}
	return true;
}

static unsigned random_below(unsigned n)
{
	unsigned r;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		abort();
	return r % n;
}

static uint64_t now_us(void)
{
	return hsm_mono_ns() / 1000;
}

/* One child lifetime: kill after delay_us, or after min_acks acknowledgements. */
static void run_round(const char *dir, acks *a, unsigned delay_us, size_t min_acks)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	size_t before = a->n;
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		close(fds[0]);
		child_main(dir, fds[1]);
	}
	close(fds[1]);
	uint64_t deadline = now_us() + delay_us;
	if (min_acks > 0) {
		uint64_t give_up = now_us() + 10 * 1000000ULL;
		while (a->n - before < min_acks && now_us() < give_up)
			assert_true(read_acks(fds[0], a, 10));
	} else {
		while (now_us() < deadline)
			assert_true(read_acks(fds[0], a, 1));
	}
	assert_int_equal(kill(child, SIGKILL), 0);
	int status = 0;
	assert_int_equal(waitpid(child, &status, 0), child);
	/* The child must have been killed, not have failed on its own. */
	if (!WIFSIGNALED(status))
		fail_msg("child exited with status %d before the kill", WEXITSTATUS(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	while (read_acks(fds[0], a, 1000)) /* acks written before the kill */
		;
	assert_int_equal(a->partial_len, 0);
	close(fds[0]);
}

typedef struct walk {
	hsm_store *s;
	size_t n;
	char last[HSM_UUID_STRLEN + 1];
} walk;

static hsm_result check_complete(hsm_store *s, const hsm_key_record *k)
{
	hsm_version_record v = {0};
	uint8_t expect[WRAPPED_LEN];
	HSM_GUARD(hsm_store_version_get(s, k->key_id, 1, &v));
	derive(k->key_id, expect);
	bool same = v.wrapped.len == WRAPPED_LEN && hsm_ct_equal(v.wrapped.data, expect, WRAPPED_LEN);
	hsm_version_record_clear(&v);
	HSM_ENSURE(same, HSM_ERR_INTERNAL, "key %s has the wrong material", k->key_id);
	HSM_ENSURE(k->primary_version == 1 && k->state == HSM_KEY_ENABLED, HSM_ERR_INTERNAL,
	           "key %s has the wrong record", k->key_id);
	return HSM_SUCCESS;
}

static hsm_result walk_key(const hsm_key_record *k, void *arg)
{
	walk *w = arg;
	HSM_GUARD(check_complete(w->s, k));
	snprintf(w->last, sizeof(w->last), "%s", k->key_id);
	w->n++;
	return HSM_SUCCESS;
}

/* Every key in the store is complete; every acknowledged key is in the store. */
static void verify(const char *dir, const acks *a)
{
	walk w = {0};
	if (hsm_failed(hsm_store_open(dir, &w.s)))
		fail_msg("reopen failed: %s", hsm_last_message());
	assert_int_equal(hsm_store_schema_version(w.s), hsm_store_sqlite_schema_latest());
	for (bool truncated = true; truncated;) {
		char after[HSM_UUID_STRLEN + 1];
		snprintf(after, sizeof(after), "%s", w.last);
		if (hsm_failed(hsm_store_key_list(w.s, after, 500, true, walk_key, &w, &truncated)))
			fail_msg("incomplete key: %s", hsm_last_message());
	}
	for (size_t i = 0; i < a->n; i++) {
		hsm_key_record k = {0};
		if (hsm_failed(hsm_store_key_get(w.s, a->ids[i], &k)))
			fail_msg("acknowledged key %s is missing: %s", a->ids[i], hsm_last_message());
		hsm_key_record_clear(&k);
	}
	assert_true(w.n >= a->n);
	hsm_store_close(w.s);
	/* Below the API: no version without its key, no key without version 1, a sound file. */
	assert_int_equal(st_raw_int(dir, "SELECT count(*) FROM key_versions v WHERE NOT EXISTS "
	                                 "(SELECT 1 FROM keys k WHERE k.id = v.key_id)"),
	                 0);
	assert_int_equal(st_raw_int(dir, "SELECT count(*) FROM keys k WHERE NOT EXISTS (SELECT 1 "
	                                 "FROM key_versions v WHERE v.key_id = k.id AND v.version = 1)"),
	                 0);
	assert_int_equal(st_raw_int(dir, "SELECT count(*) FROM keys"), (long long)w.n);
	assert_int_equal(st_raw_int(dir, "SELECT count(*) FROM pragma_integrity_check WHERE "
	                                 "integrity_check != 'ok'"),
	                 0);
}

static void test_kill_while_opening(void **state)
{
	(void)state;
	/* Fresh directories: the kill lands before, during or after the first open's migration. */
	for (unsigned round = 0; round < 6; round++) {
		char dir[PATH_MAX];
		st_tmpdir(dir);
		acks a = {0};
		run_round(dir, &a, round == 0 ? 0 : random_below(4000), 0);
		verify(dir, &a);
		free(a.ids);
		st_rm_rf(dir);
	}
}

static void test_kill_while_creating(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	st_tmpdir(dir);
	acks a = {0};
	uint64_t t0 = now_us();
	/* After the first acknowledgement, after a few, then at random moments mid-stream. */
	run_round(dir, &a, 0, 1);
	verify(dir, &a);
	run_round(dir, &a, 0, 1 + random_below(20));
	verify(dir, &a);
	for (int round = 0; round < 8; round++) {
		run_round(dir, &a, 1000 + random_below(150000), 0);
		verify(dir, &a);
	}
	print_message("acknowledged keys: %zu over 10 kills in %.1f s, all present and complete\n",
	              a.n, (double)(now_us() - t0) / 1e6);
	assert_true(a.n >= 2);
	free(a.ids);
	st_rm_rf(dir);
}

/*
 * A store that holds keys, written before imported key material: the first
 * open rebuilds its keys table (schema step 4), then gives the versions their
 * own expiry and description (step 5), each step its own transaction.
 * Killed before, during, between or after those steps, the store must open
 * again with every key complete, at the latest schema, its references and
 * its file sound.
 */
static void test_kill_while_migrating_keys(void **state)
{
	(void)state;
	st_fixture f = {0};
	st_tmpdir(f.dir);
	snprintf(f.loc, sizeof(f.loc), "%s", f.dir);
	acks a = {0};
	run_round(f.dir, &a, 0, 1000); /* a thousand keys to migrate */
	verify(f.dir, &a);
	unsigned before_serving = 0; /* rounds killed before the migrated store took a key */
	for (unsigned round = 0; round < 8; round++) {
		st_schema_before_import(&f);
		assert_int_equal(st_raw_int(f.dir, "SELECT max(version) FROM schema_version"), 3);
		size_t n = a.n;
		run_round(f.dir, &a, round == 0 ? 0 : random_below(30000), 0);
		before_serving += a.n == n;
		verify(f.dir, &a);
	}
	print_message("%zu keys through 8 killed migrations (%u killed before the first new key), "
	              "all present and complete\n",
	              a.n, before_serving);
	free(a.ids);
	st_rm_rf(f.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill_while_opening),
		cmocka_unit_test(test_kill_while_creating),
		cmocka_unit_test(test_kill_while_migrating_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
