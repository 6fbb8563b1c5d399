/*
 * config_reload.c - the configuration read again on SIGHUP (main.c), beside
 * the TLS files (tls_reload.c).
 *
 * A restart seals the node, so hsmd does not leave an operator to find out
 * at the next one what an edited configuration does.  On SIGHUP it reads the
 * configuration from the sources it started with and compares it with the
 * one it runs.  The settings an operator may need in an incident change
 * at once: log_level, lockout_threshold, the refusal record rates (a
 * flood of unauthenticated requests) and max_connections_per_source (one
 * client holding the connections).  Every other changed setting is named,
 * with its running and its new value, as waiting for the next start (the
 * node's listeners, store, trail, keys and policies were built from the old
 * values, and changing them under requests in flight is not something hsmd
 * does).  A configuration that does not load, and so would not start
 * the node, is reported now rather than at the next start; so is a waiting
 * setting the start would refuse once it looks at the machine (would_start).  All of it goes
 * to the log, the audit trail ("ConfigReload") and /metrics; a store URI is
 * shown without its password.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "server/server.h"

#define VALUE_SHOWN 256 /* the part of a value a log line shows */

/* The settings a reload applies at once, each read by its subsystem under its own care. */
static void apply_log_level(hsm_server *s, const hsm_config *c)
{
	(void)s;
	hsm_log_set_level(c->log_level);
}

static void apply_lockout(hsm_server *s, const hsm_config *c)
{
	atomic_store(&s->lockout_threshold, c->lockout_threshold);
}

static void apply_refusal_rates(hsm_server *s, const hsm_config *c)
{
	hsm_refusals_set_rates(s->refusals, c->refusal_record_rate, c->refusal_record_rate_total);
}

static void apply_per_source(hsm_server *s, const hsm_config *c)
{
	if (s->http != NULL)
		hsm_http_server_set_per_source(s->http, c->max_connections_per_source);
}

static const struct {
	const char *name;
	size_t off, size; /* the field in hsm_config, copied into the running one once applied */
	void (*apply)(hsm_server *s, const hsm_config *c);
} live[] = {
#define LIVE(f, fn) {#f, offsetof(hsm_config, f), sizeof(((hsm_config *)0)->f), fn}
    LIVE(log_level, apply_log_level),
    LIVE(lockout_threshold, apply_lockout),
    LIVE(refusal_record_rate, apply_refusal_rates),
    LIVE(refusal_record_rate_total, apply_refusal_rates),
    LIVE(max_connections_per_source, apply_per_source),
#undef LIVE
};
#define N_LIVE (sizeof(live) / sizeof(live[0]))

static int live_index(const char *name)
{
	for (size_t i = 0; i < N_LIVE; i++)
		if (strcmp(live[i].name, name) == 0)
			return (int)i;
	return -1;
}

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

static bool waits(const char *const *pending, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(pending[i], name) == 0)
			return true;
	return false;
}

/*
 * The checks the next start makes once it looks at the machine, for the
 * settings that wait for it: a copy directory that is not there (or is the
 * directory it copies), a quorum the store's custodians cannot meet.  A
 * failure names its setting (*setting).  Directories the start would make
 * are not made here, and the quorum of another store cannot be counted.
 */
static hsm_result would_start(hsm_server *s, const hsm_config *next, const char *const *pending,
                              size_t n, const char **setting)
{
	static const struct {
		const char *copy, *dir, *dir_name;
		size_t copy_off, dir_off;
	} copies[] = {
	    {"backup_copy_dir", "backup_dir", "backup directory", offsetof(hsm_config, backup_copy_dir),
	     offsetof(hsm_config, backup_dir)},
	    {"audit_copy_dir", "audit_dir", "audit directory", offsetof(hsm_config, audit_copy_dir),
	     offsetof(hsm_config, audit_dir)},
	};
	for (size_t i = 0; i < sizeof(copies) / sizeof(copies[0]); i++) {
		const char *copy = (const char *)next + copies[i].copy_off;
		const char *dir = (const char *)next + copies[i].dir_off;
		if (copy[0] == '\0' ||
		    (!waits(pending, n, copies[i].copy) && !waits(pending, n, copies[i].dir)))
			continue;
		*setting = copies[i].copy;
		HSM_GUARD(hsm_server_usable_dir(copies[i].copy, copy, false));
		/* A directory the start would make (backup_dir, audit_dir) is not the copy
		 * directory, which is there: nothing to compare yet. */
		struct stat st;
		if (stat(dir, &st) != 0 && errno == ENOENT)
			continue;
		HSM_GUARD(hsm_server_distinct_copy_dir(dir, copies[i].dir_name, copies[i].copy, copy));
	}
	*setting = "approval_quorum";
	unsigned have = 0;
	if (waits(pending, n, "approval_quorum") && !waits(pending, n, "store"))
		HSM_GUARD(hsm_server_quorum_met(s, next->approval_quorum, &have));
	*setting = NULL;
	return HSM_SUCCESS;
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
	for (unsigned i = 0; i < next->n_warnings; i++)
		hsm_warn("%s", next->warnings[i]);

	const char *changed[HSM_CONFIG_KEYS_MAX], *pending[HSM_CONFIG_KEYS_MAX];
	int now_live[N_LIVE];
	size_t n = hsm_config_changed(running, next, changed, HSM_CONFIG_KEYS_MAX), n_pending = 0,
	       n_live = 0;
	/* "log_level: info -> warn, lockout_threshold: 5 -> 3" */
	char applied[N_LIVE * (HSM_CONFIG_NAME_MAX + 2 * VALUE_SHOWN + 8)] = "";
	char names[HSM_AUDIT_VALUE_MAX], count[24];
	char was[VALUE_SHOWN], now[VALUE_SHOWN], where[HSM_CONFIG_PATH_MAX + 16];
	for (size_t i = 0; i < n; i++) {
		int li = live_index(changed[i]);
		if (li < 0) {
			pending[n_pending++] = changed[i];
			continue;
		}
		now_live[n_live++] = li;
		hsm_config_value_text(running, changed[i], was, sizeof(was));
		hsm_config_value_text(next, changed[i], now, sizeof(now));
		size_t o = strlen(applied);
		snprintf(applied + o, sizeof(applied) - o, "%s%s: %s -> %s", o > 0 ? ", " : "",
		         changed[i], was, now);
	}
	const char *blamed = NULL;
	if (hsm_failed(would_start(s, next, pending, n_pending, &blamed))) {
		/* Told as the start would tell it: the reason, then the setting and its source. */
		char why[HSM_ERRMSG_MAX];
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		hsm_config_source(next, blamed, where, sizeof(where));
		(void)HSM_FAIL(HSM_ERR_VALIDATION, "%s (%s from %s)", why, blamed, where);
		res = load_failed(s);
		goto out;
	}
	join_names(pending, n_pending, names, sizeof(names));
	snprintf(count, sizeof(count), "%zu", n_pending);
	hsm_audit_field f[3];
	size_t nf = 0;
	f[nf++] = (hsm_audit_field){"restart_pending_count", count};
	if (n_pending > 0)
		f[nf++] = (hsm_audit_field){"restart_pending", names};
	if (n_live > 0)
		f[nf++] = (hsm_audit_field){"applied", applied};
	if (!hsm_server_event_of(s, NULL, "ConfigReload", HSM_SUCCESS, f, nf)) {
		atomic_fetch_add(&s->config_reload_failures, 1);
		/* Nothing changed: what was read is not what the node runs, as after a
		 * configuration that did not load. */
		atomic_store(&s->config_reload_failing, true);
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
	/* Said before a stricter log_level would hide it. */
	if (n == 0)
		hsm_info("configuration read again: nothing changed");
	else
		hsm_info("configuration read again: %s%s%zu setting%s wait%s for the next start",
		         applied, n_live > 0 ? " at once; " : "", n_pending, n_pending == 1 ? "" : "s",
		         n_pending == 1 ? "s" : "");
	for (size_t i = 0; i < n_live; i++) {
		size_t li = (size_t)now_live[i];
		live[li].apply(s, next);
		memcpy((char *)running + live[li].off, (const char *)next + live[li].off,
		       live[li].size);
	}
	atomic_store(&s->config_restart_pending, (unsigned)n_pending);
	atomic_fetch_add(&s->config_reloads, 1);
	atomic_store(&s->config_reload_failing, false);
out:
	free(next);
	return res;
}
