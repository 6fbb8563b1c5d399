/*
 * api_alias.c - CreateAlias, UpdateAlias, DeleteAlias, ListAliases.
 */
#include <string.h>

#include "server/api.h"

static hsm_result alias_name(hsm_api_ctx *c, const char **out)
{
	return hsm_json_str(c->req, "AliasName", true, 1, HSM_ALIAS_MAX, out);
}

hsm_result hsm_api_create_alias(hsm_api_ctx *c)
{
	const char *alias, *target;
	HSM_GUARD(alias_name(c, &alias));
	HSM_GUARD(hsm_api_key_id(c, "TargetKeyId", &target));
	hsm_api_note_ref(c, target);
	return hsm_kms_create_alias(c->kms, c->caller, alias, target);
}

hsm_result hsm_api_update_alias(hsm_api_ctx *c)
{
	const char *alias, *target;
	HSM_GUARD(alias_name(c, &alias));
	HSM_GUARD(hsm_api_key_id(c, "TargetKeyId", &target));
	hsm_api_note_ref(c, target);
	return hsm_kms_update_alias(c->kms, c->caller, alias, target);
}

hsm_result hsm_api_delete_alias(hsm_api_ctx *c)
{
	const char *alias;
	HSM_GUARD(alias_name(c, &alias));
	hsm_api_note_ref(c, alias);
	return hsm_kms_delete_alias(c->kms, c->caller, alias);
}

typedef struct alias_list {
	hsm_api_ctx *c;
	char last[HSM_ALIAS_MAX + 1];
} alias_list;

static hsm_result write_alias(const hsm_alias_record *a, void *arg)
{
	alias_list *l = arg;
	hsm_buf arn = {0};
	const hsm_kms_config *cfg = hsm_kms_config_get(l->c->kms);
	HSM_GUARD(hsm_buf_printf(&arn, "arn:aws:kms:%s:%s:%s", cfg->region, cfg->account_id, a->name));
	hsm_jw_begin_object(l->c->w);
	hsm_jw_str(l->c->w, "AliasName", a->name);
	hsm_jw_str_n(l->c->w, "AliasArn", (const char *)arn.data, arn.len);
	hsm_jw_str(l->c->w, "TargetKeyId", a->key_id);
	hsm_jw_time(l->c->w, "CreationDate", a->created);
	hsm_jw_time(l->c->w, "LastUpdatedDate", a->updated);
	hsm_jw_end(l->c->w);
	hsm_buf_free(&arn);
	memcpy(l->last, a->name, sizeof(l->last));
	return HSM_SUCCESS;
}

hsm_result hsm_api_list_aliases(hsm_api_ctx *c)
{
	const char *key = NULL, *marker;
	size_t limit;
	bool truncated = false;
	alias_list l = {c, ""};
	HSM_GUARD(hsm_json_str(c->req, "KeyId", false, 1, HSM_KEYID_MAX, &key));
	HSM_GUARD(hsm_api_paging(c, 100, 50, &limit, &marker));
	hsm_buf after = {0};
	HSM_GUARD(hsm_api_marker_position(c, HSM_MARKER_ALIASES, key, marker, &after));
	hsm_jw_key_begin_array(c->w, "Aliases");
	hsm_result r = hsm_kms_list_aliases(c->kms, c->caller, key, hsm_marker_at(&after), limit,
	                                    write_alias, &l, &truncated);
	hsm_buf_free(&after);
	HSM_GUARD(r);
	hsm_jw_end_array(c->w);
	if (truncated)
		HSM_GUARD(hsm_api_write_next_marker(c, HSM_MARKER_ALIASES, key, l.last));
	hsm_jw_bool(c->w, "Truncated", truncated);
	return HSM_SUCCESS;
}
