"""DryRun: every operation AWS KMS gives the member (and hsmd's own SignToken, GcmEncrypt and
GcmDecrypt) makes all of its checks, then answers DryRunOperationException and does nothing.

A request that would fail fails with its own error under DryRun too: key usage and algorithm
are checked, a ciphertext is opened (unless DryRunModifiers says IGNORE_CIPHERTEXT), and the
grant operations change no grant.  Requests go out signed by botocore's own SigV4 signer, as
Debian's boto3 1.26 predates DryRun on several operations.
"""
import base64
import os

import pytest

from conftest import signed_call, signed_request
from helpers import ACCOUNT, audit_record, b64, call_error, call_ok, request_id

DRY = ("DryRunOperationException", 412)


@pytest.fixture(scope="module")
def keys(kms, hsmd):
    def key(**kw):
        return kms.create_key(**kw)["KeyMetadata"]["KeyId"]
    k = {"sym": key(), "sym2": key(),
         "rsa": key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT"),
         "sign": key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY"),
         "rsa-sign": key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"),
         "hmac": key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"),
         "ecdh": key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")}
    st, out = signed_call(hsmd, "HsmdJwt.EnableJwtSigning", {"KeyId": k["rsa-sign"]})
    assert st == 200, out
    return k


def dry(hsmd, op, body, target="TrentService"):
    """The request under DryRun: DryRunOperationException, with nothing but the error."""
    r = signed_request(hsmd, f"{target}.{op}", dict(body, DryRun=True))
    out = r.json()
    assert (out.get("__type"), r.status_code) == DRY, (op, r.status_code, out)
    assert set(out) <= {"__type", "message"}, out
    return r


def test_every_operation_that_takes_dry_run_stops_before_acting(hsmd, kms, keys):
    sym, rsa, sign, hmac = keys["sym"], keys["rsa"], keys["sign"], keys["hmac"]
    blob = call_ok(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"abc")})["CiphertextBlob"]
    rsa_ct = call_ok(hsmd, "Encrypt", {"KeyId": rsa, "Plaintext": b64(b"abc"),
                                       "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
    sig = call_ok(hsmd, "Sign", {"KeyId": sign, "Message": b64(b"m"),
                                 "SigningAlgorithm": "ECDSA_SHA_256"})["Signature"]
    mac = call_ok(hsmd, "GenerateMac", {"KeyId": hmac, "Message": b64(b"m"),
                                        "MacAlgorithm": "HMAC_SHA_256"})["Mac"]
    peer = kms.get_public_key(KeyId=keys["ecdh"])["PublicKey"]
    gcm = signed_call(hsmd, "HsmdCipher.GcmEncrypt", {"KeyId": sym, "Plaintext": b64(b"g")})[1]
    cases = [
        ("Encrypt", {"KeyId": sym, "Plaintext": b64(b"abc")}),
        ("Decrypt", {"CiphertextBlob": blob}),
        ("Decrypt", {"CiphertextBlob": rsa_ct["CiphertextBlob"], "KeyId": rsa,
                     "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
        ("ReEncrypt", {"CiphertextBlob": blob, "DestinationKeyId": keys["sym2"]}),
        ("GenerateDataKey", {"KeyId": sym, "KeySpec": "AES_256"}),
        ("GenerateDataKeyWithoutPlaintext", {"KeyId": sym, "NumberOfBytes": 16}),
        ("GenerateDataKeyPair", {"KeyId": sym, "KeyPairSpec": "ECC_NIST_P256"}),
        ("GenerateDataKeyPairWithoutPlaintext", {"KeyId": sym, "KeyPairSpec": "RSA_2048"}),
        ("Sign", {"KeyId": sign, "Message": b64(b"m"), "SigningAlgorithm": "ECDSA_SHA_256"}),
        ("Verify", {"KeyId": sign, "Message": b64(b"m"), "Signature": sig,
                    "SigningAlgorithm": "ECDSA_SHA_256"}),
        ("GenerateMac", {"KeyId": hmac, "Message": b64(b"m"), "MacAlgorithm": "HMAC_SHA_256"}),
        ("VerifyMac", {"KeyId": hmac, "Message": b64(b"m"), "Mac": mac,
                       "MacAlgorithm": "HMAC_SHA_256"}),
        ("DeriveSharedSecret", {"KeyId": keys["ecdh"], "KeyAgreementAlgorithm": "ECDH",
                                "PublicKey": b64(peer)}),
    ]
    for op, body in cases:
        r = dry(hsmd, op, body)
        rec = audit_record(hsmd.data_dir, request_id(r))
        assert (rec["op"], rec["outcome"], rec["error"]) == (
            op, "error", "DryRunOperationException"), rec
    dry(hsmd, "SignToken", {"KeyId": keys["rsa-sign"], "Claims": {"sub": "x"}}, "HsmdJwt")
    dry(hsmd, "GcmEncrypt", {"KeyId": sym, "Plaintext": b64(b"g")}, "HsmdCipher")
    dry(hsmd, "GcmDecrypt", {"KeyId": sym, "Ciphertext": gcm["Ciphertext"], "Iv": gcm["Iv"]},
        "HsmdCipher")
    # GetPublicKey has no DryRun in AWS KMS: the member changes nothing there.
    out = call_ok(hsmd, "GetPublicKey", {"KeyId": sign, "DryRun": True})
    assert base64.b64decode(out["PublicKey"]) == kms.get_public_key(KeyId=sign)["PublicKey"]


def test_dry_run_reports_what_would_fail(hsmd, keys):
    sym, sign, hmac = keys["sym"], keys["sign"], keys["hmac"]
    msg = b64(b"m")
    for op, body, code in [
            ("Encrypt", {"KeyId": sign, "Plaintext": msg}, "InvalidKeyUsageException"),
            ("Encrypt", {"KeyId": keys["rsa"], "Plaintext": b64(bytes(300)),
                         "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}, "ValidationException"),
            ("Sign", {"KeyId": sym, "Message": msg, "SigningAlgorithm": "ECDSA_SHA_256"},
             "InvalidKeyUsageException"),
            ("Sign", {"KeyId": sign, "Message": msg, "SigningAlgorithm": "RSASSA_PSS_SHA_256"},
             "InvalidKeyUsageException"),
            ("Verify", {"KeyId": sym, "Message": msg, "Signature": msg,
                        "SigningAlgorithm": "ECDSA_SHA_256"}, "InvalidKeyUsageException"),
            ("GenerateMac", {"KeyId": hmac, "Message": msg, "MacAlgorithm": "HMAC_SHA_512"},
             "InvalidKeyUsageException"),
            ("VerifyMac", {"KeyId": sym, "Message": msg, "Mac": msg,
                           "MacAlgorithm": "HMAC_SHA_256"}, "InvalidKeyUsageException"),
            ("GenerateDataKey", {"KeyId": sign, "KeySpec": "AES_256"},
             "InvalidKeyUsageException"),
            ("GenerateDataKey", {"KeyId": sym, "KeySpec": "AES_256",
                                 "EncryptionContext": {"": "v"}}, "ValidationException"),
            ("Decrypt", {"CiphertextBlob": b64(os.urandom(80))}, "InvalidCiphertextException"),
            ("ReEncrypt", {"CiphertextBlob": call_ok(hsmd, "Encrypt", {
                "KeyId": sym, "Plaintext": msg})["CiphertextBlob"], "DestinationKeyId": hmac},
             "InvalidKeyUsageException")]:
        call_error(hsmd, op, dict(body, DryRun=True), code)
    # A tampered ciphertext: the tag is checked under DryRun too.
    blob = bytearray(base64.b64decode(call_ok(hsmd, "Encrypt", {
        "KeyId": sym, "Plaintext": msg})["CiphertextBlob"]))
    blob[-1] ^= 1
    call_error(hsmd, "Decrypt", {"CiphertextBlob": b64(bytes(blob)), "DryRun": True},
               "InvalidCiphertextException")
    # GcmDecrypt opens its ciphertext under DryRun too: a wrong tag, IV or additional
    # data fails as it would without it, and only a genuine one gets the dry run's answer.
    g = signed_call(hsmd, "HsmdCipher.GcmEncrypt", {"KeyId": sym, "Plaintext": msg,
                                                    "AdditionalData": b64(b"aad")})[1]
    ct = bytearray(base64.b64decode(g["Ciphertext"]))
    ct[-1] ^= 1
    iv = bytearray(base64.b64decode(g["Iv"]))
    iv[0] ^= 1
    good = {"KeyId": sym, "Ciphertext": g["Ciphertext"], "Iv": g["Iv"],
            "AdditionalData": b64(b"aad"), "DryRun": True}
    for bad in ({"Ciphertext": b64(bytes(ct))}, {"Iv": b64(bytes(iv))},
                {"AdditionalData": b64(b"aae")}, {"Ciphertext": b64(bytes(32))}):
        r = signed_request(hsmd, "HsmdCipher.GcmDecrypt", dict(good, **bad))
        assert (r.status_code, r.json()["__type"]) == (400, "InvalidCiphertextException"), bad
        rec = audit_record(hsmd.data_dir, request_id(r))
        assert (rec["op"], rec["outcome"], rec["error"]) == \
            ("GcmDecrypt", "error", "InvalidCiphertextException")
    dry(hsmd, "GcmDecrypt", {k: v for k, v in good.items() if k != "DryRun"}, "HsmdCipher")


def test_ignore_ciphertext_checks_permissions_and_key_only(hsmd, keys):
    sym, rsa = keys["sym"], keys["rsa"]
    junk = b64(os.urandom(80))
    ignore = {"DryRun": True, "DryRunModifiers": ["IGNORE_CIPHERTEXT"]}
    dry(hsmd, "Decrypt", {"CiphertextBlob": junk, "KeyId": sym,
                          "DryRunModifiers": ["IGNORE_CIPHERTEXT"]})
    dry(hsmd, "Decrypt", {"CiphertextBlob": junk, "KeyId": rsa,
                          "EncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                          "DryRunModifiers": ["IGNORE_CIPHERTEXT"]})
    dry(hsmd, "ReEncrypt", {"CiphertextBlob": junk, "SourceKeyId": sym,
                            "DestinationKeyId": keys["sym2"],
                            "DryRunModifiers": ["IGNORE_CIPHERTEXT"]})
    # The key's checks still run: usage, algorithm, the destination key's usage.
    call_error(hsmd, "Decrypt", dict(ignore, CiphertextBlob=junk, KeyId=keys["sign"]),
               "InvalidKeyUsageException")
    call_error(hsmd, "ReEncrypt", dict(ignore, CiphertextBlob=junk, SourceKeyId=sym,
                                       DestinationKeyId=keys["hmac"]),
               "InvalidKeyUsageException")
    call_error(hsmd, "Decrypt", dict(ignore, CiphertextBlob=junk, KeyId="alias/dry-none"),
               "NotFoundException")
    # Without the modifier the ciphertext is opened, and refused.
    call_error(hsmd, "Decrypt", {"CiphertextBlob": junk, "KeyId": sym, "DryRun": True},
               "InvalidCiphertextException")
    # Without DryRun the modifier changes nothing: the ciphertext is read.
    call_error(hsmd, "Decrypt", {"CiphertextBlob": junk, "KeyId": sym,
                                 "DryRunModifiers": ["IGNORE_CIPHERTEXT"]},
               "InvalidCiphertextException")
    for bad in (["IGNORE_EVERYTHING"], "IGNORE_CIPHERTEXT", [7]):
        call_error(hsmd, "Decrypt", dict(ignore, CiphertextBlob=junk, KeyId=sym,
                                         DryRunModifiers=bad),
                   "ValidationException" if bad == ["IGNORE_EVERYTHING"] else
                   "SerializationException")


def test_ignore_ciphertext_needs_no_ciphertext(hsmd, keys):
    """KMS: CiphertextBlob is "required in all cases except when DryRun is true and
    DryRunModifiers is set to IGNORE_CIPHERTEXT": permissions are tested without one,
    on the key the request names."""
    sym, rsa = keys["sym"], keys["rsa"]
    mods = {"DryRunModifiers": ["IGNORE_CIPHERTEXT"]}
    dry(hsmd, "Decrypt", dict(mods, KeyId=sym))
    dry(hsmd, "Decrypt", dict(mods, KeyId=rsa, EncryptionAlgorithm="RSAES_OAEP_SHA_256"))
    dry(hsmd, "ReEncrypt", dict(mods, SourceKeyId=sym, DestinationKeyId=keys["sym2"]))
    call_error(hsmd, "Decrypt", dict(mods, KeyId=keys["sign"], DryRun=True),
               "InvalidKeyUsageException")
    # Without a key to test, without DryRun, or without the modifier: the ciphertext is needed.
    ignore = dict(mods, DryRun=True)
    call_error(hsmd, "Decrypt", ignore, "ValidationException")
    call_error(hsmd, "ReEncrypt", dict(ignore, DestinationKeyId=sym), "ValidationException")
    for body in (dict(mods, KeyId=sym), {"KeyId": sym, "DryRun": True}):
        r = call_error(hsmd, "Decrypt", body, "ValidationException")
        assert "Value null at 'ciphertextBlob'" in str(r), r


def test_ignore_ciphertext_still_checks_the_encryption_context(hsmd, keys):
    """Only what depends on the ciphertext is left unchecked: a context the real call refuses
    (too long, or given to an RSA destination, which binds none) is refused under
    IGNORE_CIPHERTEXT with the real call's error, not answered as a dry run that would pass."""
    sym, sym2, rsa = keys["sym"], keys["sym2"], keys["rsa"]
    blob = call_ok(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"abc")})["CiphertextBlob"]
    big = {"k": "v" * 9000}
    to_rsa = {"SourceKeyId": sym, "DestinationKeyId": rsa,
              "DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
              "DestinationEncryptionContext": {"a": "b"}}
    cases = [
        ("ReEncrypt", to_rsa, "not supported with asymmetric KMS keys"),
        ("ReEncrypt", {"SourceKeyId": sym, "DestinationKeyId": sym2,
                       "DestinationEncryptionContext": big}, "at most 8192 bytes"),
        ("Decrypt", {"KeyId": sym, "EncryptionContext": big}, "at most 8192 bytes"),
        ("Decrypt", {"KeyId": sym, "EncryptionContext": {"": "x"}}, "must not be empty"),
    ]
    for op, body, why in cases:
        real = call_error(hsmd, op, dict(body, CiphertextBlob=blob), "ValidationException")
        assert why in real["message"], real
        ignored = call_error(hsmd, op, dict(body, DryRun=True,
                                            DryRunModifiers=["IGNORE_CIPHERTEXT"]),
                             "ValidationException")
        assert ignored["message"] == real["message"], (op, ignored, real)
    # A context that fits is still a dry run that would pass.
    dry(hsmd, "ReEncrypt", {"SourceKeyId": sym, "DestinationKeyId": sym2,
                            "DestinationEncryptionContext": {"a": "b"},
                            "DryRunModifiers": ["IGNORE_CIPHERTEXT"]})
    dry(hsmd, "Decrypt", {"KeyId": sym, "EncryptionContext": {"a": "b"},
                          "DryRunModifiers": ["IGNORE_CIPHERTEXT"]})


def test_grant_operations_under_dry_run_change_no_grant(hsmd, kms, keys):
    sym, me = keys["sym"], f"arn:aws:iam::{ACCOUNT}:user/dev"

    def grants():
        return sorted(g["GrantId"] for g in kms.list_grants(KeyId=sym)["Grants"])
    before = grants()
    body = {"KeyId": sym, "GranteePrincipal": me, "RetiringPrincipal": me,
            "Operations": ["Encrypt"]}
    dry(hsmd, "CreateGrant", body)
    assert grants() == before
    # What CreateGrant would refuse, it refuses under DryRun.
    call_error(hsmd, "CreateGrant", dict(body, Operations=["Sign"], DryRun=True),
               "ValidationException")
    made = call_ok(hsmd, "CreateGrant", body)
    after = grants()
    assert after == sorted(before + [made["GrantId"]])
    dry(hsmd, "RevokeGrant", {"KeyId": sym, "GrantId": made["GrantId"]})
    dry(hsmd, "RetireGrant", {"GrantToken": made["GrantToken"]})
    dry(hsmd, "RetireGrant", {"KeyId": sym, "GrantId": made["GrantId"]})
    assert grants() == after
    call_error(hsmd, "RevokeGrant", {"KeyId": sym, "GrantId": "0" * 64, "DryRun": True},
               "NotFoundException")
    call_ok(hsmd, "RevokeGrant", {"KeyId": sym, "GrantId": made["GrantId"]})
    assert grants() == before
