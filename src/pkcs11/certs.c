/*
 * certs.c - certificates as CKO_CERTIFICATE objects (p11.h).
 *
 * hsmd keeps X.509 certificates beside the keys (HsmdAdmin.ImportCertificate
 * and friends); the module shows each as a token object whose CKA_ID is the
 * one it was stored with (by default the id of the key it certifies, which
 * is that key's objects' CKA_ID), so applications that pair a private key
 * with its certificate by CKA_ID, as Java's PKCS#11 key store does, find
 * both.  C_CreateObject stores a certificate in hsmd (CKA_TOKEN true, a
 * crypto-officer's session) or keeps it in the module for its session
 * (CKA_TOKEN false); C_DestroyObject deletes it.  Certificates are public:
 * hsmd checks each is one DER X.509 certificate, and the module derives
 * CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL_NUMBER, CKA_PUBLIC_KEY_INFO and
 * CKA_CHECK_VALUE from it.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/encoding.h"
#include "common/util.h"
#include "crypto/x509.h"
#include "pkcs11/p11.h"

/* One part of a certificate, DER-encoded by i2d (its length, or <= 0), into b. */
static bool put_der(hsm_buf *b, int n, unsigned char *der)
{
	bool ok = n > 0 && der != NULL && hsm_ok(hsm_buf_set(b, der, (size_t)n));
	OPENSSL_free(der);
	return ok;
}

/*
 * Fills a certificate object's values from its DER: CKR_ATTRIBUTE_VALUE_INVALID
 * unless it is exactly one DER X.509 certificate.
 */
static CK_RV fill_values(p11_object *o, const uint8_t *der, size_t len)
{
	/* DER, not merely BER, and nothing after it: what hsmd stores. */
	X509 *x = hsm_x509_from_der(der, len, P11_CERT_DER_MAX);
	if (x == NULL)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	unsigned char *subject = NULL, *issuer = NULL, *serial = NULL, *spki = NULL;
	int n_subject = i2d_X509_NAME(X509_get_subject_name(x), &subject);
	int n_issuer = i2d_X509_NAME(X509_get_issuer_name(x), &issuer);
	int n_serial = i2d_ASN1_INTEGER(X509_get0_serialNumber(x), &serial);
	int n_spki = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &spki);
	X509_free(x);
	/* Each put_der frees its part: all four run. */
	bool ok = put_der(&o->subject, n_subject, subject);
	ok = put_der(&o->issuer, n_issuer, issuer) && ok;
	ok = put_der(&o->serial, n_serial, serial) && ok;
	ok = put_der(&o->spki, n_spki, spki) && ok;
	/* CKA_CHECK_VALUE: the first three bytes of the SHA-1 hash of the DER. */
	uint8_t sha1[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	ok = ok && EVP_Digest(der, len, sha1, &n, EVP_sha1(), NULL) == 1 && n >= 3 &&
	     hsm_ok(hsm_buf_set(&o->check, sha1, 3)) && hsm_ok(hsm_buf_set(&o->value, der, len));
	return ok ? CKR_OK : CKR_HOST_MEMORY;
}

/* fill_values, or CKR_HOST_MEMORY when memory ran out on the way: OpenSSL's parser, short
 * of memory, reads any DER as invalid. */
static CK_RV fill(p11_object *o, const uint8_t *der, size_t len)
{
	p11_ossl_watch();
	CK_RV rv = fill_values(o, der, len);
	if (p11_ossl_ran_out()) /* even when it worked: a parser short of memory is not trusted */
		rv = CKR_HOST_MEMORY;
	return rv;
}

/* One certificate with its DER (listed, or from GetCertificate): a new object, or the one it is. */
static CK_RV load_one(json_t *c)
{
	const char *id = json_string_value(json_object_get(c, "CertificateId"));
	const char *label = json_string_value(json_object_get(c, "Label"));
	if (id == NULL || !hsm_is_uuid(id) || label == NULL || strlen(label) > P11_LABEL_MAX)
		return CKR_DEVICE_ERROR;
	p11_object *o = p11_object_of(id, CKO_CERTIFICATE);
	if (o != NULL) { /* certificates do not change: only deleted */
		o->seen = true;
		return CKR_OK;
	}
	hsm_buf der = {0}, object_id = {0};
	CK_RV rv = p11_b64_member(c, "Certificate", &der);
	if (rv == CKR_OK)
		rv = p11_b64_member(c, "ObjectId", &object_id);
	if (rv == CKR_OK && (o = p11_object_new(id, CKO_CERTIFICATE)) == NULL)
		rv = CKR_HOST_MEMORY;
	if (rv == CKR_OK) {
		o->seen = true;
		snprintf(o->label, sizeof(o->label), "%s", label);
		o->id = object_id;
		object_id = (hsm_buf){0};
		/* One hsmd could not describe is not an object of this token: it goes with the unseen.
		 * Short of memory, the listing fails and the object goes now (not kept half made,
		 * to be read whole at the next listing): a certificate is not left out for that. */
		CK_RV filled = fill(o, der.data, der.len);
		if (filled == CKR_HOST_MEMORY) {
			p11_object_drop(o->handle);
			rv = CKR_HOST_MEMORY;
		} else if (filled != CKR_OK) {
			o->seen = false;
		}
	}
	hsm_buf_free(&der);
	hsm_buf_free(&object_id);
	return rv;
}

/* Certificate ids a listing without DER found that the module does not have yet. */
typedef struct new_ids {
	char (*id)[HSM_UUID_STRLEN + 1];
	size_t n, cap;
} new_ids;

/* One entry of a listing without DER: the object it is marked seen, or its id noted as new. */
static CK_RV note_one(json_t *c, new_ids *fresh)
{
	const char *id = json_string_value(json_object_get(c, "CertificateId"));
	if (id == NULL || !hsm_is_uuid(id))
		return CKR_DEVICE_ERROR;
	p11_object *o = p11_object_of(id, CKO_CERTIFICATE);
	if (o != NULL) {
		o->seen = true;
		return CKR_OK;
	}
	if (fresh->n == fresh->cap) {
		size_t cap = fresh->cap ? fresh->cap * 2 : 16;
		void *grown = realloc(fresh->id, cap * sizeof(*fresh->id));
		if (grown == NULL)
			return CKR_HOST_MEMORY;
		fresh->id = grown;
		fresh->cap = cap;
	}
	snprintf(fresh->id[fresh->n++], sizeof(fresh->id[0]), "%s", id);
	return CKR_OK;
}

/*
 * Lists hsmd's certificates (those with ObjectId and Label, when not NULL),
 * page by page: with their DER when fresh is NULL, else only what names
 * them, noting in fresh the ids the module does not have.
 */
static CK_RV list(json_t *object_id, json_t *label, new_ids *fresh)
{
	json_t *ans = NULL;
	char marker[1024] = ""; /* opaque: as long as hsmd takes one (server/marker.h) */
	CK_RV rv = CKR_OK;
	for (;;) {
		json_t *body = json_pack("{s:i,s:b}", "Limit", 1000, "IncludeCertificate", fresh == NULL);
		/* A filter or marker left out would list other certificates: none is. */
		if (body == NULL || (marker[0] != '\0' && !p11_set(body, "Marker", json_string(marker))) ||
		    (object_id != NULL && json_object_set(body, "ObjectId", object_id) != 0) ||
		    (label != NULL && json_object_set(body, "Label", label) != 0)) {
			json_decref(body);
			rv = CKR_HOST_MEMORY;
			break;
		}
		json_decref(ans);
		ans = NULL;
		rv = p11_call("HsmdAdmin.ListCertificates", body, &ans);
		if (rv != CKR_OK)
			break;
		size_t i;
		json_t *c;
		json_array_foreach(json_object_get(ans, "Certificates"), i, c) {
			if ((rv = fresh == NULL ? load_one(c) : note_one(c, fresh)) != CKR_OK)
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

/* A certificate the module does not have, read alone; one deleted meanwhile is skipped. */
static CK_RV fetch_one(const char *id)
{
	json_t *ans = NULL;
	CK_RV rv = p11_call("HsmdAdmin.GetCertificate", json_pack("{s:s}", "CertificateId", id), &ans);
	if (rv == CKR_OK)
		rv = load_one(json_object_get(ans, "Certificate"));
	else if (rv == CKR_KEY_HANDLE_INVALID) /* NotFoundException */
		rv = CKR_OK;
	json_decref(ans);
	return rv;
}

/*
 * Certificates never change once stored, so a module that has some reads
 * only what names them, then the DER of the ones it has not seen: one by
 * one when they are few, in a second listing when they are many.  A module
 * that has none reads them with their DER at once.
 */
#define FETCH_ALONE_MAX 16

static CK_RV load(json_t *object_id, json_t *label)
{
	bool have = false;
	for (size_t i = 0; i < p11.n_objects && !have; i++)
		have = p11.objects[i].cls == CKO_CERTIFICATE && !p11.objects[i].derived;
	if (!have)
		return list(object_id, label, NULL);
	new_ids fresh = {NULL, 0, 0};
	CK_RV rv = list(object_id, label, &fresh);
	if (rv == CKR_OK && fresh.n > FETCH_ALONE_MAX)
		rv = list(object_id, label, NULL);
	else
		for (size_t i = 0; i < fresh.n && rv == CKR_OK; i++)
			rv = fetch_one(fresh.id[i]);
	free(fresh.id);
	return rv;
}

CK_RV p11_certs_load(void)
{
	return load(NULL, NULL);
}

/* Whether a template attribute's bytes are these (NULL: no attribute, any bytes). */
static bool same(const CK_ATTRIBUTE *a, const void *p, size_t n)
{
	return a == NULL ||
	       (a->ulValueLen == n && (n == 0 || (a->pValue != NULL && hsm_ct_equal(a->pValue, p, n))));
}

CK_RV p11_certs_refresh(const CK_ATTRIBUTE *id, const CK_ATTRIBUTE *label)
{
	json_t *jid = NULL, *jlabel = NULL;
	if (id != NULL) {
		hsm_buf b64 = {0};
		if (id->ulValueLen > P11_CERT_ID_MAX || (id->pValue == NULL && id->ulValueLen > 0))
			return CKR_OK; /* no certificate has such a CKA_ID */
		if (hsm_failed(hsm_b64_encode(&b64, id->pValue, id->ulValueLen)))
			return CKR_HOST_MEMORY;
		jid = json_stringn(b64.len ? (const char *)b64.data : "", b64.len);
		hsm_buf_free(&b64);
		if (jid == NULL)
			return CKR_HOST_MEMORY;
	}
	if (label != NULL) {
		/* Not UTF-8, or too long: no certificate has such a label. */
		if (label->ulValueLen > P11_LABEL_MAX || (label->pValue == NULL && label->ulValueLen > 0) ||
		    !hsm_utf8_valid(label->pValue, label->ulValueLen)) {
			json_decref(jid);
			return CKR_OK;
		}
		jlabel = json_stringn(label->ulValueLen ? label->pValue : "", label->ulValueLen);
		if (jlabel == NULL) {
			json_decref(jid);
			return CKR_HOST_MEMORY;
		}
	}
	/* Only the certificates this listing can show are read again. */
	for (size_t i = 0; i < p11.n_objects; i++) {
		p11_object *o = &p11.objects[i];
		o->seen = o->cls != CKO_CERTIFICATE || o->derived ||
		          !same(id, o->id.data, o->id.len) ||
		          !same(label, o->label, strlen(o->label));
	}
	CK_RV rv = load(jid, jlabel);
	json_decref(jid);
	json_decref(jlabel);
	if (rv == CKR_OK)
		p11_objects_remove_unseen();
	else /* the table stays as it was */
		for (size_t i = 0; i < p11.n_objects; i++)
			p11.objects[i].seen = true;
	return rv;
}

CK_RV p11_cert_destroy(p11_object *o)
{
	char id[HSM_UUID_STRLEN + 1];
	snprintf(id, sizeof(id), "%s", o->key_id);
	json_t *ans = NULL;
	CK_RV rv = p11_call("HsmdAdmin.DeleteCertificate", json_pack("{s:s}", "CertificateId", id),
	                    &ans);
	json_decref(ans);
	if (rv == CKR_KEY_HANDLE_INVALID) /* NotFoundException: deleted already */
		rv = CKR_OK;
	if (rv == CKR_OK) {
		p11_object *gone = p11_object_of(id, CKO_CERTIFICATE);
		if (gone != NULL)
			gone->seen = false;
		p11_objects_remove_unseen();
	}
	return rv;
}

/* ---- C_CreateObject ---------------------------------------------------------------------------- */

/* An attribute given must hold exactly the bytes the certificate implies. */
static bool same_bytes(const CK_ATTRIBUTE *a, const hsm_buf *want)
{
	return same(a, want->data, want->len);
}

static bool is_false(const CK_ATTRIBUTE *a)
{
	bool b = false;
	return a == NULL || (p11_attr_bool(a, &b) && !b);
}

static bool is_empty(const CK_ATTRIBUTE *a)
{
	return a == NULL || a->ulValueLen == 0;
}

/* The attributes a certificate template may hold; anything else is CKR_ATTRIBUTE_TYPE_INVALID. */
static const CK_ATTRIBUTE_TYPE known[] = {
    CKA_CLASS,     CKA_CERTIFICATE_TYPE, CKA_TOKEN,         CKA_PRIVATE,
    CKA_MODIFIABLE, CKA_COPYABLE,        CKA_DESTROYABLE,   CKA_LABEL,
    CKA_ID,        CKA_VALUE,            CKA_SUBJECT,       CKA_ISSUER,
    CKA_SERIAL_NUMBER, CKA_TRUSTED,      CKA_CERTIFICATE_CATEGORY, CKA_CHECK_VALUE,
    CKA_START_DATE, CKA_END_DATE,        CKA_URL,           CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY, CKA_JAVA_MIDP_SECURITY_DOMAIN, CKA_NAME_HASH_ALGORITHM,
    CKA_PUBLIC_KEY_INFO,
};

/* Checks a template against the certificate filled into o (what it may say, and that it agrees). */
static CK_RV check_template(const CK_ATTRIBUTE *t, CK_ULONG n, const p11_object *o)
{
	for (CK_ULONG i = 0; i < n; i++) {
		bool ok = false;
		for (size_t k = 0; k < sizeof(known) / sizeof(known[0]) && !ok; k++)
			ok = t[i].type == known[k];
		if (!ok)
			return CKR_ATTRIBUTE_TYPE_INVALID;
		if (t[i].pValue == NULL && t[i].ulValueLen > 0)
			return CKR_ATTRIBUTE_VALUE_INVALID;
	}
	/* The attributes read before this (class, CKA_TOKEN, label, CKA_ID) were their first
	 * ones: a second that says otherwise is refused here, before anything is stored. */
	CK_RV rv = p11_template_repeats(t, n);
	if (rv != CKR_OK)
		return rv;
	CK_ULONG u = 0;
	bool b = false;
	/* The security officer alone marks certificates trusted; this token has none. */
	if (!is_false(p11_attr_find(t, n, CKA_TRUSTED)))
		return CKR_ATTRIBUTE_READ_ONLY;
	const CK_ATTRIBUTE *d = p11_attr_find(t, n, CKA_DESTROYABLE);
	if (!is_false(p11_attr_find(t, n, CKA_PRIVATE)) ||
	    !is_false(p11_attr_find(t, n, CKA_MODIFIABLE)) ||
	    !is_false(p11_attr_find(t, n, CKA_COPYABLE)) ||
	    (d != NULL && !(p11_attr_bool(d, &b) && b)))
		return CKR_ATTRIBUTE_VALUE_INVALID;
	static const CK_ATTRIBUTE_TYPE zero[] = {CKA_CERTIFICATE_CATEGORY,
	                                         CKA_JAVA_MIDP_SECURITY_DOMAIN};
	for (size_t k = 0; k < sizeof(zero) / sizeof(zero[0]); k++) {
		u = 0;
		if (!p11_attr_ulong(p11_attr_find(t, n, zero[k]), &u) || u != 0)
			return CKR_ATTRIBUTE_VALUE_INVALID;
	}
	u = CKM_SHA_1;
	if (!p11_attr_ulong(p11_attr_find(t, n, CKA_NAME_HASH_ALGORITHM), &u) || u != CKM_SHA_1)
		return CKR_ATTRIBUTE_VALUE_INVALID;
	static const CK_ATTRIBUTE_TYPE empty[] = {CKA_START_DATE, CKA_END_DATE, CKA_URL,
	                                          CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
	                                          CKA_HASH_OF_ISSUER_PUBLIC_KEY};
	for (size_t k = 0; k < sizeof(empty) / sizeof(empty[0]); k++)
		if (!is_empty(p11_attr_find(t, n, empty[k])))
			return CKR_ATTRIBUTE_VALUE_INVALID;
	if (!same_bytes(p11_attr_find(t, n, CKA_SUBJECT), &o->subject) ||
	    !same_bytes(p11_attr_find(t, n, CKA_ISSUER), &o->issuer) ||
	    !same_bytes(p11_attr_find(t, n, CKA_SERIAL_NUMBER), &o->serial) ||
	    !same_bytes(p11_attr_find(t, n, CKA_PUBLIC_KEY_INFO), &o->spki) ||
	    !same_bytes(p11_attr_find(t, n, CKA_CHECK_VALUE), &o->check))
		return CKR_TEMPLATE_INCONSISTENT;
	return CKR_OK;
}

/* CKA_LABEL: UTF-8 (PKCS#11's rule), at most P11_LABEL_MAX bytes, no control characters (hsmd's). */
static CK_RV read_label(const CK_ATTRIBUTE *a, char *out, size_t cap)
{
	out[0] = '\0';
	if (a == NULL)
		return CKR_OK;
	if (a->ulValueLen > P11_LABEL_MAX || a->ulValueLen >= cap ||
	    (a->pValue == NULL && a->ulValueLen > 0))
		return CKR_ATTRIBUTE_VALUE_INVALID;
	const unsigned char *p = a->pValue;
	for (CK_ULONG i = 0; i < a->ulValueLen; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return CKR_ATTRIBUTE_VALUE_INVALID;
	if (!hsm_utf8_valid(a->pValue, a->ulValueLen))
		return CKR_ATTRIBUTE_VALUE_INVALID;
	if (a->ulValueLen > 0)
		memcpy(out, a->pValue, a->ulValueLen);
	out[a->ulValueLen] = '\0';
	return CKR_OK;
}

/* Stores the certificate in hsmd; *cert_id is the id hsmd gave it. */
static CK_RV import(const CK_ATTRIBUTE *value, const char *label, const CK_ATTRIBUTE *id,
                    char cert_id[HSM_UUID_STRLEN + 1])
{
	hsm_buf der = {0}, oid = {0};
	json_t *body = json_object(), *ans = NULL;
	CK_RV rv = CKR_HOST_MEMORY;
	if (body == NULL || hsm_failed(hsm_b64_encode(&der, value->pValue, value->ulValueLen)) ||
	    hsm_failed(hsm_b64_encode(&oid, id != NULL ? id->pValue : NULL,
	                              id != NULL ? id->ulValueLen : 0)))
		goto out;
	/* ObjectId always given: a certificate without CKA_ID has none (hsmd's default is for KeyId). */
	if (!p11_set(body, "Certificate", json_stringn((const char *)der.data, der.len)) ||
	    !p11_set(body, "Label", json_string(label)) ||
	    !p11_set(body, "ObjectId", json_stringn(oid.len ? (const char *)oid.data : "", oid.len)))
		goto out;
	rv = p11_call("HsmdAdmin.ImportCertificate", body, &ans);
	body = NULL; /* taken */
	/*
	 * The DER, label and CKA_ID were checked here as hsmd checks them, so its
	 * ValidationException for a certificate with a CKA_ID is the refusal to
	 * pair it with the key whose objects have that CKA_ID, which it does not
	 * certify: the template's CKA_ID and CKA_VALUE disagree.
	 */
	if (rv == CKR_ARGUMENTS_BAD && id != NULL && id->ulValueLen > 0)
		rv = CKR_TEMPLATE_INCONSISTENT;
	const char *got = json_string_value(json_object_get(ans, "CertificateId"));
	if (rv == CKR_OK && (got == NULL || !hsm_is_uuid(got)))
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK)
		snprintf(cert_id, HSM_UUID_STRLEN + 1, "%s", got);
out:
	json_decref(body);
	json_decref(ans);
	hsm_buf_free(&der);
	hsm_buf_free(&oid);
	return rv;
}

CK_RV C_CreateObject(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR t, CK_ULONG n, CK_OBJECT_HANDLE_PTR out)
{
	ENTER_SESSION(h);
	if (out == NULL || (t == NULL && n > 0))
		LEAVE(CKR_ARGUMENTS_BAD);
	CK_RV rv = p11_user_session(h);
	if (rv != CKR_OK)
		LEAVE(rv);
	CK_ULONG cls = CK_UNAVAILABLE_INFORMATION, type = CK_UNAVAILABLE_INFORMATION;
	const CK_ATTRIBUTE *ca = p11_attr_find(t, n, CKA_CLASS);
	const CK_ATTRIBUTE *ta = p11_attr_find(t, n, CKA_CERTIFICATE_TYPE);
	const CK_ATTRIBUTE *value = p11_attr_find(t, n, CKA_VALUE);
	const CK_ATTRIBUTE *id = p11_attr_find(t, n, CKA_ID);
	bool token = false;
	if (ca == NULL)
		LEAVE(CKR_TEMPLATE_INCOMPLETE);
	/* Keys are made in hsmd (C_GenerateKey, C_GenerateKeyPair): only certificates are created. */
	if (!p11_attr_ulong(ca, &cls) || cls != CKO_CERTIFICATE)
		LEAVE(CKR_ATTRIBUTE_VALUE_INVALID);
	if (ta == NULL || value == NULL)
		LEAVE(CKR_TEMPLATE_INCOMPLETE);
	if (!p11_attr_ulong(ta, &type) || type != CKC_X_509)
		LEAVE(CKR_ATTRIBUTE_VALUE_INVALID);
	const CK_ATTRIBUTE *tok = p11_attr_find(t, n, CKA_TOKEN);
	if (tok != NULL && !p11_attr_bool(tok, &token))
		LEAVE(CKR_ATTRIBUTE_VALUE_INVALID);
	if (id != NULL && (id->ulValueLen > P11_CERT_ID_MAX || (id->pValue == NULL && id->ulValueLen > 0)))
		LEAVE(CKR_ATTRIBUTE_VALUE_INVALID);
	char label[P11_LABEL_MAX + 1];
	if ((rv = read_label(p11_attr_find(t, n, CKA_LABEL), label, sizeof(label))) != CKR_OK)
		LEAVE(rv);
	if (token && (p11_session_get(h)->flags & CKF_RW_SESSION) == 0)
		LEAVE(CKR_SESSION_READ_ONLY);
	/* The object is checked whole before anything is stored. */
	p11_object probe;
	memset(&probe, 0, sizeof(probe));
	rv = value->pValue != NULL ? fill(&probe, value->pValue, value->ulValueLen)
	                           : CKR_ATTRIBUTE_VALUE_INVALID;
	if (rv == CKR_OK)
		rv = check_template(t, n, &probe);
	if (rv == CKR_OK && id != NULL && id->ulValueLen > 0 &&
	    hsm_failed(hsm_buf_set(&probe.id, id->pValue, id->ulValueLen)))
		rv = CKR_HOST_MEMORY;
	char cert_id[HSM_UUID_STRLEN + 1] = "";
	if (rv == CKR_OK && token)
		rv = import(value, label, id, cert_id);
	p11_object *o = NULL;
	if (rv == CKR_OK && (o = p11_object_new(cert_id, CKO_CERTIFICATE)) == NULL)
		rv = CKR_HOST_MEMORY;
	if (rv == CKR_OK) {
		o->seen = true;
		o->derived = !token; /* a session object: dropped with its session */
		o->owner = token ? CK_INVALID_HANDLE : h;
		snprintf(o->label, sizeof(o->label), "%s", label);
		o->value = probe.value;
		o->subject = probe.subject;
		o->issuer = probe.issuer;
		o->serial = probe.serial;
		o->spki = probe.spki;
		o->check = probe.check;
		o->id = probe.id;
		memset(&probe, 0, sizeof(probe));
		*out = o->handle;
	}
	hsm_buf_free(&probe.value);
	hsm_buf_free(&probe.subject);
	hsm_buf_free(&probe.issuer);
	hsm_buf_free(&probe.serial);
	hsm_buf_free(&probe.spki);
	hsm_buf_free(&probe.check);
	hsm_buf_free(&probe.id);
	LEAVE(rv);
}
