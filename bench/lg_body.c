/*
 * lg_body.c - see lg_body.h.
 */
#include "lg_body.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define MAX_FILE ((size_t)256 << 20)

static hsm_result read_arg(const char *arg, hsm_buf *out)
{
	if (arg[0] == '@')
		return hsm_read_file(arg + 1, MAX_FILE, out);
	return hsm_buf_set(out, arg, strlen(arg));
}

hsm_result lg_body_load_template(lg_body_source *s, const char *template_arg)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf t = {0};
	HSM_TRY(read_arg(template_arg, &t));
	while (t.len > 0 && (t.data[t.len - 1] == '\n' || t.data[t.len - 1] == '\r'))
		t.len--;
	HSM_TRY(hsm_buf_terminate(&t));
	const char *p = strstr((const char *)t.data, LG_KEY_PLACEHOLDER);
	s->has_key = p != NULL;
	size_t cut = p != NULL ? (size_t)(p - (const char *)t.data) : t.len;
	HSM_TRY(hsm_buf_set(&s->prefix, t.data, cut));
	if (p != NULL) {
		size_t after = cut + strlen(LG_KEY_PLACEHOLDER);
		HSM_TRY(hsm_buf_set(&s->suffix, t.data + after, t.len - after));
	}
out:
	hsm_buf_free(&t);
	return res;
}

hsm_result lg_body_add_keys(lg_body_source *s, const char *arg)
{
	hsm_result res = HSM_SUCCESS;
	hsm_buf text = {0};
	HSM_TRY(read_arg(arg, &text));
	for (size_t i = 0; i < text.len;) {
		size_t j = i;
		while (j < text.len && text.data[j] != '\n')
			j++;
		size_t n = j;
		while (n > i && (text.data[n - 1] == '\r' || text.data[n - 1] == ' '))
			n--;
		if (n > i) {
			HSM_TRY(hsm_buf_put(&s->key_text, text.data + i, n - i));
			HSM_TRY(hsm_buf_put_u8(&s->key_text, 0));
		}
		i = j + 1;
	}
out:
	hsm_buf_free(&text);
	return res;
}

hsm_result lg_body_finish(lg_body_source *s)
{
	size_t n = 0;
	for (size_t i = 0; i < s->key_text.len; i++)
		n += s->key_text.data[i] == 0;
	HSM_ENSURE(!s->has_key || n > 0, HSM_ERR_VALIDATION,
	           "the body holds " LG_KEY_PLACEHOLDER " but no key id was given (--key)");
	free(s->keys);
	s->keys = n ? calloc(n, sizeof(*s->keys)) : NULL;
	HSM_ENSURE(n == 0 || s->keys != NULL, HSM_ERR_NOMEM, "out of memory");
	const char *p = (const char *)s->key_text.data;
	for (size_t k = 0; k < n; k++) {
		s->keys[k] = p;
		p += strlen(p) + 1;
	}
	s->n_keys = n;
	return HSM_SUCCESS;
}

void lg_body_free(lg_body_source *s)
{
	hsm_buf_free(&s->prefix);
	hsm_buf_free(&s->suffix);
	hsm_buf_free(&s->key_text);
	free(s->keys);
	s->keys = NULL;
	s->n_keys = 0;
}

void lg_body_state_init(lg_body_state *st, unsigned seed)
{
	/* Any odd-ish non-zero start will do: the choice only needs to be uniform, not secret. */
	st->rng = 0x9E3779B97F4A7C15ULL * (seed + 1U) | 1U;
	st->next = seed;
}

/* xorshift64*: Vigna, "An experimental exploration of Marsaglia's xorshift generators". */
static uint64_t next_u64(lg_body_state *st)
{
	st->rng ^= st->rng >> 12;
	st->rng ^= st->rng << 25;
	st->rng ^= st->rng >> 27;
	return st->rng * 0x2545F4914F6CDD1DULL;
}

hsm_result lg_body_next(const lg_body_source *s, lg_body_state *st, hsm_buf *out)
{
	out->len = 0;
	HSM_GUARD(hsm_buf_put(out, s->prefix.data, s->prefix.len));
	if (!s->has_key)
		return HSM_SUCCESS;
	size_t k = s->random ? (size_t)(next_u64(st) % s->n_keys) : st->next++ % s->n_keys;
	HSM_GUARD(hsm_buf_put_str(out, s->keys[k]));
	return hsm_buf_put(out, s->suffix.data, s->suffix.len);
}
