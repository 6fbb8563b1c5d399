/*
 * driver.c - replays files through LLVMFuzzerTestOneInput without libFuzzer.
 *
 *   <target>_replay DIR_OR_FILE...
 *
 * Runs every regular file of each directory (not recursively) and every file
 * named.  A missing directory is fine (a target may have no regressions
 * yet), but at least one input must run: a replay of nothing proves nothing.
 * A property violation aborts inside the target, which fails the test.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path, size_t *count)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	uint8_t *data = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len == cap) {
			size_t ncap = cap == 0 ? 4096 : cap * 2;
			uint8_t *nd = realloc(data, ncap);
			if (nd == NULL) {
				free(data);
				fclose(f);
				return -1;
			}
			data = nd;
			cap = ncap;
		}
		size_t got = fread(data + len, 1, cap - len, f);
		len += got;
		if (got == 0)
			break;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		fprintf(stderr, "%s: read error\n", path);
		free(data);
		return -1;
	}
	/* An exact-size copy, so reads past the end are caught by ASan as in libFuzzer. */
	uint8_t *exact = malloc(len > 0 ? len : 1);
	if (exact == NULL) {
		free(data);
		return -1;
	}
	if (len > 0)
		memcpy(exact, data, len);
	free(data);
	(void)LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	(*count)++;
	return 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int run_dir(const char *dir, size_t *count)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	char **names = NULL;
	size_t n = 0;
	int rc = 0;
	for (struct dirent *e = readdir(d); e != NULL && rc == 0; e = readdir(d)) {
		char path[PATH_MAX];
		struct stat st;
		if (e->d_name[0] == '.')
			continue;
		int w = snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (w < 0 || (size_t)w >= sizeof(path) || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		char **nn = realloc(names, (n + 1) * sizeof(*names));
		char *copy = strdup(path);
		if (nn == NULL || copy == NULL) {
			free(copy);
			if (nn != NULL)
				names = nn;
			rc = -1;
			break;
		}
		names = nn;
		names[n++] = copy;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		if (rc == 0)
			rc = run_file(names[i], count);
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	size_t count = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		int rc;
		if (stat(argv[i], &st) == 0 && S_ISREG(st.st_mode))
			rc = run_file(argv[i], &count);
		else
			rc = run_dir(argv[i], &count);
		if (rc != 0) {
			fprintf(stderr, "%s: cannot replay\n", argv[i]);
			return 1;
		}
	}
	if (count == 0) {
		fprintf(stderr, "no input to replay\n");
		return 1;
	}
	printf("%zu inputs replayed without a property violation\n", count);
	return 0;
}
