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

bool hsm_server_own_record(hsm_server *s, hsm_http_req *req, const char *operation,
                           const hsm_auth_result *auth, hsm_err err)
{
	if (auth != NULL && auth->user[0] != '\0')
		return true; /* authenticated: always a record of its own */
	if (err == HSM_OK && strcmp(operation, "Status") != 0)
		return true; /* an Unseal that counted: never summarized */
	const char *akid = auth != NULL && auth->akid[0] != '\0' ? auth->akid : NULL;
	return hsm_refusals_take(s->refusals, hsm_http_req_remote_addr(req),
	                         err != HSM_OK ? hsm_err_kms_name(err) : operation, akid, hsm_now_ms());
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
	hsm_sb b;
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
	hsm_sb_init(&b, akids, sizeof(akids));
	for (size_t i = 0; i < sum->n_akids; i++) {
		hsm_sb_add(&b, i > 0 ? "," : "");
		hsm_sb_add(&b, sum->akids[i]);
	}
	if (sum->more_akids)
		hsm_sb_add(&b, ",...");
	hsm_audit_field extra[5] = {{"count", count}, {"first", first}, {"last", last},
	                            {"kinds", kinds}, {"access_key_ids", akids}};
	const char *error = main_error(sum);
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_EVENT,
	    .source = sum->source,
	    .operation = EVENT,
	    .outcome = error != NULL ? HSM_AUDIT_DENIED : HSM_AUDIT_SUCCESS,
	    .error = error,
	    .extra = extra,
	    .n_extra = sum->n_akids > 0 ? 5 : 4,
	};
	return hsm_audit_append(s->audit, &rec);
}

void hsm_server_flush_refusals(hsm_server *s, bool all)
{
	hsm_refusal_summary batch[BATCH];
	size_t n;
	if (!hsm_audit_accepting(s->audit))
		return; /* the trail is down (and says so): the counts wait in memory */
	do {
		n = hsm_refusals_due(s->refusals, hsm_now_ms(), all, batch, BATCH);
		for (size_t i = 0; i < n; i++) {
			if (hsm_ok(write_summary(s, &batch[i])))
				continue;
			/* The trail is down: the counts wait in memory for the next flush. */
			hsm_log_failure("writing a summary of refused requests; kept for the next try");
			for (size_t j = i; j < n; j++)
				hsm_refusals_restore(s->refusals, &batch[j]);
			return;
		}
	} while (n == BATCH);
}
