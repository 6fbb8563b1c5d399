"""Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant,
and requests a grant allows, through boto3 and botocore-signed requests.

Keys here carry a key policy that allows only the dev user, so whatever other
users may do with them comes from grants alone."""
import base64
import concurrent.futures
import datetime
import json
import re

import pytest

from conftest import client, signed_call, signed_request, start_dev
from helpers import (ACCOUNT, AwsCli, audit_record, call_error, key_arn, new_user, raises,
                     restart_dev)

USERS = {"app": ["crypto-user"], "other": ["crypto-user"], "retirer": ["crypto-user"],
         "officer": ["crypto-officer"], "auditor": ["auditor"]}


def arn(user):
    return f"arn:aws:iam::{ACCOUNT}:user/{user}"


ROOT = f"arn:aws:iam::{ACCOUNT}:root"
DEV_ONLY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Sid": "dev", "Effect": "Allow", "Principal": {"AWS": arn("dev")}, "Action": "kms:*",
    "Resource": "*"}]})


@pytest.fixture(scope="module")
def users(hsmd):
    out = {}
    for name, roles in USERS.items():
        akid, secret = new_user(hsmd, name, roles)
        out[name] = client(hsmd, akid, secret)
        out[name + "-creds"] = (akid, secret)
    return out


def dev_key(kms, **kw):
    return kms.create_key(Policy=DEV_ONLY, **kw)["KeyMetadata"]["KeyId"]


def denied(fn, **kw):
    return raises("AccessDeniedException", fn, status=400, **kw)


def test_a_grant_allows_its_grantee_what_the_key_policy_does_not(hsmd, kms, users):
    key = dev_key(kms)
    app, other = users["app"], users["other"]
    denied(app.encrypt, KeyId=key, Plaintext=b"x")
    g = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"),
                         Operations=["Encrypt", "Decrypt"])
    assert re.fullmatch(r"[0-9a-f]{64}", g["GrantId"]), g
    assert g["GrantToken"] and len(g["GrantToken"]) <= 8192
    # At once, with the token and without it (one node: the store is the truth).
    blob = app.encrypt(KeyId=key, Plaintext=b"granted", GrantTokens=[g["GrantToken"]])
    assert blob["KeyId"] == key_arn(key)
    blob = app.encrypt(KeyId=key, Plaintext=b"granted")["CiphertextBlob"]
    assert app.decrypt(CiphertextBlob=blob)["Plaintext"] == b"granted"
    # Only the operations granted, only to the grantee.
    denied(app.generate_data_key, KeyId=key, KeySpec="AES_256")
    denied(app.describe_key, KeyId=key)
    denied(other.encrypt, KeyId=key, Plaintext=b"x")
    denied(other.decrypt, CiphertextBlob=blob)


def test_grants_are_listed_with_every_field_and_filtered(hsmd, kms, users):
    key = dev_key(kms)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    g1 = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), RetiringPrincipal=arn("retirer"),
                          Operations=["Decrypt", "Encrypt", "DescribeKey"], Name="app-grant",
                          Constraints={"EncryptionContextSubset": {"Dept": "IT"}})
    g2 = kms.create_grant(KeyId=key_arn(key), GranteePrincipal=arn("other"),
                          Operations=["GenerateDataKey"],
                          Constraints={"EncryptionContextEquals": {"a": "1", "b": "2"}})
    g3 = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["ReEncryptFrom"])
    out = kms.list_grants(KeyId=key)
    assert out["Truncated"] is False and "NextMarker" not in out
    grants = {g["GrantId"]: g for g in out["Grants"]}
    assert set(grants) == {g1["GrantId"], g2["GrantId"], g3["GrantId"]}
    first = grants[g1["GrantId"]]
    assert first["KeyId"] == key_arn(key)
    assert first["Name"] == "app-grant"
    assert first["GranteePrincipal"] == arn("app")
    assert first["RetiringPrincipal"] == arn("retirer")
    assert first["IssuingAccount"] == ROOT
    assert sorted(first["Operations"]) == ["Decrypt", "DescribeKey", "Encrypt"]
    assert first["Constraints"] == {"EncryptionContextSubset": {"Dept": "IT"}}
    # hsmd stamps whole seconds: the grant's second may have begun before `before`.
    slack = datetime.timedelta(seconds=1)
    assert before - slack <= first["CreationDate"] <= datetime.datetime.now(datetime.timezone.utc)
    second = grants[g2["GrantId"]]
    assert second["Constraints"] == {"EncryptionContextEquals": {"a": "1", "b": "2"}}
    assert "Name" not in second and "RetiringPrincipal" not in second
    assert "Constraints" not in grants[g3["GrantId"]]
    # Filters.
    only = kms.list_grants(KeyId=key, GrantId=g2["GrantId"])["Grants"]
    assert [g["GrantId"] for g in only] == [g2["GrantId"]]
    mine = kms.list_grants(KeyId=key, GranteePrincipal=arn("app"))["Grants"]
    assert {g["GrantId"] for g in mine} == {g1["GrantId"], g3["GrantId"]}
    assert kms.list_grants(KeyId=key, GrantId=g2["GrantId"],
                           GranteePrincipal=arn("app"))["Grants"] == []
    assert kms.list_grants(KeyId=key, GrantId="0" * 64)["Grants"] == []
    # No grant names an AWS service principal (they are refused): filtering on one lists none.
    st, out = signed_call(hsmd, "TrentService.ListGrants",
                          {"KeyId": key, "GranteeServicePrincipal": "s3.amazonaws.com"})
    assert (st, out["Grants"], out["Truncated"]) == (200, [], False), out
    call_error(hsmd, "ListGrants", {"KeyId": "4d3f3e0a-0000-4000-8000-000000000000",
                                    "GranteeServicePrincipal": "s3.amazonaws.com"},
               "NotFoundException")
    # ServicePrincipalType: 1-128 characters, a dotted service name.
    for bad in ("s" * 120 + ".amazonaws.com", "not a service", "nodot"):
        call_error(hsmd, "ListGrants", {"KeyId": key, "GranteeServicePrincipal": bad},
                   "ValidationException")
    # ListRetirableGrants takes a retiring principal or a service one (which lists none).
    st, out = signed_call(hsmd, "TrentService.ListRetirableGrants",
                          {"RetiringServicePrincipal": "dynamodb.amazonaws.com"})
    assert (st, out["Grants"], out["Truncated"]) == (200, [], False), out
    call_error(hsmd, "ListRetirableGrants", {}, "ValidationException")
    call_error(hsmd, "ListRetirableGrants", {"RetiringPrincipal": arn("dev"),
                                             "RetiringServicePrincipal": 12345},
               "SerializationException")
    # Pages of one, in order, each id once.
    seen, marker = [], None
    while True:
        page = kms.list_grants(KeyId=key, Limit=1, **({"Marker": marker} if marker else {}))
        seen += [g["GrantId"] for g in page["Grants"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert seen == sorted(grants)
    raises("InvalidMarkerException", kms.list_grants, KeyId=key, Marker="not-a-marker")
    # Other keys' grants are not listed; auditors may list, the key policy still decides.
    assert kms.list_grants(KeyId=dev_key(kms))["Grants"] == []
    denied(users["auditor"].list_grants, KeyId=key)
    open_key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_grant(KeyId=open_key, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    assert len(users["auditor"].list_grants(KeyId=open_key)["Grants"]) == 1


def test_constraints_match_keys_without_case_and_values_exactly(kms, users):
    key = dev_key(kms)
    app = users["app"]
    kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt", "Decrypt"],
                     Constraints={"EncryptionContextSubset": {"Dept": "IT"}})
    blob = app.encrypt(KeyId=key, Plaintext=b"s", EncryptionContext={"dept": "IT", "x": "y"})
    assert app.decrypt(CiphertextBlob=blob["CiphertextBlob"],
                       EncryptionContext={"dept": "IT", "x": "y"})["Plaintext"] == b"s"
    denied(app.encrypt, KeyId=key, Plaintext=b"s", EncryptionContext={"Dept": "it"})
    denied(app.encrypt, KeyId=key, Plaintext=b"s")
    key2 = dev_key(kms)
    kms.create_grant(KeyId=key2, GranteePrincipal=arn("other"), Operations=["GenerateDataKey"],
                     Constraints={"EncryptionContextEquals": {"a": "1"}})
    other = users["other"]
    assert len(other.generate_data_key(KeyId=key2, KeySpec="AES_256",
                                       EncryptionContext={"A": "1"})["Plaintext"]) == 32
    denied(other.generate_data_key, KeyId=key2, KeySpec="AES_256",
           EncryptionContext={"a": "1", "b": "2"})
    denied(other.generate_data_key, KeyId=key2, KeySpec="AES_256", EncryptionContext={})


def test_a_context_spelling_a_constrained_key_twice_needs_the_value_in_each(kms, users):
    # Keys match without case, so {"tenant": "acme", "Tenant": "evil"} names the
    # constrained key twice: a grant for one tenant must not accept the other's value
    # beside its own, or one tenant's grantee makes data another's grant opens.
    key = dev_key(kms)
    app, other = users["app"], users["other"]
    for who, tenant in (("app", "acme"), ("other", "evil")):
        kms.create_grant(KeyId=key, GranteePrincipal=arn(who), Operations=["Encrypt", "Decrypt"],
                         Constraints={"EncryptionContextSubset": {"tenant": tenant}})
    twins = {"tenant": "acme", "Tenant": "evil"}
    denied(app.encrypt, KeyId=key, Plaintext=b"s", EncryptionContext=twins)
    denied(other.encrypt, KeyId=key, Plaintext=b"s",
           EncryptionContext={"TENANT": "evil", "tenant": "acme"})
    blob = kms.encrypt(KeyId=key, Plaintext=b"s", EncryptionContext=twins)["CiphertextBlob"]
    denied(other.decrypt, CiphertextBlob=blob, EncryptionContext=twins)
    denied(app.decrypt, CiphertextBlob=blob, EncryptionContext=twins)
    # Two spellings with the same value meet the constraint; so does one spelling.
    same = {"tenant": "acme", "TENANT": "acme"}
    blob = app.encrypt(KeyId=key, Plaintext=b"s", EncryptionContext=same)["CiphertextBlob"]
    assert app.decrypt(CiphertextBlob=blob, EncryptionContext=same)["Plaintext"] == b"s"
    blob = other.encrypt(KeyId=key, Plaintext=b"s",
                         EncryptionContext={"Tenant": "evil"})["CiphertextBlob"]
    assert other.decrypt(CiphertextBlob=blob,
                         EncryptionContext={"Tenant": "evil"})["Plaintext"] == b"s"
    # EncryptionContextEquals holds spellings to the same rule.
    key2 = dev_key(kms)
    kms.create_grant(KeyId=key2, GranteePrincipal=arn("app"), Operations=["Encrypt"],
                     Constraints={"EncryptionContextEquals": {"tenant": "acme", "x": "1"}})
    denied(app.encrypt, KeyId=key2, Plaintext=b"s",
           EncryptionContext={"tenant": "acme", "Tenant": "evil", "x": "1"})
    denied(app.encrypt, KeyId=key2, Plaintext=b"s",
           EncryptionContext={"tenant": "acme", "X": "2", "x": "1"})
    assert app.encrypt(KeyId=key2, Plaintext=b"s",
                       EncryptionContext={"Tenant": "acme", "x": "1"})["KeyId"] == key_arn(key2)


def test_grants_on_signing_and_mac_keys(kms, users):
    sign = dev_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    mac = dev_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    app = users["app"]
    denied(app.sign, KeyId=sign, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    kms.create_grant(KeyId=sign, GranteePrincipal=arn("app"),
                     Operations=["Sign", "Verify", "GetPublicKey"])
    sig = app.sign(KeyId=sign, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert app.verify(KeyId=sign, Message=b"m", Signature=sig,
                      SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"] is True
    assert app.get_public_key(KeyId=sign)["KeySpec"] == "ECC_NIST_P256"
    # RSA signatures continue on the lane, where the grant is asked too.
    rsa = dev_key(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    denied(app.sign, KeyId=rsa, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
    kms.create_grant(KeyId=rsa, GranteePrincipal=arn("app"), Operations=["Sign"])
    assert len(app.sign(KeyId=rsa, Message=b"m",
                        SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]) == 256
    kms.create_grant(KeyId=mac, GranteePrincipal=ROOT, Operations=["GenerateMac"])
    # A grant to the account is a grant to each of its users (within their roles).
    for who in ("app", "other"):
        assert len(users[who].generate_mac(KeyId=mac, Message=b"m",
                                           MacAlgorithm="HMAC_SHA_256")["Mac"]) == 32
    denied(app.verify_mac, KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=b"0" * 32)
    # Operations must suit the key; constraints exist only on symmetric encryption keys.
    raises("ValidationException", kms.create_grant, KeyId=sign, GranteePrincipal=arn("app"),
           Operations=["Encrypt"], message="not valid for a key with KeySpec ECC_NIST_P256")
    raises("ValidationException", kms.create_grant, KeyId=mac, GranteePrincipal=arn("app"),
           Operations=["GenerateMac"], Constraints={"EncryptionContextSubset": {"a": "b"}})
    raises("ValidationException", kms.create_grant, KeyId=dev_key(kms), GranteePrincipal=arn("app"),
           Operations=["Sign"])


# Grant operations of an asymmetric ENCRYPT_DECRYPT key (AWS KMS developer guide, "Grant
# operations"); those that take an encryption context only on a symmetric key are not.
ASYMMETRIC_ENCRYPT_OPS = ["Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey",
                          "DescribeKey", "CreateGrant", "RetireGrant"]
NOT_FOR_ASYMMETRIC_ENCRYPT = ["GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
                              "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext",
                              "Sign", "Verify", "GenerateMac", "VerifyMac", "DeriveSharedSecret"]


def test_grants_on_an_asymmetric_encryption_key(kms, users):
    rsa = dev_key(kms, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")
    app = users["app"]
    oaep = "RSAES_OAEP_SHA_256"
    # Each operation a grant on it may not allow is refused by name, and creates nothing.
    for op in NOT_FOR_ASYMMETRIC_ENCRYPT:
        raises("ValidationException", kms.create_grant, KeyId=rsa, GranteePrincipal=arn("app"),
               Operations=["Encrypt", op], status=400,
               message=f"Operation {op} is not valid for a key with KeySpec RSA_2048 and "
                       "KeyUsage ENCRYPT_DECRYPT")
    # Constraints exist only on symmetric encryption keys, for the operations it allows too.
    for kind in ("EncryptionContextSubset", "EncryptionContextEquals"):
        raises("ValidationException", kms.create_grant, KeyId=rsa, GranteePrincipal=arn("app"),
               Operations=["Encrypt", "Decrypt"], Constraints={kind: {"a": "1"}},
               message="supported only for symmetric encryption")
    assert kms.list_grants(KeyId=rsa)["Grants"] == []
    denied(app.encrypt, KeyId=rsa, Plaintext=b"x", EncryptionAlgorithm=oaep)
    # All eight together: accepted, listed as given, and each one works for the grantee.
    g = kms.create_grant(KeyId=rsa, GranteePrincipal=arn("app"), Operations=ASYMMETRIC_ENCRYPT_OPS)
    listed = kms.list_grants(KeyId=rsa)["Grants"]
    assert [x["GrantId"] for x in listed] == [g["GrantId"]]
    assert sorted(listed[0]["Operations"]) == sorted(ASYMMETRIC_ENCRYPT_OPS)
    blob = app.encrypt(KeyId=rsa, Plaintext=b"rsa", EncryptionAlgorithm=oaep)["CiphertextBlob"]
    assert app.decrypt(KeyId=rsa, CiphertextBlob=blob,
                       EncryptionAlgorithm=oaep)["Plaintext"] == b"rsa"
    again = app.re_encrypt(CiphertextBlob=blob, SourceKeyId=rsa, SourceEncryptionAlgorithm=oaep,
                           DestinationKeyId=rsa, DestinationEncryptionAlgorithm=oaep)
    assert again["SourceKeyId"] == again["KeyId"] == key_arn(rsa)
    assert kms.decrypt(KeyId=rsa, CiphertextBlob=again["CiphertextBlob"],
                       EncryptionAlgorithm=oaep)["Plaintext"] == b"rsa"
    assert app.get_public_key(KeyId=rsa)["EncryptionAlgorithms"] == [
        "RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    assert app.describe_key(KeyId=rsa)["KeyMetadata"]["KeySpec"] == "RSA_2048"
    # CreateGrant by the grantee, within what it holds; RetireGrant of its own grant.
    child = app.create_grant(KeyId=rsa, GranteePrincipal=arn("other"),
                             Operations=["GetPublicKey"])
    assert users["other"].get_public_key(KeyId=rsa)["KeySpec"] == "RSA_2048"
    denied(users["other"].encrypt, KeyId=rsa, Plaintext=b"x", EncryptionAlgorithm=oaep)
    app.retire_grant(KeyId=rsa, GrantId=g["GrantId"])
    assert [x["GrantId"] for x in kms.list_grants(KeyId=rsa)["Grants"]] == [child["GrantId"]]
    denied(app.encrypt, KeyId=rsa, Plaintext=b"x", EncryptionAlgorithm=oaep)


def test_reencrypt_needs_reencrypt_from_on_the_source_and_to_on_the_destination(kms, users):
    src, dst = dev_key(kms), dev_key(kms)
    app = users["app"]
    blob = kms.encrypt(KeyId=src, Plaintext=b"move me",
                       EncryptionContext={"app": "a"})["CiphertextBlob"]
    other_blob = kms.encrypt(KeyId=src, Plaintext=b"not this",
                             EncryptionContext={"app": "b"})["CiphertextBlob"]

    def reencrypt(ciphertext=blob, source_ctx=None, dest_ctx=None, who=app):
        return who.re_encrypt(CiphertextBlob=ciphertext,
                              SourceEncryptionContext=source_ctx or {"app": "a"},
                              DestinationKeyId=dst,
                              DestinationEncryptionContext=dest_ctx or {"dest": "d"})

    def refused(**kw):
        denied(reencrypt, **kw)

    # A refusal names the action refused: ReEncryptFrom on the source, ReEncryptTo on the
    # destination.
    refused(message=f"perform: kms:ReEncryptFrom on resource: {key_arn(src)} ")
    # Decrypt on the source and Encrypt on the destination are not ReEncrypt.
    kms.create_grant(KeyId=src, GranteePrincipal=arn("app"), Operations=["Decrypt"])
    kms.create_grant(KeyId=dst, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    refused()
    # ReEncryptFrom on the source alone; then ReEncryptTo on the wrong key (the source).
    from_g = kms.create_grant(KeyId=src, GranteePrincipal=arn("app"),
                              Operations=["ReEncryptFrom"],
                              Constraints={"EncryptionContextSubset": {"app": "a"}})
    refused(message=f"perform: kms:ReEncryptTo on resource: {key_arn(dst)} ")
    wrong = kms.create_grant(KeyId=src, GranteePrincipal=arn("app"), Operations=["ReEncryptTo"])
    refused()
    kms.revoke_grant(KeyId=src, GrantId=wrong["GrantId"])
    to_g = kms.create_grant(KeyId=dst, GranteePrincipal=arn("app"), Operations=["ReEncryptTo"],
                            Constraints={"EncryptionContextEquals": {"dest": "d"}})
    # Both: allowed, and the result opens under the destination key and context.
    out = reencrypt()
    assert (out["SourceKeyId"], out["KeyId"]) == (key_arn(src), key_arn(dst))
    assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"],
                       EncryptionContext={"dest": "d"})["Plaintext"] == b"move me"
    # Each grant's constraint applies to its own side: the source context to ReEncryptFrom,
    # the destination context to ReEncryptTo.
    refused(ciphertext=other_blob, source_ctx={"app": "b"})
    refused(dest_ctx={"dest": "d", "x": "y"})
    refused(dest_ctx={"dest": "D"})
    # The grants are the grantee's alone.
    denied(reencrypt, who=users["other"])
    # Either one gone: refused again.
    kms.revoke_grant(KeyId=src, GrantId=from_g["GrantId"])
    refused()
    from_g = kms.create_grant(KeyId=src, GranteePrincipal=arn("app"),
                              Operations=["ReEncryptFrom"])
    reencrypt()
    kms.revoke_grant(KeyId=dst, GrantId=to_g["GrantId"])
    refused()
    assert len(kms.list_grants(KeyId=src)["Grants"]) == 2  # Decrypt, ReEncryptFrom
    assert len(kms.list_grants(KeyId=dst)["Grants"]) == 1  # Encrypt
    # One grant allowing both, on one key, allows re-encrypting on that key.
    kms.create_grant(KeyId=src, GranteePrincipal=arn("other"),
                     Operations=["ReEncryptFrom", "ReEncryptTo"])
    out = users["other"].re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"app": "a"},
                                    DestinationKeyId=src)
    assert (out["SourceKeyId"], out["KeyId"]) == (key_arn(src), key_arn(src))
    assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"] == b"move me"


def test_each_data_key_operation_needs_its_own_grant_operation(kms, users):
    app = users["app"]
    ctx = {"purpose": "data-keys"}
    calls = {
        "GenerateDataKey": lambda **kw: app.generate_data_key(KeySpec="AES_256", **kw),
        "GenerateDataKeyWithoutPlaintext": lambda **kw: app.generate_data_key_without_plaintext(
            KeySpec="AES_256", **kw),
        "GenerateDataKeyPair": lambda **kw: app.generate_data_key_pair(
            KeyPairSpec="ECC_NIST_P256", **kw),
        "GenerateDataKeyPairWithoutPlaintext": lambda **kw:
            app.generate_data_key_pair_without_plaintext(KeyPairSpec="ECC_NIST_P256", **kw),
    }
    for granted in calls:
        key = dev_key(kms)
        kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=[granted],
                         Constraints={"EncryptionContextSubset": ctx})
        out = calls[granted](KeyId=key, EncryptionContext=ctx)
        assert out["KeyId"] == key_arn(key)
        assert ("Plaintext" in out or "PrivateKeyPlaintext" in out) == \
            (not granted.endswith("WithoutPlaintext")), (granted, sorted(out))
        # The grant's constraint applies to it: each one takes an encryption context.
        denied(calls[granted], KeyId=key, EncryptionContext={"purpose": "other"})
        denied(calls[granted], KeyId=key)
        for op, call in calls.items():
            if op != granted:
                denied(call, KeyId=key, EncryptionContext=ctx)
        denied(app.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext=ctx)
        assert len(kms.list_grants(KeyId=key)["Grants"]) == 1


def test_bad_requests_are_refused_and_create_nothing(hsmd, kms):
    key = dev_key(kms)
    raises("ValidationException", kms.create_grant, KeyId="alias/nope",
           GranteePrincipal=arn("app"), Operations=["Encrypt"])
    raises("NotFoundException", kms.create_grant, KeyId="4d3f3e0a-0000-4000-8000-000000000000",
           GranteePrincipal=arn("app"), Operations=["Encrypt"])
    call_error(hsmd, "CreateGrant", {"KeyId": key, "GranteePrincipal": arn("app"),
                                     "Operations": ["Encrypt", "Frobnicate"]},
               "ValidationException")
    call_error(hsmd, "CreateGrant", {"KeyId": key, "GranteePrincipal": arn("app"),
                                     "Operations": []}, "ValidationException")
    call_error(hsmd, "CreateGrant", {"KeyId": key, "GranteePrincipal": "no spaces allowed",
                                     "Operations": ["Encrypt"]}, "ValidationException")
    # Principals that could never be a caller of hsmd: not ARNs, roles, other accounts.
    account = arn("app").split(":")[4]
    for who in ("nobody", f"arn:aws:iam::{account}:role/app", "arn:aws:iam::999988887777:root",
                f"arn:aws:iam::{account}:user/", f"arn:aws:iam::{account}:user/a/b",
                f"arn:aws:sts::{account}:assumed-role/app/s"):
        out = call_error(hsmd, "CreateGrant", {"KeyId": key, "GranteePrincipal": who,
                                               "Operations": ["Encrypt"]}, "ValidationException")
        assert "GranteePrincipal must be the ARN of a user" in out["message"], out
        call_error(hsmd, "CreateGrant", {"KeyId": key, "GranteePrincipal": arn("app"),
                                         "RetiringPrincipal": who, "Operations": ["Encrypt"]},
                   "ValidationException")
    call_error(hsmd, "CreateGrant", {"KeyId": key, "GranteePrincipal": arn("app"),
                                     "Operations": ["Encrypt"], "Name": "bad name!"},
               "ValidationException")
    call_error(hsmd, "CreateGrant", {"KeyId": key, "GranteePrincipal": arn("app"),
                                     "Operations": ["Encrypt"], "Constraints": {
                                         "EncryptionContextSubset": {str(i): "v" for i in
                                                                     range(9)}}},
               "ValidationException")
    call_error(hsmd, "CreateGrant", {"KeyId": key, "GranteePrincipal": arn("app"),
                                     "Operations": ["Encrypt"], "Constraints": {
                                         "EncryptionContextEquals": {"k": "v" * 385}}},
               "ValidationException")
    # What names AWS services (hsmd serves none) is refused, never dropped: a dropped
    # SourceArn would leave the grant unconstrained, a dropped principal change its holder.
    base = {"KeyId": key, "GranteePrincipal": arn("app"), "Operations": ["Encrypt"]}
    for extra in ({"Constraints": {"SourceArn": "arn:aws:s3:::reports-bucket-0001"}},
                  {"Constraints": {"EncryptionContextSubset": {"a": "1"},
                                   "SourceArn": "arn:aws:s3:::reports-bucket-0001"}},
                  {"GranteeServicePrincipal": "s3.amazonaws.com"},
                  {"RetiringPrincipal": arn("ops"),
                   "RetiringServicePrincipal": "s3.amazonaws.com"}):
        # ValidationException: CreateGrant declares no UnsupportedOperationException.
        out = call_error(hsmd, "CreateGrant", dict(base, **extra), "ValidationException")
        assert "not supported" in out["message"], out
    out = call_error(hsmd, "CreateGrant", dict(base, Constraints={"EncryptionContextEqual": {}}),
                     "ValidationException")
    assert "EncryptionContextEqual'" in out["message"], out
    assert kms.list_grants(KeyId=key)["Grants"] == []
    # Grant tokens in any request are checked for form.
    raises("InvalidGrantTokenException", kms.encrypt, KeyId=key, Plaintext=b"x",
           GrantTokens=["not a token"])
    call_error(hsmd, "Encrypt", {"KeyId": key, "Plaintext": "eA==",
                                 "GrantTokens": ["x"] * 11}, "ValidationException")
    for token in ("", "a" * 8193):  # GrantTokenType: 1-8192 characters
        call_error(hsmd, "Encrypt", {"KeyId": key, "Plaintext": "eA==", "GrantTokens": [token]},
                   "ValidationException")
    # The request's shape comes first, as in AWS KMS: a required member missing is
    # ValidationException beside a malformed token too; with the shape right, the token.
    out = call_error(hsmd, "Encrypt", {"Plaintext": "eA==", "GrantTokens": ["not a token"]},
                     "ValidationException")
    assert "'keyId'" in out["message"], out
    out = call_error(hsmd, "Verify", {"KeyId": key, "Message": "eA==", "GrantTokens": ["x"],
                                      "SigningAlgorithm": "ECDSA_SHA_256"}, "ValidationException")
    assert "'signature'" in out["message"], out
    out = call_error(hsmd, "DescribeKey", {"GrantTokens": ["x"]}, "ValidationException")
    assert "'keyId'" in out["message"], out
    call_error(hsmd, "Decrypt", {"CiphertextBlob": "eA==", "GrantTokens": ["x"]},
               "InvalidGrantTokenException")
    # DescribeKey declares no InvalidGrantTokenException: ValidationException, saying why.
    out = call_error(hsmd, "DescribeKey", {"KeyId": key, "GrantTokens": ["x"]},
                     "ValidationException")
    assert out["message"].startswith("GrantTokens: "), out


def test_a_retried_create_with_the_same_name_returns_the_same_grant(kms):
    key = dev_key(kms)
    args = dict(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt", "Decrypt"],
                Name="retry-me", Constraints={"EncryptionContextSubset": {"a": "b"}})
    first = kms.create_grant(**args)
    again = kms.create_grant(**dict(args, Operations=["Decrypt", "Encrypt"]))
    assert again["GrantId"] == first["GrantId"]
    # Each request gets a token of its own (as AWS KMS documents), and each one works.
    assert again["GrantToken"] != first["GrantToken"]
    for token in (first["GrantToken"], again["GrantToken"]):
        kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"a": "b"},
                    GrantTokens=[token])
    changed = kms.create_grant(**dict(args, Operations=["Encrypt"]))
    assert changed["GrantId"] != first["GrantId"]
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 2


def test_every_token_of_a_retried_create_names_the_first_grant(kms, users):
    key = dev_key(kms)
    app = users["app"]
    args = dict(KeyId=key, GranteePrincipal=arn("app"), RetiringPrincipal=arn("retirer"),
                Operations=["Encrypt", "RetireGrant"], Name="retried-token")
    first = kms.create_grant(**args)
    again = kms.create_grant(**args)
    assert again["GrantId"] == first["GrantId"]
    # The retry's token authorizes and retires the grant the first call made.
    app.encrypt(KeyId=key, Plaintext=b"x", GrantTokens=[again["GrantToken"]])
    app.retire_grant(GrantToken=again["GrantToken"])
    assert kms.list_grants(KeyId=key)["Grants"] == []
    denied(app.encrypt, KeyId=key, Plaintext=b"x")
    raises("NotFoundException", users["retirer"].retire_grant, GrantToken=first["GrantToken"])
    # So does its retiring principal's, with a retry's token too.
    first = kms.create_grant(**args)
    again = kms.create_grant(**args)
    users["retirer"].retire_grant(GrantToken=again["GrantToken"])
    assert kms.list_grants(KeyId=key)["Grants"] == []
    denied(app.encrypt, KeyId=key, Plaintext=b"x")


def test_retire_by_token_by_id_and_who_may(hsmd, kms, users):
    key = dev_key(kms)
    app, retirer = users["app"], users["retirer"]
    g = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), RetiringPrincipal=arn("retirer"),
                         Operations=["Encrypt"])
    app.encrypt(KeyId=key, Plaintext=b"x")
    # The grantee may not retire a grant that does not allow it; nor may a stranger.
    denied(app.retire_grant, GrantToken=g["GrantToken"])
    denied(users["other"].retire_grant, KeyId=key, GrantId=g["GrantId"])
    r = signed_request(hsmd, "TrentService.RetireGrant", {"GrantToken": g["GrantToken"]},
                       *users["retirer-creds"])
    assert r.status_code == 200, r.text
    rec = audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])
    assert (rec["op"], rec["outcome"], rec["key_id"]) == ("RetireGrant", "success", key)
    assert rec["principal"] == arn("retirer") and rec["extra"]["grant_id"] == g["GrantId"], rec
    denied(app.encrypt, KeyId=key, Plaintext=b"x")
    raises("NotFoundException", retirer.retire_grant, GrantToken=g["GrantToken"])
    # A grantee whose grant allows RetireGrant retires it by key and grant id.
    g2 = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"),
                          Operations=["Encrypt", "RetireGrant"])
    app.retire_grant(KeyId=key_arn(key), GrantId=g2["GrantId"])
    assert kms.list_grants(KeyId=key)["Grants"] == []
    raises("InvalidGrantTokenException", retirer.retire_grant, GrantToken="garbage")
    raises("InvalidGrantIdException", retirer.retire_grant, KeyId=key, GrantId="xyz")
    raises("ValidationException", retirer.retire_grant, KeyId=key)


def test_revoke_follows_the_key_policy(kms, users):
    key = dev_key(kms)
    g = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    denied(users["app"].revoke_grant, KeyId=key, GrantId=g["GrantId"])  # no role for it
    denied(users["officer"].revoke_grant, KeyId=key, GrantId=g["GrantId"])  # not in the policy
    users["app"].encrypt(KeyId=key, Plaintext=b"x")
    kms.revoke_grant(KeyId=key, GrantId=g["GrantId"])
    denied(users["app"].encrypt, KeyId=key, Plaintext=b"x")
    raises("NotFoundException", kms.revoke_grant, KeyId=key, GrantId=g["GrantId"])
    raises("InvalidGrantIdException", kms.revoke_grant, KeyId=key, GrantId="G" * 64)


def test_revoke_and_retire_of_a_grant_the_key_does_not_hold(hsmd, kms, users):
    # AWS KMS documents NotFoundException for a grant that is not there and
    # InvalidGrantIdException for a GrantId that is not one (RevokeGrant, RetireGrant).
    key, elsewhere = dev_key(kms), dev_key(kms)
    g = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), RetiringPrincipal=arn("retirer"),
                         Operations=["Encrypt", "RetireGrant"])
    missing = "0123456789abcdef" * 4
    for gid in (missing, g["GrantId"]):
        r = raises("NotFoundException", kms.revoke_grant, KeyId=elsewhere, GrantId=gid,
                   status=400)
        assert r["Error"]["Message"] == f"Grant ID {gid} not found", r
        raises("NotFoundException", kms.revoke_grant, KeyId=key_arn(elsewhere), GrantId=gid)
        for who in ("retirer", "app"):
            r = raises("NotFoundException", users[who].retire_grant, KeyId=elsewhere,
                       GrantId=gid, status=400)
            assert r["Error"]["Message"] == f"Grant ID {gid} not found", r
    raises("NotFoundException", kms.revoke_grant, KeyId=key, GrantId=missing)
    raises("NotFoundException", users["retirer"].retire_grant, KeyId=key, GrantId=missing)
    # A key that is not there at all: NotFoundException too.
    raises("NotFoundException", kms.revoke_grant, KeyId="4d3f3e0a-0000-4000-8000-000000000000",
           GrantId=g["GrantId"])
    # Nothing changed: the grant is still listed, on its key only, and still allows.
    assert [x["GrantId"] for x in kms.list_grants(KeyId=key)["Grants"]] == [g["GrantId"]]
    assert kms.list_grants(KeyId=elsewhere)["Grants"] == []
    users["app"].encrypt(KeyId=key, Plaintext=b"x")


def test_a_grant_revoked_or_retired_at_once_by_many_is_removed_once(hsmd, kms, users):
    key = dev_key(kms)
    creds = {"dev": {}, "retirer": dict(zip(("akid", "secret"), users["retirer-creds"]))}
    for round_ in range(3):
        g = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"),
                             RetiringPrincipal=arn("retirer"), Operations=["Encrypt"])
        calls = [("RevokeGrant", "dev"), ("RetireGrant", "retirer")] * 4

        def call(op_who):
            op, who = op_who
            return signed_call(hsmd, "TrentService." + op,
                               {"KeyId": key, "GrantId": g["GrantId"]}, **creds[who])

        with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(call, calls))
        ok = [a for a in answers if a[0] == 200]
        assert len(ok) == 1, (round_, answers)
        for st, out in answers:
            if st != 200:
                assert (st, out.get("__type")) == (400, "NotFoundException"), answers
                assert out["message"] == f"Grant ID {g['GrantId']} not found", answers
        assert kms.list_grants(KeyId=key)["Grants"] == []
        denied(users["app"].encrypt, KeyId=key, Plaintext=b"x")


def test_list_retirable_grants_spans_keys(kms, users):
    k1, k2 = dev_key(kms), dev_key(kms)
    ids = {kms.create_grant(KeyId=k, GranteePrincipal=arn("app"), Operations=["Encrypt"],
                            RetiringPrincipal=arn("auditor"))["GrantId"] for k in (k1, k2)}
    kms.create_grant(KeyId=k1, GranteePrincipal=arn("app"), Operations=["Decrypt"],
                     RetiringPrincipal=arn("other"))
    out = users["auditor"].list_retirable_grants(RetiringPrincipal=arn("auditor"))
    assert {g["GrantId"] for g in out["Grants"]} == ids
    assert {g["KeyId"] for g in out["Grants"]} == {key_arn(k1), key_arn(k2)}
    page = kms.list_retirable_grants(RetiringPrincipal=arn("auditor"), Limit=1)
    assert page["Truncated"] is True and len(page["Grants"]) == 1
    rest = kms.list_retirable_grants(RetiringPrincipal=arn("auditor"), Marker=page["NextMarker"])
    assert {g["GrantId"] for g in page["Grants"] + rest["Grants"]} == ids
    denied(users["app"].list_retirable_grants, RetiringPrincipal=arn("app"))


def test_an_explicit_deny_in_the_key_policy_beats_a_grant(kms, users):
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": arn("dev")}, "Action": "kms:*",
         "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": arn("app")}, "Action": "kms:Decrypt",
         "Resource": "*"}]})
    key = kms.create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt", "Decrypt"])
    blob = users["app"].encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    r = denied(users["app"].decrypt, CiphertextBlob=blob)
    assert "explicit deny" in r["Error"]["Message"]


def test_roles_still_bound_what_a_grant_allows(kms, users):
    key = dev_key(kms)
    kms.create_grant(KeyId=key, GranteePrincipal=arn("auditor"), Operations=["Encrypt"])
    r = denied(users["auditor"].encrypt, KeyId=key, Plaintext=b"x")
    assert "no role" in r["Error"]["Message"]


def test_a_grantee_may_grant_only_what_it_holds(kms, users):
    key = dev_key(kms)
    app, other = users["app"], users["other"]
    kms.create_grant(KeyId=key, GranteePrincipal=arn("app"),
                     Operations=["Encrypt", "Decrypt", "CreateGrant"],
                     Constraints={"EncryptionContextSubset": {"team": "a"}})
    # More operations, or looser constraints, than its own grant: refused.
    denied(app.create_grant, KeyId=key, GranteePrincipal=arn("other"),
           Operations=["Encrypt", "GenerateDataKey"],
           Constraints={"EncryptionContextSubset": {"team": "a"}})
    denied(app.create_grant, KeyId=key, GranteePrincipal=arn("other"), Operations=["Encrypt"])
    denied(app.create_grant, KeyId=key, GranteePrincipal=arn("other"), Operations=["Encrypt"],
           Constraints={"EncryptionContextSubset": {"team": "b"}})
    # Narrower: allowed, and it works for the new grantee.
    kms_g = app.create_grant(KeyId=key, GranteePrincipal=arn("other"), Operations=["Encrypt"],
                             Constraints={"EncryptionContextSubset": {"team": "a", "x": "1"}})
    assert kms_g["GrantId"]
    app.create_grant(KeyId=key, GranteePrincipal=arn("other"), Operations=["Decrypt"],
                     Constraints={"EncryptionContextEquals": {"TEAM": "a"}})
    other.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"team": "a", "x": "1"})
    denied(other.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"team": "a"})
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 3


def test_a_grant_bound_to_an_exact_context_grants_only_that_context(kms, users):
    key = dev_key(kms)
    app, other = users["app"], users["other"]
    exact = {"team": "a", "env": "prod"}
    parent = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"),
                              Operations=["Encrypt", "Decrypt", "CreateGrant"],
                              Constraints={"EncryptionContextEquals": exact})

    def child(**constraints):
        kw = {"Constraints": constraints} if constraints else {}
        return app.create_grant(KeyId=key, GranteePrincipal=arn("other"),
                                Operations=["Encrypt"], **kw)

    # Each would allow a context the parent does not: refused, and nothing is created.
    denied(child)
    denied(child, EncryptionContextSubset=exact)
    denied(child, EncryptionContextSubset={"team": "a"})
    denied(child, EncryptionContextEquals={"team": "a"})
    denied(child, EncryptionContextEquals={"team": "a", "env": "dev"})
    denied(child, EncryptionContextEquals={"team": "A", "env": "prod"})  # values: exactly
    denied(child, EncryptionContextEquals=dict(exact, extra="1"))
    denied(child, EncryptionContextEquals={})
    # The same pairs, but an operation the parent does not hold.
    denied(app.create_grant, KeyId=key, GranteePrincipal=arn("other"),
           Operations=["Encrypt", "GenerateDataKey"],
           Constraints={"EncryptionContextEquals": exact})
    assert [g["GrantId"] for g in kms.list_grants(KeyId=key)["Grants"]] == [parent["GrantId"]]
    denied(other.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext=exact)
    # The same pairs (keys match without case, as the parent's constraint matches them),
    # alone or with a subset on top: allowed.
    same = child(EncryptionContextEquals=exact)
    child(EncryptionContextEquals={"TEAM": "a", "Env": "prod"})
    child(EncryptionContextEquals=exact, EncryptionContextSubset={"team": "a"})
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 4
    listed = kms.list_grants(KeyId=key, GrantId=same["GrantId"])["Grants"]
    assert listed[0]["Constraints"] == {"EncryptionContextEquals": exact}
    # The child allows what the parent allows, and no more.
    other.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext=exact)
    denied(other.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"team": "a"})
    denied(other.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext=dict(exact, x="1"))
    denied(other.encrypt, KeyId=key, Plaintext=b"x")


def test_key_policy_conditions_on_grant_requests(kms, users):
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": arn("dev")}, "Action": "kms:*",
         "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": arn("officer")}, "Action": "kms:CreateGrant",
         "Resource": "*", "Condition": {
             "StringEquals": {"kms:GranteePrincipal": arn("app")},
             "ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt", "Decrypt"]},
             "Bool": {"kms:GrantIsForAWSResource": "false"}}}]})
    key = kms.create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    officer = users["officer"]
    officer.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    denied(officer.create_grant, KeyId=key, GranteePrincipal=arn("other"), Operations=["Encrypt"])
    denied(officer.create_grant, KeyId=key, GranteePrincipal=arn("app"),
           Operations=["Encrypt", "GenerateDataKey"])


def test_grant_operations_follow_the_key_state(hsmd, kms, users):
    # The key state table: a new grant only on a usable key (DisabledException,
    # KMSInvalidStateException); listing, retiring and revoking in every state.
    key = dev_key(kms)
    kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    kms.disable_key(KeyId=key)
    raises("DisabledException", users["app"].encrypt, KeyId=key, Plaintext=b"x")
    raises("DisabledException", kms.create_grant, KeyId=key, GranteePrincipal=arn("other"),
           Operations=["Encrypt"], message=f"{key} is disabled")
    r = signed_request(hsmd, "TrentService.CreateGrant", {
        "KeyId": key, "GranteePrincipal": arn("other"), "Operations": ["Encrypt"],
        "DryRun": True})
    assert (r.status_code, r.json()["__type"]) == (400, "DisabledException"), r.text
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 1
    kms.enable_key(KeyId=key)
    g = kms.create_grant(KeyId=key, GranteePrincipal=arn("other"), Operations=["Encrypt"])
    users["other"].encrypt(KeyId=key, Plaintext=b"x")
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    raises("KMSInvalidStateException", kms.create_grant, KeyId=key, GranteePrincipal=arn("app"),
           Operations=["Decrypt"])
    assert len(kms.list_grants(KeyId=key)["Grants"]) == 2
    kms.revoke_grant(KeyId=key, GrantId=g["GrantId"])
    pending = kms.create_key(Policy=DEV_ONLY, Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    raises("KMSInvalidStateException", kms.create_grant, KeyId=pending,
           GranteePrincipal=arn("app"), Operations=["Encrypt"], message="is pending import")
    assert kms.list_grants(KeyId=pending)["Grants"] == []


def test_grant_requests_are_audited(hsmd, kms, users):
    key = dev_key(kms)
    r = signed_request(hsmd, "TrentService.CreateGrant", {
        "KeyId": key, "GranteePrincipal": arn("app"), "Operations": ["Encrypt"]})
    assert r.status_code == 200, r.text
    rec = audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])
    assert (rec["op"], rec["outcome"], rec["key_id"]) == ("CreateGrant", "success", key)
    gid = r.json()["GrantId"]
    assert rec["extra"]["grant_id"] == gid and "via_grant" not in rec["extra"]
    # A request a grant allowed names the grant; one the key policy allowed names none.
    r = signed_request(hsmd, "TrentService.Encrypt", {"KeyId": key, "Plaintext": "eA=="},
                       *users["app-creds"])
    assert r.status_code == 200, r.text
    rec = audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])
    assert (rec["op"], rec["outcome"], rec["principal"]) == ("Encrypt", "success", arn("app"))
    assert rec["extra"]["via_grant"] == gid
    r = signed_request(hsmd, "TrentService.Encrypt", {"KeyId": key, "Plaintext": "eA=="})
    rec = audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])
    assert rec["outcome"] == "success" and "via_grant" not in rec.get("extra", {})
    r = signed_request(hsmd, "TrentService.RevokeGrant", {"KeyId": key, "GrantId": gid},
                       *users["app-creds"])
    rec = audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])
    assert (rec["op"], rec["outcome"], rec["key_id"]) == ("RevokeGrant", "denied", key)
    assert rec["extra"]["grant_id"] == gid
    r = signed_request(hsmd, "TrentService.RevokeGrant", {"KeyId": key, "GrantId": gid})
    rec = audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])
    assert (rec["op"], rec["outcome"], rec["extra"]["grant_id"]) == ("RevokeGrant", "success", gid)


def test_a_reencrypt_record_names_the_grant_behind_each_key(hsmd, kms, users):
    """ReEncrypt is allowed on two keys, each perhaps by a grant of its own: the record
    names the destination's (via_grant) and the source's (source_via_grant); one refused
    on its destination names that key, and no grant as having allowed it."""
    src, dst, other = dev_key(kms), dev_key(kms), dev_key(kms)
    g_from = kms.create_grant(KeyId=src, GranteePrincipal=arn("app"),
                              Operations=["ReEncryptFrom"])["GrantId"]
    g_to = kms.create_grant(KeyId=dst, GranteePrincipal=arn("app"),
                            Operations=["ReEncryptTo"])["GrantId"]
    ct = base64.b64encode(kms.encrypt(KeyId=src, Plaintext=b"s")["CiphertextBlob"]).decode()

    def reencrypt(dest):
        r = signed_request(hsmd, "TrentService.ReEncrypt",
                           {"CiphertextBlob": ct, "DestinationKeyId": dest}, *users["app-creds"])
        return r, audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])

    r, rec = reencrypt(dst)
    assert r.status_code == 200, r.text
    assert (rec["op"], rec["outcome"], rec["key_id"]) == ("ReEncrypt", "success", dst)
    assert rec["extra"]["via_grant"] == g_to and rec["extra"]["source_via_grant"] == g_from
    assert rec["extra"]["source_key_id"] == src
    r, rec = reencrypt(other)
    assert (r.status_code, r.json()["__type"]) == (400, "AccessDeniedException")
    assert (rec["outcome"], rec["key_id"]) == ("denied", other)
    assert "via_grant" not in rec["extra"] and rec["extra"]["source_via_grant"] == g_from
    # Allowed by the key policies: no grant named.
    r = signed_request(hsmd, "TrentService.ReEncrypt",
                       {"CiphertextBlob": ct, "DestinationKeyId": dst})
    rec = audit_record(hsmd.data_dir, r.headers["x-amzn-RequestId"])
    assert rec["outcome"] == "success"
    assert not {"via_grant", "source_via_grant"} & set(rec.get("extra", {}))


def test_aws_cli_creates_lists_and_revokes_grants(hsmd, kms):
    cli = AwsCli(hsmd)
    try:
        key = dev_key(kms)
        gid = cli.json("create-grant", "--key-id", key, "--grantee-principal", arn("app"),
                       "--operations", "Encrypt", "Decrypt")["GrantId"]
        listed = cli.json("list-grants", "--key-id", key)["Grants"]
        assert [g["GrantId"] for g in listed] == [gid]
        cli.run("revoke-grant", "--key-id", key, "--grant-id", gid)
        assert cli.json("list-grants", "--key-id", key)["Grants"] == []
    finally:
        cli.close()


def test_grants_survive_a_restart():
    node = start_dev()
    try:
        akid, secret = new_user(node, "app", ["crypto-user"])
        key = dev_key(client(node))
        client(node).create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt"])
        node = restart_dev(node)
        client(node, akid, secret).encrypt(KeyId=key, Plaintext=b"after restart")
        assert len(client(node).list_grants(KeyId=key)["Grants"]) == 1
    finally:
        node.cleanup()


def test_a_key_with_more_grants_than_a_node_caches(kms, users):
    # Past 256 grants a node stops caching a key's grants and asks the store per grantee.
    key = dev_key(kms)
    for i in range(300):
        kms.create_grant(KeyId=key, GranteePrincipal=arn(f"svc-{i}"), Operations=["Encrypt"])
    app = users["app"]
    denied(app.encrypt, KeyId=key, Plaintext=b"x")
    g = kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    app.encrypt(KeyId=key, Plaintext=b"x")
    app.encrypt(KeyId=key, Plaintext=b"x", GrantTokens=[g["GrantToken"]])
    kms.revoke_grant(KeyId=key, GrantId=g["GrantId"])
    denied(app.encrypt, KeyId=key, Plaintext=b"x")
    assert len(kms.list_grants(KeyId=key, Limit=100)["Grants"]) == 100


def grant_ids(kms, key, **filters):
    """Every grant id of the key (ListGrants pages of 100, the most one may ask)."""
    ids, marker = [], None
    while True:
        page = kms.list_grants(KeyId=key, Limit=100, **filters,
                               **({"Marker": marker} if marker else {}))
        ids += [g["GrantId"] for g in page["Grants"]]
        if not page["Truncated"]:
            return ids
        marker = page["NextMarker"]


def test_a_grantee_holds_at_most_500_grants_on_a_key(kms, users):
    key = dev_key(kms)
    app = users["app"]
    first = dict(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt"], Name="first")
    first_id = kms.create_grant(**first)["GrantId"]
    for _ in range(498):
        kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Decrypt"])
    held = grant_ids(kms, key)
    assert len(held) == len(set(held)) == 500
    # The 501st, named or not: refused, and nothing changes.
    for extra in ({}, {"Name": "one-more"}):
        raises("LimitExceededException", kms.create_grant, KeyId=key,
               GranteePrincipal=arn("app"), Operations=["Encrypt"], status=400,
               message="at most 500 for one grantee", **extra)
    assert grant_ids(kms, key) == held
    # A retry of a grant it holds is no new grant: it answers that grant, as below the limit.
    assert kms.create_grant(**first)["GrantId"] == first_id
    assert grant_ids(kms, key) == held
    # The grants held still allow.
    blob = app.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert app.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    # The limit is per grantee and key: another grantee on this key, this grantee on another.
    g = kms.create_grant(KeyId=key, GranteePrincipal=arn("other"), Operations=["Encrypt"])
    users["other"].encrypt(KeyId=key, Plaintext=b"x", GrantTokens=[g["GrantToken"]])
    assert len(grant_ids(kms, key)) == 501
    key2 = dev_key(kms)
    kms.create_grant(KeyId=key2, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    app.encrypt(KeyId=key2, Plaintext=b"x")
    # One grant gone makes room for one.
    kms.revoke_grant(KeyId=key, GrantId=first_id)
    kms.create_grant(KeyId=key, GranteePrincipal=arn("app"), Operations=["Encrypt"])
    raises("LimitExceededException", kms.create_grant, KeyId=key,
           GranteePrincipal=arn("app"), Operations=["Encrypt"])
    assert len(grant_ids(kms, key, GranteePrincipal=arn("app"))) == 500


def test_refusals_keep_their_reason_with_the_longest_names(hsmd, kms):
    """A user name of 64 characters and a key ARN still leave the whole AWS-style reason
    in the message: an explicit deny told apart from an implicit one, and RetireGrant's."""
    name = "u" * 64
    lng = client(hsmd, *new_user(hsmd, name, ["crypto-user"]))
    aud = client(hsmd, *new_user(hsmd, "a" * 64, ["auditor"]))
    kid = kms.create_key()["KeyMetadata"]["KeyId"]
    grant = kms.create_grant(KeyId=kid, GranteePrincipal=arn("dev"), Operations=["Encrypt"])
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": arn("dev")}, "Action": "kms:*",
             "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": "*"},
             "Action": "kms:GenerateDataKeyPairWithoutPlaintext", "Resource": "*"}]}))
    msg = raises("AccessDeniedException", lng.generate_data_key_pair_without_plaintext,
                 KeyId=kid, KeyPairSpec="RSA_2048")["Error"]["Message"]
    assert msg.endswith("with an explicit deny in a resource-based policy"), msg
    assert name in msg, msg
    msg = raises("AccessDeniedException", lng.encrypt, KeyId=kid,
                 Plaintext=b"x")["Error"]["Message"]
    assert msg.endswith("because no resource-based policy allows the action"), msg
    msg = raises("AccessDeniedException", aud.retire_grant, KeyId=kid,
                 GrantId=grant["GrantId"])["Error"]["Message"]
    assert msg.endswith("nor as a grantee allowed RetireGrant"), msg
