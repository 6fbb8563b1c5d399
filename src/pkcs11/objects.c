/*
 * objects.c - hsmd's keys as token objects (p11.h).
 *
 * After login, and again at each C_FindObjectsInit, the module lists the
 * user's view of hsmd's keys (ListAliases, and HsmdToken.DescribeKeys: a
 * page of keys with their metadata and public keys; from an older node,
 * ListKeys, DescribeKey and GetPublicKey).  Enabled keys become objects (a
 * key disabled, pending import or deletion, or one hsmd refuses to describe
 * to this user, is left out; the listing fails only where hsmd does not
 * answer it at all):
 *   - SIGN_VERIFY RSA, NIST/secp256k1 EC and Ed25519 keys: a private key
 *     object (sign) and a public key object (verify, with the public values);
 *     a key marked for JWT signing, whose Sign hsmd refuses, verifies only;
 *   - ENCRYPT_DECRYPT RSA keys: the same pair for decryption and encryption;
 *   - KEY_AGREEMENT EC keys: a private key object (CKA_DERIVE: ECDH with
 *     C_DeriveKey, derive.c) and a public key object, for its public values;
 *   - HMAC keys: a secret key object (sign and verify a MAC);
 *   - SYMMETRIC_DEFAULT keys: an AES secret key object (CKM_AES_GCM, crypt.c).
 * CKA_ID is the key's own when an alias gives it one (HSM_PKCS11_ID_ALIAS
 * and the id in hex: what a CKA_ID in a generation template makes), else
 * the key id; CKA_LABEL is its first other alias without "alias/" (or the
 * key id).  A key keeps its handles across listings.  Private values are
 * never in hsmd's answers: CKA_VALUE and the like are CKR_ATTRIBUTE_SENSITIVE.
 * Secrets derived with C_DeriveKey are session objects in the same table,
 * kept across listings and dropped when their session closes.
 */
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "common/encoding.h"
#include "pkcs11/p11.h"

/* ---- the object table ---------------------------------------------------------------------- */

/* The index of the table by key id and class (p11_object_of, below). */
static size_t *obj_index;
static size_t obj_index_cap; /* a power of 2, at least twice the objects indexed; 0: none */
static bool obj_index_stale = true;
static void obj_index_forget(void);

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
	obj_index_forget();
}

void p11_objects_clear(void)
{
	for (size_t i = 0; i < p11.n_objects; i++)
		object_free(&p11.objects[i]);
	free(p11.objects);
	p11.objects = NULL;
	p11.n_objects = p11.cap_objects = 0;
	free(obj_index);
	obj_index = NULL;
	obj_index_cap = 0;
	obj_index_forget();
	free(p11.made);
	p11.made = NULL;
	p11.n_made = 0;
}

const CK_ATTRIBUTE_TYPE p11_use_attrs[P11_USES] = {CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY,
                                                  CKA_WRAP,    CKA_UNWRAP,  CKA_DERIVE};

/*
 * The table is in handle order (p11_object_new appends the next handle, and
 * every removal keeps the order), so a handle is found by bisection; and an
 * index by key id and class (open addressing, positions + 1) finds a key's
 * object without a walk of the table, which made a listing of n keys cost
 * n^2/2 string compares.  Any removal marks the index stale: the next lookup
 * builds it again.
 */

static size_t obj_hash(const char *key_id, CK_OBJECT_CLASS cls)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)cls;
	for (const unsigned char *p = (const unsigned char *)key_id; *p != '\0'; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return (size_t)h;
}

static void obj_index_put(size_t pos)
{
	const p11_object *o = &p11.objects[pos];
	size_t m = obj_index_cap - 1;
	for (size_t i = obj_hash(o->key_id, o->cls) & m;; i = (i + 1) & m)
		if (obj_index[i] == 0) {
			obj_index[i] = pos + 1;
			return;
		}
}

/* Builds the index for n objects; false (no index: lookups walk the table) without memory. */
static bool obj_index_build(size_t n)
{
	size_t cap = 64;
	while (cap < 2 * n + 2)
		cap *= 2;
	if (cap != obj_index_cap) {
		size_t *v = realloc(obj_index, cap * sizeof(*v));
		if (v == NULL)
			return false;
		obj_index = v;
		obj_index_cap = cap;
	}
	memset(obj_index, 0, obj_index_cap * sizeof(*obj_index));
	for (size_t i = 0; i < p11.n_objects; i++)
		obj_index_put(i);
	obj_index_stale = false;
	return true;
}

static void obj_index_forget(void)
{
	obj_index_stale = true;
}

p11_object *p11_object_get(CK_OBJECT_HANDLE h)
{
	size_t lo = 0, hi = p11.n_objects;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (p11.objects[mid].handle < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < p11.n_objects && p11.objects[lo].handle == h ? &p11.objects[lo] : NULL;
}

p11_object *p11_key_get(CK_OBJECT_HANDLE h)
{
	p11_object *o = p11_object_get(h);
	return o != NULL && o->cls != CKO_CERTIFICATE ? o : NULL;
}

p11_object *p11_object_of(const char *key_id, CK_OBJECT_CLASS cls)
{
	if (obj_index_stale && !obj_index_build(p11.n_objects)) {
		for (size_t i = 0; i < p11.n_objects; i++)
			if (p11.objects[i].cls == cls && strcmp(p11.objects[i].key_id, key_id) == 0)
				return &p11.objects[i];
		return NULL;
	}
	size_t m = obj_index_cap - 1;
	for (size_t i = obj_hash(key_id, cls) & m; obj_index[i] != 0; i = (i + 1) & m) {
		p11_object *o = &p11.objects[obj_index[i] - 1];
		if (o->cls == cls && strcmp(o->key_id, key_id) == 0)
			return o;
	}
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
	if (!obj_index_stale) {
		if (2 * p11.n_objects + 2 > obj_index_cap)
			obj_index_forget(); /* built again, larger, at the next lookup */
		else
			obj_index_put(p11.n_objects - 1);
	}
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

/* Drops the objects matching: the one with this handle, the session objects of a session. */
static void objects_drop(CK_OBJECT_HANDLE handle, CK_SESSION_HANDLE owner)
{
	size_t j = 0;
	for (size_t i = 0; i < p11.n_objects; i++) {
		p11_object *o = &p11.objects[i];
		if ((handle != CK_INVALID_HANDLE && o->handle == handle) ||
		    (o->derived && owner != CK_INVALID_HANDLE && o->owner == owner))
			object_free(o);
		else
			p11.objects[j++] = *o;
	}
	p11.n_objects = j;
	obj_index_forget();
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
	obj_index_forget();
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
	size_t point_len; /* the public key's bytes: an uncompressed point, Ed25519's 32 */
} curves[] = {
    {HSM_SPEC_ECC_NIST_P256, "prime256v1", {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}, 10, 65},
    {HSM_SPEC_ECC_NIST_P384, "secp384r1", {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}, 7, 97},
    {HSM_SPEC_ECC_NIST_P521, "secp521r1", {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23}, 7, 133},
    {HSM_SPEC_ECC_SECG_P256K1, "secp256k1", {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a}, 7, 65},
    /* id-Ed25519 (RFC 8410); key generation also takes PrintableString "edwards25519". */
    {HSM_SPEC_ECC_NIST_EDWARDS25519, "ED25519", {0x06, 0x03, 0x2b, 0x65, 0x70}, 5, 32},
};
static const uint8_t edwards25519_name[] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r', 'd', 's',
                                            '2',  '5',  '5', '1', '9'};

CK_RV p11_curve_spec(const void *params, size_t len, bool edwards_mech, hsm_key_spec *spec)
{
	if (edwards_mech && len == sizeof(edwards25519_name) &&
	    hsm_ct_equal(params, edwards25519_name, sizeof(edwards25519_name))) {
		*spec = HSM_SPEC_ECC_NIST_EDWARDS25519;
		return CKR_OK;
	}
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (len == curves[i].len && hsm_ct_equal(params, curves[i].der, curves[i].len)) {
			bool edwards = curves[i].spec == HSM_SPEC_ECC_NIST_EDWARDS25519;
			if (edwards != edwards_mech)
				return CKR_TEMPLATE_INCONSISTENT; /* the curve is the other mechanism's */
			*spec = curves[i].spec;
			return CKR_OK;
		}
	return CKR_CURVE_NOT_SUPPORTED;
}

static const struct curve *curve_of(hsm_key_spec spec)
{
	for (size_t i = 0; i < sizeof(curves) / sizeof(curves[0]); i++)
		if (curves[i].spec == spec)
			return &curves[i];
	return NULL;
}

/* One element of a generic ASN.1 SEQUENCE, of the given type (NULL when not). */
static const ASN1_TYPE *element(const ASN1_SEQUENCE_ANY *seq, int i, int type)
{
	const ASN1_TYPE *t = sk_ASN1_TYPE_value(seq, i);
	return t != NULL && t->type == type ? t : NULL;
}

/* A DER item that fills its whole buffer, read as a generic SEQUENCE. */
static ASN1_SEQUENCE_ANY *whole_sequence(const unsigned char *der, int len, int n_elements)
{
	const unsigned char *p = der;
	ASN1_SEQUENCE_ANY *seq = d2i_ASN1_SEQUENCE_ANY(NULL, &p, len);
	if (seq != NULL && (p != der + len || sk_ASN1_TYPE_num(seq) != n_elements)) {
		sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
		seq = NULL;
	}
	return seq;
}

/* A positive INTEGER's magnitude, big-endian, into out; *bits its length in bits. */
static CK_RV put_integer(const ASN1_TYPE *t, hsm_buf *out, CK_ULONG *bits)
{
	if (t == NULL || ASN1_STRING_type(t->value.integer) != V_ASN1_INTEGER)
		return CKR_DEVICE_ERROR;
	BIGNUM *bn = ASN1_INTEGER_to_BN(t->value.integer, NULL);
	if (bn == NULL)
		return CKR_DEVICE_ERROR;
	uint8_t *p;
	size_t n = (size_t)BN_num_bytes(bn);
	CK_RV rv = n == 0                                             ? CKR_DEVICE_ERROR
	           : hsm_ok(hsm_buf_append_space(out, n, &p)) ? CKR_OK
	                                                      : CKR_HOST_MEMORY;
	if (rv == CKR_OK)
		BN_bn2bin(bn, p);
	if (bits != NULL)
		*bits = (CK_ULONG)BN_num_bits(bn);
	BN_free(bn);
	return rv;
}

/* RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER } */
static CK_RV rsa_values(p11_object *o, const ASN1_BIT_STRING *key)
{
	ASN1_SEQUENCE_ANY *seq = whole_sequence(key->data, key->length, 2);
	if (seq == NULL)
		return CKR_DEVICE_ERROR;
	CK_RV rv = put_integer(element(seq, 0, V_ASN1_INTEGER), &o->modulus, &o->modulus_bits);
	if (rv == CKR_OK)
		rv = put_integer(element(seq, 1, V_ASN1_INTEGER), &o->exponent, NULL);
	sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
	return rv;
}

/* CKA_EC_POINT (the point as a DER OCTET STRING) and CKA_EC_PARAMS of curve c. */
static CK_RV ec_values(p11_object *o, const struct curve *c, const ASN1_BIT_STRING *key)
{
	size_t n = (size_t)key->length;
	bool edwards = c->spec == HSM_SPEC_ECC_NIST_EDWARDS25519; /* the point is the key itself */
	if (n != c->point_len || (!edwards && key->data[0] != 0x04)) /* uncompressed */
		return CKR_DEVICE_ERROR;
	if (hsm_failed(hsm_buf_put_u8(&o->ec_point, 0x04)) ||
	    (n >= 128 && hsm_failed(hsm_buf_put_u8(&o->ec_point, 0x81))) ||
	    hsm_failed(hsm_buf_put_u8(&o->ec_point, (uint8_t)n)) ||
	    hsm_failed(hsm_buf_put(&o->ec_point, key->data, n)) ||
	    hsm_failed(hsm_buf_put(&o->ec_params, c->der, c->len)))
		return CKR_HOST_MEMORY;
	return CKR_OK;
}

/*
 * The public values of o from its SubjectPublicKeyInfo (RFC 5280: SEQUENCE
 * { AlgorithmIdentifier, BIT STRING }), which must be one of o's spec.  Read
 * with OpenSSL's ASN.1 parser alone, making no EVP_PKEY: OpenSSL 3.0's
 * decoders look their providers up again for every key (about half a
 * millisecond each, which a login paid for every key the token shows), and
 * d2i_PUBKEY, in an application that made an engine the default for RSA and
 * EC keys (as `openssl req -engine pkcs11` does with OpenSSL's pkcs11
 * engine, which may be this module's own caller), gives a key of the
 * engine's.
 */
static CK_RV parse_values(p11_object *o)
{
	hsm_buf_clear(&o->modulus);
	hsm_buf_clear(&o->exponent);
	hsm_buf_clear(&o->ec_params);
	hsm_buf_clear(&o->ec_point);
	if (o->spki.len == 0 || o->spki.len > INT_MAX)
		return CKR_DEVICE_ERROR;
	ASN1_SEQUENCE_ANY *spki = whole_sequence(o->spki.data, (int)o->spki.len, 2);
	const ASN1_TYPE *alg_t = spki != NULL ? element(spki, 0, V_ASN1_SEQUENCE) : NULL;
	const ASN1_TYPE *key_t = spki != NULL ? element(spki, 1, V_ASN1_BIT_STRING) : NULL;
	X509_ALGOR *alg = NULL;
	if (alg_t != NULL) {
		const unsigned char *p = alg_t->value.sequence->data;
		alg = d2i_X509_ALGOR(NULL, &p, alg_t->value.sequence->length);
		if (alg != NULL && p != alg_t->value.sequence->data + alg_t->value.sequence->length) {
			X509_ALGOR_free(alg);
			alg = NULL;
		}
	}
	CK_RV rv = CKR_DEVICE_ERROR;
	const ASN1_BIT_STRING *key = key_t != NULL ? key_t->value.bit_string : NULL;
	/* Whole bytes only: a key's bits are never a part of one. */
	if (alg != NULL && key != NULL && key->length > 0 &&
	    !((key->flags & ASN1_STRING_FLAG_BITS_LEFT) != 0 && (key->flags & 0x07) != 0)) {
		const ASN1_OBJECT *obj;
		const void *param;
		int ptype;
		X509_ALGOR_get0(&obj, &ptype, &param, alg);
		int nid = OBJ_obj2nid(obj);
		const struct curve *c = curve_of(o->spec);
		if (o->key_type == CKK_RSA && nid == NID_rsaEncryption &&
		    (ptype == V_ASN1_NULL || ptype == V_ASN1_UNDEF))
			rv = rsa_values(o, key);
		else if (o->key_type == CKK_EC && c != NULL && nid == NID_X9_62_id_ecPublicKey &&
		         ptype == V_ASN1_OBJECT && OBJ_obj2nid(param) == OBJ_sn2nid(c->group))
			rv = ec_values(o, c, key);
		else if (o->key_type == CKK_EC_EDWARDS && c != NULL && nid == NID_ED25519 &&
		         ptype == V_ASN1_UNDEF)
			rv = ec_values(o, c, key);
	}
	X509_ALGOR_free(alg);
	sk_ASN1_TYPE_pop_free(spki, ASN1_TYPE_free);
	return rv;
}

/*
 * The public values of o from its SubjectPublicKeyInfo: CKR_HOST_MEMORY when
 * memory ran out on the way, CKR_DEVICE_ERROR when hsmd's answer held no
 * such key.
 */
static CK_RV parse_public(p11_object *o)
{
	p11_ossl_watch();
	CK_RV rv = parse_values(o);
	if (p11_ossl_ran_out()) /* even when it worked: a parser short of memory is not trusted */
		rv = CKR_HOST_MEMORY;
	return rv;
}

/* ---- listing --------------------------------------------------------------------------------- */

/* The aliases (of one key, or of all with key_id NULL) into all, by the key they name. */
static CK_RV list_aliases(json_t *all, const char *key_id)
{
	const char *marker = NULL;
	json_t *ans = NULL;
	for (;;) {
		/* A filter or marker left out would list other aliases: none is. */
		json_t *body = json_pack("{s:i}", "Limit", 100);
		if (body == NULL || (key_id != NULL && !p11_set(body, "KeyId", json_string(key_id))) ||
		    (marker != NULL && !p11_set(body, "Marker", json_string(marker)))) {
			json_decref(body);
			json_decref(ans);
			return CKR_HOST_MEMORY;
		}
		json_decref(ans);
		CK_RV rv = p11_call("TrentService.ListAliases", body, &ans);
		if (rv != CKR_OK)
			return rv;
		/* Grouped by the key they name (all: key id -> its aliases, in listing order). */
		size_t i;
		json_t *a;
		json_array_foreach(json_object_get(ans, "Aliases"), i, a) {
			const char *target = json_string_value(json_object_get(a, "TargetKeyId"));
			if (target == NULL)
				continue;
			json_t *mine = json_object_get(all, target);
			if (mine == NULL && (json_object_set_new(all, target, mine = json_array()) != 0 ||
			                     mine == NULL)) {
				json_decref(ans);
				return CKR_HOST_MEMORY;
			}
			if (json_array_append(mine, a) != 0) {
				json_decref(ans);
				return CKR_HOST_MEMORY;
			}
		}
		marker = json_string_value(json_object_get(ans, "NextMarker"));
		if (!json_is_true(json_object_get(ans, "Truncated")) || marker == NULL)
			break;
	}
	json_decref(ans);
	return CKR_OK;
}

/*
 * A key's label and CKA_ID from its aliases: the label is its first alias
 * (without "alias/") that does not give it a CKA_ID, else its key id; the
 * CKA_ID is what its first HSM_PKCS11_ID_ALIAS alias spells, else empty (the key id).
 */
static void names_of(json_t *aliases, const char *key_id, char *label, size_t cap, hsm_buf *id)
{
	size_t i;
	json_t *a;
	bool labelled = false, identified = false;
	hsm_buf_clear(id);
	json_array_foreach(json_object_get(aliases, key_id), i, a) {
		const char *target = json_string_value(json_object_get(a, "TargetKeyId"));
		const char *name = json_string_value(json_object_get(a, "AliasName"));
		if (target == NULL || name == NULL || strcmp(target, key_id) != 0)
			continue;
		if (hsm_str_has_prefix(name, HSM_PKCS11_ID_ALIAS)) {
			if (!identified)
				identified = hsm_pkcs11_id_of_alias(name, id);
		} else if (!labelled) {
			snprintf(label, cap, "%s", hsm_str_has_prefix(name, "alias/") ? name + 6 : name);
			labelled = true;
		}
	}
	if (!labelled)
		snprintf(label, cap, "%s", key_id);
}

static bool is_hmac(hsm_key_spec s)
{
	return s == HSM_SPEC_HMAC_224 || s == HSM_SPEC_HMAC_256 || s == HSM_SPEC_HMAC_384 ||
	       s == HSM_SPEC_HMAC_512;
}

bool p11_spec_is_rsa(hsm_key_spec s)
{
	return s == HSM_SPEC_RSA_2048 || s == HSM_SPEC_RSA_3072 || s == HSM_SPEC_RSA_4096;
}

/* What DescribeKey said of a key, for each of its objects. */
typedef struct key_desc {
	hsm_key_spec spec;
	hsm_key_usage usage;
	bool external; /* Origin EXTERNAL: material imported, not made in hsmd */
	bool jwt;      /* marked for JWT signing: no signing through the token */
} key_desc;

static CK_RV upsert(const char *key_id, CK_OBJECT_CLASS cls, const key_desc *kd, CK_KEY_TYPE kt,
                    const char *label, const hsm_buf *id, const hsm_buf *spki)
{
	hsm_key_spec spec = kd->spec;
	hsm_key_usage usage = kd->usage;
	p11_object *o = p11_object_of(key_id, cls);
	if (o == NULL && (o = p11_object_new(key_id, cls)) == NULL)
		return CKR_HOST_MEMORY;
	o->seen = true;
	o->external = kd->external;
	o->jwt = kd->jwt;
	o->spec = spec;
	o->usage = usage;
	o->key_type = kt;
	snprintf(o->label, sizeof(o->label), "%s", label);
	if (hsm_failed(hsm_buf_set(&o->id, id->data, id->len)))
		return CKR_HOST_MEMORY;
	if (spki == NULL)
		return CKR_OK;
	/* A key's public key does not change: read again, it is not decoded again (a
	 * listing reads every key's, and OpenSSL's decoders are most of its cost). */
	if (o->parsed && o->key_type == kt && o->spki.len == spki->len &&
	    hsm_ct_equal(o->spki.data, spki->data, spki->len))
		return CKR_OK;
	o->parsed = false;
	if (hsm_failed(hsm_buf_set(&o->spki, spki->data, spki->len)))
		return CKR_HOST_MEMORY;
	CK_RV rv = parse_public(o);
	o->parsed = rv == CKR_OK;
	return rv;
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
 * A secret key's CKA_CHECK_VALUE (hsmd's GetKeyCheckValue: for AES the
 * specification's encryption of a zero block, for HMAC the first bytes of
 * the key's SHA-1), of its current material: read when first asked for
 * after a listing (a read or a search naming it), so it follows a rotation
 * at the next listing, and a listing costs no request per secret key.  A
 * policy that denies it, or a node that does not offer it, leaves the key
 * without one (CKR_ATTRIBUTE_TYPE_INVALID), not out of the token.
 */
static CK_RV load_check_value(const char *key_id, hsm_buf *check)
{
	json_t *ans = NULL;
	CK_RV rv = p11_call("HsmdCipher.GetKeyCheckValue", json_pack("{s:s}", "KeyId", key_id), &ans);
	const char *hex = json_string_value(json_object_get(ans, "KeyCheckValue"));
	char low[7] = ""; /* uppercase in the answer, as check values are written down */
	for (size_t i = 0; hex != NULL && i < sizeof(low) - 1 && hex[i] != '\0'; i++)
		low[i] = (char)tolower((unsigned char)hex[i]);
	hsm_buf_clear(check);
	if (rv == CKR_OK && (hex == NULL || strlen(hex) != 6 ||
	                     hsm_failed(hsm_hex_decode(check, low, 6, HSM_ERR_VALIDATION)))) {
		hsm_buf_clear(check);
		rv = CKR_DEVICE_ERROR; /* an answer without what it answers */
	}
	json_decref(ans);
	/* FUNCTION_NOT_SUPPORTED: a node older than the module, without the operation. */
	return refused_key(rv) || rv == CKR_FUNCTION_NOT_SUPPORTED ? CKR_OK : rv;
}

CK_RV p11_object_read_check(p11_object *o)
{
	if (!o->check_unread)
		return CKR_OK;
	CK_RV rv = load_check_value(o->key_id, &o->check);
	if (rv == CKR_OK)
		o->check_unread = false;
	return rv;
}

/*
 * Makes the objects of one key from what DescribeKey answers of it (md), if
 * it is one this token shows: Enabled (a disabled key, one pending import
 * or deletion is not listed), of a spec and usage the module knows, and
 * readable by this user.  entry: a DescribeKeys entry, whose PublicKey is
 * absent where GetPublicKey would have been refused; NULL: GetPublicKey is
 * asked here.
 */
static CK_RV add_key(const char *key_id, json_t *md, json_t *aliases, json_t *entry)
{
	CK_RV rv = CKR_OK;
	const char *state = json_string_value(json_object_get(md, "KeyState"));
	const char *spec_name = json_string_value(json_object_get(md, "KeySpec"));
	const char *usage_name = json_string_value(json_object_get(md, "KeyUsage"));
	const char *origin = json_string_value(json_object_get(md, "Origin"));
	hsm_key_spec spec;
	hsm_key_usage usage;
	char label[P11_LABEL_MAX + 1];
	hsm_buf spki = {0}, id = {0};
	if (state == NULL || spec_name == NULL || usage_name == NULL ||
	    hsm_failed(hsm_spec_parse(spec_name, &spec)) ||
	    hsm_failed(hsm_usage_parse(usage_name, &usage)) || strcmp(state, "Enabled") != 0)
		goto out; /* not an object of this token */
	names_of(aliases, key_id, label, sizeof(label), &id);
	/* From an entry only: DescribeKey, AWS's, does not say (a node older than the
	 * member neither: such a key's signatures then fail at C_Sign, as hsmd refuses them). */
	key_desc kd = {spec, usage, origin != NULL && strcmp(origin, "EXTERNAL") == 0,
	               json_is_true(json_object_get(entry, "JwtSigningEnabled"))};
	if ((usage == HSM_USAGE_GENERATE_VERIFY_MAC && is_hmac(spec)) ||
	    (usage == HSM_USAGE_ENCRYPT_DECRYPT && spec == HSM_SPEC_SYMMETRIC_DEFAULT)) {
		CK_KEY_TYPE kt = is_hmac(spec) ? CKK_GENERIC_SECRET : CKK_AES;
		rv = upsert(key_id, CKO_SECRET_KEY, &kd, kt, label, &id, NULL);
		if (rv == CKR_OK) {
			p11_object *o = p11_object_of(key_id, CKO_SECRET_KEY);
			hsm_buf_clear(&o->check);
			o->check_unread = true;
		}
	} else if ((usage == HSM_USAGE_SIGN_VERIFY && (p11_spec_is_rsa(spec) || curve_of(spec) != NULL)) ||
	           (usage == HSM_USAGE_ENCRYPT_DECRYPT && p11_spec_is_rsa(spec)) ||
	           (usage == HSM_USAGE_KEY_AGREEMENT && curve_of(spec) != NULL)) {
		if (entry == NULL) {
			json_t *pub = NULL;
			rv = p11_call("TrentService.GetPublicKey", json_pack("{s:s}", "KeyId", key_id), &pub);
			if (rv == CKR_OK)
				rv = p11_b64_member(pub, "PublicKey", &spki);
			json_decref(pub);
		} else if (json_object_get(entry, "PublicKey") != NULL) {
			rv = p11_b64_member(entry, "PublicKey", &spki);
		} else {
			rv = CKR_ACTION_PROHIBITED; /* GetPublicKey would have been refused */
		}
		if (refused_key(rv)) { /* disabled or refused since DescribeKey: not listed */
			rv = CKR_OK;
			goto out;
		}
		CK_KEY_TYPE kt = p11_spec_is_rsa(spec)                             ? CKK_RSA
		                 : spec == HSM_SPEC_ECC_NIST_EDWARDS25519 ? CKK_EC_EDWARDS
		                                                          : CKK_EC;
		if (rv == CKR_OK)
			rv = upsert(key_id, CKO_PRIVATE_KEY, &kd, kt, label, &id, &spki);
		if (rv == CKR_OK)
			rv = upsert(key_id, CKO_PUBLIC_KEY, &kd, kt, label, &id, &spki);
	}
out:
	hsm_buf_free(&spki);
	hsm_buf_free(&id);
	return rv;
}

/* One key, read with DescribeKey (and GetPublicKey): from a node older than the module. */
static CK_RV load_key_described(const char *key_id, json_t *aliases)
{
	json_t *ans = NULL;
	CK_RV rv = p11_call("TrentService.DescribeKey", json_pack("{s:s}", "KeyId", key_id), &ans);
	if (rv == CKR_OK)
		rv = add_key(key_id, json_object_get(ans, "KeyMetadata"), aliases, NULL);
	else if (refused_key(rv))
		rv = CKR_OK;
	json_decref(ans);
	return rv;
}

/*
 * One key, with HsmdToken.DescribeKeys of it alone (KeyId): its metadata,
 * public key and JWT mark in one request.  A node older than that member
 * ignores it and answers the first page of every key (Limit 1 keeps it
 * short): an entry of another key, or an empty page with more to come, says
 * so, and the key is read with DescribeKey as from a node without the
 * operation.  An empty last page is a key this user does not see.
 */
static CK_RV load_key(const char *key_id, json_t *aliases)
{
	json_t *ans = NULL;
	CK_RV rv = p11_call("HsmdToken.DescribeKeys",
	                    json_pack("{s:s,s:i}", "KeyId", key_id, "Limit", 1), &ans);
	bool older = rv == CKR_FUNCTION_NOT_SUPPORTED;
	if (rv == CKR_OK) {
		json_t *keys = json_object_get(ans, "Keys");
		json_t *entry = json_array_get(keys, 0);
		json_t *md = json_object_get(entry, "KeyMetadata");
		const char *id = json_string_value(json_object_get(md, "KeyId"));
		if (id != NULL && strcmp(id, key_id) == 0)
			rv = add_key(key_id, md, aliases, entry);
		else
			older = json_array_size(keys) > 0 || json_is_true(json_object_get(ans, "Truncated"));
	} else if (refused_key(rv)) {
		rv = CKR_OK;
	}
	json_decref(ans);
	return older ? load_key_described(key_id, aliases) : rv;
}

/*
 * The keys HSM_PKCS11_KEYS names, each resolved now (an alias that moved
 * shows the key it names today); a name that names no key shows nothing.
 * Then the keys this module made since C_Initialize (p11_objects_add_made).
 */
static CK_RV load_view(json_t *aliases)
{
	CK_RV rv = CKR_OK;
	const char *p = p11.keys;
	while (rv == CKR_OK && *p != '\0') {
		size_t n = strcspn(p, ",");
		char name[P11_KEY_NAME_MAX + 1], key_id[HSM_UUID_STRLEN + 1] = "";
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
	for (size_t i = 0; rv == CKR_OK && i < p11.n_made; i++)
		rv = load_key(p11.made[i], aliases);
	return rv;
}

/*
 * Asks for the pages of a listing (ListKeys or DescribeKeys, 100 keys a
 * page) and hands each entry of its Keys to each.
 */
static CK_RV load_pages(const char *target, CK_RV (*each)(json_t *entry, json_t *aliases),
                        json_t *aliases)
{
	json_t *ans = NULL;
	char marker[1024] = "";
	CK_RV rv = CKR_OK;
	for (;;) {
		json_t *body = json_pack("{s:i}", "Limit", 100);
		if (body == NULL || (marker[0] != '\0' && !p11_set(body, "Marker", json_string(marker)))) {
			json_decref(body);
			rv = CKR_HOST_MEMORY;
			break;
		}
		json_decref(ans);
		rv = p11_call(target, body, &ans);
		if (rv != CKR_OK)
			break;
		size_t i;
		json_t *k;
		json_array_foreach(json_object_get(ans, "Keys"), i, k) {
			if ((rv = each(k, aliases)) != CKR_OK)
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

static CK_RV load_listed(json_t *entry, json_t *aliases)
{
	const char *id = json_string_value(json_object_get(entry, "KeyId"));
	return id != NULL && hsm_is_uuid(id) ? load_key_described(id, aliases) : CKR_OK;
}

static CK_RV load_described(json_t *entry, json_t *aliases)
{
	json_t *md = json_object_get(entry, "KeyMetadata");
	const char *id = json_string_value(json_object_get(md, "KeyId"));
	return id != NULL && hsm_is_uuid(id) ? add_key(id, md, aliases, entry) : CKR_OK;
}

/*
 * Every key the user sees: DescribeKeys, one request for a page of keys
 * with their metadata and public keys; from a node that does not know it
 * (one older than the module), ListKeys and two requests per key.
 */
static CK_RV load_listing(json_t *aliases)
{
	CK_RV rv = load_pages("HsmdToken.DescribeKeys", load_described, aliases);
	if (rv == CKR_FUNCTION_NOT_SUPPORTED)
		rv = load_pages("TrentService.ListKeys", load_listed, aliases);
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
	json_t *aliases = json_object();
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
 * Whether o is an object of hsmd's key key_id: not a certificate (whose key_id
 * is its certificate id) nor a session object (a derived secret or a session
 * certificate, whose key_id is empty), which only a listing of certificates,
 * or their session, adds or drops.
 */
static bool is_key_of(const p11_object *o, const char *key_id)
{
	return o->cls != CKO_CERTIFICATE && !o->derived && strcmp(o->key_id, key_id) == 0;
}

/* A key's own objects, found by the index: at most one of each class. */
static const CK_OBJECT_CLASS key_classes[] = {CKO_SECRET_KEY, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};

/* Marks a key's objects seen or not (mark), or tells whether one is not seen. */
static bool key_objects(const char *key_id, bool mark, bool seen)
{
	bool unseen = false;
	for (size_t c = 0; c < sizeof(key_classes) / sizeof(key_classes[0]); c++) {
		p11_object *o = p11_object_of(key_id, key_classes[c]);
		if (o == NULL || !is_key_of(o, key_id))
			continue;
		unseen |= !o->seen;
		if (mark)
			o->seen = seen;
	}
	return unseen;
}

/*
 * Reads one key again: what a search naming a key (by CKA_ID, or by a label
 * that is an alias or a key id) needs, in three calls instead of a listing of
 * every key.  A key that is gone or no longer shown loses its objects.
 */
static CK_RV refresh_key(const char *key_id)
{
	key_objects(key_id, true, false);
	json_t *aliases = json_object();
	CK_RV rv = aliases != NULL ? list_aliases(aliases, key_id) : CKR_HOST_MEMORY;
	if (rv == CKR_OK)
		rv = load_key(key_id, aliases);
	json_decref(aliases);
	if (refused_key(rv)) /* no such key (any more), or not one this user may see */
		rv = CKR_OK;
	/*
	 * Outside a refresh every other object is marked seen: only this key's
	 * can go, and the table is walked (and its index built again) only when
	 * one does, not at every search that names a key.
	 */
	if (rv != CKR_OK)
		key_objects(key_id, true, true);
	else if (key_objects(key_id, false, false))
		objects_remove(NULL);
	return rv;
}

/*
 * A key made here is read alone (three calls, not a listing).  Under
 * HSM_PKCS11_KEYS it joins the view: the application sees the keys it
 * makes, at this listing and the next ones.
 */
CK_RV p11_objects_add_made(const char *key_id)
{
	bool view = p11.keys[0] != '\0';
	if (view) {
		void *more = realloc(p11.made, (p11.n_made + 1) * sizeof(*p11.made));
		if (more == NULL)
			return CKR_HOST_MEMORY;
		p11.made = more;
		memcpy(p11.made[p11.n_made++], key_id, HSM_UUID_STRLEN + 1);
	}
	CK_RV rv = refresh_key(key_id);
	if (rv != CKR_OK && view)
		p11.n_made--; /* its maker deletes it */
	return rv;
}

static CK_RV refresh_keys_for(const CK_ATTRIBUTE *tmpl, CK_ULONG count);

CK_RV p11_objects_refresh_for(const CK_ATTRIBUTE *tmpl, CK_ULONG count)
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

bool p11_key_label(const void *label, size_t n)
{
	const uint8_t *p = label;
	if (n < 1 || n > P11_KEY_LABEL_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i]; /* ASCII, whatever the application's locale */
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '/' || c == '_' || c == '-' || c == ':'))
			return false;
	}
	return true;
}

/* Refreshes the keys a search template asks for: the key it names, or every key. */
static CK_RV refresh_keys_for(const CK_ATTRIBUTE *tmpl, CK_ULONG count)
{
	const CK_ATTRIBUTE *id = p11_attr_find(tmpl, count, CKA_ID);
	const CK_ATTRIBUTE *label = p11_attr_find(tmpl, count, CKA_LABEL);
	char name[P11_LABEL_MAX + 8] = "";
	const CK_ATTRIBUTE *named = id != NULL ? id : label;
	if (named == NULL || named->pValue == NULL || named->ulValueLen == 0)
		return refresh_keys();
	/* A label no key can have: hsmd is not asked (one that is not UTF-8 could not even be
	 * sent), and the search matches the objects the module has, such as derived secrets. */
	if (named == label && !p11_key_label(label->pValue, label->ulValueLen))
		return CKR_OK;
	if (named->ulValueLen > P11_LABEL_MAX)
		return refresh_keys();
	memcpy(name, named->pValue, named->ulValueLen);
	name[named->ulValueLen] = '\0';
	/*
	 * A key id names that key (a key without an alias has it as its label).  A
	 * label spelling one may as well be an alias's name ("alias/<a key id>" is a
	 * valid alias name, and the label of the key it names): that key is read too.
	 */
	bool as_key_id = hsm_is_uuid(name);
	if (as_key_id) {
		CK_RV rv = refresh_key(name);
		if (rv != CKR_OK || named == id)
			return rv;
	}
	/*
	 * A label is an alias name without "alias/", a CKA_ID of a key's own
	 * an alias too (HSM_PKCS11_ID_ALIAS): ask hsmd which key it names now.
	 */
	char alias[sizeof(name) + 8];
	if (named == label)
		snprintf(alias, sizeof(alias), "alias/%s", name);
	else if (!hsm_pkcs11_id_alias(id->pValue, id->ulValueLen, alias, sizeof(alias)))
		return CKR_OK; /* longer than any key's own CKA_ID: no key has it */
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
	/*
	 * Keys whose objects had this name before (the alias moved or went) are
	 * read again.  Only hsmd's keys: a certificate or a session object with
	 * the name is no key to read (and reading it as one would drop it).
	 */
	size_t n = 0, cap = 0;
	char (*others)[HSM_UUID_STRLEN + 1] = NULL; /* few: not one a table entry */
	for (size_t i = 0; i < p11.n_objects; i++) {
		const p11_object *o = &p11.objects[i];
		bool had = o->cls != CKO_CERTIFICATE && !o->derived &&
		           (named == id ? o->id.len == id->ulValueLen &&
		                              hsm_ct_equal(o->id.data, id->pValue, o->id.len)
		                        : strcmp(o->label, name) == 0);
		if (!had || strcmp(o->key_id, key_id) == 0 || (as_key_id && strcmp(o->key_id, name) == 0))
			continue; /* read already */
		if (n == cap) {
			void *more = realloc(others, (cap = cap ? 2 * cap : 4) * sizeof(*others));
			if (more == NULL) {
				free(others);
				return CKR_HOST_MEMORY;
			}
			others = more;
		}
		snprintf(others[n++], sizeof(others[0]), "%s", o->key_id);
	}
	rv = CKR_OK;
	for (size_t i = 0; i < n && rv == CKR_OK; i++)
		rv = refresh_key(others[i]);
	free(others);
	return rv;
}

/* ---- destruction --------------------------------------------------------------------------------- */

CK_RV p11_schedule_deletion(const char *key_id)
{
	json_t *ans = NULL;
	CK_RV rv = p11_call("TrentService.ScheduleKeyDeletion",
	                    json_pack("{s:s,s:i}", "KeyId", key_id, "PendingWindowInDays", 7), &ans);
	json_decref(ans);
	return rv;
}

CK_RV p11_rw_session(CK_SESSION_HANDLE h)
{
	const p11_session *s = p11_session_get(h);
	return s != NULL && (s->flags & CKF_RW_SESSION) != 0 ? CKR_OK : CKR_SESSION_READ_ONLY;
}

CK_RV C_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE obj)
{
	ENTER();
	CK_RV rv = p11_user_session(h);
	/* C_DestroyObject's list (PKCS#11 v2.40 5.7) has no CKR_USER_NOT_LOGGED_IN; before
	 * login no object shows (objects.c), so no handle names one. */
	if (rv == CKR_USER_NOT_LOGGED_IN)
		rv = CKR_OBJECT_HANDLE_INVALID;
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
	rv = p11_rw_session(h);
	if (rv != CKR_OK)
		LEAVE(rv);
	if (o->cls == CKO_CERTIFICATE)
		LEAVE(p11_cert_destroy(p11_object_get(obj)));
	/* A public key is part of its key pair: it goes when the private key goes. */
	if (o->cls == CKO_PUBLIC_KEY)
		LEAVE(CKR_ACTION_PROHIBITED);
	char key_id[HSM_UUID_STRLEN + 1];
	snprintf(key_id, sizeof(key_id), "%s", o->key_id);
	rv = p11_schedule_deletion(key_id);
	if (rv == CKR_OK)
		objects_remove(key_id);
	LEAVE(rv);
}
