/*
 * pkcs11_oom.c - the PKCS#11 module short of memory in its host process
 * (test_oom_pkcs11.py).  Run with oomfault.c preloaded and HSM_TEST_OOM_CTL
 * naming its control file, which this program drives itself: for each
 * scenario below it counts the allocations the module makes on this thread,
 * then runs the scenario again with one of them refused, for each of them
 * (or a spread of at most CAP), and then once more with none refused.
 *
 *   pkcs11_oom MODULE PIN EC_ID RSA_ID MAC_ID AES_ID RSA_ENC_ID ECDH_ID [CAP]
 *
 * The IDs name a SIGN_VERIFY P-256 key, a SIGN_VERIFY RSA-2048 key, an
 * HMAC_256 key, a SYMMETRIC_DEFAULT key, an ENCRYPT_DECRYPT RSA-2048 key and
 * a KEY_AGREEMENT P-256 key.
 * The application's view is what is checked:
 * - a refused run answers the scenario's usual code with the right output,
 *   or CKR_HOST_MEMORY; never another code (a signature called invalid, a
 *   ciphertext called corrupt, a key not found, an operation left active);
 * - a key generation that failed left no key the token shows (by its label);
 * - a run in which nothing was refused answers as usual;
 * - the same scenario, right after, with nothing refused, answers as usual
 *   (no session, login, operation, cache or connection was left broken).
 * Prints "scenario NAME allocs N tried T fired F usual U host_memory H" a
 * scenario and "bad NAME at K: WHAT" for each breach; exits 0 when the
 * program ran through (the test reads the lines), 1 on a set-up error.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

/* oomfault.c's control file. */
struct ctl {
	_Atomic long mode, gen, at, seen, fired;
	char threads[216];
};

#define THREAD_NAME "p11-oom"
#define MSG "GET /v1/accounts/42 HTTP/1.1\r\nHost: api.example\r\n\r\n"
#define MSG_LEN (sizeof(MSG) - 1)

static struct ctl *ctl;
static CK_FUNCTION_LIST_PTR f;
static const char *pin, *ids[6];
/* A DER X.509 certificate (HSM_TEST_OOM_CERT), stored in hsmd as "oom-cert" at the start. */
static CK_BYTE cert[4096];
static CK_ULONG cert_len;
enum { EC, RSA, MAC, AES, RSA_ENC, ECDH };

/* What the scenarios work with, found again after a login or an initialization. */
static struct {
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE ec_priv, ec_pub, rsa_priv, rsa_pub, mac, aes, enc_priv, enc_pub, ecdh;
} h;

/* Known answers, made before any refusal. */
static CK_BYTE ec_sig[64], ec_point[80], rsa_modulus[256], mac[32], digest[32], shared[32];
static CK_BYTE gcm_iv[12], gcm_ct[MSG_LEN + 16], oaep_ct[256];
static CK_ULONG ec_point_len;

/* What the last scenario's run produced, checked with nothing refused. */
static CK_BYTE out[512], out_iv[12];
static CK_ULONG out_len;
static CK_OBJECT_HANDLE made_pub, made_priv, made_secret, made_cert, doomed;

static void die(const char *what, CK_RV rv)
{
	fprintf(stderr, "%s: 0x%lx\n", what, (unsigned long)rv);
	exit(1);
}

/* ---- oomfault ------------------------------------------------------------ */

static void command(long mode, long at)
{
	atomic_store(&ctl->mode, 0);
	atomic_store(&ctl->seen, 0);
	atomic_store(&ctl->fired, 0);
	atomic_store(&ctl->at, at);
	atomic_fetch_add(&ctl->gen, 1);
	atomic_store(&ctl->mode, mode);
}

static void off(void)
{
	atomic_store(&ctl->mode, 0);
}

/* ---- set-up ------------------------------------------------------------- */

static CK_OBJECT_HANDLE find(CK_OBJECT_CLASS cls, const char *id)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, (void *)id, strlen(id)}};
	CK_OBJECT_HANDLE o = CK_INVALID_HANDLE;
	CK_ULONG n = 0;
	CK_RV rv;
	if ((rv = f->C_FindObjectsInit(h.s, t, 2)) != CKR_OK ||
	    (rv = f->C_FindObjects(h.s, &o, 1, &n)) != CKR_OK || n != 1 ||
	    (rv = f->C_FindObjectsFinal(h.s)) != CKR_OK)
		die("C_FindObjects", rv);
	return o;
}

static void find_all(void)
{
	h.ec_priv = find(CKO_PRIVATE_KEY, ids[EC]);
	h.ec_pub = find(CKO_PUBLIC_KEY, ids[EC]);
	h.rsa_priv = find(CKO_PRIVATE_KEY, ids[RSA]);
	h.rsa_pub = find(CKO_PUBLIC_KEY, ids[RSA]);
	h.mac = find(CKO_SECRET_KEY, ids[MAC]);
	h.aes = find(CKO_SECRET_KEY, ids[AES]);
	h.enc_priv = find(CKO_PRIVATE_KEY, ids[RSA_ENC]);
	h.enc_pub = find(CKO_PUBLIC_KEY, ids[RSA_ENC]);
	h.ecdh = find(CKO_PRIVATE_KEY, ids[ECDH]);
}

static void session_and_login(void)
{
	CK_RV rv;
	if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h.s)) !=
	    CKR_OK)
		die("C_OpenSession", rv);
	if ((rv = f->C_Login(h.s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin))) != CKR_OK)
		die("C_Login", rv);
	find_all();
}

/* ---- the scenarios -------------------------------------------------------- */

static CK_MECHANISM ecdsa = {CKM_ECDSA_SHA256, NULL, 0};
static CK_MECHANISM rsa_pkcs = {CKM_SHA256_RSA_PKCS, NULL, 0};
static CK_MECHANISM hmac = {CKM_SHA256_HMAC, NULL, 0};
static CK_MECHANISM sha256 = {CKM_SHA256, NULL, 0};
static CK_RSA_PKCS_OAEP_PARAMS oaep_params = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED,
                                              NULL, 0};
static CK_MECHANISM oaep = {CKM_RSA_PKCS_OAEP, &oaep_params, sizeof(oaep_params)};

static CK_RV sign(CK_MECHANISM *m, CK_OBJECT_HANDLE k)
{
	CK_RV rv = f->C_SignInit(h.s, m, k);
	out_len = sizeof(out);
	return rv != CKR_OK ? rv : f->C_Sign(h.s, (CK_BYTE_PTR)MSG, MSG_LEN, out, &out_len);
}

static CK_RV verify(CK_MECHANISM *m, CK_OBJECT_HANDLE k, CK_BYTE *sig, CK_ULONG n)
{
	CK_RV rv = f->C_VerifyInit(h.s, m, k);
	return rv != CKR_OK ? rv : f->C_Verify(h.s, (CK_BYTE_PTR)MSG, MSG_LEN, sig, n);
}

static CK_RV gcm(bool encrypt, CK_BYTE *iv, const CK_BYTE *in, CK_ULONG in_len)
{
	CK_GCM_PARAMS p = {iv, 12, 96, NULL, 0, 128};
	CK_MECHANISM m = {CKM_AES_GCM, &p, sizeof(p)};
	out_len = sizeof(out);
	CK_RV rv = encrypt ? f->C_EncryptInit(h.s, &m, h.aes) : f->C_DecryptInit(h.s, &m, h.aes);
	if (rv != CKR_OK)
		return rv;
	return encrypt ? f->C_Encrypt(h.s, (CK_BYTE_PTR)in, in_len, out, &out_len)
	               : f->C_Decrypt(h.s, (CK_BYTE_PTR)in, in_len, out, &out_len);
}

static CK_RV s_sign_ecdsa(void)
{
	return sign(&ecdsa, h.ec_priv);
}

static bool c_sign_ecdsa(void)
{
	return out_len == 64 && verify(&ecdsa, h.ec_pub, out, out_len) == CKR_OK;
}

static CK_RV s_sign_ecdsa_parts(void)
{
	CK_RV rv = f->C_SignInit(h.s, &ecdsa, h.ec_priv);
	if (rv == CKR_OK)
		rv = f->C_SignUpdate(h.s, (CK_BYTE_PTR)MSG, 10);
	if (rv == CKR_OK)
		rv = f->C_SignUpdate(h.s, (CK_BYTE_PTR)MSG + 10, MSG_LEN - 10);
	out_len = sizeof(out);
	return rv != CKR_OK ? rv : f->C_SignFinal(h.s, out, &out_len);
}

static CK_RV s_sign_rsa(void)
{
	return sign(&rsa_pkcs, h.rsa_priv);
}

static bool c_sign_rsa(void)
{
	return out_len == 256 && verify(&rsa_pkcs, h.rsa_pub, out, out_len) == CKR_OK;
}

static CK_RV s_verify_ecdsa(void)
{
	return verify(&ecdsa, h.ec_pub, ec_sig, sizeof(ec_sig));
}

static CK_RV s_verify_ecdsa_forged(void)
{
	CK_BYTE forged[64];
	memcpy(forged, ec_sig, sizeof(forged));
	forged[40] ^= 0x01;
	return verify(&ecdsa, h.ec_pub, forged, sizeof(forged));
}

static CK_RV s_hmac(void)
{
	return sign(&hmac, h.mac);
}

static bool c_hmac(void)
{
	return out_len == sizeof(mac) && memcmp(out, mac, sizeof(mac)) == 0;
}

static CK_RV s_hmac_verify(void)
{
	return verify(&hmac, h.mac, mac, sizeof(mac));
}

static CK_RV s_gcm_encrypt(void)
{
	memset(out_iv, 0, sizeof(out_iv)); /* 12 zero bytes: hsmd's IV, written back */
	return gcm(true, out_iv, (const CK_BYTE *)MSG, MSG_LEN);
}

static bool c_gcm_encrypt(void)
{
	CK_BYTE iv[12], ct[sizeof(out)];
	CK_ULONG n = out_len;
	if (n != MSG_LEN + 16)
		return false;
	memcpy(iv, out_iv, sizeof(iv));
	memcpy(ct, out, n);
	return gcm(false, iv, ct, n) == CKR_OK && out_len == MSG_LEN &&
	       memcmp(out, MSG, MSG_LEN) == 0;
}

static CK_RV s_gcm_decrypt(void)
{
	CK_BYTE iv[12];
	memcpy(iv, gcm_iv, sizeof(iv));
	return gcm(false, iv, gcm_ct, sizeof(gcm_ct));
}

static bool c_plaintext(void)
{
	return out_len == MSG_LEN && memcmp(out, MSG, MSG_LEN) == 0;
}

static CK_RV s_oaep_encrypt(void)
{
	CK_RV rv = f->C_EncryptInit(h.s, &oaep, h.enc_pub);
	out_len = sizeof(out);
	return rv != CKR_OK ? rv : f->C_Encrypt(h.s, (CK_BYTE_PTR)MSG, MSG_LEN, out, &out_len);
}

static bool c_oaep_encrypt(void)
{
	CK_BYTE ct[256];
	if (out_len != sizeof(ct))
		return false;
	memcpy(ct, out, sizeof(ct));
	CK_RV rv = f->C_DecryptInit(h.s, &oaep, h.enc_priv);
	out_len = sizeof(out);
	return rv == CKR_OK && f->C_Decrypt(h.s, ct, sizeof(ct), out, &out_len) == CKR_OK &&
	       c_plaintext();
}

static CK_RV s_oaep_decrypt(void)
{
	CK_RV rv = f->C_DecryptInit(h.s, &oaep, h.enc_priv);
	out_len = sizeof(out);
	return rv != CKR_OK ? rv : f->C_Decrypt(h.s, oaep_ct, sizeof(oaep_ct), out, &out_len);
}

static CK_RV s_digest(void)
{
	CK_RV rv = f->C_DigestInit(h.s, &sha256);
	out_len = sizeof(out);
	return rv != CKR_OK ? rv : f->C_Digest(h.s, (CK_BYTE_PTR)MSG, MSG_LEN, out, &out_len);
}

static bool c_digest(void)
{
	return out_len == sizeof(digest) && memcmp(out, digest, sizeof(digest)) == 0;
}

static CK_RV s_random(void)
{
	out_len = 64;
	return f->C_GenerateRandom(h.s, out, out_len);
}

static CK_RV s_attributes(void)
{
	CK_ATTRIBUTE t[] = {{CKA_EC_POINT, out, sizeof(out)}};
	CK_RV rv = f->C_GetAttributeValue(h.s, h.ec_pub, t, 1);
	out_len = t[0].ulValueLen;
	return rv;
}

static bool c_attributes(void)
{
	return out_len == ec_point_len && memcmp(out, ec_point, ec_point_len) == 0;
}

static CK_RV s_modulus(void)
{
	CK_ATTRIBUTE t[] = {{CKA_MODULUS, out, sizeof(out)}};
	CK_RV rv = f->C_GetAttributeValue(h.s, h.rsa_pub, t, 1);
	out_len = t[0].ulValueLen;
	return rv;
}

static bool c_modulus(void)
{
	return out_len == sizeof(rsa_modulus) && memcmp(out, rsa_modulus, sizeof(rsa_modulus)) == 0;
}

static CK_RV s_find(void)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_ID, (void *)ids[EC], strlen(ids[EC])}};
	CK_OBJECT_HANDLE o[2];
	CK_ULONG n = 0;
	CK_RV rv = f->C_FindObjectsInit(h.s, t, 2);
	if (rv != CKR_OK)
		return rv;
	if ((rv = f->C_FindObjects(h.s, o, 2, &n)) != CKR_OK) {
		out_len = 0;
		return rv;
	}
	out_len = n;
	made_priv = n >= 1 ? o[0] : CK_INVALID_HANDLE;
	return f->C_FindObjectsFinal(h.s);
}

static bool c_find(void)
{
	return out_len == 1 && made_priv == h.ec_priv;
}

/* A search a failed C_FindObjects left going on is the application's to end. */
static void e_find(void)
{
	(void)f->C_FindObjectsFinal(h.s);
}

static CK_RV s_token_info(void)
{
	CK_TOKEN_INFO info;
	return f->C_GetTokenInfo(0, &info);
}

static CK_RV s_session(void)
{
	CK_SESSION_HANDLE s2;
	CK_RV rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s2);
	return rv != CKR_OK ? rv : f->C_CloseSession(s2);
}

static CK_RV s_login(void)
{
	return f->C_Login(h.s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
}

/* Before each run of login: logged out (private objects' handles are gone). */
static void p_login(void)
{
	(void)f->C_Logout(h.s);
}

/* After each run of login: logged in, with the handles found again. */
static void e_login(void)
{
	CK_SESSION_INFO info;
	if (f->C_GetSessionInfo(h.s, &info) == CKR_OK && info.state != CKS_RW_USER_FUNCTIONS)
		(void)f->C_Login(h.s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	find_all();
}

static CK_RV s_initialize(void)
{
	return f->C_Initialize(NULL);
}

static void p_initialize(void)
{
	(void)f->C_Finalize(NULL);
}

static void e_initialize(void)
{
	CK_INFO info;
	if (f->C_GetInfo(&info) == CKR_CRYPTOKI_NOT_INITIALIZED)
		(void)f->C_Initialize(NULL);
	session_and_login();
}

/* Each pair is labelled anew, so that what a failed generation left can be looked for. */
static char pair_label[32];
static unsigned pair_n;

static CK_RV s_generate_pair(void)
{
	CK_BYTE params[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
	CK_BBOOL yes = CK_TRUE;
	int n = snprintf(pair_label, sizeof(pair_label), "oom-pair-%u", ++pair_n);
	CK_ATTRIBUTE pub[] = {{CKA_EC_PARAMS, params, sizeof(params)},
	                      {CKA_TOKEN, &yes, 1},
	                      {CKA_VERIFY, &yes, 1}},
	             priv[] = {{CKA_TOKEN, &yes, 1}, {CKA_PRIVATE, &yes, 1},
	                       {CKA_SENSITIVE, &yes, 1}, {CKA_SIGN, &yes, 1},
	                       {CKA_LABEL, pair_label, (CK_ULONG)n}};
	CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	made_pub = made_priv = CK_INVALID_HANDLE;
	return f->C_GenerateKeyPair(h.s, &m, pub, 3, priv, 5, &made_pub, &made_priv);
}

/* After a generation that failed: no key of class cls with its label to be found. */
static bool none_labelled(CK_OBJECT_CLASS cls, const char *label)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, (void *)label, strlen(label)}};
	CK_OBJECT_HANDLE o;
	CK_ULONG n = 1;
	CK_RV rv = f->C_FindObjectsInit(h.s, t, 2);
	if (rv == CKR_OK)
		rv = f->C_FindObjects(h.s, &o, 1, &n);
	(void)f->C_FindObjectsFinal(h.s);
	return rv == CKR_OK && n == 0;
}

static bool n_generate_pair(void)
{
	return none_labelled(CKO_PRIVATE_KEY, pair_label);
}

static bool c_generate_pair(void)
{
	CK_OBJECT_HANDLE priv = made_priv, pub = made_pub;
	return sign(&ecdsa, priv) == CKR_OK && verify(&ecdsa, pub, out, out_len) == CKR_OK;
}

static CK_RV s_gcm_parts(void)
{
	memset(out_iv, 0, sizeof(out_iv));
	CK_GCM_PARAMS p = {out_iv, 12, 96, NULL, 0, 128};
	CK_MECHANISM m = {CKM_AES_GCM, &p, sizeof(p)};
	CK_ULONG n = sizeof(out);
	CK_RV rv = f->C_EncryptInit(h.s, &m, h.aes);
	if (rv == CKR_OK)
		rv = f->C_EncryptUpdate(h.s, (CK_BYTE_PTR)MSG, 10, out, &n);
	if (rv == CKR_OK) {
		n = sizeof(out);
		rv = f->C_EncryptUpdate(h.s, (CK_BYTE_PTR)MSG + 10, MSG_LEN - 10, out, &n);
	}
	out_len = sizeof(out);
	return rv != CKR_OK ? rv : f->C_EncryptFinal(h.s, out, &out_len);
}

/* ECDH with the P-256 KEY_AGREEMENT key, the signing key's point as the peer's. */
static CK_RV s_derive(void)
{
	CK_ECDH1_DERIVE_PARAMS p = {CKD_NULL, 0, NULL, ec_point_len, ec_point};
	CK_MECHANISM m = {CKM_ECDH1_DERIVE, &p, sizeof(p)};
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
	CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_KEY_TYPE, &kt, sizeof(kt)},
	                    {CKA_TOKEN, &no, 1}, {CKA_SENSITIVE, &no, 1},
	                    {CKA_EXTRACTABLE, &yes, 1}};
	made_secret = CK_INVALID_HANDLE;
	return f->C_DeriveKey(h.s, &m, h.ecdh, t, 5, &made_secret);
}

static bool c_derive(void)
{
	CK_ATTRIBUTE t[] = {{CKA_VALUE, out, sizeof(out)}};
	return f->C_GetAttributeValue(h.s, made_secret, t, 1) == CKR_OK &&
	       t[0].ulValueLen == sizeof(shared) && memcmp(out, shared, sizeof(shared)) == 0;
}

static void e_derive(void)
{
	if (made_secret != CK_INVALID_HANDLE)
		(void)f->C_DestroyObject(h.s, made_secret);
}

static char secret_label[32];
static unsigned secret_n;

static CK_RV s_generate_secret(void)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ULONG len = 32;
	CK_BBOOL yes = CK_TRUE;
	int n = snprintf(secret_label, sizeof(secret_label), "oom-aes-%u", ++secret_n);
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_KEY_TYPE, &kt, sizeof(kt)},
	                    {CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_TOKEN, &yes, 1},
	                    {CKA_SENSITIVE, &yes, 1}, {CKA_ENCRYPT, &yes, 1},
	                    {CKA_DECRYPT, &yes, 1}, {CKA_LABEL, secret_label, (CK_ULONG)n}};
	CK_MECHANISM m = {CKM_AES_KEY_GEN, NULL, 0};
	made_secret = CK_INVALID_HANDLE;
	return f->C_GenerateKey(h.s, &m, t, 8, &made_secret);
}

/* The new key encrypts. */
static bool c_generate_secret(void)
{
	CK_OBJECT_HANDLE aes = h.aes;
	h.aes = made_secret;
	bool ok = s_gcm_encrypt() == CKR_OK && c_gcm_encrypt();
	h.aes = aes;
	return ok;
}

static bool n_generate_secret(void)
{
	return none_labelled(CKO_SECRET_KEY, secret_label);
}

/* Before each run of destroy: a new key to destroy (made with nothing refused). */
static void p_destroy(void)
{
	if (s_generate_secret() != CKR_OK)
		die("C_GenerateKey for C_DestroyObject", 0);
	doomed = made_secret;
}

static CK_RV s_destroy(void)
{
	return f->C_DestroyObject(h.s, doomed);
}

/* Destroyed, the object is gone; not destroyed, it is still there, to destroy again. */
static void e_destroy(void)
{
	CK_ATTRIBUTE t[] = {{CKA_LABEL, out, sizeof(out)}};
	if (f->C_GetAttributeValue(h.s, doomed, t, 1) == CKR_OK)
		(void)f->C_DestroyObject(h.s, doomed);
}

/* ---- certificates ---------------------------------------------------------- */

static CK_RV create_cert(CK_BBOOL token, CK_OBJECT_HANDLE *o)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE type = CKC_X_509;
	char label[] = "oom-cert";
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
	                    {CKA_CERTIFICATE_TYPE, &type, sizeof(type)},
	                    {CKA_TOKEN, &token, sizeof(token)},
	                    {CKA_LABEL, label, sizeof(label) - 1},
	                    {CKA_VALUE, cert, cert_len}};
	return f->C_CreateObject(h.s, t, 5, o);
}

/* The certificate objects labelled "oom-cert" (at most 4) into handles; their number. */
static CK_RV find_certs(CK_OBJECT_HANDLE handles[4], CK_ULONG *n)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	char label[] = "oom-cert";
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, label, sizeof(label) - 1}};
	*n = 0;
	CK_RV rv = f->C_FindObjectsInit(h.s, t, 2);
	if (rv != CKR_OK)
		return rv;
	rv = f->C_FindObjects(h.s, handles, 4, n);
	CK_RV end = f->C_FindObjectsFinal(h.s);
	return rv != CKR_OK ? rv : end;
}

/* A certificate object's DER and the first byte of its subject, as they should be. */
static bool cert_object_right(CK_OBJECT_HANDLE o)
{
	CK_BYTE value[sizeof(cert)], subject[1024];
	CK_ATTRIBUTE t[] = {{CKA_VALUE, value, sizeof(value)}, {CKA_SUBJECT, subject, sizeof(subject)}};
	return f->C_GetAttributeValue(h.s, o, t, 2) == CKR_OK && t[0].ulValueLen == cert_len &&
	       memcmp(value, cert, cert_len) == 0 && t[1].ulValueLen > 2 && subject[0] == 0x30;
}

/* A session certificate: the module parses it and keeps it for the session. */
static CK_RV s_cert_session(void)
{
	made_cert = CK_INVALID_HANDLE;
	return create_cert(CK_FALSE, &made_cert);
}

static bool c_cert_session(void)
{
	return cert_object_right(made_cert);
}

static void e_cert_session(void)
{
	if (made_cert != CK_INVALID_HANDLE)
		(void)f->C_DestroyObject(h.s, made_cert);
	made_cert = CK_INVALID_HANDLE;
}

/* A token certificate the module has not seen: read at login (a new module instance). */
static void p_cert_login(void)
{
	(void)f->C_Finalize(NULL);
	CK_RV rv;
	if ((rv = f->C_Initialize(NULL)) != CKR_OK)
		die("C_Initialize", rv);
	if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h.s)) !=
	    CKR_OK)
		die("C_OpenSession", rv);
}

/* Logged in, the token shows the certificate, whole: not left out, not half made. */
static bool c_cert_login(void)
{
	CK_OBJECT_HANDLE o[4];
	CK_ULONG n;
	return find_certs(o, &n) == CKR_OK && n == 1 && cert_object_right(o[0]);
}

struct scenario {
	const char *name;
	CK_RV (*run)(void);
	bool (*right)(void); /* the output of a run that answered CKR_OK; NULL: nothing to check */
	CK_RV usual;
	void (*before)(void), (*after)(void);
	bool (*left_nothing)(void); /* after a run that failed; NULL: nothing to check */
};

static const struct scenario scenarios[] = {
    {"sign_ecdsa", s_sign_ecdsa, c_sign_ecdsa, CKR_OK, NULL, NULL, NULL},
    {"sign_ecdsa_parts", s_sign_ecdsa_parts, c_sign_ecdsa, CKR_OK, NULL, NULL, NULL},
    {"sign_rsa", s_sign_rsa, c_sign_rsa, CKR_OK, NULL, NULL, NULL},
    {"verify_ecdsa", s_verify_ecdsa, NULL, CKR_OK, NULL, NULL, NULL},
    {"verify_ecdsa_forged", s_verify_ecdsa_forged, NULL, CKR_SIGNATURE_INVALID, NULL, NULL, NULL},
    {"hmac", s_hmac, c_hmac, CKR_OK, NULL, NULL, NULL},
    {"hmac_verify", s_hmac_verify, NULL, CKR_OK, NULL, NULL, NULL},
    {"gcm_encrypt", s_gcm_encrypt, c_gcm_encrypt, CKR_OK, NULL, NULL, NULL},
    {"gcm_decrypt", s_gcm_decrypt, c_plaintext, CKR_OK, NULL, NULL, NULL},
    {"oaep_encrypt", s_oaep_encrypt, c_oaep_encrypt, CKR_OK, NULL, NULL, NULL},
    {"oaep_decrypt", s_oaep_decrypt, c_plaintext, CKR_OK, NULL, NULL, NULL},
    {"digest", s_digest, c_digest, CKR_OK, NULL, NULL, NULL},
    {"random", s_random, NULL, CKR_OK, NULL, NULL, NULL},
    {"ec_point", s_attributes, c_attributes, CKR_OK, NULL, NULL, NULL},
    {"rsa_modulus", s_modulus, c_modulus, CKR_OK, NULL, NULL, NULL},
    {"find", s_find, c_find, CKR_OK, NULL, e_find, NULL},
    {"token_info", s_token_info, NULL, CKR_OK, NULL, NULL, NULL},
    {"session", s_session, NULL, CKR_OK, NULL, NULL, NULL},
    {"login", s_login, NULL, CKR_OK, p_login, e_login, NULL},
    {"initialize", s_initialize, NULL, CKR_OK, p_initialize, e_initialize, NULL},
    {"gcm_parts", s_gcm_parts, c_gcm_encrypt, CKR_OK, NULL, NULL, NULL},
    {"derive", s_derive, c_derive, CKR_OK, NULL, e_derive, NULL},
    {"generate_pair", s_generate_pair, c_generate_pair, CKR_OK, NULL, NULL, n_generate_pair},
    {"generate_secret", s_generate_secret, c_generate_secret, CKR_OK, NULL, NULL,
     n_generate_secret},
    {"destroy", s_destroy, NULL, CKR_OK, p_destroy, e_destroy, NULL},
    {"cert_session", s_cert_session, c_cert_session, CKR_OK, NULL, e_cert_session, NULL},
    {"cert_login", s_login, c_cert_login, CKR_OK, p_cert_login, e_login, NULL},
};

/* ---- the sweep ------------------------------------------------------------ */

static unsigned bad_lines;

static void bad(const struct scenario *sc, long at, const char *what, CK_RV rv)
{
	printf("bad %s at %ld: %s (0x%lx)\n", sc->name, at, what, (unsigned long)rv);
	fflush(stdout);
	bad_lines++;
}

/* One run; at 0 refuses nothing, -1 counts.  Returns what the run answered. */
static CK_RV one(const struct scenario *sc, long at, bool *fired, long *seen)
{
	if (sc->before != NULL)
		sc->before();
	command(at < 0 ? 1 : at == 0 ? 0 : 2, at < 0 ? 0 : at);
	CK_RV rv = sc->run();
	*seen = atomic_load(&ctl->seen);
	*fired = atomic_load(&ctl->fired) == 1;
	off();
	if (rv == CKR_OK && sc->right != NULL && !sc->right())
		bad(sc, at, "answered CKR_OK with a wrong output", rv);
	if (rv != CKR_OK && sc->left_nothing != NULL && !sc->left_nothing())
		bad(sc, at, "failed, and left what it made usable", rv);
	if (sc->after != NULL)
		sc->after();
	return rv;
}

static void sweep(const struct scenario *sc, long cap)
{
	bool fired;
	long seen, n;
	CK_RV rv;
	/* Twice unrefused first: the first use of a mechanism sets things up once. */
	for (int i = 0; i < 2; i++)
		if ((rv = one(sc, 0, &fired, &seen)) != sc->usual)
			bad(sc, 0, "the usual answer, before any refusal", rv);
	rv = one(sc, -1, &fired, &n);
	if (rv != sc->usual)
		bad(sc, -1, "the usual answer, counting", rv);
	long tried = 0, fired_n = 0, usual = 0, host_memory = 0;
	const char *only_at = getenv("PKCS11_OOM_AT"); /* one refusal, to look at it */
	long points = n < cap ? n : cap;
	for (long i = 0; i < points; i++) {
		/* Every allocation, or cap of them spread from the first to the last. */
		long at = points == n ? i + 1 : points == 1 ? 1 : 1 + i * (n - 1) / (points - 1);
		if (only_at != NULL && atol(only_at) != at)
			continue;
		tried++;
		rv = one(sc, at, &fired, &seen);
		fired_n += fired;
		if (rv == sc->usual)
			usual++;
		else if (rv == CKR_HOST_MEMORY && fired)
			host_memory++;
		else
			bad(sc, at, fired ? "refused: neither the usual answer nor CKR_HOST_MEMORY"
			                  : "nothing refused, yet not the usual answer",
			    rv);
		if ((rv = one(sc, 0, &fired, &seen)) != sc->usual)
			bad(sc, at, "the next run, unrefused, did not get the usual answer", rv);
	}
	printf("scenario %s allocs %ld tried %ld fired %ld usual %ld host_memory %ld\n", sc->name, n,
	       tried, fired_n, usual, host_memory);
	fflush(stdout);
}

/* ---- known answers -------------------------------------------------------- */

static void known_answers(void)
{
	CK_RV rv;
	if ((rv = sign(&ecdsa, h.ec_priv)) != CKR_OK || out_len != sizeof(ec_sig))
		die("ECDSA signature", rv);
	memcpy(ec_sig, out, sizeof(ec_sig));
	if ((rv = sign(&hmac, h.mac)) != CKR_OK || out_len != sizeof(mac))
		die("HMAC", rv);
	memcpy(mac, out, sizeof(mac));
	if ((rv = s_digest()) != CKR_OK || out_len != sizeof(digest))
		die("digest", rv);
	memcpy(digest, out, sizeof(digest));
	if ((rv = s_gcm_encrypt()) != CKR_OK || out_len != sizeof(gcm_ct))
		die("AES-GCM", rv);
	memcpy(gcm_iv, out_iv, sizeof(gcm_iv));
	memcpy(gcm_ct, out, sizeof(gcm_ct));
	if ((rv = s_oaep_encrypt()) != CKR_OK || out_len != sizeof(oaep_ct))
		die("RSA-OAEP", rv);
	memcpy(oaep_ct, out, sizeof(oaep_ct));
	if ((rv = s_attributes()) != CKR_OK || out_len > sizeof(ec_point))
		die("CKA_EC_POINT", rv);
	memcpy(ec_point, out, out_len);
	ec_point_len = out_len;
	if ((rv = s_derive()) != CKR_OK)
		die("C_DeriveKey", rv);
	CK_ATTRIBUTE value[] = {{CKA_VALUE, shared, sizeof(shared)}};
	if ((rv = f->C_GetAttributeValue(h.s, made_secret, value, 1)) != CKR_OK ||
	    value[0].ulValueLen != sizeof(shared))
		die("CKA_VALUE of a derived secret", rv);
	e_derive();
	if ((rv = s_modulus()) != CKR_OK || out_len != sizeof(rsa_modulus))
		die("CKA_MODULUS", rv);
	memcpy(rsa_modulus, out, sizeof(rsa_modulus));
}

int main(int argc, char **argv)
{
	if (argc != 9 && argc != 10)
		die("usage: pkcs11_oom MODULE PIN EC_ID RSA_ID MAC_ID AES_ID RSA_ENC_ID ECDH_ID [CAP]", 0);
	pin = argv[2];
	for (int i = 0; i < 6; i++)
		ids[i] = argv[3 + i];
	long cap = argc == 10 ? atol(argv[9]) : 100000;
	const char *cert_path = getenv("HSM_TEST_OOM_CERT");
	FILE *cf = cert_path != NULL ? fopen(cert_path, "rb") : NULL;
	if (cf == NULL)
		die("HSM_TEST_OOM_CERT", 0);
	cert_len = (CK_ULONG)fread(cert, 1, sizeof(cert), cf);
	fclose(cf);
	if (cert_len == 0 || cert_len == sizeof(cert))
		die("HSM_TEST_OOM_CERT: a DER certificate under 4 KiB", 0);
	const char *path = getenv("HSM_TEST_OOM_CTL");
	int fd = path != NULL ? open(path, O_RDWR | O_CLOEXEC) : -1;
	if (fd < 0)
		die("HSM_TEST_OOM_CTL", 0);
	ctl = mmap(NULL, sizeof(*ctl), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (ctl == MAP_FAILED)
		die("mmap", 0);
	memset(ctl->threads, 0, sizeof(ctl->threads));
	memcpy(ctl->threads, THREAD_NAME, sizeof(THREAD_NAME));
	(void)prctl(PR_SET_NAME, THREAD_NAME, 0, 0, 0);

	void *lib = dlopen(argv[1], RTLD_NOW);
	if (lib == NULL)
		die(dlerror(), 0);
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	CK_RV rv;
	if (get == NULL || (rv = get(&f)) != CKR_OK)
		die("C_GetFunctionList", 0);
	if ((rv = f->C_Initialize(NULL)) != CKR_OK)
		die("C_Initialize", rv);
	session_and_login();
	CK_OBJECT_HANDLE stored;
	if ((rv = create_cert(CK_TRUE, &stored)) != CKR_OK)
		die("C_CreateObject of a token certificate", rv);
	known_answers();
	const char *only = getenv("PKCS11_OOM_ONLY");
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (only == NULL || strcmp(only, scenarios[i].name) == 0)
			sweep(&scenarios[i], cap);
	(void)f->C_Logout(h.s);
	(void)f->C_Finalize(NULL);
	printf("done bad %u\n", bad_lines);
	return 0;
}
