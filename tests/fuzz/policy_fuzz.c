/*
 * policy_fuzz.c - the key policy parser and evaluator (kms/policy.h).
 *
 * Input: a policy document, optionally followed by a NUL and request
 * fields separated by NULs: action, encryption context key, its value,
 * a condition key of request->extra, its value.
 *
 * Properties: any document either parses or fails with
 * MalformedPolicyDocumentException; a parsed policy evaluates without
 * faults, deterministically, to a verdict that names a real statement
 * (or none for an implicit deny).
 */
#include "fuzz.h"

#include "kms/policy.h"

static void evaluate(const hsm_policy *p, const hsm_policy_request *req)
{
	hsm_policy_verdict v, again;
	hsm_policy_decision d = hsm_policy_evaluate(p, req, &v);
	FUZZ_ASSERT(d == v.decision);
	size_t n = hsm_policy_statement_count(p);
	if (d == HSM_POLICY_IMPLICIT_DENY)
		FUZZ_ASSERT(v.statement == -1 && v.sid == NULL);
	else
		FUZZ_ASSERT(v.statement >= 0 && (size_t)v.statement < n);
	FUZZ_ASSERT(hsm_policy_evaluate(p, req, &again) == d && again.statement == v.statement);
	FUZZ_ASSERT(hsm_policy_evaluate(p, req, NULL) == d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	fuzz_in doc = fuzz_field(&in, 0);
	char *f[5] = {NULL};
	for (int i = 0; i < 5; i++) {
		f[i] = fuzz_strdup(fuzz_field(&in, 0));
		if (f[i] == NULL)
			goto out;
	}
	/* Actions come from the operation table (policy_eval.c asserts their length). */
	if (strlen(f[0]) > 128)
		f[0][128] = '\0';
	hsm_policy *p = NULL;
	hsm_result r = hsm_policy_parse((const char *)doc.p, doc.n, &p);
	if (hsm_failed(r)) {
		FUZZ_EXPECT_ERR(r, HSM_ERR_MALFORMED_POLICY, HSM_ERR_NOMEM);
		FUZZ_ASSERT(p == NULL);
		goto out;
	}
	hsm_policy_pair ctx[] = {{"Purpose", "x"}, {"purpose", "y"}, {"Env", "prod"}, {f[1], f[2]}};
	hsm_policy_pair extra[] = {{"kms:ViaService", "ec2.eu-west-1.amazonaws.com"},
	                           {"aws:SourceIp", "10.0.0.1"}, {f[3], f[4]}};
	hsm_policy_request req = {
	    .principal_arn = "arn:aws:iam::111122223333:user/alice",
	    .account_id = "111122223333",
	    .action = f[0][0] != '\0' ? f[0] : "kms:Encrypt",
	    .resource = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd",
	    .encryption_context = ctx,
	    .n_encryption_context = 4,
	    .encryption_algorithm = "SYMMETRIC_DEFAULT",
	    .key_spec = "SYMMETRIC_DEFAULT",
	    .key_usage = "ENCRYPT_DECRYPT",
	    .request_alias = "alias/fuzz",
	    .extra = extra,
	    .n_extra = 3,
	};
	evaluate(p, &req);
	req.n_encryption_context = 0;
	req.action = "kms:Decrypt";
	req.principal_arn = "arn:aws:iam::444455556666:role/other";
	req.account_id = "444455556666";
	evaluate(p, &req);
	hsm_policy_free(p);
out:
	for (int i = 0; i < 5; i++)
		free(f[i]);
	return 0;
}
