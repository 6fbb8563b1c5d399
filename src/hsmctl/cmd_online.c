/*
 * cmd_online.c - hsmctl commands against a running hsmd (--endpoint URL).
 *
 *   hsmctl --endpoint URL unseal SHARE_FILE...      one custodian share per call
 *   hsmctl --endpoint URL status | seal
 *   hsmctl --endpoint URL user create NAME --roles crypto-officer,crypto-user
 *   hsmctl --endpoint URL user list | disable NAME | enable NAME | unlock NAME
 *   hsmctl --endpoint URL access-key create USER | revoke AKID | list [USER]
 *   hsmctl --endpoint URL audit hash VALUE | audit pubkey
 *   hsmctl --endpoint URL approval list [--all] | show|approve|deny|cancel ID
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "client/client.h"
#include "hsmctl/hsmctl.h"

/* Sends body (consumed) to target once: no waiting for custodians. */
static hsm_result send_once(const char *target, bool sign, json_t *body, json_t **out)
{
	hsm_result r = hsm_client_call_json(&hsmctl_globals.client, target, body, sign, out);
	json_decref(body);
	return r;
}

/*
 * Calls target with body (consumed).  A signed call waits for custodians where
 * the node gates target (hsmctl_call_approved): which operations wait is the
 * node's setting (approval_operations), so every signed call may have to.
 */
static hsm_result call(const char *target, bool sign, json_t *body, json_t **out)
{
	if (!sign)
		return send_once(target, false, body, out);
	hsm_result r = hsmctl_call_approved(target, body, out);
	json_decref(body);
	return r;
}

/* ---- waiting for custodians ----------------------------------------------------------- */

#define APPROVAL_ID_LEN 32
#define APPROVAL_POLL_SECONDS 2

/* The approval request an ApprovalRequiredException names. */
static hsm_result approval_named(const char *message, char id[APPROVAL_ID_LEN + 1])
{
	static const char tag[] = "approval request ";
	const char *p = strstr(message, tag);
	if (p != NULL)
		p += sizeof(tag) - 1;
	HSM_ENSURE(p != NULL && strspn(p, "0123456789abcdef") >= APPROVAL_ID_LEN,
	           HSM_ERR_APPROVAL_REQUIRED, "%s", message);
	memcpy(id, p, APPROVAL_ID_LEN);
	id[APPROVAL_ID_LEN] = '\0';
	return HSM_SUCCESS;
}

/* Set by SIGINT or SIGTERM while hsmctl waits for custodians. */
static volatile sig_atomic_t stop_waiting;

static void on_stop_signal(int sig)
{
	(void)sig;
	stop_waiting = 1;
}

/*
 * Withdraws approval request id, which this run will not send: custodians are
 * not asked about a request nobody makes (its requester may cancel it).
 */
static void withdraw(const char *id)
{
	json_t *out = NULL;
	hsm_result r =
	    send_once("HsmdAdmin.CancelRequest", true, json_pack("{s:s}", "ApprovalId", id), &out);
	json_decref(out);
	if (hsm_ok(r))
		fprintf(stderr, "approval request %s withdrawn\n", id);
	else
		fprintf(stderr, "approval request %s could not be withdrawn: %s\n", id,
		        hsm_last_message());
}

/*
 * Waits until custodians approved approval request id; fails once it cannot be,
 * or when the wait ends first (--approval-wait, SIGINT, SIGTERM), withdrawing it.
 */
static hsm_result await_approval(const char *op, const char *id)
{
	struct sigaction act = {.sa_handler = on_stop_signal}, old_int, old_term;
	sigemptyset(&act.sa_mask);
	sigaction(SIGINT, &act, &old_int); /* no SA_RESTART: sleep returns at once */
	sigaction(SIGTERM, &act, &old_term);
	long limit = hsmctl_globals.approval_wait; /* seconds; -1: until decided */
	/* Monotonic milliseconds: whole seconds of the wall clock would end the wait up to a
	 * second early when the second turns during a poll, or late after a clock step. */
	uint64_t deadline = hsm_mono_ns() / 1000000U + (uint64_t)(limit > 0 ? limit : 0) * 1000U;
	hsm_result r = HSM_SUCCESS;
	for (;;) {
		json_t *a = NULL;
		r = send_once("HsmdAdmin.GetApproval", true, json_pack("{s:s}", "ApprovalId", id), &a);
		if (hsm_failed(r)) {
			if (stop_waiting) /* the signal cut the read short */
				withdraw(id);
			break;
		}
		const char *state = json_string_value(json_object_get(a, "State"));
		bool pending = state != NULL && strcmp(state, "Pending") == 0;
		bool approved = pending && json_integer_value(json_object_get(a, "Approvals")) >=
		                               json_integer_value(json_object_get(a, "Required"));
		char was[16];
		snprintf(was, sizeof(was), "%s", state != NULL ? state : "unknown");
		json_decref(a);
		if (approved)
			break;
		if (!pending) {
			r = HSM_FAIL(HSM_ERR_APPROVAL_REQUIRED, "approval request %s is %s: %s was not made",
			             id, was, op);
			break;
		}
		uint64_t now = hsm_mono_ns() / 1000000U;
		if (stop_waiting || (limit >= 0 && now >= deadline)) {
			withdraw(id);
			r = HSM_FAIL(HSM_ERR_APPROVAL_REQUIRED,
			             "approval request %s not approved %s: %s was not made", id,
			             stop_waiting ? "before the wait was stopped" : "within --approval-wait",
			             op);
			break;
		}
		uint64_t left = limit >= 0 ? deadline - now : (uint64_t)APPROVAL_POLL_SECONDS * 1000U;
		if (left > (uint64_t)APPROVAL_POLL_SECONDS * 1000U)
			left = (uint64_t)APPROVAL_POLL_SECONDS * 1000U;
		struct timespec nap = {(time_t)(left / 1000U), (long)(left % 1000U) * 1000000L};
		nanosleep(&nap, NULL); /* a signal cuts it short: stop_waiting is then set */
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return r;
}

hsm_result hsmctl_call_approved(const char *target, const json_t *body, json_t **out)
{
	hsm_client *c = &hsmctl_globals.client;
	hsm_result r = hsm_client_call_json(c, target, body, true, out);
	if (r.err != HSM_ERR_APPROVAL_REQUIRED)
		return r;
	const char *dot = strchr(target, '.');
	const char *op = dot != NULL ? dot + 1 : target;
	char id[APPROVAL_ID_LEN + 1], message[512];
	snprintf(message, sizeof(message), "%s", hsm_last_message());
	HSM_GUARD(approval_named(message, id));
	fprintf(stderr,
	        "%s waits for custodians' approval: approval request %s (hsmctl approval approve "
	        "%s). Waiting; the same request goes again once they have approved it (Ctrl-C "
	        "stops waiting and withdraws it).\n",
	        op, id, id);
	HSM_GUARD(await_approval(op, id));
	return hsm_client_call_json(c, target, body, true, out);
}

static int simple(const char *ctx, const char *target, bool sign, json_t *body)
{
	json_t *out = NULL;
	if (hsm_failed(call(target, sign, body, &out)))
		return hsmctl_fail(ctx);
	hsmctl_print_fields(out);
	json_decref(out);
	return 0;
}

/*
 * 0 when --endpoint names one node; else the usage error.  Unsealing and
 * sealing act on the node that answers, and a list would hand a share (or
 * the seal) to whichever of its nodes answered first, unnamed.
 */
static int one_node(const char *cmd)
{
	const char *list = hsmctl_globals.client.endpoints;
	if (list == NULL || strchr(list, ',') == NULL)
		return 0;
	return hsmctl_usage(cmd, "%s acts on one node: give --endpoint that node's address alone, "
	                         "not a list",
	                    cmd);
}

static int unseal_online(int argc, char **argv)
{
	if (argc < 2)
		return hsmctl_usage("unseal", "give a share file");
	int refused = hsmctl_require_private("unseal", "a custodian share");
	if (refused == 0)
		refused = one_node("unseal");
	if (refused != 0)
		return refused;
	for (int i = 1; i < argc; i++) {
		hsm_buf text;
		hsm_buf_init_secure(&text);
		hsm_result r = hsmctl_read_share(argv[i], &text);
		if (hsm_ok(r))
			r = hsm_buf_terminate(&text);
		json_t *body = json_object(), *out = NULL;
		if (hsm_ok(r)) {
			json_object_set_new(body, "Share", json_stringn((const char *)text.data, text.len));
			r = call("HsmdAdmin.Unseal", false, body, &out);
		} else {
			json_decref(body);
		}
		hsm_buf_free(&text);
		if (hsm_failed(r))
			return hsmctl_fail(argv[i]);
		bool sealed = json_is_true(json_object_get(out, "Sealed"));
		printf("%s: accepted; %lld of %lld shares%s\n", argv[i],
		       (long long)json_integer_value(json_object_get(out, "Progress")),
		       (long long)json_integer_value(json_object_get(out, "Threshold")),
		       sealed ? "" : "; unsealed");
		json_decref(out);
	}
	return 0;
}

/*
 * 0 when argv[first..argc) are exactly the n operands a command takes and
 * none is an option; else the usage error (synopsis: what it takes).  A
 * command given more than it takes is refused, not run: "seal now" is no
 * seal with a confirmation, "user disable a b" disables no two users.
 */
static int exact_operands(const char *cmd, int argc, char **argv, int first, int n,
                          const char *synopsis)
{
	for (int i = first; i < argc; i++)
		if (strncmp(argv[i], "--", 2) == 0)
			return hsmctl_usage(cmd, "unknown option %s (%s)", argv[i], synopsis);
	if (argc - first > n)
		return hsmctl_usage(cmd, "unexpected argument '%s' (%s)", argv[first + n], synopsis);
	if (argc - first < n)
		return hsmctl_usage(cmd, "%s", synopsis);
	return 0;
}

int hsmctl_cmd_online(int argc, char **argv)
{
	const char *cmd = argv[0];
	if (strcmp(cmd, "unseal") == 0)
		return unseal_online(argc, argv);
	int rc = exact_operands(cmd, argc, argv, 1, 0, "it takes no arguments");
	if (rc != 0)
		return rc;
	if (strcmp(cmd, "status") == 0)
		return simple("status", "HsmdAdmin.Status", false, json_object());
	if (strcmp(cmd, "seal") == 0) {
		int one = one_node("seal");
		return one != 0 ? one : simple("seal", "HsmdAdmin.Seal", true, json_object());
	}
	return hsmctl_usage(cmd, "not available with --endpoint");
}

static json_t *roles_array(const char *list)
{
	json_t *a = json_array();
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", list);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		json_array_append_new(a, json_string(t));
	return a;
}

static int list_of(const char *target, json_t *body, const char *member)
{
	json_t *out = NULL;
	if (hsm_failed(call(target, true, body, &out)))
		return hsmctl_fail(target);
	size_t i;
	json_t *item;
	json_array_foreach(json_object_get(out, member), i, item)
	{
		hsmctl_print_fields(item);
		printf("\n");
	}
	json_decref(out);
	return 0;
}

/* user create NAME --roles R[,R]: the option before or after the name, "--roles=R" too. */
static int user_create(int argc, char **argv)
{
	static const char synopsis[] =
	    "create NAME --roles crypto-officer,crypto-user,auditor,custodian";
	const char *name = NULL, *roles = NULL;
	for (int i = 2; i < argc; i++) {
		bool given = strcmp(argv[i], "--roles") == 0 || strncmp(argv[i], "--roles=", 8) == 0;
		if (given && roles != NULL)
			return hsmctl_usage("user", "--roles is given twice: give it once");
		if (strcmp(argv[i], "--roles") == 0 && i + 1 < argc)
			roles = argv[++i];
		else if (strncmp(argv[i], "--roles=", 8) == 0)
			roles = argv[i] + 8;
		else if (strncmp(argv[i], "--", 2) == 0)
			return hsmctl_usage("user", "unexpected option %s (%s)", argv[i], synopsis);
		else if (name == NULL)
			name = argv[i];
		else
			return hsmctl_usage("user", "unexpected argument '%s' (%s)", argv[i], synopsis);
	}
	if (name == NULL || roles == NULL)
		return hsmctl_usage("user", "%s", synopsis);
	json_t *body = json_pack("{s:s}", "UserName", name);
	if (body != NULL)
		json_object_set_new(body, "Roles", roles_array(roles));
	return simple("user create", "HsmdAdmin.CreateUser", true, body);
}

int hsmctl_cmd_user(int argc, char **argv)
{
	if (!hsmctl_online())
		return hsmctl_cmd_user_local(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "list") == 0) {
		int rc = exact_operands("user list", argc, argv, 2, 0, "user list takes no arguments");
		return rc != 0 ? rc : list_of("HsmdAdmin.ListUsers", json_object(), "Users");
	}
	if (argc >= 2 && strcmp(argv[1], "create") == 0)
		return user_create(argc, argv);
	int rc = exact_operands("user", argc, argv, 2, 1,
	                        "create NAME --roles R,R | list | disable|enable|unlock NAME");
	if (rc != 0)
		return rc;
	json_t *body = json_pack("{s:s}", "UserName", argv[2]);
	const char *target = strcmp(argv[1], "disable") == 0  ? "HsmdAdmin.DisableUser"
	                     : strcmp(argv[1], "enable") == 0 ? "HsmdAdmin.EnableUser"
	                     : strcmp(argv[1], "unlock") == 0 ? "HsmdAdmin.UnlockUser"
	                                                      : NULL;
	if (target == NULL) {
		json_decref(body);
		return hsmctl_usage("user", "unknown subcommand '%s'", argv[1]);
	}
	return simple(argv[1], target, true, body);
}

/* The answer holds the one copy of the new secret: one that is not written out is lost. */
static int create_access_key(const char *user)
{
	json_t *out = NULL;
	if (hsm_failed(call("HsmdAdmin.CreateAccessKey", true, json_pack("{s:s}", "UserName", user),
	                    &out)))
		return hsmctl_fail("access-key create");
	hsmctl_print_fields(out);
	int err = 0;
	int rc = 0;
	if (!hsmctl_stdout_written(&err)) {
		const char *akid = json_string_value(json_object_get(out, "AccessKeyId"));
		akid = akid != NULL ? akid : "(not in the answer)";
		fprintf(stderr, "hsmctl: access-key create: " HSMCTL_SECRET_LOST "\n", strerror(err),
		        akid, user, akid);
		rc = 1;
	}
	json_decref(out);
	return rc;
}

int hsmctl_cmd_access_key(int argc, char **argv)
{
	if (!hsmctl_online())
		return hsmctl_cmd_access_key_local(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "list") == 0) {
		int rc = exact_operands("access-key list", argc, argv, 2, argc > 3 ? 1 : argc - 2,
		                        "access-key list [USER]");
		if (rc != 0)
			return rc;
		json_t *body = argc >= 3 ? json_pack("{s:s}", "UserName", argv[2]) : json_object();
		return list_of("HsmdAdmin.ListAccessKeys", body, "AccessKeys");
	}
	int rc = exact_operands("access-key", argc, argv, 2, 1,
	                        "create USER | revoke AKID | list [USER]");
	if (rc != 0)
		return rc;
	if (strcmp(argv[1], "create") == 0) {
		/* The answer holds the new key's secret. */
		int refused = hsmctl_require_private("access-key create", "the new secret access key");
		if (refused != 0)
			return refused;
		return create_access_key(argv[2]);
	}
	if (strcmp(argv[1], "revoke") == 0)
		return simple("access-key revoke", "HsmdAdmin.RevokeAccessKey", true,
		              json_pack("{s:s}", "AccessKeyId", argv[2]));
	return hsmctl_usage("access-key", "unknown subcommand '%s'", argv[1]);
}

/*
 * audit hash's VALUE, or for "-" standard input less one final line end: a value (an
 * encryption context's, which may name a person) given as an argument is one any local
 * user reads in /proc while hsmctl runs.
 */
static hsm_result read_hash_value(const char *arg, hsm_buf *out)
{
	if (strcmp(arg, "-") != 0) {
		HSM_ENSURE(hsm_utf8_valid((const uint8_t *)arg, strlen(arg)), HSM_ERR_VALIDATION,
		           "the value is not UTF-8 text");
		return hsm_buf_set(out, arg, strlen(arg));
	}
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
		HSM_ENSURE(out->len + n <= 8192 + 2, HSM_ERR_VALIDATION,
		           "the value is longer than the 8192 bytes a record's value may be");
		HSM_GUARD(hsm_buf_put(out, chunk, n));
	}
	HSM_ENSURE(!ferror(stdin), HSM_ERR_IO, "cannot read standard input");
	if (out->len > 0 && out->data[out->len - 1] == '\n') {
		out->len--;
		if (out->len > 0 && out->data[out->len - 1] == '\r')
			out->len--;
	}
	HSM_ENSURE(out->len == 0 || memchr(out->data, '\0', out->len) == NULL, HSM_ERR_VALIDATION,
	           "the value holds a NUL byte");
	HSM_ENSURE(hsm_utf8_valid(out->data, out->len), HSM_ERR_VALIDATION,
	           "the value is not UTF-8 text");
	return HSM_SUCCESS;
}

int hsmctl_cmd_audit_online(int argc, char **argv)
{
	if (!hsmctl_online())
		return hsmctl_usage("audit", "hash and pubkey need --endpoint (a running hsmd)");
	if (strcmp(argv[0], "pubkey") == 0) {
		int rc = exact_operands("audit pubkey", argc, argv, 1, 0, "it takes no arguments");
		if (rc != 0)
			return rc;
		json_t *out = NULL;
		if (hsm_failed(call("HsmdAdmin.AuditPublicKey", true, json_object(), &out)))
			return hsmctl_fail("audit pubkey");
		const char *pem = json_string_value(json_object_get(out, "PublicKey"));
		if (pem != NULL)
			fputs(pem, stdout);
		json_decref(out);
		return pem != NULL ? 0 : hsmctl_fail_msg("audit pubkey", "the answer has no PublicKey");
	}
	if (argc != 2)
		return hsmctl_usage("audit hash", "give exactly one VALUE (- reads it from standard input)");
	hsm_buf value = {0};
	if (hsm_failed(read_hash_value(argv[1], &value))) {
		hsm_buf_free(&value);
		return hsmctl_fail("audit hash");
	}
	json_t *out = NULL;
	hsm_result r = call("HsmdAdmin.AuditHash", true,
	                    json_pack("{s:s%}", "Value",
	                              value.len > 0 ? (const char *)value.data : "", value.len),
	                    &out);
	hsm_buf_free(&value);
	if (hsm_failed(r))
		return hsmctl_fail("audit hash");
	const char *hash = json_string_value(json_object_get(out, "Hash"));
	if (hash != NULL)
		printf("%s\n", hash);
	json_decref(out);
	return hash != NULL ? 0 : hsmctl_fail_msg("audit hash", "the answer has no Hash");
}

/*
 * A request's fields, then its parameters as the requester sent them.  Its
 * dates (epoch seconds in the API) in ISO 8601 UTC, as backup list shows
 * them: a custodian reads when a request expires without converting it.
 */
static void print_approval(json_t *a)
{
	json_t *copy = json_deep_copy(a);
	const char *text = json_string_value(json_object_get(a, "Request"));
	json_object_del(copy, "Request");
	static const char *const dates[] = {"CreationDate", "ExpirationDate", "ClosedDate"};
	for (size_t i = 0; copy != NULL && i < sizeof(dates) / sizeof(dates[0]); i++) {
		json_t *v = json_object_get(copy, dates[i]);
		if (!json_is_number(v))
			continue;
		char when[21];
		hsmctl_format_json_time(v, when);
		json_object_set_new(copy, dates[i], json_string(when));
	}
	hsmctl_print_fields(copy);
	json_decref(copy);
	json_t *req = text != NULL ? json_loads(text, 0, NULL) : NULL;
	char *pretty = req != NULL ? json_dumps(req, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	printf("Request:\n%s\n", pretty != NULL ? pretty : (text != NULL ? text : ""));
	free(pretty);
	json_decref(req);
}

/*
 * Every approval request the node lists (the open ones; all with --all),
 * newest first, into all: ListApprovals page by page, each going on from
 * the marker of the one before, so none is missed however many there are.
 * *quorum: the node's approval_quorum.
 */
static hsm_result list_approvals(bool include_closed, json_t *all, json_t **quorum)
{
	char marker[1024] = ""; /* opaque: as long as hsmd takes one (server/marker.h) */
	for (;;) {
		json_t *body = json_pack("{s:b,s:i}", "IncludeClosed", include_closed, "Limit", 1000);
		json_t *out = NULL;
		if (marker[0] != '\0')
			json_object_set_new(body, "Marker", json_string(marker));
		HSM_GUARD(call("HsmdAdmin.ListApprovals", true, body, &out));
		json_decref(*quorum);
		*quorum = json_incref(json_object_get(out, "Quorum"));
		json_array_extend(all, json_object_get(out, "Approvals"));
		const char *next = json_string_value(json_object_get(out, "NextMarker"));
		bool more = json_is_true(json_object_get(out, "Truncated")) && next != NULL;
		hsm_result r = HSM_SUCCESS;
		/* A marker that would not move the walk on (hsmd never sends one) ends it. */
		if (more && (strlen(next) >= sizeof(marker) || strcmp(next, marker) == 0))
			r = HSM_FAIL(HSM_ERR_INTERNAL, "ListApprovals answered a NextMarker that does not "
			                               "go on from the page before");
		else if (more)
			memcpy(marker, next, strlen(next) + 1);
		json_decref(out);
		if (hsm_failed(r) || !more)
			return r;
	}
}

int hsmctl_cmd_approval(int argc, char **argv)
{
	if (!hsmctl_online())
		return hsmctl_usage("approval", "needs --endpoint (a running hsmd)");
	if (argc >= 2 && strcmp(argv[1], "list") == 0) {
		bool all = false, as_json = false;
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--all") == 0 && !all)
				all = true;
			else if (strcmp(argv[i], "--json") == 0 && !as_json)
				as_json = true;
			else
				return hsmctl_usage("approval", "list [--all] [--json]");
		}
		json_t *listed = json_array(), *quorum = NULL, *item;
		if (hsm_failed(list_approvals(all, listed, &quorum))) {
			json_decref(listed);
			json_decref(quorum);
			return hsmctl_fail("approval list");
		}
		if (as_json) {
			/* ListApprovals' answer, every page in one. */
			json_t *doc = json_pack("{s:O*,s:O}", "Quorum", quorum, "Approvals", listed);
			char *text = doc != NULL ? json_dumps(doc, JSON_INDENT(2)) : NULL;
			if (text != NULL)
				printf("%s\n", text);
			free(text);
			json_decref(doc);
		} else {
			size_t i;
			json_array_foreach(listed, i, item)
			{
				print_approval(item);
				printf("\n");
			}
		}
		json_decref(listed);
		json_decref(quorum);
		return 0;
	}
	static const char *const subs[][2] = {{"show", "HsmdAdmin.GetApproval"},
	                                      {"approve", "HsmdAdmin.ApproveRequest"},
	                                      {"deny", "HsmdAdmin.DenyRequest"},
	                                      {"cancel", "HsmdAdmin.CancelRequest"}};
	for (size_t i = 0; argc == 3 && i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (strcmp(argv[1], subs[i][0]) != 0)
			continue;
		json_t *out = NULL;
		if (hsm_failed(call(subs[i][1], true, json_pack("{s:s}", "ApprovalId", argv[2]), &out)))
			return hsmctl_fail(subs[i][0]);
		print_approval(out);
		json_decref(out);
		return 0;
	}
	return hsmctl_usage("approval", "list [--all] [--json] | show|approve|deny|cancel ID");
}
