/*
 * material_fuzz.c - importing key material from outside
 * (hsm_material_import in crypto/crypto.h): PKCS#8 PrivateKeyInfo DER for
 * asymmetric specs, raw bytes for AES and HMAC.
 *
 * Input: one byte choosing the key spec, then the material.
 *
 * Properties: a refusal is ValidationException; an accepted key has the
 * spec asked for, passes the pairwise test for a usage its spec allows,
 * exports to bytes that import again as the same spec (raw keys export to
 * exactly the input), and an asymmetric key's public half maps back to its
 * spec.  Leaks show up under LeakSanitizer.
 */
#include "fuzz.h"

#include "crypto/crypto.h"

static void check_accepted(hsm_key_spec spec, const hsm_material *m, const uint8_t *p, size_t n)
{
	const hsm_spec_info *s = hsm_spec_get(spec);
	FUZZ_ASSERT(hsm_material_spec(m) == spec);
	for (unsigned u = 0; u < HSM_USAGE_COUNT; u++) {
		if (hsm_spec_allows_usage(spec, (hsm_key_usage)u)) {
			FUZZ_ASSERT(hsm_ok(hsm_material_pairwise_test(m, (hsm_key_usage)u)));
			break;
		}
	}
	hsm_buf out;
	hsm_buf_init_secure(&out);
	FUZZ_ASSERT(hsm_ok(hsm_material_export(m, &out)));
	if (s->type == HSM_KT_AES || s->type == HSM_KT_HMAC) {
		FUZZ_ASSERT(out.len == n && memcmp(out.data, p, n) == 0);
	} else {
		hsm_material *again = NULL;
		FUZZ_ASSERT(hsm_ok(hsm_material_import(spec, out.data, out.len, &again)));
		FUZZ_ASSERT(hsm_material_spec(again) == spec);
		hsm_material_free(again);
		hsm_buf pub = {0};
		hsm_key_spec pub_spec;
		FUZZ_ASSERT(hsm_ok(hsm_material_public_der(m, &pub)));
		FUZZ_ASSERT(hsm_ok(hsm_spki_spec(pub.data, pub.len, &pub_spec)));
		FUZZ_ASSERT(pub_spec == spec);
		hsm_buf_free(&pub);
	}
	hsm_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	if (!ready) {
		FUZZ_ASSERT(hsm_ok(hsm_crypto_init()));
		ready = true;
	}
	fuzz_in in = {data, size};
	hsm_key_spec spec = (hsm_key_spec)(fuzz_u8(&in) % HSM_SPEC_COUNT);
	hsm_material *m = NULL;
	hsm_result r = hsm_material_import(spec, in.p, in.n, &m);
	if (hsm_failed(r)) {
		FUZZ_ASSERT(r.err == HSM_ERR_VALIDATION);
		FUZZ_ASSERT(m == NULL);
		return 0;
	}
	check_accepted(spec, m, in.p, in.n);
	hsm_material_free(m);
	return 0;
}
