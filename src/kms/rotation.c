/*
 * rotation.c - EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
 * RotateKeyOnDemand, ListKeyRotations and automatic rotation.
 *
 * Rotation adds a key version and makes it primary; older versions keep
 * decrypting and verifying.  Unlike AWS KMS, which rotates only symmetric
 * encryption keys, hsmd rotates every key type: JWT signing keys (RSA, EC,
 * Ed25519) and HMAC keys need rotation too.  RotationPeriodInDays is 1-2560
 * (KMS: 90-2560), default 90.
 *
 * Keys with imported material rotate to material imported for the purpose
 * (import.c): on demand, and, unlike in AWS KMS, on a schedule too.  hsmd
 * cannot make their next material, so when the date comes without it the
 * key stays as it is, counted among the rotations due (the 7-day alert
 * keeps firing), and rotates as soon as the material is imported.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kms/kms_internal.h"

#define MIN_PERIOD_DAYS 1
#define MAX_PERIOD_DAYS 2560
#define DAY 86400

typedef struct rotation_arg {
	bool enable;
	int period;
	int64_t now;
} rotation_arg;

/*
 * As in KMS: enabling rotation dates the first one a period from now.
 * Enabling it again keeps the date (a script that applies "rotation on"
 * every day must not put rotation off for ever); a new period counts from
 * the start of the current one (the last automatic rotation, or the
 * enabling), and a date that has passed with it is due at once.  That date
 * is kept as it is, not moved to now: the start is always next_rotation
 * less the period, so a second change before the rotation (an imported key
 * waits for its material) must still count from it.
 */
static hsm_result set_rotation(hsm_key_record *rec, void *arg)
{
	const rotation_arg *a = arg;
	if (!a->enable) {
		rec->rotation_enabled = false;
		rec->next_rotation = 0;
		return HSM_SUCCESS;
	}
	if (!rec->rotation_enabled || rec->next_rotation == 0) {
		rec->next_rotation = a->now + (int64_t)a->period * DAY;
	} else if (rec->rotation_period_days != a->period) {
		int64_t start = rec->next_rotation - (int64_t)rec->rotation_period_days * DAY;
		rec->next_rotation = start + (int64_t)a->period * DAY;
	}
	rec->rotation_enabled = true;
	rec->rotation_period_days = a->period;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_enable_rotation(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   int period_days)
{
	if (period_days == 0)
		period_days = kms->cfg.default_rotation_days;
	HSM_ENSURE(period_days >= MIN_PERIOD_DAYS && period_days <= MAX_PERIOD_DAYS,
	           HSM_ERR_VALIDATION, "RotationPeriodInDays must be between %d and %d",
	           MIN_PERIOD_DAYS, MAX_PERIOD_DAYS);
	rotation_arg a = {true, period_days, kms_now(kms)};
	char period[16];
	snprintf(period, sizeof(period), "%d", period_days);
	hsm_policy_pair cond = {"kms:RotationPeriodInDays", period};
	kms_authz_extra extra = {.more = &cond, .n_more = 1};
	/* Looked at once the caller is known to be allowed, and before the key's row is
	 * locked: the certificates are other rows. */
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_EnableKeyRotation, ref, &extra, &k));
	pthread_mutex_lock(&kms->pairing);
	hsm_result r = kms_certs_refuse_rotation(kms, &k->rec, "EnableKeyRotation");
	kms_key_release(k);
	if (hsm_ok(r))
		r = kms_modify_with(kms, caller, HSM_OP_EnableKeyRotation, ref, &extra, set_rotation,
		                    &a, NULL, NULL);
	pthread_mutex_unlock(&kms->pairing);
	return r;
}

hsm_result hsm_kms_disable_rotation(hsm_kms *kms, const hsm_caller *caller, const char *ref)
{
	rotation_arg a = {false, 0, kms_now(kms)};
	return kms_modify(kms, caller, HSM_OP_DisableKeyRotation, ref, set_rotation, &a, NULL, NULL);
}

hsm_result hsm_kms_rotation_status(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                   hsm_key_record *out)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_GetKeyRotationStatus, ref, NULL, &k));
	hsm_result r = hsm_key_record_copy(out, &k->rec);
	kms_key_release(k);
	/* As in KMS: off while the key is pending deletion (nothing rotates it); a cancelled
	 * deletion shows the schedule again, which the record keeps. */
	if (hsm_ok(r) && out->state == HSM_KEY_PENDING_DELETION)
		out->rotation_enabled = false;
	return r;
}

typedef struct rotate_arg {
	uint32_t new_version;
	int64_t now;
	bool automatic;
	hsm_kms *kms;
	hsm_version_record *version; /* inserted after make_primary returns (store.h) */
} rotate_arg;

static hsm_result make_primary(hsm_key_record *rec, void *arg)
{
	const rotate_arg *a = arg;
	HSM_ENSURE(rec->primary_version + 1 == a->new_version, HSM_ERR_CONFLICT,
	           "another rotation of %s is in progress", rec->key_id);
	/* Decided again under the row lock: a DisableKey, DisableKeyRotation or
	 * ScheduleKeyDeletion may have been committed since the scheduler looked. */
	if (a->automatic)
		HSM_ENSURE(rec->state == HSM_KEY_ENABLED && rec->rotation_enabled &&
		               rec->next_rotation <= a->now,
		           HSM_ERR_CONFLICT, "the rotation of %s is no longer due", rec->key_id);
	rec->primary_version = a->new_version;
	/* Dated as it commits, after its (possibly long) generation: a token version waits a lead
	 * from this time (kms_jwt.c), which must count from when the JWK Set can show it. */
	a->version->created = kms_now(a->kms);
	/* An automatic rotation starts the next period; as in KMS, one on demand leaves the
	 * automatic schedule as it was, unless its date has passed (a node down over it): the
	 * rotation on demand is then the one that was due, which must not follow it at once. */
	if (rec->rotation_enabled && (a->automatic || rec->next_rotation <= a->now))
		rec->next_rotation = a->now + (int64_t)rec->rotation_period_days * DAY;
	return HSM_SUCCESS;
}

/* Generates version primary+1 of k and makes it primary in one transaction; the pairing
 * check (what: the caller's name) and the commit run under kms->pairing, the generation
 * (seconds for RSA-4096) before it, so that it holds up no other pairing change. */
static hsm_result rotate(hsm_kms *kms, const hsm_caller *caller, const kms_key *k, bool automatic,
                         const char *what, hsm_key_record *after)
{
	hsm_result res = HSM_SUCCESS;
	hsm_version_record v;
	memset(&v, 0, sizeof(v));
	rotate_arg a = {k->rec.primary_version + 1, kms_now(kms), automatic, kms, &v};
	memcpy(v.key_id, k->rec.key_id, sizeof(v.key_id));
	v.version = a.new_version;
	v.created = a.now; /* set again in make_primary */
	v.rotation_type = automatic ? HSM_ROTATION_AUTOMATIC : HSM_ROTATION_ON_DEMAND;
	hsm_ks_keyref ref = kms_keyref(k, v.version);
	/* Approved before the (possibly long) key generation, not after it. */
	if (caller != NULL)
		HSM_TRY(hsm_caller_commit_key(caller, k->rec.key_id));
	HSM_TRY(hsm_ks_generate(kms->ks, &ref, &v.wrapped, &v.public_der));
	pthread_mutex_lock(&kms->pairing);
	res = kms_certs_refuse_rotation(kms, &k->rec, what);
	if (hsm_ok(res) && caller != NULL)
		res = kms_modify(kms, caller, HSM_OP_RotateKeyOnDemand, k->rec.key_id, make_primary, &a,
		                 &v, after);
	else if (hsm_ok(res))
		res = hsm_store_key_update(kms->store, k->rec.key_id, make_primary, &a, &v, after);
	pthread_mutex_unlock(&kms->pairing);
out:
	kms_key_invalidate(kms, k->rec.key_id);
	hsm_version_record_clear(&v);
	return res;
}

/* kms_promote_pending with the pairing check, both under kms->pairing (nothing is generated). */
static hsm_result promote_locked(hsm_kms *kms, const hsm_caller *caller, const kms_key *k,
                                 hsm_rotation_type type, const char *what, hsm_key_record *out)
{
	pthread_mutex_lock(&kms->pairing);
	hsm_result r = kms_certs_refuse_rotation(kms, &k->rec, what);
	if (hsm_ok(r))
		r = kms_promote_pending(kms, caller, k, type, out);
	pthread_mutex_unlock(&kms->pairing);
	return r;
}

typedef struct on_demand_count {
	uint32_t primary;
	unsigned n;
} on_demand_count;

static hsm_result count_on_demand(const hsm_version_record *v, void *arg)
{
	on_demand_count *c = arg;
	if (v->version <= c->primary && v->rotation_type == HSM_ROTATION_ON_DEMAND)
		c->n++;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_rotate_now(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                              hsm_key_record *out)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_RotateKeyOnDemand, ref, NULL, &k));
	/*
	 * A store shared with other nodes: the cached record may predate another
	 * node's rotation of a moment ago, whose version this one would then try
	 * to make again and be refused as a conflict.  The version is read as it
	 * is; a stale record is looked up again.
	 */
	bool stale = false;
	HSM_GUARD(kms_key_moved(kms, &k, &stale));
	if (stale)
		HSM_GUARD(kms_lookup(kms, caller, HSM_OP_RotateKeyOnDemand, ref, NULL, &k));
	/* Counted at this primary version: a rotation that commits must still find it primary
	 * (make_primary, kms_promote_pending), so two at once cannot pass the limit together. */
	on_demand_count c = {k->rec.primary_version, 0};
	hsm_result r = hsm_store_version_list(kms->store, k->rec.key_id, count_on_demand, &c);
	if (hsm_ok(r) && c.n >= HSM_MAX_ON_DEMAND_ROTATIONS)
		r = HSM_FAIL(HSM_ERR_LIMIT_EXCEEDED,
		             "%s has been rotated on demand %u times, the most a key allows; "
		             "automatic rotation is not limited",
		             k->arn, c.n);
	/* Checked before the approval gate and the generation, and again under kms->pairing
	 * with the change (rotate; promote_locked). */
	if (hsm_ok(r))
		r = kms_certs_refuse_rotation(kms, &k->rec, "RotateKeyOnDemand");
	if (hsm_ok(r))
		r = k->rec.origin == HSM_ORIGIN_EXTERNAL
		        ? promote_locked(kms, caller, k, HSM_ROTATION_ON_DEMAND, "RotateKeyOnDemand", out)
		        : rotate(kms, caller, k, false, "RotateKeyOnDemand", out);
	/* The version it made was made meanwhile: another rotation (on this node or another
	 * sharing the store) committed first. */
	if (r.err == HSM_ERR_CONFLICT)
		r = HSM_FAIL(HSM_ERR_CONFLICT,
		             "%s: another rotation of this key was in progress; try again", k->arn);
	kms_key_release(k);
	return r;
}

typedef struct list_arg {
	hsm_version_cb cb;
	void *arg;
	uint32_t primary;
	bool all;
} list_arg;

static hsm_result pick_listed(const hsm_version_record *v, void *arg)
{
	const list_arg *l = arg;
	if (v->version > l->primary + 1 || (v->wrapped.len == 0 && v->digest.len == 0))
		return HSM_SUCCESS; /* material never imported */
	if (!l->all && (v->version == 1 || v->version > l->primary))
		return HSM_SUCCESS; /* rotations only */
	return l->cb(v, l->arg);
}

hsm_result hsm_kms_list_rotations(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                  bool all, hsm_key_record *key, hsm_version_cb cb, void *arg)
{
	kms_key *k = NULL;
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_ListKeyRotations, ref, NULL, &k));
	list_arg l = {cb, arg, k->rec.primary_version, all};
	hsm_result r = hsm_key_record_copy(key, &k->rec);
	if (hsm_ok(r))
		r = hsm_store_version_list(kms->store, k->rec.key_id, pick_listed, &l);
	kms_key_release(k);
	return r;
}

/*
 * kms_rotate_due; *acted: this node rotated the key (false when the fresh
 * look or the row lock found nothing to do: another node rotated it, or it
 * changed meanwhile), so that the scheduler counts only its own changes.
 */
static hsm_result rotate_due(hsm_kms *kms, const hsm_key_record *rec, bool *acted)
{
	kms_key *k = NULL;
	*acted = false;
	/* Read the key afresh: another node sharing the store may have rotated it already. */
	kms_key_invalidate(kms, rec->key_id);
	HSM_GUARD(kms_key_load(kms, rec->key_id, &k));
	hsm_key_record after;
	memset(&after, 0, sizeof(after));
	hsm_result r = HSM_SUCCESS;
	/* Re-check on the fresh snapshot: the key may have changed since it was listed. */
	if (k->rec.state == HSM_KEY_ENABLED && k->rec.rotation_enabled &&
	    k->rec.next_rotation <= kms_now(kms)) {
		/* A certificate paired before hsmd refused that pairing: not rotated, and each
		 * round says why (HsmdSchedulerFailing), until it is deleted or rotation is off. */
		r = kms_certs_refuse_rotation(kms, &k->rec, "scheduled rotation");
		/* Imported keys move to the material imported for the purpose, when there is some. */
		if (hsm_ok(r))
			r = k->rec.origin == HSM_ORIGIN_EXTERNAL
			        ? promote_locked(kms, NULL, k, HSM_ROTATION_AUTOMATIC,
			                         "scheduled rotation", &after)
			        : rotate(kms, NULL, k, true, "scheduled rotation", &after);
		if (r.err == HSM_ERR_CONFLICT) {
			/* Changed meanwhile (rotated by another node, disabled, taken off
			 * rotation, scheduled for deletion): nothing was done. */
			r = HSM_SUCCESS;
		} else {
			kms_emit(kms, "RotateKey", rec->key_id, hsm_ok(r) ? after.primary_version : 0,
			         r);
			if (hsm_ok(r))
				hsm_info("key %s rotated automatically to version %u", rec->key_id,
				         after.primary_version);
			*acted = hsm_ok(r);
		}
	}
	hsm_key_record_clear(&after);
	kms_key_release(k);
	return r;
}

hsm_result kms_rotate_due(hsm_kms *kms, const hsm_key_record *rec)
{
	bool acted = false;
	return rotate_due(kms, rec, &acted);
}

typedef struct due_list {
	hsm_key_record *recs;
	size_t n, cap;
} due_list;

static hsm_result collect_due(const hsm_key_record *rec, void *arg)
{
	due_list *l = arg;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		hsm_key_record *p = realloc(l->recs, cap * sizeof(*p));
		HSM_ENSURE(p != NULL, HSM_ERR_NOMEM, "out of memory");
		l->recs = p;
		l->cap = cap;
	}
	memset(&l->recs[l->n], 0, sizeof(l->recs[0]));
	HSM_GUARD(hsm_key_record_copy(&l->recs[l->n], rec));
	l->n++;
	return HSM_SUCCESS;
}

/* An imported key whose rotation is due, with no material imported to rotate to. */
static bool waits_for_material(const hsm_key_record *rec, int64_t now)
{
	bool deleting = rec->state == HSM_KEY_PENDING_DELETION && rec->deletion_date <= now;
	bool expiring = rec->valid_to != 0 && rec->valid_to <= now;
	return !deleting && !expiring && rec->origin == HSM_ORIGIN_EXTERNAL &&
	       (rec->flags & HSM_KEYFLAG_PENDING_MATERIAL) == 0;
}

/*
 * A key whose scheduled work fails (a full disk, a certificate in the way of
 * its rotation) is not tried, logged and audited again every round: after
 * its n-th failure in a row it waits 2^n seconds, at most KMS_RETRY_MAX_S.
 */
static struct kms_retry *retry_of(hsm_kms *kms, const char *key_id)
{
	for (size_t i = 0; i < kms->n_retry; i++)
		if (strcmp(kms->retry[i].key_id, key_id) == 0)
			return &kms->retry[i];
	return NULL;
}

static bool held_back(hsm_kms *kms, const char *key_id, int64_t now)
{
	const struct kms_retry *r = retry_of(kms, key_id);
	/* A wall clock stepped back before the last failure ends the pause: the work is not
	 * put off for as long as the step. */
	return r != NULL && now >= r->since && now < r->next;
}

static void note_outcome(hsm_kms *kms, const char *key_id, bool failed, int64_t now)
{
	struct kms_retry *r = retry_of(kms, key_id);
	if (!failed) {
		if (r != NULL)
			*r = kms->retry[--kms->n_retry];
		return;
	}
	if (r == NULL) {
		if (kms->n_retry < KMS_RETRY_MAX) {
			r = &kms->retry[kms->n_retry++];
		} else { /* full: a key this round did not list gives way, else the one due soonest */
			r = &kms->retry[0];
			for (size_t i = 1; i < kms->n_retry; i++)
				if ((r->listed && !kms->retry[i].listed) ||
				    (r->listed == kms->retry[i].listed && kms->retry[i].next < r->next))
					r = &kms->retry[i];
		}
		memcpy(r->key_id, key_id, sizeof(r->key_id));
		r->failures = 0;
		r->listed = true;
	}
	r->failures++;
	r->since = now;
	int64_t pause = r->failures >= 10 ? KMS_RETRY_MAX_S : (int64_t)1 << r->failures;
	r->next = now + (pause < KMS_RETRY_MAX_S ? pause : KMS_RETRY_MAX_S);
}

#define DUE_PER_ROUND 1000 /* keys listed as due in one round; the rest in the next */
_Static_assert(KMS_RETRY_MAX >= DUE_PER_ROUND, "every key a round lists has room to back off");

hsm_result hsm_kms_run_due(hsm_kms *kms, size_t *done)
{
	/* Collect first, act after: no store write happens while a listing is open. */
	due_list l = {0};
	int64_t now = kms_now(kms);
	hsm_result r = hsm_store_keys_due(kms->store, now, DUE_PER_ROUND, collect_due, &l);
	hsm_err first = HSM_OK;
	size_t failed = 0;
	*done = 0;
	for (size_t i = 0; i < kms->n_retry; i++)
		kms->retry[i].listed = false;
	for (size_t i = 0; i < l.n; i++) {
		const hsm_key_record *rec = &l.recs[i];
		struct kms_retry *was = retry_of(kms, rec->key_id);
		if (was != NULL)
			was->listed = true;
		if (waits_for_material(rec, now) || held_back(kms, rec->key_id, now)) {
			hsm_key_record_clear(&l.recs[i]); /* due, counted, and nothing to do yet */
			continue;
		}
		bool acted = false;
		hsm_result one = rec->state == HSM_KEY_PENDING_DELETION && rec->deletion_date <= now
		                     ? kms_destroy_due(kms, rec, &acted)
		                 : rec->valid_to != 0 && rec->valid_to <= now
		                     ? kms_expire_due(kms, rec, &acted)
		                     : rotate_due(kms, rec, &acted);
		note_outcome(kms, rec->key_id, hsm_failed(one), now);
		if (hsm_failed(one)) {
			hsm_log_failure("scheduled key work"); /* one key must not stop the others */
			first = failed++ == 0 ? one.err : first;
		} else if (acted) {
			(*done)++;
		}
		hsm_key_record_clear(&l.recs[i]);
	}
	free(l.recs);
	/* A key no longer due (destroyed, its work done elsewhere, taken off rotation) is
	 * forgotten, so its failures do not carry over to its next due date; unless the listing
	 * was cut short, when an unlisted key may still be due. */
	for (size_t i = 0; hsm_ok(r) && l.n < DUE_PER_ROUND && i < kms->n_retry;)
		if (!kms->retry[i].listed)
			kms->retry[i] = kms->retry[--kms->n_retry];
		else
			i++;
	HSM_GUARD(r);
	HSM_ENSURE(failed == 0, first, "%zu of the %zu keys due failed their scheduled work", failed,
	           l.n);
	return HSM_SUCCESS;
}

typedef struct usable_list {
	const char **ids; /* the keys found usable; they point into the sweep's own list */
	size_t n;
	const char *const *asked;
	size_t n_asked;
} usable_list;

static int cmp_id(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static hsm_result note_usable(const hsm_key_record *rec, void *arg)
{
	usable_list *u = arg;
	if (rec->state != HSM_KEY_ENABLED || (rec->flags & HSM_KEYFLAG_NO_MATERIAL) != 0)
		return HSM_SUCCESS;
	const char *const *asked = bsearch(&(const char *){rec->key_id}, u->asked, u->n_asked,
	                                   sizeof(*u->asked), cmp_id);
	if (asked != NULL && u->n < u->n_asked)
		u->ids[u->n++] = *asked;
	return HSM_SUCCESS;
}

hsm_result hsm_kms_sweep_material(hsm_kms *kms, size_t max, size_t *forgotten)
{
	*forgotten = 0;
	if (kms->cfg.meta_cache_ttl_ms <= 0)
		return HSM_SUCCESS;
	char(*ids)[HSM_UUID_STRLEN + 1] = NULL;
	size_t n = 0;
	HSM_GUARD(hsm_ks_cached_keys(kms->ks, &ids, &n));
	/* A part at a time when there are many: the next pass goes on where this one ended. */
	if (max > HSM_STORE_KEYS_GET_MAX)
		max = HSM_STORE_KEYS_GET_MAX;
	size_t from = n > 0 ? atomic_load(&kms->sweep_from) % n : 0, count = n < max ? n : max;
	const char **asked = count > 0 ? calloc(count, sizeof(*asked)) : NULL;
	const char **usable = count > 0 ? calloc(count, sizeof(*usable)) : NULL;
	hsm_result res = HSM_SUCCESS;
	if (count > 0 && (asked == NULL || usable == NULL))
		res = HSM_FAIL(HSM_ERR_NOMEM, "out of memory for the material sweep");
	if (hsm_ok(res) && count > 0) {
		for (size_t i = 0; i < count; i++)
			asked[i] = ids[(from + i) % n];
		qsort(asked, count, sizeof(*asked), cmp_id);
		usable_list u = {.ids = usable, .asked = asked, .n_asked = count};
		/* One read for them all; a store that does not answer leaves them for the next pass. */
		res = hsm_store_keys_get(kms->store, count, asked, note_usable, &u);
		if (hsm_ok(res))
			qsort(usable, u.n, sizeof(*usable), cmp_id);
		for (size_t i = 0; i < count && hsm_ok(res); i++) {
			if (bsearch(&asked[i], usable, u.n, sizeof(*usable), cmp_id) != NULL)
				continue;
			kms_forget(kms, asked[i]);
			kms_key_invalidate(kms, asked[i]);
			(*forgotten)++;
		}
	}
	if (hsm_ok(res))
		atomic_store(&kms->sweep_from, n > 0 ? (from + count) % n : 0);
	free(asked);
	free(usable);
	free(ids);
	return res;
}
