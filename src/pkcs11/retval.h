/*
 * retval.h - the return values PKCS#11 lets each function give (retval.c).
 *
 * Apart from p11.h so that a test can build retval.c alone: it needs only
 * PKCS#11's types.
 */
#ifndef HSM_P11_RETVAL_H
#define HSM_P11_RETVAL_H

#include <stdbool.h>

#include <p11-kit/pkcs11.h>

/*
 * Whether the function named fn ("C_Sign", as __func__ spells it) may return
 * rv by PKCS#11 v2.40's list for it (section 5), the codes every function
 * may give (5.1.1-5.1.3) included.  False for a name that is not a v2.40
 * function.
 */
bool p11_rv_allowed(const char *fn, CK_RV rv);

/*
 * What fn answers for rv: rv itself when fn may return it; otherwise the
 * nearest code fn's list has (retval.c's table of substitutes says which and
 * why), else CKR_FUNCTION_FAILED, which every function may return.  Every
 * entry point's answer passes through it (p11.h: LEAVE), so a refusal that
 * hsmd's answer maps to a code of another function (result.h's table has
 * one CKR value per error) still reads as one of this function's.  fn must
 * be a v2.40 function's name (it aborts otherwise: a programmer's error).
 */
CK_RV p11_rv_conform(const char *fn, CK_RV rv);

#endif
