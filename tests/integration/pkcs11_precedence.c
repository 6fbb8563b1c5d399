/*
 * pkcs11_precedence.c - which code wins when a call is wrong in two ways
 * (PKCS#11 v2.40 5.1.7): CKR_CRYPTOKI_NOT_INITIALIZED, then
 * CKR_SESSION_HANDLE_INVALID (5.1.2), before CKR_ARGUMENTS_BAD (5.1.6).
 * Each entry point that takes a session is called with NULL where it needs
 * a pointer: before C_Initialize, with a handle no session has, and with a
 * logged-in R/W session's.  The functions the token does not offer are
 * called the same way (their answer with a good handle says so); those that
 * take no session, before C_Initialize and after.
 *
 *   pkcs11_precedence MODULE PIN
 *
 * Prints "<function> 0x<before init> 0x<bad handle> 0x<good handle>" a
 * function ("-" for the handle of one that takes none); exits 1 on a set-up
 * error.
 */
#include "pkcs11_client.h"

static CK_FUNCTION_LIST_PTR f;

/* One call of each function, with session h and NULL pointers. */
static CK_RV call(int i, CK_SESSION_HANDLE h)
{
	CK_OBJECT_HANDLE obj = 1;
	switch (i) {
	case 0: return f->C_GetSessionInfo(h, NULL);
	case 1: return f->C_GetAttributeValue(h, obj, NULL, 1);
	case 2: return f->C_GetObjectSize(h, obj, NULL);
	case 3: return f->C_FindObjectsInit(h, NULL, 1);
	case 4: return f->C_FindObjects(h, NULL, 1, NULL);
	case 5: return f->C_DigestInit(h, NULL);
	case 6: return f->C_GenerateRandom(h, NULL, 16);
	case 7: return f->C_GenerateKeyPair(h, NULL, NULL, 0, NULL, 0, NULL, NULL);
	case 8: return f->C_GenerateKey(h, NULL, NULL, 0, NULL);
	case 9: return f->C_DeriveKey(h, NULL, obj, NULL, 0, NULL);
	case 10: return f->C_CreateObject(h, NULL, 1, NULL);
	case 11: return f->C_SignInit(h, NULL, obj);
	case 12: return f->C_EncryptInit(h, NULL, obj);
	/* The functions the token does not offer. */
	case 13: return f->C_InitPIN(h, NULL, 0);
	case 14: return f->C_SetPIN(h, NULL, 0, NULL, 0);
	case 15: return f->C_GetOperationState(h, NULL, NULL);
	case 16: return f->C_SetOperationState(h, NULL, 0, 0, 0);
	case 17: return f->C_CopyObject(h, obj, NULL, 0, NULL);
	case 18: return f->C_SignRecoverInit(h, NULL, obj);
	case 19: return f->C_SignRecover(h, NULL, 0, NULL, NULL);
	case 20: return f->C_VerifyRecoverInit(h, NULL, obj);
	case 21: return f->C_VerifyRecover(h, NULL, 0, NULL, NULL);
	case 22: return f->C_DigestEncryptUpdate(h, NULL, 0, NULL, NULL);
	case 23: return f->C_DecryptDigestUpdate(h, NULL, 0, NULL, NULL);
	case 24: return f->C_SignEncryptUpdate(h, NULL, 0, NULL, NULL);
	case 25: return f->C_DecryptVerifyUpdate(h, NULL, 0, NULL, NULL);
	case 26: return f->C_WrapKey(h, NULL, obj, obj, NULL, NULL);
	case 27: return f->C_UnwrapKey(h, NULL, obj, NULL, 0, NULL, 0, NULL);
	case 28: return f->C_GetFunctionStatus(h);
	case 29: return f->C_CancelFunction(h);
	}
	return CKR_GENERAL_ERROR;
}

static const char *const names[] = {
    "C_GetSessionInfo", "C_GetAttributeValue", "C_GetObjectSize", "C_FindObjectsInit",
    "C_FindObjects",    "C_DigestInit",        "C_GenerateRandom", "C_GenerateKeyPair",
    "C_GenerateKey",    "C_DeriveKey",         "C_CreateObject",   "C_SignInit",
    "C_EncryptInit",
    "C_InitPIN",        "C_SetPIN",            "C_GetOperationState", "C_SetOperationState",
    "C_CopyObject",     "C_SignRecoverInit",   "C_SignRecover",    "C_VerifyRecoverInit",
    "C_VerifyRecover",  "C_DigestEncryptUpdate", "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate", "C_DecryptVerifyUpdate", "C_WrapKey", "C_UnwrapKey",
    "C_GetFunctionStatus", "C_CancelFunction",
};
#define N_CALLS (sizeof(names) / sizeof(names[0]))

/* The functions the token does not offer that take no session. */
static CK_RV call_sessionless(int i)
{
	CK_SLOT_ID slot;
	switch (i) {
	case 0: return f->C_InitToken(0, NULL, 0, NULL);
	case 1: return f->C_WaitForSlotEvent(0, &slot, NULL); /* the blocking form */
	}
	return CKR_GENERAL_ERROR;
}

static const char *const sessionless[] = {"C_InitToken", "C_WaitForSlotEvent"};
#define N_SESSIONLESS (sizeof(sessionless) / sizeof(sessionless[0]))

int main(int argc, char **argv)
{
	if (argc != 3)
		fail("usage: pkcs11_precedence MODULE PIN", 0);
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (lib == NULL)
		fail(dlerror(), 0);
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (get == NULL || get(&f) != CKR_OK)
		fail("C_GetFunctionList", 0);
	CK_RV before[N_CALLS], before_sessionless[N_SESSIONLESS];
	for (size_t i = 0; i < N_CALLS; i++)
		before[i] = call((int)i, 1);
	for (size_t i = 0; i < N_SESSIONLESS; i++)
		before_sessionless[i] = call_sessionless((int)i);
	CK_RV rv = f->C_Initialize(NULL);
	if (rv != CKR_OK)
		fail("C_Initialize", rv);
	CK_SESSION_HANDLE s = logged_in(f, argv[2], CKF_RW_SESSION);
	for (size_t i = 0; i < N_CALLS; i++) {
		CK_RV bad = call((int)i, s ^ 0x7ffe00); /* its slot, another serial: no session's */
		CK_RV good = call((int)i, s);
		printf("%s 0x%lx 0x%lx 0x%lx\n", names[i], (unsigned long)before[i],
		       (unsigned long)bad, (unsigned long)good);
	}
	for (size_t i = 0; i < N_SESSIONLESS; i++)
		printf("%s 0x%lx - 0x%lx\n", sessionless[i], (unsigned long)before_sessionless[i],
		       (unsigned long)call_sessionless((int)i));
	f->C_Logout(s);
	f->C_CloseSession(s);
	f->C_Finalize(NULL);
	return 0;
}
