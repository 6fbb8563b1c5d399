/*
 * listhold.c - an LD_PRELOAD library that holds hsmd's periodic read of its
 * access key ids (the SQLite store's list of access_keys, read on the thread
 * named hsmd-usage) between the read and its use, once, on command.
 *
 * HSM_TEST_LIST_HOLD names a directory the test shares with the server.
 * When a file "arm" is there as such a read ends, the preload removes it,
 * makes "held", and waits (at most 10 s) for the test to make "go", which it
 * then removes, before the read's last step returns.  Nothing else changes.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SQLITE_DONE 101

typedef struct sqlite3_stmt sqlite3_stmt;

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
}

static void hold(const char *dir)
{
	char arm[PATH_MAX], held[PATH_MAX], go[PATH_MAX];
	snprintf(arm, sizeof(arm), "%s/arm", dir);
	snprintf(held, sizeof(held), "%s/held", dir);
	snprintf(go, sizeof(go), "%s/go", dir);
	if (unlink(arm) != 0)
		return;
	touch(held);
	for (int i = 0; i < 1000 && access(go, F_OK) != 0; i++)
		usleep(10000);
	unlink(go);
}

int sqlite3_step(sqlite3_stmt *st)
{
	static int (*real)(sqlite3_stmt *);
	static const char *(*sql_of)(sqlite3_stmt *);
	if (real == NULL) {
		real = (int (*)(sqlite3_stmt *))dlsym(RTLD_NEXT, "sqlite3_step");
		sql_of = (const char *(*)(sqlite3_stmt *))dlsym(RTLD_NEXT, "sqlite3_sql");
	}
	int rc = real(st);
	const char *dir = getenv("HSM_TEST_LIST_HOLD");
	if (rc != SQLITE_DONE || dir == NULL || sql_of == NULL)
		return rc;
	const char *sql = sql_of(st);
	char name[16] = "";
	pthread_getname_np(pthread_self(), name, sizeof(name));
	if (sql != NULL && strstr(sql, "FROM access_keys ORDER BY id") != NULL &&
	    strcmp(name, "hsmd-usage") == 0)
		hold(dir);
	return rc;
}
