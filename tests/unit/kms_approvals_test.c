/*
 * kms_approvals_test.c - quorum approvals in the KMS layer: the gate, who
 * may approve, deny and cancel, expiry on the fixture's clock, a raised
 * quorum, approvals of custodians who stopped being ones, giving a used
 * approval back, where an operation meets its caller's gate
 * (hsm_caller_commit): once, after its checks, before its change, and what
 * a stored request shows of the bytes it carries.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms/kms.h"
#include "store_test_util.h"
#include "support/kms_fixture.h"

typedef kms_fx fx;

static const hsm_caller local = {.user = "root", .access_key_id = "", .local = true,
                                 .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER)};
static const hsm_caller officer = {.user = "olivia", .access_key_id = "AKIAOLIVIA0000000000",
                                   .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER)};
static const hsm_caller alice = {.user = "alice", .access_key_id = "AKIAALICE00000000000",
                                 .roles = HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN)};
static const hsm_caller bob = {.user = "bob", .access_key_id = "AKIABOB0000000000000",
                               .roles = HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN)};
static const hsm_caller carol = {.user = "carol", .access_key_id = "AKIACAROL00000000000",
                                 .roles = HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN)};
static const hsm_caller user = {.user = "ursula", .access_key_id = "AKIAURSULA0000000000",
                                .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER)};

#define REQ "{\"KeyId\":\"k\",\"PendingWindowInDays\":7}"
#define T0 1800000000

/* An access key for user name (custodians approve with one: only those holding one count). */
static int give_access_key(fx *f, const char *name)
{
	char akid[HSM_ACCESS_KEY_ID_LEN + 1];
	hsm_secret *secret = NULL;
	hsm_result r = hsm_kms_access_key_create(f->kms, &local, name, akid, &secret);
	hsm_secret_free(secret);
	return hsm_ok(r) ? 0 : -1;
}

static int setup(void **state)
{
	hsm_kms_config cfg = {.approval_quorum = 2, .approval_ttl = 3600};
	int rc = kms_fx_setup(state, &cfg, T0);
	if (rc != 0)
		return rc;
	fx *f = *state;
	static const char *const names[] = {"olivia", "alice", "bob", "carol"};
	static const unsigned roles[] = {HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER),
	                                 HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN),
	                                 HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN),
	                                 HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN)};
	for (size_t i = 0; i < 4; i++)
		if (hsm_failed(hsm_kms_user_create(f->kms, &local, names[i], roles[i])) ||
		    give_access_key(f, names[i]) != 0)
			return -1;
	return 0;
}

/* The gate's answer; the approval request's id in id. */
static hsm_err gate(fx *f, const hsm_caller *c, const char *op, const char *req,
                    hsm_approval_gate *g)
{
	return hsm_kms_approval_gate(f->kms, c, op, req, g).err;
}

static void approve_ok(fx *f, const hsm_caller *c, const char *id)
{
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(hsm_kms_approval_approve(f->kms, c, id, &a).err, HSM_OK);
	hsm_approval_record_clear(&a);
}

static hsm_approval_state state_of(fx *f, const char *id)
{
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(hsm_kms_approval_get(f->kms, &officer, id, &a).err, HSM_OK);
	hsm_approval_state s = a.state;
	hsm_approval_record_clear(&a);
	return s;
}

static void test_gate_opens_then_runs_once_approved(void **state)
{
	fx *f = *state;
	hsm_approval_gate g, g2;
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g), HSM_ERR_APPROVAL_REQUIRED);
	assert_false(g.claimed);
	assert_int_equal(strlen(g.id), HSM_APPROVAL_ID_LEN);
	assert_non_null(strstr(hsm_last_message(), "opened with 0"));
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_string_equal(g.id, g2.id);
	approve_ok(f, &alice, g.id);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_non_null(strstr(hsm_last_message(), "is open with 1"));
	approve_ok(f, &bob, g.id);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_OK);
	assert_true(g2.claimed);
	assert_string_equal(g.id, g2.id);
	assert_int_equal(state_of(f, g.id), HSM_APPROVAL_USED);
	/* Used up: the next identical request opens another. */
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_string_not_equal(g.id, g2.id);
}

static void test_release_gives_the_approval_back(void **state)
{
	fx *f = *state;
	hsm_approval_gate g, g2;
	assert_int_equal(gate(f, &officer, "PutKeyPolicy", REQ, &g), HSM_ERR_APPROVAL_REQUIRED);
	approve_ok(f, &alice, g.id);
	approve_ok(f, &carol, g.id);
	assert_int_equal(gate(f, &officer, "PutKeyPolicy", REQ, &g2), HSM_OK);
	hsm_kms_approval_release(f->kms, &g2);
	assert_int_equal(state_of(f, g.id), HSM_APPROVAL_PENDING);
	assert_int_equal(gate(f, &officer, "PutKeyPolicy", REQ, &g2), HSM_OK);
	assert_string_equal(g.id, g2.id);
	/* Releasing a gate that claimed nothing changes nothing. */
	hsm_approval_gate none;
	memset(&none, 0, sizeof(none));
	memcpy(none.id, g.id, sizeof(none.id));
	hsm_kms_approval_release(f->kms, &none);
	assert_int_equal(state_of(f, g.id), HSM_APPROVAL_USED);
}

static void test_requests_differ_by_operation_requester_and_text(void **state)
{
	fx *f = *state;
	hsm_approval_gate a, b, c, d;
	const hsm_caller other = {.user = "alice", .access_key_id = "AKIAALICE00000000000",
	                          .roles = HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER) |
	                                   HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN)};
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &a), HSM_ERR_APPROVAL_REQUIRED);
	assert_int_equal(gate(f, &officer, "PutKeyPolicy", REQ, &b), HSM_ERR_APPROVAL_REQUIRED);
	assert_int_equal(gate(f, &other, "ScheduleKeyDeletion", REQ, &c), HSM_ERR_APPROVAL_REQUIRED);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", "{\"KeyId\":\"k\"}", &d),
	                 HSM_ERR_APPROVAL_REQUIRED);
	assert_string_not_equal(a.id, b.id);
	assert_string_not_equal(a.id, c.id);
	assert_string_not_equal(a.id, d.id);
	assert_string_not_equal(b.id, c.id);
	/* alice requested c herself: her approval would not count even if the store took it. */
	hsm_approval_record rec;
	memset(&rec, 0, sizeof(rec));
	assert_int_equal(hsm_kms_approval_approve(f->kms, &alice, c.id, &rec).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_non_null(strstr(hsm_last_message(), "own request"));
}

/*
 * A request carrying bytes (as ImportKeyMaterial does), and what the store keeps of it: the
 * request's own blob members described (and Recipient's AttestationDocument), members of the
 * same names elsewhere (an EncryptionContext's, a list's) shown as sent.
 */
#define BLOB_REQ                                                                                \
	"{\"EncryptedKeyMaterial\":\"AAECAw==\",\"EncryptionContext\":{\"Message\":\"hello\","  \
	"\"Plaintext\":\"c2VjcmV0\",\"Signature\":\"ops\"},"                                    \
	"\"ExpirationModel\":\"KEY_MATERIAL_EXPIRES\","                                         \
	"\"ImportToken\":\"BAUG\",\"KeyId\":\"k\",\"List\":[{\"Plaintext\":\"c2VjcmV0\"},"      \
	"{\"Message\":7}],\"Recipient\":{\"AttestationDocument\":\"AQ==\"},"                    \
	"\"Signature\":\"not base64!\"}"
#define BLOB_SHOWN                                                                              \
	"{\"EncryptedKeyMaterial\":{\"bytes\":4,\"hsmd:redacted\":true,\"sha256\":"             \
	"\"054edec1d0211f624fed0cbca9d4f9400b0e491c43742af2c5b0abebf0c990d8\"},"                \
	"\"EncryptionContext\":{\"Message\":\"hello\",\"Plaintext\":\"c2VjcmV0\","              \
	"\"Signature\":\"ops\"},"                                                               \
	"\"ExpirationModel\":\"KEY_MATERIAL_EXPIRES\",\"ImportToken\":{\"bytes\":3,"            \
	"\"hsmd:redacted\":true,\"sha256\":"                                                    \
	"\"787c798e39a5bc1910355bae6d0cd87a36b2e10fd0202a83e3bb6b005da83472\"},\"KeyId\":\"k\","   \
	"\"List\":[{\"Plaintext\":\"c2VjcmV0\"},{\"Message\":7}],"                              \
	"\"Recipient\":{\"AttestationDocument\":{\"bytes\":1,\"hsmd:redacted\":true,\"sha256\":"   \
	"\"4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a\"}},"               \
	"\"Signature\":{\"characters\":11,\"hsmd:redacted\":true,\"sha256\":"                   \
	"\"f17f1486250c2a7f6afd2c2a889eab4e588961369aa67eab511cab9425df2818\"}}"

static void expect_request(fx *f, const char *id, const char *text)
{
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(hsm_kms_approval_get(f->kms, &officer, id, &a).err, HSM_OK);
	assert_string_equal(a.request, text);
	hsm_approval_record_clear(&a);
}

static void test_a_stored_request_shows_only_the_size_and_digest_of_its_bytes(void **state)
{
	fx *f = *state;
	hsm_approval_gate g, g2;
	assert_int_equal(gate(f, &officer, "ImportKeyMaterial", BLOB_REQ, &g),
	                 HSM_ERR_APPROVAL_REQUIRED);
	expect_request(f, g.id, BLOB_SHOWN);
	/* A request without bytes is kept as sent. */
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2),
	                 HSM_ERR_APPROVAL_REQUIRED);
	expect_request(f, g2.id, REQ);
	/* The fingerprint covers the bytes themselves: other bytes are another request. */
	assert_int_equal(gate(f, &officer, "ImportKeyMaterial",
	                      "{\"EncryptedKeyMaterial\":\"AAECBA==\",\"KeyId\":\"k\"}", &g2),
	                 HSM_ERR_APPROVAL_REQUIRED);
	assert_string_not_equal(g.id, g2.id);
	assert_int_equal(gate(f, &officer, "ImportKeyMaterial", BLOB_REQ, &g2),
	                 HSM_ERR_APPROVAL_REQUIRED);
	assert_string_equal(g.id, g2.id);
	approve_ok(f, &alice, g.id);
	approve_ok(f, &bob, g.id);
	assert_int_equal(gate(f, &officer, "ImportKeyMaterial", BLOB_REQ, &g2), HSM_OK);
	assert_true(g2.claimed);
	assert_string_equal(g.id, g2.id);
}

/* Opens a record straight in the store, as an older hsmd kept it. */
static void store_whole(fx *f, unsigned n, const char *text)
{
	hsm_approval_record a, out;
	memset(&a, 0, sizeof(a));
	memset(&out, 0, sizeof(out));
	snprintf(a.id, sizeof(a.id), "%032x", n);
	snprintf(a.fingerprint, sizeof(a.fingerprint), "%064x", n);
	snprintf(a.operation, sizeof(a.operation), "ImportKeyMaterial");
	snprintf(a.requester, sizeof(a.requester), "olivia");
	a.request = (char *)(uintptr_t)text;
	a.required = 2;
	a.created = T0;
	a.expires = T0 + 3600;
	assert_int_equal(hsm_store_approval_open(f->store, &a, &out).err, HSM_OK);
	hsm_approval_record_clear(&out);
}

static void test_requests_stored_whole_are_described(void **state)
{
	fx *f = *state;
	uint64_t n = 99;
	assert_int_equal(hsm_kms_approval_redact_stored(f->kms, &n).err, HSM_OK);
	assert_int_equal(n, 0);
	store_whole(f, 1, BLOB_REQ);
	store_whole(f, 2, REQ);
	/* No hsmd wrote one: described by its size only (it may be anything, secrets too). */
	store_whole(f, 3, "not json: EncryptedKeyMaterial");
	assert_int_equal(hsm_kms_approval_redact_stored(f->kms, &n).err, HSM_OK);
	assert_int_equal(n, 2);
	expect_request(f, "00000000000000000000000000000003",
	               "{\"characters\":30,\"hsmd:redacted\":true}");
	expect_request(f, "00000000000000000000000000000001", BLOB_SHOWN);
	expect_request(f, "00000000000000000000000000000002", REQ);
	/* What is described already stays as it is. */
	assert_int_equal(hsm_kms_approval_redact_stored(f->kms, &n).err, HSM_OK);
	assert_int_equal(n, 0);
	expect_request(f, "00000000000000000000000000000001", BLOB_SHOWN);
}

static void test_only_custodians_approve_and_deny(void **state)
{
	fx *f = *state;
	hsm_approval_gate g;
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(gate(f, &officer, "CreateUser", REQ, &g), HSM_ERR_APPROVAL_REQUIRED);
	assert_int_equal(hsm_kms_approval_approve(f->kms, &officer, g.id, &a).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_approval_approve(f->kms, &user, g.id, &a).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_approval_deny(f->kms, &user, g.id, &a).err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_approval_get(f->kms, &user, g.id, &a).err, HSM_ERR_ACCESS_DENIED);
	assert_int_equal(hsm_kms_approval_cancel(f->kms, &alice, g.id, &a).err,
	                 HSM_ERR_ACCESS_DENIED);
	approve_ok(f, &alice, g.id);
	assert_int_equal(hsm_kms_approval_approve(f->kms, &alice, g.id, &a).err,
	                 HSM_ERR_ALREADY_EXISTS);
	assert_int_equal(hsm_kms_approval_deny(f->kms, &bob, g.id, &a).err, HSM_OK);
	assert_int_equal(a.state, HSM_APPROVAL_DENIED);
	assert_string_equal(a.closed_by, "bob");
	hsm_approval_record_clear(&a);
	assert_int_equal(hsm_kms_approval_approve(f->kms, &carol, g.id, &a).err,
	                 HSM_ERR_INVALID_STATE);
	assert_non_null(strstr(hsm_last_message(), "Denied"));
	assert_int_equal(hsm_kms_approval_approve(f->kms, &carol, "0123456789abcdef0123456789abcdef",
	                                          &a).err,
	                 HSM_ERR_NOT_FOUND);
	/* A denied request is closed: asking again opens a new one. */
	hsm_approval_gate g2;
	assert_int_equal(gate(f, &officer, "CreateUser", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_string_not_equal(g.id, g2.id);
	assert_int_equal(hsm_kms_approval_cancel(f->kms, &officer, g2.id, &a).err, HSM_OK);
	assert_int_equal(a.state, HSM_APPROVAL_CANCELLED);
	hsm_approval_record_clear(&a);
}

static void test_requests_expire(void **state)
{
	fx *f = *state;
	hsm_approval_gate g, g2;
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g), HSM_ERR_APPROVAL_REQUIRED);
	approve_ok(f, &alice, g.id);
	f->now += 3599;
	approve_ok(f, &bob, g.id);
	f->now += 1; /* the hour is up: neither approvals nor the retry count now */
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(hsm_kms_approval_approve(f->kms, &carol, g.id, &a).err,
	                 HSM_ERR_INVALID_STATE);
	assert_non_null(strstr(hsm_last_message(), "expired"));
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_string_not_equal(g.id, g2.id);
	assert_non_null(strstr(hsm_last_message(), "opened with 0"));
}

static bool clock_ahead;

static bool probe_clock(void *arg)
{
	(void)arg;
	return clock_ahead;
}

/* Requests are kept 90 days past their expiry, by the clock: not purged while it runs ahead. */
static void test_a_clock_run_ahead_purges_nothing(void **state)
{
	fx *f = *state;
	hsm_approval_gate g, g2;
	hsm_approval_record a;
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g), HSM_ERR_APPROVAL_REQUIRED);
	f->now += 200 * 86400; /* past its hour and the 90 days kept after */
	hsm_kms_set_clock_ahead_probe(f->kms, probe_clock, NULL);
	clock_ahead = true;
	assert_int_equal(gate(f, &officer, "PutKeyPolicy", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_int_equal(state_of(f, g.id), HSM_APPROVAL_PENDING); /* expired, and kept */
	clock_ahead = false;
	assert_int_equal(gate(f, &officer, "DisableKey", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	memset(&a, 0, sizeof(a));
	assert_int_equal(hsm_kms_approval_get(f->kms, &officer, g.id, &a).err, HSM_ERR_NOT_FOUND);
}

static void test_approvers_must_still_be_custodians(void **state)
{
	fx *f = *state;
	hsm_approval_gate g, g2;
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g), HSM_ERR_APPROVAL_REQUIRED);
	approve_ok(f, &alice, g.id);
	approve_ok(f, &bob, g.id);
	assert_int_equal(hsm_kms_user_set_disabled(f->kms, &local, "bob", true).err, HSM_OK);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_non_null(strstr(hsm_last_message(), "is open with 1"));
	unsigned n = 0;
	assert_int_equal(hsm_kms_custodian_count(f->kms, &n).err, HSM_OK);
	assert_int_equal(n, 2);
	approve_ok(f, &carol, g.id);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_OK);
}

static void test_a_raised_quorum_applies_to_open_requests(void **state)
{
	fx *f = *state;
	hsm_approval_gate g, g2;
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g), HSM_ERR_APPROVAL_REQUIRED);
	approve_ok(f, &alice, g.id);
	approve_ok(f, &bob, g.id);
	/* The node restarts with approval_quorum = 3. */
	kms_fx_close(f);
	f->cfg.approval_quorum = 3;
	kms_fx_open(f);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_non_null(strstr(hsm_last_message(), "needs 3 custodians' approval"));
	approve_ok(f, &carol, g.id);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_OK);
}

/* A caller's gate that counts its meetings and answers with answer. */
typedef struct counting_gate {
	hsm_commit_gate g;
	unsigned met;
	hsm_err answer;
} counting_gate;

static hsm_result count_meeting(void *arg)
{
	counting_gate *c = arg;
	c->met++;
	return c->answer == HSM_OK ? HSM_SUCCESS : HSM_FAIL(c->answer, "waits for approval");
}

static void gated(counting_gate *c, hsm_caller *caller, hsm_err answer)
{
	memset(c, 0, sizeof(*c));
	c->g.fn = count_meeting;
	c->g.arg = c;
	c->answer = answer;
	*caller = officer;
	caller->gate = &c->g;
}

static hsm_result count_one(const hsm_key_record *key, void *arg)
{
	(void)key;
	(*(size_t *)arg)++;
	return HSM_SUCCESS;
}

static size_t count_keys(fx *f)
{
	size_t n = 0;
	bool truncated = false;
	assert_int_equal(hsm_kms_list_keys(f->kms, &officer, NULL, 100, count_one, &n, &truncated).err,
	                 HSM_OK);
	return n;
}

static hsm_key_state key_state(fx *f, const char *key_id)
{
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	assert_int_equal(hsm_kms_describe_key(f->kms, &officer, key_id, &rec).err, HSM_OK);
	hsm_key_state s = rec.state;
	hsm_key_record_clear(&rec);
	return s;
}

static void test_an_operation_meets_its_gate_after_its_checks(void **state)
{
	fx *f = *state;
	hsm_create_key_req req = {.spec = HSM_SPEC_SYMMETRIC_DEFAULT, .usage = HSM_USAGE_ENCRYPT_DECRYPT};
	hsm_key_record key, out;
	memset(&key, 0, sizeof(key));
	memset(&out, 0, sizeof(out));
	assert_int_equal(hsm_kms_create_key(f->kms, &officer, &req, &key).err, HSM_OK);
	counting_gate c;
	hsm_caller caller;
	/* Refused by its own checks: the gate is not met. */
	gated(&c, &caller, HSM_ERR_APPROVAL_REQUIRED);
	assert_int_equal(hsm_kms_schedule_deletion(f->kms, &caller, key.key_id, 31, &out).err,
	                 HSM_ERR_VALIDATION);
	assert_int_equal(hsm_kms_cancel_deletion(f->kms, &caller, key.key_id, &out).err,
	                 HSM_ERR_INVALID_STATE);
	assert_int_equal(hsm_kms_schedule_deletion(f->kms, &caller, "alias/none", 7, &out).err,
	                 HSM_ERR_NOT_FOUND);
	/* The change the key itself refuses is tried before the gate (a JWT flag on an AES key). */
	assert_int_equal(hsm_kms_set_flags(f->kms, &caller, key.key_id, HSM_KEYFLAG_JWT, 0).err,
	                 HSM_ERR_INVALID_KEY_USAGE);
	assert_int_equal(c.met, 0);
	assert_false(c.g.reached);
	/* A gate that holds the request: met once, nothing changed. */
	assert_int_equal(hsm_kms_schedule_deletion(f->kms, &caller, key.key_id, 7, &out).err,
	                 HSM_ERR_APPROVAL_REQUIRED);
	assert_int_equal(c.met, 1);
	assert_true(c.g.reached && !c.g.passed);
	assert_int_equal(key_state(f, key.key_id), HSM_KEY_ENABLED);
	assert_int_equal(hsm_kms_create_key(f->kms, &caller, &req, &out).err,
	                 HSM_ERR_APPROVAL_REQUIRED);
	assert_int_equal(c.met, 2);
	assert_int_equal(count_keys(f), 1);
	/* A gate that lets it through: met once, the change made. */
	gated(&c, &caller, HSM_OK);
	assert_int_equal(hsm_kms_schedule_deletion(f->kms, &caller, key.key_id, 7, &out).err, HSM_OK);
	hsm_key_record_clear(&out);
	assert_int_equal(c.met, 1);
	assert_true(c.g.passed);
	assert_int_equal(key_state(f, key.key_id), HSM_KEY_PENDING_DELETION);
	/* Passed once, a later change of the same request does not meet it again. */
	assert_int_equal(hsm_kms_cancel_deletion(f->kms, &caller, key.key_id, &out).err, HSM_OK);
	assert_int_equal(c.met, 1);
	hsm_key_record_clear(&key);
	hsm_key_record_clear(&out);
}

/* Plants user `twin`, a copy of user `of` with roles `role` under a name differing only by
 * case, as an older hsmd could make it (hsm_kms_user_create and the store refuse one now). */
static void plant_twin(fx *f, const char *twin, const char *of, const char *role)
{
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO users (name, role, disabled, locked, failed_auth, created) "
	         "SELECT '%s', '%s', disabled, locked, failed_auth, created FROM users "
	         "WHERE name = '%s'",
	         twin, role, of);
	assert_int_equal(st_raw_exec(f->dir, sql), 0);
	hsm_user_record u;
	assert_int_equal(hsm_store_user_get(f->store, twin, &u).err, HSM_OK);
}

static unsigned valid_of(fx *f, const char *id)
{
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(hsm_kms_approval_get(f->kms, &officer, id, &a).err, HSM_OK);
	unsigned n = hsm_kms_approval_valid(f->kms, &a);
	hsm_approval_record_clear(&a);
	return n;
}

static void test_names_differing_only_by_case_are_one_custodian(void **state)
{
	fx *f = *state;
	static const hsm_caller alice_twin = {.user = "Alice", .access_key_id = "AKIAALICE10000000000",
	                                      .roles = HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN)};
	static const hsm_caller olivia_twin = {.user = "OLIVIA",
	                                       .access_key_id = "AKIAOLIVIA1000000000",
	                                       .roles = HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN)};
	unsigned custodians = 0;
	assert_int_equal(hsm_kms_custodian_count(f->kms, &custodians).err, HSM_OK);
	assert_int_equal(custodians, 3);
	plant_twin(f, "Alice", "alice", "custodian");
	plant_twin(f, "OLIVIA", "olivia", "custodian");
	assert_int_equal(give_access_key(f, "Alice"), 0);
	assert_int_equal(give_access_key(f, "OLIVIA"), 0);
	/* One more person holds the role (olivia, as OLIVIA); alice is counted once. */
	assert_int_equal(hsm_kms_custodian_count(f->kms, &custodians).err, HSM_OK);
	assert_int_equal(custodians, 4);
	assert_int_equal(hsm_kms_custodians_in(f->store, &custodians).err, HSM_OK);
	assert_int_equal(custodians, 4);
	hsm_approval_gate g, g2;
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g), HSM_ERR_APPROVAL_REQUIRED);
	/* The requester under another spelling is still the requester. */
	assert_int_equal(hsm_kms_approval_approve(f->kms, &olivia_twin, g.id, &a).err,
	                 HSM_ERR_ACCESS_DENIED);
	assert_non_null(strstr(hsm_last_message(), "of user olivia: names that differ only by case "
	                                            "are one custodian"));
	approve_ok(f, &alice, g.id);
	/* alice's other spelling is refused as a repeat, naming the spelling that approved. */
	assert_int_equal(hsm_kms_approval_approve(f->kms, &alice_twin, g.id, &a).err,
	                 HSM_ERR_ALREADY_EXISTS);
	assert_non_null(strstr(hsm_last_message(), "User Alice may not approve request "));
	assert_non_null(strstr(hsm_last_message(), ": user alice approved it already, and names "
	                                            "that differ only by case are one custodian, "
	                                            "whose approval counts once"));
	assert_int_equal(valid_of(f, g.id), 1);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_non_null(strstr(hsm_last_message(), "is open with 1"));
	/* A request an older hsmd let both spellings approve still counts them once. */
	char sql[512];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO approval_votes (approval_id, approver, position, created) "
	         "VALUES ('%s', 'Alice', 2, %d);"
	         "INSERT INTO approval_votes (approval_id, approver, position, created) "
	         "VALUES ('%s', 'OLIVIA', 3, %d)",
	         g.id, T0, g.id, T0);
	assert_int_equal(st_raw_exec(f->dir, sql), 0);
	assert_int_equal(hsm_kms_approval_get(f->kms, &officer, g.id, &a).err, HSM_OK);
	assert_int_equal(a.n_approvers, 3);
	hsm_approval_record_clear(&a);
	assert_int_equal(valid_of(f, g.id), 1);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_ERR_APPROVAL_REQUIRED);
	assert_non_null(strstr(hsm_last_message(), "is open with 1"));
	/* Another custodian makes the quorum. */
	approve_ok(f, &bob, g.id);
	assert_int_equal(valid_of(f, g.id), 2);
	assert_int_equal(gate(f, &officer, "ScheduleKeyDeletion", REQ, &g2), HSM_OK);
	assert_string_equal(g.id, g2.id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_gate_opens_then_runs_once_approved, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_release_gives_the_approval_back, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_requests_differ_by_operation_requester_and_text,
	                                    setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(
	        test_a_stored_request_shows_only_the_size_and_digest_of_its_bytes, setup,
	        kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_requests_stored_whole_are_described, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_names_differing_only_by_case_are_one_custodian,
	                                    setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_only_custodians_approve_and_deny, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_requests_expire, setup, kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_a_clock_run_ahead_purges_nothing, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_approvers_must_still_be_custodians, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_a_raised_quorum_applies_to_open_requests, setup,
	                                    kms_fx_teardown),
	    cmocka_unit_test_setup_teardown(test_an_operation_meets_its_gate_after_its_checks, setup,
	                                    kms_fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
