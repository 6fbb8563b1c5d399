/*
 * pkcs11_race.c - sessions closed, logouts and C_Finalize while other threads
 * wait on hsmd inside the module (test_pkcs11.py compiles and runs it).
 *
 *   pkcs11_race MODULE PIN AES_KEY_ID EC_KEY_ID SECONDS
 *
 * Two threads encrypt 64 KiB with AES-GCM (hsmd's IV into a pIv of 12 zero
 * bytes) and two sign with ECDSA P-256, each in a session of its own, while
 * one thread logs out and in again in another session and one closes the
 * workers' sessions (C_CloseSession, now and then C_CloseAllSessions).  A
 * worker opens a new session and logs in again when its own went.  At the
 * end the main thread calls C_Finalize while the workers still run.
 *
 * Every return value must be one these races explain (a session closed,
 * the login ended, a key handle gone, the module finalized, a closed
 * session's handle in use again by another worker); a call that
 * failed must have written nothing (the pIv stays zero, the output buffer
 * untouched), and one that succeeded must have written everything.  Prints
 * "encrypted N signed N closed N" and exits 0; exits 1 on anything else.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define WORKERS 4
#define GCM_DATA 65536

static CK_FUNCTION_LIST_PTR f;
static const char *pin, *aes_id, *ec_id;
static atomic_int finalizing;
static _Atomic CK_SESSION_HANDLE worker_session[WORKERS];
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;
static long encrypted, signed_, closed;

static void fail(const char *what, CK_RV rv)
{
	fprintf(stderr, "unexpected: %s returned 0x%lx\n", what, (unsigned long)rv);
	exit(1);
}

/*
 * A key handle found in a session whose handle another worker's new session
 * took meanwhile may be that worker's key: the wrong kind for this one.
 */
static int wrong_key(CK_RV rv)
{
	return rv == CKR_KEY_FUNCTION_NOT_PERMITTED || rv == CKR_KEY_TYPE_INCONSISTENT;
}

/* A return value these races explain (CKR_CRYPTOKI_NOT_INITIALIZED once finalizing). */
static void expect(const char *what, CK_RV rv)
{
	switch (rv) {
	case CKR_OK:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_USER_ALREADY_LOGGED_IN:
	case CKR_OPERATION_NOT_INITIALIZED:
	case CKR_KEY_HANDLE_INVALID:
	/* A worker whose session was closed may use its handle once another worker's new
	 * session has it: their operations meet. */
	case CKR_OPERATION_ACTIVE: return;
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		if (finalizing)
			return;
		break;
	default: break;
	}
	fail(what, rv);
}

static void count(long *n)
{
	pthread_mutex_lock(&count_lock);
	(*n)++;
	pthread_mutex_unlock(&count_lock);
}

static CK_RV find_key(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *id,
                      CK_OBJECT_HANDLE *k)
{
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, (void *)id, strlen(id)}};
	CK_ULONG n = 0;
	CK_RV rv = f->C_FindObjectsInit(s, t, 2);
	expect("C_FindObjectsInit", rv);
	if (rv != CKR_OK)
		return rv;
	rv = f->C_FindObjects(s, k, 1, &n);
	expect("C_FindObjects", rv);
	CK_RV fin = f->C_FindObjectsFinal(s);
	expect("C_FindObjectsFinal", fin);
	if (rv == CKR_OK)
		rv = fin;
	if (rv == CKR_OK && n != 1) /* logged out meanwhile: nothing is found */
		rv = CKR_USER_NOT_LOGGED_IN;
	return rv;
}

static int all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

/* One AES-GCM encryption; CKR_OK only with the ciphertext and hsmd's IV written. */
static CK_RV encrypt_once(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k)
{
	static const unsigned char data[GCM_DATA];
	unsigned char *ct = malloc(GCM_DATA + 16);
	unsigned char iv[12] = {0};
	if (ct == NULL)
		exit(2);
	memset(ct, 0xa5, GCM_DATA + 16);
	CK_GCM_PARAMS gp = {iv, sizeof(iv), 96, NULL, 0, 128};
	CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof(gp)};
	CK_RV rv = f->C_EncryptInit(s, &m, k);
	if (!wrong_key(rv))
		expect("C_EncryptInit", rv);
	if (rv == CKR_OK) {
		CK_ULONG n = GCM_DATA + 16;
		rv = f->C_Encrypt(s, (CK_BYTE_PTR)data, GCM_DATA, ct, &n);
		expect("C_Encrypt", rv);
		if (rv == CKR_OK && (n != GCM_DATA + 16 || all_zero(iv, sizeof(iv))))
			fail("C_Encrypt wrote no IV or a short ciphertext, yet", rv);
		if (rv != CKR_OK && (!all_zero(iv, sizeof(iv)) || ct[0] != 0xa5 || ct[GCM_DATA] != 0xa5))
			fail("C_Encrypt wrote output, yet", rv);
	}
	free(ct);
	return rv;
}

static CK_RV sign_once(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k)
{
	CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
	unsigned char sig[64];
	memset(sig, 0xa5, sizeof(sig));
	CK_RV rv = f->C_SignInit(s, &m, k);
	if (!wrong_key(rv))
		expect("C_SignInit", rv);
	if (rv == CKR_OK) {
		CK_ULONG n = sizeof(sig);
		rv = f->C_Sign(s, (CK_BYTE_PTR) "a message", 9, sig, &n);
		expect("C_Sign", rv);
		if (rv == CKR_OK && n != sizeof(sig))
			fail("C_Sign's length", rv);
		if (rv != CKR_OK && (sig[0] != 0xa5 || sig[63] != 0xa5))
			fail("C_Sign wrote a signature, yet", rv);
	}
	return rv;
}

static void *worker(void *arg)
{
	int id = (int)(long)arg;
	int enc = id % 2 == 0;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_OBJECT_HANDLE k = CK_INVALID_HANDLE;
	for (;;) {
		CK_RV rv = CKR_OK;
		if (s == CK_INVALID_HANDLE) {
			rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s);
			expect("C_OpenSession", rv);
			if (rv != CKR_OK)
				s = CK_INVALID_HANDLE;
			worker_session[id] = s;
			k = CK_INVALID_HANDLE;
		}
		if (rv == CKR_OK && k == CK_INVALID_HANDLE)
			rv = find_key(s, enc ? CKO_SECRET_KEY : CKO_PRIVATE_KEY, enc ? aes_id : ec_id, &k);
		if (rv == CKR_OK)
			rv = enc ? encrypt_once(s, k) : sign_once(s, k);
		if (rv == CKR_OK)
			count(enc ? &encrypted : &signed_);
		if (rv == CKR_CRYPTOKI_NOT_INITIALIZED)
			return NULL; /* finalized */
		if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) {
			if (rv == CKR_SESSION_CLOSED)
				count(&closed);
			s = CK_INVALID_HANDLE;
		} else if (rv == CKR_KEY_HANDLE_INVALID || wrong_key(rv)) {
			k = CK_INVALID_HANDLE;
		} else if (rv == CKR_USER_NOT_LOGGED_IN) {
			rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
			expect("C_Login", rv);
			k = CK_INVALID_HANDLE;
		}
	}
}

static void pause_ms(long ms)
{
	struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&t, NULL);
}

/* Logs out and in again, in a session of its own. */
static void *logout_login(void *arg)
{
	(void)arg;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	while (!finalizing) {
		CK_RV rv = CKR_OK;
		if (s == CK_INVALID_HANDLE)
			rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s);
		expect("C_OpenSession", rv);
		if (rv != CKR_OK) {
			s = CK_INVALID_HANDLE;
			continue;
		}
		pause_ms(5 + rand() % 20);
		rv = f->C_Logout(s);
		expect("C_Logout", rv);
		if (rv == CKR_OK || rv == CKR_USER_NOT_LOGGED_IN) {
			pause_ms(rand() % 5);
			rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
			expect("C_Login", rv);
		}
		if (rv == CKR_SESSION_HANDLE_INVALID)
			s = CK_INVALID_HANDLE;
	}
	return NULL;
}

/* Closes a worker's session now and then, and every session less often. */
static void *closer(void *arg)
{
	(void)arg;
	for (int i = 0; !finalizing; i++) {
		pause_ms(10 + rand() % 30);
		CK_RV rv = i % 10 == 9 ? f->C_CloseAllSessions(0)
		                       : f->C_CloseSession(worker_session[rand() % WORKERS]);
		expect("C_CloseSession", rv);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 6)
		return 2;
	pin = argv[2];
	aes_id = argv[3];
	ec_id = argv[4];
	int seconds = atoi(argv[5]);
	void *h = dlopen(argv[1], RTLD_NOW);
	if (h == NULL)
		return 2;
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR) =
	    (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(h, "C_GetFunctionList");
	CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
	if (get == NULL || get(&f) != CKR_OK || f->C_Initialize(&init) != CKR_OK)
		return 2;
	CK_SESSION_HANDLE s;
	CK_RV rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK || (rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin))) != CKR_OK)
		fail("C_Login", rv);
	srand((unsigned)time(NULL));
	pthread_t t[WORKERS + 2];
	for (long i = 0; i < WORKERS; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	pthread_create(&t[WORKERS], NULL, logout_login, NULL);
	pthread_create(&t[WORKERS + 1], NULL, closer, NULL);
	sleep((unsigned)seconds);
	finalizing = 1; /* C_Finalize while the workers wait on hsmd */
	rv = f->C_Finalize(NULL);
	if (rv != CKR_OK)
		fail("C_Finalize", rv);
	for (int i = 0; i < WORKERS + 2; i++)
		pthread_join(t[i], NULL);
	printf("encrypted %ld signed %ld closed %ld\n", encrypted, signed_, closed);
	return 0;
}
