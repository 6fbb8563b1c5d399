/*
 * http_tls_test.c - the HTTP server over TLS: handshake policy (versions,
 * suites), client certificates in optional and required modes, resumption,
 * a load balancer's PROXY protocol header before the handshake, the record
 * buffers kept by warm connections, and configuration errors.  A throwaway CA, server and client certificates
 * are made with the OpenSSL API in a temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/encoding.h"
#include "common/util.h"
#include "server/http.h"
#include "server/http_internal.h"
#include "support/http_client.h"

static char dir[64];
static char path_ca[128], path_srv[128], path_srv_key[128], path_cli[128], path_cli_key[128];
static char path_rogue[128], path_rogue_key[128], path_enc_key[128];

/* ---- certificates ------------------------------------------------------------ */

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(cert, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for key named cn, signed by issuer (self-signed when NULL). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *kind)
{
	static long serial = 1;
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"hsmd-test", -1, -1,
	                           0);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	X509 *iss = issuer ? issuer : x;
	if (strcmp(kind, "ca") == 0) {
		add_ext(x, iss, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, iss, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, iss, NID_ext_key_usage, strcmp(kind, "server") == 0 ? "serverAuth" : "clientAuth");
		if (strcmp(kind, "server") == 0)
			add_ext(x, iss, NID_subject_alt_name, "IP:127.0.0.1");
	}
	assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *path, X509 *cert, EVP_PKEY *key, const char *pass)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	FILE *f = fdopen(fd, "w");
	assert_non_null(f);
	if (cert != NULL)
		assert_int_equal(PEM_write_X509(f, cert), 1);
	if (key != NULL && pass == NULL)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	if (key != NULL && pass != NULL)
		assert_int_equal(PEM_write_PKCS8PrivateKey(f, key, EVP_aes_256_cbc(), NULL, 0, NULL,
		                                           (void *)pass),
		                 1);
	fclose(f);
}

static int setup_certs(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/hsm-tls-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path_ca, sizeof(path_ca), "%s/ca.pem", dir);
	snprintf(path_srv, sizeof(path_srv), "%s/server.pem", dir);
	snprintf(path_srv_key, sizeof(path_srv_key), "%s/server.key", dir);
	snprintf(path_cli, sizeof(path_cli), "%s/client.pem", dir);
	snprintf(path_cli_key, sizeof(path_cli_key), "%s/client.key", dir);
	snprintf(path_rogue, sizeof(path_rogue), "%s/rogue.pem", dir);
	snprintf(path_rogue_key, sizeof(path_rogue_key), "%s/rogue.key", dir);
	snprintf(path_enc_key, sizeof(path_enc_key), "%s/enc.key", dir);
	EVP_PKEY *ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	/* RSA for the server, so that RSA-only and DHE suites would be possible but for the policy. */
	EVP_PKEY *srv_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	EVP_PKEY *cli_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *rogue_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_true(ca_key && srv_key && cli_key && rogue_key);
	X509 *ca = make_cert(ca_key, "test-ca", NULL, NULL, "ca");
	X509 *srv = make_cert(srv_key, "127.0.0.1", ca, ca_key, "server");
	X509 *cli = make_cert(cli_key, "client-1", ca, ca_key, "client");
	X509 *rogue = make_cert(rogue_key, "client-1", NULL, NULL, "client");
	write_pem(path_ca, ca, NULL, NULL);
	write_pem(path_srv, srv, NULL, NULL);
	write_pem(path_srv_key, NULL, srv_key, NULL);
	write_pem(path_cli, cli, NULL, NULL);
	write_pem(path_cli_key, NULL, cli_key, NULL);
	write_pem(path_rogue, rogue, NULL, NULL);
	write_pem(path_rogue_key, NULL, rogue_key, NULL);
	write_pem(path_enc_key, NULL, srv_key, "secret");
	X509_free(ca), X509_free(srv), X509_free(cli), X509_free(rogue);
	EVP_PKEY_free(ca_key), EVP_PKEY_free(srv_key), EVP_PKEY_free(cli_key), EVP_PKEY_free(rogue_key);
	return 0;
}

static int teardown_certs(void **state)
{
	(void)state;
	const char *files[] = {path_ca, path_srv, path_srv_key, path_cli, path_cli_key,
	                       path_rogue, path_rogue_key, path_enc_key};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink(files[i]);
	rmdir(dir);
	return 0;
}

/* ---- server and client --------------------------------------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static hsm_http_req *held;
static bool hold;
/* GET /big: a reply of many TLS records and several write calls. */
#define BIG_LEN 200000
static char big[BIG_LEN];

static void handler(hsm_http_req *req, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&mu);
	if (hold && held == NULL) {
		held = req;
		pthread_mutex_unlock(&mu);
		return;
	}
	pthread_mutex_unlock(&mu);
	if (strcmp(hsm_http_req_path(req), "/remote") == 0) {
		char out[128];
		int n = snprintf(out, sizeof(out), "remote=%s port=%u", hsm_http_req_remote_addr(req),
		                 (unsigned)hsm_http_req_remote_port(req));
		hsm_http_respond(req, 200, "text/plain", out, (size_t)n, 0, NULL);
		return;
	}
	if (strcmp(hsm_http_req_path(req), "/big") == 0) {
		hsm_http_respond(req, 200, "application/octet-stream", big, sizeof(big), 0, NULL);
		return;
	}
	char out[1024];
	const char *subject = hsm_http_req_client_subject(req);
	int n = snprintf(out, sizeof(out), "tls=%d subject=%s path=%s", hsm_http_req_is_tls(req),
	                 subject ? subject : "-", hsm_http_req_path(req));
	hsm_http_respond(req, 200, "text/plain", out, (size_t)n, 0, NULL);
}

static unsigned n_workers = 2;

static hsm_http_server *start(hsm_http_client_auth auth)
{
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.workers = n_workers;
	cfg.tls_cert = path_srv;
	cfg.tls_key = path_srv_key;
	cfg.client_auth = auth;
	cfg.tls_client_ca = auth != HSM_HTTP_CLIENT_AUTH_NONE ? path_ca : NULL;
	hsm_http_server *srv = NULL;
	assert_true(hsm_ok(hsm_http_server_new(&cfg, handler, NULL, &srv)));
	assert_true(hsm_ok(hsm_http_server_start(srv)));
	return srv;
}

/* A client context trusting the test CA, optionally with a client certificate. */
static SSL_CTX *client_ctx(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_load_verify_file(ctx, path_ca), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	assert_int_equal(X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), "127.0.0.1"), 1);
	if (cert != NULL) {
		assert_int_equal(SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM), 1);
		assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
	}
	return ctx;
}

/*
 * Connects, handshakes and makes one request.  Returns the body (malloc'd)
 * or NULL; *reason gets OpenSSL's reason code of a failure.
 */
static char *request(uint16_t port, SSL_CTX *ctx, int *reason, SSL_SESSION **session)
{
	ERR_clear_error();
	*reason = 0;
	tc_conn *c = tc_connect(port, false, 5000);
	assert_non_null(c);
	char *body = NULL;
	bool ok = false;
	c->ssl = SSL_new(ctx);
	if (c->ssl != NULL && session != NULL && *session != NULL)
		SSL_set_session(c->ssl, *session);
	if (c->ssl != NULL && SSL_set_fd(c->ssl, c->fd) == 1 && SSL_connect(c->ssl) == 1) {
		/* A TLS 1.3 server may refuse the client only after the handshake: even if
		 * the request cannot be written, read to collect the server's alert. */
		(void)tc_sendf(c, "GET /tls HTTP/1.1\r\nHost: t\r\n\r\n");
		ok = true;
	}
	tc_resp r;
	if (ok && tc_read(c, &r, false) && r.status == 200)
		body = r.body;
	if (body == NULL)
		*reason = ERR_GET_REASON(ERR_peek_last_error());
	if (body != NULL && session != NULL) {
		if (*session != NULL)
			SSL_SESSION_free(*session);
		*session = SSL_get1_session(c->ssl);
	}
	tc_close(c);
	return body;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000L + (t1.tv_nsec - t0->tv_nsec) / 1000000L;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_tls_round_trip(void **state)
{
	(void)state;
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	uint16_t port = hsm_http_server_port(srv);
	SSL_CTX *ctx = client_ctx(NULL, NULL);
	tc_conn *c = tc_connect(port, false, 5000);
	assert_non_null(c);
	assert_true(tc_tls(c, ctx));
	assert_int_equal(SSL_version(c->ssl), TLS1_3_VERSION); /* preferred when offered */
	/* Replies are corked while written: one left corked would arrive only after
	 * the kernel's 200 ms cork ceiling, 10 s for these 50. */
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 50; i++) {
		tc_resp r;
		assert_true(tc_sendf(c, "GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n", i));
		assert_true(tc_read(c, &r, false));
		assert_int_equal(r.status, 200);
		char want[64];
		snprintf(want, sizeof(want), "tls=1 subject=- path=/k%d", i);
		assert_string_equal(r.body, want);
		tc_resp_clear(&r);
	}
	long ms = ms_since(&t0);
	if (ms >= 5000)
		fail_msg("50 TLS round trips took %ld ms: a reply waited for the cork ceiling", ms);
	tc_close(c);
	/* Resumption from the server's session cache. */
	SSL_SESSION *sess = NULL;
	int reason;
	char *body = request(port, ctx, &reason, &sess);
	assert_non_null(body);
	free(body);
	c = tc_connect(port, false, 5000);
	assert_non_null(c);
	c->ssl = SSL_new(ctx);
	SSL_set_session(c->ssl, sess);
	SSL_set_fd(c->ssl, c->fd);
	assert_int_equal(SSL_connect(c->ssl), 1);
	tc_resp r;
	assert_true(tc_sendf(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n") && tc_read(c, &r, false));
	assert_int_equal(SSL_session_reused(c->ssl), 1);
	tc_resp_clear(&r);
	/* The resumed connection brought a new ticket, not the one it resumed with. */
	SSL_SESSION *renewed = SSL_get1_session(c->ssl);
	assert_non_null(renewed);
	const unsigned char *t_old = NULL, *t_new = NULL;
	size_t n_old = 0, n_new = 0;
	SSL_SESSION_get0_ticket(sess, &t_old, &n_old);
	SSL_SESSION_get0_ticket(renewed, &t_new, &n_new);
	assert_true(n_old > 0 && n_new > 0);
	assert_false(n_old == n_new && memcmp(t_old, t_new, n_new) == 0);
	SSL_SESSION_free(renewed);
	tc_close(c);
	SSL_SESSION_free(sess);
	SSL_CTX_free(ctx);
	hsm_http_server_free(srv);
}

/*
 * Resumes with sess and makes one request.  Returns whether the session was
 * resumed (-1: the connection failed); *renewed (if not NULL) gets the
 * session the connection ended with.
 */
static int resumed(uint16_t port, SSL_CTX *ctx, SSL_SESSION *sess, SSL_SESSION **renewed)
{
	tc_conn *c = tc_connect(port, false, 5000);
	assert_non_null(c);
	c->ssl = SSL_new(ctx);
	assert_non_null(c->ssl);
	SSL_set_session(c->ssl, sess);
	SSL_set_fd(c->ssl, c->fd);
	int rc = -1;
	tc_resp r;
	if (SSL_connect(c->ssl) == 1 && tc_sendf(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n") &&
	    tc_read(c, &r, false)) {
		rc = r.status == 200 ? SSL_session_reused(c->ssl) : -1;
		tc_resp_clear(&r);
	}
	if (renewed != NULL)
		*renewed = SSL_get1_session(c->ssl);
	tc_close(c);
	return rc;
}

/*
 * Ticket keys rotate hourly: a ticket resumes while the key that issued it
 * is the current one or the one before, and never once that key is two
 * hours old, however long the node went without a handshake.
 */
static void test_ticket_keys_rotate(void **state)
{
	(void)state;
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	uint16_t port = hsm_http_server_port(srv);
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.tls_cert = path_srv;
	cfg.tls_key = path_srv_key;
	SSL_CTX *sctx = NULL;
	assert_true(hsm_ok(hsm_http_tls_load(&cfg, &sctx)));
	assert_int_equal(SSL_CTX_up_ref(sctx), 1); /* kept to age its keys */
	assert_true(hsm_ok(hsm_http_server_use_tls(srv, sctx)));
	SSL_CTX *ctx = client_ctx(NULL, NULL);
	SSL_SESSION *s1 = NULL, *s2 = NULL, *s3 = NULL, *s4 = NULL;
	int reason;
	free(request(port, ctx, &reason, &s1)); /* key A's */
	assert_non_null(s1);

	hsm_http_tls_tickets_age(sctx, 3599);
	assert_int_equal(resumed(port, ctx, s1, NULL), 1); /* A current */
	hsm_http_tls_tickets_age(sctx, 2);
	assert_int_equal(resumed(port, ctx, s1, &s2), 1); /* B current, A the one before */
	assert_non_null(s2);                              /* B's */
	hsm_http_tls_tickets_age(sctx, 3598);
	assert_int_equal(resumed(port, ctx, s1, NULL), 1); /* A 7,199 s old */
	hsm_http_tls_tickets_age(sctx, 2);
	assert_int_equal(resumed(port, ctx, s1, &s3), 0); /* A two hours old: a full handshake */
	assert_non_null(s3);                              /* C's */
	assert_int_equal(resumed(port, ctx, s2, NULL), 1); /* B the one before */
	assert_int_equal(resumed(port, ctx, s3, NULL), 1);

	/* Two hours without a handshake: B and C are gone at the next one. */
	hsm_http_tls_tickets_age(sctx, 7200);
	assert_int_equal(resumed(port, ctx, s3, NULL), 0);
	assert_int_equal(resumed(port, ctx, s2, &s4), 0);
	assert_int_equal(resumed(port, ctx, s4, NULL), 1);
	SSL_SESSION_free(s1);
	SSL_SESSION_free(s2);
	SSL_SESSION_free(s3);
	SSL_SESSION_free(s4);
	SSL_CTX_free(ctx);
	hsm_http_server_free(srv);
	SSL_CTX_free(sctx);
}

/* Replies that take many records and several writes arrive whole, and the
 * socket is uncorked after them: the next small reply is not held back. */
static void test_tls_large_replies(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + (i * 7) % 26);
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	SSL_CTX *ctx = client_ctx(NULL, NULL);
	tc_conn *c = tc_connect(hsm_http_server_port(srv), false, 5000);
	assert_non_null(c);
	assert_true(tc_tls(c, ctx));
	for (int i = 0; i < 3; i++) {
		tc_resp r;
		assert_true(tc_sendf(c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n"));
		assert_true(tc_read(c, &r, false));
		assert_int_equal(r.status, 200);
		assert_int_equal(r.body_len, sizeof(big));
		assert_memory_equal(r.body, big, sizeof(big));
		tc_resp_clear(&r);
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_true(tc_sendf(c, "GET /small HTTP/1.1\r\nHost: t\r\n\r\n"));
		assert_true(tc_read(c, &r, false));
		assert_int_equal(r.status, 200);
		assert_string_equal(r.body, "tls=1 subject=- path=/small");
		tc_resp_clear(&r);
		long ms = ms_since(&t0);
		if (ms >= 1000)
			fail_msg("a small reply after a large one took %ld ms", ms);
	}
	tc_close(c);
	SSL_CTX_free(ctx);
	hsm_http_server_free(srv);
}

/* A client limited to TLS 1.2 and the given suites. */
static SSL_CTX *tls12_ctx(const char *ciphers, int max_version)
{
	SSL_CTX *ctx = client_ctx(NULL, NULL);
	assert_int_equal(SSL_CTX_set_min_proto_version(ctx, 0), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
	assert_int_equal(SSL_CTX_set_cipher_list(ctx, ciphers), 1);
	return ctx;
}

static void test_tls_versions_and_suites(void **state)
{
	(void)state;
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	uint16_t port = hsm_http_server_port(srv);
	int reason;
	/* TLS 1.2 with ECDHE and an AEAD works... */
	SSL_CTX *ctx = tls12_ctx("ECDHE-RSA-AES128-GCM-SHA256", TLS1_2_VERSION);
	char *body = request(port, ctx, &reason, NULL);
	assert_non_null(body);
	free(body);
	SSL_CTX_free(ctx);
	/* ...but not CBC, static RSA key exchange or finite-field DHE. */
	const char *weak[] = {"ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256"};
	for (size_t i = 0; i < sizeof(weak) / sizeof(weak[0]); i++) {
		ctx = tls12_ctx(weak[i], TLS1_2_VERSION);
		assert_null(request(port, ctx, &reason, NULL));
		assert_int_equal(reason, SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE);
		SSL_CTX_free(ctx);
	}
	/* TLS 1.1 and 1.0: the server answers with a protocol_version alert. */
	int old[] = {TLS1_1_VERSION, TLS1_VERSION};
	for (size_t i = 0; i < 2; i++) {
		ctx = tls12_ctx("DEFAULT:@SECLEVEL=0", old[i]);
		assert_null(request(port, ctx, &reason, NULL));
		assert_int_equal(reason, SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
		SSL_CTX_free(ctx);
	}
	hsm_http_server_free(srv);
}

static void check_client_certs(hsm_http_client_auth auth)
{
	hsm_http_server *srv = start(auth);
	uint16_t port = hsm_http_server_port(srv);
	int reason;
	SSL_CTX *good = client_ctx(path_cli, path_cli_key);
	char *body = request(port, good, &reason, NULL);
	assert_non_null(body);
	assert_string_equal(body, "tls=1 subject=CN=client-1,O=hsmd-test path=/tls");
	free(body);
	SSL_CTX *rogue = client_ctx(path_rogue, path_rogue_key);
	assert_null(request(port, rogue, &reason, NULL));
	assert_int_equal(reason, SSL_R_TLSV1_ALERT_UNKNOWN_CA);
	SSL_CTX *none = client_ctx(NULL, NULL);
	body = request(port, none, &reason, NULL);
	if (auth == HSM_HTTP_CLIENT_AUTH_REQUIRED) {
		assert_null(body);
		assert_int_equal(reason, SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED);
	} else {
		assert_non_null(body);
		assert_string_equal(body, "tls=1 subject=- path=/tls");
		free(body);
	}
	SSL_CTX_free(good), SSL_CTX_free(rogue), SSL_CTX_free(none);
	hsm_http_server_free(srv);
}

static void test_client_cert_required(void **state)
{
	(void)state;
	check_client_certs(HSM_HTTP_CLIENT_AUTH_REQUIRED);
}

static void test_client_cert_optional(void **state)
{
	(void)state;
	check_client_certs(HSM_HTTP_CLIENT_AUTH_OPTIONAL);
}

static void test_tls_client_gone(void **state)
{
	(void)state;
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	uint16_t port = hsm_http_server_port(srv);
	SSL_CTX *ctx = client_ctx(NULL, NULL);
	pthread_mutex_lock(&mu);
	hold = true;
	held = NULL;
	pthread_mutex_unlock(&mu);
	tc_conn *c = tc_connect(port, false, 5000);
	assert_non_null(c);
	assert_true(tc_tls(c, ctx));
	assert_true(tc_sendf(c, "GET /held HTTP/1.1\r\nHost: t\r\n\r\n"));
	hsm_http_req *req = NULL;
	for (int i = 0; i < 500 && req == NULL; i++) {
		pthread_mutex_lock(&mu);
		req = held;
		pthread_mutex_unlock(&mu);
		if (req == NULL)
			usleep(10 * 1000);
	}
	assert_non_null(req);
	tc_close(c);
	usleep(50 * 1000);
	hsm_http_respond(req, 200, NULL, "late", 4, 0, NULL); /* from this thread, client gone */
	pthread_mutex_lock(&mu);
	hold = false;
	pthread_mutex_unlock(&mu);
	int reason;
	char *body = request(port, ctx, &reason, NULL);
	assert_non_null(body);
	free(body);
	SSL_CTX_free(ctx);
	hsm_http_server_free(srv);
}

/*
 * From a trusted balancer, the PROXY header comes before the ClientHello
 * (HAProxy send-proxy-v2 in TCP mode); the client it names is the request's,
 * with client certificates required as usual.  Without a header, or with
 * the ClientHello first, the connection is closed.
 */
static void test_tls_after_proxy_header(void **state)
{
	(void)state;
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.workers = 2;
	cfg.tls_cert = path_srv;
	cfg.tls_key = path_srv_key;
	cfg.client_auth = HSM_HTTP_CLIENT_AUTH_REQUIRED;
	cfg.tls_client_ca = path_ca;
	cfg.proxy_protocol_from = "127.0.0.0/8";
	hsm_http_server *srv = NULL;
	assert_true(hsm_ok(hsm_http_server_new(&cfg, handler, NULL, &srv)));
	assert_true(hsm_ok(hsm_http_server_start(srv)));
	uint16_t port = hsm_http_server_port(srv);
	SSL_CTX *ctx = client_ctx(path_cli, path_cli_key);
	static const char v2[] = "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"
	                         "\xcb\x00\x71\x07\x0a\x00\x00\x01\xc7\x38\x01\xbb";
	static const char v1[] = "PROXY TCP4 203.0.113.8 10.0.0.1 51001 443\r\n";
	const char *headers[] = {v2, v1};
	size_t lens[] = {sizeof(v2) - 1, sizeof(v1) - 1};
	const char *want[] = {"remote=203.0.113.7 port=51000", "remote=203.0.113.8 port=51001"};
	for (size_t k = 0; k < 2; k++) {
		tc_conn *c = tc_connect(port, false, 5000);
		assert_non_null(c);
		assert_true(tc_send(c, headers[k], lens[k]));
		assert_true(tc_tls(c, ctx));
		assert_true(tc_sendf(c, "GET /remote HTTP/1.1\r\nHost: t\r\n\r\n"));
		tc_resp r;
		assert_true(tc_read(c, &r, false));
		assert_int_equal(r.status, 200);
		assert_string_equal(r.body, want[k]);
		tc_resp_clear(&r);
		tc_close(c);
	}
	/* A ClientHello where the header should be. */
	tc_conn *c = tc_connect(port, false, 5000);
	assert_non_null(c);
	assert_false(tc_tls(c, ctx));
	tc_close(c);
	/* A header, but no client certificate: the handshake still fails. */
	SSL_CTX *anon = client_ctx(NULL, NULL);
	c = tc_connect(port, false, 5000);
	assert_non_null(c);
	assert_true(tc_send(c, v1, sizeof(v1) - 1));
	bool ok = tc_tls(c, anon) && tc_sendf(c, "GET /remote HTTP/1.1\r\nHost: t\r\n\r\n");
	tc_resp r;
	assert_false(ok && tc_read(c, &r, false));
	tc_close(c);
	SSL_CTX_free(anon);
	SSL_CTX_free(ctx);
	hsm_http_server_free(srv);
}

static void expect_new_fails(hsm_http_config *cfg, const char *message_part)
{
	hsm_http_server *srv = NULL;
	assert_true(hsm_failed(hsm_http_server_new(cfg, handler, NULL, &srv)));
	assert_null(srv);
	if (strstr(hsm_last_message(), message_part) == NULL)
		fail_msg("'%s' does not mention '%s'", hsm_last_message(), message_part);
}

/* A key file readable by others is accepted, with a warning on stderr. */
static void test_tls_key_permissions_warned(void **state)
{
	(void)state;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	fflush(stderr);
	int saved = dup(2);
	assert_true(saved >= 0);
	assert_true(dup2(fds[1], 2) >= 0);
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.workers = 1;
	cfg.tls_cert = path_srv;
	cfg.tls_key = path_srv_key;
	hsm_http_server *srv = NULL;
	assert_int_equal(chmod(path_srv_key, 0644), 0);
	hsm_result r = hsm_http_server_new(&cfg, handler, NULL, &srv);
	assert_int_equal(chmod(path_srv_key, 0600), 0);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fds[1]);
	char out[4096] = "";
	ssize_t n = read(fds[0], out, sizeof(out) - 1);
	close(fds[0]);
	assert_true(hsm_ok(r));
	hsm_http_server_free(srv);
	assert_true(n > 0);
	out[n] = '\0';
	assert_non_null(strstr(out, "accessible to group or others (mode 0644)"));
}

static void test_tls_config_errors(void **state)
{
	(void)state;
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.listen = "127.0.0.1:0";
	cfg.tls_cert = "/nonexistent/cert.pem";
	cfg.tls_key = path_srv_key;
	expect_new_fails(&cfg, "tls_cert /nonexistent/cert.pem");
	cfg.tls_cert = path_srv;
	cfg.tls_key = path_cli_key;
	expect_new_fails(&cfg, "does not match");
	cfg.tls_key = path_enc_key;
	expect_new_fails(&cfg, "not an unencrypted PEM private key");
	cfg.tls_key = NULL;
	expect_new_fails(&cfg, "go together");
	cfg.tls_key = path_srv_key;
	cfg.client_auth = HSM_HTTP_CLIENT_AUTH_REQUIRED;
	expect_new_fails(&cfg, "tls_client_ca");
	cfg.tls_client_ca = path_srv_key;
	expect_new_fails(&cfg, "tls_client_ca");
	cfg.tls_cert = NULL;
	cfg.tls_key = NULL;
	expect_new_fails(&cfg, "need TLS");
}

/* The SHA-256 of a PEM certificate file, in hex. */
static void pem_sha256(const char *path, char out[65])
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	unsigned char md[32];
	unsigned int n = 0;
	assert_int_equal(X509_digest(x, EVP_sha256(), md, &n), 1);
	hsm_hex_encode_str(out, md, n);
	X509_free(x);
}

/*
 * A context loaded again replaces the one new connections begin with: a
 * connection open before goes on with the old one, a new one gets the new
 * certificate (here the rogue one, which the client does not trust), and
 * describe() says what was loaded.  A plain HTTP server takes none.
 */
static void test_tls_context_replaced(void **state)
{
	(void)state;
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	uint16_t port = hsm_http_server_port(srv);
	SSL_CTX *trusting = client_ctx(NULL, NULL);
	tc_conn *before = tc_connect(port, false, 5000);
	assert_non_null(before);
	assert_true(tc_tls(before, trusting));
	tc_resp r;
	assert_true(tc_sendf(before, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n") &&
	            tc_read(before, &r, false));
	assert_int_equal(r.status, 200);
	tc_resp_clear(&r);

	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.tls_cert = path_rogue;
	cfg.tls_key = path_srv_key; /* not the certificate's key */
	SSL_CTX *ctx = NULL;
	hsm_result res = hsm_http_tls_load(&cfg, &ctx);
	assert_true(hsm_failed(res) && ctx == NULL);
	assert_non_null(strstr(hsm_last_message(), "does not match the certificate"));
	cfg.tls_key = path_rogue_key;
	cfg.client_auth = HSM_HTTP_CLIENT_AUTH_OPTIONAL;
	cfg.tls_client_ca = path_ca;
	assert_true(hsm_ok(hsm_http_tls_load(&cfg, &ctx)));
	hsm_http_tls_info info;
	assert_true(hsm_ok(hsm_http_tls_describe(ctx, &info)));
	char want[65];
	pem_sha256(path_rogue, want);
	assert_string_equal(info.sha256, want);
	assert_string_equal(info.subject, "CN=client-1,O=hsmd-test");
	int64_t end = 0;
	assert_true(hsm_ok(hsm_http_tls_file_expiry(path_rogue, &end)));
	assert_int_equal(info.cert_expiry, end);
	assert_true(hsm_ok(hsm_http_tls_file_expiry(path_ca, &end)));
	assert_int_equal(info.ca_expiry, end);
	assert_true(hsm_ok(hsm_http_server_use_tls(srv, ctx)));

	int reason;
	assert_null(request(port, trusting, &reason, NULL));
	assert_int_equal(reason, SSL_R_CERTIFICATE_VERIFY_FAILED);
	/* The connection from before still answers, under the certificate it began with. */
	assert_true(tc_sendf(before, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n") &&
	            tc_read(before, &r, false));
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "tls=1 subject=- path=/b");
	tc_resp_clear(&r);
	tc_close(before);
	SSL_CTX_free(trusting);
	hsm_http_server_free(srv);

	/* Without a client CA the bundle's expiry is 0; a plain server refuses a context. */
	cfg.client_auth = HSM_HTTP_CLIENT_AUTH_NONE;
	cfg.tls_client_ca = NULL;
	assert_true(hsm_ok(hsm_http_tls_load(&cfg, &ctx)));
	assert_true(hsm_ok(hsm_http_tls_describe(ctx, &info)));
	assert_int_equal(info.ca_expiry, 0);
	hsm_http_config plain;
	hsm_http_config_defaults(&plain);
	plain.listen = "127.0.0.1:0";
	plain.workers = 1;
	assert_true(hsm_ok(hsm_http_server_new(&plain, handler, NULL, &srv)));
	res = hsm_http_server_use_tls(srv, ctx); /* taken over and freed: ASan sees no leak */
	assert_true(hsm_failed(res));
	assert_non_null(strstr(hsm_last_message(), "plain HTTP"));
	hsm_http_server_free(srv);
}

typedef struct swapper {
	hsm_http_server *srv;
	atomic_bool stop;
	int swaps;
} swapper;

static void *swap_main(void *arg)
{
	swapper *w = arg;
	hsm_http_config cfg;
	hsm_http_config_defaults(&cfg);
	cfg.tls_cert = path_srv;
	cfg.tls_key = path_srv_key;
	while (!atomic_load(&w->stop)) {
		SSL_CTX *ctx = NULL;
		if (hsm_failed(hsm_http_tls_load(&cfg, &ctx)) ||
		    hsm_failed(hsm_http_server_use_tls(w->srv, ctx)))
			return NULL; /* swaps stop short: the test fails on the count */
		w->swaps++;
	}
	return NULL;
}

/* Contexts replaced over and over while clients connect: every handshake
 * gets a whole context (under ASan, none is used after it was freed). */
static void test_tls_context_replaced_under_load(void **state)
{
	(void)state;
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	uint16_t port = hsm_http_server_port(srv);
	SSL_CTX *trusting = client_ctx(NULL, NULL);
	swapper w = {.srv = srv};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, swap_main, &w), 0);
	for (int i = 0; i < 60; i++) {
		int reason;
		char *body = request(port, trusting, &reason, NULL);
		assert_non_null(body);
		free(body);
	}
	atomic_store(&w.stop, true);
	pthread_join(t, NULL);
	assert_true(w.swaps >= 2);
	SSL_CTX_free(trusting);
	hsm_http_server_free(srv);
}

/* n new connections, each with its ClientHello sent (done: answered at once). */
static void open_flood(uint16_t port, SSL_CTX *ctx, tc_conn **flood, bool *done, int n)
{
	for (int i = 0; i < n; i++) {
		flood[i] = tc_connect(port, false, 10000);
		assert_non_null(flood[i]);
		flood[i]->ssl = SSL_new(ctx);
		assert_non_null(flood[i]->ssl);
		SSL_set_fd(flood[i]->ssl, flood[i]->fd);
		assert_int_equal(fcntl(flood[i]->fd, F_SETFL, O_NONBLOCK), 0);
		int rc = SSL_connect(flood[i]->ssl);
		done[i] = rc == 1;
		if (!done[i])
			assert_int_equal(SSL_get_error(flood[i]->ssl, rc), SSL_ERROR_WANT_READ);
	}
}

/* Completes every handshake of a flood (none is dropped), then closes them. */
static void finish_flood(tc_conn **flood, const bool *done, int n)
{
	for (int i = 0; i < n; i++) {
		int rc;
		while (!done[i] && (rc = SSL_connect(flood[i]->ssl)) != 1) {
			assert_int_equal(SSL_get_error(flood[i]->ssl, rc), SSL_ERROR_WANT_READ);
			struct pollfd p = {.fd = flood[i]->fd, .events = POLLIN};
			assert_int_equal(poll(&p, 1, 10000), 1);
		}
		tc_close(flood[i]);
	}
}

/*
 * A flood of new connections does not starve a client already connected:
 * one worker, 120 connections that each sent a ClientHello (an RSA-2048
 * signature each to answer), then a request on an open connection.  The
 * request is answered after a few of the handshakes, not after all of them,
 * and every handshake is then completed, in turn.
 */
static void test_handshakes_wait_behind_requests(void **state)
{
	(void)state;
	enum { N = 120 };
	n_workers = 1;
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	n_workers = 2;
	uint16_t port = hsm_http_server_port(srv);
	SSL_CTX *ctx = client_ctx(NULL, NULL);
	tc_conn *a = tc_connect(port, false, 10000);
	assert_non_null(a);
	assert_true(tc_tls(a, ctx));
	tc_resp r;
	assert_true(tc_sendf(a, "GET /a HTTP/1.1\r\nHost: t\r\n\r\n") && tc_read(a, &r, false));
	tc_resp_clear(&r);
	tc_conn *flood[N];
	bool done[N], waiting[N];
	/*
	 * The flood is judged by the handshakes still waiting when the request
	 * goes: on a loaded machine the worker may answer most of them while this
	 * thread is still opening the rest, which says nothing about the order.
	 * Such a flood is finished and another sent (a few tries).
	 */
	int backlog = 0;
	for (int attempt = 0; attempt < 5 && backlog < N / 2; attempt++) {
		if (attempt > 0)
			finish_flood(flood, done, N);
		open_flood(port, ctx, flood, done, N);
		backlog = 0;
		for (int i = 0; i < N; i++) {
			struct pollfd p = {.fd = flood[i]->fd, .events = POLLIN};
			waiting[i] = !done[i] && poll(&p, 1, 0) == 0;
			backlog += waiting[i];
		}
	}
	if (backlog < N / 2)
		fail_msg("no backlog of handshakes built up in five floods (%d of %d waiting)", backlog,
		         N);
	assert_true(tc_sendf(a, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n") && tc_read(a, &r, false));
	assert_int_equal(r.status, 200);
	tc_resp_clear(&r);
	int answered = 0;
	for (int i = 0; i < N; i++) {
		struct pollfd p = {.fd = flood[i]->fd, .events = POLLIN};
		answered += waiting[i] && poll(&p, 1, 0) == 1;
	}
	if (answered >= backlog / 2)
		fail_msg("the request was answered after %d of the %d handshakes waiting before it",
		         answered, backlog);
	/* The waiting ones are not dropped: each handshake completes. */
	finish_flood(flood, done, N);
	tc_close(a);
	SSL_CTX_free(ctx);
	hsm_http_server_free(srv);
}

/* Waits up to timeout_ms for the server's count of warm TLS connections to be want. */
static size_t wait_warm(hsm_http_server *srv, size_t want, int timeout_ms)
{
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	hsm_http_stats st;
	for (;;) {
		hsm_http_server_stats(srv, &st);
		if (st.tls_warm == want || ms_since(&t0) > timeout_ms)
			return st.tls_warm;
		usleep(10000);
	}
}

static void get_ok(tc_conn *c)
{
	tc_resp r;
	assert_true(tc_sendf(c, "GET /w HTTP/1.1\r\nHost: t\r\n\r\n") && tc_read(c, &r, false));
	assert_int_equal(r.status, 200);
	tc_resp_clear(&r);
}

/*
 * A TLS connection that completed a request keeps OpenSSL's record buffers
 * for the next one, at most HSM_HTTP_TLS_WARM_MAX a worker; after
 * HSM_HTTP_TLS_WARM_IDLE_MS of idling it gives them back at the next sweep
 * and still answers; closing gives its slot back.
 */
static void test_tls_warm_buffers(void **state)
{
	(void)state;
	enum { N = HSM_HTTP_TLS_WARM_MAX + 4 };
	n_workers = 1;
	hsm_http_server *srv = start(HSM_HTTP_CLIENT_AUTH_NONE);
	n_workers = 2;
	uint16_t port = hsm_http_server_port(srv);
	SSL_CTX *ctx = client_ctx(NULL, NULL);
	tc_conn *conns[N];
	for (int i = 0; i < N; i++) {
		conns[i] = tc_connect(port, false, 10000);
		assert_non_null(conns[i]);
		assert_true(tc_tls(conns[i], ctx));
	}
	/* Handshakes alone make no connection warm. */
	assert_int_equal(wait_warm(srv, 0, 0), 0);
	for (int i = 0; i < N; i++)
		get_ok(conns[i]);
	assert_int_equal(wait_warm(srv, HSM_HTTP_TLS_WARM_MAX, 5000), HSM_HTTP_TLS_WARM_MAX);
	/* Another request on each: none counted twice, none past the bound. */
	for (int i = 0; i < N; i++)
		get_ok(conns[i]);
	assert_int_equal(wait_warm(srv, HSM_HTTP_TLS_WARM_MAX, 5000), HSM_HTTP_TLS_WARM_MAX);
	struct timespec idle_from;
	clock_gettime(CLOCK_MONOTONIC, &idle_from);
	assert_int_equal(wait_warm(srv, 0, (int)HSM_HTTP_TLS_WARM_IDLE_MS + 5000), 0);
	long idled = ms_since(&idle_from);
	if (idled < (long)HSM_HTTP_TLS_WARM_IDLE_MS - 50)
		fail_msg("buffers given back after %ld ms of idling, before %u", idled,
		         HSM_HTTP_TLS_WARM_IDLE_MS);
	/* Cooled connections answer as before, and are warm again. */
	for (int i = 0; i < N; i++)
		get_ok(conns[i]);
	assert_int_equal(wait_warm(srv, HSM_HTTP_TLS_WARM_MAX, 5000), HSM_HTTP_TLS_WARM_MAX);
	for (int i = 0; i < N; i++)
		tc_close(conns[i]);
	assert_int_equal(wait_warm(srv, 0, 5000), 0);
	SSL_CTX_free(ctx);
	hsm_http_server_free(srv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tls_round_trip),
	    cmocka_unit_test(test_tls_large_replies),
	    cmocka_unit_test(test_ticket_keys_rotate),
	    cmocka_unit_test(test_tls_versions_and_suites),
	    cmocka_unit_test(test_client_cert_required),
	    cmocka_unit_test(test_client_cert_optional),
	    cmocka_unit_test(test_tls_client_gone),
	    cmocka_unit_test(test_tls_after_proxy_header),
	    cmocka_unit_test(test_tls_key_permissions_warned),
	    cmocka_unit_test(test_tls_config_errors),
	    cmocka_unit_test(test_tls_context_replaced),
	    cmocka_unit_test(test_tls_context_replaced_under_load),
	    cmocka_unit_test(test_handshakes_wait_behind_requests),
	    cmocka_unit_test(test_tls_warm_buffers),
	};
	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
