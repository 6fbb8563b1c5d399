/*
 * store_keys_test.c - keys and key versions (store.h) on the SQLite backend:
 * create/get, read-modify-write updates and their atomicity, the state rules,
 * destruction (with a scan of the raw files for the erased material), keyset
 * pagination and due work.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <openssl/rand.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

/* ---- Keys ------------------------------------------------------------------------------- */

static void test_key_create_get_roundtrip(void **state)
{
	st_fixture *f = *state;
	hsm_key_record k, got = {0};
	hsm_version_record v, gv = {0};
	st_key(&k, "1b4e28ba-2fa1-41d2-883f-0016d3cca427");
	k.description = (char *)"signing key";
	k.spec = HSM_SPEC_ECC_NIST_P256;
	k.usage = HSM_USAGE_SIGN_VERIFY;
	k.origin = HSM_ORIGIN_EXTERNAL;
	k.state = HSM_KEY_PENDING_DELETION;
	k.created = 11;
	k.deletion_date = 22;
	k.pending_window_days = 7;
	k.rotation_enabled = true;
	k.rotation_period_days = 90;
	k.next_rotation = 33;
	k.policy = (char *)"{\"p\":1}";
	k.flags = HSM_KEYFLAG_JWT;
	k.updated = 44;
	st_version(&v, k.key_id, 1, "wrapped-bytes", 13);
	assert_true(hsm_ok(hsm_buf_set(&v.public_der, "\x30\x59", 2)));
	EXPECT_OK(hsm_store_key_create(f->s, &k, &v));
	st_reopen(f);
	EXPECT_OK(hsm_store_key_get(f->s, k.key_id, &got));
	assert_string_equal(got.key_id, k.key_id);
	assert_string_equal(got.description, "signing key");
	assert_int_equal(got.spec, HSM_SPEC_ECC_NIST_P256);
	assert_int_equal(got.usage, HSM_USAGE_SIGN_VERIFY);
	assert_int_equal(got.origin, HSM_ORIGIN_EXTERNAL);
	assert_int_equal(got.state, HSM_KEY_PENDING_DELETION);
	assert_int_equal(got.created, 11);
	assert_int_equal(got.deletion_date, 22);
	assert_int_equal(got.pending_window_days, 7);
	assert_true(got.rotation_enabled);
	assert_int_equal(got.rotation_period_days, 90);
	assert_int_equal(got.next_rotation, 33);
	assert_int_equal(got.primary_version, 1);
	assert_string_equal(got.policy, "{\"p\":1}");
	assert_int_equal(got.flags, HSM_KEYFLAG_JWT);
	assert_int_equal(got.updated, 44);
	EXPECT_OK(hsm_store_version_get(f->s, k.key_id, 1, &gv));
	assert_string_equal(gv.key_id, k.key_id);
	assert_int_equal(gv.version, 1);
	assert_int_equal(gv.created, 1700000001);
	assert_int_equal(gv.rotation_type, HSM_ROTATION_NONE);
	assert_int_equal(gv.wrapped.len, 13);
	assert_memory_equal(gv.wrapped.data, "wrapped-bytes", 13);
	assert_int_equal(gv.public_der.len, 2);

	hsm_key_record copy;
	EXPECT_OK(hsm_key_record_copy(&copy, &got));
	assert_ptr_not_equal(copy.description, got.description);
	assert_string_equal(copy.policy, got.policy);
	hsm_key_record_clear(&copy);
	hsm_key_record_clear(&got);
	assert_null(got.description);
	hsm_version_record_clear(&gv);
	hsm_version_record_clear(&v);
}

static void test_key_create_errors(void **state)
{
	st_fixture *f = *state;
	hsm_key_record k, got = {0};
	hsm_version_record v;
	st_key(&k, "dup");
	k.description = NULL;
	k.policy = NULL;
	st_version(&v, "dup", 1, "w", 1);
	EXPECT_OK(hsm_store_key_create(f->s, &k, &v));
	EXPECT_ERR(hsm_store_key_create(f->s, &k, &v), HSM_ERR_ALREADY_EXISTS);
	EXPECT_OK(hsm_store_key_get(f->s, "dup", &got));
	assert_string_equal(got.description, ""); /* NULL is stored as "" */
	assert_string_equal(got.policy, "");
	hsm_key_record_clear(&got);

	st_key(&k, "other");
	EXPECT_ERR(hsm_store_key_create(f->s, &k, &v), HSM_ERR_VALIDATION); /* version of "dup" */
	snprintf(v.key_id, sizeof(v.key_id), "other");
	v.version = 2;
	EXPECT_ERR(hsm_store_key_create(f->s, &k, &v), HSM_ERR_VALIDATION); /* not the primary */
	v.version = 1;
	k.state = HSM_KEY_DESTROYED;
	EXPECT_ERR(hsm_store_key_create(f->s, &k, &v), HSM_ERR_INVALID_STATE);
	k.state = HSM_KEY_ENABLED;
	k.key_id[0] = '\0';
	EXPECT_ERR(hsm_store_key_create(f->s, &k, &v), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_key_get(f->s, "other", &got), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_key_get(f->s, "", &got), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_key_get(f->s, "0123456789012345678901234567890123456789", &got),
	           HSM_ERR_NOT_FOUND);
	hsm_version_record_clear(&v);
}

static void test_key_create_is_atomic(void **state)
{
	st_fixture *f = *state;
	/* The version insert fails: the key row must not stay behind. */
	st_poison(f, "key_versions", "NEW.key_id = 'victim'");
	hsm_key_record k, got;
	hsm_version_record v;
	st_key(&k, "victim");
	st_version(&v, "victim", 1, "w", 1);
	EXPECT_ERR(hsm_store_key_create(f->s, &k, &v), HSM_ERR_STORE);
	EXPECT_ERR(hsm_store_key_get(f->s, "victim", &got), HSM_ERR_NOT_FOUND);
	uint64_t n = 99;
	EXPECT_OK(hsm_store_key_count(f->s, &n));
	assert_int_equal(n, 0);
	hsm_version_record_clear(&v);
}

typedef struct tag_seen {
	char keys[4][HSM_TAG_KEY_MAX * 4 + 1];
	size_t n;
} tag_seen;

static hsm_result see_tag(const hsm_tag *t, void *arg)
{
	tag_seen *s = arg;
	if (s->n < 4)
		snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", t->key);
	s->n++;
	return HSM_SUCCESS;
}

static void test_key_create_with_tags(void **state)
{
	st_fixture *f = *state;
	hsm_key_record k, got;
	hsm_version_record v;
	hsm_tag tags[2];
	memset(tags, 0, sizeof(tags));
	snprintf(tags[0].key, sizeof(tags[0].key), "team");
	snprintf(tags[0].value, sizeof(tags[0].value), "platform");
	snprintf(tags[1].key, sizeof(tags[1].key), "env");
	snprintf(tags[1].value, sizeof(tags[1].value), "prod");
	st_key(&k, "tagged");
	st_version(&v, "tagged", 1, "w", 1);
	EXPECT_OK(hsm_store_key_create_tagged(f->s, &k, &v, 2, tags));
	EXPECT_OK(hsm_store_key_get(f->s, "tagged", &got));
	hsm_key_record_clear(&got);
	tag_seen seen = {0};
	bool more = true;
	EXPECT_OK(hsm_store_tags_list(f->s, "tagged", NULL, 10, see_tag, &seen, &more));
	assert_int_equal(seen.n, 2);
	assert_false(more);
	assert_string_equal(seen.keys[0], "env");
	assert_string_equal(seen.keys[1], "team");
	hsm_version_record_clear(&v);

	/* A tag write fails inside the transaction: neither the key nor its version remains. */
	st_poison(f, "tags", "NEW.tag_key = 'env'");
	st_key(&k, "victim");
	st_version(&v, "victim", 1, "w", 1);
	EXPECT_ERR(hsm_store_key_create_tagged(f->s, &k, &v, 2, tags), HSM_ERR_STORE);
	EXPECT_ERR(hsm_store_key_get(f->s, "victim", &got), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_version_get(f->s, "victim", 1, &v), HSM_ERR_NOT_FOUND);
	uint64_t n = 99;
	EXPECT_OK(hsm_store_key_count(f->s, &n));
	assert_int_equal(n, 1);
	hsm_version_record_clear(&v);
}

/* ---- Updates ------------------------------------------------------------------------------- */

typedef struct edit {
	const char *description;
	hsm_key_state state;
	uint32_t primary; /* 0: leave */
	int64_t deletion_date; /* 0: leave */
	hsm_err fail;     /* HSM_OK: succeed */
	int calls;
} edit;

static hsm_result apply_edit(hsm_key_record *k, void *arg)
{
	edit *e = arg;
	e->calls++;
	free(k->description);
	k->description = strdup(e->description);
	if (k->description == NULL)
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	k->state = e->state;
	k->updated = 555;
	if (e->primary != 0)
		k->primary_version = e->primary;
	if (e->deletion_date != 0)
		k->deletion_date = e->deletion_date;
	if (e->fail != HSM_OK)
		return HSM_FAIL(e->fail, "edit refused");
	return HSM_SUCCESS;
}

static void assert_unchanged(hsm_store *s, const char *id, uint32_t primary)
{
	hsm_key_record got = {0};
	EXPECT_OK(hsm_store_key_get(s, id, &got));
	assert_string_equal(got.description, "test key");
	assert_int_equal(got.state, HSM_KEY_ENABLED);
	assert_int_equal(got.updated, 1700000000);
	assert_int_equal(got.primary_version, primary);
	hsm_key_record_clear(&got);
}

static void test_key_update(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k", "w1", 2);
	edit e = {.description = "renamed", .state = HSM_KEY_DISABLED};
	hsm_key_record after = {0}, got = {0};
	EXPECT_OK(hsm_store_key_update(f->s, "k", apply_edit, &e, NULL, &after));
	assert_int_equal(e.calls, 1);
	assert_string_equal(after.description, "renamed");
	assert_int_equal(after.state, HSM_KEY_DISABLED);
	EXPECT_OK(hsm_store_key_get(f->s, "k", &got));
	assert_string_equal(got.description, "renamed");
	assert_int_equal(got.state, HSM_KEY_DISABLED);
	assert_int_equal(got.updated, 555);
	hsm_key_record_clear(&after);
	hsm_key_record_clear(&got);
	EXPECT_OK(hsm_store_key_update(f->s, "k", apply_edit, &e, NULL, NULL));
	EXPECT_ERR(hsm_store_key_update(f->s, "missing", apply_edit, &e, NULL, NULL),
	           HSM_ERR_NOT_FOUND);
}

static void test_key_update_failure_changes_nothing(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k", "w1", 2);
	hsm_key_record after = {0};
	edit e = {.description = "nope", .state = HSM_KEY_DISABLED, .fail = HSM_ERR_DISABLED};
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, NULL, &after), HSM_ERR_DISABLED);
	assert_string_equal(hsm_last_message(), "edit refused");
	assert_null(after.description); /* outputs only on success */
	assert_unchanged(f->s, "k", 1);

	/* The same with a version: neither the record nor the version is written. */
	hsm_version_record v2, gv;
	st_version(&v2, "k", 2, "w2", 2);
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, &v2, NULL), HSM_ERR_DISABLED);
	assert_unchanged(f->s, "k", 1);
	EXPECT_ERR(hsm_store_version_get(f->s, "k", 2, &gv), HSM_ERR_NOT_FOUND);
	hsm_version_record_clear(&v2);
}

static void test_key_update_adds_version(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k", "w1", 2);
	hsm_version_record v, gv = {0};
	hsm_key_record after = {0};
	edit e = {.description = "rotated", .state = HSM_KEY_ENABLED};

	/* Wrong numbers: CONFLICT, fn not called, nothing written. */
	st_version(&v, "k", 3, "w3", 2);
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, &v, NULL), HSM_ERR_CONFLICT);
	v.version = 1;
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, &v, NULL), HSM_ERR_CONFLICT);
	assert_int_equal(e.calls, 0);
	assert_unchanged(f->s, "k", 1);
	EXPECT_ERR(hsm_store_version_get(f->s, "k", 3, &gv), HSM_ERR_NOT_FOUND);

	/* The right number: the store makes it primary whatever fn set. */
	v.version = 2;
	e.primary = 7;
	EXPECT_OK(hsm_store_key_update(f->s, "k", apply_edit, &e, &v, &after));
	assert_int_equal(after.primary_version, 2);
	hsm_key_record_clear(&after);
	EXPECT_OK(hsm_store_key_get(f->s, "k", &after));
	assert_int_equal(after.primary_version, 2);
	assert_string_equal(after.description, "rotated");
	hsm_key_record_clear(&after);
	EXPECT_OK(hsm_store_version_get(f->s, "k", 2, &gv));
	assert_int_equal(gv.rotation_type, HSM_ROTATION_ON_DEMAND);
	assert_memory_equal(gv.wrapped.data, "w3", 2);
	hsm_version_record_clear(&gv);

	/* A version of another key is refused before anything runs. */
	snprintf(v.key_id, sizeof(v.key_id), "x");
	v.version = 3;
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, &v, NULL), HSM_ERR_VALIDATION);
	hsm_version_record_clear(&v);
}

static void test_key_update_write_failure_rolls_back(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k", "w1", 2);
	/* fn succeeds, then writing the version fails: the record change is undone too. */
	st_poison(f, "key_versions", "NEW.version = 2");
	hsm_version_record v;
	st_version(&v, "k", 2, "w2", 2);
	edit e = {.description = "rotated", .state = HSM_KEY_ENABLED};
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, &v, NULL), HSM_ERR_STORE);
	assert_int_equal(e.calls, 1);
	assert_unchanged(f->s, "k", 1);
	hsm_version_record_clear(&v);
}

static void test_key_state_rules(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k", "w1", 2);
	edit e = {.description = "x", .state = HSM_KEY_DESTROYED};
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, NULL, NULL), HSM_ERR_INVALID_STATE);
	assert_unchanged(f->s, "k", 1);
	EXPECT_OK(hsm_store_key_destroy(f->s, "k", 1800000000));
	e.state = HSM_KEY_ENABLED;
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, NULL, NULL), HSM_ERR_INVALID_STATE);
	/* Other fields of a tombstone may still change (e.g. its description). */
	e.state = HSM_KEY_DESTROYED;
	EXPECT_OK(hsm_store_key_update(f->s, "k", apply_edit, &e, NULL, NULL));
	hsm_version_record v;
	st_version(&v, "k", 2, "w2", 2);
	EXPECT_ERR(hsm_store_key_update(f->s, "k", apply_edit, &e, &v, NULL), HSM_ERR_INVALID_STATE);
	hsm_version_record_clear(&v);
}

/* Writing from inside fn would wait for the lock fn's own transaction holds. */
static hsm_result reenter(hsm_key_record *k, void *arg)
{
	(void)k;
	return hsm_store_alias_create(arg, "alias/x", "k", 0, NULL);
}

static void test_key_update_reentry_aborts(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k", "w1", 2);
	/* The child opens its own handle: a connection must not cross fork(). */
	hsm_store_close(f->s);
	f->s = NULL;
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		hsm_store *s = NULL;
		int devnull = open("/dev/null", O_WRONLY);
		dup2(devnull, 2);
		if (hsm_failed(hsm_store_open(f->loc, &s)))
			_exit(2);
		hsm_result r = hsm_store_key_update(s, "k", reenter, s, NULL, NULL);
		_exit(r.err == HSM_OK ? 0 : 1); /* not reached: the store aborts */
	}
	int status = 0;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	/* Nothing of the aborted transaction remains. */
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	hsm_alias_record a;
	EXPECT_ERR(hsm_store_alias_get(f->s, "alias/x", &a), HSM_ERR_NOT_FOUND);
	assert_unchanged(f->s, "k", 1);
}

/* ---- Destruction ----------------------------------------------------------------------------- */

/* Whether the 64-byte pattern occurs anywhere in the file (a missing file holds nothing). */
static bool file_contains(const char *dir, const char *name, const uint8_t pattern[64])
{
	char path[PATH_MAX];
	st_path(path, dir, name);
	FILE *fp = fopen(path, "rb");
	if (fp == NULL)
		return false;
	fseek(fp, 0, SEEK_END);
	long size = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	uint8_t *data = malloc(size > 0 ? (size_t)size : 1);
	assert_non_null(data);
	size_t n = fread(data, 1, (size_t)size, fp);
	fclose(fp);
	bool found = memmem(data, n, pattern, 64) != NULL;
	free(data);
	return found;
}

static bool files_contain(const char *dir, const uint8_t pattern[64])
{
	return file_contains(dir, "hsmd.db", pattern) || file_contains(dir, "hsmd.db-wal", pattern);
}

static void test_destroy_erases_material(void **state)
{
	st_fixture *f = *state;
	st_sqlite_only(); /* PostgreSQL: store_pg_test.c, test_destroy_leaves_no_live_material */
	uint8_t p1[64], p2[64];
	assert_int_equal(RAND_bytes(p1, sizeof(p1)), 1);
	assert_int_equal(RAND_bytes(p2, sizeof(p2)), 1);
	st_create_key(f->s, "victim", p1, sizeof(p1));
	st_create_key(f->s, "bystander", "keep", 4);
	hsm_version_record v2, gv = {0};
	st_version(&v2, "victim", 2, p2, sizeof(p2));
	assert_true(hsm_ok(hsm_buf_set(&v2.public_der, "PUBLIC", 6)));
	edit e = {.description = "test key", .state = HSM_KEY_PENDING_DELETION,
	          .deletion_date = 1890000000};
	EXPECT_OK(hsm_store_key_update(f->s, "victim", apply_edit, &e, &v2, NULL));
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/victim", "victim", 1, NULL));
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/bystander", "bystander", 1, NULL));
	/* Control: the scan sees the material while it is stored. */
	st_reopen(f);
	assert_true(files_contain(f->dir, p1));
	assert_true(files_contain(f->dir, p2));

	EXPECT_OK(hsm_store_key_destroy(f->s, "victim", 1900000000));
	/* Scanned while the store is still open: the WAL has been emptied already. */
	assert_false(files_contain(f->dir, p1));
	assert_false(files_contain(f->dir, p2));
	hsm_store_close(f->s);
	f->s = NULL;
	assert_false(files_contain(f->dir, p1));
	assert_false(files_contain(f->dir, p2));

	EXPECT_OK(hsm_store_open(f->dir, &f->s));
	hsm_key_record got = {0};
	EXPECT_OK(hsm_store_key_get(f->s, "victim", &got)); /* the tombstone stays */
	assert_int_equal(got.state, HSM_KEY_DESTROYED);
	assert_int_equal(got.updated, 1900000000);
	assert_int_equal(got.deletion_date, 1890000000); /* kept as it was */
	assert_int_equal(got.primary_version, 2);
	hsm_key_record_clear(&got);
	for (uint32_t ver = 1; ver <= 2; ver++) {
		EXPECT_OK(hsm_store_version_get(f->s, "victim", ver, &gv));
		assert_int_equal(gv.wrapped.len, 0);
		hsm_version_record_clear(&gv);
	}
	EXPECT_OK(hsm_store_version_get(f->s, "victim", 2, &gv));
	assert_int_equal(gv.public_der.len, 6); /* public parts remain */
	hsm_version_record_clear(&gv);
	hsm_alias_record a;
	EXPECT_ERR(hsm_store_alias_get(f->s, "alias/victim", &a), HSM_ERR_NOT_FOUND);
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/bystander", &a));
	EXPECT_OK(hsm_store_version_get(f->s, "bystander", 1, &gv));
	assert_int_equal(gv.wrapped.len, 4);
	hsm_version_record_clear(&gv);

	/* Idempotent; missing keys are reported. */
	EXPECT_OK(hsm_store_key_destroy(f->s, "victim", 1900000001));
	EXPECT_ERR(hsm_store_key_destroy(f->s, "nobody", 1), HSM_ERR_NOT_FOUND);
	hsm_version_record_clear(&v2);
}

/* ---- Lists ------------------------------------------------------------------------------------ */

typedef struct page {
	char ids[16][HSM_UUID_STRLEN + 1];
	size_t n;
	size_t fail_at; /* 0: never */
} page;

static hsm_result collect_key(const hsm_key_record *k, void *arg)
{
	page *p = arg;
	if (p->fail_at != 0 && p->n + 1 == p->fail_at)
		return HSM_FAIL(HSM_ERR_THROTTLING, "stop");
	assert_true(p->n < 16);
	snprintf(p->ids[p->n++], HSM_UUID_STRLEN + 1, "%s", k->key_id);
	return HSM_SUCCESS;
}

/* Walks every page of size limit and checks the page sizes and the order. */
static void walk_pages(hsm_store *s, size_t limit, size_t total, bool include_destroyed)
{
	char after[HSM_UUID_STRLEN + 1] = "";
	size_t seen = 0, pages = 0;
	for (;;) {
		page p = {0};
		bool truncated = true;
		EXPECT_OK(hsm_store_key_list(s, pages == 0 ? NULL : after, limit, include_destroyed,
		                             collect_key, &p, &truncated));
		size_t expect = total - seen < limit ? total - seen : limit;
		assert_int_equal(p.n, expect);
		for (size_t i = 0; i < p.n; i++) {
			char id[HSM_UUID_STRLEN + 1];
			st_key_id(id, (unsigned)(seen + i + 1));
			assert_string_equal(p.ids[i], id);
		}
		seen += p.n;
		pages++;
		assert_int_equal(truncated, seen < total);
		if (!truncated)
			break;
		snprintf(after, sizeof(after), "%s", p.ids[p.n - 1]);
	}
	assert_int_equal(seen, total);
	assert_int_equal(pages, total == 0 ? 1 : (total + limit - 1) / limit);
}

static void test_key_list_pagination(void **state)
{
	st_fixture *f = *state;
	walk_pages(f->s, 1, 0, false);
	for (unsigned i = 5; i >= 1; i--) { /* created out of order */
		char id[HSM_UUID_STRLEN + 1];
		st_key_id(id, i);
		st_create_key(f->s, id, "w", 1);
	}
	for (size_t limit = 1; limit <= 6; limit++)
		walk_pages(f->s, limit, 5, false);

	/* Destroyed keys: skipped unless asked for. */
	char id6[HSM_UUID_STRLEN + 1];
	st_key_id(id6, 6);
	st_create_key(f->s, id6, "w", 1);
	EXPECT_OK(hsm_store_key_destroy(f->s, id6, 1));
	walk_pages(f->s, 5, 5, false); /* exact boundary: the destroyed sixth is not "more" */
	walk_pages(f->s, 2, 6, true);
	uint64_t n = 0;
	EXPECT_OK(hsm_store_key_count(f->s, &n));
	assert_int_equal(n, 5);

	/* A callback failure stops the listing and is returned. */
	page p = {.fail_at = 2};
	bool truncated = false;
	EXPECT_ERR(hsm_store_key_list(f->s, NULL, 5, false, collect_key, &p, &truncated),
	           HSM_ERR_THROTTLING);
	assert_int_equal(p.n, 1);
	EXPECT_ERR(hsm_store_key_list(f->s, NULL, 0, false, collect_key, &p, &truncated),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_key_list(f->s, NULL, HSM_STORE_LIST_MAX + 1, false, collect_key, &p,
	                              &truncated),
	           HSM_ERR_VALIDATION);
}

static hsm_result set_flags(hsm_key_record *k, void *arg)
{
	k->flags = *(const uint32_t *)arg;
	return HSM_SUCCESS;
}

/* Every page of the JWT listing, as key numbers (st_key_id). */
static size_t jwt_keys(hsm_store *s, size_t limit, unsigned *out, size_t cap)
{
	char after[HSM_UUID_STRLEN + 1] = "";
	size_t n = 0;
	for (bool more = true; more;) {
		page p = {0};
		EXPECT_OK(hsm_store_jwt_key_list(s, after, limit, collect_key, &p, &more));
		assert_true(p.n <= limit);
		assert_true(!more || p.n == limit); /* an empty page that asks for more would loop */
		for (size_t i = 0; i < p.n; i++) {
			assert_true(n < cap);
			out[n++] = (unsigned)strtoul(p.ids[i], NULL, 16);
		}
		if (p.n > 0)
			snprintf(after, sizeof(after), "%s", p.ids[p.n - 1]);
	}
	return n;
}

/* The keys marked for JWT signing, listed through their own index. */
static void test_jwt_key_list(void **state)
{
	st_fixture *f = *state;
	unsigned got[16];
	assert_int_equal(jwt_keys(f->s, 2, got, 16), 0);
	const uint32_t jwt = HSM_KEYFLAG_JWT | (3U << 8), other = 2U << 8, none = 0;
	for (unsigned i = 1; i <= 9; i++) {
		char id[HSM_UUID_STRLEN + 1];
		st_key_id(id, i);
		st_create_key(f->s, id, "w", 1);
		/* Keys 2, 3, 5, 7 and 9 are JWT keys; 4 has other flag bits only. */
		const uint32_t *flags = i == 4 ? &other : (i % 2 == 1 && i > 1) || i == 2 ? &jwt : &none;
		EXPECT_OK(hsm_store_key_update(f->s, id, set_flags, (void *)flags, NULL, NULL));
	}
	char id9[HSM_UUID_STRLEN + 1], id5[HSM_UUID_STRLEN + 1];
	st_key_id(id9, 9);
	st_key_id(id5, 5);
	EXPECT_OK(hsm_store_key_destroy(f->s, id9, 1)); /* destroyed: not listed */
	for (size_t limit = 1; limit <= 5; limit++) {
		assert_int_equal(jwt_keys(f->s, limit, got, 16), 4);
		assert_int_equal(got[0], 2);
		assert_int_equal(got[1], 3);
		assert_int_equal(got[2], 5);
		assert_int_equal(got[3], 7);
	}
	/* The flag cleared: gone from the list (and from the index). */
	EXPECT_OK(hsm_store_key_update(f->s, id5, set_flags, (void *)&none, NULL, NULL));
	assert_int_equal(jwt_keys(f->s, 3, got, 16), 3);
	assert_int_equal(got[2], 7);
	if (st_is_pg()) {
		/* The partial index exists; the planner's choice on nine rows proves nothing. */
		assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM pg_indexes "
		                                  "WHERE indexname = 'keys_jwt'"),
		                 1);
		return;
	}
	assert_int_equal(st_raw_int(f->dir, "SELECT count(*) FROM keys INDEXED BY keys_jwt "
	                                    "WHERE (flags & 1) = 1"),
	                 4); /* 2, 3, 7 and the destroyed 9 */

	/* The store's query walks the index, not the table (its shape, as in the store). */
	char plan[1024];
	st_sqlite_plan(f->dir,
	           "SELECT id FROM keys WHERE (flags & 1) = 1 AND id > '' AND "
	           "state != 'Destroyed' ORDER BY id LIMIT 10",
	           plan, sizeof(plan));
	assert_non_null(strstr(plan, "USING INDEX keys_jwt"));
}

/* A store made before the index gets it when opened. */
static void test_jwt_index_added_to_an_older_store(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	char id[HSM_UUID_STRLEN + 1];
	const uint32_t jwt = HSM_KEYFLAG_JWT;
	st_key_id(id, 1);
	st_create_key(f->s, id, "w", 1);
	EXPECT_OK(hsm_store_key_update(f->s, id, set_flags, (void *)&jwt, NULL, NULL));
	st_schema_before_import(f);
	/* Back to schema 1, as a store written before step 2 is (and so before grants). */
	assert_int_equal(st_raw_exec(f->dir, "DROP INDEX keys_jwt; DROP TABLE grants; "
	                                     "DELETE FROM schema_version WHERE version >= 2"),
	                 SQLITE_OK);
	assert_int_equal(st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema "
	                                    "WHERE name = 'keys_jwt'"),
	                 0);
	EXPECT_OK(hsm_store_open(f->dir, &f->s));
	assert_int_equal(hsm_store_schema_version(f->s), hsm_store_sqlite_schema_latest());
	assert_int_equal(st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema "
	                                    "WHERE name = 'keys_jwt'"),
	                 1);
	unsigned got[4];
	assert_int_equal(jwt_keys(f->s, 10, got, 4), 1);
	assert_int_equal(got[0], 1);
}

typedef struct due_ctx {
	hsm_store *s;
	page p;
	bool destroy;
} due_ctx;

static hsm_result on_due(const hsm_key_record *k, void *arg)
{
	due_ctx *d = arg;
	HSM_GUARD(collect_key(k, &d->p));
	/* The scheduler's shape: act on the key from inside the callback. */
	if (d->destroy && k->state == HSM_KEY_PENDING_DELETION)
		return hsm_store_key_destroy(d->s, k->key_id, 2000);
	return HSM_SUCCESS;
}

static void add_due_key(hsm_store *s, const char *id, hsm_key_state st, int64_t deletion,
                        bool rotation, int64_t next)
{
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, id);
	k.state = st;
	k.deletion_date = deletion;
	k.rotation_enabled = rotation;
	k.next_rotation = next;
	st_version(&v, id, 1, "w", 1);
	EXPECT_OK(hsm_store_key_create(s, &k, &v));
	hsm_version_record_clear(&v);
}

static void test_keys_due(void **state)
{
	st_fixture *f = *state;
	add_due_key(f->s, "del-late", HSM_KEY_PENDING_DELETION, 900, false, 0);
	add_due_key(f->s, "del-early", HSM_KEY_PENDING_DELETION, 100, false, 0);
	add_due_key(f->s, "del-future", HSM_KEY_PENDING_DELETION, 5000, false, 0);
	add_due_key(f->s, "rot-due", HSM_KEY_ENABLED, 0, true, 500);
	add_due_key(f->s, "rot-future", HSM_KEY_ENABLED, 0, true, 5000);
	add_due_key(f->s, "rot-disabled", HSM_KEY_DISABLED, 0, true, 500);
	add_due_key(f->s, "rot-off", HSM_KEY_ENABLED, 0, false, 500);

	due_ctx d = {.s = f->s};
	EXPECT_OK(hsm_store_keys_due(f->s, 1000, 10, on_due, &d));
	assert_int_equal(d.p.n, 3);
	assert_string_equal(d.p.ids[0], "del-early");
	assert_string_equal(d.p.ids[1], "del-late");
	assert_string_equal(d.p.ids[2], "rot-due");

	memset(&d.p, 0, sizeof(d.p));
	EXPECT_OK(hsm_store_keys_due(f->s, 1000, 2, on_due, &d));
	assert_int_equal(d.p.n, 2);
	assert_string_equal(d.p.ids[1], "del-late");

	/* Destroying from the callback works (no reader holds the WAL) and ends the work. */
	memset(&d.p, 0, sizeof(d.p));
	d.destroy = true;
	EXPECT_OK(hsm_store_keys_due(f->s, 1000, 10, on_due, &d));
	assert_int_equal(d.p.n, 3);
	memset(&d.p, 0, sizeof(d.p));
	EXPECT_OK(hsm_store_keys_due(f->s, 1000, 10, on_due, &d));
	assert_int_equal(d.p.n, 1);
	assert_string_equal(d.p.ids[0], "rot-due");
	EXPECT_ERR(hsm_store_keys_due(f->s, 1000, 0, on_due, &d), HSM_ERR_VALIDATION);
}

typedef struct got_keys {
	page p;
	hsm_key_state state[16];
} got_keys;

static hsm_result on_got(const hsm_key_record *k, void *arg)
{
	got_keys *g = arg;
	assert_true(g->p.n < 16);
	g->state[g->p.n] = k->state;
	return collect_key(k, &g->p);
}

/* The state a key was seen in by one batch read, or -1: not passed. */
static int seen(const got_keys *g, const char *id)
{
	int found = -1;
	for (size_t i = 0; i < g->p.n; i++) {
		if (strcmp(g->p.ids[i], id) == 0) {
			assert_int_equal(found, -1); /* each key once */
			found = (int)g->state[i];
		}
	}
	return found;
}

/*
 * One read for many keys (the material sweep's): those that exist, in any
 * state, each once; missing ones are simply not passed; ids with the
 * characters of an array literal ({ } , " \ and a space) are ids like any other.
 */
static void test_keys_get(void **state)
{
	st_fixture *f = *state;
	const char *odd[] = {"a\"b", "c\\d,e", "{x}", "sp ace", "NULL"};
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		add_due_key(f->s, odd[i], HSM_KEY_ENABLED, 0, false, 0);
	add_due_key(f->s, "off", HSM_KEY_DISABLED, 0, false, 0);
	add_due_key(f->s, "gone", HSM_KEY_PENDING_DELETION, 100, false, 0);
	EXPECT_OK(hsm_store_key_destroy(f->s, "gone", 200));
	add_due_key(f->s, "not-asked", HSM_KEY_ENABLED, 0, false, 0);

	const char *ask[] = {"a\"b", "c\\d,e", "{x}", "sp ace", "NULL", "off", "gone",
	                     "missing", "a", "c\\d", "x"};
	got_keys g = {0};
	EXPECT_OK(hsm_store_keys_get(f->s, sizeof(ask) / sizeof(ask[0]), ask, on_got, &g));
	assert_int_equal(g.p.n, 7);
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++)
		assert_int_equal(seen(&g, odd[i]), HSM_KEY_ENABLED);
	assert_int_equal(seen(&g, "off"), HSM_KEY_DISABLED);
	assert_int_equal(seen(&g, "gone"), HSM_KEY_DESTROYED);
	assert_int_equal(seen(&g, "not-asked"), -1);
	assert_int_equal(seen(&g, "missing"), -1);

	/* None at all, an id too long to be one (not found), and more than a batch holds. */
	memset(&g, 0, sizeof(g));
	EXPECT_OK(hsm_store_keys_get(f->s, 0, NULL, on_got, &g));
	assert_int_equal(g.p.n, 0);
	const char *long_id = "0123456789012345678901234567890123456789-not-an-id";
	const char *with_long[] = {long_id, "off"};
	EXPECT_OK(hsm_store_keys_get(f->s, 2, with_long, on_got, &g));
	assert_int_equal(g.p.n, 1);
	assert_int_equal(seen(&g, "off"), HSM_KEY_DISABLED);
	const char *empty[] = {"off", ""};
	EXPECT_ERR(hsm_store_keys_get(f->s, 2, empty, on_got, &g), HSM_ERR_VALIDATION);
	static const char *many[HSM_STORE_KEYS_GET_MAX + 1];
	for (size_t i = 0; i <= HSM_STORE_KEYS_GET_MAX; i++)
		many[i] = "off";
	EXPECT_ERR(hsm_store_keys_get(f->s, HSM_STORE_KEYS_GET_MAX + 1, many, on_got, &g),
	           HSM_ERR_VALIDATION);

	/* A callback's failure ends the read and is returned. */
	memset(&g, 0, sizeof(g));
	g.p.fail_at = 2;
	EXPECT_ERR(hsm_store_keys_get(f->s, sizeof(ask) / sizeof(ask[0]), ask, on_got, &g),
	           HSM_ERR_THROTTLING);
	assert_int_equal(g.p.n, 1);
}

/*
 * The scheduler's destruction decides in its own transaction: a key whose
 * deletion was cancelled after the scheduler looked, one not due yet and one
 * destroyed already are left as they are.
 */
static void test_destroy_due_decides_under_the_lock(void **state)
{
	st_fixture *f = *state;
	hsm_key_record got = {0};
	hsm_version_record gv = {0};
	add_due_key(f->s, "due", HSM_KEY_PENDING_DELETION, 900, false, 0);
	add_due_key(f->s, "later", HSM_KEY_PENDING_DELETION, 5000, false, 0);
	add_due_key(f->s, "cancelled", HSM_KEY_PENDING_DELETION, 900, false, 0);
	/* CancelKeyDeletion's write, committed after the scheduler listed the key. */
	edit e = {.description = "test key", .state = HSM_KEY_DISABLED, .deletion_date = 0};
	EXPECT_OK(hsm_store_key_update(f->s, "cancelled", apply_edit, &e, NULL, NULL));
	const char *kept[] = {"later", "cancelled"};
	for (size_t i = 0; i < 2; i++) {
		EXPECT_ERR(hsm_store_key_destroy_due(f->s, kept[i], 1000), HSM_ERR_INVALID_STATE);
		EXPECT_OK(hsm_store_key_get(f->s, kept[i], &got));
		assert_int_not_equal(got.state, HSM_KEY_DESTROYED);
		hsm_key_record_clear(&got);
		EXPECT_OK(hsm_store_version_get(f->s, kept[i], 1, &gv));
		assert_true(gv.wrapped.len > 0); /* the material is still there */
		hsm_version_record_clear(&gv);
	}
	EXPECT_OK(hsm_store_key_destroy_due(f->s, "due", 1000));
	EXPECT_OK(hsm_store_key_get(f->s, "due", &got));
	assert_int_equal(got.state, HSM_KEY_DESTROYED);
	hsm_key_record_clear(&got);
	EXPECT_OK(hsm_store_version_get(f->s, "due", 1, &gv));
	assert_int_equal(gv.wrapped.len, 0);
	hsm_version_record_clear(&gv);
	/* A second destruction (another node's) finds it done and changes nothing. */
	EXPECT_ERR(hsm_store_key_destroy_due(f->s, "due", 1001), HSM_ERR_INVALID_STATE);
	EXPECT_OK(hsm_store_key_get(f->s, "due", &got));
	assert_int_equal(got.updated, 1000);
	hsm_key_record_clear(&got);
	EXPECT_ERR(hsm_store_key_destroy_due(f->s, "nobody", 1000), HSM_ERR_NOT_FOUND);
}

/* ---- Versions --------------------------------------------------------------------------------- */

static hsm_result collect_version(const hsm_version_record *v, void *arg)
{
	uint32_t *seen = arg;
	seen[++seen[0]] = v->version;
	return HSM_SUCCESS;
}

static void test_versions(void **state)
{
	st_fixture *f = *state;
	st_create_key(f->s, "k", "w1", 2);
	edit e = {.description = "test key", .state = HSM_KEY_ENABLED};
	for (uint32_t ver = 2; ver <= 4; ver++) {
		hsm_version_record v;
		st_version(&v, "k", ver, "wn", 2);
		EXPECT_OK(hsm_store_key_update(f->s, "k", apply_edit, &e, &v, NULL));
		hsm_version_record_clear(&v);
	}
	uint32_t seen[8] = {0};
	EXPECT_OK(hsm_store_version_list(f->s, "k", collect_version, seen));
	assert_int_equal(seen[0], 4);
	for (uint32_t i = 1; i <= 4; i++)
		assert_int_equal(seen[i], i);
	hsm_version_record gv;
	EXPECT_ERR(hsm_store_version_get(f->s, "k", 5, &gv), HSM_ERR_NOT_FOUND);
	assert_non_null(strstr(hsm_last_message(), "no version 5"));
	EXPECT_ERR(hsm_store_version_get(f->s, "k", 0, &gv), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_version_get(f->s, "nokey", 1, &gv), HSM_ERR_NOT_FOUND);
	assert_non_null(strstr(hsm_last_message(), "does not exist"));
	EXPECT_ERR(hsm_store_version_list(f->s, "nokey", collect_version, seen), HSM_ERR_NOT_FOUND);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_key_create_get_roundtrip, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_create_errors, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_create_is_atomic, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_create_with_tags, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_update, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_update_failure_changes_nothing, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_update_adds_version, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_update_write_failure_rolls_back, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_state_rules, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_update_reentry_aborts, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_erases_material, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_list_pagination, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_jwt_key_list, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_jwt_index_added_to_an_older_store, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_keys_due, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_keys_get, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_due_decides_under_the_lock, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_versions, st_setup, st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
