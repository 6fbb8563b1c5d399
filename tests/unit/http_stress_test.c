/*
 * http_stress_test.c - the HTTP server under a random mix of clients, to let
 * the sanitizers (the ASan/UBSan build runs every unit test) see its
 * connection and buffer handling in the orders a unit test does not spell
 * out: several client threads, each on its own seed, keep-alive sequences
 * sent whole, pipelined or in pieces, bodies by Content-Length or chunked,
 * large enough to grow the input buffer, answered at once or from another
 * thread after a random delay; mixed with clients that vanish mid-request,
 * before their answer, or send garbage.  Every answer a client waits for
 * must be the right one; at the end every request has been answered.  Run
 * over plain HTTP and over TLS.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "server/http.h"
#include "support/http_client.h"

#define CLIENTS 4
#define ROUNDS 150
#define BODY_MAX 40000
#define QUEUE_MAX 4096

/* Requests whose path starts with /later are answered by the completer thread. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	hsm_http_req *q[QUEUE_MAX];
	size_t n;
	bool stop;
} Q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static atomic_int handled, answered, client_failures;
/* The clients' TLS context, or NULL for plain HTTP. */
static SSL_CTX *client_tls;

static tc_conn *connect_to(uint16_t port, int timeout_ms)
{
	tc_conn *c = tc_connect(port, false, timeout_ms);
	if (c != NULL && client_tls != NULL && !tc_tls(c, client_tls)) {
		tc_close(c);
		return NULL;
	}
	return c;
}

static void answer(hsm_http_req *req)
{
	size_t len = 0;
	const uint8_t *body = hsm_http_req_body(req, &len);
	unsigned long sum = 0;
	for (size_t i = 0; i < len; i++)
		sum += body[i];
	char out[256];
	int n = snprintf(out, sizeof(out), "path=%s len=%zu sum=%lu", hsm_http_req_path(req), len, sum);
	atomic_fetch_add(&answered, 1);
	hsm_http_respond(req, 200, "text/plain", out, (size_t)n, 0, NULL);
}

static void handler(hsm_http_req *req, void *arg)
{
	(void)arg;
	atomic_fetch_add(&handled, 1);
	if (strncmp(hsm_http_req_path(req), "/later", 6) != 0) {
		answer(req);
		return;
	}
	pthread_mutex_lock(&Q.mu);
	if (Q.n == QUEUE_MAX) {
		pthread_mutex_unlock(&Q.mu);
		answer(req);
		return;
	}
	Q.q[Q.n++] = req;
	pthread_cond_signal(&Q.cv);
	pthread_mutex_unlock(&Q.mu);
}

/* Answers queued requests, oldest last, after a short random pause. */
static void *completer(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	pthread_mutex_lock(&Q.mu);
	for (;;) {
		while (Q.n == 0 && !Q.stop)
			pthread_cond_wait(&Q.cv, &Q.mu);
		if (Q.n == 0 && Q.stop)
			break;
		hsm_http_req *req = Q.q[--Q.n];
		pthread_mutex_unlock(&Q.mu);
		usleep((useconds_t)(rand_r(&seed) % 300));
		answer(req);
		pthread_mutex_lock(&Q.mu);
	}
	pthread_mutex_unlock(&Q.mu);
	return NULL;
}

typedef struct wire {
	char *p;
	size_t len, cap;
} wire;

static void put(wire *w, const void *p, size_t n)
{
	if (w->len + n > w->cap) {
		w->cap = (w->len + n) * 2;
		w->p = realloc(w->p, w->cap);
		assert_non_null(w->p);
	}
	memcpy(w->p + w->len, p, n);
	w->len += n;
}

static void putf(wire *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(wire *w, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	put(w, tmp, (size_t)n);
}

/* One request on the wire; *expect gets the answer it must have. */
static void make_request(unsigned *seed, wire *w, char *expect, size_t cap)
{
	size_t len = rand_r(seed) % 4 == 0 ? (size_t)(rand_r(seed) % BODY_MAX) : (size_t)(rand_r(seed) % 300);
	char *body = malloc(len + 1);
	assert_non_null(body);
	unsigned long sum = 0;
	for (size_t i = 0; i < len; i++) {
		body[i] = (char)('a' + rand_r(seed) % 26);
		sum += (unsigned char)body[i];
	}
	const char *path = rand_r(seed) % 2 ? "/later" : "/now";
	unsigned id = (unsigned)rand_r(seed) % 100000;
	snprintf(expect, cap, "path=%s%u len=%zu sum=%lu", path, id, len, sum);
	bool chunked = rand_r(seed) % 4 == 0;
	putf(w, "POST %s%u?q=%u HTTP/1.1\r\nHost: t\r\nX-Pad: %0*d\r\n", path, id, id,
	     (int)(rand_r(seed) % 200), 0);
	if (!chunked) {
		putf(w, "Content-Length: %zu\r\n\r\n", len);
		put(w, body, len);
	} else {
		put(w, "Transfer-Encoding: chunked\r\n\r\n", 30);
		for (size_t off = 0; off < len;) {
			size_t n = 1 + (size_t)rand_r(seed) % 5000;
			if (n > len - off)
				n = len - off;
			putf(w, "%zx\r\n", n);
			put(w, body + off, n);
			put(w, "\r\n", 2);
			off += n;
		}
		put(w, "0\r\n\r\n", 5);
	}
	free(body);
}

/* Sends the wire in one to three pieces, with short pauses between. */
static bool send_pieces(unsigned *seed, tc_conn *c, const wire *w)
{
	size_t off = 0;
	int pieces = 1 + rand_r(seed) % 3;
	for (int i = 0; i < pieces && off < w->len; i++) {
		size_t n = i == pieces - 1 ? w->len - off : (size_t)rand_r(seed) % (w->len - off + 1);
		if (n > 0 && !tc_send(c, w->p + off, n))
			return false;
		off += n;
		if (off < w->len)
			usleep((useconds_t)(rand_r(seed) % 2000));
	}
	return off == w->len || tc_send(c, w->p + off, w->len - off);
}

/* A keep-alive sequence of 1-4 requests, pipelined or one at a time. */
static void keep_alive_round(unsigned *seed, uint16_t port)
{
	tc_conn *c = connect_to(port, 10000);
	if (c == NULL) {
		atomic_fetch_add(&client_failures, 1);
		return;
	}
	int n = 1 + rand_r(seed) % 4;
	bool pipelined = rand_r(seed) % 2;
	char expect[4][128];
	wire w = {0};
	for (int i = 0; i < n; i++) {
		if (!pipelined)
			w.len = 0;
		make_request(seed, &w, expect[i], sizeof(expect[i]));
		if (pipelined)
			continue;
		tc_resp r;
		if (!send_pieces(seed, c, &w) || !tc_read(c, &r, false) || r.status != 200 ||
		    strcmp(r.body, expect[i]) != 0)
			atomic_fetch_add(&client_failures, 1);
		tc_resp_clear(&r);
	}
	if (pipelined) {
		bool sent = send_pieces(seed, c, &w);
		for (int i = 0; i < n && sent; i++) {
			tc_resp r;
			if (!tc_read(c, &r, false) || r.status != 200 || strcmp(r.body, expect[i]) != 0)
				atomic_fetch_add(&client_failures, 1);
			tc_resp_clear(&r);
		}
		if (!sent)
			atomic_fetch_add(&client_failures, 1);
	}
	free(w.p);
	tc_close(c);
}

/* Clients that go away: mid-request, before their answer, after garbage. */
static void vanishing_round(unsigned *seed, uint16_t port)
{
	tc_conn *c = connect_to(port, 2000);
	if (c == NULL)
		return;
	wire w = {0};
	char expect[128];
	make_request(seed, &w, expect, sizeof(expect));
	switch (rand_r(seed) % 3) {
	case 0: /* part of a request */
		(void)tc_send(c, w.p, (size_t)rand_r(seed) % w.len);
		break;
	case 1: /* a whole request, and gone before the answer */
		(void)tc_send(c, w.p, w.len);
		break;
	default: { /* garbage: answered 400 or closed, never served */
		char junk[64];
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (char)(rand_r(seed) % 256);
		junk[0] = 'X';
		(void)tc_send(c, junk, sizeof(junk));
		(void)tc_send(c, "\r\n\r\n", 4);
		(void)tc_wait_closed(c, 2000);
		break;
	}
	}
	free(w.p);
	tc_close(c);
}

static void *client(void *arg)
{
	uint16_t port = (uint16_t)(uintptr_t)arg;
	unsigned seed = (unsigned)pthread_self() ^ (unsigned)time(NULL);
	int rounds = client_tls != NULL ? ROUNDS / 3 : ROUNDS; /* handshakes are dear under ASan */
	for (int i = 0; i < rounds; i++) {
		if (rand_r(&seed) % 4 == 0)
			vanishing_round(&seed, port);
		else
			keep_alive_round(&seed, port);
	}
	return NULL;
}

/* Whether every request handled so far (*seen of them) is answered and released. */
static bool all_answered(const hsm_http_server *srv, int *seen)
{
	*seen = atomic_load(&handled);
	return atomic_load(&answered) == *seen && hsm_http_server_inflight(srv) == 0;
}

static void run_clients(const char *cert, const char *key)
{
	atomic_store(&handled, 0);
	atomic_store(&answered, 0);
	atomic_store(&client_failures, 0);
	Q.stop = false;
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.workers = 2;
	/* Generous: other tests load the machine meanwhile; this test is about clients, not timeouts. */
	cfg.read_timeout_ms = 10000;
	cfg.max_body_bytes = (size_t)BODY_MAX;
	cfg.tls_cert = cert;
	cfg.tls_key = key;
	hsm_http_server *srv = NULL;
	assert_true(hsm_ok(hsm_http_server_new(&cfg, handler, NULL, &srv)));
	assert_true(hsm_ok(hsm_http_server_start(srv)));
	uint16_t port = hsm_http_server_port(srv);
	pthread_t comp, clients[CLIENTS];
	assert_int_equal(pthread_create(&comp, NULL, completer, (void *)(uintptr_t)7), 0);
	for (int i = 0; i < CLIENTS; i++)
		assert_int_equal(pthread_create(&clients[i], NULL, client, (void *)(uintptr_t)port), 0);
	for (int i = 0; i < CLIENTS; i++)
		pthread_join(clients[i], NULL);
	/*
	 * The request of a client that vanished last may not have reached the
	 * handler yet.  Wait (10 s at most) until what was handled is answered;
	 * stop the server, after which no handler runs, then the completer,
	 * which answers what it still holds; then count.
	 */
	int seen = 0;
	bool idle = all_answered(srv, &seen);
	for (int i = 0; i < 1000 && !idle; i++) {
		usleep(10 * 1000);
		idle = all_answered(srv, &seen);
	}
	assert_true(idle);
	hsm_http_server_stop(srv, 2000);
	pthread_mutex_lock(&Q.mu);
	Q.stop = true;
	pthread_cond_signal(&Q.cv);
	pthread_mutex_unlock(&Q.mu);
	pthread_join(comp, NULL);
	assert_int_equal(atomic_load(&client_failures), 0);
	assert_true(atomic_load(&handled) > CLIENTS * 10);
	assert_int_equal(atomic_load(&answered), atomic_load(&handled));
	/* One taken during the stop, from a client that reset its connection, is not waited
	 * for: answered after its worker left, it is released by hsm_http_server_free. */
	if (atomic_load(&handled) == seen)
		assert_int_equal(hsm_http_server_inflight(srv), 0);
	hsm_http_server_free(srv);
}

static void test_random_clients(void **state)
{
	(void)state;
	client_tls = NULL;
	run_clients(NULL, NULL);
}

/* A self-signed P-256 certificate for 127.0.0.1 and its key, as PEM files in dir. */
static void write_cert(const char *dir, char *cert, char *key, size_t cap)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	assert_true(pk != NULL && x != NULL);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1,
	                           -1, 0);
	X509_set_issuer_name(x, name);
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
	snprintf(cert, cap, "%s/cert.pem", dir);
	snprintf(key, cap, "%s/key.pem", dir);
	FILE *f = fopen(cert, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
	f = fopen(key, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pk);
}

static void test_random_clients_tls(void **state)
{
	(void)state;
	char dir[] = "/tmp/hsm-stress-XXXXXX", cert[64], key[64];
	assert_non_null(mkdtemp(dir));
	write_cert(dir, cert, key, sizeof(cert));
	client_tls = SSL_CTX_new(TLS_client_method());
	assert_non_null(client_tls);
	SSL_CTX_set_verify(client_tls, SSL_VERIFY_NONE, NULL); /* the server's identity is not the point */
	run_clients(cert, key);
	SSL_CTX_free(client_tls);
	client_tls = NULL;
	unlink(cert);
	unlink(key);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_random_clients),
	    cmocka_unit_test(test_random_clients_tls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
