/*
 * sigv4_support.h - helpers for the SigV4 unit tests: sign a request view
 * with the documentation's example credentials and run the full server-side
 * check sequence (parse, scope, key lookup, signing key, verify).
 */
#ifndef HSM_TEST_SIGV4_SUPPORT_H
#define HSM_TEST_SIGV4_SUPPORT_H

#include <stdint.h>

#include "auth/sigv4.h"

/* The example credentials of AWS's SigV4 documentation and test suite. */
#define SV_AKID "AKIDEXAMPLE"
#define SV_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SV_T2015 ((int64_t)1440938160) /* 2015-08-30T12:36:00Z, the suite's clock */

#define SV_MAX_HEADERS (HSM_SIGV4_MAX_HEADERS + 8)

/* A request plus the X-Amz-Date and Authorization headers that sign it. */
typedef struct sv_req {
	hsm_sigv4_header h[SV_MAX_HEADERS];
	hsm_sigv4_request r; /* r.headers points at h */
	hsm_sigv4_signature sig;
} sv_req;

/* A new secret holding s (aborts the test on failure); free with hsm_secret_free. */
hsm_secret *sv_secret(const char *s);

/* Signs base with SV_AKID/SV_SECRET for (region, service) at now into *out. */
void sv_sign(sv_req *out, const hsm_sigv4_request *base, const char *region, const char *service,
             int64_t now);

/* Copies req into *out (headers included) so a test can change it. */
void sv_copy(sv_req *out, const hsm_sigv4_request *req);

/* Sets the value of the first header named name (any case), or appends it. */
void sv_set(sv_req *r, const char *name, const char *value);
/* Removes every header named name. */
void sv_del(sv_req *r, const char *name);

/*
 * The server's sequence: hsm_sigv4_parse, hsm_sigv4_check_scope, lookup of
 * the access key (only SV_AKID is known), hsm_sigv4_signing_key,
 * hsm_sigv4_verify_scoped; and hsm_sigv4_verify must agree with it (else
 * HSM_ERR_INTERNAL).  Returns the first failure's code (HSM_OK on success);
 * the message is in hsm_last_message().
 */
hsm_err sv_verify(const hsm_sigv4_request *req, const char *region, const char *service,
                  int64_t now);
hsm_err sv_verify_skew(const hsm_sigv4_request *req, const char *region, const char *service,
                       int64_t now, int64_t skew);

#endif
