/*
 * proxy_proto.c - reading a PROXY protocol header (proxy_proto.h).
 *
 * Strict where the specification leaves room: a trusted balancer sends
 * exactly the documented form, so anything else ends the connection rather
 * than being guessed at.
 *
 * Version 1 (section 2.1), one line of at most 107 bytes:
 *   "PROXY TCP4 <src> <dst> <sport> <dport>\r\n", or TCP6, single spaces,
 *   addresses in their family's usual text form, ports 0..65535 in decimal
 *   without leading zeros; or "PROXY UNKNOWN" with anything up to CRLF.
 * Version 2 (section 2.2), binary:
 *   12-byte signature, version (high nibble 2) and command (LOCAL 0 or PROXY
 *   1), family (UNSPEC 0, INET 1, INET6 2, UNIX 3) and transport (UNSPEC 0,
 *   STREAM 1, DGRAM 2), a 16-bit big-endian length, then that many bytes:
 *   the addresses (12, 36 or 216 bytes by family) and TLVs (skipped).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "common/buf.h"
#include "server/proxy_proto.h"

static const char v1_prefix[] = "PROXY ";
static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

enum { CMD_LOCAL = 0, CMD_PROXY = 1 };
enum { FAM_UNSPEC = 0, FAM_INET = 1, FAM_INET6 = 2, FAM_UNIX = 3 };
enum { XPORT_UNSPEC = 0, XPORT_STREAM = 1, XPORT_DGRAM = 2 };
/* Section 2.2: the address block of each family. */
static const size_t v2_addr_len[] = {0, 12, 36, 216};

/* Whether the n bytes received agree with the start of want (want_len bytes). */
static bool agrees(const uint8_t *p, size_t n, const uint8_t *want, size_t want_len)
{
	size_t k = n < want_len ? n : want_len;
	for (size_t i = 0; i < k; i++)
		if (p[i] != want[i])
			return false;
	return true;
}

/* ---- version 1 ------------------------------------------------------------------- */

/* 0..65535 in decimal, no sign, no leading zero. */
static bool v1_port(const char *s, uint16_t *out)
{
	size_t n = strlen(s);
	if (n == 0 || n > 5 || strspn(s, "0123456789") != n || (s[0] == '0' && n > 1))
		return false;
	unsigned long v = 0;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (unsigned long)(s[i] - '0');
	if (v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

/* Splits line at single spaces into at most max words; false on an empty word or too many. */
static bool v1_words(char *line, char **words, size_t max, size_t *n)
{
	size_t k = 0;
	for (char *w = line;;) {
		char *sp = strchr(w, ' ');
		if (sp != NULL)
			*sp = '\0';
		if (*w == '\0' || k == max)
			return false;
		words[k++] = w;
		if (sp == NULL)
			break;
		w = sp + 1;
	}
	*n = k;
	return true;
}

/* The line without its CRLF: line[0..len), printable ASCII only. */
static hsm_proxy_parse v1_line(const char *text, size_t len, hsm_proxy_header *out)
{
	char line[HSM_PROXY_V1_MAX];
	memcpy(line, text, len);
	line[len] = '\0';
	for (size_t i = 0; i < len; i++)
		if (line[i] < 0x20 || line[i] > 0x7e)
			return HSM_PROXY_BAD;
	hsm_proxy_header h = {.len = len + 2, .version = 1};
	/* "UNKNOWN": the receiver ignores the rest of the line (section 2.1). */
	if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == '\0' || line[13] == ' ')) {
		*out = h;
		return HSM_PROXY_OK;
	}
	char *w[6];
	size_t n = 0;
	if (!v1_words(line, w, 6, &n) || n != 6)
		return HSM_PROXY_BAD;
	int af = strcmp(w[1], "TCP4") == 0 ? AF_INET : strcmp(w[1], "TCP6") == 0 ? AF_INET6 : 0;
	uint8_t dst[16];
	uint16_t dport = 0;
	if (af == 0 || inet_pton(af, w[2], h.addr) != 1 || inet_pton(af, w[3], dst) != 1 ||
	    !v1_port(w[4], &h.port) || !v1_port(w[5], &dport))
		return HSM_PROXY_BAD;
	h.has_source = true;
	h.v6 = af == AF_INET6;
	*out = h;
	return HSM_PROXY_OK;
}

static hsm_proxy_parse parse_v1(const uint8_t *p, size_t n, hsm_proxy_header *out)
{
	size_t have = n < HSM_PROXY_V1_MAX ? n : HSM_PROXY_V1_MAX;
	/* The line ends at the first CR, which must be followed by LF. */
	const uint8_t *cr = memchr(p, '\r', have);
	const uint8_t *lf = memchr(p, '\n', have);
	if (lf != NULL && (cr == NULL || lf < cr))
		return HSM_PROXY_BAD; /* a bare LF */
	if (cr == NULL)
		return n >= HSM_PROXY_V1_MAX ? HSM_PROXY_BAD : HSM_PROXY_PARTIAL;
	size_t at = (size_t)(cr - p);
	if (at + 1 == have)
		return n > at + 1 ? HSM_PROXY_BAD : HSM_PROXY_PARTIAL; /* LF past 107 bytes, or not yet here */
	if (p[at + 1] != '\n')
		return HSM_PROXY_BAD;
	return v1_line((const char *)p, at, out);
}

/* ---- version 2 ------------------------------------------------------------------- */

static hsm_proxy_parse parse_v2(const uint8_t *p, size_t n, hsm_proxy_header *out)
{
	if (n < HSM_PROXY_V2_FIXED)
		return HSM_PROXY_PARTIAL;
	hsm_cursor c;
	const uint8_t *sig = NULL, *src = NULL, *skip = NULL;
	uint8_t ver_cmd = 0, fam = 0;
	uint16_t rest = 0;
	hsm_cursor_init(&c, p, HSM_PROXY_V2_FIXED);
	if (hsm_failed(hsm_cursor_get_bytes(&c, sizeof(v2_sig), &sig, HSM_ERR_VALIDATION)) ||
	    hsm_failed(hsm_cursor_get_u8(&c, &ver_cmd, HSM_ERR_VALIDATION)) ||
	    hsm_failed(hsm_cursor_get_u8(&c, &fam, HSM_ERR_VALIDATION)) ||
	    hsm_failed(hsm_cursor_get_u16(&c, &rest, HSM_ERR_VALIDATION)))
		return HSM_PROXY_BAD; /* cannot happen: 16 bytes are there */
	unsigned version = ver_cmd >> 4, cmd = ver_cmd & 0x0fu;
	unsigned family = fam >> 4, transport = fam & 0x0fu;
	if (version != 2 || (cmd != CMD_LOCAL && cmd != CMD_PROXY) || rest > HSM_PROXY_V2_REST_MAX)
		return HSM_PROXY_BAD;
	hsm_proxy_header h = {.len = HSM_PROXY_V2_FIXED + rest, .version = 2};
	/* LOCAL: the family and addresses are ignored (section 2.2). */
	if (cmd == CMD_PROXY) {
		if (family > FAM_UNIX || transport > XPORT_DGRAM || rest < v2_addr_len[family])
			return HSM_PROXY_BAD;
		h.has_source = (family == FAM_INET || family == FAM_INET6) && transport == XPORT_STREAM;
		h.v6 = family == FAM_INET6;
	}
	if (n < h.len)
		return HSM_PROXY_PARTIAL;
	if (h.has_source) {
		size_t alen = h.v6 ? 16 : 4;
		hsm_cursor_init(&c, p + HSM_PROXY_V2_FIXED, rest);
		/* source address, destination address, source port, destination port */
		if (hsm_failed(hsm_cursor_get_bytes(&c, alen, &src, HSM_ERR_VALIDATION)) ||
		    hsm_failed(hsm_cursor_get_bytes(&c, alen, &skip, HSM_ERR_VALIDATION)) ||
		    hsm_failed(hsm_cursor_get_u16(&c, &h.port, HSM_ERR_VALIDATION)))
			return HSM_PROXY_BAD; /* cannot happen: rest covers the addresses */
		memcpy(h.addr, src, alen);
	}
	*out = h;
	return HSM_PROXY_OK;
}

/* ---- both ------------------------------------------------------------------------ */

hsm_proxy_parse hsm_proxy_parse_header(const uint8_t *p, size_t n, hsm_proxy_header *out)
{
	if (n == 0)
		return HSM_PROXY_PARTIAL;
	if (p[0] == (uint8_t)v1_prefix[0]) {
		if (!agrees(p, n, (const uint8_t *)v1_prefix, sizeof(v1_prefix) - 1))
			return HSM_PROXY_BAD;
		return parse_v1(p, n, out);
	}
	if (!agrees(p, n, v2_sig, sizeof(v2_sig)))
		return HSM_PROXY_BAD;
	return parse_v2(p, n, out);
}

bool hsm_proxy_source_text(const hsm_proxy_header *h, char *out, size_t cap)
{
	if (!h->has_source || cap > (size_t)INT32_MAX)
		return false;
	return inet_ntop(h->v6 ? AF_INET6 : AF_INET, h->addr, out, (socklen_t)cap) != NULL;
}
