/*
 * store_certs_test.c - certificates (store.h): create/get/delete with every
 * field's bytes kept, the argument rules, keyset pagination, the count, the
 * HSM_MAX_CERTIFICATES limit (alone and against concurrent creators), the
 * schema step that adds the table and its constraints, and snapshots.
 * SQLite unless HSM_TEST_STORE=pg (store_test_util.h); copies between the
 * backends: store_copy_test.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A certificate with id n (st_key_id: ids sort in the order of n); its DER ends in n. */
static void cert(hsm_cert_record *c, unsigned n)
{
	memset(c, 0, sizeof(*c));
	st_key_id(c->cert_id, n);
	snprintf(c->label, sizeof(c->label), "cert %u", n);
	snprintf(c->creator, sizeof(c->creator), "alice");
	c->created = 1700000000 + n;
	c->not_after = 1800000000 + n;
	uint8_t der[6] = {0x30, 0x82, 0, 0, (uint8_t)(n >> 8), (uint8_t)n};
	assert_true(hsm_ok(hsm_buf_set(&c->der, der, sizeof(der))));
}

static void create(hsm_store *s, unsigned n)
{
	hsm_cert_record c;
	cert(&c, n);
	EXPECT_OK(hsm_store_cert_create(s, &c));
	hsm_cert_record_clear(&c);
}

static uint64_t count(hsm_store *s)
{
	uint64_t n = 0;
	EXPECT_OK(hsm_store_cert_count(s, &n));
	return n;
}

static long long raw_count(st_fixture *f, const char *sql)
{
	return st_is_pg() ? st_pg_int(f->db, sql) : st_raw_int(f->dir, sql);
}

static void expect_same(const hsm_cert_record *got, const hsm_cert_record *want)
{
	assert_string_equal(got->cert_id, want->cert_id);
	assert_string_equal(got->label, want->label);
	assert_int_equal(got->object_id.len, want->object_id.len);
	if (want->object_id.len > 0)
		assert_memory_equal(got->object_id.data, want->object_id.data, want->object_id.len);
	assert_int_equal(got->der.len, want->der.len);
	assert_memory_equal(got->der.data, want->der.data, want->der.len);
	assert_string_equal(got->creator, want->creator);
	assert_int_equal(got->created, want->created);
	assert_int_equal(got->not_after, want->not_after);
}

/* ---- Create, get, delete ---------------------------------------------------------------- */

static void test_round_trip(void **state)
{
	st_fixture *f = *state;
	hsm_cert_record c, empty, got = {0};
	/* Binary fields with NUL bytes (leading, inner, trailing) and a UTF-8 label. */
	cert(&c, 1);
	snprintf(c.label, sizeof(c.label), "server \xc3\xa9\xe2\x82\xac");
	assert_true(hsm_ok(hsm_buf_set(&c.object_id, "\x00\x01\x00\xff\x00", 5)));
	assert_true(hsm_ok(hsm_buf_set(&c.der, "\x00\x30\x00\x00\x82\xff\x00", 7)));
	c.created = -5; /* stored as given, even before 1970 */
	c.not_after = INT64_C(253402300799); /* 9999-12-31T23:59:59Z, X.509's "no expiry" */
	EXPECT_OK(hsm_store_cert_create(f->s, &c));
	/* No label, no object id, stored locally by hsmctl (no creator); DER of one NUL byte. */
	cert(&empty, 2);
	empty.label[0] = '\0';
	empty.creator[0] = '\0';
	assert_true(hsm_ok(hsm_buf_set(&empty.der, "\x00", 1)));
	EXPECT_OK(hsm_store_cert_create(f->s, &empty));

	st_reopen(f);
	EXPECT_OK(hsm_store_cert_get(f->s, c.cert_id, &got));
	expect_same(&got, &c);
	hsm_cert_record_clear(&got);
	EXPECT_OK(hsm_store_cert_get(f->s, empty.cert_id, &got));
	expect_same(&got, &empty);
	assert_int_equal(got.object_id.len, 0);
	assert_string_equal(got.label, "");
	assert_string_equal(got.creator, "");
	/* clear frees and zeroes; NULL is a no-op. */
	hsm_cert_record_clear(&got);
	assert_null(got.der.data);
	assert_int_equal(got.der.len, 0);
	assert_string_equal(got.cert_id, "");
	hsm_cert_record_clear(NULL);
	assert_int_equal(count(f->s), 2);

	/* Delete, then it is gone, for get and delete alike; the other stays. */
	EXPECT_OK(hsm_store_cert_delete(f->s, c.cert_id));
	EXPECT_ERR(hsm_store_cert_get(f->s, c.cert_id, &got), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_cert_delete(f->s, c.cert_id), HSM_ERR_NOT_FOUND);
	assert_null(got.der.data); /* failures leave the output alone */
	assert_int_equal(count(f->s), 1);
	EXPECT_OK(hsm_store_cert_get(f->s, empty.cert_id, &got));
	hsm_cert_record_clear(&got);
	/* The id is free again. */
	EXPECT_OK(hsm_store_cert_create(f->s, &c));
	assert_int_equal(count(f->s), 2);
	hsm_cert_record_clear(&c);
	hsm_cert_record_clear(&empty);
}

static void test_duplicate_id(void **state)
{
	st_fixture *f = *state;
	hsm_cert_record c, got = {0};
	create(f->s, 1);
	cert(&c, 1);
	snprintf(c.label, sizeof(c.label), "another");
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_ALREADY_EXISTS);
	/* The first one is untouched. */
	EXPECT_OK(hsm_store_cert_get(f->s, c.cert_id, &got));
	assert_string_equal(got.label, "cert 1");
	assert_int_equal(count(f->s), 1);
	hsm_cert_record_clear(&got);
	hsm_cert_record_clear(&c);
}

/* Ids that are not lowercase UUIDs (the longest has no room for its NUL in the field). */
static const char *const bad_ids[] = {
	"",
	"00000001-0000-4000-8000-00000000000",   /* 35 characters */
	"00000001-0000-4000-8000-0000000000001", /* 37 */
	"00000001-0000-4000-8000-00000000000A",  /* upper case */
	"00000001-0000-4000-8000-00000000000g",  /* not hex */
	"00000001+0000-4000-8000-000000000001",  /* a dash missing */
	"000000010-000-4000-8000-000000000001",  /* a dash moved */
	"alias/not-an-id",
};

static void test_validation(void **state)
{
	st_fixture *f = *state;
	hsm_cert_record c, got = {0};
	for (size_t i = 0; i < COUNT(bad_ids); i++) {
		cert(&c, 3);
		if (strlen(bad_ids[i]) >= sizeof(c.cert_id))
			memset(c.cert_id, '0', sizeof(c.cert_id)); /* no NUL inside the field */
		else
			snprintf(c.cert_id, sizeof(c.cert_id), "%s", bad_ids[i]);
		EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_VALIDATION);
		hsm_cert_record_clear(&c);
		/* Looked up, no certificate can hold them. */
		EXPECT_ERR(hsm_store_cert_get(f->s, bad_ids[i], &got), HSM_ERR_NOT_FOUND);
		EXPECT_ERR(hsm_store_cert_delete(f->s, bad_ids[i]), HSM_ERR_NOT_FOUND);
	}
	/* A malformed id is not quoted back: it may be anything a client sent. */
	EXPECT_ERR(hsm_store_cert_get(f->s, "alias/not-an-id", &got), HSM_ERR_NOT_FOUND);
	assert_null(strstr(hsm_last_message(), "alias/"));

	/* DER: empty, or one byte too long. */
	cert(&c, 3);
	hsm_buf_free(&c.der);
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_VALIDATION);
	uint8_t *p = NULL;
	assert_true(hsm_ok(hsm_buf_append_space(&c.der, HSM_CERT_DER_MAX + 1, &p)));
	memset(p, 0x30, HSM_CERT_DER_MAX + 1);
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_VALIDATION);
	hsm_cert_record_clear(&c);
	/* An object id of 257 bytes. */
	cert(&c, 3);
	assert_true(hsm_ok(hsm_buf_append_space(&c.object_id, HSM_CERT_OBJECT_ID_MAX + 1, &p)));
	memset(p, 0, HSM_CERT_OBJECT_ID_MAX + 1);
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_VALIDATION);
	hsm_cert_record_clear(&c);
	/* A label or creator that fills its field with no NUL. */
	cert(&c, 3);
	memset(c.label, 'l', sizeof(c.label));
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_VALIDATION);
	hsm_cert_record_clear(&c);
	cert(&c, 3);
	memset(c.creator, 'u', sizeof(c.creator));
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_VALIDATION);
	hsm_cert_record_clear(&c);
	/* None of them wrote anything. */
	assert_int_equal(count(f->s), 0);

	/* Every field at its largest fits, and comes back whole. */
	cert(&c, 3);
	memset(c.label, 'l', HSM_CERT_LABEL_MAX);
	memset(c.creator, 'u', HSM_USER_NAME_MAX);
	assert_true(hsm_ok(hsm_buf_append_space(&c.object_id, HSM_CERT_OBJECT_ID_MAX, &p)));
	for (size_t i = 0; i < HSM_CERT_OBJECT_ID_MAX; i++)
		p[i] = (uint8_t)i;
	hsm_buf_free(&c.der);
	assert_true(hsm_ok(hsm_buf_append_space(&c.der, HSM_CERT_DER_MAX, &p)));
	for (size_t i = 0; i < HSM_CERT_DER_MAX; i++)
		p[i] = (uint8_t)(i * 31 + 7);
	EXPECT_OK(hsm_store_cert_create(f->s, &c));
	EXPECT_OK(hsm_store_cert_get(f->s, c.cert_id, &got));
	expect_same(&got, &c);
	assert_int_equal(strlen(got.label), HSM_CERT_LABEL_MAX);
	hsm_cert_record_clear(&got);
	hsm_cert_record_clear(&c);
}

/* ---- Lists -------------------------------------------------------------------------------- */

#define MAX_SEEN 64
/* Ids raw_fill() inserts start here: above every id the tests make through the store. */
#define RAW_BASE 0x10000000U

typedef struct seen {
	unsigned id[MAX_SEEN]; /* the n of each cert id */
	size_t n;
	size_t fail_at; /* fail the call that would see this many (0: never) */
} seen;

static hsm_result collect(const hsm_cert_record *c, void *arg)
{
	seen *s = arg;
	assert_true(s->n < MAX_SEEN);
	if (s->fail_at != 0 && s->n + 1 == s->fail_at)
		return HSM_FAIL(HSM_ERR_INTERNAL, "the callback refused");
	unsigned n = (unsigned)strtoul(c->cert_id, NULL, 16);
	if (n < RAW_BASE) { /* made by cert(): the DER names the id */
		assert_int_equal(c->der.len, 6);
		assert_int_equal(c->der.data[5], (uint8_t)n);
	}
	s->id[s->n++] = n;
	return HSM_SUCCESS;
}

/* Lists every page and checks the paging. */
static void list_all(hsm_store *s, size_t limit, seen *all, size_t *pages)
{
	char after[HSM_UUID_STRLEN + 1] = "";
	memset(all, 0, sizeof(*all));
	*pages = 0;
	for (;;) {
		seen p = {0};
		bool truncated = false;
		EXPECT_OK(hsm_store_cert_list(s, *pages == 0 ? NULL : after, limit, collect, &p,
		                              &truncated));
		assert_true(p.n <= limit);
		assert_true(!truncated || p.n == limit);
		for (size_t i = 0; i < p.n; i++) {
			assert_true(all->n < MAX_SEEN); /* a listing that never ends fails, not overflows */
			all->id[all->n++] = p.id[i];
		}
		(*pages)++;
		if (!truncated)
			break;
		st_key_id(after, p.id[p.n - 1]);
	}
}

static void test_list_paging(void **state)
{
	st_fixture *f = *state;
	const unsigned ids[] = {40, 10, 70, 20, 60, 30, 50};
	seen all, p;
	size_t pages;
	bool truncated = true;
	/* An empty store: one empty page, not truncated. */
	list_all(f->s, 3, &all, &pages);
	assert_int_equal(all.n, 0);
	assert_int_equal(pages, 1);
	for (size_t i = 0; i < COUNT(ids); i++)
		create(f->s, ids[i]);
	for (size_t limit = 1; limit <= 8; limit++) {
		list_all(f->s, limit, &all, &pages);
		assert_int_equal(all.n, 7);
		assert_int_equal(pages, limit >= 7 ? 1 : (7 + limit - 1) / limit);
		for (size_t i = 0; i < 7; i++)
			assert_int_equal(all.id[i], 10 * (i + 1)); /* ordered by cert id */
	}
	/* The last of three pages of 3: one certificate, not truncated. */
	char after[HSM_UUID_STRLEN + 1];
	memset(&p, 0, sizeof(p));
	st_key_id(after, 60);
	EXPECT_OK(hsm_store_cert_list(f->s, after, 3, collect, &p, &truncated));
	assert_int_equal(p.n, 1);
	assert_int_equal(p.id[0], 70);
	assert_false(truncated);
	/* A cursor that is no certificate's id starts after it. */
	memset(&p, 0, sizeof(p));
	st_key_id(after, 25);
	EXPECT_OK(hsm_store_cert_list(f->s, after, 2, collect, &p, &truncated));
	assert_int_equal(p.n, 2);
	assert_int_equal(p.id[0], 30);
	assert_int_equal(p.id[1], 40);
	assert_true(truncated);
	/* One past the end: an empty page. */
	memset(&p, 0, sizeof(p));
	st_key_id(after, 70);
	EXPECT_OK(hsm_store_cert_list(f->s, after, 2, collect, &p, &truncated));
	assert_int_equal(p.n, 0);
	assert_false(truncated);
	/* Exactly a page: not truncated; "" is the first page as NULL is. */
	memset(&p, 0, sizeof(p));
	EXPECT_OK(hsm_store_cert_list(f->s, "", 7, collect, &p, &truncated));
	assert_int_equal(p.n, 7);
	assert_false(truncated);
	/* The largest page is allowed, one more is not. */
	memset(&p, 0, sizeof(p));
	EXPECT_OK(hsm_store_cert_list(f->s, NULL, HSM_STORE_LIST_MAX, collect, &p, &truncated));
	assert_int_equal(p.n, 7);
	truncated = true;
	EXPECT_ERR(hsm_store_cert_list(f->s, NULL, HSM_STORE_LIST_MAX + 1, collect, &p, &truncated),
	           HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_cert_list(f->s, NULL, 0, collect, &p, &truncated), HSM_ERR_VALIDATION);
	assert_true(truncated); /* failures leave it alone */
	/* A callback's failure stops the listing and is returned. */
	seen stop = {.fail_at = 3};
	EXPECT_ERR(hsm_store_cert_list(f->s, NULL, 5, collect, &stop, &truncated),
	           HSM_ERR_INTERNAL);
	assert_int_equal(stop.n, 2);
	assert_true(truncated);
}

typedef struct deleter {
	hsm_store *s;
	size_t n;
} deleter;

/* Deletes each certificate as it is listed: callbacks run after the backend's reading. */
static hsm_result delete_listed(const hsm_cert_record *c, void *arg)
{
	deleter *d = arg;
	HSM_GUARD(hsm_store_cert_delete(d->s, c->cert_id));
	d->n++;
	return HSM_SUCCESS;
}

static void test_callbacks_may_write(void **state)
{
	st_fixture *f = *state;
	for (unsigned i = 1; i <= 5; i++)
		create(f->s, i);
	deleter d = {f->s, 0};
	bool truncated = false;
	EXPECT_OK(hsm_store_cert_list(f->s, NULL, 3, delete_listed, &d, &truncated));
	assert_int_equal(d.n, 3);
	assert_true(truncated);
	assert_int_equal(count(f->s), 2);
	EXPECT_OK(hsm_store_cert_list(f->s, NULL, 3, delete_listed, &d, &truncated));
	assert_false(truncated);
	assert_int_equal(count(f->s), 0);
}

/* ---- The limit ------------------------------------------------------------------------------ */

/*
 * Inserts n certificates directly (ids RAW_BASE up, as st_key_id makes
 * them), bypassing the store: through it, each would be a durable commit.
 */
static void raw_fill(st_fixture *f, unsigned n)
{
	char sql[1024];
	hsm_store_close(f->s);
	f->s = NULL;
	if (st_is_pg()) {
		snprintf(sql, sizeof(sql),
		         "INSERT INTO certificates "
		         "(cert_id, label, object_id, der, creator, created) "
		         "SELECT lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || "
		         "lpad(to_hex(i), 12, '0'), '', '\\x'::bytea, '\\x30'::bytea, '', 1 "
		         "FROM generate_series(%u, %u) AS i",
		         RAW_BASE, RAW_BASE + n - 1);
		assert_int_equal(st_pg_exec(f->db, sql), 0);
	} else {
		snprintf(sql, sizeof(sql),
		         "WITH RECURSIVE s(i) AS "
		         "(SELECT %u UNION ALL SELECT i + 1 FROM s WHERE i < %u) "
		         "INSERT INTO certificates "
		         "(cert_id, label, object_id, der, creator, created) "
		         "SELECT printf('%%08x-0000-4000-8000-%%012x', i, i), "
		         "'', x'', x'30', '', 1 FROM s",
		         RAW_BASE, RAW_BASE + n - 1);
		assert_int_equal(st_raw_exec(f->dir, sql), SQLITE_OK);
	}
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
}

static void test_limit(void **state)
{
	st_fixture *f = *state;
	hsm_cert_record c;
	char text[32];
	raw_fill(f, HSM_MAX_CERTIFICATES - 1);
	assert_int_equal(count(f->s), HSM_MAX_CERTIFICATES - 1);
	uint64_t t0 = hsm_mono_ns();
	create(f->s, 1); /* the 100,000th */
	print_message("a creation beside %d certificates in %.1f ms\n", HSM_MAX_CERTIFICATES - 1,
	              (double)(hsm_mono_ns() - t0) / 1e6);
	cert(&c, 2);
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_LIMIT_EXCEEDED);
	snprintf(text, sizeof(text), "%d", HSM_MAX_CERTIFICATES);
	assert_non_null(strstr(hsm_last_message(), text)); /* the message names the limit */
	hsm_cert_record got = {0};
	EXPECT_ERR(hsm_store_cert_get(f->s, c.cert_id, &got), HSM_ERR_NOT_FOUND);
	assert_int_equal(count(f->s), HSM_MAX_CERTIFICATES);
	/* A duplicate in a full store is refused as a duplicate. */
	hsm_cert_record_clear(&c);
	cert(&c, 1);
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_ALREADY_EXISTS);
	hsm_cert_record_clear(&c);
	/* A page deep in the full store costs what it holds. */
	seen p = {0};
	bool truncated = false;
	char after[HSM_UUID_STRLEN + 1];
	st_key_id(after, RAW_BASE + 50000);
	EXPECT_OK(hsm_store_cert_list(f->s, after, 3, collect, &p, &truncated));
	assert_int_equal(p.n, 3);
	assert_int_equal(p.id[0], RAW_BASE + 50001);
	assert_true(truncated);
	/* One deleted, one more fits, and no more. */
	st_key_id(after, RAW_BASE + 7);
	EXPECT_OK(hsm_store_cert_delete(f->s, after));
	create(f->s, 2);
	cert(&c, 3);
	EXPECT_ERR(hsm_store_cert_create(f->s, &c), HSM_ERR_LIMIT_EXCEEDED);
	hsm_cert_record_clear(&c);
	assert_int_equal(count(f->s), HSM_MAX_CERTIFICATES);
}

/* ---- The limit against concurrent creators --------------------------------------------------- */

#define CREATORS 8
#define TRIES 10
#define ROOM 40 /* places left under the limit: half the attempts */

typedef struct creator {
	hsm_store *s;
	unsigned first; /* this thread's ids: first, first + 1, ... */
	pthread_barrier_t *start;
	atomic_int *created, *refused, *failed;
} creator;

/* No cmocka assertion here: they must not run outside the test's own thread. */
static void *create_worker(void *arg)
{
	creator *w = arg;
	pthread_barrier_wait(w->start);
	for (unsigned i = 0; i < TRIES; i++) {
		hsm_cert_record c = {.created = 1};
		st_key_id(c.cert_id, w->first + i);
		hsm_result r = hsm_buf_set(&c.der, "\x30\x00", 2);
		if (hsm_ok(r))
			r = hsm_store_cert_create(w->s, &c);
		if (hsm_ok(r))
			atomic_fetch_add(w->created, 1);
		else
			atomic_fetch_add(r.err == HSM_ERR_LIMIT_EXCEEDED ? w->refused : w->failed,
			                 1);
		hsm_cert_record_clear(&c);
	}
	return NULL;
}

/*
 * Threads create certificates at once with room for only some of them:
 * exactly that many are created.  On PostgreSQL they run on two nodes
 * (handles) of one database; SQLite allows one handle per store, which
 * they share.
 */
static void test_limit_against_concurrent_creators(void **state)
{
	st_fixture *f = *state;
	raw_fill(f, HSM_MAX_CERTIFICATES - ROOM);
	hsm_store *nodes[2] = {f->s, f->s};
	if (st_is_pg())
		EXPECT_OK(hsm_store_open(f->loc, &nodes[1]));
	atomic_int created = 0, refused = 0, failed = 0;
	pthread_barrier_t start;
	pthread_t t[CREATORS];
	creator w[CREATORS];
	pthread_barrier_init(&start, NULL, CREATORS);
	uint64_t t0 = hsm_mono_ns();
	for (unsigned i = 0; i < CREATORS; i++) {
		w[i] = (creator){nodes[i % 2], 1000 * (i + 1), &start, &created, &refused, &failed};
		assert_int_equal(pthread_create(&t[i], NULL, create_worker, &w[i]), 0);
	}
	for (unsigned i = 0; i < CREATORS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&start);
	print_message("%d concurrent creations at the limit in %.2f s\n", CREATORS * TRIES,
	              (double)(hsm_mono_ns() - t0) / 1e9);
	assert_int_equal(atomic_load(&failed), 0);
	assert_int_equal(atomic_load(&created), ROOM);
	assert_int_equal(atomic_load(&refused), CREATORS * TRIES - ROOM);
	assert_int_equal(count(f->s), HSM_MAX_CERTIFICATES);
	assert_int_equal(raw_count(f, "SELECT count(*) FROM certificates"), HSM_MAX_CERTIFICATES);
	if (nodes[1] != f->s)
		hsm_store_close(nodes[1]);
}

/* ---- Snapshots ------------------------------------------------------------------------------- */

/* A snapshot (SQLite: VACUUM INTO; PostgreSQL: written record for record) keeps certificates. */
static void test_snapshot_keeps_certificates(void **state)
{
	st_fixture *f = *state;
	hsm_cert_record c, got = {0};
	cert(&c, 1);
	assert_true(hsm_ok(hsm_buf_set(&c.object_id, "\x00id\x00", 4)));
	assert_true(hsm_ok(hsm_buf_set(&c.der, "\x30\x00\x00\xff", 4)));
	EXPECT_OK(hsm_store_cert_create(f->s, &c));
	create(f->s, 2);
	char snapdir[PATH_MAX], file[PATH_MAX];
	st_path(snapdir, f->dir, "snap");
	assert_int_equal(mkdir(snapdir, 0700), 0);
	st_path(file, snapdir, HSM_STORE_DB_FILE);
	EXPECT_OK(hsm_store_snapshot(f->s, file));
	hsm_store *snap = NULL;
	EXPECT_OK(hsm_store_open(snapdir, &snap));
	assert_int_equal(count(snap), 2);
	EXPECT_OK(hsm_store_cert_get(snap, c.cert_id, &got));
	expect_same(&got, &c);
	hsm_cert_record_clear(&got);
	hsm_store_close(snap);
	hsm_cert_record_clear(&c);
}

/* ---- Schema ---------------------------------------------------------------------------------- */

static long long table_count(st_fixture *f)
{
	if (st_is_pg())
		return st_pg_int(f->db, "SELECT count(*) FROM pg_tables "
		                        "WHERE tablename = 'certificates'");
	return st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema "
	                          "WHERE type = 'table' AND name = 'certificates'");
}

/* A store written before certificates existed gets the table when opened, its records intact. */
static void test_added_to_an_older_store(void **state)
{
	st_fixture *f = *state;
	int latest = st_is_pg() ? hsm_store_pg_schema_latest() : hsm_store_sqlite_schema_latest();
	st_create_key(f->s, "k1", "w", 1);
	assert_int_equal(table_count(f), 1);
	st_schema_before_certificates(f);
	/* Control: the older schema (SQLite step 6, PostgreSQL step 5), without the table. */
	assert_int_equal(table_count(f), 0);
	assert_int_equal(raw_count(f, "SELECT max(version) FROM schema_version"), st_is_pg() ? 5 : 6);

	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	assert_int_equal(raw_count(f, "SELECT max(version) FROM schema_version"), latest);
	assert_int_equal(table_count(f), 1);
	hsm_key_record k = {0};
	EXPECT_OK(hsm_store_key_get(f->s, "k1", &k));
	hsm_key_record_clear(&k);
	assert_int_equal(count(f->s), 0);
	create(f->s, 1);
	/* Opening again changes nothing. */
	st_reopen(f);
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	assert_int_equal(count(f->s), 1);
}

/* A real self-signed certificate (DER) valid until not_after. */
static void real_cert_der(int64_t not_after, hsm_buf *out)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	assert_non_null(key);
	assert_non_null(x);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
	assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), 1700000000));
	assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after));
	X509_NAME *name = X509_get_subject_name(x);
	assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                                            (const unsigned char *)"old", -1, -1, 0),
	                 1);
	assert_int_equal(X509_set_issuer_name(x, name), 1);
	assert_int_equal(X509_set_pubkey(x, key), 1);
	assert_true(X509_sign(x, key, EVP_sha256()) > 0);
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	assert_true(len > 0);
	assert_true(hsm_ok(hsm_buf_set(out, der, (size_t)len)));
	OPENSSL_free(der);
	X509_free(x);
	EVP_PKEY_free(key);
}

/*
 * The certificates table as the first shipped version of its step had it
 * (SQLite step 7, PostgreSQL step 6, before not_after and the object id and
 * label indexes), holding one certificate, the store marked as at that step.
 */
static void old_certificates_table(st_fixture *f, const hsm_buf *der)
{
	char hex[2 * HSM_CERT_DER_MAX + 1];
	assert_true(der->len <= HSM_CERT_DER_MAX);
	for (size_t i = 0; i < der->len; i++)
		snprintf(hex + 2 * i, 3, "%02x", der->data[i]);
	char *sql = malloc(sizeof(hex) + 1024);
	assert_non_null(sql);
	hsm_store_close(f->s);
	f->s = NULL;
	st_drop_certificates(f);
	if (st_is_pg()) {
		snprintf(sql, sizeof(hex) + 1024,
		         "BEGIN;"
		         "CREATE TABLE certificates ("
		         "  cert_id   text COLLATE \"C\" PRIMARY KEY,"
		         "  label     text NOT NULL CHECK (octet_length(label) <= 256),"
		         "  object_id bytea NOT NULL CHECK (octet_length(object_id) <= 256),"
		         "  der       bytea NOT NULL CHECK (octet_length(der) BETWEEN 1 AND 32768),"
		         "  creator   text NOT NULL,"
		         "  created   bigint NOT NULL);"
		         "INSERT INTO schema_version VALUES (6, 1);"
		         "INSERT INTO certificates VALUES ('%s', 'old', '\\x01'::bytea, "
		         "decode('%s', 'hex'), '', 1);"
		         "COMMIT",
		         "00000000-0000-4000-8000-000000000001", hex);
		assert_int_equal(st_pg_exec(f->db, sql), 0);
	} else {
		snprintf(sql, sizeof(hex) + 1024,
		         "BEGIN;"
		         "CREATE TABLE certificates ("
		         "  cert_id   TEXT PRIMARY KEY,"
		         "  label     TEXT NOT NULL CHECK (length(CAST(label AS BLOB)) <= 256),"
		         "  object_id BLOB NOT NULL CHECK (length(object_id) <= 256),"
		         "  der       BLOB NOT NULL CHECK (length(der) BETWEEN 1 AND 32768),"
		         "  creator   TEXT NOT NULL,"
		         "  created   INTEGER NOT NULL);"
		         "INSERT INTO schema_version VALUES (7, 1);"
		         "INSERT INTO certificates VALUES ('%s', 'old', x'01', x'%s', '', 1);"
		         "COMMIT",
		         "00000000-0000-4000-8000-000000000001", hex);
		assert_int_equal(st_raw_exec(f->dir, sql), SQLITE_OK);
	}
	free(sql);
}

static long long cert_index_count(st_fixture *f)
{
	if (st_is_pg())
		return st_pg_int(f->db, "SELECT count(*) FROM pg_indexes WHERE tablename = "
		                        "'certificates' AND indexname IN ('certificates_not_after', "
		                        "'certificates_object_id', 'certificates_label')");
	return st_raw_int(f->dir, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND "
	                          "name IN ('certificates_not_after', 'certificates_object_id', "
	                          "'certificates_label')");
}

/*
 * A store that took the certificates step as it first shipped gets the
 * column and indexes the step gained later, each certificate's notAfter read
 * from its DER (not 0, which would count it as expiring).
 */
static void test_first_certificates_step_brought_forward(void **state)
{
	st_fixture *f = *state;
	int latest = st_is_pg() ? hsm_store_pg_schema_latest() : hsm_store_sqlite_schema_latest();
	const int64_t not_after = 4102444800; /* 2100-01-01 */
	hsm_buf der = {0};
	real_cert_der(not_after, &der);
	old_certificates_table(f, &der);
	/* Control: the old shape, without the column or the indexes. */
	assert_int_equal(cert_index_count(f), 0);

	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	assert_int_equal(hsm_store_schema_version(f->s), latest);
	assert_int_equal(cert_index_count(f), 3);
	assert_int_equal(count(f->s), 1);
	hsm_cert_record got;
	EXPECT_OK(hsm_store_cert_get(f->s, "00000000-0000-4000-8000-000000000001", &got));
	assert_int_equal(got.not_after, not_after);
	assert_int_equal(got.der.len, der.len);
	hsm_cert_record_clear(&got);
	uint64_t expiring = 99;
	EXPECT_OK(hsm_store_cert_count_expiring(f->s, 1800000000, &expiring));
	assert_int_equal(expiring, 0);
	/* The step changes nothing in a store whose table was already whole. */
	create(f->s, 2);
	st_reopen(f);
	assert_int_equal(count(f->s), 2);
	hsm_buf_free(&der);
}

/* A row's label, object id and DER as SQL expressions of one dialect. */
typedef struct raw_row {
	const char *label, *object_id, *der;
} raw_row;

/* Inserts a row with id directly (in a transaction): whether the database took it. */
static bool raw_insert(st_fixture *f, const char *id, const raw_row *r)
{
	char sql[512];
	snprintf(sql, sizeof(sql),
	         "BEGIN; INSERT INTO certificates (cert_id, label, object_id, der, creator, created) "
	         "VALUES ('%s', %s, %s, %s, '', 1); COMMIT",
	         id, r->label, r->object_id, r->der);
	/* A failure leaves the transaction open; closing the connection rolls it back. */
	if (st_is_pg())
		return st_pg_exec(f->db, sql) == 0;
	return st_raw_exec(f->dir, sql) == SQLITE_OK;
}

/* Rows the schema refuses, each in SQLite's dialect and PostgreSQL's. */
static const raw_row refused[][2] = {
	/* no DER bytes */
	{{"''", "x''", "x''"}, {"''", "'\\x'::bytea", "'\\x'::bytea"}},
	/* DER one byte too long */
	{{"''", "x''", "zeroblob(32769)"},
	 {"''", "'\\x'::bytea", "decode(repeat('00', 32769), 'hex')"}},
	/* an object id one byte too long */
	{{"''", "zeroblob(257)", "x'30'"},
	 {"''", "decode(repeat('00', 257), 'hex')", "'\\x30'::bytea"}},
	/* a label of 129 two-byte characters: 258 bytes, if only 129 characters */
	{{"replace(printf('%129s', ''), ' ', '\xc3\xa9')", "x''", "x'30'"},
	 {"repeat('\xc3\xa9', 129)", "'\\x'::bytea", "'\\x30'::bytea"}},
	/* no DER at all */
	{{"''", "x''", "NULL"}, {"''", "'\\x'::bytea", "NULL"}},
};

/* Every size at its largest (256 bytes of label in 128 characters). */
static const raw_row largest[2] = {
	{"replace(printf('%128s', ''), ' ', '\xc3\xa9')", "zeroblob(256)", "zeroblob(32768)"},
	{"repeat('\xc3\xa9', 128)", "decode(repeat('00', 256), 'hex')",
	 "decode(repeat('00', 32768), 'hex')"},
};

/* The database keeps the records' sizes, even against a writer that bypasses the store. */
static void test_schema_constraints(void **state)
{
	st_fixture *f = *state;
	int dialect = st_is_pg() ? 1 : 0;
	char id[HSM_UUID_STRLEN + 1];
	st_key_id(id, 9);
	for (size_t i = 0; i < COUNT(refused); i++)
		if (raw_insert(f, id, &refused[i][dialect]))
			fail_msg("the database took row %zu", i);
	assert_int_equal(count(f->s), 0);
	/* The largest are taken, and the store reads them back. */
	assert_true(raw_insert(f, id, &largest[dialect]));
	hsm_cert_record got = {0};
	EXPECT_OK(hsm_store_cert_get(f->s, id, &got));
	assert_int_equal(strlen(got.label), HSM_CERT_LABEL_MAX);
	assert_int_equal(got.object_id.len, HSM_CERT_OBJECT_ID_MAX);
	assert_int_equal(got.der.len, HSM_CERT_DER_MAX);
	hsm_cert_record_clear(&got);
	assert_int_equal(count(f->s), 1);
}

/* Each statement walks cert_id's index: no sort, and a page costs what it holds. */
/* ---- Searches by object id and label (PKCS#11 C_FindObjects) ------------------------------ */

/* Every certificate m matches, in pages of limit, as the n of their ids. */
static void find_all(hsm_store *s, const hsm_cert_match *m, size_t limit, seen *all)
{
	char after[HSM_UUID_STRLEN + 1] = "";
	memset(all, 0, sizeof(*all));
	for (size_t pages = 0;; pages++) {
		seen p = {0};
		bool truncated = false;
		EXPECT_OK(hsm_store_cert_find(s, m, pages == 0 ? NULL : after, limit, collect, &p,
		                              &truncated));
		assert_true(p.n <= limit && (!truncated || p.n == limit));
		for (size_t i = 0; i < p.n; i++) {
			assert_true(all->n < MAX_SEEN); /* a listing that never ends fails, not overflows */
			all->id[all->n++] = p.id[i];
		}
		if (!truncated)
			return;
		assert_true(p.n > 0);
		st_key_id(after, p.id[p.n - 1]);
	}
}

static void expect_ids(const seen *got, const unsigned *want, size_t n)
{
	assert_int_equal(got->n, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(got->id[i], want[i]);
}

static void test_find(void **state)
{
	st_fixture *f = *state;
	/* n = 1..9: object id "k<n % 3>" (none for n = 9), label "L<n % 2>". */
	for (unsigned n = 1; n <= 9; n++) {
		hsm_cert_record c;
		cert(&c, n);
		char oid[8];
		snprintf(oid, sizeof(oid), "k%u", n % 3);
		if (n != 9)
			assert_true(hsm_ok(hsm_buf_set(&c.object_id, oid, strlen(oid))));
		snprintf(c.label, sizeof(c.label), "L%u", n % 2);
		EXPECT_OK(hsm_store_cert_create(f->s, &c));
		hsm_cert_record_clear(&c);
	}
	hsm_buf k1 = {0}, none = {0}, other = {0}, huge = {0};
	assert_true(hsm_ok(hsm_buf_set(&k1, "k1", 2)));
	assert_true(hsm_ok(hsm_buf_set(&other, "k1\0", 3))); /* bytes, not a string */
	uint8_t many[HSM_CERT_OBJECT_ID_MAX + 1];
	memset(many, 'k', sizeof(many));
	assert_true(hsm_ok(hsm_buf_set(&huge, many, sizeof(many))));
	seen got;
	for (size_t limit = 1; limit <= 4; limit++) {
		find_all(f->s, &(hsm_cert_match){&k1, NULL}, limit, &got);
		expect_ids(&got, (const unsigned[]){1, 4, 7}, 3);
		find_all(f->s, &(hsm_cert_match){NULL, "L0"}, limit, &got);
		expect_ids(&got, (const unsigned[]){2, 4, 6, 8}, 4);
		find_all(f->s, &(hsm_cert_match){&k1, "L0"}, limit, &got);
		expect_ids(&got, (const unsigned[]){4}, 1);
		/* An empty object id matches the certificate stored without one. */
		find_all(f->s, &(hsm_cert_match){&none, NULL}, limit, &got);
		expect_ids(&got, (const unsigned[]){9}, 1);
		find_all(f->s, &(hsm_cert_match){NULL, NULL}, limit, &got);
		expect_ids(&got, (const unsigned[]){1, 2, 3, 4, 5, 6, 7, 8, 9}, 9);
	}
	/* No match, and values no certificate can hold, find nothing. */
	find_all(f->s, &(hsm_cert_match){&other, NULL}, 5, &got);
	assert_int_equal(got.n, 0);
	find_all(f->s, &(hsm_cert_match){NULL, "L"}, 5, &got);
	assert_int_equal(got.n, 0);
	find_all(f->s, &(hsm_cert_match){&huge, NULL}, 5, &got);
	assert_int_equal(got.n, 0);
	char long_label[HSM_CERT_LABEL_MAX + 2];
	memset(long_label, 'L', sizeof(long_label) - 1);
	long_label[sizeof(long_label) - 1] = '\0';
	find_all(f->s, &(hsm_cert_match){NULL, long_label}, 5, &got);
	assert_int_equal(got.n, 0);
	bool truncated;
	EXPECT_ERR(hsm_store_cert_find(f->s, &(hsm_cert_match){&k1, NULL}, NULL, 0, collect, &got,
	                               &truncated),
	           HSM_ERR_VALIDATION);
	hsm_buf_free(&k1);
	hsm_buf_free(&other);
	hsm_buf_free(&huge);
}

/* ---- Expiring certificates (the /metrics gauge) ----------------------------------------- */

static uint64_t expiring(hsm_store *s, int64_t before)
{
	uint64_t n = 99;
	EXPECT_OK(hsm_store_cert_count_expiring(s, before, &n));
	return n;
}

static void test_count_expiring(void **state)
{
	st_fixture *f = *state;
	assert_int_equal(expiring(f->s, INT64_MAX), 0);
	/* not_after 1800000000 + n for n = 1..5. */
	for (unsigned n = 1; n <= 5; n++)
		create(f->s, n);
	assert_int_equal(expiring(f->s, 1800000001), 0); /* strictly before */
	assert_int_equal(expiring(f->s, 1800000002), 1);
	assert_int_equal(expiring(f->s, 1800000004), 3);
	assert_int_equal(expiring(f->s, INT64_MAX), 5);
	/* Nothing is before the epoch's first second, and no time is an error. */
	assert_int_equal(expiring(f->s, 0), 0);
	assert_int_equal(expiring(f->s, INT64_MIN), 0);
	/* Deleted ones are not counted; the total is unaffected by the question. */
	hsm_cert_record c;
	cert(&c, 2);
	EXPECT_OK(hsm_store_cert_delete(f->s, c.cert_id));
	hsm_cert_record_clear(&c);
	assert_int_equal(expiring(f->s, 1800000004), 2);
	assert_int_equal(count(f->s), 4);
	/* The gauge is read again and again: it answers from the index on SQLite too. */
	if (!st_is_pg()) {
		char plan[1024];
		st_sqlite_plan(f->dir, "SELECT count(*) FROM certificates WHERE not_after < ?1", plan,
		               sizeof(plan));
		if (strstr(plan, "certificates_not_after") == NULL)
			fail_msg("expiring count plan: %s", plan);
	}
}

static void test_queries_walk_the_index(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	static const struct {
		const char *sql, *plan;
	} cases[] = {
		{"SELECT * FROM certificates WHERE cert_id > ?1 ORDER BY cert_id LIMIT ?2",
		 "USING INDEX sqlite_autoindex_certificates_1 (cert_id>?)"},
		{"SELECT * FROM certificates WHERE cert_id = ?1",
		 "USING INDEX sqlite_autoindex_certificates_1 (cert_id=?)"},
		{"SELECT * FROM certificates WHERE object_id = ?3 AND cert_id > ?1 ORDER BY cert_id "
		 "LIMIT ?2",
		 "USING INDEX certificates_object_id (object_id=? AND cert_id>?)"},
		{"SELECT * FROM certificates WHERE label = ?4 AND cert_id > ?1 ORDER BY cert_id LIMIT ?2",
		 "USING INDEX certificates_label (label=? AND cert_id>?)"},
		/* The smallest index: not_after's, once the table has it. */
		{"SELECT count(*) FROM certificates", "USING COVERING INDEX certificates_not_after"},
	};
	char plan[1024];
	for (size_t i = 0; i < COUNT(cases); i++) {
		st_sqlite_plan(f->dir, cases[i].sql, plan, sizeof(plan));
		if (strstr(plan, cases[i].plan) == NULL || strstr(plan, "TEMP B-TREE") != NULL)
			fail_msg("%s: plan %s", cases[i].sql, plan);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_id, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_validation, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_list_paging, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_callbacks_may_write, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_limit, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_limit_against_concurrent_creators, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_keeps_certificates, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_added_to_an_older_store, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_first_certificates_step_brought_forward, st_setup,
		                                st_teardown),
		cmocka_unit_test_setup_teardown(test_schema_constraints, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_queries_walk_the_index, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_count_expiring, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_find, st_setup, st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
