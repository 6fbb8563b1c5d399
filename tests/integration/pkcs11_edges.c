/*
 * pkcs11_edges.c - answers only a C caller meets: a decryption into a
 * buffer too small for its plaintext (CKR_BUFFER_TOO_SMALL with the exact
 * length, the operation going on), OAEP parameters giving a label's length
 * without its data, a signature of the wrong length, C_GetAttributeValue
 * failing in two ways at once, the object calls a view of hsmd's keys
 * refuses, and the functions the token does not offer.
 *
 *   pkcs11_edges MODULE PIN RSA_ENC_KEY_ID EC_KEY_ID
 *
 * RSA_ENC_KEY_ID names an RSA_2048 ENCRYPT_DECRYPT key, EC_KEY_ID a
 * SIGN_VERIFY P-256 key.  Prints one "<case> 0x<rv> [what]" line a case;
 * exits 1 on a set-up error.
 */
#include <stdbool.h>

#include "pkcs11_client.h"

static CK_FUNCTION_LIST_PTR f;

static void line(const char *name, CK_RV rv, const char *what)
{
	printf("%s 0x%lx%s%s\n", name, (unsigned long)rv, what[0] ? " " : "", what);
}

/* Whether a new Init finds the operation ended (CKR_OK) or going on. */
static const char *decrypt_state(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE k)
{
	CK_RV rv = f->C_DecryptInit(s, m, k);
	return rv == CKR_OK ? "ended" : rv == CKR_OPERATION_ACTIVE ? "active" : "?";
}

static void decrypt_cases(CK_SESSION_HANDLE s, const char *id)
{
	CK_OBJECT_HANDLE pub = key_of_class(f, s, CKO_PUBLIC_KEY, id);
	CK_OBJECT_HANDLE priv = key_of_class(f, s, CKO_PRIVATE_KEY, id);
	CK_RSA_PKCS_OAEP_PARAMS oaep = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 0};
	CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep)};
	CK_BYTE pt[20], ct[512], out[512];
	for (size_t i = 0; i < sizeof(pt); i++)
		pt[i] = (CK_BYTE)(0x41 + i);
	CK_ULONG n = sizeof(ct);
	CK_RV rv;
	if ((rv = f->C_EncryptInit(s, &m, pub)) != CKR_OK ||
	    (rv = f->C_Encrypt(s, pt, sizeof(pt), ct, &n)) != CKR_OK)
		fail("C_Encrypt", rv);
	char what[64];
	if ((rv = f->C_DecryptInit(s, &m, priv)) != CKR_OK)
		fail("C_DecryptInit", rv);
	/* Ten bytes of room for twenty: the exact length, and the operation goes on. */
	CK_ULONG room = 10;
	rv = f->C_Decrypt(s, ct, n, out, &room);
	snprintf(what, sizeof(what), "%lu", (unsigned long)room);
	line("decrypt_short", rv, what);
	room = sizeof(out);
	rv = f->C_Decrypt(s, ct, n, out, &room);
	snprintf(what, sizeof(what), "%lu %s %s", (unsigned long)room,
	         room == sizeof(pt) && memcmp(out, pt, sizeof(pt)) == 0 ? "same" : "differs",
	         decrypt_state(s, &m, priv));
	line("decrypt_again", rv, what);
	/* The Init above began one more: a ciphertext of the wrong length ends it. */
	room = sizeof(out);
	rv = f->C_Decrypt(s, ct, n - 1, out, &room);
	line("decrypt_wrong_length", rv, decrypt_state(s, &m, priv));
	f->C_DecryptFinal(s, out, &room); /* whatever the last Init left */
}

/* pSourceData NULL with a length: no empty label, but malformed parameters. */
static void oaep_cases(CK_SESSION_HANDLE s, const char *id)
{
	CK_OBJECT_HANDLE pub = key_of_class(f, s, CKO_PUBLIC_KEY, id);
	CK_OBJECT_HANDLE priv = key_of_class(f, s, CKO_PRIVATE_KEY, id);
	CK_RSA_PKCS_OAEP_PARAMS oaep = {CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, NULL, 5};
	CK_MECHANISM m = {CKM_RSA_PKCS_OAEP, &oaep, sizeof(oaep)};
	line("oaep_label_length_only_encrypt", f->C_EncryptInit(s, &m, pub), "");
	line("oaep_label_length_only_decrypt", f->C_DecryptInit(s, &m, priv), "");
}

/* What C_GetAttributeValue left in an attribute's ulValueLen. */
static const char *length_of(const CK_ATTRIBUTE *a)
{
	return a->ulValueLen == CK_UNAVAILABLE_INFORMATION ? "unavailable" : "given";
}

/*
 * C_GetAttributeValue with two attributes that fail, in either order, and one that
 * does not: an EC private key's CKA_VALUE (sensitive), its CKA_MODULUS (it has none),
 * its CKA_EC_PARAMS into one byte (too small), and its CKA_CLASS.  Prints the code,
 * then what each length says and whether the class was given.
 */
static void attribute_cases(CK_SESSION_HANDLE s, const char *id)
{
	CK_OBJECT_HANDLE priv = key_of_class(f, s, CKO_PRIVATE_KEY, id);
	static const CK_ATTRIBUTE_TYPE types[] = {CKA_VALUE, CKA_MODULUS, CKA_EC_PARAMS};
	static const char *const names[] = {"sensitive", "invalid", "small"};
	for (size_t i = 0; i < 3; i++) {
		for (size_t j = 0; j < 3; j++) {
			if (i == j)
				continue;
			CK_BYTE a[256], b[256];
			CK_OBJECT_CLASS cls = 0;
			CK_ATTRIBUTE t[] = {
			    {types[i], a, types[i] == CKA_EC_PARAMS ? 1 : sizeof(a)},
			    {types[j], b, types[j] == CKA_EC_PARAMS ? 1 : sizeof(b)},
			    {CKA_CLASS, &cls, sizeof(cls)},
			};
			CK_RV rv = f->C_GetAttributeValue(s, priv, t, 3);
			bool given_class = cls == CKO_PRIVATE_KEY && t[2].ulValueLen == sizeof(cls);
			char name[64], what[64];
			snprintf(name, sizeof(name), "attributes_%s_%s", names[i], names[j]);
			snprintf(what, sizeof(what), "%s %s %s", length_of(&t[0]), length_of(&t[1]),
			         given_class ? "class" : "?");
			line(name, rv, what);
		}
	}
}

static void verify_cases(CK_SESSION_HANDLE s, const char *id)
{
	CK_OBJECT_HANDLE pub = key_of_class(f, s, CKO_PUBLIC_KEY, id);
	CK_MECHANISM m = {CKM_ECDSA_SHA256, NULL, 0};
	CK_BYTE data[] = "data", sig[64] = {0};
	CK_RV rv;
	if ((rv = f->C_VerifyInit(s, &m, pub)) != CKR_OK)
		fail("C_VerifyInit", rv);
	rv = f->C_Verify(s, data, 4, sig, 63);
	CK_RV again = f->C_VerifyInit(s, &m, pub);
	line("verify_short_signature", rv, again == CKR_OK ? "ended" : "active");
	/* r = s = 0: the right length, no valid signature of anything. */
	rv = f->C_Verify(s, data, 4, sig, 64);
	again = f->C_VerifyInit(s, &m, pub);
	line("verify_zero_signature", rv, again == CKR_OK ? "ended" : "active");
	rv = f->C_Verify(s, data, 4, sig, 65);
	line("verify_long_signature", rv, "");
}

static void object_cases(CK_SESSION_HANDLE s, const char *id)
{
	CK_OBJECT_HANDLE pub = key_of_class(f, s, CKO_PUBLIC_KEY, id);
	CK_OBJECT_HANDLE priv = key_of_class(f, s, CKO_PRIVATE_KEY, id);
	CK_UTF8CHAR label[] = "renamed";
	CK_ATTRIBUTE set[] = {{CKA_LABEL, label, sizeof(label) - 1}};
	line("set_attribute", f->C_SetAttributeValue(s, pub, set, 1), "");
	line("set_attribute_bad_handle", f->C_SetAttributeValue(s, 0x7fffffff, set, 1), "");
	CK_ULONG size = 0;
	CK_RV rv = f->C_GetObjectSize(s, priv, &size);
	line("object_size", rv, size == CK_UNAVAILABLE_INFORMATION ? "unavailable" : "a size");
	line("object_size_bad_handle", f->C_GetObjectSize(s, 0x7fffffff, &size), "");
	line("object_size_no_out", f->C_GetObjectSize(s, priv, NULL), "");
	CK_OBJECT_HANDLE copy = 0;
	line("copy_object", f->C_CopyObject(s, priv, NULL, 0, &copy), "");
	CK_MECHANISM wrap = {CKM_RSA_PKCS_OAEP, NULL, 0};
	CK_BYTE wrapped[512];
	CK_ULONG wn = sizeof(wrapped);
	line("wrap_key", f->C_WrapKey(s, &wrap, pub, priv, wrapped, &wn), "");
	line("unwrap_key", f->C_UnwrapKey(s, &wrap, priv, wrapped, 16, NULL, 0, &copy), "");
	CK_ULONG state_n = 0;
	line("get_operation_state", f->C_GetOperationState(s, NULL, &state_n), "");
	line("set_pin", f->C_SetPIN(s, label, 3, label, 3), "");
	line("function_status", f->C_GetFunctionStatus(s), "");
	line("cancel_function", f->C_CancelFunction(s), "");
	CK_SLOT_ID slot;
	line("wait_for_slot_event", f->C_WaitForSlotEvent(CKF_DONT_BLOCK, &slot, NULL), "");
	line("wait_for_slot_event_blocking", f->C_WaitForSlotEvent(0, &slot, NULL), "");
}

int main(int argc, char **argv)
{
	if (argc != 5)
		fail("usage: pkcs11_edges MODULE PIN RSA_ENC_KEY_ID EC_KEY_ID", 0);
	f = load_module(argv[1]);
	CK_SESSION_HANDLE s = logged_in(f, argv[2], 0);
	decrypt_cases(s, argv[3]);
	oaep_cases(s, argv[3]);
	verify_cases(s, argv[4]);
	attribute_cases(s, argv[4]);
	object_cases(s, argv[3]);
	f->C_Logout(s);
	f->C_CloseSession(s);
	f->C_Finalize(NULL);
	return 0;
}
