/*
 * pkcs11_sigpipe MODULE PIN handled|blocked
 *
 * The application's own SIGPIPE, sent to a thread of its own while that
 * thread is inside the module (C_Login), is the application's: the module
 * takes back only a SIGPIPE its own write raised.  The application counts
 * SIGPIPE with a handler.  Its worker thread calls C_Login; once the line
 * "in" arrives on standard input (the server has the request), the main
 * thread sends SIGPIPE to the worker and writes "sent"; the server answers
 * after that.
 *   handled: SIGPIPE is open on the worker: the handler runs once.
 *   blocked: the worker blocks SIGPIPE itself: it is pending after the call.
 * Prints "handler=N pending=P".
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pkcs11_client.h"

static atomic_int handled;
static CK_FUNCTION_LIST_PTR f;
static CK_SESSION_HANDLE sess;
static const char *pin;
static int pending = -1;

static void on_pipe(int s)
{
	(void)s;
	atomic_fetch_add(&handled, 1);
}

static void *worker(void *arg)
{
	(void)arg;
	(void)f->C_Login(sess, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	sigset_t p;
	sigpending(&p);
	pending = sigismember(&p, SIGPIPE);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: pkcs11_sigpipe MODULE PIN handled|blocked\n");
		return 2;
	}
	pin = argv[2];
	struct sigaction sa = {0};
	sa.sa_handler = on_pipe;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGPIPE, &sa, NULL);
	f = load_module(argv[1]);
	CK_RV rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &sess);
	if (rv != CKR_OK)
		fail("C_OpenSession", rv);
	sigset_t p, old;
	sigemptyset(&p);
	sigaddset(&p, SIGPIPE);
	/* The worker starts with the mask it is to have (inherited), the main thread's open. */
	if (strcmp(argv[3], "blocked") == 0)
		pthread_sigmask(SIG_BLOCK, &p, &old);
	pthread_t w;
	pthread_create(&w, NULL, worker, NULL);
	if (strcmp(argv[3], "blocked") == 0)
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	char line[16];
	if (fgets(line, sizeof(line), stdin) == NULL || strcmp(line, "in\n") != 0)
		fail("the server's word", 0);
	pthread_kill(w, SIGPIPE);
	puts("sent");
	fflush(stdout);
	pthread_join(w, NULL);
	printf("handler=%d pending=%d\n", atomic_load(&handled), pending);
	return 0;
}
