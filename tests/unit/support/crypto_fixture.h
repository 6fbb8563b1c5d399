/*
 * crypto_fixture.h - shared set-up for the crypto unit tests.
 *
 * Keys are generated at most once per test program (RSA-4096 takes seconds)
 * and freed by crypto_fixture_teardown.
 */
#ifndef HSM_TEST_CRYPTO_FIXTURE_H
#define HSM_TEST_CRYPTO_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "crypto/crypto.h"

/* cmocka group set-up / tear-down: secure heap, hsm_crypto_init, cached keys. */
int crypto_fixture_setup(void **state);
int crypto_fixture_teardown(void **state);

/* A freshly generated key of spec, the same one for the whole program (borrowed). */
const hsm_material *fixture_key(hsm_key_spec spec);

/* Decodes lowercase hex into out (replacing its contents); fails the test on bad hex. */
void fixture_unhex(const char *hex, hsm_buf *out);

/* Asserts that r failed with code err. */
#define assert_fails_with(r, code) assert_int_equal((r).err, (code))
#define assert_succeeds(r) assert_true_ok((r), #r, __FILE__, __LINE__)
void assert_true_ok(hsm_result r, const char *expr, const char *file, int line);

#endif
