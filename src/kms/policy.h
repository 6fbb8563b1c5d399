/*
 * policy.h - AWS KMS key policies: parse and validate once, evaluate often.
 *
 * Sources: AWS KMS Developer Guide, "Key policies" (format, default key
 * policy, 32 KB size quota) and "AWS KMS condition keys"; IAM User Guide,
 * "IAM JSON policy elements" (Version, Statement, Sid, Effect, Principal,
 * NotPrincipal, Action, NotAction, Resource, NotResource, Condition),
 * "Condition operators" and "Conditions with multiple context keys or
 * values", and "Policy evaluation logic" (an explicit Deny wins; without a
 * matching Allow the request is implicitly denied).
 *
 * Supported grammar
 *   Version     "2012-10-17" or "2008-10-17" (optional)
 *   Id          string (optional)
 *   Statement   one statement object or a non-empty array of them
 *   Sid         string, unique within the policy (optional)
 *   Effect      "Allow" | "Deny"
 *   Principal / NotPrincipal (exactly one)
 *               "*" | {"AWS": P | [P, ...], "Service": S | [S, ...]}
 *               P = "*" | "<12-digit account>" | "arn:<partition>:iam::<account>:root"
 *                   (both mean every principal of that account, as the
 *                   default key policy intends) | the ARN of an IAM user or
 *                   role (exact match).  Service principals are accepted
 *                   but match no hsmd caller.
 *   Action / NotAction (exactly one)
 *               "*" | "<service>:<name>" with * and ? wildcards, matched
 *               case-insensitively; a string or a non-empty array
 *   Resource / NotResource (exactly one)
 *               "*" | an ARN pattern with * and ?, matched case-sensitively
 *   Condition   {"<operator>": {"<condition key>": V | [V, ...]}, ...}
 *               V is a string, a boolean or an integer (compared as text).
 *
 * Condition operators: StringEquals, StringNotEquals, StringEqualsIgnoreCase,
 * StringNotEqualsIgnoreCase, StringLike, StringNotLike, ArnEquals, ArnLike,
 * ArnNotEquals, ArnNotLike (the Arn forms match like StringLike), Bool,
 * Numeric{Equals,NotEquals,LessThan,LessThanEquals,GreaterThan,
 * GreaterThanEquals}, Date{...the same six...} (ISO 8601 dates or seconds
 * since the epoch, compared as instants), IpAddress and NotIpAddress (IPv4
 * or IPv6 addresses and CIDR ranges), Null; each but Null may carry the
 * "IfExists" suffix and the "ForAnyValue:" / "ForAllValues:" set prefixes.
 * Anything else (Binary*) is refused as malformed, as is a Numeric, Date
 * or IpAddress value that is not a number, an instant or a network.  A
 * request value of the wrong type matches nothing.
 *
 * Semantics (IAM): several operators, and several keys under one operator,
 * must all hold; several values for one key match if any matches, and a
 * negated operator holds only when none matches.  A key absent from the
 * request fails a positive operator and satisfies a negated one;
 * "...IfExists" is satisfied by an absent key.  ForAnyValue holds when some
 * request value satisfies the operator (never for an empty set);
 * ForAllValues holds when every request value does (always for an empty set).
 * Case-insensitive comparisons fold ASCII letters only.
 *
 * Condition keys evaluated from hsm_policy_request:
 *   kms:EncryptionContext:<key>   value of that context pair; <key> matched
 *                                 case-insensitively, as in KMS
 *   kms:EncryptionContextKeys     every context key (multi-valued)
 *   kms:CallerAccount, aws:PrincipalAccount   account_id
 *   aws:PrincipalArn                          principal_arn
 *   aws:username                  the user name of an IAM user ARN
 *   kms:EncryptionAlgorithm, kms:SigningAlgorithm, kms:MacAlgorithm,
 *   kms:KeySpec (and kms:CustomerMasterKeySpec), kms:KeyUsage (and
 *   kms:CustomerMasterKeyUsage), kms:RequestAlias   the request fields
 * Other keys that KMS or IAM define are looked up in request->extra, which
 * the KMS layer fills with every value hsmd knows for the request (the key's
 * origin, aliases and tags, the transport, the operation's parameters: see
 * kms_authorize); the rest (kms:ViaService, aws:SourceVpc, ...) name things
 * hsmd requests never have and are absent, as they are in AWS for requests
 * without them.  Keys of other services are always absent.  A kms: or aws:
 * key that neither service defines is refused as malformed, so a misspelt
 * key cannot silently disable a Deny.  Condition key names are
 * case-insensitive.  In Version 2012-10-17 policies, String and Arn values
 * expand the policy variables listed in policy_internal.h and refuse any
 * other "${...}" as malformed; other versions keep them as text.
 *
 * Ownership: hsm_policy is immutable after parse and may be evaluated from
 * several threads at once.  Evaluation allocates nothing and reads only
 * what the request points to.
 */
#ifndef HSM_KMS_POLICY_H
#define HSM_KMS_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/result.h"

/* AWS KMS key policy document size quota. */
#define HSM_POLICY_MAX_BYTES 32768

typedef struct hsm_policy hsm_policy;

/*
 * Parses and validates a key policy document (len bytes of UTF-8 JSON).
 * Any fault is HSM_ERR_MALFORMED_POLICY with a message naming the
 * statement and element at fault.  *out is set only on success.
 */
hsm_result hsm_policy_parse(const char *doc, size_t len, hsm_policy **out) HSM_MUST_CHECK;
/* The same for a document the store already holds: what an older hsmd accepted in one
 * (a Numeric value strtod reads, such as "0x1E") is read as it was, not refused. */
hsm_result hsm_policy_parse_stored(const char *doc, size_t len, hsm_policy **out) HSM_MUST_CHECK;
/*
 * A parsed policy is immutable and reference-counted, so keys with the same
 * document can share one: hsm_policy_ref takes a reference, hsm_policy_free
 * drops one and frees the policy with the last (the parse holds the first).
 */
hsm_policy *hsm_policy_ref(hsm_policy *p);
void hsm_policy_free(hsm_policy *p);
/* Whether p was parsed from exactly these len bytes. */
bool hsm_policy_parsed_from(const hsm_policy *p, const char *doc, size_t len);
/* The document p was parsed from (NUL-terminated), alive as long as p. */
const char *hsm_policy_source(const hsm_policy *p);
/* Number of statements (for tests and diagnostics). */
size_t hsm_policy_statement_count(const hsm_policy *p);

/*
 * What the policy's conditions read, so that a caller works out only those
 * values: any key looked up in request->extra, request->request_alias, and
 * the extra keys that cost a store read or the clock.
 */
#define HSM_POLICY_NEEDS_RESOURCE_ALIASES 1u /* kms:ResourceAliases */
#define HSM_POLICY_NEEDS_RESOURCE_TAGS 2u    /* aws:ResourceTag/<key> */
#define HSM_POLICY_NEEDS_TIME 4u             /* aws:CurrentTime, aws:EpochTime */
#define HSM_POLICY_NEEDS_EXTRA 8u            /* any key of request->extra */
#define HSM_POLICY_NEEDS_REQUEST_ALIAS 16u   /* kms:RequestAlias */
unsigned hsm_policy_needs(const hsm_policy *p);

typedef struct hsm_policy_pair {
	const char *key;
	const char *value;
} hsm_policy_pair;

/* What is being asked; every pointer is borrowed for the call only. */
typedef struct hsm_policy_request {
	const char *principal_arn; /* "arn:aws:iam::111122223333:user/alice" (required) */
	const char *account_id;    /* the caller's account, "111122223333" (required) */
	const char *action;        /* "kms:Encrypt" (required) */
	const char *resource;      /* the key ARN (required) */
	const hsm_policy_pair *encryption_context;
	size_t n_encryption_context;
	/* NULL when the operation has no such parameter. */
	const char *encryption_algorithm;
	const char *signing_algorithm;
	const char *mac_algorithm;
	const char *key_spec;
	const char *key_usage;
	const char *request_alias;
	/* Values of any other condition key; a key may repeat (multi-valued). */
	const hsm_policy_pair *extra;
	size_t n_extra;
} hsm_policy_request;

typedef enum hsm_policy_decision {
	HSM_POLICY_IMPLICIT_DENY, /* no statement allows it */
	HSM_POLICY_ALLOW,
	HSM_POLICY_EXPLICIT_DENY, /* a Deny statement matched */
} hsm_policy_decision;

typedef struct hsm_policy_verdict {
	hsm_policy_decision decision;
	/*
	 * The statement that decided: the matching Deny, or the first matching
	 * Allow; -1 and NULL for an implicit deny.  sid is NULL when the
	 * statement has no Sid and lives as long as the policy.
	 */
	int statement;
	const char *sid;
} hsm_policy_verdict;

/* Evaluates req against p; fills *out (may be NULL) and returns the decision. */
hsm_policy_decision hsm_policy_evaluate(const hsm_policy *p, const hsm_policy_request *req,
                                        hsm_policy_verdict *out);

/* "Allow", "ExplicitDeny", "ImplicitDeny" (for audit records). */
const char *hsm_policy_decision_name(hsm_policy_decision d);

/*
 * Appends KMS's default key policy for account_id (12 digits) to out:
 * statement "Enable IAM User Permissions" allowing kms:* on * to
 * arn:aws:iam::<account>:root.  HSM_ERR_VALIDATION for a bad account id.
 */
hsm_result hsm_policy_default(const char *account_id, hsm_buf *out) HSM_MUST_CHECK;

#endif
