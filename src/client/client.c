/*
 * client.c - HTTP/1.1 requests to hsmd over one kept-alive connection (plain
 * or TLS from OpenSSL, peer and host name verified), signed with SigV4
 * (client.h).  Blocking, one request at a time, with the client's timeout on
 * connecting, sending and receiving.
 */
#include "client/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "auth/sigv4.h"
#include "client/client_internal.h"
#include "common/http_parse.h"
#include "common/json_read.h"
#include "common/net.h"
#include "common/util.h"

typedef struct endpoint {
	bool tls;
	char host[256];      /* a name or an address, IPv6 without its brackets */
	unsigned port;
	char authority[300]; /* "host:port" or "[v6-address]:port": Host, SigV4, messages */
} endpoint;

/* hsmd's answers carry a few short header fields; a small bound keeps the stack small too,
 * as the PKCS#11 module reads answers on its host application's threads. */
#define HEAD_MAX (16 * 1024)
#define BODY_MAX HSM_CLIENT_BODY_MAX
/* Interim (1xx) answers taken before an answer: a server that sends only those is refused. */
#define INTERIM_MAX 8

/* The kept-alive connection: to one endpoint, reused while it stays open. */
struct hsm_client_conn {
	endpoint ep;
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	uint8_t buf[16384]; /* bytes received and not yet consumed */
	size_t have, off;
	bool timed_out; /* a read waited the whole timeout: the server may be working on it */
	bool ran_out;   /* errno was ENOMEM as the TLS call in progress went to the socket */
};

/* The longest endpoint taken, in bytes. */
#define ENDPOINT_MAX 319
_Static_assert(ENDPOINT_MAX == 319, "the message's number");

/*
 * Whether text (n bytes) is a host name or an IPv4 address: letters, digits, '-', '.' and
 * '_' (not in DNS's host names, but in container and service names that resolve).
 */
static bool host_chars_ok(const char *text, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char ch = text[i];
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		          (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_';
		if (!ok)
			return false;
	}
	return true;
}

/*
 * "http[s]://host[:port][/]", the host a name, an IPv4 address or an IPv6
 * address in brackets; without a port, the scheme's own (443 or 80), as any
 * HTTP client takes it.  Nothing else: every request goes to hsmd's own
 * paths, so a path, query or fragment (a reverse proxy's /kms, a ?token=)
 * would be dropped, and the requests sent elsewhere than the setting says.
 * NULL, or what is wrong with the text as a phrase that quotes none of it:
 * a URL may carry a user name and password.
 */
static const char *endpoint_problem(const char *text, size_t n, endpoint *ep)
{
	char buf[ENDPOINT_MAX + 1];
	if (n == 0)
		return "is empty";
	if (n >= sizeof(buf))
		return "is longer than 319 bytes";
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
		return "must start with http:// or https://";
	}
	/* RFC 3986 3.2.1's userinfo: a password in clear, which no request would send anyway. */
	if (strchr(rest, '@') != NULL)
		return "has a user name or password in it (user:password@host), which no request "
		       "sends: requests are signed with an access key, given apart";
	const char *end = rest + strcspn(rest, "/?#"), *host = rest, *host_end, *port_at = NULL;
	if (!(*end == '\0' || (end[0] == '/' && end[1] == '\0')))
		return "has a path, query or fragment after host:port, which requests would not "
		       "use (only a trailing '/' is taken): https://host:8443";
	bool v6 = *rest == '[';
	if (v6) {
		host = rest + 1;
		host_end = memchr(host, ']', (size_t)(end - host));
		if (host_end == NULL || (host_end + 1 != end && host_end[1] != ':'))
			return "needs its IPv6 address in brackets, https://[2001:db8::1]:8443";
		if (host_end + 1 < end)
			port_at = host_end + 2;
	} else {
		host_end = memchr(rest, ':', (size_t)(end - rest));
		if (host_end != NULL)
			port_at = host_end + 1;
		else
			host_end = end;
	}
	size_t host_len = (size_t)(host_end - host);
	if (host_len == 0 || host_len >= sizeof(ep->host))
		return "needs a host (https://host:8443)";
	memcpy(ep->host, host, host_len);
	ep->host[host_len] = '\0';
	struct in6_addr a6;
	if (v6 ? inet_pton(AF_INET6, ep->host, &a6) != 1 : !host_chars_ok(host, host_len))
		return v6 ? "has a bad IPv6 address in its brackets"
		          : "has a bad host: a host name or IPv4 address takes only letters, digits, "
		            "'-', '.' and '_'";
	int64_t p = ep->tls ? 443 : 80;
	if (port_at != NULL) {
		char port[8] = "";
		size_t port_len = (size_t)(end - port_at);
		/* Digits only: strtoll would also take a sign or leading blanks. */
		if (port_len == 0 || port_len > 5 || strspn(port_at, "0123456789") < port_len)
			return "has a bad port";
		memcpy(port, port_at, port_len);
		if (hsm_failed(hsm_parse_i64(port, 1, 65535, &p)))
			return "has a bad port";
	}
	ep->port = (unsigned)p;
	snprintf(ep->authority, sizeof(ep->authority), v6 ? "[%s]:%u" : "%s:%u", ep->host, ep->port);
	return NULL;
}

/*
 * What is wrong with a whole comma-separated list before it is split, or
 * NULL.  An '@' anywhere is refused: no piece of a usable list holds one,
 * and a password may hold a comma, which would put part of it in a piece of
 * its own ("http://admin:s3cr3t,x@10.0.0.1"), where no check of that piece
 * would see a password.
 */
static const char *list_problem(const char *list)
{
	if (strchr(list, '@') != NULL)
		return "has '@' in it, as a user name or password (user:password@host) has, which "
		       "no request sends: requests are signed with an access key, given apart";
	return NULL;
}

/* "endpoint 2 of the list", or "the endpoint" when the list has one: never its text. */
static void endpoint_name(const char *list, size_t i, char *out, size_t cap)
{
	if (strchr(list, ',') == NULL)
		snprintf(out, cap, "the endpoint");
	else
		snprintf(out, cap, "endpoint %zu of the list", i);
}

/* The i-th (from 1) piece of list, n bytes at text, as the client takes it. */
static hsm_result parse_endpoint(const char *list, size_t i, const char *text, size_t n,
                                 endpoint *ep)
{
	char name[48];
	endpoint_name(list, i, name, sizeof(name));
	const char *problem = list_problem(list);
	if (problem != NULL)
		return HSM_FAIL(HSM_ERR_VALIDATION, "the endpoint list %s", problem);
	problem = endpoint_problem(text, n, ep);
	if (problem != NULL)
		return HSM_FAIL(HSM_ERR_VALIDATION, "%s %s", name, problem);
	return HSM_SUCCESS;
}

/* A piece the client took (parse_endpoint), as messages show it: through the log redaction. */
static void endpoint_shown(const char *text, size_t n, char *out, size_t cap)
{
	char piece[ENDPOINT_MAX + 1];
	snprintf(piece, sizeof(piece), "%.*s", (int)(n < ENDPOINT_MAX ? n : ENDPOINT_MAX), text);
	hsm_location_shown(piece, out, cap);
}

bool hsm_client_endpoints_usable(const char *endpoints, char *why, size_t cap)
{
	const char *problem = list_problem(endpoints);
	if (problem != NULL) {
		snprintf(why, cap, "%s", problem);
		return false;
	}
	size_t i = 1;
	for (const char *p = endpoints;; i++) {
		size_t n = strcspn(p, ",");
		endpoint ep;
		problem = endpoint_problem(p, n, &ep);
		if (problem != NULL) {
			char name[48];
			endpoint_name(endpoints, i, name, sizeof(name));
			snprintf(why, cap, "%s %s", name, problem);
			return false;
		}
		if (p[n] == '\0')
			return true;
		p += n + 1;
	}
}

/* A host that is this machine, by its address or the name every system gives it. */
static bool host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;
	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

hsm_result hsm_client_require_private(const hsm_client *c, const char *what)
{
	HSM_ENSURE(c->endpoints != NULL && *c->endpoints != '\0', HSM_ERR_VALIDATION,
	           "--endpoint is required (or HSM_ENDPOINT)");
	size_t i = 1;
	for (const char *p = c->endpoints; *p != '\0'; i++) {
		const char *this_one = p;
		size_t n = strcspn(p, ",");
		p += n + (p[n] == ',');
		endpoint ep;
		HSM_GUARD(parse_endpoint(c->endpoints, i, this_one, n, &ep));
		char name[48], shown[ENDPOINT_MAX + 1];
		endpoint_name(c->endpoints, i, name, sizeof(name));
		endpoint_shown(this_one, n, shown, sizeof(shown));
		/* Anyone on the path reads plain HTTP, and may answer in the node's stead. */
		HSM_ENSURE(ep.tls || host_is_loopback(ep.host), HSM_ERR_VALIDATION,
		           "%s%s%s is plain HTTP to an address that is not loopback, and %s would "
		           "cross the network in clear: use https://, or http:// only to a loopback "
		           "address (127.0.0.1, [::1], localhost)",
		           name, strchr(c->endpoints, ',') != NULL ? ": " : " ", shown, what);
	}
	return HSM_SUCCESS;
}

/*
 * The error of a failed OpenSSL call made after errno was set to 0: out of
 * memory when an allocation in it failed (malloc's ENOMEM, or OpenSSL's
 * queue: its socket reads set errno to 0 again), else `otherwise`.  Empties
 * the queue.  This client also runs inside applications (the PKCS#11
 * module), where memory running out must not read as a broken connection or
 * a bad server.
 */
/* A write of this thread's TLS exchange met EPIPE: the SIGPIPE it raised is the module's. */
static _Thread_local bool wrote_to_closed;

static hsm_err tls_err(hsm_err otherwise)
{
	hsm_err err = hsm_nomem_or(otherwise);
	for (unsigned long e; (e = ERR_get_error()) != 0;)
		if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
			err = HSM_ERR_NOMEM;
	return err;
}

/*
 * OpenSSL 3.0 often reports an allocation that failed inside a TLS call only
 * as an "internal error", and its socket BIO sets errno to 0 before each
 * system call: a failure in a post-handshake message (a session ticket
 * read before the answer) then reads as a broken connection.  Watched as
 * each operation on the socket BIO begins (the flushes and the alert such a
 * failure makes are some), malloc's ENOMEM is still there; the call in
 * progress began with errno 0.
 */
static long watch_enomem(BIO *b, int oper, const char *argp, size_t len, int argi, long argl,
                         int ret, size_t *processed)
{
	(void)argp, (void)len, (void)argi, (void)argl, (void)processed;
	if ((oper & BIO_CB_RETURN) == 0 && errno == ENOMEM)
		((struct hsm_client_conn *)(void *)BIO_get_callback_arg(b))->ran_out = true;
	if (oper == (BIO_CB_WRITE | BIO_CB_RETURN) && ret <= 0 && errno == EPIPE)
		wrote_to_closed = true;
	return ret;
}

/* tls_err, for a call on k's connection begun with errno 0 and k->ran_out false. */
static hsm_err conn_tls_err(const struct hsm_client_conn *k, hsm_err otherwise)
{
	hsm_err e = tls_err(otherwise);
	return k->ran_out ? HSM_ERR_NOMEM : e;
}

/*
 * Why loading the CA certificates failed, from the first error OpenSSL
 * queued (left there for tls_err): the system's reason for a file it could
 * not open ("No such file or directory"), else OpenSSL's ("no certificate or
 * crl found": not PEM certificates).
 */
static void ca_failure(char *why, size_t cap)
{
	unsigned long e = ERR_peek_error();
	const char *reason = ERR_SYSTEM_ERROR(e) ? strerror(ERR_GET_REASON(e))
	                                         : ERR_reason_error_string(e);
	snprintf(why, cap, "%s", reason != NULL ? reason : "unreadable, or no PEM certificates");
}

static hsm_result make_ssl(const hsm_client *c, const endpoint *ep, SSL_CTX **ctx_out,
                           SSL **ssl_out)
{
	errno = 0;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	HSM_ENSURE(ctx != NULL, tls_err(HSM_ERR_CRYPTO), "cannot create a TLS context");
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* CLEANSE_PLAINTEXT: a decrypted record (an answer: a plaintext, random
	 * bytes, a derived secret) is wiped once read, not left in OpenSSL's read
	 * buffer, nor in the application's heap once that buffer is freed. */
	SSL_CTX_set_options(ctx, SSL_OP_CLEANSE_PLAINTEXT);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int ok = c->ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL)
	                            : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		char why[128];
		ca_failure(why, sizeof(why));
		SSL_CTX_free(ctx);
		return HSM_FAIL(tls_err(HSM_ERR_CRYPTO), "cannot set up TLS for %s (CA file %s): %s",
		                ep->host, c->ca_file ? c->ca_file : "system default", why);
	}
	if (c->cert_file != NULL && *c->cert_file != '\0') {
		const char *key = c->key_file != NULL && *c->key_file != '\0' ? c->key_file : c->cert_file;
		if (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1 ||
		    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			ERR_clear_error();
			SSL_CTX_free(ctx);
			return HSM_FAIL(tls_err(HSM_ERR_CRYPTO),
			                "cannot use the client certificate %s with the key %s (unreadable, "
			                "not PEM, or not a pair)",
			                c->cert_file, key);
		}
	}
	SSL *ssl = SSL_new(ctx);
	char sni[sizeof(ep->host)]; /* the macro takes a char *: a copy, not a cast */
	memcpy(sni, ep->host, sizeof(sni));
	/* SSL_set1_host checks an address against the certificate's IP names, a name
	 * against its DNS names; SNI is for names only (RFC 6066). */
	hsm_net addr;
	bool is_addr = hsm_net_parse(ep->host, false, &addr);
	if (ssl == NULL || SSL_set1_host(ssl, ep->host) != 1 ||
	    (!is_addr && SSL_set_tlsext_host_name(ssl, sni) != 1)) {
		SSL_free(ssl);
		SSL_CTX_free(ctx);
		return HSM_FAIL(tls_err(HSM_ERR_CRYPTO), "cannot set up TLS for %s (CA file %s)", ep->host,
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
	/* Empty is as good as unset (and never an assertion: this code runs inside other
	 * programs, through the PKCS#11 module). */
	HSM_ENSURE(akid != NULL && secret != NULL && *akid != '\0' && *secret != '\0',
	           HSM_ERR_MISSING_AUTH,
	           "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to an hsmd access key");
	const char *region = c->region ? c->region : hsm_env_region();
	hsm_sigv4_header headers[] = {{"Host", ep->authority},
	                              {"Content-Type", "application/x-amz-json-1.1"},
	                              {"X-Amz-Target", target}};
	hsm_sigv4_request req = {"POST", "/", "", headers, 3, (const uint8_t *)body, strlen(body)};
	hsm_secret *s = NULL;
	hsm_sigv4_signer *signer = NULL;
	HSM_GUARD(hsm_secret_from(secret, strlen(secret), &s));
	hsm_result r = hsm_sigv4_signer_new(akid, s, region, NULL, &signer);
	if (hsm_ok(r))
		r = hsm_sigv4_sign(signer, &req, hsm_now(), sig);
	hsm_sigv4_signer_free(signer);
	hsm_secret_free(s);
	return r;
}

/* ---- the connection ------------------------------------------------------------------ */

static void conn_free(struct hsm_client_conn *k)
{
	if (k == NULL)
		return;
	if (k->ssl != NULL)
		SSL_free(k->ssl);
	SSL_CTX_free(k->ctx);
	if (k->fd >= 0)
		close(k->fd);
	OPENSSL_cleanse(k->buf, sizeof(k->buf));
	free(k);
}

void hsm_client_close(hsm_client *c)
{
	conn_free(c->conn);
	c->conn = NULL;
}

static int timeout_ms(const hsm_client *c)
{
	return (c->timeout_s > 0 ? c->timeout_s : 30) * 1000;
}

/* A TCP connection to ep within the timeout; -1 with the reason in *err. */
static int tcp_connect(const hsm_client *c, const endpoint *ep, int *err)
{
	char port[8];
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
	snprintf(port, sizeof(port), "%u", ep->port);
	*err = EHOSTUNREACH;
	errno = 0;
	int gai = getaddrinfo(ep->host, port, &hints, &ai);
	if (gai != 0) {
		if (gai == EAI_MEMORY || (gai == EAI_SYSTEM && errno == ENOMEM))
			*err = ENOMEM;
		return -1;
	}
	int fd = -1;
	for (struct addrinfo *a = ai; a != NULL && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
		if (fd < 0)
			continue;
		int rc = connect(fd, a->ai_addr, a->ai_addrlen);
		if (rc != 0 && errno == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			socklen_t len = sizeof(*err);
			int ready;
			do /* a signal the application handles is no failure */
				ready = poll(&p, 1, timeout_ms(c));
			while (ready < 0 && errno == EINTR);
			rc = ready == 1 &&
			             getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len) == 0 && *err == 0
			         ? 0
			         : -1;
			if (rc != 0 && *err == 0)
				*err = ETIMEDOUT;
		} else if (rc != 0) {
			*err = errno;
		}
		if (rc != 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return -1;
	/* Blocking from here on, each read and write bounded by the timeout. */
	int one = 1, flags = fcntl(fd, F_GETFL);
	struct timeval tv = {.tv_sec = timeout_ms(c) / 1000};
	if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) {
		*err = errno;
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Connects to ep.  *reached is false when no connection could be made at all
 * (the caller then tries the next endpoint); a TLS failure is an error.
 * A handshake that failed is made once more, from a new context, before it
 * is reported: short of memory, OpenSSL can fail quietly (a CA certificate
 * left out as the file is read, a key not decoded), and the failure then
 * reads as a server not trusted.  A server truly refused fails both times;
 * no request has been sent.  Not a handshake that timed out or whose
 * connection broke: the time bound a caller set would double.
 */
static hsm_result conn_open_once(const hsm_client *c, const endpoint *ep,
                                 struct hsm_client_conn **out, bool *reached, bool *refused);

static hsm_result conn_open(const hsm_client *c, const endpoint *ep, struct hsm_client_conn **out,
                            bool *reached)
{
	bool refused = false;
	hsm_result r = conn_open_once(c, ep, out, reached, &refused);
	if (hsm_failed(r) && refused)
		r = conn_open_once(c, ep, out, reached, &refused);
	return r;
}

/* Watches the socket BIO SSL_set_fd made (watch_enomem). */
static bool watch_bio(struct hsm_client_conn *k)
{
	BIO *b = SSL_get_rbio(k->ssl);
	if (b == NULL)
		return false;
	BIO_set_callback_arg(b, (char *)(void *)k);
	BIO_set_callback_ex(b, watch_enomem);
	return true;
}

/*
 * The socket blocks, with SO_RCVTIMEO and SO_SNDTIMEO set: a signal the
 * application handles interrupts a read or write in progress with EINTR
 * even under SA_RESTART (signal(7)), which OpenSSL's socket BIO reports as
 * SSL_ERROR_WANT_READ or _WRITE.  The TLS calls are then made again, as the
 * plain-HTTP path does with recv and send; a timeout (EAGAIN) is not.
 */
static bool tls_interrupted(const SSL *ssl, int rc)
{
	int saved = errno;
	int e = SSL_get_error(ssl, rc);
	bool again = saved == EINTR && (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
	errno = saved;
	return again;
}

static int tls_connect(SSL *ssl)
{
	int rc;
	do
		errno = 0;
	while ((rc = SSL_connect(ssl)) != 1 && tls_interrupted(ssl, rc));
	return rc;
}

/* *refused: the handshake failed in TLS itself (SSL_ERROR_SSL: a certificate, a protocol). */
static hsm_result conn_open_once(const hsm_client *c, const endpoint *ep,
                                 struct hsm_client_conn **out, bool *reached, bool *refused)
{
	*reached = false;
	struct hsm_client_conn *k = calloc(1, sizeof(*k));
	HSM_ENSURE(k != NULL, HSM_ERR_NOMEM, "out of memory");
	k->ep = *ep;
	int err = 0;
	k->fd = tcp_connect(c, ep, &err);
	if (k->fd < 0) {
		conn_free(k);
		return HSM_FAIL(err == ENOMEM ? HSM_ERR_NOMEM : HSM_ERR_IO, "cannot connect to %s: %s",
		                ep->authority, strerror(err));
	}
	*reached = true;
	if (ep->tls) {
		hsm_result r = make_ssl(c, ep, &k->ctx, &k->ssl);
		errno = 0;
		int rc = 1; /* SSL_connect's, once made */
		if (hsm_ok(r) && (SSL_set_fd(k->ssl, k->fd) != 1 || !watch_bio(k) ||
		                  (rc = tls_connect(k->ssl)) != 1)) {
			long v = SSL_get_verify_result(k->ssl);
			*refused = rc != 1 && SSL_get_error(k->ssl, rc) == SSL_ERROR_SSL;
			hsm_err e = conn_tls_err(k, HSM_ERR_IO);
			*refused = *refused && e == HSM_ERR_IO;
			r = HSM_FAIL(e, "TLS with %s failed: %s", ep->authority,
			             e == HSM_ERR_NOMEM ? "out of memory"
			             : v != X509_V_OK     ? X509_verify_cert_error_string(v)
			                                  : "handshake failed");
		}
		if (hsm_failed(r)) {
			conn_free(k);
			return r;
		}
	}
	*out = k;
	return HSM_SUCCESS;
}

static hsm_result conn_write(struct hsm_client_conn *k, const void *p, size_t n)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t w;
		errno = 0;
		k->ran_out = false;
		hsm_err err = HSM_ERR_IO;
		if (k->ssl != NULL) {
			size_t done = 0;
			int rc = SSL_write_ex(k->ssl, b, n, &done);
			if (rc != 1 && tls_interrupted(k->ssl, rc))
				continue; /* the same bytes again, as OpenSSL requires */
			w = rc == 1 ? (ssize_t)done : -1;
			err = conn_tls_err(k, HSM_ERR_IO);
		} else {
			w = send(k->fd, b, n, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			err = hsm_nomem_or(HSM_ERR_IO);
		}
		HSM_ENSURE(w > 0, err, "cannot send to %s%s", k->ep.authority,
		           err == HSM_ERR_NOMEM ? ": out of memory" : "");
		b += w;
		n -= (size_t)w;
	}
	return HSM_SUCCESS;
}

/* Refills the receive buffer; 0 bytes at the end of the stream. */
static hsm_result conn_fill(struct hsm_client_conn *k, size_t *got)
{
	k->have = k->off = 0;
	ssize_t r;
	const char *tls_why = NULL; /* OpenSSL's reason: a node refusing this client says why */
	hsm_err err;
	errno = 0;
	k->ran_out = false;
	if (k->ssl != NULL) {
		size_t done = 0;
		int rc;
		do
			errno = 0;
		while ((rc = SSL_read_ex(k->ssl, k->buf, sizeof(k->buf), &done)) != 1 &&
		       tls_interrupted(k->ssl, rc));
		int e = rc == 1 ? SSL_ERROR_NONE : SSL_get_error(k->ssl, rc);
		if (e == SSL_ERROR_SSL)
			tls_why = ERR_reason_error_string(ERR_peek_last_error());
		k->timed_out = rc != 1 && (errno == EAGAIN || errno == EWOULDBLOCK);
		err = conn_tls_err(k, HSM_ERR_IO);
		r = rc == 1 ? (ssize_t)done : e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	} else {
		do
			r = recv(k->fd, k->buf, sizeof(k->buf), 0);
		while (r < 0 && errno == EINTR);
		k->timed_out = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
		err = hsm_nomem_or(HSM_ERR_IO);
	}
	HSM_ENSURE(r >= 0, err, "no answer from %s (%s%s%s)", k->ep.authority,
	           k->timed_out            ? "timed out"
	           : err == HSM_ERR_NOMEM ? "out of memory"
	                                   : "connection failed",
	           tls_why != NULL && err != HSM_ERR_NOMEM ? ": " : "",
	           tls_why != NULL && err != HSM_ERR_NOMEM ? tls_why : "");
	k->have = (size_t)r;
	*got = k->have;
	return HSM_SUCCESS;
}

/* ---- one exchange ------------------------------------------------------------------------ */

typedef struct answer {
	int status;
	bool close;     /* the server closes the connection after it */
	bool any;       /* some byte of it arrived */
} answer;

/* Reads the status line and headers; *length is -1 when the body ends with the stream. */
static hsm_result read_head(struct hsm_client_conn *k, answer *a, int64_t *length, bool *chunked)
{
	char head[HEAD_MAX + 1];
	size_t n = 0;
	*length = -1;
	*chunked = false;
	for (;;) {
		if (k->off == k->have) {
			size_t got;
			HSM_GUARD(conn_fill(k, &got));
			HSM_ENSURE(got > 0, HSM_ERR_IO, "%s closed the connection%s", k->ep.authority,
			           a->any ? " during its answer" : "");
		}
		a->any = true;
		HSM_ENSURE(n < HEAD_MAX, HSM_ERR_IO, "the answer's header is too long");
		head[n++] = (char)k->buf[k->off++];
		if (n >= 4 && hsm_ct_equal(head + n - 4, "\r\n\r\n", 4))
			break;
	}
	head[n] = '\0';
	/* A NUL would end the text early (a status line without its newline, say). */
	HSM_ENSURE(memchr(head, '\0', n) == NULL, HSM_ERR_IO, "the answer's header holds a NUL byte");
	int minor = 0;
	HSM_ENSURE(sscanf(head, "HTTP/1.%d %d", &minor, &a->status) == 2 && a->status >= 100 &&
	               a->status <= 599,
	           HSM_ERR_IO, "the answer is not HTTP");
	char *fields = strchr(head, '\n');
	HSM_ENSURE(fields != NULL, HSM_ERR_IO, "the answer is not HTTP");
	a->close = minor == 0;
	for (char *save = NULL, *line = strtok_r(fields + 1, "\r\n", &save); line;
	     line = strtok_r(NULL, "\r\n", &save)) {
		char *colon = strchr(line, ':');
		if (colon == NULL)
			continue;
		*colon = '\0';
		char *v = colon + 1 + strspn(colon + 1, " \t");
		for (size_t len = strlen(v); len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t');)
			v[--len] = '\0'; /* optional whitespace after the value, too */
		if (strcasecmp(line, "Content-Length") == 0) {
			HSM_GUARD(hsm_parse_i64(v, 0, BODY_MAX, length));
		} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
			*chunked = strcasecmp(v, "chunked") == 0;
		} else if (strcasecmp(line, "Connection") == 0) {
			a->close = strcasecmp(v, "close") == 0 ? true
			           : strcasecmp(v, "keep-alive") == 0 ? false
			                                             : a->close;
		}
	}
	if (a->status < 200 || a->status == 204 || a->status == 304) {
		*length = 0; /* answers that never have a body (RFC 9112, section 6.3) */
		*chunked = false;
	}
	return HSM_SUCCESS;
}

/* Appends n body bytes (n < 0: up to the end of the stream) to resp. */
static hsm_result read_body(struct hsm_client_conn *k, int64_t n, hsm_buf *resp)
{
	while (n != 0) {
		if (k->off == k->have) {
			size_t got;
			HSM_GUARD(conn_fill(k, &got));
			if (got == 0) {
				HSM_ENSURE(n < 0, HSM_ERR_IO, "the answer was cut short");
				return HSM_SUCCESS;
			}
		}
		size_t avail = k->have - k->off;
		size_t take = n < 0 || (uint64_t)n > avail ? avail : (size_t)n;
		HSM_ENSURE(resp->len + take <= BODY_MAX, HSM_ERR_IO, "the answer is too long");
		HSM_GUARD(hsm_buf_put(resp, k->buf + k->off, take));
		k->off += take;
		if (n > 0)
			n -= (int64_t)take;
	}
	return HSM_SUCCESS;
}

/*
 * A chunked body, through the decoder hsmd reads chunked requests with
 * (common/http_parse.h): the encoded bytes are appended to resp and decoded
 * in place.  Encoded, a body is larger than decoded, within a bound.
 */
static hsm_result read_chunked(struct hsm_client_conn *k, hsm_buf *resp)
{
	size_t mark = resp->len;
	hsm_http_chunked c;
	hsm_http_chunked_init(&c);
	HSM_ENSURE(mark < BODY_MAX, HSM_ERR_IO, "the answer is too long");
	for (;;) {
		if (k->off == k->have) {
			size_t got;
			HSM_GUARD(conn_fill(k, &got));
			HSM_ENSURE(got > 0, HSM_ERR_IO, "the answer was cut short");
		}
		size_t take = k->have - k->off;
		HSM_ENSURE(resp->len - mark + take <= 2 * (size_t)BODY_MAX, HSM_ERR_IO,
		           "the answer is too long");
		HSM_GUARD(hsm_buf_put(resp, k->buf + k->off, take));
		k->off += take;
		hsm_http_parse st =
		    hsm_http_chunked_step(&c, resp->data + mark, resp->len - mark, BODY_MAX - mark);
		if (st == HSM_HTTP_PARSE_OK) {
			/* The encoded bytes left behind the decoded body: wiped, like the rest. */
			OPENSSL_cleanse(resp->data + mark + c.out, resp->len - mark - c.out);
			resp->len = mark + c.out;
			return HSM_SUCCESS;
		}
		HSM_ENSURE(st == HSM_HTTP_PARSE_PARTIAL, HSM_ERR_IO,
		           st == HSM_HTTP_PARSE_TOO_LARGE ? "the answer is too long"
		                                          : "malformed chunked answer");
	}
}

/* Reads one answer, after any interim ones, into resp; refused, resp is as it was. */
static hsm_result read_answer(struct hsm_client_conn *k, answer *a, hsm_buf *resp)
{
	int64_t length = -1;
	bool chunked = false;
	size_t mark = resp->len;
	hsm_result res;
	int interim = 0;
	do /* an interim answer (100 Continue from a proxy, say) comes before the answer */
		res = read_head(k, a, &length, &chunked);
	while (hsm_ok(res) && a->status < 200 && ++interim <= INTERIM_MAX);
	if (hsm_ok(res) && a->status < 200)
		res = HSM_FAIL(HSM_ERR_IO, "%s sent interim answers and no answer", k->ep.authority);
	if (hsm_ok(res))
		res = chunked ? read_chunked(k, resp) : read_body(k, length, resp);
	if (hsm_ok(res) && length < 0 && !chunked)
		a->close = true; /* the body ended with the stream */
	if (hsm_failed(res) && resp->len > mark) {
		OPENSSL_cleanse(resp->data + mark, resp->len - mark);
		resp->len = mark;
	}
	/* Answers can carry secrets (a new access key's, data keys): not kept here. */
	OPENSSL_cleanse(k->buf, sizeof(k->buf));
	k->have = k->off = 0;
	return res;
}

hsm_result hsm_client_answer_from_fd(int fd, int *status, bool *close_after, hsm_buf *resp)
{
	struct hsm_client_conn *k = calloc(1, sizeof(*k));
	HSM_ENSURE(k != NULL, HSM_ERR_NOMEM, "out of memory");
	k->fd = fd;
	snprintf(k->ep.authority, sizeof(k->ep.authority), "fd %d", fd);
	answer a;
	memset(&a, 0, sizeof(a));
	hsm_result r = read_answer(k, &a, resp);
	k->fd = -1; /* the caller's */
	conn_free(k);
	*status = a.status;
	*close_after = a.close;
	return r;
}

/* Sends a request (POST with target and body, or GET of path) and reads its answer. */
static hsm_result exchange(struct hsm_client_conn *k, const hsm_client *c, const char *path,
                           const char *target, const char *body, bool sign, answer *a,
                           hsm_buf *resp)
{
	hsm_buf req = {0};
	hsm_sigv4_signature sig;
	hsm_result res = HSM_SUCCESS;
	memset(a, 0, sizeof(*a));
	if (sign)
		HSM_TRY(sign_request(&k->ep, c, target, body, &sig));
	HSM_TRY(hsm_buf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\n", target ? "POST" : "GET",
	                       path, k->ep.authority));
	if (target != NULL)
		HSM_TRY(hsm_buf_printf(&req,
		                       "Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: %s\r\n"
		                       "Content-Length: %zu\r\n",
		                       target, strlen(body)));
	if (sign)
		HSM_TRY(hsm_buf_printf(&req, "X-Amz-Date: %s\r\nAuthorization: %s\r\n", sig.amz_date,
		                       sig.authorization));
	HSM_TRY(hsm_buf_put_str(&req, "\r\n"));
	if (target != NULL)
		HSM_TRY(hsm_buf_put_str(&req, body));
	HSM_TRY(conn_write(k, req.data, req.len));
	res = read_answer(k, a, resp);
out:
	hsm_buf_free(&req);
	return res;
}

/*
 * One request over the kept connection to ep, opening it if needed.  A kept
 * connection the server has closed meanwhile (idle timeout) fails before any
 * byte of an answer: then once more on a new connection.  Not after a read
 * that timed out: the server may have received the request and be making the
 * change, and a second CreateKey would make a second key.
 */
static hsm_result request(hsm_client *c, const endpoint *ep, const char *target,
                          const char *body, bool sign, answer *a, hsm_buf *resp, bool *reached)
{
	struct hsm_client_conn *k = c->conn;
	if (k != NULL && (k->ep.tls != ep->tls || k->ep.port != ep->port ||
	                  strcmp(k->ep.host, ep->host) != 0)) {
		hsm_client_close(c);
		k = NULL;
	}
	for (int attempt = 0;; attempt++) {
		bool reused = k != NULL;
		*reached = true;
		if (k == NULL) {
			HSM_GUARD(conn_open(c, ep, &k, reached));
			c->conn = k;
		}
		hsm_result r = exchange(k, c, "/", target, body, sign, a, resp);
		bool timed_out = k->timed_out;
		if (hsm_failed(r) || a->close)
			hsm_client_close(c);
		/* Only a connection found closed is tried again: never a request that failed
		 * for want of memory, which may have been sent already. */
		if (hsm_ok(r) || r.err != HSM_ERR_IO || !reused || a->any || timed_out || attempt > 0)
			return r;
		k = NULL;
	}
}

/*
 * OpenSSL sends on a TLS connection with write(), not send(MSG_NOSIGNAL): to a
 * peer that is gone (a node restarted, or a kept connection it closed as idle,
 * after which OpenSSL sends an alert as it reads the unexpected end) the kernel
 * raises SIGPIPE, whose default action ends the process, and the PKCS#11 module
 * runs inside applications that may not ignore it.  So the calling thread
 * blocks SIGPIPE during an exchange and takes back the one its own write
 * raised (a write's SIGPIPE is the writing thread's; watch_enomem notes the
 * EPIPE), leaving any other to the application; EPIPE is then an I/O failure.
 */
typedef struct pipe_guard {
	sigset_t old;
	bool blocked, was_pending;
} pipe_guard;

static void pipe_block(pipe_guard *g)
{
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
	g->blocked = pthread_sigmask(SIG_BLOCK, &pipe, &g->old) == 0;
	wrote_to_closed = false;
}

static void pipe_unblock(pipe_guard *g)
{
	if (!g->blocked)
		return;
	int saved = errno;
	sigset_t pipe, pending;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	/* Only the one a write of the module's raised (as libpq does): another SIGPIPE that
	 * arrived meanwhile, sent to this thread or raised by a handler's write, is the
	 * application's, and is delivered (or stays pending) as the mask is restored. */
	if (wrote_to_closed && !g->was_pending && sigpending(&pending) == 0 &&
	    sigismember(&pending, SIGPIPE) == 1) {
		const struct timespec now = {0, 0};
		while (sigtimedwait(&pipe, NULL, &now) < 0 && errno == EINTR)
			;
	}
	(void)pthread_sigmask(SIG_SETMASK, &g->old, NULL);
	errno = saved;
}

static hsm_result call_unguarded(hsm_client *c, const char *target, const char *body, bool sign,
                                 int *status, hsm_buf *resp);

hsm_result hsm_client_call(hsm_client *c, const char *target, const char *body, bool sign,
                           int *status, hsm_buf *resp)
{
	pipe_guard g;
	pipe_block(&g);
	hsm_result r = call_unguarded(c, target, body, sign, status, resp);
	pipe_unblock(&g);
	return r;
}

static hsm_result call_unguarded(hsm_client *c, const char *target, const char *body, bool sign,
                                 int *status, hsm_buf *resp)
{
	HSM_ENSURE(c->endpoints != NULL && *c->endpoints != '\0', HSM_ERR_VALIDATION,
	           "--endpoint is required (or HSM_ENDPOINT)");
	static const char unavailable[] = "\"ServiceUnavailableException\"";
	static const char sealed[] = "hsmd is sealed";
	const char *p = c->endpoints;
	char tried[512] = "";
	for (size_t i = 1; *p != '\0'; i++) {
		const char *this_one = p;
		size_t n = strcspn(p, ",");
		p += n;
		if (*p == ',')
			p++;
		endpoint ep;
		answer a;
		bool reached;
		HSM_GUARD(parse_endpoint(c->endpoints, i, this_one, n, &ep));
		size_t before = resp->len;
		hsm_result r = request(c, &ep, target, body, sign, &a, resp, &reached);
		/* A sealed node refused the request before doing anything with it: the next node,
		 * if any, may take it.  Not so other 503s: one whose record could not be written
		 * after it ran is withheld, and sent again it would run twice. */
		if (hsm_ok(r) && a.status == 503 && *p != '\0' &&
		    memmem(resp->data + before, resp->len - before, unavailable,
		           sizeof(unavailable) - 1) != NULL &&
		    memmem(resp->data + before, resp->len - before, sealed, sizeof(sealed) - 1) !=
		        NULL) {
			resp->len = before;
			continue;
		}
		if (hsm_ok(r)) {
			*status = a.status;
			return HSM_SUCCESS;
		}
		/* It answered, or TLS failed, or memory ran out here: not a reason to try another node. */
		if (reached || r.err == HSM_ERR_NOMEM)
			return r;
		char shown[ENDPOINT_MAX + 1];
		endpoint_shown(this_one, n, shown, sizeof(shown));
		size_t used = strlen(tried);
		snprintf(tried + used, sizeof(tried) - used, "%s%s", used ? ", " : "", shown);
	}
	return HSM_FAIL(HSM_ERR_IO, "no endpoint answered (tried %s)", tried);
}

hsm_result hsm_client_call_ok(hsm_client *c, const char *target, const char *body, bool sign,
                          hsm_buf *resp)
{
	int status = 0;
	HSM_GUARD(hsm_client_call(c, target, body, sign, &status, resp));
	if (status == 200)
		return HSM_SUCCESS;
	json_t *j = NULL;
	unsigned line, col;
	if (hsm_failed(hsm_json_read(resp->data, resp->len, &j, &line, &col)))
		j = NULL; /* no error document: the status says what is known */
	const char *type = j ? json_string_value(json_object_get(j, "__type")) : NULL;
	const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
	/* The server's error, so that a caller can tell one from another (HSM_ERR_INTERNAL if unknown). */
	hsm_result r = HSM_FAIL(type != NULL ? hsm_err_from_kms_name(type) : HSM_ERR_INTERNAL,
	                        "%s (HTTP %d): %s", type ? type : "error", status,
	                        msg ? msg : "no message");
	json_decref(j);
	return r;
}

hsm_result hsm_client_call_json(hsm_client *c, const char *target, const json_t *body,
                            bool sign, json_t **out)
{
	/* Callers build body with json_pack, which gives NULL out of memory. */
	HSM_ENSURE(body != NULL, HSM_ERR_NOMEM, "out of memory");
	/* Written and read by hsmd's own JSON code, which fails whole when memory
	 * runs out, where jansson's may send or read other text. */
	char *text = NULL;
	HSM_GUARD(hsm_json_text(body, JSON_COMPACT, &text));
	hsm_buf resp;
	hsm_buf_init_secure(&resp);
	hsm_result r = hsm_client_call_ok(c, target, text, sign, &resp);
	hsm_wiping_free(text); /* a request may carry a plaintext */
	if (hsm_ok(r)) {
		unsigned line, col;
		r = hsm_json_read(resp.data, resp.len, out, &line, &col);
		if (hsm_failed(r) && r.err != HSM_ERR_NOMEM)
			r = HSM_FAIL(HSM_ERR_SERIALIZATION, "the server's answer is not JSON");
	}
	hsm_buf_free(&resp);
	return r;
}

/* ---- Unsigned GET of a public document ------------------------------------------- */

hsm_result hsm_client_get(const hsm_client *c, const char *url, hsm_buf *resp)
{
	/* A user name and password would not be sent, and no message may quote them: with a
	 * '/' in the password, even the redaction of logs would not see where they end. */
	HSM_ENSURE(strchr(url, '@') == NULL, HSM_ERR_VALIDATION,
	           "the URL has '@' in it, as a user name or password (user:password@host) has, "
	           "which is not sent: give the URL without it");
	char shown[160];
	hsm_location_shown(url, shown, sizeof(shown));
	endpoint ep;
	size_t scheme = hsm_str_has_prefix(url, "https://") ? 8 : 7;
	const char *path = strchr(url + (strlen(url) >= scheme ? scheme : 0), '/');
	HSM_ENSURE(path != NULL && strlen(path) < 2048, HSM_ERR_VALIDATION,
	           "URL %s needs a path (https://host:port/.well-known/jwks.json)", shown);
	/* The path goes into the request line as it is: printable, no blank, no fragment. */
	for (const char *q = path; *q != '\0'; q++)
		HSM_ENSURE(*q > ' ' && *q < 0x7f && *q != '#', HSM_ERR_VALIDATION,
		           "URL %s has a blank, a control character or a fragment in its path", shown);
	const char *problem = endpoint_problem(url, (size_t)(path - url), &ep);
	HSM_ENSURE(problem == NULL, HSM_ERR_VALIDATION, "URL %s: its scheme and host %s", shown,
	           problem);
	struct hsm_client_conn *k = NULL;
	bool reached;
	answer a;
	pipe_guard g;
	pipe_block(&g);
	hsm_result r = conn_open(c, &ep, &k, &reached);
	if (hsm_ok(r)) {
		r = exchange(k, c, path, NULL, NULL, false, &a, resp);
		conn_free(k);
	}
	pipe_unblock(&g);
	HSM_GUARD(r);
	HSM_ENSURE(a.status == 200, HSM_ERR_IO, "%s answered HTTP %d", shown, a.status);
	return HSM_SUCCESS;
}
