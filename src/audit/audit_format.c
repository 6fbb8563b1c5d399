/*
 * audit_format.c - formats audit records as JSON Lines (docs/audit.md).
 *
 * Hand-written rather than built with jansson: this runs once per request on
 * the hot path, and a fixed field order is part of the format.
 */
#include "audit/audit_format.h"

#include <string.h>
#include <time.h>

#include "common/encoding.h"
#include "common/util.h"

static const char hexdig[] = "0123456789abcdef";

/* Length of the valid UTF-8 sequence at p[0..n), or 0 if it is not one (RFC 3629 section 4). */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F; /* no UTF-16 surrogates */
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F; /* nothing above U+10FFFF */
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((p[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

/* Escapes p[0..n) into dst, which has room for 6*n bytes; returns bytes written. */
static size_t escape_into(uint8_t *dst, const unsigned char *p, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		/* Runs of plain characters eight at a time (dst has room for 8 here). */
		if (n - i >= 8) {
			unsigned k = hsm_json_plain8(p + i, true);
			memcpy(dst + o, p + i, 8);
			o += k;
			i += k;
			if (k == 8)
				continue;
		}
		unsigned char c = p[i];
		if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
			dst[o++] = c;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t l = utf8_seq_len(p + i, n - i);
			if (l != 0) {
				memcpy(dst + o, p + i, l);
				o += l;
				i += l;
			} else { /* invalid byte: U+FFFD keeps the line valid UTF-8 */
				memcpy(dst + o, "\\ufffd", 6);
				o += 6;
				i++;
			}
			continue;
		}
		dst[o++] = '\\';
		switch (c) {
		case '"': dst[o++] = '"'; break;
		case '\\': dst[o++] = '\\'; break;
		case '\n': dst[o++] = 'n'; break;
		case '\r': dst[o++] = 'r'; break;
		case '\t': dst[o++] = 't'; break;
		default: /* other control characters and DEL */
			memcpy(dst + o, "u00", 3);
			o += 3;
			dst[o++] = (uint8_t)hexdig[c >> 4];
			dst[o++] = (uint8_t)hexdig[c & 0xF];
			break;
		}
		i++;
	}
	return o;
}

hsm_result audit_put_json_string(hsm_buf *b, const char *s, size_t max)
{
	size_t n = strlen(s);
	bool cut = n > max;
	if (cut) {
		n = max;
		/* Cut before a continuation byte's lead so no character is split. */
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	size_t mark = cut ? sizeof(HSM_AUDIT_TRUNCATED_MARK) - 1 : 0;
	HSM_GUARD(hsm_buf_reserve(b, 6 * n + mark + 2));
	uint8_t *d = b->data + b->len;
	size_t o = 0;
	d[o++] = '"';
	o += escape_into(d + o, (const unsigned char *)s, n);
	if (cut) {
		memcpy(d + o, HSM_AUDIT_TRUNCATED_MARK, mark);
		o += mark;
	}
	d[o++] = '"';
	b->len += o;
	return HSM_SUCCESS;
}

static hsm_result put_u64(hsm_buf *b, uint64_t v)
{
	char tmp[20];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	HSM_GUARD(hsm_buf_reserve(b, n));
	for (size_t i = 0; i < n; i++)
		b->data[b->len + i] = (uint8_t)tmp[n - 1 - i];
	b->len += n;
	return HSM_SUCCESS;
}

/* ,"name":"escaped value" when value is not NULL. */
static hsm_result put_str_field(hsm_buf *b, const char *name, const char *value, size_t max)
{
	if (value == NULL)
		return HSM_SUCCESS;
	HSM_GUARD(hsm_buf_put_str(b, name));
	return audit_put_json_string(b, value, max);
}

static const char *type_name(hsm_audit_type t)
{
	switch (t) {
	case HSM_AUDIT_REQUEST: return "request";
	case HSM_AUDIT_EVENT: return "event";
	case HSM_AUDIT_CHECKPOINT: return "checkpoint";
	}
	return "event";
}

static const char *outcome_name(hsm_audit_outcome o)
{
	switch (o) {
	case HSM_AUDIT_SUCCESS: return "success";
	case HSM_AUDIT_DENIED: return "denied";
	case HSM_AUDIT_ERROR: return "error";
	}
	return "error";
}

static hsm_result put_head(hsm_buf *b, const char *node, int64_t time_ms, hsm_audit_type type)
{
	char when[25];
	audit_format_time(time_ms, when);
	HSM_GUARD(hsm_buf_put_str(b, "\"time\":\""));
	HSM_GUARD(hsm_buf_put(b, when, 24));
	HSM_GUARD(hsm_buf_put_str(b, "\",\"node\":"));
	HSM_GUARD(audit_put_json_string(b, node, HSM_AUDIT_NAME_MAX));
	HSM_GUARD(hsm_buf_put_str(b, ",\"type\":\""));
	HSM_GUARD(hsm_buf_put_str(b, type_name(type)));
	return hsm_buf_put_u8(b, '"');
}

static hsm_result put_extra(hsm_buf *b, const hsm_audit_field *extra, size_t n)
{
	if (n == 0)
		return HSM_SUCCESS;
	HSM_GUARD(hsm_buf_put_str(b, ",\"extra\":{"));
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			HSM_GUARD(hsm_buf_put_u8(b, ','));
		HSM_GUARD(audit_put_json_string(b, extra[i].name ? extra[i].name : "", HSM_AUDIT_NAME_MAX));
		HSM_GUARD(hsm_buf_put_u8(b, ':'));
		HSM_GUARD(audit_put_json_string(b, extra[i].value ? extra[i].value : "",
		                                HSM_AUDIT_VALUE_MAX));
	}
	return hsm_buf_put_u8(b, '}');
}

hsm_result audit_format_body(hsm_buf *b, const char *node, const hsm_audit_record *rec,
                             int64_t time_ms)
{
	HSM_ASSERT(rec->n_extra <= HSM_AUDIT_MAX_EXTRA && (rec->n_extra == 0 || rec->extra != NULL));
	HSM_GUARD(put_head(b, node, time_ms, rec->type));
	HSM_GUARD(put_str_field(b, ",\"principal\":", rec->principal, HSM_AUDIT_VALUE_MAX));
	HSM_GUARD(put_str_field(b, ",\"access_key\":", rec->access_key_id, HSM_AUDIT_NAME_MAX * 2));
	HSM_GUARD(put_str_field(b, ",\"source\":", rec->source, HSM_AUDIT_NAME_MAX * 2));
	HSM_GUARD(put_str_field(b, ",\"op\":", rec->operation, HSM_AUDIT_NAME_MAX * 2));
	HSM_GUARD(put_str_field(b, ",\"key_id\":", rec->key_id, HSM_AUDIT_VALUE_MAX));
	if (rec->key_version != 0) {
		HSM_GUARD(hsm_buf_put_str(b, ",\"key_version\":"));
		HSM_GUARD(put_u64(b, rec->key_version));
	}
	HSM_GUARD(hsm_buf_put_str(b, ",\"outcome\":\""));
	HSM_GUARD(hsm_buf_put_str(b, outcome_name(rec->outcome)));
	HSM_GUARD(hsm_buf_put_u8(b, '"'));
	HSM_GUARD(put_str_field(b, ",\"error\":", rec->error, HSM_AUDIT_NAME_MAX * 2));
	HSM_GUARD(put_str_field(b, ",\"request_id\":", rec->request_id, HSM_AUDIT_NAME_MAX * 2));
	if (rec->type == HSM_AUDIT_REQUEST) {
		HSM_GUARD(hsm_buf_put_str(b, ",\"latency_us\":"));
		HSM_GUARD(put_u64(b, rec->latency_us));
	}
	return put_extra(b, rec->extra, rec->n_extra);
}

hsm_result audit_format_checkpoint_body(hsm_buf *b, const char *node, int64_t time_ms,
                                        const char *reason, uint64_t kept_from,
                                        const uint8_t *sig, size_t sig_len, const char *why)
{
	HSM_GUARD(put_head(b, node, time_ms, HSM_AUDIT_CHECKPOINT));
	HSM_GUARD(hsm_buf_put_str(b, ",\"checkpoint\":{\"reason\":"));
	HSM_GUARD(audit_put_json_string(b, reason, HSM_AUDIT_NAME_MAX));
	if (kept_from != 0) {
		HSM_GUARD(hsm_buf_put_str(b, ",\"kept_from\":"));
		HSM_GUARD(put_u64(b, kept_from));
	}
	/* Every checkpoint declares the format as the run's AuditLogOpened does, so a trail
	 * whose opening retention removed still says which rules it keeps (audit_format.h). */
	HSM_GUARD(hsm_buf_put_str(b, ",\"trail_format\":" AUDIT_TRAIL_FORMAT_STR));
	if (sig != NULL) {
		HSM_GUARD(hsm_buf_put_str(b, ",\"signed\":true,\"alg\":\"Ed25519\",\"sig\":\""));
		HSM_GUARD(hsm_b64_encode(b, sig, sig_len));
		HSM_GUARD(hsm_buf_put_str(b, "\"}"));
	} else {
		HSM_GUARD(hsm_buf_put_str(b, ",\"signed\":false,\"why\":"));
		HSM_GUARD(audit_put_json_string(b, why ? why : "sealed", HSM_AUDIT_NAME_MAX));
		HSM_GUARD(hsm_buf_put_u8(b, '}'));
	}
	return HSM_SUCCESS;
}

hsm_result audit_checkpoint_message(hsm_buf *b, const char *node, uint64_t seq,
                                    const char *time_str, const char *reason,
                                    uint64_t kept_from, const char *prev_hex)
{
	/* Newline-separated; none of the parts can hold a newline (node ids and
	 * reasons are restricted, time and prev have fixed forms). */
	if (kept_from == 0)
		return hsm_buf_printf(b, "hsmd-audit-checkpoint-v1\n%s\n%llu\n%s\n%s\n%s", node,
		                      (unsigned long long)seq, time_str, reason, prev_hex);
	return hsm_buf_printf(b, "hsmd-audit-checkpoint-v2\n%s\n%llu\n%s\n%s\n%llu\n%s", node,
	                      (unsigned long long)seq, time_str, reason,
	                      (unsigned long long)kept_from, prev_hex);
}

hsm_result audit_format_line(hsm_buf *b, uint64_t seq, const uint8_t *body, size_t body_len,
                             const uint8_t prev[AUDIT_HASH_LEN])
{
	HSM_GUARD(hsm_buf_reserve(b, body_len + 128));
	HSM_GUARD(hsm_buf_put_str(b, "{\"seq\":"));
	HSM_GUARD(put_u64(b, seq));
	HSM_GUARD(hsm_buf_put_u8(b, ','));
	HSM_GUARD(hsm_buf_put(b, body, body_len));
	HSM_GUARD(hsm_buf_put_str(b, ",\"prev\":\""));
	char hex[AUDIT_HASH_HEX + 1];
	audit_hex32(prev, hex);
	HSM_GUARD(hsm_buf_put(b, hex, AUDIT_HASH_HEX));
	return hsm_buf_put_str(b, "\"}");
}

void audit_hex32(const uint8_t h[AUDIT_HASH_LEN], char out[AUDIT_HASH_HEX + 1])
{
	for (size_t i = 0; i < AUDIT_HASH_LEN; i++) {
		out[2 * i] = hexdig[h[i] >> 4];
		out[2 * i + 1] = hexdig[h[i] & 0xF];
	}
	out[AUDIT_HASH_HEX] = '\0';
}

/* gmtime_r and strftime cost a microsecond; most records share their second. */
static _Thread_local int64_t cached_sec = INT64_MIN;
static _Thread_local char cached_prefix[21];

void audit_format_time(int64_t t_ms, char out[25])
{
	/* The record's time field is always this form: clamped to 1970..9999. */
	static const int64_t last_ms = 253402300799999LL; /* 9999-12-31T23:59:59.999Z */
	t_ms = t_ms < 0 ? 0 : t_ms > last_ms ? last_ms : t_ms;
	int64_t sec = t_ms / 1000;
	if (sec != cached_sec) {
		hsm_format_time(sec, cached_prefix);
		cached_sec = sec;
	}
	unsigned ms = (unsigned)(t_ms % 1000);
	memcpy(out, cached_prefix, 19);
	out[19] = '.';
	out[20] = (char)('0' + ms / 100);
	out[21] = (char)('0' + ms / 10 % 10);
	out[22] = (char)('0' + ms % 10);
	out[23] = 'Z';
	out[24] = '\0';
}

static bool digits(const char *s, size_t n, int *out)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool audit_parse_time(const char *s, int64_t *t_ms)
{
	if (strlen(s) != 24 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':' || s[19] != '.' || s[23] != 'Z')
		return false;
	int y, mo, d, h, mi, se, ms;
	if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
	    !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se) ||
	    !digits(s + 20, 3, &ms))
		return false;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
		return false;
	struct tm tm = {0};
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	*t_ms = (int64_t)timegm(&tm) * 1000 + ms;
	return true;
}
