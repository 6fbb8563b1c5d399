/*
 * metrics.c - request counters and latency histograms by operation, and the
 * probe counters, rendered in Prometheus text format.
 */
#include "server/metrics.h"

#include "common/util.h"
#include "server/server.h"

/* Upper bounds in seconds (the latency targets are p95 < 50 ms, p99 < 2 ms). */
static const double bucket_le[HSM_METRIC_BUCKETS] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                                     0.05,   0.1,   0.25,  0.5,   1.0,   2.5};
static const char *const outcome_names[HSM_METRIC_OUTCOMES] = {"ok", "client_error",
                                                               "server_error", "unavailable"};

const char *hsm_metrics_slot_name(unsigned slot)
{
	if (slot < HSM_OP_COUNT)
		return hsm_op_get((hsm_op)slot)->name;
	if (slot < HSM_METRIC_NONE)
		return hsm_admin_name(slot - HSM_OP_COUNT);
	return "None";
}

void hsm_metrics_probe(hsm_metrics *m, hsm_metric_probe probe)
{
	HSM_ASSERT(probe < HSM_METRIC_PROBES);
	atomic_fetch_add_explicit(&m->probes[probe], 1, memory_order_relaxed);
}

/*
 * A 503 because the node serves nothing now: sealed (or not initialized), in
 * its error state or stopping, or its audit trail takes no records.  Each of
 * these has its own gauge and alert (hsmd_sealed, hsmd_error_state,
 * hsmd_audit_healthy, hsmd_audit_low_space); counted as server errors they
 * would page a second time, as a failing service, for the same cause.  A store
 * that timed out (DependencyTimeoutException) stays a server error: the node
 * serves, and the request failed.  So does a request whose own record failed
 * while the trail stayed up (no memory for it, a full queue): its result
 * withheld (HSM_HTTP_WITHHELD), its err the record's failure, not
 * HSM_ERR_AUDIT_UNAVAILABLE (dispatch.c's audit_done), as no gauge shows it;
 * a result withheld in an outage counts with the outage's refusals.
 * A caller whose access key could not be looked up, the store being out of
 * reach (store_refused), is refused as by a sealed node: hsmd_store_up and
 * HsmdStoreUnreachable report that, and anyone with made-up credentials can
 * make such requests, which must not page as failures of a serving node.
 */
static bool refused_unavailable(int http_status, hsm_err err, bool store_refused)
{
	if (store_refused)
		return true;
	if (http_status == HSM_HTTP_WITHHELD)
		return err == HSM_ERR_AUDIT_UNAVAILABLE;
	return http_status == 503 && (err == HSM_ERR_SEALED || err == HSM_ERR_NODE_ERROR ||
	                              err == HSM_ERR_AUDIT_UNAVAILABLE);
}

/* A result withheld is no client's error, though its status is a 4xx. */
static bool server_side(int http_status)
{
	return http_status >= 500 || http_status == HSM_HTTP_WITHHELD;
}

void hsm_metrics_observe(hsm_metrics *m, unsigned slot, int http_status, hsm_err err,
                         bool store_refused, uint64_t latency_ns)
{
	if (slot >= HSM_METRIC_SLOTS)
		slot = HSM_METRIC_NONE;
	hsm_metric_outcome o = http_status < 400           ? HSM_METRIC_OK
	                       : !server_side(http_status) ? HSM_METRIC_CLIENT_ERROR
	                       : refused_unavailable(http_status, err, store_refused)
	                           ? HSM_METRIC_UNAVAILABLE
	                           : HSM_METRIC_SERVER_ERROR;
	atomic_fetch_add_explicit(&m->requests[slot][o], 1, memory_order_relaxed);
	/* Latency is the service's: a request refused as the client's error (no valid
	 * credentials, bad input) or because the node serves nothing now is counted above
	 * only, so a flood of them cannot hide how long the requests that were served took. */
	if (o == HSM_METRIC_CLIENT_ERROR || o == HSM_METRIC_UNAVAILABLE)
		return;
	double s = (double)latency_ns / 1e9;
	unsigned b = 0;
	while (b < HSM_METRIC_BUCKETS && s > bucket_le[b])
		b++;
	atomic_fetch_add_explicit(&m->buckets[slot][b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->latency_us_sum[slot], latency_ns / 1000, memory_order_relaxed);
}

static uint64_t load(const atomic_uint_fast64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

static hsm_result render_requests(const hsm_metrics *m, unsigned slot, hsm_buf *out)
{
	const char *op = hsm_metrics_slot_name(slot);
	uint64_t n[HSM_METRIC_OUTCOMES], total = 0;
	for (unsigned o = 0; o < HSM_METRIC_OUTCOMES; o++)
		total += n[o] = load(&m->requests[slot][o]);
	if (total == 0 || op == NULL)
		return HSM_SUCCESS;
	for (unsigned o = 0; o < HSM_METRIC_OUTCOMES; o++)
		HSM_GUARD(hsm_buf_printf(out, "hsmd_requests_total{operation=\"%s\",outcome=\"%s\"} %llu\n",
		                         op, outcome_names[o], (unsigned long long)n[o]));
	return HSM_SUCCESS;
}

/* One operation's histogram from one reading of its buckets, so it is consistent in itself:
 * +Inf and _count are the running total of the buckets read here. */
static hsm_result render_histogram(const hsm_metrics *m, unsigned slot, hsm_buf *out)
{
	const char *op = hsm_metrics_slot_name(slot);
	uint64_t cumulative = 0;
	uint64_t b[HSM_METRIC_BUCKETS + 1];
	for (unsigned i = 0; i <= HSM_METRIC_BUCKETS; i++)
		cumulative += b[i] = load(&m->buckets[slot][i]);
	if (cumulative == 0 || op == NULL)
		return HSM_SUCCESS;
	cumulative = 0;
	for (unsigned i = 0; i < HSM_METRIC_BUCKETS; i++) {
		cumulative += b[i];
		HSM_GUARD(hsm_buf_printf(out,
		                         "hsmd_request_duration_seconds_bucket{operation=\"%s\",le=\"%g\"} "
		                         "%llu\n",
		                         op, bucket_le[i], (unsigned long long)cumulative));
	}
	cumulative += b[HSM_METRIC_BUCKETS];
	HSM_GUARD(hsm_buf_printf(out,
	                         "hsmd_request_duration_seconds_bucket{operation=\"%s\",le=\"+Inf\"} "
	                         "%llu\n",
	                         op, (unsigned long long)cumulative));
	HSM_GUARD(hsm_buf_printf(out, "hsmd_request_duration_seconds_sum{operation=\"%s\"} %.6f\n", op,
	                         (double)load(&m->latency_us_sum[slot]) / 1e6));
	return hsm_buf_printf(out, "hsmd_request_duration_seconds_count{operation=\"%s\"} %llu\n", op,
	                      (unsigned long long)cumulative);
}

hsm_result hsm_metrics_render(const hsm_metrics *m, hsm_buf *out)
{
	/* Which build answers (Prometheus's *_build_info convention): a fleet mid-upgrade shows. */
	HSM_GUARD(hsm_buf_printf(out, "# HELP hsmd_build_info The version of the running hsmd, and "
	                              "the commit it was built from.\n"
	                              "# TYPE hsmd_build_info gauge\n"
	                              "hsmd_build_info{version=\"%s\"} 1\n",
	                         hsm_version()));
	HSM_GUARD(hsm_buf_put_str(out, "# HELP hsmd_requests_total Requests by operation and outcome.\n"
	                               "# TYPE hsmd_requests_total counter\n"));
	for (unsigned slot = 0; slot < HSM_METRIC_SLOTS; slot++)
		HSM_GUARD(render_requests(m, slot, out));
	HSM_GUARD(hsm_buf_put_str(out, "# HELP hsmd_request_duration_seconds Latency of the requests "
	                               "answered with success or a server error (client errors and "
	                               "refusals as unavailable are in hsmd_requests_total only).\n"
	                               "# TYPE hsmd_request_duration_seconds histogram\n"));
	for (unsigned slot = 0; slot < HSM_METRIC_SLOTS; slot++)
		HSM_GUARD(render_histogram(m, slot, out));
	static const char *const probe_paths[HSM_METRIC_PROBES] = {"/healthz", "/readyz", "/metrics",
	                                                           "/.well-known/jwks.json"};
	HSM_GUARD(hsm_buf_put_str(out, "# HELP hsmd_http_probe_requests_total Unauthenticated GETs of "
	                               "the health, readiness, metrics and JWKS endpoints (not in "
	                               "hsmd_requests_total).\n"
	                               "# TYPE hsmd_http_probe_requests_total counter\n"));
	for (unsigned p = 0; p < HSM_METRIC_PROBES; p++)
		HSM_GUARD(hsm_buf_printf(out, "hsmd_http_probe_requests_total{path=\"%s\"} %llu\n",
		                         probe_paths[p], (unsigned long long)load(&m->probes[p])));
	return hsm_buf_printf(out,
	                      "# HELP hsmd_auth_failures_total Requests refused in authentication.\n"
	                      "# TYPE hsmd_auth_failures_total counter\nhsmd_auth_failures_total %llu\n"
	                      "# HELP hsmd_sealed_refusals_total Requests refused because the node "
	                      "was sealed.\n"
	                      "# TYPE hsmd_sealed_refusals_total counter\n"
	                      "hsmd_sealed_refusals_total %llu\n"
	                      "# HELP hsmd_audit_refusals_total Requests refused because the audit "
	                      "trail could not take their record.\n"
	                      "# TYPE hsmd_audit_refusals_total counter\n"
	                      "hsmd_audit_refusals_total %llu\n"
	                      "# HELP hsmd_scheduler_actions_total Scheduled changes made (rotations, "
	                      "destructions, expiries).\n"
	                      "# TYPE hsmd_scheduler_actions_total counter\n"
	                      "hsmd_scheduler_actions_total %llu\n"
	                      "# HELP hsmd_scheduler_failures_total Scheduler passes whose key work "
	                      "failed.\n"
	                      "# TYPE hsmd_scheduler_failures_total counter\n"
	                      "hsmd_scheduler_failures_total %llu\n"
	                      "# HELP hsmd_master_key_replaced_seals_total Times the node sealed "
	                      "itself: the store's master key was replaced after it unsealed.\n"
	                      "# TYPE hsmd_master_key_replaced_seals_total counter\n"
	                      "hsmd_master_key_replaced_seals_total %llu\n",
	                      (unsigned long long)load(&m->auth_failures),
	                      (unsigned long long)load(&m->sealed_refusals),
	                      (unsigned long long)load(&m->audit_refusals),
	                      (unsigned long long)load(&m->scheduler_actions),
	                      (unsigned long long)load(&m->scheduler_failures),
	                      (unsigned long long)load(&m->master_key_seals));
}
