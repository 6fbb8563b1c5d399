/*
 * config_usage.c - the --help text, generated from the settings table so
 * that it cannot drift from what is accepted.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "server/config_internal.h"

#define USAGE_MAX 12288

static char usage[USAGE_MAX];
static pthread_once_t usage_once = PTHREAD_ONCE_INIT;

static const char usage_head[] =
    "Usage: hsmd [--config FILE] [--SETTING=VALUE | --SETTING VALUE ...]\n"
    "\n"
    "hsmd serves an AWS-KMS-compatible API (SigV4), JWKS and metrics over HTTPS.\n"
    "\n"
    "Each setting may be given, strongest first, as a flag (--max-body-bytes=2M),\n"
    "an environment variable (HSM_MAX_BODY_BYTES=2M) or a line of the configuration\n"
    "file (max_body_bytes = 2M).  In the file, a '#' at the start of a line or\n"
    "value, or after a blank, starts a comment to the end of the line; a value in\n"
    "double quotes may hold one (data_dir = \"/srv/a #1\").  Booleans: true/false,\n"
    "yes/no, on/off, 1/0 (a boolean flag alone means true).  Sizes: bytes with an\n"
    "optional K, M or G suffix (1K = 1024).  Without --dev, hsmd needs tls_cert and\n"
    "tls_key, unless it listens on a loopback address with allow_plaintext_loopback.\n"
    "\n"
    "  --config FILE                       read settings from FILE (also HSM_CONFIG)\n"
    "  --help                              show this text and exit\n"
    "  --version                           show the version and exit\n"
    "\n"
    "Settings:\n";

static void append(size_t *o, const char *fmt, ...) HSM_PRINTF(2, 3);
static void append(size_t *o, const char *fmt, ...)
{
	if (*o >= sizeof(usage))
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(usage + *o, sizeof(usage) - *o, fmt, ap);
	va_end(ap);
	if (n > 0)
		*o += (size_t)n;
}

static void build(void)
{
	size_t o = 0;
	append(&o, "%s", usage_head);
	for (size_t i = 0; i < hsm_config_n_keys; i++) {
		const key_def *k = &hsm_config_keys[i];
		char flag[96];
		size_t f = 0;
		for (const char *p = k->name; *p != '\0' && f < 60; p++)
			flag[f++] = *p == '_' ? '-' : *p;
		if (k->type == K_BOOL)
			snprintf(flag + f, sizeof(flag) - f, "[=%s]", k->arg);
		else
			snprintf(flag + f, sizeof(flag) - f, " %s", k->arg);
		append(&o, "  --%-33s %s", flag, k->help);
		if (k->def != NULL && k->def[0] != '\0')
			append(&o, " (default %s)", k->def);
		append(&o, "\n");
	}
}

const char *hsm_config_usage(void)
{
	pthread_once(&usage_once, build);
	return usage;
}
