/*
 * br.h - the in-process benchmark runner shared by `limit` (OpenSSL alone)
 * and `softhsm` (SoftHSMv2 through PKCS#11).
 *
 * One thread per core runs the same operation in a tight loop for a fixed
 * time, all threads starting together.  Throughput counts every operation;
 * every operation longer than BR_TIME_EVERY_NS is timed, shorter ones are
 * sampled (one in BR_SAMPLE) so the clock reads (about 25 ns each) cost
 * nothing measurable even for sub-microsecond operations.
 *
 * The operations and their parameters (message sizes, encryption context)
 * are the ones bench/run.py sends to hsmd; keep the three in step.
 */
#ifndef HSM_BENCH_BR_H
#define HSM_BENCH_BR_H

#include <stddef.h>
#include <stdint.h>

#include "common/result.h"

#define BR_SAMPLE 16U
#define BR_TIME_EVERY_NS 2000U

/* What the operations work on (bench/run.py uses the same). */
#define BR_MSG_LEN 64       /* Sign, Verify, GenerateMac: 64-byte RAW message */
#define BR_SMALL_PT 64      /* Encrypt/Decrypt 64 B */
#define BR_LARGE_PT 4096    /* Encrypt/Decrypt 4 KiB */
#define BR_DATA_KEY_LEN 32  /* GenerateDataKey AES_256 */
#define BR_AAD_LEN 74       /* hsmd's AAD: 33-byte blob header + canonical 2-pair context */
#define BR_IV_LEN 12
#define BR_TAG_LEN 16

typedef struct br_op {
	const char *name; /* "sign-rsa2048", ... */
	/* Makes one thread's state (keys, contexts); arg is the program's. */
	hsm_result (*setup)(void *arg, unsigned thread, void **state);
	/* One operation; a failure stops the run. */
	hsm_result (*run)(void *state);
	void (*teardown)(void *state);
} br_op;

typedef struct br_result {
	uint64_t ops;
	double seconds;
	double ops_per_s;
	double p50_us, p99_us, p999_us;
} br_result;

/* Runs op on `threads` threads for duration_s seconds. */
hsm_result br_run(const br_op *op, void *arg, unsigned threads, double duration_s,
                  br_result *out) HSM_MUST_CHECK;
/* One JSON line on stdout: {"impl":..., "op":..., ...}. */
void br_print(const char *impl, const char *op, unsigned threads, const br_result *r);
/* Parses "--threads N --duration S [--op NAME]..." common to both programs. */
typedef struct br_args {
	unsigned threads;  /* 0: one per online CPU */
	double duration_s;
	const char *ops[32];
	size_t n_ops;
} br_args;
hsm_result br_parse_args(int argc, char **argv, br_args *out) HSM_MUST_CHECK;
/* True when the user asked for op (or for no op in particular). */
int br_wanted(const br_args *a, const char *op);
/* Runs and prints every op of ops[0..n) the user asked for; 1 if one failed, else 0. */
int br_run_wanted(const char *impl, const br_op *ops, size_t n, void *arg, const br_args *a);

#endif
