/*
 * lg_conn.c - see lg_conn.h.
 */
#include "lg_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define READ_CHUNK 16384
#define MAX_RESPONSE ((size_t)8 << 20)

hsm_result lg_conn_open(lg_conn *c, const lg_target *t)
{
	hsm_result res = HSM_SUCCESS;
	int one = 1;
	c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	c->ssl = NULL;
	c->st = LG_DEAD;
	HSM_CHECK(c->fd >= 0, HSM_ERR_IO, "socket: %s", strerror(errno));
	HSM_CHECK(connect(c->fd, (const struct sockaddr *)&t->addr, t->addr_len) == 0, HSM_ERR_IO,
	          "connect: %s", strerror(errno));
	(void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (t->tls != NULL) {
		c->ssl = SSL_new(t->tls);
		HSM_CHECK(c->ssl != NULL && SSL_set_fd(c->ssl, c->fd) == 1, HSM_ERR_NOMEM, "SSL_new");
		SSL_set_tlsext_host_name(c->ssl, "localhost");
		SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		HSM_CHECK(SSL_connect(c->ssl) == 1, HSM_ERR_IO, "TLS handshake failed");
	}
	int fl = fcntl(c->fd, F_GETFL);
	HSM_CHECK(fl >= 0 && fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) == 0, HSM_ERR_IO, "fcntl");
	c->st = LG_IDLE;
out:
	if (hsm_failed(res))
		lg_conn_close(c);
	return res;
}

void lg_conn_close(lg_conn *c)
{
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	c->ssl = NULL;
	c->fd = -1;
	c->st = LG_DEAD;
	hsm_buf_free(&c->out);
	hsm_buf_free(&c->in);
}

/* Bytes written (> 0), 0 for "try again later", -1 on error. */
static ssize_t io_write(lg_conn *c, const uint8_t *p, size_t n)
{
	if (c->ssl == NULL) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		return w;
	}
	int w = SSL_write(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
	if (w > 0)
		return w;
	int e = SSL_get_error(c->ssl, w);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Bytes read (> 0), 0 for "try again later", -1 on error or end of stream. */
static ssize_t io_read(lg_conn *c, uint8_t *p, size_t n)
{
	if (c->ssl == NULL) {
		ssize_t r = recv(c->fd, p, n, 0);
		if (r < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		return r == 0 ? -1 : r;
	}
	int r = SSL_read(c->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
	if (r > 0)
		return r;
	int e = SSL_get_error(c->ssl, r);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Case-insensitive search for a header line "name:" inside the header block. */
static const char *header_value(const char *hdr, size_t len, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = hdr; p != NULL && p < hdr + len;) {
		const char *eol = memchr(p, '\n', (size_t)(hdr + len - p));
		if ((size_t)(hdr + len - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			return v;
		}
		p = eol != NULL ? eol + 1 : NULL;
	}
	return NULL;
}

/* Parses the status line and the headers once the header block is complete. */
static lg_io parse_head(lg_conn *c)
{
	const char *d = (const char *)c->in.data;
	const char *end = memmem(d, c->in.len, "\r\n\r\n", 4);
	if (end == NULL)
		return c->in.len > 65536 ? LG_IO_ERROR : LG_IO_AGAIN;
	c->hdr_len = (size_t)(end - d) + 4;
	if (c->hdr_len < 13 || strncmp(d, "HTTP/1.", 7) != 0)
		return LG_IO_ERROR;
	c->status = (d[9] - '0') * 100 + (d[10] - '0') * 10 + (d[11] - '0');
	const char *cl = header_value(d, c->hdr_len, "Content-Length");
	if (cl == NULL)
		return LG_IO_ERROR; /* hsmd always sends one */
	size_t n = 0;
	for (; *cl >= '0' && *cl <= '9' && n < MAX_RESPONSE; cl++)
		n = n * 10 + (size_t)(*cl - '0');
	if (n >= MAX_RESPONSE)
		return LG_IO_ERROR;
	c->body_len = n;
	const char *conn = header_value(d, c->hdr_len, "Connection");
	c->server_closes = conn != NULL && strncasecmp(conn, "close", 5) == 0;
	return LG_IO_AGAIN;
}

static lg_io pump_read(lg_conn *c)
{
	for (;;) {
		uint8_t *space = NULL;
		if (hsm_failed(hsm_buf_append_space(&c->in, READ_CHUNK, &space)))
			return LG_IO_ERROR;
		ssize_t r = io_read(c, space, READ_CHUNK);
		c->in.len -= READ_CHUNK - (size_t)(r > 0 ? r : 0);
		if (r < 0)
			return LG_IO_ERROR;
		if (c->hdr_len == 0 && parse_head(c) == LG_IO_ERROR)
			return LG_IO_ERROR;
		if (c->hdr_len != 0 && c->in.len >= c->hdr_len + c->body_len) {
			if (c->in.len > c->hdr_len + c->body_len)
				return LG_IO_ERROR; /* bytes nobody asked for */
			c->st = LG_IDLE;
			return LG_IO_DONE;
		}
		if (r == 0)
			return LG_IO_AGAIN;
	}
}

/* Sends what is left of the request: LG_IO_DONE once all of it is out. */
static lg_io pump_write(lg_conn *c)
{
	while (c->out_off < c->out.len) {
		ssize_t w = io_write(c, c->out.data + c->out_off, c->out.len - c->out_off);
		if (w < 0)
			return LG_IO_ERROR;
		if (w == 0)
			return LG_IO_AGAIN;
		c->out_off += (size_t)w;
	}
	return LG_IO_DONE;
}

lg_io lg_conn_pump(lg_conn *c)
{
	if (c->st != LG_BUSY)
		return LG_IO_AGAIN;
	lg_io r = pump_write(c);
	return r == LG_IO_DONE ? pump_read(c) : r;
}

lg_io lg_conn_start(lg_conn *c)
{
	c->out_off = 0;
	c->in.len = 0;
	c->hdr_len = 0;
	c->body_len = 0;
	c->status = 0;
	c->server_closes = false;
	c->st = LG_BUSY;
	/* No answer can be there before the request has left, so no read is
	 * tried now (it would only find nothing): the socket's next readable
	 * edge brings the connection back through lg_conn_pump. */
	lg_io r = pump_write(c);
	return r == LG_IO_DONE ? LG_IO_AGAIN : r;
}

const char *lg_conn_body(const lg_conn *c, size_t *len)
{
	*len = c->hdr_len != 0 ? c->in.len - c->hdr_len : 0;
	return (const char *)c->in.data + c->hdr_len;
}
