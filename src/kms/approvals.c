/*
 * approvals.c - quorum approvals of sensitive requests (DESIGN.md "Quorum").
 *
 * A request is named by its fingerprint: SHA-256 over a version label, the
 * operation, the requesting user and the request's canonical text.  Matching
 * the identical retried request, instead of handing out a token to send
 * along, is what lets unmodified AWS clients (aws-cli, boto3) live with
 * approvals: they send the same call again once custodians have approved.
 *
 * What the store keeps of a request is what custodians read: its canonical
 * text with every member that holds bytes described, not kept (see
 * blob_members).  The fingerprint still covers the whole text, so the retry
 * that uses an approval carries the very bytes the custodians were shown
 * the size and digest of.
 *
 * The store keeps the rules that must hold across nodes and threads (one
 * open request per fingerprint, each custodian once, one use); this file
 * keeps who may do what.  Approvals are re-checked when used: an approver
 * who has since been disabled or lost the custodian role no longer counts.
 *
 * A custodian is a person, named by a user name regardless of ASCII case:
 * a store an older hsmd made may hold "Ops" beside "ops" (hsmd warns of such
 * pairs at start), which may be one person holding two accounts.  So the
 * spellings of one name approve a request once, count once, and are the
 * requester when either is (same_person).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/encoding.h"
#include "common/json_read.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "kms/kms_internal.h"

#define FINGERPRINT_LABEL "hsmd/v1/approval"
/* Closed and expired requests are kept this long after they expire, then purged. */
#define KEEP_SECONDS (90 * 86400)

static void fingerprint(const char *operation, const char *user, const char *request,
                        char out[HSM_APPROVAL_FINGERPRINT_LEN + 1])
{
	/* Each part is NUL-terminated, so no two different triples hash the same text. */
	size_t n_label = sizeof(FINGERPRINT_LABEL), n_op = strlen(operation) + 1,
	       n_user = strlen(user) + 1, n_req = strlen(request);
	hsm_buf b = {0};
	uint8_t digest[HSM_SHA256_LEN];
	if (hsm_ok(hsm_buf_put(&b, FINGERPRINT_LABEL, n_label)) &&
	    hsm_ok(hsm_buf_put(&b, operation, n_op)) && hsm_ok(hsm_buf_put(&b, user, n_user)) &&
	    hsm_ok(hsm_buf_put(&b, request, n_req)) && hsm_ok(hsm_sha256(b.data, b.len, digest))) {
		hsm_hex_encode_str(out, digest, sizeof(digest));
	} else {
		out[0] = '\0'; /* out of memory: the store refuses an empty fingerprint */
	}
	hsm_buf_free(&b);
}

/*
 * The request members that hold bytes (base64): those the AWS KMS API
 * reference types as Blob.  They are what a request can carry of secrets or
 * key material (ImportKeyMaterial's EncryptedKeyMaterial and ImportToken,
 * which together rebuild the imported material; a Plaintext; a wrapped data
 * key), and requests are kept for KEEP_SECONDS after they expire, long after
 * the material may have been deleted or its key destroyed.  A custodian
 * cannot read such bytes anyway: the size and SHA-256 let them recognise
 * the file they were given.  No digest of data the requester keeps secret,
 * where a digest would confirm a guess.
 *
 * Each is named by its place in the request: a top-level member, or one of
 * a top-level structure (parent).  A member of the same name elsewhere (an
 * EncryptionContext key "Message", a tag "Plaintext") is the requester's
 * text, shown as it is: custodians read what they approve.
 */
static const struct {
	const char *parent; /* NULL: a top-level member */
	const char *name;
	bool digest;
} blob_members[] = {
    {NULL, "CiphertextBlob", true}, {NULL, "EncryptedKeyMaterial", true},
    {NULL, "ImportToken", true},    {NULL, "Mac", true},
    {NULL, "PublicKey", true},      {NULL, "Signature", true},
    {NULL, "Message", false},       {NULL, "Plaintext", false},
    {"Recipient", "AttestationDocument", true},
};
#define REDACTED_MEMBER "hsmd:redacted"
#define SHOWN_FLAGS (JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII)

/* Whether member name of parent (NULL: the request) holds bytes; *digest: whether to show
 * their SHA-256. */
static bool is_blob_member(const char *parent, const char *name, bool *digest)
{
	for (size_t i = 0; i < sizeof(blob_members) / sizeof(blob_members[0]); i++) {
		const char *p = blob_members[i].parent;
		if ((p == NULL) == (parent == NULL) && (p == NULL || strcmp(p, parent) == 0) &&
		    strcmp(blob_members[i].name, name) == 0) {
			*digest = blob_members[i].digest;
			return true;
		}
	}
	return false;
}

/* Whether a top-level member of that name is a structure holding blob members. */
static bool is_blob_parent(const char *name)
{
	for (size_t i = 0; i < sizeof(blob_members) / sizeof(blob_members[0]); i++)
		if (blob_members[i].parent != NULL && strcmp(blob_members[i].parent, name) == 0)
			return true;
	return false;
}

/*
 * What a stored request shows instead of a value: {"hsmd:redacted": true,
 * "bytes": N, "sha256": "<hex>"} over the decoded bytes ("characters" over
 * the text as sent when it is not base64).  NULL when out of memory.
 */
static json_t *describe(const char *value, bool digest)
{
	hsm_buf raw;
	hsm_buf_init_secure(&raw); /* a Plaintext's bytes */
	const uint8_t *p = (const uint8_t *)value;
	size_t n = strlen(value);
	bool decoded = hsm_ok(hsm_b64_decode(&raw, value, n, HSM_ERR_VALIDATION));
	if (decoded) {
		p = raw.data;
		n = raw.len;
	}
	uint8_t md[HSM_SHA256_LEN];
	char hex[2 * HSM_SHA256_LEN + 1];
	json_t *d = json_object();
	bool ok = d != NULL &&
	          json_object_set_new(d, REDACTED_MEMBER, json_true()) == 0 &&
	          json_object_set_new(d, decoded ? "bytes" : "characters",
	                              json_integer((json_int_t)n)) == 0;
	if (ok && digest) {
		ok = hsm_ok(hsm_sha256(p, n, md));
		if (ok) {
			hsm_hex_encode_str(hex, md, sizeof(md));
			ok = json_object_set_new(d, "sha256", json_string(hex)) == 0;
		}
	}
	hsm_buf_free(&raw);
	if (!ok) {
		json_decref(d);
		return NULL;
	}
	return d;
}

/* Describes the blob members of object v (of parent; NULL: the request itself), and those
 * of its structures that hold some; *changed when any was. */
static hsm_result redact_object(json_t *v, const char *parent, bool *changed)
{
	if (!json_is_object(v))
		return HSM_SUCCESS;
	for (void *it = json_object_iter(v); it != NULL; it = json_object_iter_next(v, it)) {
		bool digest = false;
		const char *name = json_object_iter_key(it);
		json_t *item = json_object_iter_value(it);
		if (parent == NULL && is_blob_parent(name)) {
			HSM_GUARD(redact_object(item, name, changed));
			continue;
		}
		if (!is_blob_member(parent, name, &digest) || !json_is_string(item))
			continue;
		json_t *d = describe(json_string_value(item), digest);
		HSM_ENSURE(d != NULL, HSM_ERR_NOMEM, "out of memory");
		HSM_ENSURE(json_object_iter_set_new(v, it, d) == 0, HSM_ERR_NOMEM, "out of memory");
		*changed = true;
	}
	return HSM_SUCCESS;
}

/*
 * The text the store keeps of request (malloc'ed in *shown), or NULL in
 * *shown when it holds no blob member and is kept as it is.  A text that
 * does not read as JSON (hsmd never wrote one) is described whole, by its
 * size only: it may be anything, secrets included.
 */
static hsm_result shown_text(const char *request, char **shown)
{
	json_t *doc = NULL;
	unsigned line, col;
	bool changed = false;
	*shown = NULL;
	hsm_result r = hsm_json_read((const uint8_t *)request, strlen(request), &doc, &line, &col);
	if (hsm_ok(r)) {
		r = redact_object(doc, NULL, &changed);
	} else {
		doc = describe(request, false);
		HSM_ENSURE(doc != NULL, HSM_ERR_NOMEM, "out of memory");
		changed = true;
		r = HSM_SUCCESS;
	}
	if (hsm_ok(r) && changed)
		r = hsm_json_text(doc, SHOWN_FLAGS, shown);
	json_decref(doc);
	return r;
}

static bool has_role(const hsm_caller *caller, unsigned roles)
{
	return (caller->roles & roles) != 0;
}

unsigned hsm_kms_approval_required(hsm_kms *kms, const hsm_approval_record *a)
{
	return a->required > kms->cfg.approval_quorum ? a->required : kms->cfg.approval_quorum;
}

/* Whether two user names are one person's: equal ignoring ASCII case (names are ASCII). */
static bool same_person(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* The approver of a (not i) that is the same person as approver i and counted before it. */
static const char *counted_twin(const hsm_approval_record *a, uint32_t i, const bool counted[])
{
	for (uint32_t j = 0; j < i; j++)
		if (counted[j] && same_person(a->approvers[j], a->approvers[i]))
			return a->approvers[j];
	return NULL;
}

unsigned hsm_kms_approval_valid(hsm_kms *kms, const hsm_approval_record *a)
{
	unsigned n = 0;
	bool counted[HSM_APPROVERS_MAX] = {false};
	for (uint32_t i = 0; i < a->n_approvers && i < HSM_APPROVERS_MAX; i++) {
		hsm_user_record u;
		if (same_person(a->approvers[i], a->requester) || counted_twin(a, i, counted) != NULL)
			continue;
		if (hsm_ok(hsm_store_user_get(kms->store, a->approvers[i], &u)) && !u.disabled &&
		    (u.roles & HSM_ROLES_CUSTODIAN) != 0) {
			counted[i] = true;
			n++;
		}
	}
	return n;
}

static bool reaches_quorum(hsm_kms *kms, const hsm_approval_record *a, unsigned valid)
{
	return valid >= hsm_kms_approval_required(kms, a);
}

bool hsm_kms_approval_approved(hsm_kms *kms, const hsm_approval_record *a)
{
	return reaches_quorum(kms, a, hsm_kms_approval_valid(kms, a));
}

/* The enabled custodians' names (a kms_name_list), every spelling. */
static hsm_result list_custodian(const hsm_user_record *u, void *arg)
{
	kms_name_list *c = arg;
	if (u->disabled || (u->roles & HSM_ROLES_CUSTODIAN) == 0)
		return HSM_SUCCESS;
	return kms_name_list_add(c, u->name);
}

static hsm_result note_active(const hsm_access_key_record *k, void *arg)
{
	*(bool *)arg |= k->active;
	return HSM_SUCCESS;
}

/*
 * The custodians who could approve a request now: enabled, holding an active
 * access key (one without could never sign an approval), each person once
 * (same_person).
 */
hsm_result hsm_kms_custodians_in(hsm_store *store, unsigned *out)
{
	kms_name_list c = {NULL, 0, 0}, able = {NULL, 0, 0};
	hsm_result r = hsm_store_user_list(store, list_custodian, &c);
	for (size_t i = 0; hsm_ok(r) && i < c.n; i++) {
		bool active = false, counted = false;
		r = hsm_store_access_key_list(store, c.names[i], note_active, &active);
		for (size_t j = 0; hsm_ok(r) && active && j < able.n && !counted; j++)
			counted = same_person(able.names[j], c.names[i]);
		if (hsm_ok(r) && active && !counted)
			r = kms_name_list_add(&able, c.names[i]);
	}
	*out = (unsigned)able.n;
	free(c.names);
	free(able.names);
	return r;
}

hsm_result hsm_kms_custodian_count(hsm_kms *kms, unsigned *out)
{
	return hsm_kms_custodians_in(kms->store, out);
}

/*
 * The refusal that tells the requester what to do next (within
 * HSM_ERRMSG_MAX: the longest operation name leaves room to spare).
 */
static hsm_result needs_approval(hsm_kms *kms, const hsm_approval_record *a, bool opened,
                                 unsigned have)
{
	char until[21];
	hsm_format_time(a->expires, until);
	return HSM_FAIL(HSM_ERR_APPROVAL_REQUIRED,
	                "%s needs %u custodians' approval: approval request %s %s with %u, until "
	                "%s; once approved (hsmctl approval approve ID), send this request again",
	                a->operation, hsm_kms_approval_required(kms, a), a->id,
	                opened ? "opened" : "is open", have, until);
}

static hsm_result open_request(hsm_kms *kms, const hsm_caller *caller, const char *operation,
                               const char *request, const char *fp, int64_t now,
                               hsm_approval_record *out)
{
	uint8_t raw[HSM_APPROVAL_ID_LEN / 2];
	hsm_approval_record a;
	char *shown = NULL;
	memset(&a, 0, sizeof(a));
	HSM_GUARD(hsm_random_bytes(raw, sizeof(raw)));
	hsm_hex_encode_str(a.id, raw, sizeof(raw));
	memcpy(a.fingerprint, fp, sizeof(a.fingerprint));
	HSM_GUARD(hsm_strcpy(a.operation, sizeof(a.operation), operation));
	HSM_GUARD(hsm_strcpy(a.requester, sizeof(a.requester), caller->user));
	HSM_GUARD(shown_text(request, &shown));
	/* Borrowed: the store copies it. */
	a.request = shown != NULL ? shown : (char *)(uintptr_t)request;
	a.state = HSM_APPROVAL_PENDING;
	a.required = kms->cfg.approval_quorum;
	a.created = now;
	a.expires = now + kms->cfg.approval_ttl;
	/* Not by a clock run ahead (the scheduler's measure): it would purge them all. */
	bool ahead = kms->clock_ahead_fn != NULL && kms->clock_ahead_fn(kms->clock_ahead_arg);
	hsm_result purged = ahead
	                        ? HSM_SUCCESS
	                        : hsm_store_approval_purge(kms->store, now - KEEP_SECONDS, NULL);
	if (hsm_failed(purged))
		hsm_log_failure("purging old approval requests");
	hsm_result r = hsm_store_approval_open(kms->store, &a, out);
	free(shown);
	return r;
}

static hsm_result redact_stored(const char *request, char **replacement, void *arg)
{
	(void)arg;
	return shown_text(request, replacement);
}

hsm_result hsm_kms_approval_redact_stored(hsm_kms *kms, uint64_t *redacted)
{
	return hsm_store_approval_rewrite(kms->store, redact_stored, NULL, redacted);
}

hsm_result hsm_kms_approval_gate(hsm_kms *kms, const hsm_caller *caller, const char *operation,
                                 const char *request, hsm_approval_gate *g)
{
	char fp[HSM_APPROVAL_FINGERPRINT_LEN + 1];
	hsm_approval_record a;
	memset(g, 0, sizeof(*g));
	memset(&a, 0, sizeof(a));
	HSM_ASSERT(kms->cfg.approval_quorum > 0);
	HSM_ENSURE(strlen(request) <= HSM_APPROVAL_REQUEST_MAX, HSM_ERR_VALIDATION,
	           "a request that needs approval may hold at most %d bytes",
	           HSM_APPROVAL_REQUEST_MAX);
	fingerprint(operation, caller->user, request, fp);
	int64_t now = kms_now(kms);
	hsm_result r = hsm_store_approval_find(kms->store, fp, now, &a);
	bool opened = false;
	if (r.err == HSM_ERR_NOT_FOUND) {
		r = open_request(kms, caller, operation, request, fp, now, &a);
		opened = hsm_ok(r);
	}
	if (hsm_failed(r))
		return r;
	memcpy(g->id, a.id, sizeof(g->id));
	/* Counted once: each approver is a store read. */
	unsigned have = opened ? 0 : hsm_kms_approval_valid(kms, &a);
	if (!opened && reaches_quorum(kms, &a, have)) {
		r = hsm_store_approval_close(kms->store, a.id, HSM_APPROVAL_USED, "", now, NULL);
		if (hsm_ok(r)) {
			g->claimed = true;
			hsm_approval_record_clear(&a);
			return HSM_SUCCESS;
		}
		if (r.err != HSM_ERR_INVALID_STATE) {
			hsm_approval_record_clear(&a);
			return r;
		}
		/* An identical request used it a moment ago (or it just expired). */
		hsm_approval_record_clear(&a);
		return HSM_FAIL(HSM_ERR_APPROVAL_REQUIRED,
		                "%s: approval request %s was used by an identical request at the same "
		                "time; send this request again to open a new one",
		                operation, g->id);
	}
	r = needs_approval(kms, &a, opened, have);
	hsm_approval_record_clear(&a);
	return r;
}

hsm_result hsm_caller_commit(const hsm_caller *caller)
{
	hsm_commit_gate *g = caller->gate;
	if (g == NULL || g->passed)
		return HSM_SUCCESS;
	g->reached = true;
	HSM_GUARD(g->fn(g->arg));
	g->passed = true;
	return HSM_SUCCESS;
}

bool hsm_caller_gated(const hsm_caller *caller)
{
	return caller->gate != NULL && !caller->gate->passed;
}

hsm_result hsm_caller_commit_key(const hsm_caller *caller, const char *key_id)
{
	hsm_commit_gate *g = caller->gate;
	if (g != NULL && !g->passed)
		HSM_GUARD(hsm_strcpy(g->key_id, sizeof(g->key_id), key_id));
	return hsm_caller_commit(caller);
}

hsm_result kms_commit_unless_taken(hsm_result lookup, const hsm_caller *caller)
{
	if (hsm_ok(lookup))
		return HSM_FAIL(HSM_ERR_ALREADY_EXISTS, "the name is taken");
	if (lookup.err != HSM_ERR_NOT_FOUND)
		return lookup;
	return hsm_caller_commit(caller);
}

void hsm_kms_approval_release(hsm_kms *kms, const hsm_approval_gate *g)
{
	if (!g->claimed)
		return;
	hsm_result r = hsm_store_approval_reopen(kms->store, g->id);
	if (hsm_failed(r))
		hsm_log_failure("giving an approval back after its request failed");
}

static hsm_result require_reader(const hsm_caller *caller)
{
	HSM_ENSURE(caller->local ||
	               has_role(caller, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR | HSM_ROLES_CUSTODIAN),
	           HSM_ERR_ACCESS_DENIED,
	           "User %s may not read approval requests (role required: crypto-officer, auditor "
	           "or custodian)",
	           caller->user);
	return HSM_SUCCESS;
}

static hsm_result load(hsm_kms *kms, const char *id, hsm_approval_record *out)
{
	hsm_result r = hsm_store_approval_get(kms->store, id, out);
	if (r.err == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "approval request %.40s does not exist", id);
	return r;
}

hsm_result hsm_kms_approval_get(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                hsm_approval_record *out)
{
	HSM_GUARD(require_reader(caller));
	return load(kms, id, out);
}

hsm_result hsm_kms_approval_list(hsm_kms *kms, const hsm_caller *caller, bool open_only,
                                 const hsm_approval_cursor *after, size_t limit,
                                 hsm_approval_cb cb, void *arg, bool *truncated)
{
	HSM_GUARD(require_reader(caller));
	return hsm_store_approval_list(kms->store, open_only, kms_now(kms), after, limit, cb, arg,
	                               truncated);
}

/* Why an open request cannot change any more, for the caller. */
static hsm_result closed_error(const hsm_approval_record *a, int64_t now)
{
	if (a->state == HSM_APPROVAL_PENDING && a->expires <= now)
		return HSM_FAIL(HSM_ERR_INVALID_STATE,
		                "approval request %s has expired; the requester sends the request again "
		                "to open a new one",
		                a->id);
	return HSM_FAIL(HSM_ERR_INVALID_STATE, "approval request %s is %s, no longer open", a->id,
	                hsm_approval_state_name(a->state));
}

/* Loads an open request a custodian other than its requester may act on. */
static hsm_result load_for_custodian(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                     const char *verb, hsm_approval_record *a)
{
	HSM_ENSURE(has_role(caller, HSM_ROLES_CUSTODIAN), HSM_ERR_ACCESS_DENIED,
	           "User %s may not %s requests (role required: custodian)", caller->user, verb);
	HSM_GUARD(load(kms, id, a));
	int64_t now = kms_now(kms);
	hsm_result r = HSM_SUCCESS;
	if (strcmp(a->requester, caller->user) == 0)
		r = HSM_FAIL(HSM_ERR_ACCESS_DENIED,
		             "User %s may not %s their own request: other custodians must", caller->user,
		             verb);
	else if (same_person(a->requester, caller->user))
		r = HSM_FAIL(HSM_ERR_ACCESS_DENIED,
		             "User %s may not %s request %s of user %s: names that differ only by case "
		             "are one custodian, and other custodians must",
		             caller->user, verb, a->id, a->requester);
	else if (a->state != HSM_APPROVAL_PENDING || a->expires <= now)
		r = closed_error(a, now);
	if (hsm_failed(r))
		hsm_approval_record_clear(a);
	return r;
}

/* The store's refusal of a change to an open request, in the caller's terms. */
static hsm_result change_error(hsm_kms *kms, const char *id, hsm_result r)
{
	if (r.err != HSM_ERR_INVALID_STATE)
		return r;
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	if (hsm_failed(load(kms, id, &a)))
		return r;
	r = closed_error(&a, kms_now(kms));
	hsm_approval_record_clear(&a);
	return r;
}

/* The refusal of a second approval by one custodian, naming the spelling that approved. */
static hsm_result already_approved(hsm_kms *kms, const hsm_caller *caller, const char *id)
{
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	char twin[HSM_USER_NAME_MAX + 1] = "";
	if (hsm_ok(load(kms, id, &a)))
		for (uint32_t i = 0; i < a.n_approvers && i < HSM_APPROVERS_MAX && twin[0] == '\0'; i++)
			if (same_person(a.approvers[i], caller->user) &&
			    strcmp(a.approvers[i], caller->user) != 0)
				memcpy(twin, a.approvers[i], sizeof(twin));
	hsm_approval_record_clear(&a);
	if (twin[0] == '\0')
		return HSM_FAIL(HSM_ERR_ALREADY_EXISTS, "User %s already approved request %s",
		                caller->user, id);
	return HSM_FAIL(HSM_ERR_ALREADY_EXISTS,
	                "User %s may not approve request %s: user %s approved it already, and names "
	                "that differ only by case are one custodian, whose approval counts once",
	                caller->user, id, twin);
}

hsm_result hsm_kms_approval_approve(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                    hsm_approval_record *out)
{
	hsm_approval_record a;
	HSM_GUARD(load_for_custodian(kms, caller, id, "approve", &a));
	hsm_approval_record_clear(&a);
	/* The store refuses, atomically, an approver who approved it under any spelling. */
	hsm_result r = hsm_store_approval_approve(kms->store, id, caller->user, kms_now(kms), out);
	if (r.err == HSM_ERR_ALREADY_EXISTS)
		return already_approved(kms, caller, id);
	if (r.err == HSM_ERR_LIMIT_EXCEEDED)
		return HSM_FAIL(HSM_ERR_LIMIT_EXCEEDED, "approval request %s holds %d approvals already",
		                id, HSM_APPROVERS_MAX);
	return change_error(kms, id, r);
}

hsm_result hsm_kms_approval_deny(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                 hsm_approval_record *out)
{
	hsm_approval_record a;
	HSM_GUARD(load_for_custodian(kms, caller, id, "deny", &a));
	hsm_approval_record_clear(&a);
	hsm_result r = hsm_store_approval_close(kms->store, id, HSM_APPROVAL_DENIED, caller->user,
	                                        kms_now(kms), out);
	return change_error(kms, id, r);
}

hsm_result hsm_kms_approval_cancel(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                   hsm_approval_record *out)
{
	hsm_approval_record a;
	HSM_GUARD(load(kms, id, &a));
	bool own = strcmp(a.requester, caller->user) == 0;
	hsm_approval_record_clear(&a);
	HSM_ENSURE(own, HSM_ERR_ACCESS_DENIED,
	           "User %s may not cancel approval request %s: only its requester may", caller->user,
	           id);
	hsm_result r = hsm_store_approval_close(kms->store, id, HSM_APPROVAL_CANCELLED, caller->user,
	                                        kms_now(kms), out);
	return change_error(kms, id, r);
}
