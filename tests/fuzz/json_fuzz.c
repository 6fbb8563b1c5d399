/*
 * json_fuzz.c - the KMS request readers and the response writer
 * (server/json.h).
 *
 * Input: a request body.  Every reader runs on every one of a few member
 * names, so each reader meets every JSON type.
 *
 * Properties:
 *   - the body reader (hsm_json_read) and jansson's json_loadb agree on
 *     every input: same verdict, equal values; the reader's three deliberate
 *     differences (nesting past 64, a NUL byte jansson skips after a number,
 *     a number below a double's range that jansson reads as 0) are refused by
 *     it and are the only ones;
 *   - a refused body or member is ValidationException,
 *     SerializationException or TagException, never anything else;
 *   - what a reader accepts respects its limits (string length in
 *     characters, no NUL, integer range, decoded blob length, tag count);
 *   - everything read goes back out through the writer (hsm_jw_*), and
 *     jansson parses the writer's output to the same strings: the writer
 *     escapes whatever UTF-8 the reader lets in.
 */
#include "fuzz.h"

#include "server/json.h"
#include "../support/json_tiny.h"

static const char *const members[] = {"KeyId", "Plaintext", "EncryptionContext", "Tags",
                                      "TagKeys", "Limit", "GrantTokens"};
#define N_MEMBERS (sizeof(members) / sizeof(members[0]))

#define ERRS HSM_ERR_VALIDATION, HSM_ERR_SERIALIZATION, HSM_ERR_TAG

/* A string's length as AWS's limits count it: UTF-16 code units. */
static size_t utf8_chars(const char *s)
{
	size_t n = 0;
	for (; *s != '\0'; s++) {
		n += ((unsigned char)*s & 0xc0U) != 0x80U;
		n += (unsigned char)*s >= 0xf0U;
	}
	return n;
}

/* Writes {"o": {"<key>": value}, "a": [value]} and checks that jansson reads it back. */
static void echo_str(const char *key, const char *value)
{
	hsm_buf out = {0};
	hsm_jw w;
	hsm_jw_init(&w, &out);
	hsm_jw_begin(&w);
	hsm_jw_key_begin_object(&w, "o");
	hsm_jw_str(&w, key, value);
	hsm_jw_end(&w);
	hsm_jw_key_begin_array(&w, "a");
	hsm_jw_value_str(&w, value);
	hsm_jw_end_array(&w);
	hsm_jw_end(&w);
	FUZZ_ASSERT(hsm_ok(hsm_jw_finish(&w)));
	json_error_t err;
	json_t *doc = json_loadb((const char *)out.data, out.len, JSON_REJECT_DUPLICATES, &err);
	FUZZ_ASSERT(doc != NULL && json_is_object(doc) && json_object_size(doc) == 2);
	json_t *o = json_object_get(doc, "o");
	FUZZ_ASSERT(json_is_object(o) && json_object_size(o) == 1);
	json_t *v = json_object_get(o, key);
	FUZZ_ASSERT(json_is_string(v) && strcmp(json_string_value(v), value) == 0);
	json_t *a = json_object_get(doc, "a");
	FUZZ_ASSERT(json_is_array(a) && json_array_size(a) == 1);
	json_t *l = json_array_get(a, 0);
	FUZZ_ASSERT(json_is_string(l) && strcmp(json_string_value(l), value) == 0);
	json_decref(doc);
	hsm_buf_free(&out);
}

static void read_scalars(json_t *o, const char *name)
{
	const char *s = NULL;
	int64_t i = 0;
	bool b = false, present = false;
	hsm_result r = hsm_json_str(o, name, (name[0] & 1) != 0, 1, 64, &s);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, ERRS);
	else if (s != NULL) {
		size_t chars = utf8_chars(s);
		FUZZ_ASSERT(chars >= 1 && chars <= 64);
		echo_str(name, s);
	}
	r = hsm_json_int(o, name, false, -5, 1000, &i, &present);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, ERRS);
	else
		FUZZ_ASSERT(!present || (i >= -5 && i <= 1000));
	r = hsm_json_bool(o, name, &b, &present);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, ERRS);
}

static void read_blob(json_t *o, const char *name)
{
	hsm_buf out;
	bool present = false;
	hsm_buf_init_secure(&out);
	hsm_result r = hsm_json_blob(o, name, false, 1, 64, &out, &present);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, ERRS);
	else
		FUZZ_ASSERT(present ? out.len >= 1 && out.len <= 64 : out.len == 0);
	hsm_buf_free(&out);
}

static void read_lists(json_t *o, const char *name)
{
	hsm_ctx_pair *pairs = NULL;
	const char **items = NULL;
	hsm_tag *tags = NULL;
	size_t n = 0;
	hsm_result r = hsm_json_string_map(o, name, &pairs, &n);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, ERRS);
	for (size_t i = 0; hsm_ok(r) && i < n; i++)
		echo_str(pairs[i].key, pairs[i].value);
	free(pairs);
	r = hsm_json_string_list(o, name, false, 10, &items, &n);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, ERRS);
	else
		FUZZ_ASSERT(n <= 10);
	for (size_t i = 0; hsm_ok(r) && i < n; i++)
		echo_str(name, items[i]);
	free(items);
	r = hsm_json_tags(o, name, &tags, &n);
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, ERRS);
	else
		FUZZ_ASSERT(n <= HSM_MAX_TAGS_PER_KEY);
	for (size_t i = 0; hsm_ok(r) && i < n; i++) {
		size_t kc = utf8_chars(tags[i].key), vc = utf8_chars(tags[i].value);
		FUZZ_ASSERT(kc >= 1 && kc <= HSM_TAG_KEY_MAX && vc <= HSM_TAG_VALUE_MAX);
		echo_str(tags[i].key, tags[i].value);
	}
	free(tags);
}

static size_t depth_of(json_t *v)
{
	size_t d = 0, i;
	const char *k;
	json_t *x;
	if (json_is_object(v))
		json_object_foreach(v, k, x)
		{
			size_t e = depth_of(x);
			d = e > d ? e : d;
		}
	else if (json_is_array(v))
		json_array_foreach(v, i, x)
		{
			size_t e = depth_of(x);
			d = e > d ? e : d;
		}
	return d + 1;
}

static void against_jansson(const uint8_t *data, size_t size)
{
	json_t *want = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	json_t *got = NULL;
	unsigned line, col;
	hsm_result r = hsm_json_read(data, size, &got, &line, &col);
	if (want == NULL) {
		FUZZ_ASSERT(hsm_failed(r) && fuzz_json_refusal(r, data, size));
		return;
	}
	if (hsm_ok(r)) {
		FUZZ_ASSERT(json_equal(want, got));
		json_decref(got);
	} else if (json_has_tiny_real(want) &&
	           (memmem(data, size, "e-", 2) != NULL || memmem(data, size, "E-", 2) != NULL)) {
		/* The one value refused on purpose: below a double's range (1e-400), which
		 * jansson reads as 0. */
		FUZZ_ASSERT(r.err == HSM_ERR_SERIALIZATION);
	} else if (depth_of(want) <= 64) {
		/* Only a NUL byte may explain it: without them, the same values. */
		uint8_t *strip = malloc(size);
		FUZZ_ASSERT(strip != NULL);
		size_t m = 0;
		for (size_t i = 0; i < size; i++)
			if (data[i] != 0)
				strip[m++] = data[i];
		FUZZ_ASSERT(m < size);
		FUZZ_ASSERT(hsm_ok(hsm_json_read(strip, m, &got, &line, &col)));
		FUZZ_ASSERT(json_equal(want, got));
		json_decref(got);
		free(strip);
	}
	json_decref(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *doc = NULL;
	against_jansson(data, size);
	hsm_result r = hsm_json_parse(data, size, &doc);
	if (hsm_failed(r)) {
		FUZZ_ASSERT(fuzz_json_refusal(r, data, size));
		FUZZ_ASSERT(doc == NULL);
		return 0;
	}
	FUZZ_ASSERT(json_is_object(doc));
	for (size_t i = 0; i < N_MEMBERS; i++) {
		read_scalars(doc, members[i]);
		read_blob(doc, members[i]);
		read_lists(doc, members[i]);
	}
	json_decref(doc);
	return 0;
}
