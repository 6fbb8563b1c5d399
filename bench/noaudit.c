/*
 * noaudit.c - for the audit-cost measurement only: linked into a
 * benchmark-only build of hsmd (`hsmd-noaudit`, made by `make bench`, never
 * installed) with -Wl,--wrap=hsm_audit_submit_lazy (the form the dispatcher
 * uses).  Request records are acknowledged at once without being queued,
 * formatted or written; events (start-up, shutdown) still go to the real
 * trail.
 *
 * Comparing this build with the real hsmd under the same load gives what
 * the audit trail costs a request: the record's queueing, JSON formatting,
 * hash chaining, the writer thread's write(2) and the hand-back of the
 * response to its HTTP worker.  hsmd itself has no way to turn auditing off.
 */
#include "audit/audit.h"

hsm_result __real_hsm_audit_submit_lazy(hsm_audit *a, const hsm_audit_record *rec,
                                             hsm_audit_done_fn done_cb, void *cb_arg);
hsm_result __wrap_hsm_audit_submit_lazy(hsm_audit *a, const hsm_audit_record *rec,
                                             hsm_audit_done_fn done_cb, void *cb_arg);

hsm_result __wrap_hsm_audit_submit_lazy(hsm_audit *a, const hsm_audit_record *rec,
                                        hsm_audit_done_fn done_cb, void *cb_arg)
{
	if (rec->type != HSM_AUDIT_REQUEST)
		return __real_hsm_audit_submit_lazy(a, rec, done_cb, cb_arg);
	/* The dispatcher calls the callback inline itself when a submission fails: same path. */
	done_cb(cb_arg, HSM_SUCCESS);
	return HSM_SUCCESS;
}
