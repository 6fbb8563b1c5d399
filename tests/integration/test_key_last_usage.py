"""GetKeyLastUsage: each key's last successful cryptographic use.

Every successful Encrypt, Decrypt, ReEncrypt (for both keys), GenerateDataKey*, Sign, Verify,
GenerateMac, VerifyMac and DeriveSharedSecret counts as itself (hsmd's SignToken as Sign, its
GcmEncrypt and GcmDecrypt as Encrypt and Decrypt), with the time, and the id of the request,
which its audit record carries.  Failures, DryRun and reads do not count.  TrackingStartDate is
when the store began recording (or the key's creation, if later).  Requests go out signed by
botocore's own SigV4 signer, as Debian's boto3 1.26 predates the operation.
"""
import json
import os
import sqlite3
import subprocess
import time
import types

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, signed_call, signed_request, start_dev
from helpers import (ACCOUNT, audit_record, b64, call_error, call_ok, key_arn, kms_front,
                     new_user, request_id, restart_dev)


def last_usage(server, key, **kw):
    return call_ok(server, "GetKeyLastUsage", {"KeyId": key}, **kw)


def use(server, op, body, target="TrentService"):
    """A request that must succeed; the id hsmd gave it."""
    r = signed_request(server, f"{target}.{op}", body)
    assert r.status_code == 200, (op, r.status_code, r.text)
    return request_id(r)


def key(server, **kw):
    return call_ok(server, "CreateKey", kw)["KeyMetadata"]["KeyId"]


def expect_last(server, key_id, op, rid, t0, t1):
    out = last_usage(server, key_id)
    last = out.get("KeyLastUsage")
    assert last, out
    assert (last["Operation"], last["KmsRequestId"], last["CloudTrailEventId"]) == (op, rid, rid)
    assert t0 - 1 <= last["Timestamp"] <= t1 + 1, (last, t0, t1)
    return out


@pytest.fixture(scope="module")
def keys(hsmd):
    k = {"sym": key(hsmd), "sym2": key(hsmd),
         "sign": key(hsmd, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"),
         "hmac": key(hsmd, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"),
         "ecdh": key(hsmd, KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT"),
         "jwt": key(hsmd, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")}
    st, out = signed_call(hsmd, "HsmdJwt.EnableJwtSigning", {"KeyId": k["jwt"]})
    assert st == 200, out
    return k


def test_a_new_key_has_no_use_and_is_tracked_from_its_creation(hsmd):
    kid = key(hsmd, Description="fresh")
    out = last_usage(hsmd, kid)
    assert out["KeyLastUsage"] == {}, out  # the API's answer for a key never used
    created = call_ok(hsmd, "DescribeKey", {"KeyId": kid})["KeyMetadata"]["CreationDate"]
    assert out["KeyId"] == kid
    assert out["KeyCreationDate"] == created
    # The store began recording before the key existed: tracking starts at its creation.
    assert out["TrackingStartDate"] == created
    # Reading a key's metadata, its public key or its last use is no use of it.
    pub = key(hsmd, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    call_ok(hsmd, "GetPublicKey", {"KeyId": pub})
    call_ok(hsmd, "DescribeKey", {"KeyId": pub})
    last_usage(hsmd, pub)
    assert last_usage(hsmd, pub)["KeyLastUsage"] == {}


def test_each_successful_operation_counts_as_itself(hsmd, keys):
    sym, sign, hmac = keys["sym"], keys["sign"], keys["hmac"]
    blob = call_ok(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"x")})["CiphertextBlob"]
    sig = call_ok(hsmd, "Sign", {"KeyId": sign, "Message": b64(b"m"),
                                 "SigningAlgorithm": "RSASSA_PSS_SHA_256"})["Signature"]
    mac = call_ok(hsmd, "GenerateMac", {"KeyId": hmac, "Message": b64(b"m"),
                                        "MacAlgorithm": "HMAC_SHA_256"})["Mac"]
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    spki = peer.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    gcm = signed_call(hsmd, "HsmdCipher.GcmEncrypt", {"KeyId": sym, "Plaintext": b64(b"g")})[1]
    cases = [
        (sym, "Encrypt", "Encrypt", {"KeyId": sym, "Plaintext": b64(b"abc")}, "TrentService"),
        (sym, "Decrypt", "Decrypt", {"CiphertextBlob": blob}, "TrentService"),
        (sym, "GenerateDataKey", "GenerateDataKey", {"KeyId": sym, "KeySpec": "AES_256"},
         "TrentService"),
        (sym, "GenerateDataKeyWithoutPlaintext", "GenerateDataKeyWithoutPlaintext",
         {"KeyId": sym, "NumberOfBytes": 16}, "TrentService"),
        (sym, "GenerateDataKeyPair", "GenerateDataKeyPair",
         {"KeyId": sym, "KeyPairSpec": "ECC_NIST_P256"}, "TrentService"),
        (sym, "GenerateDataKeyPairWithoutPlaintext", "GenerateDataKeyPairWithoutPlaintext",
         {"KeyId": sym, "KeyPairSpec": "ECC_NIST_P256"}, "TrentService"),
        (sign, "Sign", "Sign", {"KeyId": sign, "Message": b64(b"m"),
                                "SigningAlgorithm": "RSASSA_PSS_SHA_256"}, "TrentService"),
        (sign, "Verify", "Verify", {"KeyId": sign, "Message": b64(b"m"), "Signature": sig,
                                    "SigningAlgorithm": "RSASSA_PSS_SHA_256"}, "TrentService"),
        (hmac, "GenerateMac", "GenerateMac", {"KeyId": hmac, "Message": b64(b"m"),
                                              "MacAlgorithm": "HMAC_SHA_256"}, "TrentService"),
        (hmac, "VerifyMac", "VerifyMac", {"KeyId": hmac, "Message": b64(b"m"), "Mac": mac,
                                          "MacAlgorithm": "HMAC_SHA_256"}, "TrentService"),
        (keys["ecdh"], "DeriveSharedSecret", "DeriveSharedSecret",
         {"KeyId": keys["ecdh"], "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(spki)},
         "TrentService"),
        (sym, "GcmEncrypt", "Encrypt", {"KeyId": sym, "Plaintext": b64(b"g")}, "HsmdCipher"),
        (sym, "GcmDecrypt", "Decrypt", {"KeyId": sym, "Ciphertext": gcm["Ciphertext"],
                                        "Iv": gcm["Iv"]}, "HsmdCipher"),
        (keys["jwt"], "SignToken", "Sign", {"KeyId": keys["jwt"], "Claims": {"sub": "s"}},
         "HsmdJwt"),
    ]
    for kid, op, counted, body, target in cases:
        t0 = time.time()
        rid = use(hsmd, op, body, target)
        t1 = time.time()
        expect_last(hsmd, kid, counted, rid, t0, t1)
        # The id is the request's audit record's: the trail tells who used the key, and how.
        rec = audit_record(hsmd.data_dir, rid)
        assert (rec["op"], rec["outcome"], rec["key_id"]) == (op, "success", kid), rec


def test_failures_dry_runs_and_reads_do_not_count(hsmd, keys):
    sym, sign = keys["sym2"], keys["sign"]
    t0 = time.time()
    rid = use(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"x"),
                                "EncryptionContext": {"a": "b"}})
    t1 = time.time()
    expect_last(hsmd, sym, "Encrypt", rid, t0, t1)
    blob = call_ok(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"y")})["CiphertextBlob"]
    rid2 = use(hsmd, "Decrypt", {"CiphertextBlob": blob})
    t2 = time.time()
    expect_last(hsmd, sym, "Decrypt", rid2, t1, t2)
    # A Decrypt that fails (the wrong context), a DryRun, a refused request, DescribeKey:
    call_error(hsmd, "Decrypt", {"CiphertextBlob": blob, "EncryptionContext": {"a": "c"}},
               "InvalidCiphertextException")
    call_error(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"x"), "DryRun": True},
               "DryRunOperationException", status=412)
    call_error(hsmd, "Sign", {"KeyId": sym, "Message": b64(b"m"),
                              "SigningAlgorithm": "ECDSA_SHA_256"}, "InvalidKeyUsageException")
    call_ok(hsmd, "DescribeKey", {"KeyId": sym})
    expect_last(hsmd, sym, "Decrypt", rid2, t1, t2)
    # A Verify whose signature does not match is no successful use either.
    rid3 = use(hsmd, "Sign", {"KeyId": sign, "Message": b64(b"m"),
                              "SigningAlgorithm": "RSASSA_PSS_SHA_256"})
    t3 = time.time()
    call_error(hsmd, "Verify", {"KeyId": sign, "Message": b64(b"other"),
                                "Signature": b64(bytes(256)),
                                "SigningAlgorithm": "RSASSA_PSS_SHA_256"},
               "KMSInvalidSignatureException")
    expect_last(hsmd, sign, "Sign", rid3, t2, t3)
    assert rid != rid2


def test_reencrypt_counts_for_both_keys(hsmd):
    src, dst = key(hsmd), key(hsmd)
    blob = call_ok(hsmd, "Encrypt", {"KeyId": src, "Plaintext": b64(b"r")})["CiphertextBlob"]
    t0 = time.time()
    rid = use(hsmd, "ReEncrypt", {"CiphertextBlob": blob, "DestinationKeyId": dst})
    t1 = time.time()
    expect_last(hsmd, src, "ReEncrypt", rid, t0, t1)
    expect_last(hsmd, dst, "ReEncrypt", rid, t0, t1)
    # The audit record names both keys.
    rec = audit_record(hsmd.data_dir, rid)
    assert (rec["key_id"], rec["extra"]["source_key_id"]) == (dst, src), rec


def test_key_references_states_errors_and_roles(hsmd, keys):
    sym = keys["sym"]
    call_ok(hsmd, "CreateAlias", {"AliasName": "alias/last-usage", "TargetKeyId": sym})
    by_id = last_usage(hsmd, sym)
    assert last_usage(hsmd, key_arn(sym)) == by_id
    assert last_usage(hsmd, "alias/last-usage")["KeyId"] == sym
    call_error(hsmd, "GetKeyLastUsage", {}, "ValidationException")
    call_error(hsmd, "GetKeyLastUsage", {"KeyId": ""}, "ValidationException")
    call_error(hsmd, "GetKeyLastUsage", {"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"},
               "NotFoundException")
    call_error(hsmd, "GetKeyLastUsage",
               {"KeyId": f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{sym}"}, "NotFoundException")
    # A disabled key, and one pending deletion, still tell their last use.
    kid = key(hsmd)
    rid = use(hsmd, "Encrypt", {"KeyId": kid, "Plaintext": b64(b"d")})
    call_ok(hsmd, "DisableKey", {"KeyId": kid})
    assert last_usage(hsmd, kid)["KeyLastUsage"]["KmsRequestId"] == rid
    call_ok(hsmd, "ScheduleKeyDeletion", {"KeyId": kid, "PendingWindowInDays": 7})
    assert last_usage(hsmd, kid)["KeyLastUsage"]["KmsRequestId"] == rid
    # Officers and auditors may ask; a crypto user may not.
    aud = new_user(hsmd, "usage-auditor", ["auditor"])
    app = new_user(hsmd, "usage-app", ["crypto-user"])
    assert last_usage(hsmd, sym, akid=aud[0], secret=aud[1]) == last_usage(hsmd, sym)
    call_error(hsmd, "GetKeyLastUsage", {"KeyId": sym}, "AccessDeniedException",
               akid=app[0], secret=app[1])
    # The question is audited like any request.
    r = signed_request(hsmd, "TrentService.GetKeyLastUsage", {"KeyId": sym})
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["outcome"], rec["key_id"]) == ("GetKeyLastUsage", "success", sym)


def stored_uses(server):
    """The uses the node's SQLite store holds (read beside the running node, as SQLite allows)."""
    db = sqlite3.connect(f"file:{os.path.join(server.data_dir, 'hsmd.db')}?mode=ro", uri=True)
    try:
        return db.execute("SELECT key_id, request_id FROM key_usage").fetchall()
    finally:
        db.close()


def test_uses_are_written_at_shutdown():
    # Written once an hour: only the stop writes this use to the store.
    server = start_dev(extra_args=["--key-usage-flush-ms", "3600000"])
    try:
        kid = key(server)
        t0 = time.time()
        rid = use(server, "Encrypt", {"KeyId": kid, "Plaintext": b64(b"p")})
        t1 = time.time()
        before = expect_last(server, kid, "Encrypt", rid, t0, t1)  # from the node's memory
        time.sleep(1.5)
        assert stored_uses(server) == []
        server = restart_dev(server)
        assert stored_uses(server) == [(kid, rid)]
        after = expect_last(server, kid, "Encrypt", rid, t0, t1)
        assert after == before
    finally:
        server.cleanup()


def test_uses_are_written_every_flush_interval():
    server = start_dev(extra_args=["--key-usage-flush-ms", "200"])
    try:
        kid = key(server)
        rid = use(server, "Encrypt", {"KeyId": kid, "Plaintext": b64(b"p")})
        deadline = time.monotonic() + 30
        while stored_uses(server) != [(kid, rid)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored_uses(server) == [(kid, rid)]
    finally:
        server.cleanup()


def test_timestamps_are_epoch_seconds_to_the_millisecond(hsmd, keys):
    rid = use(hsmd, "GenerateDataKey", {"KeyId": keys["sym"], "NumberOfBytes": 32})
    r = signed_request(hsmd, "TrentService.GetKeyLastUsage", {"KeyId": keys["sym"]})
    raw = r.content.decode()
    # As in KMS responses: JSON numbers, never strings; the use's to the millisecond.
    stamp = raw.split('"Timestamp":', 1)[1].split(",", 1)[0]
    whole, frac = stamp.split(".")
    assert whole.isdigit() and len(frac) == 3 and frac.isdigit(), raw
    assert r.json()["KeyLastUsage"]["KmsRequestId"] == rid
    assert isinstance(r.json()["TrackingStartDate"], int)


def hsmctl(server, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET)
    return subprocess.run([HSMCTL, "--endpoint", server.endpoint, "key", "usage", *args],
                          env=env, capture_output=True, text=True, timeout=120)


def test_hsmctl_key_usage_lists_last_uses_and_unused_keys():
    server = start_dev()
    try:
        used, idle = key(server), key(server)
        rid = use(server, "Sign", {"KeyId": key(server, KeySpec="ECC_NIST_P256",
                                                   KeyUsage="SIGN_VERIFY"),
                                   "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"})
        rid_used = use(server, "Encrypt", {"KeyId": used, "Plaintext": b64(b"x")})
        # Every key, one line each under a header.
        p = hsmctl(server)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines[0].split() == ["KEY", "LAST", "USED", "OPERATION", "REQUEST"]
        rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
        assert len(rows) == 3
        assert rows[used][2:] == ["Encrypt", rid_used]
        assert rows[used][1].endswith("Z") and rows[used][1].startswith("20")
        assert rid in p.stdout
        assert rows[idle][1:3] == ["-", "-"] and "none recorded since" in " ".join(rows[idle])
        # Named keys, as JSON: the GetKeyLastUsage answers.
        p = hsmctl(server, used, idle, "--json")
        assert p.returncode == 0, p.stderr
        answers = [json.loads(ln) for ln in p.stdout.splitlines()]
        assert [a["KeyId"] for a in answers] == [used, idle]
        assert answers[0]["KeyLastUsage"]["KmsRequestId"] == rid_used
        assert answers[1]["KeyLastUsage"] == {}
        # Unused for a day: none, as none has been there a day (a key made a minute ago
        # is no candidate to disable).
        p = hsmctl(server, "--unused-days", "1", "--json")
        assert p.returncode == 0, p.stderr
        assert p.stdout == "", p.stdout
        # Three days on (the keys and the store's recording made three days earlier):
        # the idle key, never used since; the used ones were used within the day.
        server.stop()
        db = sqlite3.connect(os.path.join(server.data_dir, "hsmd.db"))
        with db:
            db.execute("UPDATE keys SET created = created - 3 * 86400")
            db.execute("UPDATE usage_tracking SET since = since - 3 * 86400")
        db.close()
        server = restart_dev(server)
        p = hsmctl(server, "--unused-days", "1", "--json")
        assert p.returncode == 0, p.stderr
        got = [json.loads(ln) for ln in p.stdout.splitlines()]
        assert [(a["KeyId"], a["KeyLastUsage"]) for a in got] == [(idle, {})], got
        # Bad input: a malformed day count, a key that does not exist (named, exit 1).
        p = hsmctl(server, "--unused-days", "soon")
        assert p.returncode == 2 and "--unused-days" in p.stderr
        p = hsmctl(server, "1234abcd-12ab-34cd-56ef-1234567890ab")
        assert p.returncode == 1 and "NotFound" in p.stderr + p.stdout, (p.stdout, p.stderr)
    finally:
        server.cleanup()


def test_hsmctl_key_usage_shows_impossible_dates_as_unknown():
    """Dates no 64-bit count of seconds holds (here from a node that is not hsmd) print
    as '?': converting them to an integer is undefined, and printed a made-up date."""
    answers = {
        "k-used": {"KeyId": "k-used", "TrackingStartDate": 1.7e9,
                   "KeyLastUsage": {"Timestamp": 1e300, "Operation": "Sign",
                                    "KmsRequestId": "r-1"}},
        "k-idle": {"KeyId": "k-idle", "TrackingStartDate": -1e300, "KeyLastUsage": {}},
        "k-fine": {"KeyId": "k-fine", "TrackingStartDate": 1.7e9,
                   "KeyLastUsage": {"Timestamp": 1700000000.25, "Operation": "Encrypt",
                                    "KmsRequestId": "r-2"}},
    }

    def answer(target, body):  # every request: no hsmd behind it
        return 200, json.dumps(answers[json.loads(body)["KeyId"]]).encode()

    with kms_front(None, answer) as (front, _):
        p = hsmctl(types.SimpleNamespace(endpoint=front), "k-used", "k-idle", "k-fine")
        assert p.returncode == 0, p.stderr
        rows = {ln.split()[0]: ln.split() for ln in p.stdout.splitlines()[1:]}
        assert rows["k-used"][1:] == ["?", "Sign", "r-1"], rows
        assert rows["k-idle"][1:] == ["-", "-", "(none", "recorded", "since", "?)"], rows
        assert rows["k-fine"][1:] == ["2023-11-14T22:13:20.250Z", "Encrypt", "r-2"], rows
