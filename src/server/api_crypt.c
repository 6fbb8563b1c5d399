/*
 * api_crypt.c - Encrypt, Decrypt, ReEncrypt, GenerateDataKey,
 * GenerateDataKeyWithoutPlaintext, GenerateDataKeyPair,
 * GenerateDataKeyPairWithoutPlaintext, GenerateRandom.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto/blob.h"
#include "server/api.h"

/* Reads an encryption context member; the audit record keeps (hashes of) it. */
static hsm_result read_ctx(hsm_api_ctx *c, const char *member, hsm_enc_ctx *ctx, bool audit)
{
	hsm_ctx_pair *pairs = NULL;
	size_t n = 0;
	HSM_GUARD(hsm_json_string_map(c->req, member, &pairs, &n));
	ctx->pairs = pairs;
	ctx->n = n;
	if (audit) {
		c->audit.ctx = pairs;
		c->audit.n_ctx = n;
	}
	/* Checked again where the context is used; here the refusal can name the member. */
	for (size_t i = 0; i < n; i++)
		HSM_ENSURE(pairs[i].key[0] != '\0', HSM_ERR_VALIDATION, "%s keys must not be empty",
		           member);
	return HSM_SUCCESS;
}

/* The caller frees ctx pairs that are not handed to the audit record. */
static void free_ctx(hsm_api_ctx *c, hsm_enc_ctx *ctx)
{
	if (ctx->pairs != c->audit.ctx)
		free((void *)(uintptr_t)ctx->pairs);
	ctx->pairs = NULL;
}

/*
 * An encryption algorithm member.  *not_offered is set to an algorithm AWS defines
 * that no key here takes (SM2PKE), for the handler to refuse once it has the key
 * (hsm_kms_refuse_algorithm); *has stays false then.
 */
static hsm_result read_enc_alg(hsm_api_ctx *c, const char *member, bool *has, hsm_enc_alg *alg,
                               const char **not_offered)
{
	const char *name = NULL;
	HSM_GUARD(hsm_json_str(c->req, member, false, 1, 64, &name));
	*has = false;
	*not_offered = NULL;
	if (name == NULL)
		return HSM_SUCCESS;
	hsm_result parsed = hsm_enc_alg_parse(name, alg);
	if (parsed.err == HSM_ERR_UNSUPPORTED_OPERATION) {
		*not_offered = name;
		return HSM_SUCCESS;
	}
	/* Refused under the member's own name (ReEncrypt has two). */
	HSM_ENSURE(hsm_ok(parsed), HSM_ERR_VALIDATION, "%s '%.64s' is not supported", member, name);
	*has = true;
	c->audit.algorithm = hsm_enc_alg_name(*alg);
	return HSM_SUCCESS;
}

/*
 * A not offered algorithm is an asymmetric one: its ciphertexts name no key, so the
 * request must (key_member), and that key refuses it.
 */
static hsm_result refuse_enc_alg(hsm_api_ctx *c, hsm_op op, const char *action,
                                 const char *key_member, const char *key, const char *member,
                                 const char *name)
{
	HSM_ENSURE(key != NULL, HSM_ERR_VALIDATION, "%s is required to decrypt with an asymmetric key",
	           key_member);
	return hsm_kms_refuse_algorithm(c->kms, c->caller, op, action, key, member, name, NULL);
}

/*
 * DryRunModifiers (Decrypt, ReEncrypt): IGNORE_CIPHERTEXT is the one there is;
 * then CiphertextBlob, required except in a dry run that ignores it (KMS:
 * "required in all cases except when DryRun is true and DryRunModifiers is set
 * to IGNORE_CIPHERTEXT").
 */
static hsm_result read_ciphertext(hsm_api_ctx *c, hsm_buf *ct, bool *ignore_ciphertext)
{
	const char **mods = NULL;
	size_t n = 0;
	HSM_GUARD(hsm_json_string_list(c->req, "DryRunModifiers", false, 8, &mods, &n));
	hsm_result r = HSM_SUCCESS;
	for (size_t i = 0; i < n && hsm_ok(r); i++) {
		if (strcmp(mods[i], "IGNORE_CIPHERTEXT") == 0)
			*ignore_ciphertext = true;
		else
			r = HSM_FAIL(HSM_ERR_VALIDATION,
			             "DryRunModifiers: '%.64s' is not one of [IGNORE_CIPHERTEXT]", mods[i]);
	}
	free(mods);
	HSM_GUARD(r);
	bool present;
	return hsm_json_blob(c->req, "CiphertextBlob", !(c->caller->dry_run && *ignore_ciphertext),
	                     1, HSM_MAX_CIPHERTEXT_BLOB, ct, &present);
}

hsm_result hsm_api_encrypt(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	hsm_encrypt_req req = {0};
	hsm_buf pt, ct = {0};
	hsm_used_key used;
	bool present;
	const char *not_offered;
	hsm_buf_init_secure(&pt);
	HSM_TRY(hsm_api_key_id(c, "KeyId", &req.key));
	HSM_TRY(hsm_json_blob(c->req, "Plaintext", true, 1, HSM_MAX_PLAINTEXT, &pt, &present));
	HSM_TRY(read_ctx(c, "EncryptionContext", &req.ctx, true));
	HSM_TRY(read_enc_alg(c, "EncryptionAlgorithm", &req.has_alg, &req.alg, &not_offered));
	if (not_offered != NULL)
		HSM_TRY(hsm_kms_refuse_algorithm(c->kms, c->caller, HSM_OP_Encrypt, NULL, req.key,
		                                 "EncryptionAlgorithm", not_offered, NULL));
	req.plaintext = pt.data;
	req.plaintext_len = pt.len;
	HSM_TRY(hsm_kms_encrypt(c->kms, c->caller, &req, &ct, &used));
	hsm_api_note_key(c, &used);
	hsm_jw_b64(c->w, "CiphertextBlob", ct.data, ct.len);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_str(c->w, "EncryptionAlgorithm",
	           hsm_enc_alg_name(req.has_alg ? req.alg : HSM_ENC_SYMMETRIC_DEFAULT));
out:
	hsm_buf_free(&pt);
	hsm_buf_free(&ct);
	return res;
}

/*
 * A Decrypt or ReEncrypt that failed: the key its symmetric ciphertext's
 * header names goes into out (for the audit record) when the header parses,
 * as CloudTrail attributes a failed Decrypt to its key, so the key's trail
 * shows the failed attempts on its ciphertexts.  The auditors read the
 * record, not the caller.  The request's own error is kept for its answer.
 */
static void note_ciphertext_key(const hsm_buf *ct, bool symmetric, char out[HSM_UUID_STRLEN + 1])
{
	if (!symmetric || ct->data == NULL || out[0] != '\0')
		return;
	hsm_error_info failure = *hsm_last_error();
	hsm_blob blob;
	if (hsm_ok(hsm_blob_parse(ct->data, ct->len, &blob)))
		memcpy(out, blob.key_id, HSM_UUID_STRLEN + 1);
	else /* the parse's own failure replaced the request's: put that back */
		hsm_error_restore(&failure);
}

hsm_result hsm_api_decrypt(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	hsm_decrypt_req req = {0};
	hsm_buf ct = {0}, pt;
	hsm_used_key used;
	hsm_enc_alg alg;
	const char *not_offered = NULL;
	hsm_buf_init_secure(&pt);
	HSM_TRY(read_ciphertext(c, &ct, &req.ignore_ciphertext));
	HSM_TRY(hsm_json_str(c->req, "KeyId", false, 1, HSM_KEYID_MAX, &req.key));
	HSM_TRY(hsm_api_refuse_recipient(c, "Plaintext", HSM_ERR_VALIDATION));
	HSM_TRY(read_ctx(c, "EncryptionContext", &req.ctx, true));
	HSM_TRY(read_enc_alg(c, "EncryptionAlgorithm", &req.has_alg, &req.alg, &not_offered));
	if (not_offered != NULL)
		HSM_TRY(refuse_enc_alg(c, HSM_OP_Decrypt, NULL, "KeyId", req.key, "EncryptionAlgorithm",
		                       not_offered));
	req.ciphertext = ct.data;
	req.ciphertext_len = ct.len;
	HSM_TRY(hsm_kms_decrypt(c->kms, c->caller, &req, &pt, &used, &alg));
	hsm_api_note_key(c, &used);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_b64(c->w, "Plaintext", pt.data, pt.len);
	hsm_jw_str(c->w, "EncryptionAlgorithm", hsm_enc_alg_name(alg));
	hsm_api_write_material_id(c, "KeyMaterialId", &used);
out:
	if (hsm_failed(res) && not_offered != NULL)
		hsm_api_note_ref(c, req.key); /* the key that refused, not the ciphertext's */
	if (hsm_failed(res))
		note_ciphertext_key(&ct, !req.has_alg || req.alg == HSM_ENC_SYMMETRIC_DEFAULT,
		                    c->audit.key_id);
	hsm_buf_free(&ct);
	hsm_buf_free(&pt);
	return res;
}

hsm_result hsm_api_reencrypt(hsm_api_ctx *c)
{
	hsm_result res = HSM_SUCCESS;
	hsm_reencrypt_req req = {0};
	hsm_buf ct = {0}, out_ct = {0};
	hsm_used_key src, dst;
	hsm_enc_alg src_alg, dst_alg;
	const char *src_not_offered, *dst_not_offered;
	HSM_TRY(read_ciphertext(c, &ct, &req.source.ignore_ciphertext));
	HSM_TRY(hsm_json_str(c->req, "SourceKeyId", false, 1, HSM_KEYID_MAX, &req.source.key));
	HSM_TRY(hsm_api_key_id(c, "DestinationKeyId", &req.dest_key));
	HSM_TRY(read_ctx(c, "SourceEncryptionContext", &req.source.ctx, true));
	HSM_TRY(read_ctx(c, "DestinationEncryptionContext", &req.dest_ctx, false));
	HSM_TRY(read_enc_alg(c, "SourceEncryptionAlgorithm", &req.source.has_alg, &req.source.alg,
	                     &src_not_offered));
	HSM_TRY(read_enc_alg(c, "DestinationEncryptionAlgorithm", &req.has_dest_alg, &req.dest_alg,
	                     &dst_not_offered));
	if (src_not_offered != NULL)
		HSM_TRY(refuse_enc_alg(c, HSM_OP_ReEncrypt, "kms:ReEncryptFrom", "SourceKeyId",
		                       req.source.key, "SourceEncryptionAlgorithm", src_not_offered));
	if (dst_not_offered != NULL)
		HSM_TRY(hsm_kms_refuse_algorithm(c->kms, c->caller, HSM_OP_ReEncrypt, "kms:ReEncryptTo",
		                                 req.dest_key, "DestinationEncryptionAlgorithm",
		                                 dst_not_offered, NULL));
	req.source.ciphertext = ct.data;
	req.source.ciphertext_len = ct.len;
	HSM_TRY(hsm_kms_reencrypt(c->kms, c->caller, &req, &out_ct, &src, &src_alg, &dst, &dst_alg));
	hsm_api_note_key(c, &dst);
	memcpy(c->audit.source_key_id, src.key_id, sizeof(c->audit.source_key_id));
	hsm_jw_b64(c->w, "CiphertextBlob", out_ct.data, out_ct.len);
	hsm_api_write_key_arn(c, "SourceKeyId", src.key_id);
	hsm_api_write_key_arn(c, "KeyId", dst.key_id);
	hsm_jw_str(c->w, "SourceEncryptionAlgorithm", hsm_enc_alg_name(src_alg));
	hsm_jw_str(c->w, "DestinationEncryptionAlgorithm", hsm_enc_alg_name(dst_alg));
	hsm_api_write_material_id(c, "SourceKeyMaterialId", &src);
	hsm_api_write_material_id(c, "DestinationKeyMaterialId", &dst);
out:
	if (hsm_failed(res)) {
		note_ciphertext_key(&ct,
		                    !req.source.has_alg || req.source.alg == HSM_ENC_SYMMETRIC_DEFAULT,
		                    c->audit.source_key_id);
		/* A request that fails still records the key it named: its destination. */
		if (c->audit.key_id[0] == '\0')
			hsm_api_note_ref(c, req.dest_key);
	}
	free_ctx(c, &req.dest_ctx);
	hsm_buf_free(&ct);
	hsm_buf_free(&out_ct);
	return res;
}

/* KeySpec (AES_128/AES_256) or NumberOfBytes: exactly one (GenerateDataKey). */
static hsm_result data_key_size(hsm_api_ctx *c, size_t *n)
{
	const char *spec = NULL;
	int64_t bytes = 0;
	bool present;
	HSM_GUARD(hsm_json_str(c->req, "KeySpec", false, 1, 16, &spec));
	HSM_GUARD(hsm_json_int(c->req, "NumberOfBytes", false, 1, HSM_MAX_DATA_KEY_BYTES, &bytes,
	                       &present));
	HSM_ENSURE(spec == NULL || !present, HSM_ERR_VALIDATION,
	           "Specify either KeySpec or NumberOfBytes, not both");
	HSM_ENSURE(spec != NULL || present, HSM_ERR_VALIDATION,
	           "Please specify either number of bytes or key spec.");
	if (present) {
		*n = (size_t)bytes;
		return HSM_SUCCESS;
	}
	if (strcmp(spec, "AES_256") == 0)
		*n = 32;
	else if (strcmp(spec, "AES_128") == 0)
		*n = 16;
	else
		return HSM_FAIL(HSM_ERR_VALIDATION, "KeySpec must be AES_128 or AES_256");
	return HSM_SUCCESS;
}

static hsm_result data_key(hsm_api_ctx *c, bool with_plaintext)
{
	hsm_result res = HSM_SUCCESS;
	const char *key;
	size_t n = 0;
	hsm_enc_ctx ctx = {0};
	hsm_buf pt, ct = {0};
	hsm_used_key used;
	hsm_buf_init_secure(&pt);
	HSM_TRY(hsm_api_key_id(c, "KeyId", &key));
	HSM_TRY(data_key_size(c, &n));
	HSM_TRY(read_ctx(c, "EncryptionContext", &ctx, true));
	/* ValidationException: GenerateDataKey declares no UnsupportedOperationException. */
	if (with_plaintext)
		HSM_TRY(hsm_api_refuse_recipient(c, "Plaintext", HSM_ERR_VALIDATION));
	HSM_TRY(hsm_kms_generate_data_key(c->kms, c->caller, key, n, &ctx,
	                                  with_plaintext ? &pt : NULL, &ct, &used));
	hsm_api_note_key(c, &used);
	hsm_jw_b64(c->w, "CiphertextBlob", ct.data, ct.len);
	if (with_plaintext)
		hsm_jw_b64(c->w, "Plaintext", pt.data, pt.len);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_api_write_material_id(c, "KeyMaterialId", &used);
out:
	hsm_buf_free(&pt);
	hsm_buf_free(&ct);
	return res;
}

hsm_result hsm_api_generate_data_key(hsm_api_ctx *c)
{
	return data_key(c, true);
}

hsm_result hsm_api_generate_data_key_without_plaintext(hsm_api_ctx *c)
{
	return data_key(c, false);
}

static hsm_result data_key_pair(hsm_api_ctx *c, bool with_plaintext)
{
	hsm_result res = HSM_SUCCESS;
	const char *key, *spec_name;
	hsm_key_spec spec;
	hsm_enc_ctx ctx = {0};
	hsm_buf priv, blob = {0}, pub = {0};
	hsm_used_key used;
	hsm_buf_init_secure(&priv);
	HSM_TRY(hsm_api_key_id(c, "KeyId", &key));
	HSM_TRY(hsm_json_str(c->req, "KeyPairSpec", true, 1, 64, &spec_name));
	HSM_TRY(hsm_spec_parse_member("KeyPairSpec", spec_name, &spec));
	HSM_TRY(read_ctx(c, "EncryptionContext", &ctx, true));
	if (with_plaintext)
		HSM_TRY(hsm_api_refuse_recipient(c, "PrivateKeyPlaintext",
		                                 HSM_ERR_UNSUPPORTED_OPERATION));
	HSM_TRY(hsm_kms_generate_data_key_pair(c->kms, c->caller, key, spec, &ctx,
	                                       with_plaintext ? &priv : NULL, &blob, &pub, &used));
	hsm_api_note_key(c, &used);
	hsm_jw_b64(c->w, "PrivateKeyCiphertextBlob", blob.data, blob.len);
	if (with_plaintext)
		hsm_jw_b64(c->w, "PrivateKeyPlaintext", priv.data, priv.len);
	hsm_jw_b64(c->w, "PublicKey", pub.data, pub.len);
	hsm_api_write_key_arn(c, "KeyId", used.key_id);
	hsm_jw_str(c->w, "KeyPairSpec", hsm_spec_name(spec));
	hsm_api_write_material_id(c, "KeyMaterialId", &used);
out:
	hsm_buf_free(&priv);
	hsm_buf_free(&blob);
	hsm_buf_free(&pub);
	return res;
}

hsm_result hsm_api_generate_data_key_pair(hsm_api_ctx *c)
{
	return data_key_pair(c, true);
}

hsm_result hsm_api_generate_data_key_pair_without_plaintext(hsm_api_ctx *c)
{
	return data_key_pair(c, false);
}

hsm_result hsm_api_generate_random(hsm_api_ctx *c)
{
	int64_t n = 0;
	bool present;
	hsm_buf out;
	const char *store = NULL;
	HSM_GUARD(hsm_json_str(c->req, "CustomKeyStoreId", false, 1, 64, &store));
	HSM_ENSURE(store == NULL, HSM_ERR_CUSTOM_KEY_STORE_NOT_FOUND,
	           "that custom key store does not exist: hsmd holds its keys itself and has no "
	           "custom key stores");
	HSM_GUARD(hsm_api_refuse_recipient(c, "Plaintext", HSM_ERR_UNSUPPORTED_OPERATION));
	HSM_GUARD(hsm_json_int(c->req, "NumberOfBytes", true, 1, HSM_MAX_RANDOM, &n, &present));
	hsm_buf_init_secure(&out);
	hsm_result r = hsm_kms_generate_random(c->kms, c->caller, (size_t)n, &out);
	if (hsm_ok(r))
		hsm_jw_b64(c->w, "Plaintext", out.data, out.len);
	hsm_buf_free(&out);
	return r;
}
