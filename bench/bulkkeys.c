/*
 * bulkkeys - fills a stopped dev node's data directory with many keys, for
 * the scale benchmark (`make bench-scale`).
 *
 * It goes through the same layers as CreateKey, minus HTTP: the store is
 * opened, the keystore unsealed with the dev share file (the 1-of-1 share
 * `hsmd --dev` keeps in the data directory), and each key made by
 * hsm_kms_create_key: fresh material, wrapped under the domain master key
 * with its identity as AAD, committed in its own durable transaction.  So
 * every key is a real, usable key.  Creation is not audited (it is not a
 * request).  Each commit waits for fsync: put the directory on tmpfs while
 * loading a million keys, then move it (bench/scale.py does).
 *
 * usage: bulkkeys --data-dir DIR --count N [--spec ECC_NIST_P256]
 *                 [--usage SIGN_VERIFY] [--threads T] [--ids FILE]
 * Key ids are appended to FILE, one per line.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/secret.h"
#include "common/util.h"
#include "keystore/keystore.h"
#include "kms/kms.h"

#define SHARE_FILE "dev-unseal.share"
#define REPORT_EVERY 100000U

typedef struct job {
	hsm_kms *kms;
	hsm_key_spec spec;
	hsm_key_usage usage;
	uint64_t count;
	atomic_uint_fast64_t next;
	atomic_bool failed;
	pthread_mutex_t out_lock;
	FILE *ids;
	uint64_t t0;
} job;

static void *creator(void *arg)
{
	static const hsm_caller local = {.user = "bench-bulkkeys", .access_key_id = "",
	                                 .roles = HSM_ROLES_OFFICER, .local = true};
	job *j = arg;
	hsm_create_key_req req = {.description = "bulk", .spec = j->spec, .usage = j->usage};
	for (;;) {
		uint64_t i = atomic_fetch_add(&j->next, 1);
		if (i >= j->count || atomic_load(&j->failed))
			break;
		hsm_key_record rec = {0};
		if (hsm_failed(hsm_kms_create_key(j->kms, &local, &req, &rec))) {
			fprintf(stderr, "bulkkeys: key %llu: %s\n", (unsigned long long)i, hsm_last_message());
			atomic_store(&j->failed, true);
			break;
		}
		pthread_mutex_lock(&j->out_lock);
		if (j->ids != NULL)
			fprintf(j->ids, "%s\n", rec.key_id);
		pthread_mutex_unlock(&j->out_lock);
		hsm_key_record_clear(&rec);
		if ((i + 1) % REPORT_EVERY == 0)
			fprintf(stderr, "bulkkeys: %llu keys, %.0f keys/s\n", (unsigned long long)(i + 1),
			        (double)(i + 1) * 1e9 / (double)(hsm_mono_ns() - j->t0));
	}
	return NULL;
}

static hsm_result unseal(hsm_keystore *ks, const char *dir)
{
	hsm_result res = HSM_SUCCESS;
	char path[4200];
	hsm_buf share;
	hsm_unseal_progress p;
	hsm_buf_init_secure(&share);
	HSM_CHECK((size_t)snprintf(path, sizeof(path), "%s/%s", dir, SHARE_FILE) < sizeof(path),
	          HSM_ERR_VALIDATION, "path too long");
	HSM_TRY(hsm_read_file(path, 4096, &share));
	HSM_TRY(hsm_keystore_unseal(ks, share.data, share.len, &p));
	HSM_CHECK(p.unsealed, HSM_ERR_SEALED, "the share did not unseal the store");
out:
	hsm_buf_free(&share);
	return res;
}

static hsm_result run(const char *dir, job *j, unsigned threads)
{
	hsm_result res = HSM_SUCCESS;
	hsm_store *store = NULL;
	hsm_keystore *ks = NULL;
	pthread_t th[64];
	HSM_TRY(hsm_store_open(dir, &store));
	HSM_TRY(hsm_keystore_new(store, 0, &ks));
	HSM_TRY(unseal(ks, dir));
	hsm_kms_config kc = {.region = "us-east-1", .account_id = "111122223333"};
	HSM_TRY(hsm_kms_new(store, ks, &kc, &j->kms));
	j->t0 = hsm_mono_ns();
	for (unsigned i = 0; i < threads; i++)
		HSM_ASSERT(pthread_create(&th[i], NULL, creator, j) == 0);
	for (unsigned i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
	HSM_CHECK(!atomic_load(&j->failed), HSM_ERR_INTERNAL, "key creation failed");
	fprintf(stderr, "bulkkeys: %llu keys in %.1f s\n", (unsigned long long)j->count,
	        (double)(hsm_mono_ns() - j->t0) / 1e9);
out:
	hsm_kms_free(j->kms);
	hsm_keystore_free(ks);
	hsm_store_close(store);
	return res;
}

static hsm_result parse(int argc, char **argv, const char **dir, job *j, unsigned *threads,
                        const char **ids)
{
	j->spec = HSM_SPEC_ECC_NIST_P256;
	j->usage = HSM_USAGE_SIGN_VERIFY;
	*threads = 2;
	for (int i = 1; i < argc; i++) {
		int64_t v = 0;
		HSM_ENSURE(i + 1 < argc, HSM_ERR_VALIDATION, "%s needs a value", argv[i]);
		const char *o = argv[i], *a = argv[++i];
		if (strcmp(o, "--data-dir") == 0) {
			*dir = a;
		} else if (strcmp(o, "--count") == 0) {
			HSM_GUARD(hsm_parse_i64(a, 1, 100000000, &v));
			j->count = (uint64_t)v;
		} else if (strcmp(o, "--threads") == 0) {
			HSM_GUARD(hsm_parse_i64(a, 1, 64, &v));
			*threads = (unsigned)v;
		} else if (strcmp(o, "--spec") == 0) {
			HSM_GUARD(hsm_spec_parse(a, &j->spec));
		} else if (strcmp(o, "--usage") == 0) {
			HSM_GUARD(hsm_usage_parse(a, &j->usage));
		} else if (strcmp(o, "--ids") == 0) {
			*ids = a;
		} else {
			return HSM_FAIL(HSM_ERR_VALIDATION, "unknown option %s", o);
		}
	}
	HSM_ENSURE(*dir != NULL && j->count > 0, HSM_ERR_VALIDATION,
	           "usage: bulkkeys --data-dir DIR --count N [--spec S] [--usage U] [--threads T] "
	           "[--ids FILE]");
	return HSM_SUCCESS;
}

int main(int argc, char **argv)
{
	static job j;
	const char *dir = NULL, *ids = NULL;
	unsigned threads = 0;
	if (hsm_failed(parse(argc, argv, &dir, &j, &threads, &ids)) ||
	    hsm_failed(hsm_secure_process_init(HSM_SECURE_HEAP_DEFAULT))) {
		fprintf(stderr, "bulkkeys: %s\n", hsm_last_message());
		return 2;
	}
	pthread_mutex_init(&j.out_lock, NULL);
	if (ids != NULL && (j.ids = fopen(ids, "a")) == NULL) {
		perror(ids);
		return 1;
	}
	hsm_result r = run(dir, &j, threads);
	if (j.ids != NULL && fclose(j.ids) != 0)
		r = HSM_FAIL(HSM_ERR_IO, "cannot write %s", ids);
	if (hsm_failed(r)) {
		fprintf(stderr, "bulkkeys: %s\n", hsm_last_message());
		return 1;
	}
	return 0;
}
