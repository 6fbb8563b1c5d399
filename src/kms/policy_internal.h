/*
 * policy_internal.h - the parsed form of a key policy, shared by the parser
 * (policy.c, policy_cond.c) and the evaluator (policy_eval.c).
 *
 * Everything a policy owns lives in one arena, freed at once with the
 * policy; the parsed form holds no JSON, so evaluation touches only plain
 * structures and pre-lowercased action patterns.
 */
#ifndef HSM_KMS_POLICY_INTERNAL_H
#define HSM_KMS_POLICY_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/net.h"
#include "kms/policy.h"

typedef struct pol_chunk pol_chunk;

typedef struct pol_arena {
	pol_chunk *head;
	/* The document is one the store holds (hsm_policy_parse_stored): what an older
	 * hsmd accepted in it is read as that hsmd read it. */
	bool stored;
} pol_arena;

/* Zeroed, suitably aligned storage that lives until the arena is freed; NULL when out of memory. */
void *hsm_pol_alloc(pol_arena *a, size_t n);
char *hsm_pol_strdup(pol_arena *a, const char *s);
void hsm_pol_arena_free(pol_arena *a);

/* Comparison an operator applies to each (request value, policy value) pair. */
typedef enum pol_base {
	POL_OP_EQUALS,
	POL_OP_EQUALS_IC,
	POL_OP_LIKE,
	POL_OP_ARN, /* ArnEquals/ArnLike: wildcards within each of an ARN's six parts */
	POL_OP_BOOL,
	POL_OP_NULL,
	/* The operators from here on compare typed values (parsed once, in the
	 * condition's numbers or nets), not text.
	 * Numeric*: both sides decimal numbers; a request value that is not one matches nothing.
	 * (pol_op_numeric and pol_op_date rely on each family's order.) */
	POL_OP_NUM_EQ,
	POL_OP_NUM_LT,
	POL_OP_NUM_LE,
	POL_OP_NUM_GT,
	POL_OP_NUM_GE,
	/* Date*: instants compared as seconds since the epoch; a request value
	 * that is neither an ISO 8601 date nor a number matches nothing. */
	POL_OP_DATE_EQ,
	POL_OP_DATE_LT,
	POL_OP_DATE_LE,
	POL_OP_DATE_GT,
	POL_OP_DATE_GE,
	/* IpAddress: the request value is an address inside one of the networks. */
	POL_OP_IP,
} pol_base;

static inline bool pol_op_numeric(pol_base b)
{
	return b >= POL_OP_NUM_EQ && b <= POL_OP_NUM_GE;
}

static inline bool pol_op_date(pol_base b)
{
	return b >= POL_OP_DATE_EQ && b <= POL_OP_DATE_GE;
}

/* An IPv4 or IPv6 network (common/net.h); an address is one with a full-length prefix. */
typedef hsm_net pol_net;

typedef enum pol_set {
	POL_SET_NONE,
	POL_SET_ANY, /* ForAnyValue: */
	POL_SET_ALL, /* ForAllValues: */
} pol_set;

/* Where a condition key's values come from in hsm_policy_request. */
typedef enum pol_key {
	POL_KEY_EXTRA,                   /* request->extra, by name */
	POL_KEY_ENCRYPTION_CONTEXT,      /* kms:EncryptionContext:<arg> */
	POL_KEY_ENCRYPTION_CONTEXT_KEYS, /* kms:EncryptionContextKeys */
	POL_KEY_ACCOUNT,                 /* kms:CallerAccount, aws:PrincipalAccount */
	POL_KEY_PRINCIPAL_ARN,           /* aws:PrincipalArn */
	POL_KEY_USERNAME,                /* aws:username */
	POL_KEY_ENCRYPTION_ALGORITHM,
	POL_KEY_SIGNING_ALGORITHM,
	POL_KEY_MAC_ALGORITHM,
	POL_KEY_KEY_SPEC,
	POL_KEY_KEY_USAGE,
	POL_KEY_REQUEST_ALIAS,
} pol_key;

typedef struct pol_condition {
	pol_base base;
	bool negated;   /* StringNotEquals, StringNotLike, ... */
	bool if_exists; /* ...IfExists */
	pol_set set;
	pol_key key;
	const char *arg; /* the context key, or the key name for POL_KEY_EXTRA */
	const char **values; /* Bool/Null values are normalized to "true"/"false" */
	size_t n_values;
	const double *numbers; /* Numeric*, Date*: values[i] read as a number or an instant */
	const pol_net *nets;   /* IpAddress: values[i] read as a network */
	bool vars; /* a value holds policy variables (Version 2012-10-17): expanded per request */
	/*
	 * A single-valued key whose name the request matches without regard to case
	 * (kms:EncryptionContext:<k>, aws:RequestTag/<k>, aws:ResourceTag/<k>), so a
	 * request may give it one value per spelling: each must pass (policy_eval.c).
	 */
	bool per_spelling;
} pol_condition;

/*
 * Policy variables hsmd expands in String and Arn condition values of
 * Version 2012-10-17 policies: ${aws:username}, ${aws:PrincipalArn},
 * ${aws:PrincipalAccount}, ${kms:CallerAccount} (names in any case), and
 * ${$}, ${*}, ${?} for the characters themselves (not in *Like operators).
 * A value with variables is at most POL_VAR_VALUE_MAX bytes with at most
 * POL_VARS_MAX of them, so its expansion fits POL_EXPAND_MAX.
 */
#define POL_VAR_VALUE_MAX 512
#define POL_VARS_MAX 8
#define POL_EXPAND_MAX 4096
/*
 * The text of a value with its variables replaced by the request's values
 * into out; false when a variable has no value in this request (the value
 * then matches nothing, as a key absent from the request matches nothing).
 */
bool hsm_pol_expand(const char *value, const hsm_policy_request *req, char *out, size_t cap);
/* The request value a variable names (name without "${" "}"); NULL when none. */
const char *hsm_pol_variable(const char *name, size_t len, const hsm_policy_request *req);

typedef enum pol_principal_kind {
	POL_PRIN_ANY,     /* "*" */
	POL_PRIN_ACCOUNT, /* every principal of an account */
	POL_PRIN_ARN,     /* one principal, by exact ARN */
	POL_PRIN_NONE,    /* a service principal: never an hsmd caller */
} pol_principal_kind;

typedef struct pol_principal {
	pol_principal_kind kind;
	const char *value; /* account id or ARN */
} pol_principal;

typedef struct pol_statement {
	const char *sid; /* NULL when absent */
	bool deny;
	bool not_principal, not_action, not_resource;
	pol_principal *principals;
	size_t n_principals;
	const char **actions; /* lowercased patterns */
	size_t n_actions;
	const char **resources;
	size_t n_resources;
	pol_condition *conds;
	size_t n_conds;
} pol_statement;

struct hsm_policy {
	atomic_uint refs;
	pol_arena arena;
	const char *source; /* the document parsed, in the arena */
	size_t source_len;
	pol_statement *statements;
	size_t n_statements;
	unsigned needs; /* HSM_POLICY_NEEDS_* of the keys its conditions name */
};

/*
 * Parses a statement's Condition object into *conds (allocated in a).
 * stmt is the 1-based statement number for messages.
 */
hsm_result hsm_pol_parse_conditions(pol_arena *a, json_t *cond, size_t stmt, bool variables,
                                    pol_condition **conds, size_t *n) HSM_MUST_CHECK;

/* Glob match with '*' (any run) and '?' (one byte), case-sensitive. */
bool hsm_pol_glob(const char *pattern, const char *s);

/* ASCII case-insensitive equality. */
bool hsm_pol_eq_ic(const char *a, const char *b);
/* IAM's Arn operators: six colon-separated parts (the last may hold colons), each
 * matched with hsm_pol_glob, so no wildcard spans a colon between parts. */
bool hsm_pol_arn_like(const char *pattern, const char *arn);
/* The same over the first n bytes at most (ASCII case folding). */
bool hsm_pol_eq_ic_n(const char *a, const char *b, size_t n);
/* A decimal number, as strtod reads one but with no hexadecimal form, finite, and
 * with no blanks around it. */
bool hsm_pol_number(const char *s, double *out);
/* An instant in seconds since the epoch: a number, or an ISO 8601 date (W3C profile). */
bool hsm_pol_date(const char *s, double *out);

#endif
