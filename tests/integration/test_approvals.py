"""Quorum approvals: sensitive requests run only once M custodians approved that
identical request.  Driven with boto3, aws-cli, hsmctl and raw requests signed by
botocore's SigV4 signer, against a node started with --approval-quorum 2."""
import base64
import concurrent.futures
import datetime
import glob
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, client, signed_call, start_dev
from helpers import (ACCOUNT, AwsCli, admin, audit_records, audit_records_until, b64,
                     eventually, metric, new_user, raises)

DEV_ENV = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
ID = re.compile(r"approval request ([0-9a-f]{32})")


@pytest.fixture(scope="module")
def node():
    """A dev node given custodians and an officer, then restarted with approvals on."""
    first = start_dev()
    users = {}
    for name, roles in {"alice": ["custodian"], "bob": ["custodian"], "carol": ["custodian"],
                        "dan": ["custodian"], "ops": ["crypto-officer", "custodian"],
                        "app": ["crypto-user"], "audit": ["auditor"]}.items():
        users[name] = new_user(first, name, roles)
    first.stop()
    server = Hsmd(["--dev", "--approval-quorum", "2"], env=DEV_ENV, data_dir=first.data_dir)
    server.users = users
    yield server
    server.cleanup()
    first.cleanup()


@pytest.fixture(scope="module")
def kms(node):
    return client(node)


def as_user(node, name):
    akid, secret = node.users[name]
    return {"akid": akid, "secret": secret}


def approval_of(resp):
    """The approval request an ApprovalRequiredException names."""
    assert resp["Error"]["Code"] == "ApprovalRequiredException", resp
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    m = ID.search(resp["Error"]["Message"])
    assert m, resp["Error"]["Message"]
    return m.group(1)


def approve(node, who, approval, *more, expect=200):
    """Custodian who (then each of more) approves; the last answer."""
    for name in (who,) + more:
        out = admin(node, "ApproveRequest", {"ApprovalId": approval}, expect=expect,
                    **as_user(node, name))
    return out


def deletion_refused(kms, key, days):
    """ScheduleKeyDeletion refused for approval; the approval request it names."""
    return approval_of(raises("ApprovalRequiredException", kms.schedule_key_deletion, KeyId=key,
                              PendingWindowInDays=days))


def get(node, approval, who="audit"):
    return admin(node, "GetApproval", {"ApprovalId": approval}, **as_user(node, who))


def hsmctl(node, who, *args):
    akid, secret = node.users[who]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=akid, AWS_SECRET_ACCESS_KEY=secret)
    return subprocess.run([HSMCTL, "--endpoint", node.endpoint] + list(args), env=env,
                          capture_output=True, text=True, timeout=30)


def new_key(kms):
    return kms.create_key()["KeyMetadata"]["KeyId"]


def test_a_quorum_its_custodians_cannot_meet_is_refused_at_start():
    with pytest.raises(RuntimeError) as e:
        start_dev(["--approval-quorum", "2"])
    assert "approval_quorum = 2, but the store has 0 enabled custodians" in str(e.value)
    assert "hsmd exited with 2" in str(e.value) and "(approval_quorum from --approval-quorum)" \
        in str(e.value) and "approvals.c" not in str(e.value)


def test_metrics_show_custodians_falling_below_the_quorum():
    """hsmd_approval_custodians counts the custodians who could approve; a custodian
    disabled below hsmd_approval_quorum shows at the next round (approvals stop, and the
    node would not start again: HsmdApprovalQuorumUnreachable)."""
    first = start_dev()
    server = None
    try:
        for name in ("alice", "bob"):
            new_user(first, name, ["custodian"])
        assert metric(first, "hsmd_approval_quorum") == 0
        assert metric(first, "hsmd_approval_custodians") == 0  # not counted without a quorum
        first.stop()
        server = Hsmd(["--dev", "--approval-quorum", "2", "--scheduler-interval-seconds", "1"],
                      env=DEV_ENV, data_dir=first.data_dir)
        assert metric(server, "hsmd_approval_quorum") == 2
        assert metric(server, "hsmd_approval_custodians") == 2  # from the start's own check
        admin(server, "DisableUser", {"UserName": "bob"})
        assert eventually(lambda: metric(server, "hsmd_approval_custodians") == 1)
        admin(server, "EnableUser", {"UserName": "bob"}, expect=400)  # waits for approval
        assert metric(server, "hsmd_approval_custodians") == 1
    finally:
        if server is not None:
            server.cleanup()
        first.cleanup()


@pytest.mark.parametrize("ops,why", [("Encrypt", "Encrypt"), ("GetKeyPolicy", "GetKeyPolicy"),
                                     ("ListApprovals", "ListApprovals"), ("Nope", "Nope"),
                                     ("ListCertificates", "ListCertificates"),
                                     ("Unseal", "Unseal")])
def test_only_operations_that_change_something_can_wait(ops, why):
    with pytest.raises(RuntimeError) as e:
        start_dev(["--approval-operations", ops])
    assert f"'{why}' is not an operation that can wait for approval" in str(e.value)


def test_schedule_key_deletion_waits_for_two_custodians(node, kms):
    key = new_key(kms)
    first = raises("ApprovalRequiredException", kms.schedule_key_deletion, KeyId=key,
                   PendingWindowInDays=7)
    approval = approval_of(first)
    msg = first["Error"]["Message"]
    assert msg.startswith(f"ScheduleKeyDeletion needs 2 custodians' approval: approval request "
                          f"{approval} opened with 0, until ")
    assert msg.endswith("; once approved (hsmctl approval approve ID), send this request again")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"

    a = get(node, approval)
    assert (a["Operation"], a["Requester"], a["State"], a["Required"], a["Approvals"],
            a["Approvers"]) == ("ScheduleKeyDeletion", "dev", "Pending", 2, 0, [])
    assert json.loads(a["Request"]) == {"KeyId": key, "PendingWindowInDays": 7}
    assert a["ExpirationDate"] - a["CreationDate"] == pytest.approx(86400, abs=2)

    # The identical retry finds the same request; nothing runs yet.
    again = raises("ApprovalRequiredException", kms.schedule_key_deletion, KeyId=key,
                   PendingWindowInDays=7)
    assert approval_of(again) == approval and "is open with 0" in again["Error"]["Message"]

    out = approve(node, "alice", approval)
    assert (out["State"], out["Approvals"], out["Approvers"]) == ("Pending", 1, ["alice"])
    one = raises("ApprovalRequiredException", kms.schedule_key_deletion, KeyId=key,
                 PendingWindowInDays=7)
    assert "is open with 1" in one["Error"]["Message"]
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"

    p = hsmctl(node, "bob", "approval", "approve", approval)
    assert p.returncode == 0, p.stderr
    assert "Approvals: 2" in p.stdout and '"PendingWindowInDays": 7' in p.stdout
    # Its dates as a custodian reads them: ISO 8601 UTC, not epoch seconds.
    shown = dict(ln.split(": ", 1) for ln in p.stdout.splitlines() if ": " in ln)
    for name in ("CreationDate", "ExpirationDate"):
        assert re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", shown[name]), shown
    assert shown["ExpirationDate"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                    time.gmtime(a["ExpirationDate"]))

    done = kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert done["KeyState"] == "PendingDeletion"
    assert get(node, approval)["State"] == "Used"

    # Used up: the same request again needs a new approval.
    kms.cancel_key_deletion(KeyId=key)
    later = raises("ApprovalRequiredException", kms.schedule_key_deletion, KeyId=key,
                   PendingWindowInDays=7)
    assert approval_of(later) != approval
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"


def test_an_approval_covers_only_the_identical_request(node, kms):
    key = new_key(kms)
    approval = deletion_refused(kms, key, 10)
    approve(node, "alice", approval, "bob")
    # Another window, another key reference, another requester: other requests.
    other = deletion_refused(kms, key, 11)
    assert other != approval
    arn = kms.describe_key(KeyId=key)["KeyMetadata"]["Arn"]
    assert approval_of(raises("ApprovalRequiredException", kms.schedule_key_deletion,
                              KeyId=arn, PendingWindowInDays=10)) not in (approval, other)
    ops = client(node, **{"akid": node.users["ops"][0], "secret": node.users["ops"][1]})
    assert approval_of(raises("ApprovalRequiredException", ops.schedule_key_deletion,
                              KeyId=key, PendingWindowInDays=10)) != approval
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    # Member order and spacing do not make a request different.
    st, out = signed_call(node, "TrentService.ScheduleKeyDeletion",
                          {"PendingWindowInDays": 10, "KeyId": key})
    assert st == 200 and out["KeyState"] == "PendingDeletion", out


def test_who_may_approve(node, kms):
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "kms:*", "Resource": "*"}]})
    key = new_key(kms)
    ops = client(node, node.users["ops"][0], node.users["ops"][1])
    approval = approval_of(raises("ApprovalRequiredException", ops.put_key_policy, KeyId=key,
                                  PolicyName="default", Policy=policy))
    # Its own requester, though a custodian, may not approve it.
    out = approve(node, "ops", approval, expect=400)
    assert out["__type"] == "AccessDeniedException" and "own request" in out["message"]
    # Nor may users without the custodian role.
    for who in ("app", "audit"):
        out = approve(node, who, approval, expect=400)
        assert out["__type"] == "AccessDeniedException" and "custodian" in out["message"]
    out = admin(node, "ApproveRequest", {"ApprovalId": approval}, expect=400)  # the dev officer
    assert out["__type"] == "AccessDeniedException"
    # Crypto-users cannot even read approval requests.
    out = admin(node, "ListApprovals", {}, expect=400, **as_user(node, "app"))
    assert out["__type"] == "AccessDeniedException"

    approve(node, "carol", approval)
    out = approve(node, "carol", approval, expect=400)
    assert out["__type"] == "AlreadyExistsException" and "already approved" in out["message"]
    assert get(node, approval)["Approvers"] == ["carol"]
    approve(node, "dan", approval)
    ops.put_key_policy(KeyId=key, PolicyName="default", Policy=policy)
    assert get(node, approval)["State"] == "Used"
    out = approve(node, "alice", approval, expect=400)
    assert out["__type"] == "KMSInvalidStateException" and "Used" in out["message"]

    for bad in ("0" * 32, "not-an-id", "A" * 32):
        out = approve(node, "alice", bad, expect=400)
        assert out["__type"] in ("NotFoundException", "ValidationException"), out


def test_a_crypto_user_is_refused_without_opening_a_request(node, kms):
    key = new_key(kms)
    app = client(node, node.users["app"][0], node.users["app"][1])
    before = {a["ApprovalId"] for a in admin(node, "ListApprovals", {"IncludeClosed": True})[
        "Approvals"]}
    raises("AccessDeniedException", app.schedule_key_deletion, KeyId=key)
    after = {a["ApprovalId"] for a in admin(node, "ListApprovals", {"IncludeClosed": True})[
        "Approvals"]}
    assert before == after


def test_a_request_for_no_key_is_refused_without_opening_a_request(node, kms):
    def listed():
        return {a["ApprovalId"] for a in admin(node, "ListApprovals", {"IncludeClosed": True})[
            "Approvals"]}
    before = listed()
    raises("NotFoundException", kms.schedule_key_deletion,
           KeyId="11111111-2222-3333-4444-555555555555", message="does not exist")
    raises("NotFoundException", kms.put_key_policy, KeyId="alias/nothing-here",
           PolicyName="default", Policy="{}")
    assert listed() == before


def test_deny_and_cancel_close_a_request(node, kms):
    key = new_key(kms)
    approval = deletion_refused(kms, key, 20)
    approve(node, "alice", approval)
    p = hsmctl(node, "bob", "approval", "deny", approval)
    assert p.returncode == 0, p.stderr
    a = get(node, approval)
    assert (a["State"], a["ClosedBy"]) == ("Denied", "bob")
    out = approve(node, "carol", approval, expect=400)
    assert out["__type"] == "KMSInvalidStateException" and "Denied" in out["message"]
    # The same request again opens a new one.
    fresh = deletion_refused(kms, key, 20)
    assert fresh != approval
    # Only its requester withdraws it.
    out = admin(node, "CancelRequest", {"ApprovalId": fresh}, expect=400, **as_user(node, "ops"))
    assert out["__type"] == "AccessDeniedException"
    out = admin(node, "CancelRequest", {"ApprovalId": fresh})
    assert (out["State"], out["ClosedBy"]) == ("Cancelled", "dev")
    listed = {a["ApprovalId"]: a for a in admin(node, "ListApprovals", {})["Approvals"]}
    assert approval not in listed and fresh not in listed
    closed = {a["ApprovalId"]: a for a in admin(node, "ListApprovals", {"IncludeClosed": True})[
        "Approvals"]}
    assert closed[approval]["State"] == "Denied" and closed[fresh]["State"] == "Cancelled"
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"


def test_a_request_refused_anyway_opens_no_request(node):
    """A name in use is refused as it would be without approvals: custodians are not asked
    about a request that cannot run (test_approval_gate.py covers every operation)."""
    before = {a["ApprovalId"] for a in admin(node, "ListApprovals", {"IncludeClosed": True})[
        "Approvals"]}
    st, out = signed_call(node, "HsmdAdmin.CreateUser",
                          {"UserName": "alice", "Roles": ["crypto-user"]})
    assert (st, out["__type"]) == (400, "AlreadyExistsException"), out
    st, out = signed_call(node, "TrentService.ScheduleKeyDeletion",
                          {"KeyId": client(node).create_key()["KeyMetadata"]["KeyId"],
                           "PendingWindowInDays": 31})
    assert (st, out["__type"]) == (400, "ValidationException"), out
    after = {a["ApprovalId"] for a in admin(node, "ListApprovals", {"IncludeClosed": True})[
        "Approvals"]}
    assert before == after


def test_a_disabled_custodian_no_longer_counts(node, kms):
    key = new_key(kms)
    approval = deletion_refused(kms, key, 25)
    approve(node, "alice", approval, "dan")
    admin(node, "DisableUser", {"UserName": "dan"})  # not in approval_operations: at once
    try:
        r = raises("ApprovalRequiredException", kms.schedule_key_deletion, KeyId=key,
                   PendingWindowInDays=25)
        assert "is open with 1" in r["Error"]["Message"]
        assert get(node, approval)["Approvals"] == 1
        approve(node, "carol", approval)
        assert kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=25)[
            "KeyState"] == "PendingDeletion"
    finally:
        # Enabling a user waits for approval too.
        st, out = signed_call(node, "HsmdAdmin.EnableUser", {"UserName": "dan"})
        assert (st, out["__type"]) == (400, "ApprovalRequiredException"), out
        enable = ID.search(out["message"]).group(1)
        approve(node, "alice", enable)
        approve(node, "bob", enable)
        st, out = signed_call(node, "HsmdAdmin.EnableUser", {"UserName": "dan"})
        assert st == 200, out


def test_identical_requests_racing_use_an_approval_once(node):
    new = {"UserName": "app"}
    st, out = signed_call(node, "HsmdAdmin.CreateAccessKey", new)
    approval = ID.search(out["message"]).group(1)
    approve(node, "alice", approval, "bob")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: signed_call(node, "HsmdAdmin.CreateAccessKey", new),
                                range(6)))
    ok = [out for st, out in results if st == 200]
    refused = [out for st, out in results if st == 400]
    assert len(ok) == 1 and len(refused) == 5, results
    assert all(o["__type"] == "ApprovalRequiredException" for o in refused)
    assert ok[0]["UserName"] == "app" and len(ok[0]["SecretAccessKey"]) == 40
    keys = admin(node, "ListAccessKeys", {"UserName": "app"})["AccessKeys"]
    assert len(keys) == 2  # the one the fixture made, and this one


def test_operations_not_listed_run_at_once(node, kms):
    key = new_key(kms)
    kms.disable_key(KeyId=key)
    kms.enable_key(KeyId=key)
    kms.create_alias(AliasName="alias/approvals-free", TargetKeyId=key)
    assert kms.encrypt(KeyId="alias/approvals-free", Plaintext=b"x")["KeyId"].endswith(key)


def test_an_import_setting_an_expiry_waits_where_deleting_material_does(node, kms):
    # DeleteImportedKeyMaterial waits (by default), ImportKeyMaterial does not: but an
    # import with an expiry has the material erased when it passes, so it waits too.
    # Otherwise one officer erases material by importing it again, a ValidTo away.
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    material = os.urandom(32)

    def wrapped():
        params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                               WrappingKeySpec="RSA_2048")
        pub = serialization.load_der_public_key(params["PublicKey"])
        h = hashes.SHA256()
        blob = pub.encrypt(material, padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h,
                                                  label=None))
        return {"KeyId": key, "ImportToken": params["ImportToken"],
                "EncryptedKeyMaterial": blob}

    kms.import_key_material(**wrapped(), ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    blob = kms.encrypt(KeyId=key, Plaintext=b"kept")["CiphertextBlob"]
    valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
    again = dict(wrapped(), ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
    approval = approval_of(raises("ApprovalRequiredException", kms.import_key_material, **again))
    assert get(node, approval)["Operation"] == "ImportKeyMaterial"
    m = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert (m["KeyState"], m["ExpirationModel"]) == ("Enabled", "KEY_MATERIAL_DOES_NOT_EXPIRE")
    # ExpirationModel left out is KEY_MATERIAL_EXPIRES, KMS's default: it waits too.
    approval_of(raises("ApprovalRequiredException", kms.import_key_material,
                       **wrapped(), ValidTo=valid_to))
    approve(node, "alice", approval, "bob")
    kms.import_key_material(**again)
    m = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert (m["KeyState"], m["ExpirationModel"]) == ("Enabled", "KEY_MATERIAL_EXPIRES")
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
    # Without an expiry an import runs at once, as before.
    kms.import_key_material(**wrapped(), ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    m = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert m["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"


def test_aws_cli_sees_the_refusal_and_the_approved_retry(node, kms):
    key = new_key(kms)
    cli = AwsCli(node)
    try:
        args = ("schedule-key-deletion", "--key-id", key, "--pending-window-in-days", "30")
        p = cli.run(*args, check=False)
        assert p.returncode != 0 and "ApprovalRequiredException" in p.stderr, p.stderr
        approval = ID.search(p.stderr).group(1)
        for who in ("carol", "alice"):
            assert hsmctl(node, who, "approval", "approve", approval).returncode == 0
        listed = hsmctl(node, "audit", "approval", "list")
        assert listed.returncode == 0 and approval in listed.stdout
        assert cli.json(*args)["KeyState"] == "PendingDeletion"
    finally:
        cli.close()


def test_the_audit_trail_links_requests_and_approvals(node, kms):
    key = new_key(kms)
    approval = deletion_refused(kms, key, 9)
    approve(node, "alice", approval, "bob")
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=9)
    deadline = time.time() + 5
    while True:
        recs = [r for r in audit_records(node.data_dir) if r.get("extra", {}).get("approval_id") == approval]
        if len(recs) >= 4 or time.time() > deadline:
            break
        time.sleep(0.05)
    seen = [(r["op"], r["outcome"], r["principal"].rsplit("/", 1)[1]) for r in recs]
    assert seen == [("ScheduleKeyDeletion", "denied", "dev"), ("ApproveRequest", "success", "alice"),
                    ("ApproveRequest", "success", "bob"),
                    ("ScheduleKeyDeletion", "success", "dev")], seen
    assert recs[0]["error"] == "ApprovalRequiredException" and recs[0]["key_id"] == key
    assert recs[3]["key_id"] == key


def test_metrics_count_open_requests(node, kms):

    def gauge():
        _, body, _ = node.get("/metrics")
        line = [l for l in body.decode().splitlines() if l.startswith("hsmd_approvals_open ")]
        return int(line[0].split()[1])

    open_now = len(admin(node, "ListApprovals", {})["Approvals"])
    key = new_key(kms)
    deletion_refused(kms, key, 12)
    deadline = time.time() + 30  # counted every 5 s, by the scheduler thread
    while gauge() != open_now + 1 and time.time() < deadline:
        time.sleep(0.2)
    assert gauge() == open_now + 1


def test_metrics_count_approved_requests_apart_from_open_ones(node, kms):
    """A request custodians fully approved waits only for its requester's retry: it is not
    counted as waiting for custodians (HsmdApprovalWaiting), but as approved."""

    def gauges():
        _, body, _ = node.get("/metrics")
        found = {}
        for line in body.decode().splitlines():
            name, _, value = line.partition(" ")
            if name in ("hsmd_approvals_open", "hsmd_approvals_approved"):
                found[name] = int(value)
        return found

    def expected():
        listed = admin(node, "ListApprovals", {})["Approvals"]
        approved = sum(1 for a in listed if a["Approvals"] >= a["Required"])
        return {"hsmd_approvals_open": len(listed) - approved,
                "hsmd_approvals_approved": approved}

    key = new_key(kms)
    approval = deletion_refused(kms, key, 13)
    approve(node, "alice", approval, "bob")
    want = expected()
    assert want["hsmd_approvals_approved"] >= 1, want
    deadline = time.time() + 30  # counted every 5 s, by the scheduler thread
    while gauges() != want and time.time() < deadline:
        time.sleep(0.2)
    assert gauges() == want
    # Its retry uses it: counted in neither.
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=13)
    want = {"hsmd_approvals_open": want["hsmd_approvals_open"],
            "hsmd_approvals_approved": want["hsmd_approvals_approved"] - 1}
    deadline = time.time() + 30
    while gauges() != want and time.time() < deadline:
        time.sleep(0.2)
    assert gauges() == want


def test_a_ceremony_names_the_custodians_who_approve(tmp_path):
    """hsmctl init --custodian-users: the custodians who hold the shares also
    get users and credentials, and a production node can start with approvals."""
    data, shares = str(tmp_path / "data"), str(tmp_path / "shares")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    p = subprocess.run([HSMCTL, "init", "--data-dir", data, "--share-dir", shares, "--shares", "3",
                        "--threshold", "2", "--custodians", "alice,bob,carol", "--admin", "ops",
                        "--custodian-users"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert "user: alice (custodian)" in p.stdout and "user: ops (crypto-officer,auditor)" in p.stdout

    def creds(name):
        path = os.path.join(shares, name + ".credentials")
        assert oct(os.stat(path).st_mode & 0o777) == "0o400"
        with open(path) as f:
            fields = dict(l.split(" = ", 1) for l in f.read().splitlines() if " = " in l)
        return fields["aws_access_key_id"], fields["aws_secret_access_key"]

    # The ceremony's trail names every user and access key it made, as hsmd's own
    # CreateUser and CreateAccessKey records do.
    recs = audit_records(data)
    made = {"alice": "custodian", "bob": "custodian", "carol": "custodian",
            "ops": "crypto-officer,auditor"}
    assert sorted((r["extra"]["target_user"], r["extra"]["target_roles"]) for r in recs
                  if r.get("op") == "CreateUser" and r["outcome"] == "success") == \
        sorted(made.items())
    assert sorted((r["extra"]["target_user"], r["extra"]["target_access_key_id"]) for r in recs
                  if r.get("op") == "CreateAccessKey" and r["outcome"] == "success") == \
        sorted((name, creds(name)[0]) for name in made)

    server = Hsmd(["--approval-quorum", "2"], data_dir=data)
    try:
        for name in ("alice", "carol"):
            u = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "unseal",
                                os.path.join(shares, name + ".share")],
                               capture_output=True, text=True, timeout=30, env=env)
            assert u.returncode == 0, u.stderr
        ops = client(server, *creds("ops"))
        key = ops.create_key()["KeyMetadata"]["KeyId"]
        approval = approval_of(raises("ApprovalRequiredException", ops.schedule_key_deletion,
                                      KeyId=key))
        for name in ("bob", "carol"):
            akid, secret = creds(name)
            admin(server, "ApproveRequest", {"ApprovalId": approval}, akid=akid, secret=secret)
        assert ops.schedule_key_deletion(KeyId=key)["KeyState"] == "PendingDeletion"
        users = {u["UserName"]: u["Roles"] for u in admin(server, "ListUsers",
                                                           akid=creds("ops")[0],
                                                           secret=creds("ops")[1])["Users"]}
        assert users == {"alice": ["custodian"], "bob": ["custodian"], "carol": ["custodian"],
                         "ops": ["crypto-officer", "auditor"]}
    finally:
        server.cleanup()


def test_the_audit_report_names_who_approved_each_change(node, kms):
    key = new_key(kms)
    approval = deletion_refused(kms, key, 14)
    approve(node, "carol", approval, "alice")
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=14)
    files = sorted(glob.glob(os.path.join(node.data_dir, "audit", "audit-*.jsonl")))

    def report(*args):
        import time
        deadline = time.time() + 5
        while True:  # the writer may not have flushed the last record yet
            p = subprocess.run([HSMCTL, "audit", "report", "--live", "--key", key] + list(args)
                               + files, capture_output=True, text=True, timeout=60)
            if (p.returncode == 0 and "ScheduleKeyDeletion" in p.stdout) or time.time() > deadline:
                return p
            time.sleep(0.1)

    p = report("--json")
    assert p.returncode == 0, p.stderr
    changes = [c for c in json.loads(p.stdout)["changes"] if c["op"] == "ScheduleKeyDeletion"]
    arn = "arn:aws:iam::111122223333:user/"
    assert [(c["extra"]["approval_id"], c["approved_by"]) for c in changes] == \
        [(approval, [arn + "carol", arn + "alice"])]
    p = report()
    line = [l for l in p.stdout.splitlines() if " ScheduleKeyDeletion key=" in l]
    assert len(line) == 1 and line[0].endswith(f"approved_by={arn}carol,{arn}alice"), p.stdout


def test_each_start_records_the_quorum_it_runs_with(node):
    """Approvals are switched on and off in the node's configuration, not through the
    API: every Startup record says which quorum the node ran with."""
    starts = [r for r in audit_records(node.data_dir) if r.get("op") == "Startup"]
    assert [r["extra"]["approval_quorum"] for r in starts] == ["0", "2"], starts
    assert all(r["extra"]["self_test"] == "passed" for r in starts)


def test_user_changes_that_wait_name_their_target(node):
    """The refused request and the approved retry both name the user they change."""
    body = {"UserName": "svc-approved", "Roles": ["crypto-user"]}
    st, out = signed_call(node, "HsmdAdmin.CreateUser", body)
    assert (st, out["__type"]) == (400, "ApprovalRequiredException"), out
    approval = ID.search(out["message"]).group(1)
    approve(node, "alice", approval, "bob")
    admin(node, "CreateUser", body)
    deadline = time.time() + 5
    while True:
        recs = [r for r in audit_records(node.data_dir)
                if r.get("op") == "CreateUser" and r.get("extra", {}).get("approval_id") == approval]
        if len(recs) >= 2 or time.time() > deadline:
            break
        time.sleep(0.05)
    seen = [(r["outcome"], r["extra"].get("target_user"), r["extra"].get("target_roles"))
            for r in recs]
    assert seen == [("denied", "svc-approved", "crypto-user"),
                    ("success", "svc-approved", "crypto-user")], seen


def test_a_policy_within_its_limit_can_wait_whatever_its_characters(node, kms):
    """The text custodians approve escapes every character that is not ASCII (six bytes
    for a two-byte é): a policy within PutKeyPolicy's 32 KB must still open a request."""
    key = new_key(kms)
    values = ["\u00e9" * 40 + str(i) for i in range(300)]
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/app"},
         "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringEquals": {"kms:EncryptionContext:dept": values}}}]},
        ensure_ascii=False)
    assert 24000 < len(policy.encode()) <= 32768
    resp = raises("ApprovalRequiredException", kms.put_key_policy, KeyId=key,
                  PolicyName="default", Policy=policy)
    approval_of(resp)


def store_bytes(server):
    """Every byte of a node's SQLite store on disk: the database and its WAL."""
    out = b""
    for path in sorted(glob.glob(os.path.join(server.data_dir, "hsmd.db*"))):
        with open(path, "rb") as f:
            out += f.read()
    return out


def held(haystack, *values):
    """The values haystack holds any part of, as bytes or in base64 (parts, as a
    long text may be split across database pages)."""
    def parts(text):
        return [text[i:i + 24] for i in range(0, max(len(text) - 24, 0) + 1, 24)]
    return [v for v in values
            if any(p in haystack for p in parts(v) + parts(base64.b64encode(v)))]


def described(value):
    """What a stored request shows of a blob member instead of its value."""
    return {"hsmd:redacted": True, "bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}


def test_a_stored_request_shows_its_blobs_size_and_digest_not_their_value(node, kms):
    # An import kept whole would keep what rebuilds the material (the token holds the
    # wrapping private key) for months after the material is deleted.
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    pub = serialization.load_der_public_key(params["PublicKey"])
    h = hashes.SHA256()
    material, token = os.urandom(32), params["ImportToken"]

    def wrap():
        return pub.encrypt(material, padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h,
                                                  label=None))

    wrapped = wrap()
    valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    call = dict(KeyId=key, ImportToken=token, EncryptedKeyMaterial=wrapped,
                ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to)
    approval = approval_of(raises("ApprovalRequiredException", kms.import_key_material, **call))
    shown = json.loads(get(node, approval)["Request"])
    assert shown["EncryptedKeyMaterial"] == described(wrapped)
    assert shown["ImportToken"] == described(token)
    assert (shown["KeyId"], shown["ExpirationModel"]) == (key, "KEY_MATERIAL_EXPIRES")
    out = hsmctl(node, "alice", "approval", "show", approval)
    assert out.returncode == 0, out.stderr
    assert '"hsmd:redacted": true' in out.stdout
    assert hashlib.sha256(wrapped).hexdigest() in out.stdout and key in out.stdout
    listed = [a for a in admin(node, "ListApprovals", {}, **as_user(node, "bob"))["Approvals"]
              if a["ApprovalId"] == approval]
    assert json.loads(listed[0]["Request"])["ImportToken"] == described(token)
    # The fingerprint still covers the bytes: other wrapped bytes are another request.
    other = approval_of(raises("ApprovalRequiredException", kms.import_key_material,
                               **dict(call, EncryptedKeyMaterial=wrap())))
    assert other != approval
    admin(node, "CancelRequest", {"ApprovalId": other})
    approve(node, "alice", approval, "bob")
    kms.import_key_material(**call)
    assert get(node, approval)["State"] == "Used"
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    deletion = approval_of(raises("ApprovalRequiredException", kms.delete_imported_key_material,
                                  KeyId=key))
    approve(node, "carol", deletion, "dan")
    kms.delete_imported_key_material(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingImport"
    assert held(store_bytes(node), wrapped, token, material) == []


def test_requests_an_older_hsmd_kept_whole_lose_their_blobs_at_start():
    first = start_dev()
    try:
        first.stop()
        wrapped, token = os.urandom(256), os.urandom(1400)
        request = json.dumps({"EncryptedKeyMaterial": b64(wrapped), "ImportToken": b64(token),
                              "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"},
                             sort_keys=True, separators=(",", ":"))
        approval, now = os.urandom(16).hex(), int(time.time())
        db = sqlite3.connect(os.path.join(first.data_dir, "hsmd.db"))
        with db:
            db.execute("INSERT INTO approvals (id, fingerprint, operation, requester, request, "
                       "state, required, created, expires, closed, closed_by) VALUES "
                       "(?, ?, 'ImportKeyMaterial', 'ops', ?, 'Used', 2, ?, ?, ?, '')",
                       (approval, os.urandom(32).hex(), request, now, now + 3600, now))
        db.close()
        assert held(store_bytes(first), wrapped, token) == [wrapped, token]
        again = Hsmd(["--dev"], env=DEV_ENV, data_dir=first.data_dir)
        try:
            assert held(store_bytes(again), wrapped, token) == []
            assert "1 stored request(s) kept whole by an older hsmd" in again.read_log()
            shown = json.loads(admin(again, "GetApproval", {"ApprovalId": approval})["Request"])
            assert shown == {"EncryptedKeyMaterial": described(wrapped),
                             "ImportToken": described(token),
                             "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"}
            again.stop()
        finally:
            again.cleanup()
        # Already described: the next start finds nothing to rewrite.
        third = Hsmd(["--dev"], env=DEV_ENV, data_dir=first.data_dir)
        try:
            assert "kept whole by an older hsmd" not in third.read_log()
            shown2 = json.loads(admin(third, "GetApproval", {"ApprovalId": approval})["Request"])
            assert shown2 == shown
        finally:
            third.cleanup()
    finally:
        first.cleanup()


# ---- many requests: ListApprovals pages; custodians whose names differ only by case ----------


def store_db(data_dir):
    """The store of a stopped node (a running one keeps its WAL index to itself)."""
    return sqlite3.connect(os.path.join(data_dir, "hsmd.db"), timeout=10)


class Crowd:
    """A node with approvals on, restarted to have rows written into its store as an older
    hsmd (or many requests at once) could have left them."""

    def __init__(self):
        self.first = start_dev()
        self.nodes = []
        self.users = {}
        for name, roles in {"alice": ["custodian"], "bob": ["custodian"],
                            "ops": ["crypto-officer"]}.items():
            self.users[name] = new_user(self.first, name, roles)
        self.first.stop()
        # "Alice" beside the custodian "alice": a pair hsmd no longer makes.
        db = store_db(self.first.data_dir)
        with db:
            db.execute("INSERT INTO users (name, role, disabled, locked, failed_auth, created) "
                       "SELECT 'Alice', role, disabled, locked, failed_auth, created FROM users "
                       "WHERE name = 'alice'")
        db.close()
        plain = Hsmd(["--dev"], env=DEV_ENV, data_dir=self.first.data_dir)
        self.nodes.append(plain)
        k = admin(plain, "CreateAccessKey", {"UserName": "Alice"})
        self.users["Alice"] = (k["AccessKeyId"], k["SecretAccessKey"])
        self.node = plain
        self.restart()

    def restart(self, while_stopped=None):
        """Stops the node, runs while_stopped(db) on its store, starts it again."""
        self.node.stop()
        if while_stopped is not None:
            db = store_db(self.first.data_dir)
            with db:
                while_stopped(db)
            db.close()
        self.node = Hsmd(["--dev", "--approval-quorum", "2"], env=DEV_ENV,
                         data_dir=self.first.data_dir)
        self.node.users = self.users
        self.nodes.append(self.node)

    def cleanup(self):
        for n in self.nodes:
            n.cleanup()
        self.first.cleanup()


@pytest.fixture(scope="module")
def crowd():
    c = Crowd()
    yield c
    c.cleanup()


def planted(n, created, state="Pending", ids=None):
    """What plants n requests of olga (an officer's, more than one may open) created at
    created(i) (ids: theirs, else random); the ids are in .ids."""
    now = int(time.time())
    ids = ids or [os.urandom(16).hex() for _ in range(n)]
    rows = [(ids[i], os.urandom(32).hex(), json.dumps({"KeyId": f"k{i}"}), state,
             created(i), now + 3600, now if state != "Pending" else 0) for i in range(n)]

    def plant(db):
        db.executemany("INSERT INTO approvals (id, fingerprint, operation, requester, request, "
                       "state, required, created, expires, closed, closed_by) VALUES "
                       "(?, ?, 'ScheduleKeyDeletion', 'olga', ?, ?, 2, ?, ?, ?, '')", rows)
    plant.ids = ids
    return plant


def newest_first(crowd, include_closed):
    """Every request the listing shows, in its order (newest first), from the store itself
    (read only: a reader does not disturb the running node)."""
    db = store_db(crowd.first.data_dir)
    where = "" if include_closed else "WHERE state = 'Pending' AND expires > strftime('%s')"
    ids = [r[0] for r in db.execute(f"SELECT id FROM approvals {where} "
                                    "ORDER BY created DESC, id")]
    db.close()
    return ids


def walk(crowd, limit, include_closed=False, between=None, **creds):
    """ListApprovals page by page (on whichever node crowd runs); between(page_number) runs
    after each page."""
    ids, marker, pages = [], None, 0
    while True:
        body = {"Limit": limit, "IncludeClosed": include_closed}
        if marker is not None:
            body["Marker"] = marker
        out = admin(crowd.node, "ListApprovals", body, **creds)
        assert out["Quorum"] == 2
        assert len(out["Approvals"]) <= limit
        ids += [a["ApprovalId"] for a in out["Approvals"]]
        pages += 1
        if between is not None:
            between(pages)
        if not out["Truncated"]:
            assert "NextMarker" not in out, out
            return ids, pages
        assert len(out["Approvals"]) == limit and out["NextMarker"] != marker
        marker = out["NextMarker"]


def test_list_approvals_pages_through_every_request(crowd):
    """More open requests than a page holds, many opened in the same second: a walk by
    Marker sees each once, newest first, while new requests are opened meanwhile (those
    newer than its place come before it; of its second, those with a greater id after it)
    and across a restart."""
    now = int(time.time())

    def plant(db):
        planted(230, lambda i: now - 5000 + i // 7)(db)  # 7 a second
        planted(40, lambda i: now - 4000 + i, state="Used")(db)

    crowd.restart(plant)
    expected = newest_first(crowd, False)
    assert len(expected) == 230
    ids, pages = walk(crowd, 50)
    assert ids == expected and pages == 5
    ids, pages = walk(crowd, 46)  # the last page full: no empty page after it
    assert ids == expected and pages == 5

    kms = client(crowd.node, *crowd.users["ops"])
    opened = []

    def open_more(page):
        # After 2 pages of 7 the walk's place is expected[13], the first (smallest id) of
        # second now - 4970: 6 requests are of second now - 4968, 7 of now - 4969.
        if page == 2:
            opened.append(approval_of(raises("ApprovalRequiredException",
                                             kms.schedule_key_deletion,
                                             KeyId=new_key(kms), PendingWindowInDays=7)))
            crowd.restart(planted(2, lambda i: now - 4970, ids=["f" * 32, "0" * 32]))

    ids, _ = walk(crowd, 7, between=open_more)
    assert len(ids) == len(set(ids)), "a request listed twice"
    assert opened[0] not in ids  # newer than the walk's place: before it
    assert "f" * 32 in ids  # its second, a greater id: after it
    assert "0" * 32 not in ids  # its second, a smaller id: before it
    assert [i for i in ids if i != "f" * 32] == expected
    assert newest_first(crowd, False)[0] == opened[0]

    # With IncludeClosed: the closed requests too, in the same order.
    everything = newest_first(crowd, True)
    ids, _ = walk(crowd, 33, include_closed=True)
    assert ids == everything and len(everything) == 230 + 40 + 3


def test_list_approvals_refuses_markers_it_did_not_issue(crowd):
    """A marker is good only for the listing that issued it: the open requests' listing,
    or IncludeClosed's; a forged one, a bare approval id or another listing's marker is
    InvalidMarkerException, and changes nothing."""
    now = int(time.time())
    crowd.restart(planted(3, lambda i: now - 100))
    node = crowd.node
    open_page = admin(node, "ListApprovals", {"Limit": 1})
    all_page = admin(node, "ListApprovals", {"Limit": 1, "IncludeClosed": True})
    assert open_page["Truncated"] and all_page["Truncated"]
    kms = client(node)
    kms.create_key()
    kms.create_key()
    keys_marker = kms.list_keys(Limit=1)["NextMarker"]

    def forged(text):
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    first = open_page["Approvals"][0]
    at, approval = int(first["CreationDate"]), first["ApprovalId"]
    bad = [
        {"Marker": all_page["NextMarker"]},
        {"Marker": open_page["NextMarker"], "IncludeClosed": True},
        {"Marker": approval},
        {"Marker": keys_marker},
        {"Marker": forged(f"approvals:-:{at}.{approval.upper()}")},
        {"Marker": forged(f"approvals:-:-1.{approval}")},
        {"Marker": forged(f"approvals:-:0{at}.{approval}")},
        {"Marker": forged(f"approvals:-:{at}")},
        {"Marker": forged(f"certs:-:{approval}")},
        {"Marker": open_page["NextMarker"] + "="},
    ]
    before = newest_first(crowd, True)
    for body in bad:
        st, out = signed_call(node, "HsmdAdmin.ListApprovals", body)
        assert st == 400 and out["__type"] == "InvalidMarkerException", (body, st, out)
    assert newest_first(crowd, True) == before
    # A marker made as hsmd makes them (a place in the order) goes on from there.
    mine = forged(f"approvals:-:{at}.{approval}")
    out = admin(node, "ListApprovals", {"Marker": mine, "Limit": 1})
    again = admin(node, "ListApprovals", {"Marker": open_page["NextMarker"], "Limit": 1})
    assert out["Approvals"] == again["Approvals"] and out["Approvals"]


def test_hsmctl_approval_list_follows_the_markers(crowd):
    """hsmctl approval list shows every open request (more than its pages of 1000 hold),
    and --json gives them as one document; --all the closed ones too."""
    now = int(time.time())
    crowd.restart(planted(1010, lambda i: now - 3000 + i // 50))
    expected = newest_first(crowd, False)
    assert len(expected) > 1000
    p = hsmctl(crowd.node, "alice", "approval", "list")
    assert p.returncode == 0, p.stderr
    listed = [l.split(": ", 1)[1] for l in p.stdout.splitlines() if l.startswith("ApprovalId: ")]
    assert listed == expected
    p = hsmctl(crowd.node, "alice", "approval", "list", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["Quorum"] == 2 and set(doc) == {"Quorum", "Approvals"}
    assert [a["ApprovalId"] for a in doc["Approvals"]] == expected
    assert doc["Approvals"][0]["State"] == "Pending" and "Request" in doc["Approvals"][0]
    p = hsmctl(crowd.node, "alice", "approval", "list", "--all", "--json")
    assert p.returncode == 0, p.stderr
    assert [a["ApprovalId"] for a in json.loads(p.stdout)["Approvals"]] == \
        newest_first(crowd, True)
    p = hsmctl(crowd.node, "alice", "approval", "list", "--jsn")
    assert p.returncode != 0 and "list [--all] [--json]" in p.stderr, p.stderr


def test_custodian_names_differing_only_by_case_approve_once(crowd):
    """"alice" and "Alice" (a pair an older hsmd could make) are one custodian: the second
    spelling's approval is refused as a repeat, naming the one that approved, and does not
    advance the count; another custodian's completes the quorum."""
    node = crowd.node
    kms = client(node, *crowd.users["ops"])
    key = new_key(kms)
    approval = deletion_refused(kms, key, 9)
    assert approve(node, "alice", approval)["Approvals"] == 1
    st, out = signed_call(node, "HsmdAdmin.ApproveRequest", {"ApprovalId": approval},
                          **as_user(node, "Alice"))
    assert st == 400 and out["__type"] == "AlreadyExistsException", (st, out)
    assert out["message"] == (
        f"User Alice may not approve request {approval}: user alice approved it already, and "
        "names that differ only by case are one custodian, whose approval counts once"), out
    shown = get(node, approval, who="bob")
    assert shown["Approvals"] == 1 and shown["Approvers"] == ["alice"]
    message = raises("ApprovalRequiredException", kms.schedule_key_deletion, KeyId=key,
                     PendingWindowInDays=9)["Error"]["Message"]
    assert f"approval request {approval} is open with 1," in message, message
    approve(node, "bob", approval)
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=9)
    assert get(node, approval, who="bob")["State"] == "Used"


def test_one_requester_holds_at_most_100_open_requests():
    """Each open request waits on the custodians and takes room in the store: an officer's
    101st is refused with LimitExceededException and opens nothing, one held is still found,
    another officer's open, and a cancelled one makes room; a listing page ends at 4 MiB of
    request text, and hsmctl follows it to every request."""
    first = start_dev()
    users = {name: new_user(first, name, roles) for name, roles in {
        "alice": ["custodian"], "bob": ["custodian"], "ops": ["crypto-officer"],
        "ops2": ["crypto-officer"]}.items()}
    first.stop()
    server = Hsmd(["--dev", "--approval-quorum", "2"], env=DEV_ENV, data_dir=first.data_dir)
    server.users = users
    try:
        ops = client(server, *users["ops"])
        keys = [new_key(ops) for _ in range(5)]
        # 250,000 bytes of a member no operation defines: the request text kept for custodians.
        pad = "x" * 250000
        opened = []
        for i in range(100):
            body = {"KeyId": keys[i // 24], "PendingWindowInDays": 7 + i % 24}
            if i < 20:
                body["Padding"] = pad
            st, out = signed_call(server, "TrentService.ScheduleKeyDeletion", body,
                                  *users["ops"])
            assert st == 400 and out["__type"] == "ApprovalRequiredException", out
            opened.append(ID.search(out["message"]).group(1))
        assert len(set(opened)) == 100
        out = raises("LimitExceededException", ops.schedule_key_deletion, KeyId=keys[4],
                     PendingWindowInDays=30)
        assert out["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "ops already has 100 approval requests open" in out["Error"]["Message"]
        # A request already open is found, not refused.
        assert deletion_refused(ops, keys[1], 8) == opened[25]

        # Pages: 16 of the padded texts fill one (4,000,000 bytes), the rest follow.
        walked, marker, sizes = [], None, []
        while True:
            body = {"Limit": 1000, **({"Marker": marker} if marker else {})}
            page = admin(server, "ListApprovals", body, **as_user(server, "alice"))
            walked += [a["ApprovalId"] for a in page["Approvals"]]
            sizes.append(len(page["Approvals"]))
            if not page["Truncated"]:
                break
            marker = page["NextMarker"]
        assert sorted(walked) == sorted(opened) and len(walked) == 100
        assert sizes[0] < 100 and len(sizes) > 1, sizes
        p = hsmctl(server, "alice", "approval", "list")
        assert p.returncode == 0, p.stderr
        assert sum(l.startswith("ApprovalId: ") for l in p.stdout.splitlines()) == 100

        # Another officer's requests are apart; a cancelled one makes room for one.
        ops2 = client(server, *users["ops2"])
        deletion_refused(ops2, keys[4], 30)
        admin(server, "CancelRequest", {"ApprovalId": opened[0]}, **as_user(server, "ops"))
        fresh = deletion_refused(ops, keys[4], 30)
        assert fresh not in opened
        raises("LimitExceededException", ops.schedule_key_deletion, KeyId=keys[4],
               PendingWindowInDays=29)
        refused = audit_records_until(server.data_dir, lambda r: r.get(
            "error") == "LimitExceededException" and r.get("op") == "ScheduleKeyDeletion", n=2)
        assert len(refused) == 2 and all(r["outcome"] == "error" for r in refused)
        # 100 of ops's, one of ops2's: the gauge counts them page after page.
        assert eventually(lambda: metric(server, "hsmd_approvals_open") == 101, timeout=30)
    finally:
        server.cleanup()
        first.cleanup()
