/*
 * store_impl.h - what a storage backend implements (see store.h).
 *
 * store.c checks every argument of the public functions (NULL pointers abort,
 * malformed values are rejected) and then calls the backend through the ops
 * table below, so a backend may rely on:
 *   - pointers the public contract makes mandatory are non-NULL;
 *   - strings are NUL-terminated and fit the record fields they name;
 *   - limits are in [1, HSM_STORE_LIST_MAX];
 *   - "after" cursors are "" (never NULL) for the first page;
 *   - n-element arrays have n >= 1 elements.
 * A backend keeps every rule listed at the top of store.h, returns outputs
 * only on success, and maps its own failures to HSM_ERR_STORE (or a precise
 * code) with a message that holds no data values.
 *
 * Adding a backend: write store_<name>*.c exposing one open function with the
 * signature of hsm_store_backend_open_fn, and list it in store.c's backend
 * table under its location prefix.
 */
#ifndef HSM_STORE_IMPL_H
#define HSM_STORE_IMPL_H

#include <string.h>

#include "store/store.h"

typedef struct hsm_store_ops hsm_store_ops;
typedef struct st_vec st_vec; /* below, with the helpers */

/*
 * Every record a store holds, one call per record, for hsm_store_copy and
 * snapshots.  Records come in an order that puts each record after those it
 * refers to: metadata, users, access keys, keys, versions, aliases, tags,
 * grants, certificates.  Records are valid only during the call.
 */
typedef struct hsm_store_sink {
	void *arg;
	hsm_result (*meta)(void *arg, const char *name, const hsm_buf *value);
	hsm_result (*user)(void *arg, const hsm_user_record *u);
	hsm_result (*access_key)(void *arg, const hsm_access_key_record *k);
	hsm_result (*key)(void *arg, const hsm_key_record *k);
	hsm_result (*version)(void *arg, const hsm_version_record *v);
	hsm_result (*alias)(void *arg, const hsm_alias_record *a);
	hsm_result (*tag)(void *arg, const char *key_id, const hsm_tag *t);
	hsm_result (*grant)(void *arg, const hsm_grant_record *g);
	hsm_result (*certificate)(void *arg, const hsm_cert_record *c);
} hsm_store_sink;

/* Feeds records to a sink (in hsm_store_copy: the source store's export). */
typedef hsm_result (*hsm_store_producer)(const hsm_store_sink *sink, void *arg);

/* Every backend's handle begins with this header. */
struct hsm_store {
	const hsm_store_ops *ops;
	int migrated_from; /* the schema version this opening brought forward; 0 when none */
	_Atomic uint64_t corrupt_seen; /* hsm_store_corrupt_seen */
};

struct hsm_store_ops {
	const char *name; /* "sqlite", ... */
	void (*close)(hsm_store *s);
	int (*schema_version)(hsm_store *s);
	int (*schema_latest)(void); /* the version this build writes */
	hsm_result (*claim_node)(hsm_store *s, const char *node_id, bool *adopting);
	/* hsm_store_migrate: the pending schema steps of a store opened as it is. */
	hsm_result (*migrate)(hsm_store *s);
	/* hsm_store_check; NULL for a backend whose server checks its own pages. */
	hsm_result (*check)(hsm_store *s);

	hsm_result (*meta_get)(hsm_store *s, const char *name, hsm_buf *out);
	hsm_result (*meta_put)(hsm_store *s, size_t n, const char *const names[],
	                       const hsm_buf *const values[]);

	hsm_result (*key_create)(hsm_store *s, const hsm_key_record *key,
	                         const hsm_version_record *first, size_t n_tags,
	                         const hsm_tag tags[]);
	hsm_result (*key_get)(hsm_store *s, const char *key_id, hsm_key_record *out);
	/* Every id is a valid lookup (st_check_lookup); 0 < n <= HSM_STORE_KEYS_GET_MAX. */
	hsm_result (*keys_get)(hsm_store *s, size_t n, const char *const key_ids[], hsm_key_cb cb,
	                       void *arg);
	hsm_result (*key_update)(hsm_store *s, const char *key_id, hsm_key_update_fn fn, void *arg,
	                         const hsm_version_record *add_version, hsm_key_record *after);
	/* due_only: hsm_store_key_destroy_due */
	hsm_result (*key_destroy)(hsm_store *s, const char *key_id, int64_t now, bool due_only);
	/* fn may be NULL; material->key_id equals key_id. */
	hsm_result (*key_set_material)(hsm_store *s, const char *key_id, hsm_key_update_fn fn,
	                               void *arg, const hsm_version_record *material,
	                               hsm_key_record *after);
	/* fn may be NULL. */
	hsm_result (*key_promote)(hsm_store *s, const char *key_id, uint32_t version, int64_t now,
	                          hsm_rotation_type type, hsm_key_update_fn fn, void *arg,
	                          hsm_key_record *after);
	hsm_result (*key_list)(hsm_store *s, const char *after, size_t limit, bool include_destroyed,
	                       hsm_key_cb cb, void *arg, bool *truncated);
	hsm_result (*jwt_key_list)(hsm_store *s, const char *after, size_t limit, hsm_key_cb cb,
	                           void *arg, bool *truncated);
	hsm_result (*key_count)(hsm_store *s, uint64_t *out);
	hsm_result (*snapshot)(hsm_store *s, const char *path);
	/*
	 * The SQLite schema version of what snapshot writes; NULL for a backend
	 * whose snapshot is a new SQLite store (hsm_store_snapshot_to_sqlite),
	 * which has this build's.
	 */
	int (*snapshot_schema)(hsm_store *s);
	hsm_result (*lead)(hsm_store *s, bool want, uint32_t lease_ms, bool *leading);
	hsm_result (*keys_due)(hsm_store *s, int64_t now, size_t limit, hsm_key_cb cb, void *arg);
	hsm_result (*keys_due_count)(hsm_store *s, int64_t horizon, int64_t overdue_before,
	                             hsm_due_counts *out);

	hsm_result (*version_get)(hsm_store *s, const char *key_id, uint32_t version,
	                          hsm_version_record *out);
	hsm_result (*version_list)(hsm_store *s, const char *key_id, hsm_version_cb cb, void *arg);

	hsm_result (*alias_create)(hsm_store *s, const char *name, const char *key_id, int64_t now,
	                           const hsm_key_state_check *check);
	/* from is NULL when any current key will do. */
	hsm_result (*alias_update)(hsm_store *s, const char *name, const char *from,
	                           const char *key_id, int64_t now, const hsm_key_state_check *check);
	hsm_result (*alias_delete)(hsm_store *s, const char *name);
	hsm_result (*alias_get)(hsm_store *s, const char *name, hsm_alias_record *out);
	/* key_id is NULL for all keys. */
	hsm_result (*alias_list)(hsm_store *s, const char *key_id, const char *after, size_t limit,
	                         hsm_alias_cb cb, void *arg, bool *truncated);
	hsm_result (*alias_delete_for_key)(hsm_store *s, const char *key_id);

	hsm_result (*tags_put)(hsm_store *s, const char *key_id, size_t n, const hsm_tag tags[],
	                       const hsm_key_state_check *check);
	hsm_result (*tags_remove)(hsm_store *s, const char *key_id, size_t n,
	                          const char *const keys[], const hsm_key_state_check *check);
	hsm_result (*tags_list)(hsm_store *s, const char *key_id, const char *after, size_t limit,
	                        hsm_tag_cb cb, void *arg, bool *truncated);

	/*
	 * g->constraints may be NULL (stored as ""); existed is never NULL.  On
	 * a retried creation the backend sets g->grant_id and g->created only.
	 */
	hsm_result (*grant_create)(hsm_store *s, hsm_grant_record *g, bool *existed,
	                           const hsm_key_state_check *check);
	/* grant_create's limit check alone, read only. */
	hsm_result (*grant_fits)(hsm_store *s, const hsm_grant_record *g);
	hsm_result (*grant_get)(hsm_store *s, const char *key_id, const char *grant_id,
	                        hsm_grant_record *out);
	hsm_result (*grant_delete)(hsm_store *s, const char *key_id, const char *grant_id);
	/* grantee is NULL for every grantee. */
	hsm_result (*grant_list)(hsm_store *s, const char *key_id, const char *grantee,
	                         const char *after, size_t limit, hsm_grant_cb cb, void *arg,
	                         bool *truncated);
	hsm_result (*grant_list_retiring)(hsm_store *s, const char *retiring, const char *after,
	                                  size_t limit, hsm_grant_cb cb, void *arg, bool *truncated);

	/* Certificates (store.h): c is checked; create enforces HSM_MAX_CERTIFICATES. */
	hsm_result (*cert_create)(hsm_store *s, const hsm_cert_record *c);
	hsm_result (*cert_get)(hsm_store *s, const char *cert_id, hsm_cert_record *out);
	hsm_result (*cert_delete)(hsm_store *s, const char *cert_id);
	/* m is never NULL; its members may be (hsm_cert_match). */
	hsm_result (*cert_list)(hsm_store *s, const hsm_cert_match *m, const char *after,
	                        size_t limit, hsm_cert_cb cb, void *arg, bool *truncated);
	hsm_result (*cert_count)(hsm_store *s, uint64_t *out);
	hsm_result (*cert_count_expiring)(hsm_store *s, int64_t before, uint64_t *out);
	/* Key usage (store.h): records are checked. */
	hsm_result (*usage_put)(hsm_store *s, size_t n, const hsm_key_usage_record *recs);
	hsm_result (*usage_get)(hsm_store *s, const char *key_id, hsm_key_usage_record *out);
	hsm_result (*usage_since)(hsm_store *s, int64_t *out);

	hsm_result (*user_create)(hsm_store *s, const hsm_user_record *u);
	hsm_result (*user_get)(hsm_store *s, const char *name, hsm_user_record *out);
	hsm_result (*user_put)(hsm_store *s, const hsm_user_record *u);
	hsm_result (*user_change)(hsm_store *s, const char *name, hsm_user_change change);
	hsm_result (*user_auth_result)(hsm_store *s, const char *name, bool success,
	                               uint32_t lock_after, hsm_user_record *out, bool *locked_now);
	hsm_result (*user_list)(hsm_store *s, hsm_user_cb cb, void *arg);

	hsm_result (*access_key_create)(hsm_store *s, const hsm_access_key_record *k);
	hsm_result (*access_key_get)(hsm_store *s, const char *access_key_id,
	                             hsm_access_key_record *out);
	hsm_result (*access_key_set_active)(hsm_store *s, const char *access_key_id, bool active);
	/* user is NULL for all users. */
	hsm_result (*access_key_list)(hsm_store *s, const char *user, hsm_access_key_cb cb,
	                              void *arg);

	/*
	 * Quorum approvals (store.h).  open: a is checked and a->request is not
	 * NULL; out is never NULL.  approve and close: out may be NULL.  close:
	 * to is USED, DENIED or CANCELLED and by is what closed_by becomes ("" for
	 * USED).  purge: deleted is never NULL.  Approvals are not exported or
	 * imported: they are not part of copies and backups.
	 */
	hsm_result (*approval_open)(hsm_store *s, const hsm_approval_record *a,
	                            hsm_approval_record *out);
	hsm_result (*approval_get)(hsm_store *s, const char *id, hsm_approval_record *out);
	hsm_result (*approval_find)(hsm_store *s, const char *fingerprint, int64_t now,
	                            hsm_approval_record *out);
	hsm_result (*approval_approve)(hsm_store *s, const char *id, const char *approver,
	                               int64_t now, hsm_approval_record *out);
	hsm_result (*approval_close)(hsm_store *s, const char *id, hsm_approval_state to,
	                             const char *by, int64_t now, hsm_approval_record *out);
	hsm_result (*approval_reopen)(hsm_store *s, const char *id);
	/* list: after is never NULL (the start is {INT64_MAX, ""}); *truncated always set. */
	hsm_result (*approval_list)(hsm_store *s, bool open_only, int64_t now,
	                            const hsm_approval_cursor *after, size_t limit,
	                            hsm_approval_cb cb, void *arg, bool *truncated);
	hsm_result (*approval_purge)(hsm_store *s, int64_t before, uint64_t *deleted);
	/* rewrite: fn is set; rewritten is never NULL; each replacement is checked (VALIDATION). */
	hsm_result (*approval_rewrite)(hsm_store *s, hsm_approval_rewrite_fn fn, void *arg,
	                               uint64_t *rewritten);

	/* hsm_store_rekey: req is checked (names valid, fn set); counts is never NULL. */
	hsm_result (*rekey)(hsm_store *s, const hsm_store_rekey_req *req,
	                    hsm_store_rekey_counts *counts);

	/*
	 * Passes every record to sink, all read in one read transaction (one
	 * consistent state of the store).  Unlike list callbacks, the sink runs
	 * while that transaction is open: it must not call this store.  A sink's
	 * failure stops the export and is returned.
	 */
	hsm_result (*export_all)(hsm_store *s, const hsm_store_sink *sink);
	/*
	 * In one write transaction: fails with HSM_ERR_CONFLICT unless the store
	 * holds no metadata, keys or users; then calls produce with a sink that
	 * writes each record exactly as given (states, timestamps, counters and
	 * erased material included, which the public functions cannot all
	 * express), and commits only if produce succeeds.
	 */
	hsm_result (*import_all)(hsm_store *s, hsm_store_producer produce, void *arg);
	/* hsm_store_holds_any: import_all's emptiness check alone, in a read transaction. */
	hsm_result (*holds_any)(hsm_store *s, bool *any);

	/*
	 * Audit outbox (store.h); every string is already cut to its bound.
	 * page: node_id's rows after (after_ms, after_id) in list order (the
	 * first page: after_ms INT64_MIN, after_id ""), at most limit, appended
	 * to out (hsm_outbox_record items).  delete: n >= 1, in one write
	 * transaction.  Neither carries the thread's outbox row.
	 */
	hsm_result (*outbox_page)(hsm_store *s, const char *node_id, int64_t after_ms,
	                          const char *after_id, size_t limit, st_vec *out);
	hsm_result (*outbox_delete)(hsm_store *s, const char *node_id,
	                            const char *const *request_ids, size_t n);
	/* One write transaction that changes nothing: it carries the thread's row alone. */
	hsm_result (*outbox_note)(hsm_store *s);
	/*
	 * nodes: the node ids after after_node (the first page: "") whose
	 * oldest row is before before_ms, in id order, at most limit, appended
	 * to out (hsm_outbox_node items).
	 */
	hsm_result (*outbox_nodes_page)(hsm_store *s, const char *after_node, int64_t before_ms,
	                                size_t limit, st_vec *out);
	/*
	 * hsm_store_node_hold: *held, and *session the backend's own (NULL when
	 * it needs none); check and release take that session back.
	 */
	hsm_result (*node_hold)(hsm_store *s, const char *node_id, void **session, bool *held);
	hsm_result (*node_hold_check)(hsm_store *s, void *session);
	void (*node_hold_release)(hsm_store *s, void *session, const char *node_id);
};

/* ---- Helpers every backend uses (store.c) ------------------------------------------- */

/* A growable array of records, so list callbacks run after the backend's resources are released. */
struct st_vec {
	unsigned char *items;
	size_t n, cap, size;
};

void st_vec_init(st_vec *v, size_t item_size);
/* Appends a zeroed item and points *item at it (valid until the next push). */
hsm_result st_vec_push(st_vec *v, void **item) HSM_MUST_CHECK;
void *st_vec_at(const st_vec *v, size_t i);
/* Drops the last item (after a failed read into it); clear has released its contents. */
void st_vec_pop(st_vec *v);
/* Calls clear on every item (when not NULL) and frees the array. */
void st_vec_free(st_vec *v, void (*clear)(void *item));

/* The state rules of hsm_store_key_update (store.h): INVALID_STATE when broken. */
hsm_result st_check_transition(hsm_key_state before, hsm_key_state after,
                               bool new_version) HSM_MUST_CHECK;
/* The state rule of hsm_store_key_set_material (store.h): INVALID_STATE for a Destroyed key. */
hsm_result st_check_material_change(const hsm_key_record *k) HSM_MUST_CHECK;
/* Where hsm_store_key_set_material writes a version's material (store.h). */
typedef enum st_material_write {
	ST_MATERIAL_IN_USE,          /* a version up to primary_version: digest kept */
	ST_MATERIAL_INSERT_PENDING,  /* version primary_version + 1, absent: inserted */
	ST_MATERIAL_REPLACE_PENDING, /* version primary_version + 1, present: replaced whole */
} st_material_write;
/*
 * The version rules of hsm_store_key_set_material, given the loaded key and
 * whether the version exists: INVALID_STATE for a Destroyed key, NOT_FOUND
 * for a missing version up to primary_version or any version beyond
 * primary_version + 1; else *out says what to write.
 */
/*
 * What set_material writes for material m, given whether the version holds
 * material now and its valid_to: m itself, or for an erasure a copy in
 * *scratch with valid_to 0.  An erasure with a nonzero m->valid_to (an
 * expiry) needs the version to still hold material expiring at that time:
 * CONFLICT otherwise.
 */
hsm_result st_material_to_write(const hsm_version_record *m, bool holds, int64_t valid_to,
                                hsm_version_record *scratch,
                                const hsm_version_record **out) HSM_MUST_CHECK;
hsm_result st_material_target(const hsm_key_record *k, uint32_t version, bool exists,
                              st_material_write *out) HSM_MUST_CHECK;
/*
 * The two fields hsm_store_key_set_material derives from the key's versions
 * before fn runs: valid_to (earliest_valid_to: the earliest nonzero valid_to
 * of a version holding material, 0 when none) and HSM_KEYFLAG_NO_MATERIAL
 * (in_use_missing: a version up to primary_version holds no material).
 */
void st_set_material_fields(hsm_key_record *k, int64_t earliest_valid_to, bool in_use_missing);
/*
 * The rules of hsm_store_key_promote, given the loaded key and what the
 * version is: INVALID_STATE for a Destroyed key, CONFLICT unless version is
 * primary_version + 1, NOT_FOUND when it does not exist, INVALID_STATE when
 * it holds no material.
 */
hsm_result st_check_promote(const hsm_key_record *k, uint32_t version, bool exists,
                            bool holds_material) HSM_MUST_CHECK;
/*
 * The one-CKA_ID rule of hsm_store_alias_create and _update (store.h):
 * VALIDATION when `name` gives its key a PKCS#11 CKA_ID and one of `others`
 * (hsm_alias_record, the key's other aliases under HSM_PKCS11_ID_ALIAS, read
 * in the write transaction) gives it one already.
 */
hsm_result st_check_pkcs11_id(const char *key_id, const char *name,
                              const st_vec *others) HSM_MUST_CHECK;
/*
 * hsm_store_alias_update's rule on the alias as the write reads it (target:
 * the key it points at, NULL when there is no such alias): NOT_FOUND, or
 * CONFLICT when from is not NULL and differs from target.
 */
hsm_result st_check_alias_target(const char *name, const char *target,
                                 const char *from) HSM_MUST_CHECK;
/*
 * The condition a write depends on (hsm_key_state_check, store.h), asked of
 * the key's state as its row holds it (state_name, read under the write's
 * lock on the row), which *state receives; a name that is no state is
 * refused as damaged data.
 */
hsm_result st_ask_key_state(const hsm_key_state_check *check, const char *key_id,
                            const char *state_name, hsm_key_state *state) HSM_MUST_CHECK;
/*
 * SQL condition: column `name` starts with HSM_PKCS11_ID_ALIAS (common/encoding.h),
 * compared byte for byte (LIKE ignores case in SQLite).
 */
#define ST_SQL_PKCS11_ID_NAME "substr(name, 1, 16) = '" HSM_PKCS11_ID_ALIAS "'"
/*
 * hsm_store_user_create's refusal of name, the store holding the user
 * `held`, equal to it ignoring case: ALREADY_EXISTS naming the user held.
 */
hsm_result st_user_taken(const char *name, const char *held) HSM_MUST_CHECK;
/* A string an update fn left NULL becomes "": the records promise non-NULL strings. */
hsm_result st_fill_empty(char **s) HSM_MUST_CHECK;
/*
 * Both backends' key_update, key_set_material and key_promote, in their write
 * transaction: runs fn (when not NULL) on the loaded record, then applies
 * st_check_transition and st_fill_empty (store.h, hsm_store_key_update).
 */
hsm_result st_edit_key(hsm_key_record *rec, const char *key_id, hsm_key_update_fn fn, void *arg,
                       bool new_version) HSM_MUST_CHECK;

/*
 * The rules of the approval functions (store.h, "Quorum approvals"), shared
 * by the backends.  A backend loads the record with its approvers inside its
 * write transaction (locked against other writers), applies one of these,
 * which fails as the contract says or changes the record as it must be
 * written, and then writes that change.
 */
/* The record hsm_store_approval_open inserts for a (checked): Pending, no approvers, open;
 * LIMIT_EXCEEDED when its requester holds `held` open requests, HSM_APPROVALS_OPEN_PER_USER. */
hsm_result st_approval_fresh(const hsm_approval_record *a, int64_t held,
                             hsm_approval_record *out) HSM_MUST_CHECK;
/* Appends an approver read back from the store (STORE when it cannot hold one more). */
hsm_result st_approval_add(hsm_approval_record *a, const char *approver) HSM_MUST_CHECK;
/* Checks approve's rules and appends approver (its position is a->n_approvers after). */
hsm_result st_approval_approve(hsm_approval_record *a, const char *approver,
                               int64_t now) HSM_MUST_CHECK;
/* Checks close's rules and sets state, closed and closed_by. */
hsm_result st_approval_close(hsm_approval_record *a, hsm_approval_state to, const char *by,
                             int64_t now) HSM_MUST_CHECK;
/* Checks reopen's rule and makes the record Pending again (approvers kept). */
hsm_result st_approval_reopen(hsm_approval_record *a) HSM_MUST_CHECK;
/* A request text a record can hold: not NULL, at most HSM_APPROVAL_REQUEST_MAX bytes. */
hsm_result st_approval_check_request(const char *request) HSM_MUST_CHECK;
/* A listing page of approvals ends early, Truncated, once its request texts pass this many
 * bytes (it holds one record at least): a page of 1000 texts of 256 KiB would take 256 MB. */
#define ST_APPROVAL_PAGE_BYTES ((int64_t)4 << 20)
/* Records hsm_store_approval_rewrite reads at a time (in id order), bounding its memory. */
#define ST_APPROVAL_REWRITE_PAGE 32
/*
 * Lists read a page of records, then their approvers in the same order
 * (records without approvers have no rows): finds the record of id at or
 * after page[*at], moving *at there.
 */
hsm_result st_approval_page_find(const st_vec *page, size_t *at, const char *id,
                                 hsm_approval_record **out) HSM_MUST_CHECK;

/*
 * Both backends' rekey, in their write transaction: CONFLICT unless the
 * metadata value read for req->expect_names[i] (found false when absent)
 * equals req->expect_values[i].
 */
hsm_result st_rekey_expect(const hsm_store_rekey_req *req, size_t i, bool found,
                           const hsm_buf *value) HSM_MUST_CHECK;
/* One row a backend's rekey read: a key version's material or an access key's secret. */
typedef struct st_rekey_row {
	char id[HSM_UUID_STRLEN + 1]; /* a key id, or an access key id (shorter) */
	uint32_t version;
	hsm_key_spec spec;
	hsm_key_usage usage;
	hsm_buf wrapped;
} st_rekey_row;
/* Frees what a row owns (an st_vec clear function). */
void st_rekey_row_clear(void *item);
/* Calls req->fn for row, of kind; out receives the new wrapped bytes (emptied first). */
hsm_result st_rekey_wrap(const hsm_store_rekey_req *req, hsm_wrapped_kind kind,
                         const st_rekey_row *row, hsm_buf *out) HSM_MUST_CHECK;
/* Pages of rows a backend's rekey reads, re-wraps and writes back at a time. */
#define ST_REKEY_PAGE 256
/* A backend's part of st_rekey_kind: the page of kind after *last (page empty on entry), and
 * one row's new wrapped bytes written back; conn is the backend's connection. */
typedef hsm_result (*st_rekey_read_fn)(void *conn, hsm_wrapped_kind kind,
                                       const st_rekey_row *last, st_vec *page);
typedef hsm_result (*st_rekey_write_fn)(void *conn, hsm_wrapped_kind kind,
                                        const st_rekey_row *row, const hsm_buf *wrapped);
/* Re-wraps every row of one kind, a page at a time, counting them into *count. */
hsm_result st_rekey_kind(void *conn, const hsm_store_rekey_req *req, hsm_wrapped_kind kind,
                         st_rekey_read_fn read_page, st_rekey_write_fn write_row,
                         uint64_t *count) HSM_MUST_CHECK;

/*
 * Opens a backend at its location (the part after the prefix, or all of it:
 * store.c's table), as hsm_store_open (mode HSM_STORE_MIGRATE) or
 * hsm_store_open_existing (HSM_STORE_EXISTING) say.
 */
typedef enum hsm_store_open_mode {
	HSM_STORE_MIGRATE,  /* create when missing, bring the schema up to date */
	HSM_STORE_EXISTING, /* only an existing store, its schema left as it is */
} hsm_store_open_mode;
typedef hsm_result (*hsm_store_backend_open_fn)(const char *location, hsm_store_open_mode mode,
                                                hsm_store **out);

/* The embedded SQLite backend (store_sqlite*.c); location is a directory. */
hsm_result hsm_store_sqlite_open(const char *dir, hsm_store **out) HSM_MUST_CHECK;
hsm_result hsm_store_sqlite_open_mode(const char *dir, hsm_store_open_mode mode,
                                      hsm_store **out) HSM_MUST_CHECK;
/*
 * Empties what copies do not carry (approvals, key uses, the audit outbox)
 * from a closed SQLite file.
 */
hsm_result hsm_store_sqlite_drop_transient(const char *db_path) HSM_MUST_CHECK;
/* The SQLite schema version this build writes; opening migrates older stores to it. */
int hsm_store_sqlite_schema_latest(void);

/* The PostgreSQL backend (store_pg*.c); location is the whole libpq connection URI. */
hsm_result hsm_store_pg_open(const char *location, hsm_store_open_mode mode,
                             hsm_store **out) HSM_MUST_CHECK;
/* The PostgreSQL schema version this build writes (numbered apart from SQLite's). */
int hsm_store_pg_schema_latest(void);

/*
 * Writes a SQLite store file at path (new, mode 0600) holding a copy of src,
 * read through src's export (one consistent read): how a backend without
 * files of its own takes a snapshot that backups and restores can use.
 * Nothing is left at path on failure.
 */
hsm_result hsm_store_snapshot_to_sqlite(hsm_store *src, const char *path) HSM_MUST_CHECK;

/*
 * The schema steps of each backend, in order, for the test that pins what
 * has shipped: count, and step i's number and SQL ("" for a step that is
 * C code only).
 */
size_t hsm_store_sqlite_schema_steps(void);
int hsm_store_sqlite_schema_step(size_t i, const char **sql);
size_t hsm_store_pg_schema_steps(void);
int hsm_store_pg_schema_step(size_t i, const char **sql);

/*
 * A stored certificate's notAfter (epoch seconds), read from its DER, for
 * the schema steps that fill in the column for rows written before it
 * existed.  HSM_ERR_VALIDATION when der is no certificate.
 */
hsm_result st_cert_not_after(const uint8_t *der, size_t len, int64_t *out) HSM_MUST_CHECK;


/* ---- Audit outbox (store_outbox.c) ------------------------------------------------------------ */

/* The row an intent writes: its values cut to the HSM_OUTBOX_*_MAX bounds (store.h). */
typedef struct st_outbox_row {
	char node_id[HSM_OUTBOX_NODE_ID_MAX + 1];
	char request_id[HSM_OUTBOX_REQUEST_ID_MAX + 1];
	int64_t created_ms;
	char operation[HSM_OUTBOX_OPERATION_MAX + 1];
	char principal[HSM_OUTBOX_PRINCIPAL_MAX + 1];
	char access_key_id[HSM_OUTBOX_ACCESS_KEY_ID_MAX + 1];
	char source[HSM_OUTBOX_SOURCE_MAX + 1];
	char key_id[HSM_OUTBOX_KEY_ID_MAX + 1];
} st_outbox_row;

/*
 * The calling thread's intent while its row is still to be written (one is
 * set and not written), else NULL.  A backend's write commit asks this just
 * before COMMIT: with an intent, it inserts st_outbox_row_of's row in the
 * same transaction (a failed insert fails the transaction), and sets
 * written once the COMMIT succeeded.
 */
hsm_store_intent *st_intent_pending(void);
/* in's row as of now: key_id as it reads now, created_ms the current UTC time. */
/*
 * The end of both backends' row insert: a later intent of the same request
 * (the handler's, after authentication's count reset) names what the
 * request did: its operation and non-empty fields win, the first commit's
 * time stays (store.h).  Both SQLite and PostgreSQL read it the same way.
 */
#define ST_OUTBOX_MERGE                                                                            \
	"ON CONFLICT (node_id, request_id) DO UPDATE SET operation = excluded.operation, "        \
	"principal = CASE WHEN excluded.principal <> '' THEN excluded.principal "                \
	"ELSE audit_outbox.principal END, "                                                        \
	"access_key_id = CASE WHEN excluded.access_key_id <> '' THEN excluded.access_key_id "    \
	"ELSE audit_outbox.access_key_id END, "                                                    \
	"source = CASE WHEN excluded.source <> '' THEN excluded.source ELSE audit_outbox.source " \
	"END, key_id = CASE WHEN excluded.key_id <> '' THEN excluded.key_id "                     \
	"ELSE audit_outbox.key_id END"
void st_outbox_row_of(hsm_store_intent *in, st_outbox_row *out);
/* The key a change creates or writes, for the row of the thread's intent (if one is pending). */
void st_intent_note_key(const char *key_id);
/*
 * Takes the calling thread's intent away (returning it, or NULL) around
 * writes that must carry no row (store.h, "Audit outbox"); st_intent_restore
 * gives it back.
 */
hsm_store_intent *st_intent_hold(void);
void st_intent_restore(hsm_store_intent *in);
/* The st_vec clear function of hsm_outbox_record items. */
void st_outbox_record_clear(void *item);

/* ---- Schema upgrades on the store's own record (store.c) ---- */

/*
 * The metadata names that keep an upgrade until a node's audit trail said
 * it: ST_UPGRADE_META "<backend>:<latest>" holds the version the store had
 * (as decimal text), written if absent in the transaction of each step a
 * migration of a store that had a schema commits, so the earliest version
 * stays when a migration is cut short and finished later;
 * ST_UPGRADE_REPORTED_META "<backend>:<latest>" is written once a Startup
 * record carried it (hsm_store_migration_reported).  The backend's name keeps
 * a copy between backends (a backup, hsmctl store copy) from reading one
 * backend's numbers as the other's.
 */
#define ST_UPGRADE_META "schema_upgrade:"
#define ST_UPGRADE_REPORTED_META "schema_upgrade_reported:"

/* Whether a metadata name is one of those records (both begin "schema_upgrade"). */
static inline bool st_meta_is_upgrade(const char *name)
{
	return strncmp(name, "schema_upgrade", 14) == 0;
}

/* ---- Argument checks (store.c), shared by the public functions' files ---- */

/* A string that must be non-empty and fit a field of cap bytes (with the NUL). */
hsm_result st_check_name(const char *s, size_t cap, const char *what) HSM_MUST_CHECK;
/* A string that may be empty but must fit a field of cap bytes (with the NUL). */
hsm_result st_check_fits(const char *s, size_t cap, const char *what) HSM_MUST_CHECK;
/* An identifier for a lookup: empty is VALIDATION, too long NOT_FOUND (it cannot exist). */
hsm_result st_check_lookup(const char *s, size_t cap, const char *what) HSM_MUST_CHECK;
/* A store's schema version this build can open: not newer than latest, not negative. */
hsm_result st_check_schema(int64_t current, int latest) HSM_MUST_CHECK;
/* Whether s is exactly len lowercase hex digits (reads at most len + 1 bytes of it). */
bool st_is_lower_hex(const char *s, size_t len);
/* A listing's limit: 1 to HSM_STORE_LIST_MAX. */
hsm_result st_check_limit(size_t limit) HSM_MUST_CHECK;

/* A listing cursor: NULL (from the start) as the empty string. */
static inline const char *st_cursor(const char *after)
{
	return after != NULL ? after : "";
}

#endif
