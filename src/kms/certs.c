/*
 * certs.c - X.509 certificates kept as token objects (kms.h, "Certificates").
 *
 * The service keeps certificates for applications, it does not vouch for
 * them: a certificate is checked to be one well-formed DER X.509 structure
 * and, when the import names a key, to certify that key's primary public
 * key, so a PKCS#11 application never finds a certificate beside a key it
 * does not belong to.
 */
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "common/encoding.h"
#include "common/util.h"
#include "crypto/x509.h"
#include "kms/kms_internal.h"

/* A key whose automatic rotation would replace the public key a certificate certifies. */
#define ROTATES_FMT                                                                           \
	"key %s rotates automatically, and a rotation would leave the certificate beside a "  \
	"public key it does not certify: disable its rotation (DisableKeyRotation) to pair a "   \
	"certificate with it"

static hsm_result require_roles(const hsm_caller *caller, unsigned roles, const char *what)
{
	HSM_ENSURE(caller->local || (caller->roles & roles) != 0, HSM_ERR_ACCESS_DENIED,
	           "User %s may not %s certificates", caller->user, what);
	return HSM_SUCCESS;
}

/* The certificate, parsed; NULL unless der is exactly one DER certificate. */
static X509 *parse(const uint8_t *der, size_t len)
{
	return hsm_x509_from_der(der, len, HSM_CERT_DER_MAX);
}

static hsm_result check_label(const char *label)
{
	size_t n = strlen(label);
	HSM_ENSURE(n <= HSM_CERT_LABEL_MAX, HSM_ERR_VALIDATION,
	           "Label is at most %d bytes", HSM_CERT_LABEL_MAX);
	/* C0, DEL, and C1 (U+0080..U+009F: 0xC2 0x80..0x9F in UTF-8, which JSON text is). */
	for (size_t i = 0; i < n; i++) {
		unsigned char b = (unsigned char)label[i];
		bool c1 = b == 0xC2 && i + 1 < n && (unsigned char)label[i + 1] >= 0x80 &&
		          (unsigned char)label[i + 1] <= 0x9F;
		HSM_ENSURE(b >= 0x20 && b != 0x7f && !c1, HSM_ERR_VALIDATION,
		           "Label may not contain control characters");
	}
	return HSM_SUCCESS;
}

static hsm_result time_of(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;
	HSM_ENSURE(t != NULL && ASN1_TIME_to_tm(t, &tm) == 1, HSM_ERR_VALIDATION,
	           "the certificate's validity cannot be read");
	*out = (int64_t)timegm(&tm);
	return HSM_SUCCESS;
}

/* The certificate must hold the key's primary public key. */
static hsm_result check_certifies(hsm_kms *kms, const hsm_caller *caller, X509 *x,
                                  const char *key, char key_id[HSM_UUID_STRLEN + 1])
{
	hsm_buf spki = {0};
	hsm_key_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(hsm_kms_get_public_key(kms, caller, key, &spki, &rec));
	unsigned char *cert_spki = NULL;
	int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &cert_spki);
	bool same = n > 0 && (size_t)n == spki.len && hsm_ct_equal(cert_spki, spki.data, spki.len);
	OPENSSL_free(cert_spki);
	hsm_buf_free(&spki);
	memcpy(key_id, rec.key_id, HSM_UUID_STRLEN + 1);
	bool rotates = rec.rotation_enabled;
	hsm_key_record_clear(&rec);
	HSM_ENSURE(same, HSM_ERR_VALIDATION,
	           "the certificate does not certify the public key of key %s", key_id);
	HSM_ENSURE(!rotates, HSM_ERR_VALIDATION, ROTATES_FMT, key_id);
	return HSM_SUCCESS;
}

/*
 * The CKA_ID of a key's PKCS#11 objects: its own, when an alias gives it
 * one (common/encoding.h, HSM_PKCS11_ID_ALIAS), else its key id.
 */
static hsm_result key_object_id(hsm_kms *kms, const char *key_id, hsm_buf *out)
{
	char alias[HSM_ALIAS_MAX + 1];
	HSM_GUARD(kms_key_id_alias(kms, key_id, NULL, alias, out));
	return alias[0] != '\0' ? HSM_SUCCESS : hsm_buf_set(out, key_id, strlen(key_id));
}

/*
 * The key whose PKCS#11 objects have CKA_ID id: the key whose id it spells,
 * or the one an alias under alias/pkcs11-id/ gives it; key_id "" when no
 * key has it.  A certificate with that ObjectId pairs with the key in every
 * application that matches objects by CKA_ID.
 */
static hsm_result key_of_object_id(hsm_kms *kms, const uint8_t *id, size_t n,
                                   char key_id[HSM_UUID_STRLEN + 1])
{
	key_id[0] = '\0';
	char text[HSM_UUID_STRLEN + 1], alias[HSM_ALIAS_MAX + 1];
	if (n == HSM_UUID_STRLEN && memchr(id, '\0', n) == NULL) {
		memcpy(text, id, n);
		text[n] = '\0';
		if (hsm_is_uuid(text)) {
			hsm_key_record rec;
			memset(&rec, 0, sizeof(rec));
			hsm_result r = hsm_store_key_get(kms->store, text, &rec);
			hsm_key_record_clear(&rec);
			if (hsm_ok(r))
				memcpy(key_id, text, sizeof(text));
			return r.err == HSM_ERR_NOT_FOUND ? HSM_SUCCESS : r;
		}
	}
	if (!hsm_pkcs11_id_alias(id, n, alias, sizeof(alias)))
		return HSM_SUCCESS; /* no alias can give a key this id */
	hsm_alias_record a;
	hsm_result r = hsm_store_alias_get(kms->store, alias, &a);
	if (hsm_ok(r))
		memcpy(key_id, a.key_id, HSM_UUID_STRLEN + 1);
	return r.err == HSM_ERR_NOT_FOUND ? HSM_SUCCESS : r;
}

static hsm_result cert_import(hsm_kms *kms, const hsm_caller *caller, hsm_cert_import_req *req,
                              hsm_cert_record *out)
{
	HSM_GUARD(require_roles(caller, HSM_ROLES_OFFICER, "import"));
	HSM_ENSURE(req->der_len >= 1 && req->der_len <= HSM_CERT_DER_MAX, HSM_ERR_VALIDATION,
	           "Certificate is 1 to %d bytes of DER", HSM_CERT_DER_MAX);
	HSM_ENSURE(req->object_id == NULL || req->object_id_len <= HSM_CERT_OBJECT_ID_MAX,
	           HSM_ERR_VALIDATION, "ObjectId is at most %d bytes", HSM_CERT_OBJECT_ID_MAX);
	const char *label = req->label != NULL ? req->label : "";
	HSM_GUARD(check_label(label));
	X509 *x = parse(req->der, req->der_len);
	HSM_ENSURE(x != NULL, HSM_ERR_VALIDATION,
	           "Certificate is not one DER-encoded X.509 certificate");
	int64_t not_after = 0;
	hsm_result res = time_of(X509_get0_notAfter(x), &not_after);
	/*
	 * A certificate goes beside a key's objects only if it certifies that key
	 * and the caller may read the key's public key: named by KeyId, or by an
	 * ObjectId that is the key's CKA_ID (else any officer could pair a key
	 * its policy keeps from them with a certificate of their own).
	 */
	char key_id[HSM_UUID_STRLEN + 1] = "", paired[HSM_UUID_STRLEN + 1] = "";
	if (hsm_ok(res) && req->object_id != NULL)
		res = key_of_object_id(kms, req->object_id, req->object_id_len, paired);
	memcpy(req->paired_key_id, paired, sizeof(paired));
	if (hsm_ok(res) && req->key != NULL)
		res = check_certifies(kms, caller, x, req->key, key_id);
	else if (hsm_ok(res) && paired[0] != '\0')
		res = check_certifies(kms, caller, x, paired, key_id);
	X509_free(x);
	HSM_GUARD(res);

	hsm_cert_record c;
	memset(&c, 0, sizeof(c));
	if (key_id[0] != '\0')
		HSM_TRY(key_object_id(kms, key_id, &c.object_id));
	if (req->object_id != NULL) {
		/* Given with KeyId, it must be that key's CKA_ID: it could pair with nothing else. */
		HSM_CHECK(key_id[0] == '\0' ||
		              (c.object_id.len == req->object_id_len &&
		               hsm_ct_equal(c.object_id.data, req->object_id, req->object_id_len)),
		          HSM_ERR_VALIDATION,
		          "ObjectId is not the CKA_ID of key %s's objects: leave it out, and the "
		          "certificate takes theirs",
		          key_id);
		HSM_TRY(hsm_buf_set(&c.object_id, req->object_id, req->object_id_len));
	}
	HSM_TRY(hsm_uuid_new(c.cert_id));
	HSM_TRY(hsm_strcpy(c.label, sizeof(c.label), label));
	HSM_TRY(hsm_buf_set(&c.der, req->der, req->der_len));
	HSM_TRY(hsm_strcpy(c.creator, sizeof(c.creator), caller->local ? "" : caller->user));
	c.created = kms_now(kms);
	c.not_after = not_after;
	if (hsm_caller_gated(caller)) { /* the limit first: custodians approve no import it refuses */
		uint64_t held = 0;
		HSM_TRY(hsm_store_cert_count(kms->store, &held));
		HSM_TRY(hsm_store_cert_room((int64_t)held));
	}
	HSM_TRY(hsm_caller_commit(caller));
	HSM_TRY(hsm_store_cert_create(kms->store, &c)); /* its LIMIT_EXCEEDED names the limit */
	*out = c;
	return HSM_SUCCESS;
out:
	hsm_cert_record_clear(&c);
	return res;
}

hsm_result hsm_kms_cert_import(hsm_kms *kms, const hsm_caller *caller,
                               hsm_cert_import_req *req, hsm_cert_record *out)
{
	req->paired_key_id[0] = '\0';
	pthread_mutex_lock(&kms->pairing);
	hsm_result r = cert_import(kms, caller, req, out);
	pthread_mutex_unlock(&kms->pairing);
	return r;
}

typedef struct pairing {
	const char *key_id;
	const hsm_buf *spki; /* the key's primary public key; empty: a key without one */
	bool rotates;        /* the key's automatic rotation is on */
	char last[HSM_UUID_STRLEN + 1];
} pairing;

static hsm_result check_pairs(const hsm_cert_record *c, void *arg)
{
	pairing *p = arg;
	memcpy(p->last, c->cert_id, sizeof(p->last));
	X509 *x = parse(c->der.data, c->der.len);
	unsigned char *cert_spki = NULL;
	int n = x != NULL ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &cert_spki) : -1;
	bool same = n > 0 && p->spki->len == (size_t)n &&
	            hsm_ct_equal(cert_spki, p->spki->data, p->spki->len);
	OPENSSL_free(cert_spki);
	X509_free(x);
	HSM_ENSURE(same, HSM_ERR_VALIDATION,
	           "certificate %s has that CKA_ID and does not certify key %s, so it would pair "
	           "with the key's objects: delete it, or give the key another id",
	           c->cert_id, p->key_id);
	HSM_ENSURE(!p->rotates, HSM_ERR_VALIDATION, "certificate %s has that CKA_ID; " ROTATES_FMT,
	           c->cert_id, p->key_id);
	return HSM_SUCCESS;
}

hsm_result kms_certs_may_pair(hsm_kms *kms, const hsm_buf *object_id, const char *key_id)
{
	hsm_key_record rec;
	hsm_buf spki = {0};
	memset(&rec, 0, sizeof(rec));
	hsm_result r = hsm_store_key_get(kms->store, key_id, &rec);
	if (hsm_ok(r) && hsm_spec_is_asymmetric(rec.spec))
		r = hsm_kms_version_public_key(kms, key_id, rec.primary_version, &spki);
	pairing p = {.key_id = key_id, .spki = &spki, .rotates = rec.rotation_enabled};
	hsm_key_record_clear(&rec);
	hsm_cert_match m = {.object_id = object_id};
	bool more = true;
	while (hsm_ok(r) && more)
		r = hsm_store_cert_find(kms->store, &m, p.last[0] != '\0' ? p.last : NULL, 100,
		                        check_pairs, &p, &more);
	hsm_buf_free(&spki);
	return r;
}

static hsm_result note_first(const hsm_cert_record *c, void *arg)
{
	memcpy(arg, c->cert_id, HSM_UUID_STRLEN + 1);
	return HSM_SUCCESS;
}

hsm_result kms_certs_refuse_rotation(hsm_kms *kms, const hsm_key_record *key, const char *what)
{
	/* Only a key with a public key can have a certificate paired (check_certifies). */
	if (!hsm_spec_is_asymmetric(key->spec))
		return HSM_SUCCESS;
	const char *key_id = key->key_id;
	hsm_buf id = {0};
	char cert_id[HSM_UUID_STRLEN + 1] = "";
	bool more = false;
	hsm_result r = key_object_id(kms, key_id, &id);
	hsm_cert_match m = {.object_id = &id};
	if (hsm_ok(r))
		r = hsm_store_cert_find(kms->store, &m, NULL, 1, note_first, cert_id, &more);
	hsm_buf_free(&id);
	HSM_GUARD(r);
	HSM_ENSURE(cert_id[0] == '\0', HSM_ERR_VALIDATION,
	           "%s: certificate %s certifies key %s's public key, which a rotation replaces; "
	           "delete the certificate (hsmctl cert delete), rotate, then import the new "
	           "public key's certificate",
	           what, cert_id, key_id);
	return HSM_SUCCESS;
}

static hsm_result not_found(hsm_result r, const char *cert_id)
{
	if (r.err == HSM_ERR_NOT_FOUND)
		return HSM_FAIL(HSM_ERR_NOT_FOUND, "certificate %.36s does not exist", cert_id);
	return r;
}

#define READERS (HSM_ROLES_OFFICER | HSM_ROLES_USER | HSM_ROLES_AUDITOR)

hsm_result hsm_kms_cert_get(hsm_kms *kms, const hsm_caller *caller, const char *cert_id,
                            hsm_cert_record *out)
{
	HSM_GUARD(require_roles(caller, READERS, "read"));
	return not_found(hsm_store_cert_get(kms->store, cert_id, out), cert_id);
}

hsm_result hsm_kms_cert_list(hsm_kms *kms, const hsm_caller *caller, const hsm_cert_match *m,
                             const char *after, size_t limit, hsm_cert_cb cb, void *arg,
                             bool *truncated)
{
	HSM_GUARD(require_roles(caller, READERS, "list"));
	return hsm_store_cert_find(kms->store, m, after, limit, cb, arg, truncated);
}

hsm_result hsm_kms_cert_delete(hsm_kms *kms, const hsm_caller *caller, const char *cert_id)
{
	HSM_GUARD(require_roles(caller, HSM_ROLES_OFFICER, "delete"));
	/* One that is not there is refused before an approval is asked for. */
	hsm_cert_record c;
	memset(&c, 0, sizeof(c));
	hsm_result r = hsm_store_cert_get(kms->store, cert_id, &c);
	/* One beside a key's objects goes only with the caller's right to that key. */
	char key_id[HSM_UUID_STRLEN + 1] = "";
	if (hsm_ok(r) && c.object_id.len > 0)
		r = key_of_object_id(kms, c.object_id.data, c.object_id.len, key_id);
	hsm_cert_record_clear(&c);
	if (hsm_ok(r) && key_id[0] != '\0') {
		kms_key *k = NULL;
		r = kms_key_load(kms, key_id, &k);
		if (hsm_ok(r))
			r = kms_authorize(kms, caller, HSM_OP_GetPublicKey, k, NULL);
		kms_key_release(k);
	}
	if (hsm_ok(r))
		r = hsm_caller_commit(caller);
	if (hsm_ok(r))
		r = hsm_store_cert_delete(kms->store, cert_id);
	return not_found(r, cert_id);
}

static hsm_result name_text(const X509_NAME *name, char *out, size_t cap)
{
	BIO *b = BIO_new(BIO_s_mem());
	HSM_ENSURE(b != NULL, HSM_ERR_NOMEM, "out of memory");
	int n = X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253);
	char *p = NULL;
	long len = BIO_get_mem_data(b, &p);
	hsm_result r = HSM_SUCCESS;
	if (n < 0 || len < 0)
		r = HSM_FAIL(HSM_ERR_CRYPTO, "cannot print a certificate's name");
	else
		snprintf(out, cap, "%.*s", (int)((size_t)len < cap ? (size_t)len : cap - 1), p);
	BIO_free(b);
	return r;
}

hsm_result hsm_cert_describe(const uint8_t *der, size_t len, hsm_cert_info *out)
{
	X509 *x = parse(der, len);
	HSM_ENSURE(x != NULL, HSM_ERR_VALIDATION, "not one DER-encoded X.509 certificate");
	hsm_result r = name_text(X509_get_subject_name(x), out->subject, sizeof(out->subject));
	if (hsm_ok(r))
		r = name_text(X509_get_issuer_name(x), out->issuer, sizeof(out->issuer));
	if (hsm_ok(r))
		r = time_of(X509_get0_notBefore(x), &out->not_before);
	if (hsm_ok(r))
		r = time_of(X509_get0_notAfter(x), &out->not_after);
	BIGNUM *bn = hsm_ok(r) ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL) : NULL;
	char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
	if (hsm_ok(r) && hex == NULL)
		r = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	if (hsm_ok(r)) {
		size_t i = 0;
		for (; hex[i] != '\0' && i + 1 < sizeof(out->serial); i++)
			out->serial[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
		out->serial[i] = '\0';
	}
	OPENSSL_free(hex);
	BN_free(bn);
	X509_free(x);
	return r;
}
