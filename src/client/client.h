/*
 * client.h - hsmctl's client of a running hsmd (HTTP or HTTPS, SigV4).
 *
 * Requests go to the first endpoint of the list that accepts a connection;
 * connection failures move on to the next (a cluster's nodes), HTTP answers
 * do not.  Requests are signed with the credentials in the environment
 * (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, as aws-cli reads them) unless
 * the operation is one of hsmd's unauthenticated ones (Unseal, Status).
 */
#ifndef HSMCTL_CLIENT_H
#define HSMCTL_CLIENT_H

#include <jansson.h>
#include <stdbool.h>

#include "common/buf.h"
#include "common/result.h"

typedef struct hsmctl_client {
	const char *endpoints; /* "https://a:8443,https://b:8443" */
	const char *ca_file;   /* PEM bundle to verify the server; NULL: the system's */
	const char *region;    /* SigV4 region; NULL: AWS_REGION or us-east-1 */
	int timeout_s;
} hsmctl_client;

/*
 * POSTs body (JSON) with X-Amz-Target: target.  On an HTTP answer sets
 * *status and appends the response body to resp (both even for 4xx/5xx).
 */
hsm_result hsmctl_call(const hsmctl_client *c, const char *target, const char *body, bool sign,
                       int *status, hsm_buf *resp) HSM_MUST_CHECK;

/* Calls and turns a non-200 answer into a failure carrying the server's message. */
hsm_result hsmctl_call_ok(const hsmctl_client *c, const char *target, const char *body, bool sign,
                          hsm_buf *resp) HSM_MUST_CHECK;

/*
 * Sends body (a JSON object; not consumed, NULL fails as out of memory) to
 * target and parses a 200 answer into *out.  The answer is read into secure
 * memory: it may carry a secret access key.
 */
hsm_result hsmctl_call_json(const hsmctl_client *c, const char *target, const json_t *body,
                            bool sign, json_t **out) HSM_MUST_CHECK;
/* Prints each member of an answer as "name: value", other than strings as compact JSON. */
void hsmctl_print_fields(json_t *o);

/*
 * GETs one URL ("https://host:port/path"; TLS verified with c->ca_file as
 * for calls) without signing, and appends the body of a 200 answer to resp;
 * any other status is a failure.  For public documents such as the JWKS.
 */
hsm_result hsmctl_get(const hsmctl_client *c, const char *url, hsm_buf *resp) HSM_MUST_CHECK;

#endif
