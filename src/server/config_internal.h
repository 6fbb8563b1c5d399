/*
 * config_internal.h - the settings table and the loader shared by config.c
 * (sources and precedence), config_value.c (parsing and checking values) and
 * config_usage.c (--help).
 */
#ifndef HSM_SERVER_CONFIG_INTERNAL_H
#define HSM_SERVER_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "server/config.h"

typedef enum key_type {
	K_ADDR,    /* listen address */
	K_FILE,    /* a path to a readable file, or "" */
	K_DIR,     /* a path (need not exist yet) */
	K_DIR_OPT, /* a path, or "" for none */
	K_BOOL,
	K_U32,     /* whole number in [min, max] */
	K_SIZE,    /* bytes with an optional K/M/G suffix, in [min, max] */
	K_AUTH,    /* none | optional | required */
	K_LOG,     /* debug | info | warn | error */
	K_REGION,  /* lower-case letters, digits and dashes: us-east-1 */
	K_ACCOUNT, /* twelve digits */
	K_NODE,    /* letters, digits, '.', '_', '-' */
	K_STORE,   /* "" or a postgresql:// URI; may hold a password: never echoed */
	K_OPS,     /* comma-separated operations that can wait for approval */
	K_NETS,    /* comma-separated IPv4/IPv6 addresses or CIDR ranges, or "" */
} key_type;

typedef struct key_def {
	const char *name;
	key_type type;
	size_t off;  /* offsetof(hsm_config, field) */
	size_t size; /* sizeof the field */
	uint64_t min, max;
	const char *def; /* NULL: computed from other settings (config.c) */
	const char *arg; /* placeholder in --help */
	const char *help;
} key_def;

extern const key_def hsm_config_keys[];
extern const size_t hsm_config_n_keys;

/* Where a value came from, strongest last. */
typedef enum src_kind { SRC_DEFAULT, SRC_FILE, SRC_ENV, SRC_FLAG } src_kind;

typedef struct setting {
	const char *value; /* NULL: not given by this source */
	src_kind src;
	unsigned line; /* SRC_FILE */
} setting;

/* Formats where s came from ("--listen", "HSM_LISTEN", "FILE:12", "default"). */
void hsm_config_where(const hsm_config *cfg, const key_def *k, const setting *s, char *out,
                      size_t cap);
/* Parses and checks text for key k, storing it in cfg. */
hsm_result hsm_config_set_value(hsm_config *cfg, const key_def *k, const setting *s,
                                const char *text) HSM_MUST_CHECK;
/* The key named name (snake_case), or NULL. */
const key_def *hsm_config_find(const char *name);

#endif
