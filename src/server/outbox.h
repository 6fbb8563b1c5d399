/*
 * outbox.h - requests whose change reached the store before their audit
 * record (the store's audit outbox, store.h).
 *
 * A request that changes the store commits a row naming it in the same
 * transaction (dispatch.c sets the intent).  Once the request's own record
 * is durable, the row is deleted in a batch by the flusher thread.  A row
 * whose request got no record (an audit outage failed it, or the node
 * stopped first, kill -9 or power loss) is settled by a record written in
 * its stead, RequestRecordRecovered, saying who changed what and when:
 * after an outage as soon as the trail takes records again, and at the next
 * start for the rows the node left behind.  The trail is searched first,
 * so a request whose record made it is not recorded twice.  The rows of
 * another node that does not come back are adopted by the leader
 * (hsm_outbox_adopt), in its own trail.
 *
 * Threads: settled() from any thread; pass() and recover() from one thread
 * at a time (the flusher; the starting or stopping server); adopt() from
 * the scheduler alone.
 */
#ifndef HSM_SERVER_OUTBOX_H
#define HSM_SERVER_OUTBOX_H

#include <stdbool.h>
#include <stdint.h>

#include "common/result.h"

typedef struct hsm_outbox hsm_outbox;
struct hsm_server;

hsm_result hsm_outbox_new(hsm_outbox **out) HSM_MUST_CHECK;
void hsm_outbox_free(hsm_outbox *o);

/*
 * The request whose change wrote a row has its answer: its record was
 * written (recorded; below_seq: hsm_audit_next_seq read after the record
 * was acknowledged) or not.
 */
void hsm_outbox_settled(hsm_outbox *o, const char *request_id, bool recorded,
                        uint64_t below_seq);

/*
 * Deletes the rows of requests whose records are durable and, while the
 * trail takes records, writes the records of requests that got none.
 * Failures are logged once a streak and retried at the next pass.
 */
void hsm_outbox_pass(struct hsm_server *s);
/* At stop, the trail closed: deletes the rows of records below durable_seq. */
void hsm_outbox_final(struct hsm_server *s, uint64_t durable_seq);

/* At start, before requests are served: settles every row this node left. */
void hsm_outbox_recover(struct hsm_server *s);

/*
 * On the node leading the store, from its scheduler: about once a minute
 * (the first call at once), the rows of other node ids older than
 * outbox_adopt_after, a batch at a time, each under a hold of the node's id
 * (hsm_store_node_hold; none while a session holds it) are settled in this
 * node's trail, as
 * those a stopped node left, naming their node (request_node); then those
 * rows go.  hsmctl's offline node ids are left to the node serving their
 * data directory.  Nothing when the setting is 0 or the trail takes no
 * records.  Failures are logged once a streak and retried at the next pass.
 */
void hsm_outbox_adopt(struct hsm_server *s);
/*
 * The longest an adoption holds another node's id, at most (outbox.c): the
 * node, at its start or running, waits longer than that for it (server.c).
 */
#define HSM_OUTBOX_ADOPT_HOLD_WORST_MS 30000

/* Records written in place of lost ones since start (hsmd_audit_records_recovered_total). */
uint64_t hsm_outbox_recovered(const hsm_outbox *o);
/* Those of them adopted from other nodes (hsmd_audit_records_adopted_total). */
uint64_t hsm_outbox_adopted(const hsm_outbox *o);

#endif
