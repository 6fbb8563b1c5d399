/*
 * pkcs11_gcm_parts.c - AES-GCM parts given to C_EncryptUpdate (and
 * C_DecryptUpdate) end with the Final call: a one-part C_Encrypt (C_Decrypt)
 * after them must be refused and end the operation, not drop the parts.
 *
 *   pkcs11_gcm_parts MODULE PIN AES_KEY_ID
 *
 * Prints "encrypt 0x<rv>", "decrypt 0x<rv>" and, for the operation ended by
 * the refusal, "after 0x<rv>" (a Final call on it); exits 1 on a set-up error.
 */
#include "pkcs11_client.h"

int main(int argc, char **argv)
{
	if (argc != 4)
		fail("usage: pkcs11_gcm_parts MODULE PIN AES_KEY_ID", 0);
	CK_FUNCTION_LIST_PTR f = load_module(argv[1]);
	CK_SESSION_HANDLE s = logged_in(f, argv[2], 0);
	CK_OBJECT_HANDLE key = secret_key(f, s, argv[3]);
	CK_RV rv;
	unsigned char iv[12] = {0}, out[64];
	CK_GCM_PARAMS gcm = {iv, sizeof(iv), 96, NULL, 0, 128};
	CK_MECHANISM m = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	CK_ULONG on = sizeof(out);
	if ((rv = f->C_EncryptInit(s, &m, key)) != CKR_OK ||
	    (rv = f->C_EncryptUpdate(s, (CK_BYTE_PTR) "AAAA", 4, out, &on)) != CKR_OK)
		fail("C_EncryptUpdate", rv);
	on = sizeof(out);
	printf("encrypt 0x%lx\n", (unsigned long)f->C_Encrypt(s, (CK_BYTE_PTR) "BBBB", 4, out, &on));
	on = sizeof(out);
	printf("after 0x%lx\n", (unsigned long)f->C_EncryptFinal(s, out, &on));
	if ((rv = f->C_DecryptInit(s, &m, key)) != CKR_OK ||
	    (rv = f->C_DecryptUpdate(s, (CK_BYTE_PTR) "AAAA", 4, out, &on)) != CKR_OK)
		fail("C_DecryptUpdate", rv);
	on = sizeof(out);
	printf("decrypt 0x%lx\n", (unsigned long)f->C_Decrypt(s, out, 20, out, &on));
	f->C_Logout(s);
	f->C_Finalize(NULL);
	return 0;
}
