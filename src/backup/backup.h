/*
 * backup.h - encrypted backups of the store (DESIGN.md "Formats": a
 * versioned, integrity-protected file whose contents reveal nothing without
 * a quorum of custodian shares).
 *
 * A backup is a transaction-consistent copy of the whole store (keys with
 * their wrapped material, versions, aliases, tags, policies, principals),
 * encrypted as a whole: the key material inside is wrapped twice, and the
 * metadata (key ids, aliases, tags, user names) is encrypted too.
 *
 * File format (integers big-endian):
 *
 *   header   "HSMDBAK\n", u16 format (1), u32 header length, then
 *            lp store id, 8-byte share-set id, u8 threshold, u8 shares,
 *            16-byte key check value, lp backup id, u64 created (Unix s),
 *            lp node id, u32 schema version, u32 chunk size, u64 store bytes,
 *            32-byte salt                    (lp = u32 length, then bytes)
 *   chunks   ceil(store bytes / chunk size) chunks, each the AES-256-GCM
 *            ciphertext of the next chunk-size bytes (the last may be shorter)
 *            and its 16-byte tag; nonce = chunk index; AAD = the whole header
 *
 * The header is readable without the master key (which store, when, how many
 * shares restore it); it is authenticated by every chunk.  Nothing follows
 * the last chunk.  The file key is the keystore's (keystore.h "Backups").
 */
#ifndef HSM_BACKUP_H
#define HSM_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "common/result.h"
#include "keystore/keystore.h"
#include "store/store.h"

#define HSM_BACKUP_SUFFIX ".hsmbak"
#define HSM_BACKUP_FORMAT 1
#define HSM_BACKUP_NODE_MAX 64

typedef struct hsm_backup_info {
	char backup_id[HSM_UUID_STRLEN + 1];
	hsm_ks_identity identity; /* the store and the quorum that opens it */
	int64_t created;          /* Unix seconds */
	char node_id[HSM_BACKUP_NODE_MAX + 1];
	uint32_t schema_version;
	uint32_t chunk_size;
	uint64_t store_bytes; /* size of the store copy inside */
	uint64_t file_bytes;  /* the file's size as found */
	uint64_t whole_bytes; /* the size of the whole file the header describes */
	uint8_t salt[HSM_KS_BACKUP_SALT_LEN];
} hsm_backup_info;

typedef struct hsm_backup_request {
	hsm_store *store;
	hsm_keystore *ks;     /* unsealed */
	const char *dir;      /* the backup directory (created 0700 if missing) */
	const char *work_dir; /* where the plain copy of the store is made and removed: the data dir */
	const char *node_id;
	int64_t now;          /* the backup's time (Unix seconds) */
	uint32_t chunk_size;  /* 0: 1 MiB */
	/* NULL, or the backup's id (a UUID) chosen beforehand: named before its file is made */
	const char *backup_id;
} hsm_backup_request;

/*
 * Makes a backup: a consistent copy of the store, encrypted into
 * dir/hsmd-<store id>-<UTC time>-<id prefix>.hsmbak (mode 0600), written to
 * a hidden temporary name, synced and renamed, so a crash never leaves a
 * partial file under a backup's name.  path receives the file's path.
 */
hsm_result hsm_backup_create(const hsm_backup_request *req, char *path, size_t cap,
                             hsm_backup_info *info) HSM_MUST_CHECK;

/*
 * Deletes what a backup interrupted by a crash left: the plain store copy in
 * work_dir and the partial file in dir.  Only while no backup runs.
 */
void hsm_backup_remove_leftovers(const char *dir, const char *work_dir);

/* Reads a backup's header (no key needed; not yet authenticated). */
hsm_result hsm_backup_read_info(const char *path, hsm_backup_info *out) HSM_MUST_CHECK;

/*
 * Decrypts and authenticates a whole backup with ks, a keystore unsealed for
 * the backup's store (hsm_keystore_new_detached with its identity).  With
 * out_path, the store copy is written there (a new file, mode 0600, synced);
 * on any failure nothing is left at out_path.  NULL only verifies.
 */
hsm_result hsm_backup_decrypt(const char *path, hsm_keystore *ks, const char *out_path,
                              hsm_backup_info *info) HSM_MUST_CHECK;

/*
 * Calls cb for each backup in dir, oldest first (by creation time, then
 * name); store_id NULL lists every store's.  Files that are not backups,
 * hidden files (temporaries), and files shorter or longer than their header
 * says (a copy cut short by hand, a damaged disk) are skipped, each of the
 * last named in a warning: such a file is never listed, taken for the newest
 * backup, counted among those the retention keeps, nor deleted by it.  A
 * missing dir lists nothing.
 */
typedef hsm_result (*hsm_backup_cb)(const char *path, const hsm_backup_info *info, void *arg);
hsm_result hsm_backup_list(const char *dir, const char *store_id, hsm_backup_cb cb,
                           void *arg) HSM_MUST_CHECK;

/*
 * A backup dated more than this after now is not believed: its header is not
 * authenticated until the backup is restored, and the clock that dated it may
 * have been wrong (or this one is, stepped back since).
 */
#define HSM_BACKUP_FUTURE_SLACK_S 86400

/*
 * Deletes store_id's backups in dir created more than retention_days before
 * now, but never the `keep` newest (at least one).  hsmd keeps
 * HSM_BACKUP_KEEP_MIN: a wall clock stepped forward (an NTP step, a restored
 * VM, a bad RTC) makes every backup look expired at once.  A backup dated
 * more than HSM_BACKUP_FUTURE_SLACK_S after now is neither deleted nor one of
 * the `keep` newest (it would hold a slot until its date, and the last
 * honestly dated backups would go in its place): each is named in a warning,
 * for an operator to check and delete by hand.  removed (may be NULL)
 * receives the count deleted.
 */
#define HSM_BACKUP_KEEP_MIN 7
hsm_result hsm_backup_prune(const char *dir, const char *store_id, uint32_t retention_days,
                            int64_t now, size_t keep, size_t *removed,
                            hsm_buf *names) HSM_MUST_CHECK; /* names: NULL, or gets the
                                                             * deleted files' names, comma-separated */

/* Copies a backup file into dir under the same name (temporary, sync, rename). */
hsm_result hsm_backup_copy(const char *path, const char *dir) HSM_MUST_CHECK;

#endif
