/*
 * backups.c - the node's backups (backup/backup.h): made by the scheduler
 * thread every backup_interval or on request (HsmdAdmin.CreateBackup), one
 * at a time; copied to backup_copy_dir when one is set; pruned after
 * backup_retention_days in both directories (but not while the wall clock
 * runs ahead: retention_held); counted for /metrics and
 * audited as a "Backup" event.  A backup made but not copied is a copy
 * failure, not a failed backup: the alerts tell the two apart.  A copy
 * that failed is made later: after each backup, and every BACKUP_RETRY_S
 * while one is missing, the scheduler copies whatever of backup_dir the
 * copy directory lacks ("BackupCopy" events).
 *
 * The files come before their events, so a node killed between the two
 * would leave a backup, a copy or a deletion the trail never names.  Each
 * piece of work is therefore a run with an audit outbox row (store.h)
 * committed before it touches a file (hsm_store_outbox_note): a backup
 * (operation "Backup") makes, copies and prunes its files first and writes
 * its "Backup" event, which carries the row's id, last; a later copy
 * ("BackupCopy") likewise.  Their rows go once those events are durable; a
 * row left behind is recorded at the next start (RequestRecordRecovered,
 * outbox.h).  A backup requested through HsmdAdmin.CreateBackup runs under
 * the request's own row, which its record settles.  A row that cannot be
 * committed fails the run before it touches a file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "server/outbox.h"
#include "server/server.h"
#include "store/store.h"

/* A failed scheduled backup is tried again after this long (or the interval, if shorter). */
#define BACKUP_RETRY_S 300

/*
 * The clock the retries are timed by: time that passes.  On the wall clock, a
 * step back (a time server correcting a clock that ran ahead) would put a
 * retry off by the whole step, and with it every scheduled backup, and the
 * copies that backup_copy_dir lacks.
 */
static int64_t retry_clock_s(void)
{
	return (int64_t)(hsm_mono_ns() / 1000000000ULL);
}

/* The newest backup of this store: when it was made and its size. */
typedef struct newest {
	int64_t created;
	uint64_t bytes;
	int64_t now;
} newest;

static hsm_result newest_of(const char *path, const hsm_backup_info *info, void *arg)
{
	newest *n = arg;
	if (info->created > n->now + HSM_BACKUP_FUTURE_SLACK_S) {
		/* Believed, it would put off every scheduled backup until that date, and hide
		 * from the stale-backup alert that none is made. */
		hsm_warn("backup %s says it was made in the future; not counted as the newest", path);
		return HSM_SUCCESS;
	}
	if (info->created > n->created)
		*n = (newest){info->created, info->file_bytes, n->now};
	return HSM_SUCCESS;
}

/*
 * A directory hsmd can use: made if missing (when create), and a file can be
 * created in it.  Checked at start so a wrong setting stops the node at once
 * rather than failing the first backup (or audit file copy) a day later.
 */
hsm_result hsm_server_usable_dir(const char *setting, const char *dir, bool create)
{
	/* Only the reason: the caller's message names the setting and its source. */
	char why[HSM_ERRMSG_MAX];
	struct stat st;
	/* A copy directory is another disk or a mount: made here, an unmounted mount point
	 * would quietly become a directory on the node's own disk. */
	HSM_ENSURE(create || (stat(dir, &st) == 0 && S_ISDIR(st.st_mode)), HSM_ERR_VALIDATION,
	           "%s = '%.256s' does not exist: hsmd does not make it, so that a disaster-"
	           "recovery mount missing at start is not taken for a local directory; make it "
	           "(on that mount)",
	           setting, dir);
	if (hsm_failed(hsm_mkdir_p(dir))) {
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		return HSM_FAIL(HSM_ERR_VALIDATION, "%s = '%.256s' is not a usable directory: %s",
		                setting, dir, why);
	}
	char probe[4096 + 32];
	HSM_ENSURE((size_t)snprintf(probe, sizeof(probe), "%s/.hsmd-probe-XXXXXX", dir) <
	               sizeof(probe),
	           HSM_ERR_VALIDATION, "%s is too long", setting);
	int fd = mkstemp(probe);
	HSM_ENSURE(fd >= 0, HSM_ERR_VALIDATION, "%s = '%.256s' is not writable: %s", setting, dir,
	           strerror(errno));
	close(fd);
	unlink(probe);
	return HSM_SUCCESS;
}

/* Whether dir is a mount point: its file system is not its parent's. */
static bool is_mount_point(const char *dir)
{
	char parent[4096 + 4];
	struct stat st, up;
	if ((size_t)snprintf(parent, sizeof(parent), "%s/..", dir) >= sizeof(parent))
		return false;
	return stat(dir, &st) == 0 && stat(parent, &up) == 0 && st.st_dev != up.st_dev;
}

/*
 * A copy directory that was a mount point at start and is none now lost its
 * mount (unmounted, or taken away with its network): what is left there is a
 * directory of the file system below, this machine's own disk most likely,
 * where a copy would read as made.  A copy directory missing at start stops
 * the start (hsm_server_usable_dir), and one inside a mount goes with it
 * (hsm_copy_file_into says so): only the mount point itself stays behind.
 */
static hsm_result copy_dir_mounted(const hsm_server *s)
{
	struct stat st;
	if (!s->backup_copy_mounted || stat(s->backup_copy_dir, &st) != 0)
		return HSM_SUCCESS; /* not one, or gone: the copy says what it finds */
	HSM_ENSURE(is_mount_point(s->backup_copy_dir), HSM_ERR_IO,
	           "backup_copy_dir %s was a mount point when hsmd started and is none now (its "
	           "file system unmounted?): no copy is put on the disk below it",
	           s->backup_copy_dir);
	return HSM_SUCCESS;
}

hsm_result hsm_server_backup_dirs_check(hsm_server *s)
{
	HSM_GUARD(hsm_server_blame(s, "backup_dir",
	                           hsm_server_usable_dir("backup_dir", s->backup_dir, true)));
	if (s->backup_copy_dir[0] != '\0') {
		HSM_GUARD(hsm_server_blame(
		    s, "backup_copy_dir", hsm_server_usable_dir("backup_copy_dir", s->backup_copy_dir, false)));
		HSM_GUARD(hsm_server_blame(s, "backup_copy_dir",
		                           hsm_server_distinct_copy_dir(s->backup_dir, "backup directory",
		                                                        "backup_copy_dir",
		                                                        s->backup_copy_dir)));
		s->backup_copy_mounted = is_mount_point(s->backup_copy_dir);
	}
	return HSM_SUCCESS;
}

hsm_result hsm_server_backup_init(hsm_server *s)
{
	const char *store_id = hsm_keystore_store_id(s->ks);
	newest n = {0, 0, hsm_now()};
	HSM_GUARD(hsm_server_backup_dirs_check(s));
	hsm_backup_remove_leftovers(s->backup_dir, s->data_dir); /* the store is locked: ours */
	if (*store_id == '\0')
		return HSM_SUCCESS;
	if (hsm_failed(hsm_backup_list(s->backup_dir, store_id, newest_of, &n)))
		hsm_log_failure("reading the backup directory");
	/* How long it took is not in the file: the duration stays 0 until this run makes one. */
	atomic_store(&s->backup_last_success, n.created);
	atomic_store(&s->backup_last_bytes, n.bytes);
	return HSM_SUCCESS;
}

/* A piece of backup work and its outbox row (module comment). */
typedef struct backup_run {
	hsm_server *s;
	hsm_store_intent in;
	char id[HSM_UUID_STRLEN + 1];
	bool own; /* its own row; false: the thread's intent (a request's, or the backup's) */
} backup_run;

/* Commits the run's row before any file is touched: a failure stops the run. */
static hsm_result run_begin(hsm_server *s, backup_run *run, const char *operation)
{
	memset(run, 0, sizeof(*run));
	run->s = s;
	if (hsm_store_intent_current() == NULL) {
		HSM_GUARD(hsm_uuid_new(run->id));
		run->in.node_id = s->node_id;
		run->in.request_id = run->id;
		run->in.operation = operation;
		run->in.principal = "hsmd";
		hsm_store_intent_begin(&run->in);
		run->own = true;
	}
	hsm_result r = hsm_store_outbox_note(s->store);
	if (hsm_ok(r))
		return HSM_SUCCESS;
	if (run->own) {
		hsm_store_intent_end();
		run->own = false;
	}
	char why[HSM_ERRMSG_MAX];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	return HSM_FAIL(r.err, "the backup's audit outbox row could not be committed: %s", why);
}

/* The id the run's last event carries: its own row's (NULL when it has none). */
static const char *run_id(const backup_run *run)
{
	return run->own && run->in.written ? run->id : NULL;
}

/* Ends the run: its row goes once its last event (recorded) is durable, else is recorded. */
static void run_end(backup_run *run, bool recorded)
{
	if (!run->own)
		return;
	hsm_store_intent_end();
	if (run->in.written)
		hsm_outbox_settled(run->s->outbox, run->id, recorded, hsm_audit_next_seq(run->s->audit));
	run->own = false;
}

/*
 * Whether the retention holds: the wall clock has run more than an hour ahead
 * of the time this node has been up (a bad time server, a reset real-time
 * clock).  Every backup but the seven newest would look expired, in both
 * directories, and a deleted backup cannot be had back: nothing is deleted,
 * as audit retention and the scheduled key work delete nothing, until the
 * clock agrees again.  Said once when the hold starts and when it ends.
 */
static bool retention_held(hsm_server *s)
{
	int64_t ahead_ms = s->audit != NULL ? hsm_audit_clock_ahead_ms(s->audit) : 0;
	bool held = ahead_ms > HSM_AUDIT_CLOCK_AHEAD_MS;
	if (held && !s->backup_retention_held)
		hsm_warn("backup retention holds: the wall clock is %lld s ahead of the time hsmd has "
		         "run; no backup is deleted until it agrees again (check the clock)",
		         (long long)(ahead_ms / 1000));
	else if (!held && s->backup_retention_held)
		hsm_info("backup retention runs again: the wall clock agrees with the time elapsed");
	s->backup_retention_held = held;
	return held;
}

/* Deletes expired backups in dir, naming them in names; false if some could not be. */
static bool prune(hsm_server *s, const char *dir, const char *store_id, hsm_buf *names)
{
	if (retention_held(s))
		return true; /* deleting nothing is no failure */
	size_t removed = 0;
	hsm_result r =
	    hsm_backup_prune(dir, store_id, s->opt.backup_retention_days, hsm_now(),
	                     HSM_BACKUP_KEEP_MIN, &removed, names);
	atomic_fetch_add(&s->backups_expired, removed);
	if (hsm_failed(r))
		hsm_log_failure("deleting expired backups");
	return hsm_ok(r);
}

/*
 * Copies a backup to backup_copy_dir and prunes that directory.  A failure
 * here counts as a copy failure only: the backup itself was made.  why gets
 * the reason (a path and an errno text, nothing secret).
 */
static bool copy_backup(hsm_server *s, const char *path, const char *store_id, char *why,
                        size_t cap, hsm_buf *expired)
{
	bool ok = true;
	hsm_result there = copy_dir_mounted(s);
	if (hsm_failed(hsm_ok(there) ? hsm_backup_copy(path, s->backup_copy_dir) : there)) {
		snprintf(why, cap, "%s", hsm_last_message());
		hsm_log_failure("copying a backup to backup_copy_dir");
		ok = false;
	}
	/* Its mount gone, the directory below is not the one to prune. */
	if (hsm_ok(there) && !prune(s, s->backup_copy_dir, store_id, expired) && ok) {
		snprintf(why, cap, "expired backups in backup_copy_dir could not be deleted");
		ok = false;
	}
	if (!ok)
		atomic_fetch_add(&s->backup_copy_failures, 1);
	return ok;
}

/* This store's backups in backup_dir that backup_copy_dir lacks, copied while copies work. */
typedef struct catch_up {
	hsm_server *s;
	bool trying; /* false after a failure: the rest are only counted */
	size_t missing;
} catch_up;

static hsm_result copy_if_missing(const char *path, const hsm_backup_info *info, void *arg)
{
	catch_up *c = arg;
	hsm_server *s = c->s;
	const char *name = hsm_path_base(path);
	char there[sizeof(s->backup_copy_dir) + 256];
	struct stat st;
	/* Copies are renamed into place whole, so a file of the right size is the copy. */
	if ((size_t)snprintf(there, sizeof(there), "%s/%s", s->backup_copy_dir, name) <
	        sizeof(there) &&
	    stat(there, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == info->file_bytes)
		return HSM_SUCCESS;
	if (!c->trying) {
		c->missing++;
		return HSM_SUCCESS;
	}
	char why[HSM_ERRMSG_MAX] = "";
	backup_run run;
	hsm_result r = run_begin(s, &run, "BackupCopy");
	if (hsm_failed(r)) {
		hsm_log_failure("copying an earlier backup to backup_copy_dir");
		c->trying = false;
		c->missing++;
		return HSM_SUCCESS; /* no file touched: nothing to record */
	}
	r = copy_dir_mounted(s);
	if (hsm_ok(r))
		r = hsm_backup_copy(path, s->backup_copy_dir);
	if (hsm_failed(r)) {
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		hsm_log_failure("copying an earlier backup to backup_copy_dir");
		atomic_fetch_add(&s->backup_copy_failures, 1);
		c->trying = false;
		c->missing++;
	} else {
		hsm_info("backup %s copied to backup_copy_dir (its copy had failed)", path);
	}
	hsm_audit_field f[] = {
	    {"backup_id", info->backup_id},
	    {"file", name},
	    {"copy", hsm_ok(r) ? "made" : "failed"},
	    {"copy_error", why},
	};
	bool recorded = hsm_server_event_of(s, run_id(&run), "BackupCopy", HSM_SUCCESS, f,
	                                    hsm_ok(r) ? 3 : 4);
	run_end(&run, recorded);
	return HSM_SUCCESS;
}

/*
 * Under backup_lock: copies what backup_copy_dir lacks (unless trying is
 * false: then only counts it) and sets the gauge and, while some copy is
 * missing, when to try again.
 */
static void catch_up_copies(hsm_server *s, const char *store_id, bool trying)
{
	catch_up c = {s, trying, 0};
	if (hsm_failed(hsm_backup_list(s->backup_dir, store_id, copy_if_missing, &c))) {
		hsm_log_failure("reading backup_dir for copies to make");
		c.missing = c.missing > 0 ? c.missing : 1;
	}
	atomic_store(&s->backup_copies_missing, (int64_t)c.missing);
	if (c.missing > 0)
		atomic_store(&s->backup_copy_next_try, retry_clock_s() + BACKUP_RETRY_S);
}

/* What a backup run deleted by the retention: file names, comma-separated. */
typedef struct expired_names {
	hsm_buf here, copies; /* in backup_dir, in backup_copy_dir */
} expired_names;

/*
 * A BackupExpired event for each name in names (comma-separated), in the
 * directory named; false if one was not written.
 */
static bool audit_expired(hsm_server *s, hsm_buf *names, const char *dir_name)
{
	if (names->len == 0)
		return true;
	if (hsm_failed(hsm_buf_terminate(names)))
		return false;
	bool all = true;
	char *save = NULL;
	for (char *name = strtok_r((char *)names->data, ",", &save); name != NULL;
	     name = strtok_r(NULL, ",", &save)) {
		hsm_audit_field f[] = {{"file", name}, {"dir", dir_name}};
		all &= hsm_server_event_of(s, NULL, "BackupExpired", HSM_SUCCESS, f, 2);
	}
	return all;
}

/*
 * A BackupExpired event for each backup the retention deleted, so the trail
 * shows when each restore point stopped being there, then the Backup event
 * (copy says what became of the copy: "made", "failed" or "none"; a backup
 * not made says why in backup_error), last, as it carries the run's id
 * (run_id).  True if every one was written.
 */
static bool audit_backup(hsm_server *s, const backup_run *run, const char *trigger,
                         const hsm_backup_info *info, const char *path, hsm_result r,
                         const char *why, const char *copy, const char *copy_error,
                         expired_names *expired)
{
	bool all = audit_expired(s, &expired->here, "backup_dir");
	all &= audit_expired(s, &expired->copies, "backup_copy_dir");
	if (hsm_failed(r)) {
		hsm_audit_field f[] = {{"trigger", trigger}, {"backup_error", why}};
		return hsm_server_event_of(s, run_id(run), "Backup", r, f, 2) && all;
	}
	hsm_audit_field f[] = {
	    {"trigger", trigger}, {"backup_id", info->backup_id}, {"file", hsm_path_base(path)},
	    {"copy", copy},       {"copy_error", copy_error},
	};
	size_t n = copy_error[0] != '\0' ? 5 : 4;
	return hsm_server_event_of(s, run_id(run), "Backup", r, f, n) && all;
}

hsm_result hsm_server_backup(hsm_server *s, const char *trigger, char *path, size_t cap,
                             hsm_backup_info *info, bool *copied)
{
	*copied = false;
	pthread_mutex_lock(&s->backup_lock);
	backup_run run;
	hsm_result noted = run_begin(s, &run, "Backup");
	uint64_t t0 = hsm_mono_ns();
	hsm_backup_request req = {
	    .store = s->store,
	    .ks = s->ks,
	    .dir = s->backup_dir,
	    .work_dir = s->data_dir,
	    .node_id = s->node_id,
	    .now = hsm_now(),
	};
	path[0] = '\0';
	hsm_result r = hsm_ok(noted) ? hsm_backup_create(&req, path, cap, info) : noted;
	char why[HSM_ERRMSG_MAX] = ""; /* what the failure said: the Backup event keeps it */
	if (hsm_failed(r))
		snprintf(why, sizeof(why), "%s", hsm_last_message());
	if (hsm_ok(r)) {
		atomic_store(&s->backup_last_success, info->created);
		atomic_store(&s->backup_last_bytes, info->file_bytes);
		atomic_store(&s->backup_last_ms, (hsm_mono_ns() - t0) / 1000000U);
		atomic_fetch_add(&s->backups_made, 1);
		hsm_info("backup %s written (%llu bytes)", path,
		         (unsigned long long)info->file_bytes);
	} else {
		atomic_fetch_add(&s->backup_failures, 1);
		hsm_log_failure("making a backup");
	}
	const char *store_id = hsm_keystore_store_id(s->ks);
	const char *copy = "none";
	char copy_error[HSM_ERRMSG_MAX] = "";
	expired_names expired = {{0}, {0}};
	if (hsm_ok(r)) {
		if (!prune(s, s->backup_dir, store_id, &expired.here))
			atomic_fetch_add(&s->backup_failures, 1);
		if (s->backup_copy_dir[0] != '\0') {
			*copied = copy_backup(s, path, store_id, copy_error, sizeof(copy_error),
			                      &expired.copies);
			copy = *copied ? "made" : "failed";
		}
	}
	/* Then the copies earlier failures left missing, if copies work again (in this run). */
	if (hsm_ok(r) && s->backup_copy_dir[0] != '\0')
		catch_up_copies(s, store_id, *copied);
	bool recorded =
	    audit_backup(s, &run, trigger, info, path, r, why, copy, copy_error, &expired);
	run_end(&run, recorded);
	hsm_buf_free(&expired.here);
	hsm_buf_free(&expired.copies);
	pthread_mutex_unlock(&s->backup_lock);
	return r;
}

/* Copies missing from backup_copy_dir, when they are to be looked for (module comment). */
static void copies_if_due(hsm_server *s)
{
	if (s->backup_copy_dir[0] == '\0' || atomic_load(&s->backup_copies_missing) == 0 ||
	    retry_clock_s() < atomic_load(&s->backup_copy_next_try))
		return;
	const char *store_id = hsm_keystore_store_id(s->ks);
	if (*store_id == '\0')
		return;
	pthread_mutex_lock(&s->backup_lock);
	catch_up_copies(s, store_id, true);
	pthread_mutex_unlock(&s->backup_lock);
}

/*
 * Whether the last backup is older than every (or dated ahead of now: the
 * clock stepped back since).
 */
static bool backup_due(const hsm_server *s, uint32_t every, int64_t now)
{
	int64_t since = now - atomic_load(&s->backup_last_success);
	return since < 0 || since >= (int64_t)every;
}

/*
 * Before a backup that looks due: backup_dir may hold a newer one that
 * another node made (nodes sharing a PostgreSQL store and one backup_dir: the
 * one that led until a moment ago), so the directory is read again, and its
 * newest backup counts as this node's last.  Only then, not every round.
 */
static void newest_from_dir(hsm_server *s, int64_t now)
{
	const char *store_id = hsm_keystore_store_id(s->ks);
	newest n = {0, 0, now};
	if (*store_id == '\0')
		return;
	if (hsm_failed(hsm_backup_list(s->backup_dir, store_id, newest_of, &n))) {
		hsm_log_failure("reading the backup directory");
		return;
	}
	if (n.created <= atomic_load(&s->backup_last_success))
		return;
	atomic_store(&s->backup_last_success, n.created);
	atomic_store(&s->backup_last_bytes, n.bytes);
}

void hsm_server_backup_if_due(hsm_server *s)
{
	uint32_t every = s->opt.backup_interval;
	int64_t now = hsm_now();
	bool due = every != 0 && retry_clock_s() >= s->backup_next_try && backup_due(s, every, now);
	if (due) {
		newest_from_dir(s, now);
		due = backup_due(s, every, now);
	}
	if (!due) {
		copies_if_due(s);
		return;
	}
	char path[4096];
	hsm_backup_info info;
	bool copied;
	if (hsm_failed(hsm_server_backup(s, "scheduled", path, sizeof(path), &info, &copied))) {
		s->backup_next_try =
		    retry_clock_s() + (every < BACKUP_RETRY_S ? every : BACKUP_RETRY_S);
		copies_if_due(s);
	}
}
