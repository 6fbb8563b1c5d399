"""Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext),
GenerateDataKeyPair(WithoutPlaintext) and GenerateRandom with boto3; RSA and
data keys are checked for interoperability with the `cryptography` package."""
import base64
import glob
import os
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import signed_call
from helpers import admin, audit_record, b64, call_error, call_ok, key_arn, key_denying, raises

HEADER = 33     # version(1) key id(16) key version(4) IV(12)
TAG = 16


@pytest.fixture(scope="module")
def sym(kms):
    return kms.create_key(Description="crypto")["KeyMetadata"]["KeyId"]


@pytest.fixture(scope="module")
def sym2(kms):
    return kms.create_key()["KeyMetadata"]["KeyId"]


@pytest.fixture(scope="module")
def rsa2048(kms):
    return kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]


@pytest.fixture(scope="module")
def rsa4096(kms):
    return kms.create_key(KeySpec="RSA_4096", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]


def oaep(alg):
    h = hashes.SHA1() if alg == "RSAES_OAEP_SHA_1" else hashes.SHA256()
    return padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)


def public_key(kms, kid):
    return serialization.load_der_public_key(kms.get_public_key(KeyId=kid)["PublicKey"])


def flip(blob, i):
    b = bytearray(blob)
    b[i] ^= 0x01
    return bytes(b)


# ---- symmetric Encrypt / Decrypt ----------------------------------------------------------

def test_encrypt_decrypt_round_trip(kms, sym):
    for pt in (b"\x00", b"hello", os.urandom(4096)):
        r = kms.encrypt(KeyId=sym, Plaintext=pt)
        assert r["KeyId"] == key_arn(sym)
        assert r["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
        blob = r["CiphertextBlob"]
        assert len(blob) == HEADER + len(pt) + TAG
        assert pt not in blob or len(pt) < 8
        d = kms.decrypt(CiphertextBlob=blob)  # no KeyId needed for symmetric blobs
        assert (d["Plaintext"], d["KeyId"], d["EncryptionAlgorithm"]) == (
            pt, key_arn(sym), "SYMMETRIC_DEFAULT")
    # Two encryptions of the same plaintext differ (fresh IV).
    assert kms.encrypt(KeyId=sym, Plaintext=b"same")["CiphertextBlob"] != \
        kms.encrypt(KeyId=sym, Plaintext=b"same")["CiphertextBlob"]


def test_encrypt_by_alias_and_decrypt_naming_the_key(kms, sym):
    kms.create_alias(AliasName="alias/crypto-main", TargetKeyId=sym)
    blob = kms.encrypt(KeyId="alias/crypto-main", Plaintext=b"p")["CiphertextBlob"]
    for ref in (sym, key_arn(sym), "alias/crypto-main"):
        assert kms.decrypt(CiphertextBlob=blob, KeyId=ref)["Plaintext"] == b"p"


def test_encryption_context(kms, sym):
    ctx = {"app": "billing", "tenant": "42", "\u00e9t\u00e9": "\u00fc"}
    blob = kms.encrypt(KeyId=sym, Plaintext=b"secret", EncryptionContext=ctx)["CiphertextBlob"]
    # The order of the pairs does not matter.
    rev = dict(reversed(list(ctx.items())))
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=rev)["Plaintext"] == b"secret"
    bad = [None, {}, {"app": "billing"}, dict(ctx, tenant="43"), dict(ctx, extra="x"),
           {"APP": "billing", "tenant": "42", "\u00e9t\u00e9": "\u00fc"}]
    for c in bad:
        kw = {} if c is None else {"EncryptionContext": c}
        raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=blob, status=400, **kw)
    # A blob made without context does not open with one.
    plain = kms.encrypt(KeyId=sym, Plaintext=b"x")["CiphertextBlob"]
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=plain,
           EncryptionContext={"a": "b"})


def test_encryption_context_validation(kms, sym):
    raises("ValidationException", kms.encrypt, KeyId=sym, Plaintext=b"x",
           EncryptionContext={"": "empty key"})
    raises("ValidationException", kms.encrypt, KeyId=sym, Plaintext=b"x",
           EncryptionContext={"k": "v" * 8192})


@pytest.mark.parametrize("where,offsets", [
    ("format-version", [0]),
    ("key-id", [1, 8, 16]),
    ("key-version", [17, 20]),
    ("iv", [21, 32]),
    ("ciphertext", [HEADER, HEADER + 5]),
    ("tag", [-16, -1]),
])
def test_tampered_blob_is_refused(kms, sym, where, offsets):
    blob = kms.encrypt(KeyId=sym, Plaintext=b"0123456789", EncryptionContext={"a": "b"})[
        "CiphertextBlob"]
    for i in offsets:
        for kw in ({}, {"KeyId": sym}):
            raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=flip(blob, i),
                   EncryptionContext={"a": "b"}, **kw)
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext={"a": "b"})["Plaintext"] == \
        b"0123456789"


def test_malformed_blobs(kms, sym):
    blob = kms.encrypt(KeyId=sym, Plaintext=b"abc")["CiphertextBlob"]
    for bad in (blob[:HEADER], blob[:-1], blob + b"\x00", b"\x01", os.urandom(64),
                b"\x01" + uuid.uuid4().bytes + blob[17:]):
        raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=bad)


def test_ciphertext_of_another_key(kms, sym, sym2):
    blob = kms.encrypt(KeyId=sym, Plaintext=b"abc")["CiphertextBlob"]
    raises("IncorrectKeyException", kms.decrypt, CiphertextBlob=blob, KeyId=sym2, status=400)
    raises("IncorrectKeyException", kms.decrypt, CiphertextBlob=blob, KeyId=key_arn(sym2))
    raises("NotFoundException", kms.decrypt, CiphertextBlob=blob, KeyId="alias/crypto-missing")
    # A well-formed id of no key: the key named does not exist.
    raises("NotFoundException", kms.decrypt, CiphertextBlob=blob, KeyId=str(uuid.uuid4()))


def test_dry_run_checks_everything_and_performs_nothing(hsmd, kms, sym):
    blob = kms.encrypt(KeyId=sym, Plaintext=b"abc")["CiphertextBlob"]
    blob64 = base64.b64encode(blob).decode()
    st, out = signed_call(hsmd, "TrentService.Decrypt",
                          {"CiphertextBlob": blob64, "DryRun": True})
    assert (st, out["__type"]) == (412, "DryRunOperationException") and "Plaintext" not in out
    st, out = signed_call(hsmd, "TrentService.Encrypt",
                          {"KeyId": sym, "Plaintext": "YWJj", "DryRun": True})
    assert (st, out["__type"]) == (412, "DryRunOperationException") and "CiphertextBlob" not in out
    # What would fail still fails with its own error.
    st, out = signed_call(hsmd, "TrentService.Encrypt",
                          {"KeyId": "alias/crypto-missing", "Plaintext": "YWJj", "DryRun": True})
    assert (st, out["__type"]) == (400, "NotFoundException")
    st, out = signed_call(hsmd, "TrentService.Decrypt",
                          {"CiphertextBlob": blob64, "DryRun": "yes"})
    assert (st, out["__type"]) == (400, "SerializationException")
    st, out = signed_call(hsmd, "TrentService.Decrypt",
                          {"CiphertextBlob": blob64, "DryRun": False})
    assert st == 200 and base64.b64decode(out["Plaintext"]) == b"abc"


def test_plaintext_size_limits(kms, hsmd, sym):
    assert len(kms.encrypt(KeyId=sym, Plaintext=b"x" * 4096)["CiphertextBlob"]) == \
        HEADER + 4096 + TAG
    raises("ValidationException", kms.encrypt, KeyId=sym, Plaintext=b"x" * 4097, status=400)
    call_error(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": ""}, "ValidationException")


def test_encrypt_with_keys_of_other_usages(kms, sym, rsa2048):
    sign = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    mac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"][
        "KeyId"]
    for kid in (sign, mac):
        raises("InvalidKeyUsageException", kms.encrypt, KeyId=kid, Plaintext=b"x", status=400)
        raises("InvalidKeyUsageException", kms.generate_data_key, KeyId=kid, KeySpec="AES_256")
    # RSA keys need an RSAES algorithm; symmetric keys refuse one.
    raises("InvalidKeyUsageException", kms.encrypt, KeyId=rsa2048, Plaintext=b"x")
    raises("InvalidKeyUsageException", kms.encrypt, KeyId=sym, Plaintext=b"x",
           EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    raises("ValidationException", kms.encrypt, KeyId=sym, Plaintext=b"x",
           EncryptionAlgorithm="AES_GCM")


# ---- RSA ----------------------------------------------------------------------------------

@pytest.mark.parametrize("alg,limit2048,limit4096", [
    ("RSAES_OAEP_SHA_1", 214, 470), ("RSAES_OAEP_SHA_256", 190, 446)])
def test_rsa_oaep(kms, rsa2048, rsa4096, alg, limit2048, limit4096):
    for kid, limit, bits in ((rsa2048, limit2048, 2048), (rsa4096, limit4096, 4096)):
        pub = public_key(kms, kid)
        assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == bits
        pt = os.urandom(limit)
        r = kms.encrypt(KeyId=kid, Plaintext=pt, EncryptionAlgorithm=alg)
        assert (r["EncryptionAlgorithm"], len(r["CiphertextBlob"])) == (alg, bits // 8)
        d = kms.decrypt(CiphertextBlob=r["CiphertextBlob"], KeyId=kid, EncryptionAlgorithm=alg)
        assert (d["Plaintext"], d["EncryptionAlgorithm"], d["KeyId"]) == (pt, alg, key_arn(kid))
        raises("ValidationException", kms.encrypt, KeyId=kid, Plaintext=pt + b"x",
               EncryptionAlgorithm=alg)
        # Interoperability: encrypt locally with the public key, decrypt in hsmd.
        local = pub.encrypt(pt, oaep(alg))
        assert kms.decrypt(CiphertextBlob=local, KeyId=kid, EncryptionAlgorithm=alg)[
            "Plaintext"] == pt


def test_rsa_decrypt_errors(kms, rsa2048, hsmd):
    ct = kms.encrypt(KeyId=rsa2048, Plaintext=b"rsa", EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "CiphertextBlob"]
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=ct, KeyId=rsa2048,
           EncryptionAlgorithm="RSAES_OAEP_SHA_1")
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=flip(ct, 100),
           KeyId=rsa2048, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    # RSA ciphertexts do not name their key: KeyId is required.
    raises("ValidationException", kms.decrypt, CiphertextBlob=ct,
           EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    # Without an algorithm the ciphertext is read as a symmetric blob, which it is not;
    # naming the RSA key shows what is wrong: SYMMETRIC_DEFAULT does not fit it.
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=ct)
    raises("InvalidKeyUsageException", kms.decrypt, CiphertextBlob=ct, KeyId=rsa2048,
           message="SYMMETRIC_DEFAULT")
    raises("InvalidKeyUsageException", kms.decrypt, CiphertextBlob=ct, KeyId=rsa2048,
           EncryptionAlgorithm="SYMMETRIC_DEFAULT")
    # About one RSA ciphertext in 256 begins as an hsmd ciphertext does (its first byte
    # the format's version): one that so names a key that does not exist is answered as
    # every other RSA ciphertext is, not as a damaged symmetric one.
    looks_symmetric = b"\x01" + uuid.uuid4().bytes + ct[17:]  # the format's version 1
    raises("InvalidKeyUsageException", kms.decrypt, CiphertextBlob=looks_symmetric,
           KeyId=rsa2048, message="SYMMETRIC_DEFAULT")
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=looks_symmetric)
    # Encryption context is for symmetric keys only: refused, not ignored, both ways.
    no_ctx = "EncryptionContext is not supported with asymmetric KMS keys"
    raises("ValidationException", kms.encrypt, KeyId=rsa2048, Plaintext=b"x",
           EncryptionAlgorithm="RSAES_OAEP_SHA_256", EncryptionContext={"a": "b"},
           message=no_ctx)
    raises("ValidationException", kms.decrypt, CiphertextBlob=ct, KeyId=rsa2048,
           EncryptionAlgorithm="RSAES_OAEP_SHA_256", EncryptionContext={"a": "b"},
           message=no_ctx)



def test_sm2pke_is_refused_by_the_key(kms, hsmd, sym, sym2, rsa2048):
    """SM2PKE is AWS's name for the encryption of SM2 keys, which hsmd does not offer:
    the key named refuses it (InvalidKeyUsageException) once found and usable, as AWS
    refuses an algorithm the key's spec does not take; like every asymmetric algorithm
    it needs the key named."""
    ct = kms.encrypt(KeyId=sym, Plaintext=b"sm2")["CiphertextBlob"]
    for kid, spec in ((sym, "SYMMETRIC_DEFAULT"), (rsa2048, "RSA_2048")):
        why = f"EncryptionAlgorithm SM2PKE is not valid for {key_arn(kid)} (KeySpec {spec})"
        raises("InvalidKeyUsageException", kms.encrypt, KeyId=kid, Plaintext=b"x",
               EncryptionAlgorithm="SM2PKE", message=why, status=400)
        raises("InvalidKeyUsageException", kms.decrypt, CiphertextBlob=ct, KeyId=kid,
               EncryptionAlgorithm="SM2PKE", message=why)
    raises("ValidationException", kms.decrypt, CiphertextBlob=ct, EncryptionAlgorithm="SM2PKE",
           message="KeyId is required")
    raises("NotFoundException", kms.encrypt, KeyId="alias/no-such-key", Plaintext=b"x",
           EncryptionAlgorithm="SM2PKE")
    raises("AccessDeniedException", kms.encrypt, KeyId=key_denying(kms, "kms:Encrypt"),
           Plaintext=b"x", EncryptionAlgorithm="SM2PKE")
    raises("InvalidKeyUsageException", kms.re_encrypt, CiphertextBlob=ct, SourceKeyId=sym,
           SourceEncryptionAlgorithm="SM2PKE", DestinationKeyId=sym2,
           message="SourceEncryptionAlgorithm SM2PKE is not valid for " + key_arn(sym))
    raises("ValidationException", kms.re_encrypt, CiphertextBlob=ct, DestinationKeyId=sym2,
           SourceEncryptionAlgorithm="SM2PKE", message="SourceKeyId is required")
    raises("InvalidKeyUsageException", kms.re_encrypt, CiphertextBlob=ct, DestinationKeyId=sym2,
           DestinationEncryptionAlgorithm="SM2PKE",
           message="DestinationEncryptionAlgorithm SM2PKE is not valid for " + key_arn(sym2))
    raises("ValidationException", kms.encrypt, KeyId=sym, Plaintext=b"x",
           EncryptionAlgorithm="SM2_PKE")

# ---- ReEncrypt ----------------------------------------------------------------------------

def test_reencrypt_symmetric(kms, sym, sym2):
    blob = kms.encrypt(KeyId=sym, Plaintext=b"move me", EncryptionContext={"a": "1"})[
        "CiphertextBlob"]
    r = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"a": "1"},
                       DestinationKeyId=sym2, DestinationEncryptionContext={"b": "2"})
    assert r["SourceKeyId"] == key_arn(sym) and r["KeyId"] == key_arn(sym2)
    assert r["SourceEncryptionAlgorithm"] == r["DestinationEncryptionAlgorithm"] == \
        "SYMMETRIC_DEFAULT"
    d = kms.decrypt(CiphertextBlob=r["CiphertextBlob"], EncryptionContext={"b": "2"})
    assert (d["Plaintext"], d["KeyId"]) == (b"move me", key_arn(sym2))
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=r["CiphertextBlob"],
           EncryptionContext={"a": "1"})
    # Same key, new context only.
    r2 = kms.re_encrypt(CiphertextBlob=blob, SourceEncryptionContext={"a": "1"},
                        DestinationKeyId=sym)
    assert kms.decrypt(CiphertextBlob=r2["CiphertextBlob"])["Plaintext"] == b"move me"
    # Wrong source context, wrong SourceKeyId.
    raises("InvalidCiphertextException", kms.re_encrypt, CiphertextBlob=blob,
           DestinationKeyId=sym2)
    raises("IncorrectKeyException", kms.re_encrypt, CiphertextBlob=blob, SourceKeyId=sym2,
           SourceEncryptionContext={"a": "1"}, DestinationKeyId=sym2)
    raises("NotFoundException", kms.re_encrypt, CiphertextBlob=blob,
           SourceEncryptionContext={"a": "1"}, DestinationKeyId=str(uuid.uuid4()))


def test_reencrypt_with_rsa(kms, sym, rsa2048):
    ct = kms.encrypt(KeyId=rsa2048, Plaintext=b"from rsa",
                     EncryptionAlgorithm="RSAES_OAEP_SHA_1")["CiphertextBlob"]
    r = kms.re_encrypt(CiphertextBlob=ct, SourceKeyId=rsa2048,
                       SourceEncryptionAlgorithm="RSAES_OAEP_SHA_1", DestinationKeyId=sym)
    assert r["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_1"
    assert r["SourceKeyId"] == key_arn(rsa2048)
    assert kms.decrypt(CiphertextBlob=r["CiphertextBlob"])["Plaintext"] == b"from rsa"
    # And back to RSA.
    back = kms.re_encrypt(CiphertextBlob=r["CiphertextBlob"], DestinationKeyId=rsa2048,
                          DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert back["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert kms.decrypt(CiphertextBlob=back["CiphertextBlob"], KeyId=rsa2048,
                       EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"] == b"from rsa"
    raises("ValidationException", kms.re_encrypt, CiphertextBlob=ct,
           SourceEncryptionAlgorithm="RSAES_OAEP_SHA_1", DestinationKeyId=sym)
    no_ctx = "EncryptionContext is not supported with asymmetric KMS keys"
    raises("ValidationException", kms.re_encrypt, CiphertextBlob=ct, SourceKeyId=rsa2048,
           SourceEncryptionAlgorithm="RSAES_OAEP_SHA_1", SourceEncryptionContext={"a": "b"},
           DestinationKeyId=sym, message=no_ctx)
    raises("ValidationException", kms.re_encrypt, CiphertextBlob=r["CiphertextBlob"],
           DestinationKeyId=rsa2048, DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256",
           DestinationEncryptionContext={"a": "b"}, message=no_ctx)


def test_reencrypt_refusals_keep_the_source_plaintext_to_themselves(kms, sym, rsa2048, rsa4096):
    """ReEncrypt's plaintext is the source ciphertext's, which its caller (kms:ReEncrypt*
    alone) never sees: a destination that cannot take it is named with its limit, and
    the plaintext's length, which RSA ciphertexts hide, is not told."""
    secret = os.urandom(400)
    ct = public_key(kms, rsa4096).encrypt(secret, oaep("RSAES_OAEP_SHA_256"))
    resp = raises("ValidationException", kms.re_encrypt, CiphertextBlob=ct, SourceKeyId=rsa4096,
                  SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=rsa2048,
                  DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256",
                  message="source ciphertext's plaintext is longer than RSA_2048")
    assert "400" not in resp["Error"]["Message"], resp
    # Empty plaintext, which OAEP allows (encrypted elsewhere with the public key).
    empty = public_key(kms, rsa2048).encrypt(b"", oaep("RSAES_OAEP_SHA_256"))
    assert kms.decrypt(CiphertextBlob=empty, KeyId=rsa2048,
                       EncryptionAlgorithm="RSAES_OAEP_SHA_256")["Plaintext"] == b""
    resp = raises("ValidationException", kms.re_encrypt, CiphertextBlob=empty,
                  SourceKeyId=rsa2048, SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256",
                  DestinationKeyId=sym, message="source ciphertext's plaintext is empty")
    assert "Plaintext must" not in resp["Error"]["Message"], resp


# ---- Data keys ----------------------------------------------------------------------------

@pytest.mark.parametrize("kw,n", [({"KeySpec": "AES_256"}, 32), ({"KeySpec": "AES_128"}, 16),
                                  ({"NumberOfBytes": 1}, 1), ({"NumberOfBytes": 64}, 64),
                                  ({"NumberOfBytes": 1024}, 1024)])
def test_generate_data_key_sizes(kms, sym, kw, n):
    r = kms.generate_data_key(KeyId=sym, **kw)
    assert len(r["Plaintext"]) == n and r["KeyId"] == key_arn(sym)
    assert kms.decrypt(CiphertextBlob=r["CiphertextBlob"])["Plaintext"] == r["Plaintext"]
    w = kms.generate_data_key_without_plaintext(KeyId=sym, **kw)
    assert "Plaintext" not in w and w["KeyId"] == key_arn(sym)
    assert len(kms.decrypt(CiphertextBlob=w["CiphertextBlob"])["Plaintext"]) == n


def test_generate_data_key_size_errors(kms, hsmd, sym):
    for op in ("GenerateDataKey", "GenerateDataKeyWithoutPlaintext"):
        call_error(hsmd, op, {"KeyId": sym}, "ValidationException")
        call_error(hsmd, op, {"KeyId": sym, "KeySpec": "AES_256", "NumberOfBytes": 32},
                   "ValidationException")
        call_error(hsmd, op, {"KeyId": sym, "NumberOfBytes": 0}, "ValidationException")
        call_error(hsmd, op, {"KeyId": sym, "NumberOfBytes": 1025}, "ValidationException")
        call_error(hsmd, op, {"KeyId": sym, "KeySpec": "AES_512"}, "ValidationException")


def test_envelope_encryption(kms, sym):
    ctx = {"file": "report.pdf"}
    dk = kms.generate_data_key(KeyId=sym, KeySpec="AES_256", EncryptionContext=ctx)
    nonce, data = os.urandom(12), os.urandom(10000)
    sealed = AESGCM(dk["Plaintext"]).encrypt(nonce, data, b"report.pdf")
    stored_key = dk["CiphertextBlob"]
    del dk
    # Later: unwrap the data key through hsmd, decrypt locally.
    key = kms.decrypt(CiphertextBlob=stored_key, EncryptionContext=ctx)["Plaintext"]
    assert AESGCM(key).decrypt(nonce, sealed, b"report.pdf") == data
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=stored_key)


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256"])
def test_generate_data_key_pair(kms, sym, spec):
    ctx = {"purpose": "pair"}
    r = kms.generate_data_key_pair(KeyId=sym, KeyPairSpec=spec, EncryptionContext=ctx)
    assert (r["KeyPairSpec"], r["KeyId"]) == (spec, key_arn(sym))
    priv = serialization.load_der_private_key(r["PrivateKeyPlaintext"], password=None)
    pub = serialization.load_der_public_key(r["PublicKey"])
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert priv.public_key().public_bytes(*spki) == r["PublicKey"]
    if spec == "RSA_2048":
        assert isinstance(priv, rsa.RSAPrivateKey) and priv.key_size == 2048
        sig = priv.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
        pub.verify(sig, b"m", padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(priv, ec.EllipticCurvePrivateKey) and priv.curve.name == "secp256r1"
        pub.verify(priv.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256()))
    # The encrypted private key decrypts (with the context) to the same PKCS#8 key.
    d = kms.decrypt(CiphertextBlob=r["PrivateKeyCiphertextBlob"], EncryptionContext=ctx)
    assert d["Plaintext"] == r["PrivateKeyPlaintext"]
    raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=r["PrivateKeyCiphertextBlob"])

    w = kms.generate_data_key_pair_without_plaintext(KeyId=sym, KeyPairSpec=spec)
    assert "PrivateKeyPlaintext" not in w and w["KeyPairSpec"] == spec
    priv2 = serialization.load_der_private_key(
        kms.decrypt(CiphertextBlob=w["PrivateKeyCiphertextBlob"])["Plaintext"], password=None)
    assert priv2.public_key().public_bytes(*spki) == w["PublicKey"]
    assert w["PublicKey"] != r["PublicKey"]


def test_generate_data_key_pair_errors(kms, sym, rsa2048):
    for spec in ("HMAC_256", "SYMMETRIC_DEFAULT", "RSA_1024"):
        raises("ValidationException", kms.generate_data_key_pair, KeyId=sym, KeyPairSpec=spec)
    raises("InvalidKeyUsageException", kms.generate_data_key_pair, KeyId=rsa2048,
           KeyPairSpec="ECC_NIST_P256")
    raises("InvalidKeyUsageException", kms.generate_data_key_pair_without_plaintext,
           KeyId=rsa2048, KeyPairSpec="ECC_NIST_P256")


# ---- GenerateRandom -----------------------------------------------------------------------

def test_generate_random(kms, hsmd):
    for n in (1, 16, 1024):
        assert len(kms.generate_random(NumberOfBytes=n)["Plaintext"]) == n
    a, b = (kms.generate_random(NumberOfBytes=32)["Plaintext"] for _ in range(2))
    assert a != b
    for n in (0, 1025, -1):
        call_error(hsmd, "GenerateRandom", {"NumberOfBytes": n}, "ValidationException")
    call_error(hsmd, "GenerateRandom", {}, "ValidationException")
    raises("CustomKeyStoreNotFoundException", kms.generate_random, NumberOfBytes=8,
           CustomKeyStoreId="cks-1234567890abcdef0")


def test_base64_of_blobs_is_standard(hsmd, sym):
    # Raw JSON: blobs travel as standard base64 (what every SDK sends).
    out = call_ok(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"\xfb\xff\xfe")})
    back = call_ok(hsmd, "Decrypt", {"CiphertextBlob": out["CiphertextBlob"]})
    assert back["Plaintext"] == b64(b"\xfb\xff\xfe")


def test_crypto_requests_are_audited_without_secrets(kms, hsmd, sym):
    secret_pt = b"plaintext-that-must-not-be-logged"
    r = kms.encrypt(KeyId=sym, Plaintext=secret_pt, EncryptionContext={"app": "ctx-value-42"})
    rec = audit_record(hsmd.data_dir, r["ResponseMetadata"]["RequestId"])
    assert (rec["op"], rec["key_id"], rec["key_version"], rec["outcome"]) == (
        "Encrypt", sym, 1, "success")
    # The context value is recorded only as a keyed hash an auditor can recompute.
    h = admin(hsmd, "AuditHash", {"Value": "ctx-value-42"})["Hash"]
    assert rec["extra"]["encryption_context"] == "app=" + h[:32]
    # Several values: each has its own keyed hash (the hasher is keyed once per record).
    ctx = {"app": "ctx-value-42", "tenant": "t-7", "region": "", "note": "ctx-value-42 again"}
    r2 = kms.encrypt(KeyId=sym, Plaintext=b"x", EncryptionContext=ctx)
    rec2 = audit_record(hsmd.data_dir, r2["ResponseMetadata"]["RequestId"])
    recorded = dict(kv.split("=", 1) for kv in rec2["extra"]["encryption_context"].split(","))
    assert recorded == {k: admin(hsmd, "AuditHash", {"Value": v})["Hash"][:32]
                        for k, v in ctx.items()}
    assert len(set(recorded.values())) == len(ctx)
    d = kms.decrypt(CiphertextBlob=r["CiphertextBlob"], EncryptionContext={"app": "ctx-value-42"})
    rec = audit_record(hsmd.data_dir, d["ResponseMetadata"]["RequestId"])
    assert (rec["op"], rec["key_id"], rec["outcome"]) == ("Decrypt", sym, "success")
    dk = kms.generate_data_key(KeyId=sym, KeySpec="AES_256")
    audit_record(hsmd.data_dir, dk["ResponseMetadata"]["RequestId"])
    log = b"".join(open(p, "rb").read() for p in glob.glob(f"{hsmd.data_dir}/audit/*.jsonl"))
    for needle in (secret_pt, b"ctx-value-42", b64(secret_pt).encode(),
                   b64(r["CiphertextBlob"]).encode(), b64(dk["Plaintext"]).encode(),
                   dk["Plaintext"].hex().encode()):
        assert needle not in log


# ---- what AWS KMS answers besides: KeyMaterialId, and Recipient refused ----------------------

def test_responses_name_the_key_material_used(kms, hsmd, sym2, rsa2048):
    """Decrypt, ReEncrypt and the GenerateDataKey family name the material (key version) of a
    symmetric key they used, as DescribeKey's CurrentKeyMaterialId names the current one."""
    key = kms.create_key(Description="material ids")["KeyMetadata"]["KeyId"]

    def current(k=key):  # boto3 1.26 drops the member: read the raw answer
        return call_ok(hsmd, "DescribeKey", {"KeyId": k})["KeyMetadata"]["CurrentKeyMaterialId"]
    first = current()
    old = call_ok(hsmd, "Encrypt", {"KeyId": key, "Plaintext": b64(b"old")})["CiphertextBlob"]
    assert call_ok(hsmd, "Decrypt", {"CiphertextBlob": old})["KeyMaterialId"] == first
    call_ok(hsmd, "RotateKeyOnDemand", {"KeyId": key})
    second = current()
    assert second != first and len(second) == 64
    new = call_ok(hsmd, "Encrypt", {"KeyId": key, "Plaintext": b64(b"new")})["CiphertextBlob"]
    assert call_ok(hsmd, "Decrypt", {"CiphertextBlob": new})["KeyMaterialId"] == second
    assert call_ok(hsmd, "Decrypt", {"CiphertextBlob": old})["KeyMaterialId"] == first
    for op in ("GenerateDataKey", "GenerateDataKeyWithoutPlaintext"):
        assert call_ok(hsmd, op, {"KeyId": key, "KeySpec": "AES_256"})["KeyMaterialId"] == second
    for op in ("GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"):
        out = call_ok(hsmd, op, {"KeyId": key, "KeyPairSpec": "ECC_NIST_P256"})
        assert out["KeyMaterialId"] == second
    out = call_ok(hsmd, "ReEncrypt", {"CiphertextBlob": old, "DestinationKeyId": sym2})
    assert out["SourceKeyMaterialId"] == first
    assert out["DestinationKeyMaterialId"] == current(sym2)
    # Asymmetric keys: no material id, as in AWS KMS.
    ct = kms.encrypt(KeyId=rsa2048, Plaintext=b"r", EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "CiphertextBlob"]
    out = call_ok(hsmd, "Decrypt", {"CiphertextBlob": b64(ct), "KeyId": rsa2048,
                                    "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
    assert "KeyMaterialId" not in out and base64.b64decode(out["Plaintext"]) == b"r"
    out = call_ok(hsmd, "ReEncrypt", {"CiphertextBlob": new, "DestinationKeyId": rsa2048,
                                      "DestinationEncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
    assert out["SourceKeyMaterialId"] == second and "DestinationKeyMaterialId" not in out


RECIPIENT = {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": "AAAA"}


def test_reencrypt_refusals_name_the_member(hsmd, sym):
    """ReEncrypt has a source and a destination of each: a refusal says which."""
    blob = call_ok(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"abc")})["CiphertextBlob"]
    base = {"CiphertextBlob": blob, "DestinationKeyId": sym}
    for member, value, said in (
            ("SourceEncryptionContext", {"": "v"}, "SourceEncryptionContext keys"),
            ("DestinationEncryptionContext", {"": "v"}, "DestinationEncryptionContext keys"),
            ("SourceEncryptionAlgorithm", "BOGUS", "SourceEncryptionAlgorithm 'BOGUS'"),
            ("DestinationEncryptionAlgorithm", "BOGUS", "DestinationEncryptionAlgorithm 'BOGUS'")):
        out = call_error(hsmd, "ReEncrypt", dict(base, **{member: value}), "ValidationException")
        assert out["message"].startswith(said), out


def test_recipient_is_refused_not_ignored(hsmd, sym):
    """Recipient asks for the secret encrypted to an enclave's key; answering in the clear would
    ignore that, so every operation that takes it refuses it and hands out nothing: with
    UnsupportedOperationException where the operation declares it, ValidationException on
    Decrypt and GenerateDataKey, which do not; a Recipient that is no structure cannot be
    read at all."""
    blob = call_ok(hsmd, "Encrypt", {"KeyId": sym, "Plaintext": b64(b"abc")})["CiphertextBlob"]
    for op, body, code in (
            ("Decrypt", {"CiphertextBlob": blob}, "ValidationException"),
            ("GenerateDataKey", {"KeyId": sym, "KeySpec": "AES_256"}, "ValidationException"),
            ("GenerateDataKeyPair", {"KeyId": sym, "KeyPairSpec": "ECC_NIST_P256"},
             "UnsupportedOperationException"),
            ("GenerateRandom", {"NumberOfBytes": 16}, "UnsupportedOperationException")):
        for recipient, error in ((RECIPIENT, code), ("not-an-object", "SerializationException")):
            out = call_error(hsmd, op, dict(body, Recipient=recipient), error)
            assert "Recipient" in out["message"] and not {
                "Plaintext", "PrivateKeyPlaintext", "CiphertextBlob"} & set(out), out
        call_ok(hsmd, op, dict(body, Recipient=None))  # null: as if left out


def context_pairs(field):
    """The pairs of a record's encryption_context, its escapes ('\\,', '\\=', '\\\\')
    undone; a key cut ends with '\\[truncated]', kept as such."""
    pairs, key, cur, i = {}, None, "", 0
    while i < len(field):
        c = field[i]
        if c == "\\" and field[i + 1] in ",=\\":
            cur += field[i + 1]
            i += 2
            continue
        if c == "\\":
            cur += c
        elif c == "=" and key is None:
            key, cur = cur, ""
        elif c == ",":
            pairs[key] = cur
            key, cur = None, ""
        else:
            cur += c
        i += 1
    pairs[key] = cur
    return pairs


def test_encryption_context_keys_cannot_pose_as_pairs(kms, hsmd, sym):
    """A context key is the client's: ',', '=' and '\\' in it are escaped, so a key
    cannot pass for pairs of its own; a key too long is cut with a mark and keeps its
    value's hash; pairs past the field's room are left out with a mark."""
    def h(v):
        return admin(hsmd, "AuditHash", {"Value": v})["Hash"][:32]

    fake = "a=" + h("x") + ",b"
    ctx = {fake: "secret", "c\\d": "v", "plain": "w"}
    r = kms.encrypt(KeyId=sym, Plaintext=b"x", EncryptionContext=ctx)
    field = audit_record(hsmd.data_dir, r["ResponseMetadata"]["RequestId"])["extra"][
        "encryption_context"]
    assert "a\\=" + h("x") + "\\,b=" + h("secret") in field, field
    assert context_pairs(field) == {k: h(v) for k, v in ctx.items()}, field
    # 300 two-byte characters: cut at 128 bytes, on a character boundary, marked.
    r = kms.encrypt(KeyId=sym, Plaintext=b"x", EncryptionContext={"\u00e9" * 300: "v"})
    field = audit_record(hsmd.data_dir, r["ResponseMetadata"]["RequestId"])["extra"][
        "encryption_context"]
    assert field == "\u00e9" * 64 + "\\[truncated]=" + h("v"), field
    # More pairs than the field holds: those left out are marked.
    ctx = {"k%02d" % i + "x" * 60: "v%d" % i for i in range(12)}
    r = kms.encrypt(KeyId=sym, Plaintext=b"x", EncryptionContext=ctx)
    field = audit_record(hsmd.data_dir, r["ResponseMetadata"]["RequestId"])["extra"][
        "encryption_context"]
    assert field.endswith(",\\[truncated]") and len(field.encode()) <= 512, field
    pairs = context_pairs(field[:-len(",\\[truncated]")])
    assert 0 < len(pairs) < len(ctx) and all(h(ctx[k]) == v for k, v in pairs.items()), field


def test_the_named_key_decides_not_the_ciphertexts(kms):
    """Decrypt and ReEncrypt with a KeyId (SourceKeyId) naming another key than the
    ciphertext's: KMS uses only the key named, so the answer is IncorrectKeyException
    whatever the state or policy of the ciphertext's key, which it does not reveal."""
    a = kms.create_key()["KeyMetadata"]["KeyId"]
    b = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=a, Plaintext=b"x")["CiphertextBlob"]
    kms.disable_key(KeyId=a)
    raises("IncorrectKeyException", kms.decrypt, CiphertextBlob=blob, KeyId=b, status=400)
    raises("IncorrectKeyException", kms.re_encrypt, CiphertextBlob=blob, SourceKeyId=b,
           DestinationKeyId=b)
    kms.enable_key(KeyId=a)
    kms.schedule_key_deletion(KeyId=a, PendingWindowInDays=7)
    raises("IncorrectKeyException", kms.decrypt, CiphertextBlob=blob, KeyId=b)
    # The ciphertext's key denies Decrypt: the caller named another key, which it may use.
    denied = key_denying(kms, "kms:Decrypt")
    blob = kms.encrypt(KeyId=denied, Plaintext=b"x")["CiphertextBlob"]
    raises("IncorrectKeyException", kms.decrypt, CiphertextBlob=blob, KeyId=b)
    # The named key's own refusals still come first.
    kms.disable_key(KeyId=b)
    good = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=good, Plaintext=b"x")["CiphertextBlob"]
    raises("DisabledException", kms.decrypt, CiphertextBlob=blob, KeyId=b)


def test_reencrypt_refusals_name_source_key_id(kms):
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    raises("ValidationException", kms.re_encrypt, CiphertextBlob=os.urandom(256),
           SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=sym,
           message="SourceKeyId is required")
