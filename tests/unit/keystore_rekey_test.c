/*
 * keystore_rekey_test.c - a new master key for a store (hsm_ks_rekey_*,
 * hsm_store_rekey): every secret re-wrapped in one transaction, old shares
 * refused after it, nothing changed by a failure.  Runs on SQLite and, as
 * keystore_rekey_test_pg, on PostgreSQL (store_test_util.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/blob.h"
#include "keystore/keystore.h"
#include "store/store_impl.h"
#include "keystore/share.h"
#include "store_test_util.h"

#define KEY_AES "aaaaaaaa-0000-4000-8000-000000000001"
#define KEY_EC "bbbbbbbb-0000-4000-8000-000000000002"
#define KEY_MAC "cccccccc-0000-4000-8000-000000000003"
#define AKID "AKIAREKEYTEST0000001"

typedef struct rk_fixture {
	st_fixture f;
	hsm_keystore *ks;
	hsm_buf old[5];    /* 3-of-5 */
	hsm_buf fresh[3];  /* 2-of-3, after a rekey */
	hsm_buf blob, sig, mac, ctx;
} rk_fixture;

static const hsm_ks_keyref REF_AES1 = {KEY_AES, 1, HSM_SPEC_SYMMETRIC_DEFAULT,
                                       HSM_USAGE_ENCRYPT_DECRYPT};
static const hsm_ks_keyref REF_AES2 = {KEY_AES, 2, HSM_SPEC_SYMMETRIC_DEFAULT,
                                       HSM_USAGE_ENCRYPT_DECRYPT};
static const hsm_ks_keyref REF_EC = {KEY_EC, 1, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY};
static const hsm_ks_keyref REF_MAC = {KEY_MAC, 1, HSM_SPEC_HMAC_256,
                                      HSM_USAGE_GENERATE_VERIFY_MAC};

/* A key whose first version the keystore generates. */
static void make_key(rk_fixture *t, const hsm_ks_keyref *ref)
{
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, ref->key_id);
	k.spec = ref->spec;
	k.usage = ref->usage;
	memset(&v, 0, sizeof(v));
	snprintf(v.key_id, sizeof(v.key_id), "%s", ref->key_id);
	v.version = 1;
	v.created = 1700000001;
	EXPECT_OK(hsm_ks_generate(t->ks, ref, &v.wrapped, &v.public_der));
	EXPECT_OK(hsm_store_key_create(t->f.s, &k, &v));
	hsm_version_record_clear(&v);
}

static hsm_result bump(hsm_key_record *k, void *arg)
{
	(void)k;
	(void)arg;
	return HSM_SUCCESS;
}

/* An initialized store holding three keys (one with two versions) and an access key, used once each. */
static int setup(void **state)
{
	rk_fixture *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	st_fresh_location(&t->f);
	EXPECT_OK(hsm_store_open(t->f.loc, &t->f.s));
	EXPECT_OK(hsm_keystore_new(t->f.s, 0, &t->ks));
	EXPECT_OK(hsm_keystore_init(t->ks, 3, 5, NULL, false, t->old));
	make_key(t, &REF_AES1);
	make_key(t, &REF_EC);
	make_key(t, &REF_MAC);
	hsm_version_record v2;
	memset(&v2, 0, sizeof(v2));
	snprintf(v2.key_id, sizeof(v2.key_id), "%s", KEY_AES);
	v2.version = 2;
	v2.created = 1700000002;
	v2.rotation_type = HSM_ROTATION_ON_DEMAND;
	EXPECT_OK(hsm_ks_generate(t->ks, &REF_AES2, &v2.wrapped, NULL));
	EXPECT_OK(hsm_store_key_update(t->f.s, KEY_AES, bump, NULL, &v2, NULL));
	hsm_version_record_clear(&v2);

	hsm_user_record u = {.name = "app", .roles = 1U << HSM_ROLE_CRYPTO_USER, .created = 1};
	EXPECT_OK(hsm_store_user_create(t->f.s, &u));
	hsm_access_key_record ak = {.access_key_id = AKID, .user = "app", .active = true};
	hsm_secret *secret = NULL;
	EXPECT_OK(hsm_secret_from((const uint8_t *)"access-key-secret", 17, &secret));
	EXPECT_OK(hsm_ks_wrap_secret(t->ks, AKID, secret, &ak.wrapped_secret));
	hsm_secret_free(secret);
	EXPECT_OK(hsm_store_access_key_create(t->f.s, &ak));
	hsm_access_key_record_clear(&ak);

	EXPECT_OK(hsm_buf_put_u32(&t->ctx, 0));
	EXPECT_OK(hsm_ks_encrypt(t->ks, &REF_AES1, &t->ctx, (const uint8_t *)"before", 6, &t->blob));
	EXPECT_OK(hsm_ks_sign(t->ks, &REF_EC, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW,
	                      (const uint8_t *)"msg", 3, &t->sig));
	EXPECT_OK(hsm_ks_mac(t->ks, &REF_MAC, HSM_MAC_HMAC_SHA_256, (const uint8_t *)"msg", 3,
	                     &t->mac));
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	rk_fixture *t = *state;
	hsm_keystore_free(t->ks);
	for (int i = 0; i < 5; i++)
		hsm_buf_free(&t->old[i]);
	for (int i = 0; i < 3; i++)
		hsm_buf_free(&t->fresh[i]);
	hsm_buf_free(&t->blob);
	hsm_buf_free(&t->sig);
	hsm_buf_free(&t->mac);
	hsm_buf_free(&t->ctx);
	hsm_store_close(t->f.s);
	st_release_location(&t->f);
	free(t);
	return 0;
}

/* A fresh keystore on the store (a node restarted), unsealed with shares[0..n). */
static hsm_result restart_with(rk_fixture *t, const hsm_buf *shares, int n)
{
	hsm_keystore_free(t->ks);
	t->ks = NULL;
	EXPECT_OK(hsm_keystore_new(t->f.s, 0, &t->ks));
	hsm_unseal_progress p;
	for (int i = 0; i < n; i++)
		HSM_GUARD(hsm_keystore_unseal(t->ks, shares[i].data, shares[i].len, &p));
	assert_true(p.unsealed);
	return HSM_SUCCESS;
}

/* Everything made before the rekey still works with the keystore as it is. */
static void assert_secrets_work(rk_fixture *t)
{
	hsm_blob b;
	hsm_buf pt, mac = {0};
	hsm_buf_init_secure(&pt);
	EXPECT_OK(hsm_blob_parse(t->blob.data, t->blob.len, &b));
	EXPECT_OK(hsm_ks_decrypt(t->ks, &REF_AES1, &b, &t->ctx, &pt));
	assert_int_equal(pt.len, 6);
	assert_memory_equal(pt.data, "before", 6);
	hsm_buf more = {0};
	EXPECT_OK(hsm_ks_encrypt(t->ks, &REF_AES2, &t->ctx, (const uint8_t *)"x", 1, &more));
	EXPECT_OK(hsm_ks_verify(t->ks, &REF_EC, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW,
	                        (const uint8_t *)"msg", 3, t->sig.data, t->sig.len));
	EXPECT_OK(hsm_ks_mac(t->ks, &REF_MAC, HSM_MAC_HMAC_SHA_256, (const uint8_t *)"msg", 3, &mac));
	assert_int_equal(mac.len, t->mac.len);
	assert_memory_equal(mac.data, t->mac.data, mac.len);
	hsm_access_key_record ak;
	memset(&ak, 0, sizeof(ak));
	EXPECT_OK(hsm_store_access_key_get(t->f.s, AKID, &ak));
	hsm_secret *secret = NULL;
	EXPECT_OK(hsm_ks_unwrap_secret(t->ks, AKID, ak.wrapped_secret.data, ak.wrapped_secret.len,
	                               &secret));
	assert_int_equal(hsm_secret_len(secret), 17);
	assert_memory_equal(hsm_secret_bytes(secret), "access-key-secret", 17);
	hsm_secret_free(secret);
	hsm_access_key_record_clear(&ak);
	hsm_buf sig = {0};
	EXPECT_OK(hsm_ks_audit_sign(t->ks, (const uint8_t *)"checkpoint", 10, &sig));
	hsm_buf_free(&sig);
	hsm_buf_free(&pt);
	hsm_buf_free(&mac);
	hsm_buf_free(&more);
}

static void wrapped_of(rk_fixture *t, const char *key_id, uint32_t version, hsm_buf *out)
{
	hsm_version_record v;
	memset(&v, 0, sizeof(v));
	EXPECT_OK(hsm_store_version_get(t->f.s, key_id, version, &v));
	EXPECT_OK(hsm_buf_set(out, v.wrapped.data, v.wrapped.len));
	hsm_version_record_clear(&v);
}

/*
 * More rows than one page of the rekey's walk, of both kinds: every row is
 * re-wrapped, the last ones included (a row the walk skipped would be lost
 * for good: only the old master key opens it, and the store no longer knows
 * that key).
 */
#define MANY_KEYS (ST_REKEY_PAGE + 40)
#define MANY_ACCESS_KEYS (ST_REKEY_PAGE + 3)
static void test_rekey_crosses_pages(void **state)
{
	rk_fixture *t = *state;
	hsm_buf first = {0}, last = {0};
	hsm_ks_keyref refs[2];
	char ids[2][HSM_UUID_STRLEN + 1];
	for (unsigned i = 0; i < MANY_KEYS; i++) {
		char id[HSM_UUID_STRLEN + 1];
		st_key_id(id, 0x10000 + i);
		hsm_ks_keyref ref = {id, 1, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT};
		make_key(t, &ref);
		if (i == 0 || i == MANY_KEYS - 1) {
			int k = i == 0 ? 0 : 1;
			memcpy(ids[k], id, sizeof(ids[k]));
			refs[k] = (hsm_ks_keyref){ids[k], 1, HSM_SPEC_SYMMETRIC_DEFAULT,
			                          HSM_USAGE_ENCRYPT_DECRYPT};
			EXPECT_OK(hsm_ks_encrypt(t->ks, &refs[k], &t->ctx, (const uint8_t *)"page", 4,
			                         k == 0 ? &first : &last));
		}
	}
	char akid[21]; /* AKIA + 16 */
	for (unsigned i = 0; i < MANY_ACCESS_KEYS; i++) {
		snprintf(akid, sizeof(akid), "AKIAREKEYPAGE%07u", i % 10000000);
		/* Spread over users: one holds at most HSM_ACCESS_KEYS_PER_USER active keys. */
		hsm_access_key_record ak = {.active = true};
		snprintf(ak.user, sizeof(ak.user), "pager%u", i / 8);
		if (i % 8 == 0) {
			hsm_user_record pager = {.roles = 1U << HSM_ROLE_CRYPTO_USER, .created = 1};
			memcpy(pager.name, ak.user, sizeof(pager.name));
			EXPECT_OK(hsm_store_user_create(t->f.s, &pager));
		}
		memcpy(ak.access_key_id, akid, sizeof(akid));
		hsm_secret *secret = NULL;
		EXPECT_OK(hsm_secret_from((const uint8_t *)akid, strlen(akid), &secret));
		EXPECT_OK(hsm_ks_wrap_secret(t->ks, akid, secret, &ak.wrapped_secret));
		hsm_secret_free(secret);
		EXPECT_OK(hsm_store_access_key_create(t->f.s, &ak));
		hsm_access_key_record_clear(&ak);
	}

	hsm_ks_rekey *rk = NULL;
	hsm_store_rekey_counts counts;
	hsm_ks_rekey_outcome outcome;
	EXPECT_OK(hsm_ks_rekey_prepare(t->ks, 2, 3, NULL, t->fresh, &rk));
	EXPECT_OK(hsm_ks_rekey_commit(t->ks, rk, &counts, &outcome));
	hsm_ks_rekey_free(rk);
	assert_int_equal(counts.versions, 4 + MANY_KEYS);
	assert_int_equal(counts.access_keys, 1 + MANY_ACCESS_KEYS);

	/* A node started afresh with the new shares opens the first and the last of each. */
	EXPECT_OK(restart_with(t, t->fresh, 2));
	for (int k = 0; k < 2; k++) {
		hsm_blob b;
		hsm_buf pt;
		hsm_buf_init_secure(&pt);
		const hsm_buf *blob = k == 0 ? &first : &last;
		EXPECT_OK(hsm_blob_parse(blob->data, blob->len, &b));
		EXPECT_OK(hsm_ks_decrypt(t->ks, &refs[k], &b, &t->ctx, &pt));
		assert_int_equal(pt.len, 4);
		assert_memory_equal(pt.data, "page", 4);
		hsm_buf_free(&pt);
	}
	for (unsigned i = 0; i < MANY_ACCESS_KEYS; i += MANY_ACCESS_KEYS - 1) {
		snprintf(akid, sizeof(akid), "AKIAREKEYPAGE%07u", i % 10000000);
		hsm_access_key_record ak;
		memset(&ak, 0, sizeof(ak));
		EXPECT_OK(hsm_store_access_key_get(t->f.s, akid, &ak));
		hsm_secret *secret = NULL;
		EXPECT_OK(hsm_ks_unwrap_secret(t->ks, akid, ak.wrapped_secret.data,
		                               ak.wrapped_secret.len, &secret));
		assert_int_equal(hsm_secret_len(secret), strlen(akid));
		assert_memory_equal(hsm_secret_bytes(secret), akid, strlen(akid));
		hsm_secret_free(secret);
		hsm_access_key_record_clear(&ak);
	}
	assert_secrets_work(t);
	hsm_buf_free(&first);
	hsm_buf_free(&last);
}

static void test_rekey_rewraps_every_secret(void **state)
{
	rk_fixture *t = *state;
	hsm_buf before = {0}, after = {0}, pem_before = {0}, pem_after = {0};
	hsm_ks_identity old_id, new_id, now_id;
	wrapped_of(t, KEY_AES, 1, &before);
	EXPECT_OK(hsm_ks_audit_public_pem(t->ks, &pem_before));
	hsm_keystore_identity(t->ks, &old_id);

	hsm_ks_rekey *rk = NULL;
	hsm_store_rekey_counts counts;
	hsm_ks_rekey_outcome outcome;
	const char *names[] = {"xavier", "yara", "zoe"};
	EXPECT_OK(hsm_ks_rekey_prepare(t->ks, 2, 3, names, t->fresh, &rk));
	hsm_ks_rekey_identity(rk, &new_id);
	assert_false(memcmp(new_id.set_id, old_id.set_id, sizeof(old_id.set_id)) == 0);
	assert_non_null(strstr((const char *)t->fresh[0].data, "custodian xavier"));
	EXPECT_OK(hsm_ks_rekey_commit(t->ks, rk, &counts, &outcome));
	hsm_ks_rekey_free(rk);
	assert_int_equal(outcome, HSM_KS_REKEY_DONE);
	assert_int_equal(counts.versions, 4);
	assert_int_equal(counts.access_keys, 1);
	/* The keystore serves on with the new keys. */
	assert_secrets_work(t);
	hsm_keystore_identity(t->ks, &now_id);
	assert_memory_equal(now_id.set_id, new_id.set_id, sizeof(new_id.set_id));
	assert_int_equal(now_id.threshold, 2);
	assert_int_equal(now_id.count, 3);

	wrapped_of(t, KEY_AES, 1, &after);
	assert_false(before.len == after.len && memcmp(before.data, after.data, after.len) == 0);

	/* After a restart the old shares are refused, by name, and two new ones unseal. */
	hsm_keystore_free(t->ks);
	EXPECT_OK(hsm_keystore_new(t->f.s, 0, &t->ks));
	hsm_unseal_progress p;
	EXPECT_ERR(hsm_keystore_unseal(t->ks, t->old[0].data, t->old[0].len, &p),
	           HSM_ERR_SHARE_MISMATCH);
	/* The new split binds its custodians' names: yara's share relabelled as zoe's is refused. */
	hsm_share sh;
	hsm_buf relabelled;
	memset(&sh, 0, sizeof(sh));
	EXPECT_OK(hsm_share_decode(t->fresh[1].data, t->fresh[1].len, &sh));
	snprintf(sh.custodian, sizeof(sh.custodian), "zoe");
	hsm_buf_init_secure(&relabelled);
	EXPECT_OK(hsm_share_encode(&sh, &relabelled));
	hsm_share_clear(&sh);
	EXPECT_ERR(hsm_keystore_unseal(t->ks, relabelled.data, relabelled.len, &p),
	           HSM_ERR_SHARE_INVALID);
	hsm_buf_free(&relabelled);
	EXPECT_OK(restart_with(t, t->fresh + 1, 2));
	assert_secrets_work(t);
	EXPECT_OK(hsm_ks_audit_public_pem(t->ks, &pem_after));
	assert_int_equal(pem_before.len, pem_after.len);
	assert_memory_equal(pem_before.data, pem_after.data, pem_after.len);
	hsm_buf_free(&before);
	hsm_buf_free(&after);
	hsm_buf_free(&pem_before);
	hsm_buf_free(&pem_after);
}

/* A running node (sealed since) learns the new identity at its next unseal. */
static void test_sealed_node_reads_the_new_identity(void **state)
{
	rk_fixture *t = *state;
	hsm_keystore *node = NULL;
	EXPECT_OK(hsm_keystore_new(t->f.s, 0, &node)); /* started before the rekey: sealed */
	hsm_ks_rekey *rk = NULL;
	hsm_ks_rekey_outcome outcome;
	EXPECT_OK(hsm_ks_rekey_prepare(t->ks, 2, 3, NULL, t->fresh, &rk));
	EXPECT_OK(hsm_ks_rekey_commit(t->ks, rk, NULL, &outcome));
	hsm_ks_rekey_free(rk);
	hsm_unseal_progress p;
	EXPECT_ERR(hsm_keystore_unseal(node, t->old[0].data, t->old[0].len, &p),
	           HSM_ERR_SHARE_MISMATCH);
	EXPECT_OK(hsm_keystore_unseal(node, t->fresh[0].data, t->fresh[0].len, &p));
	EXPECT_OK(hsm_keystore_unseal(node, t->fresh[2].data, t->fresh[2].len, &p));
	assert_true(p.unsealed);
	hsm_keystore_free(node);
}

/* A failure inside the transaction (the last row written) leaves everything on the old key. */
static void test_failed_rekey_changes_nothing(void **state)
{
	rk_fixture *t = *state;
	hsm_buf before = {0}, after = {0};
	wrapped_of(t, KEY_AES, 2, &before);
	hsm_keystore_free(t->ks);
	t->ks = NULL;
	st_poison_on(&t->f, "UPDATE", "access_keys", "1 = 1");
	EXPECT_OK(restart_with(t, t->old + 2, 3));
	hsm_ks_rekey *rk = NULL;
	hsm_ks_rekey_outcome outcome;
	EXPECT_OK(hsm_ks_rekey_prepare(t->ks, 2, 3, NULL, t->fresh, &rk));
	hsm_result r = hsm_ks_rekey_commit(t->ks, rk, NULL, &outcome);
	assert_true(hsm_failed(r));
	assert_int_equal(outcome, HSM_KS_REKEY_UNCHANGED);
	hsm_ks_rekey_free(rk);
	assert_secrets_work(t); /* still serving on the old keys */
	wrapped_of(t, KEY_AES, 2, &after);
	assert_int_equal(before.len, after.len);
	assert_memory_equal(before.data, after.data, after.len);
	/* Restarted: the new shares are refused, the old ones open everything. */
	hsm_keystore_free(t->ks);
	EXPECT_OK(hsm_keystore_new(t->f.s, 0, &t->ks));
	hsm_unseal_progress p;
	EXPECT_ERR(hsm_keystore_unseal(t->ks, t->fresh[0].data, t->fresh[0].len, &p),
	           HSM_ERR_SHARE_MISMATCH);
	EXPECT_OK(restart_with(t, t->old, 3));
	assert_secrets_work(t);
	hsm_buf_free(&before);
	hsm_buf_free(&after);
}

/* Two rekeys prepared on one master key: the second to commit finds it replaced. */
static void test_second_rekey_of_the_same_key_conflicts(void **state)
{
	rk_fixture *t = *state;
	hsm_buf other[3];
	memset(other, 0, sizeof(other));
	hsm_ks_rekey *a = NULL, *b = NULL;
	hsm_ks_rekey_outcome outcome;
	hsm_keystore *second = NULL;
	EXPECT_OK(hsm_keystore_new(t->f.s, 0, &second));
	hsm_unseal_progress p;
	for (int i = 0; i < 3; i++)
		EXPECT_OK(hsm_keystore_unseal(second, t->old[i].data, t->old[i].len, &p));
	EXPECT_OK(hsm_ks_rekey_prepare(t->ks, 2, 3, NULL, t->fresh, &a));
	EXPECT_OK(hsm_ks_rekey_prepare(second, 2, 3, NULL, other, &b));
	EXPECT_OK(hsm_ks_rekey_commit(t->ks, a, NULL, &outcome));
	EXPECT_ERR(hsm_ks_rekey_commit(second, b, NULL, &outcome), HSM_ERR_CONFLICT);
	assert_int_equal(outcome, HSM_KS_REKEY_UNCHANGED); /* b did not land: a's key stands */
	hsm_ks_rekey_free(a);
	hsm_ks_rekey_free(b);
	hsm_keystore_free(second);
	for (int i = 0; i < 3; i++)
		hsm_buf_free(&other[i]);
	EXPECT_OK(restart_with(t, t->fresh, 2));
	assert_secrets_work(t);
}

static void test_rekey_needs_the_master_key_and_a_quorum(void **state)
{
	rk_fixture *t = *state;
	hsm_ks_rekey *rk = NULL;
	EXPECT_ERR(hsm_ks_rekey_prepare(t->ks, 1, 3, NULL, t->fresh, &rk), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_ks_rekey_prepare(t->ks, 4, 3, NULL, t->fresh, &rk), HSM_ERR_VALIDATION);
	hsm_keystore_seal(t->ks);
	EXPECT_ERR(hsm_ks_rekey_prepare(t->ks, 2, 3, NULL, t->fresh, &rk), HSM_ERR_SEALED);
	assert_null(rk);
}

typedef struct commit_run {
	rk_fixture *t;
	hsm_ks_rekey *rk;
	hsm_result r;
	hsm_ks_rekey_outcome outcome;
} commit_run;

static void *commit_thread(void *arg)
{
	commit_run *c = arg;
	c->r = hsm_ks_rekey_commit(c->t->ks, c->rk, NULL, &c->outcome);
	return NULL;
}

/*
 * PostgreSQL: a node that connects while a rekey runs, after its check for
 * other hsmd sessions, waits for the rekey to end before it reads the key
 * check value and share set, so the old shares no longer unseal it: it
 * cannot hold the old master key and wrap under it after the commit.
 */
static void test_a_node_unsealing_during_a_rekey_waits_for_it(void **state)
{
	rk_fixture *t = *state;
	if (!st_is_pg())
		skip(); /* SQLite: the directory lock keeps a second process out (store_test) */
	/* The rekey pauses 2 s at the first row it re-wraps, inside its transaction. */
	hsm_keystore_free(t->ks);
	t->ks = NULL;
	hsm_store_close(t->f.s);
	t->f.s = NULL;
	assert_int_equal(
	    st_pg_exec(t->f.db,
	               "CREATE TABLE napped (x int);"
	               "CREATE FUNCTION nap() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
	               "IF NOT EXISTS (SELECT 1 FROM napped) THEN INSERT INTO napped VALUES (1); "
	               "PERFORM pg_sleep(2); END IF; RETURN NEW; END$$;"
	               "CREATE TRIGGER nap BEFORE UPDATE ON key_versions FOR EACH ROW "
	               "EXECUTE FUNCTION nap()"),
	    0);
	EXPECT_OK(hsm_store_open(t->f.loc, &t->f.s));
	EXPECT_OK(restart_with(t, t->old, 3));
	commit_run c = {.t = t};
	EXPECT_OK(hsm_ks_rekey_prepare(t->ks, 2, 3, NULL, t->fresh, &c.rk));
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, commit_thread, &c), 0);
	int i = 0;
	while (i++ < 1000 && st_pg_int(t->f.db, "SELECT count(*) FROM pg_stat_activity "
	                                        "WHERE wait_event = 'PgSleep'") != 1)
		usleep(10 * 1000);
	assert_true(i < 1000); /* the rekey is inside its transaction, past its check */
	/* A node starts and unseals with the old shares. */
	hsm_store *node = NULL;
	hsm_keystore *nks = NULL;
	EXPECT_OK(hsm_store_open(t->f.loc, &node));
	EXPECT_OK(hsm_keystore_new(node, 0, &nks));
	hsm_unseal_progress p;
	hsm_result r = HSM_SUCCESS;
	for (int s = 0; s < 3 && hsm_ok(r); s++)
		r = hsm_keystore_unseal(nks, t->old[s].data, t->old[s].len, &p);
	assert_int_equal(pthread_join(th, NULL), 0);
	EXPECT_OK(c.r);
	assert_int_equal(c.outcome, HSM_KS_REKEY_DONE);
	assert_true(hsm_failed(r));
	assert_int_equal(r.err, HSM_ERR_SHARE_MISMATCH);
	hsm_keystore_free(nks);
	hsm_store_close(node);
	hsm_ks_rekey_free(c.rk);
	EXPECT_OK(restart_with(t, t->fresh, 2));
	assert_secrets_work(t);
}

/* PostgreSQL: another hsmd session on the database (a running node) stops the rekey. */
static void test_rekey_refused_beside_another_node(void **state)
{
	rk_fixture *t = *state;
	if (!st_is_pg())
		skip(); /* SQLite: the directory lock keeps a second process out (store_test) */
	hsm_store *node = NULL;
	EXPECT_OK(hsm_store_open(t->f.loc, &node));
	hsm_buf probe = {0};
	EXPECT_OK(hsm_store_meta_get(node, "store_id", &probe)); /* leaves a pooled session */
	hsm_buf_free(&probe);
	hsm_ks_rekey *rk = NULL;
	hsm_ks_rekey_outcome outcome;
	EXPECT_OK(hsm_ks_rekey_prepare(t->ks, 2, 3, NULL, t->fresh, &rk));
	EXPECT_ERR(hsm_ks_rekey_commit(t->ks, rk, NULL, &outcome), HSM_ERR_CONFLICT);
	assert_int_equal(outcome, HSM_KS_REKEY_UNCHANGED);
	assert_non_null(strstr(hsm_last_message(), "other hsmd session"));
	hsm_store_close(node);
	/*
	 * The server ends a closed session's backend a moment after the client
	 * hangs up: until pg_stat_activity drops it, the rekey is refused the same
	 * way (and changes nothing), so it is tried again for up to five seconds.
	 */
	hsm_result r = hsm_ks_rekey_commit(t->ks, rk, NULL, &outcome);
	for (int i = 0; i < 100 && r.err == HSM_ERR_CONFLICT; i++) {
		assert_int_equal(outcome, HSM_KS_REKEY_UNCHANGED);
		usleep(50000);
		r = hsm_ks_rekey_commit(t->ks, rk, NULL, &outcome);
	}
	EXPECT_OK(r);
	hsm_ks_rekey_free(rk);
	EXPECT_OK(restart_with(t, t->fresh, 2));
	assert_secrets_work(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_rekey_rewraps_every_secret, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rekey_crosses_pages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sealed_node_reads_the_new_identity, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_rekey_changes_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_second_rekey_of_the_same_key_conflicts, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_rekey_needs_the_master_key_and_a_quorum, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_a_node_unsealing_during_a_rekey_waits_for_it, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_rekey_refused_beside_another_node, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
