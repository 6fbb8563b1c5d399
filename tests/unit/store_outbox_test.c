/*
 * store_outbox_test.c - the audit outbox (store.h, "Audit outbox"): the row
 * a write carries while its thread has an intent (every field, once per
 * intent, only after a commit, none for a rollback, a read or no intent),
 * a failed insert failing the change, values cut to their bounds, listing
 * per node in order and in pages, deletion (a few thousand at once),
 * copies and snapshots, which carry no rows, and the noted copy and the
 * note, which carry the thread's row alone.  SQLite unless
 * HSM_TEST_STORE=pg (store_test_util.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

/* ---- Helpers ---------------------------------------------------------------------------- */

static long long raw_int(st_fixture *f, const char *sql)
{
	return st_is_pg() ? st_pg_int(f->db, sql) : st_raw_int(f->dir, sql);
}

static void raw_exec(st_fixture *f, const char *sql)
{
	if (st_is_pg())
		assert_int_equal(st_pg_exec(f->db, sql), 0);
	else
		assert_int_equal(st_raw_exec(f->dir, sql), SQLITE_OK);
}

static long long rows(st_fixture *f)
{
	return raw_int(f, "SELECT count(*) FROM audit_outbox");
}

static hsm_store_intent intent(const char *request_id)
{
	hsm_store_intent in = {
		.node_id = "node-a",
		.request_id = request_id,
		.operation = "CreateKey",
		.principal = "arn:aws:iam::111122223333:user/alice",
		.access_key_id = "AKIAEXAMPLE000000001",
		.source = "192.0.2.7:50412",
		.key_id = "",
	};
	return in;
}

/* What a listing saw, copied out of the records the callback was given. */
#define SEEN_MAX 4096
typedef struct seen {
	size_t n;
	hsm_outbox_record r[SEEN_MAX];
} seen;

static char *text_dup(const char *s)
{
	char *d = strdup(s);
	assert_non_null(d);
	return d;
}

static hsm_result collect(const hsm_outbox_record *r, void *arg)
{
	seen *s = arg;
	assert_true(s->n < SEEN_MAX);
	hsm_outbox_record *o = &s->r[s->n++];
	o->node_id = text_dup(r->node_id);
	o->request_id = text_dup(r->request_id);
	o->created_ms = r->created_ms;
	o->operation = text_dup(r->operation);
	o->principal = text_dup(r->principal);
	o->access_key_id = text_dup(r->access_key_id);
	o->source = text_dup(r->source);
	o->key_id = text_dup(r->key_id);
	return HSM_SUCCESS;
}

static seen *list(st_fixture *f, const char *node)
{
	seen *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	EXPECT_OK(hsm_store_outbox_list(f->s, node, collect, s));
	return s;
}

static void seen_free(seen *s)
{
	for (size_t i = 0; i < s->n; i++)
		hsm_outbox_record_clear(&s->r[i]);
	free(s);
}

/* Creates key n (a write) under whatever intent the thread has. */
static void create_key(st_fixture *f, unsigned n)
{
	char id[HSM_UUID_STRLEN + 1];
	st_key_id(id, n);
	st_create_key(f->s, id, "w", 1);
}

/* ---- The row a write carries ---------------------------------------------------------------- */

static void test_write_carries_one_row(void **state)
{
	st_fixture *f = *state;
	char key_id[HSM_UUID_STRLEN + 1] = "";
	hsm_store_intent in = intent("req-1");
	in.key_id = key_id; /* filled in after begin, as a handler learns the new key's id */
	int64_t before = hsm_now_ms();
	hsm_store_intent_begin(&in);
	st_key_id(key_id, 1);
	assert_false(in.written);
	create_key(f, 1);
	assert_true(in.written);
	/* A second write of the same request: no second row, no failure. */
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/one", key_id, 1700000000, NULL));
	hsm_store_intent_end();
	int64_t after = hsm_now_ms();
	assert_int_equal(rows(f), 1);
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 1);
	const hsm_outbox_record *r = &s->r[0];
	assert_string_equal(r->node_id, "node-a");
	assert_string_equal(r->request_id, "req-1");
	assert_string_equal(r->operation, "CreateKey");
	assert_string_equal(r->principal, "arn:aws:iam::111122223333:user/alice");
	assert_string_equal(r->access_key_id, "AKIAEXAMPLE000000001");
	assert_string_equal(r->source, "192.0.2.7:50412");
	assert_string_equal(r->key_id, key_id);
	assert_true(r->created_ms >= before && r->created_ms <= after);
	seen_free(s);
	/* Both changes were made. */
	hsm_alias_record a;
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/one", &a));
	/* It is durable: a reopened store still has it. */
	st_reopen(f);
	assert_int_equal(rows(f), 1);
}

/* Fills the sender in only when a row goes in (dispatch.c's prepare). */
static int prepared;
static void prepare_sender(hsm_store_intent *in)
{
	prepared++;
	in->principal = "arn:aws:iam::111122223333:user/bob";
	in->source = "198.51.100.4:443";
}

/* A row names the key its change created when the caller has no key id yet, and its
 * sender as prepare fills it in, which no write-free request pays for. */
static void test_created_key_and_prepared_sender(void **state)
{
	st_fixture *f = *state;
	hsm_store_intent in = {.node_id = "node-a", .request_id = "req-c", .operation = "CreateKey",
	                       .prepare = prepare_sender};
	prepared = 0;
	hsm_store_intent_begin(&in);
	uint64_t count = 0;
	EXPECT_OK(hsm_store_key_count(f->s, &count));
	assert_int_equal(prepared, 0); /* a read inserts nothing, prepares nothing */
	create_key(f, 7);
	hsm_store_intent_end();
	assert_true(in.written);
	assert_int_equal(prepared, 1);
	char key_id[HSM_UUID_STRLEN + 1];
	st_key_id(key_id, 7);
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->r[0].key_id, key_id);
	assert_string_equal(s->r[0].principal, "arn:aws:iam::111122223333:user/bob");
	assert_string_equal(s->r[0].source, "198.51.100.4:443");
	seen_free(s);
}

/* A change that names no key beforehand (the scheduler's): the row names the key it wrote. */
static void test_row_names_the_key_written(void **state)
{
	st_fixture *f = *state;
	char key_id[HSM_UUID_STRLEN + 1];
	st_key_id(key_id, 8);
	create_key(f, 8);
	hsm_store_intent in = {.node_id = "node-a", .request_id = "act-1",
	                       .operation = "ScheduledKeyWork", .principal = "hsmd"};
	hsm_store_intent_begin(&in);
	EXPECT_OK(hsm_store_key_destroy(f->s, key_id, 1700000000));
	hsm_store_intent_end();
	assert_true(in.written);
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->r[0].key_id, key_id);
	assert_string_equal(s->r[0].operation, "ScheduledKeyWork");
	seen_free(s);
}

/* Authentication's row, then the handler's under the same request id: one row, the handler's. */
static void test_later_intent_of_a_request_names_what_it_did(void **state)
{
	st_fixture *f = *state;
	char key_id[HSM_UUID_STRLEN + 1];
	st_key_id(key_id, 9);
	create_key(f, 9);
	const char *names[] = {"outbox-auth"};
	hsm_buf one = {0};
	assert_true(hsm_ok(hsm_buf_put_str(&one, "1")));
	const hsm_buf *values[] = {&one};
	hsm_store_intent auth = {.node_id = "node-a", .request_id = "req-9",
	                         .operation = "Authenticate", .principal = "alice",
	                         .access_key_id = "AKIAEXAMPLE000000009"};
	hsm_store_intent_begin(&auth);
	EXPECT_OK(hsm_store_meta_put(f->s, 1, names, values));
	hsm_store_intent_end();
	hsm_buf_free(&one);
	assert_true(auth.written);
	int64_t first_ms = 0;
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 1);
	first_ms = s->r[0].created_ms;
	seen_free(s);
	hsm_store_intent handler = {.node_id = "node-a", .request_id = "req-9",
	                            .operation = "ScheduleKeyDeletion",
	                            .principal = "arn:aws:iam::111122223333:user/alice",
	                            .source = "192.0.2.9:4431"};
	hsm_store_intent_begin(&handler);
	EXPECT_OK(hsm_store_key_destroy(f->s, key_id, 1700000000));
	hsm_store_intent_end();
	assert_true(handler.written);
	s = list(f, "node-a");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->r[0].operation, "ScheduleKeyDeletion");
	assert_string_equal(s->r[0].key_id, key_id);
	assert_string_equal(s->r[0].principal, "arn:aws:iam::111122223333:user/alice");
	assert_string_equal(s->r[0].source, "192.0.2.9:4431");
	assert_string_equal(s->r[0].access_key_id, "AKIAEXAMPLE000000009"); /* kept: none given */
	assert_true(s->r[0].created_ms == first_ms);
	seen_free(s);
}

/* Strings left NULL are stored as "". */
static void test_null_fields_are_empty(void **state)
{
	st_fixture *f = *state;
	/* A change that touches no key (one that does would name it: below). */
	hsm_store_intent in = {.node_id = "node-a", .request_id = "req-2", .operation = "Seal"};
	const char *names[] = {"outbox-test"};
	hsm_buf one = {0};
	assert_true(hsm_ok(hsm_buf_put_str(&one, "1")));
	const hsm_buf *values[] = {&one};
	hsm_store_intent_begin(&in);
	EXPECT_OK(hsm_store_meta_put(f->s, 1, names, values));
	hsm_buf_free(&one);
	hsm_store_intent_end();
	assert_true(in.written);
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->r[0].principal, "");
	assert_string_equal(s->r[0].access_key_id, "");
	assert_string_equal(s->r[0].source, "");
	assert_string_equal(s->r[0].key_id, "");
	seen_free(s);
}

static void test_rollback_leaves_no_row(void **state)
{
	st_fixture *f = *state;
	char key_id[HSM_UUID_STRLEN + 1];
	st_key_id(key_id, 1);
	create_key(f, 1);
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/taken", key_id, 1700000000, NULL));
	hsm_store_intent in = intent("req-3");
	hsm_store_intent_begin(&in);
	EXPECT_ERR(hsm_store_alias_create(f->s, "alias/taken", key_id, 1700000001, NULL),
	           HSM_ERR_ALREADY_EXISTS);
	EXPECT_ERR(hsm_store_alias_delete(f->s, "alias/absent"), HSM_ERR_NOT_FOUND);
	assert_false(in.written);
	assert_int_equal(rows(f), 0);
	/* The request's next write that commits carries the row. */
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/free", key_id, 1700000001, NULL));
	assert_true(in.written);
	hsm_store_intent_end();
	assert_int_equal(rows(f), 1);
}

static void test_no_intent_no_row(void **state)
{
	st_fixture *f = *state;
	create_key(f, 1);
	assert_int_equal(rows(f), 0);
	hsm_store_intent in = intent("req-4");
	hsm_store_intent_begin(&in);
	hsm_store_intent_end();
	create_key(f, 2);
	assert_false(in.written);
	assert_int_equal(rows(f), 0);
	hsm_store_intent_end(); /* without an intent: nothing to do */
}

/* Reads under an intent write nothing, whatever they read through. */
static void test_reads_carry_no_row(void **state)
{
	st_fixture *f = *state;
	char key_id[HSM_UUID_STRLEN + 1];
	st_key_id(key_id, 1);
	create_key(f, 1);
	hsm_store_intent in = intent("req-5");
	hsm_store_intent_begin(&in);
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(f->s, key_id, &k));
	hsm_key_record_clear(&k);
	uint64_t count = 0;
	EXPECT_OK(hsm_store_key_count(f->s, &count));
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	EXPECT_ERR(hsm_store_approval_get(f->s, "0123456789abcdef0123456789abcdef", &a),
	           HSM_ERR_NOT_FOUND);
	hsm_approval_record_clear(&a);
	seen *s = list(f, "node-a");
	seen_free(s);
	hsm_store_intent_end();
	assert_false(in.written);
	assert_int_equal(rows(f), 0);
}

/* A row that cannot be written fails the change: none is made without it. */
static void test_failed_insert_fails_the_change(void **state)
{
	st_fixture *f = *state;
	st_poison(f, "audit_outbox", "NEW.request_id = 'req-6'");
	hsm_store_intent in = intent("req-6");
	hsm_store_intent_begin(&in);
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, "k6");
	st_version(&v, "k6", 1, "w", 1);
	hsm_result r = hsm_store_key_create(f->s, &k, &v);
	hsm_store_intent_end();
	assert_true(hsm_failed(r));
	assert_false(in.written);
	hsm_key_record got = {0};
	EXPECT_ERR(hsm_store_key_get(f->s, "k6", &got), HSM_ERR_NOT_FOUND);
	/* Another request's row goes in: the same change then commits. */
	in = intent("req-7");
	hsm_store_intent_begin(&in);
	EXPECT_OK(hsm_store_key_create(f->s, &k, &v));
	hsm_store_intent_end();
	hsm_version_record_clear(&v);
	assert_true(in.written);
	EXPECT_OK(hsm_store_key_get(f->s, "k6", &got));
	hsm_key_record_clear(&got);
	assert_int_equal(rows(f), 1);
}

/* Longer values are cut to their bounds, never refused; delete cuts ids the same way. */
static void test_values_cut_to_bounds(void **state)
{
	st_fixture *f = *state;
	char lng[400];
	memset(lng, 'x', sizeof(lng) - 1);
	lng[sizeof(lng) - 1] = '\0';
	hsm_store_intent in = {.node_id = lng, .request_id = lng, .operation = lng,
	                       .principal = lng, .access_key_id = lng, .source = lng,
	                       .key_id = lng};
	hsm_store_intent_begin(&in);
	create_key(f, 1);
	hsm_store_intent_end();
	assert_true(in.written);
	seen *s = list(f, lng);
	assert_int_equal(s->n, 1);
	const hsm_outbox_record *r = &s->r[0];
	assert_int_equal(strlen(r->node_id), HSM_OUTBOX_NODE_ID_MAX);
	assert_int_equal(strlen(r->request_id), HSM_OUTBOX_REQUEST_ID_MAX);
	assert_int_equal(strlen(r->operation), HSM_OUTBOX_OPERATION_MAX);
	assert_int_equal(strlen(r->principal), HSM_OUTBOX_PRINCIPAL_MAX);
	assert_int_equal(strlen(r->access_key_id), HSM_OUTBOX_ACCESS_KEY_ID_MAX);
	assert_int_equal(strlen(r->source), HSM_OUTBOX_SOURCE_MAX);
	assert_int_equal(strlen(r->key_id), HSM_OUTBOX_KEY_ID_MAX);
	seen_free(s);
	const char *ids[] = {lng};
	EXPECT_OK(hsm_store_outbox_delete(f->s, lng, ids, 1));
	assert_int_equal(rows(f), 0);
}

/* ---- Listing and deleting ---------------------------------------------------------------- */

/* Seeds n rows of node, created_ms base + i / 2 (pairs share a time), request ids "r<i>". */
static void seed(st_fixture *f, const char *node, unsigned n, long long base)
{
	char sql[512];
	if (st_is_pg())
		snprintf(sql, sizeof(sql),
		         "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
		         "SELECT '%s', 'r' || lpad(i::text, 5, '0'), %lld + i / 2, 'CreateKey' "
		         "FROM generate_series(0, %u) AS i",
		         node, base, n - 1);
	else
		snprintf(sql, sizeof(sql),
		         "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < %u) "
		         "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
		         "SELECT '%s', printf('r%%05d', i), %lld + i / 2, 'CreateKey' FROM c",
		         n - 1, node, base);
	raw_exec(f, sql);
}

static void test_list_per_node_oldest_first(void **state)
{
	st_fixture *f = *state;
	/* Inserted newest first, so no table order can pass for the listing's. */
	raw_exec(f, "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) VALUES "
	            "('node-a', 'zz', 300, 'Op3'), ('node-a', 'b', 200, 'Op2b'), "
	            "('node-a', 'a', 200, 'Op2a'), ('node-b', 'x', 100, 'Other'), "
	            "('node-a', 'm', 100, 'Op1')");
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 4);
	const char *want[] = {"m", "a", "b", "zz"};
	for (size_t i = 0; i < 4; i++) {
		assert_string_equal(s->r[i].node_id, "node-a");
		assert_string_equal(s->r[i].request_id, want[i]);
	}
	assert_int_equal(s->r[0].created_ms, 100);
	assert_string_equal(s->r[1].operation, "Op2a");
	seen_free(s);
	s = list(f, "node-b");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->r[0].request_id, "x");
	seen_free(s);
	s = list(f, "node-c");
	assert_int_equal(s->n, 0);
	seen_free(s);
}

/* More rows than a page: all of them, in order, even when the callback deletes each. */
static hsm_result delete_each(const hsm_outbox_record *r, void *arg)
{
	st_fixture *f = arg;
	const char *ids[] = {r->request_id};
	return hsm_store_outbox_delete(f->s, r->node_id, ids, 1);
}

static void test_list_pages(void **state)
{
	st_fixture *f = *state;
	enum { N = 2500 };
	seed(f, "node-a", N, 1000);
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, N);
	for (size_t i = 0; i < N; i++) {
		char want[16];
		snprintf(want, sizeof(want), "r%05zu", i);
		assert_string_equal(s->r[i].request_id, want);
		assert_int_equal(s->r[i].created_ms, 1000 + (long long)i / 2);
	}
	seen_free(s);
	EXPECT_OK(hsm_store_outbox_list(f->s, "node-a", delete_each, f));
	assert_int_equal(rows(f), 0);
}

static void test_delete_named_rows(void **state)
{
	st_fixture *f = *state;
	enum { N = 3000 };
	seed(f, "node-a", N + 10, 1000);
	seed(f, "node-b", 10, 1000);
	/* The first N of node-a's, and ids no row has, in one call. */
	static char names[N + 2][16];
	static const char *ids[N + 2];
	for (size_t i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "r%05zu", i);
		ids[i] = names[i];
	}
	ids[N] = "unknown";
	ids[N + 1] = "r99999";
	EXPECT_OK(hsm_store_outbox_delete(f->s, "node-a", ids, N + 2));
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 10);
	assert_string_equal(s->r[0].request_id, "r03000");
	seen_free(s);
	/* Another node's rows of the same ids stay. */
	assert_int_equal(raw_int(f, "SELECT count(*) FROM audit_outbox WHERE node_id = 'node-b'"),
	                 10);
	/* None at all: nothing to do. */
	EXPECT_OK(hsm_store_outbox_delete(f->s, "node-a", NULL, 0));
	assert_int_equal(rows(f), 20);
}

/* Listing and deleting under an intent carry no row of their own. */
static void test_outbox_calls_carry_no_row(void **state)
{
	st_fixture *f = *state;
	seed(f, "node-a", 3, 1000);
	hsm_store_intent in = intent("req-8");
	hsm_store_intent_begin(&in);
	const char *ids[] = {"r00000"};
	EXPECT_OK(hsm_store_outbox_delete(f->s, "node-a", ids, 1));
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 2);
	seen_free(s);
	assert_false(in.written);
	/* The intent is still the thread's: the next write carries it. */
	create_key(f, 1);
	hsm_store_intent_end();
	assert_true(in.written);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM audit_outbox WHERE request_id = 'req-8'"),
	                 1);
}

/* ---- Copies and snapshots -------------------------------------------------------------------- */

/* A copy (a restore, a move to PostgreSQL) starts with an empty outbox. */
static void test_copy_leaves_the_outbox_out(void **state)
{
	st_fixture *f = *state;
	hsm_store_intent in = intent("req-9");
	hsm_store_intent_begin(&in);
	create_key(f, 1);
	hsm_store_intent_end();
	assert_int_equal(rows(f), 1);
	st_fixture dst;
	memset(&dst, 0, sizeof(dst));
	st_fresh_location(&dst);
	EXPECT_OK(hsm_store_open(dst.loc, &dst.s));
	/* Even a copy made under an intent: its import is not the request's change here. */
	hsm_store_intent other = intent("req-10");
	hsm_store_intent_begin(&other);
	EXPECT_OK(hsm_store_copy(f->s, dst.s));
	hsm_store_intent_end();
	assert_false(other.written);
	assert_int_equal(rows(&dst), 0);
	char key_id[HSM_UUID_STRLEN + 1];
	st_key_id(key_id, 1);
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(dst.s, key_id, &k));
	hsm_key_record_clear(&k);
	hsm_store_close(dst.s);
	st_release_location(&dst);
	assert_int_equal(rows(f), 1);
}

/* The noted copy (a restore into a shared store) carries the thread's row, and only it. */
static void test_noted_copy_carries_the_row(void **state)
{
	st_fixture *f = *state;
	hsm_store_intent in = intent("req-13");
	hsm_store_intent_begin(&in);
	create_key(f, 1);
	hsm_store_intent_end();
	st_fixture dst;
	memset(&dst, 0, sizeof(dst));
	st_fresh_location(&dst);
	EXPECT_OK(hsm_store_open(dst.loc, &dst.s));
	hsm_store_intent restore = intent("req-14");
	restore.operation = "hsmctl restore";
	hsm_store_intent_begin(&restore);
	EXPECT_OK(hsm_store_copy_noted(f->s, dst.s));
	hsm_store_intent_end();
	assert_true(restore.written);
	assert_int_equal(rows(&dst), 1);
	seen *s = list(&dst, "node-a");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->r[0].request_id, "req-14");
	assert_string_equal(s->r[0].operation, "hsmctl restore");
	seen_free(s);
	char key_id[HSM_UUID_STRLEN + 1];
	st_key_id(key_id, 1);
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(dst.s, key_id, &k));
	hsm_key_record_clear(&k);
	/* A copy refused (dst is no longer empty) carries no row either. */
	hsm_store_intent again = intent("req-15");
	hsm_store_intent_begin(&again);
	hsm_result r = hsm_store_copy_noted(f->s, dst.s);
	hsm_store_intent_end();
	assert_int_equal(r.err, HSM_ERR_CONFLICT);
	assert_false(again.written);
	assert_int_equal(rows(&dst), 1);
	hsm_store_close(dst.s);
	st_release_location(&dst);
	assert_int_equal(rows(f), 1);
}

/* A note commits the intent's row and nothing else; without an intent, or twice, nothing. */
static void test_note_carries_the_row_alone(void **state)
{
	st_fixture *f = *state;
	EXPECT_OK(hsm_store_outbox_note(f->s));
	assert_int_equal(rows(f), 0);
	long long keys = raw_int(f, "SELECT count(*) FROM keys");
	hsm_store_intent in = intent("req-16");
	in.operation = "hsmctl restore";
	hsm_store_intent_begin(&in);
	EXPECT_OK(hsm_store_outbox_note(f->s));
	assert_true(in.written);
	EXPECT_OK(hsm_store_outbox_note(f->s));
	hsm_store_intent_end();
	seen *s = list(f, "node-a");
	assert_int_equal(s->n, 1);
	assert_string_equal(s->r[0].request_id, "req-16");
	assert_string_equal(s->r[0].operation, "hsmctl restore");
	assert_string_equal(s->r[0].source, "192.0.2.7:50412");
	seen_free(s);
	assert_int_equal(raw_int(f, "SELECT count(*) FROM keys"), keys);
}

/* A snapshot (what a backup holds) has no outbox rows, whoever takes it. */
static void test_snapshot_leaves_the_outbox_out(void **state)
{
	st_fixture *f = *state;
	hsm_store_intent in = intent("req-11");
	hsm_store_intent_begin(&in);
	create_key(f, 1);
	hsm_store_intent_end();
	char snapdir[PATH_MAX], file[PATH_MAX];
	st_path(snapdir, f->dir, "snap");
	assert_int_equal(mkdir(snapdir, 0700), 0);
	st_path(file, snapdir, HSM_STORE_DB_FILE);
	hsm_store_intent other = intent("req-12");
	hsm_store_intent_begin(&other);
	EXPECT_OK(hsm_store_snapshot(f->s, file));
	hsm_store_intent_end();
	assert_false(other.written);
	assert_int_equal(st_raw_int(snapdir, "SELECT count(*) FROM audit_outbox"), 0);
	assert_int_equal(st_raw_int(snapdir, "SELECT count(*) FROM keys"), 1);
	assert_int_equal(rows(f), 1);
}

/* ---- Schema ------------------------------------------------------------------------------- */

/* A store written before the outbox gets it when opened (and a lost step record is harmless). */
static void test_added_to_an_older_store(void **state)
{
	st_fixture *f = *state;
	int latest = st_is_pg() ? hsm_store_pg_schema_latest() : hsm_store_sqlite_schema_latest();
	char sql[256];
	hsm_store_close(f->s);
	f->s = NULL;
	snprintf(sql, sizeof(sql),
	         "DROP TABLE audit_outbox; DELETE FROM schema_version WHERE version = %d", latest);
	raw_exec(f, sql);
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	assert_int_equal(hsm_store_migrated_from(f->s), latest - 1);
	assert_int_equal(rows(f), 0);
	/* The step's record lost, the table kept: the step runs again. */
	hsm_store_close(f->s);
	f->s = NULL;
	snprintf(sql, sizeof(sql), "DELETE FROM schema_version WHERE version = %d", latest);
	raw_exec(f, sql);
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	hsm_store_intent in = intent("req-13");
	hsm_store_intent_begin(&in);
	create_key(f, 1);
	hsm_store_intent_end();
	assert_int_equal(rows(f), 1);
}

/* hsmctl's node id for a data directory: one per directory, whatever path names it. */
static void test_offline_node_id_names_the_directory(void **state)
{
	st_fixture *f = *state;
	char sub[PATH_MAX + 8], other[PATH_MAX + 8], link[PATH_MAX + 8], a[HSM_OUTBOX_NODE_ID_MAX + 1],
	    b[HSM_OUTBOX_NODE_ID_MAX + 1], c[HSM_OUTBOX_NODE_ID_MAX + 1],
	    d[HSM_OUTBOX_NODE_ID_MAX + 1];
	snprintf(sub, sizeof(sub), "%s/one", f->dir);
	snprintf(other, sizeof(other), "%s/two", f->dir);
	snprintf(link, sizeof(link), "%s/link", f->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(mkdir(other, 0700), 0);
	assert_int_equal(symlink(sub, link), 0);
	hsm_outbox_offline_node(sub, a);
	hsm_outbox_offline_node(link, b);
	hsm_outbox_offline_node(other, c);
	char dotted[PATH_MAX + 16];
	snprintf(dotted, sizeof(dotted), "%s/./one/", f->dir);
	hsm_outbox_offline_node(dotted, d);
	assert_int_equal(strlen(a), strlen("hsmctl-") + 16);
	assert_memory_equal(a, "hsmctl-", 7);
	assert_string_equal(a, b);
	assert_string_equal(a, d);
	assert_string_not_equal(a, c);
}

/* ---- Nodes that do not come back ------------------------------------------------------- */

#define NODES_MAX 256
typedef struct nodes_seen {
	size_t n;
	hsm_outbox_node v[NODES_MAX];
} nodes_seen;

static hsm_result collect_node(const hsm_outbox_node *n, void *arg)
{
	nodes_seen *s = arg;
	assert_true(s->n < NODES_MAX);
	s->v[s->n++] = *n;
	return HSM_SUCCESS;
}

/* Node ids whose oldest row is before the bound, in id order, with that row's time and their count. */
static void test_nodes_with_old_rows(void **state)
{
	st_fixture *f = *state;
	raw_exec(f, "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) VALUES "
	            "('node-c', 'c1', 500, 'Op'), ('node-c', 'c2', 100, 'Op'), "
	            "('node-b', 'b1', 900, 'Op'), ('node-a', 'a1', 200, 'Op'), "
	            "('node-a', 'a2', 950, 'Op'), ('node-a', 'a3', 300, 'Op')");
	nodes_seen *s = calloc(1, sizeof(*s));
	assert_non_null(s);
	EXPECT_OK(hsm_store_outbox_nodes(f->s, 800, collect_node, s));
	assert_int_equal(s->n, 2);
	assert_string_equal(s->v[0].node_id, "node-a");
	assert_int_equal(s->v[0].oldest_ms, 200);
	assert_int_equal(s->v[0].rows, 3);
	assert_string_equal(s->v[1].node_id, "node-c");
	assert_int_equal(s->v[1].oldest_ms, 100);
	assert_int_equal(s->v[1].rows, 2);
	/* The bound is strict: a node whose oldest row is at it is not listed. */
	s->n = 0;
	EXPECT_OK(hsm_store_outbox_nodes(f->s, 200, collect_node, s));
	assert_int_equal(s->n, 1);
	assert_string_equal(s->v[0].node_id, "node-c");
	s->n = 0;
	EXPECT_OK(hsm_store_outbox_nodes(f->s, 100, collect_node, s));
	assert_int_equal(s->n, 0);
	/* More ids than a page, each listed once, in order, though a callback deletes rows. */
	raw_exec(f, "DELETE FROM audit_outbox");
	char sql[512];
	snprintf(sql, sizeof(sql),
	         st_is_pg() ? "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
	                      "SELECT 'n' || lpad(i::text, 3, '0'), 'r', i, 'Op' "
	                      "FROM generate_series(0, 249) AS i"
	                    : "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c "
	                      "WHERE i < 249) INSERT INTO audit_outbox (node_id, request_id, "
	                      "created_ms, operation) SELECT printf('n%%03d', i), 'r', i, 'Op' FROM c");
	raw_exec(f, sql);
	s->n = 0;
	EXPECT_OK(hsm_store_outbox_nodes(f->s, 1000, collect_node, s));
	assert_int_equal(s->n, 250);
	for (size_t i = 0; i < 250; i++) {
		char want[8];
		snprintf(want, sizeof(want), "n%03zu", i);
		assert_string_equal(s->v[i].node_id, want);
		assert_int_equal(s->v[i].oldest_ms, (int64_t)i);
		assert_int_equal(s->v[i].rows, 1);
	}
	free(s);
}

/*
 * Holding another node's id: granted while nobody claims it, and then no
 * node can claim it, nor hold it too, until it is released; never granted
 * while its node runs.  SQLite: the directory lock already keeps everyone
 * else out, so always granted.
 */
static void test_node_hold(void **state)
{
	st_fixture *f = *state;
	hsm_node_hold *h = NULL, *h2 = NULL;
	/* SQLite's directory lock lets one process in; PostgreSQL is shared (hsmctl rows too). */
	assert_int_equal(hsm_store_one_holder(f->s), !st_is_pg());
	EXPECT_OK(hsm_store_node_hold(f->s, "node-gone", &h));
	assert_non_null(h);
	EXPECT_OK(hsm_node_hold_check(h));
	EXPECT_ERR(hsm_store_node_hold(f->s, "", &h2), HSM_ERR_VALIDATION);
	bool adopting = true;
	EXPECT_ERR(hsm_store_claim_node_why(f->s, "", &adopting), HSM_ERR_VALIDATION);
	assert_false(adopting);
	if (!st_is_pg()) {
		EXPECT_OK(hsm_store_claim_node_why(f->s, "node-gone", &adopting));
		assert_false(adopting);
		hsm_node_hold_release(h);
		hsm_node_hold_release(NULL);
		return;
	}
	hsm_store *b = NULL;
	EXPECT_OK(hsm_store_open(f->loc, &b));
	EXPECT_ERR(hsm_store_claim_node(b, "node-gone"), HSM_ERR_CONFLICT);
	assert_non_null(strstr(hsm_last_message(), "\"hsmd adopting node-gone\""));
	/* The holder is a hold, which ends by itself: worth waiting for. */
	EXPECT_ERR(hsm_store_claim_node_why(b, "node-gone", &adopting), HSM_ERR_CONFLICT);
	assert_true(adopting);
	assert_non_null(strstr(hsm_last_message(), "held for a moment by another node adopting"));
	EXPECT_OK(hsm_store_node_hold(b, "node-gone", &h2));
	assert_null(h2);
	/* Released, the node starting again takes its id at once. */
	hsm_node_hold_release(h);
	EXPECT_OK(hsm_store_claim_node(b, "node-gone"));
	/* A running node's id is never held, and a running holder is no hold. */
	EXPECT_OK(hsm_store_node_hold(f->s, "node-gone", &h));
	assert_null(h);
	hsm_store *c = NULL;
	EXPECT_OK(hsm_store_open(f->loc, &c));
	EXPECT_ERR(hsm_store_claim_node_why(c, "node-gone", &adopting), HSM_ERR_CONFLICT);
	assert_false(adopting);
	hsm_store_close(c);
	hsm_store_close(b);
	EXPECT_OK(hsm_store_node_hold(f->s, "node-gone", &h));
	assert_non_null(h);
	/* Its session ended (the database restarted, or ended an idle holder): the check says so. */
	assert_int_equal(st_pg_exec(f->db, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
	                                   "WHERE application_name = 'hsmd adopting node-gone'"),
	                 0);
	assert_true(hsm_failed(hsm_node_hold_check(h)));
	hsm_node_hold_release(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_carries_one_row, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_null_fields_are_empty, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_created_key_and_prepared_sender, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_row_names_the_key_written, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_later_intent_of_a_request_names_what_it_did, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_rollback_leaves_no_row, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_no_intent_no_row, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_reads_carry_no_row, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_failed_insert_fails_the_change, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_values_cut_to_bounds, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_list_per_node_oldest_first, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_list_pages, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_delete_named_rows, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_outbox_calls_carry_no_row, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_copy_leaves_the_outbox_out, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_leaves_the_outbox_out, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_noted_copy_carries_the_row, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_note_carries_the_row_alone, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_added_to_an_older_store, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_offline_node_id_names_the_directory, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_nodes_with_old_rows, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_node_hold, st_setup, st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
