/*
 * secret.h - owned secrets in OpenSSL's secure heap.
 *
 * Key material, the domain master key, shares, PINs, access-key secrets and
 * plaintext data keys live in hsm_secret.  Storage comes from the secure heap
 * (mlock'ed, MADV_DONTDUMP), is wiped on free, and is only reachable through
 * hsm_secret_bytes(): grep for it to find every place a secret is read.
 * There is deliberately no printf-style accessor.
 */
#ifndef HSM_SECRET_H
#define HSM_SECRET_H

#include <stddef.h>
#include <stdint.h>

#include "common/result.h"

typedef struct hsm_secret hsm_secret;

/* Allocates a zero-filled secret of len bytes (len > 0). */
hsm_result hsm_secret_new(size_t len, hsm_secret **out) HSM_MUST_CHECK;
/* Allocates a secret holding a copy of p[0..len). */
hsm_result hsm_secret_from(const void *p, size_t len, hsm_secret **out) HSM_MUST_CHECK;
/* Allocates a secret holding len random bytes. */
hsm_result hsm_secret_random(size_t len, hsm_secret **out) HSM_MUST_CHECK;
hsm_result hsm_secret_dup(const hsm_secret *s, hsm_secret **out) HSM_MUST_CHECK;
/* Wipes and frees.  NULL is a no-op. */
void hsm_secret_free(hsm_secret *s);
size_t hsm_secret_len(const hsm_secret *s);
/* The one accessor for the secret's bytes; the pointer lives as long as s. */
uint8_t *hsm_secret_bytes(const hsm_secret *s);

/*
 * Process start-up for anything that holds secrets: initializes the secure
 * heap (heap_size bytes, a power of two), disables core dumps and ptrace
 * attach (PR_SET_DUMPABLE 0).  Safe to call once per process.
 */
hsm_result hsm_secure_process_init(size_t heap_size) HSM_MUST_CHECK;
/* Only the last two: no core dumps, no ptrace attach (for a client holding a share or a secret). */
hsm_result hsm_harden_process(void) HSM_MUST_CHECK;

/*
 * Wipes HSM_STACK_WIPE_BYTES of stack below the caller's frame: what the
 * functions it called, now returned, left there.  A digest's message
 * schedule, registers a codec spilled, the locals of an unoptimized build:
 * pieces of the plaintexts, keys and shares a call handled stay in a dead
 * frame until something deeper overwrites them, which on an idle thread is
 * never.  Threads that handle secrets call this after each unit of work (an
 * HTTP worker's pass, a lane's job, a scheduler round, a PKCS#11 call), from
 * the frame the work started from.  The deepest request paths reach about
 * 18 KiB below a worker's pass, optimized or not.
 */
#define HSM_STACK_WIPE_BYTES (32 * 1024)
void hsm_stack_wipe(void);
/*
 * The same on a thread whose stack this code did not size (the PKCS#11
 * module runs on the application's): as much of it as the thread's stack
 * has room for below the caller, with 8 KiB to spare (a signal handler),
 * down to nothing.  Inlined, so the wipe starts right below the caller's
 * frame; hsm_stack_room() is how far the stack reaches below it.
 */
void hsm_stack_wipe_16k(void);
void hsm_stack_wipe_8k(void);
void hsm_stack_wipe_4k(void);
size_t hsm_stack_room(void);
__attribute__((always_inline)) static inline void hsm_stack_wipe_guarded(void)
{
	size_t room = hsm_stack_room(), spare = 8192;
	if (room >= HSM_STACK_WIPE_BYTES + spare)
		hsm_stack_wipe();
	else if (room >= HSM_STACK_WIPE_BYTES / 2 + spare)
		hsm_stack_wipe_16k();
	else if (room >= HSM_STACK_WIPE_BYTES / 4 + spare)
		hsm_stack_wipe_8k();
	else if (room >= HSM_STACK_WIPE_BYTES / 8 + spare)
		hsm_stack_wipe_4k();
}

#define HSM_SECURE_HEAP_DEFAULT ((size_t)64 << 20)

/*
 * malloc, realloc and free for the libraries that hold request and response
 * bytes in ordinary heap memory (jansson's values): a request body can carry a custodian's share, a
 * plaintext or encryption context values, and freed memory keeps its bytes
 * until it is reused.  hsm_wiping_free wipes the whole usable size of a block
 * before freeing it; hsm_wiping_realloc never lets the old block go unwiped.
 * Blocks must come from these functions (or plain malloc).
 */
void *hsm_wiping_malloc(size_t n);
void *hsm_wiping_realloc(void *p, size_t n);
void hsm_wiping_free(void *p);

/*
 * Has OpenSSL allocate through the functions above, so that what it frees is
 * wiped too.  OpenSSL cleanses its key schedules and BIGNUMs itself, but not
 * every buffer a private key passes through: decoding or encoding a PKCS#8
 * key (every RSA or EC key loaded, made or returned) frees a copy of its DER
 * as it was.  A program (not a library: it changes the whole process) calls
 * this first thing in main, before anything has used OpenSSL.
 */
hsm_result hsm_wipe_openssl_frees(void) HSM_MUST_CHECK;

#endif
