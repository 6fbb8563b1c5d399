/*
 * store_copy_test.c - hsm_store_copy and snapshots, record for record.
 *
 * A store is filled with every kind of record in every state the public
 * functions can reach (destroyed keys with erased versions, keys with
 * imported material and with it deleted, locked users, inactive access keys,
 * rotated keys, binary and empty metadata, grants, certificates with binary
 * fields), copied, and every record of both stores compared through a
 * canonical dump.  With
 * HSM_TEST_STORE=pg the copies go SQLite -> PostgreSQL -> SQLite and
 * PostgreSQL -> PostgreSQL, and PostgreSQL's snapshot is opened as a SQLite
 * store; without it, SQLite -> SQLite.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

/* ---- Filling a store ------------------------------------------------------------------- */

static const char *const meta_names[] = {"store_id", "kcv", "blank", "binary"};

static hsm_result edit_fn(hsm_key_record *k, void *arg)
{
	const hsm_key_record *want = arg;
	free(k->description);
	k->description = strdup(want->description);
	if (k->description == NULL)
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	k->state = want->state;
	k->deletion_date = want->deletion_date;
	k->rotation_enabled = want->rotation_enabled;
	k->rotation_period_days = want->rotation_period_days;
	k->next_rotation = want->next_rotation;
	k->flags = want->flags;
	k->updated = want->updated;
	k->valid_to = want->valid_to;
	return HSM_SUCCESS;
}

static void add_version(hsm_store *s, const char *id, uint32_t version, const char *wrapped)
{
	hsm_key_record want;
	hsm_key_record cur = {0};
	EXPECT_OK(hsm_store_key_get(s, id, &cur));
	want = cur;
	want.updated = cur.updated + 10;
	hsm_version_record v;
	st_version(&v, id, version, wrapped, strlen(wrapped));
	v.rotation_type = version % 2 ? HSM_ROTATION_AUTOMATIC : HSM_ROTATION_ON_DEMAND;
	assert_true(hsm_ok(hsm_buf_set(&v.public_der, "\x30\x00PUB", 5)));
	EXPECT_OK(hsm_store_key_update(s, id, edit_fn, &want, &v, NULL));
	hsm_version_record_clear(&v);
	hsm_key_record_clear(&cur);
}

static void edit(hsm_store *s, const char *id, const char *desc, hsm_key_state state,
                 int64_t deletion, bool rotation, uint32_t flags)
{
	hsm_key_record want;
	st_key(&want, id);
	want.description = (char *)desc;
	want.state = state;
	want.deletion_date = deletion;
	want.rotation_enabled = rotation;
	want.rotation_period_days = rotation ? 90 : 0;
	want.next_rotation = rotation ? 1800000000 : 0;
	want.flags = flags;
	want.updated = 1750000000;
	EXPECT_OK(hsm_store_key_update(s, id, edit_fn, &want, NULL, NULL));
}

/* A grant with id "<c> x 64" (grantee, retiring principal and constraints point at literals). */
static void add_grant(hsm_store *s, char c, const char *key_id, const char *name,
                      const char *grantee, const char *retiring, uint32_t ops,
                      const char *constraints)
{
	hsm_grant_record g = {.operations = ops, .created = 1700000300 + c};
	bool existed = true;
	memset(g.grant_id, c, HSM_GRANT_ID_LEN);
	snprintf(g.key_id, sizeof(g.key_id), "%s", key_id);
	snprintf(g.name, sizeof(g.name), "%s", name);
	snprintf(g.grantee, sizeof(g.grantee), "%s", grantee);
	snprintf(g.retiring, sizeof(g.retiring), "%s", retiring);
	g.constraints = (char *)constraints;
	EXPECT_OK(hsm_store_grant_create(s, &g, &existed, NULL));
	assert_false(existed);
}

/*
 * A certificate with id n (st_key_id's shape): its object id and DER are
 * given bytes, or (len SIZE_MAX) fill bytes of their field's largest size.
 */
static void add_cert(hsm_store *s, unsigned n, const char *label, const void *object_id,
                     size_t object_id_len, const void *der, size_t der_len, const char *creator)
{
	hsm_cert_record c = {.created = 1700000500 + n};
	st_key_id(c.cert_id, n);
	snprintf(c.label, sizeof(c.label), "%s", label);
	snprintf(c.creator, sizeof(c.creator), "%s", creator);
	assert_true(hsm_ok(hsm_buf_set(&c.object_id, object_id, object_id_len)));
	assert_true(hsm_ok(hsm_buf_set(&c.der, der, der_len)));
	EXPECT_OK(hsm_store_cert_create(s, &c));
	hsm_cert_record_clear(&c);
}

/* The largest certificate: every field full, every byte value in the DER and the object id. */
static void add_largest_cert(hsm_store *s, unsigned n)
{
	hsm_cert_record c = {.created = -1}; /* before 1970: stored as given */
	st_key_id(c.cert_id, n);
	memset(c.label, 'L', HSM_CERT_LABEL_MAX);
	memset(c.creator, 'u', HSM_USER_NAME_MAX);
	uint8_t *p = NULL;
	assert_true(hsm_ok(hsm_buf_append_space(&c.object_id, HSM_CERT_OBJECT_ID_MAX, &p)));
	for (size_t i = 0; i < HSM_CERT_OBJECT_ID_MAX; i++)
		p[i] = (uint8_t)(255 - i);
	assert_true(hsm_ok(hsm_buf_append_space(&c.der, HSM_CERT_DER_MAX, &p)));
	for (size_t i = 0; i < HSM_CERT_DER_MAX; i++)
		p[i] = (uint8_t)(i * 7);
	EXPECT_OK(hsm_store_cert_create(s, &c));
	hsm_cert_record_clear(&c);
}

/*
 * An EXTERNAL key made PendingImport, given material (with its digest, an
 * expiry and a description) and then, if keep, a pending version 2 too
 * (material waiting to become primary), else its material deleted again.
 */
static void add_imported(hsm_store *s, const char *id, bool keep)
{
	hsm_key_record k, want;
	hsm_version_record v;
	st_key(&k, id);
	k.origin = HSM_ORIGIN_EXTERNAL;
	k.state = HSM_KEY_PENDING_IMPORT;
	k.flags = HSM_KEYFLAG_NO_MATERIAL;
	st_version(&v, id, 1, NULL, 0);
	EXPECT_OK(hsm_store_key_create(s, &k, &v));
	st_key(&want, id);
	want.description = (char *)"imported";
	want.valid_to = 1900000000;
	want.updated = 1700000400;
	assert_true(hsm_ok(hsm_buf_set(&v.wrapped, "IMPORTED", 8)));
	assert_true(hsm_ok(hsm_buf_set(&v.digest, "\x00DIGEST\xff", 8)));
	v.valid_to = 1900000000;
	snprintf(v.description, sizeof(v.description), "first material \xc3\xa9");
	EXPECT_OK(hsm_store_key_set_material(s, id, edit_fn, &want, &v, NULL));
	if (keep) {
		hsm_version_record_clear(&v);
		st_version(&v, id, 2, "PENDING", 7);
		v.created = 1700000450;
		assert_true(hsm_ok(hsm_buf_set(&v.digest, "DIGEST-2", 8)));
		v.valid_to = 1890000000;
		snprintf(v.description, sizeof(v.description), "next material");
		EXPECT_OK(hsm_store_key_set_material(s, id, NULL, NULL, &v, NULL));
	} else {
		want.state = HSM_KEY_PENDING_IMPORT;
		want.flags = HSM_KEYFLAG_NO_MATERIAL;
		want.valid_to = 0;
		hsm_buf_free(&v.wrapped);
		EXPECT_OK(hsm_store_key_set_material(s, id, edit_fn, &want, &v, NULL));
	}
	hsm_version_record_clear(&v);
}

static void fill(hsm_store *s)
{
	/* Metadata: text, binary with NULs, empty. */
	hsm_buf a = {0}, b = {0}, empty = {0}, bin = {0};
	assert_true(hsm_ok(hsm_buf_set(&a, "store-1", 7)));
	assert_true(hsm_ok(hsm_buf_set(&b, "\x00\x01\xff", 3)));
	assert_true(hsm_ok(hsm_buf_set(&bin, "\x00\x00\x00\x80", 4)));
	const hsm_buf *values[] = {&a, &b, &empty, &bin};
	EXPECT_OK(hsm_store_meta_put(s, 4, meta_names, values));

	/* Keys in every state. */
	st_create_key(s, "k-enabled", "W1", 2);
	add_version(s, "k-enabled", 2, "W2");
	add_version(s, "k-enabled", 3, "W3");
	edit(s, "k-enabled", "rotating, jwt", HSM_KEY_ENABLED, 0, true,
	     HSM_KEYFLAG_JWT | (3U << 8));
	st_create_key(s, "k-disabled", "D1", 2);
	edit(s, "k-disabled", "", HSM_KEY_DISABLED, 0, false, 0);
	st_create_key(s, "k-pending", "P1", 2);
	edit(s, "k-pending", "going", HSM_KEY_PENDING_DELETION, 1760000000, false, 0);
	st_create_key(s, "k-destroyed", "X1", 2);
	add_version(s, "k-destroyed", 2, "X2");
	edit(s, "k-destroyed", "gone", HSM_KEY_PENDING_DELETION, 1760000000, false, 0);
	EXPECT_OK(hsm_store_alias_create(s, "alias/destroyed", "k-destroyed", 5, NULL));
	add_grant(s, 'f', "k-destroyed", "", "app", "ops", 1, ""); /* destroyed with its key */
	EXPECT_OK(hsm_store_key_destroy(s, "k-destroyed", 1770000000));
	/* Imported material: held with an expiry, and deleted (its digest kept). */
	add_imported(s, "k-imported", true);
	add_imported(s, "k-material-deleted", false);

	/* Aliases (one moved, so created != updated) and tags (one replaced). */
	EXPECT_OK(hsm_store_alias_create(s, "alias/a", "k-enabled", 100, NULL));
	EXPECT_OK(hsm_store_alias_create(s, "alias/b", "k-disabled", 101, NULL));
	EXPECT_OK(hsm_store_alias_update(s, "alias/b", NULL, "k-enabled", 202, NULL));
	EXPECT_OK(hsm_store_alias_create(s, "alias/\xc3\xa9t\xc3\xa9", "k-pending", 103, NULL));
	hsm_tag tags[3];
	memset(tags, 0, sizeof(tags));
	snprintf(tags[0].key, sizeof(tags[0].key), "team");
	snprintf(tags[0].value, sizeof(tags[0].value), "crypto");
	snprintf(tags[1].key, sizeof(tags[1].key), "cost-center");
	tags[1].value[0] = '\0'; /* an empty value */
	snprintf(tags[2].key, sizeof(tags[2].key), "team");
	snprintf(tags[2].value, sizeof(tags[2].value), "platform");
	EXPECT_OK(hsm_store_tags_put(s, "k-enabled", 3, tags, NULL));
	EXPECT_OK(hsm_store_tags_put(s, "k-pending", 1, tags, NULL));

	/* Grants: named with a retiring principal and constraints; bare; on another key. */
	add_grant(s, 'b', "k-enabled", "nightly-\xc3\xa9", "arn:aws:iam::111122223333:role/app",
	          "arn:aws:iam::111122223333:role/ops", 0x7,
	          "{\"EncryptionContextSubset\":{\"team\":\"\xc3\xa9\"}}");
	add_grant(s, 'a', "k-enabled", "", "arn:aws:iam::111122223333:role/batch", "",
	          0x80000000U, NULL);
	add_grant(s, '1', "k-pending", "", "arn:aws:iam::111122223333:role/app",
	          "arn:aws:iam::111122223333:role/ops", 0x1, "{}");

	/*
	 * Certificates: binary fields with NUL bytes and a UTF-8 label; empty
	 * label, object id and creator; every field at its largest.
	 */
	add_cert(s, 2, "server \xc3\xa9", "\x00\x01\x00\xff", 4, "\x30\x82\x00\x00\x00\x05", 6,
	         "alice");
	add_cert(s, 1, "", "", 0, "\x00", 1, "");
	add_largest_cert(s, 3);

	/* Users: a locked one with failures counted, a disabled one; access keys, one inactive. */
	hsm_user_record u1 = {.name = "alice", .roles = 1U << HSM_ROLE_CRYPTO_OFFICER,
	                      .created = 1700000001};
	hsm_user_record u2 = {.name = "bob",
	                      .roles = (1U << HSM_ROLE_CRYPTO_USER) | (1U << HSM_ROLE_AUDITOR),
	                      .created = 1700000002};
	EXPECT_OK(hsm_store_user_create(s, &u1));
	EXPECT_OK(hsm_store_user_create(s, &u2));
	for (int i = 0; i < 3; i++)
		EXPECT_OK(hsm_store_user_auth_result(s, "alice", false, 3, NULL, NULL));
	u2.disabled = true;
	EXPECT_OK(hsm_store_user_put(s, &u2));
	EXPECT_OK(hsm_store_user_auth_result(s, "bob", false, 0, NULL, NULL));
	hsm_access_key_record k1 = {.access_key_id = "AKIAAAAAAAAAAAAAAAA1", .user = "alice",
	                            .active = true, .created = 1700000100};
	hsm_access_key_record k2 = {.access_key_id = "AKIAAAAAAAAAAAAAAAA2", .user = "bob",
	                            .active = true, .created = 1700000200};
	assert_true(hsm_ok(hsm_buf_set(&k1.wrapped_secret, "SECRET-1", 8)));
	assert_true(hsm_ok(hsm_buf_set(&k2.wrapped_secret, "SECRET-2", 8)));
	EXPECT_OK(hsm_store_access_key_create(s, &k1));
	EXPECT_OK(hsm_store_access_key_create(s, &k2));
	EXPECT_OK(hsm_store_access_key_set_active(s, "AKIAAAAAAAAAAAAAAAA2", false));
	hsm_access_key_record_clear(&k1);
	hsm_access_key_record_clear(&k2);
	hsm_buf_free(&a);
	hsm_buf_free(&b);
	hsm_buf_free(&bin);
}

/* ---- A canonical dump of every record ---------------------------------------------------------- */

static hsm_result dump_version(const hsm_version_record *v, void *arg)
{
	hsm_buf *out = arg;
	HSM_GUARD(hsm_buf_printf(out, "  version %s %u %lld %d ", v->key_id, v->version,
	                         (long long)v->created, (int)v->rotation_type));
	st_put_hex(out, &v->wrapped);
	st_put_hex(out, &v->public_der);
	st_put_hex(out, &v->digest);
	return hsm_buf_printf(out, "valid_to=%lld desc=%s\n", (long long)v->valid_to,
	                      v->description);
}

static hsm_result dump_alias(const hsm_alias_record *a, void *arg)
{
	return hsm_buf_printf(arg, "alias %s -> %s %lld %lld\n", a->name, a->key_id,
	                      (long long)a->created, (long long)a->updated);
}

static hsm_result dump_tag(const hsm_tag *t, void *arg)
{
	return hsm_buf_printf(arg, "  tag %s=%s\n", t->key, t->value);
}

static hsm_result dump_grant(const hsm_grant_record *g, void *arg)
{
	return hsm_buf_printf(arg,
	                      "  grant %s key=%s name=%s grantee=%s retiring=%s ops=%u "
	                      "constraints=%s created=%lld\n",
	                      g->grant_id, g->key_id, g->name, g->grantee, g->retiring,
	                      g->operations, g->constraints, (long long)g->created);
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
	                         "key %s desc=%s spec=%d usage=%d origin=%d state=%d created=%lld "
	                         "del=%lld window=%d rot=%d period=%d next=%lld primary=%u "
	                         "policy=%s flags=%u updated=%lld valid_to=%lld\n",
	                         k->key_id, k->description, (int)k->spec, (int)k->usage,
	                         (int)k->origin, (int)k->state, (long long)k->created,
	                         (long long)k->deletion_date, k->pending_window_days,
	                         k->rotation_enabled, k->rotation_period_days,
	                         (long long)k->next_rotation, k->primary_version, k->policy, k->flags,
	                         (long long)k->updated, (long long)k->valid_to));
	HSM_GUARD(hsm_store_version_list(d->s, k->key_id, dump_version, d->out));
	HSM_GUARD(hsm_store_tags_list(d->s, k->key_id, NULL, HSM_STORE_LIST_MAX, dump_tag, d->out,
	                              &more));
	HSM_ENSURE(!more, HSM_ERR_INTERNAL, "more tags than a page");
	HSM_GUARD(hsm_store_grant_list(d->s, k->key_id, NULL, NULL, HSM_STORE_LIST_MAX, dump_grant,
	                               d->out, &more));
	HSM_ENSURE(!more, HSM_ERR_INTERNAL, "more grants than a page");
	return HSM_SUCCESS;
}

/* Certificates go out page by page: the last id listed starts the next page. */
typedef struct cert_dump {
	hsm_buf *out;
	char last[HSM_UUID_STRLEN + 1];
} cert_dump;

static hsm_result dump_cert(const hsm_cert_record *c, void *arg)
{
	cert_dump *d = arg;
	HSM_GUARD(hsm_buf_printf(d->out, "cert %s label=%s creator=%s created=%lld ", c->cert_id,
	                         c->label, c->creator, (long long)c->created));
	st_put_hex(d->out, &c->object_id);
	st_put_hex(d->out, &c->der);
	memcpy(d->last, c->cert_id, sizeof(d->last));
	return hsm_buf_put_str(d->out, "\n");
}

static hsm_result dump_user(const hsm_user_record *u, void *arg)
{
	return hsm_buf_printf(arg, "user %s roles=%u disabled=%d locked=%d failed=%u created=%lld\n",
	                      u->name, u->roles, u->disabled, u->locked, u->failed_auth,
	                      (long long)u->created);
}

static hsm_result dump_access_key(const hsm_access_key_record *k, void *arg)
{
	hsm_buf *out = arg;
	HSM_GUARD(hsm_buf_printf(out, "access key %s user=%s active=%d created=%lld ",
	                         k->access_key_id, k->user, k->active, (long long)k->created));
	st_put_hex(out, &k->wrapped_secret);
	return hsm_buf_put_str(out, "\n");
}

/* Everything the store holds, read through the public functions, as text. */
static void dump(hsm_store *s, hsm_buf *out)
{
	bool more = false;
	hsm_buf_clear(out);
	for (size_t i = 0; i < sizeof(meta_names) / sizeof(meta_names[0]); i++) {
		hsm_buf v = {0};
		EXPECT_OK(hsm_store_meta_get(s, meta_names[i], &v));
		assert_true(hsm_ok(hsm_buf_printf(out, "meta %s ", meta_names[i])));
		st_put_hex(out, &v);
		assert_true(hsm_ok(hsm_buf_put_str(out, "\n")));
		hsm_buf_free(&v);
	}
	dump_ctx d = {s, out};
	EXPECT_OK(hsm_store_key_list(s, NULL, HSM_STORE_LIST_MAX, true, dump_key, &d, &more));
	assert_false(more);
	EXPECT_OK(hsm_store_alias_list(s, NULL, NULL, HSM_STORE_LIST_MAX, dump_alias, out, &more));
	assert_false(more);
	EXPECT_OK(hsm_store_user_list(s, dump_user, out));
	EXPECT_OK(hsm_store_access_key_list(s, NULL, dump_access_key, out));
	/* Pages of 2, so the copy's certificates page as the source's do. */
	cert_dump cd = {out, ""};
	do {
		char after[HSM_UUID_STRLEN + 1];
		memcpy(after, cd.last, sizeof(after));
		EXPECT_OK(hsm_store_cert_list(s, after, 2, dump_cert, &cd, &more));
	} while (more);
	uint64_t n = 0;
	EXPECT_OK(hsm_store_key_count(s, &n));
	assert_true(hsm_ok(hsm_buf_printf(out, "count %llu\n", (unsigned long long)n)));
	EXPECT_OK(hsm_store_cert_count(s, &n));
	assert_true(hsm_ok(hsm_buf_printf(out, "certificates %llu\n", (unsigned long long)n)));
	assert_true(hsm_ok(hsm_buf_terminate(out)));
}

/*
 * Records the export passes on, counted by kind (meta, users, access keys,
 * keys, versions, aliases, tags, grants, certificates).
 */
typedef struct census {
	int n[9];
} census;
static hsm_result c_meta(void *a, const char *n, const hsm_buf *v)
{
	(void)n, (void)v;
	((census *)a)->n[0]++;
	return HSM_SUCCESS;
}
static hsm_result c_user(void *a, const hsm_user_record *u)
{
	(void)u;
	((census *)a)->n[1]++;
	return HSM_SUCCESS;
}
static hsm_result c_ak(void *a, const hsm_access_key_record *k)
{
	(void)k;
	((census *)a)->n[2]++;
	return HSM_SUCCESS;
}
static hsm_result c_key(void *a, const hsm_key_record *k)
{
	(void)k;
	((census *)a)->n[3]++;
	return HSM_SUCCESS;
}
static hsm_result c_version(void *a, const hsm_version_record *v)
{
	(void)v;
	((census *)a)->n[4]++;
	return HSM_SUCCESS;
}
static hsm_result c_alias(void *a, const hsm_alias_record *r)
{
	(void)r;
	((census *)a)->n[5]++;
	return HSM_SUCCESS;
}
static hsm_result c_tag(void *a, const char *id, const hsm_tag *t)
{
	(void)id, (void)t;
	((census *)a)->n[6]++;
	return HSM_SUCCESS;
}
static hsm_result c_grant(void *a, const hsm_grant_record *g)
{
	(void)g;
	((census *)a)->n[7]++;
	return HSM_SUCCESS;
}
static hsm_result c_cert(void *a, const hsm_cert_record *c)
{
	(void)c;
	((census *)a)->n[8]++;
	return HSM_SUCCESS;
}

/* The export holds exactly what fill() wrote, no more (the dump looks up known names only). */
static void assert_census(hsm_store *s)
{
	census c = {{0}};
	hsm_store_sink sink = {&c,      c_meta,  c_user,  c_ak,   c_key,
	                       c_version, c_alias, c_tag, c_grant, c_cert};
	EXPECT_OK(s->ops->export_all(s, &sink));
	const int want[9] = {4, 2, 2, 6, 10, 3, 3, 3, 3};
	for (int i = 0; i < 9; i++)
		assert_int_equal(c.n[i], want[i]);
}

static void assert_same(hsm_store *a, hsm_store *b)
{
	hsm_buf da = {0}, db = {0};
	dump(a, &da);
	dump(b, &db);
	if (strcmp((const char *)da.data, (const char *)db.data) != 0)
		fail_msg("stores differ:\n--- source\n%s--- copy\n%s", (const char *)da.data,
		         (const char *)db.data);
	assert_census(a);
	assert_census(b);
	hsm_buf_free(&da);
	hsm_buf_free(&db);
}

/* ---- Fixtures: stores of either backend -------------------------------------------------------- */

typedef struct side {
	st_fixture f;
	bool pg;
} side;

static void side_open(side *x, bool pg)
{
	memset(x, 0, sizeof(*x));
	x->pg = pg;
	const char *saved = getenv("HSM_TEST_STORE");
	char keep[16] = "";
	if (saved != NULL)
		snprintf(keep, sizeof(keep), "%s", saved);
	setenv("HSM_TEST_STORE", pg ? "pg" : "sqlite", 1);
	st_fresh_location(&x->f);
	if (saved != NULL)
		setenv("HSM_TEST_STORE", keep, 1);
	else
		unsetenv("HSM_TEST_STORE");
	EXPECT_OK(hsm_store_open(x->f.loc, &x->f.s));
}

static void side_close(side *x)
{
	hsm_store_close(x->f.s);
	x->f.s = NULL;
	st_release_location(&x->f);
}

/* ---- Tests ----------------------------------------------------------------------------------------- */

/* src -> dst for each backend pair the run covers, then back into a third store. */
static void copy_between(bool src_pg, bool dst_pg)
{
	side src, dst, back;
	side_open(&src, src_pg);
	side_open(&dst, dst_pg);
	side_open(&back, src_pg);
	fill(src.f.s);
	EXPECT_OK(hsm_store_copy(src.f.s, dst.f.s));
	assert_same(src.f.s, dst.f.s);
	/* The copy is a working store: reopened, it still holds everything and takes writes. */
	st_reopen(&dst.f);
	assert_same(src.f.s, dst.f.s);
	EXPECT_OK(hsm_store_copy(dst.f.s, back.f.s));
	assert_same(src.f.s, back.f.s);
	EXPECT_OK(hsm_store_alias_create(dst.f.s, "alias/new", "k-enabled", 7, NULL));
	add_version(dst.f.s, "k-enabled", 4, "W4");
	hsm_version_record v = {0};
	EXPECT_OK(hsm_store_version_get(dst.f.s, "k-destroyed", 2, &v));
	assert_int_equal(v.wrapped.len, 0); /* still erased */
	hsm_version_record_clear(&v);
	/* The new fields arrive (the dumps compare them; this says they are not all zero). */
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(dst.f.s, "k-imported", &k));
	assert_int_equal(k.valid_to, 1890000000); /* the pending version's, the earliest */
	assert_int_equal(k.primary_version, 1);
	hsm_key_record_clear(&k);
	EXPECT_OK(hsm_store_version_get(dst.f.s, "k-imported", 1, &v));
	assert_int_equal(v.valid_to, 1900000000);
	assert_string_equal(v.description, "first material \xc3\xa9");
	hsm_version_record_clear(&v);
	EXPECT_OK(hsm_store_version_get(dst.f.s, "k-imported", 2, &v));
	assert_int_equal(v.valid_to, 1890000000);
	assert_int_equal(v.created, 1700000450);
	assert_string_equal(v.description, "next material");
	assert_int_equal(v.wrapped.len, 7);
	hsm_version_record_clear(&v);
	EXPECT_OK(hsm_store_key_get(dst.f.s, "k-material-deleted", &k));
	assert_int_equal(k.state, HSM_KEY_PENDING_IMPORT);
	hsm_key_record_clear(&k);
	EXPECT_OK(hsm_store_version_get(dst.f.s, "k-material-deleted", 1, &v));
	assert_int_equal(v.wrapped.len, 0);
	assert_int_equal(v.digest.len, 8);
	assert_memory_equal(v.digest.data, "\x00DIGEST\xff", 8);
	hsm_version_record_clear(&v);
	/* Certificates arrive whole (the dumps compare their bytes) and take writes. */
	hsm_cert_record c = {0};
	char id[HSM_UUID_STRLEN + 1];
	st_key_id(id, 3);
	EXPECT_OK(hsm_store_cert_get(dst.f.s, id, &c));
	assert_int_equal(c.der.len, HSM_CERT_DER_MAX);
	assert_int_equal(c.object_id.len, HSM_CERT_OBJECT_ID_MAX);
	assert_int_equal(c.created, -1);
	EXPECT_ERR(hsm_store_cert_create(dst.f.s, &c), HSM_ERR_ALREADY_EXISTS);
	st_key_id(c.cert_id, 4);
	EXPECT_OK(hsm_store_cert_create(dst.f.s, &c));
	hsm_cert_record_clear(&c);
	uint64_t certs = 0;
	EXPECT_OK(hsm_store_cert_count(dst.f.s, &certs));
	assert_int_equal(certs, 4);
	side_close(&src);
	side_close(&dst);
	side_close(&back);
}

static void test_copy_same_backend(void **state)
{
	(void)state;
	copy_between(st_is_pg(), st_is_pg());
}

static void test_copy_sqlite_to_pg_and_back(void **state)
{
	(void)state;
	if (!st_is_pg())
		skip(); /* PostgreSQL runs only */
	copy_between(false, true);
	copy_between(true, false);
}

static void test_copy_refuses_a_store_in_use(void **state)
{
	(void)state;
	side src, dst;
	side_open(&src, st_is_pg());
	side_open(&dst, st_is_pg());
	fill(src.f.s);
	/* A destination with metadata only, or keys only, or users only: CONFLICT, unchanged. */
	hsm_buf v = {0};
	assert_true(hsm_ok(hsm_buf_set(&v, "x", 1)));
	const char *names[] = {"other"};
	const hsm_buf *values[] = {&v};
	EXPECT_OK(hsm_store_meta_put(dst.f.s, 1, names, values));
	EXPECT_ERR(hsm_store_copy(src.f.s, dst.f.s), HSM_ERR_CONFLICT);
	hsm_key_record k = {0};
	EXPECT_ERR(hsm_store_key_get(dst.f.s, "k-enabled", &k), HSM_ERR_NOT_FOUND);
	side_close(&dst);

	side_open(&dst, st_is_pg());
	st_create_key(dst.f.s, "mine", "w", 1);
	EXPECT_ERR(hsm_store_copy(src.f.s, dst.f.s), HSM_ERR_CONFLICT);
	side_close(&dst);

	side_open(&dst, st_is_pg());
	hsm_user_record u = {.name = "carol", .roles = 1U << HSM_ROLE_AUDITOR};
	EXPECT_OK(hsm_store_user_create(dst.f.s, &u));
	EXPECT_ERR(hsm_store_copy(src.f.s, dst.f.s), HSM_ERR_CONFLICT);
	side_close(&dst);
	hsm_buf_free(&v);
	side_close(&src);
}

/* A copy that fails part-way leaves the destination empty, so it can simply be run again. */
static void test_failed_copy_changes_nothing(void **state)
{
	(void)state;
	side src, dst;
	side_open(&src, st_is_pg());
	side_open(&dst, st_is_pg());
	fill(src.f.s);
	/* The destination refuses the last key's versions, after most records went in. */
	st_poison(&dst.f, "key_versions", "NEW.key_id = 'k-pending'");
	EXPECT_ERR(hsm_store_copy(src.f.s, dst.f.s), HSM_ERR_STORE);
	hsm_key_record k = {0};
	EXPECT_ERR(hsm_store_key_get(dst.f.s, "k-enabled", &k), HSM_ERR_NOT_FOUND);
	hsm_user_record u;
	EXPECT_ERR(hsm_store_user_get(dst.f.s, "alice", &u), HSM_ERR_NOT_FOUND);
	hsm_buf v = {0};
	EXPECT_ERR(hsm_store_meta_get(dst.f.s, "store_id", &v), HSM_ERR_NOT_FOUND);
	side_close(&dst);
	side_close(&src);
}

/* The snapshot is a SQLite store file, whatever the backend, holding the same records. */
static void test_snapshot_opens_as_sqlite_store(void **state)
{
	(void)state;
	side src;
	side_open(&src, st_is_pg());
	fill(src.f.s);
	char file[PATH_MAX], restored[PATH_MAX], db[PATH_MAX];
	st_path(file, src.f.dir, "snapshot.db");
	EXPECT_OK(hsm_store_snapshot(src.f.s, file));
	struct stat sb;
	assert_int_equal(stat(file, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	/* An existing file is refused and left alone; nothing else is left beside it. */
	EXPECT_ERR(hsm_store_snapshot(src.f.s, file), HSM_ERR_IO);
	assert_int_equal(stat(file, &sb), 0);

	/* Restore opens it as a store directory holding it as hsmd.db. */
	st_path(restored, src.f.dir, "restored");
	assert_int_equal(mkdir(restored, 0700), 0);
	st_path(db, restored, HSM_STORE_DB_FILE);
	assert_int_equal(rename(file, db), 0);
	hsm_store *copy = NULL;
	EXPECT_OK(hsm_store_open(restored, &copy));
	assert_string_equal(copy->ops->name, "sqlite");
	assert_same(src.f.s, copy);
	hsm_store_close(copy);
	side_close(&src);
}

/* A failing snapshot leaves nothing at its path. */
static void test_snapshot_failure_leaves_nothing(void **state)
{
	(void)state;
	side src;
	side_open(&src, st_is_pg());
	fill(src.f.s);
	char file[PATH_MAX];
	st_path(file, src.f.dir, "no-such-dir/snapshot.db");
	EXPECT_ERR(hsm_store_snapshot(src.f.s, file), HSM_ERR_IO);
	struct stat sb;
	assert_int_not_equal(stat(file, &sb), 0);
	side_close(&src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copy_same_backend),
		cmocka_unit_test(test_copy_sqlite_to_pg_and_back),
		cmocka_unit_test(test_copy_refuses_a_store_in_use),
		cmocka_unit_test(test_failed_copy_changes_nothing),
		cmocka_unit_test(test_snapshot_opens_as_sqlite_store),
		cmocka_unit_test(test_snapshot_failure_leaves_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
