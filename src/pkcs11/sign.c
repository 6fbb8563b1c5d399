/*
 * sign.c - signing and verification through hsmd (p11.h).
 *
 * Hashing mechanisms (CKM_SHA256_RSA_PKCS, CKM_ECDSA_SHA256, ...) hash the
 * data here, as the data is the caller's and not secret, and send hsmd the
 * digest (Sign with MessageType DIGEST), so there is no bound on its size.
 * CKM_RSA_PKCS takes a DigestInfo, CKM_RSA_PKCS_PSS a digest of the key's
 * hash.  CKM_ECDSA takes a digest of any hash, and CKM_ECDSA_SHA224 ..
 * CKM_ECDSA_SHA512 work with any curve: ECDSA signs the digest's leftmost
 * bits as long as the group order (SEC 1, 4.1.3), so a digest is cut or
 * zero-padded on the left to the length of the curve's own hash, which
 * hsmd then signs as that hash's digest: the same signature (ecdsa_fit).
 * hsmd returns ECDSA signatures in DER, PKCS#11 wants
 * r || s: converted both ways.  HMAC mechanisms and CKM_EDDSA (Ed25519,
 * which hashes inside the signature) send the message itself (GenerateMac,
 * Sign with MessageType RAW; at most 4096 bytes, hsmd's bound).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "common/encoding.h"
#include "crypto/crypto.h"
#include "pkcs11/p11.h"

/* CKF_HW: hsmd performs the mechanism (every one but the digests, computed in the module). */
#define SIGN_VERIFY (CKF_HW | CKF_SIGN | CKF_VERIFY)
#define EC_FLAGS (CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS)
#define RAW_MAX 1024   /* a DigestInfo or a digest */
#define HMAC_MAX 4096  /* hsmd's largest MAC message */
/* Raw mechanisms, whose input is no message, are "single-part" only (PKCS#11 v2.40 Current
 * Mechanisms 2.1.6, 2.1.8, 2.1.10, 2.3.6): no C_SignUpdate, C_EncryptUpdate, ... */
#define ONE_PART true
#define IN_PARTS false

const p11_mech p11_mechs[] = {
    {CKM_RSA_PKCS_KEY_PAIR_GEN, P11_KEYGEN, NULL, 2048, 4096, CKF_HW | CKF_GENERATE_KEY_PAIR,
     IN_PARTS},
    {CKM_EC_KEY_PAIR_GEN, P11_KEYGEN, NULL, 256, 521, CKF_HW | CKF_GENERATE_KEY_PAIR | EC_FLAGS,
     IN_PARTS},
    /* The hashing mechanisms first: a client taking the first RSA mechanism listed
     * (pkcs11-tool --test) gets one that signs any data, not only DigestInfos. */
    {CKM_SHA256_RSA_PKCS, P11_RSA_PKCS, "SHA256", 2048, 4096, SIGN_VERIFY, IN_PARTS},
    {CKM_SHA384_RSA_PKCS, P11_RSA_PKCS, "SHA384", 2048, 4096, SIGN_VERIFY, IN_PARTS},
    {CKM_SHA512_RSA_PKCS, P11_RSA_PKCS, "SHA512", 2048, 4096, SIGN_VERIFY, IN_PARTS},
    {CKM_RSA_PKCS, P11_RSA_PKCS, NULL, 2048, 4096, SIGN_VERIFY, ONE_PART},
    {CKM_RSA_PKCS_PSS, P11_RSA_PSS, NULL, 2048, 4096, SIGN_VERIFY, ONE_PART},
    {CKM_SHA256_RSA_PKCS_PSS, P11_RSA_PSS, "SHA256", 2048, 4096, SIGN_VERIFY, IN_PARTS},
    {CKM_SHA384_RSA_PKCS_PSS, P11_RSA_PSS, "SHA384", 2048, 4096, SIGN_VERIFY, IN_PARTS},
    {CKM_SHA512_RSA_PKCS_PSS, P11_RSA_PSS, "SHA512", 2048, 4096, SIGN_VERIFY, IN_PARTS},
    {CKM_ECDSA, P11_ECDSA, NULL, 256, 521, SIGN_VERIFY | EC_FLAGS, ONE_PART},
    {CKM_ECDSA_SHA224, P11_ECDSA, "SHA224", 256, 521, SIGN_VERIFY | EC_FLAGS, IN_PARTS},
    {CKM_ECDSA_SHA256, P11_ECDSA, "SHA256", 256, 521, SIGN_VERIFY | EC_FLAGS, IN_PARTS},
    {CKM_ECDSA_SHA384, P11_ECDSA, "SHA384", 256, 521, SIGN_VERIFY | EC_FLAGS, IN_PARTS},
    {CKM_ECDSA_SHA512, P11_ECDSA, "SHA512", 256, 521, SIGN_VERIFY | EC_FLAGS, IN_PARTS},
    {CKM_SHA224_HMAC, P11_HMAC, "SHA224", 28, 28, SIGN_VERIFY, IN_PARTS},
    {CKM_SHA256_HMAC, P11_HMAC, "SHA256", 32, 32, SIGN_VERIFY, IN_PARTS},
    {CKM_SHA384_HMAC, P11_HMAC, "SHA384", 48, 48, SIGN_VERIFY, IN_PARTS},
    {CKM_SHA512_HMAC, P11_HMAC, "SHA512", 64, 64, SIGN_VERIFY, IN_PARTS},
    {CKM_EC_EDWARDS_KEY_PAIR_GEN, P11_KEYGEN, NULL, 255, 255, CKF_HW | CKF_GENERATE_KEY_PAIR,
     IN_PARTS},
    {CKM_EDDSA, P11_EDDSA, NULL, 255, 255, SIGN_VERIFY, IN_PARTS},
    {CKM_RSA_PKCS_OAEP, P11_RSA_OAEP, NULL, 2048, 4096, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT,
     ONE_PART},
    {CKM_AES_GCM, P11_AES_GCM, NULL, 32, 32, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT, IN_PARTS},
    {CKM_AES_KEY_GEN, P11_KEYGEN, NULL, 32, 32, CKF_HW | CKF_GENERATE, IN_PARTS},
    /* In bits, as the specification gives this mechanism's range (CKA_VALUE_LEN 28-64 bytes). */
    {CKM_GENERIC_SECRET_KEY_GEN, P11_KEYGEN, NULL, 224, 512, CKF_HW | CKF_GENERATE, IN_PARTS},
    {CKM_SHA_1, P11_DIGEST, "SHA1", 0, 0, CKF_DIGEST, IN_PARTS},
    {CKM_SHA224, P11_DIGEST, "SHA224", 0, 0, CKF_DIGEST, IN_PARTS},
    {CKM_SHA256, P11_DIGEST, "SHA256", 0, 0, CKF_DIGEST, IN_PARTS},
    {CKM_SHA384, P11_DIGEST, "SHA384", 0, 0, CKF_DIGEST, IN_PARTS},
    {CKM_SHA512, P11_DIGEST, "SHA512", 0, 0, CKF_DIGEST, IN_PARTS},
    {CKM_ECDH1_DERIVE, P11_DERIVE, NULL, 256, 521, CKF_HW | CKF_DERIVE | EC_FLAGS, IN_PARTS},
    {CKM_ECDH1_COFACTOR_DERIVE, P11_DERIVE, NULL, 256, 521, CKF_HW | CKF_DERIVE | EC_FLAGS,
     IN_PARTS},
};
const size_t p11_n_mechs = sizeof(p11_mechs) / sizeof(p11_mechs[0]);

const p11_mech *p11_mech_find(CK_MECHANISM_TYPE type)
{
	for (size_t i = 0; i < p11_n_mechs; i++)
		if (p11_mechs[i].type == type)
			return &p11_mechs[i];
	return NULL;
}

void p11_op_reset(p11_op *op)
{
	EVP_MD_CTX_free(op->md);
	hsm_buf_free(&op->data);
	hsm_buf_free(&op->input);
	memset(op, 0, sizeof(*op));
}

CK_RV p11_op_in_parts(p11_op *op)
{
	if (!op->mech->one_part)
		return CKR_OK;
	/* A failed Update ends the operation, and so does a Final call (PKCS#11 v2.40 5.10-5.11). */
	p11_op_reset(op);
	return CKR_OPERATION_NOT_INITIALIZED;
}

/* ---- hashes ------------------------------------------------------------------------------------ */

typedef struct hash_def {
	const char *md;  /* OpenSSL's name */
	const char *kms; /* in KMS algorithm names */
	CK_MECHANISM_TYPE ck;
	CK_RSA_PKCS_MGF_TYPE mgf;
	size_t len;
	uint8_t prefix[19]; /* DigestInfo before the digest */
} hash_def;

static const hash_def hashes[] = {
    {"SHA224", "SHA_224", CKM_SHA224, CKG_MGF1_SHA224, 28, {0}},
    {"SHA256", "SHA_256", CKM_SHA256, CKG_MGF1_SHA256, 32,
     {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
      0x05, 0x00, 0x04, 0x20}},
    {"SHA384", "SHA_384", CKM_SHA384, CKG_MGF1_SHA384, 48,
     {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
      0x05, 0x00, 0x04, 0x30}},
    {"SHA512", "SHA_512", CKM_SHA512, CKG_MGF1_SHA512, 64,
     {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
      0x05, 0x00, 0x04, 0x40}},
};
#define N_HASHES (sizeof(hashes) / sizeof(hashes[0]))

static const hash_def *hash_by_md(const char *md)
{
	for (size_t i = 0; md != NULL && i < N_HASHES; i++)
		if (strcmp(hashes[i].md, md) == 0)
			return &hashes[i];
	return NULL;
}

static const hash_def *hash_by_ck(CK_MECHANISM_TYPE ck)
{
	for (size_t i = 0; i < N_HASHES; i++)
		if (hashes[i].ck == ck)
			return &hashes[i];
	return NULL;
}

/* The hash an EC or HMAC key's KMS algorithm uses. */
static const hash_def *key_hash(hsm_key_spec spec)
{
	switch (spec) {
	case HSM_SPEC_ECC_NIST_P256:
	case HSM_SPEC_ECC_SECG_P256K1:
	case HSM_SPEC_HMAC_256: return hash_by_md("SHA256");
	case HSM_SPEC_ECC_NIST_P384:
	case HSM_SPEC_HMAC_384: return hash_by_md("SHA384");
	case HSM_SPEC_ECC_NIST_P521:
	case HSM_SPEC_HMAC_512: return hash_by_md("SHA512");
	case HSM_SPEC_HMAC_224: return hash_by_md("SHA224");
	default: return NULL;
	}
}

/* ---- the keys a mechanism takes ----------------------------------------------------------------- */

/*
 * For each mechanism family and function (CKF_SIGN, ..., as its flags say),
 * the key it takes: its key type, then the object class and the hsmd key
 * usage that let it do that.  The *Init functions and C_DeriveKey check a
 * key against it (p11_key_permits), and a key's CKA_ALLOWED_MECHANISMS is
 * read from it (p11_key_mechs): what an object says it allows and what it
 * is let do are one rule.
 */
typedef struct key_rule {
	p11_family family;
	CK_FLAGS fn;
	CK_KEY_TYPE key_type;
	CK_OBJECT_CLASS cls;
	hsm_key_usage usage;
} key_rule;

static const key_rule key_rules[] = {
    {P11_RSA_PKCS, CKF_SIGN, CKK_RSA, CKO_PRIVATE_KEY, HSM_USAGE_SIGN_VERIFY},
    {P11_RSA_PKCS, CKF_VERIFY, CKK_RSA, CKO_PUBLIC_KEY, HSM_USAGE_SIGN_VERIFY},
    {P11_RSA_PSS, CKF_SIGN, CKK_RSA, CKO_PRIVATE_KEY, HSM_USAGE_SIGN_VERIFY},
    {P11_RSA_PSS, CKF_VERIFY, CKK_RSA, CKO_PUBLIC_KEY, HSM_USAGE_SIGN_VERIFY},
    {P11_ECDSA, CKF_SIGN, CKK_EC, CKO_PRIVATE_KEY, HSM_USAGE_SIGN_VERIFY},
    {P11_ECDSA, CKF_VERIFY, CKK_EC, CKO_PUBLIC_KEY, HSM_USAGE_SIGN_VERIFY},
    {P11_EDDSA, CKF_SIGN, CKK_EC_EDWARDS, CKO_PRIVATE_KEY, HSM_USAGE_SIGN_VERIFY},
    {P11_EDDSA, CKF_VERIFY, CKK_EC_EDWARDS, CKO_PUBLIC_KEY, HSM_USAGE_SIGN_VERIFY},
    {P11_HMAC, CKF_SIGN, CKK_GENERIC_SECRET, CKO_SECRET_KEY, HSM_USAGE_GENERATE_VERIFY_MAC},
    {P11_HMAC, CKF_VERIFY, CKK_GENERIC_SECRET, CKO_SECRET_KEY, HSM_USAGE_GENERATE_VERIFY_MAC},
    {P11_RSA_OAEP, CKF_ENCRYPT, CKK_RSA, CKO_PUBLIC_KEY, HSM_USAGE_ENCRYPT_DECRYPT},
    {P11_RSA_OAEP, CKF_DECRYPT, CKK_RSA, CKO_PRIVATE_KEY, HSM_USAGE_ENCRYPT_DECRYPT},
    {P11_AES_GCM, CKF_ENCRYPT, CKK_AES, CKO_SECRET_KEY, HSM_USAGE_ENCRYPT_DECRYPT},
    {P11_AES_GCM, CKF_DECRYPT, CKK_AES, CKO_SECRET_KEY, HSM_USAGE_ENCRYPT_DECRYPT},
    {P11_DERIVE, CKF_DERIVE, CKK_EC, CKO_PRIVATE_KEY, HSM_USAGE_KEY_AGREEMENT},
};

CK_RV p11_key_permits(const p11_object *o, const p11_mech *m, CK_FLAGS fn)
{
	const key_rule *r = NULL;
	for (size_t i = 0; i < sizeof(key_rules) / sizeof(key_rules[0]) && r == NULL; i++)
		if (key_rules[i].family == m->family && key_rules[i].fn == fn)
			r = &key_rules[i];
	if (r == NULL || (m->flags & fn) == 0)
		return CKR_MECHANISM_INVALID;
	/*
	 * The key's type first: CKR_KEY_FUNCTION_NOT_PERMITTED "has lower priority
	 * than CKR_KEY_TYPE_INCONSISTENT" (PKCS#11 v2.40 5.1.6).  A derived secret
	 * is the caller's to read (CKA_VALUE), a key of no mechanism here.
	 */
	if (o->derived || o->key_type != r->key_type)
		return CKR_KEY_TYPE_INCONSISTENT;
	if (o->cls != r->cls || o->usage != r->usage)
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	/* hsmd refuses Sign with a key marked for tokens (docs/jwt.md); Verify it allows. */
	if (fn == CKF_SIGN && o->jwt)
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	/* An HMAC key with its own hash only: a generic secret of another size. */
	if (m->family == P11_HMAC && hash_by_md(m->md) != key_hash(o->spec))
		return CKR_KEY_SIZE_RANGE;
	return CKR_OK;
}

_Static_assert(sizeof(p11_mechs) / sizeof(p11_mechs[0]) <= P11_MECHS_MAX,
               "P11_MECHS_MAX holds every mechanism");

size_t p11_key_mechs(const p11_object *o, CK_MECHANISM_TYPE out[P11_MECHS_MAX])
{
	static const CK_FLAGS fns[] = {CKF_SIGN, CKF_VERIFY, CKF_ENCRYPT, CKF_DECRYPT, CKF_DERIVE};
	size_t n = 0;
	for (size_t i = 0; i < p11_n_mechs; i++) {
		bool allowed = false;
		for (size_t j = 0; j < sizeof(fns) / sizeof(fns[0]) && !allowed; j++)
			allowed = p11_key_permits(o, &p11_mechs[i], fns[j]) == CKR_OK;
		if (allowed)
			out[n++] = p11_mechs[i].type;
	}
	return n;
}

/* ---- init ------------------------------------------------------------------------------------------- */

static CK_RV pss_params(const CK_MECHANISM *mech, const hash_def **h)
{
	if (mech->pParameter == NULL || mech->ulParameterLen != sizeof(CK_RSA_PKCS_PSS_PARAMS))
		return CKR_MECHANISM_PARAM_INVALID;
	const CK_RSA_PKCS_PSS_PARAMS *p = mech->pParameter;
	const hash_def *ph = hash_by_ck(p->hashAlg);
	/* hsmd's PSS: MGF1 with the message's hash, a salt as long as the hash. */
	if (ph == NULL || ph->len == 28 || (*h != NULL && *h != ph) || p->mgf != ph->mgf ||
	    p->sLen != ph->len)
		return CKR_MECHANISM_PARAM_INVALID;
	*h = ph;
	return CKR_OK;
}

/* CK_EDDSA_PARAMS of PKCS#11 v3.0 (this module's header is v2.40's). */
typedef struct eddsa_params {
	CK_BBOOL phFlag;
	CK_ULONG ulContextDataLen;
	CK_BYTE_PTR pContextData;
} eddsa_params;

static CK_RV op_init(CK_SESSION_HANDLE hs, bool sign, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	CK_RV rv = p11_user_session(hs);
	if (rv != CKR_OK)
		return rv;
	p11_session *s = p11_session_get(hs);
	p11_op *op = sign ? &s->sign : &s->verify;
	if (op->active)
		return CKR_OPERATION_ACTIVE;
	if (mech == NULL)
		return CKR_ARGUMENTS_BAD;
	const p11_mech *m = p11_mech_find(mech->mechanism);
	CK_FLAGS fn = sign ? CKF_SIGN : CKF_VERIFY;
	if (m == NULL || (m->flags & fn) == 0)
		return CKR_MECHANISM_INVALID;
	const p11_object *o = p11_key_get(key);
	if (o == NULL)
		return CKR_KEY_HANDLE_INVALID;
	/* An HMAC key given to CKM_ECDSA is inconsistent, a public key given to C_SignInit not
	 * permitted, an RSA key for decryption given to CKM_ECDSA inconsistent first. */
	rv = p11_key_permits(o, m, fn);
	if (rv != CKR_OK)
		return rv;
	/* Only PSS and EdDSA take parameters (an empty pointer-and-length pair is no parameter). */
	if (m->family != P11_RSA_PSS && m->family != P11_EDDSA && mech->ulParameterLen != 0)
		return CKR_MECHANISM_PARAM_INVALID;
	/* Ed25519 as hsmd signs it (RFC 8032 PureEdDSA): no prehash, no context.  A length
	 * without its parameters (pParameter NULL) is malformed, not "no parameter". */
	if (m->family == P11_EDDSA && (mech->pParameter != NULL || mech->ulParameterLen != 0)) {
		const eddsa_params *p = mech->pParameter;
		if (p == NULL || mech->ulParameterLen != sizeof(*p) || p->phFlag ||
		    p->ulContextDataLen != 0)
			return CKR_MECHANISM_PARAM_INVALID;
	}
	const hash_def *h = hash_by_md(m->md);
	if (m->family == P11_RSA_PSS)
		rv = pss_params(mech, &h);
	else if (m->family == P11_ECDSA) /* any digest, fitted to the curve's own (ecdsa_fit) */
		h = key_hash(o->spec);
	if (rv != CKR_OK)
		return rv;
	memset(op, 0, sizeof(*op));
	op->serial = p11_serial();
	op->mech = m;
	op->key = key;
	op->hash = h != NULL ? h->kms : NULL;
	op->ecdsa_cut = m->family == P11_ECDSA && o->spec != HSM_SPEC_ECC_NIST_P521;
	if (m->family != P11_HMAC && m->md != NULL) {
		op->md = EVP_MD_CTX_new();
		if (op->md == NULL || !EVP_DigestInit_ex(op->md, EVP_get_digestbyname(m->md), NULL)) {
			p11_op_reset(op);
			return CKR_HOST_MEMORY;
		}
	}
	op->active = true;
	return CKR_OK;
}

CK_RV C_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	ENTER();
	LEAVE(op_init(h, true, mech, key));
}

CK_RV C_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	ENTER();
	LEAVE(op_init(h, false, mech, key));
}

/* ---- data --------------------------------------------------------------------------------------------- */

static CK_RV op_update(p11_op *op, const CK_BYTE *data, CK_ULONG len)
{
	if (op->md != NULL)
		return EVP_DigestUpdate(op->md, data, len) ? CKR_OK : CKR_DEVICE_ERROR;
	/* The message itself goes to hsmd (HMAC, Ed25519): at most what hsmd takes. */
	size_t max = op->mech->family == P11_HMAC || op->mech->family == P11_EDDSA ? HMAC_MAX : RAW_MAX;
	if (op->data.len + len > max)
		return CKR_DATA_LEN_RANGE;
	return hsm_ok(hsm_buf_put(&op->data, data, len)) ? CKR_OK : CKR_HOST_MEMORY;
}

static const hash_def *hash_by_kms(const char *kms)
{
	for (size_t i = 0; kms != NULL && i < N_HASHES; i++)
		if (strcmp(hashes[i].kms, kms) == 0)
			return &hashes[i];
	return NULL;
}

/*
 * An ECDSA digest of any length as the digest of the curve's own hash: cut to
 * its leftmost bytes where the group order has as many bits (P-256, P-384,
 * secp256k1), padded with zeros on the left where shorter; either way the
 * number the signature is made over does not change.
 */
static CK_RV ecdsa_fit(const p11_op *op, const uint8_t *d, size_t n, hsm_buf *out)
{
	const hash_def *h = hash_by_kms(op->hash);
	if (h == NULL || n == 0 || (n > h->len && !op->ecdsa_cut))
		return CKR_DATA_LEN_RANGE;
	size_t pad = n < h->len ? h->len - n : 0;
	static const uint8_t zeros[64];
	if (hsm_failed(hsm_buf_put(out, zeros, pad)) ||
	    hsm_failed(hsm_buf_put(out, d, n < h->len ? n : h->len)))
		return CKR_HOST_MEMORY;
	return CKR_OK;
}

/* The digest hsmd signs (hashing and raw mechanisms), or the MAC's message. */
static CK_RV op_input(p11_op *op, hsm_buf *out)
{
	if (op->md != NULL) {
		uint8_t d[EVP_MAX_MD_SIZE];
		unsigned n = 0;
		if (!EVP_DigestFinal_ex(op->md, d, &n))
			return CKR_DEVICE_ERROR;
		if (op->mech->family == P11_ECDSA)
			return ecdsa_fit(op, d, n, out);
		return hsm_ok(hsm_buf_put(out, d, n)) ? CKR_OK : CKR_HOST_MEMORY;
	}
	const uint8_t *p = op->data.data;
	size_t n = op->data.len;
	if (op->mech->family == P11_RSA_PKCS) { /* a DigestInfo: which hash, then the digest */
		for (size_t i = 1; i < N_HASHES; i++) {
			if (n == sizeof(hashes[i].prefix) + hashes[i].len &&
			    hsm_ct_equal(p, hashes[i].prefix, sizeof(hashes[i].prefix))) {
				op->hash = hashes[i].kms;
				return hsm_ok(hsm_buf_put(out, p + sizeof(hashes[i].prefix), hashes[i].len))
				           ? CKR_OK
				           : CKR_HOST_MEMORY;
			}
		}
		return CKR_DATA_INVALID;
	}
	if (op->mech->family == P11_ECDSA)
		return ecdsa_fit(op, p, n, out);
	/* hsmd, as AWS KMS, refuses an empty Message (a ValidationException): refused here. */
	if ((op->mech->family == P11_HMAC || op->mech->family == P11_EDDSA) && n == 0)
		return CKR_DATA_LEN_RANGE;
	if (op->mech->family != P11_HMAC && op->mech->family != P11_EDDSA) { /* a digest */
		const hash_def *h = hash_by_kms(op->hash);
		if (h == NULL || n != h->len)
			return CKR_DATA_LEN_RANGE;
	}
	return hsm_ok(hsm_buf_put(out, p, n)) ? CKR_OK : CKR_HOST_MEMORY;
}

static CK_ULONG sig_len(const p11_op *op, const p11_object *o)
{
	switch (op->mech->family) {
	case P11_RSA_PKCS:
	case P11_RSA_PSS: return (CK_ULONG)o->modulus.len;
	case P11_ECDSA: return (CK_ULONG)(2 * hsm_ec_field_len(o->spec));
	case P11_HMAC: return (CK_ULONG)key_hash(o->spec)->len;
	case P11_EDDSA: return 64;
	case P11_RSA_OAEP:
	case P11_AES_GCM:
	case P11_KEYGEN:
	case P11_DIGEST:
	case P11_DERIVE: break;
	}
	return 0;
}

static const char *family_prefix(p11_family f)
{
	return f == P11_RSA_PKCS ? "RSASSA_PKCS1_V1_5_"
	       : f == P11_RSA_PSS ? "RSASSA_PSS_"
	       : f == P11_ECDSA   ? "ECDSA_"
	                          : "HMAC_";
}

static json_t *b64_string(const uint8_t *p, size_t n)
{
	hsm_buf b = {0};
	json_t *s = NULL;
	if (hsm_ok(hsm_b64_encode(&b, p, n)))
		s = json_stringn((const char *)b.data, b.len);
	hsm_buf_free(&b);
	return s;
}

/*
 * What a signature or verification needs from the key, copied: the module
 * lock is let go while hsmd answers, and the object table may change meanwhile.
 */
typedef struct key_copy {
	char key_id[HSM_UUID_STRLEN + 1];
	p11_family family;
	size_t field_len; /* ECDSA */
	CK_ULONG sig_len;
	char alg[40];
	const char *message_type; /* DIGEST, or RAW for Ed25519 */
} key_copy;

static void copy_key(const p11_op *op, const p11_object *o, key_copy *k)
{
	snprintf(k->key_id, sizeof(k->key_id), "%s", o->key_id);
	k->family = op->mech->family;
	k->field_len = hsm_ec_field_len(o->spec);
	k->sig_len = sig_len(op, o);
	if (k->family == P11_EDDSA)
		snprintf(k->alg, sizeof(k->alg), "ED25519_SHA_512");
	else
		snprintf(k->alg, sizeof(k->alg), "%s%s", family_prefix(k->family), op->hash);
	k->message_type = k->family == P11_EDDSA ? "RAW" : "DIGEST";
}

/*
 * Signs: out (sig_len bytes) receives the signature.  Neither op nor o is
 * used once the request is out (the lock is let go meanwhile); t tells
 * whether the session is still there to receive it.
 */
static CK_RV do_sign(p11_op *op, const p11_object *o, CK_BYTE_PTR out, const p11_ticket *t)
{
	hsm_buf input = {0}, sig = {0}, raw = {0};
	json_t *ans = NULL;
	key_copy k;
	CK_RV rv = op_input(op, &input);
	if (rv != CKR_OK)
		goto out;
	copy_key(op, o, &k); /* after op_input: a DigestInfo names the hash */
	json_t *msg = b64_string(input.data, input.len);
	if (k.family == P11_HMAC)
		rv = p11_call_session(t, "TrentService.GenerateMac",
		                      json_pack("{s:s,s:o,s:s}", "KeyId", k.key_id, "Message", msg,
		                                "MacAlgorithm", k.alg),
		                      &ans);
	else
		rv = p11_call_session(t, "TrentService.Sign",
		                      json_pack("{s:s,s:o,s:s,s:s}", "KeyId", k.key_id, "Message", msg,
		                                "MessageType", k.message_type, "SigningAlgorithm",
		                                k.alg),
		                      &ans);
	if (rv != CKR_OK)
		goto out;
	rv = p11_b64_member(ans, k.family == P11_HMAC ? "Mac" : "Signature", &raw);
	if (rv != CKR_OK)
		goto out;
	if (k.family == P11_ECDSA) {
		rv = p11_rv_of(hsm_ecdsa_der_to_p1363(raw.data, raw.len, k.field_len, &sig),
		               CKR_DEVICE_ERROR);
	} else if (hsm_failed(hsm_buf_set(&sig, raw.data, raw.len))) {
		rv = CKR_HOST_MEMORY;
	}
	if (rv == CKR_OK && sig.len != k.sig_len)
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK)
		memcpy(out, sig.data, sig.len);
out:
	json_decref(ans);
	hsm_buf_free(&input);
	hsm_buf_free(&sig);
	hsm_buf_free(&raw);
	return rv;
}

static CK_RV do_verify(p11_op *op, const p11_object *o, const CK_BYTE *sig, CK_ULONG sig_n,
                       const p11_ticket *t)
{
	hsm_buf input = {0}, der = {0};
	json_t *ans = NULL;
	key_copy k;
	if (sig_n != sig_len(op, o))
		return CKR_SIGNATURE_LEN_RANGE;
	CK_RV rv = op_input(op, &input);
	if (rv != CKR_OK)
		goto out;
	copy_key(op, o, &k);
	if (k.family == P11_ECDSA) {
		/* Not r||s of two integers in range: invalid, unless memory ran out. */
		rv = p11_rv_of(hsm_ecdsa_p1363_to_der(sig, sig_n, k.field_len, &der),
		               CKR_SIGNATURE_INVALID);
		if (rv != CKR_OK)
			goto out;
	}
	json_t *msg = b64_string(input.data, input.len);
	json_t *s = der.len ? b64_string(der.data, der.len) : b64_string(sig, sig_n);
	if (k.family == P11_HMAC)
		rv = p11_call_session(t, "TrentService.VerifyMac",
		                      json_pack("{s:s,s:o,s:o,s:s}", "KeyId", k.key_id, "Message", msg,
		                                "Mac", s, "MacAlgorithm", k.alg),
		                      &ans);
	else
		rv = p11_call_session(t, "TrentService.Verify",
		                      json_pack("{s:s,s:o,s:s,s:o,s:s}", "KeyId", k.key_id, "Message",
		                                msg, "MessageType", k.message_type, "Signature", s,
		                                "SigningAlgorithm", k.alg),
		                      &ans);
	const char *valid = k.family == P11_HMAC ? "MacValid" : "SignatureValid";
	if (rv == CKR_OK && !json_is_true(json_object_get(ans, valid)))
		rv = CKR_SIGNATURE_INVALID;
out:
	json_decref(ans);
	hsm_buf_free(&input);
	hsm_buf_free(&der);
	return rv;
}

/* ---- the entry points ---------------------------------------------------------------------------------- */

/*
 * Ends a signature, with C_Sign's data (one_part) or what C_SignUpdate gave:
 * the length query and a short buffer leave the operation running and take
 * no data, so the caller repeats C_Sign with it, or goes on in parts, as
 * with SoftHSM.  The operation ends only if it is still this one when hsmd
 * has answered (p11_op_end); a session closed meanwhile is not touched.
 */
static CK_RV sign_final(CK_SESSION_HANDLE h, p11_session *s, bool one_part, const CK_BYTE *data,
                        CK_ULONG len, CK_BYTE_PTR sig, CK_ULONG_PTR sig_n)
{
	p11_ticket t = p11_ticket_of(h, &s->sign);
	const p11_object *o = p11_object_get(s->sign.key);
	CK_RV rv;
	if (o == NULL) {
		rv = P11_RV_KEY_GONE;
	} else {
		CK_ULONG need = sig_len(&s->sign, o);
		if (sig == NULL) {
			*sig_n = need;
			return CKR_OK;
		}
		if (*sig_n < need) {
			*sig_n = need;
			return CKR_BUFFER_TOO_SMALL;
		}
		rv = one_part ? op_update(&s->sign, data, len) : CKR_OK;
		if (rv == CKR_OK)
			rv = do_sign(&s->sign, o, sig, &t);
		if (rv == CKR_OK)
			*sig_n = need;
	}
	/*
	 * Any answer but a length query's ends the operation (PKCS#11 v2.40 5.11: "a
	 * call to C_Sign always terminates the active signing operation unless it
	 * returns CKR_BUFFER_TOO_SMALL" or answers a length query), hsmd's refusal
	 * too, which C_Sign and C_SignFinal answer as CKR_FUNCTION_FAILED (retval.c).
	 */
	p11_op_end(&s->sign, &t);
	return rv;
}

p11_session *p11_op_session(CK_SESSION_HANDLE h, size_t op_offset, bool args_ok, CK_RV *rv)
{
	p11_session *s = p11_session_get(h);
	p11_op *op = s == NULL ? NULL : (p11_op *)(void *)((char *)s + op_offset);
	*rv = s == NULL      ? CKR_SESSION_HANDLE_INVALID
	      : !op->active ? CKR_OPERATION_NOT_INITIALIZED
	      : !args_ok    ? CKR_ARGUMENTS_BAD
	                    : CKR_OK;
	if (*rv == CKR_ARGUMENTS_BAD)
		p11_op_reset(op);
	return *rv == CKR_OK ? s : NULL;
}

/* The session of h, its signing (or verification) operation active (p11_op_session). */
static p11_session *active(CK_SESSION_HANDLE h, bool sign, bool args_ok, CK_RV *rv)
{
	return p11_op_session(h, sign ? offsetof(p11_session, sign) : offsetof(p11_session, verify),
	                      args_ok, rv);
}

/* C_SignUpdate and C_VerifyUpdate, with the module lock held: a failure ends the operation. */
static CK_RV update(CK_SESSION_HANDLE h, bool sign, const CK_BYTE *data, CK_ULONG len)
{
	CK_RV rv;
	p11_session *s = active(h, sign, data != NULL || len == 0, &rv);
	if (s == NULL)
		return rv;
	p11_op *op = sign ? &s->sign : &s->verify;
	rv = p11_op_in_parts(op);
	if (rv != CKR_OK)
		return rv;
	rv = op_update(op, data, len);
	if (rv != CKR_OK)
		p11_op_reset(op);
	else
		op->multi = true;
	return rv;
}

CK_RV C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
             CK_ULONG_PTR sig_n)
{
	ENTER();
	CK_RV rv;
	p11_session *s = active(h, true, (data != NULL || len == 0) && sig_n != NULL, &rv);
	if (s == NULL)
		LEAVE(rv);
	/* A multi-part operation is not ended in one part: refused, and ended (as SoftHSM does). */
	if (s->sign.multi) {
		p11_op_reset(&s->sign);
		LEAVE(CKR_OPERATION_NOT_INITIALIZED);
	}
	LEAVE(sign_final(h, s, true, data, len, sig, sig_n));
}

CK_RV C_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len)
{
	ENTER();
	LEAVE(update(h, true, data, len));
}

CK_RV C_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG_PTR sig_n)
{
	ENTER();
	CK_RV rv;
	p11_session *s = active(h, true, sig_n != NULL, &rv);
	if (s == NULL)
		LEAVE(rv);
	rv = p11_op_in_parts(&s->sign);
	if (rv != CKR_OK)
		LEAVE(rv);
	LEAVE(sign_final(h, s, false, NULL, 0, sig, sig_n));
}

static CK_RV verify_final(CK_SESSION_HANDLE h, p11_session *s, const CK_BYTE *sig,
                          CK_ULONG sig_n)
{
	p11_ticket t = p11_ticket_of(h, &s->verify);
	const p11_object *o = p11_object_get(s->verify.key);
	CK_RV rv = o == NULL ? P11_RV_KEY_GONE : do_verify(&s->verify, o, sig, sig_n, &t);
	p11_op_end(&s->verify, &t);
	return rv;
}

CK_RV C_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
               CK_ULONG sig_n)
{
	ENTER();
	CK_RV rv;
	p11_session *s = active(h, false, (data != NULL || len == 0) && sig != NULL, &rv);
	if (s == NULL)
		LEAVE(rv);
	if (s->verify.multi) { /* as for C_Sign */
		p11_op_reset(&s->verify);
		LEAVE(CKR_OPERATION_NOT_INITIALIZED);
	}
	rv = op_update(&s->verify, data, len);
	if (rv != CKR_OK) {
		p11_op_reset(&s->verify);
		LEAVE(rv);
	}
	LEAVE(verify_final(h, s, sig, sig_n));
}

CK_RV C_VerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len)
{
	ENTER();
	LEAVE(update(h, false, data, len));
}

CK_RV C_VerifyFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG sig_n)
{
	ENTER();
	CK_RV rv;
	p11_session *s = active(h, false, sig != NULL, &rv);
	if (s == NULL)
		LEAVE(rv);
	rv = p11_op_in_parts(&s->verify);
	if (rv != CKR_OK)
		LEAVE(rv);
	LEAVE(verify_final(h, s, sig, sig_n));
}
