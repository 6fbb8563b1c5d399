#!/usr/bin/python3
"""`make bench-scale`: hsmd with 1,000 and 1,000,000 keys in its store.

For each size: a dev node's data directory is filled with AES keys by
bench/bulkkeys (real keys, made by the KMS layer, on tmpfs for speed, then
copied to disk), plus the hot signing keys made through the API.  Measured:
  - start-up time (exec to /readyz answering 200) and resident memory
  - Sign RSA-2048 and ECDSA P-256 with one hot key: peak, and latency at a
    constant rate (half the 1,000-key peak, the same offered load at every size)
  - Encrypt 64 B with a key drawn uniformly from all N keys (cold keys: the
    metadata and key caches hold at most 200,000 and 100,000 entries)
  - RSS after the runs
and start-up time and RSS with 100,000 keys.  Writes scale.md and scale.csv.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hsmbench as hb  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default="build-bench")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--sizes", default="1000,1000000", help="key counts to benchmark")
    p.add_argument("--startup-size", type=int, default=100000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--wait-quiet", type=int, default=300,
                   help="seconds to wait at most for other work on the machine to stop")
    return p.parse_args()


def build_store(build, work, n, label):
    """A data directory on disk with n keys: 3 made through the API, the rest in bulk."""
    shm = hb.scratch_dir(f"hsmd-scale-{label}-", "/dev/shm")
    try:
        data = os.path.join(shm, "data")
        node = hb.Node(os.path.join(build, "hsmd"), data, log_path=os.path.join(work, "hsmd.log")).start()
        try:
            kms = node.kms()
            hot = {name: kms.create_key(KeySpec=s, KeyUsage=u)["KeyMetadata"]["KeyId"]
                   for name, s, u in (("rsa2048", "RSA_2048", "SIGN_VERIFY"),
                                      ("p256", "ECC_NIST_P256", "SIGN_VERIFY"),
                                      ("aes", "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"))}
        finally:
            node.stop()
        ids = os.path.join(work, f"ids-{label}.txt")
        with open(ids, "w") as f:
            f.write(hot["aes"] + "\n")
        t0 = time.monotonic()
        if n > len(hot):
            subprocess.run([os.path.join(build, "bench", "bulkkeys"), "--data-dir", data,
                            "--count", str(n - len(hot)), "--spec", "SYMMETRIC_DEFAULT",
                            "--usage", "ENCRYPT_DECRYPT", "--threads", "2", "--ids", ids],
                           check=True)
        hb.log(f"{n} keys made in {time.monotonic() - t0:.1f} s")
        dest = os.path.join(work, f"data-{label}")
        shutil.copytree(data, dest)
        os.sync()  # its writeback would otherwise land in the measurements
        return dest, hot, ids
    finally:
        hb.remove(shm)


def startup(build, data, work, repeats):
    """Median start-up time over `repeats` starts, and RSS just after the last."""
    times, rss = [], None
    for _ in range(repeats):
        node = hb.Node(os.path.join(build, "hsmd"), data, log_path=os.path.join(work, "hsmd.log"))
        node.start()
        times.append(node.startup_s)
        rss = hb.rss_kib(node.proc.pid)
        node.stop()
    return statistics.median(times), rss


def sign_op(ident, key, alg):
    msg = hb.b64(os.urandom(hb.MSG_LEN))
    return hb.Op(ident, ident, "Sign", {"KeyId": "@KEY@", "Message": msg, "MessageType": "RAW",
                                        "SigningAlgorithm": alg}, [key])


def measure(lg, node, hot, ids, d, rates):
    enc = hb.Op("encrypt-64-random", "encrypt-64-random", "Encrypt",
                {"KeyId": "@KEY@", "Plaintext": hb.b64(os.urandom(64)),
                 "EncryptionContext": hb.CONTEXT}, [])
    ops = [(sign_op("sign-rsa2048", hot["rsa2048"], "RSASSA_PKCS1_V1_5_SHA_256"), {}),
           (sign_op("sign-p256", hot["p256"], "ECDSA_SHA_256"), {}),
           (enc, {"keys_file": ids, "random_keys": True})]
    out = {}
    for op, kw in ops:
        closed = lg.run_quiet(node, op, duration=d["api"], warmup=d["warmup"], **kw)
        rate = rates.setdefault(op.ident, max(1, round(closed["ops_per_s"] / 2)))
        r = lg.run_quiet(node, op, rate=rate, duration=d["rate"], warmup=d["warmup"], **kw)
        out[op.ident] = {"closed": closed, "rate": r}
        hb.log(f"{op.ident}: {closed['ops_per_s']:.0f} ops/s; at {rate}/s p50 {r['p50_us']:.0f} us "
               f"p99 {r['p99_us']:.0f} us")
        own = max(1, round(closed["ops_per_s"] / 2))
        if rate > 1.5 * own:
            # That load is near or past this size's own peak: its latency is
            # queueing.  Also measure at half of this size's peak.
            o = lg.run_quiet(node, op, rate=own, duration=d["rate"], warmup=d["warmup"], **kw)
            out[op.ident]["own"] = o
            hb.log(f"{op.ident}: at {own}/s (half its own peak) p50 {o['p50_us']:.0f} us "
                   f"p99 {o['p99_us']:.0f} us")
    return out


def main():
    args = parse_args()
    build = os.path.abspath(args.build)
    d = {"api": 2 if args.quick else 5, "rate": 3 if args.quick else 8,
         "warmup": 0.5 if args.quick else 1}
    sizes = [int(s) for s in args.sizes.split(",")]
    work = hb.scratch_dir("hsmd-scale-", "/tmp")
    lg = hb.Loadgen(os.path.join(build, "bench", "loadgen"), work)
    res = {"machine": hb.machine_info(build), "params": d, "sizes": {}}
    rates = {}
    hb.wait_quiet(args.wait_quiet)
    t0 = time.monotonic()
    for n in sorted(set(sizes + [args.startup_size])):
        label = str(n)
        data, hot, ids = build_store(build, work, n, label)
        try:
            st, rss0 = startup(build, data, work, 3)
            entry = {"keys": n, "startup_s": st, "rss_start_kib": rss0.get("VmRSS")}
            hb.log(f"{n} keys: start-up {st * 1000:.0f} ms, RSS {rss0.get('VmRSS')} KiB")
            if n in sizes:
                node = hb.Node(os.path.join(build, "hsmd"), data,
                               log_path=os.path.join(work, "hsmd.log")).start()
                try:
                    entry["runs"] = measure(lg, node, hot, ids, d, rates)
                    rss = hb.rss_kib(node.proc.pid)
                    entry["rss_after_kib"], entry["rss_peak_kib"] = rss.get("VmRSS"), rss.get("VmHWM")
                finally:
                    node.stop()
            entry["db_bytes"] = sum(os.path.getsize(os.path.join(data, f))
                                    for f in os.listdir(data) if f.startswith("hsmd.db"))
            res["sizes"][label] = entry
        finally:
            hb.remove(data)
            if os.path.exists(ids):
                os.unlink(ids)
    res["elapsed_s"] = round(time.monotonic() - t0)
    with open(os.path.join(work, "scale.json"), "w") as f:
        json.dump(res, f, indent=1)
    os.makedirs(args.out, exist_ok=True)
    write(res, sizes, args.startup_size, args.out)
    hb.log(f"done in {res['elapsed_s']} s; results in {args.out} (raw: {work}/scale.json)")


def us(v):
    return f"{v:.0f} µs" if v < 1000 else f"{v / 1000:.2f} ms"


def write(res, sizes, startup_size, out):
    m = res["machine"]
    rows = []
    for label, e in sorted(res["sizes"].items(), key=lambda kv: kv[1]["keys"]):
        for op, x in e.get("runs", {}).items():
            for mode in ("closed", "rate", "own"):
                if mode not in x:
                    continue
                r = x[mode]
                rows.append({"keys": e["keys"], "op": op, "mode": mode, "rate": r["rate"] or "",
                             "ops_per_s": round(r["ops_per_s"], 1), "p50_us": r["p50_us"],
                             "p99_us": r["p99_us"], "p999_us": r["p999_us"], "errors": r["errors"],
                             "server_cores": r["server_cpu_cores"],
                             "client_cores": r["client_cpu_cores"],
                             "other_cores": r["other_cpu_cores"]})
    with open(os.path.join(out, "scale.csv"), "w", newline="") as f:
        f.write(f"# cpu={m['cpu']}; features={m.get('features', '?')}; cores={m['cores']}; "
                f"kernel={m['kernel']}; "
                f"openssl={m['openssl']}; date={m['date']}; "
                f"host_costs={json.dumps(m.get('host_costs') or {})}\n")
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["keys"])
        w.writeheader()
        w.writerows(rows)
        f.write("\nkeys,startup_ms,rss_start_kib,rss_after_kib,rss_peak_kib,db_bytes\n")
        for e in sorted(res["sizes"].values(), key=lambda e: e["keys"]):
            f.write(f"{e['keys']},{e['startup_s'] * 1000:.1f},{e['rss_start_kib']},"
                    f"{e.get('rss_after_kib', '')},{e.get('rss_peak_kib', '')},{e['db_bytes']}\n")
    small, large = str(min(sizes)), str(max(sizes))
    lines = ["# hsmd at scale", "",
             f"- Machine: {m['cpu']}, {m['cores']} cores (CPU features: {m.get('features', '?')}); "
             f"kernel {m['kernel']}; {m['openssl']}",
             f"- Date: {m['date']}; whole run {res.get('elapsed_s', '?')} s",
             f"- What the host charges: {hb.host_cost_text(m) or 'not measured'}.",
             "- Keys: AES keys made by bench/bulkkeys through the KMS layer (each wrapped under the "
             "master key, one durable commit each, on tmpfs), the store then copied to disk; "
             "the signing keys are made through the API.  Start-up is measured with the store in "
             "the page cache (median of 3 starts, exec to /readyz = 200).",
             "- Constant-rate runs offer the same load at every size: half the peak measured with "
             f"{int(small):,} keys.  Where that load is more than three quarters of a size's own "
             "peak, the latency there is mostly queueing, so that size is also measured at half "
             "of its own peak (marked *own*).", "",
             "| Keys | Operation | peak ops/s | rate | p50 | p99 | p99.9 |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["mode"] in ("rate", "own"):
            peak = next(x for x in rows if x["keys"] == r["keys"] and x["op"] == r["op"]
                        and x["mode"] == "closed")
            own = " (*own*)" if r["mode"] == "own" else ""
            lines.append(f"| {r['keys']:,} | {r['op']} | {peak['ops_per_s']:,.0f} | {r['rate']}/s{own} | "
                         f"{us(r['p50_us'])} | {us(r['p99_us'])} | {us(r['p999_us'])} |")
    lines += ["", "| Keys | start-up | RSS after start | RSS after the runs | peak RSS | store size |",
              "|---:|---:|---:|---:|---:|---:|"]
    for e in sorted(res["sizes"].values(), key=lambda e: e["keys"]):
        def mib(k):
            return f"{k / 1024:.0f} MiB" if k else "-"
        lines.append(f"| {e['keys']:,} | {e['startup_s'] * 1000:.0f} ms | {mib(e['rss_start_kib'])} | "
                     f"{mib(e.get('rss_after_kib'))} | {mib(e.get('rss_peak_kib'))} | "
                     f"{e['db_bytes'] / 2**20:.0f} MiB |")
    lines += ["", "## Targets", "", "| Target | Measured | Met |", "|---|---|---|"]
    s, l = res["sizes"].get(small, {}).get("runs", {}), res["sizes"].get(large, {}).get("runs", {})
    for op in ("sign-rsa2048", "sign-p256"):
        if op in s and op in l:
            a, b = s[op]["rate"]["p50_us"], l[op]["rate"]["p50_us"]
            lines.append(f"| {op}: p50 with {int(large):,} keys within 1.2x of {int(small):,} keys "
                         f"| {us(b)} vs {us(a)} ({b / a:.2f}x) | {'yes' if b <= 1.2 * a else '**no**'} |")
    st = res["sizes"].get(str(startup_size))
    if st:
        lines.append(f"| start-up with {startup_size:,} keys < 1 s | {st['startup_s'] * 1000:.0f} ms | "
                     f"{'yes' if st['startup_s'] < 1 else '**no**'} |")
    with open(os.path.join(out, "scale.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
