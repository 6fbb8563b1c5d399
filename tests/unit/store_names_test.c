/*
 * store_names_test.c - aliases and tags (store.h), on the SQLite backend or, with
 * HSM_TEST_STORE=pg, on PostgreSQL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store/store.h"
#include "store_test_util.h"

/* Every test starts with two keys, k1 and k2. */
static int setup(void **state)
{
	st_setup(state);
	st_fixture *f = *state;
	st_create_key(f->s, "k1", "w", 1);
	st_create_key(f->s, "k2", "w", 1);
	return 0;
}

/* ---- Aliases -------------------------------------------------------------------------- */

typedef struct names {
	char v[64][HSM_TAG_KEY_MAX * 4 + 1];
	char extra[64][HSM_TAG_VALUE_MAX * 4 + 1];
	size_t n;
} names;

static hsm_result collect_alias(const hsm_alias_record *a, void *arg)
{
	names *n = arg;
	assert_true(n->n < 64);
	snprintf(n->v[n->n], sizeof(n->v[0]), "%s", a->name);
	snprintf(n->extra[n->n], sizeof(n->extra[0]), "%s", a->key_id);
	n->n++;
	return HSM_SUCCESS;
}

static void test_alias_lifecycle(void **state)
{
	st_fixture *f = *state;
	hsm_alias_record a;
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/app", "k1", 100, NULL));
	EXPECT_ERR(hsm_store_alias_create(f->s, "alias/app", "k2", 101, NULL), HSM_ERR_ALREADY_EXISTS);
	EXPECT_ERR(hsm_store_alias_create(f->s, "alias/other", "k9", 101, NULL), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_alias_get(f->s, "alias/other", &a), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_alias_create(f->s, "", "k1", 101, NULL), HSM_ERR_VALIDATION);

	st_reopen(f);
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/app", &a));
	assert_string_equal(a.name, "alias/app");
	assert_string_equal(a.key_id, "k1");
	assert_int_equal(a.created, 100);
	assert_int_equal(a.updated, 100);

	EXPECT_OK(hsm_store_alias_update(f->s, "alias/app", NULL, "k2", 200, NULL));
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/app", &a));
	assert_string_equal(a.key_id, "k2");
	assert_int_equal(a.created, 100);
	assert_int_equal(a.updated, 200);
	EXPECT_ERR(hsm_store_alias_update(f->s, "alias/none", NULL, "k2", 200, NULL), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_alias_update(f->s, "alias/app", NULL, "k9", 300, NULL), HSM_ERR_NOT_FOUND);
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/app", &a));
	assert_string_equal(a.key_id, "k2"); /* unchanged by the failure */

	EXPECT_OK(hsm_store_alias_delete(f->s, "alias/app"));
	EXPECT_ERR(hsm_store_alias_get(f->s, "alias/app", &a), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_alias_delete(f->s, "alias/app"), HSM_ERR_NOT_FOUND);

	/* A name one byte too long for the field is refused on create, absent on lookup. */
	char longname[HSM_ALIAS_MAX + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	EXPECT_ERR(hsm_store_alias_create(f->s, longname, "k1", 1, NULL), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_alias_get(f->s, longname, &a), HSM_ERR_NOT_FOUND);
	longname[HSM_ALIAS_MAX] = '\0'; /* exactly HSM_ALIAS_MAX fits */
	EXPECT_OK(hsm_store_alias_create(f->s, longname, "k1", 1, NULL));
	EXPECT_OK(hsm_store_alias_get(f->s, longname, &a));
	assert_int_equal(strlen(a.name), HSM_ALIAS_MAX);
}

/* A key takes HSM_MAX_ALIASES_PER_KEY aliases, by create or by update; a refusal changes nothing. */
static void test_alias_limit(void **state)
{
	st_fixture *f = *state;
	char name[32];
	hsm_alias_record a;
	for (int i = 0; i < HSM_MAX_ALIASES_PER_KEY; i++) {
		snprintf(name, sizeof(name), "alias/k1-%02d", i);
		EXPECT_OK(hsm_store_alias_create(f->s, name, "k1", 1, NULL));
	}
	EXPECT_ERR(hsm_store_alias_create(f->s, "alias/one-more", "k1", 2, NULL), HSM_ERR_LIMIT_EXCEEDED);
	EXPECT_ERR(hsm_store_alias_get(f->s, "alias/one-more", &a), HSM_ERR_NOT_FOUND);
	/* Another key is not held to k1's count. */
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/k2-00", "k2", 2, NULL));
	EXPECT_ERR(hsm_store_alias_update(f->s, "alias/k2-00", NULL, "k1", 3, NULL),
	           HSM_ERR_LIMIT_EXCEEDED);
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/k2-00", &a));
	assert_string_equal(a.key_id, "k2");
	assert_int_equal(a.updated, 2);
	/* An alias already on the key does not count against itself. */
	EXPECT_OK(hsm_store_alias_update(f->s, "alias/k1-07", NULL, "k1", 4, NULL));
	/* Moving one away makes room for exactly one. */
	EXPECT_OK(hsm_store_alias_update(f->s, "alias/k1-00", NULL, "k2", 5, NULL));
	EXPECT_OK(hsm_store_alias_update(f->s, "alias/k2-00", NULL, "k1", 6, NULL));
	EXPECT_ERR(hsm_store_alias_create(f->s, "alias/one-more", "k1", 7, NULL), HSM_ERR_LIMIT_EXCEEDED);
	EXPECT_OK(hsm_store_alias_delete(f->s, "alias/k1-01"));
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/one-more", "k1", 8, NULL));
	names all = {.n = 0};
	bool truncated = true;
	EXPECT_OK(hsm_store_alias_list(f->s, "k1", NULL, 100, collect_alias, &all, &truncated));
	assert_int_equal(all.n, HSM_MAX_ALIASES_PER_KEY);
	assert_false(truncated);
}

/*
 * A key takes one alias that gives it a PKCS#11 CKA_ID (HSM_PKCS11_ID_ALIAS), by create
 * or by update; a refusal names the one it has and changes nothing.
 */
static void test_alias_pkcs11_id_one_per_key(void **state)
{
	st_fixture *f = *state;
	hsm_alias_record a;
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/pkcs11-id/0a", "k1", 1, NULL));
	EXPECT_ERR(hsm_store_alias_create(f->s, "alias/pkcs11-id/0b1c", "k1", 2, NULL),
	           HSM_ERR_VALIDATION);
	assert_string_equal(hsm_last_message(),
	                    "key k1 has a PKCS#11 CKA_ID already (alias/pkcs11-id/0a): delete that "
	                    "alias, or move it, first");
	EXPECT_ERR(hsm_store_alias_get(f->s, "alias/pkcs11-id/0b1c", &a), HSM_ERR_NOT_FOUND);
	/* Names that give no CKA_ID are not held to it (the KMS layer refuses the odd ones). */
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/k1-label", "k1", 3, NULL));
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/pkcs11-id/0B", "k1", 3, NULL));
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/pkcs11-idea", "k1", 3, NULL));
	/* Moving one onto a key that has one is refused; onto its own key it is no second. */
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/pkcs11-id/0b1c", "k2", 4, NULL));
	EXPECT_ERR(hsm_store_alias_update(f->s, "alias/pkcs11-id/0b1c", NULL, "k1", 5, NULL),
	           HSM_ERR_VALIDATION);
	assert_non_null(strstr(hsm_last_message(), "(alias/pkcs11-id/0a)"));
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/pkcs11-id/0b1c", &a));
	assert_string_equal(a.key_id, "k2");
	assert_int_equal(a.updated, 4);
	EXPECT_OK(hsm_store_alias_update(f->s, "alias/pkcs11-id/0a", NULL, "k1", 6, NULL));
	EXPECT_ERR(hsm_store_alias_update(f->s, "alias/pkcs11-id/0a", NULL, "k2", 7, NULL),
	           HSM_ERR_VALIDATION);
	/* Once the first is gone, another may come. */
	EXPECT_OK(hsm_store_alias_delete(f->s, "alias/pkcs11-id/0a"));
	EXPECT_OK(hsm_store_alias_update(f->s, "alias/pkcs11-id/0b1c", NULL, "k1", 8, NULL));
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/pkcs11-id/0a", "k2", 9, NULL));
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/pkcs11-id/0a", &a));
	assert_string_equal(a.key_id, "k2");
}

static void list_aliases(hsm_store *s, const char *key_id, size_t limit, names *all,
                         size_t *pages)
{
	char after[HSM_TAG_KEY_MAX * 4 + 1] = ""; /* as wide as names.v */
	memset(all, 0, sizeof(*all));
	*pages = 0;
	for (;;) {
		names p = {0};
		bool truncated = false;
		EXPECT_OK(hsm_store_alias_list(s, key_id, after, limit, collect_alias, &p, &truncated));
		assert_true(p.n <= limit);
		assert_true(!truncated || p.n == limit);
		for (size_t i = 0; i < p.n; i++) {
			memcpy(all->v[all->n], p.v[i], sizeof(p.v[i]));
			memcpy(all->extra[all->n++], p.extra[i], sizeof(p.extra[i]));
		}
		(*pages)++;
		if (!truncated)
			break;
		snprintf(after, sizeof(after), "%s", p.v[p.n - 1]);
	}
}

static void test_alias_list(void **state)
{
	st_fixture *f = *state;
	const char *order[] = {"alias/a", "alias/b", "alias/c", "alias/d", "alias/e"};
	const char *keys[] = {"k1", "k2", "k1", "k2", "k1"};
	for (int i = 4; i >= 0; i--)
		EXPECT_OK(hsm_store_alias_create(f->s, order[i], keys[i], 1, NULL));
	names all;
	size_t pages;
	for (size_t limit = 1; limit <= 6; limit++) {
		list_aliases(f->s, NULL, limit, &all, &pages);
		assert_int_equal(all.n, 5);
		assert_int_equal(pages, limit >= 5 ? 1 : (5 + limit - 1) / limit);
		for (size_t i = 0; i < 5; i++) {
			assert_string_equal(all.v[i], order[i]);
			assert_string_equal(all.extra[i], keys[i]);
		}
	}
	list_aliases(f->s, "k1", 2, &all, &pages);
	assert_int_equal(all.n, 3);
	assert_int_equal(pages, 2);
	assert_string_equal(all.v[0], "alias/a");
	assert_string_equal(all.v[1], "alias/c");
	assert_string_equal(all.v[2], "alias/e");

	names p = {0};
	bool truncated;
	EXPECT_ERR(hsm_store_alias_list(f->s, "k9", NULL, 10, collect_alias, &p, &truncated),
	           HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_alias_list(f->s, NULL, NULL, 0, collect_alias, &p, &truncated),
	           HSM_ERR_VALIDATION);

	EXPECT_OK(hsm_store_alias_delete_for_key(f->s, "k1"));
	list_aliases(f->s, NULL, 10, &all, &pages);
	assert_int_equal(all.n, 2);
	assert_string_equal(all.v[0], "alias/b");
	assert_string_equal(all.v[1], "alias/d");
	EXPECT_ERR(hsm_store_alias_delete_for_key(f->s, "k9"), HSM_ERR_NOT_FOUND);
}

/* ---- Tags ------------------------------------------------------------------------------- */

static hsm_result collect_tag(const hsm_tag *t, void *arg)
{
	names *n = arg;
	assert_true(n->n < 64);
	snprintf(n->v[n->n], sizeof(n->v[0]), "%s", t->key);
	snprintf(n->extra[n->n], sizeof(n->extra[0]), "%s", t->value);
	n->n++;
	return HSM_SUCCESS;
}

static void tag(hsm_tag *t, const char *key, const char *value)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->key, sizeof(t->key), "%s", key);
	snprintf(t->value, sizeof(t->value), "%s", value);
}

static size_t count_tags(hsm_store *s, const char *key_id, names *out)
{
	bool truncated = true;
	memset(out, 0, sizeof(*out));
	EXPECT_OK(hsm_store_tags_list(s, key_id, NULL, 60, collect_tag, out, &truncated));
	assert_false(truncated);
	return out->n;
}

static void test_tags_put_replace_remove(void **state)
{
	st_fixture *f = *state;
	hsm_tag t[3];
	names got;
	tag(&t[0], "team", "payments");
	tag(&t[1], "env", "prod");
	tag(&t[2], "empty", "");
	EXPECT_OK(hsm_store_tags_put(f->s, "k1", 3, t, NULL));
	st_reopen(f);
	assert_int_equal(count_tags(f->s, "k1", &got), 3);
	assert_string_equal(got.v[0], "empty"); /* ordered by tag key */
	assert_string_equal(got.extra[0], "");
	assert_string_equal(got.v[1], "env");
	assert_string_equal(got.v[2], "team");
	assert_int_equal(count_tags(f->s, "k2", &got), 0);

	/* put replaces existing values; the last duplicate in one call wins. */
	tag(&t[0], "env", "staging");
	tag(&t[1], "env", "dev");
	EXPECT_OK(hsm_store_tags_put(f->s, "k1", 2, t, NULL));
	assert_int_equal(count_tags(f->s, "k1", &got), 3);
	assert_string_equal(got.extra[1], "dev");

	const char *gone[] = {"team", "absent"};
	EXPECT_OK(hsm_store_tags_remove(f->s, "k1", 2, gone, NULL));
	assert_int_equal(count_tags(f->s, "k1", &got), 2);
	assert_string_equal(got.v[0], "empty");
	assert_string_equal(got.v[1], "env");

	EXPECT_ERR(hsm_store_tags_put(f->s, "k9", 1, t, NULL), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_tags_remove(f->s, "k9", 1, gone, NULL), HSM_ERR_NOT_FOUND);
	bool truncated;
	EXPECT_ERR(hsm_store_tags_list(f->s, "k9", NULL, 5, collect_tag, &got, &truncated),
	           HSM_ERR_NOT_FOUND);
	tag(&t[0], "", "x");
	EXPECT_ERR(hsm_store_tags_put(f->s, "k1", 1, t, NULL), HSM_ERR_VALIDATION);
	EXPECT_OK(hsm_store_tags_put(f->s, "k1", 0, NULL, NULL));
}

static void test_tags_limit(void **state)
{
	st_fixture *f = *state;
	hsm_tag t[HSM_MAX_TAGS_PER_KEY + 1];
	names got;
	for (int i = 0; i <= HSM_MAX_TAGS_PER_KEY; i++) {
		char key[16];
		snprintf(key, sizeof(key), "t%02d", i);
		tag(&t[i], key, "v");
	}
	/* More than the limit in one call. */
	EXPECT_ERR(hsm_store_tags_put(f->s, "k1", HSM_MAX_TAGS_PER_KEY + 1, t, NULL),
	           HSM_ERR_LIMIT_EXCEEDED);
	assert_int_equal(count_tags(f->s, "k1", &got), 0);
	/* Exactly the limit, in two calls. */
	EXPECT_OK(hsm_store_tags_put(f->s, "k1", 30, t, NULL));
	EXPECT_OK(hsm_store_tags_put(f->s, "k1", HSM_MAX_TAGS_PER_KEY - 30, t + 30, NULL));
	assert_int_equal(count_tags(f->s, "k1", &got), HSM_MAX_TAGS_PER_KEY);
	/* One more fails and changes nothing, even alongside a replacement. */
	hsm_tag two[2];
	tag(&two[0], "t00", "replaced");
	tag(&two[1], "t50", "new");
	EXPECT_ERR(hsm_store_tags_put(f->s, "k1", 2, two, NULL), HSM_ERR_LIMIT_EXCEEDED);
	assert_int_equal(count_tags(f->s, "k1", &got), HSM_MAX_TAGS_PER_KEY);
	assert_string_equal(got.extra[0], "v");
	/* Replacing at the limit is fine. */
	EXPECT_OK(hsm_store_tags_put(f->s, "k1", 1, two, NULL));
	assert_int_equal(count_tags(f->s, "k1", &got), HSM_MAX_TAGS_PER_KEY);
	assert_string_equal(got.extra[0], "replaced");
	/* The limit is per key. */
	EXPECT_OK(hsm_store_tags_put(f->s, "k2", 1, &two[1], NULL));
}

static void test_tags_pagination(void **state)
{
	st_fixture *f = *state;
	hsm_tag t[7];
	for (int i = 0; i < 7; i++) {
		char key[16];
		snprintf(key, sizeof(key), "key-%d", 6 - i);
		tag(&t[i], key, key);
	}
	EXPECT_OK(hsm_store_tags_put(f->s, "k2", 7, t, NULL));
	for (size_t limit = 1; limit <= 8; limit++) {
		char after[HSM_TAG_KEY_MAX * 4 + 1] = "";
		size_t seen = 0;
		bool truncated = true;
		while (truncated) {
			names p = {0};
			EXPECT_OK(hsm_store_tags_list(f->s, "k2", after, limit, collect_tag, &p,
			                              &truncated));
			for (size_t i = 0; i < p.n; i++) {
				char key[16];
				snprintf(key, sizeof(key), "key-%zu", seen + i);
				assert_string_equal(p.v[i], key);
			}
			seen += p.n;
			assert_int_equal(truncated, seen < 7);
			if (p.n > 0)
				snprintf(after, sizeof(after), "%s", p.v[p.n - 1]);
		}
		assert_int_equal(seen, 7);
	}
}

/* ---- The key state a write asks for ------------------------------------------------ */

typedef struct state_seen {
	int calls;
	hsm_key_state last;
	char key_id[HSM_UUID_STRLEN + 1];
} state_seen;

/* Refuses a key pending deletion, as KMS CreateAlias and TagResource do. */
static hsm_result not_pending_deletion(const char *key_id, hsm_key_state state, const void *arg)
{
	state_seen *seen = (state_seen *)arg;
	seen->calls++;
	seen->last = state;
	snprintf(seen->key_id, sizeof(seen->key_id), "%s", key_id);
	HSM_ENSURE(state != HSM_KEY_PENDING_DELETION, HSM_ERR_INVALID_STATE, "%s is pending deletion",
	           key_id);
	return HSM_SUCCESS;
}

static hsm_result to_pending_deletion(hsm_key_record *k, void *arg)
{
	(void)arg;
	k->state = HSM_KEY_PENDING_DELETION;
	k->deletion_date = 4000000000;
	return HSM_SUCCESS;
}

static void test_writes_ask_the_state_the_key_row_holds(void **state)
{
	st_fixture *f = *state;
	state_seen seen = {0};
	hsm_key_state_check check = {not_pending_deletion, &seen};
	hsm_tag t;
	names got;
	hsm_alias_record a;
	tag(&t, "team", "payments");
	EXPECT_OK(hsm_store_tags_put(f->s, "k1", 1, &t, &check));
	assert_int_equal(seen.calls, 1);
	assert_int_equal(seen.last, HSM_KEY_ENABLED);
	assert_string_equal(seen.key_id, "k1");
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/on-k2", "k2", 1, &check));
	assert_string_equal(seen.key_id, "k2");

	/* The state as stored now, not as any caller last read it. */
	EXPECT_OK(hsm_store_key_update(f->s, "k1", to_pending_deletion, NULL, NULL, NULL));
	seen.calls = 0;
	tag(&t, "late", "1");
	EXPECT_ERR(hsm_store_tags_put(f->s, "k1", 1, &t, &check), HSM_ERR_INVALID_STATE);
	const char *kept[] = {"team"};
	EXPECT_ERR(hsm_store_tags_remove(f->s, "k1", 1, kept, &check), HSM_ERR_INVALID_STATE);
	EXPECT_ERR(hsm_store_alias_create(f->s, "alias/late", "k1", 2, &check),
	           HSM_ERR_INVALID_STATE);
	EXPECT_ERR(hsm_store_alias_update(f->s, "alias/on-k2", "k2", "k1", 2, &check),
	           HSM_ERR_INVALID_STATE);
	assert_int_equal(seen.calls, 4);
	assert_int_equal(seen.last, HSM_KEY_PENDING_DELETION);
	/* Nothing was written. */
	assert_int_equal(count_tags(f->s, "k1", &got), 1);
	assert_string_equal(got.v[0], "team");
	EXPECT_ERR(hsm_store_alias_get(f->s, "alias/late", &a), HSM_ERR_NOT_FOUND);
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/on-k2", &a));
	assert_string_equal(a.key_id, "k2");
	/* Without a condition the store applies its own rules only. */
	EXPECT_OK(hsm_store_tags_put(f->s, "k1", 1, &t, NULL));
	/* A missing key is NOT_FOUND before any condition is asked. */
	seen.calls = 0;
	EXPECT_ERR(hsm_store_alias_create(f->s, "alias/none", "k9", 3, &check), HSM_ERR_NOT_FOUND);
	assert_int_equal(seen.calls, 0);
}

static void test_alias_update_from_a_key_it_left(void **state)
{
	st_fixture *f = *state;
	hsm_alias_record a;
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/app", "k1", 1, NULL));
	/* Moved to k2 by someone else after the caller read it on k1. */
	EXPECT_OK(hsm_store_alias_update(f->s, "alias/app", "k1", "k2", 2, NULL));
	EXPECT_ERR(hsm_store_alias_update(f->s, "alias/app", "k1", "k1", 3, NULL), HSM_ERR_CONFLICT);
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/app", &a));
	assert_string_equal(a.key_id, "k2");
	assert_int_equal(a.updated, 2);
	EXPECT_ERR(hsm_store_alias_update(f->s, "alias/none", "k1", "k2", 3, NULL),
	           HSM_ERR_NOT_FOUND);
	EXPECT_OK(hsm_store_alias_update(f->s, "alias/app", "k2", "k1", 4, NULL));
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/app", &a));
	assert_string_equal(a.key_id, "k1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_alias_lifecycle, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_alias_list, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_alias_limit, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_alias_pkcs11_id_one_per_key, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_tags_put_replace_remove, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_tags_limit, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_tags_pagination, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_writes_ask_the_state_the_key_row_holds, setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_alias_update_from_a_key_it_left, setup, st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
