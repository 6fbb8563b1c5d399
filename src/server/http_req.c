/*
 * http_req.c - requests: handing them to the handler (or answering them on
 * the framework's behalf), and the accessors.
 *
 * Requests are recycled through a per-worker pool, so in the steady state a
 * request costs no allocation.  Its strings and body point into its
 * connection's input buffer (http_read.c); its response is built in its own
 * buffer (http_resp.c), wiped when the request goes back to the pool, so no
 * copy of a response body (which may hold a plaintext or a data key) is left
 * behind.  The buffer is ordinary heap, not the secure heap: a thousand
 * pooled buffers per worker would compete with key material for it, and the
 * bytes are bound for the socket anyway.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "common/log.h"
#include "server/http_internal.h"

/* Larger response buffers are not kept in the pool (KMS answers are far smaller). */
#define POOL_BUF_MAX ((size_t)16 << 10)

/*
 * KMS-style bodies, so SDKs report an error code rather than the bare status.
 * In AWS's JSON 1.1 protocol an operation is named by POST and X-Amz-Target:
 * a request by another method names none hsmd offers, which KMS calls an
 * UnknownOperationException (what hsmd answers an unknown X-Amz-Target).
 */
static const char not_allowed_body[] =
    "{\"__type\":\"UnknownOperationException\",\"message\":\"this HTTP method is not "
    "allowed here: the KMS API takes POST; health, metrics and the JWK Set take GET or "
    "HEAD\"}";
static const char not_found_body[] =
    "{\"__type\":\"NotFoundException\",\"message\":\"no such resource\"}";
static const char not_implemented_body[] =
    "{\"__type\":\"UnknownOperationException\",\"message\":\"unknown HTTP method: the "
    "KMS API takes POST; health, metrics and the JWK Set take GET or HEAD\"}";

/* ---- pool ---------------------------------------------------------------- */

hsm_http_req *hsm_http_req_get(hsm_http_worker *w)
{
	hsm_http_req *req = w->pool;
	if (req != NULL) {
		w->pool = req->next;
		w->n_pool--;
	} else {
		req = calloc(1, sizeof(*req));
		if (req == NULL)
			return NULL;
		hsm_buf_init(&req->out);
		req->w = w;
	}
	req->next = NULL;
	return req;
}

void hsm_http_req_put(hsm_http_req *req)
{
	hsm_http_worker *w = req->w;
	/* Bytes are only ever written below len (stash reserves before copying). */
	if (req->out.data != NULL)
		explicit_bzero(req->out.data, req->out.len);
	req->out.len = 0;
	if (req->out.cap > POOL_BUF_MAX)
		hsm_buf_free(&req->out);
	req->state = REQ_FREE;
	req->conn = NULL;
	req->failed = false;
	if (w->n_pool >= HSM_HTTP_REQ_POOL_MAX) {
		hsm_buf_free(&req->out); /* already wiped */
		free(req);
		return;
	}
	req->next = w->pool;
	w->pool = req;
	w->n_pool++;
}

void hsm_http_req_pool_free(hsm_http_worker *w)
{
	while (w->pool != NULL) {
		hsm_http_req *req = w->pool;
		w->pool = req->next;
		hsm_buf_free(&req->out);
		free(req);
	}
	w->n_pool = 0;
}

/* ---- per-worker caches ----------------------------------------------------- */

/* A version-4 UUID (RFC 9562 section 5.4) from a pool of random bytes. */
static bool next_id(hsm_http_worker *w, char out[HSM_UUID_STRLEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	if (w->rand_pos + 16 > sizeof(w->rand_pool)) {
		if (RAND_bytes(w->rand_pool, (int)sizeof(w->rand_pool)) != 1)
			return false;
		w->rand_pos = 0;
	}
	uint8_t *u = w->rand_pool + w->rand_pos;
	w->rand_pos += 16;
	u[6] = (uint8_t)((u[6] & 0x0fU) | 0x40U);
	u[8] = (uint8_t)((u[8] & 0x3fU) | 0x80U);
	size_t o = 0;
	for (size_t i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[u[i] >> 4];
		out[o++] = hex[u[i] & 0x0fU];
	}
	out[o] = '\0';
	return true;
}

/* ---- incoming ------------------------------------------------------------- */

/*
 * The methods each path hsmd serves takes (dispatch.c routes them), for the
 * Allow header of a 405: RFC 9110 section 10.2.1 has it list the target
 * resource's methods, not the server's.  "*" (OPTIONS *) is the server.
 */
static const struct resource {
	const char *path, *allow;
} resources[] = {
    {"/", "POST"},
    {"/healthz", "GET, HEAD"},
    {"/readyz", "GET, HEAD"},
    {"/metrics", "GET, HEAD"},
    {"/.well-known/jwks.json", "GET, HEAD, OPTIONS"}, /* OPTIONS: the CORS preflight */
    {"*", "GET, POST, HEAD"},
};

bool hsm_http_path_is_resource(const char *path)
{
	if (path[0] != '/')
		return false; /* "*" is the server, not a resource */
	for (size_t i = 0; i < sizeof(resources) / sizeof(resources[0]); i++)
		if (strcmp(path, resources[i].path) == 0)
			return true;
	return false;
}

/* The server is told of a request it answers without its handler (hsm_http_config.refused). */
static void tell_refused(hsm_http_req *req, int status, const char *type, const char *reason)
{
	const hsm_http_server *srv = req->w->srv;
	if (srv->cfg.refused != NULL)
		srv->cfg.refused(req, status, type, reason, srv->arg);
}

void hsm_http_respond_not_allowed(hsm_http_req *req)
{
	for (size_t i = 0; i < sizeof(resources) / sizeof(resources[0]); i++) {
		if (strcmp(req->head.path, resources[i].path) == 0) {
			hsm_http_header allow = {"Allow", resources[i].allow};
			tell_refused(req, 405, "UnknownOperationException", "method not allowed here");
			hsm_http_respond(req, 405, "application/json", not_allowed_body,
			                 sizeof(not_allowed_body) - 1, 1, &allow);
			return;
		}
	}
	/* No such resource, whatever the method (as a GET of it is answered). */
	tell_refused(req, 404, "NotFoundException", "no such resource");
	hsm_http_respond(req, 404, "application/json", not_found_body, sizeof(not_found_body) - 1,
	                 0, NULL);
}

/* Methods the server knows but does not serve: 405 rather than 501 (RFC 9110 section 9). */
static bool is_known_method(const char *m)
{
	static const char *const known[] = {"PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT"};
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(m, known[i]) == 0)
			return true;
	return false;
}

/* Sets the request's id (a fresh UUID), start time and persistence; false if no id. */
static bool req_begin(hsm_http_conn *conn, hsm_http_req *req)
{
	req->conn = conn;
	req->start_ns = hsm_mono_ns();
	req->close = !req->head.keep_alive;
	req->is_head = strcmp(req->head.method, "HEAD") == 0;
	if (!next_id(req->w, req->id)) {
		snprintf(req->id, sizeof(req->id), "00000000-0000-0000-0000-000000000000");
		return false;
	}
	return true;
}

/* A request the handler never sees: its head may not have parsed. */
static void blank_head(hsm_http_req *req)
{
	memset(&req->head, 0, sizeof(req->head));
	req->head.method = req->head.path = req->head.query = "";
	req->body = (const uint8_t *)"";
	req->body_len = 0;
}

void hsm_http_req_refuse(hsm_http_conn *conn, hsm_http_req *req, int status, const char *type,
                         const char *message)
{
	char body[160];
	hsm_sb b;
	hsm_sb_init(&b, body, sizeof(body));
	/* KMS-style, so SDKs report an error code rather than the bare status. */
	hsm_sb_add(&b, "{\"__type\":\"");
	hsm_sb_add(&b, type);
	hsm_sb_add(&b, "\",\"message\":\"");
	hsm_sb_add(&b, message);
	hsm_sb_add(&b, "\"}");
	conn->state = CONN_HANDLING;
	blank_head(req);
	(void)req_begin(conn, req);
	req->close = true;
	req->state = REQ_HANDLER;
	hsm_http_inflight_add(req->w, 1);
	tell_refused(req, status, type, message);
	hsm_http_respond(req, status, "application/json", body, strlen(body), 0, NULL);
	hsm_http_flush_local(req->w);
}

static void subject_once(hsm_http_conn *conn)
{
	if (conn->ssl != NULL && !conn->subject_done) {
		conn->subject_done = true;
		conn->client_subject = hsm_http_tls_client_subject(conn->ssl);
	}
}

void hsm_http_req_dispatch(hsm_http_conn *conn, hsm_http_req *req)
{
	hsm_http_worker *w = conn->w;
	/*
	 * Replies completed by another thread while this loop pass ran (the audit
	 * writer) go out now rather than after the pass: a pass of several RSA
	 * signatures lasts a millisecond.  They belong to other connections.
	 */
	if (atomic_load_explicit(&w->done, memory_order_relaxed) != NULL)
		hsm_http_worker_drain(w, true);
	subject_once(conn);
	conn->state = CONN_HANDLING;
	bool ok = req_begin(conn, req);
	req->state = REQ_HANDLER;
	hsm_http_inflight_add(w, 1);
	const char *m = req->head.method;
	/* OPTIONS of a path goes to the handler (a CORS preflight); OPTIONS * gets 405. */
	bool served = strcmp(m, "GET") == 0 || strcmp(m, "POST") == 0 || req->is_head ||
	              (strcmp(m, "OPTIONS") == 0 && req->head.path[0] == '/');
	if (!ok) {
		tell_refused(req, 500, "KMSInternalException", "no request id could be made");
		hsm_http_respond(req, 500, NULL, NULL, 0, 0, NULL);
	} else if (!served && is_known_method(m)) {
		hsm_http_respond_not_allowed(req);
	} else if (!served) {
		tell_refused(req, 501, "UnknownOperationException", "unknown HTTP method");
		hsm_http_respond(req, 501, "application/json", not_implemented_body,
		                 sizeof(not_implemented_body) - 1, 0, NULL);
	} else {
		w->srv->handler(req, w->srv->arg);
	}
	hsm_http_flush_local(w);
}

/* ---- accessors -------------------------------------------------------------- */

const char *hsm_http_req_method(const hsm_http_req *req) { return req->head.method; }
const char *hsm_http_req_path(const hsm_http_req *req) { return req->head.path; }
const char *hsm_http_req_query(const hsm_http_req *req) { return req->head.query; }
const char *hsm_http_req_id(const hsm_http_req *req) { return req->id; }
uint64_t hsm_http_req_start_ns(const hsm_http_req *req) { return req->start_ns; }
bool hsm_http_req_is_tls(const hsm_http_req *req) { return req->w->srv->tls_on; }

const char *hsm_http_req_client_subject(const hsm_http_req *req)
{
	return req->conn->client_subject;
}

const char *hsm_http_req_header(const hsm_http_req *req, const char *name)
{
	HSM_ASSERT(name != NULL);
	return hsm_http_head_field(&req->head, name);
}

bool hsm_http_req_next_header(const hsm_http_req *req, hsm_http_header_iter *it, const char **name,
                              const char **value)
{
	size_t i = it->started_ ? (size_t)(uintptr_t)it->next_ : 0;
	it->started_ = true;
	if (i >= req->head.n_fields)
		return false;
	*name = req->head.fields[i].name;
	*value = req->head.fields[i].value;
	it->next_ = (const void *)(uintptr_t)(i + 1);
	return true;
}

const uint8_t *hsm_http_req_body(const hsm_http_req *req, size_t *len)
{
	*len = req->body_len;
	return req->body;
}

const char *hsm_http_req_remote_addr(const hsm_http_req *req) { return req->conn->addr; }
uint16_t hsm_http_req_remote_port(const hsm_http_req *req) { return req->conn->port; }
