/*
 * pkcs11_tls_life MODULE PIN LABEL idle MS | signals N
 *
 * A C application of the module over TLS, as most are: SIGPIPE keeps its
 * default action (the end of the process), and it may handle signals of its
 * own.  Signs with the private key labelled LABEL (CKM_ECDSA_SHA256):
 *   idle MS     signs, sleeps MS milliseconds (past hsmd's idle timeout, which
 *               closes the kept connection), signs again;
 *   signals N   signs N times under a SIGALRM handler (SA_RESTART) and a timer
 *               firing every 500 us, as a profiler or a periodic tick has them.
 * Every signature must be made.  Prints "ok".
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "pkcs11_client.h"

static void on_alarm(int s)
{
	(void)s;
}

static void sign(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key)
{
	CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
	CK_BYTE sig[128];
	CK_ULONG sl = sizeof(sig);
	CK_RV rv;
	if ((rv = f->C_SignInit(s, &m, key)) != CKR_OK ||
	    (rv = f->C_Sign(s, (CK_BYTE_PTR) "m", 1, sig, &sl)) != CKR_OK)
		fail("sign", rv);
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: pkcs11_tls_life MODULE PIN LABEL idle MS | signals N\n");
		return 2;
	}
	signal(SIGPIPE, SIG_DFL);
	CK_FUNCTION_LIST_PTR f = load_module(argv[1]);
	CK_SESSION_HANDLE s = logged_in(f, argv[2], 0);
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, argv[3], strlen(argv[3])}};
	CK_OBJECT_HANDLE key;
	CK_ULONG n = 0;
	CK_RV rv;
	if ((rv = f->C_FindObjectsInit(s, t, 2)) != CKR_OK ||
	    (rv = f->C_FindObjects(s, &key, 1, &n)) != CKR_OK || n != 1 ||
	    (rv = f->C_FindObjectsFinal(s)) != CKR_OK)
		fail("find", rv);
	int count = atoi(argv[5]);
	if (strcmp(argv[4], "idle") == 0) {
		sign(f, s, key);
		usleep((useconds_t)count * 1000);
		sign(f, s, key);
	} else {
		struct sigaction sa = {0};
		sa.sa_handler = on_alarm;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGALRM, &sa, NULL);
		struct itimerval it = {{0, 500}, {0, 500}};
		setitimer(ITIMER_REAL, &it, NULL);
		for (int i = 0; i < count; i++)
			sign(f, s, key);
	}
	puts("ok");
	return 0;
}
