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
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

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

/*
 * hsm_stack_wipe: a frame that held a secret and returned leaves it on the
 * stack; the wipe takes it away.  The dead frame is read through
 * /proc/self/mem, which reads memory as it is, without touching it as C.
 */
static const uint8_t canary[32] = "hsm_stack_wipe canary 0123456789";
static uintptr_t dirt_at;

#define DIRT_BYTES 8192

__attribute__((noinline)) static void dirty_frame(void)
{
	uint8_t area[DIRT_BYTES];
	for (size_t i = 0; i < sizeof(area); i += sizeof(canary))
		memcpy(area + i, canary, sizeof(canary));
	__asm__ volatile("" : : "r"(area) : "memory");
	dirt_at = (uintptr_t)area;
}

/* Copies of the canary in the DIRT_BYTES at dirt_at, as memory holds them now. */
__attribute__((noinline)) static size_t canaries_left(void)
{
	static uint8_t seen[DIRT_BYTES]; /* not on the stack it reads */
	int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return SIZE_MAX;
	ssize_t n = pread(fd, seen, sizeof(seen), (off_t)dirt_at);
	close(fd);
	if (n != (ssize_t)sizeof(seen))
		return SIZE_MAX;
	size_t found = 0;
	for (size_t i = 0; i + sizeof(canary) <= sizeof(seen); i += sizeof(canary))
		found += memcmp(seen + i, canary, sizeof(canary)) == 0;
	return found;
}

static void test_stack_wipe_clears_dead_frames(void **state)
{
	(void)state;
	/* The control: without the wipe, the dead frame still holds its canaries (the
	 * calls in between reuse only the top of it). */
	dirty_frame();
	size_t left = canaries_left();
	assert_int_not_equal(left, SIZE_MAX);
	assert_true(left >= DIRT_BYTES / sizeof(canary) / 2);
	dirty_frame();
	hsm_stack_wipe();
	assert_int_equal(canaries_left(), 0);
	dirty_frame();
	hsm_stack_wipe_guarded();
	assert_int_equal(canaries_left(), 0);
}

static void *guarded_on_a_small_stack(void *arg)
{
	(void)arg;
	dirty_frame();
	hsm_stack_wipe_guarded();
	return (void *)(uintptr_t)canaries_left();
}

static void *guarded_on_a_tiny_stack(void *arg)
{
	(void)arg;
	hsm_stack_wipe_guarded(); /* no room for 32 KiB: less, or nothing, but no overflow */
	return (void *)1;
}

/* Runs fn on a thread whose stack is exactly `stack` bytes, above an inaccessible page. */
static uintptr_t run_with_stack(void *(*fn)(void *), size_t stack)
{
	size_t guard = (size_t)sysconf(_SC_PAGESIZE);
	uint8_t *map = mmap(NULL, guard + stack, PROT_READ | PROT_WRITE,
	                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(mprotect(map, guard, PROT_NONE), 0);
	pthread_attr_t attr;
	pthread_t t;
	void *out = NULL;
	assert_int_equal(pthread_attr_init(&attr), 0);
	assert_int_equal(pthread_attr_setstack(&attr, map + guard, stack), 0);
	assert_int_equal(pthread_create(&t, &attr, fn, NULL), 0);
	assert_int_equal(pthread_join(t, &out), 0);
	pthread_attr_destroy(&attr);
	munmap(map, guard + stack);
	return (uintptr_t)out;
}

/* An application's thread with a stack smaller than the wipe (the PKCS#11 module's case). */
static void test_guarded_stack_wipe_fits_the_stack(void **state)
{
	(void)state;
	assert_int_equal(run_with_stack(guarded_on_a_small_stack, 64 * 1024), 0);
	assert_int_equal(run_with_stack(guarded_on_a_tiny_stack, 16 * 1024), 1);
	assert_int_equal(run_with_stack(guarded_on_a_tiny_stack, 24 * 1024), 1);
}

/*
 * Code on a coroutine's stack (makecontext, OpenSSL's async jobs), mapped
 * above the thread's own stack: the room below it is not the thread's, and
 * the application's memory right below it stays as it was.
 */
#define CO_DATA (64 * 1024)
#define CO_STACK (16 * 1024)
static uint8_t *co_region;
static ucontext_t co_caller, co_uc;

static void on_the_coroutine(void)
{
	hsm_stack_wipe_guarded();
}

static void *run_coroutine(void *arg)
{
	(void)arg;
	assert_int_equal(getcontext(&co_uc), 0);
	co_uc.uc_stack.ss_sp = co_region + CO_DATA;
	co_uc.uc_stack.ss_size = CO_STACK;
	co_uc.uc_link = &co_caller;
	makecontext(&co_uc, on_the_coroutine, 0);
	assert_int_equal(swapcontext(&co_caller, &co_uc), 0);
	return NULL;
}

static void test_guarded_stack_wipe_stays_on_a_coroutine_stack(void **state)
{
	(void)state;
	/* Mapped before the thread is made, so above its stack (mappings go downwards). */
	co_region = mmap(NULL, CO_DATA + CO_STACK, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(co_region != MAP_FAILED);
	memset(co_region, 0xA5, CO_DATA);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, run_coroutine, NULL), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	size_t changed = 0;
	for (size_t i = 0; i < CO_DATA; i++)
		changed += co_region[i] != 0xA5;
	munmap(co_region, CO_DATA + CO_STACK);
	assert_int_equal(changed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_free_wipes_the_whole_block),
	    cmocka_unit_test(test_realloc_keeps_the_bytes_and_wipes_the_old_block),
	    cmocka_unit_test(test_buf_wipes_what_it_grows_out_of_and_frees),
	    cmocka_unit_test(test_stack_wipe_clears_dead_frames),
	    cmocka_unit_test(test_guarded_stack_wipe_fits_the_stack),
	    cmocka_unit_test(test_guarded_stack_wipe_stays_on_a_coroutine_stack),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
