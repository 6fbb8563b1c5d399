/*
 * keystore_internal.h - state shared by the keystore's source files.
 */
#ifndef HSM_KEYSTORE_INTERNAL_H
#define HSM_KEYSTORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "common/shmap.h"
#include "crypto/crypto.h"
#include "keystore/keystore.h"
#include "keystore/share.h"

#define KS_SET_ID_LEN HSM_KS_SET_ID_LEN
#define KS_KCV_LEN HSM_KS_KCV_LEN
#define KS_WRAP_VERSION 1

/* Store meta names. */
#define META_STORE_ID "store_id"
#define META_SHARE_SET "share_set"
#define META_THRESHOLD "threshold"
#define META_SHARES "shares"
#define META_KCV "kcv"
/*
 * One hsm_share_commitment per share of the current split, by index, in hex: bare for
 * version 1 (splits made before custodian names were bound, checked the old way), after
 * META_COMMITS_V2_PREFIX for version 2.  Absent in stores made before commitments: their
 * shares are checked when combined only.  A rekey writes the current version.
 */
#define META_SHARE_COMMITS "share_commits"
#define META_COMMITS_V2_PREFIX "v2:"
#define META_CREATED "created"
#define META_DEV "dev"
#define META_AUDIT_KEY "audit_key"
#define META_AUDIT_PUB "audit_pubkey"
/* The import-digest key, once a rekey carried it (master.c). */
#define META_IMPORT_DIGEST_KEY "import_digest_key"

/* Keys derived from the DMK (HKDF-SHA256 with a label per purpose). */
typedef struct ks_keys {
	hsm_secret *material;  /* wraps key version material */
	hsm_secret *principal; /* wraps access-key secrets */
	hsm_secret *audit;     /* wraps the audit signing key */
	hsm_secret *audit_hash;/* keys the audit trail's hashes of sensitive values */
	hsm_hmac_pool *audit_hash_macs; /* audit_hash keyed, lent to each record's hashing */
	hsm_secret *backup;    /* derives each backup file's key (backup.c) */
	hsm_secret *import_token;  /* seals import tokens (import_wrap.c) */
	hsm_secret *import_digest; /* keys the digests that identify imported material */
	hsm_material *audit_signer;
} ks_keys;

struct hsm_keystore {
	hsm_store *store; /* NULL for a detached keystore (hsm_keystore_new_detached) */
	hsm_shmap *cache; /* "<key id>/<version>/<spec>/<usage>" -> hsm_material */
	/*
	 * Bumped before material leaves the cache (forget, seal, error, rekey):
	 * an unwrap that began before it must not put its material back after.
	 */
	atomic_uint_fast64_t cache_epoch;
	atomic_int state; /* hsm_node_state; read lock-free on the hot path */
	pthread_mutex_t lock;     /* serializes init/unseal/seal */
	pthread_rwlock_t keys_lock; /* guards `keys` against a concurrent seal */
	ks_keys keys;
	char store_id[HSM_UUID_STRLEN + 1];
	uint8_t set_id[KS_SET_ID_LEN];
	/* Written under lock; read without it by ks_require_unsealed's message, hence atomic. */
	_Atomic unsigned threshold, count;
	uint8_t kcv[KS_KCV_LEN];
	/* The current split's commitments (META_SHARE_COMMITS); n_commits 0: none kept. */
	uint8_t commits[HSM_MAX_SHARES][HSM_SHARE_COMMIT_LEN];
	unsigned n_commits;
	unsigned commits_version; /* HSM_SHARE_COMMIT_V1 or _V2, when n_commits > 0 */
	hsm_share_set *pending;
	/*
	 * The quorum that unsealed a keystore with no commitments at hand (a detached
	 * keystore, or a store made before commitments existed) that will check shares
	 * past it (keep_quorum), kept until it is sealed,
	 * put in the error state or rekeyed: shares given beyond the quorum are checked
	 * against it.  NULL whenever there are commitments to check against.
	 */
	hsm_share_set *quorum;
	bool keep_quorum; /* hsm_keystore_keep_quorum, or detached */
	/*
	 * The share indexes given since the unseal began, the quorum's and each
	 * one past it that hsm_keystore_check_share passed (bit i: index i), so a
	 * share given twice is refused past the quorum as within it.  Forgotten
	 * when the next unseal begins, on seal, on the error state and on rekey.
	 */
	uint8_t given[(HSM_MAX_SHARES + 8) / 8];
	uint64_t pending_since_ns; /* hsm_mono_ns() of the pending unseal's last share */
	uint64_t pending_ttl_ns;   /* hsm_keystore_set_unseal_ttl_ms */
	unsigned abandoned; /* shares of abandoned unseals hsm_keystore_unseal_expire has not told */
	char error_reason[160];
};

/* Fails with the precise "sealed / error / uninitialized" error unless serving. */
hsm_result ks_require_unsealed(hsm_keystore *ks) HSM_MUST_CHECK;
/* Empties the material cache (the epoch first: see cache_epoch). */
void ks_cache_drop_all(hsm_keystore *ks);

/*
 * Wrapped secret format: u8 KS_WRAP_VERSION || 12-byte IV || ciphertext ||
 * 16-byte tag, AES-256-GCM under a derived key, with the caller's AAD.
 */
hsm_result ks_wrap(const hsm_secret *key, const hsm_buf *aad, const uint8_t *pt, size_t n,
                   hsm_buf *out) HSM_MUST_CHECK;
hsm_result ks_unwrap(const hsm_secret *key, const hsm_buf *aad, const uint8_t *p, size_t n,
                     hsm_buf *pt) HSM_MUST_CHECK;
/* AAD binding a key version's material to its identity. */
hsm_result ks_material_aad(const hsm_ks_keyref *ref, hsm_buf *aad) HSM_MUST_CHECK;
/* Wraps a key version's material (pt, secure) for the store, bound to ref; sealed: fails. */
hsm_result ks_wrap_material(hsm_keystore *ks, const hsm_ks_keyref *ref, const hsm_buf *pt,
                            hsm_buf *wrapped) HSM_MUST_CHECK;

/* Creates the parts every keystore has (locks, cache) and runs the self-tests. */
hsm_result ks_alloc(size_t cache_capacity, hsm_keystore **out) HSM_MUST_CHECK;
/* Loads the meta records of an initialized store into ks (state -> sealed). */
hsm_result ks_load_meta(hsm_keystore *ks) HSM_MUST_CHECK;
void ks_keys_wipe(ks_keys *k);
/*
 * Wipes every share the keystore holds (a pending unseal's, the kept quorum)
 * and forgets the indexes given: on seal, the error state and rekey.  The
 * caller holds ks->lock.
 */
void ks_forget_shares(hsm_keystore *ks);

/* ---- The master key (master.c), shared with the rekey (rekey.c) ---------------------- */

/* Derives every per-purpose key of dmk for the store. */
hsm_result ks_derive_all(const hsm_secret *dmk, const char *store_id, ks_keys *k) HSM_MUST_CHECK;
/* The key check value of dmk for the store. */
hsm_result ks_compute_kcv(const hsm_secret *dmk, const char *store_id,
                          uint8_t kcv[KS_KCV_LEN]) HSM_MUST_CHECK;
/*
 * Splits dmk into count encoded share files (secure buffers; all freed on
 * failure) and appends their commitments (HSM_SHARE_COMMIT_CURRENT), by
 * index, to commits as META_SHARE_COMMITS holds them.
 */
hsm_result ks_encode_shares(const hsm_secret *dmk, const char *store_id,
                            const uint8_t set_id[KS_SET_ID_LEN], unsigned threshold,
                            unsigned count, const char *const custodians[], bool dev,
                            hsm_buf out[], hsm_buf *commits) HSM_MUST_CHECK;
/* Reads META_SHARE_COMMITS (either version) into ks->commits (none: n_commits 0). */
hsm_result ks_set_commits(hsm_keystore *ks, const uint8_t *hex, size_t len) HSM_MUST_CHECK;
/*
 * The store's audit signing key, unwrapped under `from` into *signer; with
 * rewrap_to, also wrapped under it into rewrapped (a rekey).
 */
hsm_result ks_load_audit_key(hsm_keystore *ks, const hsm_secret *from, hsm_material **signer,
                             const hsm_secret *rewrap_to, hsm_buf *rewrapped) HSM_MUST_CHECK;
/* AAD binding an access key's wrapped secret to its identity (keystore.c). */
hsm_result ks_principal_aad(const char *identity, hsm_buf *aad) HSM_MUST_CHECK;
/* Wraps the import-digest key under dmk for META_IMPORT_DIGEST_KEY. */
hsm_result ks_wrap_import_digest_key(const hsm_secret *dmk, const char *store_id,
                                     const hsm_secret *digest_key, hsm_buf *out) HSM_MUST_CHECK;

#endif
