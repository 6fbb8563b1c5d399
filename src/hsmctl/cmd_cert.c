/*
 * cmd_cert.c - certificates kept beside the keys, against a running hsmd.
 *
 *   hsmctl --endpoint URL cert import FILE [--key KEY] [--label L] [--id HEX]
 *   hsmctl --endpoint URL cert list [--id HEX | --key KEY] [--label L]
 *   hsmctl --endpoint URL cert show ID [--pem] | delete ID
 *
 * FILE holds one certificate, PEM or DER, or a PEM chain: the first is the
 * key's, the others its issuers, stored too (once; the first too when it is
 * stored with the same label and ObjectId already).  With --key the first must
 * certify that key, and its PKCS#11 CKA_ID becomes the key objects' CKA_ID
 * (the key's own, if an alias gives it one, else its key id); the label defaults to the alias --key names, which is
 * the key objects' CKA_LABEL, so PKCS#11 applications find key and
 * certificate under one name.  Where ImportCertificate waits for custodians,
 * each import waits for its approval (hsmctl_call_approved), so a chain is
 * stored in one run instead of one certificate per run.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/encoding.h"
#include "common/util.h"
#include "hsmctl/hsmctl.h"

#define CERT_FILE_MAX (64 * 1024)

/* Calls target with body (consumed), waiting for custodians where the node gates it. */
static hsm_result call(const char *target, json_t *body, json_t **out)
{
	hsm_result r = hsmctl_call_approved(target, body, out);
	json_decref(body);
	return r;
}

/*
 * The file's certificates as base64 DER, in order: one DER certificate, or
 * the PEM ("CERTIFICATE") blocks of a chain.
 */
static hsm_result read_certs(const char *path, json_t *out)
{
	hsm_buf text = {0}, b64 = {0};
	HSM_GUARD(hsm_read_file(path, CERT_FILE_MAX, &text));
	hsm_result r = HSM_SUCCESS;
	if (text.len > 0 && text.data[0] == 0x30) { /* a DER SEQUENCE */
		r = hsm_b64_encode(&b64, text.data, text.len);
		if (hsm_ok(r))
			json_array_append_new(out, json_stringn((const char *)b64.data, b64.len));
		hsm_buf_free(&b64);
		hsm_buf_free(&text);
		return r;
	}
	BIO *b = BIO_new_mem_buf(text.data, (int)text.len);
	X509 *x;
	while (hsm_ok(r) && b != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		unsigned char *d = NULL;
		int n = i2d_X509(x, &d);
		r = n > 0 ? hsm_b64_encode(&b64, d, (size_t)n) : HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
		if (hsm_ok(r))
			json_array_append_new(out, json_stringn((const char *)b64.data, b64.len));
		hsm_buf_free(&b64);
		OPENSSL_free(d);
		X509_free(x);
	}
	BIO_free(b);
	hsm_buf_free(&text);
	if (hsm_ok(r) && json_array_size(out) == 0)
		r = HSM_FAIL(HSM_ERR_VALIDATION, "%s holds no PEM or DER certificate", path);
	return r;
}

/*
 * Lists the stored certificates (those with object_id, base64, and label
 * when not NULL) page by page, calling each(item, arg) on each; a true
 * answer stops the listing.
 */
static hsm_result each_listed(json_t *object_id, const char *label,
                              bool (*each)(json_t *item, void *arg), void *arg)
{
	char marker[1024] = ""; /* opaque: as long as hsmd takes one (server/marker.h) */
	for (;;) {
		json_t *body = json_pack("{s:i}", "Limit", 1000), *out = NULL, *item;
		if (marker[0] != '\0')
			json_object_set_new(body, "Marker", json_string(marker));
		if (object_id != NULL)
			json_object_set(body, "ObjectId", object_id);
		if (label != NULL)
			json_object_set_new(body, "Label", json_string(label));
		HSM_GUARD(call("HsmdAdmin.ListCertificates", body, &out));
		bool stop = false;
		size_t i;
		json_array_foreach(json_object_get(out, "Certificates"), i, item)
		{
			if (!stop)
				stop = each(item, arg);
		}
		const char *next = json_string_value(json_object_get(out, "NextMarker"));
		bool more = !stop && json_is_true(json_object_get(out, "Truncated")) && next != NULL;
		if (more)
			snprintf(marker, sizeof(marker), "%s", next);
		json_decref(out);
		if (!more)
			return HSM_SUCCESS;
	}
}

typedef struct der_match {
	const char *b64;
	char *id;
} der_match;

static bool same_der(json_t *item, void *arg)
{
	der_match *m = arg;
	const char *der = json_string_value(json_object_get(item, "Certificate"));
	const char *cid = json_string_value(json_object_get(item, "CertificateId"));
	if (der == NULL || cid == NULL || strcmp(der, m->b64) != 0)
		return false;
	snprintf(m->id, 64, "%s", cid);
	return true;
}

/*
 * The id of a stored certificate whose base64 DER is b64, or ""; with
 * object_id (base64) and label, only among those stored with them.
 */
static hsm_result stored_as(const char *b64, json_t *object_id, const char *label, char id[64])
{
	id[0] = '\0';
	der_match m = {b64, id};
	return each_listed(object_id, label, same_der, &m);
}

/*
 * A key's PKCS#11 CKA_ID (raw): its own when one of its aliases gives it one
 * (common/encoding.h, HSM_PKCS11_ID_ALIAS), else the key id.
 */
static hsm_result key_object_id(const char *key_id, hsm_buf *raw)
{
	char marker[1024] = "";
	bool found = false;
	hsm_result r = HSM_SUCCESS;
	while (hsm_ok(r) && !found) {
		json_t *ans = NULL, *body = json_pack("{s:s,s:i}", "KeyId", key_id, "Limit", 100);
		if (marker[0] != '\0')
			json_object_set_new(body, "Marker", json_string(marker));
		r = call("TrentService.ListAliases", body, &ans);
		size_t i;
		json_t *a;
		json_array_foreach(json_object_get(ans, "Aliases"), i, a) {
			const char *name = json_string_value(json_object_get(a, "AliasName"));
			if (!found && name != NULL)
				found = hsm_pkcs11_id_of_alias(name, raw);
		}
		const char *next = json_string_value(json_object_get(ans, "NextMarker"));
		bool more = json_is_true(json_object_get(ans, "Truncated")) && next != NULL;
		if (more)
			snprintf(marker, sizeof(marker), "%s", next);
		json_decref(ans);
		if (!more)
			break;
	}
	if (hsm_ok(r) && !found)
		r = hsm_buf_set(raw, key_id, strlen(key_id));
	return r;
}

/*
 * The ObjectId a list asks for, base64: --id's bytes, or the CKA_ID of the
 * key --key names (a key's certificates carry it; an import stores it so).
 * NULL when neither is given.
 */
static hsm_result object_id_of(const char *hex, const char *key, json_t **out)
{
	*out = NULL;
	hsm_buf raw = {0}, b64 = {0};
	hsm_result r = HSM_SUCCESS;
	if (hex != NULL) {
		r = hsm_hex_decode(&raw, hex, strlen(hex), HSM_ERR_VALIDATION);
	} else if (key != NULL) {
		json_t *ans = NULL;
		r = call("TrentService.DescribeKey", json_pack("{s:s}", "KeyId", key), &ans);
		const char *id = json_string_value(
		    json_object_get(json_object_get(ans, "KeyMetadata"), "KeyId"));
		if (hsm_ok(r))
			r = id != NULL ? key_object_id(id, &raw)
			               : HSM_FAIL(HSM_ERR_INTERNAL, "DescribeKey named no key id");
		json_decref(ans);
	}
	if (hsm_ok(r) && (hex != NULL || key != NULL))
		r = hsm_b64_encode(&b64, raw.data, raw.len);
	if (hsm_ok(r) && (hex != NULL || key != NULL))
		*out = json_stringn(b64.len ? (const char *)b64.data : "", b64.len);
	hsm_buf_free(&raw);
	hsm_buf_free(&b64);
	return r;
}

/* Imports one certificate (body taken) and prints what hsmd says of it. */
static hsm_result import_one(json_t *body)
{
	json_t *out = NULL;
	hsm_result r = hsmctl_call_approved("HsmdAdmin.ImportCertificate", body, &out);
	json_decref(body);
	HSM_GUARD(r);
	json_object_del(out, "Certificate");
	hsmctl_print_fields(out);
	json_decref(out);
	return HSM_SUCCESS;
}

static int import(int argc, char **argv)
{
	static const char usage[] = "FILE [--key KEY] [--label L] [--id HEX]";
	const char *file = NULL, *key = NULL, *label = NULL, *id = NULL;
	hsmctl_seen seen = {0};
	for (int i = 2; i < argc; i++) {
		const char **opt = strcmp(argv[i], "--key") == 0     ? &key
		                   : strcmp(argv[i], "--label") == 0 ? &label
		                   : strcmp(argv[i], "--id") == 0    ? &id
		                                                     : NULL;
		if (opt != NULL && hsmctl_once(&seen, "cert import", argv[i] + 2) != 0)
			return 2;
		if (opt != NULL && i + 1 < argc)
			*opt = argv[++i];
		else if (opt == NULL && argv[i][0] != '-' && file == NULL)
			file = argv[i];
		else
			return hsmctl_usage("cert import", "%s", usage);
	}
	if (file == NULL)
		return hsmctl_usage("cert import", "%s", usage);
	hsm_buf raw_id = {0}, id64 = {0};
	json_t *certs = json_array(), *body = json_object();
	hsm_result r = read_certs(file, certs);
	if (hsm_ok(r) && id != NULL)
		r = hsm_hex_decode(&raw_id, id, strlen(id), HSM_ERR_VALIDATION);
	if (hsm_ok(r) && id != NULL)
		r = hsm_b64_encode(&id64, raw_id.data, raw_id.len);
	/*
	 * The first certificate is the key's, with the options.  Stored already
	 * with the same label and ObjectId (the import ran before), it is not
	 * stored again: running the same import twice keeps one of each.
	 */
	json_t *object_id = NULL;
	char have[64] = "";
	if (label == NULL && key != NULL && strncmp(key, "alias/", 6) == 0)
		label = key + 6;
	if (hsm_ok(r))
		r = object_id_of(id, key, &object_id);
	if (hsm_ok(r) && object_id == NULL && (object_id = json_string("")) == NULL)
		r = HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
	if (hsm_ok(r))
		r = stored_as(json_string_value(json_array_get(certs, 0)), object_id,
		              label != NULL ? label : "", have);
	if (hsm_ok(r) && have[0] != '\0') {
		printf("CertificateId: %s\nAlreadyStored: true\n", have);
	} else if (hsm_ok(r)) {
		json_object_set(body, "Certificate", json_array_get(certs, 0));
		if (key != NULL)
			json_object_set_new(body, "KeyId", json_string(key));
		if (label != NULL)
			json_object_set_new(body, "Label", json_string(label));
		if (id != NULL)
			json_object_set_new(body, "ObjectId",
			                    json_stringn(id64.len ? (const char *)id64.data : "", id64.len));
		r = import_one(body);
		body = NULL; /* taken */
	}
	json_decref(object_id);
	/*
	 * The rest of a chain: its issuers, which PKCS#11 applications find by
	 * CKA_SUBJECT (Java's key store builds an entry's chain so).  One hsmd
	 * holds already, as for another key's chain, is not stored twice.
	 */
	for (size_t i = 1; hsm_ok(r) && i < json_array_size(certs); i++) {
		const char *b64 = json_string_value(json_array_get(certs, i));
		r = stored_as(b64, NULL, NULL, have);
		printf("\n");
		if (hsm_ok(r) && have[0] != '\0')
			printf("CertificateId: %s\nAlreadyStored: true\n", have);
		else if (hsm_ok(r))
			r = import_one(json_pack("{s:s}", "Certificate", b64));
	}
	json_decref(body);
	json_decref(certs);
	hsm_buf_free(&raw_id);
	hsm_buf_free(&id64);
	return hsm_failed(r) ? hsmctl_fail("cert import") : 0;
}

/* One certificate of `cert list`, without its DER (`cert show ID --pem` prints that). */
static bool print_listed(json_t *item, void *arg)
{
	(void)arg;
	json_object_del(item, "Certificate");
	hsmctl_print_fields(item);
	printf("\n");
	return false;
}

static int list(int argc, char **argv)
{
	static const char usage[] = "list [--id HEX | --key KEY] [--label L]";
	const char *hex = NULL, *key = NULL, *label = NULL;
	hsmctl_seen seen = {0};
	for (int i = 2; i < argc; i++) {
		const char **opt = strcmp(argv[i], "--key") == 0     ? &key
		                   : strcmp(argv[i], "--label") == 0 ? &label
		                   : strcmp(argv[i], "--id") == 0    ? &hex
		                                                     : NULL;
		if (opt == NULL || i + 1 >= argc)
			return hsmctl_usage("cert", "%s", usage);
		if (hsmctl_once(&seen, "cert list", argv[i] + 2) != 0)
			return 2;
		*opt = argv[++i];
	}
	if (hex != NULL && key != NULL)
		return hsmctl_usage("cert", "%s", usage);
	json_t *object_id = NULL;
	if (hsm_failed(object_id_of(hex, key, &object_id)))
		return hsmctl_fail("cert list");
	hsm_result r = each_listed(object_id, label, print_listed, NULL);
	json_decref(object_id);
	return hsm_failed(r) ? hsmctl_fail("cert list") : 0;
}

/* The certificate in PEM, from the answer's base64 DER. */
static int print_pem(json_t *c)
{
	const char *b64 = json_string_value(json_object_get(c, "Certificate"));
	hsm_buf der = {0};
	if (b64 == NULL || hsm_failed(hsm_b64_decode(&der, b64, strlen(b64), HSM_ERR_VALIDATION)))
		return hsmctl_fail("cert show");
	const unsigned char *p = der.data;
	X509 *x = d2i_X509(NULL, &p, (long)der.len);
	int rc = x != NULL && PEM_write_X509(stdout, x) == 1 ? 0 : 1;
	if (rc != 0)
		fprintf(stderr, "hsmctl: cert show: the answer holds no certificate\n");
	X509_free(x);
	hsm_buf_free(&der);
	return rc;
}

int hsmctl_cmd_cert(int argc, char **argv)
{
	static const char usage[] = "import FILE [--key KEY] [--label L] [--id HEX] | list [--id HEX "
	                            "| --key KEY] [--label L] | show ID [--pem] | delete ID";
	if (!hsmctl_online())
		return hsmctl_usage("cert", "needs --endpoint (a running hsmd)");
	if (argc >= 2 && strcmp(argv[1], "import") == 0)
		return import(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "list") == 0)
		return list(argc, argv);
	bool pem = argc == 4 && strcmp(argv[3], "--pem") == 0;
	if ((argc == 3 || pem) && strcmp(argv[1], "show") == 0) {
		json_t *out = NULL;
		if (hsm_failed(call("HsmdAdmin.GetCertificate",
		                    json_pack("{s:s}", "CertificateId", argv[2]), &out)))
			return hsmctl_fail("cert show");
		json_t *c = json_object_get(out, "Certificate");
		int rc = 0;
		if (pem) {
			rc = print_pem(c);
		} else {
			json_object_del(c, "Certificate");
			hsmctl_print_fields(c);
		}
		json_decref(out);
		return rc;
	}
	if (argc == 3 && strcmp(argv[1], "delete") == 0) {
		json_t *out = NULL;
		if (hsm_failed(call("HsmdAdmin.DeleteCertificate",
		                    json_pack("{s:s}", "CertificateId", argv[2]), &out)))
			return hsmctl_fail("cert delete");
		json_decref(out);
		printf("deleted: %s\n", argv[2]);
		return 0;
	}
	return hsmctl_usage("cert", "%s", usage);
}
