/*
 * pkcs11_logout_race.c - a C_GenerateRandom of many chunks in one thread while
 * another thread logs out, as an application's shutdown path may: the
 * module lets its lock go between chunks, and must end the call
 * (CKR_USER_NOT_LOGGED_IN) rather than go on with the wiped credentials.
 *
 *   pkcs11_logout_race MODULE PIN
 *
 * Prints the C_GenerateRandom result as "random 0x<rv>" and exits 0 when the
 * process is still alive to say so; any setup failure exits 1.
 */
#include <pthread.h>
#include <unistd.h>

#include "pkcs11_client.h"

static CK_FUNCTION_LIST_PTR f;
static CK_SESSION_HANDLE drawing, other;
static CK_RV random_rv;
static unsigned char bytes[1 << 22]; /* 4096 chunks of 1024 */

static void *draw(void *arg)
{
	random_rv = f->C_GenerateRandom(drawing, bytes, sizeof(bytes));
	return arg;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		fail("usage: pkcs11_logout_race MODULE PIN", 0);
	f = load_module(argv[1]);
	drawing = logged_in(f, argv[2], 0);
	CK_RV rv;
	if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &other)) != CKR_OK)
		fail("C_OpenSession", rv);
	pthread_t t;
	if (pthread_create(&t, NULL, draw, NULL) != 0)
		fail("pthread_create", 0);
	usleep(50000); /* some chunks drawn */
	if ((rv = f->C_Logout(other)) != CKR_OK)
		fail("C_Logout", rv);
	pthread_join(t, NULL);
	printf("random 0x%lx\n", (unsigned long)random_rv);
	f->C_Finalize(NULL);
	return 0;
}
