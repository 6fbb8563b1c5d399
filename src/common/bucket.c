/*
 * bucket.c - a token bucket (bucket.h).
 */
#include "common/bucket.h"

#define MILLI 1000u /* a token */

void hsm_bucket_refill(hsm_bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms)
{
	uint64_t cap = (uint64_t)burst * MILLI;
	/* Quiet long enough to have earned the whole burst, whatever the gap: no product of it. */
	int64_t fill_ms = rate > 0 ? (int64_t)((uint64_t)burst * 1000 / rate) : 0;
	if (b->milli > cap) /* the burst was lowered since the last look */
		b->milli = cap;
	if (b->at_ms == INT64_MIN || now_ms - b->at_ms >= fill_ms) {
		b->milli = cap;
	} else if (now_ms > b->at_ms) {
		uint64_t earned = (uint64_t)(now_ms - b->at_ms) * rate; /* rate per s = per ms in milli */
		b->milli = earned >= cap - b->milli ? cap : b->milli + earned;
	}
	if (now_ms > b->at_ms)
		b->at_ms = now_ms;
}

bool hsm_bucket_ready(const hsm_bucket *b)
{
	return b->milli >= MILLI;
}

void hsm_bucket_spend(hsm_bucket *b)
{
	b->milli -= MILLI;
}

bool hsm_bucket_take(hsm_bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms)
{
	hsm_bucket_refill(b, rate, burst, now_ms);
	if (!hsm_bucket_ready(b))
		return false;
	hsm_bucket_spend(b);
	return true;
}

bool hsm_bucket_full(hsm_bucket *b, uint32_t rate, uint32_t burst, int64_t now_ms)
{
	hsm_bucket_refill(b, rate, burst, now_ms);
	return b->milli >= (uint64_t)burst * MILLI;
}
