/*
 * audit_find.c - which requests have a record in a node's log, looked up by
 * request id (the server's audit outbox asks it: server/outbox.c).
 *
 * Files are read newest first, line by line; the search stops after the
 * first file whose first record is older than the time given, since every
 * older file holds only older records.  A line counts when its
 * "request_id" member is one of the ids: a request's own record, or the
 * record written in its stead (both carry the request's id).
 */
#include "audit/audit_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"

#define ID_FIELD "\"request_id\":\""

static int cmp_id(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

/* Marks the id a line names, if it is one of ids. */
static void match_line(const char *line, size_t n, const char *const *ids, size_t n_ids,
                       bool *found)
{
	const char *f = memmem(line, n, ID_FIELD, sizeof(ID_FIELD) - 1);
	if (f == NULL)
		return;
	const char *v = f + sizeof(ID_FIELD) - 1, *end = line + n;
	const char *q = memchr(v, '"', (size_t)(end - v));
	char id[HSM_AUDIT_NAME_MAX * 2 + 1];
	if (q == NULL || (size_t)(q - v) >= sizeof(id))
		return;
	memcpy(id, v, (size_t)(q - v));
	id[q - v] = '\0';
	const char *const *hit = bsearch(id, ids, n_ids, sizeof(*ids), cmp_id);
	if (hit != NULL)
		found[hit - ids] = true;
}

/* Scans one file; *first_ms is its first record's time (INT64_MIN when unknown). */
static hsm_result scan(const char *path, const char *const *ids, size_t n_ids, bool *found,
                       int64_t *first_ms)
{
	*first_ms = INT64_MIN;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		return HSM_SUCCESS; /* deleted by retention meanwhile */
	HSM_ENSURE(fd >= 0, HSM_ERR_IO, "cannot read %s: %s", path, hsm_own_file_error(errno));
	FILE *f = fdopen(fd, "r");
	if (f == NULL)
		close(fd);
	HSM_ENSURE(f != NULL, HSM_ERR_NOMEM, "out of memory");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	bool first = true;
	while ((n = getline(&line, &cap, f)) > 0) {
		if (first && !audit_line_time((const uint8_t *)line, (size_t)n, first_ms))
			*first_ms = INT64_MIN;
		first = false;
		match_line(line, (size_t)n, ids, n_ids, found);
	}
	bool failed = ferror(f) != 0;
	free(line);
	fclose(f);
	HSM_ENSURE(!failed, HSM_ERR_IO, "cannot read %s", path);
	return HSM_SUCCESS;
}

hsm_result hsm_audit_find_requests(const char *dir, int64_t since_ms, const char *const *ids,
                                   size_t n_ids, bool *found)
{
	for (size_t i = 0; i < n_ids; i++) {
		HSM_ASSERT(i == 0 || strcmp(ids[i - 1], ids[i]) < 0);
		found[i] = false;
	}
	char **names = NULL;
	size_t n = 0;
	HSM_GUARD(audit_list_files(dir, &names, &n));
	hsm_result res = HSM_SUCCESS;
	for (size_t i = n; i > 0 && hsm_ok(res); i--) {
		char path[PATH_MAX];
		int64_t first_ms;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i - 1]) >= sizeof(path)) {
			res = HSM_FAIL(HSM_ERR_IO, "audit file path too long in %s", dir);
			break;
		}
		res = scan(path, ids, n_ids, found, &first_ms);
		/* A file whose first time cannot be read tells nothing: the one before it is read too. */
		if (first_ms != INT64_MIN && first_ms < since_ms)
			break;
	}
	audit_free_list(names, n);
	return res;
}
