/*
 * result.h - the one error type used everywhere in hsmd.
 *
 * Every fallible function returns an hsm_result.  A failure carries an error
 * code (hsm_err) and, in thread-local storage, where it happened and a short
 * message that is safe to show a client.  Messages never contain key
 * material, plaintext, shares or secrets: build them only from identifiers,
 * lengths and names.
 *
 * One table (HSM_ERROR_TABLE) maps each code to its AWS KMS exception name,
 * HTTP status and PKCS#11 CKR_* value, so the API, hsmctl and the PKCS#11
 * module agree on what every failure means.
 *
 * Two families of macros, after s2n-tls' RESULT_GUARD/RESULT_ENSURE:
 *   HSM_GUARD(expr)             return the failure of expr
 *   HSM_ENSURE(cond, code, ...) return a new failure unless cond holds
 * and their single-exit forms (OpenSSH's "goto out" shape), which need a
 * local `hsm_result res` and an `out:` label:
 *   HSM_TRY(expr)
 *   HSM_CHECK(cond, code, ...)
 */
#ifndef HSM_RESULT_H
#define HSM_RESULT_H

#include <stdbool.h>
#include <stddef.h>

#define HSM_MUST_CHECK __attribute__((warn_unused_result))
#define HSM_PRINTF(f, a) __attribute__((format(printf, f, a)))

/*
 * X(code, KMS exception name, HTTP status, CKR value)
 * KMS names follow the AWS KMS API reference ("Errors" of each operation);
 * CKR values are from PKCS#11 v3.0 section 5.1 (pkcs11t.h).  A CKR value here
 * is what the PKCS#11 module answers where the function's list of return
 * values has it; elsewhere it answers the nearest one the list has
 * (src/pkcs11/retval.c): CKR_ACTION_PROHIBITED, for one, only C_CopyObject,
 * C_SetAttributeValue and C_DestroyObject may return.
 */
#define HSM_ERROR_TABLE(X)                                                           \
	X(HSM_OK, "", 200, 0x000UL /* CKR_OK */)                                          \
	X(HSM_ERR_VALIDATION, "ValidationException", 400, 0x007UL /* ARGUMENTS_BAD */)    \
	X(HSM_ERR_SERIALIZATION, "SerializationException", 400, 0x007UL)                  \
	X(HSM_ERR_UNKNOWN_OPERATION, "UnknownOperationException", 400, 0x054UL)           \
	X(HSM_ERR_NOT_FOUND, "NotFoundException", 400, 0x060UL /* KEY_HANDLE_INVALID */) \
	X(HSM_ERR_DISABLED, "DisabledException", 400, 0x068UL /* KEY_FUNCTION_NOT_PERMITTED */) \
	X(HSM_ERR_INVALID_STATE, "KMSInvalidStateException", 400, 0x068UL)               \
	X(HSM_ERR_INVALID_CIPHERTEXT, "InvalidCiphertextException", 400, 0x040UL /* ENCRYPTED_DATA_INVALID */) \
	X(HSM_ERR_INCORRECT_KEY, "IncorrectKeyException", 400, 0x040UL)                  \
	X(HSM_ERR_INVALID_KEY_USAGE, "InvalidKeyUsageException", 400, 0x068UL)           \
	X(HSM_ERR_INVALID_SIGNATURE, "KMSInvalidSignatureException", 400, 0x0C0UL /* SIGNATURE_INVALID */) \
	X(HSM_ERR_INVALID_MAC, "KMSInvalidMacException", 400, 0x0C0UL)                   \
	X(HSM_ERR_ALREADY_EXISTS, "AlreadyExistsException", 400, 0x0D1UL /* TEMPLATE_INCONSISTENT */) \
	X(HSM_ERR_INVALID_ALIAS_NAME, "InvalidAliasNameException", 400, 0x013UL /* ATTRIBUTE_VALUE_INVALID */) \
	X(HSM_ERR_INVALID_ARN, "InvalidArnException", 400, 0x007UL)                      \
	X(HSM_ERR_INVALID_MARKER, "InvalidMarkerException", 400, 0x007UL)                \
	X(HSM_ERR_INVALID_GRANT_TOKEN, "InvalidGrantTokenException", 400, 0x007UL)      \
	X(HSM_ERR_CUSTOM_KEY_STORE_NOT_FOUND, "CustomKeyStoreNotFoundException", 400, 0x054UL) \
	X(HSM_ERR_INVALID_GRANT_ID, "InvalidGrantIdException", 400, 0x007UL)            \
	X(HSM_ERR_INVALID_IMPORT_TOKEN, "InvalidImportTokenException", 400, 0x007UL)    \
	X(HSM_ERR_EXPIRED_IMPORT_TOKEN, "ExpiredImportTokenException", 400, 0x007UL)    \
	X(HSM_ERR_INCORRECT_KEY_MATERIAL, "IncorrectKeyMaterialException", 400, 0x007UL) \
	X(HSM_ERR_LIMIT_EXCEEDED, "LimitExceededException", 400, 0x031UL /* DEVICE_MEMORY */) \
	X(HSM_ERR_TAG, "TagException", 400, 0x013UL)                                     \
	X(HSM_ERR_MALFORMED_POLICY, "MalformedPolicyDocumentException", 400, 0x013UL)   \
	X(HSM_ERR_UNSUPPORTED_OPERATION, "UnsupportedOperationException", 400, 0x054UL /* FUNCTION_NOT_SUPPORTED */) \
	X(HSM_ERR_CONFLICT, "ConflictException", 400, 0x006UL /* FUNCTION_FAILED */)    \
	X(HSM_ERR_DRY_RUN, "DryRunOperationException", 412, 0x006UL)                     \
	X(HSM_ERR_ACCESS_DENIED, "AccessDeniedException", 400, 0x01BUL /* ACTION_PROHIBITED */) \
	X(HSM_ERR_UNRECOGNIZED_CLIENT, "UnrecognizedClientException", 400, 0x0A0UL /* PIN_INCORRECT */) \
	X(HSM_ERR_BAD_SIGNATURE, "InvalidSignatureException", 400, 0x0A0UL)             \
	X(HSM_ERR_INCOMPLETE_SIGNATURE, "IncompleteSignatureException", 400, 0x0A0UL)   \
	X(HSM_ERR_MISSING_AUTH, "MissingAuthenticationTokenException", 400, 0x101UL /* USER_NOT_LOGGED_IN */) \
	X(HSM_ERR_PRINCIPAL_LOCKED, "AccessDeniedException", 403, 0x0A4UL /* PIN_LOCKED */) \
	X(HSM_ERR_THROTTLING, "ThrottlingException", 400, 0x030UL /* DEVICE_ERROR */)  \
	X(HSM_ERR_SEALED, "ServiceUnavailableException", 503, 0x030UL /* DEVICE_ERROR: token present */) \
	X(HSM_ERR_NODE_ERROR, "ServiceUnavailableException", 503, 0x030UL /* DEVICE_ERROR */) \
	X(HSM_ERR_AUDIT_UNAVAILABLE, "ServiceUnavailableException", 503, 0x030UL)        \
	X(HSM_ERR_DEPENDENCY_TIMEOUT, "DependencyTimeoutException", 503, 0x030UL)       \
	X(HSM_ERR_KEY_UNAVAILABLE, "KeyUnavailableException", 500, 0x030UL)             \
	X(HSM_ERR_QUORUM_REQUIRED, "QuorumRequiredException", 400, 0x01BUL)             \
	X(HSM_ERR_APPROVAL_REQUIRED, "ApprovalRequiredException", 400, 0x01BUL)         \
	X(HSM_ERR_SHARE_INVALID, "InvalidShareException", 400, 0x0A0UL)                  \
	X(HSM_ERR_SHARE_MISMATCH, "InvalidShareException", 400, 0x0A0UL)                 \
	X(HSM_ERR_SHARE_DUPLICATE, "InvalidShareException", 400, 0x0A0UL)               \
	X(HSM_ERR_WRONG_MASTER_KEY, "InvalidShareException", 400, 0x0A0UL)               \
	X(HSM_ERR_IO, "KMSInternalException", 500, 0x030UL)                              \
	X(HSM_ERR_STORE, "KMSInternalException", 500, 0x030UL)                           \
	X(HSM_ERR_CRYPTO, "KMSInternalException", 500, 0x006UL)                          \
	X(HSM_ERR_NOMEM, "KMSInternalException", 500, 0x002UL /* HOST_MEMORY */)        \
	X(HSM_ERR_INTERNAL, "KMSInternalException", 500, 0x005UL /* GENERAL_ERROR */)

typedef enum hsm_err {
#define HSM_X_ENUM(code, name, status, ckr) code,
	HSM_ERROR_TABLE(HSM_X_ENUM)
#undef HSM_X_ENUM
	HSM_ERR_COUNT_
} hsm_err;

typedef struct hsm_result {
	hsm_err err;
} hsm_result;

#define HSM_ERRMSG_MAX 512

/* Where and why the last failure of this thread happened. */
typedef struct hsm_error_info {
	hsm_err err;
	const char *file;
	int line;
	char message[HSM_ERRMSG_MAX];
} hsm_error_info;

static inline bool hsm_ok(hsm_result r) { return r.err == HSM_OK; }
static inline bool hsm_failed(hsm_result r) { return r.err != HSM_OK; }

#define HSM_SUCCESS ((hsm_result){HSM_OK})

/*
 * Records a failure in this thread's error info and returns it.  fmt may be
 * NULL, in which case the message is the KMS exception name.
 */
hsm_result hsm_fail_at(hsm_err err, const char *file, int line, const char *fmt, ...)
    HSM_PRINTF(4, 5);

#define HSM_FAIL(err, ...) hsm_fail_at((err), __FILE__, __LINE__, __VA_ARGS__)

#define HSM_GUARD(expr)                          \
	do {                                         \
		hsm_result hsm_guard_r__ = (expr);       \
		if (hsm_guard_r__.err != HSM_OK)         \
			return hsm_guard_r__;                \
	} while (0)

#define HSM_ENSURE(cond, err, ...)               \
	do {                                         \
		if (!(cond))                             \
			return HSM_FAIL((err), __VA_ARGS__); \
	} while (0)

#define HSM_TRY(expr)                 \
	do {                              \
		res = (expr);                 \
		if (res.err != HSM_OK)        \
			goto out;                 \
	} while (0)

#define HSM_CHECK(cond, err, ...)                 \
	do {                                          \
		if (!(cond)) {                            \
			res = HSM_FAIL((err), __VA_ARGS__);   \
			goto out;                             \
		}                                         \
	} while (0)

/* Aborts with a message: for programmer errors only (broken contracts). */
#define HSM_ASSERT(cond)                                          \
	do {                                                          \
		if (!(cond))                                              \
			hsm_abort_at(__FILE__, __LINE__, #cond);              \
	} while (0)

_Noreturn void hsm_abort_at(const char *file, int line, const char *what);

/* This thread's last failure; valid until the next failure on this thread. */
const hsm_error_info *hsm_last_error(void);
const char *hsm_last_message(void);
/*
 * Makes saved (a copy of hsm_last_error() taken earlier) this thread's last
 * failure again: after a lookup made only for a record failed, so that the
 * request's own failure is what its answer says.
 */
void hsm_error_restore(const hsm_error_info *saved);

/* Table lookups. */
const char *hsm_err_kms_name(hsm_err err);
int hsm_err_http_status(hsm_err err);
unsigned long hsm_err_ckr(hsm_err err);
/*
 * The first error whose KMS exception name is `name` (a client reading an
 * answer's __type), HSM_ERR_INTERNAL for a name not in the table.
 */
hsm_err hsm_err_from_kms_name(const char *name);
/* The enum's own name, e.g. "HSM_ERR_NOT_FOUND", for logs and tests. */
const char *hsm_err_code_name(hsm_err err);
/*
 * After a failed call of a library that allocates (OpenSSL, the socket
 * layer), made with errno set to 0 before it: HSM_ERR_NOMEM when an
 * allocation in it failed (malloc's ENOMEM), otherwise `otherwise`.
 */
hsm_err hsm_nomem_or(hsm_err otherwise);

#endif
