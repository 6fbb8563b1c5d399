/*
 * api_tags.c - TagResource, UntagResource, ListResourceTags, GetKeyPolicy,
 * PutKeyPolicy, ListKeyPolicies.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "server/api.h"

#define UNTAG_KEYS_MAX 1000

hsm_result hsm_api_tag_resource(hsm_api_ctx *c)
{
	const char *key;
	hsm_tag *tags = NULL;
	size_t n = 0;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_json_tags(c->req, "Tags", &tags, &n));
	hsm_api_note_ref(c, key);
	hsm_result r = n == 0 ? HSM_FAIL(HSM_ERR_VALIDATION, "Tags must not be empty")
	                      : hsm_kms_tag(c->kms, c->caller, key, n, tags);
	free(tags);
	return r;
}

hsm_result hsm_api_untag_resource(hsm_api_ctx *c)
{
	const char *key;
	const char **keys = NULL;
	size_t n = 0;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	/* No bound in the API beyond the request's size; a key has at most 50 tags. */
	HSM_GUARD(hsm_json_string_list(c->req, "TagKeys", true, UNTAG_KEYS_MAX, &keys, &n));
	hsm_api_note_ref(c, key);
	hsm_result r = n == 0 ? HSM_FAIL(HSM_ERR_VALIDATION, "TagKeys must not be empty")
	                      : hsm_kms_untag(c->kms, c->caller, key, n, keys);
	free(keys);
	return r;
}

typedef struct tag_list {
	hsm_api_ctx *c;
	char last[sizeof(((hsm_tag *)0)->key)];
} tag_list;

static hsm_result write_tag(const hsm_tag *t, void *arg)
{
	tag_list *l = arg;
	hsm_jw_begin_object(l->c->w);
	hsm_jw_str(l->c->w, "TagKey", t->key);
	hsm_jw_str(l->c->w, "TagValue", t->value);
	hsm_jw_end(l->c->w);
	memcpy(l->last, t->key, sizeof(l->last));
	return HSM_SUCCESS;
}

hsm_result hsm_api_list_resource_tags(hsm_api_ctx *c)
{
	const char *key, *marker;
	size_t limit;
	bool truncated = false;
	tag_list l = {c, ""};
	hsm_buf after = {0};
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_api_paging(c, 50, 50, &limit, &marker));
	HSM_GUARD(hsm_api_marker_position(c, HSM_MARKER_TAGS, key, marker, &after));
	hsm_api_note_ref(c, key);
	hsm_jw_key_begin_array(c->w, "Tags");
	hsm_result r = hsm_kms_list_tags(c->kms, c->caller, key, hsm_marker_at(&after), limit,
	                                 write_tag, &l, &truncated);
	hsm_buf_free(&after);
	hsm_jw_end_array(c->w);
	if (hsm_ok(r) && truncated)
		r = hsm_api_write_next_marker(c, HSM_MARKER_TAGS, key, l.last);
	hsm_jw_bool(c->w, "Truncated", truncated);
	return r;
}

/* PolicyName: 1-128 characters of the API's pattern [\w]+ (only "default" names a policy). */
static hsm_result policy_name(hsm_api_ctx *c, const char **name)
{
	HSM_GUARD(hsm_json_str(c->req, "PolicyName", false, 1, 128, name));
	for (const char *p = *name; p != NULL && *p != '\0'; p++)
		HSM_ENSURE(isalnum((unsigned char)*p) || *p == '_', HSM_ERR_VALIDATION,
		           "1 validation error detected: Value at 'policyName' failed to satisfy "
		           "constraint: Member must satisfy regular expression pattern: [\\w]+");
	return HSM_SUCCESS;
}

hsm_result hsm_api_get_key_policy(hsm_api_ctx *c)
{
	const char *key, *name = NULL;
	hsm_buf policy = {0};
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(policy_name(c, &name));
	hsm_api_note_ref(c, key);
	hsm_result r = hsm_kms_get_policy(c->kms, c->caller, key, name, &policy);
	if (hsm_ok(r)) {
		hsm_jw_str_n(c->w, "Policy", (const char *)policy.data, policy.len);
		hsm_jw_str(c->w, "PolicyName", "default");
	}
	hsm_buf_free(&policy);
	return r;
}

hsm_result hsm_api_put_key_policy(hsm_api_ctx *c)
{
	const char *key, *name = NULL, *policy;
	bool bypass = false, present;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(policy_name(c, &name));
	HSM_GUARD(hsm_api_policy(c, true, &policy));
	HSM_GUARD(hsm_json_bool(c->req, "BypassPolicyLockoutSafetyCheck", &bypass, &present));
	hsm_api_note_ref(c, key);
	return hsm_kms_put_policy(c->kms, c->caller, key, name, policy, bypass);
}

hsm_result hsm_api_list_key_policies(hsm_api_ctx *c)
{
	const char *key, *marker;
	size_t limit;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_api_paging(c, 1000, 100, &limit, &marker));
	/*
	 * One policy, one page: no NextMarker is ever handed out to come back.
	 * ListKeyPolicies does not answer InvalidMarkerException.
	 */
	HSM_ENSURE(marker == NULL, HSM_ERR_VALIDATION,
	           "Marker is invalid: ListKeyPolicies returns every policy name on one page");
	HSM_GUARD(hsm_kms_list_policies(c->kms, c->caller, key));
	hsm_api_note_ref(c, key);
	hsm_jw_key_begin_array(c->w, "PolicyNames");
	hsm_jw_value_str(c->w, "default");
	hsm_jw_end_array(c->w);
	hsm_jw_bool(c->w, "Truncated", false);
	return HSM_SUCCESS;
}
