/*
 * client.c - one HTTP(S) request at a time over libevent's HTTP client,
 * with TLS from OpenSSL (peer and host name verified) and SigV4 signing
 * (client.h).
 */
#include "client/client.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "auth/sigv4.h"
#include "common/util.h"

typedef struct endpoint {
	bool tls;
	char host[256];
	unsigned port;
} endpoint;

typedef struct exchange {
	struct event_base *base;
	int status;        /* 0: no HTTP answer (connection failed) */
	hsm_buf *resp;
	hsm_result res;
} exchange;

static hsm_result parse_endpoint(const char *text, size_t n, endpoint *ep)
{
	char buf[320];
	HSM_ENSURE(n < sizeof(buf), HSM_ERR_VALIDATION, "endpoint is too long");
	memcpy(buf, text, n);
	buf[n] = '\0';
	const char *rest;
	if (hsm_str_has_prefix(buf, "https://")) {
		ep->tls = true;
		rest = buf + 8;
	} else if (hsm_str_has_prefix(buf, "http://")) {
		ep->tls = false;
		rest = buf + 7;
	} else {
		return HSM_FAIL(HSM_ERR_VALIDATION, "endpoint '%s' must start with http:// or https://",
		                buf);
	}
	const char *colon = strrchr(rest, ':');
	const char *end = rest + strcspn(rest, "/");
	HSM_ENSURE(colon != NULL && colon < end, HSM_ERR_VALIDATION,
	           "endpoint '%s' needs a port (https://host:8443)", buf);
	HSM_ENSURE((size_t)(colon - rest) < sizeof(ep->host), HSM_ERR_VALIDATION, "host too long");
	memcpy(ep->host, rest, (size_t)(colon - rest));
	ep->host[colon - rest] = '\0';
	char port[8] = "";
	HSM_ENSURE((size_t)(end - colon - 1) < sizeof(port), HSM_ERR_VALIDATION, "bad port");
	memcpy(port, colon + 1, (size_t)(end - colon - 1));
	int64_t p;
	HSM_GUARD(hsm_parse_i64(port, 1, 65535, &p));
	ep->port = (unsigned)p;
	return HSM_SUCCESS;
}

static void on_response(struct evhttp_request *req, void *arg)
{
	exchange *x = arg;
	event_base_loopexit(x->base, NULL); /* one exchange per loop: done either way */
	if (req == NULL || evhttp_request_get_response_code(req) == 0) {
		x->status = 0;
		return;
	}
	x->status = evhttp_request_get_response_code(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	uint8_t *dst;
	x->res = hsm_buf_append_space(x->resp, len, &dst);
	if (hsm_ok(x->res))
		evbuffer_remove(in, dst, len);
}

static hsm_result make_ssl(const hsm_client *c, const endpoint *ep, SSL_CTX **ctx_out,
                           SSL **ssl_out)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	HSM_ENSURE(ctx != NULL, HSM_ERR_CRYPTO, "cannot create a TLS context");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int ok = c->ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL)
	                            : SSL_CTX_set_default_verify_paths(ctx);
	SSL *ssl = ok == 1 ? SSL_new(ctx) : NULL;
	if (ssl == NULL || SSL_set1_host(ssl, ep->host) != 1 ||
	    SSL_set_tlsext_host_name(ssl, ep->host) != 1) {
		SSL_free(ssl);
		SSL_CTX_free(ctx);
		return HSM_FAIL(HSM_ERR_CRYPTO, "cannot set up TLS for %s (CA file %s)", ep->host,
		                c->ca_file ? c->ca_file : "system default");
	}
	*ctx_out = ctx;
	*ssl_out = ssl;
	return HSM_SUCCESS;
}

static hsm_result sign_request(const endpoint *ep, const hsm_client *c, const char *target,
                               const char *body, hsm_sigv4_signature *sig)
{
	const char *akid = c->akid, *secret = c->secret;
	if (akid == NULL) {
		akid = getenv("AWS_ACCESS_KEY_ID");
		secret = getenv("AWS_SECRET_ACCESS_KEY");
	}
	HSM_ENSURE(akid != NULL && secret != NULL, HSM_ERR_MISSING_AUTH,
	           "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to an hsmd access key");
	const char *region = c->region ? c->region : getenv("AWS_REGION");
	char host[300];
	snprintf(host, sizeof(host), "%s:%u", ep->host, ep->port);
	hsm_sigv4_header headers[] = {{"Host", host},
	                              {"Content-Type", "application/x-amz-json-1.1"},
	                              {"X-Amz-Target", target}};
	hsm_sigv4_request req = {"POST", "/", "", headers, 3, (const uint8_t *)body, strlen(body)};
	hsm_secret *s = NULL;
	hsm_sigv4_signer *signer = NULL;
	HSM_GUARD(hsm_secret_from(secret, strlen(secret), &s));
	hsm_result r = hsm_sigv4_signer_new(akid, s, region ? region : "us-east-1", NULL, &signer);
	if (hsm_ok(r))
		r = hsm_sigv4_sign(signer, &req, hsm_now(), sig);
	hsm_sigv4_signer_free(signer);
	hsm_secret_free(s);
	return r;
}

/*
 * One request on a fresh connection: POST / of a KMS-style JSON body (target
 * set) or GET path (target NULL).  Runs the event loop until the answer.
 */
static hsm_result run_exchange(const hsm_client *c, const endpoint *ep, const char *path,
                               const char *target, const char *body, bool sign, exchange *x)
{
	hsm_result res = HSM_SUCCESS;
	struct event_base *base = event_base_new();
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	struct bufferevent *bev = NULL;
	struct evhttp_connection *conn = NULL;
	hsm_sigv4_signature sig;
	char host[300];
	HSM_CHECK(base != NULL, HSM_ERR_NOMEM, "out of memory");
	x->base = base;
	if (sign)
		HSM_TRY(sign_request(ep, c, target, body, &sig));
	if (ep->tls) {
		HSM_TRY(make_ssl(c, ep, &ctx, &ssl));
		bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
		                                     BEV_OPT_CLOSE_ON_FREE);
		ssl = NULL; /* owned by bev */
		HSM_CHECK(bev != NULL, HSM_ERR_NOMEM, "cannot create a TLS connection");
	}
	conn = evhttp_connection_base_bufferevent_new(base, NULL, bev, ep->host,
	                                              (unsigned short)ep->port);
	HSM_CHECK(conn != NULL, HSM_ERR_NOMEM, "cannot create a connection");
	bev = NULL; /* owned by conn */
	evhttp_connection_set_timeout(conn, c->timeout_s > 0 ? c->timeout_s : 30);
	struct evhttp_request *req = evhttp_request_new(on_response, x);
	HSM_CHECK(req != NULL, HSM_ERR_NOMEM, "out of memory");
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	snprintf(host, sizeof(host), "%s:%u", ep->host, ep->port);
	evhttp_add_header(h, "Host", host);
	/* One request per connection: without this the loop waits out the keep-alive timeout. */
	evhttp_add_header(h, "Connection", "close");
	if (target != NULL) {
		evhttp_add_header(h, "Content-Type", "application/x-amz-json-1.1");
		evhttp_add_header(h, "X-Amz-Target", target);
		evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
	}
	if (sign) {
		evhttp_add_header(h, "X-Amz-Date", sig.amz_date);
		evhttp_add_header(h, "Authorization", sig.authorization);
	}
	HSM_CHECK(evhttp_make_request(conn, req, target != NULL ? EVHTTP_REQ_POST : EVHTTP_REQ_GET,
	                              path) == 0,
	          HSM_ERR_IO, "cannot send the request to %s", host);
	event_base_dispatch(base);
	res = x->res;
out:
	if (conn != NULL)
		evhttp_connection_free(conn);
	if (bev != NULL)
		bufferevent_free(bev);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	if (base != NULL)
		event_base_free(base);
	return res;
}

hsm_result hsm_client_call(const hsm_client *c, const char *target, const char *body, bool sign,
                       int *status, hsm_buf *resp)
{
	HSM_ENSURE(c->endpoints != NULL && *c->endpoints != '\0', HSM_ERR_VALIDATION,
	           "--endpoint is required (or HSM_ENDPOINT)");
	const char *p = c->endpoints;
	char tried[512] = "";
	while (*p != '\0') {
		size_t n = strcspn(p, ",");
		endpoint ep;
		HSM_GUARD(parse_endpoint(p, n, &ep));
		exchange x = {NULL, 0, resp, HSM_SUCCESS};
		HSM_GUARD(run_exchange(c, &ep, "/", target, body, sign, &x));
		if (x.status != 0) {
			*status = x.status;
			return HSM_SUCCESS;
		}
		size_t used = strlen(tried);
		snprintf(tried + used, sizeof(tried) - used, "%s%.*s", used ? ", " : "", (int)n, p);
		p += n;
		if (*p == ',')
			p++;
	}
	return HSM_FAIL(HSM_ERR_IO, "no endpoint answered (tried %s)", tried);
}

hsm_result hsm_client_call_ok(const hsm_client *c, const char *target, const char *body, bool sign,
                          hsm_buf *resp)
{
	int status = 0;
	HSM_GUARD(hsm_client_call(c, target, body, sign, &status, resp));
	if (status == 200)
		return HSM_SUCCESS;
	json_error_t e;
	json_t *j = json_loadb((const char *)resp->data, resp->len, 0, &e);
	const char *type = j ? json_string_value(json_object_get(j, "__type")) : NULL;
	const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
	hsm_result r = HSM_FAIL(HSM_ERR_INTERNAL, "%s (HTTP %d): %s", type ? type : "error", status,
	                        msg ? msg : "no message");
	json_decref(j);
	return r;
}

hsm_result hsm_client_call_json(const hsm_client *c, const char *target, const json_t *body,
                            bool sign, json_t **out)
{
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	HSM_ENSURE(text != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_buf resp;
	hsm_buf_init_secure(&resp);
	hsm_result r = hsm_client_call_ok(c, target, text, sign, &resp);
	free(text);
	if (hsm_ok(r)) {
		json_error_t e;
		*out = json_loadb((const char *)resp.data, resp.len, 0, &e);
		if (*out == NULL)
			r = HSM_FAIL(HSM_ERR_SERIALIZATION, "the server's answer is not JSON");
	}
	hsm_buf_free(&resp);
	return r;
}

/* ---- Unsigned GET of a public document ------------------------------------------- */

hsm_result hsm_client_get(const hsm_client *c, const char *url, hsm_buf *resp)
{
	endpoint ep;
	size_t scheme = hsm_str_has_prefix(url, "https://") ? 8 : 7;
	const char *path = strchr(url + (strlen(url) >= scheme ? scheme : 0), '/');
	HSM_ENSURE(path != NULL && strlen(path) < 2048, HSM_ERR_VALIDATION,
	           "URL '%.128s' needs a path (https://host:port/.well-known/jwks.json)", url);
	HSM_GUARD(parse_endpoint(url, (size_t)(path - url), &ep));
	exchange x = {NULL, 0, resp, HSM_SUCCESS};
	HSM_GUARD(run_exchange(c, &ep, path, NULL, NULL, false, &x));
	HSM_ENSURE(x.status != 0, HSM_ERR_IO, "no answer from %.128s", url);
	HSM_ENSURE(x.status == 200, HSM_ERR_IO, "%.128s answered HTTP %d", url, x.status);
	return HSM_SUCCESS;
}
