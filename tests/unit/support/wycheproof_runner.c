#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "support/wycheproof_runner.h"

#define MAX_FILES 256

typedef struct wp_counts {
	unsigned passed, not_applicable, acc_accepted, acc_rejected, mismatches;
} wp_counts;

typedef struct wp_file_list {
	char *names[MAX_FILES];
	size_t n;
} wp_file_list;

static json_t *current_file;

const char *wp_algorithm(void)
{
	assert_non_null(current_file);
	return wp_str(current_file, "algorithm");
}

const char *wp_str(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	if (s == NULL)
		fail_msg("vector member '%s' is missing", key);
	return s;
}

long long wp_int(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (!json_is_integer(v))
		fail_msg("vector member '%s' is missing", key);
	return json_integer_value(v);
}

void wp_hex(json_t *obj, const char *key, hsm_buf *out)
{
	const char *s = wp_str(obj, key);
	hsm_buf_clear(out);
	if (hsm_failed(hsm_hex_decode(out, s, strlen(s), HSM_ERR_VALIDATION)))
		fail_msg("vector member '%s' is not lowercase hex", key);
}

void wp_kms_hash(const char *sha, char *out, size_t cap)
{
	size_t i = 0;
	for (; sha[i] != '\0' && i + 1 < cap; i++)
		out[i] = sha[i] == '-' ? '_' : sha[i];
	out[i] = '\0';
}

static const char *vector_dir(void)
{
	const char *dir = getenv("HSM_WYCHEPROOF_DIR");
	return dir != NULL && *dir != '\0' ? dir : NULL;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the *.json files, sorted; skips the cmocka test when the folder is absent. */
static void list_files(wp_file_list *l)
{
	const char *dir = vector_dir();
	DIR *d = dir != NULL ? opendir(dir) : NULL;
	if (d == NULL) {
		print_message("Wycheproof vectors not found (HSM_WYCHEPROOF_DIR=%s): skipped, "
		              "nothing was verified\n",
		              dir != NULL ? dir : "(unset)");
		skip();
	}
	l->n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) {
			assert_true(l->n < MAX_FILES);
			l->names[l->n] = strdup(e->d_name);
			assert_non_null(l->names[l->n]);
			l->n++;
		}
	}
	closedir(d);
	qsort(l->names, l->n, sizeof(l->names[0]), cmp_names);
}

static void free_files(wp_file_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	l->n = 0;
}

static json_t *load(const char *name)
{
	char path[4096];
	json_error_t err;
	snprintf(path, sizeof(path), "%s/%s", vector_dir(), name);
	json_t *root = json_load_file(path, 0, &err);
	if (root == NULL)
		fail_msg("%s: %s (line %d)", name, err.text, err.line);
	return root;
}

static bool has_flag(json_t *test, const char *flag)
{
	size_t i;
	json_t *f;
	json_array_foreach(json_object_get(test, "flags"), i, f)
	{
		const char *s = json_string_value(f);
		if (s != NULL && strcmp(s, flag) == 0)
			return true;
	}
	return false;
}

/* An acceptable vector: every decided flag it carries must agree with hsmd's verdict. */
static bool acceptable_ok(json_t *test, bool accepted, const wp_decision *d, size_t nd)
{
	size_t decided = 0;
	for (size_t i = 0; i < nd; i++) {
		if (!has_flag(test, d[i].flag))
			continue;
		decided++;
		if (d[i].accept != accepted)
			return false;
	}
	return decided > 0;
}

static void report(const char *file, json_t *test, const char *expected, wp_verdict v)
{
	static const char *const names[] = {"accepted", "rejected", "unsupported", "misbehaved"};
	char *flags = json_dumps(json_object_get(test, "flags"), JSON_COMPACT);
	print_message("MISMATCH %s tcId %lld (%s, flags %s): expected %s, hsmd %s; last error: %s\n",
	              file, wp_int(test, "tcId"), wp_str(test, "comment"), flags ? flags : "?",
	              expected, names[v], hsm_last_message());
	free(flags);
}

static void record(wp_counts *c, const char *file, json_t *test, wp_verdict v,
                   const wp_decision *d, size_t nd)
{
	const char *expected = wp_str(test, "result");
	bool ok;
	if (strcmp(expected, "acceptable") == 0 && v != WP_WRONG) {
		/* Parameters hsmd does not offer are a rejection of the acceptable input. */
		bool accepted = v == WP_ACCEPT;
		ok = acceptable_ok(test, accepted, d, nd);
		if (ok && accepted)
			c->acc_accepted++;
		else if (ok)
			c->acc_rejected++;
	} else if (v == WP_UNSUPPORTED) {
		c->not_applicable++;
		return;
	} else {
		ok = (strcmp(expected, "valid") == 0 && v == WP_ACCEPT) ||
		     (strcmp(expected, "invalid") == 0 && v == WP_REJECT);
		if (ok)
			c->passed++;
	}
	if (!ok) {
		c->mismatches++;
		report(file, test, expected, v);
	}
}

static void run_group(const wp_family *f, const char *file, json_t *group, wp_counts *c,
                      const wp_decision *d, size_t nd)
{
	void *state = NULL;
	wp_verdict gv = f->group_begin(group, &state);
	size_t i;
	json_t *test;
	json_array_foreach(json_object_get(group, "tests"), i, test)
	{
		wp_verdict v = gv == WP_ACCEPT ? f->run(group, test, state) : gv;
		record(c, file, test, v, d, nd);
	}
	if (f->group_end != NULL)
		f->group_end(state);
}

static void run_file(const wp_family *f, const char *file, json_t *root, const wp_decision *d,
                     size_t nd)
{
	wp_counts c = {0};
	size_t i;
	json_t *group;
	json_array_foreach(json_object_get(root, "testGroups"), i, group)
		run_group(f, file, group, &c, d, nd);
	print_message("%-44s passed %4u  n/a %4u  acceptable: accepted %2u rejected %2u  "
	              "mismatches %u\n",
	              file, c.passed, c.not_applicable, c.acc_accepted, c.acc_rejected,
	              c.mismatches);
	if (c.mismatches > 0)
		fail_msg("%s: %u vectors disagree with hsmd", file, c.mismatches);
	if (c.passed == 0)
		fail_msg("%s: no vector applied to hsmd", file);
}

void wp_run_family(const wp_family *f, const wp_decision *decisions, size_t n_decisions)
{
	wp_file_list l;
	list_files(&l);
	size_t found = 0;
	for (size_t i = 0; i < l.n; i++) {
		json_t *root = load(l.names[i]);
		const char *schema = json_string_value(json_object_get(root, "schema"));
		if (schema != NULL && strcmp(schema, f->schema) == 0) {
			found++;
			current_file = root;
			run_file(f, l.names[i], root, decisions, n_decisions);
			current_file = NULL;
		}
		json_decref(root);
	}
	free_files(&l);
	if (found == 0)
		fail_msg("no vector file uses schema %s", f->schema);
}

void wp_check_coverage(const wp_family *const *families, size_t n)
{
	wp_file_list l;
	list_files(&l);
	for (size_t i = 0; i < l.n; i++) {
		json_t *root = load(l.names[i]);
		const char *schema = json_string_value(json_object_get(root, "schema"));
		bool known = false;
		for (size_t j = 0; j < n && schema != NULL; j++)
			known = known || strcmp(schema, families[j]->schema) == 0;
		if (!known) /* before the document (which holds the schema's name) goes */
			fail_msg("%s has schema %s, which no test handles", l.names[i],
			         schema ? schema : "(none)");
		json_decref(root);
	}
	assert_true(l.n > 0);
	free_files(&l);
}
