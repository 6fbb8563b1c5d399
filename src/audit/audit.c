/*
 * audit.c - the audit log's public face: open and close, submitting records,
 * health, requests to the writer thread.
 */
#include "audit/audit_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define DEFAULT_FSYNC_MS 10
#define DEFAULT_FSYNC_RECORDS 4096
#define DEFAULT_FSYNC_LAG_MS 50
#define DEFAULT_CHECKPOINT_MS 60000
#define DEFAULT_DEADLINE_MS 1000
#define DEFAULT_RETRY_MS 500
#define DEFAULT_ROTATE_BYTES ((uint64_t)64 << 20)
#define DEFAULT_ROTATE_AGE_MS ((uint64_t)24 * 3600 * 1000)
#define DEFAULT_RETENTION_DAYS 2557
#define DEFAULT_QUEUE 16384

/* Per-thread scratch for formatting a record before it enters the queue. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
	hsm_buf_free(p);
	free(p);
}

static void scratch_init(void)
{
	HSM_ASSERT(pthread_key_create(&scratch_key, scratch_free) == 0);
}

static hsm_buf *thread_scratch(void)
{
	pthread_once(&scratch_once, scratch_init);
	hsm_buf *b = pthread_getspecific(scratch_key);
	if (b == NULL) {
		b = calloc(1, sizeof(*b));
		if (b == NULL)
			return NULL;
		if (pthread_setspecific(scratch_key, b) != 0) {
			free(b);
			return NULL;
		}
	}
	b->len = 0;
	return b;
}

int64_t audit_now_ms(const hsm_audit *a)
{
	return a->cfg.clock_ms ? a->cfg.clock_ms(a->cfg.clock_arg) : hsm_now_ms();
}

/* The elapsed time (hsm_audit_config.elapsed_ms); false when there is none to compare with. */
static bool elapsed_ms(const hsm_audit *a, int64_t *out)
{
	if (a->cfg.elapsed_ms != NULL) {
		*out = a->cfg.elapsed_ms(a->cfg.clock_arg);
		return true;
	}
	if (a->cfg.clock_ms != NULL)
		return false;
	struct timespec ts; /* counts a suspended machine's time too, unlike CLOCK_MONOTONIC */
	clock_gettime(CLOCK_BOOTTIME, &ts);
	*out = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	return true;
}

int64_t audit_clock_ahead_ms(const hsm_audit *a)
{
	int64_t elapsed;
	if (!a->has_elapsed || !elapsed_ms(a, &elapsed))
		return 0;
	return (audit_now_ms(a) - a->wall0_ms) - (elapsed - a->elapsed0_ms);
}

/*
 * The time of the trail's newest record that can be read at open, 0 when
 * there is none: the last time the trail vouches for (audit_retention_now_ms).
 */
static int64_t newest_record_ms(const hsm_audit *a)
{
	char **names = NULL;
	size_t n = 0;
	int64_t t = 0;
	if (hsm_failed(audit_list_files(a->dir, &names, &n)))
		return 0;
	hsm_buf line = {0};
	for (size_t i = n; i-- > 0;) {
		char path[PATH_MAX];
		line.len = 0;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", a->dir, names[i]) < sizeof(path) &&
		    audit_read_last_line(path, &line) && audit_line_time(line.data, line.len, &t))
			break;
		t = 0;
	}
	hsm_buf_free(&line);
	audit_free_list(names, n);
	return t;
}

int64_t audit_retention_now_ms(const hsm_audit *a, int64_t *start_ahead_ms)
{
	int64_t now = audit_now_ms(a), elapsed;
	*start_ahead_ms = 0;
	if (a->trail_newest0_ms == 0 ||
	    a->wall0_ms - a->trail_newest0_ms <= HSM_AUDIT_START_AHEAD_MAX_MS || !a->has_elapsed ||
	    !elapsed_ms(a, &elapsed))
		return now;
	*start_ahead_ms = a->wall0_ms - a->trail_newest0_ms;
	int64_t vouched =
	    a->trail_newest0_ms + HSM_AUDIT_START_AHEAD_MAX_MS + (elapsed - a->elapsed0_ms);
	return vouched < now ? vouched : now;
}

static bool node_id_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > HSM_AUDIT_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static void apply_defaults(hsm_audit_config *c)
{
	if (c->fsync_interval_ms == 0)
		c->fsync_interval_ms = DEFAULT_FSYNC_MS;
	if (c->fsync_max_records == 0)
		c->fsync_max_records = DEFAULT_FSYNC_RECORDS;
	if (c->fsync_max_lag_ms == 0)
		c->fsync_max_lag_ms = DEFAULT_FSYNC_LAG_MS;
	/* No sync runs before N has passed, and records are acknowledged meanwhile: an N
	 * above L would break L's bound (audit.h). */
	if (c->fsync_interval_ms > c->fsync_max_lag_ms)
		c->fsync_interval_ms = c->fsync_max_lag_ms;
	if (c->checkpoint_interval_ms == 0)
		c->checkpoint_interval_ms = DEFAULT_CHECKPOINT_MS;
	if (c->io_deadline_ms == 0)
		c->io_deadline_ms = DEFAULT_DEADLINE_MS;
	if (c->retry_interval_ms == 0)
		c->retry_interval_ms = DEFAULT_RETRY_MS;
	if (c->rotate_bytes == 0)
		c->rotate_bytes = DEFAULT_ROTATE_BYTES;
	if (c->rotate_age_ms == 0)
		c->rotate_age_ms = DEFAULT_ROTATE_AGE_MS;
	if (c->retention_days == 0)
		c->retention_days = DEFAULT_RETENTION_DAYS;
	if (c->queue_capacity == 0)
		c->queue_capacity = DEFAULT_QUEUE;
}

static hsm_result init_sync(hsm_audit *a)
{
	pthread_condattr_t ca;
	HSM_ENSURE(pthread_condattr_init(&ca) == 0, HSM_ERR_INTERNAL, "condattr");
	/* Timed waits use the monotonic clock: wall-clock jumps must not stretch them. */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	bool ok = pthread_mutex_init(&a->mu, NULL) == 0 && pthread_mutex_init(&a->signer_mu, NULL) == 0 &&
	          pthread_cond_init(&a->wake_writer, &ca) == 0 &&
	          pthread_cond_init(&a->wake_waiters, &ca) == 0 &&
	          pthread_cond_init(&a->wake_watchdog, &ca) == 0 &&
	          pthread_cond_init(&a->wake_syncer, &ca) == 0 &&
	          pthread_cond_init(&a->wake_sweeper, &ca) == 0;
	pthread_condattr_destroy(&ca);
	HSM_ENSURE(ok, HSM_ERR_INTERNAL, "cannot create audit locks");
	return HSM_SUCCESS;
}

/* Exclusive lock on the directory: two writers would fork the chain. */
static hsm_result lock_dir(hsm_audit *a)
{
	char path[PATH_MAX];
	HSM_ENSURE((size_t)snprintf(path, sizeof(path), "%s/.lock", a->dir) < sizeof(path),
	           HSM_ERR_VALIDATION, "audit directory path too long");
	a->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	HSM_ENSURE(a->lock_fd >= 0, HSM_ERR_IO, "cannot open the audit lock %s: %s", path,
	           hsm_own_file_error(errno));
	HSM_ENSURE(flock(a->lock_fd, LOCK_EX | LOCK_NB) == 0, HSM_ERR_IO,
	           "audit directory %s is in use by another process", a->dir);
	return HSM_SUCCESS;
}

static hsm_result init_writer(hsm_audit *a, const audit_tail_info *t)
{
	audit_writer *w = &a->w;
	w->fd = -1;
	w->next_seq = t->next_seq;
	memcpy(w->head, t->head, AUDIT_HASH_LEN);
	atomic_store(&a->next_seq_pub, t->next_seq);
	/* What the opening found may be in the page cache only (a killed run's last
	 * writes): durable from the first sync on. */
	atomic_store(&a->durable_seq_pub, 0);
	w->kept_from = t->kept_from;
	w->floor_ckpt = t->floor_ckpt;
	w->floor_origin = t->floor_origin;
	atomic_store(&a->kept_from_pub, t->kept_from);
	w->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	w->md_ctx = EVP_MD_CTX_new();
	HSM_ENSURE(w->sha256 != NULL && w->md_ctx != NULL, HSM_ERR_CRYPTO, "SHA-256 unavailable");
	w->next_checkpoint_ms = audit_now_ms(a) + a->cfg.checkpoint_interval_ms;
	if (!t->needs_new_file) {
		w->fd = open(t->path, O_RDWR | O_CLOEXEC | O_NOFOLLOW); /* read back after a cut */
		HSM_ENSURE(w->fd >= 0, HSM_ERR_IO, "cannot open %s: %s", t->path,
		           hsm_own_file_error(errno));
		off_t end = lseek(w->fd, 0, SEEK_END);
		HSM_ENSURE(end >= 0, HSM_ERR_IO, "cannot seek %s", t->path);
		w->synced_off = (uint64_t)end;
		HSM_GUARD(hsm_strcpy(w->path, sizeof(w->path), t->path));
		w->file_first_seq = t->file_first_seq;
		w->file_opened_ms = t->file_first_ms;
	}
	return HSM_SUCCESS;
}

static hsm_result start(hsm_audit *a, const hsm_audit_config *cfg)
{
	a->cfg = *cfg;
	apply_defaults(&a->cfg);
	a->has_elapsed = elapsed_ms(a, &a->elapsed0_ms);
	a->wall0_ms = audit_now_ms(a);
	a->lock_fd = -1;
	a->w.fd = -1;
	a->sync_fd = -1;
	HSM_GUARD(hsm_strcpy(a->dir, sizeof(a->dir), cfg->dir));
	HSM_GUARD(hsm_strcpy(a->node, sizeof(a->node), cfg->node_id));
	a->cfg.dir = a->dir;
	a->cfg.node_id = a->node;
	if (cfg->copy_dir != NULL && cfg->copy_dir[0] != '\0') {
		HSM_GUARD(hsm_strcpy(a->copy_dir, sizeof(a->copy_dir), cfg->copy_dir));
		HSM_GUARD(hsm_mkdir_p(a->copy_dir));
	}
	a->cfg.copy_dir = a->copy_dir[0] != '\0' ? a->copy_dir : NULL;
	HSM_GUARD(init_sync(a));
	a->cap = a->cfg.queue_capacity;
	a->slots = calloc(a->cap, sizeof(*a->slots));
	HSM_ENSURE(a->slots != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_GUARD(hsm_mkdir_p(a->dir));
	HSM_GUARD(lock_dir(a));
	audit_tail_info tail;
	HSM_GUARD(audit_tail_scan(a, &tail));
	a->trail_newest0_ms = newest_record_ms(a);
	HSM_GUARD(init_writer(a, &tail));
	if (a->cfg.syslog)
		HSM_GUARD(audit_syslog_start(a->cfg.syslog_path, &a->syslog));
	atomic_store(&a->healthy, true);
	/* The writer's first act is to note how the log was found (open event). */
	a->opened = tail;
	a->req_result = HSM_SUCCESS;
	HSM_ENSURE(pthread_create(&a->watchdog_thread, NULL, audit_watchdog_main, a) == 0,
	           HSM_ERR_INTERNAL, "cannot start the audit watchdog");
	bool syncer = pthread_create(&a->syncer_thread, NULL, audit_syncer_main, a) == 0;
	bool sweeper = syncer && pthread_create(&a->sweeper_thread, NULL, audit_sweeper_main, a) == 0;
	if (!sweeper || pthread_create(&a->writer_thread, NULL, audit_writer_main, a) != 0) {
		pthread_mutex_lock(&a->mu);
		a->watchdog_stop = a->syncer_stop = a->sweeper_stop = true;
		pthread_cond_signal(&a->wake_watchdog);
		pthread_cond_signal(&a->wake_syncer);
		pthread_cond_signal(&a->wake_sweeper);
		pthread_mutex_unlock(&a->mu);
		pthread_join(a->watchdog_thread, NULL);
		if (syncer)
			pthread_join(a->syncer_thread, NULL);
		if (sweeper)
			pthread_join(a->sweeper_thread, NULL);
		return HSM_FAIL(HSM_ERR_INTERNAL, "cannot start the audit writer");
	}
	return HSM_SUCCESS;
}

static bool wait_until(hsm_audit *a, bool (*pred)(const hsm_audit *), uint64_t timeout_ms);

static bool writer_ready(const hsm_audit *a)
{
	return a->writer_ready;
}

static void free_state(hsm_audit *a)
{
	if (a->slots != NULL) {
		for (size_t i = 0; i < a->cap; i++)
			hsm_buf_free(&a->slots[i].body);
		free(a->slots);
	}
	for (size_t i = 0; i < AUDIT_BATCH_MAX; i++)
		hsm_buf_free(&a->w.batch[i].body);
	hsm_buf_free(&a->w.pending);
	hsm_buf_free(&a->w.scratch);
	hsm_buf_free(&a->swept);
	EVP_MD_CTX_free(a->w.md_ctx);
	EVP_MD_free(a->w.sha256);
	audit_io_close(a);
	if (a->lock_fd >= 0)
		close(a->lock_fd);
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->signer_mu);
	pthread_cond_destroy(&a->wake_writer);
	pthread_cond_destroy(&a->wake_waiters);
	pthread_cond_destroy(&a->wake_watchdog);
	pthread_cond_destroy(&a->wake_syncer);
	pthread_cond_destroy(&a->wake_sweeper);
	free(a->held);
	free(a);
}

hsm_result hsm_audit_open(const hsm_audit_config *cfg, hsm_audit **out)
{
	HSM_ASSERT(cfg != NULL && out != NULL && cfg->dir != NULL && cfg->node_id != NULL);
	HSM_ENSURE(node_id_ok(cfg->node_id), HSM_ERR_VALIDATION,
	           "audit node id must be 1-64 characters of [A-Za-z0-9._-]");
	hsm_audit *a = calloc(1, sizeof(*a));
	HSM_ENSURE(a != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_result res = start(a, cfg);
	if (hsm_failed(res)) {
		hsm_info("audit log not opened: %s", hsm_last_message());
		audit_syslog_stop(a->syslog);
		free_state(a);
		return res;
	}
	/* Return once the file exists and the open is recorded, so health is meaningful. */
	pthread_mutex_lock(&a->mu);
	(void)wait_until(a, writer_ready, audit_close_timeout_ms(a));
	pthread_mutex_unlock(&a->mu);
	*out = a;
	return HSM_SUCCESS;
}

/* Waits on wake_waiters until pred(a) or the timeout; mu held. */
static bool wait_until(hsm_audit *a, bool (*pred)(const hsm_audit *), uint64_t timeout_ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t end = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec + timeout_ms * 1000000ULL;
	struct timespec dl = {(time_t)(end / 1000000000ULL), (long)(end % 1000000000ULL)};
	while (!pred(a))
		if (pthread_cond_timedwait(&a->wake_waiters, &a->mu, &dl) == ETIMEDOUT)
			return pred(a);
	return true;
}

static bool writer_gone(const hsm_audit *a)
{
	return a->writer_exited;
}

static bool syncer_gone(const hsm_audit *a)
{
	return a->syncer_exited;
}

uint64_t audit_close_timeout_ms(const hsm_audit *a)
{
	return 2ULL * a->cfg.io_deadline_ms + 2000;
}

/* The threads in the order close stops them. */
enum { STOP_WRITER, STOP_SWEEPER, STOP_SYNCER, STOP_WATCHDOG, STOP_COUNT };

/*
 * A thread is stuck in the kernel (what names it): it and the threads after
 * it are left running and the state allocated, since freeing it under them
 * would be worse than leaking it at shutdown.
 */
static void abandon(hsm_audit *a, int stuck, const char *what)
{
	pthread_t *t[STOP_COUNT] = {&a->writer_thread, &a->sweeper_thread, &a->syncer_thread,
	                            &a->watchdog_thread};
	hsm_error("audit %s is stuck in I/O; audit state left allocated", what);
	for (int i = stuck; i < STOP_COUNT; i++)
		pthread_detach(*t[i]);
	/* The stuck writer must not sign once it wakes: the caller frees the signer's key next. */
	hsm_audit_set_signer(a, NULL, NULL);
}

void hsm_audit_close(hsm_audit *a)
{
	uint64_t durable;
	(void)hsm_audit_close_durable(a, &durable);
}

bool hsm_audit_close_durable(hsm_audit *a, uint64_t *durable_seq)
{
	*durable_seq = 0;
	if (a == NULL)
		return true;
	pthread_mutex_lock(&a->mu);
	atomic_store(&a->stopping, true);
	pthread_cond_signal(&a->wake_writer);
	bool exited = wait_until(a, writer_gone, audit_close_timeout_ms(a));
	pthread_mutex_unlock(&a->mu);
	if (!exited) { /* the watchdog has failed every pending record */
		abandon(a, STOP_WRITER, "writer");
		return false;
	}
	pthread_join(a->writer_thread, NULL);
	/* The writer stopped the sweeper, waiting for it up to the I/O deadline. */
	pthread_mutex_lock(&a->mu);
	bool swept = a->sweeper_exited;
	pthread_mutex_unlock(&a->mu);
	if (!swept) {
		abandon(a, STOP_SWEEPER, "retention");
		return false;
	}
	pthread_join(a->sweeper_thread, NULL);
	/* The writer waited for any sync in progress unless the watchdog gave up on it. */
	pthread_mutex_lock(&a->mu);
	a->syncer_stop = true;
	pthread_cond_signal(&a->wake_syncer);
	exited = wait_until(a, syncer_gone, a->cfg.io_deadline_ms + 1000ULL);
	pthread_mutex_unlock(&a->mu);
	if (!exited) {
		abandon(a, STOP_SYNCER, "fsync");
		return false;
	}
	pthread_join(a->syncer_thread, NULL);
	pthread_mutex_lock(&a->mu);
	a->watchdog_stop = true;
	pthread_cond_signal(&a->wake_watchdog);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->watchdog_thread, NULL);
	audit_syslog_stop(a->syslog);
	*durable_seq = atomic_load(&a->durable_seq_pub);
	free_state(a);
	return true;
}

static hsm_result submit(hsm_audit *a, const hsm_audit_record *rec, hsm_audit_done_fn done_cb,
                         void *cb_arg, bool wake)
{
	HSM_ASSERT(a != NULL && rec != NULL && done_cb != NULL);
	HSM_ENSURE(rec->type != HSM_AUDIT_CHECKPOINT, HSM_ERR_VALIDATION,
	           "checkpoints are written by the audit log itself");
	hsm_buf *body = thread_scratch();
	HSM_ENSURE(body != NULL, HSM_ERR_NOMEM, "out of memory");
	int64_t t = rec->time_ms != 0 ? rec->time_ms : audit_now_ms(a);
	HSM_GUARD(audit_format_body(body, a->node, rec, t));

	hsm_result res = HSM_SUCCESS;
	pthread_mutex_lock(&a->mu);
	bool up = atomic_load(&a->healthy) && !atomic_load(&a->stopping);
	bool room = a->count < a->cap;
	bool ok = up && room;
	if (ok) {
		audit_slot *s = &a->slots[(a->head + a->count) % a->cap];
		s->body.len = 0;
		res = hsm_buf_put(&s->body, body->data, body->len);
		if (hsm_ok(res)) {
			s->cb = done_cb;
			s->arg = cb_arg;
			a->count++;
			if (wake && a->writer_idle)
				pthread_cond_signal(&a->wake_writer);
		}
	} else {
		a->refused_total++;
		a->refused_in_outage++;
	}
	pthread_mutex_unlock(&a->mu);
	HSM_GUARD(res);
	HSM_ENSURE(up, HSM_ERR_AUDIT_UNAVAILABLE, "the audit log is unavailable");
	/* The trail is up, behind only: this record fails, not the trail (see hsm_audit_submit). */
	HSM_ENSURE(room, HSM_ERR_THROTTLING, "the audit queue is full");
	return HSM_SUCCESS;
}

hsm_result hsm_audit_submit(hsm_audit *a, const hsm_audit_record *rec, hsm_audit_done_fn done_cb,
                            void *cb_arg)
{
	return submit(a, rec, done_cb, cb_arg, true);
}

hsm_result hsm_audit_submit_lazy(hsm_audit *a, const hsm_audit_record *rec,
                                 hsm_audit_done_fn done_cb, void *cb_arg)
{
	return submit(a, rec, done_cb, cb_arg, false);
}

void hsm_audit_kick(hsm_audit *a)
{
	HSM_ASSERT(a != NULL);
	pthread_mutex_lock(&a->mu);
	if (a->count > 0 && a->writer_idle)
		pthread_cond_signal(&a->wake_writer);
	pthread_mutex_unlock(&a->mu);
}

typedef struct append_wait {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done;
	hsm_result res;
} append_wait;

static void append_done(void *arg, hsm_result r)
{
	append_wait *w = arg;
	pthread_mutex_lock(&w->mu);
	w->done = true;
	w->res = r;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

hsm_result hsm_audit_append(hsm_audit *a, const hsm_audit_record *rec)
{
	HSM_ASSERT(a != NULL && !pthread_equal(pthread_self(), a->writer_thread));
	append_wait w = {.done = false};
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	hsm_result res = hsm_audit_submit(a, rec, append_done, &w);
	if (hsm_ok(res)) {
		/* The watchdog bounds how long this can take (docs/audit.md). */
		pthread_mutex_lock(&w.mu);
		while (!w.done)
			pthread_cond_wait(&w.cv, &w.mu);
		pthread_mutex_unlock(&w.mu);
		res = w.res;
	}
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	if (hsm_failed(res) && res.err == HSM_ERR_AUDIT_UNAVAILABLE)
		return HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE, "the audit log is unavailable");
	return res;
}

bool hsm_audit_healthy(const hsm_audit *a)
{
	return atomic_load(&a->healthy);
}

int64_t hsm_audit_clock_ahead_ms(const hsm_audit *a)
{
	return audit_clock_ahead_ms(a);
}

bool hsm_audit_low_space(const hsm_audit *a)
{
	return atomic_load(&a->low_space);
}

void hsm_audit_note_refused(hsm_audit *a)
{
	atomic_fetch_add(&a->refused_low, 1);
}

bool hsm_audit_accepting(const hsm_audit *a)
{
	return atomic_load(&a->healthy) && !atomic_load(&a->stopping) &&
	       !atomic_load(&a->low_space);
}

typedef enum { REQ_ROTATE, REQ_CHECKPOINT, REQ_SEAL } req_kind;

static hsm_result request(hsm_audit *a, req_kind kind)
{
	pthread_mutex_lock(&a->mu);
	if (kind == REQ_ROTATE)
		a->req_rotate = true;
	else if (kind == REQ_SEAL)
		a->req_seal = true;
	else
		a->req_checkpoint = true;
	uint64_t gen = ++a->req_gen;
	pthread_cond_signal(&a->wake_writer);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t end = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec +
	               audit_close_timeout_ms(a) * 1000000ULL;
	struct timespec dl = {(time_t)(end / 1000000000ULL), (long)(end % 1000000000ULL)};
	bool done = true;
	while (a->done_gen < gen && done)
		done = pthread_cond_timedwait(&a->wake_waiters, &a->mu, &dl) != ETIMEDOUT ||
		       a->done_gen >= gen;
	hsm_result r = done ? a->req_result : HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE, "audit writer busy");
	pthread_mutex_unlock(&a->mu);
	return r;
}

hsm_result hsm_audit_rotate(hsm_audit *a)
{
	HSM_ASSERT(a != NULL);
	return request(a, REQ_ROTATE);
}

hsm_result hsm_audit_checkpoint(hsm_audit *a)
{
	HSM_ASSERT(a != NULL);
	return request(a, REQ_CHECKPOINT);
}

uint64_t hsm_audit_next_seq(const hsm_audit *a)
{
	return atomic_load(&a->next_seq_pub);
}

uint64_t hsm_audit_durable_seq(const hsm_audit *a)
{
	return atomic_load(&a->durable_seq_pub);
}

bool hsm_audit_began_here(const hsm_audit *a)
{
	HSM_ASSERT(a != NULL);
	return !a->opened.found;
}

hsm_result hsm_audit_seal(hsm_audit *a)
{
	HSM_ASSERT(a != NULL);
	hsm_result r = request(a, REQ_SEAL);
	hsm_audit_set_signer(a, NULL, NULL);
	return r;
}

void hsm_audit_get_stats(const hsm_audit *a, hsm_audit_stats *out)
{
	hsm_audit *m = (hsm_audit *)(uintptr_t)a; /* the lock is not part of the value */
	pthread_mutex_lock(&m->mu);
	out->next_seq = atomic_load(&m->next_seq_pub);
	out->written = m->written_total;
	out->refused = m->refused_total;
	out->outages = m->outages;
	out->checkpoints_signed = m->ckpt_signed;
	out->checkpoints_unsigned = m->ckpt_unsigned;
	out->files_expired = m->files_expired;
	out->files_copied = m->files_copied;
	out->copy_failures = m->copy_failures;
	out->retention_running = m->sweep_requested || m->sweep_running;
	out->retention_held = m->retention_held || m->retention_start_ahead;
	out->retention_blocked = m->retention_blocked;
	out->low_space = atomic_load(&m->low_space);
	out->acks_held = m->acks_held;
	uint64_t held_ns = m->acks_held_ns;
	if (m->w.held_since_ns != 0) /* a hold in progress counts up to now */
		held_ns += hsm_mono_ns() - m->w.held_since_ns;
	out->acks_held_seconds = (double)held_ns / 1e9;
	pthread_mutex_unlock(&m->mu);
	out->sync_seconds = (double)atomic_load_explicit(&m->sync_ns, memory_order_relaxed) / 1e9;
	for (size_t b = 0; b <= HSM_AUDIT_SYNC_BUCKETS; b++)
		out->sync_buckets[b] = atomic_load_explicit(&m->sync_buckets[b], memory_order_relaxed);
	out->syslog_dropped = m->syslog ? audit_syslog_dropped(m->syslog) : 0;
	out->syslog_cut = m->syslog ? audit_syslog_cut(m->syslog) : 0;
}

void hsm_audit_set_signer(hsm_audit *a, hsm_audit_sign_fn fn, void *arg)
{
	HSM_ASSERT(a != NULL);
	pthread_mutex_lock(&a->signer_mu);
	a->signer = fn;
	a->signer_arg = arg;
	pthread_mutex_unlock(&a->signer_mu);
	if (fn != NULL) {
		atomic_store(&a->signer_changed, true);
		pthread_mutex_lock(&a->mu);
		pthread_cond_signal(&a->wake_writer);
		pthread_mutex_unlock(&a->mu);
	}
}
