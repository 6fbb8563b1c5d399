#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "common/util.h"

/* Atomic: a configuration reload (SIGHUP) sets it while other threads log. */
static _Atomic int min_level = HSM_LOG_INFO;

void hsm_log_set_level(hsm_log_level level)
{
	atomic_store_explicit(&min_level, (int)level, memory_order_relaxed);
}

void hsm_log(hsm_log_level level, const char *fmt, ...)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	if ((int)level < atomic_load_explicit(&min_level, memory_order_relaxed))
		return;
	char when[25], line[1024];
	hsm_format_time_ms(hsm_now_ms(), when);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per line keeps lines from different threads whole. */
	fprintf(stderr, "%s %s %s\n", when, names[level], line);
}

void hsm_log_failure(const char *context)
{
	const hsm_error_info *e = hsm_last_error();
	hsm_log(HSM_LOG_ERROR, "%s: %s (%s at %s:%d)", context, e->message, hsm_err_code_name(e->err),
	        e->file ? e->file : "?", e->line);
}
