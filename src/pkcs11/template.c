/*
 * template.c - the rules a key generation template must meet (p11.h), checked
 * before any key is made in hsmd (PKCS#11 v2.40, 4.1.1 and 5.12):
 *
 *   - an attribute the module does not know for that class and key type:
 *     CKR_ATTRIBUTE_TYPE_INVALID;
 *   - one the key generation sets itself (key material, CKA_LOCAL, ...):
 *     CKR_ATTRIBUTE_READ_ONLY;
 *   - a value of the wrong size (a CK_BBOOL that is not one byte, a CK_ULONG
 *     of 4 bytes on a 64-bit host): CKR_ATTRIBUTE_VALUE_INVALID;
 *   - one attribute given twice with different values: CKR_TEMPLATE_INCONSISTENT
 *     (4.1.1's "two different values for the same attribute"; the same bytes
 *     twice are one value);
 *   - a value the new key would not have: CKR_TEMPLATE_INCONSISTENT (another
 *     class or key type than the mechanism makes, a session object, a
 *     modifiable or copyable key, a CKA_PRIVATE it will not have, dates,
 *     trust), or, as this module always
 *     answered, CKR_ATTRIBUTE_VALUE_INVALID for an extractable or
 *     non-sensitive key.
 *
 * Every hsmd key is a token object, and a template must say so: CKA_TOKEN
 * absent is the specification's default, FALSE, a session object, which
 * hsmd does not make (pkcs11-tool and p11tool send CKA_TOKEN TRUE).  The
 * usages (CKA_SIGN, CKA_DECRYPT, ...) are the key generation's own rules
 * (keygen.c): an hsmd key has one usage.
 */
#include <string.h>

#include "pkcs11/p11.h"

/* The classes an attribute belongs to. */
#define PUB 1u
#define PRIV 2u
#define SECRET 4u
#define ANY (PUB | PRIV | SECRET)

typedef enum { T_BOOL, T_ULONG, T_BYTES, T_DATE, T_MECHS } t_kind;

typedef struct attr_rule {
	CK_ATTRIBUTE_TYPE type;
	t_kind kind;
	unsigned classes;
	CK_KEY_TYPE key_type; /* CK_UNAVAILABLE_INFORMATION: any */
	bool read_only;       /* set by the key generation (footnotes 4 and 6 of table 10) */
} attr_rule;

#define ANY_KT CK_UNAVAILABLE_INFORMATION

/* PKCS#11 v2.40 4.4 (storage objects), 4.7 (keys), 4.8-4.10 (public, private, secret keys),
 * 2.1.2-2.1.3 (RSA), 2.3.3-2.3.4 (EC), and 2.8 (AES) / 2.33 (generic secret). */
static const attr_rule rules[] = {
    {CKA_CLASS, T_ULONG, ANY, ANY_KT, false},
    {CKA_KEY_TYPE, T_ULONG, ANY, ANY_KT, false},
    {CKA_TOKEN, T_BOOL, ANY, ANY_KT, false},
    {CKA_PRIVATE, T_BOOL, ANY, ANY_KT, false},
    {CKA_MODIFIABLE, T_BOOL, ANY, ANY_KT, false},
    {CKA_COPYABLE, T_BOOL, ANY, ANY_KT, false},
    {CKA_DESTROYABLE, T_BOOL, ANY, ANY_KT, false},
    {CKA_LABEL, T_BYTES, ANY, ANY_KT, false},
    {CKA_ID, T_BYTES, ANY, ANY_KT, false},
    {CKA_START_DATE, T_DATE, ANY, ANY_KT, false},
    {CKA_END_DATE, T_DATE, ANY, ANY_KT, false},
    {CKA_DERIVE, T_BOOL, ANY, ANY_KT, false},
    {CKA_ALLOWED_MECHANISMS, T_MECHS, ANY, ANY_KT, false},
    {CKA_LOCAL, T_BOOL, ANY, ANY_KT, true},
    {CKA_KEY_GEN_MECHANISM, T_ULONG, ANY, ANY_KT, true},
    {CKA_SUBJECT, T_BYTES, PUB | PRIV, ANY_KT, false},
    {CKA_PUBLIC_KEY_INFO, T_BYTES, PUB | PRIV, ANY_KT, true},
    {CKA_ENCRYPT, T_BOOL, PUB | SECRET, ANY_KT, false},
    {CKA_VERIFY, T_BOOL, PUB | SECRET, ANY_KT, false},
    {CKA_VERIFY_RECOVER, T_BOOL, PUB, ANY_KT, false},
    {CKA_WRAP, T_BOOL, PUB | SECRET, ANY_KT, false},
    {CKA_TRUSTED, T_BOOL, PUB | SECRET, ANY_KT, false},
    {CKA_DECRYPT, T_BOOL, PRIV | SECRET, ANY_KT, false},
    {CKA_SIGN, T_BOOL, PRIV | SECRET, ANY_KT, false},
    {CKA_SIGN_RECOVER, T_BOOL, PRIV, ANY_KT, false},
    {CKA_UNWRAP, T_BOOL, PRIV | SECRET, ANY_KT, false},
    {CKA_SENSITIVE, T_BOOL, PRIV | SECRET, ANY_KT, false},
    {CKA_EXTRACTABLE, T_BOOL, PRIV | SECRET, ANY_KT, false},
    {CKA_WRAP_WITH_TRUSTED, T_BOOL, PRIV | SECRET, ANY_KT, false},
    {CKA_ALWAYS_AUTHENTICATE, T_BOOL, PRIV, ANY_KT, false},
    {CKA_ALWAYS_SENSITIVE, T_BOOL, PRIV | SECRET, ANY_KT, true},
    {CKA_NEVER_EXTRACTABLE, T_BOOL, PRIV | SECRET, ANY_KT, true},
    {CKA_MODULUS_BITS, T_ULONG, PUB, CKK_RSA, false},
    {CKA_PUBLIC_EXPONENT, T_BYTES, PUB, CKK_RSA, false},
    {CKA_PUBLIC_EXPONENT, T_BYTES, PRIV, CKK_RSA, true},
    {CKA_MODULUS, T_BYTES, PUB | PRIV, CKK_RSA, true},
    {CKA_PRIVATE_EXPONENT, T_BYTES, PRIV, CKK_RSA, true},
    {CKA_PRIME_1, T_BYTES, PRIV, CKK_RSA, true},
    {CKA_PRIME_2, T_BYTES, PRIV, CKK_RSA, true},
    {CKA_EXPONENT_1, T_BYTES, PRIV, CKK_RSA, true},
    {CKA_EXPONENT_2, T_BYTES, PRIV, CKK_RSA, true},
    {CKA_COEFFICIENT, T_BYTES, PRIV, CKK_RSA, true},
    {CKA_EC_PARAMS, T_BYTES, PUB | PRIV, CKK_EC, false},
    {CKA_EC_PARAMS, T_BYTES, PUB | PRIV, CKK_EC_EDWARDS, false},
    {CKA_EC_POINT, T_BYTES, PUB, CKK_EC, true},
    {CKA_EC_POINT, T_BYTES, PUB, CKK_EC_EDWARDS, true},
    {CKA_VALUE, T_BYTES, PRIV, CKK_EC, true},
    {CKA_VALUE, T_BYTES, PRIV, CKK_EC_EDWARDS, true},
    {CKA_VALUE, T_BYTES, SECRET, ANY_KT, true},
    {CKA_VALUE_LEN, T_ULONG, SECRET, ANY_KT, false},
    {CKA_CHECK_VALUE, T_BYTES, SECRET, ANY_KT, true},
};

static unsigned class_bit(CK_OBJECT_CLASS cls)
{
	return cls == CKO_PUBLIC_KEY ? PUB : cls == CKO_PRIVATE_KEY ? PRIV : SECRET;
}

static const attr_rule *rule_of(CK_ATTRIBUTE_TYPE type, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt)
{
	for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
		if (rules[i].type == type && (rules[i].classes & class_bit(cls)) != 0 &&
		    (rules[i].key_type == ANY_KT || rules[i].key_type == kt))
			return &rules[i];
	return NULL;
}

bool p11_key_has(CK_ATTRIBUTE_TYPE type, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt)
{
	return rule_of(type, cls, kt) != NULL;
}

static bool well_formed(const CK_ATTRIBUTE *a, t_kind kind)
{
	if (a->pValue == NULL && a->ulValueLen > 0)
		return false;
	switch (kind) {
	case T_BOOL: return a->pValue != NULL && a->ulValueLen == sizeof(CK_BBOOL);
	case T_ULONG: return a->pValue != NULL && a->ulValueLen == sizeof(CK_ULONG);
	case T_DATE: return a->ulValueLen == 0 || a->ulValueLen == sizeof(CK_DATE);
	case T_MECHS: return a->ulValueLen % sizeof(CK_MECHANISM_TYPE) == 0;
	case T_BYTES: return true;
	}
	return false;
}

/* Whether the template gives the boolean type, with this value (a well-formed one). */
static bool given(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type, bool value)
{
	bool b;
	return p11_attr_bool(p11_attr_find(t, n, type), &b) && b == value;
}

bool p11_template_true(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type)
{
	return given(t, n, type, true);
}

bool p11_template_false(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type)
{
	return given(t, n, type, false);
}

/* Each attribute on its own: known here, settable, well formed. */
static CK_RV check_each(const CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt)
{
	for (CK_ULONG i = 0; i < n; i++) {
		const attr_rule *r = rule_of(t[i].type, cls, kt);
		if (r == NULL)
			return CKR_ATTRIBUTE_TYPE_INVALID;
		if (r->read_only)
			return CKR_ATTRIBUTE_READ_ONLY;
		if (!well_formed(&t[i], r->kind))
			return CKR_ATTRIBUTE_VALUE_INVALID;
	}
	return CKR_OK;
}

CK_RV p11_template_check(const CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt)
{
	CK_RV rv = check_each(t, n, cls, kt);
	if (rv == CKR_OK)
		rv = p11_template_repeats(t, n);
	if (rv != CKR_OK)
		return rv;
	CK_ULONG u = cls;
	if (p11_attr_ulong(p11_attr_find(t, n, CKA_CLASS), &u) && u != cls)
		return CKR_TEMPLATE_INCONSISTENT;
	u = kt;
	if (p11_attr_ulong(p11_attr_find(t, n, CKA_KEY_TYPE), &u) && u != kt)
		return CKR_TEMPLATE_INCONSISTENT;
	/* hsmd's keys never leave it (this module's answer since its first version). */
	if (given(t, n, CKA_EXTRACTABLE, true) || given(t, n, CKA_SENSITIVE, false))
		return CKR_ATTRIBUTE_VALUE_INVALID;
	/* A token object (absent: FALSE, 4.4), neither modifiable nor copyable, no dates kept;
	 * private and secret keys private (they show after login only), public keys not. */
	if (!given(t, n, CKA_TOKEN, true) || given(t, n, CKA_MODIFIABLE, true) ||
	    given(t, n, CKA_COPYABLE, true) || given(t, n, CKA_PRIVATE, cls == CKO_PUBLIC_KEY))
		return CKR_TEMPLATE_INCONSISTENT;
	for (CK_ATTRIBUTE_TYPE d = CKA_START_DATE; d <= CKA_END_DATE; d++) {
		const CK_ATTRIBUTE *a = p11_attr_find(t, n, d);
		if (a != NULL && a->ulValueLen != 0)
			return CKR_TEMPLATE_INCONSISTENT;
	}
	/* No subject kept either: a key's CKA_SUBJECT reads empty.  Empty, or the DER of an
	 * empty name (an empty SEQUENCE), is that; any other name would be dropped. */
	const CK_ATTRIBUTE *subject = p11_attr_find(t, n, CKA_SUBJECT);
	const CK_BYTE *name = subject != NULL ? subject->pValue : NULL;
	if (subject != NULL && subject->ulValueLen != 0 &&
	    !(subject->ulValueLen == 2 && name[0] == 0x30 && name[1] == 0x00))
		return CKR_TEMPLATE_INCONSISTENT;
	/* A public key goes with its key pair (CKA_DESTROYABLE false); the others are destroyed. */
	if (given(t, n, CKA_DESTROYABLE, cls != CKO_PUBLIC_KEY ? false : true))
		return CKR_TEMPLATE_INCONSISTENT;
	/* Trust is a security officer's to give, and no key here asks for a login of its own. */
	if (given(t, n, CKA_TRUSTED, true) || given(t, n, CKA_WRAP_WITH_TRUSTED, true) ||
	    given(t, n, CKA_ALWAYS_AUTHENTICATE, true))
		return CKR_TEMPLATE_INCONSISTENT;
	return CKR_OK;
}

static bool has_mech(const CK_MECHANISM_TYPE *list, size_t n, CK_MECHANISM_TYPE m)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] == m)
			return true;
	return false;
}

/*
 * hsmd's keys are KMS keys that other clients use too: the token keeps no
 * list of its own for a key, so a template may give CKA_ALLOWED_MECHANISMS
 * only as the list the key has anyway.  A narrower one is a restriction it
 * could not keep, a wider one names mechanisms the key will not do.
 */
CK_RV p11_template_mechs(const CK_ATTRIBUTE *t, CK_ULONG n, const p11_object *o)
{
	const CK_ATTRIBUTE *a = p11_attr_find(t, n, CKA_ALLOWED_MECHANISMS);
	if (a == NULL)
		return CKR_OK;
	if (!well_formed(a, T_MECHS))
		return CKR_ATTRIBUTE_VALUE_INVALID;
	CK_MECHANISM_TYPE own[P11_MECHS_MAX], given[P11_MECHS_MAX];
	size_t n_own = p11_key_mechs(o, own);
	size_t n_given = a->ulValueLen / sizeof(CK_MECHANISM_TYPE);
	if (n_given > P11_MECHS_MAX)
		return CKR_ATTRIBUTE_VALUE_INVALID; /* more than the module has: some are not its own */
	if (n_given > 0)
		memcpy(given, a->pValue, n_given * sizeof(CK_MECHANISM_TYPE)); /* maybe unaligned */
	for (size_t i = 0; i < n_given; i++)
		if (!has_mech(own, n_own, given[i]))
			return CKR_ATTRIBUTE_VALUE_INVALID;
	for (size_t i = 0; i < n_own; i++)
		if (!has_mech(given, n_given, own[i]))
			return CKR_ATTRIBUTE_VALUE_INVALID;
	return CKR_OK;
}

/* ---- reading template attributes ---- */

const CK_ATTRIBUTE *p11_attr_find(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type)
{
	for (CK_ULONG i = 0; i < n; i++)
		if (t[i].type == type)
			return &t[i];
	return NULL;
}

/* Whether two attributes hold the same bytes. */
static bool same_value(const CK_ATTRIBUTE *a, const CK_ATTRIBUTE *b)
{
	return a->ulValueLen == b->ulValueLen &&
	       (a->ulValueLen == 0 ||
	        (a->pValue != NULL && b->pValue != NULL &&
	         hsm_ct_equal(a->pValue, b->pValue, a->ulValueLen)));
}

/*
 * Each attribute is compared with the first of its type, found in a short
 * table of first ones: the templates checked here hold only types their
 * callers know (a few dozen), so a long template is read once, not once an
 * attribute.  A type beyond the table's room is looked for in the template.
 */
#define REPEAT_TYPES_MAX 64

CK_RV p11_template_repeats(const CK_ATTRIBUTE *t, CK_ULONG n)
{
	const CK_ATTRIBUTE *first[REPEAT_TYPES_MAX];
	size_t n_first = 0;
	for (CK_ULONG i = 0; i < n; i++) {
		const CK_ATTRIBUTE *f = NULL;
		for (size_t k = 0; k < n_first && f == NULL; k++)
			if (first[k]->type == t[i].type)
				f = first[k];
		if (f == NULL && n_first == REPEAT_TYPES_MAX)
			f = p11_attr_find(t, i, t[i].type);
		if (f == NULL && n_first < REPEAT_TYPES_MAX)
			first[n_first++] = &t[i];
		else if (f != NULL && !same_value(f, &t[i]))
			return CKR_TEMPLATE_INCONSISTENT;
	}
	return CKR_OK;
}

bool p11_attr_bool(const CK_ATTRIBUTE *a, bool *out)
{
	if (a == NULL || a->pValue == NULL || a->ulValueLen != sizeof(CK_BBOOL))
		return false;
	*out = *(const CK_BBOOL *)a->pValue != CK_FALSE;
	return true;
}

bool p11_attr_ulong(const CK_ATTRIBUTE *a, CK_ULONG *out)
{
	if (a == NULL)
		return true;
	if (a->pValue == NULL || a->ulValueLen != sizeof(CK_ULONG))
		return false;
	*out = *(const CK_ULONG *)a->pValue;
	return true;
}
