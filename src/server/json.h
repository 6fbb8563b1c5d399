/*
 * json.h - reading KMS JSON requests and writing responses.
 *
 * Reading uses jansson; every accessor checks presence, type and limits
 * and fails with the error AWS services give: a missing required member or
 * a value out of range is a ValidationException ("1 validation error
 * detected: Value null at 'keyId' failed to satisfy constraint: Member must
 * not be null"), a value of the wrong JSON type or invalid base64 is a
 * SerializationException.
 *
 * Writing uses a small streaming writer into an hsm_buf, so responses that
 * carry plaintext (Decrypt, GenerateDataKey) can be built in a secure
 * buffer and wiped after sending.
 */
#ifndef HSM_SERVER_JSON_H
#define HSM_SERVER_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/json_read.h"
#include "crypto/blob.h"
#include "store/store.h"

/* Parses a request body; it must be a JSON object (an empty body counts as {}). */
hsm_result hsm_json_parse(const uint8_t *body, size_t n, json_t **out) HSM_MUST_CHECK;

/* String member of min..max characters; *out is NULL when absent and optional. */
/* A required member is there (not null): else AWS's "must not be null" ValidationException. */
hsm_result hsm_json_present(json_t *o, const char *name) HSM_MUST_CHECK;
hsm_result hsm_json_str(json_t *o, const char *name, bool required, size_t min, size_t max,
                        const char **out) HSM_MUST_CHECK;
/* Integer member in [min, max]; *present tells whether it was given. */
hsm_result hsm_json_int(json_t *o, const char *name, bool required, int64_t min, int64_t max,
                        int64_t *out, bool *present) HSM_MUST_CHECK;
hsm_result hsm_json_bool(json_t *o, const char *name, bool *out, bool *present) HSM_MUST_CHECK;
/* Base64 blob member of min..max decoded bytes, appended to out. */
hsm_result hsm_json_blob(json_t *o, const char *name, bool required, size_t min, size_t max,
                         hsm_buf *out, bool *present) HSM_MUST_CHECK;
/*
 * EncryptionContext-style map of strings.  *pairs is allocated (free()) and
 * points into the JSON document, so it lives as long as o.
 */
hsm_result hsm_json_string_map(json_t *o, const char *name, hsm_ctx_pair **pairs,
                               size_t *n) HSM_MUST_CHECK;
/* Array of strings (max items); *items is allocated (free()), pointing into o. */
hsm_result hsm_json_string_list(json_t *o, const char *name, bool required, size_t max,
                                const char ***items, size_t *n) HSM_MUST_CHECK;
/* Tags: [{"TagKey": .., "TagValue": ..}]; *tags is allocated (free()). */
hsm_result hsm_json_tags(json_t *o, const char *name, hsm_tag **tags, size_t *n) HSM_MUST_CHECK;

/* ---- Writer ------------------------------------------------------------------- */

typedef struct hsm_jw {
	hsm_buf *out;
	bool need_comma;
	hsm_result err; /* first failure; later calls do nothing */
} hsm_jw;

void hsm_jw_init(hsm_jw *w, hsm_buf *out);
void hsm_jw_begin(hsm_jw *w);                      /* { */
void hsm_jw_end(hsm_jw *w);                        /* } */
void hsm_jw_key_begin_object(hsm_jw *w, const char *key); /* "key":{ */
void hsm_jw_key_begin_array(hsm_jw *w, const char *key);  /* "key":[ */
void hsm_jw_begin_object(hsm_jw *w);               /* { inside an array */
void hsm_jw_end_array(hsm_jw *w);                  /* ] */
void hsm_jw_str(hsm_jw *w, const char *key, const char *value);
void hsm_jw_str_n(hsm_jw *w, const char *key, const char *value, size_t n);
void hsm_jw_value_str(hsm_jw *w, const char *value); /* array element */
void hsm_jw_b64(hsm_jw *w, const char *key, const uint8_t *p, size_t n);
void hsm_jw_int(hsm_jw *w, const char *key, int64_t v);
void hsm_jw_bool(hsm_jw *w, const char *key, bool v);
/* KMS timestamps are epoch seconds as JSON numbers. */
void hsm_jw_time(hsm_jw *w, const char *key, int64_t epoch_seconds);
/* The same to the millisecond (epoch_ms >= 0): 1764567890.123. */
void hsm_jw_time_ms(hsm_jw *w, const char *key, int64_t epoch_ms);
hsm_result hsm_jw_finish(hsm_jw *w) HSM_MUST_CHECK;
/* Fails the writer with r (the first failure stays): hsm_jw_finish returns it. */
void hsm_jw_fail(hsm_jw *w, hsm_result r);

#endif
