#!/usr/bin/python3
"""Compiles every source of a build with clang, syntax only, under the build's own
flags (-Werror included): `make fuzz` and `make coverage` build with clang, and
clang warns where gcc does not, so a change that only gcc has seen can break them.

Usage: clang_check.py BUILD_DIR.  Skips (exit 0, saying so) without clang or without
BUILD_DIR/compile_commands.json; exit 1 when a file does not compile."""
import concurrent.futures
import json
import os
import shlex
import shutil
import subprocess
import sys


def clang_args(command):
    """The compiler's arguments without the compiler, the object and -c."""
    out, args, i = [], shlex.split(command)[1:], 0
    while i < len(args):
        if args[i] == "-o":
            i += 2
            continue
        if args[i] != "-c":
            out.append(args[i])
        i += 1
    return out


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    db = os.path.join(build, "compile_commands.json")
    if shutil.which("clang") is None or not os.path.exists(db):
        print(f"clang check skipped: {'no clang' if shutil.which('clang') is None else db + ' missing'}")
        return 0
    with open(db, encoding="utf-8") as f:
        cmds = json.load(f)

    def run(c):
        p = subprocess.run(["clang", "-fsyntax-only", *clang_args(c["command"])],
                           cwd=c["directory"], capture_output=True, text=True)
        return c["file"], p.returncode, p.stderr

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        for path, rc, err in ex.map(run, cmds):
            if rc != 0:
                failed += 1
                print(f"clang: {path} does not compile:\n{err}", end="")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
