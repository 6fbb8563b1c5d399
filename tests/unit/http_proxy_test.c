/*
 * http_proxy_test.c - the HTTP server behind a load balancer that speaks the
 * PROXY protocol (proxy_protocol_from): the header's source becomes the
 * request's remote address, a trusted peer without a valid header is closed
 * without a request reaching the handler, and an untrusted peer's header is
 * never believed.  The header parser itself is in proxy_proto_test.c, TLS
 * after a header in http_tls_test.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/http.h"
#include "support/http_client.h"

#define LIT(s) (s), (sizeof(s) - 1)
#define V2_SIG "\r\n\r\n\0\r\nQUIT\n"
/* PROXY over TCP/IPv6: [2001:db8::7]:40000 -> [2001:db8::1]:8443, then a TLV. */
#define V2_TCP6                                                                                   \
	V2_SIG "\x21\x21\x00\x2a"                                                                    \
	       "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x07"                   \
	       "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"                   \
	       "\x9c\x40\x20\xfb"                                                                   \
	       "\x04\x00\x03xyz"
#define GET "GET /p HTTP/1.1\r\nHost: t\r\n\r\n"

static atomic_int calls;

static void handler(hsm_http_req *req, void *arg)
{
	(void)arg;
	atomic_fetch_add(&calls, 1);
	char out[256];
	int n = snprintf(out, sizeof(out), "remote=%s port=%u", hsm_http_req_remote_addr(req),
	                 (unsigned)hsm_http_req_remote_port(req));
	hsm_http_respond(req, 200, "text/plain", out, (size_t)n, 0, NULL);
}

static hsm_http_server *start(const char *trusted, uint32_t read_timeout_ms)
{
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.workers = 2;
	cfg.proxy_protocol_from = trusted;
	if (read_timeout_ms != 0)
		cfg.read_timeout_ms = read_timeout_ms;
	hsm_http_server *srv = NULL;
	assert_true(hsm_ok(hsm_http_server_new(&cfg, handler, NULL, &srv)));
	assert_true(hsm_ok(hsm_http_server_start(srv)));
	atomic_store(&calls, 0);
	return srv;
}

/* Sends p[0..n) on a new connection and reads one response's body ("" when none came). */
static void exchange(uint16_t port, const char *p, size_t n, char *body, size_t cap)
{
	tc_conn *c = tc_connect(port, false, 5000);
	assert_non_null(c);
	assert_true(tc_send(c, p, n));
	tc_resp r;
	body[0] = '\0';
	if (tc_read(c, &r, false)) {
		assert_int_equal(r.status, 200);
		snprintf(body, cap, "%s", r.body);
		tc_resp_clear(&r);
	}
	tc_close(c);
}

/* Whether the server closed c without answering (EOF or reset, within 5 s). */
static bool closed_silently(tc_conn *c)
{
	char b;
	ssize_t n = recv(c->fd, &b, 1, 0);
	return n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE));
}

static void test_header_names_the_client(void **state)
{
	(void)state;
	hsm_http_server *srv = start("10.9.0.0/16, 127.0.0.0/8", 0);
	uint16_t port = hsm_http_server_port(srv);
	char body[256];
	exchange(port, LIT("PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n" GET), body, sizeof(body));
	assert_string_equal(body, "remote=203.0.113.7 port=51000");
	exchange(port, LIT(V2_TCP6 GET), body, sizeof(body));
	assert_string_equal(body, "remote=2001:db8::7 port=40000");
	/* The balancer's own health checks keep its address. */
	exchange(port, LIT(V2_SIG "\x20\x00\x00\x00" GET), body, sizeof(body));
	assert_true(strncmp(body, "remote=127.0.0.1 port=", 22) == 0);
	exchange(port, LIT("PROXY UNKNOWN\r\n" GET), body, sizeof(body));
	assert_true(strncmp(body, "remote=127.0.0.1 port=", 22) == 0);
	assert_int_equal(atomic_load(&calls), 4);
	hsm_http_server_free(srv);
}

static void test_header_once_per_connection(void **state)
{
	(void)state;
	hsm_http_server *srv = start("127.0.0.1", 0);
	tc_conn *c = tc_connect(hsm_http_server_port(srv), false, 5000);
	assert_non_null(c);
	tc_resp r;
	assert_true(tc_sendf(c, "PROXY TCP4 198.51.100.2 10.0.0.1 4000 443\r\n" GET));
	assert_true(tc_read(c, &r, false));
	assert_string_equal(r.body, "remote=198.51.100.2 port=4000");
	tc_resp_clear(&r);
	/* Keep-alive: the next request is the same client's. */
	assert_true(tc_sendf(c, GET));
	assert_true(tc_read(c, &r, false));
	assert_string_equal(r.body, "remote=198.51.100.2 port=4000");
	tc_resp_clear(&r);
	/* A second header (a client's own, relayed) is only a malformed request. */
	assert_true(tc_sendf(c, "PROXY TCP4 192.0.2.1 10.0.0.1 1 443\r\n" GET));
	assert_true(tc_read(c, &r, false));
	assert_int_equal(r.status, 400);
	tc_resp_clear(&r);
	tc_close(c);
	assert_int_equal(atomic_load(&calls), 2);
	hsm_http_server_free(srv);
}

static void test_header_a_byte_at_a_time(void **state)
{
	(void)state;
	hsm_http_server *srv = start("127.0.0.0/8", 0);
	static const char v1[] = "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n" GET;
	static const char v2[] = V2_TCP6 GET;
	const char *inputs[] = {v1, v2};
	size_t lens[] = {sizeof(v1) - 1, sizeof(v2) - 1};
	const char *want[] = {"remote=203.0.113.7 port=51000", "remote=2001:db8::7 port=40000"};
	for (size_t k = 0; k < 2; k++) {
		tc_conn *c = tc_connect(hsm_http_server_port(srv), false, 5000);
		assert_non_null(c);
		int one = 1;
		assert_int_equal(setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
		for (size_t i = 0; i < lens[k]; i++) {
			assert_true(tc_send(c, inputs[k] + i, 1));
			if (i < 60)
				usleep(2000); /* each byte its own segment, through the header */
		}
		tc_resp r;
		assert_true(tc_read(c, &r, false));
		assert_string_equal(r.body, want[k]);
		tc_resp_clear(&r);
		tc_close(c);
	}
	hsm_http_server_free(srv);
}

static void test_trusted_peer_without_header_is_closed(void **state)
{
	(void)state;
	hsm_http_server *srv = start("127.0.0.0/8", 600);
	uint16_t port = hsm_http_server_port(srv);
	char big[HSM_HTTP_DEFAULT_MAX_HEADERS];
	memset(big, 'x', sizeof(big));
	memcpy(big, "PROXY UNKNOWN ", 14);
	uint8_t v2_long[16] = V2_SIG "\x21\x11\xff\xff"; /* 65535 more bytes announced */
	const struct {
		const char *p;
		size_t n;
	} bad[] = {
	    {LIT(GET)},                                                         /* no header */
	    {LIT("PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\n" GET)},           /* no CR */
	    {LIT("PROXY TCP4 2001:db8::7 10.0.0.1 51000 443\r\n" GET)},         /* family mismatch */
	    {LIT(V2_SIG "\x11\x11\x00\x0c" "\xcb\x00\x71\x07\x0a\x00\x00\x01\xc7\x38\x01\xbb" GET)},
	    {LIT("\r\n\r\n\0\r\nQUIT\r\x21\x11\x00\x0c")},                       /* bad signature */
	    {big, sizeof(big)},                                                 /* no line end */
	    {(const char *)v2_long, sizeof(v2_long)},                           /* oversized */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tc_conn *c = tc_connect(port, false, 5000);
		assert_non_null(c);
		(void)tc_send(c, bad[i].p, bad[i].n);
		if (!closed_silently(c))
			fail_msg("input %zu: not closed", i);
		tc_close(c);
	}
	/* Truncated: part of a header, then the client's close. */
	tc_conn *c = tc_connect(port, false, 5000);
	assert_non_null(c);
	assert_true(tc_send(c, LIT("PROXY TCP4 203.0.113.7 10.0")));
	assert_int_equal(shutdown(c->fd, SHUT_WR), 0);
	assert_true(closed_silently(c));
	tc_close(c);
	/* Part of a header and nothing more: closed at the read timeout. */
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	c = tc_connect(port, false, 5000);
	assert_non_null(c);
	assert_true(tc_send(c, LIT(V2_SIG "\x21\x11\x00\x0c" "\xcb\x00")));
	assert_true(closed_silently(c));
	long ms = tc_ms_since(&t0);
	assert_true(ms >= 500 && ms < 3000);
	tc_close(c);
	assert_int_equal(atomic_load(&calls), 0); /* nothing reached the handler */
	/* The server is unharmed. */
	char body[256];
	exchange(port, LIT("PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n" GET), body, sizeof(body));
	assert_string_equal(body, "remote=203.0.113.7 port=51000");
	hsm_http_server_free(srv);
}

static void test_untrusted_peer_header_is_not_believed(void **state)
{
	(void)state;
	/* Neither list holds 127.0.0.1. */
	const char *lists[] = {"", "10.0.0.0/8,::1/128", NULL};
	for (size_t k = 0; k < 3; k++) {
		hsm_http_server *srv = start(lists[k], 0);
		uint16_t port = hsm_http_server_port(srv);
		char body[256];
		exchange(port, LIT(GET), body, sizeof(body));
		assert_true(strncmp(body, "remote=127.0.0.1 port=", 22) == 0);
		tc_resp r;
		assert_true(tc_simple(port, "PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n" GET, 400, &r));
		tc_resp_clear(&r);
		tc_conn *c = tc_connect(port, false, 5000);
		assert_non_null(c);
		assert_true(tc_send(c, LIT(V2_TCP6 GET)));
		assert_true(tc_read(c, &r, false));
		assert_int_equal(r.status, 400);
		tc_resp_clear(&r);
		tc_close(c);
		assert_int_equal(atomic_load(&calls), 1);
		hsm_http_server_free(srv);
	}
}

static void test_bad_lists_refused(void **state)
{
	(void)state;
	const char *bad[] = {"10.0.0.0/33", "localhost", "10.0.0.0/8,", ",10.0.0.0/8", "10.0.0.0/8,,::1",
	                     "10.0.0.0 /8", "1.2.3.4/-1", "::1/129", "2001:db8::/32 10.0.0.0/8"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		hsm_http_config cfg;
		hsm_http_config_defaults(&cfg);
		cfg.listen = "127.0.0.1:0";
		cfg.workers = 1;
		cfg.proxy_protocol_from = bad[i];
		hsm_http_server *srv = NULL;
		assert_true(hsm_failed(hsm_http_server_new(&cfg, handler, NULL, &srv)));
		assert_null(srv);
		if (strstr(hsm_last_message(), "proxy_protocol_from") == NULL)
			fail_msg("'%s': '%s'", bad[i], hsm_last_message());
	}
	/* Too many networks. */
	char many[HSM_HTTP_PROXY_NETS_MAX * 16];
	size_t o = 0;
	for (unsigned i = 0; i <= HSM_HTTP_PROXY_NETS_MAX; i++)
		o += (size_t)snprintf(many + o, sizeof(many) - o, "%s10.0.%u.0/24", i ? "," : "", i);
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.workers = 1;
	cfg.proxy_protocol_from = many;
	hsm_http_server *srv = NULL;
	assert_true(hsm_failed(hsm_http_server_new(&cfg, handler, NULL, &srv)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_header_names_the_client),
	    cmocka_unit_test(test_header_once_per_connection),
	    cmocka_unit_test(test_header_a_byte_at_a_time),
	    cmocka_unit_test(test_trusted_peer_without_header_is_closed),
	    cmocka_unit_test(test_untrusted_peer_header_is_not_believed),
	    cmocka_unit_test(test_bad_lists_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
