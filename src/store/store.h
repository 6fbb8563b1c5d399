/*
 * store.h - the storage seam (DESIGN.md "Storage and scale").
 *
 * Everything hsmd persists goes through these functions; a backend (SQLite
 * today, PostgreSQL later) implements them behind hsm_store_ops
 * (store/store_impl.h).  Rules every backend keeps:
 *
 *  - One transaction per logical change.  A function either applies its whole
 *    change or none of it.
 *  - Durability before acknowledgement: when a function that writes key
 *    material or principals' secrets returns success, the change survives
 *    kill -9 and power loss (SQLite: WAL with synchronous=FULL).
 *  - Thread safety: any function may be called from any thread concurrently.
 *  - The store never sees plaintext key material: version records carry
 *    material wrapped by the keystore.
 *  - Deleted secrets are overwritten, not just unlinked (secure_delete).
 *
 * Records are plain structs; strings the store returns in them are owned by
 * the record and released with the matching *_clear() function.
 */
#ifndef HSM_STORE_H
#define HSM_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"
#include "common/util.h"
#include "crypto/keyspec.h"

typedef struct hsm_store hsm_store;

/* ---- Enumerations stored as their KMS names ------------------------------ */

typedef enum hsm_key_state {
	HSM_KEY_ENABLED,
	HSM_KEY_DISABLED,
	HSM_KEY_PENDING_DELETION,
	HSM_KEY_DESTROYED, /* material erased; tombstone kept for audit */
	HSM_KEY_STATE_COUNT
} hsm_key_state;

typedef enum hsm_key_origin { HSM_ORIGIN_AWS_KMS, HSM_ORIGIN_EXTERNAL } hsm_key_origin;

/* How a version came to be (ListKeyRotations' RotationType). */
typedef enum hsm_rotation_type {
	HSM_ROTATION_NONE,      /* the key's first version */
	HSM_ROTATION_AUTOMATIC,
	HSM_ROTATION_ON_DEMAND,
} hsm_rotation_type;

typedef enum hsm_role {
	HSM_ROLE_CRYPTO_OFFICER,
	HSM_ROLE_CRYPTO_USER,
	HSM_ROLE_AUDITOR,
	HSM_ROLE_COUNT
} hsm_role;

const char *hsm_key_state_name(hsm_key_state s); /* "Enabled", "Disabled", "PendingDeletion", "Destroyed" */
const char *hsm_role_name(hsm_role r);           /* "crypto-officer", "crypto-user", "auditor" */
hsm_result hsm_role_parse(const char *name, hsm_role *out) HSM_MUST_CHECK;

/* Key flags (bit set). */
#define HSM_KEYFLAG_JWT 0x1U /* published in the JWKS and usable for token signing */

/* ---- Records -------------------------------------------------------------- */

typedef struct hsm_key_record {
	char key_id[HSM_UUID_STRLEN + 1];
	char *description; /* owned; never NULL after a successful get ("" when empty) */
	hsm_key_spec spec;
	hsm_key_usage usage;
	hsm_key_origin origin;
	hsm_key_state state;
	int64_t created;            /* epoch seconds */
	int64_t deletion_date;      /* epoch seconds; 0 unless PendingDeletion/Destroyed */
	int32_t pending_window_days;
	bool rotation_enabled;
	int32_t rotation_period_days;
	int64_t next_rotation;      /* epoch seconds; 0 when rotation is off */
	uint32_t primary_version;   /* versions are 1, 2, ... */
	char *policy;               /* owned JSON text; never NULL after a successful get */
	uint32_t flags;             /* HSM_KEYFLAG_* */
	int64_t updated;            /* epoch seconds of the last change */
} hsm_key_record;

typedef struct hsm_version_record {
	char key_id[HSM_UUID_STRLEN + 1];
	uint32_t version;
	int64_t created;
	hsm_rotation_type rotation_type;
	hsm_buf wrapped;    /* wrapped material; empty once destroyed */
	hsm_buf public_der; /* SubjectPublicKeyInfo of asymmetric keys; else empty */
} hsm_version_record;

#define HSM_ALIAS_MAX 256
typedef struct hsm_alias_record {
	char name[HSM_ALIAS_MAX + 1];        /* "alias/..." */
	char key_id[HSM_UUID_STRLEN + 1];
	int64_t created;
	int64_t updated;
} hsm_alias_record;

#define HSM_TAG_KEY_MAX 128
#define HSM_TAG_VALUE_MAX 256
#define HSM_MAX_TAGS_PER_KEY 50
typedef struct hsm_tag {
	char key[HSM_TAG_KEY_MAX * 4 + 1];     /* UTF-8: up to 4 bytes a character */
	char value[HSM_TAG_VALUE_MAX * 4 + 1];
} hsm_tag;

#define HSM_USER_NAME_MAX 64
typedef struct hsm_user_record {
	char name[HSM_USER_NAME_MAX + 1];
	hsm_role role;
	bool disabled;
	bool locked;
	uint32_t failed_auth; /* consecutive failures; survives restarts */
	int64_t created;
} hsm_user_record;

#define HSM_ACCESS_KEY_ID_LEN 20
typedef struct hsm_access_key_record {
	char access_key_id[HSM_ACCESS_KEY_ID_LEN + 1];
	char user[HSM_USER_NAME_MAX + 1];
	bool active;
	int64_t created;
	hsm_buf wrapped_secret; /* the secret access key, wrapped by the keystore */
} hsm_access_key_record;

void hsm_key_record_clear(hsm_key_record *r);
void hsm_version_record_clear(hsm_version_record *r);
void hsm_access_key_record_clear(hsm_access_key_record *r);
/* Deep copy (dst is overwritten; clear it afterwards). */
hsm_result hsm_key_record_copy(hsm_key_record *dst, const hsm_key_record *src) HSM_MUST_CHECK;

/* ---- Opening ---------------------------------------------------------------- */

/*
 * Opens (creating if needed) the store at location: a directory path for the
 * embedded SQLite backend ("DIR" or "sqlite:DIR").  Runs pending schema
 * migrations.  The caller owns *out and releases it with hsm_store_close.
 */
hsm_result hsm_store_open(const char *location, hsm_store **out) HSM_MUST_CHECK;
void hsm_store_close(hsm_store *s);
/* Schema version the store is at (for status output and tests). */
int hsm_store_schema_version(hsm_store *s);

/* ---- Metadata: small named values (store id, KCV, quorum settings, ...) ---- */

/* HSM_ERR_NOT_FOUND when absent. */
hsm_result hsm_store_meta_get(hsm_store *s, const char *name, hsm_buf *out) HSM_MUST_CHECK;
/* Writes n values atomically and durably (insert or replace). */
hsm_result hsm_store_meta_put(hsm_store *s, size_t n, const char *const names[],
                              const hsm_buf *const values[]) HSM_MUST_CHECK;

/* ---- Keys ------------------------------------------------------------------ */

/* Inserts a key and its first version atomically.  ALREADY_EXISTS on a duplicate id. */
hsm_result hsm_store_key_create(hsm_store *s, const hsm_key_record *key,
                                const hsm_version_record *first) HSM_MUST_CHECK;
/* NOT_FOUND when there is no such key (Destroyed keys are still returned). */
hsm_result hsm_store_key_get(hsm_store *s, const char *key_id, hsm_key_record *out) HSM_MUST_CHECK;

/*
 * Read-modify-write in one transaction: loads the key, calls fn(record, arg),
 * and if fn succeeds writes the record back (and inserts add_version when
 * not NULL; it must be version primary_version+1 of the loaded record, else
 * HSM_ERR_CONFLICT).  fn may change any field but key_id; its failure aborts
 * the transaction and is returned.  On success *after (if not NULL) receives
 * the record as written.
 */
typedef hsm_result (*hsm_key_update_fn)(hsm_key_record *key, void *arg);
hsm_result hsm_store_key_update(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
                                const hsm_version_record *add_version,
                                hsm_key_record *after) HSM_MUST_CHECK;

/*
 * Destroys a key: in one transaction sets state Destroyed and erases the
 * wrapped material of every version (public keys and metadata remain as a
 * tombstone), then makes sure the erased bytes are overwritten on disk.
 */
hsm_result hsm_store_key_destroy(hsm_store *s, const char *key_id, int64_t now) HSM_MUST_CHECK;

/*
 * Lists keys ordered by key id, starting after `after` (NULL or "" for the
 * first page), at most limit records; *truncated tells whether more follow.
 * Destroyed keys are skipped unless include_destroyed.
 */
typedef hsm_result (*hsm_key_cb)(const hsm_key_record *key, void *arg);
hsm_result hsm_store_key_list(hsm_store *s, const char *after, size_t limit,
                              bool include_destroyed, hsm_key_cb cb, void *arg,
                              bool *truncated) HSM_MUST_CHECK;
/* Keys not destroyed. */
hsm_result hsm_store_key_count(hsm_store *s, uint64_t *out) HSM_MUST_CHECK;

/*
 * Keys with work due at `now`: PendingDeletion whose deletion_date <= now, or
 * rotation enabled with next_rotation <= now (Enabled keys only).  At most
 * limit keys per call.
 */
hsm_result hsm_store_keys_due(hsm_store *s, int64_t now, size_t limit, hsm_key_cb cb,
                              void *arg) HSM_MUST_CHECK;

/* ---- Key versions ----------------------------------------------------------- */

hsm_result hsm_store_version_get(hsm_store *s, const char *key_id, uint32_t version,
                                 hsm_version_record *out) HSM_MUST_CHECK;
/* All versions of a key, ascending. */
typedef hsm_result (*hsm_version_cb)(const hsm_version_record *v, void *arg);
hsm_result hsm_store_version_list(hsm_store *s, const char *key_id, hsm_version_cb cb,
                                  void *arg) HSM_MUST_CHECK;

/* ---- Aliases ---------------------------------------------------------------- */

/* ALREADY_EXISTS when the name is taken; NOT_FOUND when the key does not exist. */
hsm_result hsm_store_alias_create(hsm_store *s, const char *name, const char *key_id,
                                  int64_t now) HSM_MUST_CHECK;
/* Points an existing alias at another key; NOT_FOUND when the alias does not exist. */
hsm_result hsm_store_alias_update(hsm_store *s, const char *name, const char *key_id,
                                  int64_t now) HSM_MUST_CHECK;
hsm_result hsm_store_alias_delete(hsm_store *s, const char *name) HSM_MUST_CHECK;
hsm_result hsm_store_alias_get(hsm_store *s, const char *name, hsm_alias_record *out) HSM_MUST_CHECK;
/* Ordered by name, after `after`; key_id filters to one key when not NULL. */
typedef hsm_result (*hsm_alias_cb)(const hsm_alias_record *a, void *arg);
hsm_result hsm_store_alias_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                                hsm_alias_cb cb, void *arg, bool *truncated) HSM_MUST_CHECK;
/* Deletes every alias of a key (used when a key is destroyed). */
hsm_result hsm_store_alias_delete_for_key(hsm_store *s, const char *key_id) HSM_MUST_CHECK;

/* ---- Tags ------------------------------------------------------------------- */

/* Adds or replaces tags atomically; LIMIT_EXCEEDED past HSM_MAX_TAGS_PER_KEY. */
hsm_result hsm_store_tags_put(hsm_store *s, const char *key_id, size_t n,
                              const hsm_tag tags[]) HSM_MUST_CHECK;
/* Removes the named tag keys (absent ones are ignored). */
hsm_result hsm_store_tags_remove(hsm_store *s, const char *key_id, size_t n,
                                 const char *const keys[]) HSM_MUST_CHECK;
typedef hsm_result (*hsm_tag_cb)(const hsm_tag *t, void *arg);
/* Ordered by tag key, after `after`. */
hsm_result hsm_store_tags_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                               hsm_tag_cb cb, void *arg, bool *truncated) HSM_MUST_CHECK;

/* ---- Principals --------------------------------------------------------------- */

hsm_result hsm_store_user_create(hsm_store *s, const hsm_user_record *u) HSM_MUST_CHECK;
hsm_result hsm_store_user_get(hsm_store *s, const char *name, hsm_user_record *out) HSM_MUST_CHECK;
/* Replaces the mutable fields (role, disabled, locked, failed_auth). */
hsm_result hsm_store_user_put(hsm_store *s, const hsm_user_record *u) HSM_MUST_CHECK;
/*
 * Records an authentication outcome atomically: success resets the counter;
 * failure increments it and locks the user once it reaches lock_after.
 * *out (if not NULL) receives the updated record.
 */
hsm_result hsm_store_user_auth_result(hsm_store *s, const char *name, bool success,
                                      uint32_t lock_after, hsm_user_record *out) HSM_MUST_CHECK;
typedef hsm_result (*hsm_user_cb)(const hsm_user_record *u, void *arg);
hsm_result hsm_store_user_list(hsm_store *s, hsm_user_cb cb, void *arg) HSM_MUST_CHECK;

hsm_result hsm_store_access_key_create(hsm_store *s, const hsm_access_key_record *k) HSM_MUST_CHECK;
hsm_result hsm_store_access_key_get(hsm_store *s, const char *access_key_id,
                                    hsm_access_key_record *out) HSM_MUST_CHECK;
hsm_result hsm_store_access_key_set_active(hsm_store *s, const char *access_key_id,
                                           bool active) HSM_MUST_CHECK;
typedef hsm_result (*hsm_access_key_cb)(const hsm_access_key_record *k, void *arg);
/* user filters to one user when not NULL. */
hsm_result hsm_store_access_key_list(hsm_store *s, const char *user, hsm_access_key_cb cb,
                                     void *arg) HSM_MUST_CHECK;

#endif
