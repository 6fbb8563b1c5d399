/*
 * source.c - source addresses for the per-source bounds (source.h).
 */
#include "server/source.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

static const uint8_t v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static hsm_source of_v6(const uint8_t a6[16])
{
	hsm_source s;
	memset(&s, 0, sizeof(s));
	if (hsm_ct_equal(a6, v4_mapped, sizeof(v4_mapped))) { /* ::ffff:192.0.2.1 */
		s.family = 4;
		memcpy(s.addr, a6 + 12, 4);
	} else {
		s.family = 6;
		memcpy(s.addr, a6, 8);
	}
	return s;
}

hsm_source hsm_source_of_text(const char *addr)
{
	hsm_source s;
	char text[INET6_ADDRSTRLEN + 8];
	memset(&s, 0, sizeof(s));
	size_t len = strlen(addr);
	if (len >= sizeof(text))
		return s;
	memcpy(text, addr, len + 1);
	if (len > 3 && strcmp(text + len - 3, "/64") == 0)
		text[len - 3] = '\0';
	uint8_t a6[16];
	if (inet_pton(AF_INET, text, s.addr) == 1)
		s.family = 4;
	else if (inet_pton(AF_INET6, text, a6) == 1)
		s = of_v6(a6);
	return s;
}

hsm_source hsm_source_of_sockaddr(const struct sockaddr_storage *ss)
{
	hsm_source s;
	memset(&s, 0, sizeof(s));
	if (ss->ss_family == AF_INET) {
		s.family = 4;
		memcpy(s.addr, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		s = of_v6(((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr);
	}
	return s;
}

void hsm_source_text(const hsm_source *s, char out[HSM_SOURCE_TEXT_MAX])
{
	char ip[INET6_ADDRSTRLEN];
	if (s->family == 4 && inet_ntop(AF_INET, s->addr, ip, sizeof(ip)) != NULL)
		snprintf(out, HSM_SOURCE_TEXT_MAX, "%s", ip);
	else if (s->family == 6 && inet_ntop(AF_INET6, s->addr, ip, sizeof(ip)) != NULL)
		snprintf(out, HSM_SOURCE_TEXT_MAX, "%s/64", ip);
	else
		snprintf(out, HSM_SOURCE_TEXT_MAX, "unknown");
}

bool hsm_source_equal(const hsm_source *a, const hsm_source *b)
{
	return a->family == b->family && hsm_ct_equal(a->addr, b->addr, sizeof(a->addr));
}

uint64_t hsm_source_hash(const hsm_source *s, uint64_t seed)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ seed; /* FNV-1a */
	h = (h ^ s->family) * 0x100000001b3ULL;
	for (size_t i = 0; i < sizeof(s->addr); i++)
		h = (h ^ s->addr[i]) * 0x100000001b3ULL;
	return h ^ (h >> 29);
}
