/*
 * crypto_internal.h - what the files of src/crypto share and nobody else sees.
 *
 * The fetched algorithm handles (owned by crypto_init.c for the life of the
 * process), read-only access to a material's key, and the one message every
 * decryption failure carries.
 */
#ifndef HSM_CRYPTO_INTERNAL_H
#define HSM_CRYPTO_INTERNAL_H

#include <errno.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "common/util.h"
#include "crypto/crypto.h"

/*
 * One message for every decrypt, unwrap and blob-parse failure, so a client
 * cannot tell a bad tag from bad padding or a malformed header (no oracle).
 */
#define HSM_MSG_BAD_CIPHERTEXT                                                             \
	"The ciphertext is invalid, or it was not produced with this key and encryption context"

/* Algorithms fetched once by hsm_crypto_init(); never freed, shared by all threads. */
typedef struct hsm_algs {
	EVP_CIPHER *aes_256_gcm;
	EVP_CIPHER *aes_256_kwp;
	EVP_CIPHER *aes_256_ecb; /* key check values only */
	EVP_MD *sha1;
	EVP_MD *sha224;
	EVP_MD *sha256;
	EVP_MD *sha384;
	EVP_MD *sha512;
	EVP_MAC *hmac;
	EVP_KDF *hkdf;
} hsm_algs;

/* The fetched algorithms; initializes on first use and aborts if that fails. */
const hsm_algs *hsm_crypto_algs(void);
/* A fetched digest by OpenSSL name ("SHA256", as in keyspec.c); NULL if not fetched. */
const EVP_MD *hsm_crypto_md(const char *name);

/*
 * Borrowed views of a material's key, valid while the caller holds its
 * reference.  hsm_material_pkey is NULL for AES and HMAC keys,
 * hsm_material_secret NULL for asymmetric ones.
 */
EVP_PKEY *hsm_material_pkey(const hsm_material *m);
const hsm_secret *hsm_material_secret(const hsm_material *m);

/* Which KMS key spec an OpenSSL key is, judged from its type, size and curve. */
hsm_result hsm_pkey_spec(const EVP_PKEY *pkey, hsm_key_spec *out) HSM_MUST_CHECK;

/*
 * A ready EVP_PKEY_CTX for signing (sign) or verifying with pkey under a
 * non-EdDSA algorithm (sign.c), or NULL; the caller frees it.
 */
EVP_PKEY_CTX *hsm_sign_ctx_new(EVP_PKEY *pkey, hsm_sign_alg alg, bool sign);
/*
 * The same for a material's key, copied from a template the material keeps
 * (made on first use, freed with the material): a copy costs a small
 * fraction of what setting up a new context does (a provider lookup by name
 * and the algorithm's parameters).  NULL when out of memory.
 */
EVP_PKEY_CTX *hsm_material_sign_ctx(const hsm_material *m, hsm_sign_alg alg, bool sign);

/* Sign / verify with a bare EVP_PKEY (sign.c); callers check the spec first. */
hsm_result hsm_pkey_sign(EVP_PKEY *pkey, hsm_sign_alg alg, hsm_message_type type,
                         const uint8_t *msg, size_t msg_len, hsm_buf *sig_out) HSM_MUST_CHECK;
hsm_result hsm_pkey_verify(EVP_PKEY *pkey, hsm_sign_alg alg, hsm_message_type type,
                           const uint8_t *msg, size_t msg_len, const uint8_t *sig,
                           size_t sig_len) HSM_MUST_CHECK;
/* As above, with contexts from the material's templates when m is not NULL. */
hsm_result hsm_key_sign(EVP_PKEY *pkey, const hsm_material *m, hsm_sign_alg alg,
                        hsm_message_type type, const uint8_t *msg, size_t msg_len,
                        hsm_buf *sig_out) HSM_MUST_CHECK;
hsm_result hsm_key_verify(EVP_PKEY *pkey, const hsm_material *m, hsm_sign_alg alg,
                          hsm_message_type type, const uint8_t *msg, size_t msg_len,
                          const uint8_t *sig, size_t sig_len) HSM_MUST_CHECK;
/* RSAES-OAEP encryption with a bare RSA key (rsa_oaep.c). */
hsm_result hsm_pkey_oaep_encrypt(EVP_PKEY *pkey, hsm_key_spec spec, hsm_enc_alg alg,
                                 const uint8_t *pt, size_t pt_len, hsm_buf *out) HSM_MUST_CHECK;

/*
 * ECDH of priv with peer (ecdh.c), whose point the caller has validated;
 * appends the secret, which must be want bytes long, to secret_out.
 */
hsm_result hsm_pkey_derive(EVP_PKEY *priv, EVP_PKEY *peer, size_t want,
                           hsm_buf *secret_out) HSM_MUST_CHECK;

/* HMAC with any key length and a digest named as in keyspec.c; out_len is the digest length. */
hsm_result hsm_hmac_compute(const uint8_t *key, size_t key_len, const char *digest,
                            const uint8_t *msg, size_t msg_len, uint8_t *out,
                            size_t out_len) HSM_MUST_CHECK;

/* Parses a DER SubjectPublicKeyInfo, refusing trailing bytes (HSM_ERR_VALIDATION). */
hsm_result hsm_spki_parse(const uint8_t *spki, size_t spki_len, EVP_PKEY **out) HSM_MUST_CHECK;

/*
 * Drops this thread's OpenSSL error queue; returns whether it said an
 * allocation failed.
 */
bool hsm_ossl_drop_errors(void);

/*
 * Around a call that fails alike for bad input and for want of memory (the
 * decoders, which try one format after another and do not always queue
 * their allocation failures): hsm_ossl_watch() before it, and when it
 * failed, hsm_ossl_ran_out() says whether memory ran out, by OpenSSL's
 * queue or by malloc's ENOMEM.  The queue is dropped either way.
 */
static inline void hsm_ossl_watch(void)
{
	ERR_clear_error();
	errno = 0;
}

static inline bool hsm_ossl_ran_out(void)
{
	bool queued = hsm_ossl_drop_errors();
	return queued || errno == ENOMEM;
}

/*
 * Failure after an OpenSSL call: drops this thread's OpenSSL error queue, so
 * stale entries never surface in a later, unrelated failure (hsm_result
 * carries the error; OpenSSL's detail is not shown to clients).  When memory
 * ran out (hsm_ossl_ran_out), the failure is that, not err: an allocation
 * failure must not read as a bad signature or a bad input.  A request's
 * errno starts at 0 (hsm_api_run), so a stale ENOMEM does not outlive it.
 */
#define HSM_OSSL_FAIL(err, ...)                                                    \
	(hsm_ossl_ran_out() ? HSM_FAIL(HSM_ERR_NOMEM, "out of memory in the crypto library") \
	                    : HSM_FAIL((err), __VA_ARGS__))

#define HSM_OSSL_ENSURE(cond, err, ...)                  \
	do {                                                 \
		if (!(cond))                                     \
			return HSM_OSSL_FAIL((err), __VA_ARGS__);    \
	} while (0)

#define HSM_OSSL_CHECK(cond, err, ...)                   \
	do {                                                 \
		if (!(cond)) {                                   \
			res = HSM_OSSL_FAIL((err), __VA_ARGS__);     \
			goto out;                                    \
		}                                                \
	} while (0)

#endif
