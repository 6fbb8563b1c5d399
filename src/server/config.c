/*
 * config.c - loading the configuration: the three sources and their
 * precedence (config.h), the defaults that depend on other settings, and the
 * checks that involve several settings.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"
#include "server/config_internal.h"

#define KEYS_MAX HSM_CONFIG_KEYS_MAX
#define FILE_MAX ((size_t)1 << 20)

extern char **environ;

typedef struct loader {
	hsm_config *cfg;
	setting flag[KEYS_MAX];
	setting env[KEYS_MAX];
	setting file[KEYS_MAX];
	const setting *given[KEYS_MAX]; /* the winning source of each key, NULL for defaults */
	const char *config_path;
	src_kind config_src;
	hsm_buf text; /* the configuration file, split into lines in place */
} loader;

static const setting default_src = {NULL, SRC_DEFAULT, 0};

static size_t key_index(const key_def *k)
{
	return (size_t)(k - hsm_config_keys);
}

static void warn(hsm_config *cfg, const char *fmt, ...) HSM_PRINTF(2, 3);
static void warn(hsm_config *cfg, const char *fmt, ...)
{
	if (cfg->n_warnings >= HSM_CONFIG_MAX_WARNINGS)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cfg->warnings[cfg->n_warnings++], HSM_ERRMSG_MAX, fmt, ap);
	va_end(ap);
}

/* "name (from SOURCE)" for messages about a setting. */
static const char *described(const loader *L, const char *name, char *out, size_t cap)
{
	const key_def *k = hsm_config_find(name);
	HSM_ASSERT(k != NULL);
	const setting *s = L->given[key_index(k)];
	char where[HSM_CONFIG_PATH_MAX + 16];
	hsm_config_where(L->cfg, k, s != NULL ? s : &default_src, where, sizeof(where));
	snprintf(out, cap, "%s (from %s)", name, where);
	return out;
}

/* ---- command line ------------------------------------------------------------ */

static bool wants(int argc, char *const argv[], const char *flag)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], flag) == 0)
			return true;
	return false;
}

/* Turns "--max-body-bytes=2M" into name "max_body_bytes" and value "2M" (or NULL). */
static hsm_result split_flag(const char *arg, char name[HSM_CONFIG_NAME_MAX], const char **value)
{
	HSM_ENSURE(arg[0] == '-' && arg[1] == '-' && arg[2] != '\0', HSM_ERR_VALIDATION,
	           "unexpected argument '%.64s' (settings are given as --name=value)", arg);
	const char *start = arg + 2, *eq = strchr(start, '=');
	size_t n = eq != NULL ? (size_t)(eq - start) : strlen(start);
	HSM_ENSURE(n > 0 && n < HSM_CONFIG_NAME_MAX && memchr(start, '_', n) == NULL,
	           HSM_ERR_VALIDATION, "unknown option '--%.*s' (see --help)", (int)(n > 64 ? 64 : n),
	           start);
	for (size_t i = 0; i < n; i++)
		name[i] = start[i] == '-' ? '_' : start[i];
	name[n] = '\0';
	*value = eq != NULL ? eq + 1 : NULL;
	return HSM_SUCCESS;
}

static hsm_result scan_flags(loader *L, int argc, char *const argv[])
{
	for (int i = 1; i < argc; i++) {
		char name[HSM_CONFIG_NAME_MAX];
		const char *value = NULL;
		HSM_GUARD(split_flag(argv[i], name, &value));
		const key_def *k = hsm_config_find(name);
		bool is_config = strcmp(name, "config") == 0;
		HSM_ENSURE(k != NULL || is_config, HSM_ERR_VALIDATION, "unknown option '%.*s' (see --help)",
		           (int)strcspn(argv[i], "="), argv[i]);
		if (value == NULL && k != NULL && k->type == K_BOOL)
			value = "true"; /* --dev */
		if (value == NULL) {
			HSM_ENSURE(i + 1 < argc, HSM_ERR_VALIDATION, "option '%.64s' needs a value", argv[i]);
			value = argv[++i];
		}
		if (is_config) {
			L->config_path = value;
			L->config_src = SRC_FLAG;
		} else {
			L->flag[key_index(k)] = (setting){value, SRC_FLAG, 0};
		}
	}
	return HSM_SUCCESS;
}

/* ---- environment --------------------------------------------------------------- */

static void scan_env(loader *L, char *const envp[])
{
	for (char *const *e = envp; *e != NULL; e++) {
		const char *var = *e, *eq = strchr(var, '=');
		if (!hsm_str_has_prefix(var, "HSM_") || eq == NULL)
			continue;
		char name[HSM_CONFIG_NAME_MAX];
		size_t n = (size_t)(eq - var) - 4;
		bool upper = n > 0 && n < sizeof(name);
		for (size_t i = 0; upper && i < n; i++) {
			char c = var[4 + i];
			upper = !islower((unsigned char)c);
			name[i] = (char)tolower((unsigned char)c);
		}
		name[upper ? n : 0] = '\0';
		const key_def *k = upper ? hsm_config_find(name) : NULL;
		if (k != NULL) {
			L->env[key_index(k)] = (setting){eq + 1, SRC_ENV, 0};
		} else if (upper && strcmp(name, "config") == 0) {
			if (L->config_path == NULL) {
				L->config_path = eq + 1;
				L->config_src = SRC_ENV;
			}
		} else if (!(upper && (strcmp(name, "dev_access_key_id") == 0 ||
		                       strcmp(name, "dev_secret_access_key") == 0))) {
			/* Read by dev mode elsewhere; anything else is likely a typo. */
			warn(L->cfg, "environment variable %.*s is not a setting; ignored",
			     (int)(eq - var > 64 ? 64 : eq - var), var);
		}
	}
}

/* ---- file -------------------------------------------------------------------- */

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/*
 * A '#' at the start of a line or of a value, or after a blank, starts a
 * comment that runs to the end of the line; a '#' inside a word ("/srv/a#1")
 * or inside a double-quoted value is part of the value.  Cuts the comment off
 * value (already trimmed at its start) and trims what is left.
 */
static void cut_comment(char *value)
{
	for (char *p = value; *p != '\0'; p++) {
		if (*p == '#' && (p == value || p[-1] == ' ' || p[-1] == '\t')) {
			*p = '\0';
			break;
		}
	}
	(void)trim(value);
}

static hsm_result parse_line(loader *L, char *line, unsigned no)
{
	const char *file = L->cfg->config_file;
	line = trim(line);
	if (line[0] == '\0' || line[0] == '#')
		return HSM_SUCCESS;
	char *eq = strchr(line, '=');
	HSM_ENSURE(eq != NULL, HSM_ERR_VALIDATION, "%s:%u: expected 'key = value'", file, no);
	*eq = '\0';
	char *key = trim(line), *value = trim(eq + 1);
	bool had_text = value[0] != '\0';
	if (value[0] == '"') {
		char *end = strchr(value + 1, '"');
		HSM_ENSURE(end != NULL, HSM_ERR_VALIDATION, "%s:%u: unterminated quoted value", file, no);
		*end = '\0';
		char *rest = end + 1;
		HSM_ENSURE(rest[0] == '\0' || rest[0] == ' ' || rest[0] == '\t', HSM_ERR_VALIDATION,
		           "%s:%u: unexpected text after the quoted value", file, no);
		rest = trim(rest);
		HSM_ENSURE(rest[0] == '\0' || rest[0] == '#', HSM_ERR_VALIDATION,
		           "%s:%u: unexpected text after the quoted value", file, no);
		value++;
	} else {
		cut_comment(value);
		/* "key =" sets an empty value on purpose; "key = # ..." is a mistake. */
		HSM_ENSURE(!had_text || value[0] != '\0', HSM_ERR_VALIDATION,
		           "%s:%u: '%.64s' has no value before its comment (quote a value that starts "
		           "with '#')",
		           file, no, key);
	}
	const key_def *k = hsm_config_find(key);
	HSM_ENSURE(k != NULL, HSM_ERR_VALIDATION, "%s:%u: unknown key '%.64s'", file, no, key);
	setting *s = &L->file[key_index(k)];
	HSM_ENSURE(s->value == NULL, HSM_ERR_VALIDATION, "%s:%u: '%s' is already set on line %u", file,
	           no, key, s->line);
	*s = (setting){value, SRC_FILE, no};
	return HSM_SUCCESS;
}

static hsm_result read_file(loader *L)
{
	hsm_config *cfg = L->cfg;
	const char *src = L->config_src == SRC_FLAG ? "--config" : "HSM_CONFIG";
	HSM_ENSURE(hsm_ok(hsm_strcpy(cfg->config_file, sizeof(cfg->config_file), L->config_path)),
	           HSM_ERR_VALIDATION, "config file name (from %s) is too long", src);
	if (hsm_failed(hsm_read_file(L->config_path, FILE_MAX, &L->text))) {
		char why[HSM_ERRMSG_MAX];
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		return HSM_FAIL(HSM_ERR_VALIDATION, "config file (from %s): %s", src, why);
	}
	/* Another user who may edit it chooses the store, the trail and the quorum. */
	struct stat st;
	if (stat(L->config_path, &st) == 0 && (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
		warn(cfg,
		     "config file %s may be written by its %s: whoever can edit it sets the "
		     "store, the audit directory and approval_quorum of this node's next start "
		     "(chmod go-w %s)",
		     cfg->config_file,
		     (st.st_mode & S_IWOTH) == 0   ? "group"
		     : (st.st_mode & S_IWGRP) == 0 ? "others"
		                                   : "group and others",
		     cfg->config_file);
	HSM_ENSURE(L->text.len == 0 || memchr(L->text.data, 0, L->text.len) == NULL,
	           HSM_ERR_VALIDATION, "config file %s holds a NUL byte", cfg->config_file);
	HSM_GUARD(hsm_buf_terminate(&L->text));
	char *p = (char *)L->text.data;
	/* A UTF-8 byte-order mark, which some editors write first, is no part of the first key. */
	if (L->text.len >= 3 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3;
	for (unsigned no = 1; p != NULL; no++) {
		char *nl = strchr(p, '\n');
		if (nl != NULL)
			*nl = '\0';
		HSM_GUARD(parse_line(L, p, no));
		p = nl != NULL ? nl + 1 : NULL;
	}
	return HSM_SUCCESS;
}

/* ---- resolving --------------------------------------------------------------------- */

static hsm_result set_computed(loader *L, const char *name, const char *value)
{
	const key_def *k = hsm_config_find(name);
	HSM_ASSERT(k != NULL);
	if (L->given[key_index(k)] != NULL)
		return HSM_SUCCESS;
	return hsm_config_set_value(L->cfg, k, &default_src, value);
}

static void host_name(char out[HSM_CONFIG_NAME_MAX])
{
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "hsmd");
	size_t i = 0;
	for (; host[i] != '\0' && i < HSM_CONFIG_NAME_MAX - 1; i++)
		out[i] = isalnum((unsigned char)host[i]) || strchr("._-", host[i]) ? host[i] : '-';
	out[i] = '\0';
}

/* Defaults that depend on other settings, and workers = 0. */
static hsm_result computed_defaults(loader *L)
{
	hsm_config *cfg = L->cfg;
	HSM_GUARD(set_computed(L, "listen", cfg->dev ? "127.0.0.1:8080" : "127.0.0.1:8443"));
	HSM_GUARD(set_computed(L, "data_dir", cfg->dev ? "dev-data" : "/var/lib/hsmd"));
	char buf[HSM_CONFIG_PATH_MAX + 8];
	snprintf(buf, sizeof(buf), "%s/audit", cfg->data_dir);
	HSM_GUARD(set_computed(L, "audit_dir", buf));
	snprintf(buf, sizeof(buf), "%s/backups", cfg->data_dir);
	HSM_GUARD(set_computed(L, "backup_dir", buf));
	/* One node alone sees every change it makes; nodes sharing a store see each other's late. */
	HSM_GUARD(set_computed(L, "store_cache_ms", cfg->store[0] == '\0' ? "0" : "1000"));
	char host[HSM_CONFIG_NAME_MAX];
	host_name(host);
	HSM_GUARD(set_computed(L, "node_id", host));
	if (cfg->workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		cfg->workers = n < 1 ? 1U : n > (long)HSM_HTTP_MAX_WORKERS ? HSM_HTTP_MAX_WORKERS : (unsigned)n;
	}
	return HSM_SUCCESS;
}

static hsm_result resolve(loader *L)
{
	for (size_t i = 0; i < hsm_config_n_keys; i++) {
		const key_def *k = &hsm_config_keys[i];
		const setting *s = L->flag[i].value   ? &L->flag[i]
		                   : L->env[i].value  ? &L->env[i]
		                   : L->file[i].value ? &L->file[i]
		                                      : NULL;
		L->given[i] = s;
		L->cfg->source[i] = (uint8_t)(s != NULL ? s->src : SRC_DEFAULT);
		L->cfg->source_line[i] = s != NULL ? s->line : 0;
		if (s != NULL)
			HSM_GUARD(hsm_config_set_value(L->cfg, k, s, s->value));
		else if (k->def != NULL)
			HSM_GUARD(hsm_config_set_value(L->cfg, k, &default_src, k->def));
	}
	return computed_defaults(L);
}

/* ---- checks across settings ------------------------------------------------------- */

static hsm_result check_tls(loader *L)
{
	hsm_config *cfg = L->cfg;
	char a[HSM_CONFIG_PATH_MAX + 64], b[HSM_CONFIG_PATH_MAX + 64];
	bool tls = cfg->tls_cert[0] != '\0';
	HSM_ENSURE(tls == (cfg->tls_key[0] != '\0'), HSM_ERR_VALIDATION,
	           "%s and %s must be set together", described(L, "tls_cert", a, sizeof(a)),
	           described(L, "tls_key", b, sizeof(b)));
	if (cfg->tls_client_auth != HSM_HTTP_CLIENT_AUTH_NONE) {
		HSM_ENSURE(tls, HSM_ERR_VALIDATION, "%s needs TLS (tls_cert and tls_key)",
		           described(L, "tls_client_auth", a, sizeof(a)));
		HSM_ENSURE(cfg->tls_client_ca[0] != '\0', HSM_ERR_VALIDATION, "%s needs tls_client_ca",
		           described(L, "tls_client_auth", a, sizeof(a)));
	} else if (cfg->tls_client_ca[0] != '\0') {
		warn(cfg, "tls_client_ca is set but tls_client_auth is none: no client certificates");
	}
	return HSM_SUCCESS;
}

/*
 * Production serves TLS only.  Plain HTTP is allowed in dev mode, or on a
 * loopback address when explicitly asked for (a local TLS-terminating proxy
 * in front): nothing else on the network can then reach the plaintext.
 */
static hsm_result check_plaintext(loader *L)
{
	hsm_config *cfg = L->cfg;
	char a[HSM_CONFIG_PATH_MAX + 64];
	if (cfg->tls_cert[0] != '\0')
		return HSM_SUCCESS;
	struct sockaddr_storage ss;
	socklen_t len;
	HSM_GUARD(hsm_http_parse_addr(cfg->listen, &ss, &len)); /* already checked */
	bool loopback = hsm_http_addr_is_loopback(&ss);
	if (cfg->dev) {
		if (!loopback)
			warn(cfg, "dev mode serves plain HTTP on %s, which is not a loopback address",
			     cfg->listen);
		return HSM_SUCCESS;
	}
	HSM_ENSURE(cfg->allow_plaintext_loopback, HSM_ERR_VALIDATION,
	           "production mode needs TLS: set tls_cert and tls_key (or run with --dev; plain "
	           "HTTP on a loopback address needs allow_plaintext_loopback = true)");
	HSM_ENSURE(loopback, HSM_ERR_VALIDATION,
	           "allow_plaintext_loopback allows plain HTTP only on a loopback address, not %s",
	           described(L, "listen", a, sizeof(a)));
	return HSM_SUCCESS;
}

static hsm_result check_together(loader *L)
{
	hsm_config *cfg = L->cfg;
	char a[HSM_CONFIG_PATH_MAX + 64], b[HSM_CONFIG_PATH_MAX + 64];
	HSM_GUARD(check_tls(L));
	HSM_GUARD(check_plaintext(L));
	/* A default lifetime left at its default is capped by a lower maximum; one set is not. */
	if (L->given[key_index(hsm_config_find("jwt_default_lifetime_seconds"))] == NULL &&
	    cfg->jwt_default_lifetime_seconds > cfg->jwt_max_lifetime_seconds)
		cfg->jwt_default_lifetime_seconds = cfg->jwt_max_lifetime_seconds;
	HSM_ENSURE(cfg->jwt_default_lifetime_seconds <= cfg->jwt_max_lifetime_seconds,
	           HSM_ERR_VALIDATION, "%s is longer than %s",
	           described(L, "jwt_default_lifetime_seconds", a, sizeof(a)),
	           described(L, "jwt_max_lifetime_seconds", b, sizeof(b)));
	/* The leader proves its lease once a round: a lease of fewer rounds would lapse between them. */
	HSM_ENSURE(cfg->leader_lease_seconds >= 3 * cfg->scheduler_interval_seconds,
	           HSM_ERR_VALIDATION, "%s is shorter than three rounds of %s",
	           described(L, "leader_lease_seconds", a, sizeof(a)),
	           described(L, "scheduler_interval_seconds", b, sizeof(b)));
	/* A node restarting frees its id for a moment: its rows stay its own to settle. */
	HSM_ENSURE(cfg->outbox_adopt_after_seconds == 0 ||
	               cfg->outbox_adopt_after_seconds >= HSM_OUTBOX_ADOPT_MIN_S,
	           HSM_ERR_VALIDATION, "%s is neither 0 (never) nor at least %d",
	           described(L, "outbox_adopt_after_seconds", a, sizeof(a)), HSM_OUTBOX_ADOPT_MIN_S);
	/* Dev mode keeps its 1-of-1 share beside the data: never beside a store other nodes use. */
	HSM_ENSURE(!cfg->dev || cfg->store[0] == '\0', HSM_ERR_VALIDATION,
	           "dev mode keeps its store in data_dir; a shared store (store = ...) needs a key "
	           "ceremony: run 'hsmctl init --store ...' and start the nodes without --dev");
	/* CRYPTO_secure_malloc_init takes a power of two. */
	HSM_ENSURE((cfg->secure_heap_bytes & (cfg->secure_heap_bytes - 1)) == 0, HSM_ERR_VALIDATION,
	           "%s must be a power of two", described(L, "secure_heap_bytes", a, sizeof(a)));
	return HSM_SUCCESS;
}

/* ---- entry points ----------------------------------------------------------------- */

hsm_result hsm_config_load(hsm_config *cfg, int argc, char *const argv[], char *const envp[],
                           hsm_config_action *action)
{
	HSM_ASSERT(cfg != NULL && action != NULL && (argc <= 0 || argv != NULL));
	HSM_ASSERT(hsm_config_n_keys <= KEYS_MAX);
	hsm_result res = HSM_SUCCESS;
	memset(cfg, 0, sizeof(*cfg));
	if (wants(argc, argv, "--help") || wants(argc, argv, "-h")) {
		*action = HSM_CONFIG_SHOW_HELP;
		return HSM_SUCCESS;
	}
	if (wants(argc, argv, "--version")) {
		*action = HSM_CONFIG_SHOW_VERSION;
		return HSM_SUCCESS;
	}
	loader *L = calloc(1, sizeof(*L));
	HSM_ENSURE(L != NULL, HSM_ERR_NOMEM, "out of memory");
	L->cfg = cfg;
	HSM_TRY(scan_flags(L, argc, argv));
	scan_env(L, envp != NULL ? envp : environ);
	if (L->config_path != NULL)
		HSM_TRY(read_file(L));
	HSM_TRY(resolve(L));
	HSM_TRY(check_together(L));
	*action = HSM_CONFIG_RUN;
out:
	hsm_buf_free(&L->text);
	free(L);
	return res;
}

void hsm_config_source(const hsm_config *cfg, const char *name, char *out, size_t cap)
{
	const key_def *k = hsm_config_find(name);
	HSM_ASSERT(k != NULL);
	size_t i = key_index(k);
	setting s = {NULL, (src_kind)cfg->source[i], cfg->source_line[i]};
	hsm_config_where(cfg, k, &s, out, cap);
}

void hsm_config_http(const hsm_config *cfg, hsm_http_config *http)
{
	hsm_http_config_defaults(http);
	http->listen = cfg->listen;
	http->workers = cfg->workers;
	http->max_body_bytes = (size_t)cfg->max_body_bytes;
	http->max_header_bytes = (size_t)cfg->max_header_bytes;
	http->read_timeout_ms = cfg->read_timeout_ms;
	http->idle_timeout_ms = cfg->idle_timeout_ms;
	http->write_timeout_ms = cfg->write_timeout_ms;
	http->max_connections = cfg->max_connections;
	http->max_connections_per_source = cfg->max_connections_per_source;
	http->batch_scheduling = cfg->batch_scheduling;
	http->tls_cert = cfg->tls_cert[0] != '\0' ? cfg->tls_cert : NULL;
	http->tls_key = cfg->tls_key[0] != '\0' ? cfg->tls_key : NULL;
	http->tls_client_ca = cfg->tls_client_ca[0] != '\0' ? cfg->tls_client_ca : NULL;
	http->client_auth = cfg->tls_client_auth;
	http->proxy_protocol_from = cfg->proxy_protocol_from;
}

static bool is_text(key_type t)
{
	return t != K_BOOL && t != K_U32 && t != K_SIZE && t != K_AUTH && t != K_LOG;
}

size_t hsm_config_changed(const hsm_config *a, const hsm_config *b, const char **names,
                          size_t cap)
{
	HSM_ASSERT(a != NULL && b != NULL && (names != NULL || cap == 0));
	size_t n = 0;
	for (size_t i = 0; i < hsm_config_n_keys; i++) {
		const key_def *k = &hsm_config_keys[i];
		const char *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;
		/* Text fields are compared up to their NUL: the bytes after it are not the value. */
		bool same = is_text(k->type) ? strncmp(fa, fb, k->size) == 0
		                             : hsm_ct_equal(fa, fb, k->size);
		if (!same && n++ < cap)
			names[n - 1] = k->name;
	}
	return n;
}
