/*
 * softhsm_keys.c - see softhsm.h.
 */
#include "softhsm.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"

hsm_result ck(CK_RV rv, const char *what)
{
	HSM_ENSURE(rv == CKR_OK, HSM_ERR_CRYPTO, "%s: CKR 0x%lx", what, (unsigned long)rv);
	return HSM_SUCCESS;
}

static hsm_result find_slot(p11 *p)
{
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16;
	HSM_GUARD(ck(p->f->C_GetSlotList(CK_TRUE, slots, &n), "C_GetSlotList"));
	for (CK_ULONG i = 0; i < n; i++) {
		CK_TOKEN_INFO ti;
		if (p->f->C_GetTokenInfo(slots[i], &ti) == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED)) {
			p->slot = slots[i];
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_NOT_FOUND, "no initialized token (run softhsm2-util --init-token)");
}

hsm_result open_token(p11 *p, void **lib)
{
	const char *path = getenv("HSM_BENCH_SOFTHSM_MODULE");
	const char *pin = getenv("HSM_BENCH_SOFTHSM_PIN");
	CK_C_GetFunctionList get = NULL;
	*lib = dlopen(path != NULL ? path : DEFAULT_MODULE, RTLD_NOW | RTLD_LOCAL);
	HSM_ENSURE(*lib != NULL, HSM_ERR_IO, "dlopen: %s", dlerror());
	/* POSIX dlsym returns data pointers; the cast through void* is the documented idiom. */
	*(void **)&get = dlsym(*lib, "C_GetFunctionList");
	HSM_ENSURE(get != NULL, HSM_ERR_IO, "no C_GetFunctionList");
	HSM_GUARD(ck(get(&p->f), "C_GetFunctionList"));
	CK_C_INITIALIZE_ARGS init = {NULL, NULL, NULL, NULL, CKF_OS_LOCKING_OK, NULL};
	HSM_GUARD(ck(p->f->C_Initialize(&init), "C_Initialize"));
	HSM_GUARD(find_slot(p));
	HSM_GUARD(ck(p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
	                                 &p->setup),
	             "C_OpenSession"));
	if (pin == NULL)
		pin = "1234";
	HSM_GUARD(ck(p->f->C_Login(p->setup, CKU_USER, (CK_UTF8CHAR_PTR)(uintptr_t)pin, strlen(pin)),
	             "C_Login"));
	CK_MECHANISM_INFO mi;
	p->ecdsa_sha256 = p->f->C_GetMechanismInfo(p->slot, CKM_ECDSA_SHA256, &mi) == CKR_OK;
	return HSM_SUCCESS;
}

#define ATTR(t, v) {(t), (void *)(uintptr_t)&(v), sizeof(v)}

/*
 * A session key pair: RSA of `bits` when ec_params is NULL (public exponent
 * 65537), else EC or EdDSA on the curve ec_params names (DER OID).
 */
static hsm_result make_pair(p11 *p, CK_MECHANISM_TYPE m, CK_KEY_TYPE kt, const uint8_t *ec_params,
                            size_t ec_len, CK_ULONG bits, CK_OBJECT_HANDLE *priv,
                            CK_OBJECT_HANDLE *pub)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	static const uint8_t e[] = {1, 0, 1};
	CK_MECHANISM mech = {m, NULL, 0};
	CK_OBJECT_HANDLE pub_h = 0, priv_h = 0;
	CK_ATTRIBUTE pub_t[5] = {ATTR(CKA_TOKEN, no), ATTR(CKA_VERIFY, yes), ATTR(CKA_KEY_TYPE, kt)};
	CK_ULONG n_pub = 3;
	if (ec_params != NULL) {
		pub_t[n_pub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)(uintptr_t)ec_params, ec_len};
	} else {
		pub_t[n_pub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
		pub_t[n_pub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, (void *)(uintptr_t)e, sizeof(e)};
	}
	CK_ATTRIBUTE priv_t[] = {ATTR(CKA_TOKEN, no), ATTR(CKA_PRIVATE, yes), ATTR(CKA_SIGN, yes),
	                         ATTR(CKA_SENSITIVE, yes), ATTR(CKA_KEY_TYPE, kt)};
	HSM_GUARD(ck(p->f->C_GenerateKeyPair(p->setup, &mech, pub_t, n_pub, priv_t,
	                                     sizeof(priv_t) / sizeof(priv_t[0]), &pub_h, &priv_h),
	             "C_GenerateKeyPair"));
	*priv = priv_h;
	if (pub != NULL)
		*pub = pub_h;
	return HSM_SUCCESS;
}

static hsm_result make_secret(p11 *p, CK_MECHANISM_TYPE m, CK_KEY_TYPE kt, bool aes,
                              CK_OBJECT_HANDLE *out)
{
	static const CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	static const CK_ULONG len = 32;
	static const CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_MECHANISM mech = {m, NULL, 0};
	CK_ATTRIBUTE t[] = {ATTR(CKA_CLASS, cls),     ATTR(CKA_KEY_TYPE, kt),
	                    ATTR(CKA_TOKEN, no),      ATTR(CKA_SENSITIVE, yes),
	                    ATTR(CKA_VALUE_LEN, len), ATTR(aes ? CKA_ENCRYPT : CKA_SIGN, yes),
	                    ATTR(aes ? CKA_DECRYPT : CKA_VERIFY, yes)};
	return ck(p->f->C_GenerateKey(p->setup, &mech, t, sizeof(t) / sizeof(t[0]), out),
	          "C_GenerateKey");
}

hsm_result make_keys(p11 *p)
{
	/* DER OIDs: prime256v1 (RFC 5480) and id-Ed25519 (RFC 8410). */
	static const uint8_t p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
	static const uint8_t ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
	HSM_GUARD(make_pair(p, CKM_RSA_PKCS_KEY_PAIR_GEN, CKK_RSA, NULL, 0, 2048, &p->rsa2048,
	                    &p->rsa2048_pub));
	HSM_GUARD(make_pair(p, CKM_RSA_PKCS_KEY_PAIR_GEN, CKK_RSA, NULL, 0, 4096, &p->rsa4096, NULL));
	HSM_GUARD(make_pair(p, CKM_EC_KEY_PAIR_GEN, CKK_EC, p256, sizeof(p256), 0, &p->p256, NULL));
	HSM_GUARD(make_pair(p, CKM_EC_EDWARDS_KEY_PAIR_GEN, CKK_EC_EDWARDS, ed25519, sizeof(ed25519), 0,
	                    &p->ed25519, NULL));
	HSM_GUARD(make_secret(p, CKM_AES_KEY_GEN, CKK_AES, true, &p->aes));
	return make_secret(p, CKM_GENERIC_SECRET_KEY_GEN, CKK_GENERIC_SECRET, false, &p->hmac);
}

static hsm_result encrypt_fixture(p11 *p, size_t n, uint8_t *out, size_t cap)
{
	CK_GCM_PARAMS gcm = {p->iv, BR_IV_LEN, BR_IV_LEN * 8, p->aad, BR_AAD_LEN, BR_TAG_LEN * 8};
	CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	CK_ULONG len = cap;
	HSM_GUARD(ck(p->f->C_EncryptInit(p->setup, &mech, p->aes), "C_EncryptInit"));
	HSM_GUARD(ck(p->f->C_Encrypt(p->setup, p->pt, n, out, &len), "C_Encrypt"));
	HSM_ENSURE(len == n + BR_TAG_LEN, HSM_ERR_CRYPTO, "unexpected GCM output length");
	return HSM_SUCCESS;
}

hsm_result make_fixtures(p11 *p)
{
	HSM_ENSURE(RAND_bytes(p->msg, sizeof(p->msg)) == 1 && RAND_bytes(p->aad, sizeof(p->aad)) == 1 &&
	               RAND_bytes(p->pt, sizeof(p->pt)) == 1 && RAND_bytes(p->iv, sizeof(p->iv)) == 1,
	           HSM_ERR_CRYPTO, "RAND_bytes failed");
	CK_MECHANISM mech = {CKM_SHA256_RSA_PKCS, NULL, 0};
	p->sig_len = sizeof(p->sig);
	HSM_GUARD(ck(p->f->C_SignInit(p->setup, &mech, p->rsa2048), "C_SignInit"));
	HSM_GUARD(ck(p->f->C_Sign(p->setup, p->msg, BR_MSG_LEN, p->sig, &p->sig_len), "C_Sign"));
	HSM_GUARD(encrypt_fixture(p, BR_SMALL_PT, p->ct_small, sizeof(p->ct_small)));
	return encrypt_fixture(p, BR_LARGE_PT, p->ct_large, sizeof(p->ct_large));
}
