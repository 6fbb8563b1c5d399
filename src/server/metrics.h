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

/* Slots: one per KMS operation, then admin, then requests with no operation. */
#define HSM_METRIC_ADMIN HSM_OP_COUNT
#define HSM_METRIC_NONE (HSM_OP_COUNT + 1)
#define HSM_METRIC_SLOTS (HSM_OP_COUNT + 2)
#define HSM_METRIC_BUCKETS 12

typedef enum hsm_metric_outcome {
	HSM_METRIC_OK,
	HSM_METRIC_CLIENT_ERROR,  /* 4xx: the request was wrong or not allowed */
	HSM_METRIC_SERVER_ERROR,  /* 5xx: sealed, audit down, internal */
	HSM_METRIC_OUTCOMES
} hsm_metric_outcome;

typedef struct hsm_metrics {
	atomic_uint_fast64_t requests[HSM_METRIC_SLOTS][HSM_METRIC_OUTCOMES];
	atomic_uint_fast64_t buckets[HSM_METRIC_SLOTS][HSM_METRIC_BUCKETS];
	atomic_uint_fast64_t latency_us_sum[HSM_METRIC_SLOTS];
	atomic_uint_fast64_t auth_failures;
	atomic_uint_fast64_t sealed_refusals;
	atomic_uint_fast64_t audit_refusals;
	atomic_uint_fast64_t scheduler_actions;
	atomic_uint_fast64_t scheduler_failures;
} hsm_metrics;

void hsm_metrics_observe(hsm_metrics *m, unsigned slot, int http_status, uint64_t latency_ns);
const char *hsm_metrics_slot_name(unsigned slot);
/* Appends the request counters and histograms in Prometheus text format. */
hsm_result hsm_metrics_render(const hsm_metrics *m, hsm_buf *out) HSM_MUST_CHECK;

#endif
