/*
 * trail_nodes.c - the other nodes whose audit trails a store has seen.
 *
 * A trail that begins beside an initialized store under a node id the store
 * has not seen is a node joining it, unless that id is only a new name: the
 * trail of a stopped node deleted whole and the node started again under
 * another --node-id looks the same.  What tells them apart is whether the
 * nodes the store has seen still run.  On SQLite one process holds the
 * store, so no other node runs and a new id there is always such a new
 * name; on PostgreSQL a running node holds its id (hsm_store_node_hold
 * cannot take it).  server.c flags the trail when none of them runs.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server.h"
#include "store/store.h"

#define TRAIL_META_PREFIX "audit_trail:"
#define NODES_MAX 64

typedef struct trail_nodes {
	const char *self;
	char ids[NODES_MAX][65];
	size_t n;
	bool more;
} trail_nodes;

static hsm_result add_node(const char *id, void *arg)
{
	trail_nodes *t = arg;
	if (strcmp(id, t->self) == 0)
		return HSM_SUCCESS;
	if (t->n == NODES_MAX) {
		t->more = true;
		return HSM_SUCCESS;
	}
	snprintf(t->ids[t->n++], sizeof(t->ids[0]), "%s", id);
	return HSM_SUCCESS;
}

/* Whether a session holds id now (its node runs); false when that cannot be told. */
static bool runs(hsm_server *s, const char *id)
{
	hsm_node_hold *hold = NULL;
	if (hsm_failed(hsm_store_node_hold(s->store, id, &hold)))
		return false;
	if (hold == NULL)
		return true;
	hsm_node_hold_release(hold);
	return false;
}

void hsm_server_trail_nodes(hsm_server *s, char *known, size_t cap, bool *live)
{
	trail_nodes *t = calloc(1, sizeof(*t));
	hsm_sb b;
	hsm_sb_init(&b, known, cap);
	*live = false;
	if (t == NULL) {
		hsm_sb_add(&b, "(not read: out of memory)");
		return;
	}
	t->self = s->node_id;
	if (hsm_failed(hsm_store_meta_names(s->store, TRAIL_META_PREFIX, add_node, t))) {
		hsm_log_failure("reading which nodes' audit trails the store has seen");
		hsm_sb_add(&b, "(not read: the store failed)");
		free(t);
		return;
	}
	for (size_t i = 0; i < t->n; i++) {
		hsm_sb_add(&b, i > 0 ? "," : "");
		hsm_sb_add(&b, t->ids[i]);
		if (!*live)
			*live = runs(s, t->ids[i]);
	}
	if (t->more)
		hsm_sb_add(&b, ",...");
	free(t);
}
