/*
 * api_fuzz.c - the KMS JSON API handlers (server/api_*.c) behind
 * hsm_api_run, over a real store, keystore and KMS service.
 *
 * Set-up, once per process: a store in a fresh temporary directory, a
 * keystore initialized 1-of-1 in dev mode (so unsealed), the KMS service,
 * and fixture keys reachable through aliases:
 *   alias/fuzz-aes    SYMMETRIC_DEFAULT  ENCRYPT_DECRYPT
 *   alias/fuzz-rsa    RSA_2048           ENCRYPT_DECRYPT
 *   alias/fuzz-ec     ECC_NIST_P256      SIGN_VERIFY
 *   alias/fuzz-ed     ECC_NIST_EDWARDS25519 SIGN_VERIFY
 *   alias/fuzz-hmac   HMAC_256           GENERATE_VERIFY_MAC
 *   alias/fuzz-ecdh   ECC_NIST_P256      KEY_AGREEMENT
 *   alias/fuzz-pending SYMMETRIC_DEFAULT, kept pending deletion
 *   alias/fuzz-jwt    ECC_NIST_P256      SIGN_VERIFY, marked for JWT signing
 *   alias/fuzz-external SYMMETRIC_DEFAULT, Origin EXTERNAL, kept without
 *                     material (PendingImport)
 * and a usage recorder, as the server has, for GetKeyLastUsage.
 *
 * Input:
 *   byte 0     the operation (index into kms.h's HSM_OP_TABLE)
 *   byte 1     the caller's roles (bit 0 crypto-officer, 1 crypto-user,
 *              2 auditor)
 *   the rest   the JSON request body; "@BLOB@" stands for the base64 of a
 *              ciphertext made by alias/fuzz-aes with the context
 *              {"purpose":"fuzz"}, "@KEYID@" for that key's id (key ids
 *              are random, so seeds cannot spell them), "@TOKEN@" for
 *              an import token of alias/fuzz-external (RSAES_OAEP_SHA_256,
 *              RSA_2048) and "@MATERIAL@" for 32 bytes of key material
 *              wrapped for it, so ImportKeyMaterial gets past the token
 *
 * Properties (DESIGN.md invariant 5): no crash or leak; a failure is a code
 * of the error table whose HTTP status is a client error (4xx), or
 * KMSInternalException only for out-of-memory, with a message that does not
 * hold the fixture plaintext; a failed request commits nothing to the store
 * (a second SQLite connection watches PRAGMA data_version, which moves on
 * every commit by another connection); a success renders a valid JSON
 * object.
 *
 * HSM_FUZZ_VERBOSE=1 in the environment prints each operation's outcome
 * (to check what the seeds reach).
 *
 * The service keeps state between inputs.  To keep runs comparable, the
 * fixture keys are put back (enabled, not pending deletion, default policy,
 * aliases pointing at them) after every input, and requests that would
 * generate RSA-3072/4096 keys are skipped (seconds each, no new code paths).
 * alias/fuzz-external loses what was imported into it, and alias/fuzz-jwt
 * is marked for JWT signing again.
 */
#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"

#include "common/encoding.h"
#include "common/log.h"
#include "kms/jwt.h"
#include "kms/policy.h"
#include "server/api.h"

#ifdef HSM_API_OOM
#include "oom_alloc.h"
static long oom_input; /* the input's number in the run, for the leak report */
static void check_leaks(void);
#endif

#define MAX_BODY 65536

typedef struct fixture {
	const char *alias;
	hsm_key_spec spec;
	hsm_key_usage usage;
	bool pending; /* kept pending deletion, so CancelKeyDeletion has work */
	bool jwt;     /* marked for JWT signing, so SignToken has work */
	hsm_key_origin origin;
	char key_id[HSM_UUID_STRLEN + 1];
} fixture;

static fixture fixtures[] = {
    {"alias/fuzz-aes", HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, .pending = false},
    {"alias/fuzz-rsa", HSM_SPEC_RSA_2048, HSM_USAGE_ENCRYPT_DECRYPT, .pending = false},
    {"alias/fuzz-ec", HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, .pending = false},
    {"alias/fuzz-ed", HSM_SPEC_ECC_NIST_EDWARDS25519, HSM_USAGE_SIGN_VERIFY, .pending = false},
    {"alias/fuzz-hmac", HSM_SPEC_HMAC_256, HSM_USAGE_GENERATE_VERIFY_MAC, .pending = false},
    {"alias/fuzz-ecdh", HSM_SPEC_ECC_NIST_P256, HSM_USAGE_KEY_AGREEMENT, .pending = false},
    {"alias/fuzz-pending", HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT, .pending = true},
    {"alias/fuzz-jwt", HSM_SPEC_ECC_NIST_P256, HSM_USAGE_SIGN_VERIFY, .jwt = true},
    {"alias/fuzz-external", HSM_SPEC_SYMMETRIC_DEFAULT, HSM_USAGE_ENCRYPT_DECRYPT,
     .origin = HSM_ORIGIN_EXTERNAL},
};
#define N_FIXTURES (sizeof(fixtures) / sizeof(fixtures[0]))
#define EXTERNAL (N_FIXTURES - 1) /* the index of alias/fuzz-external */

static struct {
	char dir[64];
	hsm_store *store;
	hsm_keystore *ks;
	hsm_kms *kms;
	hsm_usage *usage;
	hsm_buf policy; /* the default key policy, NUL-terminated */
	hsm_buf blob_b64;
	hsm_buf token_b64, material_b64; /* @TOKEN@, @MATERIAL@ */
	sqlite3 *watch; /* read-only connection to the store's database */
} g;

#define FIXTURE_PLAINTEXT "fuzz plaintext"

static const hsm_caller local = {.user = "fuzz-operator", .access_key_id = "", .local = true};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void cleanup(void)
{
	sqlite3_close(g.watch);
	hsm_kms_free(g.kms);
	hsm_usage_free(g.usage);
	hsm_keystore_free(g.ks);
	hsm_store_close(g.store);
	hsm_buf_free(&g.policy);
	hsm_buf_free(&g.blob_b64);
	hsm_buf_free(&g.token_b64);
	hsm_buf_free(&g.material_b64);
	if (g.dir[0] != '\0')
		(void)nftw(g.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_blob(void)
{
	hsm_ctx_pair pair = {"purpose", "fuzz"};
	hsm_encrypt_req req = {.key = fixtures[0].key_id,
	                       .plaintext = (const uint8_t *)FIXTURE_PLAINTEXT,
	                       .plaintext_len = sizeof(FIXTURE_PLAINTEXT) - 1,
	                       .ctx = {&pair, 1}};
	hsm_buf ct = {0};
	hsm_used_key used;
	FUZZ_ASSERT(hsm_ok(hsm_kms_encrypt(g.kms, &local, &req, &ct, &used)));
	FUZZ_ASSERT(hsm_ok(hsm_b64_encode(&g.blob_b64, ct.data, ct.len)));
	hsm_buf_free(&ct);
}

/* An import token for alias/fuzz-external, and 32 bytes of material wrapped for it. */
static void make_import(void)
{
	hsm_import_params params;
	memset(&params, 0, sizeof(params));
	FUZZ_ASSERT(hsm_ok(hsm_kms_get_import_params(g.kms, &local, fixtures[EXTERNAL].key_id,
	                                             "RSAES_OAEP_SHA_256", "RSA_2048", &params)));
	FUZZ_ASSERT(hsm_ok(hsm_b64_encode(&g.token_b64, params.token.data, params.token.len)));
	const unsigned char *der = params.public_der.data;
	EVP_PKEY *pub = d2i_PUBKEY(NULL, &der, (long)params.public_der.len);
	FUZZ_ASSERT(pub != NULL);
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(pub, NULL);
	static const uint8_t material[32] = "fuzz key material, 32 bytes long";
	uint8_t wrapped[256];
	size_t wrapped_len = sizeof(wrapped);
	FUZZ_ASSERT(pc != NULL && EVP_PKEY_encrypt_init(pc) == 1 &&
	            EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING) == 1 &&
	            EVP_PKEY_CTX_set_rsa_oaep_md(pc, EVP_sha256()) == 1 &&
	            EVP_PKEY_CTX_set_rsa_mgf1_md(pc, EVP_sha256()) == 1 &&
	            EVP_PKEY_encrypt(pc, wrapped, &wrapped_len, material, sizeof(material)) == 1);
	FUZZ_ASSERT(hsm_ok(hsm_b64_encode(&g.material_b64, wrapped, wrapped_len)));
	EVP_PKEY_CTX_free(pc);
	EVP_PKEY_free(pub);
	hsm_import_params_clear(&params);
}

static void restore_fixtures(void);

static void init_once(void)
{
	static bool done;
	if (done)
		return;
	done = true;
	const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
	FUZZ_ASSERT(snprintf(g.dir, sizeof(g.dir), "%s/hsm-fuzz-api-XXXXXX", tmp) < (int)sizeof(g.dir));
	FUZZ_ASSERT(mkdtemp(g.dir) != NULL);
#ifdef HSM_API_OOM
	atexit(check_leaks); /* registered first, so it runs after cleanup */
	tzset(); /* libc's time zone, read once for good: not a refused run's leak */
#endif
	atexit(cleanup);
	hsm_log_set_level(HSM_LOG_ERROR);
	FUZZ_ASSERT(hsm_ok(hsm_crypto_init()));
	FUZZ_ASSERT(hsm_ok(hsm_store_open(g.dir, &g.store)));
	FUZZ_ASSERT(hsm_ok(hsm_keystore_new(g.store, 0, &g.ks)));
	hsm_buf share[1];
	hsm_buf_init_secure(&share[0]);
	FUZZ_ASSERT(hsm_ok(hsm_keystore_init(g.ks, 1, 1, NULL, true, share)));
	hsm_buf_free(&share[0]);
	FUZZ_ASSERT(hsm_keystore_state(g.ks) == HSM_NODE_UNSEALED);
	hsm_kms_config cfg = {.region = "us-east-1", .account_id = "111122223333"};
	FUZZ_ASSERT(hsm_ok(hsm_kms_new(g.store, g.ks, &cfg, &g.kms)));
	FUZZ_ASSERT(hsm_ok(hsm_usage_new(g.store, &g.usage)));
	hsm_kms_set_usage(g.kms, g.usage);
	FUZZ_ASSERT(hsm_ok(hsm_policy_default("111122223333", &g.policy)));
	FUZZ_ASSERT(hsm_ok(hsm_buf_terminate(&g.policy)));
	for (size_t i = 0; i < N_FIXTURES; i++) {
		hsm_create_key_req req = {.description = "fuzz fixture",
		                          .spec = fixtures[i].spec,
		                          .usage = fixtures[i].usage,
		                          .origin = fixtures[i].origin};
		hsm_key_record rec;
		memset(&rec, 0, sizeof(rec));
		FUZZ_ASSERT(hsm_ok(hsm_kms_create_key(g.kms, &local, &req, &rec)));
		memcpy(fixtures[i].key_id, rec.key_id, sizeof(fixtures[i].key_id));
		hsm_key_record_clear(&rec);
		FUZZ_ASSERT(hsm_ok(hsm_kms_create_alias(g.kms, &local, fixtures[i].alias,
		                                        fixtures[i].key_id)));
	}
	make_blob();
	make_import();
	restore_fixtures();
	char db[sizeof(g.dir) + 16];
	snprintf(db, sizeof(db), "%s/hsmd.db", g.dir);
	FUZZ_ASSERT(sqlite3_open_v2(db, &g.watch, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK);
}

/* Changes whenever the store's connection commits (SQLite "PRAGMA data_version"). */
static int64_t data_version(void)
{
	sqlite3_stmt *st = NULL;
	FUZZ_ASSERT(sqlite3_prepare_v2(g.watch, "PRAGMA data_version", -1, &st, NULL) == SQLITE_OK);
	FUZZ_ASSERT(sqlite3_step(st) == SQLITE_ROW);
	int64_t v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Puts the fixture keys back as set up; failures here mean "already so". */
static void restore_fixtures(void)
{
	for (size_t i = 0; i < N_FIXTURES; i++) {
		const char *id = fixtures[i].key_id;
		hsm_key_record rec;
		memset(&rec, 0, sizeof(rec));
		if (hsm_ok(hsm_kms_cancel_deletion(g.kms, &local, id, &rec)))
			hsm_key_record_clear(&rec);
		hsm_result r = hsm_kms_enable_key(g.kms, &local, id);
		FUZZ_ASSERT(hsm_ok(r) || r.err == HSM_ERR_INVALID_STATE);
		FUZZ_ASSERT(hsm_ok(hsm_kms_put_policy(g.kms, &local, id, NULL,
		                                      (const char *)g.policy.data, true)));
		if (hsm_failed(hsm_kms_update_alias(g.kms, &local, fixtures[i].alias, id)))
			FUZZ_ASSERT(hsm_ok(hsm_kms_create_alias(g.kms, &local, fixtures[i].alias, id)));
		if (fixtures[i].jwt)
			FUZZ_ASSERT(hsm_ok(hsm_kms_enable_jwt(g.kms, &local, id, HSM_JWS_NONE, NULL)));
		if (fixtures[i].origin == HSM_ORIGIN_EXTERNAL) {
			/* Each imported material goes; once none is left, the call succeeds
			 * erasing nothing (version 0). */
			uint32_t version = 1;
			while (version != 0 &&
			       hsm_ok(hsm_kms_delete_material(g.kms, &local, id, NULL, &rec, &version)))
				hsm_key_record_clear(&rec);
		}
		if (fixtures[i].pending) {
			FUZZ_ASSERT(hsm_ok(hsm_kms_schedule_deletion(g.kms, &local, id, 30, &rec)));
			hsm_key_record_clear(&rec);
		}
	}
}

/* Replaces each occurrence of token in body by value. */
static bool substitute(hsm_buf *body, const char *token, const uint8_t *value, size_t vlen)
{
	size_t tlen = strlen(token);
	hsm_buf out = {0};
	bool ok = true;
	for (size_t i = 0; ok && i < body->len;) {
		if (body->len - i >= tlen && memcmp(body->data + i, token, tlen) == 0) {
			ok = hsm_ok(hsm_buf_put(&out, value, vlen));
			i += tlen;
		} else {
			ok = hsm_ok(hsm_buf_put_u8(&out, body->data[i]));
			i++;
		}
	}
	if (ok && out.len <= MAX_BODY) {
		hsm_buf_free(body);
		*body = out;
		return true;
	}
	hsm_buf_free(&out);
	return false;
}

/* Key generation that costs seconds and adds no code paths. */
static bool too_slow(json_t *doc)
{
	static const char *const members[] = {"KeySpec", "CustomerMasterKeySpec", "KeyPairSpec",
	                                      "WrappingKeySpec"};
	for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
		const char *v = json_string_value(json_object_get(doc, members[i]));
		if (v != NULL && (strcmp(v, "RSA_3072") == 0 || strcmp(v, "RSA_4096") == 0))
			return true;
	}
	return false;
}

/*
 * echoes: whether the request itself holds the fixture plaintext, which a
 * message may then quote back (an invalid key id, for instance).  refused:
 * whether an allocation of the request was refused (api_oom_replay), which
 * makes an internal error (5xx) a fair answer too; the caller checks that a
 * client error (4xx) was not the refusal's doing.  answer_lost: the handler
 * succeeded and only writing its answer failed, after the change was made
 * (the client then knows no more than when an answer is lost on the way).
 */
static void check_failure(hsm_result r, int64_t version_before, bool echoes, bool refused,
                          bool answer_lost)
{
	FUZZ_ASSERT(r.err > HSM_OK && r.err < HSM_ERR_COUNT_);
	int status = hsm_err_http_status(r.err);
	FUZZ_ASSERT((status >= 400 && status < 500) || r.err == HSM_ERR_NOMEM ||
	            (refused && status >= 500));
	const char *msg = hsm_last_message();
	FUZZ_ASSERT(msg[0] != '\0' && (echoes || strstr(msg, FIXTURE_PLAINTEXT) == NULL));
	FUZZ_ASSERT(data_version() == version_before || (refused && answer_lost));
}

/*
 * Runs one request through its handler and checks the outcome.  In
 * api_oom_replay the request's allocation number fail_at is refused (none
 * when negative), *fired says whether it was, and *allocs counts the
 * request's allocations; elsewhere fail_at must be negative.
 */
static hsm_err run(hsm_op op, const hsm_caller *caller, json_t *doc, bool echoes, long fail_at,
                   bool *fired, long *allocs)
{
	hsm_buf out;
	hsm_jw w;
	hsm_buf_init_secure(&out);
	hsm_jw_init(&w, &out);
	hsm_jw_begin(&w);
	hsm_api_ctx c = {.kms = g.kms, .caller = caller, .req = doc, .w = &w, .out = &out};
	int64_t version = data_version();
	*fired = false;
#ifdef HSM_API_OOM
	oom_arm(fail_at, fail_at >= 0, oom_input * 1000000 + fail_at);
#else
	FUZZ_ASSERT(fail_at < 0);
#endif
	hsm_result r = hsm_api_run(op, &c);
	hsm_jw_end(&w);
	bool answer_lost = false;
	if (hsm_ok(r)) {
		r = hsm_jw_finish(&w);
		answer_lost = hsm_failed(r);
	}
#ifdef HSM_API_OOM
	long n = oom_disarm(fired);
	if (allocs != NULL)
		*allocs = n;
#else
	(void)allocs;
#endif
	if (getenv("HSM_FUZZ_VERBOSE") != NULL)
		fprintf(stderr, "%s: %s%s %s\n", hsm_op_get(op)->name, hsm_err_code_name(r.err),
		        data_version() != version ? " (store changed)" : "",
		        hsm_failed(r) ? hsm_last_message() : "");
	if (hsm_failed(r)) {
		check_failure(r, version, echoes, *fired, answer_lost);
	} else {
		json_error_t err;
		json_t *resp = json_loadb((const char *)out.data, out.len, JSON_REJECT_DUPLICATES, &err);
		FUZZ_ASSERT(resp != NULL && json_is_object(resp));
		json_decref(resp);
	}
	FUZZ_ASSERT(c.audit.key_id[0] == '\0' || hsm_is_uuid(c.audit.key_id));
	free(c.audit.ctx);
	hsm_buf_free(&out);
	return r.err;
}

#ifdef HSM_API_OOM
/* Refused allocations tried per request, spread evenly over all of its own. */
#define OOM_POINTS 150

/*
 * The request once as it is, to count its allocations and to warm what is
 * made once (caches, OpenSSL's fetched algorithms), then again with each of
 * OOM_POINTS allocations refused in turn.  Beyond run()'s checks: a client
 * error after a refusal must be the one the request gets without it, so
 * that running out of memory never reads as "your request is wrong".
 */
static void run_refusing(hsm_op op, const hsm_caller *caller, json_t *doc, bool echoes)
{
	bool fired;
	long allocs = 0;
	bool mutating = hsm_op_get(op)->mutating;
	(void)run(op, caller, doc, echoes, -1, &fired, &allocs);
	if (mutating)
		restore_fixtures();
	long stride = allocs / OOM_POINTS + 1;
	for (long n = 0;; n += stride) {
		hsm_err got = run(op, caller, doc, echoes, n, &fired, NULL);
		if (mutating)
			restore_fixtures();
		if (!fired)
			break;
		int status = hsm_err_http_status(got);
		if (got == HSM_OK || status >= 500)
			continue;
		hsm_err again = run(op, caller, doc, echoes, -1, &fired, NULL);
		if (mutating)
			restore_fixtures();
		if (again != got) {
			fprintf(stderr, "%s with allocation %ld refused: %s, without the refusal: %s\n",
			        hsm_op_get(op)->name, n, hsm_err_code_name(got), hsm_err_code_name(again));
			FUZZ_ASSERT(again == got);
		}
	}
	oom_input++;
}

/* The body read again with each of its allocations refused in turn: out of
 * memory, or the outcome it has without the refusal (want, and the document
 * read then, if any), nothing else. */
static void parse_refusing(const hsm_buf *body, hsm_err want, const json_t *want_doc)
{
	for (long n = 0;; n++) {
		json_t *doc = NULL;
		bool fired;
		oom_arm(n, true, oom_input * 1000000 + n);
		hsm_result r = hsm_json_parse(body->data, body->len, &doc);
		(void)oom_disarm(&fired);
		bool same = hsm_failed(r) || json_equal(doc, want_doc);
		json_decref(doc);
		if (!fired)
			break;
		FUZZ_ASSERT(r.err == HSM_ERR_NOMEM || (r.err == want && same));
	}
}

/* At exit, after cleanup(): every block a refused run was given is freed. */
static void check_leaks(void)
{
	sqlite3_shutdown();
	size_t left = oom_report(stderr);
	if (left > 0) {
		fprintf(stderr, "%zu blocks allocated by refused runs were never freed "
		                "(run = input number * 1000000 + refused allocation)\n", left);
		abort();
	}
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	fuzz_in in = {data, size};
	hsm_op op = (hsm_op)(fuzz_u8(&in) % HSM_OP_COUNT);
	uint8_t roles = fuzz_u8(&in);
	hsm_caller caller = {.user = "fuzzer", .access_key_id = "AKIAFUZZER0000000000"};
	caller.dry_run = (roles & 0x80) != 0; /* DryRun must perform nothing either */
	if (roles & 1)
		caller.roles |= HSM_ROLE_BIT(HSM_ROLE_CRYPTO_OFFICER);
	if (roles & 2)
		caller.roles |= HSM_ROLE_BIT(HSM_ROLE_CRYPTO_USER);
	if (roles & 4)
		caller.roles |= HSM_ROLE_BIT(HSM_ROLE_AUDITOR);
	if (in.n > MAX_BODY)
		return 0;
	hsm_buf body = {0};
	FUZZ_ASSERT(hsm_ok(hsm_buf_set(&body, in.p, in.n)));
	if (!substitute(&body, "@BLOB@", g.blob_b64.data, g.blob_b64.len) ||
	    !substitute(&body, "@KEYID@", (const uint8_t *)fixtures[0].key_id, HSM_UUID_STRLEN) ||
	    !substitute(&body, "@TOKEN@", g.token_b64.data, g.token_b64.len) ||
	    !substitute(&body, "@MATERIAL@", g.material_b64.data, g.material_b64.len)) {
		hsm_buf_free(&body);
		return 0;
	}
	json_t *doc = NULL;
	hsm_result r = hsm_json_parse(body.data, body.len, &doc);
#ifdef HSM_API_OOM
	parse_refusing(&body, r.err, doc);
#endif
	if (hsm_failed(r)) {
		FUZZ_ASSERT(fuzz_json_refusal(r, body.data, body.len));
	} else if (!too_slow(doc)) {
		bool echoes = body.len > 0 && memmem(body.data, body.len, FIXTURE_PLAINTEXT,
		                                     sizeof(FIXTURE_PLAINTEXT) - 1) != NULL;
#ifdef HSM_API_OOM
		run_refusing(op, &caller, doc, echoes);
#else
		bool fired;
		(void)run(op, &caller, doc, echoes, -1, &fired, NULL);
		if (hsm_op_get(op)->mutating)
			restore_fixtures();
#endif
	}
	json_decref(doc);
	hsm_buf_free(&body);
	return 0;
}
