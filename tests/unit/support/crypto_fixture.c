#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "common/encoding.h"
#include "common/secret.h"
#include "support/crypto_fixture.h"

static hsm_material *keys[HSM_SPEC_COUNT];

int crypto_fixture_setup(void **state)
{
	(void)state;
	if (hsm_failed(hsm_secure_process_init(HSM_SECURE_HEAP_DEFAULT)))
		return -1;
	return hsm_ok(hsm_crypto_init()) ? 0 : -1;
}

int crypto_fixture_teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < HSM_SPEC_COUNT; i++) {
		hsm_material_free(keys[i]);
		keys[i] = NULL;
	}
	return 0;
}

const hsm_material *fixture_key(hsm_key_spec spec)
{
	if (keys[spec] == NULL) {
		hsm_result r = hsm_material_generate(spec, &keys[spec]);
		if (hsm_failed(r))
			fail_msg("generating %s: %s", hsm_spec_name(spec), hsm_last_message());
	}
	return keys[spec];
}

void fixture_unhex(const char *hex, hsm_buf *out)
{
	hsm_buf_clear(out);
	hsm_result r = hsm_hex_decode(out, hex, strlen(hex), HSM_ERR_VALIDATION);
	if (hsm_failed(r))
		fail_msg("bad hex in test data: %s", hsm_last_message());
}

void assert_true_ok(hsm_result r, const char *expr, const char *file, int line)
{
	if (hsm_failed(r)) {
		print_error("%s failed: %s (%s)\n", expr, hsm_err_code_name(r.err),
		            hsm_last_message());
		_fail(file, line);
	}
}
