/*
 * store.h - the storage seam (DESIGN.md "Storage and scale").
 *
 * Everything hsmd persists goes through these functions; a backend (SQLite,
 * embedded; PostgreSQL, shared by several nodes) implements them behind
 * hsm_store_ops (store/store_impl.h).  Rules every backend keeps:
 *
 *  - One transaction per logical change.  A function either applies its whole
 *    change or none of it.
 *  - Durability before acknowledgement: when a function that writes key
 *    material or principals' secrets returns success, the change survives
 *    kill -9 and power loss (SQLite: WAL with synchronous=FULL; PostgreSQL:
 *    the commit is flushed, synchronous_commit never lowered).
 *  - Thread safety: any function may be called from any thread concurrently.
 *  - The store never sees plaintext key material: version records carry
 *    material wrapped by the keystore.
 *  - Deleted secrets are overwritten, not just unlinked (SQLite:
 *    secure_delete).  PostgreSQL cannot promise this: an old row version
 *    stays on disk as a dead tuple until VACUUM, and in its WAL, base backups
 *    and replicas.  There, erased material leaves every live row in the same
 *    transaction, and what lingers is wrapped under the domain master key,
 *    which the database never holds (store_pg.h, "Erasure").
 *
 * Records are plain structs; strings the store returns in them are owned by
 * the record and released with the matching *_clear() function.  A function
 * with an output record overwrites it (without freeing what it held) only on
 * success; on failure the output is untouched.
 *
 * Errors every function may return besides those it names:
 *   HSM_ERR_STORE              the backend failed (its message, no data values;
 *                              HSM_STORE_CONNECT_FAILED first when it could not be reached)
 *   HSM_ERR_DEPENDENCY_TIMEOUT the backend stayed busy beyond its timeout
 *   HSM_ERR_NOMEM              out of memory
 *   HSM_ERR_VALIDATION         a value the store cannot hold (too long, empty
 *                              identifier, limit out of range)
 * An identifier too long to exist (key id, alias, user, access key) is
 * NOT_FOUND where it is looked up.  NULL where a pointer is required aborts.
 *
 * List callbacks run after the backend has finished reading and released its
 * resources, so a callback may call any store function (keys_due's callback
 * typically rotates or destroys the key it is given).  The record passed to a
 * callback is valid only during the call.  A callback's failure stops the
 * listing and is returned.
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

/* How a failure to reach a database server begins (its text may name the host). */
#define HSM_STORE_CONNECT_FAILED "cannot connect to PostgreSQL"

/* ---- Enumerations stored as their KMS names ------------------------------ */

typedef enum hsm_key_state {
	HSM_KEY_ENABLED,
	HSM_KEY_DISABLED,
	HSM_KEY_PENDING_DELETION,
	HSM_KEY_DESTROYED, /* material erased; tombstone kept for audit */
	HSM_KEY_PENDING_IMPORT, /* an EXTERNAL key without key material (none imported yet, or deleted) */
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
	HSM_ROLE_CUSTODIAN, /* approves sensitive requests (kms/approvals.c) */
	HSM_ROLE_COUNT
} hsm_role;

/*
 * Names of the enumerations (the KMS spelling where KMS has one).  The name
 * functions abort on a value outside the enumeration; the parse functions
 * return HSM_ERR_VALIDATION for an unknown name.
 */
/* "Enabled", "Disabled", "PendingDeletion", "Destroyed", "PendingImport" */
const char *hsm_key_state_name(hsm_key_state s);
const char *hsm_role_name(hsm_role r);           /* "crypto-officer", "crypto-user", "auditor", "custodian" */
const char *hsm_key_origin_name(hsm_key_origin o);      /* "AWS_KMS", "EXTERNAL" (KMS Origin) */
const char *hsm_rotation_type_name(hsm_rotation_type t); /* "NONE", "AUTOMATIC", "ON_DEMAND" */
hsm_result hsm_role_parse(const char *name, hsm_role *out) HSM_MUST_CHECK;
/* Role sets as text: "crypto-officer,crypto-user" (roles in enum order). */
hsm_result hsm_roles_format(unsigned roles, char *out, size_t cap) HSM_MUST_CHECK;
hsm_result hsm_roles_parse(const char *text, unsigned *out) HSM_MUST_CHECK;
hsm_result hsm_key_state_parse(const char *name, hsm_key_state *out) HSM_MUST_CHECK;
hsm_result hsm_key_origin_parse(const char *name, hsm_key_origin *out) HSM_MUST_CHECK;
hsm_result hsm_rotation_type_parse(const char *name, hsm_rotation_type *out) HSM_MUST_CHECK;

/* Key flags (bit set). */
#define HSM_KEYFLAG_JWT 0x1U /* published in the JWKS and usable for token signing */
/* An EXTERNAL key whose material is absent (never imported, deleted or expired). */
#define HSM_KEYFLAG_NO_MATERIAL 0x2U
/* An EXTERNAL key's version primary+1 (material pending rotation) holds material. */
#define HSM_KEYFLAG_PENDING_MATERIAL 0x4U
/*
 * A PendingImport key that was Disabled when its material went (deleted or
 * expired), or whose deletion was cancelled without its material: importing
 * the material again makes it Disabled, not Enabled (kms/import.c).
 */
#define HSM_KEYFLAG_STAYS_DISABLED 0x8U
/* Bits 8-15 are taken: a JWT key's JWS algorithm (HSM_KEYFLAG_JWT_ALG_MASK, kms/jwt.h). */

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
	/* EXTERNAL keys: when the imported material expires (epoch seconds); 0 = never, or none. */
	int64_t valid_to;
} hsm_key_record;

#define HSM_MATERIAL_DESC_MAX 256 /* KMS KeyMaterialDescription: 0-256 ASCII characters */
typedef struct hsm_version_record {
	char key_id[HSM_UUID_STRLEN + 1];
	uint32_t version;
	int64_t created;
	hsm_rotation_type rotation_type;
	hsm_buf wrapped;    /* wrapped material; empty once destroyed */
	hsm_buf public_der; /* SubjectPublicKeyInfo of asymmetric keys; else empty */
	/*
	 * Imported material: a keyed digest that identifies it (a reimport must
	 * match), kept when the material is erased; empty for generated material.
	 */
	hsm_buf digest;
	/* Imported material: when it expires (epoch seconds; 0 = never, or none held). */
	int64_t valid_to;
	/* Imported material: KMS KeyMaterialDescription ("" when none). */
	char description[HSM_MATERIAL_DESC_MAX + 1];
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
#define HSM_MAX_ALIASES_PER_KEY 50
typedef struct hsm_tag {
	char key[HSM_TAG_KEY_MAX * 4 + 1];     /* UTF-8: up to 4 bytes a character */
	char value[HSM_TAG_VALUE_MAX * 4 + 1];
} hsm_tag;

#define HSM_USER_NAME_MAX 64
typedef struct hsm_user_record {
	char name[HSM_USER_NAME_MAX + 1];
	unsigned roles;  /* bit (1 << hsm_role) per role held; at least one */
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

/*
 * A grant (KMS CreateGrant): permission for one principal to use one key in
 * the listed operations.  The store keeps operations as an opaque bit set and
 * constraints as opaque text; the KMS layer gives them meaning.
 */
#define HSM_GRANT_ID_LEN 64          /* lowercase hex */
#define HSM_GRANT_NAME_MAX 256
#define HSM_GRANT_PRINCIPAL_MAX 256
#define HSM_MAX_GRANTS_PER_KEY 50000
#define HSM_MAX_GRANTS_PER_GRANTEE 500 /* per key and grantee principal */
typedef struct hsm_grant_record {
	char grant_id[HSM_GRANT_ID_LEN + 1];
	char key_id[HSM_UUID_STRLEN + 1];
	char name[HSM_GRANT_NAME_MAX + 1];          /* "" when none */
	char grantee[HSM_GRANT_PRINCIPAL_MAX + 1];  /* never empty */
	char retiring[HSM_GRANT_PRINCIPAL_MAX + 1]; /* "" when none */
	uint32_t operations;                        /* bit set, at least one bit */
	char *constraints;                          /* owned text; never NULL after a get ("" when none) */
	int64_t created;                            /* epoch seconds */
} hsm_grant_record;

/* Free what the record owns and zero it; NULL is a no-op.  A zeroed record is clear. */
void hsm_key_record_clear(hsm_key_record *r);
void hsm_version_record_clear(hsm_version_record *r);
void hsm_access_key_record_clear(hsm_access_key_record *r);
void hsm_grant_record_clear(hsm_grant_record *r);
/* Deep copy (dst is overwritten, set only on success; clear it afterwards). */
hsm_result hsm_key_record_copy(hsm_key_record *dst, const hsm_key_record *src) HSM_MUST_CHECK;

/* Largest page a list function returns (its limit must be in [1, this]). */
#define HSM_STORE_LIST_MAX 10000

/* ---- Opening ---------------------------------------------------------------- */

/*
 * Opens (creating if needed) the store at location: a directory path for the
 * embedded SQLite backend ("DIR" or "sqlite:DIR"), or a libpq connection URI
 * for PostgreSQL ("postgresql://user:password@host:port/dbname?param=value",
 * "postgres://" alike; the whole URI goes to libpq).  Runs pending schema
 * migrations.  The caller owns *out and releases it with hsm_store_close.
 *
 * SQLite: DIR is created with mode 0700 when missing and holds hsmd.db
 * (0600, with its -wal and -shm files) and hsmd.lock.  The handle holds an
 * exclusive lock on hsmd.lock for its life; opening a directory another
 * handle or process holds fails with HSM_ERR_CONFLICT naming the holder's
 * pid.  A store written by a newer hsmd (a schema version this one does not
 * know) is refused with HSM_ERR_STORE; an older one is migrated, one
 * transaction per schema step.  A location naming another backend
 * ("scheme://...") that is not built in fails with HSM_ERR_VALIDATION.
 *
 * PostgreSQL: several nodes (hsmd processes, here or elsewhere) open the
 * same database at once; there is no lock on it.  Nodes opening an empty
 * database together create the schema once.  The database must exist and the
 * role must be able to create tables in its search_path schema.  A URI that
 * libpq cannot parse is HSM_ERR_VALIDATION; a server that cannot be reached
 * is HSM_ERR_STORE (HSM_ERR_DEPENDENCY_TIMEOUT after connect_timeout,
 * 5 seconds unless the URI sets it).  No message holds the password.
 * A handle belongs to the process that opened it: a child of fork() opens
 * its own (after the parent closed the directory) instead of using it.
 */
hsm_result hsm_store_open(const char *location, hsm_store **out) HSM_MUST_CHECK;
/*
 * Opens an existing store as it is, for commands that only read it (hsmctl
 * status, backup create): nothing is created and the schema is not
 * migrated, so the hsmd that wrote the store can still open it afterwards.
 * A SQLite directory without HSM_STORE_DB_FILE, or a database without hsmd's
 * schema, is HSM_ERR_NOT_FOUND ("no hsmd store in ..."); a store newer than
 * this build is HSM_ERR_STORE as for hsm_store_open.  The handle may write
 * (an older schema's tables permitting); hsm_store_schema_version tells the
 * store's own version, which may be older than this build's.
 */
hsm_result hsm_store_open_existing(const char *location, hsm_store **out) HSM_MUST_CHECK;
/*
 * Opens the store at location for a server start that may still be refused
 * by what it finds there (another account's keys, its node id held by a
 * running node): an existing store is opened as it is
 * (hsm_store_open_existing), its schema left for hsm_store_migrate once the
 * start is sure to go on; a location holding no store yet gets a new one at
 * once, as from hsm_store_open (creating a store upgrades nothing).  On a
 * shared store, a start refused after migrating would leave the schema
 * upgraded by a node that never served it, and the nodes not yet upgraded
 * would give up the scheduled work to nobody.
 */
hsm_result hsm_store_open_unmigrated(const char *location, hsm_store **out) HSM_MUST_CHECK;
/*
 * Brings a store opened as it is up to this build's schema, as
 * hsm_store_open does when opening it (the same log line, the same record
 * of the upgrade for the next Startup event, hsm_store_migrated_from); a
 * store already current is left as it is.  No other call on s may run.
 */
hsm_result hsm_store_migrate(hsm_store *s) HSM_MUST_CHECK;
/* Releases the handle (SQLite: and its lock; PostgreSQL: its connections).  No call on s may be running.  NULL is a no-op. */
void hsm_store_close(hsm_store *s);
/*
 * Checks that the store's files are whole, as far as it can be done
 * quickly: SQLite's PRAGMA quick_check (each page and index structure, not
 * the rows' agreement with indexes), HSM_ERR_STORE naming the first problem
 * found.  PostgreSQL checks its own pages: nothing to do there.  For hsmctl
 * restore, whose store file meets whatever SQLite finds beside it.
 */
hsm_result hsm_store_check(hsm_store *s) HSM_MUST_CHECK;
/*
 * How many of the store's operations since it was opened found its file
 * damaged (SQLite: SQLITE_CORRUPT, SQLITE_NOTADB; each such failure is
 * HSM_ERR_STORE too).  Such damage does not heal by itself: a node that sees
 * it is not ready until it serves a sound store.  Always 0 on PostgreSQL,
 * which reports its own.  Safe from any thread.
 */
uint64_t hsm_store_corrupt_seen(const hsm_store *s);
/* Schema version the store is at (for status output and tests). */
int hsm_store_schema_version(hsm_store *s);
/*
 * The schema version this build writes for the store's backend: a store
 * opened as it is (hsm_store_open_existing) may be older, and then lacks
 * what later steps added.
 */
int hsm_store_schema_latest(hsm_store *s);
/*
 * The schema version this handle's opening migrated the store from; 0 when
 * it migrated nothing (the store was current, new, or another node of a
 * shared store brought it forward first).
 */
int hsm_store_migrated_from(hsm_store *s);
/*
 * The schema version the store had before its last migration, while no
 * audit trail has said that migration yet (hsm_store_migration_reported);
 * 0 when there is none to say.  A migration's start that stopped before its
 * Startup record (refused, killed) leaves it for the next start to say.
 * When the store's record cannot be read: hsm_store_migrated_from.
 */
int hsm_store_migration_unreported(hsm_store *s);
/*
 * Records that a Startup record said the migration from `from` to this
 * schema, so later starts do not say it again.  Two nodes saying it at once
 * both succeed.
 */
hsm_result hsm_store_migration_reported(hsm_store *s, int from) HSM_MUST_CHECK;

/* ---- Metadata: small named values (store id, KCV, quorum settings, ...) ---- */

/*
 * Replaces the contents of out (keeping its secure flag) with the value.
 * HSM_ERR_NOT_FOUND when absent.  Names are 1..255 bytes.
 */
hsm_result hsm_store_meta_get(hsm_store *s, const char *name, hsm_buf *out) HSM_MUST_CHECK;
/*
 * Writes n new values atomically and durably; n == 0 does nothing.  Values
 * are written once: when any of the names is already set, nothing is written
 * and the result is ALREADY_EXISTS (two nodes initializing one shared store
 * at the same moment: exactly one of them succeeds).
 */
hsm_result hsm_store_meta_put(hsm_store *s, size_t n, const char *const names[],
                              const hsm_buf *const values[]) HSM_MUST_CHECK;

/* ---- Keys ------------------------------------------------------------------ */

/*
 * Inserts a key and its first version atomically.  ALREADY_EXISTS on a
 * duplicate id.  first->key_id must equal key->key_id and first->version
 * key->primary_version (HSM_ERR_VALIDATION otherwise); a key cannot be
 * created Destroyed (HSM_ERR_INVALID_STATE).  NULL description or policy
 * is stored as "".
 */
hsm_result hsm_store_key_create(hsm_store *s, const hsm_key_record *key,
                                const hsm_version_record *first) HSM_MUST_CHECK;
/* The same with the key's first tags, in the same transaction (hsm_store_tags_put's rules). */
hsm_result hsm_store_key_create_tagged(hsm_store *s, const hsm_key_record *key,
                                       const hsm_version_record *first, size_t n_tags,
                                       const hsm_tag tags[]) HSM_MUST_CHECK;
/* NOT_FOUND when there is no such key (Destroyed keys are still returned). */
hsm_result hsm_store_key_get(hsm_store *s, const char *key_id, hsm_key_record *out) HSM_MUST_CHECK;

/*
 * Read-modify-write in one transaction: loads the key, calls fn(record, arg),
 * and if fn succeeds writes the record back (and inserts add_version when
 * not NULL; it must be version primary_version+1 of the loaded record, else
 * HSM_ERR_CONFLICT).  fn may change any field but key_id; its failure aborts
 * the transaction and is returned.  On success *after (if not NULL) receives
 * the record as written.
 *
 * When add_version is given the store makes it primary: after fn returns it
 * sets primary_version to add_version->version, so fn need not (and any other
 * value fn chose is overwritten).  add_version->key_id must equal key_id
 * (HSM_ERR_VALIDATION).  The store keeps `updated` as fn leaves it.  fn
 * runs before add_version is read, so a caller may let fn fill in fields of
 * it (a rotation dates its version in the transaction this way).
 *
 * State rules the store enforces (HSM_ERR_INVALID_STATE, nothing changes):
 * only hsm_store_key_destroy makes a key Destroyed, a Destroyed key never
 * leaves that state, and a Destroyed key gets no new version.
 *
 * fn runs inside the backend's write transaction, which other writers wait
 * for: keep it short and do not call store functions from it (doing so is a
 * contract violation and aborts).  The record's strings are malloc'ed: fn
 * replaces one by freeing it and storing a malloc'ed string; the store frees
 * it afterwards.
 */
typedef hsm_result (*hsm_key_update_fn)(hsm_key_record *key, void *arg);
hsm_result hsm_store_key_update(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
                                const hsm_version_record *add_version,
                                hsm_key_record *after) HSM_MUST_CHECK;

/*
 * Destroys a key: in one transaction sets state Destroyed (deletion_date is
 * kept, updated becomes now), erases the wrapped material of every version
 * (public keys and metadata remain as a tombstone) and deletes the key's
 * aliases and grants, then makes sure the erased bytes are overwritten on disk
 * (SQLite: secure_delete plus a truncating WAL checkpoint).  NOT_FOUND when
 * there is no such key.  Destroying a Destroyed key repeats the erasure, so
 * a call that failed in the final step (e.g. DEPENDENCY_TIMEOUT while readers
 * held the WAL) can simply be retried.
 */
hsm_result hsm_store_key_destroy(hsm_store *s, const char *key_id, int64_t now) HSM_MUST_CHECK;
/*
 * The scheduler's destruction: the same, but decided under the key's row
 * lock (in the write transaction) only if the key is still PendingDeletion
 * with deletion_date <= now; otherwise HSM_ERR_INVALID_STATE and nothing
 * changes (the deletion was cancelled meanwhile, or another node destroyed
 * the key already).
 */
hsm_result hsm_store_key_destroy_due(hsm_store *s, const char *key_id,
                                     int64_t now) HSM_MUST_CHECK;

/*
 * Imports or erases one version's key material (KMS ImportKeyMaterial,
 * DeleteImportedKeyMaterial, expiry), in one transaction with a
 * read-modify-write of the key as hsm_store_key_update does (fn, which may
 * be NULL, runs on the loaded record under the same rules; the state rules
 * hold).  material->key_id must equal key_id (HSM_ERR_VALIDATION).
 * NOT_FOUND when the key does not exist; INVALID_STATE for a Destroyed key.
 *
 *  - A version up to the key's primary_version (one in use) must exist
 *    (NOT_FOUND); its wrapped, public_der, digest, valid_to and description
 *    are replaced with material's.  Its digest, once set, never changes: when
 *    it is set and material->digest differs, INCORRECT_KEY_MATERIAL and
 *    nothing changes (two nodes importing different first material at once:
 *    one wins, the other is told).
 *  - Version primary_version + 1 is material waiting to become primary
 *    (KMS PENDING_ROTATION, made primary by hsm_store_key_promote): when
 *    absent it is inserted from material (created and rotation_type too,
 *    without making it primary); when present it is replaced whole, digest
 *    included, as it is not yet in use.  Any later version: NOT_FOUND.
 *  - Then, before fn runs, the store sets two fields of the loaded record
 *    from the key's versions as they now are: valid_to, the earliest nonzero
 *    valid_to among the versions that hold material (0 when none), and the
 *    flag HSM_KEYFLAG_NO_MATERIAL, set when a version up to primary_version
 *    holds no material and cleared otherwise.  fn decides the state.
 *
 * An empty material->wrapped erases the material (the version's valid_to
 * becomes 0), and the erased bytes are then overwritten on disk as
 * hsm_store_key_destroy makes sure of; as there, a failure of that last step
 * comes after the commit, and repeating the call finishes the overwrite.  An
 * erasure with a nonzero material->valid_to (an expiry) is conditional: the
 * version must still hold material expiring at exactly that time, else
 * CONFLICT and nothing changes (it was imported again meanwhile).
 */
hsm_result hsm_store_key_set_material(hsm_store *s, const char *key_id, hsm_key_update_fn fn,
                                      void *arg, const hsm_version_record *material,
                                      hsm_key_record *after) HSM_MUST_CHECK;

/*
 * Makes version primary_version + 1, added by hsm_store_key_set_material,
 * the key's primary version (KMS RotateKeyOnDemand of imported material), in
 * one transaction with a read-modify-write of the key as hsm_store_key_update
 * does (fn may be NULL; the state rules hold).  `version` must be
 * primary_version + 1 of the loaded key (CONFLICT otherwise: another rotation
 * came first), exist (NOT_FOUND) and hold material (INVALID_STATE).  The
 * version's created becomes `now` and its rotation_type `type`; after fn,
 * primary_version becomes `version`.  NOT_FOUND when the key does not exist,
 * INVALID_STATE when it is Destroyed.
 */
hsm_result hsm_store_key_promote(hsm_store *s, const char *key_id, uint32_t version, int64_t now,
                                 hsm_rotation_type type, hsm_key_update_fn fn, void *arg,
                                 hsm_key_record *after) HSM_MUST_CHECK;

/*
 * Lists keys ordered by key id, starting after `after` (NULL or "" for the
 * first page), at most limit records; *truncated tells whether more follow
 * (then the last key id passed to cb is the next page's `after`).
 * Destroyed keys are skipped unless include_destroyed.
 */
typedef hsm_result (*hsm_key_cb)(const hsm_key_record *key, void *arg);
/*
 * The records of those of the n distinct keys (at most HSM_STORE_KEYS_GET_MAX)
 * that exist, Destroyed ones included, read at once and passed to cb in no
 * particular order: a key that is not passed does not exist.
 */
#define HSM_STORE_KEYS_GET_MAX 1000
hsm_result hsm_store_keys_get(hsm_store *s, size_t n, const char *const key_ids[], hsm_key_cb cb,
                              void *arg) HSM_MUST_CHECK;
hsm_result hsm_store_key_list(hsm_store *s, const char *after, size_t limit,
                              bool include_destroyed, hsm_key_cb cb, void *arg,
                              bool *truncated) HSM_MUST_CHECK;
/*
 * As hsm_store_key_list, without destroyed keys, for the keys flagged
 * HSM_KEYFLAG_JWT only; served by an index of those keys, so a page costs
 * what they number whatever the store holds.
 */
hsm_result hsm_store_jwt_key_list(hsm_store *s, const char *after, size_t limit,
                                  hsm_key_cb cb, void *arg, bool *truncated) HSM_MUST_CHECK;
/* Keys not destroyed. */
hsm_result hsm_store_key_count(hsm_store *s, uint64_t *out) HSM_MUST_CHECK;

/*
 * Keys with work due at `now`: PendingDeletion whose deletion_date <= now;
 * imported material that expired (valid_to != 0 and <= now, any state but
 * Destroyed, unless the key's deletion is due); or rotation enabled with
 * next_rotation <= now (Enabled keys whose material has not expired;
 * EXTERNAL keys without HSM_KEYFLAG_PENDING_MATERIAL, which cannot rotate
 * yet, after all others).  Each key is listed once, for the first of these
 * that applies.  At most limit keys per call: deletions first, oldest due first,
 * then expirations, then rotations, each oldest due first.  A key whose work
 * keeps failing stays due, so a caller that cannot make progress on a key
 * should not simply call again.
 */
/*
 * How many keys have work coming, counted in full (not a listing's first
 * page).  Rotating keys are Enabled keys with rotation enabled: `rotations`
 * those with next_rotation <= horizon, `material_needed` those of them that
 * are EXTERNAL without HSM_KEYFLAG_PENDING_MATERIAL (nothing to rotate to
 * until material is imported), `overdue` those with next_rotation <=
 * overdue_before.  `expirations` are keys not Destroyed whose imported
 * material expires (valid_to != 0) by horizon.  `deletions_overdue` are keys
 * still PendingDeletion whose deletion_date <= overdue_before: no scheduler
 * destroyed them, or their destruction keeps failing.  A key may count in
 * several.  Each count walks an index range.
 */
typedef struct hsm_due_counts {
	uint64_t rotations;
	uint64_t material_needed;
	uint64_t overdue;
	uint64_t expirations;
	uint64_t deletions_overdue;
} hsm_due_counts;
hsm_result hsm_store_keys_due_count(hsm_store *s, int64_t horizon, int64_t overdue_before,
                                    hsm_due_counts *out) HSM_MUST_CHECK;
hsm_result hsm_store_keys_due(hsm_store *s, int64_t now, size_t limit, hsm_key_cb cb,
                              void *arg) HSM_MUST_CHECK;

/* ---- Leadership -------------------------------------------------------------- */

/*
 * Leadership of the store, for the work exactly one of the nodes sharing a
 * store should do at a time (scheduled rotation and destruction, scheduled
 * backups).  With want, takes the leadership when nobody holds it and tells
 * whether this handle holds it; each such call also makes sure a leadership
 * already held is still held.  Without want, gives it up (*leading false).
 *
 * SQLite: one process holds the store (its directory lock), so it leads
 * whenever it wants to.  PostgreSQL: a session advisory lock on a connection
 * kept for it alone; the server releases it when that session ends, because
 * the node gave it up, closed the store, died, or lost the database, and the
 * next node to ask takes it.  The leadership is a lease of lease_ms: the
 * server also ends that session after lease_ms without a statement, and each
 * call with want is one, so a leader that stops asking (stopped, hung) loses
 * it.  A failure to reach the database is returned (*leading false): a node
 * that cannot reach it does not lead.
 */
hsm_result hsm_store_lead(hsm_store *s, bool want, uint32_t lease_ms,
                          bool *leading) HSM_MUST_CHECK;

/* ---- This node's id ----------------------------------------------------------- */

/*
 * Claims node_id on the store for as long as the handle stays open: the id
 * names the node's audit trail, its rows of the audit outbox (which the node
 * settles as its own, and another node only while it holds the id,
 * hsm_store_node_hold) and its trail's copy, so two running nodes must never
 * share one.  The first call takes the claim; each later call with the same
 * id proves it is still held, and takes it again when it was lost (the
 * database ended the session) and nobody else took it meanwhile.
 *
 * SQLite: one process holds the store (its directory lock): always granted.
 * PostgreSQL: a session advisory lock keyed by a hash of the id, on a
 * connection kept for it alone, which the server releases when that session
 * ends (the node closed the store, died, or lost the database).  Another
 * session holding it is HSM_ERR_CONFLICT, naming the id and, as far as the
 * role may see it, the holder's session (process id, client address,
 * application name); a database that cannot be reached is its own failure.
 */
hsm_result hsm_store_claim_node(hsm_store *s, const char *node_id) HSM_MUST_CHECK;
/*
 * hsm_store_claim_node, and on HSM_ERR_CONFLICT *adopting says whether the
 * holder is a hold (hsm_store_node_hold) of another node adopting the id's
 * audit outbox rows: one that ends by itself soon, so worth waiting for,
 * where a running node holding the id is not.
 */
hsm_result hsm_store_claim_node_why(hsm_store *s, const char *node_id,
                                    bool *adopting) HSM_MUST_CHECK;

/* ---- Backups ---------------------------------------------------------------- */

/*
 * Writes a transaction-consistent copy of the whole store to path, a new
 * file (mode 0600; an existing file is refused).  Writers do not wait for
 * it.  The copy is a SQLite store file, which hsm_store_open opens from a
 * directory holding it as HSM_STORE_DB_FILE, whatever the backend: a
 * PostgreSQL store is read in one REPEATABLE READ transaction and written
 * out record for record.  It is not synced (the caller reads it back).  On
 * failure nothing is left at path.
 */
hsm_result hsm_store_snapshot(hsm_store *s, const char *path) HSM_MUST_CHECK;
/*
 * The schema version of the SQLite store hsm_store_snapshot writes: a SQLite
 * store's own (opened as it is, it may be older than this build's), this
 * build's SQLite schema for any other backend, whose version numbers are
 * its own and say nothing of the copy's.
 */
int hsm_store_snapshot_schema(hsm_store *s);

/*
 * Copies everything src holds into dst, record for record and exactly:
 * metadata, keys in every state (Destroyed ones with their erased versions)
 * with all their versions, aliases, tags and grants, users with their counters and
 * lock state, access keys with their active flags, certificates, every
 * timestamp as stored.  Any backends (SQLite to PostgreSQL to move a node, a
 * restored backup into PostgreSQL, ...).  src is read in one read transaction and dst
 * written in one write transaction: dst receives one consistent state of
 * src, whole or not at all.  dst must be empty (no metadata, keys or users):
 * else HSM_ERR_CONFLICT and nothing changes.  src and dst must be different
 * handles; writers of src do not wait for the copy.
 */
hsm_result hsm_store_copy(hsm_store *src, hsm_store *dst) HSM_MUST_CHECK;
/*
 * Whether s holds anything hsm_store_copy would refuse to copy into (metadata
 * other than its own schema upgrades', keys or users), read from tables every
 * schema has: a store opened as it is (hsm_store_open_unmigrated) is checked
 * before its schema is brought forward.  The copy checks again, atomically.
 */
hsm_result hsm_store_holds_any(hsm_store *s, bool *any) HSM_MUST_CHECK;
/*
 * hsm_store_copy whose write transaction carries the calling thread's audit
 * outbox row (store.h, "Audit outbox"): a restore into a shared store, whose
 * row is then in dst exactly when the copy is.
 */
hsm_result hsm_store_copy_noted(hsm_store *src, hsm_store *dst) HSM_MUST_CHECK;
/*
 * Calls cb with the name of every metadata value whose name begins with
 * prefix (the rest of the name after it), in name order.  cb runs inside the
 * store's read transaction: it must not call the store.  Reads the metadata
 * only (the export stops where the other records begin).
 */
typedef hsm_result (*hsm_store_meta_name_cb)(const char *rest, void *arg);
hsm_result hsm_store_meta_names(hsm_store *s, const char *prefix, hsm_store_meta_name_cb cb,
                                void *arg) HSM_MUST_CHECK;
/* The file name a SQLite store keeps its database under, inside its directory. */
#define HSM_STORE_DB_FILE "hsmd.db"

/* ---- Re-wrapping under a new master key (hsmctl rekey) ---------------------------- */

/* A secret the store holds wrapped by the keystore. */
typedef enum hsm_wrapped_kind {
	HSM_WRAPPED_KEY_MATERIAL, /* a key version's material (key_versions) */
	HSM_WRAPPED_ACCESS_KEY,   /* an access key's secret (access_keys) */
} hsm_wrapped_kind;
typedef struct hsm_wrapped_item {
	hsm_wrapped_kind kind;
	const char *id;        /* the key id, or the access key id */
	uint32_t version;      /* key material: the version (else 0) */
	hsm_key_spec spec;     /* key material: its key's spec and usage (the AAD binds them) */
	hsm_key_usage usage;
	const hsm_buf *wrapped; /* as stored; never empty (erased material is skipped) */
} hsm_wrapped_item;
/*
 * Appends the item's secret wrapped anew to out (empty on entry).  Runs
 * inside the store's write transaction: it must not call the store.  Its
 * failure rolls everything back and is returned.
 */
typedef hsm_result (*hsm_rewrap_fn)(const hsm_wrapped_item *item, hsm_buf *out, void *arg);

typedef struct hsm_store_rekey_req {
	/* Metadata that must hold exactly these values (the master key being replaced). */
	size_t n_expect;
	const char *const *expect_names;
	const hsm_buf *const *expect_values;
	hsm_rewrap_fn fn;
	void *arg;
	/* Metadata then written, inserted or replaced (the new master key's identity). */
	size_t n_meta;
	const char *const *meta_names;
	const hsm_buf *const *meta_values;
} hsm_store_rekey_req;

/* What hsm_store_rekey re-wrapped. */
typedef struct hsm_store_rekey_counts {
	uint64_t versions;    /* key versions holding material */
	uint64_t access_keys; /* access-key secrets */
} hsm_store_rekey_counts;

/*
 * Replaces every wrapped secret of the store by what fn makes of it, and the
 * metadata naming the master key, in one write transaction: a failure or a
 * crash leaves the store as it was, success leaves every secret and the
 * metadata changed together.  First CONFLICT (nothing changes) unless every
 * expect_names[i] holds expect_values[i] (another rekey came first), or,
 * PostgreSQL, when another session of hsmd (application_name "hsmd": a node,
 * another hsmctl) is connected to the database: the nodes must be stopped,
 * or they would go on wrapping under the old key.  Then fn is called for
 * every key version that holds material (with its key's spec and usage) and
 * every access key, a page at a time, and each row rewritten with what fn
 * returned; then the metadata is written.  The old wrapped bytes are then
 * overwritten on disk as hsm_store_key_destroy makes sure of (SQLite).
 * *counts (optional) receives what was re-wrapped.  A failure of that last
 * step, like a PostgreSQL COMMIT that got no answer, comes when the outcome
 * is already decided or unknown: a caller that must know reads the metadata
 * back.
 */
hsm_result hsm_store_rekey(hsm_store *s, const hsm_store_rekey_req *req,
                           hsm_store_rekey_counts *counts) HSM_MUST_CHECK;

/* ---- Key versions ----------------------------------------------------------- */

/* NOT_FOUND when the key or the version does not exist. */
hsm_result hsm_store_version_get(hsm_store *s, const char *key_id, uint32_t version,
                                 hsm_version_record *out) HSM_MUST_CHECK;
/* All versions of a key, ascending.  NOT_FOUND when the key does not exist. */
typedef hsm_result (*hsm_version_cb)(const hsm_version_record *v, void *arg);
hsm_result hsm_store_version_list(hsm_store *s, const char *key_id, hsm_version_cb cb,
                                  void *arg) HSM_MUST_CHECK;

/* ---- Key state conditions of writes ------------------------------------------ */

/*
 * The key state a write on a key's aliases, tags or grants depends on (KMS:
 * CreateGrant needs a key that is enabled, CreateAlias and TagResource one
 * that is not pending deletion).  The write reads the state under the lock
 * it takes on the key's row and calls fn with it before it changes anything;
 * fn's failure aborts the write and is returned.  A state another node, or
 * another request, changed a moment before is so seen, which a check of a
 * cached record cannot promise.  A NULL condition, or a NULL fn, asks nothing.
 * fn runs inside the write transaction: it must be short and must not call
 * the store.
 */
typedef struct hsm_key_state_check {
	hsm_result (*fn)(const char *key_id, hsm_key_state state, const void *arg);
	const void *arg;
} hsm_key_state_check;

/* ---- Aliases ---------------------------------------------------------------- */

/*
 * ALREADY_EXISTS when the name is taken; NOT_FOUND when the key does not
 * exist; LIMIT_EXCEEDED when the key has HSM_MAX_ALIASES_PER_KEY aliases
 * already; VALIDATION when the name gives its key a PKCS#11 CKA_ID
 * (HSM_PKCS11_ID_ALIAS, common/encoding.h) and another alias of the key
 * gives it one already; what `check` (may be NULL) returns for the key's
 * state.  All are read in the write transaction, so concurrent writers, on
 * one node or on nodes sharing a store, cannot pass them together.
 */
hsm_result hsm_store_alias_create(hsm_store *s, const char *name, const char *key_id, int64_t now,
                                  const hsm_key_state_check *check) HSM_MUST_CHECK;
/*
 * Points an existing alias at another key; NOT_FOUND when the alias or the
 * key does not exist; CONFLICT when `from` is not NULL and the alias no
 * longer points at that key (it was moved since the caller read it, and the
 * caller's decision was about the key it left); LIMIT_EXCEEDED, VALIDATION
 * and `check` (on the key it goes to) as hsm_store_alias_create.
 */
hsm_result hsm_store_alias_update(hsm_store *s, const char *name, const char *from,
                                  const char *key_id, int64_t now,
                                  const hsm_key_state_check *check) HSM_MUST_CHECK;
/*
 * The alias limit those two apply, given how many other aliases the key has
 * (counted in their write transaction): LIMIT_EXCEEDED when reached.  Also
 * for a caller that checks ahead of a change (kms, before an approval).
 */
hsm_result hsm_store_alias_room(const char *key_id, int64_t others) HSM_MUST_CHECK;
/* NOT_FOUND when the alias does not exist. */
hsm_result hsm_store_alias_delete(hsm_store *s, const char *name) HSM_MUST_CHECK;
hsm_result hsm_store_alias_get(hsm_store *s, const char *name, hsm_alias_record *out) HSM_MUST_CHECK;
/*
 * Ordered by name, after `after` (NULL or "" for the first page), at most
 * limit; key_id filters to one key when not NULL (NOT_FOUND when that key
 * does not exist).
 */
typedef hsm_result (*hsm_alias_cb)(const hsm_alias_record *a, void *arg);
hsm_result hsm_store_alias_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                                hsm_alias_cb cb, void *arg, bool *truncated) HSM_MUST_CHECK;
/* Deletes every alias of a key (used when a key is destroyed). */
hsm_result hsm_store_alias_delete_for_key(hsm_store *s, const char *key_id) HSM_MUST_CHECK;

/* ---- Tags ------------------------------------------------------------------- */

/*
 * Adds or replaces tags atomically (a key given twice: the last value wins);
 * LIMIT_EXCEEDED when the key would hold more than HSM_MAX_TAGS_PER_KEY,
 * NOT_FOUND when the key does not exist, VALIDATION for an empty tag key.
 */
hsm_result hsm_store_tags_put(hsm_store *s, const char *key_id, size_t n, const hsm_tag tags[],
                              const hsm_key_state_check *check) HSM_MUST_CHECK;
/*
 * Removes the named tag keys (absent ones are ignored); NOT_FOUND when the
 * key does not exist.  Both answer what `check` (may be NULL) returns for
 * the key's state, read under its row lock.
 */
hsm_result hsm_store_tags_remove(hsm_store *s, const char *key_id, size_t n,
                                 const char *const keys[],
                                 const hsm_key_state_check *check) HSM_MUST_CHECK;
typedef hsm_result (*hsm_tag_cb)(const hsm_tag *t, void *arg);
/* Ordered by tag key, after `after` (NULL or ""), at most limit; NOT_FOUND for a missing key. */
hsm_result hsm_store_tags_list(hsm_store *s, const char *key_id, const char *after, size_t limit,
                               hsm_tag_cb cb, void *arg, bool *truncated) HSM_MUST_CHECK;

/* ---- Grants ------------------------------------------------------------------ */

/*
 * Adds a grant (g->grant_id unique in the whole store, g->key_id an existing
 * key that is not Destroyed).  NULL constraints is stored as "".
 *
 * Retried creation (KMS CreateGrant with a Name): when g->name is not empty
 * and the key already holds a grant with the same name, grantee, retiring
 * principal, operations and constraints, nothing is written and *g is
 * overwritten with that grant's grant_id and created (constraints left as
 * given); *existed (optional) tells which happened.
 *
 * NOT_FOUND when the key does not exist, INVALID_STATE when it is Destroyed,
 * ALREADY_EXISTS for a duplicate grant_id, LIMIT_EXCEEDED when the key would
 * hold more than HSM_MAX_GRANTS_PER_KEY grants, or more than
 * HSM_MAX_GRANTS_PER_GRANTEE for that grantee; VALIDATION for an empty
 * grant_id or grantee or an operations set of 0; what `check` (may be NULL)
 * returns for the key's state, asked before a retried creation is looked
 * for.  All checked in one write transaction, so concurrent creators on a
 * shared store cannot exceed a limit.
 */
hsm_result hsm_store_grant_create(hsm_store *s, hsm_grant_record *g, bool *existed,
                                  const hsm_key_state_check *check) HSM_MUST_CHECK;
/* The grant limits it applies, given the key's counts: LIMIT_EXCEEDED when reached. */
hsm_result hsm_store_grant_room(const char *key_id, int64_t for_grantee,
                                int64_t for_key) HSM_MUST_CHECK;
/*
 * Whether g would fit under the limits hsm_store_grant_create applies, by
 * the same counts, read only (LIMIT_EXCEEDED when it would not).  A check
 * ahead of a write, which counts again in its own transaction.
 */
hsm_result hsm_store_grant_fits(hsm_store *s, const hsm_grant_record *g) HSM_MUST_CHECK;
/* NOT_FOUND when the key holds no grant with that id. */
hsm_result hsm_store_grant_get(hsm_store *s, const char *key_id, const char *grant_id,
                               hsm_grant_record *out) HSM_MUST_CHECK;
/* Deletes one grant; NOT_FOUND when the key holds no grant with that id. */
hsm_result hsm_store_grant_delete(hsm_store *s, const char *key_id,
                                  const char *grant_id) HSM_MUST_CHECK;
/*
 * A key's grants ordered by grant_id, after `after` (NULL or "" for the
 * first page), at most limit; grantee (NULL: any) keeps only that grantee's.
 * NOT_FOUND when the key does not exist.
 */
typedef hsm_result (*hsm_grant_cb)(const hsm_grant_record *g, void *arg);
hsm_result hsm_store_grant_list(hsm_store *s, const char *key_id, const char *grantee,
                                const char *after, size_t limit, hsm_grant_cb cb, void *arg,
                                bool *truncated) HSM_MUST_CHECK;
/* Every key's grants whose retiring principal is `retiring`, ordered by grant_id (paged as above). */
hsm_result hsm_store_grant_list_retiring(hsm_store *s, const char *retiring, const char *after,
                                         size_t limit, hsm_grant_cb cb, void *arg,
                                         bool *truncated) HSM_MUST_CHECK;

/* ---- Principals --------------------------------------------------------------- */

/*
 * ALREADY_EXISTS when the name is taken, or a user's name equals it
 * ignoring ASCII case ("Alice" beside "alice": one person, or a policy's
 * aws:username sidestepped), checked in the creation's own transaction so
 * that concurrent creations cannot both pass; VALIDATION for an empty name.
 * Users already stored with such names stay (hsmd warns of them at start).
 */
hsm_result hsm_store_user_create(hsm_store *s, const hsm_user_record *u) HSM_MUST_CHECK;
/* NOT_FOUND when there is no such user. */
hsm_result hsm_store_user_get(hsm_store *s, const char *name, hsm_user_record *out) HSM_MUST_CHECK;
/* Replaces the mutable fields (role, disabled, locked, failed_auth); NOT_FOUND when absent. */
hsm_result hsm_store_user_put(hsm_store *s, const hsm_user_record *u) HSM_MUST_CHECK;
/* One change of one user, written alone (one UPDATE of the columns it
 * touches), so changes made at the same time by other nodes or threads
 * (another of these, a failed authentication) are neither undone nor lost. */
typedef enum hsm_user_change {
	HSM_USER_DISABLE, /* disabled = true */
	HSM_USER_ENABLE,  /* disabled = false */
	HSM_USER_UNLOCK,  /* locked = false, failed_auth = 0 */
} hsm_user_change;
/* NOT_FOUND when there is no such user. */
hsm_result hsm_store_user_change(hsm_store *s, const char *name,
                                 hsm_user_change change) HSM_MUST_CHECK;
/*
 * Records an authentication outcome atomically: success resets the counter
 * (it does not unlock a locked user: callers refuse locked users before
 * authenticating them); failure increments it and locks the user once it
 * reaches lock_after (0: never lock).  *out (if not NULL) receives the
 * updated record; *locked_now (if not NULL) whether this outcome locked a
 * user that was not locked (one of concurrent failures, whatever the count:
 * lock_after may have been lowered below it).  NOT_FOUND when there is no
 * such user.
 */
hsm_result hsm_store_user_auth_result(hsm_store *s, const char *name, bool success,
                                      uint32_t lock_after, hsm_user_record *out,
                                      bool *locked_now) HSM_MUST_CHECK;
/* All users, ordered by name. */
typedef hsm_result (*hsm_user_cb)(const hsm_user_record *u, void *arg);
hsm_result hsm_store_user_list(hsm_store *s, hsm_user_cb cb, void *arg) HSM_MUST_CHECK;

/* Active access keys one user may hold: two to change a key without a gap, and room for a
 * few applications apart; each is looked up by every node every second (auth_keys.c). */
#define HSM_ACCESS_KEYS_PER_USER 10
/* ALREADY_EXISTS on a duplicate id; NOT_FOUND when the user does not exist;
 * LIMIT_EXCEEDED when the user holds HSM_ACCESS_KEYS_PER_USER active keys (counted
 * under the user's row lock on PostgreSQL). */
hsm_result hsm_store_access_key_create(hsm_store *s, const hsm_access_key_record *k) HSM_MUST_CHECK;
/* The limit it applies, user holding `held` active keys: LIMIT_EXCEEDED when reached. */
hsm_result hsm_store_access_key_room(const char *user, int64_t held) HSM_MUST_CHECK;
/* NOT_FOUND when absent. */
hsm_result hsm_store_access_key_get(hsm_store *s, const char *access_key_id,
                                    hsm_access_key_record *out) HSM_MUST_CHECK;
/* NOT_FOUND when absent. */
hsm_result hsm_store_access_key_set_active(hsm_store *s, const char *access_key_id,
                                           bool active) HSM_MUST_CHECK;
typedef hsm_result (*hsm_access_key_cb)(const hsm_access_key_record *k, void *arg);
/* Ordered by access key id; user filters to one user when not NULL (NOT_FOUND if absent). */
hsm_result hsm_store_access_key_list(hsm_store *s, const char *user, hsm_access_key_cb cb,
                                     void *arg) HSM_MUST_CHECK;

/* ---- Certificates --------------------------------------------------------------- */

/*
 * An X.509 certificate kept as a token object (PKCS#11 CKO_CERTIFICATE), so
 * that applications find a key's certificate on the token beside the key
 * (Java's PKCS#11 key store pairs them by CKA_ID).  Certificates are public
 * data: the store keeps the bytes as given (the server checks them) and they
 * are part of copies, snapshots and backups.
 */
#define HSM_CERT_LABEL_MAX 256     /* bytes of UTF-8 (CKA_LABEL) */
#define HSM_CERT_OBJECT_ID_MAX 256 /* bytes (CKA_ID) */
#define HSM_CERT_DER_MAX 32768     /* bytes of DER */
#define HSM_MAX_CERTIFICATES 100000
typedef struct hsm_cert_record {
	char cert_id[HSM_UUID_STRLEN + 1]; /* a lowercase UUID the server assigns */
	char label[HSM_CERT_LABEL_MAX + 1]; /* "" when none */
	hsm_buf object_id;                  /* CKA_ID; empty when none */
	hsm_buf der;                        /* the certificate, 1..HSM_CERT_DER_MAX bytes */
	char creator[HSM_USER_NAME_MAX + 1]; /* the user who stored it ("" when hsmctl did, locally) */
	int64_t created;                     /* epoch seconds */
	int64_t not_after; /* the certificate's notAfter (epoch seconds), which the server reads from it */
} hsm_cert_record;
void hsm_cert_record_clear(hsm_cert_record *r);
/*
 * Stores a certificate.  ALREADY_EXISTS for a cert_id in use; LIMIT_EXCEEDED
 * when the store already holds HSM_MAX_CERTIFICATES (checked in the same
 * write transaction); VALIDATION for a cert_id that is not a UUID, an empty
 * or oversized der, or an oversized label or object_id.
 */
hsm_result hsm_store_cert_create(hsm_store *s, const hsm_cert_record *c) HSM_MUST_CHECK;
/* The limit it applies, given how many certificates the store holds: LIMIT_EXCEEDED when reached. */
hsm_result hsm_store_cert_room(int64_t held) HSM_MUST_CHECK;
/* NOT_FOUND when absent (and for a cert_id that is not a lowercase UUID, which none holds). */
hsm_result hsm_store_cert_get(hsm_store *s, const char *cert_id,
                              hsm_cert_record *out) HSM_MUST_CHECK;
/* NOT_FOUND when absent (and for a cert_id that is not a lowercase UUID). */
hsm_result hsm_store_cert_delete(hsm_store *s, const char *cert_id) HSM_MUST_CHECK;
/*
 * Certificates ordered by cert_id, after `after` (NULL or "" for the first
 * page), at most limit; *truncated as hsm_store_key_list's.  The page is
 * read whole before the callbacks run, DER included: up to limit *
 * HSM_CERT_DER_MAX bytes are held at once, so ask for small pages.
 */
typedef hsm_result (*hsm_cert_cb)(const hsm_cert_record *c, void *arg);
hsm_result hsm_store_cert_list(hsm_store *s, const char *after, size_t limit, hsm_cert_cb cb,
                               void *arg, bool *truncated) HSM_MUST_CHECK;
/*
 * What hsm_store_cert_find keeps: certificates with this object_id (when
 * object_id is not NULL; an empty buffer matches those without one) and
 * this label (when label is not NULL).  Each is an index lookup, so a
 * PKCS#11 search by CKA_ID or CKA_LABEL reads only what it finds.
 */
typedef struct hsm_cert_match {
	const hsm_buf *object_id;
	const char *label;
} hsm_cert_match;
/* hsm_store_cert_list of the certificates m matches (paged alike). */
hsm_result hsm_store_cert_find(hsm_store *s, const hsm_cert_match *m, const char *after,
                               size_t limit, hsm_cert_cb cb, void *arg,
                               bool *truncated) HSM_MUST_CHECK;
/* How many certificates the store holds. */
hsm_result hsm_store_cert_count(hsm_store *s, uint64_t *out) HSM_MUST_CHECK;
/* How many have a not_after before `before` (an index, not a scan: for /metrics' gauges). */
hsm_result hsm_store_cert_count_expiring(hsm_store *s, int64_t before,
                                         uint64_t *out) HSM_MUST_CHECK;

/* ---- Key usage (GetKeyLastUsage) ------------------------------------------------ */

/*
 * The last successful cryptographic use of each key.  The server records
 * uses in memory and writes them here in batches (kms/usage.c), so the store
 * trails the node by a flush interval.  Nodes sharing a store write in any
 * order: a key's stored use is replaced only by one at the same time or
 * later.  Uses are not part of hsm_store_copy or backups: a store filled by
 * a copy begins recording when it is created, and says so through
 * hsm_store_usage_since, as KMS's TrackingStartDate does.
 */
#define HSM_USAGE_OPERATION_MAX 40
typedef struct hsm_key_usage_record {
	char key_id[HSM_UUID_STRLEN + 1];
	char operation[HSM_USAGE_OPERATION_MAX + 1]; /* "Encrypt", "Sign", ... */
	int64_t used_ms;                             /* UTC epoch milliseconds, > 0 */
	char request_id[HSM_UUID_STRLEN + 1];        /* the request's id (and its audit record's) */
} hsm_key_usage_record;
/*
 * Records n >= 1 uses (one per key at most) in one transaction.  VALIDATION
 * for an empty key_id or operation, or a used_ms <= 0.
 */
hsm_result hsm_store_usage_put(hsm_store *s, size_t n,
                               const hsm_key_usage_record *recs) HSM_MUST_CHECK;
/* A key's last recorded use; NOT_FOUND when none is recorded. */
hsm_result hsm_store_usage_get(hsm_store *s, const char *key_id,
                               hsm_key_usage_record *out) HSM_MUST_CHECK;
/* When this store began recording uses (epoch seconds). */
hsm_result hsm_store_usage_since(hsm_store *s, int64_t *out) HSM_MUST_CHECK;

/* ---- Quorum approvals ----------------------------------------------------------- */

/*
 * A sensitive request waiting for custodians (kms/approvals.c): one record
 * per distinct request, named by its fingerprint, with the custodians who
 * approved it.  The store keeps the rules that must hold under concurrency
 * (one open request per fingerprint, distinct approvers, one use); who may
 * approve is the KMS layer's business.  Approvals are short-lived and are
 * not part of hsm_store_copy or backups.
 */
typedef enum hsm_approval_state {
	HSM_APPROVAL_PENDING,   /* open: collecting approvals (it may already hold enough) */
	HSM_APPROVAL_USED,      /* closed: the approved request ran */
	HSM_APPROVAL_DENIED,    /* closed: a custodian refused it */
	HSM_APPROVAL_CANCELLED, /* closed: its requester withdrew it */
	HSM_APPROVAL_STATE_COUNT
} hsm_approval_state;
/* "Pending", "Used", "Denied", "Cancelled" (abort outside the enumeration). */
const char *hsm_approval_state_name(hsm_approval_state s);
hsm_result hsm_approval_state_parse(const char *name, hsm_approval_state *out) HSM_MUST_CHECK;

#define HSM_APPROVAL_ID_LEN 32          /* lowercase hex */
#define HSM_APPROVAL_FINGERPRINT_LEN 64 /* lowercase hex (a SHA-256) */
#define HSM_APPROVAL_OP_MAX 64
/* Bytes of the request's text: its ASCII escapes take up to three times a member's UTF-8
 * (a 32 KB policy, 50 tags, a description), so a request within the API's limits fits. */
#define HSM_APPROVAL_REQUEST_MAX 262144
#define HSM_APPROVERS_MAX 16
/* Open requests (Pending, not expired) one requester may hold at once: each waits on the
 * custodians, who read them all, and on the store, which keeps each up to 256 KiB. */
#define HSM_APPROVALS_OPEN_PER_USER 100
typedef struct hsm_approval_record {
	char id[HSM_APPROVAL_ID_LEN + 1];
	char fingerprint[HSM_APPROVAL_FINGERPRINT_LEN + 1];
	char operation[HSM_APPROVAL_OP_MAX + 1];   /* "ScheduleKeyDeletion" */
	char requester[HSM_USER_NAME_MAX + 1];
	char *request; /* owned text (the request's canonical JSON); never NULL after a get */
	hsm_approval_state state;
	uint32_t required; /* approvals needed, 1..HSM_APPROVERS_MAX */
	int64_t created;   /* epoch seconds */
	int64_t expires;   /* epoch seconds; no approval or use at or after it */
	int64_t closed;    /* epoch seconds it left Pending; 0 while Pending */
	char closed_by[HSM_USER_NAME_MAX + 1]; /* who denied or cancelled it; "" otherwise */
	uint32_t n_approvers;
	char approvers[HSM_APPROVERS_MAX][HSM_USER_NAME_MAX + 1]; /* in the order they approved */
} hsm_approval_record;
void hsm_approval_record_clear(hsm_approval_record *r);
typedef hsm_result (*hsm_approval_cb)(const hsm_approval_record *a, void *arg);

/*
 * Opens a request for approval, or finds the one already open for the same
 * request.  In one write transaction: when a Pending record with
 * a->fingerprint and expires > a->created exists, *out receives it and
 * nothing is written; else a (state Pending, no approvers, closed 0,
 * closed_by "") is inserted and *out receives it.  LIMIT_EXCEEDED when
 * a->requester already holds HSM_APPROVALS_OPEN_PER_USER open requests (on
 * PostgreSQL counted under a lock on the requester, so nodes opening at once
 * cannot pass it together).  ALREADY_EXISTS for a
 * duplicate id; VALIDATION for a malformed id or fingerprint, an empty
 * operation or requester, required outside 1..HSM_APPROVERS_MAX, expires <=
 * created, or request NULL or longer than HSM_APPROVAL_REQUEST_MAX.
 */
hsm_result hsm_store_approval_open(hsm_store *s, const hsm_approval_record *a,
                                   hsm_approval_record *out) HSM_MUST_CHECK;
/* NOT_FOUND when absent (and for a malformed id). */
hsm_result hsm_store_approval_get(hsm_store *s, const char *id,
                                  hsm_approval_record *out) HSM_MUST_CHECK;
/* The open request (Pending, expires > now) with this fingerprint; NOT_FOUND when none. */
hsm_result hsm_store_approval_find(hsm_store *s, const char *fingerprint, int64_t now,
                                   hsm_approval_record *out) HSM_MUST_CHECK;
/*
 * Adds approver to an open request, atomically.  NOT_FOUND when absent;
 * INVALID_STATE when it is not Pending or has expired (expires <= now);
 * ALREADY_EXISTS when approver already approved it, under this or any other
 * ASCII case of the name (one custodian, kms/approvals.c); LIMIT_EXCEEDED when it
 * holds HSM_APPROVERS_MAX approvers.  *out (optional) receives the record after.
 */
hsm_result hsm_store_approval_approve(hsm_store *s, const char *id, const char *approver,
                                      int64_t now, hsm_approval_record *out) HSM_MUST_CHECK;
/*
 * Closes an open request, atomically: to is USED, DENIED or CANCELLED (else
 * VALIDATION); by ("" allowed for USED) is kept in closed_by for DENIED and
 * CANCELLED; closed = now.  NOT_FOUND when absent; INVALID_STATE when it is
 * not Pending, has expired, or (to USED) holds fewer approvers than it
 * requires.  So of two identical approved requests racing, one uses it.
 * *out (optional) receives the record after.
 */
hsm_result hsm_store_approval_close(hsm_store *s, const char *id, hsm_approval_state to,
                                    const char *by, int64_t now,
                                    hsm_approval_record *out) HSM_MUST_CHECK;
/*
 * Undoes a USED close (the approved request failed, so its approvals stand):
 * Used -> Pending, closed 0, approvers kept.  NOT_FOUND when absent;
 * INVALID_STATE when it is not Used.
 */
hsm_result hsm_store_approval_reopen(hsm_store *s, const char *id) HSM_MUST_CHECK;
/*
 * Where a listing of approvals goes on: after the record with this created
 * and id in the listing's order, whether or not that record still exists.
 */
typedef struct hsm_approval_cursor {
	int64_t created; /* 0..INT64_MAX */
	char id[HSM_APPROVAL_ID_LEN + 1];
} hsm_approval_cursor;
/*
 * Newest first (created descending, then id ascending: an order no write
 * changes, as neither ever changes), from after `after` (NULL: from the
 * first), at most limit (1..HSM_STORE_LIST_MAX); open_only keeps the open
 * ones (Pending, expires > now).  *truncated (optional) tells whether more
 * follow.  A walk page by page, each page going on after the last record
 * of the one before, sees every record that stays listed throughout once;
 * records opened meanwhile come before its position (newer) unless they
 * share its second.  VALIDATION for an after with a negative created or a
 * malformed id.
 */
hsm_result hsm_store_approval_list(hsm_store *s, bool open_only, int64_t now,
                                   const hsm_approval_cursor *after, size_t limit,
                                   hsm_approval_cb cb, void *arg,
                                   bool *truncated) HSM_MUST_CHECK;
/* Deletes every record whose expires is before `before`, whatever its state; *deleted (optional) counts them. */
hsm_result hsm_store_approval_purge(hsm_store *s, int64_t before,
                                    uint64_t *deleted) HSM_MUST_CHECK;
/*
 * Rewrites what stored records show of their requests (the request text;
 * nothing else changes): fn sees each record's text and sets *replacement
 * to a malloc'ed text of at most HSM_APPROVAL_REQUEST_MAX bytes to take its
 * place, or leaves it NULL to keep it.  For texts an older hsmd kept whole
 * (kms/approvals.c).  In one write transaction, records in id order; fn
 * runs inside it, so it must be short and must not call the store (that
 * aborts).  A failure of fn, or a replacement too long (VALIDATION), rolls
 * everything back.  The replaced texts are then overwritten on disk as
 * hsm_store_key_destroy's erased material is (SQLite: secure_delete plus a
 * truncating WAL checkpoint; PostgreSQL cannot promise it, see above).
 * *rewritten (optional) counts the records whose text was replaced.
 */
typedef hsm_result (*hsm_approval_rewrite_fn)(const char *request, char **replacement,
                                              void *arg);
hsm_result hsm_store_approval_rewrite(hsm_store *s, hsm_approval_rewrite_fn fn, void *arg,
                                      uint64_t *rewritten) HSM_MUST_CHECK;

/* ---- Audit outbox -------------------------------------------------------------- */

/*
 * A request's change reaches the store before its audit record is written,
 * so a node killed between the two (kill -9, power loss), or an audit
 * outage at that moment, would keep a change the trail never shows.  The
 * outbox closes that gap: while a thread has an intent set, the first write
 * transaction it commits also inserts, in that same transaction, one row
 * saying "request R (operation, principal, access key id, source, key id)
 * changed the store on node N at time T".  The server deletes the row once
 * the request's audit record is written, and at its next start writes a
 * recovery record for every row of its node left behind; the rows of a node
 * that never comes back are adopted by the leader (hsm_store_node_hold).
 *
 * Rules every backend keeps:
 *  - The row goes in just before the COMMIT of the thread's first write
 *    transaction that commits; written becomes true only once that COMMIT
 *    succeeded.  A later intent of the same request id (the handler's,
 *    after authentication committed a count reset under its own) updates
 *    the row: its operation, and each of its non-empty principal, access
 *    key id, source and key id, replace the first one's; the time stays.
 *    If the insert fails, the transaction fails and the change is not made
 *    (fail closed).  A transaction that rolls back leaves no row and leaves
 *    written false; once written is true, later writes insert nothing.
 *  - Reads never insert, and neither do hsm_store_outbox_list and
 *    hsm_store_outbox_delete, opening a store (its schema migrations),
 *    hsm_store_copy and hsm_store_snapshot (whose writes land in another
 *    store), whatever intent the thread has; hsm_store_copy_noted does.
 *  - Values longer than the HSM_OUTBOX_*_MAX bytes below are cut, never
 *    refused: the change matters more than the row's detail.  A row holds
 *    these fields only, never a secret.
 *  - The outbox belongs to its node and lives only until the audit trail
 *    catches up: it is not part of hsm_store_copy, snapshots or backups, and
 *    a restored store starts with an empty one but for the restore's own
 *    row (hsmctl restore puts it there, to be settled like any other).
 */
#define HSM_OUTBOX_NODE_ID_MAX 64
#define HSM_OUTBOX_REQUEST_ID_MAX 64
#define HSM_OUTBOX_OPERATION_MAX 64
#define HSM_OUTBOX_PRINCIPAL_MAX 160
#define HSM_OUTBOX_ACCESS_KEY_ID_MAX 128
#define HSM_OUTBOX_SOURCE_MAX 80
#define HSM_OUTBOX_KEY_ID_MAX 64

/* One outbox row (strings owned by the record; hsm_outbox_record_clear frees them). */
typedef struct hsm_outbox_record {
	char *node_id;
	char *request_id;
	int64_t created_ms;  /* UTC ms of the commit that wrote the row */
	char *operation;     /* "CreateKey", "HsmdAdmin.CreateUser", ... */
	char *principal;     /* "" when none */
	char *access_key_id; /* "" when none */
	char *source;        /* "ip:port", "" when none */
	char *key_id;        /* "" when none */
} hsm_outbox_record;
/* Frees what the record owns and zeroes it; NULL is a no-op. */
void hsm_outbox_record_clear(hsm_outbox_record *r);
typedef hsm_result (*hsm_outbox_cb)(const hsm_outbox_record *r, void *arg);

/* What a thread is about to change the store for (all strings borrowed; NULL = ""). */
typedef struct hsm_store_intent {
	const char *node_id, *request_id, *operation, *principal, *access_key_id, *source;
	const char *key_id; /* read at commit time: may point at a buffer the caller fills in meanwhile */
	/*
	 * NULL, or called at each commit that inserts the row, before its fields
	 * are read: fills in fields too costly to make for every request when
	 * most change nothing (the caller's principal and source).
	 */
	void (*prepare)(struct hsm_store_intent *in);
	/*
	 * The first key the change created or wrote (hsm_store_key_create*,
	 * _update, _destroy*, _set_material, _promote; an alias, tag or grant
	 * of it): the row's key_id when key_id is empty (CreateKey learns its
	 * key's id only then, the scheduler's work names none beforehand, and
	 * some handlers name the key only once the change is made).
	 */
	char touched_key[HSM_OUTBOX_KEY_ID_MAX + 1];
	bool written;       /* set true by the store once a commit carrying the row succeeded */
	/*
	 * Set true by the store when a commit carrying the row may or may not
	 * have been applied (PostgreSQL: its answer was lost, and asking the
	 * server afterwards did not settle it): a change of the request may
	 * stand although the request failed.
	 */
	bool uncertain;
} hsm_store_intent;

/*
 * Marks the calling thread's write transactions, in any store, until
 * hsm_store_intent_end (thread-local; not nested: a second begin before
 * the end aborts).  in and the strings it points at must stay valid until
 * then; begin does not reset in->written.
 */
void hsm_store_intent_begin(hsm_store_intent *in);
/* Clears the calling thread's intent; a no-op when none is set. */
void hsm_store_intent_end(void);
/* The calling thread's intent, or NULL. */
hsm_store_intent *hsm_store_intent_current(void);

/*
 * node_id's rows, oldest first (created_ms, then request_id).  Read a page
 * at a time, each page's callbacks running after the backend released it,
 * so a callback may delete the rows it is given.
 */
hsm_result hsm_store_outbox_list(hsm_store *s, const char *node_id, hsm_outbox_cb cb,
                                 void *arg) HSM_MUST_CHECK;
/*
 * Deletes node_id's rows named by request_ids (missing ones are not an
 * error) in one transaction; n may be large, and 0 does nothing.  Ids are
 * cut as the insert cuts them, so the id a request gave its intent deletes
 * its row.
 */
hsm_result hsm_store_outbox_delete(hsm_store *s, const char *node_id,
                                   const char *const *request_ids, size_t n) HSM_MUST_CHECK;

/*
 * The node id under which hsmctl's offline changes to the store of the data
 * directory data_dir write their rows: "hsmctl-" and a hash of the host's
 * name and the directory's real path (the path as given when it has none;
 * nodes sharing a store keep their data in the same path), so the hsmd
 * that serves that directory finds them at its next start and settles them
 * from the trail hsmctl wrote there, whatever node_id it is configured with.
 */
void hsm_outbox_offline_node(const char *data_dir, char out[HSM_OUTBOX_NODE_ID_MAX + 1]);
/*
 * Whether one process at a time holds the store (SQLite: its directory lock,
 * which hsmctl's offline commands take too): then no "hsmctl-" row in it can
 * belong to a command still running, whatever host or path named it (the
 * directory may have been moved or remounted since), and its holder settles
 * them all.  False for a store that several nodes and hsmctl share.
 */
bool hsm_store_one_holder(const hsm_store *s);

/*
 * Rows of a node that never comes back (its machine was replaced, the
 * cluster failed over for good) would stay for ever, their changes recorded
 * nowhere: the node that leads the store adopts them (server/outbox_adopt.c).
 * These find such a node and make sure it is not running meanwhile.
 */
typedef struct hsm_outbox_node {
	char node_id[HSM_OUTBOX_NODE_ID_MAX + 1];
	int64_t oldest_ms; /* created_ms of its oldest row */
	uint64_t rows;     /* how many it has */
} hsm_outbox_node;
typedef hsm_result (*hsm_outbox_node_cb)(const hsm_outbox_node *n, void *arg);
/*
 * Every node id whose oldest row was committed before before_ms, in id
 * order (strcmp, the database's C ordering), read a page at a time like
 * hsm_store_outbox_list (a callback may delete rows).  Reads only.
 */
hsm_result hsm_store_outbox_nodes(hsm_store *s, int64_t before_ms, hsm_outbox_node_cb cb,
                                  void *arg) HSM_MUST_CHECK;

/*
 * Takes node_id's claim (hsm_store_claim_node) on a session of its own,
 * without waiting: *out is the hold, or NULL when another session holds the
 * id (its node runs, or another node holds it to adopt its rows).  While
 * the hold lives, no node can claim the id: a node wanting it (at its
 * start, or running and its session lost meanwhile) learns the holder is
 * a hold (hsm_store_claim_node_why) and waits for it.  A free id proves
 * only that no session holds it now, not that its node is stopped.  PostgreSQL: the same session advisory lock the claim takes, on a
 * new connection named "hsmd adopting <id>" whose server ends it after
 * HSM_NODE_HOLD_IDLE_MS without a statement (a holder that hangs frees the
 * id).  SQLite: one process holds the store (its directory lock), so nobody
 * else runs under any id: always granted.
 */
typedef struct hsm_node_hold hsm_node_hold;
#define HSM_NODE_HOLD_IDLE_MS 60000
hsm_result hsm_store_node_hold(hsm_store *s, const char *node_id,
                               hsm_node_hold **out) HSM_MUST_CHECK;
/* Proves the hold still lives (a round trip, which also restarts its idle time); a failure when its session was lost. */
hsm_result hsm_node_hold_check(hsm_node_hold *h) HSM_MUST_CHECK;
/* Gives the id back (unlocked, then the session closed); NULL is a no-op. */
void hsm_node_hold_release(hsm_node_hold *h);

/*
 * Commits a write transaction that changes nothing but carries the calling
 * thread's outbox row: for a change the store's own writes do not make (a
 * restore renames a whole store file into place), whose row must still be
 * in the store exactly when the change is.  Nothing without an intent, or
 * when its row is already written.
 */
hsm_result hsm_store_outbox_note(hsm_store *s) HSM_MUST_CHECK;

#endif
