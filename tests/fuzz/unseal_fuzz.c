/*
 * unseal_fuzz.c - unsealing with custodian share files
 * (hsm_keystore_unseal in keystore/keystore.h), which hsmd's admin API
 * accepts before any authentication (HsmdAdmin.Unseal).
 *
 * Set-up, once per process: a store in a fresh temporary directory whose
 * keystore is initialized 2-of-3 (production parameters, not dev), then
 * sealed.  Its three share files are the raw material of every input.
 *
 * Input: up to 8 share submissions, each
 *   byte       which: 0-2 one of the store's share files, 3 raw bytes
 *   byte       bit 0: rewrite the check line to the right checksum afterwards
 *   2 bytes    big-endian length n, then n bytes: XORed onto the chosen share
 *              file (longer masks append), or the raw file itself
 * The node is sealed again after each input.  HSM_FUZZ_VERBOSE=1 prints
 * each submission's outcome.
 *
 * Properties: every refusal is one of the unseal errors (invalid,
 * mismatched or duplicate share, wrong master key, already unsealed), and
 * "already unsealed" exactly when it was; progress never claims more than
 * the threshold, and the node is unsealed exactly when progress says so and
 * exactly when two distinct shares were accepted; an unmodified share file
 * of an index not yet given is accepted (unless a forged share given before
 * spoils the key: then the key check refuses, and the store's own shares
 * alone never do).
 */
#include <ftw.h>
#include <unistd.h>

#include "fuzz.h"

#include "common/log.h"
#include "crypto/crypto.h"
#include "keystore/keystore.h"
#include "keystore/share.h"

#define SUBMISSIONS 8

static struct {
	char dir[64];
	hsm_store *store;
	hsm_keystore *ks;
	hsm_buf shares[3];
} g;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void cleanup(void)
{
	hsm_keystore_free(g.ks);
	hsm_store_close(g.store);
	for (int i = 0; i < 3; i++)
		hsm_buf_free(&g.shares[i]);
	if (g.dir[0] != '\0')
		(void)nftw(g.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void init_once(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
	FUZZ_ASSERT(snprintf(g.dir, sizeof(g.dir), "%s/hsm-fuzz-unseal-XXXXXX", tmp) <
	            (int)sizeof(g.dir));
	FUZZ_ASSERT(mkdtemp(g.dir) != NULL);
	atexit(cleanup);
	hsm_log_set_level(HSM_LOG_ERROR);
	FUZZ_ASSERT(hsm_ok(hsm_crypto_init()));
	FUZZ_ASSERT(hsm_ok(hsm_store_open(g.dir, &g.store)));
	FUZZ_ASSERT(hsm_ok(hsm_keystore_new(g.store, 0, &g.ks)));
	for (int i = 0; i < 3; i++)
		hsm_buf_init_secure(&g.shares[i]);
	FUZZ_ASSERT(hsm_ok(hsm_keystore_init(g.ks, 2, 3, NULL, false, g.shares)));
	hsm_keystore_seal(g.ks);
	FUZZ_ASSERT(hsm_keystore_state(g.ks) == HSM_NODE_SEALED);
}

/* Rewrites the 16 hex digits after the last "check " line start to the file's checksum. */
static void fix_checksum(hsm_buf *f)
{
	static const char tag[] = "check ";
	static const char hex[] = "0123456789abcdef";
	const size_t tl = sizeof(tag) - 1;
	size_t at = f->len;
	for (size_t i = 0; i + tl <= f->len; i++)
		if ((i == 0 || f->data[i - 1] == '\n') && memcmp(f->data + i, tag, tl) == 0)
			at = i;
	if (at == f->len || f->len - at - tl < 16)
		return;
	uint8_t md[HSM_SHA256_LEN];
	FUZZ_ASSERT(hsm_ok(hsm_sha256(f->data, at, md)));
	for (size_t i = 0; i < 8; i++) {
		f->data[at + tl + 2 * i] = (uint8_t)hex[md[i] >> 4];
		f->data[at + tl + 2 * i + 1] = (uint8_t)hex[md[i] & 15];
	}
}

/* Builds one submission into file; returns the original share's index or -1. */
static int build(fuzz_in *in, hsm_buf *file)
{
	int which = fuzz_u8(in) % 4;
	bool fix = fuzz_u8(in) & 1;
	size_t n = (size_t)fuzz_u8(in) << 8;
	n |= fuzz_u8(in);
	if (n > in->n)
		n = in->n;
	if (which == 3) {
		FUZZ_ASSERT(hsm_ok(hsm_buf_set(file, in->p, n)));
	} else {
		const hsm_buf *s = &g.shares[which];
		FUZZ_ASSERT(hsm_ok(hsm_buf_set(file, s->data, s->len)));
		for (size_t i = 0; i < n; i++) {
			if (i < file->len)
				file->data[i] ^= in->p[i];
			else
				FUZZ_ASSERT(hsm_ok(hsm_buf_put_u8(file, in->p[i])));
		}
	}
	in->p += n;
	in->n -= n;
	if (fix)
		fix_checksum(file);
	if (which == 3 || file->len != g.shares[which].len ||
	    memcmp(file->data, g.shares[which].data, file->len) != 0)
		return -1;
	return which;
}

/* What the keystore is collecting, as far as this input knows. */
typedef struct pending {
	bool taken[3];  /* share indices 1..3 held */
	unsigned held;
	bool tainted;   /* holds a file that is not one of the store's own */
} pending;

static void check_one(pending *pd, const hsm_buf *file, int orig)
{
	bool was_unsealed = hsm_keystore_state(g.ks) == HSM_NODE_UNSEALED;
	hsm_unseal_progress p;
	memset(&p, 0, sizeof(p));
	hsm_result r = hsm_keystore_unseal(g.ks, file->data, file->len, &p);
	if (getenv("HSM_FUZZ_VERBOSE") != NULL)
		fprintf(stderr, "share %d: %s, %u of %u%s\n", orig, hsm_err_code_name(r.err), p.have,
		        p.threshold, p.unsealed ? ", unsealed" : "");
	if (hsm_failed(r))
		FUZZ_EXPECT_ERR(r, HSM_ERR_SHARE_INVALID, HSM_ERR_SHARE_MISMATCH,
		                HSM_ERR_SHARE_DUPLICATE, HSM_ERR_WRONG_MASTER_KEY, HSM_ERR_CONFLICT);
	FUZZ_ASSERT((r.err == HSM_ERR_CONFLICT) == was_unsealed);
	FUZZ_ASSERT(p.threshold == 2 && p.have <= 2);
	FUZZ_ASSERT(p.unsealed == (hsm_keystore_state(g.ks) == HSM_NODE_UNSEALED));
	/* The store's own shares never rebuild a wrong key. */
	if (r.err == HSM_ERR_WRONG_MASTER_KEY)
		FUZZ_ASSERT(pd->tainted || orig < 0);
	if (orig >= 0 && !was_unsealed && !pd->taken[orig])
		FUZZ_ASSERT(hsm_ok(r) || (pd->tainted && r.err == HSM_ERR_WRONG_MASTER_KEY));
	if (hsm_ok(r)) {
		hsm_share s;
		memset(&s, 0, sizeof(s));
		FUZZ_ASSERT(hsm_ok(hsm_share_decode(file->data, file->len, &s)));
		FUZZ_ASSERT(s.index >= 1 && s.index <= 3 && !pd->taken[s.index - 1]);
		pd->taken[s.index - 1] = true;
		pd->held++;
		pd->tainted = pd->tainted || orig < 0;
		hsm_share_clear(&s);
		FUZZ_ASSERT(p.unsealed == (pd->held == 2));
	}
	if (p.unsealed || r.err == HSM_ERR_WRONG_MASTER_KEY)
		memset(pd, 0, sizeof(*pd));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	fuzz_in in = {data, size};
	pending pd;
	memset(&pd, 0, sizeof(pd));
	for (int i = 0; i < SUBMISSIONS && in.n > 0; i++) {
		hsm_buf file;
		hsm_buf_init_secure(&file);
		int orig = build(&in, &file);
		check_one(&pd, &file, orig);
		hsm_buf_free(&file);
	}
	hsm_keystore_seal(g.ks);
	return 0;
}
