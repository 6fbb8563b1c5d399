/*
 * net.c - IP addresses and CIDR networks (net.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "common/net.h"

/* The text of one address, without its /prefix, fits this (INET6_ADDRSTRLEN and a NUL). */
#define ADDR_TEXT_MAX (INET6_ADDRSTRLEN + 1)
#define LIST_ENTRY_MAX (ADDR_TEXT_MAX + 4)

static void set_v4(hsm_net *net, const uint8_t a[4])
{
	memset(net, 0, sizeof(*net));
	memcpy(net->addr, a, 4);
	net->prefix = 32;
}

static void set_v6(hsm_net *net, const uint8_t a[16])
{
	memset(net, 0, sizeof(*net));
	memcpy(net->addr, a, 16);
	net->v6 = true;
	net->prefix = 128;
}

bool hsm_net_parse(const char *s, bool allow_prefix, hsm_net *out)
{
	char addr[ADDR_TEXT_MAX];
	const char *slash = strchr(s, '/');
	size_t n = slash != NULL ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof(addr) || (slash != NULL && !allow_prefix))
		return false;
	memcpy(addr, s, n);
	addr[n] = '\0';
	hsm_net net;
	struct in_addr a4;
	struct in6_addr a6;
	if (inet_pton(AF_INET, addr, &a4) == 1) {
		set_v4(&net, (const uint8_t *)&a4.s_addr);
	} else if (inet_pton(AF_INET6, addr, &a6) == 1) {
		if (slash == NULL && IN6_IS_ADDR_V4MAPPED(&a6))
			set_v4(&net, a6.s6_addr + 12);
		else
			set_v6(&net, a6.s6_addr);
	} else {
		return false;
	}
	if (slash != NULL) {
		const char *p = slash + 1;
		unsigned bits = 0;
		if (*p == '\0' || strlen(p) > 3)
			return false;
		for (; *p != '\0'; p++) {
			if (*p < '0' || *p > '9')
				return false;
			bits = bits * 10 + (unsigned)(*p - '0');
		}
		if (bits > net.prefix)
			return false;
		net.prefix = bits;
	}
	*out = net;
	return true;
}

bool hsm_net_contains(const hsm_net *net, const hsm_net *addr)
{
	if (net->v6 != addr->v6 || addr->prefix < net->prefix)
		return false;
	unsigned whole = net->prefix / 8, rest = net->prefix % 8;
	for (unsigned i = 0; i < whole; i++) {
		if (net->addr[i] != addr->addr[i])
			return false;
	}
	if (rest == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - rest));
	return (net->addr[whole] & mask) == (addr->addr[whole] & mask);
}

bool hsm_net_from_sockaddr(const struct sockaddr_storage *ss, hsm_net *out)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		set_v4(out, (const uint8_t *)&in->sin_addr.s_addr);
		return true;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
			set_v4(out, in6->sin6_addr.s6_addr + 12);
		else
			set_v6(out, in6->sin6_addr.s6_addr);
		return true;
	}
	return false;
}

hsm_result hsm_net_list_parse(const char *s, hsm_net *out, size_t max, size_t *n)
{
	size_t count = 0;
	const char *p = s;
	while (*p == ' ' || *p == '\t')
		p++;
	while (*p != '\0') {
		size_t len = strcspn(p, ",");
		const char *next = p[len] == ',' ? p + len + 1 : p + len;
		size_t end = len;
		while (end > 0 && (p[end - 1] == ' ' || p[end - 1] == '\t'))
			end--;
		char entry[LIST_ENTRY_MAX];
		HSM_ENSURE(end > 0, HSM_ERR_VALIDATION, "empty entry in the list of networks");
		HSM_ENSURE(end < sizeof(entry), HSM_ERR_VALIDATION, "'%.48s...' is not a network", p);
		memcpy(entry, p, end);
		entry[end] = '\0';
		HSM_ENSURE(count < max, HSM_ERR_VALIDATION, "more than %zu networks", max);
		HSM_ENSURE(hsm_net_parse(entry, true, &out[count]), HSM_ERR_VALIDATION,
		           "'%s' is not an IPv4 or IPv6 address or CIDR range", entry);
		count++;
		HSM_ENSURE(next == p + len || *next != '\0', HSM_ERR_VALIDATION,
		           "empty entry in the list of networks");
		p = next;
		while (*p == ' ' || *p == '\t')
			p++;
	}
	*n = count;
	return HSM_SUCCESS;
}
