/*
 * cmd_jwt.c - tokens: sign with a running hsmd, verify offline.
 *
 *   hsmctl jwt sign [--endpoint URL] KEY --claims JSON|@FILE [--lifetime S] [--alg A]
 *                   [--typ T] [--cty C]
 *   hsmctl jwt verify --jwks FILE|URL TOKEN|- [--issuer I] [--audience A] [--leeway S]
 *   hsmctl jwt enable [--endpoint URL] KEY [--alg A]
 *   hsmctl jwt disable [--endpoint URL] KEY
 *
 * sign prints the token; verify prints its header and claims and exits 0
 * only for a token that verifies (signature, kid/alg, exp, nbf, iss, aud),
 * using the shared code of kms/jwt.h, so the check is the one hsmd's own
 * tests rely on.  A token is a bearer credential: give "-" to read it from
 * standard input rather than the command line.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "client/client.h"
#include "hsmctl/hsmctl.h"
#include "kms/jwt.h"

#define JWKS_FILE_MAX ((size_t)1 << 20)
#define DEFAULT_LEEWAY 60

typedef struct jwt_args {
	const char *key, *claims, *alg, *typ, *cty, *jwks, *token, *issuer, *audience;
	int64_t lifetime, leeway;
} jwt_args;

enum { J_SIGN = 1, J_VERIFY = 2, J_ENABLE = 4, J_DISABLE = 8 };

/*
 * Which subcommands take each option: one given to another is refused, not
 * ignored (jwt sign --issuer I would sign a token without the iss it names).
 */
static const struct jwt_option {
	const char *name;
	unsigned subs;
} jwt_options[] = {
    {"--claims", J_SIGN},       {"--lifetime", J_SIGN},
    {"--typ", J_SIGN},          {"--cty", J_SIGN},
    {"--alg", J_SIGN | J_ENABLE}, {"--endpoint", J_SIGN | J_ENABLE | J_DISABLE},
    {"--jwks", J_VERIFY},       {"--issuer", J_VERIFY},
    {"--audience", J_VERIFY},   {"--leeway", J_VERIFY},
};

static unsigned jwt_sub(const char *cmd)
{
	return strcmp(cmd, "jwt sign") == 0     ? J_SIGN
	       : strcmp(cmd, "jwt verify") == 0 ? J_VERIFY
	       : strcmp(cmd, "jwt enable") == 0 ? J_ENABLE
	                                        : J_DISABLE;
}

/* 0 when option o (beginning "--") is one of cmd's, else the usage error. */
static int check_option(const char *cmd, const char *o)
{
	for (size_t i = 0; i < sizeof(jwt_options) / sizeof(jwt_options[0]); i++) {
		if (strcmp(o, jwt_options[i].name) != 0)
			continue;
		if ((jwt_options[i].subs & jwt_sub(cmd)) != 0)
			return 0;
		return hsmctl_usage(cmd, "%s is not an option of %s", o, cmd);
	}
	return hsmctl_usage(cmd, "unknown option %s", o);
}

/* Options may come in any order around the positional arguments. */
static int parse_args(const char *cmd, int argc, char **argv, jwt_args *a)
{
	const char *positional[2] = {NULL, NULL};
	int npos = 0;
	hsmctl_seen seen = {0};
	a->leeway = DEFAULT_LEEWAY;
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool option = o[0] == '-' && o[1] == '-';
		int refused = option ? check_option(cmd, o) : 0;
		if (refused == 0 && option)
			refused = hsmctl_once(&seen, cmd, o + 2);
		if (refused != 0)
			return refused;
		const char **dst = strcmp(o, "--claims") == 0     ? &a->claims
		                   : strcmp(o, "--alg") == 0      ? &a->alg
		                   : strcmp(o, "--typ") == 0      ? &a->typ
		                   : strcmp(o, "--cty") == 0      ? &a->cty
		                   : strcmp(o, "--jwks") == 0     ? &a->jwks
		                   : strcmp(o, "--issuer") == 0   ? &a->issuer
		                   : strcmp(o, "--audience") == 0 ? &a->audience
		                   : strcmp(o, "--endpoint") == 0 ? &hsmctl_globals.client.endpoints
		                                                  : NULL;
		bool num = strcmp(o, "--lifetime") == 0 || strcmp(o, "--leeway") == 0;
		if ((dst != NULL || num) && v == NULL)
			return hsmctl_usage(cmd, "%s needs a value", o);
		if (dst != NULL) {
			*dst = v;
			i++;
		} else if (num) {
			bool life = strcmp(o, "--lifetime") == 0;
			int64_t *n = life ? &a->lifetime : &a->leeway;
			/* A token lives at least a second: 0 is no lifetime, not "the default". */
			if (hsm_failed(hsm_parse_i64(v, life ? 1 : 0, 3650LL * 86400, n)))
				return hsmctl_usage(cmd, "%s takes a number of seconds%s", o,
				                    life ? ", at least 1" : "");
			i++;
		} else if (o[0] == '-' && o[1] == '-') {
			return hsmctl_usage(cmd, "unknown option %s", o);
		} else if (npos < 2) {
			positional[npos++] = o;
		} else {
			return hsmctl_usage(cmd, "too many arguments");
		}
	}
	a->key = positional[0];
	a->token = positional[0];
	return npos == 1 ? 0 : hsmctl_usage(cmd, "give exactly one %s",
	                                    strcmp(cmd, "jwt verify") == 0 ? "TOKEN" : "KEY");
}

/* Text of --claims: inline JSON, or @FILE. */
static hsm_result load_json(const char *arg, const char *what, json_t **out)
{
	hsm_buf text = {0};
	json_error_t e;
	if (arg[0] == '@')
		HSM_GUARD(hsm_read_file(arg + 1, JWKS_FILE_MAX, &text));
	else
		HSM_GUARD(hsm_buf_put_str(&text, arg));
	*out = json_loadb((const char *)text.data, text.len, JSON_REJECT_DUPLICATES, &e);
	hsm_buf_free(&text);
	HSM_ENSURE(*out != NULL, HSM_ERR_VALIDATION, "%s is not JSON: %s", what, e.text);
	return HSM_SUCCESS;
}

/*
 * POSTs body to an HsmdJwt target and parses the answer, waiting for custodians
 * where the node gates the operation (EnableJwtSigning, DisableJwtSigning).
 */
static hsm_result call(const char *op, json_t *body, json_t **out)
{
	char target[64];
	snprintf(target, sizeof(target), "HsmdJwt.%s", op);
	return hsmctl_call_approved(target, body, out);
}

static int jwt_sign(jwt_args *a)
{
	json_t *claims = NULL, *out = NULL;
	if (a->claims == NULL)
		return hsmctl_usage("jwt sign", "--claims JSON is required");
	if (hsm_failed(load_json(a->claims, "--claims", &claims)))
		return hsmctl_fail("jwt sign");
	json_t *body = json_pack("{s:s, s:o}", "KeyId", a->key, "Claims", claims);
	if (a->alg != NULL)
		json_object_set_new(body, "Algorithm", json_string(a->alg));
	if (a->lifetime > 0)
		json_object_set_new(body, "LifetimeSeconds", json_integer(a->lifetime));
	if (a->typ != NULL || a->cty != NULL) {
		json_t *h = json_object();
		if (a->typ != NULL)
			json_object_set_new(h, "typ", json_string(a->typ));
		if (a->cty != NULL)
			json_object_set_new(h, "cty", json_string(a->cty));
		json_object_set_new(body, "Header", h);
	}
	hsm_result r = body != NULL ? call("SignToken", body, &out)
	                            : HSM_FAIL(HSM_ERR_VALIDATION, "KEY must be UTF-8 text");
	json_decref(body);
	if (hsm_failed(r))
		return hsmctl_fail("jwt sign");
	const char *token = json_string_value(json_object_get(out, "Token"));
	if (token != NULL)
		printf("%s\n", token);
	json_decref(out);
	return token != NULL ? 0 : hsmctl_fail_msg("jwt sign", "the answer has no Token");
}

static int jwt_mark(const char *op, jwt_args *a)
{
	json_t *out = NULL, *body = json_pack("{s:s}", "KeyId", a->key);
	if (a->alg != NULL && body != NULL)
		json_object_set_new(body, "Algorithm", json_string(a->alg));
	hsm_result r = body != NULL ? call(op, body, &out)
	                            : HSM_FAIL(HSM_ERR_VALIDATION, "KEY must be UTF-8 text");
	json_decref(body);
	if (hsm_failed(r))
		return hsmctl_fail(op);
	hsmctl_print_fields(out);
	json_decref(out);
	return 0;
}

/* The JWK Set from a file or an http(s) URL. */
static hsm_result load_jwks(const char *where, json_t **out)
{
	hsm_buf text = {0};
	json_error_t e;
	hsm_result r = hsm_str_has_prefix(where, "http://") || hsm_str_has_prefix(where, "https://")
	                   ? hsm_client_get(&hsmctl_globals.client, where, &text)
	                   : hsm_read_file(where, JWKS_FILE_MAX, &text);
	if (hsm_ok(r)) {
		*out = json_loadb((const char *)text.data, text.len, 0, &e);
		if (*out == NULL) {
			char shown[160]; /* a URL may carry a password or a token: never quoted whole */
			hsm_location_shown(where, shown, sizeof(shown));
			r = HSM_FAIL(HSM_ERR_VALIDATION, "%s is not a JSON JWK Set", shown);
		}
	}
	hsm_buf_free(&text);
	return r;
}

/* The token argument, or standard input for "-" (trailing whitespace removed). */
static hsm_result load_token(const char *arg, hsm_buf *out)
{
	if (strcmp(arg, "-") != 0) {
		HSM_ENSURE(arg[0] != '\0', HSM_ERR_VALIDATION, "the token is empty");
		return hsm_buf_put_str(out, arg);
	}
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
		HSM_ENSURE(out->len + n <= HSM_JWT_TOKEN_MAX, HSM_ERR_VALIDATION, "the token is too long");
		HSM_GUARD(hsm_buf_put(out, chunk, n));
	}
	while (out->len > 0 && strchr(" \t\r\n", out->data[out->len - 1]) != NULL)
		out->len--;
	HSM_ENSURE(out->len > 0, HSM_ERR_VALIDATION, "the token is empty");
	return HSM_SUCCESS;
}

static void print_json(const char *label, const json_t *v)
{
	char *s = json_dumps(v, JSON_INDENT(2));
	printf("%s: %s\n", label, s != NULL ? s : "?");
	free(s);
}

static int jwt_verify(jwt_args *a)
{
	json_t *jwks = NULL, *header = NULL, *claims = NULL;
	hsm_buf token = {0};
	if (a->jwks == NULL)
		return hsmctl_usage("jwt verify", "--jwks FILE|URL is required");
	hsm_jwt_verify_opts o = {hsm_now(), a->leeway, a->issuer, a->audience};
	hsm_result r = load_jwks(a->jwks, &jwks);
	if (hsm_ok(r))
		r = load_token(a->token, &token);
	if (hsm_ok(r))
		r = hsm_jwt_verify((const char *)token.data, token.len, jwks, &o, &header, &claims);
	hsm_buf_free(&token);
	json_decref(jwks);
	if (hsm_failed(r))
		return hsmctl_fail("jwt verify");
	printf("valid\n");
	print_json("header", header);
	print_json("claims", claims);
	json_decref(header);
	json_decref(claims);
	return 0;
}

int hsmctl_cmd_jwt(int argc, char **argv)
{
	jwt_args a;
	memset(&a, 0, sizeof(a));
	const char *sub = argv[0];
	char cmd[32];
	snprintf(cmd, sizeof(cmd), "jwt %s", sub);
	int rc = parse_args(cmd, argc, argv, &a);
	if (rc != 0)
		return rc;
	if (strcmp(sub, "verify") == 0)
		return jwt_verify(&a);
	if (!hsmctl_online())
		return hsmctl_usage(cmd, "needs --endpoint URL (a running hsmd)");
	if (strcmp(sub, "sign") == 0)
		return jwt_sign(&a);
	if (strcmp(sub, "enable") == 0)
		return jwt_mark("EnableJwtSigning", &a);
	return jwt_mark("DisableJwtSigning", &a);
}
