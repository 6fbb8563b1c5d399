/*
 * audit_format_test.c - what goes into an audit line: only the record's
 * fields, every free-text value escaped so it cannot break out of its JSON
 * string, inject a line, or smuggle control characters; keyed hashes for
 * sensitive values; the time format.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>

#include "audit/audit_format.h"
#include "audit_test_util.h"

/* Hostile text: quotes, backslashes, newlines, NUL-free control bytes, DEL, invalid UTF-8. */
#define HOSTILE "\"},\"prev\":\"0\n{\"seq\":1}\r\t\x01\x1b[31m\x7f\\u0000\xff\xc3(\xe2\x82"

static void test_canaries_in_every_free_text_field(void **state)
{
	(void)state;
	const char *fields[] = {"CANARY-principal" HOSTILE, "CANARY-akid" HOSTILE,
	                        "CANARY-source" HOSTILE,    "CANARY-op" HOSTILE,
	                        "CANARY-key" HOSTILE,       "CANARY-error" HOSTILE,
	                        "CANARY-reqid" HOSTILE,     "CANARY-xname" HOSTILE,
	                        "CANARY-xvalue" HOSTILE};
	hsm_audit_field extra[1] = {{fields[7], fields[8]}};
	hsm_audit_record rec = {.type = HSM_AUDIT_REQUEST, .principal = fields[0],
	                        .access_key_id = fields[1], .source = fields[2],
	                        .operation = fields[3], .key_id = fields[4], .key_version = 2,
	                        .outcome = HSM_AUDIT_ERROR, .error = fields[5],
	                        .request_id = fields[6], .latency_us = 42, .extra = extra,
	                        .n_extra = 1};
	hsm_buf body = {0}, line = {0};
	assert_true(hsm_ok(audit_format_body(&body, "node-1", &rec, 1700000000123)));
	uint8_t prev[32] = {0};
	assert_true(hsm_ok(audit_format_line(&line, 7, body.data, body.len, prev)));
	/* One line: no raw control byte, no raw newline, no byte >= 0x80 that is not valid UTF-8. */
	for (size_t i = 0; i < line.len; i++)
		assert_true(line.data[i] >= 0x20 && line.data[i] != 0x7f);
	json_error_t err;
	json_t *j = json_loadb((const char *)line.data, line.len, JSON_REJECT_DUPLICATES, &err);
	assert_non_null(j);
	/* Exactly the record's fields, in the fixed order, nothing else. */
	const char *order[] = {"seq", "time", "node", "type", "principal", "access_key", "source",
	                       "op", "key_id", "key_version", "outcome", "error", "request_id",
	                       "latency_us", "extra", "prev"};
	assert_int_equal(json_object_size(j), 16);
	const char *pos = (const char *)line.data;
	for (size_t i = 0; i < 16; i++) {
		char key[32];
		snprintf(key, sizeof(key), "\"%s\":", order[i]);
		const char *at = strstr(pos, key);
		assert_non_null(at);
		pos = at;
	}
	/* Each value round-trips to the input, with invalid bytes replaced by U+FFFD. */
	const char *keys[] = {"principal", "access_key", "source", "op",
	                      "key_id",    "error",      "request_id"};
	for (size_t i = 0; i < 7; i++) {
		const char *v = json_string_value(json_object_get(j, keys[i]));
		assert_non_null(v);
		size_t pre = strlen(fields[i]) - strlen(HOSTILE);
		assert_memory_equal(v, fields[i], pre + 22); /* up to the invalid bytes */
		assert_non_null(strstr(v, "\xef\xbf\xbd")); /* U+FFFD */
	}
	json_t *x = json_object_get(j, "extra");
	assert_int_equal(json_object_size(x), 1);
	assert_int_equal(json_integer_value(json_object_get(j, "seq")), 7);
	assert_string_equal(json_string_value(json_object_get(j, "outcome")), "error");
	assert_string_equal(json_string_value(json_object_get(j, "time")), "2023-11-14T22:13:20.123Z");
	json_decref(j);
	hsm_buf_free(&body);
	hsm_buf_free(&line);
}

/* A field never reaches the line unless the record has it: absent fields are left out. */
static void test_absent_fields_and_event_shape(void **state)
{
	(void)state;
	hsm_audit_record rec = {.type = HSM_AUDIT_EVENT, .operation = "NodeSealed"};
	hsm_buf body = {0};
	assert_true(hsm_ok(audit_format_body(&body, "n", &rec, 0)));
	assert_true(hsm_ok(hsm_buf_terminate(&body)));
	assert_string_equal((const char *)body.data,
	                    "\"time\":\"1970-01-01T00:00:00.000Z\",\"node\":\"n\",\"type\":\"event\","
	                    "\"op\":\"NodeSealed\",\"outcome\":\"success\"");
	hsm_buf_free(&body);
}

static void test_long_values_cut_on_character_boundary(void **state)
{
	(void)state;
	char big[HSM_AUDIT_VALUE_MAX + 100];
	/* 'a' then 3-byte characters, so the cut falls inside one. */
	big[0] = 'a';
	size_t n = 1;
	while (n + 3 < sizeof(big)) {
		memcpy(big + n, "\xe2\x82\xac", 3);
		n += 3;
	}
	big[n] = '\0';
	hsm_buf b = {0};
	assert_true(hsm_ok(audit_put_json_string(&b, big, HSM_AUDIT_VALUE_MAX)));
	json_t *j = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY, NULL);
	assert_non_null(j); /* still valid UTF-8 */
	const char *v = json_string_value(j);
	size_t vl = strlen(v), ml = strlen(HSM_AUDIT_TRUNCATED_MARK);
	assert_true(vl <= HSM_AUDIT_VALUE_MAX + ml);
	assert_string_equal(v + vl - ml, HSM_AUDIT_TRUNCATED_MARK);
	assert_int_equal((vl - ml - 1) % 3, 0); /* whole characters only */
	json_decref(j);
	hsm_buf_free(&b);
}

static void test_keyed_hash_of_sensitive_values(void **state)
{
	(void)state;
	/* RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?". */
	hsm_secret *key = NULL;
	assert_true(hsm_ok(hsm_secret_from("Jefe", 4, &key)));
	char out[HSM_AUDIT_HASH_HEX_LEN + 1];
	const char *msg = "what do ya want for nothing?";
	assert_true(hsm_ok(hsm_audit_hash_value(key, msg, strlen(msg), out)));
	assert_string_equal(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	/* The value itself never appears in what would be recorded. */
	assert_null(strstr(out, msg));
	assert_true(hsm_ok(hsm_audit_hash_value(key, "", 0, out)));
	assert_int_equal(strlen(out), 64);
	hsm_secret_free(key);
}

static void test_time_round_trip(void **state)
{
	(void)state;
	int64_t samples[] = {0, 999, 1000, 1700000000123, 4102444799999};
	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		char s[25];
		audit_format_time(samples[i], s);
		int64_t back = -1;
		assert_true(audit_parse_time(s, &back));
		assert_true(back == samples[i]);
	}
	/* A clock past year 9999 still gives a time field of the one form, the last one. */
	char late[25];
	audit_format_time(253402300800000LL, late);
	assert_string_equal(late, "9999-12-31T23:59:59.999Z");
	audit_format_time(INT64_MAX, late);
	assert_string_equal(late, "9999-12-31T23:59:59.999Z");
	int64_t t;
	assert_false(audit_parse_time("2026-13-01T00:00:00.000Z", &t));
	assert_false(audit_parse_time("2026-01-01T00:00:00Z", &t));
	assert_false(audit_parse_time("2026-01-01 00:00:00.000Z", &t));
}

/* A whole log written with hostile values still verifies, and the canaries stay escaped. */
static void test_hostile_values_through_the_writer(void **state)
{
	(void)state;
	char dir[PATH_MAX];
	t_mkdtemp(dir, "audit-canary");
	hsm_audit_config c = t_config(dir);
	hsm_audit *a = NULL;
	assert_true(hsm_ok(hsm_audit_open(&c, &a)));
	hsm_audit_field extra[1] = {{"ctx" HOSTILE, "v" HOSTILE}};
	hsm_audit_record rec = {.type = HSM_AUDIT_REQUEST, .principal = HOSTILE,
	                        .operation = "Decrypt\n{\"seq\":2}", .extra = extra, .n_extra = 1};
	assert_true(hsm_ok(hsm_audit_append(a, &rec)));
	hsm_audit_close(a);
	static char paths[T_MAX_FILES][PATH_MAX];
	assert_int_equal(t_list(dir, "audit-", ".jsonl", paths, T_MAX_FILES), 1);
	char *s = t_slurp(paths[0], NULL);
	assert_int_equal(t_count_lines(s), 3); /* open event, the record, shutdown checkpoint */
	assert_non_null(strstr(s, "\"op\":\"Decrypt\\n{\\\"seq\\\":2}\""));
	assert_true(t_verify_dir(dir, NULL, false).valid);
	free(s);
	t_rm_rf(dir);
}

/*
 * Plain runs are copied eight bytes at a time up to the first byte that
 * needs escaping or a look as UTF-8: every kind of such byte at every
 * offset of that copy comes out escaped (no raw control byte or DEL) and
 * reads back as what went in, an invalid byte as U+FFFD.
 */
static void test_specials_at_every_offset(void **state)
{
	(void)state;
	static const char *const special[][2] = {
	    {"\"", "\""},         {"\\", "\\"},         {"\n", "\n"},
	    {"\x01", "\x01"},     {"\x1f", "\x1f"},     {"\x7f", "\x7f"},
	    {"~", "~"},           {" ", " "},           {"\xc3\xa9", "\xc3\xa9"},
	    {"\xe2\x82\xac", "\xe2\x82\xac"}, {"\xff", "\xef\xbf\xbd"}, {"\xc3", "\xef\xbf\xbd"},
	    {"\x80", "\xef\xbf\xbd"},
	};
	for (size_t k = 0; k < sizeof(special) / sizeof(special[0]); k++) {
		for (size_t at = 0; at <= 24; at++) {
			char in[64] = "", want[64] = "";
			for (size_t i = 0; i < at; i++)
				in[i] = (char)('A' + i % 26);
			memcpy(want, in, at);
			strcat(in, special[k][0]);
			strcat(want, special[k][1]);
			strcat(in, "abcdefghijklmnopq");
			strcat(want, "abcdefghijklmnopq");
			hsm_buf b = {0};
			assert_true(hsm_ok(audit_put_json_string(&b, in, HSM_AUDIT_VALUE_MAX)));
			for (size_t i = 0; i < b.len; i++)
				if (b.data[i] < 0x20 || b.data[i] == 0x7f)
					fail_msg("raw byte 0x%02x in the output (case %zu at %zu)", b.data[i], k, at);
			json_t *j = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY, NULL);
			assert_non_null(j);
			assert_string_equal(json_string_value(j), want);
			json_decref(j);
			hsm_buf_free(&b);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_canaries_in_every_free_text_field),
	    cmocka_unit_test(test_absent_fields_and_event_shape),
	    cmocka_unit_test(test_long_values_cut_on_character_boundary),
	    cmocka_unit_test(test_keyed_hash_of_sensitive_values),
	    cmocka_unit_test(test_time_round_trip),
	    cmocka_unit_test(test_hostile_values_through_the_writer),
	    cmocka_unit_test(test_specials_at_every_offset),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
