/*
 * securewatch.c - an LD_PRELOAD library that notes the largest allocation
 * hsmd's HTTP workers (threads named hsmd-http*) make in OpenSSL's secure
 * heap, the locked arena that holds unwrapped keys and secret answers.
 *
 * HSM_TEST_SECURE_WATCH names an 8-byte file the test shares with the
 * server: the size of the largest such allocation since the test last wrote
 * zero there (a little-endian 64-bit integer).  Allocations are passed on to
 * OpenSSL unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

typedef void *(*secure_alloc_fn)(size_t n, const char *file, int line);

static _Atomic long *largest;

__attribute__((constructor)) static void attach(void)
{
	const char *path = getenv("HSM_TEST_SECURE_WATCH");
	if (path == NULL)
		return;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	void *m = mmap(NULL, sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m != MAP_FAILED)
		largest = m;
}

static void note(size_t n)
{
	if (largest == NULL)
		return;
	char name[17] = {0};
	(void)prctl(PR_GET_NAME, name, 0, 0, 0);
	if (strncmp(name, "hsmd-http", 9) != 0)
		return;
	long seen = atomic_load(largest);
	while ((long)n > seen && !atomic_compare_exchange_weak(largest, &seen, (long)n))
		;
}

static secure_alloc_fn next(const char *symbol)
{
	void *f = dlsym(RTLD_NEXT, symbol);
	if (f == NULL)
		abort(); /* no libcrypto under this process: nothing to watch */
	secure_alloc_fn fn;
	memcpy(&fn, &f, sizeof(fn));
	return fn;
}

void *CRYPTO_secure_malloc(size_t n, const char *file, int line)
{
	static secure_alloc_fn real;
	if (real == NULL)
		real = next("CRYPTO_secure_malloc");
	note(n);
	return real(n, file, line);
}

void *CRYPTO_secure_zalloc(size_t n, const char *file, int line)
{
	static secure_alloc_fn real;
	if (real == NULL)
		real = next("CRYPTO_secure_zalloc");
	note(n);
	return real(n, file, line);
}
