"""Where a request that waits for approval meets its gate.

A node runs with approval_quorum = 2 and every operation that can wait listed.
Each operation opens an approval request only once everything that could
refuse it has passed (its parameters, the key policy, the key's state, a name
already in use), changes nothing while it waits, runs once approved, and gives
its approval back when its change then fails.  Requests are signed by
botocore's own SigV4 signer."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, HSMD, Hsmd, client, signed_call, start_dev
from helpers import ACCOUNT, admin, audit_records, b64, make_pki, new_user, self_signed

DEV_ENV = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
DEV_ARN = f"arn:aws:iam::{ACCOUNT}:user/dev"
MANY = f"arn:aws:iam::{ACCOUNT}:user/many-grants"  # the grantee of a key's 500 grants
ID = re.compile(r"approval request ([0-9a-f]{32})")

KMS_OPS = ["CreateKey", "EnableKey", "DisableKey", "UpdateKeyDescription", "ScheduleKeyDeletion",
           "CancelKeyDeletion", "EnableKeyRotation", "DisableKeyRotation", "RotateKeyOnDemand",
           "CreateAlias", "UpdateAlias", "DeleteAlias", "TagResource", "UntagResource",
           "PutKeyPolicy", "CreateGrant", "RetireGrant", "RevokeGrant", "ImportKeyMaterial",
           "DeleteImportedKeyMaterial", "EnableJwtSigning", "DisableJwtSigning"]
ADMIN_OPS = ["CreateUser", "DisableUser", "EnableUser", "UnlockUser", "CreateAccessKey",
             "RevokeAccessKey", "CreateBackup", "ImportCertificate", "DeleteCertificate", "Seal"]
TARGET = {"EnableJwtSigning": "HsmdJwt", "DisableJwtSigning": "HsmdJwt"}


def target(op):
    return TARGET.get(op, "HsmdAdmin" if op in ADMIN_OPS else "TrentService") + "." + op


def policy(*extra):
    root = {"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "kms:*", "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [root, *extra]})


def wrap(params):
    """32 bytes of key material wrapped under GetParametersForImport's public key."""
    pub = serialization.load_der_public_key(params["PublicKey"])
    h = hashes.SHA256()
    return pub.encrypt(os.urandom(32), padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h,
                                                    label=None))


@pytest.fixture(scope="module")
def node():
    """What each operation works on is made first, with approvals off; then the node
    restarts with approval_quorum = 2 and every operation listed."""
    first = start_dev()
    kms = client(first)
    users = {n: new_user(first, n, ["custodian"]) for n in ("alice", "bob")}

    def key(**kw):
        return kms.create_key(**kw)["KeyMetadata"]["KeyId"]

    f = {op: key() for op in ("DisableKey", "UpdateKeyDescription", "ScheduleKeyDeletion",
                              "EnableKeyRotation", "RotateKeyOnDemand", "CreateAlias", "TagResource",
                              "PutKeyPolicy", "CreateGrant")}
    f["EnableKey"] = key()
    kms.disable_key(KeyId=f["EnableKey"])
    f["CancelKeyDeletion"] = key()
    kms.schedule_key_deletion(KeyId=f["CancelKeyDeletion"], PendingWindowInDays=7)
    f["DisableKeyRotation"] = key()
    kms.enable_key_rotation(KeyId=f["DisableKeyRotation"])
    f["UpdateAlias"], f["UpdateAlias-to"], f["DeleteAlias"] = key(), key(), key()
    kms.create_alias(AliasName="alias/gate-moves", TargetKeyId=f["UpdateAlias"])
    kms.create_alias(AliasName="alias/gate-goes", TargetKeyId=f["DeleteAlias"])
    kms.create_alias(AliasName="alias/gate-taken", TargetKeyId=f["DeleteAlias"])
    f["alias-a"], f["alias-b"] = key(), key()
    kms.create_alias(AliasName="alias/gate-retire", TargetKeyId=f["alias-a"])
    f["UntagResource"] = key(Tags=[{"TagKey": "t0", "TagValue": "v"}])
    f["full"] = key(Tags=[{"TagKey": f"k{i:02}", "TagValue": "v"} for i in range(50)])
    # Keys and a user at the store's other limits: 50 aliases; 500 grants for one grantee;
    # 10 active access keys.
    f["room-for-one"] = key(Tags=[{"TagKey": f"k{i:02}", "TagValue": "v"} for i in range(49)])
    f["aliases-full"] = key()
    for i in range(50):
        kms.create_alias(AliasName=f"alias/full-{i:02}", TargetKeyId=f["aliases-full"])
    f["grants-full"] = key()
    for _ in range(500):
        kms.create_grant(KeyId=f["grants-full"], GranteePrincipal=MANY, Operations=["Encrypt"])
    f["grants"] = key()
    for op in ("RetireGrant", "RevokeGrant"):
        f[op] = kms.create_grant(KeyId=f["grants"], GranteePrincipal=DEV_ARN,
                                 RetiringPrincipal=DEV_ARN, Operations=["Encrypt"])["GrantId"]
    f["ImportKeyMaterial"] = key(Origin="EXTERNAL")
    f["hsmctl-approved"] = key(Origin="EXTERNAL")
    f["hsmctl-denied"] = key(Origin="EXTERNAL")
    f["hsmctl-bounded"] = key(Origin="EXTERNAL")
    f["hsmctl-stopped"] = key(Origin="EXTERNAL")
    f["DeleteImportedKeyMaterial"] = key(Origin="EXTERNAL")
    f["EnableJwtSigning"] = key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    f["DisableJwtSigning"] = key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    st, out = signed_call(first, "HsmdJwt.EnableJwtSigning", {"KeyId": f["DisableJwtSigning"]})
    assert st == 200, out
    f["denied"] = key(Policy=policy({"Sid": "NoDisable", "Effect": "Deny",
                                     "Principal": {"AWS": DEV_ARN},
                                     "Action": ["kms:DisableKey", "kms:ScheduleKeyDeletion"],
                                     "Resource": "*"}))
    f["no-decrypt-grants"] = key(Policy=policy({
        "Sid": "NoDecryptGrants", "Effect": "Deny", "Principal": {"AWS": DEV_ARN},
        "Action": "kms:CreateGrant", "Resource": "*",
        "Condition": {"ForAnyValue:StringEquals": {"kms:GrantOperations": "Decrypt"}}}))
    f["sign"] = key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    for name, roles in (("u-disable", ["auditor"]), ("u-enable", ["auditor"]),
                        ("u-unlock", ["auditor"]), ("u-keys", ["auditor"]), ("u-full", ["auditor"])):
        admin(first, "CreateUser", {"UserName": name, "Roles": roles})
    for _ in range(10):
        admin(first, "CreateAccessKey", {"UserName": "u-full"})
    admin(first, "CreateUser", {"UserName": "u-nine", "Roles": ["auditor"]})
    nine = [admin(first, "CreateAccessKey", {"UserName": "u-nine"})["AccessKeyId"]
            for _ in range(10)]
    admin(first, "RevokeAccessKey", {"AccessKeyId": nine[0]})  # 9 active, 1 revoked
    admin(first, "DisableUser", {"UserName": "u-enable"})
    akid = admin(first, "CreateAccessKey", {"UserName": "u-unlock"})["AccessKeyId"]
    for _ in range(5):  # wrong signatures lock the user
        st, out = signed_call(first, "TrentService.ListKeys", {}, akid=akid, secret="x" * 40)
        assert (st, out["__type"]) == (400, "InvalidSignatureException"), out
    assert {u["UserName"]: u for u in admin(first, "ListUsers")["Users"]}["u-unlock"]["Locked"]
    f["RevokeAccessKey"] = admin(first, "CreateAccessKey", {"UserName": "u-keys"})["AccessKeyId"]
    f["DeleteCertificate"] = admin(first, "ImportCertificate", {
        "Certificate": b64(self_signed("gate-old"))})["CertificateId"]
    params = kms.get_parameters_for_import(KeyId=f["DeleteImportedKeyMaterial"],
                                           WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    kms.import_key_material(KeyId=f["DeleteImportedKeyMaterial"], ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap(params),
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    first.stop()
    ops = ",".join(KMS_OPS + ADMIN_OPS)
    # No scheduled backup: the tests count the backups there are.
    server = Hsmd(["--dev", "--approval-quorum", "2", "--approval-operations", ops,
                   "--backup-interval-seconds", "0"], env=DEV_ENV, data_dir=first.data_dir)
    server.users, server.f = users, f
    # Material for the imports, wrapped under parameters fetched from this node (not gated).
    k = client(server)
    params = k.get_parameters_for_import(KeyId=f["ImportKeyMaterial"],
                                         WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                         WrappingKeySpec="RSA_2048")
    f["ImportKeyMaterial-body"] = {
        "KeyId": f["ImportKeyMaterial"], "ImportToken": b64(params["ImportToken"]),
        "EncryptedKeyMaterial": b64(wrap(params)),
        "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    yield server
    server.cleanup()
    first.cleanup()


def call(node, op, body):
    return signed_call(node, target(op), body)


def approvals(node):
    return {a["ApprovalId"]: a for a in admin(node, "ListApprovals", {"IncludeClosed": True,
                                                                      "Limit": 1000})["Approvals"]}


def approve(node, approval):
    for who in ("alice", "bob"):
        akid, secret = node.users[who]
        admin(node, "ApproveRequest", {"ApprovalId": approval}, akid=akid, secret=secret)


def waits(node, op, body):
    """The request is refused for approval; the approval request it opened."""
    before = approvals(node)
    st, out = call(node, op, body)
    assert (st, out.get("__type")) == (400, "ApprovalRequiredException"), (op, st, out)
    approval = ID.search(out["message"]).group(1)
    assert approval not in before and approvals(node)[approval]["Operation"] == op
    return approval


def cases(node):
    """Per operation: a request that may run, and a probe of what it changes."""
    f, kms = node.f, client(node)

    def state(k):
        return lambda: kms.describe_key(KeyId=k)["KeyMetadata"]["KeyState"]

    def users():
        return {u["UserName"]: (u["Disabled"], u["Locked"], u["Roles"])
                for u in admin(node, "ListUsers")["Users"]}

    def grants():
        return sorted(g["GrantId"] for g in kms.list_grants(KeyId=f["grants"])["Grants"])

    def aliases():
        return {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases(Limit=100)["Aliases"]}

    def tags(k):
        return lambda: sorted((t["TagKey"], t["TagValue"])
                              for t in kms.list_resource_tags(KeyId=k)["Tags"])

    def rotations(k):
        def probe():
            st, out = signed_call(node, "TrentService.ListKeyRotations", {"KeyId": k})
            assert st == 200, out
            return len(out["Rotations"])
        return probe

    def jwks():
        st, body, _ = node.get("/.well-known/jwks.json")
        assert st == 200, body
        return sorted(k["kid"] for k in json.loads(body)["keys"])

    def certificates():
        return sorted(c["CertificateId"] for c in admin(node, "ListCertificates", {})["Certificates"])

    return [
        ("CreateKey", {"Description": "gate"},
         lambda: len(kms.list_keys(Limit=1000)["Keys"])),
        ("EnableKey", {"KeyId": f["EnableKey"]}, state(f["EnableKey"])),
        ("DisableKey", {"KeyId": f["DisableKey"]}, state(f["DisableKey"])),
        ("UpdateKeyDescription", {"KeyId": f["UpdateKeyDescription"], "Description": "new"},
         lambda: kms.describe_key(KeyId=f["UpdateKeyDescription"])["KeyMetadata"]["Description"]),
        ("ScheduleKeyDeletion", {"KeyId": f["ScheduleKeyDeletion"], "PendingWindowInDays": 7},
         state(f["ScheduleKeyDeletion"])),
        ("CancelKeyDeletion", {"KeyId": f["CancelKeyDeletion"]}, state(f["CancelKeyDeletion"])),
        ("EnableKeyRotation", {"KeyId": f["EnableKeyRotation"]},
         lambda: kms.get_key_rotation_status(KeyId=f["EnableKeyRotation"])["KeyRotationEnabled"]),
        ("DisableKeyRotation", {"KeyId": f["DisableKeyRotation"]},
         lambda: kms.get_key_rotation_status(KeyId=f["DisableKeyRotation"])["KeyRotationEnabled"]),
        ("RotateKeyOnDemand", {"KeyId": f["RotateKeyOnDemand"]}, rotations(f["RotateKeyOnDemand"])),
        ("CreateAlias", {"AliasName": "alias/gate-new", "TargetKeyId": f["CreateAlias"]}, aliases),
        ("UpdateAlias", {"AliasName": "alias/gate-moves", "TargetKeyId": f["UpdateAlias-to"]},
         aliases),
        ("DeleteAlias", {"AliasName": "alias/gate-goes"}, aliases),
        ("TagResource", {"KeyId": f["TagResource"], "Tags": [{"TagKey": "t", "TagValue": "v"}]},
         tags(f["TagResource"])),
        ("UntagResource", {"KeyId": f["UntagResource"], "TagKeys": ["t0"]},
         tags(f["UntagResource"])),
        ("PutKeyPolicy", {"KeyId": f["PutKeyPolicy"], "PolicyName": "default", "Policy": policy()},
         lambda: kms.get_key_policy(KeyId=f["PutKeyPolicy"], PolicyName="default")["Policy"]),
        ("CreateGrant", {"KeyId": f["grants"], "GranteePrincipal": DEV_ARN,
                         "Operations": ["Decrypt"]}, grants),
        ("RetireGrant", {"KeyId": f["grants"], "GrantId": f["RetireGrant"]}, grants),
        ("RevokeGrant", {"KeyId": f["grants"], "GrantId": f["RevokeGrant"]}, grants),
        ("ImportKeyMaterial", f["ImportKeyMaterial-body"], state(f["ImportKeyMaterial"])),
        ("DeleteImportedKeyMaterial", {"KeyId": f["DeleteImportedKeyMaterial"]},
         state(f["DeleteImportedKeyMaterial"])),
        ("EnableJwtSigning", {"KeyId": f["EnableJwtSigning"]}, jwks),
        ("DisableJwtSigning", {"KeyId": f["DisableJwtSigning"]}, jwks),
        ("CreateUser", {"UserName": "u-new", "Roles": ["auditor"]}, users),
        ("DisableUser", {"UserName": "u-disable"}, users),
        ("EnableUser", {"UserName": "u-enable"}, users),
        ("UnlockUser", {"UserName": "u-unlock"}, users),
        ("CreateAccessKey", {"UserName": "u-keys"},
         lambda: len(admin(node, "ListAccessKeys", {"UserName": "u-keys"})["AccessKeys"])),
        ("RevokeAccessKey", {"AccessKeyId": f["RevokeAccessKey"]},
         lambda: [k["Status"] for k in admin(node, "ListAccessKeys",
                                              {"UserName": "u-keys"})["AccessKeys"]
                  if k["AccessKeyId"] == f["RevokeAccessKey"]]),
        ("CreateBackup", {}, lambda: len(admin(node, "ListBackups")["Backups"])),
        ("ImportCertificate", {"Certificate": b64(self_signed("gate-new"))}, certificates),
        ("DeleteCertificate", {"CertificateId": f["DeleteCertificate"]}, certificates),
        ("Seal", {}, lambda: admin(node, "Status")["Sealed"]),
    ]


def other(hex_id):
    """A well-formed id that names nothing."""
    return hex_id[:-1] + ("0" if hex_id[-1] != "0" else "1")


def refused_anyway(node):
    f = node.f
    garbage = dict(f["ImportKeyMaterial-body"], EncryptedKeyMaterial=b64(b"\x01" * 256))
    missing = "11111111-2222-4333-8444-555555555555"
    return [
        ("CreateKey", {"KeySpec": "NOPE"}, "ValidationException"),
        ("ScheduleKeyDeletion", {"KeyId": f["ScheduleKeyDeletion"], "PendingWindowInDays": 99},
         "ValidationException"),
        ("ScheduleKeyDeletion", {"KeyId": f["denied"]}, "AccessDeniedException"),
        # The member hsmd adds to name the resolved key, sent by the requester to show
        # custodians another key than the one the request would delete.
        ("ScheduleKeyDeletion", {"KeyId": f["ScheduleKeyDeletion"], "hsmd:KeyId": f["DisableKey"],
                                 "PendingWindowInDays": 7}, "ValidationException"),
        ("DisableKey", {"KeyId": f["denied"]}, "AccessDeniedException"),
        ("CreateGrant", {"KeyId": f["no-decrypt-grants"], "GranteePrincipal": DEV_ARN,
                         "Operations": ["Encrypt", "Decrypt"]}, "AccessDeniedException"),
        ("EnableKey", {"KeyId": f["CancelKeyDeletion"]}, "KMSInvalidStateException"),
        ("CancelKeyDeletion", {"KeyId": f["DisableKey"]}, "KMSInvalidStateException"),
        ("UpdateKeyDescription", {"KeyId": missing, "Description": "x"}, "NotFoundException"),
        ("CreateAlias", {"AliasName": "alias/gate-taken", "TargetKeyId": f["CreateAlias"]},
         "AlreadyExistsException"),
        ("UpdateAlias", {"AliasName": "alias/gate-moves", "TargetKeyId": f["sign"]},
         "ValidationException"),
        ("DeleteAlias", {"AliasName": "alias/gate-none"}, "NotFoundException"),
        ("TagResource", {"KeyId": f["TagResource"], "Tags": [{"TagKey": "aws:x", "TagValue": "v"}]},
         "TagException"),
        ("PutKeyPolicy", {"KeyId": f["PutKeyPolicy"], "PolicyName": "default", "Policy": "{"},
         "MalformedPolicyDocumentException"),
        ("CreateGrant", {"KeyId": f["grants"], "GranteePrincipal": DEV_ARN, "Operations": ["Sign"]},
         "ValidationException"),
        ("RetireGrant", {"KeyId": f["grants"], "GrantId": other(f["RetireGrant"])},
         "NotFoundException"),
        ("RevokeGrant", {"KeyId": f["grants"], "GrantId": other(f["RevokeGrant"])},
         "NotFoundException"),
        ("RotateKeyOnDemand", {"KeyId": f["DeleteImportedKeyMaterial"]},
         "KMSInvalidStateException"),  # imported material, none pending rotation
        ("ImportKeyMaterial", garbage, "InvalidCiphertextException"),
        ("DeleteImportedKeyMaterial", {"KeyId": f["CreateAlias"]}, "UnsupportedOperationException"),
        ("EnableJwtSigning", {"KeyId": f["CreateAlias"]}, "InvalidKeyUsageException"),
        ("EnableJwtSigning", {"KeyId": f["EnableJwtSigning"], "Algorithm": "ES256"},
         "InvalidKeyUsageException"),
        ("CreateUser", {"UserName": "alice", "Roles": ["auditor"]}, "AlreadyExistsException"),
        ("CreateUser", {"UserName": "no spaces", "Roles": ["auditor"]}, "ValidationException"),
        ("DisableUser", {"UserName": "nobody"}, "NotFoundException"),
        ("CreateAccessKey", {"UserName": "nobody"}, "NotFoundException"),
        ("RevokeAccessKey", {"AccessKeyId": "AKIAAAAAAAAAAAAAAAAA"}, "NotFoundException"),
        ("ImportCertificate", {"Certificate": b64(b"not a certificate")}, "ValidationException"),
        ("ImportCertificate", {"Certificate": b64(self_signed("gate-other")), "KeyId": f["sign"]},
         "ValidationException"),
        ("DeleteCertificate", {"CertificateId": missing}, "NotFoundException"),
        # What the store's limits would refuse, with approvals as without.
        ("TagResource", {"KeyId": f["full"], "Tags": [{"TagKey": "k50", "TagValue": "v"}]},
         "TagException"),
        ("TagResource", {"KeyId": f["room-for-one"], "Tags": [
            {"TagKey": "k00", "TagValue": "w"}, {"TagKey": "new", "TagValue": "a"},
            {"TagKey": "newer", "TagValue": "b"}]}, "TagException"),
        ("CreateAlias", {"AliasName": "alias/gate-51st", "TargetKeyId": f["aliases-full"]},
         "LimitExceededException"),
        # A name in use is refused as such, as without approvals, even by a key at its limit.
        ("CreateAlias", {"AliasName": "alias/gate-taken", "TargetKeyId": f["aliases-full"]},
         "AlreadyExistsException"),
        ("UpdateAlias", {"AliasName": "alias/gate-moves", "TargetKeyId": f["aliases-full"]},
         "LimitExceededException"),
        ("CreateGrant", {"KeyId": f["grants-full"], "GranteePrincipal": MANY,
                         "Operations": ["Encrypt"]}, "LimitExceededException"),
        ("CreateAccessKey", {"UserName": "u-full"}, "LimitExceededException"),
        # DryRun asks whether the request would pass, so it never waits for custodians.
        ("CreateGrant", {"KeyId": f["CreateGrant"], "GranteePrincipal": DEV_ARN,
                         "Operations": ["Encrypt"], "DryRun": True}, "DryRunOperationException"),
        ("RevokeGrant", {"KeyId": f["grants"], "GrantId": f["RevokeGrant"], "DryRun": True},
         "DryRunOperationException"),
        ("RetireGrant", {"KeyId": f["grants"], "GrantId": f["RetireGrant"], "DryRun": True},
         "DryRunOperationException"),
    ]


def test_an_approval_given_through_an_alias_holds_for_the_key_it_named(node):
    """Custodians approve a change to the key the alias named then: moved to another key,
    the same request opens a new approval request instead of acting on that key."""
    a, b, kms = node.f["alias-a"], node.f["alias-b"], client(node)

    def state(key):
        return kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"]

    def move_alias(to):
        body = {"AliasName": "alias/gate-retire", "TargetKeyId": to}
        approve(node, waits(node, "UpdateAlias", body))
        st, out = call(node, "UpdateAlias", body)
        assert st == 200, out

    body = {"KeyId": "alias/gate-retire", "PendingWindowInDays": 7}
    first = waits(node, "ScheduleKeyDeletion", body)
    assert f'"hsmd:KeyId":"{a}"' in approvals(node)[first]["Request"]
    approve(node, first)
    move_alias(b)
    second = waits(node, "ScheduleKeyDeletion", body)
    assert second != first and f'"hsmd:KeyId":"{b}"' in approvals(node)[second]["Request"]
    assert (state(a), state(b)) == ("Enabled", "Enabled")
    assert (approvals(node)[first]["State"], approvals(node)[first]["Approvals"]) == (
        "Pending", 2)  # approved, not used
    # Back on the key it named, the approved request runs, on that key.
    move_alias(a)
    st, out = call(node, "ScheduleKeyDeletion", body)
    assert st == 200 and out["KeyId"].endswith(a), out
    assert (state(a), state(b)) == ("PendingDeletion", "Enabled")
    assert approvals(node)[first]["State"] == "Used"
    assert (approvals(node)[second]["State"], approvals(node)[second]["Approvals"]) == (
        "Pending", 0)


def test_requests_refused_anyway_open_no_approval_request(node):
    before = approvals(node)
    for op, body, code in refused_anyway(node):
        st, out = call(node, op, body)
        status = 412 if code == "DryRunOperationException" else 400
        assert (st, out.get("__type")) == (status, code), (op, body, out)
    assert approvals(node) == before


def test_a_condition_on_the_request_decides_before_the_gate(node):
    """The key policy denies grants for Decrypt only: the same operation on the same key
    is refused at once for Decrypt and waits for approval for Encrypt."""
    body = {"KeyId": node.f["no-decrypt-grants"], "GranteePrincipal": DEV_ARN,
            "Operations": ["Decrypt"]}
    before = approvals(node)
    st, out = call(node, "CreateGrant", body)
    assert (st, out.get("__type")) == (400, "AccessDeniedException"), out
    assert approvals(node) == before
    waits(node, "CreateGrant", dict(body, Operations=["Encrypt"]))


def test_a_change_that_fails_gives_its_approval_back(node):
    """The key holds 500 grants for one grantee, the most it may.  A grant with a Name is
    not counted ahead (a retry of a named grant is answered with the grant it made, at any
    count): the store refuses it only when the change is made, after the approval was
    used.  The approval is given back."""
    body = {"KeyId": node.f["grants-full"], "GranteePrincipal": MANY,
            "Operations": ["Encrypt"], "Name": "one-too-many"}
    approval = waits(node, "CreateGrant", body)
    approve(node, approval)
    for _ in range(2):
        st, out = call(node, "CreateGrant", body)
        assert (st, out.get("__type")) == (400, "LimitExceededException"), out
        a = approvals(node)[approval]
        assert (a["State"], a["Approvals"]) == ("Pending", 2), a
    # Both failed tries used the approval, as their records say.
    deadline = time.time() + 5
    while True:
        recs = [r for r in audit_records(node.data_dir)
                if r.get("extra", {}).get("approval_id") == approval and r["op"] == "CreateGrant"]
        if len(recs) >= 3 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert [(r["outcome"], r["error"]) for r in recs] == [
        ("denied", "ApprovalRequiredException"), ("error", "LimitExceededException"),
        ("error", "LimitExceededException")], recs
    pages = client(node).get_paginator("list_grants").paginate(KeyId=node.f["grants-full"])
    grants = [g for page in pages for g in page["Grants"]]
    assert len(grants) == 500 and not [g for g in grants if g.get("Name")], len(grants)


def test_a_change_within_the_limits_of_a_full_key_waits(node):
    """At a limit, what would not go past it still waits for custodians: a tag key the
    key holds already (its value replaced), an alias moved among the key's own names, an
    access key beside a revoked one, a grant for another grantee."""
    f = node.f
    waits(node, "TagResource", {"KeyId": f["full"], "Tags": [
        {"TagKey": "k00", "TagValue": "w"}, {"TagKey": "k01", "TagValue": "w"},
        {"TagKey": "k00", "TagValue": "x"}]})
    waits(node, "UpdateAlias", {"AliasName": "alias/full-00", "TargetKeyId": f["aliases-full"]})
    # A user with 9 active keys and a revoked one; another grantee on a key full for one.
    waits(node, "CreateAccessKey", {"UserName": "u-nine"})
    waits(node, "CreateGrant", {"KeyId": f["grants-full"], "GranteePrincipal": DEV_ARN,
                                "Operations": ["Encrypt"]})
    # One new tag key, given twice, on a key with room for one: counted once.
    waits(node, "TagResource", {"KeyId": f["room-for-one"], "Tags": [
        {"TagKey": "new", "TagValue": "a"}, {"TagKey": "new", "TagValue": "b"}]})


def hsmctl_bg(node, *args):
    """hsmctl against the node as the dev officer, running in the background."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET)
    env.pop("HSM_APPROVAL_WAIT", None)
    return subprocess.Popen([HSMCTL, "--endpoint", node.endpoint, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hsmctl_import(node, key, material_file, *globals_):
    # RSA_2048: an RSA-4096 wrapping key (the default) can take over 30 s to generate on a
    # loaded machine, which is not what these tests are about.
    p = hsmctl_bg(node, *globals_, "key", "import", key, "--material", str(material_file),
                  "--wrapping-key-spec", "RSA_2048")
    return p


def open_import_request(node, key, p=None):
    """The approval request an hsmctl import into key opened (waiting for it to appear, while
    hsmctl p runs)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if p is not None and p.poll() is not None:
            raise AssertionError(f"hsmctl ended before opening a request: {p.communicate()}")
        for a in approvals(node).values():
            if (a["Operation"], a["State"]) == ("ImportKeyMaterial", "Pending") and \
                    json.loads(a["Request"])["KeyId"] == key:
                return a["ApprovalId"]
        time.sleep(0.2)
    raise AssertionError("hsmctl opened no approval request")


def test_hsmctl_import_waits_for_custodians_and_sends_the_same_request(node, tmp_path):
    """hsmctl wraps the material afresh on every run, so only the run that opened the
    approval request can send the request custodians approve: it waits for them."""
    material = tmp_path / "aes.key"
    material.write_bytes(os.urandom(32))
    kms = client(node)
    p = hsmctl_import(node, node.f["hsmctl-approved"], material)
    approval = open_import_request(node, node.f["hsmctl-approved"], p)
    time.sleep(0.5)
    assert p.poll() is None, p.communicate()  # still waiting
    assert kms.describe_key(KeyId=node.f["hsmctl-approved"])["KeyMetadata"]["KeyState"] == \
        "PendingImport"
    approve(node, approval)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert f"approval request {approval}" in err and "material-id:" in out
    assert kms.describe_key(KeyId=node.f["hsmctl-approved"])["KeyMetadata"]["KeyState"] == \
        "Enabled"
    assert approvals(node)[approval]["State"] == "Used"
    # A denial ends the wait, and nothing is imported.
    p = hsmctl_import(node, node.f["hsmctl-denied"], material)
    approval = open_import_request(node, node.f["hsmctl-denied"], p)
    akid, secret = node.users["alice"]
    admin(node, "DenyRequest", {"ApprovalId": approval}, akid=akid, secret=secret)
    out, err = p.communicate(timeout=30)
    assert p.returncode != 0 and f"approval request {approval} is Denied" in err, err
    assert kms.describe_key(KeyId=node.f["hsmctl-denied"])["KeyMetadata"]["KeyState"] == \
        "PendingImport"


def test_hsmctl_withdraws_what_it_stops_waiting_for(node, tmp_path):
    """A wait that ends unapproved, at --approval-wait or on SIGINT, withdraws the approval
    request: custodians are not asked about a request nobody will send."""
    material = tmp_path / "aes.key"
    material.write_bytes(os.urandom(32))
    kms = client(node)
    started = time.monotonic()
    p = hsmctl_import(node, node.f["hsmctl-bounded"], material, "--approval-wait", "3")
    approval = open_import_request(node, node.f["hsmctl-bounded"], p)
    out, err = p.communicate(timeout=120)
    waited = time.monotonic() - started
    # Bounded, not forever: the import's own steps (an RSA wrapping key made on a loaded
    # machine) may take many seconds besides the wait.
    assert p.returncode != 0 and 3 <= waited < 90, (waited, err)
    assert f"approval request {approval} not approved within --approval-wait" in err, err
    assert f"approval request {approval} withdrawn" in err, err
    assert approvals(node)[approval]["State"] == "Cancelled"
    assert kms.describe_key(KeyId=node.f["hsmctl-bounded"])["KeyMetadata"]["KeyState"] == \
        "PendingImport"
    # Ctrl-C while waiting.
    p = hsmctl_import(node, node.f["hsmctl-stopped"], material)
    approval = open_import_request(node, node.f["hsmctl-stopped"], p)
    time.sleep(0.5)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode != 0, err
    assert f"approval request {approval} not approved before the wait was stopped" in err, err
    assert approvals(node)[approval]["State"] == "Cancelled"
    assert kms.describe_key(KeyId=node.f["hsmctl-stopped"])["KeyMetadata"]["KeyState"] == \
        "PendingImport"
    # A wait that is not whole seconds is refused before anything is sent.
    before = set(approvals(node))
    for bad in ("0", "-5", "2s", ""):
        p = hsmctl_import(node, node.f["hsmctl-stopped"], material, "--approval-wait", bad)
        out, err = p.communicate(timeout=30)
        assert p.returncode == 2 and "--approval-wait" in err, (bad, err)
    assert set(approvals(node)) == before


def test_hsmctl_cert_import_waits_for_each_certificate_of_a_chain(node, tmp_path):
    """A chain is one import per certificate: hsmctl waits for each in turn, so one run
    stores the whole chain, each certificate once."""
    make_pki(tmp_path)
    chain = tmp_path / "chain.pem"
    chain.write_text((tmp_path / "server.pem").read_text() + (tmp_path / "ca.pem").read_text())

    def stored():
        return {c["CertificateId"]: c for c in admin(node, "ListCertificates", {})["Certificates"]}
    before, seen = stored(), set(approvals(node))
    p = hsmctl_bg(node, "cert", "import", str(chain), "--label", "gate-chain")
    for _ in range(2):
        deadline, approval = time.time() + 30, None
        while approval is None and time.time() < deadline:
            fresh = [a for a in approvals(node).values() if a["ApprovalId"] not in seen and
                     (a["Operation"], a["State"]) == ("ImportCertificate", "Pending")]
            approval = fresh[0]["ApprovalId"] if fresh else time.sleep(0.2)
        assert approval is not None, "hsmctl opened no approval request"
        seen.add(approval)
        approve(node, approval)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert err.count("ImportCertificate waits for custodians' approval") == 2, err
    new = [c for cid, c in stored().items() if cid not in before]
    assert sorted(c["Label"] for c in new) == ["", "gate-chain"], new
    assert {c["Subject"] for c in new} == {c["Subject"] for c in new if c["Label"]} | \
        {c["Issuer"] for c in new if c["Label"]}


def opened(node, op, seen, deadline=30):
    """The approval request for op an hsmctl run opened (waiting for it to appear)."""
    end = time.time() + deadline
    while time.time() < end:
        for a in approvals(node).values():
            if a["ApprovalId"] not in seen and (a["Operation"], a["State"]) == (op, "Pending"):
                return a["ApprovalId"]
        time.sleep(0.2)
    raise AssertionError(f"hsmctl opened no approval request for {op}")


def test_hsmctl_user_create_waits_for_custodians_then_runs(node):
    """Every hsmctl command the node gates waits as key import does: user create names its
    approval request, waits, and runs once custodians approved it."""
    def users():
        return {u["UserName"]: u["Roles"] for u in admin(node, "ListUsers")["Users"]}
    seen = set(approvals(node))  # read before hsmctl starts: it may open its request at once
    p = hsmctl_bg(node, "user", "create", "ctl-approved", "--roles", "crypto-user")
    approval = opened(node, "CreateUser", seen)
    assert json.loads(approvals(node)[approval]["Request"])["UserName"] == "ctl-approved"
    time.sleep(0.5)
    assert p.poll() is None, p.communicate()  # still waiting
    assert "ctl-approved" not in users()
    approve(node, approval)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert f"CreateUser waits for custodians' approval: approval request {approval}" in err, err
    assert users()["ctl-approved"] == ["crypto-user"]
    assert approvals(node)[approval]["State"] == "Used"


def test_every_gated_hsmctl_command_waits_and_withdraws_at_approval_wait(node):
    """With --approval-wait and no custodian, each gated command waits that long, withdraws
    its approval request and fails, having changed nothing."""
    f = node.f
    commands = {
        "CreateUser": ["user", "create", "ctl-bounded", "--roles", "crypto-user"],
        "DisableUser": ["user", "disable", "u-disable"],
        "EnableUser": ["user", "enable", "u-enable"],
        "UnlockUser": ["user", "unlock", "u-unlock"],
        "CreateAccessKey": ["access-key", "create", "u-keys"],
        "RevokeAccessKey": ["access-key", "revoke", f["RevokeAccessKey"]],
        "DeleteCertificate": ["cert", "delete", f["DeleteCertificate"]],
        "EnableJwtSigning": ["jwt", "enable", f["EnableJwtSigning"]],
        "DisableJwtSigning": ["jwt", "disable", f["DisableJwtSigning"]],
        "CreateBackup": ["backup", "create"],
        "Seal": ["seal"],
    }
    users_before = admin(node, "ListUsers")["Users"]
    backups_before = admin(node, "ListBackups")["Backups"]
    seen = set(approvals(node))
    started = time.monotonic()
    runs = {op: hsmctl_bg(node, "--approval-wait", "2", *args) for op, args in commands.items()}
    # Each request stays Pending only for its run's 2 s: looked for one at a time, a request
    # opened early could be withdrawn before its turn while a slower run was still starting.
    # Look for all at once, and take one already withdrawn (its State is checked below).
    opened_by, end = {}, time.time() + 30
    while len(opened_by) < len(commands) and time.time() < end:
        for a in approvals(node).values():
            if a["ApprovalId"] not in seen and a["Operation"] in commands and \
                    a["State"] in ("Pending", "Cancelled"):
                opened_by.setdefault(a["Operation"], a["ApprovalId"])
        time.sleep(0.2)
    missing = set(commands) - set(opened_by)
    assert not missing, f"hsmctl opened no approval request for {missing}"
    for op, p in runs.items():
        out, err = p.communicate(timeout=60)
        approval = opened_by[op]
        assert p.returncode != 0, (op, out, err)
        assert f"approval request {approval} not approved within --approval-wait" in err, err
        assert f"approval request {approval} withdrawn" in err, err
        assert approvals(node)[approval]["State"] == "Cancelled", op
    assert time.monotonic() - started >= 2
    assert admin(node, "ListUsers")["Users"] == users_before
    assert admin(node, "ListBackups")["Backups"] == backups_before
    assert not admin(node, "Status")["Sealed"]


# Last in the file: it seals the node.
def test_each_operation_waits_changes_nothing_then_runs_once_approved(node):
    listed = cases(node)
    assert sorted(op for op, _, _ in listed) == sorted(KMS_OPS + ADMIN_OPS)
    assert listed[-1][0] == "Seal"
    for op, body, probe in listed:
        before = probe()
        approval = waits(node, op, body)
        assert probe() == before, f"{op} changed something while it waited"
        approve(node, approval)
        st, out = call(node, op, body)
        assert st == 200, (op, out)
        assert probe() != before, f"{op} changed nothing once approved"
        a = approvals(node)[approval] if op != "Seal" else None
        assert op == "Seal" or (a["State"], a["Approvals"]) == ("Used", 2), (op, a)


def test_delete_alias_waits_where_update_alias_does():
    """Where UpdateAlias waits for custodians, deleting the alias and creating it again on
    another key would redirect it all the same: DeleteAlias waits with it.  And a request
    that waits shows custodians only members named as operations name theirs, so no
    look-alike of hsmd's own hsmd:KeyId, or of a member beside it, can stand beside the
    real one."""
    first = start_dev()
    kms = client(first)
    for name in ("alice", "bob"):
        new_user(first, name, ["custodian"])
    prod, evil = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
    kms.create_alias(AliasName="alias/prod", TargetKeyId=prod)
    first.stop()
    server = Hsmd(["--dev", "--approval-quorum", "2", "--approval-operations", "UpdateAlias",
                   "--backup-interval-seconds", "0"], env=DEV_ENV, data_dir=first.data_dir)
    try:
        for op, body, code in (
                ("UpdateAlias", {"AliasName": "alias/prod", "TargetKeyId": evil},
                 "ApprovalRequiredException"),
                ("DeleteAlias", {"AliasName": "alias/prod"}, "ApprovalRequiredException"),
                ("CreateAlias", {"AliasName": "alias/prod", "TargetKeyId": evil},
                 "AlreadyExistsException")):
            st, out = signed_call(server, "TrentService." + op, body)
            assert (st, out.get("__type")) == (400, code), (op, out)
        assert client(server).describe_key(KeyId="alias/prod")["KeyMetadata"]["KeyId"] == prod
        opened = len(approvals(server))
        for member in ("hsmd:KeyId", "HSMD:KeyId", " hsmd:KeyId", "hsmd\uff1aKeyId",
                       "Target\u041aeyId"):
            st, out = signed_call(server, "TrentService.UpdateAlias",
                                  {"AliasName": "alias/prod", "TargetKeyId": evil, member: prod})
            assert (st, out.get("__type")) == (400, "ValidationException"), (member, out)
            assert "ASCII letters and digits" in out["message"], out
        # Nor a member that reads like another beside it: case, and I, l, 1 or O, 0.
        for member in ("TargetKeyID", "TARGETKEYID", "TargetKeyld", "TargetKey1d", "AIiasName"):
            st, out = signed_call(server, "TrentService.UpdateAlias",
                                  {"AliasName": "alias/prod", "TargetKeyId": evil, member: prod})
            assert (st, out.get("__type")) == (400, "ValidationException"), (member, out)
            assert "read alike" in out["message"], out
        assert len(approvals(server)) == opened
    finally:
        server.cleanup()
        first.cleanup()


def test_custodians_without_access_keys_do_not_make_a_quorum():
    """A custodian approves with an access key: the node refuses a quorum that only
    custodians holding one could meet, rather than start where nothing can be approved."""
    first = start_dev()
    for name in ("alice", "bob"):
        admin(first, "CreateUser", {"UserName": name, "Roles": ["custodian"]})
    new_user(first, "carol", ["custodian"])
    first.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    env.update(DEV_ENV)
    try:
        p = subprocess.run([HSMD, "--dev",
                            "--data-dir", first.data_dir, "--approval-quorum", "2",
                            "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 2, (p.returncode, p.stderr)
        assert "approval_quorum = 2, but the store has 1 enabled custodian holding an active " \
               "access key" in p.stderr, p.stderr
    finally:
        first.cleanup()



CERT_LIMIT = 100_000  # HSM_MAX_CERTIFICATES


def fill_certificates(data_dir, first, n):
    """n small certificate rows written straight into a stopped node's store (through
    the API, 100,000 imports would take minutes)."""
    der = self_signed("filler")
    db = sqlite3.connect(os.path.join(data_dir, "hsmd.db"), timeout=10)
    with db:
        db.executemany("INSERT INTO certificates (cert_id, label, object_id, der, creator, "
                       "created) VALUES (?, 'filler', X'', ?, 'ops', 1)",
                       ((f"{i:08x}-0000-4000-8000-000000000000", der)
                        for i in range(first, first + n)))
    db.close()


def test_an_import_past_the_certificate_limit_opens_no_approval_request():
    """One below the store's certificate limit the import waits for approval; at the
    limit it is refused at once, and no approval request is opened for it."""
    first = start_dev()
    try:
        for name in ("alice", "bob"):
            new_user(first, name, ["custodian"])
        first.stop()
        fill_certificates(first.data_dir, 0, CERT_LIMIT - 1)
        args = ["--dev", "--approval-quorum", "2", "--approval-operations", "ImportCertificate",
                "--backup-interval-seconds", "0"]
        body = {"Certificate": b64(self_signed("one-more"))}
        below = Hsmd(args, env=DEV_ENV, data_dir=first.data_dir)
        try:
            waits(below, "ImportCertificate", body)
            below.stop()
        finally:
            below.cleanup()
        fill_certificates(first.data_dir, CERT_LIMIT - 1, 1)
        full = Hsmd(args, env=DEV_ENV, data_dir=first.data_dir)
        try:
            before = approvals(full)
            st, out = call(full, "ImportCertificate", body)
            assert (st, out.get("__type")) == (400, "LimitExceededException"), out
            assert "100000" in out["message"], out
            assert approvals(full) == before
        finally:
            full.cleanup()
    finally:
        first.cleanup()
