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

/* ---- requests answered before they were read as an API call ------------------- */

#define HTTP_OPERATION "HttpRequest"

void hsm_server_plain_text(const char *in, const char *extra, char out[HSM_PLAIN_CAP])
{
	size_t n = 0;
	for (; in[n] != '\0' && n < HSM_PLAIN_MAX; n++) {
		char c = in[n];
		bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		             strchr(extra, c) != NULL;
		out[n] = plain ? c : '?';
	}
	if (in[n] != '\0')
		memcpy(out + n, HSM_AUDIT_TRUNCATED_MARK, sizeof(HSM_AUDIT_TRUNCATED_MARK));
	else
		out[n] = '\0';
}

static void record_written(void *arg, hsm_result r)
{
	(void)arg;
	(void)r; /* the refusal was answered already; a trail that went down says so itself */
}

static void kick(void *audit)
{
	hsm_audit_kick(audit);
}

void hsm_server_http_refused(hsm_http_req *req, int status, const char *type, const char *reason,
                             void *arg)
{
	hsm_server *s = arg;
	/* The client's doing (501 and 505 too), or hsmd's: no request id, too much data at once. */
	bool servers = status == 500 || status == 503;
	uint64_t latency_ns = hsm_mono_ns() - hsm_http_req_start_ns(req);
	hsm_metrics_observe(&s->metrics, HSM_METRIC_NONE, servers || status < 500 ? status : 400,
	                    servers ? HSM_ERR_INTERNAL : HSM_ERR_VALIDATION, false, latency_ns);
	if (hsm_audit_low_space(s->audit)) {
		hsm_audit_note_refused(s->audit); /* counted in the event that ends the spell */
		return;
	}
	if (!hsm_refusals_take(s->refusals, hsm_http_req_remote_addr(req), type, NULL, false,
	                       mono_ms(), hsm_now_ms()))
		return; /* counted in the source's summary */
	hsm_sender who;
	hsm_server_sender(s, req, NULL, &who);
	char code[12], method[HSM_PLAIN_CAP], path[HSM_PLAIN_CAP];
	snprintf(code, sizeof(code), "%d", status);
	hsm_audit_field extra[4] = {{"http_status", code}, {"reason", reason}};
	size_t n_extra = 2;
	const char *m = hsm_http_req_method(req), *p = hsm_http_req_path(req);
	if (m[0] != '\0') {
		hsm_server_plain_text(m, "/._~-", method);
		extra[n_extra++] = (hsm_audit_field){"method", method};
	}
	if (p[0] != '\0') {
		hsm_server_plain_text(p, "/._~-", path);
		extra[n_extra++] = (hsm_audit_field){"path", path};
	}
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_REQUEST,
	    .source = who.source,
	    .operation = HTTP_OPERATION,
	    .outcome = servers ? HSM_AUDIT_ERROR : HSM_AUDIT_DENIED, /* denied: as a summary counts it */
	    .error = type,
	    .request_id = hsm_http_req_id(req),
	    .latency_us = latency_ns / 1000,
	    .extra = extra,
	    .n_extra = n_extra,
	};
	if (hsm_ok(hsm_audit_submit_lazy(s->audit, &rec, record_written, NULL)))
		hsm_http_at_pass_end(kick, s->audit);
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
