/*
 * api.h - the KMS JSON API: handlers and the table that dispatches to them.
 *
 * One handler per operation, grouped by family in api_<family>.c.  A
 * handler reads its request members from c->req (json.h accessors), calls
 * one kms/ function with the authenticated caller, and writes the response
 * members with c->w (the dispatcher has opened the top-level object and
 * closes it).  On failure it just returns the error: the dispatcher renders
 * the KMS error body and discards anything written.  Handlers note what the
 * audit record needs (key, version, algorithm, encryption context) in
 * c->audit.  Handlers never see key material: they speak to kms/ only.
 */
#ifndef HSM_SERVER_API_H
#define HSM_SERVER_API_H

#include <jansson.h>

#include "kms/kms.h"
#include "server/json.h"
#include "server/marker.h"

/* Room for every role name, comma-separated. */
#define HSM_AUDIT_ROLES_MAX 96

/* What a request's audit record says beyond who, what and the outcome. */
typedef struct hsm_api_audit {
	char key_id[HSM_UUID_STRLEN + 1];
	uint32_t key_version;
	const char *algorithm;       /* static string or NULL */
	const char *message_type;    /* "RAW" / "DIGEST" or NULL */
	hsm_ctx_pair *ctx;           /* encryption context (hashed in the record); points into req */
	size_t n_ctx;
	char grant_id[HSM_GRANT_ID_LEN + 1]; /* the grant CreateGrant made, or Retire/RevokeGrant ended */
	char via_grant[HSM_GRANT_ID_LEN + 1]; /* the grant that allowed the request ("": none) */
	char source_via_grant[HSM_GRANT_ID_LEN + 1]; /* ReEncrypt: the one its source key's */
	char approval_id[HSM_APPROVAL_ID_LEN + 1]; /* the approval request involved ("": none) */
	char cert_id[HSM_UUID_STRLEN + 1]; /* the certificate imported, read or deleted ("": none) */
	char source_key_id[HSM_UUID_STRLEN + 1]; /* ReEncrypt's source key ("": none) */
	/* The user and access key an admin operation changed or named ("": none); never a secret. */
	char target_user[HSM_USER_NAME_MAX + 1];
	char target_roles[HSM_AUDIT_ROLES_MAX]; /* "crypto-officer,custodian" */
	char target_access_key_id[HSM_ACCESS_KEY_ID_LEN + 1];
	char share[200]; /* Unseal: the share given (hsm_unseal_progress.share) */
} hsm_api_audit;

typedef struct hsm_api_ctx {
	hsm_kms *kms;
	const hsm_caller *caller;
	json_t *req;
	hsm_jw *w;
	hsm_buf *out;          /* the response body the writer fills */
	bool secret_response;  /* set when out holds plaintext (a secure buffer) */
	hsm_api_audit audit;
} hsm_api_ctx;

typedef hsm_result (*hsm_api_handler)(hsm_api_ctx *c);

/*
 * Runs the handler of a KMS operation.  errno starts at 0, so that an ENOMEM
 * seen during the request means memory ran out in it (crypto_internal.h).
 */
hsm_result hsm_api_run(hsm_op op, hsm_api_ctx *c) HSM_MUST_CHECK;

/* Records the key and version an operation used (for the audit record). */
void hsm_api_note_key(hsm_api_ctx *c, const hsm_used_key *used);
/* Records the key a reference (id, ARN, alias) names, when it resolves. */
void hsm_api_note_ref(hsm_api_ctx *c, const char *ref);

/* Handlers, by family. */
hsm_result hsm_api_create_key(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_describe_key(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_get_key_last_usage(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_list_keys(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_describe_custom_key_stores(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_enable_key(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_disable_key(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_update_key_description(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_schedule_key_deletion(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_cancel_key_deletion(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_encrypt(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_decrypt(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_reencrypt(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_generate_data_key(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_generate_data_key_without_plaintext(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_generate_data_key_pair(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_generate_data_key_pair_without_plaintext(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_generate_random(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_sign(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_verify(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_generate_mac(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_verify_mac(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_get_public_key(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_enable_key_rotation(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_disable_key_rotation(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_get_key_rotation_status(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_rotate_key_on_demand(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_list_key_rotations(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_create_alias(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_update_alias(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_delete_alias(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_list_aliases(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_tag_resource(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_untag_resource(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_list_resource_tags(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_get_key_policy(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_put_key_policy(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_list_key_policies(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_create_grant(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_list_grants(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_list_retirable_grants(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_retire_grant(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_revoke_grant(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_derive_shared_secret(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_get_parameters_for_import(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_import_key_material(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_delete_imported_key_material(hsm_api_ctx *c) HSM_MUST_CHECK;
/* hsmd's token operations (api_jwt.c), served under X-Amz-Target HsmdJwt.<Op> only. */
hsm_result hsm_api_sign_token(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_enable_jwt_signing(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_disable_jwt_signing(hsm_api_ctx *c) HSM_MUST_CHECK;
bool hsm_api_is_jwt_op(hsm_op op);
/* hsmd's plain AES-GCM (X-Amz-Target HsmdCipher.<Op>), api_gcm.c. */
hsm_result hsm_api_gcm_encrypt(hsm_api_ctx *c) HSM_MUST_CHECK;
hsm_result hsm_api_gcm_decrypt(hsm_api_ctx *c) HSM_MUST_CHECK;
/* The key check value of an AES or HMAC key (HsmdCipher.GetKeyCheckValue), api_gcm.c. */
hsm_result hsm_api_get_key_check_value(hsm_api_ctx *c) HSM_MUST_CHECK;
bool hsm_api_is_cipher_op(hsm_op op);
/* hsmd's token operation (X-Amz-Target HsmdToken.<Op>): DescribeKeys, api_keys.c. */
hsm_result hsm_api_describe_keys(hsm_api_ctx *c) HSM_MUST_CHECK;
bool hsm_api_is_token_op(hsm_op op);

/* Shared request pieces. */
#define HSM_KEYID_MAX 2048
/* The required KeyId member (1-2048 characters). */
hsm_result hsm_api_key_id(hsm_api_ctx *c, const char *member, const char **out) HSM_MUST_CHECK;
/* Limit (1..max, default def) and Marker (1..1024 characters, optional). */
hsm_result hsm_api_paging(hsm_api_ctx *c, int64_t max, int64_t def, size_t *limit,
                          const char **marker) HSM_MUST_CHECK;
/*
 * The position a listing's Marker holds (marker.h), for the listing kind
 * limited to the key ref names (NULL: to none), into *position (emptied
 * when marker is NULL; the caller frees it): InvalidMarkerException when
 * another listing, or this one for another key, issued it, or hsmd did not.
 */
hsm_result hsm_api_marker_position(hsm_api_ctx *c, hsm_marker_kind kind, const char *ref,
                                   const char *marker, hsm_buf *position) HSM_MUST_CHECK;
/* Writes NextMarker: the marker of that listing going on after position. */
hsm_result hsm_api_write_next_marker(hsm_api_ctx *c, hsm_marker_kind kind, const char *ref,
                                     const char *position) HSM_MUST_CHECK;
/*
 * Refuses Recipient (an AWS Nitro Enclaves or NitroTPM attestation document,
 * for the secret to come back encrypted to the enclave's key as
 * CiphertextForRecipient), which has no meaning outside AWS: ignoring it would
 * answer in the clear the secret (named by answer) the caller asked to receive
 * encrypted.  refusal is the error: UnsupportedOperationException where the
 * operation declares it, ValidationException for Decrypt and
 * DeriveSharedSecret, which do not.  A Recipient that is not a structure is
 * a SerializationException.
 */
hsm_result hsm_api_refuse_recipient(hsm_api_ctx *c, const char *answer,
                                    hsm_err refusal) HSM_MUST_CHECK;
/*
 * Policy (CreateKey, PutKeyPolicy): 1-131072 characters of the API's
 * pattern (tab, LF, CR, U+0020-U+00FF), else ValidationException; more than
 * the 32 KB key policy quota is LimitExceededException, as KMS answers.
 */
hsm_result hsm_api_policy(hsm_api_ctx *c, bool required, const char **out) HSM_MUST_CHECK;
/*
 * Writes the KeyMaterialId of the version a symmetric encryption key used, as
 * AWS KMS does for Decrypt, ReEncrypt and the GenerateDataKey family (member
 * names it); nothing for other keys.
 */
void hsm_api_write_material_id(hsm_api_ctx *c, const char *member, const hsm_used_key *used);
/* member: the KeyMaterialId of key_id's version; failing that (out of memory), the writer fails. */
void hsm_api_write_material_member(hsm_api_ctx *c, const char *member, const char *key_id,
                                   uint32_t version);
/* Writes KeyMetadata for a key record. */
void hsm_api_write_key_metadata(hsm_api_ctx *c, const char *member, const hsm_key_record *r);
/* Writes "KeyId": <key ARN>. */
void hsm_api_write_key_arn(hsm_api_ctx *c, const char *member, const char *key_id);
/*
 * Writes the algorithm list of a key's usage: EncryptionAlgorithms,
 * SigningAlgorithms, MacAlgorithms or KeyAgreementAlgorithms.
 */
void hsm_api_write_algorithms(hsm_api_ctx *c, hsm_key_spec spec, hsm_key_usage usage);

#endif
