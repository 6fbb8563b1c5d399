/*
 * ecdh_fuzz.c - key agreement with a peer public key from outside
 * (hsm_ecdh_derive in crypto/crypto.h, what DeriveSharedSecret runs):
 * garbage, truncated and nearly-right SubjectPublicKeyInfo, points off the
 * curve, at infinity, on other curves.
 *
 * Input:
 *   byte 0     the fixture key: a P-256, P-384 or P-521 key generated at start
 *   the rest   the peer's SubjectPublicKeyInfo
 *
 * Properties: every failure is ValidationException and appends nothing;
 * a success gives exactly the field length of bytes, and OpenSSL's own
 * path (d2i_PUBKEY, then EVP_PKEY_derive with its full peer validation)
 * accepts the same key and agrees on every byte.
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "fuzz.h"

#include "common/util.h"
#include "crypto/crypto.h"

static const hsm_key_spec specs[] = {HSM_SPEC_ECC_NIST_P256, HSM_SPEC_ECC_NIST_P384,
                                     HSM_SPEC_ECC_NIST_P521};
#define N_FIXTURES (sizeof(specs) / sizeof(specs[0]))

static struct {
	hsm_material *m;
	EVP_PKEY *pkey; /* the same key for the reference (from its PKCS#8) */
} fx[N_FIXTURES];

static void init_once(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	FUZZ_ASSERT(hsm_ok(hsm_crypto_init()));
	for (size_t i = 0; i < N_FIXTURES; i++) {
		hsm_buf der;
		hsm_buf_init_secure(&der);
		FUZZ_ASSERT(hsm_ok(hsm_material_generate(specs[i], &fx[i].m)));
		FUZZ_ASSERT(hsm_ok(hsm_material_export(fx[i].m, &der)));
		const unsigned char *p = der.data;
		fx[i].pkey = d2i_AutoPrivateKey(NULL, &p, (long)der.len);
		FUZZ_ASSERT(fx[i].pkey != NULL);
		hsm_buf_free(&der);
	}
}

/* OpenSSL's answer for the same inputs: the secret into out, or false. */
static bool reference(EVP_PKEY *priv, const uint8_t *spki, size_t len, hsm_buf *out)
{
	const unsigned char *p = spki;
	EVP_PKEY *peer = d2i_PUBKEY(NULL, &p, (long)len);
	EVP_PKEY_CTX *ctx = peer != NULL ? EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL) : NULL;
	size_t n = 0;
	uint8_t *dst;
	bool ok = ctx != NULL && p == spki + len && EVP_PKEY_derive_init(ctx) == 1 &&
	          EVP_PKEY_derive_set_peer(ctx, peer) == 1 && EVP_PKEY_derive(ctx, NULL, &n) == 1 &&
	          hsm_ok(hsm_buf_append_space(out, n, &dst)) &&
	          EVP_PKEY_derive(ctx, dst, &n) == 1;
	if (ok)
		out->len = n;
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	ERR_clear_error();
	return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	fuzz_in in = {data, size};
	size_t which = fuzz_u8(&in) % N_FIXTURES;
	hsm_buf z, want;
	hsm_buf_init_secure(&z);
	hsm_buf_init_secure(&want);
	hsm_result r = hsm_ecdh_derive(fx[which].m, in.p, in.n, &z);
	if (hsm_failed(r)) {
		FUZZ_EXPECT_ERR(r, HSM_ERR_VALIDATION);
		FUZZ_ASSERT(z.len == 0);
	} else {
		FUZZ_ASSERT(z.len == hsm_ec_field_len(specs[which]));
		FUZZ_ASSERT(reference(fx[which].pkey, in.p, in.n, &want));
		FUZZ_ASSERT(want.len == z.len && hsm_ct_equal(want.data, z.data, z.len));
	}
	hsm_buf_free(&z);
	hsm_buf_free(&want);
	return 0;
}
