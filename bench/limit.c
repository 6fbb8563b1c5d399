/*
 * limit - the physical limit of each benchmarked operation: the same
 * OpenSSL work hsmd must do at the least, in a tight in-process loop on
 * every core (like `openssl speed -multi`, but through EVP with the key
 * types and message sizes of the API benchmark).
 *
 * Nothing here pays for HTTP, JSON, SigV4, policy checks or the audit
 * trail; each thread has its own copy of every key and its own contexts,
 * set up once, so no lock is shared.  Per operation:
 *   sign-*       SHA-256 of the 64-byte message and the private-key
 *                operation (RSA PKCS#1 v1.5, ECDSA P-256), or Ed25519
 *   verify-*     SHA-256 and the RSA public-key operation
 *   encrypt-*    a random 96-bit IV and AES-256-GCM with 74 bytes of AAD
 *   decrypt-*    AES-256-GCM with the same AAD and the tag check
 *   gdk          32 random bytes, then encrypt-32
 *   mac          HMAC-SHA-256 over 64 bytes
 *
 * usage: limit [--threads N] [--duration S] [--op NAME]...
 * Output: one JSON line per operation (br.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "br.h"

typedef struct globals {
	EVP_PKEY *rsa2048, *rsa4096, *p256, *ed25519;
	uint8_t aes_key[32], hmac_key[32];
	uint8_t msg[BR_MSG_LEN], aad[BR_AAD_LEN], pt[BR_LARGE_PT];
	uint8_t rsa_sig[256];
	size_t rsa_sig_len;
	/* Ciphertexts for the decrypt operations, made at start-up. */
	uint8_t iv[BR_IV_LEN], ct_small[BR_SMALL_PT], ct_large[BR_LARGE_PT];
	uint8_t tag_small[BR_TAG_LEN], tag_large[BR_TAG_LEN];
} globals;

typedef struct state {
	const globals *g;
	EVP_PKEY *key;
	EVP_PKEY_CTX *pctx;
	EVP_MD_CTX *mctx;
	EVP_MD *sha256;
	EVP_CIPHER_CTX *cctx;
	EVP_MAC_CTX *mac;
	size_t pt_len;
	uint8_t out[BR_LARGE_PT + 64];
	uint8_t dk[BR_DATA_KEY_LEN];
} state;

#define OSSL_CHECK(cond, what) HSM_CHECK((cond), HSM_ERR_CRYPTO, "%s failed", (what))

static void state_free(void *p)
{
	state *s = p;
	if (s == NULL)
		return;
	EVP_PKEY_free(s->key);
	EVP_PKEY_CTX_free(s->pctx);
	EVP_MD_CTX_free(s->mctx);
	EVP_MD_free(s->sha256);
	EVP_CIPHER_CTX_free(s->cctx);
	EVP_MAC_CTX_free(s->mac);
	free(s);
}

static hsm_result state_new(const globals *g, state **out)
{
	state *s = calloc(1, sizeof(*s));
	HSM_ENSURE(s != NULL, HSM_ERR_NOMEM, "out of memory");
	s->g = g;
	s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (s->sha256 == NULL) {
		state_free(s);
		return HSM_FAIL(HSM_ERR_CRYPTO, "no SHA-256");
	}
	*out = s;
	return HSM_SUCCESS;
}

/* ---- signatures --------------------------------------------------------------- */

/* A per-thread copy of key with a context ready to sign (or verify) SHA-256 digests. */
static hsm_result setup_pkey(const globals *g, EVP_PKEY *key, bool verify, void **out)
{
	hsm_result res = HSM_SUCCESS;
	state *s = NULL;
	HSM_TRY(state_new(g, &s));
	s->key = EVP_PKEY_dup(key);
	OSSL_CHECK(s->key != NULL, "EVP_PKEY_dup");
	s->pctx = EVP_PKEY_CTX_new_from_pkey(NULL, s->key, NULL);
	OSSL_CHECK(s->pctx != NULL, "EVP_PKEY_CTX_new");
	OSSL_CHECK((verify ? EVP_PKEY_verify_init(s->pctx) : EVP_PKEY_sign_init(s->pctx)) == 1, "init");
	if (EVP_PKEY_is_a(s->key, "RSA"))
		OSSL_CHECK(EVP_PKEY_CTX_set_rsa_padding(s->pctx, RSA_PKCS1_PADDING) == 1, "padding");
	OSSL_CHECK(EVP_PKEY_CTX_set_signature_md(s->pctx, s->sha256) == 1, "signature md");
	*out = s;
	s = NULL;
out:
	state_free(s);
	return res;
}

static hsm_result setup_rsa2048(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_pkey(arg, ((globals *)arg)->rsa2048, false, out);
}

static hsm_result setup_rsa4096(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_pkey(arg, ((globals *)arg)->rsa4096, false, out);
}

static hsm_result setup_p256(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_pkey(arg, ((globals *)arg)->p256, false, out);
}

static hsm_result setup_verify(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_pkey(arg, ((globals *)arg)->rsa2048, true, out);
}

static hsm_result run_sign(void *p)
{
	state *s = p;
	uint8_t dg[32];
	size_t len = sizeof(s->out);
	HSM_ENSURE(EVP_Digest(s->g->msg, BR_MSG_LEN, dg, NULL, s->sha256, NULL) == 1 &&
	               EVP_PKEY_sign(s->pctx, s->out, &len, dg, sizeof(dg)) == 1,
	           HSM_ERR_CRYPTO, "sign failed");
	return HSM_SUCCESS;
}

static hsm_result run_verify(void *p)
{
	state *s = p;
	uint8_t dg[32];
	HSM_ENSURE(EVP_Digest(s->g->msg, BR_MSG_LEN, dg, NULL, s->sha256, NULL) == 1 &&
	               EVP_PKEY_verify(s->pctx, s->g->rsa_sig, s->g->rsa_sig_len, dg, sizeof(dg)) == 1,
	           HSM_ERR_CRYPTO, "verify failed");
	return HSM_SUCCESS;
}

static hsm_result setup_ed25519(void *arg, unsigned t, void **out)
{
	hsm_result res = HSM_SUCCESS;
	const globals *g = arg;
	state *s = NULL;
	(void)t;
	HSM_TRY(state_new(g, &s));
	s->key = EVP_PKEY_dup(g->ed25519);
	s->mctx = EVP_MD_CTX_new();
	OSSL_CHECK(s->key != NULL && s->mctx != NULL, "EVP_PKEY_dup");
	*out = s;
	s = NULL;
out:
	state_free(s);
	return res;
}

/* Ed25519 (RFC 8032) hashes inside the signature: OpenSSL needs a fresh init per message. */
static hsm_result run_ed25519(void *p)
{
	state *s = p;
	size_t len = sizeof(s->out);
	HSM_ENSURE(EVP_DigestSignInit(s->mctx, NULL, NULL, NULL, s->key) == 1 &&
	               EVP_DigestSign(s->mctx, s->out, &len, s->g->msg, BR_MSG_LEN) == 1,
	           HSM_ERR_CRYPTO, "Ed25519 sign failed");
	return HSM_SUCCESS;
}

/* ---- AES-256-GCM and HMAC ------------------------------------------------------- */

static hsm_result setup_gcm(void *arg, size_t pt_len, bool decrypt, void **out)
{
	hsm_result res = HSM_SUCCESS;
	const globals *g = arg;
	state *s = NULL;
	HSM_TRY(state_new(g, &s));
	s->pt_len = pt_len;
	s->cctx = EVP_CIPHER_CTX_new();
	OSSL_CHECK(s->cctx != NULL, "EVP_CIPHER_CTX_new");
	OSSL_CHECK(EVP_CipherInit_ex(s->cctx, EVP_aes_256_gcm(), NULL, g->aes_key, NULL,
	                             decrypt ? 0 : 1) == 1,
	           "AES-256-GCM key set-up");
	*out = s;
	s = NULL;
out:
	state_free(s);
	return res;
}

static hsm_result gcm_encrypt(state *s, const uint8_t *pt, size_t n)
{
	uint8_t iv[BR_IV_LEN], tag[BR_TAG_LEN];
	int l = 0;
	HSM_ENSURE(RAND_bytes(iv, sizeof(iv)) == 1 &&
	               EVP_EncryptInit_ex(s->cctx, NULL, NULL, NULL, iv) == 1 &&
	               EVP_EncryptUpdate(s->cctx, NULL, &l, s->g->aad, BR_AAD_LEN) == 1 &&
	               EVP_EncryptUpdate(s->cctx, s->out, &l, pt, (int)n) == 1 &&
	               EVP_EncryptFinal_ex(s->cctx, s->out + l, &l) == 1 &&
	               EVP_CIPHER_CTX_ctrl(s->cctx, EVP_CTRL_GCM_GET_TAG, BR_TAG_LEN, tag) == 1,
	           HSM_ERR_CRYPTO, "AES-GCM encrypt failed");
	return HSM_SUCCESS;
}

static hsm_result run_encrypt(void *p)
{
	state *s = p;
	return gcm_encrypt(s, s->g->pt, s->pt_len);
}

static hsm_result run_decrypt(void *p)
{
	state *s = p;
	const globals *g = s->g;
	bool small = s->pt_len == BR_SMALL_PT;
	int l = 0;
	HSM_ENSURE(EVP_DecryptInit_ex(s->cctx, NULL, NULL, NULL, g->iv) == 1 &&
	               EVP_DecryptUpdate(s->cctx, NULL, &l, g->aad, BR_AAD_LEN) == 1 &&
	               EVP_DecryptUpdate(s->cctx, s->out, &l, small ? g->ct_small : g->ct_large,
	                                 (int)s->pt_len) == 1 &&
	               EVP_CIPHER_CTX_ctrl(s->cctx, EVP_CTRL_GCM_SET_TAG, BR_TAG_LEN,
	                                   (void *)(uintptr_t)(small ? g->tag_small : g->tag_large)) == 1 &&
	               EVP_DecryptFinal_ex(s->cctx, s->out + l, &l) == 1,
	           HSM_ERR_CRYPTO, "AES-GCM decrypt failed");
	return HSM_SUCCESS;
}

static hsm_result run_gdk(void *p)
{
	state *s = p;
	HSM_ENSURE(RAND_bytes(s->dk, sizeof(s->dk)) == 1, HSM_ERR_CRYPTO, "RAND_bytes failed");
	return gcm_encrypt(s, s->dk, sizeof(s->dk));
}

static hsm_result setup_enc_small(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_gcm(arg, BR_SMALL_PT, false, out);
}

static hsm_result setup_enc_large(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_gcm(arg, BR_LARGE_PT, false, out);
}

static hsm_result setup_dec_small(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_gcm(arg, BR_SMALL_PT, true, out);
}

static hsm_result setup_dec_large(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_gcm(arg, BR_LARGE_PT, true, out);
}

static hsm_result setup_gdk(void *arg, unsigned t, void **out)
{
	(void)t;
	return setup_gcm(arg, BR_DATA_KEY_LEN, false, out);
}

static hsm_result setup_mac(void *arg, unsigned t, void **out)
{
	hsm_result res = HSM_SUCCESS;
	const globals *g = arg;
	state *s = NULL;
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
	                       OSSL_PARAM_construct_end()};
	(void)t;
	HSM_TRY(state_new(g, &s));
	OSSL_CHECK(mac != NULL, "EVP_MAC_fetch");
	s->mac = EVP_MAC_CTX_new(mac);
	OSSL_CHECK(s->mac != NULL && EVP_MAC_init(s->mac, g->hmac_key, 32, params) == 1, "HMAC init");
	*out = s;
	s = NULL;
out:
	EVP_MAC_free(mac);
	state_free(s);
	return res;
}

/* Re-initialising with a NULL key keeps the key's precomputed pads (OpenSSL 3 EVP_MAC_init). */
static hsm_result run_mac(void *p)
{
	state *s = p;
	size_t len = 0;
	HSM_ENSURE(EVP_MAC_init(s->mac, NULL, 0, NULL) == 1 &&
	               EVP_MAC_update(s->mac, s->g->msg, BR_MSG_LEN) == 1 &&
	               EVP_MAC_final(s->mac, s->out, &len, sizeof(s->out)) == 1 && len == 32,
	           HSM_ERR_CRYPTO, "HMAC failed");
	return HSM_SUCCESS;
}

/* ---- set-up and main ---------------------------------------------------------- */

static hsm_result make_key(const char *type, const char *param, EVP_PKEY **out)
{
	EVP_PKEY *k = NULL;
	if (strcmp(type, "RSA") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)strtoul(param, NULL, 10));
	else if (strcmp(type, "EC") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", param);
	else
		k = EVP_PKEY_Q_keygen(NULL, NULL, type);
	HSM_ENSURE(k != NULL, HSM_ERR_CRYPTO, "cannot generate a %s key", type);
	*out = k;
	return HSM_SUCCESS;
}

static hsm_result make_fixtures(globals *g)
{
	void *st = NULL;
	HSM_ENSURE(RAND_bytes(g->aes_key, 32) == 1 && RAND_bytes(g->hmac_key, 32) == 1 &&
	               RAND_bytes(g->msg, sizeof(g->msg)) == 1 && RAND_bytes(g->aad, sizeof(g->aad)) == 1 &&
	               RAND_bytes(g->pt, sizeof(g->pt)) == 1 && RAND_bytes(g->iv, sizeof(g->iv)) == 1,
	           HSM_ERR_CRYPTO, "RAND_bytes failed");
	HSM_GUARD(make_key("RSA", "2048", &g->rsa2048));
	HSM_GUARD(make_key("RSA", "4096", &g->rsa4096));
	HSM_GUARD(make_key("EC", "P-256", &g->p256));
	HSM_GUARD(make_key("ED25519", NULL, &g->ed25519));
	/* A signature to verify, and ciphertexts to decrypt. */
	HSM_GUARD(setup_pkey(g, g->rsa2048, false, &st));
	state *s = st;
	hsm_result r = run_sign(s);
	memcpy(g->rsa_sig, s->out, 256);
	g->rsa_sig_len = 256;
	state_free(s);
	HSM_GUARD(r);
	for (int large = 0; large < 2; large++) {
		EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
		uint8_t none[16];
		int l = 0;
		size_t n = large ? BR_LARGE_PT : BR_SMALL_PT;
		bool ok = c != NULL &&
		          EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, g->aes_key, g->iv) == 1 &&
		          EVP_EncryptUpdate(c, NULL, &l, g->aad, BR_AAD_LEN) == 1 &&
		          EVP_EncryptUpdate(c, large ? g->ct_large : g->ct_small, &l, g->pt, (int)n) == 1 &&
		          EVP_EncryptFinal_ex(c, none, &l) == 1 &&
		          EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, BR_TAG_LEN,
		                              large ? g->tag_large : g->tag_small) == 1;
		EVP_CIPHER_CTX_free(c);
		HSM_ENSURE(ok, HSM_ERR_CRYPTO, "AES-GCM fixture failed");
	}
	return HSM_SUCCESS;
}

static const br_op ops[] = {
    {"sign-rsa2048", setup_rsa2048, run_sign, state_free},
    {"sign-rsa4096", setup_rsa4096, run_sign, state_free},
    {"sign-p256", setup_p256, run_sign, state_free},
    {"sign-ed25519", setup_ed25519, run_ed25519, state_free},
    {"verify-rsa2048", setup_verify, run_verify, state_free},
    {"encrypt-64", setup_enc_small, run_encrypt, state_free},
    {"encrypt-4k", setup_enc_large, run_encrypt, state_free},
    {"decrypt-64", setup_dec_small, run_decrypt, state_free},
    {"decrypt-4k", setup_dec_large, run_decrypt, state_free},
    {"gdk", setup_gdk, run_gdk, state_free},
    {"mac", setup_mac, run_mac, state_free},
};

int main(int argc, char **argv)
{
	static globals g;
	br_args a;
	if (hsm_failed(br_parse_args(argc, argv, &a)) || hsm_failed(make_fixtures(&g))) {
		fprintf(stderr, "limit: %s\n", hsm_last_message());
		return 2;
	}
	int rc = br_run_wanted("limit", ops, sizeof(ops) / sizeof(ops[0]), &g, &a);
	EVP_PKEY_free(g.rsa2048);
	EVP_PKEY_free(g.rsa4096);
	EVP_PKEY_free(g.p256);
	EVP_PKEY_free(g.ed25519);
	return rc;
}
