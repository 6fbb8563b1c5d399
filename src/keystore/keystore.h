/*
 * keystore.h - the key boundary (DESIGN.md "The key boundary").
 *
 * All use of key material goes through this interface: a request in ("sign
 * these bytes with key K version V"), a result out.  Callers pass key
 * identities (hsm_ks_keyref), never key material; the keystore fetches the
 * wrapped material from the store, unwraps it under a DMK-derived key,
 * caches it in the secure heap and performs the operation.  The network side
 * (HTTP, JSON, SigV4) and the key-management logic (kms/) never hold
 * unwrapped key material, so the keystore can later move into its own
 * privilege-separated process without touching them.
 *
 * The keystore also owns the node's seal state: the domain master key is
 * reconstructed from custodian shares here, checked against the key check
 * value, used to derive the per-purpose wrapping keys, and wiped.
 *
 * Thread safety: every function may be called concurrently.  Crypto
 * operations take no global lock.
 */
#ifndef HSM_KEYSTORE_H
#define HSM_KEYSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"
#include "common/secret.h"
#include "crypto/blob.h"
#include "crypto/keyspec.h"
#include "store/store.h"

typedef struct hsm_keystore hsm_keystore;

typedef enum hsm_node_state {
	HSM_NODE_UNINITIALIZED, /* no master key yet: run init */
	HSM_NODE_SEALED,        /* master key unknown: collecting shares */
	HSM_NODE_UNSEALED,      /* serving */
	HSM_NODE_ERROR,         /* a self-test failed: serves nothing */
} hsm_node_state;

const char *hsm_node_state_name(hsm_node_state s); /* "uninitialized", "sealed", ... */

/* Identity of one key version; AAD of its wrapped material binds all four. */
typedef struct hsm_ks_keyref {
	const char *key_id;
	uint32_t version;
	hsm_key_spec spec;
	hsm_key_usage usage;
} hsm_ks_keyref;

#define HSM_KS_SET_ID_LEN 8
#define HSM_KS_KCV_LEN 16

/*
 * What identifies a store's master key without revealing it: enough to
 * collect and check custodian shares for it (a backup carries this).
 */
typedef struct hsm_ks_identity {
	char store_id[HSM_UUID_STRLEN + 1];
	uint8_t set_id[HSM_KS_SET_ID_LEN]; /* the share split */
	unsigned threshold, count;
	uint8_t kcv[HSM_KS_KCV_LEN];       /* key check value of the DMK */
} hsm_ks_identity;

#define HSM_DEFAULT_SHARES 5
#define HSM_DEFAULT_THRESHOLD 3
#define HSM_MAX_SHARES 16

/* ---- Life cycle ------------------------------------------------------------ */

/*
 * Creates a keystore over an open store (not owned; must outlive it).
 * Runs the power-on self-tests: on failure the keystore is in
 * HSM_NODE_ERROR and performs no cryptographic operation.  cache_capacity
 * bounds the number of unwrapped key versions kept (0 = default).
 */
hsm_result hsm_keystore_new(hsm_store *store, size_t cache_capacity,
                            hsm_keystore **out) HSM_MUST_CHECK;
/*
 * A keystore of a store that is not open here (restoring or checking a
 * backup): it starts sealed, unseals with the store's share files like any
 * other, and then serves only the backup functions below.  Unsealed, it
 * keeps its quorum's shares (secure heap) until sealed or freed, to check
 * shares given beyond the quorum (hsm_keystore_check_share).
 */
hsm_result hsm_keystore_new_detached(const hsm_ks_identity *id,
                                     hsm_keystore **out) HSM_MUST_CHECK;
/* Seals (wiping every secret) and frees.  NULL is a no-op. */
void hsm_keystore_free(hsm_keystore *ks);

hsm_node_state hsm_keystore_state(hsm_keystore *ks);
/* The store's identity (UUID), empty before init. */
const char *hsm_keystore_store_id(hsm_keystore *ks);
/* The store's identity and quorum (zeroed fields before init). */
void hsm_keystore_identity(hsm_keystore *ks, hsm_ks_identity *out);
/*
 * Whether the store now names another master key (share set or check value)
 * than the one this keystore holds: `hsmctl rekey` replaced it.  False when
 * the store cannot be read or its names do not parse (that decides nothing).
 */
bool hsm_keystore_master_replaced(hsm_keystore *ks);

/* VALIDATION unless 2 <= threshold <= count <= HSM_MAX_SHARES (dev: 1-of-1 too). */
hsm_result hsm_keystore_check_quorum(unsigned threshold, unsigned count, bool dev) HSM_MUST_CHECK;

/*
 * Initializes an empty store: makes a random 256-bit DMK, records its key
 * check value, the quorum parameters and a new share-set id, creates the
 * audit signing key, and returns one encoded share file per custodian
 * (shares_out[i] are secure buffers the caller writes out and frees).
 * custodians may be NULL or `count` names.  dev allows 1-of-1.  The node is
 * left unsealed.
 */
hsm_result hsm_keystore_init(hsm_keystore *ks, unsigned threshold, unsigned count,
                             const char *const custodians[], bool dev,
                             hsm_buf shares_out[]) HSM_MUST_CHECK;

/*
 * The same in two steps, so that the shares can be written out, durably,
 * before the store records a master key they are the only copies of: a
 * ceremony stopped before the commit leaves an uninitialized store, one
 * stopped after it leaves a store whose shares exist (hsmctl init).
 *
 * hsm_ks_init_prepare makes the DMK, the store and share-set ids, the
 * derived keys and the audit signing key, and returns the encoded share
 * files in shares_out[] (secure buffers the caller frees); the store and the
 * keystore are not changed.  It fails (CONFLICT) if the store is already
 * initialized.  *out is freed with hsm_ks_init_free.
 */
typedef struct hsm_ks_init hsm_ks_init;
hsm_result hsm_ks_init_prepare(hsm_keystore *ks, unsigned threshold, unsigned count,
                               const char *const custodians[], bool dev, hsm_buf shares_out[],
                               hsm_ks_init **out) HSM_MUST_CHECK;
/* The prepared store's identity (store id, set id, quorum, KCV). */
void hsm_ks_init_identity(const hsm_ks_init *in, hsm_ks_identity *out);
/* The prepared audit signing key's public key (PEM), appended to out. */
hsm_result hsm_ks_init_audit_public_pem(const hsm_ks_init *in, hsm_buf *out) HSM_MUST_CHECK;

/* Where the store stands after hsm_ks_init_commit. */
typedef enum hsm_ks_init_outcome {
	HSM_KS_INIT_UNCHANGED, /* not initialized by this ceremony: its shares open nothing */
	HSM_KS_INIT_DONE,      /* initialized with the prepared master key */
	HSM_KS_INIT_UNKNOWN,   /* the commit's outcome could not be learned */
} hsm_ks_init_outcome;
/*
 * Records the prepared master key's check value, quorum, share commitments
 * and audit key in the store, in one transaction, and leaves the node
 * unsealed.  On failure the store is read back: *outcome says whether it
 * stayed uninitialized (or another node initialized it first: CONFLICT),
 * holds this ceremony's store all the same (then the result is a success,
 * logged as a warning), or cannot be told.  in is consumed only on success;
 * free it in every case.
 */
hsm_result hsm_ks_init_commit(hsm_keystore *ks, hsm_ks_init *in,
                              hsm_ks_init_outcome *outcome) HSM_MUST_CHECK;
/* Wipes and frees.  NULL is a no-op. */
void hsm_ks_init_free(hsm_ks_init *in);

typedef struct hsm_unseal_progress {
	unsigned have;      /* distinct valid shares collected */
	unsigned threshold; /* shares needed in all */
	bool unsealed;
	/*
	 * The share file given, for the audit trail (never its value): "share 2
	 * of 5, custodian bob, sha256:<hex of the file>" as the ceremony's
	 * transcript names it, refused or not; the header fields that do not
	 * parse are left out ("sha256:<hex>" alone when none does).
	 */
	char share[200];
} hsm_unseal_progress;

/*
 * Adds one custodian's share file.  Refuses shares of another store or
 * split, duplicates and corrupted files with a message saying which and
 * why.  On reaching the threshold, reconstructs the DMK, checks the key
 * check value (HSM_ERR_WRONG_MASTER_KEY, and the collected shares are
 * discarded), derives the wrapping keys and unseals.
 */
hsm_result hsm_keystore_unseal(hsm_keystore *ks, const uint8_t *share_file, size_t len,
                               hsm_unseal_progress *progress) HSM_MUST_CHECK;
/*
 * Checks a share file as hsm_keystore_unseal would (this store's current
 * split, as issued, whole) without adding it: a share given beyond the
 * quorum, once the keystore is unsealed.  A keystore with no commitments (a
 * detached one, or a store made before commitments existed) checks it against
 * the split its quorum rebuilt (hsm_share_set_check_member): altered or forged
 * shares are refused, a custodian name is not checked; without commitments
 * and without hsm_keystore_keep_quorum before the unseal, every share is
 * refused (HSM_ERR_INTERNAL) rather than passed unchecked.  A share whose
 * index was already given since the unseal began (in the quorum, or to an
 * earlier call) is refused with HSM_ERR_SHARE_DUPLICATE, as a repeat within
 * the quorum is; the indexes are forgotten on seal, error and rekey.
 */
hsm_result hsm_keystore_check_share(hsm_keystore *ks, const uint8_t *share_file, size_t len,
                                    hsm_unseal_progress *progress) HSM_MUST_CHECK;
/*
 * Asks a keystore that will be given shares past the quorum
 * (hsm_keystore_check_share) to keep its quorum's shares from the unseal on
 * when it has no commitments to check them against; a detached keystore
 * always does.  Other keystores (a running node's) keep no share once the
 * unseal completes.  Call it before the unseal.
 */
void hsm_keystore_keep_quorum(hsm_keystore *ks);
/* Progress of the current unseal without adding a share. */
void hsm_keystore_unseal_status(hsm_keystore *ks, hsm_unseal_progress *progress);
/* Discards shares collected so far. */
void hsm_keystore_unseal_reset(hsm_keystore *ks);
/*
 * How long an unfinished unseal waits for its next share before its shares
 * are forgotten (HSM_UNSEAL_PENDING_TTL_MS by default).
 */
#define HSM_UNSEAL_PENDING_TTL_MS (15 * 60 * 1000)
void hsm_keystore_set_unseal_ttl_ms(hsm_keystore *ks, uint64_t ms);
/*
 * Forgets an unfinished unseal whose time is up (its shares wiped) now,
 * rather than at the next Unseal or Status: a sealed node nobody asks must
 * not keep custodians' shares past that time.  A running node calls it
 * every scheduler round.  Returns how many shares abandoned unseals held
 * since the last call (those Unseal or Status found expired first too), so
 * the caller can record it; 0 when none.
 */
unsigned hsm_keystore_unseal_expire(hsm_keystore *ks);
/* Wipes the derived keys and every cached key: back to sealed. */
void hsm_keystore_seal(hsm_keystore *ks);
/* Puts the node in the error state (e.g. a later self-test failed). */
void hsm_keystore_set_error(hsm_keystore *ks, const char *why);
const char *hsm_keystore_error_reason(hsm_keystore *ks);

/* ---- Rekey: a new master key and new shares (hsmctl rekey) ------------------ */

/*
 * A master key made to replace the store's, with the keys derived from it:
 * prepared, then committed to the store or freed.  The new DMK itself lives
 * only inside hsm_ks_rekey_prepare.
 */
typedef struct hsm_ks_rekey hsm_ks_rekey;

/*
 * Makes a new random DMK and share-set id for the unsealed keystore of a
 * store (not detached, not a development store), splits the DMK into
 * `count` encoded share files with `threshold` (2 <= threshold <= count <=
 * HSM_MAX_SHARES; custodians NULL or `count` names) into shares_out[] (secure
 * buffers the caller frees), and re-wraps what is wrapped in the metadata
 * (the audit signing key; the import-digest key, which is carried so that
 * the digests of imported material stay valid).  The store is not changed.
 * *out is freed with hsm_ks_rekey_free.
 */
hsm_result hsm_ks_rekey_prepare(hsm_keystore *ks, unsigned threshold, unsigned count,
                                const char *const custodians[], hsm_buf shares_out[],
                                hsm_ks_rekey **out) HSM_MUST_CHECK;
/* The new master key's identity (store id, new set id, quorum, KCV). */
void hsm_ks_rekey_identity(const hsm_ks_rekey *rk, hsm_ks_identity *out);

/* Where the store stands after hsm_ks_rekey_commit. */
typedef enum hsm_ks_rekey_outcome {
	HSM_KS_REKEY_UNCHANGED, /* not on the new master key: this rekey changed nothing */
	HSM_KS_REKEY_DONE,      /* on the new master key: only the new shares open it */
	HSM_KS_REKEY_UNKNOWN,   /* the commit's outcome could not be learned */
} hsm_ks_rekey_outcome;
/*
 * Re-wraps every secret of the store (hsm_store_rekey: every key version's
 * material, every access key's secret, and the metadata) from the current
 * master key's wrapping keys to rk's, in one store transaction that also
 * records the new key check value, share-set id and quorum.  On success the
 * keystore serves on with the new keys (its cached key versions dropped).
 * On failure the store is read back: *outcome says whether this rekey
 * changed nothing (the usual case: the store stayed on the key it was on;
 * on a shared store, another rekey may have come first), is on the new key all the same
 * (a failure after the commit, such as SQLite's final overwrite of the old
 * bytes: then the result is a success, logged as a warning), or cannot be
 * told.  counts (optional) receives what was re-wrapped.  rk is consumed
 * only on success; free it in every case.
 */
hsm_result hsm_ks_rekey_commit(hsm_keystore *ks, hsm_ks_rekey *rk, hsm_store_rekey_counts *counts,
                               hsm_ks_rekey_outcome *outcome) HSM_MUST_CHECK;
/* Wipes and frees.  NULL is a no-op. */
void hsm_ks_rekey_free(hsm_ks_rekey *rk);

/* ---- Keys --------------------------------------------------------------- */

/*
 * Generates material for ref (pairwise-tested for asymmetric keys) and
 * returns it wrapped for the store, with the public key (SPKI DER) of
 * asymmetric keys.  Nothing is cached until first use.
 */
hsm_result hsm_ks_generate(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_buf *wrapped,
                           hsm_buf *public_der) HSM_MUST_CHECK;
/* Drops every cached version of a key (disable, deletion, destruction). */
void hsm_ks_forget(hsm_keystore *ks, const char *key_id);
/* The ids of the keys with material in the cache, each once, into *ids (the caller frees
 * it), *n of them. */
hsm_result hsm_ks_cached_keys(hsm_keystore *ks, char (**ids)[HSM_UUID_STRLEN + 1],
                              size_t *n) HSM_MUST_CHECK;

/* ---- Imported key material (BYOK) ------------------------------------------ */

/*
 * How key material is encrypted for import (KMS AlgorithmSpec):
 * RSAES_OAEP_SHA_* encrypt the material itself with the wrapping key (RFC
 * 8017 OAEP, MGF1 with the same hash, empty label); RSA_AES_KEY_WRAP_SHA_*
 * encrypt a fresh 256-bit AES key that way, followed by the material wrapped
 * under it with AES-KWP (RFC 5649), for material too long for OAEP.  KMS's
 * RSAES_PKCS1_V1_5 is refused: its padding invites Bleichenbacher's attack.
 */
typedef enum hsm_wrap_alg {
	HSM_WRAP_RSAES_OAEP_SHA_1,
	HSM_WRAP_RSAES_OAEP_SHA_256,
	HSM_WRAP_RSA_AES_KEY_WRAP_SHA_1,
	HSM_WRAP_RSA_AES_KEY_WRAP_SHA_256,
	HSM_WRAP_COUNT
} hsm_wrap_alg;
const char *hsm_wrap_alg_name(hsm_wrap_alg a);
/* ValidationException naming the value, and why for RSAES_PKCS1_V1_5. */
hsm_result hsm_wrap_alg_parse(const char *name, hsm_wrap_alg *out) HSM_MUST_CHECK;
/* WrappingKeySpec RSA_2048 / RSA_3072 / RSA_4096: the modulus size in bits. */
hsm_result hsm_wrapping_key_spec_parse(const char *name, unsigned *bits) HSM_MUST_CHECK;

/*
 * GetParametersForImport: makes an RSA wrapping key pair of `bits` and
 * returns its public key (SPKI DER) and an import token: the private half,
 * alg and `expires` (epoch seconds), sealed under a DMK-derived key with
 * key_id bound, so only this store can open it and only for this key.
 */
hsm_result hsm_ks_import_params(hsm_keystore *ks, const char *key_id, hsm_wrap_alg alg,
                                unsigned bits, int64_t expires, hsm_buf *token,
                                hsm_buf *public_der) HSM_MUST_CHECK;
/*
 * ImportKeyMaterial: opens the token (HSM_ERR_INVALID_IMPORT_TOKEN unless it
 * is one of ref->key_id's; HSM_ERR_EXPIRED_IMPORT_TOKEN when `now` is past
 * its expiry), decrypts the encrypted material with the token's key and
 * algorithm (HSM_ERR_INVALID_CIPHERTEXT, one message for every failure),
 * checks that it is key material of ref's spec (AES-256: 32 bytes; HMAC: from
 * the digest length to the block size; asymmetric: a DER PKCS#8 private key
 * of the spec's type and size, pairwise tested for ref's usage; else
 * HSM_ERR_INCORRECT_KEY_MATERIAL) and returns it wrapped for the store, with
 * the public key of asymmetric keys and a digest identifying the material
 * (HMAC-SHA256 under a DMK-derived key of the key id, the version and the
 * secret key or the public key: equal for the same material only).
 *
 * known lists versions of the key that already have a digest (n_known may
 * be 0): *match receives the index of the first whose digest this material
 * has, compared in constant time, and the material is then wrapped and
 * digested for that version (ref->version is ignored); n_known when none is
 * (then for ref->version).  One decryption, whatever n_known.
 */
typedef struct hsm_ks_known_material {
	uint32_t version;
	const hsm_buf *digest;
} hsm_ks_known_material;
hsm_result hsm_ks_import_material(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                  const uint8_t *token, size_t token_len, const uint8_t *enc,
                                  size_t enc_len, int64_t now, const hsm_ks_known_material *known,
                                  size_t n_known, size_t *match, hsm_buf *wrapped,
                                  hsm_buf *public_der, hsm_buf *digest) HSM_MUST_CHECK;

/* ---- Symmetric ---------------------------------------------------------- */

/* Encrypts pt into a ciphertext blob (crypto/blob.h); ctx is the canonical context. */
hsm_result hsm_ks_encrypt(hsm_keystore *ks, const hsm_ks_keyref *ref, const hsm_buf *ctx,
                          const uint8_t *pt, size_t pt_len, hsm_buf *blob) HSM_MUST_CHECK;
/*
 * Plain AES-256-GCM with a SYMMETRIC_DEFAULT key version (hsmd's HsmdCipher
 * operations, PKCS#11 CKM_AES_GCM): the keystore draws the 96-bit IV, so no
 * caller can make it repeat; ct receives the ciphertext followed by the
 * 16-byte tag.  open: HSM_ERR_INVALID_CIPHERTEXT when the tag does not
 * verify; pt is a secure buffer.
 */
hsm_result hsm_ks_gcm_seal(hsm_keystore *ks, const hsm_ks_keyref *ref, const uint8_t *aad,
                           size_t aad_len, const uint8_t *pt, size_t pt_len,
                           uint8_t iv[HSM_GCM_IV_LEN], hsm_buf *ct) HSM_MUST_CHECK;
hsm_result hsm_ks_gcm_open(hsm_keystore *ks, const hsm_ks_keyref *ref,
                           const uint8_t iv[HSM_GCM_IV_LEN], const uint8_t *aad, size_t aad_len,
                           const uint8_t *ct, size_t ct_len, hsm_buf *pt) HSM_MUST_CHECK;
/* Decrypts a parsed blob with the version it names; pt is a secure buffer. */
hsm_result hsm_ks_decrypt(hsm_keystore *ks, const hsm_ks_keyref *ref, const hsm_blob *blob,
                          const hsm_buf *ctx, hsm_buf *pt) HSM_MUST_CHECK;

/* The key check value of an AES or HMAC key version (crypto.h, hsm_material_check_value). */
hsm_result hsm_ks_check_value(hsm_keystore *ks, const hsm_ks_keyref *ref, uint8_t kcv[HSM_KCV_LEN],
                              hsm_kcv_alg *alg) HSM_MUST_CHECK;

/* ---- RSA encryption ------------------------------------------------------ */

hsm_result hsm_ks_rsa_encrypt(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_enc_alg alg,
                              const uint8_t *pt, size_t pt_len, hsm_buf *ct) HSM_MUST_CHECK;
hsm_result hsm_ks_rsa_decrypt(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_enc_alg alg,
                              const uint8_t *ct, size_t ct_len, hsm_buf *pt) HSM_MUST_CHECK;

/* ---- Signatures and MACs ------------------------------------------------- */

hsm_result hsm_ks_sign(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_sign_alg alg,
                       hsm_message_type type, const uint8_t *msg, size_t len,
                       hsm_buf *sig) HSM_MUST_CHECK;
hsm_result hsm_ks_verify(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_sign_alg alg,
                         hsm_message_type type, const uint8_t *msg, size_t len,
                         const uint8_t *sig, size_t sig_len) HSM_MUST_CHECK;
hsm_result hsm_ks_mac(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_mac_alg alg,
                      const uint8_t *msg, size_t len, hsm_buf *mac) HSM_MUST_CHECK;
hsm_result hsm_ks_verify_mac(hsm_keystore *ks, const hsm_ks_keyref *ref, hsm_mac_alg alg,
                             const uint8_t *msg, size_t len, const uint8_t *mac,
                             size_t mac_len) HSM_MUST_CHECK;

/* ---- Key agreement --------------------------------------------------------- */

/*
 * ECDH (DeriveSharedSecret) of a KEY_AGREEMENT key version with the peer's
 * DER SubjectPublicKeyInfo (checked as hsm_ecdh_derive says): appends the
 * raw shared secret to secret, a secure buffer the caller wipes with
 * hsm_buf_free.  A ref of another usage is HSM_ERR_INVALID_KEY_USAGE.
 */
hsm_result hsm_ks_derive_shared_secret(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                       const uint8_t *peer_spki, size_t peer_len,
                                       hsm_buf *secret) HSM_MUST_CHECK;

/* ---- Data keys ------------------------------------------------------------ */

/*
 * Makes n random bytes, returns them (secure buffer pt, may be NULL for the
 * WithoutPlaintext form) and encrypted under ref as a blob.
 */
hsm_result hsm_ks_generate_data_key(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                    const hsm_buf *ctx, size_t n, hsm_buf *pt,
                                    hsm_buf *blob) HSM_MUST_CHECK;
/*
 * Makes a key pair of pair_spec; returns the private key as PKCS#8 DER
 * (secure buffer priv, may be NULL), the same encrypted under ref as a
 * blob, and the public key as SPKI DER.
 */
hsm_result hsm_ks_generate_data_key_pair(hsm_keystore *ks, const hsm_ks_keyref *ref,
                                         const hsm_buf *ctx, hsm_key_spec pair_spec,
                                         hsm_buf *priv, hsm_buf *priv_blob,
                                         hsm_buf *pub) HSM_MUST_CHECK;

/* ---- Other secrets at rest ------------------------------------------------ */

/*
 * Wraps / unwraps a secret that is not a key version (an access key's
 * secret, ...) under the "principal" wrapping key; identity is bound as AAD.
 */
hsm_result hsm_ks_wrap_secret(hsm_keystore *ks, const char *identity, const hsm_secret *secret,
                              hsm_buf *wrapped) HSM_MUST_CHECK;
hsm_result hsm_ks_unwrap_secret(hsm_keystore *ks, const char *identity, const uint8_t *wrapped,
                                size_t len, hsm_secret **secret) HSM_MUST_CHECK;

/* Signs an audit checkpoint with the audit signing key (Ed25519). */
hsm_result hsm_ks_audit_sign(hsm_keystore *ks, const uint8_t *msg, size_t len,
                             hsm_buf *sig) HSM_MUST_CHECK;
/*
 * The keyed hash of the audit trail (HMAC-SHA256 under the audit-hash key)
 * ready for several values of one record: lent by the unsealed keystore's
 * pool, given back with hsm_keyed_hmac_free before the record is submitted
 * (a seal meanwhile wipes it once it is back).
 */
hsm_result hsm_ks_audit_hasher(hsm_keystore *ks, hsm_keyed_hmac **out) HSM_MUST_CHECK;
/* Keyed hash (HMAC-SHA256, hex) of a value for the audit trail. */
hsm_result hsm_ks_audit_hash(hsm_keystore *ks, const uint8_t *value, size_t len,
                             char out[2 * HSM_SHA256_LEN + 1]) HSM_MUST_CHECK;
/* The audit signing public key as PEM (available while sealed). */
hsm_result hsm_ks_audit_public_pem(hsm_keystore *ks, hsm_buf *out) HSM_MUST_CHECK;

/* ---- Backups ------------------------------------------------------------------ */

/*
 * The cipher of one backup file: AES-256-GCM under a key derived from the
 * DMK's backup key and the file's own random salt, so no two files share a
 * key and chunk i can use the nonce i.  The key stays in the keystore.
 */
#define HSM_KS_BACKUP_SALT_LEN 32
typedef struct hsm_ks_backup_cipher hsm_ks_backup_cipher;
hsm_result hsm_ks_backup_cipher_new(hsm_keystore *ks, const uint8_t salt[HSM_KS_BACKUP_SALT_LEN],
                                    hsm_ks_backup_cipher **out) HSM_MUST_CHECK;
/* Appends ciphertext || 16-byte tag of chunk `index`; aad binds the file's header. */
hsm_result hsm_ks_backup_seal(hsm_ks_backup_cipher *c, uint64_t index, const uint8_t *aad,
                              size_t aad_len, const uint8_t *pt, size_t n,
                              hsm_buf *out) HSM_MUST_CHECK;
/* Opens what hsm_ks_backup_seal made; HSM_ERR_INVALID_CIPHERTEXT when it does not verify. */
hsm_result hsm_ks_backup_open(hsm_ks_backup_cipher *c, uint64_t index, const uint8_t *aad,
                              size_t aad_len, const uint8_t *ct, size_t n,
                              hsm_buf *pt) HSM_MUST_CHECK;
/* Wipes and frees.  NULL is a no-op. */
void hsm_ks_backup_cipher_free(hsm_ks_backup_cipher *c);

/* Random bytes from the DRBG (GenerateRandom). */
hsm_result hsm_ks_random(hsm_keystore *ks, size_t n, hsm_buf *out) HSM_MUST_CHECK;

/* Cache statistics for metrics. */
typedef struct hsm_ks_stats {
	uint64_t cache_hits, cache_misses, cache_entries;
} hsm_ks_stats;
void hsm_ks_get_stats(hsm_keystore *ks, hsm_ks_stats *out);

#endif
