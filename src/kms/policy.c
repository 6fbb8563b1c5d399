/*
 * policy.c - parsing and validating key policy documents, and the default
 * key policy.  Conditions are parsed in policy_cond.c, evaluation is in
 * policy_eval.c.
 */
#include "kms/policy.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/json_read.h"
#include "common/util.h"
#include "kms/policy_internal.h"

#define MALFORMED HSM_ERR_MALFORMED_POLICY
#define SID_MAX 256 /* bytes; the document bound keeps everything else small */

/* ---- Arena ------------------------------------------------------------------- */

struct pol_chunk {
	pol_chunk *next;
	size_t used;
	size_t cap;
	max_align_t data[];
};

void *hsm_pol_alloc(pol_arena *a, size_t n)
{
	const size_t align = alignof(max_align_t);
	size_t need = (n + align - 1) / align * align;
	pol_chunk *c = a->head;
	if (need < n)
		return NULL;
	if (c == NULL || c->cap - c->used < need) {
		size_t cap = need > 4096 ? need : 4096;
		c = calloc(1, sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->next = a->head;
		a->head = c;
	}
	void *p = (unsigned char *)c->data + c->used;
	c->used += need;
	return p;
}

char *hsm_pol_strdup(pol_arena *a, const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = hsm_pol_alloc(a, n);
	if (p != NULL)
		memcpy(p, s, n);
	return p;
}

void hsm_pol_arena_free(pol_arena *a)
{
	while (a->head != NULL) {
		pol_chunk *next = a->head->next;
		free(a->head);
		a->head = next;
	}
}

/* ---- Element values ------------------------------------------------------------ */

static bool is_digits(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
	}
	return true;
}

/* A JSON string without embedded NUL bytes (which C comparisons would cut short). */
static const char *plain_string(const json_t *v)
{
	const char *s = json_string_value(v);
	return (s != NULL && strlen(s) == json_string_length(v)) ? s : NULL;
}

/*
 * Accepts a string or a non-empty array of strings; ok() validates each
 * (and may rewrite it in place, e.g. to lowercase).  elem names the element.
 */
static hsm_result string_list(pol_arena *a, json_t *v, size_t stmt, const char *elem,
                              bool (*ok)(char *), const char ***out, size_t *n_out)
{
	size_t n = json_is_array(v) ? json_array_size(v) : 1;
	HSM_ENSURE(json_is_string(v) || (json_is_array(v) && n > 0), MALFORMED,
	           "Statement %zu: %s must be a string or a non-empty array of strings.", stmt, elem);
	const char **list = hsm_pol_alloc(a, n * sizeof(*list));
	HSM_ENSURE(list != NULL, HSM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_is_array(v) ? json_array_get(v, i) : v;
		const char *s = plain_string(item);
		HSM_ENSURE(s != NULL, MALFORMED, "Statement %zu: %s must contain only strings.", stmt,
		           elem);
		char *copy = hsm_pol_strdup(a, s);
		HSM_ENSURE(copy != NULL, HSM_ERR_NOMEM, "out of memory");
		HSM_ENSURE(ok(copy), MALFORMED, "Statement %zu: %s contains an invalid value '%.64s'.",
		           stmt, elem, s);
		list[i] = copy;
	}
	*out = list;
	*n_out = n;
	return HSM_SUCCESS;
}

/* "*" or "<service>:<name pattern>"; lowercased, since actions match case-insensitively. */
static bool valid_action(char *s)
{
	if (strcmp(s, "*") == 0)
		return true;
	char *colon = strchr(s, ':');
	if (colon == NULL || colon == s || colon[1] == '\0')
		return false;
	for (char *p = s; *p != '\0'; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
		bool alnum = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9');
		if (p < colon && !(alnum || *p == '-'))
			return false;
		if (p > colon && !(alnum || *p == '*' || *p == '?'))
			return false;
	}
	return true;
}

/* "*" or an ARN pattern. */
static bool valid_resource(char *s)
{
	return strcmp(s, "*") == 0 || strncmp(s, "arn:", 4) == 0;
}

/* ---- Principals -------------------------------------------------------------------- */

/*
 * arn:<partition>:iam::<account>:root | user/... | role/...
 * arn:<partition>:sts::<account>:assumed-role/...
 * Wildcards are not allowed inside a principal (IAM: "*" only on its own).
 * Returns 1 when parsed, 0 when invalid, -1 when out of memory.
 */
static int parse_aws_principal(pol_arena *a, const char *s, pol_principal *out)
{
	char account[13];
	if (strcmp(s, "*") == 0) {
		out->kind = POL_PRIN_ANY;
		return 1;
	}
	if (strpbrk(s, "*?") != NULL)
		return 0;
	if (is_digits(s, 12)) {
		out->kind = POL_PRIN_ACCOUNT;
		out->value = hsm_pol_strdup(a, s);
		return out->value != NULL ? 1 : -1;
	}
	const char *p = s;
	if (strncmp(p, "arn:", 4) != 0)
		return 0;
	p += 4;
	size_t part = strspn(p, "abcdefghijklmnopqrstuvwxyz-");
	if (part == 0 || p[part] != ':')
		return 0;
	/* hsmd's callers are all in the aws partition: aws-cn, aws-us-gov, ... name none. */
	bool ours = part == 3 && strncmp(p, "aws", 3) == 0;
	p += part + 1;
	bool sts = strncmp(p, "sts::", 5) == 0;
	if (!sts && strncmp(p, "iam::", 5) != 0)
		return 0;
	p += 5;
	if (strnlen(p, 13) < 13 || p[12] != ':')
		return 0;
	memcpy(account, p, 12);
	account[12] = '\0';
	if (!is_digits(account, 12))
		return 0;
	p += 13;
	if (!sts && strcmp(p, "root") == 0) {
		out->kind = ours ? POL_PRIN_ACCOUNT : POL_PRIN_NONE;
		out->value = hsm_pol_strdup(a, account);
		return out->value != NULL ? 1 : -1;
	}
	bool named = sts ? strncmp(p, "assumed-role/", 13) == 0
	                 : (strncmp(p, "user/", 5) == 0 || strncmp(p, "role/", 5) == 0);
	if (!named || p[strlen(p) - 1] == '/')
		return 0;
	out->kind = ours ? POL_PRIN_ARN : POL_PRIN_NONE;
	out->value = hsm_pol_strdup(a, s);
	return out->value != NULL ? 1 : -1;
}

static hsm_result add_principals(pol_arena *a, json_t *v, size_t stmt, bool aws,
                                 pol_statement *st)
{
	size_t n = json_is_array(v) ? json_array_size(v) : 1;
	HSM_ENSURE(json_is_string(v) || (json_is_array(v) && n > 0), MALFORMED,
	           "Statement %zu: principal values must be a string or a non-empty array.", stmt);
	pol_principal *list = hsm_pol_alloc(a, (st->n_principals + n) * sizeof(*list));
	HSM_ENSURE(list != NULL, HSM_ERR_NOMEM, "out of memory");
	if (st->n_principals > 0)
		memcpy(list, st->principals, st->n_principals * sizeof(*list));
	for (size_t i = 0; i < n; i++) {
		const char *s = plain_string(json_is_array(v) ? json_array_get(v, i) : v);
		pol_principal *pr = &list[st->n_principals + i];
		HSM_ENSURE(s != NULL && s[0] != '\0', MALFORMED,
		           "Statement %zu: principal values must be non-empty strings.", stmt);
		if (aws) {
			int ok = parse_aws_principal(a, s, pr);
			HSM_ENSURE(ok >= 0, HSM_ERR_NOMEM, "out of memory");
			HSM_ENSURE(ok > 0, MALFORMED,
			           "Statement %zu: Policy contains a statement with one or more invalid "
			           "principals: '%.96s'.",
			           stmt, s);
		} else {
			pr->kind = POL_PRIN_NONE;
		}
	}
	st->principals = list;
	st->n_principals += n;
	return HSM_SUCCESS;
}

static hsm_result parse_principal(pol_arena *a, json_t *v, size_t stmt, pol_statement *st)
{
	const char *key;
	json_t *val;
	if (json_is_string(v)) {
		HSM_ENSURE(strcmp(json_string_value(v), "*") == 0, MALFORMED,
		           "Statement %zu: a Principal string must be \"*\"; name principals as "
		           "{\"AWS\": ...}.",
		           stmt);
		return add_principals(a, v, stmt, true, st);
	}
	HSM_ENSURE(json_is_object(v) && json_object_size(v) > 0, MALFORMED,
	           "Statement %zu: Principal must be \"*\" or a non-empty object.", stmt);
	json_object_foreach(v, key, val) {
		bool aws = strcmp(key, "AWS") == 0;
		HSM_ENSURE(aws || strcmp(key, "Service") == 0, MALFORMED,
		           "Statement %zu: unsupported principal type '%.64s' (use AWS or Service).",
		           stmt, key);
		HSM_GUARD(add_principals(a, val, stmt, aws, st));
	}
	return HSM_SUCCESS;
}

/* ---- Statements --------------------------------------------------------------------- */

/* Statement elements, each allowed once; the X-or-NotX pairs are checked after. */
static const char *const statement_fields[] = {
    "Sid",      "Effect",      "Principal", "NotPrincipal", "Action",
    "NotAction", "Resource", "NotResource", "Condition",
};

static hsm_result check_fields(json_t *obj, const char *const *fields, size_t n, size_t stmt)
{
	const char *key;
	json_t *val;
	json_object_foreach(obj, key, val) {
		bool known = false;
		for (size_t i = 0; i < n && !known; i++)
			known = strcmp(key, fields[i]) == 0;
		(void)val;
		if (stmt == 0)
			HSM_ENSURE(known, MALFORMED, "Unknown field '%.64s' in the policy document.", key);
		else
			HSM_ENSURE(known, MALFORMED, "Statement %zu: unknown field '%.64s'.", stmt, key);
	}
	return HSM_SUCCESS;
}

/* Exactly one of name / not_name; *which receives the present one, *negated which it was. */
static hsm_result one_of(json_t *obj, const char *name, const char *not_name, size_t stmt,
                         json_t **which, bool *negated)
{
	json_t *pos = json_object_get(obj, name), *neg = json_object_get(obj, not_name);
	HSM_ENSURE(pos == NULL || neg == NULL, MALFORMED,
	           "Statement %zu: %s and %s cannot both be present.", stmt, name, not_name);
	HSM_ENSURE(pos != NULL || neg != NULL, MALFORMED, "Statement %zu: %s or %s is required.",
	           stmt, name, not_name);
	*which = pos != NULL ? pos : neg;
	*negated = pos == NULL;
	return HSM_SUCCESS;
}

static hsm_result parse_effect_sid(pol_arena *a, json_t *obj, size_t stmt, pol_statement *st)
{
	const char *effect = plain_string(json_object_get(obj, "Effect"));
	HSM_ENSURE(effect != NULL, MALFORMED, "Statement %zu: Effect is required and must be a string.",
	           stmt);
	HSM_ENSURE(strcmp(effect, "Allow") == 0 || strcmp(effect, "Deny") == 0, MALFORMED,
	           "Statement %zu: Effect must be \"Allow\" or \"Deny\", not '%.32s'.", stmt, effect);
	st->deny = strcmp(effect, "Deny") == 0;
	json_t *sid = json_object_get(obj, "Sid");
	if (sid != NULL) {
		const char *s = plain_string(sid);
		HSM_ENSURE(s != NULL && strlen(s) <= SID_MAX, MALFORMED,
		           "Statement %zu: Sid must be a string of at most %d bytes.", stmt, SID_MAX);
		st->sid = hsm_pol_strdup(a, s);
		HSM_ENSURE(st->sid != NULL, HSM_ERR_NOMEM, "out of memory");
	}
	return HSM_SUCCESS;
}

static hsm_result parse_statement(pol_arena *a, json_t *obj, size_t stmt, bool variables,
                                  pol_statement *st)
{
	json_t *v;
	HSM_ENSURE(json_is_object(obj), MALFORMED, "Statement %zu must be an object.", stmt);
	HSM_GUARD(check_fields(obj, statement_fields,
	                       sizeof(statement_fields) / sizeof(statement_fields[0]), stmt));
	HSM_GUARD(parse_effect_sid(a, obj, stmt, st));
	HSM_GUARD(one_of(obj, "Principal", "NotPrincipal", stmt, &v, &st->not_principal));
	/* IAM: NotPrincipal with "Effect": "Allow" is not supported. */
	HSM_ENSURE(!st->not_principal || st->deny, MALFORMED,
	           "Statement %zu: NotPrincipal is supported with \"Effect\": \"Deny\" only.",
	           stmt);
	HSM_GUARD(parse_principal(a, v, stmt, st));
	HSM_GUARD(one_of(obj, "Action", "NotAction", stmt, &v, &st->not_action));
	HSM_GUARD(string_list(a, v, stmt, st->not_action ? "NotAction" : "Action", valid_action,
	                      &st->actions, &st->n_actions));
	HSM_GUARD(one_of(obj, "Resource", "NotResource", stmt, &v, &st->not_resource));
	HSM_GUARD(string_list(a, v, stmt, st->not_resource ? "NotResource" : "Resource",
	                      valid_resource, &st->resources, &st->n_resources));
	v = json_object_get(obj, "Condition");
	if (v != NULL)
		HSM_GUARD(hsm_pol_parse_conditions(a, v, stmt, variables, &st->conds, &st->n_conds));
	return HSM_SUCCESS;
}

static hsm_result check_unique_sids(const hsm_policy *p)
{
	for (size_t i = 0; i < p->n_statements; i++) {
		for (size_t j = 0; j < i; j++) {
			const char *x = p->statements[i].sid, *y = p->statements[j].sid;
			HSM_ENSURE(x == NULL || y == NULL || strcmp(x, y) != 0, MALFORMED,
			           "Statement %zu: Sid '%.64s' is already used by statement %zu.", i + 1, x,
			           j + 1);
		}
	}
	return HSM_SUCCESS;
}

static hsm_result parse_document(hsm_policy *p, json_t *root)
{
	static const char *const top_fields[] = {"Version", "Id", "Statement"};
	HSM_ENSURE(json_is_object(root), MALFORMED, "The policy document must be a JSON object.");
	HSM_GUARD(check_fields(root, top_fields, 3, 0));
	json_t *version = json_object_get(root, "Version");
	bool variables = false; /* without a Version, IAM reads a policy as 2008-10-17 */
	if (version != NULL) {
		const char *s = plain_string(version);
		/* IAM User Guide, "IAM JSON policy elements: Version". */
		HSM_ENSURE(s != NULL && (strcmp(s, "2012-10-17") == 0 || strcmp(s, "2008-10-17") == 0),
		           MALFORMED, "Version must be \"2012-10-17\" or \"2008-10-17\".");
		variables = strcmp(s, "2012-10-17") == 0;
	}
	json_t *id = json_object_get(root, "Id");
	HSM_ENSURE(id == NULL || plain_string(id) != NULL, MALFORMED, "Id must be a string.");
	json_t *stmts = json_object_get(root, "Statement");
	HSM_ENSURE(stmts != NULL, MALFORMED, "The policy document requires a Statement.");
	size_t n = json_is_array(stmts) ? json_array_size(stmts) : 1;
	HSM_ENSURE(json_is_object(stmts) || (json_is_array(stmts) && n > 0), MALFORMED,
	           "Statement must be an object or a non-empty array of objects.");
	p->statements = hsm_pol_alloc(&p->arena, n * sizeof(*p->statements));
	HSM_ENSURE(p->statements != NULL, HSM_ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *obj = json_is_array(stmts) ? json_array_get(stmts, i) : stmts;
		HSM_GUARD(parse_statement(&p->arena, obj, i + 1, variables, &p->statements[i]));
		p->n_statements = i + 1;
	}
	return check_unique_sids(p);
}

/* Which request values that cost a store read or the clock the policy's conditions name. */
static unsigned needs_of(const hsm_policy *p)
{
	unsigned needs = 0;
	for (size_t i = 0; i < p->n_statements; i++) {
		const pol_statement *st = &p->statements[i];
		for (size_t j = 0; j < st->n_conds; j++) {
			const char *name = st->conds[j].arg;
			if (st->conds[j].key == POL_KEY_REQUEST_ALIAS)
				needs |= HSM_POLICY_NEEDS_REQUEST_ALIAS;
			if (st->conds[j].key != POL_KEY_EXTRA)
				continue;
			needs |= HSM_POLICY_NEEDS_EXTRA;
			if (hsm_pol_eq_ic(name, "kms:ResourceAliases"))
				needs |= HSM_POLICY_NEEDS_RESOURCE_ALIASES;
			else if (strncasecmp(name, "aws:ResourceTag/", 16) == 0)
				needs |= HSM_POLICY_NEEDS_RESOURCE_TAGS;
			else if (hsm_pol_eq_ic(name, "aws:CurrentTime") ||
			         hsm_pol_eq_ic(name, "aws:EpochTime"))
				needs |= HSM_POLICY_NEEDS_TIME;
		}
	}
	return needs;
}

static hsm_result policy_parse(const char *doc, size_t len, bool stored, hsm_policy **out);

hsm_result hsm_policy_parse(const char *doc, size_t len, hsm_policy **out)
{
	return policy_parse(doc, len, false, out);
}

hsm_result hsm_policy_parse_stored(const char *doc, size_t len, hsm_policy **out)
{
	return policy_parse(doc, len, true, out);
}

static hsm_result policy_parse(const char *doc, size_t len, bool stored, hsm_policy **out)
{
	hsm_result res = HSM_SUCCESS;
	hsm_policy *p = NULL;
	json_t *root = NULL;
	unsigned line, col;
	HSM_ASSERT(doc != NULL && out != NULL);
	HSM_CHECK(len <= HSM_POLICY_MAX_BYTES, MALFORMED,
	          "The policy document is %zu bytes; the limit is %d bytes.", len,
	          HSM_POLICY_MAX_BYTES);
	/* hsmd's reader, not json_loadb: out of memory, jansson's may read another document. */
	res = hsm_json_read((const uint8_t *)doc, len, &root, &line, &col);
	if (hsm_failed(res) && res.err != HSM_ERR_NOMEM)
		res = HSM_FAIL(MALFORMED,
		               "The policy document is not valid JSON (line %u, column %u): %s.", line,
		               col,
		               res.err == HSM_ERR_VALIDATION ? "a string holds U+0000"
		                                              : "a syntax error or a duplicate key");
	HSM_TRY(res);
	p = calloc(1, sizeof(*p));
	HSM_CHECK(p != NULL, HSM_ERR_NOMEM, "out of memory");
	atomic_init(&p->refs, 1);
	p->arena.stored = stored;
	HSM_TRY(parse_document(p, root));
	p->needs = needs_of(p);
	char *source = hsm_pol_alloc(&p->arena, len + 1);
	HSM_CHECK(source != NULL, HSM_ERR_NOMEM, "out of memory");
	memcpy(source, doc, len);
	p->source = source;
	p->source_len = len;
	*out = p;
	p = NULL;
out:
	hsm_policy_free(p);
	json_decref(root);
	return res;
}

hsm_policy *hsm_policy_ref(hsm_policy *p)
{
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return p;
}

void hsm_policy_free(hsm_policy *p)
{
	if (p == NULL || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
		return;
	hsm_pol_arena_free(&p->arena);
	free(p);
}

bool hsm_policy_parsed_from(const hsm_policy *p, const char *doc, size_t len)
{
	return p->source_len == len && hsm_ct_equal(p->source, doc, len);
}

const char *hsm_policy_source(const hsm_policy *p)
{
	return p->source; /* the arena block is zeroed: its last byte ends the string */
}

size_t hsm_policy_statement_count(const hsm_policy *p)
{
	return p->n_statements;
}

unsigned hsm_policy_needs(const hsm_policy *p)
{
	return p->needs;
}

/* ---- Default key policy --------------------------------------------------------------- */

/* AWS KMS Developer Guide, "Default key policy": the account's root gets kms:* on the key. */
hsm_result hsm_policy_default(const char *account_id, hsm_buf *out)
{
	hsm_result res = HSM_SUCCESS;
	char root[64];
	char *text = NULL;
	json_t *doc = NULL;
	HSM_ASSERT(account_id != NULL && out != NULL);
	HSM_CHECK(is_digits(account_id, 12), HSM_ERR_VALIDATION,
	          "An account id is 12 decimal digits.");
	snprintf(root, sizeof(root), "arn:aws:iam::%s:root", account_id);
	doc = json_pack("{s:s, s:s, s:[{s:s, s:s, s:{s:s}, s:s, s:s}]}", "Version", "2012-10-17",
	                "Id", "key-default-1", "Statement", "Sid", "Enable IAM User Permissions",
	                "Effect", "Allow", "Principal", "AWS", root, "Action", "kms:*", "Resource",
	                "*");
	HSM_CHECK(doc != NULL, HSM_ERR_NOMEM, "out of memory");
	HSM_TRY(hsm_json_text(doc, JSON_INDENT(2), &text));
	HSM_TRY(hsm_buf_put_str(out, text));
out:
	free(text);
	json_decref(doc);
	return res;
}

const char *hsm_policy_decision_name(hsm_policy_decision d)
{
	switch (d) {
	case HSM_POLICY_ALLOW:
		return "Allow";
	case HSM_POLICY_EXPLICIT_DENY:
		return "ExplicitDeny";
	case HSM_POLICY_IMPLICIT_DENY:
		break;
	}
	return "ImplicitDeny";
}
