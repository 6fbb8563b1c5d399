/*
 * sigv4_fuzz.c - the SigV4 verifier and signer (auth/sigv4.h).
 *
 * Input, split at NUL bytes: an Authorization value, an X-Amz-Date value, a
 * path, a query and a body (also sent as the X-Custom header's value).
 *
 * Properties:
 *   - parse, scope check and verify fail only with the codes sigv4.h lists,
 *     and no Authorization verifies under a key other than the one the
 *     seeds were signed with (nobody can guess a signature);
 *   - signing the same request with hsm_sigv4_sign and verifying it with the
 *     headers it produced succeeds (signer and verifier agree on the
 *     canonical form of any path, query, header value and body), and the
 *     same signature over a different body is refused.
 */
#include "fuzz.h"

#include "auth/sigv4.h"

#define NOW 1440938160 /* 2015-08-30T12:36:00Z */
#define AKID "AKIDEXAMPLE"

static const hsm_sigv4_config cfg = {.region = "eu-west-1"};

static hsm_result verify_with(const hsm_sigv4_request *req, const hsm_sigv4_auth *auth,
                              const char *secret_text)
{
	hsm_secret *secret = NULL, *key = NULL;
	FUZZ_ASSERT(hsm_ok(hsm_secret_from(secret_text, strlen(secret_text), &secret)));
	FUZZ_ASSERT(hsm_ok(hsm_sigv4_signing_key(secret, auth->date, auth->region, auth->service,
	                                         &key)));
	hsm_result r = hsm_sigv4_verify(&cfg, req, auth, key, NOW);
	hsm_secret_free(key);
	hsm_secret_free(secret);
	return r;
}

static void check_forged(const char *const field[5])
{
	hsm_sigv4_header h[] = {
	    {"Host", "kms.eu-west-1.hsmd.test"},
	    {"Authorization", field[0]},
	    {"X-Amz-Date", field[1]},
	    {"X-Custom", field[4]},
	};
	hsm_sigv4_request req = {.method = "POST", .path = field[2], .query = field[3],
	                         .headers = h, .n_headers = 4,
	                         .body = (const uint8_t *)field[4], .body_len = strlen(field[4])};
	hsm_sigv4_auth auth;
	hsm_result r = hsm_sigv4_parse(&req, &auth);
	if (hsm_failed(r)) {
		FUZZ_EXPECT_ERR(r, HSM_ERR_MISSING_AUTH, HSM_ERR_INCOMPLETE_SIGNATURE,
		                HSM_ERR_BAD_SIGNATURE, HSM_ERR_VALIDATION);
		return;
	}
	FUZZ_ASSERT(strlen(auth.date) == HSM_SIGV4_DATE_LEN);
	hsm_sigv4_scope scope;
	r = hsm_sigv4_check_scope(&cfg, &req, &auth, NOW, &scope);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, HSM_ERR_BAD_SIGNATURE, HSM_ERR_INCOMPLETE_SIGNATURE);
	/* The seeds carry real signatures under "secret"; under any other key nothing verifies. */
	/* VALIDATION: a path or query the canonical form cannot hold. */
	r = verify_with(&req, &auth, "secret");
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, HSM_ERR_BAD_SIGNATURE, HSM_ERR_INCOMPLETE_SIGNATURE,
		                HSM_ERR_VALIDATION);
	r = verify_with(&req, &auth, "another secret");
	FUZZ_EXPECT_ERR(r, HSM_ERR_BAD_SIGNATURE, HSM_ERR_INCOMPLETE_SIGNATURE, HSM_ERR_VALIDATION);
}

static hsm_result verify_signed(hsm_sigv4_request *req, const hsm_sigv4_signature *sig)
{
	hsm_sigv4_header h[] = {
	    req->headers[0], req->headers[1],
	    {"X-Amz-Date", sig->amz_date},
	    {"Authorization", sig->authorization},
	};
	hsm_sigv4_request signed_req = *req;
	signed_req.headers = h;
	signed_req.n_headers = 4;
	hsm_sigv4_auth auth;
	hsm_secret *secret = NULL, *key = NULL;
	hsm_result r = hsm_sigv4_parse(&signed_req, &auth);
	if (hsm_ok(r)) {
		FUZZ_ASSERT(strcmp(auth.access_key_id, AKID) == 0);
		FUZZ_ASSERT(hsm_ok(hsm_secret_from("secret", 6, &secret)));
		FUZZ_ASSERT(hsm_ok(hsm_sigv4_signing_key(secret, auth.date, auth.region, auth.service,
		                                         &key)));
		r = hsm_sigv4_verify(&cfg, &signed_req, &auth, key, NOW);
	}
	hsm_secret_free(key);
	hsm_secret_free(secret);
	return r;
}

static void check_round_trip(const char *const field[5])
{
	hsm_sigv4_header h[] = {
	    {"Host", "kms.eu-west-1.hsmd.test"},
	    {"X-Custom", field[4]},
	};
	hsm_sigv4_request req = {.method = "POST", .path = field[2], .query = field[3],
	                         .headers = h, .n_headers = 2,
	                         .body = (const uint8_t *)field[4], .body_len = strlen(field[4])};
	hsm_secret *secret = NULL;
	hsm_sigv4_signer *signer = NULL;
	hsm_sigv4_signature sig;
	FUZZ_ASSERT(hsm_ok(hsm_secret_from("secret", 6, &secret)));
	FUZZ_ASSERT(hsm_ok(hsm_sigv4_signer_new(AKID, secret, "eu-west-1", NULL, &signer)));
	hsm_result r = hsm_sigv4_sign(signer, &req, NOW, &sig);
	if (hsm_failed(r)) {
		/* Only a request beyond sigv4.h's bounds cannot be signed. */
		FUZZ_ASSERT(r.err == HSM_ERR_VALIDATION);
	} else {
		r = verify_signed(&req, &sig);
		FUZZ_ASSERT(hsm_ok(r));
		if (req.body_len > 0) {
			req.body_len--;
		} else {
			req.body = (const uint8_t *)"x";
			req.body_len = 1;
		}
		FUZZ_EXPECT_ERR(verify_signed(&req, &sig), HSM_ERR_BAD_SIGNATURE);
	}
	hsm_sigv4_signer_free(signer);
	hsm_secret_free(secret);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	if (buf == NULL)
		return 0;
	if (size > 0)
		memcpy(buf, data, size);
	buf[size] = '\0';
	const char *field[5] = {"", "", "/", "", ""};
	size_t at = 0;
	for (int i = 0; i < 5 && at <= size; i++) {
		field[i] = buf + at;
		at += strlen(buf + at) + 1;
	}
	check_forged(field);
	check_round_trip(field);
	free(buf);
	return 0;
}
