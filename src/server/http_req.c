/*
 * http_req.c - requests: handing them to the handler, the accessors, and
 * the way back (hsm_http_respond, on any thread, to the owning worker).
 *
 * Requests are recycled through a per-worker pool, so in the steady state a
 * request costs no allocation of ours (libevent makes its own).  A response is
 * copied once, into the request's buffer, and libevent writes it from there by
 * reference; the buffer is wiped when the socket has taken the bytes (or the
 * connection died), so no copy of a response body (which may hold a plaintext
 * or a data key) is left behind in freed memory.  The buffer is ordinary heap,
 * not the secure heap: a thousand pooled buffers per worker would compete with
 * key material for it, and the bytes are bound for the socket anyway.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "server/http_internal.h"

/* Larger response buffers are not kept in the pool (KMS answers are far smaller). */
#define POOL_BUF_MAX ((size_t)16 << 10)

static const char not_allowed_body[] = "{\"message\":\"Method Not Allowed\"}";

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
		OPENSSL_cleanse(req->out.data, req->out.len);
	req->out.len = 0;
	if (req->out.cap > POOL_BUF_MAX)
		hsm_buf_free(&req->out);
	req->state = REQ_FREE;
	req->evreq = NULL;
	req->conn = NULL;
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

/* The Date header (RFC 9110 section 5.6.7, IMF-fixdate), rebuilt once a second. */
const char *hsm_http_worker_date(hsm_http_worker *w)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t now = time(NULL);
	if ((int64_t)now != w->date_sec) {
		struct tm tm;
		gmtime_r(&now, &tm);
		snprintf(w->date, sizeof(w->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
		         days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
		         tm.tm_hour, tm.tm_min, tm.tm_sec);
		w->date_sec = (int64_t)now;
	}
	return w->date;
}

/* ---- incoming ------------------------------------------------------------- */

static const char *method_name(enum evhttp_cmd_type type)
{
	switch (type) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	default:
		return NULL;
	}
}

/* Fills req from evreq; false (req still answerable) if the body or id failed. */
static bool fill_req(hsm_http_req *req, struct evhttp_request *evreq, const char *method)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(evreq);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
	char *addr = NULL;
	ev_uint16_t port = 0;
	evhttp_connection_get_peer(evhttp_request_get_connection(evreq), &addr, &port);
	req->remote_addr = addr != NULL ? addr : "";
	req->remote_port = port;
	req->method = method;
	req->head = evhttp_request_get_command(evreq) == EVHTTP_REQ_HEAD;
	req->path = path != NULL ? path : "";
	req->query = query != NULL ? query : "";
	req->evreq = evreq;
	req->start_ns = hsm_mono_ns();
	req->status = 0;
	req->failed = false;
	req->close = false;
	req->n_extra = 0;
	req->body = (const uint8_t *)"";
	req->body_len = 0;
	if (!next_id(req->w, req->id)) {
		snprintf(req->id, sizeof(req->id), "00000000-0000-0000-0000-000000000000");
		return false;
	}
	struct evbuffer *in = evhttp_request_get_input_buffer(evreq);
	size_t len = evbuffer_get_length(in);
	if (len > 0) {
		req->body = evbuffer_pullup(in, -1); /* contiguous; a copy only if in pieces */
		if (req->body == NULL) {
			req->body = (const uint8_t *)"";
			return false;
		}
	}
	req->body_len = len;
	return true;
}

/*
 * RFC 9112 section 6.3: a request with both Transfer-Encoding and
 * Content-Length, a transfer coding other than chunked, or several or
 * malformed Content-Length values is framed ambiguously, and a proxy in front
 * may have read it differently (request smuggling, RFC 9112 section 11.2).
 * evhttp has read it one way; refuse it and close the connection.
 */
static bool framing_ok(struct evhttp_request *evreq)
{
	const struct evkeyval *kv = evhttp_request_get_input_headers(evreq)->tqh_first;
	const char *te = NULL, *cl = NULL;
	unsigned n_te = 0, n_cl = 0;
	for (; kv != NULL; kv = kv->next.tqe_next) {
		if (strcasecmp(kv->key, "Transfer-Encoding") == 0)
			te = kv->value, n_te++;
		else if (strcasecmp(kv->key, "Content-Length") == 0)
			cl = kv->value, n_cl++;
	}
	if (n_te > 0)
		return n_te == 1 && n_cl == 0 && strcasecmp(te, "chunked") == 0;
	return n_cl == 0 || (n_cl == 1 && cl[0] != '\0' && strspn(cl, "0123456789") == strlen(cl));
}

/* evhttp_set_gencb: a complete request has arrived. */
void hsm_http_request_cb(struct evhttp_request *evreq, void *arg)
{
	hsm_http_worker *w = arg;
	hsm_http_conn *conn = hsm_http_conn_of(w, evreq);
	hsm_http_req *req = conn != NULL ? hsm_http_req_get(w) : NULL;
	if (req == NULL) {
		evhttp_send_error(evreq, HTTP_SERVUNAVAIL, NULL); /* untracked or out of memory */
		return;
	}
	/*
	 * Replies completed by another thread while this loop pass ran (the audit
	 * writer) go out now rather than after the pass: a pass of several RSA
	 * signatures lasts a millisecond.  Safe here: they belong to other
	 * connections, whose evhttp state this callback does not hold.
	 */
	if (atomic_load_explicit(&w->done, memory_order_relaxed) != NULL)
		hsm_http_worker_drain(w, true);
	hsm_http_conn_handling(conn);
	req->conn = conn;
	evhttp_request_set_on_complete_cb(evreq, hsm_http_conn_sent, conn);
	const char *method = method_name(evhttp_request_get_command(evreq));
	bool ok = fill_req(req, evreq, method != NULL ? method : "");
	req->state = REQ_HANDLER;
	hsm_http_inflight_add(w, 1);
	if (!ok) {
		hsm_http_respond(req, 500, NULL, NULL, 0, 0, NULL);
	} else if (!framing_ok(evreq)) {
		static const char bad[] = "{\"message\":\"Ambiguous message framing\"}";
		req->close = true;
		hsm_http_respond(req, 400, "application/json", bad, sizeof(bad) - 1, 0, NULL);
	} else if (method == NULL) {
		/* RFC 9110 section 15.5.6: 405 lists the methods that are allowed. */
		static const hsm_http_header allow = {"Allow", "GET, POST, HEAD"};
		hsm_http_respond(req, 405, "application/json", not_allowed_body,
		                 sizeof(not_allowed_body) - 1, 1, &allow);
	} else {
		w->srv->handler(req, w->srv->arg);
	}
}

/* ---- accessors -------------------------------------------------------------- */

const char *hsm_http_req_method(const hsm_http_req *req) { return req->method; }
const char *hsm_http_req_path(const hsm_http_req *req) { return req->path; }
const char *hsm_http_req_query(const hsm_http_req *req) { return req->query; }
const char *hsm_http_req_id(const hsm_http_req *req) { return req->id; }
uint64_t hsm_http_req_start_ns(const hsm_http_req *req) { return req->start_ns; }
bool hsm_http_req_is_tls(const hsm_http_req *req) { return req->conn->tls; }

const char *hsm_http_req_client_subject(const hsm_http_req *req)
{
	return req->conn->client_subject;
}

const char *hsm_http_req_header(const hsm_http_req *req, const char *name)
{
	HSM_ASSERT(name != NULL);
	return evhttp_find_header(evhttp_request_get_input_headers(req->evreq), name);
}

bool hsm_http_req_next_header(const hsm_http_req *req, hsm_http_header_iter *it, const char **name,
                              const char **value)
{
	const struct evkeyval *kv;
	if (!it->started_) {
		kv = evhttp_request_get_input_headers(req->evreq)->tqh_first;
		it->started_ = true;
	} else {
		kv = it->next_;
	}
	if (kv == NULL)
		return false;
	*name = kv->key;
	*value = kv->value;
	it->next_ = kv->next.tqe_next;
	return true;
}

const uint8_t *hsm_http_req_body(const hsm_http_req *req, size_t *len)
{
	*len = req->body_len;
	return req->body;
}

const char *hsm_http_req_remote_addr(const hsm_http_req *req) { return req->remote_addr; }
uint16_t hsm_http_req_remote_port(const hsm_http_req *req) { return req->remote_port; }
