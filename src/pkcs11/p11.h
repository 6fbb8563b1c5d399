/*
 * p11.h - libhsm_pkcs11.so, hsmd's PKCS#11 (v2.40) module: state shared by
 * its files.
 *
 *   module.c   C_GetFunctionList, initialization, slot and token, sessions,
 *              login, mechanisms, random numbers, the unsupported functions
 *   interface.c  C_GetInterfaceList and C_GetInterface (v3.0's): the
 *              function list as the interface "PKCS 11", version 2.40
 *   objects.c  hsmd's keys as token objects: the table, public values,
 *              loading, destruction
 *   attrs.c    object attributes, and searches matching templates against them
 *   keygen.c   key pair and secret key generation
 *   template.c the rules a key generation template must meet, and reading
 *              template attributes
 *   certs.c    certificates (CKO_CERTIFICATE): hsmd's, and session objects
 *   sign.c     signing and verification
 *   crypt.c    RSA-OAEP and AES-GCM encryption and decryption
 *   digest.c   message digests, computed in the module
 *   derive.c   ECDH key derivation (hsmd's DeriveSharedSecret) into session objects
 *   retval.c   the return values PKCS#11 lets each function give, which every
 *              entry point's answer is held to (LEAVE)
 *
 * The module is a thin client: it holds no key material of hsmd's keys.
 * The one secret it keeps is a shared secret a user derived (C_DeriveKey),
 * which hsmd hands to its caller by design: a session object until its
 * session closes or the user logs out.  Each operation is an ordinary
 * SigV4-signed call of hsmd's KMS API (authenticated, authorized by the
 * user's roles and the key policy, and audited there) with the credentials
 * given as the PIN, "<access key id>:<secret access key>".  One slot (0)
 * with one token, "hsmd".  Every entry point takes one module lock.
 * Signatures, verifications, encryptions, decryptions, derivations and
 * random bytes let it go while their request is on the network (each on a
 * connection of its own from a pool), so threads using separate sessions
 * run in parallel; listings and key management keep it, as they change the
 * object table.
 */
#ifndef HSM_P11_H
#define HSM_P11_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>

#include "client/client.h"
#include "common/buf.h"
#include "common/secret.h"
#include "common/util.h"
#include "crypto/keyspec.h"
#include "pkcs11/p11_interface.h"
#include "pkcs11/retval.h"

#define P11_SLOT 0
#define P11_MAX_SESSIONS 256
#define P11_LABEL_MAX 256
#define P11_POOL_MAX 16
/* The longest name of a key HSM_PKCS11_KEYS may give (a KMS KeyId: 1 to 2048 characters). */
#define P11_KEY_NAME_MAX 2048
/* hsmd's limits for a certificate (store.h: HSM_CERT_DER_MAX, HSM_CERT_OBJECT_ID_MAX). */
#define P11_CERT_DER_MAX 32768
#define P11_CERT_ID_MAX 256

/* Template attributes of a derived secret that read as given (CKA_ENCRYPT, ...). */
#define P11_USES 7

/*
 * A token object: one of hsmd's keys seen as a PKCS#11 object, or one of
 * the certificates hsmd keeps (cls CKO_CERTIFICATE, key_id the certificate's
 * id); or, with derived set, a session object: a secret derived with
 * C_DeriveKey, or a certificate created with CKA_TOKEN false.
 */
typedef struct p11_object {
	CK_OBJECT_HANDLE handle;
	CK_OBJECT_CLASS cls; /* CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY or CKO_CERTIFICATE */
	char key_id[HSM_UUID_STRLEN + 1];
	char label[P11_LABEL_MAX + 1];
	hsm_key_spec spec;
	hsm_key_usage usage;  /* SIGN_VERIFY, ENCRYPT_DECRYPT (RSA), GENERATE_VERIFY_MAC or
	                       * KEY_AGREEMENT (EC, a public key object only) */
	CK_KEY_TYPE key_type; /* CKK_RSA, CKK_EC, CKK_EC_EDWARDS, CKK_GENERIC_SECRET */
	bool seen;            /* in the last listing */
	bool external;        /* an hsmd key whose material was imported (Origin EXTERNAL); a
	                       * derived secret: derived from such a key */
	bool jwt;             /* an hsmd key marked for JWT signing (DescribeKeys'
	                       * JwtSigningEnabled): hsmd refuses its Sign, so its private
	                       * key object does not sign (p11_key_permits) */
	/* Public values (asymmetric keys), from the key's SubjectPublicKeyInfo;
	 * parsed is true once they were read from spki as it now is. */
	hsm_buf spki, modulus, exponent, ec_params, ec_point;
	CK_ULONG modulus_bits;
	bool parsed;
	/* A derived secret (CKO_SECRET_KEY, CKK_GENERIC_SECRET): the session it
	 * belongs to, its value (a secure buffer), and its template's attributes. */
	bool derived;
	CK_SESSION_HANDLE owner;
	hsm_buf value, id; /* a certificate's: its DER and CKA_ID */
	/* A certificate's DER subject, issuer and serial number, and its CKA_CHECK_VALUE. */
	hsm_buf subject, issuer, serial, check;
	/* An hsmd secret key's check value is read when first asked for after each
	 * listing (p11_object_read_check), not at the listing. */
	bool check_unread;
	bool sensitive, extractable;
	bool uses[P11_USES]; /* in the order of p11_use_attrs */
} p11_object;

extern const CK_ATTRIBUTE_TYPE p11_use_attrs[P11_USES];

/* What a mechanism does with a key (sign.c's table). */
typedef enum p11_family {
	P11_RSA_PKCS,
	P11_RSA_PSS,
	P11_ECDSA,
	P11_HMAC,
	P11_EDDSA,    /* Ed25519 over the message itself */
	P11_RSA_OAEP, /* encryption (crypt.c) */
	P11_AES_GCM,  /* encryption with AES keys (crypt.c) */
	P11_KEYGEN,
	P11_DIGEST,   /* hashing in the module (digest.c) */
	P11_DERIVE,   /* ECDH (derive.c) */
} p11_family;

typedef struct p11_mech {
	CK_MECHANISM_TYPE type;
	p11_family family;
	const char *md;   /* hashing mechanisms: the digest the module computes; NULL: raw input */
	CK_ULONG min_bits, max_bits;
	CK_FLAGS flags;
	bool one_part; /* single-part only: no Update or Final calls (sign.c's table says which) */
} p11_mech;

/*
 * The answer of a call continuing an operation (C_Sign, C_Encrypt, their
 * Final calls, ...) whose key object left the table after its *Init (a
 * listing found the key deleted or disabled in hsmd): those calls' lists
 * (PKCS#11 v2.40 5.8-5.11) have no code of a key's, so the function could
 * not be performed, CKR_FUNCTION_FAILED.  The operation ends with it.
 */
#define P11_RV_KEY_GONE CKR_FUNCTION_FAILED

/* A signing, verification, encryption, decryption or digest in progress. */
typedef struct p11_op {
	bool active;
	uint64_t serial;   /* given at its *Init (p11_serial): this operation and no other */
	bool multi; /* an Update call gave data: no one-part call now */
	const p11_mech *mech;
	CK_OBJECT_HANDLE key;
	const char *hash;  /* the KMS algorithm's digest: "SHA_256", ... */
	bool ecdsa_cut;    /* ECDSA: a longer digest may be cut to the key's (order = digest bits) */
	EVP_MD_CTX *md;    /* hashing mechanisms */
	hsm_buf data;      /* raw input, an HMAC's message, or AES-GCM's additional data */
	hsm_buf input;     /* AES-GCM in parts: what C_EncryptUpdate / C_DecryptUpdate gave */
	uint8_t iv[12];    /* AES-GCM decryption: the IV */
	CK_BYTE_PTR iv_out; /* AES-GCM encryption: where hsmd's IV goes (the caller's pIv) */
} p11_op;

typedef struct p11_find {
	bool active;
	CK_OBJECT_HANDLE *handles;
	size_t n, pos;
} p11_find;

typedef struct p11_session {
	bool open;
	uint64_t serial; /* given at C_OpenSession (p11_serial): a handle reused is another session */
	CK_SESSION_HANDLE handle; /* its slot in the low bits, part of its serial above them */
	CK_FLAGS flags;
	p11_find find;
	p11_op sign, verify, encrypt, decrypt, digest;
} p11_session;

/* What a client needs to reach hsmd: the settings, and the PIN's credentials once logged in. */
typedef struct p11_conn {
	char endpoints[1024];
	char ca_file[1024];
	char client_cert[1024], client_key[1024]; /* HSM_PKCS11_CLIENT_CERT / _KEY */
	char region[64];
	int timeout_s; /* HSM_PKCS11_TIMEOUT: how long a call waits for hsmd */
	char akid[129];
	char secret[129];
} p11_conn;

typedef struct p11_module {
	bool initialized;
	pid_t pid; /* of the process that initialized the module (a forked child must again) */
	p11_conn conn;
	char keys[4096]; /* HSM_PKCS11_KEYS: the keys the token shows (empty: every key) */
	/* Keys this module made under HSM_PKCS11_KEYS: shown too, until C_Finalize. */
	char (*made)[HSM_UUID_STRLEN + 1];
	size_t n_made;
	/* Idle clients, each with its kept-alive connection; calls take one and give it back. */
	hsm_client *pool[P11_POOL_MAX];
	size_t pool_n;
	uint64_t gen; /* renewed at logout and C_Finalize: clients out at the time are not kept */
	bool logged_in;
	p11_session sessions[P11_MAX_SESSIONS];
	p11_object *objects;
	size_t n_objects, cap_objects;
	CK_OBJECT_HANDLE next_handle;
} p11_module;

extern p11_module p11;

/* ---- errq.c ---- */
/*
 * The calling thread's OpenSSL error queue is the application's: ENTER sets
 * its entries aside and LEAVE drops what the module queued and puts them
 * back.
 */
void p11_errq_set_aside(void);
void p11_errq_restore(void);

/* The module lock: every entry point holds it (ENTER ... LEAVE). */
extern pthread_mutex_t p11_lock;
#define ENTER()                                   \
	do {                                          \
		pthread_mutex_lock(&p11_lock);            \
		if (!p11.initialized || p11.pid != getpid()) { \
			pthread_mutex_unlock(&p11_lock);      \
			return CKR_CRYPTOKI_NOT_INITIALIZED; \
		}                                         \
		p11_errq_set_aside();                     \
	} while (0)
/*
 * ENTER, then the session handle h: an entry point that takes a session
 * answers CKR_CRYPTOKI_NOT_INITIALIZED, then CKR_SESSION_HANDLE_INVALID,
 * before anything else (PKCS#11 v2.40 5.1.7: the codes of 5.1.2 come before
 * 5.1.6's CKR_ARGUMENTS_BAD), so its arguments are checked after this.
 */
#define ENTER_SESSION(h)                          \
	do {                                          \
		ENTER();                                  \
		if (p11_session_get(h) == NULL)           \
			LEAVE(CKR_SESSION_HANDLE_INVALID);    \
	} while (0)
/*
 * Returns rv as the entry point it is written in may (p11_rv_conform with
 * __func__: LEAVE is used in the C_* functions themselves, never in a
 * helper).  Wipes the stack the call used too (hsm_stack_wipe_guarded: the
 * thread and its stack are the application's), since the application's
 * thread goes on.
 */
#define LEAVE(rv)                          \
	do {                                   \
		CK_RV leave_rv__ = p11_rv_conform(__func__, (rv)); \
		p11_errq_restore();                \
		pthread_mutex_unlock(&p11_lock);   \
		hsm_stack_wipe_guarded();          \
		return leave_rv__;                 \
	} while (0)

/* ---- module.c ---- */
/* The module's function list (version 2.40): C_GetFunctionList's, the "PKCS 11" interface's. */
extern CK_FUNCTION_LIST p11_function_list;
/* The session behind a handle, or NULL. */
p11_session *p11_session_get(CK_SESSION_HANDLE h);
/* CKR_OK when h is an open session and the user is logged in. */
CK_RV p11_user_session(CK_SESSION_HANDLE h);
/*
 * Calls hsmd: target "TrentService.Sign", ...; body is consumed (NULL, as
 * json_pack gives it: CKR_HOST_MEMORY when memory ran out, otherwise jansson
 * refused a value, CKR_ARGUMENTS_BAD).  On a 200 answer *out is the parsed
 * JSON; otherwise the CKR_* value of the answer's error (CKR_DEVICE_ERROR
 * when no endpoint answered).  Called with the module lock held, which it
 * keeps.
 */
CK_RV p11_call(const char *target, json_t *body, json_t **out);
/*
 * A number never given before in this process: the serial of a session or an
 * operation.  The counter lives outside p11, which C_Initialize wipes, so a
 * serial recorded before C_Finalize never matches one given after.
 */
uint64_t p11_serial(void);
/*
 * What a call made without the module lock checks when it has the lock again:
 * the session it was made for (its handle and serial) and its operation's
 * serial (0: none).  While the lock was let go another thread may have closed
 * the session (and a new one taken its handle), logged out (which ends every
 * operation), or finalized the module.
 */
typedef struct p11_ticket {
	CK_SESSION_HANDLE h;
	uint64_t session, op;
} p11_ticket;
/* The ticket of session h (open: the caller checked) and its operation op (or NULL). */
p11_ticket p11_ticket_of(CK_SESSION_HANDLE h, const p11_op *op);
/*
 * p11_call for a session's request, letting the module lock go during the
 * exchange (so the caller holds no pointer into the object table across
 * it, and copies before what it needs after).  On its return, with the lock
 * held again, CKR_CRYPTOKI_NOT_INITIALIZED when the module was finalized
 * meanwhile and CKR_SESSION_CLOSED when the session was closed ("closed
 * during the execution of the function", PKCS#11 v2.40 5.1); then *out is
 * NULL and the caller writes no output.  Otherwise p11_call's answer.
 */
CK_RV p11_call_session(const p11_ticket *t, const char *target, json_t *body, json_t **out);
/*
 * The same for an answer that carries a secret: its base64 member `secret`
 * is decoded into secret_out (a secure buffer) without jansson ever holding
 * it (module.c says why); *out holds the rest of the answer.
 */
CK_RV p11_call_session_secret(const p11_ticket *t, const char *target, json_t *body,
                              json_t **out, const char *secret, hsm_buf *secret_out);
/* True when the session of t is still the one it was issued for (lock held). */
bool p11_ticket_live(const p11_ticket *t);
/* Ends op if it is still the operation of the ticket (a logout meanwhile ended it already). */
void p11_op_end(p11_op *op, const p11_ticket *t);
/* Closes the idle connections; those in use are closed when given back. */
void p11_pool_drain(void);
/* A base64 member of an answer, decoded (CKR_HOST_MEMORY when memory ran out). */
CK_RV p11_b64_member(json_t *o, const char *name, hsm_buf *out);
/* CKR_HOST_MEMORY for a failure that is a lack of memory, otherwise `otherwise`. */
CK_RV p11_rv_of(hsm_result r, CK_RV otherwise);
/* Adds a member to a request body; false when memory ran out (v is taken either way). */
bool p11_set(json_t *body, const char *name, json_t *v) HSM_MUST_CHECK;
/*
 * Around the module's own OpenSSL calls, in the application's process:
 * p11_ossl_watch() before them and, when they failed (or, for a decoder,
 * even when it did not: OpenSSL 3.0's can report success for a key it could
 * not finish), p11_ossl_ran_out() says whether an allocation failed in
 * them (malloc's ENOMEM).  Only the errors the calls queued are dropped: the
 * application's own stay on its queue.
 */
void p11_ossl_watch(void);
bool p11_ossl_ran_out(void);

/* ---- objects.c ---- */
/* Reads hsmd's keys again (login, FindObjectsInit, after changes). */
CK_RV p11_objects_refresh(void);
/*
 * Reads a key this module just made (C_GenerateKey, C_GenerateKeyPair), that
 * key alone; under HSM_PKCS11_KEYS the token shows it from then on too.
 */
CK_RV p11_objects_add_made(const char *key_id);
/*
 * Refreshes what a search template asks for: certificates (CKA_CLASS
 * CKO_CERTIFICATE), keys (any other class; only the key CKA_ID or CKA_LABEL
 * names, when one does), or both (no class).
 */
CK_RV p11_objects_refresh_for(const CK_ATTRIBUTE *tmpl, CK_ULONG count);
void p11_objects_clear(void);
/*
 * What a logout does to the table (PKCS#11 v2.40 5.6: the handles of private
 * objects become invalid): private and secret keys and derived secrets go;
 * public keys and certificates, token or session objects, keep their handles
 * for the next login, which reads them again.  No object shows meanwhile.
 */
void p11_objects_logout(void);
p11_object *p11_object_get(CK_OBJECT_HANDLE h);
/*
 * Reads o's CKA_CHECK_VALUE from hsmd when it is still unread since the
 * listing (an hsmd secret key's); refusals leave it without one (CKR_OK),
 * a failure to reach hsmd is returned.
 */
CK_RV p11_object_read_check(p11_object *o);
/* The key object behind a handle, or NULL (none, or a certificate: CKR_KEY_HANDLE_INVALID). */
p11_object *p11_key_get(CK_OBJECT_HANDLE h);
/* A new session object for a derived secret (its handle set, the rest zero). */
p11_object *p11_object_add_derived(CK_SESSION_HANDLE owner);
/* template.c: a CK_BBOOL template attribute: true and *out set when present and well formed. */
bool p11_attr_bool(const CK_ATTRIBUTE *a, bool *out);
/* A CK_ULONG template attribute: absent (true, *out untouched), or well formed. */
bool p11_attr_ulong(const CK_ATTRIBUTE *a, CK_ULONG *out);
/* The template attribute of a type, or NULL. */
const CK_ATTRIBUTE *p11_attr_find(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type);
/*
 * CKR_TEMPLATE_INCONSISTENT when a template gives one attribute type twice
 * with different bytes (PKCS#11 v2.40 4.1.1: "two different values for the
 * same attribute"), else CKR_OK.  Every template the module reads (key
 * generation, C_CreateObject, C_DeriveKey) is checked with it: the module
 * reads an attribute where it first comes (p11_attr_find), and a later value
 * saying otherwise would go unheard.
 */
CK_RV p11_template_repeats(const CK_ATTRIBUTE *t, CK_ULONG n) HSM_MUST_CHECK;
/* The object of an hsmd key or certificate id and class, or NULL. */
p11_object *p11_object_of(const char *key_id, CK_OBJECT_CLASS cls);
/* A new object (its handle set, the rest zero), or NULL. */
p11_object *p11_object_new(const char *key_id, CK_OBJECT_CLASS cls);
/*
 * The key spec of a curve as CKA_EC_PARAMS gives it (a named curve's DER OID,
 * or for the Edwards mechanism also the PrintableString "edwards25519"):
 * CKR_CURVE_NOT_SUPPORTED for another curve, CKR_TEMPLATE_INCONSISTENT for
 * the other mechanism's curve.
 */
CK_RV p11_curve_spec(const void *params, size_t len, bool edwards_mech, hsm_key_spec *spec);
bool p11_spec_is_rsa(hsm_key_spec s);
/*
 * A key's label is an alias name without "alias/" (keygen.c makes alias/<label>,
 * and a key reads its first such alias as its label): 1 to P11_KEY_LABEL_MAX
 * of KMS's alias characters, ASCII letters, digits and "/_-:" (AWS KMS API
 * reference, CreateAlias: AliasName, 1 to 256 characters with "alias/";
 * hsmd's kms/alias.c).  Whether the n bytes at label can be one; another
 * label (not UTF-8, with a space, too long) is only ever a certificate's or
 * a session object's.
 */
#define P11_KEY_LABEL_MAX (256 - 6)
bool p11_key_label(const void *label, size_t n);
/* Schedules a key's deletion with hsmd's shortest waiting period (7 days: it can
 * still be recovered with CancelKeyDeletion). */
CK_RV p11_schedule_deletion(const char *key_id);
/* CKR_OK in a read/write session: token objects are made and destroyed only there (5.7). */
CK_RV p11_rw_session(CK_SESSION_HANDLE h);
/* Drops the objects not seen in the last listing (derived ones stay). */
void p11_objects_remove_unseen(void);
/* Drops one object from the table (a session object destroyed, one half made). */
void p11_object_drop(CK_OBJECT_HANDLE h);
/* Destroys the derived secrets of a session that closes. */
void p11_objects_drop_session(CK_SESSION_HANDLE owner);

/* ---- template.c ---- */
/*
 * Checks a key generation template for an object of class cls and key type
 * kt against PKCS#11's rules (unknown, read-only or malformed attributes, a
 * class, key type, CKA_TOKEN, ... the new key would not have); the usages
 * are the caller's to check.  CKR_OK or the error to return, no key made.
 */
CK_RV p11_template_check(const CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt);
/*
 * Whether a key of class cls (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY)
 * and key type kt has the attribute type at all (PKCS#11 v2.40 4.4-4.10 and
 * the key types' sections): the table templates are checked against, which
 * C_GetAttributeValue and searches follow too.
 */
bool p11_key_has(CK_ATTRIBUTE_TYPE type, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt);
/*
 * A template's CKA_ALLOWED_MECHANISMS for a key like o (its class, key type,
 * spec and usage set): absent, or exactly the mechanisms o allows
 * (p11_key_mechs), in any order; otherwise CKR_ATTRIBUTE_VALUE_INVALID.
 */
CK_RV p11_template_mechs(const CK_ATTRIBUTE *t, CK_ULONG n, const p11_object *o);
/* Whether a (checked) template gives the boolean type as true, or as false. */
bool p11_template_true(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type);
bool p11_template_false(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type);

/* ---- certs.c ---- */
/* Reads hsmd's certificates again: each becomes or updates an object, marked seen. */
CK_RV p11_certs_load(void);
/*
 * Reads again the certificates with this CKA_ID and CKA_LABEL (NULL: any):
 * those hsmd no longer has go.  A search naming either reads only those.
 */
CK_RV p11_certs_refresh(const CK_ATTRIBUTE *id, const CK_ATTRIBUTE *label);
/* Deletes one of hsmd's certificates (a token object) and its object. */
CK_RV p11_cert_destroy(p11_object *o);

/* ---- sign.c ---- */
extern const p11_mech p11_mechs[];
extern const size_t p11_n_mechs;
const p11_mech *p11_mech_find(CK_MECHANISM_TYPE type);
/*
 * Whether key o may do fn (CKF_SIGN, CKF_VERIFY, CKF_ENCRYPT, CKF_DECRYPT or
 * CKF_DERIVE) with mechanism m: CKR_OK, or CKR_MECHANISM_INVALID (m does not
 * do fn), CKR_KEY_TYPE_INCONSISTENT, CKR_KEY_FUNCTION_NOT_PERMITTED (its
 * class or usage does not allow fn, or fn is CKF_SIGN and the key is marked
 * for JWT signing), CKR_KEY_SIZE_RANGE (an HMAC key and another hash's
 * mechanism), in that order.
 */
CK_RV p11_key_permits(const p11_object *o, const p11_mech *m, CK_FLAGS fn);
/* At most as many mechanisms as the module has (p11_mechs). */
#define P11_MECHS_MAX 64
/*
 * The mechanisms key o may be used with, by p11_key_permits (its
 * CKA_ALLOWED_MECHANISMS), in the order of p11_mechs, into out; their number.
 */
size_t p11_key_mechs(const p11_object *o, CK_MECHANISM_TYPE out[P11_MECHS_MAX]);
void p11_op_reset(p11_op *op);
/*
 * For an Update or Final call: CKR_OK when op's mechanism goes in parts;
 * otherwise op is ended and CKR_OPERATION_NOT_INITIALIZED returned (no
 * multi-part operation is active, as SoftHSMv2 answers too).
 */
CK_RV p11_op_in_parts(p11_op *op);
/*
 * The session of h whose operation at op_offset (offsetof(p11_session, sign),
 * ...) is active; else NULL and *rv.  Arguments found bad (args_ok false) end
 * the operation, as any other failure of the calls that continue one does but
 * a length query's CKR_BUFFER_TOO_SMALL (PKCS#11 v2.40 5.8-5.12):
 * CKR_ARGUMENTS_BAD leaves no operation behind.
 */
p11_session *p11_op_session(CK_SESSION_HANDLE h, size_t op_offset, bool args_ok, CK_RV *rv);

#endif
