/*
 * pkcs11_interface_test.c - PKCS#11 v3.0's C_GetInterfaceList and
 * C_GetInterface (src/pkcs11/interface.c), found as consumers find them:
 * dlopen, then dlsym, before C_Initialize and after.  The module offers one
 * interface, "PKCS 11" at 2.40, whose function list is C_GetFunctionList's
 * and works; no 3.0 interface, no fork-safe one.
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

#include "pkcs11/p11_interface.h"

static void *lib;
static CK_C_GetInterfaceList get_list;
static CK_C_GetInterface get_one;
static CK_FUNCTION_LIST_PTR functions; /* C_GetFunctionList's */

static int load(void **state)
{
	(void)state;
	unsetenv("HSM_PKCS11_ENDPOINT");
	unsetenv("HSM_PKCS11_KEYS");
	unsetenv("HSM_PKCS11_TIMEOUT");
	const char *path = getenv("HSM_PKCS11_MODULE");
	lib = dlopen(path != NULL ? path : HSM_PKCS11_MODULE_PATH, RTLD_NOW);
	if (lib == NULL)
		return -1;
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	get_list = (CK_C_GetInterfaceList)dlsym(lib, "C_GetInterfaceList");
	get_one = (CK_C_GetInterface)dlsym(lib, "C_GetInterface");
	return get != NULL && get(&functions) == CKR_OK ? 0 : -1;
}

static int unload(void **state)
{
	(void)state;
	return dlclose(lib);
}

static void test_the_entry_points_are_exported(void **state)
{
	(void)state;
	assert_non_null(get_list);
	assert_non_null(get_one);
}

/* The one interface as the module describes it. */
static void assert_standard(const CK_INTERFACE *i)
{
	assert_string_equal((const char *)i->pInterfaceName, "PKCS 11");
	assert_ptr_equal(i->pFunctionList, functions);
	assert_int_equal(i->flags, 0); /* a child of fork() initializes the module again */
	const CK_FUNCTION_LIST *fl = i->pFunctionList;
	assert_int_equal(fl->version.major, 2);
	assert_int_equal(fl->version.minor, 40);
}

static void test_the_list(void **state)
{
	(void)state;
	assert_non_null(get_list);
	CK_INTERFACE list[3];
	CK_ULONG count = 12345; /* not read when only the number is asked */
	memset(list, 0xa5, sizeof(list));
	assert_int_equal(get_list(NULL, &count), CKR_OK);
	assert_int_equal(count, 1);
	count = 0;
	assert_int_equal(get_list(list, &count), CKR_BUFFER_TOO_SMALL);
	assert_int_equal(count, 1);
	for (size_t i = 0; i < sizeof(list); i++)
		assert_int_equal(((unsigned char *)list)[i], 0xa5); /* nothing written */
	count = 3;
	assert_int_equal(get_list(list, &count), CKR_OK);
	assert_int_equal(count, 1);
	assert_standard(&list[0]);
	assert_int_equal(((unsigned char *)&list[1])[0], 0xa5);
	assert_int_equal(get_list(list, NULL), CKR_ARGUMENTS_BAD);
	assert_int_equal(get_list(NULL, NULL), CKR_ARGUMENTS_BAD);
}

static void test_the_interfaces_asked_for(void **state)
{
	(void)state;
	assert_non_null(get_one);
	CK_UTF8CHAR standard[] = "PKCS 11";
	CK_VERSION v240 = {2, 40};
	CK_INTERFACE_PTR got = NULL;
	/* The default, by name, by name and version: the same interface. */
	assert_int_equal(get_one(NULL, NULL, &got, 0), CKR_OK);
	assert_standard(got);
	CK_INTERFACE_PTR first = got;
	got = NULL;
	assert_int_equal(get_one(standard, NULL, &got, 0), CKR_OK);
	assert_ptr_equal(got, first);
	got = NULL;
	assert_int_equal(get_one(standard, &v240, &got, 0), CKR_OK);
	assert_ptr_equal(got, first);
	got = NULL;
	assert_int_equal(get_one(NULL, &v240, &got, 0), CKR_OK);
	assert_ptr_equal(got, first);
	/* No 3.0 list, no other version, no other name, no fork-safe interface: refused, and
	 * *ppInterface left alone. */
	CK_VERSION others[] = {{3, 0}, {3, 1}, {2, 20}, {2, 41}, {0, 40}};
	CK_UTF8CHAR vendor[] = "Vendor hsmd", spaced[] = "PKCS 11 ", lower[] = "pkcs 11", empty[] = "";
	CK_UTF8CHAR_PTR names[] = {vendor, spaced, lower, empty};
	CK_INTERFACE sentinel;
	CK_INTERFACE_PTR untouched = &sentinel;
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		assert_int_equal(get_one(standard, &others[i], &untouched, 0), CKR_ARGUMENTS_BAD);
		assert_int_equal(get_one(NULL, &others[i], &untouched, 0), CKR_ARGUMENTS_BAD);
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		assert_int_equal(get_one(names[i], NULL, &untouched, 0), CKR_ARGUMENTS_BAD);
		assert_int_equal(get_one(names[i], &v240, &untouched, 0), CKR_ARGUMENTS_BAD);
	}
	assert_int_equal(get_one(NULL, NULL, &untouched, CKF_INTERFACE_FORK_SAFE), CKR_ARGUMENTS_BAD);
	assert_int_equal(get_one(standard, &v240, &untouched, CKF_INTERFACE_FORK_SAFE),
	                 CKR_ARGUMENTS_BAD);
	assert_ptr_equal(untouched, &sentinel);
	/* Nowhere to put it. */
	assert_int_equal(get_one(NULL, NULL, NULL, 0), CKR_ARGUMENTS_BAD);
	assert_int_equal(get_one(standard, &v240, NULL, 0), CKR_ARGUMENTS_BAD);
}

/* The interface's function list is the module: it initializes, answers, finalizes. */
static void test_the_interface_works(void **state)
{
	(void)state;
	assert_non_null(get_one);
	CK_INTERFACE_PTR got = NULL;
	assert_int_equal(get_one(NULL, NULL, &got, 0), CKR_OK);
	CK_FUNCTION_LIST_PTR f = got->pFunctionList;
	CK_INFO info;
	assert_int_equal(f->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
	assert_int_equal(f->C_Initialize(NULL), CKR_OK);
	/* Still there, unchanged, once the module is initialized. */
	CK_ULONG count = 0;
	assert_int_equal(get_list(NULL, &count), CKR_OK);
	assert_int_equal(count, 1);
	assert_int_equal(f->C_GetInfo(&info), CKR_OK);
	/* The library's Cryptoki version is the interface's. */
	assert_int_equal(info.cryptokiVersion.major, f->version.major);
	assert_int_equal(info.cryptokiVersion.minor, f->version.minor);
	CK_SLOT_ID slot = 99;
	count = 1;
	assert_int_equal(f->C_GetSlotList(CK_TRUE, &slot, &count), CKR_OK);
	assert_int_equal(slot, 0);
	CK_FUNCTION_LIST_PTR again = NULL;
	assert_int_equal(f->C_GetFunctionList(&again), CKR_OK);
	assert_ptr_equal(again, f);
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_the_entry_points_are_exported),
	    cmocka_unit_test(test_the_list),
	    cmocka_unit_test(test_the_interfaces_asked_for),
	    cmocka_unit_test(test_the_interface_works),
	};
	return cmocka_run_group_tests(tests, load, unload);
}
