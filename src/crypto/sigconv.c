/*
 * sigconv.c - ECDSA signature encodings.
 *
 * KMS returns ECDSA signatures as the DER encoding of
 *   Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }   (X9.62, RFC 3279 2.2.3)
 * while JOSE (RFC 7518 section 3.4) and PKCS#11 (CKM_ECDSA) use IEEE P1363,
 * the fixed-width concatenation r || s.  Parsing is strict DER (X.690
 * section 10): definite minimal lengths, minimal two's-complement integers,
 * positive values, nothing after the SEQUENCE.  BER leniency here is how
 * signature malleability creeps in.
 */
#include <string.h>

#include "crypto/crypto_internal.h"

#define TAG_SEQUENCE 0x30
#define TAG_INTEGER 0x02
#define FIELD_MAX 66 /* P-521 */

static hsm_result bad(void)
{
	return HSM_FAIL(HSM_ERR_INVALID_SIGNATURE, "the ECDSA signature is malformed");
}

size_t hsm_ec_field_len(hsm_key_spec spec)
{
	const hsm_spec_info *s = hsm_spec_get(spec);
	return s->type == HSM_KT_EC ? (s->bits + 7) / 8 : 0;
}

/* A DER definite length: short form, or long form 0x81 nn with nn >= 128 (minimal). */
static hsm_result get_length(hsm_cursor *c, size_t *len)
{
	uint8_t b, b2;
	HSM_GUARD(hsm_cursor_get_u8(c, &b, HSM_ERR_INVALID_SIGNATURE));
	if (b < 0x80) {
		*len = b;
		return HSM_SUCCESS;
	}
	/* Longer forms cannot occur: the largest signature (P-521) is under 256 bytes. */
	if (b != 0x81)
		return bad();
	HSM_GUARD(hsm_cursor_get_u8(c, &b2, HSM_ERR_INVALID_SIGNATURE));
	if (b2 < 0x80)
		return bad();
	*len = b2;
	return HSM_SUCCESS;
}

/* Reads one positive INTEGER into out[0..field_len), left-padded with zeros. */
static hsm_result get_integer(hsm_cursor *c, size_t field_len, uint8_t *out)
{
	uint8_t tag;
	size_t len;
	const uint8_t *v;
	HSM_GUARD(hsm_cursor_get_u8(c, &tag, HSM_ERR_INVALID_SIGNATURE));
	if (tag != TAG_INTEGER)
		return bad();
	HSM_GUARD(get_length(c, &len));
	if (len == 0)
		return bad();
	HSM_GUARD(hsm_cursor_get_bytes(c, len, &v, HSM_ERR_INVALID_SIGNATURE));
	if (v[0] & 0x80)
		return bad(); /* negative */
	if (v[0] == 0x00) {
		if (len == 1 || !(v[1] & 0x80))
			return bad(); /* zero, or a superfluous leading zero */
		v++;
		len--;
	}
	if (len > field_len)
		return bad();
	memset(out, 0, field_len - len);
	memcpy(out + field_len - len, v, len);
	return HSM_SUCCESS;
}

hsm_result hsm_ecdsa_der_to_p1363(const uint8_t *der, size_t der_len, size_t field_len,
                                  hsm_buf *out)
{
	HSM_ASSERT(field_len > 0 && field_len <= FIELD_MAX);
	uint8_t rs[2 * FIELD_MAX];
	uint8_t tag;
	size_t len;
	hsm_cursor c, body;
	hsm_cursor_init(&c, der, der_len);
	HSM_GUARD(hsm_cursor_get_u8(&c, &tag, HSM_ERR_INVALID_SIGNATURE));
	if (tag != TAG_SEQUENCE)
		return bad();
	HSM_GUARD(get_length(&c, &len));
	if (len != hsm_cursor_remaining(&c))
		return bad(); /* short, or trailing bytes */
	const uint8_t *content;
	HSM_GUARD(hsm_cursor_get_bytes(&c, len, &content, HSM_ERR_INVALID_SIGNATURE));
	hsm_cursor_init(&body, content, len);
	HSM_GUARD(get_integer(&body, field_len, rs));
	HSM_GUARD(get_integer(&body, field_len, rs + field_len));
	HSM_GUARD(hsm_cursor_expect_end(&body, HSM_ERR_INVALID_SIGNATURE));
	return hsm_buf_put(out, rs, 2 * field_len);
}

static hsm_result put_length(hsm_buf *b, size_t len)
{
	if (len >= 0x80)
		HSM_GUARD(hsm_buf_put_u8(b, 0x81));
	return hsm_buf_put_u8(b, (uint8_t)len);
}

/* Minimal DER INTEGER of the unsigned big-endian v[0..n); v must not be all zeros. */
static hsm_result put_integer(hsm_buf *b, const uint8_t *v, size_t n)
{
	while (n > 0 && v[0] == 0) {
		v++;
		n--;
	}
	if (n == 0)
		return bad();
	bool pad = (v[0] & 0x80) != 0;
	HSM_GUARD(hsm_buf_put_u8(b, TAG_INTEGER));
	HSM_GUARD(put_length(b, n + pad));
	if (pad)
		HSM_GUARD(hsm_buf_put_u8(b, 0x00));
	return hsm_buf_put(b, v, n);
}

hsm_result hsm_ecdsa_p1363_to_der(const uint8_t *sig, size_t sig_len, size_t field_len,
                                  hsm_buf *out)
{
	HSM_ASSERT(field_len > 0 && field_len <= FIELD_MAX);
	if (sig == NULL || sig_len != 2 * field_len)
		return bad();
	hsm_buf ints = {0};
	hsm_result res = put_integer(&ints, sig, field_len);
	if (hsm_ok(res))
		res = put_integer(&ints, sig + field_len, field_len);
	size_t old = out->len;
	if (hsm_ok(res))
		res = hsm_buf_put_u8(out, TAG_SEQUENCE);
	if (hsm_ok(res))
		res = put_length(out, ints.len);
	if (hsm_ok(res))
		res = hsm_buf_put(out, ints.data, ints.len);
	if (hsm_failed(res))
		out->len = old;
	hsm_buf_free(&ints);
	return res;
}
