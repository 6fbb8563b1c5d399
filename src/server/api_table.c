/*
 * api_table.c - operation -> handler.  The operation names, actions, roles
 * and key-state classes are data in kms/kms.h (HSM_OP_TABLE); this table
 * adds only the handler of each, so both stay in step.
 */
#include "server/api.h"

#include <errno.h>

static const hsm_api_handler handlers[HSM_OP_COUNT] = {
    [HSM_OP_CreateKey] = hsm_api_create_key,
    [HSM_OP_DescribeKey] = hsm_api_describe_key,
    [HSM_OP_ListKeys] = hsm_api_list_keys,
    [HSM_OP_EnableKey] = hsm_api_enable_key,
    [HSM_OP_DisableKey] = hsm_api_disable_key,
    [HSM_OP_UpdateKeyDescription] = hsm_api_update_key_description,
    [HSM_OP_ScheduleKeyDeletion] = hsm_api_schedule_key_deletion,
    [HSM_OP_CancelKeyDeletion] = hsm_api_cancel_key_deletion,
    [HSM_OP_Encrypt] = hsm_api_encrypt,
    [HSM_OP_Decrypt] = hsm_api_decrypt,
    [HSM_OP_ReEncrypt] = hsm_api_reencrypt,
    [HSM_OP_GenerateDataKey] = hsm_api_generate_data_key,
    [HSM_OP_GenerateDataKeyWithoutPlaintext] = hsm_api_generate_data_key_without_plaintext,
    [HSM_OP_GenerateDataKeyPair] = hsm_api_generate_data_key_pair,
    [HSM_OP_GenerateDataKeyPairWithoutPlaintext] =
        hsm_api_generate_data_key_pair_without_plaintext,
    [HSM_OP_Sign] = hsm_api_sign,
    [HSM_OP_Verify] = hsm_api_verify,
    [HSM_OP_GenerateMac] = hsm_api_generate_mac,
    [HSM_OP_VerifyMac] = hsm_api_verify_mac,
    [HSM_OP_GetPublicKey] = hsm_api_get_public_key,
    [HSM_OP_GenerateRandom] = hsm_api_generate_random,
    [HSM_OP_EnableKeyRotation] = hsm_api_enable_key_rotation,
    [HSM_OP_DisableKeyRotation] = hsm_api_disable_key_rotation,
    [HSM_OP_GetKeyRotationStatus] = hsm_api_get_key_rotation_status,
    [HSM_OP_RotateKeyOnDemand] = hsm_api_rotate_key_on_demand,
    [HSM_OP_ListKeyRotations] = hsm_api_list_key_rotations,
    [HSM_OP_CreateAlias] = hsm_api_create_alias,
    [HSM_OP_UpdateAlias] = hsm_api_update_alias,
    [HSM_OP_DeleteAlias] = hsm_api_delete_alias,
    [HSM_OP_ListAliases] = hsm_api_list_aliases,
    [HSM_OP_TagResource] = hsm_api_tag_resource,
    [HSM_OP_UntagResource] = hsm_api_untag_resource,
    [HSM_OP_ListResourceTags] = hsm_api_list_resource_tags,
    [HSM_OP_GetKeyPolicy] = hsm_api_get_key_policy,
    [HSM_OP_PutKeyPolicy] = hsm_api_put_key_policy,
    [HSM_OP_ListKeyPolicies] = hsm_api_list_key_policies,
    [HSM_OP_CreateGrant] = hsm_api_create_grant,
    [HSM_OP_ListGrants] = hsm_api_list_grants,
    [HSM_OP_ListRetirableGrants] = hsm_api_list_retirable_grants,
    [HSM_OP_RetireGrant] = hsm_api_retire_grant,
    [HSM_OP_RevokeGrant] = hsm_api_revoke_grant,
    [HSM_OP_DeriveSharedSecret] = hsm_api_derive_shared_secret,
    [HSM_OP_GetParametersForImport] = hsm_api_get_parameters_for_import,
    [HSM_OP_ImportKeyMaterial] = hsm_api_import_key_material,
    [HSM_OP_DeleteImportedKeyMaterial] = hsm_api_delete_imported_key_material,
    [HSM_OP_GetKeyLastUsage] = hsm_api_get_key_last_usage,
    [HSM_OP_DescribeCustomKeyStores] = hsm_api_describe_custom_key_stores,
    [HSM_OP_SignToken] = hsm_api_sign_token,
    [HSM_OP_EnableJwtSigning] = hsm_api_enable_jwt_signing,
    [HSM_OP_DisableJwtSigning] = hsm_api_disable_jwt_signing,
    [HSM_OP_GcmEncrypt] = hsm_api_gcm_encrypt,
    [HSM_OP_GcmDecrypt] = hsm_api_gcm_decrypt,
    [HSM_OP_GetKeyCheckValue] = hsm_api_get_key_check_value,
    [HSM_OP_DescribeKeys] = hsm_api_describe_keys,
};

hsm_result hsm_api_run(hsm_op op, hsm_api_ctx *c)
{
	HSM_ASSERT((unsigned)op < HSM_OP_COUNT && handlers[op] != NULL);
	errno = 0;
	return handlers[op](c);
}
