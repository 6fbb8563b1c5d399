#!/usr/bin/python3
"""`make bench-instructions`: hsmd's instructions per request, counted by callgrind.

Throughput on a shared machine moves by 10-20 % between identical runs;
instruction counts do not.  For each operation (Encrypt 64 B, Encrypt 4 KiB
and Sign ECDSA P-256 unless --op is given) this starts hsmd under
`valgrind --tool=callgrind`, warms it up, zeroes the counters, sends a fixed
number of requests at a low constant rate, dumps the counters and prints the
instructions per request, in total and in the functions that cost most
(inclusive).  Compare two builds with --hsmd; --tls counts over HTTPS.

Three caveats: callgrind counts user-space instructions only (not the kernel's
TCP, epoll and futex work); under valgrind OpenSSL runs SHA-256 without
the SHA extensions, so SHA-256 (SigV4, HMACs, the audit chain) weighs several
times more than on the real CPU; and valgrind counts a `rep stosb` once per
byte, so the 32 KiB stack wipe after each pass (bench/PROFILE.md item 55)
shows as 32,768 instructions: the output gives the total without it too.
Read changes in the other functions.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hsmbench as hb  # noqa: E402

WATCH = ["hsm_server_authenticate", "hsm_json_parse", "hsm_api_*", "submit_audit",
         "audit_writer_main", "hsm_http_worker_drain", "bufferevent_run_readcb_",
         "SHA256_Update", "malloc", "free"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default="build-bench")
    p.add_argument("--hsmd", help="hsmd binary to count (default: the build's)")
    p.add_argument("--op", action="append", choices=hb.OP_IDS, help="operation ids (default encrypt-64, "
                   "encrypt-4k, sign-p256)")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--tls", action="store_true", help="over HTTPS (a throwaway certificate)")
    return p.parse_args()


def inclusive(dump):
    """callgrind_annotate's inclusive totals per function name."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                         capture_output=True, text=True, check=True).stdout
    costs, total = {}, 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = ir
            continue
        name = m.group(2).split(" [")[0].rsplit(":", 1)[-1]
        costs[name] = max(costs.get(name, 0), ir)
    return total, costs


def count_op(lg, hsmd, work, ident, n, tls=False):
    out = os.path.join(work, f"{ident}.callgrind")
    wrapper = os.path.join(work, "hsmd-callgrind")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file={out} "
                f"{hsmd} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    node = hb.Node(wrapper, os.path.join(work, f"data-{ident}"),
                   tls=hb.make_tls(work) if tls else None).start(timeout=300)
    try:
        kms = node.kms(read_timeout=900)  # an RSA-4096 key made under valgrind takes minutes
        op = {o.ident: o for o in hb.api_ops(kms, hb.create_keys(kms))}[ident]
        lg.run(node, op, rate=100, duration=2, warmup=0, connections=4)
        subprocess.run(["callgrind_control", "-z", str(node.proc.pid)], check=True,
                       capture_output=True)
        rate = 200
        r = lg.run(node, op, rate=rate, duration=max(1, n // rate), warmup=0, connections=4)
        subprocess.run(["callgrind_control", "-d", str(node.proc.pid)], check=True,
                       capture_output=True)
        if r["errors"]:
            raise RuntimeError(f"{ident}: {r['errors']} requests failed")
        done = r["ok"]
    finally:
        node.stop()
        hb.remove(os.path.join(work, f"data-{ident}"))
    time.sleep(0.5)
    dumps = sorted(p for p in glob.glob(out + ".*") if re.search(r"\.\d+$", p))
    if not dumps:
        raise RuntimeError(f"{ident}: callgrind wrote no dump")
    total, costs = inclusive(dumps[-1])
    return done, total, costs


def main():
    args = parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        sys.exit("bench-instructions needs valgrind (scripts/install-deps.sh installs it)")
    build = os.path.abspath(args.build)
    hsmd = os.path.abspath(args.hsmd or os.path.join(build, "hsmd"))
    work = hb.scratch_dir("hsmd-instructions-", "/tmp")
    lg = hb.Loadgen(os.path.join(build, "bench", "loadgen"), work)
    print(f"hsmd: {hsmd}")
    for ident in args.op or ["encrypt-64", "encrypt-4k", "sign-p256"]:
        hb.log(f"counting {ident}")
        done, total, costs = count_op(lg, hsmd, work, ident, args.requests, args.tls)
        over = " over HTTPS" if args.tls else ""
        print(f"\n## {ident}{over}: {total / done:,.0f} instructions per request ({done} requests)")
        # The wipe of dead stack frames after each worker pass and lane job (item 55) is one
        # `rep stosb` of 32 KiB, which valgrind counts byte by byte: about 32,768
        # "instructions" for what the CPU does in about 230 ns.  At this low rate each
        # request has passes of its own, so the figure without it is the one comparable
        # with item 55's predecessors.
        wipe = costs.get("hsm_stack_wipe", 0)
        if wipe:
            print(f"  {(total - wipe) / done:>10,.0f}  without the stack wipe "
                  f"({wipe / done:,.0f}, {wipe / done / 32768:.1f} wipes of 32 KiB a request)")
        for w in WATCH:
            if w.endswith("*"):
                v = max((c for k, c in costs.items() if k.startswith(w[:-1])), default=0)
            else:
                v = costs.get(w, 0)
            if v:
                print(f"  {v / done:>10,.0f}  {w}")
    hb.log(f"raw data in {work}")


if __name__ == "__main__":
    main()
