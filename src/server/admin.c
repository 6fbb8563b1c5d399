/*
 * admin.c - hsmd's own API next to the KMS one (X-Amz-Target: HsmdAdmin.<Op>).
 *
 * Unseal and Status work while the node is sealed and without SigV4: access
 * key secrets are themselves sealed under the master key, so no signature
 * can be checked before unseal.  A custodian's share file is the credential
 * of Unseal (it is checksummed, bound to this store, and worthless below the
 * threshold), as with other HSMs' unseal endpoints; both are audited.  Every
 * other admin operation needs SigV4 and the crypto-officer role (AuditHash,
 * AuditPublicKey and ListBackups also the auditor role).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "server/api.h"
#include "server/server.h"

#define SHARE_FILE_MAX 512

static hsm_result op_unseal(hsm_admin_ctx *c)
{
	const char *share;
	hsm_unseal_progress p;
	HSM_GUARD(hsm_json_str(c->req, "Share", true, 1, SHARE_FILE_MAX, &share));
	hsm_result r = hsm_keystore_unseal(c->s->ks, (const uint8_t *)share, strlen(share), &p);
	/* Unseal takes no credentials: the share is what says who acted. */
	snprintf(c->audit->share, sizeof(c->audit->share), "%s", p.share);
	if (hsm_failed(r))
		return r;
	if (p.unsealed) {
		hsm_audit_set_signer(c->s->audit, hsm_server_audit_signer, c->s->ks);
		hsm_server_auth_flush(c->s);
		hsm_server_recount(c->s);
	}
	hsm_jw_bool(c->w, "Sealed", !p.unsealed);
	hsm_jw_int(c->w, "Progress", p.have);
	hsm_jw_int(c->w, "Threshold", p.threshold);
	return HSM_SUCCESS;
}

static hsm_result op_status(hsm_admin_ctx *c)
{
	hsm_unseal_progress p;
	hsm_keystore_unseal_status(c->s->ks, &p);
	hsm_node_state st = hsm_keystore_state(c->s->ks);
	/* The count /metrics reports: Status needs no credentials, so it must not scan the store. */
	uint64_t keys = atomic_load(&c->s->gauge_keys);
	hsm_jw_str(c->w, "State", hsm_node_state_name(st));
	hsm_jw_bool(c->w, "Sealed", st != HSM_NODE_UNSEALED);
	hsm_jw_int(c->w, "Progress", p.have);
	hsm_jw_int(c->w, "Threshold", p.threshold);
	hsm_jw_str(c->w, "Version", hsm_version());
	hsm_jw_str(c->w, "StoreId", hsm_keystore_store_id(c->s->ks));
	hsm_jw_str(c->w, "NodeId", c->s->node_id);
	if (st == HSM_NODE_UNSEALED)
		hsm_jw_int(c->w, "KeyCount", (int64_t)keys);
	hsm_jw_bool(c->w, "AuditHealthy", hsm_audit_healthy(c->s->audit));
	hsm_jw_bool(c->w, "AuditAckDurable", c->s->opt.audit_ack_durable);
	if (st == HSM_NODE_ERROR)
		hsm_jw_str(c->w, "Error", hsm_keystore_error_reason(c->s->ks));
	return HSM_SUCCESS;
}

static hsm_result require_role(hsm_admin_ctx *c, unsigned roles)
{
	HSM_ENSURE((c->auth->caller.roles & roles) != 0, HSM_ERR_ACCESS_DENIED,
	           "User %s may not perform this operation (role required: %s)", c->auth->user,
	           (roles & HSM_ROLES_AUDITOR) ? "crypto-officer or auditor" : "crypto-officer");
	return HSM_SUCCESS;
}

static hsm_result op_seal(hsm_admin_ctx *c)
{
	HSM_GUARD(require_role(c, HSM_ROLES_OFFICER));
	HSM_GUARD(hsm_caller_commit(&c->auth->caller));
	hsm_result audited = hsm_audit_seal(c->s->audit);
	if (hsm_failed(audited))
		hsm_warn("sealing: the signed seal checkpoint could not be written (%s); the "
		         "unsigned checkpoints that follow will fail verification with the public key",
		         hsm_last_message());
	hsm_keystore_seal(c->s->ks);
	hsm_server_auth_flush(c->s);
	hsm_server_recount(c->s);
	hsm_warn("sealed by %s", c->auth->user);
	hsm_jw_bool(c->w, "Sealed", true);
	return HSM_SUCCESS;
}

/*
 * The user and access key a user or access-key operation is about, in its
 * audit record whether it succeeds or not (noted before it runs).
 */
static void note_user(hsm_admin_ctx *c, const char *name)
{
	snprintf(c->audit->target_user, sizeof(c->audit->target_user), "%s", name);
}

static void note_access_key(hsm_admin_ctx *c, const char *akid)
{
	snprintf(c->audit->target_access_key_id, sizeof(c->audit->target_access_key_id), "%s", akid);
}

static void note_roles(hsm_admin_ctx *c, unsigned roles)
{
	hsm_sb b;
	hsm_sb_init(&b, c->audit->target_roles, sizeof(c->audit->target_roles));
	for (unsigned r = 0, n = 0; r < HSM_ROLE_COUNT; r++) {
		if ((roles & HSM_ROLE_BIT(r)) == 0)
			continue;
		if (n++ > 0)
			hsm_sb_add(&b, ",");
		hsm_sb_add(&b, hsm_role_name((hsm_role)r));
	}
}

/* A refused Roles list goes on the record as given: its strings, in order, cut to the
 * field (note_roles names the roles set). */
static void note_roles_given(hsm_admin_ctx *c)
{
	json_t *list = json_object_get(c->req, "Roles");
	hsm_sb b;
	hsm_sb_init(&b, c->audit->target_roles, sizeof(c->audit->target_roles));
	size_t i, n = 0;
	json_t *v;
	json_array_foreach(list, i, v)
	{
		if (!json_is_string(v))
			continue;
		if (n++ > 0)
			hsm_sb_add(&b, ",");
		hsm_sb_add(&b, json_string_value(v));
	}
}

static hsm_result read_roles(hsm_admin_ctx *c, unsigned *roles)
{
	const char **names = NULL;
	size_t n = 0;
	hsm_result r = hsm_json_string_list(c->req, "Roles", true, HSM_ROLE_COUNT, &names, &n);
	*roles = 0;
	for (size_t i = 0; i < n && hsm_ok(r); i++) {
		hsm_role role;
		r = hsm_role_parse(names[i], &role);
		if (hsm_ok(r))
			*roles |= HSM_ROLE_BIT(role);
	}
	if (hsm_failed(r) && r.err != HSM_ERR_NOMEM)
		note_roles_given(c);
	free(names);
	return r;
}

static hsm_result op_create_user(hsm_admin_ctx *c)
{
	const char *name;
	unsigned roles;
	HSM_GUARD(hsm_json_str(c->req, "UserName", true, 1, HSM_USER_NAME_MAX, &name));
	note_user(c, name);
	HSM_GUARD(read_roles(c, &roles));
	note_roles(c, roles);
	HSM_GUARD(hsm_kms_user_create(c->s->kms, &c->auth->caller, name, roles));
	hsm_jw_str(c->w, "UserName", name);
	return HSM_SUCCESS;
}

static hsm_result write_user(const hsm_user_record *u, void *arg)
{
	hsm_jw *w = arg;
	hsm_jw_begin_object(w);
	hsm_jw_str(w, "UserName", u->name);
	hsm_jw_key_begin_array(w, "Roles");
	for (unsigned r = 0; r < HSM_ROLE_COUNT; r++)
		if (u->roles & HSM_ROLE_BIT(r))
			hsm_jw_value_str(w, hsm_role_name((hsm_role)r));
	hsm_jw_end_array(w);
	hsm_jw_bool(w, "Disabled", u->disabled);
	hsm_jw_bool(w, "Locked", u->locked);
	hsm_jw_int(w, "FailedAuthentications", u->failed_auth);
	hsm_jw_time(w, "CreationDate", u->created);
	hsm_jw_end(w);
	return HSM_SUCCESS;
}

static hsm_result op_list_users(hsm_admin_ctx *c)
{
	hsm_jw_key_begin_array(c->w, "Users");
	HSM_GUARD(hsm_kms_user_list(c->s->kms, &c->auth->caller, write_user, c->w));
	hsm_jw_end_array(c->w);
	return HSM_SUCCESS;
}

static hsm_result user_change(hsm_admin_ctx *c, int what)
{
	const char *name;
	HSM_GUARD(hsm_json_str(c->req, "UserName", true, 1, HSM_USER_NAME_MAX, &name));
	note_user(c, name);
	hsm_result r = what == 2 ? hsm_kms_user_unlock(c->s->kms, &c->auth->caller, name)
	                         : hsm_kms_user_set_disabled(c->s->kms, &c->auth->caller, name,
	                                                     what == 1);
	hsm_server_auth_flush(c->s);
	return r;
}

static hsm_result op_disable_user(hsm_admin_ctx *c) { return user_change(c, 1); }
static hsm_result op_enable_user(hsm_admin_ctx *c) { return user_change(c, 0); }
static hsm_result op_unlock_user(hsm_admin_ctx *c) { return user_change(c, 2); }

static hsm_result op_create_access_key(hsm_admin_ctx *c)
{
	const char *name;
	char akid[HSM_ACCESS_KEY_ID_LEN + 1];
	hsm_secret *secret = NULL;
	HSM_GUARD(hsm_json_str(c->req, "UserName", true, 1, HSM_USER_NAME_MAX, &name));
	note_user(c, name);
	HSM_GUARD(hsm_kms_access_key_create(c->s->kms, &c->auth->caller, name, akid, &secret));
	/* The node's list of ids lacks it until its next read: without this, its first
	 * uses would be rationed as an unknown id's, and refused once made-up ids had
	 * spent the lookups. */
	hsm_server_akids_stale(c->s);
	note_access_key(c, akid); /* the id only: the secret goes to the caller alone */
	hsm_jw_str(c->w, "UserName", name);
	hsm_jw_str(c->w, "AccessKeyId", akid);
	hsm_jw_str_n(c->w, "SecretAccessKey", (const char *)hsm_secret_bytes(secret),
	             hsm_secret_len(secret));
	hsm_secret_free(secret);
	return HSM_SUCCESS;
}

static hsm_result op_revoke_access_key(hsm_admin_ctx *c)
{
	const char *akid;
	HSM_GUARD(hsm_json_str(c->req, "AccessKeyId", true, 16, HSM_ACCESS_KEY_ID_LEN, &akid));
	note_access_key(c, akid);
	hsm_result r = hsm_kms_access_key_revoke(c->s->kms, &c->auth->caller, akid);
	hsm_server_auth_flush(c->s);
	return r;
}

static hsm_result write_access_key(const hsm_access_key_record *k, void *arg)
{
	hsm_jw *w = arg;
	hsm_jw_begin_object(w);
	hsm_jw_str(w, "AccessKeyId", k->access_key_id);
	hsm_jw_str(w, "UserName", k->user);
	hsm_jw_str(w, "Status", k->active ? "Active" : "Inactive");
	hsm_jw_time(w, "CreationDate", k->created);
	hsm_jw_end(w);
	return HSM_SUCCESS;
}

static hsm_result op_list_access_keys(hsm_admin_ctx *c)
{
	const char *name = NULL;
	HSM_GUARD(hsm_json_str(c->req, "UserName", false, 1, HSM_USER_NAME_MAX, &name));
	if (name != NULL)
		note_user(c, name);
	hsm_jw_key_begin_array(c->w, "AccessKeys");
	HSM_GUARD(hsm_kms_access_key_list(c->s->kms, &c->auth->caller, name, write_access_key, c->w));
	hsm_jw_end_array(c->w);
	return HSM_SUCCESS;
}

static hsm_result op_audit_hash(hsm_admin_ctx *c)
{
	const char *value;
	char hash[2 * HSM_SHA256_LEN + 1];
	HSM_GUARD(require_role(c, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR));
	HSM_GUARD(hsm_json_str(c->req, "Value", true, 0, 8192, &value));
	HSM_GUARD(hsm_ks_audit_hash(c->s->ks, (const uint8_t *)value, strlen(value), hash));
	hsm_jw_str(c->w, "Hash", hash);
	return HSM_SUCCESS;
}

static hsm_result op_audit_public_key(hsm_admin_ctx *c)
{
	hsm_buf pem = {0};
	HSM_GUARD(require_role(c, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR));
	hsm_result r = hsm_ks_audit_public_pem(c->s->ks, &pem);
	if (hsm_ok(r))
		hsm_jw_str_n(c->w, "PublicKey", (const char *)pem.data, pem.len);
	hsm_buf_free(&pem);
	return r;
}

static void write_backup(hsm_jw *w, const char *path, const hsm_backup_info *info)
{
	hsm_jw_str(w, "BackupId", info->backup_id);
	hsm_jw_str(w, "File", hsm_path_base(path));
	hsm_jw_str(w, "Path", path);
	hsm_jw_str(w, "StoreId", info->identity.store_id);
	hsm_jw_str(w, "NodeId", info->node_id);
	hsm_jw_time(w, "CreationDate", info->created);
	hsm_jw_int(w, "SizeBytes", (int64_t)info->file_bytes);
	hsm_jw_int(w, "Threshold", info->identity.threshold);
}

static hsm_result op_create_backup(hsm_admin_ctx *c)
{
	char path[4096];
	hsm_backup_info info;
	bool copied;
	HSM_GUARD(require_role(c, HSM_ROLES_OFFICER));
	HSM_GUARD(hsm_caller_commit(&c->auth->caller));
	HSM_GUARD(hsm_server_backup(c->s, "requested", path, sizeof(path), &info, &copied));
	write_backup(c->w, path, &info);
	hsm_jw_bool(c->w, "Copied", copied);
	return HSM_SUCCESS;
}

static hsm_result write_backup_entry(const char *path, const hsm_backup_info *info, void *arg)
{
	hsm_jw *w = arg;
	hsm_jw_begin_object(w);
	write_backup(w, path, info);
	hsm_jw_end(w);
	return HSM_SUCCESS;
}

static hsm_result op_list_backups(hsm_admin_ctx *c)
{
	HSM_GUARD(require_role(c, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR));
	hsm_jw_str(c->w, "BackupDir", c->s->backup_dir);
	hsm_jw_key_begin_array(c->w, "Backups");
	HSM_GUARD(hsm_backup_list(c->s->backup_dir, hsm_keystore_store_id(c->s->ks),
	                          write_backup_entry, c->w));
	hsm_jw_end_array(c->w);
	return HSM_SUCCESS;
}

static const hsm_admin_op admin_ops[] = {
    {"Unseal", false, op_unseal},
    {"Status", false, op_status},
    {"Seal", true, op_seal},
    {"CreateUser", true, op_create_user},
    {"ListUsers", true, op_list_users},
    {"DisableUser", true, op_disable_user},
    {"EnableUser", true, op_enable_user},
    {"UnlockUser", true, op_unlock_user},
    {"CreateAccessKey", true, op_create_access_key},
    {"RevokeAccessKey", true, op_revoke_access_key},
    {"ListAccessKeys", true, op_list_access_keys},
    {"AuditHash", true, op_audit_hash},
    {"AuditPublicKey", true, op_audit_public_key},
    {"CreateBackup", true, op_create_backup},
    {"ListBackups", true, op_list_backups},
    {"ListApprovals", true, hsm_admin_list_approvals},
    {"GetApproval", true, hsm_admin_get_approval},
    {"ApproveRequest", true, hsm_admin_approve_request},
    {"DenyRequest", true, hsm_admin_deny_request},
    {"CancelRequest", true, hsm_admin_cancel_request},
    {"ImportCertificate", true, hsm_admin_import_certificate},
    {"GetCertificate", true, hsm_admin_get_certificate},
    {"ListCertificates", true, hsm_admin_list_certificates},
    {"DeleteCertificate", true, hsm_admin_delete_certificate},
};

unsigned hsm_admin_index(const hsm_admin_op *op)
{
	_Static_assert(sizeof(admin_ops) / sizeof(admin_ops[0]) <= 32, "hsm_admin_index fits 32 bits");
	_Static_assert(sizeof(admin_ops) / sizeof(admin_ops[0]) <= HSM_METRIC_ADMIN_OPS,
	               "each admin operation has a metrics slot");
	return (unsigned)(op - admin_ops);
}

const char *hsm_admin_name(unsigned index)
{
	return index < sizeof(admin_ops) / sizeof(admin_ops[0]) ? admin_ops[index].name : NULL;
}

const hsm_admin_op *hsm_admin_find(const char *name)
{
	for (size_t i = 0; i < sizeof(admin_ops) / sizeof(admin_ops[0]); i++)
		if (strcmp(admin_ops[i].name, name) == 0)
			return &admin_ops[i];
	return NULL;
}
