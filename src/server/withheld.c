/*
 * withheld.c - requests whose answer was withheld because their record
 * failed.
 *
 * A request's record is submitted once the request has run.  When the
 * record then fails (the trail went down, a sync failed or ran out of time,
 * no memory for it), the client is answered 409 "could not be audited, so
 * its result is withheld".  Yet the record itself may reach the trail
 * later: the records the writer had already numbered are written again, byte
 * for byte, when the trail recovers (docs/audit.md, "Fail closed"), and they
 * say how the request ended ("success"), not that its caller never saw that
 * answer.  Their bytes are fixed and chained by then, so the trail says it
 * in an event of its own, written once the trail takes records again:
 * RequestAnswerWithheld, naming the request (extra.withheld_request_id,
 * extra.request_op) with extra.answer "withheld".  The request id is kept out
 * of the event's own request_id: the outbox's search for a request's record
 * (outbox.h) must not take this event for it.
 */
#include <string.h>

#include "common/log.h"
#include "server/server.h"

#define EVENT "RequestAnswerWithheld"
#define ANSWER                                                                                 \
	"withheld: its record could not be written in time, so the caller was answered 409 "     \
	"KMSInternalException and got no result; the request's own record, where the "            \
	"trail holds it, says how it ended"

void hsm_server_note_withheld(hsm_server *s, const char *request_id, const char *operation)
{
	hsm_withheld_list *w = &s->withheld;
	pthread_mutex_lock(&w->lock);
	if (w->n < HSM_WITHHELD_MAX) {
		snprintf(w->v[w->n].id, sizeof(w->v[w->n].id), "%s", request_id);
		snprintf(w->v[w->n].op, sizeof(w->v[w->n].op), "%s", operation);
		w->n++;
	} else {
		w->more++;
	}
	pthread_mutex_unlock(&w->lock);
}

static hsm_result write_event(hsm_server *s, const char *request_id, const char *op,
                              uint64_t more)
{
	char n[24];
	hsm_audit_field extra[3];
	size_t n_extra = 0;
	if (request_id != NULL) {
		extra[n_extra++] = (hsm_audit_field){"withheld_request_id", request_id};
		extra[n_extra++] = (hsm_audit_field){"request_op", op};
	} else {
		/* Past the list's room: counted, their ids not kept. */
		snprintf(n, sizeof(n), "%llu", (unsigned long long)more);
		extra[n_extra++] = (hsm_audit_field){"requests", n};
	}
	extra[n_extra++] = (hsm_audit_field){"answer", ANSWER};
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_EVENT,
	    .operation = EVENT,
	    .outcome = HSM_AUDIT_ERROR,
	    .error = hsm_err_kms_name(HSM_ERR_AUDIT_UNAVAILABLE),
	    .extra = extra,
	    .n_extra = n_extra,
	};
	return hsm_audit_append(s->audit, &rec);
}

void hsm_server_flush_withheld(hsm_server *s, bool all)
{
	hsm_withheld_list *w = &s->withheld;
	if (!all && !hsm_audit_accepting(s->audit))
		return; /* the trail is down: they wait for it */
	pthread_mutex_lock(&w->lock);
	size_t n = w->n;
	uint64_t more = w->more;
	pthread_mutex_unlock(&w->lock);
	size_t done = 0;
	bool more_done = more == 0;
	for (; done < n; done++)
		if (hsm_failed(write_event(s, w->v[done].id, w->v[done].op, 0)))
			break;
	if (done == n && !more_done)
		more_done = hsm_ok(write_event(s, NULL, NULL, more));
	/* Those written leave the list; entries noted meanwhile move up. */
	pthread_mutex_lock(&w->lock);
	memmove(w->v, w->v + done, (w->n - done) * sizeof(w->v[0]));
	w->n -= done;
	if (more_done)
		w->more -= more;
	size_t left = w->n;
	uint64_t left_more = w->more;
	pthread_mutex_unlock(&w->lock);
	if (all && (left > 0 || left_more > 0))
		hsm_error("%llu requests answered 409 with their result withheld could not be said so "
		          "on the audit trail at shutdown (" EVENT ")",
		          (unsigned long long)(left + left_more));
}
