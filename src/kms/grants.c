/*
 * grants.c - CreateGrant, ListGrants, ListRetirableGrants, RetireGrant,
 * RevokeGrant, and the part of authorization grants decide.
 *
 * Rules from the AWS KMS API reference (CreateGrant, GrantConstraints,
 * RetireGrant) and the developer guide ("Grants in AWS KMS"):
 *   - a grant allows its grantee principal the listed operations on one key;
 *     it only allows: an explicit deny in the key policy still refuses, and
 *     hsmd's roles still bound what a user may call at all;
 *   - the operations must suit the key (no Sign on an encryption key);
 *   - constraints (EncryptionContextEquals / EncryptionContextSubset) apply
 *     to the operations that take an encryption context, and exist only on
 *     symmetric encryption keys; their keys match without case, their values
 *     exactly;
 *   - a grantee allowed CreateGrant by a grant creates only grants with
 *     operations its grant holds and constraints at least as strict;
 *   - a retried CreateGrant with the same Name and fields returns the first
 *     grant's id;
 *   - RetireGrant is for the retiring principal, or the grantee when the
 *     grant allows RetireGrant; RevokeGrant follows the key policy.
 *
 * Grant ids are 64 hex digits of random bits.  A grant token is the
 * base64url of a version byte, the key id and the grant id: it names a
 * grant (so RetireGrant can take it alone) but allows nothing by itself.
 * hsmd's grants are in its store, so they are in force at once on the node
 * that made them; a token only makes other nodes sharing the store read the
 * grants afresh instead of trusting their cache.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/encoding.h"
#include "common/json_read.h"
#include "crypto/crypto.h"
#include "kms/kms_internal.h"

/* ---- Operations ------------------------------------------------------------------------ */

enum {
	G_Decrypt,
	G_Encrypt,
	G_GenerateDataKey,
	G_GenerateDataKeyWithoutPlaintext,
	G_ReEncryptFrom,
	G_ReEncryptTo,
	G_Sign,
	G_Verify,
	G_GetPublicKey,
	G_CreateGrant,
	G_RetireGrant,
	G_DescribeKey,
	G_GenerateDataKeyPair,
	G_GenerateDataKeyPairWithoutPlaintext,
	G_GenerateMac,
	G_VerifyMac,
	G_DeriveSharedSecret,
};

static const char *const grant_ops[HSM_GRANT_OP_COUNT] = {
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "Sign",
    "Verify",
    "GetPublicKey",
    "CreateGrant",
    "RetireGrant",
    "DescribeKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
};

#define BIT(g) (1U << (g))
/* Operations that take an encryption context: the ones constraints apply to. */
#define CTX_OPS                                                                                    \
	(BIT(G_Decrypt) | BIT(G_Encrypt) | BIT(G_GenerateDataKey) |                                \
	 BIT(G_GenerateDataKeyWithoutPlaintext) | BIT(G_ReEncryptFrom) | BIT(G_ReEncryptTo) |      \
	 BIT(G_GenerateDataKeyPair) | BIT(G_GenerateDataKeyPairWithoutPlaintext))
#define ANY_KEY_OPS (BIT(G_CreateGrant) | BIT(G_RetireGrant) | BIT(G_DescribeKey))

const char *hsm_grant_op_name(unsigned i)
{
	return i < HSM_GRANT_OP_COUNT ? grant_ops[i] : NULL;
}

hsm_result hsm_grant_op_parse(const char *name, uint32_t *bit)
{
	for (unsigned i = 0; i < HSM_GRANT_OP_COUNT; i++) {
		if (strcmp(name, grant_ops[i]) == 0) {
			*bit = BIT(i);
			return HSM_SUCCESS;
		}
	}
	return HSM_FAIL(HSM_ERR_VALIDATION,
	                "Value '%.64s' at 'operations' failed to satisfy constraint: Member must "
	                "satisfy enum value set",
	                name);
}

/* The operations a grant on a key of this kind may allow. */
static uint32_t ops_for_key(const hsm_key_record *r)
{
	switch (r->usage) {
	case HSM_USAGE_ENCRYPT_DECRYPT:
		if (r->spec == HSM_SPEC_SYMMETRIC_DEFAULT)
			return ANY_KEY_OPS | CTX_OPS;
		return ANY_KEY_OPS | BIT(G_Decrypt) | BIT(G_Encrypt) | BIT(G_ReEncryptFrom) |
		       BIT(G_ReEncryptTo) | BIT(G_GetPublicKey);
	case HSM_USAGE_SIGN_VERIFY:
		return ANY_KEY_OPS | BIT(G_Sign) | BIT(G_Verify) | BIT(G_GetPublicKey);
	case HSM_USAGE_GENERATE_VERIFY_MAC:
		return ANY_KEY_OPS | BIT(G_GenerateMac) | BIT(G_VerifyMac);
	case HSM_USAGE_KEY_AGREEMENT:
		return ANY_KEY_OPS | BIT(G_DeriveSharedSecret) | BIT(G_GetPublicKey);
	default: return ANY_KEY_OPS;
	}
}

/* The grant operation a request is, or 0 when no grant can allow it. */
static uint32_t grant_op_of(hsm_op op, const kms_authz_extra *extra)
{
	const char *action = extra != NULL ? extra->action : NULL;
	switch (op) {
	case HSM_OP_Encrypt: return BIT(G_Encrypt);
	case HSM_OP_Decrypt: return BIT(G_Decrypt);
	case HSM_OP_ReEncrypt:
		if (action != NULL && strcmp(action, "kms:ReEncryptFrom") == 0)
			return BIT(G_ReEncryptFrom);
		if (action != NULL && strcmp(action, "kms:ReEncryptTo") == 0)
			return BIT(G_ReEncryptTo);
		return 0;
	case HSM_OP_GenerateDataKey: return BIT(G_GenerateDataKey);
	case HSM_OP_GenerateDataKeyWithoutPlaintext: return BIT(G_GenerateDataKeyWithoutPlaintext);
	case HSM_OP_GenerateDataKeyPair: return BIT(G_GenerateDataKeyPair);
	case HSM_OP_GenerateDataKeyPairWithoutPlaintext:
		return BIT(G_GenerateDataKeyPairWithoutPlaintext);
	case HSM_OP_Sign: return BIT(G_Sign);
	/* A token is signed as Sign signs; a grant allowing Sign allows no less. */
	case HSM_OP_SignToken: return BIT(G_Sign);
	case HSM_OP_Verify: return BIT(G_Verify);
	case HSM_OP_GenerateMac: return BIT(G_GenerateMac);
	case HSM_OP_VerifyMac: return BIT(G_VerifyMac);
	case HSM_OP_GetPublicKey: return BIT(G_GetPublicKey);
	case HSM_OP_DeriveSharedSecret: return BIT(G_DeriveSharedSecret);
	case HSM_OP_DescribeKey: return BIT(G_DescribeKey);
	case HSM_OP_CreateGrant: return BIT(G_CreateGrant);
	case HSM_OP_RetireGrant: return BIT(G_RetireGrant);
	default: return 0;
	}
}

/* ---- Constraints ----------------------------------------------------------------------- */

#define CONSTRAINT_PAIRS_MAX 8
#define CONSTRAINT_VALUE_MAX 384

static const char EQUALS[] = "EncryptionContextEquals", SUBSET[] = "EncryptionContextSubset";

static void ctx_free(hsm_grant_ctx *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free((void *)(uintptr_t)c->pairs[i].key);
		free((void *)(uintptr_t)c->pairs[i].value);
	}
	free(c->pairs);
	memset(c, 0, sizeof(*c));
}

void hsm_grant_constraints_free(hsm_grant_constraints *c)
{
	if (c == NULL)
		return;
	ctx_free(&c->equals);
	ctx_free(&c->subset);
}

static hsm_result ctx_from_json(json_t *obj, hsm_grant_ctx *out)
{
	HSM_ENSURE(json_is_object(obj), HSM_ERR_STORE, "a grant's constraints are unreadable");
	size_t n = json_object_size(obj);
	out->present = true;
	if (n == 0)
		return HSM_SUCCESS;
	out->pairs = calloc(n, sizeof(*out->pairs));
	HSM_ENSURE(out->pairs != NULL, HSM_ERR_NOMEM, "out of memory");
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v)
	{
		HSM_ENSURE(json_is_string(v), HSM_ERR_STORE,
		           "a grant's constraints are unreadable");
		char *kc = strdup(k), *vc = strdup(json_string_value(v));
		if (kc == NULL || vc == NULL) {
			free(kc);
			free(vc);
			return HSM_FAIL(HSM_ERR_NOMEM, "out of memory");
		}
		out->pairs[out->n++] = (hsm_ctx_pair){kc, vc};
	}
	return HSM_SUCCESS;
}

hsm_result hsm_grant_constraints_parse(const char *text, hsm_grant_constraints *out)
{
	memset(out, 0, sizeof(*out));
	if (text == NULL || *text == '\0')
		return HSM_SUCCESS;
	json_t *doc = NULL;
	unsigned line, col;
	/* hsmd's reader, not json_loads: out of memory, jansson's may read other text. */
	hsm_result read = hsm_json_read((const uint8_t *)text, strlen(text), &doc, &line, &col);
	if (read.err == HSM_ERR_NOMEM)
		return read;
	if (!json_is_object(doc)) {
		json_decref(doc);
		return HSM_FAIL(HSM_ERR_STORE, "a grant's constraints are unreadable");
	}
	hsm_result r = HSM_SUCCESS;
	json_t *e = json_object_get(doc, EQUALS), *s = json_object_get(doc, SUBSET);
	if (e != NULL)
		r = ctx_from_json(e, &out->equals);
	if (hsm_ok(r) && s != NULL)
		r = ctx_from_json(s, &out->subset);
	json_decref(doc);
	if (hsm_failed(r))
		hsm_grant_constraints_free(out);
	return r;
}

static hsm_result ctx_to_json(json_t *doc, const char *name, const hsm_grant_ctx *c)
{
	if (!c->present)
		return HSM_SUCCESS;
	HSM_ENSURE(c->n <= CONSTRAINT_PAIRS_MAX, HSM_ERR_VALIDATION,
	           "%s can hold at most %d encryption context pairs", name, CONSTRAINT_PAIRS_MAX);
	json_t *o = json_object();
	HSM_ENSURE(o != NULL && json_object_set_new(doc, name, o) == 0, HSM_ERR_NOMEM,
	           "out of memory");
	for (size_t i = 0; i < c->n; i++) {
		const hsm_ctx_pair *p = &c->pairs[i];
		HSM_ENSURE(p->key[0] != '\0', HSM_ERR_VALIDATION, "%s keys must not be empty",
		           name);
		HSM_ENSURE(hsm_utf16_units(p->value) <= CONSTRAINT_VALUE_MAX, HSM_ERR_VALIDATION,
		           "%s values must be at most %d characters", name, CONSTRAINT_VALUE_MAX);
		for (size_t j = 0; j < i; j++)
			HSM_ENSURE(strcasecmp(c->pairs[j].key, p->key) != 0, HSM_ERR_VALIDATION,
			           "%s has two keys that differ only by case", name);
		/* jansson refuses text that is not UTF-8 and fails out of memory alike;
		 * malloc's ENOMEM tells the two apart. */
		errno = 0;
		bool set = json_object_set_new(o, p->key, json_string(p->value)) == 0;
		HSM_ENSURE(set || errno != ENOMEM, HSM_ERR_NOMEM, "out of memory");
		HSM_ENSURE(set, HSM_ERR_VALIDATION, "%s must hold UTF-8 strings", name);
	}
	return HSM_SUCCESS;
}

/* The stored form: compact JSON with sorted keys, "" when there is no
 * constraint. */
static hsm_result constraints_text(const hsm_grant_constraints *c, char **out)
{
	*out = NULL;
	if (!c->equals.present && !c->subset.present) {
		*out = strdup("");
		HSM_ENSURE(*out != NULL, HSM_ERR_NOMEM, "out of memory");
		return HSM_SUCCESS;
	}
	json_t *doc = json_object();
	HSM_ENSURE(doc != NULL, HSM_ERR_NOMEM, "out of memory");
	hsm_result r = ctx_to_json(doc, EQUALS, &c->equals);
	if (hsm_ok(r))
		r = ctx_to_json(doc, SUBSET, &c->subset);
	if (hsm_ok(r))
		r = hsm_json_text(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII, out);
	json_decref(doc);
	return r;
}

/*
 * Whether the context has the pair: its key, matched without regard to case as
 * KMS matches grant constraints, with exactly its value.  A context may spell one
 * key several ways ({"tenant":"acme","Tenant":"evil"}); every spelling must then
 * carry the value, or one tenant's grantee could make data another tenant's
 * grant accepts (policy_eval.c holds key-policy conditions to the same rule).
 */
static bool ctx_has(const hsm_enc_ctx *ctx, const hsm_ctx_pair *p)
{
	bool found = false;
	for (size_t i = 0; ctx != NULL && i < ctx->n; i++) {
		if (strcasecmp(ctx->pairs[i].key, p->key) != 0)
			continue;
		if (strcmp(ctx->pairs[i].value, p->value) != 0)
			return false;
		found = true;
	}
	return found;
}

static bool ctx_holds_all(const hsm_enc_ctx *ctx, const hsm_grant_ctx *c)
{
	for (size_t i = 0; i < c->n; i++)
		if (!ctx_has(ctx, &c->pairs[i]))
			return false;
	return true;
}

/* Whether a request's encryption context meets the constraints. */
static bool constraints_met(const hsm_grant_constraints *c, const hsm_enc_ctx *ctx)
{
	size_t n = ctx != NULL ? ctx->n : 0;
	if (c->equals.present) {
		hsm_enc_ctx want = {c->equals.pairs, c->equals.n};
		/* Same pairs both ways: every constraint pair in the request, and no other
		 * pair. */
		if (n != c->equals.n || !ctx_holds_all(ctx, &c->equals))
			return false;
		for (size_t i = 0; i < n; i++)
			if (!ctx_has(&want, &ctx->pairs[i]))
				return false;
	}
	if (c->subset.present && !ctx_holds_all(ctx, &c->subset))
		return false;
	return true;
}

/* Whether every context the constraints `inner` allow is one `outer` allows. */
static bool constraints_within(const hsm_grant_constraints *inner,
                               const hsm_grant_constraints *outer)
{
	if (outer->equals.present) {
		hsm_enc_ctx e = {inner->equals.pairs, inner->equals.n};
		if (!inner->equals.present || !constraints_met(outer, &e))
			return false;
	}
	if (outer->subset.present) {
		hsm_enc_ctx e = {inner->equals.pairs, inner->equals.n};
		hsm_enc_ctx s = {inner->subset.pairs, inner->subset.n};
		bool by_equals = inner->equals.present && ctx_holds_all(&e, &outer->subset);
		bool by_subset = inner->subset.present && ctx_holds_all(&s, &outer->subset);
		if (!by_equals && !by_subset)
			return false;
	}
	return true;
}

/* ---- A key's grants, as authorization reads them --------------------------------------- */

typedef struct kms_grant {
	char grant_id[HSM_GRANT_ID_LEN + 1];
	char grantee[HSM_GRANT_PRINCIPAL_MAX + 1];
	uint32_t ops;
	hsm_grant_constraints constraints;
} kms_grant;

/* Keys with more grants than this are asked per request, by grantee (an index).
 */
#define GRANT_SET_MAX 256

typedef struct kms_grant_set {
	bool complete; /* false: too many to hold; query the store per request */
	size_t n, cap;
	kms_grant *g;
} kms_grant_set;

void kms_grant_set_free(kms_grant_set *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->n; i++)
		hsm_grant_constraints_free(&set->g[i].constraints);
	free(set->g);
	free(set);
}

static hsm_result set_add(const hsm_grant_record *r, void *arg)
{
	kms_grant_set *set = arg;
	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 4;
		kms_grant *g = realloc(set->g, cap * sizeof(*g));
		HSM_ENSURE(g != NULL, HSM_ERR_NOMEM, "out of memory");
		set->g = g;
		set->cap = cap;
	}
	kms_grant *g = &set->g[set->n];
	memset(g, 0, sizeof(*g));
	memcpy(g->grant_id, r->grant_id, sizeof(g->grant_id));
	memcpy(g->grantee, r->grantee, sizeof(g->grantee));
	g->ops = r->operations;
	HSM_GUARD(hsm_grant_constraints_parse(r->constraints, &g->constraints));
	set->n++;
	return HSM_SUCCESS;
}

/* Reads grants of a key (of one grantee when not NULL) into a new set. */
static hsm_result set_read(hsm_kms *kms, const char *key_id, const char *grantee, size_t limit,
                           kms_grant_set **out)
{
	kms_grant_set *set = calloc(1, sizeof(*set));
	HSM_ENSURE(set != NULL, HSM_ERR_NOMEM, "out of memory");
	bool truncated = false;
	hsm_result r = hsm_store_grant_list(kms->store, key_id, grantee, NULL, limit, set_add, set,
	                                    &truncated);
	if (hsm_failed(r)) {
		kms_grant_set_free(set);
		return r;
	}
	set->complete = !truncated;
	*out = set;
	return HSM_SUCCESS;
}

static bool principal_is(const char *grantee, const char *arn, const char *root)
{
	return strcmp(grantee, arn) == 0 || strcmp(grantee, root) == 0;
}

/* The first grant of the set that allows the request, or NULL. */
static const kms_grant *set_allows(const kms_grant_set *set, const char *arn, const char *root,
                                   uint32_t want, const hsm_key_record *rec,
                                   const kms_authz_extra *extra)
{
	for (size_t i = 0; i < set->n; i++) {
		const kms_grant *g = &set->g[i];
		if ((g->ops & want) == 0 || !principal_is(g->grantee, arn, root))
			continue;
		if (want == BIT(G_CreateGrant)) {
			/* The new grant must fit inside this one. */
			const hsm_grant_constraints none = {0};
			const hsm_grant_constraints *asked =
			    extra != NULL && extra->new_grant_constraints != NULL
			        ? extra->new_grant_constraints
			        : &none;
			uint32_t asked_ops = extra != NULL ? extra->new_grant_ops : 0;
			if ((asked_ops & ~g->ops) == 0 &&
			    constraints_within(asked, &g->constraints))
				return g;
			continue;
		}
		if ((want & CTX_OPS) != 0 && rec->spec == HSM_SPEC_SYMMETRIC_DEFAULT &&
		    !constraints_met(&g->constraints, extra != NULL ? extra->ctx : NULL))
			continue;
		return g;
	}
	return NULL;
}

/* Says which grant allowed the request, for its audit record: ReEncrypt's source key
 * (kms:ReEncryptFrom) apart from its destination, each side under its own grant. */
static void note_grant(const hsm_caller *caller, const kms_grant *g, const kms_authz_extra *extra)
{
	if (g == NULL || caller->note == NULL)
		return;
	bool source = extra != NULL && extra->action != NULL &&
	              strcmp(extra->action, "kms:ReEncryptFrom") == 0;
	memcpy(source ? caller->note->source_grant_id : caller->note->grant_id, g->grant_id,
	       HSM_GRANT_ID_LEN + 1);
}

static void root_arn(hsm_kms *kms, char out[HSM_PRINCIPAL_ARN_MAX])
{
	hsm_caller root = {.local = true};
	hsm_kms_caller_arn(kms, &root, out);
}

hsm_result kms_grants_allow(hsm_kms *kms, const hsm_caller *caller, const char *arn, hsm_op op,
                            const kms_key *key, const kms_authz_extra *extra, bool *allowed)
{
	*allowed = false;
	uint32_t want = grant_op_of(op, extra);
	if (want == 0)
		return HSM_SUCCESS;
	char root[HSM_PRINCIPAL_ARN_MAX];
	root_arn(kms, root);
	/* The snapshot is shared and immutable but for this lazily filled cache. */
	kms_key *k = (kms_key *)(uintptr_t)key;
	kms_grant_set *set =
	    caller->grant_tokens ? NULL : atomic_load_explicit(&k->grants, memory_order_acquire);
	if (set == NULL && !caller->grant_tokens) {
		kms_grant_set *fresh = NULL;
		HSM_GUARD(set_read(kms, key->rec.key_id, NULL, GRANT_SET_MAX, &fresh));
		if (!fresh->complete) {
			/* Too many to keep: only the fact is cached, entries are asked for below.
			 */
			for (size_t i = 0; i < fresh->n; i++)
				hsm_grant_constraints_free(&fresh->g[i].constraints);
			fresh->n = 0;
		}
		kms_grant_set *expected = NULL;
		if (atomic_compare_exchange_strong_explicit(
		        &k->grants, &expected, fresh, memory_order_acq_rel, memory_order_acquire)) {
			set = fresh;
		} else {
			kms_grant_set_free(fresh);
			set = expected;
		}
	}
	if (set != NULL && set->complete) {
		const kms_grant *g = set_allows(set, arn, root, want, &key->rec, extra);
		note_grant(caller, g, extra);
		*allowed = g != NULL;
		return HSM_SUCCESS;
	}
	/* Asked afresh: the grantee's own grants and those made to the whole account. */
	const char *who[2] = {arn, root};
	for (size_t i = 0; i < 2 && !*allowed; i++) {
		if (i == 1 && strcmp(arn, root) == 0)
			break;
		kms_grant_set *own = NULL;
		HSM_GUARD(set_read(kms, key->rec.key_id, who[i], HSM_MAX_GRANTS_PER_GRANTEE, &own));
		const kms_grant *g = set_allows(own, arn, root, want, &key->rec, extra);
		note_grant(caller, g, extra);
		*allowed = g != NULL;
		kms_grant_set_free(own);
	}
	return HSM_SUCCESS;
}

/* ---- Tokens and ids --------------------------------------------------------------------- */

/*
 * A grant token: a version byte, the key id, the grant id and (from version 2)
 * 16 random bytes, so that every CreateGrant answers a token of its own, also
 * when a retry with the same Name answers the same grant.  Tokens of version 1
 * stay valid.
 */
#define TOKEN_VERSION 2
#define TOKEN_NONCE 16
#define TOKEN_BYTES_V1 (1 + 16 + HSM_GRANT_ID_LEN / 2)
#define TOKEN_BYTES (TOKEN_BYTES_V1 + TOKEN_NONCE)

static void uuid_bytes(const char *uuid, uint8_t out[16])
{
	size_t j = 0;
	for (const char *p = uuid; *p && j < 32; p++) {
		if (*p == '-')
			continue;
		int v =
		    isdigit((unsigned char)*p) ? *p - '0' : (tolower((unsigned char)*p) - 'a' + 10);
		if (j % 2 == 0)
			out[j / 2] = (uint8_t)(v << 4);
		else
			out[j / 2] |= (uint8_t)v;
		j++;
	}
}

static void uuid_text(const uint8_t in[16], char out[HSM_UUID_STRLEN + 1])
{
	char hex[33];
	hsm_hex_encode_str(hex, in, 16);
	/* 8-4-4-4-12 */
	size_t o = 0;
	for (size_t i = 0; i < 32; i++) {
		if (i == 8 || i == 12 || i == 16 || i == 20)
			out[o++] = '-';
		out[o++] = hex[i];
	}
	out[o] = '\0';
}

static hsm_result make_token(const char *key_id, const char *grant_id, hsm_buf *out)
{
	uint8_t raw[TOKEN_BYTES];
	raw[0] = TOKEN_VERSION;
	uuid_bytes(key_id, raw + 1);
	HSM_GUARD(hsm_hex_decode_exact(raw + 17, HSM_GRANT_ID_LEN / 2, grant_id, HSM_GRANT_ID_LEN,
	                               HSM_ERR_INTERNAL));
	HSM_GUARD(hsm_random_bytes(raw + TOKEN_BYTES_V1, TOKEN_NONCE));
	return hsm_b64url_encode(out, raw, sizeof(raw));
}

hsm_result hsm_grant_token_parse(const char *token, char key_id[HSM_UUID_STRLEN + 1],
                                 char grant_id[HSM_GRANT_ID_LEN + 1])
{
	hsm_buf raw = {0};
	size_t n = strlen(token);
	hsm_result r = n >= 1 && n <= HSM_GRANT_TOKEN_MAX
	                   ? hsm_b64url_decode(&raw, token, n, HSM_ERR_INVALID_GRANT_TOKEN)
	                   : HSM_FAIL(HSM_ERR_INVALID_GRANT_TOKEN, "The grant token is invalid");
	if (hsm_ok(r) && !((raw.len == TOKEN_BYTES && raw.data[0] == TOKEN_VERSION) ||
	                   (raw.len == TOKEN_BYTES_V1 && raw.data[0] == 1)))
		r = HSM_FAIL(HSM_ERR_INVALID_GRANT_TOKEN, "The grant token is invalid");
	if (hsm_ok(r)) {
		uuid_text(raw.data + 1, key_id);
		hsm_hex_encode_str(grant_id, raw.data + 17, HSM_GRANT_ID_LEN / 2);
		if (!hsm_is_uuid(key_id))
			r = HSM_FAIL(HSM_ERR_INVALID_GRANT_TOKEN, "The grant token is invalid");
	}
	hsm_buf_free(&raw);
	return r;
}

bool hsm_grant_id_valid(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;
	bool ok = n == HSM_GRANT_ID_LEN;
	for (size_t i = 0; ok && i < n; i++)
		ok = isdigit((unsigned char)s[i]) || (s[i] >= 'a' && s[i] <= 'f');
	return ok;
}

static hsm_result check_grant_id(const char *grant_id)
{
	HSM_ENSURE(hsm_grant_id_valid(grant_id), HSM_ERR_INVALID_GRANT_ID,
	           "Invalid grant ID '%.128s'", grant_id != NULL ? grant_id : "");
	return HSM_SUCCESS;
}

/* Principals as KMS's PrincipalIdType: 1-256 of [A-Za-z0-9_+=,.@:/-]. */
static hsm_result check_principal(const char *member, const char *p)
{
	size_t n = strlen(p);
	HSM_ENSURE(n >= 1 && n <= HSM_GRANT_PRINCIPAL_MAX, HSM_ERR_VALIDATION,
	           "%s must be 1 to %d characters", member, HSM_GRANT_PRINCIPAL_MAX);
	for (size_t i = 0; i < n; i++)
		HSM_ENSURE(isalnum((unsigned char)p[i]) || strchr("_+=,.@:/-", p[i]) != NULL,
		           HSM_ERR_VALIDATION, "%s may hold only letters, digits and _+=,.@:/-",
		           member);
	return HSM_SUCCESS;
}

/*
 * A principal a grant can name: this account (its root ARN) or one of its
 * users, "arn:aws:iam::<account>:root" or "...:user/<name>".  Anything else
 * would match no caller of hsmd, so a grant naming it would allow nothing
 * while counting against the grantee limits.
 */
static hsm_result check_grant_principal(hsm_kms *kms, const char *member, const char *p)
{
	HSM_GUARD(check_principal(member, p));
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "arn:aws:iam::%s:", kms->account);
	const char *rest = hsm_str_has_prefix(p, prefix) ? p + strlen(prefix) : NULL;
	bool ok = rest != NULL &&
	          (strcmp(rest, "root") == 0 ||
	           (hsm_str_has_prefix(rest, "user/") &&
	            hsm_ok(hsm_kms_user_name_check(rest + strlen("user/")))));
	HSM_ENSURE(ok, HSM_ERR_VALIDATION,
	           "%s must be the ARN of a user of this account (arn:aws:iam::%s:user/NAME) or of "
	           "the account (arn:aws:iam::%s:root)",
	           member, kms->account, kms->account);
	return HSM_SUCCESS;
}

/* Names as KMS's GrantNameType: 1-256 of [A-Za-z0-9:/_-]. */
static hsm_result check_name(const char *name)
{
	size_t n = strlen(name);
	HSM_ENSURE(n >= 1 && n <= HSM_GRANT_NAME_MAX, HSM_ERR_VALIDATION,
	           "Name must be 1 to %d characters", HSM_GRANT_NAME_MAX);
	for (size_t i = 0; i < n; i++)
		HSM_ENSURE(isalnum((unsigned char)name[i]) || strchr(":/_-", name[i]) != NULL,
		           HSM_ERR_VALIDATION, "Name may hold only letters, digits and :/_-");
	return HSM_SUCCESS;
}

/* A key named by id or key ARN (grant operations take no alias, as in KMS). */
static hsm_result resolve_key(hsm_kms *kms, const char *ref, char key_id[HSM_UUID_STRLEN + 1])
{
	HSM_ENSURE(ref != NULL && *ref != '\0', HSM_ERR_VALIDATION, "KeyId is required");
	HSM_ENSURE(strstr(ref, "alias/") == NULL, HSM_ERR_VALIDATION,
	           "KeyId must be a key ID or key ARN: grant operations do not take "
	           "an alias");
	return hsm_kms_resolve(kms, ref, key_id);
}

/* ---- The operations --------------------------------------------------------------------- */

/* kms:GrantIsForAWSResource on CreateGrant, ListGrants and RevokeGrant: no hsmd caller is
 * an AWS service integrated with KMS. */
static const hsm_policy_pair not_for_aws[] = {{"kms:GrantIsForAWSResource", "false"}};
static const kms_authz_extra for_aws_resource = {.more = not_for_aws, .n_more = 1};

static hsm_result too_many_grants(void)
{
	return HSM_FAIL(HSM_ERR_LIMIT_EXCEEDED,
	                "A key can have at most %d grants, and at most %d for one grantee",
	                HSM_MAX_GRANTS_PER_KEY, HSM_MAX_GRANTS_PER_GRANTEE);
}

/*
 * The store's grant limits, checked ahead of an approval (hsm_caller_gated).
 * Not for a grant with a Name: the store answers a retry of it with the grant
 * the first try made, whatever the counts.
 */
static hsm_result grant_room(hsm_kms *kms, const hsm_caller *caller, const hsm_grant_record *g)
{
	if (!hsm_caller_gated(caller) || g->name[0] != '\0')
		return HSM_SUCCESS;
	hsm_result r = hsm_store_grant_fits(kms->store, g);
	return r.err == HSM_ERR_LIMIT_EXCEEDED ? too_many_grants() : r;
}

hsm_result hsm_kms_create_grant(hsm_kms *kms, const hsm_caller *caller,
                                const hsm_create_grant_req *req,
                                char grant_id[HSM_GRANT_ID_LEN + 1], hsm_buf *token,
                                char key_id[HSM_UUID_STRLEN + 1])
{
	hsm_result res = HSM_SUCCESS;
	kms_key *k = NULL;
	hsm_grant_record g;
	memset(&g, 0, sizeof(g));
	uint32_t ops = 0;
	const hsm_grant_constraints *c = &req->constraints;

	HSM_GUARD(check_grant_principal(kms, "GranteePrincipal", req->grantee));
	if (req->retiring != NULL)
		HSM_GUARD(check_grant_principal(kms, "RetiringPrincipal", req->retiring));
	if (req->name != NULL)
		HSM_GUARD(check_name(req->name));
	HSM_ENSURE(req->n_operations >= 1, HSM_ERR_VALIDATION, "Operations must not be empty");
	for (size_t i = 0; i < req->n_operations; i++) {
		uint32_t bit;
		HSM_GUARD(hsm_grant_op_parse(req->operations[i], &bit));
		ops |= bit;
	}
	HSM_GUARD(constraints_text(c, &g.constraints));

	/* Condition keys a key policy may test on CreateGrant. */
	hsm_policy_pair more[HSM_GRANT_OP_COUNT + 5];
	size_t n_more = 0;
	more[n_more++] = (hsm_policy_pair){"kms:GranteePrincipal", req->grantee};
	if (req->retiring != NULL)
		more[n_more++] = (hsm_policy_pair){"kms:RetiringPrincipal", req->retiring};
	more[n_more++] = (hsm_policy_pair){"kms:GrantIsForAWSResource", "false"};
	if (c->equals.present)
		more[n_more++] = (hsm_policy_pair){"kms:GrantConstraintType", EQUALS};
	if (c->subset.present)
		more[n_more++] = (hsm_policy_pair){"kms:GrantConstraintType", SUBSET};
	for (unsigned i = 0; i < HSM_GRANT_OP_COUNT; i++)
		if (ops & BIT(i))
			more[n_more++] = (hsm_policy_pair){"kms:GrantOperations", grant_ops[i]};
	/*
	 * kms:EncryptionContext:* and kms:EncryptionContextKeys see the grant's
	 * constraint context on CreateGrant (AWS KMS "kms:EncryptionContext:
	 * context-key"): a policy limiting the contexts a principal may use limits
	 * the grants it may make too.
	 */
	hsm_ctx_pair *both = NULL;
	hsm_enc_ctx grant_ctx = {c->equals.present ? c->equals.pairs : c->subset.pairs,
	                         c->equals.present ? c->equals.n : c->subset.n};
	if (c->equals.present && c->subset.present) {
		both = calloc(c->equals.n + c->subset.n + 1, sizeof(*both));
		HSM_ENSURE(both != NULL, HSM_ERR_NOMEM, "out of memory");
		memcpy(both, c->equals.pairs, c->equals.n * sizeof(*both));
		memcpy(both + c->equals.n, c->subset.pairs, c->subset.n * sizeof(*both));
		grant_ctx = (hsm_enc_ctx){both, c->equals.n + c->subset.n};
	}
	kms_authz_extra extra = {.more = more,
	                         .n_more = n_more,
	                         .new_grant_ops = ops,
	                         .new_grant_constraints = c,
	                         .ctx = c->equals.present || c->subset.present ? &grant_ctx : NULL};

	HSM_TRY(resolve_key(kms, req->key, key_id));
	HSM_TRY(kms_lookup_write(kms, caller, HSM_OP_CreateGrant, key_id, &extra, &k));
	uint32_t bad = ops & ~ops_for_key(&k->rec);
	if (bad != 0) {
		unsigned i = 0;
		while ((bad & BIT(i)) == 0)
			i++;
		HSM_CHECK(false, HSM_ERR_VALIDATION,
		          "Operation %s is not valid for a key with KeySpec %s and KeyUsage %s",
		          grant_ops[i], hsm_spec_name(k->rec.spec), hsm_usage_name(k->rec.usage));
	}
	HSM_CHECK(!(c->equals.present || c->subset.present) ||
	              k->rec.spec == HSM_SPEC_SYMMETRIC_DEFAULT,
	          HSM_ERR_VALIDATION,
	          "Grant constraints are supported only for symmetric encryption KMS keys");

	uint8_t rnd[HSM_GRANT_ID_LEN / 2];
	HSM_TRY(hsm_random_bytes(rnd, sizeof(rnd)));
	hsm_hex_encode_str(g.grant_id, rnd, sizeof(rnd));
	memcpy(g.key_id, k->rec.key_id, sizeof(g.key_id));
	HSM_TRY(hsm_strcpy(g.name, sizeof(g.name), req->name != NULL ? req->name : ""));
	HSM_TRY(hsm_strcpy(g.grantee, sizeof(g.grantee), req->grantee));
	HSM_TRY(
	    hsm_strcpy(g.retiring, sizeof(g.retiring), req->retiring != NULL ? req->retiring : ""));
	g.operations = ops;
	g.created = kms_now(kms);
	HSM_TRY(kms_dry_run_stop(caller));
	HSM_TRY(grant_room(kms, caller, &g));
	HSM_TRY(hsm_caller_commit_key(caller, k->rec.key_id));
	/* The token first: once the grant is stored, nothing may fail. */
	HSM_TRY(make_token(g.key_id, g.grant_id, token));
	bool existed = false;
	hsm_key_state_check still = kms_state_check(HSM_OP_CreateGrant);
	res = hsm_store_grant_create(kms->store, &g, &existed, &still);
	if (res.err == HSM_ERR_LIMIT_EXCEEDED)
		res = too_many_grants();
	kms_key_invalidate(kms, k->rec.key_id);
	/*
	 * A retry with the same Name answers the grant the first call made (g now
	 * holds its id), and its token must name that grant: one naming the id
	 * drawn above would name no grant, and RetireGrant with it would leave the
	 * grant in force.  Nothing was stored, so failing here changes nothing.
	 */
	if (hsm_ok(res) && existed) {
		hsm_buf_clear(token);
		res = make_token(g.key_id, g.grant_id, token);
	}
	if (hsm_failed(res)) {
		hsm_buf_clear(token);
		goto out;
	}
	memcpy(grant_id, g.grant_id, HSM_GRANT_ID_LEN + 1);
out:
	free(both);
	kms_key_release(k);
	hsm_grant_record_clear(&g);
	return res;
}

/* Forwards one grant (ListGrants with a GrantId filter). */
typedef struct one_grant {
	const char *grantee;
	hsm_grant_cb cb;
	void *arg;
} one_grant;

hsm_result hsm_kms_list_grants(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                               const char *grant_id, const char *grantee, const char *marker,
                               size_t limit, hsm_grant_cb cb, void *arg, bool *truncated)
{
	char key_id[HSM_UUID_STRLEN + 1];
	kms_key *k = NULL;
	*truncated = false;
	if (grant_id != NULL)
		HSM_GUARD(check_grant_id(grant_id));
	if (grantee != NULL)
		HSM_GUARD(check_principal("GranteePrincipal", grantee));
	HSM_GUARD(resolve_key(kms, ref, key_id));
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_ListGrants, key_id, &for_aws_resource, &k));
	hsm_result r;
	if (grant_id != NULL) {
		hsm_grant_record g;
		memset(&g, 0, sizeof(g));
		r = hsm_store_grant_get(kms->store, k->rec.key_id, grant_id, &g);
		if (r.err == HSM_ERR_NOT_FOUND)
			r = HSM_SUCCESS; /* a filter that matches nothing: an empty list */
		else if (hsm_ok(r) && (grantee == NULL || strcmp(g.grantee, grantee) == 0) &&
		         (marker == NULL || strcmp(g.grant_id, marker) > 0))
			r = cb(&g, arg);
		hsm_grant_record_clear(&g);
	} else {
		r = hsm_store_grant_list(kms->store, k->rec.key_id, grantee, marker, limit, cb, arg,
		                         truncated);
	}
	kms_key_release(k);
	return r;
}

hsm_result hsm_kms_list_retirable_grants(hsm_kms *kms, const hsm_caller *caller,
                                         const char *retiring, const char *marker, size_t limit,
                                         hsm_grant_cb cb, void *arg, bool *truncated)
{
	*truncated = false;
	if (retiring != NULL)
		HSM_GUARD(check_principal("RetiringPrincipal", retiring));
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_ListRetirableGrants, NULL, NULL));
	if (retiring == NULL)
		return HSM_SUCCESS; /* an AWS service principal: no grant here has one */
	return hsm_store_grant_list_retiring(kms->store, retiring, marker, limit, cb, arg,
	                                     truncated);
}

hsm_result hsm_kms_retire_grant(hsm_kms *kms, const hsm_caller *caller, const char *token,
                                const char *ref, const char *grant_id,
                                char key_id[HSM_UUID_STRLEN + 1])
{
	hsm_result res = HSM_SUCCESS;
	char gid[HSM_GRANT_ID_LEN + 1], arn[HSM_PRINCIPAL_ARN_MAX], root[HSM_PRINCIPAL_ARN_MAX];
	kms_key *k = NULL;
	hsm_grant_record g;
	memset(&g, 0, sizeof(g));
	if (token != NULL) {
		HSM_GUARD(hsm_grant_token_parse(token, key_id, gid));
	} else {
		HSM_ENSURE(ref != NULL && grant_id != NULL, HSM_ERR_VALIDATION,
		           "RetireGrant needs a GrantToken, or a KeyId and a GrantId");
		HSM_GUARD(check_grant_id(grant_id));
		memcpy(gid, grant_id, sizeof(gid));
		HSM_GUARD(resolve_key(kms, ref, key_id));
	}
	/* The role check; the grant itself decides the rest. */
	HSM_GUARD(kms_authorize(kms, caller, HSM_OP_RetireGrant, NULL, NULL));
	HSM_GUARD(kms_key_load(kms, key_id, &k));
	HSM_CHECK(k->rec.state != HSM_KEY_DESTROYED, HSM_ERR_NOT_FOUND, "Key '%s' does not exist",
	          k->arn);
	res = hsm_store_grant_get(kms->store, key_id, gid, &g);
	if (res.err == HSM_ERR_NOT_FOUND)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "Grant ID %s not found", gid);
	if (hsm_failed(res))
		goto out;
	hsm_kms_caller_arn(kms, caller, arn);
	root_arn(kms, root);
	/*
	 * A retiring principal that is the account (its root ARN): as in KMS,
	 * where the account's principals allowed kms:RetireGrant may retire it;
	 * here, those who administer the account's keys, its crypto-officers.
	 */
	bool by_account = strcmp(g.retiring, root) == 0 && (caller->roles & HSM_ROLES_OFFICER) != 0;
	bool allowed =
	    caller->local || (g.retiring[0] != '\0' && strcmp(g.retiring, arn) == 0) || by_account ||
	    ((g.operations & BIT(G_RetireGrant)) != 0 && principal_is(g.grantee, arn, root));
	HSM_CHECK(allowed, HSM_ERR_ACCESS_DENIED,
	          "User: %s is not authorized to perform: kms:RetireGrant on "
	          "resource: %s because "
	          "the grant names it neither as retiring principal nor as a grantee "
	          "allowed "
	          "RetireGrant",
	          arn, k->arn);
	HSM_TRY(kms_dry_run_stop(caller));
	HSM_TRY(hsm_caller_commit_key(caller, k->rec.key_id));
	res = hsm_store_grant_delete(kms->store, key_id, gid);
	if (res.err == HSM_ERR_NOT_FOUND)
		res = HSM_FAIL(HSM_ERR_NOT_FOUND, "Grant ID %s not found", gid);
	kms_key_invalidate(kms, key_id);
out:
	kms_key_release(k);
	hsm_grant_record_clear(&g);
	return res;
}

hsm_result hsm_kms_revoke_grant(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                                const char *grant_id)
{
	char key_id[HSM_UUID_STRLEN + 1];
	kms_key *k = NULL;
	HSM_GUARD(check_grant_id(grant_id));
	HSM_GUARD(resolve_key(kms, ref, key_id));
	HSM_GUARD(kms_lookup(kms, caller, HSM_OP_RevokeGrant, key_id, &for_aws_resource, &k));
	/* A grant that is not there is refused before an approval is asked for. */
	hsm_grant_record g;
	memset(&g, 0, sizeof(g));
	hsm_result r = hsm_store_grant_get(kms->store, k->rec.key_id, grant_id, &g);
	hsm_grant_record_clear(&g);
	if (hsm_ok(r))
		r = kms_dry_run_stop(caller);
	if (hsm_ok(r))
		r = hsm_caller_commit_key(caller, k->rec.key_id);
	if (hsm_ok(r)) {
		r = hsm_store_grant_delete(kms->store, k->rec.key_id, grant_id);
		kms_key_invalidate(kms, k->rec.key_id);
	}
	if (r.err == HSM_ERR_NOT_FOUND)
		r = HSM_FAIL(HSM_ERR_NOT_FOUND, "Grant ID %s not found", grant_id);
	kms_key_release(k);
	return r;
}
