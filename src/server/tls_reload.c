/*
 * tls_reload.c - the TLS files loaded again without a restart: on SIGHUP
 * (main.c) and, with tls_watch, when the scheduler sees one of them change.
 *
 * A restart would seal the node, and the custodians would have to come and
 * unseal it for nothing more than a renewed certificate or a changed client
 * CA bundle.  Instead the files are read into a new TLS context under the
 * policy of the start (the key must be the certificate's, the client CA
 * bundle must hold a certificate), the "TlsReload" event naming what was
 * loaded is written, and only then do new connections begin with it: a load
 * that cannot be recorded is not made.  A load that fails changes nothing:
 * the node serves what it served, and says why in its log and its trail and
 * in hsmd_tls_reloads_total{result="failure"}.  Connections already open go
 * on with the context they began with; tickets issued under the old one do
 * not resume, so every client after the reload is checked against what was
 * loaded.
 *
 * The watch compares each file's device, inode, size and times with what
 * they were when last loaded or tried (following symbolic links, as the load
 * does: a renewal that swaps a link is a change).  A failed try is not tried
 * again until a file changes once more or a SIGHUP asks: a certificate
 * written before its key fails once, then loads when the key arrives.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/ssl.h>

#include "common/log.h"
#include "common/util.h"
#include "server/server.h"

#define N_TLS_FILES 3

static void tls_paths(const hsm_server *s, const char *paths[N_TLS_FILES])
{
	paths[0] = s->opt.http.tls_cert;
	paths[1] = s->opt.http.tls_key;
	paths[2] = s->opt.http.tls_client_ca;
}

static void stamp_files(const hsm_server *s, hsm_file_stamp out[N_TLS_FILES])
{
	const char *paths[N_TLS_FILES];
	tls_paths(s, paths);
	memset(out, 0, N_TLS_FILES * sizeof(*out));
	for (size_t i = 0; i < N_TLS_FILES; i++) {
		struct stat st;
		if (paths[i] == NULL || stat(paths[i], &st) != 0)
			continue;
		out[i].exists = true;
		out[i].dev = (uint64_t)st.st_dev;
		out[i].ino = (uint64_t)st.st_ino;
		out[i].size = (uint64_t)st.st_size;
		out[i].mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
		out[i].ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
	}
}

static bool same_stamps(const hsm_file_stamp *a, const hsm_file_stamp *b)
{
	for (size_t i = 0; i < N_TLS_FILES; i++)
		if (a[i].exists != b[i].exists || a[i].dev != b[i].dev || a[i].ino != b[i].ino ||
		    a[i].size != b[i].size || a[i].mtime_ns != b[i].mtime_ns ||
		    a[i].ctime_ns != b[i].ctime_ns)
			return false;
	return true;
}

void hsm_server_tls_stamp(hsm_server *s)
{
	pthread_mutex_lock(&s->tls_reload_lock);
	stamp_files(s, s->tls_stamps);
	pthread_mutex_unlock(&s->tls_reload_lock);
}

/* Loads, records, then serves; with tls_reload_lock held. */
static hsm_result reload_locked(hsm_server *s, const char *trigger)
{
	stamp_files(s, s->tls_stamps);
	SSL_CTX *ctx = NULL;
	hsm_http_tls_info info;
	hsm_result r = hsm_http_tls_load(&s->opt.http, &ctx);
	if (hsm_ok(r))
		r = hsm_http_tls_describe(ctx, &info);
	/* Served, it would fail every new connection: the old one is kept instead. */
	if (hsm_ok(r))
		r = hsm_http_tls_check_dates(ctx, s->opt.http.tls_cert);
	if (hsm_failed(r)) {
		char reason[512];
		snprintf(reason, sizeof(reason), "%s", hsm_last_message());
		hsm_audit_field f[] = {{"trigger", trigger}, {"reason", reason}};
		(void)hsm_server_event_of(s, NULL, "TlsReload", r, f, 2);
		SSL_CTX_free(ctx);
		atomic_fetch_add(&s->tls_reload_failures, 1);
		atomic_store(&s->tls_reload_failing, true);
		hsm_error("loading the TLS files again (%s) failed; new connections still get what "
		          "was loaded before: %s",
		          trigger, reason);
		return HSM_FAIL(r.err, "%s", reason);
	}
	char cert_end[21], ca_end[21];
	hsm_format_time(info.cert_expiry, cert_end);
	hsm_format_time(info.ca_expiry, ca_end);
	hsm_audit_field f[] = {{"trigger", trigger},
	                       {"certificate_subject", info.subject},
	                       {"certificate_sha256", info.sha256},
	                       {"certificate_not_after", cert_end},
	                       {"client_ca_not_after", ca_end}};
	if (!hsm_server_event_of(s, NULL, "TlsReload", HSM_SUCCESS, f, info.ca_expiry != 0 ? 5 : 4)) {
		SSL_CTX_free(ctx);
		atomic_fetch_add(&s->tls_reload_failures, 1);
		atomic_store(&s->tls_reload_failing, true);
		/* The files are fine; the trail is not (its outage is logged apart): the
		 * watch tries again at its next look, not only at the files' next change. */
		memset(s->tls_stamps, 0, sizeof(s->tls_stamps));
		hsm_result fail = HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE,
		                           "the TLS files loaded (%s), but the reload could not be "
		                           "recorded in the audit trail: new connections still get what "
		                           "was loaded before",
		                           trigger);
		hsm_log_failure("loading the TLS files again");
		return fail;
	}
	HSM_GUARD(hsm_http_server_use_tls(s->http, ctx));
	atomic_store(&s->tls_cert_expiry, info.cert_expiry);
	atomic_store(&s->tls_ca_expiry, info.ca_expiry);
	atomic_fetch_add(&s->tls_reloads, 1);
	atomic_store(&s->tls_reload_failing, false);
	hsm_info("TLS files loaded again (%s): new connections get %s (SHA-256 %s), valid until %s",
	         trigger, info.subject, info.sha256, cert_end);
	return HSM_SUCCESS;
}

hsm_result hsm_server_reload_tls(hsm_server *s, const char *trigger)
{
	HSM_ASSERT(s != NULL && trigger != NULL);
	if (s->opt.http.tls_cert == NULL || s->http == NULL) {
		hsm_info("%s: hsmd serves plain HTTP; there are no TLS files to load", trigger);
		return HSM_SUCCESS;
	}
	pthread_mutex_lock(&s->tls_reload_lock);
	hsm_result r = reload_locked(s, trigger);
	pthread_mutex_unlock(&s->tls_reload_lock);
	return r;
}

void hsm_server_tls_watch(hsm_server *s)
{
	if (!s->opt.tls_watch || s->opt.http.tls_cert == NULL || s->http == NULL)
		return;
	hsm_file_stamp now[N_TLS_FILES];
	pthread_mutex_lock(&s->tls_reload_lock);
	stamp_files(s, now);
	if (!same_stamps(now, s->tls_stamps))
		(void)reload_locked(s, "file change"); /* logged, counted and recorded there */
	pthread_mutex_unlock(&s->tls_reload_lock);
}
