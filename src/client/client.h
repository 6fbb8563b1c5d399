/*
 * client.h - a client of a running hsmd (HTTP or HTTPS, SigV4), used by
 * hsmctl and the PKCS#11 module.
 *
 * Requests go to the first endpoint of the list that accepts a connection;
 * connection failures move on to the next (a cluster's nodes), HTTP answers
 * do not.  Requests are signed with the client's credentials or, when it has
 * none, those in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
 * as aws-cli reads them) unless the operation is one of hsmd's
 * unauthenticated ones (Unseal, Status).
 */
#ifndef HSM_CLIENT_H
#define HSM_CLIENT_H

#include <jansson.h>
#include <stdbool.h>

#include "common/buf.h"
#include "common/result.h"

typedef struct hsm_client {
	const char *endpoints; /* "https://a:8443,https://b:8443" */
	const char *ca_file;   /* PEM bundle to verify the server; NULL: the system's */
	/* A client certificate for a node with tls_client_auth (PEM chain); NULL: none. */
	const char *cert_file;
	const char *key_file; /* its private key (PEM); NULL: in cert_file */
	const char *region;    /* SigV4 region; NULL: hsm_env_region() */
	int timeout_s;
	const char *akid;   /* NULL: the environment's credentials */
	const char *secret; /* with akid */
	struct hsm_client_conn *conn; /* the kept-alive connection (client.c); NULL at first */
} hsm_client;

/*
 * Succeeds when every endpoint keeps what is sent to it, and what it
 * answers, off the network: HTTPS, or plain HTTP to a loopback address
 * (127.0.0.0/8, ::1, "localhost"), as hsmd itself serves plain HTTP only
 * there.  Otherwise HSM_ERR_VALIDATION naming the endpoint and what, which
 * says what would travel in clear ("a custodian share").  For the calls
 * that carry secrets; others may use plain HTTP to a TLS proxy.
 */
hsm_result hsm_client_require_private(const hsm_client *c, const char *what) HSM_MUST_CHECK;
/*
 * Whether every endpoint of a comma-separated list is one the client can
 * call (an empty one is not); if not, writes to why (cap bytes) which one,
 * by its place in the list, and what is wrong with it, quoting none of the
 * list's text: a URL may carry a user name and password.  For settings
 * checked before any call is made (the PKCS#11 module's).
 */
bool hsm_client_endpoints_usable(const char *endpoints, char *why, size_t cap) HSM_MUST_CHECK;
/* Closes the kept-alive connection (the client stays usable). */
void hsm_client_close(hsm_client *c);

/*
 * POSTs body (JSON) with X-Amz-Target: target.  On an HTTP answer sets
 * *status and appends the response body to resp (both even for 4xx/5xx).
 */
hsm_result hsm_client_call(hsm_client *c, const char *target, const char *body, bool sign,
                       int *status, hsm_buf *resp) HSM_MUST_CHECK;

/* Calls and turns a non-200 answer into a failure carrying the server's error and message. */
hsm_result hsm_client_call_ok(hsm_client *c, const char *target, const char *body, bool sign,
                          hsm_buf *resp) HSM_MUST_CHECK;

/*
 * Sends body (a JSON object; not consumed, NULL fails as out of memory) to
 * target and parses a 200 answer into *out.  The answer is read into secure
 * memory: it may carry a secret access key.
 */
hsm_result hsm_client_call_json(hsm_client *c, const char *target, const json_t *body,
                            bool sign, json_t **out) HSM_MUST_CHECK;

/*
 * GETs one URL ("https://host:port/path"; TLS verified with c->ca_file as
 * for calls) without signing, and appends the body of a 200 answer to resp;
 * any other status is a failure.  For public documents such as the JWKS.
 */
hsm_result hsm_client_get(const hsm_client *c, const char *url, hsm_buf *resp) HSM_MUST_CHECK;

#endif
