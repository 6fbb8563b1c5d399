"""New imported key material and rotation to it: ImportKeyMaterial with
ImportType NEW_KEY_MATERIAL, KeyMaterialId and KeyMaterialDescription,
RotateKeyOnDemand of an imported key, a rotation schedule for it (and the
7-day gauge that warns of it), ListKeyRotations with IncludeKeyMaterial,
DeleteImportedKeyMaterial of one material, and DescribeKey's
CurrentKeyMaterialId.

Debian's boto3 1.26 knows none of these members, so the requests are signed
by botocore's own SigV4 signer (helpers.call_ok); the material is wrapped
with python3-cryptography as an importer would.
"""
import base64
import os
import re
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import client, signed_request, start_dev
from helpers import (ACCOUNT, IDENTITY, audit_record, audit_records_until, call_error, call_ok, key_arn,
                     raises, request_id)
from test_import import external_key, run_hsmctl, wrap


def b64(data):
    return base64.b64encode(data).decode()


def import_body(kms, key, material, **members):
    """An ImportKeyMaterial request for `material`, with fresh import parameters."""
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    body = {"KeyId": key, "ImportToken": b64(params["ImportToken"]),
            "EncryptedKeyMaterial": b64(wrap(params, material, "RSAES_OAEP_SHA_256")),
            "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    body.update(members)
    return body


def materials(hsmd, key, include=None):
    body = {"KeyId": key}
    if include:
        body["IncludeKeyMaterial"] = include
    out = call_ok(hsmd, "ListKeyRotations", body)
    assert out["Truncated"] is False
    return out["Rotations"]


def describe(hsmd, key):
    return call_ok(hsmd, "DescribeKey", {"KeyId": key})["KeyMetadata"]


def test_new_material_rotation_and_deletion(hsmd, kms):
    key = external_key(kms)
    m1, m2, m3 = os.urandom(32), os.urandom(32), os.urandom(32)
    first = call_ok(hsmd, "ImportKeyMaterial",
                    import_body(kms, key, m1, KeyMaterialDescription="initial 2026-11"))
    id1 = first["KeyMaterialId"]
    assert first["KeyId"] == key_arn(key) and re.fullmatch(r"[0-9a-f]{64}", id1)
    assert describe(hsmd, key)["CurrentKeyMaterialId"] == id1
    ct1 = kms.encrypt(KeyId=key, Plaintext=b"one")["CiphertextBlob"]
    # The key's own material is not new material.
    call_error(hsmd, "ImportKeyMaterial",
               import_body(kms, key, m1, ImportType="NEW_KEY_MATERIAL"),
               "IncorrectKeyMaterialException")

    # New material waits, pending rotation; the key keeps encrypting with the first.
    out = call_ok(hsmd, "ImportKeyMaterial",
                  import_body(kms, key, m2, ImportType="NEW_KEY_MATERIAL",
                              KeyMaterialDescription="next",
                              ExpirationModel="KEY_MATERIAL_EXPIRES",
                              ValidTo=int(time.time()) + 30 * 86400))
    id2 = out["KeyMaterialId"]
    assert id2 != id1
    md = describe(hsmd, key)
    assert md["CurrentKeyMaterialId"] == id1 and md["KeyState"] == "Enabled"
    assert md["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in md
    assert materials(hsmd, key) == []
    listed = materials(hsmd, key, "ALL_KEY_MATERIAL")
    assert [(m["KeyMaterialId"], m["KeyMaterialState"], m["ImportState"]) for m in listed] == [
        (id1, "CURRENT", "IMPORTED"), (id2, "PENDING_ROTATION", "IMPORTED")]
    assert listed[0]["KeyMaterialDescription"] == "initial 2026-11"
    assert listed[1]["KeyMaterialDescription"] == "next"
    assert listed[1]["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(listed[1]["ValidTo"] - (time.time() + 30 * 86400)) < 120
    assert "RotationDate" not in listed[0] and "RotationDate" not in listed[1]
    ct = kms.encrypt(KeyId=key, Plaintext=b"still one")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=ct)["Plaintext"] == b"still one"

    # Refused, changing nothing: a second waiting material, an id with NEW, a malformed id,
    # an unknown IncludeKeyMaterial, a description out of its pattern.
    call_error(hsmd, "ImportKeyMaterial",
               import_body(kms, key, m3, ImportType="NEW_KEY_MATERIAL"),
               "KMSInvalidStateException")
    call_error(hsmd, "ImportKeyMaterial",
               import_body(kms, key, m3, ImportType="NEW_KEY_MATERIAL", KeyMaterialId=id1),
               "ValidationException")
    call_error(hsmd, "DeleteImportedKeyMaterial", {"KeyId": key, "KeyMaterialId": "XYZ"},
               "ValidationException")
    call_error(hsmd, "ListKeyRotations", {"KeyId": key, "IncludeKeyMaterial": "SOME"},
               "ValidationException")
    for description in ("semi;colon", ""):  # the pattern needs one character at least
        call_error(hsmd, "ImportKeyMaterial",
                   import_body(kms, key, m1, KeyMaterialDescription=description),
                   "ValidationException")
    assert len(materials(hsmd, key, "ALL_KEY_MATERIAL")) == 2

    # Rotation makes it current, for good; older ciphertexts still decrypt.
    t0 = time.time()
    resp = call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": key})
    assert resp == {"KeyId": key_arn(key)}
    assert describe(hsmd, key)["CurrentKeyMaterialId"] == id2
    rotations = materials(hsmd, key)
    assert [(r["KeyMaterialId"], r["KeyMaterialState"], r["RotationType"]) for r in rotations] \
        == [(id2, "CURRENT", "ON_DEMAND")]
    assert abs(rotations[0]["RotationDate"] - t0) < 60
    ct2 = kms.encrypt(KeyId=key, Plaintext=b"two")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=ct1)["Plaintext"] == b"one"
    assert kms.decrypt(CiphertextBlob=ct2)["Plaintext"] == b"two"
    call_error(hsmd, "RotateKeyOnDemand", {"KeyId": key}, "KMSInvalidStateException")

    # Deleting an older material makes the key unusable until that material comes back.
    out = call_ok(hsmd, "DeleteImportedKeyMaterial", {"KeyId": key, "KeyMaterialId": id1})
    assert out == {"KeyId": key_arn(key), "KeyMaterialId": id1}
    assert describe(hsmd, key)["KeyState"] == "PendingImport"
    raises("KMSInvalidStateException", kms.decrypt, CiphertextBlob=ct2)
    by_id = {m["KeyMaterialId"]: m for m in materials(hsmd, key, "ALL_KEY_MATERIAL")}
    assert by_id[id1]["ImportState"] == "PENDING_IMPORT"
    assert by_id[id1]["KeyMaterialState"] == "NON_CURRENT"
    assert by_id[id2]["ImportState"] == "IMPORTED"
    call_error(hsmd, "ImportKeyMaterial",
               import_body(kms, key, m3, ImportType="EXISTING_KEY_MATERIAL", KeyMaterialId=id1),
               "IncorrectKeyMaterialException")
    out = call_ok(hsmd, "ImportKeyMaterial",
                  import_body(kms, key, m1, ImportType="EXISTING_KEY_MATERIAL",
                              KeyMaterialId=id1))
    assert out["KeyMaterialId"] == id1
    assert describe(hsmd, key)["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=ct1)["Plaintext"] == b"one"
    assert kms.decrypt(CiphertextBlob=ct2)["Plaintext"] == b"two"
    # The description stayed with the material.
    assert materials(hsmd, key, "ALL_KEY_MATERIAL")[0]["KeyMaterialDescription"] == \
        "initial 2026-11"
    # Without KeyMaterialId, DeleteImportedKeyMaterial takes the current material.
    out = call_ok(hsmd, "DeleteImportedKeyMaterial", {"KeyId": key})
    assert out["KeyMaterialId"] == id2
    # boto3's own DeleteImportedKeyMaterial and ImportKeyMaterial (without the newer members)
    # work as before: the material is found by its bytes.
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap(params, m2, "RSAES_OAEP_SHA_256"),
                            ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert describe(hsmd, key)["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=ct2)["Plaintext"] == b"two"


def test_new_material_and_rotation_are_audited(hsmd, kms):
    key = external_key(kms)
    call_ok(hsmd, "ImportKeyMaterial", import_body(kms, key, os.urandom(32)))
    r = signed_request(hsmd, "TrentService.ImportKeyMaterial",
                       import_body(kms, key, os.urandom(32), ImportType="NEW_KEY_MATERIAL"))
    assert r.status_code == 200, r.text
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["outcome"], rec["key_id"], rec["key_version"]) == (
        "ImportKeyMaterial", "success", key, 2)
    r = signed_request(hsmd, "TrentService.RotateKeyOnDemand", {"KeyId": key})
    assert r.status_code == 200, r.text
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["outcome"], rec["key_id"], rec["key_version"]) == (
        "RotateKeyOnDemand", "success", key, 2)
    r = signed_request(hsmd, "TrentService.RotateKeyOnDemand", {"KeyId": key})
    assert r.status_code == 400 and r.json()["__type"] == "KMSInvalidStateException", r.text
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["outcome"]) == ("RotateKeyOnDemand", "error")


def test_imported_signing_key_rotates(hsmd, kms, tmp_path):
    """hsmd rotates every key type: an imported RSA signing key moves to new material."""
    from conftest import DEV_AKID, DEV_SECRET
    creds = {"AWS_ACCESS_KEY_ID": DEV_AKID, "AWS_SECRET_ACCESS_KEY": DEV_SECRET}
    key = external_key(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    old, new = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in "ab")
    files = []
    for i, priv in enumerate((old, new)):
        f = tmp_path / f"k{i}.pem"
        f.write_bytes(priv.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        files.append(str(f))
    p = run_hsmctl("--endpoint", hsmd.endpoint, "key", "import", key, "--material", files[0],
                   "--wrapping-key-spec", "RSA_2048", env=creds)
    assert p.returncode == 0, p.stderr
    p = run_hsmctl("--endpoint", hsmd.endpoint, "key", "import", key, "--material", files[1],
                   "--wrapping-key-spec", "RSA_2048", "--new", "--description", "2027 key",
                   env=creds)
    assert p.returncode == 0, p.stderr
    new_id = re.search(r"material-id: ([0-9a-f]{64})", p.stdout).group(1)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)

    def sign_and_check(priv):
        sig = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
        priv.public_key().verify(sig["Signature"], b"m", pss, hashes.SHA256())

    sign_and_check(old)  # the new material waits
    call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": key})
    assert describe(hsmd, key)["CurrentKeyMaterialId"] == new_id
    sign_and_check(new)
    spki = kms.get_public_key(KeyId=key)["PublicKey"]
    assert spki == new.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
    listed = materials(hsmd, key, "ALL_KEY_MATERIAL")
    assert [m["KeyMaterialDescription"] for m in listed] == ["", "2027 key"]


def test_hsmctl_rotates_imported_material_offline(tmp_path):
    """In a key ceremony: new material imported with --new, made current by key rotate."""
    data, shares = tmp_path / "data", tmp_path / "shares"
    p = run_hsmctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
                   "--threshold", "2")
    assert p.returncode == 0, p.stderr
    quorum = ["--data-dir", str(data), "--share", str(shares / "share-1-of-2.share"),
              "--share", str(shares / "share-2-of-2.share")]
    p = run_hsmctl("key", "create", *quorum, "--origin", "EXTERNAL", *IDENTITY)
    assert p.returncode == 0, p.stderr
    key = re.search(r"^key: (\S+)$", p.stdout, re.M).group(1)
    first, second = tmp_path / "m1.bin", tmp_path / "m2.bin"
    first.write_bytes(os.urandom(32))
    second.write_bytes(os.urandom(32))
    p = run_hsmctl("key", "import", *quorum, key, "--material", str(first),
                   "--wrapping-key-spec", "RSA_2048")
    assert p.returncode == 0, p.stderr
    id1 = re.search(r"material-id: ([0-9a-f]{64})", p.stdout).group(1)
    p = run_hsmctl("key", "import", *quorum, key, "--material", str(second), "--new",
                   "--wrapping-key-spec", "RSA_2048")
    assert p.returncode == 0, p.stderr
    assert "version: 2" in p.stdout, p.stdout
    id2 = re.search(r"material-id: ([0-9a-f]{64})", p.stdout).group(1)
    p = run_hsmctl("key", "describe", *quorum, key)
    assert p.returncode == 0 and f"current-material-id: {id1}" in p.stdout, p.stdout + p.stderr
    p = run_hsmctl("key", "rotate", *quorum, key)
    assert p.returncode == 0, p.stderr
    p = run_hsmctl("key", "describe", *quorum, key)
    assert f"current-material-id: {id2}" in p.stdout and "primary-version: 2" in p.stdout, \
        p.stdout
    # Nothing waits any more: a second rotation is refused.
    p = run_hsmctl("key", "rotate", *quorum, key)
    assert p.returncode == 1 and "no key material pending rotation" in p.stderr, p.stderr


def test_rotation_schedule_of_an_imported_key_warns_ahead(hsmd, kms):
    """A schedule on an imported key: GetKeyRotationStatus shows it, and the 7-day gauge the
    alert watches counts the key, so the next material is imported in time."""
    key = external_key(kms)
    call_ok(hsmd, "ImportKeyMaterial", import_body(kms, key, os.urandom(32)))

    def gauge(name="hsmd_keys_rotation_due_7d"):
        status, body, _ = hsmd.get("/metrics")
        assert status == 200
        return int(re.search(rf"^{name} (\d+)$", body.decode(), re.M).group(1))

    def gauge_reaches(n, name="hsmd_keys_rotation_due_7d"):
        deadline = time.monotonic() + 20
        while gauge(name) != n:
            assert time.monotonic() < deadline, f"{name} never became {n}"
            time.sleep(0.5)

    before = gauge()
    needed = gauge("hsmd_keys_rotation_material_needed_7d")
    call_ok(hsmd, "EnableKeyRotation", {"KeyId": key, "RotationPeriodInDays": 3})
    status = call_ok(hsmd, "GetKeyRotationStatus", {"KeyId": key})
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 3
    assert abs(status["NextRotationDate"] - (time.time() + 3 * 86400)) < 120
    gauge_reaches(before + 1)
    # Nothing to rotate to yet: the alert's gauge counts it until material waits.
    gauge_reaches(needed + 1, "hsmd_keys_rotation_material_needed_7d")
    call_ok(hsmd, "ImportKeyMaterial",
            import_body(kms, key, os.urandom(32), ImportType="NEW_KEY_MATERIAL"))
    gauge_reaches(needed, "hsmd_keys_rotation_material_needed_7d")
    # The date is still coming, whether material waits or not; disabled, it stops.
    assert gauge() == before + 1
    # A rotation on demand leaves the automatic schedule as it was, as for generated keys.
    time.sleep(1.1)  # a restarted period would show as a later date
    call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": key})
    assert call_ok(hsmd, "GetKeyRotationStatus", {"KeyId": key})["NextRotationDate"] == \
        status["NextRotationDate"]
    call_ok(hsmd, "DisableKeyRotation", {"KeyId": key})
    gauge_reaches(before)


def test_gauges_count_a_key_both_expiring_and_due_once(tmp_path):
    """A key whose material expires and whose rotation is due within the week is one key in
    each gauge, not two: the store lists each key with work due once."""
    import datetime
    from conftest import client, start_dev
    node = start_dev()
    try:
        kms = client(node)
        key = external_key(kms)
        valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)
        call_ok(node, "ImportKeyMaterial",
                import_body(kms, key, os.urandom(32), ExpirationModel="KEY_MATERIAL_EXPIRES",
                            ValidTo=int(valid_to.timestamp())))
        call_ok(node, "EnableKeyRotation", {"KeyId": key, "RotationPeriodInDays": 3})

        def gauges():
            status, body, _ = node.get("/metrics")
            assert status == 200
            text = body.decode()
            return tuple(int(re.search(rf"^{name} (\d+)$", text, re.M).group(1))
                         for name in ("hsmd_keys_rotation_due_7d",
                                      "hsmd_keys_material_expiring_7d"))

        # Counted by the scheduler, 5 s after its last pass ended (the first pass here also
        # makes a backup): a count between the import and EnableKeyRotation sees only one of
        # them, and the next can come later than a fixed sleep.  Wait for a count of both.
        deadline = time.monotonic() + 30
        while gauges() != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert gauges() == (1, 1)
    finally:
        node.stop()


def test_material_that_expires_before_the_rotation_date_is_counted_as_needed():
    """Material imported for the next rotation that expires before the date is no material
    for it: the key is counted in hsmd_keys_rotation_material_needed_7d (the alert says to
    import the next material) from the week before the date, as without any, not only once
    the material is gone."""
    import datetime
    node = start_dev()
    try:
        kms = client(node)
        valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        # Not counted: its current material expires before the date, its next does not.
        other = external_key(kms)
        call_ok(node, "ImportKeyMaterial",
                import_body(kms, other, os.urandom(32), ExpirationModel="KEY_MATERIAL_EXPIRES",
                            ValidTo=int(valid_to.timestamp())))
        call_ok(node, "EnableKeyRotation", {"KeyId": other, "RotationPeriodInDays": 3})
        call_ok(node, "ImportKeyMaterial",
                import_body(kms, other, os.urandom(32), ImportType="NEW_KEY_MATERIAL"))
        key = external_key(kms)
        call_ok(node, "ImportKeyMaterial", import_body(kms, key, os.urandom(32)))
        call_ok(node, "EnableKeyRotation", {"KeyId": key, "RotationPeriodInDays": 3})
        call_ok(node, "ImportKeyMaterial",
                import_body(kms, key, os.urandom(32), ImportType="NEW_KEY_MATERIAL",
                            ExpirationModel="KEY_MATERIAL_EXPIRES",
                            ValidTo=int(valid_to.timestamp())))

        def gauge(name):
            status, body, _ = node.get("/metrics")
            assert status == 200
            return float(re.search(rf"^{name} (\S+)$", body.decode(), re.M).group(1))

        # Counted by the scheduler every 5 s: wait for a count after the imports.
        done = time.time()
        deadline = time.monotonic() + 30
        while (gauge("hsmd_keys_counted_time_seconds") <= done and
               time.monotonic() < deadline):
            time.sleep(0.3)
        assert gauge("hsmd_keys_rotation_material_needed_7d") == 1
    finally:
        node.stop()


def test_expired_material_unusable_before_the_scheduler_erases_it():
    # A round a minute apart (the slowest allowed; a failover waits longer still): between
    # ValidTo and the round that erases it, expired material must serve no request.
    server = start_dev(["--scheduler-interval-seconds", "60", "--leader-lease-seconds", "180"])
    try:
        kms = client(server)
        key, lone = external_key(kms), external_key(kms)
        valid_to = int(time.time()) + 15  # the imports below, RSA wrapping keys made on a busy host
        for k in (key, lone):
            call_ok(server, "ImportKeyMaterial",
                    import_body(kms, k, os.urandom(32), ExpirationModel="KEY_MATERIAL_EXPIRES",
                                ValidTo=valid_to))
        old = kms.encrypt(KeyId=key, Plaintext=b"first")["CiphertextBlob"]
        lone_ct = kms.encrypt(KeyId=lone, Plaintext=b"lone")["CiphertextBlob"]
        # key rotates to new material that does not expire; the first stays in use (its
        # ciphertexts), so its expiry makes key pending import too, as its erasure would.
        call_ok(server, "ImportKeyMaterial",
                import_body(kms, key, os.urandom(32), ImportType="NEW_KEY_MATERIAL"))
        call_ok(server, "RotateKeyOnDemand", {"KeyId": key})
        new = kms.encrypt(KeyId=key, Plaintext=b"second")["CiphertextBlob"]
        # Material pending rotation that expires is not in use: it changes nothing.
        call_ok(server, "ImportKeyMaterial",
                import_body(kms, key, os.urandom(32), ImportType="NEW_KEY_MATERIAL",
                            ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to))
        steady = external_key(kms)
        call_ok(server, "ImportKeyMaterial", import_body(kms, steady, os.urandom(32)))
        call_ok(server, "ImportKeyMaterial",
                import_body(kms, steady, os.urandom(32), ImportType="NEW_KEY_MATERIAL",
                            ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=valid_to))
        assert kms.decrypt(CiphertextBlob=old)["Plaintext"] == b"first"
        time.sleep(max(0.0, valid_to + 1.5 - time.time()))

        for k, ct in ((key, old), (key, new), (lone, lone_ct)):
            md = describe(server, k)
            assert (md["KeyState"], md["Enabled"]) == ("PendingImport", False), md
            raises("KMSInvalidStateException", kms.decrypt, CiphertextBlob=ct)
            raises("KMSInvalidStateException", kms.encrypt, KeyId=k, Plaintext=b"x")
            raises("KMSInvalidStateException", kms.generate_data_key, KeyId=k,
                   KeySpec="AES_256")
            raises("KMSInvalidStateException", kms.re_encrypt, CiphertextBlob=ct,
                   DestinationKeyId=steady)
        # Nor may it change as only an enabled or disabled key may: PendingImport refuses
        # grants, enabling, disabling and rotation, as it will after the erasure.
        grantee = f"arn:aws:iam::{ACCOUNT}:root"
        for fn, kw in ((kms.create_grant, {"GranteePrincipal": grantee, "Operations": ["Encrypt"]}),
                       (kms.enable_key, {}), (kms.disable_key, {}),
                       (kms.enable_key_rotation, {})):
            raises("KMSInvalidStateException", fn, KeyId=lone, **kw)
        call_error(server, "RotateKeyOnDemand", {"KeyId": lone}, "KMSInvalidStateException")
        assert kms.list_grants(KeyId=lone)["Grants"] == []
        assert call_ok(server, "GetKeyRotationStatus", {"KeyId": lone})["KeyRotationEnabled"] is False
        # A deletion may be scheduled, and cancelled.
        kms.schedule_key_deletion(KeyId=lone, PendingWindowInDays=7)
        kms.cancel_key_deletion(KeyId=lone)
        assert describe(server, lone)["KeyState"] == "PendingImport"
        assert describe(server, steady)["KeyState"] == "Enabled"
        assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=steady, Plaintext=b"s")[
            "CiphertextBlob"])["Plaintext"] == b"s"
        # Nothing was erased yet: the scheduler's round has not come.
        rows = materials(server, lone, "ALL_KEY_MATERIAL")
        assert [m["ImportState"] for m in rows] == ["IMPORTED"], rows
    finally:
        server.cleanup()


def test_expired_material_described_as_after_its_erasure():
    """From ValidTo on, DescribeKey answers as it will once the scheduler has erased the
    material: the same members, so ExpirationModel, ValidTo and (for a first material)
    CurrentKeyMaterialId do not show until the erasure only to vanish with it."""
    server = start_dev(["--scheduler-interval-seconds", "60", "--leader-lease-seconds", "180"])
    try:
        kms = client(server)
        first, rotated = external_key(kms), external_key(kms)
        valid_to = int(time.time()) + 15  # the imports below, RSA wrapping keys made on a busy host
        for k in (first, rotated):
            call_ok(server, "ImportKeyMaterial",
                    import_body(kms, k, os.urandom(32), ExpirationModel="KEY_MATERIAL_EXPIRES",
                                ValidTo=valid_to))
        # rotated uses its expiring first material still (its ciphertexts), beside a second.
        call_ok(server, "ImportKeyMaterial",
                import_body(kms, rotated, os.urandom(32), ImportType="NEW_KEY_MATERIAL"))
        call_ok(server, "RotateKeyOnDemand", {"KeyId": rotated})
        time.sleep(max(0.0, valid_to + 1.5 - time.time()))
        before = {k: describe(server, k) for k in (first, rotated)}
        # Nothing was erased yet: the scheduler's round after the node's first is a minute on.
        for k in (first, rotated):
            rows = materials(server, k, "ALL_KEY_MATERIAL")
            assert {m["ImportState"] for m in rows} == {"IMPORTED"}, rows
        erased = audit_records_until(
            server.data_dir, lambda r: r.get("op") == "DeleteExpiredKeyMaterial"
            and r.get("key_id") in (first, rotated), n=2, timeout=90)
        assert len(erased) == 2, erased
        for k in (first, rotated):
            after = describe(server, k)
            assert (after["KeyState"], after["Enabled"]) == ("PendingImport", False), after
            assert before[k] == after, (before[k], after)
            assert "ExpirationModel" not in after and "ValidTo" not in after, after
        assert "CurrentKeyMaterialId" not in before[first], before[first]
        assert "CurrentKeyMaterialId" in before[rotated], before[rotated]
    finally:
        server.cleanup()
