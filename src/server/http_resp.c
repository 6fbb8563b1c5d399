/*
 * http_resp.c - hsm_http_respond() and the way a response gets back to the
 * worker that owns the connection.
 *
 * hsm_http_respond builds the response as it goes on the wire (status line,
 * header fields, body) in the request's own buffer, on whatever thread calls
 * it, so the worker only has to write it: one write(2) or one TLS record for
 * a KMS-sized answer.  On the worker's own thread (the handler answered at
 * once) the request goes on the worker's local list, written once the handler
 * has returned.  From any other thread the request is pushed on the worker's
 * completion stack (lock-free: a compare-and-swap push; the worker takes the
 * whole stack with one exchange) and only the push that finds the stack empty
 * writes the worker's eventfd, so a batch of completions costs one wakeup; a
 * thread completing many requests at once can hold those writes until its
 * batch is done (hsm_http_hold_wakeups).  Connections are only ever touched on
 * their worker.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <time.h>

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

const char hsm_http_bare_500[] = "HTTP/1.1 500 Internal Server Error\r\n"
                                "Content-Length: 0\r\nConnection: close\r\n\r\n";
const size_t hsm_http_bare_500_len = sizeof(hsm_http_bare_500) - 1;

/* RFC 9110 section 15: the reason phrase is informative; clients go by the code. */
static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return status < 300 ? "Success" : status < 500 ? "Client Error" : "Server Error";
	}
}

/* The Date field (RFC 9110 section 5.6.7, IMF-fixdate), rebuilt once a second per thread. */
static const char *date_now(void)
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	static _Thread_local int64_t sec = -1;
	static _Thread_local char text[32];
	time_t now = time(NULL);
	if ((int64_t)now != sec) {
		struct tm tm;
		gmtime_r(&now, &tm);
		snprintf(text, sizeof(text), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
		         tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		         tm.tm_sec);
		sec = (int64_t)now;
	}
	return text;
}

static hsm_result put_field(hsm_buf *b, const char *name, const char *value)
{
	HSM_GUARD(hsm_buf_put_str(b, name));
	HSM_GUARD(hsm_buf_put(b, ": ", 2));
	HSM_GUARD(hsm_buf_put_str(b, value));
	return hsm_buf_put(b, "\r\n", 2);
}

/* The framework's fields: type, length, date, request id, persistence. */
static hsm_result put_fixed(hsm_http_req *req, int status, const char *ctype, size_t len)
{
	hsm_buf *out = &req->out;
	char num[24];
	hsm_sb b;
	hsm_sb_init(&b, num, sizeof(num));
	hsm_sb_add(&b, "HTTP/1.1 ");
	hsm_sb_u64(&b, (uint64_t)status);
	hsm_sb_add(&b, " ");
	HSM_GUARD(hsm_buf_put_str(out, num));
	HSM_GUARD(hsm_buf_put_str(out, reason(status)));
	HSM_GUARD(hsm_buf_put(out, "\r\n", 2));
	/* A 204 has no content, so nothing for a Content-Type to describe. */
	if (status != 204)
		HSM_GUARD(put_field(out, "Content-Type", ctype));
	if (status != 204 && status != 304) {
		hsm_sb_init(&b, num, sizeof(num));
		hsm_sb_u64(&b, len);
		HSM_GUARD(put_field(out, "Content-Length", num));
	}
	HSM_GUARD(put_field(out, "Date", date_now()));
	HSM_GUARD(put_field(out, "x-amzn-RequestId", req->id));
	if (req->close)
		return put_field(out, "Connection", "close");
	if (req->head.minor == 0)
		return put_field(out, "Connection", "keep-alive"); /* RFC 9112 section 9.3 */
	return HSM_SUCCESS;
}

/* Builds the whole response into req->out. */
static hsm_result build(hsm_http_req *req, int status, const char *ctype, const void *body,
                        size_t len, size_t n_headers, const hsm_http_header *headers)
{
	hsm_buf *out = &req->out;
	if (ctype == NULL || !hsm_http_is_field_value(ctype)) {
		if (ctype != NULL)
			hsm_warn("request %s: invalid Content-Type replaced", req->id);
		ctype = DEFAULT_CONTENT_TYPE;
	}
	bool has_body = !req->is_head && status != 204 && status != 304;
	/* Room for everything first: growing after the body is in would copy it. */
	size_t need = 256 + strlen(ctype) + (has_body ? len : 0);
	for (size_t i = 0; i < n_headers; i++) {
		HSM_ASSERT(headers[i].name != NULL && headers[i].value != NULL);
		need += strlen(headers[i].name) + strlen(headers[i].value) + 4;
	}
	HSM_GUARD(hsm_buf_reserve(out, need));
	HSM_GUARD(put_fixed(req, status, ctype, len));
	for (size_t i = 0; i < n_headers; i++) {
		const char *name = headers[i].name, *value = headers[i].value;
		if (!hsm_http_is_token(name) || !hsm_http_is_field_value(value) || is_reserved(name)) {
			hsm_warn("request %s: response header %zu dropped (invalid or reserved)", req->id,
			         i);
			continue;
		}
		HSM_GUARD(put_field(out, name, value));
	}
	HSM_GUARD(hsm_buf_put(out, "\r\n", 2));
	return has_body ? hsm_buf_put(out, body, len) : HSM_SUCCESS;
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
	hsm_http_worker *w = req->w;
	if (atomic_load_explicit(&w->srv->stopping, memory_order_relaxed))
		req->close = true; /* while the server stops, responses end their connection */
	if (hsm_failed(build(req, status, content_type, body, len, n_headers, headers))) {
		hsm_buf_clear(&req->out);
		req->failed = true;
	}
	req->state = REQ_QUEUED;
	if (current_worker != w) {
		push(w, req);
		return;
	}
	/* Answered on the worker, inside its handler: written once the handler returns. */
	req->next = NULL;
	if (w->local_tail != NULL)
		w->local_tail->next = req;
	else
		w->local_head = req;
	w->local_tail = req;
}

void hsm_http_flush_local(hsm_http_worker *w)
{
	while (w->local_head != NULL) {
		hsm_http_req *req = w->local_head;
		w->local_head = req->next;
		if (w->local_head == NULL)
			w->local_tail = NULL;
		req->next = NULL;
		hsm_http_conn_deliver(req, false);
	}
}

/* Releases requests whose worker has stopped. */
static void release_list(hsm_http_worker *w, hsm_http_req *list)
{
	while (list != NULL) {
		hsm_http_req *req = list;
		list = req->next;
		hsm_http_conn *conn = req->conn;
		hsm_http_inflight_add(w, -1);
		hsm_http_req_put(req);
		if (conn != NULL && conn->closed) {
			conn->req = NULL;
			hsm_http_conn_free_closed(conn);
		}
	}
}

void hsm_http_at_pass_end(void (*fn)(void *), void *arg)
{
	hsm_http_worker *w = current_worker;
	HSM_ASSERT(fn != NULL);
	if (w == NULL)
		fn(arg);
	else
		hsm_calls_add(&w->pass_end, fn, arg);
}

void hsm_http_run_pass_end(hsm_http_worker *w)
{
	hsm_calls_run(&w->pass_end);
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
	if (!send) {
		release_list(w, fifo);
		list = w->local_head;
		w->local_head = w->local_tail = NULL;
		release_list(w, list);
		return;
	}
	while (fifo != NULL) {
		hsm_http_req *req = fifo;
		fifo = req->next;
		req->next = NULL;
		hsm_http_conn_deliver(req, true);
	}
}
