"""Key life cycle over the KMS API with boto3: CreateKey, DescribeKey, ListKeys,
EnableKey/DisableKey, UpdateKeyDescription, ScheduleKeyDeletion,
CancelKeyDeletion and the key-state errors (AWS KMS Developer Guide, "Key
states of AWS KMS keys")."""
import base64
import datetime
import json
import uuid

import pytest

from conftest import REGION, client, start_dev
from helpers import ACCOUNT, call_error, call_ok, key_arn, raises, restart_dev

DAY = 86400

RSA_SIGN = ["RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
            "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512"]
RSA_ENC = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]

# Every valid KeySpec x KeyUsage and the algorithm list KMS reports for it.
VALID = [
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", ["SYMMETRIC_DEFAULT"]),
    ("RSA_2048", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", RSA_ENC),
    ("RSA_3072", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", RSA_ENC),
    ("RSA_4096", "ENCRYPT_DECRYPT", "EncryptionAlgorithms", RSA_ENC),
    ("RSA_2048", "SIGN_VERIFY", "SigningAlgorithms", RSA_SIGN),
    ("RSA_3072", "SIGN_VERIFY", "SigningAlgorithms", RSA_SIGN),
    ("RSA_4096", "SIGN_VERIFY", "SigningAlgorithms", RSA_SIGN),
    ("ECC_NIST_P256", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_256"]),
    ("ECC_NIST_P384", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_384"]),
    ("ECC_NIST_P521", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_512"]),
    ("ECC_SECG_P256K1", "SIGN_VERIFY", "SigningAlgorithms", ["ECDSA_SHA_256"]),
    ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "SigningAlgorithms", ["ED25519_SHA_512"]),
    ("HMAC_224", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_224"]),
    ("HMAC_256", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_256"]),
    ("HMAC_384", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_384"]),
    ("HMAC_512", "GENERATE_VERIFY_MAC", "MacAlgorithms", ["HMAC_SHA_512"]),
]

INVALID = [
    ("SYMMETRIC_DEFAULT", "SIGN_VERIFY"), ("SYMMETRIC_DEFAULT", "GENERATE_VERIFY_MAC"),
    ("RSA_2048", "GENERATE_VERIFY_MAC"), ("ECC_NIST_P256", "ENCRYPT_DECRYPT"),
    ("ECC_NIST_P384", "GENERATE_VERIFY_MAC"), ("ECC_NIST_EDWARDS25519", "ENCRYPT_DECRYPT"),
    ("ECC_SECG_P256K1", "GENERATE_VERIFY_MAC"), ("HMAC_256", "ENCRYPT_DECRYPT"),
    ("HMAC_512", "SIGN_VERIFY"),
]


def key_count(kms):
    return len(kms.list_keys(Limit=1000)["Keys"])


def new_key(kms, **kw):
    return kms.create_key(**kw)["KeyMetadata"]["KeyId"]


@pytest.mark.parametrize("spec,usage,member,algs", VALID,
                         ids=[f"{s}-{u}" for s, u, _, _ in VALID])
def test_create_key_every_valid_spec_and_usage(kms, spec, usage, member, algs):
    before = datetime.datetime.now(datetime.timezone.utc)
    m = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
    uuid.UUID(m["KeyId"])
    assert m["Arn"] == key_arn(m["KeyId"])
    assert m["AWSAccountId"] == ACCOUNT
    assert (m["KeySpec"], m["CustomerMasterKeySpec"], m["KeyUsage"]) == (spec, spec, usage)
    assert m[member] == algs
    for other in {"EncryptionAlgorithms", "SigningAlgorithms", "MacAlgorithms"} - {member}:
        assert other not in m
    assert m["Enabled"] is True and m["KeyState"] == "Enabled"
    assert (m["Origin"], m["KeyManager"], m["MultiRegion"]) == ("AWS_KMS", "CUSTOMER", False)
    assert m["Description"] == ""
    assert abs((m["CreationDate"] - before).total_seconds()) < 120
    assert "DeletionDate" not in m
    assert kms.describe_key(KeyId=m["KeyId"])["KeyMetadata"] == m


def test_create_key_defaults_to_symmetric_encryption(kms):
    m = kms.create_key()["KeyMetadata"]
    assert (m["KeySpec"], m["KeyUsage"]) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    assert m["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    # The deprecated CustomerMasterKeySpec member is still accepted, as in KMS.
    m = kms.create_key(CustomerMasterKeySpec="ECC_NIST_P256",
                       KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert m["KeySpec"] == "ECC_NIST_P256"


@pytest.mark.parametrize("spec,usage", INVALID, ids=[f"{s}-{u}" for s, u in INVALID])
def test_create_key_invalid_spec_usage_combination(kms, spec, usage):
    n = key_count(kms)
    raises("ValidationException", kms.create_key, KeySpec=spec, KeyUsage=usage, status=400)
    assert key_count(kms) == n


def test_create_key_invalid_names_and_members(kms):
    n = key_count(kms)
    # An HMAC key needs KeyUsage GENERATE_VERIFY_MAC: the default usage does not fit.
    raises("ValidationException", kms.create_key, KeySpec="HMAC_256")
    raises("ValidationException", kms.create_key, KeySpec="AES_256")
    raises("ValidationException", kms.create_key, KeyUsage="WRAP_UNWRAP")
    raises("ValidationException", kms.create_key, KeySpec="RSA_2048",
           CustomerMasterKeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    raises("ValidationException", kms.create_key, Description="d" * 8193)
    raises("MalformedPolicyDocumentException", kms.create_key, Policy="{not json")
    raises("MalformedPolicyDocumentException", kms.create_key,
           Policy=json.dumps({"Version": "2012-10-17", "Statement": []}))
    raises("TagException", kms.create_key, Tags=[{"TagKey": "aws:reserved", "TagValue": "x"}])
    raises("TagException", kms.create_key,
           Tags=[{"TagKey": f"k{i}", "TagValue": "v"} for i in range(51)])
    assert key_count(kms) == n


@pytest.mark.parametrize("member,value", [
    ("Origin", "AWS_CLOUDHSM"), ("Origin", "EXTERNAL_KEY_STORE"),
    ("MultiRegion", True), ("CustomKeyStoreId", "cks-1234567890abcdef0"),
])
def test_create_key_unsupported_members(kms, member, value):
    n = key_count(kms)
    code = ("CustomKeyStoreNotFoundException" if member == "CustomKeyStoreId"
            else "UnsupportedOperationException")
    raises(code, kms.create_key, **{member: value}, status=400)
    assert key_count(kms) == n


def test_aws_key_specs_hsmd_does_not_offer_are_unsupported_not_invalid(kms, hsmd):
    """KeySpecs and a KeyUsage AWS KMS defines but hsmd does not offer (its OpenSSL has no
    SM2, ML-DSA or ML-KEM) are a feature missing, UnsupportedOperationException, as the
    operations declare; a name AWS does not define is a ValidationException.  Nothing
    is made."""
    n = key_count(kms)
    for body in ({"KeySpec": "SM2", "KeyUsage": "SIGN_VERIFY"},
                 {"KeySpec": "ML_DSA_65", "KeyUsage": "SIGN_VERIFY"},
                 {"KeySpec": "ML_KEM_768", "KeyUsage": "KEY_ENCAPSULATION"},
                 {"KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_ENCAPSULATION"}):
        out = call_error(hsmd, "CreateKey", body, "UnsupportedOperationException")
        assert "is not offered" in out["message"], out
    for body in ({"KeySpec": "NOT_A_SPEC"}, {"KeySpec": "ml_dsa_65"},
                 {"KeyUsage": "ENCAPSULATION"}):
        call_error(hsmd, "CreateKey", body, "ValidationException")
    # Each member by its own list: DataKeyPairSpec has ML-KEM but no ML-DSA, the deprecated
    # CustomerMasterKeySpec neither; the messages name the member given.
    out = call_error(hsmd, "CreateKey", {"CustomerMasterKeySpec": "SM2",
                                         "KeyUsage": "SIGN_VERIFY"},
                     "UnsupportedOperationException")
    assert out["message"].startswith("CustomerMasterKeySpec SM2 is not offered"), out
    out = call_error(hsmd, "CreateKey", {"CustomerMasterKeySpec": "ML_DSA_65",
                                         "KeyUsage": "SIGN_VERIFY"}, "ValidationException")
    assert out["message"] == "CustomerMasterKeySpec 'ML_DSA_65' is not supported", out
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    for spec in ("SM2", "ML_KEM_768"):
        out = call_error(hsmd, "GenerateDataKeyPair", {"KeyId": key, "KeyPairSpec": spec},
                         "UnsupportedOperationException")
        assert out["message"].startswith(f"KeyPairSpec {spec} is not offered"), out
    for spec in ("NOPE", "ML_DSA_44"):
        out = call_error(hsmd, "GenerateDataKeyPair", {"KeyId": key, "KeyPairSpec": spec},
                         "ValidationException")
        assert out["message"] == f"KeyPairSpec '{spec}' is not supported", out
    assert key_count(kms) == n + 1


def test_create_key_origin_outside_the_enum_is_a_validation_error(kms, hsmd):
    n = key_count(kms)
    call_error(hsmd, "CreateKey", {"Origin": "BOGUS"}, "ValidationException")
    call_error(hsmd, "CreateKey", {"Origin": "aws_kms"}, "ValidationException")
    assert key_count(kms) == n


def test_create_key_accepts_the_supported_values_of_those_members(kms):
    m = kms.create_key(Origin="AWS_KMS", MultiRegion=False)["KeyMetadata"]
    assert (m["Origin"], m["MultiRegion"]) == ("AWS_KMS", False)
    # EXTERNAL: the key waits for imported material (test_import.py).
    m = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    assert (m["Origin"], m["KeyState"], m["Enabled"]) == ("EXTERNAL", "PendingImport", False)


def test_create_key_description_tags_policy(kms):
    policy = json.dumps({
        "Version": "2012-10-17", "Id": "custom",
        "Statement": [{"Sid": "All", "Effect": "Allow",
                       "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                       "Action": "kms:*", "Resource": "*"}]})
    tags = [{"TagKey": "team", "TagValue": "payments"}, {"TagKey": "empty", "TagValue": ""}]
    m = kms.create_key(Description="billing key \u00e9\u00e8", Tags=tags,
                       Policy=policy)["KeyMetadata"]
    assert m["Description"] == "billing key \u00e9\u00e8"
    got = kms.list_resource_tags(KeyId=m["KeyId"])["Tags"]
    assert sorted(got, key=lambda t: t["TagKey"]) == sorted(tags, key=lambda t: t["TagKey"])
    assert kms.get_key_policy(KeyId=m["KeyId"], PolicyName="default")["Policy"] == policy
    # Without a Policy, the key gets KMS's default key policy (the account may do anything).
    default = json.loads(kms.get_key_policy(KeyId=new_key(kms), PolicyName="default")["Policy"])
    stmts = default["Statement"] if isinstance(default["Statement"], list) else [
        default["Statement"]]
    assert any(s["Effect"] == "Allow" and s["Action"] == "kms:*" and
               f"arn:aws:iam::{ACCOUNT}:root" in json.dumps(s["Principal"]) for s in stmts)


# ---- DescribeKey -------------------------------------------------------------------------

def test_describe_key_by_every_reference(kms):
    kid = new_key(kms, Description="refs")
    kms.create_alias(AliasName="alias/describe-refs", TargetKeyId=kid)
    for ref in (kid, key_arn(kid), "alias/describe-refs",
                f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/describe-refs"):
        m = kms.describe_key(KeyId=ref)["KeyMetadata"]
        assert (m["KeyId"], m["Description"]) == (kid, "refs"), ref


@pytest.mark.parametrize("ref", [
    "arn:aws:kms:eu-west-1:{acct}:key/{kid}",       # another region
    "arn:aws:kms:{region}:999999999999:key/{kid}",  # another account
    "arn:aws:kms:eu-west-1:{acct}:alias/describe-missing",
    "alias/describe-missing",
    "{random}",                                     # a well-formed id of no key
    "not-a-key-id",
    "arn:aws:kms:{region}:{acct}:key/not-a-uuid",
    "arn:aws:kms:{region}:{acct}:{kid}",            # an ARN without key/
    "arn:aws:kms:{region}:{acct}:key/alias/describe-refs",
])
def test_describe_key_not_found(kms, ref):
    kid = new_key(kms)
    ref = ref.format(acct=ACCOUNT, region=REGION, kid=kid, random=str(uuid.uuid4()))
    raises("NotFoundException", kms.describe_key, KeyId=ref, status=400)


def test_describe_key_validation(hsmd):
    call_error(hsmd, "DescribeKey", {}, "ValidationException")
    call_error(hsmd, "DescribeKey", {"KeyId": ""}, "ValidationException")
    call_error(hsmd, "DescribeKey", {"KeyId": "k" * 2049}, "ValidationException")


# ---- ListKeys ----------------------------------------------------------------------------

def test_list_keys_pagination(kms, hsmd):
    for _ in range(7):
        new_key(kms)
    everything = kms.list_keys(Limit=1000)
    assert everything["Truncated"] is False and "NextMarker" not in everything
    ids = [k["KeyId"] for k in everything["Keys"]]
    assert len(ids) >= 7 and len(set(ids)) == len(ids)
    for k in everything["Keys"]:
        assert k["KeyArn"] == key_arn(k["KeyId"])
    for limit in (1, 3, len(ids) - 1, len(ids)):
        pages, marker = [], None
        while True:
            kw = {"Limit": limit} if marker is None else {"Limit": limit, "Marker": marker}
            page = kms.list_keys(**kw)
            assert 1 <= len(page["Keys"]) <= limit
            pages += [k["KeyId"] for k in page["Keys"]]
            if not page["Truncated"]:
                assert "NextMarker" not in page
                break
            assert page["NextMarker"]
            marker = page["NextMarker"]
        assert pages == ids, limit
    # boto3's paginator follows NextMarker too.
    via_paginator = [k["KeyId"] for p in kms.get_paginator("list_keys").paginate(
        PaginationConfig={"PageSize": 2}) for k in p["Keys"]]
    assert via_paginator == ids
    # The default page size (100) covers these keys.
    assert [k["KeyId"] for k in kms.list_keys()["Keys"]] == ids[:100]


def test_list_keys_invalid_marker_and_limit(kms, hsmd):
    raises("InvalidMarkerException", kms.list_keys, Marker="garbage-marker")
    call_error(hsmd, "ListKeys", {"Limit": 0}, "ValidationException")
    call_error(hsmd, "ListKeys", {"Limit": 1001}, "ValidationException")
    call_error(hsmd, "ListKeys", {"Marker": ""}, "ValidationException")
    # The API's Marker pattern, [\u0020-\u00FF]*, on every paged list.
    kid = call_ok(hsmd, "CreateKey", {})["KeyMetadata"]["KeyId"]
    for op, body in (("ListKeys", {}), ("ListAliases", {}), ("ListKeyPolicies", {"KeyId": kid}),
                     ("ListResourceTags", {"KeyId": kid}), ("ListGrants", {"KeyId": kid})):
        out = call_error(hsmd, op, dict(body, Marker="a\u0001b"), "ValidationException")
        assert "marker" in out["message"], out
    # Within the pattern, yet no marker hsmd handed out.
    call_error(hsmd, "ListKeys", {"Marker": "\u00ff"}, "InvalidMarkerException")


def b64url(text):
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_markers_are_bound_to_their_listing(kms, hsmd):
    """A marker goes on only with the listing, and the key, that issued it: one from another
    operation or key, or one hsmd never issued, is InvalidMarkerException, not a page."""
    a = kms.create_key(Tags=[{"TagKey": f"t{i}", "TagValue": "v"} for i in range(3)])[
        "KeyMetadata"]["KeyId"]
    b = kms.create_key()["KeyMetadata"]["KeyId"]
    for k in (a, b):
        call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": k})  # not in Debian's boto3
        call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": k})
        for _ in range(3):
            kms.create_grant(KeyId=k, GranteePrincipal=f"arn:aws:iam::{ACCOUNT}:root",
                             Operations=["Encrypt"])
    names = [f"alias/marker-{uuid.uuid4()}" for _ in range(3)]
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=a)
    issued = {
        "ListKeys": ({}, kms.list_keys(Limit=1)["NextMarker"]),
        "ListAliases": ({}, kms.list_aliases(Limit=1)["NextMarker"]),
        "ListResourceTags": ({"KeyId": a}, kms.list_resource_tags(KeyId=a, Limit=1)["NextMarker"]),
        "ListKeyRotations": ({"KeyId": a}, call_ok(hsmd, "ListKeyRotations",
                                                   {"KeyId": a, "Limit": 1})["NextMarker"]),
        "ListGrants": ({"KeyId": a}, kms.list_grants(KeyId=a, Limit=1)["NextMarker"]),
    }
    for op, (body, marker) in issued.items():
        call_ok(hsmd, op, dict(body, Marker=marker))  # its own listing goes on
        for other, (other_body, _) in issued.items():
            if other != op:
                call_error(hsmd, other, dict(other_body, Marker=marker), "InvalidMarkerException")
    # Another key's marker, or an alias listing's of one key on all.
    for op in ("ListResourceTags", "ListKeyRotations", "ListGrants"):
        call_error(hsmd, op, {"KeyId": b, "Marker": issued[op][1]}, "InvalidMarkerException")
    by_key = kms.list_aliases(KeyId=a, Limit=1)["NextMarker"]
    call_ok(hsmd, "ListAliases", {"KeyId": a, "Marker": by_key})
    call_ok(hsmd, "ListAliases", {"KeyId": names[0], "Marker": by_key})  # the same key
    call_error(hsmd, "ListAliases", {"Marker": by_key}, "InvalidMarkerException")
    call_error(hsmd, "ListAliases", {"KeyId": b, "Marker": by_key}, "InvalidMarkerException")
    # Markers hsmd never issued: the old bare positions, forged ones, non-canonical ones.
    tags = issued["ListResourceTags"][1]
    for op, body, marker in (
            ("ListKeys", {}, "00000000-0000-0000-0000-000000000000"),
            ("ListKeys", {}, b64url("keys:-:00000000-0000-0000-0000-00000000000")),
            ("ListAliases", {}, "alias/zzzz"),
            ("ListAliases", {}, b64url("aliases:-:alias/zz zz")),
            ("ListResourceTags", {"KeyId": a}, "_w"),       # 0xFF: not UTF-8
            ("ListResourceTags", {"KeyId": a}, "dA"),       # "t"
            ("ListResourceTags", {"KeyId": a}, b64url(f"tags:{a}:".encode() + b"\xff")),
            ("ListResourceTags", {"KeyId": a}, tags + "A"),
            ("ListKeyRotations", {"KeyId": a}, " 1"),
            ("ListKeyRotations", {"KeyId": a}, "01"),
            ("ListKeyRotations", {"KeyId": a}, b64url(f"rotations:{a}:01")),
            ("ListKeyRotations", {"KeyId": a}, b64url(f"rotations:{a}: 1")),
            ("ListKeyRotations", {"KeyId": a}, b64url(f"rotations:{a}:4294967296")),
            ("ListGrants", {"KeyId": a}, "not-a-marker")):
        call_error(hsmd, op, dict(body, Marker=marker), "InvalidMarkerException")
    # A marker stays good when the item it ends with goes: the walk goes on after its name.
    page = kms.list_resource_tags(KeyId=a, Limit=1)
    kms.untag_resource(KeyId=a, TagKeys=[page["Tags"][0]["TagKey"]])
    rest = kms.list_resource_tags(KeyId=a, Marker=page["NextMarker"])["Tags"]
    assert [t["TagKey"] for t in rest] == ["t1", "t2"], rest
    page = kms.list_grants(KeyId=a, Limit=1)
    kms.revoke_grant(KeyId=a, GrantId=page["Grants"][0]["GrantId"])
    rest = kms.list_grants(KeyId=a, Marker=page["NextMarker"])["Grants"]
    assert len(rest) == 2 and page["Grants"][0]["GrantId"] not in [g["GrantId"] for g in rest]
    # Whole walks still list every item once.
    for op, body, items, name in (("ListKeys", {}, "Keys", "KeyId"),
                                  ("ListAliases", {}, "Aliases", "AliasName"),
                                  ("ListResourceTags", {"KeyId": a}, "Tags", "TagKey"),
                                  ("ListKeyRotations", {"KeyId": a}, "Rotations", "KeyMaterialId"),
                                  ("ListGrants", {"KeyId": b}, "Grants", "GrantId")):
        whole = [x[name] for x in call_ok(hsmd, op, body)[items]]
        walked, marker = [], None
        while True:
            page = call_ok(hsmd, op, dict(body, Limit=1, **({"Marker": marker} if marker else {})))
            walked += [x[name] for x in page[items]]
            if not page["Truncated"]:
                break
            marker = page["NextMarker"]
        assert walked == whole and len(set(walked)) == len(walked), op


def test_members_an_operation_does_not_have_are_ignored(hsmd):
    """GrantTokens and DryRun are read only by the operations that have them; elsewhere they
    are unknown members, ignored like any other."""
    listed = call_ok(hsmd, "ListKeys", {})
    assert call_ok(hsmd, "ListKeys", {"GrantTokens": ["bad"], "DryRun": "x"}) == listed
    # DescribeKey takes grant tokens, but answers a malformed one as a validation error:
    # it declares no InvalidGrantTokenException.
    kid = listed["Keys"][0]["KeyId"] if listed["Keys"] else \
        call_ok(hsmd, "CreateKey", {})["KeyMetadata"]["KeyId"]
    call_error(hsmd, "DescribeKey", {"KeyId": kid, "GrantTokens": ["bad"]}, "ValidationException")
    call_error(hsmd, "DescribeKey", {"KeyId": kid, "GrantTokens": ["x"] * 11},
               "ValidationException")


# ---- Enable, disable, description ---------------------------------------------------------

def test_disable_and_enable(kms):
    kid = new_key(kms)
    blob = kms.encrypt(KeyId=kid, Plaintext=b"x")["CiphertextBlob"]
    kms.disable_key(KeyId=kid)
    m = kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert (m["Enabled"], m["KeyState"]) == (False, "Disabled")
    raises("DisabledException", kms.encrypt, KeyId=kid, Plaintext=b"x", status=400)
    raises("DisabledException", kms.decrypt, CiphertextBlob=blob)
    raises("DisabledException", kms.generate_data_key, KeyId=kid, KeySpec="AES_256")
    raises("DisabledException", kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=kid)
    raises("DisabledException", kms.enable_key_rotation, KeyId=kid)
    # Disabling twice, metadata reads and changes are allowed on a disabled key.
    kms.disable_key(KeyId=kid)
    kms.update_key_description(KeyId=kid, Description="while disabled")
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "t", "TagValue": "v"}])
    assert kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is False
    kms.enable_key(KeyId=kid)
    kms.enable_key(KeyId=kid)
    m = kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert (m["Enabled"], m["KeyState"], m["Description"]) == (True, "Enabled", "while disabled")
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_disabled_asymmetric_and_hmac_keys(kms):
    sk = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    mk = new_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    kms.disable_key(KeyId=sk)
    kms.disable_key(KeyId=mk)
    raises("DisabledException", kms.sign, KeyId=sk, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    raises("DisabledException", kms.get_public_key, KeyId=sk)
    raises("DisabledException", kms.generate_mac, KeyId=mk, Message=b"m",
           MacAlgorithm="HMAC_SHA_256")


def test_update_key_description(kms, hsmd):
    kid = new_key(kms, Description="before")
    kms.update_key_description(KeyId=key_arn(kid), Description="after")
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["Description"] == "after"
    kms.update_key_description(KeyId=kid, Description="")
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["Description"] == ""
    raises("ValidationException", kms.update_key_description, KeyId=kid, Description="x" * 8193)
    call_error(hsmd, "UpdateKeyDescription", {"KeyId": kid}, "ValidationException")
    raises("NotFoundException", kms.update_key_description, KeyId=str(uuid.uuid4()),
           Description="x")


def test_state_changes_of_unknown_keys(kms):
    ghost = str(uuid.uuid4())
    for fn in (kms.enable_key, kms.disable_key, kms.cancel_key_deletion,
               kms.schedule_key_deletion):
        raises("NotFoundException", fn, KeyId=ghost)


# ---- Deletion -----------------------------------------------------------------------------

def test_schedule_key_deletion_default_window(kms):
    kid = new_key(kms)
    created = kms.describe_key(KeyId=kid)["KeyMetadata"]["CreationDate"]
    r = kms.schedule_key_deletion(KeyId=kid)
    assert r["KeyId"] == key_arn(kid)
    assert (r["KeyState"], r["PendingWindowInDays"]) == ("PendingDeletion", 30)
    assert abs((r["DeletionDate"] - created).total_seconds() - 30 * DAY) < 120
    m = kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert (m["KeyState"], m["Enabled"]) == ("PendingDeletion", False)
    assert m["DeletionDate"] == r["DeletionDate"]
    # Only a multi-Region primary waiting for its replicas has a window in its metadata.
    assert "PendingDeletionWindowInDays" not in m


@pytest.mark.parametrize("days", [7, 8, 29, 30])
def test_schedule_key_deletion_window(kms, days):
    kid = new_key(kms)
    created = kms.describe_key(KeyId=kid)["KeyMetadata"]["CreationDate"]
    r = kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=days)
    assert r["PendingWindowInDays"] == days
    assert abs((r["DeletionDate"] - created).total_seconds() - days * DAY) < 120


@pytest.mark.parametrize("days", [0, 1, 6, 31, 365])
def test_schedule_key_deletion_window_out_of_range(kms, hsmd, days):
    kid = new_key(kms)
    call_error(hsmd, "ScheduleKeyDeletion", {"KeyId": kid, "PendingWindowInDays": days},
               "ValidationException")
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled"


def test_pending_deletion_state_rules(kms):
    kid, other = new_key(kms), new_key(kms)
    blob = kms.encrypt(KeyId=kid, Plaintext=b"kept")["CiphertextBlob"]
    kms.create_alias(AliasName="alias/pending-rules", TargetKeyId=kid)
    kms.create_alias(AliasName="alias/pending-other", TargetKeyId=other)
    kms.create_alias(AliasName="alias/pending-moving", TargetKeyId=kid)
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "keep", "TagValue": "me"}])
    kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    state = "KMSInvalidStateException"
    raises(state, kms.encrypt, KeyId=kid, Plaintext=b"x", status=400)
    raises(state, kms.decrypt, CiphertextBlob=blob)
    raises(state, kms.generate_data_key, KeyId=kid, NumberOfBytes=16)
    raises(state, kms.enable_key, KeyId=kid)
    raises(state, kms.disable_key, KeyId=kid)
    raises(state, kms.schedule_key_deletion, KeyId=kid)
    raises(state, kms.update_key_description, KeyId=kid, Description="x")
    raises(state, kms.tag_resource, KeyId=kid, Tags=[{"TagKey": "a", "TagValue": "b"}])
    raises(state, kms.enable_key_rotation, KeyId=kid)
    raises(state, kms.create_alias, AliasName="alias/pending-new", TargetKeyId=kid)
    raises(state, kms.untag_resource, KeyId=kid, TagKeys=["keep"])
    raises(state, kms.update_alias, AliasName="alias/pending-other", TargetKeyId=kid)
    raises(state, kms.get_public_key, KeyId=kid)
    # Reads, policy changes and alias deletion still work.
    policy = kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=policy)
    assert kms.describe_key(KeyId="alias/pending-rules")["KeyMetadata"]["KeyId"] == kid
    kms.get_key_policy(KeyId=kid, PolicyName="default")
    kms.list_resource_tags(KeyId=kid)
    kms.get_key_rotation_status(KeyId=kid)
    # An alias moves off a key pending deletion (not onto one): the usual way to
    # retire a key without a moment where its alias names nothing.
    kms.update_alias(AliasName="alias/pending-moving", TargetKeyId=other)
    assert kms.describe_key(KeyId="alias/pending-moving")["KeyMetadata"]["KeyId"] == other
    kms.delete_alias(AliasName="alias/pending-rules")
    # Cancelling leaves the key Disabled, as in KMS.
    r = kms.cancel_key_deletion(KeyId=kid)
    assert r["KeyId"] == key_arn(kid)
    m = kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert (m["KeyState"], m["Enabled"]) == ("Disabled", False)
    assert "DeletionDate" not in m and "PendingDeletionWindowInDays" not in m
    raises("DisabledException", kms.decrypt, CiphertextBlob=blob)
    kms.enable_key(KeyId=kid)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"


def test_cancel_key_deletion_of_a_key_not_pending(kms):
    kid = new_key(kms)
    raises("KMSInvalidStateException", kms.cancel_key_deletion, KeyId=kid)
    kms.disable_key(KeyId=kid)
    raises("KMSInvalidStateException", kms.cancel_key_deletion, KeyId=kid)


def test_schedule_deletion_of_a_disabled_key(kms):
    kid = new_key(kms)
    kms.disable_key(KeyId=kid)
    r = kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    assert r["KeyState"] == "PendingDeletion"
    kms.cancel_key_deletion(KeyId=kid)
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Disabled"


def test_keys_pending_deletion_are_still_listed(kms, hsmd):
    kid = new_key(kms)
    kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    assert kid in [k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]]
    out = call_ok(hsmd, "DescribeKey", {"KeyId": kid})
    assert out["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_keys_survive_a_restart():
    server = start_dev()
    try:
        kms = client(server)
        kid = new_key(kms, Description="durable", Tags=[{"TagKey": "t", "TagValue": "v"}])
        kms.create_alias(AliasName="alias/durable", TargetKeyId=kid)
        blob = kms.encrypt(KeyId=kid, Plaintext=b"still here")["CiphertextBlob"]
        sk = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
        sig = kms.sign(KeyId=sk, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
        kms.disable_key(KeyId=sk)
        server = restart_dev(server)
        kms = client(server)
        m = kms.describe_key(KeyId="alias/durable")["KeyMetadata"]
        assert (m["KeyId"], m["Description"]) == (kid, "durable")
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"still here"
        assert kms.list_resource_tags(KeyId=kid)["Tags"] == [{"TagKey": "t", "TagValue": "v"}]
        assert kms.describe_key(KeyId=sk)["KeyMetadata"]["KeyState"] == "Disabled"
        kms.enable_key(KeyId=sk)
        assert kms.verify(KeyId=sk, Message=b"m", Signature=sig,
                          SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]
    finally:
        server.cleanup()
