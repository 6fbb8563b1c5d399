/*
 * auth.c - SigV4 authentication of API requests and the lockout rule.
 *
 * Verified credentials are cached per (access key id, signing date): the
 * derived SigV4 signing key, as a pool of HMAC states keyed with it, and a
 * snapshot of the user.  A hit costs one
 * map lookup, so authentication adds two SHA-256 and one HMAC to a request.
 * The cache is flushed on seal and on any principal change made here, and
 * entries expire after CRED_TTL_MS (on the monotonic clock: a wall clock
 * stepped back must not keep a revoked key alive) so changes made by
 * another node sharing the store take effect quickly.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/http_parse.h"
#include "common/log.h"
#include "common/util.h"
#include "server/server.h"
#include "store/store.h"

#define CRED_TTL_MS 2000
#define CRED_CAPACITY 4096

typedef struct cred {
	atomic_int refs;
	hsm_user_record user;
	hsm_hmac_pool *signing_key; /* the derived SigV4 key, keyed, lent to each verification */
	uint64_t loaded_ns;         /* hsm_mono_ns() */
} cred;

static void *cred_ref(void *p)
{
	cred *c = p;
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	return c;
}

static void cred_unref(void *p)
{
	cred *c = p;
	if (c == NULL || atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	hsm_hmac_pool_free(c->signing_key);
	free(c);
}

hsm_result hsm_server_auth_init(hsm_server *s)
{
	s->sigv4.region = s->region;
	s->sigv4.service = HSM_SIGV4_SERVICE_KMS;
	s->sigv4.max_skew = s->opt.sigv4_skew_seconds;
	return hsm_shmap_new(CRED_CAPACITY, cred_ref, cred_unref, &s->creds);
}

void hsm_server_auth_free(hsm_server *s)
{
	hsm_shmap_free(s->creds);
	s->creds = NULL;
}

void hsm_server_auth_flush(hsm_server *s)
{
	atomic_fetch_add(&s->creds_flushed, 1);
	hsm_shmap_clear(s->creds);
	hsm_server_akids_stale(s); /* a key made here works at once, not at the list's next read */
}

/*
 * The request as SigV4 sees it; header pointers borrow from req.  About 2 KB,
 * kept on the worker's stack (threads of the default size) for one call: a
 * heap block that large misses glibc's per-thread cache, and authentication
 * runs for every request.
 */
typedef struct sig_view {
	hsm_sigv4_request r;
	hsm_sigv4_header headers[HSM_SIGV4_MAX_HEADERS];
	bool session_token; /* an X-Amz-Security-Token header, signed or not */
} sig_view;

/* Every header line the HTTP reader lets through is one SigV4 can read. */
_Static_assert(HSM_SIGV4_MAX_HEADERS >= HSM_HTTP_MAX_FIELDS, "SigV4 reads fewer headers");

static hsm_result view_of(hsm_http_req *req, sig_view *v)
{
	hsm_http_header_iter it = {0};
	const char *name, *value;
	size_t n = 0;
	v->session_token = false;
	while (hsm_http_req_next_header(req, &it, &name, &value)) {
		HSM_ENSURE(n < HSM_SIGV4_MAX_HEADERS, HSM_ERR_VALIDATION, "too many headers");
		v->headers[n].name = name;
		v->headers[n].value = value;
		v->session_token |= strcasecmp(name, "x-amz-security-token") == 0;
		n++;
	}
	size_t len = 0;
	v->r.method = hsm_http_req_method(req);
	v->r.path = hsm_http_req_path(req);
	v->r.query = hsm_http_req_query(req);
	v->r.headers = v->headers;
	v->r.n_headers = n;
	v->r.body = hsm_http_req_body(req, &len);
	v->r.body_len = len;
	return HSM_SUCCESS;
}

/* Loads and caches the credential of an access key for one signing date. */
static hsm_result load_cred(hsm_server *s, const hsm_sigv4_auth *a, const char *key, cred **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_secret *secret = NULL, *signing_key = NULL;
	cred *c = calloc(1, sizeof(*c));
	HSM_ENSURE(c != NULL, HSM_ERR_NOMEM, "out of memory");
	atomic_init(&c->refs, 1);
	/* A flush between this read and the put below (the key revoked, the user locked)
	 * must not be undone by caching what was read before it. */
	uint_fast64_t flushes = atomic_load(&s->creds_flushed);
	c->loaded_ns = hsm_mono_ns();
	res = hsm_kms_credential(s->kms, a->access_key_id, &c->user, &secret);
	if (res.err == HSM_ERR_UNRECOGNIZED_CLIENT)
		res = hsm_sigv4_unknown_key(a);
	if (hsm_failed(res))
		goto out;
	HSM_TRY(hsm_sigv4_signing_key(secret, a->date, a->region, a->service, &signing_key));
	HSM_TRY(hsm_hmac_pool_new(hsm_secret_bytes(signing_key), hsm_secret_len(signing_key),
	                          &c->signing_key));
	if (atomic_load(&s->creds_flushed) == flushes) {
		HSM_TRY(hsm_shmap_put(s->creds, key, c));
		/*
		 * A flush counts first and clears second: one counted by now may have
		 * cleared before the put, so the entry goes again; one not counted yet
		 * will clear it.  (Checking only before the put left a window.)
		 */
		if (atomic_load(&s->creds_flushed) != flushes)
			hsm_shmap_remove(s->creds, key);
	}
	*out = c;
	c = NULL;
out:
	hsm_secret_free(secret);
	hsm_secret_free(signing_key);
	cred_unref(c);
	return res;
}

static hsm_result find_cred(hsm_server *s, const hsm_sigv4_auth *a, cred **out)
{
	char key[HSM_SHMAP_KEY_MAX + 1];
	void *hit = NULL;
	hsm_sb b;
	hsm_sb_init(&b, key, sizeof(key));
	hsm_sb_addn(&b, a->access_key_id, 80);
	hsm_sb_add(&b, "/");
	hsm_sb_add(&b, a->date);
	if (hsm_shmap_get(s->creds, key, &hit)) {
		cred *c = hit;
		if (hsm_mono_ns() - c->loaded_ns < (uint64_t)CRED_TTL_MS * 1000000U) {
			*out = c;
			return HSM_SUCCESS;
		}
		cred_unref(c);
	}
	if (!hsm_server_akid_may_exist(s, a->access_key_id))
		return hsm_sigv4_unknown_key(a); /* the same answer a lookup would give */
	return load_cred(s, a, key, out);
}

/*
 * A wrong signature for a known user counts toward the lockout; the failure
 * that locks the user is an event of its own on the trail (UserLocked).
 */
/*
 * Authentication's own store changes (a failure counted, a lockout, a count
 * reset) commit before any record, as a handler's do: they carry the
 * request's outbox row, which its record (or the summary that counts a
 * refusal) settles, so a kill in between leaves the row (outbox.h).
 */
static hsm_result auth_outcome(hsm_server *s, hsm_http_req *req, const char *user,
                               const char *akid, bool success, bool *locked_now,
                               hsm_auth_result *out)
{
	/* Named as the request's record names its caller (rare: failures and resets only). */
	hsm_sender who;
	hsm_server_sender(s, req, user, &who);
	hsm_store_intent in;
	memset(&in, 0, sizeof(in));
	in.node_id = s->node_id;
	in.request_id = hsm_http_req_id(req);
	in.operation = "Authenticate";
	in.principal = who.principal;
	in.access_key_id = akid;
	in.source = who.source;
	hsm_store_intent_begin(&in);
	hsm_result r =
	    hsm_kms_auth_outcome(s->kms, user, success, atomic_load(&s->lockout_threshold), locked_now);
	hsm_store_intent_end();
	out->outboxed |= in.written;
	return r;
}

static void count_failure(hsm_server *s, hsm_http_req *req, const char *user, const char *akid,
                          hsm_auth_result *out)
{
	bool locked_now = false;
	hsm_result r = auth_outcome(s, req, user, akid, false, &locked_now, out);
	/* Said once a streak: a flood of wrong signatures on a full disk is not a log line each. */
	bool was = atomic_exchange(&s->auth_record_failing, hsm_failed(r));
	if (hsm_failed(r) && !was)
		hsm_log_failure("recording a failed authentication; no failure is counted toward "
		                "lockout_threshold until one can be (said once until then)");
	else if (hsm_ok(r) && was)
		hsm_info("failed authentications are counted toward lockout_threshold again");
	hsm_server_auth_flush(s); /* the user may be locked now: no cached entry may outlive that */
	if (locked_now) {
		hsm_audit_field f[] = {{"target_user", user}, {"target_access_key_id", akid}};
		hsm_server_event(s, "UserLocked", NULL, 0, HSM_SUCCESS, f, 2);
	}
}

/* Whether SignedHeaders ("host;x-amz-date;...") names x-amz-security-token. */
static bool signs_session_token(const char *signed_headers)
{
	static const char name[] = "x-amz-security-token";
	for (const char *p = strstr(signed_headers, name); p != NULL; p = strstr(p + 1, name))
		if ((p == signed_headers || p[-1] == ';') &&
		    (p[sizeof(name) - 1] == ';' || p[sizeof(name) - 1] == '\0'))
			return true;
	return false;
}

void hsm_server_claimed_akid(hsm_http_req *req, hsm_auth_result *out)
{
	sig_view v;
	hsm_sigv4_auth a;
	hsm_error_info refusal = *hsm_last_error();
	out->akid[0] = '\0';
	if (hsm_failed(view_of(req, &v)) || hsm_failed(hsm_sigv4_parse(&v.r, &a))) {
		/* The parse's own failure replaced the refusal's: put that back for its answer. */
		hsm_error_restore(&refusal);
		return;
	}
	hsm_sb b;
	hsm_sb_init(&b, out->akid, sizeof(out->akid));
	hsm_sb_add(&b, a.access_key_id);
}

hsm_result hsm_server_authenticate(hsm_server *s, hsm_http_req *req, hsm_auth_result *out)
{
	hsm_result res = HSM_SUCCESS;
	sig_view v;
	hsm_sigv4_auth a;
	hsm_sigv4_scope scope;
	hsm_sb b;
	cred *c = NULL;
	int64_t now = hsm_now();
	memset(out, 0, sizeof(*out));
	HSM_TRY(view_of(req, &v));
	HSM_TRY(hsm_sigv4_parse(&v.r, &a));
	hsm_sb_init(&b, out->akid, sizeof(out->akid));
	hsm_sb_add(&b, a.access_key_id);
	/*
	 * hsmd issues no temporary credentials: a session token (an AWS role's,
	 * left in a client's environment; SDKs sign it) is refused, signed or
	 * not, as AWS refuses one it did not issue, rather than ignored.
	 */
	HSM_CHECK(!v.session_token && !signs_session_token(a.signed_headers),
	          HSM_ERR_UNRECOGNIZED_CLIENT,
	          "The security token included in the request is invalid: hsmd issues no session "
	          "tokens; sign with an access key alone");
	HSM_TRY(hsm_sigv4_check_scope(&s->sigv4, &v.r, &a, now, &scope));
	HSM_TRY(find_cred(s, &a, &c));
	out->key_found = true;
	hsm_keyed_hmac *mac = NULL;
	res = hsm_hmac_pool_take(c->signing_key, &mac);
	if (hsm_ok(res))
		res = hsm_sigv4_verify_with(&v.r, &a, &scope, mac);
	hsm_keyed_hmac_free(mac);
	if (res.err == HSM_ERR_BAD_SIGNATURE) {
		out->counted_failure = !c->user.disabled && !c->user.locked;
		if (out->counted_failure)
			count_failure(s, req, c->user.name, a.access_key_id, out);
		res = HSM_FAIL(HSM_ERR_BAD_SIGNATURE,
		               "The request signature we calculated does not match the signature you "
		               "provided. Check your AWS Secret Access Key and signing method.");
	}
	HSM_TRY(res);
	HSM_TRY(hsm_kms_user_admit(&c->user));
	if (c->user.failed_auth > 0) {
		HSM_TRY(auth_outcome(s, req, c->user.name, a.access_key_id, true, NULL, out));
		hsm_server_auth_flush(s);
	}
	hsm_sb_init(&b, out->user, sizeof(out->user));
	hsm_sb_add(&b, c->user.name);
	out->caller.user = out->user;
	out->caller.access_key_id = out->akid;
	out->caller.roles = c->user.roles;
	out->caller.local = false;
	out->caller.secure_transport = hsm_http_req_is_tls(req);
	out->caller.source_ip = hsm_http_req_remote_addr(req);
	out->caller.user_agent = hsm_http_req_header(req, "user-agent");
out:
	cred_unref(c);
	return res;
}
