/*
 * pkcs11_op_ends.c - which calls end the active operation (PKCS#11 v2.40
 * 5.8-5.12): C_Encrypt, C_Decrypt, C_Digest, C_Sign and their Final calls
 * end it on any answer but a length query's CKR_OK and CKR_BUFFER_TOO_SMALL;
 * C_Verify and C_VerifyFinal always; an Update call on any error.  Bad
 * arguments (a NULL length pointer, NULL data with a length) are errors
 * like any other, which only a C caller can make.
 *
 *   pkcs11_op_ends MODULE PIN EC_KEY_ID AES_KEY_ID
 *
 * EC_KEY_ID names a SIGN_VERIFY P-256 key, AES_KEY_ID a SYMMETRIC_DEFAULT key.
 * For each case, in a session of its own: "<case> 0x<rv> ended" or
 * "<case> 0x<rv> active", as a second Init call finds the operation (CKR_OK:
 * the call ended it; CKR_OPERATION_ACTIVE: it did not).  Exits 1 on a set-up
 * error.
 */
#include <stdbool.h>

#include "pkcs11_client.h"

enum op { SIGN, VERIFY, ENCRYPT, DECRYPT, DIGEST };

static CK_FUNCTION_LIST_PTR f;
static CK_OBJECT_HANDLE ec_priv, ec_pub, aes;
static unsigned char iv[12];
static CK_GCM_PARAMS gcm = {iv, sizeof(iv), 96, NULL, 0, 128};

static CK_RV init(CK_SESSION_HANDLE s, enum op op)
{
	CK_MECHANISM ecdsa = {CKM_ECDSA_SHA256, NULL, 0}, sha = {CKM_SHA256, NULL, 0};
	CK_MECHANISM m = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	memset(iv, 0, sizeof(iv)); /* hsmd's IV, asked for with zeros */
	switch (op) {
	case SIGN: return f->C_SignInit(s, &ecdsa, ec_priv);
	case VERIFY: return f->C_VerifyInit(s, &ecdsa, ec_pub);
	case ENCRYPT: return f->C_EncryptInit(s, &m, aes);
	case DECRYPT: return f->C_DecryptInit(s, &m, aes);
	case DIGEST: return f->C_DigestInit(s, &sha);
	}
	return CKR_GENERAL_ERROR;
}

/* One case: a fresh session, op begun (and fed with an Update call, parts), then call. */
typedef CK_RV (*call_fn)(CK_SESSION_HANDLE s);

static void run(const char *name, enum op op, bool parts, call_fn call)
{
	CK_SESSION_HANDLE s;
	CK_RV rv;
	CK_ULONG n = 64;
	unsigned char out[64];
	if ((rv = f->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s)) != CKR_OK)
		fail("C_OpenSession", rv);
	if ((rv = init(s, op)) != CKR_OK)
		fail(name, rv);
	if (parts) {
		CK_BYTE_PTR d = (CK_BYTE_PTR) "data";
		rv = op == SIGN      ? f->C_SignUpdate(s, d, 4)
		     : op == VERIFY  ? f->C_VerifyUpdate(s, d, 4)
		     : op == ENCRYPT ? f->C_EncryptUpdate(s, d, 4, out, &n)
		     : op == DECRYPT ? f->C_DecryptUpdate(s, out, 20, out, &n)
		                     : f->C_DigestUpdate(s, d, 4);
		if (rv != CKR_OK)
			fail(name, rv);
	}
	rv = call(s);
	CK_RV again = init(s, op);
	printf("%s 0x%lx %s\n", name, (unsigned long)rv,
	       again == CKR_OK                 ? "ended"
	       : again == CKR_OPERATION_ACTIVE ? "active"
	                                       : "?");
	f->C_CloseSession(s);
}

static CK_BYTE data[] = "data";
static CK_BYTE buf[256];

/* The cases: a length query and a short buffer (the operation goes on), then bad arguments. */
static CK_RV sign_query(CK_SESSION_HANDLE s)
{
	CK_ULONG n = 0;
	return f->C_Sign(s, data, 4, NULL, &n);
}
static CK_RV sign_short(CK_SESSION_HANDLE s)
{
	CK_ULONG n = 8;
	return f->C_Sign(s, data, 4, buf, &n);
}
static CK_RV sign_no_len(CK_SESSION_HANDLE s) { return f->C_Sign(s, data, 4, buf, NULL); }
static CK_RV sign_no_data(CK_SESSION_HANDLE s)
{
	CK_ULONG n = sizeof(buf);
	return f->C_Sign(s, NULL, 4, buf, &n);
}
static CK_RV sign_update_no_data(CK_SESSION_HANDLE s) { return f->C_SignUpdate(s, NULL, 4); }
static CK_RV sign_final_no_len(CK_SESSION_HANDLE s) { return f->C_SignFinal(s, buf, NULL); }
static CK_RV verify_no_sig(CK_SESSION_HANDLE s) { return f->C_Verify(s, data, 4, NULL, 64); }
static CK_RV verify_no_data(CK_SESSION_HANDLE s) { return f->C_Verify(s, NULL, 4, buf, 64); }
static CK_RV verify_update_no_data(CK_SESSION_HANDLE s) { return f->C_VerifyUpdate(s, NULL, 4); }
static CK_RV verify_final_no_sig(CK_SESSION_HANDLE s) { return f->C_VerifyFinal(s, NULL, 64); }
static CK_RV encrypt_query(CK_SESSION_HANDLE s)
{
	CK_ULONG n = 0;
	return f->C_Encrypt(s, data, 4, NULL, &n);
}
static CK_RV encrypt_no_len(CK_SESSION_HANDLE s) { return f->C_Encrypt(s, data, 4, buf, NULL); }
static CK_RV encrypt_update_no_len(CK_SESSION_HANDLE s)
{
	return f->C_EncryptUpdate(s, data, 4, buf, NULL);
}
static CK_RV encrypt_final_no_len(CK_SESSION_HANDLE s) { return f->C_EncryptFinal(s, buf, NULL); }
static CK_RV decrypt_no_len(CK_SESSION_HANDLE s) { return f->C_Decrypt(s, buf, 20, buf, NULL); }
static CK_RV decrypt_no_data(CK_SESSION_HANDLE s)
{
	CK_ULONG n = sizeof(buf);
	return f->C_Decrypt(s, NULL, 20, buf, &n);
}
static CK_RV decrypt_update_no_len(CK_SESSION_HANDLE s)
{
	return f->C_DecryptUpdate(s, buf, 20, buf, NULL);
}
static CK_RV decrypt_final_no_len(CK_SESSION_HANDLE s) { return f->C_DecryptFinal(s, buf, NULL); }
static CK_RV digest_query(CK_SESSION_HANDLE s)
{
	CK_ULONG n = 0;
	return f->C_Digest(s, data, 4, NULL, &n);
}
static CK_RV digest_no_len(CK_SESSION_HANDLE s) { return f->C_Digest(s, data, 4, buf, NULL); }
static CK_RV digest_no_data(CK_SESSION_HANDLE s)
{
	CK_ULONG n = sizeof(buf);
	return f->C_Digest(s, NULL, 4, buf, &n);
}
static CK_RV digest_update_no_data(CK_SESSION_HANDLE s) { return f->C_DigestUpdate(s, NULL, 4); }
static CK_RV digest_final_no_len(CK_SESSION_HANDLE s) { return f->C_DigestFinal(s, buf, NULL); }

int main(int argc, char **argv)
{
	if (argc != 5)
		fail("usage: pkcs11_op_ends MODULE PIN EC_KEY_ID AES_KEY_ID", 0);
	f = load_module(argv[1]);
	CK_SESSION_HANDLE s = logged_in(f, argv[2], 0); /* kept open: the login stays */
	ec_priv = key_of_class(f, s, CKO_PRIVATE_KEY, argv[3]);
	ec_pub = key_of_class(f, s, CKO_PUBLIC_KEY, argv[3]);
	aes = key_of_class(f, s, CKO_SECRET_KEY, argv[4]);
	run("sign_query", SIGN, false, sign_query);
	run("sign_short", SIGN, false, sign_short);
	run("sign_no_len", SIGN, false, sign_no_len);
	run("sign_no_data", SIGN, false, sign_no_data);
	run("sign_update_no_data", SIGN, false, sign_update_no_data);
	run("sign_final_no_len", SIGN, true, sign_final_no_len);
	run("verify_no_sig", VERIFY, false, verify_no_sig);
	run("verify_no_data", VERIFY, false, verify_no_data);
	run("verify_update_no_data", VERIFY, false, verify_update_no_data);
	run("verify_final_no_sig", VERIFY, true, verify_final_no_sig);
	run("encrypt_query", ENCRYPT, false, encrypt_query);
	run("encrypt_no_len", ENCRYPT, false, encrypt_no_len);
	run("encrypt_update_no_len", ENCRYPT, false, encrypt_update_no_len);
	run("encrypt_final_no_len", ENCRYPT, true, encrypt_final_no_len);
	run("decrypt_no_len", DECRYPT, false, decrypt_no_len);
	run("decrypt_no_data", DECRYPT, false, decrypt_no_data);
	run("decrypt_update_no_len", DECRYPT, false, decrypt_update_no_len);
	run("decrypt_final_no_len", DECRYPT, true, decrypt_final_no_len);
	run("digest_query", DIGEST, false, digest_query);
	run("digest_no_len", DIGEST, false, digest_no_len);
	run("digest_no_data", DIGEST, false, digest_no_data);
	run("digest_update_no_data", DIGEST, false, digest_update_no_data);
	run("digest_final_no_len", DIGEST, true, digest_final_no_len);
	f->C_Logout(s);
	f->C_CloseSession(s);
	f->C_Finalize(NULL);
	return 0;
}
