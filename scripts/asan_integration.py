#!/usr/bin/python3
"""`make test-asan-integration`: the integration suite against hsmd, hsmctl
and the PKCS#11 module built under AddressSanitizer and
UndefinedBehaviorSanitizer (`make asan-build`, build-asan/).

`make test` runs the unit tests under the sanitizers; this runs the programs
themselves under them, driven by the same real clients as the plain suite, so
the code only a running node takes (its threads, its HTTP server, the audit
writer, clusters, restarts, hsmctl's commands) is checked too.

Each test file runs in a pytest of its own, so a crash loses one file, not
the run.  Every process built with the sanitizers writes its reports into a
directory of the run's own (ASAN_OPTIONS and UBSAN_OPTIONS `log_path`), so a
report from a process no test looks at (an hsmctl whose failure a test
expects, a node stopped at the end) still fails the run.  The run fails when
a test fails or when any report was written, and prints every report.

Tests that cannot run under the sanitizers skip themselves, saying why
(HSM_SANITIZER, tests/integration/conftest.py `plain_build_only`): those
that scan a process's memory for secrets (the shadow memory spans terabytes
of mappings), those that refuse allocations through a preloaded allocator,
and the Java program that loads the module.

LeakSanitizer is off: hsmd makes itself undumpable (PR_SET_DUMPABLE 0, so no
core dump or debugger reads its keys), and LeakSanitizer cannot stop such a
process to scan it.  The unit tests (`make test-asan`) check for leaks.

    scripts/asan_integration.py [--build DIR] [TEST_FILE ...]

About 20 minutes on 2 cores (a build-asan made first).
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IT_DIR = os.path.join(ROOT, "tests", "integration")
FILE_TIMEOUT = 1800


def environment(build_dir, logs):
    env = dict(os.environ)
    env.update(HSM_BUILD_DIR=os.path.abspath(build_dir), HSM_SOURCE_DIR=ROOT,
               HSM_SANITIZER="address")
    env.setdefault("HSM_WYCHEPROOF_DIR", os.path.join(os.path.dirname(ROOT), "shared", "wycheproof"))
    # verify_asan_link_order=0: some tests preload a library of their own into a node
    # (the wall-clock shift), and Python loads the module long after it started.
    env["ASAN_OPTIONS"] = ("detect_leaks=0:verify_asan_link_order=0:abort_on_error=1:"
                           f"log_path={logs}/asan")
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:log_path={logs}/ubsan"
    return env


def run_file(path, env):
    """(passed, pytest's output) for one test file."""
    try:
        p = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-rfEs", path], cwd=IT_DIR, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=FILE_TIMEOUT)
        return p.returncode == 0, p.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
        return False, out + f"\ntimed out after {FILE_TIMEOUT} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-asan"),
                    help="a build made with -DHSM_SANITIZE=ON (default build-asan)")
    ap.add_argument("files", nargs="*", help="test files (default: all of tests/integration)")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.build, "hsmd")):
        sys.exit(f"asan_integration: no hsmd in {args.build} (make asan-build)")
    files = [os.path.abspath(f) for f in args.files] or \
        sorted(glob.glob(os.path.join(IT_DIR, "test_*.py")))
    logs = tempfile.mkdtemp(prefix="hsmd-asan-")
    env = environment(args.build, logs)

    failed = []
    started = time.time()
    for path in files:
        name = os.path.basename(path)
        t0 = time.time()
        ok, out = run_file(path, env)
        last = out.strip().splitlines()[-1] if out.strip() else "(no output)"
        print(f"{name}: {last} ({time.time() - t0:.0f} s)", flush=True)
        if not ok:
            failed.append(name)
            print(out, flush=True)

    reports = sorted(glob.glob(os.path.join(logs, "*")))
    for report in reports:
        print(f"\n==== {report}")
        with open(report, errors="replace") as f:
            print(f.read())
    print(f"\n{len(files)} test files in {time.time() - started:.0f} s against {args.build}: "
          f"{len(failed)} failed{' (' + ', '.join(failed) + ')' if failed else ''}, "
          f"{len(reports)} sanitizer reports" + (f" (kept in {logs})" if reports else ""))
    if not reports:
        os.rmdir(logs)
    sys.exit(1 if failed or reports else 0)


if __name__ == "__main__":
    main()
