"""hsmd's plain AES-GCM (HsmdCipher.GcmEncrypt / GcmDecrypt): what PKCS#11's
CKM_AES_GCM rides on.  Requests are signed by botocore's own SigV4 signer;
imported material (BYOK) lets python3-cryptography's AESGCM check that the
output is standard AES-256-GCM and that hsmd opens what AESGCM sealed.
"""
import base64
import json
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import signed_request
from helpers import audit_record, call_ok, key_arn, key_denying, request_id
from test_import import do_import


def b64(data):
    return base64.b64encode(data).decode()


def cipher(hsmd, op, body, **kw):
    r = signed_request(hsmd, "HsmdCipher." + op, body, **kw)
    return r.status_code, r.json(), r


def encrypt(hsmd, key, pt, aad=None):
    body = {"KeyId": key, "Plaintext": b64(pt)}
    if aad is not None:
        body["AdditionalData"] = b64(aad)
    st, out, _ = cipher(hsmd, "GcmEncrypt", body)
    assert st == 200, out
    return base64.b64decode(out["Iv"]), base64.b64decode(out["Ciphertext"])


def decrypt(hsmd, key, iv, ct, aad=None):
    body = {"KeyId": key, "Iv": b64(iv), "Ciphertext": b64(ct)}
    if aad is not None:
        body["AdditionalData"] = b64(aad)
    return cipher(hsmd, "GcmDecrypt", body)


def test_round_trip_and_refusals(hsmd, kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    iv, ct = encrypt(hsmd, key, b"database row", b"table=users")
    assert len(iv) == 12 and len(ct) == len(b"database row") + 16
    st, out, _ = decrypt(hsmd, key, iv, ct, b"table=users")
    assert st == 200 and base64.b64decode(out["Plaintext"]) == b"database row", out
    assert out["KeyId"] == key_arn(key)
    # Every IV is fresh, so the same plaintext never gives the same ciphertext.
    ivs = {encrypt(hsmd, key, b"same")[0] for _ in range(20)}
    assert len(ivs) == 20
    # Empty plaintext and no additional data are valid GCM.
    iv0, ct0 = encrypt(hsmd, key, b"")
    assert len(ct0) == 16
    assert base64.b64decode(decrypt(hsmd, key, iv0, ct0)[1]["Plaintext"]) == b""
    # One uniform error for a changed tag, ciphertext, IV or additional data.
    for args in [(iv, ct, b"table=admins"), (iv, ct, None), (bytes(12), ct, b"table=users"),
                 (iv, ct[:-1] + bytes([ct[-1] ^ 1]), b"table=users")]:
        st, out, _ = decrypt(hsmd, key, *args)
        assert (st, out["__type"]) == (400, "InvalidCiphertextException"), out
    # Malformed requests: an IV of the caller's on encryption, a short IV, no tag.
    st, out, _ = cipher(hsmd, "GcmEncrypt", {"KeyId": key, "Plaintext": b64(b"x"),
                                             "Iv": b64(bytes(12))})
    assert (st, out["__type"]) == (400, "ValidationException") and "Iv" in out["message"], out
    st, out, _ = decrypt(hsmd, key, bytes(8), ct)
    assert (st, out["__type"]) == (400, "ValidationException"), out
    st, out, _ = decrypt(hsmd, key, iv, ct[:15])
    assert (st, out["__type"]) == (400, "ValidationException"), out
    st, out, _ = cipher(hsmd, "GcmEncrypt", {"KeyId": key, "Plaintext": b64(bytes(65537))})
    assert (st, out["__type"]) == (400, "ValidationException"), out
    # Only symmetric encryption keys; only under HsmdCipher.
    mac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    st, out, _ = cipher(hsmd, "GcmEncrypt", {"KeyId": mac["KeyId"], "Plaintext": b64(b"x")})
    assert (st, out["__type"]) == (400, "InvalidKeyUsageException"), out
    r = signed_request(hsmd, "TrentService.GcmEncrypt", {"KeyId": key, "Plaintext": b64(b"x")})
    assert r.status_code == 400 and r.json()["__type"] == "UnknownOperationException", r.text


def test_older_versions_still_open(hsmd, kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    iv1, ct1 = encrypt(hsmd, key, b"before")
    call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": key})
    call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": key})
    iv3, ct3 = encrypt(hsmd, key, b"after")
    for iv, ct, pt in [(iv1, ct1, b"before"), (iv3, ct3, b"after")]:
        st, out, _ = decrypt(hsmd, key, iv, ct)
        assert st == 200 and base64.b64decode(out["Plaintext"]) == pt, out
    # The audit record says which version opened it.
    st, out, r = decrypt(hsmd, key, iv1, ct1)
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["outcome"], rec["key_id"], rec["key_version"]) == (
        "GcmDecrypt", "success", key, 1)
    assert rec["extra"]["algorithm"] == "AES_256_GCM"
    assert b64(b"before") not in json.dumps(rec)


def test_standard_aes_gcm_with_imported_material(hsmd, kms):
    material = os.urandom(32)
    key = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    do_import(kms, key, material)
    iv, ct = encrypt(hsmd, key, b"interoperable", b"aad")
    assert AESGCM(material).decrypt(iv, ct, b"aad") == b"interoperable"
    nonce = os.urandom(12)
    sealed = AESGCM(material).encrypt(nonce, b"from elsewhere", b"ctx")
    st, out, _ = decrypt(hsmd, key, nonce, sealed, b"ctx")
    assert st == 200 and base64.b64decode(out["Plaintext"]) == b"from elsewhere", out


def canonical_context(ctx):
    """hsmd's encoding of an encryption context (u32 count, then length-prefixed pairs)."""
    out = len(ctx).to_bytes(4, "big")
    for k, v in sorted((k.encode(), v.encode()) for k, v in ctx.items()):
        out += len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v
    return out


def test_kms_ciphertexts_stay_closed_to_plain_gcm(hsmd, kms):
    """A KMS blob is GCM under the same material with its header and context as AAD:
    GcmDecrypt must not open it, or a policy that denies Decrypt (here: for every
    context but tenant=B) would not protect it; nor may GcmEncrypt make such AAD."""
    account = kms.describe_key(KeyId=kms.create_key()["KeyMetadata"]["KeyId"])[
        "KeyMetadata"]["AWSAccountId"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringNotEquals": {"kms:EncryptionContext:tenant": "B"}}}]}
    key = kms.create_key(Policy=json.dumps(policy),
                         BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]["KeyId"]
    ctx = {"tenant": "A"}
    blob = kms.encrypt(KeyId=key, Plaintext=b"secret data", EncryptionContext=ctx)[
        "CiphertextBlob"]
    from botocore.exceptions import ClientError
    try:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)
        raise AssertionError("the policy should deny Decrypt")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDeniedException", e.response
    header, iv, body = blob[:33], blob[21:33], blob[33:]
    aad = header + canonical_context(ctx)
    st, out, _ = decrypt(hsmd, key, iv, body, aad)
    assert (st, out["__type"]) == (400, "ValidationException"), out
    assert "Plaintext" not in out and "header of a KMS ciphertext" in out["message"], out
    # Any AAD that starts with this key's header prefix is refused both ways, dry runs too.
    for extra in (b"", b"anything"):
        st, out, _ = cipher(hsmd, "GcmEncrypt", {"KeyId": key, "Plaintext": b64(b"x"),
                                                 "AdditionalData": b64(blob[:17] + extra)})
        assert (st, out["__type"]) == (400, "ValidationException"), out
    st, out, _ = cipher(hsmd, "GcmEncrypt", {"KeyId": key, "Plaintext": b64(b"x"),
                                             "AdditionalData": b64(aad), "DryRun": True})
    assert (st, out["__type"]) == (400, "ValidationException"), out
    assert "header of a KMS ciphertext" in out["message"], out
    # Another key's header, or a shorter prefix of this one's, is ordinary AAD.
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    other_blob = kms.encrypt(KeyId=other, Plaintext=b"y")["CiphertextBlob"]
    for a in (other_blob[:33], blob[:16]):
        iv2, ct2 = encrypt(hsmd, key, b"fine", a)
        st, out, _ = decrypt(hsmd, key, iv2, ct2, a)
        assert st == 200 and base64.b64decode(out["Plaintext"]) == b"fine", out


def test_kms_ciphertexts_stay_closed_to_a_key_sharing_the_material(hsmd, kms):
    """Two keys holding the same imported material: Decrypt refuses A's blob under B
    (IncorrectKeyException), and GcmDecrypt on B must not open it either, or B's
    policy would decide what A's denies."""
    material = os.urandom(32)
    a, b = (kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"] for _ in range(2))
    for k in (a, b):
        do_import(kms, k, material)
    ctx = {"tenant": "A"}
    blob = kms.encrypt(KeyId=a, Plaintext=b"a's secret", EncryptionContext=ctx)[
        "CiphertextBlob"]
    aad = blob[:33] + canonical_context(ctx)
    # The material is the same: as plain GCM, the blob is open to anyone holding it.
    assert AESGCM(material).decrypt(blob[21:33], blob[33:], aad) == b"a's secret"
    st, out, _ = decrypt(hsmd, b, blob[21:33], blob[33:], aad)
    assert (st, out["__type"]) == (400, "ValidationException"), out
    assert "Plaintext" not in out and "header of a KMS ciphertext" in out["message"], out
    # Without the context, and with A's header alone, just the same.
    for extra in (b"", b"\0\0\0\0"):
        st, out, _ = decrypt(hsmd, b, blob[21:33], blob[33:], blob[:33] + extra)
        assert (st, out["__type"]) == (400, "ValidationException"), out
    # B's own GCM with A's header as ordinary AAD, under another IV, still works.
    iv2, ct2 = encrypt(hsmd, b, b"fine", aad)
    st, out, _ = decrypt(hsmd, b, iv2, ct2, aad)
    assert st == 200 and base64.b64decode(out["Plaintext"]) == b"fine", out


def test_policy_and_roles(hsmd, kms):
    from conftest import DEV_AKID
    from helpers import new_user
    key = key_denying(kms, "kms:GcmDecrypt")
    iv, ct = encrypt(hsmd, key, b"x")
    st, out, _ = decrypt(hsmd, key, iv, ct)
    assert (st, out["__type"]) == (400, "AccessDeniedException"), out
    assert "kms:GcmDecrypt" in out["message"]
    # Auditors may not encrypt.
    akid, secret = new_user(hsmd, "gcm-auditor", ["auditor"])
    assert akid != DEV_AKID
    st, out, _ = cipher(hsmd, "GcmEncrypt", {"KeyId": key, "Plaintext": b64(b"x")},
                        akid=akid, secret=secret)
    assert (st, out["__type"]) == (400, "AccessDeniedException"), out


def kcv(hsmd, key, **kw):
    return cipher(hsmd, "GetKeyCheckValue", {"KeyId": key}, **kw)


def test_key_check_values(hsmd, kms):
    """GetKeyCheckValue: the check value of imported material equals the one its other
    holder computes (AES: the first 3 bytes of the key's ECB encryption of a zero block;
    HMAC: of the key's SHA-1), so two holders compare keys without revealing them."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from test_import import external_key

    material = os.urandom(32)
    key = external_key(kms)
    do_import(kms, key, material)
    enc = Cipher(algorithms.AES(material), modes.ECB()).encryptor()
    want = (enc.update(bytes(16)) + enc.finalize())[:3].hex().upper()
    kms.create_alias(AliasName="alias/kcv-aes", TargetKeyId=key)
    for ref in (key, key_arn(key), "alias/kcv-aes"):
        st, out, r = kcv(hsmd, ref)
        assert st == 200, out
        assert out == {"KeyId": key_arn(key), "KeyCheckValue": want,
                       "KeyCheckValueAlgorithm": "AES_ZERO_BLOCK"}, out
    rec = audit_record(hsmd.data_dir, request_id(r))
    assert (rec["op"], rec["outcome"], rec["key_id"]) == ("GetKeyCheckValue", "success", key), rec
    assert want not in json.dumps(rec)

    mac_material = os.urandom(32)
    mac_key = external_key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    do_import(kms, mac_key, mac_material)
    st, out, _ = kcv(hsmd, mac_key)
    assert st == 200 and out["KeyCheckValue"] == hashlib.sha1(mac_material).hexdigest()[
        :6].upper() and out["KeyCheckValueAlgorithm"] == "SHA_1", out

    # A generated key's value follows its current material: the same until it rotates.
    gen = kms.create_key()["KeyMetadata"]["KeyId"]
    before = kcv(hsmd, gen)[1]["KeyCheckValue"]
    assert kcv(hsmd, gen)[1]["KeyCheckValue"] == before and len(before) == 6
    call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": gen})
    assert kcv(hsmd, gen)[1]["KeyCheckValue"] != before

    # No value for keys without secret material, or in states their use is refused in.
    sign = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    pending = external_key(kms)
    off = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=off)
    for ref, err in ((sign, "UnsupportedOperationException"),
                     (pending, "KMSInvalidStateException"), (off, "DisabledException"),
                     ("alias/none", "NotFoundException")):
        st, out, _ = kcv(hsmd, ref)
        assert (st, out["__type"]) == (400, err), (ref, out)
    st, out, _ = cipher(hsmd, "GetKeyCheckValue", {})
    assert (st, out["__type"]) == (400, "ValidationException"), out


def test_key_check_value_policy_and_roles(hsmd, kms):
    from helpers import new_user
    denied = key_denying(kms, "kms:GetKeyCheckValue")
    st, out, _ = kcv(hsmd, denied)
    assert (st, out["__type"]) == (400, "AccessDeniedException"), out
    assert "kms:GetKeyCheckValue" in out["message"]
    # Auditors and key users may compare values, as they may read public keys.
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    value = kcv(hsmd, key)[1]["KeyCheckValue"]
    for name, roles in (("kcv-auditor", ["auditor"]), ("kcv-user", ["crypto-user"])):
        akid, secret = new_user(hsmd, name, roles)
        st, out, _ = kcv(hsmd, key, akid=akid, secret=secret)
        assert st == 200 and out["KeyCheckValue"] == value, out
    akid, secret = new_user(hsmd, "kcv-custodian", ["custodian"])
    st, out, _ = kcv(hsmd, key, akid=akid, secret=secret)
    assert (st, out["__type"]) == (400, "AccessDeniedException"), out
