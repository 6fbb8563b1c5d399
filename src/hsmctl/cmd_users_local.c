/*
 * cmd_users_local.c - hsmctl user / access-key on a data directory or a
 * shared store, without a running hsmd:
 *
 *   hsmctl user create NAME --roles R[,R] --data-dir DIR --share FILE...
 *   hsmctl user disable|enable|unlock NAME --data-dir DIR --share FILE...
 *   hsmctl user list --data-dir DIR
 *   hsmctl access-key create USER --data-dir DIR --share FILE...
 *   hsmctl access-key revoke AKID --data-dir DIR --share FILE...
 *   hsmctl access-key list [USER] --data-dir DIR
 *
 * The way back when no officer can act through the API: the officer that
 * init made was never written (the ceremony stopped after the master key),
 * its credentials are lost or stolen, or it is locked out (anyone who knows
 * an access key id can lock its user with wrong signatures).  Offline, a
 * quorum of the custodians' share files stands in for an officer: every
 * change needs one (the same quorum that unseals), so holding the data
 * directory alone grants nobody authority.  Each command is recorded in
 * DIR's audit trail as hsmd records the API's (CreateUser, UnlockUser, ...,
 * naming the user and access key id, never the secret).  Lists read the
 * store as it is and need no shares.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "hsmctl/hsmctl.h"
#include "hsmctl/local.h"

typedef struct users_opts {
	const char *cmd; /* "user" or "access-key" */
	const char *sub, *name, *roles, *data_dir;
	char *shares[HSMCTL_MAX_SHARE_ARGS];
	size_t n_shares;
} users_opts;

/* argv[0] is the subcommand; options anywhere after it; at most one operand (NAME, USER or AKID). */
static int parse(const char *cmd, int argc, char **argv, users_opts *o)
{
	static const struct option longopts[] = {{"data-dir", required_argument, NULL, 'd'},
	                                         {"share", required_argument, NULL, 's'},
	                                         {"roles", required_argument, NULL, 'r'},
	                                         {NULL, 0, NULL, 0}};
	memset(o, 0, sizeof(*o));
	o->cmd = cmd;
	o->sub = argv[0];
	hsmctl_seen seen = {0};
	optind = 1;
	for (int c, i = -1; (c = getopt_long(argc, argv, "", longopts, &i)) != -1; i = -1) {
		if (c != 's' && hsmctl_getopt_once(&seen, cmd, longopts, i) != 0)
			return 2;
		switch (c) {
		case 'd': o->data_dir = optarg; break;
		case 'r': o->roles = optarg; break;
		case 's':
			if (o->n_shares == HSMCTL_MAX_SHARE_ARGS)
				return hsmctl_usage(cmd, "too many --share options");
			o->shares[o->n_shares++] = optarg;
			break;
		default: return hsmctl_usage(cmd, "unknown option");
		}
	}
	if (optind < argc)
		o->name = argv[optind++];
	if (optind < argc)
		return hsmctl_usage(cmd, "unexpected argument '%s'", argv[optind]);
	if (o->data_dir == NULL)
		return hsmctl_usage(cmd, "needs --endpoint (a running hsmd), or --data-dir DIR and a "
		                         "quorum of --share FILE (offline)");
	if (o->roles != NULL && strcmp(o->sub, "create") != 0)
		return hsmctl_usage(cmd, "--roles goes with create only");
	return 0;
}

static hsm_result parse_roles(const char *list, unsigned *roles)
{
	char buf[128];
	HSM_ENSURE((size_t)snprintf(buf, sizeof(buf), "%s", list) < sizeof(buf), HSM_ERR_VALIDATION,
	           "--roles is too long");
	*roles = 0;
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		hsm_role role;
		HSM_GUARD(hsm_role_parse(t, &role));
		*roles |= HSM_ROLE_BIT(role);
	}
	return HSM_SUCCESS;
}

static hsm_result print_user(const hsm_user_record *u, void *arg)
{
	(void)arg;
	char roles[128] = "";
	HSM_GUARD(hsm_roles_format(u->roles, roles, sizeof(roles)));
	printf("UserName: %s\nRoles: %s\nDisabled: %s\nLocked: %s\nFailedAuthentications: %u\n\n",
	       u->name, roles, u->disabled ? "true" : "false", u->locked ? "true" : "false",
	       (unsigned)u->failed_auth);
	return HSM_SUCCESS;
}

static hsm_result print_access_key(const hsm_access_key_record *k, void *arg)
{
	(void)arg;
	printf("AccessKeyId: %s\nUserName: %s\nStatus: %s\n\n", k->access_key_id, k->user,
	       k->active ? "Active" : "Inactive");
	return HSM_SUCCESS;
}

/* Lists: read as they are, and recorded like the API's (an auditor's question is a request too). */
static hsm_result list(hsmctl_local *l, const users_opts *o)
{
	bool users = strcmp(o->cmd, "user") == 0;
	HSM_ENSURE(!users || o->name == NULL, HSM_ERR_VALIDATION, "user list takes no NAME");
	hsm_audit_field f[] = {{"target_user", o->name != NULL ? o->name : ""}};
	hsm_result r = users ? hsm_kms_user_list(l->kms, &l->caller, print_user, NULL)
	                     : hsm_kms_access_key_list(l->kms, &l->caller, o->name,
	                                               print_access_key, NULL);
	HSM_GUARD(hsmctl_local_audit_fields(l, users ? "ListUsers" : "ListAccessKeys", NULL, 0, r, f,
	                                    o->name != NULL ? 1 : 0));
	return r;
}

static hsm_result user_change(hsmctl_local *l, const users_opts *o)
{
	const hsm_caller *me = &l->caller;
	hsm_result r = HSM_SUCCESS;
	const char *op;
	char role_names[128] = "";
	unsigned roles = 0;
	if (strcmp(o->sub, "create") == 0) {
		op = "CreateUser";
		HSM_ENSURE(o->roles != NULL, HSM_ERR_VALIDATION,
		           "user create needs --roles (crypto-officer, crypto-user, auditor, custodian)");
		r = parse_roles(o->roles, &roles);
		if (hsm_ok(r))
			r = hsm_roles_format(roles, role_names, sizeof(role_names));
		if (hsm_ok(r))
			r = hsm_kms_user_create(l->kms, me, o->name, roles);
		else /* refused for its roles: the record names them as given, as hsmd's does */
			snprintf(role_names, sizeof(role_names), "%s", o->roles);
	} else if (strcmp(o->sub, "disable") == 0 || strcmp(o->sub, "enable") == 0) {
		bool off = strcmp(o->sub, "disable") == 0;
		op = off ? "DisableUser" : "EnableUser";
		r = hsm_kms_user_set_disabled(l->kms, me, o->name, off);
	} else {
		op = "UnlockUser";
		r = hsm_kms_user_unlock(l->kms, me, o->name);
	}
	hsm_audit_field f[] = {{"target_user", o->name}, {"target_roles", role_names}};
	HSM_GUARD(hsmctl_local_audit_fields(l, op, NULL, 0, r, f, role_names[0] != '\0' ? 2 : 1));
	HSM_GUARD(r);
	printf("UserName: %s\n", o->name);
	return HSM_SUCCESS;
}

static hsm_result access_key_change(hsmctl_local *l, const users_opts *o)
{
	if (strcmp(o->sub, "revoke") == 0) {
		hsm_result r = hsm_kms_access_key_revoke(l->kms, &l->caller, o->name);
		hsm_audit_field f[] = {{"target_access_key_id", o->name}};
		HSM_GUARD(hsmctl_local_audit_fields(l, "RevokeAccessKey", NULL, 0, r, f, 1));
		HSM_GUARD(r);
		printf("AccessKeyId: %s\nStatus: Inactive\n", o->name);
		return HSM_SUCCESS;
	}
	char akid[HSM_ACCESS_KEY_ID_LEN + 1] = "";
	hsm_secret *secret = NULL;
	hsm_result r = hsm_kms_access_key_create(l->kms, &l->caller, o->name, akid, &secret);
	bool noted = hsmctl_local_noted(l);
	/* The id only: the secret goes to the operator's terminal alone. */
	hsm_audit_field f[] = {{"target_user", o->name}, {"target_access_key_id", akid}};
	hsm_result a =
	    hsmctl_local_audit_fields(l, "CreateAccessKey", NULL, 0, r, f, akid[0] != '\0' ? 2 : 1);
	int err = 0;
	if (hsm_ok(r) && hsm_ok(a)) {
		printf("UserName: %s\nAccessKeyId: %s\nSecretAccessKey: %.*s\n", o->name, akid,
		       (int)hsm_secret_len(secret), (const char *)hsm_secret_bytes(secret));
		if (!hsmctl_stdout_written(&err)) {
			hsm_secret_free(secret);
			return HSM_FAIL(HSM_ERR_IO, HSMCTL_SECRET_LOST, strerror(err), akid, o->name, akid);
		}
	}
	hsm_secret_free(secret);
	if (hsm_ok(r) && hsm_failed(a)) /* the key exists, but no one will ever hold its secret */
		fprintf(stderr,
		        "hsmctl: access-key create: access key %s of %s is made, but its record could "
		        "not be written, so its secret is withheld: revoke it (hsmctl access-key revoke "
		        "%s); %s\n",
		        akid, o->name, akid,
		        noted ? "the next offline command on the store, or its node's start, records "
		                "its creation"
		              : "its creation is in no record");
	HSM_GUARD(a);
	return r;
}

static int run(const char *cmd, int argc, char **argv)
{
	if (argc < 2)
		return hsmctl_usage(cmd, "a subcommand is required");
	users_opts o;
	int rc = parse(cmd, argc - 1, argv + 1, &o);
	if (rc != 0)
		return rc;
	bool users = strcmp(cmd, "user") == 0;
	bool listing = strcmp(o.sub, "list") == 0;
	bool known = listing || (users ? strcmp(o.sub, "create") == 0 ||
	                                     strcmp(o.sub, "disable") == 0 ||
	                                     strcmp(o.sub, "enable") == 0 ||
	                                     strcmp(o.sub, "unlock") == 0
	                               : strcmp(o.sub, "create") == 0 || strcmp(o.sub, "revoke") == 0);
	if (!known)
		return hsmctl_usage(cmd, "unknown subcommand '%s'", o.sub);
	if (!listing && o.name == NULL)
		return hsmctl_usage(cmd, "%s needs a %s", o.sub,
		                    !users && strcmp(o.sub, "revoke") == 0 ? "AKID" : "user NAME");
	if (!listing && o.n_shares == 0)
		return hsmctl_usage(cmd, "offline, %s %s needs a quorum of the custodians' share files "
		                         "(--share FILE for each): they stand in for an officer",
		                    cmd, o.sub);
	hsmctl_local l = {0};
	hsm_result r = listing ? hsmctl_local_inspect(o.data_dir, o.n_shares, o.shares, &l)
	                       : hsmctl_local_open_as_is(o.data_dir, o.n_shares, o.shares, &l);
	if (hsm_ok(r))
		r = listing ? list(&l, &o) : users ? user_change(&l, &o) : access_key_change(&l, &o);
	r = hsmctl_local_explain(&l, o.n_shares, r);
	hsmctl_local_close(&l);
	if (hsm_ok(r))
		return 0;
	char ctx[64];
	snprintf(ctx, sizeof(ctx), "%s %s", cmd, o.sub);
	return hsmctl_fail(ctx);
}

int hsmctl_cmd_user_local(int argc, char **argv)
{
	return run("user", argc, argv);
}

int hsmctl_cmd_access_key_local(int argc, char **argv)
{
	return run("access-key", argc, argv);
}
