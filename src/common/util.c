#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "common/buf.h"
#include "common/encoding.h"

#define COPY_CHUNK ((size_t)1 << 20)

int64_t hsm_now(void)
{
	/* Not time(): on Linux it reads the coarse clock, up to a tick behind CLOCK_REALTIME,
	 * so a second could turn later here than in hsm_now_ms() or in a client. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

int64_t hsm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t hsm_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void hsm_format_time(int64_t t, char out[21])
{
	/* 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the years "%04d" writes in four digits. */
	static const int64_t first = -62167219200LL, last = 253402300799LL;
	time_t tt = (time_t)t;
	struct tm tm;
	if (t < first || t > last || (int64_t)tt != t || gmtime_r(&tt, &tm) == NULL) {
		/* A time out of range is shown as it is (at most 20 characters). */
		snprintf(out, 21, "%lld", (long long)t);
		return;
	}
	snprintf(out, 21, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void hsm_format_time_ms(int64_t t_ms, char out[25])
{
	/* Floor division, so that times before 1970 keep their second and a 0..999 remainder. */
	int64_t sec = t_ms / 1000 - (t_ms % 1000 < 0);
	unsigned ms = (unsigned)((t_ms % 1000 + 1000) % 1000);
	char base[21];
	hsm_format_time(sec, base);
	if (strlen(base) != 20) {
		snprintf(out, 25, "%lld", (long long)t_ms); /* out of range: as it is */
		return;
	}
	snprintf(out, 25, "%.19s.%03uZ", base, ms);
}

void hsm_sb_init(hsm_sb *b, char *buf, size_t cap)
{
	HSM_ASSERT(buf != NULL && cap > 0);
	b->p = buf;
	b->cap = cap;
	b->len = 0;
	b->cut = false;
	buf[0] = '\0';
}

static void sb_put(hsm_sb *b, const char *s, size_t n)
{
	size_t room = b->cap - 1 - b->len;
	if (n > room) {
		n = room;
		b->cut = true;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void hsm_sb_add(hsm_sb *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

void hsm_sb_addn(hsm_sb *b, const char *s, size_t max)
{
	sb_put(b, s, strnlen(s, max));
}

void hsm_sb_u64(hsm_sb *b, uint64_t v)
{
	char d[20];
	size_t i = sizeof(d);
	do {
		d[--i] = (char)('0' + v % 10U);
		v /= 10U;
	} while (v != 0);
	sb_put(b, d + i, sizeof(d) - i);
}

void hsm_thread_name(const char *name)
{
	char n[16];
	hsm_sb b;
	hsm_sb_init(&b, n, sizeof(n));
	hsm_sb_addn(&b, name, sizeof(n) - 1);
	(void)pthread_setname_np(pthread_self(), n);
}

void hsm_thread_name_n(const char *prefix, unsigned index)
{
	char n[16];
	hsm_sb b;
	hsm_sb_init(&b, n, sizeof(n));
	hsm_sb_add(&b, prefix);
	hsm_sb_add(&b, "-");
	hsm_sb_u64(&b, index);
	hsm_thread_name(n);
}

bool hsm_thread_batch(void)
{
	int policy = sched_getscheduler(0);
	if (policy < 0)
		return false;
	if ((policy & ~SCHED_RESET_ON_FORK) != SCHED_OTHER)
		return true;
	struct sched_param none = {.sched_priority = 0};
	return sched_setscheduler(0, SCHED_BATCH | (policy & SCHED_RESET_ON_FORK), &none) == 0;
}

void hsm_calls_add(hsm_calls *c, void (*fn)(void *), void *arg)
{
	HSM_ASSERT(c != NULL && fn != NULL);
	for (size_t i = 0; i < c->n; i++)
		if (c->at[i].fn == fn && c->at[i].arg == arg)
			return;
	if (c->n == HSM_CALLS_MAX) {
		fn(arg);
		return;
	}
	c->at[c->n].fn = fn;
	c->at[c->n].arg = arg;
	c->n++;
}

void hsm_calls_run(hsm_calls *c)
{
	hsm_calls now = *c; /* a call may add to the list: that is for the next run */
	c->n = 0;
	for (size_t i = 0; i < now.n; i++)
		now.at[i].fn(now.at[i].arg);
}

hsm_result hsm_uuid_new(char out[HSM_UUID_STRLEN + 1])
{
	uint8_t u[16];
	errno = 0; /* a thread's first draw sets its generator up, which allocates */
	HSM_ENSURE(RAND_bytes(u, sizeof(u)) == 1, hsm_nomem_or(HSM_ERR_CRYPTO),
	           "random generator failed%s", errno == ENOMEM ? ": out of memory" : "");
	u[6] = (uint8_t)((u[6] & 0x0fU) | 0x40U); /* version 4 */
	u[8] = (uint8_t)((u[8] & 0x3fU) | 0x80U); /* RFC 4122 variant */
	snprintf(out, HSM_UUID_STRLEN + 1,
	         "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
	         u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
	         u[15]);
	return HSM_SUCCESS;
}

bool hsm_is_uuid(const char *s)
{
	if (strlen(s) != HSM_UUID_STRLEN)
		return false;
	for (int i = 0; i < HSM_UUID_STRLEN; i++) {
		char c = s[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			return false;
		}
	}
	return true;
}

hsm_result hsm_strcpy(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);
	HSM_ENSURE(n < cap, HSM_ERR_VALIDATION, "value is too long (at most %zu characters)", cap - 1);
	memcpy(dst, src, n + 1);
	return HSM_SUCCESS;
}

bool hsm_str_has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

size_t hsm_utf16_units(const char *s)
{
	size_t n = 0;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		/* Every byte but a continuation starts a character; one of four bytes (above
		 * U+FFFF) is a surrogate pair in UTF-16. */
		n += (c & 0xc0) != 0x80;
		n += c >= 0xf0;
	}
	return n;
}

bool hsm_region_name_valid(const char *s)
{
	size_t n = strlen(s);
	return n >= 1 && n <= HSM_REGION_NAME_MAX &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n && s[0] >= 'a' &&
	       s[0] <= 'z' && s[n - 1] != '-';
}

bool hsm_utf8_valid(const void *p, size_t n)
{
	const unsigned char *s = p;
	for (size_t i = 0; i < n;) {
		unsigned char c = s[i];
		size_t more;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			more = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			more = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			more = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false; /* a continuation byte first, or 0xf8-0xff */
		}
		if (n - i - 1 < more)
			return false;
		for (size_t k = 1; k <= more; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += more + 1;
	}
	return true;
}

/*
 * The '@' that ends a URI's userinfo, host being what follows "://"; NULL
 * when it has none.  libpq takes the userinfo up to the first '@' before
 * the first '/' (a '?' or '#' before that '@' is part of the password).
 * Passwords written carelessly are covered too: one with a raw '@' ends at
 * the last '@' before that '/', and one with a raw '/' (which libpq does not
 * take as userinfo at all) at the last '@' before any query or fragment.
 * The later of those hides too much of a path holding an '@' rather than
 * show such a password.
 */
static const char *userinfo_end(const char *host)
{
	size_t authority = strcspn(host, "/"), plain = strcspn(host, "?#");
	size_t upto = authority > plain ? authority : plain;
	const char *at = NULL;
	for (size_t i = 0; i < upto; i++)
		if (host[i] == '@')
			at = host + i;
	return at;
}

void hsm_location_shown(const char *location, char *out, size_t cap)
{
	const char *sep = strstr(location, "://");
	if (sep == NULL || cap == 0) {
		if (cap > 0)
			snprintf(out, cap, "%s", location);
		return;
	}
	const char *host = sep + 3, *at = userinfo_end(host);
	const char *rest = at != NULL ? at + 1 : host;
	size_t keep = strcspn(rest, "?#");
	snprintf(out, cap, "%.*s%.*s", (int)(host - location), location, (int)keep, rest);
}

/* Masks n bytes at p; true when n > 0. */
static bool mask(char *p, size_t n)
{
	memset(p, '*', n);
	return n > 0;
}

/* Whether the n bytes at p, percent-decoded as libpq decodes a URI's parameter names,
 * spell name ("%70assword" is "password" to libpq). */
static bool decoded_is(const char *p, size_t n, const char *name)
{
	size_t i = 0;
	for (; *name != '\0'; name++) {
		if (i >= n)
			return false;
		char c = p[i++];
		if (c == '%') {
			int hi = i < n ? hsm_hex_digit_value((unsigned char)p[i]) : -1;
			int lo = i + 1 < n ? hsm_hex_digit_value((unsigned char)p[i + 1]) : -1;
			if (hi < 0 || lo < 0)
				return false;
			c = (char)(hi * 16 + lo);
			i += 2;
		}
		if (c != *name)
			return false;
	}
	return i == n;
}

bool hsm_uri_mask_password(char *uri)
{
	char *sep = strstr(uri, "://");
	if (sep == NULL)
		return false;
	char *host = sep + 3, *rest = host;
	bool masked = false;
	const char *at = userinfo_end(host);
	if (at != NULL) {
		char *colon = memchr(host, ':', (size_t)(at - host));
		if (colon != NULL)
			masked |= mask(colon + 1, (size_t)(at - (colon + 1)));
		rest = host + (at - host) + 1;
	}
	/* libpq also takes the password as a parameter: ...?password=SECRET&...  It knows
	 * no fragment: a '#' is a byte of the path or of a value like any other. */
	rest += strcspn(rest, "?");
	char *q = *rest == '?' ? rest + 1 : NULL;
	while (q != NULL && *q != '\0') {
		size_t len = strcspn(q, "&");
		char *eq = memchr(q, '=', len);
		/* sslpassword: the passphrase of the client's TLS key, a secret too. */
		if (eq != NULL && (decoded_is(q, (size_t)(eq - q), "password") ||
		                   decoded_is(q, (size_t)(eq - q), "sslpassword")))
			masked |= mask(eq + 1, len - (size_t)(eq + 1 - q));
		q += len;
		q = *q == '&' ? q + 1 : NULL;
	}
	return masked;
}

/* The copy hsm_args_hide_passwords made: the process's arguments from then on. */
static char **args_kept;

static void args_free(char **args)
{
	for (size_t i = 0; args != NULL && args[i] != NULL; i++)
		free(args[i]);
	free(args);
}

hsm_result hsm_args_hide_passwords(int argc, char **argv, char ***copy, bool *masked)
{
	char **c = calloc((size_t)argc + 1, sizeof(*c));
	HSM_ENSURE(c != NULL, HSM_ERR_NOMEM, "out of memory");
	for (int i = 0; i < argc; i++) {
		c[i] = strdup(argv[i]);
		if (c[i] == NULL) {
			args_free(c);
			return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
		}
	}
	*masked = false;
	/* "--store=postgresql://...", "--to postgresql://...": the URI's own "://" is
	 * the first in its argument. */
	for (int i = 0; i < argc; i++)
		*masked |= hsm_uri_mask_password(argv[i]);
	args_free(args_kept);
	args_kept = c;
	*copy = c;
	return HSM_SUCCESS;
}

hsm_result hsm_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	HSM_ENSURE(s != NULL && *s != '\0', HSM_ERR_VALIDATION, "a number is required");
	errno = 0;
	char *end = NULL;
	long long v = strtoll(s, &end, 10);
	HSM_ENSURE(errno == 0 && end != NULL && *end == '\0', HSM_ERR_VALIDATION,
	           "not a whole number");
	HSM_ENSURE(v >= min && v <= max, HSM_ERR_VALIDATION,
	           "number out of range [%lld, %lld]", (long long)min, (long long)max);
	*out = (int64_t)v;
	return HSM_SUCCESS;
}

static hsm_result read_file(const char *path, int flags, size_t max, hsm_buf *out)
{
	hsm_result res = HSM_SUCCESS;
	int fd = open(path, O_RDONLY | O_CLOEXEC | flags);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot open %s: %s", path,
	           (flags & O_NOFOLLOW) != 0 ? hsm_own_file_error(errno) : strerror(errno));
	/* Room for the whole file at once: grown by doubling in 4 KiB reads, a buffer for a
	 * file of n bytes held up to 2n, and hsm_buf_free wiped (touched) its whole capacity. */
	struct stat st;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    (uint64_t)st.st_size <= max)
		HSM_TRY(hsm_buf_reserve_exact(out, (size_t)st.st_size));
	for (;;) {
		uint8_t chunk[4096];
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		HSM_CHECK(n >= 0, HSM_ERR_IO, "cannot read %s: %s", path, strerror(errno));
		if (n == 0)
			break;
		HSM_CHECK(out->len + (size_t)n <= max, HSM_ERR_LIMIT_EXCEEDED,
		          "%s is larger than %zu bytes", path, max);
		HSM_TRY(hsm_buf_put(out, chunk, (size_t)n));
		OPENSSL_cleanse(chunk, sizeof(chunk));
	}
out:
	close(fd);
	return res;
}

hsm_result hsm_read_file(const char *path, size_t max, hsm_buf *out)
{
	return read_file(path, 0, max, out);
}

hsm_result hsm_read_own_file(const char *path, size_t max, hsm_buf *out)
{
	return read_file(path, O_NOFOLLOW, max, out);
}

static hsm_result write_all(int fd, const uint8_t *p, size_t n, const char *path)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		HSM_ENSURE(w > 0, HSM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
		p += w;
		n -= (size_t)w;
	}
	return HSM_SUCCESS;
}

hsm_result hsm_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot open directory %s: %s", path, strerror(errno));
	int rc = fsync(fd);
	int saved = errno;
	close(fd);
	HSM_ENSURE(rc == 0, HSM_ERR_IO, "cannot sync directory %s: %s", path, strerror(saved));
	return HSM_SUCCESS;
}

/* Tries at a fresh name before giving up: each one already taken means another
 * process made it, or left it by crashing. */
#define TEMP_TRIES 8

/*
 * Creates PATH.tmp.<16 random hex digits> for writing, only if nothing is
 * there: O_EXCL and O_NOFOLLOW mean a file or symbolic link planted under
 * that name (by another user, in a directory it may write) is never opened,
 * and a random name means it cannot be planted in advance.
 */
static hsm_result create_temp(const char *path, unsigned mode, char *tmp, size_t cap, int *fd)
{
	for (int tries = 1;; tries++) {
		uint8_t r[8];
		HSM_ENSURE(RAND_bytes(r, sizeof(r)) == 1, hsm_nomem_or(HSM_ERR_CRYPTO),
		           "cannot draw a temporary file name");
		char hex[2 * sizeof(r) + 1];
		hsm_hex_encode_str(hex, r, sizeof(r));
		HSM_ENSURE((size_t)snprintf(tmp, cap, "%s.tmp.%s", path, hex) < cap,
		           HSM_ERR_VALIDATION, "path too long");
		*fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
		if (*fd >= 0)
			return HSM_SUCCESS;
		HSM_ENSURE(errno == EEXIST && tries < TEMP_TRIES, HSM_ERR_IO, "cannot create %s: %s",
		           tmp, errno == EEXIST ? "every name tried exists already" : strerror(errno));
	}
}

hsm_result hsm_write_file_atomic(const char *path, const void *p, size_t n, unsigned mode)
{
	hsm_result res = HSM_SUCCESS;
	char tmp[PATH_MAX], dir[PATH_MAX];
	int fd = -1;
	bool made = false; /* tmp exists and is ours: removed on failure */
	HSM_TRY(hsm_strcpy(dir, sizeof(dir), path));
	char *slash = strrchr(dir, '/');
	if (slash == NULL)
		HSM_TRY(hsm_strcpy(dir, sizeof(dir), "."));
	else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	HSM_TRY(create_temp(path, mode, tmp, sizeof(tmp), &fd));
	made = true;
	HSM_TRY(write_all(fd, p, n, tmp));
	HSM_CHECK(fsync(fd) == 0, HSM_ERR_IO, "cannot sync %s: %s", tmp, strerror(errno));
	int rc = close(fd);
	fd = -1;
	HSM_CHECK(rc == 0, HSM_ERR_IO, "cannot close %s: %s", tmp, strerror(errno));
	HSM_CHECK(rename(tmp, path) == 0, HSM_ERR_IO, "cannot rename to %s: %s", path,
	          strerror(errno));
	made = false;
	HSM_TRY(hsm_fsync_dir(dir));
out:
	if (fd >= 0)
		close(fd);
	if (made)
		unlink(tmp);
	return res;
}

hsm_result hsm_dir_private(const char *dir)
{
	struct stat st;
	HSM_ENSURE(stat(dir, &st) == 0, HSM_ERR_IO, "cannot read the permissions of %s: %s", dir,
	           strerror(errno));
	mode_t w = st.st_mode & (S_IWGRP | S_IWOTH);
	HSM_ENSURE(w == 0, HSM_ERR_VALIDATION,
	           "%s is writable by %s (mode %04o): another user could plant a file or a "
	           "symbolic link where hsmd or hsmctl writes a secret or an audit file; make it "
	           "private: chmod go-w %s (0700 is best)",
	           dir, w == S_IWGRP ? "its group" : w == S_IWOTH ? "others" : "its group and others",
	           (unsigned)(st.st_mode & 07777), dir);
	return HSM_SUCCESS;
}

hsm_result hsm_mkdir_private(const char *path)
{
	HSM_GUARD(hsm_mkdir_p(path));
	return hsm_dir_private(path);
}

const char *hsm_path_base(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash ? slash + 1 : path;
}

const char *hsm_env_region(void)
{
	static const char *const names[] = {"AWS_REGION", "AWS_DEFAULT_REGION"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = getenv(names[i]);
		if (v != NULL && *v != '\0')
			return v;
	}
	return "us-east-1";
}

const char *hsm_own_file_error(int err)
{
	return err == ELOOP ? "it is a symbolic link, which hsmd does not follow in place of its "
	                      "own file (move it away)"
	                    : strerror(err);
}

hsm_result hsm_copy_file_into(const char *path, const char *dir)
{
	hsm_result res = HSM_SUCCESS;
	char tmp[PATH_MAX] = "", final[PATH_MAX];
	const char *name = hsm_path_base(path);
	int src = -1, dst = -1;
	uint8_t *buf = malloc(COPY_CHUNK);
	HSM_CHECK(buf != NULL, HSM_ERR_NOMEM, "out of memory");
	struct stat st;
	HSM_CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode), HSM_ERR_IO,
	          "%s is not there (or not a directory): a copy never makes it again, which on a "
	          "mount that went away would put the copy on this machine's own disk",
	          dir);
	HSM_CHECK((size_t)snprintf(final, sizeof(final), "%s/%s", dir, name) < sizeof(final) &&
	              (size_t)snprintf(tmp, sizeof(tmp), "%s/.%s.part", dir, name) < sizeof(tmp),
	          HSM_ERR_VALIDATION, "path too long: %s/%s", dir, name);
	src = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW); /* hsmd's own file, never a link */
	HSM_CHECK(src >= 0, HSM_ERR_IO, "cannot open %s: %s", path, hsm_own_file_error(errno));
	unlink(tmp); /* a temporary left by a crash */
	dst = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	HSM_CHECK(dst >= 0, HSM_ERR_IO, "cannot create %s: %s", tmp, hsm_own_file_error(errno));
	for (;;) {
		ssize_t got = read(src, buf, COPY_CHUNK);
		if (got < 0 && errno == EINTR)
			continue;
		HSM_CHECK(got >= 0, HSM_ERR_IO, "cannot read %s: %s", path, strerror(errno));
		if (got == 0)
			break;
		HSM_TRY(write_all(dst, buf, (size_t)got, tmp));
	}
	HSM_CHECK(fsync(dst) == 0, HSM_ERR_IO, "cannot sync %s: %s", tmp, strerror(errno));
	HSM_CHECK(close(dst) == 0, HSM_ERR_IO, "cannot close %s: %s", tmp, strerror(errno));
	dst = -1;
	HSM_CHECK(rename(tmp, final) == 0, HSM_ERR_IO, "cannot rename %s: %s", tmp, strerror(errno));
	tmp[0] = '\0';
	HSM_TRY(hsm_fsync_dir(dir));
out:
	if (src >= 0)
		close(src);
	if (dst >= 0)
		close(dst);
	if (tmp[0] != '\0')
		unlink(tmp);
	free(buf);
	return res;
}

hsm_result hsm_mkdir_p(const char *path)
{
	char tmp[PATH_MAX];
	/* The loop below starts past the first byte: an empty path has none. */
	HSM_ENSURE(path[0] != '\0', HSM_ERR_VALIDATION, "the directory path is empty");
	HSM_GUARD(hsm_strcpy(tmp, sizeof(tmp), path));
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
			return HSM_FAIL(HSM_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
		*p = '/';
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return HSM_FAIL(HSM_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
	struct stat st;
	HSM_ENSURE(stat(tmp, &st) == 0 && S_ISDIR(st.st_mode), HSM_ERR_IO, "%s is not a directory",
	           tmp);
	return HSM_SUCCESS;
}

bool hsm_ct_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

uint64_t hsm_fnv1a(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 14695981039346656037ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}
