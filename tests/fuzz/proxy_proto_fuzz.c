/*
 * proxy_proto_fuzz.c - the PROXY protocol header reader (server/proxy_proto.h).
 *
 * Input: the bytes a trusted peer sends first, as they are.
 *
 * Properties: the verdict on every prefix agrees with the verdict on the
 * whole input (PARTIAL until OK or BAD, never changing afterwards); OK comes
 * exactly when the header's last byte arrives, and the header alone (in an
 * allocation of exactly its size) gives the same result; a header is at most
 * HSM_PROXY_MAX bytes (version 1: at most 107, ending in CRLF) and the
 * verdict is reached by then; a version 1 header names its source in the
 * text form of its line, and a version 2 header names the bytes at their
 * documented offsets; a header read on a prefix keeps *out untouched unless
 * OK.
 */
#include "fuzz.h"

#include <arpa/inet.h>

#include "server/proxy_proto.h"

static hsm_proxy_parse parse_exact(const uint8_t *p, size_t n, hsm_proxy_header *h)
{
	uint8_t *copy = calloc(n > 0 ? n : 1, 1); /* exact size: ASan sees overreads */
	FUZZ_ASSERT(copy != NULL);
	if (n > 0)
		memcpy(copy, p, n);
	hsm_proxy_parse r = hsm_proxy_parse_header(copy, n, h);
	free(copy);
	return r;
}

static bool same(const hsm_proxy_header *a, const hsm_proxy_header *b)
{
	return a->len == b->len && a->version == b->version && a->has_source == b->has_source &&
	       a->v6 == b->v6 && a->port == b->port && memcmp(a->addr, b->addr, 16) == 0;
}

/* Version 1: the source is the line's third word, the port its fifth. */
static void check_v1(const uint8_t *p, const hsm_proxy_header *h)
{
	FUZZ_ASSERT(h->len >= 8 && h->len <= HSM_PROXY_V1_MAX);
	FUZZ_ASSERT(p[h->len - 2] == '\r' && p[h->len - 1] == '\n');
	FUZZ_ASSERT(memcmp(p, "PROXY ", 6) == 0);
	if (!h->has_source) {
		FUZZ_ASSERT(memcmp(p, "PROXY UNKNOWN", 13) == 0);
		return;
	}
	char line[HSM_PROXY_V1_MAX + 1], text[64];
	memcpy(line, p, h->len - 2);
	line[h->len - 2] = '\0';
	char *save = NULL, *w[6];
	size_t n = 0;
	for (char *t = strtok_r(line, " ", &save); t != NULL && n < 6; t = strtok_r(NULL, " ", &save))
		w[n++] = t;
	FUZZ_ASSERT(n == 6);
	FUZZ_ASSERT(strcmp(w[1], h->v6 ? "TCP6" : "TCP4") == 0);
	uint8_t a[16] = {0};
	FUZZ_ASSERT(inet_pton(h->v6 ? AF_INET6 : AF_INET, w[2], a) == 1);
	FUZZ_ASSERT(memcmp(a, h->addr, h->v6 ? 16 : 4) == 0);
	FUZZ_ASSERT(strtoul(w[4], NULL, 10) == h->port);
	FUZZ_ASSERT(hsm_proxy_source_text(h, text, sizeof(text)));
}

static void check_v2(const uint8_t *p, const hsm_proxy_header *h)
{
	FUZZ_ASSERT(h->len >= HSM_PROXY_V2_FIXED && h->len <= HSM_PROXY_MAX);
	FUZZ_ASSERT(memcmp(p, "\r\n\r\n\0\r\nQUIT\n", 12) == 0 && p[12] >> 4 == 2);
	FUZZ_ASSERT(h->len == HSM_PROXY_V2_FIXED + ((size_t)p[14] << 8 | p[15]));
	if (!h->has_source)
		return;
	size_t alen = h->v6 ? 16 : 4;
	FUZZ_ASSERT(p[12] == 0x21 && p[13] == (h->v6 ? 0x21 : 0x11));
	FUZZ_ASSERT(memcmp(h->addr, p + 16, alen) == 0);
	FUZZ_ASSERT(h->port == ((unsigned)p[16 + 2 * alen] << 8 | p[17 + 2 * alen]));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hsm_proxy_header all = {0};
	hsm_proxy_parse r = parse_exact(data, size, &all);
	FUZZ_ASSERT(r == HSM_PROXY_OK || r == HSM_PROXY_PARTIAL || r == HSM_PROXY_BAD);
	FUZZ_ASSERT(r != HSM_PROXY_PARTIAL || size < HSM_PROXY_MAX);
	/* Prefixes: PARTIAL, then the final verdict from some length on. */
	size_t decided = 0;
	hsm_proxy_parse last = HSM_PROXY_PARTIAL;
	for (size_t n = 0; n <= size && n <= HSM_PROXY_MAX; n++) {
		hsm_proxy_header h = {.len = 7777};
		hsm_proxy_parse q = hsm_proxy_parse_header(data, n, &h);
		FUZZ_ASSERT(q == HSM_PROXY_OK || h.len == 7777);
		if (last != HSM_PROXY_PARTIAL) {
			FUZZ_ASSERT(q == last);
			continue;
		}
		if (q != HSM_PROXY_PARTIAL) {
			last = q;
			decided = n;
		}
	}
	FUZZ_ASSERT(last == r);
	if (r != HSM_PROXY_OK)
		return 0;
	FUZZ_ASSERT(decided == all.len && all.len <= size);
	hsm_proxy_header exact = {0};
	FUZZ_ASSERT(parse_exact(data, all.len, &exact) == HSM_PROXY_OK && same(&exact, &all));
	if (all.version == 1)
		check_v1(data, &all);
	else
		check_v2(data, &all);
	return 0;
}
