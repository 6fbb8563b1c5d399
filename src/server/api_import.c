/*
 * api_import.c - GetParametersForImport, ImportKeyMaterial,
 * DeleteImportedKeyMaterial.
 *
 * Members as in the AWS KMS API reference.  ImportToken (1-6144 bytes) and
 * EncryptedKeyMaterial (1-6144 bytes) are base64 blobs; ValidTo is a
 * timestamp, which the JSON protocol sends as epoch seconds (fractions are
 * dropped).  KeyMaterialId (64 lowercase hex digits) names one of a key's
 * materials; KeyMaterialDescription describes one.  The audit record names
 * the key and the version the material is, and for GetParametersForImport
 * the wrapping algorithm; never a token or material.
 */
#include <math.h>
#include <string.h>

#include "server/api.h"

#define IMPORT_BLOB_MAX 6144 /* ImportToken, EncryptedKeyMaterial: 1-6144 bytes */

hsm_result hsm_api_get_parameters_for_import(hsm_api_ctx *c)
{
	const char *key, *alg, *spec;
	hsm_import_params p;
	memset(&p, 0, sizeof(p));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_json_str(c->req, "WrappingAlgorithm", true, 1, 64, &alg));
	HSM_GUARD(hsm_json_str(c->req, "WrappingKeySpec", true, 1, 64, &spec));
	hsm_api_note_ref(c, key);
	hsm_result r = hsm_kms_get_import_params(c->kms, c->caller, key, alg, spec, &p);
	if (hsm_ok(r)) {
		c->audit.algorithm = alg; /* known now to be one of the names */
		hsm_api_write_key_arn(c, "KeyId", p.key_id);
		hsm_jw_b64(c->w, "ImportToken", p.token.data, p.token.len);
		hsm_jw_b64(c->w, "PublicKey", p.public_der.data, p.public_der.len);
		hsm_jw_time(c->w, "ParametersValidTo", p.valid_to);
	}
	hsm_import_params_clear(&p);
	return r;
}

/* A timestamp member (epoch seconds, integer or not); *present false when absent or null. */
static hsm_result read_time(hsm_api_ctx *c, const char *name, int64_t *out, bool *present)
{
	json_t *v = json_object_get(c->req, name);
	*present = false;
	if (v == NULL || json_is_null(v))
		return HSM_SUCCESS;
	HSM_ENSURE(json_is_number(v), HSM_ERR_SERIALIZATION, "%s must be a timestamp (epoch seconds)",
	           name);
	double t = json_number_value(v);
	HSM_ENSURE(isfinite(t) && t >= 0 && t < 253402300800.0, HSM_ERR_VALIDATION,
	           "%s is out of range", name); /* before year 10000 */
	*out = (int64_t)t; /* t >= 0: truncation is the floor */
	*present = true;
	return HSM_SUCCESS;
}

static hsm_result read_import_type(hsm_api_ctx *c, hsm_import_type *out)
{
	const char *t = NULL;
	HSM_GUARD(hsm_json_str(c->req, "ImportType", false, 1, 64, &t));
	*out = HSM_IMPORT_ANY;
	if (t == NULL)
		return HSM_SUCCESS;
	if (strcmp(t, "NEW_KEY_MATERIAL") == 0)
		*out = HSM_IMPORT_NEW;
	else if (strcmp(t, "EXISTING_KEY_MATERIAL") == 0)
		*out = HSM_IMPORT_EXISTING;
	else
		return HSM_FAIL(HSM_ERR_VALIDATION,
		                "ImportType '%.64s' is not NEW_KEY_MATERIAL or EXISTING_KEY_MATERIAL", t);
	return HSM_SUCCESS;
}

/* KeyId and KeyMaterialId, the members both operations answer with (version 0: no material). */
static void write_material(hsm_api_ctx *c, const char *key_id, uint32_t version)
{
	c->audit.key_version = version;
	hsm_api_write_key_arn(c, "KeyId", key_id);
	if (version != 0)
		hsm_api_write_material_member(c, "KeyMaterialId", key_id, version);
}

hsm_result hsm_api_import_key_material(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	hsm_import_req req;
	hsm_buf token = {0}, enc = {0};
	hsm_key_record rec;
	uint32_t version = 0;
	bool present;
	memset(&req, 0, sizeof(req));
	memset(&rec, 0, sizeof(rec));
	HSM_TRY(hsm_api_key_id(c, "KeyId", &req.key));
	HSM_TRY(hsm_json_blob(c->req, "ImportToken", true, 1, IMPORT_BLOB_MAX, &token, &present));
	HSM_TRY(hsm_json_blob(c->req, "EncryptedKeyMaterial", true, 1, IMPORT_BLOB_MAX, &enc,
	                      &present));
	HSM_TRY(hsm_json_str(c->req, "ExpirationModel", false, 1, 64, &req.expiration_model));
	HSM_TRY(read_time(c, "ValidTo", &req.valid_to, &req.has_valid_to));
	HSM_TRY(read_import_type(c, &req.type));
	HSM_TRY(hsm_json_str(c->req, "KeyMaterialId", false, 1, 128, &req.material_id));
	HSM_TRY(hsm_json_str(c->req, "KeyMaterialDescription", false, 1, 1024, &req.description));
	req.token = token.data;
	req.token_len = token.len;
	req.encrypted = enc.data;
	req.encrypted_len = enc.len;
	hsm_api_note_ref(c, req.key);
	HSM_TRY(hsm_kms_import_material(c->kms, c->caller, &req, &rec, &version));
	write_material(c, rec.key_id, version); /* KMS's newer members; older clients ignore them */
out:
	hsm_buf_free(&token);
	hsm_buf_free(&enc);
	hsm_key_record_clear(&rec);
	return res;
}

hsm_result hsm_api_delete_imported_key_material(hsm_api_ctx *c)
{
	const char *key, *id = NULL;
	hsm_key_record rec;
	uint32_t version = 0;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_api_key_id(c, "KeyId", &key));
	HSM_GUARD(hsm_json_str(c->req, "KeyMaterialId", false, 1, 128, &id));
	hsm_api_note_ref(c, key);
	HSM_GUARD(hsm_kms_delete_material(c->kms, c->caller, key, id, &rec, &version));
	write_material(c, rec.key_id, version);
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}
