/*
 * audit_verify_trails.c - whether a set of audit files that failed to verify
 * as one log holds more than one trail, each of which verifies alone.
 *
 * Each node writes a trail of its own, numbered from seq 1, and every record
 * names the node that wrote it ("node"; hsmctl's offline commands on a data
 * directory write into that directory's trail as "hsmctl-<host>-<hash of the
 * directory>").  Files of two nodes' trails given to one verification are no
 * log hsmd wrote:
 * they hold two records of each seq both trails reached (and two files of
 * each name), which read as one log look modified.
 *
 * A verification that failed looks here before it says so.  The files are
 * grouped by node id: files that share one are one trail however they
 * differ.  The files count as several trails only when a seq really appears
 * in two groups (two different records claiming it, from groups with no node
 * in common); groups whose seq ranges merely overlap do not, so a trail with
 * a record cut from one file whose node was also rewritten is still the one
 * trail it was, and its verdict stands.  Even then no tampering verdict is
 * ever traded for the usage error: each group is verified on its own, and
 * the first group that fails gives the report (INVALID, that group's
 * verdict).  Only when every group verifies alone is the answer
 * HSM_AUDIT_SEVERAL_TRAILS, naming the trails so each can be verified alone.
 *
 * An anchor names one record of one trail.  It is checked on the trail whose
 * files hold that record (it would fail on any other, all of whose records
 * differ from it), and the others are verified without it.  When no trail
 * holds it and every trail verifies, the anchor itself fails: that is what
 * a trail cut back past it, or rewritten at it, looks like, so the answer is
 * INVALID (no file named), never the usage error.
 * A file that holds no record names no node: it is verified with every
 * group, so what it holds is judged whichever trail it was part of.
 *
 * Only on the failure path: a set of files that verifies is one trail, and
 * pays nothing for this second reading.  The records are read with the
 * verifier's own reader (malformed lines name no node and are skipped, and
 * are found again when the group is verified).
 */
#include <stdlib.h>
#include <string.h>

#include "audit/audit_verify_internal.h"
#include "common/util.h"

/* Node ids kept per file: a trail's files name one or two (the node's, hsmctl's). */
#define FILE_NODES_MAX 8
/* Trails named in the message (the count says if there are more). */
#define TRAILS_NAMED_MAX 4

typedef struct file_ids {
	char node[FILE_NODES_MAX][HSM_AUDIT_NAME_MAX + 1];
	size_t n_nodes;
	uint64_t records;
	bool holds_anchor;            /* the record the anchor names is here */
	size_t group;                 /* union-find parent */
} file_ids;

/*
 * Seqs of one file's records that follow one another (lo..hi): what a
 * collision is found from.  A trail's file is one run however many records
 * it holds, so memory follows the files, not the records.
 */
typedef struct seq_run {
	uint64_t lo, hi;
	size_t file;
} seq_run;

typedef struct seq_list {
	seq_run *v;
	size_t n, cap;
} seq_list;

static bool seq_add(seq_list *l, uint64_t seq, size_t file)
{
	if (l->n > 0 && l->v[l->n - 1].file == file && l->v[l->n - 1].hi != UINT64_MAX &&
	    l->v[l->n - 1].hi + 1 == seq) {
		l->v[l->n - 1].hi = seq;
		return true;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		seq_run *v = cap > SIZE_MAX / sizeof(*v) ? NULL : realloc(l->v, cap * sizeof(*v));
		if (v == NULL)
			return false;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (seq_run){seq, seq, file};
	return true;
}

/* The node ids and seqs of file i's records; false if it could not be read. */
static bool read_ids(const char *path, size_t i, const hsm_audit_verify_options *o, vreader *r,
                     file_ids *f, seq_list *seqs)
{
	bool ok = true;
	memset(r, 0, sizeof(*r));
	r->names = &path;
	r->n_files = 1;
	for (const ventry *e; ok && (e = vreader_peek(r, 0)) != NULL; vreader_pop(r)) {
		if (e->kind != VE_RECORD)
			continue;
		f->records++;
		ok = seq_add(seqs, e->seq, i);
		f->holds_anchor |= o->anchor_seq != 0 && e->seq == o->anchor_seq &&
		                   hsm_ct_equal(e->hash, o->anchor_hash, AUDIT_HASH_LEN);
		bool known = false;
		for (size_t k = 0; k < f->n_nodes && !known; k++)
			known = strcmp(f->node[k], e->node) == 0;
		if (!known && f->n_nodes < FILE_NODES_MAX)
			memcpy(f->node[f->n_nodes++], e->node, sizeof(f->node[0]));
	}
	ok = ok && hsm_ok(r->io);
	hsm_buf_free(&r->owned);
	return ok;
}

static size_t root_of(file_ids *f, size_t i)
{
	while (f[i].group != i)
		i = f[i].group = f[f[i].group].group;
	return i;
}

static bool share_a_node(const file_ids *a, const file_ids *b)
{
	for (size_t i = 0; i < a->n_nodes; i++)
		for (size_t j = 0; j < b->n_nodes; j++)
			if (strcmp(a->node[i], b->node[j]) == 0)
				return true;
	return false;
}

/* One trail: its files, and where to name it from. */
typedef struct trail {
	size_t root, files;
	bool several_dirs;
} trail;

static size_t dir_len(const char *path)
{
	const char *slash = strrchr(path, '/');
	return slash == NULL ? 0 : (size_t)(slash - path);
}

/* "hsm-a's (3 files in /var/lib/hsmd/audit)" */
static void name_trail(const trail *t, const file_ids *f, const char *const *paths,
                       hsm_sb *b)
{
	const file_ids *first = &f[t->root];
	for (size_t i = 0; i < first->n_nodes && i < 2; i++) {
		hsm_sb_add(b, i > 0 ? "+" : "");
		hsm_sb_add(b, first->node[i]);
	}
	hsm_sb_add(b, "'s (");
	hsm_sb_u64(b, t->files);
	hsm_sb_add(b, t->files == 1 ? " file in " : " files in ");
	size_t n = dir_len(paths[t->root]);
	char dir[HSM_AUDIT_PATH_MAX];
	snprintf(dir, sizeof(dir), "%.*s", (int)(n < 160 ? n : 160), n > 0 ? paths[t->root] : ".");
	hsm_sb_add(b, n > 0 ? dir : ".");
	hsm_sb_add(b, t->several_dirs ? " and others)" : ")");
}

/* Groups the files into trails; returns how many hold records, in t (of n slots). */
static size_t group_trails(file_ids *f, const char *const *paths, size_t n, trail *t)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			if (root_of(f, i) != root_of(f, j) && share_a_node(&f[i], &f[j]))
				f[root_of(f, j)].group = root_of(f, i);
	size_t n_trails = 0;
	for (size_t i = 0; i < n; i++) {
		if (f[i].records == 0)
			continue;
		size_t root = root_of(f, i), k = 0;
		while (k < n_trails && t[k].root != root)
			k++;
		if (k == n_trails)
			t[n_trails++] = (trail){root, 0, false};
		t[k].files++;
		size_t d = dir_len(paths[i]);
		t[k].several_dirs |=
		    d != dir_len(paths[root]) || strncmp(paths[i], paths[root], d) != 0;
	}
	return n_trails;
}

static int cmp_seq(const void *a, const void *b)
{
	uint64_t x = ((const seq_run *)a)->lo, y = ((const seq_run *)b)->lo;
	return x < y ? -1 : x > y;
}

/*
 * Whether a seq appears in two groups: two records, of no node in common,
 * claim it; i.e. runs of two groups overlap.  Runs in order of their first
 * seq, against the run reaching furthest so far (top) and the one reaching
 * furthest among the other groups' (other).
 */
static bool seq_in_two_groups(file_ids *f, seq_list *seqs)
{
	qsort(seqs->v, seqs->n, sizeof(*seqs->v), cmp_seq);
	const seq_run *top = NULL, *other = NULL;
	size_t top_root = 0;
	for (size_t i = 0; i < seqs->n; i++) {
		const seq_run *x = &seqs->v[i];
		size_t root = root_of(f, x->file);
		const seq_run *rival = top != NULL && root != top_root ? top : other;
		if (rival != NULL && rival->hi >= x->lo)
			return true;
		/* A run of another group that reaches no further than top overlaps it (it starts
		 * at or after top's start): returned above.  So only a new top changes anything. */
		if (top == NULL || x->hi > top->hi) {
			if (top != NULL && root != top_root)
				other = top;
			top = x;
			top_root = root;
		}
	}
	return false;
}

/* The trail whose files hold the record the anchor names, or n_trails for none. */
static size_t anchor_trail(file_ids *f, size_t n, const trail *t, size_t n_trails)
{
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; f[i].holds_anchor && k < n_trails; k++)
			if (root_of(f, i) == t[k].root)
				return k;
	return n_trails;
}

/*
 * Verifies each trail alone (with the files that name no node); the first
 * that fails gives rep its verdict and *all_valid is false.  The anchor is
 * one record of one trail: it is checked on the trail holding that record
 * (trail `anchored`) and on no other, whose own records would all differ
 * from it.
 */
static hsm_result verify_each(file_ids *f, const char *const *paths, size_t n,
                              const trail *t, size_t n_trails, size_t anchored,
                              audit_verify_group_fn verify,
                              const hsm_audit_verify_options *opts,
                              hsm_audit_verify_report *rep, bool *all_valid)
{
	hsm_result res = HSM_SUCCESS;
	const char **group = calloc(n, sizeof(*group));
	hsm_audit_verify_report *alone = calloc(1, sizeof(*alone));
	hsm_audit_verify_options unanchored = *opts;
	unanchored.anchor_seq = 0;
	bool valid = true;
	*all_valid = false;
	HSM_CHECK(group != NULL && alone != NULL, HSM_ERR_NOMEM, "out of memory");
	for (size_t k = 0; k < n_trails && valid; k++) {
		size_t m = 0;
		for (size_t i = 0; i < n; i++)
			if (f[i].records == 0 || root_of(f, i) == t[k].root)
				group[m++] = paths[i];
		HSM_TRY(verify(group, m, k == anchored ? opts : &unanchored, alone));
		valid = alone->valid;
		if (!valid)
			*rep = *alone;
	}
	*all_valid = valid;
out:
	free(alone);
	free(group);
	return res;
}

static void name_trails(const file_ids *f, const char *const *paths, const trail *t,
                        size_t n_trails, hsm_sb *b)
{
	for (size_t i = 0; i < n_trails && i < TRAILS_NAMED_MAX; i++) {
		hsm_sb_add(b, i > 0 ? ", " : "");
		name_trail(&t[i], f, paths, b);
	}
	hsm_sb_add(b, n_trails > TRAILS_NAMED_MAX ? ", ..." : "");
}

/* Every trail verifies alone: the usage error, naming them (and the anchor's). */
static void say_several(const file_ids *f, const char *const *paths, size_t n,
                        const trail *t, size_t n_trails, size_t anchored,
                        hsm_audit_verify_report *rep)
{
	memset(rep, 0, sizeof(*rep));
	rep->problem = HSM_AUDIT_SEVERAL_TRAILS;
	rep->files = n;
	hsm_sb b;
	hsm_sb_init(&b, rep->detail, sizeof(rep->detail));
	hsm_sb_add(&b, "the files given hold ");
	hsm_sb_u64(&b, n_trails);
	hsm_sb_add(&b, " audit trails (each node writes its own, numbered from seq 1), "
	               "each of which verifies alone but not as one log with the others: "
	               "verify each trail alone");
	if (anchored < n_trails) {
		hsm_sb_add(&b, ", and give the anchor only with its own trail, ");
		name_trail(&t[anchored], f, paths, &b);
	}
	hsm_sb_add(&b, ": ");
	name_trails(f, paths, t, n_trails, &b);
}

/*
 * Every trail verifies alone, but none holds the record the anchor names: the
 * trail it was taken from was rewritten or cut short (what the anchor is
 * there to show), or is not among the files.  Either way the anchor fails,
 * and no file can be named as the one at fault.
 */
static void say_anchor_unheld(const file_ids *f, const char *const *paths, size_t n,
                              const trail *t, size_t n_trails,
                              const hsm_audit_verify_options *opts,
                              hsm_audit_verify_report *rep)
{
	memset(rep, 0, sizeof(*rep));
	rep->problem = HSM_AUDIT_MODIFIED;
	rep->files = n;
	rep->seq = opts->anchor_seq;
	hsm_sb b;
	hsm_sb_init(&b, rep->detail, sizeof(rep->detail));
	hsm_sb_add(&b, "the anchor names seq ");
	hsm_sb_u64(&b, opts->anchor_seq);
	hsm_sb_add(&b, ", a record none of the ");
	hsm_sb_u64(&b, n_trails);
	hsm_sb_add(&b, " audit trails given holds: the trail it was taken from was rewritten "
	               "or cut short, or is not among the files; verify each trail alone, the "
	               "anchor only with its own: ");
	name_trails(f, paths, t, n_trails, &b);
}

hsm_result audit_verify_several_trails(const char *const *paths, size_t n,
                                       audit_verify_group_fn verify,
                                       const hsm_audit_verify_options *opts,
                                       hsm_audit_verify_report *rep)
{
	if (n < 2)
		return HSM_SUCCESS;
	hsm_result res = HSM_SUCCESS;
	file_ids *f = calloc(n, sizeof(*f));
	trail *t = calloc(n, sizeof(*t));
	vreader *r = calloc(1, sizeof(*r));
	seq_list seqs = {0};
	bool read = f != NULL && t != NULL && r != NULL;
	for (size_t i = 0; i < n && read; i++) {
		f[i].group = i;
		read = read_ids(paths[i], i, opts, r, &f[i], &seqs);
	}
	/* Unread, or one trail: the verdict as one log stands. */
	size_t n_trails = read ? group_trails(f, paths, n, t) : 0;
	if (n_trails >= 2 && seq_in_two_groups(f, &seqs)) {
		bool all_valid = false;
		size_t anchored = anchor_trail(f, n, t, n_trails);
		res = verify_each(f, paths, n, t, n_trails, anchored, verify, opts, rep, &all_valid);
		if (hsm_ok(res) && all_valid && opts->anchor_seq != 0 && anchored == n_trails)
			say_anchor_unheld(f, paths, n, t, n_trails, opts, rep);
		else if (hsm_ok(res) && all_valid)
			say_several(f, paths, n, t, n_trails, anchored, rep);
	}
	free(seqs.v);
	free(r);
	free(t);
	free(f);
	return res;
}
