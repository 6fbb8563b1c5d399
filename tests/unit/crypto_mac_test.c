#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

static const uint8_t msg[] = "a message to authenticate";
#define MSG_LEN (sizeof(msg) - 1)

/* RFC 4231 test cases 1, 2 and 6 (a key longer than the block) for the raw-key function. */
static void test_hmac_sha256_rfc4231(void **state)
{
	(void)state;
	uint8_t key1[20], key6[131], out[HSM_SHA256_LEN];
	hsm_buf want = {0};
	memset(key1, 0x0b, sizeof(key1));
	memset(key6, 0xaa, sizeof(key6));
	assert_succeeds(hsm_hmac_sha256(key1, sizeof(key1), "Hi There", 8, out));
	fixture_unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", &want);
	assert_memory_equal(out, want.data, 32);
	assert_succeeds(hsm_hmac_sha256((const uint8_t *)"Jefe", 4, "what do ya want for nothing?",
	                                28, out));
	fixture_unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", &want);
	assert_memory_equal(out, want.data, 32);
	static const char tc6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
	assert_succeeds(hsm_hmac_sha256(key6, sizeof(key6), tc6, sizeof(tc6) - 1, out));
	fixture_unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", &want);
	assert_memory_equal(out, want.data, 32);
	/* An empty key and an empty message are legal HMAC inputs. */
	assert_succeeds(hsm_hmac_sha256(NULL, 0, NULL, 0, out));
	fixture_unhex("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad", &want);
	assert_memory_equal(out, want.data, 32);
	hsm_buf_free(&want);
}

/* Every HMAC spec: the MAC is OpenSSL's HMAC of the exported key; verify is exact. */
static void check_spec(hsm_key_spec spec, hsm_mac_alg alg)
{
	const hsm_mac_alg_info *info = hsm_mac_alg_get(alg);
	const hsm_material *m = fixture_key(spec);
	hsm_buf key, mac = {0};
	hsm_buf_init_secure(&key);
	assert_succeeds(hsm_material_export(m, &key));
	assert_succeeds(hsm_hmac(m, alg, msg, MSG_LEN, &mac));
	assert_int_equal(mac.len, info->mac_len);
	uint8_t ref[EVP_MAX_MD_SIZE];
	size_t ref_len = 0;
	assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, info->digest, NULL, key.data, key.len, msg,
	                          MSG_LEN, ref, sizeof(ref), &ref_len));
	assert_int_equal(ref_len, mac.len);
	assert_memory_equal(ref, mac.data, mac.len);

	assert_succeeds(hsm_hmac_verify(m, alg, msg, MSG_LEN, mac.data, mac.len));
	assert_fails_with(hsm_hmac_verify(m, alg, msg, MSG_LEN - 1, mac.data, mac.len),
	                  HSM_ERR_INVALID_MAC);
	/* Truncated, extended, empty, flipped: all invalid. */
	assert_fails_with(hsm_hmac_verify(m, alg, msg, MSG_LEN, mac.data, mac.len - 1),
	                  HSM_ERR_INVALID_MAC);
	assert_fails_with(hsm_hmac_verify(m, alg, msg, MSG_LEN, mac.data, 16), HSM_ERR_INVALID_MAC);
	assert_fails_with(hsm_hmac_verify(m, alg, msg, MSG_LEN, NULL, 0), HSM_ERR_INVALID_MAC);
	assert_succeeds(hsm_buf_put_u8(&mac, 0));
	assert_fails_with(hsm_hmac_verify(m, alg, msg, MSG_LEN, mac.data, mac.len),
	                  HSM_ERR_INVALID_MAC);
	mac.len--;
	for (size_t i = 0; i < mac.len; i++) {
		mac.data[i] ^= 0x80;
		assert_fails_with(hsm_hmac_verify(m, alg, msg, MSG_LEN, mac.data, mac.len),
		                  HSM_ERR_INVALID_MAC);
		mac.data[i] ^= 0x80;
	}
	/* The empty message is a message like any other. */
	hsm_buf_clear(&mac);
	assert_succeeds(hsm_hmac(m, alg, NULL, 0, &mac));
	assert_succeeds(hsm_hmac_verify(m, alg, NULL, 0, mac.data, mac.len));
	hsm_buf_free(&key);
	hsm_buf_free(&mac);
}

/* Keyed once, many MACs: each equals the one-shot MAC of its message, repeats included. */
static void test_keyed_hmac_matches_one_shot(void **state)
{
	(void)state;
	uint8_t keys[3][131], big[1000];
	const size_t key_lens[] = {0, 20, 131}; /* empty, short, longer than the block */
	memset(keys, 0xaa, sizeof(keys));
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	const size_t msg_lens[] = {0, 1, 55, 56, 63, 64, 65, 1000, 1, 0, 64};
	for (size_t k = 0; k < 3; k++) {
		hsm_keyed_hmac *h = NULL;
		assert_succeeds(hsm_keyed_hmac_new(key_lens[k] ? keys[k] : NULL, key_lens[k], &h));
		for (size_t m = 0; m < sizeof(msg_lens) / sizeof(msg_lens[0]); m++) {
			uint8_t got[HSM_SHA256_LEN], want[HSM_SHA256_LEN];
			assert_succeeds(hsm_keyed_hmac_of(h, big, msg_lens[m], got));
			assert_succeeds(hsm_hmac_sha256(key_lens[k] ? keys[k] : NULL, key_lens[k], big,
			                                msg_lens[m], want));
			assert_memory_equal(got, want, sizeof(want));
		}
		hsm_keyed_hmac_free(h);
	}
	hsm_keyed_hmac_free(NULL);
}

/* A pool's loans, taken together past its slots, given back and taken again, all MAC right. */
static void test_hmac_pool_loans(void **state)
{
	(void)state;
	uint8_t key[32], msg_[200];
	memset(key, 0x5c, sizeof(key));
	for (size_t i = 0; i < sizeof(msg_); i++)
		msg_[i] = (uint8_t)(i * 13);
	hsm_hmac_pool *p = NULL;
	assert_succeeds(hsm_hmac_pool_new(key, sizeof(key), &p));
	enum { N = 20 }; /* more than the pool's slots: the rest are the borrowers' own */
	hsm_keyed_hmac *h[N];
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < N; i++)
			assert_succeeds(hsm_hmac_pool_take(p, &h[i]));
		for (size_t i = 0; i < N; i++) {
			for (size_t m = 0; m < 3; m++) { /* a loan MACs several values, as a record does */
				size_t n = (i * 17 + m * 61 + (size_t)round) % sizeof(msg_);
				uint8_t got[HSM_SHA256_LEN], want[HSM_SHA256_LEN];
				assert_succeeds(hsm_keyed_hmac_of(h[i], msg_, n, got));
				assert_succeeds(hsm_hmac_sha256(key, sizeof(key), msg_, n, want));
				assert_memory_equal(got, want, sizeof(want));
			}
		}
		/* Given back unspent as well as spent: the next loan starts from the key. */
		for (size_t i = 0; i < N; i++)
			hsm_keyed_hmac_free(h[i]);
		assert_succeeds(hsm_hmac_pool_take(p, &h[0]));
		hsm_keyed_hmac_free(h[0]);
	}
	/* The owner lets go while a loan is out: the loan still works, then the pool goes. */
	assert_succeeds(hsm_hmac_pool_take(p, &h[0]));
	hsm_hmac_pool_free(p);
	uint8_t got[HSM_SHA256_LEN], want[HSM_SHA256_LEN];
	assert_succeeds(hsm_keyed_hmac_of(h[0], msg_, 5, got));
	assert_succeeds(hsm_hmac_sha256(key, sizeof(key), msg_, 5, want));
	assert_memory_equal(got, want, sizeof(want));
	hsm_keyed_hmac_free(h[0]);
	hsm_hmac_pool_free(NULL);
}

typedef struct pool_worker {
	hsm_hmac_pool *pool;
	unsigned seed;
	int wrong;
} pool_worker;

static void *pool_hammer(void *arg)
{
	pool_worker *w = arg;
	uint8_t key[32], m[64];
	memset(key, 0x5c, sizeof(key));
	for (int i = 0; i < 2000; i++) {
		size_t n = (size_t)((w->seed + (unsigned)i * 7U) % sizeof(m));
		memset(m, (int)(w->seed + (unsigned)i), sizeof(m));
		hsm_keyed_hmac *h = NULL;
		uint8_t got[HSM_SHA256_LEN], want[HSM_SHA256_LEN];
		if (hsm_failed(hsm_hmac_pool_take(w->pool, &h)) ||
		    hsm_failed(hsm_keyed_hmac_of(h, m, n, got)) ||
		    hsm_failed(hsm_hmac_sha256(key, sizeof(key), m, n, want)) ||
		    memcmp(got, want, sizeof(want)) != 0)
			w->wrong++;
		hsm_keyed_hmac_free(h);
	}
	return NULL;
}

/* Threads borrowing at once never share a context: every MAC is right. */
static void test_hmac_pool_threads(void **state)
{
	(void)state;
	uint8_t key[32];
	memset(key, 0x5c, sizeof(key));
	hsm_hmac_pool *p = NULL;
	assert_succeeds(hsm_hmac_pool_new(key, sizeof(key), &p));
	enum { T = 12 }; /* more threads than slots */
	pthread_t th[T];
	pool_worker w[T];
	for (unsigned i = 0; i < T; i++) {
		w[i] = (pool_worker){p, i * 101U, 0};
		assert_int_equal(pthread_create(&th[i], NULL, pool_hammer, &w[i]), 0);
	}
	for (unsigned i = 0; i < T; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(w[i].wrong, 0);
	}
	hsm_hmac_pool_free(p);
}

static void test_every_hmac_spec(void **state)
{
	(void)state;
	check_spec(HSM_SPEC_HMAC_224, HSM_MAC_HMAC_SHA_224);
	check_spec(HSM_SPEC_HMAC_256, HSM_MAC_HMAC_SHA_256);
	check_spec(HSM_SPEC_HMAC_384, HSM_MAC_HMAC_SHA_384);
	check_spec(HSM_SPEC_HMAC_512, HSM_MAC_HMAC_SHA_512);
}

static void test_wrong_key_or_algorithm(void **state)
{
	(void)state;
	hsm_buf mac = {0};
	uint8_t tag[32] = {0};
	assert_fails_with(hsm_hmac(fixture_key(HSM_SPEC_HMAC_256), HSM_MAC_HMAC_SHA_512, msg,
	                           MSG_LEN, &mac),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_hmac(fixture_key(HSM_SPEC_SYMMETRIC_DEFAULT), HSM_MAC_HMAC_SHA_256,
	                           msg, MSG_LEN, &mac),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_fails_with(hsm_hmac_verify(fixture_key(HSM_SPEC_ECC_NIST_P256), HSM_MAC_HMAC_SHA_256,
	                                  msg, MSG_LEN, tag, 32),
	                  HSM_ERR_INVALID_KEY_USAGE);
	assert_int_equal(mac.len, 0);
	hsm_buf_free(&mac);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hmac_sha256_rfc4231),
	    cmocka_unit_test(test_keyed_hmac_matches_one_shot),
	    cmocka_unit_test(test_hmac_pool_loans),
	    cmocka_unit_test(test_hmac_pool_threads),
	    cmocka_unit_test(test_every_hmac_spec),
	    cmocka_unit_test(test_wrong_key_or_algorithm),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
