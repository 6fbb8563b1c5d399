/*
 * pkcs11_threads.c - threads signing (or deriving) at once through the PKCS#11
 * module, each in its own session (test_pkcs11.py compiles and runs it).
 *
 *   pkcs11_threads MODULE PIN KEY_ID THREADS PER_THREAD [PEER_POINT_HEX]
 *
 * Prints "<message> <signature hex>" for every signature (ECDSA P-256 with
 * SHA-256, r||s), then "rate <signatures per second>".  With a peer's EC
 * point, KEY_ID is a key agreement key and each thread derives instead:
 * C_DeriveKey (ECDH1, CKD_NULL), CKA_VALUE, C_DestroyObject, printing
 * "<thread>-<i> <secret hex>".  Exits non-zero on any PKCS#11 error.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#define MAX_THREADS 64

static CK_FUNCTION_LIST_PTR f;
static CK_OBJECT_HANDLE key;
static int per_thread;
static unsigned char peer[200];
static size_t peer_len; /* 0: sign */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what, CK_RV rv)
{
	fprintf(stderr, "%s: 0x%lx\n", what, (unsigned long)rv);
	exit(1);
}

static void derive(CK_SESSION_HANDLE s, int id)
{
	CK_ECDH1_DERIVE_PARAMS p = {CKD_NULL, 0, NULL, (CK_ULONG)peer_len, peer};
	CK_MECHANISM m = {CKM_ECDH1_DERIVE, &p, sizeof(p)};
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_SENSITIVE, &no, sizeof(no)}};
	for (int i = 0; i < per_thread; i++) {
		CK_OBJECT_HANDLE k;
		unsigned char v[128];
		CK_ATTRIBUTE a = {CKA_VALUE, v, sizeof(v)};
		CK_RV rv = f->C_DeriveKey(s, &m, key, t, 2, &k);
		if (rv != CKR_OK)
			fail("C_DeriveKey", rv);
		if ((rv = f->C_GetAttributeValue(s, k, &a, 1)) != CKR_OK)
			fail("C_GetAttributeValue", rv);
		if ((rv = f->C_DestroyObject(s, k)) != CKR_OK)
			fail("C_DestroyObject", rv);
		pthread_mutex_lock(&out_lock);
		printf("%d-%d ", id, i);
		for (CK_ULONG j = 0; j < a.ulValueLen; j++)
			printf("%02x", v[j]);
		printf("\n");
		pthread_mutex_unlock(&out_lock);
	}
}

static void *run(void *arg)
{
	int id = (int)(long)arg;
	CK_SESSION_HANDLE s;
	CK_RV rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK)
		fail("C_OpenSession", rv);
	if (peer_len > 0) {
		derive(s, id);
		f->C_CloseSession(s);
		return NULL;
	}
	CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
	for (int i = 0; i < per_thread; i++) {
		char msg[64];
		unsigned char sig[64];
		CK_ULONG n = sizeof(sig);
		snprintf(msg, sizeof(msg), "thread-%d-message-%d", id, i);
		if ((rv = f->C_SignInit(s, &m, key)) != CKR_OK)
			fail("C_SignInit", rv);
		if ((rv = f->C_Sign(s, (CK_BYTE_PTR)msg, strlen(msg), sig, &n)) != CKR_OK)
			fail("C_Sign", rv);
		pthread_mutex_lock(&out_lock);
		printf("%s ", msg);
		for (CK_ULONG j = 0; j < n; j++)
			printf("%02x", sig[j]);
		printf("\n");
		pthread_mutex_unlock(&out_lock);
	}
	f->C_CloseSession(s);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 6 && argc != 7)
		return 2;
	for (const char *x = argc == 7 ? argv[6] : ""; x[0] != '\0' && x[1] != '\0'; x += 2) {
		unsigned b;
		if (peer_len == sizeof(peer) || sscanf(x, "%2x", &b) != 1)
			return 2;
		peer[peer_len++] = (unsigned char)b;
	}
	void *h = dlopen(argv[1], RTLD_NOW);
	if (h == NULL)
		return 2;
	CK_RV (*get)(CK_FUNCTION_LIST_PTR_PTR) = (CK_RV(*)(CK_FUNCTION_LIST_PTR_PTR))dlsym(h, "C_GetFunctionList");
	CK_RV rv;
	CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK}; /* threads call it at once */
	if (get == NULL || get(&f) != CKR_OK || (rv = f->C_Initialize(&init)) != CKR_OK)
		return 2;
	CK_SESSION_HANDLE s;
	if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		fail("C_OpenSession", rv);
	if ((rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)argv[2], strlen(argv[2]))) != CKR_OK)
		fail("C_Login", rv);
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, argv[3], strlen(argv[3])}};
	CK_ULONG found = 0;
	if (f->C_FindObjectsInit(s, t, 2) != CKR_OK || f->C_FindObjects(s, &key, 1, &found) != CKR_OK ||
	    f->C_FindObjectsFinal(s) != CKR_OK || found != 1)
		fail("finding the key", found);
	int threads = atoi(argv[4]);
	per_thread = atoi(argv[5]);
	if (threads < 1 || threads > MAX_THREADS)
		return 2;
	pthread_t th[MAX_THREADS];
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < threads; i++)
		pthread_create(&th[i], NULL, run, (void *)(long)i);
	for (int i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double dt = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	printf("rate %.0f\n", threads * per_thread / dt);
	f->C_CloseSession(s);
	return f->C_Finalize(NULL) == CKR_OK ? 0 : 1;
}
