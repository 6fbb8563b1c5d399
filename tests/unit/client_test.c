/*
 * client_test.c - the client of a running hsmd (client/client.h) against a
 * scripted server: how it reads answers (a length, chunks, to the end of the
 * stream, none at all), what it refuses to take for one, how it parses
 * endpoints (IPv6 in brackets, the scheme's default port), which of them may
 * carry secrets, when it connects again and when it moves on to the next node.
 *
 * hsmd itself always answers with a Content-Length; the other framings come
 * from what stands between (a proxy) and from the servers of public documents
 * (a JWK Set fetched by `hsmctl jwt verify --jwks URL`).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/client.h"

#define ANSWERS_MAX 4

/* One scripted server: it answers requests in order, one answer each. */
typedef struct fake {
	int lfd;
	unsigned port;
	pthread_t thread;
	const char *answers[ANSWERS_MAX];
	size_t lens[ANSWERS_MAX]; /* 0: up to the answer's NUL */
	bool close_after[ANSWERS_MAX]; /* close the connection once this answer is sent */
	size_t n_answers;
	bool trickle;        /* send the answers one byte at a time */
	int connections;     /* accepted */
	int requests;        /* read */
	char last_head[4096]; /* the last request's head */
} fake;

static bool send_all(int fd, const char *p, size_t n, bool trickle)
{
	while (n > 0) {
		ssize_t w = send(fd, p, trickle ? 1 : n, MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

/* Reads one request (head and Content-Length body); false at the end of the stream. */
static bool read_request(fake *f, int fd)
{
	char buf[8192];
	size_t n = 0;
	char *end = NULL;
	while (end == NULL) {
		if (n + 1 >= sizeof(buf))
			return false;
		ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
		if (r <= 0)
			return false;
		n += (size_t)r;
		buf[n] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	size_t head = (size_t)(end + 4 - buf);
	snprintf(f->last_head, sizeof(f->last_head), "%.*s", (int)head, buf);
	const char *cl = strstr(f->last_head, "Content-Length: ");
	size_t body = cl != NULL ? strtoul(cl + 16, NULL, 10) : 0;
	while (n < head + body) {
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r <= 0)
			return false;
		n += (size_t)r;
	}
	return true;
}

static void *serve(void *arg)
{
	fake *f = arg;
	size_t next = 0;
	while (next < f->n_answers) {
		int fd = accept(f->lfd, NULL, NULL);
		if (fd < 0)
			break;
		f->connections++;
		while (next < f->n_answers && read_request(f, fd)) {
			f->requests++;
			const char *a = f->answers[next];
			size_t n = f->lens[next] != 0 ? f->lens[next] : strlen(a);
			bool closing = f->close_after[next++];
			if (!send_all(fd, a, n, f->trickle) || closing)
				break;
		}
		close(fd);
	}
	return NULL;
}

/* Listens on loopback (IPv6 if v6) at port (0: any free one); false if it cannot. */
static bool fake_listen(fake *f, bool v6, unsigned port)
{
	f->lfd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->lfd < 0)
		return false;
	int one = 1;
	setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t len;
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons((uint16_t)port);
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons((uint16_t)port);
		len = sizeof(*a);
	}
	if (bind(f->lfd, (struct sockaddr *)&ss, len) != 0 || listen(f->lfd, 8) != 0 ||
	    getsockname(f->lfd, (struct sockaddr *)&ss, &len) != 0) {
		close(f->lfd);
		f->lfd = -1;
		return false;
	}
	f->port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
	                   : ((struct sockaddr_in *)&ss)->sin_port);
	return true;
}

static void fake_start(fake *f)
{
	assert_int_equal(pthread_create(&f->thread, NULL, serve, f), 0);
}

/* Waits for the server to finish its script (or, if it is waiting still, stops it). */
static void fake_stop(fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->thread, NULL);
	close(f->lfd);
}

/* A fake on 127.0.0.1 with the answers given (NULL-terminated), started. */
static void fake_up(fake *f, ...)
{
	memset(f, 0, sizeof(*f));
	assert_true(fake_listen(f, false, 0));
	va_list ap;
	va_start(ap, f);
	for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
		assert_true(f->n_answers < ANSWERS_MAX);
		f->answers[f->n_answers++] = a;
	}
	va_end(ap);
}

static hsm_client client_of(char *endpoint, size_t cap, const fake *f)
{
	snprintf(endpoint, cap, "http://127.0.0.1:%u", f->port);
	hsm_client c = {.endpoints = endpoint, .timeout_s = 5};
	return c;
}

/* GETs /doc from f; the body (NUL-terminated) into out on success. */
static hsm_result get_doc(const fake *f, char *out, size_t cap)
{
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/doc", f->port);
	hsm_client c = {.timeout_s = 5};
	hsm_buf b = {0};
	hsm_result r = hsm_client_get(&c, url, &b);
	out[0] = '\0';
	if (hsm_ok(r))
		snprintf(out, cap, "%.*s", (int)b.len, (const char *)b.data);
	hsm_buf_free(&b);
	return r;
}

#define OK_HEAD "HTTP/1.1 200 OK\r\n"

/* Ends a test's exchange: the client's connection, its buffer, the fake's script. */
static void hang_up(hsm_client *c, hsm_buf *b, fake *f)
{
	hsm_client_close(c);
	hsm_buf_free(b);
	fake_stop(f);
}

/* An unsigned call whose answer the fake chose. */
static hsm_result list_keys(hsm_client *c, int *status, hsm_buf *b)
{
	return hsm_client_call(c, "TrentService.ListKeys", "{}", false, status, b);
}

static void test_content_length(void **state)
{
	(void)state;
	fake f;
	fake_up(&f, OK_HEAD "Content-Type: application/json\r\nContent-Length: 7  \r\n\r\n{\"a\":1}",
	        NULL);
	fake_start(&f);
	char body[64];
	assert_true(hsm_ok(get_doc(&f, body, sizeof(body))));
	assert_string_equal(body, "{\"a\":1}");
	fake_stop(&f);
	assert_non_null(strstr(f.last_head, "GET /doc HTTP/1.1\r\n"));
	char host[64];
	snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%u\r\n", f.port);
	assert_non_null(strstr(f.last_head, host));
}

static void test_chunked(void **state)
{
	(void)state;
	/* Sizes in either case, an extension, a trailer field; sent byte by byte, so that
	 * every line and chunk straddles the client's reads. */
	static const char answer[] = OK_HEAD "Transfer-Encoding: chunked\r\n\r\n"
	                                     "4\r\n{\"ke\r\n"
	                                     "A;name=value\r\ny\":\"value\"\r\n"
	                                     "1\r\n}\r\n"
	                                     "0\r\nX-Trailer: yes\r\n\r\n";
	fake f;
	fake_up(&f, answer, NULL);
	f.trickle = true;
	fake_start(&f);
	char body[64];
	assert_true(hsm_ok(get_doc(&f, body, sizeof(body))));
	assert_string_equal(body, "{\"key\":\"value\"}");
	fake_stop(&f);

	/* A chunked answer on a kept connection ends where its last chunk says: the next
	 * answer on it is read whole. */
	fake_up(&f, OK_HEAD "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
	        OK_HEAD "Content-Length: 4\r\n\r\n[1] ", NULL);
	fake_start(&f);
	char ep[64];
	hsm_client c = client_of(ep, sizeof(ep), &f);
	int status = 0;
	hsm_buf b = {0};
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	assert_int_equal(status, 200);
	assert_int_equal(b.len, 2);
	assert_memory_equal(b.data, "{}", 2);
	b.len = 0;
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, "[1] ", 4);
	hang_up(&c, &b, &f);
	assert_int_equal(f.connections, 1);
	assert_int_equal(f.requests, 2);
}

static void test_chunked_malformed(void **state)
{
	(void)state;
#define ANSWER(text) {text, sizeof(text) - 1}
	static const struct {
		const char *text;
		size_t len;
	} bad[] = {
	    /* no size */
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\n;ext\r\nab\r\n0\r\n\r\n"),
	    /* not hex */
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"),
	    /* junk after the size */
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\n2x\r\nab\r\n0\r\n\r\n"),
	    /* more data than the size said */
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"),
	    /* a size past the client's bound, or past any integer */
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\n7FFFFFFF\r\n"),
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\n10000000000000002\r\nab\r\n0\r\n\r\n"),
	    /* cut short: in a chunk, before the last chunk, in the trailer */
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\n9\r\nabc"),
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n"),
	    ANSWER(OK_HEAD "Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-Trailer: 1\r\n"),
	    /* a length cut short, a length that is not a number */
	    ANSWER(OK_HEAD "Content-Length: 10\r\n\r\nabc"),
	    ANSWER(OK_HEAD "Content-Length: 1x\r\n\r\nabc"),
	    /* not HTTP; a NUL in the head; a head that never ends */
	    ANSWER("SSH-2.0-OpenSSH_9.2\r\n\r\n"),
	    ANSWER("HTTP/1.1 200\0 OK\r\nContent-Length: 0\r\n\r\n"),
	    ANSWER(OK_HEAD "X-A: 1\r\n"),
	    /* interim answers without end */
	    ANSWER("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
	           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
	           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
	           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
	           "HTTP/1.1 100 Continue\r\n\r\n" OK_HEAD "Content-Length: 0\r\n\r\n"),
	};
#undef ANSWER
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fake f;
		memset(&f, 0, sizeof(f));
		assert_true(fake_listen(&f, false, 0));
		f.answers[0] = bad[i].text;
		f.lens[0] = bad[i].len;
		f.close_after[0] = true;
		f.n_answers = 1;
		fake_start(&f);
		char ep[64];
		hsm_client c = client_of(ep, sizeof(ep), &f);
		int status = 0;
		hsm_buf b = {0};
		assert_true(hsm_ok(hsm_buf_put(&b, "kept", 4)));
		hsm_result r = list_keys(&c, &status, &b);
		if (hsm_ok(r))
			fail_msg("answer %zu was taken (status %d, %zu bytes)", i, status, b.len);
		/* What the caller had in its buffer is all it has. */
		assert_int_equal(b.len, 4);
		assert_memory_equal(b.data, "kept", 4);
		hsm_client_close(&c);
		hsm_buf_free(&b);
		fake_stop(&f);
	}
}

static void test_body_to_end_of_stream(void **state)
{
	(void)state;
	fake f;
	fake_up(&f, OK_HEAD "Connection: close\r\n\r\nthe document, to the end", NULL);
	f.close_after[0] = true;
	fake_start(&f);
	char body[64];
	assert_true(hsm_ok(get_doc(&f, body, sizeof(body))));
	assert_string_equal(body, "the document, to the end");
	fake_stop(&f);

	/* Neither a length nor chunks on HTTP/1.0: the body ends with the stream, and the
	 * connection is not kept (the next request opens another). */
	fake_up(&f, "HTTP/1.0 200 OK\r\n\r\n{}", OK_HEAD "Content-Length: 2\r\n\r\n[]", NULL);
	f.close_after[0] = true;
	fake_start(&f);
	char ep[64];
	hsm_client c = client_of(ep, sizeof(ep), &f);
	int status = 0;
	hsm_buf b = {0};
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, "{}[]", 4);
	hang_up(&c, &b, &f);
	assert_int_equal(f.connections, 2);
}

static void test_answers_without_body(void **state)
{
	(void)state;
	/* A 204 and a 304 have no body whatever their fields say, and an interim 100 comes
	 * before the answer: none of them leaves the client waiting for bytes that never come
	 * (each would take the whole 5 s timeout and fail). */
	fake f;
	fake_up(&f, "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
	        "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
	        "HTTP/1.1 100 Continue\r\n\r\n" OK_HEAD "Content-Length: 2\r\n\r\n{}", NULL);
	fake_start(&f);
	char ep[64];
	hsm_client c = client_of(ep, sizeof(ep), &f);
	c.timeout_s = 5;
	int status = 0;
	hsm_buf b = {0};
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	assert_int_equal(status, 204);
	assert_int_equal(b.len, 0);
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	assert_int_equal(status, 304);
	assert_int_equal(b.len, 0);
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	assert_int_equal(status, 200);
	assert_int_equal(b.len, 2);
	hang_up(&c, &b, &f);
	assert_int_equal(f.connections, 1);
	assert_int_equal(f.requests, 3);
}

static void test_get_not_200(void **state)
{
	(void)state;
	fake f;
	fake_up(&f, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found", NULL);
	fake_start(&f);
	char body[64];
	hsm_result r = get_doc(&f, body, sizeof(body));
	assert_int_equal(r.err, HSM_ERR_IO);
	assert_non_null(strstr(hsm_last_error()->message, "answered HTTP 404"));
	fake_stop(&f);
}

static void test_reconnects_after_idle_close(void **state)
{
	(void)state;
	/* The server drops the kept connection after its first answer without saying so (an
	 * idle timeout): the next call fails before any byte of an answer and is sent again,
	 * once, on a new connection. */
	fake f;
	fake_up(&f, OK_HEAD "Content-Length: 2\r\n\r\n{}", OK_HEAD "Content-Length: 4\r\n\r\n{\"\"}",
	        NULL);
	f.close_after[0] = true;
	fake_start(&f);
	char ep[64];
	hsm_client c = client_of(ep, sizeof(ep), &f);
	int status = 0;
	hsm_buf b = {0};
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	usleep(50 * 1000); /* the close reaches the client's socket */
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	assert_int_equal(status, 200);
	assert_int_equal(b.len, 6);
	hang_up(&c, &b, &f);
	assert_int_equal(f.connections, 2);
	assert_int_equal(f.requests, 2);

	/* Cut off during an answer: not sent again (the server may have acted on it). */
	fake_up(&f, OK_HEAD "Content-Length: 2\r\n\r\n{}", OK_HEAD "Content-Length: 9\r\n\r\n{", NULL);
	f.close_after[1] = true;
	fake_start(&f);
	c = client_of(ep, sizeof(ep), &f);
	b = (hsm_buf){0};
	assert_true(hsm_ok(list_keys(&c, &status, &b)));
	hsm_result r = hsm_client_call(&c, "TrentService.CreateKey", "{}", false, &status, &b);
	assert_int_equal(r.err, HSM_ERR_IO);
	assert_non_null(strstr(hsm_last_error()->message, "cut short"));
	hang_up(&c, &b, &f);
	assert_int_equal(f.requests, 2);
}

static void test_sealed_node_passes_to_next(void **state)
{
	(void)state;
	static const char sealed[] =
	    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 73\r\n\r\n"
	    "{\"__type\":\"ServiceUnavailableException\",\"message\":\"hsmd is sealed now\"}  ";
	static const char busy[] =
	    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 72\r\n\r\n"
	    "{\"__type\":\"ServiceUnavailableException\",\"message\":\"audit unavailable\"}  ";
	fake a, b;
	fake_up(&a, sealed, busy, NULL);
	fake_up(&b, OK_HEAD "Content-Length: 2\r\n\r\n{}", NULL);
	fake_start(&a);
	fake_start(&b);
	char eps[128];
	snprintf(eps, sizeof(eps), "http://127.0.0.1:%u,http://127.0.0.1:%u", a.port, b.port);
	hsm_client c = {.endpoints = eps, .timeout_s = 5};
	int status = 0;
	hsm_buf out = {0};
	/* Sealed: refused before anything was done, so the next node takes it. */
	assert_true(hsm_ok(list_keys(&c, &status, &out)));
	assert_int_equal(status, 200);
	assert_int_equal(out.len, 2);
	/* Another 503 may follow a change that was made: it is the answer. */
	out.len = 0;
	assert_true(hsm_ok(list_keys(&c, &status, &out)));
	assert_int_equal(status, 503);
	assert_non_null(memmem(out.data, out.len, "audit unavailable", 17));
	hang_up(&c, &out, &a);
	fake_stop(&b);
	assert_int_equal(a.requests, 2);
	assert_int_equal(b.requests, 1);
}

static void test_ipv6_endpoint(void **state)
{
	(void)state;
	fake f;
	memset(&f, 0, sizeof(f));
	if (!fake_listen(&f, true, 0))
		skip(); /* no IPv6 loopback here: reported as skipped, not passed */
	f.answers[0] = OK_HEAD "Content-Length: 2\r\n\r\n{}";
	f.answers[1] = OK_HEAD "Content-Length: 2\r\n\r\n[]";
	f.n_answers = 2;
	fake_start(&f);
	char ep[64];
	snprintf(ep, sizeof(ep), "http://[::1]:%u", f.port);
	/* Signed: the Host the signature covers is the one sent, brackets and all. */
	hsm_client c = {.endpoints = ep, .timeout_s = 5, .akid = "AKIDEXAMPLE", .secret = "s3cret",
	                .region = "us-east-1"};
	int status = 0;
	hsm_buf b = {0};
	assert_true(hsm_ok(hsm_client_call(&c, "TrentService.ListKeys", "{}", true, &status, &b)));
	assert_int_equal(status, 200);
	char host[64];
	snprintf(host, sizeof(host), "\r\nHost: [::1]:%u\r\n", f.port);
	assert_non_null(strstr(f.last_head, host));
	assert_non_null(strstr(f.last_head, "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
	assert_non_null(strstr(f.last_head, "SignedHeaders=content-type;host;x-amz-date;x-amz-target"));
	hsm_client_close(&c);
	/* And a document from an IPv6 URL. */
	char url[96];
	snprintf(url, sizeof(url), "http://[::1]:%u/.well-known/jwks.json", f.port);
	b.len = 0;
	assert_true(hsm_ok(hsm_client_get(&c, url, &b)));
	assert_int_equal(b.len, 2);
	assert_memory_equal(b.data, "[]", 2);
	hsm_buf_free(&b);
	fake_stop(&f);
	assert_non_null(strstr(f.last_head, "GET /.well-known/jwks.json HTTP/1.1\r\n"));
}

static void test_default_port(void **state)
{
	(void)state;
	/* "http://host/path" is port 80, as for any HTTP client: a JWK Set's URL seldom names
	 * its port.  Binding port 80 needs root (as CI runs) and a free port. */
	fake f;
	memset(&f, 0, sizeof(f));
	if (!fake_listen(&f, false, 80))
		skip(); /* reported as skipped, not passed */
	f.answers[0] = OK_HEAD "Content-Length: 2\r\n\r\n{}";
	f.n_answers = 1;
	fake_start(&f);
	hsm_client c = {.timeout_s = 5};
	hsm_buf b = {0};
	assert_true(hsm_ok(hsm_client_get(&c, "http://127.0.0.1/keys", &b)));
	assert_int_equal(b.len, 2);
	hsm_buf_free(&b);
	fake_stop(&f);
	assert_non_null(strstr(f.last_head, "\r\nHost: 127.0.0.1:80\r\n"));
}

static void test_bad_endpoints(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "ftp://127.0.0.1:21", "127.0.0.1:8443",  "http://:8443",         "http://[::1:8443",
	    "http://[::1]8443",   "http://[]:8443",  "http://::1:8443",      "http://h:0",
	    "http://h:65536",     "http://h:8x",     "http://h:",            "https://h:-1",
	    "http://h:123456789",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hsm_client c = {.endpoints = bad[i], .timeout_s = 1};
		int status = 0;
		hsm_buf b = {0};
		hsm_result r = list_keys(&c, &status, &b);
		if (r.err != HSM_ERR_VALIDATION)
			fail_msg("endpoint '%s' was not refused as invalid (error %d)", bad[i], r.err);
		hsm_buf_free(&b);
	}
	/* A settings check refuses each one too, naming its place in the list and none of it. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char list[128], why[256] = "";
		snprintf(list, sizeof(list), "https://ok:8443,%s", bad[i]);
		if (hsm_client_endpoints_usable(list, why, sizeof(why)))
			fail_msg("endpoint '%s' was taken as usable", bad[i]);
		assert_true(strncmp(why, "endpoint 2 of the list ", 23) == 0);
		assert_null(strstr(why, bad[i]));
	}
	char why[256] = "";
	assert_false(hsm_client_endpoints_usable("https://a:1,,https://b:2", why, sizeof(why)));
	assert_string_equal(why, "endpoint 2 of the list is empty");
	assert_false(hsm_client_endpoints_usable("https://a:1,", why, sizeof(why)));
	assert_string_equal(why, "endpoint 2 of the list is empty");
	assert_true(hsm_client_endpoints_usable("https://[::1]:8443,http://127.0.0.1/,https://h",
	                                        why, sizeof(why)));
	/* A password in one is not repeated in the call's message either. */
	hsm_client pw = {.endpoints = "http://admin:s3cret@127.0.0.1:8443", .timeout_s = 1};
	int pw_status = 0;
	hsm_buf pw_b = {0};
	assert_int_equal(list_keys(&pw, &pw_status, &pw_b).err, HSM_ERR_VALIDATION);
	assert_null(strstr(hsm_last_error()->message, "s3cret"));
	assert_non_null(strstr(hsm_last_error()->message, "user name or password"));
	hsm_buf_free(&pw_b);
	/* A URL for a document needs a path. */
	hsm_client c = {.timeout_s = 1};
	hsm_buf b = {0};
	assert_int_equal(hsm_client_get(&c, "http://127.0.0.1:8443", &b).err, HSM_ERR_VALIDATION);
	/* Nothing listening: the message names the port the client took. */
	fake f;
	memset(&f, 0, sizeof(f));
	assert_true(fake_listen(&f, false, 0));
	unsigned port = f.port;
	close(f.lfd); /* free again, and (almost surely) not taken in the next instant */
	char ep[64], want[64];
	snprintf(ep, sizeof(ep), "http://127.0.0.1:%u", port);
	snprintf(want, sizeof(want), "127.0.0.1:%u", port);
	c.endpoints = ep;
	int status = 0;
	assert_int_equal(list_keys(&c, &status, &b).err,
	                 HSM_ERR_IO);
	assert_non_null(strstr(hsm_last_error()->message, want));
	hsm_buf_free(&b);
}

/* Secrets go over HTTPS, or plain HTTP only to this machine; every endpoint listed counts. */
static void test_require_private(void **state)
{
	(void)state;
	static const char *const ok[] = {
	    "https://hsm1:8443",     "https://192.0.2.2:8443", "http://127.0.0.1:8080",
	    "http://127.255.0.9:80", "http://[::1]:8080",      "http://LocalHost:8080",
	    "http://localhost",      "https://a:1,http://127.0.0.1:2",
	};
	static const char *const refused[] = {
	    "http://192.0.2.2:8080", "http://hsm1:8080", "http://[fd00::2]:8080",
	    "http://128.0.0.1:8080", "http://localhost.example.com:8080",
	    "http://127.0.0.1:1,http://10.0.0.1:2", "http://[::ffff:10.0.0.1]:8080",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		hsm_client c = {.endpoints = ok[i]};
		if (hsm_failed(hsm_client_require_private(&c, "a share")))
			fail_msg("'%s' was refused: %s", ok[i], hsm_last_message());
	}
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		hsm_client c = {.endpoints = refused[i]};
		hsm_result r = hsm_client_require_private(&c, "a share");
		if (r.err != HSM_ERR_VALIDATION ||
		    strstr(hsm_last_message(), "a share would cross") == NULL)
			fail_msg("'%s' was not refused (error %d)", refused[i], r.err);
	}
	hsm_client one = {.endpoints = "http://10.0.0.1:2/"};
	assert_true(hsm_failed(hsm_client_require_private(&one, "a share")));
	assert_non_null(strstr(hsm_last_message(), "the endpoint http://10.0.0.1:2/ is plain HTTP"));
	hsm_client c = {.endpoints = "http://127.0.0.1:1,http://10.0.0.1:2"};
	assert_true(hsm_failed(hsm_client_require_private(&c, "a share")));
	assert_non_null(strstr(hsm_last_message(), "endpoint 2 of the list: http://10.0.0.1:2 is plain HTTP"));
}

/*
 * No message quotes a password or a token from an endpoint list, however it
 * is cut: a password may hold a comma, which splits it across two pieces of
 * the list, or a '/', which ends the authority where a reader would look
 * for it.  Each list is refused whole, before anything is sent.
 */
static void test_no_message_quotes_an_endpoints_secret(void **state)
{
	(void)state;
	static const char *const lists[] = {
	    "http://admin:s3cr3t,x@10.0.0.1",
	    "http://127.0.0.1:1,http://admin:s3cr3t,x@10.0.0.1",
	    "https://a:1,https://admin:s3cr3t@b:2",
	    "http://admin:s3cr3t@127.0.0.1:8443",
	    "http://admin:s3/cr3t@127.0.0.1:8443",
	    "http://127.0.0.1:9/kms?token=s3cr3t#x",
	    "http://127.0.0.1:9#s3cr3t",
	    "http://127.0.0.1:9,http://127.0.0.1:9/?s3cr3t",
	};
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		hsm_client c = {.endpoints = lists[i], .timeout_s = 1};
		int status = 0;
		hsm_buf b = {0};
		hsm_result r = list_keys(&c, &status, &b);
		hsm_buf_free(&b);
		if (r.err != HSM_ERR_VALIDATION || strstr(hsm_last_message(), "s3") != NULL)
			fail_msg("list %zu: error %d, '%s'", i, r.err, hsm_last_message());
		r = hsm_client_require_private(&c, "a share");
		if (r.err != HSM_ERR_VALIDATION || strstr(hsm_last_message(), "s3") != NULL)
			fail_msg("list %zu (private): error %d, '%s'", i, r.err, hsm_last_message());
		char why[256] = "";
		if (hsm_client_endpoints_usable(lists[i], why, sizeof(why)) || strstr(why, "s3") != NULL)
			fail_msg("list %zu (settings): '%s'", i, why);
	}
	/* A list with '@' anywhere is refused as one, by what '@' means there. */
	hsm_client c = {.endpoints = "http://admin:s3cr3t,x@10.0.0.1", .timeout_s = 1};
	assert_true(hsm_failed(hsm_client_require_private(&c, "a share")));
	assert_non_null(strstr(hsm_last_message(), "user name or password"));
	/* A URL fetched whole (the JWK Set) is not quoted with its password either. */
	static const char *const urls[] = {
	    "https://user:s3cr3t@jwks.example",
	    "https://user:s3cr3t@jwks.example/jwks.json",
	    "https://user:s3/cr3t@jwks.example/jwks.json",
	};
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		hsm_client g = {.timeout_s = 1};
		hsm_buf b = {0};
		hsm_result r = hsm_client_get(&g, urls[i], &b);
		hsm_buf_free(&b);
		if (r.err != HSM_ERR_VALIDATION || strstr(hsm_last_message(), "s3") != NULL)
			fail_msg("URL %zu: error %d, '%s'", i, r.err, hsm_last_message());
	}
}

/*
 * An endpoint is scheme://host[:port] and at most a trailing '/': requests
 * go to hsmd's own paths, so a path, query or fragment given would be
 * dropped, and the requests sent elsewhere than the setting says.  The host
 * is a name or IPv4 address (letters, digits, '-', '.') or an IPv6 address
 * in brackets; the port, digits only.  A '_' is taken: container and service names that
 * resolve carry one.
 */
static void test_an_endpoint_is_scheme_host_and_port(void **state)
{
	(void)state;
	static const struct {
		const char *text, *why;
	} bad[] = {
	    {"https://proxy.example/kms", "has a path, query or fragment"},
	    {"https://proxy.example:8443/kms/", "has a path, query or fragment"},
	    {"https://proxy.example?x=1", "has a path, query or fragment"},
	    {"https://proxy.example/?x=1", "has a path, query or fragment"},
	    {"https://proxy.example#x", "has a path, query or fragment"},
	    {"https://proxy.example//", "has a path, query or fragment"},
	    {"https://h*1.example:8443", "has a bad host"},
	    {"https://h%2e.example", "has a bad host"},
	    {"https://h\xc3\xa9.example", "has a bad host"},
	    {"https://h.example :8443", "has a bad host"},
	    {"https://[2001:db8::zz]:8443", "has a bad IPv6 address"},
	    {"https://[fe80::1%25eth0]:8443", "has a bad IPv6 address"},
	    {"https://[h.example]:8443", "has a bad IPv6 address"},
	    {"https://h.example:+443", "has a bad port"},
	    {"https://h.example: 443", "has a bad port"},
	    {"https://h.example:443 ", "has a bad port"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char why[256] = "", want[128];
		snprintf(want, sizeof(want), "the endpoint %s", bad[i].why);
		if (hsm_client_endpoints_usable(bad[i].text, why, sizeof(why)) ||
		    strncmp(why, want, strlen(want)) != 0)
			fail_msg("'%s': '%s'", bad[i].text, why);
		hsm_client c = {.endpoints = bad[i].text, .timeout_s = 1};
		int status = 0;
		hsm_buf b = {0};
		hsm_result r = list_keys(&c, &status, &b);
		hsm_buf_free(&b);
		if (r.err != HSM_ERR_VALIDATION || strncmp(hsm_last_message(), want, strlen(want)) != 0)
			fail_msg("'%s' called: error %d, '%s'", bad[i].text, r.err, hsm_last_message());
	}
	static const char *const good[] = {
	    "https://[2001:db8::1]:8443", "https://[2001:db8::1]/", "https://[::ffff:192.0.2.1]",
	    "http://127.0.0.1/",          "https://h.example:8443/", "https://A-b.Example",
	    "https://h:1,https://h:65535/", "https://hsmd_node1:8443",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char why[256] = "";
		if (!hsm_client_endpoints_usable(good[i], why, sizeof(why)))
			fail_msg("'%s' refused: %s", good[i], why);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_content_length),
	    cmocka_unit_test(test_chunked),
	    cmocka_unit_test(test_chunked_malformed),
	    cmocka_unit_test(test_body_to_end_of_stream),
	    cmocka_unit_test(test_answers_without_body),
	    cmocka_unit_test(test_get_not_200),
	    cmocka_unit_test(test_reconnects_after_idle_close),
	    cmocka_unit_test(test_sealed_node_passes_to_next),
	    cmocka_unit_test(test_ipv6_endpoint),
	    cmocka_unit_test(test_default_port),
	    cmocka_unit_test(test_bad_endpoints),
	    cmocka_unit_test(test_no_message_quotes_an_endpoints_secret),
	    cmocka_unit_test(test_an_endpoint_is_scheme_host_and_port),
	    cmocka_unit_test(test_require_private),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
