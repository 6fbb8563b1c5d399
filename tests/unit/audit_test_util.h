/*
 * audit_test_util.h - helpers shared by the audit tests (header-only: each
 * test program is built from one .c file).
 */
#ifndef AUDIT_TEST_UTIL_H
#define AUDIT_TEST_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit/audit.h"
#include "common/buf.h"
#include "common/util.h"

static inline void t_mkdtemp(char out[PATH_MAX], const char *tag)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(out, PATH_MAX, "%s/hsm-%s-XXXXXX", base, tag);
	assert_non_null(mkdtemp(out));
}

static inline void t_rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return;
	for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		char p[PATH_MAX];
		if (snprintf(p, sizeof(p), "%s/%s", dir, e->d_name) >= (int)sizeof(p))
			continue;
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			t_rm_rf(p);
		else
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

/* Sorted paths of files in dir whose name starts with prefix and ends with suffix. */
static inline size_t t_list(const char *dir, const char *prefix, const char *suffix,
                            char paths[][PATH_MAX], size_t max)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0;
	for (struct dirent *e = readdir(d); e != NULL; e = readdir(d)) {
		size_t l = strlen(e->d_name), sl = strlen(suffix);
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || l < sl ||
		    strcmp(e->d_name + l - sl, suffix) != 0)
			continue;
		assert_true(n < max);
		int w = snprintf(paths[n++], PATH_MAX, "%s/%s", dir, e->d_name);
		assert_true(w > 0 && w < PATH_MAX);
	}
	closedir(d);
	qsort(paths, n, PATH_MAX, (int (*)(const void *, const void *))strcmp);
	return n;
}

#define T_MAX_FILES 256

static inline hsm_audit_verify_report t_verify_dir(const char *dir, const char *pem, bool live)
{
	static char paths[T_MAX_FILES][PATH_MAX];
	const char *ptrs[T_MAX_FILES];
	size_t n = t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES);
	for (size_t i = 0; i < n; i++)
		ptrs[i] = paths[i];
	hsm_audit_verify_options o = {.pubkey_pem = pem, .allow_open_tail = live};
	hsm_audit_verify_report r;
	assert_true(hsm_ok(hsm_audit_verify_files(ptrs, n, &o, &r)));
	if (!r.valid)
		print_message("verify: %s line %llu seq %llu: %s\n", r.file, (unsigned long long)r.line,
		              (unsigned long long)r.seq, r.detail);
	return r;
}

/* Reads a whole file into a NUL-terminated heap string. */
static inline char *t_slurp(const char *path, size_t *len)
{
	hsm_buf b = {0};
	assert_true(hsm_ok(hsm_read_file(path, (size_t)1 << 30, &b)));
	assert_true(hsm_ok(hsm_buf_terminate(&b)));
	if (len)
		*len = b.len;
	if (b.data == NULL) {
		char *e = calloc(1, 1);
		assert_non_null(e);
		return e;
	}
	return (char *)b.data;
}

static inline void t_spit(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(p, 1, n, f), n);
	assert_int_equal(fclose(f), 0);
}

static inline size_t t_count_lines(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* ---- Ed25519 signer over OpenSSL (stands in for the keystore) ------------ */

typedef struct t_signer {
	EVP_PKEY *key;
	atomic_int calls;
} t_signer;

static inline void t_signer_init(t_signer *s)
{
	s->key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(s->key);
	atomic_store(&s->calls, 0);
}

static inline hsm_result t_sign(void *arg, const uint8_t *msg, size_t n, hsm_buf *sig)
{
	t_signer *s = arg;
	atomic_fetch_add(&s->calls, 1);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t len = 64;
	uint8_t out[64];
	bool ok = ctx && EVP_DigestSignInit_ex(ctx, NULL, NULL, NULL, NULL, s->key, NULL) == 1 &&
	          EVP_DigestSign(ctx, out, &len, msg, n) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return HSM_FAIL(HSM_ERR_CRYPTO, "sign failed");
	return hsm_buf_put(sig, out, len);
}

/* PEM SubjectPublicKeyInfo of the signer's key (heap string). */
static inline char *t_signer_pem(const t_signer *s)
{
	BIO *b = BIO_new(BIO_s_mem());
	assert_non_null(b);
	assert_int_equal(PEM_write_bio_PUBKEY(b, s->key), 1);
	char *p = NULL;
	long n = BIO_get_mem_data(b, &p);
	char *out = calloc((size_t)n + 1, 1);
	assert_non_null(out);
	memcpy(out, p, (size_t)n);
	BIO_free(b);
	return out;
}

/* ---- Records ------------------------------------------------------------- */

static inline hsm_audit_record t_record(unsigned i)
{
	static _Thread_local char rid[40];
	snprintf(rid, sizeof(rid), "req-%08u", i);
	static const hsm_audit_field extra[] = {{"alg", "SYMMETRIC_DEFAULT"}};
	hsm_audit_record r = {
	    .type = HSM_AUDIT_REQUEST,
	    .principal = "arn:aws:iam::111122223333:user/alice",
	    .access_key_id = "AKIAEXAMPLE0001",
	    .source = "10.0.0.7:51234",
	    .operation = "Encrypt",
	    .key_id = "1234abcd-12ab-34cd-56ef-1234567890ab",
	    .key_version = 1 + i % 3,
	    .outcome = i % 7 == 0 ? HSM_AUDIT_DENIED : HSM_AUDIT_SUCCESS,
	    .error = i % 7 == 0 ? "AccessDeniedException" : NULL,
	    .request_id = rid,
	    .latency_us = 100 + i,
	    .extra = extra,
	    .n_extra = 1,
	};
	return r;
}

static inline hsm_audit_config t_config(const char *dir)
{
	hsm_audit_config c = {.dir = dir, .node_id = "node-test"};
	return c;
}

static inline uint64_t t_now_ms(void)
{
	return hsm_mono_ns() / 1000000ULL;
}

#endif
