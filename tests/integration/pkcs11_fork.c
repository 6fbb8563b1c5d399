/*
 * pkcs11_fork.c - fork() while another thread is inside the PKCS#11 module
 * (test_pkcs11.py compiles and runs it).
 *
 *   pkcs11_fork MODULE PIN CHILDREN
 *
 * A thread searches the token's objects over and over (each search calls
 * hsmd while the module holds its lock); meanwhile the main thread forks
 * CHILDREN times.  Each child starts the module afresh (C_Initialize, as
 * PKCS#11 asks of a child), lists the slots, finalizes and exits 0; it
 * exits 3 if that takes 20 seconds (a lock left held by the parent's
 * thread).  Prints "ok <children>" when every child exited 0.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static CK_SESSION_HANDLE session;
static atomic_bool stop;

static void fail(const char *what, CK_RV rv)
{
	fprintf(stderr, "%s: 0x%lx\n", what, (unsigned long)rv);
	exit(1);
}

static void *searcher(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		CK_OBJECT_HANDLE h[8];
		CK_ULONG n = 0;
		CK_RV rv = f->C_FindObjectsInit(session, NULL, 0);
		if (rv != CKR_OK)
			fail("C_FindObjectsInit", rv);
		if ((rv = f->C_FindObjects(session, h, 8, &n)) != CKR_OK)
			fail("C_FindObjects", rv);
		if ((rv = f->C_FindObjectsFinal(session)) != CKR_OK)
			fail("C_FindObjectsFinal", rv);
	}
	return NULL;
}

static void on_alarm(int sig)
{
	(void)sig;
	_exit(3);
}

static void child(void)
{
	signal(SIGALRM, on_alarm);
	alarm(20);
	CK_RV rv = f->C_Initialize(NULL);
	if (rv != CKR_OK)
		_exit(4);
	CK_ULONG n = 0;
	if (f->C_GetSlotList(CK_TRUE, NULL, &n) != CKR_OK || n != 1)
		_exit(5);
	if (f->C_Finalize(NULL) != CKR_OK)
		_exit(6);
	_exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: pkcs11_fork MODULE PIN CHILDREN\n");
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW);
	if (lib == NULL) {
		fprintf(stderr, "%s\n", dlerror());
		return 1;
	}
	CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	if (get == NULL || get(&f) != CKR_OK)
		return 1;
	CK_RV rv = f->C_Initialize(NULL);
	if (rv != CKR_OK)
		fail("C_Initialize", rv);
	if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &session)) != CKR_OK)
		fail("C_OpenSession", rv);
	if ((rv = f->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)argv[2], strlen(argv[2]))) !=
	    CKR_OK)
		fail("C_Login", rv);
	pthread_t t;
	if (pthread_create(&t, NULL, searcher, NULL) != 0)
		return 1;
	int children = atoi(argv[3]), bad = 0;
	for (int i = 0; i < children; i++) {
		usleep(20000);
		pid_t pid = fork();
		if (pid == 0)
			child();
		int status = 0;
		if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != 0) {
			fprintf(stderr, "child %d: status 0x%x\n", i, status);
			bad++;
		}
	}
	atomic_store(&stop, true);
	pthread_join(t, NULL);
	f->C_Logout(session);
	f->C_Finalize(NULL);
	if (bad != 0)
		return 1;
	printf("ok %d\n", children);
	return 0;
}
