/*
 * policy_eval.c - evaluating a parsed key policy against a request.
 *
 * IAM User Guide, "Policy evaluation logic": a matching Deny statement
 * decides at once; otherwise the first matching Allow allows; otherwise
 * the request is implicitly denied.  A statement matches when its
 * principal, action and resource elements match and every condition holds.
 */
#include <string.h>

#include "kms/policy_internal.h"

/* Longest action name; KMS action names are far shorter. */
#define ACTION_MAX 128

bool hsm_pol_glob(const char *pattern, const char *s)
{
	/*
	 * Greedy match that backtracks only to the most recent '*' (the text
	 * between two stars can always be matched at its leftmost place), so
	 * the cost is at most len(pattern) * len(s).  A trailing '*' ends the
	 * match at once, which makes the common "*" and "kms:*" cheap.
	 */
	const char *after_star = NULL, *resume = NULL;
	while (*s != '\0') {
		if (*pattern == '*') {
			while (*pattern == '*')
				pattern++;
			if (*pattern == '\0')
				return true;
			after_star = pattern;
			resume = s;
		} else if (*pattern == '?') {
			/* One character: a UTF-8 sequence's continuation bytes go with it. */
			pattern++;
			s++;
			while ((*(const unsigned char *)s & 0xC0) == 0x80)
				s++;
		} else if (*pattern != '\0' && *pattern == *s) {
			pattern++;
			s++;
		} else if (after_star != NULL) {
			pattern = after_star;
			s = ++resume;
		} else {
			return false;
		}
	}
	while (*pattern == '*')
		pattern++;
	return *pattern == '\0';
}

/* Matches one part: pattern[0..pn) against s[0..sn), copied out to be NUL-terminated. */
static bool part_glob(const char *pattern, size_t pn, const char *s, size_t sn)
{
	char pbuf[POL_EXPAND_MAX], sbuf[POL_EXPAND_MAX];
	if (pn >= sizeof(pbuf) || sn >= sizeof(sbuf))
		return false;
	memcpy(pbuf, pattern, pn);
	pbuf[pn] = '\0';
	memcpy(sbuf, s, sn);
	sbuf[sn] = '\0';
	return hsm_pol_glob(pbuf, sbuf);
}

bool hsm_pol_arn_like(const char *pattern, const char *arn)
{
	for (int part = 0; part < 6; part++) {
		const char *pe = part < 5 ? strchr(pattern, ':') : pattern + strlen(pattern);
		const char *ae = part < 5 ? strchr(arn, ':') : arn + strlen(arn);
		if (pe == NULL || ae == NULL)
			return false; /* not six parts: not an ARN, matches nothing */
		if (!part_glob(pattern, (size_t)(pe - pattern), arn, (size_t)(ae - arn)))
			return false;
		pattern = pe + (part < 5);
		arn = ae + (part < 5);
	}
	return true;
}

/* The caller is its account's root ("arn:aws:iam::<account>:root"): hsmd's local operators. */
static bool is_account_root(const hsm_policy_request *req)
{
	static const char prefix[] = "arn:aws:iam::", suffix[] = ":root";
	const char *arn = req->principal_arn;
	size_t n = strlen(arn), acct = strlen(req->account_id);
	return n == sizeof(prefix) - 1 + acct + sizeof(suffix) - 1 &&
	       strncmp(arn, prefix, sizeof(prefix) - 1) == 0 &&
	       strncmp(arn + sizeof(prefix) - 1, req->account_id, acct) == 0 &&
	       strcmp(arn + sizeof(prefix) - 1 + acct, suffix) == 0;
}

/*
 * In Principal, an account (its id or root ARN) stands for every principal of
 * it.  In NotPrincipal it names the account's root alone, as in IAM: AWS's
 * own pattern lists a user and its account's ARN in NotPrincipal to deny
 * everyone but that user, which would otherwise deny no one.
 */
static bool principal_matches(const pol_statement *st, const hsm_policy_request *req)
{
	for (size_t i = 0; i < st->n_principals; i++) {
		const pol_principal *p = &st->principals[i];
		switch (p->kind) {
		case POL_PRIN_ANY:
			return true;
		case POL_PRIN_ACCOUNT:
			if (strcmp(p->value, req->account_id) == 0 &&
			    (!st->not_principal || is_account_root(req)))
				return true;
			break;
		case POL_PRIN_ARN:
			if (strcmp(p->value, req->principal_arn) == 0)
				return true;
			break;
		case POL_PRIN_NONE:
			break;
		}
	}
	return false;
}

static bool any_glob(const char *const *patterns, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++) {
		if (hsm_pol_glob(patterns[i], s))
			return true;
	}
	return false;
}

/* ---- Condition values ------------------------------------------------------------- */

/* Walks the request values of a condition key: 0 or 1 for single-valued keys. */
typedef struct value_iter {
	const pol_condition *c;
	const hsm_policy_request *req;
	size_t next;
} value_iter;

static const char *username_of(const char *arn)
{
	/* aws:username exists for IAM users only: arn:aws:iam::<account>:user/<path/>name */
	const char *user = strstr(arn, ":user/");
	if (user == NULL || strncmp(arn, "arn:", 4) != 0)
		return NULL;
	const char *name = strrchr(user, '/') + 1;
	return *name != '\0' ? name : NULL;
}

const char *hsm_pol_variable(const char *name, size_t len, const hsm_policy_request *req)
{
	if (len == 12 && hsm_pol_eq_ic_n(name, "aws:username", len))
		return username_of(req->principal_arn);
	if (len == 16 && hsm_pol_eq_ic_n(name, "aws:PrincipalArn", len))
		return req->principal_arn;
	if ((len == 20 && hsm_pol_eq_ic_n(name, "aws:PrincipalAccount", len)) ||
	    (len == 17 && hsm_pol_eq_ic_n(name, "kms:CallerAccount", len)))
		return req->account_id;
	if (len == 1 && (name[0] == '$' || name[0] == '*' || name[0] == '?'))
		return name[0] == '$' ? "$" : name[0] == '*' ? "*" : "?";
	return NULL;
}

bool hsm_pol_expand(const char *value, const hsm_policy_request *req, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *p = value; *p != '\0';) {
		const char *end = p[0] == '$' && p[1] == '{' ? strchr(p + 2, '}') : NULL;
		const char *put = p;
		size_t n = 1;
		if (end != NULL) {
			put = hsm_pol_variable(p + 2, (size_t)(end - p - 2), req);
			if (put == NULL)
				return false;
			n = strlen(put);
			p = end + 1;
		} else {
			p++;
		}
		if (o + n >= cap)
			return false;
		memcpy(out + o, put, n);
		o += n;
	}
	out[o] = '\0';
	return true;
}

static const char *single_value(const pol_condition *c, const hsm_policy_request *req)
{
	switch (c->key) {
	case POL_KEY_ACCOUNT:
		return req->account_id;
	case POL_KEY_PRINCIPAL_ARN:
		return req->principal_arn;
	case POL_KEY_USERNAME:
		return username_of(req->principal_arn);
	case POL_KEY_ENCRYPTION_ALGORITHM:
		return req->encryption_algorithm;
	case POL_KEY_SIGNING_ALGORITHM:
		return req->signing_algorithm;
	case POL_KEY_MAC_ALGORITHM:
		return req->mac_algorithm;
	case POL_KEY_KEY_SPEC:
		return req->key_spec;
	case POL_KEY_KEY_USAGE:
		return req->key_usage;
	case POL_KEY_REQUEST_ALIAS:
		return req->request_alias;
	default:
		return NULL;
	}
}

static const char *next_value(value_iter *it)
{
	const pol_condition *c = it->c;
	const hsm_policy_request *r = it->req;
	switch (c->key) {
	case POL_KEY_ENCRYPTION_CONTEXT:
		/* KMS matches the context key in the condition key case-insensitively. */
		for (; it->next < r->n_encryption_context; it->next++) {
			const hsm_policy_pair *pair = &r->encryption_context[it->next];
			if (hsm_pol_eq_ic(pair->key, c->arg))
				return r->encryption_context[it->next++].value;
		}
		return NULL;
	case POL_KEY_ENCRYPTION_CONTEXT_KEYS:
		return it->next < r->n_encryption_context ? r->encryption_context[it->next++].key
		                                          : NULL;
	case POL_KEY_EXTRA:
		for (; it->next < r->n_extra; it->next++) {
			if (hsm_pol_eq_ic(r->extra[it->next].key, c->arg))
				return r->extra[it->next++].value;
		}
		return NULL;
	default:
		return it->next++ == 0 ? single_value(c, r) : NULL;
	}
}

/* A Numeric or Date comparison of request value a with policy value b. */
static bool compare(pol_base op, double a, double b)
{
	switch (op) {
	case POL_OP_NUM_EQ:
	case POL_OP_DATE_EQ:
		return a == b;
	case POL_OP_NUM_LT:
	case POL_OP_DATE_LT:
		return a < b;
	case POL_OP_NUM_LE:
	case POL_OP_DATE_LE:
		return a <= b;
	case POL_OP_NUM_GT:
	case POL_OP_DATE_GT:
		return a > b;
	default:
		return a >= b;
	}
}

/* Does request value v match any of the condition's values (before negation)? */
static bool value_matches(const pol_condition *c, const hsm_policy_request *req, const char *v)
{
	char expanded[POL_EXPAND_MAX];
	double number = 0;
	pol_net addr = {0};
	if (pol_op_numeric(c->base) && !hsm_pol_number(v, &number))
		return false; /* not a number: matches nothing */
	if (pol_op_date(c->base) && !hsm_pol_date(v, &number))
		return false;
	if (c->base == POL_OP_IP && !hsm_net_parse(v, false, &addr))
		return false;
	for (size_t i = 0; i < c->n_values; i++) {
		const char *want = c->values[i];
		bool hit = false;
		if (c->vars) {
			if (!hsm_pol_expand(want, req, expanded, sizeof(expanded)))
				continue; /* a variable with no value here: this value matches nothing */
			want = expanded;
		}
		switch (c->base) {
		case POL_OP_EQUALS:
			hit = strcmp(v, want) == 0;
			break;
		case POL_OP_EQUALS_IC:
		case POL_OP_BOOL:
			hit = hsm_pol_eq_ic(v, want);
			break;
		case POL_OP_LIKE:
			hit = hsm_pol_glob(want, v);
			break;
		case POL_OP_ARN:
			hit = hsm_pol_arn_like(want, v);
			break;
		case POL_OP_NULL:
			break;
		case POL_OP_IP:
			hit = hsm_net_contains(&c->nets[i], &addr);
			break;
		default: /* Numeric*, Date* */
			hit = compare(c->base, number, c->numbers[i]);
			break;
		}
		if (hit)
			return true;
	}
	return false;
}

/*
 * kms:EncryptionContext:<key> is single-valued, but KMS matches the context key
 * in it without regard to case, so a context may give it several values, one per
 * spelling ({"tenant":"evil","Tenant":"acme"}).  None may slip past a
 * statement: an Allow's condition holds only when every spelling's value
 * satisfies the operator, a Deny's as soon as one does.  A set operator
 * (ForAnyValue:, ForAllValues:) on a single-valued key means what the plain
 * operator means (IAM User Guide, "Single-valued vs. multivalued context
 * keys"), so it changes only the answer for an absent key: ForAnyValue over
 * no value is false, ForAllValues true, a plain negated operator true.
 * (policy_cond.c refuses ForAllValues on this key as AWS KMS does, as overly
 * permissive; the answer here stays right without that.)
 */
static bool context_condition_holds(const pol_condition *c, const hsm_policy_request *req,
                                     bool deny, value_iter *it, const char *v)
{
	if (v == NULL)
		return c->set == POL_SET_ALL || (c->set == POL_SET_NONE && c->negated);
	for (; v != NULL; v = next_value(it)) {
		bool satisfied = value_matches(c, req, v) != c->negated;
		if (satisfied == deny)
			return deny; /* a Deny met by one spelling, an Allow failed by one */
	}
	return !deny;
}

static bool condition_holds(const pol_condition *c, const hsm_policy_request *req, bool deny)
{
	value_iter it = {c, req, 0};
	const char *v = next_value(&it);
	if (c->base == POL_OP_NULL) {
		/* "true" holds when the key is absent, "false" when present; values are OR'ed. */
		for (size_t i = 0; i < c->n_values; i++) {
			if ((strcmp(c->values[i], "true") == 0) == (v == NULL))
				return true;
		}
		return false;
	}
	if (v == NULL && c->if_exists)
		return true;
	if (c->per_spelling)
		return context_condition_holds(c, req, deny, &it, v);
	switch (c->set) {
	case POL_SET_ANY: /* some request value satisfies the operator; false when there is none */
		for (; v != NULL; v = next_value(&it)) {
			if (value_matches(c, req, v) != c->negated)
				return true;
		}
		return false;
	case POL_SET_ALL: /* every request value satisfies it; true when there is none */
		for (; v != NULL; v = next_value(&it)) {
			if (value_matches(c, req, v) == c->negated)
				return false;
		}
		return true;
	case POL_SET_NONE:
		break;
	}
	/* Without a set operator: any match; a negated operator holds when nothing matches. */
	bool any = false;
	for (; v != NULL && !any; v = next_value(&it))
		any = value_matches(c, req, v);
	return any != c->negated;
}

static bool statement_matches(const pol_statement *st, const hsm_policy_request *req,
                              const char *action)
{
	if (principal_matches(st, req) == st->not_principal)
		return false;
	if (any_glob(st->actions, st->n_actions, action) == st->not_action)
		return false;
	if (any_glob(st->resources, st->n_resources, req->resource) == st->not_resource)
		return false;
	for (size_t i = 0; i < st->n_conds; i++) {
		if (!condition_holds(&st->conds[i], req, st->deny))
			return false;
	}
	return true;
}

hsm_policy_decision hsm_policy_evaluate(const hsm_policy *p, const hsm_policy_request *req,
                                        hsm_policy_verdict *out)
{
	char action[ACTION_MAX + 1];
	hsm_policy_verdict v = {HSM_POLICY_IMPLICIT_DENY, -1, NULL};
	HSM_ASSERT(p != NULL && req != NULL);
	HSM_ASSERT(req->principal_arn != NULL && req->account_id != NULL && req->action != NULL &&
	           req->resource != NULL);
	HSM_ASSERT(req->n_encryption_context == 0 || req->encryption_context != NULL);
	HSM_ASSERT(req->n_extra == 0 || req->extra != NULL);
	/* Actions come from hsmd's operation table, never from the client. */
	size_t n = strlen(req->action);
	HSM_ASSERT(n <= ACTION_MAX);
	/* Action patterns are stored lowercase. */
	for (size_t i = 0; i <= n; i++) {
		char ch = req->action[i];
		action[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
	}
	for (size_t i = 0; i < p->n_statements; i++) {
		const pol_statement *st = &p->statements[i];
		if (!statement_matches(st, req, action))
			continue;
		if (st->deny) {
			v = (hsm_policy_verdict){HSM_POLICY_EXPLICIT_DENY, (int)i, st->sid};
			break;
		}
		if (v.decision == HSM_POLICY_IMPLICIT_DENY)
			v = (hsm_policy_verdict){HSM_POLICY_ALLOW, (int)i, st->sid};
	}
	if (out != NULL)
		*out = v;
	return v.decision;
}
