#include "common/secret.h"

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <openssl/crypto.h>

#include "common/log.h"
#include <openssl/rand.h>

struct hsm_secret {
	size_t len;
	uint8_t *bytes; /* points at storage: lets a const handle yield writable bytes */
	uint8_t storage[];
};

hsm_result hsm_secret_new(size_t len, hsm_secret **out)
{
	HSM_ASSERT(len > 0 && len < ((size_t)1 << 24));
	hsm_secret *s = OPENSSL_secure_zalloc(sizeof(*s) + len);
	HSM_ENSURE(s != NULL, HSM_ERR_NOMEM, "secure heap exhausted");
	s->len = len;
	s->bytes = s->storage;
	*out = s;
	return HSM_SUCCESS;
}

hsm_result hsm_secret_from(const void *p, size_t len, hsm_secret **out)
{
	hsm_secret *s;
	HSM_GUARD(hsm_secret_new(len, &s));
	memcpy(s->bytes, p, len);
	*out = s;
	return HSM_SUCCESS;
}

hsm_result hsm_secret_random(size_t len, hsm_secret **out)
{
	hsm_secret *s;
	HSM_GUARD(hsm_secret_new(len, &s));
	if (len > (size_t)INT32_MAX || RAND_priv_bytes(s->bytes, (int)len) != 1) {
		hsm_secret_free(s);
		return HSM_FAIL(HSM_ERR_CRYPTO, "random generator failed");
	}
	*out = s;
	return HSM_SUCCESS;
}

hsm_result hsm_secret_dup(const hsm_secret *s, hsm_secret **out)
{
	return hsm_secret_from(s->bytes, s->len, out);
}

void hsm_secret_free(hsm_secret *s)
{
	if (s == NULL)
		return;
	OPENSSL_secure_clear_free(s, sizeof(*s) + s->len);
}

size_t hsm_secret_len(const hsm_secret *s)
{
	return s->len;
}

uint8_t *hsm_secret_bytes(const hsm_secret *s)
{
	return s->bytes;
}

/*
 * A frame of n bytes, zeroed: what callees left in that much stack below
 * the caller.  Each is its own frame, called straight from the frame whose
 * callees it wipes (a wrapper would keep the top of the area for itself).
 */
#define WIPE_FN(name, n)                                                              \
	__attribute__((noinline)) void name(void)                                         \
	{                                                                                 \
		uint8_t area[n];                                                              \
		explicit_bzero(area, sizeof(area));                                           \
		__asm__ volatile("" : : "r"(area) : "memory"); /* the frame is really there */ \
	}
WIPE_FN(hsm_stack_wipe, HSM_STACK_WIPE_BYTES)
WIPE_FN(hsm_stack_wipe_16k, HSM_STACK_WIPE_BYTES / 2)
WIPE_FN(hsm_stack_wipe_8k, HSM_STACK_WIPE_BYTES / 4)
WIPE_FN(hsm_stack_wipe_4k, HSM_STACK_WIPE_BYTES / 8)
#undef WIPE_FN

__attribute__((noinline)) size_t hsm_stack_room(void)
{
	static _Thread_local uintptr_t floor; /* the stack's lowest usable address; 0: unknown */
	static _Thread_local uintptr_t top;   /* and the address just above it */
	static _Thread_local bool looked;
	if (!looked) {
		looked = true;
		pthread_attr_t attr;
		void *addr = NULL;
		size_t size = 0;
		if (pthread_getattr_np(pthread_self(), &attr) == 0) {
			if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
				floor = (uintptr_t)addr;
				top = floor + size;
			}
			pthread_attr_destroy(&attr);
		}
	}
	uintptr_t here = (uintptr_t)__builtin_frame_address(0);
	/* Only on the thread's own stack: code running on another one (a coroutine's or a
	 * fiber's, makecontext's, OpenSSL's async jobs') has no known room below it. */
	return floor != 0 && here > floor && here < top ? here - floor : 0;
}

hsm_result hsm_harden_process(void)
{
	struct rlimit none = {0, 0};
	HSM_ENSURE(setrlimit(RLIMIT_CORE, &none) == 0, HSM_ERR_INTERNAL, "cannot disable core dumps");
	HSM_ENSURE(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0, HSM_ERR_INTERNAL,
	           "cannot mark the process non-dumpable");
	return HSM_SUCCESS;
}

hsm_result hsm_secure_process_init(size_t heap_size)
{
	HSM_GUARD(hsm_harden_process());
	if (CRYPTO_secure_malloc_initialized())
		return HSM_SUCCESS;
	/* Locking the heap may need a larger RLIMIT_MEMLOCK; raise it when we may. */
	struct rlimit ml;
	if (getrlimit(RLIMIT_MEMLOCK, &ml) == 0 && ml.rlim_cur < heap_size &&
	    (ml.rlim_max == RLIM_INFINITY || ml.rlim_max >= heap_size)) {
		ml.rlim_cur = heap_size;
		(void)setrlimit(RLIMIT_MEMLOCK, &ml);
	}
	/* 1 = locked heap, 2 = heap allocated but mlock refused (still excluded from dumps). */
	int rc = CRYPTO_secure_malloc_init(heap_size, 32);
	HSM_ENSURE(rc != 0, HSM_ERR_NOMEM, "cannot create the secure heap");
	if (rc == 2)
		hsm_warn("the secure heap (%zu MiB) could not be locked in memory: unwrapped keys "
		         "may be swapped to disk; raise the memory lock limit (systemd: "
		         "LimitMEMLOCK=, or CAP_IPC_LOCK) or lower secure_heap_bytes",
		         heap_size >> 20);
	return HSM_SUCCESS;
}

void *hsm_wiping_malloc(size_t n)
{
	return malloc(n);
}

static void *ossl_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	return hsm_wiping_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	hsm_wiping_free(p);
}

hsm_result hsm_wipe_openssl_frees(void)
{
	HSM_ENSURE(CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free) == 1,
	           HSM_ERR_INTERNAL,
	           "OpenSSL allocated memory before its allocator could be set");
	return HSM_SUCCESS;
}

void hsm_wiping_free(void *p)
{
	if (p == NULL)
		return;
	/* explicit_bzero: a memset the compiler may not drop, at memset's speed. */
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

void *hsm_wiping_realloc(void *p, size_t n)
{
	if (p == NULL)
		return malloc(n);
	if (n == 0) {
		hsm_wiping_free(p);
		return NULL;
	}
	size_t have = malloc_usable_size(p);
	if (n <= have)
		return p; /* the tail stays inside the block and is wiped with it */
	void *q = malloc(n);
	if (q == NULL)
		return NULL; /* p is still the caller's, as with realloc */
	memcpy(q, p, have);
	hsm_wiping_free(p);
	return q;
}
