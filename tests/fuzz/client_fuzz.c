/*
 * client_fuzz.c - answers as hsmctl and the PKCS#11 module read them
 * (client/client.c): a status line and header fields, then a body framed by
 * a length, in chunks (the decoder hsmd reads requests with), or by the end
 * of the stream; interim 1xx answers before it.  An answer comes from a node,
 * from whatever stands between, or from the server of a public document.
 *
 * Input: the bytes the other end sends before it closes.
 *
 * Properties: an answer taken has a final status (200 to 599) and a body
 * within the client's bound; an answer refused leaves the caller's buffer as
 * it was, to the byte; and the same bytes give the same outcome twice.
 */
#include "fuzz.h"

#include <sys/socket.h>
#include <unistd.h>

#include "client/client_internal.h"

#define MARK "kept"

typedef struct outcome {
	hsm_err err;
	int status;
	bool close;
	size_t len;
	uint8_t *body;
} outcome;

static void read_once(const uint8_t *data, size_t size, outcome *o)
{
	int sv[2];
	FUZZ_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	/* A Unix stream socket holds far more than libFuzzer's inputs: no reader thread. */
	for (size_t done = 0; done < size;) {
		ssize_t w = write(sv[0], data + done, size - done);
		FUZZ_ASSERT(w > 0);
		done += (size_t)w;
	}
	close(sv[0]);
	hsm_buf b = {0};
	FUZZ_ASSERT(hsm_ok(hsm_buf_put(&b, MARK, sizeof(MARK) - 1)));
	hsm_result r = hsm_client_answer_from_fd(sv[1], &o->status, &o->close, &b);
	close(sv[1]);
	o->err = r.err;
	FUZZ_ASSERT(b.len >= sizeof(MARK) - 1 && memcmp(b.data, MARK, sizeof(MARK) - 1) == 0);
	if (hsm_ok(r)) {
		FUZZ_ASSERT(o->status >= 200 && o->status <= 599);
		FUZZ_ASSERT(b.len - (sizeof(MARK) - 1) <= HSM_CLIENT_BODY_MAX);
	} else {
		FUZZ_ASSERT(b.len == sizeof(MARK) - 1);
	}
	o->len = b.len;
	o->body = malloc(b.len);
	FUZZ_ASSERT(o->body != NULL);
	memcpy(o->body, b.data, b.len);
	hsm_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	outcome a, b;
	read_once(data, size, &a);
	read_once(data, size, &b);
	FUZZ_ASSERT(a.err == b.err && a.len == b.len && memcmp(a.body, b.body, a.len) == 0);
	if (a.err == HSM_OK)
		FUZZ_ASSERT(a.status == b.status && a.close == b.close);
	free(a.body);
	free(b.body);
	return 0;
}
