/*
 * log.h - operational log lines on stderr (or syslog).
 *
 * The operational log is not the audit trail (see audit/).  It must never
 * receive key material, plaintext, shares or secrets: callers pass only
 * identifiers, counts and the messages of hsm_result failures, which are
 * themselves secret-free by contract.
 */
#ifndef HSM_LOG_H
#define HSM_LOG_H

#include "common/result.h"

typedef enum { HSM_LOG_DEBUG, HSM_LOG_INFO, HSM_LOG_WARN, HSM_LOG_ERROR } hsm_log_level;

void hsm_log_set_level(hsm_log_level level);
void hsm_log(hsm_log_level level, const char *fmt, ...) HSM_PRINTF(2, 3);
/* Logs this thread's last failure with a context prefix. */
void hsm_log_failure(const char *context);

#define hsm_debug(...) hsm_log(HSM_LOG_DEBUG, __VA_ARGS__)
#define hsm_info(...) hsm_log(HSM_LOG_INFO, __VA_ARGS__)
#define hsm_warn(...) hsm_log(HSM_LOG_WARN, __VA_ARGS__)
#define hsm_error(...) hsm_log(HSM_LOG_ERROR, __VA_ARGS__)

#endif
