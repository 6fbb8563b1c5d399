/*
 * outbox_rows.h - reading the store's audit outbox (store.h) to settle it:
 * the rows a node left, and the record written in place of a request's lost
 * one.  Shared by hsmd (server/outbox.c: its own rows, and those hsmctl's
 * offline changes left under its data directory) and hsmctl (its own, at the
 * next offline command on the directory).
 */
#ifndef HSM_AUDIT_OUTBOX_ROWS_H
#define HSM_AUDIT_OUTBOX_ROWS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/audit.h"
#include "store/store.h"

#define HSM_OUTBOX_RECOVERED_EVENT "RequestRecordRecovered"
/*
 * hsmctl backup create's row names the backup it makes before the file is
 * there: its operation is HSM_OUTBOX_BACKUP_OP, a space and the backup's id,
 * which the record in its stead gives as request_op HSM_OUTBOX_BACKUP_OP and
 * backup_id (the id's first 8 digits end the file's name).
 */
#define HSM_OUTBOX_BACKUP_OP "hsmctl backup create"
/* A request's record is looked for from this long before its commit (the clock may have moved). */
#define HSM_OUTBOX_SEARCH_MARGIN_MS (10LL * 60 * 1000)

/* One row, copied out of the store's listing. */
typedef struct hsm_outbox_row {
	char node[HSM_OUTBOX_NODE_ID_MAX + 1]; /* the node id it was written under */
	char id[HSM_OUTBOX_REQUEST_ID_MAX + 1], op[HSM_OUTBOX_OPERATION_MAX + 1];
	char principal[HSM_OUTBOX_PRINCIPAL_MAX + 1], akid[HSM_OUTBOX_ACCESS_KEY_ID_MAX + 1];
	char source[HSM_OUTBOX_SOURCE_MAX + 1], key_id[HSM_OUTBOX_KEY_ID_MAX + 1];
	int64_t created_ms;
} hsm_outbox_row;

typedef struct hsm_outbox_rows {
	hsm_outbox_row *v;
	size_t n, cap;
	/* Set by a node settling another node's rows: their node id, each record's request_node. */
	const char *request_node;
} hsm_outbox_rows;

/* Which rows to keep: NULL keeps all. */
typedef bool (*hsm_outbox_keep_fn)(const char *request_id, void *arg);

/* node_id's rows (those keep keeps) appended to out, oldest first. */
hsm_result hsm_outbox_rows_list(hsm_store *s, const char *node_id, hsm_outbox_keep_fn keep,
                                void *arg, hsm_outbox_rows *out) HSM_MUST_CHECK;
/*
 * The rows hsmctl's offline changes left that whoever holds the store of
 * data_dir settles (those keep keeps) appended to out, node after node:
 * on a store one process holds at a time (hsm_store_one_holder), every
 * "hsmctl-" node's, as the directory may have had another path or host
 * name when hsmctl wrote them; on a shared store only
 * hsm_outbox_offline_node(data_dir)'s, as another host's hsmctl may be
 * running under its own.
 */
hsm_result hsm_outbox_rows_list_offline(hsm_store *s, const char *data_dir,
                                        hsm_outbox_keep_fn keep, void *arg,
                                        hsm_outbox_rows *out) HSM_MUST_CHECK;
/* Deletes r's rows, each under its node id (hsm_store_outbox_delete). */
hsm_result hsm_outbox_rows_delete(hsm_store *s, const hsm_outbox_rows *r) HSM_MUST_CHECK;
void hsm_outbox_rows_free(hsm_outbox_rows *r);

/* The rows' request ids in a new array (r->n of them, borrowed from r; the caller frees it). */
const char **hsm_outbox_rows_ids(const hsm_outbox_rows *r);

/* Why a row's own record is missing, as its record in stead says. */
typedef const char *(*hsm_outbox_why_fn)(const hsm_outbox_row *w, void *arg);

/*
 * For each of r's rows that none of the trails in dirs[0..n_dirs) holds
 * (NULL entries skipped; a directory that does not exist holds none),
 * writes to a the record in its stead: RequestRecordRecovered, by `by`,
 * request_id the row's, saying who changed what and when, and why(w, arg)
 * its own record is missing.  *recorded counts those written, also when a
 * failure stops it (they are found in the trail next time).
 */
/* Which of r's rows one of the trails in dirs holds a record of: found[i] for r->v[i]. */
hsm_result hsm_outbox_rows_find(const hsm_outbox_rows *r, const char *const *dirs, size_t n_dirs,
                                bool *found) HSM_MUST_CHECK;
/* hsm_outbox_rows_record_missing's writing, for the rows not found[i]. */
hsm_result hsm_outbox_rows_record_unfound(const hsm_outbox_rows *r, const bool *found,
                                          hsm_audit *a, const char *by, hsm_outbox_why_fn why,
                                          void *arg, size_t *recorded) HSM_MUST_CHECK;
hsm_result hsm_outbox_rows_record_missing(const hsm_outbox_rows *r, const char *const *dirs,
                                          size_t n_dirs, hsm_audit *a, const char *by,
                                          hsm_outbox_why_fn why, void *arg,
                                          size_t *recorded) HSM_MUST_CHECK;

#endif
