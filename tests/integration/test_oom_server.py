"""Running out of memory on the request path fails a request, never the node.

An HSM that stops must be unsealed again by a quorum of custodians, so an
allocation that fails while hsmd serves a request must cost that request
alone, and its answer must not tell the caller that the request was wrong.
The fuzz harness api_oom proves it for the API handlers in-process; this
test proves it for the whole server: TLS, HTTP parsing, SigV4
authentication, dispatch, the lane, the handlers, the audit record and the
answer.

hsmd runs with oomfault.c preloaded.  For each request below, the test first
counts the allocations that hsmd's HTTP workers and lane threads (or, in one
round, its audit writer) make for it, then sends it again with one of them
refused, for a spread of them.  After each refused run:
- hsmd is still running, and the same request, unrefused, gets its usual
  answer (nothing was left broken: a cache, a connection, a pool);
- the answer is the usual one, or 500 or 503, or the connection closed
  without one; never a client error (4xx) the request does not otherwise
  get;
- a run in which nothing was refused got the usual answer, so the refusal
  and nothing else made the difference;
- a 500 that says the request was carried out (its answer could not be
  written) has a record that says so;
- a change answered with an error is recorded as made: by its own record
  (the answer was lost after the commit) or, when that record could not be
  written, by the RequestRecordRecovered the outbox writes in its stead; and
  the changes made match the records, one for one.
At the end every success answered has its audit record, the trail verifies,
and hsmd stops cleanly.
"""
import glob
import os
import sqlite3
import subprocess
import time
import types
import uuid

import botocore.exceptions
import pytest
import requests

from conftest import (DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, client, signed_call, signed_request,
                      start_dev)
from helpers import Faults, Postgres, admin, audit_records, b64, make_pki, points, request_id

HERE = os.path.dirname(os.path.abspath(__file__))
JWKS_PATH = "/.well-known/jwks.json"
REQUEST_THREADS = "hsmd-http,hsmd-lane"  # the HTTP workers and the lane
AUDIT_THREAD = "hsmd-audit"
POINTS = 40  # refusals tried per request, spread over its allocations,
TAIL = 80  # and on every one of its last TAIL
# A key's first use makes thousands of allocations (OpenSSL's decoders): refusals spread
# over them; HSM_TEST_OOM_COLD_SPREAD=5000 refuses every one (minutes, not for every run).
SAMPLED = 10  # the spread over TLS and the audit writer, after the first request,
SAMPLED_TAIL = 50  # and the tail
COLD_SPREAD = int(os.environ.get("HSM_TEST_OOM_COLD_SPREAD", "150"))
RECOVERED = "RequestRecordRecovered"
ROUNDS = 3  # times the points are tried when no refusal showed

def ceremony(base, store):
    """A 2-of-2 key ceremony on a shared store: the officer's credentials and the shares."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    env["HSM_STORE"] = store
    shares = os.path.join(base, "shares")
    p = subprocess.run([HSMCTL, "init", "--data-dir", os.path.join(base, "ceremony"),
                        "--share-dir", shares, "--shares", "2", "--threshold", "2",
                        "--custodians", "alice,bob", "--admin", "ops"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    with open(os.path.join(shares, "ops.credentials")) as f:
        fields = dict(line.split(" = ", 1) for line in f.read().splitlines() if " = " in line)
    return (fields["aws_access_key_id"], fields["aws_secret_access_key"],
            [os.path.join(shares, c + ".share") for c in ("alice", "bob")], env)


@pytest.fixture(params=[("http", REQUEST_THREADS), ("https", REQUEST_THREADS),
                        ("http", AUDIT_THREAD), ("postgresql", REQUEST_THREADS)],
                ids=["http", "https", "audit-writer", "postgresql"])
def node(request, shim, tmp_path_factory):
    """A node under oomfault.c: a dev node over plain HTTP or over TLS (whose
    handshake, records and session tickets allocate too), refusing the request
    threads' allocations or the audit writer's (a record that cannot be
    written: the request is refused, or, when it changed the store, the change
    is recorded as recovered); or a node on PostgreSQL (libpq allocates on the
    request threads), unsealed after a 2-of-2 ceremony."""
    scheme, threads = request.param
    ctl = str(tmp_path_factory.mktemp("oomctl") / "ctl")
    faults = Faults(ctl, threads)
    env = {"LD_PRELOAD": shim, "HSM_TEST_OOM_CTL": ctl}
    # Whatever fails on the way (a node that does not start, a ceremony refused), the
    # PostgreSQL server and the node stop: no server outlives the test.
    pg = server = None
    try:
        if scheme == "postgresql":
            pg = Postgres()
            store = pg.database("oom")
            officer_akid, officer_secret, shares, ctl_env = ceremony(
                str(tmp_path_factory.mktemp("oomceremony")), store)
            env["HSM_STORE"] = store
            server = Hsmd(["--node-id", "oom"], env=env)
            for share in shares:
                p = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "unseal", share],
                                   capture_output=True, text=True, timeout=120, env=ctl_env)
                assert p.returncode == 0, p.stdout + p.stderr
            roles = ["crypto-officer", "crypto-user", "auditor"]
            admin(server, "CreateUser", {"UserName": "oom", "Roles": roles},
                  akid=officer_akid, secret=officer_secret)
            k = admin(server, "CreateAccessKey", {"UserName": "oom"}, akid=officer_akid,
                      secret=officer_secret)
            akid, secret = k["AccessKeyId"], k["SecretAccessKey"]
        else:
            env.update({"HSM_DEV_ACCESS_KEY_ID": DEV_AKID,
                        "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET})
            args, tls_ca = ["--dev"], None
            if scheme == "https":
                pki = make_pki(str(tmp_path_factory.mktemp("oompki")))
                args += ["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"]]
                tls_ca = pki["ca.pem"]
            server = Hsmd(args, env=env, tls_ca=tls_ca)
            akid, secret = DEV_AKID, DEV_SECRET
        # Over TLS every request begins with the same handshake, and the audit writer's work
        # is one record whatever the request: the request threads' own paths are spread over
        # in full on plain HTTP and PostgreSQL, and only sampled here.
        sampled = scheme == "https" or threads != REQUEST_THREADS
        # A key's first use is the same work on either store but for one read.
        cold_cap = SAMPLED if sampled else 40 if scheme == "postgresql" else None
        yield types.SimpleNamespace(server=server, faults=faults, akid=akid, secret=secret,
                                    sampled=sampled, cold_cap=cold_cap)
    finally:
        if server is not None:
            server.cleanup()
        faults.close()
        if pg is not None:
            pg.close()


UNKNOWN_AKID = "AKIAHSMDOOMUNKNOWN00"


def send(n, target, body, unknown=False):
    """(status, parsed body, request id) of one request on a new connection, or
    (None, None, None) when the connection closed without an answer.  A target
    that starts with "/" is a GET of that path, unsigned."""
    server = n.server
    try:
        if target.startswith("/"):
            r = requests.get(server.endpoint + target, timeout=30,
                             verify=server.tls_ca if server.tls_ca else True)
        else:
            r = signed_request(server, target, body, akid=UNKNOWN_AKID if unknown else n.akid,
                               secret=n.secret)
    except requests.exceptions.ConnectionError:
        return None, None, None
    try:
        doc = r.json() if r.content else {}
    except ValueError:
        doc = {"raw": r.text}
    return r.status_code, doc, r.headers.get("x-amzn-RequestId")


class Scenario:
    """A request (a new body for each run) and, for changes, whether its change is there
    and how to take it back (so that a hundred runs stay within the key's limits)."""

    def __init__(self, name, target, body, made=None, undo=None, unknown=False,
                 own_record=True, spread=POINTS, cold=False):
        self.name, self.body, self.made, self.undo = name, body, made, undo
        self.unknown = unknown  # signed with an access key hsmd does not know
        self.spread, self.cold = spread, cold  # cold: a key's first use
        # Calls without credentials are summarized past a rate (refusals.h), not one by one.
        self.own_record = own_record
        self.target = target if "." in target or "/" in target else "TrentService." + target


@pytest.fixture
def scenarios(node):
    server = node.server
    kms = client(server, node.akid, node.secret)
    aes = kms.create_key()["KeyMetadata"]["KeyId"]
    ec = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    mac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"][
        "KeyId"]
    ctx = {"tenant": "oom", "purpose": "test"}
    blob = b64(kms.encrypt(KeyId=aes, Plaintext=b"p" * 64, EncryptionContext=ctx)[
        "CiphertextBlob"])
    kms.create_alias(AliasName="alias/oom-aes", TargetKeyId=aes)

    def alias_there(body):
        try:
            kms.describe_key(KeyId=body["AliasName"])
            return True
        except kms.exceptions.NotFoundException:
            return False

    def unalias(body):
        """A key takes 50 aliases: each run's goes, so that the next can be made."""
        try:
            kms.delete_alias(AliasName=body["AliasName"])
        except kms.exceptions.NotFoundException:
            pass

    def tag_there(body):
        tags = kms.list_resource_tags(KeyId=aes)["Tags"]
        return any(t["TagKey"] == body["Tags"][0]["TagKey"] for t in tags)

    def untag(body):
        kms.untag_resource(KeyId=aes, TagKeys=[body["Tags"][0]["TagKey"]])

    def user_there(body):
        users = admin(server, "ListUsers", akid=node.akid, secret=node.secret)["Users"]
        return any(u["UserName"] == body["UserName"] for u in users)

    def grew(count):
        """made() for a request that adds one of what count() counts, named by nothing
        the request chose: whether the count grew since it was last asked."""
        last = [count()]

        def made(_body):
            now = count()
            grown, last[0] = now > last[0], now
            return grown
        return made

    def keys():
        return sum(len(page["Keys"]) for page in kms.get_paginator("list_keys").paginate())

    def grants():
        return sum(len(page["Grants"])
                   for page in kms.get_paginator("list_grants").paginate(KeyId=aes))

    def cold(spec, usage):
        """A new key for each run: its first use loads its material (unwrapped into
        the secure heap, decoded, its signing templates made).  Made with no
        allocation refused, but on a machine busy with other tests a sync of the
        trail can outlast its deadline and refuse the request for a moment (503):
        the key is the setting, not the subject, so that is tried again."""
        def make():
            for attempt in range(5):
                try:
                    return kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
                except botocore.exceptions.ClientError as e:
                    if e.response["Error"]["Code"] != "ServiceUnavailableException" or \
                            attempt == 4:
                        raise
                    time.sleep(1)
        return make

    cold_ec, cold_aes = cold("ECC_NIST_P256", "SIGN_VERIFY"), cold("SYMMETRIC_DEFAULT",
                                                                    "ENCRYPT_DECRYPT")
    cold_rsa, cold_ed = cold("RSA_2048", "SIGN_VERIFY"), cold("ECC_NIST_EDWARDS25519",
                                                              "SIGN_VERIFY")
    cold_mac = cold("HMAC_256", "GENERATE_VERIFY_MAC")
    jwt = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    st, out = signed_call(server, "HsmdJwt.EnableJwtSigning", {"KeyId": jwt}, akid=node.akid,
                          secret=node.secret)
    assert st == 200, out

    return [
        Scenario("Encrypt", "Encrypt", lambda: {
            "KeyId": "alias/oom-aes", "Plaintext": b64(b"x" * 64), "EncryptionContext": ctx}),
        Scenario("Decrypt", "Decrypt", lambda: {"CiphertextBlob": blob, "EncryptionContext": ctx}),
        Scenario("GenerateDataKey", "GenerateDataKey", lambda: {
            "KeyId": aes, "KeySpec": "AES_256"}),
        Scenario("Sign P-256", "Sign", lambda: {
            "KeyId": ec, "Message": b64(b"m" * 64), "MessageType": "RAW",
            "SigningAlgorithm": "ECDSA_SHA_256"}),
        Scenario("Sign RSA-2048 (lane)", "Sign", lambda: {
            "KeyId": rsa, "Message": b64(b"m" * 64), "MessageType": "RAW",
            "SigningAlgorithm": "RSASSA_PSS_SHA_256"}),
        Scenario("GenerateMac", "GenerateMac", lambda: {
            "KeyId": mac, "Message": b64(b"m" * 32), "MacAlgorithm": "HMAC_SHA_256"}),
        Scenario("DescribeKey", "DescribeKey", lambda: {"KeyId": aes}),
        Scenario("Encrypt refused (wrong usage)", "Encrypt", lambda: {
            "KeyId": ec, "Plaintext": b64(b"x")}),
        Scenario("CreateAlias", "CreateAlias", lambda: {
            "AliasName": "alias/oom-" + uuid.uuid4().hex, "TargetKeyId": aes}, alias_there,
            unalias),
        Scenario("TagResource", "TagResource", lambda: {
            "KeyId": aes, "Tags": [{"TagKey": "oom-" + uuid.uuid4().hex, "TagValue": "v"}]},
            tag_there, untag),
        Scenario("CreateUser (administration, lane)", "HsmdAdmin.CreateUser", lambda: {
            "UserName": "oom-" + uuid.uuid4().hex[:16], "Roles": ["crypto-user"]}, user_there),
        Scenario("Status (administration, no credentials)", "HsmdAdmin.Status", lambda: {},
                 own_record=False),
        Scenario("unknown access key", "Encrypt", lambda: {
            "KeyId": aes, "Plaintext": b64(b"x")}, unknown=True),
        Scenario("CreateKey (lane)", "CreateKey", lambda: {"Description": "oom"}, grew(keys)),
        Scenario("CreateGrant (lane)", "CreateGrant", lambda: {
            "KeyId": aes, "GranteePrincipal": "arn:aws:iam::111122223333:user/oom",
            "Operations": ["Encrypt", "Decrypt"],
            "Constraints": {"EncryptionContextSubset": {"tenant": "oom"}}}, grew(grants)),
        Scenario("SignToken (JWT)", "HsmdJwt.SignToken", lambda: {
            "KeyId": jwt, "Claims": {"sub": "oom", "aud": "api"}}),
        Scenario("Sign P-256, the key's first use", "Sign", lambda: {
            "KeyId": cold_ec(), "Message": b64(b"m" * 64), "MessageType": "RAW",
            "SigningAlgorithm": "ECDSA_SHA_256"}, spread=COLD_SPREAD, cold=True),
        Scenario("Sign RSA-2048, the key's first use", "Sign", lambda: {
            "KeyId": cold_rsa(), "Message": b64(b"m" * 64), "MessageType": "RAW",
            "SigningAlgorithm": "RSASSA_PSS_SHA_256"}, spread=COLD_SPREAD // 3, cold=True),
        Scenario("Sign Ed25519, the key's first use", "Sign", lambda: {
            "KeyId": cold_ed(), "Message": b64(b"m" * 64), "MessageType": "RAW",
            "SigningAlgorithm": "ED25519_SHA_512"}, spread=COLD_SPREAD // 3, cold=True),
        Scenario("GenerateMac, the key's first use", "GenerateMac", lambda: {
            "KeyId": cold_mac(), "Message": b64(b"m" * 32), "MacAlgorithm": "HMAC_SHA_256"},
            spread=COLD_SPREAD // 3, cold=True),
        Scenario("Encrypt, the key's first use", "Encrypt", lambda: {
            "KeyId": cold_aes(), "Plaintext": b64(b"x" * 64)}, spread=COLD_SPREAD, cold=True),
        Scenario("JWK Set (GET, no credentials)", JWKS_PATH, lambda: {}, own_record=False),
        Scenario("metrics (GET, no credentials)", "/metrics", lambda: {}, own_record=False),
    ]


def last_refusal(server):
    """The call stack of the last refusal, when HSM_TEST_OOM_TRACE asked for them."""
    log = server.read_log()
    at = log.rfind("oomfault: allocation refused")
    return log[at:at + 4000] if at >= 0 else "(HSM_TEST_OOM_TRACE=1 shows where)"


def record_of(server, rid, timeout=15.0):
    """The record of a request that changed the store: its own, or, when that could
    not be written, the RequestRecordRecovered the outbox writes in its stead."""
    deadline = time.time() + timeout
    while True:
        found = [r for r in audit_records(server.data_dir) if r.get("request_id") == rid]
        if found or time.time() > deadline:
            return found[0] if found else None
        time.sleep(0.1)


def changes_recorded(server, op, after_seq):
    """Records since after_seq saying a request `op` changed the store: its own
    success, or the RequestRecordRecovered written in place of a lost one."""
    return [r for r in audit_records(server.data_dir) if r["seq"] > after_seq and (
        (r.get("op") == op and r.get("outcome") == "success") or (
            r.get("op") == RECOVERED and r.get("extra", {}).get("request_op") == op))]


def last_seq(server):
    recs = audit_records(server.data_dir)
    return recs[-1]["seq"] if recs else 0


def test_refused_allocations(node, scenarios):
    server, faults = node.server, node.faults
    answered = {}  # request id answered 2xx: where
    summary = {}
    for i, sc in enumerate(scenarios):
        spread = min(sc.spread, SAMPLED) if node.sampled and i > 0 else sc.spread
        if sc.cold and node.cold_cap is not None:
            spread = min(spread, node.cold_cap)
        tail = SAMPLED_TAIL if node.sampled and i > 0 else TAIL
        made = 0  # changes the scenario's runs made, each of which the trail must record
        since = last_seq(server)

        def run(body, where, mode=0, at=0):
            """One request; returns (status, doc, request id, fired)."""
            nonlocal made
            if mode:
                faults.command(mode, at)
            status, doc, rid = send(node, sc.target, body, sc.unknown)
            if mode:
                time.sleep(0.02 if mode == 1 else 0)  # the worker's last allocations
            fired = mode == 2 and faults.fired
            faults.off()
            assert server.proc.poll() is None, f"{where}: hsmd died\n{server.read_log()[-3000:]}"
            if status is not None and status < 300 and sc.own_record:
                answered[rid] = f"{where} ({'refused' if fired else 'unrefused'})"
            if sc.made is not None and sc.made(body):
                made += 1
            if sc.undo is not None:
                sc.undo(body)
            return status, doc, rid, fired

        # Once unrefused first, so that the counted run finds the key's caches warm
        # (a key's first use decodes its material: thousands of allocations).
        assert run(sc.body(), sc.name)[0] is not None
        status0, doc0, _, _ = run(sc.body(), sc.name, mode=1)
        n = faults.seen
        assert status0 is not None, sc.name
        if n == 0 or (not sc.own_record and faults.threads == AUDIT_THREAD):
            # Nothing to refuse: only a request without a record of its own (a probe,
            # a GET) makes no allocation on the audit writer.  What the writer does
            # meanwhile (an earlier request's record, a periodic event) may still be
            # counted, but it is not this request's: refusing it cannot change the answer.
            assert not sc.own_record, f"{sc.name}: no allocation counted on {faults.threads}"
            summary[sc.name] = (0, {})
            continue
        type0 = doc0.get("__type") if status0 >= 400 else None

        def usual(status, doc):
            return status == status0 and (status < 400 or doc.get("__type") == type0)

        outcomes = {"usual": 0, "409": 0, "500": 0, "503": 0, "closed": 0, "done, answer lost": 0,
                    "made, answer lost": 0}
        # Beside the request, the audit writer may be busy with something of its own (the
        # minute's checkpoint): on a busy machine that can take the only refusal a short
        # request offers.  When none showed, the same points are tried again.
        tries, rounds = points(n, spread, tail), 0
        while rounds < ROUNDS and outcomes["usual"] == rounds * len(tries):
            rounds += 1
            for at in tries:
                where = f"{sc.name}, allocation {at} of {n}"
                body = sc.body()
                before = made
                status, doc, rid, fired = run(body, where, mode=2, at=at)
                if status is None:
                    assert fired, f"{where}: connection closed with nothing refused"
                    outcomes["closed"] += 1
                elif usual(status, doc):
                    outcomes["usual"] += 1
                else:
                    assert fired, f"{where}: {status} {doc} with nothing refused"
                    # 409: ran, its record failed, its result withheld (no SDK resends it).
                    assert status in (409, 500, 503), (
                        f"{where}: a refused allocation answered {status} {doc}; "
                        f"unrefused: {status0} {doc0}\n{last_refusal(server)}")
                    assert doc == {} or doc.get("__type") in (
                        "KMSInternalException", "ServiceUnavailableException"), f"{where}: {doc}"
                    outcomes[str(status)] += 1
                    if "was carried out" in doc.get("message", ""):
                        # Done, but its answer could not be written: the record says both.
                        rec = record_of(server, rid)
                        assert rec is not None and rec["outcome"] == "success" and rec.get(
                            "extra", {}).get("answer") == "lost: out of memory", f"{where}: {rec}"
                        outcomes["done, answer lost"] += 1
                if made > before and not usual(status, doc):
                    # Made, though the answer said otherwise: the answer was lost after the
                    # commit, and the trail must say the change was made.
                    outcomes["made, answer lost"] += 1
                    if rid is not None:
                        rec = record_of(server, rid)
                        assert rec is not None and rec["outcome"] == "success", (
                            f"{where}: answered {status} but the change was made, and the trail "
                            f"does not say so: {rec}\n{last_refusal(server)}")
                again, doc_again, _, _ = run(sc.body(), where)
                assert usual(again, doc_again), (
                    f"{where}: unrefused afterwards {again} {doc_again}; before {status0} {doc0}")
        summary[sc.name] = (n, outcomes)
        # The test must reach the code it means to: refusals that showed.
        assert outcomes["usual"] < rounds * len(tries), (
            f"{sc.name}: no refusal ever showed in {rounds} rounds {outcomes}")
        if sc.made is not None:
            # Every change made has its record, also those whose connection closed
            # before the answer (the trail is searched by count: no request id then).
            op = sc.target.split(".", 1)[1]
            deadline = time.time() + 15
            while len(changes_recorded(server, op, since)) != made and time.time() < deadline:
                time.sleep(0.1)
            got = changes_recorded(server, op, since)
            assert len(got) == made, f"{sc.name}: {made} changes made, {len(got)} recorded"
    print("\n".join(f"{k}: {n} allocations, {o}" for k, (n, o) in summary.items()))

    deadline = time.time() + 10
    while True:
        recorded = {r.get("request_id"): r for r in audit_records(server.data_dir)}
        missing = [where for rid, where in answered.items() if rid not in recorded]
        if not missing or time.time() > deadline:
            break
        time.sleep(0.1)
    assert not missing, f"{len(missing)} successes without an audit record: {missing}"
    assert all(recorded[rid]["outcome"] == "success" for rid in answered)

    server.stop()
    assert server.proc.returncode == 0, server.read_log()[-3000:]
    files = sorted(glob.glob(os.path.join(server.data_dir, "audit", "audit-*.jsonl")))
    out = subprocess.run([HSMCTL, "audit", "verify"] + files, capture_output=True, text=True)
    assert out.returncode == 0 and "result: VALID" in out.stdout, out.stdout + out.stderr


def test_audit_verify_short_of_memory(shim, tmp_path):
    """`hsmctl audit verify` short of memory says it could not verify, never that the
    trail was tampered with (INVALID), and does not crash.  A false INVALID would send
    an auditor after an intruder who does not exist."""
    server = start_dev()
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        for i in range(20):
            kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"n": str(i)})
    finally:
        server.stop()
    files = sorted(glob.glob(os.path.join(server.data_dir, "audit", "audit-*.jsonl")))
    faults = Faults(str(tmp_path / "ctl"), "hsmctl")
    env = dict(os.environ, LD_PRELOAD=shim, HSM_TEST_OOM_CTL=str(tmp_path / "ctl"))

    def verify(mode, at=0):
        faults.command(mode, at)
        p = subprocess.run([HSMCTL, "audit", "verify"] + files, capture_output=True, text=True,
                           env=env, timeout=120)
        return p, faults.seen, faults.fired

    p, n, _ = verify(1)
    assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr
    outcomes = {"valid": 0, "could not verify": 0, "loader": 0}
    for at in points(n, 400, 0):
        p, _, fired = verify(2, at)
        out = p.stdout + p.stderr
        where = f"allocation {at} of {n}"
        assert p.returncode >= 0, f"{where}: hsmctl died of signal {-p.returncode}\n{out}"
        assert "INVALID" not in out, f"{where}: a false verdict\n{out}"
        if p.returncode == 0:
            assert "result: VALID" in p.stdout, f"{where}: {out}"
            outcomes["valid"] += 1
        elif p.returncode == 127 and "ld.so" in p.stderr:
            # The dynamic loader's own allocation, before hsmctl runs (glibc asserts).
            outcomes["loader"] += 1
        else:
            assert fired and p.returncode == 1 and "out of memory" in p.stderr, f"{where}: {out}"
            outcomes["could not verify"] += 1
    faults.close()
    print(f"audit verify: {n} allocations, {outcomes}")
    assert outcomes["could not verify"] > 0, outcomes


BACKGROUND_THREADS = "hsmd-sched,hsmd-usage,hsmd-audit-ret"


def test_background_threads_short_of_memory(shim, tmp_path):
    """The threads that work unasked short of memory: the scheduler (store gauges, the
    trail's checks, material of keys changed elsewhere, due key work, backups), the
    flusher of keys' last uses, and the audit retention sweeper.  Every 7th of their
    allocations is refused for a while as requests come: hsmd stays up, requests are
    served, and once memory is back the work they missed is done (the last uses of every
    key reach the store), the trail verifies, and hsmd stops cleanly."""
    ctl = str(tmp_path / "ctl")
    faults = Faults(ctl, BACKGROUND_THREADS)
    env = {"LD_PRELOAD": shim, "HSM_TEST_OOM_CTL": ctl,
           "HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    server = Hsmd(["--dev", "--key-usage-flush-ms", "100"], env=env)
    try:
        kms = client(server)
        keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(4)]
        faults.command(3, 7)
        deadline = time.monotonic() + 12  # two scheduler passes (5 s) and a hundred flushes
        n = 0
        while time.monotonic() < deadline:
            kms.encrypt(KeyId=keys[n % len(keys)], Plaintext=b"x")
            n += 1
            time.sleep(0.02)
        refused, made = faults.refused, faults.seen
        faults.off()
        print(f"{refused} of {made} allocations refused, {n} requests")  # shown on failure
        assert server.proc.poll() is None, server.read_log()[-3000:]
        assert refused > 0, "no allocation of the background threads was refused"
        # Memory is back: the last use of each key reaches the store within a few flushes.
        last = {}
        for k in keys:
            r = signed_request(server, "TrentService.Encrypt",
                               {"KeyId": k, "Plaintext": b64(b"last")})
            assert r.status_code == 200, r.text
            last[k] = request_id(r)
        deadline = time.monotonic() + 30
        while stored_uses(server) != last and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stored_uses(server) == last, (stored_uses(server), last)
        server.stop()
        with open(server.log_path, errors="replace") as f:
            log = f.read()
        assert server.proc.returncode == 0, log[-3000:]
        # A probe of the store that ran out of memory here did not call the store down
        # (the node not ready: its load balancer would take it out of service).
        assert "the store does not answer" not in log, log[-3000:]
        files = sorted(glob.glob(os.path.join(server.data_dir, "audit", "audit-*.jsonl")))
        out = subprocess.run([HSMCTL, "audit", "verify"] + files, capture_output=True,
                             text=True)
        assert out.returncode == 0 and "result: VALID" in out.stdout, out.stdout + out.stderr
    finally:
        faults.close()
        server.cleanup()


def stored_uses(server):
    """The last uses the node's SQLite store holds, by key (read beside the running node)."""
    db = sqlite3.connect(f"file:{os.path.join(server.data_dir, 'hsmd.db')}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT key_id, request_id FROM key_usage").fetchall())
    finally:
        db.close()
