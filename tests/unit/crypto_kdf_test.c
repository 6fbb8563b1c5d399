/* RAND_set_rand_method (deprecated in OpenSSL 3.0) is the simple way to make RAND_bytes fail. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/rand.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

static void test_sha256(void **state)
{
	(void)state;
	uint8_t out[HSM_SHA256_LEN];
	hsm_buf want = {0};
	assert_true(hsm_ok(hsm_sha256("abc", 3, out))); /* FIPS 180-2 B.1 */
	fixture_unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &want);
	assert_memory_equal(out, want.data, 32);
	assert_true(hsm_ok(hsm_sha256(NULL, 0, out)));
	fixture_unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &want);
	assert_memory_equal(out, want.data, 32);
	hsm_buf_free(&want);
}

static void check_hkdf(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                       const char *info, size_t l, const char *okm_hex)
{
	hsm_secret *s = NULL, *okm = NULL;
	hsm_buf want = {0};
	assert_succeeds(hsm_secret_from(ikm, ikm_len, &s));
	assert_succeeds(hsm_hkdf_sha256(s, salt, salt_len, info, l, &okm));
	fixture_unhex(okm_hex, &want);
	assert_int_equal(hsm_secret_len(okm), l);
	assert_memory_equal(hsm_secret_bytes(okm), want.data, l);
	hsm_secret_free(s);
	hsm_secret_free(okm);
	hsm_buf_free(&want);
}

/* RFC 5869 appendix A, test cases 1-3 (SHA-256). */
static void test_hkdf_rfc5869(void **state)
{
	(void)state;
	uint8_t ikm[80], salt[80];
	char info[81];
	memset(ikm, 0x0b, 22);
	for (int i = 0; i < 13; i++)
		salt[i] = (uint8_t)i;
	check_hkdf(ikm, 22, salt, 13, "\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9", 42,
	           "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
	for (int i = 0; i < 80; i++) {
		ikm[i] = (uint8_t)i;
		salt[i] = (uint8_t)(0x60 + i);
		info[i] = (char)(0xb0 + i);
	}
	info[80] = '\0';
	check_hkdf(ikm, 80, salt, 80, info, 82,
	           "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac78272"
	           "71cb41c65e590e09da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f"
	           "1d87");
	memset(ikm, 0x0b, 22);
	check_hkdf(ikm, 22, NULL, 0, "", 42,
	           "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

static void test_hkdf_limits_and_separation(void **state)
{
	(void)state;
	hsm_secret *ikm = NULL, *a = NULL, *b = NULL;
	assert_succeeds(hsm_secret_random(32, &ikm));
	assert_fails_with(hsm_hkdf_sha256(ikm, NULL, 0, "x", 0, &a), HSM_ERR_VALIDATION);
	assert_fails_with(hsm_hkdf_sha256(ikm, NULL, 0, "x", 255 * 32 + 1, &a), HSM_ERR_VALIDATION);
	assert_null(a);
	assert_succeeds(hsm_hkdf_sha256(ikm, NULL, 0, "x", 255 * 32, &a));
	hsm_secret_free(a);
	/* Distinct labels give unrelated keys. */
	assert_succeeds(hsm_hkdf_sha256(ikm, NULL, 0, "hsmd key wrap", 32, &a));
	assert_succeeds(hsm_hkdf_sha256(ikm, NULL, 0, "hsmd audit", 32, &b));
	assert_memory_not_equal(hsm_secret_bytes(a), hsm_secret_bytes(b), 32);
	hsm_secret_free(a);
	hsm_secret_free(b);
	hsm_secret_free(ikm);
}

static void test_random(void **state)
{
	(void)state;
	uint8_t a[32], b[32];
	assert_succeeds(hsm_random_bytes(NULL, 0));
	assert_succeeds(hsm_random_bytes(a, sizeof(a)));
	assert_succeeds(hsm_random_bytes(b, sizeof(b)));
	assert_memory_not_equal(a, b, sizeof(a));
}

/* ---- GCM IVs ---- */

#define IVS_PER_REFILL (4096 / HSM_GCM_IV_LEN) /* kdf.c's pool: 341 IVs per RAND_bytes call */
#define IV_THREADS 4
#define IVS_PER_THREAD (3 * IVS_PER_REFILL + 7)

static int iv_cmp(const void *a, const void *b)
{
	return memcmp(a, b, HSM_GCM_IV_LEN);
}

static void *draw_ivs(void *arg)
{
	uint8_t *out = arg;
	for (size_t i = 0; i < IVS_PER_THREAD; i++)
		if (hsm_failed(hsm_random_iv(out + i * HSM_GCM_IV_LEN)))
			return arg;
	return NULL;
}

/* IVs drawn across several refills, from several threads at once: all distinct, none zero. */
static void test_random_iv_unique(void **state)
{
	(void)state;
	size_t n = (IV_THREADS + 1) * IVS_PER_THREAD;
	uint8_t *ivs = calloc(n, HSM_GCM_IV_LEN);
	static const uint8_t zero[HSM_GCM_IV_LEN];
	pthread_t t[IV_THREADS];
	assert_non_null(ivs);
	for (size_t i = 0; i < IV_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, draw_ivs,
		                                ivs + (i + 1) * IVS_PER_THREAD * HSM_GCM_IV_LEN),
		                 0);
	assert_null(draw_ivs(ivs));
	for (size_t i = 0; i < IV_THREADS; i++) {
		void *failed = NULL;
		assert_int_equal(pthread_join(t[i], &failed), 0);
		assert_null(failed);
	}
	qsort(ivs, n, HSM_GCM_IV_LEN, iv_cmp);
	for (size_t i = 0; i < n; i++) {
		assert_memory_not_equal(ivs + i * HSM_GCM_IV_LEN, zero, HSM_GCM_IV_LEN);
		if (i > 0)
			assert_memory_not_equal(ivs + (i - 1) * HSM_GCM_IV_LEN,
			                        ivs + i * HSM_GCM_IV_LEN, HSM_GCM_IV_LEN);
	}
	free(ivs);
}

static int failing_calls;
static int failing_bytes(unsigned char *buf, int num)
{
	(void)buf;
	(void)num;
	failing_calls++;
	return 0;
}
static int failing_status(void)
{
	return 0;
}
static const RAND_METHOD failing_rand = {.bytes = failing_bytes, .status = failing_status};

/*
 * A refill that fails is an error, every time, until the DRBG works again:
 * the pool never falls back to stale or zero bytes.  Runs in a new thread,
 * whose pool starts empty, so the refills happen at known calls; cmocka's
 * assertions stay in the test's own thread, so the thread returns the line
 * of the first check that failed, or 0.
 */
#define CHECK(cond)                                \
	do {                                           \
		if (!(cond))                               \
			return (void *)(intptr_t)__LINE__;     \
	} while (0)

static void *refill_failure(void *arg)
{
	(void)arg;
	static uint8_t seen[IVS_PER_REFILL + 1][HSM_GCM_IV_LEN];
	uint8_t iv[HSM_GCM_IV_LEN], before[HSM_GCM_IV_LEN];
	const RAND_METHOD *saved = RAND_get_rand_method();
	CHECK(hsm_ok(hsm_random_iv(seen[0]))); /* fills the pool */
	CHECK(RAND_set_rand_method(&failing_rand) == 1);
	for (size_t i = 1; i < IVS_PER_REFILL; i++)
		CHECK(hsm_ok(hsm_random_iv(seen[i])));
	CHECK(failing_calls == 0);
	memset(iv, 0xa5, sizeof(iv));
	memcpy(before, iv, sizeof(iv));
	CHECK(hsm_random_iv(iv).err == HSM_ERR_CRYPTO);
	CHECK(hsm_random_iv(iv).err == HSM_ERR_CRYPTO);
	CHECK(failing_calls == 2 && memcmp(iv, before, sizeof(iv)) == 0);
	CHECK(RAND_set_rand_method(saved) == 1);
	CHECK(hsm_ok(hsm_random_iv(seen[IVS_PER_REFILL])));
	for (size_t i = 0; i < IVS_PER_REFILL; i++)
		CHECK(memcmp(seen[i], seen[IVS_PER_REFILL], HSM_GCM_IV_LEN) != 0);
	return NULL;
}

static void test_random_iv_refill_failure(void **state)
{
	(void)state;
	pthread_t t;
	void *failed_at = NULL;
	assert_int_equal(pthread_create(&t, NULL, refill_failure, NULL), 0);
	assert_int_equal(pthread_join(t, &failed_at), 0);
	assert_int_equal((intptr_t)failed_at, 0);
}

/* A child of fork() does not repeat the IVs its parent is about to use. */
static void test_random_iv_fork(void **state)
{
	(void)state;
	uint8_t parent[HSM_GCM_IV_LEN], child[HSM_GCM_IV_LEN];
	int fds[2];
	assert_succeeds(hsm_random_iv(parent)); /* the pool now holds the parent's next IVs */
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		uint8_t iv[HSM_GCM_IV_LEN];
		int ok = hsm_ok(hsm_random_iv(iv)) && write(fds[1], iv, sizeof(iv)) == sizeof(iv);
		_exit(ok ? 0 : 1);
	}
	close(fds[1]);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(read(fds[0], child, sizeof(child)), sizeof(child));
	close(fds[0]);
	assert_succeeds(hsm_random_iv(parent));
	assert_memory_not_equal(parent, child, sizeof(parent));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sha256),
	    cmocka_unit_test(test_hkdf_rfc5869),
	    cmocka_unit_test(test_hkdf_limits_and_separation),
	    cmocka_unit_test(test_random),
	    cmocka_unit_test(test_random_iv_unique),
	    cmocka_unit_test(test_random_iv_refill_failure),
	    cmocka_unit_test(test_random_iv_fork),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
