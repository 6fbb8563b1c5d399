/*
 * kms_agreement_test.c - DeriveSharedSecret in the KMS layer: which key
 * specs take KeyUsage KEY_AGREEMENT, the secret against an independent ECDH
 * with the key's public key, key usage, key states, DryRun, rotation, roles,
 * the kms:KeyAgreementAlgorithm condition key and grants.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "kms/kms.h"
#include "support/kms_fixture.h"

typedef kms_fx fx;

static const hsm_caller officer = {.user = "olivia", .access_key_id = "AKIAOLIVIA0000000000",
                                   .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER)};
static const hsm_caller user = {.user = "ursula", .access_key_id = "AKIAURSULA0000000000",
                                .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER)};
static const hsm_caller auditor = {.user = "audrey", .access_key_id = "AKIAAUDREY0000000000",
                                   .roles = HSM_ROLE_BIT(HSM_ROLE_AUDITOR)};

static int setup(void **state)
{
	return kms_fx_setup(state, NULL, 1800000000);
}

static void create(fx *f, hsm_key_spec spec, hsm_key_usage usage, const char *policy,
                   hsm_key_record *out)
{
	hsm_create_key_req req = {.description = "agreement", .spec = spec, .usage = usage,
	                          .policy = policy};
	memset(out, 0, sizeof(out[0]));
	assert_true(hsm_ok(hsm_kms_create_key(f->kms, &officer, &req, out)));
}

static const char *group_of(hsm_key_spec spec)
{
	return hsm_spec_get(spec)->group;
}

/* A peer key pair made outside hsmd, and its SubjectPublicKeyInfo. */
static EVP_PKEY *peer_new(hsm_key_spec spec, hsm_buf *spki)
{
	EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", group_of(spec));
	assert_non_null(pk);
	unsigned char *der = NULL;
	int len = i2d_PUBKEY(pk, &der);
	assert_true(len > 0);
	assert_true(hsm_ok(hsm_buf_set(spki, der, (size_t)len)));
	OPENSSL_free(der);
	return pk;
}

/* What the peer computes: ECDH of its private key with the KMS key's public key. */
static void peer_side(EVP_PKEY *peer, const hsm_buf *kms_spki, hsm_buf *out)
{
	const unsigned char *p = kms_spki->data;
	EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)kms_spki->len);
	assert_non_null(pub);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, peer, NULL);
	size_t n = 0;
	uint8_t *dst;
	assert_int_equal(EVP_PKEY_derive_init(ctx), 1);
	assert_int_equal(EVP_PKEY_derive_set_peer(ctx, pub), 1);
	assert_int_equal(EVP_PKEY_derive(ctx, NULL, &n), 1);
	hsm_buf_clear(out);
	assert_true(hsm_ok(hsm_buf_append_space(out, n, &dst)));
	assert_int_equal(EVP_PKEY_derive(ctx, dst, &n), 1);
	out->len = n;
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pub);
}

static hsm_result derive(fx *f, const hsm_caller *c, const char *key, const hsm_buf *peer,
                         hsm_buf *secret, hsm_used_key *used)
{
	hsm_buf_clear(secret);
	return hsm_kms_derive_shared_secret(f->kms, c, key, HSM_AGREE_ECDH, peer->data, peer->len,
	                                    secret, used);
}

static void public_key(fx *f, const char *key, hsm_buf *spki)
{
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	hsm_buf_clear(spki);
	assert_true(hsm_ok(hsm_kms_get_public_key(f->kms, &user, key, spki, &rec)));
	assert_int_equal(rec.usage, HSM_USAGE_KEY_AGREEMENT);
	hsm_key_record_clear(&rec);
}

/* CreateKey: KEY_AGREEMENT for the NIST curves only (KMS API reference, CreateKey KeyUsage). */
static void test_which_specs_agree(void **state)
{
	fx *f = *state;
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++) {
		hsm_create_key_req req = {.spec = (hsm_key_spec)s, .usage = HSM_USAGE_KEY_AGREEMENT};
		hsm_key_record out;
		memset(&out, 0, sizeof(out));
		bool nist = s == HSM_SPEC_ECC_NIST_P256 || s == HSM_SPEC_ECC_NIST_P384 ||
		            s == HSM_SPEC_ECC_NIST_P521;
		assert_int_equal(hsm_spec_allows_usage((hsm_key_spec)s, HSM_USAGE_KEY_AGREEMENT), nist);
		hsm_result r = hsm_kms_create_key(f->kms, &officer, &req, &out);
		if (r.err != (nist ? HSM_OK : HSM_ERR_VALIDATION))
			fail_msg("%s: %s", hsm_spec_name((hsm_key_spec)s), hsm_err_code_name(r.err));
		if (nist) {
			assert_int_equal(out.usage, HSM_USAGE_KEY_AGREEMENT);
			assert_string_equal(hsm_usage_name(out.usage), "KEY_AGREEMENT");
		}
		hsm_key_record_clear(&out);
	}
}

/* The secret is what the peer computes with the key's public key, on every curve. */
static void test_secret_matches_the_peer(void **state)
{
	fx *f = *state;
	static const hsm_key_spec specs[] = {HSM_SPEC_ECC_NIST_P256, HSM_SPEC_ECC_NIST_P384,
	                                     HSM_SPEC_ECC_NIST_P521};
	static const char *const aliases[] = {"alias/p256", "alias/p384", "alias/p521"};
	for (size_t i = 0; i < 3; i++) {
		hsm_key_record k;
		hsm_buf peer_spki = {0}, kms_spki = {0}, secret, theirs, again;
		hsm_used_key used;
		hsm_buf_init_secure(&secret);
		hsm_buf_init_secure(&theirs);
		hsm_buf_init_secure(&again);
		create(f, specs[i], HSM_USAGE_KEY_AGREEMENT, NULL, &k);
		assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, aliases[i], k.key_id)));
		EVP_PKEY *peer = peer_new(specs[i], &peer_spki);
		assert_true(hsm_ok(derive(f, &user, k.key_id, &peer_spki, &secret, &used)));
		assert_string_equal(used.key_id, k.key_id);
		assert_int_equal(used.version, 1);
		assert_int_equal(used.usage, HSM_USAGE_KEY_AGREEMENT);
		assert_int_equal(secret.len, hsm_ec_field_len(specs[i]));
		public_key(f, k.key_id, &kms_spki);
		peer_side(peer, &kms_spki, &theirs);
		assert_int_equal(theirs.len, secret.len);
		assert_memory_equal(theirs.data, secret.data, secret.len);
		/* By alias, the same secret. */
		assert_true(hsm_ok(derive(f, &user, aliases[i], &peer_spki, &again, &used)));
		assert_memory_equal(again.data, secret.data, secret.len);
		hsm_buf_free(&again);
		EVP_PKEY_free(peer);
		hsm_buf_free(&peer_spki);
		hsm_buf_free(&kms_spki);
		hsm_buf_free(&secret);
		hsm_buf_free(&theirs);
		hsm_key_record_clear(&k);
	}
}

static void test_key_usage_and_peer_checks(void **state)
{
	fx *f = *state;
	hsm_key_record agree, sign, sym;
	hsm_buf p256 = {0}, p384 = {0}, secret, sig = {0};
	hsm_used_key used;
	hsm_buf_init_secure(&secret);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT, NULL, &agree);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, &sign);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &sym);
	EVP_PKEY *a = peer_new(HSM_SPEC_ECC_NIST_P256, &p256);
	EVP_PKEY *b = peer_new(HSM_SPEC_ECC_NIST_P384, &p384);
	/* A signing key of the same curve does not agree, nor a symmetric key. */
	assert_int_equal(derive(f, &user, sign.key_id, &p256, &secret, &used).err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	assert_non_null(strstr(hsm_last_message(), "not KEY_AGREEMENT"));
	assert_int_equal(derive(f, &user, sym.key_id, &p256, &secret, &used).err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	/* A key agreement key neither signs nor verifies. */
	assert_int_equal(hsm_kms_sign(f->kms, &user, agree.key_id, HSM_SIGN_ECDSA_SHA_256,
	                              HSM_MSG_RAW, (const uint8_t *)"m", 1, &sig, &used)
	                     .err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	assert_int_equal(hsm_kms_verify(f->kms, &user, agree.key_id, HSM_SIGN_ECDSA_SHA_256,
	                                HSM_MSG_RAW, (const uint8_t *)"m", 1, (const uint8_t *)"s",
	                                1, &used)
	                     .err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	/* The peer's key must be on the key's curve and a valid point. */
	assert_int_equal(derive(f, &user, agree.key_id, &p384, &secret, &used).err,
	                 HSM_ERR_VALIDATION);
	p256.data[p256.len - 1] ^= 0x01;
	assert_int_equal(derive(f, &user, agree.key_id, &p256, &secret, &used).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(secret.len, 0);
	p256.data[p256.len - 1] ^= 0x01;
	assert_true(hsm_ok(derive(f, &user, agree.key_id, &p256, &secret, &used)));
	/* An unknown key. */
	assert_int_equal(derive(f, &user, "alias/none", &p256, &secret, &used).err,
	                 HSM_ERR_NOT_FOUND);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	hsm_buf_free(&p256);
	hsm_buf_free(&p384);
	hsm_buf_free(&secret);
	hsm_buf_free(&sig);
	hsm_key_record_clear(&agree);
	hsm_key_record_clear(&sign);
	hsm_key_record_clear(&sym);
}

/* Key states (KMS Developer Guide, key state table): a cryptographic operation. */
static void test_key_states(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	hsm_buf peer = {0}, secret;
	hsm_used_key used;
	hsm_buf_init_secure(&secret);
	create(f, HSM_SPEC_ECC_NIST_P384, HSM_USAGE_KEY_AGREEMENT, NULL, &k);
	EVP_PKEY *pk = peer_new(HSM_SPEC_ECC_NIST_P384, &peer);
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	assert_int_equal(derive(f, &user, k.key_id, &peer, &secret, &used).err, HSM_ERR_DISABLED);
	assert_true(hsm_ok(hsm_kms_enable_key(f->kms, &officer, k.key_id)));
	assert_true(hsm_ok(derive(f, &user, k.key_id, &peer, &secret, &used)));
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &r)));
	hsm_key_record_clear(&r);
	assert_int_equal(derive(f, &user, k.key_id, &peer, &secret, &used).err,
	                 HSM_ERR_INVALID_STATE);
	assert_int_equal(secret.len, 0);
	EVP_PKEY_free(pk);
	hsm_buf_free(&peer);
	hsm_buf_free(&secret);
	hsm_key_record_clear(&k);
}

/* DryRun checks what a real call checks, the peer's key included, and derives nothing. */
static void test_dry_run(void **state)
{
	fx *f = *state;
	hsm_key_record k, sign;
	hsm_buf peer = {0}, other = {0}, secret;
	hsm_used_key used;
	hsm_buf_init_secure(&secret);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT, NULL, &k);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, &sign);
	EVP_PKEY *a = peer_new(HSM_SPEC_ECC_NIST_P256, &peer);
	EVP_PKEY *b = peer_new(HSM_SPEC_ECC_NIST_P521, &other);
	hsm_caller dry = user;
	dry.dry_run = true;
	assert_int_equal(derive(f, &dry, k.key_id, &peer, &secret, &used).err, HSM_ERR_DRY_RUN);
	assert_int_equal(secret.len, 0);
	assert_int_equal(derive(f, &dry, k.key_id, &other, &secret, &used).err, HSM_ERR_VALIDATION);
	assert_int_equal(derive(f, &dry, sign.key_id, &peer, &secret, &used).err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	hsm_caller dry_officer = officer;
	dry_officer.dry_run = true;
	assert_int_equal(derive(f, &dry_officer, k.key_id, &peer, &secret, &used).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	assert_int_equal(derive(f, &dry, k.key_id, &peer, &secret, &used).err, HSM_ERR_DISABLED);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
	hsm_buf_free(&peer);
	hsm_buf_free(&other);
	hsm_buf_free(&secret);
	hsm_key_record_clear(&k);
	hsm_key_record_clear(&sign);
}

/* After a rotation the new primary version derives, and GetPublicKey gives its public key. */
static void test_rotation_derives_with_the_new_primary(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	hsm_buf peer = {0}, pub1 = {0}, pub2 = {0}, s1, s2, theirs;
	hsm_used_key used;
	hsm_buf_init_secure(&s1);
	hsm_buf_init_secure(&s2);
	hsm_buf_init_secure(&theirs);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT, NULL, &k);
	EVP_PKEY *pk = peer_new(HSM_SPEC_ECC_NIST_P256, &peer);
	public_key(f, k.key_id, &pub1);
	assert_true(hsm_ok(derive(f, &user, k.key_id, &peer, &s1, &used)));
	assert_int_equal(used.version, 1);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	assert_int_equal(r.primary_version, 2);
	hsm_key_record_clear(&r);
	public_key(f, k.key_id, &pub2);
	assert_false(pub1.len == pub2.len && memcmp(pub1.data, pub2.data, pub1.len) == 0);
	assert_true(hsm_ok(derive(f, &user, k.key_id, &peer, &s2, &used)));
	assert_int_equal(used.version, 2);
	assert_false(memcmp(s1.data, s2.data, s1.len) == 0);
	peer_side(pk, &pub2, &theirs);
	assert_int_equal(theirs.len, s2.len);
	assert_memory_equal(theirs.data, s2.data, s2.len);
	peer_side(pk, &pub1, &theirs);
	assert_memory_equal(theirs.data, s1.data, s1.len);
	EVP_PKEY_free(pk);
	hsm_buf_free(&peer);
	hsm_buf_free(&pub1);
	hsm_buf_free(&pub2);
	hsm_buf_free(&s1);
	hsm_buf_free(&s2);
	hsm_buf_free(&theirs);
	hsm_key_record_clear(&k);
}

/* crypto-users derive; officers and auditors (who may read the public key) do not. */
static void test_roles(void **state)
{
	fx *f = *state;
	hsm_key_record k;
	hsm_buf peer = {0}, secret, spki = {0};
	hsm_used_key used;
	hsm_buf_init_secure(&secret);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT, NULL, &k);
	EVP_PKEY *pk = peer_new(HSM_SPEC_ECC_NIST_P256, &peer);
	assert_int_equal(derive(f, &officer, k.key_id, &peer, &secret, &used).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(derive(f, &auditor, k.key_id, &peer, &secret, &used).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_non_null(strstr(hsm_last_message(), "kms:DeriveSharedSecret"));
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	assert_true(hsm_ok(hsm_kms_get_public_key(f->kms, &auditor, k.key_id, &spki, &rec)));
	hsm_key_record_clear(&rec);
	assert_true(hsm_ok(derive(f, &user, k.key_id, &peer, &secret, &used)));
	EVP_PKEY_free(pk);
	hsm_buf_free(&peer);
	hsm_buf_free(&secret);
	hsm_buf_free(&spki);
	hsm_key_record_clear(&k);
}

#define POLICY_WITH(op, value)                                                             \
	"{\"Version\":\"2012-10-17\",\"Statement\":[{\"Sid\":\"officer\",\"Effect\":\"Allow\"," \
	"\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/olivia\"},\"Action\":\"kms:*\"," \
	"\"Resource\":\"*\"},{\"Sid\":\"derive\",\"Effect\":\"Allow\",\"Principal\":{\"AWS\":"  \
	"\"arn:aws:iam::111122223333:user/ursula\"},\"Action\":\"kms:DeriveSharedSecret\","    \
	"\"Resource\":\"*\",\"Condition\":{\"" op "\":{\"kms:KeyAgreementAlgorithm\":\"" value   \
	"\"}}}]}"

/* kms:KeyAgreementAlgorithm is ECDH in key policies. */
static void test_policy_condition(void **state)
{
	fx *f = *state;
	hsm_key_record ok_key, other_key, deny_key;
	hsm_buf peer = {0}, secret;
	hsm_used_key used;
	hsm_buf_init_secure(&secret);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT, POLICY_WITH("StringEquals", "ECDH"),
	       &ok_key);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT,
	       POLICY_WITH("StringEquals", "SM2DH"), &other_key);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT,
	       POLICY_WITH("StringNotEquals", "ECDH"), &deny_key);
	EVP_PKEY *pk = peer_new(HSM_SPEC_ECC_NIST_P256, &peer);
	assert_true(hsm_ok(derive(f, &user, ok_key.key_id, &peer, &secret, &used)));
	assert_int_equal(derive(f, &user, other_key.key_id, &peer, &secret, &used).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(derive(f, &user, deny_key.key_id, &peer, &secret, &used).err,
	                 HSM_ERR_ACCESS_DENIED);
	EVP_PKEY_free(pk);
	hsm_buf_free(&peer);
	hsm_buf_free(&secret);
	hsm_key_record_clear(&ok_key);
	hsm_key_record_clear(&other_key);
	hsm_key_record_clear(&deny_key);
}

#define OFFICER_ONLY                                                                       \
	"{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":"      \
	"{\"AWS\":\"arn:aws:iam::111122223333:user/olivia\"},\"Action\":\"kms:*\","            \
	"\"Resource\":\"*\"}]}"

/* A grant of DeriveSharedSecret allows it where the key policy does not; nothing else. */
static void test_grants(void **state)
{
	fx *f = *state;
	hsm_key_record k, sign;
	hsm_buf peer = {0}, secret, token = {0};
	hsm_used_key used;
	char id[HSM_GRANT_ID_LEN + 1], key_id[HSM_UUID_STRLEN + 1];
	hsm_buf_init_secure(&secret);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT, OFFICER_ONLY, &k);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, OFFICER_ONLY, &sign);
	EVP_PKEY *pk = peer_new(HSM_SPEC_ECC_NIST_P256, &peer);
	assert_int_equal(derive(f, &user, k.key_id, &peer, &secret, &used).err,
	                 HSM_ERR_ACCESS_DENIED);
	/* Which operations suit a key agreement key (and DeriveSharedSecret no other key). */
	struct {
		const char *key, *op;
		hsm_err want;
	} cases[] = {
	    {k.key_id, "DeriveSharedSecret", HSM_OK},
	    {k.key_id, "GetPublicKey", HSM_OK},
	    {k.key_id, "DescribeKey", HSM_OK},
	    {k.key_id, "Sign", HSM_ERR_VALIDATION},
	    {k.key_id, "Encrypt", HSM_ERR_VALIDATION},
	    {sign.key_id, "DeriveSharedSecret", HSM_ERR_VALIDATION},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *ops[] = {cases[i].op};
		hsm_create_grant_req req = {.key = cases[i].key,
		                            .grantee = "arn:aws:iam::111122223333:user/someone",
		                            .operations = ops,
		                            .n_operations = 1};
		hsm_buf_clear(&token);
		hsm_result r = hsm_kms_create_grant(f->kms, &officer, &req, id, &token, key_id);
		if (r.err != cases[i].want)
			fail_msg("case %zu (%s): %s", i, cases[i].op, hsm_err_code_name(r.err));
	}
	const char *ops[] = {"DeriveSharedSecret"};
	hsm_create_grant_req req = {.key = k.key_id,
	                            .grantee = "arn:aws:iam::111122223333:user/ursula",
	                            .operations = ops,
	                            .n_operations = 1};
	hsm_buf_clear(&token);
	assert_true(hsm_ok(hsm_kms_create_grant(f->kms, &officer, &req, id, &token, key_id)));
	assert_true(hsm_ok(derive(f, &user, k.key_id, &peer, &secret, &used)));
	assert_int_equal(secret.len, 32);
	/* Only what was granted: the public key stays the key policy's to give. */
	hsm_buf spki = {0};
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	assert_int_equal(hsm_kms_get_public_key(f->kms, &user, k.key_id, &spki, &rec).err,
	                 HSM_ERR_ACCESS_DENIED);
	EVP_PKEY_free(pk);
	hsm_buf_free(&peer);
	hsm_buf_free(&secret);
	hsm_buf_free(&token);
	hsm_buf_free(&spki);
	hsm_key_record_clear(&k);
	hsm_key_record_clear(&sign);
}

int main(void)
{
	if (hsm_failed(hsm_secure_process_init(1 << 22)))
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_which_specs_agree, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_secret_matches_the_peer, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_usage_and_peer_checks, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_key_states, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_dry_run, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rotation_derives_with_the_new_primary, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_roles, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_policy_condition, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_grants, setup, kms_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
