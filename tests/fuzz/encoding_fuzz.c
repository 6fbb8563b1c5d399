/*
 * encoding_fuzz.c - hex, base64 and base64url decoders (common/encoding.h).
 *
 * Input: one byte choosing the codec (hex, base64, base64url, fixed-size
 * hex), then the text.
 *
 * Properties: the decoders are strict, so every accepted text is the
 * canonical encoding of what it decodes to (decode then encode gives the
 * input back); a refusal carries the caller's error code and appends
 * nothing; and the other way round, encoding the input bytes and decoding
 * the result gives them back.
 */
#include "fuzz.h"

#include "common/encoding.h"

enum { HEX, B64, B64URL, HEX_EXACT, CODECS };

static const hsm_err E = HSM_ERR_INVALID_MARKER; /* any code the decoders never pick themselves */

static hsm_result decode(int codec, hsm_buf *out, const char *s, size_t n)
{
	switch (codec) {
	case HEX: return hsm_hex_decode(out, s, n, E);
	case B64: return hsm_b64_decode(out, s, n, E);
	default: return hsm_b64url_decode(out, s, n, E);
	}
}

static hsm_result encode(int codec, hsm_buf *out, const uint8_t *p, size_t n)
{
	switch (codec) {
	case HEX: return hsm_hex_encode(out, p, n);
	case B64: return hsm_b64_encode(out, p, n);
	default: return hsm_b64url_encode(out, p, n);
	}
}

static void check_exact(const char *s, size_t n)
{
	uint8_t out[64];
	size_t want = n / 2 < sizeof(out) ? n / 2 : sizeof(out);
	hsm_result r = hsm_hex_decode_exact(out, want, s, n, E);
	if (hsm_failed(r)) {
		FUZZ_ASSERT(r.err == E);
		return;
	}
	hsm_buf enc = {0};
	FUZZ_ASSERT(n == 2 * want);
	FUZZ_ASSERT(hsm_ok(hsm_hex_encode(&enc, out, want)));
	FUZZ_ASSERT(enc.len == n && memcmp(enc.data, s, n) == 0);
	hsm_buf_free(&enc);
}

static void check_decode(int codec, const char *s, size_t n)
{
	hsm_buf dec = {0}, enc = {0};
	FUZZ_ASSERT(hsm_ok(hsm_buf_put_str(&dec, "x")));
	hsm_result r = decode(codec, &dec, s, n);
	if (hsm_failed(r)) {
		FUZZ_ASSERT(r.err == E);
		FUZZ_ASSERT(dec.len == 1);
	} else {
		FUZZ_ASSERT(hsm_ok(encode(codec, &enc, dec.data + 1, dec.len - 1)));
		FUZZ_ASSERT(enc.len == n && (n == 0 || memcmp(enc.data, s, n) == 0));
	}
	hsm_buf_free(&dec);
	hsm_buf_free(&enc);
}

static void check_encode(int codec, const uint8_t *p, size_t n)
{
	hsm_buf enc = {0}, dec = {0};
	FUZZ_ASSERT(hsm_ok(encode(codec, &enc, p, n)));
	if (codec == B64)
		FUZZ_ASSERT(enc.len == hsm_b64_encoded_len(n));
	FUZZ_ASSERT(hsm_ok(decode(codec, &dec, (const char *)enc.data, enc.len)));
	FUZZ_ASSERT(dec.len == n && (n == 0 || memcmp(dec.data, p, n) == 0));
	hsm_buf_free(&enc);
	hsm_buf_free(&dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	int codec = fuzz_u8(&in) % CODECS;
	const char *s = (const char *)in.p;
	if (codec == HEX_EXACT) {
		check_exact(s, in.n);
		return 0;
	}
	check_decode(codec, s, in.n);
	check_encode(codec, in.p, in.n);
	return 0;
}
