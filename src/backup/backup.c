/*
 * backup.c - writing, reading, listing and pruning backup files (backup.h).
 */
#include "backup/backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/util.h"
#include "crypto/crypto.h"

#define MAGIC "HSMDBAK\n"
#define MAGIC_LEN 8
#define PREFIX_LEN (MAGIC_LEN + 2 + 4) /* magic, format, header length */
#define HEADER_MAX 4096
#define CHUNK_DEFAULT (1U << 20)
#define CHUNK_MIN 4096U
#define CHUNK_MAX (64U << 20)
#define STORE_BYTES_MAX (1ULL << 48)

/* ---- file helpers ------------------------------------------------------------------ */

static hsm_result write_all(int fd, const void *p, size_t n, const char *path)
{
	const uint8_t *b = p;
	while (n > 0) {
		ssize_t w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		HSM_ENSURE(w > 0, HSM_ERR_IO, "cannot write %s: %s", path,
		           w < 0 ? strerror(errno) : "no progress");
		b += w;
		n -= (size_t)w;
	}
	return HSM_SUCCESS;
}

/* Reads up to n bytes (fewer only at the end of the file) into p; *got says how many. */
static hsm_result read_upto(int fd, void *p, size_t n, size_t *got, const char *path)
{
	uint8_t *b = p;
	size_t have = 0;
	while (have < n) {
		ssize_t r = read(fd, b + have, n - have);
		if (r < 0 && errno == EINTR)
			continue;
		HSM_ENSURE(r >= 0, HSM_ERR_IO, "cannot read %s: %s", path, strerror(errno));
		if (r == 0)
			break;
		have += (size_t)r;
	}
	*got = have;
	return HSM_SUCCESS;
}

static hsm_result open_new(const char *path, int *fd)
{
	*fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	HSM_ENSURE(*fd >= 0, HSM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
	return HSM_SUCCESS;
}

/*
 * Creates a backup's temporary file, locked (flock) until it is closed: the
 * start-up clean-up of another node sharing the backup directory leaves a
 * locked one alone (remove_matching).  A clean-up that took the lock between
 * the file's creation and ours unlinks it before letting go: then it is made
 * again.
 */
#define LOCKED_TRIES 10
static hsm_result open_new_locked(const char *path, int *fd)
{
	for (int tries = 1;; tries++) {
		struct stat st;
		int err = 0;
		HSM_GUARD(open_new(path, fd));
		while (flock(*fd, LOCK_EX) != 0 && errno == EINTR)
			;
		if (fstat(*fd, &st) != 0)
			err = errno;
		else if (st.st_nlink > 0)
			return HSM_SUCCESS;
		close(*fd);
		*fd = -1;
		HSM_ENSURE(tries < LOCKED_TRIES, HSM_ERR_IO, "cannot create %s: %s", path,
		           err != 0 ? strerror(err) : "removed as it was made, again and again");
	}
}

static hsm_result sync_close(int fd, const char *path)
{
	int rc = fsync(fd);
	int err = errno;
	if (close(fd) != 0 && rc == 0) {
		rc = -1;
		err = errno;
	}
	HSM_ENSURE(rc == 0, HSM_ERR_IO, "cannot sync %s: %s", path, strerror(err));
	return HSM_SUCCESS;
}

/*
 * Makes the file written at tmp (open as fd, which is closed) durable under
 * the name final in dir: sync, rename, sync of the directory.  Once renamed,
 * tmp[0] is cleared, so the caller's cleanup leaves the file alone.
 */
static hsm_result publish(int fd, char *tmp, const char *final, const char *dir)
{
	/* Renamed before it is closed: closing drops its lock (open_new_locked). */
	if (fsync(fd) != 0) {
		int err = errno;
		close(fd);
		return HSM_FAIL(HSM_ERR_IO, "cannot sync %s: %s", tmp, strerror(err));
	}
	if (rename(tmp, final) != 0) {
		int err = errno;
		close(fd);
		return HSM_FAIL(HSM_ERR_IO, "cannot rename %s: %s", tmp, strerror(err));
	}
	tmp[0] = '\0';
	HSM_ENSURE(close(fd) == 0, HSM_ERR_IO, "cannot close %s: %s", final, strerror(errno));
	return hsm_fsync_dir(dir);
}

static hsm_result join(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);
	HSM_ENSURE(n > 0 && (size_t)n < cap, HSM_ERR_VALIDATION, "path too long: %s/%s", dir, name);
	return HSM_SUCCESS;
}

/* ---- header ------------------------------------------------------------------------- */

static hsm_result encode_header(const hsm_backup_info *in, hsm_buf *out)
{
	const hsm_ks_identity *id = &in->identity;
	HSM_GUARD(hsm_buf_put(out, MAGIC, MAGIC_LEN));
	HSM_GUARD(hsm_buf_put_u16(out, HSM_BACKUP_FORMAT));
	HSM_GUARD(hsm_buf_put_u32(out, 0)); /* the length, set below */
	HSM_GUARD(hsm_buf_put_lp(out, id->store_id, strlen(id->store_id)));
	HSM_GUARD(hsm_buf_put(out, id->set_id, sizeof(id->set_id)));
	HSM_GUARD(hsm_buf_put_u8(out, (uint8_t)id->threshold));
	HSM_GUARD(hsm_buf_put_u8(out, (uint8_t)id->count));
	HSM_GUARD(hsm_buf_put(out, id->kcv, sizeof(id->kcv)));
	HSM_GUARD(hsm_buf_put_lp(out, in->backup_id, strlen(in->backup_id)));
	HSM_GUARD(hsm_buf_put_u64(out, (uint64_t)in->created));
	HSM_GUARD(hsm_buf_put_lp(out, in->node_id, strlen(in->node_id)));
	HSM_GUARD(hsm_buf_put_u32(out, in->schema_version));
	HSM_GUARD(hsm_buf_put_u32(out, in->chunk_size));
	HSM_GUARD(hsm_buf_put_u64(out, in->store_bytes));
	HSM_GUARD(hsm_buf_put(out, in->salt, sizeof(in->salt)));
	uint32_t len = (uint32_t)out->len;
	for (int i = 0; i < 4; i++)
		out->data[MAGIC_LEN + 2 + i] = (uint8_t)(len >> (24 - 8 * i));
	return HSM_SUCCESS;
}

static hsm_result get_text(hsm_cursor *c, char *out, size_t cap, const char *what)
{
	const uint8_t *p;
	size_t n;
	HSM_GUARD(hsm_cursor_get_lp(c, cap - 1, &p, &n, HSM_ERR_VALIDATION));
	for (size_t i = 0; i < n; i++)
		HSM_ENSURE(p[i] >= 0x20 && p[i] < 0x7f, HSM_ERR_VALIDATION,
		           "the backup header's %s is malformed", what);
	memcpy(out, p, n);
	out[n] = '\0';
	return HSM_SUCCESS;
}

static hsm_result parse_header(const uint8_t *p, size_t n, hsm_backup_info *out)
{
	hsm_backup_info in;
	hsm_cursor c;
	uint16_t format;
	uint32_t len;
	uint8_t threshold, count;
	uint64_t created;
	const uint8_t *magic;
	memset(&in, 0, sizeof(in));
	hsm_cursor_init(&c, p, n);
	HSM_GUARD(hsm_cursor_get_bytes(&c, MAGIC_LEN, &magic, HSM_ERR_VALIDATION));
	HSM_ENSURE(hsm_ct_equal(magic, MAGIC, MAGIC_LEN), HSM_ERR_VALIDATION,
	           "not an hsmd backup (no backup header)");
	HSM_GUARD(hsm_cursor_get_u16(&c, &format, HSM_ERR_VALIDATION));
	HSM_ENSURE(format == HSM_BACKUP_FORMAT, HSM_ERR_VALIDATION,
	           "backup format %u is not one this hsmd reads (format %d)", format,
	           HSM_BACKUP_FORMAT);
	HSM_GUARD(hsm_cursor_get_u32(&c, &len, HSM_ERR_VALIDATION));
	HSM_ENSURE(len == n, HSM_ERR_VALIDATION, "the backup header's length is inconsistent");
	HSM_GUARD(get_text(&c, in.identity.store_id, sizeof(in.identity.store_id), "store id"));
	HSM_GUARD(hsm_cursor_copy(&c, in.identity.set_id, sizeof(in.identity.set_id),
	                          HSM_ERR_VALIDATION));
	HSM_GUARD(hsm_cursor_get_u8(&c, &threshold, HSM_ERR_VALIDATION));
	HSM_GUARD(hsm_cursor_get_u8(&c, &count, HSM_ERR_VALIDATION));
	in.identity.threshold = threshold;
	in.identity.count = count;
	HSM_GUARD(hsm_cursor_copy(&c, in.identity.kcv, sizeof(in.identity.kcv), HSM_ERR_VALIDATION));
	HSM_GUARD(get_text(&c, in.backup_id, sizeof(in.backup_id), "backup id"));
	HSM_GUARD(hsm_cursor_get_u64(&c, &created, HSM_ERR_VALIDATION));
	in.created = (int64_t)created;
	HSM_GUARD(get_text(&c, in.node_id, sizeof(in.node_id), "node id"));
	HSM_GUARD(hsm_cursor_get_u32(&c, &in.schema_version, HSM_ERR_VALIDATION));
	HSM_GUARD(hsm_cursor_get_u32(&c, &in.chunk_size, HSM_ERR_VALIDATION));
	HSM_GUARD(hsm_cursor_get_u64(&c, &in.store_bytes, HSM_ERR_VALIDATION));
	HSM_GUARD(hsm_cursor_copy(&c, in.salt, sizeof(in.salt), HSM_ERR_VALIDATION));
	HSM_GUARD(hsm_cursor_expect_end(&c, HSM_ERR_VALIDATION));
	HSM_ENSURE(hsm_is_uuid(in.identity.store_id) && hsm_is_uuid(in.backup_id),
	           HSM_ERR_VALIDATION, "the backup header's identifiers are malformed");
	HSM_ENSURE(threshold >= 1 && threshold <= count && count <= HSM_MAX_SHARES,
	           HSM_ERR_VALIDATION, "the backup header's quorum is malformed");
	HSM_ENSURE(in.chunk_size >= CHUNK_MIN && in.chunk_size <= CHUNK_MAX, HSM_ERR_VALIDATION,
	           "the backup header's chunk size is out of range");
	HSM_ENSURE(in.store_bytes >= 1 && in.store_bytes <= STORE_BYTES_MAX && in.created > 0,
	           HSM_ERR_VALIDATION, "the backup header's sizes or time are out of range");
	*out = in;
	return HSM_SUCCESS;
}

/* Reads and parses the header at the start of fd; raw receives its bytes (the AAD). */
static hsm_result read_header(int fd, const char *path, hsm_buf *raw, hsm_backup_info *out)
{
	uint8_t *p;
	size_t got;
	HSM_GUARD(hsm_buf_append_space(raw, PREFIX_LEN, &p));
	HSM_GUARD(read_upto(fd, p, PREFIX_LEN, &got, path));
	HSM_ENSURE(got == PREFIX_LEN && hsm_ct_equal(p, MAGIC, MAGIC_LEN), HSM_ERR_VALIDATION,
	           "%s is not an hsmd backup (no backup header)", path);
	uint32_t len = (uint32_t)p[MAGIC_LEN + 2] << 24 | (uint32_t)p[MAGIC_LEN + 3] << 16 |
	               (uint32_t)p[MAGIC_LEN + 4] << 8 | (uint32_t)p[MAGIC_LEN + 5];
	HSM_ENSURE(len > PREFIX_LEN && len <= HEADER_MAX, HSM_ERR_VALIDATION,
	           "%s: the backup header's length is out of range", path);
	HSM_GUARD(hsm_buf_append_space(raw, len - PREFIX_LEN, &p));
	HSM_GUARD(read_upto(fd, p, len - PREFIX_LEN, &got, path));
	HSM_ENSURE(got == len - PREFIX_LEN, HSM_ERR_VALIDATION, "%s: the backup header is truncated",
	           path);
	hsm_result r = parse_header(raw->data, raw->len, out);
	if (hsm_failed(r)) {
		char why[HSM_ERRMSG_MAX]; /* the message is rewritten in its own buffer */
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		return HSM_FAIL(HSM_ERR_VALIDATION, "%s: %s", path, why);
	}
	return HSM_SUCCESS;
}

static uint64_t chunk_count(const hsm_backup_info *in)
{
	return (in->store_bytes + in->chunk_size - 1) / in->chunk_size;
}

/* ---- create -------------------------------------------------------------------------- */

static hsm_result file_name(const hsm_backup_info *in, char *out, size_t cap)
{
	char t[21], compact[17];
	hsm_format_time(in->created, t); /* 2026-11-29T01:30:12Z */
	size_t j = 0;
	for (size_t i = 0; t[i] != '\0' && j + 1 < sizeof(compact); i++)
		if (t[i] != '-' && t[i] != ':')
			compact[j++] = t[i];
	compact[j] = '\0';
	int n = snprintf(out, cap, "hsmd-%s-%s-%.8s%s", in->identity.store_id, compact, in->backup_id,
	                 HSM_BACKUP_SUFFIX);
	HSM_ENSURE(n > 0 && (size_t)n < cap, HSM_ERR_INTERNAL, "backup file name too long");
	return HSM_SUCCESS;
}

/* Encrypts the store copy at `plain` into the open file fd. */
static hsm_result encrypt_into(int fd, const char *out_path, const char *plain,
                               hsm_keystore *ks, hsm_ks_backup_cipher *cipher,
                               const hsm_buf *header, const hsm_backup_info *in)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf ct = {0};
	uint8_t *pt = malloc(in->chunk_size);
	int src = open(plain, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	HSM_CHECK(pt != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_CHECK(src >= 0, HSM_ERR_IO, "cannot open the store copy %s: %s", plain, strerror(errno));
	HSM_TRY(write_all(fd, header->data, header->len, out_path));
	uint64_t left = in->store_bytes, n = chunk_count(in);
	for (uint64_t i = 0; i < n; i++) {
		size_t want = left < in->chunk_size ? (size_t)left : in->chunk_size, got;
		HSM_TRY(read_upto(src, pt, want, &got, plain));
		HSM_CHECK(got == want, HSM_ERR_IO, "the store copy %s changed while it was read", plain);
		/* A seal wipes every key: the file's key must not outlive it either. */
		HSM_CHECK(hsm_keystore_state(ks) == HSM_NODE_UNSEALED, HSM_ERR_SEALED,
		          "hsmd was sealed during the backup");
		hsm_buf_clear(&ct);
		HSM_TRY(hsm_ks_backup_seal(cipher, i, header->data, header->len, pt, want, &ct));
		HSM_TRY(write_all(fd, ct.data, ct.len, out_path));
		left -= want;
	}
out:
	if (src >= 0)
		close(src);
	free(pt);
	hsm_buf_free(&ct);
	return res;
}

static hsm_result make_info(const hsm_backup_request *req, hsm_backup_info *in)
{
	memset(in, 0, sizeof(*in));
	hsm_keystore_identity(req->ks, &in->identity);
	HSM_ENSURE(hsm_is_uuid(in->identity.store_id), HSM_ERR_SEALED,
	           "hsmd is not initialized: nothing to back up");
	HSM_GUARD(hsm_uuid_new(in->backup_id));
	HSM_GUARD(hsm_random_bytes(in->salt, sizeof(in->salt)));
	/* What the reader would refuse must not be written (parse_header). */
	HSM_ENSURE(req->now > 0, HSM_ERR_VALIDATION, "backup time out of range");
	in->created = req->now;
	HSM_GUARD(hsm_strcpy(in->node_id, sizeof(in->node_id), req->node_id ? req->node_id : ""));
	for (const char *p = in->node_id; *p != '\0'; p++)
		HSM_ENSURE(*p >= 0x20 && *p < 0x7f, HSM_ERR_VALIDATION,
		           "the node id must be printable ASCII to be written in a backup");
	/* The copy's schema, which restoring needs, not the backend's number (a PostgreSQL
	 * store's copy is a SQLite store). */
	in->schema_version = (uint32_t)hsm_store_snapshot_schema(req->store);
	in->chunk_size = req->chunk_size ? req->chunk_size : CHUNK_DEFAULT;
	HSM_ENSURE(in->chunk_size >= CHUNK_MIN && in->chunk_size <= CHUNK_MAX, HSM_ERR_VALIDATION,
	           "backup chunk size out of range");
	return HSM_SUCCESS;
}

hsm_result hsm_backup_create(const hsm_backup_request *req, char *path, size_t cap,
                             hsm_backup_info *info)
{
	hsm_result res = HSM_SUCCESS;
	hsm_backup_info in;
	hsm_ks_backup_cipher *cipher = NULL;
	hsm_buf header = {0};
	char plain[4096] = "", name[160], tmp[4096] = "", final[4096];
	int fd = -1;
	struct stat st;
	HSM_TRY(make_info(req, &in));
	if (req->backup_id != NULL) {
		HSM_CHECK(hsm_is_uuid(req->backup_id), HSM_ERR_VALIDATION, "a backup id is a UUID");
		HSM_TRY(hsm_strcpy(in.backup_id, sizeof(in.backup_id), req->backup_id));
	}
	/* Sealed: fails here, before any copy of the store is made. */
	HSM_TRY(hsm_ks_backup_cipher_new(req->ks, in.salt, &cipher));
	HSM_TRY(hsm_mkdir_p(req->dir));
	HSM_TRY(file_name(&in, name, sizeof(name)));
	HSM_TRY(join(final, sizeof(final), req->dir, name));
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.part", req->dir, name) >= sizeof(tmp) ||
	    (size_t)snprintf(plain, sizeof(plain), "%s/.backup-%s.db", req->work_dir,
	                     in.backup_id) >= sizeof(plain)) {
		tmp[0] = plain[0] = '\0'; /* nothing of ours to remove under a cut-off name */
		res = HSM_FAIL(HSM_ERR_VALIDATION, "the backup or data directory path is too long");
		goto out;
	}
	HSM_TRY(hsm_store_snapshot(req->store, plain));
	HSM_CHECK(stat(plain, &st) == 0, HSM_ERR_IO, "cannot stat %s: %s", plain, strerror(errno));
	HSM_CHECK(st.st_size > 0, HSM_ERR_STORE, "the store copy is empty");
	in.store_bytes = (uint64_t)st.st_size;
	HSM_TRY(encode_header(&in, &header));
	HSM_TRY(open_new_locked(tmp, &fd));
	HSM_TRY(encrypt_into(fd, tmp, plain, req->ks, cipher, &header, &in));
	in.whole_bytes = header.len + in.store_bytes + chunk_count(&in) * HSM_GCM_TAG_LEN;
	in.file_bytes = in.whole_bytes;
	res = publish(fd, tmp, final, req->dir);
	fd = -1;
	if (hsm_failed(res))
		goto out;
	HSM_TRY(hsm_strcpy(path, cap, final));
	*info = in;
out:
	if (fd >= 0)
		close(fd);
	if (tmp[0] != '\0')
		unlink(tmp);
	if (plain[0] != '\0')
		unlink(plain);
	hsm_ks_backup_cipher_free(cipher);
	hsm_buf_free(&header);
	return res;
}

/*
 * Deletes the files in dir whose names start with prefix and end with suffix,
 * except those another process holds locked: a backup directory may be shared
 * by the nodes of one store, and one of them may be writing its backup there.
 */
static void remove_matching(const char *dir, const char *prefix, const char *suffix)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	size_t np = strlen(prefix), ns = strlen(suffix);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		char path[4096];
		if (n < np + ns || strncmp(de->d_name, prefix, np) != 0 ||
		    strcmp(de->d_name + n - ns, suffix) != 0 ||
		    hsm_failed(join(path, sizeof(path), dir, de->d_name)))
			continue;
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
			close(fd); /* being written */
			continue;
		}
		if (unlink(path) == 0)
			hsm_warn("removed %s, left by a backup that did not finish", path);
		if (fd >= 0)
			close(fd);
	}
	closedir(d);
}

/*
 * A store that is not a SQLite file (PostgreSQL) is copied into a SQLite
 * store in a directory beside the snapshot's path, <path>.tmp-XXXXXX: removes
 * such directories of .backup-*.db paths, with the files opening a store
 * left in them (the directory holds nothing else).
 */
static void remove_snapshot_dirs(const char *work_dir)
{
	static const char *const names[] = {HSM_STORE_DB_FILE, HSM_STORE_DB_FILE "-wal",
	                                    HSM_STORE_DB_FILE "-shm", HSM_STORE_DB_FILE "-journal",
	                                    "hsmd.lock"};
	DIR *d = opendir(work_dir);
	if (d == NULL)
		return;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char path[4096], file[4200];
		if (strncmp(de->d_name, ".backup-", 8) != 0 || strstr(de->d_name, ".db.tmp-") == NULL ||
		    hsm_failed(join(path, sizeof(path), work_dir, de->d_name)))
			continue;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (hsm_ok(join(file, sizeof(file), path, names[i])))
				unlink(file);
		if (rmdir(path) == 0)
			hsm_warn("removed %s, left by a backup that did not finish", path);
	}
	closedir(d);
}

void hsm_backup_remove_leftovers(const char *dir, const char *work_dir)
{
	remove_matching(work_dir, ".backup-", ".db");
	/* SQLite's rollback journal of a copy cut short: nothing opens that copy again. */
	remove_matching(work_dir, ".backup-", ".db-journal");
	remove_snapshot_dirs(work_dir);
	remove_matching(dir, ".", HSM_BACKUP_SUFFIX ".part");
}

/* ---- read ------------------------------------------------------------------------------ */

hsm_result hsm_backup_read_info(const char *path, hsm_backup_info *out)
{
	hsm_buf raw = {0};
	struct stat st;
	/* O_NONBLOCK: a FIFO named like a backup (in a directory others may write to) would
	 * block this open for ever, and the lane thread with it; only a regular file is read. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return HSM_FAIL(HSM_ERR_IO, "%s is not a regular file", path);
	}
	hsm_result res = read_header(fd, path, &raw, out);
	if (hsm_ok(res)) {
		out->whole_bytes = raw.len + out->store_bytes + chunk_count(out) * HSM_GCM_TAG_LEN;
		if (fstat(fd, &st) == 0)
			out->file_bytes = (uint64_t)st.st_size;
	}
	close(fd);
	hsm_buf_free(&raw);
	return res;
}

static hsm_result decrypt_chunks(int fd, const char *path, int out_fd, const char *out_path,
                                 hsm_ks_backup_cipher *cipher, const hsm_buf *header,
                                 const hsm_backup_info *in)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf pt;
	hsm_buf_init_secure(&pt); /* the AEAD's rule for what it decrypts */
	uint8_t *ct = malloc((size_t)in->chunk_size + HSM_GCM_TAG_LEN), extra;
	HSM_CHECK(ct != NULL, HSM_ERR_NOMEM, "out of memory");
	uint64_t left = in->store_bytes, n = chunk_count(in);
	for (uint64_t i = 0; i < n; i++) {
		size_t want = (left < in->chunk_size ? (size_t)left : in->chunk_size) + HSM_GCM_TAG_LEN;
		size_t got;
		HSM_TRY(read_upto(fd, ct, want, &got, path));
		HSM_CHECK(got == want, HSM_ERR_INVALID_CIPHERTEXT,
		          "%s is truncated: it ends in chunk %llu of %llu", path,
		          (unsigned long long)i + 1, (unsigned long long)n);
		hsm_buf_clear(&pt);
		HSM_TRY(hsm_ks_backup_open(cipher, i, header->data, header->len, ct, want, &pt));
		if (out_fd >= 0)
			HSM_TRY(write_all(out_fd, pt.data, pt.len, out_path));
		left -= want - HSM_GCM_TAG_LEN;
	}
	size_t got;
	HSM_TRY(read_upto(fd, &extra, 1, &got, path));
	HSM_CHECK(got == 0, HSM_ERR_INVALID_CIPHERTEXT, "%s has data after its last chunk", path);
out:
	free(ct);
	hsm_buf_free(&pt);
	return res;
}

hsm_result hsm_backup_decrypt(const char *path, hsm_keystore *ks, const char *out_path,
                              hsm_backup_info *info)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf header = {0};
	hsm_backup_info in;
	hsm_ks_identity id;
	hsm_ks_backup_cipher *cipher = NULL;
	int out_fd = -1;
	bool made = false;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	HSM_CHECK(fd >= 0, HSM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
	HSM_TRY(read_header(fd, path, &header, &in));
	hsm_keystore_identity(ks, &id);
	HSM_CHECK(strcmp(id.store_id, in.identity.store_id) == 0, HSM_ERR_CONFLICT,
	          "%s is a backup of store %s, not of store %s", path, in.identity.store_id,
	          id.store_id);
	HSM_TRY(hsm_ks_backup_cipher_new(ks, in.salt, &cipher));
	if (out_path != NULL) {
		HSM_TRY(open_new(out_path, &out_fd));
		made = true;
	}
	HSM_TRY(decrypt_chunks(fd, path, out_fd, out_path, cipher, &header, &in));
	if (out_fd >= 0) {
		res = sync_close(out_fd, out_path);
		out_fd = -1;
		if (hsm_failed(res))
			goto out;
	}
	struct stat st;
	if (fstat(fd, &st) == 0)
		in.file_bytes = (uint64_t)st.st_size;
	in.whole_bytes = header.len + in.store_bytes + chunk_count(&in) * HSM_GCM_TAG_LEN;
	*info = in;
	made = false;
out:
	if (out_fd >= 0)
		close(out_fd);
	if (made)
		unlink(out_path);
	if (fd >= 0)
		close(fd);
	hsm_ks_backup_cipher_free(cipher);
	hsm_buf_free(&header);
	return res;
}

/* ---- list, prune, copy -------------------------------------------------------------------- */

typedef struct entry {
	char *path;
	hsm_backup_info info;
} entry;

typedef struct entries {
	entry *v;
	size_t n, cap;
} entries;

static void entries_free(entries *e)
{
	for (size_t i = 0; i < e->n; i++)
		free(e->v[i].path);
	free(e->v);
	memset(e, 0, sizeof(*e));
}

static int entry_cmp(const void *a, const void *b)
{
	const entry *x = a, *y = b;
	if (x->info.created != y->info.created)
		return x->info.created < y->info.created ? -1 : 1;
	return strcmp(x->path, y->path);
}

static bool is_backup_name(const char *name)
{
	size_t n = strlen(name), s = strlen(HSM_BACKUP_SUFFIX);
	return name[0] != '.' && n > s && strcmp(name + n - s, HSM_BACKUP_SUFFIX) == 0;
}

static hsm_result add_entry(entries *e, const char *path, const hsm_backup_info *info)
{
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 16;
		entry *v = realloc(e->v, cap * sizeof(*v));
		HSM_ENSURE(v != NULL, HSM_ERR_NOMEM, "out of memory");
		e->v = v;
		e->cap = cap;
	}
	char *p = strdup(path);
	HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
	e->v[e->n].path = p;
	e->v[e->n].info = *info;
	e->n++;
	return HSM_SUCCESS;
}

static hsm_result collect(const char *dir, const char *store_id, entries *out)
{
	hsm_result res = HSM_SUCCESS;
	DIR *d = opendir(dir);
	if (d == NULL && errno == ENOENT)
		return HSM_SUCCESS;
	HSM_ENSURE(d != NULL, HSM_ERR_IO, "cannot read the backup directory %s: %s", dir,
	           strerror(errno));
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		char path[4096];
		hsm_backup_info info;
		if (!is_backup_name(de->d_name))
			continue;
		HSM_TRY(join(path, sizeof(path), dir, de->d_name));
		if (hsm_failed(hsm_backup_read_info(path, &info))) {
			hsm_warn("backup directory: %s is not a readable backup: %s", path,
			         hsm_last_message());
			continue;
		}
		if (store_id != NULL && strcmp(info.identity.store_id, store_id) != 0)
			continue;
		if (info.file_bytes != info.whole_bytes) {
			hsm_warn("backup directory: %s is not a whole backup: %llu bytes, where its "
			         "header says %llu (cut short, or damaged); it is neither listed nor "
			         "deleted",
			         path, (unsigned long long)info.file_bytes,
			         (unsigned long long)info.whole_bytes);
			continue;
		}
		HSM_TRY(add_entry(out, path, &info));
	}
	if (out->n > 1)
		qsort(out->v, out->n, sizeof(out->v[0]), entry_cmp);
out:
	closedir(d);
	return res;
}

hsm_result hsm_backup_list(const char *dir, const char *store_id, hsm_backup_cb cb, void *arg)
{
	hsm_result res = HSM_SUCCESS;
	entries e = {0};
	HSM_TRY(collect(dir, store_id, &e));
	for (size_t i = 0; i < e.n; i++)
		HSM_TRY(cb(e.v[i].path, &e.v[i].info, arg));
out:
	entries_free(&e);
	return res;
}

hsm_result hsm_backup_prune(const char *dir, const char *store_id, uint32_t retention_days,
                            int64_t now, size_t keep, size_t *removed, hsm_buf *names)
{
	hsm_result res = HSM_SUCCESS;
	entries e = {0};
	size_t count = 0;
	int64_t cutoff = now - (int64_t)retention_days * 86400;
	HSM_TRY(collect(dir, store_id, &e));
	if (keep == 0)
		keep = 1;
	/* Sorted oldest first: those dated in the future are last, and stay apart. */
	size_t dated = e.n;
	while (dated > 0 && e.v[dated - 1].info.created > now + HSM_BACKUP_FUTURE_SLACK_S)
		dated--;
	for (size_t i = dated; i < e.n; i++) {
		char when[21];
		hsm_format_time(e.v[i].info.created, when);
		hsm_warn("backup %s is dated %s, ahead of this clock: it is neither deleted nor counted "
		         "among the %zu newest kept; check the clock that made it, and delete it by "
		         "hand if it is not wanted",
		         e.v[i].path, when, keep);
	}
	/* Of the others, the `keep` newest (last) always stay. */
	for (size_t i = 0; i + keep < dated; i++) {
		if (e.v[i].info.created >= cutoff)
			continue;
		HSM_CHECK(unlink(e.v[i].path) == 0 || errno == ENOENT, HSM_ERR_IO,
		          "cannot delete the expired backup %s: %s", e.v[i].path, strerror(errno));
		hsm_info("deleted backup %s (older than %u days)", e.v[i].path, retention_days);
		count++;
		if (names != NULL) {
			if (names->len > 0)
				HSM_TRY(hsm_buf_put_u8(names, ','));
			HSM_TRY(hsm_buf_put_str(names, hsm_path_base(e.v[i].path)));
		}
	}
	if (count > 0)
		HSM_TRY(hsm_fsync_dir(dir));
out:
	if (removed != NULL)
		*removed = count;
	entries_free(&e);
	return res;
}

hsm_result hsm_backup_copy(const char *path, const char *dir)
{
	return hsm_copy_file_into(path, dir);
}
