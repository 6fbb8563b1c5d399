/*
 * http_addr.c - listen addresses: parsing "host:port" and making the
 * listening sockets.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "server/http.h"
#include "server/http_internal.h"

/* Longest accepted host part: an IPv6 literal with an embedded IPv4 address. */
#define HOST_MAX 46

static hsm_result parse_port(const char *text, uint16_t *port)
{
	int64_t v = 0;
	HSM_ENSURE(*text != '\0' && strspn(text, "0123456789") == strlen(text), HSM_ERR_VALIDATION,
	           "the port must be a number");
	HSM_ENSURE(hsm_ok(hsm_parse_i64(text, 0, 65535, &v)), HSM_ERR_VALIDATION,
	           "the port must be between 0 and 65535");
	*port = (uint16_t)v;
	return HSM_SUCCESS;
}

/* Splits "host:port" or "[host]:port" into its parts (host copied into out). */
static hsm_result split_addr(const char *text, char host[HOST_MAX], const char **port, bool *v6)
{
	const char *colon;
	size_t host_len;
	*v6 = text[0] == '[';
	if (*v6) {
		const char *close = strchr(text, ']');
		HSM_ENSURE(close != NULL && close[1] == ':', HSM_ERR_VALIDATION,
		           "expected [ipv6-address]:port");
		colon = close + 1;
		host_len = (size_t)(close - text - 1);
		text++;
	} else {
		colon = strrchr(text, ':');
		HSM_ENSURE(colon != NULL, HSM_ERR_VALIDATION, "expected address:port");
		host_len = (size_t)(colon - text);
	}
	HSM_ENSURE(host_len > 0 && host_len < HOST_MAX, HSM_ERR_VALIDATION,
	           "the address part is empty or too long");
	memcpy(host, text, host_len);
	host[host_len] = '\0';
	*port = colon + 1;
	return HSM_SUCCESS;
}

hsm_result hsm_http_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	HSM_ASSERT(text != NULL && ss != NULL && len != NULL);
	char host[HOST_MAX];
	const char *port_text = NULL;
	bool v6 = false;
	uint16_t port = 0;
	HSM_GUARD(split_addr(text, host, &port_text, &v6));
	HSM_GUARD(parse_port(port_text, &port));
	struct sockaddr_storage tmp;
	memset(&tmp, 0, sizeof(tmp));
	if (v6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&tmp;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		HSM_ENSURE(inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1, HSM_ERR_VALIDATION,
		           "'%s' is not an IPv6 address", host);
		*len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&tmp;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		HSM_ENSURE(inet_pton(AF_INET, host, &sin->sin_addr) == 1, HSM_ERR_VALIDATION,
		           "'%s' is not an IPv4 address (IPv6 goes in brackets)", host);
		*len = sizeof(*sin);
	}
	*ss = tmp;
	return HSM_SUCCESS;
}

bool hsm_http_addr_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	}
	return false;
}

uint16_t hsm_http_sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

void hsm_http_sockaddr_set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons(port);
}

static hsm_result set_opt(int fd, int level, int name, const char *what)
{
	int on = 1;
	HSM_ENSURE(setsockopt(fd, level, name, &on, sizeof(on)) == 0, HSM_ERR_IO, "cannot set %s: %s",
	           what, strerror(errno));
	return HSM_SUCCESS;
}

hsm_result hsm_http_listen_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuseport,
                                  const char *name, int *out)
{
	hsm_result res = HSM_SUCCESS;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	HSM_CHECK(fd >= 0, HSM_ERR_IO, "cannot create a socket: %s", strerror(errno));
	HSM_TRY(set_opt(fd, SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"));
	if (reuseport)
		HSM_TRY(set_opt(fd, SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT"));
	/* "[::]" means IPv6 only; IPv4 clients need their own address. */
	if (ss->ss_family == AF_INET6)
		HSM_TRY(set_opt(fd, IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY"));
	HSM_CHECK(bind(fd, (const struct sockaddr *)ss, len) == 0, HSM_ERR_IO,
	          "cannot listen on %s (port %u): %s", name, (unsigned)hsm_http_sockaddr_port(ss),
	          strerror(errno));
	HSM_CHECK(listen(fd, SOMAXCONN) == 0, HSM_ERR_IO, "cannot listen on %s: %s", name,
	          strerror(errno));
	*out = fd;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	return res;
}
