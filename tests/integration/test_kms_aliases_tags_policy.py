"""Aliases (CreateAlias, UpdateAlias, DeleteAlias, ListAliases), tags
(TagResource, UntagResource, ListResourceTags) and key policies
(GetKeyPolicy, PutKeyPolicy, ListKeyPolicies) with boto3."""
import json
import uuid

import pytest

from conftest import REGION
from helpers import ACCOUNT, call_error, call_ok, key_arn, key_denying, raises

DEV_ARN = f"arn:aws:iam::{ACCOUNT}:user/dev"


def new_key(kms, **kw):
    return kms.create_key(**kw)["KeyMetadata"]["KeyId"]


def aliases_of(kms, kid=None):
    kw = {"KeyId": kid} if kid else {}
    return {a["AliasName"]: a for a in kms.list_aliases(Limit=100, **kw)["Aliases"]}


# ---- Aliases --------------------------------------------------------------------------------

def test_create_alias_and_use_it(kms):
    kid = new_key(kms)
    kms.create_alias(AliasName="alias/app/orders_v1-x:y", TargetKeyId=key_arn(kid))
    a = aliases_of(kms)["alias/app/orders_v1-x:y"]
    assert a["TargetKeyId"] == kid
    assert a["AliasArn"] == f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/app/orders_v1-x:y"
    assert a["CreationDate"] and a["LastUpdatedDate"]
    assert list(aliases_of(kms, kid)) == ["alias/app/orders_v1-x:y"]
    blob = kms.encrypt(KeyId="alias/app/orders_v1-x:y", Plaintext=b"p")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"] == key_arn(kid)


@pytest.mark.parametrize("name,code", [
    ("orders", "InvalidAliasNameException"),          # no alias/ prefix
    ("alias/", "InvalidAliasNameException"),          # no name
    ("alias/aws/mine", "InvalidAliasNameException"),  # reserved for AWS managed keys
    ("alias/has space", "ValidationException"),
    ("alias/caf\u00e9", "ValidationException"),
    ("alias/semi;colon", "ValidationException"),
])
def test_alias_naming_rules(kms, name, code):
    kid = new_key(kms)
    raises(code, kms.create_alias, AliasName=name, TargetKeyId=kid, status=400)
    assert aliases_of(kms, kid) == {}


def test_alias_length(kms, hsmd):
    kid = new_key(kms)
    longest = "alias/" + "a" * 250
    kms.create_alias(AliasName=longest, TargetKeyId=kid)
    call_error(hsmd, "CreateAlias", {"AliasName": longest + "b", "TargetKeyId": kid},
               "ValidationException")
    call_error(hsmd, "CreateAlias", {"AliasName": "alias/no-target"}, "ValidationException")


def test_alias_duplicates_and_targets(kms):
    k1, k2 = new_key(kms), new_key(kms)
    kms.create_alias(AliasName="alias/dup", TargetKeyId=k1)
    raises("AlreadyExistsException", kms.create_alias, AliasName="alias/dup", TargetKeyId=k2,
           status=400)
    raises("AlreadyExistsException", kms.create_alias, AliasName="alias/dup", TargetKeyId=k1)
    # A key may have several aliases.
    kms.create_alias(AliasName="alias/dup-2", TargetKeyId=k1)
    assert sorted(aliases_of(kms, k1)) == ["alias/dup", "alias/dup-2"]
    # The target must be a key id or key ARN of an existing key, not an alias.
    raises("ValidationException", kms.create_alias, AliasName="alias/x1", TargetKeyId="alias/dup")
    raises("NotFoundException", kms.create_alias, AliasName="alias/x2",
           TargetKeyId=str(uuid.uuid4()))
    assert "alias/x1" not in aliases_of(kms) and "alias/x2" not in aliases_of(kms)


def test_aliases_per_key_limit(kms):
    full, other = new_key(kms), new_key(kms)
    for i in range(50):
        kms.create_alias(AliasName=f"alias/full-{i:02}", TargetKeyId=full)
    raises("LimitExceededException", kms.create_alias, AliasName="alias/full-50",
           TargetKeyId=full, status=400)
    kms.create_alias(AliasName="alias/elsewhere", TargetKeyId=other)
    raises("LimitExceededException", kms.update_alias, AliasName="alias/elsewhere",
           TargetKeyId=full)
    assert list(aliases_of(kms, other)) == ["alias/elsewhere"]
    assert sorted(aliases_of(kms, full)) == [f"alias/full-{i:02}" for i in range(50)]
    # Pointing an alias of the key at it again is no new alias; a deleted one makes room.
    kms.update_alias(AliasName="alias/full-00", TargetKeyId=full)
    kms.delete_alias(AliasName="alias/full-01")
    kms.update_alias(AliasName="alias/elsewhere", TargetKeyId=full)
    assert aliases_of(kms, other) == {}
    assert len(aliases_of(kms, full)) == 50
    # Removed, so the module's listings of every alias stay within one page.
    for name in aliases_of(kms, full):
        kms.delete_alias(AliasName=name)


def test_update_alias(kms):
    k1, k2 = new_key(kms), new_key(kms)
    kms.create_alias(AliasName="alias/moving", TargetKeyId=k1)
    # Used before the move (hsmd caches aliases), then after it.
    assert kms.encrypt(KeyId="alias/moving", Plaintext=b"x")["KeyId"].endswith(k1)
    kms.update_alias(AliasName="alias/moving", TargetKeyId=k2)
    assert aliases_of(kms)["alias/moving"]["TargetKeyId"] == k2
    assert kms.describe_key(KeyId="alias/moving")["KeyMetadata"]["KeyId"] == k2
    assert kms.encrypt(KeyId="alias/moving", Plaintext=b"x")["KeyId"].endswith(k2)
    # Only to a key of the same type and usage.
    rsa_enc = new_key(kms, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")
    hmac = new_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    ec_sign = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    for other in (rsa_enc, hmac, ec_sign):
        raises("ValidationException", kms.update_alias, AliasName="alias/moving",
               TargetKeyId=other)
    assert aliases_of(kms)["alias/moving"]["TargetKeyId"] == k2
    raises("NotFoundException", kms.update_alias, AliasName="alias/never-made", TargetKeyId=k1)
    raises("NotFoundException", kms.update_alias, AliasName="alias/moving",
           TargetKeyId=str(uuid.uuid4()))
    # InvalidAliasNameException is CreateAlias's alone in the KMS model: a name that cannot
    # be an alias is a ValidationException here, and alias/aws/ names no alias hsmd holds.
    raises("NotFoundException", kms.update_alias, AliasName="alias/aws/x", TargetKeyId=k1)
    raises("ValidationException", kms.update_alias, AliasName="moving", TargetKeyId=k1)
    raises("NotFoundException", kms.delete_alias, AliasName="alias/aws/s3")
    raises("ValidationException", kms.delete_alias, AliasName="moving")
    raises("ValidationException", kms.delete_alias, AliasName="alias/")
    assert aliases_of(kms)["alias/moving"]["TargetKeyId"] == k2


def test_alias_moves_while_in_use(hsmd, kms):
    """hsmd caches aliases: while four clients sign through an alias that
    moves between two RSA keys, every signature verifies under the key its
    answer names, and a request made after UpdateAlias has answered always
    uses the new key."""
    import threading

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from conftest import client
    keys = [new_key(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY") for _ in range(2)]
    pubs = {k: serialization.load_der_public_key(kms.get_public_key(KeyId=k)["PublicKey"])
            for k in keys}
    kms.create_alias(AliasName="alias/moving-signer", TargetKeyId=keys[0])
    stop, errors, seen = threading.Event(), [], set()

    def sign_loop(c):
        try:
            i = 0
            while not stop.is_set():
                msg = b"token %d" % i
                out = c.sign(KeyId="alias/moving-signer", Message=msg,
                             SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")
                kid = out["KeyId"].rsplit("/", 1)[1]
                pubs[kid].verify(out["Signature"], msg, padding.PKCS1v15(), hashes.SHA256())
                seen.add(kid)
                i += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=sign_loop, args=(client(hsmd),)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        probe = client(hsmd)
        for i in range(1, 11):
            target = keys[i % 2]
            kms.update_alias(AliasName="alias/moving-signer", TargetKeyId=target)
            out = probe.sign(KeyId="alias/moving-signer", Message=b"m",
                             SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")
            assert out["KeyId"].endswith(target), (i, out["KeyId"], target)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert seen == set(keys)


def at_once(calls):
    """Runs each call on a thread and client of its own, released together; returns, in
    order, None for a success or the ClientError's response."""
    import threading

    from botocore.exceptions import ClientError
    start, out = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i, fn, kw):
        start.wait()
        try:
            fn(**kw)
        except ClientError as e:
            out[i] = e.response

    threads = [threading.Thread(target=run, args=(i, fn, kw))
               for i, (fn, kw) in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return out


def test_one_pkcs11_id_alias_under_concurrency(hsmd, kms):
    """A key has at most one alias under alias/pkcs11-id/ (its PKCS#11 CKA_ID), also when
    several CreateAlias or UpdateAlias calls give it one at the same moment: exactly one
    succeeds, the others are refused as a second one would be alone, and change nothing."""
    from conftest import client
    clients = [client(hsmd) for _ in range(8)]

    def check(target, names, out):
        ids = [n for n in aliases_of(kms, target) if n.startswith("alias/pkcs11-id/")]
        assert len(ids) == 1, (ids, out)
        assert out.count(None) == 1, out
        assert names[out.index(None)] == ids[0]
        for resp in out:
            if resp is not None:
                assert resp["Error"]["Code"] == "ValidationException", resp
                assert resp["Error"]["Message"] == (
                    f"key {target} has a PKCS#11 CKA_ID already ({ids[0]}): delete that "
                    "alias, or move it, first"), resp
        return ids[0]

    for rnd in range(5):
        target = new_key(kms)
        names = [f"alias/pkcs11-id/c{rnd}{i:02x}{target[:4]}" for i in range(8)]
        out = at_once([(c.create_alias, {"AliasName": n, "TargetKeyId": target})
                       for c, n in zip(clients, names)])
        won = check(target, names, out)
        assert [n for n in names if n in aliases_of(kms)] == [won]
        kms.delete_alias(AliasName=won)

        # The same by UpdateAlias: six aliases, each on a key of its own, moved at once.
        sources = [new_key(kms) for _ in range(6)]
        names = [f"alias/pkcs11-id/d{rnd}{i:02x}{s[:4]}" for i, s in enumerate(sources)]
        for n, src in zip(names, sources):
            kms.create_alias(AliasName=n, TargetKeyId=src)
        out = at_once([(c.update_alias, {"AliasName": n, "TargetKeyId": target})
                       for c, n in zip(clients, names)])
        won = check(target, names, out)
        held = aliases_of(kms)
        for n, src in zip(names, sources):
            assert held[n]["TargetKeyId"] == (target if n == won else src)
            kms.delete_alias(AliasName=n)  # so listings of every alias stay within one page


def test_one_alias_moved_by_many_at_once(hsmd, kms):
    """UpdateAlias writes only if the alias still points at the key it was authorized on;
    one moved meanwhile is decided again on where it now points.  Eight callers moving one
    alias at the same moment all succeed, and it ends on one of their targets."""
    from conftest import client
    clients = [client(hsmd) for _ in range(8)]
    targets = [new_key(kms) for _ in range(8)]
    kms.create_alias(AliasName="alias/crowded", TargetKeyId=new_key(kms))
    for _ in range(5):
        out = at_once([(c.update_alias, {"AliasName": "alias/crowded", "TargetKeyId": t})
                       for c, t in zip(clients, targets)])
        assert out == [None] * 8, out
        assert aliases_of(kms)["alias/crowded"]["TargetKeyId"] in targets


def test_delete_alias(kms):
    kid = new_key(kms)
    kms.create_alias(AliasName="alias/short-lived", TargetKeyId=kid)
    assert kms.describe_key(KeyId="alias/short-lived")["KeyMetadata"]["KeyId"] == kid
    kms.delete_alias(AliasName="alias/short-lived")
    assert "alias/short-lived" not in aliases_of(kms)
    raises("NotFoundException", kms.describe_key, KeyId="alias/short-lived")
    raises("NotFoundException", kms.delete_alias, AliasName="alias/short-lived")
    # The key is untouched, and the name can be used again.
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled"
    kms.create_alias(AliasName="alias/short-lived", TargetKeyId=kid)


def test_list_aliases_pagination(kms):
    kid = new_key(kms)
    for i in range(5):
        kms.create_alias(AliasName=f"alias/page-{i}", TargetKeyId=kid)
    full = kms.list_aliases(Limit=100)
    assert full["Truncated"] is False
    names = [a["AliasName"] for a in full["Aliases"]]
    assert names == sorted(names) and len(names) >= 5
    got, marker = [], None
    while True:
        kw = {"Limit": 2} if marker is None else {"Limit": 2, "Marker": marker}
        page = kms.list_aliases(**kw)
        assert 1 <= len(page["Aliases"]) <= 2
        got += [a["AliasName"] for a in page["Aliases"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert got == names
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=kid)["Aliases"]] == [
        f"alias/page-{i}" for i in range(5)]
    raises("InvalidMarkerException", kms.list_aliases, Marker="bogus")
    raises("NotFoundException", kms.list_aliases, KeyId=str(uuid.uuid4()))


def test_list_aliases_of_a_key_asks_the_caller_alone(kms):
    """As in AWS KMS, ListAliases needs the caller's kms:ListAliases only: the key's policy
    is not asked, with KeyId as without it (where the same aliases are listed)."""
    kid = key_denying(kms, "kms:ListAliases")
    name = f"alias/listed-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=name, TargetKeyId=kid)
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=kid)["Aliases"]] == [name]
    assert name in aliases_of(kms)


# ---- Tags -----------------------------------------------------------------------------------

def tags_of(kms, kid):
    return {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=kid)["Tags"]}


def test_tag_untag_list(kms):
    kid = new_key(kms)
    assert kms.list_resource_tags(KeyId=kid)["Tags"] == []
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "env", "TagValue": "prod"},
                                      {"TagKey": "owner", "TagValue": "team a"},
                                      {"TagKey": "empty", "TagValue": ""}])
    assert tags_of(kms, kid) == {"env": "prod", "owner": "team a", "empty": ""}
    kms.tag_resource(KeyId=key_arn(kid), Tags=[{"TagKey": "env", "TagValue": "staging"}])
    assert tags_of(kms, kid)["env"] == "staging"
    kms.untag_resource(KeyId=kid, TagKeys=["owner", "not-there"])
    assert tags_of(kms, kid) == {"env": "staging", "empty": ""}
    kms.create_alias(AliasName="alias/tagged", TargetKeyId=kid)
    assert tags_of(kms, "alias/tagged") == {"env": "staging", "empty": ""}


def test_tag_limits(kms, hsmd):
    kid = new_key(kms)
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": f"k{i:02}", "TagValue": "v"} for i in range(50)])
    assert len(tags_of(kms, kid)) == 50
    raises("TagException", kms.tag_resource, KeyId=kid, Tags=[{"TagKey": "k50", "TagValue": "v"}],
           status=400)
    # Changing an existing tag's value is still allowed at the limit.
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "k00", "TagValue": "changed"}])
    assert len(tags_of(kms, kid)) == 50 and tags_of(kms, kid)["k00"] == "changed"
    # Pagination over 50 tags.
    page = kms.list_resource_tags(KeyId=kid, Limit=20)
    assert len(page["Tags"]) == 20 and page["Truncated"] is True
    rest = kms.list_resource_tags(KeyId=kid, Limit=50, Marker=page["NextMarker"])
    assert len(rest["Tags"]) == 30 and rest["Truncated"] is False
    assert {t["TagKey"] for t in page["Tags"] + rest["Tags"]} == set(tags_of(kms, kid))
    raises("InvalidMarkerException", kms.list_resource_tags, KeyId=kid, Marker="not base64!")

    other = new_key(kms)
    # aws: is reserved in any case, for keys and values (AWS's tagging rules).
    for tag in ({"TagKey": "aws:created-by", "TagValue": "me"},
                {"TagKey": "AWS:created-by", "TagValue": "me"},
                {"TagKey": "Aws:x", "TagValue": "me"},
                {"TagKey": "made-by", "TagValue": "aWs:service"}):
        raises("TagException", kms.tag_resource, KeyId=other, Tags=[tag])
        raises("TagException", kms.create_key, Tags=[tag])
    raises("TagException", kms.untag_resource, KeyId=other, TagKeys=["AWS:created-by"])
    raises("TagException", kms.tag_resource, KeyId=other,
           Tags=[{"TagKey": f"t{i}", "TagValue": "v"} for i in range(51)])
    call_error(hsmd, "TagResource", {"KeyId": other, "Tags": [{"TagKey": "k" * 129,
                                                               "TagValue": "v"}]},
               "ValidationException")
    call_error(hsmd, "TagResource", {"KeyId": other, "Tags": [{"TagKey": "k",
                                                               "TagValue": "v" * 257}]},
               "ValidationException")
    call_error(hsmd, "TagResource", {"KeyId": other, "Tags": []}, "ValidationException")
    call_error(hsmd, "UntagResource", {"KeyId": other, "TagKeys": []}, "ValidationException")
    call_error(hsmd, "UntagResource", {"KeyId": other, "TagKeys": ["k" * 129]},
               "ValidationException")
    # More keys than a key can have tags is no error: the ones not there are no-ops.
    kms.untag_resource(KeyId=other, TagKeys=[f"t{i}" for i in range(120)])
    assert tags_of(kms, other) == {}
    # Exactly the longest key and value are accepted.
    kms.tag_resource(KeyId=other, Tags=[{"TagKey": "k" * 128, "TagValue": "v" * 256}])
    assert tags_of(kms, other) == {"k" * 128: "v" * 256}


def test_tags_of_unknown_key(kms):
    ghost = str(uuid.uuid4())
    raises("NotFoundException", kms.tag_resource, KeyId=ghost,
           Tags=[{"TagKey": "a", "TagValue": "b"}])
    raises("NotFoundException", kms.list_resource_tags, KeyId=ghost)
    raises("NotFoundException", kms.untag_resource, KeyId=ghost, TagKeys=["a"])


# ---- Key policies ---------------------------------------------------------------------------

def policy(*statements):
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


ADMIN = {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": DEV_ARN}, "Action": "kms:*",
         "Resource": "*"}


def test_get_and_list_key_policies(kms):
    kid = new_key(kms)
    r = kms.get_key_policy(KeyId=kid, PolicyName="default")
    doc = json.loads(r["Policy"])
    assert doc["Version"] == "2012-10-17" and doc["Statement"]
    names = kms.list_key_policies(KeyId=kid)
    assert (names["PolicyNames"], names["Truncated"]) == (["default"], False)
    # One page: there is no marker to come back with.
    # ListKeyPolicies declares no InvalidMarkerException.
    raises("ValidationException", kms.list_key_policies, KeyId=kid, Marker="x")
    raises("NotFoundException", kms.get_key_policy, KeyId=kid, PolicyName="other")
    # Not a name at all: the API's pattern [\w]+.
    raises("ValidationException", kms.get_key_policy, KeyId=kid, PolicyName="de-fault")
    raises("ValidationException", kms.put_key_policy, KeyId=kid, PolicyName="de fault",
           Policy=kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"])
    raises("NotFoundException", kms.get_key_policy, KeyId=str(uuid.uuid4()), PolicyName="default")
    raises("NotFoundException", kms.list_key_policies, KeyId=str(uuid.uuid4()))


def test_put_key_policy(kms):
    kid = new_key(kms)
    p = policy(ADMIN, {"Sid": "ReadOnly", "Effect": "Allow",
                       "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/reader"},
                       "Action": ["kms:Describe*", "kms:Get*"], "Resource": "*"})
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=p)
    assert kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"] == p
    raises("NotFoundException", kms.put_key_policy, KeyId=kid, PolicyName="custom", Policy=p)
    # The caller is still allowed by the new policy.
    kms.encrypt(KeyId=kid, Plaintext=b"x")


@pytest.mark.parametrize("doc", [
    "not json",
    "[]",
    json.dumps({"Version": "2012-10-17"}),
    json.dumps({"Version": "2012-10-17", "Statement": []}),
    json.dumps({"Version": "1999-01-01", "Statement": [ADMIN]}),
    policy(dict(ADMIN, Effect="Maybe")),
    policy({k: v for k, v in ADMIN.items() if k != "Action"}),
    policy({k: v for k, v in ADMIN.items() if k != "Principal"}),
    policy(dict(ADMIN, Condition={"NumericLessThan": {"kms:GrantCount": "1"}})),
    policy(dict(ADMIN, Condition={"StringEquals": {"kms:NoSuchConditionKey": "x"}})),
    policy(ADMIN, dict(ADMIN)),  # duplicate Sid
])
def test_malformed_policies(kms, doc):
    kid = new_key(kms)
    before = kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
    raises("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=kid, PolicyName="default",
           Policy=doc, status=400)
    assert kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"] == before


def test_policy_size_limit(kms, hsmd):
    """KMS: "If the key policy exceeds the length constraint, KMS returns a
    LimitExceededException" (the 32 KB quota); past the API's 131,072 characters, or with
    characters outside its pattern, ValidationException.  Nothing changes."""
    kid = new_key(kms)
    before = kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
    big = policy(dict(ADMIN, Sid="x" * 33000))
    call_error(hsmd, "PutKeyPolicy", {"KeyId": kid, "PolicyName": "default", "Policy": big},
               "LimitExceededException")
    call_error(hsmd, "CreateKey", {"Policy": big}, "LimitExceededException")
    huge = policy(dict(ADMIN, Sid="x" * 131072))
    call_error(hsmd, "PutKeyPolicy", {"KeyId": kid, "PolicyName": "default", "Policy": huge},
               "ValidationException")
    out = call_error(hsmd, "PutKeyPolicy", {"KeyId": kid, "PolicyName": "default",
                                            "Policy": policy(dict(ADMIN, Sid="keyEUR"))
                                            .replace("keyEUR", "key\u20ac")},
                     "ValidationException")
    assert "regular expression pattern" in out["message"], out
    assert kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"] == before
    # Latin-1 characters are in the pattern: a description with one is taken.
    latin = policy(dict(ADMIN, Sid="Admin")).replace('"Version"', '"Id": "cl\u00e9", "Version"')
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=latin)
    assert kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"] == latin


def test_policy_lockout_safety_check(kms):
    kid = new_key(kms)
    before = kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
    lockout = policy({"Sid": "OnlyBob", "Effect": "Allow",
                      "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/bob"},
                      "Action": "kms:*", "Resource": "*"})
    raises("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=kid,
           PolicyName="default", Policy=lockout)
    # A policy that lets the caller do anything but change the policy is refused too.
    no_put = policy(ADMIN, {"Sid": "NoPut", "Effect": "Deny", "Principal": {"AWS": DEV_ARN},
                            "Action": "kms:PutKeyPolicy", "Resource": "*"})
    raises("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=kid,
           PolicyName="default", Policy=no_put)
    assert kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"] == before
    # The check can be bypassed; then the caller has locked itself out of the key.
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=lockout,
                       BypassPolicyLockoutSafetyCheck=True)
    raises("AccessDeniedException", kms.put_key_policy, KeyId=kid, PolicyName="default",
           Policy=before, BypassPolicyLockoutSafetyCheck=True)
    raises("AccessDeniedException", kms.encrypt, KeyId=kid, Plaintext=b"x")
    raises("AccessDeniedException", kms.get_key_policy, KeyId=kid, PolicyName="default")
    raises("AccessDeniedException", kms.describe_key, KeyId=kid)


def test_lockout_check_reads_the_conditions_a_later_request_would_carry(kms):
    """The check asks whether this caller could change the policy later, with the
    condition values its requests carry: a Deny that applies to every user, or an
    Allow only for requests without a source address (no request is), lock it out
    just the same, and are refused without the bypass; a condition that a later
    request can meet passes."""
    kid = new_key(kms)
    before = kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
    deny_users = policy(ADMIN, {"Effect": "Deny", "Principal": "*",
                                "Action": "kms:PutKeyPolicy", "Resource": "*",
                                "Condition": {"StringEquals": {"aws:PrincipalType": "User"}}})
    never = policy({"Effect": "Allow", "Principal": {"AWS": DEV_ARN}, "Action": "kms:*",
                    "Resource": "*", "Condition": {"Null": {"aws:SourceIp": "true"}}})
    for locked in (deny_users, never):
        raises("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=kid,
               PolicyName="default", Policy=locked)
        raises("MalformedPolicyDocumentException", kms.create_key, Policy=locked, status=400)
    assert kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"] == before
    # A Deny of the bypass itself is what careful policies say; it passes.
    guarded = policy(ADMIN, {"Effect": "Deny", "Principal": "*", "Action": "kms:PutKeyPolicy",
                             "Resource": "*", "Condition": {
                                 "Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}}})
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=guarded)
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=before)


def test_create_key_policy_lockout_safety_check(kms):
    n = len(kms.list_keys(Limit=1000)["Keys"])
    lockout = policy({"Sid": "OnlyBob", "Effect": "Allow",
                      "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/bob"},
                      "Action": "kms:*", "Resource": "*"})
    raises("MalformedPolicyDocumentException", kms.create_key, Policy=lockout, status=400)
    assert len(kms.list_keys(Limit=1000)["Keys"]) == n
    kid = kms.create_key(Policy=lockout, BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"][
        "KeyId"]
    raises("AccessDeniedException", kms.describe_key, KeyId=kid)
    # A policy naming the caller passes the check.
    kms.create_key(Policy=policy(ADMIN))


def test_create_key_lockout_check_sees_the_new_keys_tags_and_no_aliases(kms):
    """CreateKey's check judges the key it is making: no alias names it yet, and its
    tags are the request's.  A policy that reads either is judged, not refused
    because the key is not in the store yet."""
    n = len(kms.list_keys(Limit=1000)["Keys"])
    tagged = [{"TagKey": "lock", "TagValue": "yes"}]
    by_tag = policy(ADMIN, deny("kms:PutKeyPolicy", "StringEquals", "aws:ResourceTag/lock", "yes"))
    raises("MalformedPolicyDocumentException", kms.create_key, Policy=by_tag, Tags=tagged,
           status=400)
    assert len(kms.list_keys(Limit=1000)["Keys"]) == n
    kid = kms.create_key(Policy=by_tag)["KeyMetadata"]["KeyId"]
    kid2 = kms.create_key(Policy=by_tag, Tags=[{"TagKey": "lock", "TagValue": "no"}])[
        "KeyMetadata"]["KeyId"]
    # The key as made: the tag the check was told of is the one the key has.
    assert kms.list_resource_tags(KeyId=kid2)["Tags"] == [{"TagKey": "lock", "TagValue": "no"}]
    by_alias = policy(ADMIN, deny("kms:PutKeyPolicy", "ForAnyValue:StringLike",
                                  "kms:ResourceAliases", "alias/*"))
    kid3 = kms.create_key(Policy=by_alias)["KeyMetadata"]["KeyId"]
    # Once an alias names the key, the same policy locks PutKeyPolicy out, as it says.
    kms.create_alias(AliasName=f"alias/lock-{uuid.uuid4().hex[:8]}", TargetKeyId=kid3)
    denied(kms.put_key_policy, KeyId=kid3, PolicyName="default", Policy=policy(ADMIN))
    # A statement about someone else that reads them passes as well.
    other = {"Sid": "Bob", "Effect": "Allow",
             "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/bob"}, "Action": "kms:Encrypt",
             "Resource": "*", "Condition": {"StringEquals": {"aws:ResourceTag/team": "b"}}}
    kms.create_key(Policy=policy(ADMIN, other), Tags=[{"TagKey": "team", "TagValue": "b"}])
    assert len(kms.list_keys(Limit=1000)["Keys"]) == n + 4
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=policy(ADMIN))


# ---- Condition keys a request has beyond its own fields --------------------------------------
# Each Deny below must fire where its condition holds and only there: a condition key that
# hsmd accepted but never supplied would leave the Deny silent (an absent key fails a
# positive condition).

def deny(action, operator, key, value):
    return {"Sid": "Guard", "Effect": "Deny", "Principal": "*", "Action": action,
            "Resource": "*", "Condition": {operator: {key: value}}}


def guarded_key(kms, statement, **kw):
    kid = new_key(kms, **kw)
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=policy(ADMIN, statement))
    return kid


def denied(fn, **kw):
    raises("AccessDeniedException", fn, **kw)


def test_condition_schedule_key_deletion_window(kms):
    kid = guarded_key(kms, deny("kms:ScheduleKeyDeletion", "NumericLessThan",
                                "kms:ScheduleKeyDeletionPendingWindowInDays", "30"))
    denied(kms.schedule_key_deletion, KeyId=kid, PendingWindowInDays=7)
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled"
    kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=30)


def test_condition_message_type(kms):
    kid = guarded_key(kms, deny("kms:Sign", "StringEquals", "kms:MessageType", "DIGEST"),
                      KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    alg = "ECDSA_SHA_256"
    denied(kms.sign, KeyId=kid, Message=b"\0" * 32, MessageType="DIGEST", SigningAlgorithm=alg)
    kms.sign(KeyId=kid, Message=b"data", MessageType="RAW", SigningAlgorithm=alg)


def test_condition_request_alias(kms):
    tag = uuid.uuid4().hex[:8]
    blocked, open_, app = f"alias/blocked-{tag}", f"alias/open-{tag}", f"alias/app-{tag}"
    kid = guarded_key(kms, deny("kms:Encrypt", "StringEquals", "kms:RequestAlias", blocked))
    kms.create_alias(AliasName=blocked, TargetKeyId=kid)
    kms.create_alias(AliasName=open_, TargetKeyId=kid)
    denied(kms.encrypt, KeyId=blocked, Plaintext=b"x")
    denied(kms.encrypt, KeyId=f"arn:aws:kms:{REGION}:{ACCOUNT}:{blocked}", Plaintext=b"x")
    kms.encrypt(KeyId=open_, Plaintext=b"x")
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    # An Allow on the alias: the key encrypts when named by it, and only then.
    other = new_key(kms)
    kms.create_alias(AliasName=app, TargetKeyId=other)
    kms.put_key_policy(KeyId=other, PolicyName="default", Policy=policy(
        {"Sid": "AdminButEncrypt", "Effect": "Allow", "Principal": {"AWS": DEV_ARN},
         "NotAction": "kms:Encrypt", "Resource": "*"},
        {"Sid": "EncryptByAlias", "Effect": "Allow", "Principal": {"AWS": DEV_ARN},
         "Action": "kms:Encrypt", "Resource": "*",
         "Condition": {"StringLike": {"kms:RequestAlias": "alias/app-*"}}}))
    kms.encrypt(KeyId=app, Plaintext=b"x")
    denied(kms.encrypt, KeyId=other, Plaintext=b"x")


def test_condition_resource_tags(kms):
    kid = guarded_key(kms, deny("kms:Encrypt", "StringEquals", "aws:ResourceTag/classification",
                                "secret"))
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "classification", "TagValue": "secret"}])
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "classification", "TagValue": "internal"}])
    kms.encrypt(KeyId=kid, Plaintext=b"x")


def test_condition_resource_aliases(kms):
    kid = guarded_key(kms, deny("kms:Encrypt", "ForAnyValue:StringLike", "kms:ResourceAliases",
                                "alias/restricted-*"))
    tag = uuid.uuid4().hex[:8]
    kms.create_alias(AliasName=f"alias/plain-{tag}", TargetKeyId=kid)
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    kms.create_alias(AliasName=f"alias/restricted-{tag}", TargetKeyId=kid)
    # Every way of naming the key: the aliases belong to the key, not to the request.
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    denied(kms.encrypt, KeyId=f"alias/plain-{tag}", Plaintext=b"x")
    kms.delete_alias(AliasName=f"alias/restricted-{tag}")
    kms.encrypt(KeyId=kid, Plaintext=b"x")


def test_conditions_on_a_key_with_every_tag_and_alias_it_may_have(kms):
    """A key at its 50 tags and 50 aliases, under a policy reading both: each of
    them is a condition value, far past the few a request's values start with,
    and the last tag and the last alias still decide."""
    kid = new_key(kms)
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=policy(
        ADMIN, deny("kms:Encrypt", "StringEquals", "aws:ResourceTag/t49", "secret"),
        dict(deny("kms:Encrypt", "ForAnyValue:StringLike", "kms:ResourceAliases", "alias/zz-*"),
             Sid="GuardAliases")))
    tag = uuid.uuid4().hex[:8]
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": f"t{i:02d}", "TagValue": "plain"}
                                      for i in range(50)])
    for i in range(49):
        kms.create_alias(AliasName=f"alias/a-{tag}-{i:02d}", TargetKeyId=kid)
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "t49", "TagValue": "secret"}])
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "t49", "TagValue": "plain"}])
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    kms.create_alias(AliasName=f"alias/zz-{tag}", TargetKeyId=kid)  # the 50th, listed last
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kms.delete_alias(AliasName=f"alias/zz-{tag}")
    kms.encrypt(KeyId=kid, Plaintext=b"x")


# A context may spell one key twice ({"tenant": ..., "Tenant": ...}), and
# kms:EncryptionContext:tenant reads both; ForAnyValue on this single-valued key
# means the plain operator.  An Allow needs every spelling, a Deny any one.
TWO_SPELLINGS = ({"tenant": "evil", "Tenant": "acme"}, {"Tenant": "acme", "tenant": "evil"})
CONTEXT_OPS = ("Encrypt", "GenerateDataKey")


def context_call(kms, kid, op, ctx):
    if op == "Encrypt":
        return kms.encrypt(KeyId=kid, Plaintext=b"x", EncryptionContext=ctx)
    return kms.generate_data_key(KeyId=kid, KeySpec="AES_256", EncryptionContext=ctx)


@pytest.mark.parametrize("operator,value", [
    ("StringEquals", "acme"), ("ForAnyValue:StringEquals", "acme"),
    ("StringNotEquals", "evil"), ("ForAnyValue:StringNotEquals", "evil"),
    ("ForAnyValue:StringEqualsIgnoreCase", "ACME"), ("ForAnyValue:StringLike", "ac*"),
])
def test_condition_context_key_spelt_twice_in_an_allow(kms, operator, value):
    kid = new_key(kms)
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=policy(
        {"Sid": "AdminButUse", "Effect": "Allow", "Principal": {"AWS": DEV_ARN},
         "NotAction": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": "*"},
        {"Sid": "UseForAcme", "Effect": "Allow", "Principal": {"AWS": DEV_ARN},
         "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": "*",
         "Condition": {operator: {"kms:EncryptionContext:tenant": value}}}))
    for op in CONTEXT_OPS:
        context_call(kms, kid, op, {"tenant": "acme"})
        context_call(kms, kid, op, {"Tenant": "acme", "tenant": "acme"})
        for ctx in TWO_SPELLINGS:
            raises("AccessDeniedException", context_call, kms, kid, op, ctx)


@pytest.mark.parametrize("operator,value", [
    ("StringEquals", "evil"), ("ForAnyValue:StringEquals", "evil"),
    ("StringNotEquals", "acme"), ("ForAnyValue:StringNotEquals", "acme"),
])
def test_condition_context_key_spelt_twice_in_a_deny(kms, operator, value):
    kid = guarded_key(kms, deny(["kms:Encrypt", "kms:GenerateDataKey"], operator,
                                "kms:EncryptionContext:tenant", value))
    for op in CONTEXT_OPS:
        context_call(kms, kid, op, {"tenant": "acme"})
        context_call(kms, kid, op, {"Tenant": "acme", "tenant": "acme"})
        for ctx in TWO_SPELLINGS:
            raises("AccessDeniedException", context_call, kms, kid, op, ctx)


def test_condition_tag_key_spelt_twice(kms):
    """aws:RequestTag/<k> and aws:ResourceTag/<k> read every spelling of k (tag keys
    are case-sensitive, condition key names are not), and a TagResource may name k
    twice: as with the context, a Deny fires on any one value, an Allow needs all."""
    kid = guarded_key(kms, deny("kms:TagResource", "StringNotEquals", "aws:RequestTag/env", "dev"))
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "env", "TagValue": "dev"}])
    denied(kms.tag_resource, KeyId=kid, Tags=[{"TagKey": "env", "TagValue": "prod"}])
    for tags in ([{"TagKey": "env", "TagValue": "dev"}, {"TagKey": "Env", "TagValue": "prod"}],
                 [{"TagKey": "env", "TagValue": "dev"}, {"TagKey": "env", "TagValue": "prod"}],
                 [{"TagKey": "ENV", "TagValue": "prod"}, {"TagKey": "env", "TagValue": "dev"}]):
        denied(kms.tag_resource, KeyId=kid, Tags=tags)
    assert tags_of(kms, kid) == {"env": "dev"}
    # An Allow on a resource tag: a key tagged owner=alice and Owner=bob is neither's.
    kid = new_key(kms, Tags=[{"TagKey": "owner", "TagValue": "dev"},
                             {"TagKey": "Owner", "TagValue": "bob"}])
    use = {"Sid": "UseIfOwner", "Effect": "Allow", "Principal": {"AWS": DEV_ARN},
           "Action": "kms:Encrypt", "Resource": "*",
           "Condition": {"StringEquals": {"aws:ResourceTag/owner": "${aws:username}"}}}
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=policy(
        {"Sid": "AdminButEncrypt", "Effect": "Allow", "Principal": {"AWS": DEV_ARN},
         "NotAction": "kms:Encrypt", "Resource": "*"}, use))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kms.untag_resource(KeyId=kid, TagKeys=["Owner"])
    kms.encrypt(KeyId=kid, Plaintext=b"x")


@pytest.mark.parametrize("effect", ["Allow", "Deny"])
def test_condition_for_all_values_on_a_context_key_is_refused(kms, effect):
    kid = new_key(kms)
    guard = {"Sid": "Guard", "Effect": effect, "Principal": {"AWS": DEV_ARN},
             "Action": ["kms:Encrypt", "kms:GenerateDataKey"], "Resource": "*",
             "Condition": {"ForAllValues:StringEquals": {"kms:EncryptionContext:tenant": "acme"}}}
    raises("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=kid,
           PolicyName="default", Policy=policy(ADMIN, guard), message="ForAllValues")


def test_condition_key_origin_transport_and_time(kms):
    kid = guarded_key(kms, deny("kms:Encrypt", "StringEquals", "kms:KeyOrigin", "AWS_KMS"))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    # The tests speak plain HTTP on loopback: not a secure transport.
    kid = guarded_key(kms, deny("kms:Encrypt", "Bool", "aws:SecureTransport", "false"))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kid = guarded_key(kms, deny("kms:Encrypt", "Bool", "aws:SecureTransport", "true"))
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    kid = guarded_key(kms, deny("kms:Encrypt", "NumericGreaterThan", "aws:EpochTime", "1700000000"))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kid = guarded_key(kms, deny("kms:Encrypt", "StringEquals", "aws:RequestedRegion", REGION))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kid = guarded_key(kms, deny("kms:Encrypt", "StringEquals", "aws:SourceIp", "127.0.0.1"))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")


def test_condition_source_ip_ranges(kms):
    # The tests' client is on loopback: inside 127.0.0.0/8, outside 10.0.0.0/8.
    kid = guarded_key(kms, deny("kms:Encrypt", "IpAddress", "aws:SourceIp", "127.0.0.0/8"))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kid = guarded_key(kms, deny("kms:Encrypt", "IpAddress", "aws:SourceIp",
                                ["10.0.0.0/8", "2001:db8::/32"]))
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    # The usual guard rail: refuse use from outside the networks named.
    kid = guarded_key(kms, deny(["kms:Encrypt", "kms:Decrypt"], "NotIpAddress", "aws:SourceIp",
                                "10.0.0.0/8"))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    # Denying the caller PutKeyPolicy from where it stands is a lockout, refused as one.
    raises("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=kid,
           PolicyName="default", Policy=policy(ADMIN, deny("kms:*", "NotIpAddress",
                                                           "aws:SourceIp", "10.0.0.0/8")),
           message="will not allow you to update the key policy")
    kid = guarded_key(kms, deny("kms:Encrypt", "NotIpAddress", "aws:SourceIp",
                                ["192.0.2.0/24", "127.0.0.1/32"]))
    kms.encrypt(KeyId=kid, Plaintext=b"x")


def test_condition_dates(kms):
    kid = guarded_key(kms, deny("kms:Encrypt", "DateGreaterThan", "aws:CurrentTime",
                                "2020-01-01T00:00:00Z"))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kid = guarded_key(kms, deny("kms:Encrypt", "DateGreaterThan", "aws:CurrentTime",
                                "2999-12-31T23:59:59+01:00"))
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    # aws:EpochTime is a date too, and either spelling works on either key.
    kid = guarded_key(kms, deny("kms:Encrypt", "DateLessThan", "aws:EpochTime", "2999-01"))
    denied(kms.encrypt, KeyId=kid, Plaintext=b"x")
    kid = guarded_key(kms, deny("kms:Encrypt", "DateLessThan", "aws:CurrentTime", 1577836800))
    kms.encrypt(KeyId=kid, Plaintext=b"x")


@pytest.mark.parametrize("operator,value", [
    ("IpAddress", "127.0.0.0/33"),
    ("NotIpAddress", "localhost"),
    ("DateLessThan", "2026-02-30"),
    ("DateEquals", "tomorrow"),
])
def test_malformed_typed_conditions(kms, operator, value):
    kid = new_key(kms)
    before = kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
    key = "aws:SourceIp" if "Ip" in operator else "aws:CurrentTime"
    raises("MalformedPolicyDocumentException", kms.put_key_policy, KeyId=kid,
           PolicyName="default", Policy=policy(ADMIN, deny("kms:Encrypt", operator, key, value)),
           status=400, message=f"not '{value}'")
    assert kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"] == before


def test_condition_rotation_period(kms, hsmd):
    kid = guarded_key(kms, deny("kms:EnableKeyRotation", "NumericLessThan",
                                "kms:RotationPeriodInDays", "90"))
    call_error(hsmd, "EnableKeyRotation", {"KeyId": kid, "RotationPeriodInDays": 30},
               "AccessDeniedException")
    assert kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is False
    call_ok(hsmd, "EnableKeyRotation", {"KeyId": kid, "RotationPeriodInDays": 90})


def test_condition_data_key_pair_spec(kms):
    kid = guarded_key(kms, deny("kms:GenerateDataKeyPair*", "StringEquals", "kms:DataKeyPairSpec",
                                "RSA_4096"))
    denied(kms.generate_data_key_pair, KeyId=kid, KeyPairSpec="RSA_4096")
    denied(kms.generate_data_key_pair_without_plaintext, KeyId=kid, KeyPairSpec="RSA_4096")
    kms.generate_data_key_pair(KeyId=kid, KeyPairSpec="ECC_NIST_P256")


def test_condition_reencrypt_on_same_key(kms):
    kid = guarded_key(kms, deny("kms:ReEncrypt*", "Bool", "kms:ReEncryptOnSameKey", "true"))
    other = new_key(kms)
    blob = kms.encrypt(KeyId=kid, Plaintext=b"x")["CiphertextBlob"]
    denied(kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=kid)
    moved = kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=other)["CiphertextBlob"]
    # Back onto the guarded key from another: not the same key, allowed.
    kms.re_encrypt(CiphertextBlob=moved, DestinationKeyId=kid)


def test_condition_request_tags(kms):
    kid = guarded_key(kms, deny(["kms:TagResource", "kms:UntagResource"],
                                "ForAnyValue:StringEquals", "aws:TagKeys", "owner"))
    denied(kms.tag_resource, KeyId=kid, Tags=[{"TagKey": "owner", "TagValue": "a"},
                                             {"TagKey": "team", "TagValue": "b"}])
    assert kms.list_resource_tags(KeyId=kid)["Tags"] == []
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "team", "TagValue": "b"}])
    denied(kms.untag_resource, KeyId=kid, TagKeys=["owner"])
    kms.untag_resource(KeyId=kid, TagKeys=["team"])
    kid = guarded_key(kms, deny("kms:TagResource", "StringEquals", "aws:RequestTag/env", "prod"))
    denied(kms.tag_resource, KeyId=kid, Tags=[{"TagKey": "env", "TagValue": "prod"}])
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "env", "TagValue": "test"}])


def test_condition_bypass_lockout_check(kms):
    kid = guarded_key(kms, deny("kms:PutKeyPolicy", "Bool", "kms:BypassPolicyLockoutSafetyCheck",
                                "true"))
    p = kms.get_key_policy(KeyId=kid, PolicyName="default")["Policy"]
    denied(kms.put_key_policy, KeyId=kid, PolicyName="default", Policy=p,
           BypassPolicyLockoutSafetyCheck=True)
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=p)


def test_rotation_status_while_pending_deletion(kms):
    kid = new_key(kms)
    kms.enable_key_rotation(KeyId=kid)
    kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    st = kms.get_key_rotation_status(KeyId=kid)
    assert st["KeyRotationEnabled"] is False and "NextRotationDate" not in st
    kms.cancel_key_deletion(KeyId=kid)
    assert kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is True


def test_lengths_are_characters(kms):
    kid = new_key(kms, Description="€" * 8192)
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["Description"] == "€" * 8192
    kms.update_key_description(KeyId=kid, Description="データ" * 2730)
    raises("ValidationException", kms.update_key_description, KeyId=kid, Description="x" * 8193)
    g = kms.create_grant(KeyId=kid, GranteePrincipal=DEV_ARN, Operations=["Encrypt"],
                         Constraints={"EncryptionContextSubset": {"k": "é" * 384}})
    assert g["GrantId"]
    raises("ValidationException", kms.create_grant, KeyId=kid, GranteePrincipal=DEV_ARN,
           Operations=["Encrypt"], Constraints={"EncryptionContextSubset": {"k": "é" * 385}})
    # Characters as AWS counts them (Java's UTF-16): one above U+FFFF is two.
    kms.update_key_description(KeyId=kid, Description="\U0001F680" * 4096)
    raises("ValidationException", kms.update_key_description, KeyId=kid,
           Description="\U0001F680" * 4096 + "x")
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["Description"] == "\U0001F680" * 4096
    kms.tag_resource(KeyId=kid, Tags=[{"TagKey": "\U0001F680" * 64, "TagValue": "v"}])
    raises("ValidationException", kms.tag_resource, KeyId=kid,
           Tags=[{"TagKey": "\U0001F680" * 64 + "k", "TagValue": "v"}])
    raises("ValidationException", kms.create_grant, KeyId=kid, GranteePrincipal=DEV_ARN,
           Operations=["Encrypt"],
           Constraints={"EncryptionContextSubset": {"k": "\U0001F680" * 192 + "x"}})
