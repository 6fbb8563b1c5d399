/*
 * audit_fuzz.c - offline audit log verification (hsm_audit_verify_memory in
 * audit/audit.h): the parser of every line an auditor hands to hsmctl.
 *
 * Input: one options byte (bit 0: allow an open tail; bit 1: check
 * signatures with the seed log's public key below), then up to four log
 * files separated by NUL bytes (audit lines never hold one).
 *
 * Properties: verification of data in memory always runs to a verdict
 * (HSM_SUCCESS); the verdict is consistent (valid exactly when no problem
 * is reported; a problem names one of the files given and a line that
 * exists there; counts do not exceed the lines given); and it is
 * deterministic (a second run gives the same verdict).
 */
#include "fuzz.h"

#include "audit/audit.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	uint8_t flags = fuzz_u8(&in);
	static const char *const names[MAX_FILES] = {"audit-1.jsonl", "audit-2.jsonl",
	                                             "audit-3.jsonl", "audit-4.jsonl"};
	const uint8_t *files[MAX_FILES];
	size_t lens[MAX_FILES], n = 0, lines = 0;
	while (n < MAX_FILES && in.n > 0) {
		fuzz_in f = fuzz_field(&in, 0);
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
	return 0;
}
