/*
 * audit_writer.c - the writer thread (sequence, chain, batches, fsync
 * grouping, checkpoints, rotation, recovery), the syncer thread that runs
 * the grouped fdatasync while the writer goes on writing, and the watchdog
 * thread that bounds how long any of the writer's work may block (the
 * sweeper thread, retention and copies, is in audit_sweep.c).  See docs/audit.md for the rules this
 * code keeps: the file is always gap-free and chain-valid, and every accepted
 * record gets its callback within the deadline.
 */
#include "audit/audit_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define MAX_SLEEP_NS (250 * NS_PER_MS)

/* Runs n done callbacks, bracketed by the batch hook (see hsm_audit_config). */
static void fire(const hsm_audit *a, const audit_cbent *cbs, size_t n, hsm_result r)
{
	if (n == 0)
		return;
	if (a->cfg.batch_hook != NULL)
		a->cfg.batch_hook(true);
	for (size_t i = 0; i < n; i++)
		cbs[i].cb(cbs[i].arg, r);
	if (a->cfg.batch_hook != NULL)
		a->cfg.batch_hook(false);
}

void audit_timedwait_ns(pthread_cond_t *cv, pthread_mutex_t *mu, uint64_t mono_ns)
{
	struct timespec ts = {(time_t)(mono_ns / 1000000000ULL), (long)(mono_ns % 1000000000ULL)};
	(void)pthread_cond_timedwait(cv, mu, &ts);
}

void audit_fail_locked(hsm_audit *a, audit_cbent *out, size_t *n_out, size_t max)
{
	if (atomic_load(&a->healthy)) {
		atomic_store(&a->healthy, false);
		a->outages++;
		a->outage_start_ns = hsm_mono_ns();
		a->refused_in_outage = 0;
	}
	size_t n = 0;
	while (a->count > 0 && n < max) {
		audit_slot *s = &a->slots[a->head];
		out[n].cb = s->cb;
		out[n].arg = s->arg;
		n++;
		a->head = (a->head + 1) % a->cap;
		a->count--;
	}
	a->refused_total += n;
	a->refused_in_outage += n;
	/* Then the written records whose acknowledgements waited for a sync (ack_durable). */
	while (n < max && a->held_head < a->held_n)
		out[n++] = a->held[a->held_head++].cb;
	if (a->held_head == a->held_n)
		a->held_head = a->held_n = 0;
	*n_out = n;
}

/*
 * ack_durable: holds the callbacks of n records just written, the last of
 * them below `below`, until a sync makes them durable.  False when memory
 * runs out (the caller fails them: written, but not acknowledged).
 */
static bool hold_acks(hsm_audit *a, const audit_cbent *cbs, size_t n, uint64_t below)
{
	pthread_mutex_lock(&a->mu);
	if (a->held_head > 0 && a->held_n + n > a->held_cap) {
		memmove(a->held, a->held + a->held_head, (a->held_n - a->held_head) * sizeof(*a->held));
		a->held_n -= a->held_head;
		a->held_head = 0;
	}
	bool ok = true;
	if (a->held_n + n > a->held_cap) {
		size_t cap = a->held_cap != 0 ? a->held_cap * 2 : AUDIT_BATCH_MAX;
		while (cap < a->held_n + n)
			cap *= 2;
		audit_held *nv = realloc(a->held, cap * sizeof(*nv));
		ok = nv != NULL;
		if (ok) {
			a->held = nv;
			a->held_cap = cap;
		}
	}
	for (size_t i = 0; ok && i < n; i++)
		a->held[a->held_n++] = (audit_held){cbs[i], below};
	pthread_mutex_unlock(&a->mu);
	return ok;
}

/* ack_durable: acknowledges the held records that are durable now (writer thread). */
static void release_durable(hsm_audit *a)
{
	if (!a->cfg.ack_durable)
		return;
	audit_cbent *buf = a->w.drained;
	for (;;) {
		size_t n = 0;
		pthread_mutex_lock(&a->mu);
		uint64_t durable = atomic_load(&a->durable_seq_pub);
		while (n < AUDIT_BATCH_MAX && a->held_head < a->held_n &&
		       a->held[a->held_head].below <= durable)
			buf[n++] = a->held[a->held_head++].cb;
		if (a->held_head == a->held_n)
			a->held_head = a->held_n = 0;
		pthread_mutex_unlock(&a->mu);
		if (n == 0)
			return;
		fire(a, buf, n, HSM_SUCCESS);
	}
}

/* Marks the log unhealthy for reason err and fails everything queued. */
static void outage(hsm_audit *a, int err)
{
	audit_cbent *buf = a->w.drained;
	pthread_mutex_lock(&a->mu);
	if (atomic_load(&a->healthy)) {
		a->outage_errno = err;
		hsm_error("audit log unavailable: %s; refusing requests until it can be written",
		          strerror(err));
	}
	for (;;) {
		size_t n = 0;
		audit_fail_locked(a, buf, &n, AUDIT_BATCH_MAX);
		if (n == 0)
			break;
		pthread_mutex_unlock(&a->mu);
		fire(a, buf, n, (hsm_result){HSM_ERR_AUDIT_UNAVAILABLE});
		pthread_mutex_lock(&a->mu);
	}
	pthread_mutex_unlock(&a->mu);
	a->w.retry_at_ns = hsm_mono_ns() + a->cfg.retry_interval_ms * NS_PER_MS;
}

/* Formats one line into pending: assigns seq, chains it, adds the newline. */
static hsm_result append_line(hsm_audit *a, const uint8_t *body, size_t len)
{
	audit_writer *w = &a->w;
	size_t start = w->pending.len;
	uint8_t h[AUDIT_HASH_LEN];
	hsm_result res = audit_format_line(&w->pending, w->next_seq, body, len, w->head);
	if (hsm_ok(res) && (EVP_DigestInit_ex2(w->md_ctx, w->sha256, NULL) != 1 ||
	                    EVP_DigestUpdate(w->md_ctx, w->pending.data + start,
	                                     w->pending.len - start) != 1 ||
	                    EVP_DigestFinal_ex(w->md_ctx, h, NULL) != 1))
		res = HSM_FAIL(HSM_ERR_CRYPTO, "SHA-256 failed");
	if (hsm_ok(res))
		res = hsm_buf_put_u8(&w->pending, '\n');
	if (hsm_failed(res)) {
		w->pending.len = start;
		return res;
	}
	if (start == 0)
		w->pending_first_seq = w->next_seq;
	memcpy(w->head, h, AUDIT_HASH_LEN);
	w->next_seq++;
	w->pending_records++;
	atomic_store(&a->next_seq_pub, w->next_seq);
	return HSM_SUCCESS;
}

static void forward_to_syslog(hsm_audit *a, size_t from)
{
	const hsm_buf *p = &a->w.pending;
	size_t i = from;
	while (i < p->len) {
		const uint8_t *nl = memchr(p->data + i, '\n', p->len - i);
		size_t end = nl ? (size_t)(nl - p->data) : p->len;
		audit_syslog_forward(a->syslog, p->data + i, end - i);
		i = end + 1;
	}
}

/* Writes what pending holds, then acknowledges cbs (the records in it). */
static bool flush(hsm_audit *a, const audit_cbent *cbs, size_t n, size_t from)
{
	audit_writer *w = &a->w;
	audit_op_begin(a, cbs, n);
	hsm_result r = audit_io_write(a);
	bool in_time = audit_op_end(a);
	pthread_mutex_lock(&a->mu);
	/* Nothing more is acknowledged once a background sync failed or ran out of time. */
	bool sync_bad = a->sync_timed_out || (a->sync_state == AUDIT_SYNC_DONE && a->sync_err != 0);
	int sync_e = a->sync_timed_out ? ETIMEDOUT : a->sync_err;
	if (hsm_ok(r) && in_time && !sync_bad)
		a->written_total += n;
	pthread_mutex_unlock(&a->mu);
	if (hsm_ok(r) && in_time && !sync_bad) {
		uint64_t now = hsm_mono_ns();
		if (w->unsynced_since_ns == 0)
			w->unsynced_since_ns = now;
		if (w->lag_since_ns == 0)
			w->lag_since_ns = now;
		if (!a->cfg.ack_durable)
			fire(a, cbs, n, HSM_SUCCESS);
		else if (!hold_acks(a, cbs, n, w->next_seq)) /* no memory to hold them; trail up */
			fire(a, cbs, n, (hsm_result){HSM_ERR_NOMEM});
		if (a->syslog != NULL)
			forward_to_syslog(a, from);
		return true;
	}
	outage(a, hsm_failed(r) ? w->last_errno : !in_time ? ETIMEDOUT : sync_e);
	if (in_time) { /* else the watchdog has answered them */
		pthread_mutex_lock(&a->mu);
		a->refused_total += n;
		a->refused_in_outage += n;
		pthread_mutex_unlock(&a->mu);
		fire(a, cbs, n, (hsm_result){HSM_ERR_AUDIT_UNAVAILABLE});
	}
	return false;
}

/* ---- The background sync ----------------------------------------------------
 *
 * The writer asks the syncer thread for an fdatasync of everything written so
 * far and goes on writing and acknowledging while it runs, so a slow disk
 * does not hold every response for the length of an fsync.  Two limits keep
 * the durability bound: acknowledgements stop while the oldest record that is
 * not yet durable is older than fsync_max_lag_ms and a sync is running, and a
 * sync that outlasts the deadline makes the log unhealthy (the watchdog).  At
 * most one sync runs at a time, and the writer closes or rewrites the file only
 * while none does.
 */

static bool sync_busy_locked(const hsm_audit *a)
{
	return a->sync_state == AUDIT_SYNC_REQUESTED || a->sync_state == AUDIT_SYNC_RUNNING;
}

/* The bytes the finished sync covered are durable: drop them from pending. */
static void sync_succeeded(audit_writer *w)
{
	size_t k = (size_t)(w->req_off - w->synced_off);
	HSM_ASSERT(w->req_off >= w->synced_off && k <= w->written && w->written <= w->pending.len);
	memmove(w->pending.data, w->pending.data + k, w->pending.len - k);
	w->pending.len -= k;
	w->written -= k;
	w->synced_off = w->req_off;
	w->pending_records -= w->req_records;
	w->pending_first_seq = w->req_seq;
	w->lag_since_ns = w->unsynced_since_ns; /* the oldest write after the request */
}

/* Takes the result of a finished background sync.  False when the log is in
 * an outage because of it (failed, or the watchdog gave up on it). */
static bool collect_sync(hsm_audit *a)
{
	pthread_mutex_lock(&a->mu);
	audit_sync_state st = a->sync_state;
	int err = a->sync_err;
	bool timed_out = a->sync_timed_out;
	if (st == AUDIT_SYNC_DONE) {
		a->sync_state = AUDIT_SYNC_IDLE;
		a->sync_timed_out = false;
	}
	pthread_mutex_unlock(&a->mu);
	if (st != AUDIT_SYNC_DONE)
		return !timed_out;
	if (err != 0) {
		outage(a, err);
		return false;
	}
	sync_succeeded(&a->w);
	atomic_store(&a->durable_seq_pub, a->w.req_seq);
	return !timed_out; /* late success: durable, but the outage stands until recovery */
}

/* Asks the syncer to make everything written so far durable (if it is idle). */
static void request_sync(hsm_audit *a)
{
	audit_writer *w = &a->w;
	if (w->fd < 0 || w->written != w->pending.len || w->unsynced_since_ns == 0)
		return;
	pthread_mutex_lock(&a->mu);
	if (a->sync_state == AUDIT_SYNC_IDLE && atomic_load(&a->healthy)) {
		a->sync_state = AUDIT_SYNC_REQUESTED;
		a->sync_fd = w->fd;
		w->req_off = w->synced_off + w->pending.len;
		a->sync_len = w->req_off;
		w->req_records = w->pending_records;
		w->req_seq = w->next_seq;
		w->unsynced_since_ns = 0;
		pthread_cond_signal(&a->wake_syncer);
	}
	pthread_mutex_unlock(&a->mu);
}

/* Waits until no background sync runs, then collects it.  The watchdog bounds
 * the wait: it marks a sync that outlasts the deadline and wakes the writer. */
static bool wait_sync_idle(hsm_audit *a)
{
	pthread_mutex_lock(&a->mu);
	while (sync_busy_locked(a) && !a->sync_timed_out)
		audit_timedwait_ns(&a->wake_writer, &a->mu, hsm_mono_ns() + 50 * NS_PER_MS);
	pthread_mutex_unlock(&a->mu);
	return collect_sync(a);
}

void *audit_syncer_main(void *arg)
{
	hsm_audit *a = arg;
	hsm_thread_name("hsmd-audit-sync");
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (!a->syncer_stop && a->sync_state != AUDIT_SYNC_REQUESTED)
			pthread_cond_wait(&a->wake_syncer, &a->mu);
		if (a->sync_state != AUDIT_SYNC_REQUESTED)
			break;
		int fd = a->sync_fd;
		uint64_t len = a->sync_len;
		uint64_t now = hsm_mono_ns();
		a->sync_state = AUDIT_SYNC_RUNNING;
		a->sync_start_ns = now != 0 ? now : 1;
		a->sync_timed_out = false;
		pthread_mutex_unlock(&a->mu);
		int e = audit_io_fdatasync(a, fd);
		/* The writer changes its path only while no sync runs. */
		if (e == 0)
			e = audit_io_check_file(fd, a->w.path, len, false);
		pthread_mutex_lock(&a->mu);
		a->sync_start_ns = 0;
		a->sync_err = e;
		a->sync_state = AUDIT_SYNC_DONE;
		pthread_cond_signal(&a->wake_writer);
	}
	a->syncer_exited = true;
	pthread_cond_broadcast(&a->wake_waiters);
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* A synchronous sync of everything pending, for checkpoints, events and recovery. */
static bool sync_now(hsm_audit *a)
{
	audit_writer *w = &a->w;
	if (!wait_sync_idle(a)) {
		outage(a, ETIMEDOUT); /* already unhealthy: fails what is queued */
		return false;
	}
	if (w->pending.len == 0)
		return true;
	audit_op_begin(a, NULL, 0);
	hsm_result r = audit_io_sync(a);
	bool in_time = audit_op_end(a);
	if (hsm_ok(r) && in_time) {
		w->unsynced_since_ns = 0;
		w->lag_since_ns = 0;
		w->pending_records = 0;
		release_durable(a);
		return true;
	}
	outage(a, hsm_ok(r) ? ETIMEDOUT : w->last_errno);
	return false;
}

static void process_batch(hsm_audit *a, size_t n)
{
	audit_writer *w = &a->w;
	size_t from = w->pending.len, ok = 0;
	hsm_result r = HSM_SUCCESS;
	for (; ok < n; ok++) {
		r = append_line(a, w->batch[ok].body.data, w->batch[ok].body.len);
		if (hsm_failed(r))
			break;
		w->batch[ok].body.len = 0;
	}
	if (ok < n) { /* out of memory: these got no seq, so failing them leaves no gap */
		hsm_log_failure("audit record not formatted");
		pthread_mutex_lock(&a->mu);
		a->refused_total += n - ok;
		pthread_mutex_unlock(&a->mu);
		/* Their own failure, not the trail's, which stays up (hsm_audit_done_fn). */
		fire(a, w->cbs + ok, n - ok, r);
	}
	if (flush(a, w->cbs, ok, from) &&
	    (a->cfg.ack_durable || w->pending_records >= a->cfg.fsync_max_records))
		request_sync(a);
}

/* Writes an event record made by the log itself, synced. */
hsm_result audit_write_event(hsm_audit *a, const char *op, hsm_audit_outcome outcome,
                             const hsm_audit_field *extra, size_t n_extra)
{
	audit_writer *w = &a->w;
	hsm_audit_record rec = {.type = HSM_AUDIT_EVENT, .operation = op, .outcome = outcome,
	                        .extra = extra, .n_extra = n_extra};
	w->scratch.len = 0;
	HSM_GUARD(audit_format_body(&w->scratch, a->node, &rec, audit_now_ms(a)));
	size_t from = w->pending.len;
	HSM_GUARD(append_line(a, w->scratch.data, w->scratch.len));
	HSM_ENSURE(flush(a, NULL, 0, from) && sync_now(a), HSM_ERR_AUDIT_UNAVAILABLE,
	           "the audit log is unavailable");
	return HSM_SUCCESS;
}

bool audit_has_signer(hsm_audit *a)
{
	pthread_mutex_lock(&a->signer_mu);
	bool has = a->signer != NULL;
	pthread_mutex_unlock(&a->signer_mu);
	return has;
}

/* Asks the signer (under the watchdog) for a signature over msg. */
static bool sign_message(hsm_audit *a, const hsm_buf *msg, hsm_buf *sig, const char **why)
{
	bool signed_ok = false;
	pthread_mutex_lock(&a->signer_mu);
	if (a->signer == NULL) {
		*why = "sealed";
	} else {
		audit_op_begin(a, NULL, 0);
		hsm_result r = a->signer(a->signer_arg, msg->data, msg->len, sig);
		bool in_time = audit_op_end(a);
		signed_ok = hsm_ok(r) && in_time && sig->len == 64;
		*why = in_time ? "signer failed" : "signer timed out";
	}
	pthread_mutex_unlock(&a->signer_mu);
	return signed_ok;
}

bool audit_node_offline(const char *node)
{
	return strncmp(node, "hsmctl-", strlen("hsmctl-")) == 0;
}

/* Whether the store's audit key signed fc, as the node it names (signed again, compared). */
static bool ckpt_signed(hsm_audit *a, const audit_floor_ckpt *fc, bool *no_signer)
{
	*no_signer = false;
	hsm_buf msg = {0}, sig = {0};
	const char *why = NULL;
	bool ok = false;
	if (hsm_ok(audit_checkpoint_message(&msg, fc->node, fc->seq, fc->time, fc->reason,
	                                    fc->kept_from, fc->prev))) {
		if (sign_message(a, &msg, &sig, &why))
			ok = sig.len == sizeof(fc->sig) && hsm_ct_equal(sig.data, fc->sig, sizeof(fc->sig));
		else
			*no_signer = true;
	}
	hsm_buf_free(&msg);
	hsm_buf_free(&sig);
	return ok;
}

bool audit_ckpt_ours(hsm_audit *a, const audit_floor_ckpt *fc, bool *no_signer)
{
	*no_signer = false;
	return strcmp(fc->node, a->node) == 0 && ckpt_signed(a, fc, no_signer);
}

/*
 * Whether the floor the trail states at open is this writer's to repeat:
 * stated by a checkpoint it signed itself; or, for an offline hsmctl
 * writing into a node's trail, by any the store's audit key signed (it
 * deletes nothing, and carries the floor forward for the node); or, for a
 * node, by an offline hsmctl's checkpoint that carried forward a floor the
 * node itself stated (floor_origin: the newest node checkpoint before it).
 * A checkpoint of another node, or an hsmctl's carrying another node's
 * floor (another trail put in this one's place), is not.
 */
static bool floor_ours(hsm_audit *a, const audit_writer *w, bool *no_signer)
{
	const audit_floor_ckpt *fc = &w->floor_ckpt, *origin = &w->floor_origin;
	*no_signer = false;
	if (strcmp(fc->node, a->node) == 0 || audit_node_offline(a->node))
		return ckpt_signed(a, fc, no_signer);
	if (!audit_node_offline(fc->node) || !origin->set || strcmp(origin->node, a->node) != 0 ||
	    origin->kept_from != fc->kept_from)
		return false;
	return ckpt_signed(a, fc, no_signer) && ckpt_signed(a, origin, no_signer);
}

bool audit_check_floor(hsm_audit *a, bool *no_signer)
{
	audit_writer *w = &a->w;
	*no_signer = false;
	if (w->floor_ckpt.set) {
		if (floor_ours(a, w, no_signer) || *no_signer) {
			w->floor_ckpt.set = *no_signer; /* checked once it could be */
			return true;
		}
		hsm_error("audit: the trail states every record from seq %llu kept, but the "
		          "checkpoint that says so (seq %llu) is not signed by this node's audit key "
		          "(added to the trail, or another node's trail): the checkpoints state every "
		          "record from seq 1 kept from now on, retention deletes nothing, and verify "
		          "reports the records missing; verify the trail with the audit public key",
		          (unsigned long long)w->floor_ckpt.kept_from,
		          (unsigned long long)w->floor_ckpt.seq);
		w->floor_ckpt.set = false;
		w->kept_from = 1;
		atomic_store(&a->kept_from_pub, 1);
		pthread_mutex_lock(&a->mu);
		a->floor_unsigned = true;
		pthread_mutex_unlock(&a->mu);
	}
	pthread_mutex_lock(&a->mu);
	bool ok = !a->floor_unsigned;
	pthread_mutex_unlock(&a->mu);
	return ok;
}

hsm_result audit_write_checkpoint(hsm_audit *a, const char *reason)
{
	bool signed_ok;
	return audit_write_checkpoint_signed(a, reason, &signed_ok);
}

hsm_result audit_write_checkpoint_signed(hsm_audit *a, const char *reason, bool *signed_out)
{
	audit_writer *w = &a->w;
	*signed_out = false;
	hsm_result res = HSM_SUCCESS;
	hsm_buf msg = {0}, sig = {0};
	int64_t now = audit_now_ms(a);
	char when[25], prev[AUDIT_HASH_HEX + 1];
	audit_format_time(now, when);
	audit_hex32(w->head, prev);
	/* Never sign a floor found at open before it is known to be this node's. */
	bool no_signer = false;
	(void)audit_check_floor(a, &no_signer);
	HSM_TRY(audit_checkpoint_message(&msg, a->node, w->next_seq, when, reason, w->kept_from,
	                                 prev));
	const char *why = NULL;
	bool signed_ok = sign_message(a, &msg, &sig, &why);
	HSM_CHECK(atomic_load(&a->healthy), HSM_ERR_AUDIT_UNAVAILABLE, "the audit log is unavailable");
	w->scratch.len = 0;
	HSM_TRY(audit_format_checkpoint_body(&w->scratch, a->node, now, reason, w->kept_from,
	                                     signed_ok ? sig.data : NULL, sig.len, why));
	size_t from = w->pending.len;
	HSM_TRY(append_line(a, w->scratch.data, w->scratch.len));
	if (strcmp(reason, "rotate") == 0)
		w->rotate_pending = true;
	pthread_mutex_lock(&a->mu);
	if (signed_ok)
		a->ckpt_signed++;
	else
		a->ckpt_unsigned++;
	pthread_mutex_unlock(&a->mu);
	HSM_CHECK(flush(a, NULL, 0, from) && sync_now(a), HSM_ERR_AUDIT_UNAVAILABLE,
	          "the audit log is unavailable");
	w->next_checkpoint_ms = now + a->cfg.checkpoint_interval_ms;
	*signed_out = signed_ok;
out:
	hsm_buf_free(&msg);
	hsm_buf_free(&sig);
	return res;
}

/*
 * Bytes someone else wrote into the live file, or put under the name of
 * the next one, kept aside and cut off (audit_io_recover, audit_io_new_file),
 * go on the record before any request is answered again: which file, where
 * they began, how many, where they were kept (how many of them) and the
 * SHA-256 of what was kept.  The chain never held them, so it verifies; the
 * event says they were there.
 */
static hsm_result record_foreign(hsm_audit *a)
{
	audit_writer *w = &a->w;
	bool recorded = w->n_foreign > 0;
	while (w->n_foreign > 0) {
		const audit_foreign_note *n = &w->foreign[0];
		char off[24], len[24], saved[24], sha[AUDIT_HASH_HEX + 1];
		snprintf(off, sizeof(off), "%llu", (unsigned long long)n->offset);
		snprintf(len, sizeof(len), "%llu", (unsigned long long)n->length);
		snprintf(saved, sizeof(saved), "%llu", (unsigned long long)n->saved);
		audit_hex32(n->sha256, sha);
		hsm_audit_field f[] = {{"file", n->file},      {"offset", off},
		                       {"length", len},        {"saved_to", n->saved_to},
		                       {"saved_bytes", saved}, {"sha256", sha}};
		HSM_GUARD(audit_write_event(a, "AuditForeignBytes", HSM_AUDIT_ERROR, f, 6));
		w->n_foreign--;
		memmove(w->foreign, w->foreign + 1, w->n_foreign * sizeof(w->foreign[0]));
	}
	if (recorded && a->copy_dir[0] != '\0')
		audit_request_retention(a); /* the pass copies the side files to copy_dir now */
	return HSM_SUCCESS;
}

/* Ends the current file after the rotation checkpoint and opens the next. */
static bool next_file(hsm_audit *a)
{
	audit_writer *w = &a->w;
	audit_io_close(a);
	audit_op_begin(a, NULL, 0);
	hsm_result r = audit_io_new_file(a);
	bool in_time = audit_op_end(a);
	if (hsm_ok(r) && in_time) {
		w->rotate_pending = false;
		return true;
	}
	outage(a, hsm_ok(r) ? ETIMEDOUT : w->last_errno);
	return false;
}

static hsm_result rotate(hsm_audit *a)
{
	HSM_GUARD(audit_write_checkpoint(a, "rotate"));
	HSM_ENSURE(next_file(a), HSM_ERR_AUDIT_UNAVAILABLE, "the audit log is unavailable");
	HSM_GUARD(record_foreign(a)); /* found where the new file was to be */
	audit_request_retention(a);
	return HSM_SUCCESS;
}

static bool rotation_due(const hsm_audit *a, int64_t now)
{
	const audit_writer *w = &a->w;
	uint64_t size = w->synced_off + w->pending.len;
	if (size == 0)
		return false;
	return size >= a->cfg.rotate_bytes ||
	       (now - w->file_opened_ms) >= (int64_t)a->cfg.rotate_age_ms;
}

/*
 * Records lost with their file (audit_io_recover) go on the record at once,
 * the range named, and a checkpoint follows before any other record: the
 * loss is in the trail before any request is answered again, and a restart (even after kill -9)
 * finds the floor where it was, so verify reports the records as missing,
 * never as retention.
 */
static hsm_result record_lost(hsm_audit *a)
{
	audit_writer *w = &a->w;
	char first[24], last[24];
	snprintf(first, sizeof(first), "%llu", (unsigned long long)w->lost_first);
	snprintf(last, sizeof(last), "%llu", (unsigned long long)w->lost_last);
	hsm_audit_field f[] = {{"first_seq", first}, {"last_seq", last}};
	HSM_GUARD(audit_write_event(a, "AuditRecordsLost", HSM_AUDIT_ERROR, f, 2));
	hsm_error("audit: records %s to %s were lost with their file; recorded (AuditRecordsLost)",
	          first, last);
	w->lost_first = w->lost_last = 0;
	w->lost_checkpoint = true; /* written once the log is healthy again (try_recover) */
	return HSM_SUCCESS;
}

/* After an outage: rewrite what was not durable, then note the outage. */
static void try_recover(hsm_audit *a)
{
	audit_writer *w = &a->w;
	w->retry_at_ns = hsm_mono_ns() + a->cfg.retry_interval_ms * NS_PER_MS;
	pthread_mutex_lock(&a->mu);
	bool busy = a->sync_state != AUDIT_SYNC_IDLE; /* a stuck sync still holds the file */
	pthread_mutex_unlock(&a->mu);
	if (busy)
		return;
	audit_op_begin(a, NULL, 0);
	hsm_result r = audit_io_recover(a);
	bool in_time = audit_op_end(a);
	if (hsm_failed(r) || !in_time)
		return;
	w->unsynced_since_ns = 0;
	w->lag_since_ns = 0;
	w->pending_records = 0;
	if (w->rotate_pending && !next_file(a))
		return;
	if (w->lost_last != 0 && hsm_failed(record_lost(a)))
		return;
	if (w->n_foreign > 0 && hsm_failed(record_foreign(a)))
		return;
	pthread_mutex_lock(&a->mu);
	uint64_t ms = (hsm_mono_ns() - a->outage_start_ns) / NS_PER_MS;
	uint64_t refused = a->refused_in_outage;
	int err = a->outage_errno;
	pthread_mutex_unlock(&a->mu);
	char dur[24], ref[24];
	snprintf(dur, sizeof(dur), "%llu", (unsigned long long)ms);
	snprintf(ref, sizeof(ref), "%llu", (unsigned long long)refused);
	hsm_audit_field f[] = {{"duration_ms", dur}, {"refused", ref},
	                       {"cause", err == ETIMEDOUT ? "deadline exceeded" : strerror(err)}};
	if (hsm_failed(audit_write_event(a, "AuditOutageEnded", HSM_AUDIT_SUCCESS, f, 3)))
		return;
	atomic_store(&a->healthy, true);
	hsm_info("audit log writable again after %llu ms (%llu requests refused)",
	         (unsigned long long)ms, (unsigned long long)refused);
	/* Checkpoints are written by a healthy log only; no batch comes before this one. */
	if (w->lost_checkpoint && hsm_ok(audit_write_checkpoint(a, "lost")))
		w->lost_checkpoint = false;
}

/* The next time the writer must wake without new records (monotonic ns). */
static uint64_t next_wakeup(const hsm_audit *a, uint64_t now)
{
	const audit_writer *w = &a->w;
	uint64_t t = now + MAX_SLEEP_NS;
	if (!atomic_load(&a->healthy))
		return w->retry_at_ns < t ? w->retry_at_ns : t;
	if (atomic_load(&a->low_space) && w->reserve_retry_ns < t)
		t = w->reserve_retry_ns > now ? w->reserve_retry_ns : now;
	if (w->unsynced_since_ns != 0 && a->sync_state == AUDIT_SYNC_IDLE) {
		uint64_t s = w->unsynced_since_ns +
		             (a->cfg.ack_durable ? 0 : a->cfg.fsync_interval_ms * NS_PER_MS);
		t = s < t ? s : t;
	}
	int64_t wall = audit_now_ms(a), due = w->next_checkpoint_ms - wall;
	if (due <= 0)
		return now;
	uint64_t c = now + (uint64_t)due * NS_PER_MS;
	return c < t ? c : t;
}

/* Records wait while the oldest one not yet durable is older than the lag
 * bound and a sync is asked, running or not yet collected; mu held. */
static bool acks_held_locked(const hsm_audit *a, uint64_t now)
{
	const audit_writer *w = &a->w;
	/* ack_durable: no acknowledgement comes before its sync; writing on lets the records
	 * written meanwhile share the next one. */
	return !a->cfg.ack_durable && a->sync_state != AUDIT_SYNC_IDLE && w->lag_since_ns != 0 &&
	       now - w->lag_since_ns > a->cfg.fsync_max_lag_ms * NS_PER_MS;
}

/* Counts the periods records wait, queued, behind the lag bound (mu held). */
static void note_held_locked(hsm_audit *a, bool held, uint64_t now)
{
	audit_writer *w = &a->w;
	if (held && w->held_since_ns == 0) {
		w->held_since_ns = now != 0 ? now : 1;
		a->acks_held++;
	} else if (!held && w->held_since_ns != 0) {
		a->acks_held_ns += now - w->held_since_ns;
		w->held_since_ns = 0;
	}
}

static size_t take_batch(hsm_audit *a, bool *stop)
{
	audit_writer *w = &a->w;
	bool held = false;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		uint64_t t = hsm_mono_ns();
		held = acks_held_locked(a, t);
		note_held_locked(a, held && a->count > 0, t);
		if (a->count > 0 && atomic_load(&a->healthy) && !held)
			break;
		if (a->sync_state == AUDIT_SYNC_DONE || (a->sweep_done && atomic_load(&a->healthy)))
			break;
		if (atomic_load(&a->stopping) || a->req_gen != a->done_gen || a->ret_requested ||
		    (atomic_load(&a->signer_changed) && atomic_load(&a->healthy)))
			break;
		uint64_t now = hsm_mono_ns(), wake = next_wakeup(a, now);
		if (wake <= now)
			break;
		a->writer_idle = true;
		audit_timedwait_ns(&a->wake_writer, &a->mu, wake);
		a->writer_idle = false;
	}
	size_t n = 0;
	while (!held && atomic_load(&a->healthy) && a->count > 0 && n < AUDIT_BATCH_MAX) {
		audit_slot *s = &a->slots[a->head];
		hsm_buf tmp = w->batch[n].body;
		w->batch[n].body = s->body;
		s->body = tmp;
		w->cbs[n].cb = s->cb;
		w->cbs[n].arg = s->arg;
		a->head = (a->head + 1) % a->cap;
		a->count--;
		n++;
	}
	/* Unhealthy at shutdown: what is still queued is failed below, not waited for. */
	*stop = atomic_load(&a->stopping) && (a->count == 0 || !atomic_load(&a->healthy));
	pthread_mutex_unlock(&a->mu);
	return n;
}

static void answer_requests(hsm_audit *a)
{
	audit_answer_retention(a);
	pthread_mutex_lock(&a->mu);
	bool rot = a->req_rotate, ck = a->req_checkpoint, seal = a->req_seal;
	uint64_t gen = a->req_gen;
	a->req_rotate = a->req_checkpoint = a->req_seal = false;
	pthread_mutex_unlock(&a->mu);
	if (!rot && !ck && !seal)
		return;
	hsm_result r = HSM_SUCCESS;
	if (!atomic_load(&a->healthy))
		r = HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE, "the audit log is unavailable");
	else if (seal)
		r = audit_write_checkpoint(a, "seal");
	if (hsm_ok(r) && rot)
		r = rotate(a);
	else if (hsm_ok(r) && ck)
		r = audit_write_checkpoint(a, "manual");
	pthread_mutex_lock(&a->mu);
	a->done_gen = gen;
	a->req_result = r;
	pthread_cond_broadcast(&a->wake_waiters);
	pthread_mutex_unlock(&a->mu);
}

/*
 * The deadlines below are wall-clock times, as the records' are.  When the
 * clock steps back (an NTP correction, a restored VM snapshot), none may stay
 * further ahead than its period: a checkpoint put off until the clock caught
 * up would leave every record written meanwhile without a signature.
 */
static void follow_clock_back(audit_writer *w, int64_t wall, uint64_t checkpoint_ms)
{
	if (w->next_checkpoint_ms - wall > (int64_t)checkpoint_ms)
		w->next_checkpoint_ms = wall + (int64_t)checkpoint_ms;
	if (w->next_retention_ms - wall > RETENTION_PERIOD_MS)
		w->next_retention_ms = wall + RETENTION_PERIOD_MS;
	if (w->file_opened_ms > wall) /* the file's age counts from now */
		w->file_opened_ms = wall;
}

/* The end of a low-space spell: how long, and how many requests were refused unrecorded. */
static void record_low_space(hsm_audit *a)
{
	audit_writer *w = &a->w;
	char dur[24], ref[24];
	snprintf(dur, sizeof(dur), "%llu",
	         (unsigned long long)((hsm_mono_ns() - w->low_since_ns) / NS_PER_MS));
	snprintf(ref, sizeof(ref), "%llu", (unsigned long long)atomic_load(&a->refused_low));
	hsm_audit_field f[] = {{"duration_ms", dur}, {"refused", ref}};
	if (hsm_ok(audit_write_event(a, "AuditLowSpaceEnded", HSM_AUDIT_SUCCESS, f, 2)))
		w->low_ended = false;
}

static void maintain(hsm_audit *a)
{
	audit_writer *w = &a->w;
	(void)collect_sync(a);
	release_durable(a);
	uint64_t now = hsm_mono_ns();
	if (!atomic_load(&a->healthy)) {
		if (now >= w->retry_at_ns && !atomic_load(&a->stopping))
			try_recover(a);
		answer_requests(a);
		return;
	}
	if (w->unsynced_since_ns != 0 &&
	    (a->cfg.ack_durable || now - w->unsynced_since_ns >= a->cfg.fsync_interval_ms * NS_PER_MS))
		request_sync(a);
	int64_t wall = audit_now_ms(a);
	follow_clock_back(w, wall, a->cfg.checkpoint_interval_ms);
	bool signed_ok = false;
	if (atomic_exchange(&a->signer_changed, false)) {
		/* Retention deletes only under a signer: what it put off while sealed goes now. */
		if (hsm_ok(audit_write_checkpoint_signed(a, "signer", &signed_ok)) && signed_ok)
			audit_request_retention(a);
	} else if (wall >= w->next_checkpoint_ms)
		(void)audit_write_checkpoint(a, "interval");
	w->next_checkpoint_ms = w->next_checkpoint_ms > wall ? w->next_checkpoint_ms
	                                                     : wall + a->cfg.checkpoint_interval_ms;
	if (atomic_load(&a->healthy) && rotation_due(a, wall))
		(void)rotate(a);
	if (atomic_load(&a->healthy) && wall >= w->next_retention_ms)
		audit_request_retention(a);
	if (atomic_load(&a->healthy) && atomic_load(&a->sweep_unrecorded))
		audit_record_sweep(a);
	if (atomic_load(&a->healthy))
		audit_io_keep_reserve(a);
	if (atomic_load(&a->healthy) && w->low_ended)
		record_low_space(a);
	answer_requests(a);
}

static void write_open_events(hsm_audit *a)
{
	const audit_tail_info *t = &a->opened;
	if (a->w.fd < 0 && !next_file(a))
		return;
	if (t->torn_bytes > 0) {
		char n[24];
		snprintf(n, sizeof(n), "%llu", (unsigned long long)t->torn_bytes);
		const char *base = strrchr(t->torn_path, '/');
		hsm_audit_field f[] = {{"bytes", n}, {"saved_to", base ? base + 1 : t->torn_path}};
		if (hsm_failed(audit_write_event(a, "AuditTornTail", HSM_AUDIT_ERROR, f, 2)))
			return;
	}
	/* "none": no earlier record, a log begun here (or one whose files were all taken away).
	 * trail_format: which signing rules this run keeps (audit_format.h); the event is
	 * chained, so later signed checkpoints cover the declaration. */
	/* The records at the end that no signed checkpoint of the run that wrote them
	 * covers (a crash, or a run that stayed sealed): named, with the head as found, so
	 * that this run's signatures are seen to cover them only as it found them. */
	char ufirst[24], ulast[24], uhead[AUDIT_HASH_HEX + 1];
	snprintf(ufirst, sizeof(ufirst), "%llu", (unsigned long long)t->unsigned_first);
	snprintf(ulast, sizeof(ulast), "%llu", (unsigned long long)(t->next_seq - 1));
	audit_hex32(t->head, uhead);
	hsm_audit_field f[] = {
	    {"previous_shutdown", !t->found ? "none" : t->clean ? "clean" : "unclean"},
	    {"trail_format", AUDIT_TRAIL_FORMAT_STR},
	    {"unsigned_first_seq", ufirst},
	    {"unsigned_last_seq", ulast},
	    {"unsigned_head", uhead}};
	size_t nf = t->found && t->unsigned_first != 0 ? 5 : 2;
	/* Bytes found where the first file was to be: recorded once the run is opened. */
	if (hsm_ok(audit_write_event(a, "AuditLogOpened", HSM_AUDIT_SUCCESS, f, nf)) &&
	    hsm_ok(record_foreign(a)))
		audit_request_retention(a);
}

/*
 * The writer runs five nice levels below the threads that submit records.
 * When the HTTP workers are busy it then waits until they pause, and writes
 * what they queued meanwhile in one batch, instead of preempting them for
 * every few records: on two cores shared with the load generator this
 * measured about 20 % more Encrypt throughput and a lower p99 at half of the
 * peak than the same priority (bench/PROFILE.md).  Since the workers wake it
 * once per loop pass rather than per record, five levels did as well as ten
 * or a little better (7 of 7 side-by-side rounds).  It still gets its share
 * of the CPU, and the watchdog and syncer keep the normal priority.  Best
 * effort: a failure to change the priority changes nothing else.
 */
#define WRITER_NICE_OFFSET 5

/*
 * With batch_scheduling, the writer also runs under SCHED_BATCH: woken by a
 * submission, it waits for a core instead of preempting the signature
 * running there (bench/PROFILE.md item 33).
 */
static void lower_priority(const hsm_audit *a)
{
	id_t tid = (id_t)syscall(SYS_gettid);
	errno = 0;
	int cur = getpriority(PRIO_PROCESS, tid);
	if (cur != -1 || errno == 0) {
		int want = cur + WRITER_NICE_OFFSET > 19 ? 19 : cur + WRITER_NICE_OFFSET;
		(void)setpriority(PRIO_PROCESS, tid, want);
	}
	if (a->cfg.batch_scheduling && !hsm_thread_batch())
		hsm_warn("audit writer: cannot run under SCHED_BATCH: %s", strerror(errno));
}

void *audit_writer_main(void *arg)
{
	hsm_audit *a = arg;
	hsm_thread_name("hsmd-audit");
	lower_priority(a);
	write_open_events(a);
	if (atomic_load(&a->healthy))
		audit_io_keep_reserve(a); /* a file continued from before has none yet */
	pthread_mutex_lock(&a->mu);
	a->writer_ready = true;
	pthread_cond_broadcast(&a->wake_waiters);
	pthread_mutex_unlock(&a->mu);
	for (;;) {
		bool stop = false;
		size_t n = take_batch(a, &stop);
		if (n > 0)
			process_batch(a, n);
		maintain(a);
		if (stop)
			break;
	}
	audit_stop_sweeper(a);
	/* In an outage, one more try: records of requests already served may wait in pending. */
	if (!atomic_load(&a->healthy))
		try_recover(a);
	if (atomic_load(&a->healthy)) {
		(void)audit_write_checkpoint(a, "shutdown");
	} else {
		if (a->w.pending.len > a->w.written || a->w.pending_records > 0)
			hsm_error("audit: stopping with the trail unwritable; %llu records (from seq "
			          "%llu) were not made durable: those already written stay in the file "
			          "unless the machine loses power, the others are lost (their requests "
			          "were answered with ServiceUnavailableException); a store change any "
			          "of them recorded is recorded at the next start if its record is "
			          "missing (RequestRecordRecovered)",
			          (unsigned long long)a->w.pending_records,
			          (unsigned long long)a->w.pending_first_seq);
		outage(a, ETIMEDOUT); /* already unhealthy: only fails what is queued */
	}
	pthread_mutex_lock(&a->mu);
	a->writer_exited = true;
	pthread_cond_broadcast(&a->wake_waiters);
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/*
 * The watchdog woke late_ns after it meant to.  Past a quarter of the
 * deadline, the whole process was held (SIGSTOP, a paused VM, a debugger)
 * or starved of CPU: the I/O in progress was held just as long, so that
 * time is not counted against it.  A device that truly hangs is still
 * caught, a deadline after the watchdog runs on time again.  mu held.
 */
static void discount_pause(hsm_audit *a, uint64_t late_ns, uint64_t deadline, uint64_t now)
{
	if (late_ns <= deadline / 4)
		return;
	if (a->op_start_ns != 0)
		a->op_start_ns = a->op_start_ns + late_ns < now ? a->op_start_ns + late_ns : now;
	if (a->sync_start_ns != 0)
		a->sync_start_ns = a->sync_start_ns + late_ns < now ? a->sync_start_ns + late_ns : now;
}

void *audit_watchdog_main(void *arg)
{
	hsm_audit *a = arg;
	hsm_thread_name("hsmd-audit-dog");
	uint64_t deadline = a->cfg.io_deadline_ms * NS_PER_MS;
	uint64_t period = deadline / 8 < 50 * NS_PER_MS ? deadline / 8 : 50 * NS_PER_MS;
	pthread_mutex_lock(&a->mu);
	uint64_t last = hsm_mono_ns();
	while (!a->watchdog_stop) {
		audit_timedwait_ns(&a->wake_watchdog, &a->mu, hsm_mono_ns() + period);
		uint64_t now = hsm_mono_ns();
		discount_pause(a, now - last > period ? now - last - period : 0, deadline, now);
		last = now;
		size_t n = 0, m = 0;
		if (a->op_start_ns != 0 && !a->op_timed_out && now - a->op_start_ns > deadline) {
			a->op_timed_out = true;
			if (atomic_load(&a->healthy)) {
				a->outage_errno = ETIMEDOUT;
				hsm_error("audit log write exceeded its %u ms deadline; refusing requests",
				          a->cfg.io_deadline_ms);
			}
			n = a->n_inflight;
			if (n > 0)
				memcpy(a->wd_cbs, a->inflight, n * sizeof(*a->wd_cbs));
			a->refused_total += n;
			audit_fail_locked(a, a->wd_cbs + n, &m, AUDIT_BATCH_MAX - n);
			a->refused_in_outage += n;
		} else if (a->sync_start_ns != 0 && !a->sync_timed_out &&
		           now - a->sync_start_ns > deadline) {
			a->sync_timed_out = true;
			if (atomic_load(&a->healthy)) {
				a->outage_errno = ETIMEDOUT;
				hsm_error("audit log fsync exceeded its %u ms deadline; refusing requests",
				          a->cfg.io_deadline_ms);
			}
			audit_fail_locked(a, a->wd_cbs, &m, AUDIT_BATCH_MAX);
			pthread_cond_signal(&a->wake_writer);
		} else if (!atomic_load(&a->healthy) && (a->count > 0 || a->held_head < a->held_n)) {
			audit_fail_locked(a, a->wd_cbs, &m, AUDIT_BATCH_MAX);
		}
		if (n + m > 0) {
			pthread_mutex_unlock(&a->mu);
			fire(a, a->wd_cbs, n + m, (hsm_result){HSM_ERR_AUDIT_UNAVAILABLE});
			pthread_mutex_lock(&a->mu);
		}
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}
