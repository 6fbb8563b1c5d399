/*
 * backups.c - the node's backups (backup/backup.h): made by the scheduler
 * thread every backup_interval or on request (HsmdAdmin.CreateBackup), one
 * at a time; copied to backup_copy_dir when one is set; pruned after
 * backup_retention_days in both directories; counted for /metrics and
 * audited as a "Backup" event.
 */
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server.h"

/* A failed scheduled backup is tried again after this long (or the interval, if shorter). */
#define BACKUP_RETRY_S 300

static hsm_result newest_of(const char *path, const hsm_backup_info *info, void *arg)
{
	(void)path;
	int64_t *newest = arg;
	if (info->created > *newest)
		*newest = info->created;
	return HSM_SUCCESS;
}

void hsm_server_backup_init(hsm_server *s)
{
	const char *store_id = hsm_keystore_store_id(s->ks);
	int64_t newest = 0;
	hsm_backup_remove_leftovers(s->backup_dir, s->data_dir); /* the store is locked: ours */
	if (*store_id == '\0')
		return;
	if (hsm_failed(hsm_backup_list(s->backup_dir, store_id, newest_of, &newest)))
		hsm_log_failure("reading the backup directory");
	atomic_store(&s->backup_last_success, newest);
}

static void prune(hsm_server *s, const char *dir, const char *store_id)
{
	size_t removed = 0;
	hsm_result r =
	    hsm_backup_prune(dir, store_id, s->opt.backup_retention_days, hsm_now(), &removed);
	atomic_fetch_add(&s->backups_expired, removed);
	if (hsm_failed(r)) {
		atomic_fetch_add(&s->backup_failures, 1);
		hsm_log_failure("deleting expired backups");
	}
}

static void audit_backup(hsm_server *s, const char *trigger, const hsm_backup_info *info,
                         const char *path, hsm_result r)
{
	const char *slash = strrchr(path, '/');
	hsm_audit_field f[] = {
	    {"trigger", trigger},
	    {"backup_id", hsm_ok(r) ? info->backup_id : ""},
	    {"file", hsm_ok(r) ? (slash ? slash + 1 : path) : ""},
	};
	hsm_server_event(s, "Backup", NULL, 0, r, f, hsm_ok(r) ? 3 : 1);
}

hsm_result hsm_server_backup(hsm_server *s, const char *trigger, char *path, size_t cap,
                             hsm_backup_info *info, bool *copied)
{
	*copied = false;
	pthread_mutex_lock(&s->backup_lock);
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
	hsm_result r = hsm_backup_create(&req, path, cap, info);
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
	audit_backup(s, trigger, info, path, r);
	const char *store_id = hsm_keystore_store_id(s->ks);
	if (hsm_ok(r) && s->backup_copy_dir[0] != '\0') {
		if (hsm_ok(hsm_backup_copy(path, s->backup_copy_dir))) {
			*copied = true;
		} else {
			atomic_fetch_add(&s->backup_copy_failures, 1);
			hsm_log_failure("copying a backup to backup_copy_dir");
		}
	}
	if (hsm_ok(r)) {
		prune(s, s->backup_dir, store_id);
		if (s->backup_copy_dir[0] != '\0')
			prune(s, s->backup_copy_dir, store_id);
	}
	pthread_mutex_unlock(&s->backup_lock);
	return r;
}

void hsm_server_backup_if_due(hsm_server *s)
{
	uint32_t every = s->opt.backup_interval;
	int64_t now = hsm_now();
	if (every == 0 || now < s->backup_next_try ||
	    now - atomic_load(&s->backup_last_success) < (int64_t)every)
		return;
	char path[4096];
	hsm_backup_info info;
	bool copied;
	if (hsm_failed(hsm_server_backup(s, "scheduled", path, sizeof(path), &info, &copied)))
		s->backup_next_try = now + (every < BACKUP_RETRY_S ? every : BACKUP_RETRY_S);
}
