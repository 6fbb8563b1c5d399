#!/usr/bin/python3
"""`make coverage`: which lines of src/ the test suite never runs.

Builds hsmd, hsmctl, the PKCS#11 module and the tests with gcc's --coverage
(unoptimized) in their own directory, runs the whole ctest suite there (about
20 minutes on 2 cores: unoptimized code is slower), then merges what every
process wrote (each object's .gcda, read with `gcov --json-format`) into one
count a line.  Prints the files with the most lines never run and writes
every such line, with its text, to BUILD/coverage/uncovered.txt, and the
functions never called to BUILD/coverage/uncalled.txt.

A test failing in that build is reported but does not stop the report:
coverage is about what ran.  Only what the processes wrote at exit counts, so
code that runs only in a process killed by a signal shows as never run.

    scripts/coverage.py [--build DIR] [--skip-tests] [--top N] [--jobs N]
"""
import argparse
import collections
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, **kw)


def build(build_dir, jobs):
    flags = "--coverage -O0"
    r = run(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Debug",
             f"-DCMAKE_C_FLAGS={flags}", "-DCMAKE_EXE_LINKER_FLAGS=--coverage",
             "-DCMAKE_SHARED_LINKER_FLAGS=--coverage"], stdout=subprocess.DEVNULL)
    if r.returncode != 0 or run(["cmake", "--build", build_dir, "-j", str(jobs)]).returncode:
        sys.exit("coverage: the build failed")


def merge(build_dir):
    """{source path under src/: {line: count}} and {path: {function: calls}}, summed."""
    lines = collections.defaultdict(lambda: collections.defaultdict(int))
    calls = collections.defaultdict(lambda: collections.defaultdict(int))
    gcdas = [p for p in glob.glob(os.path.join(build_dir, "**", "*.gcda"), recursive=True)]
    with tempfile.TemporaryDirectory() as out:
        for i, gcda in enumerate(gcdas):
            d = os.path.join(out, str(i))
            os.mkdir(d)
            subprocess.run(["gcov", "--json-format", "-o", os.path.dirname(gcda), gcda], cwd=d,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for js in glob.glob(os.path.join(d, "*.gcov.json.gz")):
                with gzip.open(js) as f:
                    doc = json.load(f)
                for src in doc["files"]:
                    path = os.path.normpath(os.path.join(doc.get("current_working_directory", ""),
                                                         src["file"]))
                    rel = os.path.relpath(path, ROOT)
                    if not rel.startswith("src" + os.sep):
                        continue
                    for ln in src["lines"]:
                        lines[rel][ln["line_number"]] += ln["count"]
                    for fn in src["functions"]:
                        calls[rel][fn["demangled_name"]] += fn["execution_count"]
    return lines, calls


def report(lines, calls, build_dir, top):
    os.makedirs(os.path.join(build_dir, "coverage"), exist_ok=True)
    rows, total, ran = [], 0, 0
    with open(os.path.join(build_dir, "coverage", "uncovered.txt"), "w") as out:
        for rel in sorted(lines):
            counts = lines[rel]
            never = sorted(n for n, c in counts.items() if c == 0)
            total += len(counts)
            ran += len(counts) - len(never)
            rows.append((len(never), rel, len(counts)))
            if never:
                with open(os.path.join(ROOT, rel), errors="replace") as f:
                    text = f.read().split("\n")
                out.write(f"== {rel}: {len(never)} of {len(counts)} lines never run\n")
                for n in never:
                    out.write(f"{n:6}: {text[n - 1] if n <= len(text) else ''}\n")
    with open(os.path.join(build_dir, "coverage", "uncalled.txt"), "w") as out:
        for rel in sorted(calls):
            for fn, n in sorted(calls[rel].items()):
                if n == 0:
                    out.write(f"{rel}: {fn}\n")
    if total == 0:
        sys.exit("coverage: no coverage data found (did the tests run?)")
    print(f"\nlines of src/ run by the tests: {ran} of {total} ({100.0 * ran / total:.1f} %)")
    print("files with the most lines never run:")
    for never, rel, n in sorted(rows, reverse=True)[:top]:
        print(f"  {never:5} of {n:5}  {rel}")
    print(f"every such line: {os.path.join(build_dir, 'coverage', 'uncovered.txt')}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build-cov"))
    p.add_argument("--skip-tests", action="store_true",
                   help="report on the data of an earlier run of this build")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    a = p.parse_args()
    build_dir = os.path.abspath(a.build)
    if not a.skip_tests:
        build(build_dir, a.jobs)
        for gcda in glob.glob(os.path.join(build_dir, "**", "*.gcda"), recursive=True):
            os.remove(gcda)  # this run's counts only
        r = run(["ctest", "--test-dir", build_dir, "-j", str(a.jobs), "--timeout", "1800"])
        if r.returncode != 0:
            print("coverage: some tests failed in the coverage build; reporting what ran",
                  flush=True)
    report(*merge(build_dir), build_dir, a.top)


if __name__ == "__main__":
    main()
