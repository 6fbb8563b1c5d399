"""Key agreement: KeyUsage KEY_AGREEMENT and DeriveSharedSecret.

Debian's boto3 1.26 predates DeriveSharedSecret (and drops the
KeyAgreementAlgorithms members it does not know from responses), so those
calls go out as requests signed by botocore's own SigV4 signer; CreateKey
with KeyUsage KEY_AGREEMENT goes through boto3, which does not check enum
values.  Every shared secret is checked against python3-cryptography: a
peer key pair made there, ECDH on hsmd with the peer's public key and
locally with the peer's private key and hsmd's GetPublicKey, on each curve.
"""
import base64
import glob
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import client, signed_request, start_dev
from helpers import (ACCOUNT, audit_record, b64, call_error, call_ok, key_arn, new_user,
                     parsed_body, raises, request_id)

CURVES = {"ECC_NIST_P256": (ec.SECP256R1, 32), "ECC_NIST_P384": (ec.SECP384R1, 48),
          "ECC_NIST_P521": (ec.SECP521R1, 66)}
DER, SPKI = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo


def arn(user):
    return f"arn:aws:iam::{ACCOUNT}:user/{user}"


@pytest.fixture(scope="module")
def keys(kms):
    """One KEY_AGREEMENT key per curve, created with boto3."""
    out = {}
    for spec in CURVES:
        md = kms.create_key(KeySpec=spec, KeyUsage="KEY_AGREEMENT",
                            Description="ecdh " + spec)["KeyMetadata"]
        assert (md["KeySpec"], md["KeyUsage"]) == (spec, "KEY_AGREEMENT")
        out[spec] = md["KeyId"]
    return out


def peer(spec):
    """A peer key pair made outside hsmd, and its DER SubjectPublicKeyInfo."""
    priv = ec.generate_private_key(CURVES[spec][0]())
    return priv, priv.public_key().public_bytes(DER, SPKI)


def derive_body(key, spki, **more):
    return {"KeyId": key, "KeyAgreementAlgorithm": "ECDH", "PublicKey": b64(spki), **more}


def derive(server, key, spki, **kw):
    return call_ok(server, "DeriveSharedSecret", derive_body(key, spki), **kw)


def public_key(server, key):
    return serialization.load_der_public_key(
        base64.b64decode(call_ok(server, "GetPublicKey", {"KeyId": key})["PublicKey"]))


# ---- the secret ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", list(CURVES))
def test_secret_is_the_peers(hsmd, kms, keys, spec):
    kid = keys[spec]
    priv, spki = peer(spec)
    out = derive(hsmd, kid, spki)
    assert set(out) == {"KeyId", "SharedSecret", "KeyAgreementAlgorithm", "KeyOrigin"}, out
    assert (out["KeyId"], out["KeyAgreementAlgorithm"], out["KeyOrigin"]) == (
        key_arn(kid), "ECDH", "AWS_KMS")
    secret = base64.b64decode(out["SharedSecret"])
    assert len(secret) == CURVES[spec][1]  # the x-coordinate, field length
    assert secret == priv.exchange(ec.ECDH(), public_key(hsmd, kid))
    # The same through every way of naming the key, and with the point compressed.
    alias = "alias/ecdh-" + spec.lower().replace("_", "-")
    kms.create_alias(AliasName=alias, TargetKeyId=kid)
    compressed = serialization.load_der_public_key(spki).public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    compressed_spki = ec.EllipticCurvePublicKey.from_encoded_point(
        CURVES[spec][0](), compressed).public_bytes(DER, SPKI)
    for ref in (key_arn(kid), alias, f"arn:aws:kms:us-east-1:{ACCOUNT}:{alias}"):
        assert base64.b64decode(derive(hsmd, ref, spki)["SharedSecret"]) == secret
    assert base64.b64decode(derive(hsmd, kid, compressed_spki)["SharedSecret"]) == secret
    # Another peer, another secret.
    other, other_spki = peer(spec)
    second = base64.b64decode(derive(hsmd, kid, other_spki)["SharedSecret"])
    assert second != secret and second == other.exchange(ec.ECDH(), public_key(hsmd, kid))


def test_two_kms_keys_agree(hsmd, kms, keys):
    """Alice and Bob both keep their keys in hsmd: each derives with the other's public key."""
    bob = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    alice = keys["ECC_NIST_P384"]
    pub = {k: base64.b64decode(call_ok(hsmd, "GetPublicKey", {"KeyId": k})["PublicKey"])
           for k in (alice, bob)}
    a = derive(hsmd, alice, pub[bob])["SharedSecret"]
    b = derive(hsmd, bob, pub[alice])["SharedSecret"]
    assert a == b


def test_rotation_derives_with_the_new_primary(hsmd, kms):
    kid = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    priv, spki = peer("ECC_NIST_P256")
    before = base64.b64decode(derive(hsmd, kid, spki)["SharedSecret"])
    old_pub = public_key(hsmd, kid)
    call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": kid})
    new_pub = public_key(hsmd, kid)
    assert new_pub.public_numbers() != old_pub.public_numbers()
    after = base64.b64decode(derive(hsmd, kid, spki)["SharedSecret"])
    assert after == priv.exchange(ec.ECDH(), new_pub) and after != before


# ---- what the key says about itself -------------------------------------------------------

@pytest.mark.parametrize("spec", list(CURVES))
def test_describe_and_public_key_members(hsmd, keys, spec):
    kid = keys[spec]
    md = call_ok(hsmd, "DescribeKey", {"KeyId": kid})["KeyMetadata"]
    assert (md["KeyUsage"], md["KeySpec"], md["CustomerMasterKeySpec"]) == (
        "KEY_AGREEMENT", spec, spec)
    assert md["KeyAgreementAlgorithms"] == ["ECDH"]
    for other in ("SigningAlgorithms", "EncryptionAlgorithms", "MacAlgorithms"):
        assert other not in md, md
    pub = call_ok(hsmd, "GetPublicKey", {"KeyId": kid})
    assert (pub["KeyId"], pub["KeyUsage"], pub["KeySpec"]) == (key_arn(kid), "KEY_AGREEMENT", spec)
    assert pub["KeyAgreementAlgorithms"] == ["ECDH"]
    for other in ("SigningAlgorithms", "EncryptionAlgorithms", "MacAlgorithms"):
        assert other not in pub, pub
    key = serialization.load_der_public_key(base64.b64decode(pub["PublicKey"]))
    assert isinstance(key.curve, CURVES[spec][0])
    # Signing keys on the same curves say nothing of key agreement.
    sign = call_ok(hsmd, "CreateKey", {"KeySpec": spec, "KeyUsage": "SIGN_VERIFY"})["KeyMetadata"]
    assert "KeyAgreementAlgorithms" not in sign and sign["SigningAlgorithms"]


def test_create_key_usage_and_spec(kms):
    # KMS API reference, CreateKey KeyUsage: NIST curves only, not secp256k1.
    for spec in ("ECC_SECG_P256K1", "ECC_NIST_EDWARDS25519", "RSA_2048", "SYMMETRIC_DEFAULT",
                 "HMAC_256"):
        raises("ValidationException", kms.create_key, KeySpec=spec, KeyUsage="KEY_AGREEMENT",
               message="not compatible")
    raises("ValidationException", kms.create_key, KeyUsage="KEY_AGREEMENT")
    raises("ValidationException", kms.create_key, KeySpec="ECC_NIST_P256",
           KeyUsage="KEY_AGREEMENTS")


# ---- refusals ------------------------------------------------------------------------------

def test_peer_keys_that_are_refused(hsmd, keys):
    kid = keys["ECC_NIST_P256"]
    _, p384 = peer("ECC_NIST_P384")
    _, good = peer("ECC_NIST_P256")
    rsa_spki = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key() \
        .public_bytes(DER, SPKI)
    ed_spki = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(DER, SPKI)
    k1_spki = ec.generate_private_key(ec.SECP256K1()).public_key().public_bytes(DER, SPKI)
    off_curve = good[:-1] + bytes([good[-1] ^ 1])
    infinity = bytes.fromhex("3019301306072a8648ce3d020106082a8648ce3d03010703020000")
    # X9.62's hybrid form (06 or 07, the parity of y, then x and y): RFC 5480 2.2 forbids it.
    at = len(good) - 65
    hybrid = good[:at] + bytes([0x06 | (good[-1] & 1)]) + good[at + 1:]
    for spki, says in ((p384, "same curve"), (k1_spki, "same curve"), (hybrid, "hybrid"),
                       (rsa_spki, "not an elliptic curve key"),
                       (ed_spki, "not an elliptic curve key"), (off_curve, "valid point"),
                       (infinity, "valid point"), (b"not a public key", "SubjectPublicKeyInfo"),
                       (good + b"\x00", "trailing"), (good[:-1], None),
                       (good[-65:], "SubjectPublicKeyInfo")):
        out = call_error(hsmd, "DeriveSharedSecret", derive_body(kid, spki),
                         "ValidationException")
        if says is not None:
            assert says in out["message"], (says, out)
    call_error(hsmd, "DeriveSharedSecret", derive_body(kid, b"\x30" * 8193),
               "ValidationException")


def test_keys_that_do_not_agree(hsmd, kms):
    sign = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    _, spki = peer("ECC_NIST_P256")
    for kid in (sign, sym):
        out = call_error(hsmd, "DeriveSharedSecret", derive_body(kid, spki),
                         "InvalidKeyUsageException")
        assert "not KEY_AGREEMENT" in out["message"], out
    call_error(hsmd, "DeriveSharedSecret", derive_body("alias/no-such-key", spki),
               "NotFoundException")


def test_key_agreement_keys_do_nothing_else(hsmd, kms, keys):
    kid = keys["ECC_NIST_P256"]
    raises("InvalidKeyUsageException", kms.sign, KeyId=kid, Message=b"m",
           SigningAlgorithm="ECDSA_SHA_256")
    raises("InvalidKeyUsageException", kms.verify, KeyId=kid, Message=b"m", Signature=b"s",
           SigningAlgorithm="ECDSA_SHA_256")
    raises("InvalidKeyUsageException", kms.encrypt, KeyId=kid, Plaintext=b"x")
    raises("InvalidKeyUsageException", kms.generate_mac, KeyId=kid, Message=b"m",
           MacAlgorithm="HMAC_SHA_256")


def test_request_members(hsmd, keys):
    kid = keys["ECC_NIST_P256"]
    _, spki = peer("ECC_NIST_P256")
    body = derive_body(kid, spki)
    for missing in ("KeyId", "KeyAgreementAlgorithm", "PublicKey"):
        out = call_error(hsmd, "DeriveSharedSecret",
                         {k: v for k, v in body.items() if k != missing}, "ValidationException")
        assert "null" in out["message"], out
    for alg in ("ecdh", "ECDHE", "SM2DH", ""):
        call_error(hsmd, "DeriveSharedSecret", dict(body, KeyAgreementAlgorithm=alg),
                   "ValidationException")
    call_error(hsmd, "DeriveSharedSecret", dict(body, PublicKey="!!"), "SerializationException")
    call_error(hsmd, "DeriveSharedSecret", dict(body, PublicKey=""), "ValidationException")
    call_error(hsmd, "DeriveSharedSecret", dict(body, KeyAgreementAlgorithm=1),
               "SerializationException")
    # Recipient (a Nitro Enclaves / NitroTPM attestation document) is refused, not ignored:
    # the caller asked for the secret encrypted, not in the clear.
    recipient = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                 "AttestationDocument": b64(b"attestation")}
    out = call_error(hsmd, "DeriveSharedSecret", dict(body, Recipient=recipient),
                     "ValidationException")  # the operation declares no UnsupportedOperation
    assert "Recipient" in out["message"] and "SharedSecret" not in json.dumps(
        {k: v for k, v in out.items() if k != "message"})
    # A null member is an absent one, as everywhere in the JSON protocol.
    assert derive(hsmd, kid, spki) == call_ok(hsmd, "DeriveSharedSecret",
                                              dict(body, Recipient=None, GrantTokens=None))
    call_error(hsmd, "DeriveSharedSecret", dict(body, GrantTokens=["not a token"]),
               "InvalidGrantTokenException")


def test_key_states(hsmd, kms):
    kid = kms.create_key(KeySpec="ECC_NIST_P521", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    _, spki = peer("ECC_NIST_P521")
    kms.disable_key(KeyId=kid)
    call_error(hsmd, "DeriveSharedSecret", derive_body(kid, spki), "DisabledException")
    kms.enable_key(KeyId=kid)
    derive(hsmd, kid, spki)
    kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    call_error(hsmd, "DeriveSharedSecret", derive_body(kid, spki), "KMSInvalidStateException")


def test_dry_run(hsmd, kms, keys):
    kid = keys["ECC_NIST_P256"]
    _, spki = peer("ECC_NIST_P256")
    _, p384 = peer("ECC_NIST_P384")
    out = call_error(hsmd, "DeriveSharedSecret", derive_body(kid, spki, DryRun=True),
                     "DryRunOperationException", status=412)
    assert "SharedSecret" not in out
    # Everything else a real call checks is checked first, the public key included.
    call_error(hsmd, "DeriveSharedSecret", derive_body(kid, p384, DryRun=True),
               "ValidationException")
    sign = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    call_error(hsmd, "DeriveSharedSecret", derive_body(sign, spki, DryRun=True),
               "InvalidKeyUsageException")
    derive(hsmd, kid, spki)  # DryRun false: a real call


# ---- who may derive ------------------------------------------------------------------------

def policy(*statements):
    dev = {"Sid": "dev", "Effect": "Allow", "Principal": {"AWS": arn("dev")}, "Action": "kms:*",
           "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [dev, *statements]})


def agreement_statement(user, op, value, effect="Allow"):
    return {"Sid": "agree", "Effect": effect, "Principal": {"AWS": arn(user)},
            "Action": "kms:DeriveSharedSecret", "Resource": "*",
            "Condition": {op: {"kms:KeyAgreementAlgorithm": value}}}


@pytest.fixture(scope="module")
def agreer(hsmd):
    akid, secret = new_user(hsmd, "agreer", ["crypto-user"])
    return {"akid": akid, "secret": secret}


def test_key_policy_condition(hsmd, kms, agreer):
    _, spki = peer("ECC_NIST_P256")

    def key(*statements):
        return kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT",
                              Policy=policy(*statements))["KeyMetadata"]["KeyId"]

    allowed = key(agreement_statement("agreer", "StringEquals", "ECDH"))
    other_value = key(agreement_statement("agreer", "StringEquals", "SM2DH"))
    nothing = key()
    assert len(base64.b64decode(derive(hsmd, allowed, spki, **agreer)["SharedSecret"])) == 32
    for kid in (other_value, nothing):
        out = call_error(hsmd, "DeriveSharedSecret", derive_body(kid, spki),
                         "AccessDeniedException", **agreer)
        assert "kms:DeriveSharedSecret" in out["message"], out
    # An explicit Deny on the condition key beats the dev user's kms:*.
    denied = key(agreement_statement("dev", "StringEquals", "ECDH", effect="Deny"))
    out = call_error(hsmd, "DeriveSharedSecret", derive_body(denied, spki),
                     "AccessDeniedException")
    assert "explicit deny" in out["message"], out
    call_ok(hsmd, "GetPublicKey", {"KeyId": denied})  # the Deny is about deriving only


def test_roles(hsmd, kms, keys):
    _, spki = peer("ECC_NIST_P256")
    auditor = new_user(hsmd, "agree-auditor", ["auditor"])
    officer = new_user(hsmd, "agree-officer", ["crypto-officer"])
    for akid, secret in (auditor, officer):
        call_error(hsmd, "DeriveSharedSecret", derive_body(keys["ECC_NIST_P256"], spki),
                   "AccessDeniedException", akid=akid, secret=secret)


def test_a_grant_allows_deriving(hsmd, kms, agreer):
    kid = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="KEY_AGREEMENT",
                         Policy=policy())["KeyMetadata"]["KeyId"]
    priv, spki = peer("ECC_NIST_P384")
    call_error(hsmd, "DeriveSharedSecret", derive_body(kid, spki), "AccessDeniedException",
               **agreer)
    g = kms.create_grant(KeyId=kid, GranteePrincipal=arn("agreer"),
                         Operations=["DeriveSharedSecret"])
    out = derive(hsmd, kid, spki, **agreer)
    assert base64.b64decode(out["SharedSecret"]) == priv.exchange(ec.ECDH(),
                                                                  public_key(hsmd, kid))
    # With the grant's token too; and only what was granted.
    assert call_ok(hsmd, "DeriveSharedSecret",
                   derive_body(kid, spki, GrantTokens=[g["GrantToken"]]), **agreer) == out
    call_error(hsmd, "GetPublicKey", {"KeyId": kid}, "AccessDeniedException", **agreer)
    grants = kms.list_grants(KeyId=kid)["Grants"]
    assert [x["Operations"] for x in grants] == [["DeriveSharedSecret"]]
    # Operations must suit the key: no Sign on a key agreement key, no DeriveSharedSecret
    # on a signing key.
    call_error(hsmd, "CreateGrant", {"KeyId": kid, "GranteePrincipal": arn("agreer"),
                                     "Operations": ["Sign"]}, "ValidationException")
    sign = kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    call_error(hsmd, "CreateGrant", {"KeyId": sign, "GranteePrincipal": arn("agreer"),
                                     "Operations": ["DeriveSharedSecret"]}, "ValidationException")
    kms.create_grant(KeyId=kid, GranteePrincipal=arn("agreer"), Operations=["GetPublicKey"])
    call_ok(hsmd, "GetPublicKey", {"KeyId": kid}, **agreer)
    kms.revoke_grant(KeyId=kid, GrantId=g["GrantId"])
    call_error(hsmd, "DeriveSharedSecret", derive_body(kid, spki), "AccessDeniedException",
               **agreer)


# ---- audit trail, logs, metrics ------------------------------------------------------------

def forms(secret):
    """The ways a secret could show in text: raw, hex, base64."""
    return {secret, secret.hex().encode(), base64.b64encode(secret)}


def test_audited_without_the_secret():
    server = start_dev()
    try:
        kms = client(server)
        kid = kms.create_key(KeySpec="ECC_NIST_P256",
                             KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
        _, spki = peer("ECC_NIST_P256")
        r = signed_request(server, "TrentService.DeriveSharedSecret", derive_body(kid, spki))
        assert r.status_code == 200, r.text
        secret = base64.b64decode(parsed_body(r)["SharedSecret"])
        rec = audit_record(server.data_dir, request_id(r))
        assert (rec["op"], rec["outcome"], rec["key_id"], rec["key_version"]) == (
            "DeriveSharedSecret", "success", kid, 1)
        assert rec["extra"]["algorithm"] == "ECDH"
        assert rec["principal"] == arn("dev")
        # A refusal is recorded with its error and the key asked for.
        _, p384 = peer("ECC_NIST_P384")
        bad = signed_request(server, "TrentService.DeriveSharedSecret", derive_body(kid, p384))
        assert bad.status_code == 400
        rec = audit_record(server.data_dir, request_id(bad))
        assert (rec["op"], rec["outcome"], rec["error"], rec["key_id"]) == (
            "DeriveSharedSecret", "error", "ValidationException", kid)
        status, metrics, _ = server.get("/metrics")
        assert status == 200 and b'operation="DeriveSharedSecret"' in metrics
        server.stop()  # everything written out: the log, the audit trail, the store
        texts = []
        for path in [server.log_path, *glob.glob(os.path.join(server.data_dir, "audit", "*"))]:
            with open(path, "rb") as f:
                texts.append(f.read())
        for path in glob.glob(os.path.join(server.data_dir, "hsmd.db*")):
            with open(path, "rb") as f:
                texts.append(f.read())
        for form in forms(secret):
            assert not any(form in t for t in texts), form
    finally:
        server.cleanup()


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="reading a non-dumpable process's memory needs root")
def test_secret_does_not_linger_in_memory():
    from test_memory import assert_no_traces
    server = start_dev()
    try:
        kms = client(server)
        canaries = {}
        for spec in CURVES:
            kid = kms.create_key(KeySpec=spec, KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
            _, spki = peer(spec)
            secret = base64.b64decode(derive(server, kid, spki)["SharedSecret"])
            canaries[f"{spec} secret"] = secret
            canaries[f"{spec} secret (base64)"] = base64.b64encode(secret)
        assert_no_traces(server, canaries)
    finally:
        server.cleanup()
