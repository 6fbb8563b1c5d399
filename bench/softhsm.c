/*
 * softhsm - the benchmarked operations through SoftHSMv2's PKCS#11 API,
 * in-process (dlopen of libsofthsm2.so), one session per thread, all
 * threads logged in as the token's user.  Same key types, message sizes
 * and AAD as `limit` and the API benchmark (br.h).
 *
 * Mechanisms (PKCS#11 v2.40 "Current Mechanisms Specification"):
 *   sign-rsa*      CKM_SHA256_RSA_PKCS (2.1.11), hashing inside the token
 *   sign-p256      CKM_ECDSA_SHA256 (2.3.6) when offered, else C_Digest then CKM_ECDSA
 *   sign-ed25519   CKM_EDDSA (PKCS#11 v3.0, 2.3.14)
 *   verify-rsa2048 CKM_SHA256_RSA_PKCS
 *   encrypt-*      C_GenerateRandom for the 96-bit IV, then CKM_AES_GCM (2.14.4) with AAD
 *   decrypt-*      CKM_AES_GCM with the same AAD
 *   gdk            C_GenerateRandom(32), then CKM_AES_GCM over the 32 bytes
 *   mac            CKM_SHA256_HMAC (2.21) with a 32-byte generic secret key
 * Keys are session objects made by a set-up session that stays open.
 *
 * usage: softhsm [--threads N] [--duration S] [--op NAME]...
 * Environment: SOFTHSM2_CONF (a configuration naming the token directory),
 * HSM_BENCH_SOFTHSM_MODULE (default /usr/lib/softhsm/libsofthsm2.so),
 * HSM_BENCH_SOFTHSM_PIN (default 1234).  The first initialized token is used.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "br.h"
#include "softhsm.h"

typedef struct state {
	const p11 *p;
	CK_SESSION_HANDLE s;
	const char *op;
	uint8_t out[BR_LARGE_PT + 64];
} state;

/* ---- per-thread sessions ------------------------------------------------------ */

static hsm_result setup_any(void *arg, unsigned t, void **out)
{
	const p11 *p = arg;
	(void)t;
	state *s = calloc(1, sizeof(*s));
	HSM_ENSURE(s != NULL, HSM_ERR_NOMEM, "out of memory");
	s->p = p;
	hsm_result r = ck(p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
	                                      NULL, &s->s),
	                  "C_OpenSession");
	if (hsm_failed(r)) {
		free(s);
		return r;
	}
	*out = s;
	return HSM_SUCCESS;
}

static void teardown(void *arg)
{
	state *s = arg;
	(void)s->p->f->C_CloseSession(s->s);
	free(s);
}

static hsm_result sign_with(state *s, CK_MECHANISM_TYPE m, CK_OBJECT_HANDLE key,
                            const uint8_t *msg, CK_ULONG n)
{
	CK_MECHANISM mech = {m, NULL, 0};
	CK_ULONG len = sizeof(s->out);
	HSM_GUARD(ck(s->p->f->C_SignInit(s->s, &mech, key), "C_SignInit"));
	return ck(s->p->f->C_Sign(s->s, (CK_BYTE_PTR)(uintptr_t)msg, n, s->out, &len), "C_Sign");
}

static hsm_result run_rsa2048(void *arg)
{
	state *s = arg;
	return sign_with(s, CKM_SHA256_RSA_PKCS, s->p->rsa2048, s->p->msg, BR_MSG_LEN);
}

static hsm_result run_rsa4096(void *arg)
{
	state *s = arg;
	return sign_with(s, CKM_SHA256_RSA_PKCS, s->p->rsa4096, s->p->msg, BR_MSG_LEN);
}

static hsm_result run_p256(void *arg)
{
	state *s = arg;
	const p11 *p = s->p;
	if (p->ecdsa_sha256)
		return sign_with(s, CKM_ECDSA_SHA256, p->p256, p->msg, BR_MSG_LEN);
	CK_MECHANISM sha = {CKM_SHA256, NULL, 0};
	uint8_t dg[32];
	CK_ULONG dl = sizeof(dg);
	HSM_GUARD(ck(p->f->C_DigestInit(s->s, &sha), "C_DigestInit"));
	HSM_GUARD(ck(p->f->C_Digest(s->s, (CK_BYTE_PTR)(uintptr_t)p->msg, BR_MSG_LEN, dg, &dl),
	             "C_Digest"));
	return sign_with(s, CKM_ECDSA, p->p256, dg, dl);
}

static hsm_result run_ed25519(void *arg)
{
	state *s = arg;
	return sign_with(s, CKM_EDDSA, s->p->ed25519, s->p->msg, BR_MSG_LEN);
}

static hsm_result run_mac(void *arg)
{
	state *s = arg;
	return sign_with(s, CKM_SHA256_HMAC, s->p->hmac, s->p->msg, BR_MSG_LEN);
}

static hsm_result run_verify(void *arg)
{
	state *s = arg;
	const p11 *p = s->p;
	CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
	HSM_GUARD(ck(p->f->C_VerifyInit(s->s, &mech, p->rsa2048_pub), "C_VerifyInit"));
	return ck(p->f->C_Verify(s->s, (CK_BYTE_PTR)(uintptr_t)p->msg, BR_MSG_LEN,
	                         (CK_BYTE_PTR)(uintptr_t)p->sig, p->sig_len),
	          "C_Verify");
}

/* AES-256-GCM with a fresh random IV, as hsmd does for every Encrypt. */
static hsm_result gcm_encrypt(state *s, CK_SESSION_HANDLE sess, const uint8_t *pt, CK_ULONG n)
{
	const p11 *p = s->p;
	uint8_t iv[BR_IV_LEN];
	CK_GCM_PARAMS gcm = {iv, BR_IV_LEN, BR_IV_LEN * 8, (CK_BYTE_PTR)(uintptr_t)p->aad,
	                     BR_AAD_LEN, BR_TAG_LEN * 8};
	CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	CK_ULONG len = sizeof(s->out);
	HSM_GUARD(ck(p->f->C_GenerateRandom(sess, iv, sizeof(iv)), "C_GenerateRandom"));
	HSM_GUARD(ck(p->f->C_EncryptInit(sess, &mech, p->aes), "C_EncryptInit"));
	return ck(p->f->C_Encrypt(sess, (CK_BYTE_PTR)(uintptr_t)pt, n, s->out, &len), "C_Encrypt");
}

static hsm_result run_enc_small(void *arg)
{
	state *s = arg;
	return gcm_encrypt(s, s->s, s->p->pt, BR_SMALL_PT);
}

static hsm_result run_enc_large(void *arg)
{
	state *s = arg;
	return gcm_encrypt(s, s->s, s->p->pt, BR_LARGE_PT);
}

static hsm_result run_gdk(void *arg)
{
	state *s = arg;
	uint8_t dk[BR_DATA_KEY_LEN];
	HSM_GUARD(ck(s->p->f->C_GenerateRandom(s->s, dk, sizeof(dk)), "C_GenerateRandom"));
	return gcm_encrypt(s, s->s, dk, sizeof(dk));
}

static hsm_result gcm_decrypt(state *s, const uint8_t *ct, CK_ULONG n)
{
	const p11 *p = s->p;
	CK_GCM_PARAMS gcm = {(CK_BYTE_PTR)(uintptr_t)p->iv, BR_IV_LEN, BR_IV_LEN * 8,
	                     (CK_BYTE_PTR)(uintptr_t)p->aad, BR_AAD_LEN, BR_TAG_LEN * 8};
	CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	CK_ULONG len = sizeof(s->out);
	HSM_GUARD(ck(p->f->C_DecryptInit(s->s, &mech, p->aes), "C_DecryptInit"));
	return ck(p->f->C_Decrypt(s->s, (CK_BYTE_PTR)(uintptr_t)ct, n, s->out, &len), "C_Decrypt");
}

static hsm_result run_dec_small(void *arg)
{
	state *s = arg;
	return gcm_decrypt(s, s->p->ct_small, sizeof(s->p->ct_small));
}

static hsm_result run_dec_large(void *arg)
{
	state *s = arg;
	return gcm_decrypt(s, s->p->ct_large, sizeof(s->p->ct_large));
}

static const br_op ops[] = {
    {"sign-rsa2048", setup_any, run_rsa2048, teardown},
    {"sign-rsa4096", setup_any, run_rsa4096, teardown},
    {"sign-p256", setup_any, run_p256, teardown},
    {"sign-ed25519", setup_any, run_ed25519, teardown},
    {"verify-rsa2048", setup_any, run_verify, teardown},
    {"encrypt-64", setup_any, run_enc_small, teardown},
    {"encrypt-4k", setup_any, run_enc_large, teardown},
    {"decrypt-64", setup_any, run_dec_small, teardown},
    {"decrypt-4k", setup_any, run_dec_large, teardown},
    {"gdk", setup_any, run_gdk, teardown},
    {"mac", setup_any, run_mac, teardown},
};

int main(int argc, char **argv)
{
	static p11 p;
	br_args a;
	void *lib = NULL;
	if (hsm_failed(br_parse_args(argc, argv, &a)) || hsm_failed(open_token(&p, &lib)) ||
	    hsm_failed(make_keys(&p)) || hsm_failed(make_fixtures(&p))) {
		fprintf(stderr, "softhsm: %s\n", hsm_last_message());
		return 2;
	}
	int rc = br_run_wanted("softhsm", ops, sizeof(ops) / sizeof(ops[0]), &p, &a);
	(void)p.f->C_CloseSession(p.setup);
	(void)p.f->C_Finalize(NULL);
	dlclose(lib);
	return rc;
}
