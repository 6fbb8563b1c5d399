/*
 * metrics.h - counters and latency histograms for /metrics (Prometheus text).
 *
 * Lock-free: every observation is a few relaxed atomic increments, so the
 * request path pays almost nothing for monitoring.
 */
#ifndef HSM_SERVER_METRICS_H
#define HSM_SERVER_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/buf.h"
#include "kms/kms.h"

/*
 * Slots: one per KMS operation, one per admin operation (by hsm_admin_index,
 * below 32), then requests that name no operation hsmd knows.  The probes
 * (/healthz, /readyz, /metrics, the JWKS) have counters of their own: they
 * would otherwise drown the API's error ratio and latency in their own.
 */
#define HSM_METRIC_ADMIN_OPS 32
#define HSM_METRIC_ADMIN(index) (HSM_OP_COUNT + (index))
#define HSM_METRIC_NONE (HSM_OP_COUNT + HSM_METRIC_ADMIN_OPS)
#define HSM_METRIC_SLOTS (HSM_METRIC_NONE + 1)
#define HSM_METRIC_BUCKETS 12

typedef enum hsm_metric_outcome {
	HSM_METRIC_OK,
	HSM_METRIC_CLIENT_ERROR,  /* 4xx: the request was wrong or not allowed */
	HSM_METRIC_SERVER_ERROR,  /* 5xx: failed inside a node that serves */
	HSM_METRIC_UNAVAILABLE,   /* 503: sealed, error state, stopping, or the trail down */
	HSM_METRIC_OUTCOMES
} hsm_metric_outcome;

/* The unauthenticated GET endpoints, counted apart from the API (hsmd_http_probe_requests_total). */
typedef enum hsm_metric_probe {
	HSM_PROBE_HEALTHZ,
	HSM_PROBE_READYZ,
	HSM_PROBE_METRICS,
	HSM_PROBE_JWKS,
	HSM_METRIC_PROBES
} hsm_metric_probe;

typedef struct hsm_metrics {
	atomic_uint_fast64_t requests[HSM_METRIC_SLOTS][HSM_METRIC_OUTCOMES];
	/* Answered 2xx or a server error only, by bucket; the last counts those beyond every bound. */
	atomic_uint_fast64_t buckets[HSM_METRIC_SLOTS][HSM_METRIC_BUCKETS + 1];
	atomic_uint_fast64_t latency_us_sum[HSM_METRIC_SLOTS];
	atomic_uint_fast64_t probes[HSM_METRIC_PROBES];
	atomic_uint_fast64_t auth_failures;
	atomic_uint_fast64_t sealed_refusals;
	atomic_uint_fast64_t audit_refusals;
	atomic_uint_fast64_t scheduler_actions;
	atomic_uint_fast64_t scheduler_failures;
	atomic_uint_fast64_t master_key_seals; /* hsm_server_check_master_key */
} hsm_metrics;

/*
 * The status of a request that ran but whose audit record failed, its result withheld
 * (dispatch.c's audit_done): not a 5xx, which every AWS SDK sends again by itself, and
 * this request, sent again, would run again (a second key, grant or rotation).
 */
#define HSM_HTTP_WITHHELD 409

/*
 * Counts a request answered with http_status; err is the error code its answer
 * carries (HSM_OK when none), which tells a node that serves nothing now from
 * one that failed a request.  store_refused: a server error answered because
 * the caller's access key could not be looked up in a store out of reach,
 * counted unavailable.
 */
void hsm_metrics_observe(hsm_metrics *m, unsigned slot, int http_status, hsm_err err,
                         bool store_refused, uint64_t latency_ns);
void hsm_metrics_probe(hsm_metrics *m, hsm_metric_probe probe);
/* The operation label of a slot; NULL for an admin slot no operation uses. */
const char *hsm_metrics_slot_name(unsigned slot);
/* Appends the request counters and histograms in Prometheus text format. */
hsm_result hsm_metrics_render(const hsm_metrics *m, hsm_buf *out) HSM_MUST_CHECK;

#endif
