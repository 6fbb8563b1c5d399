/*
 * lg_body.h - request bodies of the load generator.
 *
 * A body is a JSON template; the placeholder @KEY@, when present, is
 * replaced by a key id taken from a list, in turn or uniformly at random
 * (one independent generator per thread).  The source is read-only after
 * loading and shared by all threads; each thread keeps its own state.
 */
#ifndef HSM_BENCH_LG_BODY_H
#define HSM_BENCH_LG_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"

#define LG_KEY_PLACEHOLDER "@KEY@"

typedef struct lg_body_source {
	hsm_buf prefix, suffix; /* the template around the placeholder */
	bool has_key;           /* the template holds the placeholder */
	hsm_buf key_text;       /* key ids, NUL-separated */
	const char **keys;      /* pointers into key_text */
	size_t n_keys;
	bool random;
} lg_body_source;

typedef struct lg_body_state {
	uint64_t rng;
	size_t next;
} lg_body_state;

/* template_arg: the JSON text, or "@path" to read it from a file. */
hsm_result lg_body_load_template(lg_body_source *s, const char *template_arg) HSM_MUST_CHECK;
/* Adds one key id, or every line of a file when arg is "@path". */
hsm_result lg_body_add_keys(lg_body_source *s, const char *arg) HSM_MUST_CHECK;
/* Checks that the template and the key list fit together (call after loading both). */
hsm_result lg_body_finish(lg_body_source *s) HSM_MUST_CHECK;
void lg_body_free(lg_body_source *s);

void lg_body_state_init(lg_body_state *st, unsigned seed);
/* Replaces out's contents with the next body. */
hsm_result lg_body_next(const lg_body_source *s, lg_body_state *st, hsm_buf *out) HSM_MUST_CHECK;

#endif
