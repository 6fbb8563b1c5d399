/*
 * sigv4_canon.c - the SigV4 canonical request.
 *
 * AWS IAM User Guide, "Create a signed AWS API request", step 1:
 *
 *   CanonicalRequest = Method \n CanonicalURI \n CanonicalQueryString \n
 *                      CanonicalHeaders \n SignedHeaders \n HexEncode(SHA256(payload))
 *
 * - CanonicalURI: the path with dot segments and repeated slashes removed
 *   (RFC 3986 section 5.2.4; the rule for every service but S3), then each
 *   byte outside RFC 3986's unreserved set and '/' percent-encoded with
 *   uppercase hex.  The path is encoded as it arrived, so an escape that the
 *   client sent ("%20") is encoded again ("%2520"): AWS's "URI-encode each
 *   segment twice", which is what the SDKs (botocore's quote() over the
 *   already-quoted URL path) produce.
 * - CanonicalQueryString: each name and value percent-decoded and
 *   re-encoded (unreserved characters kept, everything else %XX), sorted by
 *   name and then by value, joined as name=value with '&'.  A parameter
 *   without '=' has an empty value.  '+' decodes to a space, as in HTML form
 *   encoding: botocore puts parameters given as request params on the wire
 *   that way while signing them as %20 (a query string written into the URL
 *   it signs as written, so only one already in canonical form matches
 *   here), and a client that means a literal '+' must send %2B anyway for
 *   the AWS canonical form.  No KMS client sends a query string.
 * - CanonicalHeaders: for each signed header, "name:value\n" with the name
 *   lowercased and the value trimmed, runs of whitespace folded to one
 *   space, and repeated headers joined with ',' in the order received.
 */
#include <string.h>

#include "auth/sigv4_internal.h"
#include "common/encoding.h"

/* RFC 3986 section 2.3. */
static bool unreserved(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Appends p[0..n) with every byte but the unreserved ones (and '/' if keep_slash) as %XX. */
static hsm_result put_encoded(hsm_buf *out, const char *p, size_t n, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	uint8_t *dst;
	/* Worst case every byte becomes three. */
	HSM_GUARD(hsm_buf_reserve(out, n * 3));
	dst = out->data + out->len;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)p[i];
		if (unreserved(c) || (keep_slash && c == '/')) {
			*dst++ = c;
		} else {
			*dst++ = '%';
			*dst++ = (uint8_t)hex[c >> 4];
			*dst++ = (uint8_t)hex[c & 0x0f];
		}
	}
	out->len = (size_t)(dst - out->data);
	return HSM_SUCCESS;
}

bool hsm_sigv4_name_eq(const char *a, const char *b, size_t blen)
{
	size_t i = 0;
	for (; i < blen; i++) {
		if (a[i] == '\0' || hsm_sigv4_lower(a[i]) != hsm_sigv4_lower(b[i]))
			return false;
	}
	return a[i] == '\0';
}

size_t hsm_sigv4_header_find(const hsm_sigv4_request *req, const char *name, const char **first)
{
	size_t count = 0;
	size_t len = strlen(name);
	*first = NULL;
	for (size_t i = 0; i < req->n_headers; i++) {
		if (hsm_sigv4_name_eq(req->headers[i].name, name, len)) {
			if (count++ == 0)
				*first = req->headers[i].value;
		}
	}
	return count;
}

bool hsm_sigv4_list_has(const char *list, const char *name)
{
	size_t len = strlen(name);
	const char *p = list;
	for (;;) {
		const char *end = strchr(p, ';');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		if (n == len && strncmp(p, name, len) == 0)
			return true;
		if (end == NULL)
			return false;
		p = end + 1;
	}
}

hsm_result hsm_sigv4_check_bounds(const hsm_sigv4_request *req)
{
	HSM_ASSERT(req != NULL && req->method != NULL && req->path != NULL);
	HSM_ASSERT(req->n_headers == 0 || req->headers != NULL);
	HSM_ASSERT(req->body_len == 0 || req->body != NULL);
	HSM_ENSURE(req->n_headers <= HSM_SIGV4_MAX_HEADERS, HSM_ERR_VALIDATION,
	           "The request has more than %d headers.", HSM_SIGV4_MAX_HEADERS);
	HSM_ENSURE(strlen(req->path) <= HSM_SIGV4_MAX_PATH, HSM_ERR_VALIDATION,
	           "The request path is longer than %d bytes.", HSM_SIGV4_MAX_PATH);
	HSM_ENSURE(req->query == NULL || strlen(req->query) <= HSM_SIGV4_MAX_QUERY,
	           HSM_ERR_VALIDATION, "The query string is longer than %d bytes.",
	           HSM_SIGV4_MAX_QUERY);
	for (size_t i = 0; i < req->n_headers; i++) {
		const hsm_sigv4_header *h = &req->headers[i];
		HSM_ASSERT(h->name != NULL && h->value != NULL);
		/* Names, like values, are bounded only where signed (put_canonical_headers). */
		HSM_ENSURE(h->name[0] != '\0', HSM_ERR_VALIDATION, "A header name is empty.");
	}
	return HSM_SUCCESS;
}

/*
 * Appends the canonical URI: dot segments and empty segments removed, a
 * trailing slash kept, then encoded.  The removal works on the encoded
 * output directly: each kept segment is appended as "/" + encode(segment),
 * and ".." cuts the output back to its last '/', which is where the
 * previous segment started (an encoded segment contains no '/').
 */
static hsm_result put_canonical_uri(hsm_buf *out, const char *path)
{
	HSM_ENSURE(path[0] == '/', HSM_ERR_VALIDATION, "The request path must start with '/'.");
	size_t base = out->len;
	const char *p = path;
	while (*p != '\0') {
		while (*p == '/')
			p++;
		const char *seg = p;
		while (*p != '\0' && *p != '/')
			p++;
		size_t n = (size_t)(p - seg);
		if (n == 0 || (n == 1 && seg[0] == '.'))
			continue;
		if (n == 2 && seg[0] == '.' && seg[1] == '.') {
			while (out->len > base && out->data[out->len - 1] != '/')
				out->len--;
			if (out->len > base)
				out->len--; /* the '/' that introduced the removed segment */
			continue;
		}
		HSM_GUARD(hsm_buf_put_u8(out, '/'));
		HSM_GUARD(put_encoded(out, seg, n, false));
	}
	size_t plen = (size_t)(p - path);
	if (out->len == base || path[plen - 1] == '/')
		HSM_GUARD(hsm_buf_put_u8(out, '/'));
	return HSM_SUCCESS;
}

/*
 * Appends p[0..n) of a raw query component in canonical form: %XX escapes
 * decoded, then every byte re-encoded as put_encoded does.  A '%' not
 * followed by two hex digits is malformed: guessing what the client meant
 * would only produce a signature mismatch later.
 */
static hsm_result put_requoted(hsm_buf *out, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (c == '%') {
			HSM_ENSURE(i + 2 < n, HSM_ERR_VALIDATION,
			           "Malformed percent-encoding in the query string.");
			int hi = hsm_hex_digit_value((unsigned char)p[i + 1]);
			int lo = hsm_hex_digit_value((unsigned char)p[i + 2]);
			HSM_ENSURE(hi >= 0 && lo >= 0, HSM_ERR_VALIDATION,
			           "Malformed percent-encoding in the query string.");
			c = (char)(hi << 4 | lo);
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		HSM_GUARD(put_encoded(out, &c, 1, false));
	}
	return HSM_SUCCESS;
}

/* One query parameter in canonical form: offsets of NUL-terminated strings in a scratch buffer. */
typedef struct qparam {
	size_t name;
	size_t value;
} qparam;

static int qparam_cmp(const hsm_buf *scratch, const qparam *a, const qparam *b)
{
	const char *base = (const char *)scratch->data;
	int c = strcmp(base + a->name, base + b->name);
	return c != 0 ? c : strcmp(base + a->value, base + b->value);
}

/* Splits the raw query on '&', canonicalizes each parameter into scratch, sorts them. */
static hsm_result collect_query(const char *query, hsm_buf *scratch, qparam *params,
                                size_t *count)
{
	size_t n = 0;
	const char *p = query;
	while (*p != '\0') {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len > 0) {
			HSM_ENSURE(n < HSM_SIGV4_MAX_QUERY_PARAMS, HSM_ERR_VALIDATION,
			           "The query string has more than %d parameters.",
			           HSM_SIGV4_MAX_QUERY_PARAMS);
			const char *eq = memchr(p, '=', len);
			size_t name_len = eq ? (size_t)(eq - p) : len;
			params[n].name = scratch->len;
			HSM_GUARD(put_requoted(scratch, p, name_len));
			HSM_GUARD(hsm_buf_put_u8(scratch, '\0'));
			params[n].value = scratch->len;
			if (eq != NULL)
				HSM_GUARD(put_requoted(scratch, eq + 1, len - name_len - 1));
			HSM_GUARD(hsm_buf_put_u8(scratch, '\0'));
			/* Insertion sort: at most HSM_SIGV4_MAX_QUERY_PARAMS entries, usually a handful. */
			qparam cur = params[n];
			size_t j = n;
			while (j > 0 && qparam_cmp(scratch, &params[j - 1], &cur) > 0) {
				params[j] = params[j - 1];
				j--;
			}
			params[j] = cur;
			n++;
		}
		p += len;
		if (*p == '&')
			p++;
	}
	*count = n;
	return HSM_SUCCESS;
}

static hsm_result put_canonical_query(hsm_buf *out, const char *query)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf scratch = {0};
	qparam params[HSM_SIGV4_MAX_QUERY_PARAMS];
	size_t n = 0;
	if (query == NULL || query[0] == '\0')
		return HSM_SUCCESS;
	HSM_TRY(collect_query(query, &scratch, params, &n));
	for (size_t i = 0; i < n; i++) {
		const char *base = (const char *)scratch.data;
		if (i > 0)
			HSM_TRY(hsm_buf_put_u8(out, '&'));
		HSM_TRY(hsm_buf_put_str(out, base + params[i].name));
		HSM_TRY(hsm_buf_put_u8(out, '='));
		HSM_TRY(hsm_buf_put_str(out, base + params[i].value));
	}
out:
	hsm_buf_free(&scratch);
	return res;
}

/* Appends a header value trimmed, with each run of whitespace folded to one space. */
static hsm_result put_header_value(hsm_buf *out, const char *v)
{
	const char *p = v;
	bool first = true;
	for (;;) {
		while (is_space(*p))
			p++;
		if (*p == '\0')
			return HSM_SUCCESS;
		const char *word = p;
		while (*p != '\0' && !is_space(*p))
			p++;
		if (!first)
			HSM_GUARD(hsm_buf_put_u8(out, ' '));
		first = false;
		HSM_GUARD(hsm_buf_put(out, word, (size_t)(p - word)));
	}
}

static hsm_result put_canonical_headers(hsm_buf *out, const hsm_sigv4_request *req,
                                        const char *signed_headers)
{
	const char *p = signed_headers;
	while (*p != '\0') {
		const char *end = strchr(p, ';');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		size_t found = 0;
		HSM_ENSURE(n <= HSM_SIGV4_MAX_HEADER_NAME, HSM_ERR_VALIDATION,
		           "A signed header name is longer than %d bytes.", HSM_SIGV4_MAX_HEADER_NAME);
		HSM_GUARD(hsm_buf_put(out, p, n));
		HSM_GUARD(hsm_buf_put_u8(out, ':'));
		for (size_t i = 0; i < req->n_headers; i++) {
			if (!hsm_sigv4_name_eq(req->headers[i].name, p, n))
				continue;
			/* Only what is signed is bounded here: the others are not read. */
			HSM_ENSURE(strlen(req->headers[i].value) <= HSM_SIGV4_MAX_HEADER_VALUE,
			           HSM_ERR_VALIDATION, "The value of signed header '%.*s' is longer than %d bytes.",
			           (int)n, p, HSM_SIGV4_MAX_HEADER_VALUE);
			if (found++ > 0)
				HSM_GUARD(hsm_buf_put_u8(out, ','));
			HSM_GUARD(put_header_value(out, req->headers[i].value));
		}
		HSM_ENSURE(found > 0, HSM_ERR_INCOMPLETE_SIGNATURE,
		           "'%.*s' is named as a SignedHeader, but it does not exist in the HTTP request.",
		           (int)n, p);
		HSM_GUARD(hsm_buf_put_u8(out, '\n'));
		p += n;
		if (*p == ';')
			p++;
	}
	return HSM_SUCCESS;
}

hsm_result hsm_sigv4_build_canonical(const hsm_sigv4_request *req, const char *signed_headers,
                                     const char *payload_hex, hsm_buf *out)
{
	HSM_GUARD(hsm_buf_put_str(out, req->method));
	HSM_GUARD(hsm_buf_put_u8(out, '\n'));
	HSM_GUARD(put_canonical_uri(out, req->path));
	HSM_GUARD(hsm_buf_put_u8(out, '\n'));
	HSM_GUARD(put_canonical_query(out, req->query));
	HSM_GUARD(hsm_buf_put_u8(out, '\n'));
	HSM_GUARD(put_canonical_headers(out, req, signed_headers));
	HSM_GUARD(hsm_buf_put_u8(out, '\n'));
	HSM_GUARD(hsm_buf_put_str(out, signed_headers));
	HSM_GUARD(hsm_buf_put_u8(out, '\n'));
	return hsm_buf_put(out, payload_hex, HSM_SIGV4_HEX_HASH_LEN);
}

hsm_result hsm_sigv4_canonical_request(const hsm_sigv4_request *req, const char *signed_headers,
                                       hsm_buf *out)
{
	char payload_hex[HSM_SIGV4_HEX_HASH_LEN + 1];
	HSM_ASSERT(signed_headers != NULL && out != NULL);
	HSM_GUARD(hsm_sigv4_check_bounds(req));
	HSM_GUARD(hsm_sigv4_sha256_hex(req->body, req->body_len, payload_hex));
	return hsm_sigv4_build_canonical(req, signed_headers, payload_hex, out);
}
