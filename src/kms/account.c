/*
 * account.c - which account a store's keys were made under, as their
 * policies say, for a store that predates its record of the account
 * (hsm_kms_account_check): hsmd's start and hsmctl's key create ask it.
 */
#include <string.h>

#include "kms/kms.h"

typedef struct account_probe {
	const char *mine;
	char other[13];
	bool seen; /* a key was listed */
} account_probe;

/*
 * The default policy names the account's root (arn:aws:iam::<id>:root); a
 * policy that names an account and never mine names another's.
 */
static hsm_result probe_account(const hsm_key_record *k, void *arg)
{
	account_probe *p = arg;
	p->seen = true;
	static const char prefix[] = "arn:aws:iam::";
	const char *at = k->policy != NULL ? strstr(k->policy, prefix) : NULL;
	if (at == NULL || strstr(k->policy, p->mine) != NULL)
		return HSM_SUCCESS;
	at += sizeof(prefix) - 1;
	size_t n = strspn(at, "0123456789");
	if (n == 12 && at[n] == ':')
		memcpy(p->other, at, 12);
	return HSM_SUCCESS;
}

hsm_result hsm_kms_account_of_keys(hsm_store *store, const char *account_id, char other[13],
                                   bool *has_keys)
{
	HSM_ASSERT(store != NULL && account_id != NULL && other != NULL && has_keys != NULL);
	account_probe p = {.mine = account_id, .other = ""};
	bool truncated = false;
	other[0] = '\0';
	*has_keys = false;
	HSM_GUARD(hsm_store_key_list(store, NULL, 1, false, probe_account, &p, &truncated));
	memcpy(other, p.other, sizeof(p.other));
	*has_keys = p.seen;
	return HSM_SUCCESS;
}
