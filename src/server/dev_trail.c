/*
 * dev_trail.c - whether an audit trail shows a store that was initialized.
 *
 * hsmd --dev makes a new store only where no earlier one left anything
 * (server.c).  A trail is such a leftover only when it shows a store: the
 * starts of a node whose store was never initialized (a first --dev start
 * that could not listen, or was stopped at once) leave a trail of their
 * own, AuditLogOpened, Startup, a failed Init, Shutdown and unsigned
 * checkpoints, and none of it needs keeping from a new store.  What shows
 * a store is a checkpoint signed with its audit key (signed only once it
 * was initialized or unsealed), or the success of something only an
 * initialized store does.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit/audit.h"
#include "server/server.h"

/* Events and requests that succeed only on an initialized store. */
static bool shows_store(const char *op)
{
	static const char *const ops[] = {"Init",           "Unseal",
	                                  "Seal",           "Rekey",
	                                  "Restore",        "Backup",
	                                  "BackupCopy",     "CreateBackup",
	                                  "AuditPublicKey", "AuditTrailBeginsAfterStore",
	                                  "AuditTrailJoinsStore"};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(op, ops[i]) == 0)
			return true;
	return false;
}

/* What line says of a store, into why ("" when nothing; lines that do not parse say nothing). */
static void look_at(const char *line, size_t n, char *why, size_t cap)
{
	json_t *o = json_loadb(line, n, 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return;
	}
	json_int_t seq = json_integer_value(json_object_get(o, "seq"));
	const char *type = json_string_value(json_object_get(o, "type"));
	const char *op = json_string_value(json_object_get(o, "op"));
	const char *outcome = json_string_value(json_object_get(o, "outcome"));
	json_t *ckpt = json_object_get(o, "checkpoint");
	if (type != NULL && strcmp(type, "checkpoint") == 0 &&
	    json_is_true(json_object_get(ckpt, "signed")))
		snprintf(why, cap, "a signed checkpoint at seq %lld", (long long)seq);
	else if (op != NULL && outcome != NULL && strcmp(outcome, "success") == 0 && shows_store(op))
		snprintf(why, cap, "a successful %s at seq %lld", op, (long long)seq);
	json_decref(o);
}

bool hsm_server_trail_shows_store(const char *dir, char *why, size_t cap)
{
	char **paths = NULL;
	size_t n = 0;
	struct stat st;
	why[0] = '\0';
	/* Checked before the audit directory is made or vetted: one that is not there holds no
	 * trail, and a path that is no directory is refused by that check, naming the setting. */
	if (stat(dir, &st) != 0 ? errno == ENOENT || errno == ENOTDIR : !S_ISDIR(st.st_mode))
		return false;
	if (hsm_failed(hsm_audit_trail_files(dir, &paths, &n))) {
		snprintf(why, cap, "files that could not be listed");
		return true; /* the caution: what cannot be read may be a store's */
	}
	char *line = NULL;
	size_t line_cap = 0;
	for (size_t i = 0; i < n && why[0] == '\0'; i++) {
		int fd = open(paths[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
		if (f == NULL) {
			if (fd >= 0)
				close(fd);
			snprintf(why, cap, "a file that could not be read");
			break;
		}
		for (ssize_t len; why[0] == '\0' && (len = getline(&line, &line_cap, f)) > 0;)
			look_at(line, (size_t)len, why, cap);
		fclose(f);
	}
	free(line);
	hsm_audit_free_paths(paths, n);
	return why[0] != '\0';
}
