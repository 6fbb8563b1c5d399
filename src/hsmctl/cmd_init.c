/*
 * cmd_init.c - hsmctl init: the key ceremony that creates a store.
 *
 * Creates the data directory and its master key, writes one share file per
 * custodian and a ceremony transcript: what was created, when, with which
 * quorum, each share file's fingerprint (so every custodian can confirm the
 * file they were handed) and the audit public key auditors must keep.  The
 * files are all written, durably, before the store records the master key:
 * a store is initialized once, and one whose shares exist nowhere could
 * never be unsealed nor initialized again.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/encoding.h"
#include "common/log.h"
#include "common/util.h"
#include "crypto/crypto.h"
#include "hsmctl/hsmctl.h"
#include "kms/kms.h"
#include "hsmctl/local.h"
#include "keystore/keystore.h"
#include "keystore/share.h"

typedef struct init_opts {
	const char *data_dir;
	const char *share_dir;
	unsigned shares, threshold;
	char *custodians[HSM_MAX_SHARES];
	char *custodian_list;
	const char *admin;
	bool custodian_users;
} init_opts;

/* One name a share: without --shares, as many shares as names (as rekey takes them). */
static int parse_custodians(init_opts *o, bool shares_given)
{
	unsigned n = 0;
	int rc = hsmctl_custodian_list("init", o->custodian_list, o->custodians, &n);
	if (rc != 0)
		return rc;
	if (!shares_given)
		o->shares = n;
	if (n != o->shares)
		return hsmctl_usage("init", "%u custodian names given for %u shares", n, o->shares);
	return 0;
}

static int parse_init(int argc, char **argv, init_opts *o)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'}, {"share-dir", required_argument, NULL, 's'},
	    {"shares", required_argument, NULL, 'n'},   {"threshold", required_argument, NULL, 't'},
	    {"custodians", required_argument, NULL, 'c'}, {"admin", required_argument, NULL, 'a'},
	    {"custodian-users", no_argument, NULL, 'u'},
	    {NULL, 0, NULL, 0}};
	int64_t v;
	bool shares_given = false;
	o->shares = HSM_DEFAULT_SHARES;
	o->threshold = HSM_DEFAULT_THRESHOLD;
	hsmctl_seen seen = {0};
	for (int c, i = -1; (c = getopt_long(argc, argv, "", longopts, &i)) != -1; i = -1) {
		if (hsmctl_getopt_once(&seen, "init", longopts, i) != 0)
			return 2;
		switch (c) {
		case 'd': o->data_dir = optarg; break;
		case 's': o->share_dir = optarg; break;
		case 'c': o->custodian_list = optarg; break;
		case 'a': o->admin = optarg; break;
		case 'u': o->custodian_users = true; break;
		case 'n':
		case 't':
			if (hsm_failed(hsm_parse_i64(optarg, 1, HSM_MAX_SHARES, &v)))
				return hsmctl_usage("init", "--%s must be 1..%d",
				                    c == 'n' ? "shares" : "threshold", HSM_MAX_SHARES);
			*(c == 'n' ? &o->shares : &o->threshold) = (unsigned)v;
			shares_given |= c == 'n';
			break;
		default: return hsmctl_usage("init", "unknown option");
		}
	}
	if (o->data_dir == NULL || o->share_dir == NULL)
		return hsmctl_usage("init", "--data-dir and --share-dir are required");
	if (o->custodian_users && o->custodian_list == NULL)
		return hsmctl_usage("init", "--custodian-users needs --custodians");
	if (o->custodian_list != NULL) {
		int rc = parse_custodians(o, shares_given);
		if (rc != 0)
			return rc;
	}
	/*
	 * Checked before anything is made: a refused init leaves no store behind.
	 * A ceremony's store always has a quorum: 1-of-1 is hsmd --dev's alone.
	 */
	if (hsm_failed(hsm_keystore_check_quorum(o->threshold, o->shares, false)))
		return hsmctl_usage("init", "%s", hsm_last_message());
	return 0;
}

static void share_path(const init_opts *o, unsigned i, char *out, size_t cap)
{
	hsmctl_share_path(o->share_dir, o->custodians[0] != NULL ? o->custodians[i] : NULL, i,
	                  o->shares, out, cap);
}

static void credentials_path(const init_opts *o, const char *user, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s.credentials", o->share_dir, user);
}

static hsm_result must_be_new(const char *path)
{
	struct stat st;
	HSM_ENSURE(lstat(path, &st) != 0 && errno == ENOENT, HSM_ERR_ALREADY_EXISTS,
	           "%s already exists: init writes only new files (move it away, or choose another "
	           "--share-dir); nothing was created",
	           path);
	return HSM_SUCCESS;
}

/* The users init makes: valid names, none twice (regardless of case, as the store has it). */
static hsm_result check_users(const init_opts *o)
{
	const char *names[HSM_MAX_SHARES + 1];
	size_t n = 0;
	if (o->admin != NULL)
		names[n++] = o->admin;
	for (unsigned i = 0; o->custodian_users && i < o->shares; i++)
		names[n++] = o->custodians[i];
	for (size_t i = 0; i < n; i++) {
		HSM_GUARD(hsm_kms_user_name_check(names[i]));
		for (size_t j = 0; j < i; j++)
			HSM_ENSURE(strcasecmp(names[i], names[j]) != 0, HSM_ERR_VALIDATION,
			           "user %s is named twice (--admin and --custodians make one user each); "
			           "nothing was created",
			           names[i]);
	}
	return HSM_SUCCESS;
}

/*
 * Before anything is made: every file init writes is new, and the share
 * directory takes files, so that a ceremony refused for them leaves nothing
 * to clean up (the transcript's name holds the new store's id: it cannot
 * exist yet).
 */
static hsm_result check_outputs(const init_opts *o)
{
	char path[PATH_MAX];
	HSM_GUARD(check_users(o));
	for (unsigned i = 0; i < o->shares; i++) {
		share_path(o, i, path, sizeof(path));
		HSM_GUARD(must_be_new(path));
	}
	if (o->admin != NULL) {
		credentials_path(o, o->admin, path, sizeof(path));
		HSM_GUARD(must_be_new(path));
	}
	for (unsigned i = 0; o->custodian_users && i < o->shares; i++) {
		credentials_path(o, o->custodians[i], path, sizeof(path));
		HSM_GUARD(must_be_new(path));
	}
	snprintf(path, sizeof(path), "%s/.hsmctl-init-%ld", o->share_dir, (long)getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot write files in %s: %s; nothing was created",
	           o->share_dir, strerror(errno));
	close(fd);
	unlink(path);
	return HSM_SUCCESS;
}

/* The share files and the transcript init writes before the store commits, in that order. */
typedef struct init_files {
	char paths[HSM_MAX_SHARES + 1][PATH_MAX];
	unsigned written;
} init_files;

static void plan_files(const init_opts *o, const hsm_ks_identity *id, init_files *f)
{
	for (unsigned i = 0; i < o->shares; i++)
		share_path(o, i, f->paths[i], sizeof(f->paths[i]));
	snprintf(f->paths[o->shares], sizeof(f->paths[o->shares]), "%s/ceremony-%s.txt",
	         o->share_dir, id->store_id);
	f->written = 0;
}

/* Deletes what init wrote before its commit failed; false if a file stayed. */
static bool remove_files(const init_opts *o, init_files *f)
{
	bool all = true;
	for (unsigned i = 0; i < f->written; i++)
		if (unlink(f->paths[i]) != 0 && errno != ENOENT) {
			fprintf(stderr, "hsmctl: init: cannot delete %s: %s\n", f->paths[i],
			        strerror(errno));
			all = false;
		}
	f->written = 0;
	if (hsm_failed(hsm_fsync_dir(o->share_dir)))
		hsm_log_failure("init: the deletions may not be durable yet");
	return all;
}

static hsm_result write_transcript(const init_opts *o, const hsm_ks_init *in,
                                   const hsm_ks_identity *id, const hsm_buf shares[],
                                   init_files *f)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf t = {0}, hex = {0};
	char when[21], set[2 * HSM_KS_SET_ID_LEN + 1];
	hsm_format_time(hsm_now(), when);
	hsm_hex_encode_str(set, id->set_id, sizeof(id->set_id));
	/* The share set (`hsmctl status` says split), named as a rekey's transcript names it. */
	HSM_TRY(hsm_buf_printf(&t, "hsmd key ceremony transcript\ndate: %s\nstore: %s\n"
	                           "share set: %s\nquorum: %u of %u custodian shares\n",
	                       when, id->store_id, set, o->threshold, o->shares));
	for (unsigned i = 0; i < o->shares; i++) {
		uint8_t fp[HSM_SHA256_LEN];
		HSM_TRY(hsm_sha256(shares[i].data, shares[i].len, fp));
		hex.len = 0;
		HSM_TRY(hsm_hex_encode(&hex, fp, sizeof(fp)));
		HSM_TRY(hsm_buf_printf(&t, "share %u: %s sha256:%.*s\n", i + 1, f->paths[i],
		                       (int)hex.len, (const char *)hex.data));
	}
	HSM_TRY(hsm_buf_put_str(&t, "audit public key (keep it to verify the audit trail):\n"));
	HSM_TRY(hsm_ks_init_audit_public_pem(in, &t));
	HSM_TRY(hsmctl_write_new_file(f->paths[o->shares], t.data, t.len));
	f->written++;
out:
	hsm_buf_free(&t);
	hsm_buf_free(&hex);
	return res;
}

/*
 * Writes every share file and the transcript, durably (each file and the
 * directory entries), before the store records the master key: a store
 * whose shares exist nowhere could never be unsealed nor initialized again.
 */
static hsm_result write_files(const init_opts *o, const hsm_ks_init *in,
                              const hsm_ks_identity *id, const hsm_buf shares[], init_files *f)
{
	for (unsigned i = 0; i < o->shares; i++) {
		HSM_GUARD(hsmctl_write_new_file(f->paths[i], shares[i].data, shares[i].len));
		f->written++;
	}
	HSM_GUARD(write_transcript(o, in, id, shares, f));
	return hsm_fsync_dir(o->share_dir);
}

/*
 * Creates a user and an access key for it, written as an AWS credentials
 * file (0400) for that person to take.  The first crypto-officer: without
 * one a new store would have no principal able to sign a request.  The
 * custodians (--custodian-users): so that approvals (approval_quorum) can be
 * switched on with the quorum of custodians the ceremony named.
 */
static hsm_result bootstrap_user(const init_opts *o, hsmctl_local *l, const char *name,
                                 unsigned roles)
{
	hsm_result res = HSM_SUCCESS;
	char akid[HSM_ACCESS_KEY_ID_LEN + 1], path[PATH_MAX], role_names[128];
	hsm_secret *secret = NULL;
	hsm_buf text;
	hsm_buf_init_secure(&text);
	HSM_TRY(hsm_roles_format(roles, role_names, sizeof(role_names)));
	/* Audited as hsmd audits CreateUser and CreateAccessKey: naming what they made. */
	hsm_audit_field user[] = {{"target_user", name}, {"target_roles", role_names}};
	hsm_result made = hsm_kms_user_create(l->kms, &hsmctl_local_caller, name, roles);
	HSM_TRY(hsmctl_local_audit_fields(l, "CreateUser", NULL, 0, made, user, 2));
	HSM_TRY(made);
	akid[0] = '\0';
	made = hsm_kms_access_key_create(l->kms, &hsmctl_local_caller, name, akid, &secret);
	hsm_audit_field key[] = {{"target_user", name}, {"target_access_key_id", akid}};
	HSM_TRY(hsmctl_local_audit_fields(l, "CreateAccessKey", NULL, 0, made, key,
	                                  akid[0] != '\0' ? 2 : 1));
	HSM_TRY(made);
	HSM_TRY(hsm_buf_printf(&text, "[%s]\naws_access_key_id = %s\naws_secret_access_key = ",
	                       name, akid));
	HSM_TRY(hsm_buf_put(&text, hsm_secret_bytes(secret), hsm_secret_len(secret)));
	HSM_TRY(hsm_buf_put_str(&text, "\n"));
	credentials_path(o, name, path, sizeof(path));
	HSM_TRY(hsmctl_write_new_file(path, text.data, text.len));
	printf("user: %s (%s)\ncredentials: %s\n", name, role_names, path);
out:
	hsm_secret_free(secret);
	hsm_buf_free(&text);
	return res;
}

static hsm_result init_signer(void *arg, const uint8_t *msg, size_t n, hsm_buf *sig)
{
	return hsm_ks_audit_sign(arg, msg, n, sig);
}

/*
 * The ceremony on the trail: the store, its split and quorum, the custodians
 * named, and each share file's SHA-256 (its first 16 hex digits; the
 * transcript has them whole), never a value.
 */
static hsm_result audit_init(const init_opts *o, hsmctl_local *l, const hsm_buf shares[])
{
	hsm_ks_identity id;
	hsm_keystore_identity(l->ks, &id);
	char set[2 * HSM_KS_SET_ID_LEN + 1], thr[12], cnt[12], names[HSM_AUDIT_VALUE_MAX] = "",
	    prints[HSM_AUDIT_VALUE_MAX] = "";
	hsm_hex_encode_str(set, id.set_id, sizeof(id.set_id));
	snprintf(thr, sizeof(thr), "%u", o->threshold);
	snprintf(cnt, sizeof(cnt), "%u", o->shares);
	if (o->custodians[0] != NULL)
		hsmctl_custodian_names(o->custodians, o->shares, names, sizeof(names));
	HSM_GUARD(hsmctl_share_fingerprints(shares, o->shares, prints, sizeof(prints)));
	hsm_audit_field f[] = {{"store", hsm_keystore_store_id(l->ks)},
	                       {"share_set", set},
	                       {"threshold", thr},
	                       {"shares", cnt},
	                       {"share_sha256", prints},
	                       {"custodians", names}};
	return hsmctl_local_audit_fields(l, "Init", NULL, 0, HSM_SUCCESS, f, names[0] != '\0' ? 6 : 5);
}

/*
 * After the commit: the Init record, the signer and the printout.  The
 * record follows the commit so that the trail never claims an Init that did
 * not happen; a run stopped between the two leaves an initialized store
 * whose shares and transcript are all written, and no Init on the trail
 * (the transcript is the ceremony's record then).
 */
static hsm_result finish_init(const init_opts *o, hsmctl_local *l, const hsm_buf shares[],
                              const init_files *f)
{
	HSM_GUARD(audit_init(o, l, shares));
	hsm_audit_set_signer(l->audit, init_signer, l->ks);
	printf("store: %s\nquorum: %u of %u\n", hsm_keystore_store_id(l->ks), o->threshold,
	       o->shares);
	for (unsigned i = 0; i < o->shares; i++)
		printf("share %u: %s\n", i + 1, f->paths[i]);
	printf("transcript: %s\n", f->paths[o->shares]);
	if (o->admin != NULL)
		HSM_GUARD(bootstrap_user(o, l, o->admin, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR));
	for (unsigned i = 0; o->custodian_users && i < o->shares; i++)
		HSM_GUARD(bootstrap_user(o, l, o->custodians[i], HSM_ROLES_CUSTODIAN));
	printf("Give each custodian exactly one share file; any %u of them unseal this store.\n",
	       o->threshold);
	return HSM_SUCCESS;
}

/* A commit that failed: the files go unless the store may hold them as its shares. */
static hsm_result commit_failed(const init_opts *o, hsm_result r, hsm_ks_init_outcome outcome,
                                init_files *f)
{
	char why[HSM_ERRMSG_MAX];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	if (outcome == HSM_KS_INIT_UNKNOWN)
		return HSM_FAIL(r.err, "%.200s; whether the store was initialized is unknown: the share "
		                       "files were kept in %s; `hsmctl status --data-dir DIR` tells: "
		                       "initialized, they are its shares; not, delete them and run "
		                       "init again",
		                why, o->share_dir);
	return HSM_FAIL(r.err, "%.200s; this init changed nothing in the store, and the share files %s",
	                why,
	                remove_files(o, f) ? "it wrote were deleted"
	                                   : "it wrote could not all be deleted: destroy them");
}

static hsm_result run_init(const init_opts *o)
{
	hsm_result res = HSM_SUCCESS;
	hsmctl_local l = {0};
	hsm_ks_init *in = NULL;
	hsm_ks_init_outcome outcome = HSM_KS_INIT_UNCHANGED;
	hsm_ks_identity id;
	hsm_buf shares[HSM_MAX_SHARES];
	init_files files;
	char why[HSM_ERRMSG_MAX];
	bool opened = false, committed = false;
	memset(shares, 0, sizeof(shares));
	memset(&files, 0, sizeof(files));
	HSM_TRY(hsmctl_share_dir_apart(o->share_dir, o->data_dir));
	HSM_TRY(hsm_mkdir_p(o->share_dir));
	HSM_TRY(check_outputs(o));
	HSM_TRY(hsmctl_local_create_as_is(o->data_dir, &l));
	opened = true;
	/* Refused here (a store already initialized), an older store keeps its schema. */
	HSM_TRY(hsm_ks_init_prepare(l.ks, o->threshold, o->shares,
	                            o->custodians[0] != NULL ? (const char *const *)o->custodians
	                                                     : NULL,
	                            false, shares, &in));
	HSM_TRY(hsmctl_local_migrate(&l));
	hsm_ks_init_identity(in, &id);
	plan_files(o, &id, &files);
	res = write_files(o, in, &id, shares, &files);
	if (hsm_failed(res)) {
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		remove_files(o, &files);
		res = HSM_FAIL(res.err, "%.200s; the store was not initialized: run init again", why);
		goto out;
	}
	res = hsm_ks_init_commit(l.ks, in, &outcome);
	if (hsm_failed(res)) {
		res = commit_failed(o, res, outcome, &files);
		goto out;
	}
	committed = true;
	res = finish_init(o, &l, shares, &files);
out:
	if (opened && !committed && hsm_failed(res)) {
		/*
		 * An Init that failed is on the trail too; one that did not commit
		 * never succeeds, and one that may have says so.
		 */
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		hsm_audit_field unknown[] = {{"store_initialized", "unknown"}};
		if (hsm_failed(hsmctl_local_audit_fields(&l, "Init", NULL, 0, res, unknown,
		                                         outcome == HSM_KS_INIT_UNKNOWN ? 1 : 0)))
			fprintf(stderr, "hsmctl: init: auditing the failure failed: %s\n",
			        hsm_last_message());
		res = HSM_FAIL(res.err, "%s", why);
	}
	/* Checked before, so only a failing disk gets here: say what is left and what to do. */
	if (hsm_failed(res) && committed)
		fprintf(stderr, "hsmctl: init: the store was initialized and its share files and "
		                "transcript are written (listed in %s/ceremony-%s.txt): any %u of them "
		                "unseal it; init stopped before its end (the Init record or the users "
		                "it makes); to start over instead, delete the data directory (it holds "
		                "nothing else yet) and those files, and run init again\n",
		        o->share_dir, id.store_id, o->threshold);
	for (unsigned i = 0; i < HSM_MAX_SHARES; i++)
		hsm_buf_free(&shares[i]);
	hsm_ks_init_free(in);
	hsmctl_local_close(&l);
	return res;
}

int hsmctl_cmd_init(int argc, char **argv)
{
	init_opts o;
	memset(&o, 0, sizeof(o));
	int rc = parse_init(argc, argv, &o);
	if (rc != 0)
		return rc;
	if (hsm_failed(run_init(&o)))
		return hsmctl_fail("init");
	return 0;
}
