/*
 * local.h - hsmctl's offline mode: working directly on a data directory.
 *
 * Offline commands open the store (which locks the directory, so they never
 * run beside a live hsmd on the same data), build the keystore and the KMS
 * service in-process and unseal with the custodian share files given on the
 * command line.  The caller acts as the local operator.
 */
#ifndef HSMCTL_LOCAL_H
#define HSMCTL_LOCAL_H

#include "audit/audit.h"
#include "common/util.h"
#include "kms/kms.h"
#include "store/store.h"

typedef struct hsmctl_local {
	hsm_store *store;
	hsm_keystore *ks;
	hsm_kms *kms;
	hsm_audit *audit; /* <data dir>/audit: offline changes are audited like API calls */
	struct hsmctl_outbox *outbox; /* each change's outbox row (local.c), when opened to change */
	/*
	 * The account and region kms works with: the store's record of them, else
	 * hsmctl_globals.key_account/key_region.  identity_recorded: the store's;
	 * identity_known: either (else kms has placeholders, and must make no key).
	 */
	char account[13];
	char region[HSM_REGION_NAME_MAX + 1];
	bool identity_recorded, identity_known;
	/*
	 * Opened to change, its schema not yet brought forward (hsmctl_local_open_as_is):
	 * the command may read and refuse, but changes nothing before hsmctl_local_migrate.
	 */
	bool unmigrated;
	const char *data_dir; /* borrowed from the caller, for hsmctl_local_migrate */
	const char *adopted;  /* hsmctl_local_open_adopting's request id, or NULL */
	/*
	 * The local operator (hsmctl_local_caller) whose operations on kms
	 * migrate the store at their commit (hsm_caller_commit), once every
	 * check of the request passed: pass &l->caller to kms.  Its gate points
	 * at l, which must not be copied.
	 */
	hsm_caller caller;
	hsm_commit_gate gate;
} hsmctl_local;

#define HSMCTL_MAX_SHARE_ARGS 16

/* The store offline commands open: --store when given, else data_dir's own. */
const char *hsmctl_store_location(const char *data_dir);
/*
 * Opens the store (hsmctl_store_location), which must exist (a missing one
 * is "no hsmd store in ...", HSM_ERR_NOT_FOUND: a mistyped --data-dir is
 * not made into a new store) and is brought up to date, and data_dir's
 * audit trail; with n_shares > 0 also unseals with those share files.  Each change made until
 * the next record (hsmctl_local_audit*) commits an audit outbox row
 * (store.h) with that record's request id, deleted at close once the trail
 * is durable: hsmctl killed between a change and its record leaves the row,
 * which the next offline command on data_dir, or the hsmd serving it at its
 * start, settles with a RequestRecordRecovered record.  The same as
 * hsmctl_local_open_as_is followed at once by hsmctl_local_migrate: for a
 * command that has nothing left to refuse once its shares have opened the store.
 */
hsm_result hsmctl_local_open(const char *data_dir, size_t n_shares, char *const shares[],
                             hsmctl_local *out) HSM_MUST_CHECK;
/*
 * hsmctl_local_open for a command that may still refuse on what the store
 * holds (a user that exists, a key that does not): the store is opened as
 * it is (hsm_store_open_existing) and unsealed with the shares, and an older
 * schema is brought forward only by hsmctl_local_migrate, which an
 * operation of l->kms called as l->caller runs at its commit, once every
 * check of its request passed (hsm_caller_commit): a refused command leaves
 * the store one the older hsmd still opens, with no upgrade on it, as a
 * refused start of hsmd does.  Nothing else may change the store, and no
 * outbox works, until hsmctl_local_migrate.
 */
hsm_result hsmctl_local_open_as_is(const char *data_dir, size_t n_shares, char *const shares[],
                                   hsmctl_local *out) HSM_MUST_CHECK;
/*
 * Brings the store of hsmctl_local_open_as_is (or _create_as_is) up to this
 * build's schema, as hsm_store_migrate (the log line, the upgrade record for
 * the next Startup event), makes l->kms anew on it and opens the audit
 * outbox: from here on the command may change the store.  Once per opening.
 */
hsm_result hsmctl_local_migrate(hsmctl_local *l) HSM_MUST_CHECK;
/*
 * The same for commands that only read the store (status, unseal, backup
 * create): an existing store, opened as it is (hsm_store_open_existing), so
 * a mistyped directory is reported instead of made into a new store and an
 * older store is not migrated behind the operator's back (the hsmd that
 * wrote it can still open it; restore migrates the backup's copy).
 */
hsm_result hsmctl_local_inspect(const char *data_dir, size_t n_shares, char *const shares[],
                                hsmctl_local *out) HSM_MUST_CHECK;
/*
 * hsmctl_local_inspect for a command that changes files, not the store
 * (backup create): when the store's schema is this build's (l->outbox is
 * then set), the audit outbox works as for hsmctl_local_open, so the
 * command can commit its row (hsm_store_outbox_note) before it writes its
 * files.  An older store is still opened as it is, without one.
 */
hsm_result hsmctl_local_inspect_noting(const char *data_dir, size_t n_shares,
                                       char *const shares[], hsmctl_local *out) HSM_MUST_CHECK;
void hsmctl_local_close(hsmctl_local *l);

/*
 * A change hsmctl makes to data_dir's store before it can open it to record
 * it (restore: the store is put in place first).  hsmctl_early_change_init
 * makes its outbox intent: a new request id, under data_dir's offline node
 * id (data_dir must exist: the id hashes its real path).  The caller sets
 * it on the thread (hsm_store_intent_begin) around the commit that makes
 * the change (hsm_store_outbox_note, hsm_store_copy_noted), so the row is
 * in the store exactly when the change is.  hsmctl_local_open_adopting then
 * opens as hsmctl_local_open, leaving that row for this command: its next
 * record carries the change's request id and settles the row as any other.
 */
typedef struct hsmctl_early_change {
	hsm_store_intent intent;
	char node[HSM_OUTBOX_NODE_ID_MAX + 1];
	char request[HSM_UUID_STRLEN + 1];
	char operation[HSM_OUTBOX_OPERATION_MAX + 1];
	char principal[32];
} hsmctl_early_change;
hsm_result hsmctl_early_change_init(hsmctl_early_change *c, const char *data_dir) HSM_MUST_CHECK;
hsm_result hsmctl_local_open_adopting(const char *data_dir, size_t n_shares, char *const shares[],
                                      const char *request_id, hsmctl_local *out) HSM_MUST_CHECK;
/*
 * hsmctl_local_open_as_is for init, which makes the store when there is none
 * (a new store is this build's at once); an existing one is opened as it is,
 * for init to refuse before hsmctl_local_migrate.
 */
hsm_result hsmctl_local_create_as_is(const char *data_dir, hsmctl_local *out) HSM_MUST_CHECK;
/*
 * Records an offline operation in the audit trail (blocking).  Fails closed:
 * the caller reports a failure to record as the command's failure.
 */
hsm_result hsmctl_local_audit(hsmctl_local *l, const char *operation, const char *key_id,
                              uint32_t version, hsm_result outcome) HSM_MUST_CHECK;

/*
 * Whether the change just made committed its outbox row: if its record then
 * fails, the next offline command or the node's start writes it.
 */
bool hsmctl_local_noted(const hsmctl_local *l);
/*
 * The operation the next change's outbox row names becomes "hsmctl
 * <command> <detail>" (hsmctl backup create: the backup's id), so that the
 * record written in its stead can name what the change made.  Before the
 * change commits; a no-op without an outbox.
 */
hsm_result hsmctl_local_name_change(hsmctl_local *l, const char *detail) HSM_MUST_CHECK;

/* The same with extra fields. */
hsm_result hsmctl_local_audit_fields(hsmctl_local *l, const char *operation, const char *key_id,
                                     uint32_t version, hsm_result outcome,
                                     const hsm_audit_field *extra, size_t n_extra) HSM_MUST_CHECK;
/*
 * Unseals ks with share files (paths); fails naming the file at fault, or
 * with HSM_ERR_QUORUM_REQUIRED when they are fewer than the threshold.
 */
hsm_result hsmctl_unseal_files(hsm_keystore *ks, size_t n, char *const files[]) HSM_MUST_CHECK;
/* The same, naming the shares read ("share 2 of 5, custodian bob, sha256:...; ...") in
 * given (for the audit trail; may be NULL). */
hsm_result hsmctl_unseal_files_noted(hsm_keystore *ks, size_t n, char *const files[],
                                     hsm_buf *given) HSM_MUST_CHECK;

/*
 * r, or, when r failed because l's store stayed sealed for want of shares
 * (n_shares is 0), the failure saying so: which option to give, and how many;
 * when a store opened as it is, older than this build, failed a read before
 * any change (hsmctl_local_open_as_is), r saying that the upgraded hsmd
 * must bring it forward first.  Call before hsmctl_local_close.
 */
hsm_result hsmctl_local_explain(hsmctl_local *l, size_t n_shares, hsm_result r) HSM_MUST_CHECK;

/*
 * Writes a file that must not exist yet (an existing one is refused, never
 * overwritten), readable by its owner only (0400), and fsyncs it and its
 * directory.  A file it could not write whole and durably is deleted.
 */
hsm_result hsmctl_write_new_file(const char *path, const uint8_t *p, size_t n) HSM_MUST_CHECK;
/*
 * Refuses a share directory that is the data directory, inside it, or holds
 * it: whoever holds the data directory (or a copy of its disk) would hold the
 * quorum with the store.  Compared after symlinks, for the part of each path
 * that exists (the rest is read as written).  A share directory that exists
 * must be one no other user may write to: not writable by its group or
 * others, and owned by this user or root.  Changes nothing.
 */
hsm_result hsmctl_share_dir_apart(const char *share_dir, const char *data_dir) HSM_MUST_CHECK;
/*
 * The share files of a split as the trail's Init and Rekey records name them
 * ("1:<first 16 hex digits of the file's SHA-256>,2:...", never a value),
 * into out (cap bytes, HSM_AUDIT_VALUE_MAX fits 16 shares).
 */
hsm_result hsmctl_share_fingerprints(const hsm_buf shares[], unsigned n, char *out,
                                     size_t cap) HSM_MUST_CHECK;
/*
 * The custodians of a split as the trail's Init and Rekey records name them,
 * "alice,bob,...", into out (cap bytes).  Names are never cut: a list longer
 * than out holds (16 long names do not fit an audit value) ends with the
 * whole names that fit and ",+N more (named in the transcript)".
 */
void hsmctl_custodian_names(char *const names[], unsigned n, char *out, size_t cap);
/*
 * Splits a --custodians list (cut in place; out points into it) into at
 * most HSM_MAX_SHARES names, *n of them; 0, or cmd's usage error (2) for a
 * name that is not 1 to 64 of A-Z a-z 0-9 . _ @ -, too many names, or a
 * custodian named twice, in any case: "alice" and "Alice" would be one
 * person holding two shares of the quorum (and, on a file system that folds
 * case, one share file).
 */
int hsmctl_custodian_list(const char *cmd, char *list, char *out[], unsigned *n);
/* A share file's path: DIR/<custodian>.share, or DIR/share-<i+1>-of-<n>.share without names. */
void hsmctl_share_path(const char *dir, const char *custodian, unsigned i, unsigned n, char *out,
                       size_t cap);

/* The operator acting locally (full rights: they hold the directory and the quorum). */
extern const hsm_caller hsmctl_local_caller;

#endif
