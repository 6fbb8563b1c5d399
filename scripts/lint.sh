#!/bin/sh
# Greps for what reviewers miss.  Each rule has a one-line reason; a line may
# opt out of a rule with a trailing comment "lint-ok: <rule> <why>".
set -u
cd "$(dirname "$0")/.." || exit 2
status=0

rule() { # name, reason, extended regex, paths...
	name=$1 reason=$2 re=$3
	shift 3
	hits=$(grep -rnE "$re" "$@" --include='*.c' --include='*.h' 2>/dev/null | grep -v "lint-ok: $name" || true)
	if [ -n "$hits" ]; then
		echo "lint [$name]: $reason"
		echo "$hits" | sed 's/^/    /'
		status=1
	fi
}

rule unbounded-copy "sprintf/strcpy/strcat/gets cannot bound their output; use snprintf, hsm_strcpy or hsm_buf" \
	'(^|[^a-z_n])(sprintf|vsprintf|strcpy|strcat|gets)[[:space:]]*\(' src
rule raw-memcmp "memcmp leaks timing on MACs, tags and secrets; use hsm_ct_equal (CRYPTO_memcmp)" \
	'(^|[^_a-zA-Z])memcmp[[:space:]]*\(' src
rule atoi "atoi/atol cannot report bad input; use hsm_parse_i64" \
	'(^|[^_a-z])ato(i|l|ll)[[:space:]]*\(' src
rule libc-rand "rand()/random() are not cryptographic; use RAND_bytes" \
	'(^|[^_a-zA-Z.>])(s?rand|random)\(\)|[^_a-zA-Z](srand|rand|random)\([^)]' src
rule alloca "alloca and VLAs put unbounded sizes on the stack" \
	'(^|[^_a-z])alloca[[:space:]]*\(' src
rule secret-log "secret bytes must not be formatted; log identifiers only" \
	'hsm_(log|info|warn|error|debug)\(.*hsm_secret_bytes' src
rule unchecked-alloc "check every allocation: assign it and test for NULL on the next line" \
	'^[[:space:]]*(malloc|calloc|realloc|strdup)[[:space:]]*\(' src

# clang's warnings where gcc has none: they would break `make fuzz` (a clang build).
if ! /usr/bin/python3 scripts/clang_check.py "${HSM_LINT_BUILD:-build}"; then
	echo "lint [clang]: the files above do not compile with clang under the build's flags"
	status=1
fi

# The Python tests and tools: an unused name is often a check that was meant and not made.
if ! /usr/bin/python3 -m pyflakes tests/integration bench scripts; then
	echo "lint [pyflakes]: the Python above has unused or undefined names"
	status=1
fi

exit $status
