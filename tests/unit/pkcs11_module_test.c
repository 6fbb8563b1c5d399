/*
 * pkcs11_module_test.c - the PKCS#11 module's slot and token entry points
 * (src/pkcs11/module.c), loaded as applications load it (dlopen, then
 * C_GetFunctionList) with no hsmd to reach: none of these calls needs one.
 *
 *   - every function taking a slot id answers CKR_SLOT_ID_INVALID for one that
 *     is not the module's slot 0, and changes nothing (PKCS#11 v2.40 5.5, 5.6);
 *   - C_WaitForSlotEvent, which takes no slot id: its pSlot and pReserved
 *     checked, a poll answering CKR_NO_EVENT (the slot never changes);
 *   - an HSM_PKCS11_KEYS no listing could use stops C_Initialize, and so does
 *     every other setting that is too long to be taken whole or not a value
 *     the module can use, with a line on stderr naming it and no secret;
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	static const char *const settings[] = {
	    "HSM_PKCS11_ENDPOINT",    "HSM_PKCS11_CA_FILE", "HSM_PKCS11_CLIENT_CERT",
	    "HSM_PKCS11_CLIENT_KEY",  "HSM_PKCS11_REGION",  "AWS_REGION",
	    "AWS_DEFAULT_REGION",     "HSM_PKCS11_KEYS",    "HSM_PKCS11_TIMEOUT"};
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

/* C_Initialize, with what it writes to stderr in err (cap bytes, terminated). */
static CK_RV initialize_saying(char *err, size_t cap)
{
	fflush(stderr);
	FILE *said = tmpfile();
	assert_non_null(said);
	int saved = dup(2);
	assert_true(saved >= 0 && dup2(fileno(said), 2) == 2);
	CK_RV rv = f->C_Initialize(NULL);
	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	rewind(said);
	size_t n = fread(err, 1, cap - 1, said);
	err[n] = '\0';
	fclose(said);
	return rv;
}

/* C_Initialize fails with CKR_GENERAL_ERROR, saying "libhsm_pkcs11: <line>" and no more. */
static void refused(const char *line)
{
	char err[1024], want[512];
	CK_ULONG count = 0;
	assert_int_equal(initialize_saying(err, sizeof(err)), CKR_GENERAL_ERROR);
	snprintf(want, sizeof(want), "libhsm_pkcs11: %s\n", line);
	assert_string_equal(err, want);
	assert_int_equal(f->C_GetSlotList(CK_FALSE, NULL, &count), CKR_CRYPTOKI_NOT_INITIALIZED);
}

/* n bytes: unit repeated, the last copy cut short to fit. */
static char *repeat(const char *unit, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	for (size_t i = 0; i < n; i++)
		s[i] = unit[i % strlen(unit)];
	s[n] = '\0';
	return s;
}

/* "/./././..." before the module's path, n bytes in all: a long path that names the module. */
static char *long_path(size_t n)
{
	size_t len = strlen(HSM_PKCS11_MODULE_PATH);
	assert_true(n > len + 2);
	char *p = repeat("/.", n - len);
	char *s = realloc(p, n + 1);
	assert_non_null(s);
	if ((n - len) % 2 == 1)
		s[n - len - 1] = '/'; /* "/./" then the path's own "/": "//" names the same */
	memcpy(s + n - len, HSM_PKCS11_MODULE_PATH, len + 1);
	return s;
}

/* The endpoints http://127.0.0.1:9 many times, then last; n bytes in all. */
static char *long_list(size_t n, const char *last)
{
	char *head = repeat("http://127.0.0.1:9,", n - strlen(last));
	assert_int_equal(strlen(head) % strlen("http://127.0.0.1:9,"), 0);
	char *s = realloc(head, n + 1);
	assert_non_null(s);
	strcat(s, last);
	return s;
}

/*
 * A setting longer than the module's buffer for it was cut short to fit,
 * and then named another host, file, region or key than the one set: the
 * list of endpoints below ends with 127.0.0.10, which its first 1023 bytes
 * make 127.0.0.1.  Each is refused now; where one of the largest length
 * that fits is a usable value, that one is taken.
 */
static void test_a_setting_too_long_stops_the_initialization(void **state)
{
	(void)state;
	struct {
		const char *name, *line;
		char *value, *fits; /* fits: NULL when no usable value is that long */
	} cases[] = {
	    {"HSM_PKCS11_ENDPOINT", "HSM_PKCS11_ENDPOINT is longer than 1023 bytes",
	     long_list(1024, "http://127.0.0.10"), long_list(1023, "http://127.0.0.9")},
	    {"HSM_PKCS11_CA_FILE", "HSM_PKCS11_CA_FILE is longer than 1023 bytes", long_path(1024),
	     long_path(1023)},
	    {"HSM_PKCS11_CLIENT_CERT", "HSM_PKCS11_CLIENT_CERT is longer than 1023 bytes",
	     long_path(1024), long_path(1023)},
	    {"HSM_PKCS11_CLIENT_KEY", "HSM_PKCS11_CLIENT_KEY is longer than 1023 bytes",
	     long_path(1024), long_path(1023)},
	    {"HSM_PKCS11_REGION", "HSM_PKCS11_REGION is longer than 63 bytes",
	     repeat("eu-west-1", 64), NULL},
	    {"AWS_REGION", "AWS_REGION is longer than 63 bytes", repeat("eu-west-1", 64), NULL},
	    {"HSM_PKCS11_KEYS", "HSM_PKCS11_KEYS is longer than 4095 bytes",
	     repeat("alias/k,", 4096), repeat("alias/k,", 4095)},
	    {"HSM_PKCS11_TIMEOUT", "HSM_PKCS11_TIMEOUT is longer than 15 bytes",
	     repeat("0000000000000030", 16), repeat("000000000000030", 15)},
	};
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	/* A client key is taken only beside a certificate. */
	setenv("HSM_PKCS11_CLIENT_CERT", HSM_PKCS11_MODULE_PATH, 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *was = getenv(cases[i].name);
		char *before = was != NULL ? strdup(was) : NULL;
		setenv(cases[i].name, cases[i].value, 1);
		refused(cases[i].line);
		if (cases[i].fits != NULL) {
			setenv(cases[i].name, cases[i].fits, 1);
			assert_int_equal(f->C_Initialize(NULL), CKR_OK);
			assert_int_equal(f->C_Finalize(NULL), CKR_OK);
		}
		if (before != NULL)
			setenv(cases[i].name, before, 1);
		else
			unsetenv(cases[i].name);
		free(before);
		free(cases[i].value);
		free(cases[i].fits);
	}
	unsetenv("HSM_PKCS11_CLIENT_CERT");
	assert_int_equal(f->C_Initialize(NULL), CKR_OK);
}

/*
 * Values of the right length the module still cannot use.  An endpoint may
 * carry a password: the line names the variable and the endpoint's place in
 * the list, never its text.
 */
#define AT_LINE                                                                            \
	"HSM_PKCS11_ENDPOINT has '@' in it, as a user name or password (user:password@host) "  \
	"has, which no request sends: requests are signed with an access key, given apart"

static void test_an_unusable_setting_stops_the_initialization(void **state)
{
	(void)state;
	const struct {
		const char *name, *value, *line;
	} cases[] = {
	    {"HSM_PKCS11_ENDPOINT", "hsm1:8443",
	     "HSM_PKCS11_ENDPOINT the endpoint must start with http:// or https://"},
	    {"HSM_PKCS11_ENDPOINT", "https://hsm1:8443,,https://hsm2:8443",
	     "HSM_PKCS11_ENDPOINT endpoint 2 of the list is empty"},
	    {"HSM_PKCS11_ENDPOINT", "https://hsm1:8443, https://hsm2:8443",
	     "HSM_PKCS11_ENDPOINT endpoint 2 of the list must start with http:// or https://"},
	    {"HSM_PKCS11_ENDPOINT", "https://hsm1:8443,https://admin:s3cret@hsm2:8443", AT_LINE},
	    /* A password holding a comma: its first part is no piece of its own to quote. */
	    {"HSM_PKCS11_ENDPOINT", "http://admin:s3cr3t,x@10.0.0.1", AT_LINE},
	    {"HSM_PKCS11_ENDPOINT", "https://hsm1:8443,http://admin:s3cr3t,x@10.0.0.1", AT_LINE},
	    /* Requests go to hsmd's own paths: a proxy's /kms, a ?token= would be dropped. */
	    {"HSM_PKCS11_ENDPOINT", "https://proxy.example/kms?token=s3cr3t#x",
	     "HSM_PKCS11_ENDPOINT the endpoint has a path, query or fragment after host:port, "
	     "which requests would not use (only a trailing '/' is taken): https://host:8443"},
	    {"HSM_PKCS11_ENDPOINT", "https://hsm1:8443,https://proxy.example/kms",
	     "HSM_PKCS11_ENDPOINT endpoint 2 of the list has a path, query or fragment after "
	     "host:port, which requests would not use (only a trailing '/' is taken): "
	     "https://host:8443"},
	    {"HSM_PKCS11_ENDPOINT", "https://hsm1:8443,https://hs*m2:8443",
	     "HSM_PKCS11_ENDPOINT endpoint 2 of the list has a bad host: a host name or IPv4 "
	     "address takes only letters, digits, '-', '.' and '_'"},
	    {"HSM_PKCS11_ENDPOINT", "https://[2001:db8::zz]:8443",
	     "HSM_PKCS11_ENDPOINT the endpoint has a bad IPv6 address in its brackets"},
	    {"HSM_PKCS11_ENDPOINT", "https://hsm1:+8443",
	     "HSM_PKCS11_ENDPOINT the endpoint has a bad port"},
	    {"HSM_PKCS11_ENDPOINT", "https://:8443",
	     "HSM_PKCS11_ENDPOINT the endpoint needs a host (https://host:8443)"},
	    {"HSM_PKCS11_ENDPOINT", "https://[2001:db8::1:8443",
	     "HSM_PKCS11_ENDPOINT the endpoint needs its IPv6 address in brackets, "
	     "https://[2001:db8::1]:8443"},
	    {"HSM_PKCS11_ENDPOINT", "https://hsm1:65536",
	     "HSM_PKCS11_ENDPOINT the endpoint has a bad port"},
	    {"HSM_PKCS11_ENDPOINT", "https://2001:db8::1:8443",
	     "HSM_PKCS11_ENDPOINT the endpoint has a bad port"},
	    {"HSM_PKCS11_CA_FILE", "/nonexistent/ca.pem",
	     "HSM_PKCS11_CA_FILE names no file this process can reach"},
	    {"HSM_PKCS11_CLIENT_CERT", "/", "HSM_PKCS11_CLIENT_CERT names something other than a file"},
	    {"HSM_PKCS11_CLIENT_KEY", HSM_PKCS11_MODULE_PATH,
	     "HSM_PKCS11_CLIENT_KEY is set without HSM_PKCS11_CLIENT_CERT"},
	    {"HSM_PKCS11_REGION", "EU-WEST-1",
	     "HSM_PKCS11_REGION is not a region name such as us-east-1 (at most 32 lowercase "
	     "letters, digits and '-')"},
	    {"AWS_DEFAULT_REGION", "eu west 1",
	     "AWS_DEFAULT_REGION is not a region name such as us-east-1 (at most 32 lowercase "
	     "letters, digits and '-')"},
	    {"HSM_PKCS11_TIMEOUT", "0", "HSM_PKCS11_TIMEOUT must be a number of seconds from 1 to 3600"},
	};
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		setenv(cases[i].name, cases[i].value, 1);
		refused(cases[i].line);
		unsetenv(cases[i].name);
	}
	/* The region's own setting comes first: a bad AWS_REGION beside it is not used. */
	setenv("AWS_REGION", "Not A Region", 1);
	setenv("HSM_PKCS11_REGION", "eu-west-1", 1);
	assert_int_equal(f->C_Initialize(NULL), CKR_OK);
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	unsetenv("AWS_REGION");
	unsetenv("HSM_PKCS11_REGION");
	/* Usable: a list with IPv6 in brackets and a trailing '/', files the process reads. */
	setenv("HSM_PKCS11_ENDPOINT", "https://[2001:db8::1]:8443,http://127.0.0.1/,https://h", 1);
	setenv("HSM_PKCS11_CA_FILE", HSM_PKCS11_MODULE_PATH, 1);
	setenv("HSM_PKCS11_CLIENT_CERT", HSM_PKCS11_MODULE_PATH, 1);
	setenv("HSM_PKCS11_CLIENT_KEY", HSM_PKCS11_MODULE_PATH, 1);
	setenv("AWS_DEFAULT_REGION", "ap-southeast-2", 1);
	assert_int_equal(f->C_Initialize(NULL), CKR_OK);
	static const char *const set[] = {"HSM_PKCS11_ENDPOINT", "HSM_PKCS11_CA_FILE",
	                                  "HSM_PKCS11_CLIENT_CERT", "HSM_PKCS11_CLIENT_KEY",
	                                  "AWS_DEFAULT_REGION"};
	for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++)
		unsetenv(set[i]);
}

/*
 * A file setting is checked as the process will open it: with its effective
 * ids, not its real ones (a program that changed ids, a setuid one).  Needs
 * root, to run with the real and effective user ids apart.
 */
static void test_a_file_setting_is_checked_with_the_effective_ids(void **state)
{
	(void)state;
	if (getuid() != 0 || geteuid() != 0)
		skip(); /* reported as skipped, not passed */
	char path[] = "/tmp/pkcs11_module_test.XXXXXX";
	int fd = mkstemp(path); /* 0600, root's */
	assert_true(fd >= 0);
	close(fd);
	const uid_t nobody = 65534;
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	setenv("HSM_PKCS11_CA_FILE", path, 1);
	/* Real nobody, effective root: the file opens, so it is taken. */
	assert_int_equal(setresuid(nobody, 0, 0), 0);
	char err[1024];
	CK_RV rv = initialize_saying(err, sizeof(err));
	assert_int_equal(setresuid(0, 0, 0), 0);
	assert_string_equal(err, "");
	assert_int_equal(rv, CKR_OK);
	assert_int_equal(f->C_Finalize(NULL), CKR_OK);
	/* Real root, effective nobody: it would not open, so it is refused. */
	assert_int_equal(setresuid(0, nobody, 0), 0);
	rv = initialize_saying(err, sizeof(err));
	assert_int_equal(setresuid(0, 0, 0), 0);
	assert_string_equal(err, "libhsm_pkcs11: HSM_PKCS11_CA_FILE names a file this process "
	                         "cannot read\n");
	assert_int_equal(rv, CKR_GENERAL_ERROR);
	unsetenv("HSM_PKCS11_CA_FILE");
	unlink(path);
	assert_int_equal(f->C_Initialize(NULL), CKR_OK);
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
	    cmocka_unit_test_setup_teardown(test_a_setting_too_long_stops_the_initialization, init,
	                                    finalize),
	    cmocka_unit_test_setup_teardown(test_an_unusable_setting_stops_the_initialization, init,
	                                    finalize),
	    cmocka_unit_test_setup_teardown(test_a_file_setting_is_checked_with_the_effective_ids,
	                                    init, finalize),
	    cmocka_unit_test_setup_teardown(test_the_function_list_is_the_modules_own, init, finalize),
	};
	return cmocka_run_group_tests(tests, load, unload);
}
