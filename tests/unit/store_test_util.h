/*
 * store_test_util.h - helpers shared by the store tests (header only: each
 * store_*_test.c is its own program).  Include it after <cmocka.h>.
 */
#ifndef HSM_STORE_TEST_UTIL_H
#define HSM_STORE_TEST_UTIL_H

#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/util.h"
#include "store/store.h"

/* A fresh private directory under $TMPDIR (or /tmp). */
static inline void st_tmpdir(char out[PATH_MAX])
{
	const char *base = getenv("TMPDIR");
	if (base == NULL || *base == '\0')
		base = "/tmp";
	snprintf(out, PATH_MAX, "%s/hsmd-store-XXXXXX", base);
	if (mkdtemp(out) == NULL) {
		perror("mkdtemp");
		abort();
	}
}

static inline int st_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline void st_rm_rf(const char *dir)
{
	nftw(dir, st_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void st_path(char out[PATH_MAX], const char *dir, const char *name)
{
	if (snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX)
		abort();
}

/* A plausible Enabled symmetric key record (strings point at literals: do not clear). */
static inline void st_key(hsm_key_record *k, const char *id)
{
	memset(k, 0, sizeof(*k));
	snprintf(k->key_id, sizeof(k->key_id), "%s", id);
	k->description = (char *)"test key";
	k->spec = HSM_SPEC_SYMMETRIC_DEFAULT;
	k->usage = HSM_USAGE_ENCRYPT_DECRYPT;
	k->origin = HSM_ORIGIN_AWS_KMS;
	k->state = HSM_KEY_ENABLED;
	k->created = 1700000000;
	k->pending_window_days = 30;
	k->primary_version = 1;
	k->policy = (char *)"{\"Version\":\"2012-10-17\"}";
	k->updated = 1700000000;
}

/* A version whose wrapped bytes are given (copied into the record: clear it). */
static inline void st_version(hsm_version_record *v, const char *id, uint32_t version,
                              const void *wrapped, size_t n)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->key_id, sizeof(v->key_id), "%s", id);
	v->version = version;
	v->created = 1700000000 + version;
	v->rotation_type = version == 1 ? HSM_ROTATION_NONE : HSM_ROTATION_ON_DEMAND;
	if (hsm_failed(hsm_buf_set(&v->wrapped, wrapped, n)))
		abort();
}

/* Key ids that sort in creation order: "00000000-0000-4000-8000-00000000000N". */
static inline void st_key_id(char out[HSM_UUID_STRLEN + 1], unsigned n)
{
	snprintf(out, HSM_UUID_STRLEN + 1, "%08x-0000-4000-8000-%012x", n, n);
}

/* Runs SQL on the database directly, bypassing the store (fault injection, inspection). */
static inline int st_raw_exec(const char *dir, const char *sql)
{
	char path[PATH_MAX];
	sqlite3 *db = NULL;
	st_path(path, dir, "hsmd.db");
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

/* One integer from a query on the raw database, or -1. */
static inline long long st_raw_int(const char *dir, const char *sql)
{
	char path[PATH_MAX];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	long long v = -1;
	st_path(path, dir, "hsmd.db");
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* Asserts a result code, printing the failure's message when it differs. */
#define EXPECT_ERR(expr, code)                                                             \
	do {                                                                                   \
		hsm_result r_ = (expr);                                                            \
		if (r_.err != (code))                                                              \
			fail_msg("%s: expected %s, got %s (%s)", #expr, hsm_err_code_name(code),     \
			         hsm_err_code_name(r_.err), hsm_last_message());                     \
	} while (0)
#define EXPECT_OK(expr) EXPECT_ERR(expr, HSM_OK)

/* A store opened on a fresh directory for one test. */
typedef struct st_fixture {
	char dir[PATH_MAX];
	hsm_store *s;
} st_fixture;

static inline int st_setup(void **state)
{
	st_fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	st_tmpdir(f->dir);
	EXPECT_OK(hsm_store_open(f->dir, &f->s));
	*state = f;
	return 0;
}

static inline int st_teardown(void **state)
{
	st_fixture *f = *state;
	hsm_store_close(f->s);
	st_rm_rf(f->dir);
	free(f);
	return 0;
}

static inline void st_reopen(st_fixture *f)
{
	hsm_store_close(f->s);
	f->s = NULL;
	EXPECT_OK(hsm_store_open(f->dir, &f->s));
}

/* Creates an Enabled key whose first version holds the given wrapped bytes. */
static inline void st_create_key(hsm_store *s, const char *id, const void *wrapped, size_t n)
{
	hsm_key_record k;
	hsm_version_record v;
	st_key(&k, id);
	st_version(&v, id, 1, wrapped, n);
	EXPECT_OK(hsm_store_key_create(s, &k, &v));
	hsm_version_record_clear(&v);
}

#endif
