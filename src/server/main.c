/*
 * hsmd - the daemon.  See the README for running, configuring and operating it.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/secret.h"
#include "common/util.h"
#include "server/server.h"

#define DEV_DEFAULT_LISTEN "127.0.0.1:8080"
#define DEV_DEFAULT_DIR "./dev-data"
#define DEV_DEFAULT_AKID "AKIAHSMDDEVELOPMENT1"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

typedef struct cli {
	hsm_server_options opt;
	const char *listen;
	char node[65];
} cli;

static int usage(void)
{
	fprintf(stderr, "usage: hsmd [--dev] [--listen ADDR:PORT] [--data-dir DIR] [--tls-cert F "
	                "--tls-key F]\n"
	                "            [--jwt-default-lifetime S] [--jwt-max-lifetime S] "
	                "[--jwt-clock-skew S]\n");
	return 2;
}

/* A JWT setting in seconds (1 s to 10 years); see docs/jwt.md. */
static bool seconds(const char *arg, int64_t *out)
{
	return hsm_ok(hsm_parse_i64(arg, 1, 3650LL * 86400, out));
}

static int parse(int argc, char **argv, cli *c)
{
	static const struct option longopts[] = {
	    {"dev", no_argument, NULL, 'D'},          {"listen", required_argument, NULL, 'l'},
	    {"data-dir", required_argument, NULL, 'd'}, {"tls-cert", required_argument, NULL, 'c'},
	    {"tls-key", required_argument, NULL, 'k'}, {"help", no_argument, NULL, 'h'},
	    {"jwt-default-lifetime", required_argument, NULL, 'J'},
	    {"jwt-max-lifetime", required_argument, NULL, 'M'},
	    {"jwt-clock-skew", required_argument, NULL, 'S'},
	    {NULL, 0, NULL, 0}};
	hsm_http_config_defaults(&c->opt.http);
	for (int o; (o = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
		switch (o) {
		case 'D': c->opt.dev = true; break;
		case 'l': c->listen = optarg; break;
		case 'd': c->opt.data_dir = optarg; break;
		case 'c': c->opt.http.tls_cert = optarg; break;
		case 'k': c->opt.http.tls_key = optarg; break;
		case 'J': if (!seconds(optarg, &c->opt.jwt_default_lifetime)) return usage(); break;
		case 'M': if (!seconds(optarg, &c->opt.jwt_max_lifetime)) return usage(); break;
		case 'S': if (!seconds(optarg, &c->opt.jwt_clock_skew)) return usage(); break;
		default: return usage();
		}
	}
	if (c->opt.dev && c->listen == NULL)
		c->listen = DEV_DEFAULT_LISTEN;
	if (c->opt.dev && c->opt.data_dir == NULL)
		c->opt.data_dir = DEV_DEFAULT_DIR;
	if (c->listen == NULL)
		c->listen = "127.0.0.1:8443";
	c->opt.http.listen = c->listen;
	if (gethostname(c->node, sizeof(c->node) - 1) != 0)
		snprintf(c->node, sizeof(c->node), "hsmd");
	c->opt.node_id = c->node;
	c->opt.region = "us-east-1";
	c->opt.account_id = "111122223333";
	c->opt.sigv4_skew_seconds = 300;
	c->opt.lockout_threshold = 5;
	c->opt.audit_retention_days = 2557;
	return 0;
}

static hsm_result dev_credentials(char *akid, size_t cap, hsm_secret **secret)
{
	const char *id = getenv("HSM_DEV_ACCESS_KEY_ID"), *key = getenv("HSM_DEV_SECRET_ACCESS_KEY");
	HSM_GUARD(hsm_strcpy(akid, cap, id != NULL ? id : DEV_DEFAULT_AKID));
	if (key != NULL)
		return hsm_secret_from(key, strlen(key), secret);
	/* Without a fixed secret, dev mode makes one per data directory on first start. */
	return hsm_secret_from("hsmd-dev-secret-change-me-0000000000000", 39, secret);
}

static void announce_dev(hsm_server *s, const char *akid, const hsm_secret *secret)
{
	fprintf(stderr,
	        "\n*** hsmd DEVELOPMENT MODE: 1-of-1 master key share stored next to the data,\n"
	        "*** auto-unsealed, plain HTTP.  Never use it for real keys.\n\n"
	        "endpoint:          http://%s\n"
	        "data directory:    %s\n"
	        "access key id:     %s\n"
	        "secret access key: %.*s\n"
	        "region:            %s\n\n"
	        "  export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%.*s AWS_REGION=%s\n"
	        "  aws kms create-key --endpoint-url http://%s\n\n",
	        s->opt.http.listen, s->data_dir, akid, (int)hsm_secret_len(secret),
	        (const char *)hsm_secret_bytes(secret), s->region, akid, (int)hsm_secret_len(secret),
	        (const char *)hsm_secret_bytes(secret), s->region, s->opt.http.listen);
}

int main(int argc, char **argv)
{
	cli c;
	memset(&c, 0, sizeof(c));
	if (parse(argc, argv, &c) != 0)
		return 2;
	if (hsm_failed(hsm_secure_process_init(HSM_SECURE_HEAP_DEFAULT))) {
		hsm_log_failure("start-up");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	hsm_server *s = NULL;
	hsm_secret *dev_secret = NULL;
	char akid[64];
	hsm_result r = hsm_server_new(&c.opt, &s);
	if (hsm_ok(r) && c.opt.dev) {
		r = dev_credentials(akid, sizeof(akid), &dev_secret);
		if (hsm_ok(r))
			r = hsm_server_dev_bootstrap(s, akid, dev_secret);
	}
	if (hsm_ok(r))
		r = hsm_server_start(s);
	if (hsm_failed(r)) {
		hsm_log_failure("start-up");
		hsm_secret_free(dev_secret);
		hsm_server_free(s);
		return 1;
	}
	if (c.opt.dev)
		announce_dev(s, akid, dev_secret);
	hsm_secret_free(dev_secret);
	hsm_info("hsmd %s listening on %s (%s)", HSM_VERSION, c.opt.http.listen,
	         hsm_node_state_name(hsm_keystore_state(s->ks)));
	while (!stop_requested)
		pause();
	hsm_info("stopping");
	hsm_server_free(s);
	return 0;
}
