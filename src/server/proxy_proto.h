/*
 * proxy_proto.h - the PROXY protocol header (HAProxy's "The PROXY protocol",
 * versions 1 and 2) that a TCP load balancer sends before a connection's own
 * bytes, naming the client it relays.
 *
 * A pure function over the bytes received so far: no I/O, no allocation, so
 * the connection layer (http_conn.c) calls it again as more bytes arrive and
 * it can be fuzzed on its own (tests/fuzz/proxy_proto_fuzz.c).  The verdict
 * on a prefix never changes as bytes are added: PARTIAL until the header is
 * complete (OK) or cannot become one (BAD), and it is decided by the time
 * HSM_PROXY_MAX bytes have arrived.  Bytes after the header are never looked
 * at: they belong to TLS or HTTP.
 *
 * Whether to expect a header at all is the caller's decision: only peers
 * configured as trusted (proxy_protocol_from) may send one.
 */
#ifndef HSM_SERVER_PROXY_PROTO_H
#define HSM_SERVER_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/result.h"

/* Section 2.1: a version 1 line, "PROXY" to CRLF included, is at most 107 bytes. */
#define HSM_PROXY_V1_MAX 107
/* Section 2.2: the fixed part of a version 2 header; its length field counts what follows. */
#define HSM_PROXY_V2_FIXED 16
/* What hsmd accepts after the fixed part: addresses (216 bytes at most, AF_UNIX) and TLVs. */
#define HSM_PROXY_V2_REST_MAX 1024
#define HSM_PROXY_MAX (HSM_PROXY_V2_FIXED + HSM_PROXY_V2_REST_MAX)

typedef enum hsm_proxy_parse {
	HSM_PROXY_OK,
	HSM_PROXY_PARTIAL, /* a valid beginning: more bytes are needed */
	HSM_PROXY_BAD,     /* not a header hsmd accepts (malformed, unknown version, too long) */
} hsm_proxy_parse;

typedef struct hsm_proxy_header {
	size_t len;       /* bytes the header takes on the wire */
	unsigned version; /* 1 or 2 */
	/*
	 * true: the header names the client (TCP over IPv4 or IPv6), whose
	 * address and port follow.  false: use the connection's own peer (v2
	 * LOCAL: the balancer's health checks; v1 UNKNOWN; v2 UNSPEC, UNIX or
	 * datagram addresses, which cannot be a TCP client's).
	 */
	bool has_source;
	bool v6;
	uint8_t addr[16]; /* the source address; IPv4 in the first 4 bytes */
	uint16_t port;    /* the source port */
} hsm_proxy_header;

/*
 * Reads the header at the start of p[0..n) (n may be 0).  On OK, *out
 * describes it; otherwise *out is untouched.  Version 2 TLVs are skipped
 * unread.
 */
hsm_proxy_parse hsm_proxy_parse_header(const uint8_t *p, size_t n, hsm_proxy_header *out)
    HSM_MUST_CHECK;

/* The source address of h (has_source) as text ("203.0.113.7", "2001:db8::1"); false if it does not fit. */
bool hsm_proxy_source_text(const hsm_proxy_header *h, char *out, size_t cap) HSM_MUST_CHECK;

#endif
