/*
 * config_test.c - configuration loading: precedence of flags, environment,
 * file and defaults; value syntax; every validation error naming its
 * setting and source; the production TLS rule.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/config.h"

static char dir[64];
static char conf[128], cert[128], key[128], ca[128];

static void write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/hsm-cfg-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/hsmd.conf", dir);
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	/* The configuration checks only that TLS files are readable; the server parses them. */
	write_text(cert, "cert\n");
	write_text(key, "key\n");
	write_text(ca, "ca\n");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(conf), unlink(cert), unlink(key), unlink(ca);
	rmdir(dir);
	return 0;
}

/* Loads with argv = {"hsmd", args...} (NULL-terminated) and the given environment. */
static hsm_result load_v(hsm_config *cfg, char *const *env, const char *const *args)
{
	char *argv[32] = {"hsmd"};
	int argc = 1;
	while (args[argc - 1] != NULL && argc < 31) {
		argv[argc] = (char *)args[argc - 1];
		argc++;
	}
	hsm_config_action action;
	char *empty[] = {NULL};
	hsm_result r = hsm_config_load(cfg, argc, argv, env != NULL ? env : empty, &action);
	if (hsm_ok(r))
		assert_int_equal(action, HSM_CONFIG_RUN);
	return r;
}

#define LOAD(cfg, env, ...) load_v((cfg), (env), (const char *const[]){__VA_ARGS__, NULL})

static void expect_error(char *const *env, const char *part, const char *const *args)
{
	hsm_config cfg;
	assert_true(hsm_failed(load_v(&cfg, env, args)));
	if (strstr(hsm_last_message(), part) == NULL)
		fail_msg("error '%s' does not contain '%s'", hsm_last_message(), part);
}

#define EXPECT_ERROR(env, part, ...) expect_error((env), (part), (const char *const[]){__VA_ARGS__, NULL})

static void test_precedence(void **state)
{
	(void)state;
	write_text(conf, "# settings file\n"
	                 "max_body_bytes = 2M\n"
	                 "region = eu-west-1\n"
	                 "sigv4_skew_seconds = 100\n"
	                 "lockout_threshold = 7\n"
	                 "dev = true\n");
	char *env[] = {"HSM_MAX_BODY_BYTES=3M", "HSM_REGION=ap-south-1", "HSM_SIGV4_SKEW_SECONDS=200",
	               "PATH=/usr/bin", NULL};
	hsm_config cfg;
	char flag[160];
	snprintf(flag, sizeof(flag), "--config=%s", conf);
	assert_true(hsm_ok(LOAD(&cfg, env, flag, "--max-body-bytes", "4M")));
	assert_int_equal(cfg.max_body_bytes, 4 << 20);   /* flag over env and file */
	assert_string_equal(cfg.region, "ap-south-1");    /* env over file */
	assert_int_equal(cfg.sigv4_skew_seconds, 200);    /* env over file */
	assert_int_equal(cfg.lockout_threshold, 7);       /* file over default */
	assert_int_equal(cfg.jwt_default_lifetime_seconds, 900); /* default */
	assert_true(cfg.dev);
	/* The default lifetime, not set, follows a maximum set below it. */
	hsm_config low;
	assert_true(hsm_ok(LOAD(&low, NULL, "--dev", "--jwt-max-lifetime-seconds=600")));
	assert_int_equal(low.jwt_default_lifetime_seconds, 600);
	assert_int_equal(low.jwt_max_lifetime_seconds, 600);
	assert_string_equal(cfg.config_file, conf);
	/* The file may also be named by HSM_CONFIG; a --config flag wins over it. */
	char env_conf[160];
	snprintf(env_conf, sizeof(env_conf), "HSM_CONFIG=%s", conf);
	char *env2[] = {env_conf, NULL};
	assert_true(hsm_ok(LOAD(&cfg, env2, "--workers=3")));
	assert_string_equal(cfg.region, "eu-west-1");
	assert_int_equal(cfg.workers, 3);
	char *env3[] = {"HSM_CONFIG=/nonexistent/hsmd.conf", NULL};
	assert_true(hsm_ok(LOAD(&cfg, env3, flag)));
	EXPECT_ERROR(env3, "config file (from HSM_CONFIG)", "--dev");
}

static void test_defaults(void **state)
{
	(void)state;
	hsm_config cfg;
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev")));
	assert_string_equal(cfg.listen, "127.0.0.1:8080");
	assert_string_equal(cfg.data_dir, "dev-data");
	assert_string_equal(cfg.audit_dir, "dev-data/audit");
	assert_string_equal(cfg.region, "us-east-1");
	assert_string_equal(cfg.account_id, "111122223333");
	assert_int_equal(cfg.audit_retention_days, 2557);
	assert_int_equal(cfg.jwt_max_lifetime_seconds, 86400);
	assert_int_equal(cfg.sigv4_skew_seconds, 300);
	assert_int_equal(cfg.lockout_threshold, 5);
	assert_int_equal(cfg.max_body_bytes, 1 << 20);
	assert_int_equal(cfg.max_header_bytes, 16 << 10);
	assert_int_equal(cfg.read_timeout_ms, 10000);
	assert_int_equal(cfg.idle_timeout_ms, 60000);
	assert_int_equal(cfg.max_connections, 10000);
	assert_int_equal(cfg.secure_heap_bytes, 64 << 20);
	assert_int_equal(cfg.log_level, HSM_LOG_INFO);
	assert_int_equal(cfg.tls_client_auth, HSM_HTTP_CLIENT_AUTH_NONE);
	assert_true(cfg.workers >= 1);
	assert_true(strlen(cfg.node_id) > 0);
	assert_false(cfg.audit_syslog);
	assert_false(cfg.audit_ack_durable);
	assert_true(cfg.batch_scheduling);
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", "--data-dir=/srv/hsm", "--listen=[::1]:9")));
	assert_string_equal(cfg.audit_dir, "/srv/hsm/audit");
	assert_string_equal(cfg.listen, "[::1]:9");
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--tls-cert", cert, "--tls-key", key)));
	assert_false(cfg.dev);
	assert_string_equal(cfg.listen, "127.0.0.1:8443");
	assert_string_equal(cfg.data_dir, "/var/lib/hsmd");
	hsm_http_config http;
	hsm_config_http(&cfg, &http);
	assert_string_equal(http.listen, "127.0.0.1:8443");
	assert_string_equal(http.tls_cert, cert);
	assert_null(http.tls_client_ca);
	assert_int_equal(http.max_body_bytes, 1 << 20);
	assert_int_equal(http.workers, cfg.workers);
	assert_true(http.batch_scheduling);
	assert_true(cfg.tls_watch); /* on by default: renewed TLS files load without a restart */
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", "--batch-scheduling=false", "--tls-watch=false")));
	assert_false(cfg.batch_scheduling);
	assert_false(cfg.tls_watch);
	hsm_config_http(&cfg, &http);
	assert_false(http.batch_scheduling);
}

static void test_booleans_and_sizes(void **state)
{
	(void)state;
	hsm_config cfg;
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev=yes", "--audit-syslog=ON")));
	assert_true(cfg.dev && cfg.audit_syslog);
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", "--audit-syslog=0")));
	assert_false(cfg.audit_syslog);
	char *env[] = {"HSM_DEV=on", "HSM_AUDIT_SYSLOG=False", NULL};
	assert_true(hsm_ok(LOAD(&cfg, env, "--max-header-bytes=16K")));
	assert_true(cfg.dev);
	assert_false(cfg.audit_syslog);
	assert_int_equal(cfg.max_header_bytes, 16384);
	const struct {
		const char *text;
		uint64_t bytes;
	} sizes[] = {{"1048576", 1 << 20}, {"2048k", 2 << 20}, {"2MiB", 2 << 20}, {"3 MB", 3 << 20},
	             {"512M", 512ULL << 20}};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char flag[64];
		snprintf(flag, sizeof(flag), "--audit-rotate-bytes=%s", sizes[i].text);
		assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", flag)));
		assert_int_equal(cfg.audit_rotate_bytes, sizes[i].bytes);
	}
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", "--secure-heap-bytes=1gib")));
	assert_int_equal(cfg.secure_heap_bytes, 1ULL << 30);
	/* audit verify reads files of up to 1 GiB: a rotation size past 512 MiB would make
	 * files it cannot read. */
	EXPECT_ERROR(NULL, "out of range [1048576, 536870912]", "--dev", "--audit-rotate-bytes=1G");
	EXPECT_ERROR(NULL, "unknown size unit", "--dev", "--audit-rotate-bytes=1T");
	EXPECT_ERROR(NULL, "size too large", "--dev", "--audit-rotate-bytes=999999999999G");
	EXPECT_ERROR(NULL, "expected a size", "--dev", "--audit-rotate-bytes=M");
	EXPECT_ERROR(NULL, "dev = 'maybe' (from --dev): expected true or false", "--dev=maybe");
}

static void test_validation_errors(void **state)
{
	(void)state;
	char *env[] = {"HSM_READ_TIMEOUT_MS=abc", NULL};
	EXPECT_ERROR(env, "read_timeout_ms = 'abc' (from HSM_READ_TIMEOUT_MS): expected a whole number",
	             "--dev");
	EXPECT_ERROR(NULL, "workers = '300' (from --workers): out of range [0, 256]", "--dev",
	             "--workers=300");
	EXPECT_ERROR(NULL, "read_timeout_ms = '-5' (from --read-timeout-ms)", "--dev",
	             "--read-timeout-ms=-5");
	EXPECT_ERROR(NULL, "max_body_bytes = '1' (from --max-body-bytes): out of range", "--dev",
	             "--max-body-bytes=1");
	EXPECT_ERROR(NULL, "listen = '1.2.3.4' (from --listen)", "--dev", "--listen=1.2.3.4");
	EXPECT_ERROR(NULL, "listen = 'localhost:80'", "--dev", "--listen", "localhost:80");
	EXPECT_ERROR(NULL, "tls_cert = '/nonexistent/c.pem' (from --tls-cert): no such file",
	             "--tls-cert=/nonexistent/c.pem", "--tls-key", key);
	EXPECT_ERROR(NULL, "tls_key = '/tmp' (from --tls-key): not a regular file", "--tls-cert", cert,
	             "--tls-key=/tmp");
	EXPECT_ERROR(NULL, "tls_client_auth = 'maybe'", "--dev", "--tls-client-auth=maybe");
	EXPECT_ERROR(NULL, "log_level = 'loud'", "--dev", "--log-level=loud");
	EXPECT_ERROR(NULL, "region = 'US_EAST'", "--dev", "--region=US_EAST");
	EXPECT_ERROR(NULL, "account_id = '123' (from --account-id): expected 12 digits", "--dev",
	             "--account-id=123");
	EXPECT_ERROR(NULL, "node_id = 'a b'", "--dev", "--node-id=a b");
	/* A node's name also names its directory in audit_copy_dir. */
	EXPECT_ERROR(NULL, "node_id = '..' (from --node-id): expected", "--dev", "--node-id=..");
	EXPECT_ERROR(NULL, "node_id = '.' (from --node-id): expected", "--dev", "--node-id=.");
	EXPECT_ERROR(NULL, "data_dir = '' (from --data-dir): a directory is required", "--dev",
	             "--data-dir=");
	EXPECT_ERROR(NULL, "secure_heap_bytes (from --secure-heap-bytes) must be a power of two", "--dev",
	             "--secure-heap-bytes=3M");
	EXPECT_ERROR(NULL, "jwt_default_lifetime_seconds (from --jwt-default-lifetime-seconds) is longer "
	                   "than jwt_max_lifetime_seconds (from default)",
	             "--dev", "--jwt-default-lifetime-seconds=90000");
	EXPECT_ERROR(NULL, "jwt_default_lifetime_seconds (from --jwt-default-lifetime-seconds) is longer "
	                   "than jwt_max_lifetime_seconds (from --jwt-max-lifetime-seconds)",
	             "--dev", "--jwt-default-lifetime-seconds=900", "--jwt-max-lifetime-seconds=600");
	/* The leader proves its lease once a round: three rounds at least, and a round 1-60 s. */
	EXPECT_ERROR(NULL, "leader_lease_seconds (from default) is shorter than three rounds of "
	                   "scheduler_interval_seconds (from --scheduler-interval-seconds)",
	             "--dev", "--scheduler-interval-seconds=11");
	EXPECT_ERROR(NULL, "leader_lease_seconds (from --leader-lease-seconds) is shorter than three "
	                   "rounds of scheduler_interval_seconds (from default)",
	             "--dev", "--leader-lease-seconds=14");
	EXPECT_ERROR(NULL, "scheduler_interval_seconds = '0'", "--dev", "--scheduler-interval-seconds=0");
	EXPECT_ERROR(NULL, "scheduler_interval_seconds = '61'", "--dev",
	             "--scheduler-interval-seconds=61");
	hsm_config rounds;
	assert_true(hsm_ok(LOAD(&rounds, NULL, "--dev", "--scheduler-interval-seconds=1",
	                        "--leader-lease-seconds=3")));
	assert_int_equal(rounds.scheduler_interval_seconds, 1);
	assert_int_equal(rounds.leader_lease_seconds, 3);
	assert_true(hsm_ok(LOAD(&rounds, NULL, "--dev")));
	assert_int_equal(rounds.scheduler_interval_seconds, 5); /* defaults */
	assert_int_equal(rounds.leader_lease_seconds, 30);
	/* Another node's outbox rows adopted after an hour by default; 0: never; else 60 s at least. */
	assert_int_equal(rounds.outbox_adopt_after_seconds, 3600);
	EXPECT_ERROR(NULL, "outbox_adopt_after_seconds (from --outbox-adopt-after-seconds) is neither 0 "
	                   "(never) nor at least 60",
	             "--dev", "--outbox-adopt-after-seconds=59");
	EXPECT_ERROR(NULL, "outbox_adopt_after_seconds = '31622401'", "--dev",
	             "--outbox-adopt-after-seconds=31622401");
	EXPECT_ERROR(NULL, "outbox_adopt_after_seconds = '-1'", "--dev",
	             "--outbox-adopt-after-seconds=-1");
	assert_true(hsm_ok(LOAD(&rounds, NULL, "--dev", "--outbox-adopt-after-seconds=0")));
	assert_int_equal(rounds.outbox_adopt_after_seconds, 0);
	assert_true(hsm_ok(LOAD(&rounds, NULL, "--dev", "--outbox-adopt-after-seconds=60")));
	assert_int_equal(rounds.outbox_adopt_after_seconds, 60);
	char *adopt_env[] = {"HSM_OUTBOX_ADOPT_AFTER_SECONDS=86400", NULL};
	assert_true(hsm_ok(LOAD(&rounds, adopt_env, "--dev")));
	assert_int_equal(rounds.outbox_adopt_after_seconds, 86400);
	EXPECT_ERROR(NULL, "tls_cert (from --tls-cert) and tls_key (from default) must be set together",
	             "--tls-cert", cert);
	EXPECT_ERROR(NULL, "tls_client_auth (from --tls-client-auth) needs tls_client_ca", "--tls-cert",
	             cert, "--tls-key", key, "--tls-client-auth=required");
	EXPECT_ERROR(NULL, "needs TLS", "--dev", "--tls-client-auth=optional", "--tls-client-ca", ca);
	/* Command-line syntax. */
	EXPECT_ERROR(NULL, "unknown option '--bogus'", "--dev", "--bogus=1");
	EXPECT_ERROR(NULL, "unknown option '--max_body_bytes'", "--dev", "--max_body_bytes=2M");
	EXPECT_ERROR(NULL, "unexpected argument 'serve'", "--dev", "serve");
	EXPECT_ERROR(NULL, "option '--listen' needs a value", "--dev", "--listen");
	hsm_config cfg;
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", "--tls-cert", cert, "--tls-key", key,
	                        "--tls-client-auth=required", "--tls-client-ca", ca)));
	assert_int_equal(cfg.tls_client_auth, HSM_HTTP_CLIENT_AUTH_REQUIRED);
}

static void test_file_syntax(void **state)
{
	(void)state;
	char flag[160], want[200];
	snprintf(flag, sizeof(flag), "--config=%s", conf);
	write_text(conf, "region = us-east-1\r\n\n   # a comment\nfoo = 1\n");
	snprintf(want, sizeof(want), "%s:4: unknown key 'foo'", conf);
	EXPECT_ERROR(NULL, want, flag, "--dev");
	write_text(conf, "dev = true\nlisten 127.0.0.1:1\n");
	snprintf(want, sizeof(want), "%s:2: expected 'key = value'", conf);
	EXPECT_ERROR(NULL, want, flag);
	write_text(conf, "dev = true\nregion = eu-west-1\nregion = eu-west-2\n");
	snprintf(want, sizeof(want), "%s:3: 'region' is already set on line 2", conf);
	EXPECT_ERROR(NULL, want, flag);
	write_text(conf, "dev = true\nnode_id = \"unterminated\n");
	EXPECT_ERROR(NULL, "unterminated quoted value", flag);
	write_text(conf, "dev = true\n\nlisten = 1.2.3.4\n");
	snprintf(want, sizeof(want), "listen = '1.2.3.4' (from %s:3)", conf);
	EXPECT_ERROR(NULL, want, flag);
	/* Blanks around keys and values, quotes, '#' inside a value, CRLF, no final newline. */
	write_text(conf, "  dev=yes  \r\n\tdata_dir = \"/srv/with space/#1 \"\r\nnode_id =n-1");
	hsm_config cfg;
	assert_true(hsm_ok(LOAD(&cfg, NULL, flag)));
	assert_string_equal(cfg.data_dir, "/srv/with space/#1 ");
	assert_string_equal(cfg.node_id, "n-1");
	write_text(conf, "");
	assert_true(hsm_ok(LOAD(&cfg, NULL, flag, "--dev")));
	/* A UTF-8 byte-order mark first (some editors write one) is not part of the first key;
	 * line numbers still count from the first line. */
	write_text(conf, "\xEF\xBB\xBFnode_id = bom-1\ndev = true\n");
	assert_true(hsm_ok(LOAD(&cfg, NULL, flag)));
	assert_string_equal(cfg.node_id, "bom-1");
	write_text(conf, "\xEF\xBB\xBF" "dev = true\nfoo = 1\n");
	snprintf(want, sizeof(want), "%s:2: unknown key 'foo'", conf);
	EXPECT_ERROR(NULL, want, flag);
}

/*
 * The example configuration in README.md, read from the README itself so the
 * two cannot drift: it loads, and every value is what its line means without
 * the comment after it.  Its /etc/hsmd/ files are made in the test directory.
 */
static void readme_example(char *out, size_t cap)
{
	const char *src = getenv("HSM_SOURCE_DIR");
	if (src == NULL)
		fail_msg("HSM_SOURCE_DIR is not set (run through ctest)");
	char path[512], line[512];
	snprintf(path, sizeof(path), "%s/README.md", src);
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t o = 0;
	bool in = false;
	out[0] = '\0';
	while (fgets(line, sizeof(line), f) != NULL) {
		if (!in) {
			in = strcmp(line, "# /etc/hsmd.conf\n") == 0;
			continue;
		}
		if (strncmp(line, "```", 3) == 0)
			break;
		const char *etc = strstr(line, "/etc/hsmd/"); /* at most one per line */
		int n = etc == NULL ? snprintf(out + o, cap - o, "%s", line)
		                    : snprintf(out + o, cap - o, "%.*s%s/%s", (int)(etc - line), line,
		                               dir, etc + strlen("/etc/hsmd/"));
		assert_true(n > 0 && (size_t)n < cap - o);
		o += (size_t)n;
	}
	fclose(f);
	assert_true(in && o > 0);
}

static void test_readme_example(void **state)
{
	(void)state;
	char text[8192], flag[160];
	readme_example(text, sizeof(text));
	assert_non_null(strstr(text, "   # ")); /* the example does comment its values */
	write_text(conf, text);
	snprintf(flag, sizeof(flag), "--config=%s", conf);
	char clients[160];
	snprintf(clients, sizeof(clients), "%s/clients.pem", dir);
	write_text(clients, "ca\n");
	hsm_config cfg;
	hsm_result r = LOAD(&cfg, NULL, flag);
	unlink(clients);
	if (hsm_failed(r))
		fail_msg("README example: %s", hsm_last_message());
	assert_string_equal(cfg.listen, "0.0.0.0:8443");
	assert_string_equal(cfg.tls_cert, cert);
	assert_string_equal(cfg.tls_key, key);
	assert_string_equal(cfg.tls_client_ca, clients);
	assert_int_equal(cfg.tls_client_auth, HSM_HTTP_CLIENT_AUTH_OPTIONAL);
	assert_string_equal(cfg.data_dir, "/var/lib/hsmd");
	assert_string_equal(cfg.store, "");
	assert_string_equal(cfg.region, "eu-west-1");
	assert_string_equal(cfg.account_id, "123456789012");
	assert_int_equal(cfg.max_body_bytes, 1 << 20);
	assert_int_equal(cfg.read_timeout_ms, 10000);
	assert_int_equal(cfg.idle_timeout_ms, 60000);
	assert_int_equal(cfg.max_connections, 10000);
	assert_true(cfg.batch_scheduling);
	assert_int_equal(cfg.audit_retention_days, 2557);
	assert_string_equal(cfg.audit_copy_dir, "/mnt/dr/hsmd-audit");
	assert_int_equal(cfg.audit_rotate_seconds, 86400);
	assert_string_equal(cfg.backup_dir, "/var/lib/hsmd/backups");
	assert_int_equal(cfg.backup_interval_seconds, 86400);
	assert_int_equal(cfg.backup_retention_days, 90);
	assert_string_equal(cfg.backup_copy_dir, "/mnt/dr/hsmd");
	assert_false(cfg.audit_syslog);
	assert_int_equal(cfg.lockout_threshold, 5);
	assert_int_equal(cfg.approval_quorum, 3);
	assert_int_equal(cfg.approval_ttl_seconds, 86400);
}

static void test_comments(void **state)
{
	(void)state;
	char flag[160], want[200];
	snprintf(flag, sizeof(flag), "--config=%s", conf);
	hsm_config cfg;
	/* A '#' inside a word, or inside quotes, is part of the value. */
	write_text(conf, "dev = true  # a comment\n"
	                 "data_dir = /srv/hsm#1\t# the first\n"
	                 "backup_dir = \"/srv/b #2\"   # quoted\n"
	                 "backup_copy_dir = /srv/c#3#4\n");
	assert_true(hsm_ok(LOAD(&cfg, NULL, flag)));
	assert_true(cfg.dev);
	assert_string_equal(cfg.data_dir, "/srv/hsm#1");
	assert_string_equal(cfg.backup_dir, "/srv/b #2");
	assert_string_equal(cfg.backup_copy_dir, "/srv/c#3#4");
	/* A value the comment leaves empty is a mistake, not an empty setting. */
	write_text(conf, "dev = true\ndata_dir =   # where the store lives\n");
	snprintf(want, sizeof(want), "%s:2: 'data_dir' has no value before its comment", conf);
	EXPECT_ERROR(NULL, want, flag);
	write_text(conf, "dev = true\nbackup_copy_dir = #off\n");
	snprintf(want, sizeof(want), "%s:2: 'backup_copy_dir' has no value", conf);
	EXPECT_ERROR(NULL, want, flag);
	/* Only blanks or a comment may follow a quoted value. */
	write_text(conf, "dev = true\ndata_dir = \"/srv/a\"b\n");
	EXPECT_ERROR(NULL, "unexpected text after the quoted value", flag);
	write_text(conf, "dev = true\ndata_dir = \"/srv/a\" b\n");
	EXPECT_ERROR(NULL, "unexpected text after the quoted value", flag);
	/* "key =" alone still sets an empty value. */
	write_text(conf, "dev = true\nbackup_copy_dir =\n");
	assert_true(hsm_ok(LOAD(&cfg, NULL, flag)));
	assert_string_equal(cfg.backup_copy_dir, "");
}

/* Where each setting came from stays known after loading, for start-up errors. */
static void test_sources_are_kept(void **state)
{
	(void)state;
	char flag[160], where[256], want[200];
	snprintf(flag, sizeof(flag), "--config=%s", conf);
	write_text(conf, "dev = true\n# the DR disk\nbackup_copy_dir = /mnt/dr\n");
	char *env[] = {"HSM_APPROVAL_QUORUM=2", NULL};
	hsm_config cfg;
	assert_true(hsm_ok(LOAD(&cfg, env, flag, "--backup-dir=/srv/b")));
	hsm_config_source(&cfg, "backup_dir", where, sizeof(where));
	assert_string_equal(where, "--backup-dir");
	hsm_config_source(&cfg, "approval_quorum", where, sizeof(where));
	assert_string_equal(where, "HSM_APPROVAL_QUORUM");
	hsm_config_source(&cfg, "backup_copy_dir", where, sizeof(where));
	snprintf(want, sizeof(want), "%s:3", conf);
	assert_string_equal(where, want);
	hsm_config_source(&cfg, "data_dir", where, sizeof(where));
	assert_string_equal(where, "default");
}

static void test_production_requires_tls(void **state)
{
	(void)state;
	hsm_config cfg;
	EXPECT_ERROR(NULL, "production mode needs TLS", "--listen=127.0.0.1:9000");
	EXPECT_ERROR(NULL, "production mode needs TLS", "--dev=false");
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--listen=127.0.0.1:9000", "--allow-plaintext-loopback")));
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--listen=[::1]:9000", "--allow-plaintext-loopback=true")));
	EXPECT_ERROR(NULL, "not listen (from --listen)", "--listen=0.0.0.0:9000",
	             "--allow-plaintext-loopback");
	char *env[] = {"HSM_LISTEN=10.0.0.1:9000", "HSM_ALLOW_PLAINTEXT_LOOPBACK=1", NULL};
	EXPECT_ERROR(env, "not listen (from HSM_LISTEN)", "--log-level=warn");
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--listen=0.0.0.0:9000", "--tls-cert", cert, "--tls-key",
	                        key)));
	/* Dev mode allows plain HTTP; off loopback it says so. */
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", "--listen=0.0.0.0:9000")));
	assert_int_equal(cfg.n_warnings, 1);
	assert_non_null(strstr(cfg.warnings[0], "not a loopback address"));
}

static void test_environment_and_actions(void **state)
{
	(void)state;
	char *env[] = {"HSM_DEV=1", "HSM_LISTN=127.0.0.1:1", "HSM_DEV_ACCESS_KEY_ID=AKIDEXAMPLE",
	               "HSM_DEV_SECRET_ACCESS_KEY=not-a-setting", "HSM_listen=1", "HOME=/root", NULL};
	hsm_config cfg;
	assert_true(hsm_ok(LOAD(&cfg, env, "--log-level=debug")));
	assert_int_equal(cfg.log_level, HSM_LOG_DEBUG);
	assert_int_equal(cfg.n_warnings, 2);
	assert_non_null(strstr(cfg.warnings[0], "HSM_LISTN is not a setting"));
	assert_non_null(strstr(cfg.warnings[1], "HSM_listen is not a setting"));
	for (unsigned i = 0; i < cfg.n_warnings; i++)
		assert_null(strstr(cfg.warnings[i], "not-a-setting")); /* values never echoed */
	hsm_config_action action;
	char *argv[] = {"hsmd", "--bogus", "--help", NULL};
	assert_true(hsm_ok(hsm_config_load(&cfg, 3, argv, env, &action)));
	assert_int_equal(action, HSM_CONFIG_SHOW_HELP);
	char *argv2[] = {"hsmd", "--version", NULL};
	assert_true(hsm_ok(hsm_config_load(&cfg, 2, argv2, env, &action)));
	assert_int_equal(action, HSM_CONFIG_SHOW_VERSION);
	const char *usage = hsm_config_usage();
	const char *flags[] = {"--listen ADDR", "--tls-client-auth MODE", "--dev[=BOOL]",
	                       "--audit-retention-days DAYS", "--config FILE", "--help",
	                       "--version", "--secure-heap-bytes SIZE", "allow_plaintext_loopback"};
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (strstr(usage, flags[i]) == NULL)
			fail_msg("usage lacks %s", flags[i]);
}

/* The shared store: its URI may hold a password, which no error repeats. */
static void test_store(void **state)
{
	(void)state;
	hsm_config cfg;
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev")));
	assert_string_equal(cfg.store, "");
	assert_int_equal(cfg.store_cache_ms, 0); /* one node sees its own changes at once */
	char *env[] = {"HSM_STORE=postgresql://hsmd:s3cr3t-pw@db.example:5432/hsm", NULL};
	assert_true(hsm_ok(LOAD(&cfg, env, "--tls-cert", cert, "--tls-key", key)));
	assert_string_equal(cfg.store, "postgresql://hsmd:s3cr3t-pw@db.example:5432/hsm");
	assert_int_equal(cfg.store_cache_ms, 1000); /* other nodes' changes show within a second */
	assert_true(hsm_ok(LOAD(&cfg, env, "--tls-cert", cert, "--tls-key", key,
	                        "--store-cache-ms=250")));
	assert_int_equal(cfg.store_cache_ms, 250);
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--tls-cert", cert, "--tls-key", key,
	                        "--store=postgres://db/hsm")));
	char *bad[] = {"HSM_STORE=mysql://hsmd:s3cr3t-pw@db/hsm", NULL};
	EXPECT_ERROR(bad, "store (from HSM_STORE): expected a postgresql:// URI", "--tls-cert", cert,
	             "--tls-key", key);
	assert_null(strstr(hsm_last_message(), "s3cr3t"));
	EXPECT_ERROR(env, "dev mode keeps its store in data_dir", "--dev");
	assert_null(strstr(hsm_last_message(), "s3cr3t"));
	EXPECT_ERROR(NULL, "store_cache_ms = '3600001'", "--dev", "--store-cache-ms=3600001");
}

/* What a SIGHUP compares: the settings that differ, and their values as messages show them. */
static void test_changed_and_value_text(void **state)
{
	(void)state;
	hsm_config a, b;
	char *env[] = {"HSM_STORE=postgresql://hsmd:s3cr3t-pw@db.example:5432/hsm", NULL};
	char *env2[] = {"HSM_STORE=postgresql://hsmd:0ther-pw@db.example:5432/hsm", NULL};
	assert_true(hsm_ok(LOAD(&a, env, "--tls-cert", cert, "--tls-key", key)));
	assert_true(hsm_ok(LOAD(&b, env, "--tls-cert", cert, "--tls-key", key)));
	const char *names[4];
	assert_int_equal(hsm_config_changed(&a, &b, names, 4), 0);
	/* Bytes past a text's NUL are not its value. */
	memset(b.region + strlen(b.region) + 1, 'x', 4);
	assert_int_equal(hsm_config_changed(&a, &b, names, 4), 0);

	assert_true(hsm_ok(LOAD(&b, env2, "--tls-cert", cert, "--tls-key", key, "--log-level=warn",
	                        "--backup-retention-days=30", "--tls-watch=false",
	                        "--max-body-bytes=2M", "--tls-client-auth=optional",
	                        "--tls-client-ca", ca)));
	size_t n = hsm_config_changed(&a, &b, names, 4);
	assert_int_equal(n, 7); /* more than fit: the first four, in --help's order */
	const char *all[8];
	assert_int_equal(hsm_config_changed(&a, &b, all, 8), 7);
	for (size_t i = 0; i < 4; i++)
		assert_string_equal(names[i], all[i]);
	const char *want[] = {"tls_client_ca", "tls_client_auth", "max_body_bytes", "tls_watch",
	                      "store", "backup_retention_days", "log_level"};
	for (size_t i = 0; i < 7; i++) {
		bool found = false;
		for (size_t j = 0; j < 7; j++)
			found = found || strcmp(all[j], want[i]) == 0;
		if (!found)
			fail_msg("%s is not among the changed settings", want[i]);
	}
	/* Symmetric, and nothing for a NULL list. */
	assert_int_equal(hsm_config_changed(&b, &a, NULL, 0), 7);

	const struct {
		const hsm_config *cfg;
		const char *name, *text;
	} shown[] = {
	    {&b, "log_level", "warn"},
	    {&a, "log_level", "info"},
	    {&b, "backup_retention_days", "30"},
	    {&b, "max_body_bytes", "2097152"},
	    {&b, "tls_watch", "false"},
	    {&b, "tls_client_auth", "optional"},
	    {&b, "tls_client_ca", ca},
	    {&b, "store", "postgresql://db.example:5432/hsm"}, /* no password */
	};
	char v[256];
	for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++) {
		hsm_config_value_text(shown[i].cfg, shown[i].name, v, sizeof(v));
		assert_string_equal(v, shown[i].text);
	}
	hsm_config_value_text(&b, "store", v, 12);
	assert_string_equal(v, "postgresql:");
}

/* How often the last uses of keys are written: a second unless set, 100 ms to an hour. */
static void test_key_usage_flush(void **state)
{
	(void)state;
	hsm_config cfg;
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev")));
	assert_int_equal(cfg.key_usage_flush_ms, 1000);
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", "--key-usage-flush-ms=60000")));
	assert_int_equal(cfg.key_usage_flush_ms, 60000);
	EXPECT_ERROR(NULL, "key_usage_flush_ms = '99'", "--dev", "--key-usage-flush-ms=99");
	EXPECT_ERROR(NULL, "key_usage_flush_ms = '3600001'", "--dev", "--key-usage-flush-ms=3600001");
}

static void test_proxy_protocol_from(void **state)
{
	(void)state;
	hsm_config cfg;
	hsm_http_config http;
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev")));
	assert_string_equal(cfg.proxy_protocol_from, "");
	assert_true(hsm_ok(LOAD(&cfg, NULL, "--dev", "--proxy-protocol-from", "10.1.0.0/16, fd00::/8")));
	assert_string_equal(cfg.proxy_protocol_from, "10.1.0.0/16, fd00::/8");
	hsm_config_http(&cfg, &http);
	assert_string_equal(http.proxy_protocol_from, "10.1.0.0/16, fd00::/8");
	char *env[] = {"HSM_PROXY_PROTOCOL_FROM=192.0.2.10", NULL};
	assert_true(hsm_ok(LOAD(&cfg, env, "--dev")));
	assert_string_equal(cfg.proxy_protocol_from, "192.0.2.10");
	EXPECT_ERROR(NULL,
	             "proxy_protocol_from = '10.0.0.0/33' (from --proxy-protocol-from): '10.0.0.0/33' is "
	             "not an IPv4 or IPv6 address or CIDR range",
	             "--dev", "--proxy-protocol-from=10.0.0.0/33");
	EXPECT_ERROR(NULL, "proxy_protocol_from = 'lb.example' (from --proxy-protocol-from)", "--dev",
	             "--proxy-protocol-from=lb.example");
	EXPECT_ERROR(NULL, "empty entry", "--dev", "--proxy-protocol-from=10.0.0.0/8,");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_precedence),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_store),
	    cmocka_unit_test(test_changed_and_value_text),
	    cmocka_unit_test(test_key_usage_flush),
	    cmocka_unit_test(test_proxy_protocol_from),
	    cmocka_unit_test(test_booleans_and_sizes),
	    cmocka_unit_test(test_validation_errors),
	    cmocka_unit_test(test_file_syntax),
	    cmocka_unit_test(test_readme_example),
	    cmocka_unit_test(test_comments),
	    cmocka_unit_test(test_sources_are_kept),
	    cmocka_unit_test(test_production_requires_tls),
	    cmocka_unit_test(test_environment_and_actions),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
