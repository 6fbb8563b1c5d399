/*
 * json_tiny.h - for the tests that hold hsmd's JSON reader to jansson's
 * verdicts (tests/unit/json_read_test.c, tests/fuzz/json_fuzz.c): whether
 * jansson read a number below a double's range, which the reader refuses on
 * purpose (1e-400: jansson reads 0, a value the sender never wrote).
 */
#ifndef HSM_TESTS_JSON_TINY_H
#define HSM_TESTS_JSON_TINY_H

#include <float.h>
#include <math.h>
#include <stdbool.h>

#include <jansson.h>

/* A number jansson read as 0 or a subnormal double: what a tiny exponent underflows to. */
static inline bool json_has_tiny_real(json_t *v)
{
	const char *k;
	size_t i;
	json_t *x;
	if (json_is_real(v))
		return fabs(json_real_value(v)) < DBL_MIN;
	if (json_is_object(v))
		json_object_foreach(v, k, x)
		{
			if (json_has_tiny_real(x))
				return true;
		}
	if (json_is_array(v))
		json_array_foreach(v, i, x)
		{
			if (json_has_tiny_real(x))
				return true;
		}
	return false;
}

#endif
