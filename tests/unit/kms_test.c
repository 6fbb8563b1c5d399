/*
 * kms_test.c - the KMS service layer: key life cycle, the key-state rules,
 * rotation (on demand and automatic), scheduled destruction, aliases, key
 * policies with roles, plain AES-GCM, and persistence across a restart.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kms/kms.h"
#include "kms/kms_internal.h"
#include "store/store_impl.h"
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
	hsm_create_key_req req = {.description = "test", .spec = spec, .usage = usage,
	                          .policy = policy};
	memset(out, 0, sizeof(*out));
	assert_true(hsm_ok(hsm_kms_create_key(f->kms, &officer, &req, out)));
}

static hsm_result encrypt(fx *f, const hsm_caller *c, const char *key, hsm_buf *ct)
{
	hsm_encrypt_req req = {.key = key, .plaintext = (const uint8_t *)"data", .plaintext_len = 4};
	hsm_used_key used;
	hsm_buf_clear(ct);
	return hsm_kms_encrypt(f->kms, c, &req, ct, &used);
}

static hsm_result decrypt(fx *f, const hsm_buf *ct, hsm_used_key *used)
{
	hsm_decrypt_req req = {.ciphertext = ct->data, .ciphertext_len = ct->len};
	hsm_buf pt;
	hsm_enc_alg alg;
	hsm_buf_init_secure(&pt);
	hsm_result r = hsm_kms_decrypt(f->kms, &user, &req, &pt, used, &alg);
	if (hsm_ok(r))
		assert_memory_equal(pt.data, "data", 4);
	hsm_buf_free(&pt);
	return r;
}

static void test_spec_usage_combinations(void **state)
{
	fx *f = *state;
	hsm_create_key_req req = {0};
	hsm_key_record out;
	for (unsigned s = 0; s < HSM_SPEC_COUNT; s++) {
		for (unsigned u = 0; u < HSM_USAGE_COUNT; u++) {
			req.spec = (hsm_key_spec)s;
			req.usage = (hsm_key_usage)u;
			memset(&out, 0, sizeof(out));
			/* RSA-4096 and 3072 generation is slow: check them by refusal only. */
			bool allowed = hsm_spec_allows_usage(req.spec, req.usage);
			if (allowed && (s == HSM_SPEC_RSA_4096 || s == HSM_SPEC_RSA_3072))
				continue;
			hsm_result r = hsm_kms_create_key(f->kms, &officer, &req, &out);
			assert_int_equal(r.err, allowed ? HSM_OK : HSM_ERR_VALIDATION);
			if (allowed)
				assert_int_equal(out.state, HSM_KEY_ENABLED);
			hsm_key_record_clear(&out);
		}
	}
	/* A crypto-user may not create keys; an auditor neither. */
	req.spec = HSM_SPEC_SYMMETRIC_DEFAULT;
	req.usage = HSM_USAGE_ENCRYPT_DECRYPT;
	assert_int_equal(hsm_kms_create_key(f->kms, &user, &req, &out).err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_create_key(f->kms, &auditor, &req, &out).err,
	                 HSM_ERR_ACCESS_DENIED);
}

static void test_state_rules(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	hsm_buf ct = {0};
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	assert_true(hsm_ok(encrypt(f, &user, k.key_id, &ct)));
	hsm_buf keep = {0};
	assert_true(hsm_ok(hsm_buf_put(&keep, ct.data, ct.len)));
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	assert_int_equal(encrypt(f, &user, k.key_id, &ct).err, HSM_ERR_DISABLED);
	hsm_used_key used;
	assert_int_equal(decrypt(f, &keep, &used).err, HSM_ERR_DISABLED);
	assert_int_equal(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 0).err, HSM_ERR_DISABLED);
	assert_int_equal(hsm_kms_cancel_deletion(f->kms, &officer, k.key_id, &r).err,
	                 HSM_ERR_INVALID_STATE);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &r)));
	assert_int_equal(r.state, HSM_KEY_PENDING_DELETION);
	assert_true(r.deletion_date == f->now + 7 * 86400);
	hsm_key_record_clear(&r);
	assert_int_equal(encrypt(f, &user, k.key_id, &ct).err, HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_enable_key(f->kms, &officer, k.key_id).err, HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &r).err,
	                 HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_update_description(f->kms, &officer, k.key_id, "x").err,
	                 HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 6, &r).err,
	                 HSM_ERR_VALIDATION);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_cancel_deletion(f->kms, &officer, k.key_id, &r)));
	assert_int_equal(r.state, HSM_KEY_DISABLED); /* as in KMS */
	hsm_key_record_clear(&r);
	assert_true(hsm_ok(hsm_kms_enable_key(f->kms, &officer, k.key_id)));
	assert_true(hsm_ok(decrypt(f, &keep, &used)));
	/* Crypto users may not change key state. */
	assert_int_equal(hsm_kms_disable_key(f->kms, &user, k.key_id).err, HSM_ERR_ACCESS_DENIED);
	hsm_key_record_clear(&k);
	hsm_buf_free(&ct);
	hsm_buf_free(&keep);
}

/* ---- A change racing a cache fill -------------------------------------------------- */

/*
 * A store whose next read of one key's record (or of its version) holds the
 * reading thread after the read, until the test lets it go: the window in
 * which a request that missed a cache has read the old state and not yet
 * cached it.
 */
static struct {
	const hsm_store_ops *orig;
	hsm_store_ops ops;
	char key_id[HSM_UUID_STRLEN + 1];
	atomic_bool hold_key, hold_version;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int phase; /* 1: a reader is held; 2: let go */
} stall = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void stall_hold(void)
{
	pthread_mutex_lock(&stall.mu);
	stall.phase = 1;
	pthread_cond_broadcast(&stall.cv);
	while (stall.phase != 2)
		pthread_cond_wait(&stall.cv, &stall.mu);
	pthread_mutex_unlock(&stall.mu);
}

static hsm_result stall_key_get(hsm_store *s, const char *key_id, hsm_key_record *out)
{
	hsm_result r = stall.orig->key_get(s, key_id, out);
	if (strcmp(key_id, stall.key_id) == 0 && atomic_exchange(&stall.hold_key, false))
		stall_hold();
	return r;
}

static hsm_result stall_version_get(hsm_store *s, const char *key_id, uint32_t version,
                                    hsm_version_record *out)
{
	hsm_result r = stall.orig->version_get(s, key_id, version, out);
	if (strcmp(key_id, stall.key_id) == 0 && atomic_exchange(&stall.hold_version, false))
		stall_hold();
	return r;
}

typedef struct reader {
	fx *f;
	pthread_t t;
	hsm_result r;
} reader;

static void *read_encrypt(void *arg)
{
	reader *rd = arg;
	hsm_buf ct = {0};
	rd->r = encrypt(rd->f, &user, stall.key_id, &ct);
	hsm_buf_free(&ct);
	return NULL;
}

/* Starts an Encrypt that is held after its store read, and waits until it is. */
static void start_held_encrypt(fx *f, reader *rd)
{
	stall.phase = 0;
	rd->f = f;
	assert_int_equal(pthread_create(&rd->t, NULL, read_encrypt, rd), 0);
	pthread_mutex_lock(&stall.mu);
	while (stall.phase != 1)
		pthread_cond_wait(&stall.cv, &stall.mu);
	pthread_mutex_unlock(&stall.mu);
}

static void let_go(reader *rd)
{
	pthread_mutex_lock(&stall.mu);
	stall.phase = 2;
	pthread_cond_broadcast(&stall.cv);
	pthread_mutex_unlock(&stall.mu);
	assert_int_equal(pthread_join(rd->t, NULL), 0);
}

static bool material_cached(fx *f, const char *key_id)
{
	char(*ids)[HSM_UUID_STRLEN + 1] = NULL;
	size_t n = 0;
	assert_true(hsm_ok(hsm_ks_cached_keys(f->ks, &ids, &n)));
	bool found = false;
	for (size_t i = 0; i < n; i++)
		found = found || strcmp(ids[i], key_id) == 0;
	free(ids);
	return found;
}

/* An AES key whose reads this test's stalling store can hold (stall.hold_key, hold_version). */
static void stalled_key(fx *f, hsm_key_record *k)
{
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, k);
	snprintf(stall.key_id, sizeof(stall.key_id), "%s", k->key_id);
	stall.orig = f->store->ops;
	stall.ops = *f->store->ops;
	stall.ops.key_get = stall_key_get;
	stall.ops.version_get = stall_version_get;
	f->store->ops = &stall.ops;
}

/*
 * DisableKey while an Encrypt that missed the caches has read the key as
 * Enabled and not yet cached it: the Encrypt may finish (it began first),
 * but neither the old record nor the material stays cached, so the next
 * Encrypt is refused and the node holds no material of the disabled key.
 */
static void test_change_racing_a_cache_fill(void **state)
{
	fx *f = *state;
	hsm_key_record k;
	hsm_buf ct = {0};
	reader rd;
	stalled_key(f, &k);

	/* The key's record: the change's removal comes while the reader holds the old one. */
	assert_true(hsm_ok(encrypt(f, &user, k.key_id, &ct)));
	assert_true(hsm_ok(hsm_kms_update_description(f->kms, &officer, k.key_id, "miss")));
	atomic_store(&stall.hold_key, true);
	start_held_encrypt(f, &rd);
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	let_go(&rd);
	assert_int_equal(encrypt(f, &user, k.key_id, &ct).err, HSM_ERR_DISABLED);

	/* The material: unwrapped by a reader that began before the disable. */
	assert_true(hsm_ok(hsm_kms_enable_key(f->kms, &officer, k.key_id)));
	assert_false(material_cached(f, k.key_id));
	atomic_store(&stall.hold_version, true);
	start_held_encrypt(f, &rd);
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	let_go(&rd);
	assert_false(material_cached(f, k.key_id));
	assert_int_equal(encrypt(f, &user, k.key_id, &ct).err, HSM_ERR_DISABLED);

	f->store->ops = stall.orig; /* the fixture's teardown closes the real store */
	hsm_key_record_clear(&k);
	hsm_buf_free(&ct);
}

/*
 * A snapshot a request holds after a newer read replaced it in the cache:
 * the request can still fetch the key's material after a DisableKey forgot
 * it, and cache it; when that request lets go of its snapshot, the material
 * is forgotten again.
 */
static void test_displaced_snapshot_forgets_material(void **state)
{
	fx *f = *state;
	hsm_key_record k;
	hsm_buf ct = {0};
	reader rd;
	stalled_key(f, &k);
	assert_true(hsm_ok(encrypt(f, &user, k.key_id, &ct)));
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	assert_true(hsm_ok(hsm_kms_enable_key(f->kms, &officer, k.key_id)));
	assert_false(material_cached(f, k.key_id));

	/* R1 has read the key and waits; this thread reads it too and keeps its snapshot. */
	atomic_store(&stall.hold_key, true);
	start_held_encrypt(f, &rd);
	kms_key *mine = NULL;
	assert_true(hsm_ok(kms_key_load(f->kms, k.key_id, &mine)));
	let_go(&rd); /* R1 caches its own snapshot over this one, and encrypts */
	assert_true(hsm_ok(rd.r));
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	assert_false(material_cached(f, k.key_id));

	/* This request goes on with the snapshot it read while the key was enabled. */
	hsm_ks_keyref ref = kms_keyref(mine, mine->rec.primary_version);
	hsm_buf ctx = {0}, blob = {0};
	assert_true(hsm_ok(hsm_ks_encrypt(f->ks, &ref, &ctx, (const uint8_t *)"x", 1, &blob)));
	assert_true(material_cached(f, k.key_id)); /* what the race leaves, until... */
	kms_key_release(mine);                     /* ...the request lets go */
	assert_false(material_cached(f, k.key_id));

	f->store->ops = stall.orig; /* the fixture's teardown closes the real store */
	hsm_buf_free(&blob);
	hsm_key_record_clear(&k);
	hsm_buf_free(&ct);
}

/* ---- Two nodes sharing one store ------------------------------------------------- */

static int64_t test_clock(void *arg)
{
	return ((fx *)arg)->now;
}

static void count_event(void *arg, const hsm_kms_event *ev)
{
	(void)ev;
	(*(int *)arg)++;
}

/*
 * Node B listed a key as due, then node A (sharing the store) acted on it
 * before B did: B must look again and leave it alone, even though its own
 * cache (which never expires here) still holds the old record.
 */
static void test_scheduled_work_listed_stale_is_left_alone(void **state)
{
	fx *f = *state;
	hsm_kms *b = NULL;
	int b_events = 0;
	assert_true(hsm_ok(hsm_kms_new(f->store, f->ks, &f->cfg, &b)));
	hsm_kms_set_clock(b, test_clock, f);
	hsm_kms_set_event_sink(b, count_event, &b_events);
	hsm_key_record k, d, listed_k, listed_d, r;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &d);
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 1)));
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, d.key_id, 7, &r)));
	hsm_key_record_clear(&r);
	f->now += 7 * 86400;
	/* B reads both (its cache keeps them) and lists them as due. */
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_rotation_status(b, &user, k.key_id, &r)));
	hsm_key_record_clear(&r);
	memset(&listed_k, 0, sizeof(listed_k));
	memset(&listed_d, 0, sizeof(listed_d));
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &listed_k)));
	assert_true(hsm_ok(hsm_store_key_get(f->store, d.key_id, &listed_d)));
	/* A rotates the key (its automatic rotation: one on demand would leave the schedule,
	 * and the rotation due) and the deletion is cancelled, before B gets to them. */
	assert_true(hsm_ok(kms_rotate_due(f->kms, &listed_k)));
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &r)));
	assert_int_equal(r.primary_version, 2);
	hsm_key_record_clear(&r);
	/* The cancellation came in the waiting period's last second (once it has ended, the
	 * key is due and cancelling it is refused: test_cancel_after_waiting_period). */
	f->now -= 1;
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_cancel_deletion(f->kms, &officer, d.key_id, &r)));
	hsm_key_record_clear(&r);
	f->now += 1;
	/* B acts on what it listed: nothing happens, nothing fails. */
	bool acted = true;
	assert_true(hsm_ok(kms_rotate_due(b, &listed_k)));
	assert_true(hsm_ok(kms_destroy_due(b, &listed_d, &acted)));
	assert_false(acted);
	assert_int_equal(b_events, 0);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &r)));
	assert_int_equal(r.primary_version, 2);
	hsm_key_record_clear(&r);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_store_key_get(f->store, d.key_id, &r)));
	assert_int_equal(r.state, HSM_KEY_DISABLED); /* cancelled, not destroyed */
	hsm_key_record_clear(&r);
	hsm_key_record_clear(&listed_k);
	hsm_key_record_clear(&listed_d);
	hsm_key_record_clear(&k);
	hsm_key_record_clear(&d);
	hsm_kms_free(b);
}

static void test_cancel_after_waiting_period(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 7, &r)));
	hsm_key_record_clear(&r);
	/* Due (the scheduler has not come by yet): no longer cancellable, nothing changes. */
	f->now += 7 * 86400;
	memset(&r, 0, sizeof(r));
	hsm_result res = hsm_kms_cancel_deletion(f->kms, &officer, k.key_id, &r);
	assert_int_equal(res.err, HSM_ERR_INVALID_STATE);
	assert_non_null(strstr(hsm_last_message(), "waiting period ended"));
	hsm_key_record_clear(&r);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &r)));
	assert_int_equal(r.state, HSM_KEY_PENDING_DELETION);
	hsm_key_record_clear(&r);
	/* A second before, it was. */
	f->now -= 1;
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_cancel_deletion(f->kms, &officer, k.key_id, &r)));
	assert_int_equal(r.state, HSM_KEY_DISABLED);
	hsm_key_record_clear(&r);
	hsm_key_record_clear(&k);
}

static void test_destruction_after_waiting_period(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/doomed", k.key_id)));
	char id[HSM_UUID_STRLEN + 1];
	assert_true(hsm_ok(hsm_kms_resolve(f->kms, "alias/doomed", id))); /* now cached */
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, k.key_id, 0, &r)));
	assert_int_equal(r.pending_window_days, 30);
	hsm_key_record_clear(&r);
	size_t done = 0;
	f->now += 30 * 86400 - 1;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 0);
	f->now += 1;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	assert_int_equal(hsm_kms_describe_key(f->kms, &officer, k.key_id, &r).err, HSM_ERR_NOT_FOUND);
	assert_int_equal(hsm_kms_resolve(f->kms, "alias/doomed", id).err, HSM_ERR_NOT_FOUND);
	/* The tombstone remains; the material is gone. */
	hsm_key_record tomb;
	hsm_version_record v;
	memset(&tomb, 0, sizeof(tomb));
	memset(&v, 0, sizeof(v));
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &tomb)));
	assert_int_equal(tomb.state, HSM_KEY_DESTROYED);
	assert_true(hsm_ok(hsm_store_version_get(f->store, k.key_id, 1, &v)));
	assert_int_equal(v.wrapped.len, 0);
	hsm_version_record_clear(&v);
	hsm_key_record_clear(&tomb);
	hsm_key_record_clear(&k);
}

/*
 * Another node's change committed between the scheduler's look at a key and
 * its write: a clock whose n-th reading makes the change straight in the
 * store (the scheduler reads the clock right after it looked).
 */
typedef struct racing_clock {
	fx *f;
	int calls, at;
	const char *key_id;
	hsm_key_update_fn change;
} racing_clock;

static int64_t racing_now(void *arg)
{
	racing_clock *c = arg;
	if (++c->calls == c->at)
		assert_true(hsm_ok(hsm_store_key_update(c->f->store, c->key_id, c->change, NULL, NULL,
		                                        NULL)));
	return c->f->now;
}

static hsm_result disable_in_store(hsm_key_record *rec, void *arg)
{
	(void)arg;
	rec->state = HSM_KEY_DISABLED;
	return HSM_SUCCESS;
}

static hsm_result cancel_in_store(hsm_key_record *rec, void *arg)
{
	(void)arg;
	rec->state = HSM_KEY_DISABLED; /* what CancelKeyDeletion writes */
	rec->deletion_date = 0;
	return HSM_SUCCESS;
}

static hsm_result rotated_elsewhere(hsm_key_record *rec, void *arg)
{
	(void)arg;
	rec->next_rotation += 400 * 86400; /* the next period another node's rotation started */
	return HSM_SUCCESS;
}

/*
 * A rotation another node made after this node listed the key is not this
 * node's change: hsm_kms_run_due counts only what this node did
 * (hsmd_scheduler_actions_total).
 */
static void test_scheduled_work_counts_only_its_own_changes(void **state)
{
	fx *f = *state;
	static racing_clock c; /* the service reads it until tear-down */
	hsm_key_record k, got;
	size_t done = 0;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 1)));
	f->now += 7 * 86400;
	c = (racing_clock){f, 0, 2, k.key_id, rotated_elsewhere};
	hsm_kms_set_clock(f->kms, racing_now, &c);
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_true(c.calls >= 2);
	assert_int_equal(done, 0);
	memset(&got, 0, sizeof(got));
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &got)));
	assert_int_equal(got.primary_version, 1);
	hsm_key_record_clear(&got);
	/* Due again, and no other node acts: this node's rotation counts. */
	c.at = 0;
	f->now += 401 * 86400;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	memset(&got, 0, sizeof(got));
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &got)));
	assert_int_equal(got.primary_version, 2);
	hsm_key_record_clear(&got);
	hsm_key_record_clear(&k);
}

static void test_scheduled_work_decides_under_the_row_lock(void **state)
{
	fx *f = *state;
	static racing_clock c; /* the service reads it until tear-down */
	hsm_key_record k, d, got;
	hsm_version_record v;
	size_t done = 0;
	memset(&got, 0, sizeof(got));
	memset(&v, 0, sizeof(v));
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 1)));
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &d);
	memset(&got, 0, sizeof(got));
	assert_true(hsm_ok(hsm_kms_schedule_deletion(f->kms, &officer, d.key_id, 7, &got)));
	hsm_key_record_clear(&got);
	f->now += 7 * 86400;
	/* A rotation due, and the key disabled after the scheduler looked: not rotated. */
	c = (racing_clock){f, 0, 2, k.key_id, disable_in_store};
	hsm_kms_set_clock(f->kms, racing_now, &c);
	/* One key at a time: the destruction is due too, so take the rotation alone first. */
	hsm_key_record due_rot;
	memset(&due_rot, 0, sizeof(due_rot));
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &due_rot)));
	c.calls = 1; /* as if hsm_kms_run_due had read the clock for its listing */
	assert_true(hsm_ok(kms_rotate_due(f->kms, &due_rot)));
	hsm_key_record_clear(&due_rot);
	assert_true(c.calls >= 2);
	assert_true(hsm_ok(hsm_store_key_get(f->store, k.key_id, &got)));
	assert_int_equal(got.state, HSM_KEY_DISABLED);
	assert_int_equal(got.primary_version, 1);
	hsm_key_record_clear(&got);
	assert_int_equal(hsm_store_version_get(f->store, k.key_id, 2, &v).err, HSM_ERR_NOT_FOUND);
	/* A destruction due, and the deletion cancelled after the scheduler looked: kept. */
	c = (racing_clock){f, 0, 2, d.key_id, cancel_in_store};
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_true(c.calls >= 2);
	assert_int_equal(done, 0); /* another node's cancellation is no change of this one's */
	assert_true(hsm_ok(hsm_store_key_get(f->store, d.key_id, &got)));
	assert_int_equal(got.state, HSM_KEY_DISABLED);
	hsm_key_record_clear(&got);
	assert_true(hsm_ok(hsm_store_version_get(f->store, d.key_id, 1, &v)));
	assert_true(v.wrapped.len > 0);
	hsm_version_record_clear(&v);
	c.at = 0;
	hsm_key_record_clear(&k);
	hsm_key_record_clear(&d);
}

static hsm_result decrypt_named(fx *f, const char *key, const hsm_buf *ct)
{
	hsm_decrypt_req req = {.key = key, .ciphertext = ct->data, .ciphertext_len = ct->len};
	hsm_buf pt;
	hsm_enc_alg alg;
	hsm_used_key used;
	hsm_buf_init_secure(&pt);
	hsm_result r = hsm_kms_decrypt(f->kms, &user, &req, &pt, &used, &alg);
	hsm_buf_free(&pt);
	return r;
}

/* Decrypt named by an alias sees kms:RequestAlias, as Encrypt does (the blob names the key). */
static void test_decrypt_sees_the_request_alias(void **state)
{
	fx *f = *state;
	static const char policy[] =
	    "{\"Version\":\"2012-10-17\",\"Statement\":["
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:root\"},"
	    "\"Action\":\"kms:*\",\"Resource\":\"*\"},"
	    "{\"Effect\":\"Deny\",\"Principal\":\"*\",\"Action\":[\"kms:Encrypt\",\"kms:Decrypt\"],"
	    "\"Resource\":\"*\",\"Condition\":{\"StringEquals\":"
	    "{\"kms:RequestAlias\":\"alias/legacy-name\"}}}]}";
	hsm_key_record k;
	hsm_buf ct = {0};
	hsm_used_key used;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, policy, &k);
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/legacy-name", k.key_id)));
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/new-name", k.key_id)));
	assert_int_equal(encrypt(f, &user, "alias/legacy-name", &ct).err, HSM_ERR_ACCESS_DENIED);
	assert_true(hsm_ok(encrypt(f, &user, "alias/new-name", &ct)));
	assert_int_equal(decrypt_named(f, "alias/legacy-name", &ct).err, HSM_ERR_ACCESS_DENIED);
	assert_true(hsm_ok(decrypt_named(f, "alias/new-name", &ct)));
	assert_true(hsm_ok(decrypt_named(f, k.key_id, &ct)));
	assert_true(hsm_ok(decrypt(f, &ct, &used)));
	hsm_buf_free(&ct);
	hsm_key_record_clear(&k);
}

static void test_rotation_keeps_old_versions(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	hsm_buf ct1 = {0}, ct2 = {0}, sig = {0};
	hsm_used_key used;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	assert_true(hsm_ok(encrypt(f, &user, k.key_id, &ct1)));
	assert_int_equal(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 2561).err,
	                 HSM_ERR_VALIDATION);
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 1)));
	size_t done = 0;
	f->now += 86400;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_rotation_status(f->kms, &user, k.key_id, &r)));
	assert_int_equal(r.primary_version, 2);
	assert_true(r.next_rotation == f->now + 86400);
	hsm_key_record_clear(&r);
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	assert_int_equal(r.primary_version, 3);
	hsm_key_record_clear(&r);
	assert_true(hsm_ok(encrypt(f, &user, k.key_id, &ct2)));
	assert_true(hsm_ok(decrypt(f, &ct1, &used)));
	assert_int_equal(used.version, 1);
	assert_true(hsm_ok(decrypt(f, &ct2, &used)));
	assert_int_equal(used.version, 3);
	/* Asymmetric keys rotate too; old signatures keep verifying. */
	hsm_key_record s;
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, &s);
	assert_true(hsm_ok(hsm_kms_sign(f->kms, &user, s.key_id, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW,
	                                (const uint8_t *)"m", 1, &sig, &used)));
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, s.key_id, &r)));
	hsm_key_record_clear(&r);
	assert_true(hsm_ok(hsm_kms_verify(f->kms, &user, s.key_id, HSM_SIGN_ECDSA_SHA_256,
	                                  HSM_MSG_RAW, (const uint8_t *)"m", 1, sig.data, sig.len,
	                                  &used)));
	assert_int_equal(used.version, 1);
	assert_int_equal(hsm_kms_verify(f->kms, &user, s.key_id, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW,
	                                (const uint8_t *)"n", 1, sig.data, sig.len, &used)
	                     .err,
	                 HSM_ERR_INVALID_SIGNATURE);
	hsm_key_record_clear(&s);
	hsm_key_record_clear(&k);
	hsm_buf_free(&ct1);
	hsm_buf_free(&ct2);
	hsm_buf_free(&sig);
}

/*
 * A signing key rotating every day, and a certificate stored with its CKA_ID
 * straight into the store (as a store written before rotation refused such a
 * pairing holds it): its scheduled rotation fails until the certificate goes.
 */
static void paired_rotating_key(fx *f, hsm_key_record *k, hsm_cert_record *c)
{
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, k);
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k->key_id, 1)));
	memset(c, 0, sizeof(*c));
	assert_true(hsm_ok(hsm_uuid_new(c->cert_id)));
	assert_true(hsm_ok(hsm_buf_set(&c->object_id, k->key_id, strlen(k->key_id))));
	assert_true(hsm_ok(hsm_buf_set(&c->der, "\x30\x00", 2)));
	c->created = f->now;
	assert_true(hsm_ok(hsm_store_cert_create(f->store, c)));
}

/*
 * Scheduled work that keeps failing (here a certificate paired with the key
 * before rotation refused it) is tried again after a pause that doubles,
 * not every round: one RotateKey failure event per try.  Once the obstacle
 * goes, the next try rotates the key and forgets the failures.
 */
static void test_failing_scheduled_work_backs_off(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	int events = 0;
	size_t done = 0;
	hsm_cert_record c;
	paired_rotating_key(f, &k, &c);
	hsm_kms_set_event_sink(f->kms, count_event, &events);
	f->now += 86400;
	int64_t t0 = f->now;
	assert_int_equal(hsm_kms_run_due(f->kms, &done).err, HSM_ERR_VALIDATION);
	assert_int_equal(events, 1);
	/* Within the pause (2 s after the first failure, 4 s after the second): not tried. */
	f->now = t0 + 1;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 0);
	assert_int_equal(events, 1);
	f->now = t0 + 2;
	assert_int_equal(hsm_kms_run_due(f->kms, &done).err, HSM_ERR_VALIDATION);
	assert_int_equal(events, 2);
	f->now = t0 + 5;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(events, 2);
	assert_true(hsm_ok(hsm_store_cert_delete(f->store, c.cert_id)));
	f->now = t0 + 6;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	assert_int_equal(events, 3);
	assert_int_equal(f->kms->n_retry, 0);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_rotation_status(f->kms, &user, k.key_id, &r)));
	assert_int_equal(r.primary_version, 2);
	hsm_kms_set_event_sink(f->kms, NULL, NULL);
	hsm_key_record_clear(&r);
	hsm_cert_record_clear(&c);
	hsm_key_record_clear(&k);
}

/*
 * More failing keys than the old table of 256 held: each still waits its pause, none is
 * pushed out of the table by another and tried every round.
 */
static void test_many_failing_keys_all_back_off(void **state)
{
	fx *f = *state;
	enum { KEYS = 300 };
	hsm_key_record k;
	hsm_cert_record c;
	int events = 0;
	size_t done = 0;
	for (int i = 0; i < KEYS; i++) {
		paired_rotating_key(f, &k, &c);
		hsm_cert_record_clear(&c);
		hsm_key_record_clear(&k);
	}
	hsm_kms_set_event_sink(f->kms, count_event, &events);
	f->now += 86400;
	int64_t t0 = f->now;
	const struct {
		int64_t at;
		int tried;
	} rounds[] = {{0, KEYS}, {1, 0}, {2, KEYS}, {3, 0}, {5, 0}, {6, KEYS}, {7, 0}};
	for (size_t i = 0; i < sizeof(rounds) / sizeof(rounds[0]); i++) {
		events = 0;
		f->now = t0 + rounds[i].at;
		hsm_result r = hsm_kms_run_due(f->kms, &done);
		assert_int_equal(r.err, rounds[i].tried ? HSM_ERR_VALIDATION : HSM_OK);
		assert_int_equal(events, rounds[i].tried);
		assert_int_equal(f->kms->n_retry, KEYS);
	}
	hsm_kms_set_event_sink(f->kms, NULL, NULL);
}

/* A wall clock stepped back does not hold a failing key's work back for as long as the step. */
static void test_backoff_ends_when_the_clock_steps_back(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	size_t done = 0;
	hsm_cert_record c;
	paired_rotating_key(f, &k, &c);
	f->now += 2 * 86400; /* a day past the rotation date */
	int64_t t0 = f->now;
	assert_int_equal(hsm_kms_run_due(f->kms, &done).err, HSM_ERR_VALIDATION);
	assert_true(hsm_ok(hsm_store_cert_delete(f->store, c.cert_id)));
	/* The wall clock steps back an hour (NTP); the key is still a day overdue. */
	f->now = t0 - 3600 + 10;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_rotation_status(f->kms, &user, k.key_id, &r)));
	assert_int_equal(r.primary_version, 2);
	hsm_key_record_clear(&r);
	/* A failing key that stops being due (taken off rotation) is forgotten at the next
	 * round, so its failures do not carry over to a later due date. */
	assert_true(hsm_ok(hsm_uuid_new(c.cert_id)));
	assert_true(hsm_ok(hsm_store_cert_create(f->store, &c)));
	f->now += 2 * 86400;
	assert_int_equal(hsm_kms_run_due(f->kms, &done).err, HSM_ERR_VALIDATION);
	assert_int_equal(f->kms->n_retry, 1);
	assert_true(hsm_ok(hsm_kms_disable_rotation(f->kms, &officer, k.key_id)));
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(f->kms->n_retry, 0);
	hsm_cert_record_clear(&c);
	hsm_key_record_clear(&k);
}

/* The automatic schedule, as in KMS: what moves its date and what does not. */
static int64_t next_rotation(fx *f, const char *key_id)
{
	hsm_key_record r;
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_rotation_status(f->kms, &user, key_id, &r)));
	int64_t next = r.next_rotation;
	hsm_key_record_clear(&r);
	return next;
}

static void test_rotation_schedule(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	const int64_t day = 86400, t0 = f->now;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 90)));
	assert_true(next_rotation(f, k.key_id) == t0 + 90 * day);
	/* Enabled again with the same period, 80 days on: the date stays. */
	f->now = t0 + 80 * day;
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 90)));
	assert_true(next_rotation(f, k.key_id) == t0 + 90 * day);
	/* A rotation on demand leaves the automatic schedule as it was. */
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	hsm_key_record_clear(&r);
	assert_true(next_rotation(f, k.key_id) == t0 + 90 * day);
	/* A new period counts from the start of the current one: 100 days from t0... */
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 100)));
	assert_true(next_rotation(f, k.key_id) == t0 + 100 * day);
	/* ...and one whose date has passed is due since that date, and rotates at the next
	 * pass; changed again before it, the period still counts from t0. */
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 30)));
	assert_true(next_rotation(f, k.key_id) == t0 + 30 * day);
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 60)));
	assert_true(next_rotation(f, k.key_id) == t0 + 60 * day);
	size_t done = 0;
	assert_true(hsm_ok(hsm_kms_run_due(f->kms, &done)));
	assert_int_equal(done, 1);
	assert_true(next_rotation(f, k.key_id) == f->now + 60 * day);
	/* Off and on again: a whole period from now. */
	f->now += day;
	assert_true(hsm_ok(hsm_kms_disable_rotation(f->kms, &officer, k.key_id)));
	assert_true(hsm_ok(hsm_kms_enable_rotation(f->kms, &officer, k.key_id, 30)));
	assert_true(next_rotation(f, k.key_id) == f->now + 30 * day);
	hsm_key_record_clear(&k);
}

/* The account and region the first key records, read back as hsmctl reads them. */
static void test_account_recorded(void **state)
{
	fx *f = *state;
	char account[13], region[HSM_REGION_NAME_MAX + 1];
	bool recorded = true;
	assert_true(hsm_ok(hsm_kms_account_recorded(f->store, account, region, &recorded)));
	assert_false(recorded);
	assert_string_equal(account, "");
	assert_string_equal(region, "");
	hsm_key_record k;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	hsm_key_record_clear(&k);
	assert_true(hsm_ok(hsm_kms_account_recorded(f->store, account, region, &recorded)));
	assert_true(recorded);
	assert_string_equal(account, "111122223333");
	assert_string_equal(region, "us-east-1");
	assert_int_equal(hsm_kms_account_check(f->store, account, "eu-west-1", false).err,
	                 HSM_ERR_CONFLICT);
}

static void test_aliases(void **state)
{
	fx *f = *state;
	hsm_key_record a, b, m;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &a);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &b);
	create(f, HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC, NULL, &m);
	assert_int_equal(hsm_kms_create_alias(f->kms, &officer, "alias/aws/x", a.key_id).err,
	                 HSM_ERR_INVALID_ALIAS_NAME);
	assert_int_equal(hsm_kms_create_alias(f->kms, &officer, "noprefix", a.key_id).err,
	                 HSM_ERR_INVALID_ALIAS_NAME);
	assert_int_equal(hsm_kms_create_alias(f->kms, &officer, "alias/bad name", a.key_id).err,
	                 HSM_ERR_VALIDATION);
	/* The name's rules alone, as CreateAlias applies them (hsmctl checks before a key). */
	assert_int_equal(hsm_kms_alias_name_check("alias/aws/x").err, HSM_ERR_INVALID_ALIAS_NAME);
	assert_int_equal(hsm_kms_alias_name_check("noprefix").err, HSM_ERR_INVALID_ALIAS_NAME);
	assert_int_equal(hsm_kms_alias_name_check("alias/bad name").err, HSM_ERR_VALIDATION);
	assert_int_equal(hsm_kms_alias_name_check("alias/pkcs11-id/zz").err,
	                 HSM_ERR_INVALID_ALIAS_NAME);
	assert_true(hsm_ok(hsm_kms_alias_name_check("alias/pkcs11-id/0a1b")));
	assert_true(hsm_ok(hsm_kms_alias_name_check("alias/app")));
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/app", a.key_id)));
	assert_int_equal(hsm_kms_create_alias(f->kms, &officer, "alias/app", b.key_id).err,
	                 HSM_ERR_ALREADY_EXISTS);
	char id[HSM_UUID_STRLEN + 1];
	assert_true(hsm_ok(hsm_kms_resolve(f->kms, "alias/app", id)));
	assert_string_equal(id, a.key_id);
	assert_true(hsm_ok(
	    hsm_kms_resolve(f->kms, "arn:aws:kms:us-east-1:111122223333:alias/app", id)));
	assert_string_equal(id, a.key_id);
	assert_int_equal(
	    hsm_kms_resolve(f->kms, "arn:aws:kms:eu-west-1:111122223333:alias/app", id).err,
	    HSM_ERR_NOT_FOUND);
	assert_int_equal(hsm_kms_update_alias(f->kms, &officer, "alias/app", m.key_id).err,
	                 HSM_ERR_VALIDATION);
	assert_true(hsm_ok(hsm_kms_update_alias(f->kms, &officer, "alias/app", b.key_id)));
	assert_true(hsm_ok(hsm_kms_resolve(f->kms, "alias/app", id)));
	assert_string_equal(id, b.key_id);
	assert_true(hsm_ok(hsm_kms_delete_alias(f->kms, &officer, "alias/app")));
	assert_int_equal(hsm_kms_delete_alias(f->kms, &officer, "alias/app").err, HSM_ERR_NOT_FOUND);
	hsm_key_record_clear(&a);
	hsm_key_record_clear(&b);
	hsm_key_record_clear(&m);
}

/* Resolves ref, which must name want. */
static void resolves_to(hsm_kms *kms, const char *ref, const char *want)
{
	char id[HSM_UUID_STRLEN + 1];
	assert_true(hsm_ok(hsm_kms_resolve(kms, ref, id)));
	assert_string_equal(id, want);
}

/*
 * Aliases are cached: every change through the KMS layer shows at once, even
 * for an alias resolved (and cached) just before; a change made by another
 * node over the same store shows once the cache lifetime has passed.  The
 * spec hint reads cached aliases only.
 */
static void test_alias_cache(void **state)
{
	fx *f = *state;
	hsm_key_record a, b;
	char id[HSM_UUID_STRLEN + 1];
	hsm_key_spec spec;
	create(f, HSM_SPEC_RSA_2048, HSM_USAGE_SIGN_VERIFY, NULL, &a);
	create(f, HSM_SPEC_RSA_3072, HSM_USAGE_SIGN_VERIFY, NULL, &b);
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/jwt", a.key_id)));
	assert_false(hsm_kms_spec_hint(f->kms, "alias/jwt", &spec)); /* not read yet */
	resolves_to(f->kms, "alias/jwt", a.key_id);
	assert_true(hsm_kms_spec_hint(f->kms, "alias/jwt", &spec));
	assert_int_equal(spec, HSM_SPEC_RSA_2048);
	assert_true(hsm_kms_spec_hint(f->kms, "arn:aws:kms:us-east-1:111122223333:alias/jwt", &spec));
	assert_int_equal(spec, HSM_SPEC_RSA_2048);
	/* Other keys' changes leave cached aliases alone (only destruction deletes aliases). */
	hsm_key_record c;
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, &c);
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, c.key_id)));
	assert_true(hsm_kms_spec_hint(f->kms, "alias/jwt", &spec));
	hsm_key_record_clear(&c);
	assert_true(hsm_ok(hsm_kms_update_alias(f->kms, &officer, "alias/jwt", b.key_id)));
	resolves_to(f->kms, "arn:aws:kms:us-east-1:111122223333:alias/jwt", b.key_id);
	resolves_to(f->kms, "alias/jwt", b.key_id);
	assert_true(hsm_kms_spec_hint(f->kms, "alias/jwt", &spec));
	assert_int_equal(spec, HSM_SPEC_RSA_3072);
	assert_true(hsm_ok(hsm_kms_delete_alias(f->kms, &officer, "alias/jwt")));
	assert_false(hsm_kms_spec_hint(f->kms, "alias/jwt", &spec));
	assert_int_equal(hsm_kms_resolve(f->kms, "alias/jwt", id).err, HSM_ERR_NOT_FOUND);
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/jwt", a.key_id)));
	resolves_to(f->kms, "alias/jwt", a.key_id);
	/* A name longer than the cache's keys is resolved from the store every time. */
	char lng[201] = "alias/";
	memset(lng + 6, 'x', sizeof(lng) - 7);
	lng[sizeof(lng) - 1] = '\0';
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, lng, a.key_id)));
	resolves_to(f->kms, lng, a.key_id);
	assert_true(hsm_ok(hsm_kms_update_alias(f->kms, &officer, lng, b.key_id)));
	resolves_to(f->kms, lng, b.key_id);
	assert_false(hsm_kms_spec_hint(f->kms, lng, &spec));
	/* A second node over the same store with a 50 ms cache lifetime. */
	hsm_kms_config cfg = f->cfg;
	cfg.meta_cache_ttl_ms = 50;
	hsm_kms *other = NULL;
	assert_true(hsm_ok(hsm_kms_new(f->store, f->ks, &cfg, &other)));
	resolves_to(other, "alias/jwt", a.key_id);
	assert_true(hsm_ok(hsm_kms_update_alias(f->kms, &officer, "alias/jwt", b.key_id)));
	struct timespec wait = {0, 60 * 1000000L};
	nanosleep(&wait, NULL);
	resolves_to(other, "alias/jwt", b.key_id);
	hsm_kms_free(other);
	hsm_key_record_clear(&a);
	hsm_key_record_clear(&b);
}

/*
 * A second node over the same store that trusts its cache for an hour: the
 * values made with a version the first node rotated in after the second
 * cached the key are taken at once (the second reads the key again before
 * refusing), and forged ones are still refused.
 */
static void test_versions_rotated_in_by_another_node(void **state)
{
	fx *f = *state;
	hsm_kms_config cfg = f->cfg;
	cfg.meta_cache_ttl_ms = 3600000;
	hsm_kms *other = NULL;
	assert_true(hsm_ok(hsm_kms_new(f->store, f->ks, &cfg, &other)));
	hsm_key_record k, s, m, r;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	create(f, HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, NULL, &s);
	create(f, HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC, NULL, &m);
	const uint8_t *msg = (const uint8_t *)"m";
	hsm_buf ct = {0}, sig = {0}, mac = {0}, pt;
	hsm_buf_init_secure(&pt);
	hsm_used_key used;
	hsm_enc_alg alg;
	for (uint32_t v = 1; v <= 2; v++) {
		/* Made with version v on the first node, used on the second. */
		assert_true(hsm_ok(encrypt(f, &user, k.key_id, &ct)));
		hsm_decrypt_req req = {.ciphertext = ct.data, .ciphertext_len = ct.len};
		hsm_buf_clear(&pt);
		assert_true(hsm_ok(hsm_kms_decrypt(other, &user, &req, &pt, &used, &alg)));
		assert_int_equal(used.version, v);
		hsm_buf_clear(&sig);
		assert_true(hsm_ok(hsm_kms_sign(f->kms, &user, s.key_id, HSM_SIGN_ECDSA_SHA_256,
		                                HSM_MSG_RAW, msg, 1, &sig, &used)));
		assert_true(hsm_ok(hsm_kms_verify(other, &user, s.key_id, HSM_SIGN_ECDSA_SHA_256,
		                                  HSM_MSG_RAW, msg, 1, sig.data, sig.len, &used)));
		assert_int_equal(used.version, v);
		hsm_buf_clear(&mac);
		assert_true(hsm_ok(hsm_kms_generate_mac(f->kms, &user, m.key_id, HSM_MAC_HMAC_SHA_256,
		                                        msg, 1, &mac, &used)));
		assert_true(hsm_ok(hsm_kms_verify_mac(other, &user, m.key_id, HSM_MAC_HMAC_SHA_256,
		                                      msg, 1, mac.data, mac.len, &used)));
		assert_int_equal(used.version, v);
		if (v == 2)
			break;
		const char *ids[] = {k.key_id, s.key_id, m.key_id};
		for (size_t i = 0; i < 3; i++) {
			assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, ids[i], &r)));
			hsm_key_record_clear(&r);
		}
	}
	/* What no version accepts is refused as before. */
	ct.data[20] = 99; /* the blob's key version (offset 17, 4 bytes): one never made */
	hsm_decrypt_req forged = {.ciphertext = ct.data, .ciphertext_len = ct.len};
	assert_int_equal(hsm_kms_decrypt(other, &user, &forged, &pt, &used, &alg).err,
	                 HSM_ERR_INVALID_CIPHERTEXT);
	assert_int_equal(hsm_kms_verify(other, &user, s.key_id, HSM_SIGN_ECDSA_SHA_256, HSM_MSG_RAW,
	                                (const uint8_t *)"n", 1, sig.data, sig.len, &used)
	                     .err,
	                 HSM_ERR_INVALID_SIGNATURE);
	assert_int_equal(hsm_kms_verify_mac(other, &user, m.key_id, HSM_MAC_HMAC_SHA_256,
	                                    (const uint8_t *)"n", 1, mac.data, mac.len, &used)
	                     .err,
	                 HSM_ERR_INVALID_MAC);
	hsm_kms_free(other);
	hsm_key_record_clear(&k);
	hsm_key_record_clear(&s);
	hsm_key_record_clear(&m);
	hsm_buf_free(&ct);
	hsm_buf_free(&sig);
	hsm_buf_free(&mac);
	hsm_buf_free(&pt);
}

/* olivia may do anything; ursula may only encrypt, with app=billing in the context. */
static const char billing_only[] =
    "{\"Version\":\"2012-10-17\",\"Statement\":["
    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/olivia\"},"
    "\"Action\":\"kms:*\",\"Resource\":\"*\"},"
    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/ursula\"},"
    "\"Action\":\"kms:Encrypt\",\"Resource\":\"*\","
    "\"Condition\":{\"StringEquals\":{\"kms:EncryptionContext:app\":\"billing\"}}}]}";

static void test_policy_with_context_condition(void **state)
{
	fx *f = *state;
	const char *policy = billing_only;
	hsm_key_record k;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, policy, &k);
	hsm_ctx_pair good = {"app", "billing"}, bad = {"app", "other"};
	hsm_encrypt_req req = {.key = k.key_id, .plaintext = (const uint8_t *)"x", .plaintext_len = 1};
	hsm_buf ct = {0};
	hsm_used_key used;
	req.ctx = (hsm_enc_ctx){&good, 1};
	assert_true(hsm_ok(hsm_kms_encrypt(f->kms, &user, &req, &ct, &used)));
	req.ctx = (hsm_enc_ctx){&bad, 1};
	assert_int_equal(hsm_kms_encrypt(f->kms, &user, &req, &ct, &used).err, HSM_ERR_ACCESS_DENIED);
	/* Decrypt is not granted to ursula at all. */
	hsm_decrypt_req d = {.ciphertext = ct.data, .ciphertext_len = ct.len,
	                     .ctx = (hsm_enc_ctx){&good, 1}};
	hsm_buf pt;
	hsm_enc_alg alg;
	hsm_buf_init_secure(&pt);
	assert_int_equal(hsm_kms_decrypt(f->kms, &user, &d, &pt, &used, &alg).err,
	                 HSM_ERR_ACCESS_DENIED);
	/* The lockout check refuses a policy that would lock olivia out. */
	assert_int_equal(hsm_kms_put_policy(f->kms, &officer, k.key_id, NULL,
	                                    "{\"Version\":\"2012-10-17\",\"Statement\":[]}", false)
	                     .err,
	                 HSM_ERR_MALFORMED_POLICY);
	hsm_buf_free(&pt);
	hsm_buf_free(&ct);
	hsm_key_record_clear(&k);
}

static const hsm_policy *parsed_policy_of(fx *f, const char *key_id)
{
	kms_key *k = NULL;
	assert_true(hsm_ok(kms_key_load(f->kms, key_id, &k)));
	const hsm_policy *p = k->policy;
	kms_key_release(k); /* the cache keeps the snapshot, and it the policy */
	return p;
}

static hsm_result encrypt_in(fx *f, const char *key_id, const char *app)
{
	hsm_ctx_pair pair = {"app", app};
	hsm_encrypt_req req = {.key = key_id, .plaintext = (const uint8_t *)"x", .plaintext_len = 1,
	                       .ctx = (hsm_enc_ctx){&pair, 1}};
	hsm_buf ct = {0};
	hsm_used_key used;
	hsm_result r = hsm_kms_encrypt(f->kms, &user, &req, &ct, &used);
	hsm_buf_free(&ct);
	return r;
}

/* Keys with the same policy document share its parsed form; changing one
 * key's policy leaves the others' as they were. */
static void test_keys_share_equal_policies(void **state)
{
	fx *f = *state;
	const char *conditional = billing_only;
	const char *open =
	    "{\"Version\":\"2012-10-17\",\"Statement\":["
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/olivia\"},"
	    "\"Action\":\"kms:*\",\"Resource\":\"*\"},"
	    "{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::111122223333:user/ursula\"},"
	    "\"Action\":\"kms:Encrypt\",\"Resource\":\"*\"}]}";
	hsm_key_record a, b, c, d;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, conditional, &a);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, conditional, &b);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &c);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &d);
	assert_ptr_equal(parsed_policy_of(f, a.key_id), parsed_policy_of(f, b.key_id));
	assert_ptr_equal(parsed_policy_of(f, c.key_id), parsed_policy_of(f, d.key_id));
	assert_ptr_not_equal(parsed_policy_of(f, a.key_id), parsed_policy_of(f, c.key_id));
	assert_true(hsm_ok(encrypt_in(f, a.key_id, "billing")));
	assert_int_equal(encrypt_in(f, a.key_id, "other").err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(encrypt_in(f, b.key_id, "other").err, HSM_ERR_ACCESS_DENIED);

	assert_true(hsm_ok(hsm_kms_put_policy(f->kms, &officer, b.key_id, NULL, open, false)));
	assert_ptr_not_equal(parsed_policy_of(f, a.key_id), parsed_policy_of(f, b.key_id));
	/* GetKeyPolicy gives each key its own document back, byte for byte. */
	hsm_buf doc = {0};
	assert_true(hsm_ok(hsm_kms_get_policy(f->kms, &officer, a.key_id, NULL, &doc)));
	assert_int_equal(doc.len, strlen(conditional));
	assert_memory_equal(doc.data, conditional, doc.len);
	hsm_buf_clear(&doc);
	assert_true(hsm_ok(hsm_kms_get_policy(f->kms, &officer, b.key_id, "default", &doc)));
	assert_int_equal(doc.len, strlen(open));
	assert_memory_equal(doc.data, open, doc.len);
	hsm_buf_free(&doc);
	assert_true(hsm_ok(encrypt_in(f, b.key_id, "other")));
	assert_int_equal(encrypt_in(f, a.key_id, "other").err, HSM_ERR_ACCESS_DENIED);

	/* Back to the first document: shared again, and conditional again. */
	assert_true(hsm_ok(hsm_kms_put_policy(f->kms, &officer, b.key_id, NULL, conditional, false)));
	assert_ptr_equal(parsed_policy_of(f, a.key_id), parsed_policy_of(f, b.key_id));
	assert_int_equal(encrypt_in(f, b.key_id, "other").err, HSM_ERR_ACCESS_DENIED);
	hsm_key_record_clear(&a);
	hsm_key_record_clear(&b);
	hsm_key_record_clear(&c);
	hsm_key_record_clear(&d);
}

static void test_persistence_across_restart(void **state)
{
	fx *f = *state;
	hsm_key_record k, r;
	hsm_buf ct = {0};
	hsm_used_key used;
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	assert_true(hsm_ok(hsm_kms_create_alias(f->kms, &officer, "alias/kept", k.key_id)));
	assert_true(hsm_ok(encrypt(f, &user, "alias/kept", &ct)));
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	hsm_key_record_clear(&r);
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	kms_fx_close(f);
	kms_fx_open(f);
	assert_int_equal(hsm_keystore_state(f->ks), HSM_NODE_SEALED);
	hsm_buf other = {0};
	assert_int_equal(encrypt(f, &user, "alias/kept", &other).err, HSM_ERR_DISABLED);
	hsm_buf_free(&other);
	assert_true(hsm_ok(hsm_kms_enable_key(f->kms, &officer, "alias/kept")));
	assert_int_equal(decrypt(f, &ct, &used).err, HSM_ERR_SEALED);
	hsm_unseal_progress p;
	for (int i = 0; i < 2; i++)
		assert_true(hsm_ok(hsm_keystore_unseal(f->ks, f->shares[i].data, f->shares[i].len, &p)));
	assert_true(hsm_ok(decrypt(f, &ct, &used)));
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_describe_key(f->kms, &auditor, "alias/kept", &r)));
	assert_int_equal(r.primary_version, 2);
	assert_int_equal(r.state, HSM_KEY_ENABLED);
	hsm_key_record_clear(&r);
	hsm_key_record_clear(&k);
	hsm_buf_free(&ct);
}

/* GcmEncrypt / GcmDecrypt: hsmd's IVs, the tag, versions newest first, usage and roles. */
static void test_gcm(void **state)
{
	fx *f = *state;
	hsm_key_record k, mac, r;
	hsm_buf ct = {0}, ct2 = {0}, pt;
	hsm_used_key used;
	uint8_t iv[12], iv2[12];
	const uint8_t aad[] = "tenant=acme";
	hsm_buf_init_secure(&pt);
	create(f, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, NULL, &k);
	assert_true(hsm_ok(hsm_kms_gcm_encrypt(f->kms, &user, k.key_id, aad, sizeof(aad),
	                                       (const uint8_t *)"row", 3, iv, &ct, &used)));
	assert_int_equal(ct.len, 3 + 16);
	assert_int_equal(used.version, 1);
	assert_true(hsm_ok(hsm_kms_gcm_encrypt(f->kms, &user, k.key_id, aad, sizeof(aad),
	                                       (const uint8_t *)"row", 3, iv2, &ct2, &used)));
	assert_false(hsm_ct_equal(iv, iv2, sizeof(iv))); /* a fresh IV each time */
	/* Rotated twice, the first version still opens its ciphertext; the newest seals. */
	memset(&r, 0, sizeof(r));
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	hsm_key_record_clear(&r);
	assert_true(hsm_ok(hsm_kms_rotate_now(f->kms, &officer, k.key_id, &r)));
	hsm_key_record_clear(&r);
	assert_true(hsm_ok(hsm_kms_gcm_decrypt(f->kms, &user, k.key_id, iv, aad, sizeof(aad),
	                                       ct.data, ct.len, &pt, &used)));
	assert_int_equal(used.version, 1);
	assert_int_equal(pt.len, 3);
	assert_memory_equal(pt.data, "row", 3);
	hsm_buf_clear(&ct2);
	assert_true(hsm_ok(hsm_kms_gcm_encrypt(f->kms, &user, k.key_id, NULL, 0,
	                                       (const uint8_t *)"new", 3, iv2, &ct2, &used)));
	assert_int_equal(used.version, 3);
	hsm_buf_clear(&pt);
	assert_true(hsm_ok(hsm_kms_gcm_decrypt(f->kms, &user, k.key_id, iv2, NULL, 0, ct2.data,
	                                       ct2.len, &pt, &used)));
	assert_int_equal(used.version, 3);
	/* Other additional data, another IV, a flipped bit: one error, no plaintext. */
	hsm_buf_clear(&pt);
	assert_int_equal(hsm_kms_gcm_decrypt(f->kms, &user, k.key_id, iv, aad, sizeof(aad) - 1,
	                                     ct.data, ct.len, &pt, &used)
	                     .err,
	                 HSM_ERR_INVALID_CIPHERTEXT);
	assert_int_equal(hsm_kms_gcm_decrypt(f->kms, &user, k.key_id, iv2, aad, sizeof(aad),
	                                     ct.data, ct.len, &pt, &used)
	                     .err,
	                 HSM_ERR_INVALID_CIPHERTEXT);
	ct.data[0] ^= 1;
	assert_int_equal(hsm_kms_gcm_decrypt(f->kms, &user, k.key_id, iv, aad, sizeof(aad),
	                                     ct.data, ct.len, &pt, &used)
	                     .err,
	                 HSM_ERR_INVALID_CIPHERTEXT);
	assert_int_equal(pt.len, 0);
	assert_int_equal(hsm_kms_gcm_decrypt(f->kms, &user, k.key_id, iv, NULL, 0, ct.data, 15,
	                                     &pt, &used)
	                     .err,
	                 HSM_ERR_VALIDATION);
	/* Symmetric encryption keys only; users only; the state rules hold. */
	create(f, HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC, NULL, &mac);
	hsm_buf_clear(&ct2);
	assert_int_equal(hsm_kms_gcm_encrypt(f->kms, &user, mac.key_id, NULL, 0,
	                                     (const uint8_t *)"x", 1, iv, &ct2, &used)
	                     .err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	assert_int_equal(hsm_kms_gcm_encrypt(f->kms, &auditor, k.key_id, NULL, 0,
	                                     (const uint8_t *)"x", 1, iv, &ct2, &used)
	                     .err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_true(hsm_ok(hsm_kms_disable_key(f->kms, &officer, k.key_id)));
	assert_int_equal(hsm_kms_gcm_encrypt(f->kms, &user, k.key_id, NULL, 0,
	                                     (const uint8_t *)"x", 1, iv, &ct2, &used)
	                     .err,
	                 HSM_ERR_DISABLED);
	hsm_buf_free(&ct);
	hsm_buf_free(&ct2);
	hsm_buf_free(&pt);
	hsm_key_record_clear(&k);
	hsm_key_record_clear(&mac);
}

int main(void)
{
	if (hsm_failed(hsm_secure_process_init(1 << 22)))
		return 1;
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_spec_usage_combinations, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_state_rules, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_change_racing_a_cache_fill, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_displaced_snapshot_forgets_material, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_gcm, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_after_waiting_period, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_destruction_after_waiting_period, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_scheduled_work_decides_under_the_row_lock, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_decrypt_sees_the_request_alias, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_failing_scheduled_work_backs_off, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_many_failing_keys_all_back_off, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_backoff_ends_when_the_clock_steps_back, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rotation_keeps_old_versions, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_rotation_schedule, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_scheduled_work_counts_only_its_own_changes, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_scheduled_work_listed_stale_is_left_alone, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_aliases, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_alias_cache, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_account_recorded, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_versions_rotated_in_by_another_node, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_policy_with_context_condition, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_keys_share_equal_policies, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_persistence_across_restart, setup, kms_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
