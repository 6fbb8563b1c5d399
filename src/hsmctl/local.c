#include "hsmctl/local.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "audit/outbox_rows.h"
#include "common/encoding.h"
#include "common/secret.h"
#include "common/util.h"
#include "crypto/crypto.h"
#include "hsmctl/hsmctl.h"
#include "keystore/share.h"

const hsm_caller hsmctl_local_caller = {.user = "local-operator", .access_key_id = "", .local = true};

/*
 * A share file others may read is a secret others may have: said once a file
 * (init writes them 0400), and read all the same, since an unseal in an
 * emergency must not wait on a chmod.
 */
typedef struct told_file {
	dev_t dev;
	ino_t ino;
} told_file;

static void warn_if_readable(const char *path)
{
	static told_file told[2 * HSM_MAX_SHARES];
	static size_t n_told;
	struct stat st;
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_IRGRP | S_IROTH)) == 0)
		return;
	for (size_t i = 0; i < n_told; i++)
		if (told[i].dev == st.st_dev && told[i].ino == st.st_ino)
			return;
	if (n_told < sizeof(told) / sizeof(told[0]))
		told[n_told++] = (told_file){st.st_dev, st.st_ino};
	fprintf(stderr,
	        "hsmctl: warning: share file %s may be read by its group or others (mode %04o): a "
	        "share is a custodian's secret; keep it private (chmod 400 %s)\n",
	        path, (unsigned)(st.st_mode & 07777), path);
}

hsm_result hsmctl_read_share(const char *path, hsm_buf *text)
{
	HSM_GUARD(hsm_read_file(path, 4096, text));
	warn_if_readable(path);
	size_t w = 0;
	for (size_t r = 0; r < text->len; r++) {
		if (text->data[r] == '\r' && r + 1 < text->len && text->data[r + 1] == '\n')
			continue;
		text->data[w++] = text->data[r];
	}
	if (w < text->len)
		OPENSSL_cleanse(text->data + w, text->len - w);
	text->len = w;
	return HSM_SUCCESS;
}

/* The directory holding path's entry, fsynced so that a new file's name is durable too. */
static hsm_result fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		return hsm_fsync_dir(".");
	size_t len = slash == path ? 1 : (size_t)(slash - path);
	HSM_ENSURE(len < sizeof(dir), HSM_ERR_VALIDATION, "%s: the path is too long", path);
	memcpy(dir, path, len);
	dir[len] = '\0';
	return hsm_fsync_dir(dir);
}

hsm_result hsmctl_write_new_file(const char *path, const uint8_t *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0400);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot create %s: %s", path, strerror(errno));
	ssize_t w = write(fd, p, n);
	int err = w < 0 ? errno : 0;
	bool ok = w == (ssize_t)n;
	if (ok && fsync(fd) != 0) {
		err = errno;
		ok = false;
	}
	close(fd);
	if (!ok) /* a partial file would stand in the way of the next try: it goes */
		unlink(path);
	HSM_ENSURE(ok, HSM_ERR_IO, "cannot write %s: %s", path,
	           err != 0 ? strerror(err) : "short write (disk full?)");
	hsm_result r = fsync_parent(path);
	if (hsm_failed(r))
		unlink(path);
	return r;
}

hsm_result hsmctl_share_fingerprints(const hsm_buf shares[], unsigned n, char *out, size_t cap)
{
	hsm_sb b;
	hsm_sb_init(&b, out, cap);
	for (unsigned i = 0; i < n; i++) {
		uint8_t fp[HSM_SHA256_LEN];
		char hex[2 * HSM_SHA256_LEN + 1], one[40];
		HSM_GUARD(hsm_sha256(shares[i].data, shares[i].len, fp));
		hsm_hex_encode_str(hex, fp, sizeof(fp));
		snprintf(one, sizeof(one), "%s%u:%.16s", i > 0 ? "," : "", i + 1, hex);
		hsm_sb_add(&b, one);
	}
	return HSM_SUCCESS;
}

void hsmctl_custodian_names(char *const names[], unsigned n, char *out, size_t cap)
{
	/* Room for the tail that says how many were left out: a name cut short would be
	 * read as another custodian's. */
	char more[48];
	size_t len = 0;
	HSM_ASSERT(cap > sizeof(more));
	out[0] = '\0';
	for (unsigned i = 0; i < n; i++) {
		size_t add = (i > 0 ? 1 : 0) + strlen(names[i]);
		bool last = i + 1 == n;
		if (len + add >= (last ? cap : cap - sizeof(more))) {
			snprintf(more, sizeof(more), "%s+%u more (named in the transcript)",
			         i > 0 ? "," : "", n - i);
			memcpy(out + len, more, strlen(more) + 1);
			return;
		}
		snprintf(out + len, cap - len, "%s%s", i > 0 ? "," : "", names[i]);
		len += add;
	}
}

/*
 * path made absolute, its longest existing part with symlinks resolved
 * (realpath) and the rest, which does not exist yet, appended as written
 * ("." and ".." read lexically: they cross no symlink).
 */
static hsm_result resolve_path(const char *path, char out[PATH_MAX])
{
	char head[PATH_MAX];
	size_t n = strlen(path);
	HSM_ENSURE(n > 0 && n < sizeof(head), HSM_ERR_VALIDATION, "%s: the path is empty or too long",
	           path);
	memcpy(head, path, n + 1);
	for (;;) {
		while (n > 1 && head[n - 1] == '/')
			head[--n] = '\0';
		if (realpath(head, out) != NULL)
			break;
		HSM_ENSURE(errno == ENOENT, HSM_ERR_IO, "cannot resolve %s: %s", path, strerror(errno));
		char *slash = strrchr(head, '/');
		if (slash == NULL || slash == head) { /* nothing of it exists but "." or "/" */
			HSM_ENSURE(realpath(slash == NULL ? "." : "/", out) != NULL, HSM_ERR_IO,
			           "cannot resolve %s: %s", path, strerror(errno));
			n = 0;
			break;
		}
		*slash = '\0';
		n = (size_t)(slash - head);
	}
	size_t len = strlen(out);
	for (const char *c = path + n; *c != '\0';) {
		size_t k = strcspn(c, "/");
		if (k == 2 && strncmp(c, "..", 2) == 0) {
			char *last = strrchr(out, '/');
			len = last == out ? 1 : (size_t)(last - out);
			out[len] = '\0';
		} else if (k > 0 && !(k == 1 && c[0] == '.')) {
			bool root = len == 1;
			HSM_ENSURE(len + k + 1 < PATH_MAX, HSM_ERR_VALIDATION, "%s: the path is too long",
			           path);
			if (!root)
				out[len++] = '/';
			memcpy(out + len, c, k);
			len += k;
			out[len] = '\0';
		}
		c += k + (c[k] == '/' ? 1 : 0);
	}
	return HSM_SUCCESS;
}

/* Whether the absolute path a is b or inside it. */
static bool path_within(const char *a, const char *b)
{
	size_t n = strlen(b);
	if (strcmp(b, "/") == 0)
		return true;
	return strncmp(a, b, n) == 0 && (a[n] == '\0' || a[n] == '/');
}

/*
 * Whoever may write to a directory above the share directory could move the
 * share directory away and put one of their own in its place, files and
 * all.  Each existing one, from the resolved path's parent up to /, must be
 * this user's or root's, and writable by no one else unless sticky (as /tmp
 * is: others cannot rename what is not theirs there).
 */
static hsm_result share_dir_ancestors_safe(const char *resolved)
{
	char dir[PATH_MAX];
	HSM_GUARD(hsm_strcpy(dir, sizeof(dir), resolved));
	for (char *slash = strrchr(dir, '/'); slash != NULL; slash = strrchr(dir, '/')) {
		if (slash == dir && dir[1] == '\0')
			break; /* "/" was the last one looked at */
		slash[slash == dir ? 1 : 0] = '\0';
		struct stat st;
		if (stat(dir, &st) != 0)
			continue; /* not made yet: hsmctl makes it, private */
		bool others_write = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
		                    (st.st_mode & S_ISVTX) == 0;
		const char *who = others_write ? "may be written by its group or others"
		                               : "belongs to another user";
		HSM_ENSURE((st.st_uid == geteuid() || st.st_uid == 0) && !others_write,
		           HSM_ERR_VALIDATION,
		           "%s, above the share directory, %s (uid %ld, mode %04o): they could put a "
		           "directory of their own in place of the share directory; give one whose "
		           "every parent only this user (uid %ld) or root may write to; nothing was "
		           "created",
		           dir, who, (long)st.st_uid, (unsigned)(st.st_mode & 07777), (long)geteuid());
	}
	return HSM_SUCCESS;
}

hsm_result hsmctl_share_dir_apart(const char *share_dir, const char *data_dir)
{
	char shares[PATH_MAX], data[PATH_MAX];
	HSM_GUARD(resolve_path(share_dir, shares));
	HSM_GUARD(resolve_path(data_dir, data));
	/* Resolved paths only: the message has room for two long ones, not four. */
	HSM_ENSURE(strcmp(shares, data) != 0, HSM_ERR_VALIDATION,
	           "--share-dir is the data directory, %s: its holder would hold the quorum with "
	           "the store; nothing was created",
	           shares);
	HSM_ENSURE(!path_within(shares, data), HSM_ERR_VALIDATION,
	           "--share-dir %s is inside --data-dir %s: its holder would hold the quorum with "
	           "the store; nothing was created",
	           shares, data);
	HSM_ENSURE(!path_within(data, shares), HSM_ERR_VALIDATION,
	           "--data-dir %s is inside --share-dir %s: its holder would hold the store with "
	           "its quorum; nothing was created",
	           data, shares);
	/* The share files and transcript go there: another user who may write to it could
	 * delete or replace them (and with them the quorum) before the custodians take them. */
	HSM_GUARD(share_dir_ancestors_safe(shares));
	struct stat st;
	if (stat(share_dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return HSM_SUCCESS;
	HSM_GUARD(hsm_dir_private(share_dir));
	/* Its owner may write to it whatever its mode says: only this user, or root, who may
	 * write anywhere already (a USB stick mounted for a desktop user is owned by that user). */
	HSM_ENSURE(st.st_uid == geteuid() || st.st_uid == 0, HSM_ERR_VALIDATION,
	           "%s belongs to uid %ld, who could replace the share files before the custodians "
	           "take them: give a directory of this user's (uid %ld) or root's "
	           "(chown %ld %s); nothing was created",
	           share_dir, (long)st.st_uid, (long)geteuid(), (long)geteuid(), share_dir);
	return HSM_SUCCESS;
}

int hsmctl_custodian_list(const char *cmd, char *list, char *out[], unsigned *n)
{
	*n = 0;
	for (char *save = NULL, *t = strtok_r(list, ",", &save); t != NULL;
	     t = strtok_r(NULL, ",", &save)) {
		if (*n == HSM_MAX_SHARES)
			return hsmctl_usage(cmd, "at most %d custodians", HSM_MAX_SHARES);
		/* The split's own checks, made before anything is: a refused command leaves nothing. */
		if (!hsm_share_custodian_valid(t))
			return hsmctl_usage(cmd, "custodian %u, '%.80s': a name is 1 to %d of A-Z a-z "
			                         "0-9 . _ @ -; nothing was created",
			                    *n + 1, t, HSM_SHARE_CUSTODIAN_MAX);
		for (unsigned j = 0; j < *n; j++) {
			if (strcmp(out[j], t) == 0)
				return hsmctl_usage(cmd, "custodian %s is named twice; nothing was created",
				                    t);
			if (strcasecmp(out[j], t) == 0)
				return hsmctl_usage(cmd, "custodians %s and %s differ only by case: name "
				                         "each custodian once (names are unique regardless "
				                         "of case); nothing was created",
				                    out[j], t);
		}
		out[(*n)++] = t;
	}
	return 0;
}

void hsmctl_share_path(const char *dir, const char *custodian, unsigned i, unsigned n, char *out,
                       size_t cap)
{
	if (custodian != NULL)
		snprintf(out, cap, "%s/%s.share", dir, custodian);
	else
		snprintf(out, cap, "%s/share-%u-of-%u.share", dir, i + 1, n);
}

hsm_result hsmctl_unseal_files(hsm_keystore *ks, size_t n, char *const files[])
{
	return hsmctl_unseal_files_noted(ks, n, files, NULL);
}

hsm_result hsmctl_unseal_files_noted(hsm_keystore *ks, size_t n, char *const files[],
                                     hsm_buf *given)
{
	hsm_unseal_progress p = {0};
	hsm_keystore_keep_quorum(ks); /* shares past the quorum are checked against it */
	for (size_t i = 0; i < n; i++) {
		hsm_buf text;
		hsm_buf_init_secure(&text);
		p.share[0] = '\0'; /* a file that cannot be read is named by the error alone */
		hsm_result r = hsmctl_read_share(files[i], &text);
		/* Shares beyond the quorum (every custodian came) are checked, not needed. */
		if (hsm_ok(r) && p.unsealed)
			r = hsm_keystore_check_share(ks, text.data, text.len, &p);
		else if (hsm_ok(r))
			r = hsm_keystore_unseal(ks, text.data, text.len, &p);
		hsm_buf_free(&text);
		if (given != NULL && p.share[0] != '\0' &&
		    hsm_failed(hsm_buf_printf(given, "%s%s", given->len > 0 ? "; " : "", p.share)))
			given->len = 0; /* out of memory: the record names none rather than some */
		if (hsm_failed(r)) {
			char why[HSM_ERRMSG_MAX]; /* the message is rewritten in its own buffer */
			snprintf(why, sizeof(why), "%s", hsm_last_message());
			return HSM_FAIL(r.err, "%s: %s", files[i], why);
		}
	}
	HSM_ENSURE(p.unsealed, HSM_ERR_QUORUM_REQUIRED,
	           "%u of %u shares given; %u more needed to unseal", p.have, p.threshold,
	           p.threshold - p.have);
	return HSM_SUCCESS;
}

static hsm_result local_signer(void *arg, const uint8_t *msg, size_t n, hsm_buf *sig)
{
	return hsm_ks_audit_sign(arg, msg, n, sig);
}

/*
 * The node id of hsmctl's records in data_dir's trail: "hsmctl-<host>-" and
 * eight hex digits of the outbox's hash of the host and the directory's path.
 * Two data directories on one host must not share it: audit verify tells
 * trails apart by their node ids, and read two stores' trails as one log,
 * modified, when both began with hsmctl's records under one name.
 */
static void audit_node(const char *data_dir, char node[80])
{
	char host[64] = "localhost", offline[HSM_OUTBOX_NODE_ID_MAX + 1];
	(void)gethostname(host, sizeof(host) - 1);
	host[strcspn(host, ".")] = '\0';
	hsm_outbox_offline_node(data_dir, offline); /* "hsmctl-" and 16 hex digits */
	snprintf(node, 80, "hsmctl-%.50s-%.8s", host, offline + strlen("hsmctl-"));
}

static hsm_result open_audit(const char *data_dir, hsm_audit **out)
{
	char dir[PATH_MAX], node[80];
	HSM_ENSURE((size_t)snprintf(dir, sizeof(dir), "%s/audit", data_dir) < sizeof(dir),
	           HSM_ERR_VALIDATION, "--data-dir is too long");
	audit_node(data_dir, node);
	/* The node's audit_retention_days and audit_copy_dir are not known here: retention is
	 * the node's alone, and hsmctl never runs it. */
	hsm_audit_config cfg = {.dir = dir, .node_id = node, .no_retention = true};
	return hsm_audit_open(&cfg, out);
}

/* ---- The audit outbox of offline changes (local.h) ------------------------- */

typedef struct hsmctl_outbox {
	hsm_store_intent intent;
	char node[HSM_OUTBOX_NODE_ID_MAX + 1]; /* hsm_outbox_offline_node(data_dir) */
	char request[HSM_UUID_STRLEN + 1];     /* the next record's request id */
	char operation[HSM_OUTBOX_OPERATION_MAX + 1];
	char principal[32];
	hsm_outbox_rows done; /* rows whose records are written: they go at close */
	uint64_t below; /* every record of done has a number below this */
} hsmctl_outbox;

static void local_principal(char *out, size_t cap)
{
	snprintf(out, cap, "local:uid=%u", (unsigned)getuid());
}

/* "hsmctl <command [sub]>": what an offline change's row names. */
static void local_operation(char *out, size_t cap)
{
	snprintf(out, cap, "hsmctl %s", hsmctl_globals.command != NULL ? hsmctl_globals.command : "");
}

hsm_result hsmctl_early_change_init(hsmctl_early_change *c, const char *data_dir)
{
	memset(c, 0, sizeof(*c));
	HSM_GUARD(hsm_uuid_new(c->request));
	hsm_outbox_offline_node(data_dir, c->node);
	local_operation(c->operation, sizeof(c->operation));
	local_principal(c->principal, sizeof(c->principal));
	c->intent.node_id = c->node;
	c->intent.request_id = c->request;
	c->intent.operation = c->operation;
	c->intent.principal = c->principal;
	c->intent.source = "hsmctl";
	return HSM_SUCCESS;
}

/* The intent for the next change: a new request id, which the next record carries. */
static hsm_result outbox_arm(hsmctl_outbox *o)
{
	hsm_store_intent_end();
	HSM_GUARD(hsm_uuid_new(o->request));
	memset(&o->intent, 0, sizeof(o->intent));
	o->intent.node_id = o->node;
	o->intent.request_id = o->request;
	o->intent.operation = o->operation;
	o->intent.principal = o->principal;
	o->intent.source = "hsmctl";
	hsm_store_intent_begin(&o->intent);
	return HSM_SUCCESS;
}

static bool outbox_note_done(hsmctl_outbox *o, const char *node, const char *id)
{
	hsm_outbox_rows *d = &o->done;
	if (d->n == d->cap) {
		size_t cap = d->cap != 0 ? d->cap * 2 : 8;
		hsm_outbox_row *nv = realloc(d->v, cap * sizeof(*nv));
		if (nv == NULL)
			return false;
		d->v = nv;
		d->cap = cap;
	}
	hsm_outbox_row *w = &d->v[d->n++];
	memset(w, 0, sizeof(*w));
	snprintf(w->node, sizeof(w->node), "%s", node);
	snprintf(w->id, sizeof(w->id), "%s", id);
	return true;
}

static void outbox_free(hsmctl_outbox *o)
{
	if (o == NULL)
		return;
	hsm_outbox_rows_free(&o->done);
	free(o);
}

static const char *why_lost(const hsm_outbox_row *row, void *arg)
{
	(void)row;
	(void)arg;
	return "hsmctl stopped before writing it (or its trail failed it)";
}

/* Rows to settle: all but the adopted one (outbox_open), this command's own change. */
static bool not_adopted(const char *request_id, void *adopted)
{
	return strcmp(request_id, adopted) != 0;
}

/*
 * The rows earlier offline commands on data_dir's store left (hsmctl stopped
 * between a change and its record; hsm_outbox_rows_list_offline: on SQLite,
 * also those written while the directory had another path or host name): a
 * record in place of each the trail does not hold; all of them go at close, once those records are durable.  On a
 * failure they stay for the next command or hsmd (warned): what was written
 * meanwhile is found then, and a trail that cannot be written fails this
 * command's own records anyway.
 */
static void outbox_settle(hsmctl_local *l, hsmctl_outbox *o, const char *data_dir,
                          const char *adopted)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/audit", data_dir);
	const char *dirs[] = {dir};
	hsm_outbox_rows rows = {0};
	size_t recorded = 0;
	hsm_result r = hsm_outbox_rows_list_offline(l->store, data_dir,
	                                            adopted != NULL ? not_adopted : NULL,
	                                            (void *)(uintptr_t)adopted, &rows);
	if (hsm_ok(r))
		r = hsm_outbox_rows_record_missing(&rows, dirs, 1, l->audit, o->principal, why_lost, NULL,
		                                   &recorded);
	if (recorded > 0)
		fprintf(stderr, "hsmctl: %zu offline change(s) an earlier hsmctl made without a record "
		                "(it stopped first) are recorded now as " HSM_OUTBOX_RECOVERED_EVENT "\n",
		        recorded);
	if (hsm_failed(r))
		fprintf(stderr, "hsmctl: warning: the offline changes an earlier hsmctl left unrecorded "
		                "could not all be settled (%s); they stay for the next command or hsmd\n",
		        hsm_last_message());
	for (size_t i = 0; hsm_ok(r) && i < rows.n; i++)
		if (!outbox_note_done(o, rows.v[i].node, rows.v[i].id))
			break; /* the rest stay: found next time */
	o->below = hsm_audit_next_seq(l->audit);
	hsm_outbox_rows_free(&rows);
}

/* adopted: the request id of a change already made (hsmctl_early_change), or NULL. */
static hsm_result outbox_open(hsmctl_local *l, const char *data_dir, const char *adopted)
{
	hsmctl_outbox *o = calloc(1, sizeof(*o));
	HSM_ENSURE(o != NULL, HSM_ERR_NOMEM, "out of memory");
	l->outbox = o;
	hsm_outbox_offline_node(data_dir, o->node);
	local_operation(o->operation, sizeof(o->operation));
	local_principal(o->principal, sizeof(o->principal));
	outbox_settle(l, o, data_dir, adopted);
	HSM_GUARD(outbox_arm(o));
	if (adopted != NULL) {
		/* The next record is the change's: its row is written, so it goes at close. */
		HSM_ENSURE(strlen(adopted) < sizeof(o->request), HSM_ERR_INTERNAL, "request id too long");
		memcpy(o->request, adopted, strlen(adopted) + 1);
		o->intent.written = true;
	}
	return HSM_SUCCESS;
}

/* At close, the trail closed (whole: every thread stopped, records below durable are durable). */
static void outbox_close(hsmctl_local *l, bool whole, uint64_t durable)
{
	hsmctl_outbox *o = l->outbox;
	if (o == NULL)
		return;
	hsm_store_intent_end();
	if (o->done.n > 0 && whole && durable >= o->below && l->store != NULL &&
	    hsm_failed(hsm_outbox_rows_delete(l->store, &o->done)))
		fprintf(stderr, "hsmctl: warning: the audit outbox rows of this command's recorded "
		                "changes stay (%s); the next command or hsmd finds their records\n",
		        hsm_last_message());
	outbox_free(o);
	l->outbox = NULL;
}

hsm_result hsmctl_local_audit(hsmctl_local *l, const char *operation, const char *key_id,
                              uint32_t version, hsm_result outcome)
{
	return hsmctl_local_audit_fields(l, operation, key_id, version, outcome, NULL, 0);
}

hsm_result hsmctl_local_name_change(hsmctl_local *l, const char *detail)
{
	hsmctl_outbox *o = l->outbox;
	if (o == NULL)
		return HSM_SUCCESS;
	char op[sizeof(o->operation)];
	local_operation(op, sizeof(op));
	HSM_ENSURE((size_t)snprintf(o->operation, sizeof(o->operation), "%s %s", op, detail) <
	               sizeof(o->operation),
	           HSM_ERR_INTERNAL, "the operation's detail does not fit its outbox row");
	return HSM_SUCCESS;
}

bool hsmctl_local_noted(const hsmctl_local *l)
{
	return l->outbox != NULL && l->outbox->intent.written;
}

hsm_result hsmctl_local_audit_fields(hsmctl_local *l, const char *operation, const char *key_id,
                                     uint32_t version, hsm_result outcome,
                                     const hsm_audit_field *extra, size_t n_extra)
{
	char who[64];
	local_principal(who, sizeof(who));
	hsmctl_outbox *o = l->outbox;
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_REQUEST,
	    .principal = who,
	    .source = "hsmctl",
	    .operation = operation,
	    .key_id = key_id,
	    .key_version = version,
	    .outcome = hsm_ok(outcome) ? HSM_AUDIT_SUCCESS : HSM_AUDIT_ERROR,
	    .error = hsm_ok(outcome) ? NULL : hsm_err_kms_name(outcome.err),
	    .extra = extra,
	    .n_extra = n_extra,
	    .request_id = o != NULL ? o->request : NULL,
	};
	hsm_result r = hsm_audit_append(l->audit, &rec);
	if (o == NULL)
		return r;
	/* A change this record is for: its row goes at close (one not noted is found later). */
	if (hsm_ok(r) && o->intent.written && outbox_note_done(o, o->node, o->request))
		o->below = hsm_audit_next_seq(l->audit);
	hsm_result armed = outbox_arm(o);
	return hsm_ok(r) ? armed : r;
}

hsm_result hsmctl_local_explain(hsmctl_local *l, size_t n_shares, hsm_result r)
{
	int have = l->store != NULL ? hsm_store_schema_version(l->store) : 0;
	if (r.err == HSM_ERR_STORE && l->unmigrated && have < hsm_store_schema_latest(l->store)) {
		/* Read as it is before any change: a store older than these reads knows stays so. */
		char why[HSM_ERRMSG_MAX];
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		return HSM_FAIL(HSM_ERR_STORE,
		                "%.300s; the store has schema version %d, older than this hsmctl's %d, "
		                "and the command's checks could not read it as it is, so nothing was "
		                "changed: start the upgraded hsmd on it once (it brings the store "
		                "forward), then run this again",
		                why, have, hsm_store_schema_latest(l->store));
	}
	if (r.err != HSM_ERR_SEALED || n_shares > 0 || l->ks == NULL ||
	    hsm_keystore_state(l->ks) != HSM_NODE_SEALED)
		return r;
	/* Offline, nothing is sealed but this run's keystore: "hsmd is sealed" misleads. */
	hsm_unseal_progress p;
	hsm_keystore_unseal_status(l->ks, &p);
	return HSM_FAIL(HSM_ERR_QUORUM_REQUIRED,
	                "this needs the master key: give a quorum of the custodians' share files, "
	                "--share FILE for each of %u shares",
	                p.threshold);
}

const char *hsmctl_store_location(const char *data_dir)
{
	const char *shared = hsmctl_globals.store;
	return shared != NULL && shared[0] != '\0' ? shared : data_dir;
}

/*
 * The account and region of the store's keys (their ARNs, the default key
 * policy's root principal): the store's record of them, else those given.
 * Without either, placeholders that no key may be made with (key create
 * checks identity_known): a key made under an account the nodes do not have
 * would stop them starting on the store.
 */
static hsm_result local_identity(hsmctl_local *l)
{
	HSM_GUARD(hsm_kms_account_recorded(l->store, l->account, l->region, &l->identity_recorded));
	const char *account = hsmctl_globals.key_account, *region = hsmctl_globals.key_region;
	l->identity_known = l->identity_recorded || (account != NULL && region != NULL);
	if (!l->identity_recorded)
		snprintf(l->account, sizeof(l->account), "%s",
		         l->identity_known ? account : "000000000000");
	if (!l->identity_recorded)
		snprintf(l->region, sizeof(l->region), "%s", l->identity_known ? region : "unset");
	return HSM_SUCCESS;
}

hsm_result hsmctl_local_migrate(hsmctl_local *l)
{
	if (!l->unmigrated)
		return HSM_SUCCESS;
	HSM_GUARD(hsm_store_migrate(l->store));
	l->unmigrated = false;
	l->gate.passed = true;
	return outbox_open(l, l->data_dir, l->adopted);
}

/* l->caller's commit gate: every operation calls it right before its first change. */
static hsm_result migrate_at_commit(void *arg)
{
	return hsmctl_local_migrate(arg);
}

/* Set on l where it stays: the gate points back at it. */
static void local_caller(hsmctl_local *l)
{
	l->caller = hsmctl_local_caller;
	memset(&l->gate, 0, sizeof(l->gate));
	l->gate.fn = migrate_at_commit;
	l->gate.arg = l;
	l->gate.passed = !l->unmigrated;
	l->caller.gate = &l->gate;
}

/* How local_open opens the store. */
enum open_mode {
	OPEN_CHANGE,  /* an existing store, as it is until hsmctl_local_migrate */
	OPEN_CREATE,  /* made when missing (init, restore); an existing one as it is */
	OPEN_INSPECT, /* an existing store, as it is, for good */
};

static hsm_result local_kms(hsmctl_local *l)
{
	hsm_kms_config cfg = {.region = l->region, .account_id = l->account};
	return hsm_kms_new(l->store, l->ks, &cfg, &l->kms);
}

static hsm_result local_open(const char *data_dir, enum open_mode mode, bool noting,
                             size_t n_shares, char *const shares[], const char *adopted,
                             hsmctl_local *out)
{
	bool inspect = mode == OPEN_INSPECT;
	hsm_result res = HSM_SUCCESS;
	hsmctl_local l = {0};
	HSM_ENSURE(data_dir != NULL, HSM_ERR_VALIDATION, "--data-dir is required");
	HSM_TRY(hsm_secure_process_init(HSM_SECURE_HEAP_DEFAULT));
	/*
	 * Only init and restore make a store: a mistyped directory is named, not
	 * filled.  An existing store is opened as it is: whatever may still
	 * refuse the command (its shares, its arguments against what the store
	 * holds) is checked first, and an older schema is brought forward only
	 * by hsmctl_local_migrate, once the command is sure to change the store.
	 */
	if (mode == OPEN_CREATE)
		HSM_TRY(hsm_store_open_unmigrated(hsmctl_store_location(data_dir), &l.store));
	else
		HSM_TRY(hsm_store_open_existing(hsmctl_store_location(data_dir), &l.store));
	HSM_TRY(open_audit(data_dir, &l.audit));
	/* The keystore reads only the metadata, which every schema has. */
	HSM_TRY(hsm_keystore_new(l.store, 0, &l.ks));
	HSM_CHECK(hsm_keystore_state(l.ks) != HSM_NODE_ERROR, HSM_ERR_NODE_ERROR,
	          "self-test failed: %s", hsm_keystore_error_reason(l.ks));
	if (n_shares > 0) {
		/* Rebuilding the master key is an unseal wherever it happens: on the trail, as hsmd's. */
		hsm_buf given = {0};
		res = hsmctl_unseal_files_noted(l.ks, n_shares, shares, &given);
		hsm_result audited = HSM_SUCCESS;
		if (hsm_ok(hsm_buf_terminate(&given))) {
			hsm_audit_field f[] = {{"shares", (const char *)given.data}};
			audited = hsmctl_local_audit_fields(&l, "Unseal", NULL, 0, res, f,
			                                    given.len > 0 ? 1 : 0);
		} else {
			audited = hsmctl_local_audit(&l, "Unseal", NULL, 0, res);
		}
		hsm_buf_free(&given);
		HSM_TRY(res);
		HSM_TRY(audited);
		hsm_audit_set_signer(l.audit, local_signer, l.ks);
	}
	HSM_TRY(local_identity(&l));
	HSM_TRY(local_kms(&l));
	/* A read-only command's outbox needs the store's current schema: it is not migrated. */
	if (inspect && noting &&
	    hsm_store_schema_version(l.store) == hsm_store_schema_latest(l.store))
		HSM_TRY(outbox_open(&l, data_dir, NULL));
	l.data_dir = data_dir;
	l.adopted = adopted;
	l.unmigrated = !inspect;
	*out = l;
	memset(&l, 0, sizeof(l));
	local_caller(out);
out:
	hsmctl_local_close(&l);
	return res;
}

/* Opened as it is, then migrated at once: for a command with nothing left to refuse. */
static hsm_result open_migrated(hsm_result opened, hsmctl_local *out)
{
	HSM_GUARD(opened);
	hsm_result r = hsmctl_local_migrate(out);
	if (hsm_failed(r))
		hsmctl_local_close(out);
	return r;
}

hsm_result hsmctl_local_open_as_is(const char *data_dir, size_t n_shares, char *const shares[],
                                   hsmctl_local *out)
{
	return local_open(data_dir, OPEN_CHANGE, false, n_shares, shares, NULL, out);
}

hsm_result hsmctl_local_open(const char *data_dir, size_t n_shares, char *const shares[],
                             hsmctl_local *out)
{
	return open_migrated(hsmctl_local_open_as_is(data_dir, n_shares, shares, out), out);
}

hsm_result hsmctl_local_create_as_is(const char *data_dir, hsmctl_local *out)
{
	return local_open(data_dir, OPEN_CREATE, false, 0, NULL, NULL, out);
}

hsm_result hsmctl_local_open_adopting(const char *data_dir, size_t n_shares, char *const shares[],
                                      const char *request_id, hsmctl_local *out)
{
	return open_migrated(
	    local_open(data_dir, OPEN_CREATE, false, n_shares, shares, request_id, out), out);
}

hsm_result hsmctl_local_inspect(const char *data_dir, size_t n_shares, char *const shares[],
                                hsmctl_local *out)
{
	return local_open(data_dir, OPEN_INSPECT, false, n_shares, shares, NULL, out);
}

hsm_result hsmctl_local_inspect_noting(const char *data_dir, size_t n_shares,
                                       char *const shares[], hsmctl_local *out)
{
	return local_open(data_dir, OPEN_INSPECT, true, n_shares, shares, NULL, out);
}

void hsmctl_local_close(hsmctl_local *l)
{
	hsm_kms_free(l->kms);
	uint64_t durable = 0;
	/* Its shutdown checkpoint is still signed when unsealed. */
	bool whole = l->audit != NULL && hsm_audit_close_durable(l->audit, &durable);
	outbox_close(l, whole, durable);
	hsm_keystore_free(l->ks);
	hsm_store_close(l->store);
	memset(l, 0, sizeof(*l));
}
