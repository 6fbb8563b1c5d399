"""Key rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
RotateKeyOnDemand and ListKeyRotations.

boto3 1.26 knows neither RotateKeyOnDemand, ListKeyRotations nor
RotationPeriodInDays, so those go through signed_call() (botocore's own SigV4
signer).  hsmd rotates every key type and allows periods of 1-2560 days
(src/kms/rotation.c); KMS rotates only symmetric keys, with 90-2560 days.
"""
import re
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from helpers import call_error, call_ok, key_arn, raises

DAY = 86400


def new_key(kms, **kw):
    return kms.create_key(**kw)["KeyMetadata"]["KeyId"]


def status(hsmd, kid):
    return call_ok(hsmd, "GetKeyRotationStatus", {"KeyId": kid})


def rotate(hsmd, kid):
    out = call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": kid})
    assert out["KeyId"] == key_arn(kid)


def blob_version(blob):
    return int.from_bytes(blob[17:21], "big")


def test_enable_disable_status(kms, hsmd):
    kid = new_key(kms)
    assert kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is False
    s = status(hsmd, kid)
    assert s["KeyRotationEnabled"] is False and s["KeyId"] == key_arn(kid)
    assert "RotationPeriodInDays" not in s and "NextRotationDate" not in s
    t0 = time.time()
    kms.enable_key_rotation(KeyId=kid)
    s = status(hsmd, kid)
    assert s["KeyRotationEnabled"] is True and s["RotationPeriodInDays"] == 90
    assert abs(s["NextRotationDate"] - (t0 + 90 * DAY)) < 120
    assert kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is True
    kms.disable_key_rotation(KeyId=kid)
    s = status(hsmd, kid)
    assert s["KeyRotationEnabled"] is False and "NextRotationDate" not in s


@pytest.mark.parametrize("days", [1, 90, 365, 2560])
def test_rotation_period(kms, hsmd, days):
    kid = new_key(kms)
    t0 = time.time()
    call_ok(hsmd, "EnableKeyRotation", {"KeyId": kid, "RotationPeriodInDays": days})
    s = status(hsmd, kid)
    assert (s["KeyRotationEnabled"], s["RotationPeriodInDays"]) == (True, days)
    assert abs(s["NextRotationDate"] - (t0 + days * DAY)) < 120


@pytest.mark.parametrize("days", [0, -1, 2561, 100000])
def test_rotation_period_out_of_range(kms, hsmd, days):
    kid = new_key(kms)
    call_error(hsmd, "EnableKeyRotation", {"KeyId": kid, "RotationPeriodInDays": days},
               "ValidationException")
    assert status(hsmd, kid)["KeyRotationEnabled"] is False
    call_error(hsmd, "EnableKeyRotation", {"KeyId": kid, "RotationPeriodInDays": "30"},
               "SerializationException")


def test_rotate_on_demand_symmetric(kms, hsmd):
    kid = new_key(kms)
    old = kms.encrypt(KeyId=kid, Plaintext=b"v1", EncryptionContext={"c": "1"})["CiphertextBlob"]
    assert blob_version(old) == 1
    call_ok(hsmd, "EnableKeyRotation", {"KeyId": kid, "RotationPeriodInDays": 30})
    before = status(hsmd, kid)["NextRotationDate"]
    time.sleep(1.1)
    rotate(hsmd, kid)
    # As in KMS, an on-demand rotation leaves the automatic schedule as it was.
    assert status(hsmd, kid)["NextRotationDate"] == before
    new = kms.encrypt(KeyId=kid, Plaintext=b"v2")["CiphertextBlob"]
    assert blob_version(new) == 2
    assert kms.decrypt(CiphertextBlob=old, EncryptionContext={"c": "1"})["Plaintext"] == b"v1"
    assert kms.decrypt(CiphertextBlob=new)["Plaintext"] == b"v2"
    # Data keys and ReEncrypt move old ciphertexts to the new version.
    dk = kms.generate_data_key(KeyId=kid, NumberOfBytes=16)
    assert blob_version(dk["CiphertextBlob"]) == 2
    re = kms.re_encrypt(CiphertextBlob=old, SourceEncryptionContext={"c": "1"},
                        DestinationKeyId=kid)["CiphertextBlob"]
    assert blob_version(re) == 2
    # A blob naming a version the key does not have yet is invalid.
    future = old[:17] + (3).to_bytes(4, "big") + old[21:]
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=future,
           EncryptionContext={"c": "1"})
    # The key's id, metadata and rotation setting are unchanged.
    m = kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert (m["KeyId"], m["KeyState"]) == (kid, "Enabled")
    assert status(hsmd, kid)["RotationPeriodInDays"] == 30


def test_list_key_rotations_pagination(kms, hsmd):
    kid = new_key(kms)
    assert call_ok(hsmd, "ListKeyRotations", {"KeyId": kid}) == {"Rotations": [],
                                                                  "Truncated": False}
    t0 = time.time()
    for _ in range(4):
        rotate(hsmd, kid)
    full = call_ok(hsmd, "ListKeyRotations", {"KeyId": kid})
    assert full["Truncated"] is False and "NextMarker" not in full
    assert len(full["Rotations"]) == 4
    for r in full["Rotations"]:
        assert r["KeyId"] == key_arn(kid) and r["RotationType"] == "ON_DEMAND"
        assert abs(r["RotationDate"] - t0) < 120
    dates = [r["RotationDate"] for r in full["Rotations"]]
    assert dates == sorted(dates)
    # Each material has its id; the last is current, and DescribeKey names it.
    ids = [r["KeyMaterialId"] for r in full["Rotations"]]
    assert len(set(ids)) == 4 and all(re.fullmatch(r"[0-9a-f]{64}", i) for i in ids)
    assert [r["KeyMaterialState"] for r in full["Rotations"]] == ["NON_CURRENT"] * 3 + ["CURRENT"]
    md = call_ok(hsmd, "DescribeKey", {"KeyId": kid})["KeyMetadata"]
    assert md["CurrentKeyMaterialId"] == ids[-1]
    # ALL_KEY_MATERIAL adds the first material, which no rotation made.
    every = call_ok(hsmd, "ListKeyRotations",
                    {"KeyId": kid, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"})
    assert every["Rotations"][1:] == full["Rotations"]
    first = every["Rotations"][0]
    assert first["KeyMaterialState"] == "NON_CURRENT" and first["KeyMaterialId"] not in ids
    assert "RotationDate" not in first and "ImportState" not in first
    assert call_ok(hsmd, "ListKeyRotations",
                   {"KeyId": kid, "IncludeKeyMaterial": "ROTATIONS_ONLY"}) == full
    for limit in (1, 3):
        got, marker = [], None
        while True:
            body = {"KeyId": kid, "Limit": limit}
            if marker:
                body["Marker"] = marker
            page = call_ok(hsmd, "ListKeyRotations", body)
            assert 1 <= len(page["Rotations"]) <= limit
            got += page["Rotations"]
            if not page["Truncated"]:
                assert "NextMarker" not in page
                break
            marker = page["NextMarker"]
        assert got == full["Rotations"]
    call_error(hsmd, "ListKeyRotations", {"KeyId": kid, "Marker": "not-a-marker"},
               "InvalidMarkerException")
    call_error(hsmd, "ListKeyRotations", {"KeyId": kid, "Limit": 0}, "ValidationException")
    call_error(hsmd, "ListKeyRotations", {"KeyId": kid, "Limit": 1001}, "ValidationException")
    # By alias too.
    kms.create_alias(AliasName="alias/rotations", TargetKeyId=kid)
    assert call_ok(hsmd, "ListKeyRotations", {"KeyId": "alias/rotations"}) == full


def test_on_demand_rotations_are_limited(kms, hsmd):
    """25 on-demand rotations a key, as AWS KMS's quota; the 26th changes nothing."""
    kid = new_key(kms)
    for _ in range(25):
        rotate(hsmd, kid)
    before = call_ok(hsmd, "DescribeKey", {"KeyId": kid})["KeyMetadata"]["CurrentKeyMaterialId"]
    err = call_error(hsmd, "RotateKeyOnDemand", {"KeyId": kid}, "LimitExceededException")
    assert "rotated on demand 25 times" in err["message"], err
    after = call_ok(hsmd, "DescribeKey", {"KeyId": kid})["KeyMetadata"]["CurrentKeyMaterialId"]
    assert after == before
    assert len(call_ok(hsmd, "ListKeyRotations", {"KeyId": kid, "Limit": 100})["Rotations"]) == 25
    assert blob_version(kms.encrypt(KeyId=kid, Plaintext=b"x")["CiphertextBlob"]) == 26
    # Another key is not affected.
    rotate(hsmd, new_key(kms))


def test_asymmetric_signing_key_rotation(kms, hsmd):
    kid = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    pub1 = kms.get_public_key(KeyId=kid)["PublicKey"]
    sig1 = kms.sign(KeyId=kid, Message=b"before", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    call_ok(hsmd, "EnableKeyRotation", {"KeyId": kid, "RotationPeriodInDays": 7})
    rotate(hsmd, kid)
    pub2 = kms.get_public_key(KeyId=kid)["PublicKey"]
    assert pub2 != pub1
    # Old signatures still verify in hsmd; new ones are made with the new key.
    assert kms.verify(KeyId=kid, Message=b"before", Signature=sig1,
                      SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]
    sig2 = kms.sign(KeyId=kid, Message=b"after", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert kms.verify(KeyId=kid, Message=b"after", Signature=sig2,
                      SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]
    serialization.load_der_public_key(pub2).verify(sig2, b"after", ec.ECDSA(hashes.SHA256()))
    serialization.load_der_public_key(pub1).verify(sig1, b"before", ec.ECDSA(hashes.SHA256()))
    raises("KMSInvalidSignatureException", kms.verify, KeyId=kid, Message=b"after",
           Signature=sig1, SigningAlgorithm="ECDSA_SHA_256")


def test_rsa_encryption_key_rotation(kms, hsmd):
    kid = new_key(kms, KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")
    alg = "RSAES_OAEP_SHA_256"
    old = kms.encrypt(KeyId=kid, Plaintext=b"old", EncryptionAlgorithm=alg)["CiphertextBlob"]
    rotate(hsmd, kid)
    new = kms.encrypt(KeyId=kid, Plaintext=b"new", EncryptionAlgorithm=alg)["CiphertextBlob"]
    for ct, pt in ((old, b"old"), (new, b"new")):
        assert kms.decrypt(CiphertextBlob=ct, KeyId=kid, EncryptionAlgorithm=alg)[
            "Plaintext"] == pt


def test_hmac_key_rotation(kms, hsmd):
    kid = new_key(kms, KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")
    mac1 = kms.generate_mac(KeyId=kid, Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"]
    rotate(hsmd, kid)
    mac2 = kms.generate_mac(KeyId=kid, Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"]
    assert mac1 != mac2
    for mac in (mac1, mac2):
        assert kms.verify_mac(KeyId=kid, Message=b"m", Mac=mac, MacAlgorithm="HMAC_SHA_384")[
            "MacValid"]


def test_rotation_of_disabled_and_pending_keys(kms, hsmd):
    kid = new_key(kms)
    kms.disable_key(KeyId=kid)
    raises("DisabledException", kms.enable_key_rotation, KeyId=kid, status=400)
    raises("DisabledException", kms.disable_key_rotation, KeyId=kid)
    call_error(hsmd, "RotateKeyOnDemand", {"KeyId": kid}, "DisabledException")
    call_error(hsmd, "EnableKeyRotation", {"KeyId": kid, "RotationPeriodInDays": 30},
               "DisabledException")
    # Reading the status and the history is fine.
    assert status(hsmd, kid)["KeyRotationEnabled"] is False
    call_ok(hsmd, "ListKeyRotations", {"KeyId": kid})
    kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    call_error(hsmd, "RotateKeyOnDemand", {"KeyId": kid}, "KMSInvalidStateException")
    raises("KMSInvalidStateException", kms.enable_key_rotation, KeyId=kid)


def test_rotation_of_unknown_keys(kms, hsmd):
    ghost = "11111111-2222-3333-4444-555555555555"
    call_error(hsmd, "RotateKeyOnDemand", {"KeyId": ghost}, "NotFoundException")
    call_error(hsmd, "ListKeyRotations", {"KeyId": ghost}, "NotFoundException")
    call_error(hsmd, "RotateKeyOnDemand", {}, "ValidationException")
    raises("NotFoundException", kms.get_key_rotation_status, KeyId=ghost)
