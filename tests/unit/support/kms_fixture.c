/*
 * kms_fixture.c - see kms_fixture.h.
 */
#include "support/kms_fixture.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

static int64_t fx_clock(void *arg)
{
	return ((kms_fx *)arg)->now;
}

void kms_fx_open(kms_fx *f)
{
	assert_true(hsm_ok(hsm_store_open(f->dir, &f->store)));
	assert_true(hsm_ok(hsm_keystore_new(f->store, 0, &f->ks)));
	assert_true(hsm_ok(hsm_kms_new(f->store, f->ks, &f->cfg, &f->kms)));
	hsm_kms_set_clock(f->kms, fx_clock, f);
}

void kms_fx_close(kms_fx *f)
{
	hsm_kms_free(f->kms);
	hsm_keystore_free(f->ks);
	hsm_store_close(f->store);
}

int kms_fx_setup(void **state, const hsm_kms_config *cfg, int64_t now)
{
	kms_fx *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/hsm-kms-test-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	if (cfg != NULL)
		f->cfg = *cfg;
	if (f->cfg.region == NULL || f->cfg.region[0] == '\0')
		f->cfg.region = "us-east-1";
	if (f->cfg.account_id == NULL || f->cfg.account_id[0] == '\0')
		f->cfg.account_id = "111122223333";
	f->now = now;
	kms_fx_open(f);
	if (hsm_failed(hsm_keystore_init(f->ks, 2, 2, NULL, false, f->shares)))
		return -1;
	*state = f;
	return 0;
}

int kms_fx_teardown(void **state)
{
	kms_fx *f = *state;
	kms_fx_close(f);
	hsm_buf_free(&f->shares[0]);
	hsm_buf_free(&f->shares[1]);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}
