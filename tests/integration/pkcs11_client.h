/*
 * pkcs11_client.h - what the C test clients of the PKCS#11 module share:
 * loading the module, a logged-in session, an AES key found by its CKA_ID.
 * Any failure prints what failed and exits 1.
 */
#ifndef PKCS11_CLIENT_H
#define PKCS11_CLIENT_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static inline void fail(const char *what, CK_RV rv)
{
	fprintf(stderr, "%s: 0x%lx\n", what, (unsigned long)rv);
	exit(1);
}

/* dlopen()s the module and initializes it. */
static inline CK_FUNCTION_LIST_PTR load_module(const char *path)
{
	void *lib = dlopen(path, RTLD_NOW);
	if (lib == NULL)
		fail(dlerror(), 0);
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	CK_FUNCTION_LIST_PTR f = NULL;
	CK_RV rv;
	if (get == NULL || (rv = get(&f)) != CKR_OK || (rv = f->C_Initialize(NULL)) != CKR_OK)
		fail("C_Initialize", 0);
	return f;
}

/* A session on slot 0 (flags besides CKF_SERIAL_SESSION), logged in with pin. */
static inline CK_SESSION_HANDLE logged_in(CK_FUNCTION_LIST_PTR f, const char *pin, CK_FLAGS flags)
{
	CK_SESSION_HANDLE s;
	CK_RV rv;
	if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION | flags, NULL, NULL, &s)) != CKR_OK)
		fail("C_OpenSession", rv);
	if ((rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin))) != CKR_OK)
		fail("C_Login", rv);
	return s;
}

/* The key of class cls whose CKA_ID is id. */
static inline CK_OBJECT_HANDLE key_of_class(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s,
                                            CK_OBJECT_CLASS cls, const char *id)
{
	CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, (void *)id, strlen(id)}};
	CK_OBJECT_HANDLE key;
	CK_ULONG n = 0;
	CK_RV rv;
	if ((rv = f->C_FindObjectsInit(s, find, 2)) != CKR_OK ||
	    (rv = f->C_FindObjects(s, &key, 1, &n)) != CKR_OK || n != 1 ||
	    (rv = f->C_FindObjectsFinal(s)) != CKR_OK)
		fail("C_FindObjects", rv);
	return key;
}

/* The secret key whose CKA_ID is id. */
static inline CK_OBJECT_HANDLE secret_key(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s,
                                          const char *id)
{
	return key_of_class(f, s, CKO_SECRET_KEY, id);
}

#endif
