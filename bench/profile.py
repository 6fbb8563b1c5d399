#!/usr/bin/python3
"""`make bench-profile`: where hsmd's CPU goes under load (perf), per operation.

For Encrypt 64 B and Sign RSA-2048 (or --op ...): drives hsmd with loadgen
in closed loop over HTTP and, in the middle of the run,
  - counts system calls and context switches per request (perf stat), and
  - samples hsmd's stacks (perf record -e cpu-clock --call-graph dwarf; the
    hardware counters are not available in this VM),
then prints the top functions by self time and the inclusive cost of each
stage of the request pipeline.  Raw data stays in the scratch directory.
bench/PROFILE.md discusses the findings.
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hsmbench as hb  # noqa: E402


# The system calls counted one by one (perf's syscalls:sys_enter_* tracepoints).
# getpid is OpenSSL 3.0's fork check, made on every draw of its random
# generator: about 1 µs on some boots of this machine (PROFILE.md item 49).
SYSCALLS = ["read", "sendto", "write", "writev", "epoll_wait", "futex", "getpid", "fdatasync",
            "pread64", "pwrite64", "newfstatat"]


def has(*names):
    """True for a stack holding one of names; a name ending in '*' is a prefix."""
    def pred(st):
        return any(f == n or (n.endswith("*") and f.startswith(n[:-1])) for f in st for n in names)
    return pred


def but_not(a, b):
    return lambda st: a(st) and not b(st)


# Pipeline stages: inclusive cost, by the functions that root them.
STAGES = [
    ("read and parse the request (hsmd's HTTP server)",
     but_not(has("hsm_http_conn_input"), has("hsm_http_req_dispatch"))),
    ("handler, all of it (hsm_http_req_dispatch)", has("hsm_http_req_dispatch")),
    ("  authenticate (SigV4)", has("hsm_server_authenticate")),
    ("  parse JSON", has("hsm_json_parse")),
    ("  API handler (decode, KMS, keystore, render)", but_not(has("hsm_api_*"),
                                                             has("hsm_api_handler_for"))),
    ("    KMS layer", has("hsm_kms_*")),
    ("    keystore (keys, crypto)", but_not(has("hsm_ks_*"), has("context_field"))),
    ("  audit record built and queued", has("submit_audit")),
    ("    keyed hashes of the encryption context", has("context_field")),
    ("    waking the audit writer (futex)", has("___pthread_cond_signal")),
    ("audit writer thread", has("audit_writer_main")),
    ("responses handed back to their worker", has("hsm_http_worker_drain")),
    ("response write (send, SSL_write)", has("hsm_http_conn_write")),
    ("TLS reads (SSL_read: read, record decryption)", has("SSL_read")),
    ("epoll_ctl (anywhere)", has("epoll_ctl", "__GI_epoll_ctl")),
    ("context switches (schedule)", has("schedule", "__schedule")),
]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default="build-bench")
    p.add_argument("--op", action="append", choices=hb.OP_IDS,
                   help="operation ids (default encrypt-64, sign-rsa2048)")
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--tls", action="store_true", help="over HTTPS (a throwaway certificate)")
    return p.parse_args()


def stacks(perf_data):
    """perf script's call chains, leaf first, as lists of symbol names."""
    out = subprocess.run(["perf", "script", "-i", perf_data, "-F", "tid,ip,sym"],
                         capture_output=True, text=True).stdout
    cur, result = [], []
    for line in out.splitlines():
        if not line.strip():
            if cur:
                result.append(cur)
            cur = []
        elif line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                cur.append(parts[1].split("+0x")[0].rsplit(" (", 1)[0])
    if cur:
        result.append(cur)
    return result


def stage_costs(sts):
    total = len(sts) or 1
    return [(label, 100.0 * sum(1 for st in sts if pred(st)) / total) for label, pred in STAGES]


def top_self(sts, n=25):
    c = collections.Counter(st[0] for st in sts if st)
    total = len(sts) or 1
    return [(sym, 100.0 * k / total) for sym, k in c.most_common(n)]


def profile_op(lg, node, op, args, work):
    pid = node.proc.pid
    dur = args.seconds * 2 + 4
    result = {}

    def drive():
        result["load"] = lg.run(node, op, duration=dur, warmup=0, connections=args.connections)

    t = threading.Thread(target=drive)
    t.start()
    time.sleep(2)
    events = ",".join(["raw_syscalls:sys_enter", "context-switches", "cpu-clock"] +
                      [f"syscalls:sys_enter_{n}" for n in SYSCALLS])
    stat = subprocess.run(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid),
                           "--", "sleep", str(args.seconds)], capture_output=True, text=True).stderr
    data = os.path.join(work, f"{op.ident}.perf.data")
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "--call-graph",
                    "dwarf,16384", "-p", str(pid), "-o", data, "--", "sleep", str(args.seconds)],
                   capture_output=True)
    t.join()
    counts = {}
    for line in stat.splitlines():
        f = line.split(",")
        if len(f) > 3 and f[0].replace(".", "").isdigit():
            counts[f[2]] = float(f[0])
    rps = result["load"]["ops_per_s"]
    sts = stacks(data)
    return {
        "ops_per_s": rps,
        "server_cores": counts.get("cpu-clock", 0) / 1000 / args.seconds,
        "cpu_us_per_request": counts.get("cpu-clock", 0) * 1000 / args.seconds / rps if rps else 0,
        "syscalls_per_request": counts.get("raw_syscalls:sys_enter", 0) / args.seconds / rps if rps else 0,
        "switches_per_request": counts.get("context-switches", 0) / args.seconds / rps if rps else 0,
        "syscalls_by_kind": {n: counts.get(f"syscalls:sys_enter_{n}", 0) / args.seconds / rps
                             for n in SYSCALLS if rps and counts.get(f"syscalls:sys_enter_{n}")},
        "stages": stage_costs(sts), "top": top_self(sts), "samples": len(sts), "perf_data": data,
    }


def main():
    args = parse_args()
    build = os.path.abspath(args.build)
    work = hb.scratch_dir("hsmd-profile-", "/tmp")
    wanted = args.op or ["encrypt-64", "sign-rsa2048"]
    lg = hb.Loadgen(os.path.join(build, "bench", "loadgen"), work)
    tls = hb.make_tls(work) if args.tls else None
    node = hb.Node(os.path.join(build, "hsmd"), os.path.join(work, "data"), tls=tls).start()
    report = {}
    try:
        ops = [o for o in hb.api_ops(node.kms(), hb.create_keys(node.kms())) if o.ident in wanted]
        for op in ops:
            hb.log(f"profiling {op.ident}")
            report[op.ident] = r = profile_op(lg, node, op, args, work)
            print(f"\n## {op.ident}: {r['ops_per_s']:.0f} req/s, hsmd {r['server_cores']:.2f} cores, "
                  f"{r['cpu_us_per_request']:.1f} µs CPU, {r['syscalls_per_request']:.1f} syscalls and "
                  f"{r['switches_per_request']:.2f} context switches per request "
                  f"({r['samples']} samples)\n")
            kinds = sorted(r["syscalls_by_kind"].items(), key=lambda kv: -kv[1])
            if kinds:
                print("System calls per request: " +
                      ", ".join(f"{n} {v:.2f}" for n, v in kinds if v >= 0.005) + "\n")
            print("Stage (inclusive, % of hsmd's samples):")
            for label, pct in r["stages"]:
                print(f"  {pct:5.1f}%  {label}")
            print("\nTop functions (self):")
            for sym, pct in r["top"]:
                print(f"  {pct:5.1f}%  {sym}")
    finally:
        node.stop()
        hb.remove(os.path.join(work, "data"))
    with open(os.path.join(work, "profile.json"), "w") as f:
        json.dump(report, f, indent=1)
    hb.log(f"raw data in {work}")


if __name__ == "__main__":
    main()
