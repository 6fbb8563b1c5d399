/*
 * source.h - a client's source address, as the per-source bounds count it:
 * an IPv4 address, or an IPv6 /64 (one subscriber's prefix: counting single
 * IPv6 addresses would give one client 2^64 sources).  IPv4-mapped IPv6
 * addresses are their IPv4 address.
 */
#ifndef HSM_SERVER_SOURCE_H
#define HSM_SERVER_SOURCE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct hsm_source {
	uint8_t family; /* 0 (unknown), 4 or 6 */
	uint8_t addr[16]; /* IPv4: 4 bytes; IPv6: the /64, 8 bytes; the rest zero */
} hsm_source;

/* "ffff:ffff:ffff:ffff::/64" and its NUL fit. */
#define HSM_SOURCE_TEXT_MAX 64

/* addr as text ("192.0.2.1", "2001:db8::1", or "2001:db8::/64"); family 0 if unparsable. */
hsm_source hsm_source_of_text(const char *addr);
/* A socket's peer address; family 0 for other families. */
hsm_source hsm_source_of_sockaddr(const struct sockaddr_storage *ss);
/* "192.0.2.1", "2001:db8::/64" or "unknown". */
void hsm_source_text(const hsm_source *s, char out[HSM_SOURCE_TEXT_MAX]);
bool hsm_source_equal(const hsm_source *a, const hsm_source *b);
/* A hash for tables of sources; seed keeps chosen addresses from colliding on every node. */
uint64_t hsm_source_hash(const hsm_source *s, uint64_t seed);

#endif
