/*
 * keypolicy.c - GetKeyPolicy, PutKeyPolicy, ListKeyPolicies.
 *
 * A key has exactly one policy, named "default" (AWS KMS API reference,
 * GetKeyPolicy: "The only valid name is default").  The policy language and
 * its evaluation live in policy.c.
 */
#include <stdlib.h>
#include <string.h>

#include "kms/kms_internal.h"

#define POLICY_NAME "default"

static hsm_result check_name(const char *name)
{
	HSM_ENSURE(name == NULL || strcmp(name, POLICY_NAME) == 0, HSM_ERR_NOT_FOUND,
	           "No such policy exists: the only key policy name is \"default\"");
	return HSM_SUCCESS;
}

hsm_result hsm_kms_get_policy(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                              const char *policy_name, hsm_buf *out)
{
	kms_key *k = NULL;
	HSM_GUARD(check_name(policy_name));
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_GetKeyPolicy, ref, NULL, &k));
	hsm_result r = hsm_buf_put_str(out, hsm_policy_source(k->policy));
	kms_key_release(k);
	return r;
}

hsm_result hsm_kms_list_policies(hsm_kms *kms, const hsm_caller *caller, const char *ref)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_ListKeyPolicies, ref, NULL, &k));
	kms_key_release(k);
	return HSM_SUCCESS;
}

static hsm_result set_policy(hsm_key_record *rec, void *arg)
{
	char *p = strdup(arg);
	HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
	free(rec->policy);
	rec->policy = p;
	return HSM_SUCCESS;
}

hsm_result kms_lockout_check(hsm_kms *kms, const hsm_caller *caller, const hsm_key_record *rec,
                             const char *key_arn, const hsm_policy *next, bool new_key,
                             const hsm_tag *new_tags, size_t n_new_tags)
{
	if (caller->local)
		return HSM_SUCCESS;
	char arn[HSM_PRINCIPAL_ARN_MAX];
	hsm_kms_caller_arn(kms, caller, arn);
	/* The key as it will be, under the new policy: what the condition values are read for. */
	kms_key as_next;
	memset(&as_next, 0, sizeof(as_next));
	as_next.rec = *rec; /* a shallow copy, only read */
	as_next.rec.policy = NULL;
	as_next.policy = (hsm_policy *)(uintptr_t)next;
	hsm_policy_pair bypass = {"kms:BypassPolicyLockoutSafetyCheck", "false"};
	kms_authz_extra extra = {.more = &bypass,
	                         .n_more = 1,
	                         .new_key = new_key,
	                         .new_key_tags = new_tags,
	                         .n_new_key_tags = n_new_tags};
	kms_cond_values more;
	hsm_result r = kms_cond_values_fill(kms, caller, &as_next, &extra, &more);
	hsm_policy_request req = {
	    .principal_arn = arn,
	    .account_id = kms->account,
	    .action = "kms:PutKeyPolicy",
	    .resource = key_arn,
	    .key_spec = hsm_spec_name(rec->spec),
	    .key_usage = hsm_usage_name(rec->usage),
	    .extra = more.pairs,
	    .n_extra = more.n,
	};
	bool allowed = hsm_ok(r) && hsm_policy_evaluate(next, &req, NULL) == HSM_POLICY_ALLOW;
	kms_cond_values_free(&more);
	HSM_GUARD(r);
	HSM_ENSURE(allowed, HSM_ERR_MALFORMED_POLICY,
	           "The new key policy will not allow you to update the key policy in the future.");
	return HSM_SUCCESS;
}

hsm_result hsm_kms_put_policy(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                              const char *policy_name, const char *policy, bool bypass)
{
	hsm_result res = HSM_SUCCESS;
	hsm_policy *parsed = NULL;
	kms_key *k = NULL;
	HSM_GUARD(check_name(policy_name));
	HSM_ENSURE(policy != NULL, HSM_ERR_VALIDATION, "Policy is required");
	/* Who may change the policy is decided before what the new policy says. */
	hsm_policy_pair cond = {"kms:BypassPolicyLockoutSafetyCheck", bypass ? "true" : "false"};
	kms_authz_extra extra = {.more = &cond, .n_more = 1};
	HSM_TRY(kms_lookup(kms, caller, HSM_OP_PutKeyPolicy, ref, &extra, &k));
	HSM_TRY(hsm_policy_parse(policy, strlen(policy), &parsed));
	if (!bypass)
		HSM_TRY(kms_lockout_check(kms, caller, &k->rec, k->arn, parsed, false, NULL, 0));
	HSM_TRY(kms_modify_with(kms, caller, HSM_OP_PutKeyPolicy, k->rec.key_id, &extra, set_policy,
	                        (void *)(uintptr_t)policy, NULL, NULL));
out:
	hsm_policy_free(parsed);
	kms_key_release(k);
	return res;
}
