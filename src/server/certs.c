/*
 * certs.c - the certificates kept beside the keys (HsmdAdmin.<Op>; kms.h,
 * "Certificates"), which the PKCS#11 module shows as CKO_CERTIFICATE objects.
 *
 *   ImportCertificate {Certificate: base64 DER, Label?, ObjectId?: base64, KeyId?}
 *   GetCertificate    {CertificateId}
 *   ListCertificates  {Limit?, Marker?, ObjectId?: base64, Label?,  (those that match)
 *                      IncludeCertificate?: false for the ids, labels and ObjectIds alone}
 *   DeleteCertificate {CertificateId}
 *
 * With KeyId, the certificate must certify that key's public key, and its
 * ObjectId (the PKCS#11 CKA_ID) defaults to the key objects' CKA_ID (the
 * key's own, if an alias gives it one, else its key id): applications that
 * pair keys and certificates by CKA_ID (Java's key store) find them together.
 */
#include <string.h>

#include "server/api.h"
#include "server/server.h"

/* with_der false: what names the certificate, not the certificate itself. */
static void write_cert(hsm_jw *w, const hsm_cert_record *c, bool with_der)
{
	hsm_cert_info info;
	hsm_jw_str(w, "CertificateId", c->cert_id);
	hsm_jw_str(w, "Label", c->label);
	hsm_jw_b64(w, "ObjectId", c->object_id.data, c->object_id.len);
	if (!with_der) {
		hsm_jw_time(w, "NotAfter", c->not_after);
		return;
	}
	hsm_jw_b64(w, "Certificate", c->der.data, c->der.len);
	/* Stored certificates were checked on import; a description that fails leaves these out. */
	if (hsm_ok(hsm_cert_describe(c->der.data, c->der.len, &info))) {
		hsm_jw_str(w, "Subject", info.subject);
		hsm_jw_str(w, "Issuer", info.issuer);
		hsm_jw_str(w, "SerialNumber", info.serial);
		hsm_jw_time(w, "NotBefore", info.not_before);
		hsm_jw_time(w, "NotAfter", info.not_after);
	}
	hsm_jw_time(w, "CreationDate", c->created);
	if (c->creator[0] != '\0')
		hsm_jw_str(w, "CreatedBy", c->creator);
}

hsm_result hsm_admin_import_certificate(hsm_admin_ctx *c)
{
	hsm_buf der = {0}, object_id = {0};
	bool has_id = false, present;
	const char *label = NULL, *key = NULL;
	hsm_cert_record rec;
	memset(&rec, 0, sizeof(rec));
	hsm_result res = HSM_SUCCESS;
	HSM_TRY(hsm_json_blob(c->req, "Certificate", true, 1, HSM_CERT_DER_MAX, &der, &present));
	HSM_TRY(hsm_json_blob(c->req, "ObjectId", false, 0, HSM_CERT_OBJECT_ID_MAX, &object_id,
	                      &has_id));
	HSM_TRY(hsm_json_str(c->req, "Label", false, 0, HSM_CERT_LABEL_MAX, &label));
	HSM_TRY(hsm_json_str(c->req, "KeyId", false, 1, HSM_KEYID_MAX, &key));
	hsm_cert_import_req req = {
	    .der = der.data,
	    .der_len = der.len,
	    .label = label,
	    /* An empty ObjectId is a certificate without one, not "the key's". */
	    .object_id = has_id ? (object_id.data != NULL ? object_id.data : (const uint8_t *)"")
	                        : NULL,
	    .object_id_len = object_id.len,
	    .key = key,
	};
	if (key != NULL) {
		char id[HSM_UUID_STRLEN + 1];
		if (hsm_ok(hsm_kms_resolve(c->s->kms, key, id)))
			memcpy(c->audit->key_id, id, sizeof(id));
	}
	res = hsm_kms_cert_import(c->s->kms, &c->auth->caller, &req, &rec);
	/* Named by its CKA_ID (ObjectId), the key is recorded too, whatever the outcome. */
	if (c->audit->key_id[0] == '\0' && req.paired_key_id[0] != '\0')
		memcpy(c->audit->key_id, req.paired_key_id, sizeof(req.paired_key_id));
	HSM_TRY(res);
	memcpy(c->audit->cert_id, rec.cert_id, sizeof(rec.cert_id));
	hsm_server_recount(c->s); /* /metrics' certificate gauges */
	write_cert(c->w, &rec, true);
out:
	hsm_cert_record_clear(&rec);
	hsm_buf_free(&der);
	hsm_buf_free(&object_id);
	return res;
}

/* The CertificateId member: a malformed one names no certificate. */
static hsm_result read_id(hsm_admin_ctx *c, const char **id)
{
	HSM_GUARD(hsm_json_str(c->req, "CertificateId", true, 1, 64, id));
	HSM_ENSURE(hsm_is_uuid(*id), HSM_ERR_NOT_FOUND, "certificate %.36s does not exist", *id);
	memcpy(c->audit->cert_id, *id, HSM_UUID_STRLEN + 1);
	return HSM_SUCCESS;
}

hsm_result hsm_admin_get_certificate(hsm_admin_ctx *c)
{
	const char *id;
	hsm_cert_record rec;
	memset(&rec, 0, sizeof(rec));
	HSM_GUARD(read_id(c, &id));
	HSM_GUARD(hsm_kms_cert_get(c->s->kms, &c->auth->caller, id, &rec));
	hsm_jw_key_begin_object(c->w, "Certificate");
	write_cert(c->w, &rec, true);
	hsm_jw_end(c->w);
	hsm_cert_record_clear(&rec);
	return HSM_SUCCESS;
}

typedef struct list_arg {
	hsm_jw *w;
	bool with_der;
	char last[HSM_UUID_STRLEN + 1];
} list_arg;

static hsm_result list_one(const hsm_cert_record *rec, void *arg)
{
	list_arg *l = arg;
	hsm_jw_begin_object(l->w);
	write_cert(l->w, rec, l->with_der);
	hsm_jw_end(l->w);
	memcpy(l->last, rec->cert_id, sizeof(l->last));
	return HSM_SUCCESS;
}

/*
 * A page with the certificates' DER holds at most this many (4.3 MB of JSON
 * at HSM_CERT_DER_MAX each, where 1000 would be 43 MB, read whole from the
 * store first: store.h).  A shorter page is Truncated and its NextMarker goes
 * on, as a listing may always return fewer than Limit.
 */
#define LIST_WITH_DER_MAX 100

hsm_result hsm_admin_list_certificates(hsm_admin_ctx *c)
{
	int64_t limit = 100;
	bool present, has_id = false, truncated = false, with_der = true;
	const char *marker = NULL, *label = NULL;
	hsm_buf object_id = {0}, after = {0}, next = {0};
	hsm_result res = HSM_SUCCESS;
	HSM_TRY(hsm_json_int(c->req, "Limit", false, 1, 1000, &limit, &present));
	HSM_TRY(hsm_json_str(c->req, "Marker", false, 1, 1024, &marker));
	/* Bound to this listing (marker.h): a position alone, or another listing's marker,
	 * is refused rather than taken for a place to go on from. */
	if (marker != NULL)
		HSM_TRY(hsm_marker_decode(HSM_MARKER_CERTIFICATES, NULL, true, marker, &after));
	HSM_TRY(hsm_json_blob(c->req, "ObjectId", false, 0, HSM_CERT_OBJECT_ID_MAX, &object_id,
	                      &has_id));
	HSM_TRY(hsm_json_str(c->req, "Label", false, 0, HSM_CERT_LABEL_MAX, &label));
	HSM_TRY(hsm_json_bool(c->req, "IncludeCertificate", &with_der, &present));
	if (with_der && limit > LIST_WITH_DER_MAX)
		limit = LIST_WITH_DER_MAX;
	hsm_cert_match m = {has_id ? &object_id : NULL, label};
	list_arg l = {c->w, with_der, ""};
	hsm_jw_key_begin_array(c->w, "Certificates");
	HSM_TRY(hsm_kms_cert_list(c->s->kms, &c->auth->caller, &m, hsm_marker_at(&after),
	                          (size_t)limit, list_one, &l, &truncated));
	hsm_jw_end_array(c->w);
	hsm_jw_bool(c->w, "Truncated", truncated);
	if (truncated) {
		HSM_TRY(hsm_marker_encode(HSM_MARKER_CERTIFICATES, NULL, l.last, &next));
		hsm_jw_str_n(c->w, "NextMarker", (const char *)next.data, next.len);
	}
out:
	hsm_buf_free(&object_id);
	hsm_buf_free(&after);
	hsm_buf_free(&next);
	return res;
}

hsm_result hsm_admin_delete_certificate(hsm_admin_ctx *c)
{
	const char *id;
	HSM_GUARD(read_id(c, &id));
	HSM_GUARD(hsm_kms_cert_delete(c->s->kms, &c->auth->caller, id));
	hsm_server_recount(c->s); /* /metrics' certificate gauges */
	return HSM_SUCCESS;
}
