/*
 * backup_cipher.c - the cipher of one backup file (keystore.h "Backups").
 *
 * Each file has a random salt; its key is HKDF-SHA256(DMK backup key, salt,
 * label), held in the secure heap by the cipher object and never handed out.
 * As the key is the file's own, the GCM nonce of chunk i is simply i (32
 * zero bits, then i as a big-endian 64-bit number): no nonce repeats under a
 * key.  Swapping, dropping or repeating chunks fails, because each chunk is
 * opened with the nonce of the place it is read from.
 */
#include <stdlib.h>
#include <string.h>

#include "keystore/keystore_internal.h"

#define LABEL_BACKUP_FILE "hsmd/v1/backup-file"

struct hsm_ks_backup_cipher {
	hsm_secret *key;
};

hsm_result hsm_ks_backup_cipher_new(hsm_keystore *ks, const uint8_t salt[HSM_KS_BACKUP_SALT_LEN],
                                    hsm_ks_backup_cipher **out)
{
	hsm_ks_backup_cipher *c = calloc(1, sizeof(*c));
	HSM_ENSURE(c != NULL, HSM_ERR_NOMEM, "out of memory");
	pthread_rwlock_rdlock(&ks->keys_lock);
	hsm_result res = ks->keys.backup == NULL
	                     ? ks_require_unsealed(ks)
	                     : hsm_hkdf_sha256(ks->keys.backup, salt, HSM_KS_BACKUP_SALT_LEN,
	                                       LABEL_BACKUP_FILE, HSM_AES_KEY_LEN, &c->key);
	pthread_rwlock_unlock(&ks->keys_lock);
	if (hsm_failed(res)) {
		free(c);
		return res;
	}
	*out = c;
	return HSM_SUCCESS;
}

static void chunk_nonce(uint64_t index, uint8_t iv[HSM_GCM_IV_LEN])
{
	memset(iv, 0, HSM_GCM_IV_LEN);
	for (int i = 0; i < 8; i++)
		iv[HSM_GCM_IV_LEN - 1 - i] = (uint8_t)(index >> (8 * i));
}

hsm_result hsm_ks_backup_seal(hsm_ks_backup_cipher *c, uint64_t index, const uint8_t *aad,
                              size_t aad_len, const uint8_t *pt, size_t n, hsm_buf *out)
{
	uint8_t iv[HSM_GCM_IV_LEN], tag[HSM_GCM_TAG_LEN];
	chunk_nonce(index, iv);
	HSM_GUARD(hsm_aes_gcm_seal_raw(c->key, iv, aad, aad_len, pt, n, out, tag));
	return hsm_buf_put(out, tag, sizeof(tag));
}

hsm_result hsm_ks_backup_open(hsm_ks_backup_cipher *c, uint64_t index, const uint8_t *aad,
                              size_t aad_len, const uint8_t *ct, size_t n, hsm_buf *pt)
{
	uint8_t iv[HSM_GCM_IV_LEN];
	HSM_ENSURE(n >= HSM_GCM_TAG_LEN, HSM_ERR_INVALID_CIPHERTEXT, "backup chunk %llu is truncated",
	           (unsigned long long)index);
	chunk_nonce(index, iv);
	hsm_result r = hsm_aes_gcm_open_raw(c->key, iv, aad, aad_len, ct, n - HSM_GCM_TAG_LEN,
	                                    ct + n - HSM_GCM_TAG_LEN, pt);
	/* Only a tag that did not verify is an altered file: short of memory is no such alarm. */
	HSM_GUARD(r.err == HSM_ERR_INVALID_CIPHERTEXT ? HSM_SUCCESS : r);
	HSM_ENSURE(hsm_ok(r), HSM_ERR_INVALID_CIPHERTEXT,
	           "backup chunk %llu failed its integrity check (the file was altered, or it "
	           "belongs to another store)",
	           (unsigned long long)index);
	return HSM_SUCCESS;
}

void hsm_ks_backup_cipher_free(hsm_ks_backup_cipher *c)
{
	if (c == NULL)
		return;
	hsm_secret_free(c->key);
	free(c);
}
