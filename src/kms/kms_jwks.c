/*
 * kms_jwks.c - the JWK Set of the keys marked for JWT signing, and its cache.
 *
 * Which versions are published, and for how long, is stated in jwt.h
 * (hsm_kms_jwks_render).  Rendering reads the JWT keys' metadata (an index
 * of them: a million other keys cost nothing) and their versions from the
 * store, so the document is cached: one immutable, reference-counted
 * snapshot shared by all requests, replaced when this service changed a key
 * (kms_key_invalidate bumps kms->generation), when an old version's grace
 * ends, or after HSM_JWKS_CACHE_TTL seconds (at most the key metadata
 * cache's lifetime, rounded up to a second) for changes made elsewhere.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "common/json_read.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "kms/jwt.h"
#include "kms/kms_internal.h"

/* A key to publish, copied out of the key listing. */
typedef struct jwt_key {
	char key_id[HSM_UUID_STRLEN + 1];
	uint32_t primary;
	hsm_jws_alg alg;
} jwt_key;

typedef struct key_list {
	jwt_key *items;
	size_t n, cap;
	char last[HSM_UUID_STRLEN + 1];
} key_list;

static hsm_result collect_key(const hsm_key_record *rec, void *arg)
{
	key_list *l = arg;
	memcpy(l->last, rec->key_id, sizeof(l->last));
	if ((rec->flags & HSM_KEYFLAG_JWT) == 0 || rec->state != HSM_KEY_ENABLED)
		return HSM_SUCCESS;
	hsm_jws_alg alg;
	if (hsm_failed(hsm_jwt_key_alg(rec, &alg))) {
		hsm_log_failure("JWKS: key skipped");
		return HSM_SUCCESS;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		jwt_key *p = realloc(l->items, cap * sizeof(*p));
		HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
		l->items = p;
		l->cap = cap;
	}
	jwt_key *k = &l->items[l->n++];
	memcpy(k->key_id, rec->key_id, sizeof(k->key_id));
	k->primary = rec->primary_version;
	k->alg = alg;
	return HSM_SUCCESS;
}

/* Every Enabled JWT key, in key id order, page by page. */
static hsm_result list_jwt_keys(hsm_store *store, key_list *l)
{
	bool more = true;
	while (more) {
		char after[HSM_UUID_STRLEN + 1];
		memcpy(after, l->last, sizeof(after));
		HSM_GUARD(hsm_store_jwt_key_list(store, after, HSM_STORE_LIST_MAX, collect_key, l,
		                                 &more));
	}
	return HSM_SUCCESS;
}

/* Versions arrive ascending; each is decided when its successor shows its creation time. */
typedef struct version_walk {
	const jwt_key *key;
	int64_t now, grace;
	json_t *keys;         /* the document's array */
	int64_t *valid_until;
	uint32_t prev;        /* 0: none held */
	hsm_buf prev_spki;
} version_walk;

static hsm_result publish(version_walk *w, uint32_t version, const hsm_buf *spki)
{
	char kid[HSM_JWT_KID_MAX];
	json_t *jwk = NULL;
	HSM_GUARD(hsm_jwt_kid(w->key->key_id, version, kid));
	HSM_GUARD(hsm_jwk_from_spki(spki->data, spki->len, w->key->alg, kid, &jwk));
	HSM_ENSURE(json_array_append_new(w->keys, jwk) == 0, HSM_ERR_NOMEM, "out of memory");
	return HSM_SUCCESS;
}

static hsm_result walk_version(const hsm_version_record *v, void *arg)
{
	version_walk *w = arg;
	if (v->version > w->key->primary || v->public_der.len == 0)
		return HSM_SUCCESS;
	/* The held version signed through second created(v) + lead (kms_jwt.c, token_version);
	 * its tokens live max_lifetime more, and verifiers may run clock_skew behind: it leaves
	 * at the second after all three, w->grace past created(v). */
	if (w->prev != 0 && w->prev + 1 == v->version) {
		int64_t leaves = v->created > INT64_MAX - w->grace ? INT64_MAX : v->created + w->grace;
		if (w->now < leaves) {
			HSM_GUARD(publish(w, w->prev, &w->prev_spki));
			if (leaves < *w->valid_until)
				*w->valid_until = leaves;
		}
	}
	if (v->version == w->key->primary) {
		w->prev = 0;
		return publish(w, v->version, &v->public_der);
	}
	w->prev = v->version;
	return hsm_buf_set(&w->prev_spki, v->public_der.data, v->public_der.len);
}

hsm_result hsm_kms_jwks_render(hsm_kms *kms, int64_t now, hsm_buf *out, int64_t *valid_until)
{
	hsm_result res = HSM_SUCCESS;
	key_list l;
	hsm_jwt_limits lim;
	json_t *doc = json_object(), *keys = json_array();
	char *text = NULL;
	int64_t until = INT64_MAX;
	memset(&l, 0, sizeof(l));
	hsm_kms_jwt_limits(kms, &lim);
	HSM_CHECK(doc != NULL && keys != NULL && json_object_set(doc, "keys", keys) == 0,
	          HSM_ERR_NOMEM, "out of memory");
	HSM_TRY(list_jwt_keys(kms->store, &l));
	for (size_t i = 0; i < l.n; i++) {
		version_walk w = {&l.items[i], now, lim.grace, keys, &until, 0, {0}};
		res = hsm_store_version_list(kms->store, w.key->key_id, walk_version, &w);
		hsm_buf_free(&w.prev_spki);
		if (res.err == HSM_ERR_NOT_FOUND)
			res = HSM_SUCCESS; /* destroyed since it was listed */
		HSM_TRY(res);
	}
	HSM_TRY(hsm_json_text(doc, JSON_COMPACT, &text));
	HSM_TRY(hsm_buf_put_str(out, text));
	*valid_until = until;
out:
	free(text);
	free(l.items);
	json_decref(keys);
	json_decref(doc);
	return res;
}

/* ---- The cache ------------------------------------------------------------------- */

/* Nodes sharing a store: another node's rotation shows as soon as its metadata would. */
int64_t hsm_kms_jwks_ttl(const hsm_kms *kms)
{
	int64_t ttl = HSM_JWKS_CACHE_TTL;
	if (kms->cfg.meta_cache_ttl_ms > 0 && (kms->cfg.meta_cache_ttl_ms + 999) / 1000 < ttl)
		ttl = (kms->cfg.meta_cache_ttl_ms + 999) / 1000;
	return ttl;
}

struct hsm_jwks_doc {
	atomic_int refs;
	hsm_buf body;
	char etag[40];
	int64_t max_age;
	int64_t built;       /* kms clock, seconds */
	int64_t expires;     /* kms clock, seconds */
	uint64_t generation; /* kms->generation it was built at */
};

struct kms_jwks {
	pthread_mutex_t lock;
	hsm_jwks_doc *doc;
	int64_t retry_at; /* kms clock: after a failed rebuild, the next try is not before */
	bool building;    /* a request is rebuilding the document, outside the lock */
	pthread_cond_t built; /* signalled when it is done */
};

hsm_result kms_jwks_new(struct kms_jwks **out)
{
	struct kms_jwks *j = calloc(1, sizeof(*j));
	HSM_ENSURE(j != NULL, HSM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->built, NULL);
	*out = j;
	return HSM_SUCCESS;
}

void kms_jwks_free(struct kms_jwks *j)
{
	if (j == NULL)
		return;
	hsm_jwks_doc_release(j->doc);
	pthread_cond_destroy(&j->built);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

void hsm_jwks_doc_release(hsm_jwks_doc *d)
{
	if (d == NULL || atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1)
		return;
	hsm_buf_free(&d->body);
	free(d);
}

const uint8_t *hsm_jwks_doc_body(const hsm_jwks_doc *d, size_t *len)
{
	*len = d->body.len;
	return d->body.data;
}

const char *hsm_jwks_doc_etag(const hsm_jwks_doc *d) { return d->etag; }
int64_t hsm_jwks_doc_max_age(const hsm_jwks_doc *d) { return d->max_age; }

/* RFC 9110 section 8.8.3: a strong validator, here a hash of the representation. */
static hsm_result make_etag(hsm_jwks_doc *d)
{
	uint8_t h[HSM_SHA256_LEN];
	hsm_buf tag = {0};
	hsm_result r = hsm_sha256(d->body.data, d->body.len, h);
	if (hsm_ok(r))
		r = hsm_buf_put_u8(&tag, '"');
	if (hsm_ok(r))
		r = hsm_b64url_encode(&tag, h, 16);
	if (hsm_ok(r))
		r = hsm_buf_put_u8(&tag, '"');
	if (hsm_ok(r))
		r = hsm_buf_terminate(&tag);
	if (hsm_ok(r))
		r = hsm_strcpy(d->etag, sizeof(d->etag), (const char *)tag.data);
	hsm_buf_free(&tag);
	return r;
}

static hsm_result build(hsm_kms *kms, uint64_t generation, int64_t now, hsm_jwks_doc **out)
{
	hsm_jwt_limits lim;
	int64_t until = INT64_MAX;
	hsm_jwks_doc *d = calloc(1, sizeof(*d));
	HSM_ENSURE(d != NULL, HSM_ERR_NOMEM, "out of memory");
	atomic_init(&d->refs, 1);
	hsm_result r = hsm_kms_jwks_render(kms, now, &d->body, &until);
	if (hsm_ok(r))
		r = make_etag(d);
	if (hsm_failed(r)) {
		hsm_jwks_doc_release(d);
		return r;
	}
	hsm_kms_jwt_limits(kms, &lim);
	d->max_age = lim.max_age;
	int64_t ttl = hsm_kms_jwks_ttl(kms);
	d->built = now;
	d->expires = until < now + ttl ? until : now + ttl;
	d->generation = generation;
	*out = d;
	return HSM_SUCCESS;
}

/*
 * Whether d may still be served when its rebuild fails (the store out of
 * reach: a restart, a failover to the standby): no key changed through this
 * node since it was built, so it misses no revocation made here, and it is at
 * most its max-age past its expiry.  Verifiers then keep verifying through a
 * short store outage, during which no node can change a key, instead of
 * failing every token as soon as their cached copy expires.
 */
static bool may_serve_stale(const hsm_jwks_doc *d, uint64_t generation, int64_t now)
{
	return d != NULL && d->generation == generation && now >= d->built &&
	       now - d->max_age < d->expires;
}

/* Whether d is the document to serve now, as it is: a change here or its expiry says no. */
static bool current(const hsm_jwks_doc *d, uint64_t generation, int64_t now)
{
	/* A clock stepped back (now before the build) would keep the document for the step. */
	return d != NULL && d->generation == generation && now < d->expires && now >= d->built;
}

/*
 * Builds a document outside the lock, so that requests meanwhile are served
 * the last one where it may be (a store that answers late holds up one
 * request, not all of them), and installs it.  Called and returns with
 * j->lock held; *d is the document to serve on success.
 */
static hsm_result rebuild(hsm_kms *kms, struct kms_jwks *j, uint64_t gen, int64_t now,
                          hsm_jwks_doc **d)
{
	hsm_jwks_doc *fresh = NULL;
	j->building = true;
	pthread_mutex_unlock(&j->lock);
	hsm_result r = build(kms, gen, now, &fresh);
	pthread_mutex_lock(&j->lock);
	j->building = false;
	pthread_cond_broadcast(&j->built);
	if (hsm_ok(r)) {
		hsm_jwks_doc_release(j->doc);
		j->doc = *d = fresh;
		return HSM_SUCCESS;
	}
	/* Serving the last document, the store is asked again once a second, not per request. */
	if (may_serve_stale(j->doc, gen, now)) {
		hsm_log_failure("JWKS: rebuild failed, the last document is served");
		j->retry_at = now + 1;
		*d = j->doc;
		return HSM_SUCCESS;
	}
	return r;
}

hsm_result hsm_kms_jwks(hsm_kms *kms, hsm_jwks_doc **out)
{
	struct kms_jwks *j = kms->jwks;
	hsm_result r = HSM_SUCCESS;
	hsm_jwks_doc *d;
	pthread_mutex_lock(&j->lock);
	for (;;) {
		/* Read before rendering: a change racing with the render forces the next rebuild. */
		uint64_t gen = atomic_load_explicit(&kms->generation, memory_order_acquire);
		int64_t now = kms_now(kms);
		d = j->doc;
		if (current(d, gen, now))
			break;
		if (may_serve_stale(d, gen, now) && (j->building || now < j->retry_at))
			break; /* being rebuilt, or the store failed a moment ago */
		if (!j->building) {
			r = rebuild(kms, j, gen, now, &d);
			break;
		}
		/* No document this request may have: wait for the one being built, then look again. */
		pthread_cond_wait(&j->built, &j->lock);
	}
	if (hsm_ok(r)) {
		atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);
		*out = d;
	}
	pthread_mutex_unlock(&j->lock);
	return r;
}
