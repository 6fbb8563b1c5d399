/*
 * master_watch.c - a node unsealed under a master key its store no longer
 * names seals itself (hsm_server_check_master_key).
 *
 * hsmctl rekey on a shared PostgreSQL store is refused while another hsmd
 * session is connected (store_pg_rekey.c).  A node whose sessions were
 * ended under it (a database restart, an administrator, a network cut)
 * has none until it next reaches the store, so a rekey in that gap
 * commits, and the node, still holding the old master key's wrapping
 * keys, would wrap new key versions under a key the store no longer
 * names: after its next start they fail their integrity check.  Each
 * scheduler round, before the scheduled work, an unsealed node reads the
 * store's share-set id and key check value, and seals itself when they are
 * not the ones it unsealed with; the custodians unseal it with the new
 * shares.  What it serves between the rekey and that round is not covered:
 * every node is to be stopped before a rekey.
 */
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server.h"

void hsm_server_check_master_key(hsm_server *s)
{
	if (hsm_keystore_state(s->ks) != HSM_NODE_UNSEALED)
		return;
	hsm_ks_identity id, again;
	hsm_keystore_identity(s->ks, &id);
	if (!hsm_keystore_master_replaced(s->ks))
		return;
	/* Unsealed again meanwhile (with the new shares, then): nothing to do. */
	hsm_keystore_identity(s->ks, &again);
	if (!hsm_ct_equal(id.kcv, again.kcv, sizeof(id.kcv)) ||
	    hsm_keystore_state(s->ks) != HSM_NODE_UNSEALED)
		return;
	hsm_result audited = hsm_audit_seal(s->audit);
	if (hsm_failed(audited))
		hsm_warn("sealing: the signed seal checkpoint could not be written (%s); the "
		         "unsigned checkpoints that follow will fail verification with the public key",
		         hsm_last_message());
	hsm_keystore_seal(s->ks);
	hsm_server_auth_flush(s);
	hsm_server_recount(s);
	atomic_fetch_add(&s->metrics.master_key_seals, 1);
	hsm_error("the store's master key was replaced (hsmctl rekey) after this node unsealed: "
	          "sealed, so that nothing is wrapped under the old one; unseal it with the new "
	          "shares");
}
