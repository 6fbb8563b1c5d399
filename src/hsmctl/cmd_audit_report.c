/*
 * cmd_audit_report.c - hsmctl audit report: what an audit trail says.
 *
 *   hsmctl audit report [--pubkey FILE] [--live] [--since T] [--until T]
 *                       [--key KEY_ID] [--json] FILES...
 *
 * The files are verified first, exactly as `audit verify` does; a trail that
 * does not verify gives no report (its records cannot be trusted) and exit
 * status 1.  Then, over the records in [since, until) (and about one key, with
 * --key): the period and nodes; every operation with its successes, errors
 * and denials; every principal likewise; failed authentications by access key
 * and source; and, in order, every change (key lifecycle, policies, aliases,
 * tags, rotation, users and access keys, JWT signing, backups, certificates) and every node
 * event (start-up, init, unseal, seal, automatic rotation and destruction,
 * backups, restores, shutdown).  A change made under a quorum approval names
 * the custodians who approved it (approved_by), whatever the window or key
 * asked for.  Text for people, --json for programs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit/audit.h"
#include "common/buf.h"
#include "common/util.h"
#include "hsmctl/hsmctl.h"
#include "kms/kms.h"

int cmd_audit_report(int argc, char **argv);

#define PUBKEY_MAX 16384
#define LINE_MAX_BYTES (1U << 20)

typedef struct report_opts {
	hsm_audit_verify_options verify;
	char since[40], until[40]; /* "" when not given; normalized to the records' form */
	const char *key;
	bool json;
} report_opts;

typedef struct report {
	json_t *ops;        /* op -> {total, success, error, denied} */
	json_t *principals; /* principal -> {total, success, error, denied} */
	json_t *auth;       /* "access key from source" -> {count, errors: {name: n}} */
	json_t *changes;    /* [record, ...] in order */
	json_t *events;
	json_t *nodes;      /* node -> records */
	json_t *approvals;  /* approval id -> [principal, ...] who approved it, in order */
	uint64_t records, checkpoints;
	char first[40], last[40];
} report;

/* Accepts 2026-11-30 or 2026-11-30T12:00:00Z; stores what compares with the records' times. */
static hsm_result parse_time(const char *flag, const char *t, char out[40])
{
	size_t n = strlen(t);
	bool date = n == 10 && t[4] == '-' && t[7] == '-';
	bool stamp = n == 20 && t[4] == '-' && t[7] == '-' && t[10] == 'T' && t[13] == ':' &&
	             t[16] == ':' && t[19] == 'Z';
	HSM_ENSURE(date || stamp, HSM_ERR_VALIDATION,
	           "%s: expected a UTC date or time, 2026-11-30 or 2026-11-30T12:00:00Z", flag);
	for (size_t i = 0; i < n; i++)
		HSM_ENSURE(strchr("-T:Z", t[i]) != NULL || (t[i] >= '0' && t[i] <= '9'),
		           HSM_ERR_VALIDATION, "%s: expected a UTC date or time", flag);
	if (date)
		snprintf(out, 40, "%s", t);
	else
		snprintf(out, 40, "%.19s.000Z", t); /* records carry milliseconds */
	return HSM_SUCCESS;
}

static int parse(int argc, char **argv, report_opts *o, hsm_buf *pem, int *first_file)
{
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;
		if (strcmp(a, "--live") == 0) {
			o->verify.allow_open_tail = true;
		} else if (strcmp(a, "--json") == 0) {
			o->json = true;
		} else if (strcmp(a, "--pubkey") == 0 && has_value) {
			pem->len = 0;
			if (hsm_failed(hsm_read_file(argv[++i], PUBKEY_MAX, pem)) ||
			    hsm_failed(hsm_buf_terminate(pem)))
				return hsmctl_fail("audit report");
			o->verify.pubkey_pem = (const char *)pem->data;
		} else if ((strcmp(a, "--since") == 0 || strcmp(a, "--until") == 0) && has_value) {
			if (hsm_failed(parse_time(a, argv[++i], a[2] == 's' ? o->since : o->until)))
				return hsmctl_usage("audit report", "%s", hsm_last_message());
		} else if (strcmp(a, "--key") == 0 && has_value) {
			o->key = argv[++i];
		} else {
			return hsmctl_usage("audit report", "unknown option '%s'", a);
		}
	}
	if (i >= argc)
		return hsmctl_usage("audit report", "name the audit files (e.g. DATA_DIR/audit/*.jsonl)");
	*first_file = i;
	return 0;
}

static const char *str_of(json_t *rec, const char *field)
{
	const char *s = json_string_value(json_object_get(rec, field));
	return s != NULL ? s : "";
}

/* Adds 1 to counts[name][outcome] and counts[name].total. */
static hsm_result count(json_t *counts, const char *name, const char *outcome)
{
	json_t *c = json_object_get(counts, name);
	if (c == NULL) {
		c = json_pack("{s:I,s:I,s:I,s:I}", "total", (json_int_t)0, "success", (json_int_t)0,
		              "error", (json_int_t)0, "denied", (json_int_t)0);
		HSM_ENSURE(c != NULL && json_object_set_new(counts, name, c) == 0, HSM_ERR_NOMEM,
		           "out of memory");
	}
	static const char *const keys[] = {"total", "success", "error", "denied"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (i > 0 && strcmp(outcome, keys[i]) != 0)
			continue;
		json_t *v = json_object_get(c, keys[i]);
		json_integer_set(v, json_integer_value(v) + 1);
	}
	return HSM_SUCCESS;
}

/* Operations that read or use keys without changing anything. */
static bool is_change(const char *op)
{
	const hsm_op_info *info = hsm_op_find(op);
	if (info != NULL)
		return info->mutating;
	static const char *const reads[] = {"Status",         "AuditHash",     "AuditPublicKey",
	                                    "SignToken",      "ListUsers",     "ListAccessKeys",
	                                    "ListBackups",    "ListApprovals", "GetApproval",
	                                    "GetCertificate", "ListCertificates"};
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++)
		if (strcmp(op, reads[i]) == 0)
			return false;
	return true; /* an administrative operation: users, access keys, seal, backups, JWT */
}

static bool is_auth_failure(const char *error)
{
	return strcmp(error, "InvalidSignatureException") == 0 ||
	       strcmp(error, "UnrecognizedClientException") == 0 ||
	       strcmp(error, "IncompleteSignatureException") == 0 ||
	       strcmp(error, "MissingAuthenticationTokenException") == 0;
}

/* The fields of a record a change or event line shows (no prev hash, no latency). */
static json_t *summary_of(json_t *rec)
{
	static const char *const fields[] = {"time", "node", "op", "outcome", "error", "principal",
	                                     "access_key", "source", "key_id", "key_version",
	                                     "request_id", "extra"};
	json_t *s = json_object();
	if (s == NULL)
		return NULL;
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		json_t *v = json_object_get(rec, fields[i]);
		if (v != NULL && json_object_set(s, fields[i], v) != 0) {
			json_decref(s);
			return NULL;
		}
	}
	return s;
}

static const char *approval_of(json_t *rec)
{
	json_t *v = json_object_get(json_object_get(rec, "extra"), "approval_id");
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Notes who approved what, from every record (approvals come before the window's changes). */
static hsm_result note_approval(report *r, json_t *rec)
{
	const char *id = approval_of(rec);
	if (id == NULL || strcmp(str_of(rec, "op"), "ApproveRequest") != 0 ||
	    strcmp(str_of(rec, "outcome"), "success") != 0)
		return HSM_SUCCESS;
	json_t *who = json_object_get(r->approvals, id);
	if (who == NULL) {
		who = json_array();
		HSM_ENSURE(who != NULL && json_object_set_new(r->approvals, id, who) == 0,
		           HSM_ERR_NOMEM, "out of memory");
	}
	HSM_ENSURE(json_array_append_new(who, json_string(str_of(rec, "principal"))) == 0,
	           HSM_ERR_NOMEM, "out of memory");
	return HSM_SUCCESS;
}

/* A change's summary, with the custodians who approved it when it ran under an approval. */
static json_t *change_of(report *r, json_t *rec)
{
	json_t *s = summary_of(rec);
	const char *id = approval_of(rec), *op = str_of(rec, "op");
	json_t *who = id != NULL ? json_object_get(r->approvals, id) : NULL;
	if (s != NULL && who != NULL && strcmp(op, "ApproveRequest") != 0 &&
	    strcmp(op, "DenyRequest") != 0 && strcmp(op, "CancelRequest") != 0 &&
	    json_object_set_new(s, "approved_by", json_deep_copy(who)) != 0) {
		json_decref(s);
		return NULL;
	}
	return s;
}

static hsm_result add_record(report *r, const report_opts *o, json_t *rec)
{
	const char *type = str_of(rec, "type"), *time = str_of(rec, "time");
	if (strcmp(type, "checkpoint") == 0) {
		r->checkpoints++;
		return HSM_SUCCESS;
	}
	HSM_GUARD(note_approval(r, rec));
	if ((o->since[0] != '\0' && strcmp(time, o->since) < 0) ||
	    (o->until[0] != '\0' && strcmp(time, o->until) >= 0))
		return HSM_SUCCESS;
	if (o->key != NULL && strcmp(str_of(rec, "key_id"), o->key) != 0)
		return HSM_SUCCESS;
	r->records++;
	if (r->first[0] == '\0')
		snprintf(r->first, sizeof(r->first), "%s", time);
	snprintf(r->last, sizeof(r->last), "%s", time);
	const char *op = str_of(rec, "op"), *outcome = str_of(rec, "outcome");
	const char *error = str_of(rec, "error"), *node = str_of(rec, "node");
	json_t *n = json_object_get(r->nodes, node);
	HSM_ENSURE(json_object_set_new(r->nodes, node,
	                               json_integer(n != NULL ? json_integer_value(n) + 1 : 1)) == 0,
	           HSM_ERR_NOMEM, "out of memory");
	HSM_GUARD(count(r->ops, op, outcome));
	char who[512];
	if (*str_of(rec, "principal") != '\0')
		snprintf(who, sizeof(who), "%s", str_of(rec, "principal"));
	else if (*str_of(rec, "access_key") != '\0')
		snprintf(who, sizeof(who), "(not authenticated) %s", str_of(rec, "access_key"));
	else if (strcmp(type, "event") == 0)
		snprintf(who, sizeof(who), "hsmd"); /* the node's own events */
	else
		snprintf(who, sizeof(who), "(no credentials)");
	HSM_GUARD(count(r->principals, who, outcome));
	if (strcmp(outcome, "denied") == 0 && is_auth_failure(error)) {
		char from[512];
		snprintf(from, sizeof(from), "%s from %s",
		         *str_of(rec, "access_key") ? str_of(rec, "access_key") : "(no access key)",
		         *str_of(rec, "source") ? str_of(rec, "source") : "(unknown)");
		HSM_GUARD(count(r->auth, from, error));
	}
	json_t *list = NULL;
	if (strcmp(type, "event") == 0 && strcmp(op, "AuditLogOpened") != 0)
		list = r->events;
	else if (strcmp(type, "request") == 0 && strcmp(outcome, "success") == 0 && is_change(op))
		list = r->changes;
	if (list != NULL) {
		json_t *s = list == r->changes ? change_of(r, rec) : summary_of(rec);
		HSM_ENSURE(s != NULL && json_array_append_new(list, s) == 0, HSM_ERR_NOMEM,
		           "out of memory");
	}
	return HSM_SUCCESS;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Reads the files in the order the verifier does (by name) and adds their records. */
static hsm_result read_files(char **paths, size_t n, report *r, const report_opts *o)
{
	qsort(paths, n, sizeof(paths[0]), by_name);
	for (size_t i = 0; i < n; i++) {
		FILE *f = fopen(paths[i], "r");
		HSM_ENSURE(f != NULL, HSM_ERR_IO, "cannot open %s: %s", paths[i], strerror(errno));
		char *line = NULL;
		size_t cap = 0;
		ssize_t len;
		hsm_result res = HSM_SUCCESS;
		while (hsm_ok(res) && (len = getline(&line, &cap, f)) > 0) {
			if ((size_t)len > LINE_MAX_BYTES || line[len - 1] != '\n')
				continue; /* a torn tail of a live log: verify allowed it, nothing to count */
			json_error_t jerr;
			json_t *rec = json_loadb(line, (size_t)len, 0, &jerr);
			if (rec == NULL) {
				res = HSM_FAIL(HSM_ERR_VALIDATION, "%s: a record is not JSON", paths[i]);
				break;
			}
			res = add_record(r, o, rec);
			json_decref(rec);
		}
		free(line);
		fclose(f);
		HSM_GUARD(res);
	}
	return HSM_SUCCESS;
}

static void print_counts(const char *title, json_t *counts)
{
	printf("\n%-56s %8s %8s %8s %8s\n", title, "total", "success", "error", "denied");
	const char *name;
	json_t *c;
	json_object_foreach(counts, name, c)
	{
		printf("  %-54s %8lld %8lld %8lld %8lld\n", name,
		       (long long)json_integer_value(json_object_get(c, "total")),
		       (long long)json_integer_value(json_object_get(c, "success")),
		       (long long)json_integer_value(json_object_get(c, "error")),
		       (long long)json_integer_value(json_object_get(c, "denied")));
	}
}

static void print_lines(const char *title, json_t *list)
{
	printf("\n%s (%zu)\n", title, json_array_size(list));
	size_t i;
	json_t *s;
	json_array_foreach(list, i, s)
	{
		printf("  %s %s %s", str_of(s, "time"), str_of(s, "node"), str_of(s, "op"));
		if (*str_of(s, "key_id") != '\0')
			printf(" key=%s", str_of(s, "key_id"));
		json_t *v = json_object_get(s, "key_version");
		if (json_is_integer(v) && json_integer_value(v) > 0)
			printf(" v%lld", (long long)json_integer_value(v));
		if (*str_of(s, "principal") != '\0')
			printf(" by=%s", str_of(s, "principal"));
		if (strcmp(str_of(s, "outcome"), "success") != 0)
			printf(" outcome=%s %s", str_of(s, "outcome"), str_of(s, "error"));
		const char *k;
		json_t *x;
		json_object_foreach(json_object_get(s, "extra"), k, x)
		{
			if (json_is_string(x))
				printf(" %s=%s", k, json_string_value(x));
		}
		size_t j;
		json_array_foreach(json_object_get(s, "approved_by"), j, x)
			printf("%s%s", j == 0 ? " approved_by=" : ",", json_string_value(x));
		printf("\n");
	}
}

static void print_text(const report *r, const hsm_audit_verify_report *v, const report_opts *o)
{
	printf("verified: %zu files, %llu records (seq %llu to %llu), %llu signed checkpoints "
	       "verified%s\n",
	       v->files, (unsigned long long)v->records, (unsigned long long)v->first_seq,
	       (unsigned long long)v->last_seq, (unsigned long long)v->checkpoints_verified,
	       o->verify.pubkey_pem == NULL ? " (no --pubkey: signatures not checked)" : "");
	printf("period: %s to %s", r->records ? r->first : "-", r->records ? r->last : "-");
	if (o->since[0] != '\0' || o->until[0] != '\0')
		printf(" (asked: from %s until %s)", o->since[0] ? o->since : "the start",
		       o->until[0] ? o->until : "the end");
	printf("\nrecords: %llu", (unsigned long long)r->records);
	if (o->key != NULL)
		printf(" about key %s", o->key);
	printf("\nnodes:");
	const char *name;
	json_t *c;
	json_object_foreach(r->nodes, name, c)
	{
		printf(" %s (%lld)", name, (long long)json_integer_value(c));
	}
	printf("\n");
	print_counts("operations", r->ops);
	print_counts("principals", r->principals);
	printf("\nfailed authentications (%zu sources)\n", json_object_size(r->auth));
	json_object_foreach(r->auth, name, c)
	{
		printf("  %-54s %8lld\n", name, (long long)json_integer_value(json_object_get(c, "total")));
	}
	print_lines("changes", r->changes);
	print_lines("node events", r->events);
}

static hsm_result emit_json(const report *r, const hsm_audit_verify_report *v,
                            const report_opts *o)
{
	json_t *out = json_pack(
	    "{s:{s:b,s:I,s:I,s:I,s:I,s:I,s:b},s:{s:s?,s:s?,s:s?,s:s?},s:I,s:O,s:O,s:O,s:O,s:O,s:O}",
	    "verified", "valid", 1, "files", (json_int_t)v->files, "records", (json_int_t)v->records,
	    "first_seq", (json_int_t)v->first_seq, "last_seq", (json_int_t)v->last_seq,
	    "checkpoints_verified", (json_int_t)v->checkpoints_verified, "signatures_checked",
	    o->verify.pubkey_pem != NULL, "period", "first", r->records ? r->first : NULL, "last",
	    r->records ? r->last : NULL, "since", o->since[0] ? o->since : NULL, "until",
	    o->until[0] ? o->until : NULL, "records", (json_int_t)r->records, "nodes", r->nodes,
	    "operations", r->ops, "principals", r->principals, "failed_authentications", r->auth,
	    "changes", r->changes, "events", r->events);
	HSM_ENSURE(out != NULL, HSM_ERR_NOMEM, "out of memory");
	if (o->key != NULL)
		json_object_set_new(out, "key_id", json_string(o->key));
	int rc = json_dumpf(out, stdout, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(out);
	HSM_ENSURE(rc == 0, HSM_ERR_IO, "cannot write the report");
	printf("\n");
	return HSM_SUCCESS;
}

int cmd_audit_report(int argc, char **argv)
{
	report_opts o;
	memset(&o, 0, sizeof(o));
	hsm_buf pem = {0};
	int first = 0, rc = parse(argc, argv, &o, &pem, &first);
	if (rc != 0) {
		hsm_buf_free(&pem);
		return rc;
	}
	hsm_audit_verify_report v;
	memset(&v, 0, sizeof(v));
	report r = {.ops = json_object(), .principals = json_object(), .auth = json_object(),
	            .changes = json_array(), .events = json_array(), .nodes = json_object(),
	            .approvals = json_object()};
	size_t n = (size_t)(argc - first);
	if (hsm_failed(hsm_audit_verify_files((const char *const *)argv + first, n, &o.verify, &v))) {
		rc = hsmctl_fail("audit report");
	} else if (!v.valid) {
		fprintf(stderr,
		        "hsmctl: audit report: the trail does not verify, so no report is made from it: "
		        "%s line %llu (seq %llu): %s\n",
		        v.file, (unsigned long long)v.line, (unsigned long long)v.seq, v.detail);
		rc = 1;
	} else if (hsm_failed(read_files(argv + first, n, &r, &o)) ||
	           hsm_failed(o.json ? emit_json(&r, &v, &o) : HSM_SUCCESS)) {
		rc = hsmctl_fail("audit report");
	} else {
		if (!o.json)
			print_text(&r, &v, &o);
		rc = 0;
	}
	json_decref(r.ops);
	json_decref(r.principals);
	json_decref(r.auth);
	json_decref(r.changes);
	json_decref(r.events);
	json_decref(r.nodes);
	json_decref(r.approvals);
	hsm_buf_free(&pem);
	return rc;
}
