"""Certificates kept beside the keys: the HsmdAdmin API, hsmctl, and the
PKCS#11 module's certificate objects, with real clients.

Certificates for hsmd's keys are issued by a test CA with python3-cryptography
(over GetPublicKey's public key), then:
- HsmdAdmin.ImportCertificate / GetCertificate / ListCertificates /
  DeleteCertificate, signed by botocore: every field, the CKA_ID default of a
  key's certificate, paging, the refusals (each changes nothing), the roles,
  the audit records, a restart;
- hsmctl cert import (PEM, --key with an alias: the alias as label) / list /
  show --pem / delete;
- PyKCS11 on libhsm_pkcs11.so: CKO_CERTIFICATE objects with the attributes
  PKCS#11 defines, found beside their key by CKA_ID; C_CreateObject of token
  certificates (stored in hsmd) and session certificates (kept by the module),
  its refusals; C_DestroyObject;
- opensc's pkcs11-tool: --write-object, --list-objects, --read-object,
  --delete-object;
- Java's SunPKCS11 KeyStore (OpenJDK 17): key entries paired with their
  certificates, signatures with the keys checked with Java's own providers;
  secret key entries, an HMAC through Java equal to GenerateMac's.
"""
import base64
import datetime
import glob
import hashlib
import json
import os
import subprocess
import time
import types
import uuid

import PyKCS11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from PyKCS11 import (CKA_CLASS, CKA_ID, CKA_LABEL, CKA_PRIVATE, CKA_TOKEN, CKA_VALUE,
                     CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKR)

from conftest import (BUILD, DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, client, plain_build_only,
                      signed_call, start_dev)
from helpers import (ACCOUNT, admin, audit_records, b64, eventually, kms_front, metric,
                     new_user, restart_dev)

MODULE = os.path.join(BUILD, "libhsm_pkcs11.so")
JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"
HERE = os.path.dirname(os.path.abspath(__file__))

CKO_CERTIFICATE = 1
CKC_X_509 = 0
CKA_CERTIFICATE_TYPE = 0x80
CKA_TRUSTED = 0x86
CKA_CERTIFICATE_CATEGORY = 0x87
CKA_CHECK_VALUE = 0x90
CKA_SUBJECT = 0x101
CKA_ISSUER = 0x81
CKA_SERIAL_NUMBER = 0x82
CKA_PUBLIC_KEY_INFO = 0x129
CKA_MODIFIABLE = 0x170
CKA_UNKNOWN = 0x8000ABCD
CKR_ACTION_PROHIBITED = 0x1B  # PKCS#11 v2.40; not among PyKCS11 1.5's names


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    s = start_dev()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def officer(server):
    return client(server)


@pytest.fixture(scope="module")
def ca():
    """The test CA: its key, name and self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hsmd test issuing CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return types.SimpleNamespace(key=key, name=name, cert=cert)


@pytest.fixture(scope="module")
def keys(officer):
    def create(spec, usage, alias):
        kid = officer.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
        officer.create_alias(AliasName=alias, TargetKeyId=kid)
        return kid
    return {"rsa": create("RSA_2048", "SIGN_VERIFY", "alias/app-signing"),
            "ec": create("ECC_NIST_P256", "SIGN_VERIFY", "alias/app-ec"),
            "aes": create("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "alias/app-aes"),
            "mac": create("HMAC_256", "GENERATE_VERIFY_MAC", "alias/app-mac")}


@pytest.fixture(scope="module")
def user(server):
    akid, secret = new_user(server, "cert-app", ["crypto-user"])
    return types.SimpleNamespace(akid=akid, secret=secret, pin=f"{akid}:{secret}")


def issue(ca, public_der, cn, days=30, serial=None):
    """A certificate for a public key (DER SubjectPublicKeyInfo) signed by the test CA."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                                  x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example")]))
         .issuer_name(ca.name)
         .public_key(serialization.load_der_public_key(public_der))
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    return b.sign(ca.key, hashes.SHA256())


def cert_of_key(officer, ca, key_id, cn):
    return issue(ca, officer.get_public_key(KeyId=key_id)["PublicKey"], cn)


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def serial_der(n):
    """The DER INTEGER of a positive serial number (CKA_SERIAL_NUMBER)."""
    body = n.to_bytes((n.bit_length() + 8) // 8, "big")
    return bytes([0x02, len(body)]) + body


def import_cert(server, cert_der, **members):
    body = {"Certificate": b64(cert_der)}
    body.update(members)
    return admin(server, "ImportCertificate", body)


def listed(server, **kw):
    """Every certificate, all pages."""
    out, marker = [], None
    while True:
        body = dict(kw)
        if marker:
            body["Marker"] = marker
        page = admin(server, "ListCertificates", body)
        out += page["Certificates"]
        if not page["Truncated"]:
            assert "NextMarker" not in page
            return out
        marker = page["NextMarker"]


def admin_error(server, op, body, code, **kw):
    out = admin(server, op, body, expect=400, **kw)
    assert out["__type"] == code, out
    return out


# ---- the API -----------------------------------------------------------------------------------

def test_import_get_list_delete(server, officer, ca, keys):
    cert = cert_of_key(officer, ca, keys["rsa"], "signer.example")
    got = import_cert(server, der(cert), KeyId="alias/app-signing", Label="app-signing")
    cid = got["CertificateId"]
    assert str(uuid.UUID(cid)) == cid
    # A key's certificate carries the key's id as its CKA_ID: the key objects' CKA_ID.
    assert base64.b64decode(got["ObjectId"]) == keys["rsa"].encode()
    assert got["Label"] == "app-signing" and got["CreatedBy"] == "dev"
    assert base64.b64decode(got["Certificate"]) == der(cert)
    assert got["Subject"] == cert.subject.rfc4514_string()
    assert got["Issuer"] == "CN=hsmd test issuing CA"
    assert int(got["SerialNumber"], 16) == cert.serial_number
    assert got["SerialNumber"] == got["SerialNumber"].lower()
    # Times in epoch seconds, as KMS's CreationDate.
    utc = datetime.timezone.utc
    assert got["NotAfter"] == cert.not_valid_after.replace(tzinfo=utc).timestamp()
    assert got["NotBefore"] == cert.not_valid_before.replace(tzinfo=utc).timestamp()

    one = admin(server, "GetCertificate", {"CertificateId": cid})["Certificate"]
    assert one == {k: v for k, v in got.items()}
    assert cid in [c["CertificateId"] for c in listed(server)]

    admin(server, "DeleteCertificate", {"CertificateId": cid})
    admin_error(server, "GetCertificate", {"CertificateId": cid}, "NotFoundException")
    admin_error(server, "DeleteCertificate", {"CertificateId": cid}, "NotFoundException")
    assert cid not in [c["CertificateId"] for c in listed(server)]


def test_a_key_with_a_certificate_does_not_rotate(server, officer, ca):
    """A rotation replaces a key's public key, and would leave its certificate beside a key
    it no longer certifies: a key a certificate pairs with is not rotated on demand and
    does not take automatic rotation, and a key that rotates automatically takes no
    certificate, until the certificate is deleted (or the rotation turned off)."""
    key = officer.create_key(KeySpec="ECC_NIST_P256",
                             KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    cert = import_cert(server, der(cert_of_key(officer, ca, key, "rotating")),
                       KeyId=key)["CertificateId"]
    st, out = signed_call(server, "TrentService.RotateKeyOnDemand", {"KeyId": key})
    assert (st, out["__type"]) == (400, "ValidationException"), out
    assert f"certificate {cert} certifies key {key}" in out["message"], out
    st, out = signed_call(server, "TrentService.EnableKeyRotation",
                          {"KeyId": key, "RotationPeriodInDays": 90})
    assert (st, out["__type"]) == (400, "ValidationException"), out
    assert out["message"].startswith("EnableKeyRotation: certificate"), out
    assert officer.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    admin(server, "DeleteCertificate", {"CertificateId": cert})
    st, out = signed_call(server, "TrentService.EnableKeyRotation",
                          {"KeyId": key, "RotationPeriodInDays": 90})
    assert st == 200, out
    # Rotating automatically now: a certificate of its key is refused, and stores nothing.
    out = admin_error(server, "ImportCertificate",
                      {"Certificate": b64(der(cert_of_key(officer, ca, key, "again"))),
                       "KeyId": key}, "ValidationException")
    assert f"key {key} rotates automatically" in out["message"], out
    assert [c for c in listed(server) if c.get("Label") == "again"] == []
    # Nor can a certificate staged under a CKA_ID pair with it through its pkcs11-id alias.
    staged = import_cert(server, der(cert_of_key(officer, ca, key, "staged")),
                         ObjectId=b64(b"rotating-tls"))
    with pytest.raises(officer.exceptions.ClientError) as e:
        officer.create_alias(AliasName="alias/pkcs11-id/" + b"rotating-tls".hex(),
                             TargetKeyId=key)
    assert "ValidationException" in str(e.value) and "rotates automatically" in str(e.value)
    assert officer.list_aliases(KeyId=key)["Aliases"] == []
    admin(server, "DeleteCertificate", {"CertificateId": staged["CertificateId"]})
    officer.disable_key_rotation(KeyId=key)
    again = import_cert(server, der(cert_of_key(officer, ca, key, "again")), KeyId=key)
    admin(server, "DeleteCertificate", {"CertificateId": again["CertificateId"]})
    # A key without a certificate rotates as ever.
    other = officer.create_key(KeySpec="ECC_NIST_P256",
                               KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    st, out = signed_call(server, "TrentService.RotateKeyOnDemand", {"KeyId": other})
    assert st == 200, out


def test_a_key_losing_its_pkcs11_id_alias_takes_back_no_stale_certificate(server, officer, ca):
    """A key that loses its pkcs11-id alias (deleted, or moved to another key) takes its key
    id back as its objects' CKA_ID, and with it any certificate stored under that id: after
    a rotation that certificate no longer certifies the key, and a key that rotates takes
    none, so the alias stays until the certificate goes."""
    key = officer.create_key(KeySpec="ECC_NIST_P256",
                             KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    other = officer.create_key(KeySpec="ECC_NIST_P256",
                               KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    cert = import_cert(server, der(cert_of_key(officer, ca, key, "by-key-id")),
                       KeyId=key)["CertificateId"]
    alias = "alias/pkcs11-id/0a1b2c"
    officer.create_alias(AliasName=alias, TargetKeyId=key)
    # Its objects' CKA_ID is now 0a1b2c, which no certificate has: it may rotate.
    st, out = signed_call(server, "TrentService.RotateKeyOnDemand", {"KeyId": key})
    assert st == 200, out
    for call, body in (("DeleteAlias", {"AliasName": alias}),
                       ("UpdateAlias", {"AliasName": alias, "TargetKeyId": other})):
        st, out = signed_call(server, "TrentService." + call, body)
        assert (st, out["__type"]) == (400, "ValidationException"), (call, out)
        assert f"certificate {cert}" in out["message"], out
        assert [a["TargetKeyId"] for a in officer.list_aliases(KeyId=key)["Aliases"]] == [key]
    admin(server, "DeleteCertificate", {"CertificateId": cert})
    officer.update_alias(AliasName=alias, TargetKeyId=other)
    officer.delete_alias(AliasName=alias)
    assert officer.list_aliases(KeyId=other)["Aliases"] == []


def test_rotation_and_a_certificate_racing_for_one_key_do_not_both_land(server, officer, ca):
    """EnableKeyRotation and ImportCertificate for one key at the same moment: each is fine
    alone, and one of them must see the other, so the key never ends up both rotating and
    paired with a certificate (its scheduled rotation would then fail every try)."""
    import threading
    for _ in range(12):
        key = officer.create_key(KeySpec="ECC_NIST_P256",
                                 KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        cert = b64(der(cert_of_key(officer, ca, key, "racing")))
        start = threading.Barrier(2)
        got = {}

        def rotation():
            start.wait()
            got["rotation"] = signed_call(server, "TrentService.EnableKeyRotation",
                                          {"KeyId": key, "RotationPeriodInDays": 90})

        def certificate():
            start.wait()
            got["cert"] = signed_call(server, "HsmdAdmin.ImportCertificate",
                                      {"Certificate": cert, "KeyId": key})

        threads = [threading.Thread(target=f) for f in (rotation, certificate)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        statuses = sorted(got[n][0] for n in ("rotation", "cert"))
        assert statuses == [200, 400], got
        rotates = officer.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"]
        paired = [c for c in listed(server) if base64.b64decode(c["ObjectId"]) == key.encode()]
        assert rotates != bool(paired), (rotates, paired)
        for c in paired:
            admin(server, "DeleteCertificate", {"CertificateId": c["CertificateId"]})


def test_import_without_a_key(server, ca):
    """A CA certificate, say: no key, no CKA_ID unless given, the label as given."""
    other = ec.generate_private_key(ec.SECP256R1())
    pub = other.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    cert = issue(ca, pub, "intermediate")
    got = import_cert(server, der(cert))
    assert got["ObjectId"] == "" and got["Label"] == ""
    got2 = import_cert(server, der(cert), ObjectId=b64(b"\x00\x01id"), Label="ca \u00e9")
    assert base64.b64decode(got2["ObjectId"]) == b"\x00\x01id" and got2["Label"] == "ca \u00e9"
    # The same certificate twice is two objects, as on a PKCS#11 token.
    assert got2["CertificateId"] != got["CertificateId"]
    for c in (got, got2):
        admin(server, "DeleteCertificate", {"CertificateId": c["CertificateId"]})


def test_refused_imports_change_nothing(server, officer, ca, keys):
    before = listed(server)
    rsa_cert = der(cert_of_key(officer, ca, keys["rsa"], "signer"))
    cases = [
        ({"Certificate": b64(b"not a certificate")}, "ValidationException", "X.509"),
        ({"Certificate": b64(rsa_cert + b"\x00")}, "ValidationException", "X.509"),
        ({"Certificate": b64(rsa_cert[:-1])}, "ValidationException", "X.509"),
        ({}, "ValidationException", "Certificate"),
        ({"Certificate": "%%%"}, "SerializationException", "base64"),
        ({"Certificate": b64(b"\x30" * 32769)}, "ValidationException", None),
        # The certificate of one key offered as another's.
        ({"Certificate": b64(rsa_cert), "KeyId": keys["ec"]}, "ValidationException",
         "does not certify"),
        ({"Certificate": b64(rsa_cert), "KeyId": "alias/no-such-key"}, "NotFoundException", None),
        ({"Certificate": b64(rsa_cert), "KeyId": keys["aes"]}, "UnsupportedOperationException",
         None),
        ({"Certificate": b64(rsa_cert), "Label": "x" * 257}, "ValidationException", "Label"),
        ({"Certificate": b64(rsa_cert), "Label": "tab\there"}, "ValidationException", "Label"),
        ({"Certificate": b64(rsa_cert), "Label": "next\u0085line"}, "ValidationException",
         "control"),
        ({"Certificate": b64(rsa_cert), "Label": "c1\u009f"}, "ValidationException", "control"),
        ({"Certificate": b64(rsa_cert), "ObjectId": b64(b"i" * 257)}, "ValidationException",
         "ObjectId"),
    ]
    for body, code, words in cases:
        out = admin_error(server, "ImportCertificate", body, code)
        if words:
            assert words.lower() in out["message"].lower(), (body.keys(), out)
    # A BER (not DER) encoding of the same certificate: a long-form length where DER has
    # the short or shortest one.
    assert rsa_cert[1] == 0x82
    ber = bytes([0x30, 0x83, 0x00]) + rsa_cert[2:]
    admin_error(server, "ImportCertificate", {"Certificate": b64(ber)}, "ValidationException")
    for bad in ("", "not-a-uuid", "../../etc", str(uuid.uuid4())):
        admin_error(server, "GetCertificate", {"CertificateId": bad},
                    "ValidationException" if bad == "" else "NotFoundException")
    admin_error(server, "ListCertificates", {"Marker": "nope"}, "InvalidMarkerException")
    admin_error(server, "ListCertificates", {"Limit": 0}, "ValidationException")
    admin_error(server, "ListCertificates", {"Limit": 1001}, "ValidationException")
    assert listed(server) == before


def test_paging(server, ca):
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ids = {import_cert(server, der(issue(ca, pub, f"page {i}")), Label=f"p{i}")["CertificateId"]
           for i in range(5)}
    pages = []
    marker = None
    while True:
        body = {"Limit": 2}
        if marker:
            body["Marker"] = marker
        page = admin(server, "ListCertificates", body)
        pages.append([c["CertificateId"] for c in page["Certificates"]])
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    flat = [c for p in pages for c in p]
    assert ids <= set(flat) and len(flat) == len(set(flat))
    assert all(len(p) == 2 for p in pages[:-1]) and flat == sorted(flat)
    for cid in ids:
        admin(server, "DeleteCertificate", {"CertificateId": cid})


def test_markers_are_bound_to_the_listing(server, ca, keys):
    """ListCertificates' markers are opaque and its own (server/marker.h): a bare
    certificate id, or another listing's marker, is refused with InvalidMarkerException
    (400) and lists nothing; its own markers are refused by the other listings."""
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ids = [import_cert(server, der(issue(ca, pub, f"bound {i}")))["CertificateId"]
           for i in range(3)]
    try:
        page = admin(server, "ListCertificates", {"Limit": 1})
        assert page["Truncated"]
        own = page["NextMarker"]
        first = page["Certificates"][0]["CertificateId"]
        assert first not in own and len(own) < 64  # opaque; fits a 64-byte client buffer
        st, keys_page = signed_call(server, "TrentService.ListKeys", {"Limit": 1})
        assert st == 200 and keys_page["Truncated"], keys_page
        for foreign in (first, keys_page["NextMarker"], keys_page["Keys"][0]["KeyId"]):
            admin_error(server, "ListCertificates", {"Marker": foreign},
                        "InvalidMarkerException")
        for op, body in (("ListKeys", {}), ("ListAliases", {}),
                         ("ListResourceTags", {"KeyId": keys["aes"]})):
            st, out = signed_call(server, "TrentService." + op, dict(body, Marker=own))
            assert st == 400 and out["__type"] == "InvalidMarkerException", (op, st, out)
        # Its own markers walk the listing: every certificate exactly once.
        walked = [c["CertificateId"] for c in listed(server)]
        paged, marker = [], None
        while True:
            page = admin(server, "ListCertificates",
                         {"Limit": 1, **({"Marker": marker} if marker else {})})
            paged += [c["CertificateId"] for c in page["Certificates"]]
            if not page["Truncated"]:
                break
            marker = page["NextMarker"]
        assert paged == walked and len(paged) == len(set(paged)) and set(ids) <= set(paged)
    finally:
        for cid in ids:
            admin(server, "DeleteCertificate", {"CertificateId": cid})


def test_list_filters(server, ca):
    """ListCertificates by ObjectId and by Label: what a PKCS#11 search by CKA_ID or
    CKA_LABEL asks for, read through the store's indexes."""
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    made = {}
    for i, (oid, label) in enumerate([(b"a", "x"), (b"a", "y"), (b"b", "x"), (b"", "x")]):
        made[i] = import_cert(server, der(issue(ca, pub, f"filter {i}")),
                              ObjectId=b64(oid), Label=label)["CertificateId"]

    def ids(**kw):
        return {c["CertificateId"] for c in listed(server, **kw)}
    assert ids(ObjectId=b64(b"a")) == {made[0], made[1]}
    assert ids(Label="x") >= {made[0], made[2], made[3]} and made[1] not in ids(Label="x")
    assert ids(ObjectId=b64(b"a"), Label="x") == {made[0]}
    assert made[3] in ids(ObjectId="") and made[0] not in ids(ObjectId="")
    assert ids(ObjectId=b64(b"zz")) == set() and ids(Label="nope") == set()
    # Paging within a filter.
    assert ids(ObjectId=b64(b"a"), Limit=1) == {made[0], made[1]}
    admin_error(server, "ListCertificates", {"ObjectId": b64(b"i" * 257)}, "ValidationException")
    admin_error(server, "ListCertificates", {"Label": "x" * 257}, "ValidationException")
    # IncludeCertificate false: what names each one, without the certificate.
    full = {c["CertificateId"]: c for c in listed(server, ObjectId=b64(b"a"))}
    short = listed(server, ObjectId=b64(b"a"), IncludeCertificate=False)
    assert {c["CertificateId"] for c in short} == set(full) and len(short) == 2
    for c in short:
        assert set(c) == {"CertificateId", "Label", "ObjectId", "NotAfter"}, c
        assert [c[k] for k in c] == [full[c["CertificateId"]][k] for k in c]
    assert listed(server, ObjectId=b64(b"a"), IncludeCertificate=True) == list(full.values())
    admin_error(server, "ListCertificates", {"IncludeCertificate": "no"},
                "SerializationException")
    for cid in made.values():
        admin(server, "DeleteCertificate", {"CertificateId": cid})


def test_roles(server, officer, ca, keys, user):
    cid = import_cert(server, der(cert_of_key(officer, ca, keys["ec"], "roles")),
                      KeyId=keys["ec"])["CertificateId"]
    # A crypto-user and an auditor read certificates; only a crypto-officer changes them.
    akid, secret = new_user(server, "cert-auditor", ["auditor"])
    cakid, csecret = new_user(server, "cert-custodian", ["custodian"])
    for who in ((user.akid, user.secret), (akid, secret)):
        assert admin(server, "GetCertificate", {"CertificateId": cid}, akid=who[0],
                     secret=who[1])["Certificate"]["CertificateId"] == cid
        assert cid in [c["CertificateId"] for c in
                       admin(server, "ListCertificates", {}, akid=who[0], secret=who[1])
                       ["Certificates"]]
        admin_error(server, "DeleteCertificate", {"CertificateId": cid},
                    "AccessDeniedException", akid=who[0], secret=who[1])
        admin_error(server, "ImportCertificate", {"Certificate": b64(b"x")},
                    "AccessDeniedException", akid=who[0], secret=who[1])
    admin_error(server, "ListCertificates", {}, "AccessDeniedException", akid=cakid,
                secret=csecret)
    admin(server, "GetCertificate", {"CertificateId": cid})
    admin(server, "DeleteCertificate", {"CertificateId": cid})


def test_a_key_policy_keeps_officers_from_its_key_objects_certificates(server, officer, ca):
    """A certificate that pairs with a key's PKCS#11 objects (an ObjectId that is their
    CKA_ID, the key's id or its own alias/pkcs11-id/) must certify that key, and the
    caller must be allowed the key's public key, to be imported or deleted: an officer
    the key's policy leaves out could pair the key with a certificate of its own choosing
    (Java's key store pairs by CKA_ID), or take its certificate away."""
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "kms:*", "Resource": "*",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/dev"}}]}
    kid = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
                             Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    own_id = b"\x42\x17own-id"
    officer.create_alias(AliasName="alias/pkcs11-id/" + own_id.hex(), TargetKeyId=kid)
    akid, secret = new_user(server, "cert-outsider", ["crypto-officer"])
    out = dict(akid=akid, secret=secret)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue = der(issue(ca, rogue_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo), "rogue"))
    genuine = der(cert_of_key(officer, ca, kid, "genuine"))
    before = listed(server)
    # Not its certificate: refused for everyone, by its id or by its own CKA_ID.
    for oid in (kid.encode(), own_id):
        admin_error(server, "ImportCertificate", {"Certificate": b64(rogue),
                                                  "ObjectId": b64(oid)},
                    "ValidationException")
        admin_error(server, "ImportCertificate", {"Certificate": b64(rogue),
                                                  "ObjectId": b64(oid)},
                    "AccessDeniedException", **out)
        # Its certificate, but the officer may not read the key.
        admin_error(server, "ImportCertificate", {"Certificate": b64(genuine),
                                                  "ObjectId": b64(oid)},
                    "AccessDeniedException", **out)
    # With KeyId, ObjectId can only be the key's own CKA_ID.
    out_msg = admin_error(server, "ImportCertificate",
                          {"Certificate": b64(genuine), "KeyId": kid,
                           "ObjectId": b64(b"elsewhere")}, "ValidationException")
    assert "ObjectId" in out_msg["message"], out_msg
    assert listed(server) == before
    # The key's own certificate, by the key's own principal: stored under its CKA_ID.
    got = import_cert(server, genuine, ObjectId=b64(own_id))
    assert base64.b64decode(got["ObjectId"]) == own_id
    got2 = import_cert(server, genuine, KeyId=kid, ObjectId=b64(own_id))
    assert base64.b64decode(got2["ObjectId"]) == own_id
    # The outsider cannot take them away; the key's principal can.
    for c in (got, got2):
        admin_error(server, "DeleteCertificate", {"CertificateId": c["CertificateId"]},
                    "AccessDeniedException", **out)
        admin(server, "DeleteCertificate", {"CertificateId": c["CertificateId"]})
    # An ObjectId no key has pairs with nothing: any officer may use it, as before.
    free = import_cert(server, rogue, ObjectId=b64(b"no key has this id"), **out)
    admin(server, "DeleteCertificate", {"CertificateId": free["CertificateId"]}, **out)
    # But it cannot be staged for a key to take later: giving a key that CKA_ID (its
    # pkcs11-id alias, made or moved) is refused while a certificate with it does not
    # certify the key, and nothing changes.
    staged_id = b"server-tls"
    name = "alias/pkcs11-id/" + staged_id.hex()
    staged = import_cert(server, rogue, ObjectId=b64(staged_id), **out)
    other, third = (officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
                                       Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
                    for _ in range(2))
    with pytest.raises(officer.exceptions.ClientError) as e:
        officer.create_alias(AliasName=name, TargetKeyId=other)
    assert staged["CertificateId"] in str(e.value) and "ValidationException" in str(e.value)
    assert officer.list_aliases(KeyId=other)["Aliases"] == []
    # Its own certificate under that id is no obstacle; the staged one, deleted, neither.
    admin(server, "DeleteCertificate", {"CertificateId": staged["CertificateId"]}, **out)
    mine = import_cert(server, der(cert_of_key(officer, ca, other, "other")),
                       ObjectId=b64(staged_id))
    officer.create_alias(AliasName=name, TargetKeyId=other)
    # Moving the id to a key its certificate does not certify is refused the same way.
    with pytest.raises(officer.exceptions.ClientError) as e:
        officer.update_alias(AliasName=name, TargetKeyId=third)
    assert mine["CertificateId"] in str(e.value) and "ValidationException" in str(e.value)
    assert [a["AliasName"] for a in officer.list_aliases(KeyId=other)["Aliases"]] == [name]
    officer.delete_alias(AliasName=name)
    admin(server, "DeleteCertificate", {"CertificateId": mine["CertificateId"]})


def test_audit_records(server, officer, ca, keys):
    cid = import_cert(server, der(cert_of_key(officer, ca, keys["rsa"], "audited")),
                      KeyId="alias/app-signing")["CertificateId"]
    admin(server, "GetCertificate", {"CertificateId": cid})
    admin(server, "DeleteCertificate", {"CertificateId": cid})
    admin_error(server, "DeleteCertificate", {"CertificateId": cid}, "NotFoundException")
    recs = [r for r in audit_records(server.data_dir)
            if r.get("type") == "request" and r.get("extra", {}).get("cert_id") == cid]
    assert [(r["op"], r["outcome"]) for r in recs] == [
        ("ImportCertificate", "success"), ("GetCertificate", "success"),
        ("DeleteCertificate", "success"), ("DeleteCertificate", "error")], recs
    assert recs[0]["key_id"] == keys["rsa"]
    assert all(r["principal"].endswith(":user/dev") for r in recs)
    # Refused for a key it names by its CKA_ID alone: the record names that key.
    def refused_for_ec():
        return [x for x in audit_records(server.data_dir)
                if x.get("op") == "ImportCertificate" and x.get("outcome") == "error"
                and x.get("key_id") == keys["ec"]]
    before = len(refused_for_ec())
    r = admin(server, "ImportCertificate",
              {"Certificate": b64(der(cert_of_key(officer, ca, keys["rsa"], "wrong"))),
               "ObjectId": b64(keys["ec"].encode())}, expect=400)
    assert r["__type"] == "ValidationException", r
    assert eventually(lambda: len(refused_for_ec()) == before + 1)
    # Nothing of the certificate itself is in the records, only its id.
    assert all("Certificate" not in str(r.get("extra", {})) for r in recs)
    # The audit report lists the import and the deletion among the changes, not the read.
    files = sorted(glob.glob(os.path.join(server.data_dir, "audit", "audit-*.jsonl")))
    p = subprocess.run([HSMCTL, "audit", "report", "--live", "--json"] + files,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    changes = [c["op"] for c in json.loads(p.stdout)["changes"]
               if c.get("extra", {}).get("cert_id") == cid]
    assert changes == ["ImportCertificate", "DeleteCertificate"], changes


def test_certificates_survive_a_restart(ca):
    node = start_dev()
    try:
        kms = client(node)
        kid = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        cert = der(cert_of_key(kms, ca, kid, "durable"))
        cid = import_cert(node, cert, KeyId=kid, Label="durable")["CertificateId"]
        node = restart_dev(node)
        got = admin(node, "GetCertificate", {"CertificateId": cid})["Certificate"]
        assert base64.b64decode(got["Certificate"]) == cert and got["Label"] == "durable"
        assert base64.b64decode(got["ObjectId"]) == kid.encode()
    finally:
        node.cleanup()


def test_certificate_changes_can_wait_for_custodians(ca):
    """approval_operations may list ImportCertificate and DeleteCertificate."""
    first = start_dev()
    custodian = new_user(first, "keeper", ["custodian"])
    first.stop()
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    node = Hsmd(["--dev", "--approval-quorum", "1", "--approval-operations",
                 "ImportCertificate,DeleteCertificate"], env=env, data_dir=first.data_dir)
    try:
        pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        body = {"Certificate": b64(der(issue(ca, pub, "waits"))), "Label": "waits"}
        refused = admin(node, "ImportCertificate", body, expect=400)
        assert refused["__type"] == "ApprovalRequiredException", refused
        assert admin(node, "ListCertificates")["Certificates"] == []
        approval = refused["message"].split("approval request ")[1].split()[0]
        admin(node, "ApproveRequest", {"ApprovalId": approval}, akid=custodian[0],
              secret=custodian[1])
        cid = admin(node, "ImportCertificate", body)["CertificateId"]
        assert [c["CertificateId"] for c in admin(node, "ListCertificates")["Certificates"]] == [cid]
        refused = admin(node, "DeleteCertificate", {"CertificateId": cid}, expect=400)
        assert refused["__type"] == "ApprovalRequiredException", refused
        # Reads never wait.
        admin(node, "GetCertificate", {"CertificateId": cid})
    finally:
        node.cleanup()
        first.cleanup()


def test_metrics_count_certificates_and_those_expiring(server, ca):
    """hsmd_certificates and hsmd_certificates_expiring_30d (notAfter within 30 days, or
    past), counted in the background and again at once after an import or a deletion."""
    def gauges():
        return metric(server, "hsmd_certificates"), metric(server, "hsmd_certificates_expiring_30d")

    def settles_at(want):  # the scheduler thread counts, woken by the change
        deadline = time.monotonic() + 30
        while gauges() != want and time.monotonic() < deadline:
            time.sleep(0.05)
        return gauges()

    # The baseline from the store, not from gauges another test's change may not have
    # reached yet.
    held = listed(server)
    total = len(held)
    soon = sum(1 for c in held if c["NotAfter"] < time.time() + 30 * 86400)
    assert settles_at((total, soon)) == (total, soon)
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ids = [import_cert(server, der(issue(ca, pub, f"valid {days} days", days=days)))["CertificateId"]
           for days in (10, 29, 31, 365)]
    # Expired yesterday: hsmd keeps what it is given; the gauge says so.
    now = datetime.datetime.now(datetime.timezone.utc)
    old = (x509.CertificateBuilder().subject_name(ca.name).issuer_name(ca.name)
           .public_key(serialization.load_der_public_key(pub)).serial_number(7)
           .not_valid_before(now - datetime.timedelta(days=90))
           .not_valid_after(now - datetime.timedelta(days=1)).sign(ca.key, hashes.SHA256()))
    ids.append(import_cert(server, der(old))["CertificateId"])
    assert settles_at((total + 5, soon + 3)) == (total + 5, soon + 3)
    admin(server, "DeleteCertificate", {"CertificateId": ids[0]})
    assert settles_at((total + 4, soon + 2)) == (total + 4, soon + 2)
    for cid in ids[1:]:
        admin(server, "DeleteCertificate", {"CertificateId": cid})
    assert settles_at((total, soon)) == (total, soon)


# ---- hsmctl --------------------------------------------------------------------------------------

def hsmctl(server, *args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET)
    return subprocess.run([HSMCTL, "--endpoint", server.endpoint, *args], env=env,
                          capture_output=True, text=True, timeout=60)


def fields(text):
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def test_hsmctl(server, officer, ca, keys, tmp_path):
    cert = cert_of_key(officer, ca, keys["rsa"], "hsmctl.example")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "c.pem").write_bytes(pem)
    p = hsmctl(server, "cert", "import", str(tmp_path / "c.pem"), "--key", "alias/app-signing")
    assert p.returncode == 0, p.stderr
    got = fields(p.stdout)
    cid = got["CertificateId"]
    assert got["Label"] == "app-signing"  # the alias --key named: the key objects' label
    assert base64.b64decode(got["ObjectId"]) == keys["rsa"].encode()
    assert "Certificate" not in got and "Subject" in got
    # DER works as well, and --id and --label are taken as given.
    (tmp_path / "c.der").write_bytes(der(cert))
    p = hsmctl(server, "cert", "import", str(tmp_path / "c.der"), "--id", "0a0b", "--label", "x")
    assert p.returncode == 0, p.stderr
    cid2 = fields(p.stdout)["CertificateId"]
    assert fields(p.stdout)["ObjectId"] == b64(b"\x0a\x0b")

    p = hsmctl(server, "cert", "list")
    assert p.returncode == 0 and cid in p.stdout and cid2 in p.stdout, p.stderr
    # Listing a key's certificates (by the alias, as by the key id's CKA_ID), or by --id, --label.
    for args, want in ((["--key", "alias/app-signing"], {cid}), (["--id", "0a0b"], {cid2}),
                       (["--label", "x"], {cid2}), (["--key", keys["rsa"], "--label", "x"], set()),
                       (["--id", keys["rsa"].encode().hex()], {cid})):
        p = hsmctl(server, "cert", "list", *args)
        assert p.returncode == 0, (args, p.stderr)
        got = {fields(block)["CertificateId"] for block in p.stdout.split("\n\n") if block.strip()}
        assert got == want, (args, p.stdout)
    for bad in (["--id", "0a", "--key", "alias/app-signing"], ["--frob"], ["--label"]):
        assert hsmctl(server, "cert", "list", *bad).returncode == 2, bad
    p = hsmctl(server, "cert", "list", "--key", "alias/nope")
    assert p.returncode == 1 and "Alias alias/nope is not found" in p.stderr, p.stderr
    p = hsmctl(server, "cert", "show", cid, "--pem")
    assert p.returncode == 0 and p.stdout.encode() == pem, p.stderr
    p = hsmctl(server, "cert", "show", cid)
    assert p.returncode == 0 and fields(p.stdout)["Subject"] == cert.subject.rfc4514_string()

    # Refusals: exit status 1 with the server's message, usage errors 2.
    (tmp_path / "junk").write_text("hello")
    p = hsmctl(server, "cert", "import", str(tmp_path / "junk"))
    assert p.returncode == 1 and "no PEM or DER certificate" in p.stderr, p.stderr
    p = hsmctl(server, "cert", "import", str(tmp_path / "c.pem"), "--key", keys["ec"])
    assert p.returncode == 1 and "does not certify" in p.stderr, p.stderr
    p = hsmctl(server, "cert", "frobnicate")
    assert p.returncode == 2, p.stderr

    # A PEM chain: the key's certificate with the options (stored above with this label and
    # ObjectId, so not again: the same import run twice keeps one), then its issuer, once.
    ca_pem = ca.cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "chain.pem").write_bytes(pem + ca_pem)
    p = hsmctl(server, "cert", "import", str(tmp_path / "chain.pem"), "--key", "alias/app-signing")
    assert p.returncode == 0, p.stderr
    leaf, issuer = [fields(block) for block in p.stdout.split("\n\n")]
    assert leaf == {"CertificateId": cid, "AlreadyStored": "true"}
    assert issuer["Subject"] == "CN=hsmd test issuing CA" and issuer["ObjectId"] == ""
    other = cert_of_key(officer, ca, keys["ec"], "second.example").public_bytes(
        serialization.Encoding.PEM)
    (tmp_path / "chain2.pem").write_bytes(other + ca_pem)
    p = hsmctl(server, "cert", "import", str(tmp_path / "chain2.pem"), "--key", keys["ec"])
    assert p.returncode == 0, p.stderr
    leaf2, again = [fields(block) for block in p.stdout.split("\n\n")]
    assert again == {"CertificateId": issuer["CertificateId"], "AlreadyStored": "true"}
    assert leaf2["Label"] == "" and base64.b64decode(leaf2["ObjectId"]) == keys["ec"].encode()
    stored = listed(server)
    p = hsmctl(server, "cert", "import", str(tmp_path / "chain2.pem"), "--key", keys["ec"])
    assert p.returncode == 0, p.stderr
    assert [fields(block) for block in p.stdout.split("\n\n")] == [
        {"CertificateId": leaf2["CertificateId"], "AlreadyStored": "true"},
        {"CertificateId": issuer["CertificateId"], "AlreadyStored": "true"}]
    assert listed(server) == stored
    assert {cid, cid2, issuer["CertificateId"], leaf2["CertificateId"]} <= {
        c["CertificateId"] for c in stored}

    for c in (cid, cid2, issuer["CertificateId"], leaf2["CertificateId"]):
        p = hsmctl(server, "cert", "delete", c)
        assert p.returncode == 0, p.stderr
    p = hsmctl(server, "cert", "show", cid)
    assert p.returncode == 1 and "does not exist" in p.stderr, p.stderr


# ---- PKCS#11: PyKCS11 ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def p11(server, keys):
    assert os.path.exists(MODULE), f"{MODULE} is not built"
    old = os.environ.get("HSM_PKCS11_ENDPOINT")
    os.environ["HSM_PKCS11_ENDPOINT"] = server.endpoint
    lib = PyKCS11.PyKCS11Lib()
    lib.load(MODULE)
    yield lib
    lib.lib.Unload()
    if old is None:
        os.environ.pop("HSM_PKCS11_ENDPOINT", None)
    else:
        os.environ["HSM_PKCS11_ENDPOINT"] = old


def open_session(lib, pin, rw=True):
    """A session, logged in with pin (None: the token is logged in already, by another)."""
    flags = PyKCS11.CKF_SERIAL_SESSION | (PyKCS11.CKF_RW_SESSION if rw else 0)
    s = lib.openSession(0, flags)
    if pin is not None:
        s.login(pin)
    return s


def close(s):
    s.logout()
    s.closeSession()


def value(s, obj, t):
    v = s.getAttributeValue(obj, [t])[0]
    return bytes(v) if isinstance(v, (tuple, list, PyKCS11.LowLevel.ckbytelist)) else v


def ckr(code, fn, *args):
    with pytest.raises(PyKCS11.PyKCS11Error) as e:
        fn(*args)
    assert e.value.value == code, (CKR.get(e.value.value, hex(e.value.value)), CKR.get(code))


def handles(s, template):
    return [o.value() for o in s.findObjects(template)]


def cert_template(cert_der, token=True, label="", cka_id=None, extra=()):
    t = [(CKA_CLASS, CKO_CERTIFICATE), (CKA_CERTIFICATE_TYPE, CKC_X_509),
         (CKA_TOKEN, token), (CKA_VALUE, cert_der)]
    if label:
        t.append((CKA_LABEL, label))
    if cka_id is not None:
        t.append((CKA_ID, cka_id))
    t += list(extra)
    return t


def test_pkcs11_certificate_objects(server, officer, ca, keys, user, p11):
    cert = cert_of_key(officer, ca, keys["rsa"], "p11.example")
    cid = import_cert(server, der(cert), KeyId=keys["rsa"], Label="app-signing")["CertificateId"]
    s = open_session(p11, user.pin)
    try:
        found = s.findObjects([(CKA_CLASS, CKO_CERTIFICATE)])
        mine = [o for o in found if value(s, o, CKA_VALUE) == der(cert)]
        assert len(mine) == 1
        o = mine[0]
        assert value(s, o, CKA_ID) == keys["rsa"].encode()
        assert value(s, o, CKA_LABEL) == "app-signing"
        assert value(s, o, CKA_CERTIFICATE_TYPE) == CKC_X_509
        assert value(s, o, CKA_TOKEN) is True and value(s, o, CKA_PRIVATE) is False
        assert value(s, o, CKA_TRUSTED) is False and value(s, o, CKA_MODIFIABLE) is False
        # PyKCS11 does not know this attribute's type: its CK_ULONG comes as bytes.
        assert value(s, o, CKA_CERTIFICATE_CATEGORY) == bytes(8)
        assert value(s, o, CKA_SUBJECT) == cert.subject.public_bytes()
        assert value(s, o, CKA_ISSUER) == cert.issuer.public_bytes()
        assert value(s, o, CKA_SERIAL_NUMBER) == serial_der(cert.serial_number)
        assert value(s, o, CKA_CHECK_VALUE) == hashlib.sha1(der(cert)).digest()[:3]
        assert value(s, o, CKA_PUBLIC_KEY_INFO) == officer.get_public_key(
            KeyId=keys["rsa"])["PublicKey"]
        # The key pair and its certificate share CKA_ID: one search finds all three.
        by_id = s.findObjects([(CKA_ID, keys["rsa"].encode())])
        classes = sorted(value(s, x, CKA_CLASS) for x in by_id)
        assert classes == sorted([CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE])
        # A search for keys lists no certificate, and one by label finds it.
        assert o.value() not in handles(s, [(CKA_CLASS, CKO_PRIVATE_KEY)])
        assert handles(s, [(CKA_LABEL, "app-signing"), (CKA_CLASS, CKO_CERTIFICATE)]) == [o.value()]
        # Deleted in hsmd: gone at the next search, by CKA_ID (which reads that CKA_ID's
        # certificates alone) as by class.
        admin(server, "DeleteCertificate", {"CertificateId": cid})
        assert len(s.findObjects([(CKA_ID, keys["rsa"].encode())])) == 2
        assert all(value(s, x, CKA_VALUE) != der(cert)
                   for x in s.findObjects([(CKA_CLASS, CKO_CERTIFICATE)]))
        # One stored in hsmd is found by a search naming its CKA_ID, or its label.
        cid = import_cert(server, der(cert), KeyId=keys["rsa"], Label="app-signing")["CertificateId"]
        found = s.findObjects([(CKA_ID, keys["rsa"].encode()), (CKA_CLASS, CKO_CERTIFICATE)])
        assert [value(s, x, CKA_VALUE) for x in found] == [der(cert)]
        assert len(s.findObjects([(CKA_LABEL, "app-signing")])) == 3  # the key pair and it
        admin(server, "DeleteCertificate", {"CertificateId": cid})
        assert s.findObjects([(CKA_LABEL, "app-signing"), (CKA_CLASS, CKO_CERTIFICATE)]) == []
    finally:
        close(s)


def test_a_key_with_its_own_cka_id(server, officer, ca, user, p11, tmp_path):
    """A key an alias gives a CKA_ID of its own (what pkcs11-tool --keypairgen --id makes;
    here an operator's CreateAlias): its certificate takes that id as its ObjectId, from
    ImportCertificate as from hsmctl, and one PKCS#11 search by it finds all three objects."""
    kid = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"]["KeyId"]
    officer.create_alias(AliasName="alias/own-id-key", TargetKeyId=kid)
    officer.create_alias(AliasName="alias/pkcs11-id/c0de01", TargetKeyId=kid)
    cert = cert_of_key(officer, ca, kid, "own-id.example")
    got = import_cert(server, der(cert), KeyId=kid)
    assert base64.b64decode(got["ObjectId"]) == b"\xc0\xde\x01"
    admin(server, "DeleteCertificate", {"CertificateId": got["CertificateId"]})
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    p = hsmctl(server, "cert", "import", str(tmp_path / "c.pem"), "--key", "alias/own-id-key")
    assert p.returncode == 0, p.stderr
    assert fields(p.stdout)["ObjectId"] == b64(b"\xc0\xde\x01")
    cid = fields(p.stdout)["CertificateId"]
    p = hsmctl(server, "cert", "list", "--key", kid)  # the key's certificates: by its CKA_ID
    assert p.returncode == 0 and cid in p.stdout, (p.stdout, p.stderr)
    s = open_session(p11, user.pin)
    try:
        found = s.findObjects([(CKA_ID, b"\xc0\xde\x01")])
        assert sorted(value(s, x, CKA_CLASS) for x in found) == sorted(
            [CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE])
        assert {value(s, x, CKA_LABEL) for x in found} == {"own-id-key"}
    finally:
        close(s)
    admin(server, "DeleteCertificate", {"CertificateId": cid})


def module_calls(server, since, who="cert-app"):
    """The certificate reads the module made as who since the audit trail held `since` records."""
    recs = audit_records(server.data_dir)[since:]
    return sorted(r["op"] for r in recs if r.get("principal", "").endswith(f":user/{who}")
                  and r["op"] in ("ListCertificates", "GetCertificate"))


def test_pkcs11_reads_only_the_certificates_it_lacks(server, officer, ca, keys, user, p11):
    """Certificates never change once stored: a search lists what names them and reads the
    DER of new ones alone, or in one more listing when there are many."""
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    every = [(CKA_CLASS, CKO_CERTIFICATE)]
    # One there at login (a module that has none reads the first it finds with their DER).
    made = [import_cert(server, der(issue(ca, pub, "resident")))["CertificateId"]]
    s = open_session(p11, user.pin)
    try:
        def found():
            return {bytes(value(s, o, CKA_VALUE)) for o in s.findObjects(every)}
        before = found()
        for n, expect in ((3, ["GetCertificate"] * 3 + ["ListCertificates"]),
                          (20, ["ListCertificates"] * 2), (0, ["ListCertificates"])):
            certs = [der(issue(ca, pub, f"batch {n} #{i}")) for i in range(n)]
            made += [import_cert(server, c)["CertificateId"] for c in certs]
            since = len(audit_records(server.data_dir))
            now = found()
            assert module_calls(server, since) == expect, n
            assert now == before | set(certs)
            before = now
        # Deleted through the API: gone at the next search, with nothing to read.
        gone = admin(server, "GetCertificate", {"CertificateId": made[-1]})["Certificate"]
        admin(server, "DeleteCertificate", {"CertificateId": made.pop()})
        since = len(audit_records(server.data_dir))
        assert found() == before - {base64.b64decode(gone["Certificate"])}
        assert module_calls(server, since) == ["ListCertificates"]
    finally:
        close(s)
        for cid in made:
            admin(server, "DeleteCertificate", {"CertificateId": cid})


def test_pkcs11_create_and_destroy(server, officer, ca, keys, user, p11):
    cert = cert_of_key(officer, ca, keys["ec"], "created.example")
    before = listed(server)
    s = open_session(p11, f"{DEV_AKID}:{DEV_SECRET}")
    try:
        o = s.createObject(cert_template(der(cert), label="app-ec", cka_id=keys["ec"].encode(),
                                         extra=[(CKA_SUBJECT, cert.subject.public_bytes()),
                                                (CKA_ISSUER, cert.issuer.public_bytes()),
                                                (CKA_SERIAL_NUMBER,
                                                 serial_der(cert.serial_number))]))
        stored = [c for c in listed(server) if c not in before]
        assert len(stored) == 1
        assert base64.b64decode(stored[0]["Certificate"]) == der(cert)
        assert stored[0]["Label"] == "app-ec"
        assert base64.b64decode(stored[0]["ObjectId"]) == keys["ec"].encode()
        assert value(s, o, CKA_TOKEN) is True and value(s, o, CKA_LABEL) == "app-ec"
        assert o.value() in handles(s, [(CKA_CLASS, CKO_CERTIFICATE)])
        s.destroyObject(o)
        assert listed(server) == before
        assert o.value() not in handles(s, [(CKA_CLASS, CKO_CERTIFICATE)])
        # Without CKA_ID and CKA_LABEL: stored without them.  (An attribute given twice alike
        # is one value.)
        o = s.createObject(cert_template(der(cert), extra=[(CKA_TOKEN, True)]))
        stored = [c for c in listed(server) if c not in before]
        assert [(c["Label"], c["ObjectId"]) for c in stored] == [("", "")]
        s.destroyObject(o)
        assert listed(server) == before
    finally:
        close(s)


def test_pkcs11_session_certificates(server, officer, ca, keys, user, p11):
    """CKA_TOKEN false: the module keeps it for the session; hsmd never sees it."""
    cert = cert_of_key(officer, ca, keys["rsa"], "session.example")
    before = listed(server)
    s = open_session(p11, user.pin, rw=False)  # session objects need no R/W session
    try:
        o = s.createObject(cert_template(der(cert), token=False, label="temp"))
        assert value(s, o, CKA_TOKEN) is False and value(s, o, CKA_VALUE) == der(cert)
        assert o.value() in handles(s, [(CKA_CLASS, CKO_CERTIFICATE)])
        assert listed(server) == before
        s.destroyObject(o)
        assert o.value() not in handles(s, [(CKA_CLASS, CKO_CERTIFICATE)])
        o = s.createObject(cert_template(der(cert), token=False))
    finally:
        close(s)
    s = open_session(p11, user.pin)
    try:  # closing the session dropped it
        assert all(value(s, x, CKA_TOKEN) for x in s.findObjects([(CKA_CLASS, CKO_CERTIFICATE)]))
    finally:
        close(s)


def test_pkcs11_refused_creations(server, officer, ca, keys, user, p11):
    cert = cert_of_key(officer, ca, keys["rsa"], "refused.example")
    other = cert_of_key(officer, ca, keys["ec"], "other.example")
    before = listed(server)
    s = open_session(p11, f"{DEV_AKID}:{DEV_SECRET}")
    ro = open_session(p11, None, rw=False)
    try:
        bad = [
            (PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, cert_template(b"\x30\x03\x02\x01\x01")),
            (PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, cert_template(der(cert) + b"\x00")),
            (PyKCS11.CKR_TEMPLATE_INCOMPLETE, [(CKA_CLASS, CKO_CERTIFICATE),
                                               (CKA_CERTIFICATE_TYPE, CKC_X_509), (CKA_TOKEN, True)]),
            (PyKCS11.CKR_TEMPLATE_INCOMPLETE, [(CKA_CLASS, CKO_CERTIFICATE), (CKA_VALUE, der(cert))]),
            (PyKCS11.CKR_TEMPLATE_INCOMPLETE, [(CKA_VALUE, der(cert))]),
            (PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, [(CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
                                                   (CKA_VALUE, b"k" * 32)]),
            (PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, [(CKA_CLASS, CKO_CERTIFICATE),
                                                   (CKA_CERTIFICATE_TYPE, 1),
                                                   (CKA_VALUE, der(cert))]),
            (PyKCS11.CKR_TEMPLATE_INCONSISTENT, cert_template(
                der(cert), extra=[(CKA_SUBJECT, other.subject.public_bytes())])),
            (PyKCS11.CKR_TEMPLATE_INCONSISTENT, cert_template(
                der(cert), extra=[(CKA_SERIAL_NUMBER, serial_der(other.serial_number))])),
            (PyKCS11.CKR_ATTRIBUTE_READ_ONLY, cert_template(der(cert), extra=[(CKA_TRUSTED, True)])),
            (PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, cert_template(der(cert), extra=[(CKA_PRIVATE, True)])),
            (PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, cert_template(der(cert), label="x" * 257)),
            (PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, cert_template(der(cert), label="tab\there")),
            (PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, cert_template(der(cert), cka_id=b"i" * 257)),
            (PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID, cert_template(der(cert), extra=[(CKA_UNKNOWN, b"x")])),
            # One attribute with two values (PKCS#11 v2.40 4.1.1), not read as its first.
            (PyKCS11.CKR_TEMPLATE_INCONSISTENT, cert_template(der(cert), label="one",
                                                              extra=[(CKA_LABEL, "two")])),
            (PyKCS11.CKR_TEMPLATE_INCONSISTENT, cert_template(der(cert),
                                                              extra=[(CKA_TOKEN, False)])),
            (PyKCS11.CKR_TEMPLATE_INCONSISTENT, cert_template(der(cert), token=False,
                                                              extra=[(CKA_TOKEN, True)])),
        ]
        for code, tpl in bad:
            ckr(code, s.createObject, tpl)
        ckr(PyKCS11.CKR_SESSION_READ_ONLY, ro.createObject, cert_template(der(cert)))
    finally:
        ro.closeSession()
        close(s)
    # A crypto-user may read certificates but not store them in hsmd: hsmd refuses, and
    # C_CreateObject, whose list (PKCS#11 v2.40 5.7) has no code saying so, answers
    # CKR_FUNCTION_FAILED; C_DestroyObject's has CKR_ACTION_PROHIBITED.
    u = open_session(p11, user.pin)
    try:
        ckr(PyKCS11.CKR_FUNCTION_FAILED, u.createObject, cert_template(der(cert)))
        cid = import_cert(server, der(cert))["CertificateId"]
        mine = [o for o in u.findObjects([(CKA_CLASS, CKO_CERTIFICATE)])
                if value(u, o, CKA_VALUE) == der(cert)]
        assert len(mine) == 1
        ckr(CKR_ACTION_PROHIBITED, u.destroyObject, mine[0])
        admin(server, "DeleteCertificate", {"CertificateId": cid})
    finally:
        close(u)
    assert listed(server) == before


def test_pkcs11_searches_by_a_keys_label_leave_certificates_alone(server, officer, ca, user,
                                                                  p11):
    """A certificate labelled like its key (as `hsmctl cert import --key` labels it), and a
    session certificate with that label: a search for the key by the label reads that key
    again, and no certificate as if it were a key, so the certificates keep their handles
    and every search by the label answers.  Nor does a search by a label spelling a
    certificate's id drop that certificate."""
    kid = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"]["KeyId"]
    officer.create_alias(AliasName="alias/labelled-pair", TargetKeyId=kid)
    cert = cert_of_key(officer, ca, kid, "labelled.example")
    cid = import_cert(server, der(cert), KeyId=kid, Label="labelled-pair")["CertificateId"]
    s = open_session(p11, user.pin)
    try:
        by_label = [(CKA_LABEL, "labelled-pair")]
        (c,) = s.findObjects([(CKA_CLASS, CKO_CERTIFICATE)] + by_label)
        (k,) = s.findObjects([(CKA_CLASS, CKO_PRIVATE_KEY)] + by_label)
        assert value(s, c, CKA_VALUE) == der(cert)  # the same handle, still valid
        assert handles(s, [(CKA_CLASS, CKO_CERTIFICATE)] + by_label) == [c.value()]
        assert handles(s, [(CKA_LABEL, cid)]) == []
        assert value(s, c, CKA_VALUE) == der(cert)
        # A session certificate with the key's label: no search by it fails.
        sc = s.createObject(cert_template(der(cert), token=False, label="labelled-pair"))
        (pub,) = handles(s, [(CKA_CLASS, CKO_PUBLIC_KEY)] + by_label)
        assert sorted(handles(s, by_label)) == sorted([k.value(), pub, c.value(), sc.value()])
        assert handles(s, [(CKA_CLASS, CKO_PRIVATE_KEY)] + by_label) == [k.value()]
        assert value(s, c, CKA_VALUE) == der(cert) and value(s, sc, CKA_VALUE) == der(cert)
        s.destroyObject(sc)
    finally:
        close(s)
        admin(server, "DeleteCertificate", {"CertificateId": cid})


PAIR_WITH_ID = r"""
import sys, PyKCS11
from PyKCS11 import CKA_EC_PARAMS, CKA_ID, CKA_PRIVATE, CKA_SENSITIVE, CKA_SIGN, CKA_TOKEN, CKA_VERIFY
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
s = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
s.login(sys.argv[2])
cka_id = bytes.fromhex(sys.argv[3])
pub = [(CKA_TOKEN, True), (CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
       (CKA_VERIFY, True), (CKA_ID, cka_id)]
priv = [(CKA_TOKEN, True), (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_SIGN, True),
        (CKA_ID, cka_id)]
try:
    s.generateKeyPair(pub, priv, PyKCS11.MechanismECGENERATEKEYPAIR)
    print("CKR_OK")
except PyKCS11.PyKCS11Error as e:
    print(PyKCS11.CKR[e.value])
"""


def generate_with_id(endpoint, cka_id):
    """C_GenerateKeyPair (P-256) with CKA_ID cka_id, by a module using endpoint: its CKR name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_PKCS11_")}
    env["HSM_PKCS11_ENDPOINT"] = endpoint
    p = subprocess.run(["/usr/bin/python3", "-c", PAIR_WITH_ID, MODULE,
                        f"{DEV_AKID}:{DEV_SECRET}", cka_id.hex()],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_pkcs11_a_cka_id_a_certificate_has_makes_no_key(server, officer, ca, keys, p11):
    """A CKA_ID a stored certificate has (one certifying no key): C_GenerateKeyPair and
    C_GenerateKey with it are CKR_ATTRIBUTE_VALUE_INVALID before any key is made, as for an
    id another key has (the certificate would pair with the new key, which it does not
    certify).  And C_CreateObject of a certificate under the CKA_ID of a key it does not
    certify is CKR_TEMPLATE_INCONSISTENT (its CKA_ID and CKA_VALUE disagree), storing none."""
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    held = der(issue(ca, pub, "holds an id"))
    cka_id = b"\xab\x12\xef"
    s = open_session(p11, f"{DEV_AKID}:{DEV_SECRET}")
    try:
        c = s.createObject(cert_template(held, label="id-holder", cka_id=cka_id))
        stored = listed(server)
        made = {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]}
        ckr(PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, s.generateKeyPair,
            [(CKA_TOKEN, True), (PyKCS11.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
             (PyKCS11.CKA_VERIFY, True), (CKA_ID, cka_id)],
            [(CKA_TOKEN, True), (CKA_PRIVATE, True), (PyKCS11.CKA_SENSITIVE, True),
             (PyKCS11.CKA_SIGN, True), (CKA_ID, cka_id)],
            PyKCS11.MechanismECGENERATEKEYPAIR)
        ckr(PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, s.generateKey,
            [(CKA_TOKEN, True), (PyKCS11.CKA_VALUE_LEN, 32), (CKA_ID, cka_id)],
            PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN))
        assert {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]} == made
        # The certificate certifies the RSA key, and is given the EC key's CKA_ID.
        wrong = cert_of_key(officer, ca, keys["rsa"], "not the ec key's")
        ckr(PyKCS11.CKR_TEMPLATE_INCONSISTENT, s.createObject,
            cert_template(der(wrong), cka_id=keys["ec"].encode()))
        assert listed(server) == stored
        s.destroyObject(c)
    finally:
        close(s)


def test_pkcs11_a_certificate_stored_as_its_id_is_taken(server, officer, ca, tmp_path):
    """The certificate stored after the module looked (here: a node that lists no
    certificate to the module): hsmd refuses the new key that CKA_ID, and the module answers
    CKR_ATTRIBUTE_VALUE_INVALID, as when it saw the certificate, with the key it made
    scheduled for deletion and holding no id."""
    def answer(target, body):
        if target == "HsmdAdmin.ListCertificates":
            return 200, json.dumps({"Certificates": [], "Truncated": False}).encode()
        return None

    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    cka_id = b"\xab\x12\xf0"
    cid = import_cert(server, der(issue(ca, pub, "stored meanwhile")),
                      ObjectId=b64(cka_id))["CertificateId"]
    made = {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]}
    with kms_front(server, answer) as (front, targets):
        assert generate_with_id(front, cka_id) == "CKR_ATTRIBUTE_VALUE_INVALID"
    assert "HsmdAdmin.ListCertificates" in targets and "TrentService.CreateKey" in targets
    (new,) = {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]} - made
    assert officer.describe_key(KeyId=new)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert officer.list_aliases(KeyId=new)["Aliases"] == []
    # Told of the certificate, the module makes no key at all.
    assert generate_with_id(server.endpoint, cka_id) == "CKR_ATTRIBUTE_VALUE_INVALID"
    assert {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]} - made == {new}
    admin(server, "DeleteCertificate", {"CertificateId": cid})


# ---- PKCS#11: pkcs11-tool ------------------------------------------------------------------------

def tool(server, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_PKCS11_")}
    env["HSM_PKCS11_ENDPOINT"] = server.endpoint
    return subprocess.run(["pkcs11-tool", "--module", MODULE, *args], env=env,
                          capture_output=True, timeout=120)


def test_pkcs11_tool(server, officer, ca, keys, tmp_path):
    pin = f"{DEV_AKID}:{DEV_SECRET}"
    cert = cert_of_key(officer, ca, keys["ec"], "tool.example")
    (tmp_path / "c.der").write_bytes(der(cert))
    hex_id = keys["ec"].encode().hex()
    before = listed(server)
    p = tool(server, "--login", "--pin", pin, "--write-object", str(tmp_path / "c.der"),
             "--type", "cert", "--id", hex_id, "--label", "app-ec")
    assert p.returncode == 0, p.stderr
    stored = [c for c in listed(server) if c not in before]
    assert len(stored) == 1 and base64.b64decode(stored[0]["Certificate"]) == der(cert)
    assert base64.b64decode(stored[0]["ObjectId"]) == keys["ec"].encode()
    p = tool(server, "--login", "--pin", pin, "--list-objects", "--type", "cert")
    out = p.stdout.decode()
    assert p.returncode == 0 and "Certificate Object; type = X.509 cert" in out, p.stderr
    assert "label:      app-ec" in out and "CN=tool.example" in out, out
    p = tool(server, "--login", "--pin", pin, "--read-object", "--type", "cert", "--id", hex_id,
             "--output-file", str(tmp_path / "back.der"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "back.der").read_bytes() == der(cert)
    p = tool(server, "--login", "--pin", pin, "--delete-object", "--type", "cert", "--id", hex_id)
    assert p.returncode == 0, p.stderr
    assert listed(server) == before


# ---- PKCS#11: Java's SunPKCS11 KeyStore -----------------------------------------------------------

def test_java_keystore(server, officer, ca, keys, user, tmp_path):
    plain_build_only("the JVM's mappings leave no room for the shadow memory of a module built "
                     "with it")
    if not os.path.exists(JAVA):
        pytest.fail(f"{JAVA} is missing: scripts/install-deps.sh installs openjdk-17-jdk-headless")
    certs = {name: cert_of_key(officer, ca, keys[name], f"java-{name}.example")
             for name in ("rsa", "ec")}
    cids = [import_cert(server, der(certs["rsa"]), KeyId="alias/app-signing",
                        Label="app-signing")["CertificateId"],
            import_cert(server, der(certs["ec"]), KeyId=keys["ec"],
                        Label="app-ec")["CertificateId"],
            import_cert(server, der(ca.cert))["CertificateId"]]  # the issuer: the chains' end
    cfg = tmp_path / "hsmd.cfg"
    cfg.write_text(f"name = hsmd\nlibrary = {MODULE}\nslot = 0\n")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    try:
        p = subprocess.run([JAVA, os.path.join(HERE, "java", "P11KeyStoreCheck.java"), str(cfg),
                            user.pin, "message to sign"], env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        lines = p.stdout.splitlines()
        entries = {ln.split()[1]: ln for ln in lines if ln.startswith("entry ")}
        # Each key with a certificate is a private key entry under the certificate's label.
        assert "key=true cert=true chain=2" in entries["app-signing"], lines
        assert "CN=java-rsa.example" in entries["app-signing"], lines
        assert "key=true cert=true chain=2" in entries["app-ec"], lines
        assert "signed app-signing SHA256withRSA verified=true" in lines, lines
        assert "signed app-ec SHA256withECDSA verified=true" in lines, lines
        # A secret key entry: the HMAC key, whose MAC through Java is GenerateMac's.
        want = officer.generate_mac(KeyId=keys["mac"], Message=b"message to sign",
                                    MacAlgorithm="HMAC_SHA_256")["Mac"]
        assert f"mac app-mac {want.hex()}" in lines, lines
        assert "secret app-aes AES" in lines and "key=true cert=false" in entries["app-aes"], lines
    finally:
        for cid in cids:
            admin(server, "DeleteCertificate", {"CertificateId": cid})
    # The signatures were made by hsmd, as the crypto-user, and audited.
    signs = [r for r in audit_records(server.data_dir)
             if r.get("op") == "Sign" and r.get("principal", "").endswith(":user/cert-app")]
    assert {r["key_id"] for r in signs} >= {keys["rsa"], keys["ec"]}


def test_large_certificate_listings_are_answered_outside_the_locked_memory(ca, tmp_path):
    """Admin answers carry no secret (but CreateAccessKey's): a page of certificates, DER
    and all, is written in ordinary memory, not in the secure heap, whose half is the
    largest answer it can hold (a page of 32 KB certificates failed with 500, and with it
    every PKCS#11 login, which reads them all).  A page with the DER holds at most 100."""
    from cryptography.hazmat.primitives.asymmetric import ec as ecm
    from cryptography.x509.oid import ObjectIdentifier
    server = start_dev(["--secure-heap-bytes", "1M"])
    try:
        key = ecm.generate_private_key(ecm.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        imported = set()
        for i in range(105):
            pad = os.urandom(30000 if i < 20 else 16)  # 20 of about 30 KB: 800 KB in base64
            cert = (x509.CertificateBuilder()
                    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"big{i}")]))
                    .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "big")]))
                    .public_key(key.public_key()).serial_number(i + 1)
                    .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
                    .add_extension(x509.UnrecognizedExtension(
                        ObjectIdentifier("1.3.6.1.4.1.55555.1"), pad), critical=False)
                    .sign(key, hashes.SHA256()))
            imported.add(import_cert(server, der(cert))["CertificateId"])
        page = admin(server, "ListCertificates", {"IncludeCertificate": True, "Limit": 1000})
        assert len(page["Certificates"]) == 100 and page["Truncated"] is True
        rest = admin(server, "ListCertificates", {"IncludeCertificate": True, "Limit": 1000,
                                                  "Marker": page["NextMarker"]})
        assert rest["Truncated"] is False
        assert {c["CertificateId"] for c in page["Certificates"] + rest["Certificates"]} == \
            imported
        p = tool(server, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "--list-objects",
                 "--type", "cert")
        assert p.returncode == 0, p.stderr
        assert p.stdout.decode().count("Certificate Object; type = X.509 cert") == 105
    finally:
        server.cleanup()
