/*
 * blob.c - the symmetric ciphertext blob and the canonical encryption context
 * (layout and rules in blob.h).
 *
 * Every parse failure is HSM_ERR_INVALID_CIPHERTEXT with the same message as a
 * failed tag check, so a client learns nothing from which check failed.  The
 * lookups after a parse (kms/crypt.c: a key id no key has, a version above the
 * key's primary) answer in words of their own: they tell what the header,
 * which is not secret, says already.
 */
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "crypto/blob.h"
#include "crypto/crypto_internal.h"

#define KEY_ID_BYTES 16

static void uuid_format(const uint8_t u[KEY_ID_BYTES], char out[HSM_UUID_STRLEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < KEY_ID_BYTES; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[u[i] >> 4];
		out[o++] = hex[u[i] & 0x0f];
	}
	out[o] = '\0';
}

static hsm_result uuid_bytes(const char *id, uint8_t out[KEY_ID_BYTES])
{
	HSM_ENSURE(id != NULL && hsm_is_uuid(id), HSM_ERR_VALIDATION, "the key id is not a UUID");
	char digits[2 * KEY_ID_BYTES];
	size_t n = 0;
	for (size_t i = 0; id[i] != '\0'; i++)
		if (id[i] != '-')
			digits[n++] = id[i];
	return hsm_hex_decode_exact(out, KEY_ID_BYTES, digits, n, HSM_ERR_VALIDATION);
}

hsm_result hsm_blob_write_header(hsm_buf *out, const char *key_id, uint32_t key_version,
                                 const uint8_t iv[HSM_GCM_IV_LEN])
{
	uint8_t id[KEY_ID_BYTES];
	HSM_GUARD(uuid_bytes(key_id, id));
	size_t old = out->len;
	hsm_result res = hsm_buf_reserve(out, HSM_BLOB_HEADER_LEN);
	if (hsm_ok(res))
		res = hsm_buf_put_u8(out, HSM_BLOB_VERSION);
	if (hsm_ok(res))
		res = hsm_buf_put(out, id, sizeof(id));
	if (hsm_ok(res))
		res = hsm_buf_put_u32(out, key_version);
	if (hsm_ok(res))
		res = hsm_buf_put(out, iv, HSM_GCM_IV_LEN);
	if (hsm_failed(res))
		out->len = old;
	return res;
}

hsm_result hsm_blob_refuse_header_aad(const uint8_t *aad, size_t aad_len, const char *key_id,
                                      const uint8_t *iv)
{
	uint8_t id[KEY_ID_BYTES];
	HSM_GUARD(uuid_bytes(key_id, id));
	if (aad == NULL || aad_len < 1 + KEY_ID_BYTES || aad[0] != HSM_BLOB_VERSION)
		return HSM_SUCCESS;
	HSM_ENSURE(!hsm_ct_equal(aad + 1, id, KEY_ID_BYTES), HSM_ERR_VALIDATION,
	           "AdditionalData begins as the header of a KMS ciphertext of this key; plain "
	           "AES-GCM neither makes nor opens those (use Encrypt and Decrypt)");
	HSM_ENSURE(iv == NULL || aad_len < HSM_BLOB_HEADER_LEN ||
	               !hsm_ct_equal(aad + HSM_BLOB_HEADER_LEN - HSM_GCM_IV_LEN, iv, HSM_GCM_IV_LEN),
	           HSM_ERR_VALIDATION,
	           "AdditionalData begins as the header of a KMS ciphertext made with this Iv; plain "
	           "AES-GCM does not open those (use Decrypt)");
	return HSM_SUCCESS;
}

hsm_result hsm_blob_parse(const uint8_t *p, size_t n, hsm_blob *out)
{
	const hsm_err E = HSM_ERR_INVALID_CIPHERTEXT;
	hsm_blob b;
	hsm_cursor c;
	uint8_t version;
	const uint8_t *id;
	memset(&b, 0, sizeof(b));
	if (p == NULL || n < HSM_BLOB_OVERHEAD || n > HSM_MAX_CIPHERTEXT_BLOB)
		return HSM_FAIL(E, HSM_MSG_BAD_CIPHERTEXT);
	hsm_cursor_init(&c, p, n);
	b.header = p;
	if (hsm_failed(hsm_cursor_get_u8(&c, &version, E)) || version != HSM_BLOB_VERSION ||
	    hsm_failed(hsm_cursor_get_bytes(&c, KEY_ID_BYTES, &id, E)) ||
	    hsm_failed(hsm_cursor_get_u32(&c, &b.key_version, E)) ||
	    hsm_failed(hsm_cursor_get_bytes(&c, HSM_GCM_IV_LEN, &b.iv, E)))
		return HSM_FAIL(E, HSM_MSG_BAD_CIPHERTEXT);
	b.ct_len = hsm_cursor_remaining(&c) - HSM_GCM_TAG_LEN;
	if (hsm_failed(hsm_cursor_get_bytes(&c, b.ct_len, &b.ct, E)) ||
	    hsm_failed(hsm_cursor_get_bytes(&c, HSM_GCM_TAG_LEN, &b.tag, E)) ||
	    hsm_failed(hsm_cursor_expect_end(&c, E)))
		return HSM_FAIL(E, HSM_MSG_BAD_CIPHERTEXT);
	uuid_format(id, b.key_id);
	*out = b;
	return HSM_SUCCESS;
}

static int pair_cmp(const void *a, const void *b)
{
	const hsm_ctx_pair *x = *(const hsm_ctx_pair *const *)a;
	const hsm_ctx_pair *y = *(const hsm_ctx_pair *const *)b;
	return strcmp(x->key, y->key); /* C17 7.24.4: compares as unsigned char, i.e. bytewise */
}

static hsm_result put_sorted(const hsm_ctx_pair **sorted, size_t n, hsm_buf *out)
{
	HSM_GUARD(hsm_buf_put_u32(out, (uint32_t)n));
	for (size_t i = 0; i < n; i++) {
		HSM_ENSURE(i == 0 || strcmp(sorted[i - 1]->key, sorted[i]->key) != 0,
		           HSM_ERR_VALIDATION, "EncryptionContext has a duplicate key");
		HSM_GUARD(hsm_buf_put_lp(out, sorted[i]->key, strlen(sorted[i]->key)));
		HSM_GUARD(hsm_buf_put_lp(out, sorted[i]->value, strlen(sorted[i]->value)));
	}
	return HSM_SUCCESS;
}

hsm_result hsm_enc_ctx_canonical(const hsm_ctx_pair *pairs, size_t n, hsm_buf *out)
{
	HSM_ASSERT(pairs != NULL || n == 0);
	HSM_ENSURE(n <= UINT32_MAX / 2, HSM_ERR_VALIDATION, "EncryptionContext is too large");
	const hsm_ctx_pair **sorted = NULL;
	if (n > 0) {
		sorted = calloc(n, sizeof(*sorted));
		HSM_ENSURE(sorted != NULL, HSM_ERR_NOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			HSM_ASSERT(pairs[i].key != NULL && pairs[i].value != NULL);
			sorted[i] = &pairs[i];
		}
		qsort(sorted, n, sizeof(*sorted), pair_cmp);
	}
	size_t old = out->len;
	hsm_result res = put_sorted(sorted, n, out);
	if (hsm_failed(res))
		out->len = old;
	free(sorted);
	return res;
}
