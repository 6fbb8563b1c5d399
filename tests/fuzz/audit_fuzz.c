/*
 * audit_fuzz.c - offline audit log verification (hsm_audit_verify_memory in
 * audit/audit.h): the parser of every line an auditor hands to hsmctl.
 *
 * Input: one options byte (bit 0: allow an open tail; bit 1: check
 * signatures with the seed log's public key below; bit 2: relink the
 * chain), then up to four log files separated by NUL bytes (audit lines
 * never hold one).  Relinking rewrites each line's "prev" to the SHA-256 of
 * the line before it, so that mutated records get past the hash chain to
 * the checks behind it.
 *
 * Properties: verification of data in memory always runs to a verdict
 * (HSM_SUCCESS); the verdict is consistent (valid exactly when no problem
 * is reported; a problem names one of the files given and a line that
 * exists there; counts do not exceed the lines given); and it is
 * deterministic (a second run gives the same verdict).
 */
#include "fuzz.h"

#include "audit/audit.h"
#include "common/encoding.h"
#include "crypto/crypto.h"

#define MAX_FILES 4

/*
 * Public half of the Ed25519 key that signed the checkpoints of
 * corpus/audit_fuzz/ (a throwaway key made for these seeds).
 */
static const char seed_pubkey[] =
#include "audit_fuzz_pubkey.inc"
    ;

static size_t count_lines(const uint8_t *p, size_t n)
{
	size_t lines = 0;
	for (size_t i = 0; i < n; i++)
		lines += p[i] == '\n';
	return lines + (n > 0 && p[n - 1] != '\n');
}

/*
 * Rewrites "prev":"<64 hex>" of every line to the hash of the line before
 * it (*have says whether there was one: the chain runs across files).
 */
static void relink(uint8_t *p, size_t n, uint8_t prev[HSM_SHA256_LEN], bool *have)
{
	static const char tag[] = "\"prev\":\"";
	const size_t tl = sizeof(tag) - 1;
	for (size_t start = 0; start < n;) {
		uint8_t *nl = memchr(p + start, '\n', n - start);
		size_t len = nl != NULL ? (size_t)(nl - (p + start)) : n - start;
		for (size_t i = start; *have && i + tl + 64 <= start + len; i++) {
			if (memcmp(p + i, tag, tl) != 0)
				continue;
			hsm_buf hex = {0};
			FUZZ_ASSERT(hsm_ok(hsm_hex_encode(&hex, prev, HSM_SHA256_LEN)));
			memcpy(p + i + tl, hex.data, 64);
			hsm_buf_free(&hex);
			break;
		}
		FUZZ_ASSERT(hsm_ok(hsm_sha256(p + start, len, prev)));
		*have = true;
		start += len + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size > 0 ? size : 1);
	if (copy == NULL)
		return 0;
	if (size > 0)
		memcpy(copy, data, size);
	fuzz_in in = {copy, size};
	uint8_t flags = fuzz_u8(&in);
	uint8_t prev[HSM_SHA256_LEN];
	bool have_prev = false;
	static const char *const names[MAX_FILES] = {"audit-1.jsonl", "audit-2.jsonl",
	                                             "audit-3.jsonl", "audit-4.jsonl"};
	const uint8_t *files[MAX_FILES];
	size_t lens[MAX_FILES], n = 0, lines = 0;
	while (n < MAX_FILES && in.n > 0) {
		fuzz_in f = fuzz_field(&in, 0);
		if (flags & 4)
			relink((uint8_t *)(uintptr_t)f.p, f.n, prev, &have_prev);
		files[n] = f.p;
		lens[n] = f.n;
		lines += count_lines(f.p, f.n);
		n++;
	}
	hsm_audit_verify_options opts = {.pubkey_pem = flags & 2 ? seed_pubkey : NULL,
	                                 .allow_open_tail = (flags & 1) != 0};
	hsm_audit_verify_report r, again;
	FUZZ_ASSERT(hsm_ok(hsm_audit_verify_memory(names, files, lens, n, &opts, &r)));
	FUZZ_ASSERT(r.valid == (r.problem == HSM_AUDIT_VALID));
	FUZZ_ASSERT(r.records <= lines);
	FUZZ_ASSERT(r.checkpoints_verified + r.checkpoints_unchecked + r.checkpoints_unsigned <=
	            r.records);
	FUZZ_ASSERT(opts.pubkey_pem != NULL || r.checkpoints_verified == 0);
	FUZZ_ASSERT(memchr(r.detail, 0, sizeof(r.detail)) != NULL);
	if (!r.valid && r.file[0] != '\0') {
		size_t i = 0;
		while (i < n && strcmp(r.file, names[i]) != 0)
			i++;
		FUZZ_ASSERT(i < n);
		FUZZ_ASSERT(r.line <= count_lines(files[i], lens[i]) + 1);
		FUZZ_ASSERT(r.offset <= lens[i]);
	}
	FUZZ_ASSERT(hsm_ok(hsm_audit_verify_memory(names, files, lens, n, &opts, &again)));
	FUZZ_ASSERT(again.valid == r.valid && again.problem == r.problem && again.line == r.line &&
	            again.records == r.records && strcmp(again.detail, r.detail) == 0);
	free(copy);
	return 0;
}
