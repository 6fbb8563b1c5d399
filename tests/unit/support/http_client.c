#include "support/http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

long tc_ms_since(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(now.tv_sec - start->tv_sec) * 1000L + (now.tv_nsec - start->tv_nsec) / 1000000L;
}

/* Connects from src (an IPv4 loopback address such as "127.0.0.2"), or from any when NULL. */
static tc_conn *connect_from(uint16_t port, bool v6, const char *src, int timeout_ms);

tc_conn *tc_connect(uint16_t port, bool v6, int timeout_ms)
{
	return connect_from(port, v6, NULL, timeout_ms);
}

tc_conn *tc_connect_from(uint16_t port, const char *src_ip, int timeout_ms)
{
	return connect_from(port, false, src_ip, timeout_ms);
}

static tc_conn *connect_from(uint16_t port, bool v6, const char *src, int timeout_ms)
{
	/* Writing to a connection the server has closed must fail, not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	struct sockaddr_storage ss;
	socklen_t len;
	memset(&ss, 0, sizeof(ss));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		a->sin6_addr = in6addr_loopback;
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (src != NULL) {
		struct sockaddr_in from;
		memset(&from, 0, sizeof(from));
		from.sin_family = AF_INET;
		if (v6 || inet_pton(AF_INET, src, &from.sin_addr) != 1 ||
		    bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0) {
			close(fd);
			return NULL;
		}
	}
	if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
		close(fd);
		return NULL;
	}
	tc_conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	return c;
}

bool tc_tls(tc_conn *c, SSL_CTX *ctx)
{
	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
		return false;
	return SSL_connect(c->ssl) == 1;
}

void tc_close(tc_conn *c)
{
	if (c == NULL)
		return;
	if (c->ssl != NULL) {
		/* close_notify: without it OpenSSL marks the session not resumable. */
		if (SSL_is_init_finished(c->ssl))
			(void)SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	close(c->fd);
	free(c);
}

bool tc_send(tc_conn *c, const void *p, size_t n)
{
	const char *s = p;
	while (n > 0) {
		ssize_t w;
		if (c->ssl != NULL) {
			int r = SSL_write(c->ssl, s, n > 65536 ? 65536 : (int)n);
			w = r > 0 ? r : -1;
		} else {
			w = send(c->fd, s, n, MSG_NOSIGNAL);
		}
		if (w <= 0) {
			if (w < 0 && errno == EINTR && c->ssl == NULL)
				continue;
			return false;
		}
		s += w;
		n -= (size_t)w;
	}
	return true;
}

bool tc_sendf(tc_conn *c, const char *fmt, ...)
{
	char line[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return false;
	return tc_send(c, line, (size_t)n);
}

/* Reads more bytes into c->buf; 0 on EOF, -1 on error or timeout. */
static ssize_t fill(tc_conn *c)
{
	if (c->len >= sizeof(c->buf))
		return -1;
	ssize_t n;
	if (c->ssl != NULL) {
		int r = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
		if (r <= 0)
			return SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
		n = r;
	} else {
		do
			n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		while (n < 0 && errno == EINTR);
	}
	if (n > 0)
		c->len += (size_t)n;
	return n;
}

static void consume(tc_conn *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

static char *find_head_end(tc_conn *c)
{
	for (size_t i = 0; i + 3 < c->len; i++)
		if (memcmp(c->buf + i, "\r\n\r\n", 4) == 0)
			return c->buf + i;
	return NULL;
}

bool tc_header(const tc_resp *r, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name);
	const char *line = strstr(r->head, "\r\n");
	while (line != NULL && line[2] != '\0') {
		line += 2;
		const char *end = strstr(line, "\r\n");
		if (end == NULL)
			end = line + strlen(line);
		if ((size_t)(end - line) > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
			const char *v = line + nlen + 1;
			while (*v == ' ')
				v++;
			size_t vlen = (size_t)(end - v);
			if (vlen >= cap)
				return false;
			memcpy(out, v, vlen);
			out[vlen] = '\0';
			return true;
		}
		line = end;
	}
	return false;
}

bool tc_read(tc_conn *c, tc_resp *r, bool head_only)
{
	memset(r, 0, sizeof(*r));
	char *end;
	while ((end = find_head_end(c)) == NULL)
		if (fill(c) <= 0)
			return false;
	size_t head_len = (size_t)(end - c->buf) + 4;
	if (head_len >= sizeof(r->head))
		return false;
	memcpy(r->head, c->buf, head_len);
	r->head[head_len] = '\0';
	if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
		return false;
	char v[32];
	size_t body_len = 0;
	if (!head_only && tc_header(r, "Content-Length", v, sizeof(v)))
		body_len = strtoul(v, NULL, 10);
	if (body_len > TC_BUF_MAX - head_len)
		return false; /* more than the buffer holds (or a length that wraps the sum) */
	while (c->len < head_len + body_len)
		if (fill(c) <= 0)
			return false;
	r->body = malloc(body_len + 1);
	if (r->body == NULL)
		return false;
	memcpy(r->body, c->buf + head_len, body_len);
	r->body[body_len] = '\0';
	r->body_len = body_len;
	consume(c, head_len + body_len);
	return true;
}

void tc_resp_clear(tc_resp *r)
{
	free(r->body);
	r->body = NULL;
}

long tc_wait_closed(tc_conn *c, int timeout_ms)
{
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		long waited = tc_ms_since(&start);
		if (waited > timeout_ms)
			return -1;
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int rc = poll(&p, 1, (int)(timeout_ms - waited) + 1);
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return -1;
		char tmp[4096];
		ssize_t n = recv(c->fd, tmp, sizeof(tmp), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return tc_ms_since(&start);
	}
}

bool tc_simple(uint16_t port, const char *request, int status, tc_resp *out)
{
	tc_conn *c = tc_connect(port, false, 5000);
	if (c == NULL)
		return false;
	tc_resp r = {0};
	bool ok = tc_send(c, request, strlen(request)) && tc_read(c, &r, false) && r.status == status;
	if (!ok && r.status != 0)
		fprintf(stderr, "tc_simple: got HTTP status %d, wanted %d\n", r.status, status);
	if (ok && out != NULL)
		*out = r;
	else
		tc_resp_clear(&r);
	tc_close(c);
	return ok;
}
