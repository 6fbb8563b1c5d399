/*
 * oomfault.c - an LD_PRELOAD library that makes one allocation of a running
 * process fail, on a test's command: hsmd (test_oom_server.py), hsmctl, or
 * an application of the PKCS#11 module (pkcs11_oom.c, test_oom_pkcs11.py).
 *
 * HSM_TEST_OOM_CTL names a file the test shares with the server, read as the
 * struct ctl below (little-endian 64-bit fields):
 *   mode    0 off; 1 count; 2 refuse allocation number `at`, then count on;
 *           3 refuse every `at`-th allocation (fired counts the refusals)
 *   gen     moved by the test with every command, so that each thread reads
 *           its name again before it counts
 *   at      in mode 2, which allocation to refuse (1 is the first after the
 *           command)
 *   seen    allocations made since the command by the threads that count
 *   fired   1 once the refusal was made
 *   threads which threads count: NUL-terminated, comma-separated prefixes of
 *           thread names ("hsmd-http,hsmd-lane")
 * Only the threads named count, so the server's timers and sweepers do not
 * move the numbers of a request's allocations.  A refused allocation returns
 * NULL with errno ENOMEM, as glibc's malloc does when it runs out.  OpenSSL's
 * secure heap is an arena of its own, not reached through malloc: its
 * allocations are never refused here.  With HSM_TEST_OOM_TRACE set, each
 * refusal writes its call stack to standard error (the node's log).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);

struct ctl {
	_Atomic long mode, gen, at, seen, fired;
	char threads[216];
};

static struct ctl *ctl;
static bool trace;

/* Per thread: the command whose thread list was last read, and whether this thread counts. */
static __thread long known_gen __attribute__((tls_model("initial-exec"))) = -1;
static __thread bool counts __attribute__((tls_model("initial-exec")));

__attribute__((constructor)) static void attach(void)
{
	const char *path = getenv("HSM_TEST_OOM_CTL");
	if (path == NULL)
		return;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	void *m = mmap(NULL, sizeof(struct ctl), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m != MAP_FAILED)
		ctl = m;
	trace = getenv("HSM_TEST_OOM_TRACE") != NULL;
	if (trace) { /* the first backtrace() loads libgcc, which allocates: not inside malloc */
		void *frames[4];
		(void)backtrace(frames, 4);
	}
}

static bool named_in(const char *name, const char *list)
{
	size_t n = strlen(name);
	while (*list != '\0') {
		const char *end = strchr(list, ',');
		size_t len = end != NULL ? (size_t)(end - list) : strlen(list);
		if (len > 0 && len <= n && memcmp(name, list, len) == 0)
			return true;
		if (end == NULL)
			break;
		list = end + 1;
	}
	return false;
}

/* Whether this allocation is the one to refuse. */
static bool refuse(void)
{
	if (ctl == NULL || atomic_load(&ctl->mode) == 0)
		return false;
	long gen = atomic_load(&ctl->gen);
	if (gen != known_gen) {
		char name[17] = {0}, list[sizeof(ctl->threads) + 1] = {0};
		(void)prctl(PR_GET_NAME, name, 0, 0, 0);
		memcpy(list, ctl->threads, sizeof(ctl->threads));
		counts = named_in(name, list);
		known_gen = gen;
	}
	if (!counts)
		return false;
	long n = atomic_fetch_add(&ctl->seen, 1) + 1;
	long armed = 2, at = atomic_load(&ctl->at);
	if (atomic_load(&ctl->mode) == 3) {
		if (at <= 0 || n % at != 0)
			return false;
		atomic_fetch_add(&ctl->fired, 1);
	} else if (n != at || !atomic_compare_exchange_strong(&ctl->mode, &armed, 1)) {
		return false;
	} else {
		atomic_store(&ctl->fired, 1);
	}
	if (trace) {
		void *frames[32];
		static const char head[] = "oomfault: allocation refused at\n";
		(void)!write(2, head, sizeof(head) - 1);
		backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
	}
	errno = ENOMEM;
	return true;
}

void *malloc(size_t n)
{
	return refuse() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
	return refuse() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
	/* A shrink to nothing frees: not an allocation to refuse. */
	return p != NULL && n == 0 ? __libc_realloc(p, n) : refuse() ? NULL : __libc_realloc(p, n);
}

void *reallocarray(void *p, size_t n, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, total);
}

void *memalign(size_t align, size_t n)
{
	return refuse() ? NULL : __libc_memalign(align, n);
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

void *valloc(size_t n)
{
	return memalign((size_t)sysconf(_SC_PAGESIZE), n);
}
