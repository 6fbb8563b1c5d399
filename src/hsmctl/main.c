/*
 * hsmctl - init, unseal, ceremony, keys, users, backups, audit and reports.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/provider.h>

#include "common/log.h"
#include "crypto/crypto.h"
#include "common/secret.h"
#include "common/util.h"
#include "hsmctl/hsmctl.h"

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);
int cmd_audit_verify(int argc, char **argv);
int cmd_audit_report(int argc, char **argv);

hsmctl_globals_t hsmctl_globals;

bool hsmctl_online(void)
{
	return hsmctl_globals.client.endpoints != NULL && *hsmctl_globals.client.endpoints != '\0';
}

int hsmctl_require_private(const char *cmd, const char *what)
{
	if (hsm_ok(hsm_client_require_private(&hsmctl_globals.client, what)))
		return 0;
	fprintf(stderr, "hsmctl %s: %s\n", cmd, hsm_last_message());
	return 2;
}

/* status and unseal work on a data directory or, with --endpoint, on a running hsmd. */
static int cmd_status(int argc, char **argv)
{
	return hsmctl_online() ? hsmctl_cmd_online(argc, argv) : hsmctl_cmd_status_local(argc, argv);
}

static int cmd_unseal(int argc, char **argv)
{
	return hsmctl_online() ? hsmctl_cmd_online(argc, argv) : hsmctl_cmd_unseal_check(argc, argv);
}

static const hsmctl_command commands[] = {
    {"init", "--data-dir DIR --share-dir DIR [--shares N] [--threshold M] [--custodians a,b,..] "
             "[--admin NAME] [--custodian-users]",
     "key ceremony: create a store, its master key and the custodians' share files",
     hsmctl_cmd_init, HSMCTL_NO_NODE},
    {"status", "--data-dir DIR | (with --endpoint)",
     "show a data directory's or a running hsmd's state", cmd_status, HSMCTL_UNSIGNED},
    {"unseal", "--data-dir DIR SHARE_FILE... | (with --endpoint) SHARE_FILE",
     "give a custodian share to a running hsmd, or check shares offline",
     cmd_unseal, HSMCTL_UNSIGNED},
    {"seal", "(with --endpoint)", "seal a running hsmd: wipe its keys from memory",
     hsmctl_cmd_online, HSMCTL_SIGNED},
    {"user", "create NAME --roles R[,R] | list | disable|enable|unlock NAME (--endpoint, or "
             "offline: --data-dir DIR --share FILE...)",
     "manage users (roles: crypto-officer, crypto-user, auditor, custodian)",
     hsmctl_cmd_user, HSMCTL_SIGNED},
    {"access-key", "create USER | revoke AKID | list [USER] (--endpoint, or offline: "
                   "--data-dir DIR --share FILE...)",
     "manage SigV4 access keys", hsmctl_cmd_access_key, HSMCTL_SIGNED},
    {"approval", "list [--all] [--json] | show|approve|deny|cancel ID (with --endpoint)",
     "requests waiting for custodians: read them, approve or deny them (custodians), or "
     "withdraw your own", hsmctl_cmd_approval, HSMCTL_SIGNED},
    {"cert", "import FILE [--key KEY] [--label L] [--id HEX] | list [--id HEX | --key KEY] "
             "[--label L] | show ID [--pem] | delete ID (with --endpoint)",
     "certificates kept beside the keys, shown to PKCS#11 applications as certificate objects "
     "(--key: the key it certifies, which PKCS#11 pairs it with)",
     hsmctl_cmd_cert, HSMCTL_SIGNED},
    {"audit hash", "VALUE|- (with --endpoint)",
     "keyed hash of a value, to match the hashes in audit records (-: read it from standard "
     "input, out of other users' sight)",
     hsmctl_cmd_audit_online, HSMCTL_SIGNED},
    {"audit pubkey", "(with --endpoint)", "print the audit signing public key (PEM)",
     hsmctl_cmd_audit_online, HSMCTL_SIGNED},
    {"key", "create|list|describe|enable|disable|rotate|rotation|schedule-deletion|"
            "cancel-deletion --data-dir DIR [--share FILE]... [KEY] (create: [--region R] "
            "[--account-id ID])",
     "manage keys on a data directory.  create: [--spec SPEC] [--usage USAGE] "
     "[--origin AWS_KMS|EXTERNAL] [--description TEXT] [--alias alias/NAME] (KMS names; "
     "default SYMMETRIC_DEFAULT and the usage the spec implies; EXTERNAL: no material until "
     "imported); --region and --account-id (or HSM_REGION, HSM_ACCOUNT_ID): the nodes' "
     "region and account_id, needed by the first key of a store, which records them; rotation KEY [--enable [--period DAYS] | --disable] (1-2560 days, default "
     "90); schedule-deletion KEY [--days N] (7-30, default 30); every command but list and "
     "describe needs a quorum of --share FILE",
     hsmctl_cmd_key, HSMCTL_NO_NODE},
    {"key import", "KEY --material FILE [--wrapping-key-spec RSA_2048|RSA_3072|RSA_4096] "
                   "[--valid-days N] [--new] [--description TEXT] (with --endpoint, or "
                   "--data-dir DIR --share FILE...)",
     "import key material made elsewhere into an Origin EXTERNAL key, wrapped on the way "
     "(--new: the next material, made current by RotateKeyOnDemand)",
     hsmctl_cmd_key_import, HSMCTL_SIGNED},
    {"key usage", "[KEY...] [--unused-days N] [--json] (with --endpoint)",
     "each key's last successful cryptographic use (GetKeyLastUsage), all keys or those "
     "named; --unused-days N: only those with none recorded in N days",
     hsmctl_cmd_key_usage, HSMCTL_SIGNED},
    {"jwt sign", "[--endpoint URL] KEY --claims JSON|@FILE [--lifetime S] [--alg A] [--typ T] "
                 "[--cty C]",
     "sign a JWT with a key marked for JWT signing (prints the token)",
     hsmctl_cmd_jwt, HSMCTL_SIGNED},
    {"jwt verify", "--jwks FILE|URL TOKEN|- [--issuer I] [--audience A] [--leeway S]",
     "verify a JWT offline against a JWK Set", hsmctl_cmd_jwt, HSMCTL_NO_NODE},
    {"jwt enable", "[--endpoint URL] KEY [--alg A]",
     "mark a key for JWT signing and publish it in the JWKS", hsmctl_cmd_jwt, HSMCTL_SIGNED},
    {"jwt disable", "[--endpoint URL] KEY",
     "stop a key signing tokens and remove it from the JWKS", hsmctl_cmd_jwt, HSMCTL_SIGNED},
    {"backup create", "(with --endpoint) | --data-dir DIR --share FILE... [--dir OUT]",
     "make an encrypted backup of the store now (of a running or a stopped node)",
     hsmctl_cmd_backup, HSMCTL_SIGNED},
    {"backup list", "(with --endpoint) | --dir DIR", "list a node's or a directory's backups",
     hsmctl_cmd_backup, HSMCTL_SIGNED},
    {"backup inspect", "FILE", "show a backup's header: store, time, quorum (no shares needed)",
     hsmctl_cmd_backup, HSMCTL_NO_NODE},
    {"backup verify", "--share FILE... BACKUP",
     "decrypt and authenticate a whole backup with a quorum of shares",
     hsmctl_cmd_backup, HSMCTL_NO_NODE},
    {"restore", "--data-dir DIR --share FILE... BACKUP",
     "restore a backup into a new data directory, or with --store into an empty shared store "
     "(a quorum of shares)",
     hsmctl_cmd_restore, HSMCTL_NO_NODE},
    {"rekey", "--data-dir DIR --share FILE... --share-dir DIR [--shares N] [--threshold M] "
              "[--custodians a,b,..]",
     "a new master key and new custodians' share files for a stopped store (a quorum of the "
     "current shares); every secret re-wrapped; the old shares and older backups stay together",
     hsmctl_cmd_rekey, HSMCTL_NO_NODE},
    {"store copy", "--data-dir DIR [--to URI]",
     "copy a stopped node's store into an empty shared store (--to, --store or HSM_STORE)",
     hsmctl_cmd_store, HSMCTL_NO_NODE},
    {"version", "", "print the version", cmd_version, HSMCTL_NO_NODE},
    {"help", "", "list the commands", cmd_help, HSMCTL_NO_NODE},
    {"audit verify", "[--pubkey FILE] [--live] [--anchor SEQ:SHA256] FILES|DIRS...",
     "verify audit log files offline (chain, sequence, signatures)",
     cmd_audit_verify, HSMCTL_NO_NODE},
    {"audit report",
     "[--pubkey FILE] [--live] [--since T] [--until T] [--key KEY_ID|ARN] [--json] FILES|DIRS...",
     "verify, then summarize a trail: operations, principals, failed authentications, every "
     "change and node event",
     cmd_audit_report, HSMCTL_NO_NODE},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

int hsmctl_fail_msg(const char *context, const char *why)
{
	fprintf(stderr, "hsmctl: %s: %s\n", context, why);
	return 1;
}

bool hsmctl_stdout_written(int *errno_out)
{
	errno = 0;
	bool ok = fflush(stdout) == 0 && !ferror(stdout);
	*errno_out = ok ? 0 : (errno != 0 ? errno : EIO);
	return ok;
}

int hsmctl_fail(const char *context)
{
	fprintf(stderr, "hsmctl: %s: %s\n", context, hsm_last_message());
	return 1;
}

void hsmctl_print_fields(json_t *o)
{
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v)
	{
		char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		printf("%s: %s\n", k, s ? s : json_string_value(v));
		free(s);
	}
}

/* Whether v is a number whose value times scale, rounded by adding add, fits an
 * int64_t (converting one that does not is undefined); *out is that value. */
static bool json_time(const json_t *v, double scale, double add, int64_t *out)
{
	double t = json_number_value(v) * scale + add;
	if (!json_is_number(v) || !(t > -9.2e18 && t < 9.2e18))
		return false;
	*out = (int64_t)t;
	return true;
}

void hsmctl_format_json_time(const json_t *v, char out[21])
{
	int64_t t;
	if (json_time(v, 1.0, 0.0, &t))
		hsm_format_time(t, out);
	else
		snprintf(out, 21, "?");
}

void hsmctl_format_json_time_ms(const json_t *v, char out[25])
{
	int64_t t;
	if (json_time(v, 1000.0, 0.5, &t))
		hsm_format_time_ms(t, out);
	else
		snprintf(out, 25, "?");
}

/* A global option given after the command word (NULL: none), named when the command's
 * arguments are refused: "--approval-wait" there is the command's argument, not hsmctl's. */
static const char *misplaced_global;

int hsmctl_usage(const char *command, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "hsmctl %s: %s (see 'hsmctl help')\n", command, msg);
	if (misplaced_global != NULL)
		fprintf(stderr, "hsmctl %s: %s is a global option: give it before the command "
		                "(hsmctl %s ... %s ...)\n",
		        command, misplaced_global, misplaced_global, command);
	return 2;
}

static int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("hsmctl %s\n", hsm_version());
	return 0;
}

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("usage: hsmctl [--endpoint URL[,URL...]] [--ca-file FILE] [--client-cert FILE "
	       "[--client-key FILE]] [--region R] [--store URI] [--approval-wait SECONDS] COMMAND "
	       "[ARGS]\n\n"
	       "Each global option at most once, as --option VALUE or --option=VALUE.\n"
	       "  --endpoint       running hsmd nodes, tried in order (HSM_ENDPOINT)\n"
	       "  --ca-file        the PEM certificates that verify the nodes' TLS certificates\n"
	       "                   (HSM_CA_FILE; default: the system's)\n"
	       "  --client-cert    a PEM certificate (and --client-key, its key) for nodes with\n"
	       "                   tls_client_auth (HSM_CLIENT_CERT, HSM_CLIENT_KEY)\n"
	       "  --region         the region requests are signed for: the nodes' own (AWS_REGION,\n"
	       "                   else AWS_DEFAULT_REGION, else us-east-1)\n"
	       "  --store          offline commands: the postgresql:// store nodes share, instead of\n"
	       "                   the SQLite store in --data-dir (HSM_STORE)\n"
	       "  --approval-wait  how long a request waits for custodians' approval before it is\n"
	       "                   withdrawn (HSM_APPROVAL_WAIT; default: until decided or expired)\n"
	       "\ncommands:\n");
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

/*
 * The command as the audit outbox names its changes: its name, and the
 * subcommand it was given when its synopsis lists that word ("user create",
 * "key rotate"; not "key import" and its key's id).
 */
static void name_command(const hsmctl_command *cmd, int argc, char **argv, char *out, size_t cap)
{
	snprintf(out, cap, "%s", cmd->name);
	if (argc < 1 || !islower((unsigned char)argv[0][0]))
		return;
	const char *w = argv[0];
	size_t n = strlen(w);
	for (const char *p = cmd->args; (p = strstr(p, w)) != NULL; p += n) {
		if ((p == cmd->args || strchr(" |[", p[-1]) != NULL) &&
		    (p[n] == '\0' || strchr(" |]", p[n]) != NULL)) {
			snprintf(out, cap, "%s %s", cmd->name, w);
			return;
		}
	}
}

/*
 * Prints (to f, unless NULL) the usage of each command of the family named
 * word ("audit": audit verify, audit report, ...); returns how many there are.
 */
static size_t family_usages(FILE *f, const char *word)
{
	size_t n = 0, len = strlen(word);
	for (size_t i = 0; i < N_COMMANDS; i++) {
		const char *name = commands[i].name;
		if (strncmp(name, word, len) != 0 || name[len] != ' ')
			continue;
		if (f != NULL)
			fprintf(f, "  hsmctl %s %s\n      %s\n", name, commands[i].args,
			        commands[i].summary);
		n++;
	}
	return n;
}

/* True when the command's arguments ask for its usage. */
static bool wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return true;
	return false;
}

/* A wait in whole seconds, 1 to a year; -1 when absent; -2 when malformed. */
static long wait_seconds(const char *text)
{
	if (text == NULL)
		return -1;
	char *end = NULL;
	errno = 0;
	long v = strtol(text, &end, 10);
	return errno == 0 && end != text && *end == '\0' && v >= 1 && v <= 366L * 86400 ? v : -2;
}

/*
 * Without AWS_ACCESS_KEY_ID in the environment (or with it empty), the credentials of the AWS
 * shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
 * ~/.aws/credentials), profile AWS_PROFILE (else "default"), as aws-cli
 * reads them: the files `hsmctl init` writes are such files.  Returns false
 * when a file or profile named by the environment does not give both.
 */
static char cred_akid[128], cred_secret[256];

static void trim(char *s)
{
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
		s[--n] = '\0';
	size_t lead = strspn(s, " \t");
	memmove(s, s + lead, n - lead + 1);
}

static bool read_shared_credentials(hsm_client *c)
{
	const char *named = getenv("AWS_SHARED_CREDENTIALS_FILE"), *home = getenv("HOME");
	const char *profile = getenv("AWS_PROFILE");
	char path[4096];
	const char *env_akid = getenv("AWS_ACCESS_KEY_ID");
	if (env_akid != NULL && *env_akid != '\0') /* empty: unset, as botocore reads it */
		return true;
	if (named != NULL)
		snprintf(path, sizeof(path), "%s", named);
	else if (home != NULL)
		snprintf(path, sizeof(path), "%s/.aws/credentials", home);
	else
		return true;
	bool asked = named != NULL || profile != NULL; /* not only the default file and profile */
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		if (asked)
			fprintf(stderr, "hsmctl: cannot read the credentials file %s: %s\n", path,
			        strerror(errno));
		return !asked;
	}
	if (profile == NULL || *profile == '\0')
		profile = "default";
	char line[512];
	bool in = false;
	cred_akid[0] = cred_secret[0] = '\0';
	while (fgets(line, sizeof(line), f) != NULL) {
		trim(line);
		if (line[0] == '[') {
			char *end = strchr(line, ']');
			if (end != NULL)
				*end = '\0';
			in = strcmp(line + 1, profile) == 0;
			continue;
		}
		char *eq = strchr(line, '=');
		if (!in || eq == NULL || line[0] == '#' || line[0] == ';')
			continue;
		*eq = '\0';
		char *value = eq + 1;
		trim(line);
		trim(value);
		if (strcmp(line, "aws_access_key_id") == 0)
			snprintf(cred_akid, sizeof(cred_akid), "%s", value);
		else if (strcmp(line, "aws_secret_access_key") == 0)
			snprintf(cred_secret, sizeof(cred_secret), "%s", value);
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (cred_akid[0] == '\0' || cred_secret[0] == '\0') {
		if (asked)
			fprintf(stderr, "hsmctl: %s has no aws_access_key_id and aws_secret_access_key "
			                "for profile '%s' (AWS_PROFILE)\n",
			        path, profile);
		return !asked;
	}
	c->akid = cred_akid;
	c->secret = cred_secret;
	return true;
}

/* --endpoint was on the command line (not only HSM_ENDPOINT in the environment). */
static bool endpoint_given;
/* --approval-wait, else HSM_APPROVAL_WAIT: read only by commands that sign. */
static const char *approval_wait_text;
/* The last global option and the value it took from the next argument (NULL: none). */
static const char *last_option, *last_value;

/* The options given before the command word (and named when given after it). */
enum global_option {
	G_ENDPOINT,
	G_CA_FILE,
	G_CLIENT_CERT,
	G_CLIENT_KEY,
	G_REGION,
	G_STORE,
	G_APPROVAL_WAIT,
	G_COUNT
};
static const char *const global_options[G_COUNT] = {
	[G_ENDPOINT] = "--endpoint",       [G_CA_FILE] = "--ca-file",
	[G_CLIENT_CERT] = "--client-cert", [G_CLIENT_KEY] = "--client-key",
	[G_REGION] = "--region",           [G_STORE] = "--store",
	[G_APPROVAL_WAIT] = "--approval-wait",
};

/*
 * The global option arg names, alone or as "--option=VALUE" (as the commands'
 * own options may be given), or G_COUNT.  *value: what follows '=', else NULL.
 */
static enum global_option global_option(const char *arg, const char **value)
{
	for (int g = 0; g < G_COUNT; g++) {
		size_t n = strlen(global_options[g]);
		if (strncmp(arg, global_options[g], n) != 0 || (arg[n] != '\0' && arg[n] != '='))
			continue;
		*value = arg[n] == '=' ? arg + n + 1 : NULL;
		return (enum global_option)g;
	}
	*value = NULL;
	return G_COUNT;
}

/*
 * Consumes leading global options; returns the index of the command word, or -1
 * after an option without a value or given twice (each takes one value: a second
 * one would silently replace the first).
 */
static int parse_globals(int argc, char **argv)
{
	hsm_client *c = &hsmctl_globals.client;
	const char **dst[G_COUNT] = {
	    [G_ENDPOINT] = &c->endpoints,     [G_CA_FILE] = &c->ca_file,
	    [G_CLIENT_CERT] = &c->cert_file,  [G_CLIENT_KEY] = &c->key_file,
	    [G_REGION] = &c->region,          [G_STORE] = &hsmctl_globals.store,
	    [G_APPROVAL_WAIT] = &approval_wait_text,
	};
	bool given[G_COUNT] = {false};
	c->endpoints = getenv("HSM_ENDPOINT");
	c->ca_file = getenv("HSM_CA_FILE");
	c->cert_file = getenv("HSM_CLIENT_CERT");
	c->key_file = getenv("HSM_CLIENT_KEY");
	hsmctl_globals.store = getenv("HSM_STORE");
	approval_wait_text = getenv("HSM_APPROVAL_WAIT");
	int i = 1;
	for (; i < argc; i++) {
		const char *value;
		enum global_option g = global_option(argv[i], &value);
		if (g == G_COUNT)
			break;
		last_option = global_options[g];
		last_value = NULL;
		if (value == NULL && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
			value = last_value = argv[++i];
		if (value == NULL || *value == '\0') {
			fprintf(stderr, "hsmctl: %s needs a value (see 'hsmctl help')\n", global_options[g]);
			return -1;
		}
		if (given[g]) {
			fprintf(stderr, "hsmctl: %s is given twice: give it once\n", global_options[g]);
			return -1;
		}
		given[g] = true;
		*dst[g] = value;
	}
	endpoint_given = given[G_ENDPOINT];
	return i;
}

/*
 * What a command that signs its requests reads besides the options: the
 * credentials and how long to wait for custodians.  false after printing why.
 */
static bool read_signing_settings(void)
{
	if (!read_shared_credentials(&hsmctl_globals.client))
		return false;
	hsmctl_globals.approval_wait = wait_seconds(approval_wait_text);
	if (hsmctl_globals.approval_wait == -2) {
		fprintf(stderr, "hsmctl: --approval-wait (HSM_APPROVAL_WAIT): give whole seconds, "
		                "1 to 31622400\n");
		return false;
	}
	return true;
}

/*
 * Notes the first global option given after the command word that the command
 * does not take itself (named if its arguments are refused), and counts the
 * --endpoint options it does take (jwt's).
 */
static void scan_command_options(const hsmctl_command *cmd, int first, int argc, char **argv,
                                 int *own_endpoints)
{
	*own_endpoints = 0;
	for (int i = first; i < argc; i++) {
		const char *value;
		enum global_option g = global_option(argv[i], &value);
		char own[32]; /* "[--endpoint": one the command takes itself (jwt's) */
		if (g == G_COUNT)
			continue;
		snprintf(own, sizeof(own), "[%s", global_options[g]);
		if (strstr(cmd->args, own) == NULL) {
			if (misplaced_global == NULL)
				misplaced_global = global_options[g];
		} else if (g == G_ENDPOINT) {
			(*own_endpoints)++;
		}
	}
}

/*
 * 0, or 2 after saying why, when dir, or its audit directory, exists and is
 * writable by its group or others: hsmctl writes audit side files there, and
 * another user could plant a link where they go.  A directory not made yet is
 * made private.
 */
static int check_private_dirs(const char *name, const char *dir)
{
	char audit[4096];
	const char *dirs[] = {dir, audit};
	if ((size_t)snprintf(audit, sizeof(audit), "%s/audit", dir) >= sizeof(audit))
		return 0; /* the command refuses the path itself */
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		struct stat st;
		if (stat(dirs[i], &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		/*
		 * The node runs as the directory's owner (docs/hsmd.service: the user
		 * hsmd): what hsmctl makes there (hsmd.lock, audit files, backups,
		 * 0600) must stay that user's, or the node cannot open it at its next
		 * start ("cannot open DIR/hsmd.lock: Permission denied", exit 2).
		 */
		if (st.st_uid != geteuid()) {
			fprintf(stderr,
			        "hsmctl %s: %s belongs to uid %ld, not to this user (uid %ld): run "
			        "hsmctl as the node's user (sudo -u hsmd hsmctl ...), or the files it "
			        "makes there would be ones the node cannot open\n",
			        name, dirs[i], (long)st.st_uid, (long)geteuid());
			return 2;
		}
		if (hsm_failed(hsm_dir_private(dirs[i]))) {
			fprintf(stderr, "hsmctl %s: %s\n", name, hsm_last_message());
			return 2;
		}
	}
	return 0;
}

/* Whether argv[first..] holds option (as "--opt VALUE" or "--opt=VALUE"). */
static bool has_option(int first, int argc, char **argv, const char *option)
{
	size_t n = strlen(option);
	for (int i = first; i < argc; i++)
		if (strncmp(argv[i], option, n) == 0 && (argv[i][n] == '\0' || argv[i][n] == '='))
			return true;
	return false;
}

/*
 * 0 when --data-dir is given at most once (and not beside --endpoint), where
 * it makes the command work offline, and names no directory others may
 * write to; else the usage error.
 */
static int check_data_dir(const char *name, int first, int argc, char **argv)
{
	int n = 0;
	const char *dir = NULL;
	for (int i = first; i < argc; i++) {
		if (strcmp(argv[i], "--data-dir") == 0) {
			n++;
			dir = i + 1 < argc ? argv[i + 1] : NULL;
		} else if (strncmp(argv[i], "--data-dir=", 11) == 0) {
			n++;
			dir = argv[i] + 11;
		}
	}
	if (n == 0)
		return 0;
	if (n > 1) {
		fprintf(stderr, "hsmctl %s: --data-dir is given twice: give one data directory\n",
		        name);
		return 2;
	}
	/*
	 * --data-dir names a stopped node's directory: HSM_ENDPOINT, exported for the
	 * running nodes, must not send the command to one of them instead (status
	 * would report another node's state, user list list its users).  With
	 * --endpoint too, the command would have to choose: it is refused.
	 */
	if (endpoint_given) {
		fprintf(stderr, "hsmctl %s: --endpoint (a running node) and --data-dir (a stopped "
		                "one) name two places: give one\n", name);
		return 2;
	}
	hsmctl_globals.client.endpoints = NULL;
	return dir != NULL && *dir != '\0' ? check_private_dirs(name, dir) : 0;
}

/*
 * For a command about to talk to a node: 0, or 2 after printing why its
 * settings cannot work.  A client key without its certificate would be
 * ignored, and the node then refuse the connection for want of one.
 */
static int check_online_settings(const hsmctl_command *cmd, const char *name)
{
	const hsm_client *c = &hsmctl_globals.client;
	bool key = c->key_file != NULL && *c->key_file != '\0';
	bool cert = c->cert_file != NULL && *c->cert_file != '\0';
	if (key && !cert) {
		fprintf(stderr, "hsmctl %s: --client-key (HSM_CLIENT_KEY) is the key of a client "
		                "certificate: give the certificate too (--client-cert, or "
		                "HSM_CLIENT_CERT)\n", name);
		return 2;
	}
	if (cmd->net == HSMCTL_SIGNED && !read_signing_settings())
		return 2;
	return 0;
}

int main(int argc, char **argv)
{
	/* Before anything uses OpenSSL: what it frees is wiped (private keys' DER). */
	/* Shares, secrets and key material pass through hsmctl, remote commands too:
	 * no core dump or debugger may read them. */
	if (hsm_failed(hsm_wipe_openssl_frees()) || hsm_failed(hsm_harden_process())) {
		fprintf(stderr, "hsmctl: %s\n", hsm_last_message());
		return 1;
	}
	/* Request and response bodies (shares, secrets, data keys) pass through
	 * jansson's memory: wipe it on free. */
	json_set_alloc_funcs(hsm_wiping_malloc, hsm_wiping_free);
	/* OpenSSL otherwise sets up its default library context on first use, where
	 * 3.0 crashes if memory runs out: here, checked, it fails cleanly. */
	if (OSSL_LIB_CTX_get0_global_default() == NULL || hsm_failed(hsm_crypto_init())) {
		fprintf(stderr, "hsmctl: cannot initialize OpenSSL (out of memory?)\n");
		return 1;
	}
	/* Every user may read /proc/PID/cmdline: a password in --store or --to is
	 * masked there at once, and hsmctl goes on with a copy of its arguments. */
	bool masked = false;
	if (hsm_failed(hsm_args_hide_passwords(argc, argv, &argv, &masked))) {
		fprintf(stderr, "hsmctl: %s\n", hsm_last_message());
		return 1;
	}
	if (masked)
		fprintf(stderr, "hsmctl: warning: %s\n", HSM_ARGS_PASSWORD_WARNING);
	hsmctl_globals.approval_wait = -1;
	int first = parse_globals(argc, argv);
	if (first < 0)
		return 2;
	argc -= first - 1;
	argv += first - 1;
	if (argc < 2) {
		const hsmctl_command *taken = NULL;
		int words = 0;
		char word[64], *w = word;
		if (last_value != NULL && snprintf(word, sizeof(word), "%s", last_value) > 0)
			taken = lookup(1, &w, &words);
		if (taken != NULL)
			fprintf(stderr, "hsmctl: no command: '%s' was taken as the value of %s "
			                "(see 'hsmctl help')\n", last_value, last_option);
		else
			fprintf(stderr, "hsmctl: no command given (see 'hsmctl help')\n");
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
		return cmd_help(0, NULL);
	int words = 0;
	const hsmctl_command *cmd = lookup(argc - 1, argv + 1, &words);
	if (cmd == NULL) {
		/* "hsmctl audit": a family of commands, named without the one to run. */
		if (family_usages(NULL, argv[1]) > 0 && wants_help(argc - 1, argv + 1)) {
			printf("'hsmctl %s' commands:\n", argv[1]);
			family_usages(stdout, argv[1]);
			return 0;
		}
		if (family_usages(NULL, argv[1]) > 0) {
			fprintf(stderr, "hsmctl: '%s' needs one of its commands:\n", argv[1]);
			family_usages(stderr, argv[1]);
			return 2;
		}
		fprintf(stderr, "hsmctl: unknown command '%s' (see 'hsmctl help')\n", argv[1]);
		return 2;
	}
	if (wants_help(argc - words, argv + words)) {
		printf("usage: hsmctl [global options] %s %s\n      %s\n", cmd->name, cmd->args,
		       cmd->summary);
		/* "hsmctl key --help": the family's other commands too (key import, key usage). */
		if (family_usages(NULL, cmd->name) > 0) {
			printf("and:\n");
			family_usages(stdout, cmd->name);
		}
		printf("(global options: 'hsmctl help')\n");
		return 0;
	}
	char name[96];
	name_command(cmd, argc - words - 1, argv + words + 1, name, sizeof(name));
	int own_endpoints = 0, rc = check_data_dir(name, words + 1, argc, argv);
	if (rc != 0)
		return rc;
	if (endpoint_given && strcmp(name, "backup list") == 0 &&
	    has_option(words + 1, argc, argv, "--dir")) {
		fprintf(stderr, "hsmctl %s: --endpoint (a node's backups) and --dir (a directory "
		                "here) name two places: give one\n", name);
		return 2;
	}
	scan_command_options(cmd, words + 1, argc, argv, &own_endpoints);
	if (own_endpoints + (endpoint_given ? 1 : 0) > 1) {
		fprintf(stderr, "hsmctl %s: --endpoint is given twice: give it once\n", name);
		return 2;
	}
	if (cmd->net != HSMCTL_NO_NODE && (hsmctl_online() || own_endpoints > 0)) {
		rc = check_online_settings(cmd, name);
		if (rc != 0)
			return rc;
	}
	hsmctl_globals.command = name;
	/* The command sees argv[0] = its own name, then its arguments. */
	rc = cmd->fn(argc - words, argv + words);
	hsm_client_close(&hsmctl_globals.client);
	/* Output that never reached its file is no success: a script would go on without it. */
	int err = 0;
	if (!hsmctl_stdout_written(&err) && rc == 0) {
		fprintf(stderr, "hsmctl %s: cannot write the output: %s\n", cmd->name, strerror(err));
		rc = 1;
	}
	return rc;
}
