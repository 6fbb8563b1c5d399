/*
 * derive.c - ECDH key derivation (p11.h): C_DeriveKey with CKM_ECDH1_DERIVE
 * (or CKM_ECDH1_COFACTOR_DERIVE, the same on these curves).
 *
 * The base key is the private key object of a KEY_AGREEMENT key; the
 * peer's public key comes as CK_ECDH1_DERIVE_PARAMS.pPublicData, an EC
 * point (uncompressed or compressed), bare or DER-wrapped in an OCTET
 * STRING as some applications send it.  The module makes the peer's
 * SubjectPublicKeyInfo on the base key's curve and calls hsmd's
 * DeriveSharedSecret (authorized and audited there), which answers with
 * the raw shared secret: the x-coordinate, as long as the curve's field.
 * With CKD_NULL that is the key's value (CKA_VALUE_LEN, if given, must be
 * that length); with CKD_SHA1_KDF .. CKD_SHA512_KDF the module runs the
 * ANSI X9.63 KDF over it and the shared data (pSharedData) to CKA_VALUE_LEN
 * bytes, which the template must then give.
 *
 * The value becomes a private session object (CKO_SECRET_KEY,
 * CKK_GENERIC_SECRET) in a buffer wiped when freed, readable through
 * CKA_VALUE unless the template made it sensitive or not extractable (not
 * sensitive and extractable by default: the value is what the caller derives
 * it for, and hsmd's API hands it out all the same).  No mechanism of this
 * module uses such an object; it is wiped when destroyed, when its session
 * closes and at logout (a template asking for a public one is refused).
 */
#include <stdint.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>

#include "common/encoding.h"
#include "crypto/crypto.h"
#include "pkcs11/p11.h"

#define ID_MAX 256
#define SHARED_MAX 4096 /* pSharedData */
#define KDF_OUT_MAX 1024 /* CKA_VALUE_LEN with a KDF */

/* The X9.63 KDFs: a CK_ECDH1_DERIVE_PARAMS kdf to the hash OpenSSL names. */
static const struct {
	ck_ec_kdf_t kdf;
	const char *md;
} kdfs[] = {
    {CKD_SHA1_KDF, "SHA1"},     {CKD_SHA224_KDF, "SHA224"}, {CKD_SHA256_KDF, "SHA256"},
    {CKD_SHA384_KDF, "SHA384"}, {CKD_SHA512_KDF, "SHA512"},
};

/* What a derived secret's template asks for. */
typedef struct derived_tmpl {
	bool sensitive, extractable;
	bool uses[P11_USES];
	bool has_len;
	CK_ULONG len;
	const CK_ATTRIBUTE *label, *id;
} derived_tmpl;

static bool *use_slot(derived_tmpl *d, CK_ATTRIBUTE_TYPE t)
{
	for (size_t i = 0; i < P11_USES; i++)
		if (p11_use_attrs[i] == t)
			return &d->uses[i];
	return NULL;
}

/* The template of a session secret key; anything else is refused. */
static CK_RV parse_template(const CK_ATTRIBUTE *t, CK_ULONG n, derived_tmpl *d)
{
	*d = (derived_tmpl){.extractable = true};
	for (CK_ULONG i = 0; i < n; i++) {
		const CK_ATTRIBUTE *a = &t[i];
		CK_ULONG u = 0;
		bool b = false;
		bool *use = use_slot(d, a->type);
		switch (a->type) {
		case CKA_CLASS:
			if (!p11_attr_ulong(a, &u))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			if (u != CKO_SECRET_KEY)
				return CKR_TEMPLATE_INCONSISTENT;
			break;
		case CKA_KEY_TYPE: /* the secret as it is: a generic secret */
			if (!p11_attr_ulong(a, &u))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			if (u != CKK_GENERIC_SECRET)
				return CKR_TEMPLATE_INCONSISTENT;
			break;
		case CKA_TOKEN: /* token objects are hsmd's keys */
		case CKA_MODIFIABLE:
		case CKA_COPYABLE:
			if (!p11_attr_bool(a, &b))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			if (b)
				return CKR_TEMPLATE_INCONSISTENT;
			break;
		case CKA_PRIVATE:
			/*
			 * A secret is a private object: a public one would outlive the login
			 * (PKCS#11 v2.40 5.6 ends only private session objects at logout) and
			 * be readable without one, where no object shows before login.
			 */
			if (!p11_attr_bool(a, &b))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			if (!b)
				return CKR_TEMPLATE_INCONSISTENT;
			break;
		case CKA_SENSITIVE:
		case CKA_EXTRACTABLE:
			if (!p11_attr_bool(a, &b))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			*(a->type == CKA_SENSITIVE ? &d->sensitive : &d->extractable) = b;
			break;
		case CKA_VALUE_LEN:
			if (!p11_attr_ulong(a, &d->len))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			d->has_len = true;
			break;
		case CKA_LABEL: /* UTF-8 (PKCS#11's rule, and C_CreateObject's) */
			if ((a->pValue == NULL && a->ulValueLen > 0) || a->ulValueLen > P11_LABEL_MAX ||
			    (a->ulValueLen > 0 && memchr(a->pValue, '\0', a->ulValueLen) != NULL) ||
			    !hsm_utf8_valid(a->pValue, a->ulValueLen))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			d->label = a;
			break;
		case CKA_ID:
			if ((a->pValue == NULL && a->ulValueLen > 0) || a->ulValueLen > ID_MAX)
				return CKR_ATTRIBUTE_VALUE_INVALID;
			d->id = a;
			break;
		case CKA_VALUE: return CKR_ATTRIBUTE_READ_ONLY;
		case CKA_ALLOWED_MECHANISMS: /* none: no mechanism of the module takes a derived secret */
		{
			CK_RV rv = p11_template_mechs(a, 1, &(p11_object){.cls = CKO_SECRET_KEY,
			                                                  .key_type = CKK_GENERIC_SECRET,
			                                                  .derived = true});
			if (rv != CKR_OK)
				return rv;
			break;
		}
		case CKA_DESTROYABLE: /* a derived secret can always be destroyed */
			if (!p11_attr_bool(a, &b))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			if (!b)
				return CKR_TEMPLATE_INCONSISTENT;
			break;
		case CKA_START_DATE: /* no dates are kept: only empty ones fit */
		case CKA_END_DATE:
			if (a->ulValueLen != 0)
				return CKR_TEMPLATE_INCONSISTENT;
			break;
		default:
			if (use == NULL)
				return CKR_ATTRIBUTE_TYPE_INVALID;
			if (!p11_attr_bool(a, use))
				return CKR_ATTRIBUTE_VALUE_INVALID;
			break;
		}
	}
	/* Each attribute is well formed on its own; one given twice must say the same twice. */
	return p11_template_repeats(t, n);
}

/* ---- the peer's public key ------------------------------------------------------------------ */

static bool is_point(const uint8_t *p, size_t n, size_t flen)
{
	return (n == 1 + 2 * flen && p[0] == 0x04) || (n == 1 + flen && (p[0] == 0x02 || p[0] == 0x03));
}

/* The EC point in pPublicData: bare, or the content of a DER OCTET STRING. */
static bool peer_point(const uint8_t *p, size_t n, size_t flen, const uint8_t **pt, size_t *pt_n)
{
	if (is_point(p, n, flen)) {
		*pt = p;
		*pt_n = n;
		return true;
	}
	if (n < 3 || p[0] != 0x04)
		return false;
	size_t len = p[1], hdr = 2;
	if (p[1] == 0x81) {
		len = p[2];
		hdr = 3;
	} else if (p[1] > 0x80) {
		return false;
	}
	if (hdr + len != n || !is_point(p + hdr, len, flen))
		return false;
	*pt = p + hdr;
	*pt_n = len;
	return true;
}

static bool der_head(hsm_buf *b, uint8_t tag, size_t len)
{
	uint8_t h[4] = {tag};
	size_t n = 2;
	if (len < 0x80) {
		h[1] = (uint8_t)len;
	} else if (len < 0x100) {
		h[1] = 0x81;
		h[2] = (uint8_t)len;
		n = 3;
	} else {
		h[1] = 0x82;
		h[2] = (uint8_t)(len >> 8);
		h[3] = (uint8_t)len;
		n = 4;
	}
	return hsm_ok(hsm_buf_put(b, h, n));
}

/* SubjectPublicKeyInfo { { id-ecPublicKey, curve }, BIT STRING point } */
static bool peer_spki(const hsm_buf *curve, const uint8_t *pt, size_t pt_n, hsm_buf *out)
{
	static const uint8_t ec_public_key[] = {0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
	size_t alg = sizeof(ec_public_key) + curve->len;
	size_t alg_all = alg + (alg < 0x80 ? 2 : 3);
	size_t bits = 1 + pt_n;
	size_t bits_all = bits + (bits < 0x80 ? 2 : bits < 0x100 ? 3 : 4);
	static const uint8_t no_unused_bits = 0;
	return der_head(out, 0x30, alg_all + bits_all) && der_head(out, 0x30, alg) &&
	       hsm_ok(hsm_buf_put(out, ec_public_key, sizeof(ec_public_key))) &&
	       hsm_ok(hsm_buf_put(out, curve->data, curve->len)) && der_head(out, 0x03, bits) &&
	       hsm_ok(hsm_buf_put(out, &no_unused_bits, 1)) && hsm_ok(hsm_buf_put(out, pt, pt_n));
}

/* ---- C_DeriveKey -------------------------------------------------------------------------------- */

/* The KDF a mechanism asks for (*md NULL: CKD_NULL) and its shared data, copied. */
static CK_RV kdf_params(const CK_ECDH1_DERIVE_PARAMS *prm, const char **md, hsm_buf *shared)
{
	*md = NULL;
	for (size_t i = 0; i < sizeof(kdfs) / sizeof(kdfs[0]); i++)
		if (kdfs[i].kdf == prm->kdf)
			*md = kdfs[i].md;
	if (*md == NULL && prm->kdf != CKD_NULL)
		return CKR_MECHANISM_PARAM_INVALID;
	if (prm->ulSharedDataLen == 0)
		return CKR_OK;
	if (*md == NULL || prm->pSharedData == NULL || prm->ulSharedDataLen > SHARED_MAX)
		return CKR_MECHANISM_PARAM_INVALID; /* shared data goes into a KDF */
	return hsm_ok(hsm_buf_put(shared, prm->pSharedData, prm->ulSharedDataLen)) ? CKR_OK
	                                                                            : CKR_HOST_MEMORY;
}

static CK_RV check_mechanism(const CK_MECHANISM *mech, const p11_object *base, hsm_buf *spki,
                             const char **md, hsm_buf *shared)
{
	/* KEY_AGREEMENT keys are on NIST prime curves, whose cofactor is 1: cofactor
	 * Diffie-Hellman is the same computation. */
	if (mech->mechanism != CKM_ECDH1_DERIVE && mech->mechanism != CKM_ECDH1_COFACTOR_DERIVE)
		return CKR_MECHANISM_INVALID;
	const CK_ECDH1_DERIVE_PARAMS *prm = mech->pParameter;
	if (prm == NULL || mech->ulParameterLen != sizeof(*prm) || prm->pPublicData == NULL)
		return CKR_MECHANISM_PARAM_INVALID;
	CK_RV rv = kdf_params(prm, md, shared);
	if (rv != CKR_OK)
		return rv;
	/*
	 * C_DeriveKey's list (PKCS#11 v2.40 5.13) has no CKR_KEY_FUNCTION_NOT_PERMITTED:
	 * a key that does not derive (a signing key, a public key) is one whose
	 * type does not go with ECDH, CKR_KEY_TYPE_INCONSISTENT.
	 */
	rv = p11_key_permits(base, p11_mech_find(mech->mechanism), CKF_DERIVE);
	if (rv == CKR_KEY_FUNCTION_NOT_PERMITTED)
		rv = CKR_KEY_TYPE_INCONSISTENT;
	if (rv != CKR_OK)
		return rv;
	const uint8_t *pt = NULL;
	size_t pt_n = 0;
	if (!peer_point(prm->pPublicData, prm->ulPublicDataLen, hsm_ec_field_len(base->spec), &pt,
	                &pt_n))
		return CKR_MECHANISM_PARAM_INVALID;
	return peer_spki(&base->ec_params, pt, pt_n, spki) ? CKR_OK : CKR_HOST_MEMORY;
}

/*
 * DeriveSharedSecret: the secret into out (a buffer wiped when freed).  The
 * module lock is let go while hsmd answers, as for signatures.
 */
static CK_RV shared_secret(const p11_ticket *t, const char *key_id, const hsm_buf *spki,
                           hsm_buf *out)
{
	hsm_buf b64 = {0};
	if (hsm_failed(hsm_b64_encode(&b64, spki->data, spki->len)))
		return CKR_HOST_MEMORY;
	json_t *body = json_pack("{s:s,s:s,s:s%}", "KeyId", key_id, "KeyAgreementAlgorithm", "ECDH",
	                         "PublicKey", (const char *)b64.data, b64.len);
	hsm_buf_free(&b64);
	json_t *ans = NULL;
	CK_RV rv = body != NULL ? p11_call_session_secret(t, "TrentService.DeriveSharedSecret", body,
	                                                  &ans, "SharedSecret", out)
	                        : CKR_HOST_MEMORY;
	if (rv == CKR_ARGUMENTS_BAD) /* ValidationException: the point is not on the key's curve */
		rv = CKR_MECHANISM_PARAM_INVALID;
	json_decref(ans);
	return rv;
}

/* ANSI X9.63 KDF (OpenSSL's X963KDF): len bytes from the secret and the shared data. */
static CK_RV x963(const char *md, const hsm_buf *secret, const hsm_buf *shared, size_t len,
                  hsm_buf *out)
{
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_X963KDF, NULL);
	EVP_KDF_CTX *ctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
	EVP_KDF_free(kdf);
	uint8_t *p = NULL;
	OSSL_PARAM params[] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)(uintptr_t)md, 0),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret->data, secret->len),
	    OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, shared->data, shared->len),
	    OSSL_PARAM_construct_end(),
	};
	CK_RV rv = ctx == NULL ? CKR_HOST_MEMORY : CKR_OK;
	if (rv == CKR_OK && hsm_failed(hsm_buf_append_space(out, len, &p)))
		rv = CKR_HOST_MEMORY;
	if (rv == CKR_OK && EVP_KDF_derive(ctx, p, len, params) != 1)
		rv = CKR_DEVICE_ERROR;
	EVP_KDF_CTX_free(ctx);
	return rv;
}

CK_RV C_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE base,
                  CK_ATTRIBUTE_PTR tmpl, CK_ULONG count, CK_OBJECT_HANDLE_PTR out)
{
	ENTER_SESSION(h);
	if (mech == NULL || out == NULL || (tmpl == NULL && count > 0))
		LEAVE(CKR_ARGUMENTS_BAD);
	CK_RV rv = p11_user_session(h);
	if (rv != CKR_OK)
		LEAVE(rv);
	const p11_object *o = p11_key_get(base);
	if (o == NULL)
		LEAVE(CKR_KEY_HANDLE_INVALID);
	derived_tmpl d;
	const char *md = NULL;
	hsm_buf spki = {0}, shared = {0}, secret, value;
	hsm_buf_init_secure(&secret);
	hsm_buf_init_secure(&value);
	rv = check_mechanism(mech, o, &spki, &md, &shared);
	if (rv == CKR_OK)
		rv = parse_template(tmpl, count, &d);
	if (rv == CKR_OK && md == NULL && d.has_len && d.len != hsm_ec_field_len(o->spec))
		rv = CKR_TEMPLATE_INCONSISTENT; /* CKD_NULL: the secret whole, as long as the field */
	if (rv == CKR_OK && md != NULL && !d.has_len)
		rv = CKR_TEMPLATE_INCOMPLETE; /* a KDF makes as many bytes as asked */
	if (rv == CKR_OK && md != NULL && (d.len == 0 || d.len > KDF_OUT_MAX))
		rv = CKR_ATTRIBUTE_VALUE_INVALID;
	char key_id[HSM_UUID_STRLEN + 1];
	snprintf(key_id, sizeof(key_id), "%s", o->key_id);
	hsm_key_spec spec = o->spec;
	bool external = o->external;
	uint64_t gen = p11.gen;
	p11_ticket t = p11_ticket_of(h, NULL);
	o = NULL; /* the table may change while the lock is let go */
	if (rv == CKR_OK)
		rv = shared_secret(&t, key_id, &spki, &secret);
	/* The session closed (p11_call_session), or the user logged out, meanwhile: no object. */
	if (rv == CKR_OK && (!p11.logged_in || p11.gen != gen))
		rv = CKR_USER_NOT_LOGGED_IN;
	if (rv == CKR_OK && secret.len != hsm_ec_field_len(spec))
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK)
		rv = md != NULL ? x963(md, &secret, &shared, d.len, &value)
		                : (hsm_ok(hsm_buf_put(&value, secret.data, secret.len)) ? CKR_OK
		                                                                       : CKR_HOST_MEMORY);
	p11_object *k = rv == CKR_OK ? p11_object_add_derived(h) : NULL;
	if (rv == CKR_OK && k == NULL)
		rv = CKR_HOST_MEMORY;
	if (k != NULL) {
		k->sensitive = d.sensitive;
		k->extractable = d.extractable;
		k->external = external; /* its base's: see attrs.c */
		memcpy(k->uses, d.uses, sizeof(k->uses));
		if (d.label != NULL && d.label->ulValueLen > 0)
			memcpy(k->label, d.label->pValue, d.label->ulValueLen);
		if (hsm_failed(hsm_buf_put(&k->value, value.data, value.len)) ||
		    (d.id != NULL && d.id->ulValueLen > 0 &&
		     hsm_failed(hsm_buf_put(&k->id, d.id->pValue, d.id->ulValueLen)))) {
			p11_object_drop(k->handle);
			rv = CKR_HOST_MEMORY;
		} else {
			*out = k->handle;
		}
	}
	hsm_buf_free(&value);
	hsm_buf_free(&secret);
	hsm_buf_free(&shared);
	hsm_buf_free(&spki);
	LEAVE(rv);
}
