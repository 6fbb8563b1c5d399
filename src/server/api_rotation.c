/*
 * api_rotation.c - EnableKeyRotation, DisableKeyRotation,
 * GetKeyRotationStatus, RotateKeyOnDemand, ListKeyRotations.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/api.h"

hsm_result hsm_api_enable_key_rotation(hsm_api_ctx *c)
{
	const char *key;
	int64_t period = 0;
	bool present;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	/* hsmd allows 1-2560 days (KMS: 90-2560); the default is 90. */
	HSM_GUARD(hsm_json_int(c->req, "RotationPeriodInDays", false, 1, 2560, &period, &present));
	hsm_api_note_ref(c, key);
	return hsm_kms_enable_rotation(c->kms, c->caller, key, (int)period);
}

hsm_result hsm_api_disable_key_rotation(hsm_api_ctx *c)
{
	const char *key;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	hsm_api_note_ref(c, key);
	return hsm_kms_disable_rotation(c->kms, c->caller, key);
}

hsm_result hsm_api_get_key_rotation_status(hsm_api_ctx *c)
{
	const char *key;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_kms_rotation_status(c->kms, c->caller, key, &rec));
	memcpy(c->audit.key_id, rec.key_id, sizeof(c->audit.key_id));
	hsm_jw_bool(c->w, "KeyRotationEnabled", rec.rotation_enabled);
	hsm_api_write_key_arn(c, "KeyId", rec.key_id);
	if (rec.rotation_enabled) {
		hsm_jw_int(c->w, "RotationPeriodInDays", rec.rotation_period_days);
		hsm_jw_time(c->w, "NextRotationDate", rec.next_rotation);
	}
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}

hsm_result hsm_api_rotate_key_on_demand(hsm_api_ctx *c)
{
	const char *key;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_kms_rotate_now(c->kms, c->caller, key, &rec));
	memcpy(c->audit.key_id, rec.key_id, sizeof(c->audit.key_id));
	c->audit.key_version = rec.primary_version;
	hsm_api_write_key_arn(c, "KeyId", rec.key_id);
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}

typedef struct rotations {
	hsm_api_ctx *c;
	hsm_key_record key; /* the key's record, filled before the first entry */
	uint32_t after;     /* marker: versions after this one */
	size_t limit, written;
	uint32_t last;
	bool truncated;
} rotations;

/* KeyMaterialState of version v of key k. */
static const char *material_state(const hsm_key_record *k, uint32_t v)
{
	return v == k->primary_version ? "CURRENT"
	       : v < k->primary_version ? "NON_CURRENT"
	                                : "PENDING_ROTATION";
}

static hsm_result write_rotation(const hsm_version_record *v, void *arg)
{
	rotations *r = arg;
	hsm_jw *w = r->c->w;
	if (v->version <= r->after)
		return HSM_SUCCESS;
	if (r->written == r->limit) {
		r->truncated = true;
		return HSM_SUCCESS;
	}
	char id[HSM_MATERIAL_ID_LEN + 1];
	HSM_GUARD(hsm_kms_material_id(v->key_id, v->version, id));
	hsm_jw_begin_object(w);
	hsm_api_write_key_arn(r->c, "KeyId", v->key_id);
	hsm_jw_str(w, "KeyMaterialId", id);
	hsm_jw_str(w, "KeyMaterialState", material_state(&r->key, v->version));
	if (r->key.origin == HSM_ORIGIN_EXTERNAL) {
		hsm_jw_str(w, "KeyMaterialDescription", v->description);
		hsm_jw_str(w, "ImportState", v->wrapped.len > 0 ? "IMPORTED" : "PENDING_IMPORT");
		if (v->wrapped.len > 0) {
			hsm_jw_str(w, "ExpirationModel", v->valid_to != 0 ? "KEY_MATERIAL_EXPIRES"
			                                                  : "KEY_MATERIAL_DOES_NOT_EXPIRE");
			if (v->valid_to != 0)
				hsm_jw_time(w, "ValidTo", v->valid_to);
		}
	}
	/* Neither the first material nor one pending rotation came from a rotation. */
	if (v->version > 1 && v->version <= r->key.primary_version) {
		hsm_jw_time(w, "RotationDate", v->created);
		hsm_jw_str(w, "RotationType",
		           v->rotation_type == HSM_ROTATION_AUTOMATIC ? "AUTOMATIC" : "ON_DEMAND");
	}
	hsm_jw_end(w);
	r->written++;
	r->last = v->version;
	return HSM_SUCCESS;
}

hsm_result hsm_api_list_key_rotations(hsm_api_ctx *c)
{
	const char *key, *marker, *include = NULL;
	rotations r;
	memset(&r, 0, sizeof(r));
	r.c = c;
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_api_paging(c, 1000, 100, &r.limit, &marker));
	HSM_GUARD(hsm_json_str(c->req, "IncludeKeyMaterial", false, 1, 64, &include));
	HSM_ENSURE(include == NULL || strcmp(include, "ALL_KEY_MATERIAL") == 0 ||
	               strcmp(include, "ROTATIONS_ONLY") == 0,
	           HSM_ERR_VALIDATION,
	           "IncludeKeyMaterial '%.64s' is not ALL_KEY_MATERIAL or ROTATIONS_ONLY", include);
	hsm_buf after = {0};
	HSM_GUARD(hsm_api_marker_position(c, HSM_MARKER_ROTATIONS, key, marker, &after));
	if (marker != NULL) {
		int64_t v; /* canonical decimal, 1-4294967295: marker.c */
		hsm_result m = hsm_parse_i64((const char *)after.data, 1, UINT32_MAX, &v);
		hsm_buf_free(&after);
		HSM_GUARD(m);
		r.after = (uint32_t)v;
	}
	hsm_api_note_ref(c, key);
	bool all = include != NULL && strcmp(include, "ALL_KEY_MATERIAL") == 0;
	hsm_jw_key_begin_array(c->w, "Rotations");
	hsm_result res = hsm_kms_list_rotations(c->kms, c->caller, key, all, &r.key, write_rotation, &r);
	hsm_key_record_clear(&r.key);
	HSM_GUARD(res);
	hsm_jw_end_array(c->w);
	if (r.truncated) {
		char next[16];
		snprintf(next, sizeof(next), "%u", r.last);
		HSM_GUARD(hsm_api_write_next_marker(c, HSM_MARKER_ROTATIONS, key, next));
	}
	hsm_jw_bool(c->w, "Truncated", r.truncated);
	return HSM_SUCCESS;
}
