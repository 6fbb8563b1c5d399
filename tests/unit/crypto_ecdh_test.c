/*
 * crypto_ecdh_test.c - ECDH as DeriveSharedSecret computes it (ecdh.c):
 * RFC 5903 known answers on P-256, P-384 and P-521 from both sides, the
 * x-coordinate kept at field length, compressed and uncompressed peers, and
 * every kind of peer key that must be refused with nothing released.
 *
 * The RFC's keys are turned into PKCS#8 and SubjectPublicKeyInfo here with
 * OpenSSL from the raw numbers, independently of the encodings the
 * power-on self-test stores.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/encoder.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "crypto/crypto.h"
#include "support/crypto_fixture.h"

/* RFC 5903 sections 8.1-8.3: private keys i and r, public keys g^i and g^r, secret g^ir. */
typedef struct rfc5903 {
	hsm_key_spec spec;
	const char *group;
	const char *i, *gix, *giy;
	const char *r, *grx, *gry;
	const char *girx;
} rfc5903;

static const rfc5903 vectors[] = {
    {HSM_SPEC_ECC_NIST_P256, "P-256",
     "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
     "dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180",
     "5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3",
     "c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
     "d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63",
     "56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
     "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de"},
    {HSM_SPEC_ECC_NIST_P384, "P-384",
     "099f3c7034d4a2c699884d73a375a67f7624ef7c6b3c0f160647b67414dce655e35b538041e649ee3faef896"
     "783ab194",
     "667842d7d180ac2cde6f74f37551f55755c7645c20ef73e31634fe72b4c55ee6de3ac808acb4bdb4c88732ae"
     "e95f41aa",
     "9482ed1fc0eeb9cafc4984625ccfc23f65032149e0e144ada024181535a0f38eeb9fcff3c2c947dae69b4c63"
     "4573a81c",
     "41cb0779b4bdb85d47846725fbec3c9430fab46cc8dc5060855cc9bda0aa2942e0308312916b8ed2960e4bd5"
     "5a7448fc",
     "e558dbef53eecde3d3fccfc1aea08a89a987475d12fd950d83cfa41732bc509d0d1ac43a0336def96fda41d0"
     "774a3571",
     "dcfbec7aacf3196472169e838430367f66eebe3c6e70c416dd5f0c68759dd1fff83fa40142209dff5eaad96d"
     "b9e6386c",
     "11187331c279962d93d604243fd592cb9d0a926f422e47187521287e7156c5c4d603135569b9e9d09cf5d4a2"
     "70f59746"},
    {HSM_SPEC_ECC_NIST_P521, "P-521",
     "0037ade9319a89f4dabdb3ef411aaccca5123c61acab57b5393dce47608172a095aa85a30fe1c2952c6771d9"
     "37ba9777f5957b2639bab072462f68c27a57382d4a52",
     "0015417e84dbf28c0ad3c278713349dc7df153c897a1891bd98bab4357c9ecbee1e3bf42e00b8e380aeae57c"
     "2d107564941885942af5a7f4601723c4195d176ced3e",
     "017cae20b6641d2eeb695786d8c946146239d099e18e1d5a514c739d7cb4a10ad8a788015ac405d7799dc75e"
     "7b7d5b6cf2261a6a7f1507438bf01beb6ca3926f9582",
     "0145ba99a847af43793fdd0e872e7cdfa16be30fdc780f97bccc3f078380201e9c677d600b343757a3bdbf2a"
     "3163e4c2f869cca7458aa4a4effc311f5cb151685eb9",
     "00d0b3975ac4b799f5bea16d5e13e9af971d5e9b984c9f39728b5e5739735a219b97c356436adc6e95bb0352"
     "f6be64a6c2912d4ef2d0433ced2b6171640012d9460f",
     "015c68226383956e3bd066e797b623c27ce0eac2f551a10c2c724d9852077b87220b6536c5c408a1d2aebb8e"
     "86d678ae49cb57091f4732296579ab44fcd17f0fc56a",
     "01144c7d79ae6956bc8edb8e7c787c4521cb086fa64407f97894e5e6b2d79b04d1427e73ca4baa240a347868"
     "59810c06b3c715a3a8cc3151f2bee417996d19f3ddea"},
};

/* An EC key from raw numbers: the public point x, y and, when d is not NULL, the scalar. */
static EVP_PKEY *ec_key(const char *group, const char *d, const char *x, const char *y)
{
	hsm_buf point = {0}, tmp = {0};
	assert_true(hsm_ok(hsm_buf_put_u8(&point, 0x04)));
	fixture_unhex(x, &tmp);
	assert_true(hsm_ok(hsm_buf_put(&point, tmp.data, tmp.len)));
	fixture_unhex(y, &tmp);
	assert_true(hsm_ok(hsm_buf_put(&point, tmp.data, tmp.len)));
	BIGNUM *priv = NULL;
	if (d != NULL)
		assert_true(BN_hex2bn(&priv, d) > 0);
	OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
	assert_non_null(b);
	assert_int_equal(OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, group, 0), 1);
	assert_int_equal(OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, point.data,
	                                                  point.len),
	                 1);
	if (priv != NULL)
		assert_int_equal(OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, priv), 1);
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *pk = NULL;
	assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
	assert_int_equal(EVP_PKEY_fromdata(ctx, &pk, d != NULL ? EVP_PKEY_KEYPAIR
	                                                       : EVP_PKEY_PUBLIC_KEY, params),
	                 1);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	BN_clear_free(priv);
	hsm_buf_free(&point);
	hsm_buf_free(&tmp);
	return pk;
}

static void spki_of(EVP_PKEY *pk, hsm_buf *out)
{
	unsigned char *der = NULL;
	int len = i2d_PUBKEY(pk, &der);
	assert_true(len > 0);
	assert_true(hsm_ok(hsm_buf_set(out, der, (size_t)len)));
	OPENSSL_free(der);
}

static void spki_of_point(const char *group, const char *x, const char *y, hsm_buf *out)
{
	EVP_PKEY *pk = ec_key(group, NULL, x, y);
	spki_of(pk, out);
	EVP_PKEY_free(pk);
}

/* A material from the raw private key (PKCS#8 made here, imported as the keystore does). */
static hsm_material *material_of(hsm_key_spec spec, const char *group, const char *d,
                                 const char *x, const char *y)
{
	EVP_PKEY *pk = ec_key(group, d, x, y);
	unsigned char *der = NULL;
	size_t len = 0;
	OSSL_ENCODER_CTX *e =
	    OSSL_ENCODER_CTX_new_for_pkey(pk, EVP_PKEY_KEYPAIR, "DER", "PrivateKeyInfo", NULL);
	assert_non_null(e);
	assert_int_equal(OSSL_ENCODER_to_data(e, &der, &len), 1);
	hsm_material *m = NULL;
	assert_succeeds(hsm_material_import(spec, der, len, &m));
	OPENSSL_clear_free(der, len);
	OSSL_ENCODER_CTX_free(e);
	EVP_PKEY_free(pk);
	return m;
}

static void expect_secret(const hsm_material *m, const hsm_buf *peer, const char *z_hex)
{
	hsm_buf z, want = {0};
	hsm_buf_init_secure(&z);
	fixture_unhex(z_hex, &want);
	assert_succeeds(hsm_ecdh_derive(m, peer->data, peer->len, &z));
	assert_int_equal(z.len, hsm_ec_field_len(hsm_material_spec(m)));
	assert_int_equal(z.len, want.len);
	assert_memory_equal(z.data, want.data, z.len);
	assert_succeeds(hsm_ecdh_check_peer(hsm_material_spec(m), peer->data, peer->len));
	hsm_buf_free(&z);
	hsm_buf_free(&want);
}

static void test_rfc5903_both_sides(void **state)
{
	(void)state;
	for (size_t n = 0; n < sizeof(vectors) / sizeof(vectors[0]); n++) {
		const rfc5903 *v = &vectors[n];
		hsm_material *mi = material_of(v->spec, v->group, v->i, v->gix, v->giy);
		hsm_material *mr = material_of(v->spec, v->group, v->r, v->grx, v->gry);
		hsm_buf gi = {0}, gr = {0};
		spki_of_point(v->group, v->gix, v->giy, &gi);
		spki_of_point(v->group, v->grx, v->gry, &gr);
		expect_secret(mi, &gr, v->girx); /* the initiator */
		expect_secret(mr, &gi, v->girx); /* the responder */
		hsm_material_free(mi);
		hsm_material_free(mr);
		hsm_buf_free(&gi);
		hsm_buf_free(&gr);
	}
}

/* Z is field-length bytes: a secret whose x-coordinate starts with a zero byte keeps it. */
static void test_leading_zero_is_kept(void **state)
{
	(void)state;
	const rfc5903 *v = &vectors[0];
	hsm_material *mi = material_of(v->spec, v->group, v->i, v->gix, v->giy);
	hsm_buf peer = {0};
	/* 311*G, found by trying small scalars against RFC 5903's i */
	spki_of_point("P-256", "b27173911c0025f9cae5391a2bae96c4e77de6dfa8c487f44f5f7b8944247ecf",
	              "52cbbc5ed3b99d62dc4fd6939384e2806aedc4606e8f899990d017c909870c48", &peer);
	expect_secret(mi, &peer,
	              "0046ca4f92457c842b7992451c88fe61e833773a46384393b8346a280b2358aa");
	hsm_material_free(mi);
	hsm_buf_free(&peer);
}

/* Two generated keys agree from both sides, with the peer's point compressed or not. */
static void test_generated_keys_agree(void **state)
{
	(void)state;
	static const hsm_key_spec specs[] = {HSM_SPEC_ECC_NIST_P256, HSM_SPEC_ECC_NIST_P384,
	                                     HSM_SPEC_ECC_NIST_P521};
	for (size_t n = 0; n < 3; n++) {
		const hsm_material *a = fixture_key(specs[n]);
		hsm_material *b = NULL;
		hsm_buf pa = {0}, pb = {0}, pb_compressed = {0}, za, zb, zc;
		hsm_buf_init_secure(&za);
		hsm_buf_init_secure(&zb);
		hsm_buf_init_secure(&zc);
		assert_succeeds(hsm_material_generate(specs[n], &b));
		assert_succeeds(hsm_material_pairwise_test(b, HSM_USAGE_KEY_AGREEMENT));
		assert_succeeds(hsm_material_public_der(a, &pa));
		assert_succeeds(hsm_material_public_der(b, &pb));
		const unsigned char *p = pb.data;
		EVP_PKEY *pk = d2i_PUBKEY(NULL, &p, (long)pb.len);
		assert_non_null(pk);
		assert_int_equal(EVP_PKEY_set_utf8_string_param(
		                     pk, OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
		                     OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_COMPRESSED),
		                 1);
		spki_of(pk, &pb_compressed);
		EVP_PKEY_free(pk);
		assert_true(pb_compressed.len < pb.len);
		assert_succeeds(hsm_ecdh_derive(a, pb.data, pb.len, &za));
		assert_succeeds(hsm_ecdh_derive(b, pa.data, pa.len, &zb));
		assert_succeeds(hsm_ecdh_derive(a, pb_compressed.data, pb_compressed.len, &zc));
		assert_int_equal(za.len, hsm_ec_field_len(specs[n]));
		assert_int_equal(zb.len, za.len);
		assert_memory_equal(za.data, zb.data, za.len);
		assert_int_equal(zc.len, za.len);
		assert_memory_equal(za.data, zc.data, za.len);
		hsm_material_free(b);
		hsm_buf_free(&pa);
		hsm_buf_free(&pb);
		hsm_buf_free(&pb_compressed);
		hsm_buf_free(&za);
		hsm_buf_free(&zb);
		hsm_buf_free(&zc);
	}
}

/* Refused with ValidationException, appending nothing; the dry-run check agrees. */
static void expect_refused(const hsm_material *m, const uint8_t *peer, size_t len,
                           const char *why)
{
	hsm_buf z;
	hsm_buf_init_secure(&z);
	assert_true(hsm_ok(hsm_buf_put(&z, "kept", 4)));
	hsm_result r = hsm_ecdh_derive(m, peer, len, &z);
	if (r.err != HSM_ERR_VALIDATION)
		fail_msg("%s: %s (%s)", why, hsm_err_code_name(r.err), hsm_last_message());
	assert_int_equal(z.len, 4);
	assert_memory_equal(z.data, "kept", 4);
	assert_fails_with(hsm_ecdh_check_peer(hsm_material_spec(m), peer, len), HSM_ERR_VALIDATION);
	hsm_buf_free(&z);
}

static void expect_refused_buf(const hsm_material *m, const hsm_buf *peer, const char *why)
{
	expect_refused(m, peer->data, peer->len, why);
}

static void test_peer_on_another_curve(void **state)
{
	(void)state;
	const hsm_material *p256 = fixture_key(HSM_SPEC_ECC_NIST_P256);
	hsm_buf spki = {0};
	assert_succeeds(hsm_material_public_der(fixture_key(HSM_SPEC_ECC_NIST_P384), &spki));
	expect_refused_buf(p256, &spki, "P-384 peer");
	assert_non_null(strstr(hsm_last_message(), "same curve"));
	hsm_buf_clear(&spki);
	assert_succeeds(hsm_material_public_der(fixture_key(HSM_SPEC_ECC_SECG_P256K1), &spki));
	expect_refused_buf(p256, &spki, "secp256k1 peer");
	hsm_buf_clear(&spki);
	assert_succeeds(hsm_material_public_der(p256, &spki));
	expect_refused_buf(fixture_key(HSM_SPEC_ECC_NIST_P521), &spki, "P-256 peer of a P-521 key");
	hsm_buf_free(&spki);
}

static void test_peer_that_is_not_ec(void **state)
{
	(void)state;
	const hsm_material *p256 = fixture_key(HSM_SPEC_ECC_NIST_P256);
	static const hsm_key_spec others[] = {HSM_SPEC_RSA_2048, HSM_SPEC_ECC_NIST_EDWARDS25519};
	for (size_t i = 0; i < 2; i++) {
		hsm_buf spki = {0};
		assert_succeeds(hsm_material_public_der(fixture_key(others[i]), &spki));
		expect_refused_buf(p256, &spki, hsm_spec_name(others[i]));
		assert_non_null(strstr(hsm_last_message(), "not an elliptic curve key"));
		hsm_buf_free(&spki);
	}
	/* X25519 is Diffie-Hellman too, but not KMS's ECDH. */
	EVP_PKEY *x = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	assert_non_null(x);
	hsm_buf spki = {0};
	spki_of(x, &spki);
	expect_refused_buf(p256, &spki, "X25519 peer");
	EVP_PKEY_free(x);
	hsm_buf_free(&spki);
}

static void test_invalid_points(void **state)
{
	(void)state;
	const rfc5903 *v = &vectors[0];
	hsm_material *mi = material_of(v->spec, v->group, v->i, v->gix, v->giy);
	hsm_buf spki = {0};
	spki_of_point(v->group, v->grx, v->gry, &spki);
	/* y with its lowest bit flipped: neither y nor p - y, so off the curve. */
	spki.data[spki.len - 1] ^= 0x01;
	expect_refused_buf(mi, &spki, "point off the curve");
	assert_non_null(strstr(hsm_last_message(), "valid point"));
	/* x = p, the field prime: a coordinate out of range. */
	spki.data[spki.len - 1] ^= 0x01;
	static const uint8_t p256_p[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01,
	                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	                                   0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
	                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	memcpy(spki.data + spki.len - 64, p256_p, 32);
	expect_refused_buf(mi, &spki, "x = p");
	/* The point at infinity, encoded as the single octet 00 (SEC 1 section 2.3.3). */
	hsm_buf inf = {0};
	fixture_unhex("3019301306072a8648ce3d020106082a8648ce3d030107030200" "00", &inf);
	expect_refused_buf(mi, &inf, "point at infinity");
	/* A compressed point with x = 1: x^3 - 3x + b is no square mod p, so no y exists. */
	hsm_buf comp = {0};
	fixture_unhex("3039301306072a8648ce3d020106082a8648ce3d030107032200"
	              "02" "0000000000000000000000000000000000000000000000000000000000000001",
	              &comp);
	expect_refused_buf(mi, &comp, "compressed x not on the curve");
	hsm_material_free(mi);
	hsm_buf_free(&spki);
	hsm_buf_free(&inf);
	hsm_buf_free(&comp);
}

/*
 * RFC 5480 section 2.2: uncompressed (04) or compressed (02, 03); the hybrid
 * form (06 or 07 with the parity of y, then x and y), though OpenSSL decodes
 * it, MUST NOT be used: refused on every curve, with either parity octet.
 */
static void test_hybrid_points(void **state)
{
	(void)state;
	static const hsm_key_spec specs[] = {HSM_SPEC_ECC_NIST_P256, HSM_SPEC_ECC_NIST_P384,
	                                     HSM_SPEC_ECC_NIST_P521};
	for (size_t n = 0; n < 3; n++) {
		const hsm_material *a = fixture_key(specs[n]);
		hsm_material *b = NULL;
		hsm_buf spki = {0};
		hsm_buf z;
		hsm_buf_init_secure(&z);
		assert_succeeds(hsm_material_generate(specs[n], &b));
		assert_succeeds(hsm_material_public_der(b, &spki));
		/* The point ends the SPKI: 04 || x || y. */
		size_t at = spki.len - 1 - 2 * hsm_ec_field_len(specs[n]);
		assert_int_equal(spki.data[at], 0x04);
		assert_succeeds(hsm_ecdh_derive(a, spki.data, spki.len, &z));
		uint8_t odd = spki.data[spki.len - 1] & 1;
		spki.data[at] = (uint8_t)(0x06 | odd);
		expect_refused_buf(a, &spki, "hybrid point");
		assert_non_null(strstr(hsm_last_message(), "hybrid"));
		spki.data[at] = (uint8_t)(0x06 | (odd ^ 1));
		expect_refused_buf(a, &spki, "hybrid point, wrong parity");
		hsm_material_free(b);
		hsm_buf_free(&spki);
		hsm_buf_free(&z);
	}
}

static void test_malformed_spki(void **state)
{
	(void)state;
	const hsm_material *p256 = fixture_key(HSM_SPEC_ECC_NIST_P256);
	hsm_buf good = {0}, bad = {0};
	assert_succeeds(hsm_material_public_der(fixture_key(HSM_SPEC_ECC_NIST_P256), &good));
	expect_refused(p256, NULL, 0, "nothing");
	expect_refused(p256, good.data, 0, "empty");
	expect_refused(p256, (const uint8_t *)"not DER at all", 14, "garbage");
	expect_refused(p256, good.data, good.len - 1, "truncated");
	assert_true(hsm_ok(hsm_buf_set(&bad, good.data, good.len)));
	assert_true(hsm_ok(hsm_buf_put_u8(&bad, 0x00)));
	expect_refused_buf(p256, &bad, "trailing byte");
	assert_non_null(strstr(hsm_last_message(), "trailing"));
	/* The point alone (X9.62), without the SubjectPublicKeyInfo around it. */
	expect_refused(p256, good.data + good.len - 65, 65, "bare point");
	/* BER that decodes to the same key: the outer length in long form (0x81 0x59 for 0x59),
	 * which the fast path for the usual encoding does not take either. */
	assert_true(good.data[0] == 0x30 && good.data[1] < 0x80);
	hsm_buf_clear(&bad);
	assert_true(hsm_ok(hsm_buf_put_u8(&bad, 0x30)));
	assert_true(hsm_ok(hsm_buf_put_u8(&bad, 0x81)));
	assert_true(hsm_ok(hsm_buf_put(&bad, good.data + 1, good.len - 1)));
	expect_refused_buf(p256, &bad, "long-form length");
	assert_non_null(strstr(hsm_last_message(), "not DER"));
	/* Too long to be a public key: refused before any parsing. */
	hsm_buf_clear(&bad);
	uint8_t *p;
	assert_true(hsm_ok(hsm_buf_append_space(&bad, 8193, &p)));
	memset(p, 0x30, 8193);
	expect_refused_buf(p256, &bad, "8193 bytes");
	/* Curve parameters spelled out instead of named (RFC 5480 forbids it). */
	const unsigned char *q = good.data;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &q, (long)good.len);
	assert_non_null(pk);
	assert_int_equal(EVP_PKEY_set_utf8_string_param(pk, OSSL_PKEY_PARAM_EC_ENCODING,
	                                                OSSL_PKEY_EC_ENCODING_EXPLICIT),
	                 1);
	spki_of(pk, &bad);
	EVP_PKEY_free(pk);
	assert_true(bad.len > good.len + 100);
	expect_refused_buf(p256, &bad, "explicit curve parameters");
	assert_non_null(strstr(hsm_last_message(), "name its curve"));
	hsm_buf_free(&good);
	hsm_buf_free(&bad);
}

/* Only NIST-curve keys agree; anything else is the wrong key for it. */
static void test_keys_that_do_not_agree(void **state)
{
	(void)state;
	static const hsm_key_spec specs[] = {HSM_SPEC_ECC_SECG_P256K1, HSM_SPEC_ECC_NIST_EDWARDS25519,
	                                     HSM_SPEC_RSA_2048, HSM_SPEC_SYMMETRIC_DEFAULT,
	                                     HSM_SPEC_HMAC_256};
	hsm_buf peer = {0}, z;
	hsm_buf_init_secure(&z);
	assert_succeeds(hsm_material_public_der(fixture_key(HSM_SPEC_ECC_SECG_P256K1), &peer));
	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		const hsm_material *m = fixture_key(specs[i]);
		assert_fails_with(hsm_ecdh_derive(m, peer.data, peer.len, &z), HSM_ERR_INVALID_KEY_USAGE);
		assert_int_equal(z.len, 0);
		assert_fails_with(hsm_ecdh_check_peer(specs[i], peer.data, peer.len),
		                  HSM_ERR_INVALID_KEY_USAGE);
		assert_fails_with(hsm_material_pairwise_test(m, HSM_USAGE_KEY_AGREEMENT),
		                  HSM_ERR_INVALID_KEY_USAGE);
	}
	hsm_buf_free(&peer);
	hsm_buf_free(&z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc5903_both_sides),
	    cmocka_unit_test(test_leading_zero_is_kept),
	    cmocka_unit_test(test_generated_keys_agree),
	    cmocka_unit_test(test_peer_on_another_curve),
	    cmocka_unit_test(test_peer_that_is_not_ec),
	    cmocka_unit_test(test_invalid_points),
	    cmocka_unit_test(test_hybrid_points),
	    cmocka_unit_test(test_malformed_spki),
	    cmocka_unit_test(test_keys_that_do_not_agree),
	};
	return cmocka_run_group_tests(tests, crypto_fixture_setup, crypto_fixture_teardown);
}
