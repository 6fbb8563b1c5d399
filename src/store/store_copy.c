/*
 * store_copy.c - copying a whole store into another (hsm_store_copy), and
 * snapshots written as SQLite store files by backends without files of their
 * own.  Both rest on the export/import ops (store_impl.h): the source reads
 * everything in one read transaction, the destination writes it in one write
 * transaction, so the copy is one consistent state, applied whole or not at all.
 */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store_impl.h"

static hsm_result export_from(const hsm_store_sink *sink, void *arg)
{
	hsm_store *src = arg;
	return src->ops->export_all(src, sink);
}

hsm_result hsm_store_copy(hsm_store *src, hsm_store *dst)
{
	HSM_ASSERT(src != NULL && dst != NULL && src != dst);
	/* A copy (a restore, a move of backend) starts with an empty outbox (store.h). */
	hsm_store_intent *held = st_intent_hold();
	hsm_result res = dst->ops->import_all(dst, export_from, src);
	st_intent_restore(held);
	return res;
}

hsm_result hsm_store_copy_noted(hsm_store *src, hsm_store *dst)
{
	HSM_ASSERT(src != NULL && dst != NULL && src != dst);
	return dst->ops->import_all(dst, export_from, src);
}

/* ---- Metadata names ------------------------------------------------------------------------ */

/*
 * The export passes the metadata first (store_impl.h), so the first record
 * of any other kind ends the walk: META_DONE is returned from it and taken
 * for success, and no more of the store is read.
 */
typedef struct meta_walk {
	const char *prefix;
	hsm_store_meta_name_cb cb;
	void *arg;
	bool done;
} meta_walk;

static hsm_result walk_meta(void *arg, const char *name, const hsm_buf *value)
{
	meta_walk *w = arg;
	(void)value;
	size_t n = strlen(w->prefix);
	return strncmp(name, w->prefix, n) == 0 ? w->cb(name + n, w->arg) : HSM_SUCCESS;
}

static hsm_result meta_done(void *arg)
{
	((meta_walk *)arg)->done = true;
	return HSM_FAIL(HSM_ERR_CONFLICT, "the metadata is read");
}
static hsm_result done_user(void *arg, const hsm_user_record *u)
{
	(void)u;
	return meta_done(arg);
}
static hsm_result done_access_key(void *arg, const hsm_access_key_record *k)
{
	(void)k;
	return meta_done(arg);
}
static hsm_result done_key(void *arg, const hsm_key_record *k)
{
	(void)k;
	return meta_done(arg);
}
static hsm_result done_version(void *arg, const hsm_version_record *v)
{
	(void)v;
	return meta_done(arg);
}
static hsm_result done_alias(void *arg, const hsm_alias_record *a)
{
	(void)a;
	return meta_done(arg);
}
static hsm_result done_tag(void *arg, const char *key_id, const hsm_tag *t)
{
	(void)key_id, (void)t;
	return meta_done(arg);
}
static hsm_result done_grant(void *arg, const hsm_grant_record *g)
{
	(void)g;
	return meta_done(arg);
}
static hsm_result done_cert(void *arg, const hsm_cert_record *c)
{
	(void)c;
	return meta_done(arg);
}

hsm_result hsm_store_meta_names(hsm_store *s, const char *prefix, hsm_store_meta_name_cb cb,
                                void *arg)
{
	HSM_ASSERT(s != NULL && prefix != NULL && cb != NULL);
	meta_walk w = {prefix, cb, arg, false};
	hsm_store_sink sink = {.arg = &w,
	                       .meta = walk_meta,
	                       .user = done_user,
	                       .access_key = done_access_key,
	                       .key = done_key,
	                       .version = done_version,
	                       .alias = done_alias,
	                       .tag = done_tag,
	                       .grant = done_grant,
	                       .certificate = done_cert};
	hsm_result r = s->ops->export_all(s, &sink);
	return w.done ? HSM_SUCCESS : r;
}

/* ---- Snapshots as SQLite files ------------------------------------------------------------ */

/* Removes what a SQLite store leaves in its directory, then the directory. */
static void remove_store_dir(const char *dir)
{
	static const char *const names[] = {HSM_STORE_DB_FILE, HSM_STORE_DB_FILE "-wal",
	                                    HSM_STORE_DB_FILE "-shm", "hsmd.lock"};
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) < (int)sizeof(path))
			unlink(path);
	}
	rmdir(dir);
}

/*
 * The copy goes into a fresh SQLite store in a private directory beside
 * path (same file system), which is then closed (folding its WAL into the
 * database file) and its database file renamed over the placeholder that
 * reserved path.
 */
hsm_result hsm_store_snapshot_to_sqlite(hsm_store *src, const char *path)
{
	hsm_result res = HSM_SUCCESS;
	hsm_store *dst = NULL;
	char dir[PATH_MAX] = "", db[PATH_MAX];
	bool placed = false;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
	close(fd);
	placed = true;
	int n = snprintf(db, sizeof(db), "%s.tmp-XXXXXX/%s", path, HSM_STORE_DB_FILE);
	HSM_CHECK(n > 0 && (size_t)n < sizeof(db), HSM_ERR_VALIDATION, "snapshot path is too long");
	/* The same text up to the last '/': the directory's template. */
	memcpy(dir, db, (size_t)n - strlen("/" HSM_STORE_DB_FILE));
	dir[(size_t)n - strlen("/" HSM_STORE_DB_FILE)] = '\0';
	if (mkdtemp(dir) == NULL) {
		dir[0] = '\0';
		res = HSM_FAIL(HSM_ERR_IO, "cannot create a directory beside %s: %s", path,
		               strerror(errno));
		goto out;
	}
	memcpy(db, dir, strlen(dir)); /* the template's X's, now filled in */
	HSM_TRY(hsm_store_sqlite_open(dir, &dst));
	HSM_TRY(hsm_store_copy(src, dst));
	hsm_store_close(dst);
	dst = NULL;
	HSM_TRY(hsm_store_sqlite_drop_transient(db)); /* when its recording of key uses began */
	HSM_CHECK(rename(db, path) == 0, HSM_ERR_IO, "cannot move the snapshot to %s: %s", path,
	          strerror(errno));
	placed = false;
out:
	hsm_store_close(dst);
	if (dir[0] != '\0')
		remove_store_dir(dir);
	if (placed)
		unlink(path);
	return res;
}
