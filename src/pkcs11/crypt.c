/*
 * crypt.c - encryption through hsmd (p11.h), one part only.
 *
 * RSA-OAEP: C_Encrypt with the public key object of an ENCRYPT_DECRYPT RSA
 * key is hsmd's Encrypt, C_Decrypt with its private key object hsmd's
 * Decrypt, with EncryptionAlgorithm RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.
 * Those are OAEP with MGF1 of the same hash and no label, so only such
 * CK_RSA_PKCS_OAEP_PARAMS are accepted.
 *
 * CKM_AES_GCM with the secret key object of a SYMMETRIC_DEFAULT key is
 * hsmd's HsmdCipher.GcmEncrypt / GcmDecrypt.  As AWS CloudHSM does, the IV
 * is the HSM's, drawn for each encryption and written into the caller's
 * CK_GCM_PARAMS pIv when C_Encrypt or C_EncryptFinal completes.  PKCS#11
 * makes pIv an input valid during C_EncryptInit only, so the module writes
 * there only for a caller that asked for hsmd's IV, by giving 12 zero bytes,
 * and so keeps the buffer; an IV of the caller's own is refused at
 * C_EncryptInit (CKR_MECHANISM_PARAM_INVALID): hsmd never encrypts under it,
 * and a caller that set one (Java's SunPKCS11 does) may have freed the buffer
 * since.  Tags are 128 bits,
 * additional data at most 8192 bytes, data at most 65536.  In parts,
 * C_EncryptUpdate and C_DecryptUpdate gather the input and give no output
 * (decryption releases nothing before the tag verified); the Final call
 * does the work.
 */
#include <string.h>

#include "common/encoding.h"
#include "pkcs11/p11.h"

/* The KMS algorithm of OAEP parameters, or NULL; *hash_len receives the hash's size. */
static const char *oaep_algorithm(const CK_MECHANISM *mech, size_t *hash_len)
{
	if (mech->pParameter == NULL || mech->ulParameterLen != sizeof(CK_RSA_PKCS_OAEP_PARAMS))
		return NULL;
	const CK_RSA_PKCS_OAEP_PARAMS *p = mech->pParameter;
	if (p->source != CKZ_DATA_SPECIFIED && p->source != 0)
		return NULL;
	/* hsmd's OAEP has no label.  A length without its data (pSourceData NULL) is no empty
	 * label either, but a malformed one: refused, not read as none. */
	if (p->ulSourceDataLen != 0)
		return NULL;
	if (p->hashAlg == CKM_SHA_1 && p->mgf == CKG_MGF1_SHA1) {
		*hash_len = 20;
		return "RSAES_OAEP_SHA_1";
	}
	if (p->hashAlg == CKM_SHA256 && p->mgf == CKG_MGF1_SHA256) {
		*hash_len = 32;
		return "RSAES_OAEP_SHA_256";
	}
	return NULL;
}

#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16
#define GCM_MAX_AAD 8192
#define GCM_MAX_DATA 65536

/* CKM_AES_GCM's init (an AES key, checked): a 12-byte IV buffer, a 128-bit tag. */
static CK_RV gcm_init(p11_op *op, bool encrypt, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	if (mech->pParameter == NULL || mech->ulParameterLen != sizeof(CK_GCM_PARAMS))
		return CKR_MECHANISM_PARAM_INVALID;
	const CK_GCM_PARAMS *p = mech->pParameter;
	if (p->pIv == NULL || p->ulIvLen != GCM_IV_LEN || p->tag_bits != 8 * GCM_TAG_LEN ||
	    p->aad_len > GCM_MAX_AAD || (p->aad_ptr == NULL && p->aad_len > 0))
		return CKR_MECHANISM_PARAM_INVALID;
	static const uint8_t none[GCM_IV_LEN];
	if (encrypt && !hsm_ct_equal(p->pIv, none, GCM_IV_LEN))
		return CKR_MECHANISM_PARAM_INVALID; /* an IV of the caller's: see the top */
	memset(op, 0, sizeof(*op));
	op->serial = p11_serial();
	hsm_buf_init_secure(&op->input); /* plaintext, in parts */
	if (p->aad_len > 0 && hsm_failed(hsm_buf_set(&op->data, p->aad_ptr, p->aad_len))) {
		hsm_buf_free(&op->input);
		return CKR_HOST_MEMORY;
	}
	if (encrypt)
		op->iv_out = p->pIv;
	else
		memcpy(op->iv, p->pIv, GCM_IV_LEN);
	op->mech = p11_mech_find(CKM_AES_GCM);
	op->key = key;
	op->active = true;
	return CKR_OK;
}

/*
 * GcmEncrypt or GcmDecrypt of in; the answer's members into out (and the IV).
 * The module lock is let go meanwhile: op, o and in are not used once the
 * request is out, and t tells whether the session is still there.
 */
static CK_RV call_gcm(bool encrypt, const p11_ticket *t, const p11_op *op, const p11_object *o,
                      const CK_BYTE *in, CK_ULONG n, hsm_buf *out, uint8_t iv[GCM_IV_LEN])
{
	char key_id[HSM_UUID_STRLEN + 1];
	snprintf(key_id, sizeof(key_id), "%s", o->key_id);
	hsm_buf data, aad = {0}, ivb = {0};
	hsm_buf_init_secure(&data);
	json_t *body = json_object(), *ans = NULL;
	CK_RV rv = CKR_HOST_MEMORY;
	if (body == NULL || hsm_failed(hsm_b64_encode(&data, in, n)) ||
	    hsm_failed(hsm_b64_encode(&aad, op->data.data, op->data.len)) ||
	    (!encrypt && hsm_failed(hsm_b64_encode(&ivb, op->iv, GCM_IV_LEN))))
		goto out;
	/* A member left out would change the request (no AdditionalData: none bound). */
	if (!p11_set(body, "KeyId", json_string(key_id)) ||
	    !p11_set(body, encrypt ? "Plaintext" : "Ciphertext",
	             json_stringn((const char *)data.data, data.len)) ||
	    !p11_set(body, "AdditionalData", json_stringn((const char *)aad.data, aad.len)) ||
	    (!encrypt && !p11_set(body, "Iv", json_stringn((const char *)ivb.data, ivb.len))))
		goto out;
	/* The plaintext of a decryption never passes through jansson. */
	rv = p11_call_session_secret(t, encrypt ? "HsmdCipher.GcmEncrypt" : "HsmdCipher.GcmDecrypt",
	                             body, &ans, encrypt ? "Ciphertext" : "Plaintext", out);
	body = NULL; /* taken */
	if (rv == CKR_OK && encrypt) {
		hsm_buf got = {0};
		rv = p11_b64_member(ans, "Iv", &got);
		if (rv == CKR_OK && got.len != GCM_IV_LEN)
			rv = CKR_DEVICE_ERROR;
		if (rv == CKR_OK)
			memcpy(iv, got.data, GCM_IV_LEN);
		hsm_buf_free(&got);
	}
out:
	json_decref(body);
	json_decref(ans);
	hsm_buf_free(&data);
	hsm_buf_free(&aad);
	hsm_buf_free(&ivb);
	return rv;
}

/*
 * The AES-GCM encryption of data into out, hsmd's IV into the caller's pIv.
 * *query tells that only the length was asked for (or the buffer was too
 * small): the operation goes on.
 */
static CK_RV gcm_encrypt(p11_op *op, const p11_ticket *t, const p11_object *o,
                         const CK_BYTE *data, CK_ULONG len, CK_BYTE_PTR out, CK_ULONG_PTR out_n,
                         bool *query)
{
	if (len > GCM_MAX_DATA)
		return CKR_DATA_LEN_RANGE;
	CK_ULONG need = len + GCM_TAG_LEN;
	if (out == NULL || *out_n < need) {
		*out_n = need;
		*query = true;
		return out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
	}
	hsm_buf ct = {0};
	uint8_t iv[GCM_IV_LEN];
	CK_BYTE_PTR iv_out = op->iv_out; /* op may be ended (a logout) before hsmd answers */
	CK_RV rv = call_gcm(true, t, op, o, data, len, &ct, iv);
	if (rv == CKR_OK && ct.len != need)
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK) {
		memcpy(out, ct.data, ct.len);
		memcpy(iv_out, iv, GCM_IV_LEN);
		*out_n = need;
	}
	hsm_buf_free(&ct);
	return rv;
}

/* The AES-GCM decryption of data into out; *query as for gcm_encrypt. */
static CK_RV gcm_decrypt(p11_op *op, const p11_ticket *t, const p11_object *o,
                         const CK_BYTE *data, CK_ULONG len, CK_BYTE_PTR out, CK_ULONG_PTR out_n,
                         bool *query)
{
	if (len < GCM_TAG_LEN || len > GCM_MAX_DATA + GCM_TAG_LEN)
		return CKR_ENCRYPTED_DATA_LEN_RANGE;
	if (out == NULL || *out_n < len - GCM_TAG_LEN) {
		*out_n = len - GCM_TAG_LEN; /* exact: GCM adds only the tag */
		*query = true;
		return out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
	}
	hsm_buf pt;
	hsm_buf_init_secure(&pt);
	CK_RV rv = call_gcm(false, t, op, o, data, len, &pt, NULL);
	if (rv == CKR_OK && pt.len != len - GCM_TAG_LEN)
		rv = CKR_DEVICE_ERROR;
	if (rv == CKR_OK) {
		memcpy(out, pt.data, pt.len);
		*out_n = (CK_ULONG)pt.len;
	}
	hsm_buf_free(&pt);
	return rv;
}

static CK_RV crypt_init(CK_SESSION_HANDLE hs, bool encrypt, CK_MECHANISM_PTR mech,
                        CK_OBJECT_HANDLE key)
{
	CK_RV rv = p11_user_session(hs);
	if (rv != CKR_OK)
		return rv;
	p11_session *s = p11_session_get(hs);
	p11_op *op = encrypt ? &s->encrypt : &s->decrypt;
	if (op->active)
		return CKR_OPERATION_ACTIVE;
	if (mech == NULL)
		return CKR_ARGUMENTS_BAD;
	const p11_mech *m = p11_mech_find(mech->mechanism);
	CK_FLAGS fn = encrypt ? CKF_ENCRYPT : CKF_DECRYPT;
	if (m == NULL || (m->flags & fn) == 0)
		return CKR_MECHANISM_INVALID;
	const p11_object *o = p11_key_get(key);
	if (o == NULL)
		return CKR_KEY_HANDLE_INVALID;
	rv = p11_key_permits(o, m, fn);
	if (rv != CKR_OK)
		return rv;
	if (m->family == P11_AES_GCM)
		return gcm_init(op, encrypt, mech, key);
	size_t hash_len = 0;
	const char *alg = oaep_algorithm(mech, &hash_len);
	if (alg == NULL)
		return CKR_MECHANISM_PARAM_INVALID;
	memset(op, 0, sizeof(*op));
	op->serial = p11_serial();
	op->mech = p11_mech_find(CKM_RSA_PKCS_OAEP);
	op->key = key;
	op->hash = alg;
	op->active = true;
	return CKR_OK;
}

CK_RV C_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	ENTER();
	LEAVE(crypt_init(h, true, mech, key));
}

CK_RV C_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
	ENTER();
	LEAVE(crypt_init(h, false, mech, key));
}

/* The largest plaintext OAEP carries in a modulus of k bytes. */
static size_t oaep_max(const p11_op *op, size_t k)
{
	size_t h = strcmp(op->hash, "RSAES_OAEP_SHA_1") == 0 ? 20 : 32;
	return k > 2 * h + 2 ? k - 2 * h - 2 : 0;
}

/*
 * Calls hsmd with input as `in_name` and decodes `out_name` of the answer
 * into out.  The module lock is let go meanwhile: o is not used after.
 */
static CK_RV call_crypt(const char *target, const p11_ticket *t, const p11_op *op,
                        const p11_object *o, const char *in_name, const CK_BYTE *in, CK_ULONG n,
                        const char *out_name, hsm_buf *out)
{
	char key_id[HSM_UUID_STRLEN + 1];
	snprintf(key_id, sizeof(key_id), "%s", o->key_id);
	hsm_buf b64;
	hsm_buf_init_secure(&b64);
	if (hsm_failed(hsm_b64_encode(&b64, in, n))) {
		hsm_buf_free(&b64);
		return CKR_HOST_MEMORY;
	}
	json_t *ans = NULL;
	CK_RV rv = p11_call_session_secret(
	    t, target,
	    json_pack("{s:s,s:s%,s:s}", "KeyId", key_id, in_name, (const char *)b64.data, b64.len,
	              "EncryptionAlgorithm", op->hash),
	    &ans, out_name, out);
	hsm_buf_free(&b64);
	json_decref(ans);
	return rv;
}

/* The session of h, its encryption (or decryption) active (p11_op_session). */
static p11_session *crypting(CK_SESSION_HANDLE h, bool encrypt, bool args_ok, CK_RV *rv)
{
	return p11_op_session(h,
	                      encrypt ? offsetof(p11_session, encrypt)
	                              : offsetof(p11_session, decrypt),
	                      args_ok, rv);
}

CK_RV C_Encrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
                CK_ULONG_PTR out_n)
{
	ENTER();
	CK_RV rv;
	p11_session *s = crypting(h, true, (data != NULL || len == 0) && out_n != NULL, &rv);
	if (s == NULL)
		LEAVE(rv);
	/* Parts given to C_EncryptUpdate end with C_EncryptFinal, not here: refused and ended,
	 * as C_Sign after C_SignUpdate is, rather than the parts dropped. */
	if (s->encrypt.multi) {
		p11_op_reset(&s->encrypt);
		LEAVE(CKR_OPERATION_NOT_INITIALIZED);
	}
	p11_ticket t = p11_ticket_of(h, &s->encrypt);
	const p11_object *o = p11_object_get(s->encrypt.key);
	if (o == NULL) {
		rv = P11_RV_KEY_GONE;
	} else if (s->encrypt.mech->family == P11_AES_GCM) {
		bool query = false;
		rv = gcm_encrypt(&s->encrypt, &t, o, data, len, out, out_n, &query);
		if (query)
			LEAVE(rv); /* the length query leaves the operation running */
	} else if (len == 0 || len > oaep_max(&s->encrypt, o->modulus.len)) {
		rv = CKR_DATA_LEN_RANGE;
	} else {
		CK_ULONG need = (CK_ULONG)o->modulus.len;
		if (out == NULL || *out_n < need) { /* the length query leaves the operation running */
			*out_n = need;
			LEAVE(out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL);
		}
		hsm_buf ct = {0};
		rv = call_crypt("TrentService.Encrypt", &t, &s->encrypt, o, "Plaintext", data, len,
		                "CiphertextBlob", &ct);
		if (rv == CKR_OK && ct.len != need)
			rv = CKR_DEVICE_ERROR;
		if (rv == CKR_OK) {
			memcpy(out, ct.data, ct.len);
			*out_n = need;
		}
		hsm_buf_free(&ct);
	}
	p11_op_end(&s->encrypt, &t);
	LEAVE(rv);
}

CK_RV C_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
                CK_ULONG_PTR out_n)
{
	ENTER();
	CK_RV rv;
	p11_session *s = crypting(h, false, (data != NULL || len == 0) && out_n != NULL, &rv);
	if (s == NULL)
		LEAVE(rv);
	if (s->decrypt.multi) { /* as for C_Encrypt */
		p11_op_reset(&s->decrypt);
		LEAVE(CKR_OPERATION_NOT_INITIALIZED);
	}
	p11_ticket t = p11_ticket_of(h, &s->decrypt);
	const p11_object *o = p11_object_get(s->decrypt.key);
	if (o == NULL) {
		rv = P11_RV_KEY_GONE;
	} else if (s->decrypt.mech->family == P11_AES_GCM) {
		bool query = false;
		rv = gcm_decrypt(&s->decrypt, &t, o, data, len, out, out_n, &query);
		if (query)
			LEAVE(rv);
	} else if (len != o->modulus.len) {
		rv = CKR_ENCRYPTED_DATA_LEN_RANGE;
	} else if (out == NULL) { /* an upper bound: the exact length is known once decrypted */
		*out_n = (CK_ULONG)oaep_max(&s->decrypt, o->modulus.len);
		LEAVE(CKR_OK);
	} else {
		hsm_buf pt;
		hsm_buf_init_secure(&pt);
		rv = call_crypt("TrentService.Decrypt", &t, &s->decrypt, o, "CiphertextBlob", data, len,
		                "Plaintext", &pt);
		/* The operation goes on for a larger buffer: unless a logout ended it meanwhile. */
		if (rv == CKR_OK && *out_n < pt.len) {
			*out_n = (CK_ULONG)pt.len;
			hsm_buf_free(&pt);
			LEAVE(CKR_BUFFER_TOO_SMALL); /* the caller asks again with room */
		}
		if (rv == CKR_OK) {
			memcpy(out, pt.data, pt.len);
			*out_n = (CK_ULONG)pt.len;
		}
		hsm_buf_free(&pt);
	}
	p11_op_end(&s->decrypt, &t);
	LEAVE(rv);
}

/* ---- AES-GCM in parts ------------------------------------------------------------------------ */

/*
 * Gathers a part of the input; RSA-OAEP comes in one part only (p11_op_in_parts).
 * A call without an output buffer asks only how much output this part would
 * give (none: it all comes with the Final call) and takes nothing, as PKCS#11's
 * length convention has it (v2.40 5.2); the call with a buffer gives the part.
 */
static CK_RV gather(CK_SESSION_HANDLE h, bool encrypt, const CK_BYTE *part, CK_ULONG len,
                    const CK_BYTE *out, CK_ULONG_PTR out_n)
{
	CK_RV rv;
	p11_session *s = crypting(h, encrypt, (part != NULL || len == 0) && out_n != NULL, &rv);
	if (s == NULL)
		return rv;
	p11_op *op = encrypt ? &s->encrypt : &s->decrypt;
	size_t max = encrypt ? GCM_MAX_DATA : GCM_MAX_DATA + GCM_TAG_LEN;
	rv = p11_op_in_parts(op);
	if (rv != CKR_OK)
		return rv;
	if (out == NULL) {
		*out_n = 0;
		return CKR_OK;
	}
	if (len > max - op->input.len)
		rv = encrypt ? CKR_DATA_LEN_RANGE : CKR_ENCRYPTED_DATA_LEN_RANGE;
	else if (len > 0 && hsm_failed(hsm_buf_put(&op->input, part, len)))
		rv = CKR_HOST_MEMORY;
	if (rv != CKR_OK) {
		p11_op_reset(op);
		return rv;
	}
	op->multi = true;
	*out_n = 0; /* all output comes with the Final call */
	return CKR_OK;
}

CK_RV C_EncryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG len, CK_BYTE_PTR out,
                      CK_ULONG_PTR out_n)
{
	ENTER();
	LEAVE(gather(h, true, part, len, out, out_n));
}

CK_RV C_DecryptUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG len, CK_BYTE_PTR out,
                      CK_ULONG_PTR out_n)
{
	ENTER();
	LEAVE(gather(h, false, part, len, out, out_n));
}

/* The Final call: the gathered input, encrypted or decrypted in one request. */
static CK_RV finish(CK_SESSION_HANDLE h, bool encrypt, CK_BYTE_PTR out, CK_ULONG_PTR out_n)
{
	CK_RV rv;
	p11_session *s = crypting(h, encrypt, out_n != NULL, &rv);
	if (s == NULL)
		return rv;
	p11_op *op = encrypt ? &s->encrypt : &s->decrypt;
	rv = p11_op_in_parts(op);
	if (rv != CKR_OK)
		return rv;
	p11_ticket t = p11_ticket_of(h, op);
	const p11_object *o = p11_object_get(op->key);
	bool query = false;
	rv = o == NULL   ? P11_RV_KEY_GONE
	     : encrypt ? gcm_encrypt(op, &t, o, op->input.data, op->input.len, out, out_n, &query)
	               : gcm_decrypt(op, &t, o, op->input.data, op->input.len, out, out_n, &query);
	if (!query)
		p11_op_end(op, &t);
	return rv;
}

CK_RV C_EncryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR out_n)
{
	ENTER();
	LEAVE(finish(h, true, out, out_n));
}

CK_RV C_DecryptFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG_PTR out_n)
{
	ENTER();
	LEAVE(finish(h, false, out, out_n));
}
