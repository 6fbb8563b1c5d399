#include "common/result.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local hsm_error_info last_error;

struct err_row {
	const char *code;
	const char *kms;
	int status;
	unsigned long ckr;
};

static const struct err_row err_table[HSM_ERR_COUNT_] = {
#define HSM_X_ROW(code, name, status, ckr) [code] = {#code, name, status, ckr},
    HSM_ERROR_TABLE(HSM_X_ROW)
#undef HSM_X_ROW
};

static const struct err_row *row(hsm_err err)
{
	if ((unsigned)err >= HSM_ERR_COUNT_)
		err = HSM_ERR_INTERNAL;
	return &err_table[err];
}

hsm_result hsm_fail_at(hsm_err err, const char *file, int line, const char *fmt, ...)
{
	if (err == HSM_OK)
		err = HSM_ERR_INTERNAL; /* a failure must never read as success */
	last_error.err = err;
	last_error.file = file;
	last_error.line = line;
	if (fmt != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(last_error.message, sizeof(last_error.message), fmt, ap);
		va_end(ap);
	} else {
		snprintf(last_error.message, sizeof(last_error.message), "%s", row(err)->kms);
	}
	return (hsm_result){err};
}

_Noreturn void hsm_abort_at(const char *file, int line, const char *what)
{
	fprintf(stderr, "hsmd: internal contract broken at %s:%d: %s\n", file, line, what);
	abort();
}

const hsm_error_info *hsm_last_error(void) { return &last_error; }
const char *hsm_last_message(void) { return last_error.message; }

void hsm_error_restore(const hsm_error_info *saved)
{
	if (saved != &last_error)
		last_error = *saved;
}
const char *hsm_err_kms_name(hsm_err err) { return row(err)->kms; }
int hsm_err_http_status(hsm_err err) { return row(err)->status; }
unsigned long hsm_err_ckr(hsm_err err) { return row(err)->ckr; }
const char *hsm_err_code_name(hsm_err err) { return row(err)->code; }
hsm_err hsm_nomem_or(hsm_err otherwise) { return errno == ENOMEM ? HSM_ERR_NOMEM : otherwise; }

hsm_err hsm_err_from_kms_name(const char *name)
{
	for (int e = HSM_ERR_VALIDATION; e < HSM_ERR_COUNT_; e++)
		if (strcmp(row((hsm_err)e)->kms, name) == 0)
			return (hsm_err)e;
	return HSM_ERR_INTERNAL;
}
