/*
 * errq.c - the application's OpenSSL error queue, set aside while the
 * module works.
 *
 * The module runs on the application's threads, and an application that
 * uses OpenSSL itself (a TLS server; an OpenSSL provider or engine that
 * calls the module in the middle of OpenSSL's own work) shares the
 * thread's error queue with it.  The module's TLS client needs that queue
 * empty (SSL_get_error reads it) and empties it, and its failures leave
 * entries there.  So every entry point takes the application's entries out
 * first (ENTER) and, as it returns (LEAVE), drops whatever the module left
 * and puts them back, in their order, with their file, line, function and
 * text.  One thing cannot be kept: OpenSSL offers no way to read the marks
 * (ERR_set_mark) set on entries, so an entry comes back unmarked.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "pkcs11/p11.h"

typedef struct {
	unsigned long code;
	int line;
	char *file, *func, *text; /* copies: the queue's own strings go with its slots */
} kept_error;

/* Per thread: entry points on different threads run at once (between ENTER and LEAVE). */
static __thread kept_error kept[ERR_NUM_ERRORS];
static __thread size_t n_kept;

static char *copy(const char *s)
{
	return s != NULL && *s != '\0' ? strdup(s) : NULL;
}

static void forget(void)
{
	for (size_t i = 0; i < n_kept; i++) {
		free(kept[i].file);
		free(kept[i].func);
		free(kept[i].text);
	}
	memset(kept, 0, sizeof(kept));
	n_kept = 0;
}

void p11_errq_set_aside(void)
{
	forget(); /* nothing is left from a call that returned: every LEAVE put it back */
	const char *file, *func, *data;
	int line, flags;
	unsigned long e;
	/* Oldest first; the queue holds at most ERR_NUM_ERRORS - 1 entries. */
	while ((e = ERR_get_error_all(&file, &line, &func, &data, &flags)) != 0) {
		if (n_kept == ERR_NUM_ERRORS)
			continue; /* cannot happen: OpenSSL's ring is that size */
		kept_error *k = &kept[n_kept++];
		k->code = e;
		k->line = line;
		k->file = copy(file);
		k->func = copy(func);
		k->text = (flags & ERR_TXT_STRING) != 0 ? copy(data) : NULL;
	}
}

void p11_errq_restore(void)
{
	ERR_clear_error(); /* the module's own: not the application's to read */
	for (size_t i = 0; i < n_kept; i++) {
		const kept_error *k = &kept[i];
		ERR_new();
		ERR_set_debug(k->file, k->line, k->func);
		if (k->text != NULL)
			ERR_set_error(ERR_GET_LIB(k->code), ERR_GET_REASON(k->code), "%s", k->text);
		else
			ERR_set_error(ERR_GET_LIB(k->code), ERR_GET_REASON(k->code), NULL);
	}
	forget();
}
