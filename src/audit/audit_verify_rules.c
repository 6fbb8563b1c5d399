/*
 * audit_verify_rules.c - names the first bad record when the chain breaks.
 *
 * A line is bound to its predecessor twice: by its seq (one more) and by its
 * "prev" (the SHA-256 of the predecessor's line).  When the link from the
 * last accepted record p to the current entry e breaks, the neighbours tell
 * what happened: a record that links to e shows e is genuine (so p was
 * changed, or records before e are missing); a record ahead that links to p
 * shows e does not belong there (inserted, or moved).  docs/audit.md lists
 * the rules and their limits (a move farther than VERIFY_WINDOW reads as a
 * gap).
 */
#include "audit/audit_verify_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"

void verify_report_at(vreader *r, hsm_audit_verify_report *rep, hsm_audit_problem p,
                      const ventry *e, const char *fmt, ...)
{
	rep->valid = false;
	rep->problem = p;
	snprintf(rep->file, sizeof(rep->file), "%s", r->names[e->file]);
	rep->line = e->line;
	rep->offset = e->offset;
	rep->seq = e->kind == VE_RECORD ? e->seq : 0;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rep->detail, sizeof(rep->detail), fmt, ap);
	va_end(ap);
}

static bool links(const ventry *next, const ventry *to)
{
	return next != NULL && next->kind == VE_RECORD && next->seq == to->seq + 1 &&
	       hsm_ct_equal(next->prev, to->hash, AUDIT_HASH_LEN);
}

static bool same(const ventry *a, const ventry *b)
{
	return hsm_ct_equal(a->hash, b->hash, AUDIT_HASH_LEN);
}

/* An accepted record or one ahead with the same bytes as e. */
static const ventry *duplicate_of(vreader *r, const vstate *s, const ventry *e)
{
	for (size_t i = 0; i < s->hist_count; i++)
		if (same(vstate_back(s, i), e))
			return vstate_back(s, i);
	for (size_t i = 1; i < VERIFY_WINDOW; i++) {
		const ventry *x = vreader_peek(r, i);
		if (x == NULL)
			break;
		if (x->kind == VE_RECORD && same(x, e))
			return x;
	}
	return NULL;
}

/* The entry ahead that is p's true successor, if it is within the window. */
static const ventry *successor_ahead(vreader *r, const ventry *p)
{
	for (size_t i = 1; i < VERIFY_WINDOW; i++) {
		const ventry *x = vreader_peek(r, i);
		if (x == NULL)
			return NULL;
		if (links(x, p))
			return x;
	}
	return NULL;
}

static bool broken_link(vreader *r, const vstate *s, const ventry *e, hsm_audit_verify_report *rep)
{
	const ventry *p = vstate_back(s, 0);
	const ventry *p2 = s->hist_count > 1 ? vstate_back(s, 1) : NULL;
	const ventry *next = vreader_peek(r, 1);
	const ventry *dup = duplicate_of(r, s, e);
	unsigned long long want = (unsigned long long)p->seq + 1, got = (unsigned long long)e->seq;
	if (dup != NULL) {
		verify_report_at(r, rep, HSM_AUDIT_INSERTED, e,
		                 "inserted: a second copy of the record with seq %llu",
		                 (unsigned long long)dup->seq);
	} else if (p2 != NULL && links(e, p2)) {
		verify_report_at(r, rep, HSM_AUDIT_INSERTED, p,
		                 "inserted: this record is not part of the chain (the next record "
		                 "follows seq %llu)", (unsigned long long)p2->seq);
	} else if (e->seq > p->seq + 1 && successor_ahead(r, p) != NULL) {
		verify_report_at(r, rep, HSM_AUDIT_REORDERED, e,
		                 "reordered: seq %llu appears before seq %llu", got, want);
	} else if (links(next, p)) {
		verify_report_at(r, rep, HSM_AUDIT_INSERTED, e,
		                 "inserted: this record is not part of the chain (the next record "
		                 "follows seq %llu)", (unsigned long long)p->seq);
	} else if (e->seq == p->seq + 1) {
		if (links(next, e))
			verify_report_at(r, rep, HSM_AUDIT_MODIFIED, p,
			                 "modified: its hash does not match the \"prev\" of seq %llu", got);
		else if (next == NULL) /* nothing after e attests it: p is the first that may be bad */
			verify_report_at(r, rep, HSM_AUDIT_MODIFIED, p,
			                 "modified: its hash does not match the \"prev\" of the last record, "
			                 "seq %llu (this record or that one was changed)", got);
		else
			verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
			                 "modified: \"prev\" does not match the previous record");
	} else if (e->seq > p->seq + 1 && (next == NULL || links(next, e))) {
		verify_report_at(r, rep, HSM_AUDIT_DELETED, e,
		                 "deleted: records %llu to %llu are missing", want, got - 1);
	} else if (e->seq <= p->seq) {
		verify_report_at(r, rep, HSM_AUDIT_REORDERED, e,
		                 "reordered: seq %llu appears after seq %llu", got,
		                 (unsigned long long)p->seq);
	} else {
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: seq %llu and \"prev\" do not follow seq %llu", got,
		                 (unsigned long long)p->seq);
	}
	return false;
}

/* The first record given: it starts the chain (seq 1) or continues one whose start is gone. */
static bool check_anchor(vreader *r, const ventry *e, hsm_audit_verify_report *rep)
{
	if (e->genesis != (e->seq == 1)) {
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 e->genesis ? "modified: the first record of the chain must have seq 1"
		                            : "modified: seq 1 must have an all-zero \"prev\"");
		return false;
	}
	return true;
}

bool verify_rules_check(vreader *r, const vstate *s, hsm_audit_verify_report *rep)
{
	const ventry *e = vreader_peek(r, 0);
	if (!s->have_p)
		return check_anchor(r, e, rep);
	const ventry *p = vstate_back(s, 0);
	bool link = hsm_ct_equal(e->prev, p->hash, AUDIT_HASH_LEN);
	if (link && e->seq == p->seq + 1)
		return true;
	if (link) {
		verify_report_at(r, rep, HSM_AUDIT_MODIFIED, e,
		                 "modified: seq is %llu, the record it chains to has seq %llu",
		                 (unsigned long long)e->seq, (unsigned long long)p->seq);
		return false;
	}
	return broken_link(r, s, e, rep);
}
