/*
 * pkcs11_retval_test.c - the return values each PKCS#11 function may give
 * (src/pkcs11/retval.c, built into this test), which every entry point of
 * the module answers through (p11.h: LEAVE):
 *
 *   - every one of v2.40's 68 functions has its list, with the codes every
 *     function may give (5.1.1-5.1.3);
 *   - CKR_ACTION_PROHIBITED only from C_CopyObject, C_SetAttributeValue and
 *     C_DestroyObject (5.1.6); elsewhere a refusal by hsmd reads as
 *     CKR_KEY_FUNCTION_NOT_PERMITTED at an operation's *Init, and as
 *     CKR_FUNCTION_FAILED where the list has no code saying why (C_Sign,
 *     C_Decrypt, C_DeriveKey, C_CreateObject, ...);
 *   - a code the function may give is kept; whatever it is given, the answer
 *     is one of the function's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <string.h>

#include "pkcs11/retval.h"

/* PKCS#11 v2.40's functions, section 5.4 to 5.15. */
static const char *const functions[] = {
    "C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList",
    "C_GetSlotInfo", "C_GetTokenInfo", "C_WaitForSlotEvent", "C_GetMechanismList",
    "C_GetMechanismInfo", "C_InitToken", "C_InitPIN", "C_SetPIN", "C_OpenSession",
    "C_CloseSession", "C_CloseAllSessions", "C_GetSessionInfo", "C_GetOperationState",
    "C_SetOperationState", "C_Login", "C_Logout", "C_CreateObject", "C_CopyObject",
    "C_DestroyObject", "C_GetObjectSize", "C_GetAttributeValue", "C_SetAttributeValue",
    "C_FindObjectsInit", "C_FindObjects", "C_FindObjectsFinal", "C_EncryptInit", "C_Encrypt",
    "C_EncryptUpdate", "C_EncryptFinal", "C_DecryptInit", "C_Decrypt", "C_DecryptUpdate",
    "C_DecryptFinal", "C_DigestInit", "C_Digest", "C_DigestUpdate", "C_DigestKey",
    "C_DigestFinal", "C_SignInit", "C_Sign", "C_SignUpdate", "C_SignFinal", "C_SignRecoverInit",
    "C_SignRecover", "C_VerifyInit", "C_Verify", "C_VerifyUpdate", "C_VerifyFinal",
    "C_VerifyRecoverInit", "C_VerifyRecover", "C_DigestEncryptUpdate", "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate", "C_DecryptVerifyUpdate", "C_GenerateKey", "C_GenerateKeyPair",
    "C_WrapKey", "C_UnwrapKey", "C_DeriveKey", "C_SeedRandom", "C_GenerateRandom",
    "C_GetFunctionStatus", "C_CancelFunction",
};
#define N_FUNCTIONS (sizeof(functions) / sizeof(functions[0]))

/* Codes the module gives: its own, and those result.h maps hsmd's errors to. */
static const CK_RV codes[] = {
    CKR_OK, CKR_HOST_MEMORY, CKR_GENERAL_ERROR, CKR_FUNCTION_FAILED, CKR_ARGUMENTS_BAD,
    CKR_ACTION_PROHIBITED, CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_KEY_HANDLE_INVALID,
    CKR_OBJECT_HANDLE_INVALID, CKR_KEY_TYPE_INCONSISTENT, CKR_ENCRYPTED_DATA_INVALID,
    CKR_SIGNATURE_INVALID, CKR_TEMPLATE_INCONSISTENT, CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_FUNCTION_NOT_SUPPORTED, CKR_DEVICE_MEMORY, CKR_DEVICE_ERROR, CKR_PIN_INCORRECT,
    CKR_PIN_LOCKED, CKR_USER_NOT_LOGGED_IN, CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
    CKR_SESSION_READ_ONLY, CKR_DATA_LEN_RANGE, CKR_BUFFER_TOO_SMALL,
    CKR_OPERATION_NOT_INITIALIZED, CKR_MECHANISM_INVALID,
};
#define N_CODES (sizeof(codes) / sizeof(codes[0]))

static void every_function_has_its_list(void **state)
{
	(void)state;
	static const CK_RV everywhere[] = {CKR_OK,          CKR_GENERAL_ERROR, CKR_HOST_MEMORY,
	                                   CKR_FUNCTION_FAILED, CKR_DEVICE_ERROR, CKR_DEVICE_MEMORY,
	                                   CKR_DEVICE_REMOVED, CKR_SESSION_HANDLE_INVALID,
	                                   CKR_SESSION_CLOSED, CKR_TOKEN_NOT_PRESENT};
	for (size_t i = 0; i < N_FUNCTIONS; i++)
		for (size_t j = 0; j < sizeof(everywhere) / sizeof(everywhere[0]); j++)
			assert_true(p11_rv_allowed(functions[i], everywhere[j]));
	assert_false(p11_rv_allowed("C_NoSuchFunction", CKR_OK));
	assert_false(p11_rv_allowed("C_GetInterface", CKR_OK)); /* v3.0's: not held to a list */
}

static void action_prohibited_only_where_the_specification_allows_it(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_FUNCTIONS; i++) {
		bool may = strcmp(functions[i], "C_CopyObject") == 0 ||
		           strcmp(functions[i], "C_SetAttributeValue") == 0 ||
		           strcmp(functions[i], "C_DestroyObject") == 0;
		assert_int_equal(p11_rv_allowed(functions[i], CKR_ACTION_PROHIBITED), may);
		assert_int_equal(p11_rv_conform(functions[i], CKR_ACTION_PROHIBITED) ==
		                     CKR_ACTION_PROHIBITED,
		                 may);
	}
}

static void a_refusal_reads_as_each_functions_own_code(void **state)
{
	(void)state;
	static const char *const inits[] = {"C_SignInit", "C_VerifyInit", "C_EncryptInit",
	                                    "C_DecryptInit"};
	for (size_t i = 0; i < sizeof(inits) / sizeof(inits[0]); i++)
		assert_int_equal(p11_rv_conform(inits[i], CKR_ACTION_PROHIBITED),
		                 CKR_KEY_FUNCTION_NOT_PERMITTED);
	static const char *const later[] = {"C_Sign",       "C_SignFinal",    "C_Verify",
	                                    "C_VerifyFinal", "C_Encrypt",     "C_EncryptFinal",
	                                    "C_Decrypt",     "C_DecryptFinal", "C_DeriveKey",
	                                    "C_CreateObject", "C_GenerateKey", "C_GenerateKeyPair",
	                                    "C_GenerateRandom"};
	for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++) {
		assert_int_equal(p11_rv_conform(later[i], CKR_ACTION_PROHIBITED), CKR_FUNCTION_FAILED);
		/* hsmd's DisabledException, KMSInvalidStateException, InvalidKeyUsageException */
		assert_int_equal(p11_rv_conform(later[i], CKR_KEY_FUNCTION_NOT_PERMITTED),
		                 CKR_FUNCTION_FAILED);
	}
	/* A key hsmd no longer has: the object's handle where the list has that. */
	assert_int_equal(p11_rv_conform("C_GetAttributeValue", CKR_KEY_HANDLE_INVALID),
	                 CKR_OBJECT_HANDLE_INVALID);
	assert_int_equal(p11_rv_conform("C_DestroyObject", CKR_KEY_HANDLE_INVALID),
	                 CKR_OBJECT_HANDLE_INVALID);
	assert_int_equal(p11_rv_conform("C_Sign", CKR_KEY_HANDLE_INVALID), CKR_FUNCTION_FAILED);
}

static void codes_a_function_may_give_are_kept(void **state)
{
	(void)state;
	assert_int_equal(p11_rv_conform("C_SignInit", CKR_KEY_HANDLE_INVALID),
	                 CKR_KEY_HANDLE_INVALID);
	assert_int_equal(p11_rv_conform("C_Verify", CKR_SIGNATURE_INVALID), CKR_SIGNATURE_INVALID);
	assert_int_equal(p11_rv_conform("C_Decrypt", CKR_ENCRYPTED_DATA_INVALID),
	                 CKR_ENCRYPTED_DATA_INVALID);
	assert_int_equal(p11_rv_conform("C_GenerateKey", CKR_TEMPLATE_INCONSISTENT),
	                 CKR_TEMPLATE_INCONSISTENT);
	assert_int_equal(p11_rv_conform("C_Login", CKR_PIN_INCORRECT), CKR_PIN_INCORRECT);
	assert_int_equal(p11_rv_conform("C_Sign", CKR_USER_NOT_LOGGED_IN), CKR_USER_NOT_LOGGED_IN);
	/* The stubs of what the token does not offer (5.1.6), and nothing else. */
	assert_int_equal(p11_rv_conform("C_WrapKey", CKR_FUNCTION_NOT_SUPPORTED),
	                 CKR_FUNCTION_NOT_SUPPORTED);
	assert_int_equal(p11_rv_conform("C_Encrypt", CKR_FUNCTION_NOT_SUPPORTED),
	                 CKR_FUNCTION_FAILED);
	/* Not a code of C_Verify's (5.11): a public-key operation needs no login there. */
	assert_int_equal(p11_rv_conform("C_Verify", CKR_USER_NOT_LOGGED_IN), CKR_FUNCTION_FAILED);
}

static void every_answer_is_one_the_function_may_give(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_FUNCTIONS; i++)
		for (size_t j = 0; j < N_CODES; j++) {
			CK_RV rv = p11_rv_conform(functions[i], codes[j]);
			assert_true(p11_rv_allowed(functions[i], rv));
			if (p11_rv_allowed(functions[i], codes[j]))
				assert_int_equal(rv, codes[j]);
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(every_function_has_its_list),
	    cmocka_unit_test(action_prohibited_only_where_the_specification_allows_it),
	    cmocka_unit_test(a_refusal_reads_as_each_functions_own_code),
	    cmocka_unit_test(codes_a_function_may_give_are_kept),
	    cmocka_unit_test(every_answer_is_one_the_function_may_give),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
