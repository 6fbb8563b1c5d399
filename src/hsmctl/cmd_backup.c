/*
 * cmd_backup.c - backups and restore.
 *
 *   hsmctl --endpoint URL backup create         a backup now, on the node
 *   hsmctl backup create --data-dir DIR --share F... [--dir OUT]   of a stopped node
 *   hsmctl --endpoint URL backup list           the node's backups
 *   hsmctl backup list --dir DIR                the backups in a directory
 *   hsmctl backup inspect FILE                  a backup's header (no shares needed)
 *   hsmctl backup verify --share F... FILE      decrypt and authenticate all of it
 *   hsmctl restore --data-dir DIR --share F... FILE   (into DIR, or with --store into an
 *                                                     empty shared store; DIR keeps the audit)
 *
 * verify and restore need a quorum of the store's custodian shares: a
 * backup is encrypted under a key derived from the store's master key.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backup/backup.h"
#include "common/encoding.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/util.h"
#include "hsmctl/hsmctl.h"
#include "hsmctl/local.h"

typedef struct backup_opts {
	const char *data_dir, *dir, *file;
	char *shares[HSMCTL_MAX_SHARE_ARGS];
	size_t n_shares;
} backup_opts;

static int parse(const char *cmd, int argc, char **argv, backup_opts *o)
{
	static const struct option longopts[] = {{"data-dir", required_argument, NULL, 'd'},
	                                         {"share", required_argument, NULL, 's'},
	                                         {"dir", required_argument, NULL, 'D'},
	                                         {NULL, 0, NULL, 0}};
	hsmctl_seen seen = {0};
	memset(o, 0, sizeof(*o));
	optind = 1;
	for (int c, i = -1; (c = getopt_long(argc, argv, "", longopts, &i)) != -1; i = -1) {
		if (c != 's' && hsmctl_getopt_once(&seen, cmd, longopts, i) != 0)
			return 2;
		switch (c) {
		case 'd': o->data_dir = optarg; break;
		case 'D': o->dir = optarg; break;
		case 's':
			if (o->n_shares == HSMCTL_MAX_SHARE_ARGS)
				return hsmctl_usage(cmd, "too many --share options");
			o->shares[o->n_shares++] = optarg;
			break;
		default: return hsmctl_usage(cmd, "unknown option");
		}
	}
	if (optind < argc)
		o->file = argv[optind++];
	if (optind < argc)
		return hsmctl_usage(cmd, "unexpected argument '%s'", argv[optind]);
	return 0;
}

static void print_info(const char *path, const hsm_backup_info *in)
{
	char created[21], split[2 * HSM_KS_SET_ID_LEN + 1];
	hsm_format_time(in->created, created);
	/* split: the "set" line of the share files that open it (they may predate a rekey). */
	hsm_hex_encode_str(split, in->identity.set_id, sizeof(in->identity.set_id));
	printf("file: %s\nbackup-id: %s\nstore-id: %s\ncreated: %s\nnode: %s\n"
	       "quorum: %u of %u custodian shares\nsplit: %s\nschema: %u\nstore-bytes: %llu\n"
	       "file-bytes: %llu\n",
	       path, in->backup_id, in->identity.store_id, created, in->node_id,
	       in->identity.threshold, in->identity.count, split, in->schema_version,
	       (unsigned long long)in->store_bytes, (unsigned long long)in->file_bytes);
}

static hsm_result print_entry(const char *path, const hsm_backup_info *in, void *arg)
{
	size_t *listed = arg;
	(*listed)++;
	char created[21];
	hsm_format_time(in->created, created);
	printf("%s  %s  %12llu  %s\n", created, in->backup_id, (unsigned long long)in->file_bytes,
	       path);
	return HSM_SUCCESS;
}

/*
 * The backups in dir.  hsm_backup_list takes a missing directory for one with
 * no backups yet (a node before its first); named by an operator, it is a
 * wrong path (an unmounted DR volume, a typo), which must not read as "no
 * backups".
 */
static int list_dir(const char *cmd, const char *dir)
{
	struct stat sb;
	if (stat(dir, &sb) != 0) {
		fprintf(stderr, "hsmctl: %s: cannot read the backup directory %s: %s\n", cmd, dir,
		        strerror(errno));
		return 1;
	}
	size_t listed = 0;
	if (hsm_failed(hsm_backup_list(dir, NULL, print_entry, &listed)))
		return hsmctl_fail(cmd);
	if (listed == 0)
		fprintf(stderr, "hsmctl: %s: no backups in %s\n", cmd, dir);
	return 0;
}

static int online(const char *cmd, const char *target)
{
	json_t *out = NULL, *body = json_object();
	hsm_result r = hsmctl_call_approved(target, body, &out); /* CreateBackup may be gated */
	json_decref(body);
	if (hsm_failed(r))
		return hsmctl_fail(cmd);
	json_t *list = json_object_get(out, "Backups");
	if (json_is_array(list)) {
		size_t i;
		json_t *b;
		printf("backup-dir: %s\n", json_string_value(json_object_get(out, "BackupDir")));
		json_array_foreach(list, i, b) {
			char created[21];
			hsmctl_format_json_time(json_object_get(b, "CreationDate"), created);
			printf("%s  %s  %12lld  %s\n", created,
			       json_string_value(json_object_get(b, "BackupId")),
			       (long long)json_integer_value(json_object_get(b, "SizeBytes")),
			       json_string_value(json_object_get(b, "Path")));
		}
	} else {
		hsmctl_print_fields(out);
	}
	json_decref(out);
	return 0;
}

/*
 * The store a share file names (its "store" line: no secret), or "" when
 * it cannot be read.
 */
static void share_store(const char *file, char out[HSM_UUID_STRLEN + 1])
{
	hsm_buf text;
	hsm_buf_init_secure(&text);
	out[0] = '\0';
	if (hsm_ok(hsmctl_read_share(file, &text)) && hsm_ok(hsm_buf_terminate(&text))) {
		const char *line = strstr((const char *)text.data, "\nstore ");
		if (line != NULL && strspn(line + 7, "0123456789abcdef-") == HSM_UUID_STRLEN)
			snprintf(out, HSM_UUID_STRLEN + 1, "%.*s", HSM_UUID_STRLEN, line + 7);
	}
	hsm_buf_free(&text);
}

/*
 * Shares of one store that refuse the store a backup's header names: the
 * shares are another store's, or the backup is, or its header was altered.
 * The shares' refusal alone would read as if the shares were the wrong ones.
 */
static void explain_other_store(const backup_opts *o, const hsm_backup_info *info)
{
	char first[HSM_UUID_STRLEN + 1], other[HSM_UUID_STRLEN + 1];
	share_store(o->shares[0], first);
	if (first[0] == '\0' || strcmp(first, info->identity.store_id) == 0)
		return;
	for (size_t i = 1; i < o->n_shares; i++) {
		share_store(o->shares[i], other);
		if (strcmp(other, first) != 0)
			return; /* shares of several stores: the shares are what is wrong */
	}
	fprintf(stderr,
	        "hsmctl: %s: its header names store %s, and the shares given are all of store "
	        "%s: they are not this backup's shares, or the backup is of another store, or "
	        "its header was altered\n",
	        o->file, info->identity.store_id, first);
}

/* A keystore for the backup's store, unsealed with the share files. */
static hsm_result open_for(const backup_opts *o, hsm_backup_info *info, hsm_keystore **ks)
{
	hsm_result res = HSM_SUCCESS;
	hsm_keystore *k = NULL;
	HSM_ASSERT(o->n_shares > 0); /* refused as a usage error before */
	hsm_log_set_level(HSM_LOG_WARN); /* the command reports what it did; no "unsealed" lines */
	HSM_GUARD(hsm_secure_process_init(HSM_SECURE_HEAP_DEFAULT));
	HSM_GUARD(hsm_backup_read_info(o->file, info));
	HSM_TRY(hsm_keystore_new_detached(&info->identity, &k));
	HSM_CHECK(hsm_keystore_state(k) != HSM_NODE_ERROR, HSM_ERR_NODE_ERROR, "self-test failed: %s",
	          hsm_keystore_error_reason(k));
	res = hsmctl_unseal_files(k, o->n_shares, o->shares);
	if (res.err == HSM_ERR_SHARE_MISMATCH)
		explain_other_store(o, info);
	HSM_TRY(res);
	*ks = k;
	k = NULL;
out:
	hsm_keystore_free(k);
	return res;
}

/*
 * A backup made whose record could not be written.  With its outbox row
 * committed first, the backup stays: the row is recorded by the next
 * offline command or the node's start, as a change whose record was lost
 * (RequestRecordRecovered).  Without one (a store of an older schema) no
 * record would ever name it, so it is deleted: what cannot be audited is
 * refused.
 */
static int unrecorded_backup(const char *cmd, const char *path, const char *why, bool noted,
                             const char *data_dir)
{
	if (noted) {
		fprintf(stderr,
		        "hsmctl: %s: %s is written, but its Backup record could not be (%s); the "
		        "audit outbox row committed before it stays, and the next offline command on "
		        "%s, or its node's start, records the backup\n",
		        cmd, path, why, data_dir);
		return 1;
	}
	bool gone = unlink(path) == 0 || errno == ENOENT;
	fprintf(stderr, "hsmctl: %s: the backup could not be recorded (%s), %s\n", cmd, why,
	        gone ? "so its file was deleted: a backup no record names is not kept"
	             : "and its file could not be deleted: delete it, no record names it");
	return 1;
}

/*
 * --dir names where an operator wants the backup to be: removable media, a
 * mount.  One that is not there is refused, not made: made, the path of a
 * medium not mounted would take the backup onto this machine's own disk (and
 * hide it under the mount once one is there), as hsmd never makes
 * backup_copy_dir.  The default, DATA_DIR/backups, is the node's own: made.
 */
static int out_dir_there(const char *cmd, const char *dir)
{
	struct stat sb;
	int found = stat(dir, &sb);
	if (found == 0 && S_ISDIR(sb.st_mode))
		return 0;
	if (found != 0 && errno != ENOENT) {
		fprintf(stderr, "hsmctl: %s: cannot use --dir %s: %s\n", cmd, dir, strerror(errno));
		return 1;
	}
	fprintf(stderr,
	        "hsmctl: %s: --dir %s %s: hsmctl does not make it, so that a backup meant for a "
	        "medium or mount that is not there does not land on this machine's own disk; "
	        "mount it (or make the directory), and run again\n",
	        cmd, dir, found != 0 ? "does not exist" : "is not a directory");
	return 1;
}

/*
 * A backup of a stopped node's data directory (right after the key ceremony,
 * before an upgrade): the shares unseal it here, as for `hsmctl key`; the
 * backup goes to --dir (default DATA_DIR/backups) and is audited there.  Its
 * file comes before its record, so it first commits an audit outbox row
 * (the store's schema permitting: an older store is not migrated here), and
 * hsmctl killed in between leaves the backup to be recorded by the next
 * offline command or the node's start.
 */
static int create_offline(const char *cmd, const backup_opts *o)
{
	if (o->n_shares == 0)
		return hsmctl_usage(cmd, "--data-dir needs the custodians' --share files (a quorum)");
	if (o->dir != NULL && out_dir_there(cmd, o->dir) != 0)
		return 1;
	char dir[4200], path[4200], host[64] = "localhost";
	snprintf(dir, sizeof(dir), "%s/backups", o->data_dir);
	(void)gethostname(host, sizeof(host) - 1);
	host[strcspn(host, ".")] = '\0';
	hsm_log_set_level(HSM_LOG_WARN);
	hsmctl_local l;
	if (hsm_failed(hsmctl_local_inspect_noting(o->data_dir, o->n_shares, o->shares, &l)))
		return hsmctl_fail(cmd);
	/* The row names the backup (its id chosen now), as a record in its stead then does. */
	char backup_id[HSM_UUID_STRLEN + 1];
	if (hsm_failed(hsm_uuid_new(backup_id)) ||
	    hsm_failed(hsmctl_local_name_change(&l, backup_id)) ||
	    (l.outbox != NULL && hsm_failed(hsm_store_outbox_note(l.store)))) {
		int failed = hsmctl_fail("backup create: committing its audit outbox row");
		hsmctl_local_close(&l);
		return failed;
	}
	hsm_backup_request req = {.store = l.store,
	                          .ks = l.ks,
	                          .dir = o->dir != NULL ? o->dir : dir,
	                          .work_dir = o->data_dir,
	                          .node_id = host,
	                          .now = hsm_now(),
	                          .backup_id = backup_id};
	hsm_backup_info info;
	hsm_result r = hsm_backup_create(&req, path, sizeof(path), &info);
	char why[HSM_ERRMSG_MAX];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	hsm_audit_field f[] = {{"trigger", "offline"},
	                       {"backup_id", hsm_ok(r) ? info.backup_id : ""},
	                       {"file", hsm_ok(r) ? strrchr(path, '/') + 1 : ""}};
	hsm_result a = hsmctl_local_audit_fields(&l, "Backup", NULL, 0, r, f, hsm_ok(r) ? 3 : 1);
	char why_not[HSM_ERRMSG_MAX];
	snprintf(why_not, sizeof(why_not), "%s", hsm_last_message());
	bool noted = l.outbox != NULL;
	hsmctl_local_close(&l);
	if (hsm_failed(r)) {
		fprintf(stderr, "hsmctl: %s: %s\n", cmd, why);
		return 1;
	}
	if (hsm_failed(a))
		return unrecorded_backup(cmd, path, why_not, noted, o->data_dir);
	print_info(path, &info);
	return 0;
}

/*
 * What each form takes (letters: d --data-dir, s --share, D --dir, F the
 * FILE argument): anything else is refused, not ignored (an online backup
 * create --dir OUT writes nothing to OUT: the node keeps its backups in its
 * own backup_dir).
 */
static int refuse_others(const char *cmd, const backup_opts *o, const char *takes,
                         const char *form)
{
	const char *extra = o->data_dir != NULL && strchr(takes, 'd') == NULL ? "--data-dir"
	                    : o->n_shares > 0 && strchr(takes, 's') == NULL   ? "--share"
	                    : o->dir != NULL && strchr(takes, 'D') == NULL    ? "--dir"
	                                                                      : NULL;
	if (extra != NULL)
		return hsmctl_usage(cmd, "%s does not go with %s", extra, form);
	if (o->file != NULL && strchr(takes, 'F') == NULL)
		return hsmctl_usage(cmd, "unexpected argument '%s' (%s)", o->file, form);
	return 0;
}

/* The form of the command given, and what it takes (refuse_others). */
static const char *backup_form(const char *sub, const backup_opts *o, const char **takes)
{
	bool create = strcmp(sub, "create") == 0, list = strcmp(sub, "list") == 0;
	if (create && o->data_dir != NULL) {
		*takes = "dsD";
		return "backup create --data-dir DIR --share FILE... [--dir OUT]";
	}
	if (create) {
		*takes = "";
		return "backup create: with --endpoint it takes nothing, as the node writes the "
		       "backup to its backup_dir; a stopped node's is --data-dir DIR --share FILE... "
		       "[--dir OUT]";
	}
	if (list && o->dir != NULL) {
		*takes = "D";
		return "backup list --dir DIR";
	}
	if (list) {
		*takes = "";
		return "backup list: with --endpoint it takes nothing; a directory's is --dir DIR";
	}
	*takes = strcmp(sub, "verify") == 0 ? "sF" : "F";
	return strcmp(sub, "verify") == 0 ? "backup verify --share FILE... BACKUP"
	                                  : "backup inspect FILE";
}

int hsmctl_cmd_backup(int argc, char **argv)
{
	backup_opts o;
	const char *sub = argv[0];
	char cmd[32];
	snprintf(cmd, sizeof(cmd), "backup %s", sub);
	int rc = parse(cmd, argc, argv, &o);
	if (rc != 0)
		return rc;
	const char *takes = "";
	const char *form = backup_form(sub, &o, &takes);
	rc = refuse_others(cmd, &o, takes, form);
	if (rc != 0)
		return rc;
	if (strcmp(sub, "create") == 0 && o.data_dir != NULL)
		return create_offline(cmd, &o);
	if (strcmp(sub, "create") == 0 || (strcmp(sub, "list") == 0 && o.dir == NULL)) {
		if (!hsmctl_online())
			return hsmctl_usage(cmd, strcmp(sub, "create") == 0
			                             ? "needs --endpoint (a running, unsealed hsmd), or "
			                               "--data-dir DIR --share FILE... (a stopped one)"
			                             : "needs --endpoint, or --dir DIR");
		return online(cmd, strcmp(sub, "create") == 0 ? "HsmdAdmin.CreateBackup"
		                                               : "HsmdAdmin.ListBackups");
	}
	if (strcmp(sub, "list") == 0)
		return list_dir(cmd, o.dir);
	if (o.file == NULL)
		return hsmctl_usage(cmd, "name the backup FILE");
	hsm_backup_info info;
	if (strcmp(sub, "inspect") == 0) {
		if (hsm_failed(hsm_backup_read_info(o.file, &info)))
			return hsmctl_fail(cmd);
		print_info(o.file, &info);
		return 0;
	}
	if (o.n_shares == 0)
		return hsmctl_usage(cmd, "needs the custodians' --share files (a quorum)");
	hsm_keystore *ks = NULL;
	if (hsm_failed(open_for(&o, &info, &ks)))
		return hsmctl_fail(cmd);
	hsm_result r = hsm_backup_decrypt(o.file, ks, NULL, &info);
	hsm_keystore_free(ks);
	if (hsm_failed(r))
		return hsmctl_fail(cmd);
	print_info(o.file, &info);
	printf("verified: every chunk authenticated\n");
	return 0;
}

/* ---- restore --------------------------------------------------------------------------- */

static hsm_result path_of(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);
	HSM_ENSURE(n > 0 && (size_t)n < cap, HSM_ERR_VALIDATION, "--data-dir is too long");
	return HSM_SUCCESS;
}

/* The files SQLite keeps beside hsmd.db while it is open, or leaves after a crash. */
static const char *const store_logs[] = {HSM_STORE_DB_FILE "-wal", HSM_STORE_DB_FILE "-shm",
                                         HSM_STORE_DB_FILE "-journal"};
#define N_STORE_LOGS (sizeof(store_logs) / sizeof(store_logs[0]))

/*
 * Removes the staging directory and what opening a store left in it (a
 * restore killed meanwhile leaves any of SQLite's logs).  A directory that
 * stays is named, with why: a later restore could not make its own.
 */
static hsm_result remove_staging(const char *staging)
{
	static const char *const names[] = {HSM_STORE_DB_FILE, "hsmd.lock"};
	char p[4200];
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) + N_STORE_LOGS; i++) {
		const char *name = i < N_STORE_LOGS ? store_logs[i] : names[i - N_STORE_LOGS];
		if (hsm_ok(path_of(p, sizeof(p), staging, name)))
			unlink(p);
	}
	HSM_ENSURE(rmdir(staging) == 0 || errno == ENOENT, HSM_ERR_IO,
	           "cannot remove %s, left by an interrupted restore: %s; move it away and restore "
	           "again",
	           staging, strerror(errno));
	return HSM_SUCCESS;
}

/*
 * Refuses what SQLite leaves beside a store whose hsmd.db was removed by
 * hand (its node killed, say): the restored copy's first opening would
 * replay that log into it, making a malformed store, or another store's.
 */
static hsm_result no_store_leftovers(const char *data_dir)
{
	for (size_t i = 0; i < N_STORE_LOGS; i++) {
		char p[4200];
		struct stat sb;
		HSM_GUARD(path_of(p, sizeof(p), data_dir, store_logs[i]));
		HSM_ENSURE(lstat(p, &sb) != 0, HSM_ERR_CONFLICT,
		           "%s is left by a store no longer there, and SQLite would apply it to the "
		           "restored store: move it away (with whatever else is left of that store) "
		           "and restore again",
		           p);
		HSM_ENSURE(errno == ENOENT, HSM_ERR_IO, "cannot check for %s: %s", p, strerror(errno));
	}
	return HSM_SUCCESS;
}

/* Whether ks, just made on a store, read the backup's store identity from it. */
static hsm_result is_backups_store(hsm_keystore *ks, const hsm_backup_info *info)
{
	/* A keystore whose self-test failed has read nothing of the store: no identity to compare. */
	HSM_ENSURE(hsm_keystore_state(ks) != HSM_NODE_ERROR, HSM_ERR_NODE_ERROR,
	           "self-test failed: %s", hsm_keystore_error_reason(ks));
	HSM_ENSURE(strcmp(hsm_keystore_store_id(ks), info->identity.store_id) == 0, HSM_ERR_CONFLICT,
	           "the restored store's identity differs from the backup header's");
	return HSM_SUCCESS;
}

/*
 * Opens the decrypted copy as a store (bringing its schema up to date) and
 * unseals it with the shares: proof that it is a whole store of the backup's
 * store, opened by this quorum.  With change, commits the restore's outbox
 * row into it: the store is then renamed into place with its row.
 */
static hsm_result check_staged(const char *staging, const backup_opts *o,
                               const hsm_backup_info *info, hsmctl_early_change *change)
{
	hsm_result res = HSM_SUCCESS;
	hsm_store *st = NULL;
	hsm_keystore *ks = NULL;
	HSM_TRY(hsm_store_open(staging, &st));
	HSM_TRY(hsm_keystore_new(st, 0, &ks));
	HSM_TRY(is_backups_store(ks, info));
	HSM_TRY(hsmctl_unseal_files(ks, o->n_shares, o->shares));
	if (change != NULL) {
		hsm_store_intent_begin(&change->intent);
		res = hsm_store_outbox_note(st);
		hsm_store_intent_end();
	}
out:
	hsm_keystore_free(ks);
	hsm_store_close(st);
	return res;
}

/*
 * The store renamed into data_dir, opened as its node will open it: whole,
 * and the backup's.  This opening is the first in data_dir, where SQLite
 * applies any log it finds beside hsmd.db (one that appeared after
 * no_store_leftovers looked): only a store that passes is reported restored.
 */
static hsm_result check_in_place(const char *data_dir, const hsm_backup_info *info)
{
	hsm_result res = HSM_SUCCESS;
	hsm_store *st = NULL;
	hsm_keystore *ks = NULL;
	HSM_TRY(hsm_store_open_existing(data_dir, &st));
	HSM_TRY(hsm_store_check(st));
	HSM_TRY(hsm_keystore_new(st, 0, &ks));
	HSM_TRY(is_backups_store(ks, info));
out:
	hsm_keystore_free(ks);
	hsm_store_close(st);
	return res;
}

/* Removes what SQLite's opening of data_dir's store left beside it. */
static void remove_store_logs(const char *data_dir)
{
	for (size_t i = 0; i < N_STORE_LOGS; i++) {
		char p[4200];
		if (hsm_ok(path_of(p, sizeof(p), data_dir, store_logs[i])))
			unlink(p);
	}
}

/*
 * The store is in target and check_in_place failed: it is taken back out
 * into staged (which the caller removes), so a failed restore leaves no
 * store behind, and with it the logs its opening made.  Logs that were there
 * before that opening (one that appeared during the restore) are another
 * store's: left where they are, and named.
 */
static hsm_result take_back(const char *data_dir, const char *target, const char *staged,
                            bool foreign_logs)
{
	char why[HSM_ERRMSG_MAX];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	bool out = rename(target, staged) == 0;
	if (out && !foreign_logs)
		remove_store_logs(data_dir);
	if (!out)
		return HSM_FAIL(HSM_ERR_STORE,
		                "the store moved into %s does not open as the backup's, so it is not "
		                "restored (%s), and it could not be taken out again: move it and the "
		                "files beside it away, and restore again",
		                data_dir, why);
	return HSM_FAIL(HSM_ERR_STORE,
	                "the store moved into %s does not open as the backup's, so it is not "
	                "restored (%s); it is taken out again%s",
	                data_dir, why,
	                foreign_logs ? ": move away the hsmd.db-wal, -shm or -journal that appeared "
	                               "beside it during the restore, and restore again"
	                             : "");
}

/*
 * Copies the checked store in staging into the shared store --store names,
 * which must be empty: a restore never mixes two stores' records.  The
 * copy's transaction carries the restore's outbox row.
 */
static hsm_result copy_to_shared(const char *staging, hsmctl_early_change *change)
{
	hsm_result res = HSM_SUCCESS;
	hsm_store *src = NULL, *dst = NULL;
	bool held = false;
	HSM_TRY(hsm_store_open(staging, &src));
	/* Found empty before it is brought forward: a shared store in use keeps its schema. */
	HSM_TRY(hsm_store_open_unmigrated(hsmctl_globals.store, &dst));
	HSM_TRY(hsm_store_holds_any(dst, &held));
	HSM_CHECK(!held, HSM_ERR_CONFLICT,
	          "the store --store names is not empty; restore into a new, empty database");
	HSM_TRY(hsm_store_migrate(dst));
	hsm_store_intent_begin(&change->intent);
	res = hsm_store_copy_noted(src, dst);
	hsm_store_intent_end();
	if (res.err == HSM_ERR_CONFLICT)
		res = HSM_FAIL(HSM_ERR_CONFLICT, "the store --store names is not empty; restore into "
		                                 "a new, empty database");
out:
	hsm_store_close(dst);
	hsm_store_close(src);
	return res;
}

/*
 * Refuses a data directory whose audit directory already holds records: the
 * restore is the first record of the restored node's trail.  Appended to an
 * older trail (another store's, or this store's from after the backup) it
 * would continue a chain signed with another key, or records about what the
 * restored store never saw, and `hsmctl audit verify` would fail on it.  An
 * absent or empty audit directory (or empty files) is a fresh trail.
 */
static hsm_result audit_dir_unused(const char *data_dir)
{
	char dir[4200];
	HSM_GUARD(path_of(dir, sizeof(dir), data_dir, "audit"));
	DIR *d = opendir(dir);
	if (d == NULL && errno == ENOENT)
		return HSM_SUCCESS;
	HSM_ENSURE(d != NULL, HSM_ERR_IO, "cannot read %s: %s", dir, strerror(errno));
	hsm_result res = HSM_SUCCESS;
	for (struct dirent *de; (de = readdir(d)) != NULL;) {
		char p[4500];
		struct stat sb;
		if (strncmp(de->d_name, "audit-", 6) != 0)
			continue;
		int n = snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
		if (n < 0 || (size_t)n >= sizeof(p) || stat(p, &sb) != 0 || sb.st_size == 0)
			continue;
		res = HSM_FAIL(HSM_ERR_CONFLICT,
		               "%s already holds an audit trail; a restore begins a new one: restore "
		               "into a new data directory, or move the old trail away (and keep it)",
		               dir);
		break;
	}
	closedir(d);
	return res;
}

/*
 * The restore, into o's data directory or shared store, with change's
 * outbox row (made here: the directory exists only now): until the
 * Restore record settles it, the row in the restored store says a restore
 * put it there, so hsmctl killed before that record leaves the restore on
 * the trail all the same (outbox.h, settled by the next command or hsmd).
 */
static hsm_result restore(const backup_opts *o, hsm_backup_info *info,
                          hsmctl_early_change *change)
{
	hsm_result res = HSM_SUCCESS;
	hsm_keystore *ks = NULL;
	char target[4200], staging[4200], staged[4300];
	bool made_staging = false, made_dir = false;
	bool shared = hsmctl_store_location(o->data_dir) != o->data_dir;
	struct stat sb;
	HSM_ENSURE(o->data_dir != NULL, HSM_ERR_VALIDATION, "--data-dir is required");
	HSM_GUARD(path_of(target, sizeof(target), o->data_dir, HSM_STORE_DB_FILE));
	HSM_ENSURE(shared || (stat(target, &sb) != 0 && errno == ENOENT), HSM_ERR_CONFLICT,
	           "%s already holds a store; restore into a new or empty data directory", o->data_dir);
	if (!shared)
		HSM_GUARD(no_store_leftovers(o->data_dir));
	HSM_GUARD(audit_dir_unused(o->data_dir));
	HSM_TRY(open_for(o, info, &ks));
	made_dir = stat(o->data_dir, &sb) != 0 && errno == ENOENT;
	HSM_TRY(hsm_mkdir_p(o->data_dir));
	HSM_TRY(hsmctl_early_change_init(change, o->data_dir));
	HSM_TRY(path_of(staging, sizeof(staging), o->data_dir, ".restore"));
	if (stat(staging, &sb) == 0)
		HSM_TRY(remove_staging(staging)); /* left by an interrupted restore */
	HSM_CHECK(mkdir(staging, 0700) == 0, HSM_ERR_IO, "cannot create %s: %s", staging,
	          strerror(errno));
	made_staging = true;
	HSM_TRY(path_of(staged, sizeof(staged), staging, HSM_STORE_DB_FILE));
	HSM_TRY(hsm_backup_decrypt(o->file, ks, staged, info));
	HSM_TRY(check_staged(staging, o, info, shared ? NULL : change));
	if (shared) {
		HSM_TRY(copy_to_shared(staging, change));
	} else {
		HSM_CHECK(rename(staged, target) == 0, HSM_ERR_IO, "cannot move the store into %s: %s",
		          o->data_dir, strerror(errno));
		HSM_TRY(hsm_fsync_dir(o->data_dir));
		bool foreign_logs = hsm_failed(no_store_leftovers(o->data_dir));
		res = check_in_place(o->data_dir, info);
		if (hsm_failed(res))
			res = take_back(o->data_dir, target, staged, foreign_logs);
	}
out:
	if (made_staging) {
		char why[HSM_ERRMSG_MAX]; /* the failure's message, kept over the removal's */
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		if (hsm_failed(remove_staging(staging)))
			fprintf(stderr, "hsmctl: restore: %s\n", hsm_last_message());
		if (hsm_failed(res))
			res = HSM_FAIL(res.err, "%s", why);
	}
	if (hsm_failed(res) && made_dir)
		(void)rmdir(o->data_dir); /* a failed restore leaves no directory it made (if empty) */
	hsm_keystore_free(ks);
	return res;
}

/*
 * The store is in place with its outbox row (check_staged), but this command
 * could not go on to record the restore: the row is recorded by the next
 * offline command or the node's start (RequestRecordRecovered).
 */
static int unrecorded_restore(const char *where, const char *why)
{
	fprintf(stderr,
	        "hsmctl: restore: the backup is restored into %s, but its Restore record could not "
	        "be written (%s); the audit outbox row the restored store holds stays, and the next "
	        "offline command on it, or a node's start, records the restore\n",
	        where, why);
	return 1;
}

int hsmctl_cmd_restore(int argc, char **argv)
{
	backup_opts o;
	int rc = parse("restore", argc, argv, &o);
	if (rc != 0)
		return rc;
	if (o.file == NULL)
		return hsmctl_usage("restore", "name the backup FILE");
	if (o.n_shares == 0)
		return hsmctl_usage("restore", "needs the custodians' --share files (a quorum)");
	hsm_backup_info info;
	hsmctl_early_change change;
	if (hsm_failed(restore(&o, &info, &change)))
		return hsmctl_fail("restore");
	const char *where =
	    hsmctl_store_location(o.data_dir) != o.data_dir ? "the store --store names" : o.data_dir;
	/* The restored node's audit trail starts with the restore (after the quorum's Unseal). */
	hsmctl_local l;
	if (hsm_failed(hsmctl_local_open_adopting(o.data_dir, o.n_shares, o.shares, change.request,
	                                          &l)))
		return unrecorded_restore(where, hsm_last_message());
	char created[21];
	hsm_format_time(info.created, created);
	hsm_audit_field f[] = {{"backup_id", info.backup_id}, {"backup_created", created},
	                       {"backup_node", info.node_id}};
	hsm_result r = hsmctl_local_audit_fields(&l, "Restore", NULL, 0, HSM_SUCCESS, f, 3);
	char why[HSM_ERRMSG_MAX];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	hsmctl_local_close(&l);
	if (hsm_failed(r))
		return unrecorded_restore(where, why);
	print_info(o.file, &info);
	printf("restored into: %s\n", where);
	return 0;
}
