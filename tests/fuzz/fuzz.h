/*
 * fuzz.h - what every fuzz target shares.
 *
 * Each tests/fuzz/<name>_fuzz.c defines LLVMFuzzerTestOneInput.  It is built
 * two ways: with clang's libFuzzer (cmake -DHSM_FUZZ=ON, `make fuzz`), and
 * with the default compiler against driver.c, which replays the committed
 * seed corpus and crash reproducers as a unit test.
 *
 * A target checks properties, not just the absence of crashes; a broken
 * property calls FUZZ_ASSERT, which aborts so that libFuzzer records the
 * input (and the regression driver fails).
 */
#ifndef HSM_FUZZ_H
#define HSM_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

_Noreturn static inline void fuzz_fail(const char *file, int line, const char *what)
{
	const hsm_error_info *e = hsm_last_error();
	fprintf(stderr, "%s:%d: property violated: %s (last error %s at %s:%d: %s)\n", file, line,
	        what, hsm_err_code_name(e->err), e->file != NULL ? e->file : "-", e->line,
	        e->message);
	abort();
}

#define FUZZ_ASSERT(cond)                                \
	do {                                                 \
		if (!(cond))                                     \
			fuzz_fail(__FILE__, __LINE__, #cond);        \
	} while (0)

/* Whether r failed with one of the n codes in ok[]. */
static inline bool fuzz_failed_with(hsm_result r, const hsm_err *ok, size_t n)
{
	if (hsm_ok(r))
		return false;
	for (size_t i = 0; i < n; i++)
		if (r.err == ok[i])
			return true;
	return false;
}

#define FUZZ_EXPECT_ERR(r, ...)                                                           \
	do {                                                                                  \
		static const hsm_err fuzz_ok__[] = {__VA_ARGS__};                                 \
		FUZZ_ASSERT(fuzz_failed_with((r), fuzz_ok__, sizeof(fuzz_ok__) / sizeof(*fuzz_ok__))); \
	} while (0)

/*
 * How a request body the JSON reader refuses is refused: as malformed
 * (SerializationException), or, valid JSON with a \u0000 in a string, as a
 * value hsmd does not take (ValidationException).
 */
static inline bool fuzz_json_refusal(hsm_result r, const uint8_t *data, size_t size)
{
	return r.err == HSM_ERR_SERIALIZATION ||
	       (r.err == HSM_ERR_VALIDATION && memmem(data, size, "\\u0000", 6) != NULL);
}

/* A read position over the input: targets carve it into fields. */
typedef struct fuzz_in {
	const uint8_t *p;
	size_t n;
} fuzz_in;

/* The next byte, or 0 when the input is used up. */
static inline uint8_t fuzz_u8(fuzz_in *in)
{
	if (in->n == 0)
		return 0;
	uint8_t v = in->p[0];
	in->p++;
	in->n--;
	return v;
}

/* The bytes up to the next sep (which is consumed) or to the end. */
static inline fuzz_in fuzz_field(fuzz_in *in, uint8_t sep)
{
	fuzz_in f = {in->p, 0};
	while (f.n < in->n && in->p[f.n] != sep)
		f.n++;
	size_t used = f.n < in->n ? f.n + 1 : f.n;
	in->p += used;
	in->n -= used;
	return f;
}

/* A NUL-terminated copy of f (the caller frees it); NULL only when out of memory. */
static inline char *fuzz_strdup(fuzz_in f)
{
	char *s = malloc(f.n + 1);
	if (s == NULL)
		return NULL;
	if (f.n > 0)
		memcpy(s, f.p, f.n);
	s[f.n] = '\0';
	return s;
}

#endif
