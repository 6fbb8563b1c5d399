/*
 * softhsm.h - the SoftHSMv2 token the `softhsm` benchmark works on: module
 * loading, login, and the keys and fixtures every operation uses.
 */
#ifndef HSM_BENCH_SOFTHSM_H
#define HSM_BENCH_SOFTHSM_H

#include <stdbool.h>
#include <stdint.h>

#include <p11-kit/pkcs11.h>

#include "br.h"

typedef struct p11 {
	CK_FUNCTION_LIST_PTR f;
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE setup; /* owns the session keys; open for the whole run */
	CK_OBJECT_HANDLE rsa2048, rsa2048_pub, rsa4096, p256, ed25519, aes, hmac;
	bool ecdsa_sha256;       /* the token offers CKM_ECDSA_SHA256 */
	uint8_t msg[BR_MSG_LEN], aad[BR_AAD_LEN], pt[BR_LARGE_PT], iv[BR_IV_LEN];
	uint8_t sig[512];        /* an RSA-2048 signature of msg, for verify */
	CK_ULONG sig_len;
	uint8_t ct_small[BR_SMALL_PT + BR_TAG_LEN], ct_large[BR_LARGE_PT + BR_TAG_LEN];
} p11;

/* Turns a return value into an hsm_result naming the call. */
hsm_result ck(CK_RV rv, const char *what) HSM_MUST_CHECK;
/* Loads the module, initializes it, finds the token, opens the set-up session, logs in. */
hsm_result open_token(p11 *p, void **lib) HSM_MUST_CHECK;
/* Generates the keys as session objects. */
hsm_result make_keys(p11 *p) HSM_MUST_CHECK;
/* The message, AAD, plaintext, a signature and the ciphertexts to decrypt. */
hsm_result make_fixtures(p11 *p) HSM_MUST_CHECK;

#endif
