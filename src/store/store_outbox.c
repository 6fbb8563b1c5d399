/*
 * store_outbox.c - the audit outbox (store.h, "Audit outbox"): the thread's
 * intent the backends' write commits consult, the bounds that cut a row's
 * values, and the public list and delete functions (argument checks, then
 * the backend's ops).
 */
#include "store/store.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store_impl.h"

/* What the calling thread is changing the store for (hsm_store_intent_begin), or NULL. */
static _Thread_local hsm_store_intent *thread_intent;

void hsm_store_intent_begin(hsm_store_intent *in)
{
	HSM_ASSERT(in != NULL);
	HSM_ASSERT(thread_intent == NULL); /* not nested */
	thread_intent = in;
}

void hsm_store_intent_end(void)
{
	thread_intent = NULL;
}

hsm_store_intent *hsm_store_intent_current(void)
{
	return thread_intent;
}

hsm_store_intent *st_intent_pending(void)
{
	hsm_store_intent *in = thread_intent;
	return in != NULL && !in->written ? in : NULL;
}

hsm_store_intent *st_intent_hold(void)
{
	hsm_store_intent *in = thread_intent;
	thread_intent = NULL;
	return in;
}

void st_intent_restore(hsm_store_intent *in)
{
	thread_intent = in;
}

/* src (NULL: "") in dst, cut to cap - 1 bytes: a row's detail never refuses the change. */
static void cut(char *dst, size_t cap, const char *src)
{
	size_t n = src != NULL ? strnlen(src, cap - 1) : 0;
	if (n > 0)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

void st_intent_note_key(const char *key_id)
{
	hsm_store_intent *in = st_intent_pending();
	if (in != NULL && in->touched_key[0] == '\0')
		cut(in->touched_key, sizeof(in->touched_key), key_id);
}

void st_outbox_row_of(hsm_store_intent *in, st_outbox_row *out)
{
	if (in->prepare != NULL)
		in->prepare(in);
	memset(out, 0, sizeof(*out));
	cut(out->node_id, sizeof(out->node_id), in->node_id);
	cut(out->request_id, sizeof(out->request_id), in->request_id);
	out->created_ms = hsm_now_ms();
	cut(out->operation, sizeof(out->operation), in->operation);
	cut(out->principal, sizeof(out->principal), in->principal);
	cut(out->access_key_id, sizeof(out->access_key_id), in->access_key_id);
	cut(out->source, sizeof(out->source), in->source);
	cut(out->key_id, sizeof(out->key_id),
	    in->key_id != NULL && in->key_id[0] != '\0' ? in->key_id : in->touched_key);
}

void hsm_outbox_record_clear(hsm_outbox_record *r)
{
	if (r == NULL)
		return;
	free(r->node_id);
	free(r->request_id);
	free(r->operation);
	free(r->principal);
	free(r->access_key_id);
	free(r->source);
	free(r->key_id);
	memset(r, 0, sizeof(*r));
}

void st_outbox_record_clear(void *item)
{
	hsm_outbox_record_clear(item);
}

/* Rows read per page of hsm_store_outbox_list. */
#define OUTBOX_PAGE 1000

hsm_result hsm_store_outbox_list(hsm_store *s, const char *node_id, hsm_outbox_cb cb, void *arg)
{
	HSM_ASSERT(s != NULL && node_id != NULL && cb != NULL);
	char node[HSM_OUTBOX_NODE_ID_MAX + 1], after_id[HSM_OUTBOX_REQUEST_ID_MAX + 1] = "";
	int64_t after_ms = INT64_MIN;
	cut(node, sizeof(node), node_id);
	hsm_store_intent *held = st_intent_hold();
	hsm_result res = HSM_SUCCESS;
	for (bool more = true; hsm_ok(res) && more;) {
		st_vec page;
		st_vec_init(&page, sizeof(hsm_outbox_record));
		res = s->ops->outbox_page(s, node, after_ms, after_id, OUTBOX_PAGE, &page);
		more = hsm_ok(res) && page.n == OUTBOX_PAGE;
		if (hsm_ok(res) && page.n > 0) {
			const hsm_outbox_record *last = st_vec_at(&page, page.n - 1);
			after_ms = last->created_ms;
			cut(after_id, sizeof(after_id), last->request_id);
		}
		for (size_t i = 0; hsm_ok(res) && i < page.n; i++)
			res = cb(st_vec_at(&page, i), arg);
		st_vec_free(&page, st_outbox_record_clear);
	}
	st_intent_restore(held);
	return res;
}

hsm_result hsm_store_outbox_delete(hsm_store *s, const char *node_id,
                                   const char *const *request_ids, size_t n)
{
	HSM_ASSERT(s != NULL && node_id != NULL && (request_ids != NULL || n == 0));
	if (n == 0)
		return HSM_SUCCESS;
	enum { ID_CAP = HSM_OUTBOX_REQUEST_ID_MAX + 1 };
	char node[HSM_OUTBOX_NODE_ID_MAX + 1];
	cut(node, sizeof(node), node_id);
	/* The ids cut as the insert cut them, so each names its row. */
	HSM_ENSURE(n <= SIZE_MAX / (ID_CAP + sizeof(char *)), HSM_ERR_NOMEM, "out of memory");
	char *ids = malloc(n * ID_CAP);
	const char **ptrs = malloc(n * sizeof(*ptrs));
	hsm_result res = HSM_SUCCESS;
	if (ids == NULL || ptrs == NULL) {
		res = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	} else {
		for (size_t i = 0; i < n; i++) {
			HSM_ASSERT(request_ids[i] != NULL);
			cut(ids + i * ID_CAP, ID_CAP, request_ids[i]);
			ptrs[i] = ids + i * ID_CAP;
		}
		hsm_store_intent *held = st_intent_hold();
		res = s->ops->outbox_delete(s, node, ptrs, n);
		st_intent_restore(held);
	}
	free(ptrs);
	free(ids);
	return res;
}

/* Node ids read per page of hsm_store_outbox_nodes. */
#define OUTBOX_NODES_PAGE 100

hsm_result hsm_store_outbox_nodes(hsm_store *s, int64_t before_ms, hsm_outbox_node_cb cb,
                                  void *arg)
{
	HSM_ASSERT(s != NULL && cb != NULL);
	char after[HSM_OUTBOX_NODE_ID_MAX + 1] = "";
	hsm_result res = HSM_SUCCESS;
	for (bool more = true; hsm_ok(res) && more;) {
		st_vec page;
		st_vec_init(&page, sizeof(hsm_outbox_node));
		res = s->ops->outbox_nodes_page(s, after, before_ms, OUTBOX_NODES_PAGE, &page);
		more = hsm_ok(res) && page.n == OUTBOX_NODES_PAGE;
		if (hsm_ok(res) && page.n > 0) {
			const hsm_outbox_node *last = st_vec_at(&page, page.n - 1);
			cut(after, sizeof(after), last->node_id);
		}
		for (size_t i = 0; hsm_ok(res) && i < page.n; i++)
			res = cb(st_vec_at(&page, i), arg);
		st_vec_free(&page, NULL);
	}
	return res;
}

struct hsm_node_hold {
	hsm_store *s;
	void *session; /* the backend's (NULL for SQLite) */
	char node_id[HSM_OUTBOX_NODE_ID_MAX + 1];
};

hsm_result hsm_store_node_hold(hsm_store *s, const char *node_id, hsm_node_hold **out)
{
	HSM_ASSERT(s != NULL && node_id != NULL && out != NULL);
	HSM_ENSURE(node_id[0] != '\0', HSM_ERR_VALIDATION, "the node id is empty");
	HSM_ENSURE(strlen(node_id) <= HSM_OUTBOX_NODE_ID_MAX, HSM_ERR_VALIDATION,
	           "a node id is at most %d bytes", HSM_OUTBOX_NODE_ID_MAX);
	hsm_node_hold *h = calloc(1, sizeof(*h));
	HSM_ENSURE(h != NULL, HSM_ERR_NOMEM, "out of memory");
	h->s = s;
	cut(h->node_id, sizeof(h->node_id), node_id);
	bool held = false;
	hsm_result r = s->ops->node_hold(s, h->node_id, &h->session, &held);
	if (hsm_failed(r) || !held) {
		free(h);
		h = NULL;
	}
	if (hsm_ok(r))
		*out = h;
	return r;
}

hsm_result hsm_node_hold_check(hsm_node_hold *h)
{
	HSM_ASSERT(h != NULL);
	return h->s->ops->node_hold_check(h->s, h->session);
}

void hsm_node_hold_release(hsm_node_hold *h)
{
	if (h == NULL)
		return;
	h->s->ops->node_hold_release(h->s, h->session, h->node_id);
	free(h);
}

void hsm_outbox_offline_node(const char *data_dir, char out[HSM_OUTBOX_NODE_ID_MAX + 1])
{
	char real[PATH_MAX], host[256] = "";
	const char *path = realpath(data_dir, real) != NULL ? real : data_dir;
	(void)gethostname(host, sizeof(host) - 1);
	uint64_t h = 14695981039346656037ULL; /* FNV-1a: a name, not a secret */
	for (const char *part[] = {host, "\n", path}, **q = part; q < part + 3; q++)
		for (const unsigned char *p = (const unsigned char *)*q; *p != '\0'; p++)
			h = (h ^ *p) * 1099511628211ULL;
	snprintf(out, HSM_OUTBOX_NODE_ID_MAX + 1, "hsmctl-%016llx", (unsigned long long)h);
}

bool hsm_store_one_holder(const hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	return strcmp(s->ops->name, "sqlite") == 0;
}

hsm_result hsm_store_outbox_note(hsm_store *s)
{
	HSM_ASSERT(s != NULL);
	if (st_intent_pending() == NULL)
		return HSM_SUCCESS;
	return s->ops->outbox_note(s);
}
