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
	uint32_t after;  /* marker: versions after this one */
	size_t limit, written;
	uint32_t last;
	bool truncated;
} rotations;

static hsm_result write_rotation(const hsm_version_record *v, void *arg)
{
	rotations *r = arg;
	if (v->version <= r->after)
		return HSM_SUCCESS;
	if (r->written == r->limit) {
		r->truncated = true;
		return HSM_SUCCESS;
	}
	hsm_jw_begin_object(r->c->w);
	hsm_api_write_key_arn(r->c, "KeyId", v->key_id);
	hsm_jw_time(r->c->w, "RotationDate", v->created);
	hsm_jw_str(r->c->w, "RotationType",
	           v->rotation_type == HSM_ROTATION_AUTOMATIC ? "AUTOMATIC" : "ON_DEMAND");
	hsm_jw_end(r->c->w);
	r->written++;
	r->last = v->version;
	return HSM_SUCCESS;
}

hsm_result hsm_api_list_key_rotations(hsm_api_ctx *c)
{
	const char *key, *marker;
	rotations r = {c, 0, 0, 0, 0, false};
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_api_paging(c, 1000, 100, &r.limit, &marker));
	if (marker != NULL) {
		int64_t v;
		hsm_result m = hsm_parse_i64(marker, 1, UINT32_MAX, &v);
		HSM_ENSURE(hsm_ok(m), HSM_ERR_INVALID_MARKER, "Marker is invalid");
		r.after = (uint32_t)v;
	}
	hsm_api_note_ref(c, key);
	hsm_jw_key_begin_array(c->w, "Rotations");
	HSM_GUARD(hsm_kms_list_rotations(c->kms, c->caller, key, write_rotation, &r));
	hsm_jw_end_array(c->w);
	if (r.truncated) {
		char next[16];
		snprintf(next, sizeof(next), "%u", r.last);
		hsm_jw_str(c->w, "NextMarker", next);
	}
	hsm_jw_bool(c->w, "Truncated", r.truncated);
	return HSM_SUCCESS;
}
