/*
 * config.h - every hsmd setting, its default, and where it came from.
 *
 * Sources, strongest first:
 *   1. command-line flags      --max-body-bytes=2M  or  --max-body-bytes 2M
 *   2. environment variables   HSM_MAX_BODY_BYTES=2M
 *   3. the configuration file  max_body_bytes = 2M      (--config FILE or HSM_CONFIG)
 *   4. built-in defaults
 *
 * File format: one "key = value" per line; blank lines and lines whose first
 * non-blank character is '#' are ignored; a '#' elsewhere is part of the
 * value; surrounding blanks are trimmed and a value may be wrapped in double
 * quotes to keep them.  A key may appear once; an unknown key is an error
 * naming the file and line.
 *
 * Values: booleans are true/false, yes/no, on/off or 1/0; sizes are bytes
 * with an optional K, M or G suffix (binary: 1K = 1024; KiB, MiB, GiB also
 * accepted); durations are whole milliseconds or seconds as the key's name
 * says.  A boolean flag given alone (--dev) means true.
 *
 * Every value is checked (ranges, TLS files readable, the listen address
 * parses), and an error names the setting and its source: "--listen",
 * "HSM_LISTEN", "/etc/hsmd.conf:12" or "default".
 *
 * Production (without dev = true) requires TLS (tls_cert and tls_key).  The
 * one exception is plain HTTP on a loopback address with
 * allow_plaintext_loopback = true, for a node behind a local TLS-terminating
 * proxy.
 *
 * HSM_* environment variables that are not settings are ignored with a
 * warning (in hsm_config.warnings), except HSM_DEV_ACCESS_KEY_ID and
 * HSM_DEV_SECRET_ACCESS_KEY, which dev mode reads elsewhere.
 */
#ifndef HSM_SERVER_CONFIG_H
#define HSM_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"
#include "common/result.h"
#include "server/http.h"

#define HSM_CONFIG_PATH_MAX 1024
#define HSM_CONFIG_NAME_MAX 64
#define HSM_CONFIG_MAX_WARNINGS 8
#define HSM_CONFIG_KEYS_MAX 64

/* The operations that wait for approval unless approval_operations says otherwise. */
#define HSM_APPROVAL_OPS_DEFAULT                                                                \
	"ScheduleKeyDeletion,DeleteImportedKeyMaterial,PutKeyPolicy,CreateUser,EnableUser,"       \
	"UnlockUser,CreateAccessKey"
#define HSM_APPROVAL_OPS_MAX 1024
/* The text of proxy_protocol_from (at most HSM_HTTP_PROXY_NETS_MAX networks). */
#define HSM_CONFIG_NETS_MAX 4096

typedef struct hsm_config {
	/* network */
	char listen[HSM_HTTP_ADDR_MAX];
	char tls_cert[HSM_CONFIG_PATH_MAX];      /* "" when not set */
	char tls_key[HSM_CONFIG_PATH_MAX];
	char tls_client_ca[HSM_CONFIG_PATH_MAX];
	hsm_http_client_auth tls_client_auth;
	bool allow_plaintext_loopback;
	unsigned workers;                         /* resolved: never 0 */
	uint64_t max_body_bytes;
	uint64_t max_header_bytes;
	uint32_t read_timeout_ms;
	uint32_t idle_timeout_ms;
	uint32_t write_timeout_ms;
	uint32_t shutdown_grace_ms;
	uint32_t max_connections;
	uint32_t max_connections_per_source; /* 0: no bound */
	bool batch_scheduling; /* workers and audit writer under SCHED_BATCH */
	bool tls_watch;        /* load the TLS files again when they change */
	char proxy_protocol_from[HSM_CONFIG_NETS_MAX]; /* "" when none */
	/* identity */
	char data_dir[HSM_CONFIG_PATH_MAX];
	char store[HSM_CONFIG_PATH_MAX]; /* "" for SQLite in data_dir; a URI may hold a password */
	uint32_t store_cache_ms;         /* key metadata cache lifetime; 0: until changed here */
	uint32_t key_usage_flush_ms;     /* last uses of keys written to the store this often */
	uint32_t scheduler_interval_seconds; /* a node's background rounds (server.c) */
	uint32_t leader_lease_seconds;   /* a shared store's leadership, lost after this idle */
	uint32_t outbox_adopt_after_seconds; /* another node's rows this old are adopted; 0: never */
#define HSM_OUTBOX_ADOPT_MIN_S 60            /* its least value but 0 */
	char region[HSM_CONFIG_NAME_MAX];
	char account_id[13];
	char node_id[HSM_CONFIG_NAME_MAX];
	/* backups */
	char backup_dir[HSM_CONFIG_PATH_MAX];
	uint32_t backup_interval_seconds;
	uint32_t backup_retention_days;
	char backup_copy_dir[HSM_CONFIG_PATH_MAX];
	/* audit */
	char audit_dir[HSM_CONFIG_PATH_MAX];
	char audit_copy_dir[HSM_CONFIG_PATH_MAX];
	uint32_t audit_fsync_ms;
	uint32_t audit_fsync_max_lag_ms;
	uint64_t audit_rotate_bytes;
	uint32_t audit_rotate_seconds;
	uint32_t audit_retention_days;
	uint32_t audit_checkpoint_seconds;
	bool audit_syslog;
	bool audit_ack_durable;
	/* authentication and tokens */
	uint32_t jwt_default_lifetime_seconds;
	uint32_t jwt_max_lifetime_seconds;
	uint32_t jwt_clock_skew_seconds;
	uint32_t sigv4_skew_seconds;
	uint32_t lockout_threshold;
	uint32_t refusal_record_rate;
	uint32_t refusal_record_rate_total;
	/* quorum approvals */
	uint32_t approval_quorum;
	char approval_operations[HSM_APPROVAL_OPS_MAX];
	uint32_t approval_ttl_seconds;
	/* unseal */
	uint32_t unseal_timeout_seconds; /* an unfinished unseal's shares are wiped after this */
	/* process */
	uint64_t secure_heap_bytes;
	hsm_log_level log_level;
	bool dev;
	char config_file[HSM_CONFIG_PATH_MAX]; /* the file loaded, "" if none */
	/* Findings that do not stop the daemon, for it to log. */
	unsigned n_warnings;
	char warnings[HSM_CONFIG_MAX_WARNINGS][HSM_ERRMSG_MAX];
	/* Where each setting came from, by its place in the table (hsm_config_source). */
	uint8_t source[HSM_CONFIG_KEYS_MAX];
	unsigned source_line[HSM_CONFIG_KEYS_MAX];
} hsm_config;

typedef enum hsm_config_action {
	HSM_CONFIG_RUN,          /* cfg is loaded and valid */
	HSM_CONFIG_SHOW_HELP,    /* --help: print hsm_config_usage(), exit 0 */
	HSM_CONFIG_SHOW_VERSION, /* --version: print hsm_version(), exit 0 */
} hsm_config_action;

/*
 * Loads the configuration from argv (argv[0] is the program and is skipped),
 * envp (NULL-terminated "NAME=value" strings; NULL means the process
 * environment) and the file named by --config or HSM_CONFIG.  On success *cfg
 * is complete and validated (for RUN) and *action says what to do.  On
 * failure *cfg is unspecified and hsm_last_message() names the setting, the
 * source and the problem.
 */
hsm_result hsm_config_load(hsm_config *cfg, int argc, char *const argv[], char *const envp[],
                           hsm_config_action *action) HSM_MUST_CHECK;

/*
 * Where the setting called name (snake_case) came from, for messages about it
 * once loaded: "--backup-dir", "HSM_BACKUP_DIR", "/etc/hsmd.conf:21" or
 * "default".
 */
void hsm_config_source(const hsm_config *cfg, const char *name, char *out, size_t cap);

/*
 * The settings whose values differ between a and b, by name (static
 * storage), in the order of --help: the first cap of them go to names.
 * Returns how many differ, which may be more than cap.
 */
size_t hsm_config_changed(const hsm_config *a, const hsm_config *b, const char **names,
                          size_t cap);
/*
 * The value of the setting called name in cfg as text, for messages about
 * it: "true", "90", "info", a path; a store URI without its password
 * (hsm_location_shown).  Truncated to fit cap.
 */
void hsm_config_value_text(const hsm_config *cfg, const char *name, char *out, size_t cap);
/* The --help text (static storage). */
const char *hsm_config_usage(void);

/* The HTTP server settings of cfg; the strings point into cfg. */
void hsm_config_http(const hsm_config *cfg, hsm_http_config *http);

#endif
