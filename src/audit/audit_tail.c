/*
 * audit_tail.c - what is on disk when the log opens: the file list, the last
 * valid record (to continue seq and chain), and a torn tail left by a power
 * loss mid-write, which is moved to a side file and cut off.
 */
#include "audit/audit_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/encoding.h"
#include "common/log.h"
#include "common/util.h"

#define NAME_LEN (sizeof(AUDIT_FILE_PREFIX) - 1 + AUDIT_SEQ_DIGITS + sizeof(AUDIT_FILE_SUFFIX) - 1)
#define HEAD_READ ((size_t)64 << 10)

bool audit_parse_file_name(const char *name, uint64_t *first_seq)
{
	size_t pre = sizeof(AUDIT_FILE_PREFIX) - 1;
	if (strlen(name) != NAME_LEN || strncmp(name, AUDIT_FILE_PREFIX, pre) != 0 ||
	    strcmp(name + pre + AUDIT_SEQ_DIGITS, AUDIT_FILE_SUFFIX) != 0)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < AUDIT_SEQ_DIGITS; i++) {
		char c = name[pre + i];
		if (c < '0' || c > '9' || v > (UINT64_MAX - 9) / 10)
			return false;
		v = v * 10 + (uint64_t)(c - '0');
	}
	*first_seq = v;
	return true;
}

static int cmp_names(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

void audit_free_list(char **names, size_t n)
{
	for (size_t i = 0; i < n && names != NULL; i++)
		free(names[i]);
	free(names);
}

hsm_result audit_list_files(const char *dir, char ***names, size_t *n)
{
	hsm_result res = HSM_SUCCESS;
	DIR *d = opendir(dir);
	HSM_ENSURE(d != NULL, HSM_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
	char **v = NULL;
	size_t len = 0, cap = 0;
	for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
		uint64_t seq;
		if (!audit_parse_file_name(e->d_name, &seq))
			continue;
		if (len == cap) {
			cap = cap ? cap * 2 : 16;
			char **nv = realloc(v, cap * sizeof(*v));
			HSM_CHECK(nv != NULL, HSM_ERR_NOMEM, "out of memory");
			v = nv;
		}
		v[len] = strdup(e->d_name);
		HSM_CHECK(v[len] != NULL, HSM_ERR_NOMEM, "out of memory");
		len++;
	}
	if (len > 0)
		qsort(v, len, sizeof(*v), cmp_names);
	*names = v;
	*n = len;
	v = NULL;
	len = 0;
out:
	closedir(d);
	audit_free_list(v, len);
	return res;
}

/* Appends a malloc'd copy of "dir/name" (or of dir alone when name is NULL) to v. */
static hsm_result push_path(char ***v, size_t *len, size_t *cap, const char *dir,
                            const char *name)
{
	if (*len == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		char **nv = realloc(*v, ncap * sizeof(**v));
		HSM_ENSURE(nv != NULL, HSM_ERR_NOMEM, "out of memory");
		*v = nv;
		*cap = ncap;
	}
	size_t n = strlen(dir) + (name ? 1 + strlen(name) : 0) + 1;
	char *p = malloc(n);
	HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
	if (name != NULL)
		snprintf(p, n, "%s/%s", dir, name);
	else
		memcpy(p, dir, n);
	(*v)[(*len)++] = p;
	return HSM_SUCCESS;
}

/* Appends the path of each audit file in dir to v; *found: how many. */
static hsm_result push_dir_files(const char *dir, char ***v, size_t *len, size_t *cap,
                                 size_t *found)
{
	hsm_result res = HSM_SUCCESS;
	char **names = NULL;
	size_t n_names = 0;
	HSM_TRY(audit_list_files(dir, &names, &n_names));
	for (size_t j = 0; j < n_names && hsm_ok(res); j++)
		res = push_path(v, len, cap, dir, names[j]);
	*found = n_names;
out:
	audit_free_list(names, n_names);
	return res;
}

hsm_result hsm_audit_expand_paths(const char *const *args, size_t n, char ***out, size_t *n_out)
{
	hsm_result res = HSM_SUCCESS;
	char **v = NULL;
	size_t len = 0, cap = 0, found = 0;
	const char *empty = NULL;
	for (size_t i = 0; i < n && hsm_ok(res); i++) {
		struct stat st;
		if (stat(args[i], &st) != 0 || !S_ISDIR(st.st_mode)) {
			res = push_path(&v, &len, &cap, args[i], NULL); /* a file: read (and reported) as given */
			continue;
		}
		HSM_TRY(push_dir_files(args[i], &v, &len, &cap, &found));
		/* A copy directory before the first rotation is empty: fine beside the trail itself. */
		if (found == 0 && empty == NULL)
			empty = args[i];
	}
	HSM_CHECK(len > 0 || empty == NULL, HSM_ERR_VALIDATION,
	          "%.256s holds no audit file (audit-SEQ.jsonl)", empty);
	if (hsm_ok(res)) {
		*out = v;
		*n_out = len;
		v = NULL;
		len = 0;
	}
out:
	audit_free_list(v, len);
	return res;
}

void hsm_audit_free_paths(char **paths, size_t n) { audit_free_list(paths, n); }

hsm_result hsm_audit_trail_files(const char *dir, char ***out, size_t *n_out)
{
	char **v = NULL;
	size_t len = 0, cap = 0, found = 0;
	hsm_result res = push_dir_files(dir, &v, &len, &cap, &found);
	if (hsm_failed(res)) {
		audit_free_list(v, len);
		return res;
	}
	*out = v;
	*n_out = len;
	return HSM_SUCCESS;
}

/* Reads n bytes at off. */
static bool pread_all(int fd, uint8_t *p, size_t n, uint64_t off)
{
	while (n > 0) {
		ssize_t r = pread(fd, p, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return false;
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return true;
}

bool audit_read_last_line(const char *path, hsm_buf *line)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	struct stat st;
	bool ok = false;
	uint8_t *buf = NULL;
	if (fstat(fd, &st) != 0 || st.st_size <= 0)
		goto out;
	size_t size = (size_t)st.st_size, win = size < HEAD_READ ? size : HEAD_READ;
	buf = malloc(win);
	if (buf == NULL || !pread_all(fd, buf, win, size - win))
		goto out;
	size_t end = win;
	while (end > 0 && buf[end - 1] != '\n') /* skip a torn fragment */
		end--;
	if (end == 0)
		goto out;
	size_t start = end - 1;
	while (start > 0 && buf[start - 1] != '\n')
		start--;
	if (start == 0 && win < size)
		goto out; /* the line is longer than the window */
	ok = hsm_ok(hsm_buf_put(line, buf + start, end - 1 - start));
out:
	free(buf);
	close(fd);
	return ok;
}

bool audit_read_first_line(const char *path, hsm_buf *line)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	uint8_t *buf = malloc(HEAD_READ);
	ssize_t r = buf != NULL ? pread(fd, buf, HEAD_READ, 0) : -1;
	const uint8_t *nl = r > 0 ? memchr(buf, '\n', (size_t)r) : NULL;
	bool ok = nl != NULL && hsm_ok(hsm_buf_put(line, buf, (size_t)(nl - buf)));
	free(buf);
	close(fd);
	return ok;
}

bool audit_line_time(const uint8_t *line, size_t n, int64_t *t_ms)
{
	json_t *j = json_loadb((const char *)line, n, 0, NULL);
	const char *s = j ? json_string_value(json_object_get(j, "time")) : NULL;
	bool ok = s != NULL && audit_parse_time(s, t_ms);
	json_decref(j);
	return ok;
}

/* What a well-formed line tells the scan. */
typedef struct line_info {
	uint64_t seq;
	int64_t time_ms;
	bool shutdown, rotate;
	bool ckpt;          /* a checkpoint... */
	uint64_t kept_from; /* ...and the floor it states (0: none, an older hsmd's) */
	bool ckpt_signed;   /* ...said signed, its signature well-formed (not checked) */
} line_info;

bool audit_is_hash_hex(const char *s)
{
	if (s == NULL || strlen(s) != AUDIT_HASH_HEX)
		return false;
	for (size_t i = 0; i < AUDIT_HASH_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/*
 * Whether the checkpoint j (seq, kept_from set) says it is signed, with a
 * well-formed Ed25519 signature; fills *fc (when not NULL) with what that
 * signature covers.
 */
static bool signed_ckpt(json_t *j, uint64_t seq, audit_floor_ckpt *fc)
{
	json_t *c = json_object_get(j, "checkpoint");
	const char *alg = json_string_value(json_object_get(c, "alg"));
	const char *sig = json_string_value(json_object_get(c, "sig"));
	const char *time = json_string_value(json_object_get(j, "time"));
	const char *reason = json_string_value(json_object_get(c, "reason"));
	const char *prev = json_string_value(json_object_get(j, "prev"));
	const char *node = json_string_value(json_object_get(j, "node"));
	if (!json_is_true(json_object_get(c, "signed")) || alg == NULL ||
	    strcmp(alg, "Ed25519") != 0 || sig == NULL || time == NULL || reason == NULL ||
	    node == NULL)
		return false;
	hsm_buf raw = {0};
	bool ok = hsm_ok(hsm_b64_decode(&raw, sig, strlen(sig), HSM_ERR_VALIDATION)) &&
	          raw.len == sizeof(fc->sig);
	if (ok && fc != NULL) {
		memset(fc, 0, sizeof(*fc));
		ok = hsm_ok(hsm_strcpy(fc->time, sizeof(fc->time), time)) &&
		     hsm_ok(hsm_strcpy(fc->reason, sizeof(fc->reason), reason)) &&
		     hsm_ok(hsm_strcpy(fc->prev, sizeof(fc->prev), prev)) &&
		     hsm_ok(hsm_strcpy(fc->node, sizeof(fc->node), node));
		fc->seq = seq;
		fc->kept_from = (uint64_t)json_integer_value(json_object_get(c, "kept_from"));
		memcpy(fc->sig, raw.data, sizeof(fc->sig));
	}
	hsm_buf_free(&raw);
	return ok;
}

/* fc (may be NULL): what the signature of a signed checkpoint covers. */
static bool parse_line_ckpt(const uint8_t *p, size_t n, line_info *li, audit_floor_ckpt *fc)
{
	json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
	json_t *seq = json_object_get(j, "seq");
	const char *type = json_string_value(json_object_get(j, "type"));
	const char *time = json_string_value(json_object_get(j, "time"));
	bool ok = json_is_integer(seq) && json_integer_value(seq) > 0 && type != NULL &&
	          time != NULL && audit_parse_time(time, &li->time_ms) &&
	          audit_is_hash_hex(json_string_value(json_object_get(j, "prev")));
	if (ok) {
		li->seq = (uint64_t)json_integer_value(seq);
		const char *reason = json_string_value(
		    json_object_get(json_object_get(j, "checkpoint"), "reason"));
		bool ckpt = strcmp(type, "checkpoint") == 0 && reason != NULL;
		json_t *kept = json_object_get(json_object_get(j, "checkpoint"), "kept_from");
		li->ckpt = ckpt;
		li->kept_from = ckpt && json_is_integer(kept) && json_integer_value(kept) > 0
		                    ? (uint64_t)json_integer_value(kept)
		                    : 0;
		li->shutdown = ckpt && strcmp(reason, "shutdown") == 0;
		li->rotate = ckpt && strcmp(reason, "rotate") == 0;
		li->ckpt_signed = ckpt && li->kept_from != 0 && signed_ckpt(j, li->seq, fc);
	}
	json_decref(j);
	return ok;
}

static bool parse_line(const uint8_t *p, size_t n, line_info *li)
{
	return parse_line_ckpt(p, n, li, NULL);
}

/*
 * Walks back from the end of the window to the last complete, well-formed
 * line.  *valid_end is where the good part ends (relative to the window).
 */
static hsm_result find_valid_end(const uint8_t *buf, size_t win, bool whole, size_t *valid_end,
                                 line_info *li, uint8_t head[AUDIT_HASH_LEN], bool *found)
{
	size_t end = win;
	*found = false;
	while (end > 0) {
		if (buf[end - 1] != '\n') {
			while (end > 0 && buf[end - 1] != '\n')
				end--;
			continue;
		}
		size_t start = end - 1;
		while (start > 0 && buf[start - 1] != '\n')
			start--;
		HSM_ENSURE(start > 0 || whole, HSM_ERR_IO,
		           "the last %zu bytes of the audit log hold no valid record; verify it", win);
		if (parse_line(buf + start, end - 1 - start, li)) {
			EVP_Digest(buf + start, end - 1 - start, head, NULL, EVP_sha256(), NULL);
			*found = true;
			break;
		}
		end = start;
	}
	HSM_ENSURE(end > 0 || whole, HSM_ERR_IO,
	           "the last %zu bytes of the audit log hold no valid record; verify it", win);
	*valid_end = end;
	return HSM_SUCCESS;
}

/* Copies the damaged bytes to <file>.torn-<ms> and cuts them off. */
static hsm_result save_torn(hsm_audit *a, int fd, const char *path, const uint8_t *p, size_t n,
                            uint64_t keep, audit_tail_info *out)
{
	char side[PATH_MAX];
	HSM_ENSURE((size_t)snprintf(side, sizeof(side), "%s.torn-%lld", path,
	                            (long long)audit_now_ms(a)) < sizeof(side),
	           HSM_ERR_VALIDATION, "audit path too long");
	HSM_GUARD(hsm_write_file_atomic(side, p, n, 0600));
	HSM_ENSURE(ftruncate(fd, (off_t)keep) == 0 && fsync(fd) == 0, HSM_ERR_IO,
	           "cannot cut the torn tail of %s: %s", path, strerror(errno));
	hsm_warn("audit log %s had a torn tail of %zu bytes (saved to %s); continuing after the "
	         "last valid record", path, n, side);
	out->torn_bytes += n;
	return hsm_strcpy(out->torn_path, sizeof(out->torn_path), side);
}

static int64_t first_line_time(int fd, int64_t fallback)
{
	uint8_t buf[4096];
	ssize_t r = pread(fd, buf, sizeof(buf), 0);
	const uint8_t *nl = r > 0 ? memchr(buf, '\n', (size_t)r) : NULL;
	int64_t t;
	if (nl != NULL && audit_line_time(buf, (size_t)(nl - buf), &t))
		return t;
	return fallback;
}

/* The floor of a trail whose checkpoints state none (an older hsmd's): its oldest file's. */
static void older_floor(const char *oldest, audit_tail_info *out)
{
	out->floor_seen = true;
	if (!audit_parse_file_name(oldest, &out->kept_from) || out->kept_from == 0)
		out->kept_from = 1; /* a file named from seq 0: no record has that seq */
}

/*
 * The floor the trail itself states, from buf[0..end) (lines of a file):
 * kept_from of the last checkpoint that says it is signed.  Only a signed
 * retention checkpoint raises the floor, and every later checkpoint repeats
 * it, so the last signed one states it; an unsigned one (anyone who can
 * write the trail can append one) is passed over.  A checkpoint stating no
 * floor is an older hsmd's: that hsmd's retention left the floor at the
 * oldest file.  Returns whether the floor was found (out->floor_seen).
 */
/* Whether the floor, or where an offline hsmctl's floor came from, is still looked for. */
static bool audit_floor_scanning(const audit_tail_info *out)
{
	return !out->floor_seen || out->origin_wanted;
}

static bool window_floor(const uint8_t *buf, size_t end, const char *oldest,
                         audit_tail_info *out)
{
	while (end > 0 && audit_floor_scanning(out)) {
		size_t start = end - 1;
		while (start > 0 && buf[start - 1] != '\n')
			start--;
		line_info li = {0};
		audit_floor_ckpt fc = {0};
		size_t n = end - 1 - start;
		if (buf[end - 1] == '\n' && memmem(buf + start, n, "\"checkpoint\"", 12) != NULL &&
		    parse_line_ckpt(buf + start, n, &li, &fc) && li.ckpt) {
			if (out->floor_seen) {
				/* Looking for where an offline hsmctl's floor came from: the newest
				 * signed checkpoint of a node before it; it must state that floor. */
				if (li.ckpt_signed && !audit_node_offline(fc.node)) {
					if (li.kept_from == out->kept_from) {
						out->floor_origin = fc;
						out->floor_origin.set = true;
					}
					out->origin_wanted = false;
				}
			} else if (li.kept_from == 0) {
				older_floor(oldest, out);
			} else if (li.ckpt_signed) {
				out->floor_seen = true;
				out->kept_from = li.kept_from;
				if (li.kept_from > 1) {
					out->floor_ckpt = fc;
					out->floor_ckpt.set = true;
					out->origin_wanted = audit_node_offline(fc.node);
				}
			}
		}
		end = start;
	}
	return out->floor_seen;
}

bool audit_line_signed_ckpt(const uint8_t *line, size_t n, audit_floor_ckpt *fc)
{
	line_info li = {0};
	return parse_line_ckpt(line, n, &li, fc) && li.ckpt && li.ckpt_signed;
}

bool audit_read_whole(const char *path, hsm_buf *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	struct stat st;
	out->len = 0;
	bool ok = fstat(fd, &st) == 0 && st.st_size >= 0 &&
	          hsm_ok(hsm_buf_reserve(out, (size_t)st.st_size + 1)) &&
	          pread_all(fd, out->data, (size_t)st.st_size, 0);
	if (ok)
		out->len = (size_t)st.st_size;
	close(fd);
	return ok;
}

/*
 * Scans one file; *found says whether it holds a valid record.  oldest: the
 * name of the trail's oldest file.
 */
static hsm_result scan_file(hsm_audit *a, const char *path, const char *oldest,
                            audit_tail_info *out, bool *found)
{
	hsm_result res = HSM_SUCCESS;
	uint8_t *buf = NULL;
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot open %s: %s", path, hsm_own_file_error(errno));
	struct stat st;
	HSM_CHECK(fstat(fd, &st) == 0, HSM_ERR_IO, "cannot stat %s", path);
	uint64_t size = (uint64_t)st.st_size;
	size_t win = size < AUDIT_TAIL_WINDOW ? (size_t)size : AUDIT_TAIL_WINDOW;
	uint64_t base = size - win;
	buf = malloc(win ? win : 1);
	HSM_CHECK(buf != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_CHECK(pread_all(fd, buf, win, base), HSM_ERR_IO, "cannot read %s", path);
	size_t valid_end = 0;
	line_info li = {0};
	HSM_TRY(find_valid_end(buf, win, base == 0, &valid_end, &li, out->head, found));
	if (valid_end < win)
		HSM_TRY(save_torn(a, fd, path, buf + valid_end, win - valid_end, base + valid_end, out));
	if (*found) {
		/* A killed run's last writes may be in the page cache only: durable before
		 * anything (the audit outbox) takes them for written. */
		HSM_CHECK(fdatasync(fd) == 0, HSM_ERR_IO, "cannot sync %s: %s", path, strerror(errno));
		out->found = true;
		out->next_seq = li.seq + 1;
		out->clean = li.shutdown && out->torn_bytes == 0;
		out->needs_new_file = li.rotate;
		HSM_TRY(hsm_strcpy(out->path, sizeof(out->path), path));
		out->file_first_ms = first_line_time(fd, li.time_ms);
		out->window_whole = base == 0;
		window_floor(buf, valid_end, oldest, out);
	}
out:
	free(buf);
	close(fd);
	return res;
}

/*
 * window_floor over the whole file at path, from its end back, a window at a
 * time (memory stays bounded however large the file).  A line longer than a
 * window is passed over.
 */
static void file_floor(const char *path, const char *oldest, audit_tail_info *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	uint8_t *buf = NULL;
	if (fd < 0 || fstat(fd, &st) != 0 || (buf = malloc(AUDIT_TAIL_WINDOW)) == NULL) {
		hsm_warn("audit: cannot read %s for the floor the trail states", path);
		goto out;
	}
	for (uint64_t end = (uint64_t)st.st_size; end > 0 && audit_floor_scanning(out);) {
		size_t win = end < AUDIT_TAIL_WINDOW ? (size_t)end : AUDIT_TAIL_WINDOW;
		uint64_t base = end - win;
		if (!pread_all(fd, buf, win, base)) {
			hsm_warn("audit: cannot read %s for the floor the trail states", path);
			break;
		}
		size_t from = 0; /* the window's first whole line */
		if (base > 0) {
			const uint8_t *nl = memchr(buf, '\n', win);
			from = nl != NULL ? (size_t)(nl - buf) + 1 : win;
		}
		window_floor(buf + from, win - from, oldest, out);
		end = base + from < end ? base + from : base;
	}
out:
	free(buf);
	if (fd >= 0)
		close(fd);
}

/*
 * Every record from kept_from on is kept: the floor the trail's own signed
 * checkpoints state (window_floor), looked for from the end of the trail
 * back, whole files newest first, as far as there are files.  Files missing
 * from the start (deleted by hand, or lost) leave it where it was, so the
 * next checkpoints still state it and verify names the records missing.
 * A trail of the current format none of whose checkpoints states one keeps
 * every record from seq 1: records missing before its oldest file are a
 * loss, never retention (only a signed retention checkpoint raises the
 * floor).  A trail none of whose checkpoints states one because they are an
 * older hsmd's starts its floor at its oldest file, as that hsmd's
 * retention left it.  Retention checks the signature of the checkpoint a
 * floor above 1 came from before it deletes under it (audit_sweep.c).
 */
static void trail_floor(hsm_audit *a, char **names, size_t newest, audit_tail_info *out)
{
	for (size_t i = newest + (out->window_whole ? 0 : 1); audit_floor_scanning(out) && i-- > 0;) {
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[i]) < sizeof(path))
			file_floor(path, names[0], out);
	}
	if (!out->floor_seen)
		out->kept_from = 1;
}

/*
 * The seq of the last checkpoint in the file at path that says it is signed,
 * read from the end back a window at a time; 0 when it holds none.
 */
static uint64_t last_signed_in(const char *path)
{
	static const char mark[] = "\"signed\":true";
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	uint8_t *buf = NULL;
	uint64_t found = 0;
	if (fd < 0 || fstat(fd, &st) != 0 || (buf = malloc(AUDIT_TAIL_WINDOW)) == NULL)
		goto out;
	for (uint64_t end = (uint64_t)st.st_size; end > 0 && found == 0;) {
		size_t win = end < AUDIT_TAIL_WINDOW ? (size_t)end : AUDIT_TAIL_WINDOW;
		uint64_t base = end - win;
		if (!pread_all(fd, buf, win, base))
			break;
		size_t from = 0; /* the window's first whole line */
		if (base > 0) {
			const uint8_t *nl = memchr(buf, '\n', win);
			from = nl != NULL ? (size_t)(nl - buf) + 1 : win;
		}
		size_t e = win;
		while (e > from && found == 0) {
			size_t stop = e > 0 && buf[e - 1] == '\n' ? e - 1 : e, start = stop;
			while (start > from && buf[start - 1] != '\n')
				start--;
			line_info li = {0};
			if (memmem(buf + start, stop - start, mark, sizeof(mark) - 1) != NULL &&
			    parse_line(buf + start, stop - start, &li) && li.ckpt)
				found = li.seq;
			e = start;
		}
		end = base + from < end ? base + from : base;
	}
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return found;
}

/*
 * Which records at the end of the trail no signed checkpoint follows: from
 * the newest file back to the last checkpoint that says it is signed (in
 * the normal case a minute's records back; a run that never unsealed, the
 * whole trail).
 */
static void unsigned_tail(hsm_audit *a, char **names, size_t newest, audit_tail_info *out)
{
	uint64_t last = out->next_seq - 1, ck = 0;
	for (size_t i = newest + 1; i-- > 0 && ck == 0;) {
		char path[PATH_MAX];
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[i]) < sizeof(path))
			ck = last_signed_in(path);
	}
	uint64_t first = 1;
	if (ck == 0 && !audit_parse_file_name(names[0], &first))
		first = 1;
	out->unsigned_first = ck >= last ? 0 : ck != 0 ? ck + 1 : first;
}

hsm_result audit_tail_scan(hsm_audit *a, audit_tail_info *out)
{
	memset(out, 0, sizeof(*out));
	out->next_seq = 1;
	out->clean = true;
	out->needs_new_file = true;
	char **names = NULL;
	size_t n = 0;
	HSM_GUARD(audit_list_files(a->dir, &names, &n));
	hsm_result res = HSM_SUCCESS;
	for (size_t i = n; i-- > 0;) {
		char path[PATH_MAX];
		bool found = false;
		HSM_CHECK((size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[i]) < sizeof(path),
		          HSM_ERR_VALIDATION, "audit path too long");
		HSM_TRY(scan_file(a, path, names[0], out, &found));
		if (found) {
			HSM_CHECK(audit_parse_file_name(names[i], &out->file_first_seq), HSM_ERR_INTERNAL,
			          "bad file name");
			trail_floor(a, names, i, out);
			unsigned_tail(a, names, i, out);
			goto out;
		}
		/* Empty (or emptied) newest file: the chain continues from the one before. */
		HSM_CHECK(unlink(path) == 0, HSM_ERR_IO, "cannot remove empty %s", path);
		HSM_TRY(hsm_fsync_dir(a->dir));
	}
	out->kept_from = 1; /* no record found: a new log */
out:
	audit_free_list(names, n);
	return res;
}

/* The "prev" of a well-formed line, decoded; false when it has none. */
static bool line_prev(const uint8_t *p, size_t n, uint8_t prev[AUDIT_HASH_LEN])
{
	json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
	const char *hex = json_string_value(json_object_get(j, "prev"));
	bool ok = audit_is_hash_hex(hex) && hsm_ok(hsm_hex_decode_exact(prev, AUDIT_HASH_LEN, hex,
	                                                       AUDIT_HASH_HEX, HSM_ERR_VALIDATION));
	json_decref(j);
	return ok;
}

bool audit_last_record_in(int fd, uint64_t limit, uint64_t first_seq, uint64_t last_seq,
                          audit_kept_record *out)
{
	memset(out, 0, sizeof(*out));
	size_t win = limit < AUDIT_TAIL_WINDOW ? (size_t)limit : AUDIT_TAIL_WINDOW;
	uint64_t base = limit - win;
	uint8_t *buf = malloc(win ? win : 1);
	if (buf == NULL || !pread_all(fd, buf, win, base)) {
		free(buf);
		return false;
	}
	/* From the end back: a complete line, well formed, of the file's seq range, chained
	 * to the line before it (or the first of the file). */
	size_t end = win;
	while (end > 0 && !out->found) {
		if (buf[end - 1] != '\n') {
			end--;
			continue;
		}
		size_t start = end - 1;
		while (start > 0 && buf[start - 1] != '\n')
			start--;
		if (start == 0 && base > 0)
			break; /* the window does not hold the whole line */
		line_info li = {0};
		size_t n = end - 1 - start;
		bool ok = parse_line(buf + start, n, &li) && li.seq >= first_seq && li.seq <= last_seq;
		if (ok && start > 0) {
			/* The line before must be its predecessor, byte for byte. */
			size_t ps = start - 1;
			while (ps > 0 && buf[ps - 1] != '\n')
				ps--;
			uint8_t prev[AUDIT_HASH_LEN], h[AUDIT_HASH_LEN];
			line_info pi = {0};
			ok = (ps > 0 || base == 0) && parse_line(buf + ps, start - 1 - ps, &pi) &&
			     pi.seq + 1 == li.seq && line_prev(buf + start, n, prev) &&
			     EVP_Digest(buf + ps, start - 1 - ps, h, NULL, EVP_sha256(), NULL) == 1 &&
			     hsm_ct_equal(prev, h, AUDIT_HASH_LEN);
		} else if (ok) {
			ok = li.seq == first_seq; /* the file's first line */
		}
		if (ok) {
			out->found = true;
			out->seq = li.seq;
			out->end = base + end;
			EVP_Digest(buf + start, n, out->hash, NULL, EVP_sha256(), NULL);
		}
		end = start;
	}
	free(buf);
	return true;
}
