"""Malformed requests, correctly signed by botocore: each gets a KMS-style
error and changes nothing (DESIGN.md invariant 5)."""
import json
import os
import re
import socket
import time

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest

from conftest import DEV_AKID, DEV_SECRET, REGION, signed_request, unsigned_call
from helpers import audit_record, parsed_body, raw_exchange, request_id, sigv4_headers


@pytest.fixture(scope="module")
def key(kms):
    return kms.create_key()["KeyMetadata"]["KeyId"]


def state(kms):
    keys = kms.list_keys(Limit=1000)["Keys"]
    aliases = kms.list_aliases(Limit=100)["Aliases"]
    return len(keys), len(aliases)


def raw_call(server, op, data, target=None):
    r = signed_request(server, target if target is not None else "TrentService." + op, None,
                       raw=data)
    return r.status_code, parsed_body(r), r


def expect(server, kms, op, data, code, status=400, target=None):
    before = state(kms)
    st, out, r = raw_call(server, op, data, target)
    assert (st, out.get("__type")) == (status, code), (st, out)
    assert out.get("message"), out
    assert state(kms) == before
    assert server.get("/healthz")[0] == 200
    return r


MALFORMED_JSON = [b"{", b"{\"KeyId\": }", b"[]", b"\"text\"", b"42", b"null",
                  b"{\"a\": 1} trailing", b"\xff\xfe{}", b"{\"Description\": \"\xc3\x28\"}",
                  b"{\"Description\": \"a\", \"Description\": \"b\"}", b"[" * 5000 + b"]" * 5000]


@pytest.mark.parametrize("data", MALFORMED_JSON, ids=range(len(MALFORMED_JSON)))
def test_malformed_json(hsmd, kms, data):
    expect(hsmd, kms, "CreateKey", data, "SerializationException")


def test_nul_in_a_string_is_named_not_called_malformed(hsmd, kms):
    """Valid JSON, but no member takes U+0000: the error says so, and nothing is made."""
    for data in (b"{\"Description\": \"ab\\u0000cd\"}",
                 b"{\"Tags\": [{\"TagKey\": \"k\", \"TagValue\": \"\\u0000\"}]}"):
        r = expect(hsmd, kms, "CreateKey", data, "ValidationException")
        assert "U+0000" in parsed_body(r)["message"], parsed_body(r)


WRONG_TYPES = [
    ("CreateKey", {"Description": 5}),
    ("CreateKey", {"KeySpec": ["RSA_2048"]}),
    ("CreateKey", {"MultiRegion": "false"}),
    ("CreateKey", {"Tags": {"TagKey": "a", "TagValue": "b"}}),
    ("CreateKey", {"Tags": ["a"]}),
    ("CreateKey", {"Tags": [{"TagKey": 1, "TagValue": "b"}]}),
    ("Encrypt", {"KeyId": 123, "Plaintext": "YQ=="}),
    ("Encrypt", {"KeyId": "{key}", "Plaintext": 5}),
    ("Encrypt", {"KeyId": "{key}", "Plaintext": "YQ==", "EncryptionContext": "a=b"}),
    ("Encrypt", {"KeyId": "{key}", "Plaintext": "YQ==", "EncryptionContext": {"a": 1}}),
    ("Encrypt", {"KeyId": "{key}", "Plaintext": "YQ==", "EncryptionContext": {"a": None}}),
    ("ListKeys", {"Limit": "10"}),
    ("ListKeys", {"Limit": 1.5}),
    ("ListKeys", {"Limit": True}),
    ("GenerateDataKey", {"KeyId": "{key}", "NumberOfBytes": "32"}),
    ("ScheduleKeyDeletion", {"KeyId": "{key}", "PendingWindowInDays": 7.0}),
    ("UntagResource", {"KeyId": "{key}", "TagKeys": "a"}),
    ("UntagResource", {"KeyId": "{key}", "TagKeys": [1]}),
    ("PutKeyPolicy", {"KeyId": "{key}", "PolicyName": "default", "Policy": {"Statement": []}}),
    ("PutKeyPolicy", {"KeyId": "{key}", "PolicyName": "default", "Policy": "{}",
                      "BypassPolicyLockoutSafetyCheck": "yes"}),
]


@pytest.mark.parametrize("op,body", WRONG_TYPES, ids=[f"{o}-{i}" for i, (o, _) in
                                                      enumerate(WRONG_TYPES)])
def test_wrong_json_types(hsmd, kms, key, op, body):
    data = json.dumps(body).replace("{key}", key).encode()
    expect(hsmd, kms, op, data, "SerializationException")


INVALID_BASE64 = ["!!!!", "YQ", "YQ=", "Y===", "YQ==YQ==", "YQ\u00e9=", "a b="]


@pytest.mark.parametrize("blob", INVALID_BASE64)
def test_invalid_base64(hsmd, kms, key, blob):
    expect(hsmd, kms, "Encrypt", json.dumps({"KeyId": key, "Plaintext": blob}).encode(),
           "SerializationException")
    expect(hsmd, kms, "Decrypt", json.dumps({"CiphertextBlob": blob}).encode(),
           "SerializationException")


MISSING = [
    ("Encrypt", {"Plaintext": "YQ=="}),
    ("Encrypt", {"KeyId": "{key}"}),
    ("Decrypt", {}),
    ("DescribeKey", {}),
    ("Sign", {"KeyId": "{key}", "Message": "YQ=="}),
    ("Verify", {"KeyId": "{key}", "Message": "YQ==", "SigningAlgorithm": "ECDSA_SHA_256"}),
    ("GenerateMac", {"KeyId": "{key}", "Message": "YQ=="}),
    ("CreateAlias", {"AliasName": "alias/missing-target"}),
    ("CreateAlias", {"TargetKeyId": "{key}"}),
    ("TagResource", {"KeyId": "{key}"}),
    ("UntagResource", {"KeyId": "{key}"}),
    ("PutKeyPolicy", {"KeyId": "{key}", "PolicyName": "default"}),
    ("GenerateDataKeyPair", {"KeyId": "{key}"}),
    ("ReEncrypt", {"CiphertextBlob": "YQ=="}),
    ("GenerateRandom", {}),
    ("UpdateKeyDescription", {"KeyId": "{key}"}),
    ("Encrypt", {"KeyId": None, "Plaintext": "YQ=="}),
    ("Encrypt", {"KeyId": "", "Plaintext": "YQ=="}),
]


@pytest.mark.parametrize("op,body", MISSING, ids=[f"{o}-{i}" for i, (o, _) in
                                                  enumerate(MISSING)])
def test_missing_required_members(hsmd, kms, key, op, body):
    data = json.dumps(body).replace("{key}", key).encode()
    expect(hsmd, kms, op, data, "ValidationException")


@pytest.mark.parametrize("target", ["TrentService.Frobnicate", "TrentService.",
                                    "TrentService.encrypt", "HsmdAdmin.Frobnicate"])
def test_unknown_operation(hsmd, kms, target):
    r = expect(hsmd, kms, None, b"{}", "UnknownOperationException", target=target)
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert rec["outcome"] == "error" and rec["error"] == "UnknownOperationException"


@pytest.mark.parametrize("op,why", [
    ("ReplicateKey", "multi-Region"), ("UpdatePrimaryRegion", "multi-Region"),
    ("Encapsulate", "ML-KEM"), ("Decapsulate", "ML-KEM")])
def test_aws_operations_hsmd_does_not_offer_are_unsupported(hsmd, kms, op, why):
    """SDKs know these operations: they get KMS's UnsupportedOperationException, which
    `except kms.exceptions.UnsupportedOperationException` catches, not an unknown target."""
    r = expect(hsmd, kms, op, b"{}", "UnsupportedOperationException")
    assert why in parsed_body(r)["message"]
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["outcome"], rec["error"]) == (op, "error",
                                                         "UnsupportedOperationException")


def test_custom_key_stores_answer_only_errors_their_operations_declare(hsmd, kms):
    """hsmd holds its keys itself and has no custom key stores: DescribeCustomKeyStores
    lists none, a store named by any operation does not exist (CustomKeyStoreNotFound,
    which each of them declares), and CreateCustomKeyStore, which declares nothing that
    says "not supported", is a ValidationException.  Each is audited.  (They answered
    UnsupportedOperationException, which none of them declares.)"""
    out = kms.describe_custom_key_stores()
    assert out["CustomKeyStores"] == [] and out["Truncated"] is False, out
    assert "NextMarker" not in out, out
    cks = "cks-1234567890abcdef0"
    for call in (lambda: kms.describe_custom_key_stores(CustomKeyStoreId=cks),
                 lambda: kms.describe_custom_key_stores(CustomKeyStoreName="prod"),
                 lambda: kms.connect_custom_key_store(CustomKeyStoreId=cks),
                 lambda: kms.disconnect_custom_key_store(CustomKeyStoreId=cks),
                 lambda: kms.delete_custom_key_store(CustomKeyStoreId=cks),
                 lambda: kms.update_custom_key_store(CustomKeyStoreId=cks,
                                                     NewCustomKeyStoreName="x"),
                 lambda: kms.create_key(CustomKeyStoreId=cks),
                 lambda: kms.generate_random(NumberOfBytes=8, CustomKeyStoreId=cks)):
        with pytest.raises(kms.exceptions.CustomKeyStoreNotFoundException):
            call()
    for op, body, code in (
            ("CreateCustomKeyStore", {"CustomKeyStoreName": "prod"}, "ValidationException"),
            ("DescribeCustomKeyStores", {"Marker": "m"}, "InvalidMarkerException"),
            ("DescribeCustomKeyStores", {"Limit": 0}, "ValidationException"),
            ("DescribeCustomKeyStores", {"CustomKeyStoreId": cks, "CustomKeyStoreName": "x"},
             "ValidationException")):
        r = expect(hsmd, kms, op, json.dumps(body).encode(), code)
        rec = audit_record(hsmd.data_dir, request_id(r))
        assert (rec["op"], rec["outcome"], rec["error"]) == (op, "error", code), rec


def test_sdk_catches_those_as_kms_exceptions(kms):
    with pytest.raises(kms.exceptions.UnsupportedOperationException):
        kms.update_primary_region(KeyId="mrk-1234abcd12ab34cd56ef1234567890ab",
                                  PrimaryRegion="eu-west-1")


@pytest.mark.parametrize("target", ["Frobnicate", "KMS.ListKeys", ""])
def test_target_without_a_known_service(hsmd, kms, target):
    """Authenticated first, as any request, then refused, and audited."""
    r = expect(hsmd, kms, None, b"{}", "UnknownOperationException", target=target)
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["outcome"], rec["error"]) == ("error", "UnknownOperationException"), rec
    assert rec["principal"].endswith(":root") or rec["principal"], rec


def test_a_post_that_names_nothing_is_authenticated_first(hsmd):
    """Without credentials, no X-Amz-Target, or a path other than /, learns nothing
    more than that credentials are missing; signed, it is refused as unknown. Every
    such request is audited."""
    import requests
    r = requests.post(hsmd.endpoint + "/", data=b"{}", timeout=30,
                      headers={"Content-Type": "application/x-amz-json-1.1"})
    assert (r.status_code, r.json()["__type"]) == (400, "MissingAuthenticationTokenException")
    assert audit_record(hsmd.data_dir, request_id(r))["outcome"] == "denied"
    r = requests.post(hsmd.endpoint + "/kms", data=b"{}", timeout=30,
                      headers={"Content-Type": "application/x-amz-json-1.1",
                               "X-Amz-Target": "TrentService.ListKeys"})
    assert (r.status_code, r.json()["__type"]) == (400, "MissingAuthenticationTokenException")
    r = signed_request(hsmd, "TrentService.ListKeys", {}, send_path="/kms")
    assert r.status_code == 400, r.text
    # Signed for "/", sent to "/kms": the signature covers the path, so it does not match.
    assert r.json()["__type"] == "InvalidSignatureException", r.text
    assert audit_record(hsmd.data_dir, request_id(r))["outcome"] == "denied"


@pytest.mark.parametrize("service", ["TrentService", "HsmdAdmin", "HsmdCipher", "HsmdToken",
                                     "HsmdJwt"])
def test_an_unknown_operation_is_authenticated_first(hsmd, service):
    """Under every service, a name hsmd does not answer gets, without valid credentials,
    the answer a known one gets, so operation names cannot be probed; signed, it is
    unknown, and its record names who asked."""
    target = service + ".NoSuchOperation"
    st, out = unsigned_call(hsmd, target, {})
    assert (st, out["__type"]) == (400, "MissingAuthenticationTokenException"), out
    r = signed_request(hsmd, target, {}, secret="x" * 40)
    assert (r.status_code, parsed_body(r)["__type"]) == (400, "InvalidSignatureException"), \
        r.text
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["outcome"], rec["error"], rec["access_key"]) == \
        ("denied", "InvalidSignatureException", DEV_AKID), rec
    r = signed_request(hsmd, target, {})  # and resets the count of wrong signatures
    assert (r.status_code, parsed_body(r)["__type"]) == (400, "UnknownOperationException"), \
        r.text
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["outcome"], rec["error"], rec["access_key"]) == \
        ("error", "UnknownOperationException", DEV_AKID), rec
    assert rec["principal"].endswith(":user/dev"), rec


def exchange(server, head, body=b""):
    """Sends head (bytes, without its empty line) and body on a connection of its own;
    returns the status and the answer's body (hsmd closes after a 400)."""
    raw = raw_exchange(server.port, head + b"Connection: close\r\n\r\n" + body, shut=False)
    return int(raw.split(b" ", 2)[1]), raw.split(b"\r\n\r\n", 1)[1]


def error_of(answer):
    """The KMS error an answer's body names, (type, message), or the body itself."""
    if not answer.startswith(b"{"):
        return answer
    out = json.loads(answer)
    return out.get("__type"), out.get("message")


def signed_for_host(server, host, target="TrentService.CreateKey"):
    """A request signed by botocore over the Host value given, as a client that sends it
    would sign it: the signature holds, so only the value itself can be refused."""
    data = b"{}"
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=server.endpoint + "/", data=data,
        headers={"Host": host, "Content-Type": "application/x-amz-json-1.1",
                 "X-Amz-Target": target})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(DEV_AKID, DEV_SECRET), "kms",
                            REGION).add_auth(req)
    head = b"POST / HTTP/1.1\r\n" + b"".join(
        f"{k}: {v}\r\n".encode("latin-1") for k, v in req.prepare().headers.items()
        if k.lower() != "content-length") + f"Content-Length: {len(data)}\r\n".encode()
    return exchange(server, head, data)


BAD_HOSTS = [b"a b", b"evil@127.0.0.1", b"127.0.0.1:18441/path", b"\xff\xfe", b"x:99999",
             b"x:", b":80", b"::1", b"[::1", b"[::g]:1", b"127.0.0.1:80:80", b"a%zz",
             b"user@evil.example:1/x y"]


@pytest.mark.parametrize("host", BAD_HOSTS, ids=range(len(BAD_HOSTS)))
def test_invalid_host_is_refused(hsmd, kms, host):
    """RFC 9112 section 3.2: a Host that is not host[:port] is answered 400, on the probes
    and on API calls correctly signed over that Host, which then do nothing."""
    want = (400, ("ValidationException", "Bad Host: one host or host:port is needed, in the "
                  "Host header or an absolute target"))
    status, out = exchange(hsmd, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n")
    assert (status, error_of(out)) == want, host
    if b" " not in host and b"/" not in host:
        status, out = exchange(hsmd, b"GET http://" + host + b"/healthz HTTP/1.1\r\nHost: x\r\n")
        assert (status, error_of(out)) == want, host
    before = state(kms)
    status, out = signed_for_host(hsmd, host.decode("latin-1"))
    assert (status, error_of(out)) == want, host
    assert state(kms) == before


def test_host_forms_clients_send_are_accepted(hsmd, kms):
    """Names, IPv4 and bracketed IPv6 addresses, with a port or without, and the empty
    Host RFC 9112 lets a server fill in itself."""
    port = str(hsmd.port).encode()
    for host in (b"127.0.0.1:" + port, b"localhost:" + port, b"localhost", b"[::1]:" + port,
                 b"[::1]", b"kms.example.com.", b"KMS-1.example:443", b""):
        status, out = exchange(hsmd, b"GET /healthz HTTP/1.1\r\nHost: " + host + b"\r\n")
        assert (status, out) == (200, b"ok\n"), (host, out)
    before = state(kms)
    status, out = signed_for_host(hsmd, f"[::1]:{hsmd.port}", "TrentService.ListKeys")
    assert status == 200 and "Keys" in json.loads(out), out
    assert state(kms) == before


def test_oversized_body(hsmd, kms, key):
    before = state(kms)
    big = json.dumps({"Description": "x" * (1 << 20)}).encode()
    st, out, _ = raw_call(hsmd, "CreateKey", big)
    assert (st, out.get("__type")) == (413, "ValidationException"), (st, out)
    # Just under the limit: parsed, then refused by the member's own limit.
    near = json.dumps({"Description": "x" * ((1 << 20) - 100)}).encode()
    st, out, _ = raw_call(hsmd, "CreateKey", near)
    assert (st, out["__type"]) == (400, "ValidationException")
    assert state(kms) == before
    assert hsmd.get("/healthz")[0] == 200


@pytest.mark.parametrize("request_bytes", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n" + b"b" * 200000,
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
], ids=["413", "431"])
def test_a_refusal_reaches_a_client_that_sent_everything_and_shut_its_side(hsmd, request_bytes):
    """A client sends a request too large to read, then shuts its side (as a client
    that has nothing more to say does).  The refusal must reach it whole, never a
    reset: hsmd drains what the client sent before it closes, even though the
    client's end of the stream has already arrived."""
    for _ in range(20):
        out = raw_exchange(hsmd.port, request_bytes)  # a reset raises ConnectionResetError
        assert out.split(b" ", 2)[1] in (b"413", b"431"), out[:80]
        assert out.endswith(b"}"), out  # the whole body of the answer


def signed_bytes(server, target, body, connection):
    """A request signed by botocore's SigV4 signer, as the bytes sent on the wire."""
    headers, data = sigv4_headers(server, target, body)
    head = ["POST / HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Connection: {connection}",
            f"Content-Length: {len(data)}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def answers_after_more_input(port, first, more):
    """Sends first, then (before reading anything, through a small receive window) more,
    and reads until the server closes: every byte it sent (a reset raises)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(first)
        time.sleep(0.05)
        s.sendall(more)
        time.sleep(0.3)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def bodies(out):
    """The (status, body) of each answer in out, by Content-Length."""
    found = []
    while out:
        head, rest = out.split(b"\r\n\r\n", 1)
        n = int(re.search(rb"(?im)^content-length: (\d+)\r?$", head).group(1))
        found.append((int(head.split(b" ", 2)[1]), rest[:n]))
        assert len(rest) >= n, (len(rest), n)
        out = rest[n:]
    return found


def test_an_answer_that_ends_the_connection_survives_input_sent_after_it(hsmd, kms):
    """A request that ends the connection (Connection: close, HTTP/1.0), answered while
    the client sends more before reading: hsmd stops sending and reads the rest until the
    client closes, rather than closing with input unread, which resets the connection and
    loses the part of the answer still queued (RFC 9112 section 9.6)."""
    more = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
    for first in (b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                  b"GET /metrics HTTP/1.0\r\n\r\n"):
        ((status, body),) = bodies(answers_after_more_input(hsmd.port, first, more))
        assert status == 200 and len(body) > 8192 and body.endswith(b"\n"), first
    # A change made: its answer reaches the client, which would otherwise send it again.
    before = len(kms.list_keys(Limit=1000)["Keys"])
    first = (b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" +
             signed_bytes(hsmd, "TrentService.CreateKey", {}, "close"))
    got = bodies(answers_after_more_input(hsmd.port, first, b"\r\n"))
    assert [st for st, _ in got] == [200, 200]
    made = json.loads(got[1][1])["KeyMetadata"]["KeyId"]
    assert len(kms.list_keys(Limit=1000)["Keys"]) == before + 1
    assert kms.describe_key(KeyId=made)["KeyMetadata"]["KeyState"] == "Enabled"


def test_empty_body_is_an_empty_request(hsmd, kms):
    st, out, _ = raw_call(hsmd, "ListKeys", b"")
    assert st == 200 and "Keys" in out
    st, out, _ = raw_call(hsmd, "GenerateRandom", b"")
    assert (st, out["__type"]) == (400, "ValidationException")


def test_unknown_members_are_ignored(hsmd, kms, key):
    # As in KMS's JSON protocol, members a newer SDK might send are ignored.
    st, out, _ = raw_call(hsmd, "DescribeKey", json.dumps({"KeyId": key, "Future": 1}).encode())
    assert st == 200 and out["KeyMetadata"]["KeyId"] == key


def test_failures_are_audited(hsmd, kms, key):
    st, out, r = raw_call(hsmd, "Encrypt", json.dumps({"KeyId": key, "Plaintext": "!!"}).encode())
    assert st == 400
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["outcome"], rec["error"]) == ("Encrypt", "error",
                                                         "SerializationException")
    assert rec["principal"].endswith(":user/dev")


# Names a client may claim: a tab, a quote and bytes past ASCII; kilobytes of
# one letter; spaces and figures that look like a row of the report's tables.
CLAIMED = ['TrentService.Evil"Op\t\u00e9\u00ff', "TrentService." + "A" * 9000,
           "TrentService.Decrypt" + " " * 45 + "500      500        0        0\tX",
           "HsmdAdmin.Status  spoof"]


def report_json(hsmd):
    import subprocess
    from conftest import HSMCTL
    p = subprocess.run([HSMCTL, "audit", "report", "--json", "--live",
                        os.path.join(hsmd.data_dir, "audit")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_an_unknown_operation_name_is_recorded_sanitized_under_one_op(hsmd):
    """The name of an operation hsmd does not know is the client's: signed or not, the
    record says UnknownOperation and keeps the name only as letters, digits and dots
    (anything else a '?'), cut to 64 and marked so, so that no claimed name becomes a
    row of the report's operations table of its own."""
    for target in CLAIMED:
        for r in (signed_request(hsmd, target, {}), signed_request(hsmd, target, {},
                                                                    secret="x" * 40)):
            assert r.status_code == 400, r.text
            rec = audit_record(hsmd.data_dir, request_id(r))
            assert rec["op"] == "UnknownOperation", rec
            claimed = rec["extra"]["claimed_operation"]
            shown = "".join(c if c.isascii() and (c.isalnum() or c == ".") else "?"
                            for c in target)
            if len(shown) > 64:
                assert claimed == shown[:64] + "...[truncated]", claimed
            else:
                assert claimed == shown, claimed
    ops = report_json(hsmd)["operations"]
    assert "UnknownOperation" in ops, ops
    assert all(re.fullmatch(r"[A-Za-z0-9]+", op) for op in ops), sorted(ops)


def test_report_text_escapes_control_characters(hsmd, tmp_path):
    """A trail's strings may hold control characters (the JSON escapes them, reading
    it undoes that): the text report prints them escaped, so none can shift its
    columns, forge a line or drive the terminal."""
    import glob
    import hashlib
    import subprocess
    from conftest import HSMCTL
    signed_request(hsmd, "TrentService.ListKeys", {})
    lines = []
    for path in sorted(glob.glob(os.path.join(hsmd.data_dir, "audit", "audit-*.jsonl"))):
        with open(path, "rb") as f:
            lines += [(os.path.basename(path), ln) for ln in f.read().split(b"\n")[:-1]]
    # The last request: its op and principal made hostile, the chain made good again.
    last = max(i for i, (_, ln) in enumerate(lines) if b'"type":"request"' in ln)
    out, prev = {}, None
    for i, (name, ln) in enumerate(lines):
        rec = json.loads(ln)
        if i == last:
            rec["op"] = "List\tKeys\x1b[2J\n  Forged 1 1 0 0\u0085"
            rec["principal"] = "arn:aws:iam::1:user/\x07me\\"
        if prev is not None and (i == last or rec["prev"] != prev):
            rec["prev"] = prev
        if i >= last:
            ln = json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()
        prev = hashlib.sha256(ln).hexdigest()
        out.setdefault(name, []).append(ln)
    for name, ls in out.items():
        (tmp_path / name).write_bytes(b"\n".join(ls) + b"\n")
    p = subprocess.run([HSMCTL, "audit", "report", "--live", str(tmp_path)],
                       capture_output=True)
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f\x80-\x9f]", text), repr(text)
    assert "\n  Forged" not in text
    assert "List\\x09Keys\\x1b[2J\\x0a  Forged 1 1 0 0\\u0085" in text, text
    assert "user/\\x07me\\\\" in text, text


def test_a_request_cut_by_the_clients_fin_ends_the_connection_at_once(hsmd):
    """A client that shuts its sending side in the middle of a request is done: the
    connection ends at once, not at read_timeout, also when the FIN comes with the
    request's last bytes (one edge of epoll for both)."""
    import socket
    import time
    for partial in (b"POST / HTTP/1.1\r\nHost: x\r\n",
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{}"):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", hsmd.port), timeout=30) as s:
                s.sendall(partial)
                s.shutdown(socket.SHUT_WR)  # the FIN follows the bytes at once
                t = time.monotonic()
                assert s.recv(100) == b""
                assert time.monotonic() - t < 2, "kept open until read_timeout"
    # A whole request followed at once by the FIN is still answered.
    with socket.create_connection(("127.0.0.1", hsmd.port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
        assert raw.startswith(b"HTTP/1.1 200 "), raw[:200]
