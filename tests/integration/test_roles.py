"""Roles (crypto-officer, crypto-user, auditor) and key policies, with users
made through the admin API (HsmdAdmin.CreateUser / CreateAccessKey)."""
import json

import pytest

from conftest import DEV_AKID, DEV_SECRET, client, signed_request
from helpers import ACCOUNT, admin, audit_record, call_ok, new_user, raises, request_id

ROLES = {"officer": ["crypto-officer"], "user": ["crypto-user"], "auditor": ["auditor"],
         "billing": ["crypto-user"], "denied": ["crypto-user"]}


@pytest.fixture(scope="module")
def clients(hsmd):
    out = {}
    for name, roles in ROLES.items():
        akid, secret = new_user(hsmd, name, roles)
        out[name] = client(hsmd, akid, secret)
        out[name + "-creds"] = (akid, secret)
    return out


@pytest.fixture(scope="module")
def keys(kms):
    return {
        "sym": kms.create_key()["KeyMetadata"]["KeyId"],
        "sign": kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
            "KeyId"],
        "mac": kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"][
            "KeyId"],
    }


def arn(user):
    return f"arn:aws:iam::{ACCOUNT}:user/{user}"


VALID_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*",
    "Resource": "*"}]})


@pytest.fixture(scope="module")
def blob(kms, keys):
    return kms.encrypt(KeyId=keys["sym"], Plaintext=b"roles")["CiphertextBlob"]


def denied(fn, **kw):
    r = raises("AccessDeniedException", fn, status=400, **kw)
    return r["Error"]["Message"]


def test_users_are_listed_with_their_roles(hsmd, clients):
    users = {u["UserName"]: u for u in admin(hsmd, "ListUsers")["Users"]}
    for name, roles in ROLES.items():
        assert users[name]["Roles"] == roles
        assert users[name]["Disabled"] is False and users[name]["Locked"] is False
    assert sorted(users["dev"]["Roles"]) == ["auditor", "crypto-officer", "crypto-user"]


def test_create_user_validation(hsmd, clients):
    admin(hsmd, "CreateUser", {"UserName": "officer", "Roles": ["auditor"]}, expect=400)
    admin(hsmd, "CreateUser", {"UserName": "no-roles", "Roles": []}, expect=400)
    out = admin(hsmd, "CreateUser", {"UserName": "bad-role", "Roles": ["root"]}, expect=400)
    # The refusal lists every role there is.
    assert "expected crypto-officer, crypto-user, auditor or custodian" in out["message"], out
    admin(hsmd, "CreateUser", {"UserName": "bad name!", "Roles": ["auditor"]}, expect=400)
    admin(hsmd, "CreateAccessKey", {"UserName": "ghost"}, expect=400)
    names = {u["UserName"] for u in admin(hsmd, "ListUsers")["Users"]}
    assert not names & {"no-roles", "bad-role", "bad name!"}
    # Names are unique regardless of case, as in IAM: aws:username conditions compare them.
    out = admin(hsmd, "CreateUser", {"UserName": "OFFICER", "Roles": ["auditor"]}, expect=400)
    assert out["__type"] == "AlreadyExistsException" and "'officer'" not in out["message"], out
    assert "officer already exists" in out["message"], out
    assert "OFFICER" not in {u["UserName"] for u in admin(hsmd, "ListUsers")["Users"]}


def test_crypto_user(clients, keys):
    c = clients["user"]
    msg = denied(c.create_key)
    assert arn("user") in msg and "kms:CreateKey" in msg
    denied(c.disable_key, KeyId=keys["sym"])
    denied(c.enable_key, KeyId=keys["sym"])
    denied(c.schedule_key_deletion, KeyId=keys["sym"])
    denied(c.update_key_description, KeyId=keys["sym"], Description="x")
    denied(c.create_alias, AliasName="alias/by-user", TargetKeyId=keys["sym"])
    denied(c.tag_resource, KeyId=keys["sym"], Tags=[{"TagKey": "a", "TagValue": "b"}])
    denied(c.enable_key_rotation, KeyId=keys["sym"])
    denied(c.put_key_policy, KeyId=keys["sym"], PolicyName="default", Policy=VALID_POLICY)
    # Who may change a policy is decided before what the new policy says.
    denied(c.put_key_policy, KeyId=keys["sym"], PolicyName="default", Policy="{not json")
    denied(c.get_key_policy, KeyId=keys["sym"], PolicyName="default")
    # What a crypto-user is for.
    blob = c.encrypt(KeyId=keys["sym"], Plaintext=b"u")["CiphertextBlob"]
    assert c.decrypt(CiphertextBlob=blob)["Plaintext"] == b"u"
    c.generate_data_key(KeyId=keys["sym"], KeySpec="AES_256")
    c.re_encrypt(CiphertextBlob=blob, DestinationKeyId=keys["sym"])
    sig = c.sign(KeyId=keys["sign"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert c.verify(KeyId=keys["sign"], Message=b"m", Signature=sig,
                    SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]
    c.generate_mac(KeyId=keys["mac"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    c.generate_random(NumberOfBytes=8)
    c.describe_key(KeyId=keys["sym"])
    c.list_keys()
    c.list_aliases()
    c.get_public_key(KeyId=keys["sign"])


def test_crypto_officer(clients, keys, blob):
    c = clients["officer"]
    kid = c.create_key(Description="by officer")["KeyMetadata"]["KeyId"]
    c.disable_key(KeyId=kid)
    c.enable_key(KeyId=kid)
    c.create_alias(AliasName="alias/by-officer", TargetKeyId=kid)
    c.enable_key_rotation(KeyId=kid)
    c.get_key_policy(KeyId=kid, PolicyName="default")
    msg = denied(c.encrypt, KeyId=kid, Plaintext=b"x")
    assert arn("officer") in msg and "kms:Encrypt" in msg
    denied(c.decrypt, CiphertextBlob=blob)
    denied(c.generate_data_key, KeyId=kid, KeySpec="AES_256")
    denied(c.sign, KeyId=keys["sign"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    denied(c.verify, KeyId=keys["sign"], Message=b"m", Signature=b"s",
           SigningAlgorithm="ECDSA_SHA_256")
    denied(c.generate_mac, KeyId=keys["mac"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    denied(c.generate_random, NumberOfBytes=8)
    c.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)


def test_auditor(hsmd, clients, keys, blob):
    c = clients["auditor"]
    c.describe_key(KeyId=keys["sym"])
    c.list_keys()
    c.list_aliases()
    c.get_key_policy(KeyId=keys["sym"], PolicyName="default")
    c.list_key_policies(KeyId=keys["sym"])
    c.get_key_rotation_status(KeyId=keys["sym"])
    c.list_resource_tags(KeyId=keys["sym"])
    c.get_public_key(KeyId=keys["sign"])
    akid, secret = clients["auditor-creds"]
    call_ok(hsmd, "ListKeyRotations", {"KeyId": keys["sym"]}, akid=akid, secret=secret)
    denied(c.encrypt, KeyId=keys["sym"], Plaintext=b"x")
    denied(c.decrypt, CiphertextBlob=blob)
    denied(c.sign, KeyId=keys["sign"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    denied(c.create_key)
    denied(c.disable_key, KeyId=keys["sym"])
    denied(c.put_key_policy, KeyId=keys["sym"], PolicyName="default", Policy=VALID_POLICY)
    # Who may change a policy is decided before what the new policy says.
    denied(c.put_key_policy, KeyId=keys["sym"], PolicyName="default", Policy="{not json")
    # The audit helpers of the admin API; user management is for officers only.
    h = admin(hsmd, "AuditHash", {"Value": "billing"}, akid=akid, secret=secret)
    assert len(h["Hash"]) == 64
    assert admin(hsmd, "AuditHash", {"Value": "billing"})["Hash"] == h["Hash"]
    pem = admin(hsmd, "AuditPublicKey", akid=akid, secret=secret)["PublicKey"]
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    admin(hsmd, "CreateUser", {"UserName": "x", "Roles": ["auditor"]}, akid=akid, secret=secret,
          expect=400)
    admin(hsmd, "ListUsers", akid=akid, secret=secret, expect=400)


def test_admin_api_needs_an_officer(hsmd, clients):
    for who in ("user", "auditor"):
        akid, secret = clients[who + "-creds"]
        for op, body in (("CreateUser", {"UserName": "y", "Roles": ["crypto-officer"]}),
                         ("CreateAccessKey", {"UserName": who}),
                         ("DisableUser", {"UserName": "officer"}),
                         ("Seal", {})):
            out = admin(hsmd, op, body, akid=akid, secret=secret, expect=400)
            assert out["__type"] == "AccessDeniedException"
    akid, secret = clients["officer-creds"]
    admin(hsmd, "CreateUser", {"UserName": "made-by-officer", "Roles": ["auditor"]},
          akid=akid, secret=secret)
    admin(hsmd, "AuditHash", {"Value": "x"}, akid=akid, secret=secret)


def test_denials_are_audited(hsmd, clients, keys):
    akid, secret = clients["user-creds"]
    r = signed_request(hsmd, "TrentService.DisableKey", {"KeyId": keys["sym"]}, akid=akid,
                       secret=secret)
    assert r.status_code == 400 and r.json()["__type"] == "AccessDeniedException"
    rec = audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])
    assert (rec["op"], rec["outcome"], rec["error"]) == ("DisableKey", "denied",
                                                         "AccessDeniedException")
    assert rec["principal"] == arn("user") and rec["key_id"] == keys["sym"]


# ---- Key policies ---------------------------------------------------------------------------

def put_policy(kms, kid, *statements):
    doc = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "Dev", "Effect": "Allow", "Principal": {"AWS": arn("dev")}, "Action": "kms:*",
         "Resource": "*"}, *statements]})
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=doc)


def test_policy_with_encryption_context_condition(kms, clients):
    kid = kms.create_key()["KeyMetadata"]["KeyId"]
    put_policy(kms, kid, {
        "Sid": "BillingEncryptOnly", "Effect": "Allow", "Principal": {"AWS": arn("billing")},
        "Action": "kms:Encrypt", "Resource": "*",
        "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}}})
    c = clients["billing"]
    blob = c.encrypt(KeyId=kid, Plaintext=b"invoice",
                     EncryptionContext={"app": "billing"})["CiphertextBlob"]
    msg = denied(c.encrypt, KeyId=kid, Plaintext=b"x", EncryptionContext={"app": "payroll"})
    assert "kms:Encrypt" in msg and kid in msg
    denied(c.encrypt, KeyId=kid, Plaintext=b"x")
    denied(c.encrypt, KeyId=kid, Plaintext=b"x", EncryptionContext={"App": "Billing"})
    denied(c.decrypt, CiphertextBlob=blob, EncryptionContext={"app": "billing"})
    denied(c.generate_data_key, KeyId=kid, KeySpec="AES_256", EncryptionContext={"app": "billing"})
    denied(c.describe_key, KeyId=kid)
    # The key's other principals are unaffected; other users are not in the policy.
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "billing"})[
        "Plaintext"] == b"invoice"
    denied(clients["user"].encrypt, KeyId=kid, Plaintext=b"x", EncryptionContext={"app": "billing"})


def test_explicit_deny_wins(kms, clients):
    kid = kms.create_key()["KeyMetadata"]["KeyId"]
    put_policy(kms, kid,
               {"Sid": "AccountUsers", "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*",
                "Resource": "*"},
               {"Sid": "NoEncryptForDenied", "Effect": "Deny", "Principal": {"AWS": arn("denied")},
                "Action": ["kms:Encrypt", "kms:GenerateDataKey*"], "Resource": "*"})
    blob = kms.encrypt(KeyId=kid, Plaintext=b"d")["CiphertextBlob"]
    c = clients["denied"]
    msg = denied(c.encrypt, KeyId=kid, Plaintext=b"x")
    assert "explicit deny" in msg
    denied(c.generate_data_key, KeyId=kid, KeySpec="AES_128")
    assert c.decrypt(CiphertextBlob=blob)["Plaintext"] == b"d"
    # The Allow for the account still lets the other crypto-users in.
    clients["user"].encrypt(KeyId=kid, Plaintext=b"x")
    # Roles still apply under an allowing policy: an auditor cannot encrypt.
    denied(clients["auditor"].encrypt, KeyId=kid, Plaintext=b"x")


def admin_record(hsmd, op, body, expect=200, creds=None):
    """Runs an admin call; its answer and its audit record."""
    akid, secret = creds if creds else (DEV_AKID, DEV_SECRET)
    r = signed_request(hsmd, "HsmdAdmin." + op, body, akid=akid, secret=secret)
    assert r.status_code == expect, (op, r.status_code, r.text)
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert rec["op"] == op, rec
    return r.json(), rec


def test_user_and_access_key_changes_name_their_target(hsmd, clients):
    """Each user and access-key operation's record names the user, roles and
    access key it changed, when it succeeds and when it fails; never a secret."""
    def target(rec):
        ex = rec.get("extra", {})
        return (rec["outcome"], ex.get("target_user"), ex.get("target_roles"),
                ex.get("target_access_key_id"))

    _, rec = admin_record(hsmd, "CreateUser", {"UserName": "svc-a",
                                               "Roles": ["crypto-user", "auditor"]})
    assert target(rec) == ("success", "svc-a", "crypto-user,auditor", None)
    _, rec = admin_record(hsmd, "CreateUser", {"UserName": "svc-a", "Roles": ["crypto-user"]},
                          expect=400)
    assert target(rec) == ("error", "svc-a", "crypto-user", None)
    # Roles hsmd does not have: the record names what was asked for, as given.
    _, rec = admin_record(hsmd, "CreateUser", {"UserName": "svc-b",
                                               "Roles": ["crypto-user", "root"]}, expect=400)
    assert target(rec) == ("error", "svc-b", "crypto-user,root", None)
    # More roles than there are: as given too.
    _, rec = admin_record(hsmd, "CreateUser", {"UserName": "svc-b",
                                               "Roles": ["auditor"] * 4 + ["crypto-user"]},
                          expect=400)
    assert target(rec) == ("error", "svc-b", "auditor,auditor,auditor,auditor,crypto-user", None)
    key, rec = admin_record(hsmd, "CreateAccessKey", {"UserName": "svc-a"})
    assert target(rec) == ("success", "svc-a", None, key["AccessKeyId"])
    assert key["SecretAccessKey"] not in json.dumps(rec)
    _, rec = admin_record(hsmd, "CreateAccessKey", {"UserName": "nobody-here"}, expect=400)
    assert target(rec) == ("error", "nobody-here", None, None)
    _, rec = admin_record(hsmd, "ListAccessKeys", {"UserName": "svc-a"})
    assert target(rec) == ("success", "svc-a", None, None)
    for op in ("DisableUser", "EnableUser", "UnlockUser"):
        _, rec = admin_record(hsmd, op, {"UserName": "svc-a"})
        assert target(rec) == ("success", "svc-a", None, None), op
        _, rec = admin_record(hsmd, op, {"UserName": "nobody-here"}, expect=400)
        assert target(rec) == ("error", "nobody-here", None, None), op
    # Refused by role: still names what was attempted.
    _, rec = admin_record(hsmd, "DisableUser", {"UserName": "svc-a"}, expect=400,
                          creds=clients["user-creds"])
    assert target(rec) == ("denied", "svc-a", None, None)
    _, rec = admin_record(hsmd, "RevokeAccessKey", {"AccessKeyId": key["AccessKeyId"]})
    assert target(rec) == ("success", None, None, key["AccessKeyId"])
    _, rec = admin_record(hsmd, "RevokeAccessKey", {"AccessKeyId": "AKIA0000000000000000"},
                          expect=400)
    assert target(rec) == ("error", None, None, "AKIA0000000000000000")
