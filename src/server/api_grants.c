/*
 * api_grants.c - CreateGrant, ListGrants, ListRetirableGrants, RetireGrant,
 * RevokeGrant.
 */
#include <stdlib.h>
#include <string.h>

#include "server/api.h"

static void note_key_id(hsm_api_ctx *c, const char *key_id)
{
	memcpy(c->audit.key_id, key_id, sizeof(c->audit.key_id));
}

/* The grant a request names, for its audit record: only a well-formed id is recorded. */
static void note_grant_id(hsm_api_ctx *c, const char *grant_id)
{
	if (hsm_grant_id_valid(grant_id))
		memcpy(c->audit.grant_id, grant_id, sizeof(c->audit.grant_id));
}

/* Reads one constraint map of Constraints; absent stays not present. */
static hsm_result read_constraint(json_t *cons, const char *member, hsm_grant_ctx *out)
{
	json_t *v = json_object_get(cons, member);
	if (v == NULL || json_is_null(v))
		return HSM_SUCCESS;
	hsm_ctx_pair *pairs = NULL;
	size_t n = 0;
	HSM_GUARD(hsm_json_string_map(cons, member, &pairs, &n));
	out->present = true;
	out->pairs = pairs;
	out->n = n;
	return HSM_SUCCESS;
}

/*
 * AWS service principals (GranteeServicePrincipal, RetiringServicePrincipal)
 * and Constraints.SourceArn (the grant applies only to requests an AWS
 * service makes on behalf of that resource) name what hsmd has none of.
 * Refused, not ignored: dropping a constraint would make the grant wider
 * than asked, and dropping a principal would give it to someone else.
 * ValidationException: CreateGrant declares no UnsupportedOperationException.
 */
static hsm_result refuse_aws_service_members(hsm_api_ctx *c, json_t *cons)
{
	static const char *const members[] = {"GranteeServicePrincipal", "RetiringServicePrincipal"};
	for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++)
		HSM_ENSURE(json_object_get(c->req, members[i]) == NULL, HSM_ERR_VALIDATION,
		           "%s is not supported: hsmd serves no AWS services; name an IAM principal "
		           "(GranteePrincipal, RetiringPrincipal)",
		           members[i]);
	if (cons == NULL)
		return HSM_SUCCESS;
	const char *name;
	json_t *v;
	json_object_foreach(cons, name, v) {
		HSM_ENSURE(strcmp(name, "SourceArn") != 0, HSM_ERR_VALIDATION,
		           "Constraints.SourceArn is not supported: no request to hsmd is made on "
		           "behalf of an AWS resource, so the grant would never apply");
		HSM_ENSURE(strcmp(name, "EncryptionContextEquals") == 0 ||
		               strcmp(name, "EncryptionContextSubset") == 0,
		           HSM_ERR_VALIDATION,
		           "Constraints has no member '%.64s' (EncryptionContextEquals, "
		           "EncryptionContextSubset)",
		           name);
	}
	return HSM_SUCCESS;
}

hsm_result hsm_api_create_grant(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	hsm_create_grant_req req = {0};
	const char **ops = NULL;
	char grant_id[HSM_GRANT_ID_LEN + 1], key_id[HSM_UUID_STRLEN + 1] = "";
	hsm_buf token = {0};
	HSM_TRY(hsm_api_key_id(c, "KeyId", &req.key));
	json_t *cons = json_object_get(c->req, "Constraints");
	if (cons != NULL && json_is_null(cons))
		cons = NULL;
	HSM_CHECK(cons == NULL || json_is_object(cons), HSM_ERR_SERIALIZATION,
	          "Constraints must be a structure");
	HSM_TRY(refuse_aws_service_members(c, cons));
	HSM_TRY(hsm_json_str(c->req, "GranteePrincipal", true, 1, HSM_GRANT_PRINCIPAL_MAX,
	                     &req.grantee));
	HSM_TRY(hsm_json_str(c->req, "RetiringPrincipal", false, 1, HSM_GRANT_PRINCIPAL_MAX,
	                     &req.retiring));
	HSM_TRY(hsm_json_str(c->req, "Name", false, 1, HSM_GRANT_NAME_MAX, &req.name));
	HSM_TRY(hsm_json_string_list(c->req, "Operations", true, HSM_GRANT_OP_COUNT * 4, &ops,
	                             &req.n_operations));
	req.operations = ops;
	if (cons != NULL) {
		HSM_TRY(read_constraint(cons, "EncryptionContextEquals", &req.constraints.equals));
		HSM_TRY(read_constraint(cons, "EncryptionContextSubset", &req.constraints.subset));
	}
	res = hsm_kms_create_grant(c->kms, c->caller, &req, grant_id, &token, key_id);
	if (key_id[0] != '\0')
		note_key_id(c, key_id);
	if (hsm_failed(res))
		goto out;
	hsm_jw_str_n(c->w, "GrantToken", (const char *)token.data, token.len);
	hsm_jw_str(c->w, "GrantId", grant_id);
	memcpy(c->audit.grant_id, grant_id, sizeof(c->audit.grant_id));
out:
	/* The pairs point into the request document: only the arrays are ours. */
	free(req.constraints.equals.pairs);
	free(req.constraints.subset.pairs);
	free(ops);
	hsm_buf_free(&token);
	return res;
}

static void write_constraint(hsm_jw *w, const char *member, const hsm_grant_ctx *g)
{
	if (!g->present)
		return;
	hsm_jw_key_begin_object(w, member);
	for (size_t i = 0; i < g->n; i++)
		hsm_jw_str(w, g->pairs[i].key, g->pairs[i].value);
	hsm_jw_end(w);
}

typedef struct grant_list {
	hsm_api_ctx *c;
	char last[HSM_GRANT_ID_LEN + 1];
	char issuing[HSM_PRINCIPAL_ARN_MAX];
} grant_list;

static hsm_result write_grant(const hsm_grant_record *g, void *arg)
{
	grant_list *l = arg;
	hsm_jw *w = l->c->w;
	hsm_grant_constraints cons;
	HSM_GUARD(hsm_grant_constraints_parse(g->constraints, &cons));
	hsm_jw_begin_object(w);
	hsm_api_write_key_arn(l->c, "KeyId", g->key_id);
	hsm_jw_str(w, "GrantId", g->grant_id);
	if (g->name[0] != '\0')
		hsm_jw_str(w, "Name", g->name);
	hsm_jw_time(w, "CreationDate", g->created);
	hsm_jw_str(w, "GranteePrincipal", g->grantee);
	if (g->retiring[0] != '\0')
		hsm_jw_str(w, "RetiringPrincipal", g->retiring);
	hsm_jw_str(w, "IssuingAccount", l->issuing);
	hsm_jw_key_begin_array(w, "Operations");
	for (unsigned i = 0; i < HSM_GRANT_OP_COUNT; i++)
		if (g->operations & (1U << i))
			hsm_jw_value_str(w, hsm_grant_op_name(i));
	hsm_jw_end_array(w);
	if (cons.equals.present || cons.subset.present) {
		hsm_jw_key_begin_object(w, "Constraints");
		write_constraint(w, "EncryptionContextSubset", &cons.subset);
		write_constraint(w, "EncryptionContextEquals", &cons.equals);
		hsm_jw_end(w);
	}
	hsm_jw_end(w);
	hsm_grant_constraints_free(&cons);
	memcpy(l->last, g->grant_id, sizeof(l->last));
	return HSM_SUCCESS;
}

static void list_begin(hsm_api_ctx *c, grant_list *l)
{
	memset(l, 0, sizeof(*l));
	l->c = c;
	hsm_caller root = {.local = true};
	hsm_kms_caller_arn(c->kms, &root, l->issuing);
	hsm_jw_key_begin_array(c->w, "Grants");
}

/* Markers hold grant ids (what the previous page ended with): marker.h. */
static hsm_result list_end(hsm_api_ctx *c, const grant_list *l, hsm_result r,
                           hsm_marker_kind kind, const char *key, bool truncated)
{
	hsm_jw_end_array(c->w);
	if (hsm_ok(r) && truncated)
		r = hsm_api_write_next_marker(c, kind, key, l->last);
	hsm_jw_bool(c->w, "Truncated", truncated);
	return r;
}

static hsm_result match_none(const hsm_grant_record *g, void *arg)
{
	(void)g;
	(void)arg;
	return HSM_SUCCESS;
}

/* KMS's ServicePrincipalType: 1-128 characters, a dotted name such as dynamodb.amazonaws.com. */
static hsm_result service_principal(hsm_api_ctx *c, const char *member, const char **out)
{
	*out = NULL;
	HSM_GUARD(hsm_json_str(c->req, member, false, 1, 128, out));
	if (*out == NULL)
		return HSM_SUCCESS;
	const char *p = *out;
	bool dot = false, ok = true;
	for (; *p != '\0'; p++) {
		dot |= *p == '.';
		ok &= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      *p == '-' || *p == '.';
	}
	HSM_ENSURE(ok && dot && (*out)[0] != '.' && p[-1] != '.', HSM_ERR_VALIDATION,
	           "%s must be a service principal name such as dynamodb.amazonaws.com", member);
	return HSM_SUCCESS;
}

hsm_result hsm_api_list_grants(hsm_api_ctx *c)
{
	const char *key, *marker, *grant_id = NULL, *grantee = NULL;
	size_t limit;
	bool truncated = false;
	grant_list l;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_api_paging(c, 100, 50, &limit, &marker));
	HSM_GUARD(hsm_json_str(c->req, "GrantId", false, 1, 128, &grant_id));
	HSM_GUARD(
	    hsm_json_str(c->req, "GranteePrincipal", false, 1, HSM_GRANT_PRINCIPAL_MAX, &grantee));
	/* No grant here has an AWS service principal: filtering on one lists none (the key is
	 * still looked up and authorized, as for any other filter). */
	const char *service = NULL;
	HSM_GUARD(service_principal(c, "GranteeServicePrincipal", &service));
	hsm_buf after = {0};
	HSM_GUARD(hsm_api_marker_position(c, HSM_MARKER_GRANTS, key, marker, &after));
	list_begin(c, &l);
	hsm_result r = hsm_kms_list_grants(c->kms, c->caller, key, grant_id, grantee,
	                                   hsm_marker_at(&after), service != NULL ? 1 : limit,
	                                   service != NULL ? match_none : write_grant, &l, &truncated);
	hsm_buf_free(&after);
	if (service != NULL)
		truncated = false;
	hsm_api_note_ref(c, key);
	return list_end(c, &l, r, HSM_MARKER_GRANTS, key, truncated);
}

hsm_result hsm_api_list_retirable_grants(hsm_api_ctx *c)
{
	const char *retiring = NULL, *service = NULL, *marker;
	size_t limit;
	bool truncated = false;
	grant_list l;
	HSM_GUARD(
	    hsm_json_str(c->req, "RetiringPrincipal", false, 1, HSM_GRANT_PRINCIPAL_MAX, &retiring));
	HSM_GUARD(service_principal(c, "RetiringServicePrincipal", &service));
	HSM_ENSURE(retiring != NULL || service != NULL, HSM_ERR_VALIDATION,
	           "RetiringPrincipal or RetiringServicePrincipal is required");
	HSM_GUARD(hsm_api_paging(c, 100, 50, &limit, &marker));
	hsm_buf after = {0};
	HSM_GUARD(hsm_api_marker_position(c, HSM_MARKER_RETIRABLE_GRANTS, NULL, marker, &after));
	list_begin(c, &l);
	/* No grant here has an AWS service principal: one named lists none (authorized all
	 * the same). */
	hsm_result r = hsm_kms_list_retirable_grants(c->kms, c->caller, service != NULL ? NULL : retiring,
	                                             hsm_marker_at(&after), limit, write_grant, &l,
	                                             &truncated);
	hsm_buf_free(&after);
	return list_end(c, &l, r, HSM_MARKER_RETIRABLE_GRANTS, NULL, truncated);
}

hsm_result hsm_api_retire_grant(hsm_api_ctx *c)
{
	const char *token = NULL, *key = NULL, *grant_id = NULL;
	char key_id[HSM_UUID_STRLEN + 1] = "";
	HSM_GUARD(hsm_json_str(c->req, "GrantToken", false, 1, HSM_GRANT_TOKEN_MAX, &token));
	HSM_GUARD(hsm_json_str(c->req, "KeyId", false, 1, HSM_KEYID_MAX, &key));
	HSM_GUARD(hsm_json_str(c->req, "GrantId", false, 1, 128, &grant_id));
	if (token != NULL) {
		char tk[HSM_UUID_STRLEN + 1], tg[HSM_GRANT_ID_LEN + 1];
		if (hsm_ok(hsm_grant_token_parse(token, tk, tg)))
			note_grant_id(c, tg);
	} else {
		note_grant_id(c, grant_id);
	}
	hsm_result r = hsm_kms_retire_grant(c->kms, c->caller, token, token != NULL ? NULL : key,
	                                    token != NULL ? NULL : grant_id, key_id);
	if (key_id[0] != '\0')
		note_key_id(c, key_id);
	return r;
}

hsm_result hsm_api_revoke_grant(hsm_api_ctx *c)
{
	const char *key, *grant_id;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_json_str(c->req, "GrantId", true, 1, 128, &grant_id));
	hsm_api_note_ref(c, key);
	note_grant_id(c, grant_id);
	return hsm_kms_revoke_grant(c->kms, c->caller, key, grant_id);
}
