/*
 * store_approvals_test.c - quorum approvals (store.h, "Quorum approvals"):
 * one open request per fingerprint, approvals in order and distinct, closing
 * (one use), reopening, lists, purges, every malformed argument, the
 * request's text round trip, racing writers (threads; on PostgreSQL spread
 * over two nodes), the schema step that adds the tables, and copies and
 * snapshots that leave approvals out, rewriting stored texts (and the old
 * bytes leaving the file).  SQLite unless HSM_TEST_STORE=pg
 * (store_test_util.h).
 *
 * cmocka's assertions are not thread-safe, so worker threads count outcomes
 * and the main thread asserts on the counts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <openssl/rand.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

#define T0 1700000000
#define TTL 3600
/* The id of request 1 (approval_id(.., 1)), for SQL. */
#define ID1 "00000000000000000000000000000001"
_Static_assert(sizeof(ID1) == HSM_APPROVAL_ID_LEN + 1, "ID1 is an approval id");

/* Approval ids and fingerprints that sort in the order of n. */
static void approval_id(char out[HSM_APPROVAL_ID_LEN + 1], unsigned n)
{
	snprintf(out, HSM_APPROVAL_ID_LEN + 1, "%032x", n);
}

static void fingerprint(char out[HSM_APPROVAL_FINGERPRINT_LEN + 1], unsigned n)
{
	snprintf(out, HSM_APPROVAL_FINGERPRINT_LEN + 1, "%064x", n);
}

/* Request n for fingerprint fp, created at T0 + n, open for TTL (request points at a literal). */
static void request(hsm_approval_record *a, unsigned n, unsigned fp, uint32_t required)
{
	memset(a, 0, sizeof(*a));
	approval_id(a->id, n);
	fingerprint(a->fingerprint, fp);
	snprintf(a->operation, sizeof(a->operation), "ScheduleKeyDeletion");
	snprintf(a->requester, sizeof(a->requester), "rita");
	a->request = (char *)"{\"KeyId\":\"k1\",\"PendingWindowInDays\":7}";
	a->required = required;
	a->created = T0 + n;
	a->expires = T0 + n + TTL;
}

/* Opens request n, which must make a new record. */
static void open_new(hsm_store *s, unsigned n, unsigned fp, uint32_t required)
{
	hsm_approval_record a, out = {0};
	request(&a, n, fp, required);
	EXPECT_OK(hsm_store_approval_open(s, &a, &out));
	assert_string_equal(out.id, a.id);
	hsm_approval_record_clear(&out);
}

static void approve(hsm_store *s, unsigned n, const char *who, int64_t now)
{
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, n);
	EXPECT_OK(hsm_store_approval_approve(s, id, who, now, NULL));
}

/* The record of request n. */
static void get(hsm_store *s, unsigned n, hsm_approval_record *out)
{
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, n);
	EXPECT_OK(hsm_store_approval_get(s, id, out));
}

/* Asserts r's approvers, in order (names NULL-terminated). */
static void expect_approvers(const hsm_approval_record *r, const char *const names[])
{
	uint32_t n = 0;
	while (names[n] != NULL)
		n++;
	assert_int_equal(r->n_approvers, n);
	for (uint32_t i = 0; i < n; i++)
		assert_string_equal(r->approvers[i], names[i]);
}

static long long raw_count(st_fixture *f, const char *sql)
{
	return st_is_pg() ? st_pg_int(f->db, sql) : st_raw_int(f->dir, sql);
}

/* ---- Listing ------------------------------------------------------------------------------- */

#define MAX_SEEN 64

typedef struct seen {
	unsigned id[MAX_SEEN]; /* the n of each approval id */
	int64_t created[MAX_SEEN];
	uint32_t approvers[MAX_SEEN];
	char first[MAX_SEEN][HSM_USER_NAME_MAX + 1]; /* the first approver, or "" */
	size_t n;
	size_t stop_after; /* 0: never; else fail with CONFLICT after that many */
	hsm_store *s;      /* not NULL: approve each listed open record as "lister" */
} seen;

static hsm_result collect(const hsm_approval_record *a, void *arg)
{
	seen *s = arg;
	assert_true(s->n < MAX_SEEN);
	assert_non_null(a->request);
	s->id[s->n] = (unsigned)strtoul(a->id, NULL, 16);
	s->created[s->n] = a->created;
	s->approvers[s->n] = a->n_approvers;
	snprintf(s->first[s->n], sizeof(s->first[0]), "%s", a->n_approvers ? a->approvers[0] : "");
	s->n++;
	if (s->stop_after != 0 && s->n == s->stop_after)
		return HSM_FAIL(HSM_ERR_CONFLICT, "stop");
	/* Callbacks run after the store finished reading: they may write to it. */
	if (s->s != NULL)
		return hsm_store_approval_approve(s->s, a->id, "lister", T0, NULL);
	return HSM_SUCCESS;
}

static size_t count_all(hsm_store *s)
{
	seen all = {0};
	EXPECT_OK(hsm_store_approval_list(s, false, 0, NULL, HSM_STORE_LIST_MAX, collect, &all, NULL));
	return all.n;
}

/* ---- Names and records --------------------------------------------------------------------- */

static void test_state_names(void **state)
{
	(void)state;
	static const char *const names[] = {"Pending", "Used", "Denied", "Cancelled"};
	for (unsigned i = 0; i < HSM_APPROVAL_STATE_COUNT; i++) {
		hsm_approval_state s = HSM_APPROVAL_STATE_COUNT;
		assert_string_equal(hsm_approval_state_name((hsm_approval_state)i), names[i]);
		EXPECT_OK(hsm_approval_state_parse(names[i], &s));
		assert_int_equal(s, i);
	}
	hsm_approval_state s = HSM_APPROVAL_USED;
	EXPECT_ERR(hsm_approval_state_parse("pending", &s), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_approval_state_parse("", &s), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_approval_state_parse("Expired", &s), HSM_ERR_VALIDATION);
	assert_int_equal(s, HSM_APPROVAL_USED); /* untouched on failure */

	hsm_approval_record_clear(NULL);
	hsm_approval_record r;
	memset(&r, 0x5a, sizeof(r));
	r.request = strdup("{}");
	assert_non_null(r.request);
	hsm_approval_record_clear(&r);
	assert_null(r.request);
	assert_int_equal(r.n_approvers, 0);
	assert_string_equal(r.id, "");
	hsm_approval_record_clear(&r); /* a cleared record clears again */
}

/* ---- Open and get -------------------------------------------------------------------------- */

static void test_open_and_get(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record a, out = {0}, got = {0};
	request(&a, 1, 1, 2);
	/* What the store sets is not taken from the caller. */
	a.state = HSM_APPROVAL_USED;
	a.closed = 5;
	snprintf(a.closed_by, sizeof(a.closed_by), "mallory");
	a.n_approvers = 3;
	snprintf(a.approvers[0], sizeof(a.approvers[0]), "mallory");
	memset(a.operation, 'o', HSM_APPROVAL_OP_MAX); /* full-length fields fit */
	memset(a.requester, 'r', HSM_USER_NAME_MAX);
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	assert_string_equal(out.id, a.id);
	assert_int_equal(out.state, HSM_APPROVAL_PENDING);
	assert_int_equal(out.n_approvers, 0);
	assert_int_equal(out.closed, 0);
	assert_string_equal(out.closed_by, "");
	assert_string_equal(out.request, a.request);
	assert_ptr_not_equal(out.request, a.request); /* the record owns its copy */
	hsm_approval_record_clear(&out);

	st_reopen(f);
	get(f->s, 1, &got);
	assert_string_equal(got.id, a.id);
	assert_string_equal(got.fingerprint, a.fingerprint);
	assert_int_equal(strlen(got.operation), HSM_APPROVAL_OP_MAX);
	assert_int_equal(strlen(got.requester), HSM_USER_NAME_MAX);
	assert_string_equal(got.operation, a.operation);
	assert_string_equal(got.requester, a.requester);
	assert_string_equal(got.request, a.request);
	assert_int_equal(got.state, HSM_APPROVAL_PENDING);
	assert_int_equal(got.required, 2);
	assert_int_equal(got.created, T0 + 1);
	assert_int_equal(got.expires, T0 + 1 + TTL);
	assert_int_equal(got.closed, 0);
	assert_string_equal(got.closed_by, "");
	assert_int_equal(got.n_approvers, 0);
	hsm_approval_record_clear(&got);

	/* Absent ids, and failures leave the output alone. */
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, 2);
	got.created = 42;
	EXPECT_ERR(hsm_store_approval_get(f->s, id, &got), HSM_ERR_NOT_FOUND);
	assert_int_equal(got.created, 42);
	assert_null(got.request);

	/* Times are stored as given, negative and large ones too. */
	request(&a, 3, 3, 16);
	a.created = -5;
	a.expires = INT64_MAX;
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	hsm_approval_record_clear(&out);
	get(f->s, 3, &got);
	assert_int_equal(got.created, -5);
	assert_int_equal(got.expires, INT64_MAX);
	assert_int_equal(got.required, 16);
	hsm_approval_record_clear(&got);
}

/* One open request per fingerprint: the rule of hsm_store_approval_open. */
static void test_open_finds_the_open_request(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record a, out = {0}, got = {0};
	open_new(f->s, 1, 7, 2);
	approve(f->s, 1, "alice", T0 + 10);

	/* The same request again, under another id and with other details: the first comes back. */
	request(&a, 2, 7, 3);
	a.request = (char *)"{\"other\":true}";
	snprintf(a.operation, sizeof(a.operation), "DisableKey");
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	char first[HSM_APPROVAL_ID_LEN + 1];
	approval_id(first, 1);
	assert_string_equal(out.id, first);
	assert_string_equal(out.operation, "ScheduleKeyDeletion");
	assert_int_equal(out.required, 2);
	assert_int_equal(out.created, T0 + 1);
	assert_string_equal(out.request, "{\"KeyId\":\"k1\",\"PendingWindowInDays\":7}");
	expect_approvers(&out, (const char *const[]){"alice", NULL});
	hsm_approval_record_clear(&out);
	/* Nothing was written. */
	char second[HSM_APPROVAL_ID_LEN + 1];
	approval_id(second, 2);
	EXPECT_ERR(hsm_store_approval_get(f->s, second, &got), HSM_ERR_NOT_FOUND);
	assert_int_equal(count_all(f->s), 1);
	/* The first request's own id and fingerprint: found, no duplicate. */
	request(&a, 1, 7, 2);
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	assert_string_equal(out.id, first);
	hsm_approval_record_clear(&out);
	/* Its id for another request: taken. */
	request(&a, 1, 8, 2);
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_ALREADY_EXISTS);
	assert_null(out.request);
	assert_int_equal(count_all(f->s), 1);

	/* Opened at the moment the first expires: a new record. */
	request(&a, 3, 7, 2);
	a.created = T0 + 1 + TTL;
	a.expires = a.created + TTL;
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	assert_string_equal(out.id, a.id);
	assert_int_equal(out.n_approvers, 0);
	hsm_approval_record_clear(&out);
	assert_int_equal(count_all(f->s), 2);
	/* The expired one is still Pending (nothing marks expiry), yet no longer found. */
	get(f->s, 1, &got);
	assert_int_equal(got.state, HSM_APPROVAL_PENDING);
	hsm_approval_record_clear(&got);
	EXPECT_OK(hsm_store_approval_find(f->s, a.fingerprint, a.created, &got));
	assert_string_equal(got.id, a.id);
	hsm_approval_record_clear(&got);

	/* Closed (in any way): the next open makes a new record. */
	const hsm_approval_state closes[] = {HSM_APPROVAL_CANCELLED, HSM_APPROVAL_DENIED,
	                                     HSM_APPROVAL_USED};
	unsigned n = 3;
	for (size_t i = 0; i < 3; i++, n++) {
		char id[HSM_APPROVAL_ID_LEN + 1];
		approval_id(id, n);
		if (closes[i] == HSM_APPROVAL_USED) {
			EXPECT_OK(hsm_store_approval_approve(f->s, id, "alice", T0 + TTL + 30, NULL));
			EXPECT_OK(hsm_store_approval_approve(f->s, id, "bob", T0 + TTL + 30, NULL));
		}
		EXPECT_OK(hsm_store_approval_close(f->s, id, closes[i], "rita", T0 + TTL + 30, NULL));
		request(&a, n + 1, 7, 2);
		a.created = T0 + TTL + 40;
		a.expires = a.created + TTL;
		EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
		assert_string_equal(out.id, a.id);
		assert_int_equal(out.state, HSM_APPROVAL_PENDING);
		hsm_approval_record_clear(&out);
	}
	assert_int_equal(count_all(f->s), 5);

	/* Another fingerprint is another request. */
	open_new(f->s, 20, 9, 1);
	assert_int_equal(count_all(f->s), 6);
}

static void test_find(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record got = {0};
	char fp[HSM_APPROVAL_FINGERPRINT_LEN + 1];
	fingerprint(fp, 5);
	EXPECT_ERR(hsm_store_approval_find(f->s, fp, T0, &got), HSM_ERR_NOT_FOUND);
	open_new(f->s, 1, 5, 2);
	open_new(f->s, 2, 6, 2);
	approve(f->s, 1, "zed", T0 + 5);
	approve(f->s, 1, "amy", T0 + 6);

	EXPECT_OK(hsm_store_approval_find(f->s, fp, T0 + 1 + TTL - 1, &got));
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, 1);
	assert_string_equal(got.id, id);
	assert_string_equal(got.request, "{\"KeyId\":\"k1\",\"PendingWindowInDays\":7}");
	expect_approvers(&got, (const char *const[]){"zed", "amy", NULL});
	hsm_approval_record_clear(&got);
	/* Expired: at expires and after. */
	got.created = 42;
	EXPECT_ERR(hsm_store_approval_find(f->s, fp, T0 + 1 + TTL, &got), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_approval_find(f->s, fp, INT64_MAX, &got), HSM_ERR_NOT_FOUND);
	assert_int_equal(got.created, 42);
	/* Closed. */
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "carol", T0 + 7, NULL));
	EXPECT_ERR(hsm_store_approval_find(f->s, fp, T0 + 8, &got), HSM_ERR_NOT_FOUND);
	/* The other fingerprint's request is unaffected. */
	fingerprint(fp, 6);
	EXPECT_OK(hsm_store_approval_find(f->s, fp, T0 + 8, &got));
	approval_id(id, 2);
	assert_string_equal(got.id, id);
	assert_int_equal(got.n_approvers, 0);
	hsm_approval_record_clear(&got);
}

/* ---- Approve ------------------------------------------------------------------------------- */

static void test_approve(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record out = {0}, got = {0};
	char id[HSM_APPROVAL_ID_LEN + 1];
	open_new(f->s, 1, 1, 3);
	approval_id(id, 1);

	/* In the order they approve, whatever the names' order. */
	EXPECT_OK(hsm_store_approval_approve(f->s, id, "zed", T0 + 2, &out));
	expect_approvers(&out, (const char *const[]){"zed", NULL});
	assert_int_equal(out.state, HSM_APPROVAL_PENDING);
	assert_string_equal(out.request, "{\"KeyId\":\"k1\",\"PendingWindowInDays\":7}");
	hsm_approval_record_clear(&out);
	EXPECT_OK(hsm_store_approval_approve(f->s, id, "amy", T0 + 2, NULL));
	char longest[HSM_USER_NAME_MAX + 1];
	memset(longest, 'm', HSM_USER_NAME_MAX);
	longest[HSM_USER_NAME_MAX] = '\0';
	EXPECT_OK(hsm_store_approval_approve(f->s, id, longest, T0 + 3, &out));
	expect_approvers(&out, (const char *const[]){"zed", "amy", longest, NULL});
	hsm_approval_record_clear(&out);
	/* Approvals beyond the required count are kept (the record "may already hold enough"). */
	EXPECT_OK(hsm_store_approval_approve(f->s, id, "bo", T0 + 3, NULL));
	/* A name differing only by ASCII case is the same custodian (an older store may hold
	 * both users): refused as a second approval. */
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "Amy", T0 + 3, NULL), HSM_ERR_ALREADY_EXISTS);
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "ZED", T0 + 3, NULL), HSM_ERR_ALREADY_EXISTS);
	st_reopen(f);
	get(f->s, 1, &got);
	expect_approvers(&got, (const char *const[]){"zed", "amy", longest, "bo", NULL});
	hsm_approval_record_clear(&got);

	/* A second approval by the same custodian. */
	out.created = 42;
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "amy", T0 + 4, &out), HSM_ERR_ALREADY_EXISTS);
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "zed", T0 + 4, &out), HSM_ERR_ALREADY_EXISTS);
	assert_int_equal(out.created, 42); /* failures leave the output alone */
	assert_null(out.request);
	/* Absent. */
	char other[HSM_APPROVAL_ID_LEN + 1];
	approval_id(other, 2);
	EXPECT_ERR(hsm_store_approval_approve(f->s, other, "amy", T0 + 4, &out), HSM_ERR_NOT_FOUND);
	/* Expired: at expires and after. */
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "late", T0 + 1 + TTL, NULL),
	           HSM_ERR_INVALID_STATE);
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "late", T0 + 1 + TTL + 100, NULL),
	           HSM_ERR_INVALID_STATE);
	EXPECT_OK(hsm_store_approval_approve(f->s, id, "just-in-time", T0 + TTL, NULL));
	/* Closed, in every way. */
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 5, NULL));
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "late", T0 + 6, NULL), HSM_ERR_INVALID_STATE);
	open_new(f->s, 3, 3, 1);
	approval_id(other, 3);
	EXPECT_OK(hsm_store_approval_close(f->s, other, HSM_APPROVAL_DENIED, "carol", T0 + 5, NULL));
	EXPECT_ERR(hsm_store_approval_approve(f->s, other, "amy", T0 + 6, NULL),
	           HSM_ERR_INVALID_STATE);
	open_new(f->s, 4, 4, 1);
	approval_id(other, 4);
	EXPECT_OK(hsm_store_approval_close(f->s, other, HSM_APPROVAL_CANCELLED, "rita", T0 + 5,
	                                   NULL));
	EXPECT_ERR(hsm_store_approval_approve(f->s, other, "amy", T0 + 6, NULL),
	           HSM_ERR_INVALID_STATE);
	/* None of the refusals wrote an approver. */
	get(f->s, 1, &got);
	assert_int_equal(got.n_approvers, 5);
	assert_string_equal(got.approvers[4], "just-in-time");
	hsm_approval_record_clear(&got);
	get(f->s, 3, &got);
	assert_int_equal(got.n_approvers, 0);
	hsm_approval_record_clear(&got);
}

static void test_approver_limit(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record out = {0};
	char id[HSM_APPROVAL_ID_LEN + 1], name[16];
	open_new(f->s, 1, 1, HSM_APPROVERS_MAX);
	approval_id(id, 1);
	for (unsigned i = 0; i < HSM_APPROVERS_MAX; i++) {
		snprintf(name, sizeof(name), "custodian-%02u", HSM_APPROVERS_MAX - i);
		EXPECT_OK(hsm_store_approval_approve(f->s, id, name, T0 + 2, NULL));
	}
	/* The 17th: refused; a repeat of one of the 16 is still a repeat. */
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "custodian-17", T0 + 3, &out),
	           HSM_ERR_LIMIT_EXCEEDED);
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "custodian-01", T0 + 3, &out),
	           HSM_ERR_ALREADY_EXISTS);
	assert_null(out.request);
	get(f->s, 1, &out);
	assert_int_equal(out.n_approvers, HSM_APPROVERS_MAX);
	for (unsigned i = 0; i < HSM_APPROVERS_MAX; i++) {
		snprintf(name, sizeof(name), "custodian-%02u", HSM_APPROVERS_MAX - i);
		assert_string_equal(out.approvers[i], name);
	}
	hsm_approval_record_clear(&out);
	/* The full record is usable: 16 of 16. */
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 4, &out));
	assert_int_equal(out.state, HSM_APPROVAL_USED);
	assert_int_equal(out.n_approvers, HSM_APPROVERS_MAX);
	hsm_approval_record_clear(&out);
}

/* ---- Close and reopen ---------------------------------------------------------------------- */

static void test_close_used(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record out = {0}, got = {0};
	char id[HSM_APPROVAL_ID_LEN + 1];
	open_new(f->s, 1, 1, 2);
	approval_id(id, 1);

	/* Fewer approvers than required: none, then one. */
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "rita", T0 + 2, &out),
	           HSM_ERR_INVALID_STATE);
	approve(f->s, 1, "alice", T0 + 2);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "rita", T0 + 2, &out),
	           HSM_ERR_INVALID_STATE);
	assert_null(out.request);
	get(f->s, 1, &got);
	assert_int_equal(got.state, HSM_APPROVAL_PENDING);
	assert_int_equal(got.closed, 0);
	hsm_approval_record_clear(&got);
	approve(f->s, 1, "bob", T0 + 3);
	/* Enough, but expired: at expires and after. */
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 1 + TTL, NULL),
	           HSM_ERR_INVALID_STATE);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", INT64_MAX, NULL),
	           HSM_ERR_INVALID_STATE);

	/* Used: by is not kept for a use. */
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "rita", T0 + 4, &out));
	assert_int_equal(out.state, HSM_APPROVAL_USED);
	assert_int_equal(out.closed, T0 + 4);
	assert_string_equal(out.closed_by, "");
	expect_approvers(&out, (const char *const[]){"alice", "bob", NULL});
	hsm_approval_record_clear(&out);
	st_reopen(f);
	get(f->s, 1, &got);
	assert_int_equal(got.state, HSM_APPROVAL_USED);
	assert_int_equal(got.closed, T0 + 4);
	assert_string_equal(got.closed_by, "");
	expect_approvers(&got, (const char *const[]){"alice", "bob", NULL});
	hsm_approval_record_clear(&got);

	/* Once: closing a closed request in any way fails and changes nothing. */
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 5, NULL),
	           HSM_ERR_INVALID_STATE);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "carol", T0 + 5, NULL),
	           HSM_ERR_INVALID_STATE);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_CANCELLED, "rita", T0 + 5, NULL),
	           HSM_ERR_INVALID_STATE);
	get(f->s, 1, &got);
	assert_int_equal(got.state, HSM_APPROVAL_USED);
	assert_int_equal(got.closed, T0 + 4);
	assert_string_equal(got.closed_by, "");
	hsm_approval_record_clear(&got);

	/* An empty by, and a request requiring one approver. */
	open_new(f->s, 2, 2, 1);
	approval_id(id, 2);
	approve(f->s, 2, "alice", T0 + 3);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 4, NULL));
	/* Absent. */
	approval_id(id, 9);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 4, NULL),
	           HSM_ERR_NOT_FOUND);
}

static void test_close_denied_cancelled(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record out = {0}, got = {0};
	char id[HSM_APPROVAL_ID_LEN + 1];
	char longest[HSM_USER_NAME_MAX + 1];
	memset(longest, 'c', HSM_USER_NAME_MAX);
	longest[HSM_USER_NAME_MAX] = '\0';

	/* Denied, with no approvals, or with some: whoever refused is kept. */
	open_new(f->s, 1, 1, 2);
	approval_id(id, 1);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, longest, T0 + 2, &out));
	assert_int_equal(out.state, HSM_APPROVAL_DENIED);
	assert_int_equal(out.closed, T0 + 2);
	assert_string_equal(out.closed_by, longest);
	hsm_approval_record_clear(&out);
	open_new(f->s, 2, 2, 2);
	approve(f->s, 2, "alice", T0 + 3);
	approve(f->s, 2, "bob", T0 + 3);
	approval_id(id, 2);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "carol", T0 + 4, NULL));
	/* Cancelled by its requester. */
	open_new(f->s, 3, 3, 2);
	approve(f->s, 3, "alice", T0 + 3);
	approval_id(id, 3);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_CANCELLED, "rita", T0 + 5, &out));
	assert_int_equal(out.state, HSM_APPROVAL_CANCELLED);
	assert_string_equal(out.closed_by, "rita");
	hsm_approval_record_clear(&out);

	st_reopen(f);
	get(f->s, 1, &got);
	assert_int_equal(got.state, HSM_APPROVAL_DENIED);
	assert_string_equal(got.closed_by, longest);
	assert_int_equal(got.n_approvers, 0);
	hsm_approval_record_clear(&got);
	get(f->s, 2, &got);
	assert_int_equal(got.state, HSM_APPROVAL_DENIED);
	assert_int_equal(got.closed, T0 + 4);
	assert_string_equal(got.closed_by, "carol");
	expect_approvers(&got, (const char *const[]){"alice", "bob", NULL});
	hsm_approval_record_clear(&got);
	get(f->s, 3, &got);
	assert_int_equal(got.state, HSM_APPROVAL_CANCELLED);
	assert_int_equal(got.closed, T0 + 5);
	assert_string_equal(got.closed_by, "rita");
	hsm_approval_record_clear(&got);

	/* Twice: refused, and the first closing stands. */
	for (unsigned n = 1; n <= 3; n++) {
		approval_id(id, n);
		EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_CANCELLED, "rita", T0 + 9,
		                                    NULL),
		           HSM_ERR_INVALID_STATE);
		EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "dave", T0 + 9, NULL),
		           HSM_ERR_INVALID_STATE);
	}
	get(f->s, 2, &got);
	assert_string_equal(got.closed_by, "carol");
	assert_int_equal(got.closed, T0 + 4);
	hsm_approval_record_clear(&got);
	/* Expired requests are not closed either. */
	open_new(f->s, 4, 4, 2);
	approval_id(id, 4);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_CANCELLED, "rita", T0 + 4 + TTL,
	                                    NULL),
	           HSM_ERR_INVALID_STATE);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "carol", T0 + 5 + TTL,
	                                    NULL),
	           HSM_ERR_INVALID_STATE);
}

static void test_reopen(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record got = {0};
	char id[HSM_APPROVAL_ID_LEN + 1];
	open_new(f->s, 1, 1, 2);
	approval_id(id, 1);
	/* Pending: nothing to undo. */
	EXPECT_ERR(hsm_store_approval_reopen(f->s, id), HSM_ERR_INVALID_STATE);
	approve(f->s, 1, "alice", T0 + 2);
	approve(f->s, 1, "bob", T0 + 2);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 3, NULL));

	/* The request failed: its approvals stand, and it can be used again. */
	EXPECT_OK(hsm_store_approval_reopen(f->s, id));
	get(f->s, 1, &got);
	assert_int_equal(got.state, HSM_APPROVAL_PENDING);
	assert_int_equal(got.closed, 0);
	assert_string_equal(got.closed_by, "");
	expect_approvers(&got, (const char *const[]){"alice", "bob", NULL});
	hsm_approval_record_clear(&got);
	EXPECT_ERR(hsm_store_approval_reopen(f->s, id), HSM_ERR_INVALID_STATE);
	/* Open again: found by its fingerprint, approved further, used. */
	char fp[HSM_APPROVAL_FINGERPRINT_LEN + 1];
	fingerprint(fp, 1);
	EXPECT_OK(hsm_store_approval_find(f->s, fp, T0 + 4, &got));
	assert_string_equal(got.id, id);
	hsm_approval_record_clear(&got);
	approve(f->s, 1, "carol", T0 + 4);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 5, &got));
	expect_approvers(&got, (const char *const[]){"alice", "bob", "carol", NULL});
	assert_int_equal(got.closed, T0 + 5);
	hsm_approval_record_clear(&got);

	/* Denied or cancelled: final. */
	open_new(f->s, 2, 2, 1);
	approval_id(id, 2);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "carol", T0 + 3, NULL));
	EXPECT_ERR(hsm_store_approval_reopen(f->s, id), HSM_ERR_INVALID_STATE);
	open_new(f->s, 3, 3, 1);
	approval_id(id, 3);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_CANCELLED, "rita", T0 + 3, NULL));
	EXPECT_ERR(hsm_store_approval_reopen(f->s, id), HSM_ERR_INVALID_STATE);
	get(f->s, 3, &got);
	assert_int_equal(got.state, HSM_APPROVAL_CANCELLED);
	assert_string_equal(got.closed_by, "rita");
	hsm_approval_record_clear(&got);
	/* Absent. */
	approval_id(id, 9);
	EXPECT_ERR(hsm_store_approval_reopen(f->s, id), HSM_ERR_NOT_FOUND);
}

/* ---- Lists and purges ---------------------------------------------------------------------- */

static void test_list(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record a, out = {0};
	seen all = {0};
	EXPECT_OK(hsm_store_approval_list(f->s, false, T0, NULL, 10, collect, &all, NULL));
	assert_int_equal(all.n, 0);
	/*
	 * Seven requests made out of order; 4 and 5 were created at the same
	 * time (the lower id first).  Created: 1 < 2 < 3 < 4 = 5 < 6 < 7.
	 */
	const unsigned order[] = {3, 6, 1, 5, 7, 2, 4};
	for (size_t i = 0; i < 7; i++) {
		request(&a, order[i], order[i], 2);
		if (order[i] == 5) {
			a.created = T0 + 4;
			a.expires = a.created + TTL;
		}
		EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
		hsm_approval_record_clear(&out);
	}
	/* Approvers on some (in the order listed they interleave with records holding none). */
	approve(f->s, 6, "alice", T0 + 10);
	approve(f->s, 6, "bob", T0 + 10);
	approve(f->s, 4, "carol", T0 + 10);
	approve(f->s, 1, "dave", T0 + 10);
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, 6);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0 + 11, NULL));
	approval_id(id, 2);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "carol", T0 + 11, NULL));

	const unsigned newest[] = {7, 6, 4, 5, 3, 2, 1};
	const uint32_t approvers[] = {0, 2, 1, 0, 0, 0, 1};
	for (size_t limit = 1; limit <= 8; limit++) {
		memset(&all, 0, sizeof(all));
		EXPECT_OK(hsm_store_approval_list(f->s, false, T0, NULL, limit, collect, &all, NULL));
		assert_int_equal(all.n, limit < 7 ? limit : 7);
		for (size_t i = 0; i < all.n; i++) {
			assert_int_equal(all.id[i], newest[i]);
			assert_int_equal(all.approvers[i], approvers[i]);
		}
	}
	assert_string_equal(all.first[1], "alice");
	assert_string_equal(all.first[2], "carol");
	assert_string_equal(all.first[6], "dave");

	/* The open ones: Pending and not expired at now (3 expires at T0 + 3 + TTL). */
	const unsigned open_at_start[] = {7, 4, 5, 3, 1};
	memset(&all, 0, sizeof(all));
	EXPECT_OK(hsm_store_approval_list(f->s, true, T0 + 12, NULL, 100, collect, &all, NULL));
	assert_int_equal(all.n, 5);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(all.id[i], open_at_start[i]);
	assert_string_equal(all.first[1], "carol");
	assert_string_equal(all.first[4], "dave");
	memset(&all, 0, sizeof(all));
	EXPECT_OK(hsm_store_approval_list(f->s, true, T0 + 12, NULL, 2, collect, &all, NULL));
	assert_int_equal(all.n, 2);
	assert_int_equal(all.id[1], 4);
	memset(&all, 0, sizeof(all));
	EXPECT_OK(
	    hsm_store_approval_list(f->s, true, T0 + 3 + TTL, NULL, 100, collect, &all, NULL));
	assert_int_equal(all.n, 3); /* 1, 2 and 3 have expired (2 was closed anyway) */
	assert_int_equal(all.id[2], 5);
	memset(&all, 0, sizeof(all));
	EXPECT_OK(
	    hsm_store_approval_list(f->s, true, INT64_MAX, NULL, 100, collect, &all, NULL));
	assert_int_equal(all.n, 0);
	/* now does not filter the full list. */
	memset(&all, 0, sizeof(all));
	EXPECT_OK(
	    hsm_store_approval_list(f->s, false, INT64_MAX, NULL, 100, collect, &all, NULL));
	assert_int_equal(all.n, 7);

	/* A callback's failure stops the list and is returned. */
	memset(&all, 0, sizeof(all));
	all.stop_after = 2;
	EXPECT_ERR(hsm_store_approval_list(f->s, false, T0, NULL, 100, collect, &all, NULL),
	           HSM_ERR_CONFLICT);
	assert_int_equal(all.n, 2);
	/* A callback may write to the store. */
	memset(&all, 0, sizeof(all));
	all.s = f->s;
	EXPECT_OK(hsm_store_approval_list(f->s, true, T0 + 12, NULL, 100, collect, &all, NULL));
	assert_int_equal(all.n, 5);
	memset(&all, 0, sizeof(all));
	EXPECT_OK(hsm_store_approval_list(f->s, true, T0 + 12, NULL, 100, collect, &all, NULL));
	const uint32_t after[] = {1, 2, 1, 1, 2};
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(all.approvers[i], after[i]);

	/* Limits. */
	EXPECT_ERR(hsm_store_approval_list(f->s, false, T0, NULL, 0, collect, &all, NULL),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_approval_list(f->s, true, T0, NULL, HSM_STORE_LIST_MAX + 1, collect,
	                                   &all, NULL),
	           HSM_ERR_VALIDATION);
}

/* Opens request n created at `created` (open for TTL from then). */
static void open_at(hsm_store *s, unsigned n, int64_t created)
{
	hsm_approval_record a, out = {0};
	request(&a, n, n, 1);
	a.created = created;
	a.expires = created + TTL;
	EXPECT_OK(hsm_store_approval_open(s, &a, &out));
	hsm_approval_record_clear(&out);
}

/* One page after *cur (NULL: the first), appended to *walk; moves *cur to its last record.
 * Whether more follow. */
static bool next_page(hsm_store *s, bool open_only, int64_t now, size_t limit,
                      hsm_approval_cursor *cur, bool first, seen *walk)
{
	seen page = {0};
	bool truncated = true; /* the store must set it */
	EXPECT_OK(hsm_store_approval_list(s, open_only, now, first ? NULL : cur, limit, collect,
	                                  &page, &truncated));
	assert_true(page.n <= limit);
	for (size_t i = 0; i < page.n; i++) {
		assert_true(walk->n < MAX_SEEN);
		walk->id[walk->n++] = page.id[i];
	}
	if (page.n > 0) {
		cur->created = page.created[page.n - 1];
		approval_id(cur->id, page.id[page.n - 1]);
	}
	if (truncated)
		assert_int_equal(page.n, limit);
	return truncated;
}

/*
 * Pages go on after their cursor: a walk lists every request once, in
 * order, whatever opens meanwhile (newer ones sort before it, ones of its
 * second after it only with a greater id), and after a cursor whose
 * request is gone; Truncated says exactly whether more follow.
 */
static void test_list_pages(void **state)
{
	st_fixture *f = *state;
	/* Created: 1 < 2 < 3 < 4 = 5 = 6 < 7 < 8 < 9. */
	for (unsigned n = 1; n <= 9; n++)
		open_at(f->s, n, n >= 4 && n <= 6 ? T0 + 4 : T0 + n);
	const unsigned newest[] = {9, 8, 7, 4, 5, 6, 3, 2, 1};
	for (size_t limit = 1; limit <= 10; limit++) {
		seen walk = {0};
		hsm_approval_cursor cur;
		memset(&cur, 0, sizeof(cur));
		size_t pages = 1;
		for (bool more = next_page(f->s, false, T0, limit, &cur, true, &walk); more;
		     more = next_page(f->s, false, T0, limit, &cur, false, &walk))
			pages++;
		assert_int_equal(walk.n, 9);
		for (size_t i = 0; i < 9; i++)
			assert_int_equal(walk.id[i], newest[i]);
		/* A last page that is full says nothing follows: no empty page after it. */
		assert_int_equal(pages, (9 + limit - 1) / limit);
	}

	/* Requests opened during a walk (limit 2: 9 8 | 7 4 | then on after 4). */
	seen walk = {0};
	hsm_approval_cursor cur;
	memset(&cur, 0, sizeof(cur));
	assert_true(next_page(f->s, false, T0, 2, &cur, true, &walk));
	assert_true(next_page(f->s, false, T0, 2, &cur, false, &walk));
	open_at(f->s, 0x20, T0 + 50); /* newer than the walk's place: before it */
	open_at(f->s, 0x21, T0 + 4);  /* its second, a greater id: still ahead */
	open_at(f->s, 0, T0 + 4);     /* its second, a smaller id: behind it */
	while (next_page(f->s, false, T0, 2, &cur, false, &walk))
		;
	const unsigned seen_walk[] = {9, 8, 7, 4, 5, 6, 0x21, 3, 2, 1};
	assert_int_equal(walk.n, 10);
	for (size_t i = 0; i < 10; i++)
		assert_int_equal(walk.id[i], seen_walk[i]);

	/* After a request that no longer exists (purged): the place in the order still holds. */
	memset(&walk, 0, sizeof(walk));
	cur.created = T0 + 4;
	approval_id(cur.id, 0x10);
	while (next_page(f->s, false, T0, 3, &cur, false, &walk))
		;
	const unsigned after_gone[] = {0x21, 3, 2, 1};
	assert_int_equal(walk.n, 4);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(walk.id[i], after_gone[i]);

	/* The open ones page alike, skipping closed requests. */
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, 5);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_CANCELLED, "rita", T0 + 5, NULL));
	memset(&walk, 0, sizeof(walk));
	for (bool more = next_page(f->s, true, T0 + 5, 2, &cur, true, &walk); more;
	     more = next_page(f->s, true, T0 + 5, 2, &cur, false, &walk))
		;
	const unsigned open_walk[] = {0x20, 9, 8, 7, 0, 4, 6, 0x21, 3, 2, 1};
	assert_int_equal(walk.n, 11);
	for (size_t i = 0; i < 11; i++)
		assert_int_equal(walk.id[i], open_walk[i]);

	/* A cursor the store could not have issued. */
	seen none = {0};
	cur.created = -1;
	EXPECT_ERR(hsm_store_approval_list(f->s, false, T0, &cur, 10, collect, &none, NULL),
	           HSM_ERR_VALIDATION);
	cur.created = T0;
	snprintf(cur.id, sizeof(cur.id), "%s", "0123456789ABCDEF0123456789abcdef");
	EXPECT_ERR(hsm_store_approval_list(f->s, false, T0, &cur, 10, collect, &none, NULL),
	           HSM_ERR_VALIDATION);
	snprintf(cur.id, sizeof(cur.id), "%s", "0123");
	EXPECT_ERR(hsm_store_approval_list(f->s, false, T0, &cur, 10, collect, &none, NULL),
	           HSM_ERR_VALIDATION);
	assert_int_equal(none.n, 0);
}

/* A full page of full records: every one with its 16 approvers, in order. */
static void test_list_full_records(void **state)
{
	st_fixture *f = *state;
	char id[HSM_APPROVAL_ID_LEN + 1], name[16];
	for (unsigned n = 1; n <= 20; n++) {
		open_new(f->s, n, n, 1);
		approval_id(id, n);
		for (unsigned i = 0; i < (n % 2 ? HSM_APPROVERS_MAX : n % 5); i++) {
			snprintf(name, sizeof(name), "c%02u-%02u", n, HSM_APPROVERS_MAX - i);
			EXPECT_OK(hsm_store_approval_approve(f->s, id, name, T0 + 30, NULL));
		}
	}
	seen all = {0};
	EXPECT_OK(hsm_store_approval_list(f->s, false, T0, NULL, 20, collect, &all, NULL));
	assert_int_equal(all.n, 20);
	for (size_t i = 0; i < 20; i++) {
		unsigned n = 20 - (unsigned)i;
		assert_int_equal(all.id[i], n);
		assert_int_equal(all.approvers[i], n % 2 ? HSM_APPROVERS_MAX : n % 5);
		if (all.approvers[i] > 0) {
			snprintf(name, sizeof(name), "c%02u-%02u", n, HSM_APPROVERS_MAX);
			assert_string_equal(all.first[i], name);
		}
	}
}

/*
 * A page ends once its texts pass ST_APPROVAL_PAGE_BYTES, Truncated, and the walk goes on
 * from its last record: 20 texts of 250,000 bytes come 16 (4,000,000 bytes) and then 4.
 */
static void test_list_pages_end_at_bytes(void **state)
{
	st_fixture *f = *state;
	enum { TEXTS = 20, BYTES = 250000 };
	char *text = malloc(BYTES + 1);
	assert_non_null(text);
	memset(text, 'x', BYTES);
	memcpy(text, "{\"Junk\":\"", 9);
	memcpy(text + BYTES - 2, "\"}", 2);
	text[BYTES] = '\0';
	for (unsigned n = 1; n <= TEXTS; n++) {
		hsm_approval_record a, out = {0};
		request(&a, n, n, 1);
		snprintf(a.requester, sizeof(a.requester), "r%u", n % 3);
		a.request = text;
		EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
		hsm_approval_record_clear(&out);
	}
	free(text);
	for (int open_only = 0; open_only <= 1; open_only++) {
		const size_t expect[] = {16, 4};
		hsm_approval_cursor cur;
		memset(&cur, 0, sizeof(cur));
		unsigned next = TEXTS; /* newest first */
		for (size_t page = 0; page < 2; page++) {
			seen got = {0};
			bool truncated = page == 1;
			EXPECT_OK(hsm_store_approval_list(f->s, open_only, T0, page ? &cur : NULL, 1000,
			                                  collect, &got, &truncated));
			assert_int_equal(got.n, expect[page]);
			assert_int_equal(truncated, page == 0);
			for (size_t i = 0; i < got.n; i++)
				assert_int_equal(got.id[i], next--);
			cur.created = got.created[got.n - 1];
			approval_id(cur.id, got.id[got.n - 1]);
		}
		assert_int_equal(next, 0);
	}
	/* A page that fits is whole. */
	seen got = {0};
	bool truncated = true;
	EXPECT_OK(hsm_store_approval_list(f->s, false, T0, NULL, 16, collect, &got, &truncated));
	assert_int_equal(got.n, 16);
	assert_true(truncated);
}

static void test_purge(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record a, out = {0};
	uint64_t deleted = 99;
	EXPECT_OK(hsm_store_approval_purge(f->s, T0, &deleted));
	assert_int_equal(deleted, 0);
	/* Expiring at 100, 200 (two), 300, 400: in every state, some with approvers. */
	const int64_t expires[] = {100, 200, 200, 300, 400};
	for (unsigned n = 1; n <= 5; n++) {
		request(&a, n, n, 1);
		a.created = 10;
		a.expires = expires[n - 1];
		EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
		hsm_approval_record_clear(&out);
		approve(f->s, n, "alice", 20);
		approve(f->s, n, "bob", 20);
	}
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, 1);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", 30, NULL));
	approval_id(id, 3);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "carol", 30, NULL));

	/* Before 200: only what expires before it. */
	EXPECT_OK(hsm_store_approval_purge(f->s, 200, &deleted));
	assert_int_equal(deleted, 1);
	approval_id(id, 1);
	EXPECT_ERR(hsm_store_approval_get(f->s, id, &out), HSM_ERR_NOT_FOUND);
	assert_int_equal(count_all(f->s), 4);
	/* Their approvers went with them. */
	assert_int_equal(raw_count(f, "SELECT count(*) FROM approval_votes"), 8);
	assert_int_equal(raw_count(f, "SELECT count(*) FROM approval_votes WHERE approval_id = '" ID1
	                              "'"),
	                 0);
	/* deleted is optional; Pending and Denied alike. */
	EXPECT_OK(hsm_store_approval_purge(f->s, 201, NULL));
	assert_int_equal(count_all(f->s), 2);
	EXPECT_OK(hsm_store_approval_purge(f->s, 201, &deleted));
	assert_int_equal(deleted, 0);
	EXPECT_OK(hsm_store_approval_purge(f->s, INT64_MAX, &deleted));
	assert_int_equal(deleted, 2);
	assert_int_equal(count_all(f->s), 0);
	assert_int_equal(raw_count(f, "SELECT count(*) FROM approval_votes"), 0);
	/* A purged id may be used again. */
	open_new(f->s, 1, 1, 1);
}

/* ---- Rewriting stored texts ----------------------------------------------------------------- */

#define SECRET_TEXT "{\"ImportToken\":\"%s\",\"KeyId\":\"k1\"}"
#define SHOWN_TEXT "{\"ImportToken\":{\"bytes\":32},\"KeyId\":\"k1\"}"

typedef struct rewriter {
	unsigned calls;
	unsigned fail_at; /* 0: never; else CONFLICT at that call */
	size_t length;    /* 0: SHOWN_TEXT; else a text of that many bytes */
} rewriter;

/* Replaces the texts holding an ImportToken value, as kms/approvals.c does. */
static hsm_result rewrite_secrets(const char *request, char **replacement, void *arg)
{
	rewriter *w = arg;
	w->calls++;
	if (w->fail_at != 0 && w->calls == w->fail_at)
		return HSM_FAIL(HSM_ERR_CONFLICT, "stop");
	if (strstr(request, "\"ImportToken\":\"") == NULL)
		return HSM_SUCCESS;
	if (w->length == 0) {
		*replacement = strdup(SHOWN_TEXT);
	} else {
		*replacement = malloc(w->length + 1);
		assert_non_null(*replacement);
		memset(*replacement, 'x', w->length);
		(*replacement)[w->length] = '\0';
	}
	assert_non_null(*replacement);
	return HSM_SUCCESS;
}

/* Whether the text occurs anywhere in the store's files (a missing file holds nothing). */
static bool files_hold(const char *dir, const char *text)
{
	static const char *const names[] = {"hsmd.db", "hsmd.db-wal"};
	bool found = false;
	for (size_t i = 0; i < 2 && !found; i++) {
		char path[PATH_MAX];
		st_path(path, dir, names[i]);
		FILE *fp = fopen(path, "rb");
		if (fp == NULL)
			continue;
		hsm_buf b = {0};
		uint8_t chunk[65536];
		size_t n;
		while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
			assert_true(hsm_ok(hsm_buf_put(&b, chunk, n)));
		fclose(fp);
		found = b.len > 0 && memmem(b.data, b.len, text, strlen(text)) != NULL;
		hsm_buf_free(&b);
	}
	return found;
}

/* Requests 1..40 (more than a page of the walk); 3, 33 and 40 hold secrets[0..2]. */
static void open_with_secrets(hsm_store *s, char secrets[3][65], char texts[3][256])
{
	static const unsigned holders[] = {3, 33, 40};
	for (unsigned i = 0; i < 3; i++) {
		uint8_t raw[32];
		assert_int_equal(RAND_bytes(raw, sizeof(raw)), 1);
		for (size_t j = 0; j < sizeof(raw); j++)
			snprintf(secrets[i] + 2 * j, 3, "%02x", raw[j]);
		snprintf(texts[i], sizeof(texts[i]), SECRET_TEXT, secrets[i]);
	}
	for (unsigned n = 1; n <= 40; n++) {
		hsm_approval_record a, out = {0};
		request(&a, n, n, 2);
		for (unsigned i = 0; i < 3; i++)
			if (holders[i] == n)
				a.request = texts[i];
		EXPECT_OK(hsm_store_approval_open(s, &a, &out));
		hsm_approval_record_clear(&out);
	}
	approve(s, 33, "alice", T0 + 40);
}

static void expect_text(hsm_store *s, unsigned n, const char *text)
{
	hsm_approval_record got = {0};
	get(s, n, &got);
	assert_string_equal(got.request, text);
	hsm_approval_record_clear(&got);
}

static void test_rewrite(void **state)
{
	st_fixture *f = *state;
	char secrets[3][65], texts[3][256];
	uint64_t rewritten = 99;
	rewriter w = {0};
	EXPECT_OK(hsm_store_approval_rewrite(f->s, rewrite_secrets, &w, &rewritten));
	assert_int_equal(rewritten, 0);
	assert_int_equal(w.calls, 0);
	open_with_secrets(f->s, secrets, texts);

	/* A failing fn, or a replacement too long, rolls everything back. */
	w = (rewriter){.fail_at = 35};
	EXPECT_ERR(hsm_store_approval_rewrite(f->s, rewrite_secrets, &w, &rewritten),
	           HSM_ERR_CONFLICT);
	w = (rewriter){.length = HSM_APPROVAL_REQUEST_MAX + 1};
	EXPECT_ERR(hsm_store_approval_rewrite(f->s, rewrite_secrets, &w, &rewritten),
	           HSM_ERR_VALIDATION);
	expect_text(f->s, 3, texts[0]);
	expect_text(f->s, 40, texts[2]);
	if (!st_is_pg()) {
		st_reopen(f); /* control: the scan sees the texts while they are stored */
		for (unsigned i = 0; i < 3; i++)
			assert_true(files_hold(f->dir, secrets[i]));
	}

	w = (rewriter){0};
	EXPECT_OK(hsm_store_approval_rewrite(f->s, rewrite_secrets, &w, &rewritten));
	assert_int_equal(w.calls, 40);
	assert_int_equal(rewritten, 3);
	expect_text(f->s, 3, SHOWN_TEXT);
	expect_text(f->s, 33, SHOWN_TEXT);
	expect_text(f->s, 40, SHOWN_TEXT);
	expect_text(f->s, 4, "{\"KeyId\":\"k1\",\"PendingWindowInDays\":7}");
	/* Nothing else of a record changes. */
	hsm_approval_record got = {0};
	get(f->s, 33, &got);
	assert_int_equal(got.state, HSM_APPROVAL_PENDING);
	assert_int_equal(got.created, T0 + 33);
	expect_approvers(&got, (const char *const[]){"alice", NULL});
	hsm_approval_record_clear(&got);
	/* The old bytes left the file and its WAL (SQLite; PostgreSQL cannot promise it). */
	if (!st_is_pg())
		for (unsigned i = 0; i < 3; i++)
			assert_false(files_hold(f->dir, secrets[i]));
	/* rewritten is optional; what was rewritten is not rewritten again. */
	EXPECT_OK(hsm_store_approval_rewrite(f->s, rewrite_secrets, &w, NULL));
	EXPECT_OK(hsm_store_approval_rewrite(f->s, rewrite_secrets, &w, &rewritten));
	assert_int_equal(rewritten, 0);
}

/* ---- Malformed arguments ------------------------------------------------------------------- */

/* Ids and fingerprints not of their shape: empty, short, long, upper case, not hex. */
static const char *const bad_ids[] = {"",
                                      "0123",
                                      "A0000000000000000000000000000001",
                                      "g0000000000000000000000000000001",
                                      "0000000000000000000000000000001",
                                      "000000000000000000000000000000001",
                                      "0000000000000000 000000000000001"};
static const char *const bad_fingerprints[] = {
	"", "0123", "A000000000000000000000000000000000000000000000000000000000000001",
	"g000000000000000000000000000000000000000000000000000000000000001",
	"000000000000000000000000000000000000000000000000000000000000001",
	"00000000000000000000000000000000000000000000000000000000000000001"};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void test_malformed_open(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record a, out = {0};
	for (size_t i = 0; i < COUNT(bad_ids); i++) {
		request(&a, 1, 1, 1);
		if (strlen(bad_ids[i]) > HSM_APPROVAL_ID_LEN)
			memset(a.id, '0', sizeof(a.id)); /* no room for the NUL */
		else
			snprintf(a.id, sizeof(a.id), "%s", bad_ids[i]);
		EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	}
	for (size_t i = 0; i < COUNT(bad_fingerprints); i++) {
		request(&a, 1, 1, 1);
		if (strlen(bad_fingerprints[i]) > HSM_APPROVAL_FINGERPRINT_LEN)
			memset(a.fingerprint, 'a', sizeof(a.fingerprint));
		else
			snprintf(a.fingerprint, sizeof(a.fingerprint), "%s", bad_fingerprints[i]);
		EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	}
	/* Empty or overlong operation and requester. */
	request(&a, 1, 1, 1);
	a.operation[0] = '\0';
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	request(&a, 1, 1, 1);
	memset(a.operation, 'o', sizeof(a.operation));
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	request(&a, 1, 1, 1);
	a.requester[0] = '\0';
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	request(&a, 1, 1, 1);
	memset(a.requester, 'r', sizeof(a.requester));
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	/* required outside 1..16. */
	const uint32_t bad_required[] = {0, HSM_APPROVERS_MAX + 1, UINT32_MAX};
	for (size_t i = 0; i < COUNT(bad_required); i++) {
		request(&a, 1, 1, bad_required[i]);
		EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	}
	/* Expiring at or before its creation. */
	request(&a, 1, 1, 1);
	a.expires = a.created;
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	a.expires = a.created - 1;
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	/* No request, or one byte too long. */
	request(&a, 1, 1, 1);
	a.request = NULL;
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	char *big = malloc(HSM_APPROVAL_REQUEST_MAX + 2);
	assert_non_null(big);
	memset(big, 'x', HSM_APPROVAL_REQUEST_MAX + 1);
	big[HSM_APPROVAL_REQUEST_MAX + 1] = '\0';
	a.request = big;
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_VALIDATION);
	free(big);
	/* Nothing was written, and out was left alone. */
	assert_null(out.request);
	assert_string_equal(out.id, "");
	assert_int_equal(count_all(f->s), 0);
	/* The same request, well formed, opens. */
	open_new(f->s, 1, 1, 1);
}

static void test_malformed_lookups(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record out = {0};
	uint64_t deleted = 0;
	char longest[HSM_USER_NAME_MAX + 2];
	memset(longest, 'n', sizeof(longest) - 1);
	longest[sizeof(longest) - 1] = '\0'; /* one byte too long */
	open_new(f->s, 1, 1, 1);
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, 1);

	/* An id that is not one names no approval. */
	for (size_t i = 0; i < COUNT(bad_ids); i++) {
		EXPECT_ERR(hsm_store_approval_get(f->s, bad_ids[i], &out), HSM_ERR_NOT_FOUND);
		EXPECT_ERR(hsm_store_approval_approve(f->s, bad_ids[i], "alice", T0, &out),
		           HSM_ERR_NOT_FOUND);
		EXPECT_ERR(hsm_store_approval_close(f->s, bad_ids[i], HSM_APPROVAL_DENIED, "carol", T0,
		                                    &out),
		           HSM_ERR_NOT_FOUND);
		EXPECT_ERR(hsm_store_approval_reopen(f->s, bad_ids[i]), HSM_ERR_NOT_FOUND);
	}
	/* A fingerprint that is not one is malformed. */
	for (size_t i = 0; i < COUNT(bad_fingerprints); i++)
		EXPECT_ERR(hsm_store_approval_find(f->s, bad_fingerprints[i], T0, &out),
		           HSM_ERR_VALIDATION);
	/* Approvers: empty or too long. */
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, "", T0, &out), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_approval_approve(f->s, id, longest, T0, &out), HSM_ERR_VALIDATION);
	/* Close: to must close; by must name someone for a refusal and fit for any. */
	const hsm_approval_state bad_to[] = {HSM_APPROVAL_PENDING, HSM_APPROVAL_STATE_COUNT,
	                                     (hsm_approval_state)99, (hsm_approval_state)-1};
	for (size_t i = 0; i < COUNT(bad_to); i++)
		EXPECT_ERR(hsm_store_approval_close(f->s, id, bad_to[i], "carol", T0, &out),
		           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, "", T0, &out),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_CANCELLED, "", T0, &out),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_DENIED, longest, T0, &out),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, longest, T0, &out),
	           HSM_ERR_VALIDATION);
	assert_null(out.request);
	/* Nothing changed. */
	get(f->s, 1, &out);
	assert_int_equal(out.state, HSM_APPROVAL_PENDING);
	assert_int_equal(out.n_approvers, 0);
	hsm_approval_record_clear(&out);
	EXPECT_OK(hsm_store_approval_purge(f->s, T0, &deleted));
	assert_int_equal(deleted, 0);
	assert_int_equal(count_all(f->s), 1);
}

/* ---- The request's text -------------------------------------------------------------------- */

/* Exactly n bytes of UTF-8 (1- to 4-byte characters, JSON's special ones among them). */
static char *utf8_text(size_t n)
{
	static const char *const pieces[] = {"{\"k\":", "\"\\u00e9\\\"\"", "\xc3\xa9", "\xe2\x82\xac",
	                                     "\xf0\x9f\x94\x91", "\n\t", "'%s%n'", "}"};
	char *t = malloc(n + 1);
	assert_non_null(t);
	size_t used = 0;
	for (size_t i = 0;; i++) {
		const char *p = pieces[i % COUNT(pieces)];
		size_t len = strlen(p);
		if (used + len > n)
			break;
		memcpy(t + used, p, len);
		used += len;
	}
	memset(t + used, 'x', n - used); /* whole characters only: pad with ASCII */
	t[n] = '\0';
	return t;
}

static void test_request_round_trip(void **state)
{
	st_fixture *f = *state;
	hsm_approval_record a, out = {0}, got = {0};
	const size_t sizes[] = {HSM_APPROVAL_REQUEST_MAX, 0, 1, 4095, 4096, 4097};
	for (unsigned i = 0; i < COUNT(sizes); i++) {
		char *text = utf8_text(sizes[i]);
		request(&a, i + 1, i + 1, 1);
		a.request = text;
		EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
		assert_int_equal(strlen(out.request), sizes[i]);
		assert_string_equal(out.request, text);
		hsm_approval_record_clear(&out);
		get(f->s, i + 1, &got);
		assert_int_equal(strlen(got.request), sizes[i]);
		assert_string_equal(got.request, text);
		hsm_approval_record_clear(&got);
		EXPECT_OK(hsm_store_approval_find(f->s, a.fingerprint, T0, &got));
		assert_string_equal(got.request, text);
		hsm_approval_record_clear(&got);
		EXPECT_OK(hsm_store_approval_approve(f->s, a.id, "alice", T0, &got));
		assert_string_equal(got.request, text);
		hsm_approval_record_clear(&got);
		free(text);
	}
	st_reopen(f);
	char *text = utf8_text(HSM_APPROVAL_REQUEST_MAX);
	get(f->s, 1, &got);
	assert_string_equal(got.request, text);
	assert_int_equal(memcmp(got.request, text, HSM_APPROVAL_REQUEST_MAX + 1), 0);
	hsm_approval_record_clear(&got);
	/* Lists carry whole requests too. */
	seen all = {0};
	EXPECT_OK(hsm_store_approval_list(f->s, false, T0, NULL, 100, collect, &all, NULL));
	assert_int_equal(all.n, COUNT(sizes));
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, 1);
	EXPECT_OK(hsm_store_approval_close(f->s, id, HSM_APPROVAL_USED, "", T0, &got));
	assert_string_equal(got.request, text);
	hsm_approval_record_clear(&got);
	free(text);
}

/* ---- Racing writers ------------------------------------------------------------------------ */

#define RACERS 12

typedef struct racer {
	hsm_store *s;
	pthread_barrier_t *start;
	const char *id;
	char name[HSM_USER_NAME_MAX + 1];
	unsigned fp, n; /* open: the fingerprint and request number */
	hsm_err err;    /* the outcome */
	char got_id[HSM_APPROVAL_ID_LEN + 1];
	char message[HSM_ERRMSG_MAX];
} racer;

static void note(racer *r, hsm_result res)
{
	r->err = res.err;
	if (hsm_failed(res))
		snprintf(r->message, sizeof(r->message), "%s", hsm_last_message());
}

static void *use_worker(void *arg)
{
	racer *r = arg;
	pthread_barrier_wait(r->start);
	note(r, hsm_store_approval_close(r->s, r->id, HSM_APPROVAL_USED, "", T0 + 10, NULL));
	return NULL;
}

static void *approve_worker(void *arg)
{
	racer *r = arg;
	pthread_barrier_wait(r->start);
	note(r, hsm_store_approval_approve(r->s, r->id, r->name, T0 + 10, NULL));
	return NULL;
}

static void *open_worker(void *arg)
{
	racer *r = arg;
	hsm_approval_record a, out = {0};
	request(&a, r->n, r->fp, 2);
	a.created = T0; /* the same moment: one of them opens, the others find it */
	pthread_barrier_wait(r->start);
	note(r, hsm_store_approval_open(r->s, &a, &out));
	snprintf(r->got_id, sizeof(r->got_id), "%s", out.id);
	hsm_approval_record_clear(&out);
	return NULL;
}

/*
 * The nodes racers run on: the fixture's store, and on PostgreSQL a second
 * handle on its database (another node); SQLite has one handle per store.
 */
static void open_nodes(st_fixture *f, hsm_store *nodes[2])
{
	nodes[0] = f->s;
	nodes[1] = f->s;
	if (st_is_pg())
		EXPECT_OK(hsm_store_open(f->loc, &nodes[1]));
}

static void close_nodes(hsm_store *nodes[2])
{
	if (nodes[1] != nodes[0])
		hsm_store_close(nodes[1]);
}

/* Runs n racers with fn at once; counts[err] receives how many ended with each error code. */
static void race(racer r[], size_t n, void *(*fn)(void *), unsigned counts[HSM_ERR_COUNT_])
{
	pthread_barrier_t start;
	pthread_t t[RACERS * 2];
	assert_true(n <= RACERS * 2);
	pthread_barrier_init(&start, NULL, (unsigned)n);
	for (size_t i = 0; i < n; i++) {
		r[i].start = &start;
		assert_int_equal(pthread_create(&t[i], NULL, fn, &r[i]), 0);
	}
	for (size_t i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&start);
	memset(counts, 0, sizeof(unsigned) * HSM_ERR_COUNT_);
	for (size_t i = 0; i < n; i++) {
		counts[r[i].err]++;
		/* The outcomes the contract names need no word; any other is shown. */
		if (r[i].err != HSM_OK && r[i].err != HSM_ERR_INVALID_STATE &&
		    r[i].err != HSM_ERR_LIMIT_EXCEEDED && r[i].err != HSM_ERR_ALREADY_EXISTS)
			print_message("racer %zu: %s (%s)\n", i, hsm_err_code_name(r[i].err),
			              r[i].message);
	}
}

/* Of several nodes and threads using one approved request at once, exactly one does. */
static void test_race_to_use(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[2];
	unsigned counts[HSM_ERR_COUNT_];
	racer r[RACERS];
	open_nodes(f, nodes);
	for (unsigned round = 1; round <= 4; round++) {
		char id[HSM_APPROVAL_ID_LEN + 1];
		open_new(f->s, round, round, 2);
		approve(f->s, round, "alice", T0 + 2);
		approve(f->s, round, "bob", T0 + 2);
		approval_id(id, round);
		/* Twice per request: used, reopened (its use failed), used again. */
		for (int again = 0; again < 2; again++) {
			memset(r, 0, sizeof(r));
			for (size_t i = 0; i < RACERS; i++) {
				r[i].s = nodes[i % 2];
				r[i].id = id;
			}
			race(r, RACERS, use_worker, counts);
			assert_int_equal(counts[HSM_OK], 1);
			assert_int_equal(counts[HSM_ERR_INVALID_STATE], RACERS - 1);
			hsm_approval_record got = {0};
			get(nodes[1], round, &got);
			assert_int_equal(got.state, HSM_APPROVAL_USED);
			assert_int_equal(got.n_approvers, 2);
			hsm_approval_record_clear(&got);
			if (again == 0)
				EXPECT_OK(hsm_store_approval_reopen(nodes[1], id));
		}
	}
	close_nodes(nodes);
}

/* Custodians approving one request at once all land; beyond 16, and repeats, are refused. */
static void test_race_to_approve(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[2];
	unsigned counts[HSM_ERR_COUNT_];
	racer r[RACERS * 2];
	hsm_approval_record got = {0};
	char id[HSM_APPROVAL_ID_LEN + 1];
	open_nodes(f, nodes);

	/* Distinct names: every approval is recorded, each once. */
	open_new(f->s, 1, 1, HSM_APPROVERS_MAX);
	approval_id(id, 1);
	memset(r, 0, sizeof(r));
	for (size_t i = 0; i < RACERS; i++) {
		r[i].s = nodes[i % 2];
		r[i].id = id;
		snprintf(r[i].name, sizeof(r[i].name), "custodian-%02zu", i);
	}
	race(r, RACERS, approve_worker, counts);
	assert_int_equal(counts[HSM_OK], RACERS);
	get(nodes[1], 1, &got);
	assert_int_equal(got.n_approvers, RACERS);
	for (size_t i = 0; i < RACERS; i++) {
		unsigned times = 0;
		for (uint32_t j = 0; j < got.n_approvers; j++)
			times += strcmp(got.approvers[j], r[i].name) == 0;
		assert_int_equal(times, 1);
	}
	hsm_approval_record_clear(&got);
	/* The order they landed in is the order kept (positions 1..12, no gap). */
	assert_int_equal(raw_count(f, "SELECT count(DISTINCT position) FROM approval_votes"), RACERS);
	assert_int_equal(raw_count(f, "SELECT max(position) FROM approval_votes"), RACERS);

	/* More than 16 at once: 16 land, the others hit the limit. */
	open_new(f->s, 2, 2, 1);
	approval_id(id, 2);
	memset(r, 0, sizeof(r));
	for (size_t i = 0; i < RACERS * 2; i++) {
		r[i].s = nodes[i % 2];
		r[i].id = id;
		snprintf(r[i].name, sizeof(r[i].name), "custodian-%02zu", i);
	}
	race(r, RACERS * 2, approve_worker, counts);
	assert_int_equal(counts[HSM_OK], HSM_APPROVERS_MAX);
	assert_int_equal(counts[HSM_ERR_LIMIT_EXCEEDED], RACERS * 2 - HSM_APPROVERS_MAX);
	get(nodes[0], 2, &got);
	assert_int_equal(got.n_approvers, HSM_APPROVERS_MAX);
	hsm_approval_record_clear(&got);

	/* One custodian approving from several places at once: counted once. */
	open_new(f->s, 3, 3, 1);
	approval_id(id, 3);
	memset(r, 0, sizeof(r));
	for (size_t i = 0; i < RACERS; i++) {
		r[i].s = nodes[i % 2];
		r[i].id = id;
		snprintf(r[i].name, sizeof(r[i].name), "alice");
	}
	race(r, RACERS, approve_worker, counts);
	assert_int_equal(counts[HSM_OK], 1);
	assert_int_equal(counts[HSM_ERR_ALREADY_EXISTS], RACERS - 1);
	get(nodes[0], 3, &got);
	expect_approvers(&got, (const char *const[]){"alice", NULL});
	hsm_approval_record_clear(&got);
	close_nodes(nodes);
}

/* The same request opened on several nodes at once: one record, which every opener gets. */
static void test_race_to_open(void **state)
{
	st_fixture *f = *state;
	hsm_store *nodes[2];
	unsigned counts[HSM_ERR_COUNT_];
	racer r[RACERS];
	open_nodes(f, nodes);
	for (unsigned round = 0; round < 3; round++) {
		memset(r, 0, sizeof(r));
		for (size_t i = 0; i < RACERS; i++) {
			r[i].s = nodes[i % 2];
			r[i].fp = 100 + round;
			r[i].n = 1000 * (round + 1) + (unsigned)i;
		}
		race(r, RACERS, open_worker, counts);
		assert_int_equal(counts[HSM_OK], RACERS);
		for (size_t i = 1; i < RACERS; i++)
			assert_string_equal(r[i].got_id, r[0].got_id);
		assert_int_equal(count_all(f->s), round + 1);
	}
	close_nodes(nodes);
}

/*
 * One requester holds at most HSM_APPROVALS_OPEN_PER_USER open requests: racers on two nodes
 * (PostgreSQL) opening the last ones at once land that many, no more; the same request
 * still finds its own; others open theirs; a closed or an expired one makes room.
 */
static void test_open_limit_per_requester(void **state)
{
	st_fixture *f = *state;
	const unsigned held = HSM_APPROVALS_OPEN_PER_USER - 3;
	for (unsigned n = 1; n <= held; n++)
		open_new(f->s, n, n, 2);
	hsm_store *nodes[2];
	unsigned counts[HSM_ERR_COUNT_];
	racer r[RACERS];
	open_nodes(f, nodes);
	memset(r, 0, sizeof(r));
	for (size_t i = 0; i < RACERS; i++) {
		r[i].s = nodes[i % 2];
		r[i].fp = 1000 + (unsigned)i; /* all distinct: each would open its own */
		r[i].n = 1000 + (unsigned)i;
	}
	race(r, RACERS, open_worker, counts);
	close_nodes(nodes);
	assert_int_equal(counts[HSM_OK], 3);
	assert_int_equal(counts[HSM_ERR_LIMIT_EXCEEDED], RACERS - 3);
	for (size_t i = 0; i < RACERS; i++)
		if (r[i].err == HSM_ERR_LIMIT_EXCEEDED)
			assert_non_null(strstr(r[i].message, "rita already has 100 approval requests"));
	assert_int_equal(raw_count(f, "SELECT count(*) FROM approvals"), HSM_APPROVALS_OPEN_PER_USER);

	/* The next request of rita's is refused and makes nothing; one she has open is found. */
	hsm_approval_record a, out = {0};
	request(&a, 2000, 2000, 2);
	a.created = T0 + 10;
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_LIMIT_EXCEEDED);
	request(&a, 2001, 5, 2);
	a.created = T0 + 10;
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	char id5[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id5, 5);
	assert_string_equal(out.id, id5);
	hsm_approval_record_clear(&out);
	assert_int_equal(raw_count(f, "SELECT count(*) FROM approvals"), HSM_APPROVALS_OPEN_PER_USER);

	/* Another requester's are apart. */
	request(&a, 2002, 2002, 2);
	snprintf(a.requester, sizeof(a.requester), "ross");
	a.created = T0 + 10;
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	hsm_approval_record_clear(&out);

	/* A cancelled request makes room for one. */
	EXPECT_OK(hsm_store_approval_close(f->s, id5, HSM_APPROVAL_CANCELLED, "rita", T0 + 11, NULL));
	request(&a, 2003, 2003, 2);
	a.created = T0 + 11;
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	hsm_approval_record_clear(&out);
	request(&a, 2004, 2004, 2);
	a.created = T0 + 11;
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_LIMIT_EXCEEDED);

	/* Once request 1 (created T0 + 1) expires, so does its hold. */
	request(&a, 2005, 2005, 2);
	a.created = T0 + 1 + TTL;
	a.expires = a.created + TTL;
	EXPECT_OK(hsm_store_approval_open(f->s, &a, &out));
	hsm_approval_record_clear(&out);
	request(&a, 2006, 2006, 2);
	a.created = T0 + 1 + TTL;
	a.expires = a.created + TTL;
	EXPECT_ERR(hsm_store_approval_open(f->s, &a, &out), HSM_ERR_LIMIT_EXCEEDED);
}

/* ---- Schema, copies and snapshots ---------------------------------------------------------- */

static long long table_count(st_fixture *f)
{
	if (st_is_pg())
		return st_pg_int(f->db, "SELECT count(*) FROM pg_tables WHERE tablename IN "
		                        "('approvals', 'approval_votes')");
	return st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND "
	                          "name IN ('approvals', 'approval_votes')");
}

static long long index_count(st_fixture *f)
{
	if (st_is_pg())
		return st_pg_int(f->db, "SELECT count(*) FROM pg_indexes WHERE tablename IN "
		                        "('approvals', 'approval_votes')");
	/* SQLite names the indexes of its constraints sqlite_autoindex_*. */
	return st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND "
	                          "tbl_name IN ('approvals', 'approval_votes')");
}

/* A store written before approvals existed gets them when opened. */
static void test_added_to_an_older_store(void **state)
{
	st_fixture *f = *state;
	hsm_user_record u = {.roles = 1U << HSM_ROLE_CRYPTO_OFFICER, .created = T0};
	snprintf(u.name, sizeof(u.name), "rita");
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	st_create_key(f->s, "k1", "w", 1);
	int latest = st_is_pg() ? hsm_store_pg_schema_latest() : hsm_store_sqlite_schema_latest();
	assert_int_equal(table_count(f), 2);
	assert_int_equal(index_count(f), st_is_pg() ? 6 : 5);
	st_schema_before_approvals(f);
	/* Control: the older schema (SQLite step 5, PostgreSQL step 4), without the tables. */
	assert_int_equal(table_count(f), 0);
	assert_int_equal(raw_count(f, "SELECT max(version) FROM schema_version"), st_is_pg() ? 4 : 5);

	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	assert_int_equal(raw_count(f, "SELECT max(version) FROM schema_version"), latest);
	assert_int_equal(table_count(f), 2);
	/* approvals: primary key and three; approval_votes: primary key and unique position. */
	assert_int_equal(index_count(f), st_is_pg() ? 6 : 5);
	/* What the store held is intact, and approvals work. */
	hsm_user_record got_user;
	EXPECT_OK(hsm_store_user_get(f->s, "rita", &got_user));
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(f->s, "k1", &k));
	hsm_key_record_clear(&k);
	open_new(f->s, 1, 1, 1);
	approve(f->s, 1, "alice", T0 + 2);
	hsm_approval_record got = {0};
	get(f->s, 1, &got);
	expect_approvers(&got, (const char *const[]){"alice", NULL});
	hsm_approval_record_clear(&got);
	/* Opening again changes nothing. */
	st_reopen(f);
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	assert_int_equal(count_all(f->s), 1);
}

/* The database keeps the rules even against a writer that bypasses the store. */
static void test_schema_constraints(void **state)
{
	st_fixture *f = *state;
	open_new(f->s, 1, 1, 1);
	static const char *const refused[] = {
		/* an unknown state, required out of range */
		"UPDATE approvals SET state = 'Expired'",
		"UPDATE approvals SET required = 0",
		"UPDATE approvals SET required = 17",
		/* an approver twice, two at one position, position out of range, no request */
		"INSERT INTO approval_votes VALUES ('" ID1 "', 'a', 1, 0);"
		"INSERT INTO approval_votes VALUES ('" ID1 "', 'a', 2, 0)",
		"INSERT INTO approval_votes VALUES ('" ID1 "', 'a', 1, 0);"
		"INSERT INTO approval_votes VALUES ('" ID1 "', 'b', 1, 0)",
		"INSERT INTO approval_votes VALUES ('" ID1 "', 'a', 17, 0)",
		"INSERT INTO approval_votes VALUES ('" ID1 "', 'a', 0, 0)",
		"INSERT INTO approval_votes VALUES ('00000000000000000000000000000002', 'a', 1, 0)",
	};
	hsm_store_close(f->s);
	f->s = NULL;
	for (size_t i = 0; i < COUNT(refused); i++) {
		/* A failure leaves the transaction open; closing the connection rolls it back. */
		char sql[512];
		snprintf(sql, sizeof(sql), "%sBEGIN; %s; COMMIT",
		         st_is_pg() ? "" : "PRAGMA foreign_keys=ON; ", refused[i]);
		if (st_is_pg())
			assert_int_not_equal(st_pg_exec(f->db, sql), 0);
		else
			assert_int_not_equal(st_raw_exec(f->dir, sql), SQLITE_OK);
	}
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	hsm_approval_record got = {0};
	get(f->s, 1, &got);
	assert_int_equal(got.n_approvers, 0);
	assert_int_equal(got.state, HSM_APPROVAL_PENDING);
	hsm_approval_record_clear(&got);
}

/*
 * Each lookup walks an index, and a page of the newest needs no sort.  The
 * open request of a fingerprint is sorted among the rows its index finds:
 * the fingerprint's unexpired Pending requests, one unless a caller's clock
 * went back.
 */
static void test_queries_walk_their_indexes(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	static const struct {
		const char *sql, *plan;
		bool sorts;
	} cases[] = {
		{"SELECT * FROM approvals WHERE fingerprint = ?1 AND state = 'Pending' AND "
		 "expires > ?2 ORDER BY created DESC, id LIMIT 1",
		 "USING INDEX approvals_open (fingerprint=? AND state=? AND expires>?)", true},
		/* A page seeks its place in approvals_newest (its cursor's second and older). */
		{"SELECT * FROM approvals WHERE created <= ?3 AND (created < ?3 OR id > ?4) "
		 "ORDER BY created DESC, id LIMIT ?1",
		 "SEARCH approvals USING INDEX approvals_newest (created<?)", false},
		{"SELECT * FROM approvals WHERE state = 'Pending' AND expires > ?2 AND "
		 "created <= ?3 AND (created < ?3 OR id > ?4) ORDER BY created DESC, id LIMIT ?1",
		 "SEARCH approvals USING INDEX approvals_newest (created<?)", false},
		{"SELECT count(*) FROM approvals WHERE expires < ?1",
		 "COVERING INDEX approvals_expiry (expires<?)", false},
		{"SELECT approver FROM approval_votes WHERE approval_id = ?1 ORDER BY position",
		 "(approval_id=?)", false},
	};
	char plan[1024];
	for (size_t i = 0; i < COUNT(cases); i++) {
		st_sqlite_plan(f->dir, cases[i].sql, plan, sizeof(plan));
		if (strstr(plan, cases[i].plan) == NULL ||
		    (!cases[i].sorts && strstr(plan, "TEMP B-TREE") != NULL))
			fail_msg("%s: plan %s", cases[i].sql, plan);
	}
	/* A page's approvers: the page, then each one's by key (sorted: a page's worth). */
	st_sqlite_plan(f->dir,
	               "SELECT p.id, v.approver FROM (SELECT id, created FROM approvals WHERE "
	               "created <= ?3 AND (created < ?3 OR id > ?4) ORDER BY "
	               "created DESC, id LIMIT ?1) AS p JOIN approval_votes AS v ON "
	               "v.approval_id = p.id ORDER BY p.created DESC, p.id, v.position",
	               plan, sizeof(plan));
	if (strstr(plan, "approvals_newest") == NULL || strstr(plan, "(approval_id=?)") == NULL)
		fail_msg("page approvers: plan %s", plan);
}

/* Fills a store with an approved and a closed request. */
static void add_approvals(hsm_store *s)
{
	open_new(s, 1, 1, 2);
	approve(s, 1, "alice", T0 + 2);
	open_new(s, 2, 2, 1);
	approve(s, 2, "bob", T0 + 2);
	char id[HSM_APPROVAL_ID_LEN + 1];
	approval_id(id, 2);
	EXPECT_OK(hsm_store_approval_close(s, id, HSM_APPROVAL_USED, "", T0 + 3, NULL));
}

/* Approvals are short-lived: copies and snapshots (backups) leave them out. */
static void test_not_in_copies_or_snapshots(void **state)
{
	st_fixture *f = *state;
	hsm_user_record u = {.roles = 1U << HSM_ROLE_CRYPTO_OFFICER, .created = T0};
	snprintf(u.name, sizeof(u.name), "rita");
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	add_approvals(f->s);

	/* A copy into a store of the same backend. */
	st_fixture dst = {0};
	st_fresh_location(&dst);
	EXPECT_OK(hsm_store_open(dst.loc, &dst.s));
	EXPECT_OK(hsm_store_copy(f->s, dst.s));
	hsm_user_record got_user;
	EXPECT_OK(hsm_store_user_get(dst.s, "rita", &got_user));
	assert_int_equal(count_all(dst.s), 0);
	assert_int_equal(raw_count(&dst, "SELECT count(*) FROM approval_votes"), 0);
	hsm_store_close(dst.s);
	st_release_location(&dst);

	/* A snapshot, opened as the SQLite store it is. */
	char snapdir[PATH_MAX], file[PATH_MAX];
	st_path(snapdir, f->dir, "snap");
	assert_int_equal(mkdir(snapdir, 0700), 0);
	st_path(file, snapdir, HSM_STORE_DB_FILE);
	EXPECT_OK(hsm_store_snapshot(f->s, file));
	assert_int_equal(st_raw_int(snapdir, "SELECT count(*) FROM approvals"), 0);
	assert_int_equal(st_raw_int(snapdir, "SELECT count(*) FROM approval_votes"), 0);
	/* No journal was left beside it. */
	char journal[PATH_MAX];
	st_path(journal, snapdir, HSM_STORE_DB_FILE "-journal");
	struct stat sb;
	assert_int_not_equal(stat(journal, &sb), 0);
	hsm_store *snap = NULL;
	EXPECT_OK(hsm_store_open(snapdir, &snap));
	EXPECT_OK(hsm_store_user_get(snap, "rita", &got_user));
	assert_int_equal(count_all(snap), 0);
	hsm_store_close(snap);

	/* The source keeps its approvals. */
	assert_int_equal(count_all(f->s), 2);
	hsm_approval_record got = {0};
	get(f->s, 1, &got);
	expect_approvers(&got, (const char *const[]){"alice", NULL});
	hsm_approval_record_clear(&got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_names),
		cmocka_unit_test_setup_teardown(test_open_and_get, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_open_finds_the_open_request, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_find, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_approve, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_approver_limit, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_close_used, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_close_denied_cancelled, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_reopen, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_list, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_list_pages, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_list_full_records, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_list_pages_end_at_bytes, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_purge, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_rewrite, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_malformed_open, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_malformed_lookups, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_request_round_trip, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_race_to_use, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_race_to_approve, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_race_to_open, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_open_limit_per_requester, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_added_to_an_older_store, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_schema_constraints, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_queries_walk_their_indexes, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_not_in_copies_or_snapshots, st_setup,
		                                st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
