/*
 * audit_io.c - the writer's file operations: write, fsync, new files,
 * recovery after a failure; and retention, which the sweeper thread runs.
 * Every step of the writer's that can block runs between audit_op_begin and
 * audit_op_end, so the watchdog can bound it.
 */
#include "audit/audit_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/encoding.h"
#include "common/log.h"
#include "common/util.h"

#define MS_PER_DAY (86400LL * 1000)

void audit_op_begin(hsm_audit *a, const audit_cbent *cbs, size_t n)
{
	pthread_mutex_lock(&a->mu);
	uint64_t now = hsm_mono_ns();
	a->op_start_ns = now != 0 ? now : 1;
	a->op_timed_out = false;
	a->inflight = n > 0 ? cbs : NULL;
	a->n_inflight = n;
	pthread_mutex_unlock(&a->mu);
}

bool audit_op_end(hsm_audit *a)
{
	pthread_mutex_lock(&a->mu);
	bool timed_out = a->op_timed_out;
	a->op_start_ns = 0;
	a->op_timed_out = false;
	a->inflight = NULL;
	a->n_inflight = 0;
	pthread_mutex_unlock(&a->mu);
	return !timed_out;
}

static int hook(hsm_audit *a, hsm_audit_io_op op)
{
	return a->cfg.test_io_hook ? a->cfg.test_io_hook(a->cfg.test_io_arg, op) : 0;
}

static hsm_result io_fail(hsm_audit *a, int err, const char *what)
{
	a->w.last_errno = err;
	return HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE, "audit log %s failed: %s", what, strerror(err));
}

/* io_fail for an open of the file at path (a symbolic link in its place said as such). */
static hsm_result open_fail(hsm_audit *a, int err, const char *what, const char *path)
{
	a->w.last_errno = err;
	return HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE, "audit log %s failed: %s: %s", what, path,
	                hsm_own_file_error(err));
}

/*
 * Whether fd is still the live file: named by path (not deleted, renamed away
 * or replaced) and len bytes long (exact) or at least that (!exact: a
 * background sync, while the writer may write on).  0 or an errno.
 */
int audit_io_check_file(int fd, const char *path, uint64_t len, bool exact)
{
	struct stat st, named;
	if (fstat(fd, &st) != 0)
		return errno != 0 ? errno : EIO;
	if (st.st_nlink == 0 || lstat(path, &named) != 0 || named.st_dev != st.st_dev ||
	    named.st_ino != st.st_ino) {
		hsm_error("audit file %s was deleted, renamed or replaced while hsmd wrote it", path);
		return ESTALE;
	}
	if ((uint64_t)st.st_size < len) {
		hsm_error("audit file %s was cut to %lld bytes while hsmd wrote it (%llu written)", path,
		          (long long)st.st_size, (unsigned long long)len);
		return EIO;
	}
	if (exact && (uint64_t)st.st_size > len) {
		hsm_error("audit file %s grew to %lld bytes while hsmd wrote it (%llu written): "
		          "something else wrote to it",
		          path, (long long)st.st_size, (unsigned long long)len);
		return EIO;
	}
	return 0;
}

/*
 * Writes at the offset the writer knows (never O_APPEND: a file cut under it
 * would take the next lines at its new end, and hide the cut), after checking
 * that the file is still the live one and as long as what was written: no
 * batch lands in a file that was cut, moved or replaced (one fstat and one
 * stat per batch).
 */
hsm_result audit_io_write(hsm_audit *a)
{
	audit_writer *w = &a->w;
	if (w->fd < 0)
		return io_fail(a, EBADF, "write");
	if (w->written < w->pending.len) {
		int e = audit_io_check_file(w->fd, w->path, w->synced_off + w->written, true);
		if (e != 0)
			return io_fail(a, e, "write");
	}
	while (w->written < w->pending.len) {
		int e = hook(a, HSM_AUDIT_IO_WRITE);
		if (e != 0)
			return io_fail(a, e, "write");
		ssize_t n = pwrite(w->fd, w->pending.data + w->written, w->pending.len - w->written,
		                   (off_t)(w->synced_off + w->written));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return io_fail(a, n < 0 ? errno : EIO, "write");
		w->written += (size_t)n;
	}
	return HSM_SUCCESS;
}

hsm_result audit_io_sync(hsm_audit *a)
{
	audit_writer *w = &a->w;
	if (w->fd < 0 || w->written != w->pending.len)
		return io_fail(a, EIO, "sync");
	int e = audit_io_fdatasync(a, w->fd);
	if (e == 0)
		e = audit_io_check_file(w->fd, w->path, w->synced_off + w->pending.len, false);
	if (e != 0)
		return io_fail(a, e, "sync");
	w->synced_off += w->pending.len;
	w->pending.len = 0;
	w->written = 0;
	atomic_store(&a->durable_seq_pub, w->next_seq);
	return HSM_SUCCESS;
}

const double hsm_audit_sync_bucket_le[HSM_AUDIT_SYNC_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5};

/* Counts one sync of ns nanoseconds (any thread). */
static void count_sync(hsm_audit *a, uint64_t ns)
{
	atomic_fetch_add_explicit(&a->sync_ns, ns, memory_order_relaxed);
	double s = (double)ns / 1e9;
	size_t b = 0;
	while (b < HSM_AUDIT_SYNC_BUCKETS && s > hsm_audit_sync_bucket_le[b])
		b++;
	atomic_fetch_add_explicit(&a->sync_buckets[b], 1, memory_order_relaxed);
}

int audit_io_fdatasync(hsm_audit *a, int fd)
{
	uint64_t t0 = hsm_mono_ns();
	int e = hook(a, HSM_AUDIT_IO_SYNC);
	if (e == 0 && fdatasync(fd) != 0)
		e = errno != 0 ? errno : EIO;
	count_sync(a, hsm_mono_ns() - t0);
	return e;
}

void audit_io_keep_reserve(hsm_audit *a)
{
	audit_writer *w = &a->w;
	if (w->fd < 0 || w->reserve_unsupported)
		return;
	uint64_t end = w->synced_off + w->written;
	bool low = atomic_load(&a->low_space);
	if (!low && w->reserved_to >= end + AUDIT_RESERVE_BYTES / 2)
		return;
	uint64_t now = hsm_mono_ns();
	if (low && now < w->reserve_retry_ns)
		return;
	int e = hook(a, HSM_AUDIT_IO_RESERVE);
	if (e == 0 &&
	    fallocate(w->fd, FALLOC_FL_KEEP_SIZE, (off_t)end, (off_t)AUDIT_RESERVE_BYTES) != 0)
		e = errno;
	if (e == EOPNOTSUPP || e == ENOSYS) {
		w->reserve_unsupported = true;
		atomic_store(&a->low_space, false);
		hsm_warn("audit: the file system of %s cannot allocate space ahead of a file; a full "
		         "disk may then lose the records of requests already served",
		         a->dir);
		return;
	}
	if (e == 0) {
		w->reserved_to = end + AUDIT_RESERVE_BYTES;
		if (low) {
			atomic_store(&a->low_space, false);
			w->low_ended = true; /* the writer records the spell (audit_writer.c) */
			hsm_info("audit: room for the trail again; serving requests");
		}
		return;
	}
	w->reserve_retry_ns = now + a->cfg.retry_interval_ms * NS_PER_MS;
	if (!low) {
		w->low_since_ns = now;
		atomic_store(&a->refused_low, 0);
		atomic_store(&a->low_space, true);
		hsm_error("audit: cannot keep %llu MiB free ahead of the trail in %s (%s); refusing "
		          "requests until there is room (the records of those already served are "
		          "written into the space kept)",
		          (unsigned long long)(AUDIT_RESERVE_BYTES >> 20), a->dir, strerror(e));
	}
}

void audit_io_close(hsm_audit *a)
{
	audit_writer *w = &a->w;
	if (w->fd < 0)
		return;
	uint64_t end = w->synced_off + w->written;
	/* The space kept ahead goes back to the file system: the file ends where it ends. */
	if (w->reserved_to > end)
		(void)fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)end,
		                (off_t)(w->reserved_to - end));
	close(w->fd);
	w->fd = -1;
	w->reserved_to = 0;
}

/*
 * Before a new file after a failure: the directory's .lock must still be the
 * one this log holds.  A directory deleted and made again under the running
 * node has a new one (or none yet), which another process may hold: two
 * writers would interleave their chains in one file.  The log takes the new
 * lock, or stays failed and tries again later.
 */
static hsm_result relock(hsm_audit *a)
{
	char path[PATH_MAX];
	HSM_ENSURE((size_t)snprintf(path, sizeof(path), "%s/.lock", a->dir) < sizeof(path),
	           HSM_ERR_VALIDATION, "audit directory path too long");
	struct stat held, named;
	if (a->lock_fd >= 0 && fstat(a->lock_fd, &held) == 0 && lstat(path, &named) == 0 &&
	    held.st_dev == named.st_dev && held.st_ino == named.st_ino)
		return HSM_SUCCESS;
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return open_fail(a, errno, "lock", path);
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		close(fd);
		return io_fail(a, e == EWOULDBLOCK ? EBUSY : e, "lock");
	}
	if (a->lock_fd >= 0)
		close(a->lock_fd);
	a->lock_fd = fd;
	hsm_warn("audit directory %s was made again under the running log: its lock is taken again",
	         a->dir);
	return HSM_SUCCESS;
}

/*
 * The records from..(first in pending - 1) of the current file are lost with
 * it (all synced once): notes their range, joined to one not yet recorded.
 */
static void note_lost(audit_writer *w, uint64_t from)
{
	uint64_t end = w->pending.len > 0 ? w->pending_first_seq : w->next_seq;
	if (end <= from)
		return;
	if (w->lost_last == 0 || from < w->lost_first)
		w->lost_first = from;
	if (end - 1 > w->lost_last)
		w->lost_last = end - 1;
}

/* The SHA-256 of the last synced line: the prev of pending's first, or the head. */
static bool synced_head(const audit_writer *w, uint8_t out[AUDIT_HASH_LEN])
{
	if (w->pending.len == 0) {
		memcpy(out, w->head, AUDIT_HASH_LEN);
		return true;
	}
	/* audit_format_line ends every line with ,"prev":"<64 hex>"} */
	const uint8_t *nl = memchr(w->pending.data, '\n', w->pending.len);
	size_t n = nl != NULL ? (size_t)(nl - w->pending.data) : 0;
	if (n < AUDIT_HASH_HEX + 2)
		return false;
	return hsm_ok(hsm_hex_decode_exact(out, AUDIT_HASH_LEN,
	                                   (const char *)w->pending.data + n - 2 - AUDIT_HASH_HEX,
	                                   AUDIT_HASH_HEX, HSM_ERR_VALIDATION));
}

/*
 * The live file was cut (or cut and written to by someone else): which of
 * its synced records are still there, whole and chained?  *kept: the last
 * one (none: the file's first seq - 1, at offset 0).  True when every synced
 * record is: the line that ends at synced_off is the last synced record,
 * byte for byte, so only bytes not yet synced went (written again in place).
 */
static bool synced_intact(hsm_audit *a, uint64_t size, audit_kept_record *kept)
{
	audit_writer *w = &a->w;
	uint64_t last = (w->pending.len > 0 ? w->pending_first_seq : w->next_seq) - 1;
	uint8_t want[AUDIT_HASH_LEN];
	if (w->synced_off == 0 || last < w->file_first_seq) {
		memset(kept, 0, sizeof(*kept));
		kept->seq = w->file_first_seq - 1;
		return true; /* nothing synced in this file */
	}
	uint64_t limit = size < w->synced_off ? size : w->synced_off;
	if (!audit_last_record_in(w->fd, limit, w->file_first_seq, last, kept))
		kept->found = false;
	if (!kept->found) {
		kept->seq = w->file_first_seq - 1;
		kept->end = 0;
		return false;
	}
	return kept->seq == last && kept->end == w->synced_off && synced_head(w, want) &&
	       hsm_ct_equal(kept->hash, want, AUDIT_HASH_LEN);
}

/*
 * How far fd's bytes from offset off on are pending's first n bytes, byte
 * for byte: *from, where they first differ (off + n: none does).  The file
 * must hold them all (shorter than that: cut meanwhile, EIO).  An errno
 * when the file cannot be read, else 0.
 */
static int pending_prefix(const audit_writer *w, int fd, uint64_t off, uint64_t n, uint64_t *from)
{
	uint8_t buf[4096];
	*from = off;
	for (uint64_t done = 0; done < n;) {
		size_t want = n - done < sizeof(buf) ? (size_t)(n - done) : sizeof(buf);
		ssize_t r = pread(fd, buf, want, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? errno : EIO;
		for (size_t i = 0; i < (size_t)r; i++) {
			if (buf[i] != w->pending.data[done + i]) {
				*from = off + done + i;
				return 0;
			}
		}
		done += (uint64_t)r;
		*from = off + done;
	}
	return 0;
}

/*
 * Where the bytes hsmd did not write begin in its file of size bytes, which
 * it is about to cut back to cut_to: at cut_to, unless that is synced_off,
 * where hsmd's own writes not yet synced come first (the written part of
 * pending, which it writes again) as far as the file still holds them byte
 * for byte.  Not past them, even where the next bytes happen to equal what
 * hsmd would write there next: it never wrote those.  *from = size: there
 * are none.  An errno when the file cannot be read, else 0.
 */
static int foreign_from(audit_writer *w, uint64_t cut_to, uint64_t size, uint64_t *from)
{
	*from = cut_to < size ? cut_to : size;
	if (cut_to != w->synced_off || size <= cut_to)
		return 0;
	uint64_t n = size - cut_to < w->written ? size - cut_to : w->written;
	return pending_prefix(w, w->fd, cut_to, n, from);
}

/* Copies n bytes of fd from offset off to out (a new file), hashing them into md. */
static int copy_range(int fd, uint64_t off, uint64_t n, int out, EVP_MD_CTX *md)
{
	size_t cap = 65536;
	uint8_t *buf = malloc(cap);
	int e = buf == NULL ? ENOMEM : 0;
	for (uint64_t done = 0; e == 0 && done < n;) {
		size_t want = n - done < cap ? (size_t)(n - done) : cap;
		ssize_t r = pread(fd, buf, want, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			e = r < 0 ? errno : EIO;
			break;
		}
		if (EVP_DigestUpdate(md, buf, (size_t)r) != 1) {
			e = ENOMEM;
			break;
		}
		for (ssize_t put = 0; e == 0 && put < r;) {
			ssize_t k = write(out, buf + put, (size_t)(r - put));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				e = k < 0 ? errno : EIO;
			else
				put += k;
		}
		done += (uint64_t)r;
	}
	free(buf);
	return e;
}

/*
 * Creates <file>.foreign-<offset>-<ms> in the audit directory (never
 * over anything there: O_EXCL, and O_NOFOLLOW against a link planted under
 * that name), mode 0600.  Not audit-SEQ.jsonl: verify, retention and the
 * copies to audit_copy_dir never take it for a file of the trail.  *fd, or
 * an errno.
 */
static int create_side_file(hsm_audit *a, const char *file, uint64_t offset, char path[PATH_MAX],
                            int *fd)
{
	int e = EEXIST;
	long long ms = (long long)audit_now_ms(a);
	for (int tries = 0; e == EEXIST && tries < 16; tries++, ms++) {
		if ((size_t)snprintf(path, PATH_MAX, "%s.foreign-%llu-%lld", file,
		                     (unsigned long long)offset, ms) >= PATH_MAX)
			return ENAMETOOLONG;
		*fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		e = *fd >= 0 ? 0 : errno;
	}
	return e;
}

/*
 * Bytes from..size of the file at path (open as fd) that are not hsmd's
 * records are evidence that something else wrote into the trail.  Before
 * the writer cuts them off they are copied aside (the first
 * AUDIT_FOREIGN_KEEP_MAX of them), synced, and noted for AuditForeignBytes.
 * Nothing is cut before they are kept: on failure the log stays failed and
 * tries again.
 */
static hsm_result keep_aside(hsm_audit *a, int fd, const char *path, uint64_t from, uint64_t size)
{
	audit_writer *w = &a->w;
	audit_foreign_note note = {.offset = from, .length = size - from};
	note.saved = note.length < AUDIT_FOREIGN_KEEP_MAX ? note.length : AUDIT_FOREIGN_KEEP_MAX;
	char side[PATH_MAX];
	int out = -1;
	int e = hook(a, HSM_AUDIT_IO_FOREIGN);
	if (e == 0)
		e = create_side_file(a, path, from, side, &out);
	if (e == 0 && (hsm_failed(hsm_strcpy(note.file, sizeof(note.file), hsm_path_base(path))) ||
	               hsm_failed(hsm_strcpy(note.saved_to, sizeof(note.saved_to),
	                                     hsm_path_base(side)))))
		e = ENAMETOOLONG;
	if (e == 0 && EVP_DigestInit_ex2(w->md_ctx, w->sha256, NULL) != 1)
		e = ENOMEM;
	if (e == 0)
		e = copy_range(fd, from, note.saved, out, w->md_ctx);
	if (e == 0 && EVP_DigestFinal_ex(w->md_ctx, note.sha256, NULL) != 1)
		e = ENOMEM;
	if (e == 0 && fsync(out) != 0)
		e = errno;
	if (out >= 0 && close(out) != 0 && e == 0)
		e = errno;
	if (e == 0 && hsm_failed(hsm_fsync_dir(a->dir)))
		e = EIO;
	if (e != 0) {
		if (out >= 0)
			(void)unlink(side); /* half a copy: made again whole at the next try */
		hsm_error("audit file %s holds %llu bytes from offset %llu that are not hsmd's records "
		          "as it wrote them, and they cannot be kept aside (%s): nothing is cut, the "
		          "log stays failed",
		          path, (unsigned long long)note.length, (unsigned long long)from, strerror(e));
		return io_fail(a, e, "keeping foreign bytes");
	}
	hsm_error("audit file %s held %llu bytes from offset %llu that are not hsmd's records as "
	          "it wrote them (something else wrote into it): %llu of them kept in %s, then cut "
	          "off the file",
	          path, (unsigned long long)note.length, (unsigned long long)from,
	          (unsigned long long)note.saved, side);
	if (w->n_foreign < AUDIT_FOREIGN_NOTES)
		w->foreign[w->n_foreign++] = note;
	else
		hsm_error("audit: too many findings of foreign bytes wait to be recorded; %s is not "
		          "recorded in the trail",
		          side);
	return HSM_SUCCESS;
}

/*
 * Before the writer cuts its file (size bytes long) back to cut_to: the
 * bytes past cut_to that are not its own (foreign_from) are kept aside.
 */
static hsm_result keep_foreign(hsm_audit *a, uint64_t cut_to, uint64_t size)
{
	audit_writer *w = &a->w;
	uint64_t from = size;
	int e = foreign_from(w, cut_to, size, &from);
	if (e != 0)
		return io_fail(a, e, "read back");
	if (from >= size)
		return HSM_SUCCESS;
	return keep_aside(a, w->fd, w->path, from, size);
}

/*
 * The new file's name (path, opened as fd) may already be taken by a file
 * hsmd did not make there.  Anything but a regular file is refused.  A
 * file that holds the first bytes hsmd is about to write there and nothing
 * else is taken as it is (*held: how many): its live file replaced by a
 * copy of itself (`sed -i`; `cp`, then `mv`) before any record in it was
 * synced, so that the new file, which begins with those records, has its
 * name.  Any other bytes are not hsmd's: kept aside, then cut off.
 */
static hsm_result claim_name(hsm_audit *a, int fd, const char *path, uint64_t *held)
{
	audit_writer *w = &a->w;
	struct stat st;
	*held = 0;
	if (fstat(fd, &st) != 0)
		return io_fail(a, errno, "stat");
	if (!S_ISREG(st.st_mode)) {
		hsm_error("audit file %s is not a regular file: hsmd does not write into it (move "
		          "it away)",
		          path);
		return io_fail(a, EEXIST, "create");
	}
	uint64_t size = (uint64_t)st.st_size, same = 0;
	if (size == 0)
		return HSM_SUCCESS;
	int e = size <= w->pending.len ? pending_prefix(w, fd, 0, size, &same) : 0;
	if (e != 0)
		return io_fail(a, e, "read back");
	if (size <= w->pending.len && same == size) {
		hsm_warn("audit file %s already holds the first %llu bytes hsmd writes there, and "
		         "nothing else (a copy of the live file put in its place before they were "
		         "synced): it goes on in it",
		         path, (unsigned long long)size);
		*held = size;
		return HSM_SUCCESS;
	}
	hsm_error("audit file %s, which hsmd is about to begin, already holds %llu bytes of "
	          "another file",
	          path, (unsigned long long)size);
	HSM_GUARD(keep_aside(a, fd, path, 0, size));
	if (ftruncate(fd, 0) != 0)
		return io_fail(a, errno, "truncate");
	return HSM_SUCCESS;
}

hsm_result audit_io_new_file(hsm_audit *a)
{
	audit_writer *w = &a->w;
	uint64_t first = w->pending.len > 0 ? w->pending_first_seq : w->next_seq;
	char path[PATH_MAX];
	HSM_ENSURE((size_t)snprintf(path, sizeof(path), "%s/" AUDIT_FILE_PREFIX "%020llu" AUDIT_FILE_SUFFIX,
	                            a->dir, (unsigned long long)first) < sizeof(path),
	           HSM_ERR_VALIDATION, "audit directory path too long");
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return open_fail(a, errno, "create", path);
	uint64_t held = 0;
	hsm_result r = claim_name(a, fd, path, &held);
	if (hsm_ok(r) && hsm_failed(hsm_fsync_dir(a->dir)))
		r = io_fail(a, EIO, "directory sync");
	if (hsm_failed(r)) {
		close(fd);
		return r;
	}
	w->fd = fd;
	memcpy(w->path, path, sizeof(path));
	w->synced_off = 0;
	w->written = (size_t)held; /* pending's first bytes, there already */
	w->reserved_to = 0;
	w->file_first_seq = first;
	w->file_opened_ms = audit_now_ms(a);
	audit_io_keep_reserve(a);
	return HSM_SUCCESS;
}

/*
 * After a failed write or fsync nothing past synced_off can be trusted (a
 * partial line, or pages the kernel dropped after a failed fsync).  Cut the
 * file back to synced_off and write pending again: the same bytes, so the
 * sequence and chain stay intact.  A file that lost synced records (cut,
 * deleted, moved or replaced) is not written over: the log goes on in a new
 * file, and the records lost are noted for AuditRecordsLost.
 */
hsm_result audit_io_recover(hsm_audit *a)
{
	audit_writer *w = &a->w;
	if (w->fd >= 0) {
		struct stat st;
		if (fstat(w->fd, &st) != 0)
			return io_fail(a, errno, "stat");
		struct stat named;
		bool moved = lstat(w->path, &named) != 0 || named.st_dev != st.st_dev ||
		             named.st_ino != st.st_ino;
		audit_kept_record kept;
		if (st.st_nlink == 0 || moved) {
			/* Gone from the trail, whatever it still holds: every record of it is lost
			 * to the trail.  Bytes written and not synced are written again in the new
			 * file: cut here, so a file put back does not hold them twice. */
			hsm_error("audit file %s was deleted, renamed or replaced: its records are "
			          "lost to the trail; continuing in a new file",
			          w->path);
			HSM_GUARD(keep_foreign(a, w->synced_off, (uint64_t)st.st_size));
			if ((uint64_t)st.st_size > w->synced_off && ftruncate(w->fd, (off_t)w->synced_off) != 0)
				hsm_warn("audit: cannot cut %s back to its synced records: %s", w->path,
				         strerror(errno));
			note_lost(w, w->file_first_seq);
			audit_io_close(a);
		} else if (!synced_intact(a, (uint64_t)st.st_size, &kept)) {
			/* Cut: the records after the last one left whole are lost, whatever the
			 * size became since.  What follows it is none of the chain's. */
			hsm_error("audit file %s lost synced records after seq %llu; continuing in a new "
			          "file",
			          w->path, (unsigned long long)kept.seq);
			HSM_GUARD(keep_foreign(a, kept.end, (uint64_t)st.st_size));
			if ((uint64_t)st.st_size != kept.end && ftruncate(w->fd, (off_t)kept.end) != 0)
				hsm_warn("audit: cannot cut %s back to its last whole record: %s", w->path,
				         strerror(errno));
			note_lost(w, kept.seq + 1);
			w->synced_off = kept.end; /* the file's end, for the close below */
			w->written = 0;
			audit_io_close(a);
		} else if ((uint64_t)st.st_size != w->synced_off) {
			HSM_GUARD(keep_foreign(a, w->synced_off, (uint64_t)st.st_size));
			if (ftruncate(w->fd, (off_t)w->synced_off) != 0)
				return io_fail(a, errno, "truncate");
			w->reserved_to = 0; /* the cut gave back the space kept ahead too */
		}
	}
	w->written = 0; /* pending is written again from synced_off */
	if (w->fd < 0) {
		HSM_GUARD(relock(a));
		HSM_GUARD(audit_io_new_file(a)); /* or from what the file holds of it already */
	}
	HSM_GUARD(audit_io_write(a));
	return audit_io_sync(a);
}

static hsm_result note_deleted(hsm_buf *deleted, const char *name)
{
	if (deleted->len > 0)
		HSM_GUARD(hsm_buf_put_u8(deleted, ','));
	return hsm_buf_put_str(deleted, name);
}

static void count_copy(hsm_audit *a, bool copied)
{
	pthread_mutex_lock(&a->mu);
	if (copied)
		a->files_copied++;
	else
		a->copy_failures++;
	pthread_mutex_unlock(&a->mu);
}

/* Whether the files at x and y end with the same line (the same place in one log). */
static bool same_end(const char *x, const char *y)
{
	hsm_buf lx = {0}, ly = {0};
	bool same = audit_read_last_line(x, &lx) && audit_read_last_line(y, &ly) &&
	            lx.len == ly.len && hsm_ct_equal(lx.data, ly.data, lx.len);
	hsm_buf_free(&lx);
	hsm_buf_free(&ly);
	return same;
}

typedef enum { COPY_PRESENT, COPY_OTHER_FILE, COPY_FAILED } copy_outcome;

/*
 * Makes sure the closed file name (at path) is in copy_dir: a file there of
 * the same size is its copy (files named up to copied_upto were compared
 * once before; a later one is compared by its last line first, so a copy
 * directory holding another log's file of that name is found); a missing
 * one is copied.  Anything else is left alone and reported.
 */

static copy_outcome copy_closed(hsm_audit *a, const char *name, const char *path)
{
	char dst[PATH_MAX];
	struct stat ss, ds;
	if ((size_t)snprintf(dst, sizeof(dst), "%s/%s", a->copy_dir, name) >= sizeof(dst) ||
	    lstat(path, &ss) != 0 || !S_ISREG(ss.st_mode)) {
		hsm_warn("audit_copy_dir: cannot copy %s", name);
		count_copy(a, false);
		return COPY_FAILED;
	}
	/* lstat: a symbolic link of that name is no copy, whatever it points to. */
	if (lstat(dst, &ds) == 0) {
		bool checked = strcmp(name, a->copied_upto) <= 0;
		if (S_ISREG(ds.st_mode) && ds.st_size == ss.st_size &&
		    (checked || same_end(path, dst))) {
			if (!checked)
				snprintf(a->copied_upto, sizeof(a->copied_upto), "%s", name);
			return COPY_PRESENT;
		}
		hsm_warn("audit_copy_dir: %s is not a copy of the audit file of that name (another "
		         "log's, or changed): left as it is, and the original is kept",
		         dst);
		count_copy(a, false);
		return COPY_OTHER_FILE;
	}
	bool copied = false;
	if (errno != ENOENT)
		hsm_warn("audit_copy_dir: cannot read %s: %s", dst, strerror(errno));
	else if (hsm_failed(hsm_copy_file_into(path, a->copy_dir)))
		hsm_log_failure("copying an audit file to audit_copy_dir");
	else
		copied = true;
	if (!copied) {
		count_copy(a, false);
		return COPY_FAILED;
	}
	hsm_info("audit: copied %s to %s", name, a->copy_dir);
	snprintf(a->copied_upto, sizeof(a->copied_upto), "%s", name);
	count_copy(a, true);
	return COPY_PRESENT;
}

/*
 * Copies every closed file; returns the index of the first not in copy_dir
 * (n - 1 if all are).  A file of another log under one name does not stop
 * the later ones; a failure to copy (the directory unusable, a full disk)
 * ends the pass's copying, reported once, tried again at the next pass.
 */
static size_t copy_closed_files(hsm_audit *a, char **names, size_t n, const char *keep_file)
{
	size_t first_missing = n - 1;
	for (size_t i = 0; i + 1 < n; i++) {
		char path[PATH_MAX];
		if (strcmp(names[i], keep_file) == 0)
			break;
		copy_outcome o = (size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[i]) <
		                         sizeof(path)
		                     ? copy_closed(a, names[i], path)
		                     : COPY_FAILED;
		if (o != COPY_PRESENT && first_missing == n - 1)
			first_missing = i;
		if (o == COPY_FAILED)
			break;
	}
	return first_missing;
}

#define SIDE_MARK ".foreign-"

/* Whether name is one create_side_file makes: an audit file's name, SIDE_MARK, offset-ms. */
static bool is_side_file(const char *name)
{
	const char *mark = strstr(name, SIDE_MARK);
	char prefix[NAME_MAX + 1];
	uint64_t seq;
	if (mark == NULL || (size_t)(mark - name) >= sizeof(prefix))
		return false;
	memcpy(prefix, name, (size_t)(mark - name));
	prefix[mark - name] = '\0';
	const char *rest = mark + strlen(SIDE_MARK);
	size_t offset_digits = strspn(rest, "0123456789");
	const char *ms = rest + offset_digits + 1;
	return audit_parse_file_name(prefix, &seq) && offset_digits > 0 &&
	       rest[offset_digits] == '-' && ms[0] != '\0' &&
	       strspn(ms, "0123456789") == strlen(ms);
}

/*
 * The bytes keep_foreign set aside go to copy_dir too, evidence kept off
 * the node like the trail itself: each side file once (one of that name
 * there is its copy, as a side file never changes once written).  A copy
 * that fails is counted and tried again at the next pass.  Retention never
 * deletes side files, here or there.
 */
static void copy_side_files(hsm_audit *a)
{
	DIR *d = opendir(a->dir);
	if (d == NULL) {
		hsm_warn("audit_copy_dir: cannot list %s: %s", a->dir, strerror(errno));
		return;
	}
	for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
		char src[PATH_MAX], dst[PATH_MAX];
		struct stat st;
		if (!is_side_file(e->d_name) ||
		    (size_t)snprintf(src, sizeof(src), "%s/%s", a->dir, e->d_name) >= sizeof(src) ||
		    (size_t)snprintf(dst, sizeof(dst), "%s/%s", a->copy_dir, e->d_name) >= sizeof(dst) ||
		    lstat(src, &st) != 0 || !S_ISREG(st.st_mode) || lstat(dst, &st) == 0)
			continue;
		if (errno != ENOENT) {
			hsm_warn("audit_copy_dir: cannot read %s: %s", dst, strerror(errno));
			count_copy(a, false);
		} else if (hsm_failed(hsm_copy_file_into(src, a->copy_dir))) {
			hsm_log_failure("copying bytes kept aside from an audit file to audit_copy_dir");
			count_copy(a, false);
		} else {
			count_copy(a, true);
		}
	}
	closedir(d);
}

/* Deletes the copies of the files retention deleted. */
static void delete_copies(hsm_audit *a, char **names, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char dst[PATH_MAX];
		if ((size_t)snprintf(dst, sizeof(dst), "%s/%s", a->copy_dir, names[i]) >= sizeof(dst) ||
		    (unlink(dst) != 0 && errno != ENOENT)) {
			hsm_warn("audit retention: cannot delete the copy %s: %s", dst, strerror(errno));
			count_copy(a, false);
		}
	}
	if (n > 0 && hsm_failed(hsm_fsync_dir(a->copy_dir)))
		hsm_log_failure("audit retention: syncing audit_copy_dir");
}

/*
 * Whether the retention checkpoint went out signed, so files may go.  Without
 * a signer the pass deletes nothing and is no failure: it is tried again at
 * the next pass and once a signer is set.  Said once, not at every pass.
 */
static bool declared(hsm_audit *a, hsm_result r, hsm_result *res)
{
	bool unsigned_now = r.err == HSM_ERR_SEALED;
	/* The floor is not this node's (audit_sweep.c floor_signed, which said why). */
	bool blocked_now = r.err == HSM_ERR_INVALID_STATE;
	pthread_mutex_lock(&a->mu);
	bool was = a->retention_unsigned;
	a->retention_unsigned = unsigned_now;
	if (blocked_now)
		a->retention_blocked = true;
	pthread_mutex_unlock(&a->mu);
	if (unsigned_now && !was)
		hsm_info("audit retention waits: expired files are deleted only under a signed "
		         "retention checkpoint, and there is no signer (unseal the node)");
	if (!unsigned_now && !blocked_now)
		*res = r;
	return hsm_ok(r);
}

/* What retention reads of a line at a file's edge: its seq, its prev, and its own hash. */
typedef struct line_edge {
	uint64_t seq;
	char prev[AUDIT_HASH_HEX + 1];
	char hash[AUDIT_HASH_HEX + 1];
} line_edge;

static bool read_edge(const char *path, bool first, line_edge *e)
{
	hsm_buf line = {0};
	bool ok = first ? audit_read_first_line(path, &line) : audit_read_last_line(path, &line);
	json_t *j = ok ? json_loadb((const char *)line.data, line.len, 0, NULL) : NULL;
	json_t *seq = json_object_get(j, "seq");
	const char *prev = json_string_value(json_object_get(j, "prev"));
	uint8_t h[AUDIT_HASH_LEN];
	ok = json_is_integer(seq) && json_integer_value(seq) > 0 && prev != NULL &&
	     strlen(prev) == AUDIT_HASH_HEX &&
	     EVP_Digest(line.data, line.len, h, NULL, EVP_sha256(), NULL) == 1;
	if (ok) {
		e->seq = (uint64_t)json_integer_value(seq);
		memcpy(e->prev, prev, sizeof(e->prev));
		audit_hex32(h, e->hash);
	}
	json_decref(j);
	hsm_buf_free(&line);
	return ok;
}

/*
 * Whether line[0..n) is this node's AuditRecordsLost naming exactly the
 * records lo..hi, written after them.
 */
static bool names_loss(hsm_audit *a, const uint8_t *line, size_t n, uint64_t lo, uint64_t hi)
{
	if (memmem(line, n, "\"AuditRecordsLost\"", 18) == NULL)
		return false;
	json_t *j = json_loadb((const char *)line, n, JSON_REJECT_DUPLICATES, NULL);
	json_t *seq = json_object_get(j, "seq"), *extra = json_object_get(j, "extra");
	const char *type = json_string_value(json_object_get(j, "type"));
	const char *op = json_string_value(json_object_get(j, "op"));
	const char *node = json_string_value(json_object_get(j, "node"));
	const char *first = json_string_value(json_object_get(extra, "first_seq"));
	const char *last = json_string_value(json_object_get(extra, "last_seq"));
	char want_first[24], want_last[24];
	snprintf(want_first, sizeof(want_first), "%llu", (unsigned long long)lo);
	snprintf(want_last, sizeof(want_last), "%llu", (unsigned long long)hi);
	bool ok = json_is_integer(seq) && (uint64_t)json_integer_value(seq) > hi && type != NULL &&
	          strcmp(type, "event") == 0 && op != NULL && strcmp(op, "AuditRecordsLost") == 0 &&
	          node != NULL && strcmp(node, a->node) == 0 && first != NULL && last != NULL &&
	          strcmp(first, want_first) == 0 && strcmp(last, want_last) == 0;
	json_decref(j);
	return ok;
}

/* Whether line[0..n)'s prev is the hex of hash; *ckpt: the line is a checkpoint. */
static bool chains_to(const uint8_t *line, size_t n, const uint8_t hash[AUDIT_HASH_LEN],
                      bool *ckpt)
{
	char want[AUDIT_HASH_HEX + 1];
	audit_hex32(hash, want);
	json_t *j = json_loadb((const char *)line, n, 0, NULL);
	const char *prev = json_string_value(json_object_get(j, "prev"));
	const char *type = json_string_value(json_object_get(j, "type"));
	bool ok = prev != NULL && strlen(prev) == AUDIT_HASH_HEX &&
	          hsm_ct_equal(prev, want, AUDIT_HASH_HEX);
	*ckpt = type != NULL && strcmp(type, "checkpoint") == 0;
	json_decref(j);
	return ok;
}

/* The seq of line[0..n) (0: none), and whether it is a rotation checkpoint. */
static uint64_t seq_of(const uint8_t *line, size_t n, bool *rotate)
{
	json_t *j = json_loadb((const char *)line, n, 0, NULL);
	json_t *seq = json_object_get(j, "seq");
	const char *reason =
	    json_string_value(json_object_get(json_object_get(j, "checkpoint"), "reason"));
	uint64_t v = json_is_integer(seq) && json_integer_value(seq) > 0
	                 ? (uint64_t)json_integer_value(seq)
	                 : 0;
	*rotate = reason != NULL && strcmp(reason, "rotate") == 0;
	json_decref(j);
	return v;
}

/*
 * Whether the file at path begins with records its node wrote again: the
 * file before it (whose last line is before) was its live file, replaced by
 * a copy of itself while they waited for their fsync, and put back, so it
 * holds them too (docs/audit.md, "Files").  From the first line each chains
 * to the one before up to before's seq, that line is before byte for byte
 * (its SHA-256: by the chain, so is each of them) and no rotation
 * checkpoint, and the next line, if any, chains to it.  As verify reads
 * them once, the file continues the one before: nothing is missing.
 */
static bool begins_again(const char *path, const line_edge *before)
{
	hsm_buf file = {0};
	bool ok = audit_read_whole(path, &file), reached = false;
	uint8_t hash[AUDIT_HASH_LEN];
	uint64_t last = 0;
	for (size_t start = 0, end; ok && start < file.len; start = end + 1) {
		const uint8_t *nl = memchr(file.data + start, '\n', file.len - start);
		if (nl == NULL)
			break; /* a line the writer is still writing (the newest file) */
		end = (size_t)(nl - file.data);
		const uint8_t *line = file.data + start;
		size_t n = end - start;
		bool ckpt = false, rotate = false;
		uint64_t seq = seq_of(line, n, &rotate);
		ok = seq != 0 && seq <= before->seq + 1 &&
		     (last == 0 || (seq == last + 1 && chains_to(line, n, hash, &ckpt)));
		if (!ok || reached)
			break; /* the line after them chains to the last: done */
		EVP_Digest(line, n, hash, NULL, EVP_sha256(), NULL);
		last = seq;
		if (seq == before->seq) {
			char hex[AUDIT_HASH_HEX + 1];
			audit_hex32(hash, hex);
			ok = !rotate && hsm_ct_equal(hex, before->hash, AUDIT_HASH_HEX);
			reached = true;
		}
	}
	hsm_buf_free(&file);
	return ok && reached;
}

/*
 * Whether the records lo..hi, missing before names[from], are a loss the
 * node recorded: an AuditRecordsLost of this node naming exactly them, in
 * names[from..last] (after the gap, in a file the pass deletes or the first
 * it keeps), whose first checkpoint after it (the lines between chained one
 * to the next) is a "lost" one that says it is signed.  *ck: what that
 * signature covers; the writer checks this node made it before anything is
 * deleted.  A loss recorded while the node was sealed (its "lost"
 * checkpoint unsigned) is not passed.
 */
static bool recorded_loss(hsm_audit *a, char **names, size_t from, size_t last, uint64_t lo,
                          uint64_t hi, audit_floor_ckpt *ck)
{
	hsm_buf file = {0};
	bool found = false;
	for (size_t i = from; i <= last && !found; i++) {
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[i]) >= sizeof(path) ||
		    !audit_read_whole(path, &file))
			break;
		bool named = false;
		uint8_t hash[AUDIT_HASH_LEN];
		for (size_t start = 0, end; start < file.len && !found; start = end + 1) {
			const uint8_t *nl = memchr(file.data + start, '\n', file.len - start);
			if (nl == NULL)
				break;
			end = (size_t)(nl - file.data);
			const uint8_t *line = file.data + start;
			size_t n = end - start;
			bool ckpt = false;
			if (named && !chains_to(line, n, hash, &ckpt)) {
				named = false; /* the chain from the loss breaks: look for another */
			} else if (named && ckpt) {
				/* The node follows its record of a loss with a "lost" checkpoint
				 * before anything else: one signed there is the node's word.  A
				 * record added by hand is followed by none the node signed (a
				 * later signed checkpoint only covers what it found). */
				found = audit_line_signed_ckpt(line, n, ck) && strcmp(ck->reason, "lost") == 0;
				named = false;
			} else if (!named) {
				named = names_loss(a, line, n, lo, hi);
			}
			EVP_Digest(line, n, hash, NULL, EVP_sha256(), NULL);
		}
	}
	hsm_buf_free(&file);
	return found;
}

/*
 * Retention may state only a floor the chain proves: the files it deletes
 * and the first it keeps must be one unbroken stretch of the chain from the
 * floor the trail states on (each file's first record the successor of the
 * last of the file before: the next seq, chained to its hash).  Otherwise
 * records are missing among them (deleted by hand, or lost), and deleting
 * the files around the gap would pass the loss off as retention: nothing is
 * deleted, the error is logged, and /metrics shows the pass blocked until
 * the missing files are put back.  Sets *kept_from to the first seq kept.
 */
static bool chain_proves(hsm_audit *a, char **names, size_t expired, uint64_t *kept_from,
                         audit_floor_ckpt losses[AUDIT_LOSSES_MAX], size_t *n_losses)
{
	uint64_t floor = atomic_load(&a->kept_from_pub);
	line_edge before = {0}, first = {0};
	char why[768] = "";
	pthread_mutex_lock(&a->mu);
	bool floor_unsigned = a->floor_unsigned;
	pthread_mutex_unlock(&a->mu);
	if (floor_unsigned)
		snprintf(why, sizeof(why),
		         "the floor the trail stated when hsmd started is in a checkpoint this node's "
		         "audit key did not sign (added to the trail, or another node's trail)");
	for (size_t i = 0; i <= expired && why[0] == '\0'; i++) {
		char path[PATH_MAX];
		uint64_t before_first = first.seq; /* of the file before */
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[i]) >= sizeof(path) ||
		    !read_edge(path, true, &first)) {
			snprintf(why, sizeof(why), "the first record of %s cannot be read", names[i]);
			break;
		}
		/* A gap the node recorded (AuditRecordsLost) is passed; its files all go. */
		uint64_t lo = i == 0 ? floor : before.seq + 1;
		bool gap = i == 0 ? first.seq > floor : first.seq > before.seq + 1;
		bool recorded = gap && *n_losses < AUDIT_LOSSES_MAX &&
		                recorded_loss(a, names, i, expired, lo, first.seq - 1,
		                              &losses[*n_losses]);
		if (recorded) {
			hsm_info("audit retention: records %llu to %llu, missing before %s, were lost "
			         "and recorded so (AuditRecordsLost): the pass goes past them",
			         (unsigned long long)lo, (unsigned long long)first.seq - 1, names[i]);
			(*n_losses)++;
		}
		if (i == 0 && first.seq > floor && !recorded) {
			snprintf(why, sizeof(why),
			         "records %llu to %llu are missing: the trail keeps every record from seq "
			         "%llu, but its oldest file, %s, starts at seq %llu",
			         (unsigned long long)floor, (unsigned long long)first.seq - 1,
			         (unsigned long long)floor, names[i], (unsigned long long)first.seq);
			break;
		}
		if (i > 0 && first.seq > before.seq + 1 && !recorded) {
			snprintf(why, sizeof(why), "records %llu to %llu are missing between %s and %s",
			         (unsigned long long)before.seq + 1, (unsigned long long)first.seq - 1,
			         names[i - 1], names[i]);
			break;
		}
		/* Records written again after the file before was replaced by its copy: no gap. */
		bool again = i > 0 && first.seq > before_first && first.seq <= before.seq &&
		             begins_again(path, &before);
		if (i > 0 && !recorded && !again &&
		    (first.seq != before.seq + 1 ||
		     !hsm_ct_equal(first.prev, before.hash, AUDIT_HASH_HEX))) {
			snprintf(why, sizeof(why), "%s does not continue %s: its first record (seq %llu) "
			         "does not chain to that file's last (seq %llu)",
			         names[i], names[i - 1], (unsigned long long)first.seq,
			         (unsigned long long)before.seq);
			break;
		}
		if (i == expired) {
			*kept_from = first.seq;
			break;
		}
		if (!read_edge(path, false, &before)) {
			snprintf(why, sizeof(why), "the last record of %s cannot be read", names[i]);
			break;
		}
	}
	bool proven = why[0] == '\0';
	pthread_mutex_lock(&a->mu);
	bool was = a->retention_blocked;
	a->retention_blocked = !proven;
	pthread_mutex_unlock(&a->mu);
	if (!proven)
		hsm_error("audit retention deletes nothing: %s; %s", why,
		          floor_unsigned ? "verify the trail with the audit public key"
		                         : "put the missing files back (from audit_copy_dir or a "
		                           "backup) and verify the trail");
	else if (was)
		hsm_info("audit retention runs again: the files it deletes continue one another");
	return proven;
}

/*
 * A pass kept files the wall clock would have expired, because the clock was
 * already ahead of the trail's newest record at open (audit_retention_now_ms):
 * said once a run, and shown as retention_held while it lasts.
 */
static void note_start_ahead(hsm_audit *a, bool spared, int64_t ahead)
{
	pthread_mutex_lock(&a->mu);
	bool was = a->retention_start_ahead;
	a->retention_start_ahead = spared;
	pthread_mutex_unlock(&a->mu);
	if (spared && !was)
		hsm_warn("audit retention holds: at start the wall clock was %lld s ahead of the "
		         "trail's newest record, more than the %lld days of a stop retention counts "
		         "(a clock set ahead before the start would otherwise have current records "
		         "deleted); files that expire only by the clock are kept until a later start "
		         "measures from a newer record (if the node was not stopped that long, check "
		         "the clock)",
		         (long long)(ahead / 1000),
		         (long long)(HSM_AUDIT_START_AHEAD_MAX_MS / (24 * 3600 * 1000)));
}

hsm_result audit_retention_apply(hsm_audit *a, const char *keep_file, hsm_buf *deleted)
{
	char **names = NULL;
	size_t n = 0;
	int e = hook(a, HSM_AUDIT_IO_RETENTION);
	HSM_ENSURE(e == 0, HSM_ERR_IO, "audit retention: %s", strerror(e));
	HSM_GUARD(audit_list_files(a->dir, &names, &n));
	hsm_result res = HSM_SUCCESS;
	int64_t start_ahead = 0, wall = audit_now_ms(a);
	int64_t now = audit_retention_now_ms(a, &start_ahead);
	int64_t keep = (int64_t)a->cfg.retention_days * MS_PER_DAY;
	bool spared = false; /* a file kept that the wall clock would have expired */
	hsm_buf line = {0};
	size_t expired = 0, deleted_n = 0, n_losses = 0;
	uint64_t kept_from = 0;
	audit_floor_ckpt losses[AUDIT_LOSSES_MAX];
	size_t copied_n = n > 0 && a->copy_dir[0] != '\0' ? copy_closed_files(a, names, n, keep_file)
	                                                  : n;
	if (a->copy_dir[0] != '\0')
		copy_side_files(a);
	/*
	 * A wall clock stepped ahead (a bad time server, a reset real-time clock)
	 * makes every file look expired: nothing is deleted while it runs ahead
	 * of the time this process has been up, and the hold shows in /metrics.
	 */
	int64_t ahead = audit_clock_ahead_ms(a);
	bool held = ahead > HSM_AUDIT_CLOCK_AHEAD_MS;
	pthread_mutex_lock(&a->mu);
	bool was_held = a->retention_held;
	a->retention_held = held;
	pthread_mutex_unlock(&a->mu);
	if (held && !was_held)
		hsm_warn("audit retention holds: the wall clock is %lld s ahead of the time hsmd has "
		         "run since it opened the audit trail; nothing is deleted until the clock is "
		         "right again or hsmd restarts (check the clock first)",
		         (long long)(ahead / 1000));
	else if (!held && was_held)
		hsm_info("audit retention runs again: the wall clock agrees with the time elapsed");
	if (held)
		goto out;
	/*
	 * Only a prefix of the log goes: oldest first, stopping at the first file
	 * that stays, so retention never opens a gap inside the log and reads one
	 * file past those it deletes, however many there are.  Never the newest
	 * file: it is the current one, or about to be.
	 */
	for (; expired + 1 < n; expired++) {
		if (strcmp(names[expired], keep_file) == 0)
			break;
		char path[PATH_MAX];
		int64_t t;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[expired]) >= sizeof(path))
			break;
		line.len = 0;
		/* A file whose newest record cannot be read is kept: deleting is the irreversible side. */
		if (!audit_read_last_line(path, &line) || !audit_line_time(line.data, line.len, &t)) {
			hsm_warn("audit retention: the newest record of %s cannot be read; it and every "
			         "later file are kept", names[expired]);
			break;
		}
		if (now - t <= keep) {
			spared = wall - t > keep;
			break;
		}
		if (expired >= copied_n) {
			hsm_warn("audit retention: %s has expired but is not in audit_copy_dir; it and "
			         "every later file are kept until it is",
			         names[expired]);
			break;
		}
	}
	note_start_ahead(a, spared, start_ahead);
	if (expired == 0)
		goto out;
	/* The first file kept holds the first record kept; stated before anything goes. */
	if (!chain_proves(a, names, expired, &kept_from, losses, &n_losses))
		goto out;
	if (!declared(a, audit_declare_kept_from(a, kept_from, losses, n_losses), &res))
		goto out;
	for (; deleted_n < expired; deleted_n++) {
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[deleted_n]) >=
		        sizeof(path) ||
		    unlink(path) != 0) {
			hsm_warn("audit retention: cannot delete %s: %s", path, strerror(errno));
			break;
		}
		hsm_info("audit retention: deleted %s (newest record older than %u days)",
		         names[deleted_n], a->cfg.retention_days);
		HSM_TRY(note_deleted(deleted, names[deleted_n]));
	}
	if (deleted_n > 0)
		HSM_TRY(hsm_fsync_dir(a->dir));
	if (a->copy_dir[0] != '\0')
		delete_copies(a, names, deleted_n);
out:
	hsm_buf_free(&line);
	audit_free_list(names, n);
	return res;
}
