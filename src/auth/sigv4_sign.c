/*
 * sigv4_sign.c - signing requests for hsmd's own clients (hsmctl, the
 * PKCS#11 module, the load generator).
 *
 * The signer keeps the signing key of the current day, so the steady-state
 * cost of a signature is the body hash, the canonical-request hash and one
 * HMAC; the canonical request is built in a buffer the signer reuses.
 */
#include <stdlib.h>
#include <string.h>

#include "auth/sigv4_internal.h"
#include "common/encoding.h"
#include "common/util.h"

struct hsm_sigv4_signer {
	char access_key_id[HSM_SIGV4_AKID_MAX + 1];
	char region[HSM_SIGV4_REGION_MAX + 1];
	char service[HSM_SIGV4_SERVICE_MAX + 1];
	hsm_secret *secret;                    /* the secret access key */
	char key_date[HSM_SIGV4_DATE_LEN + 1]; /* scope date of `key`, "" before first use */
	EVP_MAC_CTX *mac;                      /* HMAC keyed with the signing key of key_date */
	hsm_buf creq;                          /* canonical request scratch */
};

/* Headers that are not signed: replaced by the signature, or rewritten by proxies. */
static const char *const unsigned_headers[] = {
    "authorization", "x-amz-date", "user-agent", "expect", "x-amzn-trace-id",
};

static bool valid_name(const char *s, size_t max, bool scope)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		          (scope ? c == '-' : ((c >= 'A' && c <= 'Z') || c == '_'));
		if (!ok)
			return false;
	}
	return true;
}

hsm_result hsm_sigv4_signer_new(const char *access_key_id, const hsm_secret *secret_access_key,
                                const char *region, const char *service,
                                hsm_sigv4_signer **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_sigv4_signer *s = NULL;
	HSM_ASSERT(access_key_id != NULL && secret_access_key != NULL && region != NULL && out);
	if (service == NULL)
		service = HSM_SIGV4_SERVICE_KMS;
	HSM_CHECK(valid_name(access_key_id, HSM_SIGV4_AKID_MAX, false), HSM_ERR_VALIDATION,
	          "access key id must be 1 to %d letters, digits or '_'", HSM_SIGV4_AKID_MAX);
	HSM_CHECK(valid_name(region, HSM_SIGV4_REGION_MAX, true) &&
	              valid_name(service, HSM_SIGV4_SERVICE_MAX, true),
	          HSM_ERR_VALIDATION, "region and service must be lowercase letters, digits or '-'");
	s = calloc(1, sizeof(*s));
	HSM_CHECK(s != NULL, HSM_ERR_NOMEM, "out of memory");
	memcpy(s->access_key_id, access_key_id, strlen(access_key_id) + 1);
	memcpy(s->region, region, strlen(region) + 1);
	memcpy(s->service, service, strlen(service) + 1);
	HSM_TRY(hsm_secret_dup(secret_access_key, &s->secret));
	*out = s;
	s = NULL;
out:
	hsm_sigv4_signer_free(s);
	return res;
}

void hsm_sigv4_signer_free(hsm_sigv4_signer *s)
{
	if (s == NULL)
		return;
	hsm_secret_free(s->secret);
	EVP_MAC_CTX_free(s->mac);
	hsm_buf_free(&s->creq);
	free(s);
}

/* Derives the signing key when the day changed since the last signature. */
static hsm_result refresh_key(hsm_sigv4_signer *s, const char *amz_date)
{
	hsm_result res = HSM_SUCCESS;
	char date[HSM_SIGV4_DATE_LEN + 1];
	hsm_secret *key = NULL;
	EVP_MAC_CTX *mac = NULL;
	if (s->mac != NULL && strncmp(s->key_date, amz_date, HSM_SIGV4_DATE_LEN) == 0)
		return HSM_SUCCESS;
	memcpy(date, amz_date, HSM_SIGV4_DATE_LEN);
	date[HSM_SIGV4_DATE_LEN] = '\0';
	HSM_TRY(hsm_sigv4_signing_key(s->secret, date, s->region, s->service, &key));
	HSM_TRY(hsm_sigv4_mac_new(key, &mac));
	EVP_MAC_CTX_free(s->mac);
	s->mac = mac;
	memcpy(s->key_date, date, sizeof(date));
out:
	hsm_secret_free(key);
	return res;
}

static int name_cmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char x = (unsigned char)hsm_sigv4_lower(*a);
		unsigned char y = (unsigned char)hsm_sigv4_lower(*b);
		if (x != y || x == '\0')
			return (int)x - (int)y;
	}
}

static bool token_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Writes the sorted, lowercase, de-duplicated names of hdrs as "a;b;c". */
static hsm_result signed_list(const hsm_sigv4_header *hdrs, size_t n, char *out, size_t cap)
{
	size_t order[HSM_SIGV4_MAX_HEADERS + 1];
	size_t len = 0, names = 0;
	for (size_t i = 0; i < n; i++) {
		size_t j = i;
		while (j > 0 && name_cmp(hdrs[order[j - 1]].name, hdrs[i].name) > 0) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = i;
	}
	for (size_t i = 0; i < n; i++) {
		const char *name = hdrs[order[i]].name;
		if (i > 0 && name_cmp(hdrs[order[i - 1]].name, name) == 0)
			continue;
		size_t nl = strlen(name);
		HSM_ENSURE(++names <= HSM_SIGV4_MAX_SIGNED_HEADERS && len + nl + 1 < cap,
		           HSM_ERR_VALIDATION, "too many headers to sign");
		if (len > 0)
			out[len++] = ';';
		for (size_t k = 0; k < nl; k++) {
			char c = hsm_sigv4_lower(name[k]);
			HSM_ENSURE(token_char(c), HSM_ERR_VALIDATION, "header name is not an HTTP token");
			out[len++] = c;
		}
	}
	out[len] = '\0';
	return HSM_SUCCESS;
}

/* Copies the headers to sign into hdrs and adds X-Amz-Date. */
static hsm_result collect_headers(const hsm_sigv4_request *req, const char *amz_date,
                                  hsm_sigv4_header *hdrs, size_t *n_out)
{
	size_t n = 0;
	bool host = false;
	for (size_t i = 0; i < req->n_headers; i++) {
		const hsm_sigv4_header *h = &req->headers[i];
		bool skip = false;
		for (size_t k = 0; k < sizeof(unsigned_headers) / sizeof(unsigned_headers[0]); k++)
			skip = skip || name_cmp(h->name, unsigned_headers[k]) == 0;
		if (skip)
			continue;
		host = host || name_cmp(h->name, "host") == 0;
		hdrs[n++] = *h;
	}
	HSM_ENSURE(host, HSM_ERR_VALIDATION, "a request to sign needs a Host header");
	hdrs[n].name = "X-Amz-Date";
	hdrs[n].value = amz_date;
	*n_out = n + 1;
	return HSM_SUCCESS;
}

hsm_result hsm_sigv4_sign(hsm_sigv4_signer *s, const hsm_sigv4_request *req, int64_t now,
                          hsm_sigv4_signature *out)
{
	hsm_sigv4_header hdrs[HSM_SIGV4_MAX_HEADERS + 1];
	char list[HSM_SIGV4_SIGNED_HEADERS_MAX + 1];
	char payload_hex[HSM_SIGV4_HEX_HASH_LEN + 1], sig_hex[2 * HSM_SIGV4_SIG_LEN + 1];
	char amz_date[HSM_SIGV4_AMZ_DATE_LEN + 1];
	uint8_t mac[HSM_SIGV4_SIG_LEN];
	hsm_sigv4_request view;
	size_t n = 0;
	HSM_ASSERT(s != NULL && out != NULL);
	HSM_GUARD(hsm_sigv4_check_bounds(req));
	hsm_sigv4_format_amz_date(now, amz_date);
	HSM_GUARD(refresh_key(s, amz_date));
	HSM_GUARD(collect_headers(req, amz_date, hdrs, &n));
	HSM_GUARD(signed_list(hdrs, n, list, sizeof(list)));
	view = *req;
	view.headers = hdrs;
	view.n_headers = n;
	s->creq.len = 0; /* public data: no need to wipe between uses */
	HSM_GUARD(hsm_sigv4_sha256_hex(req->body, req->body_len, payload_hex));
	HSM_GUARD(hsm_sigv4_build_canonical(&view, list, payload_hex, &s->creq));
	HSM_GUARD(hsm_sigv4_compute(&s->creq, amz_date, s->key_date, s->region, s->service, s->mac,
	                            mac));
	hsm_hex_encode_str(sig_hex, mac, HSM_SIGV4_SIG_LEN);
	/* "<alg> Credential=<akid>/<scope>, SignedHeaders=<list>, Signature=<hex>" */
	hsm_sigv4_signature sig;
	hsm_sb b;
	const char *const parts[] = {HSM_SIGV4_ALGORITHM, " Credential=", s->access_key_id, "/",
	                             s->key_date, "/", s->region, "/", s->service, "/",
	                             HSM_SIGV4_TERMINATOR, ", SignedHeaders=", list,
	                             ", Signature=", sig_hex};
	hsm_sb_init(&b, sig.authorization, sizeof(sig.authorization));
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		hsm_sb_add(&b, parts[i]);
	HSM_ENSURE(!b.cut, HSM_ERR_INTERNAL, "authorization header too long");
	memcpy(sig.amz_date, amz_date, sizeof(amz_date));
	memcpy(out->amz_date, sig.amz_date, sizeof(sig.amz_date));
	memcpy(out->authorization, sig.authorization, b.len + 1);
	return HSM_SUCCESS;
}
