/*
 * jwt.h - JSON Web Tokens signed inside hsmd, and the JWK Set that publishes
 * the keys that verify them.
 *
 * Standards: RFC 7515 (JWS compact serialization), RFC 7517 (JWK and JWK
 * Set), RFC 7518 (JWS algorithms, JWK parameters), RFC 7519 (JWT claims),
 * RFC 8037 (EdDSA and the OKP key type), RFC 8725 (JWT best current
 * practices).
 *
 * Three layers share this header:
 *   formats  the algorithm table, the kid, the claims rules, token assembly
 *            and JWK <-> SubjectPublicKeyInfo conversion: pure functions,
 *            no key material (jwt.c, jwk.c)
 *   verify   offline verification of a token against a JWK Set (hsmctl;
 *            jwt_verify.c)
 *   service  SignToken, EnableJwtSigning, DisableJwtSigning and the JWK Set
 *            document of the KMS service (kms_jwt.c, kms_jwks.c)
 *
 * One algorithm per key.  RFC 8725 section 3.1: "each key MUST be used with
 * exactly one algorithm".  A key marked for JWT signing carries its JWS
 * algorithm in bits 8-15 of its flags (HSM_KEYFLAG_JWT_ALG_MASK, the code
 * hsm_jws_alg below; 0 means the default algorithm of the key spec); every
 * token of the key uses it, and its JWKs say so in "alg".  The algorithm
 * stays when the mark is taken off, so a key never signs one kid with two
 * algorithms.
 *
 * kid.  "<key id>.v<version>", e.g. "0f6c...-9a1e.v3": one kid per key
 * version, stable for the life of the version, readable by operators, and
 * enough for hsmd to find the public key again.
 *
 * Ownership: json_t arguments are borrowed; json_t results are new
 * references the caller releases with json_decref.  Buffers are appended to.
 */
#ifndef HSM_KMS_JWT_H
#define HSM_KMS_JWT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/result.h"
#include "common/util.h"
#include "crypto/keyspec.h"
#include "kms/kms.h"

/* ---- Algorithms ------------------------------------------------------------- */

/*
 * JWS "alg" values hsmd signs with (RFC 7518 section 3.1, RFC 8037 section
 * 3.1).  The numeric values are stored in key flags: never renumber them.
 */
typedef enum hsm_jws_alg {
	HSM_JWS_NONE = 0, /* not an algorithm: "the key's algorithm" */
	HSM_JWS_RS256 = 1,
	HSM_JWS_RS384 = 2,
	HSM_JWS_RS512 = 3,
	HSM_JWS_PS256 = 4,
	HSM_JWS_PS384 = 5,
	HSM_JWS_PS512 = 6,
	HSM_JWS_ES256 = 7,
	HSM_JWS_ES384 = 8,
	HSM_JWS_ES512 = 9,
	HSM_JWS_EDDSA = 10,
	HSM_JWS_COUNT
} hsm_jws_alg;

/* Bits of hsm_key_record.flags that hold a JWT key's hsm_jws_alg. */
#define HSM_KEYFLAG_JWT_ALG_SHIFT 8
#define HSM_KEYFLAG_JWT_ALG_MASK (0xFFU << HSM_KEYFLAG_JWT_ALG_SHIFT)

typedef struct hsm_jws_alg_info {
	hsm_jws_alg alg;
	const char *name;      /* "RS256" */
	hsm_sign_alg sign_alg; /* the KMS signing algorithm that computes it */
	hsm_key_type type;     /* RSA, EC or Ed25519 */
	/* EC and Ed25519: the one key spec the algorithm is defined for; RSA: HSM_SPEC_COUNT */
	hsm_key_spec spec;
} hsm_jws_alg_info;

/* alg must be a valid algorithm (not NONE); aborts otherwise. */
const hsm_jws_alg_info *hsm_jws_alg_get(hsm_jws_alg alg);
const char *hsm_jws_alg_name(hsm_jws_alg alg);
/* "RS256" ... "EdDSA" (case-sensitive, RFC 7515 section 4.1.1); others are HSM_ERR_VALIDATION. */
hsm_result hsm_jws_alg_parse(const char *name, hsm_jws_alg *out) HSM_MUST_CHECK;
/* True when a key of spec may sign with alg (RS/PS: any RSA size; ES256: P-256 only, ...). */
bool hsm_jws_alg_fits(hsm_jws_alg alg, hsm_key_spec spec);
/*
 * The default algorithm of a key spec: RS256 for RSA, ES256 / ES384 / ES512
 * for P-256 / P-384 / P-521, EdDSA for Ed25519.  Other specs (symmetric,
 * HMAC, secp256k1) have none: HSM_ERR_INVALID_KEY_USAGE.
 */
hsm_result hsm_jws_default_alg(hsm_key_spec spec, hsm_jws_alg *out) HSM_MUST_CHECK;
/*
 * The algorithm a key signs tokens with: from its flags, or the spec's
 * default.  HSM_ERR_INVALID_KEY_USAGE when the key is not marked for JWT
 * signing or its stored algorithm does not fit its spec.
 */
hsm_result hsm_jwt_key_alg(const hsm_key_record *key, hsm_jws_alg *out) HSM_MUST_CHECK;

/* ---- kid ------------------------------------------------------------------------ */

#define HSM_JWT_KID_MAX 64 /* with the NUL */

/* Writes "<key id>.v<version>" (version >= 1). */
hsm_result hsm_jwt_kid(const char *key_id, uint32_t version,
                       char out[HSM_JWT_KID_MAX]) HSM_MUST_CHECK;
/* Inverse of hsm_jwt_kid; anything else is HSM_ERR_VALIDATION. */
hsm_result hsm_jwt_kid_parse(const char *kid, char key_id[HSM_UUID_STRLEN + 1],
                             uint32_t *version) HSM_MUST_CHECK;

/* ---- Claims and token assembly -------------------------------------------------- */

/* Largest Claims object a caller may give, as compact JSON. */
#define HSM_JWT_CLAIMS_MAX 16384
/* Largest token hsmd makes or verifies. */
#define HSM_JWT_TOKEN_MAX 65536
/* Largest typ / cty header value. */
#define HSM_JWT_HEADER_VALUE_MAX 128

/*
 * Checks the caller's claims (HSM_ERR_VALIDATION naming the claim):
 *   - a JSON object of at most HSM_JWT_CLAIMS_MAX bytes as compact JSON;
 *   - no "iat", "nbf" or "exp": hsmd sets them from its own clock and the
 *     requested lifetime, so a token's validity never depends on the caller;
 *   - the registered claims have their RFC 7519 section 4.1 types: "iss",
 *     "sub" and "jti" strings, "aud" a string or a non-empty array of strings.
 */
hsm_result hsm_jwt_check_claims(const json_t *claims) HSM_MUST_CHECK;

/*
 * Checks the caller's extra header members: a JSON object with at most
 * "typ" and "cty", strings of 1..HSM_JWT_HEADER_VALUE_MAX bytes.  "alg",
 * "kid" and everything else belong to hsmd (HSM_ERR_VALIDATION).  *typ and
 * *cty point into header, or are NULL when absent.
 */
hsm_result hsm_jwt_check_header(const json_t *header, const char **typ,
                                 const char **cty) HSM_MUST_CHECK;

typedef struct hsm_jwt_header {
	hsm_jws_alg alg;
	const char *kid;
	const char *typ; /* NULL: "JWT" (RFC 7519 section 5.1) */
	const char *cty; /* NULL: omitted */
} hsm_jwt_header;

/*
 * Appends the JWS Signing Input (RFC 7515 section 5.1, steps 1-6):
 * BASE64URL(header) "." BASE64URL(payload), where the header is
 * {"alg","kid","typ"[,"cty"]} and the payload is the claims (checked with
 * hsm_jwt_check_claims) followed by "iat": iat, "nbf": iat, "exp": exp.
 * exp must be after iat (HSM_ERR_VALIDATION).
 */
hsm_result hsm_jwt_signing_input(const hsm_jwt_header *h, const json_t *claims, int64_t iat,
                                 int64_t exp, hsm_buf *out) HSM_MUST_CHECK;

/*
 * Appends "." BASE64URL(JWS Signature) to a signing input, completing the
 * compact serialization.  sig is the signature as hsm_sign / hsm_ks_sign
 * return it; ECDSA's DER is turned into the fixed-length R || S that
 * RFC 7518 section 3.4 requires (32, 48 or 66 bytes per half for spec).
 */
hsm_result hsm_jwt_append_signature(hsm_buf *token, hsm_jws_alg alg, hsm_key_spec spec,
                                    const uint8_t *sig, size_t sig_len) HSM_MUST_CHECK;

/* ---- JWK ---------------------------------------------------------------------- */

/*
 * Renders a public key (DER SubjectPublicKeyInfo of a key spec alg fits) as
 * a JWK (RFC 7517 section 4, RFC 7518 section 6, RFC 8037 section 2):
 * {"kty","use":"sig","alg","kid", then "n","e" (RSA) | "crv","x","y" (EC,
 * coordinates at full field length) | "crv","x" (OKP Ed25519)}.
 * An SPKI alg does not fit is HSM_ERR_INVALID_KEY_USAGE.
 */
hsm_result hsm_jwk_from_spki(const uint8_t *spki, size_t spki_len, hsm_jws_alg alg,
                             const char *kid, json_t **out) HSM_MUST_CHECK;
/*
 * The public key of a JWK as DER SubjectPublicKeyInfo, appended to spki.
 * Accepts what hsm_jwk_from_spki makes: kty RSA (n, e minimal big-endian,
 * a 2048-, 3072- or 4096-bit modulus),
 * EC (crv P-256 / P-384 / P-521, x and y at full length, a point on the
 * curve), OKP (crv Ed25519, 32-byte x); private members ("d", ...) are
 * refused.  Anything else is HSM_ERR_VALIDATION.
 */
hsm_result hsm_jwk_to_spki(const json_t *jwk, hsm_buf *spki) HSM_MUST_CHECK;

/* ---- Offline verification ------------------------------------------------------- */

typedef struct hsm_jwt_verify_opts {
	int64_t now;          /* epoch seconds */
	int64_t leeway;       /* seconds allowed for clock skew on exp, nbf and iat */
	const char *issuer;   /* iss must equal it; NULL: not checked */
	const char *audience; /* aud must contain it; NULL: a token with aud is refused */
} hsm_jwt_verify_opts;

/*
 * Verifies a compact JWS token against a JWK Set ({"keys": [...]}):
 *   - header: a JSON object with a known "alg", a "kid" (a string) or none, no "crit";
 *   - the JWK with that kid (exactly one; a header without "kid" only with
 *     a JWK Set of one key) whose "alg", when present, is the header's
 *     (RFC 8725 section 3.1) and whose key fits the algorithm;
 *   - the signature (ES*: exactly 2 x field length bytes of R || S);
 *   - claims: "exp" required and not passed, "nbf" and "iat" not in the
 *     future (each with leeway), "iss" and "aud" as opts say
 *     (RFC 7519 section 4.1.3: a token naming audiences is refused unless
 *     the verifier is one of them).
 * Errors: malformed input and failed claim checks HSM_ERR_VALIDATION, an
 * unknown kid HSM_ERR_NOT_FOUND, an algorithm the key may not use
 * HSM_ERR_INVALID_KEY_USAGE, a wrong signature HSM_ERR_INVALID_SIGNATURE.
 * On success *header and *claims (either may be NULL) receive the decoded
 * JSON objects.
 */
hsm_result hsm_jwt_verify(const char *token, size_t len, const json_t *jwks,
                          const hsm_jwt_verify_opts *opts, json_t **header,
                          json_t **claims) HSM_MUST_CHECK;

/* ---- Service: token signing ----------------------------------------------------- */

/* Lifetimes the service uses (hsm_kms_config; zeros become these defaults). */
#define HSM_JWT_DEFAULT_LIFETIME 900  /* 15 minutes: an access token */
#define HSM_JWT_MAX_LIFETIME 86400    /* one day */
#define HSM_JWT_DEFAULT_CLOCK_SKEW 60 /* verifiers' clock skew the JWKS grace allows */

typedef struct hsm_jwt_limits {
	int64_t default_lifetime;
	int64_t max_lifetime;
	int64_t clock_skew;
	/* The JWK Set's Cache-Control max-age: min(300, (max_lifetime + clock_skew) / 4), >= 1. */
	int64_t max_age;
	/*
	 * How long a new key version is published before it signs: max_age, plus
	 * the JWK Set cache's lifetime on a node (HSM_JWKS_CACHE_TTL or less) when
	 * other nodes share the store (meta_cache_ttl_ms > 0), since their
	 * documents show a rotation only that much later.  A verifier that cached
	 * the set just before a rotation, as Cache-Control allows, has fetched it
	 * again before the new version signs its first token.
	 */
	int64_t lead;
	/*
	 * How long after a rotation another node sharing the store may still
	 * sign with the version before it: until its cached copy of the key's
	 * metadata (meta_cache_ttl_ms, in whole seconds rounded up) is read
	 * again; 0 on a node alone.  A version that stopped signing here at the
	 * lead may sign there until then, so its grace counts from the later.
	 */
	int64_t stale;
	/*
	 * How long after created(v+1) the JWK Set keeps version v: the last second
	 * any node may sign with it (max(lead, stale)), then the lifetime of its
	 * last token and the verifiers' clock skew.
	 */
	int64_t grace;
} hsm_jwt_limits;

/* The effective limits of a service (configured values, or the defaults). */
void hsm_kms_jwt_limits(hsm_kms *kms, hsm_jwt_limits *out);

typedef struct hsm_jwt_sign_req {
	const char *key;      /* KeyId: key id, key ARN, alias name or alias ARN */
	const json_t *claims; /* JSON object, see hsm_jwt_check_claims */
	const char *typ;      /* NULL: "JWT" */
	const char *cty;      /* NULL: omitted */
	hsm_jws_alg alg;      /* HSM_JWS_NONE: the key's algorithm; else it must be that */
	int64_t lifetime;     /* seconds, 1..max_lifetime; 0: default_lifetime */
} hsm_jwt_sign_req;

typedef struct hsm_jwt_issued {
	hsm_used_key used; /* key and version that signed */
	hsm_jws_alg alg;
	char kid[HSM_JWT_KID_MAX];
	int64_t issued_at;  /* iat = nbf */
	int64_t expires_at; /* exp */
} hsm_jwt_issued;

/*
 * SignToken: makes and signs a JWT with the key's token version: the newest
 * version created more than `lead` whole seconds ago (hsm_jwt_limits), so
 * published for at least the lead whatever the fraction of its second, or
 * the key's first version.  After a rotation the old version keeps signing
 * while the new one is published ahead of its first token; a key with one
 * version signs at once.  The caller needs the crypto-user role and the key policy action
 * "kms:SignToken" (kms:SigningAlgorithm conditions see the KMS name of the
 * algorithm, e.g. RSASSA_PKCS1_V1_5_SHA_256).  Errors beyond the usual key
 * lookup ones (NotFound, AccessDenied, Disabled, KMSInvalidState):
 * HSM_ERR_VALIDATION for bad claims, header or lifetime;
 * HSM_ERR_INVALID_KEY_USAGE for a key not marked for JWT signing or an
 * algorithm other than the key's.  The token is appended to token.
 */
hsm_result hsm_kms_sign_token(hsm_kms *kms, const hsm_caller *caller,
                              const hsm_jwt_sign_req *req, hsm_buf *token,
                              hsm_jwt_issued *out) HSM_MUST_CHECK;

/*
 * EnableJwtSigning: marks a SIGN_VERIFY key (RSA, P-256, P-384, P-521 or
 * Ed25519) for token signing with alg (HSM_JWS_NONE: the spec's default)
 * and publishes it in the JWK Set.  Crypto-officer role, policy action
 * "kms:EnableJwtSigning".  Enabling again with the same algorithm changes
 * nothing; another algorithm than the one the key signed with, marked or
 * not, is refused (HSM_ERR_VALIDATION): its kids name key versions, which
 * verifiers have cached with that algorithm (use a new key).  HSM_JWS_NONE
 * takes the key's earlier algorithm, if it had one.
 * *after (optional) receives the key as written.
 */
hsm_result hsm_kms_enable_jwt(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                              hsm_jws_alg alg, hsm_key_record *after) HSM_MUST_CHECK;
/* The version SignToken signs with now (see hsm_kms_sign_token), for a key id. */
hsm_result hsm_kms_jwt_token_version(hsm_kms *kms, const char *key_id,
                                     uint32_t *version) HSM_MUST_CHECK;
/*
 * DisableJwtSigning: the key stops signing tokens and leaves the JWK Set at
 * once, so tokens it signed stop verifying while it stays so (enabling it
 * again publishes it again: for good, schedule the key's deletion).
 * Crypto-officer, "kms:DisableJwtSigning".  Idempotent.
 */
hsm_result hsm_kms_disable_jwt(hsm_kms *kms, const hsm_caller *caller, const char *ref,
                               hsm_key_record *after) HSM_MUST_CHECK;

/* ---- Service: the JWK Set ------------------------------------------------------- */

/*
 * Which public keys the JWK Set holds: for every Enabled key marked for JWT
 * signing, its primary version, and each older version v while
 *     now < created(v + 1) + grace (hsm_jwt_limits),
 * i.e. while v signs tokens (through second created(v + 1) + lead, see
 * hsm_kms_sign_token, or, on another node sharing the store that has not
 * read the rotation yet, through created(v + 1) + stale) or one it signed
 * may still be valid to a verifier whose clock is clock_skew behind.  Versions newer than the one signing
 * are published from their creation, ahead of their first token.  Disabled
 * keys, keys pending deletion and keys no longer marked publish nothing.
 *
 * Appends {"keys":[...]} (compact JSON, keys by key id, versions ascending)
 * to out and sets *valid_until to the time the document next changes by
 * itself (an old version leaving), or INT64_MAX.
 */
hsm_result hsm_kms_jwks_render(hsm_kms *kms, int64_t now, hsm_buf *out,
                               int64_t *valid_until) HSM_MUST_CHECK;

/*
 * The rendered JWK Set, cached: rebuilt when a key of this service changed
 * (any change: the cache does not guess which ones matter), when an old
 * version's grace ends, and at the latest every HSM_JWKS_CACHE_TTL seconds,
 * or every meta_cache_ttl_ms (rounded up to a second) when that is shorter
 * (changes made by other nodes sharing the store).  When a rebuild fails
 * (the store out of reach), the last document is served instead, while no
 * key changed through this service since it was built and for at most its
 * max-age past its expiry, and the store is asked again at most once a
 * second.  One request at a time rebuilds, outside the lock: while it waits
 * for the store, the others are served the last document where it may be,
 * and wait for the new one otherwise.  Documents are immutable and
 * reference-counted: release each with hsm_jwks_doc_release.
 */
#define HSM_JWKS_CACHE_TTL 30
/* Cache-Control max-age: min(300, (max_lifetime + clock_skew) / 4), at least 1. */
#define HSM_JWKS_MAX_AGE 300

typedef struct hsm_jwks_doc hsm_jwks_doc;

hsm_result hsm_kms_jwks(hsm_kms *kms, hsm_jwks_doc **out) HSM_MUST_CHECK;
const uint8_t *hsm_jwks_doc_body(const hsm_jwks_doc *d, size_t *len);
/* A strong entity tag, quotes included: "\"" BASE64URL(SHA-256(body)[0..16)) "\"". */
const char *hsm_jwks_doc_etag(const hsm_jwks_doc *d);
int64_t hsm_jwks_doc_max_age(const hsm_jwks_doc *d);
/* NULL is a no-op. */
void hsm_jwks_doc_release(hsm_jwks_doc *d);

#endif
