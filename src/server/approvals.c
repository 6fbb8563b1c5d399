/*
 * approvals.c - which requests wait for custodians, and the admin operations
 * custodians use (kms/approvals.c keeps the rules).
 *
 * With approval_quorum = M above 0, every operation named in
 * approval_operations runs only once M custodians approved that identical
 * request.  The gate sits where the operation is about to make its first
 * change (hsm_caller_commit), after authentication, the role check, the
 * request's parameters, the key policy and grants, and the key's state: a
 * request that would be refused anyway is refused as ever, without opening
 * a request custodians would have to look at.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/api.h"
#include "server/server.h"

_Static_assert(HSM_OP_COUNT <= 64, "approval_kms_ops holds a bit per operation");

/* What custodians may be asked to approve: requests that change something. */
static bool approvable_admin(const char *name)
{
	static const char *const names[] = {"Seal",      "CreateUser",      "DisableUser",
	                                    "EnableUser", "UnlockUser",     "CreateAccessKey",
	                                    "RevokeAccessKey", "CreateBackup",
	                                    "ImportCertificate", "DeleteCertificate"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(names[i], name) == 0)
			return true;
	return false;
}

hsm_result hsm_server_approval_ops(const char *list, uint64_t *kms_ops, uint32_t *admin_ops)
{
	char buf[HSM_APPROVAL_OPS_MAX];
	uint64_t k = 0;
	uint32_t a = 0;
	HSM_GUARD(hsm_strcpy(buf, sizeof(buf), list));
	for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t != NULL;
	     t = strtok_r(NULL, ", ", &save)) {
		const hsm_op_info *info = hsm_op_find(t);
		const hsm_admin_op *admin = hsm_admin_find(t);
		if (info != NULL && info->mutating) {
			k |= UINT64_C(1) << (unsigned)info->op;
		} else if (admin != NULL && approvable_admin(t)) {
			a |= UINT32_C(1) << hsm_admin_index(admin);
		} else {
			return HSM_FAIL(HSM_ERR_VALIDATION,
			                "'%.64s' is not an operation that can wait for approval (one that "
			                "changes keys, policies, users, access keys or backups)",
			                t);
		}
	}
	*kms_ops = k;
	*admin_ops = a;
	return HSM_SUCCESS;
}

/*
 * An import with an expiry (KEY_MATERIAL_EXPIRES, the default) has the
 * material erased when it passes: a deletion set in advance.  Where
 * DeleteImportedKeyMaterial waits for custodians, so does such an import, or
 * one officer could erase material without them by importing it again with
 * a ValidTo a minute away.
 */
static bool import_sets_expiry(const hsm_server *s, const hsm_op_info *info, const json_t *doc)
{
	if (info->op != HSM_OP_ImportKeyMaterial ||
	    (s->approval_kms_ops >> (unsigned)HSM_OP_DeleteImportedKeyMaterial & 1U) == 0)
		return false;
	const char *model = json_string_value(json_object_get(doc, "ExpirationModel"));
	return model == NULL || strcmp(model, "KEY_MATERIAL_DOES_NOT_EXPIRE") != 0;
}

/*
 * Where UpdateAlias waits, so does DeleteAlias: deleting an alias and
 * creating it again on another key (CreateAlias refuses only a name in use)
 * is the same redirection, or one officer would make it without custodians.
 */
static bool alias_delete_redirects(const hsm_server *s, const hsm_op_info *info)
{
	return info->op == HSM_OP_DeleteAlias &&
	       (s->approval_kms_ops >> (unsigned)HSM_OP_UpdateAlias & 1U) != 0;
}

bool hsm_server_kms_needs_approval(const hsm_server *s, const hsm_op_info *info,
                                   const hsm_caller *caller, const json_t *doc)
{
	return s->opt.approval_quorum > 0 &&
	       ((s->approval_kms_ops >> (unsigned)info->op & 1U) != 0 ||
	        import_sets_expiry(s, info, doc) || alias_delete_redirects(s, info)) &&
	       (caller->roles & info->roles) != 0;
}

bool hsm_server_admin_needs_approval(const hsm_server *s, const hsm_admin_op *op,
                                     const hsm_caller *caller)
{
	/* Every approvable admin operation is a crypto-officer's. */
	return s->opt.approval_quorum > 0 && (s->approval_admin_ops >> hsm_admin_index(op) & 1U) != 0 &&
	       (caller->roles & HSM_ROLES_OFFICER) != 0;
}

/*
 * Whether a request member's name is one an operation could have: AWS KMS and
 * hsmd name members with ASCII letters and digits only.  Any other name
 * ("hsmd:KeyId", " hsmd:KeyId", "HSMD:KeyId", "hsmd\uFF1AKeyId", a Cyrillic
 * look-alike) is ignored by the operation but shown to custodians, beside
 * what hsmd adds (HSM_APPROVAL_KEY_MEMBER) or a member the operation reads.
 */
static bool plain_member(const char *member)
{
	const unsigned char *p = (const unsigned char *)member;
	if (*p == '\0')
		return false;
	for (; *p != '\0'; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			return false;
	return true;
}

/*
 * Whether two member names read alike to a person: equal once case is folded
 * and the letters a font may not tell apart (I, l and 1; O and 0) are one.
 */
static bool members_alike(const char *a, const char *b)
{
	for (;; a++, b++) {
		char x = (char)tolower((unsigned char)*a), y = (char)tolower((unsigned char)*b);
		x = x == 'l' || x == '1' ? 'i' : x == '0' ? 'o' : x;
		y = y == 'l' || y == '1' ? 'i' : y == '0' ? 'o' : y;
		if (x != y)
			return false;
		if (x == '\0')
			return true;
	}
}

static hsm_result meet_gate(void *arg)
{
	hsm_server_gate *g = arg;
	/*
	 * The key the operation resolved its KeyId to joins the text custodians
	 * approve (unless KeyId is that key id): a request naming an alias that
	 * has since moved to another key is a new request, not the one they
	 * approved.
	 */
	json_t *doc = g->doc;
	/* Members named "hsmd:..." are hsmd's own, added below; one sent by the requester
	 * would show custodians a key other than the one the request acts on. */
	const char *member;
	json_t *value;
	json_object_foreach(g->doc, member, value)
	{
		HSM_ENSURE(plain_member(member), HSM_ERR_VALIDATION,
		           "request member %.64s: a request that waits for custodians names its "
		           "members with ASCII letters and digits (names beginning hsmd: are reserved "
		           "for what hsmd adds to the text custodians approve)",
		           member);
		const char *other;
		json_t *ov;
		json_object_foreach(g->doc, other, ov)
		{
			HSM_ENSURE(other == member || strcmp(other, member) == 0 ||
			               !members_alike(other, member),
			           HSM_ERR_VALIDATION,
			           "request members %.64s and %.64s read alike: a request that waits for "
			           "custodians names each member once, as its operation spells it",
			           member, other);
		}
	}
	const char *named = json_string_value(json_object_get(g->doc, "KeyId"));
	if (g->commit.key_id[0] != '\0' && (named == NULL || strcmp(named, g->commit.key_id) != 0)) {
		doc = json_copy(g->doc);
		HSM_ENSURE(doc != NULL, HSM_ERR_NOMEM, "out of memory");
		if (json_object_set_new(doc, HSM_APPROVAL_KEY_MEMBER, json_string(g->commit.key_id)) !=
		    0) {
			json_decref(doc);
			return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
		}
	} else {
		json_incref(doc);
	}
	/* Canonical text: members sorted, no spaces, escapes for anything not ASCII. */
	char *text = NULL;
	hsm_result r = hsm_json_text(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII, &text);
	json_decref(doc);
	memset(&g->approval, 0, sizeof(g->approval));
	HSM_GUARD(r);
	r = hsm_kms_approval_gate(g->s->kms, g->requester, g->operation, text, &g->approval);
	free(text);
	return r;
}

void hsm_server_gate_init(hsm_server_gate *g, hsm_server *s, const char *operation,
                          const hsm_caller *requester, json_t *doc)
{
	memset(g, 0, sizeof(*g));
	g->commit.fn = meet_gate;
	g->commit.arg = g;
	g->s = s;
	g->operation = operation;
	g->requester = requester;
	g->doc = doc;
}

hsm_result hsm_server_approvals_check(hsm_server *s)
{
	/* Whatever the quorum now: an older hsmd kept requests' blob members whole. */
	uint64_t redacted = 0;
	HSM_GUARD(hsm_kms_approval_redact_stored(s->kms, &redacted));
	if (redacted > 0)
		hsm_info("approvals: %llu stored request(s) kept whole by an older hsmd now show only "
		         "the size and SHA-256 of their binary members",
		         (unsigned long long)redacted);
	return HSM_SUCCESS;
}

hsm_result hsm_server_quorum_met(hsm_server *s, unsigned quorum, unsigned *have)
{
	unsigned n = 0;
	*have = 0;
	if (quorum == 0)
		return HSM_SUCCESS;
	HSM_GUARD(hsm_kms_custodians_in(s->store, &n));
	*have = n;
	if (n >= quorum)
		return HSM_SUCCESS;
	return HSM_FAIL(HSM_ERR_VALIDATION,
	                "approval_quorum = %u, but the store has %u enabled custodian%s holding an "
	                "active access key: no request could ever be approved. Create the "
	                "custodians first (hsmctl user create NAME --roles custodian, then an access "
	                "key each), then set approval_quorum",
	                quorum, n, n == 1 ? "" : "s");
}

hsm_result hsm_server_quorum_check(hsm_server *s)
{
	unsigned have = 0;
	hsm_result r = hsm_server_quorum_met(s, s->opt.approval_quorum, &have);
	atomic_store(&s->gauge_custodians, have); /* /metrics has it before the first count */
	return hsm_server_blame(s, "approval_quorum", r);
}

/* ---- HsmdAdmin operations ------------------------------------------------------- */

static void write_approval(hsm_server *s, hsm_jw *w, const hsm_approval_record *a)
{
	bool expired = a->state == HSM_APPROVAL_PENDING && a->expires <= hsm_now();
	hsm_jw_str(w, "ApprovalId", a->id);
	hsm_jw_str(w, "Operation", a->operation);
	hsm_jw_str(w, "Requester", a->requester);
	hsm_jw_str(w, "Request", a->request != NULL ? a->request : "");
	hsm_jw_str(w, "State", expired ? "Expired" : hsm_approval_state_name(a->state));
	hsm_jw_int(w, "Required", hsm_kms_approval_required(s->kms, a));
	hsm_jw_int(w, "Approvals", hsm_kms_approval_valid(s->kms, a));
	hsm_jw_key_begin_array(w, "Approvers");
	for (uint32_t i = 0; i < a->n_approvers && i < HSM_APPROVERS_MAX; i++)
		hsm_jw_value_str(w, a->approvers[i]);
	hsm_jw_end_array(w);
	hsm_jw_time(w, "CreationDate", a->created);
	hsm_jw_time(w, "ExpirationDate", a->expires);
	if (a->closed != 0)
		hsm_jw_time(w, "ClosedDate", a->closed);
	if (a->closed_by[0] != '\0')
		hsm_jw_str(w, "ClosedBy", a->closed_by);
}

static hsm_result read_id(hsm_admin_ctx *c, const char **id)
{
	HSM_GUARD(hsm_json_str(c->req, "ApprovalId", true, HSM_APPROVAL_ID_LEN, HSM_APPROVAL_ID_LEN,
	                       id));
	/* The id goes into the audit record: only what could be one. */
	HSM_ENSURE(strspn(*id, "0123456789abcdef") == HSM_APPROVAL_ID_LEN, HSM_ERR_NOT_FOUND,
	           "approval request %.32s does not exist", *id);
	memcpy(c->audit->approval_id, *id, HSM_APPROVAL_ID_LEN + 1);
	return HSM_SUCCESS;
}

typedef hsm_result (*change_fn)(hsm_kms *, const hsm_caller *, const char *,
                                hsm_approval_record *);

static hsm_result change(hsm_admin_ctx *c, change_fn fn)
{
	const char *id;
	hsm_approval_record a;
	memset(&a, 0, sizeof(a));
	HSM_GUARD(read_id(c, &id));
	hsm_result r = fn(c->s->kms, &c->auth->caller, id, &a);
	if (hsm_ok(r))
		write_approval(c->s, c->w, &a);
	hsm_approval_record_clear(&a);
	return r;
}

hsm_result hsm_admin_approve_request(hsm_admin_ctx *c)
{
	return change(c, hsm_kms_approval_approve);
}

hsm_result hsm_admin_deny_request(hsm_admin_ctx *c)
{
	return change(c, hsm_kms_approval_deny);
}

hsm_result hsm_admin_cancel_request(hsm_admin_ctx *c)
{
	return change(c, hsm_kms_approval_cancel);
}

hsm_result hsm_admin_get_approval(hsm_admin_ctx *c)
{
	return change(c, hsm_kms_approval_get);
}

typedef struct list_arg {
	hsm_server *s;
	hsm_jw *w;
	hsm_approval_cursor last; /* the page's last request: where the next page goes on */
} list_arg;

static hsm_result list_one(const hsm_approval_record *a, void *arg)
{
	list_arg *l = arg;
	hsm_jw_begin_object(l->w);
	write_approval(l->s, l->w, a);
	hsm_jw_end(l->w);
	l->last.created = a->created;
	memcpy(l->last.id, a->id, sizeof(l->last.id));
	return HSM_SUCCESS;
}

/*
 * ListApprovals {IncludeClosed?, Limit? (1-1000, default 100), Marker?}
 * answers {Quorum, Approvals, Truncated, NextMarker?}, newest first.  The
 * marker holds the place of the page's last request in that order (its
 * creation time and id), so a walk sees each request once even while new
 * ones are opened (they sort before it) or old ones closed or purged.  It
 * is good only for the listing, open or IncludeClosed, that issued it.
 */
hsm_result hsm_admin_list_approvals(hsm_admin_ctx *c)
{
	bool all = false, present, truncated = false;
	int64_t limit = 100;
	const char *marker = NULL, *id = NULL;
	hsm_buf at = {0}, next = {0};
	hsm_approval_cursor after;
	hsm_result res = HSM_SUCCESS;
	memset(&after, 0, sizeof(after));
	HSM_TRY(hsm_json_bool(c->req, "IncludeClosed", &all, &present));
	HSM_TRY(hsm_json_int(c->req, "Limit", false, 1, 1000, &limit, &present));
	HSM_TRY(hsm_json_str(c->req, "Marker", false, 1, 1024, &marker));
	hsm_marker_kind kind = all ? HSM_MARKER_ALL_APPROVALS : HSM_MARKER_APPROVALS;
	if (marker != NULL) {
		HSM_TRY(hsm_marker_decode(kind, NULL, true, marker, &at));
		HSM_TRY(hsm_marker_approval_at(hsm_marker_at(&at), &after.created, &id));
		HSM_TRY(hsm_strcpy(after.id, sizeof(after.id), id));
	}
	list_arg l;
	memset(&l, 0, sizeof(l));
	l.s = c->s;
	l.w = c->w;
	hsm_jw_int(c->w, "Quorum", c->s->opt.approval_quorum);
	hsm_jw_key_begin_array(c->w, "Approvals");
	HSM_TRY(hsm_kms_approval_list(c->s->kms, &c->auth->caller, !all,
	                              marker != NULL ? &after : NULL, (size_t)limit, list_one, &l,
	                              &truncated));
	hsm_jw_end_array(c->w);
	hsm_jw_bool(c->w, "Truncated", truncated);
	if (truncated) {
		char position[HSM_MARKER_APPROVAL_POSITION_MAX];
		HSM_TRY(hsm_marker_approval_position(l.last.created, l.last.id, position));
		HSM_TRY(hsm_marker_encode(kind, NULL, position, &next));
		hsm_jw_str_n(c->w, "NextMarker", (const char *)next.data, next.len);
	}
out:
	hsm_buf_free(&at);
	hsm_buf_free(&next);
	return res;
}
