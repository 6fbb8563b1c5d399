/*
 * cmd_audit.c - hsmctl audit verify: offline verification of audit log files
 * (chain, sequence, checkpoint signatures) for auditors.  Needs no store and
 * no running service, only the files and the audit public key.
 */
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "common/buf.h"
#include "common/encoding.h"
#include "common/util.h"
#include "hsmctl/hsmctl.h"

int cmd_audit_verify(int argc, char **argv);

#define PUBKEY_MAX 16384

static void print_summary(const hsm_audit_verify_report *r)
{
	printf("files: %zu\nrecords: %llu", r->files, (unsigned long long)r->records);
	if (r->records > 0)
		printf(" (seq %llu to %llu)", (unsigned long long)r->first_seq,
		       (unsigned long long)r->last_seq);
	printf("\ncheckpoints: %llu verified, %llu signed but not checked (no --pubkey), %llu "
	       "unsigned\n",
	       (unsigned long long)r->checkpoints_verified, (unsigned long long)r->checkpoints_unchecked,
	       (unsigned long long)r->checkpoints_unsigned);
	if (r->last_verified_seq != 0)
		printf("covered by a verified signature: up to seq %llu (%llu records after it)\n",
		       (unsigned long long)r->last_verified_seq, (unsigned long long)r->uncovered);
	else
		printf("covered by a verified signature: none\n");
	if (r->records > 0) {
		char hex[2 * sizeof(r->last_hash) + 1];
		hsm_hex_encode_str(hex, r->last_hash, sizeof(r->last_hash));
		printf("head: %llu:%s (keep it: --anchor with it shows records later cut from the "
		       "end)\n",
		       (unsigned long long)r->last_seq, hex);
	}
	if (r->older_format_through != 0)
		printf("note: records %llu to %llu were written by an older hsmd, whose checkpoints "
		       "are not all signed (neither their AuditLogOpened events nor their checkpoints "
		       "declare trail_format; docs/audit.md)\n",
		       (unsigned long long)r->first_seq, (unsigned long long)r->older_format_through);
	size_t shown = sizeof(r->unsigned_at_write) / sizeof(r->unsigned_at_write[0]);
	for (size_t i = 0; i < r->n_unsigned_at_write && i < shown; i++)
		printf("unsigned at write: records %llu to %llu were never signed by the run that "
		       "wrote them (it crashed or stayed sealed before its next signed checkpoint); "
		       "the run that opened at seq %llu found them%s, and its signatures cover them "
		       "only as it found them\n",
		       (unsigned long long)r->unsigned_at_write[i].first,
		       (unsigned long long)r->unsigned_at_write[i].last,
		       (unsigned long long)r->unsigned_at_write[i].opened_seq,
		       r->unsigned_at_write[i].stated ? " (its AuditLogOpened names them, with their "
		                                        "head)"
		                                      : "");
	if (r->n_unsigned_at_write > shown)
		printf("unsigned at write: %zu more runs like these\n", r->n_unsigned_at_write - shown);
	/* Every loss recorded, as the verdict names every range still missing. */
	size_t lost_shown = sizeof(r->lost) / sizeof(r->lost[0]);
	for (size_t i = 0; i < r->n_lost && i < lost_shown; i++) {
		printf("note: hsmd recorded records %llu to %llu as lost with its live file "
		       "(AuditRecordsLost, seq %llu)",
		       (unsigned long long)r->lost[i].first, (unsigned long long)r->lost[i].last,
		       (unsigned long long)r->lost[i].seq);
		if (r->lost[i].present && r->lost[i].again_last != 0)
			printf(": they are all here (the file was put back); records %llu to %llu, not "
			       "yet synced when it went, are in it and again at the start of the next "
			       "file, the same bytes: counted once, and the next file goes on from them",
			       (unsigned long long)r->lost[i].again_first,
			       (unsigned long long)r->lost[i].again_last);
		else if (r->lost[i].present)
			printf(": they are all here (the file was put back) and the next file chains to "
			       "them");
		printf("\n");
	}
	if (r->n_lost > lost_shown)
		printf("note: hsmd recorded %zu more losses like these\n", r->n_lost - lost_shown);
	/* Bytes cut from the live file are no part of the chain: a note, never the verdict. */
	size_t foreign_shown = sizeof(r->foreign) / sizeof(r->foreign[0]);
	for (size_t i = 0; i < r->n_foreign && i < foreign_shown; i++)
		printf("note: hsmd found %llu bytes in its live file %s, from offset %llu, that were "
		       "not its records as it wrote them, and cut them off (AuditForeignBytes, seq "
		       "%llu): something else wrote into the trail; %llu of them are kept in %s\n",
		       (unsigned long long)r->foreign[i].length,
		       r->foreign[i].file[0] != '\0' ? r->foreign[i].file : "(not named)",
		       (unsigned long long)r->foreign[i].offset, (unsigned long long)r->foreign[i].seq,
		       (unsigned long long)r->foreign[i].saved,
		       r->foreign[i].saved_to[0] != '\0' ? r->foreign[i].saved_to : "(not named)");
	if (r->n_foreign > foreign_shown)
		printf("note: hsmd found foreign bytes %zu more times\n", r->n_foreign - foreign_shown);
	if (r->in_progress_bytes != 0)
		printf("note: the newest file ends with %llu bytes of a line not yet complete, left "
		       "out (--live: a record hsmd is writing; if hsmd is not running, it is a torn "
		       "tail: verify without --live)\n",
		       (unsigned long long)r->in_progress_bytes);
	/* Only a retention checkpoint states that records were deleted by retention (verify
	 * holds any other start past seq 1 as deleted, but for an older hsmd's records). */
	bool by_retention = r->retention_seq != 0 && r->retention_kept_from >= r->first_seq;
	if (r->valid && r->records > 0 && r->first_seq != 1 && by_retention)
		printf("note: the log starts at seq %llu; records before it were deleted by retention "
		       "(the retention checkpoint at seq %llu keeps every record from seq %llu)\n",
		       (unsigned long long)r->first_seq, (unsigned long long)r->retention_seq,
		       (unsigned long long)r->retention_kept_from);
	else if (r->valid && r->records > 0 && r->first_seq != 1 && r->kept_from != 0)
		printf("note: the log starts at seq %llu with records of an older hsmd, whose "
		       "retention stated no floor: earlier records were not given, or were removed "
		       "by that retention\n",
		       (unsigned long long)r->first_seq);
	else if (r->records > 0 && r->first_seq != 1 && r->kept_from == 0)
		printf("note: the log starts at seq %llu; earlier records were not given (or were "
		       "removed by retention: no checkpoint given states what it kept)\n",
		       (unsigned long long)r->first_seq);
	hsmctl_audit_time_warning(r);
}

void hsmctl_audit_time_warning(const hsm_audit_verify_report *r)
{
	if (r->time_backs == 0)
		return;
	printf("WARNING: the records' times go back: %llu record(s) dated more than %lld s before "
	       "an earlier one, the first seq %llu (%s) after seq %llu (%s).  The node's wall "
	       "clock stepped back, or ran ahead "
	       "before it was put right; while it ran ahead, retention may have deleted records "
	       "it took for expired (a retention checkpoint before the step states what it "
	       "kept): check the clock and the copies of the files\n",
	       (unsigned long long)r->time_backs, (long long)(HSM_AUDIT_TIME_BACK_MS / 1000),
	       (unsigned long long)r->time_back_seq, r->time_back_to,
	       (unsigned long long)r->time_back_from_seq, r->time_back_from);
}

/* SEQ:SHA256, as the summary prints the head. */
static bool parse_anchor(const char *s, hsm_audit_verify_options *o)
{
	const char *colon = strchr(s, ':');
	if (colon == NULL || colon == s || (size_t)(colon - s) > 20)
		return false;
	uint64_t seq = 0;
	for (const char *p = s; p < colon; p++) {
		if (*p < '0' || *p > '9' || seq > (UINT64_MAX - 9) / 10)
			return false;
		seq = seq * 10 + (uint64_t)(*p - '0');
	}
	const char *hex = colon + 1;
	if (seq == 0 || hsm_failed(hsm_hex_decode_exact(o->anchor_hash, sizeof(o->anchor_hash), hex,
	                                                strlen(hex), HSM_ERR_VALIDATION)))
		return false;
	o->anchor_seq = seq;
	return true;
}

int cmd_audit_verify(int argc, char **argv)
{
	hsm_audit_verify_options opts = {0};
	hsm_buf pem = {0};
	char **files = NULL;
	size_t n_files = 0;
	hsmctl_seen seen = {0};
	const char *pubkey = NULL;
	int i = 1, rc = 1;
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		bool known = strcmp(argv[i], "--live") == 0 || strcmp(argv[i], "--anchor") == 0 ||
		             strcmp(argv[i], "--pubkey") == 0;
		if (known && hsmctl_once(&seen, "audit verify", argv[i] + 2) != 0) {
			rc = 2;
			goto out;
		}
		if (strcmp(argv[i], "--live") == 0) {
			opts.allow_open_tail = true;
		} else if (strcmp(argv[i], "--anchor") == 0 && i + 1 < argc) {
			if (!parse_anchor(argv[++i], &opts)) {
				rc = hsmctl_usage("audit verify", "--anchor takes SEQ:SHA256, the head an "
				                  "earlier verification printed");
				goto out;
			}
		} else if (strcmp(argv[i], "--pubkey") == 0 && i + 1 < argc) {
			pubkey = argv[++i];
		} else {
			rc = hsmctl_usage("audit verify", "unknown option '%s'", argv[i]);
			goto out;
		}
	}
	if (i >= argc) {
		rc = hsmctl_usage("audit verify", "give the audit files (or their directories) to verify");
		goto out;
	}
	/* Read once every option is known good: a refused command reads nothing. */
	if (pubkey != NULL) {
		if (hsm_failed(hsm_read_file(pubkey, PUBKEY_MAX, &pem)) ||
		    hsm_failed(hsm_buf_terminate(&pem))) {
			rc = hsmctl_fail("audit verify");
			goto out;
		}
		opts.pubkey_pem = (const char *)pem.data;
	}
	hsm_audit_verify_report rep;
	if (hsm_failed(hsm_audit_expand_paths((const char *const *)(argv + i), (size_t)(argc - i),
	                                      &files, &n_files)) ||
	    hsm_failed(hsm_audit_verify_files((const char *const *)files, n_files, &opts, &rep))) {
		rc = hsmctl_fail("audit verify");
		goto out;
	}
	if (rep.problem == HSM_AUDIT_SEVERAL_TRAILS) {
		/* The files asked for are not one log: no verdict, as for any wrong argument. */
		rc = hsmctl_usage("audit verify", "%s", rep.detail);
		goto out;
	}
	print_summary(&rep);
	if (rep.valid) {
		/* Still valid (exit status 0): the chain and signatures hold; the warning is for
		 * a person to look into. */
		printf(rep.time_backs != 0 ? "result: VALID, WITH A WARNING (above)\n"
		                           : "result: VALID\n");
		rc = 0;
	} else {
		if (rep.file[0] == '\0') /* no one file: the anchor is in none of the trails */
			printf("result: INVALID\nthe anchor's record: not in any file given");
		else if (rep.line == 0) /* a whole file */
			printf("result: INVALID\nfirst bad file: %s", rep.file);
		else
			printf("result: INVALID\nfirst bad record: %s line %llu (byte offset %llu)",
			       rep.file, (unsigned long long)rep.line, (unsigned long long)rep.offset);
		if (rep.seq != 0)
			printf(", seq %llu", (unsigned long long)rep.seq);
		printf("\nproblem: %s\n", rep.detail);
		rc = 1;
	}
out:
	hsm_audit_free_paths(files, n_files);
	hsm_buf_free(&pem);
	return rc;
}
