/*
 * libFuzzer target for hsm_policy_parse and hsm_policy_evaluate.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc \
 *       tests/fuzz/policy_fuzz.c src/kms/policy{,_cond,_eval}.c src/common/{buf,encoding,log,result,secret,util}.c -ljansson -lcrypto \
 *       -o policy_fuzz && ./policy_fuzz
 *
 * Any input must either parse or fail with MalformedPolicyDocument, and a
 * parsed policy must evaluate without faults.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "kms/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hsm_policy *p = NULL;
	hsm_result r = hsm_policy_parse((const char *)data, size, &p);
	if (hsm_failed(r)) {
		if (r.err != HSM_ERR_MALFORMED_POLICY && r.err != HSM_ERR_NOMEM)
			abort();
		return 0;
	}
	static const hsm_policy_pair ctx[] = {{"Purpose", "x"}, {"purpose", "y"}, {"Env", "prod"}};
	hsm_policy_request req = {
	    .principal_arn = "arn:aws:iam::111122223333:user/alice",
	    .account_id = "111122223333",
	    .action = "kms:Encrypt",
	    .resource = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd",
	    .encryption_context = ctx,
	    .n_encryption_context = 3,
	    .encryption_algorithm = "SYMMETRIC_DEFAULT",
	    .extra = ctx,
	    .n_extra = 3,
	};
	hsm_policy_verdict v;
	(void)hsm_policy_evaluate(p, &req, &v);
	req.n_encryption_context = 0;
	req.action = "kms:Decrypt";
	(void)hsm_policy_evaluate(p, &req, &v);
	hsm_policy_free(p);
	return 0;
}
