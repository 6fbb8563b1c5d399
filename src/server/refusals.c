/*
 * refusals.c - records of their own for unauthenticated refusals at a
 * bounded rate, summaries beyond it (refusals.h says why).
 */
#include "server/refusals.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/bucket.h"
#include "common/util.h"
#include "server/source.h"

#define DEFAULT_PERIOD_MS 10000
#define DEFAULT_CAPACITY 4096
#define BURST_SECONDS 10
#define PROBES 16   /* slots looked at for a source before it goes to "other sources" */

typedef struct entry {
	bool used;
	hsm_source key;
	hsm_bucket b;
	hsm_refusal_summary *sum; /* NULL while nothing was summarized */
} entry;

struct hsm_refusals {
	hsm_refusals_config cfg;
	pthread_mutex_t lock;
	uint64_t seed;
	entry *table;
	entry other; /* the sources that found no room */
	hsm_bucket total;
	uint64_t summarized;
	size_t open; /* table entries holding a summary: the flush scans the table only when some do */
};

hsm_result hsm_refusals_new(const hsm_refusals_config *cfg, hsm_refusals **out)
{
	hsm_refusals *g = calloc(1, sizeof(*g));
	HSM_ENSURE(g != NULL, HSM_ERR_NOMEM, "out of memory");
	g->cfg = *cfg;
	if (g->cfg.period_ms == 0)
		g->cfg.period_ms = DEFAULT_PERIOD_MS;
	if (g->cfg.capacity == 0)
		g->cfg.capacity = DEFAULT_CAPACITY;
	g->table = calloc(g->cfg.capacity, sizeof(*g->table));
	if (g->table == NULL || pthread_mutex_init(&g->lock, NULL) != 0) {
		free(g->table);
		free(g);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	/* Not a secret: it only keeps chosen addresses from sharing probe runs on every node. */
	if (getrandom(&g->seed, sizeof(g->seed), GRND_NONBLOCK) != (ssize_t)sizeof(g->seed))
		g->seed = (uint64_t)hsm_mono_ns();
	g->other.used = true;
	g->other.b = HSM_BUCKET_NEW;
	g->total = HSM_BUCKET_NEW;
	*out = g;
	return HSM_SUCCESS;
}

void hsm_refusals_free(hsm_refusals *g)
{
	if (g == NULL)
		return;
	for (size_t i = 0; i < g->cfg.capacity; i++)
		free(g->table[i].sum);
	free(g->other.sum);
	free(g->table);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

/* ---- sources ---------------------------------------------------------------- */

/* A source's and the total's burst: ten seconds' worth. */
static uint32_t burst_of(uint32_t rate)
{
	return rate * BURST_SECONDS;
}

/*
 * The entry of a source: its own, a free slot, or one whose source has been
 * quiet long enough to have nothing to say (no summary, its bucket full);
 * "other sources" when the slots it may use are all busy.
 */
static entry *entry_of(hsm_refusals *g, const hsm_source *k, int64_t now_ms)
{
	size_t start = (size_t)(hsm_source_hash(k, g->seed) % g->cfg.capacity);
	uint32_t rate = g->cfg.per_source;
	entry *spare = NULL;
	for (size_t i = 0; i < PROBES && i < g->cfg.capacity; i++) {
		entry *e = &g->table[(start + i) % g->cfg.capacity];
		if (e->used && hsm_source_equal(&e->key, k))
			return e;
		if (spare == NULL && (!e->used || (e->sum == NULL &&
		                                   hsm_bucket_full(&e->b, rate, burst_of(rate), now_ms))))
			spare = e;
	}
	if (spare == NULL)
		return &g->other;
	spare->used = true;
	spare->key = *k;
	spare->b = HSM_BUCKET_NEW;
	return spare;
}

/* ---- summaries -------------------------------------------------------------- */

static void add_kind(hsm_refusal_summary *s, const char *name, uint64_t n)
{
	for (size_t i = 0; i < s->n_kinds; i++)
		if (strcmp(s->kinds[i].name, name) == 0) {
			s->kinds[i].n += n;
			return;
		}
	if (s->n_kinds == HSM_REFUSALS_KINDS) {
		s->other_kinds += n;
		return;
	}
	snprintf(s->kinds[s->n_kinds].name, sizeof(s->kinds[0].name), "%s", name);
	s->kinds[s->n_kinds++].n = n;
}

/* Names akid in s; when full, a known id takes the place of a made-up one. */
static void add_akid(hsm_refusal_summary *s, const char *akid, bool known)
{
	if (akid == NULL || akid[0] == '\0')
		return;
	for (size_t i = 0; i < s->n_akids; i++)
		if (strncmp(s->akids[i], akid, HSM_REFUSALS_AKID_MAX) == 0) {
			s->akid_known[i] = s->akid_known[i] || known;
			return;
		}
	size_t at = s->n_akids;
	if (at == HSM_REFUSALS_AKIDS) {
		s->more_akids = true;
		for (at = 0; known && at < HSM_REFUSALS_AKIDS && s->akid_known[at]; at++)
			;
		if (!known || at == HSM_REFUSALS_AKIDS)
			return;
	} else {
		s->n_akids++;
	}
	snprintf(s->akids[at], sizeof(s->akids[0]), "%s", akid);
	s->akid_known[at] = known;
}

/* Adds src's counts to dst (both of one source). */
static void merge(hsm_refusal_summary *dst, const hsm_refusal_summary *src)
{
	if (dst->count == 0 || src->first_ms < dst->first_ms)
		dst->first_ms = src->first_ms;
	if (dst->count == 0 || src->first_mono_ms < dst->first_mono_ms)
		dst->first_mono_ms = src->first_mono_ms;
	if (dst->count == 0 || src->last_ms > dst->last_ms)
		dst->last_ms = src->last_ms;
	dst->count += src->count;
	for (size_t i = 0; i < src->n_kinds; i++)
		add_kind(dst, src->kinds[i].name, src->kinds[i].n);
	dst->other_kinds += src->other_kinds;
	for (size_t i = 0; i < src->n_akids; i++)
		add_akid(dst, src->akids[i], src->akid_known[i]);
	dst->more_akids = dst->more_akids || src->more_akids;
}

void hsm_refusals_set_rates(hsm_refusals *g, uint32_t per_source, uint32_t total)
{
	pthread_mutex_lock(&g->lock);
	g->cfg.per_source = per_source;
	g->cfg.total = total;
	pthread_mutex_unlock(&g->lock);
}

/* e's summary, made when it has none; NULL when out of memory.  lock held. */
static hsm_refusal_summary *summary_of(hsm_refusals *g, entry *e)
{
	if (e->sum == NULL) {
		e->sum = calloc(1, sizeof(*e->sum));
		if (e->sum != NULL && e != &g->other)
			g->open++;
	}
	return e->sum;
}

bool hsm_refusals_take(hsm_refusals *g, const char *addr, const char *kind, const char *akid,
                       bool akid_known, int64_t now_ms, int64_t wall_ms)
{
	hsm_source k = hsm_source_of_text(addr);
	bool own = false;
	pthread_mutex_lock(&g->lock);
	if (g->cfg.per_source == 0) { /* under the lock: a reload may set it */
		pthread_mutex_unlock(&g->lock);
		return true;
	}
	entry *e = entry_of(g, &k, now_ms);
	hsm_bucket_refill(&e->b, g->cfg.per_source, burst_of(g->cfg.per_source), now_ms);
	if (g->cfg.total != 0)
		hsm_bucket_refill(&g->total, g->cfg.total, burst_of(g->cfg.total), now_ms);
	/* A token of both, or neither is spent: a source held back by the total keeps its own. */
	if (hsm_bucket_ready(&e->b) && (g->cfg.total == 0 || hsm_bucket_ready(&g->total))) {
		hsm_bucket_spend(&e->b);
		if (g->cfg.total != 0)
			hsm_bucket_spend(&g->total);
		own = true;
	} else if (summary_of(g, e) != NULL) {
		hsm_refusal_summary one;
		memset(&one, 0, sizeof(one));
		one.count = 1;
		one.first_ms = one.last_ms = wall_ms;
		one.first_mono_ms = now_ms;
		add_kind(&one, kind != NULL ? kind : "unknown", 1);
		add_akid(&one, akid, akid_known);
		merge(e->sum, &one);
		g->summarized++;
	} else {
		own = true; /* out of memory for a summary: a record of its own, rather than none */
	}
	pthread_mutex_unlock(&g->lock);
	return own;
}

/* Moves e's summary to out when it is due.  lock held. */
static bool take_due(hsm_refusals *g, entry *e, int64_t now_ms, bool all,
                     hsm_refusal_summary *out)
{
	if (e->sum == NULL ||
	    (!all && now_ms - e->sum->first_mono_ms < (int64_t)g->cfg.period_ms))
		return false;
	*out = *e->sum;
	free(e->sum);
	e->sum = NULL;
	if (e != &g->other)
		g->open--;
	return true;
}

size_t hsm_refusals_due(hsm_refusals *g, int64_t now_ms, bool all, hsm_refusal_summary *out,
                        size_t cap)
{
	size_t n = 0;
	pthread_mutex_lock(&g->lock);
	for (size_t i = 0; i < g->cfg.capacity && n < cap && g->open > 0; i++) {
		entry *e = &g->table[i];
		if (take_due(g, e, now_ms, all, &out[n]))
			hsm_source_text(&e->key, out[n++].source);
	}
	if (n < cap && take_due(g, &g->other, now_ms, all, &out[n]))
		snprintf(out[n++].source, HSM_REFUSALS_SOURCE_MAX, "%s", HSM_REFUSALS_OTHER_SOURCES);
	pthread_mutex_unlock(&g->lock);
	return n;
}

void hsm_refusals_restore(hsm_refusals *g, const hsm_refusal_summary *s, int64_t mono_ms)
{
	pthread_mutex_lock(&g->lock);
	entry *e = &g->other;
	if (strcmp(s->source, HSM_REFUSALS_OTHER_SOURCES) != 0) {
		hsm_source k = hsm_source_of_text(s->source);
		e = entry_of(g, &k, mono_ms);
	}
	hsm_refusal_summary *dst = summary_of(g, e);
	if (dst != NULL)
		merge(dst, s);
	pthread_mutex_unlock(&g->lock);
}

uint64_t hsm_refusals_summarized(hsm_refusals *g)
{
	pthread_mutex_lock(&g->lock);
	uint64_t n = g->summarized;
	pthread_mutex_unlock(&g->lock);
	return n;
}
