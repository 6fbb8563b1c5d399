/*
 * net.h - IPv4 and IPv6 addresses and networks (CIDR ranges, RFC 4632 and
 * RFC 4291 section 2.3): parsing their text and testing membership.
 *
 * Used by key policies (the IpAddress condition operators on aws:SourceIp)
 * and by the HTTP server (which peers may send a PROXY protocol header).
 * Plain values: nothing here allocates or keeps pointers.
 */
#ifndef HSM_COMMON_NET_H
#define HSM_COMMON_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/result.h"

/* An IPv4 or IPv6 network; an address is one with a full-length prefix. */
typedef struct hsm_net {
	bool v6;
	unsigned prefix;  /* bits that must match */
	uint8_t addr[16]; /* IPv4: the first 4 bytes */
} hsm_net;

/*
 * An IPv4 or IPv6 address, with a /prefix when allow_prefix ("10.0.0.0/8",
 * "2001:db8::/32").  IPv4-mapped IPv6 addresses without a prefix read as
 * IPv4 (a dual-stack socket shows an IPv4 client as ::ffff:a.b.c.d).  False
 * for anything else; *out is set only on success.
 */
bool hsm_net_parse(const char *s, bool allow_prefix, hsm_net *out) HSM_MUST_CHECK;
/* Whether addr (an address, or a network) lies inside net; never across families. */
bool hsm_net_contains(const hsm_net *net, const hsm_net *addr);
/* The address of an AF_INET or AF_INET6 socket address (IPv4-mapped reads as IPv4). */
bool hsm_net_from_sockaddr(const struct sockaddr_storage *ss, hsm_net *out) HSM_MUST_CHECK;

/*
 * A comma-separated list of networks ("10.0.0.0/8, ::1"; blanks around each
 * are ignored; "" is the empty list) into out[0..max).  *n is the count.
 * Fails with HSM_ERR_VALIDATION naming the entry that is not a network, or
 * when there are more than max.
 */
hsm_result hsm_net_list_parse(const char *s, hsm_net *out, size_t max, size_t *n) HSM_MUST_CHECK;

#endif
