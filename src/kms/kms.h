/*
 * kms.h - hsmd's key-management service: the AWS KMS operations as C
 * functions, independent of HTTP and JSON.
 *
 * The API handlers (server/) parse a request into the structs below, call
 * one function here and render the result; hsmctl's offline commands call
 * the same functions.  This layer resolves key references (id, ARN, alias),
 * enforces roles, key policies and the key-state rules, keeps the key
 * metadata cache, and reaches key material only through the keystore.
 *
 * Every operation takes the authenticated caller.  Nothing here writes the
 * audit trail: callers audit each request; internal events (automatic
 * rotation, destruction) are reported through hsm_kms_event_fn.
 */
#ifndef HSM_KMS_H
#define HSM_KMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"
#include "common/util.h"
#include "crypto/blob.h"
#include "crypto/keyspec.h"
#include "keystore/keystore.h"
#include "store/store.h"

typedef struct hsm_kms hsm_kms;

/* ---- Operations, as data ------------------------------------------------- */

/* Key-state classes of operations (see the state table in kms.c). */
typedef enum hsm_op_class {
	HSM_OPC_NONE,       /* no key involved */
	HSM_OPC_CRYPTO,     /* uses key material */
	HSM_OPC_READ,       /* reads metadata */
	HSM_OPC_MODIFY,     /* changes metadata: description, tags, aliases, policy */
	HSM_OPC_GRANT,      /* CreateGrant: delegates use, so only of a usable key */
	HSM_OPC_ENABLE,
	HSM_OPC_DISABLE,
	HSM_OPC_SCHEDULE_DELETION,
	HSM_OPC_CANCEL_DELETION,
	HSM_OPC_ROTATION,   /* enable/disable/perform rotation */
	HSM_OPC_IMPORT,     /* GetParametersForImport, ImportKeyMaterial */
	HSM_OPC_DELETE_MATERIAL, /* DeleteImportedKeyMaterial */
	HSM_OPC_COUNT
} hsm_op_class;

#define HSM_ROLE_BIT(r) (1U << (r))
#define HSM_ROLES_OFFICER HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER)
#define HSM_ROLES_USER HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER)
#define HSM_ROLES_AUDITOR HSM_ROLE_BIT(HSM_ROLE_AUDITOR)
#define HSM_ROLES_CUSTODIAN HSM_ROLE_BIT(HSM_ROLE_CUSTODIAN)

typedef enum hsm_op {
#define HSM_OP_ENUM(name, cls, roles, mutating) HSM_OP_##name,
#define HSM_OP_TABLE(X)                                                                 \
	X(CreateKey, HSM_OPC_NONE, HSM_ROLES_OFFICER, true)                                 \
	X(DescribeKey, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false) \
	X(ListKeys, HSM_OPC_NONE, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false) \
	X(EnableKey, HSM_OPC_ENABLE, HSM_ROLES_OFFICER, true)                               \
	X(DisableKey, HSM_OPC_DISABLE, HSM_ROLES_OFFICER, true)                             \
	X(UpdateKeyDescription, HSM_OPC_MODIFY, HSM_ROLES_OFFICER, true)                    \
	X(ScheduleKeyDeletion, HSM_OPC_SCHEDULE_DELETION, HSM_ROLES_OFFICER, true)          \
	X(CancelKeyDeletion, HSM_OPC_CANCEL_DELETION, HSM_ROLES_OFFICER, true)              \
	X(Encrypt, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                   \
	X(Decrypt, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                   \
	X(ReEncrypt, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                 \
	X(GenerateDataKey, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                           \
	X(GenerateDataKeyWithoutPlaintext, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)           \
	X(GenerateDataKeyPair, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                       \
	X(GenerateDataKeyPairWithoutPlaintext, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)       \
	X(Sign, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                      \
	X(Verify, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                    \
	X(GenerateMac, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                               \
	X(VerifyMac, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                 \
	X(GetPublicKey, HSM_OPC_CRYPTO, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false) \
	X(GenerateRandom, HSM_OPC_NONE, HSM_ROLES_USER, false)                              \
	X(EnableKeyRotation, HSM_OPC_ROTATION, HSM_ROLES_OFFICER, true)                     \
	X(DisableKeyRotation, HSM_OPC_ROTATION, HSM_ROLES_OFFICER, true)                    \
	X(GetKeyRotationStatus, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false) \
	X(RotateKeyOnDemand, HSM_OPC_ROTATION, HSM_ROLES_OFFICER, true)                     \
	X(ListKeyRotations, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR, false)     \
	X(CreateAlias, HSM_OPC_MODIFY, HSM_ROLES_OFFICER, true)                             \
	X(UpdateAlias, HSM_OPC_MODIFY, HSM_ROLES_OFFICER, true)                             \
	X(DeleteAlias, HSM_OPC_READ, HSM_ROLES_OFFICER, true)                               \
	X(ListAliases, HSM_OPC_NONE, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false) \
	X(TagResource, HSM_OPC_MODIFY, HSM_ROLES_OFFICER, true)                             \
	X(UntagResource, HSM_OPC_MODIFY, HSM_ROLES_OFFICER, true)                           \
	X(ListResourceTags, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false) \
	X(GetKeyPolicy, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR, false)         \
	X(PutKeyPolicy, HSM_OPC_READ, HSM_ROLES_OFFICER, true)                              \
	X(ListKeyPolicies, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR, false)     \
	X(CreateGrant, HSM_OPC_GRANT,  HSM_ROLES_OFFICER | HSM_ROLES_USER, true)            \
	X(ListGrants, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false) \
	X(ListRetirableGrants, HSM_OPC_NONE, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR, false)   \
	X(RetireGrant, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, true) \
	X(RevokeGrant, HSM_OPC_READ, HSM_ROLES_OFFICER, true)                               \
	X(DeriveSharedSecret, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                        \
	X(GetParametersForImport, HSM_OPC_IMPORT, HSM_ROLES_OFFICER, false)                 \
	X(ImportKeyMaterial, HSM_OPC_IMPORT, HSM_ROLES_OFFICER, true)                       \
	X(DeleteImportedKeyMaterial, HSM_OPC_DELETE_MATERIAL, HSM_ROLES_OFFICER, true)      \
	X(GetKeyLastUsage, HSM_OPC_READ, HSM_ROLES_OFFICER | HSM_ROLES_AUDITOR, false)      \
	X(DescribeCustomKeyStores, HSM_OPC_NONE,                                            \
	  HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false)                    \
	/* hsmd's token operations (X-Amz-Target HsmdJwt.<Op>, kms/jwt.h) */              \
	X(SignToken, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                 \
	X(EnableJwtSigning, HSM_OPC_MODIFY, HSM_ROLES_OFFICER, true)                        \
	X(DisableJwtSigning, HSM_OPC_MODIFY, HSM_ROLES_OFFICER, true)                        \
	/* hsmd's cipher operations (X-Amz-Target HsmdCipher.<Op>, kms/gcm.c) */           \
	X(GcmEncrypt, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                \
	X(GcmDecrypt, HSM_OPC_CRYPTO, HSM_ROLES_USER, false)                                \
	X(GetKeyCheckValue, HSM_OPC_CRYPTO, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false) \
	/* hsmd's token operation (X-Amz-Target HsmdToken.<Op>, kms/keys.c) */            \
	X(DescribeKeys, HSM_OPC_NONE, HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR, false)
	HSM_OP_TABLE(HSM_OP_ENUM)
#undef HSM_OP_ENUM
	HSM_OP_COUNT
} hsm_op;

typedef struct hsm_op_info {
	hsm_op op;
	const char *name;   /* "Encrypt" */
	const char *action; /* "kms:Encrypt" */
	hsm_op_class cls;
	unsigned roles;     /* HSM_ROLE_BIT set allowed to call it */
	bool mutating;
} hsm_op_info;

const hsm_op_info *hsm_op_get(hsm_op op);
/* Looks an operation up by its KMS name; NULL when unknown. */
const hsm_op_info *hsm_op_find(const char *name);

/* ---- Service --------------------------------------------------------------- */

typedef struct hsm_kms_config {
	const char *region;     /* "us-east-1" */
	const char *account_id; /* "111122223333" */
	int default_rotation_days;   /* 90 */
	int default_pending_days;    /* 30 */
	int64_t meta_cache_ttl_ms;   /* key metadata and alias cache lifetime; 0 = until changed here */
	int64_t jwt_default_lifetime; /* seconds; 0 = 900 (kms/jwt.h) */
	int64_t jwt_max_lifetime;     /* seconds; 0 = 86400 */
	int64_t jwt_clock_skew;       /* seconds; 0 = 60 */
	/* Custodians who must approve a sensitive request (approvals.c); 0 = no approvals. */
	unsigned approval_quorum;
	int64_t approval_ttl; /* seconds an approval request stays open; 0 = 86400 */
} hsm_kms_config;

/* Internal events the caller audits (automatic rotation, destruction). */
typedef struct hsm_kms_event {
	const char *operation; /* "RotateKey", "DeleteKey" */
	const char *key_id;
	uint32_t key_version;
	hsm_result result;
} hsm_kms_event;
typedef void (*hsm_kms_event_fn)(void *arg, const hsm_kms_event *ev);

/* Store and keystore are borrowed and must outlive the service. */
hsm_result hsm_kms_new(hsm_store *store, hsm_keystore *ks, const hsm_kms_config *cfg,
                       hsm_kms **out) HSM_MUST_CHECK;
void hsm_kms_free(hsm_kms *kms);

/*
 * The account and region a store's keys belong to (their ARNs, the default
 * policy's root principal), kept in the store's metadata.  HSM_ERR_CONFLICT,
 * naming both, when the store names another than account_id/region; when it
 * names none, records them if record, else succeeds.  CreateKey records them,
 * so a node of another account cannot make keys its peers cannot manage.
 */
hsm_result hsm_kms_account_check(hsm_store *store, const char *account_id, const char *region,
                                 bool record) HSM_MUST_CHECK;
/*
 * The account and region hsm_kms_account_check recorded in the store, into
 * account (12 digits) and region (at most HSM_REGION_NAME_MAX characters);
 * *recorded is false, and both are empty, when the store records none yet
 * (no key was made on it).  For hsmctl, which makes keys on a store without
 * a node's configuration.
 */
hsm_result hsm_kms_account_recorded(hsm_store *store, char account[13],
                                    char region[HSM_REGION_NAME_MAX + 1],
                                    bool *recorded) HSM_MUST_CHECK;
/*
 * For a store that records no account yet (its keys were made before
 * hsm_kms_account_check recorded it): whether it has a key (*has_keys, of
 * those not destroyed), and in other the account its first key's policy
 * names (arn:aws:iam::<12 digits>:) when that policy never names account_id,
 * else "".  A restored or copied store's keys are another account's when
 * other is set: their principals match none of account_id's callers.
 */
hsm_result hsm_kms_account_of_keys(hsm_store *store, const char *account_id, char other[13],
                                   bool *has_keys) HSM_MUST_CHECK;
/*
 * Asked at each purge of stored approval requests whether the wall clock runs ahead of
 * the time this node has run: while it does, none is purged for its age, as a clock wrong
 * by months would make every one look old.  Without a probe the clock is trusted.
 */
void hsm_kms_set_clock_ahead_probe(hsm_kms *kms, bool (*fn)(void *arg), void *arg);
void hsm_kms_set_event_sink(hsm_kms *kms, hsm_kms_event_fn fn, void *arg);
/* Replaces the clock (tests): returns epoch seconds. */
void hsm_kms_set_clock(hsm_kms *kms, int64_t (*now)(void *arg), void *arg);
hsm_store *hsm_kms_store(hsm_kms *kms);
hsm_keystore *hsm_kms_keystore(hsm_kms *kms);
const hsm_kms_config *hsm_kms_config_get(hsm_kms *kms);

/* ---- Callers ------------------------------------------------------------------ */

/* What authorization found out, for the request's audit record. */
typedef struct hsm_authz_note {
	/* The grant that allowed the request (hex id); "" when the key policy did, or none did.
	 * ReEncrypt: the grant that allowed its destination key (kms:ReEncryptTo). */
	char grant_id[HSM_GRANT_ID_LEN + 1];
	/* ReEncrypt: the grant that allowed its source key (kms:ReEncryptFrom), "" as above. */
	char source_grant_id[HSM_GRANT_ID_LEN + 1];
} hsm_authz_note;

/*
 * Where a request that waits for custodians' approval meets its gate
 * (hsm_caller.gate).  An operation calls hsm_caller_commit right before its
 * first change, once its parameters, permissions and key states passed, so
 * a request that would be refused anyway never opens an approval request.
 */
typedef struct hsm_commit_gate {
	/* Success once approved (and the approval used); HSM_ERR_APPROVAL_REQUIRED until then. */
	hsm_result (*fn)(void *arg);
	void *arg;
	bool reached; /* fn was called */
	bool passed;  /* and let the request through */
	/* The key the request acts on, as resolved when fn is called ("" for none): an
	 * approval given for a request naming an alias holds for that key only. */
	char key_id[HSM_UUID_STRLEN + 1];
} hsm_commit_gate;

/* The member that adds key_id to the request text custodians approve. */
#define HSM_APPROVAL_KEY_MEMBER "hsmd:KeyId"

typedef struct hsm_caller {
	const char *user;          /* principal name */
	const char *access_key_id; /* "" for local operators */
	unsigned roles;            /* HSM_ROLE_BIT set */
	bool local;                /* hsmctl on the data directory: holds the quorum */
	bool secure_transport;     /* the request came over TLS (aws:SecureTransport) */
	const char *source_ip;     /* the client's address (aws:SourceIp); NULL: none */
	const char *user_agent;    /* its User-Agent header (aws:UserAgent); NULL: none */
	/*
	 * DryRun (the KMS operations that take it: cryptographic ones and
	 * CreateGrant, RetireGrant, RevokeGrant; hsmd's SignToken, GcmEncrypt,
	 * GcmDecrypt): make every check the request makes (permissions, key state,
	 * key usage, algorithm, parameters; a ciphertext is opened to be checked),
	 * then fail with DryRunOperationException instead of acting or answering.
	 */
	bool dry_run;
	/*
	 * The request carried grant tokens (checked for form by the caller):
	 * grants are read from the store for it instead of the metadata cache,
	 * so a grant just made on another node takes effect at once.
	 */
	bool grant_tokens;
	/* Filled when authorization has something to say (NULL: nobody asks). */
	hsm_authz_note *note;
	/* The approval this request waits for before it changes anything; NULL: none. */
	hsm_commit_gate *gate;
} hsm_caller;

/*
 * Called by every operation right before its first change: passes the
 * caller's gate (once; later calls of the same request pass at once).
 * Success when there is no gate or it let the request through.
 */
hsm_result hsm_caller_commit(const hsm_caller *caller) HSM_MUST_CHECK;
/* The same, for an operation on the key key_id (resolved from the request's KeyId). */
hsm_result hsm_caller_commit_key(const hsm_caller *caller, const char *key_id) HSM_MUST_CHECK;
/*
 * Whether the caller's gate is still ahead (the request waits for approval and
 * has not passed it): an operation whose store write enforces a limit checks
 * that limit first then, so custodians are not asked to approve a request the
 * limit would refuse.  The write checks it again, as ever.
 */
bool hsm_caller_gated(const hsm_caller *caller);

/* The principal's ARN: arn:aws:iam::<account>:user/<name> (the account root for local operators). */
#define HSM_PRINCIPAL_ARN_MAX 128
void hsm_kms_caller_arn(hsm_kms *kms, const hsm_caller *caller, char out[HSM_PRINCIPAL_ARN_MAX]);

/* ---- Keys ------------------------------------------------------------------- */

/* Appends this node's KMS ARN prefix, "arn:aws:kms:<region>:<account>:". */
void hsm_kms_arn_prefix(hsm_kms *kms, hsm_sb *b);
/* The key ARN: arn:aws:kms:<region>:<account>:key/<id>. */
hsm_result hsm_kms_key_arn(hsm_kms *kms, const char *key_id, hsm_buf *out) HSM_MUST_CHECK;
/*
 * Resolves an id, key ARN, alias name or alias ARN to a key id.  Aliases are
 * cached; every alias write and key destruction through this object makes
 * the cache miss until read again (a write by another process shows after
 * meta_cache_ttl_ms, as key metadata does).
 */
hsm_result hsm_kms_resolve(hsm_kms *kms, const char *ref,
                           char key_id[HSM_UUID_STRLEN + 1]) HSM_MUST_CHECK;
/*
 * The key spec of ref (key id, key ARN, alias name or alias ARN).  An alias
 * must be in the alias cache: the hint never reads the store for one.  For
 * scheduling a request only: nothing is authorized, and false (an alias not
 * cached yet; unknown; unreadable) tells nobody anything.
 */
bool hsm_kms_spec_hint(hsm_kms *kms, const char *ref, hsm_key_spec *out);

typedef struct hsm_create_key_req {
	const char *description; /* NULL = "" */
	hsm_key_spec spec;
	hsm_key_usage usage;
	const char *policy;      /* NULL = the default key policy */
	bool bypass_lockout_check; /* skip the policy lockout safety check for policy */
	const hsm_tag *tags;
	size_t n_tags;
	uint32_t flags;          /* HSM_KEYFLAG_* */
	/* EXTERNAL: the key is created PendingImport, without material (ImportKeyMaterial). */
	hsm_key_origin origin;
} hsm_create_key_req;

hsm_result hsm_kms_create_key(hsm_kms *kms, const hsm_caller *caller,
                              const hsm_create_key_req *req, hsm_key_record *out) HSM_MUST_CHECK;
/*
 * DescribeKey, GetKeyRotationStatus and GetPublicKey fill a copy of the
 * key's record from the metadata cache, without its policy (NULL there):
 * the policy document is GetKeyPolicy's (hsm_kms_get_policy).
 */
hsm_result hsm_kms_describe_key(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                hsm_key_record *out) HSM_MUST_CHECK;
/* Lists key ids after marker (a key id; NULL for the first page). */
/*
 * DescribeCustomKeyStores: hsmd holds its keys itself and has no custom key
 * stores.  Authorizes the caller; id and name (either may be NULL) name one
 * to describe: CustomKeyStoreNotFoundException, as for any store that does
 * not exist.
 */
hsm_result hsm_kms_custom_key_stores(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                     const char *name) HSM_MUST_CHECK;
hsm_result hsm_kms_list_keys(hsm_kms *kms, const hsm_caller *caller, const char *marker,
                             size_t limit, hsm_key_cb cb, void *arg,
                             bool *truncated) HSM_MUST_CHECK;
/*
 * DescribeKeys (HsmdToken.DescribeKeys): a page of ListKeys, each key with
 * what DescribeKey would answer this caller, and its public key where
 * GetPublicKey would answer it (spki NULL otherwise).  Each key is
 * authorized as those two operations are; a key the caller may not
 * describe, or one gone since the page was read, is left out.  *last is
 * the page's last key id (the next page's marker), set when *truncated.
 */
typedef hsm_result (*hsm_key_desc_cb)(const hsm_key_record *key, const hsm_buf *spki, void *arg);
hsm_result hsm_kms_describe_keys(hsm_kms *kms, const hsm_caller *caller, const char *marker,
                                 size_t limit, hsm_key_desc_cb cb, void *arg, bool *truncated,
                                 char last[HSM_UUID_STRLEN + 1]) HSM_MUST_CHECK;
/*
 * DescribeKeys of one key (its KeyId member): ref (a key id, key ARN, alias
 * name or alias ARN) alone, authorized and left out as in a page (cb not
 * called when the caller may not describe it or it does not exist).
 */
hsm_result hsm_kms_describe_keys_one(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                     hsm_key_desc_cb cb, void *arg) HSM_MUST_CHECK;
hsm_result hsm_kms_enable_key(hsm_kms *kms, const hsm_caller *caller, const char *ref) HSM_MUST_CHECK;
hsm_result hsm_kms_disable_key(hsm_kms *kms, const hsm_caller *caller, const char *ref) HSM_MUST_CHECK;
hsm_result hsm_kms_update_description(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                      const char *description) HSM_MUST_CHECK;
/* days 0 = default; 7..30.  *out receives the key as scheduled. */
hsm_result hsm_kms_schedule_deletion(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                     int days, hsm_key_record *out) HSM_MUST_CHECK;
hsm_result hsm_kms_cancel_deletion(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   hsm_key_record *out) HSM_MUST_CHECK;
hsm_result hsm_kms_set_flags(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                             uint32_t set, uint32_t clear) HSM_MUST_CHECK;

/* ---- Imported key material ----------------------------------------------------- */

/* GetParametersForImport: a wrapping key and import token valid for 24 hours. */
#define HSM_IMPORT_PARAMS_LIFETIME 86400
typedef struct hsm_import_params {
	char key_id[HSM_UUID_STRLEN + 1];
	hsm_buf token;      /* ImportToken */
	hsm_buf public_der; /* PublicKey: the wrapping key, DER SubjectPublicKeyInfo */
	int64_t valid_to;   /* ParametersValidTo */
} hsm_import_params;
/* Frees what it holds; a zeroed one is clear. */
void hsm_import_params_clear(hsm_import_params *p);
/*
 * For a key with Origin EXTERNAL (else UnsupportedOperationException) that
 * is Enabled, Disabled or PendingImport.  wrapping_alg and wrapping_key_spec
 * are the KMS names (hsm_wrap_alg_parse, hsm_wrapping_key_spec_parse).
 */
hsm_result hsm_kms_get_import_params(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                     const char *wrapping_alg, const char *wrapping_key_spec,
                                     hsm_import_params *out) HSM_MUST_CHECK;

typedef enum hsm_import_type {
	HSM_IMPORT_ANY,      /* ImportType not given: NEW before the first import, else EXISTING */
	HSM_IMPORT_NEW,      /* NEW_KEY_MATERIAL: the first material, or the next one to rotate to */
	HSM_IMPORT_EXISTING, /* EXISTING_KEY_MATERIAL: a material imported before */
} hsm_import_type;

/* KeyMaterialId: 64 lowercase hex digits naming one material (key version) of a key. */
#define HSM_MATERIAL_ID_LEN 64
/*
 * The KeyMaterialId of a key's version: SHA-256 of a label, the key id and
 * the version, so it names that version for good and says nothing else.
 */
hsm_result hsm_kms_material_id(const char *key_id, uint32_t version,
                               char out[HSM_MATERIAL_ID_LEN + 1]) HSM_MUST_CHECK;

typedef struct hsm_import_req {
	const char *key;
	const uint8_t *token;
	size_t token_len;
	const uint8_t *encrypted;
	size_t encrypted_len;
	/*
	 * ExpirationModel: KEY_MATERIAL_EXPIRES (the default; valid_to, epoch
	 * seconds, then required: in the future, at most 365 days ahead) or
	 * KEY_MATERIAL_DOES_NOT_EXPIRE (valid_to must be absent).
	 */
	const char *expiration_model; /* NULL = not given */
	bool has_valid_to;
	int64_t valid_to;
	hsm_import_type type;
	const char *material_id; /* KeyMaterialId; NULL = not given */
	const char *description; /* KeyMaterialDescription; NULL = keep the material's */
} hsm_import_req;

/*
 * ImportKeyMaterial.  The first material of the key; or a material imported
 * before, again (EXISTING_KEY_MATERIAL: the one named by material_id, or
 * whichever this material is; other material is
 * IncorrectKeyMaterialException), with a new expiration; or new material
 * (NEW_KEY_MATERIAL on a key that has material), which waits, pending
 * rotation, until RotateKeyOnDemand makes it current.  A key becomes
 * Enabled once every material it uses is there; Disabled keys stay so.
 * *out receives the key after, *version the version the material went to.
 */
hsm_result hsm_kms_import_material(hsm_kms *kms, const hsm_caller *caller,
                                   const hsm_import_req *req, hsm_key_record *out,
                                   uint32_t *version) HSM_MUST_CHECK;
/*
 * DeleteImportedKeyMaterial: erases one material (material_id; NULL: the
 * current one).  The digest that lets the same material be imported again
 * stays.  Erasing a material the key uses makes it PendingImport (or leaves
 * it PendingDeletion); erasing the material pending rotation changes no
 * state.  Without material_id, a key whose current material is already
 * gone is left as it is (success, *version 0).  *out receives the key
 * after, *version the version erased.
 */
hsm_result hsm_kms_delete_material(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   const char *material_id, hsm_key_record *out,
                                   uint32_t *version) HSM_MUST_CHECK;

/* ---- Last use of keys (GetKeyLastUsage, usage.c) ---------------------------------- */

/*
 * Uses noted in memory and written to the store in batches by
 * hsm_usage_flush.  The object is the server's: it outlives the audit
 * trail's last callback, which may still note a use.
 */
typedef struct hsm_usage hsm_usage;
hsm_result hsm_usage_new(hsm_store *store, hsm_usage **out) HSM_MUST_CHECK;
/* Drops what was not flushed.  NULL is a no-op. */
void hsm_usage_free(hsm_usage *u);
/* A successful use, by the request request_id, at used_ms (epoch ms). */
void hsm_usage_note(hsm_usage *u, const char *key_id, const char *operation,
                    const char *request_id, int64_t used_ms);
/* Writes the uses noted since the last flush; on failure keeps the rest for the next. */
hsm_result hsm_usage_flush(hsm_usage *u) HSM_MUST_CHECK;
/* Where GetKeyLastUsage reads this node's unwritten uses (borrowed). */
void hsm_kms_set_usage(hsm_kms *kms, hsm_usage *u);

typedef struct hsm_key_last_usage {
	char key_id[HSM_UUID_STRLEN + 1];
	int64_t created;        /* the key's creation (epoch seconds) */
	int64_t tracking_start; /* since when uses are recorded: the store's start or the creation */
	bool used;              /* a use is recorded; last holds it */
	hsm_key_usage_record last;
} hsm_key_last_usage;
/* GetKeyLastUsage: the key's last recorded use, this node's unwritten ones included. */
hsm_result hsm_kms_key_last_usage(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                  hsm_key_last_usage *out) HSM_MUST_CHECK;

/* ---- Rotation ------------------------------------------------------------------ */

/* period_days 0 = default (90); 1..2560. */
hsm_result hsm_kms_enable_rotation(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   int period_days) HSM_MUST_CHECK;
hsm_result hsm_kms_disable_rotation(hsm_kms *kms, const hsm_caller *caller,
                                    const char *ref) HSM_MUST_CHECK;
hsm_result hsm_kms_rotation_status(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   hsm_key_record *out) HSM_MUST_CHECK;
/* On-demand rotations a key allows over its life (AWS KMS's quota, which cannot be raised). */
#define HSM_MAX_ON_DEMAND_ROTATIONS 25U

/*
 * Adds a version and makes it primary; for a key with imported material,
 * makes the material pending rotation current instead.  *out receives the
 * key after.  LIMIT_EXCEEDED after HSM_MAX_ON_DEMAND_ROTATIONS of them.
 */
hsm_result hsm_kms_rotate_now(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                              hsm_key_record *out) HSM_MUST_CHECK;
/*
 * The key's materials (versions), ascending: those made by rotations, or
 * with all, also the first and the one pending rotation (imported material
 * never imported is left out).  *key receives the key's record (without its
 * policy) before cb first runs.
 */
hsm_result hsm_kms_list_rotations(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                  bool all, hsm_key_record *key, hsm_version_cb cb,
                                  void *arg) HSM_MUST_CHECK;

/*
 * Performs the work that is due at the current time: automatic rotations,
 * destruction of keys whose deletion waiting period ended, and deletion of
 * imported key material that expired.  Called by the
 * server's scheduler every few seconds; each action is reported to the
 * event sink.  *done counts actions taken.  A key whose work fails is
 * logged and the others go on; the call then fails (with the first such
 * failure's code, after every key was tried), as when the listing fails.
 * A key that failed is not tried again before a pause that doubles with
 * each failure in a row, from 2 s up to KMS_RETRY_MAX_S (rotation.c).
 */
hsm_result hsm_kms_run_due(hsm_kms *kms, size_t *done) HSM_MUST_CHECK;

/*
 * On a store nodes share (meta_cache_ttl_ms > 0): reads again the records of
 * up to max keys whose material this node holds, and drops the material of
 * those that can no longer be used (disabled, pending deletion or destroyed,
 * or gone, by another node), so it does not stay in memory until something
 * asks for the key here.  Called by every node's scheduler; *forgotten
 * counts the keys dropped.  Nothing to do on a store of one node's own: the
 * node that changes a key drops its material there and then.
 */
hsm_result hsm_kms_sweep_material(hsm_kms *kms, size_t max, size_t *forgotten) HSM_MUST_CHECK;

/* ---- Aliases, tags, policies -------------------------------------------------- */

/*
 * CreateAlias's rules on the name alone (the alias/ prefix, its characters
 * and length, reserved names, a PKCS#11 id's spelling), before anything is
 * made that the alias is to name (hsmctl key create --alias).  Reads nothing.
 */
hsm_result hsm_kms_alias_name_check(const char *alias) HSM_MUST_CHECK;
hsm_result hsm_kms_create_alias(hsm_kms *kms, const hsm_caller *caller, const char *alias,
                                const char *target) HSM_MUST_CHECK;
hsm_result hsm_kms_update_alias(hsm_kms *kms, const hsm_caller *caller, const char *alias,
                                const char *target) HSM_MUST_CHECK;
hsm_result hsm_kms_delete_alias(hsm_kms *kms, const hsm_caller *caller,
                                const char *alias) HSM_MUST_CHECK;
/* ref NULL lists every alias. */
hsm_result hsm_kms_list_aliases(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                const char *marker, size_t limit, hsm_alias_cb cb, void *arg,
                                bool *truncated) HSM_MUST_CHECK;
hsm_result hsm_kms_tag(hsm_kms *kms, const hsm_caller *caller, const char *ref, size_t n,
                       const hsm_tag tags[]) HSM_MUST_CHECK;
hsm_result hsm_kms_untag(hsm_kms *kms, const hsm_caller *caller, const char *ref, size_t n,
                         const char *const keys[]) HSM_MUST_CHECK;
hsm_result hsm_kms_list_tags(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                             const char *marker, size_t limit, hsm_tag_cb cb, void *arg,
                             bool *truncated) HSM_MUST_CHECK;
/* The names of a key's policies: only "default" exists, as in KMS (ListKeyPolicies). */
hsm_result hsm_kms_list_policies(hsm_kms *kms, const hsm_caller *caller,
                                 const char *ref) HSM_MUST_CHECK;
/* Only the policy name "default" exists, as in KMS. */
hsm_result hsm_kms_get_policy(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                              const char *policy_name, hsm_buf *out) HSM_MUST_CHECK;
/*
 * Replaces the key policy.  Unless bypass_lockout_check, a policy that would
 * stop the caller from changing the policy again is refused (KMS's policy
 * lockout safety check).
 */
hsm_result hsm_kms_put_policy(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                              const char *policy_name, const char *policy,
                              bool bypass_lockout_check) HSM_MUST_CHECK;

/* ---- Grants -------------------------------------------------------------------- */

/*
 * The operations a grant can allow (KMS GrantOperation), as bits of
 * hsm_grant_record.operations: bit i is hsm_grant_op_name(i).
 */
#define HSM_GRANT_OP_COUNT 17
/* "Decrypt", "Encrypt", ...; NULL past the last. */
const char *hsm_grant_op_name(unsigned i);
/* ValidationException naming the value for an unknown operation. */
hsm_result hsm_grant_op_parse(const char *name, uint32_t *bit) HSM_MUST_CHECK;

/* Encryption context pairs of a grant constraint (keys compared without case). */
typedef struct hsm_grant_ctx {
	bool present;
	hsm_ctx_pair *pairs; /* owned by the hsm_grant_constraints holding it */
	size_t n;
} hsm_grant_ctx;
typedef struct hsm_grant_constraints {
	hsm_grant_ctx equals; /* EncryptionContextEquals */
	hsm_grant_ctx subset; /* EncryptionContextSubset */
} hsm_grant_constraints;
/* Parses the stored form ("" = none); free with hsm_grant_constraints_free. */
hsm_result hsm_grant_constraints_parse(const char *text, hsm_grant_constraints *out) HSM_MUST_CHECK;
void hsm_grant_constraints_free(hsm_grant_constraints *c);

typedef struct hsm_create_grant_req {
	const char *key;      /* KeyId: key id or key ARN */
	const char *grantee;  /* GranteePrincipal */
	const char *retiring; /* RetiringPrincipal; NULL = none */
	const char *const *operations;
	size_t n_operations;
	hsm_grant_constraints constraints; /* borrowed */
	const char *name;     /* NULL = none */
} hsm_create_grant_req;

#define HSM_GRANT_TOKEN_MAX 8192 /* characters, as KMS's GrantTokenType */
#define HSM_GRANT_TOKENS_MAX 10  /* tokens per request */
/*
 * CreateGrant.  *existed tells that a grant with the same name and fields
 * was already there (its id is returned, as KMS does for a retried
 * request).  token receives the grant token (text, not terminated).
 */
hsm_result hsm_kms_create_grant(hsm_kms *kms, const hsm_caller *caller,
                                const hsm_create_grant_req *req,
                                char grant_id[HSM_GRANT_ID_LEN + 1], hsm_buf *token,
                                char key_id[HSM_UUID_STRLEN + 1]) HSM_MUST_CHECK;
/* Whether s is a grant id in form: HSM_GRANT_ID_LEN lowercase hex digits. */
bool hsm_grant_id_valid(const char *s);
/* Checks a grant token's form (InvalidGrantTokenException) and names its grant. */
hsm_result hsm_grant_token_parse(const char *token, char key_id[HSM_UUID_STRLEN + 1],
                                 char grant_id[HSM_GRANT_ID_LEN + 1]) HSM_MUST_CHECK;
/*
 * ListGrants: a key's grants, optionally only grant_id (NULL: any) and only
 * those of grantee (NULL: any), paged after marker (a grant id).
 */
hsm_result hsm_kms_list_grants(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                               const char *grant_id, const char *grantee, const char *marker,
                               size_t limit, hsm_grant_cb cb, void *arg,
                               bool *truncated) HSM_MUST_CHECK;
/* ListRetirableGrants: every key's grants that name `retiring` as retiring principal
 * (NULL: a service principal was named, which no grant here has: none, once authorized). */
hsm_result hsm_kms_list_retirable_grants(hsm_kms *kms, const hsm_caller *caller,
                                         const char *retiring, const char *marker,
                                         size_t limit, hsm_grant_cb cb, void *arg,
                                         bool *truncated) HSM_MUST_CHECK;
/*
 * RetireGrant, by token (ref and grant_id NULL) or by key and grant id.
 * Allowed to the grant's retiring principal (the account's root ARN: the
 * account's crypto-officers), to its grantee when the grant allows
 * RetireGrant, and to local operators; key policies do not decide.
 * *key_id receives the grant's key.
 */
hsm_result hsm_kms_retire_grant(hsm_kms *kms, const hsm_caller *caller, const char *token,
                                const char *ref, const char *grant_id,
                                char key_id[HSM_UUID_STRLEN + 1]) HSM_MUST_CHECK;
/* RevokeGrant (kms:RevokeGrant in the key policy). */
hsm_result hsm_kms_revoke_grant(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                const char *grant_id) HSM_MUST_CHECK;

/* ---- Cryptographic operations ------------------------------------------------- */

/* Encryption context as received (validated here). */
typedef struct hsm_enc_ctx {
	const hsm_ctx_pair *pairs;
	size_t n;
} hsm_enc_ctx;

/* Which key and version an operation used, for the response and the audit. */
typedef struct hsm_used_key {
	char key_id[HSM_UUID_STRLEN + 1];
	uint32_t version;
	hsm_key_spec spec;
	hsm_key_usage usage;
	hsm_key_origin origin;
} hsm_used_key;

typedef struct hsm_encrypt_req {
	const char *key;                 /* KeyId */
	const uint8_t *plaintext;
	size_t plaintext_len;
	hsm_enc_ctx ctx;
	bool has_alg;
	hsm_enc_alg alg;
} hsm_encrypt_req;

hsm_result hsm_kms_encrypt(hsm_kms *kms, const hsm_caller *caller, const hsm_encrypt_req *req,
                           hsm_buf *ciphertext, hsm_used_key *used) HSM_MUST_CHECK;

typedef struct hsm_decrypt_req {
	const char *key; /* optional for symmetric ciphertexts */
	const uint8_t *ciphertext;
	size_t ciphertext_len;
	hsm_enc_ctx ctx;
	bool has_alg;
	hsm_enc_alg alg;
	/*
	 * DryRun with DryRunModifiers IGNORE_CIPHERTEXT: the ciphertext is not
	 * opened; the key is KeyId's, or else the one a symmetric blob names.
	 */
	bool ignore_ciphertext;
} hsm_decrypt_req;

/* plaintext must be a secure buffer. */
hsm_result hsm_kms_decrypt(hsm_kms *kms, const hsm_caller *caller, const hsm_decrypt_req *req,
                           hsm_buf *plaintext, hsm_used_key *used,
                           hsm_enc_alg *alg_used) HSM_MUST_CHECK;

/* ---- Plain AES-GCM (kms/gcm.c) ------------------------------------------------- */

#define HSM_GCM_MAX_DATA 65536 /* plaintext, and ciphertext without its tag */
#define HSM_GCM_MAX_AAD 8192
/*
 * GcmEncrypt: AES-256-GCM of pt under the primary version of a
 * SYMMETRIC_DEFAULT key, with an IV hsmd draws (written to iv) and aad;
 * *ct receives the ciphertext and the 16-byte tag.  Nothing names the
 * version in the output: GcmDecrypt tries the key's versions, newest first,
 * and the tag tells which one made it (one uniform InvalidCiphertext
 * otherwise).  Policies and roles as for Encrypt / Decrypt, under the
 * actions kms:GcmEncrypt / kms:GcmDecrypt; grants do not allow them.
 */
hsm_result hsm_kms_gcm_encrypt(hsm_kms *kms, const hsm_caller *caller, const char *key,
                               const uint8_t *aad, size_t aad_len, const uint8_t *pt,
                               size_t pt_len, uint8_t iv[12], hsm_buf *ct,
                               hsm_used_key *used) HSM_MUST_CHECK;
hsm_result hsm_kms_gcm_decrypt(hsm_kms *kms, const hsm_caller *caller, const char *key,
                               const uint8_t iv[12], const uint8_t *aad, size_t aad_len,
                               const uint8_t *ct, size_t ct_len, hsm_buf *pt,
                               hsm_used_key *used) HSM_MUST_CHECK;

/*
 * GetKeyCheckValue: the key check value of the primary version of an AES
 * or HMAC key (crypto.h, hsm_material_check_value), for comparing it with
 * another holder's copy (imported material, a ceremony, a PKCS#11 token)
 * without revealing it.  Key states as for the key's cryptographic use;
 * action kms:GetKeyCheckValue, no grants; asymmetric keys:
 * HSM_ERR_UNSUPPORTED_OPERATION.
 */
hsm_result hsm_kms_key_check_value(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                   uint8_t kcv[HSM_KCV_LEN], hsm_kcv_alg *alg,
                                   hsm_used_key *used) HSM_MUST_CHECK;

typedef struct hsm_reencrypt_req {
	hsm_decrypt_req source;
	const char *dest_key;
	hsm_enc_ctx dest_ctx;
	bool has_dest_alg;
	hsm_enc_alg dest_alg;
} hsm_reencrypt_req;

hsm_result hsm_kms_reencrypt(hsm_kms *kms, const hsm_caller *caller,
                             const hsm_reencrypt_req *req, hsm_buf *ciphertext,
                             hsm_used_key *source, hsm_enc_alg *source_alg, hsm_used_key *dest,
                             hsm_enc_alg *dest_alg) HSM_MUST_CHECK;

/* plaintext NULL for GenerateDataKeyWithoutPlaintext. */
hsm_result hsm_kms_generate_data_key(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                     size_t n_bytes, const hsm_enc_ctx *ctx, hsm_buf *plaintext,
                                     hsm_buf *ciphertext, hsm_used_key *used) HSM_MUST_CHECK;
/* priv NULL for the WithoutPlaintext form. */
hsm_result hsm_kms_generate_data_key_pair(hsm_kms *kms, const hsm_caller *caller,
                                          const char *key, hsm_key_spec pair_spec,
                                          const hsm_enc_ctx *ctx, hsm_buf *priv,
                                          hsm_buf *priv_blob, hsm_buf *pub,
                                          hsm_used_key *used) HSM_MUST_CHECK;

hsm_result hsm_kms_sign(hsm_kms *kms, const hsm_caller *caller, const char *key,
                        hsm_sign_alg alg, hsm_message_type type, const uint8_t *msg, size_t len,
                        hsm_buf *sig, hsm_used_key *used) HSM_MUST_CHECK;
/* A wrong signature is HSM_ERR_INVALID_SIGNATURE (KMSInvalidSignatureException). */
hsm_result hsm_kms_verify(hsm_kms *kms, const hsm_caller *caller, const char *key,
                          hsm_sign_alg alg, hsm_message_type type, const uint8_t *msg,
                          size_t len, const uint8_t *sig, size_t sig_len,
                          hsm_used_key *used) HSM_MUST_CHECK;
hsm_result hsm_kms_generate_mac(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                hsm_mac_alg alg, const uint8_t *msg, size_t len, hsm_buf *mac,
                                hsm_used_key *used) HSM_MUST_CHECK;
/* A wrong MAC is HSM_ERR_INVALID_MAC (KMSInvalidMacException). */
hsm_result hsm_kms_verify_mac(hsm_kms *kms, const hsm_caller *caller, const char *key,
                              hsm_mac_alg alg, const uint8_t *msg, size_t len,
                              const uint8_t *mac, size_t mac_len,
                              hsm_used_key *used) HSM_MUST_CHECK;
/*
 * DeriveSharedSecret: ECDH of the primary version of a KEY_AGREEMENT key
 * with the peer's public key (DER SubjectPublicKeyInfo on the key's curve);
 * the raw shared secret is appended to secret, a secure buffer.  A key of
 * another usage is HSM_ERR_INVALID_KEY_USAGE; a public key that is not a
 * valid point of the key's curve is HSM_ERR_VALIDATION, also under DryRun.
 */
hsm_result hsm_kms_derive_shared_secret(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                        hsm_agree_alg alg, const uint8_t *peer_spki,
                                        size_t peer_len, hsm_buf *secret,
                                        hsm_used_key *used) HSM_MUST_CHECK;
/*
 * A request naming an algorithm AWS defines that no key here takes (the parse said
 * HSM_ERR_UNSUPPORTED_OPERATION): the key ref names is looked up for op as the operation
 * would look it up (authorization, with the algorithm as its condition value; key state),
 * then refused with InvalidKeyUsageException, AWS's answer to an algorithm the key's spec
 * does not take (API reference, "InvalidKeyUsageException").  action: kms:ReEncryptFrom or
 * kms:ReEncryptTo for ReEncrypt, else NULL; member names the request's member
 * ("SigningAlgorithm", "EncryptionAlgorithm", "SourceEncryptionAlgorithm", ...);
 * message_type: Sign's and Verify's kms:MessageType ("RAW", "DIGEST"), else NULL.  Never
 * succeeds.
 */
hsm_result hsm_kms_refuse_algorithm(hsm_kms *kms, const hsm_caller *caller, hsm_op op,
                                    const char *action, const char *ref, const char *member,
                                    const char *name, const char *message_type) HSM_MUST_CHECK;
/* Public key (SPKI DER) of the primary version, and the key's record. */
hsm_result hsm_kms_get_public_key(hsm_kms *kms, const hsm_caller *caller, const char *key,
                                  hsm_buf *spki, hsm_key_record *out) HSM_MUST_CHECK;
/* Public key of one version (JWKS, JWT verification). */
hsm_result hsm_kms_version_public_key(hsm_kms *kms, const char *key_id, uint32_t version,
                                      hsm_buf *spki) HSM_MUST_CHECK;
hsm_result hsm_kms_generate_random(hsm_kms *kms, const hsm_caller *caller, size_t n,
                                   hsm_buf *out) HSM_MUST_CHECK;

/* ---- Certificates (certs.c) -------------------------------------------------------- */

/*
 * X.509 certificates kept beside the keys, for PKCS#11 applications that
 * pair a private key with its certificate (CKO_CERTIFICATE objects).
 * Crypto-officers import and delete them; every role but custodian reads them.
 */
typedef struct hsm_cert_import_req {
	const uint8_t *der; /* one DER certificate, nothing after it */
	size_t der_len;
	const char *label;  /* NULL = "" */
	const uint8_t *object_id; /* CKA_ID; NULL = the key's id when key is given, else none */
	size_t object_id_len;
	/* NULL, or a key (id, ARN, alias) whose primary public key the certificate must certify. */
	const char *key;
	/* Out, success or not: the key the certificate was checked against ("" when none),
	 * named by key or by an object_id that is a key's CKA_ID, for the audit record. */
	char paired_key_id[HSM_UUID_STRLEN + 1];
} hsm_cert_import_req;
hsm_result hsm_kms_cert_import(hsm_kms *kms, const hsm_caller *caller,
                               hsm_cert_import_req *req, hsm_cert_record *out) HSM_MUST_CHECK;
hsm_result hsm_kms_cert_get(hsm_kms *kms, const hsm_caller *caller, const char *cert_id,
                            hsm_cert_record *out) HSM_MUST_CHECK;
/* m: those it matches (store.h, hsm_cert_match; its members NULL: every certificate). */
hsm_result hsm_kms_cert_list(hsm_kms *kms, const hsm_caller *caller, const hsm_cert_match *m,
                             const char *after, size_t limit, hsm_cert_cb cb, void *arg,
                             bool *truncated) HSM_MUST_CHECK;
hsm_result hsm_kms_cert_delete(hsm_kms *kms, const hsm_caller *caller,
                               const char *cert_id) HSM_MUST_CHECK;

/* What a certificate says, for listings (RFC 2253 names, the serial in hex). */
typedef struct hsm_cert_info {
	char subject[512];
	char issuer[512];
	char serial[2 * 64 + 1];
	int64_t not_before, not_after; /* epoch seconds */
} hsm_cert_info;
hsm_result hsm_cert_describe(const uint8_t *der, size_t len, hsm_cert_info *out) HSM_MUST_CHECK;

/* ---- Principals ------------------------------------------------------------------ */

#define HSM_ACCESS_SECRET_LEN 40 /* characters, as AWS secret access keys */

/* User names follow IAM's rules: 1-64 of [A-Za-z0-9_+=,.@-]. */
hsm_result hsm_kms_user_create(hsm_kms *kms, const hsm_caller *caller, const char *name,
                               unsigned roles) HSM_MUST_CHECK;
hsm_result hsm_kms_user_list(hsm_kms *kms, const hsm_caller *caller, hsm_user_cb cb,
                             void *arg) HSM_MUST_CHECK;
hsm_result hsm_kms_user_set_disabled(hsm_kms *kms, const hsm_caller *caller, const char *name,
                                     bool disabled) HSM_MUST_CHECK;
/* Clears a lockout after too many failed authentications. */
hsm_result hsm_kms_user_unlock(hsm_kms *kms, const hsm_caller *caller,
                               const char *name) HSM_MUST_CHECK;
/*
 * Creates an access key for a user: *secret (HSM_ACCESS_SECRET_LEN bytes of
 * text, no NUL) is shown to the caller once and stored only wrapped.
 */
hsm_result hsm_kms_access_key_create(hsm_kms *kms, const hsm_caller *caller, const char *user,
                                     char access_key_id[HSM_ACCESS_KEY_ID_LEN + 1],
                                     hsm_secret **secret) HSM_MUST_CHECK;
/* Same with chosen values (dev mode: HSM_DEV_ACCESS_KEY_ID / HSM_DEV_SECRET_ACCESS_KEY). */
hsm_result hsm_kms_access_key_import(hsm_kms *kms, const hsm_caller *caller, const char *user,
                                     const char *access_key_id,
                                     const hsm_secret *secret) HSM_MUST_CHECK;
hsm_result hsm_kms_access_key_revoke(hsm_kms *kms, const hsm_caller *caller,
                                     const char *access_key_id) HSM_MUST_CHECK;
hsm_result hsm_kms_access_key_list(hsm_kms *kms, const hsm_caller *caller, const char *user,
                                   hsm_access_key_cb cb, void *arg) HSM_MUST_CHECK;
/*
 * Every access key, ordered by id, for authentication's list of the ids that
 * exist (server/auth_keys.c): no caller, as for hsm_kms_credential.
 */
hsm_result hsm_kms_access_keys_all(hsm_kms *kms, hsm_access_key_cb cb,
                                   void *arg) HSM_MUST_CHECK;

/* ---- Quorum approvals (approvals.c) ------------------------------------------------ */

/*
 * A sensitive request (the caller decides which: server/approvals.c) runs
 * only once cfg.approval_quorum custodians -- enabled users holding the
 * custodian role, the requester never among them -- approved that very
 * request: the same operation, by the same user, with the same parameters.
 * The first attempt opens an approval request and is refused; custodians
 * approve it; the identical retry runs and uses it up.  A request that runs
 * and fails gives its approval back, so a retry after, say, a throttled
 * store still runs.  Approvals count only while their custodian still is
 * one: disabling a custodian withdraws their approvals.
 */
typedef struct hsm_approval_gate {
	char id[HSM_APPROVAL_ID_LEN + 1]; /* the approval request involved; "" when none */
	bool claimed; /* the request may run; hsm_kms_approval_release if it then fails */
} hsm_approval_gate;

/*
 * Checks the request (operation name, the request's canonical text) against
 * the approvals.  Success with g->claimed: approved and now used.  Otherwise
 * HSM_ERR_APPROVAL_REQUIRED, naming the approval request (opened now, or
 * already open) and its progress; g->id names it too.  The request opened
 * keeps request's text with each member that holds bytes (EncryptedKeyMaterial,
 * ImportToken, Plaintext, ...) described by its size and digest, not its value.
 */
hsm_result hsm_kms_approval_gate(hsm_kms *kms, const hsm_caller *caller, const char *operation,
                                 const char *request, hsm_approval_gate *g) HSM_MUST_CHECK;
/* Gives a claimed approval back after the request failed (failures are logged). */
void hsm_kms_approval_release(hsm_kms *kms, const hsm_approval_gate *g);
/*
 * Rewrites stored requests that still hold blob members whole (kept by an
 * older hsmd) to what a request opened now keeps, and has the old texts
 * overwritten where the store can (hsm_store_approval_rewrite); *redacted
 * (optional) counts them.  Run at start, whatever approval_quorum is.
 */
hsm_result hsm_kms_approval_redact_stored(hsm_kms *kms, uint64_t *redacted) HSM_MUST_CHECK;

/* Crypto-officers, auditors and custodians read approval requests; NOT_FOUND when absent. */
hsm_result hsm_kms_approval_get(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                hsm_approval_record *out) HSM_MUST_CHECK;
/*
 * Newest first, after `after` (NULL: from the first), at most limit;
 * open_only: those still waiting (Pending, not expired); *truncated: whether
 * more follow (hsm_store_approval_list).
 */
hsm_result hsm_kms_approval_list(hsm_kms *kms, const hsm_caller *caller, bool open_only,
                                 const hsm_approval_cursor *after, size_t limit,
                                 hsm_approval_cb cb, void *arg, bool *truncated) HSM_MUST_CHECK;
/* A custodian (not the requester) approves or denies an open request; *out: the record after. */
hsm_result hsm_kms_approval_approve(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                    hsm_approval_record *out) HSM_MUST_CHECK;
hsm_result hsm_kms_approval_deny(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                 hsm_approval_record *out) HSM_MUST_CHECK;
/* The requester withdraws an open request. */
hsm_result hsm_kms_approval_cancel(hsm_kms *kms, const hsm_caller *caller, const char *id,
                                   hsm_approval_record *out) HSM_MUST_CHECK;
/* Approvals a request needs now: its own count, or the node's quorum if that is higher. */
unsigned hsm_kms_approval_required(hsm_kms *kms, const hsm_approval_record *a);
/* Approvals that count: approvers who still are enabled custodians, other than the
 * requester, each once (names that differ only by ASCII case are one custodian). */
unsigned hsm_kms_approval_valid(hsm_kms *kms, const hsm_approval_record *a);
/* Its valid approvals reach what it requires: the gate lets its retry run. */
bool hsm_kms_approval_approved(hsm_kms *kms, const hsm_approval_record *a);
/* Enabled users holding the custodian role, names that differ only by case counted once
 * (they can give only one approval between them). */
hsm_result hsm_kms_custodian_count(hsm_kms *kms, unsigned *out) HSM_MUST_CHECK;
/* The same, read from a store before any service runs on it (the users table of any schema). */
hsm_result hsm_kms_custodians_in(hsm_store *store, unsigned *out) HSM_MUST_CHECK;

/*
 * For SigV4: the user and unwrapped secret behind an access key id, whatever
 * the user's state.  HSM_ERR_UNRECOGNIZED_CLIENT for unknown or revoked keys.
 */
hsm_result hsm_kms_credential(hsm_kms *kms, const char *access_key_id, hsm_user_record *user,
                              hsm_secret **secret) HSM_MUST_CHECK;
/*
 * After the signature verified: HSM_ERR_PRINCIPAL_LOCKED for a disabled or
 * locked user.  Only the holder of the secret learns the user's name and
 * state; a wrong signature gets the same answer whatever the user's state.
 */
hsm_result hsm_kms_user_admit(const hsm_user_record *user) HSM_MUST_CHECK;
/* VALIDATION unless name is 1-64 letters, digits and _+=,.@- (IAM's user names). */
hsm_result hsm_kms_user_name_check(const char *name) HSM_MUST_CHECK;
/*
 * The store's users whose names equal another's ignoring ASCII case (made
 * before user names were unique so, which CreateUser now refuses), each
 * such set as "alice/Alice", sets separated by ", ", into out (cap bytes;
 * "" when there are none; what does not fit ends in "...").  *sets: how
 * many sets there are.  Reads names only (works on a sealed store).
 */
hsm_result hsm_kms_user_case_twins(hsm_store *store, char *out, size_t cap,
                                   size_t *sets) HSM_MUST_CHECK;
/*
 * Records an authentication outcome; lock_after consecutive failures lock the
 * user.  *locked_now (may be NULL) says whether this failure locked it.
 */
hsm_result hsm_kms_auth_outcome(hsm_kms *kms, const char *user, bool success, uint32_t lock_after,
                                bool *locked_now) HSM_MUST_CHECK;

#endif
