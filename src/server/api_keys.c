/*
 * api_keys.c - CreateKey, DescribeKey, ListKeys, EnableKey, DisableKey,
 * UpdateKeyDescription, ScheduleKeyDeletion, CancelKeyDeletion, and the
 * shared request/response pieces (KeyId, paging, KeyMetadata).
 *
 * Members and limits follow the AWS KMS API reference for each operation.
 */
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "server/api.h"

#define POLICY_MODEL_MAX 131072 /* characters: the API's constraint */
#define POLICY_QUOTA 32768      /* bytes: the key policy document size quota */

hsm_result hsm_api_key_id(hsm_api_ctx *c, const char *member, const char **out)
{
	return hsm_json_str(c->req, member, true, 1, HSM_KEYID_MAX, out);
}

/*
 * Whether s (valid UTF-8) holds only U+0020..U+00FF, and tab, line feed and
 * carriage return when whitespace is set: the API's patterns for policies
 * and markers.
 */
static bool latin1_text(const char *s, bool whitespace)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		bool ok = (whitespace && (*p == '\t' || *p == '\n' || *p == '\r')) ||
		          (*p >= 0x20 && *p < 0x80) || ((*p == 0xC2 || *p == 0xC3) && p[1] != '\0');
		if (!ok)
			return false;
		if (*p >= 0x80)
			p++; /* the continuation byte of U+0080..U+00FF */
	}
	return true;
}

hsm_result hsm_api_policy(hsm_api_ctx *c, bool required, const char **out)
{
	HSM_GUARD(hsm_json_str(c->req, "Policy", required, 1, POLICY_MODEL_MAX, out));
	if (*out == NULL)
		return HSM_SUCCESS;
	HSM_ENSURE(latin1_text(*out, true), HSM_ERR_VALIDATION,
	           "1 validation error detected: Value at 'policy' failed to satisfy "
	           "constraint: Member must satisfy regular expression pattern: "
	           "[\\u0009\\u000A\\u000D\\u0020-\\u00FF]+");
	size_t bytes = strlen(*out);
	HSM_ENSURE(bytes <= POLICY_QUOTA, HSM_ERR_LIMIT_EXCEEDED,
	           "The key policy is %zu bytes: the limit is %d", bytes, POLICY_QUOTA);
	return HSM_SUCCESS;
}

hsm_result hsm_api_refuse_recipient(hsm_api_ctx *c, const char *answer, hsm_err refusal)
{
	json_t *r = json_object_get(c->req, "Recipient");
	HSM_ENSURE(r == NULL || json_is_null(r) || json_is_object(r), HSM_ERR_SERIALIZATION,
	           "Recipient must be a structure");
	HSM_ENSURE(r == NULL || json_is_null(r), refusal,
	           "Recipient is not supported: hsmd does not verify AWS Nitro Enclaves or NitroTPM "
	           "attestation documents; leave it out to receive the %s",
	           answer);
	return HSM_SUCCESS;
}

void hsm_api_write_material_id(hsm_api_ctx *c, const char *member, const hsm_used_key *used)
{
	if (used->spec != HSM_SPEC_SYMMETRIC_DEFAULT)
		return;
	hsm_api_write_material_member(c, member, used->key_id, used->version);
}

void hsm_api_write_material_member(hsm_api_ctx *c, const char *member, const char *key_id,
                                   uint32_t version)
{
	char id[HSM_MATERIAL_ID_LEN + 1];
	hsm_result r = hsm_kms_material_id(key_id, version, id);
	if (hsm_failed(r))
		hsm_jw_fail(c->w, r); /* id was not written */
	else
		hsm_jw_str(c->w, member, id);
}

hsm_result hsm_api_paging(hsm_api_ctx *c, int64_t max, int64_t def, size_t *limit,
                          const char **marker)
{
	int64_t l = def;
	bool present;
	HSM_GUARD(hsm_json_int(c->req, "Limit", false, 1, max, &l, &present));
	HSM_GUARD(hsm_json_str(c->req, "Marker", false, 1, 1024, marker));
	HSM_ENSURE(*marker == NULL || latin1_text(*marker, false), HSM_ERR_VALIDATION,
	           "1 validation error detected: Value at 'marker' failed to satisfy constraint: "
	           "Member must satisfy regular expression pattern: [\\u0020-\\u00FF]*");
	*limit = (size_t)(present ? l : def);
	return HSM_SUCCESS;
}

void hsm_api_note_key(hsm_api_ctx *c, const hsm_used_key *used)
{
	memcpy(c->audit.key_id, used->key_id, sizeof(c->audit.key_id));
	c->audit.key_version = used->version;
}

void hsm_api_note_ref(hsm_api_ctx *c, const char *ref)
{
	/* State changes return no key: resolve the reference once more for the record. */
	char id[HSM_UUID_STRLEN + 1];
	if (ref == NULL)
		return;
	/* A reference that does not resolve must not replace the failure being answered. */
	hsm_error_info failure = *hsm_last_error();
	if (hsm_ok(hsm_kms_resolve(c->kms, ref, id)))
		memcpy(c->audit.key_id, id, sizeof(id));
	else
		hsm_error_restore(&failure);
}

static void note_record(hsm_api_ctx *c, const hsm_key_record *r)
{
	memcpy(c->audit.key_id, r->key_id, sizeof(c->audit.key_id));
	c->audit.key_version = r->primary_version;
}

void hsm_api_write_key_arn(hsm_api_ctx *c, const char *member, const char *key_id)
{
	/* On every response: built on the stack, no allocation. */
	char arn[160];
	hsm_sb b;
	hsm_sb_init(&b, arn, sizeof(arn));
	hsm_kms_arn_prefix(c->kms, &b);
	hsm_sb_add(&b, "key/");
	hsm_sb_addn(&b, key_id, 36);
	if (!b.cut)
		hsm_jw_str_n(c->w, member, arn, b.len);
	else
		c->w->err = HSM_FAIL(HSM_ERR_INTERNAL, "key ARN does not fit");
}

void hsm_api_write_algorithms(hsm_api_ctx *c, hsm_key_spec spec, hsm_key_usage usage)
{
	const hsm_spec_info *s = hsm_spec_get(spec);
	if (usage == HSM_USAGE_ENCRYPT_DECRYPT) {
		hsm_jw_key_begin_array(c->w, "EncryptionAlgorithms");
		for (unsigned a = 0; a < HSM_ENC_COUNT; a++)
			if (s->enc_algs & (1U << a))
				hsm_jw_value_str(c->w, hsm_enc_alg_name((hsm_enc_alg)a));
		hsm_jw_end_array(c->w);
	} else if (usage == HSM_USAGE_SIGN_VERIFY) {
		hsm_jw_key_begin_array(c->w, "SigningAlgorithms");
		for (unsigned a = 0; a < HSM_SIGN_COUNT; a++)
			if (s->sign_algs & (1U << a))
				hsm_jw_value_str(c->w, hsm_sign_alg_name((hsm_sign_alg)a));
		hsm_jw_end_array(c->w);
	} else if (usage == HSM_USAGE_GENERATE_VERIFY_MAC) {
		hsm_jw_key_begin_array(c->w, "MacAlgorithms");
		for (unsigned a = 0; a < HSM_MAC_COUNT; a++)
			if (s->mac_algs & (1U << a))
				hsm_jw_value_str(c->w, hsm_mac_alg_name((hsm_mac_alg)a));
		hsm_jw_end_array(c->w);
	} else {
		hsm_jw_key_begin_array(c->w, "KeyAgreementAlgorithms");
		for (unsigned a = 0; a < HSM_AGREE_COUNT; a++)
			if (s->agree_algs & (1U << a))
				hsm_jw_value_str(c->w, hsm_agree_alg_name((hsm_agree_alg)a));
		hsm_jw_end_array(c->w);
	}
}

void hsm_api_write_key_metadata(hsm_api_ctx *c, const char *member, const hsm_key_record *r)
{
	const hsm_kms_config *cfg = hsm_kms_config_get(c->kms);
	hsm_jw_key_begin_object(c->w, member);
	hsm_jw_str(c->w, "AWSAccountId", cfg->account_id);
	hsm_jw_str(c->w, "KeyId", r->key_id);
	hsm_api_write_key_arn(c, "Arn", r->key_id);
	hsm_jw_time(c->w, "CreationDate", r->created);
	hsm_jw_bool(c->w, "Enabled", r->state == HSM_KEY_ENABLED);
	hsm_jw_str(c->w, "Description", r->description);
	hsm_jw_str(c->w, "KeyUsage", hsm_usage_name(r->usage));
	hsm_jw_str(c->w, "KeyState", hsm_key_state_name(r->state));
	/*
	 * No PendingDeletionWindowInDays: the API gives it only for a
	 * multi-Region primary key waiting for its replicas (PendingReplicaDeletion).
	 */
	if (r->state == HSM_KEY_PENDING_DELETION)
		hsm_jw_time(c->w, "DeletionDate", r->deletion_date);
	hsm_jw_str(c->w, "Origin", hsm_key_origin_name(r->origin));
	/*
	 * For every key type: AWS KMS rotates symmetric encryption keys only, and
	 * so names their current material only; hsmd rotates every type.  Left
	 * out while an imported key's first material is not there (PendingImport).
	 */
	if (r->origin != HSM_ORIGIN_EXTERNAL || r->primary_version > 1 ||
	    (r->flags & HSM_KEYFLAG_NO_MATERIAL) == 0) {
		hsm_api_write_material_member(c, "CurrentKeyMaterialId", r->key_id, r->primary_version);
	}
	if (r->origin == HSM_ORIGIN_EXTERNAL && (r->flags & HSM_KEYFLAG_NO_MATERIAL) == 0) {
		hsm_jw_str(c->w, "ExpirationModel", r->valid_to != 0 ? "KEY_MATERIAL_EXPIRES"
		                                                      : "KEY_MATERIAL_DOES_NOT_EXPIRE");
		if (r->valid_to != 0)
			hsm_jw_time(c->w, "ValidTo", r->valid_to);
	}
	hsm_jw_str(c->w, "KeyManager", "CUSTOMER");
	hsm_jw_str(c->w, "CustomerMasterKeySpec", hsm_spec_name(r->spec));
	hsm_jw_str(c->w, "KeySpec", hsm_spec_name(r->spec));
	hsm_api_write_algorithms(c, r->spec, r->usage);
	hsm_jw_bool(c->w, "MultiRegion", false);
	hsm_jw_end(c->w);
}

/* KeySpec (or the deprecated CustomerMasterKeySpec) and KeyUsage with KMS's defaults. */
static hsm_result read_spec_usage(hsm_api_ctx *c, hsm_create_key_req *req)
{
	const char *spec = NULL, *cmk = NULL, *usage = NULL;
	HSM_GUARD(hsm_json_str(c->req, "KeySpec", false, 1, 64, &spec));
	HSM_GUARD(hsm_json_str(c->req, "CustomerMasterKeySpec", false, 1, 64, &cmk));
	HSM_GUARD(hsm_json_str(c->req, "KeyUsage", false, 1, 64, &usage));
	HSM_ENSURE(spec == NULL || cmk == NULL, HSM_ERR_VALIDATION,
	           "Specify KeySpec or CustomerMasterKeySpec, not both");
	req->spec = HSM_SPEC_SYMMETRIC_DEFAULT;
	req->usage = HSM_USAGE_ENCRYPT_DECRYPT;
	if (spec != NULL || cmk != NULL)
		HSM_GUARD(hsm_spec_parse_member(spec != NULL ? "KeySpec" : "CustomerMasterKeySpec",
		                                spec != NULL ? spec : cmk, &req->spec));
	if (usage != NULL)
		HSM_GUARD(hsm_usage_parse(usage, &req->usage));
	return HSM_SUCCESS;
}

/*
 * Origin: AWS_KMS (hsmd makes the material) or EXTERNAL (it is imported);
 * members hsmd does not offer are refused explicitly rather than ignored.
 */
static hsm_result read_origin(hsm_api_ctx *c, hsm_create_key_req *req)
{
	const char *origin = NULL, *store = NULL, *xks = NULL;
	bool multi = false, present;
	HSM_GUARD(hsm_json_str(c->req, "Origin", false, 1, 32, &origin));
	HSM_GUARD(hsm_json_str(c->req, "CustomKeyStoreId", false, 1, 64, &store));
	HSM_GUARD(hsm_json_str(c->req, "XksKeyId", false, 1, 128, &xks));
	HSM_GUARD(hsm_json_bool(c->req, "MultiRegion", &multi, &present));
	req->origin = HSM_ORIGIN_AWS_KMS;
	if (origin != NULL && strcmp(origin, "EXTERNAL") == 0) {
		req->origin = HSM_ORIGIN_EXTERNAL;
	} else if (origin != NULL && strcmp(origin, "AWS_KMS") != 0) {
		bool known = strcmp(origin, "AWS_CLOUDHSM") == 0 || strcmp(origin, "EXTERNAL_KEY_STORE") == 0;
		HSM_ENSURE(known, HSM_ERR_VALIDATION,
		           "Origin '%.32s' is not one of [AWS_KMS, EXTERNAL, AWS_CLOUDHSM, "
		           "EXTERNAL_KEY_STORE]",
		           origin);
		return HSM_FAIL(HSM_ERR_UNSUPPORTED_OPERATION,
		                "Origin %s is not supported: hsmd makes key material itself (AWS_KMS) or "
		                "imports it (EXTERNAL)",
		                origin);
	}
	HSM_ENSURE(store == NULL, HSM_ERR_CUSTOM_KEY_STORE_NOT_FOUND,
	           "that custom key store does not exist: hsmd holds its keys itself and has no "
	           "custom key stores");
	HSM_ENSURE(xks == NULL, HSM_ERR_UNSUPPORTED_OPERATION,
	           "external key stores are not supported");
	HSM_ENSURE(!multi, HSM_ERR_UNSUPPORTED_OPERATION,
	           "multi-Region keys are not supported: replicate the store instead");
	return HSM_SUCCESS;
}

hsm_result hsm_api_create_key(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	hsm_create_key_req req = {0};
	hsm_tag *tags = NULL;
	bool present;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_TRY(read_origin(c, &req));
	HSM_TRY(read_spec_usage(c, &req));
	HSM_TRY(hsm_json_str(c->req, "Description", false, 0, 8192, &req.description));
	HSM_TRY(hsm_api_policy(c, false, &req.policy));
	HSM_TRY(hsm_json_bool(c->req, "BypassPolicyLockoutSafetyCheck", &req.bypass_lockout_check,
	                      &present));
	HSM_TRY(hsm_json_tags(c->req, "Tags", &tags, &req.n_tags));
	req.tags = tags;
	HSM_TRY(hsm_kms_create_key(c->kms, c->caller, &req, &rec));
	note_record(c, &rec);
	hsm_api_write_key_metadata(c, "KeyMetadata", &rec);
out:
	free(tags);
	hsm_key_record_clear(&rec);
	return res;
}

hsm_result hsm_api_describe_key(hsm_api_ctx *c)
{
	const char *key;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_kms_describe_key(c->kms, c->caller, key, &rec));
	note_record(c, &rec);
	hsm_api_write_key_metadata(c, "KeyMetadata", &rec);
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}

typedef struct list_state {
	hsm_api_ctx *c;
	char last[HSM_UUID_STRLEN + 1];
} list_state;

static hsm_result write_key_entry(const hsm_key_record *r, void *arg)
{
	list_state *s = arg;
	hsm_jw_begin_object(s->c->w);
	hsm_jw_str(s->c->w, "KeyId", r->key_id);
	hsm_api_write_key_arn(s->c, "KeyArn", r->key_id);
	hsm_jw_end(s->c->w);
	memcpy(s->last, r->key_id, sizeof(s->last));
	return HSM_SUCCESS;
}

hsm_result hsm_api_list_keys(hsm_api_ctx *c)
{
	size_t limit;
	const char *marker;
	bool truncated = false;
	list_state s = {c, ""};
	hsm_buf after = {0};
	HSM_GUARD(hsm_api_paging(c, 1000, 100, &limit, &marker));
	HSM_GUARD(hsm_api_marker_position(c, HSM_MARKER_KEYS, NULL, marker, &after));
	hsm_jw_key_begin_array(c->w, "Keys");
	hsm_result r = hsm_kms_list_keys(c->kms, c->caller, hsm_marker_at(&after), limit,
	                                 write_key_entry, &s, &truncated);
	hsm_buf_free(&after);
	HSM_GUARD(r);
	hsm_jw_end_array(c->w);
	if (truncated)
		HSM_GUARD(hsm_api_write_next_marker(c, HSM_MARKER_KEYS, NULL, s.last));
	hsm_jw_bool(c->w, "Truncated", truncated);
	return HSM_SUCCESS;
}

/* hsmd has no custom key stores: the list is empty, and a store named does not exist. */
hsm_result hsm_api_describe_custom_key_stores(hsm_api_ctx *c)
{
	const char *id, *name, *marker;
	size_t limit;
	HSM_GUARD(hsm_json_str(c->req, "CustomKeyStoreId", false, 1, 64, &id));
	HSM_GUARD(hsm_json_str(c->req, "CustomKeyStoreName", false, 1, 256, &name));
	HSM_GUARD(hsm_api_paging(c, 1000, 100, &limit, &marker));
	HSM_GUARD(hsm_kms_custom_key_stores(c->kms, c->caller, id, name));
	/* No page ends early, so no marker was ever handed out to come back. */
	HSM_ENSURE(marker == NULL, HSM_ERR_INVALID_MARKER, "Marker is invalid");
	hsm_jw_key_begin_array(c->w, "CustomKeyStores");
	hsm_jw_end_array(c->w);
	hsm_jw_bool(c->w, "Truncated", false);
	return HSM_SUCCESS;
}

bool hsm_api_is_token_op(hsm_op op)
{
	return op == HSM_OP_DescribeKeys;
}

static hsm_result write_key_description(const hsm_key_record *r, const hsm_buf *spki, void *arg)
{
	hsm_api_ctx *c = arg;
	hsm_jw_begin_object(c->w);
	hsm_api_write_key_metadata(c, "KeyMetadata", r);
	if (spki != NULL)
		hsm_jw_b64(c->w, "PublicKey", spki->data, spki->len);
	/* hsmd's own, beside the AWS-shaped metadata: a key marked for tokens refuses Sign
	 * (kms/sign.c), which a PKCS#11 token must know to not offer it for signing. */
	hsm_jw_bool(c->w, "JwtSigningEnabled", (r->flags & HSM_KEYFLAG_JWT) != 0);
	hsm_jw_end(c->w);
	return HSM_SUCCESS;
}

/*
 * HsmdToken.DescribeKeys: what a PKCS#11 token listing needs of every key
 * (DescribeKey and GetPublicKey), a page at a time, in one request and one
 * audit record instead of two per key.  With KeyId, the page of that key
 * alone (what the token reads of a key a search names).
 */
hsm_result hsm_api_describe_keys(hsm_api_ctx *c)
{
	size_t limit;
	const char *marker, *key = NULL;
	bool truncated = false;
	char last[HSM_UUID_STRLEN + 1] = "";
	HSM_GUARD(hsm_api_paging(c, 1000, 100, &limit, &marker));
	HSM_GUARD(hsm_json_str(c->req, "KeyId", false, 1, HSM_KEYID_MAX, &key));
	if (key != NULL) {
		/* One key is no page to go on from. */
		HSM_ENSURE(marker == NULL, HSM_ERR_VALIDATION, "Specify KeyId or Marker, not both");
		hsm_api_note_ref(c, key);
		hsm_jw_key_begin_array(c->w, "Keys");
		HSM_GUARD(hsm_kms_describe_keys_one(c->kms, c->caller, key, write_key_description, c));
		hsm_jw_end_array(c->w);
		hsm_jw_bool(c->w, "Truncated", false);
		return HSM_SUCCESS;
	}
	hsm_buf after = {0};
	HSM_GUARD(hsm_api_marker_position(c, HSM_MARKER_DESCRIBE_KEYS, NULL, marker, &after));
	hsm_jw_key_begin_array(c->w, "Keys");
	hsm_result r = hsm_kms_describe_keys(c->kms, c->caller, hsm_marker_at(&after), limit,
	                                     write_key_description, c, &truncated, last);
	hsm_buf_free(&after);
	HSM_GUARD(r);
	hsm_jw_end_array(c->w);
	if (truncated)
		HSM_GUARD(hsm_api_write_next_marker(c, HSM_MARKER_DESCRIBE_KEYS, NULL, last));
	hsm_jw_bool(c->w, "Truncated", truncated);
	return HSM_SUCCESS;
}

hsm_result hsm_api_enable_key(hsm_api_ctx *c)
{
	const char *key;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	hsm_api_note_ref(c, key);
	return hsm_kms_enable_key(c->kms, c->caller, key);
}

hsm_result hsm_api_disable_key(hsm_api_ctx *c)
{
	const char *key;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	hsm_api_note_ref(c, key);
	return hsm_kms_disable_key(c->kms, c->caller, key);
}

hsm_result hsm_api_update_key_description(hsm_api_ctx *c)
{
	const char *key, *description;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_json_str(c->req, "Description", true, 0, 8192, &description));
	hsm_api_note_ref(c, key);
	return hsm_kms_update_description(c->kms, c->caller, key, description);
}

hsm_result hsm_api_schedule_key_deletion(hsm_api_ctx *c)
{
	const char *key;
	int64_t days = 0;
	bool present;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_json_int(c->req, "PendingWindowInDays", false, 7, 30, &days, &present));
	HSM_GUARD(hsm_kms_schedule_deletion(c->kms, c->caller, key, (int)days, &rec));
	note_record(c, &rec);
	hsm_api_write_key_arn(c, "KeyId", rec.key_id);
	hsm_jw_time(c->w, "DeletionDate", rec.deletion_date);
	hsm_jw_str(c->w, "KeyState", hsm_key_state_name(rec.state));
	hsm_jw_int(c->w, "PendingWindowInDays", rec.pending_window_days);
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}

hsm_result hsm_api_cancel_key_deletion(hsm_api_ctx *c)
{
	const char *key;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_kms_cancel_deletion(c->kms, c->caller, key, &rec));
	note_record(c, &rec);
	hsm_api_write_key_arn(c, "KeyId", rec.key_id);
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}

/*
 * GetKeyLastUsage: KeyLastUsage is an empty object when no use is recorded
 * since TrackingStartDate, as the API has it.  CloudTrailEventId and
 * KmsRequestId are both the request's id, which its audit record carries
 * (hsmctl audit report).
 */
hsm_result hsm_api_get_key_last_usage(hsm_api_ctx *c)
{
	const char *key;
	hsm_key_last_usage u;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_kms_key_last_usage(c->kms, c->caller, key, &u));
	memcpy(c->audit.key_id, u.key_id, sizeof(c->audit.key_id));
	hsm_jw_str(c->w, "KeyId", u.key_id);
	hsm_jw_key_begin_object(c->w, "KeyLastUsage");
	if (u.used) {
		hsm_jw_str(c->w, "Operation", u.last.operation);
		hsm_jw_time_ms(c->w, "Timestamp", u.last.used_ms);
		hsm_jw_str(c->w, "CloudTrailEventId", u.last.request_id);
		hsm_jw_str(c->w, "KmsRequestId", u.last.request_id);
	}
	hsm_jw_end(c->w);
	hsm_jw_time(c->w, "TrackingStartDate", u.tracking_start);
	hsm_jw_time(c->w, "KeyCreationDate", u.created);
	return HSM_SUCCESS;
}
