/*
 * share.h - custodian share files and the collection of a quorum.
 *
 * The domain master key (DMK) is split with Shamir's scheme (crypto/shamir.h)
 * into `count` shares, one per custodian, any `threshold` of which rebuild
 * it.  Each custodian keeps one share as a small text file:
 *
 *   hsmd-share v1
 *   store <store UUID, lowercase>
 *   set <share-set id: 16 lowercase hex digits>
 *   index <x-coordinate, 1..count>
 *   threshold <M>
 *   count <N>
 *   custodian <name>              (optional: present only when named)
 *   value <share: 64 lowercase hex digits>
 *   check <first 8 bytes of SHA-256 of every byte above, 16 lowercase hex digits>
 *
 * Every line ends with a single "\n" and nothing follows the check line.
 * Numbers are decimal without leading zeros.  The share-set id is new for
 * every split, so shares of an earlier split of the same DMK are refused.
 *
 * The parser is strict -- exact field order, exact spelling, one encoding
 * per value -- and the checksum covers everything else, so any single-byte
 * change to a file is refused (HSM_ERR_SHARE_INVALID, with a message naming
 * the line and field) rather than turned into a wrong key.  The checksum is
 * an error-detecting code, not a MAC: the keystore verifies the rebuilt DMK
 * against its key check value.  No error message ever contains the share
 * value.
 */
#ifndef HSM_SHARE_H
#define HSM_SHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"
#include "common/secret.h"
#include "common/util.h"
#include "crypto/shamir.h" /* HSM_SHAMIR_MAX_SHARES bounds count */

#define HSM_SHARE_SET_ID_LEN 8
#define HSM_SHARE_VALUE_LEN 32   /* the DMK's length */
#define HSM_SHARE_CUSTODIAN_MAX 64
#define HSM_SHARE_CHECK_LEN 8
/* No valid share file is longer; larger input is refused before parsing. */
#define HSM_SHARE_FILE_MAX 512

typedef struct hsm_share {
	char store_id[HSM_UUID_STRLEN + 1];
	uint8_t set_id[HSM_SHARE_SET_ID_LEN];
	unsigned index;     /* x-coordinate, 1..count */
	unsigned threshold; /* M */
	unsigned count;     /* N */
	/* [A-Za-z0-9._@-]{1,64}, or "" when the share names no custodian. */
	char custodian[HSM_SHARE_CUSTODIAN_MAX + 1];
	hsm_secret *value; /* owned by the struct: released by hsm_share_clear() */
} hsm_share;

/*
 * A commitment to one share: SHA-256 over a label, the store id, the set id,
 * the index, the custodian name (version 2 only) and the value.  The store
 * keeps one per share of its current split, so a share file that parses and
 * carries a right checksum, yet was not issued (forged from the store's
 * public identity, its index rewritten, or, from version 2, relabelled with
 * another custodian's name), is refused on its own when given, not found out
 * only when the quorum is combined.  It reveals nothing of the value.
 *
 * Version 1 is what splits made before custodian names were bound carry; it
 * is computed only to check their shares.  Every new split commits with
 * HSM_SHARE_COMMIT_CURRENT.  An unnamed share commits to the empty name.
 */
#define HSM_SHARE_COMMIT_LEN 32
#define HSM_SHARE_COMMIT_V1 1 /* store, set, index, value */
#define HSM_SHARE_COMMIT_V2 2 /* store, set, index, custodian name, value */
#define HSM_SHARE_COMMIT_CURRENT HSM_SHARE_COMMIT_V2
hsm_result hsm_share_commitment(const hsm_share *s, unsigned version,
                                uint8_t out[HSM_SHARE_COMMIT_LEN]) HSM_MUST_CHECK;

/* A fresh random share-set id for a new split. */
hsm_result hsm_share_set_id_new(uint8_t out[HSM_SHARE_SET_ID_LEN]) HSM_MUST_CHECK;

/* Whether name is a valid custodian name: [A-Za-z0-9._@-]{1,64}. */
bool hsm_share_custodian_valid(const char *name);

/*
 * Appends the share file for s to out, which must be a secure buffer
 * (hsm_buf_init_secure): it holds the share value.  Fails with
 * HSM_ERR_VALIDATION when s is not a share the decoder would accept; out is
 * then unchanged.
 */
hsm_result hsm_share_encode(const hsm_share *s, hsm_buf *out) HSM_MUST_CHECK;

/*
 * Parses a share file p[0..n).  On success fills *out (whose value the caller
 * then owns and releases with hsm_share_clear); on failure *out is untouched
 * and the error is HSM_ERR_SHARE_INVALID with a message naming the line and
 * field at fault.
 */
hsm_result hsm_share_decode(const uint8_t *p, size_t n, hsm_share *out) HSM_MUST_CHECK;

/*
 * Names a share file p[0..n) for the audit trail, as the ceremony's
 * transcript does, whether or not it decodes: "share 2 of 5, custodian bob,
 * sha256:<hex of the file>", with only the header fields that parse (a file
 * whose header does not is named by "sha256:<hex>" alone).  Reads no value
 * line: out never holds any part of the share's value.  Fails only when
 * SHA-256 does (out of memory); out (cap bytes) is then "".  A header that
 * does not parse may leave its message in hsm_last_message: call this before
 * what reports the file's fault (hsm_share_decode).
 */
hsm_result hsm_share_describe(const uint8_t *p, size_t n, char *out, size_t cap) HSM_MUST_CHECK;

/* Wipes s and frees its value.  NULL is a no-op; clearing twice is fine. */
void hsm_share_clear(hsm_share *s);

/*
 * Splits dmk (HSM_SHARE_VALUE_LEN bytes) into count shares for the store
 * store_id and the share set set_id.  custodians is NULL or holds count
 * valid names, distinct regardless of ASCII case (an empty string leaves
 * that share unnamed).  A
 * threshold of 1 is accepted only as 1-of-1 with dev true.  Before returning,
 * the shares are recombined (first and last `threshold` of them) and checked
 * against dmk.  On success out[0..count) are filled (out[i].index == i + 1)
 * and owned by the caller, who clears each; on failure out is untouched.
 * Errors: HSM_ERR_VALIDATION for bad parameters or names, HSM_ERR_CRYPTO
 * when randomness or the self-check fails.
 */
hsm_result hsm_shares_create(const hsm_secret *dmk, const char *store_id,
                             const uint8_t set_id[HSM_SHARE_SET_ID_LEN], unsigned threshold,
                             unsigned count, const char *const custodians[], bool dev,
                             hsm_share out[]) HSM_MUST_CHECK;

/*
 * Quorum collection, as unseal uses it: shares arrive one at a time (possibly
 * from different custodians over the network) and are checked against the
 * store's own record of its split before they are kept.  Not thread-safe:
 * the caller serializes access to one set.
 */
typedef struct hsm_share_set hsm_share_set;

/*
 * A new, empty collection for the store store_id whose DMK was split as
 * set_id, threshold of count.  The caller owns *out and releases it with
 * hsm_share_set_free().  HSM_ERR_VALIDATION for an invalid description.
 */
hsm_result hsm_share_set_new(const char *store_id, const uint8_t set_id[HSM_SHARE_SET_ID_LEN],
                             unsigned threshold, unsigned count,
                             hsm_share_set **out) HSM_MUST_CHECK;

/*
 * Adds one share.  On success the set takes ownership of share->value and
 * sets it to NULL (the caller still clears the struct); on failure the share
 * is untouched.  Errors:
 *   HSM_ERR_SHARE_MISMATCH  the share is for another store, another split
 *                           (set id), another threshold/count, or its index
 *                           is out of range; the message says which;
 *   HSM_ERR_SHARE_DUPLICATE a share with this index was already provided;
 *   HSM_ERR_SHARE_INVALID   the share value has the wrong length.
 */
hsm_result hsm_share_set_add(hsm_share_set *set, hsm_share *share) HSM_MUST_CHECK;

/* Number of shares provided so far. */
unsigned hsm_share_set_have(const hsm_share_set *set);
/* How many more shares are needed before combine can succeed (0 when enough). */
unsigned hsm_share_set_needed(const hsm_share_set *set);
/* The threshold the set was created with. */
unsigned hsm_share_set_threshold(const hsm_share_set *set);
/* Whether the share with this index has been provided. */
bool hsm_share_set_has(const hsm_share_set *set, unsigned index);

/*
 * Rebuilds the DMK from every share provided (at least threshold of them).
 * On success *dmk is a new secret owned by the caller; the set keeps its
 * shares until freed.  HSM_ERR_QUORUM_REQUIRED ("2 of 3 shares provided;
 * 1 more needed") when too few were given.  The result is not verified here:
 * the keystore compares it with the store's key check value.
 */
hsm_result hsm_share_set_combine(const hsm_share_set *set, hsm_secret **dmk) HSM_MUST_CHECK;

/*
 * Checks share against the polynomial the set's shares define, without
 * adding it: for shares given beyond the quorum where no commitments are at
 * hand (a backup's keystore).  The set holds at least threshold shares that
 * rebuilt the DMK (checked against its key check value).  The custodian name
 * is not covered: only commitments bind it.  Errors: those of
 * hsm_share_set_add for a share of another store or split;
 * HSM_ERR_SHARE_INVALID when share is not of the split (altered or forged);
 * HSM_ERR_QUORUM_REQUIRED when the set holds too few shares.  Neither the
 * set nor share changes.
 */
hsm_result hsm_share_set_check_member(const hsm_share_set *set,
                                      const hsm_share *share) HSM_MUST_CHECK;

/* Wipes and frees every share held.  NULL is a no-op. */
void hsm_share_set_free(hsm_share_set *set);

#endif
