/*
 * crypt.c - Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext),
 * GenerateDataKeyPair(WithoutPlaintext), GenerateRandom.
 *
 * Symmetric keys produce self-describing blobs (crypto/blob.h), so Decrypt
 * needs no KeyId; RSA keys use RSAES-OAEP and need KeyId and algorithm, as
 * in KMS.  Encryption context is authenticated (AAD), never stored.
 */
#include <string.h>

#include "kms/kms_internal.h"

#define CTX_MAX_BYTES 8192

hsm_result kms_canonical_ctx(const hsm_enc_ctx *ctx, hsm_buf *out)
{
	size_t total = 0;
	for (size_t i = 0; i < ctx->n; i++) {
		HSM_ENSURE(ctx->pairs[i].key[0] != '\0', HSM_ERR_VALIDATION,
		           "EncryptionContext keys must not be empty");
		total += strlen(ctx->pairs[i].key) + strlen(ctx->pairs[i].value);
	}
	HSM_ENSURE(total <= CTX_MAX_BYTES, HSM_ERR_VALIDATION,
	           "EncryptionContext must be at most %d bytes", CTX_MAX_BYTES);
	return hsm_enc_ctx_canonical(ctx->pairs, ctx->n, out);
}

/* kms_canonical_ctx's checks alone, for a request that stops before it would use the context. */
static hsm_result check_ctx(const hsm_enc_ctx *ctx)
{
	hsm_buf canon = {0};
	hsm_result r = kms_canonical_ctx(ctx, &canon);
	hsm_buf_free(&canon);
	return r;
}

static hsm_result require_usage(const kms_key *k, hsm_key_usage usage)
{
	HSM_ENSURE(k->rec.usage == usage, HSM_ERR_INVALID_KEY_USAGE,
	           "%s key usage is %s, which is not valid for this operation", k->arn,
	           hsm_usage_name(k->rec.usage));
	return HSM_SUCCESS;
}

static hsm_result require_enc_alg(const kms_key *k, hsm_enc_alg alg)
{
	HSM_GUARD(require_usage(k, HSM_USAGE_ENCRYPT_DECRYPT));
	HSM_ENSURE(hsm_spec_allows_enc_alg(k->rec.spec, k->rec.usage, alg), HSM_ERR_INVALID_KEY_USAGE,
	           "EncryptionAlgorithm %s is not valid for %s (KeySpec %s)", hsm_enc_alg_name(alg),
	           k->arn, hsm_spec_name(k->rec.spec));
	return HSM_SUCCESS;
}

/*
 * RSA encryption binds no context: one given to an RSA key would protect
 * nothing, so it is refused rather than ignored, on the way in and out.
 */
static hsm_result require_no_ctx(const hsm_enc_ctx *ctx)
{
	HSM_ENSURE(ctx->n == 0, HSM_ERR_VALIDATION,
	           "EncryptionContext is not supported with asymmetric KMS keys");
	return HSM_SUCCESS;
}

hsm_result hsm_kms_refuse_algorithm(hsm_kms *kms, const hsm_caller *caller, hsm_op op,
                                    const char *action, const char *ref, const char *member,
                                    const char *name, const char *message_type)
{
	kms_key *k = NULL;
	hsm_policy_pair cond = {"kms:MessageType", message_type};
	kms_authz_extra extra = {.action = action, .more = &cond, .n_more = message_type != NULL};
	if (strcmp(member, "SigningAlgorithm") == 0)
		extra.signing_algorithm = name;
	else
		extra.encryption_algorithm = name;
	HSM_GUARD(kms_lookup(kms, caller, op, ref, &extra, &k));
	hsm_result r = HSM_FAIL(HSM_ERR_INVALID_KEY_USAGE, "%s %s is not valid for %s (KeySpec %s)",
	                        member, name, k->arn, hsm_spec_name(k->rec.spec));
	kms_key_release(k);
	return r;
}

/* The default algorithm is SYMMETRIC_DEFAULT, which asymmetric keys refuse. */
static hsm_enc_alg alg_or_default(bool has, hsm_enc_alg alg)
{
	return has ? alg : HSM_ENC_SYMMETRIC_DEFAULT;
}

/*
 * Encrypts with the primary version of an already authorized key.  Under
 * DryRun it stops before encrypting, or, when there is no plaintext (ReEncrypt
 * whose ciphertext was not opened), once every check that does not depend on
 * the plaintext passed: the key's, the algorithm's and the context's.
 */
static hsm_result encrypt_with(hsm_kms *kms, const hsm_caller *caller, const kms_key *k,
                               hsm_enc_alg alg, const hsm_enc_ctx *ctx, const uint8_t *pt,
                               size_t n, bool reencrypt, hsm_buf *out, hsm_used_key *used)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf canon = {0};
	HSM_GUARD(require_enc_alg(k, alg));
	if (alg == HSM_ENC_SYMMETRIC_DEFAULT)
		HSM_TRY(kms_canonical_ctx(ctx, &canon));
	else
		HSM_TRY(require_no_ctx(ctx));
	if (n == 0)
		HSM_TRY(kms_dry_run_stop(caller));
	/* ReEncrypt's plaintext is the source ciphertext's, which the caller never sees: its
	 * refusal names the destination's limit, not the plaintext's length. */
	HSM_CHECK(!reencrypt || (n >= 1 && n <= HSM_MAX_PLAINTEXT), HSM_ERR_VALIDATION,
	          "the source ciphertext's plaintext is %s; DestinationKeyId takes 1 to %d bytes",
	          n == 0 ? "empty" : "too long", HSM_MAX_PLAINTEXT);
	HSM_CHECK(n >= 1 && n <= HSM_MAX_PLAINTEXT, HSM_ERR_VALIDATION,
	          "Plaintext must be between 1 and %d bytes", HSM_MAX_PLAINTEXT);
	hsm_ks_keyref ref = kms_keyref(k, k->rec.primary_version);
	if (alg == HSM_ENC_SYMMETRIC_DEFAULT) {
		HSM_TRY(kms_dry_run_stop(caller));
		HSM_TRY(hsm_ks_encrypt(kms->ks, &ref, &canon, pt, n, out));
	} else {
		size_t max = hsm_rsa_oaep_max_plaintext(k->rec.spec, alg);
		HSM_CHECK(!reencrypt || n <= max, HSM_ERR_VALIDATION,
		          "the source ciphertext's plaintext is longer than %s with %s takes (at most "
		          "%zu bytes)",
		          hsm_spec_name(k->rec.spec), hsm_enc_alg_name(alg), max);
		HSM_CHECK(n <= max, HSM_ERR_VALIDATION,
		          "Plaintext is %zu bytes; %s with %s takes at most %zu", n,
		          hsm_spec_name(k->rec.spec), hsm_enc_alg_name(alg), max);
		HSM_TRY(kms_dry_run_stop(caller));
		HSM_TRY(hsm_ks_rsa_encrypt(kms->ks, &ref, alg, pt, n, out));
	}
	kms_used(k, ref.version, used);
out:
	hsm_buf_free(&canon);
	return res;
}

hsm_result hsm_kms_encrypt(hsm_kms *kms, const hsm_caller *caller, const hsm_encrypt_req *req,
                           hsm_buf *ciphertext, hsm_used_key *used)
{
	kms_key *k = NULL;
	hsm_enc_alg alg = alg_or_default(req->has_alg, req->alg);
	kms_authz_extra extra = {.ctx = &req->ctx, .encryption_algorithm = hsm_enc_alg_name(alg)};
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_Encrypt, req->key, &extra, &k));
	hsm_result r = encrypt_with(kms, caller, k, alg, &req->ctx, req->plaintext,
	                            req->plaintext_len, false, ciphertext, used);
	kms_key_release(k);
	return r;
}

/* Decrypts a symmetric blob with the version it names. */
static hsm_result decrypt_blob(hsm_kms *kms, const kms_key *k, const hsm_blob *blob,
                               const hsm_enc_ctx *ctx, hsm_buf *pt, hsm_used_key *used)
{
	hsm_buf canon = {0};
	HSM_ENSURE(blob->key_version >= 1 && blob->key_version <= k->rec.primary_version,
	           HSM_ERR_INVALID_CIPHERTEXT, "The ciphertext is not valid for this key");
	hsm_result r = kms_canonical_ctx(ctx, &canon);
	if (hsm_ok(r)) {
		hsm_ks_keyref ref = kms_keyref(k, blob->key_version);
		r = hsm_ks_decrypt(kms->ks, &ref, blob, &canon, pt);
	}
	hsm_buf_free(&canon);
	if (hsm_ok(r))
		kms_used(k, blob->key_version, used);
	return r;
}

/*
 * RSA ciphertexts do not name their version: newest first, down to the one
 * above `tried` (those were tried already), one uniform failure.
 */
static hsm_result decrypt_rsa(hsm_kms *kms, const kms_key *k, hsm_enc_alg alg, const uint8_t *ct,
                              size_t n, uint32_t tried, hsm_buf *pt, hsm_used_key *used)
{
	for (uint32_t v = k->rec.primary_version; v > tried; v--) {
		hsm_ks_keyref ref = kms_keyref(k, v);
		hsm_result r = hsm_ks_rsa_decrypt(kms->ks, &ref, alg, ct, n, pt);
		if (hsm_ok(r)) {
			kms_used(k, v, used);
			return r;
		}
		if (r.err != HSM_ERR_INVALID_CIPHERTEXT)
			return r;
		hsm_buf_clear(pt);
	}
	return HSM_FAIL(HSM_ERR_INVALID_CIPHERTEXT, "The ciphertext is not valid for this key");
}

/*
 * A ciphertext none of k's versions opens may come from a version another
 * node sharing the store made since this node cached k (a rotation of a
 * moment ago): the key is read again, once, and looked up as it was (ref,
 * extra), so its state and policy are checked anew.  *k is the newer
 * snapshot, or unchanged when the store has nothing newer; NULL on failure.
 * Refused requests pay that store read, the others nothing.
 */
static hsm_result lookup_newer(hsm_kms *kms, const hsm_caller *caller, hsm_op op,
                               const char *ref, const kms_authz_extra *extra, kms_key **k)
{
	bool moved = false;
	HSM_GUARD(kms_key_moved(kms, k, &moved));
	return moved ? kms_lookup(kms, caller, op, ref, extra, k) : HSM_SUCCESS;
}

/*
 * ReEncrypt's kms:ReEncryptOnSameKey for a lookup of the key ref names:
 * whether it is the destination key (dest_id; NULL: not a ReEncrypt, or
 * its destination does not resolve and the request fails there).
 */
static void same_key(hsm_kms *kms, const char *dest_id, const char *ref, hsm_policy_pair *pair,
                     kms_authz_extra *extra)
{
	if (dest_id == NULL)
		return;
	char id[HSM_UUID_STRLEN + 1];
	bool same = hsm_ok(hsm_kms_resolve(kms, ref, id)) && strcmp(id, dest_id) == 0;
	*pair = (hsm_policy_pair){"kms:ReEncryptOnSameKey", same ? "true" : "false"};
	extra->more = pair;
	extra->n_more = 1;
}

/*
 * For a ciphertext that is no hsmd ciphertext this node can open: the key
 * KeyId (ref) names, authorized; if it is an RSA key, the algorithm
 * (SYMMETRIC_DEFAULT) is what is wrong, and that is the answer.
 */
static hsm_result named_key_fits(hsm_kms *kms, const hsm_caller *caller, hsm_op op,
                                 const char *dest_id, const char *ref, hsm_enc_alg alg,
                                 hsm_policy_pair *same, kms_authz_extra *extra)
{
	kms_key *k = NULL;
	same_key(kms, dest_id, ref, same, extra);
	HSM_GUARD(kms_lookup(kms, caller, op, ref, extra, &k));
	hsm_result r = require_enc_alg(k, alg);
	kms_key_release(k);
	return r;
}

/*
 * Decrypt's core, shared with ReEncrypt (which authorizes as kms:ReEncryptFrom).
 * Under DryRun the ciphertext is still opened, as the check that it is valid,
 * unless the request said IGNORE_CIPHERTEXT: then pt stays empty.
 */
static hsm_result decrypt_any(hsm_kms *kms, const hsm_caller *caller, hsm_op op,
                              const char *action, const char *dest_id,
                              const hsm_decrypt_req *req, hsm_buf *pt, hsm_used_key *used,
                              hsm_enc_alg *alg_used)
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	hsm_blob blob;
	hsm_enc_alg alg = alg_or_default(req->has_alg, req->alg);
	hsm_policy_pair same;
	kms_authz_extra extra = {
	    .action = action, .ctx = &req->ctx, .encryption_algorithm = hsm_enc_alg_name(alg)};
	bool skip = caller->dry_run && req->ignore_ciphertext;
	bool has_key = req->key != NULL && *req->key != '\0';
	if (skip && req->ciphertext_len == 0) /* no ciphertext: the key is the one named */
		HSM_ENSURE(has_key, HSM_ERR_VALIDATION,
		           "A dry run that ignores the ciphertext and gives none needs %s",
		           action != NULL ? "SourceKeyId" : "KeyId");
	else
		HSM_ENSURE(req->ciphertext_len >= 1 && req->ciphertext_len <= HSM_MAX_CIPHERTEXT_BLOB,
		           HSM_ERR_VALIDATION, "CiphertextBlob must be between 1 and %d bytes",
		           HSM_MAX_CIPHERTEXT_BLOB);
	bool symmetric = alg == HSM_ENC_SYMMETRIC_DEFAULT;
	if (symmetric && skip && req->key != NULL && *req->key != '\0') {
		same_key(kms, dest_id, req->key, &same, &extra);
		HSM_GUARD(kms_lookup(kms, caller, op, req->key, &extra, &k));
	} else if (symmetric) {
		bool has_key_id = req->key != NULL && *req->key != '\0';
		hsm_result parsed = hsm_blob_parse(req->ciphertext, req->ciphertext_len, &blob);
		if (hsm_failed(parsed) && has_key_id)
			HSM_GUARD(named_key_fits(kms, caller, op, dest_id, req->key, alg, &same, &extra));
		HSM_GUARD(parsed);
		if (has_key_id) {
			/* KMS uses only the key KeyId names: a ciphertext of another (existing) key
			 * is IncorrectKeyException, whatever that other key's state or policy,
			 * once the named key passed its own checks (authorization, state). */
			char named[HSM_UUID_STRLEN + 1];
			HSM_GUARD(hsm_kms_resolve(kms, req->key, named));
			if (strcmp(named, blob.key_id) != 0) {
				kms_key *owner = NULL;
				bool exists = hsm_ok(kms_key_load(kms, blob.key_id, &owner)) &&
				              owner->rec.state != HSM_KEY_DESTROYED;
				kms_key_release(owner);
				if (exists) {
					kms_key *nk = NULL;
					same_key(kms, dest_id, req->key, &same, &extra);
					HSM_GUARD(kms_lookup(kms, caller, op, req->key, &extra, &nk));
					kms_key_release(nk);
					return HSM_FAIL(HSM_ERR_INCORRECT_KEY,
					                "The key ID in the request does not identify the key "
					                "that encrypted the ciphertext");
				}
			}
		}
		same_key(kms, dest_id, blob.key_id, &same, &extra);
		/* KeyId named by an alias: kms:RequestAlias, as on every other operation.  A KeyId
		 * naming another key than the blob's was refused above, before anything opens. */
		if (has_key_id)
			extra.request_alias = kms_ref_alias(kms, req->key);
		res = kms_lookup(kms, caller, op, blob.key_id, &extra, &k);
		if (res.err == HSM_ERR_NOT_FOUND) {
			/* A made-up or altered key id in the blob, or an RSA ciphertext that parses as
			 * a blob (about one in 256): answered as any other RSA ciphertext is. */
			if (has_key_id)
				HSM_GUARD(named_key_fits(kms, caller, op, dest_id, req->key, alg, &same,
				                         &extra));
			return HSM_FAIL(HSM_ERR_INVALID_CIPHERTEXT, "The ciphertext is not valid");
		}
		HSM_GUARD(res);
	} else {
		HSM_ENSURE(req->key != NULL && *req->key != '\0', HSM_ERR_VALIDATION,
		           "%s is required to decrypt with an asymmetric key",
		           action != NULL ? "SourceKeyId" : "KeyId");
		same_key(kms, dest_id, req->key, &same, &extra);
		HSM_GUARD(kms_lookup(kms, caller, op, req->key, &extra, &k));
	}
	HSM_TRY(require_enc_alg(k, alg));
	if (!symmetric)
		HSM_TRY(require_no_ctx(&req->ctx));
	if (skip) {
		/* The context is checked as opening the ciphertext would check it. */
		if (symmetric)
			HSM_TRY(check_ctx(&req->ctx));
		kms_used(k, k->rec.primary_version, used);
	} else if (symmetric) {
		/* A version above the primary this node knows: perhaps just rotated in elsewhere. */
		if (blob.key_version > k->rec.primary_version)
			HSM_TRY(lookup_newer(kms, caller, op, blob.key_id, &extra, &k));
		HSM_TRY(decrypt_blob(kms, k, &blob, &req->ctx, pt, used));
	} else {
		uint32_t tried = k->rec.primary_version;
		res = decrypt_rsa(kms, k, alg, req->ciphertext, req->ciphertext_len, 0, pt, used);
		if (res.err == HSM_ERR_INVALID_CIPHERTEXT) {
			HSM_TRY(lookup_newer(kms, caller, op, req->key, &extra, &k));
			res = decrypt_rsa(kms, k, alg, req->ciphertext, req->ciphertext_len, tried, pt,
			                  used);
		}
		if (hsm_failed(res))
			goto out;
	}
	*alg_used = alg;
out:
	kms_key_release(k);
	return res;
}

hsm_result hsm_kms_decrypt(hsm_kms *kms, const hsm_caller *caller, const hsm_decrypt_req *req,
                           hsm_buf *plaintext, hsm_used_key *used, hsm_enc_alg *alg_used)
{
	HSM_GUARD(
	    decrypt_any(kms, caller, HSM_OP_Decrypt, NULL, NULL, req, plaintext, used, alg_used));
	if (caller->dry_run)
		hsm_buf_clear(plaintext);
	return kms_dry_run_stop(caller);
}

hsm_result hsm_kms_reencrypt(hsm_kms *kms, const hsm_caller *caller,
                             const hsm_reencrypt_req *req, hsm_buf *ciphertext,
                             hsm_used_key *source, hsm_enc_alg *source_alg, hsm_used_key *dest,
                             hsm_enc_alg *dest_alg)
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	hsm_buf pt;
	hsm_buf_init_secure(&pt);
	hsm_enc_alg alg = alg_or_default(req->has_dest_alg, req->dest_alg);
	kms_authz_extra extra = {.action = "kms:ReEncryptTo",
	                         .ctx = &req->dest_ctx,
	                         .encryption_algorithm = hsm_enc_alg_name(alg)};
	HSM_ENSURE(req->dest_key != NULL && *req->dest_key != '\0', HSM_ERR_VALIDATION,
	           "DestinationKeyId is required");
	char dest_id[HSM_UUID_STRLEN + 1];
	bool dest_known = hsm_ok(hsm_kms_resolve(kms, req->dest_key, dest_id));
	HSM_TRY(decrypt_any(kms, caller, HSM_OP_ReEncrypt, "kms:ReEncryptFrom",
	                    dest_known ? dest_id : NULL, &req->source, &pt, source, source_alg));
	hsm_policy_pair same = {"kms:ReEncryptOnSameKey",
	                        dest_known && strcmp(source->key_id, dest_id) == 0 ? "true" : "false"};
	extra.more = &same;
	extra.n_more = 1;
	HSM_TRY(kms_lookup(kms, caller, HSM_OP_ReEncrypt, req->dest_key, &extra, &k));
	HSM_TRY(encrypt_with(kms, caller, k, alg, &req->dest_ctx, pt.data, pt.len, true, ciphertext,
	                     dest));
	*dest_alg = alg;
out:
	kms_key_release(k);
	hsm_buf_free(&pt);
	return res;
}

/* Data keys need a symmetric encryption key. */
static hsm_result data_key_target(hsm_kms *kms, const hsm_caller *caller, hsm_op op,
                                  const char *key, const hsm_enc_ctx *ctx,
                                  const hsm_policy_pair *cond, kms_key **out)
{
	kms_key *k = NULL;
	kms_authz_extra extra = {.ctx = ctx,
	                         .encryption_algorithm = "SYMMETRIC_DEFAULT",
	                         .more = cond,
	                         .n_more = cond != NULL};
	HSM_GUARD(kms_lookup(kms, caller, op, key, &extra, &k));
	hsm_result r = require_enc_alg(k, HSM_ENC_SYMMETRIC_DEFAULT);
	if (hsm_failed(r)) {
		kms_key_release(k);
		return r;
	}
	*out = k;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_generate_data_key(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                     size_t n_bytes, const hsm_enc_ctx *ctx, hsm_buf *plaintext,
                                     hsm_buf *ciphertext, hsm_used_key *used)
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	hsm_buf canon = {0};
	hsm_op op = plaintext != NULL ? HSM_OP_GenerateDataKey : HSM_OP_GenerateDataKeyWithoutPlaintext;
	HSM_ENSURE(n_bytes >= 1 && n_bytes <= HSM_MAX_DATA_KEY_BYTES, HSM_ERR_VALIDATION,
	           "NumberOfBytes must be between 1 and %d", HSM_MAX_DATA_KEY_BYTES);
	HSM_GUARD(data_key_target(kms, caller, op, key, ctx, NULL, &k));
	HSM_TRY(kms_canonical_ctx(ctx, &canon));
	HSM_TRY(kms_dry_run_stop(caller));
	hsm_ks_keyref ref = kms_keyref(k, k->rec.primary_version);
	HSM_TRY(hsm_ks_generate_data_key(kms->ks, &ref, &canon, n_bytes, plaintext, ciphertext));
	kms_used(k, ref.version, used);
out:
	hsm_buf_free(&canon);
	kms_key_release(k);
	return res;
}

hsm_result hsm_kms_generate_data_key_pair(hsm_kms *kms, const hsm_caller *caller,
                                          const char *key, hsm_key_spec pair_spec,
                                          const hsm_enc_ctx *ctx, hsm_buf *priv,
                                          hsm_buf *priv_blob, hsm_buf *pub, hsm_used_key *used)
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	hsm_buf canon = {0};
	hsm_op op = priv != NULL ? HSM_OP_GenerateDataKeyPair
	                         : HSM_OP_GenerateDataKeyPairWithoutPlaintext;
	HSM_ENSURE(hsm_spec_get(pair_spec)->data_key_pair, HSM_ERR_VALIDATION,
	           "KeyPairSpec %s is not supported", hsm_spec_name(pair_spec));
	hsm_policy_pair cond = {"kms:DataKeyPairSpec", hsm_spec_name(pair_spec)};
	HSM_GUARD(data_key_target(kms, caller, op, key, ctx, &cond, &k));
	HSM_TRY(kms_canonical_ctx(ctx, &canon));
	HSM_TRY(kms_dry_run_stop(caller));
	hsm_ks_keyref ref = kms_keyref(k, k->rec.primary_version);
	HSM_TRY(hsm_ks_generate_data_key_pair(kms->ks, &ref, &canon, pair_spec, priv, priv_blob, pub));
	kms_used(k, ref.version, used);
out:
	hsm_buf_free(&canon);
	kms_key_release(k);
	return res;
}

hsm_result hsm_kms_generate_random(hsm_kms *kms, const hsm_caller *caller, size_t n, hsm_buf *out)
{
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_GenerateRandom, NULL, NULL));
	return hsm_ks_random(kms->ks, n, out);
}
