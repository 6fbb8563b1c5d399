/*
 * backup_test.c - encrypted store backups (backup/backup.h) and the
 * keystore's backup cipher: a round trip through a detached keystore into a
 * store that opens and still serves its keys, no plaintext in the file, the
 * unseal quorum, tampering (every header byte, chunk bytes, tags, truncation,
 * extension, reordering), another store's keystore, a sealed keystore (no
 * file, no plain copy left behind), listing, pruning and copying.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "backup/backup.h"
#include "common/log.h"
#include "crypto/blob.h"
#include "keystore/keystore.h"
#include "store_test_util.h"

#define DESC "backup-test-description-q7Zk"
#define ALIAS "alias/backup-test-alias-q7Zk"
#define META_NAME "test.backup-marker"
#define META_VALUE "backup-test-meta-value-q7Zk"
#define KEY_ID "11111111-1111-4111-8111-111111111111"
#define LATE_ID "22222222-2222-4222-8222-222222222222"
#define NOW 1750000000
#define DAY 86400
#define CHUNK 5000 /* not a multiple of the page size: the last chunk is short */
#define TAG 16

typedef struct node {
	char dir[PATH_MAX];
	hsm_store *s;
	hsm_keystore *ks;
	hsm_buf shares[5];
} node;

typedef struct fx {
	char root[PATH_MAX], bak[PATH_MAX];
	node a, b;         /* b: another store, opened by the tests that need it */
	hsm_buf ctx, blob; /* "hello" encrypted under KEY_ID before any backup */
	hsm_buf file;      /* scratch */
} fx;

static void node_open(node *n, const char *root, const char *name)
{
	st_path(n->dir, root, name);
	EXPECT_OK(hsm_store_open(n->dir, &n->s));
	EXPECT_OK(hsm_keystore_new(n->s, 0, &n->ks));
	EXPECT_OK(hsm_keystore_init(n->ks, 3, 5, NULL, false, n->shares));
}

static void node_close(node *n)
{
	for (int i = 0; i < 5; i++)
		hsm_buf_free(&n->shares[i]);
	hsm_keystore_free(n->ks);
	hsm_store_close(n->s);
	memset(n, 0, sizeof(*n));
}

/* A key with real wrapped material, an alias, a tag and a meta value in store a. */
static void populate(fx *f)
{
	hsm_ks_keyref ref = {KEY_ID, 1, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT};
	hsm_buf wrapped = {0}, val = {0};
	hsm_key_record k;
	hsm_version_record v;
	hsm_tag tag;
	EXPECT_OK(hsm_ks_generate(f->a.ks, &ref, &wrapped, NULL));
	st_key(&k, KEY_ID);
	k.description = (char *)DESC;
	st_version(&v, KEY_ID, 1, wrapped.data, wrapped.len);
	EXPECT_OK(hsm_store_key_create(f->a.s, &k, &v));
	hsm_version_record_clear(&v);
	EXPECT_OK(hsm_store_alias_create(f->a.s, ALIAS, KEY_ID, NOW, NULL));
	memset(&tag, 0, sizeof(tag));
	snprintf(tag.key, sizeof(tag.key), "Project");
	snprintf(tag.value, sizeof(tag.value), "backup-test-tag");
	EXPECT_OK(hsm_store_tags_put(f->a.s, KEY_ID, 1, &tag, NULL));
	const char *names[] = {META_NAME};
	const hsm_buf *vals[] = {&val};
	EXPECT_OK(hsm_buf_put_str(&val, META_VALUE));
	EXPECT_OK(hsm_store_meta_put(f->a.s, 1, names, vals));
	EXPECT_OK(hsm_buf_put_u32(&f->ctx, 0));
	EXPECT_OK(hsm_ks_encrypt(f->a.ks, &ref, &f->ctx, (const uint8_t *)"hello", 5, &f->blob));
	hsm_buf_free(&wrapped);
	hsm_buf_free(&val);
}

static int setup(void **state)
{
	fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	st_tmpdir(f->root);
	st_path(f->bak, f->root, "backups");
	node_open(&f->a, f->root, "a");
	populate(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fx *f = *state;
	node_close(&f->a);
	node_close(&f->b);
	hsm_buf_free(&f->ctx);
	hsm_buf_free(&f->blob);
	hsm_buf_free(&f->file);
	st_rm_rf(f->root);
	free(f);
	return 0;
}

static hsm_result make_backup(fx *f, node *n, int64_t now, char path[PATH_MAX],
                              hsm_backup_info *info)
{
	hsm_backup_request req = {n->s, n->ks, f->bak, n->dir, "node-1", now, CHUNK, NULL};
	return hsm_backup_create(&req, path, PATH_MAX, info);
}

/* A detached keystore for id given `count` of n's shares, starting at share `first`. */
static hsm_keystore *detached(const hsm_ks_identity *id, const node *n, int first, int count)
{
	hsm_keystore *ks = NULL;
	hsm_unseal_progress p;
	EXPECT_OK(hsm_keystore_new_detached(id, &ks));
	assert_int_equal(hsm_keystore_state(ks), HSM_NODE_SEALED);
	for (int i = 0; i < count; i++) {
		const hsm_buf *sh = &n->shares[(first + i) % 5];
		EXPECT_OK(hsm_keystore_unseal(ks, sh->data, sh->len, &p));
	}
	assert_int_equal(hsm_keystore_state(ks), count >= 3 ? HSM_NODE_UNSEALED : HSM_NODE_SEALED);
	return ks;
}

static void slurp(const char *path, hsm_buf *out)
{
	hsm_buf_clear(out);
	EXPECT_OK(hsm_read_file(path, 1U << 26, out));
}

static void spit(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(p, 1, n, fp), n);
	assert_int_equal(fclose(fp), 0);
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static bool has(const hsm_buf *b, const char *s) /* the bytes of s occur in b */
{
	return memmem(b->data, b->len, s, strlen(s)) != NULL;
}

static size_t header_len(const hsm_buf *b)
{
	assert_true(b->len > 14);
	return (size_t)b->data[10] << 24 | (size_t)b->data[11] << 16 | (size_t)b->data[12] << 8 |
	       b->data[13];
}

/* Every field of two infos of the same backup agrees (no memcmp: padding). */
static void same_info(const hsm_backup_info *x, const hsm_backup_info *y)
{
	assert_string_equal(x->identity.store_id, y->identity.store_id);
	assert_memory_equal(x->identity.set_id, y->identity.set_id, HSM_KS_SET_ID_LEN);
	assert_memory_equal(x->identity.kcv, y->identity.kcv, HSM_KS_KCV_LEN);
	assert_true(x->identity.threshold == y->identity.threshold &&
	            x->identity.count == y->identity.count);
	assert_string_equal(x->backup_id, y->backup_id);
	assert_string_equal(x->node_id, y->node_id);
	assert_true(x->created == y->created && x->schema_version == y->schema_version &&
	            x->chunk_size == y->chunk_size && x->store_bytes == y->store_bytes &&
	            x->file_bytes == y->file_bytes);
	assert_memory_equal(x->salt, y->salt, sizeof(x->salt));
}

/* Entries of dir whose names start with prefix (0 when dir is missing). */
static size_t count_entries(const char *dir, const char *prefix)
{
	size_t n = 0;
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	for (struct dirent *de; (de = readdir(d)) != NULL;)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
		    hsm_str_has_prefix(de->d_name, prefix))
			n++;
	closedir(d);
	return n;
}

/* Writes p as a backup; hsm_backup_decrypt must refuse it and leave nothing at out_path. */
static hsm_err refused(fx *f, hsm_keystore *ks, const uint8_t *p, size_t n)
{
	char path[PATH_MAX], out[PATH_MAX];
	hsm_backup_info info;
	st_path(path, f->root, "tampered.hsmbak");
	st_path(out, f->root, "tampered.db");
	unlink(path);
	spit(path, p, n);
	hsm_result r = hsm_backup_decrypt(path, ks, out, &info);
	assert_true(hsm_failed(r));
	assert_false(exists(out));
	return r.err;
}

static void test_round_trip(void **state)
{
	fx *f = *state;
	char path[PATH_MAX], rdir[PATH_MAX], out[PATH_MAX], prefix[PATH_MAX + 64];
	hsm_backup_info info, read, dec;
	struct stat st;
	EXPECT_OK(make_backup(f, &f->a, NOW, path, &info));
	st_create_key(f->a.s, LATE_ID, "late", 4); /* after the backup: not in it */
	/* What create reports. */
	snprintf(prefix, sizeof(prefix), "%s/hsmd-%s-", f->bak, hsm_keystore_store_id(f->a.ks));
	assert_true(hsm_str_has_prefix(path, prefix));
	assert_string_equal(path + strlen(path) - strlen(HSM_BACKUP_SUFFIX), HSM_BACKUP_SUFFIX);
	assert_string_equal(info.identity.store_id, hsm_keystore_store_id(f->a.ks));
	assert_int_equal(info.identity.threshold, 3);
	assert_int_equal(info.identity.count, 5);
	assert_int_equal(info.created, NOW);
	assert_string_equal(info.node_id, "node-1");
	assert_true(hsm_is_uuid(info.backup_id));
	assert_int_equal(info.chunk_size, CHUNK);
	assert_int_equal(info.schema_version, hsm_store_schema_version(f->a.s));
	assert_true(info.store_bytes > 2 * CHUNK && info.store_bytes % CHUNK != 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(info.file_bytes, (uint64_t)st.st_size);
	slurp(path, &f->file);
	size_t chunks = (info.store_bytes + CHUNK - 1) / CHUNK;
	assert_int_equal(info.file_bytes, header_len(&f->file) + info.store_bytes + chunks * TAG);
	assert_memory_equal(f->file.data, "HSMDBAK\n", 8);
	/* Nothing else is left behind: no temporary, no plain copy in the work dir. */
	assert_int_equal(count_entries(f->bak, ""), 1);
	assert_int_equal(count_entries(f->a.dir, ".backup-"), 0);
	/* The header reads back without a key. */
	EXPECT_OK(hsm_backup_read_info(path, &read));
	same_info(&read, &info);
	/* Three of the five shares (not the first three) open it. */
	hsm_keystore *ks = detached(&read.identity, &f->a, 2, 3);
	EXPECT_OK(hsm_backup_decrypt(path, ks, NULL, &dec)); /* verify only */
	st_path(rdir, f->root, "restore");
	EXPECT_OK(hsm_mkdir_p(rdir));
	st_path(out, rdir, HSM_STORE_DB_FILE);
	EXPECT_OK(hsm_backup_decrypt(path, ks, out, &dec));
	same_info(&dec, &info);
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal((uint64_t)st.st_size, info.store_bytes);
	/* An existing file is not overwritten, nor removed. */
	EXPECT_ERR(hsm_backup_decrypt(path, ks, out, &dec), HSM_ERR_IO);
	assert_int_equal(stat(out, &st), 0);
	assert_int_equal((uint64_t)st.st_size, info.store_bytes);
	hsm_keystore_free(ks);
	/* The copy is the store as it was at the backup. */
	hsm_store *rs = NULL;
	hsm_key_record k = {0};
	hsm_alias_record al;
	hsm_buf meta = {0};
	EXPECT_OK(hsm_store_open(rdir, &rs));
	EXPECT_OK(hsm_store_key_get(rs, KEY_ID, &k));
	assert_string_equal(k.description, DESC);
	hsm_key_record_clear(&k);
	EXPECT_OK(hsm_store_alias_get(rs, ALIAS, &al));
	assert_string_equal(al.key_id, KEY_ID);
	EXPECT_OK(hsm_store_meta_get(rs, META_NAME, &meta));
	assert_int_equal(meta.len, strlen(META_VALUE));
	assert_memory_equal(meta.data, META_VALUE, meta.len);
	EXPECT_ERR(hsm_store_key_get(rs, LATE_ID, &k), HSM_ERR_NOT_FOUND);
	EXPECT_OK(hsm_store_key_get(f->a.s, LATE_ID, &k)); /* while the live store has it */
	hsm_key_record_clear(&k);
	/* ... and a keystore over it unseals and decrypts what the original encrypted. */
	hsm_keystore *rks = NULL;
	hsm_buf pt;
	hsm_blob blob;
	hsm_unseal_progress p;
	hsm_ks_keyref ref = {KEY_ID, 1, HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT};
	hsm_buf_init_secure(&pt);
	EXPECT_OK(hsm_keystore_new(rs, 0, &rks));
	assert_int_equal(hsm_keystore_state(rks), HSM_NODE_SEALED);
	for (int i = 0; i < 3; i++)
		EXPECT_OK(hsm_keystore_unseal(rks, f->a.shares[i].data, f->a.shares[i].len, &p));
	assert_true(p.unsealed);
	EXPECT_OK(hsm_blob_parse(f->blob.data, f->blob.len, &blob));
	EXPECT_OK(hsm_ks_decrypt(rks, &ref, &blob, &f->ctx, &pt));
	assert_int_equal(pt.len, 5);
	assert_memory_equal(pt.data, "hello", 5);
	hsm_buf_free(&pt);
	hsm_buf_free(&meta);
	hsm_keystore_free(rks);
	hsm_store_close(rs);
}

static void test_no_plaintext_in_file(void **state)
{
	fx *f = *state;
	char path[PATH_MAX], path2[PATH_MAX], snap[PATH_MAX];
	hsm_backup_info info, info2;
	hsm_buf again = {0};
	st_path(snap, f->root, "snapshot.db");
	EXPECT_OK(hsm_store_snapshot(f->a.s, snap));
	slurp(snap, &f->file);
	assert_true(has(&f->file, DESC) && has(&f->file, ALIAS) && has(&f->file, META_VALUE));
	assert_true(has(&f->file, "SQLite format 3"));
	EXPECT_OK(make_backup(f, &f->a, NOW, path, &info));
	slurp(path, &f->file);
	assert_false(has(&f->file, DESC));
	assert_false(has(&f->file, ALIAS));
	assert_false(has(&f->file, META_VALUE));
	assert_false(has(&f->file, "backup-test"));
	assert_false(has(&f->file, "SQLite format"));
	/* A second backup of the same store has its own id, salt and ciphertext. */
	EXPECT_OK(make_backup(f, &f->a, NOW, path2, &info2));
	assert_string_not_equal(path, path2);
	assert_string_not_equal(info.backup_id, info2.backup_id);
	assert_false(hsm_ct_equal(info.salt, info2.salt, sizeof(info.salt)));
	slurp(path2, &again);
	size_t h = header_len(&f->file), h2 = header_len(&again);
	assert_false(hsm_ct_equal(f->file.data + h, again.data + h2, 64));
	hsm_buf_free(&again);
}

static void test_quorum(void **state)
{
	fx *f = *state;
	char path[PATH_MAX], out[PATH_MAX];
	hsm_backup_info info, dec;
	hsm_unseal_progress p;
	EXPECT_OK(make_backup(f, &f->a, NOW, path, &info));
	st_path(out, f->root, "out.db");
	hsm_keystore *ks = detached(&info.identity, &f->a, 3, 2);
	hsm_keystore_unseal_status(ks, &p);
	assert_int_equal(p.have, 2);
	assert_int_equal(p.threshold, 3);
	EXPECT_ERR(hsm_backup_decrypt(path, ks, out, &dec), HSM_ERR_SEALED);
	assert_false(exists(out));
	/* Another store's share is refused and does not count. */
	node_open(&f->b, f->root, "b");
	EXPECT_ERR(hsm_keystore_unseal(ks, f->b.shares[0].data, f->b.shares[0].len, &p),
	           HSM_ERR_SHARE_MISMATCH);
	assert_int_equal(hsm_keystore_state(ks), HSM_NODE_SEALED);
	EXPECT_ERR(hsm_backup_decrypt(path, ks, NULL, &dec), HSM_ERR_SEALED);
	/* The third genuine share opens it. */
	EXPECT_OK(hsm_keystore_unseal(ks, f->a.shares[0].data, f->a.shares[0].len, &p));
	assert_true(p.unsealed);
	EXPECT_OK(hsm_backup_decrypt(path, ks, out, &dec));
	assert_true(exists(out));
	hsm_keystore_free(ks);
	/* A header whose key check value was altered: genuine shares do not match it. */
	hsm_ks_identity forged = info.identity;
	forged.kcv[0] ^= 1;
	EXPECT_OK(hsm_keystore_new_detached(&forged, &ks));
	for (int i = 0; i < 2; i++)
		EXPECT_OK(hsm_keystore_unseal(ks, f->a.shares[i].data, f->a.shares[i].len, &p));
	EXPECT_ERR(hsm_keystore_unseal(ks, f->a.shares[2].data, f->a.shares[2].len, &p),
	           HSM_ERR_WRONG_MASTER_KEY);
	assert_int_equal(hsm_keystore_state(ks), HSM_NODE_SEALED);
	hsm_keystore_free(ks);
}

static void test_tampering(void **state)
{
	fx *f = *state;
	char path[PATH_MAX];
	hsm_backup_info info, dec;
	hsm_buf t = {0};
	EXPECT_OK(make_backup(f, &f->a, NOW, path, &info));
	hsm_keystore *ks = detached(&info.identity, &f->a, 0, 3);
	slurp(path, &f->file);
	const uint8_t *orig = f->file.data;
	size_t n = f->file.len, h = header_len(&f->file), c = CHUNK + TAG;
	assert_int_equal(n, info.file_bytes);
	assert_true(n > h + 2 * c);
	/* The untouched bytes, written the same way, decrypt (the harness can succeed). */
	char copy[PATH_MAX];
	st_path(copy, f->root, "copy.hsmbak");
	spit(copy, orig, n);
	EXPECT_OK(hsm_backup_decrypt(copy, ks, NULL, &dec));
	/* Every header byte, flipped in its low and its high bit. */
	for (size_t i = 0; i < h; i++)
		for (int m = 0; m < 2; m++) {
			EXPECT_OK(hsm_buf_set(&t, orig, n));
			t.data[i] ^= m ? 0x80 : 0x01;
			hsm_err e = refused(f, ks, t.data, t.len);
			if (e != HSM_ERR_VALIDATION && e != HSM_ERR_INVALID_CIPHERTEXT &&
			    e != HSM_ERR_CONFLICT)
				fail_msg("header byte %zu ^ %s: unexpected %s", i, m ? "0x80" : "0x01",
				         hsm_err_code_name(e));
		}
	/* A byte of a chunk, the last byte of the first and of the last tag. */
	size_t at[] = {h, h + CHUNK / 2, h + c - 1, h + c + 7, n / 2, n - TAG, n - 1};
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		EXPECT_OK(hsm_buf_set(&t, orig, n));
		t.data[at[i]] ^= 0x01;
		assert_int_equal(refused(f, ks, t.data, t.len), HSM_ERR_INVALID_CIPHERTEXT);
	}
	/* Truncated: inside the header, at its end, mid-chunk, at a chunk boundary, one short. */
	assert_int_equal(refused(f, ks, orig, 0), HSM_ERR_VALIDATION);
	assert_int_equal(refused(f, ks, orig, 12), HSM_ERR_VALIDATION);
	assert_int_equal(refused(f, ks, orig, h - 1), HSM_ERR_VALIDATION);
	size_t cut[] = {h, h + 100, h + c, h + 2 * c, n - TAG, n - 1};
	for (size_t i = 0; i < sizeof(cut) / sizeof(cut[0]); i++)
		assert_int_equal(refused(f, ks, orig, cut[i]), HSM_ERR_INVALID_CIPHERTEXT);
	/* One byte, or a whole copy of the last chunk, appended. */
	EXPECT_OK(hsm_buf_set(&t, orig, n));
	EXPECT_OK(hsm_buf_put_u8(&t, 0));
	assert_int_equal(refused(f, ks, t.data, t.len), HSM_ERR_INVALID_CIPHERTEXT);
	EXPECT_OK(hsm_buf_set(&t, orig, n));
	size_t last = n - h - (n - h) / c * c; /* the short last chunk with its tag */
	EXPECT_OK(hsm_buf_put(&t, orig + n - last, last));
	assert_int_equal(refused(f, ks, t.data, t.len), HSM_ERR_INVALID_CIPHERTEXT);
	/* Chunks 0 and 1 swapped; chunk 0 repeated in place of 1; chunk 1 dropped. */
	EXPECT_OK(hsm_buf_set(&t, orig, n));
	memcpy(t.data + h, orig + h + c, c);
	memcpy(t.data + h + c, orig + h, c);
	assert_int_equal(refused(f, ks, t.data, t.len), HSM_ERR_INVALID_CIPHERTEXT);
	memcpy(t.data + h, orig + h, c);
	assert_int_equal(refused(f, ks, t.data, t.len), HSM_ERR_INVALID_CIPHERTEXT);
	hsm_buf_clear(&t);
	EXPECT_OK(hsm_buf_put(&t, orig, h + c));
	EXPECT_OK(hsm_buf_put(&t, orig + h + 2 * c, n - h - 2 * c));
	assert_int_equal(refused(f, ks, t.data, t.len), HSM_ERR_INVALID_CIPHERTEXT);
	/* The header of one backup on the chunks of another of the same store. */
	char other[PATH_MAX];
	hsm_backup_info oi;
	hsm_buf ob = {0};
	EXPECT_OK(make_backup(f, &f->a, NOW, other, &oi));
	slurp(other, &ob);
	assert_int_equal(ob.len, n);
	EXPECT_OK(hsm_buf_set(&t, ob.data, h));
	EXPECT_OK(hsm_buf_put(&t, orig + h, n - h));
	assert_int_equal(refused(f, ks, t.data, t.len), HSM_ERR_INVALID_CIPHERTEXT);
	hsm_buf_free(&ob);
	hsm_buf_free(&t);
	hsm_keystore_free(ks);
}

static void test_other_store(void **state)
{
	fx *f = *state;
	char path[PATH_MAX], out[PATH_MAX];
	hsm_backup_info info, dec;
	EXPECT_OK(make_backup(f, &f->a, NOW, path, &info));
	st_path(out, f->root, "out.db");
	node_open(&f->b, f->root, "b");
	EXPECT_ERR(hsm_backup_decrypt(path, f->b.ks, out, &dec), HSM_ERR_CONFLICT);
	assert_false(exists(out));
	hsm_ks_identity bid;
	hsm_keystore_identity(f->b.ks, &bid);
	assert_string_not_equal(bid.store_id, info.identity.store_id);
	hsm_keystore *ks = detached(&bid, &f->b, 0, 3);
	EXPECT_ERR(hsm_backup_decrypt(path, ks, out, &dec), HSM_ERR_CONFLICT);
	assert_false(exists(out));
	hsm_keystore_free(ks);
	/* The live keystore of store a opens it too (no detached keystore needed). */
	EXPECT_OK(hsm_backup_decrypt(path, f->a.ks, NULL, &dec));
}

static void test_sealed_makes_nothing(void **state)
{
	fx *f = *state;
	char path[PATH_MAX] = "";
	hsm_backup_info info;
	hsm_unseal_progress p;
	hsm_keystore_seal(f->a.ks);
	EXPECT_ERR(make_backup(f, &f->a, NOW, path, &info), HSM_ERR_SEALED);
	assert_string_equal(path, "");
	assert_int_equal(count_entries(f->bak, ""), 0);
	assert_int_equal(count_entries(f->a.dir, ".backup-"), 0);
	/* Nor does an uninitialized store's keystore. */
	node c;
	memset(&c, 0, sizeof(c));
	st_path(c.dir, f->root, "c");
	EXPECT_OK(hsm_store_open(c.dir, &c.s));
	EXPECT_OK(hsm_keystore_new(c.s, 0, &c.ks));
	assert_int_equal(hsm_keystore_state(c.ks), HSM_NODE_UNINITIALIZED);
	EXPECT_ERR(make_backup(f, &c, NOW, path, &info), HSM_ERR_SEALED);
	assert_int_equal(count_entries(f->bak, ""), 0);
	assert_int_equal(count_entries(c.dir, ".backup-"), 0);
	node_close(&c);
	/* Unsealed again: exactly one file, no temporaries. */
	for (int i = 1; i < 4; i++)
		EXPECT_OK(hsm_keystore_unseal(f->a.ks, f->a.shares[i].data, f->a.shares[i].len, &p));
	EXPECT_OK(make_backup(f, &f->a, NOW, path, &info));
	assert_int_equal(count_entries(f->bak, ""), 1);
	assert_int_equal(count_entries(f->bak, "."), 0);
	assert_int_equal(count_entries(f->a.dir, ".backup-"), 0);
}

/* What the reader would refuse is not written: no unreadable (and so never pruned) file. */
static void test_unreadable_header_values_refused(void **state)
{
	fx *f = *state;
	char path[PATH_MAX] = "";
	hsm_backup_info info;
	EXPECT_ERR(make_backup(f, &f->a, 0, path, &info), HSM_ERR_VALIDATION);
	EXPECT_ERR(make_backup(f, &f->a, -5, path, &info), HSM_ERR_VALIDATION);
	hsm_backup_request req = {f->a.s, f->a.ks, f->bak, f->a.dir, "node\tx", NOW, CHUNK, NULL};
	EXPECT_ERR(hsm_backup_create(&req, path, PATH_MAX, &info), HSM_ERR_VALIDATION);
	assert_int_equal(count_entries(f->bak, ""), 0);
	assert_int_equal(count_entries(f->a.dir, ".backup-"), 0);
}

typedef struct seen {
	size_t n;
	char path[8][PATH_MAX];
	int64_t created[8];
} seen;

static hsm_result seen_cb(const char *path, const hsm_backup_info *info, void *arg)
{
	seen *s = arg;
	assert_true(s->n < 8);
	snprintf(s->path[s->n], PATH_MAX, "%s", path);
	s->created[s->n++] = info->created;
	return HSM_SUCCESS;
}

static hsm_result stop_cb(const char *path, const hsm_backup_info *info, void *arg)
{
	(void)path;
	(void)info;
	++*(int *)arg;
	HSM_ENSURE(false, HSM_ERR_INTERNAL, "stop");
	return HSM_SUCCESS;
}

static seen list(const char *dir, const char *store_id)
{
	seen s;
	memset(&s, 0, sizeof(s));
	EXPECT_OK(hsm_backup_list(dir, store_id, seen_cb, &s));
	return s;
}

static void test_list_and_prune(void **state)
{
	fx *f = *state;
	static const int64_t ages[] = {100, 95, 10, 0}; /* days before NOW, made out of order below */
	static const int order[] = {2, 0, 3, 1};
	char paths[4][PATH_MAX], bpath[PATH_MAX], junk[4][PATH_MAX], missing[PATH_MAX];
	const char *junk_names[] = {"notes.txt", "x.hsmbak", ".y.hsmbak.part", ".z.hsmbak"};
	hsm_backup_info info;
	const char *a = hsm_keystore_store_id(f->a.ks);
	for (int i = 0; i < 4; i++)
		EXPECT_OK(make_backup(f, &f->a, NOW - ages[order[i]] * DAY, paths[order[i]], &info));
	node_open(&f->b, f->root, "b");
	EXPECT_OK(make_backup(f, &f->b, NOW - 200 * DAY, bpath, &info));
	/* Junk: not backups by name, garbage under a backup's name, hidden real backups. */
	slurp(paths[3], &f->file);
	for (int i = 0; i < 4; i++) {
		st_path(junk[i], f->bak, junk_names[i]);
		if (i < 2)
			spit(junk[i], "not a backup at all, just some text\n", 36);
		else
			spit(junk[i], f->file.data, f->file.len);
	}
	seen s = list(f->bak, a);
	assert_int_equal(s.n, 4);
	for (int i = 0; i < 4; i++) {
		assert_string_equal(s.path[i], paths[i]);
		assert_int_equal(s.created[i], NOW - ages[i] * DAY);
	}
	s = list(f->bak, NULL);
	assert_int_equal(s.n, 5);
	assert_string_equal(s.path[0], bpath);
	assert_int_equal(list(f->bak, hsm_keystore_store_id(f->b.ks)).n, 1);
	assert_int_equal(list(f->bak, "33333333-3333-4333-8333-333333333333").n, 0);
	st_path(missing, f->root, "no-such-dir");
	assert_int_equal(list(missing, NULL).n, 0);
	assert_false(exists(missing));
	int calls = 0;
	EXPECT_ERR(hsm_backup_list(f->bak, a, stop_cb, &calls), HSM_ERR_INTERNAL);
	assert_int_equal(calls, 1);
	/* Exactly 100 days old is not older than 100 days. */
	size_t removed = 99;
	EXPECT_OK(hsm_backup_prune(f->bak, a, 100, NOW, 1, &removed, NULL));
	assert_int_equal(removed, 0);
	/* 90 days: the two older go; nothing else is touched. */
	EXPECT_OK(hsm_backup_prune(f->bak, a, 90, NOW, 1, &removed, NULL));
	assert_int_equal(removed, 2);
	assert_false(exists(paths[0]) || exists(paths[1]));
	s = list(f->bak, a);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.path[0], paths[2]);
	assert_string_equal(s.path[1], paths[3]);
	for (int i = 0; i < 4; i++)
		assert_true(exists(junk[i]));
	assert_true(exists(bpath)); /* another store's, older still */
	EXPECT_OK(hsm_backup_prune(f->bak, a, 90, NOW, 1, &removed, NULL));
	assert_int_equal(removed, 0);
	EXPECT_OK(hsm_backup_prune(f->bak, a, 10, NOW, 1, &removed, NULL));
	assert_int_equal(removed, 0);
	/* A clock stepped a year ahead makes both look expired: keeping two, none goes. */
	EXPECT_OK(hsm_backup_prune(f->bak, a, 5, NOW + 400 * DAY, 2, &removed, NULL));
	assert_int_equal(removed, 0);
	assert_int_equal(list(f->bak, a).n, 2);
	/* All expired: the newest stays; the one deleted is named (for the Backup event). */
	hsm_buf names = {0};
	EXPECT_OK(hsm_backup_prune(f->bak, a, 5, NOW + 400 * DAY, 1, &removed, &names));
	assert_int_equal(removed, 1);
	assert_true(hsm_ok(hsm_buf_terminate(&names)));
	assert_string_equal((const char *)names.data, hsm_path_base(paths[2]));
	hsm_buf_free(&names);
	s = list(f->bak, a);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.path[0], paths[3]);
	EXPECT_OK(hsm_backup_prune(f->bak, a, 0, NOW + 1000 * DAY, 1, NULL, NULL));
	EXPECT_OK(hsm_backup_prune(f->bak, hsm_keystore_store_id(f->b.ks), 1, NOW, 1, &removed, NULL));
	assert_int_equal(removed, 0);
	assert_true(exists(paths[3]) && exists(bpath));
	EXPECT_OK(hsm_backup_prune(missing, a, 1, NOW, 1, &removed, NULL));
	assert_int_equal(removed, 0);
}

/*
 * A backup dated in the future (made under a clock that was wrong, or copied in) is
 * neither deleted nor one of the newest kept: counted among them, it held a slot until
 * its date, and the honestly dated backups it displaced were deleted.
 */
static void test_prune_leaves_future_dated_backups_apart(void **state)
{
	fx *f = *state;
	static const int64_t ages[] = {100, 95, 10, 0}; /* days before NOW */
	char paths[4][PATH_MAX], ahead[PATH_MAX], near[PATH_MAX];
	hsm_backup_info info;
	const char *a = hsm_keystore_store_id(f->a.ks);
	for (int i = 0; i < 4; i++)
		EXPECT_OK(make_backup(f, &f->a, NOW - ages[i] * DAY, paths[i], &info));
	EXPECT_OK(make_backup(f, &f->a, NOW + 400 * DAY, ahead, &info));
	/* Retention 5 days, the 2 newest kept: NOW and NOW - 10 days, not the one dated ahead. */
	size_t removed = 99;
	EXPECT_OK(hsm_backup_prune(f->bak, a, 5, NOW, 2, &removed, NULL));
	assert_int_equal(removed, 2);
	assert_false(exists(paths[0]) || exists(paths[1]));
	assert_true(exists(paths[2]) && exists(paths[3]) && exists(ahead));
	/* However short the retention, it is never deleted while it is ahead. */
	EXPECT_OK(hsm_backup_prune(f->bak, a, 0, NOW, 1, &removed, NULL));
	assert_int_equal(removed, 1);
	assert_true(exists(paths[3]) && exists(ahead));
	/* A day of slack for clocks a little apart: within it, a backup counts as the newest. */
	EXPECT_OK(make_backup(f, &f->a, NOW + DAY, near, &info));
	EXPECT_OK(hsm_backup_prune(f->bak, a, 0, NOW + 60, 1, &removed, NULL));
	assert_int_equal(removed, 1);
	assert_false(exists(paths[3]));
	assert_true(exists(near) && exists(ahead));
	/* Once the clock reaches its date, it is a backup like the others. */
	EXPECT_OK(hsm_backup_prune(f->bak, a, 0, NOW + 400 * DAY, 1, &removed, NULL));
	assert_int_equal(removed, 1);
	assert_false(exists(near));
	assert_true(exists(ahead));
}

static void test_copy(void **state)
{
	fx *f = *state;
	char path[PATH_MAX], odir[PATH_MAX], copied[PATH_MAX];
	hsm_backup_info info, read, dec;
	hsm_buf b = {0};
	EXPECT_OK(make_backup(f, &f->a, NOW, path, &info));
	st_path(odir, f->root, "offsite/deep");
	/* The directory is made at start: a copy never makes it (a mount gone away). */
	EXPECT_ERR(hsm_backup_copy(path, odir), HSM_ERR_IO);
	EXPECT_OK(hsm_mkdir_p(odir));
	EXPECT_OK(hsm_backup_copy(path, odir));
	st_path(copied, odir, strrchr(path, '/') + 1);
	slurp(path, &f->file);
	slurp(copied, &b);
	assert_int_equal(b.len, f->file.len);
	assert_memory_equal(b.data, f->file.data, b.len);
	assert_int_equal(count_entries(odir, ""), 1); /* no temporary left */
	EXPECT_OK(hsm_backup_read_info(copied, &read));
	same_info(&read, &info);
	hsm_keystore *ks = detached(&read.identity, &f->a, 1, 3);
	EXPECT_OK(hsm_backup_decrypt(copied, ks, NULL, &dec));
	same_info(&dec, &info);
	/* Copying again replaces it in place. */
	EXPECT_OK(hsm_backup_copy(path, odir));
	assert_int_equal(count_entries(odir, ""), 1);
	hsm_keystore_free(ks);
	hsm_buf_free(&b);
}

/* A backup made on its own thread, as the leader of a shared store makes one. */
typedef struct maker {
	fx *f;
	char path[PATH_MAX];
	hsm_backup_info info;
	hsm_result r;
	char why[HSM_ERRMSG_MAX];
	atomic_bool done;
} maker;

static void *make_in_thread(void *arg)
{
	maker *m = arg;
	m->r = make_backup(m->f, &m->f->a, NOW, m->path, &m->info);
	snprintf(m->why, sizeof(m->why), "%s", hsm_ok(m->r) ? "" : hsm_last_message());
	atomic_store(&m->done, true);
	return NULL;
}

/*
 * Nodes sharing a store may share a backup directory; one that starts while
 * another writes a backup there removes only what a backup that did not
 * finish left, not the file being written.
 */
static void test_leftovers_spare_a_backup_being_written(void **state)
{
	fx *f = *state;
	char other[PATH_MAX], stale[PATH_MAX];
	/* A store of a few MB: a thousand chunks to write. */
	static char big[4 << 20];
	memset(big, 'x', sizeof(big) - 1);
	hsm_buf val = {0};
	const char *names[] = {"test.big"};
	const hsm_buf *vals[] = {&val};
	EXPECT_OK(hsm_buf_put_str(&val, big));
	EXPECT_OK(hsm_store_meta_put(f->a.s, 1, names, vals));
	hsm_buf_free(&val);
	st_path(other, f->root, "other-node");
	assert_int_equal(mkdir(other, 0700), 0);
	maker m = {.f = f};
	atomic_init(&m.done, false);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, make_in_thread, &m), 0);
	size_t passes = 0;
	while (!atomic_load(&m.done)) {
		hsm_backup_remove_leftovers(f->bak, other);
		passes++;
	}
	pthread_join(t, NULL);
	if (hsm_failed(m.r))
		fail_msg("the backup failed: %s", m.why);
	assert_true(passes > 0);
	assert_true(exists(m.path));
	hsm_keystore *ks = detached(&m.info.identity, &f->a, 0, 3);
	hsm_backup_info dec;
	EXPECT_OK(hsm_backup_decrypt(m.path, ks, NULL, &dec));
	hsm_keystore_free(ks);
	/* What a crash left, locked by nobody, still goes. */
	st_path(stale, f->bak, ".hsmd-x-20261130T024233Z-0a2fe434.hsmbak.part");
	spit(stale, "x", 1);
	hsm_backup_remove_leftovers(f->bak, other);
	assert_false(exists(stale));
}

/* A backup id chosen beforehand (to name it before the file exists) is the backup's. */
static void test_backup_id_chosen_beforehand(void **state)
{
	fx *f = *state;
	char path[PATH_MAX];
	hsm_backup_info info;
	const char *id = "0a2fe434-5b6c-4d7e-8f90-123456789abc";
	hsm_backup_request req = {f->a.s, f->a.ks, f->bak, f->a.dir, "node-1", NOW, CHUNK, id};
	EXPECT_OK(hsm_backup_create(&req, path, PATH_MAX, &info));
	assert_string_equal(info.backup_id, id);
	assert_string_equal(path + strlen(path) - strlen("-0a2fe434" HSM_BACKUP_SUFFIX),
	                    "-0a2fe434" HSM_BACKUP_SUFFIX);
	hsm_backup_info read;
	EXPECT_OK(hsm_backup_read_info(path, &read));
	assert_string_equal(read.backup_id, id);
	req.backup_id = "not-a-uuid";
	EXPECT_ERR(hsm_backup_create(&req, path, PATH_MAX, &info), HSM_ERR_VALIDATION);
	assert_int_equal(count_entries(f->bak, ""), 1);
	assert_int_equal(count_entries(f->a.dir, ".backup-"), 0);
}

/* A store copy cut short leaves its rollback journal too: both go. */
static void test_leftovers_include_the_copy_s_journal(void **state)
{
	fx *f = *state;
	char copy[PATH_MAX], journal[PATH_MAX], other[PATH_MAX];
	st_path(copy, f->a.dir, ".backup-0a2fe434-5b6c-4d7e-8f90-123456789abc.db");
	st_path(journal, f->a.dir, ".backup-0a2fe434-5b6c-4d7e-8f90-123456789abc.db-journal");
	st_path(other, f->a.dir, "hsmd.db-journal.keep");
	spit(copy, "x", 1);
	spit(journal, "x", 1);
	spit(other, "x", 1);
	hsm_backup_remove_leftovers(f->bak, f->a.dir);
	assert_false(exists(copy));
	assert_false(exists(journal));
	assert_true(exists(other));
}

int main(void)
{
	hsm_log_set_level(HSM_LOG_ERROR);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_plaintext_in_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_quorum, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampering, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_store, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sealed_makes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unreadable_header_values_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_and_prune, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prune_leaves_future_dated_backups_apart, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leftovers_spare_a_backup_being_written, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_backup_id_chosen_beforehand, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leftovers_include_the_copy_s_journal, setup,
		                                teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
