/*
 * cmd_key.c - hsmctl key ...: key management on a data directory.
 *
 *   hsmctl key create   --data-dir DIR --share FILE... [--spec S] [--usage U]
 *                       [--description TEXT] [--alias alias/NAME] [--origin EXTERNAL]
 *                       [--region R --account-id ID]
 *   hsmctl key list     --data-dir DIR
 *   hsmctl key describe --data-dir DIR KEY
 *   hsmctl key enable|disable --data-dir DIR KEY
 *   hsmctl key rotate   --data-dir DIR --share FILE... KEY
 *   hsmctl key rotation --data-dir DIR KEY (--enable [--period DAYS] | --disable)
 *   hsmctl key schedule-deletion --data-dir DIR KEY [--days N]
 *   hsmctl key cancel-deletion   --data-dir DIR KEY
 *   hsmctl key import   ... (cmd_import.c; also with --endpoint)
 *
 * KEY is a key id, key ARN or alias.  Every change needs a quorum of the
 * custodians' share files, as offline user changes do: they stand in for an
 * officer, so the data directory alone can neither disable nor destroy a key
 * (online, ScheduleKeyDeletion may wait for custodians), and the unsealed
 * store signs the trail's checkpoint after the change.  list and describe
 * only read: they open the store as it is (no new store, no migration).
 *
 * Keys carry their store's account and region (ARNs, the default policy's
 * root principal), which the store records at its first key and its nodes
 * must be configured with.  key create uses the store's; on a store that
 * records none yet, it needs them given (--region and --account-id, else
 * HSM_REGION and HSM_ACCOUNT_ID, the variables hsmd reads them from).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hsmctl/hsmctl.h"
#include "hsmctl/local.h"

typedef struct key_opts {
	const char *sub;
	const char *data_dir;
	char *shares[HSMCTL_MAX_SHARE_ARGS];
	size_t n_shares;
	const char *spec, *usage, *description, *alias, *key, *origin;
	const char *region, *account; /* the store's identity, when it records none yet */
	int64_t period, days;
	bool enable, disable;
} key_opts;

/* The account and region given for a store that records none: checked as hsmd checks them. */
static int parse_identity(key_opts *o)
{
	const char *region = o->region != NULL ? o->region : getenv("HSM_REGION");
	const char *account = o->account != NULL ? o->account : getenv("HSM_ACCOUNT_ID");
	const char *from_region = o->region != NULL ? "--region" : "HSM_REGION";
	const char *from_account = o->account != NULL ? "--account-id" : "HSM_ACCOUNT_ID";
	if (region != NULL && !hsm_region_name_valid(region))
		return hsmctl_usage("key", "%s: expected a region name such as us-east-1", from_region);
	if (account != NULL && (strlen(account) != 12 || strspn(account, "0123456789") != 12))
		return hsmctl_usage("key", "%s: expected 12 digits", from_account);
	hsmctl_globals.key_region = region;
	hsmctl_globals.key_account = account;
	return 0;
}

/*
 * Each subcommand and the options it takes beyond --data-dir and --share
 * (getopt's letters below), and whether it names a KEY: an option of
 * another subcommand is refused, not ignored (schedule-deletion --period 7
 * would otherwise wait the default 30 days).
 */
static const struct key_sub {
	const char *name;
	const char *takes;
	bool key;
} key_subs[] = {
    {"create", "kuDaorA", false},    {"list", "", false},
    {"describe", "", true},          {"enable", "", true},
    {"disable", "", true},           {"rotate", "", true},
    {"rotation", "EXp", true},       {"schedule-deletion", "n", true},
    {"cancel-deletion", "", true},
};

/* What to say of an option another subcommand takes: the one meant, where it is likely. */
static const char *option_hint(const char *sub, int c)
{
	if (c == 'p' && strcmp(sub, "schedule-deletion") == 0)
		return " (its waiting period is --days N)";
	if (c == 'n' && strcmp(sub, "rotation") == 0)
		return " (its period is --period DAYS)";
	return "";
}

static int parse_key(int argc, char **argv, key_opts *o)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'}, {"share", required_argument, NULL, 's'},
	    {"spec", required_argument, NULL, 'k'},     {"usage", required_argument, NULL, 'u'},
	    {"description", required_argument, NULL, 'D'}, {"alias", required_argument, NULL, 'a'},
	    {"period", required_argument, NULL, 'p'},   {"days", required_argument, NULL, 'n'},
	    {"enable", no_argument, NULL, 'E'},         {"disable", no_argument, NULL, 'X'},
	    {"origin", required_argument, NULL, 'o'},   {"region", required_argument, NULL, 'r'},
	    {"account-id", required_argument, NULL, 'A'}, {NULL, 0, NULL, 0}};
	const struct key_sub *sub = NULL;
	for (size_t i = 0; i < sizeof(key_subs) / sizeof(key_subs[0]); i++)
		if (strcmp(o->sub, key_subs[i].name) == 0)
			sub = &key_subs[i];
	if (sub == NULL)
		return hsmctl_usage("key", "unknown subcommand '%s'", o->sub);
	hsmctl_seen seen = {0};
	for (int c, index = -1; (c = getopt_long(argc, argv, "", longopts, &index)) != -1;
	     index = -1) {
		if (c != '?' && c != 'd' && c != 's' && strchr(sub->takes, c) == NULL)
			return hsmctl_usage("key", "--%s is not an option of key %s%s",
			                    longopts[index].name, o->sub, option_hint(o->sub, c));
		if (c != 's' && hsmctl_getopt_once(&seen, "key", longopts, index) != 0)
			return 2;
		switch (c) {
		case 'd': o->data_dir = optarg; break;
		case 's':
			if (o->n_shares == HSMCTL_MAX_SHARE_ARGS)
				return hsmctl_usage("key", "too many --share options");
			o->shares[o->n_shares++] = optarg;
			break;
		case 'k': o->spec = optarg; break;
		case 'u': o->usage = optarg; break;
		case 'D': o->description = optarg; break;
		case 'a': o->alias = optarg; break;
		case 'o': o->origin = optarg; break;
		case 'r': o->region = optarg; break;
		case 'A': o->account = optarg; break;
		case 'E': o->enable = true; break;
		case 'X': o->disable = true; break;
		case 'p':
		case 'n':
			if (hsm_failed(hsm_parse_i64(optarg, 1, 2560, c == 'p' ? &o->period : &o->days)))
				return hsmctl_usage("key", "%s", hsm_last_message());
			break;
		default: return hsmctl_usage("key", "unknown option");
		}
	}
	if (optind < argc && sub->key)
		o->key = argv[optind++];
	if (optind < argc)
		return hsmctl_usage("key", "unexpected argument '%s'", argv[optind]);
	if (sub->key && o->key == NULL)
		return hsmctl_usage("key", "%s needs a KEY argument", o->sub);
	return strcmp(o->sub, "create") == 0 ? parse_identity(o) : 0;
}

static void print_key(const hsm_key_record *r)
{
	char created[21], del[21] = "-", rot[21] = "-";
	hsm_format_time(r->created, created);
	if (r->deletion_date)
		hsm_format_time(r->deletion_date, del);
	if (r->rotation_enabled)
		hsm_format_time(r->next_rotation, rot);
	char valid_to[21] = "-", material[HSM_MATERIAL_ID_LEN + 1];
	if (r->valid_to)
		hsm_format_time(r->valid_to, valid_to);
	if (hsm_failed(hsm_kms_material_id(r->key_id, r->primary_version, material)))
		snprintf(material, sizeof(material), "(out of memory)");
	printf("key: %s\nspec: %s\nusage: %s\nstate: %s\norigin: %s\ncreated: %s\n"
	       "primary-version: %u\ncurrent-material-id: %s\n"
	       "rotation: %s (period %d days, next %s)\ndeletion-date: %s\n"
	       "material-valid-to: %s\ndescription: %s\n",
	       r->key_id, hsm_spec_name(r->spec), hsm_usage_name(r->usage),
	       hsm_key_state_name(r->state), hsm_key_origin_name(r->origin), created,
	       r->primary_version, material, r->rotation_enabled ? "enabled" : "disabled",
	       r->rotation_period_days, rot, del, valid_to, r->description);
}

/*
 * The store's account and region, which the key's ARN and default policy
 * name: those it records, which any given must match; on a store that
 * records none, the ones given (this key records them), which must be the
 * account the policies of the keys already there name, if any (keys made
 * before the store recorded its account: hsmd's start checks them alike),
 * or the nodes of that account would refuse to start on the store.
 */
static hsm_result check_identity(hsm_store *store)
{
	const char *account = hsmctl_globals.key_account, *region = hsmctl_globals.key_region;
	char theirs[13], their_region[HSM_REGION_NAME_MAX + 1];
	bool recorded = false;
	HSM_GUARD(hsm_kms_account_recorded(store, theirs, their_region, &recorded));
	if (recorded) {
		HSM_ENSURE((account == NULL || strcmp(account, theirs) == 0) &&
		               (region == NULL || strcmp(region, their_region) == 0),
		           HSM_ERR_CONFLICT,
		           "the store's keys belong to account %s in region %s, not the %s given "
		           "(--account-id and --region, or HSM_ACCOUNT_ID and HSM_REGION): give the "
		           "store's, or none; nothing was created",
		           theirs, their_region,
		           account != NULL && strcmp(account, theirs) != 0 ? "account" : "region");
		return HSM_SUCCESS;
	}
	HSM_ENSURE(account != NULL && region != NULL, HSM_ERR_VALIDATION,
	           "this store records no account and region yet: its first key records them, and "
	           "its nodes must run with the same account_id and region, so give them: "
	           "--account-id ID --region R (or HSM_ACCOUNT_ID and HSM_REGION); nothing was "
	           "created");
	bool has_keys = false;
	/* Unread (a store older than this build, read as it is): checked again once migrated. */
	if (hsm_failed(hsm_kms_account_of_keys(store, account, theirs, &has_keys)))
		return HSM_SUCCESS;
	HSM_ENSURE(theirs[0] == '\0', HSM_ERR_CONFLICT,
	           "the store records no account yet, but the policies of its keys name account %s, "
	           "not the %s given (--account-id, or HSM_ACCOUNT_ID): its nodes run with that "
	           "account_id, and would refuse the store once this key recorded another; give "
	           "--account-id %s and the region they run in; nothing was created",
	           theirs, account, theirs);
	return HSM_SUCCESS;
}

/*
 * check_identity on the store as it is, before it is opened to be changed
 * (which migrates an older schema): a refused key create leaves it as it was.
 */
static hsm_result check_identity_first(const key_opts *o)
{
	HSM_ENSURE(o->data_dir != NULL, HSM_ERR_VALIDATION, "--data-dir is required");
	hsm_store *store = NULL;
	HSM_GUARD(hsm_store_open_existing(hsmctl_store_location(o->data_dir), &store));
	hsm_result r = check_identity(store);
	hsm_store_close(store);
	return r;
}

/*
 * The alias key create is to give its key: a name CreateAlias takes and no
 * alias holds, checked before the key is made, so that a refused alias
 * leaves no key behind.
 */
static hsm_result check_alias_free(hsmctl_local *l, const char *alias)
{
	HSM_GUARD(hsm_kms_alias_name_check(alias));
	char id[HSM_UUID_STRLEN + 1];
	hsm_result r = hsm_kms_resolve(l->kms, alias, id);
	if (r.err == HSM_ERR_NOT_FOUND)
		return HSM_SUCCESS;
	HSM_GUARD(r);
	return HSM_FAIL(HSM_ERR_ALREADY_EXISTS,
	                "An alias with the name %s already exists (key %s); nothing was created",
	                alias, id);
}

/*
 * The alias failed after the key was made (taken meanwhile, say): the key,
 * which nothing names, goes as the PKCS#11 module's keys do when their
 * objects cannot be made: scheduled for deletion, the shortest wait, which
 * cancel-deletion undoes.  Returns the alias's failure, saying so.
 */
#define WITHDRAWN_KEY_DAYS 7 /* ScheduleKeyDeletion's shortest waiting period */

static hsm_result withdraw_key(hsmctl_local *l, const char *key_id, hsm_err err)
{
	char why[HSM_ERRMSG_MAX];
	snprintf(why, sizeof(why), "%s", hsm_last_message());
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	hsm_result d = hsm_kms_schedule_deletion(l->kms, &l->caller, key_id,
	                                         WITHDRAWN_KEY_DAYS, &rec);
	hsm_result a = hsmctl_local_audit(l, "ScheduleKeyDeletion", key_id, rec.primary_version, d);
	hsm_key_record_clear(&rec);
	if (hsm_ok(d) && hsm_ok(a))
		return HSM_FAIL(err, "%.300s; key %s, made without it, is scheduled for deletion in %d "
		                     "days (hsmctl key cancel-deletion %s keeps it)",
		                why, key_id, WITHDRAWN_KEY_DAYS, key_id);
	return HSM_FAIL(err, "%.300s; key %s was made without it, and could not be scheduled for "
	                     "deletion: schedule it (hsmctl key schedule-deletion %s)",
	                why, key_id, key_id);
}

static hsm_result do_create(hsmctl_local *l, const key_opts *o)
{
	hsm_create_key_req req = {.description = o->description,
	                          .spec = HSM_SPEC_SYMMETRIC_DEFAULT,
	                          .usage = HSM_USAGE_ENCRYPT_DECRYPT};
	if (o->spec != NULL)
		HSM_GUARD(hsm_spec_parse(o->spec, &req.spec));
	if (o->origin != NULL)
		HSM_GUARD(hsm_key_origin_parse(o->origin, &req.origin));
	if (o->usage != NULL)
		HSM_GUARD(hsm_usage_parse(o->usage, &req.usage));
	else if (hsm_spec_get(req.spec)->type == HSM_KT_HMAC)
		req.usage = HSM_USAGE_GENERATE_VERIFY_MAC;
	else if (req.spec != HSM_SPEC_SYMMETRIC_DEFAULT && req.spec != HSM_SPEC_RSA_2048 &&
	         req.spec != HSM_SPEC_RSA_3072 && req.spec != HSM_SPEC_RSA_4096)
		req.usage = HSM_USAGE_SIGN_VERIFY;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	hsm_result r = check_identity(l->store); /* again: the store may have changed since */
	if (hsm_ok(r) && o->alias != NULL)
		r = check_alias_free(l, o->alias);
	if (hsm_ok(r))
		r = hsm_kms_create_key(l->kms, &l->caller, &req, &rec);
	HSM_GUARD(hsmctl_local_audit(l, "CreateKey", hsm_ok(r) ? rec.key_id : NULL, 1, r));
	HSM_GUARD(r);
	if (o->alias != NULL) {
		r = hsm_kms_create_alias(l->kms, &l->caller, o->alias, rec.key_id);
		hsm_result a = hsmctl_local_audit(l, "CreateAlias", rec.key_id, 0, r);
		if (hsm_failed(r))
			r = withdraw_key(l, rec.key_id, r.err);
		else
			r = a;
	}
	if (hsm_ok(r))
		print_key(&rec);
	hsm_key_record_clear(&rec);
	return r;
}

static hsm_result print_one(const hsm_key_record *r, void *arg)
{
	char *last = arg; /* the page's last id becomes the next page's marker */
	printf("%s %s %s %s v%u\n", r->key_id, hsm_spec_name(r->spec), hsm_usage_name(r->usage),
	       hsm_key_state_name(r->state), r->primary_version);
	memcpy(last, r->key_id, HSM_UUID_STRLEN + 1);
	return HSM_SUCCESS;
}

static hsm_result do_list(hsmctl_local *l)
{
	char marker[HSM_UUID_STRLEN + 1] = "", last[HSM_UUID_STRLEN + 1] = "";
	for (bool more = true; more; memcpy(marker, last, sizeof(marker)))
		HSM_GUARD(hsm_kms_list_keys(l->kms, &l->caller, marker, 1000, print_one, last,
		                            &more));
	return HSM_SUCCESS;
}

static hsm_result show(hsmctl_local *l, const char *key)
{
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_kms_describe_key(l->kms, &l->caller, key, &rec));
	print_key(&rec);
	hsm_key_record_clear(&rec);
	return HSM_SUCCESS;
}

static hsm_result do_sub(hsmctl_local *l, const key_opts *o)
{
	const hsm_caller *me = &l->caller;
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	hsm_result r = HSM_SUCCESS;
	const char *op = "";
	if (strcmp(o->sub, "describe") == 0)
		return show(l, o->key);
	op = strcmp(o->sub, "enable") == 0               ? "EnableKey"
	     : strcmp(o->sub, "disable") == 0            ? "DisableKey"
	     : strcmp(o->sub, "rotate") == 0             ? "RotateKeyOnDemand"
	     : strcmp(o->sub, "rotation") == 0           ? (o->enable ? "EnableKeyRotation"
	                                                              : "DisableKeyRotation")
	     : strcmp(o->sub, "schedule-deletion") == 0 ? "ScheduleKeyDeletion"
	                                                 : "CancelKeyDeletion";
	if (strcmp(o->sub, "enable") == 0)
		r = hsm_kms_enable_key(l->kms, me, o->key);
	else if (strcmp(o->sub, "disable") == 0)
		r = hsm_kms_disable_key(l->kms, me, o->key);
	else if (strcmp(o->sub, "rotate") == 0)
		r = hsm_kms_rotate_now(l->kms, me, o->key, &rec);
	else if (strcmp(o->sub, "rotation") == 0 && o->enable != o->disable)
		r = o->enable ? hsm_kms_enable_rotation(l->kms, me, o->key, (int)o->period)
		              : hsm_kms_disable_rotation(l->kms, me, o->key);
	else if (strcmp(o->sub, "schedule-deletion") == 0)
		r = hsm_kms_schedule_deletion(l->kms, me, o->key, (int)o->days, &rec);
	else if (strcmp(o->sub, "cancel-deletion") == 0)
		r = hsm_kms_cancel_deletion(l->kms, me, o->key, &rec);
	else
		return HSM_FAIL(HSM_ERR_VALIDATION, "unknown key command or missing --enable/--disable");
	char id[HSM_UUID_STRLEN + 1] = "";
	if (hsm_failed(hsm_kms_resolve(l->kms, o->key, id)))
		id[0] = '\0';
	hsm_result a = hsmctl_local_audit(l, op, id[0] ? id : NULL, rec.primary_version, r);
	hsm_key_record_clear(&rec);
	HSM_GUARD(r);
	HSM_GUARD(a);
	return show(l, o->key);
}

/*
 * list and describe read the store as it is, as status does: never made or
 * migrated.  A store older than this build lacks what later schema steps
 * added, so reading it here is refused rather than half done.
 */
static hsm_result open_to_read(const key_opts *o, hsmctl_local *l)
{
	HSM_GUARD(hsmctl_local_inspect(o->data_dir, o->n_shares, o->shares, l));
	int have = hsm_store_schema_version(l->store), latest = hsm_store_schema_latest(l->store);
	HSM_ENSURE(have >= latest, HSM_ERR_STORE,
	           "the store has schema version %d, older than this hsmctl's %d, and key %s never "
	           "brings it forward: use the hsmctl of the hsmd that runs it, or start the "
	           "upgraded hsmd first (it migrates the store)",
	           have, latest, o->sub);
	return HSM_SUCCESS;
}

int hsmctl_cmd_key(int argc, char **argv)
{
	if (argc < 2)
		return hsmctl_usage("key", "a subcommand is required");
	key_opts o;
	memset(&o, 0, sizeof(o));
	o.sub = argv[1];
	int rc = parse_key(argc - 1, argv + 1, &o);
	if (rc != 0)
		return rc;
	hsmctl_local l = {0};
	bool reads = strcmp(o.sub, "list") == 0 || strcmp(o.sub, "describe") == 0;
	hsm_result r = strcmp(o.sub, "create") == 0 ? check_identity_first(&o) : HSM_SUCCESS;
	if (hsm_ok(r))
		r = reads ? open_to_read(&o, &l) : hsmctl_local_open_as_is(o.data_dir, o.n_shares, o.shares, &l);
	if (hsm_ok(r) && !reads && o.n_shares == 0) {
		hsm_unseal_progress p;
		hsm_keystore_unseal_status(l.ks, &p);
		r = HSM_FAIL(HSM_ERR_QUORUM_REQUIRED,
		             "offline, key %s needs a quorum of the custodians' share files, --share "
		             "FILE for each of %u shares: they stand in for an officer",
		             o.sub, p.threshold);
	} else if (hsm_ok(r)) {
		if (strcmp(o.sub, "create") == 0)
			r = do_create(&l, &o);
		else if (strcmp(o.sub, "list") == 0)
			r = do_list(&l);
		else
			r = do_sub(&l, &o);
		r = hsmctl_local_explain(&l, o.n_shares, r);
	}
	hsmctl_local_close(&l);
	return hsm_ok(r) ? 0 : hsmctl_fail(o.sub);
}
