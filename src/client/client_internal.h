/*
 * client_internal.h - the client's reader of answers, reached without a
 * connection of its own: for tests/unit/client_test.c and
 * tests/fuzz/client_fuzz.c.
 */
#ifndef HSM_CLIENT_INTERNAL_H
#define HSM_CLIENT_INTERNAL_H

#include <stdbool.h>

#include "common/buf.h"
#include "common/result.h"

/* The longest answer body the client takes. */
#define HSM_CLIENT_BODY_MAX (16 * 1024 * 1024)

/*
 * Reads one answer off fd (plain, blocking; not closed) as a call reads it:
 * interim answers skipped, the body framed by its length, its chunks or the
 * end of the stream, and appended to resp.  *status and *close_after (the
 * connection would not be kept) tell what was read.  A refused answer leaves
 * resp as it was.
 */
hsm_result hsm_client_answer_from_fd(int fd, int *status, bool *close_after,
                                     hsm_buf *resp) HSM_MUST_CHECK;

#endif
