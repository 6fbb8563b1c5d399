/*
 * json_read.h - hsmd's JSON reader, for request bodies, answers and the
 * documents hsmd keeps (key policies, grant constraints), and the writer of
 * documents as text.
 *
 * Both run out of memory cleanly (HSM_ERR_NOMEM, nothing read or written).
 * jansson's own json_loadb drops the bytes it cannot keep and reads on, so
 * it may read another document or stop the process, and its json_dumps may
 * leave a key out of the text it returns as whole.
 */
#ifndef HSM_COMMON_JSON_READ_H
#define HSM_COMMON_JSON_READ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/result.h"

/*
 * Reads a JSON document (object or array at the top) into jansson values,
 * as json_loadb(JSON_REJECT_DUPLICATES) would, nesting at most 64 deep (see
 * json_read.c).  On a malformed document: HSM_ERR_SERIALIZATION, with the
 * line and column (characters, from 1) where reading stopped; a string with
 * U+0000 in it: HSM_ERR_VALIDATION.
 */
hsm_result hsm_json_read(const uint8_t *body, size_t n, json_t **out, unsigned *line,
                         unsigned *col) HSM_MUST_CHECK;

/* v as text (json_dumpb's flags), NUL-terminated, for free(); all of it or nothing. */
hsm_result hsm_json_text(const json_t *v, size_t flags, char **out) HSM_MUST_CHECK;

#endif
