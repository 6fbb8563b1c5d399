/*
 * blob.h - the symmetric ciphertext blob and the encryption context AAD.
 *
 * Blob layout (DESIGN.md "Formats"; all integers big-endian):
 *
 *   offset  size  field
 *   0       1     format version (HSM_BLOB_VERSION)
 *   1       16    key id (the UUID's 16 bytes)
 *   17      4     key version
 *   21      12    GCM IV
 *   33      n     ciphertext
 *   33+n    16    GCM tag
 *
 * The AAD of the GCM operation is the 33-byte header followed by the
 * canonical encoding of the encryption context, so a blob moved to another
 * key or version, or opened with another context, fails to decrypt.  Decrypt
 * needs no KeyId: the header names the key, as in KMS.
 *
 * Canonical encryption context: u32 pair count, then for each pair sorted by
 * key (bytewise): u32-length-prefixed key, u32-length-prefixed value.  An
 * empty context encodes as u32 0.
 */
#ifndef HSM_BLOB_H
#define HSM_BLOB_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/util.h"
#include "crypto/crypto.h"

#define HSM_BLOB_VERSION 1
#define HSM_BLOB_HEADER_LEN 33
#define HSM_BLOB_OVERHEAD (HSM_BLOB_HEADER_LEN + HSM_GCM_TAG_LEN)

typedef struct hsm_blob {
	char key_id[HSM_UUID_STRLEN + 1];
	uint32_t key_version;
	const uint8_t *header; /* HSM_BLOB_HEADER_LEN bytes, into the parsed input */
	const uint8_t *iv;
	const uint8_t *ct;
	size_t ct_len;
	const uint8_t *tag;
} hsm_blob;

/* Parses without decrypting; any malformation is HSM_ERR_INVALID_CIPHERTEXT. */
hsm_result hsm_blob_parse(const uint8_t *p, size_t n, hsm_blob *out) HSM_MUST_CHECK;
/* Writes the header (with iv) to out; key_id must be a UUID string. */
hsm_result hsm_blob_write_header(hsm_buf *out, const char *key_id, uint32_t key_version,
                                 const uint8_t iv[HSM_GCM_IV_LEN]) HSM_MUST_CHECK;

/*
 * Plain AES-GCM (GcmEncrypt, GcmDecrypt) uses the same key material as the
 * blobs, so its additional data must never begin as a blob header: that AAD
 * is exactly how Decrypt authenticates a blob and its encryption context, and
 * GcmDecrypt, which key policies grant apart from kms:Decrypt and which sees
 * no encryption context, would open any blob.  Keys holding the same imported
 * material open each other's blobs too, so for opening (iv given) a header
 * naming any key is refused when it carries the IV being used, as a blob's
 * does.  HSM_ERR_VALIDATION when aad starts with HSM_BLOB_VERSION and key_id's
 * 16 bytes (or key_id is not a UUID), or, with iv, is a whole header whose IV
 * field is iv; success otherwise.
 */
hsm_result hsm_blob_refuse_header_aad(const uint8_t *aad, size_t aad_len, const char *key_id,
                                      const uint8_t *iv) HSM_MUST_CHECK;

/* One encryption context pair, as received (UTF-8 strings). */
typedef struct hsm_ctx_pair {
	const char *key;
	const char *value;
} hsm_ctx_pair;

/*
 * Appends the canonical encoding of n pairs to out (pairs need not be
 * sorted; duplicate keys are a VALIDATION error).
 */
hsm_result hsm_enc_ctx_canonical(const hsm_ctx_pair *pairs, size_t n, hsm_buf *out) HSM_MUST_CHECK;

#endif
