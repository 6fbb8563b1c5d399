/*
 * digest.c - message digests (p11.h): C_DigestInit, C_Digest, C_DigestUpdate,
 * C_DigestKey, C_DigestFinal.
 *
 * The data is the caller's and not secret, so the module hashes it itself
 * with OpenSSL, as it does for the hashing signature mechanisms: no call to
 * hsmd, nothing audited, no login needed (a digest uses no key).  SHA-1 and
 * SHA-2.  C_DigestKey is refused with CKR_KEY_INDIGESTIBLE: the module
 * holds no key material, and hsmd hashes none on request.
 *
 * As for signing, a length query (or a buffer too small) leaves the
 * operation active, so the caller asks again with the same data; C_Digest
 * answers those before it reads the data (a digest's length does not depend
 * on it), so the data of a length query is not hashed.  Any other failure
 * ends the operation.
 */
#include <string.h>

#include "pkcs11/p11.h"

/* The session of h, its digest active (p11_op_session). */
static p11_session *digesting(CK_SESSION_HANDLE h, bool args_ok, CK_RV *rv)
{
	return p11_op_session(h, offsetof(p11_session, digest), args_ok, rv);
}

CK_RV C_DigestInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech)
{
	ENTER_SESSION(h);
	p11_session *s = p11_session_get(h);
	if (s->digest.active)
		LEAVE(CKR_OPERATION_ACTIVE);
	if (mech == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	const p11_mech *m = p11_mech_find(mech->mechanism);
	if (m == NULL || m->family != P11_DIGEST)
		LEAVE(CKR_MECHANISM_INVALID);
	if (mech->pParameter != NULL || mech->ulParameterLen != 0)
		LEAVE(CKR_MECHANISM_PARAM_INVALID);
	p11_op *op = &s->digest;
	memset(op, 0, sizeof(*op));
	op->serial = p11_serial();
	op->mech = m;
	op->md = EVP_MD_CTX_new();
	if (op->md == NULL || !EVP_DigestInit_ex(op->md, EVP_get_digestbyname(m->md), NULL)) {
		p11_op_reset(op);
		LEAVE(CKR_HOST_MEMORY);
	}
	op->active = true;
	LEAVE(CKR_OK);
}

/* A failure of the input ends the operation. */
static CK_RV feed(p11_op *op, const CK_BYTE *data, CK_ULONG len)
{
	if (EVP_DigestUpdate(op->md, data, len))
		return CKR_OK;
	p11_op_reset(op);
	return CKR_DEVICE_ERROR;
}

/*
 * A length query (out NULL: CKR_OK) or a buffer too small (CKR_BUFFER_TOO_SMALL)
 * sets *out_n to the digest's length and answers true: the operation goes on.
 */
static bool length_answer(const p11_op *op, CK_BYTE_PTR out, CK_ULONG_PTR out_n, CK_RV *rv)
{
	CK_ULONG need = (CK_ULONG)EVP_MD_CTX_get_size(op->md);
	if (out != NULL && *out_n >= need)
		return false;
	*rv = out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
	*out_n = need;
	return true;
}

/* The digest into out (length queries and short buffers keep the operation). */
static CK_RV finish(p11_op *op, CK_BYTE_PTR out, CK_ULONG_PTR out_n)
{
	CK_RV rv;
	if (length_answer(op, out, out_n, &rv))
		return rv;
	unsigned n = 0;
	rv = EVP_DigestFinal_ex(op->md, out, &n) && n == (unsigned)EVP_MD_CTX_get_size(op->md)
	         ? CKR_OK
	         : CKR_DEVICE_ERROR;
	if (rv == CKR_OK)
		*out_n = n;
	p11_op_reset(op);
	return rv;
}

CK_RV C_Digest(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
               CK_ULONG_PTR out_n)
{
	ENTER();
	CK_RV rv;
	p11_session *s = digesting(h, (data != NULL || len == 0) && out_n != NULL, &rv);
	if (s == NULL)
		LEAVE(rv);
	/* C_Digest does not end a multi-part digest (PKCS#11 C_Digest): refused, and ended. */
	if (s->digest.multi) {
		p11_op_reset(&s->digest);
		LEAVE(CKR_OPERATION_NOT_INITIALIZED);
	}
	/* Answered before the data is hashed: the caller repeats C_Digest with the same data. */
	if (length_answer(&s->digest, out, out_n, &rv))
		LEAVE(rv);
	rv = feed(&s->digest, data, len);
	if (rv != CKR_OK)
		LEAVE(rv);
	LEAVE(finish(&s->digest, out, out_n));
}

CK_RV C_DigestUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len)
{
	ENTER();
	CK_RV rv;
	p11_session *s = digesting(h, data != NULL || len == 0, &rv);
	if (s == NULL)
		LEAVE(rv);
	s->digest.multi = true;
	LEAVE(feed(&s->digest, data, len));
}

CK_RV C_DigestKey(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE key)
{
	ENTER();
	CK_RV rv;
	p11_session *s = digesting(h, true, &rv);
	if (s == NULL)
		LEAVE(rv);
	/* A key, as the *Init functions take one (a certificate is none), and one that shows:
	 * before login no object does, a public key's kept handle included (objects.c). */
	const p11_object *o = p11.logged_in ? p11_key_get(key) : NULL;
	rv = o == NULL ? CKR_KEY_HANDLE_INVALID : CKR_KEY_INDIGESTIBLE;
	p11_op_reset(&s->digest);
	LEAVE(rv);
}

CK_RV C_DigestFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR out_n)
{
	ENTER();
	CK_RV rv;
	p11_session *s = digesting(h, out_n != NULL, &rv);
	if (s == NULL)
		LEAVE(rv);
	LEAVE(finish(&s->digest, out, out_n));
}
