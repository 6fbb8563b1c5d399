/*
 * http_parse.c - HTTP/1.1 request heads and chunked bodies (RFC 9112); the
 * rules are in http_parse.h.  Chunk-size lines and trailers go through a
 * byte-at-a-time state machine; chunk data is moved in runs.
 */
#include "common/http_parse.h"

#include <arpa/inet.h>
#include <string.h>

#include "common/encoding.h"

/* Content-Length and chunk sizes above this are TOO_LARGE. */
#define SIZE_LIMIT (UINT64_C(1) << 63)
/* RFC 9112 section 6.3 lets a server cap Content-Length; 19 digits hold 2^63. */
#define CL_DIGITS_MAX 19
/* A uint64_t holds 16 hex digits. */
#define CHUNK_DIGITS_MAX 16

/* ---- Characters ---------------------------------------------------------- */

/* tchar, RFC 9110 section 5.6.2: the characters of methods and field names. */
static bool is_tchar(uint8_t b)
{
	static const char special[] = "!#$%&'*+-.^_`|~";
	if ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z'))
		return true;
	return memchr(special, b, sizeof(special) - 1) != NULL;
}

static bool is_ows(uint8_t b) { return b == ' ' || b == '\t'; }

/* field-vchar / SP / HTAB (RFC 9110 section 5.5); obs-text 0x80-0xff is allowed. */
static bool is_value_char(uint8_t b)
{
	return b == '\t' || (b >= 0x20 && b != 0x7f);
}

bool hsm_http_is_token(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!is_tchar((uint8_t)*s))
			return false;
	return true;
}

bool hsm_http_is_field_value(const char *s)
{
	for (; *s != '\0'; s++)
		if (!is_value_char((uint8_t)*s))
			return false;
	return true;
}

static uint8_t ascii_lower(uint8_t b)
{
	return b >= 'A' && b <= 'Z' ? (uint8_t)(b + ('a' - 'A')) : b;
}

/* Whether s[0..n) equals t, ignoring ASCII case (field names, tokens). */
static bool ieq_n(const char *s, size_t n, const char *t)
{
	for (size_t i = 0; i < n; i++)
		if (t[i] == '\0' || ascii_lower((uint8_t)s[i]) != ascii_lower((uint8_t)t[i]))
			return false;
	return t[n] == '\0';
}

static bool ieq(const char *s, const char *t) { return ieq_n(s, strlen(s), t); }

static bool is_alnum(uint8_t b)
{
	return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z');
}

static bool is_hex(uint8_t b)
{
	return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f') || (b >= 'A' && b <= 'F');
}

/* ---- Host ---------------------------------------------------------------- */

/* unreserved / sub-delims (RFC 3986 section 2.2, 2.3), and ':' where allowed. */
static bool is_host_char(uint8_t b, bool colon)
{
	static const char special[] = "-._~!$&'()*+,;=";
	return is_alnum(b) || memchr(special, b, sizeof(special) - 1) != NULL || (colon && b == ':');
}

/* reg-name = 1*( unreserved / pct-encoded / sub-delims ); an IPv4address is one too. */
static bool reg_name(const uint8_t *s, size_t n)
{
	if (n == 0)
		return false; /* RFC 9110 section 4.2.1: an http URI's host is never empty */
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			if (n - i < 3 || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
				return false;
			i += 2;
		} else if (!is_host_char(s[i], false)) {
			return false;
		}
	}
	return true;
}

/*
 * IP-literal without its brackets (RFC 3986 section 3.2.2): IPv6address, or
 * IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ).  No zone
 * identifier: RFC 9110's uri-host has none.
 */
static bool ip_literal(const uint8_t *s, size_t n)
{
	if (n > 0 && (s[0] == 'v' || s[0] == 'V')) {
		size_t i = 1;
		while (i < n && is_hex(s[i]))
			i++;
		if (i == 1 || i + 1 >= n || s[i] != '.')
			return false;
		for (i++; i < n; i++)
			if (!is_host_char(s[i], true))
				return false;
		return true;
	}
	char text[INET6_ADDRSTRLEN];
	struct in6_addr a;
	if (n == 0 || n >= sizeof(text))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_hex(s[i]) && s[i] != ':' && s[i] != '.')
			return false; /* a NUL too, which would end the text early */
	memcpy(text, s, n);
	text[n] = '\0';
	return inet_pton(AF_INET6, text, &a) == 1;
}

/*
 * Host = uri-host [ ":" port ] (RFC 9110 section 7.2), uri-host a reg-name
 * (IPv4 addresses included) or a bracketed IP-literal.  The port is 1 to 5
 * digits, at most 65535: RFC 3986 would let it be empty or longer, which no
 * client sends and which a proxy in front may read differently.
 */
static bool host_ok(const uint8_t *s, size_t n)
{
	size_t h = 0;
	if (n > 0 && s[0] == '[') {
		const uint8_t *close = memchr(s, ']', n);
		if (close == NULL || !ip_literal(s + 1, (size_t)(close - s) - 1))
			return false;
		h = (size_t)(close - s) + 1;
	} else {
		while (h < n && s[h] != ':')
			h++;
		if (!reg_name(s, h))
			return false;
	}
	if (h == n)
		return true;
	size_t digits = n - h - 1;
	if (s[h] != ':' || digits == 0 || digits > 5)
		return false;
	uint32_t port = 0;
	for (size_t i = h + 1; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		port = port * 10 + (uint32_t)(s[i] - '0');
	}
	return port <= 65535;
}

/* ---- The end of the head ------------------------------------------------- */

/* Whether the line ending with the LF at buf[lf] is empty (nothing, or a CR). */
static bool line_empty(const uint8_t *buf, size_t lf)
{
	if (lf == 0 || buf[lf - 1] == '\n')
		return true;
	return buf[lf - 1] == '\r' && (lf == 1 || buf[lf - 2] == '\n');
}

/*
 * Whether the LF at buf[lf] ends a head: its line is empty and the line
 * before it is not.  Empty lines before the request line have no non-empty
 * line before them (RFC 9112 section 2.2 has a server ignore them).  Looks
 * back at most four bytes, which lets hsm_http_head_end resume anywhere.
 */
static bool ends_head(const uint8_t *buf, size_t lf)
{
	if (!line_empty(buf, lf) || lf == 0)
		return false;
	if (buf[lf - 1] == '\n')
		return !line_empty(buf, lf - 1);
	return lf >= 2 && !line_empty(buf, lf - 2); /* buf[lf - 1] is the CR of a CRLF */
}

size_t hsm_http_head_end(const uint8_t *buf, size_t len, size_t *scan)
{
	HSM_ASSERT(scan != NULL && (buf != NULL || len == 0));
	/* Every LF before *scan has been tried; a shrunk buffer starts over. */
	size_t i = *scan <= len ? *scan : 0;
	while (i < len) {
		const uint8_t *lf = memchr(buf + i, '\n', len - i);
		if (lf == NULL)
			break;
		i = (size_t)(lf - buf) + 1;
		if (ends_head(buf, i - 1)) {
			*scan = i;
			return i;
		}
	}
	*scan = len;
	return 0;
}

/* ---- The start of a head ------------------------------------------------ */

bool hsm_http_may_begin_request(uint8_t b)
{
	return b == '\r' || b == '\n' || is_tchar(b);
}

hsm_http_parse hsm_http_head_start(const uint8_t *buf, size_t len, size_t *skip)
{
	HSM_ASSERT(skip != NULL && (buf != NULL || len == 0));
	size_t i = *skip <= len ? *skip : 0; /* a shrunk buffer starts over */
	while (i < len && (buf[i] == '\r' || buf[i] == '\n'))
		i++;
	*skip = i;
	if (i == len)
		return HSM_HTTP_PARSE_PARTIAL;
	return is_tchar(buf[i]) ? HSM_HTTP_PARSE_OK : HSM_HTTP_PARSE_BAD;
}

/* ---- The head ------------------------------------------------------------ */

/* One line of the head: buf[start..end) without its CRLF or LF. */
typedef struct line { size_t start, end; } line;

/* The line at *pos, which moves past its LF; false when there is no LF. */
static bool next_line(const uint8_t *buf, size_t len, size_t *pos, line *l)
{
	const uint8_t *lf = *pos < len ? memchr(buf + *pos, '\n', len - *pos) : NULL;
	if (lf == NULL)
		return false;
	l->start = *pos;
	l->end = (size_t)(lf - buf);
	*pos = l->end + 1;
	if (l->end > l->start && buf[l->end - 1] == '\r')
		l->end--; /* a CR left inside the line is bare, and no rule accepts it */
	return true;
}

/* RFC 9112 section 2.3: "HTTP/" DIGIT "." DIGIT, of which 1.0 and 1.1 are served. */
static hsm_http_parse parse_version(const uint8_t *v, size_t n, unsigned *minor)
{
	static const char name[] = "HTTP/"; /* case-sensitive (section 2.3) */
	if (n != 8 || v[6] != '.')
		return HSM_HTTP_PARSE_BAD;
	for (size_t i = 0; i < sizeof(name) - 1; i++)
		if (v[i] != (uint8_t)name[i])
			return HSM_HTTP_PARSE_BAD;
	if (v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
		return HSM_HTTP_PARSE_BAD;
	if (v[5] != '1' || v[7] > '1')
		return HSM_HTTP_PARSE_VERSION; /* section 2.6: answered with 505 */
	*minor = (unsigned)(v[7] - '0');
	return HSM_HTTP_PARSE_OK;
}

/* "http://" or "https://" (the scheme is case-insensitive), or 0. */
static size_t scheme_len(const uint8_t *p, size_t n)
{
	if (n >= 7 && ieq_n((const char *)p, 7, "http://"))
		return 7;
	if (n >= 8 && ieq_n((const char *)p, 8, "https://"))
		return 8;
	return 0;
}

/*
 * Absolute-form, buf[t..e) starting with its scheme: RFC 9112 section 3.2.2
 * has a server accept it, and take the authority for the Host.  The
 * authority is moved one byte left, over the scheme's last '/', to make room
 * for its NUL; *t becomes the start of the path.
 */
static hsm_http_parse absolute_form(uint8_t *buf, size_t *t, size_t e, hsm_http_head *head)
{
	size_t a = *t + scheme_len(buf + *t, e - *t), p = a;
	while (p < e && buf[p] != '/' && buf[p] != '?')
		p++;
	/* host[:port] and nothing else: userinfo ('@') is deprecated (RFC 9110
	 * section 4.2.4) and a spoofing aid. */
	if (!host_ok(buf + a, p - a))
		return HSM_HTTP_PARSE_HOST;
	memmove(buf + a - 1, buf + a, p - a);
	buf[p - 1] = '\0';
	head->authority = (const char *)buf + a - 1;
	*t = p;
	return HSM_HTTP_PARSE_OK;
}

/*
 * The request-target in buf[t..e): origin-form, asterisk-form or
 * absolute-form (RFC 9112 section 3.2); authority-form is for CONNECT, which
 * hsmd does not serve.  A fragment is never sent (section 3.2).
 */
static hsm_http_parse parse_target(uint8_t *buf, size_t t, size_t e, hsm_http_head *head)
{
	head->authority = NULL;
	if (t < e && scheme_len(buf + t, e - t) > 0) {
		hsm_http_parse r = absolute_form(buf, &t, e, head);
		if (r != HSM_HTTP_PARSE_OK)
			return r;
		if (t == e || buf[t] == '?')
			head->path = "/"; /* section 3.2.1: an empty path is "/" */
	} else if (t == e || !(buf[t] == '/' || (e - t == 1 && buf[t] == '*'))) {
		return HSM_HTTP_PARSE_BAD;
	}
	size_t q = e;
	for (size_t i = t; i < e; i++) {
		if (buf[i] < 0x21 || buf[i] > 0x7e || buf[i] == '#')
			return HSM_HTTP_PARSE_BAD;
		if (buf[i] == '?' && q == e)
			q = i;
	}
	buf[e] = '\0';
	if (head->authority == NULL || (t < e && buf[t] == '/'))
		head->path = (const char *)buf + t;
	head->query = (const char *)buf + (q < e ? q + 1 : e);
	buf[q] = '\0';
	return HSM_HTTP_PARSE_OK;
}

/* RFC 9112 section 3: method SP request-target SP HTTP-version, single spaces. */
static hsm_http_parse parse_request_line(uint8_t *buf, line l, hsm_http_head *head)
{
	size_t i = l.start;
	while (i < l.end && is_tchar(buf[i]))
		i++;
	if (i == l.start || i == l.end || buf[i] != ' ')
		return HSM_HTTP_PARSE_BAD;
	buf[i] = '\0';
	head->method = (const char *)buf + l.start;
	size_t t = i + 1, e = t;
	while (e < l.end && buf[e] != ' ')
		e++;
	if (e == l.end)
		return HSM_HTTP_PARSE_BAD;
	hsm_http_parse r = parse_version(buf + e + 1, l.end - e - 1, &head->minor);
	if (r != HSM_HTTP_PARSE_OK)
		return r;
	return parse_target(buf, t, e, head);
}

/*
 * RFC 9112 section 5: field-name ":" OWS field-value OWS.  No whitespace
 * before the colon (section 5.1) and no obs-fold (section 5.2): a proxy might
 * read either differently.
 */
static hsm_http_parse parse_field(uint8_t *buf, line l, hsm_http_field *f)
{
	size_t i = l.start;
	while (i < l.end && is_tchar(buf[i]))
		i++;
	if (i == l.start || i == l.end || buf[i] != ':')
		return HSM_HTTP_PARSE_BAD; /* also a line starting with SP or HTAB */
	buf[i] = '\0';
	size_t v = i + 1, e = l.end;
	while (v < e && is_ows(buf[v]))
		v++;
	while (e > v && is_ows(buf[e - 1]))
		e--;
	for (size_t j = v; j < e; j++)
		if (!is_value_char(buf[j]))
			return HSM_HTTP_PARSE_BAD;
	buf[e] = '\0'; /* e is at most the line's LF */
	f->name = (const char *)buf + l.start;
	f->value = (const char *)buf + v;
	return HSM_HTTP_PARSE_OK;
}

/* The field lines from *pos to the empty line, which must end the head. */
static hsm_http_parse parse_fields(uint8_t *buf, size_t len, size_t pos, hsm_http_head *head)
{
	line l;
	for (;;) {
		if (!next_line(buf, len, &pos, &l))
			return HSM_HTTP_PARSE_BAD;
		if (l.start == l.end)
			break;
		if (head->n_fields == HSM_HTTP_MAX_FIELDS)
			return HSM_HTTP_PARSE_TOO_LARGE;
		hsm_http_parse r = parse_field(buf, l, &head->fields[head->n_fields]);
		if (r != HSM_HTTP_PARSE_OK)
			return r;
		head->n_fields++;
	}
	return pos == len ? HSM_HTTP_PARSE_OK : HSM_HTTP_PARSE_BAD;
}

/* Content-Length = 1*DIGIT (RFC 9110 section 8.6); no sign, list or space. */
static hsm_http_parse parse_length(const char *v, uint64_t *out)
{
	uint64_t n = 0;
	size_t digits = 0;
	for (; v[digits] != '\0'; digits++) {
		if (v[digits] < '0' || v[digits] > '9')
			return HSM_HTTP_PARSE_FRAMING;
		if (digits < CL_DIGITS_MAX) /* 19 digits stay below 2^64 */
			n = n * 10 + (uint64_t)(v[digits] - '0');
	}
	if (digits == 0)
		return HSM_HTTP_PARSE_FRAMING;
	if (digits > CL_DIGITS_MAX || n > SIZE_LIMIT)
		return HSM_HTTP_PARSE_LENGTH_TOO_LARGE;
	*out = n;
	return HSM_HTTP_PARSE_OK;
}

/* What the fields say about the message, gathered in one pass. */
typedef struct seen {
	unsigned host, cl, te;
	const char *host_value, *cl_value, *te_value;
	bool close, keep_alive, expect_continue;
} seen;

/* Connection = #connection-option (RFC 9110 section 7.6.1): commas, OWS, any case. */
static void connection_options(const char *v, seen *s)
{
	for (;;) {
		while (is_ows((uint8_t)*v))
			v++;
		const char *start = v;
		while (*v != '\0' && *v != ',')
			v++;
		const char *end = v;
		while (end > start && is_ows((uint8_t)end[-1]))
			end--;
		if (ieq_n(start, (size_t)(end - start), "close"))
			s->close = true;
		else if (ieq_n(start, (size_t)(end - start), "keep-alive"))
			s->keep_alive = true;
		if (*v == '\0')
			return;
		v++;
	}
}

static void gather(const hsm_http_head *head, seen *s)
{
	for (size_t i = 0; i < head->n_fields; i++) {
		const hsm_http_field *f = &head->fields[i];
		size_t n = strlen(f->name);
		if (ieq_n(f->name, n, "host")) {
			s->host++;
			s->host_value = f->value;
		} else if (ieq_n(f->name, n, "content-length")) {
			s->cl++;
			s->cl_value = f->value;
		} else if (ieq_n(f->name, n, "transfer-encoding")) {
			s->te++;
			s->te_value = f->value;
		} else if (ieq_n(f->name, n, "connection")) {
			connection_options(f->value, s);
		} else if (ieq_n(f->name, n, "expect")) {
			s->expect_continue |= ieq(f->value, "100-continue");
		}
	}
}

/*
 * RFC 9112 section 6.3: Transfer-Encoding with Content-Length, a coding other
 * than chunked alone, or several Content-Length fields (even equal ones) could
 * be framed differently by a proxy in front (section 11.2, smuggling).
 * HTTP/1.0 has no chunked coding (section 6.1).
 */
static hsm_http_parse framing(const seen *s, hsm_http_head *head)
{
	if (s->te > 0) {
		if (s->te > 1 || s->cl > 0 || head->minor == 0 || !ieq(s->te_value, "chunked"))
			return HSM_HTTP_PARSE_FRAMING;
		head->body = HSM_HTTP_BODY_CHUNKED;
		return HSM_HTTP_PARSE_OK;
	}
	if (s->cl == 0)
		return HSM_HTTP_PARSE_OK;
	if (s->cl > 1)
		return HSM_HTTP_PARSE_FRAMING;
	head->body = HSM_HTTP_BODY_LENGTH;
	return parse_length(s->cl_value, &head->content_length);
}

/* The rules that concern the head as a whole, once its fields are split. */
static hsm_http_parse semantics(hsm_http_head *head)
{
	seen s = {0};
	gather(head, &s);
	/* RFC 9112 section 3.2: 400 for HTTP/1.1 without Host, and for any
	 * request with more than one or an invalid one.  An empty Host is what
	 * a client sends for a target without authority; section 3.3 lets the
	 * server supply its own. */
	if (s.host > 1 || (head->minor == 1 && s.host == 0))
		return HSM_HTTP_PARSE_HOST;
	if (s.host == 1 && s.host_value[0] != '\0' &&
	    !host_ok((const uint8_t *)s.host_value, strlen(s.host_value)))
		return HSM_HTTP_PARSE_HOST;
	/* Section 9.3: "close" ends the connection in either version. */
	head->keep_alive = !s.close && (head->minor == 1 || s.keep_alive);
	/* RFC 9110 section 10.1.1: a client of HTTP/1.0 cannot expect 100. */
	head->expect_continue = head->minor == 1 && s.expect_continue;
	return framing(&s, head);
}

hsm_http_parse hsm_http_parse_head(uint8_t *buf, size_t head_len, hsm_http_head *head)
{
	HSM_ASSERT(head != NULL && (buf != NULL || head_len == 0));
	/* Not a memset: fields[] is large and filled as far as n_fields says. */
	head->n_fields = 0;
	head->body = HSM_HTTP_BODY_NONE;
	head->content_length = 0;
	head->keep_alive = head->expect_continue = false;
	size_t pos = 0;
	/* RFC 9112 section 2.2: ignore empty lines before the request line. */
	while (pos < head_len && (buf[pos] == '\n' ||
	                          (buf[pos] == '\r' && pos + 1 < head_len && buf[pos + 1] == '\n')))
		pos += buf[pos] == '\n' ? 1 : 2;
	line l;
	if (!next_line(buf, head_len, &pos, &l))
		return HSM_HTTP_PARSE_BAD;
	hsm_http_parse r = parse_request_line(buf, l, head);
	if (r == HSM_HTTP_PARSE_OK)
		r = parse_fields(buf, head_len, pos, head);
	if (r == HSM_HTTP_PARSE_OK)
		r = semantics(head);
	if (r == HSM_HTTP_PARSE_OK && head->authority != NULL) {
		/* Section 3.2.2: the target's authority, not the Host field, names the server. */
		for (size_t i = 0; i < head->n_fields; i++)
			if (ieq(head->fields[i].name, "host"))
				head->fields[i].value = head->authority;
	}
	return r;
}

const char *hsm_http_head_field(const hsm_http_head *head, const char *name)
{
	HSM_ASSERT(head != NULL && name != NULL);
	for (size_t i = 0; i < head->n_fields; i++)
		if (ieq(head->fields[i].name, name))
			return head->fields[i].value;
	return NULL;
}

/* ---- Chunked bodies ------------------------------------------------------ */

/*
 * RFC 9112 section 7.1:
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 * with a bare LF accepted for CRLF (section 2.2).  state_ is one of these;
 * zero is the start of a chunk-size line, so a zeroed decoder is ready.
 */
enum {
	CH_SIZE,      /* hex digits of the chunk size */
	CH_SIZE_WS,   /* BWS after the size: only ';' may follow */
	CH_EXT,       /* chunk extensions, skipped up to the line end */
	CH_SIZE_LF,   /* a CR ended the size line: LF must follow */
	CH_DATA,      /* left_ bytes of chunk data */
	CH_DATA_END,  /* CRLF or LF after chunk data */
	CH_DATA_LF,   /* LF after the CR after chunk data */
	CH_TR_NAME,   /* a trailer field's name, or the final empty line */
	CH_TR_VALUE,  /* a trailer field's value, up to the line end */
	CH_TR_LF,     /* LF after a trailer field's CR */
	CH_END_LF,    /* LF after the final CR */
	CH_SPENT,     /* returned something other than PARTIAL */
};

/* Signals "keep going" between the byte steps; never returned to the caller. */
#define CONTINUE HSM_HTTP_PARSE_PARTIAL

void hsm_http_chunked_init(hsm_http_chunked *c)
{
	HSM_ASSERT(c != NULL);
	memset(c, 0, sizeof(*c));
}

/* A whole chunk-size line has been read: the size decides what follows. */
static hsm_http_parse size_line_done(hsm_http_chunked *c, size_t max_body)
{
	if (!c->digits_)
		return HSM_HTTP_PARSE_BAD;
	/* Refuse an oversized chunk now rather than after its data has arrived. */
	if (c->left_ > SIZE_LIMIT || c->left_ > max_body - c->out)
		return HSM_HTTP_PARSE_TOO_LARGE;
	c->digits_ = false;
	c->line_ = 0;
	c->state_ = c->left_ == 0 ? CH_TR_NAME : CH_DATA;
	return CONTINUE;
}

/* One byte of a chunk-size line (CH_SIZE, CH_SIZE_WS, CH_EXT, CH_SIZE_LF). */
static hsm_http_parse size_byte(hsm_http_chunked *c, uint8_t b, size_t max_body)
{
	if (c->state_ == CH_SIZE_LF) /* else the CR was bare */
		return b == '\n' ? size_line_done(c, max_body) : HSM_HTTP_PARSE_BAD;
	if (b == '\r' || b == '\n') {
		if (c->state_ == CH_SIZE_WS)
			return HSM_HTTP_PARSE_BAD; /* BWS comes only before ';' */
		if (b == '\n')
			return size_line_done(c, max_body);
		c->state_ = CH_SIZE_LF;
		return CONTINUE;
	}
	if (++c->line_ > HSM_HTTP_CHUNK_LINE_MAX)
		return HSM_HTTP_PARSE_BAD;
	int d = hsm_hex_digit_value(b);
	if (c->state_ == CH_SIZE && d >= 0) {
		if (c->line_ > CHUNK_DIGITS_MAX) /* every byte so far was a digit */
			return HSM_HTTP_PARSE_BAD;
		c->left_ = c->left_ << 4 | (uint64_t)d;
		c->digits_ = true;
	} else if (c->state_ != CH_EXT && b == ';' && c->digits_) {
		c->state_ = CH_EXT;
	} else if (c->state_ != CH_EXT && is_ows(b) && c->digits_) {
		c->state_ = CH_SIZE_WS;
	} else if (c->state_ != CH_EXT || !is_value_char(b)) {
		return HSM_HTTP_PARSE_BAD;
	}
	return CONTINUE;
}

/* One byte of the line ending after chunk data (CH_DATA_END, CH_DATA_LF). */
static hsm_http_parse data_end_byte(hsm_http_chunked *c, uint8_t b)
{
	if (b == '\r' && c->state_ == CH_DATA_END)
		c->state_ = CH_DATA_LF;
	else if (b == '\n')
		c->state_ = CH_SIZE; /* left_ is 0 again, as a new size needs */
	else
		return HSM_HTTP_PARSE_BAD;
	return CONTINUE;
}

/*
 * One byte of the trailer section: field lines, read and ignored (RFC 9112
 * section 7.1.2; hsmd merges none into the head), then an empty line.  Each
 * line is still checked as a field line, so that where the body ends is not
 * open to interpretation.
 */
static hsm_http_parse trailer_byte(hsm_http_chunked *c, uint8_t b)
{
	if (++c->trailer_ > HSM_HTTP_TRAILER_MAX)
		return HSM_HTTP_PARSE_TOO_LARGE;
	bool empty = c->line_ == 0;
	switch (c->state_) {
	case CH_TR_NAME:
		if (empty && (b == '\n' || b == '\r')) {
			c->state_ = CH_END_LF;
			return b == '\n' ? HSM_HTTP_PARSE_OK : CONTINUE;
		}
		if (b == ':' && !empty)
			c->state_ = CH_TR_VALUE;
		else if (!is_tchar(b))
			return HSM_HTTP_PARSE_BAD;
		c->line_++;
		return CONTINUE;
	case CH_TR_VALUE:
		if (b == '\r' || b == '\n') {
			c->state_ = b == '\n' ? CH_TR_NAME : CH_TR_LF;
			c->line_ = 0;
			return CONTINUE;
		}
		return is_value_char(b) ? CONTINUE : HSM_HTTP_PARSE_BAD;
	case CH_TR_LF:
		c->state_ = CH_TR_NAME;
		return b == '\n' ? CONTINUE : HSM_HTTP_PARSE_BAD;
	default: /* CH_END_LF */
		return b == '\n' ? HSM_HTTP_PARSE_OK : HSM_HTTP_PARSE_BAD;
	}
}

/* Moves the available chunk data down to the decoded body's end. */
static void copy_data(hsm_http_chunked *c, uint8_t *buf, size_t len)
{
	size_t n = len - c->pos;
	if ((uint64_t)n > c->left_)
		n = (size_t)c->left_;
	memmove(buf + c->out, buf + c->pos, n); /* out < pos: the framing took bytes */
	c->out += n;
	c->pos += n;
	c->left_ -= n;
	if (c->left_ == 0)
		c->state_ = CH_DATA_END;
}

hsm_http_parse hsm_http_chunked_step(hsm_http_chunked *c, uint8_t *buf, size_t len,
                                     size_t max_body)
{
	HSM_ASSERT(c != NULL && c->state_ != CH_SPENT && c->pos <= len && (buf != NULL || len == 0));
	while (c->pos < len) {
		if (c->state_ == CH_DATA) {
			copy_data(c, buf, len);
			continue;
		}
		uint8_t b = buf[c->pos++];
		hsm_http_parse r;
		if (c->state_ <= CH_SIZE_LF)
			r = size_byte(c, b, max_body);
		else if (c->state_ <= CH_DATA_LF)
			r = data_end_byte(c, b);
		else
			r = trailer_byte(c, b);
		if (r != CONTINUE) {
			c->state_ = CH_SPENT;
			return r;
		}
	}
	return HSM_HTTP_PARSE_PARTIAL;
}
