/*
 * outbox_rows.c - reading the store's audit outbox to settle it (outbox_rows.h).
 */
#include "audit/outbox_rows.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util.h"

typedef struct collect {
	hsm_outbox_keep_fn keep;
	void *arg;
	hsm_outbox_rows *out;
} collect;

static void copy(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src != NULL ? src : "");
}

static hsm_result collect_row(const hsm_outbox_record *r, void *arg)
{
	collect *c = arg;
	if (c->keep != NULL && !c->keep(r->request_id, c->arg))
		return HSM_SUCCESS;
	hsm_outbox_rows *o = c->out;
	if (o->n == o->cap) {
		size_t cap = o->cap != 0 ? o->cap * 2 : 16;
		hsm_outbox_row *nv = realloc(o->v, cap * sizeof(*nv));
		HSM_ENSURE(nv != NULL, HSM_ERR_NOMEM, "out of memory");
		o->v = nv;
		o->cap = cap;
	}
	hsm_outbox_row *w = &o->v[o->n++];
	copy(w->node, sizeof(w->node), r->node_id);
	copy(w->id, sizeof(w->id), r->request_id);
	copy(w->op, sizeof(w->op), r->operation);
	copy(w->principal, sizeof(w->principal), r->principal);
	copy(w->akid, sizeof(w->akid), r->access_key_id);
	copy(w->source, sizeof(w->source), r->source);
	copy(w->key_id, sizeof(w->key_id), r->key_id);
	w->created_ms = r->created_ms;
	return HSM_SUCCESS;
}

hsm_result hsm_outbox_rows_list(hsm_store *s, const char *node_id, hsm_outbox_keep_fn keep,
                                void *arg, hsm_outbox_rows *out)
{
	collect c = {keep, arg, out};
	return hsm_store_outbox_list(s, node_id, collect_row, &c);
}

#define OFFLINE_PREFIX "hsmctl-"

typedef struct offline_scan {
	hsm_store *s;
	collect c;
} offline_scan;

static hsm_result list_offline(const hsm_outbox_node *n, void *arg)
{
	offline_scan *o = arg;
	if (strncmp(n->node_id, OFFLINE_PREFIX, sizeof(OFFLINE_PREFIX) - 1) != 0)
		return HSM_SUCCESS;
	return hsm_store_outbox_list(o->s, n->node_id, collect_row, &o->c);
}

hsm_result hsm_outbox_rows_list_offline(hsm_store *s, const char *data_dir,
                                        hsm_outbox_keep_fn keep, void *arg, hsm_outbox_rows *out)
{
	if (!hsm_store_one_holder(s)) {
		char node[HSM_OUTBOX_NODE_ID_MAX + 1];
		hsm_outbox_offline_node(data_dir, node);
		return hsm_outbox_rows_list(s, node, keep, arg, out);
	}
	offline_scan o = {s, {keep, arg, out}};
	return hsm_store_outbox_nodes(s, INT64_MAX, list_offline, &o);
}

hsm_result hsm_outbox_rows_delete(hsm_store *s, const hsm_outbox_rows *r)
{
	const char **ids = hsm_outbox_rows_ids(r);
	HSM_ENSURE(ids != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_result res = HSM_SUCCESS;
	/* Listed node after node: one delete per run of a node's rows. */
	for (size_t i = 0, j = 0; hsm_ok(res) && i < r->n; i = j) {
		for (j = i + 1; j < r->n && strcmp(r->v[j].node, r->v[i].node) == 0; j++)
			;
		res = hsm_store_outbox_delete(s, r->v[i].node, ids + i, j - i);
	}
	free(ids);
	return res;
}

void hsm_outbox_rows_free(hsm_outbox_rows *r)
{
	free(r->v);
	memset(r, 0, sizeof(*r));
}

static int cmp_str(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

const char **hsm_outbox_rows_ids(const hsm_outbox_rows *r)
{
	const char **ids = malloc((r->n > 0 ? r->n : 1) * sizeof(*ids));
	for (size_t i = 0; ids != NULL && i < r->n; i++)
		ids[i] = r->v[i].id;
	return ids;
}

hsm_result hsm_outbox_rows_find(const hsm_outbox_rows *r, const char *const *dirs, size_t n_dirs,
                                bool *found)
{
	for (size_t i = 0; i < r->n; i++)
		found[i] = false;
	if (r->n == 0)
		return HSM_SUCCESS;
	const char **ids = hsm_outbox_rows_ids(r);
	bool *in_dir = calloc(r->n, sizeof(*in_dir)), *any = calloc(r->n, sizeof(*any));
	hsm_result res = HSM_SUCCESS;
	HSM_CHECK(ids != NULL && in_dir != NULL && any != NULL, HSM_ERR_NOMEM, "out of memory");
	int64_t since = INT64_MAX;
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].created_ms < since)
			since = r->v[i].created_ms;
	qsort(ids, r->n, sizeof(*ids), cmp_str); /* the search takes them sorted */
	for (size_t d = 0; d < n_dirs; d++) {
		struct stat st;
		if (dirs[d] == NULL || (stat(dirs[d], &st) != 0 && errno == ENOENT))
			continue;
		HSM_TRY(hsm_audit_find_requests(dirs[d], since - HSM_OUTBOX_SEARCH_MARGIN_MS, ids, r->n,
		                                in_dir));
		for (size_t i = 0; i < r->n; i++)
			any[i] |= in_dir[i];
	}
	for (size_t i = 0; i < r->n; i++) {
		const char *id = r->v[i].id;
		const char *const *at = bsearch(&id, ids, r->n, sizeof(*ids), cmp_str);
		HSM_ASSERT(at != NULL);
		found[i] = any[at - ids];
	}
out:
	free(ids);
	free(in_dir);
	free(any);
	return res;
}

/* The record in place of w's lost one. */
static hsm_result record_in_stead(hsm_audit *a, const char *by, const hsm_outbox_row *w,
                                  const char *node, const char *lost_why)
{
	char committed[25];
	hsm_format_time_ms(w->created_ms, committed);
	hsm_audit_field f[8];
	size_t n = 0;
	static const char backup_op[] = HSM_OUTBOX_BACKUP_OP " ";
	char op[sizeof(w->op)];
	snprintf(op, sizeof(op), "%s", w->op);
	const char *backup_id = NULL;
	if (strncmp(op, backup_op, sizeof(backup_op) - 1) == 0) {
		op[sizeof(backup_op) - 2] = '\0';
		backup_id = w->op + sizeof(backup_op) - 1;
	}
	f[n++] = (hsm_audit_field){"request_op", op};
	if (backup_id != NULL)
		f[n++] = (hsm_audit_field){"backup_id", backup_id};
	if (node != NULL)
		f[n++] = (hsm_audit_field){"request_node", node};
	if (w->principal[0] != '\0')
		f[n++] = (hsm_audit_field){"request_principal", w->principal};
	if (w->akid[0] != '\0')
		f[n++] = (hsm_audit_field){"request_access_key", w->akid};
	if (w->source[0] != '\0')
		f[n++] = (hsm_audit_field){"request_source", w->source};
	f[n++] = (hsm_audit_field){"committed", committed};
	f[n++] = (hsm_audit_field){"record_lost", lost_why};
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_EVENT,
	    .principal = by,
	    .operation = HSM_OUTBOX_RECOVERED_EVENT,
	    .key_id = w->key_id[0] != '\0' ? w->key_id : NULL,
	    .outcome = HSM_AUDIT_SUCCESS,
	    .request_id = w->id,
	    .extra = f,
	    .n_extra = n,
	};
	return hsm_audit_append(a, &rec);
}

hsm_result hsm_outbox_rows_record_missing(const hsm_outbox_rows *r, const char *const *dirs,
                                          size_t n_dirs, hsm_audit *a, const char *by,
                                          hsm_outbox_why_fn why, void *arg, size_t *recorded)
{
	*recorded = 0;
	if (r->n == 0)
		return HSM_SUCCESS;
	bool *found = calloc(r->n, sizeof(*found));
	HSM_ENSURE(found != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_result res = hsm_outbox_rows_find(r, dirs, n_dirs, found);
	if (hsm_ok(res))
		res = hsm_outbox_rows_record_unfound(r, found, a, by, why, arg, recorded);
	free(found);
	return res;
}

hsm_result hsm_outbox_rows_record_unfound(const hsm_outbox_rows *r, const bool *found,
                                          hsm_audit *a, const char *by, hsm_outbox_why_fn why,
                                          void *arg, size_t *recorded)
{
	*recorded = 0;
	hsm_result res = HSM_SUCCESS;
	for (size_t i = 0; hsm_ok(res) && i < r->n; i++) {
		if (found[i])
			continue;
		res = record_in_stead(a, by, &r->v[i], r->request_node, why(&r->v[i], arg));
		if (hsm_ok(res))
			(*recorded)++;
	}
	return res;
}
