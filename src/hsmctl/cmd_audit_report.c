/*
 * cmd_audit_report.c - hsmctl audit report: what an audit trail says.
 *
 *   hsmctl audit report [--pubkey FILE] [--live] [--since T] [--until T]
 *                       [--key KEY_ID] [--json] FILES|DIRS...
 *
 * The files are verified first, exactly as `audit verify` does; a trail that
 * does not verify gives no report (its records cannot be trusted) and exit
 * status 1.  Then, over the records in [since, until) (and about one key, with
 * --key): the period and nodes; every operation with its successes, errors
 * and denials; every principal likewise; failed authentications by access key
 * and source address; and, in order, every change (key lifecycle, policies,
 * aliases, tags, rotation, users and access keys, JWT signing, backups,
 * certificates) and every node event (start-up, init, unseal, seal, automatic
 * rotation and destruction, backups, restores, rekeys, shutdown, and a start
 * after a run that did not shut down, flagged).  A change made under a quorum
 * approval names the custodians who approved it (approved_by), whatever the
 * window or key asked for; a user or access-key change names the user, roles
 * and access key its record carries; a request recorded after the fact
 * (RequestRecordRecovered) counts as itself, flagged, as are bytes something
 * else wrote into the live file (AuditForeignBytes).  Text for people, --json
 * for programs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "audit/audit.h"
#include "audit/outbox_rows.h"
#include "common/buf.h"
#include "common/encoding.h"
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
	json_t *auth;       /* "access key from source" -> {total, error name: n, ...} */
	json_t *refused;    /* the same, for the other refusals of requests nobody authenticated */
	json_t *changes;    /* [record, ...] in order */
	json_t *events;
	json_t *nodes;      /* node -> records */
	json_t *approvals;  /* approval id -> [principal, ...] who approved it, in order */
	uint64_t records, checkpoints;
	char first[40], last[40];
} report;

/* The number n digits at t make, or -1 when one is not a digit. */
static int digits(const char *t, size_t n)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (t[i] < '0' || t[i] > '9')
			return -1;
		v = v * 10 + (t[i] - '0');
	}
	return v;
}

/* Days in month m (1-12) of year y, Gregorian. */
static int month_days(int y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : days[m - 1];
}

/*
 * Accepts 2026-11-30 or 2026-11-30T12:00:00Z, a real date and time (a month
 * 13 or a 31 April would match nothing, silently); stores what compares with
 * the records' times.
 */
static hsm_result parse_time(const char *flag, const char *t, char out[40])
{
	size_t n = strlen(t);
	bool date = n == 10 && t[4] == '-' && t[7] == '-';
	bool stamp = n == 20 && t[4] == '-' && t[7] == '-' && t[10] == 'T' && t[13] == ':' &&
	             t[16] == ':' && t[19] == 'Z';
	HSM_ENSURE(date || stamp, HSM_ERR_VALIDATION,
	           "%s: expected a UTC date or time, 2026-11-30 or 2026-11-30T12:00:00Z", flag);
	int y = digits(t, 4), mo = digits(t + 5, 2), d = digits(t + 8, 2);
	int h = stamp ? digits(t + 11, 2) : 0, mi = stamp ? digits(t + 14, 2) : 0,
	    sec = stamp ? digits(t + 17, 2) : 0;
	HSM_ENSURE(y >= 0 && mo >= 0 && d >= 0 && h >= 0 && mi >= 0 && sec >= 0, HSM_ERR_VALIDATION,
	           "%s: expected a UTC date or time, 2026-11-30 or 2026-11-30T12:00:00Z", flag);
	HSM_ENSURE(mo >= 1 && mo <= 12, HSM_ERR_VALIDATION, "%s %s: no month %d (1 to 12)", flag, t,
	           mo);
	HSM_ENSURE(d >= 1 && d <= month_days(y, mo), HSM_ERR_VALIDATION,
	           "%s %s: no day %d in that month (1 to %d)", flag, t, d, month_days(y, mo));
	HSM_ENSURE(h <= 23 && mi <= 59 && sec <= 59, HSM_ERR_VALIDATION,
	           "%s %s: no time %.8s (00:00:00 to 23:59:59)", flag, t, t + 11);
	if (date)
		snprintf(out, 40, "%s", t);
	else
		snprintf(out, 40, "%.19s.000Z", t); /* records carry milliseconds */
	return HSM_SUCCESS;
}

/*
 * The key id --key names, as records carry it: a key id, or a key ARN
 * (arn:aws:kms:REGION:ACCOUNT:key/ID).  An alias names a key only in a store,
 * which the report does not read, and anything else would match nothing.
 */
static hsm_result parse_key(const char *arg, const char **key_id)
{
	const char *slash = strrchr(arg, '/');
	const char *id = strncmp(arg, "arn:", 4) == 0 && slash != NULL && slash - arg >= 4 &&
	                         strncmp(slash - 4, ":key", 4) == 0
	                     ? slash + 1
	                     : arg;
	HSM_ENSURE(strncmp(arg, "alias/", 6) != 0 && strstr(arg, ":alias/") == NULL,
	           HSM_ERR_VALIDATION,
	           "--key %.128s: an alias cannot be resolved offline; give the key id or key ARN "
	           "(aws kms describe-key --key-id ALIAS shows them)",
	           arg);
	HSM_ENSURE(hsm_is_uuid(id), HSM_ERR_VALIDATION,
	           "--key %.128s: expected a key id (1234abcd-12ab-34cd-56ef-1234567890ab) or a key "
	           "ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)",
	           arg);
	*key_id = id;
	return HSM_SUCCESS;
}

/*
 * True when both --since and --until are given and no record time t can have
 * since <= t < until.  A date stands for its first millisecond.
 */
static bool empty_window(const report_opts *o)
{
	char since[sizeof(o->since) + 16], until[sizeof(o->until) + 16];
	if (o->since[0] == '\0' || o->until[0] == '\0')
		return false;
	const char *midnight = "T00:00:00.000Z";
	snprintf(since, sizeof(since), "%s%s", o->since, strlen(o->since) == 10 ? midnight : "");
	snprintf(until, sizeof(until), "%s%s", o->until, strlen(o->until) == 10 ? midnight : "");
	return strcmp(until, since) <= 0;
}

static int parse(int argc, char **argv, report_opts *o, hsm_buf *pem, int *first_file)
{
	static const char *const known[] = {"--live", "--json", "--pubkey", "--since", "--until",
	                                    "--key"};
	hsmctl_seen seen = {0};
	const char *pubkey = NULL;
	int i = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		const char *a = argv[i];
		bool has_value = i + 1 < argc;
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
			if (strcmp(a, known[k]) == 0 && hsmctl_once(&seen, "audit report", a + 2) != 0)
				return 2;
		if (strcmp(a, "--live") == 0) {
			o->verify.allow_open_tail = true;
		} else if (strcmp(a, "--json") == 0) {
			o->json = true;
		} else if (strcmp(a, "--pubkey") == 0 && has_value) {
			pubkey = argv[++i];
		} else if ((strcmp(a, "--since") == 0 || strcmp(a, "--until") == 0) && has_value) {
			if (hsm_failed(parse_time(a, argv[++i], a[2] == 's' ? o->since : o->until)))
				return hsmctl_usage("audit report", "%s", hsm_last_message());
		} else if (strcmp(a, "--key") == 0 && has_value) {
			if (hsm_failed(parse_key(argv[++i], &o->key)))
				return hsmctl_usage("audit report", "%s", hsm_last_message());
		} else {
			return hsmctl_usage("audit report", "unknown option '%s'", a);
		}
	}
	if (empty_window(o))
		return hsmctl_usage("audit report", "--until %s is not after --since %s: no record "
		                    "could fall between them", o->until, o->since);
	if (i >= argc)
		return hsmctl_usage("audit report", "name the audit files or their directories "
		                    "(e.g. DATA_DIR/audit)");
	/* Read once every option is known good: a refused command reads nothing. */
	if (pubkey != NULL) {
		if (hsm_failed(hsm_read_file(pubkey, PUBKEY_MAX, pem)) ||
		    hsm_failed(hsm_buf_terminate(pem)))
			return hsmctl_fail("audit report");
		o->verify.pubkey_pem = (const char *)pem->data;
	}
	*first_file = i;
	return 0;
}

static const char *str_of(json_t *rec, const char *field)
{
	const char *s = json_string_value(json_object_get(rec, field));
	return s != NULL ? s : "";
}

/* Adds n to counts[name][outcome] and counts[name].total. */
static hsm_result count_n(json_t *counts, const char *name, const char *outcome, json_int_t n)
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
		json_integer_set(v, json_integer_value(v) + n);
	}
	return HSM_SUCCESS;
}

static hsm_result count(json_t *counts, const char *name, const char *outcome)
{
	return count_n(counts, name, outcome, 1);
}

/* Adds n to counts[name][kind] and counts[name].total. */
static hsm_result count_kind(json_t *counts, const char *name, const char *kind, json_int_t n)
{
	json_t *c = json_object_get(counts, name);
	if (c == NULL) {
		c = json_pack("{s:I}", "total", (json_int_t)0);
		HSM_ENSURE(c != NULL && json_object_set_new(counts, name, c) == 0, HSM_ERR_NOMEM,
		           "out of memory");
	}
	json_t *total = json_object_get(c, "total"), *k = json_object_get(c, kind);
	json_integer_set(total, json_integer_value(total) + n);
	if (k != NULL)
		json_integer_set(k, json_integer_value(k) + n);
	else
		HSM_ENSURE(json_object_set_new(c, kind, json_integer(n)) == 0, HSM_ERR_NOMEM,
		           "out of memory");
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

/*
 * Requests that are node events rather than changes (README, "Audit trail"):
 * the key ceremony, unseal and seal, a backup (and a copy of one made
 * late), a restore, a rekey (new master key and custodians' shares).  The
 * scheduler's key work and hsmctl's offline ceremonies appear under these
 * names only in a RequestRecordRecovered event (recovered_request).
 */
static bool is_node_request(const char *op)
{
	static const char *const ops[] = {"Init",           "Unseal",         "Seal",
	                                  "Backup",         "BackupCopy",     "Restore",
	                                  "Rekey",          "ScheduledKeyWork", "hsmctl init",
	                                  "hsmctl rekey",   "hsmctl restore", "hsmctl backup create"};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (strcmp(op, ops[i]) == 0)
			return true;
	return false;
}

/* The log opened after a run that did not shut down: a crash, kill -9 or power loss. */
static bool is_unclean_start(json_t *rec)
{
	json_t *v = json_object_get(json_object_get(rec, "extra"), "previous_shutdown");
	return strcmp(str_of(rec, "op"), "AuditLogOpened") == 0 && json_is_string(v) &&
	       strcmp(json_string_value(v), "unclean") == 0;
}

static bool is_auth_failure(const char *error)
{
	return strcmp(error, "InvalidSignatureException") == 0 ||
	       strcmp(error, "UnrecognizedClientException") == 0 ||
	       strcmp(error, "IncompleteSignatureException") == 0 ||
	       strcmp(error, "MissingAuthenticationTokenException") == 0;
}

/*
 * A RefusalsSummarized event: the failed authentications it counts
 * (extra.kinds, "InvalidSignatureException=120,Status=3") join those
 * recorded one by one, as "(summarized) from <source>"; its other refusals
 * (malformed or unserved HTTP requests, ...) join the refusals before
 * authentication the same way.  Answered Status calls are no refusal.
 */
static hsm_result add_summarized(report *r, json_t *rec)
{
	json_t *extra = json_object_get(rec, "extra");
	const char *kinds = str_of(extra, "kinds");
	char from[512];
	snprintf(from, sizeof(from), "(summarized) from %s", str_of(rec, "source"));
	while (*kinds != '\0') {
		size_t len = strcspn(kinds, ",");
		const char *eq = memchr(kinds, '=', len);
		if (eq != NULL) {
			char name[128];
			int64_t n = 0;
			snprintf(name, sizeof(name), "%.*s", (int)(eq - kinds), kinds);
			char digits[24];
			snprintf(digits, sizeof(digits), "%.*s", (int)(kinds + len - eq - 1), eq + 1);
			if (strcmp(name, "Status") != 0 &&
			    hsm_ok(hsm_parse_i64(digits, 0, INT64_MAX, &n)))
				HSM_GUARD(count_kind(is_auth_failure(name) ? r->auth : r->refused, from,
				                     name, (json_int_t)n));
		}
		kinds += len + (kinds[len] == ',');
	}
	return HSM_SUCCESS;
}

/*
 * Whom the principals table files a RefusalsSummarized event under: the
 * access key ids its refusals claimed (the store's own first, as the event
 * lists them; it does not say how many refusals named each), else nobody's
 * credentials.
 */
static void summarized_who(json_t *rec, char *who, size_t cap)
{
	json_t *extra = json_object_get(rec, "extra");
	const char *known = str_of(extra, "known_access_key_ids");
	const char *other = str_of(extra, "access_key_ids");
	if (*known == '\0' && *other == '\0')
		snprintf(who, cap, "(no credentials, summarized)");
	else
		snprintf(who, cap, "(not authenticated, summarized) %s%s%s", known,
		         *known != '\0' && *other != '\0' ? "," : "", other);
}

/*
 * A RefusalsSummarized event counts as the refusals it summarizes
 * (extra.kinds, "InvalidSignatureException=40,Status=3"), not as one: a
 * Status call answered is a success, every other kind a refusal (denied, as
 * the event itself says).  An event whose kinds say nothing counts once.
 */
static hsm_result count_summarized(json_t *counts, const char *who, json_t *rec)
{
	const char *kinds = str_of(json_object_get(rec, "extra"), "kinds");
	bool counted = false;
	while (*kinds != '\0') {
		size_t len = strcspn(kinds, ",");
		const char *eq = memchr(kinds, '=', len);
		char digits[24];
		int64_t n = 0;
		if (eq != NULL && (size_t)(kinds + len - eq - 1) < sizeof(digits)) {
			snprintf(digits, sizeof(digits), "%.*s", (int)(kinds + len - eq - 1), eq + 1);
			bool status = (size_t)(eq - kinds) == strlen("Status") &&
			              strncmp(kinds, "Status", strlen("Status")) == 0;
			if (hsm_ok(hsm_parse_i64(digits, 0, INT64_MAX, &n)) && n > 0) {
				HSM_GUARD(count_n(counts, who, status ? "success" : "denied", (json_int_t)n));
				counted = true;
			}
		}
		kinds += len + (kinds[len] == ',');
	}
	return counted ? HSM_SUCCESS : count(counts, who, str_of(rec, "outcome"));
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

/*
 * The user and access key a user or access-key change was about, where its
 * record names them: extra.target_user, extra.target_roles and
 * extra.target_access_key_id as hsmd writes them (user, roles and
 * access_key_id also read).  They become members user, roles (a list; the
 * record gives "a,b") and access_key_id of the change.
 */
static const char *const target_fields[][2] = {{"user", "target_user"},
                                               {"roles", "target_roles"},
                                               {"access_key_id", "target_access_key_id"}};

static json_t *target_field(json_t *extra, size_t i)
{
	json_t *v = json_object_get(extra, target_fields[i][1]);
	return v != NULL ? v : json_object_get(extra, target_fields[i][0]);
}

/* True for the extra members add_target shows as members of their own. */
static bool is_target_field(const char *name)
{
	for (size_t i = 0; i < sizeof(target_fields) / sizeof(target_fields[0]); i++)
		if (strcmp(name, target_fields[i][0]) == 0 || strcmp(name, target_fields[i][1]) == 0)
			return true;
	return false;
}

static int add_target(json_t *s, json_t *extra)
{
	json_t *user = target_field(extra, 0), *roles = target_field(extra, 1);
	json_t *akid = target_field(extra, 2);
	if (json_is_string(user) && json_object_set(s, "user", user) != 0)
		return -1;
	if (json_is_string(akid) && json_object_set(s, "access_key_id", akid) != 0)
		return -1;
	if (json_is_array(roles))
		return json_object_set(s, "roles", roles);
	if (!json_is_string(roles))
		return 0;
	json_t *list = json_array();
	if (list == NULL || json_object_set_new(s, "roles", list) != 0)
		return -1;
	const char *t = json_string_value(roles);
	while (*t != '\0') {
		size_t n = strcspn(t, ", ");
		if (n > 0 && json_array_append_new(list, json_stringn(t, n)) != 0)
			return -1;
		t += n;
		t += strspn(t, ", ");
	}
	return 0;
}

/* A change's summary, with the custodians who approved it when it ran under an approval. */
static json_t *change_of(report *r, json_t *rec)
{
	json_t *s = summary_of(rec);
	if (s != NULL && add_target(s, json_object_get(rec, "extra")) != 0) {
		json_decref(s);
		return NULL;
	}
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

/*
 * A RequestRecordRecovered event is written in place of a request's lost
 * record (README "Audit trail"): the change it made stands, so the report
 * counts it as that request, flagged "recovered": extra.request_op by
 * extra.request_principal (with its access key and source), at the time it
 * was recorded (extra.committed says when it was made).  *out is that request
 * as a new record, or NULL for any other record and for what authentication
 * committed (request_op Authenticate: a wrong signature counted, a lockout,
 * a count reset), whose row names the user an access key belongs to, not
 * necessarily who sent the request: that stays the node's event.
 */
static hsm_result recovered_request(json_t *rec, json_t **out)
{
	static const char *const moved[][2] = {{"op", "request_op"},
	                                       {"principal", "request_principal"},
	                                       {"access_key", "request_access_key"},
	                                       {"source", "request_source"}};
	*out = NULL;
	json_t *extra = json_object_get(rec, "extra");
	const char *op = str_of(extra, "request_op");
	if (strcmp(str_of(rec, "type"), "event") != 0 ||
	    strcmp(str_of(rec, "op"), HSM_OUTBOX_RECOVERED_EVENT) != 0 || *op == '\0' ||
	    strcmp(op, "Authenticate") == 0)
		return HSM_SUCCESS;
	json_t *req = json_deep_copy(rec), *rest = json_deep_copy(extra);
	bool ok = req != NULL && rest != NULL &&
	          json_object_set_new(req, "type", json_string("request")) == 0 &&
	          json_object_set_new(req, "flag", json_string("recovered")) == 0;
	for (size_t i = 0; ok && i < sizeof(moved) / sizeof(moved[0]); i++) {
		json_t *v = json_object_get(extra, moved[i][1]);
		ok = !json_is_string(v) || (json_object_set(req, moved[i][0], v) == 0 &&
		                            json_object_del(rest, moved[i][1]) == 0);
	}
	ok = ok && json_object_set(req, "extra", rest) == 0;
	json_decref(rest);
	if (!ok) {
		json_decref(req);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	*out = req;
	return HSM_SUCCESS;
}

static hsm_result add_one(report *r, const report_opts *o, json_t *rec);

static hsm_result add_record(report *r, const report_opts *o, json_t *rec)
{
	json_t *req = NULL;
	HSM_GUARD(recovered_request(rec, &req));
	if (req == NULL)
		return add_one(r, o, rec);
	hsm_result res = add_one(r, o, req);
	json_decref(req);
	return res;
}

static hsm_result add_one(report *r, const report_opts *o, json_t *rec)
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
	/* A ReEncrypt is the story of both its keys: the source is extra.source_key_id. */
	if (o->key != NULL && strcmp(str_of(rec, "key_id"), o->key) != 0 &&
	    strcmp(str_of(json_object_get(rec, "extra"), "source_key_id"), o->key) != 0)
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
	else if (strcmp(type, "event") == 0 && strcmp(op, "RefusalsSummarized") == 0)
		summarized_who(rec, who, sizeof(who));
	else if (strcmp(type, "event") == 0)
		snprintf(who, sizeof(who), "hsmd"); /* the node's own events */
	else
		snprintf(who, sizeof(who), "(no credentials)");
	if (strcmp(type, "event") == 0 && strcmp(op, "RefusalsSummarized") == 0)
		HSM_GUARD(count_summarized(r->principals, who, rec));
	else
		HSM_GUARD(count(r->principals, who, outcome));
	/*
	 * Refusals of requests nobody authenticated: failed authentications, and
	 * the others (malformed, oversized or unserved HTTP requests, a sealed
	 * node's answers, ...).
	 */
	bool auth_failure = strcmp(outcome, "denied") == 0 && is_auth_failure(error);
	if (strcmp(type, "request") == 0 && *error != '\0' &&
	    (auth_failure || *str_of(rec, "principal") == '\0')) {
		/* By address: a client's every connection has another port. */
		const char *source = str_of(rec, "source");
		size_t addr_len = strlen(source);
		const char *colon = strrchr(source, ':');
		if (colon != NULL && colon[1] != '\0' && strspn(colon + 1, "0123456789") == strlen(colon + 1))
			addr_len = (size_t)(colon - source);
		char from[512];
		snprintf(from, sizeof(from), "%s from %.*s",
		         *str_of(rec, "access_key") ? str_of(rec, "access_key") : "(no access key)",
		         (int)(addr_len > 0 ? addr_len : strlen("(unknown)")),
		         addr_len > 0 ? source : "(unknown)");
		HSM_GUARD(count_kind(auth_failure ? r->auth : r->refused, from, error, 1));
	}
	if (strcmp(type, "event") == 0 && strcmp(op, "RefusalsSummarized") == 0)
		HSM_GUARD(add_summarized(r, rec));
	bool unclean = is_unclean_start(rec);
	json_t *list = NULL;
	if (strcmp(type, "event") == 0 && (strcmp(op, "AuditLogOpened") != 0 || unclean))
		list = r->events;
	else if (strcmp(type, "request") == 0 && is_node_request(op))
		list = r->events; /* attempts too: a wrong share is news */
	else if (strcmp(type, "request") == 0 && strcmp(outcome, "success") == 0 && is_change(op))
		list = r->changes;
	if (list != NULL) {
		json_t *s = list == r->changes ? change_of(r, rec) : summary_of(rec);
		HSM_ENSURE(s != NULL && json_array_append_new(list, s) == 0, HSM_ERR_NOMEM,
		           "out of memory");
		const char *flag = unclean ? "unclean_shutdown"
		                   : strcmp(op, "AuditTrailBeginsAfterStore") == 0 ? "trail_after_store"
		                   : strcmp(op, "AuditForeignBytes") == 0          ? "foreign_bytes"
		                   : *str_of(rec, "flag") != '\0'                  ? str_of(rec, "flag")
		                                                                   : NULL;
		if (flag != NULL)
			HSM_ENSURE(json_object_set_new(s, "flag", json_string(flag)) == 0, HSM_ERR_NOMEM,
			           "out of memory");
	}
	return HSM_SUCCESS;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(hsm_path_base(*(const char *const *)a), hsm_path_base(*(const char *const *)b));
}

/*
 * Reads the files in the order the verifier does (by file name, = by first
 * seq) and adds their records.  A file and its copy (same name; the verifier
 * found them identical) count once.
 *
 * The files are read a second time (a trail may be too large to hold), so
 * what is counted is tied to what was verified: each line read must chain
 * to the one before it, and the last one counted (seq last_seq; later ones
 * were appended since) must hash to the head verify reported.  A file
 * changed between the two readings is refused, not counted.  A file that
 * begins with records its node wrote again (its live file, replaced by a copy
 * of itself while they waited for their fsync, put back: docs/audit.md,
 * "Files") holds records verify read once: they are passed over as it passed
 * them, each chained to the one before and the last the last record counted,
 * byte for byte.
 */
typedef struct chain_walk {
	uint8_t prev[32];
	bool have_prev, done;
	uint64_t seq; /* of the last record counted */
	bool again;   /* passing over records written again; the last of them: */
	uint8_t again_prev[32];
	uint64_t again_seq;
} chain_walk;

#define CHANGED_AFTER_VERIFY                                                                  \
	"%s changed after it was verified (a record no longer chains to the one before it): no " \
	"report is made"

/* *counted: the line is a record to count (not one written again). */
static hsm_result chain_line(chain_walk *w, const char *path, const char *line, size_t len,
                             bool starts_file, json_t *rec, const hsm_audit_verify_report *v,
                             bool *counted)
{
	uint8_t h[32], named[32];
	HSM_ENSURE(EVP_Digest(line, len, h, NULL, EVP_sha256(), NULL) == 1,
	           hsm_nomem_or(HSM_ERR_CRYPTO), "SHA-256 failed");
	const char *prev = json_string_value(json_object_get(rec, "prev"));
	json_t *seq = json_object_get(rec, "seq");
	uint64_t n = json_is_integer(seq) ? (uint64_t)json_integer_value(seq) : 0;
	bool named_ok = prev != NULL && hsm_ok(hsm_hex_decode_exact(named, sizeof(named), prev, 64,
	                                                              HSM_ERR_VALIDATION));
	HSM_ENSURE(!(w->again && starts_file), HSM_ERR_VALIDATION, CHANGED_AFTER_VERIFY, path);
	if (starts_file && w->have_prev && n != 0 && n <= w->seq) {
		w->again = true;
	} else if (w->again) {
		HSM_ENSURE(named_ok && n == w->again_seq + 1 &&
		               hsm_ct_equal(named, w->again_prev, sizeof(named)),
		           HSM_ERR_VALIDATION, CHANGED_AFTER_VERIFY, path);
	}
	*counted = !w->again;
	if (w->again) {
		memcpy(w->again_prev, h, sizeof(h));
		w->again_seq = n;
		if (n == w->seq) {
			HSM_ENSURE(hsm_ct_equal(h, w->prev, sizeof(h)), HSM_ERR_VALIDATION,
			           CHANGED_AFTER_VERIFY, path);
			w->again = false;
		}
		return HSM_SUCCESS;
	}
	bool linked = !w->have_prev || (named_ok && hsm_ct_equal(named, w->prev, sizeof(named)));
	HSM_ENSURE(linked, HSM_ERR_VALIDATION, CHANGED_AFTER_VERIFY, path);
	memcpy(w->prev, h, sizeof(h));
	w->have_prev = true;
	w->seq = n;
	if (n != 0 && n == v->last_seq) {
		HSM_ENSURE(hsm_ct_equal(h, v->last_hash, sizeof(h)), HSM_ERR_VALIDATION,
		           "%s changed after it was verified (its records no longer end at the head "
		           "verify read): no report is made",
		           path);
		w->done = true;
	}
	return HSM_SUCCESS;
}

static hsm_result read_files(char **paths, size_t n, report *r, const report_opts *o,
                             const hsm_audit_verify_report *v)
{
	chain_walk w = {.done = v->records == 0};
	qsort(paths, n, sizeof(paths[0]), by_name);
	for (size_t i = 0; i < n && !w.done; i++) {
		if (i > 0 && by_name(&paths[i - 1], &paths[i]) == 0)
			continue;
		FILE *f = fopen(paths[i], "r");
		HSM_ENSURE(f != NULL, HSM_ERR_IO, "cannot open %s: %s", paths[i], strerror(errno));
		char *line = NULL;
		size_t cap = 0;
		ssize_t len;
		hsm_result res = HSM_SUCCESS;
		bool starts_file = true, counted = false;
		while (hsm_ok(res) && !w.done && (len = getline(&line, &cap, f)) > 0) {
			if (line[len - 1] != '\n')
				continue; /* appended since verify read it: the next report counts it */
			if ((size_t)len > LINE_MAX_BYTES) {
				/* Verified, so counted: a report leaves nothing out it does not say. */
				res = HSM_FAIL(HSM_ERR_VALIDATION,
				               "%s: a record of %zd bytes, longer than hsmd writes (%u): "
				               "no report is made",
				               paths[i], len, LINE_MAX_BYTES);
				break;
			}
			json_error_t jerr;
			json_t *rec = json_loadb(line, (size_t)len, 0, &jerr);
			if (rec == NULL) {
				res = HSM_FAIL(HSM_ERR_VALIDATION, "%s: a record is not JSON", paths[i]);
				break;
			}
			res = chain_line(&w, paths[i], line, (size_t)len - 1, starts_file, rec, v, &counted);
			starts_file = false;
			if (hsm_ok(res) && counted)
				res = add_record(r, o, rec);
			json_decref(rec);
		}
		free(line);
		fclose(f);
		HSM_GUARD(res);
	}
	HSM_ENSURE(w.done, HSM_ERR_VALIDATION,
	           "the trail changed after it was verified (it no longer reaches seq %llu): no "
	           "report is made",
	           (unsigned long long)v->last_seq);
	return HSM_SUCCESS;
}

/*
 * Prints a string a record holds for a terminal: it may hold whatever a
 * client sent (an access key id claimed, a source address), and the JSON
 * escaping of the trail is undone by reading it, so a tab, a newline or a
 * terminal escape would shift columns, forge lines of the report or
 * redraw the screen.  Control characters (C0, DEL and C1) and the
 * backslash are printed escaped.  Returns the bytes printed.
 */
static int put_shown(const char *s)
{
	const unsigned char *u = (const unsigned char *)(s != NULL ? s : "");
	int n = 0;
	for (size_t i = 0; u[i] != '\0'; i++) {
		if (u[i] == '\\') {
			n += printf("\\\\");
		} else if (u[i] < 0x20 || u[i] == 0x7f) {
			n += printf("\\x%02x", u[i]);
		} else if (u[i] == 0xc2 && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f) {
			n += printf("\\u%04x", u[i + 1]); /* U+0080-U+009F: C1 controls */
			i++;
		} else {
			putchar(u[i]);
			n++;
		}
	}
	return n;
}

/* put_shown, then spaces up to width. */
static void put_padded(const char *s, int width)
{
	for (int n = put_shown(s); n < width; n++)
		putchar(' ');
}

static void print_counts(const char *title, json_t *counts)
{
	printf("\n%-56s %8s %8s %8s %8s\n", title, "total", "success", "error", "denied");
	const char *name;
	json_t *c;
	json_object_foreach(counts, name, c)
	{
		printf("  ");
		put_padded(name, 54);
		printf(" %8lld %8lld %8lld %8lld\n",
		       (long long)json_integer_value(json_object_get(c, "total")),
		       (long long)json_integer_value(json_object_get(c, "success")),
		       (long long)json_integer_value(json_object_get(c, "error")),
		       (long long)json_integer_value(json_object_get(c, "denied")));
	}
}

/* " label" and the string shown. */
/* One row a source: its total, then each error it got and how often. */
static void print_sources(const char *title, json_t *sources)
{
	printf("\n%s (%zu sources)\n", title, json_object_size(sources));
	const char *name;
	json_t *c;
	json_object_foreach(sources, name, c)
	{
		printf("  ");
		put_padded(name, 54);
		printf(" %8lld ", (long long)json_integer_value(json_object_get(c, "total")));
		const char *kind, *sep = " ";
		json_t *k;
		json_object_foreach(c, kind, k)
		{
			if (strcmp(kind, "total") == 0)
				continue;
			printf("%s", sep);
			put_shown(kind);
			printf(" %lld", (long long)json_integer_value(k));
			sep = ", ";
		}
		printf("\n");
	}
}

static void put_field(const char *label, const char *s)
{
	fputs(label, stdout);
	put_shown(s);
}

static void print_lines(const char *title, json_t *list)
{
	size_t i, flagged = 0;
	json_t *s;
	json_array_foreach(list, i, s)
		flagged += *str_of(s, "flag") != '\0';
	if (flagged > 0)
		printf("\n%s (%zu, %zu flagged)\n", title, json_array_size(list), flagged);
	else
		printf("\n%s (%zu)\n", title, json_array_size(list));
	json_array_foreach(list, i, s)
	{
		put_field("  ", str_of(s, "time"));
		put_field(" ", str_of(s, "node"));
		put_field(" ", str_of(s, "op"));
		if (*str_of(s, "key_id") != '\0')
			put_field(" key=", str_of(s, "key_id"));
		json_t *v = json_object_get(s, "key_version");
		if (json_is_integer(v) && json_integer_value(v) > 0)
			printf(" v%lld", (long long)json_integer_value(v));
		if (*str_of(s, "principal") != '\0')
			put_field(" by=", str_of(s, "principal"));
		if (strcmp(str_of(s, "outcome"), "success") != 0) {
			put_field(" outcome=", str_of(s, "outcome"));
			put_field(" ", str_of(s, "error"));
		}
		if (*str_of(s, "user") != '\0')
			put_field(" user=", str_of(s, "user"));
		size_t j;
		json_t *x;
		json_array_foreach(json_object_get(s, "roles"), j, x)
			put_field(j == 0 ? " roles=" : ",", json_string_value(x));
		if (*str_of(s, "access_key_id") != '\0')
			put_field(" access_key_id=", str_of(s, "access_key_id"));
		const char *k;
		json_object_foreach(json_object_get(s, "extra"), k, x)
		{
			bool shown = is_target_field(k) && (json_object_get(s, "user") != NULL ||
			                                    json_object_get(s, "roles") != NULL ||
			                                    json_object_get(s, "access_key_id") != NULL);
			if (json_is_string(x) && !shown) { /* a change's target is printed above */
				put_field(" ", k);
				put_field("=", json_string_value(x));
			}
		}
		json_array_foreach(json_object_get(s, "approved_by"), j, x)
			put_field(j == 0 ? " approved_by=" : ",", json_string_value(x));
		if (strcmp(str_of(s, "flag"), "unclean_shutdown") == 0)
			printf("  ** UNCLEAN SHUTDOWN before this start (crash, kill -9 or power loss)");
		json_t *ex = json_object_get(s, "extra");
		const char *uf = json_string_value(json_object_get(ex, "unsigned_first_seq"));
		const char *ul = json_string_value(json_object_get(ex, "unsigned_last_seq"));
		if (uf != NULL && ul != NULL)
			printf("  ** records %s to %s before it were never signed by the run that wrote "
			       "them: later signatures cover them only as this start found them",
			       uf, ul);
		if (strcmp(str_of(s, "flag"), "trail_after_store") == 0)
			printf("  ** THE TRAIL BEGINS AFTER THE STORE: a new audit_dir, or earlier "
			       "records taken away");
		if (strcmp(str_of(s, "flag"), "foreign_bytes") == 0)
			printf("  ** SOMETHING ELSE WROTE INTO THE LIVE FILE: hsmd cut those bytes off "
			       "and kept them in the file saved_to names (in the audit directory)");
		if (strcmp(str_of(s, "flag"), "recovered") == 0)
			printf("  ** RECOVERED: its own record was lost (a stop or an audit outage); "
			       "recorded in its stead");
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
	/* Only a retention checkpoint says so (verify holds any other start past seq 1 as deleted). */
	if (v->first_seq > 1 && v->retention_seq != 0 && v->retention_kept_from >= v->first_seq)
		printf("retention: records before seq %llu were deleted by retention (stated by the "
		       "retention checkpoint at seq %llu)\n",
		       (unsigned long long)v->retention_kept_from, (unsigned long long)v->retention_seq);
	size_t shown = sizeof(v->unsigned_at_write) / sizeof(v->unsigned_at_write[0]);
	for (size_t i = 0; i < v->n_unsigned_at_write && i < shown; i++)
		printf("unsigned at write: records %llu to %llu were never signed by the run that wrote "
		       "them (it crashed or stayed sealed); the run opened at seq %llu signs over them "
		       "as it found them\n",
		       (unsigned long long)v->unsigned_at_write[i].first,
		       (unsigned long long)v->unsigned_at_write[i].last,
		       (unsigned long long)v->unsigned_at_write[i].opened_seq);
	if (v->n_unsigned_at_write > shown)
		printf("unsigned at write: %zu more runs like these\n", v->n_unsigned_at_write - shown);
	hsmctl_audit_time_warning(v);
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
		put_field(" ", name);
		printf(" (%lld)", (long long)json_integer_value(c));
	}
	printf("\n");
	print_counts("operations", r->ops);
	print_counts("principals", r->principals);
	print_sources("failed authentications", r->auth);
	print_sources("refusals before authentication", r->refused);
	print_lines("changes", r->changes);
	print_lines("node events", r->events);
}

static hsm_result emit_json(const report *r, const hsm_audit_verify_report *v,
                            const report_opts *o)
{
	json_t *out = json_pack(
	    "{s:{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:b},s:{s:s?,s:s?,s:s?,s:s?},s:I,s:O,s:O,s:O,s:O,s:O,"
	    "s:O,s:O}",
	    "verified", "valid", 1, "files", (json_int_t)v->files, "records", (json_int_t)v->records,
	    "first_seq", (json_int_t)v->first_seq, "last_seq", (json_int_t)v->last_seq, "kept_from",
	    (json_int_t)v->kept_from,
	    "checkpoints_verified", (json_int_t)v->checkpoints_verified, "signatures_checked",
	    o->verify.pubkey_pem != NULL, "period", "first", r->records ? r->first : NULL, "last",
	    r->records ? r->last : NULL, "since", o->since[0] ? o->since : NULL, "until",
	    o->until[0] ? o->until : NULL, "records", (json_int_t)r->records, "nodes", r->nodes,
	    "operations", r->ops, "principals", r->principals, "failed_authentications", r->auth,
	    "refusals_before_authentication", r->refused, "changes", r->changes, "events", r->events);
	HSM_ENSURE(out != NULL, HSM_ERR_NOMEM, "out of memory");
	json_t *uw = json_array();
	size_t shown = sizeof(v->unsigned_at_write) / sizeof(v->unsigned_at_write[0]);
	for (size_t i = 0; uw != NULL && i < v->n_unsigned_at_write && i < shown; i++)
		json_array_append_new(uw, json_pack("{s:I,s:I,s:I}", "first_seq",
		                                    (json_int_t)v->unsigned_at_write[i].first,
		                                    "last_seq", (json_int_t)v->unsigned_at_write[i].last,
		                                    "opened_seq",
		                                    (json_int_t)v->unsigned_at_write[i].opened_seq));
	if (uw == NULL || json_object_set_new(json_object_get(out, "verified"), "unsigned_at_write",
	                                      uw) != 0) {
		json_decref(out);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	if (o->key != NULL)
		json_object_set_new(out, "key_id", json_string(o->key));
	/* A warning, as verify prints it: the records' times go back (hsm_audit_verify_report). */
	if (v->time_backs != 0 &&
	    json_object_set_new(json_object_get(out, "verified"), "time_steps_back",
	                        json_pack("{s:I,s:I,s:s,s:I,s:s}", "count", (json_int_t)v->time_backs,
	                                  "seq", (json_int_t)v->time_back_seq, "time",
	                                  v->time_back_to, "after_seq",
	                                  (json_int_t)v->time_back_from_seq, "after_time",
	                                  v->time_back_from)) != 0) {
		json_decref(out);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
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
	            .refused = json_object(), .changes = json_array(), .events = json_array(), .nodes = json_object(),
	            .approvals = json_object()};
	char **files = NULL;
	size_t n = 0;
	if (hsm_failed(hsm_audit_expand_paths((const char *const *)argv + first,
	                                      (size_t)(argc - first), &files, &n)) ||
	    hsm_failed(hsm_audit_verify_files((const char *const *)files, n, &o.verify, &v))) {
		rc = hsmctl_fail("audit report");
	} else if (v.problem == HSM_AUDIT_SEVERAL_TRAILS) {
		rc = hsmctl_usage("audit report", "%s", v.detail);
	} else if (!v.valid) {
		fprintf(stderr,
		        "hsmctl: audit report: the trail does not verify, so no report is made from it: "
		        "%s line %llu (seq %llu): %s\n",
		        v.file, (unsigned long long)v.line, (unsigned long long)v.seq, v.detail);
		rc = 1;
	} else if (hsm_failed(read_files(files, n, &r, &o, &v)) ||
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
	json_decref(r.refused);
	json_decref(r.changes);
	json_decref(r.events);
	json_decref(r.nodes);
	json_decref(r.approvals);
	hsm_audit_free_paths(files, n);
	hsm_buf_free(&pem);
	return rc;
}
