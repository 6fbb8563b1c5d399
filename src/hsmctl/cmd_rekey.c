/*
 * cmd_rekey.c - hsmctl rekey: a new master key and new custodians' shares.
 *
 *   hsmctl rekey --data-dir DIR --share OLD... --share-dir NEWDIR
 *                [--shares N] [--threshold M] [--custodians a,b,...]
 *
 * For a stopped store (SQLite: DIR is locked while hsmd runs; PostgreSQL,
 * --store / HSM_STORE: refused while another hsmd session is connected).
 * A quorum of the old shares unseals it; a new DMK is made and split into
 * new share files; every secret of the store is re-wrapped under the new
 * DMK in one store transaction (keystore/rekey.c).  Old shares then open
 * nothing the store holds; backups made before stay theirs.
 *
 * Order of writes: the new share files and a pending transcript
 * (rekey-<store>-<set>.txt.pending, which says the store may still be on the
 * old key) are written and fsynced first, then the store transaction
 * commits, then the transcript is written under its final name and the
 * pending one deleted.  A crash before the commit leaves the store on the
 * old key, the old shares working, new share files of a split the store
 * does not know (refused by name if tried) and the pending transcript; a
 * crash after it leaves the new files ready (and, until the final
 * transcript is written, the pending one).  Only a committed rekey has a
 * transcript without .pending, which says the old shares open nothing.  The
 * reverse order could leave a store on a key whose shares were never
 * written.  A commit that fails deletes the new files and says so; one
 * whose outcome cannot be learned keeps both sets and the pending
 * transcript, and says how to tell which opens the store.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/encoding.h"
#include "common/log.h"
#include "common/util.h"
#include "crypto/crypto.h"
#include "hsmctl/hsmctl.h"
#include "hsmctl/local.h"

typedef struct rekey_opts {
	const char *data_dir, *share_dir;
	char *shares[HSMCTL_MAX_SHARE_ARGS];
	size_t n_shares;
	unsigned count, threshold; /* 0: the store's current quorum */
	char *custodian_list;
	char *custodians[HSM_MAX_SHARES];
	unsigned n_custodians;
} rekey_opts;

/*
 * The files a rekey writes before its commit: one share per custodian, then
 * the pending transcript; and the transcript it writes after the commit.
 */
typedef struct rekey_files {
	char paths[HSM_MAX_SHARES + 1][PATH_MAX];
	unsigned n, written;
	char transcript[PATH_MAX];
} rekey_files;

static int parse_rekey(int argc, char **argv, rekey_opts *o)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'}, {"share", required_argument, NULL, 'S'},
	    {"share-dir", required_argument, NULL, 's'}, {"shares", required_argument, NULL, 'n'},
	    {"threshold", required_argument, NULL, 't'}, {"custodians", required_argument, NULL, 'c'},
	    {NULL, 0, NULL, 0}};
	int64_t v;
	hsmctl_seen seen = {0};
	for (int c, i = -1; (c = getopt_long(argc, argv, "", longopts, &i)) != -1; i = -1) {
		if (c != 'S' && hsmctl_getopt_once(&seen, "rekey", longopts, i) != 0)
			return 2;
		switch (c) {
		case 'd': o->data_dir = optarg; break;
		case 's': o->share_dir = optarg; break;
		case 'c': o->custodian_list = optarg; break;
		case 'S':
			if (o->n_shares == HSMCTL_MAX_SHARE_ARGS)
				return hsmctl_usage("rekey", "too many --share options");
			o->shares[o->n_shares++] = optarg;
			break;
		case 'n':
		case 't':
			if (hsm_failed(hsm_parse_i64(optarg, 1, HSM_MAX_SHARES, &v)))
				return hsmctl_usage("rekey", "--%s must be 1..%d",
				                    c == 'n' ? "shares" : "threshold", HSM_MAX_SHARES);
			*(c == 'n' ? &o->count : &o->threshold) = (unsigned)v;
			break;
		default: return hsmctl_usage("rekey", "unknown option");
		}
	}
	if (optind != argc)
		return hsmctl_usage("rekey", "unexpected argument '%s'", argv[optind]);
	if (o->data_dir == NULL || o->share_dir == NULL)
		return hsmctl_usage("rekey", "--data-dir and --share-dir are required");
	if (o->n_shares == 0)
		return hsmctl_usage("rekey", "give a quorum of the current share files, --share FILE "
		                             "for each");
	if (o->custodian_list == NULL)
		return 0;
	return hsmctl_custodian_list("rekey", o->custodian_list, o->custodians, &o->n_custodians);
}

/*
 * Whether a share file names its custodian (its "custodian" line: no
 * secret).  init and rekey name every share of a split or none.
 */
static bool share_names_custodian(const char *file)
{
	hsm_buf text;
	hsm_buf_init_secure(&text);
	bool named = hsm_ok(hsmctl_read_share(file, &text)) && hsm_ok(hsm_buf_terminate(&text)) &&
	             strstr((const char *)text.data, "\ncustodian ") != NULL;
	hsm_buf_free(&text);
	return named;
}

/*
 * The quorum asked for, the store's current one where not given.  Fewer
 * shares than the current threshold cannot keep it: lowering it is the
 * custodians' choice, said with --threshold, never a default.
 */
static hsm_result resolve_quorum(rekey_opts *o, const hsm_ks_identity *old)
{
	if (o->count == 0)
		o->count = o->n_custodians > 0 ? o->n_custodians : old->count;
	HSM_ENSURE(o->n_custodians == 0 || o->n_custodians == o->count, HSM_ERR_VALIDATION,
	           "%u custodian names given for %u shares", o->n_custodians, o->count);
	HSM_ENSURE(o->threshold != 0 || old->threshold <= o->count, HSM_ERR_VALIDATION,
	           "%u new shares cannot keep the current quorum of %u: give --threshold to "
	           "lower it, or more shares",
	           o->count, old->threshold);
	if (o->threshold == 0)
		o->threshold = old->threshold;
	/* The shares that opened the store are of its current split: a name in one is in all. */
	if (o->n_custodians == 0 && share_names_custodian(o->shares[0]))
		fprintf(stderr, "hsmctl: rekey: warning: the current share files name their "
		                "custodians and the new ones will not: give --custodians to name them\n");
	return HSM_SUCCESS;
}

/* Names every file first, and refuses to overwrite any. */
static hsm_result plan_files(const rekey_opts *o, const char *store_id, const char *set_hex,
                             rekey_files *f)
{
	f->n = o->count + 1;
	for (unsigned i = 0; i < o->count; i++)
		hsmctl_share_path(o->share_dir, o->n_custodians > 0 ? o->custodians[i] : NULL, i,
		                  o->count, f->paths[i], PATH_MAX);
	snprintf(f->transcript, PATH_MAX, "%s/rekey-%s-%s.txt", o->share_dir, store_id, set_hex);
	int n = snprintf(f->paths[o->count], PATH_MAX, "%s.pending", f->transcript);
	HSM_ENSURE(n > 0 && n < PATH_MAX, HSM_ERR_VALIDATION, "--share-dir is too long");
	for (unsigned i = 0; i <= f->n; i++) {
		const char *path = i < f->n ? f->paths[i] : f->transcript;
		struct stat sb;
		HSM_ENSURE(stat(path, &sb) != 0 && errno == ENOENT, HSM_ERR_CONFLICT,
		           "%s already exists: give a --share-dir of its own to the new share files",
		           path);
	}
	return HSM_SUCCESS;
}

/* Deletes the files this run wrote; false if one could not be deleted. */
static bool remove_files(const rekey_opts *o, rekey_files *f)
{
	bool all = true;
	for (unsigned i = 0; i < f->written; i++)
		if (unlink(f->paths[i]) != 0 && errno != ENOENT) {
			fprintf(stderr, "hsmctl: rekey: cannot delete %s: %s\n", f->paths[i],
			        strerror(errno));
			all = false;
		}
	f->written = 0;
	if (hsm_failed(hsm_fsync_dir(o->share_dir)))
		hsm_log_failure("rekey: the deletions may not be durable yet");
	return all;
}

/*
 * The transcript's text.  The pending one, written before the commit, must
 * be true whether or not the commit follows: it says how to tell.  The final
 * one is written only once the store is on the new master key.
 */
static hsm_result transcript_text(const rekey_opts *o, hsmctl_local *l, const char *old_hex,
                                  const char *new_hex, const hsm_ks_identity *old,
                                  const hsm_buf shares[], const rekey_files *f, bool pending,
                                  hsm_buf *t)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf pem = {0};
	char when[21];
	hsm_format_time(hsm_now(), when);
	HSM_TRY(hsm_buf_printf(t, "hsmd rekey transcript%s\ndate: %s\nstore: %s\n",
	                       pending ? " (PENDING: written before the store's commit)" : "", when,
	                       hsm_keystore_store_id(l->ks)));
	HSM_TRY(hsm_buf_printf(t, "old share set: %s (quorum %u of %u): %s\n", old_hex,
	                       old->threshold, old->count,
	                       pending ? "still opens this store unless this rekey committed"
	                               : "no longer opens this store"));
	HSM_TRY(hsm_buf_printf(t, "new share set: %s\nquorum: %u of %u custodian shares\n", new_hex,
	                       o->threshold, o->count));
	for (unsigned i = 0; i < o->count; i++) {
		uint8_t fp[HSM_SHA256_LEN];
		char hex[2 * HSM_SHA256_LEN + 1];
		HSM_TRY(hsm_sha256(shares[i].data, shares[i].len, fp));
		hsm_hex_encode_str(hex, fp, sizeof(fp));
		HSM_TRY(hsm_buf_printf(t, "share %u: %s sha256:%s\n", i + 1, f->paths[i], hex));
	}
	if (pending)
		HSM_TRY(hsm_buf_printf(
		    t,
		    "PENDING: this rekey had not committed when this file was written.  Once it\n"
		    "commits, hsmctl writes %s\n"
		    "and deletes this file.  If this file is left, the rekey was interrupted:\n"
		    "`hsmctl status --data-dir DIR` prints the store's split: %s means nothing\n"
		    "changed (the old shares open the store; the new share files above open\n"
		    "nothing: destroy them); %s means the rekey committed (the new shares\n"
		    "open it).\n",
		    f->transcript, old_hex, new_hex));
	HSM_TRY(hsm_buf_printf(t, "backups made before this rekey open only with the old share "
	                          "set %s\n",
	                       old_hex));
	HSM_TRY(hsm_ks_audit_public_pem(l->ks, &pem));
	HSM_TRY(hsm_buf_put_str(t, "audit public key (unchanged):\n"));
	HSM_TRY(hsm_buf_put(t, pem.data, pem.len));
out:
	hsm_buf_free(&pem);
	return res;
}

/* The pending transcript (before the commit), or the final one (after it). */
static hsm_result write_transcript(const rekey_opts *o, hsmctl_local *l, const char *old_hex,
                                   const char *new_hex, const hsm_ks_identity *old,
                                   const hsm_buf shares[], rekey_files *f, bool pending)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf t = {0};
	HSM_TRY(transcript_text(o, l, old_hex, new_hex, old, shares, f, pending, &t));
	HSM_TRY(hsmctl_write_new_file(pending ? f->paths[o->count] : f->transcript, t.data, t.len));
	if (pending)
		f->written++;
out:
	hsm_buf_free(&t);
	return res;
}

/*
 * After the commit: the transcript under its final name, then the pending
 * one goes.  Failing, the pending one stays, and says how to tell.
 */
static hsm_result finish_transcript(const rekey_opts *o, hsmctl_local *l, const char *old_hex,
                                    const char *new_hex, const hsm_ks_identity *old,
                                    const hsm_buf shares[], rekey_files *f)
{
	HSM_GUARD(write_transcript(o, l, old_hex, new_hex, old, shares, f, false));
	HSM_ENSURE(unlink(f->paths[o->count]) == 0 || errno == ENOENT, HSM_ERR_IO,
	           "cannot delete %s: %s", f->paths[o->count], strerror(errno));
	return hsm_fsync_dir(o->share_dir);
}

/* Writes the share files and the transcript, durably, before the store changes. */
static hsm_result write_files(const rekey_opts *o, hsmctl_local *l, const char *old_hex,
                              const char *new_hex, const hsm_ks_identity *old,
                              const hsm_buf shares[], rekey_files *f)
{
	for (unsigned i = 0; i < o->count; i++) {
		HSM_GUARD(hsmctl_write_new_file(f->paths[i], shares[i].data, shares[i].len));
		f->written++;
	}
	HSM_GUARD(write_transcript(o, l, old_hex, new_hex, old, shares, f, true));
	return hsm_fsync_dir(o->share_dir);
}

/*
 * The Rekey record: both splits and quorums, and once done the counts
 * re-wrapped and the new split's share files as Init names its own (each
 * file's fingerprint and, when named, the custodians), never a share.
 */
static hsm_result audit_rekey(hsmctl_local *l, hsm_result outcome, const char *old_hex,
                              const char *new_hex, const hsm_ks_identity *old,
                              const rekey_opts *o, const hsm_buf shares[],
                              const hsm_store_rekey_counts *c)
{
	char thr[12], cnt[12], othr[12], ocnt[12], versions[24], aks[24];
	char prints[HSM_AUDIT_VALUE_MAX] = "", names[HSM_AUDIT_VALUE_MAX] = "";
	snprintf(thr, sizeof(thr), "%u", o->threshold);
	snprintf(cnt, sizeof(cnt), "%u", o->count);
	snprintf(othr, sizeof(othr), "%u", old->threshold);
	snprintf(ocnt, sizeof(ocnt), "%u", old->count);
	snprintf(versions, sizeof(versions), "%llu", (unsigned long long)c->versions);
	snprintf(aks, sizeof(aks), "%llu", (unsigned long long)c->access_keys);
	size_t n = 6;
	if (hsm_ok(outcome)) {
		HSM_GUARD(hsmctl_share_fingerprints(shares, o->count, prints, sizeof(prints)));
		hsmctl_custodian_names(o->custodians, o->n_custodians, names, sizeof(names));
		n = names[0] != '\0' ? 10 : 9;
	}
	hsm_audit_field f[] = {{"old_share_set", old_hex},  {"old_threshold", othr},
	                       {"old_shares", ocnt},        {"share_set", new_hex},
	                       {"threshold", thr},          {"shares", cnt},
	                       {"key_versions", versions},  {"access_keys", aks},
	                       {"share_sha256", prints},    {"custodians", names}};
	return hsmctl_local_audit_fields(l, "Rekey", NULL, 0, outcome, f, n);
}

static void print_done(const rekey_opts *o, hsmctl_local *l, const char *old_hex,
                       const char *new_hex, const rekey_files *f, const char *transcript,
                       const hsm_store_rekey_counts *c)
{
	printf("store: %s\nold share set: %s\nshare set: %s\nquorum: %u of %u\n",
	       hsm_keystore_store_id(l->ks), old_hex, new_hex, o->threshold, o->count);
	for (unsigned i = 0; i < o->count; i++)
		printf("share %u: %s\n", i + 1, f->paths[i]);
	printf("transcript: %s\n", transcript);
	printf("re-wrapped: %llu key versions, %llu access keys, the audit signing key\n",
	       (unsigned long long)c->versions, (unsigned long long)c->access_keys);
	printf("The old share files no longer open this store; destroy them, except as needed\n"
	       "for backups made before this rekey, which open only with the old shares.  Make a\n"
	       "new backup now.  Unseal every node with the new shares (any %u of them).\n",
	       o->threshold);
}

static hsm_result run_rekey(rekey_opts *o, int *exit_code)
{
	hsm_result res = HSM_SUCCESS;
	hsmctl_local l = {0};
	hsm_ks_rekey *rk = NULL;
	hsm_ks_identity old, neu;
	hsm_store_rekey_counts counts = {0};
	hsm_ks_rekey_outcome outcome = HSM_KS_REKEY_UNCHANGED;
	hsm_buf shares[HSM_MAX_SHARES];
	rekey_files files;
	char old_hex[2 * HSM_KS_SET_ID_LEN + 1], new_hex[2 * HSM_KS_SET_ID_LEN + 1] = "";
	char why[HSM_ERRMSG_MAX];
	bool opened = false, audited_once = false;
	memset(shares, 0, sizeof(shares));
	memset(&files, 0, sizeof(files));
	hsm_log_set_level(HSM_LOG_WARN); /* the command reports what it did */
	HSM_TRY(hsmctl_share_dir_apart(o->share_dir, o->data_dir));
	HSM_TRY(hsmctl_local_open_as_is(o->data_dir, o->n_shares, o->shares, &l));
	opened = true; /* the master key was rebuilt: from here on, the rekey is on the trail */
	hsm_keystore_identity(l.ks, &old);
	hsm_hex_encode_str(old_hex, old.set_id, sizeof(old.set_id));
	HSM_TRY(resolve_quorum(o, &old));
	/* The quorum is checked (prepare) before the share directory is made. */
	HSM_TRY(hsm_ks_rekey_prepare(l.ks, o->threshold, o->count,
	                             o->n_custodians > 0 ? (const char *const *)o->custodians : NULL,
	                             shares, &rk));
	HSM_TRY(hsm_mkdir_p(o->share_dir));
	hsm_ks_rekey_identity(rk, &neu);
	hsm_hex_encode_str(new_hex, neu.set_id, sizeof(neu.set_id));
	HSM_TRY(plan_files(o, hsm_keystore_store_id(l.ks), new_hex, &files));
	/* Nothing above changed the store: refused there, an older one keeps its schema. */
	HSM_TRY(hsmctl_local_migrate(&l));
	res = write_files(o, &l, old_hex, new_hex, &old, shares, &files);
	if (hsm_failed(res)) {
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		remove_files(o, &files);
		res = HSM_FAIL(res.err, "%.200s; the store is unchanged", why);
		goto out;
	}
	res = hsm_ks_rekey_commit(l.ks, rk, &counts, &outcome);
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	hsm_result audited = audit_rekey(&l, res, old_hex, new_hex, &old, o, shares, &counts);
	audited_once = true;
	if (outcome != HSM_KS_REKEY_DONE) {
		/* Printed here: the explanation does not fit one error message. */
		fprintf(stderr, "hsmctl: rekey: %s\n", why);
		if (outcome == HSM_KS_REKEY_UNCHANGED)
			fprintf(stderr, "hsmctl: rekey: this rekey changed nothing: the shares that "
			                "opened the store (set %s) still do; the new share files %s\n",
			        old_hex, remove_files(o, &files) ? "were deleted"
			                                         : "could not all be deleted: destroy them");
		else
			fprintf(stderr, "hsmctl: rekey: whether the store moved to the new master key is "
			                "unknown: both share sets were kept (old set %s; new set %s in %s); "
			                "`hsmctl unseal --data-dir DIR FILE...` with each tells which opens "
			                "it\n",
			        old_hex, new_hex, o->share_dir);
		*exit_code = 1;
		res = HSM_SUCCESS;
		goto out;
	}
	const char *transcript = files.transcript;
	if (hsm_failed(finish_transcript(o, &l, old_hex, new_hex, &old, shares, &files))) {
		transcript = files.paths[o->count];
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		fprintf(stderr, "hsmctl: rekey: the store is on the new master key (share set %s), "
		                "but its transcript could not be finished (%s): %s stands for it\n",
		        new_hex, why, files.paths[o->count]);
		*exit_code = 1;
	}
	print_done(o, &l, old_hex, new_hex, &files, transcript, &counts);
	if (hsm_failed(audited)) {
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		fprintf(stderr, "hsmctl: rekey: done, but auditing it failed: %s\n", why);
		*exit_code = 1;
	}
out:
	/* A rekey that failed before its commit (files in the way, a bad quorum) is on the
	 * trail too: the master key was rebuilt for it. */
	if (opened && !audited_once && hsm_failed(res)) {
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		if (hsm_failed(audit_rekey(&l, res, old_hex, new_hex, &old, o, shares, &counts)))
			fprintf(stderr, "hsmctl: rekey: auditing the failure failed: %s\n",
			        hsm_last_message());
		res = HSM_FAIL(res.err, "%s", why);
	}
	for (unsigned i = 0; i < HSM_MAX_SHARES; i++)
		hsm_buf_free(&shares[i]);
	hsm_ks_rekey_free(rk);
	hsmctl_local_close(&l);
	return res;
}

int hsmctl_cmd_rekey(int argc, char **argv)
{
	rekey_opts o;
	memset(&o, 0, sizeof(o));
	int rc = parse_rekey(argc, argv, &o);
	if (rc != 0)
		return rc;
	int exit_code = 0;
	if (hsm_failed(run_rekey(&o, &exit_code)))
		return hsmctl_fail("rekey");
	return exit_code;
}
