/*
 * kms_fixture.h - a KMS layer over a fresh store in a temporary directory,
 * initialized (2-of-2 shares) and unsealed, with a clock the test moves.
 * For the tests of src/kms.
 */
#ifndef HSM_TEST_KMS_FIXTURE_H
#define HSM_TEST_KMS_FIXTURE_H

#include <stdint.h>

#include "common/buf.h"
#include "kms/kms.h"

typedef struct kms_fx {
	char dir[64];
	hsm_store *store;
	hsm_keystore *ks;
	hsm_kms *kms;
	hsm_kms_config cfg;
	hsm_buf shares[2];
	int64_t now; /* what the KMS layer's clock reads */
} kms_fx;

/* cmocka set-up: a new fixture in *state at time now, with cfg (region and
 * account filled in when NULL or empty).  Non-zero on failure. */
int kms_fx_setup(void **state, const hsm_kms_config *cfg, int64_t now);
/* cmocka tear-down: closes everything and removes the directory. */
int kms_fx_teardown(void **state);
/* Closes the store, keystore and KMS layer, and opens them again (a restart;
 * the node comes back sealed). */
void kms_fx_close(kms_fx *f);
void kms_fx_open(kms_fx *f);

#endif
