/*
 * wycheproof_runner.h - walks the Wycheproof vector files and keeps score.
 *
 * The vectors live outside the project (HSM_WYCHEPROOF_DIR, set by ctest).
 * A family handles one schema ("aead_test_schema_v1.json", ...); for each
 * vector its handler runs hsmd's own functions and says whether hsmd accepted
 * the input.  The runner compares that with the vector's expected result:
 *
 *   valid      must be accepted              -> passed
 *   invalid    must be rejected              -> passed
 *   acceptable must match the written decision for its flag (decision table)
 *   parameters hsmd does not offer           -> not applicable (never a pass)
 *
 * Anything else is a mismatch, printed with its tcId.
 */
#ifndef HSM_TEST_WYCHEPROOF_RUNNER_H
#define HSM_TEST_WYCHEPROOF_RUNNER_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/buf.h"

typedef enum wp_verdict {
	WP_ACCEPT,      /* hsmd accepted the input (signature valid, decryption succeeded ...) */
	WP_REJECT,      /* hsmd rejected it with the error its contract names */
	WP_UNSUPPORTED, /* hsmd does not offer these parameters */
	WP_WRONG,       /* hsmd misbehaved whatever the expectation (wrong error code, ...) */
} wp_verdict;

typedef struct wp_family {
	const char *schema;
	/*
	 * Prepares state shared by a group's vectors (an imported key ...).
	 * Returns WP_UNSUPPORTED when hsmd does not offer the group's parameters,
	 * WP_WRONG when hsmd cannot handle a group it should, else WP_ACCEPT.
	 */
	wp_verdict (*group_begin)(json_t *group, void **state);
	void (*group_end)(void *state);
	wp_verdict (*run)(json_t *group, json_t *test, void *state);
} wp_family;

/* An acceptable vector's flag and what hsmd decides for it (docs/wycheproof.md). */
typedef struct wp_decision {
	const char *flag;
	bool accept;
} wp_decision;

/*
 * Runs every file of the family's schema and fails the cmocka test on any
 * mismatch, on a file where nothing passed, or when no file has the schema.
 * Skips (cmocka skip()) with a message when the vector folder is absent.
 */
void wp_run_family(const wp_family *f, const wp_decision *decisions, size_t n_decisions);
/* Fails unless every file in the folder has one of the given schemas. */
void wp_check_coverage(const wp_family *const *families, size_t n);

/* Helpers for handlers. */
const char *wp_algorithm(void);                          /* the current file's "algorithm" */
const char *wp_str(json_t *obj, const char *key);       /* fails the test if absent */
long long wp_int(json_t *obj, const char *key);         /* fails the test if absent */
void wp_hex(json_t *obj, const char *key, hsm_buf *out); /* decodes a hex member into out */
/* Wycheproof hash name ("SHA-256") as it appears in KMS algorithm names ("SHA_256"). */
void wp_kms_hash(const char *sha, char *out, size_t cap);

#endif
