#!/usr/bin/python3
"""`make bench-store`: one node on SQLite against one node on PostgreSQL.

Side by side in one run, on this machine: a node whose store is its own
SQLite file and a node whose store is a local PostgreSQL 15 server (started
here by tests/support/pg-server.sh, with fsync, full_page_writes and
synchronous_commit on, as a production server would run), both in production
mode (a 2-of-2 key ceremony, unsealed with the shares, audit on, plain HTTP
on loopback).  Measured through the KMS API with loadgen, closed loop (peak)
and at half of each node's own peak (latency):
  - Encrypt 64 B with one key (served from the node's caches)
  - Encrypt 64 B with a key drawn from 2,000 (the metadata cache lifetime of
    a shared store, 1 s, makes each key's record be read again every second)
  - Sign ECDSA P-256 with one key
  - CreateKey (a store write: one durable transaction per request)
Writes store.md and store.csv into bench/results (or --out).
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hsmbench as hb  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PG_SERVER = os.path.join(ROOT, "tests", "support", "pg-server.sh")
N_KEYS = 2000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default="build-bench")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--wait-quiet", type=int, default=300,
                   help="seconds to wait at most for other work on the machine to stop")
    return p.parse_args()


def run(*args, env=None, **kw):
    p = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=600, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {p.stdout}{p.stderr}")
    return p.stdout


class ProdNode(hb.Node):
    """A production-mode node (not --dev): started sealed, unsealed with share files."""

    def __init__(self, build, data_dir, store, shares, log_path):
        super().__init__(os.path.join(build, "hsmd"), data_dir, log_path=log_path)
        self.hsmctl, self.store, self.shares = os.path.join(build, "hsmctl"), store, shares

    def start(self, timeout=120):
        args = [self.binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
                "--allow-plaintext-loopback"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HSM_", "AWS_"))}
        if self.store:
            env["HSM_STORE"] = self.store
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=env, stdout=logf, stderr=logf)
        logf.close()
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hsmd exited at start-up; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2):
                    break
            except OSError:
                if time.monotonic() - t0 > timeout:
                    raise RuntimeError("hsmd did not come up")
                time.sleep(0.02)
        for share in self.shares:
            run(self.hsmctl, "--endpoint", self.url, "unseal", share)
        with urllib.request.urlopen(self.url + "/readyz", timeout=5) as r:
            assert r.status == 200
        return self


def ceremony(build, work, name, store):
    """A 2-of-2 store; returns (data_dir, share files, officer credentials)."""
    data, shares = os.path.join(work, name), os.path.join(work, name + "-shares")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSM_", "AWS_"))}
    if store:
        env["HSM_STORE"] = store
    run(os.path.join(build, "hsmctl"), "init", "--data-dir", data, "--share-dir", shares,
        "--shares", "2", "--threshold", "2", "--admin", "ops", env=env)
    with open(os.path.join(shares, "ops.credentials")) as f:
        fields = dict(l.split(" = ", 1) for l in f.read().splitlines() if " = " in l)
    files = [os.path.join(shares, f"share-{i}-of-2.share") for i in (1, 2)]
    return data, files, (fields["aws_access_key_id"], fields["aws_secret_access_key"])


def crypto_user(build, node, ops):
    env = dict({k: v for k, v in os.environ.items() if not k.startswith(("HSM_", "AWS_"))},
               AWS_ACCESS_KEY_ID=ops[0], AWS_SECRET_ACCESS_KEY=ops[1])
    ctl = os.path.join(build, "hsmctl")
    run(ctl, "--endpoint", node.url, "user", "create", "bench", "--roles",
        "crypto-user,crypto-officer", env=env)
    out = run(ctl, "--endpoint", node.url, "access-key", "create", "bench", env=env)
    akid = re.search(r"AccessKeyId: (\S+)", out).group(1)
    secret = re.search(r"SecretAccessKey: (\S+)", out).group(1)
    return akid, secret


def kms_of(node, creds):
    import boto3
    from botocore.config import Config
    return boto3.client("kms", endpoint_url=node.url, region_name=hb.REGION,
                        aws_access_key_id=creds[0], aws_secret_access_key=creds[1],
                        config=Config(retries={"max_attempts": 1}))


def ops_for(kms, work, label):
    aes = kms.create_key()["KeyMetadata"]["KeyId"]
    p256 = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    ids = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(N_KEYS)]
    ids_file = os.path.join(work, f"keys-{label}.txt")
    with open(ids_file, "w") as f:
        f.write("\n".join(ids) + "\n")
    pt, msg = hb.b64(os.urandom(64)), hb.b64(os.urandom(hb.MSG_LEN))
    enc = {"KeyId": "@KEY@", "Plaintext": pt, "EncryptionContext": hb.CONTEXT}
    return [
        (hb.Op("encrypt-64", "Encrypt 64 B, one key", "Encrypt", enc, [aes]), {}),
        (hb.Op("encrypt-64-2000", f"Encrypt 64 B, {N_KEYS} keys", "Encrypt", enc, []),
         {"keys_file": ids_file, "random_keys": True}),
        (hb.Op("sign-p256", "Sign ECDSA P-256", "Sign",
               {"KeyId": "@KEY@", "Message": msg, "MessageType": "RAW",
                "SigningAlgorithm": "ECDSA_SHA_256"}, [p256]), {}),
        (hb.Op("create-key", "CreateKey (a store write)", "CreateKey",
               {"Description": "bench"}, []), {}),
    ]


def pg_start():
    # Its own directory under /tmp: as root, the server runs as the postgres user,
    # which cannot enter the (private) scratch directory.
    d = tempfile.mkdtemp(prefix="hsmd-store-bench-pg-")
    uri = run(PG_SERVER, "start", d).strip().splitlines()[-1]
    # The test server runs without fsync; a production server does not.
    with open(os.path.join(d, "data", "postgresql.conf"), "a") as f:
        f.write("fsync = on\nfull_page_writes = on\nsynchronous_commit = on\n")
    run(PG_SERVER, "halt", d)
    run(PG_SERVER, "resume", d)
    run("psql", uri, "-q", "-c", "CREATE DATABASE hsm")
    return d, uri.rsplit("/", 1)[0] + "/hsm"


def main():
    args = parse_args()
    build = os.path.abspath(args.build)
    d = {"api": 2 if args.quick else 5, "rate": 3 if args.quick else 6,
         "warmup": 0.5 if args.quick else 1}
    work = hb.scratch_dir("hsmd-store-bench-", "/tmp")
    lg = hb.Loadgen(os.path.join(build, "bench", "loadgen"), work)
    res = {"machine": hb.machine_info(build), "params": d, "nodes": {}}
    pg_dir, uri = pg_start()
    nodes = {}
    try:
        for label, store in (("sqlite", None), ("postgresql", uri)):
            data, shares, ops = ceremony(build, work, label, store)
            node = ProdNode(build, data, store, shares, os.path.join(work, f"{label}.log")).start()
            creds = crypto_user(build, node, ops)
            nodes[label] = (node, creds, ops_for(kms_of(node, creds), work, label))
        hb.wait_quiet(args.wait_quiet)
        t0 = time.monotonic()
        # Operation by operation, both nodes back to back, so the machine's drift hits both.
        for i in range(len(nodes["sqlite"][2])):
            for label, (node, creds, ops) in nodes.items():
                op, kw = ops[i]
                if label == "postgresql":
                    # PostgreSQL's own work is part of this node's: not noise to retry for.
                    kw = dict(kw, max_other=1.5, max_other_disk_mb_s=500)
                closed = lg.run_quiet(node, op, duration=d["api"], warmup=d["warmup"],
                                      creds=creds, **kw)
                rate = max(1, round(closed["ops_per_s"] / 2))
                at = lg.run_quiet(node, op, rate=rate, duration=d["rate"], warmup=d["warmup"],
                                  creds=creds, **kw)
                res["nodes"].setdefault(label, {})[op.ident] = {
                    "title": op.title, "closed": closed, "half": at}
                hb.log(f"{label} {op.ident}: {closed['ops_per_s']:.0f} ops/s; at {rate}/s "
                       f"p50 {at['p50_us']:.0f} us p99 {at['p99_us']:.0f} us")
        res["elapsed_s"] = round(time.monotonic() - t0)
    finally:
        for node, _, _ in nodes.values():
            node.stop()
        subprocess.run([PG_SERVER, "stop", pg_dir], capture_output=True)
    os.makedirs(args.out, exist_ok=True)
    write(res, args.out)
    hb.remove(work)


def write(res, out):
    m = res["machine"]
    lines = ["# One node on SQLite, one on PostgreSQL (`make bench-store`)", "",
             f"{m.get('cpu', '')}, {m.get('cores', '')} cores ({m.get('features', '?')}), "
             f"{m.get('openssl', '')}; "
             "client, hsmd and PostgreSQL share the cores. Peak: closed loop, 32 connections; "
             "latency at half of each node's own peak.", "",
             f"What the host charges: {hb.host_cost_text(m) or 'not measured'}.", "",
             "| operation | SQLite ops/s | PostgreSQL ops/s | PG / SQLite | SQLite p50 / p99 µs "
             "| PostgreSQL p50 / p99 µs |", "|---|---:|---:|---:|---:|---:|"]
    sq, pg = res["nodes"]["sqlite"], res["nodes"]["postgresql"]
    for ident, s in sq.items():
        p = pg[ident]
        a, b = s["closed"]["ops_per_s"], p["closed"]["ops_per_s"]
        lines.append(f"| {s['title']} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | "
                     f"{s['half']['p50_us']:,.0f} / {s['half']['p99_us']:,.0f} | "
                     f"{p['half']['p50_us']:,.0f} / {p['half']['p99_us']:,.0f} |")
    with open(os.path.join(out, "store.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "store.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["store", "operation", "ops_per_s", "rate", "p50_us", "p99_us", "p999_us"])
        for label, runs in res["nodes"].items():
            for ident, r in runs.items():
                h = r["half"]
                w.writerow([label, ident, round(r["closed"]["ops_per_s"]), h.get("rate", ""),
                            round(h["p50_us"]), round(h["p99_us"]), round(h.get("p999_us", 0))])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
