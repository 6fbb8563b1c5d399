/*
 * cmd_usage.c - the last use of keys, against a running hsmd.
 *
 *   hsmctl --endpoint URL key usage [KEY...] [--unused-days N] [--json]
 *
 * Each key's last successful cryptographic use (GetKeyLastUsage), for the
 * keys named or, without KEY, for every key ListKeys gives.  --unused-days N
 * keeps the keys with no use recorded in the last N days, uses having been
 * recorded for all of them: the candidates to disable (and, after watching
 * for the failures that brings, to delete).  A
 * key without a recorded use shows since when uses are recorded: one used
 * only before that may still be in use (its audit trail says).  --json
 * prints each GetKeyLastUsage answer as one line of JSON.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "hsmctl/hsmctl.h"

#define LIST_PAGE 1000

typedef struct usage_opts {
	int64_t cutoff_ms; /* 0: every key; else those not used since */
	bool json;
	bool header_done;
	int failures;
} usage_opts;

static void print_usage(usage_opts *o, json_t *ans)
{
	if (o->json) {
		char *line = json_dumps(ans, JSON_COMPACT);
		if (line != NULL)
			printf("%s\n", line);
		free(line);
		return;
	}
	if (!o->header_done) {
		printf("%-36s  %-24s  %-35s  %s\n", "KEY", "LAST USED", "OPERATION", "REQUEST");
		o->header_done = true;
	}
	const char *id = json_string_value(json_object_get(ans, "KeyId"));
	json_t *last = json_object_get(ans, "KeyLastUsage");
	if (json_object_get(last, "Timestamp") == NULL) { /* {}: no use recorded */
		char since[21];
		hsmctl_format_json_time(json_object_get(ans, "TrackingStartDate"), since);
		printf("%-36s  %-24s  %-35s  (none recorded since %s)\n", id ? id : "?", "-", "-",
		       since);
		return;
	}
	char when[25];
	hsmctl_format_json_time_ms(json_object_get(last, "Timestamp"), when);
	const char *op = json_string_value(json_object_get(last, "Operation"));
	const char *rid = json_string_value(json_object_get(last, "KmsRequestId"));
	printf("%-36s  %-24s  %-35s  %s\n", id ? id : "?", when, op ? op : "?", rid ? rid : "?");
}

/* Asks for one key's last use and prints it when the filter keeps it. */
static void one(usage_opts *o, const char *key)
{
	json_t *body = json_pack("{s:s}", "KeyId", key), *ans = NULL;
	hsm_result r = hsm_client_call_json(&hsmctl_globals.client, "TrentService.GetKeyLastUsage",
	                                    body, true, &ans);
	json_decref(body);
	if (hsm_failed(r)) {
		o->failures++;
		(void)hsmctl_fail(key);
		return;
	}
	/* Unused for N days: a use older than that, or none while uses were recorded for
	 * all N days (TrackingStartDate, the key's creation if later: a key made an hour
	 * ago is no candidate to disable). */
	json_t *when = json_object_get(json_object_get(ans, "KeyLastUsage"), "Timestamp");
	double since = when != NULL ? json_number_value(when)
	                            : json_number_value(json_object_get(ans, "TrackingStartDate"));
	if (o->cutoff_ms == 0 || since * 1000.0 < (double)o->cutoff_ms)
		print_usage(o, ans);
	json_decref(ans);
}

/* Every key ListKeys gives, page by page. */
static int all_keys(usage_opts *o)
{
	char *marker = NULL;
	for (;;) {
		json_t *body = json_pack("{s:i}", "Limit", LIST_PAGE), *page = NULL;
		if (marker != NULL)
			json_object_set_new(body, "Marker", json_string(marker));
		hsm_result r = hsm_client_call_json(&hsmctl_globals.client, "TrentService.ListKeys",
		                                    body, true, &page);
		json_decref(body);
		free(marker);
		marker = NULL;
		if (hsm_failed(r))
			return hsmctl_fail("ListKeys");
		size_t i;
		json_t *k;
		json_array_foreach(json_object_get(page, "Keys"), i, k)
		{
			const char *id = json_string_value(json_object_get(k, "KeyId"));
			if (id != NULL)
				one(o, id);
		}
		const char *next = json_string_value(json_object_get(page, "NextMarker"));
		bool more = json_is_true(json_object_get(page, "Truncated")) && next != NULL;
		if (more)
			marker = strdup(next);
		json_decref(page);
		if (!more)
			break;
		if (marker == NULL) {
			fprintf(stderr, "hsmctl: key usage: out of memory\n");
			return 1;
		}
	}
	return o->failures > 0 ? 1 : 0;
}

int hsmctl_cmd_key_usage(int argc, char **argv)
{
	static const struct option longopts[] = {{"unused-days", required_argument, NULL, 'u'},
	                                         {"json", no_argument, NULL, 'j'},
	                                         {NULL, 0, NULL, 0}};
	usage_opts o = {0};
	if (!hsmctl_online())
		return hsmctl_usage("key usage", "needs --endpoint (a running hsmd)");
	hsmctl_seen seen = {0};
	optind = 1;
	for (int c, i = -1; (c = getopt_long(argc, argv, "", longopts, &i)) != -1; i = -1) {
		if (hsmctl_getopt_once(&seen, "key usage", longopts, i) != 0)
			return 2;
		if (c == 'j') {
			o.json = true;
		} else if (c == 'u') {
			char *end = NULL;
			errno = 0;
			long days = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' || days < 1 || days > 36500)
				return hsmctl_usage("key usage", "--unused-days: give whole days, 1 to 36500");
			o.cutoff_ms = hsm_now_ms() - (int64_t)days * 86400 * 1000;
		} else {
			return hsmctl_usage("key usage", "[KEY...] [--unused-days N] [--json]");
		}
	}
	if (optind == argc)
		return all_keys(&o);
	for (int i = optind; i < argc; i++)
		one(&o, argv[i]);
	return o.failures > 0 ? 1 : 0;
}
