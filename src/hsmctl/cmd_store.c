/*
 * cmd_store.c - hsmctl store copy: moving a node's store to a shared one.
 *
 *   hsmctl store copy --data-dir DIR [--to URI]
 *
 * Copies the SQLite store of a stopped node (DIR is locked, so this is
 * refused beside a running hsmd) record for record into an empty shared
 * store: --to, else --store / HSM_STORE.  Key material moves as it is
 * stored, wrapped under the master key, so no shares are needed and the same
 * custodians unseal the nodes of the shared store.  The copy is recorded in
 * DIR's audit trail, naming the destination without its credentials.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "hsmctl/hsmctl.h"
#include "hsmctl/local.h"

#define NOT_EMPTY "the destination store is not empty; copy into a new, empty database"

/*
 * Both stores are opened as they are, and the destination found empty,
 * before either schema is brought forward (the copy reads and writes this
 * build's): a copy refused for its destination leaves an older source, or
 * an older shared store it was wrongly pointed at, as it was.
 */
static hsm_result copy_store(const char *data_dir, const char *to, uint64_t *keys)
{
	hsm_result res = HSM_SUCCESS;
	hsm_store *src = NULL, *dst = NULL;
	bool held = false;
	HSM_TRY(hsm_store_open_existing(data_dir, &src));
	HSM_TRY(hsm_store_open_unmigrated(to, &dst));
	HSM_TRY(hsm_store_holds_any(dst, &held));
	HSM_CHECK(!held, HSM_ERR_CONFLICT, NOT_EMPTY);
	HSM_TRY(hsm_store_migrate(src));
	HSM_TRY(hsm_store_migrate(dst));
	res = hsm_store_copy(src, dst);
	if (res.err == HSM_ERR_CONFLICT)
		res = HSM_FAIL(HSM_ERR_CONFLICT, NOT_EMPTY);
	HSM_TRY(res);
	HSM_TRY(hsm_store_key_count(dst, keys));
out:
	hsm_store_close(dst);
	hsm_store_close(src);
	return res;
}

int hsmctl_cmd_store(int argc, char **argv)
{
	static const struct option longopts[] = {{"data-dir", required_argument, NULL, 'd'},
	                                         {"to", required_argument, NULL, 't'},
	                                         {NULL, 0, NULL, 0}};
	const char *data_dir = NULL, *to = hsmctl_globals.store;
	hsmctl_seen seen = {0};
	for (int c, i = -1; (c = getopt_long(argc, argv, "", longopts, &i)) != -1; i = -1) {
		if (hsmctl_getopt_once(&seen, "store copy", longopts, i) != 0)
			return 2;
		switch (c) {
		case 'd': data_dir = optarg; break;
		case 't': to = optarg; break;
		default: return hsmctl_usage("store copy", "unknown option");
		}
	}
	if (data_dir == NULL || optind != argc)
		return hsmctl_usage("store copy", "--data-dir DIR is required, and nothing else");
	if (to == NULL || to[0] == '\0')
		return hsmctl_usage("store copy", "name the destination: --to URI, --store or HSM_STORE");
	char shown[1024];
	hsm_location_shown(to, shown, sizeof(shown));
	uint64_t keys = 0;
	hsm_result copied = copy_store(data_dir, to, &keys);
	char why[HSM_ERRMSG_MAX] = "";
	if (hsm_failed(copied))
		snprintf(why, sizeof(why), "%s", hsm_last_message());
	/* The source directory's audit trail records the copy, whatever its outcome. */
	hsmctl_globals.store = NULL;
	hsmctl_local l;
	/*
	 * Recording changes nothing in the source: a refused copy leaves its schema
	 * as it was.  After a copy (which brought it forward), the outbox works as
	 * for any change, settling what earlier commands left unrecorded.
	 */
	hsm_result opened = hsmctl_local_open_as_is(data_dir, 0, NULL, &l);
	if (hsm_ok(opened) && hsm_ok(copied)) {
		opened = hsmctl_local_migrate(&l);
		if (hsm_failed(opened))
			hsmctl_local_close(&l);
	}
	if (hsm_failed(opened))
		return hsmctl_fail(hsm_failed(copied) ? "store copy" : "store copy: auditing the copy");
	hsm_audit_field f[] = {{"to", shown}};
	hsm_result r = hsmctl_local_audit_fields(&l, "StoreCopy", NULL, 0, copied, f, 1);
	hsmctl_local_close(&l);
	if (hsm_failed(copied)) {
		fprintf(stderr, "hsmctl: store copy: %s\n", why);
		return 1;
	}
	if (hsm_failed(r))
		return hsmctl_fail("store copy: auditing the copy");
	printf("copied: %s -> %s\nkeys: %llu\n", data_dir, shown, (unsigned long long)keys);
	printf("Start the nodes with store = <the URI>; the same custodians unseal them.\n");
	return 0;
}
