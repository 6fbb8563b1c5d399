/*
 * cmd_import.c - hsmctl key import: key material made elsewhere into a key
 * created with Origin EXTERNAL, wrapped here so that it never travels or
 * rests in the clear on its way into hsmd.
 *
 *   hsmctl --endpoint URL key import KEY --material FILE [--wrapping-key-spec S]
 *                                        [--valid-days N] [--new] [--description TEXT]
 *   hsmctl key import --data-dir DIR --share FILE... KEY --material FILE [...]
 *
 * FILE is a private key (PEM or DER, PKCS#8 or the traditional forms,
 * unencrypted) for RSA, ECC and Ed25519 keys, and the raw key bytes for
 * SYMMETRIC_DEFAULT (32) and HMAC keys.  hsmctl asks for a wrapping key
 * (GetParametersForImport, RSA_4096 unless --wrapping-key-spec says
 * otherwise), wraps the material as RSA_AES_KEY_WRAP_SHA_256 does (a fresh
 * AES-256 key under RSA-OAEP-SHA-256, the material under that key with
 * AES-KWP) and imports it (ImportKeyMaterial); the material does not expire
 * unless --valid-days gives it 1 to 365 days.  --new imports new material
 * into a key that has some (ImportType NEW_KEY_MATERIAL): it waits, pending
 * rotation, until RotateKeyOnDemand (offline: hsmctl key rotate) makes it
 * current.  Online the calls go to the
 * node as any client's would; offline they run in-process, audited in the
 * data directory's trail.
 *
 * Where ImportKeyMaterial waits for custodians (approval_operations), only
 * the identical request uses their approval, and a new run could not make
 * it again (a new wrapping key and token each time), so hsmctl keeps the
 * request and waits for them (hsmctl_call_approved).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "common/encoding.h"
#include "common/secret.h"
#include "common/util.h"
#include "client/client.h"
#include "hsmctl/hsmctl.h"
#include "hsmctl/local.h"

#define MATERIAL_FILE_MAX 16384
#define WRAP_ALG "RSA_AES_KEY_WRAP_SHA_256"
#define DAY 86400

typedef struct import_opts {
	const char *data_dir, *material, *wrapping_spec, *key;
	char *shares[HSMCTL_MAX_SHARE_ARGS];
	size_t n_shares;
	int64_t valid_days;
	bool new_material;
	const char *description;
} import_opts;

static int parse(int argc, char **argv, import_opts *o)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"share", required_argument, NULL, 's'},
	    {"material", required_argument, NULL, 'm'},
	    {"wrapping-key-spec", required_argument, NULL, 'w'},
	    {"valid-days", required_argument, NULL, 'v'},
	    {"new", no_argument, NULL, 'n'},
	    {"description", required_argument, NULL, 'D'},
	    {NULL, 0, NULL, 0}};
	hsmctl_seen seen = {0};
	optind = 1;
	for (int c, i = -1; (c = getopt_long(argc, argv, "", longopts, &i)) != -1; i = -1) {
		if (c != 's' && hsmctl_getopt_once(&seen, "key import", longopts, i) != 0)
			return 2;
		switch (c) {
		case 'd': o->data_dir = optarg; break;
		case 's':
			if (o->n_shares == HSMCTL_MAX_SHARE_ARGS)
				return hsmctl_usage("key import", "too many --share options");
			o->shares[o->n_shares++] = optarg;
			break;
		case 'm': o->material = optarg; break;
		case 'w': o->wrapping_spec = optarg; break;
		case 'n': o->new_material = true; break;
		case 'D': o->description = optarg; break;
		case 'v':
			if (hsm_failed(hsm_parse_i64(optarg, 1, 365, &o->valid_days)))
				return hsmctl_usage("key import", "--valid-days: %s", hsm_last_message());
			break;
		default: return hsmctl_usage("key import", "unknown option");
		}
	}
	if (optind < argc)
		o->key = argv[optind++];
	if (optind < argc)
		return hsmctl_usage("key import", "unexpected argument '%s'", argv[optind]);
	if (o->key == NULL || o->material == NULL)
		return hsmctl_usage("key import", "give KEY and --material FILE");
	if (!hsmctl_online() && o->data_dir == NULL)
		return hsmctl_usage("key import", "needs --endpoint (a running hsmd) or --data-dir");
	if (o->wrapping_spec == NULL)
		o->wrapping_spec = "RSA_4096";
	return 0;
}

/* Whether the file is PEM (it may hold a secret: compared without branching on its bytes). */
static bool is_pem(const hsm_buf *file)
{
	static const char tag[] = "-----BEGIN ";
	return file->len > sizeof(tag) - 1 && hsm_ct_equal(file->data, tag, sizeof(tag) - 1);
}

/* A private key in the file, as DER PKCS#8 into der (secure); false when it holds none. */
static bool private_key(const hsm_buf *file, hsm_buf *der)
{
	EVP_PKEY *pkey = NULL;
	BIO *in = BIO_new_mem_buf(file->data, (int)file->len);
	if (in == NULL)
		return false;
	if (is_pem(file)) {
		pkey = PEM_read_bio_PrivateKey(in, NULL, NULL, (void *)"");
	} else {
		const unsigned char *p = file->data;
		pkey = d2i_AutoPrivateKey(NULL, &p, (long)file->len);
		if (pkey != NULL && p != file->data + file->len) { /* trailing bytes: not a key */
			EVP_PKEY_free(pkey);
			pkey = NULL;
		}
	}
	BIO_free(in);
	if (pkey == NULL)
		return false;
	bool ok = false;
	BIO *out = BIO_new(BIO_s_secmem());
	char *p = NULL;
	if (out != NULL && i2d_PKCS8PrivateKey_bio(out, pkey, NULL, NULL, 0, NULL, NULL) == 1) {
		long n = BIO_get_mem_data(out, &p);
		ok = n > 0 && hsm_ok(hsm_buf_put(der, p, (size_t)n));
	}
	BIO_free(out);
	EVP_PKEY_free(pkey);
	return ok;
}

/* The material to import: a private key's PKCS#8, else the file's bytes as they are. */
static hsm_result read_material(const char *path, hsm_buf *material)
{
	hsm_buf file;
	hsm_buf_init_secure(&file);
	hsm_result r = hsm_read_file(path, MATERIAL_FILE_MAX, &file);
	if (hsm_ok(r) && file.len == 0)
		r = HSM_FAIL(HSM_ERR_VALIDATION, "%s is empty", path);
	if (hsm_ok(r) && !private_key(&file, material)) {
		if (is_pem(&file))
			r = HSM_FAIL(HSM_ERR_VALIDATION,
			             "%s: PEM that is not an unencrypted private key (decrypt it first, "
			             "e.g. openssl pkey -in FILE -out PLAIN)",
			             path);
		else
			r = hsm_buf_put(material, file.data, file.len); /* raw AES or HMAC key bytes */
	}
	ERR_clear_error();
	hsm_buf_free(&file);
	return r;
}

/* RSA_AES_KEY_WRAP_SHA_256 under the wrapping public key (DER SubjectPublicKeyInfo). */
static hsm_result wrap(const hsm_buf *spki, const hsm_buf *material, hsm_buf *out)
{
	hsm_result res = HSM_SUCCESS;
	uint8_t aes[32];
	const unsigned char *p = spki->data;
	EVP_PKEY *pub = d2i_PUBKEY(NULL, &p, (long)spki->len);
	EVP_PKEY_CTX *pc = NULL;
	EVP_CIPHER_CTX *cc = NULL;
	size_t len = 0;
	int n = 0;
	uint8_t *dst;
	HSM_CHECK(pub != NULL && EVP_PKEY_is_a(pub, "RSA"), HSM_ERR_CRYPTO,
	          "the wrapping key hsmd sent is not an RSA public key");
	/* hsmd's wrapping keys are RSA_2048 to RSA_4096: a smaller one is not hsmd's. */
	HSM_CHECK(EVP_PKEY_get_bits(pub) >= 2048, HSM_ERR_CRYPTO,
	          "the wrapping key hsmd sent has %d bits, fewer than 2048: not wrapping under it",
	          EVP_PKEY_get_bits(pub));
	HSM_CHECK(RAND_priv_bytes(aes, sizeof(aes)) == 1, HSM_ERR_CRYPTO, "no random bytes");
	pc = EVP_PKEY_CTX_new_from_pkey(NULL, pub, NULL);
	HSM_CHECK(pc != NULL && EVP_PKEY_encrypt_init(pc) == 1 &&
	              EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) > 0 &&
	              EVP_PKEY_CTX_set_rsa_oaep_md(pc, EVP_sha256()) > 0 &&
	              EVP_PKEY_CTX_set_rsa_mgf1_md(pc, EVP_sha256()) > 0 &&
	              EVP_PKEY_encrypt(pc, NULL, &len, aes, sizeof(aes)) == 1,
	          HSM_ERR_CRYPTO, "cannot set up RSA-OAEP");
	HSM_TRY(hsm_buf_append_space(out, len, &dst));
	HSM_CHECK(EVP_PKEY_encrypt(pc, dst, &len, aes, sizeof(aes)) == 1, HSM_ERR_CRYPTO,
	          "RSA-OAEP failed");
	cc = EVP_CIPHER_CTX_new();
	HSM_CHECK(cc != NULL, HSM_ERR_NOMEM, "out of memory");
	EVP_CIPHER_CTX_set_flags(cc, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	HSM_CHECK(EVP_EncryptInit_ex(cc, EVP_aes_256_wrap_pad(), NULL, aes, NULL) == 1,
	          HSM_ERR_CRYPTO, "cannot set up AES-KWP");
	size_t at = out->len;
	HSM_TRY(hsm_buf_append_space(out, material->len + 16, &dst));
	HSM_CHECK(EVP_EncryptUpdate(cc, dst, &n, material->data, (int)material->len) == 1 &&
	              n > 0 && (size_t)n <= material->len + 16,
	          HSM_ERR_CRYPTO, "AES-KWP failed");
	out->len = at + (size_t)n;
out:
	OPENSSL_cleanse(aes, sizeof(aes));
	EVP_CIPHER_CTX_free(cc);
	EVP_PKEY_CTX_free(pc);
	EVP_PKEY_free(pub);
	return res;
}

/* ---- online: the node's API ------------------------------------------------------------ */

static hsm_result b64_member(json_t *o, const char *name, hsm_buf *out)
{
	const char *s = json_string_value(json_object_get(o, name));
	HSM_ENSURE(s != NULL, HSM_ERR_INTERNAL, "the answer has no %s", name);
	return hsm_b64_decode(out, s, strlen(s), HSM_ERR_INTERNAL);
}

static hsm_result import_online(const import_opts *o, const hsm_buf *material)
{
	hsm_result res = HSM_SUCCESS;
	hsm_client *c = &hsmctl_globals.client;
	json_t *params = NULL, *out = NULL, *body = NULL;
	hsm_buf token = {0}, spki = {0}, enc = {0}, b64 = {0};
	body = json_pack("{s:s,s:s,s:s}", "KeyId", o->key, "WrappingAlgorithm", WRAP_ALG,
	                 "WrappingKeySpec", o->wrapping_spec);
	HSM_TRY(hsm_client_call_json(c, "TrentService.GetParametersForImport", body, true, &params));
	HSM_TRY(b64_member(params, "ImportToken", &token));
	HSM_TRY(b64_member(params, "PublicKey", &spki));
	HSM_TRY(wrap(&spki, material, &enc));
	json_decref(body);
	body = json_object();
	HSM_CHECK(body != NULL, HSM_ERR_NOMEM, "out of memory");
	json_object_set_new(body, "KeyId", json_string(o->key));
	HSM_TRY(hsm_b64_encode(&b64, token.data, token.len));
	json_object_set_new(body, "ImportToken", json_stringn((const char *)b64.data, b64.len));
	hsm_buf_clear(&b64);
	HSM_TRY(hsm_b64_encode(&b64, enc.data, enc.len));
	json_object_set_new(body, "EncryptedKeyMaterial",
	                    json_stringn((const char *)b64.data, b64.len));
	if (o->valid_days > 0) {
		json_object_set_new(body, "ExpirationModel", json_string("KEY_MATERIAL_EXPIRES"));
		json_object_set_new(body, "ValidTo", json_integer(hsm_now() + o->valid_days * DAY));
	} else {
		json_object_set_new(body, "ExpirationModel", json_string("KEY_MATERIAL_DOES_NOT_EXPIRE"));
	}
	if (o->new_material)
		json_object_set_new(body, "ImportType", json_string("NEW_KEY_MATERIAL"));
	if (o->description != NULL)
		json_object_set_new(body, "KeyMaterialDescription", json_string(o->description));
	HSM_TRY(hsmctl_call_approved("TrentService.ImportKeyMaterial", body, &out));
	const char *id = json_string_value(json_object_get(out, "KeyMaterialId"));
	printf("material-id: %s\n", id != NULL ? id : "-");
	json_decref(out);
	out = NULL;
	json_decref(body);
	body = json_pack("{s:s}", "KeyId", o->key);
	HSM_TRY(hsm_client_call_json(c, "TrentService.DescribeKey", body, true, &out));
	hsmctl_print_fields(json_object_get(out, "KeyMetadata"));
	hsm_key_spec spec;
	const char *spec_name =
	    json_string_value(json_object_get(json_object_get(out, "KeyMetadata"), "KeySpec"));
	if (spec_name != NULL && hsm_ok(hsm_spec_parse(spec_name, &spec)) &&
	    !hsm_spec_is_asymmetric(spec)) {
		/* What the other holder of the material compares (a ceremony's record). */
		json_decref(out);
		out = NULL;
		if (hsm_ok(hsm_client_call_json(c, "HsmdCipher.GetKeyCheckValue", body, true, &out))) {
			json_object_del(out, "KeyId");
			hsmctl_print_fields(out);
		} else {
			fprintf(stderr, "hsmctl: key import: the key check value: %s\n", hsm_last_message());
			printf("KeyCheckValue: -\n");
		}
	}
out:
	json_decref(params);
	json_decref(out);
	json_decref(body);
	hsm_buf_free(&token);
	hsm_buf_free(&spki);
	hsm_buf_free(&enc);
	hsm_buf_free(&b64);
	return res;
}

/* ---- offline: the data directory ------------------------------------------------------- */

static hsm_result import_offline(const import_opts *o, const hsm_buf *material)
{
	hsmctl_local l = {0};
	hsm_import_params p;
	hsm_key_record rec;
	hsm_buf enc = {0};
	memset(&p, 0, sizeof(p));
	memset(&rec, 0, sizeof(rec));
	hsm_result res = hsmctl_local_open_as_is(o->data_dir, o->n_shares, o->shares, &l);
	if (hsm_failed(res))
		goto out;
	/* Each call is audited with its outcome; a failure to audit fails the command. */
	hsm_result done = hsm_kms_get_import_params(l.kms, &l.caller, o->key, WRAP_ALG,
	                                            o->wrapping_spec, &p);
	HSM_TRY(hsmctl_local_audit(&l, "GetParametersForImport", hsm_ok(done) ? p.key_id : NULL, 0,
	                           done));
	HSM_TRY(done);
	HSM_TRY(wrap(&p.public_der, material, &enc));
	hsm_import_req req = {.key = p.key_id,
	                      .token = p.token.data,
	                      .token_len = p.token.len,
	                      .encrypted = enc.data,
	                      .encrypted_len = enc.len,
	                      .expiration_model = o->valid_days > 0 ? "KEY_MATERIAL_EXPIRES"
	                                                            : "KEY_MATERIAL_DOES_NOT_EXPIRE",
	                      .has_valid_to = o->valid_days > 0,
	                      .valid_to = hsm_now() + o->valid_days * DAY,
	                      .type = o->new_material ? HSM_IMPORT_NEW : HSM_IMPORT_ANY,
	                      .description = o->description};
	uint32_t version = 0;
	done = hsm_kms_import_material(l.kms, &l.caller, &req, &rec, &version);
	HSM_TRY(hsmctl_local_audit(&l, "ImportKeyMaterial", p.key_id, version, done));
	HSM_TRY(done);
	char id[HSM_MATERIAL_ID_LEN + 1];
	HSM_TRY(hsm_kms_material_id(rec.key_id, version, id));
	printf("material-id: %s\nversion: %u\n", id, version);
	char valid_to[21] = "-";
	if (rec.valid_to != 0)
		hsm_format_time(rec.valid_to, valid_to);
	printf("key: %s\nstate: %s\norigin: %s\nmaterial-valid-to: %s\n", rec.key_id,
	       hsm_key_state_name(rec.state), hsm_key_origin_name(rec.origin), valid_to);
	if (!hsm_spec_is_asymmetric(rec.spec)) {
		/* What the other holder of the material compares (a ceremony's record). */
		uint8_t kcv[HSM_KCV_LEN];
		hsm_kcv_alg alg;
		hsm_used_key used;
		done = hsm_kms_key_check_value(l.kms, &l.caller, rec.key_id, kcv, &alg, &used);
		HSM_TRY(hsmctl_local_audit(&l, "GetKeyCheckValue", rec.key_id, version, done));
		HSM_TRY(done);
		printf("check-value: %02X%02X%02X (%s)\n", kcv[0], kcv[1], kcv[2], hsm_kcv_alg_name(alg));
	}
out:
	res = hsmctl_local_explain(&l, o->n_shares, res);
	hsm_import_params_clear(&p);
	hsm_key_record_clear(&rec);
	hsm_buf_free(&enc);
	hsmctl_local_close(&l);
	return res;
}

int hsmctl_cmd_key_import(int argc, char **argv)
{
	import_opts o;
	memset(&o, 0, sizeof(o));
	int rc = parse(argc, argv, &o);
	/* Over plain HTTP the wrapping key comes unauthenticated: whoever answers may send theirs. */
	if (rc == 0 && hsmctl_online())
		rc = hsmctl_require_private("key import", "the key material");
	if (rc != 0)
		return rc;
	hsm_buf material;
	hsm_buf_init_secure(&material);
	hsm_result r = read_material(o.material, &material);
	if (hsm_ok(r))
		r = hsmctl_online() ? import_online(&o, &material) : import_offline(&o, &material);
	hsm_buf_free(&material);
	return hsm_ok(r) ? 0 : hsmctl_fail("key import");
}
