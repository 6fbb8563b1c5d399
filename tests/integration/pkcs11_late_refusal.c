/*
 * pkcs11_late_refusal.c - a refusal of one login's credentials that comes back
 * after another thread logged out and in again with other credentials: it
 * ends the call it answers, not the new login.
 *
 *   pkcs11_late_refusal MODULE PIN_A PIN_B
 *
 * Logs in with PIN_A, prints "ready" and waits for a line on stdin (the test
 * revokes PIN_A's access key meanwhile).  Then one thread draws 16 random
 * bytes (a request the test's proxy holds back for a while, so that hsmd
 * refuses PIN_A's revoked key only after the next steps), while the main
 * thread logs out and in with PIN_B.  Prints "random 0x<rv>" for the draw,
 * "state <n>" for the session's state after it, and "after 0x<rv>" for a
 * second draw; exits 1 on any setup failure.
 */
#include <pthread.h>
#include <unistd.h>

#include "pkcs11_client.h"

static CK_FUNCTION_LIST_PTR f;
static CK_SESSION_HANDLE s;
static CK_RV random_rv;

static void *draw(void *arg)
{
	unsigned char bytes[16];
	random_rv = f->C_GenerateRandom(s, bytes, sizeof(bytes));
	return arg;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		fail("usage: pkcs11_late_refusal MODULE PIN_A PIN_B", 0);
	f = load_module(argv[1]);
	s = logged_in(f, argv[2], 0);
	printf("ready\n");
	fflush(stdout);
	char line[16];
	if (fgets(line, sizeof(line), stdin) == NULL)
		fail("stdin", 0);
	pthread_t t;
	if (pthread_create(&t, NULL, draw, NULL) != 0)
		fail("pthread_create", 0);
	usleep(300000); /* the draw's request is on its way (held back by the test's proxy) */
	CK_RV rv;
	if ((rv = f->C_Logout(s)) != CKR_OK)
		fail("C_Logout", rv);
	if ((rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)argv[3], strlen(argv[3]))) != CKR_OK)
		fail("C_Login", rv);
	pthread_join(t, NULL);
	printf("random 0x%lx\n", (unsigned long)random_rv);
	CK_SESSION_INFO info;
	if ((rv = f->C_GetSessionInfo(s, &info)) != CKR_OK)
		fail("C_GetSessionInfo", rv);
	printf("state %lu\n", (unsigned long)info.state);
	unsigned char bytes[16];
	printf("after 0x%lx\n", (unsigned long)f->C_GenerateRandom(s, bytes, sizeof(bytes)));
	f->C_Finalize(NULL);
	return 0;
}
