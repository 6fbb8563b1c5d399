/*
 * attrs.c - what the module's objects say of themselves (p11.h):
 * C_GetAttributeValue, C_SetAttributeValue and C_GetObjectSize, and the
 * searches that match templates against the same attributes
 * (C_FindObjectsInit, C_FindObjects, C_FindObjectsFinal).  Private values
 * are never held: CKA_VALUE and the like are CKR_ATTRIBUTE_SENSITIVE.
 */
#include <stdio.h>
#include <string.h>

#include "pkcs11/p11.h"

/* ---- attributes --------------------------------------------------------------------------------- */

typedef enum { A_OK, A_SENSITIVE, A_INVALID } a_status;

typedef struct a_value {
	const void *p;
	CK_ULONG n;
	union {
		CK_BBOOL b;
		CK_ULONG u;
		CK_MECHANISM_TYPE mechs[P11_MECHS_MAX];
	} scratch;
} a_value;

static a_status boolean(a_value *v, bool b)
{
	v->scratch.b = b ? CK_TRUE : CK_FALSE;
	v->p = &v->scratch.b;
	v->n = sizeof(CK_BBOOL);
	return A_OK;
}

static a_status ulong_value(a_value *v, CK_ULONG u)
{
	v->scratch.u = u;
	v->p = &v->scratch.u;
	v->n = sizeof(CK_ULONG);
	return A_OK;
}

static a_status bytes(a_value *v, const void *p, size_t n)
{
	v->p = p;
	v->n = (CK_ULONG)n;
	return A_OK;
}

/*
 * A derived secret's attributes: what its template asked for.  It was
 * always sensitive, or never extractable, when it is so now and its base
 * key always was (PKCS#11 v2.40 Current Mechanisms, ECDH key derivation's
 * rules): not when the base key's material was imported (external), and so
 * once in the clear.
 */
static a_status derived_attribute(const p11_object *o, CK_ATTRIBUTE_TYPE t, a_value *v)
{
	for (size_t i = 0; i < P11_USES; i++)
		if (p11_use_attrs[i] == t)
			return boolean(v, o->uses[i]);
	switch (t) {
	case CKA_CLASS: return ulong_value(v, CKO_SECRET_KEY);
	case CKA_KEY_TYPE: return ulong_value(v, CKK_GENERIC_SECRET);
	case CKA_PRIVATE: return boolean(v, true); /* derive.c refuses a public one */
	case CKA_SENSITIVE: return boolean(v, o->sensitive);
	case CKA_ALWAYS_SENSITIVE: return boolean(v, o->sensitive && !o->external);
	case CKA_EXTRACTABLE: return boolean(v, o->extractable);
	case CKA_NEVER_EXTRACTABLE: return boolean(v, !o->extractable && !o->external);
	case CKA_DESTROYABLE: return boolean(v, true);
	case CKA_TOKEN:
	case CKA_MODIFIABLE:
	case CKA_COPYABLE:
	case CKA_LOCAL:
	case CKA_SIGN_RECOVER:
	case CKA_VERIFY_RECOVER:
	case CKA_TRUSTED:
	case CKA_WRAP_WITH_TRUSTED:
	case CKA_ALWAYS_AUTHENTICATE: return boolean(v, false);
	case CKA_LABEL: return bytes(v, o->label, strlen(o->label));
	case CKA_ID: return bytes(v, o->id.data, o->id.len);
	case CKA_START_DATE:
	case CKA_END_DATE: return bytes(v, "", 0);
	case CKA_KEY_GEN_MECHANISM: return ulong_value(v, CK_UNAVAILABLE_INFORMATION);
	case CKA_VALUE_LEN: return ulong_value(v, (CK_ULONG)o->value.len);
	/* Not revealed when sensitive or not extractable (PKCS#11 v2.40 table 10, note 8). */
	case CKA_VALUE:
		return o->sensitive || !o->extractable ? A_SENSITIVE
		                                       : bytes(v, o->value.data, o->value.len);
	default: return A_INVALID;
	}
}

/* A certificate's attributes (PKCS#11 v2.40, 4.6: X.509 public key certificates). */
static a_status cert_attribute(const p11_object *o, CK_ATTRIBUTE_TYPE t, a_value *v)
{
	switch (t) {
	case CKA_CLASS: return ulong_value(v, CKO_CERTIFICATE);
	case CKA_TOKEN: return boolean(v, !o->derived);
	case CKA_PRIVATE:
	case CKA_MODIFIABLE:
	case CKA_COPYABLE:
	case CKA_TRUSTED: return boolean(v, false);
	case CKA_DESTROYABLE: return boolean(v, true);
	case CKA_LABEL: return bytes(v, o->label, strlen(o->label));
	case CKA_CERTIFICATE_TYPE: return ulong_value(v, CKC_X_509);
	case CKA_CERTIFICATE_CATEGORY: return ulong_value(v, 0); /* unspecified */
	case CKA_CHECK_VALUE: return bytes(v, o->check.data, o->check.len);
	case CKA_START_DATE:
	case CKA_END_DATE:
	case CKA_URL:
	case CKA_HASH_OF_SUBJECT_PUBLIC_KEY:
	case CKA_HASH_OF_ISSUER_PUBLIC_KEY: return bytes(v, "", 0);
	case CKA_PUBLIC_KEY_INFO: return bytes(v, o->spki.data, o->spki.len);
	case CKA_SUBJECT: return bytes(v, o->subject.data, o->subject.len);
	case CKA_ID: return bytes(v, o->id.data, o->id.len);
	case CKA_ISSUER: return bytes(v, o->issuer.data, o->issuer.len);
	case CKA_SERIAL_NUMBER: return bytes(v, o->serial.data, o->serial.len);
	case CKA_VALUE: return bytes(v, o->value.data, o->value.len);
	case CKA_JAVA_MIDP_SECURITY_DOMAIN: return ulong_value(v, 0);
	case CKA_NAME_HASH_ALGORITHM: return ulong_value(v, CKM_SHA_1);
	default: return A_INVALID;
	}
}

/*
 * The value of an attribute of a key, or why there is none.  An attribute its
 * class or key type does not have (CKA_SIGN of a public key, CKA_VALUE_LEN of
 * an RSA key, CKA_MODULUS of an AES key) is A_INVALID, not a false or empty
 * value: C_GetAttributeValue answers CKR_ATTRIBUTE_TYPE_INVALID for it
 * (PKCS#11 v2.40 5.7), and a search template naming it matches no such key.
 */
static a_status attribute(const p11_object *o, CK_ATTRIBUTE_TYPE t, a_value *v)
{
	if (o->cls == CKO_CERTIFICATE)
		return cert_attribute(o, t, v);
	if (!p11_key_has(t, o->cls, o->key_type))
		return A_INVALID;
	/* What the key may be used with: what C_SignInit, C_EncryptInit, ... let it do (sign.c). */
	if (t == CKA_ALLOWED_MECHANISMS) {
		size_t n = p11_key_mechs(o, v->scratch.mechs);
		return bytes(v, v->scratch.mechs, n * sizeof(CK_MECHANISM_TYPE));
	}
	if (o->derived)
		return derived_attribute(o, t, v);
	bool priv = o->cls == CKO_PRIVATE_KEY, pub = o->cls == CKO_PUBLIC_KEY;
	bool secret = o->cls == CKO_SECRET_KEY, rsa = o->key_type == CKK_RSA;
	bool aes = o->key_type == CKK_AES, mac = secret && !aes;
	switch (t) {
	case CKA_CLASS: return ulong_value(v, o->cls);
	case CKA_KEY_TYPE: return ulong_value(v, o->key_type);
	case CKA_TOKEN: return boolean(v, true);
	case CKA_PRIVATE: return boolean(v, !pub);
	case CKA_DERIVE: return boolean(v, priv && o->usage == HSM_USAGE_KEY_AGREEMENT);
	case CKA_MODIFIABLE:
	case CKA_COPYABLE:
	case CKA_WRAP:
	case CKA_UNWRAP:
	case CKA_SIGN_RECOVER:
	case CKA_VERIFY_RECOVER:
	case CKA_TRUSTED:
	case CKA_WRAP_WITH_TRUSTED:
	case CKA_ALWAYS_AUTHENTICATE:
	case CKA_EXTRACTABLE: return boolean(v, false);
	case CKA_DESTROYABLE: return boolean(v, !pub); /* a public key goes with its private key */
	/* Imported material (PKCS#11 v2.40 4.7): not made here, and was once in the clear. */
	case CKA_LOCAL: return boolean(v, !o->external);
	case CKA_LABEL: return bytes(v, o->label, strlen(o->label));
	case CKA_ID: /* its own (an alias gives it: HSM_PKCS11_ID_ALIAS), or the key id */
		return o->id.len > 0 ? bytes(v, o->id.data, o->id.len)
		                     : bytes(v, o->key_id, strlen(o->key_id));
	case CKA_START_DATE:
	case CKA_END_DATE:
	case CKA_SUBJECT: return bytes(v, "", 0);
	/* A key marked for JWT signing does not sign through the token: hsmd refuses its Sign. */
	case CKA_SIGN:
		return boolean(v, (priv && o->usage == HSM_USAGE_SIGN_VERIFY && !o->jwt) || mac);
	case CKA_VERIFY: return boolean(v, (pub && o->usage == HSM_USAGE_SIGN_VERIFY) || mac);
	case CKA_DECRYPT: return boolean(v, (priv && o->usage == HSM_USAGE_ENCRYPT_DECRYPT) || aes);
	case CKA_ENCRYPT: return boolean(v, (pub && o->usage == HSM_USAGE_ENCRYPT_DECRYPT) || aes);
	case CKA_KEY_GEN_MECHANISM:
		return ulong_value(v, o->external                    ? CK_UNAVAILABLE_INFORMATION
		                      : rsa                          ? CKM_RSA_PKCS_KEY_PAIR_GEN
		                      : aes                          ? CKM_AES_KEY_GEN
		                      : secret                       ? CKM_GENERIC_SECRET_KEY_GEN
		                      : o->key_type == CKK_EC_EDWARDS ? CKM_EC_EDWARDS_KEY_PAIR_GEN
		                                                      : CKM_EC_KEY_PAIR_GEN);
	case CKA_SENSITIVE: return boolean(v, true);
	case CKA_ALWAYS_SENSITIVE:
	case CKA_NEVER_EXTRACTABLE: return boolean(v, !o->external);
	case CKA_VALUE_LEN:
		return ulong_value(v, aes                            ? 32
		                      : o->spec == HSM_SPEC_HMAC_224 ? 28
		                      : o->spec == HSM_SPEC_HMAC_256 ? 32
		                      : o->spec == HSM_SPEC_HMAC_384 ? 48
		                                                     : 64);
	/* A secret key's check value: readable although the key is sensitive (hsmd's, objects.c). */
	case CKA_CHECK_VALUE: return o->check.len > 0 ? bytes(v, o->check.data, o->check.len) : A_INVALID;
	/* Private values: an EC private key's and a secret key's CKA_VALUE, RSA's components. */
	case CKA_VALUE:
	case CKA_PRIVATE_EXPONENT:
	case CKA_PRIME_1:
	case CKA_PRIME_2:
	case CKA_EXPONENT_1:
	case CKA_EXPONENT_2:
	case CKA_COEFFICIENT: return A_SENSITIVE;
	case CKA_PUBLIC_KEY_INFO: return bytes(v, o->spki.data, o->spki.len);
	case CKA_MODULUS: return bytes(v, o->modulus.data, o->modulus.len);
	case CKA_PUBLIC_EXPONENT: return bytes(v, o->exponent.data, o->exponent.len);
	case CKA_MODULUS_BITS: return ulong_value(v, o->modulus_bits);
	case CKA_EC_PARAMS: return bytes(v, o->ec_params.data, o->ec_params.len);
	case CKA_EC_POINT: return bytes(v, o->ec_point.data, o->ec_point.len);
	default: break;
	}
	return A_INVALID; /* one the module does not give */
}

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl,
                          CK_ULONG count)
{
	ENTER_SESSION(h);
	if (tmpl == NULL && count > 0)
		LEAVE(CKR_ARGUMENTS_BAD);
	/* Before login no object shows (a search finds none): not even by a handle kept. */
	p11_object *o = p11.logged_in ? p11_object_get(obj) : NULL;
	if (o == NULL)
		LEAVE(CKR_OBJECT_HANDLE_INVALID);
	/* Every attribute is answered (PKCS#11 v2.40 5.7), and the code is the same whatever
	 * their order: a sensitive one, then one the object lacks, then a buffer too small,
	 * as SoftHSMv2 answers (5.7 lets any of those that apply be returned). */
	bool sensitive = false, invalid = false, small = false;
	for (CK_ULONG i = 0; i < count; i++) {
		if (tmpl[i].type == CKA_CHECK_VALUE) {
			CK_RV read = p11_object_read_check(o);
			if (read != CKR_OK)
				LEAVE(read);
		}
		a_value v;
		a_status st = attribute(o, tmpl[i].type, &v);
		if (st != A_OK) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			sensitive = sensitive || st == A_SENSITIVE;
			invalid = invalid || st == A_INVALID;
		} else if (tmpl[i].pValue == NULL) {
			tmpl[i].ulValueLen = v.n;
		} else if (tmpl[i].ulValueLen < v.n) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			small = true;
		} else {
			if (v.n > 0)
				memcpy(tmpl[i].pValue, v.p, v.n);
			tmpl[i].ulValueLen = v.n;
		}
	}
	LEAVE(sensitive ? CKR_ATTRIBUTE_SENSITIVE
	      : invalid ? CKR_ATTRIBUTE_TYPE_INVALID
	      : small   ? CKR_BUFFER_TOO_SMALL
	                : CKR_OK);
}

CK_RV C_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl,
                          CK_ULONG count)
{
	(void)tmpl;
	(void)count;
	ENTER_SESSION(h);
	/* Objects are views of hsmd's keys: change a key through hsmd's API. */
	LEAVE(!p11.logged_in || p11_object_get(obj) == NULL ? CKR_OBJECT_HANDLE_INVALID
	                                                  : CKR_ACTION_PROHIBITED);
}

CK_RV C_GetObjectSize(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ULONG_PTR size)
{
	ENTER_SESSION(h);
	if (size == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	if (!p11.logged_in || p11_object_get(obj) == NULL)
		LEAVE(CKR_OBJECT_HANDLE_INVALID);
	*size = CK_UNAVAILABLE_INFORMATION;
	LEAVE(CKR_OK);
}

/* ---- search ---------------------------------------------------------------------------------------- */

/* Whether o has tmpl's values (but CKA_CHECK_VALUE's, unless with_check). */
static bool matches(const p11_object *o, const CK_ATTRIBUTE *tmpl, CK_ULONG count,
                    bool with_check)
{
	for (CK_ULONG i = 0; i < count; i++) {
		if (tmpl[i].type == CKA_CHECK_VALUE && !with_check)
			continue;
		a_value v;
		if (attribute(o, tmpl[i].type, &v) != A_OK || v.n != tmpl[i].ulValueLen ||
		    (v.n > 0 && (tmpl[i].pValue == NULL || !hsm_ct_equal(v.p, tmpl[i].pValue, v.n))))
			return false;
	}
	return true;
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG count)
{
	ENTER_SESSION(h);
	if (tmpl == NULL && count > 0)
		LEAVE(CKR_ARGUMENTS_BAD);
	p11_session *s = p11_session_get(h);
	if (s->find.active)
		LEAVE(CKR_OPERATION_ACTIVE);
	/* Before login this token shows nothing: every object is one of the user's keys. */
	if (p11.logged_in) {
		CK_RV rv = p11_objects_refresh_for(tmpl, count);
		if (rv != CKR_OK)
			LEAVE(rv);
	}
	free(s->find.handles);
	memset(&s->find, 0, sizeof(s->find));
	s->find.handles = calloc(p11.n_objects + 1, sizeof(CK_OBJECT_HANDLE));
	if (s->find.handles == NULL)
		LEAVE(CKR_HOST_MEMORY);
	bool by_check = p11_attr_find(tmpl, count, CKA_CHECK_VALUE) != NULL;
	for (size_t i = 0; p11.logged_in && i < p11.n_objects; i++) {
		p11_object *o = &p11.objects[i];
		if (!matches(o, tmpl, count, false))
			continue;
		/* Check values are read for the keys the rest of the template leaves. */
		CK_RV rv = by_check ? p11_object_read_check(o) : CKR_OK;
		if (rv != CKR_OK) {
			free(s->find.handles);
			memset(&s->find, 0, sizeof(s->find));
			LEAVE(rv);
		}
		if (!by_check || matches(o, tmpl, count, true))
			s->find.handles[s->find.n++] = o->handle;
	}
	s->find.active = true;
	LEAVE(CKR_OK);
}

CK_RV C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR out, CK_ULONG max,
                    CK_ULONG_PTR count)
{
	ENTER_SESSION(h);
	if (out == NULL || count == NULL)
		LEAVE(CKR_ARGUMENTS_BAD);
	p11_session *s = p11_session_get(h);
	if (!s->find.active)
		LEAVE(CKR_OPERATION_NOT_INITIALIZED);
	CK_ULONG n = 0;
	while (n < max && s->find.pos < s->find.n)
		out[n++] = s->find.handles[s->find.pos++];
	*count = n;
	LEAVE(CKR_OK);
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE h)
{
	ENTER();
	p11_session *s = p11_session_get(h);
	if (s == NULL)
		LEAVE(CKR_SESSION_HANDLE_INVALID);
	if (!s->find.active)
		LEAVE(CKR_OPERATION_NOT_INITIALIZED);
	free(s->find.handles);
	memset(&s->find, 0, sizeof(s->find));
	LEAVE(CKR_OK);
}
