/*
 * share_fuzz.c - custodian share files and quorum collection
 * (keystore/share.h: hsm_share_decode, hsm_share_encode, hsm_share_set_*).
 *
 * Input: one or more share files separated by NUL bytes (a valid share file
 * holds none).  When the input starts with '!', that byte is dropped and
 * each file's check line is rewritten to the right checksum before parsing,
 * so mutations of the other fields reach acceptance instead of all failing
 * the checksum.
 *
 * Properties:
 *   - a refused file is InvalidShareException (HSM_ERR_SHARE_INVALID);
 *   - the format has one spelling per share: an accepted file re-encodes to
 *     exactly the same bytes;
 *   - the shares that decode are offered, in order, to a set built from the
 *     first one's store, split and quorum: a share either joins it or is
 *     refused as a mismatch or a duplicate, and stays untouched when refused;
 *     the same file offered twice is a duplicate; a set of another store
 *     refuses every share;
 *   - once enough have joined, combine succeeds, and a 1-of-1 share gives
 *     back its own value;
 *   - every file, decoded or not, is described (hsm_share_describe) ending in
 *     its SHA-256, and an accepted one by its own index, count and custodian.
 */
#include "fuzz.h"

#include "crypto/crypto.h"
#include "keystore/share.h"

#define MAX_FILES 20

static const uint8_t other_set_id[HSM_SHARE_SET_ID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
static const char other_store[] = "00000000-0000-4000-8000-000000000000";

/* Rewrites the 16 hex digits after the last "check " line start to the file's checksum. */
static void fix_checksum(uint8_t *p, size_t n)
{
	static const char tag[] = "check ";
	static const char hex[] = "0123456789abcdef";
	const size_t tl = sizeof(tag) - 1;
	size_t at = n;
	for (size_t i = 0; i + tl <= n; i++)
		if ((i == 0 || p[i - 1] == '\n') && memcmp(p + i, tag, tl) == 0)
			at = i;
	if (at == n || n - at - tl < 2 * HSM_SHARE_CHECK_LEN)
		return;
	uint8_t md[HSM_SHA256_LEN];
	FUZZ_ASSERT(hsm_ok(hsm_sha256(p, at, md)));
	for (size_t i = 0; i < HSM_SHARE_CHECK_LEN; i++) {
		p[at + tl + 2 * i] = (uint8_t)hex[md[i] >> 4];
		p[at + tl + 2 * i + 1] = (uint8_t)hex[md[i] & 15];
	}
}

/* The audit trail's name for the file f; s is what it decodes to, NULL if refused. */
static void check_described(fuzz_in f, const hsm_share *s)
{
	char out[200], want[200];
	FUZZ_ASSERT(hsm_ok(hsm_share_describe(f.p, f.n, out, sizeof(out))));
	const char *sha = strstr(out, "sha256:");
	FUZZ_ASSERT(sha != NULL && strlen(sha) == 7 + 2 * HSM_SHA256_LEN);
	if (s == NULL)
		return;
	int n = snprintf(want, sizeof(want), "share %u of %u%s%s, ", s->index, s->count,
	                 s->custodian[0] != '\0' ? ", custodian " : "", s->custodian);
	FUZZ_ASSERT(n > 0 && sha == out + n && strncmp(out, want, (size_t)n) == 0);
}

/* Decodes one file; returns whether it was accepted. */
static bool decode_one(fuzz_in f, hsm_share *s)
{
	hsm_result r = hsm_share_decode(f.p, f.n, s);
	check_described(f, hsm_ok(r) ? s : NULL);
	if (hsm_failed(r)) {
		FUZZ_ASSERT(r.err == HSM_ERR_SHARE_INVALID);
		return false;
	}
	FUZZ_ASSERT(s->value != NULL && hsm_secret_len(s->value) == HSM_SHARE_VALUE_LEN);
	hsm_buf again;
	hsm_buf_init_secure(&again);
	FUZZ_ASSERT(hsm_ok(hsm_share_encode(s, &again)));
	FUZZ_ASSERT(again.len == f.n && memcmp(again.data, f.p, f.n) == 0);
	hsm_buf_free(&again);
	return true;
}

static void offer(hsm_share_set *set, hsm_share_set *other, hsm_share *s, fuzz_in file)
{
	hsm_secret *value = s->value;
	if (strcmp(s->store_id, other_store) != 0) {
		FUZZ_EXPECT_ERR(hsm_share_set_add(other, s), HSM_ERR_SHARE_MISMATCH);
		FUZZ_ASSERT(s->value == value);
	}
	bool had = hsm_share_set_has(set, s->index);
	unsigned have = hsm_share_set_have(set);
	hsm_result r = hsm_share_set_add(set, s);
	if (hsm_failed(r)) {
		FUZZ_EXPECT_ERR(r, HSM_ERR_SHARE_MISMATCH, HSM_ERR_SHARE_DUPLICATE);
		FUZZ_ASSERT(r.err != HSM_ERR_SHARE_DUPLICATE || had);
		FUZZ_ASSERT(s->value == value && hsm_share_set_have(set) == have);
		return;
	}
	FUZZ_ASSERT(!had && s->value == NULL && hsm_share_set_has(set, s->index));
	FUZZ_ASSERT(hsm_share_set_have(set) == have + 1);
	hsm_share dup;
	memset(&dup, 0, sizeof(dup));
	FUZZ_ASSERT(hsm_ok(hsm_share_decode(file.p, file.n, &dup)));
	FUZZ_EXPECT_ERR(hsm_share_set_add(set, &dup), HSM_ERR_SHARE_DUPLICATE);
	hsm_share_clear(&dup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	bool fix = size > 0 && data[0] == '!';
	uint8_t *copy = malloc(size > 0 ? size : 1);
	if (copy == NULL)
		return 0;
	if (size > 0)
		memcpy(copy, data, size);
	fuzz_in in = {copy + fix, size - fix};
	hsm_share_set *set = NULL, *other = NULL;
	hsm_secret *first_value = NULL;
	unsigned threshold = 0;
	for (int i = 0; i < MAX_FILES && in.n > 0; i++) {
		fuzz_in file = fuzz_field(&in, 0);
		if (fix)
			fix_checksum((uint8_t *)(uintptr_t)file.p, file.n);
		hsm_share s;
		memset(&s, 0, sizeof(s));
		if (!decode_one(file, &s))
			continue;
		if (set == NULL) {
			FUZZ_ASSERT(hsm_ok(hsm_share_set_new(s.store_id, s.set_id, s.threshold, s.count,
			                                     &set)));
			FUZZ_ASSERT(hsm_ok(hsm_share_set_new(other_store, other_set_id, s.threshold,
			                                     s.count, &other)));
			FUZZ_ASSERT(hsm_ok(hsm_secret_dup(s.value, &first_value)));
			threshold = s.threshold;
		}
		offer(set, other, &s, file);
		hsm_share_clear(&s);
	}
	if (set != NULL) {
		hsm_secret *dmk = NULL;
		hsm_result r = hsm_share_set_combine(set, &dmk);
		if (hsm_share_set_needed(set) == 0) {
			FUZZ_ASSERT(hsm_ok(r) && hsm_secret_len(dmk) == HSM_SHARE_VALUE_LEN);
			if (threshold == 1)
				FUZZ_ASSERT(memcmp(hsm_secret_bytes(dmk), hsm_secret_bytes(first_value),
				                   HSM_SHARE_VALUE_LEN) == 0);
		} else {
			FUZZ_ASSERT(r.err == HSM_ERR_QUORUM_REQUIRED && dmk == NULL);
		}
		hsm_secret_free(dmk);
	}
	hsm_secret_free(first_value);
	hsm_share_set_free(set);
	hsm_share_set_free(other);
	free(copy);
	return 0;
}
