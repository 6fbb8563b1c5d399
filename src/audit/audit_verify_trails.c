/*
 * audit_verify_trails.c - whether a set of audit files holds more than one
 * trail.
 *
 * Each node writes a trail of its own, numbered from seq 1, and every record
 * names the node that wrote it ("node"; hsmctl's offline commands on a data
 * directory write into that directory's trail as "hsmctl-<host>").  Files
 * of two nodes' trails given to one verification are no log hsmd wrote:
 * they hold two records of each seq both trails reached (and two files of
 * each name), which read as one log look modified.  A verification that
 * failed looks here before it says so: files that share no node id, whose
 * records claim the same seqs, are two trails, and the caller is told to
 * verify each alone.  Files that share a node id are one trail however they
 * differ, so a file of a trail changed in place, or its copy changed, is
 * still reported as modified; a trail whose node was renamed holds no seq
 * twice, so is never taken for two.
 *
 * Only on the failure path: a set of files that verifies is one trail, and
 * pays nothing for this second reading.  The records are read with the
 * verifier's own reader (malformed lines name no node and are skipped).
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
	uint64_t first_seq, last_seq; /* both 0: no record */
	size_t group;                 /* union-find parent */
} file_ids;

/* The node ids and seq range of one file's records; false if it could not be read. */
static bool read_ids(const char *path, vreader *r, file_ids *f)
{
	memset(r, 0, sizeof(*r));
	r->names = &path;
	r->n_files = 1;
	for (const ventry *e; (e = vreader_peek(r, 0)) != NULL; vreader_pop(r)) {
		if (e->kind != VE_RECORD)
			continue;
		if (f->first_seq == 0 || e->seq < f->first_seq)
			f->first_seq = e->seq;
		if (e->seq > f->last_seq)
			f->last_seq = e->seq;
		bool known = false;
		for (size_t i = 0; i < f->n_nodes && !known; i++)
			known = strcmp(f->node[i], e->node) == 0;
		if (!known && f->n_nodes < FILE_NODES_MAX)
			memcpy(f->node[f->n_nodes++], e->node, sizeof(f->node[0]));
	}
	bool ok = hsm_ok(r->io);
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

/* One trail: its files' seq range, and where to name it from. */
typedef struct trail {
	size_t root, files;
	uint64_t first_seq, last_seq;
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
		if (f[i].first_seq == 0)
			continue;
		size_t root = root_of(f, i), k = 0;
		while (k < n_trails && t[k].root != root)
			k++;
		if (k == n_trails)
			t[n_trails++] = (trail){root, 0, f[i].first_seq, f[i].last_seq, false};
		t[k].files++;
		t[k].first_seq = f[i].first_seq < t[k].first_seq ? f[i].first_seq : t[k].first_seq;
		t[k].last_seq = f[i].last_seq > t[k].last_seq ? f[i].last_seq : t[k].last_seq;
		size_t d = dir_len(paths[i]);
		t[k].several_dirs |=
		    d != dir_len(paths[root]) || strncmp(paths[i], paths[root], d) != 0;
	}
	return n_trails;
}

bool audit_verify_several_trails(const char *const *paths, size_t n,
                                 hsm_audit_verify_report *rep)
{
	if (n < 2)
		return false;
	file_ids *f = calloc(n, sizeof(*f));
	trail *t = calloc(n, sizeof(*t));
	vreader *r = calloc(1, sizeof(*r));
	bool several = false, read = f != NULL && t != NULL && r != NULL;
	for (size_t i = 0; i < n && read; i++) {
		f[i].group = i;
		read = read_ids(paths[i], r, &f[i]);
	}
	size_t n_trails = read ? group_trails(f, paths, n, t) : 0;
	/* Two trails that claim the same seqs: one log holds each seq once. */
	for (size_t i = 0; i < n_trails && !several; i++)
		for (size_t j = i + 1; j < n_trails && !several; j++)
			several = t[i].first_seq <= t[j].last_seq && t[j].first_seq <= t[i].last_seq;
	if (several) {
		memset(rep, 0, sizeof(*rep));
		rep->problem = HSM_AUDIT_SEVERAL_TRAILS;
		rep->files = n;
		hsm_sb b;
		hsm_sb_init(&b, rep->detail, sizeof(rep->detail));
		hsm_sb_add(&b, "the files given hold ");
		hsm_sb_u64(&b, n_trails);
		hsm_sb_add(&b, " audit trails (each node writes its own, numbered from seq 1), "
		               "which do not verify as one: verify each trail alone: ");
		for (size_t i = 0; i < n_trails && i < TRAILS_NAMED_MAX; i++) {
			hsm_sb_add(&b, i > 0 ? ", " : "");
			name_trail(&t[i], f, paths, &b);
		}
		hsm_sb_add(&b, n_trails > TRAILS_NAMED_MAX ? ", ..." : "");
	}
	free(r);
	free(t);
	free(f);
	return several;
}
