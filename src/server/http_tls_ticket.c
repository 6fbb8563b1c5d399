/*
 * http_tls_ticket.c - session tickets under rotating keys.
 *
 * Resumption uses stateless tickets (RFC 5077, RFC 8446 section 4.6.1), but
 * not OpenSSL's built-in ticket key, which lives as long as the process: a
 * single leak of it would open every ticket-resumed session ever recorded.
 * Here the key rotates every TICKET_ROTATE_S seconds and the previous one is
 * kept only to decrypt (and renew) tickets it issued, until it is two periods
 * old, so a ticket is usable for at most two periods and a key leak exposes
 * at most that window (the advice of RFC 9325 section 3.4 on ticket keys).
 * Keys live in the secure heap.  Every resumption is sent a new ticket.
 *
 * A server-side session cache is not used: the server closes connections
 * without close_notify, and OpenSSL drops such sessions from its cache, so it
 * would never hit.
 */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common/log.h"
#include "common/secret.h"
#include "server/http_internal.h"

#define TICKET_ROTATE_S 3600
#define TICKET_NAME_LEN 16
#define TICKET_AES_LEN 32
#define TICKET_HMAC_LEN 32

typedef struct ticket_key {
	uint8_t name[TICKET_NAME_LEN];
	hsm_secret *keys; /* AES-256 key, then HMAC-SHA256 key */
	int64_t created;
} ticket_key;

typedef struct ticket_ring {
	pthread_mutex_t mu;
	ticket_key cur;
	ticket_key prev;
	bool stopped;    /* tests only: the clock moves by hsm_http_tls_tickets_age alone */
	int64_t stopped_at;
} ticket_ring;

static int ring_index = -1;
static pthread_once_t ring_index_once = PTHREAD_ONCE_INIT;

static int64_t mono_s(void)
{
	return (int64_t)(hsm_mono_ns() / 1000000000ULL);
}

static void ring_free(ticket_ring *r)
{
	hsm_secret_free(r->cur.keys);
	hsm_secret_free(r->prev.keys);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* Ex-data destructor: the ring goes when the last reference to the SSL_CTX does. */
static void ring_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                         void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (ptr != NULL)
		ring_free(ptr);
}

static void make_ring_index(void)
{
	ring_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ring_free_cb);
}

static int64_t ring_now(const ticket_ring *r)
{
	return r->stopped ? r->stopped_at : mono_s();
}

static hsm_result new_key(ticket_key *k, int64_t now)
{
	HSM_GUARD(hsm_secret_random(TICKET_AES_LEN + TICKET_HMAC_LEN, &k->keys));
	if (RAND_bytes(k->name, sizeof(k->name)) != 1) {
		hsm_secret_free(k->keys);
		k->keys = NULL;
		return HSM_FAIL(HSM_ERR_CRYPTO, "random generator failed");
	}
	k->created = now;
	return HSM_SUCCESS;
}

static void drop_key(ticket_key *k)
{
	hsm_secret_free(k->keys);
	memset(k, 0, sizeof(*k));
}

/*
 * With the ring locked, before a ticket is issued or opened: starts a new
 * period when the current one is over, and drops a key two periods old.  A
 * key issues tickets only in its first period (a ticket is issued after this
 * check), so a key two periods old opens nothing younger than one period,
 * however long the node went without a handshake.
 */
static void rotate_if_due(ticket_ring *r)
{
	int64_t now = ring_now(r);
	if (r->prev.keys != NULL && now - r->prev.created >= 2 * TICKET_ROTATE_S)
		drop_key(&r->prev);
	if (now - r->cur.created < TICKET_ROTATE_S)
		return;
	ticket_key fresh = {0};
	if (hsm_failed(new_key(&fresh, now))) {
		hsm_log_failure("session ticket key rotation");
		return;
	}
	drop_key(&r->prev);
	r->prev = r->cur;
	r->cur = fresh;
	if (now - r->prev.created >= 2 * TICKET_ROTATE_S)
		drop_key(&r->prev);
}

static int key_init(const ticket_key *k, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                    EVP_MAC_CTX *hctx, int enc)
{
	const uint8_t *keys = hsm_secret_bytes(k->keys);
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(uintptr_t)(keys + TICKET_AES_LEN),
	                                      TICKET_HMAC_LEN),
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)(uintptr_t)"SHA256", 0),
	    OSSL_PARAM_construct_end()};
	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	int ok = enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, keys, iv)
	             : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, keys, iv);
	return ok == 1 ? 0 : -1;
}

/*
 * SSL_CTX_set_tlsext_ticket_key_evp_cb: enc=1 issues a ticket under the
 * current key; enc=0 finds the key a ticket names.  Returns 1 to use it, 2 to
 * use it and issue a fresh ticket, 0 when the key is gone (full handshake),
 * -1 on error.
 */
static int ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
	ticket_ring *r = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ring_index);
	int rc = -1;
	pthread_mutex_lock(&r->mu);
	rotate_if_due(r);
	if (enc) {
		if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) == 1 && r->cur.keys != NULL) {
			memcpy(name, r->cur.name, TICKET_NAME_LEN);
			rc = key_init(&r->cur, iv, cctx, hctx, 1) == 0 ? 1 : -1;
		}
	} else if (r->cur.keys != NULL && CRYPTO_memcmp(name, r->cur.name, TICKET_NAME_LEN) == 0) {
		/* Renewed too: a client resuming gets a fresh ticket each time, so its
		 * connections cannot be linked by a ticket used over and over (RFC 8446
		 * appendix C.4), and under TLS 1.3 the server's last handshake flight
		 * does not leave a client that keeps Nagle on waiting for an ACK. */
		rc = key_init(&r->cur, iv, cctx, hctx, 0) == 0 ? 2 : -1;
	} else if (r->prev.keys != NULL && CRYPTO_memcmp(name, r->prev.name, TICKET_NAME_LEN) == 0) {
		rc = key_init(&r->prev, iv, cctx, hctx, 0) == 0 ? 2 : -1;
	} else {
		rc = 0;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

hsm_result hsm_http_tls_tickets_init(SSL_CTX *ctx)
{
	pthread_once(&ring_index_once, make_ring_index);
	HSM_ENSURE(ring_index >= 0, HSM_ERR_CRYPTO, "cannot register the ticket key ring");
	ticket_ring *r = calloc(1, sizeof(*r));
	HSM_ENSURE(r != NULL, HSM_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&r->mu, NULL);
	hsm_result res = new_key(&r->cur, mono_s());
	if (hsm_ok(res) && (SSL_CTX_set_ex_data(ctx, ring_index, r) != 1 ||
	                    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb) != 1))
		res = HSM_FAIL(HSM_ERR_CRYPTO, "cannot install the ticket key callback");
	if (hsm_failed(res)) {
		SSL_CTX_set_ex_data(ctx, ring_index, NULL);
		ring_free(r);
		return res;
	}
	/* Tickets outliving both keys would only be refused. */
	SSL_CTX_set_timeout(ctx, 2L * TICKET_ROTATE_S);
	return HSM_SUCCESS;
}

void hsm_http_tls_tickets_age(SSL_CTX *ctx, int64_t seconds)
{
	ticket_ring *r = SSL_CTX_get_ex_data(ctx, ring_index);
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->mu);
	if (!r->stopped) {
		/* Stopped where the newest key began, so the real time a slow test
		 * takes between two steps cannot carry a key across a boundary. */
		r->stopped = true;
		r->stopped_at = r->cur.created;
	}
	r->stopped_at += seconds;
	pthread_mutex_unlock(&r->mu);
}
