/*
 * hsmd - the daemon.  Settings come from flags, HSM_* environment variables
 * and a config file (server/config.h); see `hsmd --help` and the README.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/log.h"
#include "common/secret.h"
#include "server/config.h"
#include "server/server.h"
#include "store/store.h"

#define DEV_DEFAULT_AKID "AKIAHSMDDEVELOPMENT1"
#define DEV_DEFAULT_SECRET "hsmd-dev-secret-do-not-use-in-production"

extern char **environ;

static void options_from(const hsm_config *cfg, hsm_server_options *o)
{
	memset(o, 0, sizeof(*o));
	hsm_config_http(cfg, &o->http);
	o->data_dir = cfg->data_dir;
	o->store = cfg->store;
	o->store_cache_ms = cfg->store_cache_ms;
	o->key_usage_flush_ms = cfg->key_usage_flush_ms;
	o->audit_dir = cfg->audit_dir[0] ? cfg->audit_dir : NULL;
	o->node_id = cfg->node_id;
	o->region = cfg->region;
	o->account_id = cfg->account_id;
	o->sigv4_skew_seconds = cfg->sigv4_skew_seconds;
	o->lockout_threshold = cfg->lockout_threshold;
	o->refusal_record_rate = cfg->refusal_record_rate;
	o->refusal_record_rate_total = cfg->refusal_record_rate_total;
	o->audit_fsync_ms = cfg->audit_fsync_ms;
	o->audit_fsync_max_lag_ms = cfg->audit_fsync_max_lag_ms;
	o->audit_rotate_bytes = cfg->audit_rotate_bytes;
	o->audit_rotate_seconds = cfg->audit_rotate_seconds;
	o->audit_retention_days = cfg->audit_retention_days;
	o->audit_copy_dir = cfg->audit_copy_dir[0] ? cfg->audit_copy_dir : NULL;
	o->backup_dir = cfg->backup_dir;
	o->backup_copy_dir = cfg->backup_copy_dir[0] ? cfg->backup_copy_dir : NULL;
	o->backup_interval = cfg->backup_interval_seconds;
	o->scheduler_interval = cfg->scheduler_interval_seconds;
	o->leader_lease = cfg->leader_lease_seconds;
	o->outbox_adopt_after = cfg->outbox_adopt_after_seconds;
	o->backup_retention_days = cfg->backup_retention_days;
	o->audit_checkpoint_seconds = cfg->audit_checkpoint_seconds;
	o->audit_syslog = cfg->audit_syslog;
	o->audit_ack_durable = cfg->audit_ack_durable;
	o->tls_watch = cfg->tls_watch;
	o->jwt_default_lifetime = cfg->jwt_default_lifetime_seconds;
	o->jwt_max_lifetime = cfg->jwt_max_lifetime_seconds;
	o->jwt_clock_skew = cfg->jwt_clock_skew_seconds;
	o->secure_heap_bytes = cfg->secure_heap_bytes;
	o->dev = cfg->dev;
	o->approval_quorum = cfg->approval_quorum;
	o->approval_ttl = cfg->approval_ttl_seconds;
	o->approval_operations = cfg->approval_operations;
	o->unseal_timeout = cfg->unseal_timeout_seconds;
}

static hsm_result dev_credentials(char *akid, size_t cap, hsm_secret **secret)
{
	const char *id = getenv("HSM_DEV_ACCESS_KEY_ID"), *key = getenv("HSM_DEV_SECRET_ACCESS_KEY");
	HSM_GUARD(hsm_strcpy(akid, cap, id != NULL ? id : DEV_DEFAULT_AKID));
	if (key == NULL)
		key = DEV_DEFAULT_SECRET;
	return hsm_secret_from(key, strlen(key), secret);
}

/* The address served, with the port bound (the one the system chose for a port of 0). */
#define BOUND_ADDRESS_MAX 320
static void bound_address(hsm_server *s, char *out, size_t cap)
{
	const char *listen = s->opt.http.listen;
	const char *colon = strrchr(listen, ':');
	int host = colon != NULL ? (int)(colon - listen) : (int)strlen(listen);
	snprintf(out, cap, "%.*s:%u", host, listen, (unsigned)hsm_server_port(s));
}

static void announce_dev(hsm_server *s, const char *akid, const hsm_secret *secret)
{
	char addr[BOUND_ADDRESS_MAX];
	bound_address(s, addr, sizeof(addr));
	int n = (int)hsm_secret_len(secret);
	const char *k = (const char *)hsm_secret_bytes(secret);
	bool tls = s->opt.http.tls_cert != NULL;
	const char *scheme = tls ? "https" : "http";
	fprintf(stderr,
	        "\n*** hsmd DEVELOPMENT MODE: 1-of-1 master key share stored next to the data,\n"
	        "*** auto-unsealed, %s.  Never use it for real keys.\n\n"
	        "endpoint:          %s://%s\n"
	        "data directory:    %s\n"
	        "access key id:     %s\n"
	        "secret access key: %.*s\n"
	        "region:            %s\n\n"
	        "  export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%.*s AWS_DEFAULT_REGION=%s\n"
	        "  aws kms create-key --endpoint-url %s://%s\n\n",
	        tls ? "TLS" : "plain HTTP", scheme, addr, s->data_dir, akid, n, k, s->region, akid,
	        n, k, s->region, scheme, addr);
}

/* Loads the configuration; returns -1 to continue, else the exit code. */
static int load_config(int argc, char **argv, hsm_config *cfg)
{
	hsm_config_action action;
	if (hsm_failed(hsm_config_load(cfg, argc, argv, environ, &action))) {
		fprintf(stderr, "hsmd: %s\n", hsm_last_message());
		return 2;
	}
	if (action == HSM_CONFIG_SHOW_HELP) {
		fputs(hsm_config_usage(), stdout);
		return 0;
	}
	if (action == HSM_CONFIG_SHOW_VERSION) {
		printf("hsmd %s\n", hsm_version());
		return 0;
	}
	hsm_log_set_level(cfg->log_level);
	for (unsigned i = 0; i < cfg->n_warnings; i++)
		hsm_warn("%s", cfg->warnings[i]);
	return -1;
}

/* Start-up: the server, and in dev mode the automatic init/unseal and dev user. */
static hsm_result start(const hsm_config *cfg, hsm_server **out, const char **failed_setting)
{
	hsm_result res = HSM_SUCCESS;
	hsm_server_options opt;
	hsm_server *s = NULL;
	hsm_secret *dev_secret = NULL;
	char akid[64];
	options_from(cfg, &opt);
	opt.failed_setting = failed_setting;
	HSM_TRY(hsm_server_new(&opt, &s));
	if (cfg->dev) {
		HSM_TRY(dev_credentials(akid, sizeof(akid), &dev_secret));
		HSM_TRY(hsm_server_dev_bootstrap(s, akid, dev_secret));
	}
	HSM_TRY(hsm_server_start(s));
	if (cfg->dev)
		announce_dev(s, akid, dev_secret);
	*out = s;
	s = NULL;
out:
	hsm_secret_free(dev_secret);
	hsm_server_free(s);
	return res;
}

int main(int argc, char **argv)
{
	static hsm_config cfg;
	/* Before anything uses OpenSSL: what it frees is wiped (private keys' DER). */
	if (hsm_failed(hsm_wipe_openssl_frees())) {
		hsm_log_failure("start-up");
		return 1;
	}
	/* Every user may read /proc/PID/cmdline: a password in --store is masked
	 * there at once, and hsmd goes on with a copy of its arguments (which the
	 * configuration is read from again on SIGHUP). */
	bool masked = false;
	if (hsm_failed(hsm_args_hide_passwords(argc, argv, &argv, &masked))) {
		hsm_log_failure("start-up");
		return 1;
	}
	int rc = load_config(argc, argv, &cfg);
	if (rc >= 0)
		return rc;
	if (masked)
		hsm_warn("%s", HSM_ARGS_PASSWORD_WARNING);
	if (hsm_failed(hsm_secure_process_init(cfg.secure_heap_bytes))) {
		hsm_log_failure("start-up");
		return 1;
	}
	/* Request and response bytes (shares, plaintexts, data keys, context
	 * values) pass through jansson's memory: wipe it on free.  (The HTTP
	 * server wipes its own buffers.) */
	json_set_alloc_funcs(hsm_wiping_malloc, hsm_wiping_free);
	/* Every thread inherits this mask; main alone takes the signals, with sigwait. */
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	hsm_server *s = NULL;
	const char *setting = NULL;
	if (hsm_failed(start(&cfg, &s, &setting))) {
		if (setting == NULL) {
			hsm_log_failure("start-up");
			return 1;
		}
		/* A setting's fault, told like the configuration's own errors: for the operator. */
		char where[HSM_CONFIG_PATH_MAX + 16];
		hsm_config_source(&cfg, setting, where, sizeof(where));
		fprintf(stderr, "hsmd: %s (%s from %s)\n", hsm_last_message(), setting, where);
		/* A shared store out of reach (restarting, failing over, its host still booting)
		 * is no setting refused: exit 1, which the unit restarts (2 it does not). */
		if (strcmp(setting, "store") == 0 &&
		    strncmp(hsm_last_message(), HSM_STORE_CONNECT_FAILED,
		            strlen(HSM_STORE_CONNECT_FAILED)) == 0)
			return 1;
		return 2;
	}
	char store[256];
	hsm_location_shown(cfg.store[0] != '\0' ? cfg.store : cfg.data_dir, store, sizeof(store));
	char addr[BOUND_ADDRESS_MAX];
	bound_address(s, addr, sizeof(addr));
	hsm_info("hsmd %s listening on %s (%s), store %s", hsm_version(), addr,
	         hsm_node_state_name(hsm_keystore_state(s->ks)), store);
	hsm_stack_wipe(); /* the start's unseal (dev mode) and TLS key */
	for (;;) {
		int sig = 0;
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig != SIGHUP)
			break;
		/* An edited configuration and a renewed certificate without a restart, which
		 * would seal the node; each is logged, counted and recorded there. */
		(void)hsm_server_reload_config(s, &cfg, argc, argv);
		(void)hsm_server_reload_tls(s, "signal");
		hsm_stack_wipe();
	}
	hsm_info("stopping");
	bool lost = hsm_server_node_id_lost(s);
	hsm_server_free(s);
	return lost ? 1 : 0;
}
