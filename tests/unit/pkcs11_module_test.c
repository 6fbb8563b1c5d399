/*
 * pkcs11_module_test.c - the PKCS#11 module's slot and token entry points
 * (src/pkcs11/module.c), loaded as applications load it (dlopen, then
 * C_GetFunctionList) with no hsmd to reach: none of these calls needs one.
 *
 *   - every function taking a slot id answers CKR_SLOT_ID_INVALID for one that
 *     is not the module's slot 0, and changes nothing (PKCS#11 v2.40 5.5, 5.6);
 *   - C_WaitForSlotEvent, which takes no slot id: its pSlot and pReserved
 *     checked, a poll answering CKR_NO_EVENT (the slot never changes);
 *   - an HSM_PKCS11_KEYS no listing could use stops C_Initialize;
 *   - the function list calls the module's own functions, even where another
 *     library exporting C_* names came first (p11-kit's, loaded before the
 *     module and global, as in any application using GnuTLS).
 *
 * HSM_PKCS11_MODULE, when set, names another build of the module to test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static void *lib, *p11kit;
static CK_FUNCTION_LIST_PTR f;

static int load(void **state)
{
	(void)state;
	p11kit = dlopen("libp11-kit.so.0", RTLD_NOW | RTLD_GLOBAL);
	const char *path = getenv("HSM_PKCS11_MODULE");
	lib = dlopen(path != NULL ? path : HSM_PKCS11_MODULE_PATH, RTLD_NOW);
	if (lib == NULL)
		return -1;
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	return get != NULL && get(&f) == CKR_OK ? 0 : -1;
}

static int unload(void **state)
{
	(void)state;
	return dlclose(lib) | (p11kit != NULL ? dlclose(p11kit) : 0);
}

/* Each test starts with the module initialized from an environment of no settings. */
static int init(void **state)
{
	(void)state;
	static const char *const settings[] = {"HSM_PKCS11_ENDPOINT", "HSM_PKCS11_KEYS",
	                                       "HSM_PKCS11_TIMEOUT"};
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
		unsetenv(settings[i]);
	return f->C_Initialize(NULL) == CKR_OK ? 0 : -1;
}

static int finalize(void **state)
{
	(void)state;
	CK_RV rv = f->C_Finalize(NULL);
	return rv == CKR_OK || rv == CKR_CRYPTOKI_NOT_INITIALIZED ? 0 : -1;
}

static const CK_SLOT_ID bad_slots[] = {1, 2, 0x7fffffff, ~(CK_SLOT_ID)0};
#define N_BAD (sizeof(bad_slots) / sizeof(bad_slots[0]))

static void test_a_slot_that_is_not_the_modules_is_invalid(void **state)
{
	(void)state;
	CK_UTF8CHAR pin[] = "1234", label[32];
	memset(label, ' ', sizeof(label));
	for (size_t i = 0; i < N_BAD; i++) {
		CK_SLOT_ID bad = bad_slots[i];
		CK_SLOT_INFO si;
		CK_TOKEN_INFO ti;
		CK_MECHANISM_INFO mi;
		CK_ULONG count = 0;
		CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
		assert_int_equal(f->C_GetSlotInfo(bad, &si), CKR_SLOT_ID_INVALID);
		assert_int_equal(f->C_GetTokenInfo(bad, &ti), CKR_SLOT_ID_INVALID);
		assert_int_equal(f->C_GetMechanismList(bad, NULL, &count), CKR_SLOT_ID_INVALID);
		assert_int_equal(f->C_GetMechanismInfo(bad, CKM_SHA256, &mi), CKR_SLOT_ID_INVALID);
		assert_int_equal(f->C_InitToken(bad, pin, 4, label), CKR_SLOT_ID_INVALID);
		assert_int_equal(f->C_OpenSession(bad, CKF_SERIAL_SESSION, NULL, NULL, &h),
		                 CKR_SLOT_ID_INVALID);
		assert_int_equal(h, CK_INVALID_HANDLE);
		assert_int_equal(f->C_CloseAllSessions(bad), CKR_SLOT_ID_INVALID);
	}
	/* The module's slot: the token is not initialized through the module. */
	assert_int_equal(f->C_InitToken(0, pin, 4, label), CKR_FUNCTION_NOT_SUPPORTED);
}

static void test_a_refused_slot_changes_nothing(void **state)
{
	(void)state;
	CK_SESSION_HANDLE h;
	CK_SESSION_INFO info;
	assert_int_equal(f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_OK);
	for (size_t i = 0; i < N_BAD; i++)
		assert_int_equal(f->C_CloseAllSessions(bad_slots[i]), CKR_SLOT_ID_INVALID);
	assert_int_equal(f->C_GetSessionInfo(h, &info), CKR_OK);
	assert_int_equal(info.slotID, 0);
	assert_int_equal(f->C_CloseAllSessions(0), CKR_OK);
	assert_int_equal(f->C_GetSessionInfo(h, &info), CKR_SESSION_HANDLE_INVALID);
}

static void test_wait_for_slot_event(void **state)
{
	(void)state;
	CK_SLOT_ID slot = 77;
	int reserved;
	/* pSlot receives the slot: it is required; pReserved must be NULL (v2.40 5.5). */
	assert_int_equal(f->C_WaitForSlotEvent(CKF_DONT_BLOCK, NULL, NULL), CKR_ARGUMENTS_BAD);
	assert_int_equal(f->C_WaitForSlotEvent(0, NULL, NULL), CKR_ARGUMENTS_BAD);
	assert_int_equal(f->C_WaitForSlotEvent(CKF_DONT_BLOCK, &slot, &reserved), CKR_ARGUMENTS_BAD);
	/* The slot and its token never change: a poll finds no event, and writes no slot. */
	assert_int_equal(f->C_WaitForSlotEvent(CKF_DONT_BLOCK, &slot, NULL), CKR_NO_EVENT);
	assert_int_equal(slot, 77);
	/* Waiting for an event that never comes is not offered: the call returns at once. */
	assert_int_equal(f->C_WaitForSlotEvent(0, &slot, NULL), CKR_FUNCTION_NOT_SUPPORTED);
	assert_int_equal(slot, 77);
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	assert_int_equal(f->C_WaitForSlotEvent(CKF_DONT_BLOCK, &slot, NULL),
	                 CKR_CRYPTOKI_NOT_INITIALIZED);
}

static void test_an_unusable_keys_setting_stops_the_initialization(void **state)
{
	(void)state;
	CK_ULONG count = 0;
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	/* "caf\xe9": Latin-1, not UTF-8; JSON (hence hsmd) takes no such name. */
	setenv("HSM_PKCS11_KEYS", "alias/ok,alias/caf\xe9", 1);
	assert_int_equal(f->C_Initialize(NULL), CKR_GENERAL_ERROR);
	assert_int_equal(f->C_GetSlotList(CK_FALSE, NULL, &count), CKR_CRYPTOKI_NOT_INITIALIZED);
	setenv("HSM_PKCS11_KEYS", "alias/ok,alias/caf\xc3\xa9", 1);
	assert_int_equal(f->C_Initialize(NULL), CKR_OK);
	assert_int_equal(f->C_GetSlotList(CK_FALSE, NULL, &count), CKR_OK);
	assert_int_equal(count, 1);
}

/* The entry point of that name in the module itself (dlsym searches the module first). */
static void *own(const char *name)
{
	return dlsym(lib, name);
}

static void test_the_function_list_is_the_modules_own(void **state)
{
	(void)state;
	if (p11kit == NULL || dlsym(p11kit, "C_GetFunctionList") == NULL)
		skip(); /* nothing to take the name: the case does not arise */
	assert_ptr_equal((void *)f->C_GetFunctionList, own("C_GetFunctionList"));
	assert_ptr_equal((void *)f->C_Initialize, own("C_Initialize"));
	assert_ptr_equal((void *)f->C_GetSlotList, own("C_GetSlotList"));
	CK_FUNCTION_LIST_PTR again = NULL;
	assert_int_equal(f->C_GetFunctionList(&again), CKR_OK);
	assert_ptr_equal(again, f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_a_slot_that_is_not_the_modules_is_invalid, init,
	                                    finalize),
	    cmocka_unit_test_setup_teardown(test_a_refused_slot_changes_nothing, init, finalize),
	    cmocka_unit_test_setup_teardown(test_wait_for_slot_event, init, finalize),
	    cmocka_unit_test_setup_teardown(test_an_unusable_keys_setting_stops_the_initialization,
	                                    init, finalize),
	    cmocka_unit_test_setup_teardown(test_the_function_list_is_the_modules_own, init, finalize),
	};
	return cmocka_run_group_tests(tests, load, unload);
}
