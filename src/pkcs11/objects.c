/*
 * objects.c - hsmd's keys as token objects (p11.h).
 *
 * After login, and again at each C_FindObjectsInit, the module lists the
 * user's view of hsmd's keys (ListKeys, ListAliases, DescribeKey,
 * GetPublicKey).  Enabled keys become objects (a key disabled, pending
 * import or deletion, or one hsmd refuses to describe to this user, is left
 * out; the listing fails only where hsmd does not answer it at all):
 *   - SIGN_VERIFY RSA, NIST/secp256k1 EC and Ed25519 keys: a private key
 *     object (sign) and a public key object (verify, with the public values);
 *   - ENCRYPT_DECRYPT RSA keys: the same pair for decryption and encryption;
 *   - KEY_AGREEMENT EC keys: a private key object (CKA_DERIVE: ECDH with
 *     C_DeriveKey, derive.c) and a public key object, for its public values;
 *   - HMAC keys: a secret key object (sign and verify a MAC);
 *   - SYMMETRIC_DEFAULT keys: an AES secret key object (CKM_AES_GCM, crypt.c).
 * CKA_ID is the key id, CKA_LABEL its first alias without "alias/" (or the
 * key id).  A key keeps its handles across listings.  Private values are
 * never in hsmd's answers: CKA_VALUE and the like are CKR_ATTRIBUTE_SENSITIVE.
 * Secrets derived with C_DeriveKey are session objects in the same table,
 * kept across listings and dropped when their session closes.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/x509.h>

#include "pkcs11/p11.h"

/* ---- the object table ---------------------------------------------------------------------- */

static void object_free(p11_object *o)
{
	hsm_buf_free(&o->spki);
	hsm_buf_free(&o->modulus);
	hsm_buf_free(&o->exponent);
	hsm_buf_free(&o->ec_params);
	hsm_buf_free(&o->ec_point);
	hsm_buf_free(&o->value); /* a derived secret's is a secure buffer: wiped */
	hsm_buf_free(&o->id);
	hsm_buf_free(&o->subject);
	hsm_buf_free(&o->issuer);
	hsm_buf_free(&o->serial);
	hsm_buf_free(&o->check);
}

void p11_objects_logout(void)
{
	size_t j = 0;
	for (size_t i = 0; i < p11.n_objects; i++) {
		p11_object *o = &p11.objects[i];
		if (o->cls == CKO_PUBLIC_KEY || o->cls == CKO_CERTIFICATE)
			p11.objects[j++] = *o;
		else
			object_free(o); /* private and secret keys, derived secrets (wiped) */
	}
	p11.n_objects = j;
}

void p11_objects_clear(void)
{
	for (size_t i = 0; i < p11.n_objects; i++)
		object_free(&p11.objects[i]);
	free(p11.objects);
	p11.objects = NULL;
	p11.n_objects = p11.cap_objects = 0;
}

const CK_ATTRIBUTE_TYPE p11_use_attrs[P11_USES] = {CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY,
                                                  CKA_WRAP,    CKA_UNWRAP,  CKA_DERIVE};

p11_object *p11_object_get(CK_OBJECT_HANDLE h)
{
	for (size_t i = 0; i < p11.n_objects; i++)
		if (p11.objects[i].handle == h)
			return &p11.objects[i];
	return NULL;
}

p11_object *p11_key_get(CK_OBJECT_HANDLE h)
{
	p11_object *o = p11_object_get(h);
	return o != NULL && o->cls != CKO_CERTIFICATE ? o : NULL;
}

p11_object *p11_object_of(const char *key_id, CK_OBJECT_CLASS cls)
{
	for (size_t i = 0; i < p11.n_objects; i++)
		if (p11.objects[i].cls == cls && strcmp(p11.objects[i].key_id, key_id) == 0)
			return &p11.objects[i];
	return NULL;
}

p11_object *p11_object_new(const char *key_id, CK_OBJECT_CLASS cls)
{
	if (p11.n_objects == p11.cap_objects) {
		size_t cap = p11.cap_objects ? 2 * p11.cap_objects : 32;
		p11_object *v = realloc(p11.objects, cap * sizeof(*v));
		if (v == NULL)
			return NULL;
		p11.objects = v;
		p11.cap_objects = cap;
	}
	p11_object *o = &p11.objects[p11.n_objects++];
	memset(o, 0, sizeof(*o));
	o->handle = p11.next_handle++;
	o->cls = cls;
	snprintf(o->key_id, sizeof(o->key_id), "%s", key_id);
	return o;
}

p11_object *p11_object_add_derived(CK_SESSION_HANDLE owner)
{
	p11_object *o = p11_object_new("", CKO_SECRET_KEY);
	if (o != NULL) {
		o->derived = true;
		o->owner = owner;
		o->key_type = CKK_GENERIC_SECRET;
		hsm_buf_init_secure(&o->value);
	}
	return o;
}

/* Drops the objects matching: the derived secret with this handle, those of a session. */
static void objects_drop(CK_OBJECT_HANDLE handle, CK_SESSION_HANDLE owner)
{
	size_t j = 0;
	for (size_t i = 0; i < p11.n_objects; i++) {
		p11_object *o = &p11.objects[i];
		if (o->derived && (o->handle == handle || o->owner == owner))
			object_free(o);
		else
			p11.objects[j++] = *o;
	}
	p11.n_objects = j;
}

void p11_object_drop(CK_OBJECT_HANDLE h)
{
	objects_drop(h, CK_INVALID_HANDLE);
}

void p11_objects_drop_session(CK_SESSION_HANDLE owner)
{
	objects_drop(CK_INVALID_HANDLE, owner);
}

/*
 * Drops the key objects not seen in the last listing (or, with key_id, that
 * key's objects).  Derived secrets are not hsmd's keys: they stay.
 */
static void objects_remove(const char *key_id)
{
	size_t j = 0;
	for (size_t i = 0; i < p11.n_objects; i++) {
		p11_object *o = &p11.objects[i];
		bool drop = o->derived                ? false
		            : key_id != NULL ? strcmp(o->key_id, key_id) == 0
		                             : !o->seen;
		if (drop)
			object_free(o);
		else
			p11.objects[j++] = *o;
	}
	p11.n_objects = j;
}

void p11_objects_remove_unseen(void)
{
	objects_remove(NULL);
}

/* ---- public values ---------------------------------------------------------------------------- */

/* DER OIDs of the named curves (CKA_EC_PARAMS). */
static const struct curve {
	hsm_key_spec spec;
	const char *group;
	uint8_t der[12];
	size_t len;
} curves[] = {
    {HSM_SPEC_ECC_NIST_P256, "prime256v1", {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}, 10},
    {HSM_SPEC_ECC_NIST_P384, "secp384r1", {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}, 7},
    {HSM_SPEC_ECC_NIST_P521, "secp521r1", {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23}, 7},
    {HSM_SPEC_ECC_SECG_P256K1, "secp256k1", {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a}, 7},
    /* id-Ed25519 (RFC 8410); key generation also takes PrintableString "edwards25519". */
    {HSM_SPEC_ECC_NIST_EDWARDS25519, "ED25519", {0x06, 0x03, 0x2b, 0x65, 0x70}, 5},
};
static const uint8_t edwards25519_name[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd', 's',
                                            '2',  '5',  '5', '1', '9'};

static const struct curve *curve_of(hsm_key_spec spec)
{
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (curves[i].spec == spec)
			return &curves[i];
	return NULL;
}

static CK_RV put_bn(EVP_PKEY *pk, const char *name, hsm_buf *out)
{
	BIGNUM *bn = NULL;
	if (!EVP_PKEY_get_bn_param(pk, name, &bn))
		return CKR_DEVICE_ERROR;
	uint8_t *p;
	size_t n = (size_t)BN_num_bytes(bn);
	CK_RV rv = hsm_ok(hsm_buf_append_space(out, n, &p)) ? CKR_OK : CKR_HOST_MEMORY;
	if (rv == CKR_OK)
		BN_bn2bin(bn, p);
	BN_free(bn);
	return rv;
}

/*
 * A SubjectPublicKeyInfo decoded by OpenSSL's providers.  Not d2i_PUBKEY: in
 * an application that made an engine its default for RSA and EC keys (as
 * `openssl req -engine pkcs11` does with OpenSSL's pkcs11 engine, which may
 * be this module's own caller), that gives a key of the engine's, whose
 * parameters cannot be read.
 */
static EVP_PKEY *decode_spki(const hsm_buf *spki)
{
	EVP_PKEY *pk = NULL;
	const unsigned char *p = spki->data;
	size_t n = spki->len;
	OSSL_DECODER_CTX *d = OSSL_DECODER_CTX_new_for_pkey(&pk, "DER", "SubjectPublicKeyInfo", NULL,
	                                                    EVP_PKEY_PUBLIC_KEY, NULL, NULL);
	if (d == NULL || !OSSL_DECODER_from_data(d, &p, &n) || n != 0) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	OSSL_DECODER_CTX_free(d);
	return pk;
}

/* The public values of o from its SubjectPublicKeyInfo. */
static CK_RV parse_public(p11_object *o)
{
	EVP_PKEY *pk = decode_spki(&o->spki);
	if (pk == NULL)
		return CKR_DEVICE_ERROR;
	hsm_buf_clear(&o->modulus);
	hsm_buf_clear(&o->exponent);
	hsm_buf_clear(&o->ec_params);
	hsm_buf_clear(&o->ec_point);
	CK_RV rv = CKR_OK;
	const struct curve *c = curve_of(o->spec);
	if (o->key_type == CKK_RSA) {
		rv = put_bn(pk, OSSL_PKEY_PARAM_RSA_N, &o->modulus);
		if (rv == CKR_OK)
			rv = put_bn(pk, OSSL_PKEY_PARAM_RSA_E, &o->exponent);
		o->modulus_bits = (CK_ULONG)EVP_PKEY_get_bits(pk);
	} else if (c != NULL) {
		uint8_t point[160];
		size_t n = sizeof(point);
		bool ok = o->key_type == CKK_EC_EDWARDS /* the point is the 32-byte key itself */
		              ? EVP_PKEY_get_raw_public_key(pk, point, &n) && n == 32
		              : EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY,
		                                                point, sizeof(point), &n) &&
		                    n >= 1 && point[0] == 0x04;
		if (!ok)
			rv = CKR_DEVICE_ERROR;
		/* CKA_EC_POINT: the uncompressed point as a DER OCTET STRING. */
		else if (hsm_failed(hsm_buf_put_u8(&o->ec_point, 0x04)) ||
		         (n >= 128 && hsm_failed(hsm_buf_put_u8(&o->ec_point, 0x81))) ||
		         hsm_failed(hsm_buf_put_u8(&o->ec_point, (uint8_t)n)) ||
		         hsm_failed(hsm_buf_put(&o->ec_point, point, n)) ||
		         hsm_failed(hsm_buf_put(&o->ec_params, c->der, c->len)))
			rv = CKR_HOST_MEMORY;
	} else {
		rv = CKR_DEVICE_ERROR;
	}
	EVP_PKEY_free(pk);
	return rv;
}

/* ---- listing --------------------------------------------------------------------------------- */

/* The aliases (of one key, or of all with key_id NULL) into the array all. */
static CK_RV list_aliases(json_t *all, const char *key_id)
{
	const char *marker = NULL;
	json_t *ans = NULL;
	for (;;) {
		json_t *body = json_pack("{s:i}", "Limit", 100);
		if (key_id != NULL)
			json_object_set_new(body, "KeyId", json_string(key_id));
		if (marker != NULL)
			json_object_set_new(body, "Marker", json_string(marker));
		json_decref(ans);
		CK_RV rv = p11_call("TrentService.ListAliases", body, &ans);
		if (rv != CKR_OK)
			return rv;
		json_array_extend(all, json_object_get(ans, "Aliases"));
		marker = json_string_value(json_object_get(ans, "NextMarker"));
		if (!json_is_true(json_object_get(ans, "Truncated")) || marker == NULL)
			break;
	}
	json_decref(ans);
	return CKR_OK;
}

static void label_of(json_t *aliases, const char *key_id, char *out, size_t cap)
{
	size_t i;
	json_t *a;
	json_array_foreach(aliases, i, a) {
		const char *target = json_string_value(json_object_get(a, "TargetKeyId"));
		const char *name = json_string_value(json_object_get(a, "AliasName"));
		if (target != NULL && name != NULL && strcmp(target, key_id) == 0) {
			snprintf(out, cap, "%s", hsm_str_has_prefix(name, "alias/") ? name + 6 : name);
			return;
		}
	}
	snprintf(out, cap, "%s", key_id);
}

static bool is_hmac(hsm_key_spec s)
{
	return s == HSM_SPEC_HMAC_224 || s == HSM_SPEC_HMAC_256 || s == HSM_SPEC_HMAC_384 ||
	       s == HSM_SPEC_HMAC_512;
}

static bool is_rsa(hsm_key_spec s)
{
	return s == HSM_SPEC_RSA_2048 || s == HSM_SPEC_RSA_3072 || s == HSM_SPEC_RSA_4096;
}

/* What DescribeKey said of a key, for each of its objects. */
typedef struct key_desc {
	hsm_key_spec spec;
	hsm_key_usage usage;
	bool external; /* Origin EXTERNAL: material imported, not made in hsmd */
} key_desc;

static CK_RV upsert(const char *key_id, CK_OBJECT_CLASS cls, const key_desc *kd, CK_KEY_TYPE kt,
                    const char *label, const hsm_buf *spki)
{
	hsm_key_spec spec = kd->spec;
	hsm_key_usage usage = kd->usage;
	p11_object *o = p11_object_of(key_id, cls);
	if (o == NULL && (o = p11_object_new(key_id, cls)) == NULL)
		return CKR_HOST_MEMORY;
	o->seen = true;
	o->external = kd->external;
	o->spec = spec;
	o->usage = usage;
	o->key_type = kt;
	snprintf(o->label, sizeof(o->label), "%s", label);
	if (spki == NULL)
		return CKR_OK;
	if (hsm_failed(hsm_buf_set(&o->spki, spki->data, spki->len)))
		return CKR_HOST_MEMORY;
	return parse_public(o);
}

/*
 * hsmd's refusals that concern one key, not the listing: it is gone
 * (NotFoundException), disabled or in another state (DisabledException,
 * KMSInvalidStateException), or its policy denies this user
 * (AccessDeniedException).  Such a key is left out of the token; any other
 * failure (no answer, credentials refused) fails the whole listing.
 */
static bool refused_key(CK_RV rv)
{
	return rv == CKR_KEY_HANDLE_INVALID || rv == CKR_KEY_FUNCTION_NOT_PERMITTED ||
	       rv == CKR_ACTION_PROHIBITED;
}

/*
 * Makes the objects of one key, if it is one this token shows: Enabled (a
 * disabled key, one pending import or deletion is not listed), of a spec and
 * usage the module knows, and readable by this user.
 */
static CK_RV load_key(const char *key_id, json_t *aliases)
{
	json_t *ans = NULL;
	CK_RV rv = p11_call("TrentService.DescribeKey", json_pack("{s:s}", "KeyId", key_id), &ans);
	if (rv != CKR_OK)
		return refused_key(rv) ? CKR_OK : rv;
	json_t *md = json_object_get(ans, "KeyMetadata");
	const char *state = json_string_value(json_object_get(md, "KeyState"));
	const char *spec_name = json_string_value(json_object_get(md, "KeySpec"));
	const char *usage_name = json_string_value(json_object_get(md, "KeyUsage"));
	const char *origin = json_string_value(json_object_get(md, "Origin"));
	hsm_key_spec spec;
	hsm_key_usage usage;
	char label[P11_LABEL_MAX + 1];
	hsm_buf spki = {0};
	if (state == NULL || spec_name == NULL || usage_name == NULL ||
	    hsm_failed(hsm_spec_parse(spec_name, &spec)) ||
	    hsm_failed(hsm_usage_parse(usage_name, &usage)) || strcmp(state, "Enabled") != 0)
		goto out; /* not an object of this token */
	label_of(aliases, key_id, label, sizeof(label));
	key_desc kd = {spec, usage, origin != NULL && strcmp(origin, "EXTERNAL") == 0};
	if (usage == HSM_USAGE_GENERATE_VERIFY_MAC && is_hmac(spec)) {
		rv = upsert(key_id, CKO_SECRET_KEY, &kd, CKK_GENERIC_SECRET, label, NULL);
	} else if (usage == HSM_USAGE_ENCRYPT_DECRYPT && spec == HSM_SPEC_SYMMETRIC_DEFAULT) {
		rv = upsert(key_id, CKO_SECRET_KEY, &kd, CKK_AES, label, NULL);
	} else if ((usage == HSM_USAGE_SIGN_VERIFY && (is_rsa(spec) || curve_of(spec) != NULL)) ||
	           (usage == HSM_USAGE_ENCRYPT_DECRYPT && is_rsa(spec)) ||
	           (usage == HSM_USAGE_KEY_AGREEMENT && curve_of(spec) != NULL)) {
		json_t *pub = NULL;
		rv = p11_call("TrentService.GetPublicKey", json_pack("{s:s}", "KeyId", key_id), &pub);
		if (rv == CKR_OK)
			rv = p11_b64_member(pub, "PublicKey", &spki);
		json_decref(pub);
		if (refused_key(rv)) { /* disabled or refused since DescribeKey: not listed */
			rv = CKR_OK;
			goto out;
		}
		CK_KEY_TYPE kt = is_rsa(spec)                             ? CKK_RSA
		                 : spec == HSM_SPEC_ECC_NIST_EDWARDS25519 ? CKK_EC_EDWARDS
		                                                          : CKK_EC;
		if (rv == CKR_OK)
			rv = upsert(key_id, CKO_PRIVATE_KEY, &kd, kt, label, &spki);
		if (rv == CKR_OK)
			rv = upsert(key_id, CKO_PUBLIC_KEY, &kd, kt, label, &spki);
	}
out:
	hsm_buf_free(&spki);
	json_decref(ans);
	return rv;
}

/*
 * The keys HSM_PKCS11_KEYS names, each resolved now (an alias that moved
 * shows the key it names today); a name that names no key shows nothing.
 */
static CK_RV load_view(json_t *aliases)
{
	CK_RV rv = CKR_OK;
	const char *p = p11.keys;
	while (rv == CKR_OK && *p != '\0') {
		size_t n = strcspn(p, ",");
		char name[512], key_id[HSM_UUID_STRLEN + 1] = "";
		snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) ? n : sizeof(name) - 1), p);
		p += n + (p[n] == ',');
		if (name[0] == '\0')
			continue;
		json_t *ans = NULL;
		rv = p11_call("TrentService.DescribeKey", json_pack("{s:s}", "KeyId", name), &ans);
		const char *id =
		    json_string_value(json_object_get(json_object_get(ans, "KeyMetadata"), "KeyId"));
		if (rv == CKR_OK && id != NULL && hsm_is_uuid(id))
			snprintf(key_id, sizeof(key_id), "%s", id);
		json_decref(ans);
		if (refused_key(rv)) /* no such key, or not one this user may see */
			rv = CKR_OK;
		if (rv == CKR_OK && key_id[0] != '\0')
			rv = load_key(key_id, aliases);
	}
	return rv;
}

/* Every key the user sees (ListKeys, a page at a time). */
static CK_RV load_listing(json_t *aliases)
{
	json_t *ans = NULL;
	char marker[1024] = "";
	CK_RV rv = CKR_OK;
	for (;;) {
		json_t *body = json_pack("{s:i}", "Limit", 1000);
		if (marker[0] != '\0')
			json_object_set_new(body, "Marker", json_string(marker));
		json_decref(ans);
		rv = p11_call("TrentService.ListKeys", body, &ans);
		if (rv != CKR_OK)
			break;
		size_t i;
		json_t *k;
		json_array_foreach(json_object_get(ans, "Keys"), i, k) {
			const char *id = json_string_value(json_object_get(k, "KeyId"));
			if (id != NULL && hsm_is_uuid(id) && (rv = load_key(id, aliases)) != CKR_OK)
				break;
		}
		const char *next = json_string_value(json_object_get(ans, "NextMarker"));
		if (rv != CKR_OK || !json_is_true(json_object_get(ans, "Truncated")) || next == NULL)
			break;
		snprintf(marker, sizeof(marker), "%s", next);
	}
	json_decref(ans);
	return rv;
}

/*
 * Reads every key the token shows again (and every certificate, with_certs):
 * objects not seen go.  Outside a refresh every object is marked seen, so a
 * failed one leaves the table as it was.
 */
static CK_RV reload(bool with_certs)
{
	if (!p11.logged_in)
		return CKR_USER_NOT_LOGGED_IN;
	for (size_t i = 0; i < p11.n_objects; i++)
		p11.objects[i].seen = !with_certs && p11.objects[i].cls == CKO_CERTIFICATE;
	json_t *aliases = json_array();
	CK_RV rv = aliases != NULL ? list_aliases(aliases, NULL) : CKR_HOST_MEMORY;
	if (rv == CKR_OK)
		rv = p11.keys[0] != '\0' ? load_view(aliases) : load_listing(aliases);
	json_decref(aliases);
	if (rv == CKR_OK && with_certs)
		rv = p11_certs_load();
	if (rv == CKR_OK)
		objects_remove(NULL);
	else
		for (size_t i = 0; i < p11.n_objects; i++)
			p11.objects[i].seen = true;
	return rv;
}

CK_RV p11_objects_refresh(void)
{
	return reload(true);
}

static CK_RV refresh_keys(void)
{
	return reload(false);
}

/*
 * Reads one key again: what a search naming a key (by CKA_ID, or by a label
 * that is an alias or a key id) needs, in three calls instead of a listing of
 * every key.  A key that is gone or no longer shown loses its objects.
 */
static CK_RV refresh_key(const char *key_id)
{
	for (size_t i = 0; i < p11.n_objects; i++)
		if (strcmp(p11.objects[i].key_id, key_id) == 0)
			p11.objects[i].seen = false;
	json_t *aliases = json_array();
	CK_RV rv = aliases != NULL ? list_aliases(aliases, key_id) : CKR_HOST_MEMORY;
	if (rv == CKR_OK)
		rv = load_key(key_id, aliases);
	json_decref(aliases);
	if (refused_key(rv)) /* no such key (any more), or not one this user may see */
		rv = CKR_OK;
	if (rv == CKR_OK)
		objects_remove(NULL); /* outside a refresh every other object is marked seen */
	else
		for (size_t i = 0; i < p11.n_objects; i++)
			p11.objects[i].seen = true;
	return rv;
}

static CK_RV refresh_keys_for(const CK_ATTRIBUTE *tmpl, CK_ULONG count);

/*
 * Refreshes what a search template asks for: certificates (CKA_CLASS
 * CKO_CERTIFICATE), keys (any other class), or both (no class).
 */
static CK_RV refresh_for(const CK_ATTRIBUTE *tmpl, CK_ULONG count)
{
	if (p11.keys[0] != '\0') /* a view of a few keys: read them all again */
		return p11_objects_refresh();
	CK_ULONG cls = CK_UNAVAILABLE_INFORMATION;
	const CK_ATTRIBUTE *c = p11_attr_find(tmpl, count, CKA_CLASS);
	if (c != NULL && !p11_attr_ulong(c, &cls))
		return CKR_OK; /* a malformed class matches nothing */
	CK_RV rv = CKR_OK;
	if (cls != CKO_CERTIFICATE)
		rv = refresh_keys_for(tmpl, count);
	if (rv == CKR_OK && (c == NULL || cls == CKO_CERTIFICATE))
		rv = p11_certs_refresh(p11_attr_find(tmpl, count, CKA_ID),
		                       p11_attr_find(tmpl, count, CKA_LABEL));
	return rv;
}

/* Refreshes the keys a search template asks for: the key it names, or every key. */
static CK_RV refresh_keys_for(const CK_ATTRIBUTE *tmpl, CK_ULONG count)
{
	const CK_ATTRIBUTE *id = p11_attr_find(tmpl, count, CKA_ID);
	const CK_ATTRIBUTE *label = p11_attr_find(tmpl, count, CKA_LABEL);
	char name[P11_LABEL_MAX + 8] = "";
	const CK_ATTRIBUTE *named = id != NULL ? id : label;
	if (named == NULL || named->pValue == NULL || named->ulValueLen == 0 ||
	    named->ulValueLen > P11_LABEL_MAX)
		return refresh_keys();
	memcpy(name, named->pValue, named->ulValueLen);
	name[named->ulValueLen] = '\0';
	if (hsm_is_uuid(name))
		return refresh_key(name);
	if (named == id) /* not a key id: no key has it */
		return CKR_OK;
	/* A label is an alias name without "alias/": ask hsmd which key it names now. */
	char alias[sizeof(name) + 8];
	snprintf(alias, sizeof(alias), "alias/%s", name);
	json_t *ans = NULL;
	CK_RV rv = p11_call("TrentService.DescribeKey", json_pack("{s:s}", "KeyId", alias), &ans);
	const char *target =
	    json_string_value(json_object_get(json_object_get(ans, "KeyMetadata"), "KeyId"));
	char key_id[HSM_UUID_STRLEN + 1] = "";
	if (rv == CKR_OK && target != NULL && hsm_is_uuid(target))
		snprintf(key_id, sizeof(key_id), "%s", target);
	json_decref(ans);
	if (rv != CKR_OK && !refused_key(rv))
		return rv;
	if (key_id[0] != '\0' && (rv = refresh_key(key_id)) != CKR_OK)
		return rv;
	/* Keys whose objects had this label before (the alias moved or went) are read again. */
	size_t n = 0;
	char (*others)[HSM_UUID_STRLEN + 1] = calloc(p11.n_objects + 1, sizeof(*others));
	if (others == NULL)
		return CKR_HOST_MEMORY;
	for (size_t i = 0; i < p11.n_objects; i++)
		if (strcmp(p11.objects[i].label, name) == 0 && strcmp(p11.objects[i].key_id, key_id) != 0)
			snprintf(others[n++], sizeof(others[0]), "%s", p11.objects[i].key_id);
	rv = CKR_OK;
	for (size_t i = 0; i < n && rv == CKR_OK; i++)
		rv = refresh_key(others[i]);
	free(others);
	return rv;
}

/* ---- attributes --------------------------------------------------------------------------------- */

typedef enum { A_OK, A_SENSITIVE, A_INVALID } a_status;

typedef struct a_value {
	const void *p;
	CK_ULONG n;
	union {
		CK_BBOOL b;
		CK_ULONG u;
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

/* A derived secret's attributes: what its template asked for. */
static a_status derived_attribute(const p11_object *o, CK_ATTRIBUTE_TYPE t, a_value *v)
{
	for (size_t i = 0; i < P11_USES; i++)
		if (p11_use_attrs[i] == t)
			return boolean(v, o->uses[i]);
	switch (t) {
	case CKA_CLASS: return ulong_value(v, CKO_SECRET_KEY);
	case CKA_KEY_TYPE: return ulong_value(v, CKK_GENERIC_SECRET);
	case CKA_PRIVATE: return boolean(v, o->is_private);
	case CKA_SENSITIVE:
	case CKA_ALWAYS_SENSITIVE: return boolean(v, o->sensitive);
	case CKA_EXTRACTABLE: return boolean(v, o->extractable);
	case CKA_NEVER_EXTRACTABLE: return boolean(v, !o->extractable);
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
	case CKA_VALUE: return o->sensitive ? A_SENSITIVE : bytes(v, o->value.data, o->value.len);
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

static a_status attribute(const p11_object *o, CK_ATTRIBUTE_TYPE t, a_value *v)
{
	if (o->cls == CKO_CERTIFICATE)
		return cert_attribute(o, t, v);
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
	case CKA_ALWAYS_AUTHENTICATE: return boolean(v, false);
	case CKA_DESTROYABLE: return boolean(v, !pub); /* a public key goes with its private key */
	/* Imported material (PKCS#11 v2.40 4.7): not made here, and was once in the clear. */
	case CKA_LOCAL: return boolean(v, !o->external);
	case CKA_LABEL: return bytes(v, o->label, strlen(o->label));
	case CKA_ID: return bytes(v, o->key_id, strlen(o->key_id));
	case CKA_START_DATE:
	case CKA_END_DATE: return bytes(v, "", 0);
	case CKA_SIGN: return boolean(v, (priv && o->usage == HSM_USAGE_SIGN_VERIFY) || mac);
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
	case CKA_SENSITIVE:
		if (pub)
			break;
		return boolean(v, true);
	case CKA_ALWAYS_SENSITIVE:
	case CKA_NEVER_EXTRACTABLE:
		if (pub)
			break;
		return boolean(v, !o->external);
	case CKA_EXTRACTABLE:
		if (pub)
			break;
		return boolean(v, false);
	case CKA_SUBJECT: return pub || priv ? bytes(v, "", 0) : A_INVALID;
	case CKA_VALUE_LEN:
		if (!secret)
			break;
		return ulong_value(v, aes                            ? 32
		                      : o->spec == HSM_SPEC_HMAC_224 ? 28
		                      : o->spec == HSM_SPEC_HMAC_256 ? 32
		                      : o->spec == HSM_SPEC_HMAC_384 ? 48
		                                                     : 64);
	case CKA_VALUE: return pub ? A_INVALID : A_SENSITIVE;
	case CKA_PUBLIC_KEY_INFO:
		if (secret)
			break;
		return bytes(v, o->spki.data, o->spki.len);
	case CKA_MODULUS:
		if (!rsa)
			break;
		return bytes(v, o->modulus.data, o->modulus.len);
	case CKA_PUBLIC_EXPONENT:
		if (!rsa)
			break;
		return bytes(v, o->exponent.data, o->exponent.len);
	case CKA_MODULUS_BITS:
		if (!rsa)
			break;
		return ulong_value(v, o->modulus_bits);
	case CKA_PRIVATE_EXPONENT:
	case CKA_PRIME_1:
	case CKA_PRIME_2:
	case CKA_EXPONENT_1:
	case CKA_EXPONENT_2:
	case CKA_COEFFICIENT:
		return priv && rsa ? A_SENSITIVE : A_INVALID;
	case CKA_EC_PARAMS:
		if (o->key_type != CKK_EC && o->key_type != CKK_EC_EDWARDS)
			break;
		return bytes(v, o->ec_params.data, o->ec_params.len);
	case CKA_EC_POINT:
		if (!pub || (o->key_type != CKK_EC && o->key_type != CKK_EC_EDWARDS))
			break;
		return bytes(v, o->ec_point.data, o->ec_point.len);
	default: break;
	}
	return A_INVALID;
}

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl,
                          CK_ULONG count)
{
	if (tmpl == NULL && count > 0)
		return CKR_ARGUMENTS_BAD;
	ENTER();
	if (p11_session_get(h) == NULL)
		LEAVE(CKR_SESSION_HANDLE_INVALID);
	/* Before login no object shows (a search finds none): not even by a handle kept. */
	const p11_object *o = p11.logged_in ? p11_object_get(obj) : NULL;
	if (o == NULL)
		LEAVE(CKR_OBJECT_HANDLE_INVALID);
	CK_RV rv = CKR_OK;
	for (CK_ULONG i = 0; i < count; i++) {
		a_value v;
		a_status st = attribute(o, tmpl[i].type, &v);
		if (st != A_OK) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = st == A_SENSITIVE ? CKR_ATTRIBUTE_SENSITIVE : CKR_ATTRIBUTE_TYPE_INVALID;
		} else if (tmpl[i].pValue == NULL) {
			tmpl[i].ulValueLen = v.n;
		} else if (tmpl[i].ulValueLen < v.n) {
			tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_BUFFER_TOO_SMALL;
		} else {
			if (v.n > 0)
				memcpy(tmpl[i].pValue, v.p, v.n);
			tmpl[i].ulValueLen = v.n;
		}
	}
	LEAVE(rv);
}

CK_RV C_SetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_PTR tmpl,
                          CK_ULONG count)
{
	(void)tmpl;
	(void)count;
	ENTER();
	if (p11_session_get(h) == NULL)
		LEAVE(CKR_SESSION_HANDLE_INVALID);
	/* Objects are views of hsmd's keys: change a key through hsmd's API. */
	LEAVE(!p11.logged_in || p11_object_get(obj) == NULL ? CKR_OBJECT_HANDLE_INVALID
	                                                  : CKR_ACTION_PROHIBITED);
}

CK_RV C_GetObjectSize(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj, CK_ULONG_PTR size)
{
	if (size == NULL)
		return CKR_ARGUMENTS_BAD;
	ENTER();
	if (p11_session_get(h) == NULL)
		LEAVE(CKR_SESSION_HANDLE_INVALID);
	if (!p11.logged_in || p11_object_get(obj) == NULL)
		LEAVE(CKR_OBJECT_HANDLE_INVALID);
	*size = CK_UNAVAILABLE_INFORMATION;
	LEAVE(CKR_OK);
}

/* ---- search ---------------------------------------------------------------------------------------- */

static bool matches(const p11_object *o, const CK_ATTRIBUTE *tmpl, CK_ULONG count)
{
	for (CK_ULONG i = 0; i < count; i++) {
		a_value v;
		if (attribute(o, tmpl[i].type, &v) != A_OK || v.n != tmpl[i].ulValueLen ||
		    (v.n > 0 && (tmpl[i].pValue == NULL || !hsm_ct_equal(v.p, tmpl[i].pValue, v.n))))
			return false;
	}
	return true;
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG count)
{
	if (tmpl == NULL && count > 0)
		return CKR_ARGUMENTS_BAD;
	ENTER();
	p11_session *s = p11_session_get(h);
	if (s == NULL)
		LEAVE(CKR_SESSION_HANDLE_INVALID);
	if (s->find.active)
		LEAVE(CKR_OPERATION_ACTIVE);
	/* Before login this token shows nothing: every object is one of the user's keys. */
	if (p11.logged_in) {
		CK_RV rv = refresh_for(tmpl, count);
		if (rv != CKR_OK)
			LEAVE(rv);
	}
	free(s->find.handles);
	memset(&s->find, 0, sizeof(s->find));
	s->find.handles = calloc(p11.n_objects + 1, sizeof(CK_OBJECT_HANDLE));
	if (s->find.handles == NULL)
		LEAVE(CKR_HOST_MEMORY);
	for (size_t i = 0; p11.logged_in && i < p11.n_objects; i++)
		if (matches(&p11.objects[i], tmpl, count))
			s->find.handles[s->find.n++] = p11.objects[i].handle;
	s->find.active = true;
	LEAVE(CKR_OK);
}

CK_RV C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR out, CK_ULONG max,
                    CK_ULONG_PTR count)
{
	if (out == NULL || count == NULL)
		return CKR_ARGUMENTS_BAD;
	ENTER();
	p11_session *s = p11_session_get(h);
	if (s == NULL)
		LEAVE(CKR_SESSION_HANDLE_INVALID);
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

/* ---- destruction --------------------------------------------------------------------------------- */

/* hsmd's shortest waiting period: the key can still be recovered with CancelKeyDeletion. */
static CK_RV schedule_deletion(const char *key_id)
{
	json_t *ans = NULL;
	CK_RV rv = p11_call("TrentService.ScheduleKeyDeletion",
	                    json_pack("{s:s,s:i}", "KeyId", key_id, "PendingWindowInDays", 7), &ans);
	json_decref(ans);
	return rv;
}

/* Token objects are made and destroyed in R/W sessions only (PKCS#11 5.7). */
static CK_RV rw_session(CK_SESSION_HANDLE h)
{
	const p11_session *s = p11_session_get(h);
	return s != NULL && (s->flags & CKF_RW_SESSION) != 0 ? CKR_OK : CKR_SESSION_READ_ONLY;
}

CK_RV C_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj)
{
	ENTER();
	CK_RV rv = p11_user_session(h);
	if (rv != CKR_OK)
		LEAVE(rv);
	const p11_object *o = p11_object_get(obj);
	if (o == NULL)
		LEAVE(CKR_OBJECT_HANDLE_INVALID);
	if (o->derived) { /* the module's own object: wiped at once */
		p11_object_drop(obj);
		LEAVE(CKR_OK);
	}
	/* Token objects change in R/W sessions only (PKCS#11 5.7). */
	rv = rw_session(h);
	if (rv != CKR_OK)
		LEAVE(rv);
	if (o->cls == CKO_CERTIFICATE)
		LEAVE(p11_cert_destroy(p11_object_get(obj)));
	/* A public key is part of its key pair: it goes when the private key goes. */
	if (o->cls == CKO_PUBLIC_KEY)
		LEAVE(CKR_ACTION_PROHIBITED);
	char key_id[HSM_UUID_STRLEN + 1];
	snprintf(key_id, sizeof(key_id), "%s", o->key_id);
	rv = schedule_deletion(key_id);
	if (rv == CKR_OK)
		objects_remove(key_id);
	LEAVE(rv);
}

/* ---- key pair generation ---------------------------------------------------------------------------- */

const CK_ATTRIBUTE *p11_attr_find(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type)
{
	for (CK_ULONG i = 0; i < n; i++)
		if (t[i].type == type)
			return &t[i];
	return NULL;
}

bool p11_attr_bool(const CK_ATTRIBUTE *a, bool *out)
{
	if (a == NULL || a->pValue == NULL || a->ulValueLen != sizeof(CK_BBOOL))
		return false;
	*out = *(const CK_BBOOL *)a->pValue != CK_FALSE;
	return true;
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
		if (edwards_mech && ec->ulValueLen == sizeof(edwards25519_name) &&
		    hsm_ct_equal(ec->pValue, edwards25519_name, sizeof(edwards25519_name))) {
			*spec = HSM_SPEC_ECC_NIST_EDWARDS25519;
			return CKR_OK;
		}
		for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
			if (ec->ulValueLen == curves[i].len &&
			    hsm_ct_equal(ec->pValue, curves[i].der, curves[i].len)) {
				bool edwards = curves[i].spec == HSM_SPEC_ECC_NIST_EDWARDS25519;
				if (edwards != edwards_mech)
					return CKR_TEMPLATE_INCONSISTENT; /* the curve is the other mechanism's */
				*spec = curves[i].spec;
				return CKR_OK;
			}
		return CKR_CURVE_NOT_SUPPORTED;
	}
	return CKR_MECHANISM_INVALID;
}

/* A label usable as a KMS alias name (alias/<label>). */
static CK_RV pair_label(const CK_ATTRIBUTE *a, char *out, size_t cap)
{
	out[0] = '\0';
	if (a == NULL)
		return CKR_OK;
	if (a->pValue == NULL || a->ulValueLen == 0 || a->ulValueLen > 200 || a->ulValueLen >= cap)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	const char *p = a->pValue;
	for (CK_ULONG i = 0; i < a->ulValueLen; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
		      (p[i] >= '0' && p[i] <= '9') || strchr("/_-", p[i]) != NULL) ||
		    p[i] == '\0')
			return CKR_ATTRIBUTE_VALUE_INVALID;
	memcpy(out, p, a->ulValueLen);
	out[a->ulValueLen] = '\0';
	return hsm_str_has_prefix(out, "aws/") ? CKR_ATTRIBUTE_VALUE_INVALID : CKR_OK;
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
	if (decrypt && !is_rsa(spec))
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

/* One alias a key: the two templates' labels, when both are given, are the same. */
static CK_RV pair_label_attr(const CK_ATTRIBUTE *pub, CK_ULONG n_pub, const CK_ATTRIBUTE *priv,
                             CK_ULONG n_priv, const CK_ATTRIBUTE **label)
{
	const CK_ATTRIBUTE *a = p11_attr_find(pub, n_pub, CKA_LABEL);
	const CK_ATTRIBUTE *b = p11_attr_find(priv, n_priv, CKA_LABEL);
	*label = b != NULL ? b : a;
	if (a == NULL || b == NULL)
		return CKR_OK;
	return a->ulValueLen == b->ulValueLen &&
	               (a->ulValueLen == 0 || hsm_ct_equal(a->pValue, b->pValue, a->ulValueLen))
	           ? CKR_OK
	           : CKR_TEMPLATE_INCONSISTENT;
}

/*
 * Makes a key in hsmd (CreateKey, and CreateAlias for a label), then reads
 * the objects again.  A key whose alias cannot be made goes again: no
 * half-made key stays.
 */
static CK_RV make_key(hsm_key_spec spec, hsm_key_usage usage, const char *label,
                      char key_id[HSM_UUID_STRLEN + 1])
{
	json_t *ans = NULL;
	CK_RV rv = p11_call("TrentService.CreateKey",
	                    json_pack("{s:s,s:s,s:s}", "KeySpec", hsm_spec_name(spec), "KeyUsage",
	                              hsm_usage_name(usage), "Description", "made through PKCS#11"),
	                    &ans);
	key_id[0] = '\0';
	const char *id = json_string_value(json_object_get(json_object_get(ans, "KeyMetadata"), "KeyId"));
	if (rv == CKR_OK && (id == NULL || !hsm_is_uuid(id)))
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK)
		snprintf(key_id, HSM_UUID_STRLEN + 1, "%s", id);
	json_decref(ans);
	if (rv == CKR_OK && label[0] != '\0') {
		char alias[P11_LABEL_MAX + 8];
		snprintf(alias, sizeof(alias), "alias/%s", label);
		rv = p11_call("TrentService.CreateAlias",
		              json_pack("{s:s,s:s}", "AliasName", alias, "TargetKeyId", key_id), &ans);
		json_decref(ans);
		if (rv != CKR_OK) {
			(void)schedule_deletion(key_id);
			rv = CKR_ATTRIBUTE_VALUE_INVALID; /* the label: taken, or not an alias name */
		}
	}
	return rv == CKR_OK ? p11_objects_refresh() : rv;
}

CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR pub,
                        CK_ULONG n_pub, CK_ATTRIBUTE_PTR priv, CK_ULONG n_priv,
                        CK_OBJECT_HANDLE_PTR pub_out, CK_OBJECT_HANDLE_PTR priv_out)
{
	if (mech == NULL || pub_out == NULL || priv_out == NULL || (pub == NULL && n_pub > 0) ||
	    (priv == NULL && n_priv > 0))
		return CKR_ARGUMENTS_BAD;
	ENTER();
	hsm_key_spec spec;
	char label[P11_LABEL_MAX + 1];
	hsm_key_usage usage;
	const CK_ATTRIBUTE *l = NULL;
	CK_KEY_TYPE kt = pair_key_type(mech->mechanism);
	/* Every check before CreateKey: a template refused makes no key. */
	CK_RV rv = p11_user_session(h);
	if (rv == CKR_OK)
		rv = rw_session(h);
	if (rv == CKR_OK && kt == CK_UNAVAILABLE_INFORMATION)
		rv = CKR_MECHANISM_INVALID;
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
		rv = pair_label_attr(pub, n_pub, priv, n_priv, &l);
	if (rv == CKR_OK)
		rv = pair_label(l, label, sizeof(label));
	if (rv != CKR_OK)
		LEAVE(rv);
	char key_id[HSM_UUID_STRLEN + 1];
	rv = make_key(spec, usage, label, key_id);
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

bool p11_attr_ulong(const CK_ATTRIBUTE *a, CK_ULONG *out)
{
	if (a == NULL)
		return true;
	if (a->pValue == NULL || a->ulValueLen != sizeof(CK_ULONG))
		return false;
	*out = *(const CK_ULONG *)a->pValue;
	return true;
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
	if (mech == NULL || out == NULL || (t == NULL && n > 0))
		return CKR_ARGUMENTS_BAD;
	ENTER();
	hsm_key_spec spec;
	hsm_key_usage usage;
	char label[P11_LABEL_MAX + 1];
	CK_KEY_TYPE kt = mech->mechanism == CKM_AES_KEY_GEN              ? CKK_AES
	                 : mech->mechanism == CKM_GENERIC_SECRET_KEY_GEN ? CKK_GENERIC_SECRET
	                                                                 : CK_UNAVAILABLE_INFORMATION;
	/* Every check before CreateKey: a template refused makes no key. */
	CK_RV rv = p11_user_session(h);
	if (rv == CKR_OK)
		rv = rw_session(h);
	if (rv == CKR_OK && kt == CK_UNAVAILABLE_INFORMATION)
		rv = CKR_MECHANISM_INVALID;
	if (rv == CKR_OK)
		rv = p11_template_check(t, n, CKO_SECRET_KEY, kt);
	if (rv == CKR_OK)
		rv = secret_spec(mech->mechanism, t, n, &spec, &usage);
	if (rv == CKR_OK)
		rv = pair_label(p11_attr_find(t, n, CKA_LABEL), label, sizeof(label));
	if (rv != CKR_OK)
		LEAVE(rv);
	char key_id[HSM_UUID_STRLEN + 1];
	rv = make_key(spec, usage, label, key_id);
	const p11_object *o = rv == CKR_OK ? p11_object_of(key_id, CKO_SECRET_KEY) : NULL;
	if (rv == CKR_OK && o == NULL)
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK)
		*out = o->handle;
	LEAVE(rv);
}
