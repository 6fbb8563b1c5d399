/*
 * config_reload.c - the configuration read again on SIGHUP (main.c), beside
 * the TLS files (tls_reload.c).
 *
 * A restart seals the node, so hsmd does not leave an operator to find out
 * at the next one what an edited configuration does.  On SIGHUP it reads the
 * configuration from the sources it started with and compares it with the
 * one it runs: log_level changes at once; every other changed setting is
 * named, with its running and its new value, as waiting for the next start
 * (the node's listeners, store, trail, keys and policies were built from the
 * old values, and changing them under requests in flight is not something
 * hsmd does).  A configuration that does not load, and so would not start
 * the node, is reported now rather than at the next start.  All of it goes
 * to the log, the audit trail ("ConfigReload") and /metrics; a store URI is
 * shown without its password.
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/server.h"

#define VALUE_SHOWN 256 /* the part of a value a log line shows */

/* "a, b, c" of names, truncated with "..." where it does not fit cap. */
static void join_names(const char *const *names, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int w = snprintf(out + o, cap - o, "%s%s", i > 0 ? ", " : "", names[i]);
		if (w < 0 || (size_t)w >= cap - o) {
			snprintf(out + (cap > 4 ? cap - 4 : 0), cap > 4 ? 4 : cap, "...");
			return;
		}
		o += (size_t)w;
	}
}

static hsm_result load_failed(hsm_server *s)
{
	char reason[HSM_ERRMSG_MAX];
	snprintf(reason, sizeof(reason), "%s", hsm_last_message());
	hsm_audit_field f[] = {{"reason", reason}};
	(void)hsm_server_event_of(s, NULL, "ConfigReload", HSM_FAIL(HSM_ERR_VALIDATION, "%s", reason),
	                          f, 1);
	atomic_fetch_add(&s->config_reload_failures, 1);
	atomic_store(&s->config_reload_failing, true);
	hsm_error("the configuration does not load, and would not start the node as it stands: "
	          "%s; nothing was changed",
	          reason);
	return HSM_FAIL(HSM_ERR_VALIDATION, "%s", reason);
}

hsm_result hsm_server_reload_config(hsm_server *s, hsm_config *running, int argc,
                                    char *const argv[])
{
	HSM_ASSERT(s != NULL && running != NULL);
	hsm_config *next = calloc(1, sizeof(*next));
	HSM_ENSURE(next != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_result res = HSM_SUCCESS;
	hsm_config_action action;
	if (hsm_failed(hsm_config_load(next, argc, argv, NULL, &action))) {
		res = load_failed(s);
		goto out;
	}
	HSM_ASSERT(action == HSM_CONFIG_RUN); /* the same arguments as at the start */

	const char *changed[HSM_CONFIG_KEYS_MAX], *pending[HSM_CONFIG_KEYS_MAX];
	size_t n = hsm_config_changed(running, next, changed, HSM_CONFIG_KEYS_MAX), n_pending = 0;
	bool level = false;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(changed[i], "log_level") == 0)
			level = true;
		else
			pending[n_pending++] = changed[i];
	}
	char applied[2 * VALUE_SHOWN + 16] = "", names[HSM_AUDIT_VALUE_MAX], count[24];
	char was[VALUE_SHOWN], now[VALUE_SHOWN], where[HSM_CONFIG_PATH_MAX + 16];
	if (level) {
		hsm_config_value_text(running, "log_level", was, sizeof(was));
		hsm_config_value_text(next, "log_level", now, sizeof(now));
		snprintf(applied, sizeof(applied), "log_level: %s -> %s", was, now);
	}
	join_names(pending, n_pending, names, sizeof(names));
	snprintf(count, sizeof(count), "%zu", n_pending);
	hsm_audit_field f[3];
	size_t nf = 0;
	f[nf++] = (hsm_audit_field){"restart_pending_count", count};
	if (n_pending > 0)
		f[nf++] = (hsm_audit_field){"restart_pending", names};
	if (level)
		f[nf++] = (hsm_audit_field){"applied", applied};
	if (!hsm_server_event_of(s, NULL, "ConfigReload", HSM_SUCCESS, f, nf)) {
		atomic_fetch_add(&s->config_reload_failures, 1);
		res = HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE,
		               "the configuration was read again, but that could not be recorded in "
		               "the audit trail: nothing was changed");
		hsm_log_failure("SIGHUP");
		goto out;
	}
	for (size_t i = 0; i < n_pending; i++) {
		hsm_config_value_text(running, pending[i], was, sizeof(was));
		hsm_config_value_text(next, pending[i], now, sizeof(now));
		hsm_config_source(next, pending[i], where, sizeof(where));
		hsm_warn("configuration read again: %s changed from '%s' to '%s' (%s); it takes "
		         "effect at the next start",
		         pending[i], was, now, where);
	}
	/* Said before a stricter level would hide it. */
	if (n == 0)
		hsm_info("configuration read again: nothing changed");
	else
		hsm_info("configuration read again: %s%s%zu setting%s wait%s for the next start",
		         applied, level ? " at once; " : "", n_pending, n_pending == 1 ? "" : "s",
		         n_pending == 1 ? "s" : "");
	if (level) {
		hsm_log_set_level(next->log_level);
		running->log_level = next->log_level;
	}
	atomic_store(&s->config_restart_pending, (unsigned)n_pending);
	atomic_fetch_add(&s->config_reloads, 1);
	atomic_store(&s->config_reload_failing, false);
out:
	free(next);
	return res;
}
