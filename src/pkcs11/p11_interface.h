/*
 * p11_interface.h - what the module needs of PKCS#11 v3.0's interfaces
 * (the CK_INTERFACE type, and 5.4's C_GetInterfaceList and C_GetInterface) when
 * the pkcs11.h in use is a v2.40 one: p11-kit 0.24's, Debian 12's, is.  The
 * types and names are the specification's, so a pkcs11.h that has them
 * (CKF_INTERFACE_FORK_SAFE defined) is used instead.
 *
 * The module offers one interface, "PKCS 11", whose pFunctionList is its
 * CK_FUNCTION_LIST (version 2.40, as C_GetFunctionList gives it): it has
 * none of CK_FUNCTION_LIST_3_0's functions, so it claims no 3.0 interface.
 */
#ifndef HSM_P11_INTERFACE_H
#define HSM_P11_INTERFACE_H

#include <p11-kit/pkcs11.h>

#ifndef CKF_INTERFACE_FORK_SAFE
typedef struct CK_INTERFACE {
	CK_CHAR *pInterfaceName;   /* "PKCS 11" for the standard function lists */
	CK_VOID_PTR pFunctionList; /* a CK_FUNCTION_LIST of the interface's version */
	CK_FLAGS flags;
} CK_INTERFACE;
typedef CK_INTERFACE *CK_INTERFACE_PTR;
typedef CK_INTERFACE_PTR *CK_INTERFACE_PTR_PTR;

/* The interface keeps its sessions, login and operations across fork(). */
#define CKF_INTERFACE_FORK_SAFE 0x00000001UL

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount);
CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
                     CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags);
typedef CK_RV (*CK_C_GetInterfaceList)(CK_INTERFACE_PTR, CK_ULONG_PTR);
typedef CK_RV (*CK_C_GetInterface)(CK_UTF8CHAR_PTR, CK_VERSION_PTR, CK_INTERFACE_PTR_PTR,
                                   CK_FLAGS);
#endif

#endif
