/*
 * dispatch.c - the request pipeline.
 *
 *   route -> (sealed?) -> authenticate -> audit accepting? -> parse ->
 *   execute (handler, which authorizes through kms/) -> render ->
 *   audit record written -> response sent
 *
 * The response of every API request is sent only once its audit record is
 * written: the pending response travels through the audit writer, whose
 * completion callback hands it back to the HTTP layer.  If the record cannot
 * be written, the client gets ServiceUnavailableException instead of the
 * result (fail closed).  /healthz, /readyz, /metrics and the JWKS document
 * are read-only, touch no key material and are not audited; they are the
 * documented exceptions to authentication.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/encoding.h"
#include "common/log.h"
#include "common/util.h"
#include "server/api.h"
#include "server/outbox.h"
#include "server/server.h"
#include "store/store.h"

#define CONTENT_TYPE_JSON "application/x-amz-json-1.1"
#define KMS_PREFIX "TrentService."
#define ADMIN_PREFIX "HsmdAdmin."
#define JWT_PREFIX "HsmdJwt."
#define CIPHER_PREFIX "HsmdCipher."
#define TOKEN_PREFIX "HsmdToken."
#define JWKS_PATH "/.well-known/jwks.json"
/* An answer's members besides what its request brought: key ARN, key material id, names. */
#define SECRET_ANSWER_SLACK 512
/*
 * What a secret-bearing answer's room is sized by at most: the largest such
 * answer (GcmDecrypt's 64 KiB of plaintext, in base64) fits; a larger request
 * body, which no such answer needs, does not take more of the locked heap.
 */
#define SECRET_ANSWER_RESERVE_MAX (96 * 1024)

/* A response waiting for its audit record. */
typedef struct pending {
	hsm_server *s;
	hsm_http_req *req;
	unsigned slot;
	int status;
	/*
	 * Why the answer is an error, for /metrics; HSM_OK when it is not.  Mostly
	 * the error the answer carries; a request whose own record failed while
	 * the trail stayed up is answered HSM_ERR_AUDIT_UNAVAILABLE's 503 but
	 * counted by its record's failure (see audit_done).
	 */
	hsm_err err;
	hsm_buf body;
	/* The answer may carry a secret: body goes to the secure heap once admitted. */
	bool secret_answer;
	/* A successful use of keys, noted once the record is written (GetKeyLastUsage). */
	const char *use_op;
	char use_key[HSM_UUID_STRLEN + 1], use_source[HSM_UUID_STRLEN + 1];
	bool outboxed; /* the request changed the store: its outbox row waits for the record */
	const char *op; /* what its record names (the request or a literal outlives it) */
	/* Refused because the trail takes no records: nothing ran, and its answer says so. */
	bool trail_refusal;
	/*
	 * Its caller's access key could not be looked up, the store being out of
	 * reach: counted unavailable in /metrics, like a sealed node's refusal,
	 * since no request of any caller not yet authenticated can be served (and
	 * made-up credentials must not move the error ratio).
	 */
	bool store_refused;
} pending;

static void respond_now(hsm_server *s, hsm_http_req *req, unsigned slot, int status, hsm_err err,
                        bool store_refused, const char *type, const hsm_buf *body)
{
	hsm_metrics_observe(&s->metrics, slot, status, err, store_refused,
	                    hsm_mono_ns() - hsm_http_req_start_ns(req));
	hsm_http_respond(req, status, type, body->data, body->len, 0, NULL);
}

/*
 * The KMS error body: {"__type": "...", "message": "..."}.  Returns the
 * status to answer with it: `status`, or 500 when there was no memory to
 * write it, since a client error without its code would tell the caller its
 * request was wrong.
 */
static int error_body(hsm_err err, const char *message, int status, hsm_buf *out)
{
	hsm_jw w;
	hsm_buf_clear(out);
	hsm_jw_init(&w, out);
	hsm_jw_begin(&w);
	hsm_jw_str(&w, "__type", hsm_err_kms_name(err));
	hsm_jw_str(&w, "message", message);
	hsm_jw_end(&w);
	if (hsm_ok(hsm_jw_finish(&w)))
		return status;
	hsm_buf_clear(out);
	return 500;
}

/* The request's record is written or failed: its outbox row, if any, can be settled. */
static void settle_outbox(pending *p, bool recorded)
{
	if (p->outboxed)
		hsm_outbox_settled(p->s->outbox, hsm_http_req_id(p->req), recorded,
		                   hsm_audit_next_seq(p->s->audit));
}

static void audit_done(void *arg, hsm_result result)
{
	pending *p = arg;
	settle_outbox(p, hsm_ok(result));
	if (hsm_ok(result) && p->use_op != NULL) {
		int64_t now = hsm_now_ms();
		const char *id = hsm_http_req_id(p->req);
		hsm_usage_note(p->s->usage, p->use_key, p->use_op, id, now);
		if (p->use_source[0] != '\0' && strcmp(p->use_source, p->use_key) != 0)
			hsm_usage_note(p->s->usage, p->use_source, p->use_op, id, now);
	}
	if (hsm_failed(result))
		atomic_fetch_add_explicit(&p->s->metrics.audit_refusals, 1, memory_order_relaxed);
	/* A refusal for the trail's sake keeps its own answer: "result withheld" would
	 * say the request ran (an Unseal's share applied, a CreateKey's key made). */
	if (hsm_failed(result) && !p->trail_refusal) {
		/*
		 * HSM_ERR_AUDIT_UNAVAILABLE: the trail is down or stopping, which its
		 * gauges and alerts report (an outage: unavailable in /metrics).  Any
		 * other failure is this record's alone, the trail staying up (no memory
		 * for it, a full queue: hsm_audit_done_fn), which no audit gauge shows:
		 * a server error, for HsmdErrors to see.
		 */
		p->err = result.err;
		p->store_refused = false;
		/* Its record may still reach the trail, saying how the request ended: the
		 * trail is told that its caller got none of that (withheld.c). */
		hsm_server_note_withheld(p->s, hsm_http_req_id(p->req), p->op != NULL ? p->op : "");
		p->status = error_body(HSM_ERR_INTERNAL,
		                       "the request ran but could not be audited, so its result is "
		                       "withheld; sent again, it would run again",
		                       HSM_HTTP_WITHHELD, &p->body);
	}
	respond_now(p->s, p->req, p->slot, p->status, p->err, p->store_refused, CONTENT_TYPE_JSON,
	            &p->body);
	hsm_buf_free(&p->body);
	free(p);
}

/* What a finished request tells the audit trail. */
typedef struct outcome {
	const char *operation;
	const hsm_auth_result *auth; /* may be NULL */
	const hsm_api_audit *api;    /* may be NULL */
	hsm_err err;
	bool answer_lost; /* done (err HSM_OK), but its answer could not be written */
	/* operation is UNKNOWN_OPERATION: the name claimed goes into extra, sanitized */
	bool unknown_op;
} outcome;

/*
 * The operation a request's record names when hsmd does not know the one it
 * claims.  The claimed name is the client's to choose (tabs, any bytes,
 * kilobytes of them): recorded as its own op, every new name would be a row
 * of its own in `hsmctl audit report`, dressed as anything.  So the record
 * says UnknownOperation, and extra.claimed_operation keeps the name cut to
 * letters, digits and dots (any other byte a '?') and to HSM_PLAIN_MAX of them.
 */
#define UNKNOWN_OPERATION "UnknownOperation"

static hsm_audit_outcome audit_outcome_of(hsm_err err)
{
	if (err == HSM_OK)
		return HSM_AUDIT_SUCCESS;
	switch (err) {
	case HSM_ERR_ACCESS_DENIED:
	case HSM_ERR_UNRECOGNIZED_CLIENT:
	case HSM_ERR_BAD_SIGNATURE:
	case HSM_ERR_INCOMPLETE_SIGNATURE:
	case HSM_ERR_MISSING_AUTH:
	case HSM_ERR_PRINCIPAL_LOCKED:
	case HSM_ERR_SEALED:
	case HSM_ERR_APPROVAL_REQUIRED:
		return HSM_AUDIT_DENIED;
	default:
		return HSM_AUDIT_ERROR;
	}
}

/*
 * The encryption context's record: "k1=<hash>,k2=<hash>", 128-bit keyed-hash
 * prefixes of the values.  The keys are the client's: ',', '=' and '\' in
 * them are escaped with a '\', so that no key can pose as pairs of its own
 * ("a=<hex>,b").  A key is cut at CTX_KEY_MAX bytes (escaped, on a character
 * boundary) and then ends with CTX_CUT, its value's hash kept; pairs beyond
 * the field's room are left out, and the field then ends with ",\[truncated]".
 * Escaping writes a '\' before ',', '=' and '\' only, so CTX_CUT cannot be
 * part of a key.
 */
#define CTX_KEY_MAX 128
#define CTX_CUT "\\[truncated]"
#define CTX_HASH_HEX 32

/* key escaped into out (room for CTX_KEY_MAX + sizeof(CTX_CUT)); returns its length. */
static size_t context_key(const char *key, char *out)
{
	size_t o = 0, i = 0;
	for (; key[i] != '\0'; i++) {
		bool esc = key[i] == ',' || key[i] == '=' || key[i] == '\\';
		if (o + 1 + esc > CTX_KEY_MAX)
			break;
		if (esc)
			out[o++] = '\\';
		out[o++] = key[i];
	}
	if (key[i] == '\0')
		return o;
	/* Not within a character: its bytes so far go too (they were copied unescaped). */
	while (i > 0 && ((unsigned char)key[i] & 0xC0) == 0x80) {
		i--;
		o--;
	}
	memcpy(out + o, CTX_CUT, sizeof(CTX_CUT) - 1);
	return o + sizeof(CTX_CUT) - 1;
}

static void context_field(hsm_server *s, const hsm_api_audit *a, char *out, size_t cap)
{
	hsm_sb b;
	hsm_keyed_hmac *hasher = NULL;
	bool keyed = hsm_ok(hsm_ks_audit_hasher(s->ks, &hasher));
	/* Room kept for the mark that pairs were left out. */
	size_t room = cap - 1 - (sizeof("," CTX_CUT) - 1);
	hsm_sb_init(&b, out, cap);
	for (size_t i = 0; i < a->n_ctx; i++) {
		const char *value = a->ctx[i].value;
		uint8_t mac[HSM_SHA256_LEN];
		char h[2 * HSM_SHA256_LEN + 1], key[CTX_KEY_MAX + sizeof(CTX_CUT)];
		size_t key_len = context_key(a->ctx[i].key, key);
		key[key_len] = '\0';
		if (b.len + (i > 0) + key_len + 1 + CTX_HASH_HEX > room) {
			hsm_sb_add(&b, "," CTX_CUT);
			break;
		}
		if (keyed && hsm_ok(hsm_keyed_hmac_of(hasher, value, strlen(value), mac)))
			hsm_hex_encode_str(h, mac, sizeof(mac));
		else
			memcpy(h, "unavailable", sizeof("unavailable"));
		if (i > 0)
			hsm_sb_add(&b, ",");
		hsm_sb_add(&b, key);
		hsm_sb_add(&b, "=");
		hsm_sb_addn(&b, h, CTX_HASH_HEX);
	}
	hsm_keyed_hmac_free(hasher);
}

/*
 * The operation a successful request counts as for GetKeyLastUsage (KMS's
 * KeyLastUsageTrackingOperation), or NULL for one that does not count.
 * hsmd's own cryptographic operations count as the KMS one they resemble.
 */
static const char *tracked_as(unsigned slot)
{
	switch (slot) {
	case HSM_OP_Encrypt:
	case HSM_OP_Decrypt:
	case HSM_OP_ReEncrypt:
	case HSM_OP_GenerateDataKey:
	case HSM_OP_GenerateDataKeyWithoutPlaintext:
	case HSM_OP_GenerateDataKeyPair:
	case HSM_OP_GenerateDataKeyPairWithoutPlaintext:
	case HSM_OP_Sign:
	case HSM_OP_Verify:
	case HSM_OP_GenerateMac:
	case HSM_OP_VerifyMac:
	case HSM_OP_DeriveSharedSecret:
		return hsm_op_get((hsm_op)slot)->name;
	case HSM_OP_SignToken:
		return "Sign";
	case HSM_OP_GcmEncrypt:
		return "Encrypt";
	case HSM_OP_GcmDecrypt:
		return "Decrypt";
	default:
		return NULL;
	}
}

static void kick_audit(void *audit)
{
	hsm_audit_kick(audit);
}

void hsm_server_sender(const hsm_server *s, hsm_http_req *req, const char *user,
                       hsm_sender *out)
{
	hsm_sb b;
	hsm_sb_init(&b, out->source, sizeof(out->source));
	hsm_sb_add(&b, hsm_http_req_remote_addr(req));
	hsm_sb_add(&b, ":");
	hsm_sb_u64(&b, hsm_http_req_remote_port(req));
	out->principal[0] = '\0';
	if (user != NULL && user[0] != '\0') {
		hsm_sb_init(&b, out->principal, sizeof(out->principal));
		hsm_sb_add(&b, "arn:aws:iam::");
		hsm_sb_add(&b, s->account);
		hsm_sb_add(&b, ":user/");
		hsm_sb_add(&b, user);
	}
}

static void sender_of(const hsm_server *s, hsm_http_req *req, const hsm_auth_result *auth,
                      hsm_sender *out)
{
	hsm_server_sender(s, req, auth != NULL ? auth->user : NULL, out);
}

/* A request's outbox intent; the sender is formatted only if the request writes the store. */
typedef struct outbox_intent {
	hsm_store_intent in; /* first: prepare_sender gets it */
	hsm_sender who;
	pending *p;
	const hsm_auth_result *auth;
} outbox_intent;

static void prepare_sender(hsm_store_intent *in)
{
	outbox_intent *x = (outbox_intent *)in;
	sender_of(x->p->s, x->p->req, x->auth, &x->who);
	in->principal = x->who.principal;
	in->source = x->who.source;
}

/*
 * From here to outbox_end, every store change the thread commits carries
 * the request's outbox row (store.h): a kill before its record is written
 * leaves the row, and the next start records the change (outbox.h).
 */
static void outbox_begin(outbox_intent *x, pending *p, const char *operation,
                         const hsm_auth_result *auth, const char *key_id)
{
	/* Field by field: every request passes here, and the buffers need no zeroing. */
	hsm_store_intent *in = &x->in;
	in->node_id = p->s->node_id;
	in->request_id = hsm_http_req_id(p->req);
	in->operation = operation;
	in->principal = NULL;
	in->access_key_id = auth != NULL ? auth->akid : NULL;
	in->source = NULL;
	in->key_id = key_id;
	in->prepare = prepare_sender;
	in->touched_key[0] = '\0';
	in->written = false;
	in->uncertain = false;
	x->p = p;
	x->auth = auth;
	hsm_store_intent_begin(in);
}

static void outbox_end(const outbox_intent *x)
{
	hsm_store_intent_end();
	x->p->outboxed |= x->in.written;
}

static void submit_audit(pending *p, const outcome *o)
{
	hsm_server *s = p->s;
	hsm_audit_field extra[16];
	size_t n_extra = 0;
	char ctx[HSM_AUDIT_VALUE_MAX];
	hsm_sender who;
	char claimed[HSM_PLAIN_CAP];
	sender_of(s, p->req, o->auth, &who);
	const char *source = who.source, *principal = who.principal;
	const char *target = o->unknown_op ? hsm_http_req_header(p->req, "X-Amz-Target") : NULL;
	if (target != NULL) {
		hsm_server_plain_text(target, ".", claimed);
		extra[n_extra++] = (hsm_audit_field){"claimed_operation", claimed};
	}
	if (o->answer_lost)
		extra[n_extra++] = (hsm_audit_field){"answer", "lost: out of memory"};
	if (o->api != NULL && o->api->algorithm != NULL)
		extra[n_extra++] = (hsm_audit_field){"algorithm", o->api->algorithm};
	if (o->api != NULL && o->api->message_type != NULL)
		extra[n_extra++] = (hsm_audit_field){"message_type", o->api->message_type};
	if (o->api != NULL && o->api->grant_id[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"grant_id", o->api->grant_id};
	if (o->api != NULL && o->api->via_grant[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"via_grant", o->api->via_grant};
	if (o->api != NULL && o->api->source_via_grant[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"source_via_grant", o->api->source_via_grant};
	if (o->api != NULL && o->api->approval_id[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"approval_id", o->api->approval_id};
	if (o->api != NULL && o->api->cert_id[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"cert_id", o->api->cert_id};
	if (o->api != NULL && o->api->source_key_id[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"source_key_id", o->api->source_key_id};
	if (o->api != NULL && o->api->target_user[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"target_user", o->api->target_user};
	if (o->api != NULL && o->api->target_roles[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"target_roles", o->api->target_roles};
	if (o->api != NULL && o->api->share[0] != '\0')
		extra[n_extra++] = (hsm_audit_field){"share", o->api->share};
	if (o->api != NULL && o->api->target_access_key_id[0] != '\0')
		extra[n_extra++] =
		    (hsm_audit_field){"target_access_key_id", o->api->target_access_key_id};
	if (o->err == HSM_OK && o->api != NULL && o->api->key_id[0] != '\0' &&
	    (p->use_op = tracked_as(p->slot)) != NULL) {
		memcpy(p->use_key, o->api->key_id, sizeof(p->use_key));
		memcpy(p->use_source, o->api->source_key_id, sizeof(p->use_source));
	}
	if (o->api != NULL && o->api->n_ctx > 0) {
		context_field(s, o->api, ctx, sizeof(ctx));
		extra[n_extra++] = (hsm_audit_field){"encryption_context", ctx};
	}
	hsm_audit_record rec = {
	    .type = HSM_AUDIT_REQUEST,
	    .principal = principal[0] ? principal : NULL,
	    .access_key_id = o->auth != NULL && o->auth->akid[0] ? o->auth->akid : NULL,
	    .source = source,
	    .operation = o->operation,
	    .key_id = o->api != NULL && o->api->key_id[0] ? o->api->key_id : NULL,
	    .key_version = o->api != NULL ? o->api->key_version : 0,
	    .outcome = audit_outcome_of(o->err),
	    .error = o->err != HSM_OK ? hsm_err_kms_name(o->err) : NULL,
	    .request_id = hsm_http_req_id(p->req),
	    .latency_us = (hsm_mono_ns() - hsm_http_req_start_ns(p->req)) / 1000,
	    .extra = extra,
	    .n_extra = n_extra,
	};
	p->op = o->operation;
	/*
	 * The writer is woken once per loop pass of the worker, or per batch of
	 * a lane thread, not per record.
	 */
	hsm_result r = hsm_audit_submit_lazy(s->audit, &rec, audit_done, p);
	if (hsm_failed(r))
		audit_done(p, r); /* not queued: the callback will never come */
	else if (!hsm_lane_at_batch_end(kick_audit, s->audit))
		hsm_http_at_pass_end(kick_audit, s->audit);
}

/*
 * Finishes a request: error or success body already in p->body.  A refusal
 * nobody authenticated past its source's rate of records is answered the
 * same, now, and counted in the source's summary instead (refusals.h).
 */
static void finish(pending *p, const outcome *o)
{
	p->err = o->err;
	/*
	 * Refused because the trail's disk is low on space: a record of the
	 * refusal would eat into the space kept for the records of requests
	 * already admitted (clients retrying a 503 would soon use it all).  One
	 * whose authentication changed the store (a count reset) gets its record
	 * all the same: the change needs one, and it happens once per failure.
	 * Counted instead, in the event that ends the spell.  (In an outage the
	 * record fails at once, and the outage's own event counts it.)
	 */
	if (o->err == HSM_ERR_AUDIT_UNAVAILABLE && hsm_audit_low_space(p->s->audit) &&
	    !p->outboxed) {
		hsm_audit_note_refused(p->s->audit);
	} else if (hsm_server_own_record(p->s, p->req, o->operation, o->auth, o->err)) {
		p->trail_refusal = o->err == HSM_ERR_AUDIT_UNAVAILABLE;
		submit_audit(p, o);
		return;
	}
	/* Counted in a summary or a low-space event instead of a record of its own: an
	 * authentication's change (a failure counted) is settled by that, not recovered. */
	settle_outbox(p, true);
	respond_now(p->s, p->req, p->slot, p->status, p->err, p->store_refused, CONTENT_TYPE_JSON,
	            &p->body);
	hsm_buf_free(&p->body);
	free(p);
}

/*
 * secret_answer: the answer may carry a secret, so once the request is admitted
 * (pending_admitted) it is written in the secure heap.  Until then its body is
 * ordinary memory: a refusal carries no secret, and what a caller not yet
 * authenticated sends must not decide how much of the locked heap is taken.
 */
static pending *pending_new(hsm_server *s, hsm_http_req *req, unsigned slot, bool secret_answer)
{
	pending *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->s = s;
	p->req = req;
	p->slot = slot;
	p->status = 200;
	p->secret_answer = secret_answer;
	hsm_buf_init(&p->body);
	return p;
}

/* The request was admitted (authenticated, or takes no credentials and passed its checks). */
static void pending_admitted(pending *p)
{
	if (!p->secret_answer || p->body.secure)
		return;
	hsm_buf_free(&p->body); /* nothing written yet */
	hsm_buf_init_secure(&p->body);
	/*
	 * Room for the whole answer at once: grown by doubling from 64 bytes,
	 * a Decrypt's answer took four secure-heap allocations, each under
	 * the heap's one lock and each wiping what it replaced.  The answers
	 * that carry a secret are at most the request (a Decrypt's
	 * plaintext is shorter than its ciphertext) plus their fixed
	 * members, GenerateDataKeyPair's aside, which still grows.
	 */
	size_t len = 0;
	(void)hsm_http_req_body(p->req, &len);
	if (len > SECRET_ANSWER_RESERVE_MAX)
		len = SECRET_ANSWER_RESERVE_MAX;
	hsm_result r = hsm_buf_reserve(&p->body, len + SECRET_ANSWER_SLACK);
	(void)r; /* short of secure heap: nothing changed, and writing the answer fails as before */
}

/*
 * An internal failure answered to an authenticated caller (who gets its text)
 * goes to the log too, where an operator looks: at most one line a second,
 * with a count of those left out, so a full store disk does not flood it.
 */
static void log_internal_failure(const pending *p, const char *text)
{
	static atomic_llong last_sec;
	static atomic_ullong unlogged;
	long long now = (long long)hsm_now();
	long long last = atomic_load(&last_sec);
	if (now == last || !atomic_compare_exchange_strong(&last_sec, &last, now)) {
		atomic_fetch_add(&unlogged, 1);
		return;
	}
	unsigned long long skipped = atomic_exchange(&unlogged, 0);
	if (skipped > 0)
		hsm_warn("request %s failed: %s (and %llu more internal failures since the last "
		         "line)",
		         hsm_http_req_id(p->req), text, skipped);
	else
		hsm_warn("request %s failed: %s", hsm_http_req_id(p->req), text);
}

static void fail_request(pending *p, outcome *o, hsm_result r)
{
	o->err = r.err;
	p->status = hsm_err_http_status(r.err);
	/* Where the database is (libpq's words name its host and port) is none of an
	 * application's business: not said to any caller. */
	bool store_unreachable =
	    r.err == HSM_ERR_DEPENDENCY_TIMEOUT ||
	    (r.err == HSM_ERR_STORE && strncmp(hsm_last_message(), HSM_STORE_CONNECT_FAILED,
	                                       strlen(HSM_STORE_CONNECT_FAILED)) == 0);
	if ((p->status == 500 || store_unreachable) && r.err != HSM_ERR_KEY_UNAVAILABLE &&
	    (store_unreachable || o->auth == NULL || o->auth->user[0] == '\0')) {
		/*
		 * An internal failure's text names what failed inside the node (a
		 * database host and port, a file), and so may a store that timed
		 * out (libpq's words): to a caller not authenticated (the failure
		 * came first, or it has no credentials at all), and for a store
		 * that cannot be reached to every caller, the answer says no more
		 * than that something failed; the log has the text under the
		 * request id the answer carries.
		 */
		char msg[160];
		/* Through the limiter too: any client, made-up credentials and all,
		 * makes one of these while the store is out of reach. */
		log_internal_failure(p, hsm_last_message());
		p->store_refused = store_unreachable && (o->auth == NULL || o->auth->user[0] == '\0');
		snprintf(msg, sizeof(msg),
		         "the request failed inside hsmd; its log has the detail under request id %s",
		         hsm_http_req_id(p->req));
		p->status = error_body(r.err, msg, p->status, &p->body);
	} else {
		if (p->status == 500 && r.err != HSM_ERR_KEY_UNAVAILABLE)
			log_internal_failure(p, hsm_last_message());
		p->status = error_body(r.err, hsm_last_message(), p->status, &p->body);
	}
	finish(p, o);
}

/*
 * The request was carried out (a change committed, a key used) but there was
 * no memory to write its answer.  Its record says it was done and that its
 * answer was lost, and the caller is told the same, so that a retry knows
 * the first attempt took effect.
 */
static void lose_answer(pending *p, outcome *o)
{
	char msg[160];
	o->answer_lost = true;
	snprintf(msg, sizeof(msg),
	         "%.64s was carried out, but hsmd ran out of memory writing its answer", o->operation);
	log_internal_failure(p, msg);
	p->status = error_body(HSM_ERR_NOMEM, msg, 500, &p->body);
	finish(p, o);
}

/* Operations whose responses carry plaintext, private keys or shared secrets. */
static bool returns_secret(hsm_op op)
{
	return op == HSM_OP_Decrypt || op == HSM_OP_GenerateDataKey ||
	       op == HSM_OP_GenerateDataKeyPair || op == HSM_OP_GenerateRandom ||
	       op == HSM_OP_DeriveSharedSecret || op == HSM_OP_GcmDecrypt;
}

/*
 * Operations that take DryRun: those that use key material (GetPublicKey
 * aside, as in AWS KMS, and hsmd's GetKeyCheckValue) and the grant changes.
 */
static bool takes_dry_run(hsm_op op)
{
	return (hsm_op_get(op)->cls == HSM_OPC_CRYPTO && op != HSM_OP_GetPublicKey &&
	        op != HSM_OP_GetKeyCheckValue) ||
	       op == HSM_OP_CreateGrant || op == HSM_OP_RetireGrant || op == HSM_OP_RevokeGrant;
}

/* Operations with a GrantTokens member: those that use a key, CreateGrant and DescribeKey. */
static bool takes_grant_tokens(hsm_op op)
{
	return hsm_op_get(op)->cls == HSM_OPC_CRYPTO || op == HSM_OP_CreateGrant ||
	       op == HSM_OP_DescribeKey;
}

/*
 * The members the API model requires of the operations that take grant
 * tokens (the AWS KMS service model; hsmd's own operations as documented).
 * AWS checks a request's shape before its grant tokens, so a request that
 * lacks one of these answers ValidationException whatever its tokens are.
 */
#define MEMBERS(...) ((const char *const[]){__VA_ARGS__, NULL})
static const char *const *const required_members[HSM_OP_COUNT] = {
    [HSM_OP_CreateGrant] = MEMBERS("KeyId", "GranteePrincipal", "Operations"),
    [HSM_OP_Decrypt] = MEMBERS("CiphertextBlob"),
    [HSM_OP_DescribeKey] = MEMBERS("KeyId"),
    [HSM_OP_Encrypt] = MEMBERS("KeyId", "Plaintext"),
    [HSM_OP_GenerateDataKey] = MEMBERS("KeyId"),
    [HSM_OP_GenerateDataKeyPair] = MEMBERS("KeyId", "KeyPairSpec"),
    [HSM_OP_GenerateDataKeyPairWithoutPlaintext] = MEMBERS("KeyId", "KeyPairSpec"),
    [HSM_OP_GenerateDataKeyWithoutPlaintext] = MEMBERS("KeyId"),
    [HSM_OP_GenerateMac] = MEMBERS("Message", "KeyId", "MacAlgorithm"),
    [HSM_OP_GetPublicKey] = MEMBERS("KeyId"),
    [HSM_OP_ReEncrypt] = MEMBERS("CiphertextBlob", "DestinationKeyId"),
    [HSM_OP_Sign] = MEMBERS("KeyId", "Message", "SigningAlgorithm"),
    [HSM_OP_Verify] = MEMBERS("KeyId", "Message", "Signature", "SigningAlgorithm"),
    [HSM_OP_VerifyMac] = MEMBERS("Message", "KeyId", "MacAlgorithm", "Mac"),
    [HSM_OP_DeriveSharedSecret] = MEMBERS("KeyId", "KeyAgreementAlgorithm", "PublicKey"),
    [HSM_OP_SignToken] = MEMBERS("KeyId", "Claims"),
    [HSM_OP_GcmEncrypt] = MEMBERS("KeyId", "Plaintext"),
    [HSM_OP_GcmDecrypt] = MEMBERS("KeyId", "Ciphertext", "Iv"),
    [HSM_OP_GetKeyCheckValue] = MEMBERS("KeyId"),
};
#undef MEMBERS

/* Called only once a grant token was refused: the well-formed request pays nothing. */
static hsm_result require_members(hsm_op op, json_t *doc)
{
	for (const char *const *m = required_members[op]; m != NULL && *m != NULL; m++)
		HSM_GUARD(hsm_json_present(doc, *m));
	return HSM_SUCCESS;
}

/*
 * A request refused or failed before its handler named its key: the record
 * still says which key the caller asked for (when it resolves), so a key's
 * trail shows the attempts on it that failed.  Only failures pay for this lookup.
 */
static void note_key(hsm_api_ctx *c, json_t *doc)
{
	const char *ref = json_string_value(json_object_get(doc, "KeyId"));
	if (ref != NULL && strlen(ref) <= HSM_KEYID_MAX)
		hsm_api_note_ref(c, ref);
}

/* Runs the handler on the request document (kept alive until the audit record is built). */
static hsm_result run_kms(hsm_server *s, hsm_op op, const hsm_auth_result *auth, pending *p,
                          hsm_api_audit *audit, json_t *doc, hsm_commit_gate *gate,
                          hsm_store_intent *intent, bool *answer_lost)
{
	/*
	 * DryRun: everything is checked, nothing performed.  Operations without
	 * the member ignore it, as any member they do not have.
	 */
	bool dry = false, present;
	if (takes_dry_run(op))
		HSM_GUARD(hsm_json_bool(doc, "DryRun", &dry, &present));
	hsm_caller caller = auth->caller;
	caller.dry_run = dry;
	caller.gate = gate;
	/* GrantTokens, where the API has them: well-formed, and a reason to read grants afresh. */
	const char **tokens = NULL;
	size_t n_tokens = 0;
	if (takes_grant_tokens(op))
		HSM_GUARD(hsm_json_string_list(doc, "GrantTokens", false, HSM_GRANT_TOKENS_MAX, &tokens,
		                               &n_tokens));
	hsm_result tr = HSM_SUCCESS;
	for (size_t i = 0; i < n_tokens && hsm_ok(tr); i++) {
		size_t len = strlen(tokens[i]);
		if (len < 1 || len > 8192) { /* the API's GrantTokenType; then its form */
			tr = HSM_FAIL(HSM_ERR_VALIDATION,
			              "1 validation error detected: Value at 'grantTokens' failed to "
			              "satisfy constraint: Member must satisfy constraint: [Member must "
			              "have length less than or equal to 8192, Member must have length "
			              "greater than or equal to 1]");
			break;
		}
		char tk[HSM_UUID_STRLEN + 1], tg[HSM_GRANT_ID_LEN + 1];
		tr = hsm_grant_token_parse(tokens[i], tk, tg);
	}
	free(tokens);
	if (tr.err == HSM_ERR_INVALID_GRANT_TOKEN)
		HSM_GUARD(require_members(op, doc));
	/* DescribeKey takes grant tokens but does not answer InvalidGrantTokenException. */
	if (tr.err == HSM_ERR_INVALID_GRANT_TOKEN && op == HSM_OP_DescribeKey) {
		char why[HSM_ERRMSG_MAX]; /* copied first: the message is formatted into its own buffer */
		snprintf(why, sizeof(why), "%s", hsm_last_message());
		tr = HSM_FAIL(HSM_ERR_VALIDATION, "GrantTokens: %s", why);
	}
	HSM_GUARD(tr);
	caller.grant_tokens = n_tokens > 0;
	hsm_authz_note note = {"", ""};
	caller.note = &note;
	hsm_jw w;
	hsm_jw_init(&w, &p->body);
	hsm_jw_begin(&w);
	HSM_GUARD(hsm_jw_finish(&w)); /* no room for an answer: refused before anything is done */
	hsm_api_ctx c = {.kms = s->kms, .caller = &caller, .req = doc, .w = &w, .out = &p->body};
	intent->key_id = c.audit.key_id; /* the key the handler names, as its commit has it */
	hsm_result r = hsm_api_run(op, &c);

	if (hsm_failed(r) && c.audit.key_id[0] == '\0')
		note_key(&c, doc);
	hsm_jw_end(&w);
	*answer_lost = hsm_ok(r) && hsm_failed(hsm_jw_finish(&w));
	memcpy(c.audit.via_grant, note.grant_id, sizeof(c.audit.via_grant));
	memcpy(c.audit.source_via_grant, note.source_grant_id, sizeof(c.audit.source_via_grant));
	*audit = c.audit;
	intent->key_id = audit->key_id; /* for a commit after the handler (an approval given back) */
	return r;
}

/* The sealed/error/uninitialized refusal with its precise message. */
static hsm_result require_serving(hsm_server *s)
{
	if (hsm_keystore_state(s->ks) == HSM_NODE_UNSEALED)
		return HSM_SUCCESS;
	atomic_fetch_add_explicit(&s->metrics.sealed_refusals, 1, memory_order_relaxed);
	hsm_buf none = {0};
	hsm_result r = hsm_ks_random(s->ks, 1, &none);
	hsm_buf_free(&none);
	return hsm_failed(r) ? r : HSM_FAIL(HSM_ERR_SEALED, "hsmd is sealed");
}

static hsm_result admit(hsm_server *s, pending *p, hsm_auth_result *auth)
{
	hsm_result serving = require_serving(s);
	if (hsm_failed(serving)) {
		/* Refused before authentication: the record names the id claimed, as for a failed
		 * signature (an access key, no principal), unchecked. */
		hsm_server_claimed_akid(p->req, auth);
		return serving;
	}
	hsm_result r = hsm_server_authenticate(s, p->req, auth);
	p->outboxed |= auth->outboxed; /* a failure counted, a count reset: settled with the rest */
	if (hsm_failed(r)) {
		atomic_fetch_add_explicit(&s->metrics.auth_failures, 1, memory_order_relaxed);
		return r;
	}
	HSM_ENSURE(hsm_audit_accepting(s->audit), HSM_ERR_AUDIT_UNAVAILABLE,
	           "the audit trail cannot be written, so no request is served; retry later");
	return HSM_SUCCESS;
}

/* The X-Amz-Target namespace an operation answers under (the admin one has no hsm_op). */
typedef enum route { ROUTE_KMS, ROUTE_JWT, ROUTE_CIPHER, ROUTE_TOKEN, ROUTE_ADMIN } route;

static route route_of(hsm_op op)
{
	return hsm_api_is_jwt_op(op)      ? ROUTE_JWT
	       : hsm_api_is_cipher_op(op) ? ROUTE_CIPHER
	       : hsm_api_is_token_op(op)  ? ROUTE_TOKEN
	                                  : ROUTE_KMS;
}

/*
 * The operation a KMS, token or cipher request names; NULL when unknown
 * under its prefix (KMS operations answer under TrentService. only, hsmd's
 * own under theirs).
 */
static const hsm_op_info *find_op(const char *name, route how)
{
	const hsm_op_info *info = hsm_op_find(name);
	if (info != NULL && route_of(info->op) != how)
		info = NULL;
	return info;
}

/*
 * After a request that waits for approval: gives a used approval back when
 * the request failed, and names the approval request in its record.
 */
static void gate_done(hsm_server_gate *gate, const char *name, hsm_result r,
                      const hsm_store_intent *in, hsm_api_audit *audit)
{
	/* Not when the change may stand: a retry would make it twice on one approval. */
	if (hsm_failed(r) && in->uncertain)
		hsm_warn("%s failed, but its change may have been made: its approval stays used",
		         name);
	else if (hsm_failed(r))
		hsm_kms_approval_release(gate->s->kms, &gate->approval);
	else if (!gate->commit.reached)
		hsm_warn("%s succeeded without meeting its approval gate", name);
	memcpy(audit->approval_id, gate->approval.id, sizeof(audit->approval_id));
}

static bool named_op(const char *name);

/* Answers a request that ran: its failure, an answer lost after it acted, or its answer. */
static void conclude(pending *p, outcome *o, hsm_result r, bool lost)
{
	if (hsm_failed(r))
		fail_request(p, o, r);
	else if (lost)
		lose_answer(p, o);
	else
		finish(p, o);
}

/*
 * The rest of a KMS request once authenticated and parsed (r says whether
 * that went well): the handler, the audit record, the answer.  Takes doc.
 * info is NULL only with r failed (an operation hsmd does not know).
 */
static void finish_kms(hsm_server *s, const char *name, const hsm_op_info *info, pending *p,
                       const hsm_auth_result *auth, json_t *doc, hsm_result r)
{
	hsm_api_audit audit;
	hsm_server_gate gate;
	outbox_intent intent;
	memset(&audit, 0, sizeof(audit));
	bool unknown = info == NULL && !named_op(name);
	outcome o = {unknown ? UNKNOWN_OPERATION : name, auth, &audit, HSM_OK, false, unknown};
	bool gated = hsm_ok(r) && hsm_server_kms_needs_approval(s, info, &auth->caller, doc);
	outbox_begin(&intent, p, o.operation, auth, NULL);
	if (gated)
		hsm_server_gate_init(&gate, s, info->name, &auth->caller, doc);
	bool lost = false;
	if (hsm_ok(r))
		r = run_kms(s, info->op, auth, p, &audit, doc, gated ? &gate.commit : NULL, &intent.in,
		            &lost);
	if (gated)
		gate_done(&gate, name, r, &intent.in, &audit);
	outbox_end(&intent);
	conclude(p, &o, r, lost);
	/* The record was copied by the submission: the document and context can go now. */
	free(audit.ctx);
	json_decref(doc);
}

static bool takes_long(const hsm_server *s, const hsm_op_info *info);
static bool rsa_private_op(hsm_server *s, const hsm_op_info *info, json_t *doc, bool *brief);
static bool defer_kms(hsm_server *s, const char *name, const hsm_op_info *info, pending *p,
                      const hsm_auth_result *auth, json_t *doc, bool brief);

/*
 * AWS KMS operations hsmd does not offer: custom key stores (hsmd is the key
 * store) and multi-Region keys (nodes share one store instead).  SDKs know
 * them, so they get an error their operation declares, not an
 * unknown-operation error: the custom key store an operation names does
 * not exist (DescribeCustomKeyStores lists none: api_keys.c), and one
 * cannot be made (CreateCustomKeyStore declares nothing that says so, so
 * ValidationException).
 */
static const char *const custom_stores[] = {"DeleteCustomKeyStore", "UpdateCustomKeyStore",
                                            "ConnectCustomKeyStore", "DisconnectCustomKeyStore"};
static const char *const multi_region[] = {"ReplicateKey", "UpdatePrimaryRegion"};

static bool among(const char *name, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/* One of the AWS KMS operations refuse_unknown answers with an error of its own. */
static bool aws_op_not_offered(const char *name)
{
	return strcmp(name, "CreateCustomKeyStore") == 0 || strcmp(name, "Encapsulate") == 0 ||
	       strcmp(name, "Decapsulate") == 0 ||
	       among(name, custom_stores, sizeof(custom_stores) / sizeof(custom_stores[0])) ||
	       among(name, multi_region, sizeof(multi_region) / sizeof(multi_region[0]));
}

/*
 * Whether a request's record may name the operation as the request did: one
 * of a fixed set of names (hsmd's, under whichever service, and the AWS ones
 * it refuses by name), never a name the client made up (UNKNOWN_OPERATION).
 */
static bool named_op(const char *name)
{
	return hsm_op_find(name) != NULL || aws_op_not_offered(name);
}

static hsm_result refuse_unknown(const char *name)
{
	HSM_ENSURE(strcmp(name, "CreateCustomKeyStore") != 0, HSM_ERR_VALIDATION,
	           "CreateCustomKeyStore: custom key stores are not supported; hsmd holds its keys "
	           "itself");
	/* ML-KEM (KEY_ENCAPSULATION keys): Debian 12's OpenSSL 3.0 has no ML-KEM. */
	HSM_ENSURE(strcmp(name, "Encapsulate") != 0 && strcmp(name, "Decapsulate") != 0,
	           HSM_ERR_UNSUPPORTED_OPERATION,
	           "%s: ML-KEM key encapsulation is not supported; hsmd's OpenSSL has no ML-KEM", name);
	HSM_ENSURE(!among(name, custom_stores, sizeof(custom_stores) / sizeof(custom_stores[0])),
	           HSM_ERR_CUSTOM_KEY_STORE_NOT_FOUND,
	           "%s: that custom key store does not exist: hsmd holds its keys itself and "
	           "has no custom key stores",
	           name);
	HSM_ENSURE(!among(name, multi_region, sizeof(multi_region) / sizeof(multi_region[0])),
	           HSM_ERR_UNSUPPORTED_OPERATION,
	           "%s: multi-Region keys are not supported; nodes share one store instead", name);
	return HSM_FAIL(HSM_ERR_UNKNOWN_OPERATION, "Operation %.64s is not supported", name);
}

/* name as the request gave it, info what find_op made of it. */
static void handle_kms(hsm_server *s, hsm_http_req *req, const char *name, const hsm_op_info *info)
{
	unsigned slot = info != NULL ? (unsigned)info->op : HSM_METRIC_NONE;
	pending *p = pending_new(s, req, slot, info != NULL && returns_secret(info->op));
	if (p == NULL) {
		hsm_http_respond(req, 500, NULL, NULL, 0, 0, NULL);
		return;
	}
	hsm_auth_result auth;
	json_t *doc = NULL;
	bool brief = false;
	memset(&auth, 0, sizeof(auth));
	hsm_result r = admit(s, p, &auth);
	if (hsm_ok(r))
		pending_admitted(p);
	if (hsm_ok(r) && info == NULL)
		r = refuse_unknown(name);
	if (hsm_ok(r)) {
		size_t len = 0;
		const uint8_t *raw = hsm_http_req_body(req, &len);
		r = hsm_json_parse(raw, len, &doc);
	}
	if (hsm_ok(r) && (takes_long(s, info) || rsa_private_op(s, info, doc, &brief)) &&
	    defer_kms(s, name, info, p, &auth, doc, brief))
		return;
	finish_kms(s, name, info, p, &auth, doc, r);
}

/*
 * Whether X-Amz-Target is repeated.  Only the first is run, while a proxy in
 * front may judge by another; SigV4 refuses a repeated one in a signed
 * request (sigv4.c), and this is for the operations that take no credentials.
 */
static bool target_repeated(const hsm_http_req *req)
{
	hsm_http_header_iter it = {0};
	const char *name, *value;
	size_t n = 0;
	while (hsm_http_req_next_header(req, &it, &name, &value))
		n += strcasecmp(name, "x-amz-target") == 0;
	return n > 1;
}

static bool defer_admin(hsm_server *s, const char *name, const hsm_admin_op *op, pending *p,
                        const hsm_auth_result *auth, json_t *doc);

/*
 * The rest of an administrative request once admitted and parsed (r says
 * whether that went well): the approval gate, the handler, the audit
 * record, the answer.  Takes doc.  op is NULL only with r failed.
 */
static void finish_admin(hsm_server *s, const char *name, const hsm_admin_op *op, pending *p,
                         hsm_auth_result *auth, json_t *doc, hsm_result r)
{
	bool signed_op = op == NULL || op->needs_auth;
	outcome o = {op != NULL ? name : UNKNOWN_OPERATION, auth, NULL, HSM_OK, false, op == NULL};
	char source[HSM_HTTP_ADDR_MAX + 8];
	snprintf(source, sizeof(source), "%s:%u", hsm_http_req_remote_addr(p->req),
	         hsm_http_req_remote_port(p->req));
	hsm_server_gate gate;
	hsm_api_audit audit;
	outbox_intent intent;
	memset(&audit, 0, sizeof(audit));
	bool gated =
	    hsm_ok(r) && op->needs_auth && hsm_server_admin_needs_approval(s, op, &auth->caller);
	outbox_begin(&intent, p, o.operation, signed_op ? auth : NULL, audit.key_id);
	if (gated) {
		hsm_server_gate_init(&gate, s, op->name, &auth->caller, doc);
		auth->caller.gate = &gate.commit; /* met by the handler (hsm_caller_commit) */
	}
	bool lost = false;
	if (hsm_ok(r)) {
		hsm_jw w;
		hsm_jw_init(&w, &p->body);
		hsm_jw_begin(&w);
		r = hsm_jw_finish(&w); /* no room for an answer: refused before anything is done */
		hsm_admin_ctx c = {s, op->needs_auth ? auth : NULL, doc, &w, source, &audit};
		if (hsm_ok(r))
			r = op->fn(&c);
		hsm_jw_end(&w);
		lost = hsm_ok(r) && hsm_failed(hsm_jw_finish(&w));
	}
	if (gated)
		gate_done(&gate, name, r, &intent.in, &audit);
	outbox_end(&intent);
	if (audit.approval_id[0] != '\0' || audit.key_id[0] != '\0' || audit.cert_id[0] != '\0' ||
	    audit.target_user[0] != '\0' || audit.target_access_key_id[0] != '\0' ||
	    audit.share[0] != '\0')
		o.api = &audit;
	conclude(p, &o, r, lost);
	json_decref(doc);
}

static void handle_admin(hsm_server *s, hsm_http_req *req, const char *name)
{
	const hsm_admin_op *op = hsm_admin_find(name);
	unsigned slot = op != NULL ? HSM_METRIC_ADMIN(hsm_admin_index(op)) : HSM_METRIC_NONE;
	/* Only a new access key's answer carries a secret: the rest (certificates, listings)
	 * may be tens of MB, more than the secure heap's half that one buffer can take. */
	bool secret = op != NULL && strcmp(op->name, "CreateAccessKey") == 0;
	pending *p = pending_new(s, req, slot, secret);
	if (p == NULL) {
		hsm_http_respond(req, 500, NULL, NULL, 0, 0, NULL);
		return;
	}
	hsm_auth_result auth;
	json_t *doc = NULL;
	memset(&auth, 0, sizeof(auth));
	/*
	 * An unknown name is authenticated first, as handle_kms does: otherwise
	 * anyone could learn which names hsmd administers without credentials,
	 * and its record would name no access key.
	 */
	bool signed_op = op == NULL || op->needs_auth;
	hsm_result r = HSM_SUCCESS;
	if (signed_op)
		r = admit(s, p, &auth);
	else if (!hsm_audit_accepting(s->audit))
		r = HSM_FAIL(HSM_ERR_AUDIT_UNAVAILABLE, "the audit trail cannot be written; retry later");
	else if (target_repeated(req))
		r = HSM_FAIL(HSM_ERR_VALIDATION, "Only one X-Amz-Target header is allowed.");
	if (hsm_ok(r) && op == NULL)
		r = HSM_FAIL(HSM_ERR_UNKNOWN_OPERATION, "Operation %.64s is not supported", name);
	size_t len = 0;
	const uint8_t *raw = hsm_http_req_body(req, &len);
	/* Without credentials, the body is only ever "{}" or a share file. */
	if (hsm_ok(r) && !op->needs_auth && len > HSM_ADMIN_UNAUTH_BODY_MAX)
		r = HSM_FAIL(HSM_ERR_VALIDATION,
		             "%s takes no credentials and at most %d bytes of request body", op->name,
		             HSM_ADMIN_UNAUTH_BODY_MAX);
	if (hsm_ok(r)) {
		pending_admitted(p);
		r = hsm_json_parse(raw, len, &doc);
	}
	/* Administration takes long (store writes, key derivation): on the lane, once admitted. */
	if (hsm_ok(r) && op->needs_auth && defer_admin(s, name, op, p, &auth, doc))
		return;
	finish_admin(s, name, op, p, &auth, doc, r);
}

/* ---- the lane: requests that take long ------------------------------------ */

#define STOPPING "hsmd is stopping; retry on another node"

/* A request on its way through the lane (lane.h). */
typedef struct lane_req {
	hsm_lane_job job;
	hsm_server *s;
	hsm_http_req *req;
	const char *name; /* points into the request, which lives until it is answered */
	route how;
	const hsm_op_info *info; /* KMS and token requests: find_op's answer */
} lane_req;

/*
 * What goes to the lane once admitted and parsed: whatever writes the store
 * (each commit waits for an fsync) and generates an asymmetric key pair
 * (RSA-4096: seconds; a wrapping key for GetParametersForImport too);
 * administration does too (finish_admin).  Everything else is quick enough
 * to run where it arrived, and most of it is what clients call by the
 * thousand.  Authentication stays on the worker, as for every request, so
 * requests nobody signed cannot queue on the lane ahead of the signed ones.
 */
static bool takes_long(const hsm_server *s, const hsm_op_info *info)
{
	return s->lane != NULL &&
	       (info->mutating || info->op == HSM_OP_GenerateDataKeyPair ||
	        info->op == HSM_OP_GenerateDataKeyPairWithoutPlaintext ||
	        info->op == HSM_OP_GetParametersForImport);
}

/*
 * The one request the lane takes unadmitted: an Unseal of a share's size,
 * which takes no credentials (unsealing derives keys).  An unknown name or
 * a Status is answered on the worker (Status reads counters).
 */
static bool unseal_on_lane(route how, const char *name, hsm_http_req *req)
{
	if (how != ROUTE_ADMIN)
		return false;
	const hsm_admin_op *op = hsm_admin_find(name);
	size_t len = 0;
	(void)hsm_http_req_body(req, &len);
	return op != NULL && !op->needs_auth && strcmp(op->name, "Status") != 0 &&
	       len <= HSM_ADMIN_UNAUTH_BODY_MAX;
}

static void run_route(hsm_server *s, hsm_http_req *req, route how, const char *name,
                      const hsm_op_info *info)
{
	if (how == ROUTE_ADMIN)
		handle_admin(s, req, name);
	else
		handle_kms(s, req, name, info);
}

/* The lane stopped before the request began (hsmd is stopping): refused, and audited. */
static void refuse_stopping(hsm_server *s, hsm_http_req *req, route how, const char *name,
                            const hsm_op_info *info)
{
	const hsm_admin_op *op = how == ROUTE_ADMIN ? hsm_admin_find(name) : NULL;
	unsigned slot = op != NULL     ? HSM_METRIC_ADMIN(hsm_admin_index(op))
	                : info != NULL ? (unsigned)info->op
	                               : HSM_METRIC_NONE;
	pending *p = pending_new(s, req, slot, false);
	if (p == NULL) {
		hsm_http_respond(req, 500, NULL, NULL, 0, 0, NULL);
		return;
	}
	bool unknown = how == ROUTE_ADMIN ? op == NULL : info == NULL && !named_op(name);
	outcome o = {unknown ? UNKNOWN_OPERATION : name, NULL, NULL, HSM_OK, false, unknown};
	fail_request(p, &o, HSM_FAIL(HSM_ERR_NODE_ERROR, STOPPING));
}

static void lane_run(void *arg, bool cancelled)
{
	lane_req *j = arg;
	if (cancelled)
		refuse_stopping(j->s, j->req, j->how, j->name, j->info);
	else
		run_route(j->s, j->req, j->how, j->name, j->info);
	free(j);
}

/*
 * Signatures and decryptions with RSA keys continue on the lane once
 * authenticated and parsed.  On a worker they hold up its other connections
 * (RSA-4096: 4 ms each here) and wait behind the worker that received them
 * even when another is idle; on the lane they share one queue.  Measured at
 * half of the RSA-2048 peak: p99 3.7-7.3 ms on the workers, 1.5-2.0 ms
 * through the lane; the hand-off costs about 3 % of the peak (bench/PROFILE.md).
 * Keys named by alias go too once the alias is cached (the first request
 * through an alias resolves it on the worker: the hint reads no store).
 */
static bool rsa_private_op(hsm_server *s, const hsm_op_info *info, json_t *doc, bool *brief)
{
	if (s->lane == NULL || (info->op != HSM_OP_Sign && info->op != HSM_OP_Decrypt &&
	                        info->op != HSM_OP_SignToken))
		return false;
	json_t *v = json_object_get(doc, "KeyId");
	hsm_key_spec spec;
	if (!json_is_string(v) || !hsm_kms_spec_hint(s->kms, json_string_value(v), &spec))
		return false;
	*brief = spec == HSM_SPEC_RSA_2048; /* about 0.25 ms; RSA-3072 0.8, RSA-4096 4 */
	return spec == HSM_SPEC_RSA_2048 || spec == HSM_SPEC_RSA_3072 || spec == HSM_SPEC_RSA_4096;
}

/*
 * A KMS or administrative request between its admission and parse and its
 * execution, on its way through the lane (op set: administrative).
 */
typedef struct lane_rest {
	hsm_lane_job job;
	hsm_server *s;
	const char *name;
	const hsm_op_info *info;
	const hsm_admin_op *op;
	pending *p;
	hsm_auth_result auth;
	json_t *doc;
} lane_rest;

static void lane_rest_run(void *arg, bool cancelled)
{
	lane_rest *k = arg;
	hsm_result r = cancelled ? HSM_FAIL(HSM_ERR_NODE_ERROR, STOPPING) : HSM_SUCCESS;
	if (k->op != NULL)
		finish_admin(k->s, k->name, k->op, k->p, &k->auth, k->doc, r);
	else
		finish_kms(k->s, k->name, k->info, k->p, &k->auth, k->doc, r);
	free(k);
}

/* A copy of an authentication result whose caller names point into the copy. */
static void auth_copy(hsm_auth_result *dst, const hsm_auth_result *src)
{
	*dst = *src;
	if (src->caller.user == src->user)
		dst->caller.user = dst->user;
	if (src->caller.access_key_id == src->akid)
		dst->caller.access_key_id = dst->akid;
}

/* Hands the rest of a request to the lane (rest's job and auth are set here); false when
 * it must run where it is. */
static bool defer_rest(const lane_rest *rest, const hsm_auth_result *auth, bool brief)
{
	if (rest->s->lane == NULL)
		return false;
	lane_rest *k = malloc(sizeof(*k));
	if (k == NULL)
		return false;
	*k = *rest;
	k->job = (hsm_lane_job){.fn = lane_rest_run, .brief = brief, .arg = k};
	auth_copy(&k->auth, auth);
	if (hsm_lane_submit(k->s->lane, &k->job))
		return true;
	free(k);
	return false;
}

static bool defer_kms(hsm_server *s, const char *name, const hsm_op_info *info, pending *p,
                      const hsm_auth_result *auth, json_t *doc, bool brief)
{
	lane_rest rest = {.s = s, .name = name, .info = info, .p = p, .doc = doc};
	return defer_rest(&rest, auth, brief);
}

static bool defer_admin(hsm_server *s, const char *name, const hsm_admin_op *op, pending *p,
                        const hsm_auth_result *auth, json_t *doc)
{
	lane_rest rest = {.s = s, .name = name, .op = op, .p = p, .doc = doc};
	return defer_rest(&rest, auth, false);
}

/* Runs the request here, or hands it to the lane when it takes long. */
static void dispatch_route(hsm_server *s, hsm_http_req *req, route how, const char *name)
{
	const hsm_op_info *info = how == ROUTE_ADMIN ? NULL : find_op(name, how);
	if (s->lane != NULL && unseal_on_lane(how, name, req)) {
		lane_req *j = malloc(sizeof(*j));
		if (j != NULL) {
			*j = (lane_req){.job = {.fn = lane_run}, .s = s, .req = req, .name = name, .how = how,
			                .info = info};
			j->job.arg = j;
			if (hsm_lane_submit(s->lane, &j->job))
				return;
			free(j);
		}
	}
	run_route(s, req, how, name, info);
}

/*
 * A POST that names no operation hsmd answers (no X-Amz-Target, a target of
 * no service of hsmd's, a path other than "/"): authenticated first, as AWS
 * authenticates before it reads the target, so the caller without valid
 * credentials learns nothing from it, and audited like any refusal.
 */
static void refuse_post(hsm_server *s, hsm_http_req *req, const char *name, const char *why)
{
	pending *p = pending_new(s, req, HSM_METRIC_NONE, false);
	if (p == NULL) {
		hsm_http_respond(req, 500, NULL, NULL, 0, 0, NULL);
		return;
	}
	hsm_auth_result auth;
	memset(&auth, 0, sizeof(auth));
	hsm_result r = admit(s, p, &auth);
	if (hsm_ok(r))
		r = HSM_FAIL(HSM_ERR_UNKNOWN_OPERATION, "%s", why);
	finish_kms(s, name, NULL, p, &auth, NULL, r);
}

static void handle_post(hsm_server *s, hsm_http_req *req)
{
	const char *target = hsm_http_req_header(req, "X-Amz-Target");
	if (target != NULL && hsm_str_has_prefix(target, KMS_PREFIX)) {
		dispatch_route(s, req, ROUTE_KMS, target + strlen(KMS_PREFIX));
		return;
	}
	if (target != NULL && hsm_str_has_prefix(target, JWT_PREFIX)) {
		dispatch_route(s, req, ROUTE_JWT, target + strlen(JWT_PREFIX));
		return;
	}
	if (target != NULL && hsm_str_has_prefix(target, CIPHER_PREFIX)) {
		dispatch_route(s, req, ROUTE_CIPHER, target + strlen(CIPHER_PREFIX));
		return;
	}
	if (target != NULL && hsm_str_has_prefix(target, TOKEN_PREFIX)) {
		dispatch_route(s, req, ROUTE_TOKEN, target + strlen(TOKEN_PREFIX));
		return;
	}
	if (target != NULL && hsm_str_has_prefix(target, ADMIN_PREFIX)) {
		dispatch_route(s, req, ROUTE_ADMIN, target + strlen(ADMIN_PREFIX));
		return;
	}
	refuse_post(s, req, target != NULL ? target : "",
	            "X-Amz-Target must name an operation: TrentService.<Operation>");
}

static void handle_readyz(hsm_server *s, hsm_http_req *req)
{
	hsm_buf body = {0};
	hsm_node_state st = hsm_keystore_state(s->ks);
	bool audit_ok = hsm_audit_healthy(s->audit) && !hsm_audit_low_space(s->audit);
	bool store_ok = atomic_load(&s->store_up);
	/* A damaged store file fails what reads it, until a sound one is served (server.c). */
	bool damaged = hsm_store_corrupt_seen(s->store) > 0;
	bool ready = st == HSM_NODE_UNSEALED && audit_ok && store_ok && !damaged;
	hsm_jw w;
	hsm_jw_init(&w, &body);
	hsm_jw_begin(&w);
	hsm_jw_bool(&w, "ready", ready);
	hsm_jw_str(&w, "state", hsm_node_state_name(st));
	hsm_jw_bool(&w, "audit", audit_ok);
	hsm_jw_bool(&w, "store", store_ok);
	if (damaged) {
		hsm_jw_bool(&w, "store_damaged", true);
		hsm_jw_str(&w, "reason", "the store's database file is damaged (requests reading it "
		                         "fail): restore a backup");
	}
	hsm_jw_end(&w);
	if (hsm_failed(hsm_jw_finish(&w)))
		hsm_buf_clear(&body);
	hsm_metrics_probe(&s->metrics, HSM_PROBE_READYZ);
	hsm_http_respond(req, ready ? 200 : 503, "application/json", body.data, body.len, 0, NULL);
	hsm_buf_free(&body);
}

/*
 * A path hsmd serves that does not take the request's method: 405 with the
 * path's Allow (RFC 9110 section 15.5.6), counted as the 404 of a path hsmd
 * does not serve is.
 */
static void respond_not_allowed(hsm_server *s, hsm_http_req *req)
{
	(void)s; /* counted and recorded by hsm_server_http_refused, which the HTTP server calls */
	hsm_http_respond_not_allowed(req);
}

/* A path hsmd serves nothing at: counted and recorded as the HTTP server's own refusals are. */
static void not_found(hsm_server *s, hsm_http_req *req)
{
	hsm_buf body = {0};
	int status = error_body(HSM_ERR_NOT_FOUND, "no such resource", 404, &body);
	if (status == 404)
		hsm_server_http_refused(req, status, "NotFoundException", "no such resource", s);
	else
		hsm_server_http_refused(req, status, "KMSInternalException", "out of memory", s);
	hsm_http_respond(req, status, CONTENT_TYPE_JSON, body.data, body.len, 0, NULL);
	hsm_buf_free(&body);
}

static void handle_get(hsm_server *s, hsm_http_req *req, const char *path)
{
	hsm_buf body = {0};
	int status = 200;
	const char *type = "text/plain; charset=utf-8";
	hsm_metric_probe probe = HSM_METRIC_PROBES; /* none */
	if (strcmp(path, "/") == 0) {
		respond_not_allowed(s, req); /* the API is there, and takes POST only */
		return;
	}
	if (strcmp(path, "/healthz") == 0) {
		probe = HSM_PROBE_HEALTHZ;
		if (hsm_failed(hsm_buf_put_str(&body, "ok\n")))
			status = 500;
	} else if (strcmp(path, "/readyz") == 0) {
		handle_readyz(s, req);
		return;
	} else if (strcmp(path, JWKS_PATH) == 0) {
		hsm_server_jwks(s, req); /* public keys: see jwks.c for why it is unauthenticated */
		return;
	} else if (strcmp(path, "/metrics") == 0) {
		type = "text/plain; version=0.0.4; charset=utf-8";
		probe = HSM_PROBE_METRICS;
		hsm_metrics_probe(&s->metrics, probe); /* this scrape included */
		if (hsm_failed(hsm_server_render_metrics(s, &body))) {
			status = 500; /* no half a scrape: a scraper would read the gauges left out as gone */
			hsm_buf_clear(&body);
		}
	} else {
		not_found(s, req);
		return;
	}
	if (probe == HSM_PROBE_HEALTHZ)
		hsm_metrics_probe(&s->metrics, probe);
	hsm_http_respond(req, status, type, body.data, body.len, 0, NULL);
	hsm_buf_free(&body);
}

/* The paths routed here are those http_req.c names in the Allow of a 405: keep both alike. */
void hsm_server_on_request(hsm_http_req *req, void *arg)
{
	hsm_server *s = arg;
	const char *method = hsm_http_req_method(req), *path = hsm_http_req_path(req);
	if (strcmp(method, "POST") == 0 && strcmp(path, "/") == 0) {
		handle_post(s, req);
	} else if (strcmp(method, "POST") == 0 && hsm_http_path_is_resource(path)) {
		/* A health, metrics or JWKS path: it takes GET, and a POST there is no
		 * API call to authenticate, as a GET of "/" is none. */
		respond_not_allowed(s, req);
	} else if (strcmp(method, "POST") == 0) {
		/* At a path hsmd does not serve (the path is signed): recorded under the
		 * operation it names, as a request to "/" would be. */
		const char *target = hsm_http_req_header(req, "X-Amz-Target");
		const char *dot = target != NULL ? strchr(target, '.') : NULL;
		refuse_post(s, req, dot != NULL ? dot + 1 : target != NULL ? target : "",
		            "the API answers POST / only");
	} else if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0) {
		handle_get(s, req, path);
	} else if (strcmp(method, "OPTIONS") == 0 && strcmp(path, JWKS_PATH) == 0) {
		hsm_server_jwks_preflight(req); /* browsers verifying tokens from any origin */
	} else if (strcmp(method, "OPTIONS") == 0) {
		hsm_http_respond_not_allowed(req); /* 405 with the path's Allow, or 404 */
	} else {
		not_found(s, req);
	}
}
