/*
 * util.h - small helpers: time, identifiers, strings, files.
 */
#ifndef HSM_UTIL_H
#define HSM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/result.h"

struct hsm_buf;

#define HSM_UUID_STRLEN 36

/* Wall-clock time in seconds / milliseconds since the epoch (UTC). */
int64_t hsm_now(void);
int64_t hsm_now_ms(void);
/* Monotonic clock in nanoseconds, for latencies and timeouts. */
uint64_t hsm_mono_ns(void);
/*
 * Formats t (epoch seconds) as "2026-11-29T01:30:12Z"; out must hold 21 bytes.
 * A time outside 0000-01-01T00:00:00Z..9999-12-31T23:59:59Z (which files and
 * rows read from outside can claim) is written as its number of seconds in
 * decimal, e.g. "253402300800" (digits, with a '-' if negative).  out is
 * always a NUL-terminated string of one of these two forms.
 */
void hsm_format_time(int64_t t, char out[21]);
/*
 * Same with milliseconds: "2026-11-29T01:30:12.345Z"; out must hold 25 bytes.
 * Out of the same range: the number of milliseconds in decimal.
 */
void hsm_format_time_ms(int64_t t_ms, char out[25]);

/*
 * Names the calling thread for ps, top -H and perf (at most 15 characters are
 * kept).  Best effort: a name that cannot be set changes nothing else.
 */
void hsm_thread_name(const char *name);
/* The same for one of a pool: prefix, a dash and index ("hsmd-http-0"). */
void hsm_thread_name_n(const char *prefix, unsigned index);

/*
 * Puts the calling thread under SCHED_BATCH, keeping its nice value.  A
 * thread of that policy that wakes up does not preempt the thread running on
 * its core: it runs on an idle core, or when the running thread sleeps or
 * its time slice ends.  Only the default policy is changed: a thread the
 * operator started under another one (chrt: real-time, idle) keeps it.
 * Returns false, with errno set, when the policy could not be read or set;
 * the thread then runs as before.
 */
bool hsm_thread_batch(void);

/*
 * Calls put off to a later point of one thread (the end of an HTTP worker's
 * loop pass, of a lane thread's batch), each made once however often it was
 * asked for.  Zero-initialised is empty.
 */
#define HSM_CALLS_MAX 4
typedef struct hsm_calls {
	struct {
		void (*fn)(void *);
		void *arg;
	} at[HSM_CALLS_MAX];
	size_t n;
} hsm_calls;
/* Adds fn(arg) unless it is there already; with the list full, calls it now. */
void hsm_calls_add(hsm_calls *c, void (*fn)(void *), void *arg);
/* Empties the list, then makes its calls in the order they were added. */
void hsm_calls_run(hsm_calls *c);

/* A version-4 (random) UUID in lowercase text form; out holds 37 bytes. */
hsm_result hsm_uuid_new(char out[HSM_UUID_STRLEN + 1]) HSM_MUST_CHECK;
bool hsm_is_uuid(const char *s);

/*
 * The build's version: the release (HSM_VERSION) and, as semantic-version
 * build metadata, the commit it was built from ("0.1.0+g1a2b3c4d5e6f", with
 * ".dirty" when the tree had changes; "+unknown" outside a git checkout).
 */
const char *hsm_version(void);

/*
 * A string assembled in a fixed buffer, for the short strings built on every
 * request, where snprintf's format parsing costs more than the copying.
 * Always NUL-terminated; what does not fit is cut, as snprintf would, and
 * cut says so.  cap must be at least 1.
 */
typedef struct hsm_sb {
	char *p;
	size_t cap;
	size_t len;
	bool cut;
} hsm_sb;
void hsm_sb_init(hsm_sb *b, char *buf, size_t cap);
void hsm_sb_add(hsm_sb *b, const char *s);
/* At most max bytes of s (snprintf's "%.*s"). */
void hsm_sb_addn(hsm_sb *b, const char *s, size_t max);
void hsm_sb_u64(hsm_sb *b, uint64_t v);

/* Copies src into dst (capacity cap), failing rather than truncating. */
hsm_result hsm_strcpy(char *dst, size_t cap, const char *src) HSM_MUST_CHECK;
bool hsm_str_has_prefix(const char *s, const char *prefix);
/*
 * The length of valid UTF-8 text in UTF-16 code units: AWS's length limits
 * count a string's characters as Java does, a character above U+FFFF (an
 * emoji) as two.
 */
size_t hsm_utf16_units(const char *s);
/*
 * Whether n bytes are valid UTF-8 (RFC 3629: shortest forms, no surrogates,
 * nothing above U+10FFFF; NUL allowed), checked without allocating.
 */
bool hsm_utf8_valid(const void *p, size_t n);
/*
 * Whether s is a region name as hsmd takes one (us-east-1): 1 to 32
 * lowercase letters, digits and '-', a letter first, no '-' last.  The
 * server's `region` setting and the PKCS#11 module's both hold to it.
 */
#define HSM_REGION_NAME_MAX 32
bool hsm_region_name_valid(const char *s);
/*
 * A location as it may be shown in logs and audit records: a URI loses its
 * userinfo (user:password@), its query (?password=...) and its fragment,
 * keeping scheme://hosts/path; anything else (a directory) is copied.
 * Truncated to fit cap.
 */
void hsm_location_shown(const char *location, char *out, size_t cap);
/*
 * Overwrites with '*', in place, every password uri holds (a postgresql:// URI
 * or any other: the userinfo's after its ':', a "password" query parameter's
 * value); true when there was one.  What else it says is left as it was.
 */
bool hsm_uri_mask_password(char *uri);
/*
 * For a program given a store URI on its command line: returns in *copy a copy
 * of argv (argv[argc] NULL; the caller's until the process ends), then masks
 * (hsm_uri_mask_password) each URI in the process's own argument strings,
 * which every user may read in /proc/PID/cmdline.  *masked: whether a
 * password was masked.  The program goes on with the copy.  Called once: a
 * second call frees the copy the first one made.
 */
hsm_result hsm_args_hide_passwords(int argc, char **argv, char ***copy,
                                   bool *masked) HSM_MUST_CHECK;
/* What to tell the operator when hsm_args_hide_passwords masked one. */
#define HSM_ARGS_PASSWORD_WARNING                                                               \
	"the store URI on the command line holds a password: it is masked in the process's "     \
	"arguments now, but until then any user could read it there (ps, /proc/PID/cmdline); "  \
	"put it in ~/.pgpass or the file PGPASSFILE names (mode 0600) and leave it out of the " \
	"URI, or give the URI in HSM_STORE or the configuration file instead"
/* Parses a decimal integer in [min, max]; the whole string must be consumed. */
hsm_result hsm_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out) HSM_MUST_CHECK;

/* Reads a whole file (at most max bytes) into out. */
hsm_result hsm_read_file(const char *path, size_t max, struct hsm_buf *out) HSM_MUST_CHECK;
/* The same for one of hsmd's own files (the dev unseal share): a symbolic link in its
 * place is refused (HSM_ERR_IO naming path), not followed. */
hsm_result hsm_read_own_file(const char *path, size_t max, struct hsm_buf *out) HSM_MUST_CHECK;
/*
 * Writes a file atomically and durably: temp file in the same directory,
 * fsync, rename, fsync of the directory.  mode is the permission of the new file.
 * The temporary (PATH.tmp.<random hex>) is created only where nothing is, never
 * through a symbolic link, and removed on failure.
 */
hsm_result hsm_write_file_atomic(const char *path, const void *p, size_t n,
                                 unsigned mode) HSM_MUST_CHECK;
/*
 * Copies the file at path into dir under its own name, durably: a temporary
 * ".NAME.part" in dir (mode 0600), fsync, rename over NAME, fsync of dir.
 * The temporary is removed on failure.  dir must exist (HSM_ERR_IO
 * otherwise): callers make it at start, and a copy directory that vanished
 * since (a mount gone) must fail the copy, not be made again on local disk.
 */
hsm_result hsm_copy_file_into(const char *path, const char *dir) HSM_MUST_CHECK;
/* The file name of a path: what follows its last '/' (the whole path without one). */
const char *hsm_path_base(const char *path);
/*
 * Why an open of one of hsmd's own files (a lock, an audit file, a copy of
 * one) failed, for a message that names the path: strerror(err), except that
 * ELOOP, which O_NOFOLLOW gives where a symbolic link stands in the file's
 * place, is said as such.  Static text.
 */
const char *hsm_own_file_error(int err);
/*
 * The region a client signs for when none is given: AWS_REGION (the AWS
 * SDKs'), else AWS_DEFAULT_REGION (aws-cli's and boto3's), else "us-east-1",
 * hsmd's default.  Empty values count as unset.
 */
const char *hsm_env_region(void);
/* Creates a directory (mode 0700) unless it already exists. */
hsm_result hsm_mkdir_p(const char *path) HSM_MUST_CHECK;
/*
 * HSM_ERR_VALIDATION, saying how to fix it, when dir (which must exist) is
 * writable by its group or others: secrets are written there (the dev unseal
 * share, audit side files), and another user could plant what they go into.
 */
hsm_result hsm_dir_private(const char *dir) HSM_MUST_CHECK;
/* hsm_mkdir_p, then hsm_dir_private. */
hsm_result hsm_mkdir_private(const char *path) HSM_MUST_CHECK;
/* fsyncs a directory so that a rename or a create inside it is durable. */
hsm_result hsm_fsync_dir(const char *path) HSM_MUST_CHECK;

/* Compares in time independent of the contents (CRYPTO_memcmp). */
bool hsm_ct_equal(const void *a, const void *b, size_t n);

/* FNV-1a over n bytes: a fast hash for cache tables, not for anything an
 * attacker could choose to collide with. */
uint64_t hsm_fnv1a(const void *p, size_t n);

#endif
