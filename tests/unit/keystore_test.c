/*
 * keystore_test.c - master key ceremony, unseal quorum, wrapping integrity,
 * seal, the self-test error state, and key agreement at the key boundary.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/encoding.h"
#include "crypto/blob.h"
#include "crypto/crypto.h"
#include "keystore/keystore.h"
#include "keystore/share.h"

typedef struct fixture {
	char dir[64];
	hsm_store *store;
	hsm_keystore *ks;
	hsm_buf shares[5];
} fixture;

static void rm_rf(const char *dir)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/hsm-ks-test-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	if (hsm_failed(hsm_store_open(f->dir, &f->store)) ||
	    hsm_failed(hsm_keystore_new(f->store, 0, &f->ks)))
		return -1;
	if (hsm_keystore_state(f->ks) != HSM_NODE_UNINITIALIZED)
		return -1;
	if (hsm_failed(hsm_keystore_init(f->ks, 3, 5, NULL, false, f->shares)))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	for (int i = 0; i < 5; i++)
		hsm_buf_free(&f->shares[i]);
	hsm_keystore_free(f->ks);
	hsm_store_close(f->store);
	rm_rf(f->dir);
	free(f);
	return 0;
}

static hsm_result unseal_with(fixture *f, int idx, hsm_unseal_progress *p)
{
	return hsm_keystore_unseal(f->ks, f->shares[idx].data, f->shares[idx].len, p);
}

static void test_init_leaves_unsealed_and_refuses_second_init(void **state)
{
	fixture *f = *state;
	hsm_buf more[5];
	memset(more, 0, sizeof(more));
	assert_int_equal(hsm_keystore_state(f->ks), HSM_NODE_UNSEALED);
	assert_int_equal(hsm_keystore_init(f->ks, 3, 5, NULL, false, more).err, HSM_ERR_CONFLICT);
	/* No share value reaches a share buffer twice: each differs. */
	for (int i = 0; i < 5; i++)
		for (int j = i + 1; j < 5; j++)
			assert_false(f->shares[i].len == f->shares[j].len &&
			             memcmp(f->shares[i].data, f->shares[j].data, f->shares[i].len) == 0);
}

static void test_quorum_params(void **state)
{
	(void)state;
	char dir[] = "/tmp/hsm-ks-params-XXXXXX";
	assert_non_null(mkdtemp(dir));
	hsm_store *st;
	hsm_keystore *ks;
	hsm_buf sh[16];
	memset(sh, 0, sizeof(sh));
	assert_true(hsm_ok(hsm_store_open(dir, &st)));
	assert_true(hsm_ok(hsm_keystore_new(st, 0, &ks)));
	assert_int_equal(hsm_keystore_init(ks, 1, 1, NULL, false, sh).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_keystore_init(ks, 1, 5, NULL, false, sh).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_keystore_init(ks, 6, 5, NULL, false, sh).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_keystore_init(ks, 2, 17, NULL, false, sh).err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_keystore_state(ks), HSM_NODE_UNINITIALIZED);
	assert_true(hsm_ok(hsm_keystore_init(ks, 1, 1, NULL, true, sh)));
	hsm_buf_free(&sh[0]);
	hsm_keystore_free(ks);
	hsm_store_close(st);
	rm_rf(dir);
}

/* Every 3-subset of 5 shares unseals; every 2-subset leaves the node sealed. */
static void test_all_subsets(void **state)
{
	fixture *f = *state;
	int unsealed = 0, stayed_sealed = 0;
	for (int a = 0; a < 5; a++)
		for (int b = a + 1; b < 5; b++) {
			hsm_unseal_progress p;
			hsm_keystore_seal(f->ks);
			assert_true(hsm_ok(unseal_with(f, a, &p)));
			assert_true(hsm_ok(unseal_with(f, b, &p)));
			assert_false(p.unsealed);
			assert_int_equal(p.have, 2);
			assert_int_equal(p.threshold, 3);
			assert_int_equal(hsm_keystore_state(f->ks), HSM_NODE_SEALED);
			stayed_sealed++;
			for (int c = b + 1; c < 5; c++) {
				hsm_keystore_seal(f->ks);
				assert_true(hsm_ok(unseal_with(f, a, &p)));
				assert_true(hsm_ok(unseal_with(f, b, &p)));
				assert_true(hsm_ok(unseal_with(f, c, &p)));
				assert_true(p.unsealed);
				assert_int_equal(hsm_keystore_state(f->ks), HSM_NODE_UNSEALED);
				unsealed++;
			}
		}
	assert_int_equal(unsealed, 10);
	assert_int_equal(stayed_sealed, 10);
}

static void test_bad_shares_named(void **state)
{
	fixture *f = *state;
	hsm_unseal_progress p;
	hsm_keystore_seal(f->ks);
	assert_true(hsm_ok(unseal_with(f, 0, &p)));
	assert_int_equal(unseal_with(f, 0, &p).err, HSM_ERR_SHARE_DUPLICATE);
	assert_int_equal(p.have, 1);
	/* A corrupted share is refused by name and does not count. */
	hsm_buf bad = {0};
	assert_true(hsm_ok(hsm_buf_put(&bad, f->shares[1].data, f->shares[1].len)));
	bad.data[bad.len / 2] ^= 0x01;
	assert_int_equal(hsm_keystore_unseal(f->ks, bad.data, bad.len, &p).err, HSM_ERR_SHARE_INVALID);
	assert_int_equal(p.have, 1);
	hsm_buf_free(&bad);
	/* A share of another store is refused as a mismatch. */
	char dir[] = "/tmp/hsm-ks-other-XXXXXX";
	assert_non_null(mkdtemp(dir));
	hsm_store *st;
	hsm_keystore *other;
	hsm_buf sh[3];
	memset(sh, 0, sizeof(sh));
	assert_true(hsm_ok(hsm_store_open(dir, &st)));
	assert_true(hsm_ok(hsm_keystore_new(st, 0, &other)));
	assert_true(hsm_ok(hsm_keystore_init(other, 2, 3, NULL, false, sh)));
	assert_int_equal(hsm_keystore_unseal(f->ks, sh[0].data, sh[0].len, &p).err,
	                 HSM_ERR_SHARE_MISMATCH);
	assert_int_equal(p.have, 1);
	for (int i = 0; i < 3; i++)
		hsm_buf_free(&sh[i]);
	hsm_keystore_free(other);
	hsm_store_close(st);
	rm_rf(dir);
	hsm_keystore_unseal_reset(f->ks);
}

/* Share idx of f re-encoded with another index and/or a random value: a well-formed file
 * with a right checksum, as anyone knowing the store's public identity can write. */
static void forge(fixture *f, int idx, unsigned index, bool new_value, hsm_buf *out)
{
	hsm_share sh;
	memset(&sh, 0, sizeof(sh));
	assert_true(hsm_ok(hsm_share_decode(f->shares[idx].data, f->shares[idx].len, &sh)));
	sh.index = index;
	if (new_value) {
		hsm_secret_free(sh.value);
		assert_true(hsm_ok(hsm_secret_random(HSM_SHARE_VALUE_LEN, &sh.value)));
	}
	hsm_buf_init_secure(out);
	assert_true(hsm_ok(hsm_share_encode(&sh, out)));
	hsm_share_clear(&sh);
}

/*
 * A share that parses and carries a right checksum but was never issued (a
 * forged value, or a real share's index rewritten) is refused on its own by
 * the split's commitment, and spoils nothing: the shares given before it
 * stay, the real share of that index is still taken, and the quorum opens.
 */
static void test_forged_shares_refused_alone(void **state)
{
	fixture *f = *state;
	hsm_unseal_progress p;
	hsm_buf forged;
	hsm_keystore_seal(f->ks);
	assert_true(hsm_ok(unseal_with(f, 0, &p)));
	forge(f, 0, 2, true, &forged); /* a made-up share 2 */
	hsm_result r = hsm_keystore_unseal(f->ks, forged.data, forged.len, &p);
	assert_int_equal(r.err, HSM_ERR_SHARE_INVALID);
	assert_non_null(strstr(hsm_last_message(), "not the share this store issued"));
	assert_int_equal(p.have, 1);
	hsm_buf_free(&forged);
	forge(f, 4, 3, false, &forged); /* share 5's value, claimed as share 3 */
	assert_int_equal(hsm_keystore_unseal(f->ks, forged.data, forged.len, &p).err,
	                 HSM_ERR_SHARE_INVALID);
	assert_int_equal(p.have, 1);
	hsm_buf_free(&forged);
	assert_true(hsm_ok(unseal_with(f, 1, &p)));
	assert_true(hsm_ok(unseal_with(f, 2, &p)));
	assert_true(p.unsealed);
	assert_int_equal(hsm_keystore_state(f->ks), HSM_NODE_UNSEALED);
}

static const char *const CUSTODIANS[5] = {"alice", "bob", "carol", "dave", "erin"};

/* As setup, with the five shares named after CUSTODIANS. */
static int setup_named(void **state)
{
	fixture *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/hsm-ks-test-XXXXXX");
	if (mkdtemp(f->dir) == NULL || hsm_failed(hsm_store_open(f->dir, &f->store)) ||
	    hsm_failed(hsm_keystore_new(f->store, 0, &f->ks)) ||
	    hsm_failed(hsm_keystore_init(f->ks, 3, 5, CUSTODIANS, false, f->shares)))
		return -1;
	*state = f;
	return 0;
}

/* Share idx of f as its custodian could rewrite it: another name, a right checksum. */
static void relabel(fixture *f, int idx, const char *name, hsm_buf *out)
{
	hsm_share sh;
	memset(&sh, 0, sizeof(sh));
	assert_true(hsm_ok(hsm_share_decode(f->shares[idx].data, f->shares[idx].len, &sh)));
	snprintf(sh.custodian, sizeof(sh.custodian), "%s", name);
	hsm_buf_init_secure(out);
	assert_true(hsm_ok(hsm_share_encode(&sh, out)));
	hsm_share_clear(&sh);
}

/*
 * A new split commits to each share's custodian name, so bob's share
 * relabelled as carol's (or as nobody's) is refused when given, by unseal and
 * by the check of a share beyond the quorum, as an altered share is: an
 * unseal's record can never name a custodian who did not give a share.
 */
static void test_relabelled_share_refused(void **state)
{
	fixture *f = *state;
	hsm_unseal_progress p;
	hsm_buf meta = {0}, bad;
	assert_true(hsm_ok(hsm_store_meta_get(f->store, "share_commits", &meta)));
	assert_true(meta.len > 3 && strncmp((const char *)meta.data, "v2:", 3) == 0);
	hsm_buf_free(&meta);
	hsm_keystore_seal(f->ks);
	assert_true(hsm_ok(unseal_with(f, 0, &p)));
	const char *names[] = {"carol", "", "alice"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		relabel(f, 1, names[i], &bad);
		assert_int_equal(hsm_keystore_unseal(f->ks, bad.data, bad.len, &p).err,
		                 HSM_ERR_SHARE_INVALID);
		assert_string_equal(hsm_last_message(),
		                    "share 2 is not the share this store issued as share 2 (altered, "
		                    "forged, or carrying a custodian name it was not issued to): "
		                    "refused; the shares given so far are kept");
		assert_int_equal(p.have, 1);
		hsm_buf_free(&bad);
	}
	assert_true(hsm_ok(unseal_with(f, 1, &p)));
	assert_true(hsm_ok(unseal_with(f, 2, &p)));
	assert_true(p.unsealed);
	/* Beyond the quorum: dave's share as erin's is refused; dave's own passes. */
	relabel(f, 3, "erin", &bad);
	assert_int_equal(hsm_keystore_check_share(f->ks, bad.data, bad.len, &p).err,
	                 HSM_ERR_SHARE_INVALID);
	hsm_buf_free(&bad);
	assert_true(hsm_ok(hsm_keystore_check_share(f->ks, f->shares[3].data, f->shares[3].len, &p)));
}

/*
 * A store whose commitments an earlier hsmd made (version 1: bare hex, no
 * name in them) is checked the old way: a relabelled share unseals as before,
 * and an altered value is still refused.
 */
static void test_old_commitments_checked_the_old_way(void **state)
{
	fixture *f = *state;
	hsm_unseal_progress p;
	hsm_buf old = {0}, bad;
	for (int i = 0; i < 5; i++) {
		hsm_share sh;
		uint8_t c[HSM_SHARE_COMMIT_LEN];
		memset(&sh, 0, sizeof(sh));
		assert_true(hsm_ok(hsm_share_decode(f->shares[i].data, f->shares[i].len, &sh)));
		assert_true(hsm_ok(hsm_share_commitment(&sh, HSM_SHARE_COMMIT_V1, c)));
		assert_true(hsm_ok(hsm_hex_encode(&old, c, sizeof(c))));
		hsm_share_clear(&sh);
	}
	/* Metadata is written once through the store: an earlier hsmd's value goes in by hand. */
	char path[128];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	snprintf(path, sizeof(path), "%s/hsmd.db", f->dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "UPDATE meta SET value = ? WHERE name = "
	                                        "'share_commits'",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_bind_blob(st, 1, old.data, (int)old.len, SQLITE_STATIC), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_DONE);
	assert_int_equal(sqlite3_changes(db), 1);
	sqlite3_finalize(st);
	sqlite3_close(db);
	hsm_buf_free(&old);
	hsm_keystore_seal(f->ks); /* the next unseal reads the store's commitments */
	forge(f, 0, 1, true, &bad);
	assert_int_equal(hsm_keystore_unseal(f->ks, bad.data, bad.len, &p).err,
	                 HSM_ERR_SHARE_INVALID);
	assert_non_null(strstr(hsm_last_message(), "(altered or forged)"));
	hsm_buf_free(&bad);
	relabel(f, 0, "bob", &bad);
	assert_true(hsm_ok(hsm_keystore_unseal(f->ks, bad.data, bad.len, &p)));
	assert_non_null(strstr(p.share, "share 1 of 5, custodian bob, sha256:"));
	hsm_buf_free(&bad);
	assert_true(hsm_ok(unseal_with(f, 1, &p)));
	assert_true(hsm_ok(unseal_with(f, 2, &p)));
	assert_true(p.unsealed);
	relabel(f, 3, "erin", &bad);
	assert_true(hsm_ok(hsm_keystore_check_share(f->ks, bad.data, bad.len, &p)));
	hsm_buf_free(&bad);
}

/*
 * A detached keystore (a backup's: no commitments) checks each share given
 * beyond its quorum against the split the quorum rebuilt: a forged share is
 * refused, a real one passes, and sealing forgets the quorum.
 */
static void test_detached_checks_extra_shares(void **state)
{
	fixture *f = *state;
	hsm_ks_identity id;
	hsm_keystore *d = NULL;
	hsm_unseal_progress p;
	hsm_buf bad;
	hsm_keystore_identity(f->ks, &id);
	assert_true(hsm_ok(hsm_keystore_new_detached(&id, &d)));
	for (int i = 0; i < 3; i++)
		assert_true(hsm_ok(hsm_keystore_unseal(d, f->shares[i].data, f->shares[i].len, &p)));
	assert_true(p.unsealed);
	forge(f, 3, 4, true, &bad); /* a made-up share 4 */
	assert_int_equal(hsm_keystore_check_share(d, bad.data, bad.len, &p).err,
	                 HSM_ERR_SHARE_INVALID);
	assert_string_equal(hsm_last_message(), "share 4 is not a share of the split the others "
	                                        "rebuild (altered or forged): refused");
	hsm_buf_free(&bad);
	forge(f, 4, 4, false, &bad); /* share 5's value, claimed as share 4 */
	assert_int_equal(hsm_keystore_check_share(d, bad.data, bad.len, &p).err,
	                 HSM_ERR_SHARE_INVALID);
	hsm_buf_free(&bad);
	for (int i = 3; i < 5; i++)
		assert_true(hsm_ok(hsm_keystore_check_share(d, f->shares[i].data, f->shares[i].len, &p)));
	hsm_keystore_free(d);
}

/*
 * A store made before commitments existed (no share_commits) has none to
 * check a share given beyond the quorum against: it is checked against the
 * split the quorum rebuilt, as a detached keystore checks it.
 */
static void test_store_without_commitments_checks_extra_shares(void **state)
{
	fixture *f = *state;
	hsm_unseal_progress p;
	hsm_buf bad;
	char path[128];
	sqlite3 *db = NULL;
	snprintf(path, sizeof(path), "%s/hsmd.db", f->dir);
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "DELETE FROM meta WHERE name = 'share_commits'", NULL,
	                              NULL, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_changes(db), 1);
	sqlite3_close(db);
	hsm_keystore_seal(f->ks); /* the next unseal reads the store's (absent) commitments */
	/* A keystore not asked to keep its quorum (a running node's) keeps no share, and so
	 * cannot check one past the quorum: refused, never passed unchecked. */
	for (int i = 0; i < 3; i++)
		assert_true(hsm_ok(unseal_with(f, i, &p)));
	assert_true(p.unsealed);
	assert_int_equal(
	    hsm_keystore_check_share(f->ks, f->shares[3].data, f->shares[3].len, &p).err,
	    HSM_ERR_INTERNAL);
	hsm_keystore_seal(f->ks);
	hsm_keystore_keep_quorum(f->ks);
	for (int i = 0; i < 3; i++)
		assert_true(hsm_ok(unseal_with(f, i, &p)));
	assert_true(p.unsealed);
	forge(f, 3, 4, true, &bad); /* a made-up share 4 */
	assert_int_equal(hsm_keystore_check_share(f->ks, bad.data, bad.len, &p).err,
	                 HSM_ERR_SHARE_INVALID);
	assert_string_equal(hsm_last_message(), "share 4 is not a share of the split the others "
	                                        "rebuild (altered or forged): refused");
	hsm_buf_free(&bad);
	forge(f, 4, 4, false, &bad); /* share 5's value, claimed as share 4 */
	assert_int_equal(hsm_keystore_check_share(f->ks, bad.data, bad.len, &p).err,
	                 HSM_ERR_SHARE_INVALID);
	hsm_buf_free(&bad);
	for (int i = 3; i < 5; i++)
		assert_true(hsm_ok(hsm_keystore_check_share(f->ks, f->shares[i].data, f->shares[i].len,
		                                            &p)));
	/* Sealed and unsealed again by another quorum: its shares are the ones checked. */
	hsm_keystore_seal(f->ks);
	for (int i = 2; i < 5; i++)
		assert_true(hsm_ok(unseal_with(f, i, &p)));
	assert_true(p.unsealed);
	forge(f, 0, 1, true, &bad);
	assert_int_equal(hsm_keystore_check_share(f->ks, bad.data, bad.len, &p).err,
	                 HSM_ERR_SHARE_INVALID);
	hsm_buf_free(&bad);
	for (int i = 0; i < 2; i++)
		assert_true(hsm_ok(hsm_keystore_check_share(f->ks, f->shares[i].data, f->shares[i].len,
		                                            &p)));
}

static void assert_repeat_refused(hsm_keystore *ks, const hsm_buf *share, const char *msg)
{
	hsm_unseal_progress p;
	assert_int_equal(hsm_keystore_check_share(ks, share->data, share->len, &p).err,
	                 HSM_ERR_SHARE_DUPLICATE);
	assert_string_equal(hsm_last_message(), msg);
	assert_true(p.unsealed); /* refused, and nothing else changed */
}

/*
 * A share given past the quorum that was already given (in the quorum, or
 * as an earlier extra) is refused as a repeat within the quorum is: each
 * extra is checked alone, so only the indexes given since the unseal began
 * can tell it.  Sealing forgets them, and so does a keystore of a backup.
 */
static void test_repeated_extra_shares_refused(void **state)
{
	fixture *f = *state;
	hsm_unseal_progress p;
	hsm_keystore_seal(f->ks);
	for (int i = 0; i < 3; i++)
		assert_true(hsm_ok(unseal_with(f, i, &p)));
	assert_true(p.unsealed);
	assert_repeat_refused(f->ks, &f->shares[2], "share 3 was already provided");
	assert_repeat_refused(f->ks, &f->shares[0], "share 1 was already provided");
	assert_true(hsm_ok(hsm_keystore_check_share(f->ks, f->shares[3].data, f->shares[3].len, &p)));
	assert_repeat_refused(f->ks, &f->shares[3], "share 4 was already provided");
	assert_true(hsm_ok(hsm_keystore_check_share(f->ks, f->shares[4].data, f->shares[4].len, &p)));
	/* Sealed and unsealed by another quorum: the first one's shares are extras again. */
	hsm_keystore_seal(f->ks);
	for (int i = 2; i < 5; i++)
		assert_true(hsm_ok(unseal_with(f, i, &p)));
	assert_true(p.unsealed);
	assert_repeat_refused(f->ks, &f->shares[4], "share 5 was already provided");
	assert_true(hsm_ok(hsm_keystore_check_share(f->ks, f->shares[0].data, f->shares[0].len, &p)));
	assert_repeat_refused(f->ks, &f->shares[0], "share 1 was already provided");
	/* A detached keystore (a backup's) checks against its kept quorum: the same rule. */
	hsm_ks_identity id;
	hsm_keystore *d = NULL;
	hsm_keystore_identity(f->ks, &id);
	assert_true(hsm_ok(hsm_keystore_new_detached(&id, &d)));
	for (int i = 0; i < 3; i++)
		assert_true(hsm_ok(hsm_keystore_unseal(d, f->shares[i].data, f->shares[i].len, &p)));
	assert_repeat_refused(d, &f->shares[1], "share 2 was already provided");
	assert_true(hsm_ok(hsm_keystore_check_share(d, f->shares[4].data, f->shares[4].len, &p)));
	assert_repeat_refused(d, &f->shares[4], "share 5 was already provided");
	hsm_keystore_free(d);
}

/* An unseal left unfinished past its time is abandoned: its shares no longer count. */
static void test_unfinished_unseal_expires(void **state)
{
	fixture *f = *state;
	hsm_unseal_progress p;
	hsm_keystore_seal(f->ks);
	/* Long enough that a loaded machine's preemption between two shares does not reach it. */
	hsm_keystore_set_unseal_ttl_ms(f->ks, 1500);
	assert_true(hsm_ok(unseal_with(f, 0, &p)));
	assert_true(hsm_ok(unseal_with(f, 1, &p)));
	assert_int_equal(p.have, 2);
	usleep(2000 * 1000);
	hsm_keystore_unseal_status(f->ks, &p);
	assert_int_equal(p.have, 0);
	/* Share 1 again starts afresh (not a duplicate), and the quorum needs three again. */
	assert_true(hsm_ok(unseal_with(f, 0, &p)));
	assert_int_equal(p.have, 1);
	assert_true(hsm_ok(unseal_with(f, 2, &p)));
	assert_false(p.unsealed);
	assert_true(hsm_ok(unseal_with(f, 3, &p)));
	assert_true(p.unsealed);
}

static hsm_ks_keyref ref_of(const char *id, uint32_t v, hsm_key_spec spec, hsm_key_usage u)
{
	hsm_ks_keyref r = {id, v, spec, u};
	return r;
}

/* Stores a key whose version rows are given, as a row editor would. */
static void put_key(fixture *f, const char *id, hsm_key_spec spec, hsm_key_usage usage,
                    const hsm_buf *wrapped, uint32_t version)
{
	hsm_key_record k;
	hsm_version_record v;
	memset(&k, 0, sizeof(k));
	memset(&v, 0, sizeof(v));
	snprintf(k.key_id, sizeof(k.key_id), "%s", id);
	k.description = "";
	k.policy = "{}";
	k.spec = spec;
	k.usage = usage;
	k.state = HSM_KEY_ENABLED;
	k.created = 1;
	k.primary_version = version;
	snprintf(v.key_id, sizeof(v.key_id), "%s", id);
	v.version = 1;
	v.created = 1;
	v.wrapped = *wrapped;
	if (version == 1) {
		assert_true(hsm_ok(hsm_store_key_create(f->store, &k, &v)));
	} else {
		/* A first version that is genuine, then the edited one as version 2. */
		hsm_buf first = {0};
		hsm_ks_keyref r1 = ref_of(id, 1, spec, usage);
		assert_true(hsm_ok(hsm_ks_generate(f->ks, &r1, &first, NULL)));
		v.wrapped = first;
		k.primary_version = 1;
		assert_true(hsm_ok(hsm_store_key_create(f->store, &k, &v)));
		hsm_buf_free(&first);
	}
}

static hsm_result bump_primary(hsm_key_record *k, void *arg)
{
	(void)arg;
	k->primary_version++;
	return HSM_SUCCESS;
}

static void test_wrapping_binds_identity(void **state)
{
	fixture *f = *state;
	const char *a = "11111111-1111-4111-8111-111111111111";
	const char *b = "22222222-2222-4222-8222-222222222222";
	const char *c = "33333333-3333-4333-8333-333333333333";
	hsm_buf wa = {0}, pub = {0}, ctx = {0}, blob = {0};
	hsm_ks_keyref ra = ref_of(a, 1, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT);
	assert_true(hsm_ok(hsm_ks_generate(f->ks, &ra, &wa, &pub)));
	put_key(f, a, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, &wa, 1);
	assert_true(hsm_ok(hsm_buf_put_u32(&ctx, 0)));
	assert_true(hsm_ok(hsm_ks_encrypt(f->ks, &ra, &ctx, (const uint8_t *)"hello", 5, &blob)));
	/* The same wrapped bytes moved to key b: refused. */
	put_key(f, b, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, &wa, 1);
	hsm_ks_keyref rb = ref_of(b, 1, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT);
	hsm_buf out = {0};
	assert_int_equal(hsm_ks_encrypt(f->ks, &rb, &ctx, (const uint8_t *)"x", 1, &out).err,
	                 HSM_ERR_KEY_UNAVAILABLE);
	/* Metadata edited (spec/usage): refused. */
	hsm_ks_keyref edited = ref_of(a, 1, HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC);
	assert_int_equal(hsm_ks_mac(f->ks, &edited, HSM_MAC_HMAC_SHA_256, (const uint8_t *)"x", 1, &out)
	                     .err,
	                 HSM_ERR_KEY_UNAVAILABLE);
	/* A version's bytes replayed as another version of the same key: refused. */
	put_key(f, c, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, &wa, 2);
	hsm_version_record v1, v2;
	memset(&v1, 0, sizeof(v1));
	memset(&v2, 0, sizeof(v2));
	assert_true(hsm_ok(hsm_store_version_get(f->store, c, 1, &v1)));
	snprintf(v2.key_id, sizeof(v2.key_id), "%s", c);
	v2.version = 2;
	v2.created = 2;
	v2.rotation_type = HSM_ROTATION_ON_DEMAND;
	v2.wrapped = v1.wrapped;
	assert_true(hsm_ok(hsm_store_key_update(f->store, c, bump_primary, NULL, &v2, NULL)));
	hsm_ks_keyref rc1 = ref_of(c, 1, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT);
	hsm_ks_keyref rc2 = ref_of(c, 2, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT);
	assert_true(hsm_ok(hsm_ks_encrypt(f->ks, &rc1, &ctx, (const uint8_t *)"x", 1, &out)));
	assert_int_equal(hsm_ks_encrypt(f->ks, &rc2, &ctx, (const uint8_t *)"x", 1, &out).err,
	                 HSM_ERR_KEY_UNAVAILABLE);
	hsm_version_record_clear(&v1);
	/* A flipped byte of the wrapped material: refused. */
	wa.data[wa.len - 1] ^= 1;
	const char *d = "44444444-4444-4444-8444-444444444444";
	put_key(f, d, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, &wa, 1);
	hsm_ks_keyref rd = ref_of(d, 1, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT);
	assert_int_equal(hsm_ks_encrypt(f->ks, &rd, &ctx, (const uint8_t *)"x", 1, &out).err,
	                 HSM_ERR_KEY_UNAVAILABLE);
	hsm_buf_free(&wa);
	hsm_buf_free(&pub);
	hsm_buf_free(&ctx);
	hsm_buf_free(&blob);
	hsm_buf_free(&out);
}

static void test_seal_stops_crypto_and_reopen_unseals(void **state)
{
	fixture *f = *state;
	const char *id = "55555555-5555-4555-8555-555555555555";
	hsm_buf w = {0}, ctx = {0}, blob = {0}, pt;
	hsm_buf_init_secure(&pt);
	hsm_ks_keyref r = ref_of(id, 1, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT);
	assert_true(hsm_ok(hsm_ks_generate(f->ks, &r, &w, NULL)));
	put_key(f, id, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, &w, 1);
	assert_true(hsm_ok(hsm_buf_put_u32(&ctx, 0)));
	assert_true(hsm_ok(hsm_ks_encrypt(f->ks, &r, &ctx, (const uint8_t *)"secret", 6, &blob)));
	hsm_keystore_seal(f->ks);
	hsm_buf again = {0};
	assert_int_equal(hsm_ks_encrypt(f->ks, &r, &ctx, (const uint8_t *)"x", 1, &again).err,
	                 HSM_ERR_SEALED);
	assert_int_equal(hsm_ks_random(f->ks, 4, &again).err, HSM_ERR_SEALED);
	/* A new keystore over the same store starts sealed and unseals with any 3 shares. */
	hsm_keystore_free(f->ks);
	assert_true(hsm_ok(hsm_keystore_new(f->store, 0, &f->ks)));
	assert_int_equal(hsm_keystore_state(f->ks), HSM_NODE_SEALED);
	hsm_unseal_progress p;
	for (int i = 2; i < 5; i++)
		assert_true(hsm_ok(unseal_with(f, i, &p)));
	assert_true(p.unsealed);
	hsm_blob parsed;
	assert_true(hsm_ok(hsm_blob_parse(blob.data, blob.len, &parsed)));
	assert_true(hsm_ok(hsm_ks_decrypt(f->ks, &r, &parsed, &ctx, &pt)));
	assert_int_equal(pt.len, 6);
	assert_memory_equal(pt.data, "secret", 6);
	hsm_buf_free(&w);
	hsm_buf_free(&ctx);
	hsm_buf_free(&blob);
	hsm_buf_free(&pt);
	hsm_buf_free(&again);
}

/*
 * DeriveSharedSecret at the key boundary: the secret a KEY_AGREEMENT key
 * version gives equals the peer's own ECDH with the version's public key;
 * another usage, a bad peer key and a sealed node give no secret.
 */
static void test_key_agreement(void **state)
{
	fixture *f = *state;
	const char *id = "66666666-6666-4666-8666-666666666666";
	hsm_ks_keyref r = ref_of(id, 1, HSM_SPEC_ECC_NIST_P384, HSM_USAGE_KEY_AGREEMENT);
	hsm_buf w = {0}, pub = {0}, peer_pub = {0}, ours, theirs;
	hsm_material *peer = NULL;
	hsm_buf_init_secure(&ours);
	hsm_buf_init_secure(&theirs);
	assert_true(hsm_ok(hsm_ks_generate(f->ks, &r, &w, &pub)));
	put_key(f, id, HSM_SPEC_ECC_NIST_P384, HSM_USAGE_KEY_AGREEMENT, &w, 1);
	assert_true(hsm_ok(hsm_material_generate(HSM_SPEC_ECC_NIST_P384, &peer)));
	assert_true(hsm_ok(hsm_material_public_der(peer, &peer_pub)));
	assert_true(hsm_ok(hsm_ks_derive_shared_secret(f->ks, &r, peer_pub.data, peer_pub.len,
	                                               &ours)));
	assert_true(hsm_ok(hsm_ecdh_derive(peer, pub.data, pub.len, &theirs)));
	assert_int_equal(ours.len, 48);
	assert_int_equal(theirs.len, 48);
	assert_memory_equal(ours.data, theirs.data, 48);
	/* The same version asked for as a signing key: refused before any unwrapping. */
	hsm_buf none;
	hsm_buf_init_secure(&none);
	hsm_ks_keyref as_sign = ref_of(id, 1, HSM_SPEC_ECC_NIST_P384, HSM_USAGE_SIGN_VERIFY);
	assert_int_equal(
	    hsm_ks_derive_shared_secret(f->ks, &as_sign, peer_pub.data, peer_pub.len, &none).err,
	    HSM_ERR_INVALID_KEY_USAGE);
	/* Bytes that are no public key. */
	assert_int_equal(hsm_ks_derive_shared_secret(f->ks, &r, (const uint8_t *)"junk", 4, &none)
	                     .err,
	                 HSM_ERR_VALIDATION);
	hsm_keystore_seal(f->ks);
	assert_int_equal(
	    hsm_ks_derive_shared_secret(f->ks, &r, peer_pub.data, peer_pub.len, &none).err,
	    HSM_ERR_SEALED);
	assert_int_equal(none.len, 0);
	hsm_material_free(peer);
	hsm_buf_free(&w);
	hsm_buf_free(&pub);
	hsm_buf_free(&peer_pub);
	hsm_buf_free(&ours);
	hsm_buf_free(&theirs);
	hsm_buf_free(&none);
}

static void test_selftest_failure_is_error_state(void **state)
{
	fixture *f = *state;
	setenv("HSM_SELFTEST_FORCE_FAIL", "ecdsa-p256", 1);
	hsm_keystore *bad;
	assert_true(hsm_ok(hsm_keystore_new(f->store, 0, &bad)));
	unsetenv("HSM_SELFTEST_FORCE_FAIL");
	assert_int_equal(hsm_keystore_state(bad), HSM_NODE_ERROR);
	assert_non_null(strstr(hsm_keystore_error_reason(bad), "ecdsa-p256"));
	hsm_unseal_progress p;
	assert_int_equal(hsm_keystore_unseal(bad, f->shares[0].data, f->shares[0].len, &p).err,
	                 HSM_ERR_NODE_ERROR);
	hsm_buf out = {0};
	assert_int_equal(hsm_ks_random(bad, 4, &out).err, HSM_ERR_NODE_ERROR);
	hsm_buf_free(&out);
	hsm_keystore_free(bad);
}

/* ---- Nodes sharing one store ----------------------------------------------------- */

/* A second node (keystore) on the fixture's store, opened before the store was initialized. */
static void test_late_node_sees_initialization(void **state)
{
	(void)state;
	char dir[] = "/tmp/hsm-ks-test-XXXXXX";
	assert_non_null(mkdtemp(dir));
	hsm_store *store = NULL;
	hsm_keystore *a = NULL, *b = NULL;
	hsm_buf shares[5], more[5];
	memset(shares, 0, sizeof(shares));
	memset(more, 0, sizeof(more));
	assert_true(hsm_ok(hsm_store_open(dir, &store)));
	assert_true(hsm_ok(hsm_keystore_new(store, 0, &a)));
	assert_true(hsm_ok(hsm_keystore_new(store, 0, &b)));
	assert_true(hsm_ok(hsm_keystore_init(a, 2, 3, NULL, false, shares)));
	/* b still believes the store uninitialized until it looks again. */
	assert_int_equal(hsm_keystore_state(b), HSM_NODE_UNINITIALIZED);
	hsm_unseal_progress p = {0};
	hsm_keystore_unseal_status(b, &p);
	assert_int_equal(hsm_keystore_state(b), HSM_NODE_SEALED);
	assert_int_equal(p.threshold, 2);
	assert_false(p.unsealed);
	/* Initializing it again from b is refused and leaves a's master key in place. */
	assert_int_equal(hsm_keystore_init(b, 1, 1, NULL, false, more).err, HSM_ERR_CONFLICT);
	assert_null(more[0].data);
	/* a's shares unseal b, and b decrypts what a encrypted. */
	hsm_ks_keyref ref = ref_of("11111111-2222-3333-4444-555555555555", 1,
	                           HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT);
	hsm_buf wrapped = {0}, ctx = {0}, blob = {0}, plain;
	hsm_buf_init_secure(&plain);
	assert_true(hsm_ok(hsm_ks_generate(a, &ref, &wrapped, NULL)));
	hsm_key_record k;
	hsm_version_record v;
	memset(&k, 0, sizeof(k));
	memset(&v, 0, sizeof(v));
	snprintf(k.key_id, sizeof(k.key_id), "%s", ref.key_id);
	k.description = "";
	k.policy = "{}";
	k.spec = ref.spec;
	k.usage = ref.usage;
	k.state = HSM_KEY_ENABLED;
	k.created = 1;
	k.primary_version = 1;
	snprintf(v.key_id, sizeof(v.key_id), "%s", ref.key_id);
	v.version = 1;
	v.created = 1;
	v.wrapped = wrapped;
	assert_true(hsm_ok(hsm_store_key_create(store, &k, &v)));
	assert_true(hsm_ok(hsm_ks_encrypt(a, &ref, &ctx, (const uint8_t *)"shared", 6, &blob)));
	assert_true(hsm_ok(hsm_keystore_unseal(b, shares[2].data, shares[2].len, &p)));
	assert_true(hsm_ok(hsm_keystore_unseal(b, shares[0].data, shares[0].len, &p)));
	assert_true(p.unsealed);
	hsm_blob parsed;
	assert_true(hsm_ok(hsm_blob_parse(blob.data, blob.len, &parsed)));
	assert_true(hsm_ok(hsm_ks_decrypt(b, &ref, &parsed, &ctx, &plain)));
	assert_int_equal(plain.len, 6);
	assert_memory_equal(plain.data, "shared", 6);
	hsm_buf_free(&wrapped);
	hsm_buf_free(&blob);
	hsm_buf_free(&plain);
	for (int i = 0; i < 5; i++)
		hsm_buf_free(&shares[i]);
	hsm_keystore_free(a);
	hsm_keystore_free(b);
	hsm_store_close(store);
	rm_rf(dir);
}

/*
 * Init in two steps (hsmctl init writes the shares between them): the store
 * is not changed until the commit, and a commit that lost to another node's
 * init changes nothing (its shares are of no store).
 */
static void test_init_prepare_changes_nothing_until_commit(void **state)
{
	(void)state;
	char dir[] = "/tmp/hsm-ks-test-XXXXXX";
	assert_non_null(mkdtemp(dir));
	hsm_store *store = NULL;
	hsm_keystore *a = NULL, *b = NULL;
	hsm_ks_init *in = NULL, *lost = NULL;
	hsm_ks_init_outcome outcome = HSM_KS_INIT_UNKNOWN;
	hsm_ks_identity prepared, now;
	hsm_buf shares[5], other[5], pem = {0};
	memset(shares, 0, sizeof(shares));
	memset(other, 0, sizeof(other));
	assert_true(hsm_ok(hsm_store_open(dir, &store)));
	assert_true(hsm_ok(hsm_keystore_new(store, 0, &a)));
	assert_true(hsm_ok(hsm_keystore_new(store, 0, &b)));
	assert_true(hsm_ok(hsm_ks_init_prepare(a, 2, 3, NULL, false, shares, &in)));
	hsm_ks_init_identity(in, &prepared);
	assert_int_equal(strlen(prepared.store_id), HSM_UUID_STRLEN);
	assert_int_equal(prepared.threshold, 2);
	assert_true(hsm_ok(hsm_ks_init_audit_public_pem(in, &pem)));
	assert_non_null(strstr((const char *)pem.data, "BEGIN PUBLIC KEY"));
	/* Prepared, not committed: neither this node nor another sees a store. */
	hsm_unseal_progress p = {0};
	hsm_keystore_unseal_status(b, &p);
	assert_int_equal(hsm_keystore_state(a), HSM_NODE_UNINITIALIZED);
	assert_int_equal(hsm_keystore_state(b), HSM_NODE_UNINITIALIZED);
	assert_string_equal(hsm_keystore_store_id(a), "");
	/* A second ceremony prepared meanwhile loses at its commit, changing nothing. */
	assert_true(hsm_ok(hsm_ks_init_prepare(b, 2, 3, NULL, false, other, &lost)));
	assert_true(hsm_ok(hsm_ks_init_commit(a, in, &outcome)));
	assert_int_equal(outcome, HSM_KS_INIT_DONE);
	assert_int_equal(hsm_keystore_state(a), HSM_NODE_UNSEALED);
	hsm_keystore_identity(a, &now);
	assert_memory_equal(&now, &prepared, sizeof(now));
	assert_int_equal(hsm_ks_init_commit(b, lost, &outcome).err, HSM_ERR_CONFLICT);
	assert_int_equal(outcome, HSM_KS_INIT_UNCHANGED);
	assert_int_equal(hsm_keystore_state(b), HSM_NODE_SEALED);
	assert_string_equal(hsm_keystore_store_id(b), prepared.store_id);
	/* The losing shares open nothing; the prepared ones unseal every node. */
	assert_true(hsm_failed(hsm_keystore_unseal(b, other[0].data, other[0].len, &p)));
	assert_int_equal(p.have, 0);
	assert_true(hsm_ok(hsm_keystore_unseal(b, shares[1].data, shares[1].len, &p)));
	assert_true(hsm_ok(hsm_keystore_unseal(b, shares[2].data, shares[2].len, &p)));
	assert_true(p.unsealed);
	hsm_ks_init_free(in);
	hsm_ks_init_free(lost);
	hsm_buf_free(&pem);
	for (int i = 0; i < 5; i++) {
		hsm_buf_free(&shares[i]);
		hsm_buf_free(&other[i]);
	}
	hsm_keystore_free(a);
	hsm_keystore_free(b);
	hsm_store_close(store);
	rm_rf(dir);
}

typedef struct racer {
	hsm_keystore *ks;
	pthread_barrier_t *start;
	hsm_result r;
	hsm_buf shares[5];
} racer;

static void *race_init(void *arg)
{
	racer *x = arg;
	pthread_barrier_wait(x->start);
	x->r = hsm_keystore_init(x->ks, 3, 5, NULL, false, x->shares);
	return NULL;
}

/* Nodes initializing one store at the same moment: exactly one master key results. */
static void test_concurrent_init_one_wins(void **state)
{
	(void)state;
	for (int round = 0; round < 20; round++) {
		char dir[] = "/tmp/hsm-ks-test-XXXXXX";
		assert_non_null(mkdtemp(dir));
		hsm_store *store = NULL;
		assert_true(hsm_ok(hsm_store_open(dir, &store)));
		racer x[4];
		pthread_t t[4];
		pthread_barrier_t start;
		memset(x, 0, sizeof(x));
		pthread_barrier_init(&start, NULL, 4);
		for (int i = 0; i < 4; i++) {
			assert_true(hsm_ok(hsm_keystore_new(store, 0, &x[i].ks)));
			x[i].start = &start;
			assert_int_equal(pthread_create(&t[i], NULL, race_init, &x[i]), 0);
		}
		int won = -1;
		for (int i = 0; i < 4; i++) {
			pthread_join(t[i], NULL);
			if (hsm_ok(x[i].r)) {
				assert_int_equal(won, -1);
				won = i;
			} else {
				assert_int_equal(x[i].r.err, HSM_ERR_CONFLICT);
				assert_null(x[i].shares[0].data);
				assert_int_equal(hsm_keystore_state(x[i].ks), HSM_NODE_SEALED);
			}
		}
		assert_int_not_equal(won, -1);
		/* The winner's shares unseal every other node. */
		for (int i = 0; i < 4; i++) {
			if (i == won)
				continue;
			hsm_unseal_progress p = {0};
			for (int j = 0; j < 3; j++)
				assert_true(hsm_ok(hsm_keystore_unseal(x[i].ks, x[won].shares[j].data,
				                                       x[won].shares[j].len, &p)));
			assert_true(p.unsealed);
		}
		for (int i = 0; i < 4; i++) {
			for (int j = 0; j < 5; j++)
				hsm_buf_free(&x[i].shares[j]);
			hsm_keystore_free(x[i].ks);
		}
		pthread_barrier_destroy(&start);
		hsm_store_close(store);
		rm_rf(dir);
	}
}

int main(void)
{
	if (hsm_failed(hsm_secure_process_init(1 << 22)))
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_init_leaves_unsealed_and_refuses_second_init, setup,
	                                    teardown),
	    cmocka_unit_test(test_quorum_params),
	    cmocka_unit_test(test_late_node_sees_initialization),
	    cmocka_unit_test(test_concurrent_init_one_wins),
	    cmocka_unit_test(test_init_prepare_changes_nothing_until_commit),
	    cmocka_unit_test_setup_teardown(test_all_subsets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forged_shares_refused_alone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_relabelled_share_refused, setup_named, teardown),
	    cmocka_unit_test_setup_teardown(test_old_commitments_checked_the_old_way, setup_named,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_detached_checks_extra_shares, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_store_without_commitments_checks_extra_shares, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_repeated_extra_shares_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unfinished_unseal_expires, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_shares_named, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wrapping_binds_identity, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seal_stops_crypto_and_reopen_unseals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_selftest_failure_is_error_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_agreement, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
