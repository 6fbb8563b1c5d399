/*
 * marker_fuzz.c - pagination markers (server/marker.h).
 *
 * Input: one byte choosing the listing, then the marker text (up to the
 * first NUL).
 *
 * Properties: a marker is refused with InvalidMarkerException and nothing
 * else; a marker taken holds a position that, encoded again for the same
 * listing and key, gives the marker back (one marker per position, and
 * hsmd would have issued it).
 */
#include "fuzz.h"

#include <string.h>

#include "server/marker.h"

#define SCOPE "1234abcd-12ab-34cd-56ef-1234567890ab"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	unsigned choice = fuzz_u8(&in);
	hsm_marker_kind kind = (hsm_marker_kind)(choice % HSM_MARKER_KIND_COUNT);
	const char *scope = (choice & 0x80) != 0 ? NULL : SCOPE;
	char *text = malloc(in.n + 1);
	FUZZ_ASSERT(text != NULL);
	memcpy(text, in.p, in.n);
	text[in.n] = '\0';
	hsm_buf position = {0}, again = {0};
	hsm_result r = hsm_marker_decode(kind, scope, true, text, &position);
	if (hsm_failed(r)) {
		FUZZ_EXPECT_ERR(r, HSM_ERR_INVALID_MARKER);
		FUZZ_ASSERT(position.len == 0);
	} else {
		FUZZ_ASSERT(strlen((const char *)position.data) == position.len);
		FUZZ_ASSERT(hsm_ok(hsm_marker_encode(kind, scope, (const char *)position.data, &again)));
		FUZZ_ASSERT(again.len == strlen(text) && memcmp(again.data, text, again.len) == 0);
	}
	hsm_buf_free(&position);
	hsm_buf_free(&again);
	free(text);
	return 0;
}
