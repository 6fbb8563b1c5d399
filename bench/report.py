"""Writes results.md, results.csv and results.png from a run.py result."""
import csv
import json
import os
import subprocess
import tempfile

import hsmbench as hb

TITLES = {
    "sign-rsa2048": "Sign RSA-2048", "sign-rsa4096": "Sign RSA-4096",
    "sign-p256": "Sign ECDSA P-256", "sign-ed25519": "Sign Ed25519",
    "verify-rsa2048": "Verify RSA-2048", "encrypt-64": "Encrypt 64 B",
    "encrypt-4k": "Encrypt 4 KiB", "decrypt-64": "Decrypt 64 B", "decrypt-4k": "Decrypt 4 KiB",
    "gdk": "GenerateDataKey", "mac": "GenerateMac",
}
ORDER = list(TITLES)


def us(v):
    if v is None:
        return "-"
    if v < 10:
        return f"{v:.2f} µs"
    return f"{v:.0f} µs" if v < 1000 else f"{v / 1000:.2f} ms"


def ratio(a, b):
    return a / b if a and b else None


def fmt_ratio(r, pct=False):
    if r is None:
        return "-"
    if pct:
        return f"{100 * r:.1f} %" if r < 0.1 else f"{100 * r:.0f} %"
    return f"{r:.2f}x"


def rows(res):
    """One row per (operation, implementation)."""
    out = []
    for op in ORDER:
        lim = res["limit"].get(op, {}).get("ops_per_s")
        sh = res["softhsm"].get(op, {}).get("ops_per_s")

        def add(impl, r, mode, transport):
            if not r:
                return
            out.append({
                "op": op, "operation": TITLES[op], "impl": impl, "transport": transport,
                "mode": mode, "rate": r.get("rate", 0) or "",
                "ops_per_s": round(r["ops_per_s"], 1), "p50_us": r.get("p50_us"),
                "p99_us": r.get("p99_us"), "p999_us": r.get("p999_us"),
                "requests": r.get("ok", r.get("ops")), "errors": r.get("errors", 0),
                "vs_limit": ratio(r["ops_per_s"], lim) if impl == "hsmd" and mode == "closed" else None,
                "vs_softhsm": ratio(r["ops_per_s"], sh) if impl == "hsmd" and mode == "closed" else None,
                "server_cores": r.get("server_cpu_cores"), "client_cores": r.get("client_cpu_cores"),
                "other_cores": r.get("other_cpu_cores"), "other_disk_mb_s": r.get("other_disk_mb_s"),
                "threads": r.get("threads"),
                "connections": r.get("connections"),
                "slots": r.get("slots"), "slow_slots": r.get("slow_slots"),
                "stalls": r.get("stalls"), "n_stalls": r.get("n_stalls"),
                "audit_syncs": r.get("audit_syncs"),
                "audit_syncs_over_50ms": r.get("audit_syncs_over_50ms"),
                "audit_held_ms": r.get("audit_held_ms"),
            })
        add("limit", res["limit"].get(op), "closed", "in-process")
        add("softhsm", res["softhsm"].get(op), "closed", "in-process")
        for key, transport in (("hsmd", "http"), ("tls", "https")):
            x = res[key].get(op, {})
            add("hsmd", x.get("closed"), "closed", transport)
            add("hsmd", x.get("rate"), "rate", transport)
    return out


IMPL_NAMES = {"limit": "limit (OpenSSL)", "softhsm": "SoftHSMv2 (PKCS#11)"}


def impl_label(r):
    if r["impl"] != "hsmd":
        return IMPL_NAMES[r["impl"]]
    t = "HTTPS" if r["transport"] == "https" else "HTTP"
    return f"hsmd {t}, peak" if r["mode"] == "closed" else f"hsmd {t}, {r['rate']}/s"


def cpu_split(r):
    if r["server_cores"] is None:
        return f"{r['threads']} threads; other {r['other_cores'] or 0:.2f}"
    disk = f"; others wrote {r['other_disk_mb_s']:.0f} MB/s" if r.get("other_disk_mb_s") else ""
    return f"{r['server_cores']:.2f} / {r['client_cores']:.2f} / {r['other_cores']:.2f}{disk}"


def find(rs, op, impl, transport, mode):
    for r in rs:
        if (r["op"], r["impl"], r["transport"], r["mode"]) == (op, impl, transport, mode):
            return r
    return None


def audit_ratio(res):
    """Median over the alternating rounds of audit-on / records-unwritten throughput."""
    rounds = res.get("audit", {}).get("rounds") or []
    if not rounds:
        return None, []
    ratios = sorted(r["ratio"] for r in rounds)
    mid = len(ratios) // 2
    med = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return med, rounds


def targets(res, rs):
    """(target, measured, met) for each goal that this run measures."""
    out = []

    def closed(op):
        return find(rs, op, "hsmd", "http", "closed")

    for op, lim_goal, sh_goal in (("sign-rsa2048", 0.85, 1.7), ("sign-p256", 0.50, 1.5)):
        r = closed(op)
        if r:
            out.append((f"{TITLES[op]} >= {lim_goal:.0%} of the limit", fmt_ratio(r["vs_limit"], True),
                        r["vs_limit"] is not None and r["vs_limit"] >= lim_goal))
            out.append((f"{TITLES[op]} >= {sh_goal}x SoftHSMv2", fmt_ratio(r["vs_softhsm"]),
                        r["vs_softhsm"] is not None and r["vs_softhsm"] >= sh_goal))
    r = closed("encrypt-64")
    if r:
        out.append(("Encrypt 64 B >= 50,000 req/s (keep-alive, audit on)",
                    f"{r['ops_per_s']:,.0f} req/s", r["ops_per_s"] >= 50000))
    med, rounds = audit_ratio(res)
    if med is not None:
        out.append(("Encrypt 64 B with audit on >= 90 % of it with records unwritten "
                    f"(median of {len(rounds)} alternating rounds)", f"{med:.1%}", med >= 0.90))
    for op in ("encrypt-64", "sign-rsa2048"):
        for transport in ("http", "https"):
            r = find(rs, op, "hsmd", transport, "rate")
            if r:
                out.append((f"{TITLES[op]} p99 <= 2 ms at half of peak ({transport.upper()})",
                            f"{us(r['p99_us'])} at {r['rate']}/s", r["p99_us"] <= 2000))
    return out


def write_csv(res, rs, path):
    m = res["machine"]
    fields = ["op", "operation", "impl", "transport", "mode", "rate", "ops_per_s", "p50_us",
              "p99_us", "p999_us", "requests", "errors", "vs_limit", "vs_softhsm", "server_cores",
              "client_cores", "other_cores", "other_disk_mb_s", "threads", "connections"]
    with open(path, "w", newline="") as f:
        f.write(f"# cpu={m['cpu']}; features={m.get('features', '?')}; cores={m['cores']}; "
                f"kernel={m['kernel']}; "
                f"openssl={m['openssl']}; date={m['date']}; "
                f"host_costs={json.dumps(m.get('host_costs') or {})}\n")
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rs:
            w.writerow({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
    audit = res.get("audit", {})
    if audit:
        with open(path, "a", newline="") as f:
            for name, x in audit.items():
                if name == "rounds":  # alternating rounds: closed loop, throughput only
                    for i, rnd in enumerate(x, 1):
                        for variant in ("disk", "unwritten"):
                            f.write(f"encrypt-64,Encrypt 64 B (audit round {i} {variant}),hsmd,"
                                    f"http,closed,,{rnd[variant]['ops_per_s']:.1f}"
                                    + "," * 13 + "\n")
                    continue
                for mode in ("closed", "rate"):
                    r = x[mode]
                    f.write(f"encrypt-64,Encrypt 64 B (audit {name}),hsmd,http,{mode},"
                            f"{r['rate'] or ''},{r['ops_per_s']:.1f},{r['p50_us']},{r['p99_us']},"
                            f"{r['p999_us']},{r['ok']},{r['errors']},,,{r['server_cpu_cores']},"
                            f"{r['client_cpu_cores']},{r['other_cpu_cores']},"
                            f"{r.get('other_disk_mb_s', '')},1,{r['connections']}\n")


def write_plot(rs, path):
    series = [("limit", "in-process", "limit (OpenSSL)"), ("softhsm", "in-process", "SoftHSMv2"),
              ("hsmd", "http", "hsmd HTTP"), ("hsmd", "https", "hsmd HTTPS")]
    with tempfile.NamedTemporaryFile("w", suffix=".dat", delete=False) as f:
        data = f.name
        for op in ORDER:
            vals = []
            for impl, transport, _ in series:
                r = find(rs, op, impl, transport, "closed")
                vals.append(f"{r['ops_per_s']:.1f}" if r else "NaN")
            if any(v != "NaN" for v in vals):
                f.write(f"\"{TITLES[op]}\" " + " ".join(vals) + "\n")
    plot = (f"set terminal pngcairo size 1400,650 font ',10'\nset output '{path}'\n"
            "set title 'Operations per second on this machine (log scale; closed loop, all cores)'\n"
            "set style data histograms\nset style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\nset logscale y\nset yrange [10:1e8]\n"
            "set ylabel 'ops/s'\nset grid ytics\nset xtics rotate by -25\n"
            "set key top left horizontal\n"
            f"plot '{data}' using 2:xtic(1) title '{series[0][2]}', '' using 3 title '{series[1][2]}',"
            f" '' using 4 title '{series[2][2]}', '' using 5 title '{series[3][2]}'\n")
    try:
        subprocess.run(["gnuplot"], input=plot, text=True, check=True, capture_output=True)
    finally:
        os.unlink(data)


def md_table(rs):
    lines = ["| Operation | Implementation | ops/s | p50 | p99 | p99.9 | vs limit | vs SoftHSMv2 "
             "| CPU server / client / other |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rs:
        lines.append(f"| {r['operation']} | {impl_label(r)} | {r['ops_per_s']:,.0f} | "
                     f"{us(r['p50_us'])} | {us(r['p99_us'])} | {us(r['p999_us'])} | "
                     f"{fmt_ratio(r['vs_limit'], True)} | {fmt_ratio(r['vs_softhsm'])} | "
                     f"{cpu_split(r)} |")
    return lines


def cpu_per_request(r):
    """hsmd's CPU time per request at that load, in microseconds."""
    if not r or not r.get("server_cores") or not r["ops_per_s"]:
        return "-"
    return us(r["server_cores"] * 1e6 / r["ops_per_s"])


def summary_table(rs):
    """One row per operation: the README's table."""
    lines = ["| Operation | limit ops/s | SoftHSMv2 ops/s | hsmd HTTP ops/s | vs limit | "
             "vs SoftHSMv2 | hsmd CPU per request | p50 / p99 / p99.9 at half peak | "
             "hsmd HTTPS ops/s |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for op in ORDER:
        lim, sh = find(rs, op, "limit", "in-process", "closed"), find(rs, op, "softhsm", "in-process", "closed")
        h, hr = find(rs, op, "hsmd", "http", "closed"), find(rs, op, "hsmd", "http", "rate")
        t = find(rs, op, "hsmd", "https", "closed")
        if not h:
            continue
        lat = f"{us(hr['p50_us'])} / {us(hr['p99_us'])} / {us(hr['p999_us'])}" if hr else "-"
        lines.append(f"| {TITLES[op]} | {lim['ops_per_s']:,.0f} | {sh['ops_per_s']:,.0f} | "
                     f"{h['ops_per_s']:,.0f} | {fmt_ratio(h['vs_limit'], True)} | "
                     f"{fmt_ratio(h['vs_softhsm'])} | {cpu_per_request(h)} | {lat} | "
                     f"{t['ops_per_s']:,.0f} |" if lim and sh and t else
                     f"| {TITLES[op]} | - | - | {h['ops_per_s']:,.0f} | - | - | "
                     f"{cpu_per_request(h)} | {lat} | - |")
    return lines


def tails_table(rs):
    """Where each constant-rate run's tail came from (empty before loadgen kept slots)."""
    runs = [r for r in rs if r["mode"] == "rate" and r.get("slots")]
    if not runs:
        return []
    lines = ["", "## Where the tails come from", "",
             "Each constant-rate run cut into 50 ms slots of scheduled send time.  A tail spread "
             "over many slots is queueing; one in a few adjacent slots is a stall (hsmd, or the "
             "host, stopped for that long).  The audit columns are hsmd's own counters over the "
             "run: syncs of the audit file that took over 50 ms (the lag bound) and the time "
             "responses waited on them.", "",
             "| Operation | transport | rate | p99 | slots with a request over 2 ms | "
             "stalls over 10 ms (worst) | audit syncs over 50 ms | responses held by the audit "
             "disk |", "|---|---|---:|---:|---:|---|---:|---:|"]
    for r in runs:
        worst = max((s[2] for s in r["stalls"]), default=None)
        stalls = f"{r['n_stalls']}" + (f" ({worst:.0f} ms)" if worst is not None else "")
        audit = (f"{r['audit_syncs_over_50ms']} of {r['audit_syncs']}"
                 if r.get("audit_syncs") is not None else "-")
        held = f"{r['audit_held_ms']:.0f} ms" if r.get("audit_held_ms") is not None else "-"
        lines.append(f"| {r['operation']} | {r['transport'].upper()} | {r['rate']:.0f}/s | "
                     f"{us(r['p99_us'])} | {r['slow_slots']} of {r['slots']} | {stalls} | "
                     f"{audit} | {held} |")
    return lines


def passes_text(d):
    """How each peak was taken (runs up to 2026-12-04b took one pass over HTTPS)."""
    def fastest(n):
        return "one pass counts" if n == 1 else \
            f"the fastest of {n} passes back to back counts, as for the limit"
    n, tls = d.get("passes", 1), d.get("tls_passes", 1)
    if n == tls:
        return f"over HTTP and HTTPS {fastest(n)}"
    return f"over HTTP {fastest(n)}; over HTTPS {fastest(tls)}"


def write_md(res, rs, path):
    m, d = res["machine"], res["params"]
    lines = [
        "# hsmd benchmark results", "",
        f"- Machine: {m['cpu']}, {m['cores']} cores (CPU features: {m.get('features', '?')}); "
        f"kernel {m['kernel']}; {m['openssl']}",
        f"- Date: {m['date']}; whole run {res.get('elapsed_s', '?')} s",
    ]
    if hb.host_cost_text(m):
        lines.append(f"- What the host charges: {hb.host_cost_text(m)}.  Every figure below "
                     "moves with these; compare runs whose host charged alike.")
    lines += [
        f"- limit and SoftHSMv2: {d['inproc']} s per operation, one thread per core; the fastest "
        "of three passes a few seconds apart counts (the host only ever takes time away).  SoftHSMv2 "
        "2.6 offers no CKM_ECDSA_SHA256, so its P-256 signature is C_Digest (SHA-256) then "
        "CKM_ECDSA, both in the token.",
        f"- hsmd: `hsmd --dev` (audit on, store and audit trail on disk), {d['conns']} keep-alive "
        f"connections from one loadgen thread, SigV4 on every request; {d['warmup']} s warm-up, "
        f"then {d['api']} s closed loop (peak; {passes_text(d)}) and "
        f"{d['rate']} s at a constant rate of half that "
        "peak (latency from the scheduled send time, so queueing is counted).",
        "- Client and server share the cores; nothing is pinned.  The last column is the CPU "
        "used during the run by hsmd / loadgen / everything else on the machine, in cores, and "
        "what other processes wrote to the disk meanwhile (it delays the audit trail's fsync).",
        "- Closed-loop latencies include queueing behind the other connections; the constant-rate "
        "rows are the latency figures to read.  hsmd's CPU per request (its CPU time over the "
        "run divided by the requests) varies less from run to run than its throughput, which "
        "moves by about 10 % between identical runs on this machine.", "",
        "## Summary", "", *summary_table(rs), "",
        "## Targets", "", "| Target | Measured | Met |", "|---|---|---|",
    ]
    for t, v, ok in targets(res, rs):
        lines.append(f"| {t} | {v} | {'yes' if ok else '**no**'} |")
    lines += tails_table(rs)
    audit = res.get("audit", {})
    if audit and res["hsmd"].get("encrypt-64"):
        base = res["hsmd"]["encrypt-64"]
        lines += ["", "## Audit cost (Encrypt 64 B, HTTP)", "",
                  "hsmd has no switch to turn auditing off.  Measured instead: the store and audit "
                  "trail on tmpfs (no disk I/O), and `hsmd-noaudit`, a benchmark-only build "
                  "(bench/noaudit.c) that acknowledges request records without queueing, "
                  "formatting or writing them: the difference to it is the whole cost of the "
                  "audit trail.", "",
                  "| Audit trail | peak ops/s | hsmd CPU per request at peak | "
                  "p50 / p99 / p99.9 at constant rate |",
                  "|---|---:|---:|---|"]
        for name, label, x in (("disk", "on disk (default)", base),
                               ("tmpfs", "on tmpfs", audit.get("tmpfs")),
                               ("unwritten", "records not written (bench build)", audit.get("unwritten"))):
            if not x:
                continue
            c, r = x["closed"], x.get("rate")
            lat = f"{us(r['p50_us'])} / {us(r['p99_us'])} / {us(r['p999_us'])} at {r['rate']:.0f}/s" if r else "-"
            cpu = us(c["server_cpu_cores"] * 1e6 / c["ops_per_s"])
            lines.append(f"| {label} | {c['ops_per_s']:,.0f} | {cpu} | {lat} |")
        med, rounds = audit_ratio(res)
        if rounds:
            lines += ["", "The cost target is measured in alternating closed-loop rounds on the "
                      "same store (hsmd, then the unwritten build, then hsmd again, ...), so the "
                      "machine's drift falls on both alike; the median ratio counts.", "",
                      "| Round | audit on disk | records unwritten | ratio | hsmd CPU per request "
                      "(on / unwritten) |", "|---:|---:|---:|---:|---|"]
            for i, r in enumerate(rounds, 1):
                lines.append(f"| {i} | {r['disk']['ops_per_s']:,.0f} | "
                             f"{r['unwritten']['ops_per_s']:,.0f} | {r['ratio']:.1%} | "
                             f"{us(r['disk']['cpu_us'])} / {us(r['unwritten']['cpu_us'])} |")
            lines.append(f"| median | | | **{med:.1%}** | |")
    lines += ["", "## All runs", "", *md_table(rs), "",
              "![ops/s per operation](results.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write(res, out):
    rs = rows(res)
    write_csv(res, rs, os.path.join(out, "results.csv"))
    write_md(res, rs, os.path.join(out, "results.md"))
    write_plot(rs, os.path.join(out, "results.png"))
