/*
 * pkcs11_err_queue.c - the module runs inside applications that use
 * OpenSSL themselves (a web server, an OpenSSL provider or engine that
 * calls the module): each call must leave the calling thread's OpenSSL
 * error queue as it found it, neither emptied of the application's own
 * entries nor holding the module's.
 *
 *   pkcs11_err_queue MODULE PIN AES_KEY_ID
 *
 * Before every call the queue holds one entry of the program's own (with a
 * text); the call's line says what the queue holds after it:
 * "<call> 0x<rv> kept" (that one entry, unchanged), "lost" (gone) or
 * "changed" (other entries).  A session is kept only when login works (the
 * endpoint may be one the module must refuse to trust).  Exits 1 on a
 * set-up error.
 */
#include <stdbool.h>

#include <openssl/err.h>

#include "pkcs11_client.h"

#define OWN_REASON 42
#define OWN_TEXT "the application's own error 7"

static void push_own(void)
{
	ERR_clear_error();
	ERR_raise_data(ERR_LIB_USER, OWN_REASON, "%s", OWN_TEXT);
}

static const char *queue_state(void)
{
	const char *data = NULL;
	int flags = 0;
	unsigned long e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags);
	if (e == 0)
		return "lost";
	bool own = ERR_GET_LIB(e) == ERR_LIB_USER && ERR_GET_REASON(e) == OWN_REASON &&
	           (flags & ERR_TXT_STRING) != 0 && data != NULL && strcmp(data, OWN_TEXT) == 0;
	bool alone = ERR_peek_error() == 0;
	ERR_clear_error();
	return own && alone ? "kept" : "changed";
}

static CK_RV line(const char *call, CK_RV rv)
{
	printf("%s 0x%lx %s\n", call, (unsigned long)rv, queue_state());
	push_own();
	return rv;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		fail("usage: pkcs11_err_queue MODULE PIN AES_KEY_ID", 0);
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (lib == NULL)
		fail(dlerror(), 0);
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	CK_FUNCTION_LIST_PTR f = NULL;
	if (get == NULL || get(&f) != CKR_OK)
		fail("C_GetFunctionList", 0);
	push_own();
	line("initialize", f->C_Initialize(NULL));
	CK_SESSION_HANDLE s;
	if (line("open_session", f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		fail("C_OpenSession", 0);
	line("login_bad_pin", f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "AKIA:nope", 9));
	CK_RV login = line("login", f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)argv[2], strlen(argv[2])));
	CK_BYTE out[64];
	CK_ULONG n = sizeof(out);
	CK_MECHANISM sha = {CKM_SHA256, NULL, 0};
	line("digest_init", f->C_DigestInit(s, &sha));
	line("digest", f->C_Digest(s, (CK_BYTE_PTR) "abc", 3, out, &n));
	if (login == CKR_OK) {
		line("random", f->C_GenerateRandom(s, out, 32));
		CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
		CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)},
		                       {CKA_ID, argv[3], strlen(argv[3])}};
		CK_OBJECT_HANDLE key = 0;
		CK_ULONG found = 0;
		line("find_init", f->C_FindObjectsInit(s, find, 2));
		line("find", f->C_FindObjects(s, &key, 1, &found));
		line("find_final", f->C_FindObjectsFinal(s));
		CK_BYTE iv[12] = {0};
		CK_GCM_PARAMS gcm = {iv, sizeof(iv), 96, NULL, 0, 128};
		CK_MECHANISM m = {CKM_AES_GCM, &gcm, sizeof(gcm)};
		line("encrypt_init", f->C_EncryptInit(s, &m, key));
		n = sizeof(out);
		line("encrypt", f->C_Encrypt(s, (CK_BYTE_PTR) "AAAA", 4, out, &n));
		/* A ciphertext whose tag does not verify: refused by hsmd. */
		line("decrypt_init", f->C_DecryptInit(s, &m, key));
		out[0] ^= 1;
		CK_BYTE pt[64];
		CK_ULONG pn = sizeof(pt);
		line("decrypt_tampered", f->C_Decrypt(s, out, n, pt, &pn));
		line("logout", f->C_Logout(s));
	}
	line("close_session", f->C_CloseSession(s));
	line("finalize", f->C_Finalize(NULL));
	return 0;
}
