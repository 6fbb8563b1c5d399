/*
 * pkcs11_gcm_parts.c - AES-GCM parts given to C_EncryptUpdate (and
 * C_DecryptUpdate) end with the Final call: a one-part C_Encrypt (C_Decrypt)
 * after them must be refused and end the operation, not drop the parts.
 *
 *   pkcs11_gcm_parts MODULE PIN AES_KEY_ID
 *
 * Prints "encrypt 0x<rv>", "decrypt 0x<rv>" and, for the operation ended by
 * the refusal, "after 0x<rv>" (a Final call on it); exits 1 on a set-up error.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static void fail(const char *what, CK_RV rv)
{
	fprintf(stderr, "%s: 0x%lx\n", what, (unsigned long)rv);
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 4)
		fail("usage: pkcs11_gcm_parts MODULE PIN AES_KEY_ID", 0);
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (lib == NULL)
		fail(dlerror(), 0);
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	CK_FUNCTION_LIST_PTR f = NULL;
	CK_RV rv;
	if (get == NULL || (rv = get(&f)) != CKR_OK || (rv = f->C_Initialize(NULL)) != CKR_OK)
		fail("C_Initialize", 0);
	CK_SESSION_HANDLE s;
	if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		fail("C_OpenSession", rv);
	if ((rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)argv[2], strlen(argv[2]))) != CKR_OK)
		fail("C_Login", rv);
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, argv[3], strlen(argv[3])}};
	CK_OBJECT_HANDLE key;
	CK_ULONG n = 0;
	if ((rv = f->C_FindObjectsInit(s, find, 2)) != CKR_OK ||
	    (rv = f->C_FindObjects(s, &key, 1, &n)) != CKR_OK || n != 1 ||
	    (rv = f->C_FindObjectsFinal(s)) != CKR_OK)
		fail("C_FindObjects", rv);
	unsigned char iv[12] = {0}, out[64];
	CK_GCM_PARAMS gcm = {iv, sizeof(iv), 96, NULL, 0, 128};
	CK_MECHANISM m = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	CK_ULONG on = sizeof(out);
	if ((rv = f->C_EncryptInit(s, &m, key)) != CKR_OK ||
	    (rv = f->C_EncryptUpdate(s, (CK_BYTE_PTR) "AAAA", 4, out, &on)) != CKR_OK)
		fail("C_EncryptUpdate", rv);
	on = sizeof(out);
	printf("encrypt 0x%lx\n", (unsigned long)f->C_Encrypt(s, (CK_BYTE_PTR) "BBBB", 4, out, &on));
	on = sizeof(out);
	printf("after 0x%lx\n", (unsigned long)f->C_EncryptFinal(s, out, &on));
	if ((rv = f->C_DecryptInit(s, &m, key)) != CKR_OK ||
	    (rv = f->C_DecryptUpdate(s, (CK_BYTE_PTR) "AAAA", 4, out, &on)) != CKR_OK)
		fail("C_DecryptUpdate", rv);
	on = sizeof(out);
	printf("decrypt 0x%lx\n", (unsigned long)f->C_Decrypt(s, out, 20, out, &on));
	f->C_Logout(s);
	f->C_Finalize(NULL);
	return 0;
}
