/*
 * interface.c - PKCS#11 v3.0's C_GetInterfaceList and C_GetInterface (5.4),
 * which newer consumers (p11-kit 0.25, OpenSSL's pkcs11 provider, opensc
 * 0.23) look for before C_GetFunctionList.  Like C_GetFunctionList they may
 * be called before C_Initialize, and touch no module state.
 *
 * The one interface is "PKCS 11" at the version of the function list it
 * carries, 2.40 (p11_interface.h says why not 3.0), without
 * CKF_INTERFACE_FORK_SAFE: a child of fork() must call C_Initialize again
 * and finds none of its parent's sessions or login (module.c).
 */
#include <string.h>

#include "pkcs11/p11.h"

static CK_CHAR standard_name[] = "PKCS 11";

static CK_INTERFACE interfaces[] = {
    {standard_name, &p11_function_list, 0},
};
#define N_INTERFACES (sizeof(interfaces) / sizeof(interfaces[0]))

/*
 * v3.0 5.4.5: with pInterfacesList NULL only the number of interfaces is
 * given (*pulCount's value is not read); otherwise *pulCount is the list's
 * capacity, and a list too short is CKR_BUFFER_TOO_SMALL.  Either way
 * *pulCount is set to the number of interfaces.
 */
CK_RV C_GetInterfaceList(CK_INTERFACE_PTR list, CK_ULONG_PTR count)
{
	if (count == NULL)
		return CKR_ARGUMENTS_BAD;
	CK_RV rv = CKR_OK;
	if (list != NULL && *count < N_INTERFACES)
		rv = CKR_BUFFER_TOO_SMALL;
	else if (list != NULL)
		memcpy(list, interfaces, sizeof(interfaces));
	*count = N_INTERFACES;
	return rv;
}

/* Whether interface i is the one asked for: each criterion given must hold. */
static bool matches(const CK_INTERFACE *i, const CK_UTF8CHAR *name, const CK_VERSION *version,
                    CK_FLAGS flags)
{
	const CK_VERSION *has = &((const CK_FUNCTION_LIST *)i->pFunctionList)->version;
	return (name == NULL || strcmp((const char *)name, (const char *)i->pInterfaceName) == 0) &&
	       (version == NULL || (version->major == has->major && version->minor == has->minor)) &&
	       (i->flags & flags) == flags;
}

/*
 * v3.0 5.4.6: the interface of that name (NULL: the default one, the first),
 * at that version (NULL: any) and with at least those flags; the default
 * one too must meet the version and flags given.  The specification has no
 * code of its own for an interface the module does not offer: none such is
 * CKR_ARGUMENTS_BAD, one of the function's return values (the arguments ask
 * for what cannot be given), and *ppInterface is left as it was.
 */
CK_RV C_GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE_PTR_PTR out,
                     CK_FLAGS flags)
{
	if (out == NULL)
		return CKR_ARGUMENTS_BAD;
	for (size_t i = 0; i < N_INTERFACES; i++) {
		if (matches(&interfaces[i], name, version, flags)) {
			*out = &interfaces[i];
			return CKR_OK;
		}
	}
	return CKR_ARGUMENTS_BAD;
}
