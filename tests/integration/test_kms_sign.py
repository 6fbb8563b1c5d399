"""Sign, Verify, GenerateMac, VerifyMac and GetPublicKey with boto3.  Every
signature is also checked independently with the `cryptography` package
against the public key from GetPublicKey (ECDSA signatures are DER, RSA-PSS
uses a salt as long as the digest, as in KMS)."""
import hashlib
import json
import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from helpers import ACCOUNT, call_error, key_arn, key_denying, raises

HASHES = {"SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384, "SHA_512": hashes.SHA512}
RSA_ALGS = ["RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
            "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512"]
EC = {"ECC_NIST_P256": ("ECDSA_SHA_256", "secp256r1"),
      "ECC_NIST_P384": ("ECDSA_SHA_384", "secp384r1"),
      "ECC_NIST_P521": ("ECDSA_SHA_512", "secp521r1"),
      "ECC_SECG_P256K1": ("ECDSA_SHA_256", "secp256k1")}
SPECS = ["RSA_2048", "RSA_3072", "RSA_4096", *EC, "ECC_NIST_EDWARDS25519"]
MACS = {"HMAC_224": ("HMAC_SHA_224", 28), "HMAC_256": ("HMAC_SHA_256", 32),
        "HMAC_384": ("HMAC_SHA_384", 48), "HMAC_512": ("HMAC_SHA_512", 64)}


@pytest.fixture(scope="module")
def keys(kms):
    """One SIGN_VERIFY key per spec (made once: RSA-4096 generation is slow)."""
    return {s: kms.create_key(KeySpec=s, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
            for s in SPECS}


@pytest.fixture(scope="module")
def mac_keys(kms):
    return {s: kms.create_key(KeySpec=s, KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
            for s in MACS}


def algs_of(spec):
    if spec.startswith("RSA"):
        return RSA_ALGS
    if spec in EC:
        return [EC[spec][0]]
    return ["ED25519_SHA_512"]


def hash_of(alg):
    return HASHES[alg[-7:]]()


def local_verify(pub, alg, sig, msg, digest):
    """Verifies with `cryptography`; raises InvalidSignature on a mismatch."""
    if alg == "ED25519_SHA_512":
        pub.verify(sig, msg)
        return
    h = hash_of(alg)
    data, algo = (msg, h) if not digest else (msg, utils.Prehashed(h))
    if alg.startswith("RSASSA_PSS"):
        pub.verify(sig, data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), algo)
    elif alg.startswith("RSASSA_PKCS1"):
        pub.verify(sig, data, padding.PKCS1v15(), algo)
    else:
        pub.verify(sig, data, ec.ECDSA(algo))


def digest_of(alg, msg):
    return hashlib.new(alg[-7:].replace("_", "").lower(), msg).digest()


CASES = [(s, a, t) for s in SPECS for a in algs_of(s) for t in ("RAW", "DIGEST")
         if not (a == "ED25519_SHA_512" and t == "DIGEST")]


@pytest.mark.parametrize("spec,alg,mtype", CASES, ids=[f"{s}-{a}-{t}" for s, a, t in CASES])
def test_sign_verify(kms, keys, spec, alg, mtype):
    kid = keys[spec]
    raw = b"the message " + os.urandom(16)
    msg = raw if mtype == "RAW" else digest_of(alg, raw)
    r = kms.sign(KeyId=kid, Message=msg, MessageType=mtype, SigningAlgorithm=alg)
    assert (r["KeyId"], r["SigningAlgorithm"]) == (key_arn(kid), alg)
    sig = r["Signature"]
    v = kms.verify(KeyId=kid, Message=msg, MessageType=mtype, Signature=sig, SigningAlgorithm=alg)
    assert (v["SignatureValid"], v["SigningAlgorithm"], v["KeyId"]) == (True, alg, key_arn(kid))
    pub = serialization.load_der_public_key(kms.get_public_key(KeyId=kid)["PublicKey"])
    local_verify(pub, alg, sig, msg, mtype == "DIGEST")
    if spec in EC:
        r_s = utils.decode_dss_signature(sig)  # DER SEQUENCE { r, s }
        assert all(x > 0 for x in r_s)
    if alg != "ED25519_SHA_512":
        # A RAW signature verifies against the message's digest and vice versa.
        other, other_msg = ("DIGEST", digest_of(alg, raw)) if mtype == "RAW" else ("RAW", raw)
        assert kms.verify(KeyId=kid, Message=other_msg, MessageType=other, Signature=sig,
                          SigningAlgorithm=alg)["SignatureValid"] is True
    # A changed message or signature is an error, not SignatureValid=false.
    bad_msg = bytes([msg[0] ^ 1]) + msg[1:]
    raises("KMSInvalidSignatureException", kms.verify, KeyId=kid, Message=bad_msg,
           MessageType=mtype, Signature=sig, SigningAlgorithm=alg, status=400)
    bad_sig = sig[:-1] + bytes([sig[-1] ^ 1])
    raises("KMSInvalidSignatureException", kms.verify, KeyId=kid, Message=msg,
           MessageType=mtype, Signature=bad_sig, SigningAlgorithm=alg)
    with pytest.raises(InvalidSignature):
        local_verify(pub, alg, bad_sig, msg, mtype == "DIGEST")


def test_default_message_type_is_raw(kms, keys):
    kid = keys["ECC_NIST_P256"]
    sig = kms.sign(KeyId=kid, Message=b"hello", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert kms.verify(KeyId=kid, Message=b"hello", MessageType="RAW", Signature=sig,
                      SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]


def test_pkcs1_and_ed25519_are_deterministic(kms, keys):
    for spec, alg in (("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"), ("ECC_NIST_EDWARDS25519",
                                                                  "ED25519_SHA_512")):
        a, b = (kms.sign(KeyId=keys[spec], Message=b"same", SigningAlgorithm=alg)["Signature"]
                for _ in range(2))
        assert a == b


@pytest.mark.parametrize("alg,good", [("ECDSA_SHA_256", 32), ("RSASSA_PSS_SHA_384", 48),
                                      ("RSASSA_PKCS1_V1_5_SHA_512", 64)])
def test_digest_length_is_checked(kms, keys, alg, good):
    kid = keys["ECC_NIST_P256"] if alg.startswith("ECDSA") else keys["RSA_2048"]
    for n in (good - 1, good + 1, 20):
        raises("ValidationException", kms.sign, KeyId=kid, Message=b"d" * n, MessageType="DIGEST",
               SigningAlgorithm=alg, status=400)
        raises("ValidationException", kms.verify, KeyId=kid, Message=b"d" * n,
               MessageType="DIGEST", Signature=b"s" * 64, SigningAlgorithm=alg)


def test_ed25519_signs_raw_messages_only(kms, keys):
    raises("ValidationException", kms.sign, KeyId=keys["ECC_NIST_EDWARDS25519"],
           Message=b"d" * 64, MessageType="DIGEST", SigningAlgorithm="ED25519_SHA_512")


def test_message_limits_and_names(kms, keys, hsmd):
    kid = keys["ECC_NIST_P256"]
    assert kms.sign(KeyId=kid, Message=b"m" * 4096, SigningAlgorithm="ECDSA_SHA_256")
    raises("ValidationException", kms.sign, KeyId=kid, Message=b"m" * 4097,
           SigningAlgorithm="ECDSA_SHA_256")
    call_error(hsmd, "Sign", {"KeyId": kid, "Message": "", "SigningAlgorithm": "ECDSA_SHA_256"},
               "ValidationException")
    raises("ValidationException", kms.sign, KeyId=kid, Message=b"m", SigningAlgorithm="ECDSA_SHA_1")
    raises("ValidationException", kms.sign, KeyId=kid, Message=b"m", MessageType="HASHED",
           SigningAlgorithm="ECDSA_SHA_256")
    call_error(hsmd, "Sign", {"KeyId": kid, "Message": "bQ=="}, "ValidationException")


def test_wrong_key_usage_or_algorithm(kms, keys, mac_keys):
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    rsa_enc = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    for kid in (sym, rsa_enc, mac_keys["HMAC_256"]):
        raises("InvalidKeyUsageException", kms.sign, KeyId=kid, Message=b"m",
               SigningAlgorithm="RSASSA_PSS_SHA_256", status=400)
        raises("InvalidKeyUsageException", kms.verify, KeyId=kid, Message=b"m", Signature=b"s",
               SigningAlgorithm="RSASSA_PSS_SHA_256")
    # An algorithm the key spec does not offer.
    raises("InvalidKeyUsageException", kms.sign, KeyId=keys["ECC_NIST_P256"], Message=b"m",
           SigningAlgorithm="ECDSA_SHA_384")
    raises("InvalidKeyUsageException", kms.sign, KeyId=keys["RSA_2048"], Message=b"m",
           SigningAlgorithm="ECDSA_SHA_256")
    raises("InvalidKeyUsageException", kms.sign, KeyId=keys["ECC_NIST_P384"], Message=b"m",
           SigningAlgorithm="RSASSA_PSS_SHA_384")
    # Sign keys neither encrypt nor MAC.
    raises("InvalidKeyUsageException", kms.encrypt, KeyId=keys["RSA_2048"], Plaintext=b"x",
           EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    raises("InvalidKeyUsageException", kms.generate_mac, KeyId=keys["RSA_2048"], Message=b"x",
           MacAlgorithm="HMAC_SHA_256")



def test_aws_signing_algorithms_no_key_here_takes(kms, keys, hsmd):
    """SM2DSA, ML_DSA_SHAKE_256 and ED25519_PH_SHA_512 are AWS's names for algorithms of
    keys hsmd does not offer: the key named refuses them as AWS refuses an algorithm its
    spec does not take, InvalidKeyUsageException, once it is found and the caller may use
    it; a name AWS does not define stays a ValidationException."""
    denied = key_denying(kms, "kms:Sign", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    for alg in ("SM2DSA", "ML_DSA_SHAKE_256", "ED25519_PH_SHA_512"):
        for spec in ("ECC_NIST_P256", "ECC_NIST_EDWARDS25519", "RSA_2048"):
            kid = keys[spec]
            why = f"SigningAlgorithm {alg} is not valid for {key_arn(kid)} (KeySpec {spec})"
            raises("InvalidKeyUsageException", kms.sign, KeyId=kid, Message=b"m",
                   SigningAlgorithm=alg, message=why, status=400)
            raises("InvalidKeyUsageException", kms.verify, KeyId=kid, Message=b"m",
                   Signature=b"s" * 64, SigningAlgorithm=alg, message=why)
        raises("NotFoundException", kms.sign, KeyId="alias/no-such-key", Message=b"m",
               SigningAlgorithm=alg)
        raises("AccessDeniedException", kms.sign, KeyId=denied, Message=b"m",
               SigningAlgorithm=alg)
        call_error(hsmd, "Sign", {"KeyId": keys["ECC_NIST_P256"], "Message": "bQ==",
                                  "SigningAlgorithm": alg, "MessageType": "HASHED"},
                   "ValidationException")
    raises("ValidationException", kms.sign, KeyId=keys["ECC_NIST_P256"], Message=b"m",
           SigningAlgorithm="SM2DSA_SHA_256")
    # The key is authorized as Sign authorizes it: kms:MessageType included.
    digests_only = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
             "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "Action": "kms:Sign", "Resource": "*",
             "Condition": {"StringNotEquals": {"kms:MessageType": "DIGEST"}}}]}),
        BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]["KeyId"]
    raises("InvalidKeyUsageException", kms.sign, KeyId=digests_only, Message=b"d" * 32,
           MessageType="DIGEST", SigningAlgorithm="SM2DSA")
    raises("AccessDeniedException", kms.sign, KeyId=digests_only, Message=b"m",
           SigningAlgorithm="SM2DSA")

def test_signature_of_another_key(kms, keys):
    a = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sig = kms.sign(KeyId=a, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    raises("KMSInvalidSignatureException", kms.verify, KeyId=keys["ECC_NIST_P256"], Message=b"m",
           Signature=sig, SigningAlgorithm="ECDSA_SHA_256")
    raises("KMSInvalidSignatureException", kms.verify, KeyId=a, Message=b"m",
           Signature=b"\x30\x00", SigningAlgorithm="ECDSA_SHA_256")


# ---- MACs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", list(MACS))
def test_generate_verify_mac(kms, mac_keys, spec):
    kid = mac_keys[spec]
    alg, n = MACS[spec]
    r = kms.generate_mac(KeyId=kid, Message=b"payload", MacAlgorithm=alg)
    assert (len(r["Mac"]), r["MacAlgorithm"], r["KeyId"]) == (n, alg, key_arn(kid))
    # HMAC is deterministic and depends on the message.
    assert kms.generate_mac(KeyId=kid, Message=b"payload", MacAlgorithm=alg)["Mac"] == r["Mac"]
    assert kms.generate_mac(KeyId=kid, Message=b"payloaD", MacAlgorithm=alg)["Mac"] != r["Mac"]
    v = kms.verify_mac(KeyId=kid, Message=b"payload", Mac=r["Mac"], MacAlgorithm=alg)
    assert (v["MacValid"], v["MacAlgorithm"], v["KeyId"]) == (True, alg, key_arn(kid))
    for bad in (r["Mac"][:-1] + bytes([r["Mac"][-1] ^ 1]), r["Mac"][:-1], r["Mac"] + b"\x00"):
        raises("KMSInvalidMacException", kms.verify_mac, KeyId=kid, Message=b"payload", Mac=bad,
               MacAlgorithm=alg, status=400)
    raises("KMSInvalidMacException", kms.verify_mac, KeyId=kid, Message=b"other", Mac=r["Mac"],
           MacAlgorithm=alg)
    # Each HMAC key offers exactly its own algorithm.
    other = "HMAC_SHA_512" if alg != "HMAC_SHA_512" else "HMAC_SHA_256"
    raises("InvalidKeyUsageException", kms.generate_mac, KeyId=kid, Message=b"m",
           MacAlgorithm=other)


def test_mac_keys_differ_and_limits(kms, mac_keys, hsmd):
    other = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"][
        "KeyId"]
    a = kms.generate_mac(KeyId=mac_keys["HMAC_256"], Message=b"m", MacAlgorithm="HMAC_SHA_256")
    b = kms.generate_mac(KeyId=other, Message=b"m", MacAlgorithm="HMAC_SHA_256")
    assert a["Mac"] != b["Mac"]
    raises("KMSInvalidMacException", kms.verify_mac, KeyId=other, Message=b"m", Mac=a["Mac"],
           MacAlgorithm="HMAC_SHA_256")
    kid = mac_keys["HMAC_256"]
    assert kms.generate_mac(KeyId=kid, Message=b"m" * 4096, MacAlgorithm="HMAC_SHA_256")
    raises("ValidationException", kms.generate_mac, KeyId=kid, Message=b"m" * 4097,
           MacAlgorithm="HMAC_SHA_256")
    raises("ValidationException", kms.generate_mac, KeyId=kid, Message=b"m",
           MacAlgorithm="HMAC_SHA_1")
    call_error(hsmd, "GenerateMac", {"KeyId": kid, "Message": "bQ=="}, "ValidationException")
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    raises("InvalidKeyUsageException", kms.generate_mac, KeyId=sym, Message=b"m",
           MacAlgorithm="HMAC_SHA_256")


# ---- GetPublicKey --------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_get_public_key(kms, keys, spec):
    kid = keys[spec]
    r = kms.get_public_key(KeyId=kid)
    assert r["KeyId"] == key_arn(kid)
    assert (r["KeySpec"], r["CustomerMasterKeySpec"], r["KeyUsage"]) == (spec, spec, "SIGN_VERIFY")
    assert r["SigningAlgorithms"] == algs_of(spec)
    assert "EncryptionAlgorithms" not in r
    pub = serialization.load_der_public_key(r["PublicKey"])
    if spec.startswith("RSA"):
        assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == int(spec[4:])
        assert pub.public_numbers().e == 65537
    elif spec in EC:
        assert isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == EC[spec][1]
    else:
        assert isinstance(pub, ed25519.Ed25519PublicKey)
    # The same key, by alias.
    alias = "alias/pub-" + spec.lower().replace("_", "-")
    kms.create_alias(AliasName=alias, TargetKeyId=kid)
    assert kms.get_public_key(KeyId=alias)["PublicKey"] == r["PublicKey"]


def test_get_public_key_of_encryption_key(kms):
    kid = kms.create_key(KeySpec="RSA_3072", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    r = kms.get_public_key(KeyId=kid)
    assert r["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert r["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
    assert "SigningAlgorithms" not in r
    assert serialization.load_der_public_key(r["PublicKey"]).key_size == 3072


def test_get_public_key_of_symmetric_and_hmac_keys(kms, mac_keys):
    sym = kms.create_key()["KeyMetadata"]["KeyId"]
    for kid in (sym, mac_keys["HMAC_384"]):
        raises("UnsupportedOperationException", kms.get_public_key, KeyId=kid, status=400)
