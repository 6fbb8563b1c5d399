/*
 * ct_probe.h - constant-time checks with valgrind's memcheck.
 *
 * A probe marks secret data "undefined" for memcheck before running the
 * code under test (VALGRIND_MAKE_MEM_UNDEFINED for whole bytes,
 * VALGRIND_SET_VBITS for single bits).  memcheck then reports every
 * conditional branch and every memory address computed from the secret, or
 * from anything derived from it, so a clean run shows that no control flow
 * or table index depends on secret data (the ctgrind technique).
 * Data-dependent instruction timing is outside what memcheck can see.
 *
 * The test binary runs itself again under valgrind with a mode argument:
 * its main hands argv[1] to its own probe code, which returns the exit code.
 * valgrind cannot run an AddressSanitizer build, so HSM_TEST_ASAN is
 * defined there and the probes are left to the regular build.
 */
#ifndef HSM_TEST_CT_PROBE_H
#define HSM_TEST_CT_PROBE_H

#include <stdbool.h>

#if defined(__SANITIZE_ADDRESS__)
#define HSM_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HSM_TEST_ASAN 1
#endif
#endif

#define CT_PROBE_LEAKS 99 /* the exit code when memcheck reported an error */

/*
 * Runs this test binary under memcheck with `mode` as its only argument and
 * returns its exit code; quiet hides memcheck's report.  Additions and
 * comparisons get exact definedness (--expensive-definedness-checks=yes),
 * so that result bits which do not depend on the undefined input bits are
 * not reported.  Fails the test when valgrind is missing.
 */
int ct_probe_run(const char *mode, bool quiet);

#endif
