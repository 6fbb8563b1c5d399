/*
 * refusals.h - a bound on what requests nobody authenticated can write to
 * the audit trail.
 *
 * Every refused request is audited (DESIGN.md, invariants 3 and 4), and a
 * refusal costs the refuser nothing: anyone who can reach the port could
 * fill the audit disk with unsigned requests (about 9 MiB/s on two cores),
 * after which the node fails closed and serves no one.  So requests that
 * are refused before anyone was authenticated (no credentials, a wrong or
 * stale signature, an unknown access key, a locked user, a sealed node) and
 * the unauthenticated Status calls get records of their own at a bounded
 * rate per source address, and at a bounded rate across all sources; beyond
 * either, a refusal is still answered exactly as before but counted in its
 * source's summary, written as one audit event (RefusalsSummarized) per
 * source per period: how many, of which kinds, when, and which access key
 * ids they claimed.  Authenticated requests never come here: each has its
 * record, as always.
 *
 * A source is an IPv4 address or an IPv6 /64 (one subscriber's prefix:
 * counting single IPv6 addresses would give an attacker 2^64 sources).
 *
 * Rates are token buckets holding ten seconds' worth.  The table of sources
 * is fixed in size; a source that finds no room shares one entry, "other
 * sources", with every other such source.  All of it is behind one mutex,
 * taken only on the refusal path.
 */
#ifndef HSM_SERVER_REFUSALS_H
#define HSM_SERVER_REFUSALS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/result.h"
#include "server/source.h"

typedef struct hsm_refusals hsm_refusals;

typedef struct hsm_refusals_config {
	uint32_t per_source; /* records a second per source; 0: every refusal gets its own */
	uint32_t total;      /* records a second over all sources; 0: no bound but per_source's */
	uint32_t period_ms;  /* how long a summary gathers before it is due; 0: 10 s */
	uint32_t capacity;   /* sources tracked apart; 0: 4096 */
} hsm_refusals_config;

#define HSM_REFUSALS_SOURCE_MAX HSM_SOURCE_TEXT_MAX /* "ffff:ffff:ffff:ffff::/64", "other sources" */
#define HSM_REFUSALS_KINDS 8       /* kinds counted by name; the rest as "other" */
#define HSM_REFUSALS_KIND_MAX 63
#define HSM_REFUSALS_AKIDS 4       /* claimed access key ids a summary names */
#define HSM_REFUSALS_AKID_MAX 128
#define HSM_REFUSALS_OTHER_SOURCES "other sources"

/* What a source's summarized refusals were: an audit event's worth. */
typedef struct hsm_refusal_summary {
	char source[HSM_REFUSALS_SOURCE_MAX];
	uint64_t count;           /* requests counted here instead of in records of their own */
	int64_t first_ms, last_ms; /* the first and the last of them (the caller's clock) */
	struct {
		char name[HSM_REFUSALS_KIND_MAX + 1]; /* an error name, or "Status" for one answered */
		uint64_t n;
	} kinds[HSM_REFUSALS_KINDS];
	size_t n_kinds;
	uint64_t other_kinds; /* of count, those of kinds beyond the first HSM_REFUSALS_KINDS */
	char akids[HSM_REFUSALS_AKIDS][HSM_REFUSALS_AKID_MAX + 1];
	/* The id is an active access key of the store: kept ahead of made-up ones. */
	bool akid_known[HSM_REFUSALS_AKIDS];
	size_t n_akids;
	bool more_akids; /* other access key ids were claimed too */
	int64_t first_mono_ms; /* when the first was counted, on the monotonic clock (due) */
} hsm_refusal_summary;

/* A new guard; cfg is copied.  Free with hsm_refusals_free (NULL is a no-op). */
hsm_result hsm_refusals_new(const hsm_refusals_config *cfg, hsm_refusals **out) HSM_MUST_CHECK;
void hsm_refusals_free(hsm_refusals *g);

/*
 * One refusal (or unauthenticated Status) of a request from addr (the
 * client's address as text, "192.0.2.1" or "2001:db8::1").  kind is the
 * error name, or the operation's for one that succeeded; akid the access key
 * id the request claimed, or NULL, and akid_known whether it is a key of the
 * store (a summary names those first).  Returns true when the request gets
 * an audit record of its own (a token of its source and of the total was
 * taken); false when it was counted in its source's summary instead.  The
 * strings are copied.  mono_ms runs the buckets and the periods (a
 * monotonic clock); wall_ms is what the summary says (first, last).
 */
bool hsm_refusals_take(hsm_refusals *g, const char *addr, const char *kind, const char *akid,
                       bool akid_known, int64_t mono_ms, int64_t wall_ms);

/*
 * Moves up to cap summaries into out and forgets them: those whose first
 * refusal is a period old (mono_ms, the clock of hsm_refusals_take), or
 * every one when all is set.  Returns how many; cap of them means more may
 * wait.
 */
size_t hsm_refusals_due(hsm_refusals *g, int64_t mono_ms, bool all, hsm_refusal_summary *out,
                        size_t cap);

/* Gives back a summary that could not be written: it is counted again, with what came since. */
void hsm_refusals_restore(hsm_refusals *g, const hsm_refusal_summary *s, int64_t mono_ms);

/*
 * Sets cfg's per_source and total from now on (a configuration reload): the
 * buckets keep what they hold, up to the new bursts; 0 means what it means in
 * hsm_refusals_config.
 */
void hsm_refusals_set_rates(hsm_refusals *g, uint32_t per_source, uint32_t total);

/* Refusals counted into summaries since the start (hsmd_refusals_summarized_total). */
uint64_t hsm_refusals_summarized(hsm_refusals *g);

#endif
