"""Imported key material (BYOK): Origin EXTERNAL, GetParametersForImport,
ImportKeyMaterial, DeleteImportedKeyMaterial and expiry, through boto3 and
aws-cli.

The material is made and wrapped with python3-cryptography, as an importer
would: RSAES-OAEP under the wrapping public key for symmetric keys, and
OAEP of a fresh AES key followed by AES-KWP (RFC 5649) of the PKCS#8 private
key for asymmetric ones.  Debian's boto3 1.26 knows these operations but
only the older names of the wrapping algorithms and specs in its model; it
sends the newer ones (RSA_AES_KEY_WRAP_SHA_256, RSA_4096) as given.
"""
import base64
import datetime
import json
import os
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from conftest import client, start_dev
from helpers import (ACCOUNT, IDENTITY, AwsCli, audit_record, audit_records, audit_records_until,
                     key_arn, new_user, raises, request_id, restart_dev, signed_request)

DER = serialization.Encoding.DER


def external_key(kms, **kw):
    md = kms.create_key(Origin="EXTERNAL", Description="imported", **kw)["KeyMetadata"]
    assert (md["Origin"], md["KeyState"], md["Enabled"]) == ("EXTERNAL", "PendingImport", False)
    assert "ExpirationModel" not in md and "ValidTo" not in md
    return md["KeyId"]


def oaep(h):
    return padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)


def wrap(params, material, alg):
    """EncryptedKeyMaterial for `material` under GetParametersForImport's public key."""
    pub = serialization.load_der_public_key(params["PublicKey"])
    h = hashes.SHA256() if alg.endswith("SHA_256") else hashes.SHA1()
    if alg.startswith("RSAES_OAEP"):
        return pub.encrypt(material, oaep(h))
    aes = os.urandom(32)
    return pub.encrypt(aes, oaep(h)) + aes_key_wrap_with_padding(aes, material)


def do_import(kms, key, material, alg="RSAES_OAEP_SHA_256", spec="RSA_2048", **kw):
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm=alg,
                                           WrappingKeySpec=spec)
    if not kw:
        kw = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap(params, material, alg), **kw)
    return params


def state(kms, key):
    return kms.describe_key(KeyId=key)["KeyMetadata"]


def test_symmetric_import_round_trip(hsmd, kms):
    key = external_key(kms)
    raises("KMSInvalidStateException", kms.encrypt, KeyId=key, Plaintext=b"x",
           message="pending import")
    material = os.urandom(32)
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    assert params["KeyId"] == key_arn(key)
    pub = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048
    left = params["ParametersValidTo"].timestamp() - time.time()
    assert 86400 - 60 < left <= 86400 + 5
    kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap(params, material, "RSAES_OAEP_SHA_256"),
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    md = state(kms, key)
    assert (md["KeyState"], md["Enabled"], md["Origin"]) == ("Enabled", True, "EXTERNAL")
    assert md["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in md
    blob = kms.encrypt(KeyId=key, Plaintext=b"imported", EncryptionContext={"a": "b"})
    assert kms.decrypt(CiphertextBlob=blob["CiphertextBlob"],
                       EncryptionContext={"a": "b"})["Plaintext"] == b"imported"
    # No rotation until asked for (test_import_rotation.py rotates imported material).
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False


def test_each_wrapping_algorithm_and_spec(kms):
    for alg in ("RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1",
                "RSA_AES_KEY_WRAP_SHA_256"):
        for spec in ("RSA_2048", "RSA_3072", "RSA_4096"):
            if spec == "RSA_4096" and alg != "RSA_AES_KEY_WRAP_SHA_256":
                continue  # one RSA-4096 wrapping key pair is enough (it takes a while)
            key = external_key(kms)
            do_import(kms, key, os.urandom(32), alg=alg, spec=spec)
            assert state(kms, key)["KeyState"] == "Enabled", (alg, spec)
    key = external_key(kms)
    raises("ValidationException", kms.get_parameters_for_import, KeyId=key,
           WrappingAlgorithm="RSAES_PKCS1_V1_5", WrappingKeySpec="RSA_2048",
           message="padding-oracle")
    raises("ValidationException", kms.get_parameters_for_import, KeyId=key,
           WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_1024")


def test_errors_change_nothing(hsmd, kms):
    a, b = external_key(kms), external_key(kms)
    material = os.urandom(32)
    pa = kms.get_parameters_for_import(KeyId=a, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                       WrappingKeySpec="RSA_2048")
    enc = wrap(pa, material, "RSAES_OAEP_SHA_256")
    never = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    raises("InvalidImportTokenException", kms.import_key_material, KeyId=b,
           ImportToken=pa["ImportToken"], EncryptedKeyMaterial=enc, **never)
    bad = bytearray(enc)
    bad[10] ^= 1
    raises("InvalidCiphertextException", kms.import_key_material, KeyId=a,
           ImportToken=pa["ImportToken"], EncryptedKeyMaterial=bytes(bad), **never)
    raises("IncorrectKeyMaterialException", kms.import_key_material, KeyId=a,
           ImportToken=pa["ImportToken"],
           EncryptedKeyMaterial=wrap(pa, os.urandom(16), "RSAES_OAEP_SHA_256"), **never)
    # KEY_MATERIAL_EXPIRES is the default and needs ValidTo, at most 365 days ahead.
    raises("ValidationException", kms.import_key_material, KeyId=a,
           ImportToken=pa["ImportToken"], EncryptedKeyMaterial=enc)
    raises("ValidationException", kms.import_key_material, KeyId=a,
           ImportToken=pa["ImportToken"], EncryptedKeyMaterial=enc,
           ValidTo=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400))
    for k in (a, b):
        assert state(kms, k)["KeyState"] == "PendingImport"
    # Keys of hsmd's own material take no import.
    own = kms.create_key()["KeyMetadata"]["KeyId"]
    raises("UnsupportedOperationException", kms.get_parameters_for_import, KeyId=own,
           WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048")
    raises("UnsupportedOperationException", kms.delete_imported_key_material, KeyId=own)
    # The right material goes in; other material never replaces it.
    kms.import_key_material(KeyId=a, ImportToken=pa["ImportToken"], EncryptedKeyMaterial=enc,
                            **never)
    raises("IncorrectKeyMaterialException", do_import, kms, a, os.urandom(32))


def test_delete_and_reimport(hsmd, kms):
    key = external_key(kms)
    material = os.urandom(32)
    do_import(kms, key, material)
    blob = kms.encrypt(KeyId=key, Plaintext=b"kept")["CiphertextBlob"]
    kms.delete_imported_key_material(KeyId=key)
    md = state(kms, key)
    assert (md["KeyState"], md["Enabled"]) == ("PendingImport", False)
    raises("KMSInvalidStateException", kms.decrypt, CiphertextBlob=blob)
    # Deleting it again has no effect and succeeds (KMS's key state table: PendingImport).
    kms.delete_imported_key_material(KeyId=key)
    md = state(kms, key)
    assert (md["KeyState"], md["Enabled"]) == ("PendingImport", False)
    raises("KMSInvalidStateException", kms.enable_key, KeyId=key)
    # The same material, with an expiration this time, brings the ciphertext back.
    valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    do_import(kms, key, material, ValidTo=valid_to, ExpirationModel="KEY_MATERIAL_EXPIRES")
    md = state(kms, key)
    assert md["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(md["ValidTo"].timestamp() - valid_to.timestamp()) < 1.5
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
    # Deletion pending: cancelling leaves the key Disabled with material, PendingImport without.
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    kms.delete_imported_key_material(KeyId=key)
    assert state(kms, key)["KeyState"] == "PendingDeletion"
    kms.cancel_key_deletion(KeyId=key)
    assert state(kms, key)["KeyState"] == "PendingImport"


def test_reimport_leaves_a_disabled_key_disabled(hsmd, kms):
    """DisableKey holds across the material's deletion and return: a principal allowed only
    to import (no kms:EnableKey) must not get the key Enabled by importing it again."""
    akid, secret = new_user(hsmd, "importer", ["crypto-officer"])
    importer = client(hsmd, akid=akid, secret=secret)
    arn = f"arn:aws:iam::{ACCOUNT}:user/"
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": arn + "dev"}, "Action": "kms:*",
         "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": arn + "importer"},
         "Action": ["kms:GetParametersForImport", "kms:ImportKeyMaterial", "kms:DescribeKey"],
         "Resource": "*"}]})
    key = external_key(kms, Policy=policy)
    material = os.urandom(32)
    do_import(kms, key, material)
    kms.disable_key(KeyId=key)
    kms.delete_imported_key_material(KeyId=key)
    assert state(kms, key)["KeyState"] == "PendingImport"
    raises("KMSInvalidStateException", kms.disable_key, KeyId=key)
    raises("AccessDeniedException", importer.enable_key, KeyId=key)
    do_import(importer, key, material)
    md = state(kms, key)
    assert (md["KeyState"], md["Enabled"]) == ("Disabled", False), md
    raises("DisabledException", kms.encrypt, KeyId=key, Plaintext=b"x")
    # Enabled only by EnableKey; then deleting and importing again leaves it Enabled.
    kms.enable_key(KeyId=key)
    kms.delete_imported_key_material(KeyId=key)
    do_import(importer, key, material)
    assert state(kms, key)["KeyState"] == "Enabled"
    # A cancelled deletion leaves a key Disabled: so too when its material comes back later.
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    kms.delete_imported_key_material(KeyId=key)
    kms.cancel_key_deletion(KeyId=key)
    assert state(kms, key)["KeyState"] == "PendingImport"
    do_import(importer, key, material)
    assert state(kms, key)["KeyState"] == "Disabled"
    # And so too for a key that was Enabled when its material went, then deleted and saved.
    kms.enable_key(KeyId=key)
    kms.delete_imported_key_material(KeyId=key)
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    kms.cancel_key_deletion(KeyId=key)
    assert state(kms, key)["KeyState"] == "PendingImport"
    do_import(importer, key, material)
    assert state(kms, key)["KeyState"] == "Disabled"


def test_rsa_4096_signing_key(kms):
    """A JWT signing key made elsewhere: RSA-4096, wrapped with RSA_AES_KEY_WRAP_SHA_256."""
    priv = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    pkcs8 = priv.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    key = external_key(kms, KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY")
    do_import(kms, key, pkcs8, alg="RSA_AES_KEY_WRAP_SHA_256", spec="RSA_4096")
    pub = kms.get_public_key(KeyId=key)["PublicKey"]
    assert pub == priv.public_key().public_bytes(DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    sig = kms.sign(KeyId=key, Message=b"token", SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")
    priv.public_key().verify(sig["Signature"], b"token", padding.PKCS1v15(), hashes.SHA256())
    # An RSA-2048 key is not RSA-4096 material.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key2 = external_key(kms, KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY")
    raises("IncorrectKeyMaterialException", do_import, kms, key2,
           other.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()),
           alg="RSA_AES_KEY_WRAP_SHA_256")


def rsa_pkcs8(n, e, d, p, q, dp, dq, qi):
    """A PKCS#8 RSA private key with the values given, whether they fit together or not."""
    def tlv(tag, value):
        n = len(value)
        size = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + \
            n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([tag]) + size + value

    def integer(v):
        return tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))
    rsa_key = tlv(0x30, b"".join(integer(v) for v in (0, n, e, d, p, q, dp, dq, qi)))
    rsa_encryption = bytes.fromhex("300d06092a864886f70d0101010500")
    return tlv(0x30, integer(0) + rsa_encryption + tlv(0x04, rsa_key))


def test_rsa_material_whose_values_do_not_fit_together(kms):
    """Each value of an imported RSA key is checked once, at import: a wrong d, CRT value or
    prime still passes a sign/verify test (OpenSSL redoes a CRT result that does not verify
    with d, at twice the cost), so the test alone would let such a key in."""
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    v = priv.private_numbers()
    n, e = v.public_numbers.n, v.public_numbers.e
    good = (n, e, v.d, v.p, v.q, v.dmp1, v.dmq1, v.iqmp)
    assert rsa_pkcs8(*good) == priv.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption())
    bad = {"d": (n, e, v.d ^ 2, v.p, v.q, v.dmp1, v.dmq1, v.iqmp),
           "dP": (n, e, v.d, v.p, v.q, v.dmp1 ^ 2, v.dmq1, v.iqmp),
           "dQ": (n, e, v.d, v.p, v.q, v.dmp1, v.dmq1 ^ 2, v.iqmp),
           "qInv": (n, e, v.d, v.p, v.q, v.dmp1, v.dmq1, v.iqmp ^ 2),
           "q": (n, e, v.d, v.p, v.q + 2, v.dmp1, v.dmq1, v.iqmp)}
    for what, values in bad.items():
        for usage in ("SIGN_VERIFY", "ENCRYPT_DECRYPT"):
            key = external_key(kms, KeySpec="RSA_2048", KeyUsage=usage)
            r = raises("IncorrectKeyMaterialException", do_import, kms, key, rsa_pkcs8(*values),
                       alg="RSA_AES_KEY_WRAP_SHA_256")
            assert "do not fit together" in r["Error"]["Message"], (what, r)
            assert state(kms, key)["KeyState"] == "PendingImport", what
    key = external_key(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    do_import(kms, key, rsa_pkcs8(*good), alg="RSA_AES_KEY_WRAP_SHA_256")
    sig = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
    priv.public_key().verify(sig, b"m", padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                             hashes.SHA256())


def p256_pkcs8(priv, point_format):
    """A PKCS#8 P-256 private key whose public key is in the X9.62 point form given, as
    `openssl ec -conv_form compressed` and some HSMs' export tools write it."""
    def tlv(tag, value):
        n = len(value)
        return bytes([tag]) + (bytes([n]) if n < 128 else bytes([0x81, n])) + value
    point = priv.public_key().public_bytes(serialization.Encoding.X962, point_format)
    ec_key = tlv(0x30, tlv(0x02, b"\x01") +
                 tlv(0x04, priv.private_numbers().private_value.to_bytes(32, "big")) +
                 tlv(0xa1, tlv(0x03, b"\x00" + point)))
    p256 = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")
    return tlv(0x30, tlv(0x02, b"\x00") + p256 + tlv(0x04, ec_key))


def test_ec_material_in_either_point_form_is_one_material(kms):
    """The public key of an imported EC key is encoded uncompressed, as hsmd's own and KMS's
    are, whatever form the PKCS#8 carried it in; and the same private key, written with the
    other form, is the same material: it can be imported again."""
    priv = ec.generate_private_key(ec.SECP256R1())
    spki = priv.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    compressed = p256_pkcs8(priv, serialization.PublicFormat.CompressedPoint)
    uncompressed = p256_pkcs8(priv, serialization.PublicFormat.UncompressedPoint)
    assert uncompressed == priv.private_bytes(DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())
    key = external_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    do_import(kms, key, compressed, alg="RSA_AES_KEY_WRAP_SHA_256")
    assert kms.get_public_key(KeyId=key)["PublicKey"] == spki
    sig = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    priv.public_key().verify(sig, b"m", ec.ECDSA(hashes.SHA256()))
    kms.delete_imported_key_material(KeyId=key)
    do_import(kms, key, uncompressed, alg="RSA_AES_KEY_WRAP_SHA_256")
    kms.delete_imported_key_material(KeyId=key)
    do_import(kms, key, compressed, alg="RSA_AES_KEY_WRAP_SHA_256")
    assert state(kms, key)["KeyState"] == "Enabled"
    assert kms.get_public_key(KeyId=key)["PublicKey"] == spki


def test_expiry_deletes_the_material(hsmd, kms):
    key = external_key(kms)
    material = os.urandom(32)
    # The import must come before ValidTo (kept in whole seconds: up to one early) and the
    # encryption before the scheduler's first pass after it deletes the material: the
    # wrapping key, an RSA key generated on request, is made before that clock starts.
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    enc = wrap(params, material, "RSAES_OAEP_SHA_256")
    valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=10)
    kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=enc, ValidTo=valid_to)
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    deadline = time.monotonic() + 30
    while state(kms, key)["KeyState"] != "PendingImport" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state(kms, key)["KeyState"] == "PendingImport"
    raises("KMSInvalidStateException", kms.decrypt, CiphertextBlob=blob)
    recs = audit_records_until(hsmd.data_dir, lambda r: r.get("op") == "DeleteExpiredKeyMaterial"
                               and r.get("key_id") == key, timeout=30)
    assert len(recs) == 1 and (recs[0]["type"], recs[0]["outcome"]) == ("event", "success"), recs
    # The token is good for 24 hours: the same material again.
    kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap(params, material, "RSAES_OAEP_SHA_256"),
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_audit_and_secrecy(hsmd, kms):
    key = external_key(kms)
    material = os.urandom(32)
    r = signed_request(hsmd, "TrentService.GetParametersForImport",
                       {"KeyId": key, "WrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256",
                        "WrappingKeySpec": "RSA_2048"})
    assert r.status_code == 200, r.text
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["key_id"], rec["outcome"]) == ("GetParametersForImport", key, "success")
    assert rec["extra"]["algorithm"] == "RSA_AES_KEY_WRAP_SHA_256", rec
    out = r.json()
    params = {"PublicKey": base64.b64decode(out["PublicKey"])}
    enc = wrap(params, material, "RSA_AES_KEY_WRAP_SHA_256")
    r = signed_request(hsmd, "TrentService.ImportKeyMaterial",
                       {"KeyId": key, "ImportToken": out["ImportToken"],
                        "EncryptedKeyMaterial": base64.b64encode(enc).decode(),
                        "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"})
    assert r.status_code == 200, r.text
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["key_id"], rec["outcome"]) == ("ImportKeyMaterial", key, "success")
    # Neither the material nor the token reaches the audit trail, the log or the store file.
    token = base64.b64decode(out["ImportToken"])
    for path in [os.path.join(hsmd.data_dir, "audit", f)
                 for f in os.listdir(os.path.join(hsmd.data_dir, "audit"))] + [hsmd.log_path]:
        with open(path, "rb") as f:
            data = f.read()
        for secret in (material, material.hex().encode(), base64.b64encode(material),
                       out["ImportToken"].encode()[:64], token[:48]):
            assert secret not in data, path
    store = os.path.join(hsmd.data_dir, "store")
    for dirpath, _, files in os.walk(store if os.path.isdir(store) else hsmd.data_dir):
        for name in files:
            if "audit" in dirpath:
                continue
            with open(os.path.join(dirpath, name), "rb") as f:
                assert material not in f.read(), name


def test_restart_keeps_material_and_tokens():
    node = start_dev()  # its own node: the module's stays up for the other tests
    try:
        kms = client(node)
        key = external_key(kms)
        material = os.urandom(32)
        params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_1",
                                               WrappingKeySpec="RSA_2048")
        node = restart_dev(node)
        kms = client(node)
        # A token made before the restart still opens after it (the node keeps no state).
        kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                                EncryptedKeyMaterial=wrap(params, material, "RSAES_OAEP_SHA_1"),
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
        blob = kms.encrypt(KeyId=key, Plaintext=b"survives")["CiphertextBlob"]
        node = restart_dev(node)
        kms = client(node)
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives"
        assert state(kms, key)["Origin"] == "EXTERNAL"
    finally:
        node.cleanup()


def test_aws_cli_import(hsmd, kms):
    cli = AwsCli(hsmd)
    try:
        md = cli.json("create-key", "--origin", "EXTERNAL")["KeyMetadata"]
        key = md["KeyId"]
        assert (md["Origin"], md["KeyState"]) == ("EXTERNAL", "PendingImport")
        params = cli.json("get-parameters-for-import", "--key-id", key,
                          "--wrapping-algorithm", "RSAES_OAEP_SHA_256",
                          "--wrapping-key-spec", "RSA_2048")
        pub = base64.b64decode(params["PublicKey"])
        material = os.urandom(32)
        with open(cli.path("token.bin"), "wb") as f:
            f.write(base64.b64decode(params["ImportToken"]))
        with open(cli.path("material.enc"), "wb") as f:
            f.write(wrap({"PublicKey": pub}, material, "RSAES_OAEP_SHA_256"))
        cli.run("import-key-material", "--key-id", key,
                "--import-token", "fileb://" + cli.path("token.bin"),
                "--encrypted-key-material", "fileb://" + cli.path("material.enc"),
                "--expiration-model", "KEY_MATERIAL_DOES_NOT_EXPIRE")
        assert state(kms, key)["KeyState"] == "Enabled"
        cli.run("delete-imported-key-material", "--key-id", key)
        assert state(kms, key)["KeyState"] == "PendingImport"
        p = cli.run("import-key-material", "--key-id", key,
                    "--import-token", "fileb://" + cli.path("token.bin"),
                    "--encrypted-key-material", "fileb://" + cli.path("token.bin"),
                    "--expiration-model", "KEY_MATERIAL_DOES_NOT_EXPIRE", check=False)
        assert p.returncode != 0 and "InvalidCiphertextException" in p.stderr, p.stderr
    finally:
        cli.close()


def test_metrics_count_material_expiring(hsmd, kms):
    import re
    key = external_key(kms)
    do_import(kms, key, os.urandom(32),
              ValidTo=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2))

    def gauge():
        status, body, _ = hsmd.get("/metrics")
        assert status == 200
        m = re.search(r"^hsmd_keys_material_expiring_7d (\d+)$", body.decode(), re.M)
        assert m, body
        return int(m.group(1))

    deadline = time.monotonic() + 20
    while gauge() < 1 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert gauge() >= 1
    before = gauge()
    kms.delete_imported_key_material(KeyId=key)
    deadline = time.monotonic() + 20
    while gauge() != before - 1 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert gauge() == before - 1


# ---- hsmctl key import --------------------------------------------------------------------

def run_hsmctl(*args, env=None):
    import subprocess
    from conftest import HSMCTL
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    e.update(env or {})
    return subprocess.run([HSMCTL, *args], capture_output=True, text=True, timeout=120, env=e)


def test_hsmctl_imports_through_a_node(hsmd, kms, tmp_path):
    """A PEM private key (traditional RSA form) and raw AES bytes, wrapped by hsmctl."""
    from conftest import DEV_AKID, DEV_SECRET
    creds = {"AWS_ACCESS_KEY_ID": DEV_AKID, "AWS_SECRET_ACCESS_KEY": DEV_SECRET}
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "signing.pem"
    pem.write_bytes(priv.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    key = external_key(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    p = run_hsmctl("--endpoint", hsmd.endpoint, "key", "import", key, "--material", str(pem),
                   "--wrapping-key-spec", "RSA_2048", env=creds)
    assert p.returncode == 0, p.stderr
    assert "KeyState: Enabled" in p.stdout and "Origin: EXTERNAL" in p.stdout, p.stdout
    sig = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
    priv.public_key().verify(sig, b"m", padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                    salt_length=32), hashes.SHA256())
    # Raw bytes for a symmetric key, expiring in 10 days.
    raw = tmp_path / "aes.bin"
    raw.write_bytes(os.urandom(32))
    sym = external_key(kms)
    p = run_hsmctl("--endpoint", hsmd.endpoint, "key", "import", sym, "--material", str(raw),
                   "--valid-days", "10", env=creds)
    assert p.returncode == 0, p.stderr
    # The check value to compare with the material's other holder: hsmd's, of what it holds.
    assert f"KeyCheckValue: {zero_block_kcv(raw.read_bytes())}\n" in p.stdout, p.stdout
    assert "KeyCheckValueAlgorithm: AES_ZERO_BLOCK" in p.stdout, p.stdout
    md = state(kms, sym)
    assert md["KeyState"] == "Enabled" and md["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(md["ValidTo"].timestamp() - (time.time() + 10 * 86400)) < 120
    # Other material for the RSA key: refused, and the key keeps its own.
    other = tmp_path / "other.pem"
    other.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048)
                      .private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    p = run_hsmctl("--endpoint", hsmd.endpoint, "key", "import", key, "--material", str(other),
                   "--wrapping-key-spec", "RSA_2048", env=creds)
    assert p.returncode == 1 and "not a material imported" in p.stderr, p.stderr
    sig = kms.sign(KeyId=key, Message=b"n", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
    priv.public_key().verify(sig, b"n", padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                    salt_length=32), hashes.SHA256())
    # An encrypted PEM is refused before anything is sent.
    enc = tmp_path / "enc.pem"
    enc.write_bytes(priv.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw")))
    p = run_hsmctl("--endpoint", hsmd.endpoint, "key", "import", key, "--material", str(enc),
                   env=creds)
    assert p.returncode == 1 and "unencrypted" in p.stderr, p.stderr
    # Usage errors.
    p = run_hsmctl("--endpoint", hsmd.endpoint, "key", "import", key, env=creds)
    assert p.returncode == 2, p.stderr


def zero_block_kcv(material):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    enc = Cipher(algorithms.AES(material), modes.ECB()).encryptor()
    return (enc.update(bytes(16)) + enc.finalize())[:3].hex().upper()


def test_hsmctl_imports_offline(tmp_path):
    """In a key ceremony, on a data directory: no node running, the quorum present."""
    data, shares = tmp_path / "data", tmp_path / "shares"
    p = run_hsmctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
                   "--threshold", "2")
    assert p.returncode == 0, p.stderr
    quorum = ["--share", str(shares / "share-1-of-2.share"),
              "--share", str(shares / "share-2-of-2.share")]
    p = run_hsmctl("key", "create", "--data-dir", str(data), *quorum, "--origin", "EXTERNAL",
                   "--spec", "ECC_NIST_P256", "--usage", "SIGN_VERIFY", *IDENTITY)
    assert p.returncode == 0, p.stderr
    assert "state: PendingImport" in p.stdout and "origin: EXTERNAL" in p.stdout, p.stdout
    key = next(line.split()[1] for line in p.stdout.splitlines() if line.startswith("key:"))
    from cryptography.hazmat.primitives.asymmetric import ec
    der = tmp_path / "p256.der"
    der.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    p = run_hsmctl("key", "import", "--data-dir", str(data), *quorum, key, "--material",
                   str(der), "--wrapping-key-spec", "RSA_2048")
    assert p.returncode == 0, p.stderr
    assert "state: Enabled" in p.stdout, p.stdout
    wrong = tmp_path / "p384.der"
    wrong.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    p = run_hsmctl("key", "import", "--data-dir", str(data), *quorum, key, "--material",
                   str(wrong), "--wrapping-key-spec", "RSA_2048")
    assert p.returncode == 1 and "not a ECC_NIST_P256 key" in p.stderr, p.stderr
    # A symmetric key's import ends with its check value, recorded as asked for.
    p = run_hsmctl("key", "create", "--data-dir", str(data), *quorum, "--origin", "EXTERNAL")
    assert p.returncode == 0, p.stderr
    sym = next(line.split()[1] for line in p.stdout.splitlines() if line.startswith("key:"))
    raw = tmp_path / "aes.bin"
    raw.write_bytes(os.urandom(32))
    p = run_hsmctl("key", "import", "--data-dir", str(data), *quorum, sym, "--material",
                   str(raw))
    assert p.returncode == 0, p.stderr
    assert f"check-value: {zero_block_kcv(raw.read_bytes())} (AES_ZERO_BLOCK)\n" in p.stdout, \
        p.stdout
    assert [r["outcome"] for r in audit_records(str(data))
            if r.get("key_id") == sym and r["op"] == "GetKeyCheckValue"] == ["success"]
    # Both calls of each import are in the data directory's audit trail, with their outcomes.
    recs = audit_records(str(data))
    ops = [(r["op"], r["outcome"]) for r in recs if r.get("key_id") == key]
    assert ops == [("CreateKey", "success"), ("GetParametersForImport", "success"),
                   ("ImportKeyMaterial", "success"), ("GetParametersForImport", "success"),
                   ("ImportKeyMaterial", "error")], ops
