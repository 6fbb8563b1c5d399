/*
 * http_parse.h - reading HTTP/1.1 requests off the wire (RFC 9112): where a
 * request head ends, the head itself (parsed in place), and chunked bodies,
 * which the client (client/client.c) decodes answers with too.
 *
 * Pure functions over bytes: no I/O, no allocation, no global state, so the
 * server's reader (http_conn.c) stays small and the parsing can be fuzzed on
 * its own (tests/fuzz/http_parse_fuzz.c).  Strict where RFC 9112 lets a
 * server choose, since hsmd's clients are SDKs, not browsers: anything that a
 * proxy in front could read differently is refused (RFC 9112 section 11.2).
 */
#ifndef HSM_COMMON_HTTP_PARSE_H
#define HSM_COMMON_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

/* Header fields in one request head; more is HSM_HTTP_PARSE_TOO_LARGE. */
#define HSM_HTTP_MAX_FIELDS 256
/* A chunk-size line (size, extensions) longer than this is HSM_HTTP_PARSE_BAD. */
#define HSM_HTTP_CHUNK_LINE_MAX 1024
/* The trailer section of a chunked body, in bytes; more is HSM_HTTP_PARSE_TOO_LARGE. */
#define HSM_HTTP_TRAILER_MAX 8192

typedef enum hsm_http_parse {
	HSM_HTTP_PARSE_OK,
	HSM_HTTP_PARSE_PARTIAL,   /* more bytes are needed */
	HSM_HTTP_PARSE_BAD,       /* malformed: answer 400 and close */
	HSM_HTTP_PARSE_TOO_LARGE, /* too many fields (431), a body over its limit (413) */
	HSM_HTTP_PARSE_VERSION,   /* well-formed but not HTTP/1.0 or 1.1: 505 */
	HSM_HTTP_PARSE_FRAMING,   /* ambiguous or unsupported framing: 400 and close */
	HSM_HTTP_PARSE_LENGTH_TOO_LARGE, /* a Content-Length past any limit: 413 */
	HSM_HTTP_PARSE_HOST,      /* no Host, several, or one not host[:port]: 400 and close */
} hsm_http_parse;

/* One header field, both strings NUL-terminated inside the parsed buffer. */
typedef struct hsm_http_field {
	const char *name;  /* as received (case kept) */
	const char *value; /* leading and trailing SP/HTAB removed */
} hsm_http_field;

typedef enum hsm_http_body_kind {
	HSM_HTTP_BODY_NONE,    /* neither Content-Length nor Transfer-Encoding */
	HSM_HTTP_BODY_LENGTH,  /* Content-Length: content_length bytes (may be 0) */
	HSM_HTTP_BODY_CHUNKED, /* Transfer-Encoding: chunked */
} hsm_http_body_kind;

typedef struct hsm_http_head {
	const char *method; /* a token, e.g. "GET"; case kept (methods are case-sensitive) */
	const char *path;   /* the target up to '?' (still percent-encoded), e.g. "/" or "*" */
	const char *query;  /* after the first '?', without it; "" when there is none */
	const char *authority; /* absolute-form only: the target's host[:port]; else NULL */
	unsigned minor;     /* HTTP/1.minor: 0 or 1 */
	size_t n_fields;
	hsm_http_field fields[HSM_HTTP_MAX_FIELDS]; /* in the order received */
	hsm_http_body_kind body;
	uint64_t content_length; /* with HSM_HTTP_BODY_LENGTH */
	/* RFC 9112 section 9.3: HTTP/1.1 persists unless "Connection: close";
	 * HTTP/1.0 only with "Connection: keep-alive".  Connection is a
	 * comma-separated list of case-insensitive tokens. */
	bool keep_alive;
	bool expect_continue; /* HTTP/1.1 with "Expect: 100-continue" (case-insensitive) */
} hsm_http_head;

/*
 * Looks for the end of a request head in buf[0..len): the empty line after
 * the last field.  Lines end in CRLF or in a bare LF (RFC 9112 section 2.2).
 * Empty lines before the request line are not a head's end (section 2.2 says
 * to ignore them).  *scan carries the search across calls on a growing buffer
 * (0 on the first call); each byte is examined a bounded number of times in
 * all.  Returns the head's length, terminating empty line included, or 0 when
 * the end is not in buf yet.
 */
size_t hsm_http_head_end(const uint8_t *buf, size_t len, size_t *scan) HSM_MUST_CHECK;

/*
 * Whether buf[0..len), the start of a request, can still become one: past
 * the empty lines RFC 9112 section 2.2 lets a client send first (their CRs
 * and LFs), the first byte must begin a method, a token (RFC 9110 section
 * 5.6.2).  BAD when it cannot (a TLS ClientHello on a plain-HTTP port, whose
 * first byte is 0x16), OK when it can, PARTIAL while only CRs and LFs have
 * come.  *skip carries the CRs and LFs examined across calls on a growing
 * buffer (0 on the first call), so each byte is examined once.
 */
hsm_http_parse hsm_http_head_start(const uint8_t *buf, size_t len, size_t *skip) HSM_MUST_CHECK;
/* Whether a request may begin with byte b (see hsm_http_head_start). */
bool hsm_http_may_begin_request(uint8_t b);

/*
 * Parses the head buf[0..head_len) (head_len as returned by
 * hsm_http_head_end) in place: NULs are written into buf, and every string in
 * *head points into buf, valid as long as buf is.  Leading empty lines are
 * skipped.  Rules (RFC 9112):
 * - request line: method SP request-target SP HTTP-version, single spaces;
 *   method a token (RFC 9110 section 5.6.2); the target in origin-form
 *   ("/" then visible ASCII 0x21-0x7e, no '#'), "*", or absolute-form
 *   ("http://" or "https://", case-insensitive, an authority that is a valid
 *   Host value as below, else HOST, then an origin-form path or none, which
 *   is "/"; section 3.2.2: the authority then replaces the Host field's
 *   value); any other form is BAD;
 *   "HTTP/1.0" and "HTTP/1.1" are accepted, "HTTP/d.d" with other digits is
 *   VERSION, anything else BAD;
 * - fields: a token name immediately followed by ':' (whitespace before the
 *   colon is BAD, section 5.1), the value trimmed of SP/HTAB; a value may hold
 *   HTAB, SP, 0x21-0x7e and 0x80-0xff, anything else (NUL, CR, other control
 *   characters, DEL) is BAD; a line starting with SP or HTAB (obsolete line
 *   folding, section 5.2) is BAD; a bare CR anywhere is BAD;
 * - HTTP/1.1 without exactly one Host field, or HTTP/1.0 with more than
 *   one, is HOST (section 3.2); so is a Host value other than empty or
 *   uri-host [":" port] (RFC 9110 section 7.2): a reg-name (unreserved,
 *   sub-delims and %XX escapes, IPv4 addresses included) or a bracketed
 *   IPv6 address or IPvFuture, and a port of 1 to 5 digits up to 65535;
 * - framing (section 6): Content-Length must be 1 to 19 decimal digits
 *   (anything else, e.g. "+3", "", "3,3", is FRAMING; a value over 2^63 is
 *   TOO_LARGE) and appear once (twice, even with equal values, is FRAMING);
 *   Transfer-Encoding must appear once, be exactly "chunked" (case-insensitive),
 *   come without Content-Length and not in HTTP/1.0, else FRAMING.
 * On anything but OK the contents of *head and buf are unspecified.
 */
hsm_http_parse hsm_http_parse_head(uint8_t *buf, size_t head_len,
                                   hsm_http_head *head) HSM_MUST_CHECK;

/* RFC 9110 section 5.6.2: s is a non-empty token (a method, a field name). */
bool hsm_http_is_token(const char *s);
/* RFC 9110 section 5.5: s holds only what a field value may (HTAB, SP,
 * visible ASCII, obs-text 0x80-0xff). */
bool hsm_http_is_field_value(const char *s);

/* The first field of that name (ASCII case-insensitive), or NULL. */
const char *hsm_http_head_field(const hsm_http_head *head, const char *name);

/*
 * A chunked body (RFC 9112 section 7.1), decoded in place and incrementally:
 * zero-initialize (or hsm_http_chunked_init), then call hsm_http_chunked_step
 * each time bytes have been appended to the body.  The decoded data is moved
 * to the front of buf as it is found (it always trails the bytes examined,
 * so appending never overwrites it); the caller may move buf between calls
 * as long as its contents are kept.
 */
typedef struct hsm_http_chunked {
	size_t pos;  /* bytes of buf examined so far */
	size_t out;  /* decoded body bytes, at the front of buf */
	/* private: where the decoder is */
	int state_;
	uint64_t left_;   /* data bytes left in the current chunk */
	size_t line_;     /* bytes of the current size or trailer line so far */
	size_t trailer_;  /* bytes of trailer section so far */
	bool digits_;     /* the current size line has at least one hex digit */
} hsm_http_chunked;

void hsm_http_chunked_init(hsm_http_chunked *c);

/*
 * Decodes from c->pos up to len.  Returns OK once the last chunk and the
 * trailer section (fields are read and ignored) have been read: the body is
 * buf[0..c->out) and the chunked encoding took buf[0..c->pos) (what follows
 * is the next request).  PARTIAL: everything up to len was consumed, call
 * again with more.  BAD: malformed (a size that is not 1-16 hex digits, a
 * chunk not followed by CRLF or LF, a size line longer than
 * HSM_HTTP_CHUNK_LINE_MAX).  TOO_LARGE: the decoded body would pass max_body,
 * a chunk size over 2^63, or trailers over HSM_HTTP_TRAILER_MAX.  Chunk
 * extensions (";name=value") are skipped.  After anything but PARTIAL, c is
 * spent.
 */
hsm_http_parse hsm_http_chunked_step(hsm_http_chunked *c, uint8_t *buf, size_t len,
                                     size_t max_body) HSM_MUST_CHECK;

#endif
