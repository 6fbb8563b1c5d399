/*
 * policy_cond.c - the Condition element of key policy statements: which
 * operators and condition keys hsmd understands, and their parsed form.
 *
 * Operators: IAM User Guide, "IAM JSON policy elements: Condition
 * operators".  Keys: AWS KMS Developer Guide, "AWS KMS condition keys", and
 * IAM User Guide, "AWS global condition context keys".
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms/policy_internal.h"

#define MALFORMED HSM_ERR_MALFORMED_POLICY

typedef struct op_row {
	const char *name;
	pol_base base;
	bool negated;
} op_row;

static const op_row operators[] = {
    {"StringEquals", POL_OP_EQUALS, false},
    {"StringNotEquals", POL_OP_EQUALS, true},
    {"StringEqualsIgnoreCase", POL_OP_EQUALS_IC, false},
    {"StringNotEqualsIgnoreCase", POL_OP_EQUALS_IC, true},
    {"StringLike", POL_OP_LIKE, false},
    {"StringNotLike", POL_OP_LIKE, true},
    /* IAM: ArnEquals and ArnLike behave alike, both take wildcards within parts. */
    {"ArnEquals", POL_OP_ARN, false},
    {"ArnLike", POL_OP_ARN, false},
    {"ArnNotEquals", POL_OP_ARN, true},
    {"ArnNotLike", POL_OP_ARN, true},
    {"Bool", POL_OP_BOOL, false},
    {"Null", POL_OP_NULL, false},
    {"NumericEquals", POL_OP_NUM_EQ, false},
    {"NumericNotEquals", POL_OP_NUM_EQ, true},
    {"NumericLessThan", POL_OP_NUM_LT, false},
    {"NumericLessThanEquals", POL_OP_NUM_LE, false},
    {"NumericGreaterThan", POL_OP_NUM_GT, false},
    {"NumericGreaterThanEquals", POL_OP_NUM_GE, false},
    {"DateEquals", POL_OP_DATE_EQ, false},
    {"DateNotEquals", POL_OP_DATE_EQ, true},
    {"DateLessThan", POL_OP_DATE_LT, false},
    {"DateLessThanEquals", POL_OP_DATE_LE, false},
    {"DateGreaterThan", POL_OP_DATE_GT, false},
    {"DateGreaterThanEquals", POL_OP_DATE_GE, false},
    {"IpAddress", POL_OP_IP, false},
    {"NotIpAddress", POL_OP_IP, true},
};

typedef struct key_row {
	const char *name;
	pol_key key;
} key_row;

/* Keys evaluated from the fields of hsm_policy_request. */
static const key_row modelled_keys[] = {
    {"kms:EncryptionContextKeys", POL_KEY_ENCRYPTION_CONTEXT_KEYS},
    {"kms:CallerAccount", POL_KEY_ACCOUNT},
    {"aws:PrincipalAccount", POL_KEY_ACCOUNT},
    {"aws:PrincipalArn", POL_KEY_PRINCIPAL_ARN},
    {"aws:username", POL_KEY_USERNAME},
    {"kms:EncryptionAlgorithm", POL_KEY_ENCRYPTION_ALGORITHM},
    {"kms:SigningAlgorithm", POL_KEY_SIGNING_ALGORITHM},
    {"kms:MacAlgorithm", POL_KEY_MAC_ALGORITHM},
    {"kms:KeySpec", POL_KEY_KEY_SPEC},
    {"kms:CustomerMasterKeySpec", POL_KEY_KEY_SPEC},
    {"kms:KeyUsage", POL_KEY_KEY_USAGE},
    {"kms:CustomerMasterKeyUsage", POL_KEY_KEY_USAGE},
    {"kms:RequestAlias", POL_KEY_REQUEST_ALIAS},
};

/* Keys KMS or IAM define that hsmd does not model: their values come from request->extra. */
static const char *const other_keys[] = {
    "kms:BypassPolicyLockoutSafetyCheck", "kms:DataKeyPairSpec", "kms:ExpirationModel",
    "kms:GrantConstraintType", "kms:GrantIsForAWSResource", "kms:GrantOperations",
    "kms:GranteePrincipal", "kms:KeyAgreementAlgorithm", "kms:KeyOrigin", "kms:MessageType",
    "kms:MultiRegion", "kms:MultiRegionKeyType", "kms:PrimaryRegion", "kms:ReEncryptOnSameKey",
    "kms:ReplicaRegion", "kms:ResourceAliases", "kms:RetiringPrincipal",
    "kms:RotationPeriodInDays", "kms:ScheduleKeyDeletionPendingWindowInDays", "kms:ValidTo",
    "kms:ViaService", "kms:WrappingAlgorithm", "kms:WrappingKeySpec",
    "aws:CalledVia", "aws:CalledViaFirst", "aws:CalledViaLast", "aws:CurrentTime",
    "aws:EpochTime", "aws:FederatedProvider", "aws:MultiFactorAuthAge",
    "aws:MultiFactorAuthPresent", "aws:PrincipalIsAWSService", "aws:PrincipalOrgID",
    "aws:PrincipalOrgPaths", "aws:PrincipalServiceName", "aws:PrincipalServiceNamesList",
    "aws:PrincipalType", "aws:Referer", "aws:RequestedRegion", "aws:ResourceAccount",
    "aws:ResourceOrgID", "aws:ResourceOrgPaths", "aws:SecureTransport", "aws:SourceAccount",
    "aws:SourceArn", "aws:SourceIdentity", "aws:SourceIp", "aws:SourceOrgID",
    "aws:SourceOrgPaths", "aws:SourceVpc", "aws:SourceVpce", "aws:TagKeys",
    "aws:TokenIssueTime", "aws:UserAgent", "aws:userid", "aws:ViaAWSService", "aws:VpcSourceIp",
};

/* Key families named by a prefix and a free suffix. */
static const char *const other_prefixes[] = {
    "kms:RecipientAttestation:", "aws:PrincipalTag/", "aws:RequestTag/", "aws:ResourceTag/",
};

#define EC_PREFIX "kms:EncryptionContext:"
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A number as strtod reads one (hexadecimal too), finite, with no blanks around it: how
 * hsmd read policy values before they had to be decimal. */
static bool strtod_number(const char *s, double *out)
{
	char *end = NULL;
	errno = 0;
	*out = strtod(s, &end);
	return *s != '\0' && !isspace((unsigned char)*s) && end != NULL && *end == '\0' &&
	       errno == 0 && isfinite(*out);
}

bool hsm_pol_number(const char *s, double *out)
{
	/* Decimal only: strtod also reads "0x10" (16) and "0x1p4". */
	return strspn(s, "+-.0123456789eE") == strlen(s) && strtod_number(s, out);
}

bool hsm_pol_eq_ic_n(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char x = (a[i] >= 'A' && a[i] <= 'Z') ? (char)(a[i] - 'A' + 'a') : a[i];
		char y = (b[i] >= 'A' && b[i] <= 'Z') ? (char)(b[i] - 'A' + 'a') : b[i];
		if (x != y || x == '\0')
			return x == y;
	}
	return true;
}

bool hsm_pol_eq_ic(const char *a, const char *b)
{
	for (;; a++, b++) {
		char x = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
		char y = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
		if (x != y)
			return false;
		if (x == '\0')
			return true;
	}
}

static bool prefix_ic(const char *s, const char *prefix)
{
	for (; *prefix != '\0'; s++, prefix++) {
		char x = (*s >= 'A' && *s <= 'Z') ? (char)(*s - 'A' + 'a') : *s;
		char y = (*prefix >= 'A' && *prefix <= 'Z') ? (char)(*prefix - 'A' + 'a') : *prefix;
		if (x != y)
			return false;
	}
	return true;
}

/* Splits "ForAnyValue:StringLikeIfExists" into its parts. */
static hsm_result parse_operator(const char *name, size_t stmt, pol_condition *c)
{
	const char *p = name;
	c->set = POL_SET_NONE;
	if (strncmp(p, "ForAnyValue:", 12) == 0) {
		c->set = POL_SET_ANY;
		p += 12;
	} else if (strncmp(p, "ForAllValues:", 13) == 0) {
		c->set = POL_SET_ALL;
		p += 13;
	}
	size_t n = strlen(p);
	c->if_exists = n > 8 && strcmp(p + n - 8, "IfExists") == 0;
	if (c->if_exists)
		n -= 8;
	const op_row *row = NULL;
	for (size_t i = 0; i < COUNT(operators); i++) {
		if (strlen(operators[i].name) == n && strncmp(p, operators[i].name, n) == 0)
			row = &operators[i];
	}
	HSM_ENSURE(row != NULL, MALFORMED,
	           "Statement %zu: condition operator '%.64s' is not supported.", stmt, name);
	HSM_ENSURE(row->base != POL_OP_NULL || (c->set == POL_SET_NONE && !c->if_exists), MALFORMED,
	           "Statement %zu: the Null operator takes no set prefix or IfExists suffix.", stmt);
	c->base = row->base;
	c->negated = row->negated;
	return HSM_SUCCESS;
}

/* Resolves a condition key name to where its values come from. */
static hsm_result parse_key(pol_arena *a, const char *name, size_t stmt, pol_condition *c)
{
	c->key = POL_KEY_EXTRA;
	c->arg = name;
	const char *colon = strchr(name, ':');
	HSM_ENSURE(colon != NULL && colon != name && colon[1] != '\0', MALFORMED,
	           "Statement %zu: condition key '%.64s' is not of the form <service>:<name>.", stmt,
	           name);
	if (prefix_ic(name, EC_PREFIX)) {
		HSM_ENSURE(name[strlen(EC_PREFIX)] != '\0', MALFORMED,
		           "Statement %zu: kms:EncryptionContext: needs a context key after the colon.",
		           stmt);
		c->key = POL_KEY_ENCRYPTION_CONTEXT;
		c->arg = name + strlen(EC_PREFIX);
		c->per_spelling = true;
		/* AWS KMS refuses this combination in PutKeyPolicy for the same reason. */
		HSM_ENSURE(c->set != POL_SET_ALL, MALFORMED,
		           "Statement %zu: OverlyPermissiveCondition: Using the ForAllValues set operator "
		           "with a single-valued condition key matches requests without the specified "
		           "encryption context or with an unspecified encryption context. To fix, remove "
		           "ForAllValues.",
		           stmt);
	} else {
		/* Single-valued too: AWS KMS refuses ForAllValues on aws:RequestTag/ alike. */
		HSM_ENSURE(!(prefix_ic(name, "aws:RequestTag/") && c->set == POL_SET_ALL), MALFORMED,
		           "Statement %zu: OverlyPermissiveCondition: Using the ForAllValues set operator "
		           "with a single-valued condition key matches requests without the specified "
		           "tag or with an unspecified tag. To fix, remove ForAllValues.",
		           stmt);
		bool known = false;
		for (size_t i = 0; i < COUNT(modelled_keys) && !known; i++) {
			if (hsm_pol_eq_ic(name, modelled_keys[i].name)) {
				c->key = modelled_keys[i].key;
				known = true;
			}
		}
		for (size_t i = 0; i < COUNT(other_keys) && !known; i++)
			known = hsm_pol_eq_ic(name, other_keys[i]);
		for (size_t i = 0; i < COUNT(other_prefixes) && !known; i++)
			known = prefix_ic(name, other_prefixes[i]) && name[strlen(other_prefixes[i])] != '\0';
		/* Tag keys are case-sensitive, names of condition keys are not: a key or a
		 * request may hold "env" and "Env", each a value of aws:*Tag/env. */
		c->per_spelling = prefix_ic(name, "aws:RequestTag/") || prefix_ic(name, "aws:ResourceTag/");
		/* Another service's key never occurs in a KMS request; a kms:/aws: typo must not pass. */
		HSM_ENSURE(known || !(prefix_ic(name, "kms:") || prefix_ic(name, "aws:")), MALFORMED,
		           "Statement %zu: condition key '%.64s' is not supported.", stmt, name);
	}
	c->arg = hsm_pol_strdup(a, c->arg);
	HSM_ENSURE(c->arg != NULL, HSM_ERR_NOMEM, "out of memory");
	return HSM_SUCCESS;
}

/* One condition value as text: strings as they are, booleans and integers spelled out. */
static hsm_result value_text(pol_arena *a, json_t *v, const pol_condition *c, size_t stmt,
                             const char *key, const char **out)
{
	char num[32];
	const char *s = json_string_value(v);
	if (s != NULL) {
		HSM_ENSURE(strlen(s) == json_string_length(v), MALFORMED,
		           "Statement %zu: condition values must not contain NUL characters.", stmt);
	} else if (json_is_boolean(v)) {
		s = json_is_true(v) ? "true" : "false";
	} else if (json_is_integer(v)) {
		snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
		s = num;
	}
	HSM_ENSURE(s != NULL, MALFORMED,
	           "Statement %zu: values of condition key '%.64s' must be strings, booleans or "
	           "integers.",
	           stmt, key);
	if (c->base == POL_OP_BOOL || c->base == POL_OP_NULL) {
		HSM_ENSURE(hsm_pol_eq_ic(s, "true") || hsm_pol_eq_ic(s, "false"), MALFORMED,
		           "Statement %zu: %s conditions take true or false, not '%.32s'.", stmt,
		           c->base == POL_OP_BOOL ? "Bool" : "Null", s);
		s = hsm_pol_eq_ic(s, "true") ? "true" : "false";
	}
	*out = hsm_pol_strdup(a, s);
	HSM_ENSURE(*out != NULL, HSM_ERR_NOMEM, "out of memory");
	return HSM_SUCCESS;
}

/* Reads value i of a Numeric, Date or IpAddress condition into its typed form (a stored
 * document's as an older hsmd read it: hsm_policy_parse_stored). */
static hsm_result typed_value(const pol_arena *a, pol_condition *c, size_t i, size_t stmt,
                              double *numbers, pol_net *nets)
{
	const char *s = c->values[i];
	if (pol_op_numeric(c->base))
		HSM_ENSURE(hsm_pol_number(s, &numbers[i]) || (a->stored && strtod_number(s, &numbers[i])),
		           MALFORMED,
		           "Statement %zu: Numeric conditions take numbers, not '%.32s'.", stmt, s);
	else if (pol_op_date(c->base))
		HSM_ENSURE(hsm_pol_date(s, &numbers[i]) || (a->stored && strtod_number(s, &numbers[i])),
		           MALFORMED,
		           "Statement %zu: Date conditions take ISO 8601 dates (such as "
		           "2026-01-31T12:00:00Z) or seconds since the epoch, not '%.40s'.",
		           stmt, s);
	else if (c->base == POL_OP_IP)
		HSM_ENSURE(hsm_net_parse(s, true, &nets[i]), MALFORMED,
		           "Statement %zu: IpAddress conditions take an IPv4 or IPv6 address or "
		           "CIDR range (such as 203.0.113.0/24), not '%.48s'.",
		           stmt, s);
	return HSM_SUCCESS;
}

/* The variables hsmd expands (policy_internal.h), in any case. */
static const char *const expanded_vars[] = {"aws:username", "aws:PrincipalArn",
                                            "aws:PrincipalAccount", "kms:CallerAccount"};

/*
 * A String or Arn value of a 2012-10-17 policy: each "${...}" must be a
 * variable hsmd expands, so that none is compared as literal text (which
 * would let a request that sends the literal through, and nobody else).
 */
static hsm_result check_variables(const char *s, size_t stmt, pol_condition *c)
{
	bool like = c->base == POL_OP_LIKE || c->base == POL_OP_ARN;
	size_t n = 0;
	for (const char *p = strstr(s, "${"); p != NULL; p = strstr(p, "${")) {
		const char *end = strchr(p + 2, '}');
		HSM_ENSURE(end != NULL, MALFORMED,
		           "Statement %zu: '${' opens a policy variable that is not closed (write ${$} "
		           "for a '$').",
		           stmt);
		size_t len = (size_t)(end - p - 2);
		bool known = len == 1 && (p[2] == '$' || (!like && (p[2] == '*' || p[2] == '?')));
		for (size_t i = 0; i < COUNT(expanded_vars) && !known; i++)
			known = strlen(expanded_vars[i]) == len &&
			        hsm_pol_eq_ic_n(p + 2, expanded_vars[i], len);
		HSM_ENSURE(known, MALFORMED,
		           "Statement %zu: policy variable '${%.*s}' is not supported: hsmd expands "
		           "${aws:username}, ${aws:PrincipalArn}, ${aws:PrincipalAccount}, "
		           "${kms:CallerAccount} and ${$}, and ${*} and ${?} outside *Like operators.",
		           stmt, (int)(len < 64 ? len : 64), p + 2);
		n++;
		p = end + 1;
	}
	if (n == 0)
		return HSM_SUCCESS;
	HSM_ENSURE(n <= POL_VARS_MAX && strlen(s) <= POL_VAR_VALUE_MAX, MALFORMED,
	           "Statement %zu: a condition value with policy variables holds at most %d of them "
	           "in %d characters.",
	           stmt, POL_VARS_MAX, POL_VAR_VALUE_MAX);
	c->vars = true;
	return HSM_SUCCESS;
}

static hsm_result parse_values(pol_arena *a, json_t *v, size_t stmt, const char *key,
                               bool variables, pol_condition *c)
{
	size_t n = json_is_array(v) ? json_array_size(v) : 1;
	HSM_ENSURE(!json_is_array(v) || n > 0, MALFORMED,
	           "Statement %zu: condition key '%.64s' has an empty list of values.", stmt, key);
	c->values = hsm_pol_alloc(a, n * sizeof(*c->values));
	HSM_ENSURE(c->values != NULL, HSM_ERR_NOMEM, "out of memory");
	double *numbers = NULL;
	pol_net *nets = NULL;
	if (pol_op_numeric(c->base) || pol_op_date(c->base)) {
		numbers = hsm_pol_alloc(a, n * sizeof(*numbers));
		HSM_ENSURE(numbers != NULL, HSM_ERR_NOMEM, "out of memory");
	} else if (c->base == POL_OP_IP) {
		nets = hsm_pol_alloc(a, n * sizeof(*nets));
		HSM_ENSURE(nets != NULL, HSM_ERR_NOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		HSM_GUARD(value_text(a, json_is_array(v) ? json_array_get(v, i) : v, c, stmt, key,
		                     &c->values[i]));
		HSM_GUARD(typed_value(a, c, i, stmt, numbers, nets));
		/* IAM: variables are expanded in 2012-10-17 policies, text in 2008-10-17 ones. */
		if (variables && (c->base == POL_OP_EQUALS || c->base == POL_OP_EQUALS_IC ||
		                  c->base == POL_OP_LIKE || c->base == POL_OP_ARN))
			HSM_GUARD(check_variables(c->values[i], stmt, c));
	}
	c->n_values = n;
	c->numbers = numbers;
	c->nets = nets;
	return HSM_SUCCESS;
}

hsm_result hsm_pol_parse_conditions(pol_arena *a, json_t *cond, size_t stmt, bool variables,
                                    pol_condition **conds, size_t *n_out)
{
	const char *op, *key;
	json_t *keys, *values;
	size_t n = 0, i = 0;
	HSM_ENSURE(json_is_object(cond), MALFORMED, "Statement %zu: Condition must be an object.",
	           stmt);
	json_object_foreach(cond, op, keys) {
		HSM_ENSURE(json_is_object(keys) && json_object_size(keys) > 0, MALFORMED,
		           "Statement %zu: condition operator '%.64s' needs an object of condition keys.",
		           stmt, op);
		n += json_object_size(keys);
	}
	pol_condition *list = hsm_pol_alloc(a, (n > 0 ? n : 1) * sizeof(*list));
	HSM_ENSURE(list != NULL, HSM_ERR_NOMEM, "out of memory");
	json_object_foreach(cond, op, keys) {
		json_object_foreach(keys, key, values) {
			pol_condition *c = &list[i++];
			HSM_GUARD(parse_operator(op, stmt, c));
			HSM_GUARD(parse_key(a, key, stmt, c));
			HSM_GUARD(parse_values(a, values, stmt, key, variables, c));
		}
	}
	*conds = list;
	*n_out = n;
	return HSM_SUCCESS;
}
