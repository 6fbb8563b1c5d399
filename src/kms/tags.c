/*
 * tags.c - TagResource, UntagResource, ListResourceTags.
 *
 * Rules from the AWS KMS API reference (Tag): TagKey 1-128 characters,
 * TagValue 0-256 characters, with no pattern (other services' Tag shapes
 * restrict them to Unicode letters, digits, white space and _ . : / = + - @;
 * KMS's does not, so neither does hsmd: any valid UTF-8 without control
 * characters); the "aws:" prefix, in any case, is reserved for keys and
 * values alike (TagException), as AWS's tagging rules say.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kms/kms_internal.h"

/*
 * Counts characters as AWS does, in UTF-16 code units (one above U+FFFF is
 * two); -1 when the string is not valid UTF-8 or has control characters.
 */
static long utf8_chars(const char *s)
{
	long n = 0;
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		unsigned c = *p, extra;
		if (c < 0x20 || c == 0x7f)
			return -1;
		if (c < 0x80)
			extra = 0;
		else if ((c & 0xe0) == 0xc0 && c >= 0xc2)
			extra = 1;
		else if ((c & 0xf0) == 0xe0)
			extra = 2;
		else if ((c & 0xf8) == 0xf0 && c <= 0xf4)
			extra = 3;
		else
			return -1;
		p++;
		for (unsigned i = 0; i < extra; i++, p++)
			if ((*p & 0xc0) != 0x80)
				return -1;
		n += extra == 3 ? 2 : 1;
	}
	return n;
}

static bool reserved(const char *s)
{
	return strncasecmp(s, "aws:", 4) == 0;
}

hsm_result kms_check_tag(const hsm_tag *t)
{
	long k = utf8_chars(t->key), v = utf8_chars(t->value);
	HSM_ENSURE(k >= 1 && k <= HSM_TAG_KEY_MAX, HSM_ERR_TAG,
	           "TagKey must be 1 to %d valid characters", HSM_TAG_KEY_MAX);
	HSM_ENSURE(v >= 0 && v <= HSM_TAG_VALUE_MAX, HSM_ERR_TAG,
	           "TagValue must be 0 to %d valid characters", HSM_TAG_VALUE_MAX);
	HSM_ENSURE(!reserved(t->key) && !reserved(t->value), HSM_ERR_TAG,
	           "Tag keys and values that begin with aws: (in any case) are reserved");
	return HSM_SUCCESS;
}

/* aws:RequestTag/<key> for each tag, then aws:TagKeys for each: a policy's view of a tagging. */
typedef struct request_tags {
	hsm_policy_pair *pairs;
	char (*names)[sizeof("aws:RequestTag/") + sizeof(((hsm_tag *)0)->key)];
} request_tags;

static hsm_result request_tags_new(size_t n, const hsm_tag tags[], const char *const keys[],
                                   request_tags *out, kms_authz_extra *extra)
{
	out->pairs = calloc(2 * n, sizeof(*out->pairs));
	out->names = calloc(n, sizeof(*out->names));
	HSM_ENSURE(out->pairs != NULL && out->names != NULL, HSM_ERR_NOMEM, "out of memory");
	size_t m = 0;
	for (size_t i = 0; i < n && tags != NULL; i++) {
		snprintf(out->names[i], sizeof(out->names[i]), "aws:RequestTag/%s", tags[i].key);
		out->pairs[m++] = (hsm_policy_pair){out->names[i], tags[i].value};
	}
	for (size_t i = 0; i < n; i++)
		out->pairs[m++] = (hsm_policy_pair){"aws:TagKeys", tags != NULL ? tags[i].key : keys[i]};
	extra->more = out->pairs;
	extra->n_more = m;
	return HSM_SUCCESS;
}

/* Looks the key up for TagResource (tags) or UntagResource (keys), the policy seeing them. */
static hsm_result tagging_lookup(hsm_kms *kms, const hsm_caller *caller, hsm_op op,
                                 const char *ref, size_t n, const hsm_tag tags[],
                                 const char *const keys[], kms_key **k)
{
	request_tags rt = {0};
	kms_authz_extra extra = {0};
	hsm_result r = request_tags_new(n, tags, keys, &rt, &extra);
	if (hsm_ok(r))
		r = kms_lookup_write(kms, caller, op, ref, &extra, k);
	free(rt.pairs);
	free(rt.names);
	return r;
}

static hsm_result too_many_tags(void)
{
	return HSM_FAIL(HSM_ERR_TAG, "a key can have at most %d tags", HSM_MAX_TAGS_PER_KEY);
}

typedef struct tag_count {
	const hsm_tag *tags; /* the request's */
	size_t n;
	bool *held; /* per request tag: the key holds its tag key already */
	size_t existing;
} tag_count;

static hsm_result count_tag(const hsm_tag *t, void *arg)
{
	tag_count *c = arg;
	c->existing++;
	for (size_t i = 0; i < c->n; i++)
		c->held[i] |= strcmp(c->tags[i].key, t->key) == 0;
	return HSM_SUCCESS;
}

/* The store's limit on a key's tags, checked ahead of an approval (hsm_caller_gated): the
 * tags the key holds, and the request's tag keys it does not hold yet, each counted once. */
static hsm_result tag_room(hsm_kms *kms, const hsm_caller *caller, const char *key_id, size_t n,
                           const hsm_tag tags[])
{
	if (!hsm_caller_gated(caller))
		return HSM_SUCCESS;
	tag_count c = {tags, n, calloc(n, sizeof(bool)), 0};
	HSM_ENSURE(c.held != NULL, HSM_ERR_NOMEM, "out of memory");
	bool truncated = false;
	hsm_result r = hsm_store_tags_list(kms->store, key_id, NULL, HSM_MAX_TAGS_PER_KEY + 1,
	                                   count_tag, &c, &truncated);
	size_t total = c.existing;
	for (size_t i = 0; hsm_ok(r) && i < n; i++) {
		bool again = c.held[i];
		for (size_t j = 0; !again && j < i; j++)
			again = strcmp(tags[j].key, tags[i].key) == 0;
		total += !again;
	}
	free(c.held);
	HSM_GUARD(r);
	return total > HSM_MAX_TAGS_PER_KEY ? too_many_tags() : HSM_SUCCESS;
}

hsm_result hsm_kms_tag(hsm_kms *kms, const hsm_caller *caller, const char *ref, size_t n,
                       const hsm_tag tags[])
{
	kms_key *k = NULL;
	HSM_ENSURE(n >= 1, HSM_ERR_VALIDATION, "Tags must contain at least one tag");
	for (size_t i = 0; i < n; i++)
		HSM_GUARD(kms_check_tag(&tags[i]));
	HSM_GUARD(tagging_lookup(kms, caller, HSM_OP_TagResource, ref, n, tags, NULL, &k));
	hsm_result r = tag_room(kms, caller, k->rec.key_id, n, tags);
	if (hsm_ok(r))
		r = hsm_caller_commit_key(caller, k->rec.key_id);
	hsm_key_state_check still = kms_state_check(HSM_OP_TagResource);
	if (hsm_ok(r))
		r = hsm_store_tags_put(kms->store, k->rec.key_id, n, tags, &still);
	if (r.err == HSM_ERR_LIMIT_EXCEEDED)
		r = too_many_tags();
	kms_key_release(k);
	return r;
}

hsm_result hsm_kms_untag(hsm_kms *kms, const hsm_caller *caller, const char *ref, size_t n,
                         const char *const keys[])
{
	kms_key *k = NULL;
	HSM_ENSURE(n >= 1, HSM_ERR_VALIDATION, "TagKeys must contain at least one key");
	for (size_t i = 0; i < n; i++) {
		long c = utf8_chars(keys[i]);
		HSM_ENSURE(c >= 1 && c <= HSM_TAG_KEY_MAX, HSM_ERR_VALIDATION,
		           "TagKey must be 1 to %d valid characters", HSM_TAG_KEY_MAX);
		HSM_ENSURE(!reserved(keys[i]), HSM_ERR_TAG,
		           "Tag keys that begin with aws: (in any case) are reserved");
	}
	HSM_GUARD(tagging_lookup(kms, caller, HSM_OP_UntagResource, ref, n, NULL, keys, &k));
	hsm_key_state_check still = kms_state_check(HSM_OP_UntagResource);
	hsm_result r = hsm_caller_commit_key(caller, k->rec.key_id);
	if (hsm_ok(r))
		r = hsm_store_tags_remove(kms->store, k->rec.key_id, n, keys, &still);
	kms_key_release(k);
	return r;
}

hsm_result hsm_kms_list_tags(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                             const char *marker, size_t limit, hsm_tag_cb cb, void *arg,
                             bool *truncated)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_ListResourceTags, ref, NULL, &k));
	hsm_result r = hsm_store_tags_list(kms->store, k->rec.key_id, marker, limit, cb, arg,
	                                   truncated);
	kms_key_release(k);
	return r;
}
