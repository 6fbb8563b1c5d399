"""Requests refused before anyone was authenticated: records of their own at a
bounded rate per source (refusal_record_rate), RefusalsSummarized events
counting the rest, so a flood of unsigned requests cannot fill the audit disk,
while every signed request keeps its own record."""
import glob
import http.client
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from conftest import DEV_AKID, HSMCTL, signed_call, signed_request, start_dev
from helpers import admin, audit_records, audit_records_until, metric, raw_exchange, request_id

TARGET = "TrentService.ListKeys"
UNKNOWN_AKID = "AKIDNOBODYHASTHIS01"


def flood(server, n, akid=None):
    """n unsigned ListKeys on one keep-alive connection (with a made-up Authorization
    naming akid when given); returns [(status, body, request id)]."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET}
    if akid is not None:
        headers["X-Amz-Date"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={akid}/{headers['X-Amz-Date'][:8]}/us-east-1/kms/"
            "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
            "Signature=" + "0" * 64)
    out = []
    for _ in range(n):
        conn.request("POST", "/", body=b"{}", headers=headers)
        r = conn.getresponse()
        out.append((r.status, r.read(), r.getheader("x-amzn-RequestId")))
    conn.close()
    return out


def refused_records(recs):
    return [r for r in recs if r["type"] == "request" and r["outcome"] == "denied" and
            "principal" not in r]


def summaries(recs):
    return [r for r in recs if r["type"] == "event" and r.get("op") == "RefusalsSummarized"]


def kinds(summary):
    return {k: int(v) for k, v in (p.split("=") for p in summary["extra"]["kinds"].split(","))}


def verified_report(data):
    """`hsmctl audit report --json` of the node's trail, once `audit verify` passed it."""
    files = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))
    v = subprocess.run([HSMCTL, "audit", "verify"] + files, capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    p = subprocess.run([HSMCTL, "audit", "report", "--json"] + files, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def report_text(data):
    """`hsmctl audit report` of the node's trail, as text."""
    files = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))
    p = subprocess.run([HSMCTL, "audit", "report"] + files, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_a_flood_of_unsigned_requests_is_summarized_not_recorded_one_by_one():
    tmp = tempfile.mkdtemp(prefix="hsmd-refusals-")
    data = os.path.join(tmp, "data")
    # Two records a second from one source, twenty at once.
    server = start_dev(["--data-dir", data, "--refusal-record-rate", "2"])
    try:
        start = time.time()
        unsigned = flood(server, 300)
        unknown = flood(server, 60, akid=UNKNOWN_AKID)
        # Summarized or not, every refusal is the same answer.
        assert {(st, body) for st, body, _ in unsigned} == {unsigned[0][:2]}
        assert unsigned[0][0] == 400
        assert json.loads(unsigned[0][1])["__type"] == "MissingAuthenticationTokenException"
        assert {(st, json.loads(body)["__type"]) for st, body, _ in unknown} == \
            {(400, "UnrecognizedClientException")}
        assert len({rid for _, _, rid in unsigned + unknown}) == 360
        # A signed request from the same source is served, and recorded on its own.
        ok = signed_request(server, TARGET, {})
        assert ok.status_code == 200
        elapsed = time.time() - start
        # A summary is written once its first refusal is ten seconds old, while hsmd runs.
        written = audit_records_until(data, lambda r: r.get("op") == "RefusalsSummarized",
                                      timeout=20)
        assert written and written[0]["source"] == "127.0.0.1", written
        own_by_now = len(refused_records(audit_records(data)))
        summarized = metric(server, "hsmd_refusals_summarized_total")
        assert summarized == 360 - own_by_now
    finally:
        server.stop()  # what is still counted is written at the stop
    recs = audit_records(data)
    rids = {r.get("request_id") for r in recs}
    assert request_id(ok) in rids
    own = refused_records(recs)
    # Twenty at once, then two a second (the flood's own duration and a second of slack).
    assert 20 <= len(own) <= 20 + 2 * (elapsed + 1), (len(own), elapsed)
    assert len(own) == own_by_now  # nothing refused after the flood
    sums = summaries(recs)
    assert sums and all(s["source"] == "127.0.0.1" for s in sums)
    assert all(s["outcome"] == "denied" and "principal" not in s for s in sums)
    total = sum(int(s["extra"]["count"]) for s in sums)
    assert total + len(own) == 360
    by_kind = {}
    for s in sums:
        for k, v in kinds(s).items():
            by_kind[k] = by_kind.get(k, 0) + v
    own_kinds = {}
    for r in own:
        own_kinds[r["error"]] = own_kinds.get(r["error"], 0) + 1
    assert {k: by_kind.get(k, 0) + own_kinds.get(k, 0) for k in set(by_kind) | set(own_kinds)} \
        == {"MissingAuthenticationTokenException": 300, "UnrecognizedClientException": 60}
    assert any(UNKNOWN_AKID in s["extra"].get("access_key_ids", "") for s in sums)
    assert all(DEV_AKID not in s["extra"].get("access_key_ids", "") for s in sums)
    assert all(s["extra"]["first"] <= s["extra"]["last"] for s in sums)
    # The trail still verifies, and the report counts all 360 failed authentications.
    report = verified_report(data)
    failed = report["failed_authentications"]
    assert sum(c["total"] for c in failed.values()) == 360, failed
    assert failed["(summarized) from 127.0.0.1"]["total"] == total
    assert {k: sum(c.get(k, 0) for c in failed.values())
            for k in ("MissingAuthenticationTokenException", "UnrecognizedClientException")} \
        == {"MissingAuthenticationTokenException": 300, "UnrecognizedClientException": 60}
    assert report["refusals_before_authentication"] == {}, report  # all were authentications
    # The principals table counts the refusals a summary stands for, not one per event,
    # under the access key ids they claimed when they claimed any.
    principals = report["principals"]
    summed = {k: v for k, v in principals.items() if "summarized" in k}
    assert sum(v["total"] for v in summed.values()) == total, principals
    assert sum(v["denied"] for v in summed.values()) == total, principals
    claimed = [k for k in summed if k.startswith("(not authenticated, summarized) ")]
    assert any(UNKNOWN_AKID in k for k in claimed), principals
    assert sum(v["total"] for v in principals.values()) == \
        len(recs) - len(sums) + total - sum(r["type"] == "checkpoint" for r in recs), principals
    shutil.rmtree(tmp, ignore_errors=True)


def test_no_bound_when_the_rate_is_zero():
    tmp = tempfile.mkdtemp(prefix="hsmd-refusals-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data, "--refusal-record-rate", "0"])
    try:
        flood(server, 150)
        assert metric(server, "hsmd_refusals_summarized_total") == 0
    finally:
        server.stop()
    recs = audit_records(data)
    assert len(refused_records(recs)) == 150
    assert summaries(recs) == []
    shutil.rmtree(tmp, ignore_errors=True)


def test_made_up_access_key_ids_cost_no_store_lookup_past_a_rate():
    """A request naming an access key id that no active key has is looked up in the store
    at a bounded rate (the id may have been made on another node within the last second);
    past it, the node's list of ids, read every second, refuses it with the same answer.
    A key made meanwhile works once the list has it."""
    tmp = tempfile.mkdtemp(prefix="hsmd-akids-")
    server = start_dev(["--data-dir", os.path.join(tmp, "data"), "--refusal-record-rate", "0"])
    try:
        time.sleep(1.2)  # the list, read at start, is fresh; the lookups' bucket is full
        start = time.time()

        def made_up(i):
            return signed_call(server, TARGET, {}, akid=f"AKIDMADEUP{i:010d}",
                               secret="made-up-secret-made-up-secret-0000000000")
        # From eight threads: far above the lookup rate even on a loaded machine.
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for st, body in pool.map(made_up, range(200)):
                assert (st, body["__type"]) == (400, "UnrecognizedClientException"), body
        elapsed = time.time() - start
        spared = metric(server, "hsmd_auth_unknown_keys_unlooked_total")
        # 40 lookups at once, then 20 a second (and a second of slack).
        assert spared >= 200 - (40 + 20 * (elapsed + 1)) and spared > 0, (spared, elapsed)
        # Ids no key can have (over 20 characters) are never looked up.
        st, body = signed_call(server, TARGET, {}, akid="A" * 40, secret="x" * 40)
        assert body["__type"] == "UnrecognizedClientException"
        assert metric(server, "hsmd_auth_unknown_keys_unlooked_total") == spared + 1
        # The dev key, in the list, is never refused.  A key made on this node works at
        # its first use, the lookups' bucket drained just before (it waited for the list's
        # next read, up to a second, refused as unknown).
        assert signed_call(server, TARGET, {})[0] == 200
        admin(server, "CreateUser", {"UserName": "late", "Roles": ["crypto-user"]})
        for attempt in range(3):
            # The flusher reads the list again about a second after CreateUser (or the
            # CreateAccessKey below) marked it stale; until then every id is looked up.
            # Made-up ids are spared again once it has: wait for that, with a deadline.
            deadline = time.monotonic() + 10
            for n in itertools.count(1000 + attempt * 10000, 100):
                before = metric(server, "hsmd_auth_unknown_keys_unlooked_total")
                with concurrent.futures.ThreadPoolExecutor(8) as pool:
                    list(pool.map(made_up, range(n, n + 80)))
                if metric(server, "hsmd_auth_unknown_keys_unlooked_total") > before:
                    break
                assert time.monotonic() < deadline, "the list of access key ids stayed stale"
                time.sleep(0.2)
            k = admin(server, "CreateAccessKey", {"UserName": "late"})
            st, body = signed_call(server, TARGET, {}, akid=k["AccessKeyId"],
                                   secret=k["SecretAccessKey"])
            assert st == 200, (attempt, body)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_attempts_on_a_real_key_stay_on_the_trail_past_the_rate():
    """Wrong signatures for a key the store holds count toward its user's lockout: each gets
    its own record whatever the source's rate, the one that locks the user is followed by a
    UserLocked event, and later refusals naming the key are summarized with it named first."""
    tmp = tempfile.mkdtemp(prefix="hsmd-refusals-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data, "--refusal-record-rate", "1"])  # ten at once
    try:
        admin(server, "CreateUser", {"UserName": "victim", "Roles": ["crypto-user"]})
        k = admin(server, "CreateAccessKey", {"UserName": "victim"})
        akid, secret = k["AccessKeyId"], k["SecretAccessKey"]
        flood(server, 30)  # the source's burst is gone
        for i in range(8):
            flood(server, 1, akid=f"AKIDMADEUP{i:010d}")  # made-up ids fill the summary
        for _ in range(6):
            st, body = signed_call(server, TARGET, {}, akid=akid, secret="w" * 40)
            assert body["__type"] == "InvalidSignatureException", body
        st, body = signed_call(server, TARGET, {}, akid=akid, secret=secret)
        assert body["__type"] == "AccessDeniedException" and "locked" in body["message"], body
    finally:
        server.stop()
    recs = audit_records(data)
    attempts = [r for r in recs if r.get("type") == "request" and r.get("access_key") == akid
                and r.get("error") == "InvalidSignatureException"]
    assert len(attempts) == 5, attempts  # the five that counted; the sixth found it locked
    locked = [r for r in recs if r.get("op") == "UserLocked"]
    assert len(locked) == 1 and locked[0]["extra"] == {"target_user": "victim",
                                                        "target_access_key_id": akid}, locked
    sums = summaries(recs)
    assert any(akid in s["extra"].get("known_access_key_ids", "") for s in sums), sums
    assert all(akid not in s["extra"].get("access_key_ids", "") for s in sums)
    shutil.rmtree(tmp, ignore_errors=True)


def test_refusals_of_a_sealed_node_name_the_access_key_claimed():
    """A sealed node checks no signature (the secrets are sealed too), but a refusal's
    record names the access key id its Authorization claims, well-formed, as claimed (an
    access key, no principal), as a failed signature's does; past the rate the summary
    counts it among the ids claimed, and the report under "(not authenticated)"."""
    tmp = tempfile.mkdtemp(prefix="hsmd-refusals-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data, "--refusal-record-rate", "1"])  # ten at once
    try:
        admin(server, "Seal")
        r = signed_request(server, TARGET, {})
        assert (r.status_code, r.json()["__type"]) == (503, "ServiceUnavailableException")
        assert "sealed" in r.json()["message"], r.text
        signed = request_id(r)
        # An id that is not one (a character no id has) is not named.
        bad = flood(server, 1, akid="AKID*NOT*AN*ID")[0]
        assert bad[0] == 503 and b"sealed" in bad[1], bad
        unsigned = flood(server, 1)[0]
        flood(server, 20, akid=UNKNOWN_AKID)  # past the source's burst
    finally:
        server.stop()
    recs = audit_records(data)
    by_id = {x.get("request_id"): x for x in recs}
    rec = by_id[signed]
    assert rec["error"] == "ServiceUnavailableException", rec
    assert rec["access_key"] == DEV_AKID and "principal" not in rec, rec
    for rid in (bad[2], unsigned[2]):
        assert "access_key" not in by_id[rid] and "principal" not in by_id[rid], by_id[rid]
    sums = summaries(recs)
    assert any(UNKNOWN_AKID in s["extra"].get("access_key_ids", "") for s in sums), sums
    p = subprocess.run([HSMCTL, "audit", "report", "--json", os.path.join(data, "audit")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    principals = report["principals"]
    assert principals[f"(not authenticated) {DEV_AKID}"]["total"] == 1, principals
    # No signature was checked, so none failed: all 23 are refusals before authentication.
    assert report["failed_authentications"] == {}, report
    refused = report["refusals_before_authentication"]
    assert refused[f"{DEV_AKID} from 127.0.0.1"] == \
        {"total": 1, "ServiceUnavailableException": 1}, refused
    assert sum(c["total"] for c in refused.values()) == 23, refused
    assert all(set(c) == {"total", "ServiceUnavailableException"} for c in refused.values())
    assert principals[f"(not authenticated) {UNKNOWN_AKID}"]["total"] >= 1, principals
    shutil.rmtree(tmp, ignore_errors=True)


SECRET_MARK = "hsmdsecretmarkQ7x"  # stands for what a client might put in a request


def raw(port, data):
    """Sends bytes on a connection of their own; returns (status, headers, body)."""
    head, _, body = raw_exchange(port, data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, body


# Requests hsmd's HTTP server or router answers before reading any API call, and what
# their records must say of method and path (None: not read).
HTTP_REFUSALS = [
    (b"GARBAGE " + SECRET_MARK.encode() + b"\r\n\r\n", 400, None, None),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431, None, None),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413, None, None),
    (b"GET / HTTP/2.5\r\nHost: x\r\n\r\n", 505, None, None),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
     400, None, None),
    (b"BREW /" + SECRET_MARK.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n", 501, "BREW",
     "/" + SECRET_MARK),
    (b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "PUT", "/"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "GET", "/"),
    (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "POST", "/metrics"),
    (b"GET /no%20such?token=" + SECRET_MARK.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404,
     "GET", "/no?20such"),
    (b"OPTIONS /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404, "OPTIONS", "/nope"),
    (b"GET /" + b"p" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404, "GET",
     "/" + "p" * 63 + "...[truncated]"),
]


def test_requests_refused_before_they_are_read_get_records():
    """Malformed, oversized and unserved requests are refused by the HTTP server or
    the router before any authentication: each still gets a record (HttpRequest),
    under the request id its answer carries, saying the status, the error and the
    method and path it named, cut to plain characters, and nothing else the client
    sent; the trail verifies and the report files them as refusals."""
    tmp = tempfile.mkdtemp(prefix="hsmd-refusals-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data])
    answers = []
    counted = 'hsmd_requests_total{operation="None",outcome="client_error"} '
    try:
        before = [line for line in server.get("/metrics")[1].decode().splitlines()
                  if line.startswith(counted)]
        for req, status, _, _ in HTTP_REFUSALS:
            st, headers, body = raw(server.port, req)
            assert st == status, (req[:40], st, body)
            answers.append((headers["x-amzn-requestid"], json.loads(body)["__type"]))
        # Each counted once in /metrics, as a client's error of no operation.
        after = [line for line in server.get("/metrics")[1].decode().splitlines()
                 if line.startswith(counted)]
        def n(lines):  # a series appears once it is above 0
            return sum(int(x[len(counted):]) for x in lines)
        assert (n(before), n(after)) == (0, len(HTTP_REFUSALS)), (before, after)
        # The health, readiness, metrics and JWK Set reads stay unrecorded.
        for path in ("/healthz", "/readyz", "/metrics", "/.well-known/jwks.json"):
            assert server.get(path)[0] == 200
        want = {rid for rid, _ in answers}
        got = audit_records_until(data, lambda r: r.get("request_id") in want, n=len(want))
    finally:
        server.stop()
    by_id = {r["request_id"]: r for r in got}
    assert set(by_id) == want
    for (rid, typ), (_, status, method, path) in zip(answers, HTTP_REFUSALS):
        r = by_id[rid]
        assert r["type"] == "request" and r["op"] == "HttpRequest", r
        assert r["outcome"] == "denied" and r["error"] == typ, r
        assert r["source"].startswith("127.0.0.1:") and "principal" not in r, r
        assert r["extra"]["http_status"] == str(status), r
        assert r["extra"]["reason"], r
        assert r["extra"].get("method") == method and r["extra"].get("path") == path, r
    recs = audit_records(data)
    http = [r for r in recs if r.get("op") == "HttpRequest"]
    assert len(http) == len(HTTP_REFUSALS), http  # the reads above made none
    trail = b"".join(open(f, "rb").read()
                     for f in glob.glob(os.path.join(data, "audit", "*.jsonl")))
    assert trail.count(SECRET_MARK.encode()) == 1  # the 501's path, which names it
    report = verified_report(data)
    assert report["operations"]["HttpRequest"]["denied"] == len(HTTP_REFUSALS), report
    assert report["failed_authentications"] == {}, report  # not authentications
    # By source, with the errors they got.
    by_error = {"total": len(answers)}
    for _, typ in answers:
        by_error[typ] = by_error.get(typ, 0) + 1
    assert len(by_error) >= 3, by_error  # the table shows errors of several kinds
    assert report["refusals_before_authentication"] == \
        {"(no access key) from 127.0.0.1": by_error}, report
    text = report_text(data)
    section = text.split("\nrefusals before authentication (")[1].split("\nchanges (")[0]
    assert section.startswith("1 sources)\n"), section
    row = section.splitlines()[1]
    assert re.match(rf"^  \(no access key\) from 127\.0\.0\.1 +{len(answers)}  ", row), row
    assert sorted(row.split(f" {len(answers)}  ", 1)[1].split(", ")) == \
        sorted(f"{k} {v}" for k, v in by_error.items() if k != "total"), row
    shutil.rmtree(tmp, ignore_errors=True)


def test_a_flood_of_malformed_requests_is_summarized():
    """Malformed requests share the bound of the other refusals nobody authenticated:
    past the source's rate they are counted in its RefusalsSummarized event, by kind."""
    tmp = tempfile.mkdtemp(prefix="hsmd-refusals-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data, "--refusal-record-rate", "2"])
    try:
        start = time.time()
        for _ in range(60):
            assert raw(server.port, b"GARBAGE\r\n\r\n")[0] == 400
        for _ in range(40):
            assert raw(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 404
        elapsed = time.time() - start
        summarized = metric(server, "hsmd_refusals_summarized_total")
    finally:
        server.stop()
    recs = audit_records(data)
    own = [r for r in recs if r.get("op") == "HttpRequest"]
    assert 20 <= len(own) <= 20 + 2 * (elapsed + 1), (len(own), elapsed)
    sums = summaries(recs)
    assert summarized == 100 - len(own) == sum(int(s["extra"]["count"]) for s in sums)
    by_kind = {}
    for s in sums:
        for k, v in kinds(s).items():
            by_kind[k] = by_kind.get(k, 0) + v
    for r in own:
        by_kind[r["error"]] = by_kind.get(r["error"], 0) + 1
    assert by_kind == {"ValidationException": 60, "NotFoundException": 40}, by_kind
    # The report counts each of them once, those recorded one by one and those summarized.
    report = verified_report(data)
    refused = report["refusals_before_authentication"]
    assert set(refused) <= {"(no access key) from 127.0.0.1", "(summarized) from 127.0.0.1"}
    assert refused["(no access key) from 127.0.0.1"]["total"] == len(own), refused
    assert {k: sum(c.get(k, 0) for c in refused.values())
            for k in ("total", "ValidationException", "NotFoundException")} == \
        {"total": 100, "ValidationException": 60, "NotFoundException": 40}, refused
    assert report["failed_authentications"] == {}, report
    shutil.rmtree(tmp, ignore_errors=True)
