/*
 * refused.c - which requests take the bounded way to the audit trail
 * (refusals.h), and the RefusalsSummarized events that count the rest.
 */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server.h"

#define EVENT "RefusalsSummarized"
#define BATCH 16

static int64_t mono_ms(void)
{
	return (int64_t)(hsm_mono_ns() / 1000000);
}

bool hsm_server_own_record(hsm_server *s, hsm_http_req *req, const char *operation,
                           const hsm_auth_result *auth, hsm_err err)
{
	if (auth != NULL && auth->user[0] != '\0')
		return true; /* authenticated: always a record of its own */
	/*
	 * A wrong signature that counted toward a user's lockout: at most
	 * lockout_threshold of them before the user is locked, each on the trail,
	 * so an officer sees which key was attacked, from where.
	 */
	if (auth != NULL && auth->counted_failure)
		return true;
	if (err == HSM_OK && strcmp(operation, "Status") != 0)
		return true; /* an Unseal that counted: never summarized */
	const char *akid = auth != NULL && auth->akid[0] != '\0' ? auth->akid : NULL;
	return hsm_refusals_take(s->refusals, hsm_http_req_remote_addr(req),
	                         err != HSM_OK ? hsm_err_kms_name(err) : operation, akid,
	                         auth != NULL && auth->key_found, mono_ms(), hsm_now_ms());
}

/* The most frequent kind that is an error, or NULL when all were answered Status calls. */
static const char *main_error(const hsm_refusal_summary *sum)
{
	const char *name = NULL;
	uint64_t most = 0;
	for (size_t i = 0; i < sum->n_kinds; i++)
		if (strcmp(sum->kinds[i].name, "Status") != 0 && sum->kinds[i].n > most) {
			most = sum->kinds[i].n;
			name = sum->kinds[i].name;
		}
	return name;
}

static hsm_result write_summary(hsm_server *s, const hsm_refusal_summary *sum)
{
	char count[24], first[25], last[25], kinds[HSM_AUDIT_VALUE_MAX], akids[HSM_AUDIT_VALUE_MAX];
	char known[HSM_AUDIT_VALUE_MAX];
	hsm_sb b, k;
	snprintf(count, sizeof(count), "%llu", (unsigned long long)sum->count);
	hsm_format_time_ms(sum->first_ms, first);
	hsm_format_time_ms(sum->last_ms, last);
	hsm_sb_init(&b, kinds, sizeof(kinds));
	for (size_t i = 0; i < sum->n_kinds; i++) {
		hsm_sb_add(&b, i > 0 ? "," : "");
		hsm_sb_add(&b, sum->kinds[i].name);
		hsm_sb_add(&b, "=");
		hsm_sb_u64(&b, sum->kinds[i].n);
	}
	if (sum->other_kinds > 0) {
		hsm_sb_add(&b, ",other=");
		hsm_sb_u64(&b, sum->other_kinds);
	}
	/* The store's own keys apart: refusals naming them are attempts on real users. */
	hsm_sb_init(&b, akids, sizeof(akids));
	hsm_sb_init(&k, known, sizeof(known));
	for (size_t i = 0; i < sum->n_akids; i++) {
		hsm_sb *to = sum->akid_known[i] ? &k : &b;
		hsm_sb_add(to, to->len > 0 ? "," : "");
		hsm_sb_add(to, sum->akids[i]);
	}
	if (sum->more_akids)
		hsm_sb_add(&b, b.len > 0 ? ",..." : "...");
	hsm_audit_field extra[6] = {{"count", count}, {"first", first}, {"last", last},
	                            {"kinds", kinds}};
	size_t n_extra = 4;
	if (k.len > 0)
		extra[n_extra++] = (hsm_audit_field){"known_access_key_ids", known};
	if (b.len > 0)
		extra[n_extra++] = (hsm_audit_field){"access_key_ids", akids};
	const char *error = main_error(sum);
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_EVENT,
	    .source = sum->source,
	    .operation = EVENT,
	    .outcome = error != NULL ? HSM_AUDIT_DENIED : HSM_AUDIT_SUCCESS,
	    .error = error,
	    .extra = extra,
	    .n_extra = n_extra,
	};
	return hsm_audit_append(s->audit, &rec);
}

void hsm_server_flush_refusals(hsm_server *s, bool all)
{
	hsm_refusal_summary batch[BATCH];
	size_t n;
	uint64_t lost = 0;
	/*
	 * The trail is down (and says so): the counts wait in memory for the
	 * next flush.  At the stop there is none: they are logged instead.
	 */
	if (!all && !hsm_audit_accepting(s->audit))
		return;
	do {
		n = hsm_refusals_due(s->refusals, mono_ms(), all, batch, BATCH);
		for (size_t i = 0; i < n; i++) {
			if (hsm_ok(write_summary(s, &batch[i])))
				continue;
			if (all) {
				lost += batch[i].count;
				continue;
			}
			hsm_log_failure("writing a summary of refused requests; kept for the next try");
			for (size_t j = i; j < n; j++)
				hsm_refusals_restore(s->refusals, &batch[j], mono_ms());
			return;
		}
	} while (n == BATCH);
	if (lost > 0)
		hsm_error("%llu refused requests counted for a summary could not be written to the "
		          "audit trail at shutdown",
		          (unsigned long long)lost);
}
