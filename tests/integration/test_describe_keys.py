"""hsmd's HsmdToken.DescribeKeys: a page of ListKeys, each key with what
DescribeKey answers and, where GetPublicKey would answer it, its public key;
what the PKCS#11 module lists the token with.  Requests are signed by
botocore's own SigV4 signer; the answers are checked against boto3's
DescribeKey and GetPublicKey on the same keys.
"""
import base64

from conftest import signed_call
from helpers import audit_records_until, call_ok, key_denying, listed_key_ids, new_user


def describe_keys(hsmd, body, **kw):
    return signed_call(hsmd, "HsmdToken.DescribeKeys", body, **kw)


def all_pages(hsmd, limit, **kw):
    entries, marker, pages = [], None, 0
    while True:
        body = {"Limit": limit}
        if marker is not None:
            body["Marker"] = marker
        st, out = describe_keys(hsmd, body, **kw)
        assert st == 200, out
        pages += 1
        entries += out["Keys"]
        if not out["Truncated"]:
            assert "NextMarker" not in out, out
            return entries, pages
        marker = out["NextMarker"]


def test_entries_are_describe_key_and_get_public_key(hsmd, kms):
    made = {
        "rsa": kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"),
        "ec": kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY"),
        "ed": kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY"),
        "agree": kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT"),
        "aes": kms.create_key(),
        "mac": kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"),
    }
    ids = {name: out["KeyMetadata"]["KeyId"] for name, out in made.items()}
    kms.disable_key(KeyId=ids["ec"])
    entries, _ = all_pages(hsmd, 1000)
    by_id = {e["KeyMetadata"]["KeyId"]: e for e in entries}
    # Every key ListKeys lists, in its order, once.
    assert [e["KeyMetadata"]["KeyId"] for e in entries] == listed_key_ids(kms)
    for name, kid in ids.items():
        e = by_id[kid]
        # As DescribeKey answers it, read raw: boto3 1.26 drops members it predates.
        assert e["KeyMetadata"] == call_ok(hsmd, "DescribeKey", {"KeyId": kid})["KeyMetadata"]
        if name in ("aes", "mac"):
            assert "PublicKey" not in e, name  # no public key to give
        elif name == "ec":
            assert "PublicKey" not in e  # disabled: GetPublicKey answers DisabledException
        else:
            pub = kms.get_public_key(KeyId=kid)["PublicKey"]
            assert base64.b64decode(e["PublicKey"]) == pub, name
    kms.enable_key(KeyId=ids["ec"])
    st, out = describe_keys(hsmd, {})
    assert st == 200
    ec = [e for e in out["Keys"] if e["KeyMetadata"]["KeyId"] == ids["ec"]]
    assert ec and base64.b64decode(ec[0]["PublicKey"]) == kms.get_public_key(
        KeyId=ids["ec"])["PublicKey"]


def test_pages_follow_the_marker(hsmd, kms):
    for _ in range(7):
        kms.create_key()
    every = listed_key_ids(kms)
    assert len(every) >= 7
    entries, pages = all_pages(hsmd, 3)
    assert [e["KeyMetadata"]["KeyId"] for e in entries] == every
    assert pages == (len(every) + 2) // 3
    # Without a Limit, 100 a page.
    st, out = describe_keys(hsmd, {})
    assert st == 200 and len(out["Keys"]) == min(len(every), 100), out


def test_keys_refused_to_the_caller_are_left_out(hsmd, kms):
    """Each key is authorized as DescribeKey and GetPublicKey are: a key the caller may
    not describe is not in the page; one whose public key it may not read comes without it."""
    no_describe = key_denying(kms, "kms:DescribeKey", KeySpec="ECC_NIST_P256",
                              KeyUsage="SIGN_VERIFY")
    no_public = key_denying(kms, "kms:GetPublicKey", KeySpec="ECC_NIST_P256",
                            KeyUsage="SIGN_VERIFY")
    open_key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"]["KeyId"]
    entries, _ = all_pages(hsmd, 1000)
    by_id = {e["KeyMetadata"]["KeyId"]: e for e in entries}
    assert no_describe not in by_id
    assert "PublicKey" not in by_id[no_public]
    assert "PublicKey" in by_id[open_key]
    assert no_describe in listed_key_ids(kms)  # ListKeys itself still names it


def test_roles_refusals_and_audit(hsmd, kms):
    # The roles that may ListKeys, DescribeKey and GetPublicKey may list.
    for role in ("auditor", "crypto-user"):
        akid, secret = new_user(hsmd, "dk-" + role, [role])
        st, out = describe_keys(hsmd, {"Limit": 5}, akid=akid, secret=secret)
        assert st == 200 and out["Keys"], out
    # A custodian, who holds no rights over keys, may not.
    akid, secret = new_user(hsmd, "dk-custodian", ["custodian"])
    st, out = describe_keys(hsmd, {"Limit": 5}, akid=akid, secret=secret)
    assert (st, out["__type"]) == (400, "AccessDeniedException"), out
    # Unsigned: refused.
    st, out = describe_keys(hsmd, {}, secret="x" * 40)
    assert (st, out["__type"]) == (400, "InvalidSignatureException"), out
    # Bad input: a precise error.
    for body, code in [({"Limit": 0}, "ValidationException"),
                       ({"Limit": 1001}, "ValidationException"),
                       ({"Limit": "5"}, "SerializationException"),
                       ({"Marker": "not-a-key-id"}, "InvalidMarkerException")]:
        st, out = describe_keys(hsmd, body)
        assert (st, out["__type"]) == (400, code), (body, out)
    # Only under HsmdToken: not a KMS operation.
    st, out = signed_call(hsmd, "TrentService.DescribeKeys", {})
    assert (st, out["__type"]) == (400, "UnknownOperationException"), out
    # One audit record per page, under the operation's own name, and none per key.
    st, out = describe_keys(hsmd, {"Limit": 2})
    assert st == 200
    recs = audit_records_until(hsmd.data_dir, lambda r: r.get("op") == "DescribeKeys", n=2)
    assert recs[-1]["outcome"] == "success" and "key_id" not in recs[-1], recs[-1]


def test_jwt_mark_and_one_key(hsmd, kms):
    """Each entry says, beside KeyMetadata (DescribeKey's, AWS's shape), whether the key is
    marked for JWT signing (JwtSigningEnabled), whose Sign hsmd refuses: what a PKCS#11 token
    needs to not offer it for signing.  With KeyId (a key id, ARN or alias) the page is that
    key's entry alone, the same as in a listing; a key the caller may not describe, or none,
    gives an empty page; KeyId with a Marker is refused.  Its audit record names the key."""
    marked = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    plain = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/dk-jwt", TargetKeyId=marked)
    st, out = signed_call(hsmd, "HsmdJwt.EnableJwtSigning", {"KeyId": marked})
    assert st == 200, out
    entries, _ = all_pages(hsmd, 1000)
    by_id = {e["KeyMetadata"]["KeyId"]: e for e in entries}
    assert by_id[marked]["JwtSigningEnabled"] is True
    assert all(e["JwtSigningEnabled"] is False for k, e in by_id.items() if k != marked)
    # DescribeKey keeps AWS's shape.
    assert "JwtSigningEnabled" not in call_ok(hsmd, "DescribeKey", {"KeyId": marked})["KeyMetadata"]
    arn = by_id[marked]["KeyMetadata"]["Arn"]
    for ref in (marked, arn, "alias/dk-jwt"):
        st, out = describe_keys(hsmd, {"KeyId": ref, "Limit": 1})
        assert st == 200 and out == {"Keys": [by_id[marked]], "Truncated": False}, (ref, out)
    st, out = describe_keys(hsmd, {"KeyId": plain})
    assert st == 200 and out["Keys"] == [by_id[plain]], out
    # Unmarked again: false, and Sign answers again.
    st, out = signed_call(hsmd, "HsmdJwt.DisableJwtSigning", {"KeyId": marked})
    assert st == 200, out
    st, out = describe_keys(hsmd, {"KeyId": marked})
    assert st == 200 and out["Keys"][0]["JwtSigningEnabled"] is False, out
    hidden = key_denying(kms, "kms:DescribeKey", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    for ref in (hidden, "alias/dk-no-such-alias", "0" * 8 + "-0000-4000-8000-" + "0" * 12):
        st, out = describe_keys(hsmd, {"KeyId": ref})
        assert st == 200 and out == {"Keys": [], "Truncated": False}, (ref, out)
    st, out = describe_keys(hsmd, {"KeyId": marked, "Marker": plain})
    assert (st, out["__type"]) == (400, "ValidationException"), out
    st, out = describe_keys(hsmd, {"KeyId": ""})
    assert (st, out["__type"]) == (400, "ValidationException"), out
    recs = audit_records_until(hsmd.data_dir, lambda r: r.get("op") == "DescribeKeys" and
                               r.get("key_id") == hidden)
    assert recs and recs[-1]["outcome"] == "success", recs
