/*
 * store_material_test.c - keys with imported key material (store.h): the
 * PendingImport state, importing and erasing a version's material in one
 * transaction with the key's change (hsm_store_key_set_material), when
 * material expires (valid_to) and keys_due finds it expired, the digests of
 * versions, and the schema step that adds them to a store written before.
 * SQLite unless HSM_TEST_STORE=pg (store_test_util.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

/* ---- Helpers ----------------------------------------------------------------------------- */

static void set_buf(hsm_buf *b, const char *text)
{
	assert_true(hsm_ok(hsm_buf_set(b, text, strlen(text))));
}

/* An EXTERNAL key awaiting its material: version 1 holds none yet. */
static void create_external(hsm_store *s, const char *id, int64_t valid_to)
{
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, id);
	k.origin = HSM_ORIGIN_EXTERNAL;
	k.state = HSM_KEY_PENDING_IMPORT;
	k.flags = HSM_KEYFLAG_NO_MATERIAL;
	k.valid_to = valid_to;
	st_version(&v, id, 1, NULL, 0);
	EXPECT_OK(hsm_store_key_create(s, &k, &v));
	hsm_version_record_clear(&v);
}

static hsm_result dump_version(const hsm_version_record *v, void *arg)
{
	hsm_buf *out = arg;
	HSM_GUARD(hsm_buf_printf(out, "  v%u %lld %d ", v->version, (long long)v->created,
	                         (int)v->rotation_type));
	st_put_hex(out, &v->wrapped);
	st_put_hex(out, &v->public_der);
	st_put_hex(out, &v->digest);
	return hsm_buf_printf(out, "valid_to=%lld desc=%s\n", (long long)v->valid_to,
	                      v->description);
}

static hsm_result dump_tag(const hsm_tag *t, void *arg)
{
	return hsm_buf_printf(arg, "  tag %s=%s\n", t->key, t->value);
}

static hsm_result dump_grant(const hsm_grant_record *g, void *arg)
{
	return hsm_buf_printf(arg, "  grant %.8s %s %s %s %u %s %lld\n", g->grant_id, g->name,
	                      g->grantee, g->retiring, g->operations, g->constraints,
	                      (long long)g->created);
}

typedef struct dump_ctx {
	hsm_store *s;
	hsm_buf *out;
} dump_ctx;

static hsm_result dump_key(const hsm_key_record *k, void *arg)
{
	dump_ctx *d = arg;
	bool more = false;
	HSM_GUARD(hsm_buf_printf(d->out,
	                         "key %s %s %d %d %d %s %lld %lld %d %d %d %lld %u %s %u %lld "
	                         "valid_to=%lld\n",
	                         k->key_id, k->description, (int)k->spec, (int)k->usage,
	                         (int)k->origin, hsm_key_state_name(k->state),
	                         (long long)k->created, (long long)k->deletion_date,
	                         k->pending_window_days, k->rotation_enabled,
	                         k->rotation_period_days, (long long)k->next_rotation,
	                         k->primary_version, k->policy, k->flags, (long long)k->updated,
	                         (long long)k->valid_to));
	HSM_GUARD(hsm_store_version_list(d->s, k->key_id, dump_version, d->out));
	HSM_GUARD(hsm_store_tags_list(d->s, k->key_id, NULL, HSM_STORE_LIST_MAX, dump_tag, d->out,
	                              &more));
	return hsm_store_grant_list(d->s, k->key_id, NULL, NULL, HSM_STORE_LIST_MAX, dump_grant,
	                            d->out, &more);
}

static hsm_result dump_alias(const hsm_alias_record *a, void *arg)
{
	return hsm_buf_printf(arg, "alias %s -> %s %lld %lld\n", a->name, a->key_id,
	                      (long long)a->created, (long long)a->updated);
}

/* Every key with its versions, tags and grants, and every alias, as text. */
static void dump(hsm_store *s, hsm_buf *out)
{
	bool more = false;
	dump_ctx d = {s, out};
	hsm_buf_clear(out);
	EXPECT_OK(hsm_store_key_list(s, NULL, HSM_STORE_LIST_MAX, true, dump_key, &d, &more));
	EXPECT_OK(hsm_store_alias_list(s, NULL, NULL, HSM_STORE_LIST_MAX, dump_alias, out, &more));
	assert_true(hsm_ok(hsm_buf_terminate(out)));
}

static hsm_result set_state(hsm_key_record *k, void *arg)
{
	const hsm_key_record *want = arg;
	k->state = want->state;
	k->flags = want->flags;
	k->valid_to = want->valid_to;
	k->updated = want->updated;
	return HSM_SUCCESS;
}

/* ---- Records ------------------------------------------------------------------------------ */

/* PendingImport, valid_to and digests through create, get, update, versions and lists. */
static void test_imported_fields_roundtrip(void **state)
{
	st_fixture *f = *state;
	hsm_key_record got = {0}, want = {0};
	hsm_version_record gv = {0};
	create_external(f->s, "ext", 1900000000);
	st_create_key(f->s, "own", "W", 1); /* generated material: no expiry, no digest */
	st_reopen(f);
	EXPECT_OK(hsm_store_key_get(f->s, "ext", &got));
	assert_int_equal(got.state, HSM_KEY_PENDING_IMPORT);
	assert_int_equal(got.origin, HSM_ORIGIN_EXTERNAL);
	assert_int_equal(got.flags, HSM_KEYFLAG_NO_MATERIAL);
	assert_int_equal(got.valid_to, 1900000000);
	hsm_key_record_clear(&got);
	EXPECT_OK(hsm_store_version_get(f->s, "ext", 1, &gv));
	assert_int_equal(gv.wrapped.len, 0);
	assert_int_equal(gv.digest.len, 0);
	hsm_version_record_clear(&gv);
	EXPECT_OK(hsm_store_key_get(f->s, "own", &got));
	assert_int_equal(got.valid_to, 0);
	hsm_key_record_clear(&got);

	/* key_update writes valid_to and the state back, and a new version's digest. */
	hsm_version_record v2;
	st_version(&v2, "ext", 2, "WRAPPED-2", 9);
	set_buf(&v2.digest, "DIGEST-2");
	set_buf(&v2.public_der, "PUB-2");
	st_key(&want, "ext");
	want.state = HSM_KEY_ENABLED;
	want.valid_to = 1950000000;
	want.updated = 1700000500;
	EXPECT_OK(hsm_store_key_update(f->s, "ext", set_state, &want, &v2, NULL));
	st_reopen(f);
	EXPECT_OK(hsm_store_key_get(f->s, "ext", &got));
	assert_int_equal(got.state, HSM_KEY_ENABLED);
	assert_int_equal(got.flags, 0);
	assert_int_equal(got.valid_to, 1950000000);
	assert_int_equal(got.primary_version, 2);
	hsm_key_record_clear(&got);
	EXPECT_OK(hsm_store_version_get(f->s, "ext", 2, &gv));
	assert_int_equal(gv.digest.len, 8);
	assert_memory_equal(gv.digest.data, "DIGEST-2", 8);
	assert_memory_equal(gv.wrapped.data, "WRAPPED-2", 9);
	assert_memory_equal(gv.public_der.data, "PUB-2", 5);
	hsm_version_record_clear(&gv);

	/* Back to PendingImport (material deleted); lists carry the fields too. */
	want.state = HSM_KEY_PENDING_IMPORT;
	want.flags = HSM_KEYFLAG_NO_MATERIAL;
	want.valid_to = 0;
	EXPECT_OK(hsm_store_key_update(f->s, "ext", set_state, &want, NULL, NULL));
	hsm_buf text = {0};
	dump(f->s, &text);
	assert_non_null(strstr((const char *)text.data, "key ext test key"));
	assert_non_null(strstr((const char *)text.data, " PendingImport "));
	assert_non_null(strstr((const char *)text.data, "valid_to=0\n"));
	/* Version 2 in the list: wrapped, public key and digest. */
	assert_non_null(strstr((const char *)text.data,
	                       "575241505045442d32|5055422d32|4449474553542d32|valid_to=0 desc=\n"));
	hsm_buf_free(&text);
	hsm_version_record_clear(&v2);
}

/* ---- Importing and erasing material ------------------------------------------------------ */

/* What fn does to the key in set_material, and how often it ran. */
typedef struct change {
	hsm_key_state state;
	uint32_t flags;
	int64_t valid_to;
	const char *description; /* NULL: leave */
	hsm_err fail;            /* HSM_OK: succeed */
	int calls;
} change;

static hsm_result apply_change(hsm_key_record *k, void *arg)
{
	change *c = arg;
	c->calls++;
	k->state = c->state;
	k->flags = c->flags;
	k->valid_to = c->valid_to;
	k->updated = 1700000777;
	if (c->description != NULL) {
		free(k->description);
		k->description = strdup(c->description);
		if (k->description == NULL)
			return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	if (c->fail != HSM_OK)
		return HSM_FAIL(c->fail, "change refused");
	return HSM_SUCCESS;
}

/* Material for version 1 of key id (copied into the record: clear it). */
static void material(hsm_version_record *m, const char *id, const char *wrapped,
                     const char *public_der, const char *digest)
{
	st_version(m, id, 1, wrapped, strlen(wrapped));
	set_buf(&m->public_der, public_der);
	set_buf(&m->digest, digest);
}

static void assert_version(hsm_store *s, const char *id, uint32_t version, const char *wrapped,
                           const char *public_der, const char *digest)
{
	hsm_version_record v = {0};
	EXPECT_OK(hsm_store_version_get(s, id, version, &v));
	assert_int_equal(v.wrapped.len, strlen(wrapped));
	assert_int_equal(v.public_der.len, strlen(public_der));
	assert_int_equal(v.digest.len, strlen(digest));
	if (v.wrapped.len > 0)
		assert_memory_equal(v.wrapped.data, wrapped, v.wrapped.len);
	if (v.public_der.len > 0)
		assert_memory_equal(v.public_der.data, public_der, v.public_der.len);
	if (v.digest.len > 0)
		assert_memory_equal(v.digest.data, digest, v.digest.len);
	assert_int_equal(v.created, 1700000001); /* the rest of the version is kept */
	assert_int_equal(v.rotation_type, HSM_ROTATION_NONE);
	hsm_version_record_clear(&v);
}

/* The key as create_external made it, untouched. */
static void assert_awaiting(hsm_store *s, const char *id)
{
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(s, id, &k));
	assert_int_equal(k.state, HSM_KEY_PENDING_IMPORT);
	assert_int_equal(k.flags, HSM_KEYFLAG_NO_MATERIAL);
	assert_int_equal(k.valid_to, 0);
	assert_int_equal(k.updated, 1700000000);
	assert_string_equal(k.description, "test key");
	hsm_key_record_clear(&k);
	assert_version(s, id, 1, "", "", "");
}

static void test_set_material_import_then_erase(void **state)
{
	st_fixture *f = *state;
	hsm_key_record after = {0}, got = {0};
	hsm_version_record m;
	create_external(f->s, "ext", 0);
	st_create_key(f->s, "other", "KEEP", 4);

	/* ImportKeyMaterial: the material and the key's new state in one call. */
	change imp = {.state = HSM_KEY_ENABLED, .valid_to = 1900000000};
	material(&m, "ext", "WRAPPED", "", "DIGEST");
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", apply_change, &imp, &m, &after));
	assert_int_equal(imp.calls, 1);
	assert_int_equal(after.state, HSM_KEY_ENABLED);
	assert_int_equal(after.valid_to, 1900000000);
	assert_int_equal(after.updated, 1700000777);
	hsm_key_record_clear(&after);
	hsm_version_record_clear(&m);
	st_reopen(f);
	EXPECT_OK(hsm_store_key_get(f->s, "ext", &got));
	assert_int_equal(got.state, HSM_KEY_ENABLED);
	assert_int_equal(got.flags, 0);
	assert_int_equal(got.valid_to, 1900000000);
	assert_int_equal(got.updated, 1700000777);
	assert_int_equal(got.primary_version, 1);
	hsm_key_record_clear(&got);
	assert_version(f->s, "ext", 1, "WRAPPED", "", "DIGEST");

	/* DeleteImportedKeyMaterial: wrapped empties, digest and public key are as passed. */
	change del = {.state = HSM_KEY_PENDING_IMPORT, .flags = HSM_KEYFLAG_NO_MATERIAL};
	material(&m, "ext", "", "PUB", "DIGEST");
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", apply_change, &del, &m, NULL));
	hsm_version_record_clear(&m);
	st_reopen(f);
	EXPECT_OK(hsm_store_key_get(f->s, "ext", &got));
	assert_int_equal(got.state, HSM_KEY_PENDING_IMPORT);
	assert_int_equal(got.flags, HSM_KEYFLAG_NO_MATERIAL);
	assert_int_equal(got.valid_to, 0);
	hsm_key_record_clear(&got);
	assert_version(f->s, "ext", 1, "", "PUB", "DIGEST");

	/* Without fn the record is written back as it was; the material still changes. */
	material(&m, "ext", "AGAIN", "PUB", "DIGEST");
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", NULL, NULL, &m, &after));
	assert_int_equal(after.state, HSM_KEY_PENDING_IMPORT);
	assert_int_equal(after.updated, 1700000777);
	assert_string_equal(after.description, "test key");
	hsm_key_record_clear(&after);
	hsm_version_record_clear(&m);
	assert_version(f->s, "ext", 1, "AGAIN", "PUB", "DIGEST");
	/* Another key's material is untouched throughout. */
	hsm_version_record v = {0};
	EXPECT_OK(hsm_store_version_get(f->s, "other", 1, &v));
	assert_int_equal(v.wrapped.len, 4);
	hsm_version_record_clear(&v);
}

/* A version's digest, once set, stays: other material is refused and changes nothing. */
static void test_set_material_keeps_the_digest(void **state)
{
	st_fixture *f = *state;
	hsm_version_record m;
	change c = {.state = HSM_KEY_ENABLED};
	create_external(f->s, "ext", 0);
	material(&m, "ext", "FIRST", "", "DIGEST-1");
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, NULL));
	hsm_version_record_clear(&m);
	/* Erased, the digest stays. */
	change del = {.state = HSM_KEY_PENDING_IMPORT, .flags = HSM_KEYFLAG_NO_MATERIAL};
	material(&m, "ext", "", "", "DIGEST-1");
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", apply_change, &del, &m, NULL));
	hsm_version_record_clear(&m);
	/* Other material (another digest): refused, fn not run, nothing written. */
	change other = {.state = HSM_KEY_ENABLED, .description = "changed"};
	material(&m, "ext", "SECOND", "", "DIGEST-2");
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", apply_change, &other, &m, NULL),
	           HSM_ERR_INCORRECT_KEY_MATERIAL);
	hsm_version_record_clear(&m);
	assert_int_equal(other.calls, 0);
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(f->s, "ext", &k));
	assert_int_equal(k.state, HSM_KEY_PENDING_IMPORT);
	assert_string_equal(k.description, "test key");
	hsm_key_record_clear(&k);
	assert_version(f->s, "ext", 1, "", "", "DIGEST-1");
	/* The same material again is taken. */
	material(&m, "ext", "FIRST", "", "DIGEST-1");
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, NULL));
	hsm_version_record_clear(&m);
	assert_version(f->s, "ext", 1, "FIRST", "", "DIGEST-1");
}

static void test_set_material_errors(void **state)
{
	st_fixture *f = *state;
	hsm_key_record after = {0};
	hsm_version_record m;
	change c = {.state = HSM_KEY_ENABLED, .valid_to = 1900000000};
	create_external(f->s, "ext", 0);
	material(&m, "ext", "WRAPPED", "", "DIGEST");

	/* A version beyond the next one: NOT_FOUND, fn not run, nothing written. */
	m.version = 3;
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, &after),
	           HSM_ERR_NOT_FOUND);
	assert_non_null(strstr(hsm_last_message(), "no version 3"));
	assert_int_equal(c.calls, 0);
	assert_null(after.description);
	assert_awaiting(f->s, "ext");
	/* No such key; material of another key; version 0. */
	m.version = 1;
	EXPECT_ERR(hsm_store_key_set_material(f->s, "nokey", apply_change, &c, &m, NULL),
	           HSM_ERR_VALIDATION);
	snprintf(m.key_id, sizeof(m.key_id), "nokey");
	EXPECT_ERR(hsm_store_key_set_material(f->s, "nokey", apply_change, &c, &m, NULL),
	           HSM_ERR_NOT_FOUND);
	snprintf(m.key_id, sizeof(m.key_id), "ext");
	m.version = 0;
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, NULL),
	           HSM_ERR_VALIDATION);
	m.version = 1;
	assert_int_equal(c.calls, 0);

	/* fn's failure is returned and undoes everything, the material included. */
	c.fail = HSM_ERR_DISABLED;
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, &after),
	           HSM_ERR_DISABLED);
	assert_string_equal(hsm_last_message(), "change refused");
	assert_int_equal(c.calls, 1);
	assert_null(after.description);
	assert_awaiting(f->s, "ext");
	/* The state rules hold: fn cannot destroy the key. */
	c.fail = HSM_OK;
	c.state = HSM_KEY_DESTROYED;
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, NULL),
	           HSM_ERR_INVALID_STATE);
	assert_awaiting(f->s, "ext");

	/* A destroyed key's material never changes; fn does not run. */
	EXPECT_OK(hsm_store_key_destroy(f->s, "ext", 1800000000));
	c.calls = 0;
	c.state = HSM_KEY_DESTROYED;
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, NULL),
	           HSM_ERR_INVALID_STATE);
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", NULL, NULL, &m, NULL),
	           HSM_ERR_INVALID_STATE);
	assert_int_equal(c.calls, 0);
	hsm_version_record v = {0};
	EXPECT_OK(hsm_store_version_get(f->s, "ext", 1, &v));
	assert_int_equal(v.wrapped.len, 0);
	hsm_version_record_clear(&v);
	hsm_version_record_clear(&m);
}

/* The key record and the material land together or not at all, whichever write fails. */
static void test_set_material_is_one_transaction(void **state)
{
	st_fixture *f = *state;
	hsm_version_record m;
	create_external(f->s, "ext", 0);
	material(&m, "ext", "WRAPPED", "", "DIGEST");
	/* Writing the key record fails after the material was written: the material is undone. */
	st_poison_on(f, "UPDATE", "keys", "NEW.description = 'boom'");
	change c = {.state = HSM_KEY_ENABLED, .description = "boom"};
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, NULL),
	           HSM_ERR_STORE);
	assert_int_equal(c.calls, 1);
	assert_awaiting(f->s, "ext");
	/* Control: the same call without the poisoned value goes through. */
	c.description = NULL;
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", apply_change, &c, &m, NULL));
	assert_version(f->s, "ext", 1, "WRAPPED", "", "DIGEST");
	hsm_version_record_clear(&m);
}

/* Whether the 64-byte pattern occurs in the store's database or its WAL (SQLite). */
static bool files_contain(const char *dir, const uint8_t pattern[64])
{
	static const char *const names[] = {"hsmd.db", "hsmd.db-wal"};
	bool found = false;
	for (size_t i = 0; i < 2 && !found; i++) {
		char path[PATH_MAX];
		st_path(path, dir, names[i]);
		FILE *fp = fopen(path, "rb");
		if (fp == NULL)
			continue; /* a missing file holds nothing */
		uint8_t buf[1 << 16];
		size_t n, kept = 0;
		while (!found && (n = fread(buf + kept, 1, sizeof(buf) - kept, fp)) > 0) {
			n += kept;
			found = memmem(buf, n, pattern, 64) != NULL;
			kept = n < 63 ? n : 63; /* a match across two reads */
			memmove(buf, buf + n - kept, kept);
		}
		fclose(fp);
	}
	return found;
}

/* An erasure is overwritten as key destruction's is (store.h), whichever backend. */
static void test_erased_material_leaves_the_store(void **state)
{
	st_fixture *f = *state;
	uint8_t secret[64];
	for (size_t i = 0; i < sizeof(secret); i++)
		secret[i] = (uint8_t)(0xA5 ^ (i * 37)); /* no run of equal bytes */
	hsm_version_record m;
	create_external(f->s, "ext", 0);
	st_version(&m, "ext", 1, secret, sizeof(secret));
	set_buf(&m.digest, "DIGEST");
	change imp = {.state = HSM_KEY_ENABLED};
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", apply_change, &imp, &m, NULL));
	st_reopen(f);
	if (!st_is_pg())
		assert_true(files_contain(f->dir, secret)); /* control: the scan sees it stored */

	hsm_buf_free(&m.wrapped);
	change del = {.state = HSM_KEY_PENDING_IMPORT, .flags = HSM_KEYFLAG_NO_MATERIAL};
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", apply_change, &del, &m, NULL));
	assert_version(f->s, "ext", 1, "", "", "DIGEST");
	if (st_is_pg()) {
		/* No live row holds it (dead tuples: store_pg.h, "Erasure"). */
		assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM key_versions "
		                                  "WHERE length(wrapped) > 0"),
		                 0);
	} else {
		/* Scanned while the store is open: the WAL was emptied already. */
		assert_false(files_contain(f->dir, secret));
		hsm_store_close(f->s);
		f->s = NULL;
		assert_false(files_contain(f->dir, secret));
	}
	hsm_version_record_clear(&m);
}

/* ---- Due work: expired material ---------------------------------------------------------- */

typedef struct page {
	char ids[16][HSM_UUID_STRLEN + 1];
	size_t n;
} page;

static hsm_result collect_key(const hsm_key_record *k, void *arg)
{
	page *p = arg;
	assert_true(p->n < 16);
	snprintf(p->ids[p->n++], HSM_UUID_STRLEN + 1, "%s", k->key_id);
	return HSM_SUCCESS;
}

static void add_key(hsm_store *s, const char *id, hsm_key_state st, int64_t valid_to,
                    int64_t deletion, int64_t next_rotation)
{
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, id);
	k.origin = valid_to != 0 ? HSM_ORIGIN_EXTERNAL : HSM_ORIGIN_AWS_KMS;
	k.state = st;
	k.valid_to = valid_to;
	k.deletion_date = deletion;
	k.rotation_enabled = next_rotation != 0;
	k.next_rotation = next_rotation;
	st_version(&v, id, 1, "w", 1);
	EXPECT_OK(hsm_store_key_create(s, &k, &v));
	hsm_version_record_clear(&v);
}

/* The keys keys_due returns at now with limit, in order, joined by spaces. */
static void due(hsm_store *s, int64_t now, size_t limit, char *out, size_t cap)
{
	page p = {0};
	EXPECT_OK(hsm_store_keys_due(s, now, limit, collect_key, &p));
	out[0] = '\0';
	for (size_t i = 0; i < p.n; i++) {
		size_t len = strlen(out);
		snprintf(out + len, cap - len, "%s%s", i ? " " : "", p.ids[i]);
	}
}

static hsm_result clear_valid_to(hsm_key_record *k, void *arg)
{
	(void)arg;
	k->valid_to = 0;
	return HSM_SUCCESS;
}

static void test_keys_due_lists_expired_material(void **state)
{
	st_fixture *f = *state;
	char got[512];
	add_key(f->s, "rot-due", HSM_KEY_ENABLED, 0, 0, 500);
	add_key(f->s, "exp-late", HSM_KEY_ENABLED, 800, 0, 0);
	add_key(f->s, "exp-now", HSM_KEY_ENABLED, 1000, 0, 0);
	add_key(f->s, "exp-early", HSM_KEY_DISABLED, 300, 0, 0);
	add_key(f->s, "exp-import", HSM_KEY_PENDING_IMPORT, 400, 0, 0);
	add_key(f->s, "exp-future", HSM_KEY_ENABLED, 1001, 0, 0);
	add_key(f->s, "exp-none", HSM_KEY_ENABLED, 0, 0, 0);
	add_key(f->s, "exp-gone", HSM_KEY_ENABLED, 200, 0, 0);
	EXPECT_OK(hsm_store_key_destroy(f->s, "exp-gone", 900)); /* destroyed: nothing to expire */
	add_key(f->s, "del-due", HSM_KEY_PENDING_DELETION, 0, 100, 0);

	/* Deletions, then expirations oldest first (any state but Destroyed), then rotations. */
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "del-due exp-early exp-import exp-late exp-now rot-due");
	/* One limit for all three kinds. */
	due(f->s, 1000, 3, got, sizeof(got));
	assert_string_equal(got, "del-due exp-early exp-import");
	due(f->s, 1000, 5, got, sizeof(got));
	assert_string_equal(got, "del-due exp-early exp-import exp-late exp-now");
	due(f->s, 1000, 1, got, sizeof(got));
	assert_string_equal(got, "del-due");
	due(f->s, 350, 10, got, sizeof(got));
	assert_string_equal(got, "del-due exp-early");
	/* Handled (valid_to back to 0): no longer due. */
	EXPECT_OK(hsm_store_key_update(f->s, "exp-early", clear_valid_to, NULL, NULL, NULL));
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "del-due exp-import exp-late exp-now rot-due");
	/* A key whose deletion and expiry are both due is listed once, as a deletion; its
	 * expiry counts while the deletion is not yet due. */
	add_key(f->s, "both", HSM_KEY_PENDING_DELETION, 600, 700, 0);
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "del-due both exp-import exp-late exp-now rot-due");
	due(f->s, 650, 10, got, sizeof(got));
	assert_string_equal(got, "del-due exp-import both rot-due");
}

/* A key whose material expires and whose rotation is due is listed once, as an expiry. */
static void test_keys_due_lists_an_expiring_key_due_to_rotate_once(void **state)
{
	st_fixture *f = *state;
	char got[256];
	add_key(f->s, "rot-only", HSM_KEY_ENABLED, 0, 0, 400);
	add_key(f->s, "both", HSM_KEY_ENABLED, 600, 0, 500);
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "both rot-only");
	/* Before its expiry, it is one of the rotations. */
	due(f->s, 550, 10, got, sizeof(got));
	assert_string_equal(got, "rot-only both");
}

/* The counts at horizon (rotations, material needed, expirations) and overdue before 100. */
static void expect_due_count(hsm_store *s, int64_t horizon, uint64_t rotations,
                             uint64_t material_needed, uint64_t expirations)
{
	hsm_due_counts n = {99, 99, 99, 99, 99}, early = {99, 99, 99, 99, 99};
	EXPECT_OK(hsm_store_keys_due_count(s, horizon, 100, &n));
	assert_int_equal(n.rotations, rotations);
	assert_int_equal(n.material_needed, material_needed);
	assert_int_equal(n.expirations, expirations);
	/* Overdue is the rotations count at its own bound. */
	EXPECT_OK(hsm_store_keys_due_count(s, 100, 50, &early));
	assert_int_equal(n.overdue, early.rotations);
	EXPECT_OK(hsm_store_keys_due_count(s, 50, 50, &early));
	assert_int_equal(early.overdue, early.rotations);
}

/* Copies key `from` n times under new ids, below the API (n durable creates would take long). */
#define CLONE_COLS                                                                           \
	"id, description, spec, usage, origin, state, created, deletion_date, "                  \
	"pending_window_days, rotation_enabled, rotation_period_days, next_rotation, "           \
	"primary_version, policy, flags, updated, valid_to"
#define CLONE_VALUES                                                                         \
	"'%s-' || i, description, spec, usage, origin, state, created, deletion_date, "           \
	"pending_window_days, rotation_enabled, rotation_period_days, next_rotation, "           \
	"primary_version, policy, flags, updated, valid_to"
static void clone_key(st_fixture *f, const char *from, unsigned n)
{
	char sql[1024];
	if (st_is_pg()) {
		snprintf(sql, sizeof(sql),
		         "INSERT INTO keys (" CLONE_COLS ") SELECT " CLONE_VALUES
		         " FROM generate_series(1, %u) AS i, keys WHERE id = '%s'",
		         from, n, from);
		assert_int_equal(st_pg_exec(f->db, sql), 0);
	} else {
		snprintf(sql, sizeof(sql),
		         "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %u) "
		         "INSERT INTO keys (" CLONE_COLS ") SELECT " CLONE_VALUES
		         " FROM n, keys WHERE id = '%s'",
		         n, from, from);
		assert_int_equal(st_raw_exec(f->dir, sql), SQLITE_OK);
	}
}

/*
 * /metrics' gauges of keys due to rotate or to expire within 7 days count every
 * such key: they were counted from keys_due's listing, which stops at
 * HSM_STORE_LIST_MAX keys, so a large store showed 10,000 where more waited.
 */
static hsm_result set_pending_material(hsm_key_record *k, void *arg)
{
	(void)arg;
	k->flags |= HSM_KEYFLAG_PENDING_MATERIAL;
	return HSM_SUCCESS;
}

static void test_keys_due_count(void **state)
{
	st_fixture *f = *state;
	expect_due_count(f->s, 1000, 0, 0, 0);
	add_key(f->s, "rot", HSM_KEY_ENABLED, 0, 0, 500);
	add_key(f->s, "rot-late", HSM_KEY_ENABLED, 0, 0, 1500);
	add_key(f->s, "rot-overdue", HSM_KEY_ENABLED, 0, 0, 40);
	add_key(f->s, "rot-disabled", HSM_KEY_DISABLED, 0, 0, 500); /* does not rotate */
	add_key(f->s, "exp", HSM_KEY_ENABLED, 800, 0, 0);
	add_key(f->s, "exp-import", HSM_KEY_PENDING_IMPORT, 400, 0, 0);
	add_key(f->s, "exp-deleting", HSM_KEY_PENDING_DELETION, 900, 2000, 0);
	add_key(f->s, "exp-gone", HSM_KEY_ENABLED, 200, 0, 0);
	EXPECT_OK(hsm_store_key_destroy(f->s, "exp-gone", 900));
	/* Imported (add_key gives a valid_to the EXTERNAL origin), rotating, no material waiting. */
	add_key(f->s, "both", HSM_KEY_ENABLED, 600, 0, 500);
	expect_due_count(f->s, 1000, 3, 1, 4);
	expect_due_count(f->s, 2000, 4, 1, 4);
	expect_due_count(f->s, 450, 1, 0, 1);
	expect_due_count(f->s, 500, 3, 1, 1);
	hsm_due_counts n;
	EXPECT_OK(hsm_store_keys_due_count(f->s, 1000, 100, &n));
	assert_int_equal(n.overdue, 1); /* rot-overdue */
	/* With its next material imported, the key needs nothing more before its date. */
	EXPECT_OK(hsm_store_key_update(f->s, "both", set_pending_material, NULL, NULL, NULL));
	expect_due_count(f->s, 1000, 3, 0, 4);
	/* Past a listing's largest page. */
	clone_key(f, "rot", HSM_STORE_LIST_MAX);
	clone_key(f, "exp", HSM_STORE_LIST_MAX + 7);
	expect_due_count(f->s, 1000, HSM_STORE_LIST_MAX + 3, 0, HSM_STORE_LIST_MAX + 7 + 4);
}

/*
 * hsmd_keys_deletion_overdue: keys still PendingDeletion whose deletion date is at or
 * before the bound (no scheduler destroyed them, or their destruction failed); a
 * destroyed key, or a date not yet reached, is not counted.
 */
static void test_keys_due_count_deletions_overdue(void **state)
{
	st_fixture *f = *state;
	hsm_due_counts n = {99, 99, 99, 99, 99};
	EXPECT_OK(hsm_store_keys_due_count(f->s, 1000, 100, &n));
	assert_int_equal(n.deletions_overdue, 0);
	add_key(f->s, "del-overdue", HSM_KEY_PENDING_DELETION, 0, 40, 0);
	add_key(f->s, "del-at-bound", HSM_KEY_PENDING_DELETION, 0, 100, 0);
	add_key(f->s, "del-later", HSM_KEY_PENDING_DELETION, 0, 150, 0);
	add_key(f->s, "enabled", HSM_KEY_ENABLED, 0, 40, 0); /* a date left from a cancel */
	add_key(f->s, "del-gone", HSM_KEY_PENDING_DELETION, 0, 30, 0);
	EXPECT_OK(hsm_store_key_destroy(f->s, "del-gone", 90));
	EXPECT_OK(hsm_store_keys_due_count(f->s, 1000, 100, &n));
	assert_int_equal(n.deletions_overdue, 2);
	assert_int_equal(n.overdue, 0); /* none of them rotates */
	EXPECT_OK(hsm_store_keys_due_count(f->s, 1000, 149, &n));
	assert_int_equal(n.deletions_overdue, 2);
	EXPECT_OK(hsm_store_keys_due_count(f->s, 1000, 150, &n));
	assert_int_equal(n.deletions_overdue, 3);
	EXPECT_OK(hsm_store_key_destroy(f->s, "del-overdue", 200));
	EXPECT_OK(hsm_store_keys_due_count(f->s, 1000, 150, &n));
	assert_int_equal(n.deletions_overdue, 2);
}

/*
 * PostgreSQL's plan for sql, its lines joined by "; ".  On a few rows a
 * sequential scan is cheapest, so it is ruled out (as are bitmap scans,
 * which lose the index order): what remains shows whether the index can
 * serve the query, its condition and its order.
 */
static void pg_plan(const char *db, const char *sql, char *out, size_t cap)
{
	char uri[ST_URI_MAX], q[512];
	st_pg_uri_for(uri, db);
	snprintf(q, sizeof(q), "EXPLAIN %s", sql);
	out[0] = '\0';
	PGconn *c = PQconnectdb(uri);
	assert_int_equal(PQstatus(c), CONNECTION_OK);
	PQclear(PQexec(c, "SET enable_seqscan = off; SET enable_bitmapscan = off"));
	PGresult *r = PQexec(c, q);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	for (int i = 0; i < PQntuples(r); i++) {
		size_t len = strlen(out);
		snprintf(out + len, cap - len, "%s; ", PQgetvalue(r, i, 0));
	}
	PQclear(r);
	PQfinish(c);
}

/* Expired material is found through keys_expiry_due, in its order: no scan of all keys, no sort. */
static void test_expiry_query_walks_its_index(void **state)
{
	st_fixture *f = *state;
	char plan[2048];
	add_key(f->s, "exp", HSM_KEY_ENABLED, 300, 0, 0);
	/* The statements' shapes, as in the store. */
	if (st_is_pg()) {
		pg_plan(f->db,
		        "SELECT id FROM keys WHERE valid_to <> 0 AND valid_to <= 1000 AND "
		        "state <> 'Destroyed' ORDER BY valid_to, id LIMIT 10",
		        plan, sizeof(plan));
		if (strstr(plan, "Index Scan using keys_expiry_due") == NULL ||
		    strstr(plan, "Sort") != NULL)
			fail_msg("plan: %s", plan);
		return;
	}
	st_sqlite_plan(f->dir,
	            "SELECT id FROM keys WHERE valid_to <> 0 AND valid_to <= 1000 AND "
	            "state != 'Destroyed' ORDER BY valid_to LIMIT 10",
	            plan, sizeof(plan));
	if (strstr(plan, "USING INDEX keys_expiry_due (valid_to<?)") == NULL ||
	    strstr(plan, "TEMP B-TREE") != NULL)
		fail_msg("plan: %s", plan);
}

/* ---- Versions of imported material: expiry, description, pending versions ----------------- */

/* A version of key id holding material (copied into the record: clear it). */
static void version_of(hsm_version_record *v, const char *id, uint32_t version,
                       const char *wrapped, const char *digest, int64_t valid_to,
                       const char *description)
{
	st_version(v, id, version, wrapped, strlen(wrapped));
	set_buf(&v->digest, digest);
	v->valid_to = valid_to;
	snprintf(v->description, sizeof(v->description), "%s", description);
}

static bool same_bytes(const hsm_buf *a, const hsm_buf *b)
{
	return a->len == b->len && (a->len == 0 || hsm_ct_equal(a->data, b->data, a->len));
}

/* The store holds version want->version of key want->key_id exactly as want says. */
static void expect_version(hsm_store *s, const hsm_version_record *want)
{
	hsm_version_record v = {0};
	EXPECT_OK(hsm_store_version_get(s, want->key_id, want->version, &v));
	assert_int_equal(v.created, want->created);
	assert_int_equal(v.rotation_type, want->rotation_type);
	assert_true(same_bytes(&v.wrapped, &want->wrapped));
	assert_true(same_bytes(&v.public_der, &want->public_der));
	assert_true(same_bytes(&v.digest, &want->digest));
	assert_int_equal(v.valid_to, want->valid_to);
	assert_string_equal(v.description, want->description);
	hsm_version_record_clear(&v);
}

/* The key's primary version, valid_to and flags. */
static void expect_key(hsm_store *s, const char *id, uint32_t primary, int64_t valid_to,
                       uint32_t flags)
{
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(s, id, &k));
	assert_int_equal(k.primary_version, primary);
	assert_int_equal(k.valid_to, valid_to);
	assert_int_equal(k.flags, flags);
	hsm_key_record_clear(&k);
}

/* What fn saw of the key (in set_material or promote), and what it does. */
typedef struct probe {
	int calls;
	int64_t valid_to;
	uint32_t flags;
	uint32_t primary;
	const hsm_key_state *to; /* NULL: leave the state */
	hsm_err fail;            /* HSM_OK: succeed */
} probe;

static hsm_result observe(hsm_key_record *k, void *arg)
{
	probe *p = arg;
	p->calls++;
	p->valid_to = k->valid_to;
	p->flags = k->flags;
	p->primary = k->primary_version;
	k->updated = 1700000888;
	if (p->to != NULL)
		k->state = *p->to;
	if (p->fail != HSM_OK)
		return HSM_FAIL(p->fail, "probe refused");
	return HSM_SUCCESS;
}

/* An Enabled EXTERNAL key whose version 1 holds material expiring at valid_to ("WRAPPED-1", "DIGEST-1"). */
static void imported_key(hsm_store *s, const char *id, int64_t valid_to)
{
	hsm_version_record m;
	change c = {.state = HSM_KEY_ENABLED, .valid_to = valid_to};
	create_external(s, id, 0);
	version_of(&m, id, 1, "WRAPPED-1", "DIGEST-1", valid_to, "first");
	EXPECT_OK(hsm_store_key_set_material(s, id, apply_change, &c, &m, NULL));
	hsm_version_record_clear(&m);
}

/* set_material without fn: the record is written as the store derives it. */
static void set_material(hsm_store *s, const hsm_version_record *m)
{
	EXPECT_OK(hsm_store_key_set_material(s, m->key_id, NULL, NULL, m, NULL));
}

/* valid_to and description through key_create, key_update, set_material, gets and lists. */
static void test_version_fields_roundtrip(void **state)
{
	st_fixture *f = *state;
	hsm_key_record k;
	hsm_version_record v1, v2, again;
	char longest[HSM_MATERIAL_DESC_MAX + 1];
	memset(longest, 'd', HSM_MATERIAL_DESC_MAX);
	longest[HSM_MATERIAL_DESC_MAX] = '\0';
	st_key(&k, "key");
	version_of(&v1, "key", 1, "W1", "D1", 1800000000, "created");
	EXPECT_OK(hsm_store_key_create(f->s, &k, &v1));
	version_of(&v2, "key", 2, "W2", "D2", 1850000000, longest);
	EXPECT_OK(hsm_store_key_update(f->s, "key", set_state, &k, &v2, NULL));
	/* set_material on a version in use: same digest, new expiry and description. */
	version_of(&again, "key", 1, "W1-AGAIN", "D1", 1810000000, "reimported \xc3\xa9");
	set_material(f->s, &again);
	st_reopen(f);
	expect_version(f->s, &again);
	expect_version(f->s, &v2);
	/* Lists carry them too. */
	hsm_buf text = {0};
	dump(f->s, &text);
	assert_non_null(strstr((const char *)text.data,
	                       "valid_to=1810000000 desc=reimported \xc3\xa9\n"));
	assert_non_null(strstr((const char *)text.data, "valid_to=1850000000 desc=dddd"));
	hsm_buf_free(&text);
	hsm_version_record_clear(&v1);
	hsm_version_record_clear(&v2);
	hsm_version_record_clear(&again);
}

/* A description that does not fit, or an expiry before 1970, is refused wherever a version is written. */
static void test_version_fields_checked(void **state)
{
	st_fixture *f = *state;
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, "key");
	version_of(&v, "key", 1, "W1", "D1", 0, "");
	memset(v.description, 'x', sizeof(v.description)); /* no room for the NUL */
	EXPECT_ERR(hsm_store_key_create(f->s, &k, &v), HSM_ERR_VALIDATION);
	v.description[0] = '\0';
	v.valid_to = -1;
	EXPECT_ERR(hsm_store_key_create(f->s, &k, &v), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_key_get(f->s, "key", &k), HSM_ERR_NOT_FOUND);
	hsm_version_record_clear(&v);

	imported_key(f->s, "ext", 0);
	version_of(&v, "ext", 2, "W2", "D2", -5, "");
	EXPECT_ERR(hsm_store_key_update(f->s, "ext", set_state, &k, &v, NULL), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", NULL, NULL, &v, NULL),
	           HSM_ERR_VALIDATION);
	v.valid_to = 0;
	memset(v.description, 'x', sizeof(v.description));
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", NULL, NULL, &v, NULL),
	           HSM_ERR_VALIDATION);
	v.version = 1;
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", NULL, NULL, &v, NULL),
	           HSM_ERR_VALIDATION);
	hsm_version_record_clear(&v);
	expect_key(f->s, "ext", 1, 0, 0);
	EXPECT_ERR(hsm_store_version_get(f->s, "ext", 2, &v), HSM_ERR_NOT_FOUND);
}

/* Version primary+1 is inserted from the material, whole, and does not become primary. */
static void test_pending_version_is_inserted_not_primary(void **state)
{
	st_fixture *f = *state;
	hsm_key_record after = {0};
	hsm_version_record v1, v2;
	imported_key(f->s, "ext", 0);
	version_of(&v1, "ext", 1, "WRAPPED-1", "DIGEST-1", 0, "first");
	version_of(&v2, "ext", 2, "WRAPPED-2", "DIGEST-2", 1950000000, "next");
	set_buf(&v2.public_der, "PUB-2");
	v2.created = 1700000500;
	v2.rotation_type = HSM_ROTATION_AUTOMATIC;
	probe p = {0};
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", observe, &p, &v2, &after));
	/* fn ran once, on the record the store had already derived from the versions. */
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.primary, 1);
	assert_int_equal(p.valid_to, 1950000000);
	assert_int_equal(p.flags, 0);
	assert_int_equal(after.primary_version, 1);
	assert_int_equal(after.valid_to, 1950000000);
	assert_int_equal(after.updated, 1700000888);
	assert_int_equal(after.state, HSM_KEY_ENABLED);
	hsm_key_record_clear(&after);
	st_reopen(f);
	expect_key(f->s, "ext", 1, 1950000000, 0);
	expect_version(f->s, &v2);
	expect_version(f->s, &v1);
	hsm_version_record_clear(&v1);
	hsm_version_record_clear(&v2);
}

/* The pending version is not in use: replaced whole, digest included; later versions do not exist. */
static void test_pending_version_is_replaced_whole(void **state)
{
	st_fixture *f = *state;
	hsm_version_record v2, other, far;
	imported_key(f->s, "ext", 0);
	version_of(&v2, "ext", 2, "WRAPPED-2", "DIGEST-2", 1950000000, "next");
	set_material(f->s, &v2);
	version_of(&other, "ext", 2, "OTHER-2", "OTHER-DIGEST", 0, "");
	set_buf(&other.public_der, "PUB-OTHER");
	other.created = 1700000600;
	other.rotation_type = HSM_ROTATION_AUTOMATIC;
	probe p = {0};
	EXPECT_OK(hsm_store_key_set_material(f->s, "ext", observe, &p, &other, NULL));
	assert_int_equal(p.calls, 1);
	expect_version(f->s, &other);
	expect_key(f->s, "ext", 1, 0, 0);

	/* Beyond primary+1: NOT_FOUND, fn not run, nothing written. */
	for (uint32_t version = 3; version <= 4; version++) {
		version_of(&far, "ext", version, "FAR", "FAR-DIGEST", 1600000000, "far");
		p.calls = 0;
		EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", observe, &p, &far, NULL),
		           HSM_ERR_NOT_FOUND);
		assert_non_null(strstr(hsm_last_message(), "next version is 2"));
		assert_int_equal(p.calls, 0);
		EXPECT_ERR(hsm_store_version_get(f->s, "ext", version, &v2), HSM_ERR_NOT_FOUND);
		hsm_version_record_clear(&far);
	}
	expect_key(f->s, "ext", 1, 0, 0);
	expect_version(f->s, &other);
	hsm_version_record_clear(&v2);
	hsm_version_record_clear(&other);
}

/* A version in use keeps its digest whatever waits beside it, before and after promotion. */
static void test_in_use_digest_stays_with_a_pending_version(void **state)
{
	st_fixture *f = *state;
	hsm_version_record v1, v2, wrong;
	imported_key(f->s, "ext", 0);
	version_of(&v1, "ext", 1, "WRAPPED-1", "DIGEST-1", 0, "first");
	version_of(&v2, "ext", 2, "WRAPPED-2", "DIGEST-2", 0, "next");
	set_material(f->s, &v2);
	probe p = {0};
	version_of(&wrong, "ext", 1, "WRAPPED-X", "DIGEST-X", 1600000000, "wrong");
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", observe, &p, &wrong, NULL),
	           HSM_ERR_INCORRECT_KEY_MATERIAL);
	hsm_version_record_clear(&wrong);
	assert_int_equal(p.calls, 0);
	expect_version(f->s, &v1);

	/* Promoted, version 2 is in use: its digest is fixed too. */
	EXPECT_OK(hsm_store_key_promote(f->s, "ext", 2, 1700002000, HSM_ROTATION_ON_DEMAND, NULL,
	                                NULL, NULL));
	v2.created = 1700002000;
	v2.rotation_type = HSM_ROTATION_ON_DEMAND;
	version_of(&wrong, "ext", 2, "WRAPPED-X", "DIGEST-X", 0, "");
	EXPECT_ERR(hsm_store_key_set_material(f->s, "ext", observe, &p, &wrong, NULL),
	           HSM_ERR_INCORRECT_KEY_MATERIAL);
	assert_int_equal(p.calls, 0);
	expect_version(f->s, &v2);
	/* The same material again: expiry and description change, its history does not. */
	hsm_version_record_clear(&wrong);
	version_of(&wrong, "ext", 2, "WRAPPED-2B", "DIGEST-2", 1990000000, "renewed");
	set_material(f->s, &wrong);
	wrong.created = 1700002000;
	wrong.rotation_type = HSM_ROTATION_ON_DEMAND;
	expect_version(f->s, &wrong);
	expect_key(f->s, "ext", 2, 1990000000, 0);
	hsm_version_record_clear(&v1);
	hsm_version_record_clear(&v2);
	hsm_version_record_clear(&wrong);
}

/* Sets the key flags *arg (a const uint32_t). */
static hsm_result add_flags(hsm_key_record *k, void *arg)
{
	k->flags |= *(const uint32_t *)arg;
	return HSM_SUCCESS;
}

/*
 * The key's valid_to is the earliest expiry among the versions holding
 * material (the pending one included, erased ones not); NO_MATERIAL is set
 * while a version in use holds none (not for the pending one).  Other flags
 * stay.
 */
static void test_material_fields_follow_the_versions(void **state)
{
	st_fixture *f = *state;
	const uint32_t jwt = HSM_KEYFLAG_JWT, none = HSM_KEYFLAG_NO_MATERIAL;
	hsm_version_record v1, v2;
	imported_key(f->s, "ext", 3000);
	EXPECT_OK(hsm_store_key_update(f->s, "ext", add_flags, (void *)&jwt, NULL, NULL));
	version_of(&v1, "ext", 1, "WRAPPED-1", "DIGEST-1", 3000, "");
	version_of(&v2, "ext", 2, "WRAPPED-2", "DIGEST-2", 2000, "");
	set_material(f->s, &v2); /* the pending version expires first */
	expect_key(f->s, "ext", 1, 2000, jwt);
	v2.valid_to = 0; /* never */
	set_material(f->s, &v2);
	expect_key(f->s, "ext", 1, 3000, jwt);
	v2.valid_to = 4000;
	set_material(f->s, &v2);
	expect_key(f->s, "ext", 1, 3000, jwt);
	/* The version in use erased: no material in use, and its expiry no longer counts. */
	hsm_buf_free(&v1.wrapped);
	set_material(f->s, &v1);
	expect_key(f->s, "ext", 1, 4000, jwt | none);
	/* Imported again without expiry: material in use again. */
	set_buf(&v1.wrapped, "WRAPPED-1");
	v1.valid_to = 0;
	set_material(f->s, &v1);
	expect_key(f->s, "ext", 1, 4000, jwt);
	/* The pending version erased: the flag stays clear. */
	hsm_buf_free(&v2.wrapped);
	set_material(f->s, &v2);
	expect_key(f->s, "ext", 1, 0, jwt);
	hsm_buf_free(&v1.wrapped);
	set_material(f->s, &v1);
	expect_key(f->s, "ext", 1, 0, jwt | none);
	hsm_version_record_clear(&v1);
	hsm_version_record_clear(&v2);
}

/* An expiry's erasure holds only while the material still expires then; an erasure zeroes valid_to. */
static void test_expiry_erasure_is_conditional(void **state)
{
	st_fixture *f = *state;
	hsm_version_record v1, seen;
	imported_key(f->s, "ext", 3000);
	/* The scheduler saw 2000, but the material was imported again to expire at 3000. */
	version_of(&v1, "ext", 1, "", "DIGEST-1", 2000, "first");
	hsm_buf_free(&v1.wrapped);
	assert_int_equal(hsm_store_key_set_material(f->s, "ext", NULL, NULL, &v1, NULL).err,
	                 HSM_ERR_CONFLICT);
	memset(&seen, 0, sizeof(seen));
	EXPECT_OK(hsm_store_version_get(f->s, "ext", 1, &seen));
	assert_true(seen.wrapped.len > 0);
	assert_int_equal(seen.valid_to, 3000);
	hsm_version_record_clear(&seen);
	expect_key(f->s, "ext", 1, 3000, 0);
	/* At the time it holds: erased, and nothing expires any more. */
	v1.valid_to = 3000;
	set_material(f->s, &v1);
	v1.valid_to = 0;
	expect_version(f->s, &v1);
	expect_key(f->s, "ext", 1, 0, HSM_KEYFLAG_NO_MATERIAL);
	/* Erased already: a second expiry finds nothing to erase. */
	v1.valid_to = 3000;
	assert_int_equal(hsm_store_key_set_material(f->s, "ext", NULL, NULL, &v1, NULL).err,
	                 HSM_ERR_CONFLICT);
	hsm_version_record_clear(&v1);
}

/* Imported keys that cannot rotate yet (no material waiting) come after every other rotation. */
static void test_keys_due_puts_rotations_without_material_last(void **state)
{
	st_fixture *f = *state;
	char got[256];
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, "imported");
	k.origin = HSM_ORIGIN_EXTERNAL;
	k.rotation_enabled = true;
	k.next_rotation = 100; /* due first */
	st_version(&v, "imported", 1, "w", 1);
	EXPECT_OK(hsm_store_key_create(f->s, &k, &v));
	hsm_version_record_clear(&v);
	add_key(f->s, "own-1", HSM_KEY_ENABLED, 0, 0, 200);
	add_key(f->s, "own-2", HSM_KEY_ENABLED, 0, 0, 300);
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "own-1 own-2 imported");
	due(f->s, 1000, 2, got, sizeof(got));
	assert_string_equal(got, "own-1 own-2");
	/* With material waiting, it takes its place by date again. */
	const uint32_t pending = HSM_KEYFLAG_PENDING_MATERIAL;
	EXPECT_OK(hsm_store_key_update(f->s, "imported", add_flags, (void *)&pending, NULL, NULL));
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "imported own-1 own-2");
}

/* keys_due finds material that expires in the pending version. */
static void test_keys_due_sees_a_pending_expiry(void **state)
{
	st_fixture *f = *state;
	char got[256];
	hsm_version_record v2;
	imported_key(f->s, "ext", 0);
	imported_key(f->s, "quiet", 0);
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "");
	version_of(&v2, "ext", 2, "WRAPPED-2", "DIGEST-2", 500, "");
	set_material(f->s, &v2);
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "ext");
	due(f->s, 499, 10, got, sizeof(got));
	assert_string_equal(got, "");
	/* Erased, it no longer expires. */
	hsm_buf_free(&v2.wrapped);
	set_material(f->s, &v2);
	due(f->s, 1000, 10, got, sizeof(got));
	assert_string_equal(got, "");
	hsm_version_record_clear(&v2);
}

/* Pending material replaced by other material is overwritten on disk as an erasure is. */
static void test_replaced_pending_material_leaves_the_store(void **state)
{
	st_fixture *f = *state;
	uint8_t secret[64];
	for (size_t i = 0; i < sizeof(secret); i++)
		secret[i] = (uint8_t)(0x5A ^ (i * 41));
	hsm_version_record v2;
	imported_key(f->s, "ext", 0);
	version_of(&v2, "ext", 2, "", "DIGEST-2", 0, "");
	assert_true(hsm_ok(hsm_buf_set(&v2.wrapped, secret, sizeof(secret))));
	set_material(f->s, &v2);
	st_reopen(f);
	if (!st_is_pg())
		assert_true(files_contain(f->dir, secret)); /* control */
	set_buf(&v2.wrapped, "OTHER-MATERIAL");
	set_buf(&v2.digest, "OTHER-DIGEST");
	set_material(f->s, &v2);
	expect_version(f->s, &v2);
	if (!st_is_pg()) {
		assert_false(files_contain(f->dir, secret));
		hsm_store_close(f->s);
		f->s = NULL;
		assert_false(files_contain(f->dir, secret));
	}
	hsm_version_record_clear(&v2);
}

/* ---- Promotion ------------------------------------------------------------------------------ */

static void test_promote_makes_the_pending_version_primary(void **state)
{
	st_fixture *f = *state;
	hsm_key_record after = {0};
	hsm_version_record v1, v2, v3;
	imported_key(f->s, "ext", 0);
	version_of(&v1, "ext", 1, "WRAPPED-1", "DIGEST-1", 0, "first");
	version_of(&v2, "ext", 2, "WRAPPED-2", "DIGEST-2", 1950000000, "next");
	v2.rotation_type = HSM_ROTATION_AUTOMATIC;
	set_material(f->s, &v2);
	probe p = {0};
	EXPECT_OK(hsm_store_key_promote(f->s, "ext", 2, 1700009999, HSM_ROTATION_ON_DEMAND, observe,
	                                &p, &after));
	/* fn ran on the record before the store moved the primary version. */
	assert_int_equal(p.calls, 1);
	assert_int_equal(p.primary, 1);
	assert_int_equal(after.primary_version, 2);
	assert_int_equal(after.updated, 1700000888);
	assert_int_equal(after.valid_to, 1950000000);
	hsm_key_record_clear(&after);
	st_reopen(f);
	expect_key(f->s, "ext", 2, 1950000000, 0);
	v2.created = 1700009999;
	v2.rotation_type = HSM_ROTATION_ON_DEMAND;
	expect_version(f->s, &v2);
	expect_version(f->s, &v1);
	/* Without fn; the next pending version. */
	version_of(&v3, "ext", 3, "WRAPPED-3", "DIGEST-3", 0, "third");
	set_material(f->s, &v3);
	EXPECT_OK(hsm_store_key_promote(f->s, "ext", 3, 1700010000, HSM_ROTATION_AUTOMATIC, NULL,
	                                NULL, &after));
	assert_int_equal(after.primary_version, 3);
	assert_int_equal(after.updated, 1700000888);
	hsm_key_record_clear(&after);
	v3.created = 1700010000;
	v3.rotation_type = HSM_ROTATION_AUTOMATIC;
	expect_version(f->s, &v3);
	expect_key(f->s, "ext", 3, 1950000000, 0);
	hsm_version_record_clear(&v1);
	hsm_version_record_clear(&v2);
	hsm_version_record_clear(&v3);
}

/* Each refusal leaves the key and the pending version as they were, fn not run unless it refused. */
static void test_promote_errors(void **state)
{
	st_fixture *f = *state;
	hsm_key_record after = {0};
	hsm_version_record v2;
	probe p = {0};
	imported_key(f->s, "ext", 0);
	/* No pending version yet. */
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 2, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_NOT_FOUND);
	version_of(&v2, "ext", 2, "WRAPPED-2", "DIGEST-2", 0, "next");
	set_material(f->s, &v2);
	/* Not primary+1: another rotation came first (or the caller is confused). */
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 1, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_CONFLICT);
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 3, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_CONFLICT);
	/* No such key; malformed arguments. */
	EXPECT_ERR(hsm_store_key_promote(f->s, "nokey", 2, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 0, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_key_promote(f->s, "", 2, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_VALIDATION);
	assert_int_equal(p.calls, 0);

	/* fn's failure is returned and undoes everything. */
	p.fail = HSM_ERR_DISABLED;
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 2, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_DISABLED);
	assert_string_equal(hsm_last_message(), "probe refused");
	assert_int_equal(p.calls, 1);
	/* The state rules hold. */
	const hsm_key_state destroyed = HSM_KEY_DESTROYED;
	p.fail = HSM_OK;
	p.to = &destroyed;
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 2, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_INVALID_STATE);
	assert_int_equal(p.calls, 2);
	assert_null(after.description);
	expect_key(f->s, "ext", 1, 0, 0);
	expect_version(f->s, &v2);

	/* A pending version without material cannot become primary. */
	hsm_buf_free(&v2.wrapped);
	set_material(f->s, &v2);
	p.to = NULL;
	p.calls = 0;
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 2, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_INVALID_STATE);
	assert_int_equal(p.calls, 0);
	expect_key(f->s, "ext", 1, 0, 0);
	expect_version(f->s, &v2);

	/* Nor can anything on a destroyed key. */
	set_buf(&v2.wrapped, "WRAPPED-2");
	set_material(f->s, &v2);
	EXPECT_OK(hsm_store_key_destroy(f->s, "ext", 1700003000));
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 2, 1, HSM_ROTATION_ON_DEMAND, observe, &p,
	                                 &after),
	           HSM_ERR_INVALID_STATE);
	assert_non_null(strstr(hsm_last_message(), "destroyed"));
	assert_int_equal(p.calls, 0);
	expect_key(f->s, "ext", 1, 0, 0);
	hsm_version_record_clear(&v2);
}

/* The version and the key record change together or not at all, whichever write fails. */
static void test_promote_is_one_transaction(void **state)
{
	st_fixture *f = *state;
	hsm_version_record v2;
	imported_key(f->s, "ext", 0);
	version_of(&v2, "ext", 2, "WRAPPED-2", "DIGEST-2", 0, "next");
	set_material(f->s, &v2);
	/* The key record fails to write after the version was changed: both are undone. */
	st_poison_on(f, "UPDATE", "keys", "NEW.description = 'boom'");
	change c = {.state = HSM_KEY_ENABLED, .description = "boom"};
	EXPECT_ERR(hsm_store_key_promote(f->s, "ext", 2, 1700004000, HSM_ROTATION_ON_DEMAND,
	                                 apply_change, &c, NULL),
	           HSM_ERR_STORE);
	assert_int_equal(c.calls, 1);
	expect_key(f->s, "ext", 1, 0, 0);
	expect_version(f->s, &v2);
	/* Control: the same call without the poisoned value goes through. */
	c.description = NULL;
	EXPECT_OK(hsm_store_key_promote(f->s, "ext", 2, 1700004000, HSM_ROTATION_ON_DEMAND,
	                                apply_change, &c, NULL));
	v2.created = 1700004000;
	v2.rotation_type = HSM_ROTATION_ON_DEMAND;
	expect_version(f->s, &v2);
	expect_key(f->s, "ext", 2, 0, 0);
	hsm_version_record_clear(&v2);
}

/* ---- Migration from the schema before imported material ------------------------------- */

/* A grant with id "<c> x 64" on key_id. */
static void add_grant(hsm_store *s, char c, const char *key_id)
{
	hsm_grant_record g = {.operations = 3, .created = 1700000300};
	memset(g.grant_id, c, HSM_GRANT_ID_LEN);
	snprintf(g.key_id, sizeof(g.key_id), "%s", key_id);
	snprintf(g.name, sizeof(g.name), "nightly");
	snprintf(g.grantee, sizeof(g.grantee), "arn:aws:iam::111122223333:role/app");
	g.constraints = (char *)"{}";
	EXPECT_OK(hsm_store_grant_create(s, &g, NULL, NULL));
}

/* What an older hsmd could have written: keys in its four states with all they hold. */
static void fill_old(hsm_store *s)
{
	hsm_key_record want;
	hsm_version_record v;
	st_create_key(s, "k-enabled", "W1", 2);
	st_version(&v, "k-enabled", 2, "W2", 2);
	set_buf(&v.public_der, "PUB");
	st_key(&want, "k-enabled");
	want.flags = HSM_KEYFLAG_JWT;
	want.updated = 1700000100;
	EXPECT_OK(hsm_store_key_update(s, "k-enabled", set_state, &want, &v, NULL));
	hsm_version_record_clear(&v);
	st_create_key(s, "k-disabled", "D1", 2);
	want.state = HSM_KEY_DISABLED;
	want.flags = 0;
	EXPECT_OK(hsm_store_key_update(s, "k-disabled", set_state, &want, NULL, NULL));
	st_create_key(s, "k-pending", "P1", 2);
	want.state = HSM_KEY_PENDING_DELETION;
	EXPECT_OK(hsm_store_key_update(s, "k-pending", set_state, &want, NULL, NULL));
	st_create_key(s, "k-destroyed", "X1", 2);
	EXPECT_OK(hsm_store_key_destroy(s, "k-destroyed", 1700000200));

	EXPECT_OK(hsm_store_alias_create(s, "alias/a", "k-enabled", 100, NULL));
	EXPECT_OK(hsm_store_alias_create(s, "alias/b", "k-pending", 101, NULL));
	hsm_tag t = {.key = "team", .value = "crypto"};
	EXPECT_OK(hsm_store_tags_put(s, "k-enabled", 1, &t, NULL));
	EXPECT_OK(hsm_store_tags_put(s, "k-disabled", 1, &t, NULL));
	add_grant(s, 'a', "k-enabled");
	add_grant(s, 'b', "k-pending");
}

/* Whether the database holds the column (SQLite or PostgreSQL). */
static long long has_column(st_fixture *f, const char *table, const char *column)
{
	char sql[256];
	if (st_is_pg()) {
		snprintf(sql, sizeof(sql),
		         "SELECT count(*) FROM information_schema.columns WHERE table_name = '%s' "
		         "AND column_name = '%s'",
		         table, column);
		return st_pg_int(f->db, sql);
	}
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM pragma_table_info('%s') WHERE name = '%s'",
	         table, column);
	return st_raw_int(f->dir, sql);
}

/* Runs SQL on the raw database of the backend under test: 0 on success. */
static int raw_exec(st_fixture *f, const char *sql)
{
	if (st_is_pg())
		return st_pg_exec(f->db, sql);
	return st_raw_exec(f->dir, sql) == SQLITE_OK ? 0 : -1;
}

static const char RAW_KEY_INSERT[] =
	"INSERT INTO keys (id, description, spec, usage, origin, state, created, deletion_date, "
	"pending_window_days, rotation_enabled, rotation_period_days, next_rotation, "
	"primary_version, policy, flags, updated) VALUES ('raw', '', 'SYMMETRIC_DEFAULT', "
	"'ENCRYPT_DECRYPT', 'EXTERNAL', '%s', 0, 0, 30, %s, 0, 0, 1, '', 0, 0)";

/* Whether the keys table accepts a row in state (inserted and deleted again). */
static bool state_accepted(st_fixture *f, const char *state)
{
	char sql[512];
	snprintf(sql, sizeof(sql), RAW_KEY_INSERT, state, st_is_pg() ? "false" : "0");
	if (raw_exec(f, sql) != 0)
		return false;
	assert_int_equal(raw_exec(f, "DELETE FROM keys WHERE id = 'raw'"), 0);
	return true;
}

static void test_migrates_a_store_from_before_imports(void **state)
{
	st_fixture *f = *state;
	hsm_buf before = {0}, after = {0};
	fill_old(f->s);
	dump(f->s, &before);
	st_schema_before_import(f);
	/* Control: the database is at the older schema, which knows no PendingImport. */
	assert_int_equal(has_column(f, "keys", "valid_to"), 0);
	assert_int_equal(has_column(f, "key_versions", "digest"), 0);
	assert_false(state_accepted(f, "PendingImport"));
	assert_true(state_accepted(f, "Disabled"));

	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	int latest = st_is_pg() ? hsm_store_pg_schema_latest() : hsm_store_sqlite_schema_latest();
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	assert_int_equal(has_column(f, "keys", "valid_to"), 1);
	assert_int_equal(has_column(f, "key_versions", "digest"), 1);
	/* Every record is intact; valid_to reads 0 and digests empty (the dump shows both). */
	dump(f->s, &after);
	assert_string_equal((const char *)after.data, (const char *)before.data);
	assert_non_null(strstr((const char *)after.data, "valid_to=0\n"));
	assert_null(strstr((const char *)after.data, "valid_to=1"));
	/* The state check holds the new state and still refuses unknown ones. */
	assert_true(state_accepted(f, "PendingImport"));
	assert_false(state_accepted(f, "Bogus"));
	/* Every index on keys is there again. */
	if (st_is_pg()) {
		assert_int_equal(st_pg_int(f->db, "SELECT count(*) FROM pg_indexes WHERE "
		                                  "tablename = 'keys' AND indexname IN "
		                                  "('keys_pkey', 'keys_deletion_due', "
		                                  "'keys_rotation_due', 'keys_jwt', "
		                                  "'keys_expiry_due')"),
		                 5);
	} else {
		assert_int_equal(st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema WHERE "
		                                    "type = 'index' AND tbl_name = 'keys' AND "
		                                    "name IN ('keys_deletion_due', "
		                                    "'keys_rotation_due', 'keys_jwt', "
		                                    "'keys_expiry_due')"),
		                 4);
		assert_int_equal(st_raw_int(f->dir, "SELECT count(*) FROM "
		                                    "pragma_foreign_key_check"),
		                 0);
		assert_int_equal(st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema "
		                                    "WHERE name = 'keys_new'"),
		                 0);
	}

	/* The migrated store takes the new records. */
	create_external(f->s, "k-imported", 1800000000);
	hsm_key_record got = {0};
	EXPECT_OK(hsm_store_key_get(f->s, "k-imported", &got));
	assert_int_equal(got.state, HSM_KEY_PENDING_IMPORT);
	assert_int_equal(got.valid_to, 1800000000);
	hsm_key_record_clear(&got);
	st_reopen(f);
	EXPECT_OK(hsm_store_key_get(f->s, "k-imported", &got));
	assert_int_equal(got.state, HSM_KEY_PENDING_IMPORT);
	hsm_key_record_clear(&got);
	hsm_buf_free(&before);
	hsm_buf_free(&after);
}

/* Feeds the import sink a version whose key it never received. */
static hsm_result orphan_version(const hsm_store_sink *sink, void *arg)
{
	(void)arg;
	hsm_version_record v;
	st_version(&v, "nokey", 1, "W", 1);
	hsm_result res = sink->version(sink->arg, &v);
	hsm_version_record_clear(&v);
	return res;
}

/*
 * The step rebuilds keys with foreign key enforcement suspended (SQLite):
 * afterwards the store's own connection enforces again, so a version whose
 * key does not exist is refused.
 */
static void test_migration_keeps_references_enforced(void **state)
{
	st_fixture *f = *state;
	st_schema_before_import(f);
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	/* The import sink writes records as given: only the foreign key stands in the way. */
	EXPECT_ERR(f->s->ops->import_all(f->s, orphan_version, NULL), HSM_ERR_NOT_FOUND);
	hsm_version_record v;
	EXPECT_ERR(hsm_store_version_get(f->s, "nokey", 1, &v), HSM_ERR_NOT_FOUND);
}

/* ---- Migration to per-version expiry and description ------------------------------------------ */

/*
 * Before the step, an imported key had one version and keys.valid_to was its
 * expiry: the step moves that expiry onto the version when it holds imported
 * material (a digest and wrapped bytes), and onto no other.
 */
static void test_migrates_expiry_onto_versions(void **state)
{
	st_fixture *f = *state;
	hsm_key_record want;
	hsm_version_record v;
	imported_key(f->s, "k-imported", 1900000000);
	/* Material deleted (its digest kept), and generated material: a stray key expiry stays there. */
	imported_key(f->s, "k-deleted", 0);
	version_of(&v, "k-deleted", 1, "", "DIGEST-1", 0, "");
	set_material(f->s, &v);
	hsm_version_record_clear(&v);
	st_create_key(f->s, "k-generated", "W", 1);
	st_key(&want, "k-deleted");
	want.state = HSM_KEY_PENDING_IMPORT;
	want.flags = HSM_KEYFLAG_NO_MATERIAL;
	want.valid_to = 1850000000;
	EXPECT_OK(hsm_store_key_update(f->s, "k-deleted", set_state, &want, NULL, NULL));
	want.state = HSM_KEY_ENABLED;
	want.flags = 0;
	want.valid_to = 1860000000;
	EXPECT_OK(hsm_store_key_update(f->s, "k-generated", set_state, &want, NULL, NULL));

	st_schema_before_version_material(f);
	/* Control: the columns are gone, with what the versions held in them. */
	assert_int_equal(has_column(f, "key_versions", "valid_to"), 0);
	assert_int_equal(has_column(f, "key_versions", "description"), 0);
	assert_int_equal(has_column(f, "keys", "valid_to"), 1);

	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	int latest = st_is_pg() ? hsm_store_pg_schema_latest() : hsm_store_sqlite_schema_latest();
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	version_of(&v, "k-imported", 1, "WRAPPED-1", "DIGEST-1", 1900000000, "");
	expect_version(f->s, &v);
	hsm_version_record_clear(&v);
	version_of(&v, "k-deleted", 1, "", "DIGEST-1", 0, "");
	expect_version(f->s, &v);
	hsm_version_record_clear(&v);
	EXPECT_OK(hsm_store_version_get(f->s, "k-generated", 1, &v));
	assert_int_equal(v.valid_to, 0);
	assert_string_equal(v.description, "");
	hsm_version_record_clear(&v);
	/* The keys are as they were. */
	expect_key(f->s, "k-imported", 1, 1900000000, 0);
	expect_key(f->s, "k-deleted", 1, 1850000000, HSM_KEYFLAG_NO_MATERIAL);
	expect_key(f->s, "k-generated", 1, 1860000000, 0);

	/* The moved expiry is what the store derives the key's from: a pending version that never expires keeps it. */
	version_of(&v, "k-imported", 2, "WRAPPED-2", "DIGEST-2", 0, "next");
	set_material(f->s, &v);
	hsm_version_record_clear(&v);
	expect_key(f->s, "k-imported", 1, 1900000000, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_imported_fields_roundtrip, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_set_material_keeps_the_digest, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_set_material_import_then_erase, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_set_material_errors, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_set_material_is_one_transaction, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_erased_material_leaves_the_store, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_keys_due_count, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_keys_due_count_deletions_overdue, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_keys_due_lists_expired_material, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_expiry_query_walks_its_index, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_migrates_a_store_from_before_imports, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_migration_keeps_references_enforced, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_version_fields_roundtrip, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_version_fields_checked, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_pending_version_is_inserted_not_primary, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_pending_version_is_replaced_whole, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_in_use_digest_stays_with_a_pending_version,
		                                st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_material_fields_follow_the_versions, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_keys_due_lists_an_expiring_key_due_to_rotate_once,
		                                st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_keys_due_sees_a_pending_expiry, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_expiry_erasure_is_conditional, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_keys_due_puts_rotations_without_material_last,
		                                st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_replaced_pending_material_leaves_the_store,
		                                st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_promote_makes_the_pending_version_primary,
		                                st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_promote_errors, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_promote_is_one_transaction, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_migrates_expiry_onto_versions, st_setup,
		                                st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
