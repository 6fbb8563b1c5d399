/*
 * sigv4.h - AWS Signature Version 4 (header form): verify and sign requests.
 *
 * Source: AWS IAM User Guide, "AWS Signature Version 4 for API requests"
 * ("Create a signed AWS API request": canonical request, string to sign,
 * signing key, Authorization header).  Only the header-based form with the
 * AWS4-HMAC-SHA256 algorithm is supported; presigned URLs (query-string
 * authentication), SigV4a and chunked/unsigned payloads are not.
 *
 * Server side, in this order (each step is cheap before the next):
 *
 *   hsm_sigv4_auth auth;
 *   HSM_TRY(hsm_sigv4_parse(&req, &auth));              syntax of Authorization
 *   hsm_sigv4_scope scope;
 *   HSM_TRY(hsm_sigv4_check_scope(&cfg, &req, &auth, now, &scope)); date, region, service
 *   secret = lookup(auth.access_key_id)                 else hsm_sigv4_unknown_key(&auth)
 *   key = cache(auth.access_key_id, auth.date) or hsm_sigv4_signing_key(...)
 *   HSM_TRY(hsm_sigv4_verify_scoped(&req, &auth, &scope, key));
 *
 * Checking the scope before the secret lookup keeps stale or misdirected
 * requests from reaching the store and from filling a signing-key cache
 * with keys for arbitrary dates and regions.
 *
 * Only hsm_sigv4_signing_key touches the access key's secret.  It is a pure
 * function so that it can run on the keystore side of the key boundary
 * (DESIGN.md), which then hands the network side just the derived key: that
 * key verifies requests for one day, region and service and reveals nothing
 * about the secret.
 *
 * Client side, hsm_sigv4_signer holds the credentials and the signing key
 * of the current day, so each signature costs two SHA-256 and one HMAC.
 *
 * Nothing here keeps a pointer to a request after returning.  Error messages
 * follow AWS's wording and never contain the expected signature, the
 * canonical request or the string to sign.
 */
#ifndef HSM_AUTH_SIGV4_H
#define HSM_AUTH_SIGV4_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"
#include "common/secret.h"

/* Bounds on what a request may carry; larger inputs are refused, never truncated. */
#define HSM_SIGV4_MAX_HEADERS 256        /* header lines in a request (hsmd's HTTP reader's) */
#define HSM_SIGV4_MAX_HEADER_NAME 128    /* bytes in one header name */
#define HSM_SIGV4_MAX_HEADER_VALUE 8192  /* bytes in one signed header's value */
#define HSM_SIGV4_MAX_PATH 4096          /* bytes in the raw path */
#define HSM_SIGV4_MAX_QUERY 8192         /* bytes in the raw query string */
#define HSM_SIGV4_MAX_QUERY_PARAMS 256   /* parameters in the query string */
#define HSM_SIGV4_MAX_SIGNED_HEADERS 64  /* names in SignedHeaders */
#define HSM_SIGV4_MAX_AUTH_HEADER 4096   /* bytes in the Authorization value */

#define HSM_SIGV4_AKID_MAX 128           /* AWS access key ids are 16..128 chars */
#define HSM_SIGV4_REGION_MAX 64
#define HSM_SIGV4_SERVICE_MAX 64
#define HSM_SIGV4_SIGNED_HEADERS_MAX 1024 /* bytes of the SignedHeaders list */
#define HSM_SIGV4_KEY_LEN 32             /* the derived signing key */
#define HSM_SIGV4_SIG_LEN 32             /* HMAC-SHA256 output */
#define HSM_SIGV4_AMZ_DATE_LEN 16        /* "20150830T123600Z" */
#define HSM_SIGV4_HEX_HASH_LEN 64        /* a SHA-256 in lowercase hex */
#define HSM_SIGV4_DATE_LEN 8             /* "20150830" */
#define HSM_SIGV4_DEFAULT_SKEW 300       /* seconds either way, as AWS allows */
#define HSM_SIGV4_SERVICE_KMS "kms"

/*
 * One header line as received.  Names compare case-insensitively; several
 * lines with the same name are joined with ',' in the order given, as the
 * canonical request requires.  Both strings are NUL-terminated and owned by
 * the caller.
 */
typedef struct hsm_sigv4_header {
	const char *name;
	const char *value;
} hsm_sigv4_header;

/* A view of an HTTP request; everything is borrowed from the caller. */
typedef struct hsm_sigv4_request {
	const char *method;              /* "POST" */
	const char *path;                /* raw path of the request line, as sent ("/") */
	const char *query;               /* raw query after '?', without it; NULL or "" if none */
	const hsm_sigv4_header *headers; /* n_headers entries, in the order received */
	size_t n_headers;
	const uint8_t *body;             /* may be NULL when body_len is 0 */
	size_t body_len;
} hsm_sigv4_request;

/* Server configuration. */
typedef struct hsm_sigv4_config {
	const char *region;  /* required: the region this node answers for */
	const char *service; /* NULL means "kms" */
	int64_t max_skew;    /* seconds; 0 means HSM_SIGV4_DEFAULT_SKEW */
} hsm_sigv4_config;

/* What the Authorization header says; plain data, no pointers. */
typedef struct hsm_sigv4_auth {
	char access_key_id[HSM_SIGV4_AKID_MAX + 1];
	char date[HSM_SIGV4_DATE_LEN + 1]; /* credential scope date, YYYYMMDD */
	char region[HSM_SIGV4_REGION_MAX + 1];
	char service[HSM_SIGV4_SERVICE_MAX + 1];
	char signed_headers[HSM_SIGV4_SIGNED_HEADERS_MAX + 1]; /* "host;x-amz-date" */
	uint8_t signature[HSM_SIGV4_SIG_LEN];
} hsm_sigv4_auth;

/*
 * Finds the Authorization header of req and parses it into *out.
 * Errors: HSM_ERR_MISSING_AUTH when there is no Authorization header;
 * HSM_ERR_INCOMPLETE_SIGNATURE when it is malformed (other algorithm,
 * missing or repeated Credential/SignedHeaders/Signature, a credential that
 * is not AKID/YYYYMMDD/region/service/terminator, SignedHeaders not
 * lowercase, sorted and unique, a signature that is not 64 lowercase hex
 * digits); HSM_ERR_BAD_SIGNATURE when the scope's terminator is not
 * "aws4_request" (AWS reports that as InvalidSignatureException);
 * HSM_ERR_VALIDATION when the request exceeds the bounds above.
 */
hsm_result hsm_sigv4_parse(const hsm_sigv4_request *req, hsm_sigv4_auth *out) HSM_MUST_CHECK;

/* What hsm_sigv4_check_scope learned of a request that the signature covers. */
typedef struct hsm_sigv4_scope {
	char amz_date[HSM_SIGV4_AMZ_DATE_LEN + 1]; /* the request time, basic ISO 8601 */
	char payload_hex[HSM_SIGV4_HEX_HASH_LEN + 1]; /* SHA-256 of the body */
} hsm_sigv4_scope;

/*
 * Checks everything that needs no secret: the request time (X-Amz-Date, or
 * Date when there is no X-Amz-Date) is within cfg's skew of now (epoch
 * seconds), the scope date equals its date, region and service are the
 * configured ones and the terminator is "aws4_request"; host and the date
 * header are signed; X-Amz-Target, when present, is signed and not
 * repeated; every signed header is present; X-Amz-Content-SHA256, when
 * present, is the hash of the body.  On success *out holds the request
 * time and the body's hash for hsm_sigv4_verify_scoped.
 * Errors: HSM_ERR_BAD_SIGNATURE (stale, wrong scope, unsigned host/date,
 * payload hash mismatch), HSM_ERR_INCOMPLETE_SIGNATURE (no usable date
 * header, a repeated date, target or payload hash header, an unsigned
 * target, a signed header absent from the request).
 */
hsm_result hsm_sigv4_check_scope(const hsm_sigv4_config *cfg, const hsm_sigv4_request *req,
                                 const hsm_sigv4_auth *auth, int64_t now,
                                 hsm_sigv4_scope *out) HSM_MUST_CHECK;

/*
 * Derives the signing key HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date),
 * region), service), "aws4_request") into a new secret of
 * HSM_SIGV4_KEY_LEN bytes that the caller frees.  secret_access_key holds
 * the secret access key's characters (no NUL).  The key is valid for one
 * (access key, date, region, service); cache it per (access key, date).
 */
hsm_result hsm_sigv4_signing_key(const hsm_secret *secret_access_key, const char *date,
                                 const char *region, const char *service,
                                 hsm_secret **out) HSM_MUST_CHECK;

/*
 * Full verification: hsm_sigv4_check_scope, then recomputes the signature
 * over req with signing_key (from hsm_sigv4_signing_key for auth's scope)
 * and compares it with auth->signature in constant time.  The work before
 * the comparison depends only on the request, never on the key's bytes.
 * Errors as hsm_sigv4_check_scope, HSM_ERR_BAD_SIGNATURE on mismatch, and
 * HSM_ERR_VALIDATION when the path or query has no canonical form (a path
 * not starting with '/', a malformed percent-escape, bounds exceeded).
 */
hsm_result hsm_sigv4_verify(const hsm_sigv4_config *cfg, const hsm_sigv4_request *req,
                            const hsm_sigv4_auth *auth, const hsm_secret *signing_key,
                            int64_t now) HSM_MUST_CHECK;

/*
 * The second half of hsm_sigv4_verify, for a request whose scope
 * hsm_sigv4_check_scope has accepted into *scope (same req and auth): the
 * body is not hashed a second time.
 */
hsm_result hsm_sigv4_verify_scoped(const hsm_sigv4_request *req, const hsm_sigv4_auth *auth,
                                   const hsm_sigv4_scope *scope,
                                   const hsm_secret *signing_key) HSM_MUST_CHECK;
struct hsm_keyed_hmac; /* crypto/crypto.h */
/*
 * hsm_sigv4_verify_scoped with the signing key as a keyed HMAC (a pool's
 * loan, kept by a caller that verifies many requests under one key); mac is
 * spent, not freed.
 */
hsm_result hsm_sigv4_verify_with(const hsm_sigv4_request *req, const hsm_sigv4_auth *auth,
                                 const hsm_sigv4_scope *scope,
                                 struct hsm_keyed_hmac *mac) HSM_MUST_CHECK;

/* The failure for an access key id the caller does not know (UnrecognizedClientException). */
hsm_result hsm_sigv4_unknown_key(const hsm_sigv4_auth *auth) HSM_MUST_CHECK;

/*
 * Appends the canonical request for req to out, covering the headers named
 * in signed_headers (";"-separated, lowercase, sorted).  The payload hash is
 * computed from the body.  For tests and diagnostics on the operator's side:
 * never put the result into a client-visible message.
 */
hsm_result hsm_sigv4_canonical_request(const hsm_sigv4_request *req, const char *signed_headers,
                                       hsm_buf *out) HSM_MUST_CHECK;

/* ---- Signing (hsmd's own clients) ----------------------------------------- */

typedef struct hsm_sigv4_signer hsm_sigv4_signer;

/* Upper bound of an Authorization value produced by hsm_sigv4_sign. */
#define HSM_SIGV4_AUTH_VALUE_MAX 2048

typedef struct hsm_sigv4_signature {
	char amz_date[HSM_SIGV4_AMZ_DATE_LEN + 1];        /* send as X-Amz-Date */
	char authorization[HSM_SIGV4_AUTH_VALUE_MAX + 1]; /* send as Authorization */
} hsm_sigv4_signature;

/*
 * Creates a signer for one access key.  The signer copies everything it is
 * given (the secret into the secure heap).  service NULL means "kms".
 * A signer is not thread-safe: give each thread its own.
 */
hsm_result hsm_sigv4_signer_new(const char *access_key_id, const hsm_secret *secret_access_key,
                                const char *region, const char *service,
                                hsm_sigv4_signer **out) HSM_MUST_CHECK;
void hsm_sigv4_signer_free(hsm_sigv4_signer *s);

/*
 * Signs req at time now (epoch seconds).  Every header of req is signed
 * except Authorization and X-Amz-Date (replaced by the outputs) and
 * User-Agent, Expect and X-Amzn-Trace-Id (which proxies rewrite; botocore
 * leaves them out for the same reason); X-Amz-Date is added.  req must
 * carry a Host header.  The caller sends out->amz_date as X-Amz-Date and
 * out->authorization as Authorization.
 */
hsm_result hsm_sigv4_sign(hsm_sigv4_signer *s, const hsm_sigv4_request *req, int64_t now,
                          hsm_sigv4_signature *out) HSM_MUST_CHECK;

#endif
