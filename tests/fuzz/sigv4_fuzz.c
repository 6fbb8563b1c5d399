/*
 * libFuzzer target for the SigV4 verifier: the input is split at NUL bytes
 * into an Authorization value, an X-Amz-Date value, a path, a query and a
 * body, and runs through parse, scope check and verify.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *       tests/fuzz/sigv4_fuzz.c src/auth/sigv4{,_canon,_prim,_sign}.c src/common/{buf,encoding,log,result,secret,util}.c -lcrypto \
 *       -o sigv4_fuzz && ./sigv4_fuzz
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sigv4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	const char *field[5] = {"", "", "/", "", ""};
	size_t at = 0;
	for (int i = 0; i < 5 && at <= size; i++) {
		field[i] = buf + at;
		at += strlen(buf + at) + 1;
	}
	hsm_sigv4_header h[] = {
	    {"Host", "kms.eu-west-1.hsmd.test"},
	    {"Authorization", field[0]},
	    {"X-Amz-Date", field[1]},
	    {"X-Custom", field[4]},
	};
	hsm_sigv4_request req = {.method = "POST", .path = field[2], .query = field[3],
	                         .headers = h, .n_headers = 4,
	                         .body = (const uint8_t *)field[4], .body_len = strlen(field[4])};
	hsm_sigv4_config cfg = {.region = "eu-west-1"};
	hsm_sigv4_auth auth;
	hsm_secret *secret = NULL, *key = NULL;
	int64_t now = 1440938160;
	if (hsm_ok(hsm_sigv4_parse(&req, &auth)) &&
	    hsm_ok(hsm_secret_from("secret", 6, &secret)) &&
	    hsm_ok(hsm_sigv4_signing_key(secret, auth.date, auth.region, auth.service, &key))) {
		if (hsm_ok(hsm_sigv4_verify(&cfg, &req, &auth, key, now)))
			abort(); /* nobody can guess the signature */
	}
	hsm_secret_free(key);
	hsm_secret_free(secret);
	free(buf);
	return 0;
}
