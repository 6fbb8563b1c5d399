/*
 * audit_sweep.c - the sweeper thread, which applies the retention (and
 * copies closed files to the copy directory) beside the writer, and the
 * writer's side of it: asking for a pass, the retention checkpoint a pass
 * waits for before it deletes, recording what it deleted, and letting a
 * pass finish at shutdown.  Listing, reading, copying and deleting years of
 * files would otherwise hold up every request queued behind a rotation.
 */
#include "audit/audit_internal.h"

#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

/*
 * Asks the sweeper for a retention pass.  Listing a directory that holds
 * years of files, reading, deleting and syncing it takes time that every
 * request queued behind a rotation would otherwise wait for; the sweeper
 * deletes beside the writer, and the writer records what went (audit_record_sweep).
 */
void audit_request_retention(hsm_audit *a)
{
	audit_writer *w = &a->w;
	const char *base = w->fd >= 0 ? strrchr(w->path, '/') : NULL;
	w->next_retention_ms = audit_now_ms(a) + RETENTION_PERIOD_MS;
	if (a->cfg.no_retention)
		return;
	pthread_mutex_lock(&a->mu);
	snprintf(a->sweep_keep, sizeof(a->sweep_keep), "%s", base != NULL ? base + 1 : "");
	a->sweep_requested = true;
	pthread_cond_signal(&a->wake_sweeper);
	pthread_mutex_unlock(&a->mu);
}

/*
 * Whether the floor the trail stated at open is this node's: the checkpoint
 * it came from signed by this node's audit key (audit_check_floor).  A floor
 * taken from the trail by anyone able to write it (a checkpoint added while
 * hsmd was stopped) would let retention delete files as expired that were
 * deleted by hand: retention deletes nothing (retention_blocked).  Without a
 * signer it waits, as for its own checkpoint.
 */
static bool floor_signed(hsm_audit *a, hsm_result *r)
{
	bool no_signer = false;
	if (!audit_check_floor(a, &no_signer)) {
		*r = HSM_FAIL(HSM_ERR_INVALID_STATE,
		              "the trail's floor comes from a checkpoint this node did not sign");
		return false;
	}
	if (no_signer) {
		*r = HSM_FAIL(HSM_ERR_SEALED, "audit retention waits for the signer (unseal the node)");
		return false;
	}
	return true;
}

/*
 * Whether this node signed the checkpoint after each AuditRecordsLost the
 * pass passes (audit_io.c chain_proves): only a loss the node itself
 * recorded, under its own signature, lets retention go past a gap.
 */
static bool losses_signed(hsm_audit *a, const audit_floor_ckpt *losses, size_t n,
                          hsm_result *r)
{
	for (size_t i = 0; i < n; i++) {
		bool no_signer = false;
		if (audit_ckpt_ours(a, &losses[i], &no_signer))
			continue;
		if (no_signer) {
			*r = HSM_FAIL(HSM_ERR_SEALED, "audit retention waits for the signer (unseal the node)");
			return false;
		}
		hsm_error("audit retention deletes nothing: the checkpoint (seq %llu) after the "
		          "AuditRecordsLost that names a gap it would pass is not signed by this "
		          "node's audit key; verify the trail with the audit public key",
		          (unsigned long long)losses[i].seq);
		*r = HSM_FAIL(HSM_ERR_INVALID_STATE, "a recorded loss is not signed by this node");
		return false;
	}
	return true;
}

/*
 * Retention states what it is about to delete before it deletes: a signed
 * "retention" checkpoint whose kept_from is the first seq that stays.  Only
 * such a checkpoint may raise the floor the checkpoints state, so verify
 * tells files retention deleted from files deleted any other way (and a
 * crash between the checkpoint and the deletion leaves files past the
 * floor, which is no gap).  Anyone who can write the trail can append an
 * unsigned one, so verify does not take it for retention: without a signer
 * (sealed, or hsmctl without shares) nothing is deleted, and a checkpoint
 * that went out unsigned (the signer cleared meanwhile, or failing) counts
 * as not written.  The writer answers; the sweeper waits.
 */
void audit_answer_retention(hsm_audit *a)
{
	audit_floor_ckpt losses[AUDIT_LOSSES_MAX];
	pthread_mutex_lock(&a->mu);
	bool asked = a->ret_requested;
	uint64_t gen = a->ret_gen, kept_from = a->ret_kept_from;
	size_t n_losses = a->ret_n_losses;
	memcpy(losses, a->ret_losses, n_losses * sizeof(losses[0]));
	a->ret_requested = false;
	pthread_mutex_unlock(&a->mu);
	if (!asked)
		return;
	hsm_result r;
	if (!atomic_load(&a->healthy)) {
		r = HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE, "the audit log is unavailable");
	} else if (!audit_has_signer(a)) {
		r = HSM_FAIL(HSM_ERR_SEALED, "audit retention waits for the signer (unseal the node)");
	} else if (!floor_signed(a, &r) || !losses_signed(a, losses, n_losses, &r)) {
		/* r says why: nothing is deleted under a floor this node did not sign */
	} else {
		uint64_t was = a->w.kept_from;
		bool signed_ok = false;
		if (kept_from > a->w.kept_from)
			a->w.kept_from = kept_from;
		r = audit_write_checkpoint_signed(a, "retention", &signed_ok);
		if (hsm_ok(r) && !signed_ok)
			r = HSM_FAIL(HSM_ERR_SEALED, "the retention checkpoint went out unsigned "
			                             "(the signer was cleared or failed); nothing deleted");
		if (hsm_failed(r))
			a->w.kept_from = was; /* nothing will be deleted */
		atomic_store(&a->kept_from_pub, a->w.kept_from);
	}
	pthread_mutex_lock(&a->mu);
	a->ret_done_gen = gen;
	a->ret_result = r;
	pthread_cond_broadcast(&a->wake_waiters);
	pthread_mutex_unlock(&a->mu);
}

hsm_result audit_declare_kept_from(hsm_audit *a, uint64_t kept_from,
                                   const audit_floor_ckpt *losses, size_t n_losses)
{
	HSM_ENSURE(n_losses <= AUDIT_LOSSES_MAX, HSM_ERR_INTERNAL, "too many recorded losses");
	uint64_t end = hsm_mono_ns() + audit_close_timeout_ms(a) * NS_PER_MS;
	pthread_mutex_lock(&a->mu);
	a->ret_requested = true;
	a->ret_kept_from = kept_from;
	if (n_losses > 0)
		memcpy(a->ret_losses, losses, n_losses * sizeof(losses[0]));
	a->ret_n_losses = n_losses;
	uint64_t gen = ++a->ret_gen;
	pthread_cond_signal(&a->wake_writer);
	pthread_cond_broadcast(&a->wake_waiters); /* a writer stopping the sweeper answers too */
	while (a->ret_done_gen < gen && !a->writer_exited && hsm_mono_ns() < end)
		audit_timedwait_ns(&a->wake_waiters, &a->mu, end);
	hsm_result r = a->ret_done_gen >= gen
	                   ? a->ret_result
	                   : HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE, "the audit writer did not answer");
	a->ret_requested = false;
	pthread_mutex_unlock(&a->mu);
	return r;
}

static void unrecorded(const hsm_buf *names)
{
	hsm_error("audit retention: deleted files not recorded: %.*s", (int)names->len,
	          (const char *)names->data);
}

/* Appends the names in more to list, comma-separated. */
static void add_names(hsm_buf *list, const hsm_buf *more)
{
	if ((list->len > 0 && hsm_failed(hsm_buf_put_u8(list, ','))) ||
	    hsm_failed(hsm_buf_put(list, more->data, more->len)))
		unrecorded(more);
}

/*
 * Writes the AuditFilesExpired event for what the sweeper deleted.  On
 * failure the names are kept for the next call (the writer's next pass);
 * sweep_done only wakes the writer, so a failure cannot make it spin.
 */
void audit_record_sweep(hsm_audit *a)
{
	pthread_mutex_lock(&a->mu);
	hsm_buf names = a->swept;
	memset(&a->swept, 0, sizeof(a->swept));
	a->sweep_done = false;
	atomic_store(&a->sweep_unrecorded, false);
	pthread_mutex_unlock(&a->mu);
	if (names.len == 0)
		return;
	hsm_result r = hsm_buf_terminate(&names);
	if (hsm_ok(r)) {
		hsm_audit_field f[] = {{"files", (const char *)names.data}};
		r = audit_write_event(a, "AuditFilesExpired", HSM_AUDIT_SUCCESS, f, 1);
	}
	if (hsm_ok(r)) {
		hsm_buf_free(&names);
		return;
	}
	/* Not recorded: kept, before any names deleted since, for the next try. */
	pthread_mutex_lock(&a->mu);
	if (a->swept.len > 0)
		add_names(&names, &a->swept);
	hsm_buf_free(&a->swept);
	a->swept = names;
	atomic_store(&a->sweep_unrecorded, true);
	pthread_mutex_unlock(&a->mu);
}

void *audit_sweeper_main(void *arg)
{
	hsm_audit *a = arg;
	hsm_thread_name("hsmd-audit-ret");
	char keep[PATH_MAX];
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (!a->sweeper_stop && !a->sweep_requested)
			pthread_cond_wait(&a->wake_sweeper, &a->mu);
		if (!a->sweep_requested) /* a pass asked for before the stop still runs */
			break;
		a->sweep_requested = false;
		a->sweep_running = true;
		memcpy(keep, a->sweep_keep, sizeof(keep));
		pthread_mutex_unlock(&a->mu);
		hsm_buf deleted = {0};
		if (hsm_failed(audit_retention_apply(a, keep, &deleted)))
			hsm_log_failure("audit retention");
		pthread_mutex_lock(&a->mu);
		a->sweep_running = false;
		if (deleted.len > 0) {
			a->files_expired++;
			for (size_t i = 0; i < deleted.len; i++)
				a->files_expired += deleted.data[i] == ',';
			add_names(&a->swept, &deleted);
			a->sweep_done = a->swept.len > 0;
			atomic_store(&a->sweep_unrecorded, a->swept.len > 0);
			pthread_cond_signal(&a->wake_writer);
		}
		pthread_cond_broadcast(&a->wake_waiters);
		hsm_buf_free(&deleted);
	}
	a->sweeper_exited = true;
	pthread_cond_broadcast(&a->wake_waiters);
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* At shutdown: lets a pass in progress (or asked for) finish, then records it. */
void audit_stop_sweeper(hsm_audit *a)
{
	uint64_t end = hsm_mono_ns() + a->cfg.io_deadline_ms * NS_PER_MS;
	pthread_mutex_lock(&a->mu);
	a->sweeper_stop = true;
	pthread_cond_signal(&a->wake_sweeper);
	while (!a->sweeper_exited && hsm_mono_ns() < end) {
		if (a->ret_requested) { /* the pass waits for its checkpoint */
			pthread_mutex_unlock(&a->mu);
			audit_answer_retention(a);
			pthread_mutex_lock(&a->mu);
			continue;
		}
		audit_timedwait_ns(&a->wake_waiters, &a->mu, end);
	}
	bool exited = a->sweeper_exited;
	pthread_mutex_unlock(&a->mu);
	if (!exited)
		hsm_error("audit retention still running at shutdown; its deletions may go unrecorded");
	if (atomic_load(&a->healthy))
		audit_record_sweep(a);
	pthread_mutex_lock(&a->mu);
	if (a->swept.len > 0)
		unrecorded(&a->swept);
	pthread_mutex_unlock(&a->mu);
}
