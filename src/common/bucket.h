/*
 * bucket.h - a token bucket: rate tokens a second, at most burst of them,
 * counted in milli-tokens so that a millisecond always earns a whole number.
 *
 * Not thread-safe: the owner holds its own lock.  Times are milliseconds of
 * one monotonic clock.
 */
#ifndef HSM_COMMON_BUCKET_H
#define HSM_COMMON_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

typedef struct hsm_bucket {
	uint64_t milli;
	int64_t at_ms; /* INT64_MIN: never looked at (it starts full) */
} hsm_bucket;

#define HSM_BUCKET_NEW ((hsm_bucket){0, INT64_MIN})

/* Adds what the time since the last look earned (up to burst tokens; a bucket holding more,
 * its burst lowered since, keeps burst). */
void hsm_bucket_refill(hsm_bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms);
/* Whether a token is there (after hsm_bucket_refill). */
bool hsm_bucket_ready(const hsm_bucket *b);
/* Takes the token hsm_bucket_ready said is there. */
void hsm_bucket_spend(hsm_bucket *b);
/* Refills, then takes a token if there is one. */
bool hsm_bucket_take(hsm_bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms);
/* Refills, then tells whether the bucket holds its whole burst (nothing was spent lately). */
bool hsm_bucket_full(hsm_bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms);

#endif
