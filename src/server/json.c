#include "server/json.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"

/* AWS names members in lowerCamelCase in validation messages ("keyId"). */
static void member_label(const char *name, char *out, size_t cap)
{
	snprintf(out, cap, "%s", name);
	if (out[0] != '\0')
		out[0] = (char)tolower((unsigned char)out[0]);
}

static hsm_result missing(const char *name)
{
	char label[64];
	member_label(name, label, sizeof(label));
	return HSM_FAIL(HSM_ERR_VALIDATION,
	                "1 validation error detected: Value null at '%s' failed to satisfy "
	                "constraint: Member must not be null",
	                label);
}

static hsm_result wrong_type(const char *name, const char *expected)
{
	return HSM_FAIL(HSM_ERR_SERIALIZATION, "%s must be %s", name, expected);
}

static hsm_result bad_length(const char *name, size_t min, size_t max)
{
	char label[64];
	member_label(name, label, sizeof(label));
	return HSM_FAIL(HSM_ERR_VALIDATION,
	                "1 validation error detected: Value at '%s' failed to satisfy constraint: "
	                "Member must have length between %zu and %zu",
	                label, min, max);
}

hsm_result hsm_json_parse(const uint8_t *body, size_t n, json_t **out)
{
	if (n == 0) {
		*out = json_object();
		HSM_ENSURE(*out != NULL, HSM_ERR_NOMEM, "out of memory");
		return HSM_SUCCESS;
	}
	json_t *root;
	unsigned line, col;
	/* The message gives the position only, never the input (it may be a plaintext). */
	HSM_GUARD(hsm_json_read(body, n, &root, &line, &col));
	if (!json_is_object(root)) {
		json_decref(root);
		return HSM_FAIL(HSM_ERR_SERIALIZATION, "The request body must be a JSON object");
	}
	*out = root;
	return HSM_SUCCESS;
}

/*
 * The length of s (jansson guarantees valid UTF-8) as AWS's limits count it:
 * in UTF-16 code units, a character above U+FFFF being two.
 */
static size_t utf8_len(const char *s, size_t bytes)
{
	size_t n = 0;
	for (size_t i = 0; i < bytes; i++) {
		n += ((unsigned char)s[i] & 0xc0U) != 0x80U;
		n += (unsigned char)s[i] >= 0xf0U;
	}
	return n;
}

hsm_result hsm_json_present(json_t *o, const char *name)
{
	json_t *v = json_object_get(o, name);
	return v == NULL || json_is_null(v) ? missing(name) : HSM_SUCCESS;
}

hsm_result hsm_json_str(json_t *o, const char *name, bool required, size_t min, size_t max,
                        const char **out)
{
	json_t *v = json_object_get(o, name);
	*out = NULL;
	if (v == NULL || json_is_null(v))
		return required ? missing(name) : HSM_SUCCESS;
	HSM_ENSURE(json_is_string(v), HSM_ERR_SERIALIZATION, "%s must be a string", name);
	size_t chars = utf8_len(json_string_value(v), json_string_length(v));
	if (chars < min || chars > max)
		return bad_length(name, min, max);
	HSM_ENSURE(strlen(json_string_value(v)) == json_string_length(v), HSM_ERR_VALIDATION,
	           "%s must not contain NUL characters", name);
	*out = json_string_value(v);
	return HSM_SUCCESS;
}

hsm_result hsm_json_int(json_t *o, const char *name, bool required, int64_t min, int64_t max,
                        int64_t *out, bool *present)
{
	json_t *v = json_object_get(o, name);
	*present = false;
	if (v == NULL || json_is_null(v))
		return required ? missing(name) : HSM_SUCCESS;
	if (!json_is_integer(v))
		return wrong_type(name, "an integer");
	json_int_t x = json_integer_value(v);
	if (x < min || x > max) {
		char label[64];
		member_label(name, label, sizeof(label));
		return HSM_FAIL(HSM_ERR_VALIDATION,
		                "1 validation error detected: Value '%lld' at '%s' failed to satisfy "
		                "constraint: Member must have value between %lld and %lld",
		                (long long)x, label, (long long)min, (long long)max);
	}
	*out = (int64_t)x;
	*present = true;
	return HSM_SUCCESS;
}

hsm_result hsm_json_bool(json_t *o, const char *name, bool *out, bool *present)
{
	json_t *v = json_object_get(o, name);
	*present = false;
	if (v == NULL || json_is_null(v))
		return HSM_SUCCESS;
	if (!json_is_boolean(v))
		return wrong_type(name, "a boolean");
	*out = json_is_true(v);
	*present = true;
	return HSM_SUCCESS;
}

hsm_result hsm_json_blob(json_t *o, const char *name, bool required, size_t min, size_t max,
                         hsm_buf *out, bool *present)
{
	json_t *v = json_object_get(o, name);
	*present = false;
	if (v == NULL || json_is_null(v))
		return required ? missing(name) : HSM_SUCCESS;
	if (!json_is_string(v))
		return wrong_type(name, "a base64-encoded string");
	size_t start = out->len;
	hsm_result r = hsm_b64_decode(out, json_string_value(v), json_string_length(v),
	                              HSM_ERR_SERIALIZATION);
	if (hsm_failed(r) && r.err != HSM_ERR_SERIALIZATION)
		return r; /* out of memory is not the caller's fault */
	if (hsm_failed(r))
		return HSM_FAIL(HSM_ERR_SERIALIZATION, "%s is not valid base64", name);
	size_t n = out->len - start;
	if (n < min || n > max) {
		hsm_buf_clear(out);
		return bad_length(name, min, max);
	}
	*present = true;
	return HSM_SUCCESS;
}

hsm_result hsm_json_string_map(json_t *o, const char *name, hsm_ctx_pair **pairs, size_t *n)
{
	json_t *v = json_object_get(o, name);
	*pairs = NULL;
	*n = 0;
	if (v == NULL || json_is_null(v))
		return HSM_SUCCESS;
	if (!json_is_object(v))
		return wrong_type(name, "a map of strings");
	size_t count = json_object_size(v);
	if (count == 0)
		return HSM_SUCCESS;
	hsm_ctx_pair *p = calloc(count, sizeof(*p));
	HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
	size_t i = 0;
	const char *key;
	json_t *val;
	json_object_foreach(v, key, val)
	{
		if (!json_is_string(val) || strlen(json_string_value(val)) != json_string_length(val)) {
			free(p);
			return wrong_type(name, "a map of strings");
		}
		p[i].key = key;
		p[i].value = json_string_value(val);
		i++;
	}
	*pairs = p;
	*n = count;
	return HSM_SUCCESS;
}

hsm_result hsm_json_string_list(json_t *o, const char *name, bool required, size_t max,
                                const char ***items, size_t *n)
{
	json_t *v = json_object_get(o, name);
	*items = NULL;
	*n = 0;
	if (v == NULL || json_is_null(v))
		return required ? missing(name) : HSM_SUCCESS;
	if (!json_is_array(v))
		return wrong_type(name, "a list of strings");
	size_t count = json_array_size(v);
	if (count > max)
		return bad_length(name, 0, max);
	if (count == 0)
		return HSM_SUCCESS;
	const char **list = calloc(count, sizeof(*list));
	HSM_ENSURE(list != NULL, HSM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < count; i++) {
		json_t *e = json_array_get(v, i);
		if (!json_is_string(e)) {
			free(list);
			return wrong_type(name, "a list of strings");
		}
		list[i] = json_string_value(e);
	}
	*items = list;
	*n = count;
	return HSM_SUCCESS;
}

hsm_result hsm_json_tags(json_t *o, const char *name, hsm_tag **tags, size_t *n)
{
	json_t *v = json_object_get(o, name);
	*tags = NULL;
	*n = 0;
	if (v == NULL || json_is_null(v))
		return HSM_SUCCESS;
	if (!json_is_array(v))
		return wrong_type(name, "a list of tags");
	size_t count = json_array_size(v);
	HSM_ENSURE(count <= HSM_MAX_TAGS_PER_KEY, HSM_ERR_TAG, "at most %d tags are allowed",
	           HSM_MAX_TAGS_PER_KEY);
	if (count == 0)
		return HSM_SUCCESS;
	hsm_tag *t = calloc(count, sizeof(*t));
	HSM_ENSURE(t != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_result res = HSM_SUCCESS;
	for (size_t i = 0; i < count; i++) {
		json_t *e = json_array_get(v, i);
		const char *k = NULL, *val = NULL;
		HSM_CHECK(json_is_object(e), HSM_ERR_SERIALIZATION, "%s must be a list of tags", name);
		HSM_TRY(hsm_json_str(e, "TagKey", true, 1, HSM_TAG_KEY_MAX, &k));
		HSM_TRY(hsm_json_str(e, "TagValue", true, 0, HSM_TAG_VALUE_MAX, &val));
		HSM_TRY(hsm_strcpy(t[i].key, sizeof(t[i].key), k));
		HSM_TRY(hsm_strcpy(t[i].value, sizeof(t[i].value), val));
	}
	*tags = t;
	*n = count;
	t = NULL;
out:
	free(t);
	return res;
}

/* ---- Writer ---------------------------------------------------------------------- */

void hsm_jw_init(hsm_jw *w, hsm_buf *out)
{
	w->out = out;
	w->need_comma = false;
	w->err = HSM_SUCCESS;
}

static void put(hsm_jw *w, const char *s, size_t n)
{
	if (hsm_ok(w->err))
		w->err = hsm_buf_put(w->out, s, n);
}

/* The length of the valid UTF-8 character at s (n bytes left), or 0. */
static size_t utf8_char_len(const char *s, size_t n)
{
	unsigned char c = (unsigned char)s[0];
	size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
	                                        : c >= 0xf0 && c <= 0xf4 ? 4
	                                                                 : 0;
	return len != 0 && len <= n && hsm_utf8_valid(s, len) ? len : 0;
}

/*
 * A JSON string of s.  Text that is not UTF-8 becomes U+FFFD, byte by byte:
 * messages quote what a request sent (an X-Amz-Date header, cut to 32
 * bytes, maybe inside a character), and an answer must stay JSON a client
 * can read.
 */
static void put_escaped(hsm_jw *w, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	put(w, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\')
			continue;
		if (c >= 0x80) {
			size_t len = utf8_char_len(s + i, n - i);
			if (len > 0) {
				i += len - 1;
				continue;
			}
			put(w, s + run, i - run);
			run = i + 1;
			put(w, "\\ufffd", 6);
			continue;
		}
		put(w, s + run, i - run);
		run = i + 1;
		char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			put(w, esc, 2);
		} else {
			put(w, esc, 6);
		}
	}
	put(w, s + run, n - run);
	put(w, "\"", 1);
}

static void key(hsm_jw *w, const char *k)
{
	if (w->need_comma)
		put(w, ",", 1);
	if (k != NULL) {
		put_escaped(w, k, strlen(k));
		put(w, ":", 1);
	}
	w->need_comma = true;
}

void hsm_jw_begin(hsm_jw *w)
{
	put(w, "{", 1);
	w->need_comma = false;
}

void hsm_jw_end(hsm_jw *w)
{
	put(w, "}", 1);
	w->need_comma = true;
}

void hsm_jw_key_begin_object(hsm_jw *w, const char *k)
{
	key(w, k);
	hsm_jw_begin(w);
}

void hsm_jw_key_begin_array(hsm_jw *w, const char *k)
{
	key(w, k);
	put(w, "[", 1);
	w->need_comma = false;
}

void hsm_jw_begin_object(hsm_jw *w)
{
	key(w, NULL);
	hsm_jw_begin(w);
}

void hsm_jw_end_array(hsm_jw *w)
{
	put(w, "]", 1);
	w->need_comma = true;
}

void hsm_jw_str(hsm_jw *w, const char *k, const char *value)
{
	hsm_jw_str_n(w, k, value, strlen(value));
}

void hsm_jw_str_n(hsm_jw *w, const char *k, const char *value, size_t n)
{
	key(w, k);
	put_escaped(w, value, n);
}

void hsm_jw_value_str(hsm_jw *w, const char *value)
{
	key(w, NULL);
	put_escaped(w, value, strlen(value));
}

void hsm_jw_b64(hsm_jw *w, const char *k, const uint8_t *p, size_t n)
{
	key(w, k);
	put(w, "\"", 1);
	if (hsm_ok(w->err))
		w->err = hsm_b64_encode(w->out, p, n);
	put(w, "\"", 1);
}

void hsm_jw_int(hsm_jw *w, const char *k, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", (long long)v);
	key(w, k);
	put(w, num, (size_t)n);
}

void hsm_jw_bool(hsm_jw *w, const char *k, bool v)
{
	key(w, k);
	put(w, v ? "true" : "false", v ? 4 : 5);
}

void hsm_jw_time(hsm_jw *w, const char *k, int64_t epoch_seconds)
{
	hsm_jw_int(w, k, epoch_seconds);
}

void hsm_jw_time_ms(hsm_jw *w, const char *k, int64_t epoch_ms)
{
	char num[32];
	int n = snprintf(num, sizeof(num), "%lld.%03lld", (long long)(epoch_ms / 1000),
	                 (long long)(epoch_ms % 1000));
	key(w, k);
	put(w, num, (size_t)n);
}

hsm_result hsm_jw_finish(hsm_jw *w)
{
	return w->err;
}

void hsm_jw_fail(hsm_jw *w, hsm_result r)
{
	if (hsm_ok(w->err))
		w->err = r;
}
