"""SigV4 authentication of the KMS API, its audit trail and the lockout rule.

Requests are signed by botocore's own signer (signed_request/signed_call in
conftest.py) and then altered: every part the signature covers, changed by
one byte, must be refused with 400 (as AWS answers) and audited with the same error.
"""
import datetime
import http.client
import json
import os
import subprocess
import time

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.exceptions
import botocore.parsers
import pytest
import requests

from conftest import (BUILD, DEV_AKID, DEV_SECRET, HSMCTL, REGION, client, signed_call,
                      signed_request, start_dev, unsigned_call)
from helpers import (admin, audit_record, new_user, parsed_body, request_id, restart_dev,
                     signed_at, sigv4_headers)

TARGET = "TrentService.ListKeys"
BODY = {"Limit": 5}
USER = "sig-tester"


@pytest.fixture(scope="module")
def creds(hsmd):
    return new_user(hsmd, USER, ["crypto-user", "auditor"])


def swap_char(s, i):
    """s with the character at i replaced by a different one of the same kind."""
    c = s[i]
    if c.isdigit():
        r = "0" if c != "0" else "1"
    elif c.isalpha():
        r = "x" if c.lower() != "x" else "y"
        r = r.upper() if c.isupper() else r
    else:
        r = "_" if c != "_" else "-"
    return s[:i] + r + s[i + 1:]


def hex_flip(sig, i):
    """sig with hex digit i changed to another hex digit."""
    return sig[:i] + format(int(sig[i], 16) ^ 1, "x") + sig[i + 1:]


def header(name, fn):
    def mutate(headers, payload):
        headers = dict(headers)
        headers[name] = fn(headers.get(name, ""))
        return headers, payload
    return mutate


def auth_part(fn):
    """Rewrites the Authorization value's Credential, SignedHeaders or Signature."""
    def mutate(headers, payload):
        headers = dict(headers)
        alg, rest = headers["Authorization"].split(" ", 1)
        parts = dict(p.strip().split("=", 1) for p in rest.split(","))
        fn(parts)
        headers["Authorization"] = alg + " " + ", ".join(f"{k}={v}" for k, v in parts.items())
        return headers, payload
    return mutate


def scope(index, fn):
    def change(parts):
        c = parts["Credential"].split("/")
        c[index] = fn(c[index])
        parts["Credential"] = "/".join(c)
    return auth_part(change)


def drop(name):
    def mutate(headers, payload):
        return {k: v for k, v in headers.items() if k.lower() != name.lower()}, payload
    return mutate


def flip_body(headers, payload):
    return headers, payload.replace(b"5", b"4")


def refused(server, resp, code, akid=None, status=400, op="ListKeys"):
    """Asserts the refusal and finds its audit record by the x-amzn-RequestId header."""
    body = parsed_body(resp)
    assert (resp.status_code, body.get("__type")) == (status, code), (resp.status_code, body)
    assert body.get("message")
    rec = audit_record(server.data_dir, request_id(resp))
    assert rec["type"] == "request" and rec["op"] == op
    assert rec["outcome"] == "denied" and rec["error"] == code, rec
    if akid is not None:
        assert rec["access_key"] == akid
    assert "principal" not in rec  # nobody was authenticated
    return rec


def good_call(server, akid, secret):
    r = signed_request(server, TARGET, BODY, akid=akid, secret=secret)
    assert r.status_code == 200, r.text
    rec = audit_record(server.data_dir, request_id(r))
    assert rec["outcome"] == "success" and rec["access_key"] == akid
    return r


BAD_SIGNATURE = [
    ("x-amz-target", header("X-Amz-Target", lambda v: swap_char(v, len(v) - 1))),
    ("x-amz-target-other-op", header("X-Amz-Target", lambda v: "TrentService.ListAliases")),
    ("content-type", header("Content-Type", lambda v: swap_char(v, len(v) - 1))),
    ("host", header("Host", lambda v: "127.0.0.2" + v[len("127.0.0.1"):])),
    ("x-amz-date-second", header("X-Amz-Date", lambda v: swap_char(v, 14))),
    ("body", flip_body),
    ("region", scope(2, lambda v: swap_char(v, len(v) - 1))),
    ("service", scope(3, lambda v: swap_char(v, 2))),
    ("scope-date", scope(1, lambda v: swap_char(v, 0))),
    ("terminator", scope(4, lambda v: swap_char(v, len(v) - 1))),
    ("signature", auth_part(lambda p: p.update(Signature=hex_flip(p["Signature"], 10)))),
    ("signed-headers-without-target",
     auth_part(lambda p: p.update(SignedHeaders="content-type;host;x-amz-date"))),
    ("signed-headers-without-host",
     auth_part(lambda p: p.update(SignedHeaders="content-type;x-amz-date;x-amz-target"))),
]


@pytest.mark.parametrize("what,mutate", BAD_SIGNATURE, ids=[w for w, _ in BAD_SIGNATURE])
def test_changed_signed_part_is_refused(hsmd, creds, what, mutate):
    akid, secret = creds
    sent = {}

    def record(headers, payload):
        headers, payload = mutate(headers, payload)
        sent.update(headers)
        return headers, payload

    r = signed_request(hsmd, TARGET, BODY, akid=akid, secret=secret, mutate=record)
    # The record names the operation as requested.  A wrong scope terminator
    # fails while the Authorization header is parsed, before the key id is read.
    # An unsigned X-Amz-Target is refused before the signature is computed.
    code = ("IncompleteSignatureException" if what == "signed-headers-without-target"
            else "InvalidSignatureException")
    # A name hsmd does not know is recorded as UnknownOperation.
    name = sent["X-Amz-Target"].split(".", 1)[1]
    refused(hsmd, r, code, None if what == "terminator" else akid,
            op=name if name in ("ListKeys", "ListAliases") else "UnknownOperation")
    good_call(hsmd, akid, secret)  # and resets the failure counter


ALLOW = [("/healthz", "GET, HEAD"), ("/readyz", "GET, HEAD"), ("/metrics", "GET, HEAD"),
         ("/.well-known/jwks.json", "GET, HEAD, OPTIONS")]


@pytest.mark.parametrize("path,allow", ALLOW, ids=[p for p, _ in ALLOW])
def test_allow_names_the_methods_of_the_path(hsmd, path, allow):
    """RFC 9110 section 10.2.1: Allow lists what the resource asked for takes, not what the
    server takes somewhere; a method named there is served.  POST is no exception: only
    POST / is the API, so a POST here is not an API call to authenticate."""
    for method in ("PUT", "DELETE", "PATCH", "POST"):
        r = requests.request(method, hsmd.endpoint + path, timeout=10)
        assert (r.status_code, r.headers.get("Allow")) == (405, allow), (method, path)
        assert r.json()["__type"] == "UnknownOperationException", r.text
    for method in ("GET", "HEAD"):
        r = requests.request(method, hsmd.endpoint + path, timeout=10)
        assert r.status_code in (200, 503), (method, path, r.status_code)  # readyz may be 503


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_a_path_hsmd_does_not_serve_is_not_found(hsmd, method):
    """A path with nothing behind it has no methods to list: 404, whatever the method."""
    r = requests.request(method, hsmd.endpoint + "/no/such/path", timeout=10)
    assert r.status_code == 404 and "Allow" not in r.headers, (r.status_code, dict(r.headers))
    if method != "HEAD":
        assert r.json()["__type"] == "NotFoundException", r.text


def test_changed_query_string_is_refused(hsmd, creds):
    akid, secret = creds
    r = signed_request(hsmd, TARGET, BODY, akid=akid, secret=secret, send_path="/?Action=x")
    refused(hsmd, r, "InvalidSignatureException", akid)
    good_call(hsmd, akid, secret)


def test_other_path_is_not_an_api_endpoint(hsmd, creds):
    """The path is signed: sent elsewhere than signed for, the request is refused as any
    changed part is (authenticated first, and audited), not answered as a missing page."""
    akid, secret = creds
    r = signed_request(hsmd, TARGET, BODY, akid=akid, secret=secret, send_path="/x")
    refused(hsmd, r, "InvalidSignatureException", akid)
    good_call(hsmd, akid, secret)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "GET", "HEAD"])
def test_only_post_reaches_the_api(hsmd, kms, method):
    """KMS takes only POST /: the same signed request replayed with another method does
    nothing, and is answered 405 naming the one method the API takes."""
    before = len(kms.list_keys(Limit=1000)["Keys"])
    signed = signed_request(hsmd, "TrentService.CreateKey", {})
    assert signed.status_code == 200
    r = requests.request(method, hsmd.endpoint + "/", data=signed.request.body,
                         headers=dict(signed.request.headers), timeout=10)
    assert (r.status_code, r.headers.get("Allow")) == (405, "POST")
    assert len(kms.list_keys(Limit=1000)["Keys"]) == before + 1  # only the POST made a key


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "BREW", "GET"])
def test_other_methods_get_a_kms_error(hsmd, method):
    """A method the API does not take is answered with a KMS-style error, so an SDK
    reports UnknownOperationException, not a bare status code."""
    r = requests.request(method, hsmd.endpoint + "/", timeout=10)
    assert r.status_code == (501 if method == "BREW" else 405)
    if r.status_code == 405:
        assert r.headers["Allow"] == "POST"
    assert r.json()["__type"] == "UnknownOperationException", r.text
    parsed = botocore.parsers.create_parser("json").parse(
        {"status_code": r.status_code, "headers": dict(r.headers), "body": r.content}, None)
    assert parsed["Error"]["Code"] == "UnknownOperationException", parsed


INCOMPLETE = [
    ("signature-not-hex", auth_part(lambda p: p.update(Signature="Z" + p["Signature"][1:]))),
    ("signature-short", auth_part(lambda p: p.update(Signature=p["Signature"][:-2]))),
    ("no-signature", auth_part(lambda p: p.pop("Signature"))),
    ("no-signed-headers", auth_part(lambda p: p.pop("SignedHeaders"))),
    ("credential-parts", scope(4, lambda v: v + "/extra")),
    ("signed-headers-unsorted",
     auth_part(lambda p: p.update(SignedHeaders="host;content-type;x-amz-date;x-amz-target"))),
    ("algorithm", header("Authorization", lambda v: v.replace("AWS4-HMAC-SHA256",
                                                              "AWS4-HMAC-SHA512"))),
    ("signed-header-missing", drop("Content-Type")),
    ("no-date", drop("X-Amz-Date")),
    ("bad-date", header("X-Amz-Date", lambda v: "yesterday")),
]


@pytest.mark.parametrize("what,mutate", INCOMPLETE, ids=[w for w, _ in INCOMPLETE])
def test_malformed_authorization(hsmd, creds, what, mutate):
    akid, secret = creds
    r = signed_request(hsmd, TARGET, BODY, akid=akid, secret=secret, mutate=mutate)
    refused(hsmd, r, "IncompleteSignatureException")
    good_call(hsmd, akid, secret)


def test_unsigned_request(hsmd):
    st, body = unsigned_call(hsmd, TARGET, BODY)
    assert (st, body["__type"]) == (400, "MissingAuthenticationTokenException")
    r = signed_request(hsmd, TARGET, BODY, mutate=drop("Authorization"))
    refused(hsmd, r, "MissingAuthenticationTokenException")


def send_with_header_count(server, total, pad="x", name="X-Pad-"):
    """A signed ListKeys sent with exactly `total` header lines (unsigned X-Pad-<i> fill),
    or with one unsigned X-Pad-0 of value pad when total is None (name: the fill's
    name before its number)."""
    headers, data = sigv4_headers(server, TARGET, BODY)
    headers["Content-Length"] = str(len(data))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", f"127.0.0.1:{server.port}")
    for name, value in headers.items():
        conn.putheader(name, value)
    for i in range(1 if total is None else total - 1 - len(headers)):
        conn.putheader(f"{name}{i}", pad)
    conn.endheaders(data)
    r = conn.getresponse()
    status, body = r.status, json.loads(r.read() or b"{}")
    conn.close()
    return status, body


def test_header_limits(hsmd):
    """The HTTP reader bounds a request's head (256 lines, max_header_bytes) and answers
    431 past that; SigV4 takes whatever it let through, and bounds only the values it
    signs (8 KiB each, names 128 bytes), so an unsigned header a proxy added is no
    reason to refuse."""
    assert send_with_header_count(hsmd, 256)[0] == 200
    assert send_with_header_count(hsmd, 257)[0] == 431
    assert send_with_header_count(hsmd, None, pad="t" * 9000)[0] == 200
    # Names likewise: a long one is bounded only when signed.
    assert send_with_header_count(hsmd, None, name="X-" + "n" * 300)[0] == 200


def send_targets(server, targets, body, sign=True):
    """POSTs body with one X-Amz-Target line per entry of targets, signed (by botocore)
    as SigV4 reads repeated lines: one value, joined with ','."""
    data = json.dumps(body).encode()
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=server.endpoint + "/", data=data,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": ",".join(targets)})
    if sign:
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(DEV_AKID, DEV_SECRET), "kms",
                                REGION).add_auth(req)
    headers = {k: v for k, v in req.prepare().headers.items()
               if k.lower() not in ("content-length", "x-amz-target")}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", f"127.0.0.1:{server.port}")
    for name, value in headers.items():
        conn.putheader(name, value)
    for target in targets:
        conn.putheader("X-Amz-Target", target)
    conn.putheader("Content-Length", str(len(data)))
    conn.endheaders(data)
    r = conn.getresponse()
    answer = (r.status, json.loads(r.read() or b"{}"), request_id(r))
    conn.close()
    return answer


def test_repeated_target_is_refused(hsmd, kms):
    """Two X-Amz-Target lines are signed as one joined value while only one operation could
    run, and a proxy in front may judge by the other: refused, even correctly signed, as a
    repeated X-Amz-Date is, audited, and nothing is done."""
    before = len(kms.list_keys(Limit=1000)["Keys"])
    one = "Only one X-Amz-Target header is allowed."
    for targets in (["TrentService.CreateKey", "TrentService.ListKeys"],
                    ["TrentService.ListKeys", "TrentService.CreateKey"]):
        status, body, rid = send_targets(hsmd, targets, {})
        assert (status, body.get("__type"), body.get("message")) == (
            400, "IncompleteSignatureException", one), (targets, body)
        rec = audit_record(hsmd.data_dir, rid)
        assert rec["op"] == targets[0].split(".", 1)[1], rec
        assert rec["outcome"] == "denied" and rec["error"] == "IncompleteSignatureException", rec
        assert rec["access_key"] == DEV_AKID and "principal" not in rec, rec
    # The operations that take no credentials refuse it too.
    status, body, rid = send_targets(hsmd, ["HsmdAdmin.Status", "HsmdAdmin.Unseal"], {},
                                     sign=False)
    assert (status, body.get("__type"), body.get("message")) == (
        400, "ValidationException", one), body
    rec = audit_record(hsmd.data_dir, rid)
    assert rec["op"] == "Status" and rec["outcome"] != "success", rec
    assert len(kms.list_keys(Limit=1000)["Keys"]) == before
    # One target, signed the same way, is served.
    status, body, _ = send_targets(hsmd, ["TrentService.ListKeys"], {})
    assert status == 200 and "Keys" in body, body


def test_unknown_access_key(hsmd):
    r = signed_request(hsmd, TARGET, BODY, akid="AKIAUNKNOWNUNKNOWN00", secret=DEV_SECRET)
    refused(hsmd, r, "UnrecognizedClientException", "AKIAUNKNOWNUNKNOWN00")


def test_session_token_is_refused_not_ignored(hsmd):
    """hsmd issues no temporary credentials: a signed X-Amz-Security-Token (an AWS role's, left
    in a client's environment) is refused as AWS refuses a token it did not issue."""
    with_token = boto3.client("kms", region_name=REGION, endpoint_url=hsmd.endpoint,
                              aws_access_key_id=DEV_AKID, aws_secret_access_key=DEV_SECRET,
                              aws_session_token="FQoGZXIvYXdzEXAMPLEtoken")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        with_token.list_keys()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert "session tokens" in e.value.response["Error"]["Message"]
    # Left out of SignedHeaders, it is refused all the same; the record names the key.
    def add_token(headers, payload):
        headers["X-Amz-Security-Token"] = "FQoGZXIvYXdzEXAMPLEtoken"
        return headers, payload
    r = signed_request(hsmd, TARGET, BODY, mutate=add_token)
    refused(hsmd, r, "UnrecognizedClientException", DEV_AKID)


def test_wrong_secret(hsmd, creds):
    akid, secret = creds
    wrong = secret[:-1] + ("B" if secret.endswith("A") else "A")  # never the secret itself
    r = signed_request(hsmd, TARGET, BODY, akid=akid, secret=wrong)
    refused(hsmd, r, "InvalidSignatureException", akid)
    good_call(hsmd, akid, secret)


def test_revoked_access_key(hsmd):
    akid, secret = new_user(hsmd, "revoked-user", ["crypto-user"])
    good_call(hsmd, akid, secret)
    admin(hsmd, "RevokeAccessKey", {"AccessKeyId": akid})
    time.sleep(0.1)
    r = signed_request(hsmd, TARGET, BODY, akid=akid, secret=secret)
    refused(hsmd, r, "UnrecognizedClientException", akid)
    keys = admin(hsmd, "ListAccessKeys", {"UserName": "revoked-user"})["AccessKeys"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(akid, "Inactive")]


def test_a_user_holds_at_most_ten_active_access_keys(hsmd):
    """Each active key is looked up by every node every second: a user's eleventh is
    refused with LimitExceededException and makes nothing, until one is revoked."""
    first, _ = new_user(hsmd, "keyring-user", ["crypto-user"])
    made = [first] + [admin(hsmd, "CreateAccessKey", {"UserName": "keyring-user"})[
        "AccessKeyId"] for _ in range(9)]
    out = admin(hsmd, "CreateAccessKey", {"UserName": "keyring-user"}, expect=400)
    assert out["__type"] == "LimitExceededException", out
    assert "already has 10 active access keys" in out["message"], out
    keys = admin(hsmd, "ListAccessKeys", {"UserName": "keyring-user"})["AccessKeys"]
    assert sorted(k["AccessKeyId"] for k in keys) == sorted(made)
    admin(hsmd, "RevokeAccessKey", {"AccessKeyId": made[0]})
    admin(hsmd, "CreateAccessKey", {"UserName": "keyring-user"})


@pytest.mark.parametrize("minutes", [-6, -30, 6, 60 * 24])
def test_stale_or_future_request_time(hsmd, creds, minutes):
    akid, secret = creds
    when = datetime.datetime.utcnow() + datetime.timedelta(minutes=minutes)
    r = signed_at(hsmd, when, TARGET, BODY, akid=akid, secret=secret)
    refused(hsmd, r, "InvalidSignatureException", akid)


@pytest.mark.parametrize("minutes", [-4, 4])
def test_clock_skew_within_five_minutes_is_accepted(hsmd, creds, minutes):
    akid, secret = creds
    when = datetime.datetime.utcnow() + datetime.timedelta(minutes=minutes)
    r = signed_at(hsmd, when, TARGET, BODY, akid=akid, secret=secret)
    assert r.status_code == 200, r.text


def test_region_is_checked_with_boto3(hsmd):
    def kms_in(region):
        return boto3.client("kms", region_name=region, endpoint_url=hsmd.endpoint,
                            aws_access_key_id=DEV_AKID, aws_secret_access_key=DEV_SECRET)

    with pytest.raises(botocore.exceptions.ClientError) as e:
        kms_in("eu-west-1").list_keys()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Keys" in kms_in(REGION).list_keys()


def test_hsmctl_and_the_pkcs11_module_sign_for_the_region_of_the_environment():
    """A node in eu-west-1: hsmctl and the PKCS#11 module take the region from
    AWS_REGION, else AWS_DEFAULT_REGION (what aws-cli and boto3 read), unless
    told otherwise (--region, HSM_PKCS11_REGION)."""
    node = start_dev(["--region", "eu-west-1"])
    try:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
        base.update(AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET)

        def hsmctl(*args, **env):
            return subprocess.run([HSMCTL, "--endpoint", node.endpoint] + list(args) +
                                  ["user", "list"], env=dict(base, **env),
                                  capture_output=True, text=True, timeout=60)

        p = hsmctl()
        assert p.returncode == 1 and "InvalidSignatureException" in p.stderr, p.stderr
        assert "not 'us-east-1'" in p.stderr, p.stderr
        for env in ({"AWS_DEFAULT_REGION": "eu-west-1"}, {"AWS_REGION": "eu-west-1"},
                    {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "us-east-1"}):
            p = hsmctl(**env)
            assert p.returncode == 0 and "dev" in p.stdout, (env, p.stderr)
        assert hsmctl("--region", "us-east-1", AWS_DEFAULT_REGION="eu-west-1").returncode == 1
        assert hsmctl("--region", "eu-west-1").returncode == 0

        def pkcs11_tool(**env):
            env = dict(base, HSM_PKCS11_ENDPOINT=node.endpoint, **env)
            return subprocess.run(["pkcs11-tool", "--module",
                                   os.path.join(BUILD, "libhsm_pkcs11.so"), "--login", "--pin",
                                   f"{DEV_AKID}:{DEV_SECRET}", "-O"],
                                  env=env, capture_output=True, text=True, timeout=120)

        p = pkcs11_tool()
        assert p.returncode != 0 and "C_Login failed" in p.stderr, (p.stdout, p.stderr)
        p = pkcs11_tool(AWS_DEFAULT_REGION="eu-west-1")
        assert p.returncode == 0, (p.stdout, p.stderr)
        p = pkcs11_tool(AWS_DEFAULT_REGION="eu-west-1", HSM_PKCS11_REGION="us-east-1")
        assert p.returncode != 0 and "C_Login failed" in p.stderr, (p.stdout, p.stderr)
    finally:
        node.cleanup()


# ---- Lockout --------------------------------------------------------------------------------

BAD_SIG = auth_part(lambda p: p.update(Signature=hex_flip(p["Signature"], 0)))


def users(server):
    return {u["UserName"]: u for u in admin(server, "ListUsers")["Users"]}


def bad(server, akid, secret, n):
    for _ in range(n):
        r = signed_request(server, TARGET, BODY, akid=akid, secret=secret, mutate=BAD_SIG)
        refused(server, r, "InvalidSignatureException", akid)


def test_lockout_after_five_bad_signatures_survives_restart():
    server = start_dev()
    try:
        akid, secret = new_user(server, "lock-me", ["crypto-user"])
        # Failures that are not consecutive do not lock.
        bad(server, akid, secret, 4)
        assert users(server)["lock-me"]["FailedAuthentications"] == 4
        good_call(server, akid, secret)
        assert users(server)["lock-me"]["FailedAuthentications"] == 0
        # Three now, two after a restart: the counter is persistent.
        bad(server, akid, secret, 3)
        server = restart_dev(server)
        u = users(server)["lock-me"]
        assert (u["FailedAuthentications"], u["Locked"]) == (3, False)
        bad(server, akid, secret, 2)
        assert users(server)["lock-me"]["Locked"] is True
        # The correct signature is refused now, and so audited.
        r = signed_request(server, TARGET, BODY, akid=akid, secret=secret)
        refused(server, r, "AccessDeniedException", akid, status=403)
        assert "locked" in r.json()["message"] and "lock-me" in r.json()["message"]
        # Without the secret nobody learns the user's name or that it is locked; nor do
        # more failures count.
        r = signed_request(server, TARGET, BODY, akid=akid, secret=secret, mutate=BAD_SIG)
        refused(server, r, "InvalidSignatureException", akid)
        assert "lock" not in r.text and "lock-me" not in r.text
        assert users(server)["lock-me"]["FailedAuthentications"] == 5
        # Still locked after a restart.
        server = restart_dev(server)
        r = signed_request(server, TARGET, BODY, akid=akid, secret=secret)
        refused(server, r, "AccessDeniedException", akid, status=403)
        # Other users are not affected; an officer unlocks.
        admin(server, "UnlockUser", {"UserName": "lock-me"})
        u = users(server)["lock-me"]
        assert (u["Locked"], u["FailedAuthentications"]) == (False, 0)
        good_call(server, akid, secret)
        # Only a crypto-officer may unlock.
        bad(server, akid, secret, 5)
        admin(server, "UnlockUser", {"UserName": "lock-me"}, akid=akid, secret=secret, expect=403)
        admin(server, "UnlockUser", {"UserName": "lock-me"})
        good_call(server, akid, secret)
        admin(server, "UnlockUser", {"UserName": "nobody"}, expect=400)
    finally:
        server.cleanup()


def test_disabled_user_is_refused(hsmd):
    akid, secret = new_user(hsmd, "to-disable", ["crypto-user"])
    good_call(hsmd, akid, secret)
    admin(hsmd, "DisableUser", {"UserName": "to-disable"})
    r = signed_request(hsmd, TARGET, BODY, akid=akid, secret=secret)
    refused(hsmd, r, "AccessDeniedException", akid, status=403)
    assert "disabled" in r.json()["message"]
    # A wrong signature learns nothing of it, and does not count toward a lockout.
    r = signed_request(hsmd, TARGET, BODY, akid=akid, secret=secret, mutate=BAD_SIG)
    refused(hsmd, r, "InvalidSignatureException", akid)
    assert "disabled" not in r.text and "to-disable" not in r.text
    assert users(hsmd)["to-disable"]["FailedAuthentications"] == 0
    admin(hsmd, "EnableUser", {"UserName": "to-disable"})
    good_call(hsmd, akid, secret)


def test_unknown_keys_do_not_lock_anyone(hsmd):
    for _ in range(6):
        r = signed_request(hsmd, TARGET, BODY, akid="AKIAUNKNOWNUNKNOWN01", secret="x" * 40)
        assert r.status_code == 400
    good_call(hsmd, DEV_AKID, DEV_SECRET)


def test_an_error_quoting_bytes_that_are_not_utf8_stays_readable_json(hsmd):
    """A refusal quotes what the request sent (X-Amz-Date, cut to 32 bytes): bytes that
    are not UTF-8, or a character cut in two, become U+FFFD, so the answer is JSON a
    client can read."""
    import socket
    import urllib.parse
    u = urllib.parse.urlsplit(hsmd.endpoint)
    for date, shown in ((b"2026\xc3\xa9\xff\xfe0101T000000Z", "2026\u00e9\ufffd\ufffd0101"),
                        (b"\xe2\x82\xac" * 12, "\u20ac" * 10 + "\ufffd\ufffd")):
        head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n"
                b"X-Amz-Target: TrentService.ListKeys\r\nX-Amz-Date: " + date + b"\r\n"
                b"Authorization: AWS4-HMAC-SHA256 Credential=" + DEV_AKID.encode() +
                b"/20260101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, "
                b"Signature=" + b"0" * 64 + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(head)
            raw = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                raw += chunk
        status, body = raw.split(b" ", 2)[1], raw.split(b"\r\n\r\n", 1)[1]
        assert status == b"400", raw
        answer = json.loads(body.decode("utf-8"))
        assert answer["__type"] == "IncompleteSignatureException", answer
        assert shown in answer["message"], answer


def test_locked_memory_is_taken_for_an_answer_only_once_its_caller_is_known(securewatch,
                                                                            tmp_path):
    """An answer that may carry a secret (Decrypt's, GenerateRandom's, CreateAccessKey's)
    is written in the secure heap, the locked memory that holds the keys,
    with room for it made at once.  That room is made only once the request is
    authenticated: a caller without credentials, whatever it sends, takes none of it
    (as 1 MiB bodies, such callers could fill the heap and make a real caller's answer
    fail).  An authenticated one gets at most what the largest such answer needs, not
    room sized by any body it sends."""
    import socket
    import struct
    watch = tmp_path / "watch"
    watch.write_bytes(bytes(8))
    server = start_dev(env={"LD_PRELOAD": securewatch, "HSM_TEST_SECURE_WATCH": str(watch)})

    def largest():
        return struct.unpack("<q", watch.read_bytes())[0]

    def reset():
        with open(watch, "r+b") as f:
            f.write(bytes(8))

    try:
        big = json.dumps({"CiphertextBlob": "A" * 900_000}).encode()
        port = int(server.endpoint.rsplit(":", 1)[1])
        for target in ("TrentService.Decrypt", "TrentService.GenerateRandom",
                       "HsmdAdmin.CreateAccessKey", "HsmdAdmin.NoSuchOperation"):
            reset()
            head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: {target}\r\n"
                    "Content-Type: application/x-amz-json-1.1\r\nConnection: close\r\n"
                    f"Content-Length: {len(big)}\r\n\r\n").encode()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(head + big)
                raw = b""
                while chunk := s.recv(65536):
                    raw += chunk
            assert raw.startswith(b"HTTP/1.1 400 "), raw[:200]
            assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["__type"] == \
                "MissingAuthenticationTokenException", raw[:300]
            # A worker's own small state aside (made at its first request), nothing.
            assert largest() < 1024, (target, largest())
        # Authenticated: room for the largest secret answer (GcmDecrypt's 64 KiB of
        # plaintext in base64), not for 900 KB.
        reset()
        st, out = signed_call(server, "TrentService.Decrypt", {"CiphertextBlob": "A" * 900_000})
        assert (st, out["__type"]) == (400, "ValidationException"), out
        assert 96 * 1024 < largest() <= 128 * 1024, largest()
        # An ordinary Decrypt still gets its room, and its answer.
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key, Plaintext=b"p" * 4096)["CiphertextBlob"]
        reset()
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"p" * 4096
        assert 4096 < largest() <= 16 * 1024, largest()
    finally:
        server.cleanup()


def test_an_access_key_made_while_the_id_list_is_read_works_at_once(listhold, tmp_path):
    """Ids missing from the node's list of access key ids are looked up at a bounded
    rate, so made-up ids cannot flood the store; a key made here marks the list stale,
    so it works at once.  A CreateAccessKey that lands while the list is being read
    must stay marked: the list read before it lacks the key, and published as fresh it
    would have the new key refused while made-up ids spend the lookups."""
    import threading
    hold = tmp_path / "hold"
    hold.mkdir()
    server = start_dev(env={"LD_PRELOAD": listhold, "HSM_TEST_LIST_HOLD": str(hold)})
    stop = threading.Event()
    threads = []
    try:
        admin(server, "CreateUser", {"UserName": "racer", "Roles": ["crypto-user"]})
        fakes = [client(server, akid=f"AKIAMADEUP{i:010d}", secret="x" * 40) for i in range(4)]

        def flood(c):
            while not stop.is_set():
                try:
                    c.list_keys()
                except botocore.exceptions.ClientError:
                    pass

        threads += [threading.Thread(target=flood, args=(c,)) for c in fakes]
        for t in threads:
            t.start()
        time.sleep(1.5)  # the lookups' burst spent
        for attempt in range(3):
            (hold / "arm").touch()
            deadline = time.monotonic() + 10
            while not (hold / "held").exists():
                assert time.monotonic() < deadline, "the node never read its access key ids"
                time.sleep(0.01)
            (hold / "held").unlink()
            made = admin(server, "CreateAccessKey", {"UserName": "racer"})
            (hold / "go").touch()
            while (hold / "go").exists():
                time.sleep(0.005)
            # The list without the new key is in place now, until the next read.
            fresh = client(server, akid=made["AccessKeyId"], secret=made["SecretAccessKey"])
            fresh.list_keys()  # refused with UnrecognizedClientException before
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        server.cleanup()
