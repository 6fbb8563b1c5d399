#!/bin/sh
# Runs every libFuzzer target of a -DHSM_FUZZ=ON build for a while.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
#
# Each target starts from its committed seeds (tests/fuzz/corpus/<target>)
# and a working corpus kept in BUILD_DIR/fuzz-corpus/<target>, where the
# inputs it finds accumulate across runs; crash inputs go to
# BUILD_DIR/fuzz-artifacts/<target>/.  A reproducer worth keeping is
# committed under tests/fuzz/regressions/<target>/, which the default test
# suite replays.  Exits non-zero when any target finds a crash.
set -u
build=$1
seconds=$2
shift 2
src=$(cd "$(dirname "$0")" && pwd)
[ $# -gt 0 ] || set -- $(cd "$src" && ls *_fuzz.c | sed 's/\.c$//')
status=0
for t in "$@"; do
	exe="$build/tests/fuzz/$t"
	work="$build/fuzz-corpus/$t"
	art="$build/fuzz-artifacts/$t"
	log="$build/fuzz-logs/$t.log"
	mkdir -p "$work" "$art" "$(dirname "$log")"
	set -- -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$art/"
	[ -f "$src/dict/$t.dict" ] && set -- "$@" -dict="$src/dict/$t.dict"
	# libFuzzer writes what it finds into the first directory: the work corpus.
	set -- "$@" "$work" "$src/corpus/$t"
	[ -d "$src/regressions/$t" ] && set -- "$@" "$src/regressions/$t"
	printf '%-14s %4ss ... ' "$t" "$seconds"
	"$exe" "$@" >"$log" 2>&1
	rc=$?
	summary=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed 's/^\(#[0-9]*\)[[:space:]]*[A-Z]*[[:space:]]*/\1 /')
	if [ $rc -eq 0 ]; then
		echo "ok   $summary"
	else
		echo "FAILED (exit $rc): see $log and $art"
		status=1
	fi
done
exit $status
