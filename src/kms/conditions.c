/*
 * conditions.c - the values of the condition keys a request to a key has,
 * beyond the fields hsm_policy_request models (policy.h): what AWS sets on
 * every request (the key's origin, the account, the region, the transport,
 * the caller's address and user agent), what the operation adds (its
 * kms_authz_extra.more: kms:MessageType, kms:ScheduleKeyDeletionPendingWindowInDays,
 * ...), and, only when the key's policy names them, the key's aliases and
 * tags and the time, which cost a store read or the clock.
 *
 * A key hsmd knows a value for is never left absent: an absent key fails a
 * positive condition, so a Deny written for it would never match.  None is
 * worked out for a policy whose conditions read none (the default policy).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "kms/kms_internal.h"

#define TAG_PREFIX "aws:ResourceTag/"
#define ALIAS_PAGE 100

static bool grow(kms_cond_values *v)
{
	size_t cap = v->cap * 2;
	hsm_policy_pair *p = v->pairs == v->local ? malloc(cap * sizeof(*p))
	                                          : realloc(v->pairs, cap * sizeof(*p));
	if (p == NULL)
		return false;
	if (v->pairs == v->local)
		memcpy(p, v->local, v->n * sizeof(*p));
	v->pairs = p;
	v->cap = cap;
	return true;
}

static hsm_result add(kms_cond_values *v, const char *key, const char *value)
{
	HSM_ENSURE(v->n < v->cap || grow(v), HSM_ERR_NOMEM, "out of memory");
	v->pairs[v->n++] = (hsm_policy_pair){key, value};
	return HSM_SUCCESS;
}

static hsm_result keep_tag(const hsm_tag *t, void *arg)
{
	kms_cond_values *v = arg;
	HSM_ENSURE(v->n_tags < HSM_MAX_TAGS_PER_KEY, HSM_ERR_INTERNAL, "a key has too many tags");
	kms_cond_tag *c = &v->tags[v->n_tags++];
	snprintf(c->name, sizeof(c->name), TAG_PREFIX "%s", t->key);
	snprintf(c->value, sizeof(c->value), "%s", t->value);
	return HSM_SUCCESS;
}

static hsm_result keep_alias(const hsm_alias_record *a, void *arg)
{
	kms_cond_values *v = arg;
	if (v->n_aliases == v->cap_aliases) {
		size_t cap = v->cap_aliases ? v->cap_aliases * 2 : ALIAS_PAGE;
		hsm_alias_record *p = realloc(v->aliases, cap * sizeof(*p));
		HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
		v->aliases = p;
		v->cap_aliases = cap;
	}
	v->aliases[v->n_aliases++] = *a;
	return HSM_SUCCESS;
}

static hsm_result read_aliases(hsm_kms *kms, const kms_key *key, kms_cond_values *v)
{
	bool truncated = true;
	while (truncated) {
		const char *after = v->n_aliases > 0 ? v->aliases[v->n_aliases - 1].name : NULL;
		char last[sizeof(v->aliases[0].name)];
		if (after != NULL) {
			snprintf(last, sizeof(last), "%s", after); /* the array may move */
			after = last;
		}
		size_t before = v->n_aliases;
		HSM_GUARD(hsm_store_alias_list(kms->store, key->rec.key_id, after, ALIAS_PAGE,
		                               keep_alias, v, &truncated));
		if (v->n_aliases == before)
			break;
	}
	for (size_t i = 0; i < v->n_aliases; i++)
		HSM_GUARD(add(v, "kms:ResourceAliases", v->aliases[i].name));
	return HSM_SUCCESS;
}

/* The key's tags; those of new_key (CreateKey's, not stored yet) when it is not NULL. */
static hsm_result read_tags(hsm_kms *kms, const kms_key *key, const kms_authz_extra *new_key,
                            kms_cond_values *v)
{
	bool truncated = false;
	v->tags = calloc(HSM_MAX_TAGS_PER_KEY, sizeof(*v->tags));
	HSM_ENSURE(v->tags != NULL, HSM_ERR_NOMEM, "out of memory");
	if (new_key != NULL)
		for (size_t i = 0; i < new_key->n_new_key_tags; i++)
			HSM_GUARD(keep_tag(&new_key->new_key_tags[i], v));
	else
		HSM_GUARD(hsm_store_tags_list(kms->store, key->rec.key_id, NULL,
		                              HSM_MAX_TAGS_PER_KEY, keep_tag, v, &truncated));
	for (size_t i = 0; i < v->n_tags; i++)
		HSM_GUARD(add(v, v->tags[i].name, v->tags[i].value));
	return HSM_SUCCESS;
}

static hsm_result add_time(hsm_kms *kms, kms_cond_values *v)
{
	int64_t now = kms_now(kms);
	time_t t = (time_t)now;
	struct tm tm;
	HSM_ENSURE(gmtime_r(&t, &tm) != NULL, HSM_ERR_INTERNAL, "the clock cannot be read");
	snprintf(v->epoch, sizeof(v->epoch), "%lld", (long long)now);
	strftime(v->current_time, sizeof(v->current_time), "%Y-%m-%dT%H:%M:%SZ", &tm);
	HSM_GUARD(add(v, "aws:EpochTime", v->epoch));
	return add(v, "aws:CurrentTime", v->current_time);
}

hsm_result kms_cond_values_fill(hsm_kms *kms, const hsm_caller *caller, const kms_key *key,
                                const kms_authz_extra *extra, kms_cond_values *v)
{
	v->pairs = v->local;
	v->n = 0;
	v->cap = sizeof(v->local) / sizeof(v->local[0]);
	v->tags = NULL;
	v->n_tags = 0;
	v->aliases = NULL;
	v->n_aliases = v->cap_aliases = 0;
	unsigned needs = hsm_policy_needs(key->policy);
	if (!(needs & HSM_POLICY_NEEDS_EXTRA))
		return HSM_SUCCESS; /* nothing reads them */
	if (extra != NULL)
		for (size_t i = 0; i < extra->n_more; i++)
			HSM_GUARD(add(v, extra->more[i].key, extra->more[i].value));
	HSM_GUARD(add(v, "kms:KeyOrigin", hsm_key_origin_name(key->rec.origin)));
	HSM_GUARD(add(v, "kms:MultiRegion", "false"));
	HSM_GUARD(add(v, "aws:ResourceAccount", kms->account));
	HSM_GUARD(add(v, "aws:RequestedRegion", kms->region));
	HSM_GUARD(add(v, "aws:PrincipalType", "User"));
	HSM_GUARD(add(v, "aws:PrincipalIsAWSService", "false"));
	HSM_GUARD(add(v, "aws:ViaAWSService", "false"));
	HSM_GUARD(add(v, "aws:SecureTransport", caller->secure_transport ? "true" : "false"));
	if (caller->source_ip != NULL && *caller->source_ip != '\0')
		HSM_GUARD(add(v, "aws:SourceIp", caller->source_ip));
	if (caller->user_agent != NULL && *caller->user_agent != '\0')
		HSM_GUARD(add(v, "aws:UserAgent", caller->user_agent));
	/* A key CreateKey has not stored yet has no aliases, and its tags are the request's. */
	bool new_key = extra != NULL && extra->new_key;
	if ((needs & HSM_POLICY_NEEDS_RESOURCE_ALIASES) && !new_key)
		HSM_GUARD(read_aliases(kms, key, v));
	if (needs & HSM_POLICY_NEEDS_RESOURCE_TAGS)
		HSM_GUARD(read_tags(kms, key, new_key ? extra : NULL, v));
	if (needs & HSM_POLICY_NEEDS_TIME)
		HSM_GUARD(add_time(kms, v));
	return HSM_SUCCESS;
}

void kms_cond_values_free(kms_cond_values *v)
{
	if (v->pairs != v->local)
		free(v->pairs);
	free(v->tags);
	free(v->aliases);
	v->pairs = NULL;
	v->tags = NULL;
	v->aliases = NULL;
	v->n = v->n_tags = v->n_aliases = 0;
}
