/*
 * Wiping allocation (hsm_wiping_*, and hsm_buf's ordinary storage): a block
 * is all zeros, over its whole usable size, when it reaches free().  The
 * test is linked with -Wl,--wrap=free, so it sees each block just before
 * libc takes it back, without reading freed memory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/secret.h"

void __real_free(void *p);
void __wrap_free(void *p);

/* The block being watched, and what free() saw of it. */
static void *watched;
static int watched_frees;
static size_t nonzero_bytes;

void __wrap_free(void *p)
{
	if (p != NULL && p == watched) {
		const uint8_t *b = p;
		size_t n = malloc_usable_size(p);
		for (size_t i = 0; i < n; i++)
			nonzero_bytes += b[i] != 0;
		watched_frees++;
		watched = NULL;
	}
	__real_free(p);
}

static void watch(void *p)
{
	watched = p;
	watched_frees = 0;
	nonzero_bytes = 0;
}

static void *filled(size_t n, uint8_t v)
{
	uint8_t *p = hsm_wiping_malloc(n);
	assert_non_null(p);
	memset(p, v, malloc_usable_size(p)); /* the slack too: it may hold old bytes */
	return p;
}

static void test_free_wipes_the_whole_block(void **state)
{
	(void)state;
	static const size_t sizes[] = {1, 7, 24, 25, 100, 1000, 4096, 70000, 200000};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		void *p = filled(sizes[i], 0xA5);
		watch(p);
		hsm_wiping_free(p);
		assert_int_equal(watched_frees, 1);
		assert_int_equal(nonzero_bytes, 0);
	}
	hsm_wiping_free(NULL); /* a no-op, as free(NULL) */
}

static void test_realloc_keeps_the_bytes_and_wipes_the_old_block(void **state)
{
	(void)state;
	uint8_t *p = filled(24, 0x5A);
	memcpy(p, "share 1-of-5 0123456789", 24);
	watch(p);
	uint8_t *q = hsm_wiping_realloc(p, 1000);
	assert_non_null(q);
	assert_ptr_not_equal(q, p);
	assert_int_equal(watched_frees, 1);
	assert_int_equal(nonzero_bytes, 0);
	assert_memory_equal(q, "share 1-of-5 0123456789", 24);
	/* Shrinking stays in the block: nothing is freed, the bytes stay. */
	watch(q);
	assert_ptr_equal(hsm_wiping_realloc(q, 10), q);
	assert_int_equal(watched_frees, 0);
	assert_memory_equal(q, "share 1-of", 10);
	/* Size 0 frees (wiped), as glibc's realloc does. */
	assert_null(hsm_wiping_realloc(q, 0));
	assert_int_equal(watched_frees, 1);
	assert_int_equal(nonzero_bytes, 0);
	/* NULL is malloc. */
	void *r = hsm_wiping_realloc(NULL, 40);
	assert_non_null(r);
	hsm_wiping_free(r);
}

static void test_buf_wipes_what_it_grows_out_of_and_frees(void **state)
{
	(void)state;
	hsm_buf b = {0};
	uint8_t chunk[50];
	memset(chunk, 'x', sizeof(chunk));
	assert_true(hsm_ok(hsm_buf_put(&b, chunk, sizeof(chunk))));
	uint8_t *old = b.data;
	watch(old);
	for (int i = 0; i < 3; i++)
		assert_true(hsm_ok(hsm_buf_put(&b, chunk, sizeof(chunk))));
	assert_ptr_not_equal(b.data, old);
	assert_int_equal(watched_frees, 1);
	assert_int_equal(nonzero_bytes, 0);
	for (size_t i = 0; i < b.len; i++)
		assert_int_equal(b.data[i], 'x');
	watch(b.data);
	hsm_buf_free(&b);
	assert_int_equal(watched_frees, 1);
	assert_int_equal(nonzero_bytes, 0);
	assert_null(b.data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_free_wipes_the_whole_block),
	    cmocka_unit_test(test_realloc_keeps_the_bytes_and_wipes_the_old_block),
	    cmocka_unit_test(test_buf_wipes_what_it_grows_out_of_and_frees),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
