/*
 * hsmctl.h - the operator's command-line tool: shared declarations.
 *
 * Each command group lives in its own cmd_<group>.c and registers its
 * commands in the table in main.c.  A command returns a process exit code:
 * 0 success, 1 failure (message already printed), 2 usage error.
 */
#ifndef HSMCTL_H
#define HSMCTL_H

#include <stdbool.h>

#include "common/result.h"
#include "client/client.h"

typedef int (*hsmctl_fn)(int argc, char **argv);

/*
 * What a command does with a running hsmd when it runs against one: only
 * then are the client settings checked, and only a command that signs reads
 * the credentials and the approval wait, so a broken AWS_PROFILE or
 * HSM_APPROVAL_WAIT stops no command that never uses them.
 */
typedef enum hsmctl_net {
	HSMCTL_NO_NODE,  /* never talks to one (init, version, audit verify, ...) */
	HSMCTL_UNSIGNED, /* unsigned requests only (status, unseal) */
	HSMCTL_SIGNED,   /* signed requests */
} hsmctl_net;

typedef struct hsmctl_command {
	const char *name;    /* "init", "key create", ... */
	const char *args;    /* argument synopsis for help */
	const char *summary; /* one line */
	hsmctl_fn fn;
	hsmctl_net net;
} hsmctl_command;

/* Prints this thread's last failure as "hsmctl: <context>: <message>" and returns 1. */
int hsmctl_fail(const char *context);
/* Prints "hsmctl: CONTEXT: WHY" and returns 1: an answer without what the command prints. */
int hsmctl_fail_msg(const char *context, const char *why);
/* Prints each member of an answer as "name: value", other than strings as compact JSON. */
void hsmctl_print_fields(json_t *o);
/*
 * Formats a date of an answer (epoch seconds, a JSON number) as hsm_format_time and
 * hsm_format_time_ms do; "?" when it is not a number or no int64_t holds it.
 */
void hsmctl_format_json_time(const json_t *v, char out[21]);
void hsmctl_format_json_time_ms(const json_t *v, char out[25]);
/*
 * Flushes stdout; false when what the command printed could not all be
 * written (a full disk, a closed pipe), with why in errno_out.  main checks
 * it after every command; a command whose output is the only copy of a
 * secret checks it itself, to say what is left.
 */
bool hsmctl_stdout_written(int *errno_out);
/* access-key create's failure when the new secret was not written out (why, AKID, user, AKID). */
#define HSMCTL_SECRET_LOST                                                                     \
	"the new secret could not be written to standard output (%s): access key %s of %s "      \
	"exists, but nobody holds its secret: revoke it (hsmctl access-key revoke %s)"
/* Prints a usage error for a command and returns 2. */
int hsmctl_usage(const char *command, const char *fmt, ...) HSM_PRINTF(2, 3);

/*
 * The options a command's parser has met so far (options.c), to refuse one
 * given twice: a second value would silently replace the first.  Options
 * that collect values (--share FILE) are not noted.  Zero-initialize.
 */
#define HSMCTL_SEEN_MAX 24
typedef struct hsmctl_seen {
	const char *names[HSMCTL_SEEN_MAX]; /* without "--"; borrowed: longopts' or argv's */
	size_t n;
} hsmctl_seen;
/*
 * 0 the first time option name ("threshold", without its "--") is met;
 * else prints command's usage error "--NAME is given twice: give it once"
 * and returns 2, before the command has done anything.
 */
int hsmctl_once(hsmctl_seen *seen, const char *command, const char *name);
/*
 * The same for the long option getopt_long just returned, by the index it
 * set (abbreviations are the option they stand for); 0 for an index < 0
 * (no option recognized: the caller's loop refuses it).  Reset the index to
 * -1 before each getopt_long call, which sets it only on a match.
 */
struct option;
int hsmctl_getopt_once(hsmctl_seen *seen, const char *command, const struct option *longopts,
                       int index);

/*
 * A signed call (body not consumed) that waits for custodians where target
 * is listed in the node's approval_operations: on ApprovalRequiredException
 * it names the approval request on stderr, reads it every few seconds and
 * sends the identical request again once enough custodians approved; a
 * denial, a cancellation or the request's expiry fails; so does the end of
 * the wait (--approval-wait, SIGINT, SIGTERM), which withdraws the request.
 * Every signed call that may change something goes through it: which
 * operations wait is the node's setting, not hsmctl's.
 */
hsm_result hsmctl_call_approved(const char *target, const json_t *body,
                                json_t **out) HSM_MUST_CHECK;

/*
 * Reads a custodian share file into text (a secure buffer the caller owns),
 * with "\r\n" line endings turned into "\n": a share that went through a
 * Windows editor or mail client is the same share.  Any other byte is left
 * for the share parser to judge.  A file its group or others may read is
 * read too, with a warning on standard error (once a file).
 */
hsm_result hsmctl_read_share(const char *path, hsm_buf *text) HSM_MUST_CHECK;

/*
 * Options given before the command:
 *   hsmctl [--endpoint URL] [--ca-file F] [--client-cert F [--client-key F]] [--region R]
 *          [--store URI]
 *          [--approval-wait SECONDS] COMMAND ...
 * each at most once, as "--option VALUE" or "--option=VALUE".
 */
typedef struct hsmctl_globals_t {
	hsm_client client;
	/*
	 * Offline commands: the store several nodes share (--store or HSM_STORE, a
	 * postgresql:// URI), instead of the SQLite store in --data-dir, which then
	 * only keeps hsmctl's own audit trail.  NULL: the data directory's store.
	 */
	const char *store;
	/*
	 * How long a command waits for custodians to approve the request it made
	 * (--approval-wait or HSM_APPROVAL_WAIT, seconds), after which it withdraws
	 * the approval request; -1: until the request is decided or expires.
	 */
	long approval_wait;
	const char *command; /* the command running ("key create"), for the audit outbox */
	/*
	 * Offline commands on a store that records no account and region yet (no
	 * key was made on it): the ones its first key is to record, which its
	 * nodes' account_id and region must then be (key create's --account-id
	 * and --region, else HSM_ACCOUNT_ID and HSM_REGION, as hsmd reads them).
	 * NULL: not given.  A store that records them is always opened with its own.
	 */
	const char *key_account, *key_region;
} hsmctl_globals_t;
extern hsmctl_globals_t hsmctl_globals;
/* True when --endpoint (or HSM_ENDPOINT) names a running hsmd. */
bool hsmctl_online(void);
/*
 * 0 when every endpoint keeps what cmd sends or receives (what: "a custodian
 * share") off the network (hsm_client_require_private); else prints why and
 * returns 2: nothing has been read or sent.
 */
int hsmctl_require_private(const char *cmd, const char *what);

/* Commands (cmd_*.c). */
int hsmctl_cmd_online(int argc, char **argv);
int hsmctl_cmd_user(int argc, char **argv);
int hsmctl_cmd_access_key(int argc, char **argv);
/* The same without --endpoint: on --data-dir (or --store), a quorum of shares standing in for an officer. */
int hsmctl_cmd_user_local(int argc, char **argv);
int hsmctl_cmd_access_key_local(int argc, char **argv);
int hsmctl_cmd_approval(int argc, char **argv);
int hsmctl_cmd_cert(int argc, char **argv);
int hsmctl_cmd_audit_online(int argc, char **argv);
/* audit verify's and report's warning that the records' times go back (cmd_audit.c). */
struct hsm_audit_verify_report;
void hsmctl_audit_time_warning(const struct hsm_audit_verify_report *r);
int hsmctl_cmd_init(int argc, char **argv);
int hsmctl_cmd_unseal_check(int argc, char **argv);
int hsmctl_cmd_status_local(int argc, char **argv);
int hsmctl_cmd_key(int argc, char **argv);
/* key import (cmd_import.c). */
int hsmctl_cmd_key_import(int argc, char **argv);
/* key usage (cmd_usage.c). */
int hsmctl_cmd_key_usage(int argc, char **argv);
int hsmctl_cmd_jwt(int argc, char **argv);
int hsmctl_cmd_backup(int argc, char **argv);
int hsmctl_cmd_restore(int argc, char **argv);
int hsmctl_cmd_store(int argc, char **argv);
int hsmctl_cmd_rekey(int argc, char **argv);

#endif
