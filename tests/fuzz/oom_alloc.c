/*
 * oom_alloc.c - malloc and its kin, passed on to glibc, with refusals on
 * demand and a record of what armed runs left allocated (oom_alloc.h).
 *
 * The record is an open-addressed table (linear probing, deletion by
 * shifting back) in memory of its own from mmap, so keeping it allocates
 * nothing; one mutex guards it.  Only blocks of a tracking thread are
 * entered, so the table stays small and a free that finds an empty table
 * costs nothing.
 */
#include "oom_alloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h> /* memalign */
#include <sys/mman.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t n);

#define SLOTS ((size_t)1 << 20) /* far more than an armed request allocates */

typedef struct block {
	uintptr_t p; /* 0: the slot is empty */
	size_t size;
	long tag;
} block;

static block *table;
static size_t in_table;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static __thread bool armed, tracking, fired;
static __thread long seen, fail_at, tag_of_run;

static size_t slot_of(uintptr_t p)
{
	return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ULL >> 44) & (SLOTS - 1);
}

static void remember(void *p, size_t size)
{
	pthread_mutex_lock(&mu);
	if (table == NULL) {
		void *m = mmap(NULL, SLOTS * sizeof(block), PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			abort();
		table = m;
	}
	if (in_table >= SLOTS / 2)
		abort(); /* a request does not make half a million blocks */
	size_t i = slot_of((uintptr_t)p);
	while (table[i].p != 0)
		i = (i + 1) & (SLOTS - 1);
	table[i] = (block){(uintptr_t)p, size, tag_of_run};
	in_table++;
	pthread_mutex_unlock(&mu);
}

/* Forgets p if it was remembered; returns whether it was. */
static bool forget(void *p)
{
	bool found = false;
	pthread_mutex_lock(&mu);
	if (in_table == 0) {
		pthread_mutex_unlock(&mu);
		return false;
	}
	size_t i = slot_of((uintptr_t)p);
	while (table[i].p != 0 && table[i].p != (uintptr_t)p)
		i = (i + 1) & (SLOTS - 1);
	if (table[i].p != 0) {
		found = true;
		in_table--;
		/* Shift back the entries after it that probed past slot i. */
		size_t hole = i;
		for (size_t j = (i + 1) & (SLOTS - 1); table[j].p != 0; j = (j + 1) & (SLOTS - 1)) {
			size_t home = slot_of(table[j].p);
			bool between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
			if (!between) {
				table[hole] = table[j];
				hole = j;
			}
		}
		table[hole].p = 0;
	}
	pthread_mutex_unlock(&mu);
	return found;
}

/* Whether this allocation of the calling thread is the one to refuse. */
static bool refuse(void)
{
	if (!armed)
		return false;
	if (seen++ != fail_at)
		return false;
	fired = true;
	return true;
}

static void *given(void *p, size_t size)
{
	if (p != NULL && armed && tracking)
		remember(p, size);
	return p;
}

void *malloc(size_t n)
{
	if (refuse()) {
		errno = ENOMEM;
		return NULL;
	}
	return given(__libc_malloc(n), n);
}

void *calloc(size_t n, size_t size)
{
	if (refuse()) {
		errno = ENOMEM;
		return NULL;
	}
	return given(__libc_calloc(n, size), n * size);
}

void *realloc(void *p, size_t n)
{
	if (p == NULL)
		return malloc(n);
	if (n == 0) {
		free(p);
		return NULL;
	}
	if (refuse()) {
		errno = ENOMEM;
		return NULL; /* p is still the caller's */
	}
	bool was = forget(p);
	void *q = __libc_realloc(p, n);
	if (q == NULL) {
		if (was)
			remember(p, n);
		return NULL;
	}
	if (was || (armed && tracking))
		remember(q, n);
	return q;
}

void *reallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, n * size);
}

void free(void *p)
{
	if (p == NULL)
		return;
	(void)forget(p);
	__libc_free(p);
}

void *memalign(size_t align, size_t n)
{
	if (refuse()) {
		errno = ENOMEM;
		return NULL;
	}
	return given(__libc_memalign(align, n), n);
}

void *aligned_alloc(size_t align, size_t n)
{
	return memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	if (align < sizeof(void *) || (align & (align - 1)) != 0)
		return EINVAL;
	void *p = memalign(align, n);
	if (p == NULL)
		return ENOMEM;
	*out = p;
	return 0;
}

void oom_arm(long fail, bool track, long tag)
{
	seen = 0;
	fail_at = fail;
	fired = false;
	tracking = track;
	tag_of_run = tag;
	armed = true;
}

long oom_disarm(bool *did_fire)
{
	armed = false;
	tracking = false;
	if (did_fire != NULL)
		*did_fire = fired;
	return seen;
}

size_t oom_report(FILE *f)
{
	pthread_mutex_lock(&mu);
	size_t n = in_table;
	for (size_t i = 0; table != NULL && i < SLOTS; i++)
		if (table[i].p != 0)
			fprintf(f, "  %zu bytes at %p, from run %ld\n", table[i].size, (void *)table[i].p,
			        table[i].tag);
	pthread_mutex_unlock(&mu);
	return n;
}
