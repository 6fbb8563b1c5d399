#!/usr/bin/python3
"""`make bench`: hsmd's API against the physical limit and SoftHSMv2.

For each operation, in one run on this machine:
  limit    the same OpenSSL work in a tight loop on every core (bench/limit.c)
  softhsm  SoftHSMv2 through PKCS#11, in-process, one session per core (bench/softhsm.c)
  hsmd     the KMS API over keep-alive HTTP and HTTPS with SigV4 and the audit
           trail on (bench/loadgen.c): closed loop for the peak, then a constant
           rate of half that peak for latency without coordinated omission
and, for Encrypt 64 B, the audit trail's cost (audit on tmpfs; audit records
acknowledged unwritten in a benchmark-only build; then the real build and the
unwritten one in alternating rounds, whose median ratio is the cost target).

Writes results.md, results.csv and results.png into --out (bench/results).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hsmbench as hb  # noqa: E402
import report  # noqa: E402

LATENCY_OPS = ("encrypt-64", "sign-rsa2048")  # constant-rate runs over TLS too


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default="build-bench", help="CMake build directory with HSM_BENCH=ON")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--quick", action="store_true", help="short runs, for trying things out")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--only", action="append",
                   help="operation ids to run, repeated or comma-separated (default: all)")
    p.add_argument("--wait-quiet", type=int, default=300,
                   help="seconds to wait at most for other work on the machine to stop")
    args = p.parse_args()
    if args.only:
        args.only = [i for arg in args.only for i in arg.split(",") if i]
        unknown = sorted(set(args.only) - set(hb.OP_IDS))
        if unknown:
            p.error(f"unknown operation ids {unknown}; known: {', '.join(hb.OP_IDS)}")
    return args


def api_phase(lg, node, ops, d, results, key, with_rate, rate_of=None, passes=1):
    """Closed loop for every op, then constant rate at half the peak where asked.

    With passes > 1, the closed loop runs that many times and the fastest pass
    counts, as for the limit and SoftHSMv2 (hb.run_inprocess): the host only
    ever takes time away, from hsmd as from them."""
    for op in ops:
        runs = [lg.run_quiet(node, op, duration=d["api"], warmup=d["warmup"],
                             connections=d["conns"]) for _ in range(passes)]
        closed = max(runs, key=lambda r: r["ops_per_s"])
        closed["passes"] = [round(r["ops_per_s"]) for r in runs]
        results[key][op.ident] = {"closed": closed}
        hb.log(f"{key} {op.ident}: {closed['ops_per_s']:.0f} ops/s, passes {closed['passes']} "
               f"(server {closed['server_cpu_cores']} cores, client "
               f"{closed['client_cpu_cores']}, other {closed['other_cpu_cores']})")
        if not with_rate(op):
            continue
        peak = (rate_of or {}).get(op.ident, closed["ops_per_s"])
        rate = max(1, round(peak / 2))
        r = lg.run_quiet(node, op, rate=rate, duration=d["rate"], warmup=d["warmup"],
                         connections=d["conns"])
        results[key][op.ident]["rate"] = r
        hb.log(f"{key} {op.ident} at {rate}/s: p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us,"
               f" p99.9 {r['p999_us']:.0f} us, errors {r['errors']}; {hb.tail_causes(r)}")


def audit_phase(args, lg, build, work, enc_op, d, results):
    """Encrypt 64 B with the audit trail on tmpfs, and with records unwritten."""
    half = round(results["hsmd"]["encrypt-64"]["closed"]["ops_per_s"] / 2)
    shm = hb.scratch_dir("hsmd-bench-audit-", "/dev/shm")
    variants = (("tmpfs", os.path.join(build, "hsmd"), os.path.join(shm, "data")),
                ("unwritten", os.path.join(build, "bench", "hsmd-noaudit"), os.path.join(work, "data")))
    try:
        for name, binary, data in variants:
            node = hb.Node(binary, data, log_path=os.path.join(work, f"hsmd-{name}.log")).start()
            try:
                op = enc_op
                if name == "tmpfs":  # a new store: make its own key
                    key = node.kms().create_key()["KeyMetadata"]["KeyId"]
                    op = hb.Op(enc_op.ident, enc_op.title, enc_op.target, enc_op.body, [key])
                closed = lg.run_quiet(node, op, duration=d["api"], warmup=d["warmup"],
                                      connections=d["conns"])
                rate = lg.run_quiet(node, op, rate=half, duration=d["rate"], warmup=d["warmup"],
                                    connections=d["conns"])
                results["audit"][name] = {"closed": closed, "rate": rate}
                hb.log(f"audit {name}: {closed['ops_per_s']:.0f} ops/s; at {half}/s p99 "
                       f"{rate['p99_us']:.0f} us")
            finally:
                node.stop()
    finally:
        hb.remove(shm)


def audit_rounds(lg, build, work, enc_op, d, results, rounds):
    """The audit cost target: hsmd and hsmd-noaudit in alternating closed-loop
    rounds on the same store, so drift of the machine falls on both alike."""
    pairs = []
    for i in range(rounds):
        pair = {}
        for name, binary in (("disk", os.path.join(build, "hsmd")),
                             ("unwritten", os.path.join(build, "bench", "hsmd-noaudit"))):
            node = hb.Node(binary, os.path.join(work, "data"),
                           log_path=os.path.join(work, f"hsmd-round-{name}.log")).start()
            try:
                c = lg.run_quiet(node, enc_op, duration=d["api"], warmup=d["warmup"],
                                 connections=d["conns"])
            finally:
                node.stop()
            pair[name] = {"ops_per_s": c["ops_per_s"],
                          "cpu_us": c["server_cpu_cores"] * 1e6 / c["ops_per_s"] if c["ops_per_s"] else 0}
        pair["ratio"] = pair["disk"]["ops_per_s"] / pair["unwritten"]["ops_per_s"]
        hb.log(f"audit round {i + 1}: {pair['disk']['ops_per_s']:.0f} against "
               f"{pair['unwritten']['ops_per_s']:.0f} ops/s unwritten ({pair['ratio']:.1%})")
        pairs.append(pair)
    results["audit"]["rounds"] = pairs


def main():
    args = parse_args()
    build = os.path.abspath(args.build)
    d = {"inproc": 1 if args.quick else 2, "api": 2 if args.quick else 5,
         "rate": 2 if args.quick else 8, "warmup": 0.5 if args.quick else 1,
         "passes": 1 if args.quick else 3, "tls_passes": 1 if args.quick else 3,
         "conns": args.connections}
    results = {"machine": hb.machine_info(build), "params": d, "limit": {}, "softhsm": {}, "hsmd": {},
               "tls": {}, "audit": {}}
    work = hb.scratch_dir("hsmd-bench-", "/tmp")
    t0 = time.monotonic()
    hb.log(f"machine: {results['machine']}; scratch {work}")
    hb.wait_quiet(args.wait_quiet)
    try:
        only = args.only
        hb.wait_quiet(60, quiet_for_s=3)
        hb.log("physical limit (OpenSSL, all cores)")
        results["limit"] = hb.run_inprocess(os.path.join(build, "bench", "limit"), d["inproc"], ops=only)
        hb.wait_quiet(60, quiet_for_s=3)
        hb.log("SoftHSMv2 (PKCS#11, all cores)")
        results["softhsm"] = hb.run_inprocess(os.path.join(build, "bench", "softhsm"), d["inproc"],
                                              env=hb.softhsm_env(work), ops=only)
        lg = hb.Loadgen(os.path.join(build, "bench", "loadgen"), work)
        node = hb.Node(os.path.join(build, "hsmd"), os.path.join(work, "data")).start()
        try:
            ops = hb.api_ops(node.kms(), hb.create_keys(node.kms()))
            ops = [o for o in ops if not only or o.ident in only]
            hb.log(f"hsmd over HTTP ({len(ops)} operations)")
            api_phase(lg, node, ops, d, results, "hsmd", lambda op: True, passes=d["passes"])
        finally:
            node.stop()
        enc = [o for o in ops if o.ident == "encrypt-64"]
        if enc:
            hb.log("audit cost (Encrypt 64 B)")
            audit_phase(args, lg, build, work, enc[0], d, results)
            audit_rounds(lg, build, work, enc[0], d, results, 3 if args.quick else 5)
        tls = hb.make_tls(work)
        node = hb.Node(os.path.join(build, "hsmd"), os.path.join(work, "data"), tls=tls).start()
        try:
            hb.log("hsmd over HTTPS")
            api_phase(lg, node, ops, d, results, "tls", lambda op: op.ident in LATENCY_OPS,
                      passes=d["tls_passes"])
        finally:
            node.stop()
        results["elapsed_s"] = round(time.monotonic() - t0)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        report.write(results, args.out)
        hb.log(f"done in {results['elapsed_s']} s; results in {args.out} (raw: {work}/results.json)")
    finally:
        hb.remove(os.path.join(work, "data"))
        hb.remove(os.path.join(work, "softhsm-tokens"))
        for name in ("tls.key", "tls.crt"):
            if os.path.exists(os.path.join(work, name)):
                os.unlink(os.path.join(work, name))


if __name__ == "__main__":
    main()
