/*
 * http_tls.c - the server's TLS policy (one SSL_CTX shared by all workers,
 * replaced whole when the files are loaded again: hsm_http_server_use_tls).
 *
 * - TLS 1.2 is the floor and 1.3 is preferred (RFC 8446; RFC 9325 section
 *   3.1.1 recommends against anything older).
 * - TLS 1.2 suites are ECDHE with an AEAD only (RFC 9325 section 4.2); TLS 1.3
 *   keeps OpenSSL's default suites, which are all AEAD.
 * - Renegotiation is refused (a CPU-exhaustion lever, and nothing here needs it).
 * - Resumption uses session tickets under rotating keys (http_tls_ticket.c).
 * - Client certificates are verified against tls_client_ca; a certificate that
 *   fails verification ends the handshake in both "optional" and "required"
 *   modes, and "required" also fails a handshake without one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/buf.h"
#include "common/encoding.h"
#include "common/log.h"
#include "server/http_internal.h"

#define TLS12_CIPHERS                                                                      \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                           \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                           \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS_GROUPS "X25519:P-256:P-384"
#define TLS_VERIFY_DEPTH 4
#define TLS_KEY_FILE_MAX ((size_t)64 << 10)
#define SUBJECT_MAX 1024

/*
 * The reason of OpenSSL's last error, for messages; clears the queue.  A file
 * that could not be opened (missing, unreadable) is queued as the OS error
 * first and then only as "system lib" by each layer above it: that OS error
 * is the reason given.
 */
static const char *ossl_reason(void)
{
	unsigned long e, last = 0;
	int os_error = 0;
	while ((e = ERR_get_error()) != 0) {
		if (ERR_SYSTEM_ERROR(e) && os_error == 0)
			os_error = ERR_GET_REASON(e);
		last = e;
	}
	if (os_error != 0)
		return strerror(os_error);
	const char *r = last ? ERR_reason_error_string(last) : NULL;
	return r ? r : "unknown error";
}

/* A passphrase callback that refuses: encrypted keys would need a prompt. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

static void warn_key_permissions(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return;
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		hsm_warn("tls_key %s is accessible to group or others (mode %04o); use chmod 600",
		         path, (unsigned)(st.st_mode & 07777));
}

/* Loads the private key through wiped memory: the file's bytes are the key. */
static hsm_result load_key(SSL_CTX *ctx, const char *path)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf pem;
	BIO *bio = NULL;
	EVP_PKEY *pkey = NULL;
	hsm_buf_init_secure(&pem);
	warn_key_permissions(path);
	HSM_TRY(hsm_read_file(path, TLS_KEY_FILE_MAX, &pem));
	HSM_CHECK(pem.len <= (size_t)INT32_MAX, HSM_ERR_VALIDATION, "tls_key %s is too large", path);
	bio = BIO_new_mem_buf(pem.data, (int)pem.len);
	HSM_CHECK(bio != NULL, HSM_ERR_NOMEM, "out of memory");
	pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	HSM_CHECK(pkey != NULL, HSM_ERR_VALIDATION,
	          "tls_key %s: not an unencrypted PEM private key (%s)", path, ossl_reason());
	/* Said plainly before OpenSSL's own check ("key values mismatch"): a renewal
	 * that replaced the certificate and not yet its key is the usual cause. */
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	HSM_CHECK(leaf == NULL || X509_check_private_key(leaf, pkey) == 1, HSM_ERR_VALIDATION,
	          "tls_key %s does not match the certificate in tls_cert", path);
	ERR_clear_error();
	HSM_CHECK(SSL_CTX_use_PrivateKey(ctx, pkey) == 1, HSM_ERR_VALIDATION, "tls_key %s: %s", path,
	          ossl_reason());
	HSM_CHECK(SSL_CTX_check_private_key(ctx) == 1, HSM_ERR_VALIDATION,
	          "tls_key %s does not match the certificate in tls_cert", path);
out:
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	hsm_buf_free(&pem);
	return res;
}

static hsm_result set_policy(SSL_CTX *ctx)
{
	HSM_ENSURE(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
	               SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) == 1 &&
	               SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) == 1,
	           HSM_ERR_CRYPTO, "cannot set the TLS policy: %s", ossl_reason());
	/* CLEANSE_PLAINTEXT: a decrypted record (a request body: a share, a
	 * plaintext) is wiped from OpenSSL's read buffer once it is taken. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                             SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_CLEANSE_PLAINTEXT);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	/* One TLS 1.3 ticket per handshake is enough for a client to resume. */
	HSM_ENSURE(SSL_CTX_set_num_tickets(ctx, 1) == 1, HSM_ERR_CRYPTO, "cannot set tickets");
	HSM_GUARD(hsm_http_tls_tickets_init(ctx));
	static const unsigned char sid_ctx[] = "hsmd";
	HSM_ENSURE(SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) == 1,
	           HSM_ERR_CRYPTO, "cannot set the session context");
	/* Record buffers given back as they empty, but for the connections a
	 * worker keeps warm (HSM_HTTP_TLS_WARM_MAX, http_conn.c). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* Read whatever has arrived in one read(2), not a record header and then
	 * its body in two: the reader (http_conn.c) takes records until OpenSSL
	 * wants more from the socket, so nothing read ahead is left waiting. */
	SSL_CTX_set_read_ahead(ctx, 1);
	return HSM_SUCCESS;
}

static hsm_result set_client_auth(SSL_CTX *ctx, const hsm_http_config *cfg)
{
	if (cfg->client_auth == HSM_HTTP_CLIENT_AUTH_NONE)
		return HSM_SUCCESS;
	HSM_ENSURE(cfg->tls_client_ca != NULL, HSM_ERR_VALIDATION,
	           "client certificates need tls_client_ca");
	HSM_ENSURE(SSL_CTX_load_verify_file(ctx, cfg->tls_client_ca) == 1, HSM_ERR_VALIDATION,
	           "tls_client_ca %s: %s", cfg->tls_client_ca, ossl_reason());
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca);
	HSM_ENSURE(names != NULL, HSM_ERR_VALIDATION, "tls_client_ca %s holds no certificate",
	           cfg->tls_client_ca);
	SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
	int mode = SSL_VERIFY_PEER;
	if (cfg->client_auth == HSM_HTTP_CLIENT_AUTH_REQUIRED)
		mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	SSL_CTX_set_verify(ctx, mode, NULL);
	SSL_CTX_set_verify_depth(ctx, TLS_VERIFY_DEPTH);
	return HSM_SUCCESS;
}

hsm_result hsm_http_tls_load(const hsm_http_config *cfg, SSL_CTX **out)
{
	hsm_result res = HSM_SUCCESS;
	HSM_ENSURE(cfg->tls_key != NULL, HSM_ERR_VALIDATION, "tls_cert needs tls_key");
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	HSM_CHECK(ctx != NULL, HSM_ERR_CRYPTO, "cannot create a TLS context: %s", ossl_reason());
	HSM_TRY(set_policy(ctx));
	HSM_CHECK(SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) == 1, HSM_ERR_VALIDATION,
	          "tls_cert %s: %s", cfg->tls_cert, ossl_reason());
	HSM_TRY(load_key(ctx, cfg->tls_key));
	HSM_TRY(set_client_auth(ctx, cfg));
	*out = ctx;
	ctx = NULL;
out:
	SSL_CTX_free(ctx);
	return res;
}

/* The notAfter of x as seconds since the epoch, folded into *earliest. */
static void fold_not_after(const X509 *x, int64_t *earliest)
{
	struct tm tm;
	if (x != NULL && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) {
		int64_t t = (int64_t)timegm(&tm);
		*earliest = t < *earliest ? t : *earliest;
	}
}

/* t as seconds since the epoch; false when it cannot be read. */
static bool asn1_seconds(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return false;
	*out = (int64_t)timegm(&tm);
	return true;
}

hsm_result hsm_http_tls_check_dates(SSL_CTX *ctx, const char *cert_path)
{
	HSM_ASSERT(ctx != NULL && cert_path != NULL);
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	HSM_ENSURE(leaf != NULL, HSM_ERR_INTERNAL, "the TLS context has no certificate");
	int64_t now = hsm_now(), not_before = 0, not_after = 0;
	char when[21];
	if (asn1_seconds(X509_get0_notAfter(leaf), &not_after) && not_after < now) {
		hsm_format_time(not_after, when);
		return HSM_FAIL(HSM_ERR_VALIDATION,
		                "tls_cert %s: the certificate expired at %s; clients refuse it",
		                cert_path, when);
	}
	if (asn1_seconds(X509_get0_notBefore(leaf), &not_before) && not_before > now) {
		hsm_format_time(not_before, when);
		return HSM_FAIL(HSM_ERR_VALIDATION,
		                "tls_cert %s: the certificate is not valid until %s; clients refuse it",
		                cert_path, when);
	}
	return HSM_SUCCESS;
}

/* A certificate's subject as RFC 2253 text (malloc'd), or NULL: none, or over SUBJECT_MAX. */
static char *subject_text(X509 *cert)
{
	BIO *bio = BIO_new(BIO_s_mem());
	if (bio == NULL)
		return NULL;
	char *subject = NULL;
	if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
		char *p = NULL;
		long n = BIO_get_mem_data(bio, &p);
		if (n >= 0 && n < SUBJECT_MAX && p != NULL) {
			subject = malloc((size_t)n + 1);
			if (subject != NULL) {
				memcpy(subject, p, (size_t)n);
				subject[n] = '\0';
			}
		}
	}
	BIO_free(bio);
	return subject;
}

hsm_result hsm_http_tls_describe(SSL_CTX *ctx, hsm_http_tls_info *out)
{
	HSM_ASSERT(ctx != NULL && out != NULL);
	memset(out, 0, sizeof(*out));
	X509 *leaf = SSL_CTX_get0_certificate(ctx);
	HSM_ENSURE(leaf != NULL, HSM_ERR_INTERNAL, "the TLS context has no certificate");
	int64_t earliest = INT64_MAX;
	fold_not_after(leaf, &earliest);
	STACK_OF(X509) *chain = NULL;
	if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1 && chain != NULL)
		for (int i = 0; i < sk_X509_num(chain); i++)
			fold_not_after(sk_X509_value(chain, i), &earliest);
	out->cert_expiry = earliest == INT64_MAX ? 0 : earliest;
	/* The client CA bundle: every certificate the verification store holds. */
	earliest = INT64_MAX;
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	STACK_OF(X509_OBJECT) *objs = store != NULL ? X509_STORE_get0_objects(store) : NULL;
	for (int i = 0; objs != NULL && i < sk_X509_OBJECT_num(objs); i++)
		fold_not_after(X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i)), &earliest);
	out->ca_expiry = earliest == INT64_MAX ? 0 : earliest;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	HSM_ENSURE(X509_digest(leaf, EVP_sha256(), md, &n) == 1 && n == 32, HSM_ERR_CRYPTO,
	           "cannot hash the certificate: %s", ossl_reason());
	hsm_hex_encode_str(out->sha256, md, n);
	char *subject = subject_text(leaf);
	snprintf(out->subject, sizeof(out->subject), "%s", subject != NULL ? subject : "");
	free(subject);
	ERR_clear_error();
	return HSM_SUCCESS;
}

hsm_result hsm_http_tls_file_expiry(const char *path, int64_t *not_after)
{
	FILE *f = fopen(path, "r");
	HSM_ENSURE(f != NULL, HSM_ERR_VALIDATION, "cannot read %s: %s", path, strerror(errno));
	int64_t earliest = INT64_MAX;
	X509 *x;
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
		fold_not_after(x, &earliest);
		X509_free(x);
	}
	ERR_clear_error(); /* the end of the file reads as an error */
	fclose(f);
	HSM_ENSURE(earliest != INT64_MAX, HSM_ERR_VALIDATION, "%s holds no certificate", path);
	*not_after = earliest;
	return HSM_SUCCESS;
}

char *hsm_http_tls_client_subject(SSL *ssl)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
		return NULL;
	return subject_text(cert);
}
