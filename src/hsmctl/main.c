/*
 * hsmctl - init, unseal, ceremony, keys, users, audit and reports.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "hsmctl/hsmctl.h"

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);
int cmd_audit_verify(int argc, char **argv);

static const hsmctl_command commands[] = {
    {"init", "--data-dir DIR --share-dir DIR [--shares N] [--threshold M] [--custodians a,b,..]",
     "key ceremony: create a store, its master key and the custodians' share files",
     hsmctl_cmd_init},
    {"status", "--data-dir DIR", "show a data directory's state", hsmctl_cmd_status_local},
    {"unseal", "--data-dir DIR SHARE_FILE...", "check that share files reconstruct the master key",
     hsmctl_cmd_unseal_check},
    {"key", "create|list|describe|enable|disable|rotate|rotation|schedule-deletion|"
            "cancel-deletion --data-dir DIR [--share FILE]... [KEY]",
     "manage keys on a data directory", hsmctl_cmd_key},
    {"version", "", "print the version", cmd_version},
    {"help", "", "list the commands", cmd_help},
    {"audit verify", "[--pubkey FILE] [--live] FILES...",
     "verify audit log files offline (chain, sequence, signatures)", cmd_audit_verify},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

int hsmctl_fail(const char *context)
{
	fprintf(stderr, "hsmctl: %s: %s\n", context, hsm_last_message());
	return 1;
}

int hsmctl_usage(const char *command, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "hsmctl %s: %s (see 'hsmctl help')\n", command, msg);
	return 2;
}

static int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("hsmctl %s\n", HSM_VERSION);
	return 0;
}

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("usage: hsmctl COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++) {
		printf("  %s %s\n      %s\n", commands[i].name, commands[i].args, commands[i].summary);
	}
	return 0;
}

/* Finds the longest command name matching the leading words of argv. */
static const hsmctl_command *lookup(int argc, char **argv, int *consumed)
{
	const hsmctl_command *best = NULL;
	int best_words = 0;
	for (size_t i = 0; i < N_COMMANDS; i++) {
		char name[64];
		snprintf(name, sizeof(name), "%s", commands[i].name);
		int words = 0;
		bool match = true;
		for (char *save = NULL, *w = strtok_r(name, " ", &save); w != NULL;
		     w = strtok_r(NULL, " ", &save)) {
			if (words >= argc || strcmp(argv[words], w) != 0) {
				match = false;
				break;
			}
			words++;
		}
		if (match && words > best_words) {
			best = &commands[i];
			best_words = words;
		}
	}
	*consumed = best_words;
	return best;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return cmd_help(0, NULL);
	int words = 0;
	const hsmctl_command *cmd = lookup(argc - 1, argv + 1, &words);
	if (cmd == NULL) {
		fprintf(stderr, "hsmctl: unknown command '%s' (see 'hsmctl help')\n", argv[1]);
		return 2;
	}
	/* The command sees argv[0] = its own name, then its arguments. */
	return cmd->fn(argc - words, argv + words);
}
