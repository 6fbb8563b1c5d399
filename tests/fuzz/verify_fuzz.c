/*
 * verify_fuzz.c - signature verification with a public key from outside
 * (hsm_verify_pub in crypto/crypto.h): garbage SubjectPublicKeyInfo,
 * garbage and nearly-right signatures.
 *
 * Input:
 *   byte 0     key: one of the fixture keys below, or (the last choice) an
 *              SPKI taken from the input
 *   byte 1     SigningAlgorithmSpec (index)
 *   byte 2     MessageType: even RAW, odd DIGEST
 *   [2 bytes big-endian length, SPKI]      only for an input SPKI
 *   2 bytes big-endian length, signature   for a fixture key, XORed onto
 *                                          the fixture's valid signature
 *   the rest   the message
 *
 * Properties: every failure is ValidationException (unusable SPKI, wrong
 * digest length), InvalidKeyUsageException (key and algorithm disagree) or
 * KMSInvalidSignatureException; with a fixture key, verification succeeds
 * exactly for its own valid signature over its message.
 */
#include "fuzz.h"

#include "crypto/crypto.h"

typedef struct fixture {
	hsm_key_spec spec;
	hsm_sign_alg alg;
	hsm_buf spki;
	hsm_buf sig;
} fixture;

static const char fixed_msg[] = "hsmd fuzz message";

static fixture fixtures[] = {
    {HSM_SPEC_ECC_NIST_P256, HSM_SIGN_ECDSA_SHA_256, {0}, {0}},
    {HSM_SPEC_ECC_NIST_P384, HSM_SIGN_ECDSA_SHA_384, {0}, {0}},
    {HSM_SPEC_ECC_NIST_P521, HSM_SIGN_ECDSA_SHA_512, {0}, {0}},
    {HSM_SPEC_ECC_SECG_P256K1, HSM_SIGN_ECDSA_SHA_256, {0}, {0}},
    {HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_SIGN_ED25519_SHA_512, {0}, {0}},
    {HSM_SPEC_RSA_2048, HSM_SIGN_RSASSA_PSS_SHA_256, {0}, {0}},
    {HSM_SPEC_RSA_2048, HSM_SIGN_RSASSA_PKCS1_V1_5_SHA_384, {0}, {0}},
};
#define N_FIXTURES (sizeof(fixtures) / sizeof(fixtures[0]))

static void init_once(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	FUZZ_ASSERT(hsm_ok(hsm_crypto_init()));
	hsm_material *rsa = NULL;
	for (size_t i = 0; i < N_FIXTURES; i++) {
		fixture *f = &fixtures[i];
		hsm_material *m = NULL;
		if (f->spec == HSM_SPEC_RSA_2048 && rsa != NULL)
			m = hsm_material_ref(rsa);
		else
			FUZZ_ASSERT(hsm_ok(hsm_material_generate(f->spec, &m)));
		if (f->spec == HSM_SPEC_RSA_2048 && rsa == NULL)
			rsa = hsm_material_ref(m);
		FUZZ_ASSERT(hsm_ok(hsm_material_public_der(m, &f->spki)));
		FUZZ_ASSERT(hsm_ok(hsm_sign(m, f->alg, HSM_MSG_RAW, (const uint8_t *)fixed_msg,
		                            strlen(fixed_msg), &f->sig)));
		hsm_material_free(m);
	}
	hsm_material_free(rsa);
}

static fuzz_in take_lp(fuzz_in *in)
{
	size_t len = (size_t)fuzz_u8(in) << 8;
	len |= fuzz_u8(in);
	if (len > in->n)
		len = in->n;
	fuzz_in f = {in->p, len};
	in->p += len;
	in->n -= len;
	return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	fuzz_in in = {data, size};
	size_t which = fuzz_u8(&in) % (N_FIXTURES + 1);
	hsm_sign_alg alg = (hsm_sign_alg)(fuzz_u8(&in) % HSM_SIGN_COUNT);
	hsm_message_type type = fuzz_u8(&in) & 1 ? HSM_MSG_DIGEST : HSM_MSG_RAW;
	const fixture *f = which < N_FIXTURES ? &fixtures[which] : NULL;
	fuzz_in spki = f != NULL ? (fuzz_in){f->spki.data, f->spki.len} : take_lp(&in);
	fuzz_in mask = take_lp(&in);
	fuzz_in msg = in;
	uint8_t *sig = NULL;
	size_t sig_len = mask.n;
	bool unchanged = true;
	if (f != NULL) {
		/* An empty mask leaves the valid signature as it is. */
		sig_len = mask.n == 0 ? f->sig.len : mask.n;
		sig = calloc(1, sig_len);
		FUZZ_ASSERT(sig != NULL);
		memcpy(sig, f->sig.data, sig_len < f->sig.len ? sig_len : f->sig.len);
		for (size_t i = 0; i < mask.n; i++) {
			sig[i] ^= mask.p[i];
			unchanged = unchanged && mask.p[i] == 0;
		}
		unchanged = unchanged && sig_len == f->sig.len;
	} else {
		sig = malloc(sig_len > 0 ? sig_len : 1);
		FUZZ_ASSERT(sig != NULL);
		if (sig_len > 0)
			memcpy(sig, mask.p, sig_len);
	}
	hsm_result r = hsm_verify_pub(spki.p, spki.n, alg, type, msg.p, msg.n, sig, sig_len);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, HSM_ERR_VALIDATION, HSM_ERR_INVALID_KEY_USAGE,
		                HSM_ERR_INVALID_SIGNATURE);
	if (f != NULL) {
		bool same_msg = msg.n == strlen(fixed_msg) && memcmp(msg.p, fixed_msg, msg.n) == 0;
		bool expected = unchanged && alg == f->alg && type == HSM_MSG_RAW && same_msg;
		/* A DIGEST message equal to the fixture's digest also verifies. */
		if (hsm_ok(r))
			FUZZ_ASSERT(expected || (unchanged && alg == f->alg && type == HSM_MSG_DIGEST));
		if (expected)
			FUZZ_ASSERT(hsm_ok(r));
	}
	free(sig);
	return 0;
}
