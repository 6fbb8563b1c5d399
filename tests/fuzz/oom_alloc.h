/*
 * oom_alloc.h - allocation failures on demand, for api_oom_replay.
 *
 * oom_alloc.c replaces malloc and its kin for the whole process (glibc lets
 * a program do that; libc, OpenSSL, SQLite and jansson then allocate through
 * it) and passes every call on to glibc's own allocator.  While a thread is
 * armed, its allocations are counted, the one numbered fail_at (from 0) is
 * refused as if memory had run out, and, when asked, the blocks it is given
 * are remembered until freed, by any thread, so what an armed request left
 * behind can be listed at the end.  Other threads are never refused.
 *
 * Not for sanitizer builds: ASan brings an allocator of its own.
 */
#ifndef HSM_OOM_ALLOC_H
#define HSM_OOM_ALLOC_H

#include <stdbool.h>
#include <stdio.h>

/* Arms the calling thread: refuses its allocation number fail_at (none when
 * negative) and remembers the blocks it gets if track is set.  tag is kept
 * with each remembered block, to say in a report which run made it. */
void oom_arm(long fail_at, bool track, long tag);
/* Disarms the calling thread; *fired says whether the refusal happened.
 * Returns how many allocations the thread made while armed. */
long oom_disarm(bool *fired);
/* Prints the remembered blocks still allocated to f; returns how many. */
size_t oom_report(FILE *f);

#endif
