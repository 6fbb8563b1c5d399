/*
 * store_grants_test.c - grants (store.h): create/get/delete, keyset
 * pagination of a key's grants and of the grants a principal may retire, the
 * retried-creation rule, the per-grantee and per-key limits, key destruction
 * and the schema step that adds the table.  SQLite unless HSM_TEST_STORE=pg
 * (store_test_util.h); concurrent creators on two nodes: store_pg_test.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store/store.h"
#include "store/store_impl.h"
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

/* Grant ids that sort in the order of n: 64 lowercase hex digits. */
static void grant_id(char out[HSM_GRANT_ID_LEN + 1], unsigned n)
{
	snprintf(out, HSM_GRANT_ID_LEN + 1, "%064x", n);
}

/* A grant of key_id to grantee (constraints point at a literal: do not clear). */
static void grant(hsm_grant_record *g, unsigned n, const char *key_id, const char *grantee)
{
	memset(g, 0, sizeof(*g));
	grant_id(g->grant_id, n);
	snprintf(g->key_id, sizeof(g->key_id), "%s", key_id);
	snprintf(g->grantee, sizeof(g->grantee), "%s", grantee);
	g->operations = 0x3;
	g->created = 1700000000 + n;
}

static void create(hsm_store *s, unsigned n, const char *key_id, const char *grantee,
                   const char *retiring)
{
	hsm_grant_record g;
	bool existed = true;
	grant(&g, n, key_id, grantee);
	snprintf(g.retiring, sizeof(g.retiring), "%s", retiring);
	EXPECT_OK(hsm_store_grant_create(s, &g, &existed, NULL));
	assert_false(existed);
}

/* ---- Collecting listed grants ------------------------------------------------------------ */

#define MAX_SEEN 64

typedef struct seen {
	unsigned id[MAX_SEEN]; /* the n of each grant id */
	char key[MAX_SEEN][HSM_UUID_STRLEN + 1];
	size_t n;
} seen;

static hsm_result collect(const hsm_grant_record *g, void *arg)
{
	seen *s = arg;
	assert_true(s->n < MAX_SEEN);
	assert_non_null(g->constraints);
	s->id[s->n] = (unsigned)strtoul(g->grant_id, NULL, 16);
	snprintf(s->key[s->n], sizeof(s->key[0]), "%s", g->key_id);
	s->n++;
	return HSM_SUCCESS;
}

/* Lists every page (key_id NULL: the grants `retiring` may retire) and checks the paging. */
static void list_all(hsm_store *s, const char *key_id, const char *who, size_t limit,
                     seen *all, size_t *pages)
{
	char after[HSM_GRANT_ID_LEN + 1] = "";
	memset(all, 0, sizeof(*all));
	*pages = 0;
	for (;;) {
		seen p = {0};
		bool truncated = false;
		if (key_id != NULL)
			EXPECT_OK(hsm_store_grant_list(s, key_id, who, after, limit, collect, &p,
			                               &truncated));
		else
			EXPECT_OK(hsm_store_grant_list_retiring(s, who, after, limit, collect, &p,
			                                        &truncated));
		assert_true(p.n <= limit);
		assert_true(!truncated || p.n == limit);
		for (size_t i = 0; i < p.n; i++) {
			assert_true(all->n < MAX_SEEN); /* a listing that never ends fails, not overflows */
			all->id[all->n] = p.id[i];
			memcpy(all->key[all->n++], p.key[i], sizeof(p.key[i]));
		}
		(*pages)++;
		if (!truncated)
			break;
		grant_id(after, p.id[p.n - 1]);
	}
}

static size_t count_grants(hsm_store *s, const char *key_id)
{
	seen all;
	size_t pages;
	list_all(s, key_id, NULL, HSM_STORE_LIST_MAX, &all, &pages);
	return all.n;
}

/* ---- Create, get, delete ------------------------------------------------------------------- */

static void test_grant_create_get_delete(void **state)
{
	st_fixture *f = *state;
	hsm_grant_record g, got = {0};
	bool existed = true;
	char id[HSM_GRANT_ID_LEN + 1];
	grant(&g, 7, "k1", "arn:aws:iam::111122223333:role/app");
	snprintf(g.name, sizeof(g.name), "deploy-\xc3\xa9");
	snprintf(g.retiring, sizeof(g.retiring), "arn:aws:iam::111122223333:role/ops");
	g.operations = 0x80000001U; /* the highest bit survives the round trip */
	g.constraints = (char *)"{\"EncryptionContextSubset\":{\"app\":\"x\"}}";
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
	assert_false(existed);
	grant_id(id, 7); /* a new grant keeps the id it was given */
	assert_string_equal(g.grant_id, id);

	st_reopen(f);
	EXPECT_OK(hsm_store_grant_get(f->s, "k1", g.grant_id, &got));
	assert_string_equal(got.grant_id, g.grant_id);
	assert_string_equal(got.key_id, "k1");
	assert_string_equal(got.name, "deploy-\xc3\xa9");
	assert_string_equal(got.grantee, "arn:aws:iam::111122223333:role/app");
	assert_string_equal(got.retiring, "arn:aws:iam::111122223333:role/ops");
	assert_int_equal(got.operations, 0x80000001U);
	assert_string_equal(got.constraints, g.constraints);
	assert_int_equal(got.created, 1700000007);
	hsm_grant_record_clear(&got);
	assert_null(got.constraints);
	hsm_grant_record_clear(NULL);

	/* NULL constraints and existed are fine; constraints read back as "". */
	grant(&g, 8, "k1", "p");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	EXPECT_OK(hsm_store_grant_get(f->s, "k1", g.grant_id, &got));
	assert_string_equal(got.constraints, "");
	assert_string_equal(got.name, "");
	assert_string_equal(got.retiring, "");
	hsm_grant_record_clear(&got);

	/* A grant belongs to its key: another key does not hold it. */
	EXPECT_ERR(hsm_store_grant_get(f->s, "k2", g.grant_id, &got), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_grant_delete(f->s, "k2", g.grant_id), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_grant_get(f->s, "k9", g.grant_id, &got), HSM_ERR_NOT_FOUND);

	EXPECT_OK(hsm_store_grant_delete(f->s, "k1", g.grant_id));
	EXPECT_ERR(hsm_store_grant_get(f->s, "k1", g.grant_id, &got), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_grant_delete(f->s, "k1", g.grant_id), HSM_ERR_NOT_FOUND);
	assert_null(got.constraints); /* failures leave the output alone */
	assert_int_equal(count_grants(f->s, "k1"), 1);
	/* The id is free again. */
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	assert_int_equal(count_grants(f->s, "k1"), 2);
}

static void test_grant_errors(void **state)
{
	st_fixture *f = *state;
	hsm_grant_record g, got = {0};
	char id[HSM_GRANT_ID_LEN + 1];
	seen p = {0};
	bool truncated;
	create(f->s, 1, "k1", "p", "");

	/* The key: missing, or destroyed. */
	grant(&g, 2, "k9", "p");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_NOT_FOUND);
	st_create_key(f->s, "gone", "w", 1);
	EXPECT_OK(hsm_store_key_destroy(f->s, "gone", 1));
	grant(&g, 2, "gone", "p");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_INVALID_STATE);

	/* Grant ids are unique in the whole store, whatever the key. */
	grant(&g, 1, "k1", "q");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_ALREADY_EXISTS);
	grant(&g, 1, "k2", "p");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_ALREADY_EXISTS);

	/* Malformed grant ids: empty, short, long, upper case, not hex. */
	const char *bad_ids[] = {
		"", "0123", "A000000000000000000000000000000000000000000000000000000000000001",
		"g000000000000000000000000000000000000000000000000000000000000001",
		"000000000000000000000000000000000000000000000000000000000000001",
		"00000000000000000000000000000000000000000000000000000000000000001"};
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		grant(&g, 3, "k1", "p");
		if (strlen(bad_ids[i]) > HSM_GRANT_ID_LEN)
			memset(g.grant_id, '0', sizeof(g.grant_id)); /* no room for the NUL */
		else
			snprintf(g.grant_id, sizeof(g.grant_id), "%s", bad_ids[i]);
		EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_VALIDATION);
		EXPECT_ERR(hsm_store_grant_get(f->s, "k1", bad_ids[i], &got), HSM_ERR_VALIDATION);
		EXPECT_ERR(hsm_store_grant_delete(f->s, "k1", bad_ids[i]), HSM_ERR_VALIDATION);
	}
	/* Fields: no grantee, no operation, an empty key id, strings that overflow their fields. */
	grant(&g, 3, "k1", "");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_VALIDATION);
	grant(&g, 3, "k1", "p");
	g.operations = 0;
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_VALIDATION);
	grant(&g, 3, "", "p");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_VALIDATION);
	grant(&g, 3, "k1", "p");
	memset(g.name, 'n', sizeof(g.name));
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_VALIDATION);
	grant(&g, 3, "k1", "p");
	memset(g.grantee, 'p', sizeof(g.grantee));
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_VALIDATION);
	grant(&g, 3, "k1", "p");
	memset(g.retiring, 'r', sizeof(g.retiring));
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_VALIDATION);
	/* Exactly full fields fit. */
	grant(&g, 3, "k1", "p");
	memset(g.name, 'n', HSM_GRANT_NAME_MAX);
	memset(g.grantee, 'p', HSM_GRANT_PRINCIPAL_MAX);
	memset(g.retiring, 'r', HSM_GRANT_PRINCIPAL_MAX);
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	EXPECT_OK(hsm_store_grant_get(f->s, "k1", g.grant_id, &got));
	assert_int_equal(strlen(got.name), HSM_GRANT_NAME_MAX);
	assert_int_equal(strlen(got.grantee), HSM_GRANT_PRINCIPAL_MAX);
	assert_int_equal(strlen(got.retiring), HSM_GRANT_PRINCIPAL_MAX);
	hsm_grant_record_clear(&got);
	/* None of the refused creations wrote anything. */
	assert_int_equal(count_grants(f->s, "k1"), 2);
	assert_int_equal(count_grants(f->s, "k2"), 0);

	/* Lists: a missing key, a bad limit, an empty or too long principal. */
	EXPECT_ERR(hsm_store_grant_list(f->s, "k9", NULL, NULL, 10, collect, &p, &truncated),
	           HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_grant_list(f->s, "k1", NULL, NULL, 0, collect, &p, &truncated),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_grant_list(f->s, "k1", NULL, NULL, HSM_STORE_LIST_MAX + 1, collect, &p,
	                                &truncated),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_grant_list(f->s, "k1", "", NULL, 10, collect, &p, &truncated),
	           HSM_ERR_VALIDATION);
	EXPECT_OK(hsm_store_grant_list(f->s, "k1", g.grantee, NULL, 10, collect, &p, &truncated));
	assert_int_equal(p.n, 1); /* the full-length grantee */
	char too_long[HSM_GRANT_PRINCIPAL_MAX + 2];
	memset(too_long, 'p', sizeof(too_long) - 1);
	too_long[sizeof(too_long) - 1] = '\0';
	EXPECT_ERR(hsm_store_grant_list(f->s, "k1", too_long, NULL, 10, collect, &p, &truncated),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_grant_list_retiring(f->s, "", NULL, 10, collect, &p, &truncated),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_grant_list_retiring(f->s, too_long, NULL, 10, collect, &p, &truncated),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_grant_list_retiring(f->s, "r", NULL, 0, collect, &p, &truncated),
	           HSM_ERR_VALIDATION);
	/* A destroyed key still exists: its list is empty. */
	list_all(f->s, "gone", NULL, 10, &p, &(size_t){0});
	assert_int_equal(p.n, 0);
	grant_id(id, 1);
	EXPECT_ERR(hsm_store_grant_get(f->s, "gone", id, &got), HSM_ERR_NOT_FOUND);
}

/* ---- Lists -------------------------------------------------------------------------------- */

static void test_grant_list_paging_and_grantee(void **state)
{
	st_fixture *f = *state;
	/* Seven grants on k1 made out of order, two grantees; one on k2. */
	const unsigned ids[] = {40, 10, 70, 20, 60, 30, 50};
	for (size_t i = 0; i < 7; i++)
		create(f->s, ids[i], "k1", ids[i] % 20 == 0 ? "even" : "odd", "");
	create(f->s, 35, "k2", "even", "");
	seen all;
	size_t pages;
	for (size_t limit = 1; limit <= 8; limit++) {
		list_all(f->s, "k1", NULL, limit, &all, &pages);
		assert_int_equal(all.n, 7);
		assert_int_equal(pages, limit >= 7 ? 1 : (7 + limit - 1) / limit);
		for (size_t i = 0; i < 7; i++) {
			assert_int_equal(all.id[i], 10 * (i + 1)); /* ordered by grant id */
			assert_string_equal(all.key[i], "k1");
		}
		/* The grantee filter: 20, 40, 60 are "even"'s on k1 (k2's 35 is not k1's). */
		list_all(f->s, "k1", "even", limit, &all, &pages);
		assert_int_equal(all.n, 3);
		assert_int_equal(all.id[0], 20);
		assert_int_equal(all.id[1], 40);
		assert_int_equal(all.id[2], 60);
		list_all(f->s, "k1", "odd", limit, &all, &pages);
		assert_int_equal(all.n, 4);
		assert_int_equal(all.id[3], 70);
	}
	list_all(f->s, "k2", NULL, 5, &all, &pages);
	assert_int_equal(all.n, 1);
	assert_int_equal(all.id[0], 35);
	list_all(f->s, "k1", "nobody", 5, &all, &pages);
	assert_int_equal(all.n, 0);

	/* A cursor that is no grant's id starts after it; one past the end gives an empty page. */
	char after[HSM_GRANT_ID_LEN + 1];
	seen p = {0};
	bool truncated = true;
	grant_id(after, 25);
	EXPECT_OK(hsm_store_grant_list(f->s, "k1", NULL, after, 2, collect, &p, &truncated));
	assert_int_equal(p.n, 2);
	assert_int_equal(p.id[0], 30);
	assert_int_equal(p.id[1], 40);
	assert_true(truncated);
	memset(&p, 0, sizeof(p));
	grant_id(after, 70);
	EXPECT_OK(hsm_store_grant_list(f->s, "k1", NULL, after, 2, collect, &p, &truncated));
	assert_int_equal(p.n, 0);
	assert_false(truncated);
	/* Exactly a page: not truncated. */
	memset(&p, 0, sizeof(p));
	EXPECT_OK(hsm_store_grant_list(f->s, "k1", NULL, "", 7, collect, &p, &truncated));
	assert_int_equal(p.n, 7);
	assert_false(truncated);
}

static void test_grant_list_retiring_across_keys(void **state)
{
	st_fixture *f = *state;
	create(f->s, 5, "k2", "a", "ops");
	create(f->s, 1, "k1", "a", "ops");
	create(f->s, 3, "k1", "b", "other");
	create(f->s, 4, "k2", "b", "ops");
	create(f->s, 2, "k1", "c", "");
	create(f->s, 6, "k1", "c", "ops");
	seen all;
	size_t pages;
	for (size_t limit = 1; limit <= 5; limit++) {
		list_all(f->s, NULL, "ops", limit, &all, &pages);
		assert_int_equal(all.n, 4);
		assert_int_equal(pages, limit >= 4 ? 1 : (4 + limit - 1) / limit);
		const unsigned want[] = {1, 4, 5, 6};
		const char *keys[] = {"k1", "k2", "k2", "k1"};
		for (size_t i = 0; i < 4; i++) {
			assert_int_equal(all.id[i], want[i]);
			assert_string_equal(all.key[i], keys[i]);
		}
	}
	list_all(f->s, NULL, "other", 2, &all, &pages);
	assert_int_equal(all.n, 1);
	assert_int_equal(all.id[0], 3);
	list_all(f->s, NULL, "nobody", 2, &all, &pages);
	assert_int_equal(all.n, 0);
	/* A retired (deleted) grant leaves the list. */
	char id[HSM_GRANT_ID_LEN + 1];
	grant_id(id, 4);
	EXPECT_OK(hsm_store_grant_delete(f->s, "k2", id));
	list_all(f->s, NULL, "ops", 10, &all, &pages);
	assert_int_equal(all.n, 3);
	assert_int_equal(all.id[1], 5);
}

/* ---- Retried creation (KMS CreateGrant's Name) ---------------------------------------------- */

static void named(hsm_grant_record *g, unsigned n, const char *key_id)
{
	grant(g, n, key_id, "app");
	snprintf(g->name, sizeof(g->name), "nightly");
	snprintf(g->retiring, sizeof(g->retiring), "ops");
	g->operations = 0x5;
	g->constraints = (char *)"{\"EncryptionContextEquals\":{\"a\":\"b\"}}";
}

static void test_grant_retried_creation(void **state)
{
	st_fixture *f = *state;
	hsm_grant_record g, got = {0};
	bool existed = true;
	char first[HSM_GRANT_ID_LEN + 1];
	named(&g, 1, "k1");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
	assert_false(existed);
	grant_id(first, 1);

	/* The same request again under a new id: the first grant's id and time come back. */
	named(&g, 2, "k1");
	char *constraints = g.constraints;
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
	assert_true(existed);
	assert_string_equal(g.grant_id, first);
	assert_int_equal(g.created, 1700000001);
	assert_ptr_equal(g.constraints, constraints); /* left as given */
	assert_int_equal(count_grants(f->s, "k1"), 1);
	char second[HSM_GRANT_ID_LEN + 1];
	grant_id(second, 2);
	EXPECT_ERR(hsm_store_grant_get(f->s, "k1", second, &got), HSM_ERR_NOT_FOUND);
	/* existed is optional. */
	named(&g, 2, "k1");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	assert_string_equal(g.grant_id, first);
	/* Even the id of the first grant is no conflict then: the request is the same. */
	named(&g, 1, "k1");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
	assert_true(existed);

	/* The same name with any field different is a new grant. */
	unsigned n = 10;
	for (int field = 0; field < 6; field++, n++) {
		named(&g, n, "k1");
		switch (field) {
		case 0:
			snprintf(g.grantee, sizeof(g.grantee), "other-app");
			break;
		case 1:
			g.retiring[0] = '\0';
			break;
		case 2:
			g.operations = 0x4;
			break;
		case 3:
			g.constraints = (char *)"{\"EncryptionContextEquals\":{\"a\":\"c\"}}";
			break;
		case 4:
			g.constraints = NULL; /* "" differs from the first grant's constraints */
			break;
		default:
			snprintf(g.name, sizeof(g.name), "weekly");
			break;
		}
		existed = true;
		EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
		assert_false(existed);
		grant_id(second, n);
		assert_string_equal(g.grant_id, second);
	}
	assert_int_equal(count_grants(f->s, "k1"), 7);
	/* Without a name identical fields make a new grant each time. */
	for (int i = 0; i < 2; i++, n++) {
		named(&g, n, "k1");
		g.name[0] = '\0';
		EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
		assert_false(existed);
	}
	assert_int_equal(count_grants(f->s, "k1"), 9);
	/* The name is per key: the same request on k2 is a new grant there. */
	named(&g, n, "k2");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
	assert_false(existed);
	assert_int_equal(count_grants(f->s, "k2"), 1);
	/* Once the first grant is gone, a retry makes a new one. */
	EXPECT_OK(hsm_store_grant_delete(f->s, "k1", first));
	named(&g, ++n, "k1");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
	assert_false(existed);
	grant_id(second, n);
	assert_string_equal(g.grant_id, second);
}

/* ---- Limits ------------------------------------------------------------------------------- */

static void test_grant_limit_per_grantee(void **state)
{
	st_fixture *f = *state;
	hsm_grant_record g;
	bool existed = true;
	uint64_t t0 = hsm_mono_ns();
	for (unsigned i = 0; i < HSM_MAX_GRANTS_PER_GRANTEE; i++) {
		grant(&g, 1000 + i, "k1", "busy");
		if (i == 0)
			snprintf(g.name, sizeof(g.name), "first");
		EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	}
	print_message("%d grant creations in %.2f s\n", HSM_MAX_GRANTS_PER_GRANTEE,
	              (double)(hsm_mono_ns() - t0) / 1e9);
	grant(&g, 5000, "k1", "busy");
	EXPECT_ERR(hsm_store_grant_fits(f->s, &g), HSM_ERR_LIMIT_EXCEEDED);
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_LIMIT_EXCEEDED);
	char id[HSM_GRANT_ID_LEN + 1];
	grant_id(id, 5000);
	hsm_grant_record got = {0};
	EXPECT_ERR(hsm_store_grant_get(f->s, "k1", id, &got), HSM_ERR_NOT_FOUND);
	/* A retry of a grant the grantee holds is no new grant: it passes at the limit. */
	grant(&g, 5001, "k1", "busy");
	snprintf(g.name, sizeof(g.name), "first");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
	assert_true(existed);
	grant_id(id, 1000);
	assert_string_equal(g.grant_id, id);
	/* The limit is per key and grantee. */
	grant(&g, 5002, "k1", "quiet");
	EXPECT_OK(hsm_store_grant_fits(f->s, &g));
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	grant(&g, 5003, "k2", "busy");
	EXPECT_OK(hsm_store_grant_fits(f->s, &g));
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	/* One retired, one more fits. */
	grant_id(id, 1100);
	EXPECT_OK(hsm_store_grant_delete(f->s, "k1", id));
	grant(&g, 5004, "k1", "busy");
	EXPECT_OK(hsm_store_grant_fits(f->s, &g));
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	grant(&g, 5005, "k1", "busy");
	EXPECT_ERR(hsm_store_grant_fits(f->s, &g), HSM_ERR_LIMIT_EXCEEDED);
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_LIMIT_EXCEEDED);
	seen all;
	size_t pages;
	list_all(f->s, "k1", "quiet", 10, &all, &pages);
	assert_int_equal(all.n, 1);
}

/* Inserts n grants on key_id directly (grant ids from base up, 250 per grantee), bypassing the store. */
static void raw_fill(st_fixture *f, const char *key_id, unsigned base, unsigned n)
{
	char sql[1024];
	hsm_store_close(f->s);
	f->s = NULL;
	if (st_is_pg()) {
		snprintf(sql, sizeof(sql),
		         "INSERT INTO grants (grant_id, key_id, name, grantee, retiring, operations, "
		         "constraints, created) SELECT lpad(to_hex(i), 64, '0'), '%s', '', "
		         "'p' || (i / 250), '', 1, '', 1 FROM generate_series(%u, %u) AS i",
		         key_id, base, base + n - 1);
		assert_int_equal(st_pg_exec(f->db, sql), 0);
	} else {
		snprintf(sql, sizeof(sql),
		         "WITH RECURSIVE s(i) AS (SELECT %u UNION ALL SELECT i + 1 FROM s WHERE i < %u) "
		         "INSERT INTO grants (grant_id, key_id, name, grantee, retiring, operations, "
		         "constraints, created) SELECT printf('%%064x', i), '%s', '', "
		         "'p' || (i / 250), '', 1, '', 1 FROM s",
		         base, base + n - 1, key_id);
		assert_int_equal(st_raw_exec(f->dir, sql), SQLITE_OK);
	}
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
}

/*
 * The per-key limit: 50,000 grants are inserted directly (through the store
 * that would be 50,000 durable commits), then the store must refuse one more.
 */
static void test_grant_limit_per_key(void **state)
{
	st_fixture *f = *state;
	hsm_grant_record g;
	raw_fill(f, "k1", 0x100000, HSM_MAX_GRANTS_PER_KEY - 1);
	grant(&g, 1, "k1", "fresh");
	uint64_t t0 = hsm_mono_ns();
	EXPECT_OK(hsm_store_grant_fits(f->s, &g));
	print_message("a check beside %d grants of the key in %.1f ms\n",
	              HSM_MAX_GRANTS_PER_KEY - 1, (double)(hsm_mono_ns() - t0) / 1e6);
	t0 = hsm_mono_ns();
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL)); /* the 50,000th */
	print_message("a creation beside %d grants of the key in %.1f ms\n",
	              HSM_MAX_GRANTS_PER_KEY - 1, (double)(hsm_mono_ns() - t0) / 1e6);
	grant(&g, 2, "k1", "fresh");
	EXPECT_ERR(hsm_store_grant_fits(f->s, &g), HSM_ERR_LIMIT_EXCEEDED);
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_LIMIT_EXCEEDED);
	/* Another key is not affected. */
	grant(&g, 3, "k2", "fresh");
	EXPECT_OK(hsm_store_grant_fits(f->s, &g));
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
	/* A page of the full key costs what it holds, not what the key holds. */
	seen p = {0};
	bool truncated = false;
	char after[HSM_GRANT_ID_LEN + 1];
	grant_id(after, 0x100000 + 30000);
	EXPECT_OK(hsm_store_grant_list(f->s, "k1", NULL, after, 3, collect, &p, &truncated));
	assert_int_equal(p.n, 3);
	assert_int_equal(p.id[0], 0x100000 + 30001);
	assert_true(truncated);
	/* One deleted, one more fits. */
	char id[HSM_GRANT_ID_LEN + 1];
	grant_id(id, 0x100000 + 7);
	EXPECT_OK(hsm_store_grant_delete(f->s, "k1", id));
	grant(&g, 2, "k1", "fresh");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, NULL, NULL));
}

/* ---- Key destruction ------------------------------------------------------------------------ */

static long long raw_count(st_fixture *f, const char *sql)
{
	return st_is_pg() ? st_pg_int(f->db, sql) : st_raw_int(f->dir, sql);
}

static void test_key_destroy_deletes_grants(void **state)
{
	st_fixture *f = *state;
	create(f->s, 1, "k1", "a", "ops");
	create(f->s, 2, "k1", "b", "");
	create(f->s, 3, "k2", "a", "ops");
	EXPECT_OK(hsm_store_key_destroy(f->s, "k1", 1900000000));
	assert_int_equal(count_grants(f->s, "k1"), 0);
	assert_int_equal(count_grants(f->s, "k2"), 1);
	assert_int_equal(raw_count(f, "SELECT count(*) FROM grants WHERE key_id = 'k1'"), 0);
	char id[HSM_GRANT_ID_LEN + 1];
	hsm_grant_record got = {0};
	grant_id(id, 1);
	EXPECT_ERR(hsm_store_grant_get(f->s, "k1", id, &got), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_grant_delete(f->s, "k1", id), HSM_ERR_NOT_FOUND);
	seen all;
	size_t pages;
	list_all(f->s, NULL, "ops", 10, &all, &pages);
	assert_int_equal(all.n, 1);
	assert_int_equal(all.id[0], 3);
	/* No new grants on it; destroying it again is harmless. */
	hsm_grant_record g;
	grant(&g, 4, "k1", "a");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, NULL, NULL), HSM_ERR_INVALID_STATE);
	EXPECT_OK(hsm_store_key_destroy(f->s, "k1", 1900000001));
	assert_int_equal(count_grants(f->s, "k2"), 1);
}

/* ---- Schema ------------------------------------------------------------------------------------ */

/*
 * Each list walks an index in grant id order (no sort of a key's 50,000
 * grants for a page of 100), and the limits count inside an index.  The
 * statements' shapes, as in the store.
 */
static void test_grant_queries_walk_their_indexes(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	static const struct {
		const char *sql, *plan;
	} cases[] = {
		{"SELECT * FROM grants WHERE key_id = ?1 AND grant_id > ?2 ORDER BY grant_id LIMIT ?3",
		 "USING INDEX grants_by_key (key_id=? AND grant_id>?)"},
		{"SELECT * FROM grants WHERE key_id = ?1 AND grantee = ?4 AND grant_id > ?2 "
		 "ORDER BY grant_id LIMIT ?3",
		 "USING INDEX grants_by_grantee (key_id=? AND grantee=? AND grant_id>?)"},
		{"SELECT * FROM grants WHERE retiring = ?1 AND grant_id > ?2 ORDER BY grant_id LIMIT ?3",
		 "USING INDEX grants_by_retiring (retiring=? AND grant_id>?)"},
		{"SELECT count(*) FROM grants WHERE key_id = ?1", "COVERING INDEX grants_by_key"},
		{"SELECT count(*) FROM grants WHERE key_id = ?1 AND grantee = ?2",
		 "COVERING INDEX grants_by_grantee"},
	};
	char plan[1024];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		st_sqlite_plan(f->dir, cases[i].sql, plan, sizeof(plan));
		if (strstr(plan, cases[i].plan) == NULL || strstr(plan, "TEMP B-TREE") != NULL)
			fail_msg("%s: plan %s", cases[i].sql, plan);
	}
}

/* A store written before grants existed (SQLite schema 1, PostgreSQL schema 1) gets them when opened. */
static void test_grants_added_to_an_older_store(void **state)
{
	st_fixture *f = *state;
	EXPECT_OK(hsm_store_alias_create(f->s, "alias/kept", "k1", 1, NULL));
	st_schema_before_import(f);
	if (st_is_pg()) {
		assert_int_equal(st_pg_exec(f->db, "DROP TABLE grants; "
		                                   "DELETE FROM schema_version WHERE version >= 2"),
		                 0);
		assert_int_equal(st_pg_int(f->db, "SELECT max(version) FROM schema_version"), 1);
	} else {
		assert_int_equal(st_raw_exec(f->dir, "DROP TABLE grants; DROP INDEX keys_jwt; "
		                                     "DELETE FROM schema_version WHERE version >= 2"),
		                 SQLITE_OK);
		assert_int_equal(st_raw_int(f->dir, "SELECT max(version) FROM schema_version"), 1);
	}
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	int latest = st_is_pg() ? hsm_store_pg_schema_latest() : hsm_store_sqlite_schema_latest();
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	if (st_is_pg()) {
		assert_int_equal(st_pg_int(f->db, "SELECT max(version) FROM schema_version"), latest);
		assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM pg_indexes "
		                                  "WHERE tablename = 'grants'"),
		                 4); /* the primary key and three */
	} else {
		assert_int_equal(st_raw_int(f->dir, "SELECT max(version) FROM schema_version"), latest);
		assert_int_equal(st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema "
		                                    "WHERE type = 'index' AND tbl_name = 'grants'"),
		                 4);
	}
	/* What the store held is intact, and grants work. */
	hsm_alias_record a;
	EXPECT_OK(hsm_store_alias_get(f->s, "alias/kept", &a));
	create(f->s, 1, "k1", "a", "ops");
	assert_int_equal(count_grants(f->s, "k1"), 1);
}

/* KMS CreateGrant: only of an enabled key.  arg counts the calls. */
static hsm_result only_enabled(const char *key_id, hsm_key_state state, const void *arg)
{
	int *calls = (int *)arg;
	(*calls)++;
	HSM_ENSURE(state == HSM_KEY_ENABLED, HSM_ERR_DISABLED, "%s is not enabled", key_id);
	return HSM_SUCCESS;
}

static hsm_result to_disabled(hsm_key_record *k, void *arg)
{
	(void)arg;
	k->state = HSM_KEY_DISABLED;
	return HSM_SUCCESS;
}

/* The key state the creator asks for is the stored one, asked before a retry's twin is found. */
static void test_grant_create_asks_the_stored_key_state(void **state)
{
	st_fixture *f = *state;
	int calls = 0;
	hsm_key_state_check check = {only_enabled, &calls};
	hsm_grant_record g;
	bool existed = true;
	grant(&g, 1, "k1", "app");
	snprintf(g.name, sizeof(g.name), "retried");
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, &check));
	assert_false(existed);
	assert_int_equal(calls, 1);
	EXPECT_OK(hsm_store_key_update(f->s, "k1", to_disabled, NULL, NULL, NULL));
	/* Neither a new grant nor the retried one's answer. */
	grant(&g, 2, "k1", "app");
	snprintf(g.name, sizeof(g.name), "retried");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, &existed, &check), HSM_ERR_DISABLED);
	grant(&g, 3, "k1", "other");
	EXPECT_ERR(hsm_store_grant_create(f->s, &g, &existed, &check), HSM_ERR_DISABLED);
	assert_int_equal(calls, 3);
	assert_int_equal(count_grants(f->s, "k1"), 1);
	/* Without a condition the store refuses only a destroyed key. */
	EXPECT_OK(hsm_store_grant_create(f->s, &g, &existed, NULL));
	assert_int_equal(count_grants(f->s, "k1"), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_grant_create_get_delete, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_grant_errors, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_grant_list_paging_and_grantee, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_grant_list_retiring_across_keys, setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_grant_retried_creation, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_grant_limit_per_grantee, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_grant_limit_per_key, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_key_destroy_deletes_grants, setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_grant_queries_walk_their_indexes, setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_grants_added_to_an_older_store, setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_grant_create_asks_the_stored_key_state, setup,
		                                st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
