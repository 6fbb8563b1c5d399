/*
 * http_parse_fuzz.c - request heads and chunked bodies (server/http_parse.h).
 *
 * Input: one byte of options, then the text.  Bit 0 of the options picks
 * the parser (0: a request head, 1: a chunked body); the other bits seed the
 * sizes of the pieces the text is also fed in.  A chunked body starts with
 * one more byte choosing max_body (255: SIZE_MAX, else 4 times its value).
 *
 * Properties, heads: hsm_http_head_end finds the end a line-by-line
 * reference finds, the same fed all at once, a byte at a time and in
 * pieces, and as soon as the end is there; an
 * accepted head has a token method, a path "*" or starting with '/', minor
 * 0 or 1, token field names and values without CR, LF, NUL or surrounding
 * whitespace, framing and Host that agree with its fields (looked up with
 * hsm_http_head_field, which finds the first of each name), a Host value
 * that is empty or host[:port]; and the same
 * head with bare LFs for CRLFs parses to the same thing.  hsm_http_head_start
 * answers the same fed all at once and in pieces, and never BAD for a head
 * that parses.
 *
 * Properties, chunked bodies: all at once, a byte at a time, and in pieces
 * each moved to a new exact-size allocation, the decoder reaches the same
 * status, and the same out, pos and body when OK or PARTIAL; out never
 * passes max_body or pos; a line-by-line reference decoder written from
 * the header agrees wherever a whole line decides; and an accepted body,
 * re-encoded as one chunk, decodes to itself.
 */
#include "fuzz.h"

#include <ctype.h>
#include <strings.h>

#include "common/http_parse.h"

/* Piece sizes, 1 to 32 bytes, from a seed taken from the input. */
static size_t next_piece(uint32_t *seed)
{
	*seed = *seed * 1103515245U + 12345U;
	return 1 + (*seed >> 16) % 32;
}

/* ---- Heads --------------------------------------------------------------- */

/* The head's end, line by line: the first empty line after a non-empty one. */
static size_t ref_head_end(const uint8_t *p, size_t n)
{
	bool started = false;
	for (size_t start = 0, i = 0; i < n; i++) {
		if (p[i] != '\n')
			continue;
		bool empty = i == start || (i == start + 1 && p[start] == '\r');
		if (empty && started)
			return i + 1;
		started |= !empty;
		start = i + 1;
	}
	return 0;
}

static void check_head_end(const uint8_t *p, size_t n, size_t all, uint32_t seed)
{
	FUZZ_ASSERT(all == ref_head_end(p, n));
	size_t scan = 0, end = 0, len = 0;
	for (len = 0; len <= n && end == 0; len++)
		end = hsm_http_head_end(p, len, &scan);
	FUZZ_ASSERT(end == all);
	FUZZ_ASSERT(all == 0 || len - 1 == all); /* found as soon as it is there */
	scan = 0;
	end = 0;
	for (len = 0; end == 0 && len < n;) {
		size_t k = next_piece(&seed);
		len = k < n - len ? len + k : n;
		end = hsm_http_head_end(p, len, &scan);
	}
	FUZZ_ASSERT(end == all);
}

/* hsm_http_head_start: the same fed all at once and in pieces. */
static hsm_http_parse check_head_start(const uint8_t *p, size_t n, uint32_t seed)
{
	size_t skip = 0;
	hsm_http_parse all = hsm_http_head_start(p, n, &skip);
	FUZZ_ASSERT(skip <= n && (all == HSM_HTTP_PARSE_PARTIAL) == (skip == n));
	size_t len = 0, skip2 = 0;
	hsm_http_parse r = hsm_http_head_start(p, 0, &skip2);
	while (r == HSM_HTTP_PARSE_PARTIAL && len < n) {
		size_t k = next_piece(&seed);
		len = k < n - len ? len + k : n;
		r = hsm_http_head_start(p, len, &skip2);
	}
	FUZZ_ASSERT(r == all && skip2 == skip);
	return all;
}

static bool is_token(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (strchr("!#$%&'*+-.^_`|~", *s) == NULL && !(*s >= '0' && *s <= '9') &&
		    !(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z'))
			return false;
	return true;
}

static bool within(const char *s, const uint8_t *buf, size_t n)
{
	return (const uint8_t *)s >= buf && (const uint8_t *)s < buf + n;
}

static void check_field(const hsm_http_head *h, size_t i, const uint8_t *buf, size_t n)
{
	const hsm_http_field *f = &h->fields[i];
	FUZZ_ASSERT(within(f->name, buf, n) && within(f->value, buf, n));
	FUZZ_ASSERT(is_token(f->name));
	size_t vn = strlen(f->value);
	FUZZ_ASSERT(strpbrk(f->value, "\r\n") == NULL);
	FUZZ_ASSERT(vn == 0 || (strchr(" \t", f->value[0]) == NULL &&
	                        strchr(" \t", f->value[vn - 1]) == NULL));
	for (size_t j = 0; j < vn; j++)
		FUZZ_ASSERT((uint8_t)f->value[j] >= 0x20 ? f->value[j] != 0x7f : f->value[j] == '\t');
	/* The lookup finds the first field of that name. */
	size_t first = 0;
	while (strcasecmp(h->fields[first].name, f->name) != 0)
		first++;
	FUZZ_ASSERT(hsm_http_head_field(h, f->name) == h->fields[first].value);
}

static size_t count(const hsm_http_head *h, const char *name)
{
	size_t n = 0;
	for (size_t i = 0; i < h->n_fields; i++)
		n += strcasecmp(h->fields[i].name, name) == 0;
	return n;
}

/*
 * An accepted Host (or absolute-form authority) is empty or host[:port]: no
 * byte outside the URI's host characters, no userinfo, path or space, and a
 * port of at most five digits after the last ':' unless that ':' is inside
 * the brackets of an IPv6 address.
 */
static void check_host(const char *v)
{
	size_t n = strlen(v);
	FUZZ_ASSERT(strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	                      "-._~!$&'()*+,;=%:[]") == n);
	const char *close = strrchr(v, ']');
	const char *colon = strrchr(v, ':');
	if (v[0] == '[')
		FUZZ_ASSERT(close != NULL);
	else
		FUZZ_ASSERT(strpbrk(v, "[]") == NULL && colon == strchr(v, ':'));
	if (colon != NULL && (close == NULL || colon > close)) {
		size_t digits = strlen(colon + 1);
		FUZZ_ASSERT(digits >= 1 && digits <= 5 && strspn(colon + 1, "0123456789") == digits);
		FUZZ_ASSERT(strtoul(colon + 1, NULL, 10) <= 65535);
	}
}

/* Framing, Host and persistence, as read back through hsm_http_head_field. */
static void check_semantics(const hsm_http_head *h)
{
	const char *cl = hsm_http_head_field(h, "content-length");
	const char *te = hsm_http_head_field(h, "transfer-encoding");
	size_t n_cl = count(h, "content-length"), n_te = count(h, "transfer-encoding");
	size_t hosts = count(h, "host");
	FUZZ_ASSERT(hosts == 1 || (hosts == 0 && h->minor == 0));
	if (hosts == 1)
		check_host(hsm_http_head_field(h, "host"));
	switch (h->body) {
	case HSM_HTTP_BODY_NONE:
		FUZZ_ASSERT(n_cl == 0 && n_te == 0);
		break;
	case HSM_HTTP_BODY_LENGTH:
		FUZZ_ASSERT(n_te == 0 && n_cl == 1 && *cl != '\0' && strlen(cl) <= 19);
		FUZZ_ASSERT(strspn(cl, "0123456789") == strlen(cl));
		FUZZ_ASSERT(strtoull(cl, NULL, 10) == h->content_length);
		FUZZ_ASSERT(h->content_length <= UINT64_C(1) << 63);
		break;
	case HSM_HTTP_BODY_CHUNKED:
		FUZZ_ASSERT(n_cl == 0 && n_te == 1 && strcasecmp(te, "chunked") == 0);
		FUZZ_ASSERT(h->minor == 1);
		break;
	default:
		FUZZ_ASSERT(false); /* no other body kind */
	}
	if (hsm_http_head_field(h, "connection") == NULL)
		FUZZ_ASSERT(h->keep_alive == (h->minor == 1));
	if (h->expect_continue)
		FUZZ_ASSERT(h->minor == 1 && hsm_http_head_field(h, "expect") != NULL);
}

static void check_head(const hsm_http_head *h, const uint8_t *buf, size_t n)
{
	/* An absolute-form target without a path has the path "/", a constant. */
	FUZZ_ASSERT(within(h->method, buf, n) &&
	            (within(h->path, buf, n) || (h->authority != NULL && strcmp(h->path, "/") == 0)) &&
	            within(h->query, buf, n));
	FUZZ_ASSERT(is_token(h->method));
	FUZZ_ASSERT(h->path[0] == '/' || strcmp(h->path, "*") == 0);
	FUZZ_ASSERT(strpbrk(h->path, "?# ") == NULL && strpbrk(h->query, "# ") == NULL);
	FUZZ_ASSERT(h->minor <= 1);
	FUZZ_ASSERT(h->n_fields <= HSM_HTTP_MAX_FIELDS);
	for (size_t i = 0; i < h->n_fields; i++)
		check_field(h, i, buf, n);
	check_semantics(h);
}

static bool same_head(const hsm_http_head *a, const hsm_http_head *b)
{
	if (strcmp(a->method, b->method) != 0 || strcmp(a->path, b->path) != 0 ||
	    strcmp(a->query, b->query) != 0 || a->minor != b->minor ||
	    a->n_fields != b->n_fields || a->body != b->body ||
	    a->content_length != b->content_length || a->keep_alive != b->keep_alive ||
	    a->expect_continue != b->expect_continue)
		return false;
	for (size_t i = 0; i < a->n_fields; i++)
		if (strcmp(a->fields[i].name, b->fields[i].name) != 0 ||
		    strcmp(a->fields[i].value, b->fields[i].value) != 0)
			return false;
	return true;
}

/* An accepted head has CRs only before LFs: without them it means the same. */
static void check_bare_lf(const uint8_t *p, size_t n, const hsm_http_head *want)
{
	uint8_t *lf = malloc(n);
	FUZZ_ASSERT(lf != NULL);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (p[i] != '\r')
			lf[m++] = p[i];
	size_t scan = 0;
	FUZZ_ASSERT(hsm_http_head_end(lf, m, &scan) == m);
	hsm_http_head *h = malloc(sizeof(*h));
	FUZZ_ASSERT(h != NULL);
	FUZZ_ASSERT(hsm_http_parse_head(lf, m, h) == HSM_HTTP_PARSE_OK);
	FUZZ_ASSERT(same_head(h, want));
	free(h);
	free(lf);
}

static void fuzz_head(const uint8_t *p, size_t n, uint32_t seed)
{
	size_t scan = 0;
	size_t all = hsm_http_head_end(p, n, &scan);
	FUZZ_ASSERT(all <= n && (all == 0 || p[all - 1] == '\n'));
	check_head_end(p, n, all, seed);
	hsm_http_parse start = check_head_start(p, n, seed);
	if (all == 0)
		return;
	uint8_t *buf = malloc(all); /* exact size: ASan sees overreads */
	hsm_http_head *h = malloc(sizeof(*h));
	FUZZ_ASSERT(buf != NULL && h != NULL);
	memcpy(buf, p, all);
	hsm_http_parse r = hsm_http_parse_head(buf, all, h);
	/* A whole head is parsed or refused with one of the answers the server gives. */
	FUZZ_ASSERT(r == HSM_HTTP_PARSE_OK || r == HSM_HTTP_PARSE_BAD ||
	            r == HSM_HTTP_PARSE_TOO_LARGE || r == HSM_HTTP_PARSE_VERSION ||
	            r == HSM_HTTP_PARSE_FRAMING || r == HSM_HTTP_PARSE_LENGTH_TOO_LARGE ||
	            r == HSM_HTTP_PARSE_HOST);
	if (r == HSM_HTTP_PARSE_OK) {
		FUZZ_ASSERT(start == HSM_HTTP_PARSE_OK); /* what is served is never refused early */
		check_head(h, buf, all);
		check_bare_lf(p, all, h);
	}
	free(h);
	free(buf);
}

/* ---- Chunked bodies ------------------------------------------------------ */

typedef struct decoded {
	hsm_http_parse r;
	size_t out, pos;
	uint8_t *buf; /* owned */
} decoded;

static decoded decode_all(const uint8_t *p, size_t n, size_t max_body)
{
	decoded d = {.buf = malloc(n > 0 ? n : 1)};
	FUZZ_ASSERT(d.buf != NULL);
	if (n > 0)
		memcpy(d.buf, p, n);
	hsm_http_chunked c;
	hsm_http_chunked_init(&c);
	d.r = hsm_http_chunked_step(&c, d.buf, n, max_body);
	d.out = c.out;
	d.pos = c.pos;
	return d;
}

/* Bytes appended to one buffer, a call after each. */
static decoded decode_bytewise(const uint8_t *p, size_t n, size_t max_body)
{
	decoded d = {.r = HSM_HTTP_PARSE_PARTIAL, .buf = malloc(n > 0 ? n : 1)};
	FUZZ_ASSERT(d.buf != NULL);
	hsm_http_chunked c = {0};
	for (size_t len = 1; len <= n && d.r == HSM_HTTP_PARSE_PARTIAL; len++) {
		d.buf[len - 1] = p[len - 1];
		d.r = hsm_http_chunked_step(&c, d.buf, len, max_body);
		FUZZ_ASSERT(d.r != HSM_HTTP_PARSE_PARTIAL || c.pos == len);
		FUZZ_ASSERT(c.out <= max_body && c.out < c.pos);
	}
	d.out = c.out;
	d.pos = c.pos;
	return d;
}

/* Pieces, each call on a new allocation of exactly the bytes so far. */
static decoded decode_pieces(const uint8_t *p, size_t n, size_t max_body, uint32_t seed)
{
	decoded d = {.r = HSM_HTTP_PARSE_PARTIAL};
	hsm_http_chunked c;
	hsm_http_chunked_init(&c);
	for (size_t len = 0; len < n && d.r == HSM_HTTP_PARSE_PARTIAL;) {
		size_t k = next_piece(&seed), old = len;
		len = k < n - len ? len + k : n;
		uint8_t *nb = malloc(len);
		FUZZ_ASSERT(nb != NULL);
		if (old > 0)
			memcpy(nb, d.buf, old);
		memcpy(nb + old, p + old, len - old);
		free(d.buf);
		d.buf = nb;
		d.r = hsm_http_chunked_step(&c, d.buf, len, max_body);
	}
	d.out = c.out;
	d.pos = c.pos;
	return d;
}

/*
 * A reference decoder, line by line over the whole input, written from
 * http_parse.h apart from the byte-at-a-time one.  PARTIAL from it means
 * "not decided by a whole line": the real decoder may have seen an error
 * inside the incomplete line already.
 */
static bool ref_value_char(uint8_t b) { return b == '\t' || (b >= 0x20 && b != 0x7f); }

static bool ref_tchar(uint8_t b)
{
	return b != 0 && (strchr("!#$%&'*+-.^_`|~", b) != NULL || (b >= '0' && b <= '9') ||
	                  ((b | 0x20) >= 'a' && (b | 0x20) <= 'z'));
}

/* Whether p[s..e), a size line without its line end, is well-formed; its size. */
static bool ref_size_line(const uint8_t *p, size_t s, size_t e, uint64_t *size)
{
	size_t i = s;
	for (*size = 0; i < e && isxdigit(p[i]); i++)
		*size = *size * 16 + (uint64_t)(isdigit(p[i]) ? p[i] - '0' : (p[i] | 0x20) - 'a' + 10);
	if (i == s || i - s > 16 || e - s > HSM_HTTP_CHUNK_LINE_MAX)
		return false;
	size_t digits_end = i;
	while (i < e && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i == e)
		return i == digits_end; /* BWS only before a ';' */
	if (p[i++] != ';')
		return false;
	for (; i < e; i++)
		if (!ref_value_char(p[i]))
			return false;
	return true;
}

/* The first bad byte of the trailer line p[s..lf] (lf is its LF), or lf + 1. */
static size_t ref_trailer_bad(const uint8_t *p, size_t s, size_t lf)
{
	size_t i = s;
	if (p[s] == '\r' || p[s] == '\n') /* an empty line: CR LF or LF */
		return p[s] == '\n' || s + 1 == lf ? lf + 1 : s + 1;
	while (ref_tchar(p[i]))
		i++;
	if (i == s || p[i] != ':')
		return i;
	for (i++; ref_value_char(p[i]);)
		i++;
	if (p[i] == '\r')
		return i + 1 == lf ? lf + 1 : i + 1;
	return i == lf ? lf + 1 : i;
}

static hsm_http_parse ref_trailers(const uint8_t *p, size_t n, size_t *pos)
{
	size_t t0 = *pos, i = *pos;
	for (;;) {
		const uint8_t *q = memchr(p + i, '\n', n - i);
		if (q == NULL)
			return HSM_HTTP_PARSE_PARTIAL;
		size_t lf = (size_t)(q - p), bad = ref_trailer_bad(p, i, lf);
		if (bad <= lf)
			return bad - t0 >= HSM_HTTP_TRAILER_MAX ? HSM_HTTP_PARSE_TOO_LARGE
			                                        : HSM_HTTP_PARSE_BAD;
		if (lf - t0 >= HSM_HTTP_TRAILER_MAX)
			return HSM_HTTP_PARSE_TOO_LARGE;
		bool last = lf == i || (lf == i + 1 && p[i] == '\r');
		i = lf + 1;
		if (last) {
			*pos = i;
			return HSM_HTTP_PARSE_OK;
		}
	}
}

static hsm_http_parse ref_chunked(const uint8_t *p, size_t n, size_t max_body, decoded *d)
{
	size_t i = 0;
	for (;;) {
		const uint8_t *q = i < n ? memchr(p + i, '\n', n - i) : NULL;
		if (q == NULL)
			return HSM_HTTP_PARSE_PARTIAL;
		size_t lf = (size_t)(q - p), e = lf > i && p[lf - 1] == '\r' ? lf - 1 : lf;
		uint64_t size;
		if (!ref_size_line(p, i, e, &size))
			return HSM_HTTP_PARSE_BAD;
		if (size > UINT64_C(1) << 63 || size > max_body - d->out)
			return HSM_HTTP_PARSE_TOO_LARGE;
		i = lf + 1;
		if (size == 0)
			break;
		if (n - i < size)
			return HSM_HTTP_PARSE_PARTIAL;
		memcpy(d->buf + d->out, p + i, (size_t)size);
		d->out += (size_t)size;
		i += (size_t)size;
		size_t crlf = i < n && p[i] == '\r' ? 2 : 1;
		if (n - i < crlf)
			return HSM_HTTP_PARSE_PARTIAL;
		if (p[i + crlf - 1] != '\n')
			return HSM_HTTP_PARSE_BAD;
		i += crlf;
	}
	hsm_http_parse r = ref_trailers(p, n, &i);
	d->pos = i;
	return r;
}

static void check_reference(const uint8_t *p, size_t n, size_t max_body, const decoded *a)
{
	decoded d = {.buf = malloc(n > 0 ? n : 1)};
	FUZZ_ASSERT(d.buf != NULL);
	d.r = ref_chunked(p, n, max_body, &d);
	if (d.r == HSM_HTTP_PARSE_PARTIAL) {
		FUZZ_ASSERT(a->r == HSM_HTTP_PARSE_PARTIAL || a->r == HSM_HTTP_PARSE_BAD ||
		            a->r == HSM_HTTP_PARSE_TOO_LARGE);
	} else {
		FUZZ_ASSERT(a->r == d.r);
		if (d.r == HSM_HTTP_PARSE_OK)
			FUZZ_ASSERT(a->pos == d.pos && a->out == d.out &&
			            (d.out == 0 || memcmp(a->buf, d.buf, d.out) == 0));
	}
	free(d.buf);
}

static void check_same(const decoded *a, const decoded *b)
{
	FUZZ_ASSERT(a->r == b->r);
	if (a->r != HSM_HTTP_PARSE_OK && a->r != HSM_HTTP_PARSE_PARTIAL)
		return;
	FUZZ_ASSERT(a->out == b->out && a->pos == b->pos);
	FUZZ_ASSERT(a->out == 0 || memcmp(a->buf, b->buf, a->out) == 0);
}

/* The decoded body as one chunk (if not empty), then the last chunk: decodes to itself. */
static void check_reencode(const uint8_t *body, size_t n, size_t max_body)
{
	char size[32];
	int w = n == 0 ? 0 : snprintf(size, sizeof(size), "%zx\r\n", n);
	FUZZ_ASSERT(w >= 0 && (size_t)w < sizeof(size));
	size_t chunk = n == 0 ? 0 : (size_t)w + n + 2, total = chunk + 5;
	uint8_t *wire = malloc(total);
	FUZZ_ASSERT(wire != NULL);
	if (n > 0) {
		memcpy(wire, size, (size_t)w);
		memcpy(wire + w, body, n);
		memcpy(wire + w + n, "\r\n", 2);
	}
	memcpy(wire + chunk, "0\r\n\r\n", 5);
	decoded d = decode_all(wire, total, max_body);
	FUZZ_ASSERT(d.r == HSM_HTTP_PARSE_OK && d.pos == total && d.out == n);
	FUZZ_ASSERT(n == 0 || memcmp(d.buf, body, n) == 0);
	free(d.buf);
	free(wire);
}

static void fuzz_chunked(const uint8_t *p, size_t n, size_t max_body, uint32_t seed)
{
	decoded a = decode_all(p, n, max_body);
	decoded b = decode_bytewise(p, n, max_body);
	decoded c = decode_pieces(p, n, max_body, seed);
	FUZZ_ASSERT(a.r != HSM_HTTP_PARSE_VERSION && a.r != HSM_HTTP_PARSE_FRAMING);
	FUZZ_ASSERT(a.pos <= n && a.out <= max_body && a.out <= a.pos);
	FUZZ_ASSERT(a.r != HSM_HTTP_PARSE_PARTIAL || a.pos == n);
	check_same(&a, &b);
	check_same(&a, &c);
	check_reference(p, n, max_body, &a);
	if (a.r == HSM_HTTP_PARSE_OK)
		check_reencode(a.buf, a.out, max_body);
	free(a.buf);
	free(b.buf);
	free(c.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	uint8_t opt = fuzz_u8(&in);
	uint32_t seed = (uint32_t)opt >> 1;
	if ((opt & 1) == 0) {
		fuzz_head(in.p, in.n, seed);
		return 0;
	}
	uint8_t mb = fuzz_u8(&in);
	fuzz_chunked(in.p, in.n, mb == 255 ? SIZE_MAX : (size_t)mb * 4, seed);
	return 0;
}
