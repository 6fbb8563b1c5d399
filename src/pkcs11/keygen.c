/*
 * keygen.c - key generation (p11.h): C_GenerateKeyPair makes an hsmd key of
 * the spec and usage the mechanism and templates ask for (RSA, NIST EC and
 * secp256k1, Ed25519; signing or decryption, or ECDH), C_GenerateKey an AES
 * or HMAC key; each template is first checked against PKCS#11's rules
 * (template.c).  The new key is read back as the module's objects.  A
 * CKA_LABEL becomes the alias alias/<label>, a CKA_ID the alias
 * HSM_PKCS11_ID_ALIAS<hex> (common/encoding.h).
 */
#include <stdio.h>
#include <string.h>

#include "common/encoding.h"
#include "pkcs11/p11.h"

/*
 * A key is made in a logged-in read/write session, by a mechanism that makes
 * one (kt known), given without parameters: "it does not have a parameter",
 * PKCS#11's mechanism specifications say of each generation mechanism here
 * (RSA, EC, EC Edwards key pairs, AES and generic secret keys), so one given
 * is CKR_MECHANISM_PARAM_INVALID, not ignored.  As in sign.c, an empty
 * pointer-and-length pair is no parameter.
 */
static CK_RV may_generate(CK_SESSION_HANDLE h, const CK_MECHANISM *mech, CK_KEY_TYPE kt)
{
	CK_RV rv = p11_user_session(h);
	if (rv == CKR_OK)
		rv = p11_rw_session(h);
	if (rv == CKR_OK && kt == CK_UNAVAILABLE_INFORMATION)
		rv = CKR_MECHANISM_INVALID;
	if (rv == CKR_OK && mech->ulParameterLen != 0)
		rv = CKR_MECHANISM_PARAM_INVALID;
	return rv;
}

/* The KMS key spec a key pair template asks for. */
static CK_RV pair_spec(CK_MECHANISM_TYPE mech, const CK_ATTRIBUTE *pub, CK_ULONG n_pub,
                       hsm_key_spec *spec)
{
	if (mech == CKM_RSA_PKCS_KEY_PAIR_GEN) {
		const CK_ATTRIBUTE *bits = p11_attr_find(pub, n_pub, CKA_MODULUS_BITS);
		CK_ULONG b = 0;
		if (bits == NULL)
			return CKR_TEMPLATE_INCOMPLETE;
		if (!p11_attr_ulong(bits, &b))
			return CKR_ATTRIBUTE_VALUE_INVALID;
		if (b != 2048 && b != 3072 && b != 4096)
			return CKR_ATTRIBUTE_VALUE_INVALID;
		*spec = b == 2048 ? HSM_SPEC_RSA_2048 : b == 3072 ? HSM_SPEC_RSA_3072 : HSM_SPEC_RSA_4096;
		const CK_ATTRIBUTE *e = p11_attr_find(pub, n_pub, CKA_PUBLIC_EXPONENT);
		if (e != NULL) { /* hsmd's RSA keys have e = 65537 */
			const uint8_t *p = e->pValue;
			CK_ULONG i = 0, n = e->ulValueLen;
			while (p != NULL && i < n && p[i] == 0)
				i++;
			if (p == NULL || n - i != 3 || p[i] != 1 || p[i + 1] != 0 || p[i + 2] != 1)
				return CKR_ATTRIBUTE_VALUE_INVALID;
		}
		return CKR_OK;
	}
	if (mech == CKM_EC_KEY_PAIR_GEN || mech == CKM_EC_EDWARDS_KEY_PAIR_GEN) {
		bool edwards_mech = mech == CKM_EC_EDWARDS_KEY_PAIR_GEN;
		const CK_ATTRIBUTE *ec = p11_attr_find(pub, n_pub, CKA_EC_PARAMS);
		if (ec == NULL || ec->pValue == NULL)
			return CKR_TEMPLATE_INCOMPLETE;
		return p11_curve_spec(ec->pValue, ec->ulValueLen, edwards_mech, spec);
	}
	return CKR_MECHANISM_INVALID;
}

/*
 * A label for a new key: any the key can have (p11_key_label), which becomes
 * its alias alias/<label>, but those under "aws/" (AWS's reserved names,
 * which CreateAlias refuses) and "pkcs11-id/" (those give a key its CKA_ID,
 * not a label).  Any other is CKR_ATTRIBUTE_VALUE_INVALID, before a key is made.
 */
_Static_assert(P11_KEY_LABEL_MAX <= P11_LABEL_MAX, "a key's label fits the buffers");

static CK_RV pair_label(const CK_ATTRIBUTE *a, char *out, size_t cap)
{
	out[0] = '\0';
	if (a == NULL)
		return CKR_OK;
	if (a->pValue == NULL || !p11_key_label(a->pValue, a->ulValueLen) || a->ulValueLen >= cap)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	memcpy(out, a->pValue, a->ulValueLen);
	out[a->ulValueLen] = '\0';
	return hsm_str_has_prefix(out, "aws/") || hsm_str_has_prefix(out, &HSM_PKCS11_ID_ALIAS[6])
	           ? CKR_ATTRIBUTE_VALUE_INVALID
	           : CKR_OK;
}

/* The key type a key pair mechanism makes, or CK_UNAVAILABLE_INFORMATION. */
static CK_KEY_TYPE pair_key_type(CK_MECHANISM_TYPE mech)
{
	return mech == CKM_RSA_PKCS_KEY_PAIR_GEN     ? CKK_RSA
	       : mech == CKM_EC_KEY_PAIR_GEN         ? CKK_EC
	       : mech == CKM_EC_EDWARDS_KEY_PAIR_GEN ? CKK_EC_EDWARDS
	                                             : CK_UNAVAILABLE_INFORMATION;
}

/*
 * The usages a template may not ask for (true) beside `own`, the one its key
 * has, and which it may not refuse (false) either.
 */
static CK_RV one_usage(const CK_ATTRIBUTE *t, CK_ULONG n, const CK_ATTRIBUTE_TYPE *own,
                       size_t n_own, bool own_may_be_false)
{
	static const CK_ATTRIBUTE_TYPE usages[] = {CKA_SIGN,   CKA_VERIFY,      CKA_ENCRYPT,
	                                           CKA_DECRYPT, CKA_DERIVE,     CKA_WRAP,
	                                           CKA_UNWRAP, CKA_SIGN_RECOVER, CKA_VERIFY_RECOVER};
	for (size_t i = 0; i < sizeof(usages) / sizeof(usages[0]); i++) {
		bool mine = false;
		for (size_t j = 0; j < n_own; j++)
			mine = mine || own[j] == usages[i];
		if (mine ? !own_may_be_false && p11_template_false(t, n, usages[i])
		         : p11_template_true(t, n, usages[i]))
			return CKR_TEMPLATE_INCONSISTENT;
	}
	return CKR_OK;
}

/*
 * The usage a pair's private template asks for (an hsmd key has one): to
 * decrypt (CKA_DECRYPT true: pkcs11-tool --usage-decrypt) an RSA
 * ENCRYPT_DECRYPT key, to derive (CKA_DERIVE true: --usage-derive) a NIST
 * curve KEY_AGREEMENT key, otherwise to sign, unless CKA_SIGN is false.  Two
 * at once, or one the key's type cannot have, is refused; so is a public
 * template asking its key for another use, or refusing it its own.
 */
static CK_RV pair_usage(hsm_key_spec spec, const CK_ATTRIBUTE *pub, CK_ULONG n_pub,
                        const CK_ATTRIBUTE *priv, CK_ULONG n_priv, hsm_key_usage *usage)
{
	bool nist = spec == HSM_SPEC_ECC_NIST_P256 || spec == HSM_SPEC_ECC_NIST_P384 ||
	            spec == HSM_SPEC_ECC_NIST_P521;
	bool sign = p11_template_true(priv, n_priv, CKA_SIGN);
	bool decrypt = p11_template_true(priv, n_priv, CKA_DECRYPT);
	bool derive = p11_template_true(priv, n_priv, CKA_DERIVE);
	if ((int)sign + (int)decrypt + (int)derive > 1)
		return CKR_TEMPLATE_INCONSISTENT;
	if (decrypt && !p11_spec_is_rsa(spec))
		return CKR_TEMPLATE_INCONSISTENT;
	if (derive && !nist)
		return CKR_TEMPLATE_INCONSISTENT; /* hsmd's KEY_AGREEMENT keys are on NIST curves */
	*usage = decrypt  ? HSM_USAGE_ENCRYPT_DECRYPT
	         : derive ? HSM_USAGE_KEY_AGREEMENT
	                  : HSM_USAGE_SIGN_VERIFY;
	CK_ATTRIBUTE_TYPE mine = decrypt ? CKA_DECRYPT : derive ? CKA_DERIVE : CKA_SIGN;
	CK_RV rv = one_usage(priv, n_priv, &mine, 1, false);
	/* The public key's side: verify, encrypt, or (pkcs11-tool sets it) derive. */
	CK_ATTRIBUTE_TYPE theirs = decrypt ? CKA_ENCRYPT : derive ? CKA_DERIVE : CKA_VERIFY;
	if (rv == CKR_OK)
		rv = one_usage(pub, n_pub, &theirs, 1, derive);
	return rv;
}

/* A template's CKA_ALLOWED_MECHANISMS, if any, must be what its object will allow. */
static CK_RV mechs_fit(const CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt,
                       hsm_key_spec spec, hsm_key_usage usage)
{
	p11_object o = {.cls = cls, .key_type = kt, .spec = spec, .usage = usage};
	return p11_template_mechs(t, n, &o);
}

/* The private template's CKA_EC_PARAMS, if any, must be the public one's. */
static CK_RV same_curve(const CK_ATTRIBUTE *pub, CK_ULONG n_pub, const CK_ATTRIBUTE *priv,
                        CK_ULONG n_priv)
{
	const CK_ATTRIBUTE *a = p11_attr_find(pub, n_pub, CKA_EC_PARAMS);
	const CK_ATTRIBUTE *b = p11_attr_find(priv, n_priv, CKA_EC_PARAMS);
	if (b == NULL)
		return CKR_OK;
	return a != NULL && a->ulValueLen == b->ulValueLen &&
	               (a->ulValueLen == 0 || hsm_ct_equal(a->pValue, b->pValue, a->ulValueLen))
	           ? CKR_OK
	           : CKR_TEMPLATE_INCONSISTENT;
}

/*
 * The attribute a key pair's templates give it (its CKA_LABEL or CKA_ID):
 * the private template's, or the public one's; when both give it, the same.
 */
static CK_RV pair_attr(const CK_ATTRIBUTE *pub, CK_ULONG n_pub, const CK_ATTRIBUTE *priv,
                       CK_ULONG n_priv, CK_ATTRIBUTE_TYPE type, const CK_ATTRIBUTE **out)
{
	const CK_ATTRIBUTE *a = p11_attr_find(pub, n_pub, type);
	const CK_ATTRIBUTE *b = p11_attr_find(priv, n_priv, type);
	*out = b != NULL ? b : a;
	if (a == NULL || b == NULL)
		return CKR_OK;
	return a->ulValueLen == b->ulValueLen &&
	               (a->ulValueLen == 0 || hsm_ct_equal(a->pValue, b->pValue, a->ulValueLen))
	           ? CKR_OK
	           : CKR_TEMPLATE_INCONSISTENT;
}

/* The alias a template's CKA_ID asks for (HSM_PKCS11_ID_ALIAS + hex), or "" with none. */
static CK_RV id_alias(const CK_ATTRIBUTE *a, char *out, size_t cap)
{
	out[0] = '\0';
	if (a == NULL)
		return CKR_OK;
	/* Empty, longer than HSM_PKCS11_ID_MAX, or spelling a key id: not an id of its own. */
	return a->pValue != NULL && hsm_pkcs11_id_alias(a->pValue, a->ulValueLen, out, cap)
	           ? CKR_OK
	           : CKR_ATTRIBUTE_VALUE_INVALID;
}

/*
 * A label or CKA_ID another key has already: refused before a key is made.
 * One held by a key pending deletion is free (*reclaim): that key's objects
 * left the token with C_DestroyObject, and a script that deletes a key and
 * makes it again under the same name must work, as on any token; the name
 * moves to the new key.
 */
static CK_RV alias_free(const char *alias, bool *reclaim)
{
	*reclaim = false;
	if (alias[0] == '\0')
		return CKR_OK;
	json_t *ans = NULL;
	CK_RV rv = p11_call("TrentService.DescribeKey", json_pack("{s:s}", "KeyId", alias), &ans);
	const char *state =
	    json_string_value(json_object_get(json_object_get(ans, "KeyMetadata"), "KeyState"));
	*reclaim = rv == CKR_OK && state != NULL && strcmp(state, "PendingDeletion") == 0;
	json_decref(ans);
	return rv == CKR_OK                   ? (*reclaim ? CKR_OK : CKR_ATTRIBUTE_VALUE_INVALID)
	       : rv == CKR_KEY_HANDLE_INVALID ? CKR_OK /* NotFoundException */
	                                      : rv;
}

/*
 * A CKA_ID a stored certificate has already: refused before a key is made
 * (CKR_ATTRIBUTE_VALUE_INVALID), as a CKA_ID another key has.  Such a
 * certificate would pair with the new key, which it does not certify, so
 * hsmd refuses to give the key that id (its alias); asked only once the key
 * was made, it would leave a key to delete for each attempt.  A node older
 * than certificates (CKR_FUNCTION_NOT_SUPPORTED) has none.
 */
static CK_RV id_free_of_certificates(const CK_ATTRIBUTE *cka_id)
{
	if (cka_id == NULL)
		return CKR_OK;
	hsm_buf b64 = {0};
	if (hsm_failed(hsm_b64_encode(&b64, cka_id->pValue, cka_id->ulValueLen)))
		return CKR_HOST_MEMORY;
	json_t *ans = NULL;
	CK_RV rv = p11_call("HsmdAdmin.ListCertificates",
	                    json_pack("{s:i,s:b,s:s%}", "Limit", 1, "IncludeCertificate", 0,
	                              "ObjectId", (const char *)b64.data, b64.len),
	                    &ans);
	hsm_buf_free(&b64);
	json_t *certs = json_object_get(ans, "Certificates");
	if (rv == CKR_OK)
		rv = !json_is_array(certs)            ? CKR_DEVICE_ERROR
		     : json_array_size(certs) > 0 ? CKR_ATTRIBUTE_VALUE_INVALID
		                                  : CKR_OK;
	json_decref(ans);
	return rv == CKR_FUNCTION_NOT_SUPPORTED ? CKR_OK : rv;
}

/* Gives key_id the alias (taken first from the key pending deletion that had it: reclaim). */
static CK_RV create_alias(const char *alias, const char *key_id, bool reclaim)
{
	json_t *ans = NULL;
	CK_RV rv = CKR_OK;
	if (reclaim) {
		rv = p11_call("TrentService.DeleteAlias", json_pack("{s:s}", "AliasName", alias), &ans);
		json_decref(ans);
		ans = NULL;
		if (rv == CKR_KEY_HANDLE_INVALID) /* gone meanwhile */
			rv = CKR_OK;
	}
	if (rv == CKR_OK)
		rv = p11_call("TrentService.CreateAlias",
		              json_pack("{s:s,s:s}", "AliasName", alias, "TargetKeyId", key_id), &ans);
	json_decref(ans);
	return rv;
}

/*
 * Makes a key in hsmd (CreateKey, then CreateAlias for a label and for a
 * CKA_ID), then reads the objects again.  A label or CKA_ID another key has,
 * or a CKA_ID a certificate has, is refused before the key is made (one a key
 * pending deletion has moves to the new key); a key whose aliases or objects
 * cannot be made (a name taken meanwhile, memory running out) goes again,
 * with the aliases made for it: no half-made key stays usable, and no name
 * it took.  (A CreateKey whose answer was lost, the connection or memory
 * failing as it came, leaves a key the module never learnt of.)  id is the
 * alias of cka_id, the template's CKA_ID ("" and NULL without one).
 */
static CK_RV make_key(hsm_key_spec spec, hsm_key_usage usage, const char *label,
                      const char *id, const CK_ATTRIBUTE *cka_id,
                      char key_id[HSM_UUID_STRLEN + 1])
{
	char alias[P11_LABEL_MAX + 8] = "";
	if (label[0] != '\0')
		snprintf(alias, sizeof(alias), "alias/%s", label);
	key_id[0] = '\0';
	bool reclaim_label = false, reclaim_id = false;
	CK_RV rv = alias_free(alias, &reclaim_label);
	if (rv == CKR_OK)
		rv = alias_free(id, &reclaim_id);
	if (rv == CKR_OK)
		rv = id_free_of_certificates(cka_id);
	if (rv != CKR_OK)
		return rv;
	json_t *ans = NULL;
	rv = p11_call("TrentService.CreateKey",
	              json_pack("{s:s,s:s,s:s}", "KeySpec", hsm_spec_name(spec), "KeyUsage",
	                        hsm_usage_name(usage), "Description", "made through PKCS#11"),
	              &ans);
	const char *made = json_string_value(json_object_get(json_object_get(ans, "KeyMetadata"), "KeyId"));
	if (rv == CKR_OK && (made == NULL || !hsm_is_uuid(made)))
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK)
		snprintf(key_id, HSM_UUID_STRLEN + 1, "%s", made);
	json_decref(ans);
	if (rv != CKR_OK)
		return rv;
	bool labelled = false, ided = false;
	if (alias[0] != '\0')
		labelled = (rv = create_alias(alias, key_id, reclaim_label)) == CKR_OK;
	if (rv == CKR_OK && id[0] != '\0') {
		ided = (rv = create_alias(id, key_id, reclaim_id)) == CKR_OK;
		/* A ValidationException says the id cannot be the new key's: a certificate was
		 * stored with it since the look above (or, as unlikely, another id was given to
		 * the key meanwhile); the alias name itself was checked (id_alias). */
		if (rv == CKR_ARGUMENTS_BAD)
			rv = CKR_ATTRIBUTE_VALUE_INVALID;
	}
	/* Without its objects (memory ran out reading them, say) the call fails: the key goes too. */
	if (rv == CKR_OK)
		rv = p11_objects_add_made(key_id);
	if (rv != CKR_OK) {
		const char *names[] = {labelled ? alias : NULL, ided ? id : NULL};
		for (size_t i = 0; i < 2; i++) {
			ans = NULL;
			if (names[i] != NULL)
				(void)p11_call("TrentService.DeleteAlias",
				               json_pack("{s:s}", "AliasName", names[i]), &ans);
			json_decref(ans);
		}
		(void)p11_schedule_deletion(key_id);
		for (CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY; cls <= CKO_SECRET_KEY; cls++) {
			const p11_object *o = p11_object_of(key_id, cls);
			if (o != NULL)
				p11_object_drop(o->handle);
		}
		/* AlreadyExistsException (CKR_TEMPLATE_INCONSISTENT): the label or CKA_ID was taken
		 * meanwhile; any other refusal (permissions, the network) says what it is. */
		return rv == CKR_TEMPLATE_INCONSISTENT ? CKR_ATTRIBUTE_VALUE_INVALID : rv;
	}
	return CKR_OK;
}

CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR pub,
                        CK_ULONG n_pub, CK_ATTRIBUTE_PTR priv, CK_ULONG n_priv,
                        CK_OBJECT_HANDLE_PTR pub_out, CK_OBJECT_HANDLE_PTR priv_out)
{
	ENTER_SESSION(h);
	if (mech == NULL || pub_out == NULL || priv_out == NULL || (pub == NULL && n_pub > 0) ||
	    (priv == NULL && n_priv > 0))
		LEAVE(CKR_ARGUMENTS_BAD);
	hsm_key_spec spec;
	char label[P11_LABEL_MAX + 1], id[P11_LABEL_MAX + 1];
	hsm_key_usage usage;
	const CK_ATTRIBUTE *l = NULL, *i = NULL;
	CK_KEY_TYPE kt = pair_key_type(mech->mechanism);
	/* Every check before CreateKey: a template refused makes no key. */
	CK_RV rv = may_generate(h, mech, kt);
	if (rv == CKR_OK)
		rv = p11_template_check(pub, n_pub, CKO_PUBLIC_KEY, kt);
	if (rv == CKR_OK)
		rv = p11_template_check(priv, n_priv, CKO_PRIVATE_KEY, kt);
	if (rv == CKR_OK)
		rv = pair_spec(mech->mechanism, pub, n_pub, &spec);
	if (rv == CKR_OK)
		rv = same_curve(pub, n_pub, priv, n_priv);
	if (rv == CKR_OK)
		rv = pair_usage(spec, pub, n_pub, priv, n_priv, &usage);
	if (rv == CKR_OK)
		rv = mechs_fit(pub, n_pub, CKO_PUBLIC_KEY, kt, spec, usage);
	if (rv == CKR_OK)
		rv = mechs_fit(priv, n_priv, CKO_PRIVATE_KEY, kt, spec, usage);
	if (rv == CKR_OK)
		rv = pair_attr(pub, n_pub, priv, n_priv, CKA_LABEL, &l);
	if (rv == CKR_OK)
		rv = pair_label(l, label, sizeof(label));
	if (rv == CKR_OK)
		rv = pair_attr(pub, n_pub, priv, n_priv, CKA_ID, &i);
	if (rv == CKR_OK)
		rv = id_alias(i, id, sizeof(id));
	if (rv != CKR_OK)
		LEAVE(rv);
	char key_id[HSM_UUID_STRLEN + 1];
	rv = make_key(spec, usage, label, id, i, key_id);
	const p11_object *po = rv == CKR_OK ? p11_object_of(key_id, CKO_PUBLIC_KEY) : NULL;
	const p11_object *ko = rv == CKR_OK ? p11_object_of(key_id, CKO_PRIVATE_KEY) : NULL;
	if (rv == CKR_OK && (po == NULL || ko == NULL))
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK) {
		*pub_out = po->handle;
		*priv_out = ko->handle;
	}
	LEAVE(rv);
}

/*
 * The KMS key a secret key template asks for: CKM_AES_KEY_GEN makes a
 * SYMMETRIC_DEFAULT key (AES-256: CKA_VALUE_LEN 32 if given),
 * CKM_GENERIC_SECRET_KEY_GEN an HMAC key of CKA_VALUE_LEN bytes (28, 32, 48
 * or 64: HMAC_224 to HMAC_512, the HMAC mechanism of the same size).
 */
static CK_RV secret_spec(CK_MECHANISM_TYPE mech, const CK_ATTRIBUTE *t, CK_ULONG n,
                         hsm_key_spec *spec, hsm_key_usage *usage)
{
	CK_ULONG len = 0; /* well formed: p11_template_check */
	(void)p11_attr_ulong(p11_attr_find(t, n, CKA_VALUE_LEN), &len);
	/* An AES key encrypts and decrypts, an HMAC key signs and verifies, nothing else. */
	static const CK_ATTRIBUTE_TYPE aes_uses[] = {CKA_ENCRYPT, CKA_DECRYPT};
	static const CK_ATTRIBUTE_TYPE mac_uses[] = {CKA_SIGN, CKA_VERIFY};
	bool aes = mech == CKM_AES_KEY_GEN;
	if (one_usage(t, n, aes ? aes_uses : mac_uses, 2, false) != CKR_OK)
		return CKR_TEMPLATE_INCONSISTENT;
	if (aes) {
		if (len != 0 && len != 32)
			return CKR_ATTRIBUTE_VALUE_INVALID;
		*spec = HSM_SPEC_SYMMETRIC_DEFAULT;
		*usage = HSM_USAGE_ENCRYPT_DECRYPT;
		return CKR_OK;
	}
	if (len == 0)
		return CKR_TEMPLATE_INCOMPLETE;
	if (len != 28 && len != 32 && len != 48 && len != 64)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	*spec = len == 28   ? HSM_SPEC_HMAC_224
	        : len == 32 ? HSM_SPEC_HMAC_256
	        : len == 48 ? HSM_SPEC_HMAC_384
	                    : HSM_SPEC_HMAC_512;
	*usage = HSM_USAGE_GENERATE_VERIFY_MAC;
	return CKR_OK;
}

CK_RV C_GenerateKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR t, CK_ULONG n,
                    CK_OBJECT_HANDLE_PTR out)
{
	ENTER_SESSION(h);
	if (mech == NULL || out == NULL || (t == NULL && n > 0))
		LEAVE(CKR_ARGUMENTS_BAD);
	hsm_key_spec spec;
	hsm_key_usage usage;
	char label[P11_LABEL_MAX + 1], id[P11_LABEL_MAX + 1];
	CK_KEY_TYPE kt = mech->mechanism == CKM_AES_KEY_GEN              ? CKK_AES
	                 : mech->mechanism == CKM_GENERIC_SECRET_KEY_GEN ? CKK_GENERIC_SECRET
	                                                                 : CK_UNAVAILABLE_INFORMATION;
	/* Every check before CreateKey: a template refused makes no key. */
	CK_RV rv = may_generate(h, mech, kt);
	if (rv == CKR_OK)
		rv = p11_template_check(t, n, CKO_SECRET_KEY, kt);
	if (rv == CKR_OK)
		rv = secret_spec(mech->mechanism, t, n, &spec, &usage);
	if (rv == CKR_OK)
		rv = mechs_fit(t, n, CKO_SECRET_KEY, kt, spec, usage);
	if (rv == CKR_OK)
		rv = pair_label(p11_attr_find(t, n, CKA_LABEL), label, sizeof(label));
	if (rv == CKR_OK)
		rv = id_alias(p11_attr_find(t, n, CKA_ID), id, sizeof(id));
	if (rv != CKR_OK)
		LEAVE(rv);
	char key_id[HSM_UUID_STRLEN + 1];
	rv = make_key(spec, usage, label, id, p11_attr_find(t, n, CKA_ID), key_id);
	const p11_object *o = rv == CKR_OK ? p11_object_of(key_id, CKO_SECRET_KEY) : NULL;
	if (rv == CKR_OK && o == NULL)
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK)
		*out = o->handle;
	LEAVE(rv);
}
