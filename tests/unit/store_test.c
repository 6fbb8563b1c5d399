/*
 * store_test.c - the store contract (store.h): opening, the directory lock,
 * schema migrations, metadata, names of enumerations and the mapping of a
 * busy database.  SQLite unless HSM_TEST_STORE=pg (store_test_util.h); the
 * tests of SQLite's files run on SQLite only, PostgreSQL's counterparts are
 * in store_pg_test.c.  Keys and versions: store_keys_test.c;
 * aliases and tags: store_names_test.c; principals: store_principals_test.c;
 * threads: store_concurrency_test.c; kill -9: store_crash_test.c; speed:
 * store_scale_test.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/evp.h>

#include "common/util.h"
#include "store/store.h"
#include "store/store_impl.h"
#include "store_test_util.h"

/* ---- Opening, locking, migrations ------------------------------------------------ */

static void test_open_creates_private_files(void **state)
{
	(void)state;
	st_sqlite_only();
	char base[PATH_MAX], dir[PATH_MAX], path[PATH_MAX];
	st_tmpdir(base);
	assert_true(snprintf(dir, sizeof(dir), "%s/a/b", base) < (int)sizeof(dir));
	hsm_store *s = NULL;
	EXPECT_OK(hsm_store_open(dir, &s));
	struct stat sb;
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	st_path(path, dir, "hsmd.db");
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	st_path(path, dir, "hsmd.db-wal");
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	st_path(path, dir, "hsmd.lock");
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(hsm_store_schema_version(s), hsm_store_sqlite_schema_latest());
	hsm_store_close(s);

	/* The same directory through the explicit prefix, with its data intact. */
	char loc[PATH_MAX + 8];
	snprintf(loc, sizeof(loc), "sqlite:%s", dir);
	EXPECT_OK(hsm_store_open(loc, &s));
	assert_int_equal(hsm_store_schema_version(s), hsm_store_sqlite_schema_latest());
	hsm_store_close(s);

	/* A database and side files left readable by others (copied in by hand, an older
	 * tool): restricted at the next open, either way, before SQLite reads or makes any;
	 * SQLite would make the -wal and -shm files with the database file's mode. */
	static const char *const files[] = {"hsmd.db", "hsmd.db-wal", "hsmd.db-shm",
	                                    "hsmd.db-journal"};
	for (int existing = 0; existing < 2; existing++) {
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			st_path(path, dir, files[i]);
			int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
			assert_true(fd >= 0);
			assert_int_equal(fchmod(fd, 0644), 0);
			close(fd);
		}
		EXPECT_OK(existing ? hsm_store_open_existing(dir, &s) : hsm_store_open(dir, &s));
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
			st_path(path, dir, files[i]);
			if (stat(path, &sb) == 0) /* SQLite may have removed the journal */
				assert_int_equal(sb.st_mode & 0777, 0600);
		}
		st_path(path, dir, "hsmd.db-wal");
		assert_int_equal(stat(path, &sb), 0);
		assert_int_equal(sb.st_mode & 0777, 0600);
		assert_int_equal(hsm_store_schema_version(s), hsm_store_sqlite_schema_latest());
		hsm_store_close(s);
	}
	hsm_store_close(NULL);
	st_rm_rf(base);
}

/*
 * What another process sees of the dead-man-switch byte of a -shm file (SQLite's unix
 * VFS: byte 128, held shared by every process with a connection to the database):
 * 1 when a lock is held on it, 0 when none is.
 */
static int dms_locked_seen_by_another_process(const char *shm)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(shm, O_RDWR | O_CLOEXEC);
		struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 128, .l_len = 1};
		if (fd < 0 || fcntl(fd, F_GETLK, &fl) != 0)
			_exit(2);
		_exit(fl.l_type == F_UNLCK ? 0 : 1);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/*
 * Restricting the store's files while its connections are open (hsm_store_migrate,
 * after hsm_store_open_unmigrated) leaves SQLite's locks in place: closing a
 * descriptor of the database or its -shm would drop every POSIX lock this process
 * holds on it, and another process opening the store would then find the -shm
 * unused and reset it under the running node's map of it.
 */
static void test_restricting_files_keeps_sqlite_locks(void **state)
{
	(void)state;
	st_sqlite_only();
	char dir[PATH_MAX], db[PATH_MAX], shm[PATH_MAX];
	st_tmpdir(dir);
	hsm_store *s = NULL;
	EXPECT_OK(hsm_store_open(dir, &s));
	hsm_store_close(s);
	st_path(db, dir, "hsmd.db");
	st_path(shm, dir, "hsmd.db-shm");
	assert_int_equal(chmod(db, 0644), 0);
	EXPECT_OK(hsm_store_open_unmigrated(dir, &s));
	assert_int_equal(dms_locked_seen_by_another_process(shm), 1);
	EXPECT_OK(hsm_store_migrate(s));
	struct stat sb;
	assert_int_equal(stat(db, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(dms_locked_seen_by_another_process(shm), 1);
	hsm_store_close(s);
	assert_int_not_equal(dms_locked_seen_by_another_process(shm), 1); /* unlocked, or gone */
	st_rm_rf(dir);
}

static void test_open_rejects_bad_locations(void **state)
{
	(void)state;
	hsm_store *s = NULL;
	EXPECT_ERR(hsm_store_open("", &s), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_open("sqlite:", &s), HSM_ERR_VALIDATION);
	/* A scheme no backend has; PostgreSQL's own errors: store_pg_test.c. */
	EXPECT_ERR(hsm_store_open("mysql://db.example/hsm", &s), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_open("postgresql://", &s), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_store_open("postgres://", &s), HSM_ERR_VALIDATION);
	assert_null(s);
}

static void test_lock_conflict(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	hsm_store *second = NULL;
	EXPECT_ERR(hsm_store_open(f->dir, &second), HSM_ERR_CONFLICT);
	assert_null(second);
	char pid[32];
	snprintf(pid, sizeof(pid), "process %ld", (long)getpid());
	assert_non_null(strstr(hsm_last_message(), "in use"));
	assert_non_null(strstr(hsm_last_message(), pid));

	/* Another process is refused the same way. */
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		hsm_store *s = NULL;
		hsm_result r = hsm_store_open(f->dir, &s);
		_exit(r.err == HSM_ERR_CONFLICT ? 0 : 1);
	}
	int status = 0;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* Closing releases the lock. */
	hsm_store_close(f->s);
	f->s = NULL;
	EXPECT_OK(hsm_store_open(f->dir, &f->s));
}

static void test_migrates_version_zero_store(void **state)
{
	(void)state;
	st_sqlite_only();
	char dir[PATH_MAX];
	st_tmpdir(dir);
	/* A database that has the version table but no step applied yet. */
	assert_int_equal(st_raw_exec(dir, "CREATE TABLE schema_version (version INTEGER PRIMARY "
	                                  "KEY, applied INTEGER NOT NULL)"),
	                 SQLITE_OK);
	hsm_store *s = NULL;
	EXPECT_OK(hsm_store_open(dir, &s));
	assert_int_equal(hsm_store_schema_version(s), hsm_store_sqlite_schema_latest());
	st_create_key(s, "k1", "w", 1);
	hsm_store_close(s);
	assert_int_equal(st_raw_int(dir, "SELECT max(version) FROM schema_version"),
	                 hsm_store_sqlite_schema_latest());
	st_rm_rf(dir);
}

/*
 * An upgrade stays on the store's record until a Startup record said it: a
 * start that stopped between the two leaves it for the next opening.
 */
static void test_upgrade_kept_until_reported(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	int latest = hsm_store_sqlite_schema_latest();
	assert_int_equal(hsm_store_migration_unreported(f->s), 0); /* a new store: no upgrade */
	hsm_store_close(f->s);
	f->s = NULL;
	char sql[96];
	snprintf(sql, sizeof(sql), "DELETE FROM schema_version WHERE version = %d", latest);
	assert_int_equal(st_raw_exec(f->dir, sql), SQLITE_OK); /* the last step is idempotent */
	EXPECT_OK(hsm_store_open(f->dir, &f->s));
	assert_int_equal(hsm_store_migrated_from(f->s), latest - 1);
	hsm_store_close(f->s);
	f->s = NULL;
	/* Reopened, nothing migrates; the upgrade is still to be said. */
	EXPECT_OK(hsm_store_open(f->dir, &f->s));
	assert_int_equal(hsm_store_migrated_from(f->s), 0);
	assert_int_equal(hsm_store_migration_unreported(f->s), latest - 1);
	EXPECT_OK(hsm_store_migration_reported(f->s, latest - 1));
	EXPECT_OK(hsm_store_migration_reported(f->s, latest - 1)); /* two nodes at once */
	assert_int_equal(hsm_store_migration_unreported(f->s), 0);
}

/*
 * A start that may still be refused opens the store as it is: an older
 * schema stays (its metadata readable) until hsm_store_migrate, which then
 * brings it forward and keeps the upgrade for the Startup record as an
 * opening does; a location without a store gets a new, current one at once.
 */
static void test_open_unmigrated_then_migrate(void **state)
{
	(void)state;
	st_fixture f = {0};
	st_fresh_location(&f);
	EXPECT_OK(hsm_store_open_unmigrated(f.loc, &f.s)); /* nothing there: made now */
	int latest = hsm_store_schema_latest(f.s);
	assert_int_equal(hsm_store_schema_version(f.s), latest);
	EXPECT_OK(hsm_store_migrate(f.s)); /* current: nothing to do */
	assert_int_equal(hsm_store_migrated_from(f.s), 0);
	const char *names[] = {"probe"};
	hsm_buf v = {.data = (uint8_t *)"1", .len = 1};
	const hsm_buf *values[] = {&v};
	EXPECT_OK(hsm_store_meta_put(f.s, 1, names, values));
	st_schema_before_usage(&f);
	int old = st_is_pg() ? 6 : 7;
	const char *count = "SELECT max(version) FROM schema_version";

	EXPECT_OK(hsm_store_open_unmigrated(f.loc, &f.s));
	assert_int_equal(hsm_store_schema_version(f.s), old);
	assert_int_equal(st_is_pg() ? st_pg_int(f.db, count) : st_raw_int(f.dir, count), old);
	hsm_buf got;
	hsm_buf_init(&got);
	EXPECT_OK(hsm_store_meta_get(f.s, "probe", &got));
	assert_int_equal(got.len, 1);
	hsm_buf_free(&got);
	assert_int_equal(hsm_store_migration_unreported(f.s), 0);

	EXPECT_OK(hsm_store_migrate(f.s));
	assert_int_equal(hsm_store_schema_version(f.s), latest);
	assert_int_equal(st_is_pg() ? st_pg_int(f.db, count) : st_raw_int(f.dir, count), latest);
	assert_int_equal(hsm_store_migrated_from(f.s), old);
	assert_int_equal(hsm_store_migration_unreported(f.s), old);
	int64_t since = 0;
	EXPECT_OK(hsm_store_usage_since(f.s, &since)); /* the steps the old schema lacked */
	assert_true(since > 0);
	hsm_store_close(f.s);
	st_release_location(&f);
}

/*
 * hsm_store_holds_any answers on a store opened as it is, older schema and
 * all (a copy's destination is checked before it is brought forward), and
 * counts the records of its own upgrades as nothing.
 */
static void test_holds_any_as_it_is(void **state)
{
	(void)state;
	st_fixture f = {0};
	st_fresh_location(&f);
	EXPECT_OK(hsm_store_open_unmigrated(f.loc, &f.s));
	bool any = true;
	EXPECT_OK(hsm_store_holds_any(f.s, &any));
	assert_false(any);
	st_schema_before_usage(&f);
	EXPECT_OK(hsm_store_open_unmigrated(f.loc, &f.s));
	EXPECT_OK(hsm_store_holds_any(f.s, &any));
	assert_false(any);
	EXPECT_OK(hsm_store_migrate(f.s)); /* records its upgrade: still empty */
	EXPECT_OK(hsm_store_holds_any(f.s, &any));
	assert_false(any);
	const char *names[] = {"probe"};
	hsm_buf v = {.data = (uint8_t *)"1", .len = 1};
	const hsm_buf *values[] = {&v};
	EXPECT_OK(hsm_store_meta_put(f.s, 1, names, values));
	st_schema_before_usage(&f);
	EXPECT_OK(hsm_store_open_unmigrated(f.loc, &f.s));
	EXPECT_OK(hsm_store_holds_any(f.s, &any));
	assert_true(any);
	hsm_store_close(f.s);
	st_release_location(&f);
}

static void test_failed_migration_changes_nothing(void **state)
{
	(void)state;
	st_sqlite_only();
	char dir[PATH_MAX];
	st_tmpdir(dir);
	/* A table in the way makes step 1 fail part-way through. */
	assert_int_equal(st_raw_exec(dir, "CREATE TABLE aliases (x)"), SQLITE_OK);
	hsm_store *s = NULL;
	EXPECT_ERR(hsm_store_open(dir, &s), HSM_ERR_STORE);
	assert_int_equal(st_raw_int(dir, "SELECT count(*) FROM schema_version"), 0);
	assert_int_equal(st_raw_int(dir, "SELECT count(*) FROM sqlite_schema WHERE name = 'keys'"), 0);
	assert_int_equal(st_raw_int(dir, "PRAGMA application_id"), 0);
	/* Once the obstacle is gone the same directory migrates. */
	assert_int_equal(st_raw_exec(dir, "DROP TABLE aliases"), SQLITE_OK);
	EXPECT_OK(hsm_store_open(dir, &s));
	hsm_store_close(s);
	st_rm_rf(dir);
}

static void test_refuses_newer_schema_and_foreign_files(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	hsm_store_close(f->s);
	f->s = NULL;
	assert_int_equal(st_raw_exec(f->dir, "INSERT INTO schema_version VALUES (999, 0)"), SQLITE_OK);
	EXPECT_ERR(hsm_store_open(f->dir, &f->s), HSM_ERR_STORE);
	assert_non_null(strstr(hsm_last_message(), "newer"));
	assert_null(f->s);
	assert_int_equal(st_raw_exec(f->dir, "DELETE FROM schema_version WHERE version = 999"),
	                 SQLITE_OK);
	assert_int_equal(st_raw_exec(f->dir, "PRAGMA application_id = 7"), SQLITE_OK);
	EXPECT_ERR(hsm_store_open(f->dir, &f->s), HSM_ERR_STORE);
	assert_non_null(strstr(hsm_last_message(), "not an hsmd store"));
	assert_int_equal(st_raw_exec(f->dir, "PRAGMA application_id = 1213418820"), SQLITE_OK);
	EXPECT_OK(hsm_store_open(f->dir, &f->s));
}

static void test_connection_settings(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	char path[PATH_MAX];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	st_path(path, f->dir, "hsmd.db");
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/*
 * hsm_store_check answers for the file's structure: a healthy store passes;
 * a table page overwritten (the first byte, its page type) is named as
 * damaged though the store still opens.
 */
static void test_check_finds_a_damaged_page(void **state)
{
	st_fixture *f = *state;
	EXPECT_OK(hsm_store_check(f->s));
	st_sqlite_only();
	hsm_store_close(f->s);
	f->s = NULL;
	long long page = st_raw_int(f->dir, "SELECT rootpage FROM sqlite_schema WHERE name = 'grants'");
	long long size = st_raw_int(f->dir, "PRAGMA page_size");
	assert_true(page > 1 && size > 0);
	char path[PATH_MAX];
	st_path(path, f->dir, "hsmd.db");
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "\x01", 1, (off_t)((page - 1) * size)), 1);
	close(fd);
	EXPECT_OK(hsm_store_open(f->loc, &f->s));
	EXPECT_ERR(hsm_store_check(f->s), HSM_ERR_STORE);
	assert_non_null(strstr(hsm_last_message(), "hsmd.db is damaged: "));
}

/* ---- Metadata -------------------------------------------------------------------------- */

static void test_meta(void **state)
{
	st_fixture *f = *state;
	hsm_buf out = {0};
	EXPECT_ERR(hsm_store_meta_get(f->s, "store_id", &out), HSM_ERR_NOT_FOUND);
	hsm_buf a = {0}, b = {0}, empty = {0};
	assert_true(hsm_ok(hsm_buf_set(&a, "alpha", 5)));
	assert_true(hsm_ok(hsm_buf_set(&b, "\0\1\2", 3)));
	const char *names[] = {"store_id", "kcv", "blank"};
	const hsm_buf *values[] = {&a, &b, &empty};
	EXPECT_OK(hsm_store_meta_put(f->s, 3, names, values));
	EXPECT_OK(hsm_store_meta_put(f->s, 0, NULL, NULL));
	EXPECT_OK(hsm_store_meta_get(f->s, "kcv", &out));
	assert_int_equal(out.len, 3);
	assert_memory_equal(out.data, "\0\1\2", 3);
	EXPECT_OK(hsm_store_meta_get(f->s, "blank", &out));
	assert_int_equal(out.len, 0);
	/* A value is written once: a put naming a set value writes nothing, not even its new names. */
	const char *two[] = {"fresh", "kcv"};
	const hsm_buf *va[] = {&a, &a};
	EXPECT_ERR(hsm_store_meta_put(f->s, 2, two, va), HSM_ERR_ALREADY_EXISTS);
	EXPECT_ERR(hsm_store_meta_get(f->s, "fresh", &out), HSM_ERR_NOT_FOUND);
	const char *one[] = {"fresh"};
	EXPECT_OK(hsm_store_meta_put(f->s, 1, one, va));
	/* Read into a secure buffer, which stays secure. */
	hsm_buf sec;
	hsm_buf_init_secure(&sec);
	st_reopen(f);
	EXPECT_OK(hsm_store_meta_get(f->s, "kcv", &sec));
	assert_true(sec.secure);
	assert_int_equal(sec.len, 3);
	assert_memory_equal(sec.data, "\0\1\2", 3);
	EXPECT_OK(hsm_store_meta_get(f->s, "fresh", &sec));
	assert_int_equal(sec.len, 5);
	assert_memory_equal(sec.data, "alpha", 5);
	/* A failed get leaves the output alone. */
	EXPECT_ERR(hsm_store_meta_get(f->s, "missing", &sec), HSM_ERR_NOT_FOUND);
	assert_int_equal(sec.len, 5);
	const char *bad[] = {""};
	EXPECT_ERR(hsm_store_meta_put(f->s, 1, bad, va), HSM_ERR_VALIDATION);
	hsm_buf_free(&a);
	hsm_buf_free(&b);
	hsm_buf_free(&out);
	hsm_buf_free(&sec);
}

static void test_meta_batch_is_atomic(void **state)
{
	st_fixture *f = *state;
	/* Fault injection: the second value of the batch makes the store fail. */
	st_poison(f, "meta", "NEW.name = 'poison'");
	hsm_buf v = {0}, out = {0};
	assert_true(hsm_ok(hsm_buf_set(&v, "x", 1)));
	const char *names[] = {"first", "poison", "third"};
	const hsm_buf *values[] = {&v, &v, &v};
	EXPECT_ERR(hsm_store_meta_put(f->s, 3, names, values), HSM_ERR_STORE);
	EXPECT_ERR(hsm_store_meta_get(f->s, "first", &out), HSM_ERR_NOT_FOUND);
	EXPECT_ERR(hsm_store_meta_get(f->s, "third", &out), HSM_ERR_NOT_FOUND);
	/* The store keeps working after the rollback. */
	EXPECT_OK(hsm_store_meta_put(f->s, 1, names, values));
	EXPECT_OK(hsm_store_meta_get(f->s, "first", &out));
	hsm_buf_free(&v);
	hsm_buf_free(&out);
}

typedef struct names_seen {
	char v[4][32];
	size_t n;
} names_seen;

static hsm_result collect_name(const char *rest, void *arg)
{
	names_seen *s = arg;
	assert_true(s->n < 4);
	snprintf(s->v[s->n++], sizeof(s->v[0]), "%s", rest);
	return HSM_SUCCESS;
}

/* The metadata's names under a prefix, read past the store's other records. */
static void test_meta_names(void **state)
{
	st_fixture *f = *state;
	names_seen seen = {0};
	EXPECT_OK(hsm_store_meta_names(f->s, "audit_trail:", collect_name, &seen));
	assert_int_equal(seen.n, 0);
	hsm_buf v = {0};
	assert_true(hsm_ok(hsm_buf_set(&v, "1", 1)));
	const char *names[] = {"audit_trail:node-b", "kcv", "audit_trail:node-a", "audit_trailx"};
	const hsm_buf *values[] = {&v, &v, &v, &v};
	EXPECT_OK(hsm_store_meta_put(f->s, 4, names, values));
	hsm_user_record u;
	memset(&u, 0, sizeof(u));
	snprintf(u.name, sizeof(u.name), "olivia");
	u.roles = 1U << HSM_ROLE_AUDITOR;
	u.created = 1700000000;
	EXPECT_OK(hsm_store_user_create(f->s, &u));
	EXPECT_OK(hsm_store_meta_names(f->s, "audit_trail:", collect_name, &seen));
	assert_int_equal(seen.n, 2);
	assert_string_equal(seen.v[0], "node-a");
	assert_string_equal(seen.v[1], "node-b");
	hsm_buf_free(&v);
}

/* ---- Names and errors --------------------------------------------------------------------------- */

static void test_enum_names(void **state)
{
	(void)state;
	assert_string_equal(hsm_key_state_name(HSM_KEY_PENDING_DELETION), "PendingDeletion");
	assert_string_equal(hsm_role_name(HSM_ROLE_CRYPTO_OFFICER), "crypto-officer");
	assert_string_equal(hsm_key_origin_name(HSM_ORIGIN_EXTERNAL), "EXTERNAL");
	assert_string_equal(hsm_rotation_type_name(HSM_ROTATION_ON_DEMAND), "ON_DEMAND");
	hsm_role r;
	hsm_key_state ks;
	hsm_key_origin o;
	hsm_rotation_type t;
	EXPECT_OK(hsm_role_parse("auditor", &r));
	assert_int_equal(r, HSM_ROLE_AUDITOR);
	EXPECT_ERR(hsm_role_parse("root", &r), HSM_ERR_VALIDATION);
	EXPECT_ERR(hsm_role_parse("Auditor", &r), HSM_ERR_VALIDATION);
	EXPECT_OK(hsm_key_state_parse("Destroyed", &ks));
	assert_int_equal(ks, HSM_KEY_DESTROYED);
	EXPECT_ERR(hsm_key_state_parse("Gone", &ks), HSM_ERR_VALIDATION);
	EXPECT_OK(hsm_key_origin_parse("AWS_KMS", &o));
	assert_int_equal(o, HSM_ORIGIN_AWS_KMS);
	EXPECT_OK(hsm_rotation_type_parse("AUTOMATIC", &t));
	assert_int_equal(t, HSM_ROTATION_AUTOMATIC);
	EXPECT_ERR(hsm_rotation_type_parse("", &t), HSM_ERR_VALIDATION);
}

static void test_busy_maps_to_dependency_timeout(void **state)
{
	st_sqlite_only();
	st_fixture *f = *state;
	/* Another connection holds the write lock for longer than the store waits. */
	char path[PATH_MAX];
	sqlite3 *db = NULL;
	st_path(path, f->dir, "hsmd.db");
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	hsm_buf v = {0};
	assert_true(hsm_ok(hsm_buf_set(&v, "x", 1)));
	const char *names[] = {"n"};
	const hsm_buf *values[] = {&v};
	uint64_t t0 = hsm_mono_ns();
	EXPECT_ERR(hsm_store_meta_put(f->s, 1, names, values), HSM_ERR_DEPENDENCY_TIMEOUT);
	assert_true(hsm_mono_ns() - t0 >= 4000000000ULL);
	/* Readers are not blocked by that writer. */
	hsm_buf out = {0};
	EXPECT_ERR(hsm_store_meta_get(f->s, "n", &out), HSM_ERR_NOT_FOUND);
	assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	EXPECT_OK(hsm_store_meta_put(f->s, 1, names, values));
	hsm_buf_free(&v);
}

#define LEASE_MS 30000

/* One handle alone leads whenever it wants to, and stops when it gives the leadership up. */
static void test_a_lone_handle_leads(void **state)
{
	st_fixture *f = *state;
	bool leading = false;
	for (int i = 0; i < 2; i++) {
		EXPECT_OK(hsm_store_lead(f->s, true, LEASE_MS, &leading));
		assert_true(leading);
		EXPECT_OK(hsm_store_lead(f->s, true, LEASE_MS, &leading));
		assert_true(leading);
		EXPECT_OK(hsm_store_lead(f->s, false, LEASE_MS, &leading));
		assert_false(leading);
	}
}

/* ---- Shipped schema steps ------------------------------------------------------------- */

/*
 * The first 16 hex digits of the SHA-256 of every shipped schema step's SQL.
 * A store that took a step is marked as having it and never runs it again,
 * so an edit to a shipped step never reaches the stores that took it (the
 * certificates step once lost its not_after column that way).  Add a step
 * and its hash here; never change a line.
 */
typedef struct pinned_step {
	int version;
	const char *sha256_16;
} pinned_step;

static const pinned_step sqlite_steps[] = {
	{1, "7dccd227b40e6356"},
	{2, "4bed2bec5d3a87e2"},
	{3, "2f64beb9591f473f"},
	{4, "375ca253d969a051"},
	{5, "144a4eaf9dfba2cc"},
	{6, "2c9bd016fd8e9c7a"},
	{7, "736be4b4dc1ff991"},
	{8, "cf1d2bfd71c9a08a"},
	{9, "90299e66f619e036"},
	{10, "8390e177eed411e3"},
};
static const pinned_step pg_steps[] = {
	{1, "f28206757a1a478c"},
	{2, "d30ebf3c6a6948a1"},
	{3, "f856af67c36e2e24"},
	{4, "c393293e7197a2d5"},
	{5, "e66eadfd2b29ed62"},
	{6, "c58f45f5023649af"},
	{7, "57b76a1b006225de"},
	{8, "993adbe87633d66c"},
	{9, "65930e24c9848b80"},
};

static void sha256_16(const char *sql, char out[17])
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	assert_int_equal(EVP_Digest(sql, strlen(sql), d, &n, EVP_sha256(), NULL), 1);
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void check_steps(const char *backend, size_t n, int (*step)(size_t, const char **),
                        const pinned_step *pinned, size_t n_pinned)
{
	if (n < n_pinned)
		fail_msg("the %s schema has %zu steps but %zu shipped: shipped steps are never removed",
		         backend, n, n_pinned);
	for (size_t i = 0; i < n; i++) {
		const char *sql = NULL;
		int version = step(i, &sql);
		char got[17];
		sha256_16(sql, got);
		if (i >= n_pinned)
			fail_msg("%s schema step %d is not pinned: add {%d, \"%s\"} to this test's table",
			         backend, version, version, got);
		if (version != pinned[i].version || strcmp(got, pinned[i].sha256_16) != 0)
			fail_msg("%s schema step %d was edited after it shipped (its SQL hashes to %s, "
			         "not %s): stores that took it never run it again, so restore the step "
			         "and add a new step that brings them forward",
			         backend, version, got, pinned[i].sha256_16);
	}
}

static void test_shipped_schema_steps_unchanged(void **state)
{
	(void)state;
	check_steps("SQLite", hsm_store_sqlite_schema_steps(), hsm_store_sqlite_schema_step,
	            sqlite_steps, sizeof(sqlite_steps) / sizeof(sqlite_steps[0]));
	check_steps("PostgreSQL", hsm_store_pg_schema_steps(), hsm_store_pg_schema_step, pg_steps,
	            sizeof(pg_steps) / sizeof(pg_steps[0]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_creates_private_files),
		cmocka_unit_test(test_restricting_files_keeps_sqlite_locks),
		cmocka_unit_test(test_open_rejects_bad_locations),
		cmocka_unit_test_setup_teardown(test_lock_conflict, st_setup, st_teardown),
		cmocka_unit_test(test_migrates_version_zero_store),
		cmocka_unit_test_setup_teardown(test_upgrade_kept_until_reported, st_setup, st_teardown),
		cmocka_unit_test(test_open_unmigrated_then_migrate),
		cmocka_unit_test(test_holds_any_as_it_is),
		cmocka_unit_test(test_failed_migration_changes_nothing),
		cmocka_unit_test_setup_teardown(test_refuses_newer_schema_and_foreign_files, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_connection_settings, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_check_finds_a_damaged_page, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_meta, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_meta_batch_is_atomic, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_meta_names, st_setup, st_teardown),
		cmocka_unit_test(test_enum_names),
		cmocka_unit_test(test_shipped_schema_steps_unchanged),
		cmocka_unit_test_setup_teardown(test_a_lone_handle_leads, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_busy_maps_to_dependency_timeout, st_setup, st_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
