/*
 * http_read.c - the input side of a connection: its buffer, reading into it,
 * and turning the bytes into a request (http_parse.c) within the limits.
 *
 * The buffer holds the bytes read and not yet consumed.  A request's head and
 * body are parsed in place, and the request handed to the handler points into
 * it, so it is neither grown nor read into until that request is answered
 * (http_conn.c does not read a connection in CONN_HANDLING).  Most requests
 * fit a pooled HSM_HTTP_IN_BUF buffer; larger ones get a buffer of their own,
 * grown (never beyond what the limits allow) by allocating, copying and wiping
 * the old one, since the bytes may be a plaintext or a custodian's share.
 * Consumed bytes are wiped at once, and an idle connection holds no buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/http_internal.h"

/* Chunked encoding may take more room than the body it carries; this much more. */
#define CHUNKED_SLACK ((size_t)64 << 10)

static const char continue_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

void hsm_http_in_release(hsm_http_conn *c)
{
	hsm_http_worker *w = c->w;
	if (c->in == NULL)
		return;
	explicit_bzero(c->in, c->in_len); /* memset's speed; the compiler may not drop it */
	if (c->in_cap > HSM_HTTP_IN_BUF)
		atomic_fetch_sub_explicit(&w->srv->buffered, c->in_cap, memory_order_relaxed);
	if (c->in_cap == HSM_HTTP_IN_BUF && w->n_bufs < HSM_HTTP_BUF_POOL_MAX)
		w->bufs[w->n_bufs++] = c->in;
	else
		free(c->in);
	c->in = NULL;
	c->in_len = c->in_cap = 0;
}

void hsm_http_in_consume(hsm_http_conn *c, size_t n)
{
	HSM_ASSERT(n <= c->in_len);
	size_t rest = c->in_len - n;
	if (n > 0) {
		memmove(c->in, c->in + n, rest);
		explicit_bzero(c->in + rest, n); /* what is left beyond the moved bytes */
	}
	c->in_len = rest;
	c->scan = 0;
	c->head_len = 0;
	c->consumed = 0;
	c->lead = 0;
	c->continue_sent = false;
	hsm_http_chunked_init(&c->chunked);
}

/* The most input the current request may need buffered at once. */
static size_t in_limit(const hsm_http_conn *c)
{
	const hsm_http_config *cfg = &c->w->srv->cfg;
	if (c->head_len == 0)
		return cfg->max_header_bytes + 1; /* one more byte tells "too large" apart */
	if (c->req->head.body == HSM_HTTP_BODY_CHUNKED)
		return c->head_len + 2 * cfg->max_body_bytes + CHUNKED_SLACK;
	return c->head_len + (size_t)c->req->head.content_length;
}

/* The parsed head's strings moved with the buffer from old to now (those in it). */
static const char *moved(const char *s, const uint8_t *old, size_t len, const uint8_t *now)
{
	uintptr_t a = (uintptr_t)s, o = (uintptr_t)old;
	return a >= o && a < o + len ? (const char *)now + (a - o) : s;
}

static void rebase_head(hsm_http_head *h, const uint8_t *old, size_t len, const uint8_t *now)
{
	h->method = moved(h->method, old, len, now);
	h->path = moved(h->path, old, len, now);
	h->query = moved(h->query, old, len, now);
	h->authority = moved(h->authority, old, len, now);
	for (size_t i = 0; i < h->n_fields; i++) {
		h->fields[i].name = moved(h->fields[i].name, old, len, now);
		h->fields[i].value = moved(h->fields[i].value, old, len, now);
	}
}

typedef enum in_space {
	IN_ROOM,  /* there is room to read into */
	IN_LIMIT, /* the request cannot fit its limits */
	IN_BUSY,  /* the server holds too much input already (max_buffered_bytes) */
	IN_NOMEM, /* no memory for a buffer: the server's failing, not the request's */
} in_space;

/* Makes room to read into. */
static in_space in_room(hsm_http_conn *c)
{
	hsm_http_worker *w = c->w;
	if (c->in == NULL) {
		c->in = w->n_bufs > 0 ? w->bufs[--w->n_bufs] : malloc(HSM_HTTP_IN_BUF);
		c->in_cap = c->in != NULL ? HSM_HTTP_IN_BUF : 0;
		return c->in != NULL ? IN_ROOM : IN_NOMEM;
	}
	if (c->in_len < c->in_cap)
		return IN_ROOM;
	size_t limit = in_limit(c);
	if (c->in_cap >= limit)
		return IN_LIMIT;
	size_t cap = c->in_cap * 2 > limit ? limit : c->in_cap * 2;
	if (cap < limit && limit - cap < HSM_HTTP_IN_BUF)
		cap = limit;
	/*
	 * Counted before it is taken, so that together connections stay within
	 * the budget; the buffer it replaces (released below) is not counted
	 * against it.
	 */
	size_t budget = w->srv->cfg.max_buffered_bytes;
	size_t old = c->in_cap > HSM_HTTP_IN_BUF ? c->in_cap : 0;
	size_t held = atomic_fetch_add_explicit(&w->srv->buffered, cap, memory_order_relaxed);
	if (held - old + cap > budget) {
		atomic_fetch_sub_explicit(&w->srv->buffered, cap, memory_order_relaxed);
		return IN_BUSY;
	}
	uint8_t *p = malloc(cap);
	if (p == NULL) {
		atomic_fetch_sub_explicit(&w->srv->buffered, cap, memory_order_relaxed);
		return IN_NOMEM;
	}
	memcpy(p, c->in, c->in_len);
	if (c->head_len > 0)
		rebase_head(&c->req->head, c->in, c->in_len, p); /* the body has yet to come */
	size_t len = c->in_len;
	hsm_http_in_release(c);
	c->in = p;
	c->in_len = len;
	c->in_cap = cap;
	return IN_ROOM;
}

/* RFC 9110 section 10.1.1: a client waiting for "100 Continue" before its body. */
static bool maybe_continue(hsm_http_conn *c)
{
	if (!c->req->head.expect_continue || c->continue_sent)
		return true;
	c->continue_sent = true;
	size_t n = 0;
	hsm_io io = hsm_http_conn_write(c, (const uint8_t *)continue_100, sizeof(continue_100) - 1, &n);
	/* 25 bytes on a socket with nothing queued: anything short is a broken connection. */
	if (io != HSM_IO_DONE || n != sizeof(continue_100) - 1) {
		hsm_http_conn_close(c);
		return false;
	}
	return true;
}

/* The __type of a refusal: the request's fault, or the server's for now (retry). */
static const char invalid[] = "ValidationException";
static const char unavailable[] = "ServiceUnavailableException";

/* Answers with an error and ends the connection afterwards.  True: c has changed state. */
bool hsm_http_conn_refuse(hsm_http_conn *c, int status, const char *type, const char *message)
{
	if (c->req == NULL) {
		c->req = hsm_http_req_get(c->w);
		if (c->req == NULL) {
			hsm_http_conn_close(c);
			return false;
		}
		c->req->conn = c;
	}
	c->consumed = c->in_len; /* the rest of the input is not read as requests */
	hsm_http_req_refuse(c, c->req, status, type, message);
	return true;
}

/* Its name inside this file. */
static bool refuse(hsm_http_conn *c, int status, const char *type, const char *message)
{
	return hsm_http_conn_refuse(c, status, type, message);
}

static bool refuse_parse(hsm_http_conn *c, hsm_http_parse r)
{
	switch (r) {
	case HSM_HTTP_PARSE_VERSION:
		return refuse(c, 505, invalid, "HTTP Version Not Supported");
	case HSM_HTTP_PARSE_FRAMING:
		return refuse(c, 400, invalid, "Ambiguous message framing");
	case HSM_HTTP_PARSE_TOO_LARGE:
		/* RFC 6585 section 5 */
		return refuse(c, 431, invalid, "Request Header Fields Too Large");
	case HSM_HTTP_PARSE_LENGTH_TOO_LARGE:
		return refuse(c, 413, invalid, "Request body too large");
	case HSM_HTTP_PARSE_HOST:
		return refuse(c, 400, invalid,
		              "Bad Host: one host or host:port is needed, in the Host header or an "
		              "absolute target");
	default:
		return refuse(c, 400, invalid, "Malformed request");
	}
}

/* Parses the head once it is all in.  0: need more; 1: parsed; -1: refused or closed. */
static int read_head(hsm_http_conn *c, bool *changed)
{
	const hsm_http_config *cfg = &c->w->srv->cfg;
	size_t end = hsm_http_head_end(c->in, c->in_len, &c->scan);
	if (end == 0 && hsm_http_head_start(c->in, c->in_len, &c->lead) == HSM_HTTP_PARSE_BAD) {
		/* Not HTTP (a TLS ClientHello, say): said now, not after read_timeout. */
		*changed = refuse(c, 400, invalid, "Malformed request");
		return -1;
	}
	if (end == 0 && c->in_len <= cfg->max_header_bytes)
		return 0;
	if (end == 0 || end > cfg->max_header_bytes) {
		*changed = refuse(c, 431, invalid, "Request Header Fields Too Large");
		return -1;
	}
	c->req = hsm_http_req_get(c->w);
	if (c->req == NULL) {
		hsm_http_conn_close(c);
		return -1;
	}
	c->req->conn = c;
	c->req->state = REQ_READING;
	hsm_http_parse r = hsm_http_parse_head(c->in, end, &c->req->head);
	c->head_len = end;
	if (r != HSM_HTTP_PARSE_OK) {
		*changed = refuse_parse(c, r);
		return -1;
	}
	if (c->req->head.body == HSM_HTTP_BODY_LENGTH &&
	    c->req->head.content_length > cfg->max_body_bytes) {
		/* Refused on the Content-Length alone, before the body is sent. */
		*changed = refuse(c, 413, invalid, "Request body too large");
		return -1;
	}
	hsm_http_chunked_init(&c->chunked);
	return 1;
}

/* The body, once complete.  0: need more; 1: complete; -1: refused or closed. */
static int read_body(hsm_http_conn *c, bool *changed)
{
	hsm_http_req *req = c->req;
	uint8_t *body = c->in + c->head_len;
	size_t have = c->in_len - c->head_len;
	if (req->head.body == HSM_HTTP_BODY_NONE) {
		req->body = (const uint8_t *)"";
		req->body_len = 0;
		c->consumed = c->head_len;
		return 1;
	}
	if (req->head.body == HSM_HTTP_BODY_LENGTH) {
		if (have < req->head.content_length)
			return maybe_continue(c) ? 0 : -1;
		req->body = body;
		req->body_len = (size_t)req->head.content_length;
		c->consumed = c->head_len + req->body_len;
		return 1;
	}
	hsm_http_parse r = hsm_http_chunked_step(&c->chunked, body, have, c->w->srv->cfg.max_body_bytes);
	if (r == HSM_HTTP_PARSE_PARTIAL)
		return maybe_continue(c) ? 0 : -1;
	if (r != HSM_HTTP_PARSE_OK) {
		*changed = r == HSM_HTTP_PARSE_TOO_LARGE
		               ? refuse(c, 413, invalid, "Request body too large")
		               : refuse(c, 400, invalid, "Malformed chunked body");
		return -1;
	}
	req->body = body;
	req->body_len = c->chunked.out;
	c->consumed = c->head_len + c->chunked.pos;
	return 1;
}

/*
 * How much to read now: what the request is known to need still, else one
 * ordinary buffer's worth.  A buffer grown for a large request keeps its size
 * for the requests after it, and each answered request moves the bytes
 * behind it to the front (hsm_http_in_consume): read far ahead into such a
 * buffer, a stream of small pipelined requests would cost a move of up to
 * megabytes each, quadratic in what one client sends.
 */
static size_t read_room(const hsm_http_conn *c)
{
	size_t room = c->in_cap - c->in_len, want = HSM_HTTP_IN_BUF;
	if (c->head_len > 0 && c->req->head.body == HSM_HTTP_BODY_LENGTH) {
		size_t end = c->head_len + (size_t)c->req->head.content_length;
		if (end > c->in_len && end - c->in_len > want)
			want = end - c->in_len;
	}
	return room < want ? room : want;
}

/* What is buffered, as far as it goes.  True: a request was dispatched or refused. */
static bool try_request(hsm_http_conn *c, bool *stop)
{
	bool changed = false;
	*stop = false;
	if (c->head_len == 0) {
		int r = read_head(c, &changed);
		if (r <= 0) {
			*stop = r < 0 && !changed;
			return changed;
		}
	}
	int r = read_body(c, &changed);
	if (r <= 0) {
		*stop = r < 0 && !changed;
		return changed;
	}
	hsm_http_req_dispatch(c, c->req);
	return true;
}

bool hsm_http_conn_input(hsm_http_conn *c)
{
	bool stop = false;
	if (c->in_len > 0) {
		if (try_request(c, &stop))
			return true;
		if (stop || c->closed)
			return false;
	}
	if (!c->rd_ready)
		return false;
	in_space room = in_room(c);
	if (room == IN_BUSY)
		return refuse(c, 503, unavailable,
		              "Too much request data is being received; retry later");
	if (room == IN_NOMEM)
		return refuse(c, 503, unavailable, "Out of memory; retry later");
	if (room != IN_ROOM) {
		if (c->head_len == 0)
			return refuse(c, 431, invalid, "Request Header Fields Too Large");
		/* A chunked body read whole, framing and all: the framing may double it, no more. */
		if (c->req->head.body == HSM_HTTP_BODY_CHUNKED)
			return refuse(c, 413, invalid,
			              "Chunked request too large: its chunks and their framing "
			              "may take at most twice max_body_bytes, plus 64 KiB");
		return refuse(c, 413, invalid, "Request body too large");
	}
	size_t n = 0;
	hsm_io io = hsm_http_conn_read(c, c->in + c->in_len, read_room(c), &n);
	if (io == HSM_IO_WAIT) {
		if (c->in_len == 0 && c->state == CONN_IDLE)
			hsm_http_in_release(c);
		return false;
	}
	if (io != HSM_IO_DONE) {
		hsm_http_conn_close(c); /* end of input, mid-request or between requests */
		return false;
	}
	if (c->state == CONN_IDLE) {
		/* The first byte of a request: its read deadline starts now. */
		c->state = CONN_READING;
		c->deadline_ns = hsm_mono_ns() + (uint64_t)c->w->srv->cfg.read_timeout_ms * 1000000ULL;
	}
	c->in_len += n;
	return true;
}
