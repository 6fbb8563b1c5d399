/*
 * mac.c - HMAC (RFC 2104) through EVP_MAC: GenerateMac / VerifyMac as AWS KMS
 * defines them (API reference, "GenerateMac", "VerifyMac"), and the raw-key
 * HMAC-SHA256 that SigV4 and key derivation use.
 *
 * VerifyMac recomputes the MAC and compares in constant time; only the
 * algorithm's full MAC length is accepted, never a truncation.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>

#include "crypto/crypto_internal.h"

/*
 * Keyless HMAC contexts that already name their digest, cloned for each MAC:
 * a context made from scratch looks its digest up by name every time (a lock
 * and a search), which cost more than the MAC of a short message (about
 * 950 ns per HMAC-SHA256 of a short value against 700 ns cloned).  They hold
 * no key, so no secret outlives a call; the key is set on the clone.
 */
static const char *const template_digests[] = {"SHA1", "SHA224", "SHA256", "SHA384", "SHA512"};
#define N_TEMPLATES (sizeof(template_digests) / sizeof(template_digests[0]))
static EVP_MAC_CTX *templates[N_TEMPLATES];
static pthread_once_t templates_once = PTHREAD_ONCE_INIT;

static void templates_init(void)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	for (size_t i = 0; mac != NULL && i < N_TEMPLATES; i++) {
		char name[16]; /* OSSL_PARAM wants a writable string */
		snprintf(name, sizeof(name), "%s", template_digests[i]);
		OSSL_PARAM params[] = {
		    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, name, 0),
		    OSSL_PARAM_construct_end(),
		};
		EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
		if (ctx != NULL && EVP_MAC_CTX_set_params(ctx, params) != 1) {
			EVP_MAC_CTX_free(ctx);
			ctx = NULL;
		}
		templates[i] = ctx; /* NULL: that digest takes the slow path */
	}
	EVP_MAC_free(mac); /* the contexts keep their own references */
}

/* OpenSSL wants a non-NULL pointer for an empty key or message ("no key" is NULL). */
static const uint8_t empty[1];

/* A fresh context for digest: cloned from its template, else made and named. */
static EVP_MAC_CTX *mac_ctx(const char *digest, bool *named)
{
	*named = true;
	if (pthread_once(&templates_once, templates_init) == 0)
		for (size_t i = 0; i < N_TEMPLATES; i++)
			if (templates[i] != NULL && strcmp(digest, template_digests[i]) == 0)
				return EVP_MAC_CTX_dup(templates[i]);
	*named = false;
	return EVP_MAC_CTX_new(hsm_crypto_algs()->hmac);
}

/* A context for digest keyed with key (an empty key is legal HMAC). */
static hsm_result keyed_ctx(const uint8_t *key, size_t key_len, const char *digest,
                            EVP_MAC_CTX **out)
{
	hsm_result res = HSM_SUCCESS;
	char md_name[16]; /* OSSL_PARAM wants a writable string */
	bool named = false;
	OSSL_PARAM params[2] = {OSSL_PARAM_construct_end(), OSSL_PARAM_construct_end()};
	EVP_MAC_CTX *ctx = mac_ctx(digest, &named);
	HSM_OSSL_CHECK(ctx != NULL, HSM_ERR_NOMEM, "out of memory");
	if (!named) { /* a template's clone has its digest already */
		snprintf(md_name, sizeof(md_name), "%s", digest);
		params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, md_name, 0);
	}
	HSM_OSSL_CHECK(EVP_MAC_init(ctx, key_len > 0 ? key : empty, key_len, named ? NULL : params) == 1,
	               HSM_ERR_CRYPTO, "HMAC computation failed");
	*out = ctx;
	ctx = NULL;
out:
	EVP_MAC_CTX_free(ctx);
	return res;
}

/* The MAC of msg on a keyed context, which is then spent until initialized again. */
static hsm_result mac_of(EVP_MAC_CTX *ctx, const uint8_t *msg, size_t msg_len, uint8_t *out,
                         size_t out_len)
{
	size_t len = 0;
	HSM_OSSL_ENSURE(EVP_MAC_update(ctx, msg_len > 0 ? msg : empty, msg_len) == 1 &&
	                    EVP_MAC_final(ctx, out, &len, out_len) == 1 && len == out_len,
	                HSM_ERR_CRYPTO, "HMAC computation failed");
	return HSM_SUCCESS;
}

hsm_result hsm_hmac_compute(const uint8_t *key, size_t key_len, const char *digest,
                            const uint8_t *msg, size_t msg_len, uint8_t *out, size_t out_len)
{
	EVP_MAC_CTX *ctx = NULL;
	HSM_GUARD(keyed_ctx(key, key_len, digest, &ctx));
	hsm_result res = mac_of(ctx, msg, msg_len, out, out_len);
	EVP_MAC_CTX_free(ctx);
	return res;
}

struct hsm_keyed_hmac {
	EVP_MAC_CTX *ctx;
	bool keyed;          /* fresh from the key: no restart needed before the next MAC */
	hsm_hmac_pool *pool; /* lent by this pool (a slot of it), else owned by its holder */
};

hsm_result hsm_keyed_hmac_new(const uint8_t *key, size_t key_len, hsm_keyed_hmac **out)
{
	HSM_ASSERT((key != NULL || key_len == 0) && out != NULL);
	hsm_keyed_hmac *h = calloc(1, sizeof(*h));
	HSM_ENSURE(h != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_result res = keyed_ctx(key, key_len, "SHA256", &h->ctx);
	if (hsm_failed(res)) {
		free(h);
		return res;
	}
	h->keyed = true;
	*out = h;
	return HSM_SUCCESS;
}

hsm_result hsm_keyed_hmac_of(hsm_keyed_hmac *h, const void *msg, size_t msg_len,
                             uint8_t out[HSM_SHA256_LEN])
{
	HSM_ASSERT(h != NULL && (msg != NULL || msg_len == 0));
	bool keyed = h->keyed;
	h->keyed = false;
	/* Without a key, EVP_MAC_init restarts from the pads the key made. */
	HSM_OSSL_ENSURE(keyed || EVP_MAC_init(h->ctx, NULL, 0, NULL) == 1, HSM_ERR_CRYPTO,
	                "HMAC computation failed");
	return mac_of(h->ctx, msg, msg_len, out, HSM_SHA256_LEN);
}

static void pool_unref(hsm_hmac_pool *p);
static void pool_give(hsm_keyed_hmac *h);

void hsm_keyed_hmac_free(hsm_keyed_hmac *h)
{
	if (h == NULL)
		return;
	if (h->pool != NULL) {
		pool_give(h);
		return;
	}
	EVP_MAC_CTX_free(h->ctx); /* cleanses the keyed state */
	free(h);
}

/*
 * A pool: a keyed context that is never used itself, only cloned, and
 * POOL_SLOTS clones of it made on first loan.  A borrower claims a free slot
 * with one atomic exchange and restarts its context from the pads (a restart
 * copies one digest state: about a third of what a new keyed context costs,
 * and no allocation of the context's eight blocks).  References: the owner's
 * and one per loan, so a key dropped while a MAC runs is wiped after it.
 */
#define POOL_SLOTS 8

struct hsm_hmac_pool {
	atomic_uint refs;
	EVP_MAC_CTX *keyed; /* the template: keyed, never updated */
	atomic_bool lent[POOL_SLOTS];
	hsm_keyed_hmac slots[POOL_SLOTS];
};

hsm_result hsm_hmac_pool_new(const uint8_t *key, size_t key_len, hsm_hmac_pool **out)
{
	HSM_ASSERT((key != NULL || key_len == 0) && out != NULL);
	hsm_hmac_pool *p = calloc(1, sizeof(*p));
	HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_result res = keyed_ctx(key, key_len, "SHA256", &p->keyed);
	if (hsm_failed(res)) {
		free(p);
		return res;
	}
	atomic_init(&p->refs, 1);
	for (size_t i = 0; i < POOL_SLOTS; i++) {
		atomic_init(&p->lent[i], false);
		p->slots[i].pool = p;
	}
	*out = p;
	return HSM_SUCCESS;
}

hsm_result hsm_hmac_pool_take(hsm_hmac_pool *p, hsm_keyed_hmac **out)
{
	HSM_ASSERT(p != NULL && out != NULL);
	for (size_t i = 0; i < POOL_SLOTS; i++) {
		if (atomic_load_explicit(&p->lent[i], memory_order_relaxed) ||
		    atomic_exchange_explicit(&p->lent[i], true, memory_order_acquire))
			continue;
		hsm_keyed_hmac *h = &p->slots[i];
		if (h->ctx == NULL) {
			h->ctx = EVP_MAC_CTX_dup(p->keyed);
			if (h->ctx == NULL) {
				atomic_store_explicit(&p->lent[i], false, memory_order_release);
				return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
			}
			h->keyed = true;
		}
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
		*out = h;
		return HSM_SUCCESS;
	}
	/* Every slot is lent: a context of the borrower's own, cloned from the keyed one. */
	hsm_keyed_hmac *h = calloc(1, sizeof(*h));
	HSM_ENSURE(h != NULL, HSM_ERR_NOMEM, "out of memory");
	h->ctx = EVP_MAC_CTX_dup(p->keyed);
	if (h->ctx == NULL) {
		free(h);
		return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	}
	h->keyed = true;
	*out = h;
	return HSM_SUCCESS;
}

static void pool_give(hsm_keyed_hmac *h)
{
	hsm_hmac_pool *p = h->pool;
	h->keyed = false; /* spent or not, the next borrower restarts it from the pads */
	atomic_store_explicit(&p->lent[h - p->slots], false, memory_order_release);
	pool_unref(p);
}

static void pool_unref(hsm_hmac_pool *p)
{
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (size_t i = 0; i < POOL_SLOTS; i++)
		EVP_MAC_CTX_free(p->slots[i].ctx); /* cleanses the keyed state */
	EVP_MAC_CTX_free(p->keyed);
	free(p);
}

void hsm_hmac_pool_free(hsm_hmac_pool *p)
{
	if (p != NULL)
		pool_unref(p);
}

static hsm_result check_alg(const hsm_material *m, hsm_mac_alg alg)
{
	hsm_key_spec spec = hsm_material_spec(m);
	HSM_ENSURE(hsm_spec_allows_mac_alg(spec, alg), HSM_ERR_INVALID_KEY_USAGE,
	           "MacAlgorithm %s is not valid for KeySpec %s", hsm_mac_alg_name(alg),
	           hsm_spec_name(spec));
	return HSM_SUCCESS;
}

static hsm_result material_mac(const hsm_material *m, const hsm_mac_alg_info *info,
                               const uint8_t *msg, size_t msg_len, uint8_t *out)
{
	const hsm_secret *key = hsm_material_secret(m);
	return hsm_hmac_compute(hsm_secret_bytes(key), hsm_secret_len(key), info->digest, msg,
	                        msg_len, out, info->mac_len);
}

hsm_result hsm_hmac(const hsm_material *m, hsm_mac_alg alg, const uint8_t *msg, size_t msg_len,
                    hsm_buf *mac_out)
{
	HSM_GUARD(check_alg(m, alg));
	const hsm_mac_alg_info *info = hsm_mac_alg_get(alg);
	size_t old = mac_out->len;
	uint8_t *p;
	HSM_GUARD(hsm_buf_append_space(mac_out, info->mac_len, &p));
	hsm_result res = material_mac(m, info, msg, msg_len, p);
	if (hsm_failed(res))
		mac_out->len = old;
	return res;
}

hsm_result hsm_hmac_verify(const hsm_material *m, hsm_mac_alg alg, const uint8_t *msg,
                           size_t msg_len, const uint8_t *mac, size_t mac_len)
{
	HSM_GUARD(check_alg(m, alg));
	const hsm_mac_alg_info *info = hsm_mac_alg_get(alg);
	uint8_t expect[EVP_MAX_MD_SIZE];
	HSM_GUARD(material_mac(m, info, msg, msg_len, expect));
	/* The length is public (it names the algorithm); the bytes are compared in constant time. */
	bool ok = mac != NULL && mac_len == info->mac_len && hsm_ct_equal(expect, mac, mac_len);
	OPENSSL_cleanse(expect, sizeof(expect));
	HSM_ENSURE(ok, HSM_ERR_INVALID_MAC, "the MAC does not verify");
	return HSM_SUCCESS;
}

hsm_result hsm_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t msg_len,
                           uint8_t out[HSM_SHA256_LEN])
{
	HSM_ASSERT((key != NULL || key_len == 0) && (msg != NULL || msg_len == 0));
	return hsm_hmac_compute(key, key_len, "SHA256", msg, msg_len, out, HSM_SHA256_LEN);
}
