/*
 * http_resp.c - hsm_http_respond() and the way a response gets back to the
 * worker that owns the connection.
 *
 * On the worker's own thread (the handler answered at once, inside evhttp's
 * request callback) the request goes on the worker's local list, sent in the
 * same loop pass once that callback has returned.  From any other thread the
 * request is pushed on the
 * worker's completion stack (lock-free: a compare-and-swap push; the worker
 * takes the whole stack with one exchange) and only the push that finds the
 * stack empty writes the worker's eventfd, so a batch of completions costs one
 * wakeup; a thread completing many requests at once can hold those writes
 * until its batch is done (hsm_http_hold_wakeups).  evhttp objects are only
 * ever touched on their worker.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common/log.h"
#include "common/util.h"
#include "server/http_internal.h"

#define DEFAULT_CONTENT_TYPE "application/octet-stream"

static _Thread_local hsm_http_worker *current_worker;

void hsm_http_set_current_worker(hsm_http_worker *w)
{
	current_worker = w;
}

hsm_http_worker *hsm_http_current_worker(void)
{
	return current_worker;
}

void hsm_http_inflight_add(hsm_http_worker *w, int delta)
{
	/* One writer (the worker, or the freeing thread once it has joined). */
	size_t v = atomic_load_explicit(&w->inflight, memory_order_relaxed);
	atomic_store_explicit(&w->inflight, delta > 0 ? v + 1 : v - 1, memory_order_relaxed);
}

/* RFC 9110 section 5.6.2: a header name is a token. */
static bool is_token(const char *s)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
		if (!alnum && strchr(extra, c) == NULL)
			return false;
	}
	return true;
}

/* RFC 9110 section 5.5: field values hold visible characters, SP and HTAB. */
static bool is_field_value(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return false;
	}
	return true;
}

/* Headers the framework sets itself; a handler's copy would contradict them. */
static bool is_reserved(const char *name)
{
	static const char *const reserved[] = {"Content-Type", "Content-Length", "Date",
	                                       "x-amzn-RequestId", "Connection",
	                                       "Transfer-Encoding"};
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strcasecmp(name, reserved[i]) == 0)
			return true;
	return false;
}

static hsm_result put_cstr(hsm_buf *b, const char *s)
{
	return hsm_buf_put(b, s, strlen(s) + 1);
}

/* Copies the response into req->out: content type, header pairs, body. */
static hsm_result stash(hsm_http_req *req, const char *ctype, const void *body, size_t len,
                        size_t n_headers, const hsm_http_header *headers)
{
	hsm_buf *out = &req->out;
	if (ctype == NULL || !is_field_value(ctype)) {
		if (ctype != NULL)
			hsm_warn("request %s: invalid Content-Type replaced", req->id);
		ctype = DEFAULT_CONTENT_TYPE;
	}
	/* Room for everything first: growing (realloc) after the body is in
	 * would leave an unwiped copy in freed memory. */
	size_t need = strlen(ctype) + 1 + len;
	for (size_t i = 0; i < n_headers; i++) {
		HSM_ASSERT(headers[i].name != NULL && headers[i].value != NULL);
		need += strlen(headers[i].name) + strlen(headers[i].value) + 2;
	}
	HSM_GUARD(hsm_buf_reserve(out, need));
	HSM_GUARD(put_cstr(out, ctype));
	for (size_t i = 0; i < n_headers; i++) {
		const char *name = headers[i].name, *value = headers[i].value;
		if (!is_token(name) || !is_field_value(value) || is_reserved(name)) {
			hsm_warn("request %s: response header %zu dropped (invalid or reserved)", req->id,
			         i);
			continue;
		}
		HSM_GUARD(put_cstr(out, name));
		HSM_GUARD(put_cstr(out, value));
		req->n_extra++;
	}
	req->resp_body_off = out->len;
	req->resp_body_len = len;
	return hsm_buf_put(out, body, len);
}

static void wake(hsm_http_worker *w)
{
	uint64_t one = 1;
	ssize_t n = write(w->wake_fd, &one, sizeof(one));
	(void)n; /* only fails when the counter is already non-zero: a wakeup is pending */
}

/*
 * Wake-ups held by this thread (hsm_http_hold_wakeups).  A push that finds
 * the stack empty owes its worker the wake-up; while held it is noted here
 * and paid at release.  Other threads pushing meanwhile see a non-empty stack
 * and rely on that, which is why release must come without delay.
 */
#define HELD_MAX 16
static _Thread_local struct {
	bool on;
	size_t n;
	hsm_http_worker *w[HELD_MAX];
} held;

void hsm_http_hold_wakeups(void)
{
	HSM_ASSERT(!held.on);
	held.on = true;
	held.n = 0;
}

void hsm_http_release_wakeups(void)
{
	HSM_ASSERT(held.on);
	held.on = false;
	for (size_t i = 0; i < held.n; i++)
		wake(held.w[i]);
	held.n = 0;
}

/* Notes that w is owed a wake-up; false when it must be woken now instead. */
static bool hold_wake(hsm_http_worker *w)
{
	if (!held.on)
		return false;
	for (size_t i = 0; i < held.n; i++)
		if (held.w[i] == w)
			return true;
	if (held.n == HELD_MAX)
		return false;
	held.w[held.n++] = w;
	return true;
}

static void push(hsm_http_worker *w, hsm_http_req *req)
{
	hsm_http_req *head = atomic_load_explicit(&w->done, memory_order_relaxed);
	do {
		req->next = head;
	} while (!atomic_compare_exchange_weak_explicit(&w->done, &head, req, memory_order_release,
	                                                memory_order_relaxed));
	if (head == NULL && !hold_wake(w))
		wake(w);
}

void hsm_http_respond(hsm_http_req *req, int status, const char *content_type, const void *body,
                      size_t len, size_t n_headers, const hsm_http_header *headers)
{
	HSM_ASSERT(req != NULL && req->state == REQ_HANDLER);
	HSM_ASSERT(status >= 200 && status <= 599);
	HSM_ASSERT(len == 0 || body != NULL);
	HSM_ASSERT(n_headers == 0 || headers != NULL);
	req->status = status;
	req->n_extra = 0;
	if (hsm_failed(stash(req, content_type, body, len, n_headers, headers))) {
		hsm_buf_clear(&req->out);
		req->failed = true;
	}
	hsm_http_worker *w = req->w;
	req->state = REQ_QUEUED;
	if (current_worker != w) {
		push(w, req);
		return;
	}
	/* Answered on the worker, inside evhttp's request callback: sent from
	 * local_ev once that callback has returned, so it can be written at once. */
	req->next = NULL;
	if (w->local_tail != NULL)
		w->local_tail->next = req;
	else
		w->local_head = req;
	w->local_tail = req;
	event_active(w->local_ev, EV_TIMEOUT, 0);
}

static void body_written(const void *data, size_t len, void *arg)
{
	(void)data, (void)len;
	hsm_http_req_put(arg);
}

static void add_header(struct evkeyvalq *h, const char *name, const char *value)
{
	/* Fails only when out of memory; the response then goes out without it. */
	(void)evhttp_add_header(h, name, value);
}

/* Adds the headers and the body; true when libevent now references req->out. */
static bool build(hsm_http_req *req, struct evhttp_request *evreq, int status)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(evreq);
	const char *p = (const char *)req->out.data;
	bool has_body = !req->failed && status != 204 && status != 304;
	size_t len = has_body ? req->resp_body_len : 0;
	char clen[24];
	add_header(h, "Content-Type", req->failed ? DEFAULT_CONTENT_TYPE : p);
	add_header(h, "x-amzn-RequestId", req->id);
	add_header(h, "Date", hsm_http_worker_date(req->w));
	if (status != 204 && status != 304) {
		hsm_sb b;
		hsm_sb_init(&b, clen, sizeof(clen));
		hsm_sb_u64(&b, len);
		add_header(h, "Content-Length", clen);
	}
	if (req->close || req->w->stopping)
		add_header(h, "Connection", "close");
	if (req->failed)
		return false;
	p += strlen(p) + 1;
	for (size_t i = 0; i < req->n_extra; i++) {
		const char *value = p + strlen(p) + 1;
		add_header(h, p, value);
		p = value + strlen(value) + 1;
	}
	if (req->head || len == 0)
		return false;
	return evbuffer_add_reference(evhttp_request_get_output_buffer(evreq),
	                              req->out.data + req->resp_body_off, len, body_written,
	                              req) == 0;
}

/* On the owning worker: hands the response to evhttp. */
static void finish(hsm_http_req *req)
{
	struct evhttp_request *evreq = req->evreq;
	hsm_http_inflight_add(req->w, -1);
	hsm_http_conn_hold(req->conn);
	int status = req->failed ? 500 : req->status;
	if (!req->failed && !req->head && req->resp_body_len > 0 && status != 204 && status != 304) {
		req->state = REQ_SENDING;
		if (!build(req, evreq, status)) {
			/* Could not reference the body: say so rather than send a short answer. */
			hsm_http_req_put(req);
			evhttp_send_error(evreq, HTTP_INTERNAL, NULL);
			return;
		}
		/* From here req belongs to libevent until body_written(). */
		evhttp_send_reply(evreq, status, NULL, NULL);
		return;
	}
	(void)build(req, evreq, status);
	hsm_http_req_put(req);
	evhttp_send_reply(evreq, status, NULL, NULL);
}

/* Sends (or, when the worker is gone, releases) a list of answered requests. */
static void send_list(hsm_http_worker *w, hsm_http_req *fifo, bool send)
{
	while (fifo != NULL) {
		hsm_http_req *req = fifo;
		fifo = req->next;
		req->state = REQ_HANDLER;
		if (send) {
			hsm_http_conn *conn = req->conn;
			finish(req);
			hsm_http_conn_write_now(conn);
		} else {
			hsm_http_inflight_add(w, -1);
			hsm_http_req_put(req);
		}
	}
}

void hsm_http_at_pass_end(void (*fn)(void *), void *arg)
{
	hsm_http_worker *w = current_worker;
	HSM_ASSERT(fn != NULL);
	if (w != NULL) {
		for (size_t i = 0; i < w->n_pass_end; i++)
			if (w->pass_end[i].fn == fn && w->pass_end[i].arg == arg)
				return;
	}
	if (w == NULL || w->n_pass_end == HSM_HTTP_PASS_END_MAX) {
		fn(arg);
		return;
	}
	w->pass_end[w->n_pass_end].fn = fn;
	w->pass_end[w->n_pass_end].arg = arg;
	w->n_pass_end++;
	/* Active events run in order: this one after every socket made ready with it. */
	event_active(w->local_ev, EV_TIMEOUT, 0);
}

void hsm_http_local_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	hsm_http_worker *w = arg;
	hsm_http_req *list = w->local_head;
	w->local_head = w->local_tail = NULL;
	send_list(w, list, true);
	size_t n = w->n_pass_end;
	w->n_pass_end = 0;
	for (size_t i = 0; i < n; i++)
		w->pass_end[i].fn(w->pass_end[i].arg);
}

void hsm_http_worker_drain(hsm_http_worker *w, bool send)
{
	hsm_http_req *list = atomic_exchange_explicit(&w->done, NULL, memory_order_acquire);
	hsm_http_req *fifo = NULL;
	while (list != NULL) { /* the stack is newest first; answer in completion order */
		hsm_http_req *next = list->next;
		list->next = fifo;
		fifo = list;
		list = next;
	}
	send_list(w, fifo, send);
	if (!send) {
		list = w->local_head;
		w->local_head = w->local_tail = NULL;
		send_list(w, list, false);
	}
}
