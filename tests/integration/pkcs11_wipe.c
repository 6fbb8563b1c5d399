/*
 * pkcs11_wipe.c - an application that decrypts and draws random bytes
 * through the PKCS#11 module, wipes its own copies, then waits, so that
 * test_pkcs11.py can search its memory for what the module left behind.
 *
 *   pkcs11_wipe MODULE PIN AES_KEY_ID
 *
 * Prints "plaintext <hex>" and "random <hex>", then "ready", and waits for a
 * line on stdin; then logs out, finalizes, prints "finalized" and waits for
 * another line (memory the module freed can be searched too); exits 0.
 * Exits non-zero on any PKCS#11 error.
 */
#include "pkcs11_client.h"

static void print_hex(const char *label, const unsigned char *p, size_t n)
{
	printf("%s ", label);
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\n");
}

int main(int argc, char **argv)
{
	if (argc != 4)
		fail("usage: pkcs11_wipe MODULE PIN AES_KEY_ID", 0);
	CK_FUNCTION_LIST_PTR f = load_module(argv[1]);
	CK_SESSION_HANDLE s = logged_in(f, argv[2], CKF_RW_SESSION);
	CK_OBJECT_HANDLE key = secret_key(f, s, argv[3]);
	CK_RV rv;

	unsigned char pt[64], ct[128], back[128], rnd[64], iv[12] = {0};
	FILE *r = fopen("/dev/urandom", "rb");
	if (r == NULL || fread(pt, 1, sizeof(pt), r) != sizeof(pt))
		fail("/dev/urandom", 0);
	fclose(r);
	print_hex("plaintext", pt, sizeof(pt));
	CK_GCM_PARAMS gcm = {iv, sizeof(iv), 96, NULL, 0, 128};
	CK_MECHANISM m = {CKM_AES_GCM, &gcm, sizeof(gcm)};
	CK_ULONG cl = sizeof(ct), bl = sizeof(back);
	if ((rv = f->C_EncryptInit(s, &m, key)) != CKR_OK ||
	    (rv = f->C_Encrypt(s, pt, sizeof(pt), ct, &cl)) != CKR_OK)
		fail("C_Encrypt", rv);
	if ((rv = f->C_DecryptInit(s, &m, key)) != CKR_OK ||
	    (rv = f->C_Decrypt(s, ct, cl, back, &bl)) != CKR_OK)
		fail("C_Decrypt", rv);
	if (bl != sizeof(pt) || memcmp(back, pt, sizeof(pt)) != 0)
		fail("round trip", 0);
	if ((rv = f->C_GenerateRandom(s, rnd, sizeof(rnd))) != CKR_OK)
		fail("C_GenerateRandom", rv);
	print_hex("random", rnd, sizeof(rnd));
	explicit_bzero(pt, sizeof(pt));
	explicit_bzero(back, sizeof(back));
	explicit_bzero(rnd, sizeof(rnd));
	printf("ready\n");
	fflush(stdout);
	char line[16];
	if (fgets(line, sizeof(line), stdin) == NULL)
		fail("stdin", 0);
	f->C_Logout(s);
	f->C_CloseSession(s);
	f->C_Finalize(NULL);
	printf("finalized\n");
	fflush(stdout);
	if (fgets(line, sizeof(line), stdin) == NULL)
		fail("stdin", 0);
	return 0;
}
