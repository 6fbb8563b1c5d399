/*
 * cmd_unseal.c - offline checks of a data directory and of custodian shares.
 *
 *   hsmctl status --data-dir DIR
 *   hsmctl unseal --data-dir DIR SHARE_FILE...
 *
 * Offline, "unseal" proves that the given share files reconstruct the
 * store's master key (a custodian drill) without starting a server; the
 * server is unsealed over its API (hsmctl --endpoint URL unseal FILE).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common/encoding.h"
#include "hsmctl/hsmctl.h"
#include "hsmctl/local.h"

static int parse_data_dir(const char *cmd, int argc, char **argv, const char **dir)
{
	static const struct option longopts[] = {{"data-dir", required_argument, NULL, 'd'},
	                                         {NULL, 0, NULL, 0}};
	hsmctl_seen seen = {0};
	for (int c, i = -1; (c = getopt_long(argc, argv, "", longopts, &i)) != -1; i = -1) {
		if (c != 'd')
			return hsmctl_usage(cmd, "unknown option");
		if (hsmctl_getopt_once(&seen, cmd, longopts, i) != 0)
			return 2;
		*dir = optarg;
	}
	if (*dir == NULL)
		return hsmctl_usage(cmd, "--data-dir is required");
	return 0;
}

int hsmctl_cmd_status_local(int argc, char **argv)
{
	const char *dir = NULL;
	int rc = parse_data_dir("status", argc, argv, &dir);
	if (rc != 0)
		return rc;
	hsmctl_local l = {0};
	uint64_t keys = 0;
	hsm_result r = hsmctl_local_inspect(dir, 0, NULL, &l);
	if (hsm_ok(r))
		r = hsm_store_key_count(l.store, &keys);
	if (hsm_ok(r)) {
		hsm_unseal_progress p;
		hsm_ks_identity id;
		char split[2 * HSM_KS_SET_ID_LEN + 1];
		hsm_keystore_unseal_status(l.ks, &p);
		hsm_keystore_identity(l.ks, &id);
		hsm_hex_encode_str(split, id.set_id, sizeof(id.set_id));
		/* split: the "set" line of the current share files (Unseal never tells it). */
		printf("store: %s\nstate: %s\nquorum: %u\nsplit: %s\nkeys: %llu\nschema: %d\n"
		       "version: %s\n",
		       hsm_keystore_store_id(l.ks), hsm_node_state_name(hsm_keystore_state(l.ks)),
		       p.threshold, split, (unsigned long long)keys, hsm_store_schema_version(l.store),
		       hsm_version());
	}
	hsmctl_local_close(&l);
	return hsm_ok(r) ? 0 : hsmctl_fail("status");
}

int hsmctl_cmd_unseal_check(int argc, char **argv)
{
	const char *dir = NULL;
	int rc = parse_data_dir("unseal", argc, argv, &dir);
	if (rc != 0)
		return rc;
	if (optind >= argc)
		return hsmctl_usage("unseal", "give the custodians' share files");
	hsmctl_local l = {0};
	hsm_result r = hsmctl_local_inspect(dir, (size_t)(argc - optind), argv + optind, &l);
	if (hsm_ok(r))
		printf("the %d share files reconstruct the master key of store %s\n", argc - optind,
		       hsm_keystore_store_id(l.ks));
	hsmctl_local_close(&l);
	return hsm_ok(r) ? 0 : hsmctl_fail("unseal");
}
