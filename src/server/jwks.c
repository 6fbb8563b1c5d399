/*
 * jwks.c - GET /.well-known/jwks.json: the public keys that verify hsmd's
 * tokens (RFC 7517 section 5), for any JOSE library.
 *
 * A deliberate exception to authentication (DESIGN.md, "Who talks to it"):
 * verifiers fetch this document without credentials, as every JWKS endpoint
 * is fetched.  It holds public keys only, changes nothing and uses no key
 * material, so like /healthz and /metrics it is not audited; its load is
 * counted in /metrics.  It is served while the node is sealed too (the
 * public keys are stored in the clear), so verifiers keep working through a
 * restart; a node in the error state or not initialized answers 503.
 *
 * HTTP caching (RFC 9111, RFC 9110 section 13): Cache-Control public with a
 * max-age short enough that caches refresh several times within a rotation
 * grace period, a strong ETag (hash of the body) and If-None-Match -> 304.
 */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "kms/jwt.h"
#include "server/server.h"

#define JWKS_TYPE "application/json"

/* RFC 9110 section 13.1.2: If-None-Match matches on "*" or any listed tag (weak comparison). */
static bool etag_matches(const char *header, const char *etag)
{
	size_t tag_len = strlen(etag);
	const char *p = header;
	while (*p != '\0') {
		p += strspn(p, " \t,");
		if (*p == '*')
			return true;
		if (strncmp(p, "W/", 2) == 0)
			p += 2;
		size_t n = strcspn(p, ",");
		while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == tag_len && strncmp(p, etag, n) == 0)
			return true;
		p += strcspn(p, ",");
	}
	return false;
}

static void respond(hsm_server *s, hsm_http_req *req, int status, const hsm_jwks_doc *d,
                    const uint8_t *body, size_t len)
{
	char cache[48];
	snprintf(cache, sizeof(cache), "public, max-age=%lld",
	         d != NULL ? (long long)hsm_jwks_doc_max_age(d) : 0LL);
	/* A public document: browsers verifying tokens may read it from any origin (CORS),
	 * and scripts its ETag too, to send it back in If-None-Match. */
	hsm_http_header h[4] = {{"Cache-Control", d != NULL ? cache : "no-store"},
	                        {"Access-Control-Allow-Origin", "*"},
	                        {"Access-Control-Expose-Headers", "ETag"},
	                        {"ETag", d != NULL ? hsm_jwks_doc_etag(d) : ""}};
	hsm_metrics_probe(&s->metrics, HSM_PROBE_JWKS);
	hsm_http_respond(req, status, JWKS_TYPE, body, len, d != NULL ? 4 : 3, h);
}

/*
 * OPTIONS of the document: the CORS preflight (Fetch standard, "CORS
 * protocol") a browser sends before a GET that carries a header outside the
 * safelisted ones (If-None-Match set by a script, Cache-Control).  Any
 * origin may read the public keys; no credentials are involved.
 */
void hsm_server_jwks_preflight(hsm_http_req *req)
{
	static const hsm_http_header h[] = {
	    {"Access-Control-Allow-Origin", "*"},
	    {"Access-Control-Allow-Methods", "GET, HEAD"},
	    {"Access-Control-Allow-Headers", "If-None-Match, If-Modified-Since, Cache-Control, Pragma"},
	    {"Access-Control-Max-Age", "86400"},
	    {"Allow", "GET, HEAD, OPTIONS"}};
	hsm_http_respond(req, 204, NULL, NULL, 0, sizeof(h) / sizeof(h[0]), h);
}

void hsm_server_jwks(hsm_server *s, hsm_http_req *req)
{
	static const char unavailable[] =
	    "{\"__type\":\"ServiceUnavailableException\",\"message\":\"hsmd is not initialized or "
	    "is in the error state\"}";
	static const char failed[] =
	    "{\"__type\":\"KMSInternalException\",\"message\":\"the JWK Set could not be built\"}";
	hsm_node_state st = hsm_keystore_state(s->ks);
	if (st != HSM_NODE_UNSEALED && st != HSM_NODE_SEALED) {
		respond(s, req, 503, NULL, (const uint8_t *)unavailable, sizeof(unavailable) - 1);
		return;
	}
	hsm_jwks_doc *d = NULL;
	if (hsm_failed(hsm_kms_jwks(s->kms, &d))) {
		hsm_log_failure("JWKS");
		respond(s, req, 500, NULL, (const uint8_t *)failed, sizeof(failed) - 1);
		return;
	}
	const char *inm = hsm_http_req_header(req, "If-None-Match");
	size_t len = 0;
	const uint8_t *body = hsm_jwks_doc_body(d, &len);
	if (inm != NULL && etag_matches(inm, hsm_jwks_doc_etag(d)))
		respond(s, req, 304, d, NULL, 0);
	else
		respond(s, req, 200, d, body, len);
	hsm_jwks_doc_release(d);
}
