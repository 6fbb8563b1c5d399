/*
 * blob_fuzz.c - the ciphertext blob parser and the canonical encryption
 * context (crypto/blob.h).
 *
 * Input: the whole input is parsed as a blob; the same bytes, split at NUL
 * into key, value, key, value..., are the encryption context.
 *
 * Properties:
 *   - a blob parses exactly when its length is in [overhead, max] and its
 *     version byte is right, and every other failure is
 *     InvalidCiphertextException;
 *   - the parsed fields point where blob.h's layout says, and rewriting the
 *     header from them gives back the same 33 bytes;
 *   - the canonical context is refused exactly when a key repeats (output
 *     then untouched), does not depend on the pairs' order, and decodes to
 *     the pairs sorted bytewise by key.
 */
#include "fuzz.h"

#include "crypto/blob.h"

#define MAX_PAIRS 64

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void check_blob(const uint8_t *data, size_t size)
{
	hsm_blob b;
	hsm_result r = hsm_blob_parse(data, size, &b);
	bool should = size >= HSM_BLOB_OVERHEAD && size <= HSM_MAX_CIPHERTEXT_BLOB &&
	              data[0] == HSM_BLOB_VERSION;
	if (hsm_failed(r)) {
		FUZZ_ASSERT(r.err == HSM_ERR_INVALID_CIPHERTEXT);
		FUZZ_ASSERT(!should);
		return;
	}
	FUZZ_ASSERT(should);
	FUZZ_ASSERT(b.header == data);
	FUZZ_ASSERT(b.iv == data + 21);
	FUZZ_ASSERT(b.ct == data + HSM_BLOB_HEADER_LEN);
	FUZZ_ASSERT(b.ct_len == size - HSM_BLOB_OVERHEAD);
	FUZZ_ASSERT(b.tag == data + size - HSM_GCM_TAG_LEN);
	FUZZ_ASSERT(b.key_version == be32(data + 17));
	FUZZ_ASSERT(hsm_is_uuid(b.key_id));
	hsm_buf h = {0};
	FUZZ_ASSERT(hsm_ok(hsm_blob_write_header(&h, b.key_id, b.key_version, b.iv)));
	FUZZ_ASSERT(h.len == HSM_BLOB_HEADER_LEN);
	FUZZ_ASSERT(memcmp(h.data, data, HSM_BLOB_HEADER_LEN) == 0);
	hsm_buf_free(&h);
}

/* Decodes a canonical context and checks order and contents against the pairs. */
static void check_canonical(const hsm_buf *out, size_t start, const hsm_ctx_pair *pairs, size_t n)
{
	hsm_cursor c;
	uint32_t count;
	hsm_cursor_init(&c, out->data + start, out->len - start);
	FUZZ_ASSERT(hsm_ok(hsm_cursor_get_u32(&c, &count, HSM_ERR_VALIDATION)));
	FUZZ_ASSERT(count == n);
	const uint8_t *prev = NULL;
	size_t prev_len = 0;
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *k, *v;
		size_t kl, vl;
		FUZZ_ASSERT(hsm_ok(hsm_cursor_get_lp(&c, HSM_BUF_MAX, &k, &kl, HSM_ERR_VALIDATION)));
		FUZZ_ASSERT(hsm_ok(hsm_cursor_get_lp(&c, HSM_BUF_MAX, &v, &vl, HSM_ERR_VALIDATION)));
		if (prev != NULL) {
			size_t m = prev_len < kl ? prev_len : kl;
			int cmp = memcmp(prev, k, m);
			FUZZ_ASSERT(cmp < 0 || (cmp == 0 && prev_len < kl));
		}
		prev = k;
		prev_len = kl;
		bool found = false;
		for (size_t j = 0; j < n && !found; j++)
			found = strlen(pairs[j].key) == kl && memcmp(pairs[j].key, k, kl) == 0 &&
			        strlen(pairs[j].value) == vl && memcmp(pairs[j].value, v, vl) == 0;
		FUZZ_ASSERT(found);
	}
	FUZZ_ASSERT(hsm_ok(hsm_cursor_expect_end(&c, HSM_ERR_VALIDATION)));
}

static void check_context(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (text == NULL)
		return;
	if (size > 0)
		memcpy(text, data, size);
	text[size] = '\0';
	hsm_ctx_pair pairs[MAX_PAIRS], reversed[MAX_PAIRS];
	size_t n = 0, at = 0;
	while (at < size && n < MAX_PAIRS) {
		pairs[n].key = text + at;
		at += strlen(text + at) + 1;
		pairs[n].value = at < size ? text + at : "";
		at += at < size ? strlen(text + at) + 1 : 0;
		n++;
	}
	bool dup = false;
	for (size_t i = 0; i < n; i++) {
		reversed[n - 1 - i] = pairs[i];
		for (size_t j = 0; j < i; j++)
			dup = dup || strcmp(pairs[i].key, pairs[j].key) == 0;
	}
	hsm_buf a = {0}, b = {0};
	FUZZ_ASSERT(hsm_ok(hsm_buf_put_str(&a, "prefix")));
	hsm_result r = hsm_enc_ctx_canonical(pairs, n, &a);
	if (dup) {
		FUZZ_ASSERT(r.err == HSM_ERR_VALIDATION);
		FUZZ_ASSERT(a.len == 6);
	} else {
		FUZZ_ASSERT(hsm_ok(r));
		check_canonical(&a, 6, pairs, n);
		FUZZ_ASSERT(hsm_ok(hsm_enc_ctx_canonical(reversed, n, &b)));
		FUZZ_ASSERT(b.len == a.len - 6 && memcmp(a.data + 6, b.data, b.len) == 0);
	}
	hsm_buf_free(&a);
	hsm_buf_free(&b);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_blob(data, size);
	check_context(data, size);
	return 0;
}
