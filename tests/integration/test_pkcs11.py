"""The PKCS#11 module (libhsm_pkcs11.so) against a real hsmd, with real clients.

PyKCS11 loads the module into this process (HSM_PKCS11_ENDPOINT set before
C_Initialize) and checks: the slot, token and mechanism list; login with an
"<AccessKeyId>:<SecretAccessKey>" PIN; the token objects made from keys
created with boto3 (classes, CKA_ID/CKA_LABEL, flags, public values equal to
GetPublicKey's, sensitive values refused; AES keys as AES secret key objects;
KEY_AGREEMENT keys as a private key object that derives and its public key
object); ECDH derivation into session objects, checked against
python3-cryptography's ECDH; RSA-OAEP encryption and decryption with
ENCRYPT_DECRYPT RSA keys; AES-GCM; the signing mechanisms on every curve and
several RSA and HMAC sizes, one-shot and multi-part, each signature checked
with python3-cryptography and HMACs against GenerateMac; verification through
the module; refused inputs and parameters; C_GenerateKeyPair and C_GenerateKey
seen by DescribeKey; C_DestroyObject scheduling deletion; C_GenerateRandom;
digests computed in the module (hashlib's, in one part or several, with no
login and no call of hsmd); the audit trail of signatures made through the
module. opensc's pkcs11-tool is run as a second client (signatures verified by
`openssl dgst`, `--hash` against hashlib, `--derive` against the peer's ECDH),
also for the endpoint list, HTTPS with HSM_PKCS11_CA_FILE and
HSM_PKCS11_REGION; OpenSSL's pkcs11 engine (libp11) as a third, making
certificates with `openssl req` and serving TLS with `openssl s_server`;
ssh-agent as a fourth, signing with `ssh-keygen -Y sign`; and GnuTLS's
p11tool as a fifth.
"""
import array
import base64
import contextlib
import ctypes
import datetime
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import types
import uuid
from pathlib import Path

import PyKCS11
from botocore.exceptions import ClientError
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from PyKCS11 import LowLevel, Mechanism, RSA_PSS_Mechanism, ckbytelist
from PyKCS11 import (CKA_ALWAYS_SENSITIVE, CKA_CLASS, CKA_DECRYPT, CKA_DERIVE, CKA_EC_PARAMS,
                     CKA_EC_POINT,
                     CKA_ENCRYPT, CKA_EXTRACTABLE, CKA_ID, CKA_KEY_TYPE, CKA_LABEL, CKA_MODULUS,
                     CKA_MODULUS_BITS, CKA_NEVER_EXTRACTABLE, CKA_PRIME_1, CKA_PRIVATE,
                     CKA_PRIVATE_EXPONENT, CKA_PUBLIC_EXPONENT, CKA_SENSITIVE, CKA_SIGN,
                     CKA_TOKEN, CKA_VALUE, CKA_VALUE_LEN, CKA_VERIFY, CKK_EC, CKK_GENERIC_SECRET, CKK_RSA,
                     CKM, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_SECRET_KEY, CKR, CKR_OK)

from conftest import (ACCOUNT, BUILD, DEV_AKID, DEV_SECRET, REGION, Hsmd, client,
                      signed_call, start_dev)
from helpers import (admin, audit_records, audit_records_until, key_denying, listed_key_ids,
                     kms_front, make_pki, new_user)

MODULE = os.path.join(BUILD, "libhsm_pkcs11.so")
CKR_ACTION_PROHIBITED = 0x1B  # PKCS#11 v2.40; not among PyKCS11 1.5's names
CKA_UNKNOWN = 0x8000ABCD      # a vendor-defined attribute the module does not know
P256_OID = bytes.fromhex("06082a8648ce3d030107")
P384_OID = bytes.fromhex("06052b81040022")
DIGESTINFO_SHA256 = bytes.fromhex("3031300d060960864801650304020105000420")
MECHANISMS = {CKM[n] for n in (
    "CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_EC_KEY_PAIR_GEN", "CKM_RSA_PKCS", "CKM_SHA256_RSA_PKCS",
    "CKM_SHA384_RSA_PKCS", "CKM_SHA512_RSA_PKCS", "CKM_RSA_PKCS_PSS", "CKM_SHA256_RSA_PKCS_PSS",
    "CKM_SHA384_RSA_PKCS_PSS", "CKM_SHA512_RSA_PKCS_PSS", "CKM_ECDSA", "CKM_ECDSA_SHA224",
    "CKM_ECDSA_SHA256",
    "CKM_ECDSA_SHA384", "CKM_ECDSA_SHA512", "CKM_SHA224_HMAC", "CKM_SHA256_HMAC",
    "CKM_SHA384_HMAC", "CKM_SHA512_HMAC", "CKM_RSA_PKCS_OAEP", "CKM_EC_EDWARDS_KEY_PAIR_GEN",
    "CKM_EDDSA", "CKM_AES_GCM", "CKM_AES_KEY_GEN", "CKM_GENERIC_SECRET_KEY_GEN", "CKM_SHA_1",
    "CKM_SHA224", "CKM_SHA256", "CKM_SHA384", "CKM_SHA512", "CKM_ECDH1_DERIVE",
    "CKM_ECDH1_COFACTOR_DERIVE")}
MSG = b"GET /v1/accounts/42 HTTP/1.1\r\nHost: api.example\r\n\r\n"
PSS_SHA256 = (CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256, 32)


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
def user(server):
    """The crypto-user whose PIN the signing tests log in with."""
    akid, secret = new_user(server, "p11-app", ["crypto-user"])
    return types.SimpleNamespace(akid=akid, pin=f"{akid}:{secret}",
                                 kms=client(server, akid, secret),
                                 arn=f"arn:aws:iam::{ACCOUNT}:user/p11-app")


@pytest.fixture(scope="module")
def keys(officer):
    def create(spec, usage, alias=None):
        kid = officer.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
        if alias:
            officer.create_alias(AliasName=alias, TargetKeyId=kid)
        return kid
    return {"rsa": create("RSA_2048", "SIGN_VERIFY", "alias/web-tls"),
            "ec": create("ECC_NIST_P256", "SIGN_VERIFY"),
            "mac": create("HMAC_256", "GENERATE_VERIFY_MAC", "alias/api-mac"),
            "aes": create("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "alias/session-aes"),
            "rsa_enc": create("RSA_2048", "ENCRYPT_DECRYPT", "alias/rsa-enc"),
            "ecdh": create("ECC_NIST_P384", "KEY_AGREEMENT", "alias/ecdh-key")}


@pytest.fixture(scope="module")
def p11(server, keys):
    """The module, loaded and initialized with the node's endpoint."""
    assert os.path.exists(MODULE), f"{MODULE} is not built"
    old = os.environ.get("HSM_PKCS11_ENDPOINT")
    os.environ["HSM_PKCS11_ENDPOINT"] = server.endpoint
    lib = PyKCS11.PyKCS11Lib()
    lib.load(MODULE)
    yield lib
    lib.lib.Unload()  # C_Finalize
    if old is None:
        os.environ.pop("HSM_PKCS11_ENDPOINT", None)
    else:
        os.environ["HSM_PKCS11_ENDPOINT"] = old


# ---- helpers ---------------------------------------------------------------------------------

@contextlib.contextmanager
def session(lib, pin=None):
    """A R/W session on slot 0, logged in with pin if given (logged out on exit)."""
    s = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    try:
        if pin is not None:
            s.login(pin)
        yield s
    finally:
        if pin is not None:
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                s.logout()
        s.closeSession()


def refused(fn, *args):
    """Calls a PyKCS11 method expecting some PKCS#11 error; returns its code."""
    with pytest.raises(PyKCS11.PyKCS11Error) as e:
        fn(*args)
    return e.value.value


def ckr(code, fn, *args):
    """Calls a PyKCS11 method expecting the PKCS#11 error `code`."""
    got = refused(fn, *args)
    assert got == code, f"got {CKR.get(got, hex(got))}, expected {CKR.get(code, hex(code))}"


def check(rv, what):
    assert rv == CKR_OK, f"{what}: {CKR.get(rv, hex(rv))}"


def find(s, cls, key_id):
    tpl = [(CKA_ID, key_id.encode())] + ([(CKA_CLASS, cls)] if cls is not None else [])
    return s.findObjects(tpl)


def attrs(s, obj, *types_):
    """Attribute values; binary ones as bytes. PyKCS11 gives None for a refused attribute."""
    out = s.getAttributeValue(obj, list(types_))
    return [bytes(v) if isinstance(v, (tuple, list, LowLevel.ckbytelist)) else v for v in out]


def attr_rv(s, obj, t):
    """The return value of C_GetAttributeValue for one attribute."""
    tpl = LowLevel.ckattrlist(1)
    tpl[0].SetType(t)
    return s.lib.C_GetAttributeValue(s.session, obj, tpl)


def sign(s, key, mech, data):
    return bytes(s.sign(key, data, mech))


def sign_parts(s, key, mech, parts):
    """C_SignInit, C_SignUpdate for each part, C_SignFinal (size, then signature)."""
    check(s.lib.C_SignInit(s.session, mech.to_native(), key), "C_SignInit")
    for p in parts:
        check(s.lib.C_SignUpdate(s.session, ckbytelist(p)), "C_SignUpdate")
    out = ckbytelist()
    check(s.lib.C_SignFinal(s.session, out), "C_SignFinal (length)")
    check(s.lib.C_SignFinal(s.session, out), "C_SignFinal")
    return bytes(out)


def verify_parts(s, key, mech, parts, sig):
    check(s.lib.C_VerifyInit(s.session, mech.to_native(), key), "C_VerifyInit")
    for p in parts:
        check(s.lib.C_VerifyUpdate(s.session, ckbytelist(p)), "C_VerifyUpdate")
    return s.lib.C_VerifyFinal(s.session, ckbytelist(sig))


def sign_rv(lib, key, mech, data):
    """In a fresh session: the first error of C_SignInit / C_Sign, or CKR_OK if it signed."""
    with session(lib) as s:
        rv = s.lib.C_SignInit(s.session, mech.to_native(), key)
        out = ckbytelist()
        for _ in range(2):  # length query, then the signature
            if rv == CKR_OK:
                rv = s.lib.C_Sign(s.session, ckbytelist(data), out)
        return rv


def public_key(kms, key_id):
    der = kms.get_public_key(KeyId=key_id)["PublicKey"]
    return serialization.load_der_public_key(der)


def der_ecdsa(raw):
    n = len(raw) // 2
    r, s = int.from_bytes(raw[:n], "big"), int.from_bytes(raw[n:], "big")
    return utils.encode_dss_signature(r, s)


def flip(sig):
    return sig[:-1] + bytes([sig[-1] ^ 1])


def ec_point(pub):
    """CKA_EC_POINT: a DER OCTET STRING wrapping the uncompressed point."""
    pt = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return b"\x04" + (bytes([len(pt)]) if len(pt) < 128 else bytes([0x81, len(pt)])) + pt


# ---- 1. slot, token, mechanisms --------------------------------------------------------------

def test_slot_token_and_mechanisms(p11):
    assert p11.getSlotList(tokenPresent=True) == [0]
    assert p11.getSlotList() == [0]
    info = p11.getTokenInfo(0)
    assert info.label == "hsmd".ljust(32), repr(info.label)
    assert info.manufacturerID == "hsmd".ljust(32), repr(info.manufacturerID)
    for flag in ("CKF_LOGIN_REQUIRED", "CKF_USER_PIN_INITIALIZED", "CKF_TOKEN_INITIALIZED",
                 "CKF_RNG"):
        assert info.flags & getattr(PyKCS11, flag), (flag, info.flags2text())
    mechs = p11.getMechanismList(0)
    assert len(mechs) == len(MECHANISMS) and {CKM[m] for m in mechs} == MECHANISMS, mechs
    # Generic secret sizes are in bits (CKA_VALUE_LEN 28-64 bytes: HMAC_224 .. HMAC_512).
    info = p11.getMechanismInfo(0, "CKM_GENERIC_SECRET_KEY_GEN")
    assert (info.ulMinKeySize, info.ulMaxKeySize) == (224, 512)


# ---- 2. login --------------------------------------------------------------------------------

def test_login(p11, user, keys):
    # The token has no security officer: a CKU_SO login meets the session rule first
    # (no read-only session may be open), then finds no SO PIN right.
    ro = p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION)
    with session(p11) as s:
        ckr(PyKCS11.CKR_SESSION_READ_ONLY_EXISTS, s.login, user.pin, PyKCS11.CKU_SO)
        ro.closeSession()
        ckr(PyKCS11.CKR_PIN_INCORRECT, s.login, user.pin, PyKCS11.CKU_SO)
        ckr(PyKCS11.CKR_USER_TYPE_INVALID, s.login, user.pin, 7)
        s.login(user.pin)
        ckr(PyKCS11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN, s.login, user.pin, PyKCS11.CKU_SO)
        ckr(PyKCS11.CKR_USER_ALREADY_LOGGED_IN, s.login, user.pin)
        s.logout()
    with session(p11) as s, session(p11) as other:
        assert s.findObjects() == []  # nothing before login
        # No key asks for a login of its own, so a context-specific one has nothing to follow.
        ckr(PyKCS11.CKR_OPERATION_NOT_INITIALIZED, s.login, user.pin,
            PyKCS11.CKU_CONTEXT_SPECIFIC)
        ckr(PyKCS11.CKR_PIN_INCORRECT, s.login, user.akid + ":" + "x" * 40)
        ckr(PyKCS11.CKR_PIN_INCORRECT, s.login, user.akid + "no-colon-in-this-pin")
        assert s.findObjects() == []
        s.login(user.pin)
        # Login is per token: the other session sees the objects too.
        (priv,) = find(other, CKO_PRIVATE_KEY, keys["rsa"])
        s.logout()
        assert other.findObjects() == []
        ckr(PyKCS11.CKR_USER_NOT_LOGGED_IN, other.sign, priv, MSG,
            Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS))


def test_closing_the_last_session_ends_the_login(p11, user, keys):
    """The login ends with the last session (C_CloseSession) or with C_CloseAllSessions, as at
    C_Logout: a new session finds no object and reads none by a handle kept from before."""
    def closing_all():
        p11.closeAllSessions(0)

    for close in ("last", "all"):
        s = p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION)
        s.login(user.pin)
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
        assert attrs(s, priv, CKA_ID) == [keys["rsa"].encode()]
        if close == "last":
            s.closeSession()
        else:
            closing_all()
        with session(p11) as t:
            assert t.getSessionInfo().state == PyKCS11.CKS_RW_PUBLIC_SESSION
            assert t.findObjects() == []
            assert find(t, CKO_PRIVATE_KEY, keys["rsa"]) == []
            assert attr_rv(t, priv, CKA_ID) == PyKCS11.CKR_OBJECT_HANDLE_INVALID
            assert attr_rv(t, priv, CKA_CLASS) == PyKCS11.CKR_OBJECT_HANDLE_INVALID
            # C_DestroyObject's list has no CKR_USER_NOT_LOGGED_IN: no handle names an object.
            assert t.lib.C_DestroyObject(t.session, priv) == PyKCS11.CKR_OBJECT_HANDLE_INVALID
            ckr(PyKCS11.CKR_USER_NOT_LOGGED_IN, t.sign, priv, MSG,
                Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS))
            t.login(user.pin)  # and a new login reads them again
            assert len(find(t, CKO_PRIVATE_KEY, keys["rsa"])) == 1


def test_stale_handles_searches_and_init_codes(p11, user, keys):
    """A closed session's handle stays invalid when its slot is reused (a double close reaches
    no other session); a search under way ends at logout; C_SignInit/C_VerifyInit say
    KEY_FUNCTION_NOT_PERMITTED for what a key's attributes do not allow and
    KEY_TYPE_INCONSISTENT for a key of another type, and refuse parameters given to a
    mechanism that takes none."""
    a = p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    try:
        a.login(user.pin)
        b = p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION)
        old = b.session
        b.closeSession()
        c = p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION)
        assert c.session.value() != old.value()
        assert p11.lib.C_CloseSession(old) == PyKCS11.CKR_SESSION_HANDLE_INVALID
        assert c.getSessionInfo().state == PyKCS11.CKS_RO_USER_FUNCTIONS  # c is untouched
        c.closeSession()

        # A search begun while logged in ends at logout: no handle the logout took away.
        tpl = PyKCS11.LowLevel.ckattrlist(0)
        assert a.lib.C_FindObjectsInit(a.session, tpl) == CKR_OK
        a.logout()
        found = PyKCS11.LowLevel.ckobjlist(8)
        assert a.lib.C_FindObjects(a.session, found) == PyKCS11.CKR_OPERATION_NOT_INITIALIZED
        a.login(user.pin)

        (ec_priv,) = find(a, CKO_PRIVATE_KEY, keys["ec"])
        (ec_pub,) = find(a, CKO_PUBLIC_KEY, keys["ec"])
        (mac,) = find(a, CKO_SECRET_KEY, keys["mac"])

        def init(fn, mech, key):  # (one that began an operation fails the next: ACTIVE)
            return fn(a.session, mech.to_native(), key)

        ecdsa, hmac = Mechanism(PyKCS11.CKM_ECDSA), Mechanism(PyKCS11.CKM_SHA256_HMAC)
        assert init(a.lib.C_SignInit, ecdsa, mac) == PyKCS11.CKR_KEY_TYPE_INCONSISTENT
        assert init(a.lib.C_SignInit, hmac, ec_priv) == PyKCS11.CKR_KEY_TYPE_INCONSISTENT
        assert init(a.lib.C_VerifyInit, hmac, ec_pub) == PyKCS11.CKR_KEY_TYPE_INCONSISTENT
        assert init(a.lib.C_SignInit, ecdsa, ec_pub) == PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED
        assert init(a.lib.C_VerifyInit, ecdsa, ec_priv) == \
            PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED
        junk = Mechanism(PyKCS11.CKM_ECDSA, b"junk")
        assert init(a.lib.C_SignInit, junk, ec_priv) == PyKCS11.CKR_MECHANISM_PARAM_INVALID
        assert init(a.lib.C_SignInit, Mechanism(PyKCS11.CKM_SHA256_HMAC, b"junk"), mac) == \
            PyKCS11.CKR_MECHANISM_PARAM_INVALID
        # None of them left an operation behind: the right pair signs.
        assert len(sign(a, ec_priv, Mechanism(PyKCS11.CKM_ECDSA_SHA256), MSG)) == 64
    finally:
        with contextlib.suppress(PyKCS11.PyKCS11Error):
            a.logout()
        a.closeSession()


def test_init_codes_put_the_key_type_before_its_function(p11, user, keys):
    """A key of another type than the mechanism's is CKR_KEY_TYPE_INCONSISTENT even when its
    class or usage would not allow the function either: CKR_KEY_FUNCTION_NOT_PERMITTED "has
    lower priority than CKR_KEY_TYPE_INCONSISTENT" (PKCS#11 v2.40 5.1.6).  The same order
    for signing, verification and encryption; a key of the mechanism's type whose class or
    usage does not allow it is not permitted.  C_DeriveKey, whose list has no
    CKR_KEY_FUNCTION_NOT_PERMITTED, answers CKR_KEY_TYPE_INCONSISTENT for both."""
    TYPE, FUNCTION = PyKCS11.CKR_KEY_TYPE_INCONSISTENT, PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED
    with session(p11, user.pin) as s:
        def obj(cls, name):
            (o,) = find(s, cls, keys[name])
            return o

        rsa_pub, ec_pub = obj(CKO_PUBLIC_KEY, "rsa"), obj(CKO_PUBLIC_KEY, "ec")
        ec_priv, dec_priv = obj(CKO_PRIVATE_KEY, "ec"), obj(CKO_PRIVATE_KEY, "rsa_enc")
        agree_pub, agree_priv = obj(CKO_PUBLIC_KEY, "ecdh"), obj(CKO_PRIVATE_KEY, "ecdh")
        aes, mac = obj(CKO_SECRET_KEY, "aes"), obj(CKO_SECRET_KEY, "mac")
        ecdsa = Mechanism(PyKCS11.CKM_ECDSA_SHA256)
        hmac, rsa = Mechanism(PyKCS11.CKM_SHA256_HMAC), Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS)
        sha256_oaep = oaep(CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256)
        gcm = PyKCS11.AES_GCM_Mechanism(bytes(12), b"", 128)
        for fn, mech, key, code in [
            (s.lib.C_SignInit, ecdsa, aes, TYPE),
            (s.lib.C_SignInit, ecdsa, rsa_pub, TYPE),       # a public key, of another type
            (s.lib.C_SignInit, ecdsa, dec_priv, TYPE),      # a decryption key, of another type
            (s.lib.C_VerifyInit, hmac, ec_priv, TYPE),      # a private key, of another type
            (s.lib.C_EncryptInit, sha256_oaep, ec_pub, TYPE),
            (s.lib.C_EncryptInit, gcm, mac, TYPE),
            (s.lib.C_SignInit, rsa, dec_priv, FUNCTION),    # RSA, but for decryption
            (s.lib.C_SignInit, ecdsa, ec_pub, FUNCTION),
            (s.lib.C_VerifyInit, Mechanism(PyKCS11.CKM_ECDSA), agree_pub, FUNCTION),
            (s.lib.C_EncryptInit, sha256_oaep, rsa_pub, FUNCTION),
            (s.lib.C_DecryptInit, sha256_oaep, obj(CKO_PUBLIC_KEY, "rsa_enc"), FUNCTION),
        ]:
            got = fn(s.session, mech.to_native(), key)
            assert got == code, (fn.__name__, CKR.get(got, hex(got)), key.value())
        point = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        ckr(TYPE, s.deriveKey, dec_priv, SECRET_TEMPLATE, ecdh(point))
        # C_DeriveKey's list (5.13) has no CKR_KEY_FUNCTION_NOT_PERMITTED: a signing key of
        # the right curve is still a key whose type does not go with ECDH.
        ckr(TYPE, s.deriveKey, ec_priv, SECRET_TEMPLATE, ecdh(point))
        # None of them began an operation: the right keys still begin one.
        assert len(sign(s, ec_priv, ecdsa, MSG)) == 64
        assert s.deriveKey(agree_priv, SECRET_TEMPLATE, ecdh(point)).value() != 0


def test_refusals_by_key_policy_answer_codes_each_function_may_return(p11, officer, user,
                                                                      keys):
    """hsmd refuses a use of a key its policy denies the user (AccessDeniedException).  The
    policy is hsmd's, so C_SignInit, C_DecryptInit cannot know and begin the operation; the
    refusal comes at C_Sign, C_SignFinal, C_Decrypt, C_DeriveKey, whose lists (PKCS#11 v2.40
    5.9-5.13) have no code saying why: CKR_FUNCTION_FAILED, never CKR_ACTION_PROHIBITED,
    which "can only be returned by C_CopyObject, C_SetAttributeValue and C_DestroyObject"
    (5.1.6).  The refused call ends its operation, so the session goes on with another; and
    C_DestroyObject, which may, still answers CKR_ACTION_PROHIBITED for a deletion refused."""
    no_sign = key_denying(officer, "kms:Sign", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    no_decrypt = key_denying(officer, "kms:Decrypt", KeySpec="RSA_2048",
                             KeyUsage="ENCRYPT_DECRYPT")
    no_derive = key_denying(officer, "kms:DeriveSharedSecret", KeySpec="ECC_NIST_P384",
                            KeyUsage="KEY_AGREEMENT")
    ecdsa = Mechanism(PyKCS11.CKM_ECDSA_SHA256)
    m = oaep(CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256)
    FAILED = PyKCS11.CKR_FUNCTION_FAILED
    with session(p11, user.pin) as s:
        (denied,) = find(s, CKO_PRIVATE_KEY, no_sign)
        (signer,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        # One part: C_SignInit begins, C_Sign is refused and ends the operation.
        check(s.lib.C_SignInit(s.session, ecdsa.to_native(), denied), "C_SignInit")
        out = ckbytelist()
        check(s.lib.C_Sign(s.session, ckbytelist(MSG), out), "C_Sign (length)")
        assert s.lib.C_Sign(s.session, ckbytelist(MSG), out) == FAILED
        assert s.lib.C_Sign(s.session, ckbytelist(MSG), out) == \
            PyKCS11.CKR_OPERATION_NOT_INITIALIZED
        assert len(sign(s, signer, ecdsa, MSG)) == 64  # no operation left behind
        # In parts: the refusal comes at C_SignFinal, which ends the operation too.
        check(s.lib.C_SignInit(s.session, ecdsa.to_native(), denied), "C_SignInit")
        check(s.lib.C_SignUpdate(s.session, ckbytelist(MSG)), "C_SignUpdate")
        out = ckbytelist([0] * 64)
        assert s.lib.C_SignFinal(s.session, out) == FAILED
        assert sign_parts(s, signer, ecdsa, [MSG[:5], MSG[5:]])
        # Decryption: the public key encrypts (hsmd's Encrypt is allowed), Decrypt is refused.
        (enc,) = find(s, CKO_PUBLIC_KEY, no_decrypt)
        (dec,) = find(s, CKO_PRIVATE_KEY, no_decrypt)
        ct = bytes(s.encrypt(enc, b"for nobody", m))
        assert refused(s.decrypt, dec, ct, m) == FAILED
        (ok_enc,) = find(s, CKO_PUBLIC_KEY, keys["rsa_enc"])
        (ok_dec,) = find(s, CKO_PRIVATE_KEY, keys["rsa_enc"])
        assert bytes(s.decrypt(ok_dec, bytes(s.encrypt(ok_enc, b"next", m)), m)) == b"next"
        # Derivation: refused by hsmd's DeriveSharedSecret, no object made.
        (agree,) = find(s, CKO_PRIVATE_KEY, no_derive)
        point = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        before = s.findObjects([(CKA_CLASS, CKO_SECRET_KEY)])
        assert refused(s.deriveKey, agree, SECRET_TEMPLATE, ecdh(point)) == FAILED
        assert len(s.findObjects([(CKA_CLASS, CKO_SECRET_KEY)])) == len(before)
        # C_DestroyObject's list has CKR_ACTION_PROHIBITED: a crypto-user's deletion refused.
        assert s.lib.C_DestroyObject(s.session, denied) == CKR_ACTION_PROHIBITED
        # A key deleted in hsmd after C_SignInit, and gone from the table at a search in
        # another session: C_Sign's list has no key code either (CKR_KEY_HANDLE_INVALID is
        # C_SignInit's), CKR_FUNCTION_FAILED, and the operation ends.
        gone = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
            "KeyMetadata"]["KeyId"]
        (doomed,) = find(s, CKO_PRIVATE_KEY, gone)
        check(s.lib.C_SignInit(s.session, ecdsa.to_native(), doomed), "C_SignInit")
        officer.schedule_key_deletion(KeyId=gone, PendingWindowInDays=7)
        with session(p11) as other:
            assert find(other, CKO_PRIVATE_KEY, gone) == []
        assert s.lib.C_Sign(s.session, ckbytelist(MSG), ckbytelist()) == FAILED
        assert len(sign(s, signer, ecdsa, MSG)) == 64
    for kid in (no_sign, no_decrypt, no_derive):
        assert officer.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Enabled"


def test_logout_keeps_the_handles_of_public_objects(p11, user, officer, keys):
    """PKCS#11 v2.40 5.6: at logout only private objects' handles become invalid.  Public keys
    and certificates (token objects, and session certificates with CKA_PRIVATE false) keep
    their handles for the next login; none shows while logged out."""
    officer_pin = f"{DEV_AKID}:{DEV_SECRET}"
    cert_t = [(CKA_CLASS, PyKCS11.CKO_CERTIFICATE), (PyKCS11.CKA_CERTIFICATE_TYPE,
                                                     PyKCS11.CKC_X_509)]
    with session(p11) as s:
        s.login(officer_pin)
        token_der = self_signed_der()
        token_cert = s.createObject(cert_t + [(CKA_TOKEN, True), (CKA_VALUE, token_der),
                                              (CKA_LABEL, "p11-logout-cert")])
        try:
            session_cert = s.createObject(cert_t + [(CKA_TOKEN, False),
                                                    (CKA_VALUE, self_signed_der())])
            (pub,) = find(s, CKO_PUBLIC_KEY, keys["ec"])
            (priv,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
            s.logout()
            assert s.findObjects() == []
            assert attr_rv(s, pub, CKA_ID) == PyKCS11.CKR_OBJECT_HANDLE_INVALID  # hidden
            s.login(officer_pin)
            assert [o.value() for o in find(s, CKO_PUBLIC_KEY, keys["ec"])] == [pub.value()]
            (priv2,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
            assert priv2.value() != priv.value()
            assert attr_rv(s, priv, CKA_ID) == PyKCS11.CKR_OBJECT_HANDLE_INVALID
            certs = [o.value() for o in s.findObjects([(CKA_CLASS, PyKCS11.CKO_CERTIFICATE)])]
            assert token_cert.value() in certs and session_cert.value() in certs
            assert attrs(s, token_cert, CKA_VALUE) == [token_der]
        finally:
            with contextlib.suppress(PyKCS11.PyKCS11Error):
                s.logout()
            s.login(officer_pin)  # the token certificate goes, whatever happened
            (mine,) = [o for o in s.findObjects([(CKA_CLASS, PyKCS11.CKO_CERTIFICATE),
                                                 (CKA_LABEL, "p11-logout-cert")])]
            s.destroyObject(mine)


def test_credentials_revoked_after_login_end_the_login(p11, server, keys):
    """A PIN whose access key is revoked mid-session: the next call is CKR_USER_NOT_LOGGED_IN
    (CKR_PIN_INCORRECT is C_Login's answer) and the login ends, objects gone, as at C_Logout."""
    akid, secret = new_user(server, "p11-revoked", ["crypto-user"])
    with session(p11) as s:
        s.login(f"{akid}:{secret}")
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        assert len(sign(s, priv, Mechanism(PyKCS11.CKM_ECDSA_SHA256), MSG)) == 64
        admin(server, "RevokeAccessKey", {"AccessKeyId": akid})
        ckr(PyKCS11.CKR_USER_NOT_LOGGED_IN, s.sign, priv, MSG,
            Mechanism(PyKCS11.CKM_ECDSA_SHA256))
        assert s.getSessionInfo().state == PyKCS11.CKS_RW_PUBLIC_SESSION
        assert s.findObjects() == []
        ckr(PyKCS11.CKR_USER_NOT_LOGGED_IN, s.logout)
        ckr(PyKCS11.CKR_PIN_INCORRECT, s.login, f"{akid}:{secret}")  # at login: the PIN's code


# ---- 3. objects ------------------------------------------------------------------------------

def test_keys_hsmd_refuses_to_describe_are_left_out(p11, server, user, officer, keys):
    """A key hsmd refuses to describe or give the public key of, to this user (a disabled key:
    DisabledException; a policy denying the user: AccessDeniedException), is left out of the
    token; login and searches work and show every other key.  Only Enabled keys are listed."""
    disabled = officer.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"]["KeyId"]
    disabled_aes = officer.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")[
        "KeyMetadata"]["KeyId"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "root", "Effect": "Allow",
         "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "not-the-app", "Effect": "Deny", "Principal": {"AWS": user.arn},
         "Action": "kms:*", "Resource": "*"}]}
    denied = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
                                Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    try:
        for k in (disabled, disabled_aes):
            officer.disable_key(KeyId=k)
        with session(p11, user.pin) as s:
            ids = {attrs(s, o, CKA_ID)[0].decode() for o in s.findObjects()}
            assert {keys["rsa"], keys["ec"], keys["mac"], keys["aes"]} <= ids, ids
            assert not {disabled, disabled_aes, denied} & ids, ids
            for k in (disabled, disabled_aes, denied):  # a search naming the key: none either
                assert find(s, None, k) == []
        # Enabled again, it is listed again.
        officer.enable_key(KeyId=disabled)
        with session(p11, user.pin) as s:
            assert len(find(s, None, disabled)) == 2
            officer.disable_key(KeyId=disabled)
            assert find(s, None, disabled) == []  # read again at each search
        # HSM_PKCS11_KEYS naming a disabled key and a refused one: the others show.
        p = tool(server.endpoint, "--login", "--pin", user.pin, "-O",
                 keys=f"{disabled},{denied},{keys['ec']}")
        assert p.returncode == 0, p.stderr
        shown = {bytes.fromhex(line.split()[1]).decode()
                 for line in p.stdout.splitlines() if line.strip().startswith("ID:")}
        assert shown == {keys["ec"]}, p.stdout
    finally:
        for k in (disabled, disabled_aes, denied):
            officer.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)


def test_objects_mirror_the_kms_keys(p11, user, officer, keys):
    with session(p11, user.pin) as s:
        ids = {attrs(s, o, CKA_ID)[0] for o in s.findObjects()}
        assert {keys[k].encode() for k in ("rsa", "ec", "mac", "rsa_enc", "aes")} <= ids, ids
        # A symmetric key: an AES secret key object that encrypts and decrypts, never extracted.
        (aes,) = find(s, None, keys["aes"])
        assert attrs(s, aes, CKA_CLASS, CKA_KEY_TYPE, CKA_LABEL, CKA_ENCRYPT, CKA_DECRYPT,
                     CKA_SIGN, CKA_VERIFY, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_VALUE_LEN) == [
            CKO_SECRET_KEY, PyKCS11.CKK_AES, "session-aes", True, True, False, False, True,
            False, 32]
        assert attr_rv(s, aes, CKA_VALUE) == PyKCS11.CKR_ATTRIBUTE_SENSITIVE
        # An RSA key for encryption: a pair that decrypts and encrypts, and does not sign.
        (dec,) = find(s, CKO_PRIVATE_KEY, keys["rsa_enc"])
        (enc,) = find(s, CKO_PUBLIC_KEY, keys["rsa_enc"])
        assert attrs(s, dec, CKA_LABEL, CKA_DECRYPT, CKA_SIGN, CKA_SENSITIVE,
                     CKA_EXTRACTABLE) == ["rsa-enc", True, False, True, False]
        assert attrs(s, enc, CKA_ENCRYPT, CKA_VERIFY) == [True, False]
        for name, label, ktype in (("rsa", "web-tls", CKK_RSA), ("ec", keys["ec"], CKK_EC)):
            kid = keys[name].encode()
            assert len(find(s, None, keys[name])) == 2
            (priv,) = find(s, CKO_PRIVATE_KEY, keys[name])
            (pub,) = find(s, CKO_PUBLIC_KEY, keys[name])
            for o in (priv, pub):
                assert attrs(s, o, CKA_ID, CKA_LABEL, CKA_TOKEN, CKA_KEY_TYPE) == [
                    kid, label, True, ktype]
            assert attrs(s, priv, CKA_PRIVATE, CKA_SIGN, CKA_DECRYPT, CKA_SENSITIVE,
                         CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE) == [
                True, True, False, True, False, True, True]
            assert attrs(s, pub, CKA_PRIVATE, CKA_VERIFY) == [False, True]
            # An EC private key has a CKA_VALUE, never given; an RSA one has none (2.1.3).
            assert attr_rv(s, priv, CKA_VALUE) == (PyKCS11.CKR_ATTRIBUTE_SENSITIVE if name == "ec"
                                                   else PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID)
            assert attr_rv(s, priv, CKA_UNKNOWN) == PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID
            assert attr_rv(s, pub, CKA_UNKNOWN) == PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID
            pk = public_key(officer, keys[name])
            if name == "rsa":
                for t in (CKA_PRIVATE_EXPONENT, CKA_PRIME_1):
                    assert attr_rv(s, priv, t) == PyKCS11.CKR_ATTRIBUTE_SENSITIVE, PyKCS11.CKA[t]
                for o in (priv, pub):  # CKA_MODULUS_BITS: a public key's (2.1.2), not 2.1.3's
                    n, e, bits = attrs(s, o, CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_MODULUS_BITS)
                    assert int.from_bytes(n, "big") == pk.public_numbers().n
                    assert int.from_bytes(e, "big") == pk.public_numbers().e == 65537
                    assert bits == (2048 if o == pub else None)
            else:
                assert attrs(s, priv, CKA_EC_PARAMS) == [P256_OID]
                assert attrs(s, pub, CKA_EC_PARAMS, CKA_EC_POINT) == [
                    P256_OID, ec_point(pk)]
        (mac,) = find(s, None, keys["mac"])
        assert attrs(s, mac, CKA_CLASS, CKA_KEY_TYPE, CKA_LABEL, CKA_TOKEN, CKA_SIGN, CKA_VERIFY,
                     CKA_SENSITIVE, CKA_EXTRACTABLE) == [
            CKO_SECRET_KEY, CKK_GENERIC_SECRET, "api-mac", True, True, True, True, False]
        assert attr_rv(s, mac, CKA_VALUE) == PyKCS11.CKR_ATTRIBUTE_SENSITIVE


def test_key_agreement_key_objects(p11, user, officer, keys):
    """A KEY_AGREEMENT key is a private key object that derives (CKA_DERIVE) and
    a public key object with its public values, for a peer; neither signs."""
    with session(p11, user.pin) as s:
        (pub,) = find(s, CKO_PUBLIC_KEY, keys["ecdh"])
        assert attrs(s, pub, CKA_CLASS, CKA_KEY_TYPE, CKA_ID, CKA_LABEL, CKA_TOKEN, CKA_PRIVATE,
                     CKA_VERIFY, CKA_ENCRYPT, CKA_DERIVE) == [
            CKO_PUBLIC_KEY, CKK_EC, keys["ecdh"].encode(), "ecdh-key", True, False, False, False,
            False]
        assert attrs(s, pub, CKA_EC_PARAMS, CKA_EC_POINT) == [
            P384_OID, ec_point(public_key(officer, keys["ecdh"]))]
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        assert attrs(s, priv, CKA_KEY_TYPE, CKA_DERIVE, CKA_SIGN, CKA_DECRYPT, CKA_SENSITIVE,
                     CKA_EXTRACTABLE, CKA_EC_PARAMS) == [
            CKK_EC, True, False, False, True, False, P384_OID]
        assert len(s.findObjects([(CKA_LABEL, "ecdh-key")])) == 2
        found = s.findObjects([(CKA_DERIVE, True), (CKA_ID, keys["ecdh"].encode())])
        assert [o.value() for o in found] == [priv.value()]
        # It signs and verifies nothing; the public half goes only with its key.
        ckr(PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED, s.verify, pub, MSG, b"\x00" * 96,
            Mechanism(PyKCS11.CKM_ECDSA_SHA384))
        ckr(PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED, s.sign, priv, MSG,
            Mechanism(PyKCS11.CKM_ECDSA_SHA384))
        assert s.lib.C_DestroyObject(s.session, pub) == CKR_ACTION_PROHIBITED
    assert officer.describe_key(KeyId=keys["ecdh"])["KeyMetadata"]["KeyState"] == "Enabled"


# Attributes each object's class or key type does not have (PKCS#11 v2.40 4.6-4.10, RSA
# 2.1.2-2.1.3, EC 2.3.3-2.3.4): keys by (class, key type), then certificates.
A = PyKCS11
NOT_A_PUBLIC_KEYS = (CKA_SIGN, CKA_DECRYPT, A.CKA_UNWRAP, A.CKA_SIGN_RECOVER, CKA_SENSITIVE,
                     CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE,
                     A.CKA_ALWAYS_AUTHENTICATE, A.CKA_WRAP_WITH_TRUSTED, CKA_VALUE_LEN)
NOT_A_PRIVATE_KEYS = (CKA_VERIFY, CKA_ENCRYPT, A.CKA_WRAP, A.CKA_VERIFY_RECOVER, A.CKA_TRUSTED,
                      CKA_VALUE_LEN, CKA_EC_POINT)
NOT_A_SECRET_KEYS = (A.CKA_SIGN_RECOVER, A.CKA_VERIFY_RECOVER, A.CKA_ALWAYS_AUTHENTICATE,
                     A.CKA_SUBJECT, A.CKA_PUBLIC_KEY_INFO, CKA_MODULUS, CKA_PUBLIC_EXPONENT,
                     CKA_EC_PARAMS, CKA_EC_POINT)
NOT_A_CERTIFICATES = (CKA_SIGN, CKA_VERIFY, CKA_ENCRYPT, CKA_KEY_TYPE, CKA_SENSITIVE,
                      CKA_MODULUS, CKA_VALUE_LEN, CKA_DERIVE, A.CKA_LOCAL)


def test_attributes_an_object_does_not_have_are_invalid(p11, user, officer, keys):
    """C_GetAttributeValue of an attribute the object's class or key type does not have (a
    public key's CKA_SIGN, a private key's CKA_VERIFY, an RSA private key's CKA_MODULUS_BITS
    and CKA_VALUE, a secret key's CKA_MODULUS, a certificate's CKA_KEY_TYPE) sets its
    ulValueLen to CK_UNAVAILABLE_INFORMATION and answers CKR_ATTRIBUTE_TYPE_INVALID, not a
    false or empty value; the template's other attributes are still given (PKCS#11 v2.40
    5.7, C_GetAttributeValue); and a search naming such an attribute finds no such object."""
    def invalid(s, obj, *types_):
        for t in types_:
            assert attr_rv(s, obj, t) == PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID, (obj, A.CKA[t])

    with session(p11, user.pin) as s:
        for name in ("rsa", "ec", "rsa_enc", "ecdh"):
            (priv,) = find(s, CKO_PRIVATE_KEY, keys[name])
            (pub,) = find(s, CKO_PUBLIC_KEY, keys[name])
            invalid(s, pub, *NOT_A_PUBLIC_KEYS, CKA_VALUE, CKA_PRIVATE_EXPONENT)
            invalid(s, priv, *NOT_A_PRIVATE_KEYS)
            if name.startswith("rsa"):
                invalid(s, priv, CKA_MODULUS_BITS, CKA_VALUE, CKA_EC_PARAMS)
                assert attr_rv(s, priv, PyKCS11.CKA_PRIME_1) == PyKCS11.CKR_ATTRIBUTE_SENSITIVE
            else:
                invalid(s, priv, CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT)
                invalid(s, pub, CKA_MODULUS, CKA_MODULUS_BITS)
                assert attr_rv(s, priv, CKA_VALUE) == PyKCS11.CKR_ATTRIBUTE_SENSITIVE
        for name in ("aes", "mac"):
            (key,) = find(s, CKO_SECRET_KEY, keys[name])
            invalid(s, key, *NOT_A_SECRET_KEYS, CKA_MODULUS_BITS)
        theirs = ec.generate_private_key(ec.SECP384R1()).public_key()
        (agree,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        derived = s.deriveKey(agree, SECRET_TEMPLATE, ecdh(theirs.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)))
        invalid(s, derived, *NOT_A_SECRET_KEYS)
        assert attrs(s, derived, CKA_SIGN, A.CKA_WRAP, CKA_VALUE_LEN) == [False, False, 48]
        cert = s.createObject([(CKA_CLASS, PyKCS11.CKO_CERTIFICATE),
                               (PyKCS11.CKA_CERTIFICATE_TYPE, PyKCS11.CKC_X_509),
                               (CKA_TOKEN, False), (CKA_VALUE, self_signed_der())])
        invalid(s, cert, *NOT_A_CERTIFICATES)

        # In one template: the attribute the key lacks is unavailable, the others are given.
        (pub,) = find(s, CKO_PUBLIC_KEY, keys["rsa"])
        tpl = LowLevel.ckattrlist(3)
        for i, t in enumerate((CKA_CLASS, CKA_SIGN, CKA_LABEL)):
            tpl[i].SetType(t)
        assert s.lib.C_GetAttributeValue(s.session, pub, tpl) == \
            PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID  # the lengths
        assert [tpl[0].GetLen(), tpl[2].GetLen()] == [ctypes.sizeof(ctypes.c_ulong), 7]
        assert s.lib.C_GetAttributeValue(s.session, pub, tpl) == \
            PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID  # the values
        assert [tpl[0].GetNum(), tpl[2].GetString()] == [CKO_PUBLIC_KEY, "web-tls"]
        assert attrs(s, pub, CKA_CLASS, CKA_SIGN, CKA_VERIFY, CKA_LABEL) == [
            CKO_PUBLIC_KEY, None, True, "web-tls"]

        # A search for what a class lacks finds none of that class.
        ids = [(CKA_ID, keys["rsa"].encode())]
        assert s.findObjects(ids + [(CKA_SIGN, False)]) == []
        assert [o.value() for o in s.findObjects(ids + [(CKA_SIGN, True)])] == [
            find(s, CKO_PRIVATE_KEY, keys["rsa"])[0].value()]


def ecdh(peer_point, kdf=PyKCS11.CKD_NULL, shared=None):
    return PyKCS11.ECDH1_DERIVE_Mechanism(peer_point, kdf, shared)


SECRET_TEMPLATE = [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_GENERIC_SECRET),
                   (CKA_TOKEN, False), (CKA_SENSITIVE, False), (CKA_EXTRACTABLE, True)]


def test_ecdh_derivation(p11, server, user, officer, keys):
    """C_DeriveKey with CKM_ECDH1_DERIVE is hsmd's DeriveSharedSecret: the secret
    equals the peer's own ECDH (python3-cryptography), whether the peer's point
    comes bare, compressed or DER-wrapped; it is a session object, read through
    CKA_VALUE, audited as DeriveSharedSecret, gone when its session closes."""
    theirs = ec.generate_private_key(ec.SECP384R1())
    ours = public_key(officer, keys["ecdh"])
    expected = theirs.exchange(ec.ECDH(), ours)
    point = theirs.public_key().public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
    compressed = theirs.public_key().public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.CompressedPoint)
    wrapped = bytes([0x04, len(point)]) + point
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        made = []
        for data in (point, compressed, wrapped):
            k = s.deriveKey(priv, SECRET_TEMPLATE + [(CKA_LABEL, "shared"), (CKA_ID, b"\x01\x02")],
                            ecdh(data))
            made.append(k)
            assert attrs(s, k, CKA_VALUE, CKA_VALUE_LEN)[0] == expected
            assert attrs(s, k, CKA_CLASS, CKA_KEY_TYPE, CKA_TOKEN, CKA_SENSITIVE, CKA_EXTRACTABLE,
                         CKA_LABEL, CKA_ID, CKA_VALUE_LEN, PyKCS11.CKA_LOCAL, CKA_SIGN) == [
                CKO_SECRET_KEY, CKK_GENERIC_SECRET, False, False, True, "shared", b"\x01\x02", 48,
                False, False]
        # Cofactor Diffie-Hellman: the same secret on a NIST curve (cofactor 1).
        cofactor = ecdh(point)
        cofactor._mech.mechanism = PyKCS11.CKM_ECDH1_COFACTOR_DERIVE
        k = s.deriveKey(priv, SECRET_TEMPLATE, cofactor)
        assert attrs(s, k, CKA_VALUE)[0] == expected
        s.destroyObject(k)
        # Session objects: found by the application's sessions, kept across listings.
        assert sorted(o.value() for o in s.findObjects([(CKA_LABEL, "shared")])) == \
            sorted(k.value() for k in made)
        # A derived secret is no key for this module's mechanisms.
        ckr(PyKCS11.CKR_KEY_TYPE_INCONSISTENT, s.sign, made[0], MSG,
            Mechanism(PyKCS11.CKM_SHA384_HMAC))
        # Destroyed, it is gone at once, without a call to hsmd.
        s.destroyObject(made[0])
        assert attr_rv(s, made[0], CKA_VALUE) == PyKCS11.CKR_OBJECT_HANDLE_INVALID
        # A sensitive secret is derived, but its value does not leave the module.
        k = s.deriveKey(priv, [(CKA_SENSITIVE, True)], ecdh(point))
        assert attrs(s, k, CKA_SENSITIVE, CKA_KEY_TYPE, CKA_VALUE_LEN) == [True, CKK_GENERIC_SECRET,
                                                                          48]
        assert attr_rv(s, k, CKA_VALUE) == PyKCS11.CKR_ATTRIBUTE_SENSITIVE
        # Each derivation is a DeriveSharedSecret of the user's, audited.
        recs = [r for r in audit_records(server.data_dir)
                if r.get("op") == "DeriveSharedSecret" and r.get("key_id") == keys["ecdh"]]
        assert len(recs) >= 4 and all(r["outcome"] == "success" for r in recs[-4:])
        assert recs[-1]["principal"] == user.arn
        # Another session sees them too; when their own session closes, they go with it.
        with session(p11) as other:
            assert len(other.findObjects([(CKA_LABEL, "shared")])) == 2
            mine = other.deriveKey(priv, SECRET_TEMPLATE + [(CKA_LABEL, "other's")], ecdh(point))
            assert attrs(s, mine, CKA_VALUE)[0] == expected
        assert s.findObjects([(CKA_LABEL, "other's")]) == []
        assert attr_rv(s, mine, CKA_VALUE) == PyKCS11.CKR_OBJECT_HANDLE_INVALID
        assert len(s.findObjects([(CKA_LABEL, "shared")])) == 2
    # Logged out: every derived secret is gone.
    with session(p11, user.pin) as s:
        assert s.findObjects([(CKA_LABEL, "shared")]) == []
        assert attr_rv(s, made[1], CKA_VALUE) == PyKCS11.CKR_OBJECT_HANDLE_INVALID


def test_ecdh_refusals(p11, user, officer, keys):
    """Bad parameters, templates and keys are refused, and nothing is made."""
    theirs = ec.generate_private_key(ec.SECP384R1()).public_key()
    point = theirs.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.UncompressedPoint)
    other_curve = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    off_curve = point[:-1] + bytes([point[-1] ^ 1])
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        (pub,) = find(s, CKO_PUBLIC_KEY, keys["ecdh"])
        (signer,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        for mech, code in [
            (ecdh(other_curve), PyKCS11.CKR_MECHANISM_PARAM_INVALID),
            (ecdh(point[:-1]), PyKCS11.CKR_MECHANISM_PARAM_INVALID),
            (ecdh(off_curve), PyKCS11.CKR_MECHANISM_PARAM_INVALID),
            (ecdh(point, PyKCS11.CKD_NULL, b"shared data needs a KDF"),
             PyKCS11.CKR_MECHANISM_PARAM_INVALID),
            (ecdh(point, 0x99), PyKCS11.CKR_MECHANISM_PARAM_INVALID),  # no such KDF
            (ecdh(point, PyKCS11.CKD_SHA256_KDF), PyKCS11.CKR_TEMPLATE_INCOMPLETE),  # how long?
            (Mechanism(PyKCS11.CKM_ECMQV_DERIVE), PyKCS11.CKR_MECHANISM_INVALID),
        ]:
            ckr(code, s.deriveKey, priv, SECRET_TEMPLATE, mech)
        # Keys that do not derive (C_DeriveKey's list has no CKR_KEY_FUNCTION_NOT_PERMITTED).
        ckr(PyKCS11.CKR_KEY_TYPE_INCONSISTENT, s.deriveKey, pub, SECRET_TEMPLATE, ecdh(point))
        ckr(PyKCS11.CKR_KEY_TYPE_INCONSISTENT, s.deriveKey, signer, SECRET_TEMPLATE,
            ecdh(other_curve))
        for tmpl, code in [
            ([(CKA_TOKEN, True)], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
            ([(CKA_KEY_TYPE, PyKCS11.CKK_AES)], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
            ([(CKA_CLASS, CKO_PRIVATE_KEY)], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
            ([(CKA_VALUE_LEN, 32)], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
            ([(CKA_VALUE, b"x" * 48)], PyKCS11.CKR_ATTRIBUTE_READ_ONLY),
            ([(CKA_MODULUS_BITS, 2048)], PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID),
            ([(PyKCS11.CKA_DESTROYABLE, b"\x00")], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
        ]:
            ckr(code, s.deriveKey, priv, tmpl, ecdh(point))
        # A label is UTF-8 (as a certificate's); an attribute given twice must say the same
        # both times (PKCS#11 v2.40 4.1.1), not be read as its first value.
        for tmpl, code in [
            ([(CKA_LABEL, Raw(b"caf\xe9"))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(CKA_SENSITIVE, True), (CKA_SENSITIVE, False)], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
            ([(CKA_LABEL, "one"), (CKA_LABEL, "two")], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
            # Values of the wrong size for their type (a CK_BBOOL is one byte, a CK_ULONG
            # eight), whatever they would say.
            ([(CKA_CLASS, Raw(b"\x04"))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(CKA_KEY_TYPE, Raw(b"\x10"))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(CKA_TOKEN, Raw(b"\x00\x00"))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(CKA_PRIVATE, Raw(b""))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(CKA_SENSITIVE, Raw(b"\x01\x01"))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(CKA_VALUE_LEN, Raw(b"\x30"))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(PyKCS11.CKA_DESTROYABLE, Raw(b"\x01\x00"))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(PyKCS11.CKA_DERIVE, Raw(b"\x00\x00"))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            ([(CKA_ID, Raw(b"i" * 1025))], PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID),
            # No dates are kept: a date is a promise the secret cannot keep.
            ([(PyKCS11.CKA_START_DATE, Raw(b"20261206"))], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
            ([(PyKCS11.CKA_END_DATE, Raw(b"20271206"))], PyKCS11.CKR_TEMPLATE_INCONSISTENT),
        ]:
            got = derive_rv(s, ecdh(point), priv, tmpl)
            assert got == code, (tmpl, CKR.get(got, hex(got)))
        # Empty dates promise nothing: accepted.
        k = s.deriveKey(priv, SECRET_TEMPLATE + [(PyKCS11.CKA_START_DATE, b""),
                                                 (PyKCS11.CKA_END_DATE, b"")], ecdh(point))
        s.destroyObject(k)
        # A valid attribute at its only possible value is no error, nor one given twice alike.
        # (PyKCS11 1.5 does not know CKA_DESTROYABLE is a CK_BBOOL: its bytes, then.)
        k = s.deriveKey(priv, SECRET_TEMPLATE + [(PyKCS11.CKA_DESTROYABLE, b"\x01"),
                                                 (CKA_TOKEN, False)],
                        ecdh(point))
        assert attrs(s, k, PyKCS11.CKA_DESTROYABLE) == [b"\x01"]
        s.destroyObject(k)
        for n in (0, 1025):
            ckr(PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, s.deriveKey, priv, [(CKA_VALUE_LEN, n)],
                ecdh(point, PyKCS11.CKD_SHA256_KDF))
        assert s.findObjects([(CKA_CLASS, CKO_SECRET_KEY), (CKA_TOKEN, False)]) == []
    ckr(PyKCS11.CKR_USER_NOT_LOGGED_IN, lambda: session_derive(p11, point))


def test_ecdh_with_x963_kdf(p11, user, officer, keys):
    """CKD_SHA*_KDF: the module runs the ANSI X9.63 KDF over hsmd's shared secret
    and the shared data, to CKA_VALUE_LEN bytes, as python3-cryptography's X963KDF
    does from the peer's side."""
    from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
    theirs = ec.generate_private_key(ec.SECP384R1())
    z = theirs.exchange(ec.ECDH(), public_key(officer, keys["ecdh"]))
    point = theirs.public_key().public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        for kdf, h in ((PyKCS11.CKD_SHA1_KDF, hashes.SHA1()), (PyKCS11.CKD_SHA224_KDF,
                                                               hashes.SHA224()),
                       (PyKCS11.CKD_SHA256_KDF, hashes.SHA256()),
                       (PyKCS11.CKD_SHA384_KDF, hashes.SHA384()),
                       (PyKCS11.CKD_SHA512_KDF, hashes.SHA512())):
            for length, shared in ((32, None), (16, b"session 42, client to server"),
                                   (100, b"\x00" * 5)):
                k = s.deriveKey(priv, [(CKA_VALUE_LEN, length)], ecdh(point, kdf, shared))
                want = X963KDF(algorithm=h, length=length, sharedinfo=shared).derive(z)
                assert attrs(s, k, CKA_VALUE, CKA_VALUE_LEN) == [want, length], (kdf, length)
                s.destroyObject(k)


@pytest.mark.parametrize("spec,curve", [("ECC_NIST_P256", ec.SECP256R1()),
                                        ("ECC_NIST_P521", ec.SECP521R1())])
def test_ecdh_on_the_other_curves(p11, user, officer, spec, curve):
    """The shortest and the longest points: a P-521 point (133 bytes) in a DER OCTET
    STRING takes a long-form length (0x81), and the peer's SubjectPublicKeyInfo that
    the module builds for hsmd takes long-form lengths too."""
    kid = officer.create_key(KeySpec=spec, KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    theirs = ec.generate_private_key(curve)
    expected = theirs.exchange(ec.ECDH(), public_key(officer, kid))
    point = theirs.public_key().public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
    compressed = theirs.public_key().public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.CompressedPoint)
    length = bytes([len(point)]) if len(point) < 0x80 else bytes([0x81, len(point)])
    wrapped = bytes([0x04]) + length + point
    assert (len(point), wrapped[1]) == ((65, 65) if spec == "ECC_NIST_P256" else (133, 0x81))
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, kid)
        for data in (point, compressed, wrapped):
            k = s.deriveKey(priv, SECRET_TEMPLATE, ecdh(data))
            assert attrs(s, k, CKA_VALUE, CKA_VALUE_LEN) == [expected, len(expected)]
            s.destroyObject(k)
        # A long-form length that does not match the point's is no point.
        ckr(PyKCS11.CKR_MECHANISM_PARAM_INVALID, s.deriveKey, priv, SECRET_TEMPLATE,
            ecdh(bytes([0x04, 0x81, len(point) + 1]) + point))


def test_a_derived_secret_not_extractable_keeps_its_value(p11, user, officer, keys):
    """A derived secret's CKA_VALUE is revealed only when it is neither sensitive nor
    unextractable (PKCS#11 v2.40 table 10, note 8): otherwise CKR_ATTRIBUTE_SENSITIVE, and a
    search naming the value does not find it."""
    theirs = ec.generate_private_key(ec.SECP384R1())
    expected = theirs.exchange(ec.ECDH(), public_key(officer, keys["ecdh"]))
    point = theirs.public_key().public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        for sensitive, extractable in ((False, False), (True, False), (True, True),
                                       (False, True)):
            k = s.deriveKey(priv, SECRET_TEMPLATE[:3] + [(CKA_SENSITIVE, sensitive),
                                                         (CKA_EXTRACTABLE, extractable)],
                            ecdh(point))
            assert attrs(s, k, CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_VALUE_LEN) == [
                sensitive, extractable, 48]
            found = [o.value() for o in s.findObjects([(CKA_VALUE, expected)])]
            if sensitive or not extractable:
                tpl = LowLevel.ckattrlist(1)
                tpl[0].SetType(CKA_VALUE)
                assert s.lib.C_GetAttributeValue(s.session, k, tpl) == \
                    PyKCS11.CKR_ATTRIBUTE_SENSITIVE, (sensitive, extractable)
                assert found == []
            else:
                assert attrs(s, k, CKA_VALUE) == [expected]
                assert found == [k.value()]
            s.destroyObject(k)


def test_a_derived_secret_is_a_private_object(p11, user, keys):
    """A derived secret holds a secret, so it is a private object: it ends at logout with the
    other private objects (PKCS#11 v2.40 5.6) and nothing reads it without a login.  A
    template asking for a public one (CKA_PRIVATE false) is CKR_TEMPLATE_INCONSISTENT and
    makes none."""
    point = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        ckr(PyKCS11.CKR_TEMPLATE_INCONSISTENT, s.deriveKey, priv,
            SECRET_TEMPLATE + [(CKA_PRIVATE, False), (CKA_LABEL, "public secret")], ecdh(point))
        assert s.findObjects([(CKA_LABEL, "public secret")]) == []
        k = s.deriveKey(priv, SECRET_TEMPLATE + [(CKA_PRIVATE, True)], ecdh(point))
        assert attrs(s, k, CKA_PRIVATE) == [True]
        s.logout()
        s.login(user.pin)
        assert attr_rv(s, k, CKA_PRIVATE) == PyKCS11.CKR_OBJECT_HANDLE_INVALID


def test_a_session_object_labelled_like_a_key(p11, user, keys):
    """A derived secret labelled like a key (the key's alias): a search by that label reads
    that key again, not the derived secret as if it were a key: every such search answers,
    finding the key's objects and the secret."""
    point = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        k = s.deriveKey(priv, SECRET_TEMPLATE + [(CKA_LABEL, "web-tls")], ecdh(point))
        rsa = sorted(o.value() for o in find(s, None, keys["rsa"]))
        assert len(rsa) == 2
        label = [(CKA_LABEL, "web-tls")]
        found = s.findObjects(label)  # (and any certificate stored with the label)
        assert set(rsa + [k.value()]) <= {o.value() for o in found}
        assert [o.value() for o in s.findObjects([(CKA_CLASS, CKO_SECRET_KEY)] + label)] == \
            [k.value()]
        (rsa_priv,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
        assert [o.value() for o in s.findObjects([(CKA_CLASS, CKO_PRIVATE_KEY)] + label)] == \
            [rsa_priv.value()]
        s.destroyObject(k)


def session_derive(p11, point):
    with session(p11) as s:
        s.deriveKey(PyKCS11.CK_OBJECT_HANDLE(s), SECRET_TEMPLATE, ecdh(point))


def test_imported_key_is_an_object_once_it_has_material(p11, user, officer, keys):
    """A key created for import is no object while it waits for its material (PendingImport);
    once imported it is a key like any other, and signs with the imported private key; but
    not a local key, never always sensitive, of no key generation mechanism."""
    from test_import import do_import
    priv = ec.generate_private_key(ec.SECP256R1())
    kid = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
                             Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    with session(p11, user.pin) as s:
        assert find(s, None, kid) == []
    do_import(officer, kid, priv.private_bytes(serialization.Encoding.DER,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()),
              alg="RSA_AES_KEY_WRAP_SHA_256", spec="RSA_2048")
    with session(p11, user.pin) as s:
        (key,) = find(s, CKO_PRIVATE_KEY, kid)
        raw = bytes(s.sign(key, MSG, Mechanism(PyKCS11.CKM_ECDSA_SHA256)))
        r, sv = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        priv.public_key().verify(utils.encode_dss_signature(r, sv), MSG,
                                 ec.ECDSA(hashes.SHA256()))
        # Its material was made elsewhere and was once in the clear (PKCS#11 v2.40 4.7);
        # a key made in hsmd says the opposite.
        made = find(s, CKO_PRIVATE_KEY, keys["ec"])[0]
        origin = (PyKCS11.CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE,
                  PyKCS11.CKA_KEY_GEN_MECHANISM)
        assert attrs(s, key, *origin) == [False, False, False, -1]  # CK_UNAVAILABLE_INFORMATION
        assert attrs(s, made, *origin) == [True, True, True, PyKCS11.CKM_EC_KEY_PAIR_GEN]
        (pub,) = find(s, CKO_PUBLIC_KEY, kid)
        assert attrs(s, pub, PyKCS11.CKA_LOCAL, PyKCS11.CKA_KEY_GEN_MECHANISM) == [
            False, -1]


def test_a_secret_derived_from_an_imported_key_was_never_always_sensitive(p11, user, officer,
                                                                          keys):
    """A derived secret is always sensitive, or never extractable, only if its base key is too
    (PKCS#11 v2.40 Current Mechanisms, ECDH key derivation): from a key made in hsmd, as its
    own template says; from a KEY_AGREEMENT key whose material was imported (once in the
    clear), never, whatever its template."""
    from test_import import do_import
    ours = ec.generate_private_key(ec.SECP256R1())
    kid = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT",
                             Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    do_import(officer, kid, ours.private_bytes(serialization.Encoding.DER,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()),
              alg="RSA_AES_KEY_WRAP_SHA_256", spec="RSA_2048")

    def peer(curve):
        return ec.generate_private_key(curve).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)

    flags = (CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_EXTRACTABLE, CKA_NEVER_EXTRACTABLE)
    kept = [(CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False)]
    with session(p11, user.pin) as s:
        (imported,) = find(s, CKO_PRIVATE_KEY, kid)
        assert attrs(s, imported, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE) == [False, False]
        k = s.deriveKey(imported, kept, ecdh(peer(ec.SECP256R1())))
        assert attrs(s, k, *flags) == [True, False, False, False]
        (made,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        k = s.deriveKey(made, kept, ecdh(peer(ec.SECP384R1())))
        assert attrs(s, k, *flags) == [True, True, False, True]
        k = s.deriveKey(made, SECRET_TEMPLATE, ecdh(peer(ec.SECP384R1())))
        assert attrs(s, k, *flags) == [False, False, True, False]


# ---- 4. signing and verification -------------------------------------------------------------

def test_rsa_signatures(p11, user, officer, keys):
    pk = public_key(officer, keys["rsa"])
    digest = hashlib.sha256(MSG).digest()
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
        (pub,) = find(s, CKO_PUBLIC_KEY, keys["rsa"])
        m = Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS)
        sig = sign(s, priv, m, MSG)
        pk.verify(sig, MSG, padding.PKCS1v15(), hashes.SHA256())
        # PKCS#1 v1.5 is deterministic: a DigestInfo through CKM_RSA_PKCS, and the
        # message in parts, give the same signature.
        assert sign(s, priv, Mechanism(PyKCS11.CKM_RSA_PKCS), DIGESTINFO_SHA256 + digest) == sig
        assert sign_parts(s, priv, m, [MSG[:7], MSG[7:30], MSG[30:]]) == sig
        assert s.verify(pub, MSG, ckbytelist(sig), m) is True
        assert s.verify(pub, MSG, ckbytelist(flip(sig)), m) is False  # CKR_SIGNATURE_INVALID
        assert verify_parts(s, pub, m, [MSG[:9], MSG[9:]], sig) == CKR_OK
        assert verify_parts(s, pub, m, [MSG[:9], MSG[9:]], flip(sig)) == \
            PyKCS11.CKR_SIGNATURE_INVALID
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
        sig = sign(s, priv, RSA_PSS_Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS_PSS, *PSS_SHA256), MSG)
        pk.verify(sig, MSG, pss, hashes.SHA256())
        sig = sign(s, priv, RSA_PSS_Mechanism(PyKCS11.CKM_RSA_PKCS_PSS, *PSS_SHA256), digest)
        pk.verify(sig, digest, pss, utils.Prehashed(hashes.SHA256()))
        assert s.verify(pub, digest, ckbytelist(sig),
                        RSA_PSS_Mechanism(PyKCS11.CKM_RSA_PKCS_PSS, *PSS_SHA256)) is True


def test_ecdsa_signatures(p11, user, officer, keys):
    pk = public_key(officer, keys["ec"])
    digest = hashlib.sha256(MSG).digest()
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        (pub,) = find(s, CKO_PUBLIC_KEY, keys["ec"])
        m = Mechanism(PyKCS11.CKM_ECDSA_SHA256)
        sig = sign(s, priv, m, MSG)
        assert len(sig) == 64  # r||s
        pk.verify(der_ecdsa(sig), MSG, ec.ECDSA(hashes.SHA256()))
        sig = sign_parts(s, priv, m, [MSG[:3], MSG[3:]])
        assert len(sig) == 64
        pk.verify(der_ecdsa(sig), MSG, ec.ECDSA(hashes.SHA256()))
        assert s.verify(pub, MSG, ckbytelist(sig), m) is True
        assert s.verify(pub, MSG, ckbytelist(flip(sig)), m) is False
        raw = sign(s, priv, Mechanism(PyKCS11.CKM_ECDSA), digest)  # the digest as input
        assert len(raw) == 64
        pk.verify(der_ecdsa(raw), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        assert s.verify(pub, digest, ckbytelist(raw), Mechanism(PyKCS11.CKM_ECDSA)) is True


def test_hmac_matches_generate_mac(p11, user, keys):
    expected = user.kms.generate_mac(KeyId=keys["mac"], Message=MSG,
                                     MacAlgorithm="HMAC_SHA_256")["Mac"]
    with session(p11, user.pin) as s:
        (key,) = find(s, CKO_SECRET_KEY, keys["mac"])
        m = Mechanism(PyKCS11.CKM_SHA256_HMAC)
        assert sign(s, key, m, MSG) == expected
        assert sign_parts(s, key, m, [MSG[:20], MSG[20:]]) == expected
        assert s.verify(key, MSG, ckbytelist(expected), m) is True
        assert s.verify(key, MSG, ckbytelist(flip(expected)), m) is False


def test_empty_messages_are_refused_for_hmac_and_eddsa(p11, user, officer, keys):
    """hsmd, like AWS KMS, takes no empty message to MAC or to sign with Ed25519: the module
    answers CKR_DATA_LEN_RANGE itself, signing and verifying, in one part or several.
    (PyKCS11 refuses empty data before the module sees it: ctypes calls the module.)"""
    c = ctypes.CDLL(MODULE)  # the module PyKCS11 loaded: the same sessions
    ed = officer.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"]["KeyId"]
    try:
        with session(p11, user.pin) as s:
            h = ctypes.c_ulong(s.session.value())
            (mac,) = find(s, CKO_SECRET_KEY, keys["mac"])
            (ed_priv,) = find(s, CKO_PRIVATE_KEY, ed)
            (ed_pub,) = find(s, CKO_PUBLIC_KEY, ed)
            for mech, skey, vkey, n in ((Mechanism(PyKCS11.CKM_SHA256_HMAC), mac, mac, 32),
                                        (Mechanism(CKM["CKM_EDDSA"]), ed_priv, ed_pub, 64)):
                sig, sig_n = ctypes.create_string_buffer(n), ctypes.c_ulong(n)
                for parts in (None, [], [b""]):  # C_Sign / C_Verify; Final alone; an empty part
                    check(s.lib.C_SignInit(s.session, mech.to_native(), skey), "C_SignInit")
                    for _ in parts or []:
                        check(c.C_SignUpdate(h, None, ctypes.c_ulong(0)), "C_SignUpdate")
                    rv = (c.C_Sign(h, None, ctypes.c_ulong(0), sig, ctypes.byref(sig_n))
                          if parts is None else c.C_SignFinal(h, sig, ctypes.byref(sig_n)))
                    assert rv == PyKCS11.CKR_DATA_LEN_RANGE, (mech.to_native().mechanism, parts)
                    check(s.lib.C_VerifyInit(s.session, mech.to_native(), vkey), "C_VerifyInit")
                    for _ in parts or []:
                        check(c.C_VerifyUpdate(h, None, ctypes.c_ulong(0)), "C_VerifyUpdate")
                    rv = (c.C_Verify(h, None, ctypes.c_ulong(0), sig, ctypes.c_ulong(n))
                          if parts is None else c.C_VerifyFinal(h, sig, ctypes.c_ulong(n)))
                    assert rv == PyKCS11.CKR_DATA_LEN_RANGE, (mech.to_native().mechanism, parts)
                # One byte is a message.
                one = sign(s, skey, mech, b"x")
                assert s.verify(vkey, b"x", ckbytelist(one), mech) is True
    finally:
        officer.schedule_key_deletion(KeyId=ed, PendingWindowInDays=7)


def test_one_part_calls_do_not_end_a_multi_part_operation(p11, user, officer, keys):
    """C_Sign after C_SignUpdate (and C_Verify after C_VerifyUpdate) does not end the operation
    with its data appended: it is refused with CKR_OPERATION_NOT_INITIALIZED and the operation
    ends, as SoftHSMv2 does.  A C_Sign length query takes no data: parts may follow it."""
    m = Mechanism(PyKCS11.CKM_ECDSA_SHA256)
    pk = public_key(officer, keys["ec"])
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        (pub,) = find(s, CKO_PUBLIC_KEY, keys["ec"])
        NOT_INIT = PyKCS11.CKR_OPERATION_NOT_INITIALIZED
        for query in (True, False):
            check(s.lib.C_SignInit(s.session, m.to_native(), priv), "C_SignInit")
            check(s.lib.C_SignUpdate(s.session, ckbytelist(b"hello")), "C_SignUpdate")
            out = ckbytelist() if query else ckbytelist(bytes(64))
            assert s.lib.C_Sign(s.session, ckbytelist(b"hello world"), out) == NOT_INIT
            assert s.lib.C_SignFinal(s.session, ckbytelist(bytes(64))) == NOT_INIT  # ended
        # A length query, then parts: the signature is of the parts alone.
        check(s.lib.C_SignInit(s.session, m.to_native(), priv), "C_SignInit")
        out = ckbytelist()
        check(s.lib.C_Sign(s.session, ckbytelist(b"not signed"), out), "C_Sign (length)")
        assert len(out) == 64
        check(s.lib.C_SignUpdate(s.session, ckbytelist(b"hello")), "C_SignUpdate")
        check(s.lib.C_SignFinal(s.session, out), "C_SignFinal")
        sig = bytes(out)
        pk.verify(der_ecdsa(sig), b"hello", ec.ECDSA(hashes.SHA256()))
        # A one-part signature after a length query signs C_Sign's data once.
        check(s.lib.C_SignInit(s.session, m.to_native(), priv), "C_SignInit")
        out = ckbytelist()
        for _ in range(2):
            check(s.lib.C_Sign(s.session, ckbytelist(b"hello world"), out), "C_Sign")
        pk.verify(der_ecdsa(bytes(out)), b"hello world", ec.ECDSA(hashes.SHA256()))
        # Verification likewise.
        check(s.lib.C_VerifyInit(s.session, m.to_native(), pub), "C_VerifyInit")
        check(s.lib.C_VerifyUpdate(s.session, ckbytelist(b"hello")), "C_VerifyUpdate")
        assert s.lib.C_Verify(s.session, ckbytelist(b"hello"), ckbytelist(sig)) == NOT_INIT
        assert s.lib.C_VerifyFinal(s.session, ckbytelist(sig)) == NOT_INIT
        assert verify_parts(s, pub, m, [b"he", b"llo"], sig) == CKR_OK


def test_single_part_mechanisms_take_no_update_or_final_call(p11, user, keys):
    """CKM_ECDSA, CKM_RSA_PKCS and CKM_RSA_PKCS_PSS (raw: a digest or DigestInfo, no message)
    and CKM_RSA_PKCS_OAEP are single-part mechanisms (PKCS#11 v2.40 Current Mechanisms): an
    Update or Final call finds no multi-part operation (CKR_OPERATION_NOT_INITIALIZED, as
    SoftHSMv2 answers) and ends the one begun; C_Sign, C_Verify, C_Encrypt, C_Decrypt work."""
    NOT_INIT = PyKCS11.CKR_OPERATION_NOT_INITIALIZED
    digest = hashlib.sha256(MSG).digest()
    with session(p11, user.pin) as s:
        def obj(cls, name):
            (o,) = find(s, cls, keys[name])
            return o

        def ended(init, mech, key):
            """The operation is over: a new Init begins one (and its call ends it)."""
            return init(s.session, mech.to_native(), key) == CKR_OK

        for mech, name, data in (
                (Mechanism(PyKCS11.CKM_ECDSA), "ec", digest),
                (Mechanism(PyKCS11.CKM_RSA_PKCS), "rsa", DIGESTINFO_SHA256 + digest),
                (RSA_PSS_Mechanism(PyKCS11.CKM_RSA_PKCS_PSS, *PSS_SHA256), "rsa", digest)):
            priv, pub = obj(CKO_PRIVATE_KEY, name), obj(CKO_PUBLIC_KEY, name)
            check(s.lib.C_SignInit(s.session, mech.to_native(), priv), "C_SignInit")
            assert s.lib.C_SignUpdate(s.session, ckbytelist(data)) == NOT_INIT
            assert s.lib.C_SignFinal(s.session, ckbytelist()) == NOT_INIT  # ended by the Update
            assert ended(s.lib.C_SignInit, mech, priv)
            assert s.lib.C_SignFinal(s.session, ckbytelist()) == NOT_INIT  # a length query too
            assert ended(s.lib.C_SignInit, mech, priv)
            sig = ckbytelist()
            for _ in range(2):  # the length, then the signature
                check(s.lib.C_Sign(s.session, ckbytelist(data), sig), "C_Sign")
            check(s.lib.C_VerifyInit(s.session, mech.to_native(), pub), "C_VerifyInit")
            assert s.lib.C_VerifyUpdate(s.session, ckbytelist(data)) == NOT_INIT
            assert ended(s.lib.C_VerifyInit, mech, pub)
            assert s.lib.C_VerifyFinal(s.session, sig) == NOT_INIT
            assert ended(s.lib.C_VerifyInit, mech, pub)
            check(s.lib.C_Verify(s.session, ckbytelist(data), sig), "C_Verify")
        mech = oaep(CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256)
        enc, dec = obj(CKO_PUBLIC_KEY, "rsa_enc"), obj(CKO_PRIVATE_KEY, "rsa_enc")
        check(s.lib.C_EncryptInit(s.session, mech.to_native(), enc), "C_EncryptInit")
        assert s.lib.C_EncryptFinal(s.session, ckbytelist()) == NOT_INIT
        assert ended(s.lib.C_EncryptInit, mech, enc)
        out = ckbytelist()
        for _ in range(2):
            check(s.lib.C_Encrypt(s.session, ckbytelist(b"one part"), out), "C_Encrypt")
        ct = bytes(out)
        check(s.lib.C_DecryptInit(s.session, mech.to_native(), dec), "C_DecryptInit")
        assert s.lib.C_DecryptUpdate(s.session, ckbytelist(ct), ckbytelist()) == NOT_INIT
        assert ended(s.lib.C_DecryptInit, mech, dec)
        assert s.lib.C_DecryptFinal(s.session, ckbytelist()) == NOT_INIT
        assert bytes(s.decrypt(dec, ct, mech)) == b"one part"


def test_refused_inputs_and_parameters(p11, user, keys):
    with session(p11, user.pin) as s:
        (rsa,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
        (eck,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        (mac,) = find(s, CKO_SECRET_KEY, keys["mac"])
        # CKM_ECDSA takes a digest: of any hash (test_ecdsa_any_hash), not a message.
        assert sign_rv(p11, eck, Mechanism(PyKCS11.CKM_ECDSA), b"\x5a" * 1025) == \
            PyKCS11.CKR_DATA_LEN_RANGE
        # CKM_RSA_PKCS signs DigestInfos only.
        assert sign_rv(p11, rsa, Mechanism(PyKCS11.CKM_RSA_PKCS), hashlib.sha256(MSG).digest()) \
            in (PyKCS11.CKR_DATA_INVALID, PyKCS11.CKR_DATA_LEN_RANGE)
        # PSS: the salt is the hash length, the MGF the hash's.
        for params in ((CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256, 20),
                       (CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA1, 32),
                       (CKM["CKM_SHA_1"], PyKCS11.CKG_MGF1_SHA1, 20)):
            mech = RSA_PSS_Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS_PSS, *params)
            assert sign_rv(p11, rsa, mech, MSG) == PyKCS11.CKR_MECHANISM_PARAM_INVALID, params
        # An HMAC key only with its own hash: a generic secret of another size.
        assert sign_rv(p11, mac, Mechanism(PyKCS11.CKM_SHA384_HMAC), MSG) == \
            PyKCS11.CKR_KEY_SIZE_RANGE
        # A key of another type.
        assert sign_rv(p11, eck, Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS), MSG) != CKR_OK


def test_pss_requires_its_parameters(p11, user, keys):
    """Only hashAlg SHA256/384/512 with its MGF1 and sLen are valid: no parameters are not."""
    with session(p11, user.pin) as s:
        (rsa,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
        for mech in (PyKCS11.CKM_SHA256_RSA_PKCS_PSS, PyKCS11.CKM_RSA_PKCS_PSS):
            data = MSG if mech == PyKCS11.CKM_SHA256_RSA_PKCS_PSS else hashlib.sha256(MSG).digest()
            rv = sign_rv(p11, rsa, Mechanism(mech), data)
            assert rv == PyKCS11.CKR_MECHANISM_PARAM_INVALID, (CKM[mech], CKR.get(rv, rv))


@pytest.mark.parametrize("spec,oid,mech,hash_,size", [
    ("ECC_NIST_P384", "06052b81040022", "CKM_ECDSA_SHA384", hashes.SHA384, 96),
    ("ECC_NIST_P521", "06052b81040023", "CKM_ECDSA_SHA512", hashes.SHA512, 132)])
def test_larger_curves(p11, officer, user, spec, oid, mech, hash_, size):
    kid = officer.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    pk = public_key(officer, kid)
    digest = hashes.Hash(hash_())
    digest.update(MSG)
    digest = digest.finalize()
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, kid)
        (pub,) = find(s, CKO_PUBLIC_KEY, kid)
        assert attrs(s, pub, CKA_EC_PARAMS, CKA_EC_POINT) == [bytes.fromhex(oid), ec_point(pk)]
        sig = sign(s, priv, Mechanism(CKM[mech]), MSG)
        assert len(sig) == size
        pk.verify(der_ecdsa(sig), MSG, ec.ECDSA(hash_()))
        raw = sign(s, priv, Mechanism(PyKCS11.CKM_ECDSA), digest)
        assert len(raw) == size
        pk.verify(der_ecdsa(raw), digest, ec.ECDSA(utils.Prehashed(hash_())))
        # Other hashes, and digests of other lengths: as ECDSA defines them (test_ecdsa_any_hash).
        sig = sign(s, priv, Mechanism(PyKCS11.CKM_ECDSA_SHA256), MSG)
        pk.verify(der_ecdsa(sig), MSG, ec.ECDSA(hashes.SHA256()))
        short = hashlib.sha1(MSG).digest()
        raw = sign(s, priv, Mechanism(PyKCS11.CKM_ECDSA), short)
        pk.verify(der_ecdsa(raw), short, ec.ECDSA(utils.Prehashed(hashes.SHA1())))
        # Longer than the order on P-521 would need cutting mid-byte: refused.
        if spec == "ECC_NIST_P521":
            assert sign_rv(p11, priv, Mechanism(PyKCS11.CKM_ECDSA), bytes(66)) == \
                PyKCS11.CKR_DATA_LEN_RANGE


def test_ecdsa_any_hash(p11, officer, user, keys):
    """ECDSA signs a digest's leftmost bits as long as the group order: CKM_ECDSA takes a digest
    of any hash, and CKM_ECDSA_SHA224 .. SHA512 work with any curve (Java's SHA384withECDSA
    on a P-256 key), each signature a standard one for that hash."""
    pk = public_key(officer, keys["ec"])
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        (pub,) = find(s, CKO_PUBLIC_KEY, keys["ec"])
        for mech, h in ((PyKCS11.CKM_ECDSA_SHA224, hashes.SHA224()),
                        (PyKCS11.CKM_ECDSA_SHA384, hashes.SHA384()),
                        (PyKCS11.CKM_ECDSA_SHA512, hashes.SHA512())):
            sig = sign(s, priv, Mechanism(mech), MSG)
            assert len(sig) == 64
            pk.verify(der_ecdsa(sig), MSG, ec.ECDSA(h))
            assert s.verify(pub, MSG, ckbytelist(sig), Mechanism(mech)) is True
            sig = sign_parts(s, priv, Mechanism(mech), [MSG[:5], MSG[5:]])
            pk.verify(der_ecdsa(sig), MSG, ec.ECDSA(h))
        for name in ("sha1", "sha224", "sha384", "sha512"):
            digest = hashlib.new(name, MSG).digest()
            raw = sign(s, priv, Mechanism(PyKCS11.CKM_ECDSA), digest)
            pk.verify(der_ecdsa(raw), digest,
                      ec.ECDSA(utils.Prehashed(getattr(hashes, name.upper())())))
            assert s.verify(pub, digest, ckbytelist(raw), Mechanism(PyKCS11.CKM_ECDSA)) is True
            assert s.verify(pub, digest, ckbytelist(flip(raw)),
                            Mechanism(PyKCS11.CKM_ECDSA)) is False


def test_other_rsa_and_hmac_sizes(p11, officer, user):
    rsa = officer.create_key(KeySpec="RSA_3072", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    macs = {n: officer.create_key(KeySpec=f"HMAC_{n}", KeyUsage="GENERATE_VERIFY_MAC")[
        "KeyMetadata"]["KeyId"] for n in (224, 384, 512)}
    pk = public_key(officer, rsa)
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, rsa)
        assert attrs(s, find(s, CKO_PUBLIC_KEY, rsa)[0], CKA_MODULUS_BITS) == [3072]
        sig = sign(s, priv, Mechanism(PyKCS11.CKM_SHA384_RSA_PKCS), MSG)
        pk.verify(sig, MSG, padding.PKCS1v15(), hashes.SHA384())
        params = (CKM["CKM_SHA512"], PyKCS11.CKG_MGF1_SHA512, 64)
        sig = sign(s, priv, RSA_PSS_Mechanism(PyKCS11.CKM_SHA512_RSA_PKCS_PSS, *params), MSG)
        pk.verify(sig, MSG, padding.PSS(padding.MGF1(hashes.SHA512()), 64), hashes.SHA512())
        for n, kid in macs.items():
            (key,) = find(s, CKO_SECRET_KEY, kid)
            expected = user.kms.generate_mac(KeyId=kid, Message=MSG,
                                             MacAlgorithm=f"HMAC_SHA_{n}")["Mac"]
            assert sign(s, key, Mechanism(CKM[f"CKM_SHA{n}_HMAC"]), MSG) == expected, n


# ---- 4b. keys marked for JWT signing ---------------------------------------------------------

def jwt_mark(server, key_id, on):
    """HsmdJwt.EnableJwtSigning or DisableJwtSigning, as the dev crypto-officer."""
    op = "EnableJwtSigning" if on else "DisableJwtSigning"
    st, out = signed_call(server, "HsmdJwt." + op, {"KeyId": key_id})
    assert st == 200, out


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_keys(server, officer, prefix):
    """An RSA and an EC key, each with a label, marked for JWT signing: {name: (key id,
    label, the mechanism of its token algorithm)}."""
    made = {}
    for name, spec, mech in (("rsa", "RSA_2048", PyKCS11.CKM_SHA256_RSA_PKCS),
                             ("ec", "ECC_NIST_P256", PyKCS11.CKM_ECDSA_SHA256)):
        kid = officer.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        label = f"{prefix}-{name}-{kid[:8]}"
        officer.create_alias(AliasName="alias/" + label, TargetKeyId=kid)
        jwt_mark(server, kid, True)
        made[name] = (kid, label, mech)
    return made


def test_a_key_marked_for_jwt_signing_does_not_sign(p11, server, officer, user):
    """hsmd refuses Sign with a key marked for JWT signing (any signature it made would verify
    as a token against the JWK Set) and allows Verify.  On the token its private key object
    reads CKA_SIGN false and allows no mechanism, and C_SignInit refuses it with
    CKR_KEY_FUNCTION_NOT_PERMITTED, asking hsmd nothing: the list and what C_SignInit takes
    agree.  Its public key object verifies the key's tokens as before.  So it reads however
    the token reads the key (a search by label, by CKA_ID, or of every object); with the mark
    taken off, the key signs through the token again."""
    made = jwt_keys(server, officer, "p11-jwt")
    secret = user.pin.split(":", 1)[1]
    peer = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    searches = {
        "label": lambda s, kid, label, cls: s.findObjects([(CKA_LABEL, label), (CKA_CLASS, cls)]),
        "id": lambda s, kid, label, cls: find(s, cls, kid),
        "listing": lambda s, kid, label, cls: [
            o for o in s.findObjects([(CKA_CLASS, cls)]) if attrs(s, o, CKA_ID)[0] == kid.encode()],
    }
    for name, (kid, label, mech) in made.items():
        st, out = signed_call(server, "HsmdJwt.SignToken",
                              {"KeyId": kid, "Claims": {"sub": "user-42"}},
                              akid=user.akid, secret=secret)
        assert st == 200, out
        head, body, sig = out["Token"].split(".")
        for how, search in searches.items():
            with session(p11, user.pin) as s:  # a new login: its private key objects are new
                (priv,) = search(s, kid, label, CKO_PRIVATE_KEY)
                (pub,) = search(s, kid, label, CKO_PUBLIC_KEY)
                assert attrs(s, priv, CKA_SIGN) == [False], (name, how)
                signers = s.findObjects([(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_SIGN, True)])
                assert priv.value() not in [o.value() for o in signers], (name, how)
                assert allowed_mechanisms(s, priv) == [], (name, how)
                assert usable_mechanisms(p11, priv, peer) == set(), (name, how)
                assert s.lib.C_SignInit(s.session, Mechanism(mech).to_native(), priv) == \
                    PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED, (name, how)
                assert attrs(s, pub, CKA_VERIFY) == [True], (name, how)
                assert set(allowed_mechanisms(s, pub)) == ALLOWED[name], (name, how)
                assert s.verify(pub, f"{head}.{body}".encode(), b64url(sig), Mechanism(mech)), \
                    (name, how)
        # The mark taken off: the key signs through the token again.
        jwt_mark(server, kid, False)
        with session(p11, user.pin) as s:
            (priv,) = s.findObjects([(CKA_LABEL, label), (CKA_CLASS, CKO_PRIVATE_KEY)])
            (pub,) = s.findObjects([(CKA_LABEL, label), (CKA_CLASS, CKO_PUBLIC_KEY)])
            assert attrs(s, priv, CKA_SIGN) == [True], name
            assert set(allowed_mechanisms(s, priv)) == ALLOWED[name], name
            assert s.verify(pub, MSG, sign(s, priv, Mechanism(mech), MSG), Mechanism(mech)), name
        # That signature is the key's one Sign: none was tried while it was marked.
        signs = audit_records_until(
            server.data_dir, lambda r: r.get("op") == "Sign" and r.get("key_id") == kid)
        assert [r["outcome"] for r in signs] == ["success"], (name, signs)


# ---- 5. key generation -----------------------------------------------------------------------

def generate(s, kind, label, label_in_public):
    if kind == "rsa":
        pub = [(CKA_MODULUS_BITS, 2048), (CKA_PUBLIC_EXPONENT, b"\x01\x00\x01")]
        mech = PyKCS11.MechanismRSAGENERATEKEYPAIR
    else:
        pub = [(CKA_EC_PARAMS, P256_OID)]
        mech = PyKCS11.MechanismECGENERATEKEYPAIR
    pub += [(CKA_TOKEN, True), (CKA_VERIFY, True)]
    priv = [(CKA_TOKEN, True), (CKA_PRIVATE, True), (CKA_SENSITIVE, True), (CKA_SIGN, True)]
    (pub if label_in_public else priv).append((CKA_LABEL, label))
    hpub, hpriv = s.generateKeyPair(pub, priv, mech)
    kid, priv_id = attrs(s, hpub, CKA_ID) + attrs(s, hpriv, CKA_ID)
    # Without a CKA_ID in the templates, the key's id is its CKA_ID.
    assert kid == priv_id and str(uuid.UUID(kid.decode())) == kid.decode(), (kid, priv_id)
    return kid.decode()


def test_generate_key_pairs(p11, user, officer):
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        rsa = generate(s, "rsa", "p11-rsa", label_in_public=True)
        eck = generate(s, "ec", "p11-ec", label_in_public=False)
        count = len(officer.list_keys(Limit=1000)["Keys"])
        bad = [(CKA_TOKEN, True), (CKA_MODULUS_BITS, 2048), (CKA_PUBLIC_EXPONENT, b"\x03")]
        ckr(PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, s.generateKeyPair, bad,
            [(CKA_TOKEN, True), (CKA_SIGN, True)], PyKCS11.MechanismRSAGENERATEKEYPAIR)
        assert len(officer.list_keys(Limit=1000)["Keys"]) == count  # no key for e = 3
    for kid, spec, alias in ((rsa, "RSA_2048", "alias/p11-rsa"),
                             (eck, "ECC_NIST_P256", "alias/p11-ec")):
        md = officer.describe_key(KeyId=kid)["KeyMetadata"]
        assert (md["KeySpec"], md["KeyUsage"], md["KeyState"]) == (spec, "SIGN_VERIFY", "Enabled")
        assert [a["AliasName"] for a in officer.list_aliases(KeyId=kid)["Aliases"]] == [alias]
    # A new login reads them; the crypto-user signs with them.
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, rsa)
        (pub,) = find(s, CKO_PUBLIC_KEY, rsa)
        assert attrs(s, priv, CKA_LABEL) == ["p11-rsa"]
        pk = public_key(officer, rsa)
        assert int.from_bytes(attrs(s, pub, CKA_MODULUS)[0], "big") == pk.public_numbers().n
        sig = sign(s, priv, Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS), MSG)
        pk.verify(sig, MSG, padding.PKCS1v15(), hashes.SHA256())
        (priv,) = find(s, CKO_PRIVATE_KEY, eck)
        assert attrs(s, priv, CKA_LABEL, CKA_EC_PARAMS) == ["p11-ec", P256_OID]
        sig = sign(s, priv, Mechanism(PyKCS11.CKM_ECDSA_SHA256), MSG)
        public_key(officer, eck).verify(der_ecdsa(sig), MSG, ec.ECDSA(hashes.SHA256()))


def test_generate_takes_every_label_an_alias_name_can_end_with(p11, user, officer):
    """A key's CKA_LABEL becomes its alias alias/<label>, so every tail KMS allows an alias
    name is a label a key can be generated with: ':' among the characters (hsmd's alias
    rule, and AWS's), up to 250 characters (256 with "alias/").  Each key gets that alias
    and reads the label back; a search by it finds the key."""
    labels = ["p11:web:tls", "p11/a_b-c:D9", "p11:" + "x" * 246]
    assert len(labels[2]) == 250
    made = {}
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        made[labels[0]] = generate(s, "ec", labels[0], label_in_public=False)
        made[labels[1]] = generate(s, "ec", labels[1], label_in_public=True)
        h = s.generateKey([(CKA_TOKEN, True), (CKA_CLASS, CKO_SECRET_KEY),
                           (CKA_VALUE_LEN, 32), (CKA_LABEL, labels[2])],
                          Mechanism(PyKCS11.CKM_AES_KEY_GEN))
        made[labels[2]] = bytes(attrs(s, h, CKA_ID)[0]).decode()
    for label, kid in made.items():
        assert [a["AliasName"] for a in officer.list_aliases(KeyId=kid)["Aliases"]] == \
            ["alias/" + label]
    with session(p11, user.pin) as s:
        for label, kid in made.items():
            found = s.findObjects([(CKA_LABEL, label)])
            assert found, label
            for o in found:
                assert attrs(s, o, CKA_LABEL, CKA_ID) == [label, kid.encode()], label


def test_generate_honours_or_refuses_the_template(p11, officer):
    """What a template asks of a new key is made, or refused: hsmd makes lasting, audited keys
    only, in R/W sessions; an RSA pair that is to decrypt and not to sign is an ENCRYPT_DECRYPT
    key."""
    rsa_pub = [(CKA_TOKEN, True), (CKA_MODULUS_BITS, 2048),
               (CKA_PUBLIC_EXPONENT, b"\x01\x00\x01")]
    ec_pub = [(CKA_TOKEN, True), (CKA_EC_PARAMS, P256_OID)]
    count = len(officer.list_keys(Limit=1000)["Keys"])
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        for pub, priv, mech in (
                (ec_pub, [(CKA_TOKEN, False)], PyKCS11.MechanismECGENERATEKEYPAIR),
                (ec_pub, [], PyKCS11.MechanismECGENERATEKEYPAIR),  # CKA_TOKEN's default: FALSE
                (ec_pub, [(CKA_TOKEN, True), (CKA_SIGN, False)],
                 PyKCS11.MechanismECGENERATEKEYPAIR),
                (rsa_pub, [(CKA_TOKEN, True), (CKA_SIGN, False), (CKA_DECRYPT, False)],
                 PyKCS11.MechanismRSAGENERATEKEYPAIR)):
            ckr(PyKCS11.CKR_TEMPLATE_INCONSISTENT, s.generateKeyPair, pub, priv, mech)
        ckr(PyKCS11.CKR_TEMPLATE_INCONSISTENT, s.generateKey,
            [(CKA_CLASS, CKO_SECRET_KEY), (CKA_TOKEN, False), (CKA_VALUE_LEN, 32)],
            PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN))
        assert len(officer.list_keys(Limit=1000)["Keys"]) == count
        hpub, hpriv = s.generateKeyPair(
            rsa_pub, [(CKA_TOKEN, True), (CKA_SIGN, False), (CKA_DECRYPT, True),
                      (CKA_LABEL, "p11-decrypt")],
            PyKCS11.MechanismRSAGENERATEKEYPAIR)
        kid = attrs(s, hpriv, CKA_ID)[0].decode()
        assert attrs(s, hpriv, CKA_SIGN, CKA_DECRYPT) == [False, True]
        assert attrs(s, hpub, CKA_VERIFY, CKA_ENCRYPT) == [False, True]
    assert officer.describe_key(KeyId=kid)["KeyMetadata"]["KeyUsage"] == "ENCRYPT_DECRYPT"
    # A read-only session makes no key.
    ro = p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION)
    try:
        ro.login(f"{DEV_AKID}:{DEV_SECRET}")
        ckr(PyKCS11.CKR_SESSION_READ_ONLY, ro.generateKeyPair, ec_pub, [(CKA_SIGN, True)],
            PyKCS11.MechanismECGENERATEKEYPAIR)
        ckr(PyKCS11.CKR_SESSION_READ_ONLY, ro.generateKey,
            [(CKA_CLASS, CKO_SECRET_KEY), (CKA_VALUE_LEN, 32)],
            PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN))
        ro.logout()
    finally:
        ro.closeSession()
    assert len(officer.list_keys(Limit=1000)["Keys"]) == count + 1


class Raw(bytes):
    """A template value given as these bytes, whatever the attribute's type and size."""


def raw_template(s, items):
    t = LowLevel.ckattrlist(len(items))
    for i, (typ, val) in enumerate(items):
        if isinstance(val, Raw):
            t[i].SetBin(typ, ckbytelist(bytes(val)))
        else:
            t[i] = s._template2ckattrlist([(typ, val)])[0]
    return t


def generate_pair_rv(s, mech, pub, priv):
    hpub, hpriv = LowLevel.CK_OBJECT_HANDLE(), LowLevel.CK_OBJECT_HANDLE()
    return s.lib.C_GenerateKeyPair(s.session, mech.to_native(), raw_template(s, pub),
                                   raw_template(s, priv), hpub, hpriv)


def generate_key_rv(s, mech, template):
    return s.lib.C_GenerateKey(s.session, mech.to_native(), raw_template(s, template),
                               LowLevel.CK_OBJECT_HANDLE())


WEB_DN = bytes.fromhex("300e310c300a06035504030c03776562")  # the DER of the name CN=web


def test_generate_applies_the_template_rules(p11, officer):
    """PKCS#11 v2.40 4.1.1, before any key is made: an attribute unknown for the class is
    CKR_ATTRIBUTE_TYPE_INVALID, one the generation sets CKR_ATTRIBUTE_READ_ONLY, a value of
    the wrong size CKR_ATTRIBUTE_VALUE_INVALID, and a class, key type, session object, second
    usage, refused usage or CKA_PRIVATE the key would not have CKR_TEMPLATE_INCONSISTENT; none
    makes a key.
    An attribute given twice with different values is CKR_TEMPLATE_INCONSISTENT too (4.1.1),
    not read as its first value.
    The standard attributes with the values an hsmd key has are accepted, one of them twice
    with the same value."""
    T = [(CKA_TOKEN, True)]
    ec_pub = T + [(CKA_EC_PARAMS, P256_OID)]
    rsa_pub = T + [(CKA_MODULUS_BITS, 2048)]
    ec, rsa = PyKCS11.MechanismECGENERATEKEYPAIR, PyKCS11.MechanismRSAGENERATEKEYPAIR
    aes, mac = Mechanism(PyKCS11.CKM_AES_KEY_GEN), Mechanism(PyKCS11.CKM_GENERIC_SECRET_KEY_GEN)
    aes_t = T + [(CKA_CLASS, CKO_SECRET_KEY)]
    mac_t = T + [(CKA_VALUE_LEN, 32)]
    TYPE, VALUE = PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID, PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID
    RO, INCONSISTENT = PyKCS11.CKR_ATTRIBUTE_READ_ONLY, PyKCS11.CKR_TEMPLATE_INCONSISTENT
    pairs = [
        (TYPE, ec, ec_pub, T + [(CKA_UNKNOWN, Raw(b"x"))]),
        (TYPE, ec, ec_pub + [(CKA_MODULUS_BITS, 2048)], T),  # not an EC key's
        (TYPE, rsa, rsa_pub, T + [(CKA_VERIFY, True)]),  # not a private key's
        (VALUE, ec, ec_pub, T + [(CKA_SIGN, Raw(b"\x01" + bytes(7)))]),
        (VALUE, ec, [(CKA_TOKEN, Raw(bytes(8)))] + ec_pub[1:], T),
        (VALUE, rsa, T + [(CKA_MODULUS_BITS, Raw((2048).to_bytes(4, "little")))], T),
        (VALUE, ec, ec_pub + [(PyKCS11.CKA_START_DATE, Raw(b"2026"))], T),
        (RO, ec, ec_pub + [(CKA_EC_POINT, Raw(b"\x04\x01\x00"))], T),
        (RO, ec, ec_pub, T + [(PyKCS11.CKA_LOCAL, True)]),
        (RO, rsa, rsa_pub, T + [(CKA_PRIVATE_EXPONENT, Raw(b"\x01"))]),
        (INCONSISTENT, ec, ec_pub + [(CKA_KEY_TYPE, PyKCS11.CKK_RSA)], T),
        (INCONSISTENT, ec, ec_pub, T + [(CKA_CLASS, CKO_PUBLIC_KEY)]),
        (INCONSISTENT, ec, [(CKA_TOKEN, False), (CKA_EC_PARAMS, P256_OID)], T),
        (INCONSISTENT, ec, [(CKA_EC_PARAMS, P256_OID)], T),  # CKA_TOKEN's default: FALSE
        (INCONSISTENT, ec, ec_pub + [(CKA_VERIFY, False)], T),
        (INCONSISTENT, ec, ec_pub + [(CKA_ENCRYPT, True)], T),
        (INCONSISTENT, ec, ec_pub + [(PyKCS11.CKA_WRAP, True)], T),
        (INCONSISTENT, ec, ec_pub, T + [(PyKCS11.CKA_UNWRAP, True)]),
        (INCONSISTENT, ec, ec_pub, T + [(CKA_SIGN, True), (CKA_DERIVE, True)]),
        (INCONSISTENT, ec, ec_pub, T + [(CKA_DECRYPT, True)]),  # EC keys do not decrypt
        (INCONSISTENT, rsa, rsa_pub, T + [(CKA_SIGN, True), (CKA_DECRYPT, True)]),
        (INCONSISTENT, rsa, rsa_pub + [(CKA_ENCRYPT, False)], T + [(CKA_DECRYPT, True)]),
        (INCONSISTENT, rsa, rsa_pub + [(CKA_VERIFY, True)], T + [(CKA_DECRYPT, True)]),
        (INCONSISTENT, ec, ec_pub + [(CKA_LABEL, "p11-one")], T + [(CKA_LABEL, "p11-two")]),
        (INCONSISTENT, ec, ec_pub + [(CKA_ID, b"\x01")], T + [(CKA_ID, b"\x02")]),
        # A CKA_ID is kept as an alias: 1 to 120 bytes, not spelling a key id (which a key
        # without an id of its own has), and not another key's.
        (VALUE, ec, ec_pub, T + [(CKA_ID, Raw(b""))]),
        (VALUE, ec, ec_pub, T + [(CKA_ID, b"\x01" * 121)]),
        (VALUE, ec, ec_pub + [(CKA_ID, str(uuid.uuid4()).encode())], T),
        (VALUE, ec, ec_pub, T + [(CKA_LABEL, "pkcs11-id/01")]),  # that name gives CKA_IDs
        # A label is an alias name's tail: 1 to 250 ASCII letters, digits, "/", "_", "-"
        # and ":" (README; test_generate_takes_every_label_an_alias_name_can_end_with).
        (VALUE, ec, ec_pub, T + [(CKA_LABEL, "web server")]),
        (VALUE, ec, ec_pub, T + [(CKA_LABEL, "web.tls")]),
        (VALUE, ec, ec_pub, T + [(CKA_LABEL, "caf\u00e9")]),
        (VALUE, ec, ec_pub, T + [(CKA_LABEL, Raw(b"web\x00tls"))]),
        (VALUE, ec, ec_pub, T + [(CKA_LABEL, "x" * 251)]),
        (VALUE, ec, ec_pub, T + [(CKA_LABEL, Raw(b""))]),
        (VALUE, ec, ec_pub, T + [(CKA_LABEL, "aws/web")]),
        (INCONSISTENT, ec, ec_pub, T + [(PyKCS11.CKA_MODIFIABLE, True)]),
        # Public keys read CKA_PRIVATE false, private keys true: a template asking otherwise.
        (INCONSISTENT, ec, ec_pub + [(CKA_PRIVATE, True)], T),
        # No subject is kept for a key (it reads empty): a name (CN=web) would be dropped.
        (INCONSISTENT, ec, ec_pub + [(PyKCS11.CKA_SUBJECT, WEB_DN)], T),
        (INCONSISTENT, rsa, rsa_pub, T + [(CKA_SIGN, True), (PyKCS11.CKA_SUBJECT, WEB_DN)]),
        (INCONSISTENT, ec, ec_pub, T + [(CKA_PRIVATE, False)]),
        (INCONSISTENT, rsa, rsa_pub, T + [(CKA_DECRYPT, True), (CKA_PRIVATE, False)]),
        (INCONSISTENT, ec, ec_pub, T + [(CKA_EC_PARAMS, P384_OID)]),
        # One attribute with two values (4.1.1), whichever comes first: no key, not the first.
        (INCONSISTENT, rsa, rsa_pub, T + [(CKA_DECRYPT, False), (CKA_DECRYPT, True)]),
        (INCONSISTENT, ec, ec_pub, T + [(CKA_LABEL, "p11-dup-a"), (CKA_LABEL, "p11-dup-b")]),
        (INCONSISTENT, ec, ec_pub + [(CKA_TOKEN, False)], T),
    ]
    secrets = [
        (TYPE, aes, aes_t + [(CKA_MODULUS_BITS, 2048)]),
        (RO, aes, aes_t + [(CKA_VALUE, Raw(bytes(32)))]),
        (VALUE, mac, T + [(CKA_VALUE_LEN, Raw((32).to_bytes(4, "little")))]),
        (VALUE, aes, aes_t + [(CKA_SENSITIVE, Raw(bytes(2)))]),
        (INCONSISTENT, aes, aes_t + [(CKA_KEY_TYPE, PyKCS11.CKK_DES3)]),
        (INCONSISTENT, aes, T + [(CKA_CLASS, CKO_PRIVATE_KEY)]),
        (INCONSISTENT, aes, [(CKA_CLASS, CKO_SECRET_KEY)]),
        (INCONSISTENT, aes, aes_t + [(CKA_SIGN, True)]),
        (INCONSISTENT, aes, aes_t + [(CKA_ENCRYPT, False)]),
        (INCONSISTENT, aes, aes_t + [(PyKCS11.CKA_WRAP, True)]),
        (INCONSISTENT, mac, mac_t + [(CKA_ENCRYPT, True), (CKA_DECRYPT, True)]),
        (INCONSISTENT, mac, mac_t + [(CKA_VERIFY, False)]),
        (INCONSISTENT, aes, aes_t + [(CKA_PRIVATE, False)]),
        (INCONSISTENT, mac, mac_t + [(CKA_PRIVATE, False)]),
        (VALUE, aes, aes_t + [(CKA_ID, b"\x01" * 121)]),
        (INCONSISTENT, aes, aes_t + [(CKA_SENSITIVE, True), (CKA_SENSITIVE, False)]),
        (INCONSISTENT, mac, mac_t + [(CKA_VALUE_LEN, 64)]),
    ]
    count = len(officer.list_keys(Limit=1000)["Keys"])
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        for i, (want, mech, pub, priv) in enumerate(pairs):
            got = generate_pair_rv(s, mech, pub, priv)
            assert got == want, (i, CKR.get(got, hex(got)), pub, priv)
        for i, (want, mech, t) in enumerate(secrets):
            got = generate_key_rv(s, mech, t)
            assert got == want, (i, CKR.get(got, hex(got)), t)
        assert len(officer.list_keys(Limit=1000)["Keys"]) == count
        # What an hsmd key is, said in full, is accepted.
        # (PyKCS11 1.5 takes CKA_COPYABLE and CKA_DESTROYABLE for byte strings: given raw.)
        common = [(CKA_TOKEN, True), (CKA_ID, b"any"), (PyKCS11.CKA_MODIFIABLE, False),
                  (PyKCS11.CKA_COPYABLE, Raw(b"\x00")), (PyKCS11.CKA_START_DATE, b""),
                  (PyKCS11.CKA_END_DATE, b""),
                  (PyKCS11.CKA_ALLOWED_MECHANISMS, mech_list(sorted(ALLOWED["ec"])))]
        hpub, hpriv = s.generateKeyPair(
            common + [(CKA_CLASS, CKO_PUBLIC_KEY), (CKA_KEY_TYPE, CKK_EC), (CKA_PRIVATE, False),
                      (CKA_EC_PARAMS, P256_OID), (CKA_VERIFY, True), (CKA_ENCRYPT, False),
                      (PyKCS11.CKA_WRAP, False), (CKA_DERIVE, False),
                      (PyKCS11.CKA_SUBJECT, b"0\x00"),
                      (CKA_LABEL, "p11-full"), (PyKCS11.CKA_DESTROYABLE, Raw(b"\x00"))],
            common + [(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_KEY_TYPE, CKK_EC), (CKA_PRIVATE, True),
                      (CKA_SENSITIVE, True), (CKA_EXTRACTABLE, False), (CKA_SIGN, True),
                      (CKA_DECRYPT, False), (PyKCS11.CKA_UNWRAP, False), (CKA_DERIVE, False),
                      (PyKCS11.CKA_SUBJECT, b"0\x00"), (CKA_LABEL, "p11-full"),
                      (PyKCS11.CKA_DESTROYABLE, Raw(b"\x01")), (CKA_EC_PARAMS, P256_OID),
                      (CKA_TOKEN, True)],
            ec)
        assert attrs(s, hpriv, CKA_ID) == attrs(s, hpub, CKA_ID) == [b"any"]
        assert attrs(s, hpriv, PyKCS11.CKA_SUBJECT) == attrs(s, hpub, PyKCS11.CKA_SUBJECT) == [b""]
    # The CKA_ID is kept as the alias that gives it (alias/pkcs11-id/ and the id in hex).
    md = officer.describe_key(KeyId="alias/pkcs11-id/" + b"any".hex())["KeyMetadata"]
    assert (md["KeySpec"], md["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    assert officer.describe_key(KeyId="alias/p11-full")["KeyMetadata"]["KeyId"] == md["KeyId"]
    assert len(officer.list_keys(Limit=1000)["Keys"]) == count + 1


def test_generation_mechanisms_take_no_parameter(p11, officer):
    """No key generation mechanism of the module has a parameter (PKCS#11's mechanism
    specifications: "it does not have a parameter"): one given, as bytes or as a length
    without them, is CKR_MECHANISM_PARAM_INVALID, as a template fault would be, and no key is
    made.  (SoftHSMv2 ignores such a parameter.)"""
    T = [(CKA_TOKEN, True)]
    pairs = [(CKM["CKM_RSA_PKCS_KEY_PAIR_GEN"], T + [(CKA_MODULUS_BITS, 2048)]),
             (CKM["CKM_EC_KEY_PAIR_GEN"], T + [(CKA_EC_PARAMS, P256_OID)]),
             (CKM["CKM_EC_EDWARDS_KEY_PAIR_GEN"], T + [(CKA_EC_PARAMS, ED25519_OID)])]
    secrets = [(CKM["CKM_AES_KEY_GEN"], T + [(CKA_CLASS, CKO_SECRET_KEY)]),
               (CKM["CKM_GENERIC_SECRET_KEY_GEN"], T + [(CKA_VALUE_LEN, 32)])]
    count = len(officer.list_keys(Limit=1000)["Keys"])

    def given(m):
        with_bytes = Mechanism(m, b"\x01\x02\x03\x04").to_native()
        length_only = Mechanism(m).to_native()
        length_only.ulParameterLen = 4
        return {"bytes": with_bytes, "length only": length_only}

    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        for m, pub in pairs:
            for how, native in given(m).items():
                rv = s.lib.C_GenerateKeyPair(s.session, native, raw_template(s, pub),
                                             raw_template(s, T), LowLevel.CK_OBJECT_HANDLE(),
                                             LowLevel.CK_OBJECT_HANDLE())
                assert rv == PyKCS11.CKR_MECHANISM_PARAM_INVALID, (CKM[m], how, CKR.get(rv, rv))
        for m, t in secrets:
            for how, native in given(m).items():
                rv = s.lib.C_GenerateKey(s.session, native, raw_template(s, t),
                                         LowLevel.CK_OBJECT_HANDLE())
                assert rv == PyKCS11.CKR_MECHANISM_PARAM_INVALID, (CKM[m], how, CKR.get(rv, rv))
    assert len(officer.list_keys(Limit=1000)["Keys"]) == count


def mech_list(mechs):
    """A CKA_ALLOWED_MECHANISMS value: CK_MECHANISM_TYPEs in the host's byte order."""
    return Raw(array.array("L", mechs).tobytes())


def allowed_mechanisms(s, obj):
    """An object's CKA_ALLOWED_MECHANISMS, read with C_GetAttributeValue (length, then value)."""
    tpl = LowLevel.ckattrlist(1)
    tpl[0].SetType(PyKCS11.CKA_ALLOWED_MECHANISMS)
    check(s.lib.C_GetAttributeValue(s.session, obj, tpl), "C_GetAttributeValue (length)")
    if tpl[0].GetLen() == 0:
        return []
    check(s.lib.C_GetAttributeValue(s.session, obj, tpl), "C_GetAttributeValue")
    return list(array.array("L", bytes(tpl[0].GetBin())))


ALLOWED = {
    "ec": {CKM[n] for n in ("CKM_ECDSA", "CKM_ECDSA_SHA224", "CKM_ECDSA_SHA256",
                            "CKM_ECDSA_SHA384", "CKM_ECDSA_SHA512")},
    "rsa": {CKM[n] for n in ("CKM_RSA_PKCS", "CKM_SHA256_RSA_PKCS", "CKM_SHA384_RSA_PKCS",
                             "CKM_SHA512_RSA_PKCS", "CKM_RSA_PKCS_PSS",
                             "CKM_SHA256_RSA_PKCS_PSS", "CKM_SHA384_RSA_PKCS_PSS",
                             "CKM_SHA512_RSA_PKCS_PSS")},
    "rsa_enc": {CKM["CKM_RSA_PKCS_OAEP"]},
    "aes": {CKM["CKM_AES_GCM"]},
    "mac": {CKM["CKM_SHA256_HMAC"]},  # an HMAC_256 key: its own hash only
}


def derive_rv(s, mech, base, template):
    return s.lib.C_DeriveKey(s.session, mech.to_native(), base, raw_template(s, template),
                             LowLevel.CK_OBJECT_HANDLE())


def usable_mechanisms(p11, obj, peer_point):
    """The module's mechanisms whose *Init (or C_DeriveKey) takes obj, each tried in a
    session of its own with parameters it accepts."""
    pss = {CKM["CKM_RSA_PKCS_PSS"]: PSS_SHA256, CKM["CKM_SHA256_RSA_PKCS_PSS"]: PSS_SHA256,
           CKM["CKM_SHA384_RSA_PKCS_PSS"]: (CKM["CKM_SHA384"], PyKCS11.CKG_MGF1_SHA384, 48),
           CKM["CKM_SHA512_RSA_PKCS_PSS"]: (CKM["CKM_SHA512"], PyKCS11.CKG_MGF1_SHA512, 64)}
    usable = set()
    for m in p11.getMechanismList(0):
        m = CKM[m]
        info = p11.getMechanismInfo(0, CKM[m]).flags
        mech = (RSA_PSS_Mechanism(m, *pss[m]) if m in pss
                else oaep(CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256)
                if m == CKM["CKM_RSA_PKCS_OAEP"]
                else PyKCS11.AES_GCM_Mechanism(bytes(12), b"", 128) if m == CKM["CKM_AES_GCM"]
                else ecdh(peer_point) if info & PyKCS11.CKF_DERIVE
                else Mechanism(m))
        for flag, name in ((PyKCS11.CKF_SIGN, "C_SignInit"), (PyKCS11.CKF_VERIFY, "C_VerifyInit"),
                           (PyKCS11.CKF_ENCRYPT, "C_EncryptInit"),
                           (PyKCS11.CKF_DECRYPT, "C_DecryptInit"), (PyKCS11.CKF_DERIVE, None)):
            if not info & flag:
                continue
            with session(p11) as s:
                rv = (derive_rv(s, mech, obj, SECRET_TEMPLATE) if name is None
                      else getattr(s.lib, name)(s.session, mech.to_native(), obj))
            if rv == CKR_OK:
                usable.add(m)
    return usable


def test_allowed_mechanisms_are_what_the_key_is_let_do(p11, user, keys):
    """CKA_ALLOWED_MECHANISMS of every key object is the list of mechanisms the module lets it
    be used with: those whose C_SignInit, C_VerifyInit, C_EncryptInit, C_DecryptInit or
    C_DeriveKey takes it, no more and no fewer (one table decides both); a derived secret,
    which no mechanism takes, allows none."""
    peer = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    with session(p11, user.pin) as s:
        objects = {}
        for name in ("ec", "rsa", "rsa_enc", "ecdh"):
            (objects[name, "private"],) = find(s, CKO_PRIVATE_KEY, keys[name])
            (objects[name, "public"],) = find(s, CKO_PUBLIC_KEY, keys[name])
        for name in ("aes", "mac"):
            (objects[name, "secret"],) = find(s, CKO_SECRET_KEY, keys[name])
        (agree,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        derived = s.deriveKey(agree, SECRET_TEMPLATE, ecdh(peer))
        assert allowed_mechanisms(s, derived) == []
        expected = dict(ALLOWED, ecdh={CKM["CKM_ECDH1_DERIVE"], CKM["CKM_ECDH1_COFACTOR_DERIVE"]})
        for (name, cls), obj in objects.items():
            listed = allowed_mechanisms(s, obj)
            assert len(listed) == len(set(listed)), (name, cls, listed)
            want = set() if (name, cls) == ("ecdh", "public") else expected[name]
            assert set(listed) == want, (name, cls, [CKM[m] for m in listed])
            assert usable_mechanisms(p11, obj, peer) == want, (name, cls)


def test_generation_takes_only_the_allowed_mechanisms_a_key_has(p11, officer):
    """hsmd's keys are KMS keys other clients use too: the token cannot keep a narrower
    CKA_ALLOWED_MECHANISMS for one.  A generation template may give the attribute only as
    the list the key will have (in any order); a narrower list, or one naming a mechanism
    the key will not do, is CKR_ATTRIBUTE_VALUE_INVALID and makes no key."""
    ec_pub = [(CKA_TOKEN, True), (CKA_EC_PARAMS, P256_OID)]
    ec_priv = [(CKA_TOKEN, True), (CKA_SIGN, True)]
    own = sorted(ALLOWED["ec"], reverse=True)
    ec_gen = PyKCS11.MechanismECGENERATEKEYPAIR
    aes = [(CKA_CLASS, CKO_SECRET_KEY), (CKA_TOKEN, True), (CKA_VALUE_LEN, 32)]
    aes_gen = Mechanism(PyKCS11.CKM_AES_KEY_GEN)
    bad = PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID
    count = len(officer.list_keys(Limit=1000)["Keys"])
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        allowed = PyKCS11.CKA_ALLOWED_MECHANISMS
        for pub, priv in (
                (ec_pub, ec_priv + [(allowed, mech_list([CKM["CKM_ECDSA"]]))]),
                (ec_pub + [(allowed, mech_list(own[1:]))], ec_priv),
                (ec_pub, ec_priv + [(allowed, mech_list(own + [CKM["CKM_SHA256_RSA_PKCS"]]))]),
                (ec_pub + [(allowed, mech_list([]))], ec_priv)):
            assert generate_pair_rv(s, ec_gen, pub, priv) == bad
        assert generate_key_rv(s, aes_gen, aes + [(allowed, mech_list([]))]) == bad
        assert generate_key_rv(s, aes_gen, aes + [
            (allowed, mech_list([CKM["CKM_AES_GCM"], CKM["CKM_RSA_PKCS_OAEP"]]))]) == bad
        assert len(officer.list_keys(Limit=1000)["Keys"]) == count  # none made
        # The key's own list, in any order (and repeated), is what it gets.
        hpub, hpriv = s.generateKeyPair(ec_pub + [(allowed, mech_list(own))],
                                        ec_priv + [(allowed, mech_list(own + own[:1]))], ec_gen)
        assert sorted(allowed_mechanisms(s, hpriv)) == sorted(own)
        assert sorted(allowed_mechanisms(s, hpub)) == sorted(own)
        made = [attrs(s, hpriv, CKA_ID)[0].decode()]
        key = s.generateKey(aes + [(allowed, mech_list([CKM["CKM_AES_GCM"]]))], aes_gen)
        assert allowed_mechanisms(s, key) == [CKM["CKM_AES_GCM"]]
        made.append(attrs(s, key, CKA_ID)[0].decode())
        # A derived secret allows none: an empty list only.
        agree = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")[
            "KeyMetadata"]["KeyId"]
        made.append(agree)
        (base,) = find(s, CKO_PRIVATE_KEY, agree)
        point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        hmac = mech_list([CKM["CKM_SHA256_HMAC"]])
        assert derive_rv(s, ecdh(point), base, SECRET_TEMPLATE + [(allowed, hmac)]) == bad
        assert derive_rv(s, ecdh(point), base,
                         SECRET_TEMPLATE + [(allowed, mech_list([]))]) == CKR_OK
    for kid in made:
        officer.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)


def test_generate_key_agreement_pairs(p11, officer):
    """A NIST curve pair whose private template derives and does not sign is a
    KEY_AGREEMENT key; asked to sign too (an hsmd key has one usage), or on a curve hsmd has
    no key agreement keys on, it is refused, not made a signing key."""
    ed25519 = bytes.fromhex("130c656477617264733235353139")  # PrintableString "edwards25519"
    tok = [(CKA_TOKEN, True)]
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        made = {}
        for name, oid, priv in [
            ("agree", P384_OID, [(CKA_DERIVE, True)]),
            ("agree-nosign", P256_OID, [(CKA_DERIVE, True), (CKA_SIGN, False)]),
        ]:
            hpub, hpriv = s.generateKeyPair(tok + [(CKA_EC_PARAMS, oid), (CKA_DERIVE, True)],
                                            tok + priv + [(CKA_LABEL, "p11-" + name)],
                                            PyKCS11.MechanismECGENERATEKEYPAIR)
            made[name] = (attrs(s, hpub, CKA_ID)[0].decode(), attrs(s, hpriv, CKA_DERIVE)[0])
        count = len(officer.list_keys(Limit=1000)["Keys"])
        for oid, mech, priv in [
            (P256_OID, PyKCS11.MechanismECGENERATEKEYPAIR, [(CKA_DERIVE, True), (CKA_SIGN, True)]),
            (bytes.fromhex("06052b8104000a"), PyKCS11.MechanismECGENERATEKEYPAIR,
             [(CKA_DERIVE, True)]),
            (ed25519, Mechanism(CKM["CKM_EC_EDWARDS_KEY_PAIR_GEN"]), [(CKA_DERIVE, True)]),
        ]:
            ckr(PyKCS11.CKR_TEMPLATE_INCONSISTENT, s.generateKeyPair,
                tok + [(CKA_EC_PARAMS, oid)], tok + priv, mech)
        assert len(officer.list_keys(Limit=1000)["Keys"]) == count
    for name in ("agree", "agree-nosign"):
        kid, derives = made[name]
        assert officer.describe_key(KeyId=kid)["KeyMetadata"]["KeyUsage"] == "KEY_AGREEMENT"
        assert derives is True, name


def test_generate_secret_keys(p11, user, officer):
    """C_GenerateKey: CKM_AES_KEY_GEN makes a SYMMETRIC_DEFAULT key (AES-GCM through the
    module), CKM_GENERIC_SECRET_KEY_GEN an HMAC key of CKA_VALUE_LEN bytes; a template that
    cannot be met makes no key."""
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        aes = s.generateKey([(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, PyKCS11.CKK_AES),
                             (CKA_VALUE_LEN, 32), (CKA_TOKEN, True), (CKA_SENSITIVE, True),
                             (CKA_ENCRYPT, True), (CKA_DECRYPT, True), (CKA_LABEL, "p11-aes")],
                            Mechanism(PyKCS11.CKM_AES_KEY_GEN))
        aes_id = attrs(s, aes, CKA_ID)[0].decode()
        mac = s.generateKey([(CKA_TOKEN, True), (CKA_VALUE_LEN, 48), (CKA_LABEL, "p11-mac"),
                             (CKA_ID, b"\x0b\x0c")],
                            Mechanism(PyKCS11.CKM_GENERIC_SECRET_KEY_GEN))
        assert attrs(s, mac, CKA_ID) == [b"\x0b\x0c"]  # the template's, kept
        mac_id = officer.describe_key(KeyId="alias/pkcs11-id/0b0c")["KeyMetadata"]["KeyId"]
        assert [o.value() for o in s.findObjects([(CKA_ID, b"\x0b\x0c")])] == [mac.value()]
        before = {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]}
        tok = [(CKA_TOKEN, True)]
        for template, mech in (
                ([(CKA_VALUE_LEN, 16)], PyKCS11.CKM_AES_KEY_GEN),
                ([(CKA_EXTRACTABLE, True)], PyKCS11.CKM_AES_KEY_GEN),
                ([(CKA_VALUE_LEN, 20)], PyKCS11.CKM_GENERIC_SECRET_KEY_GEN),
                ([(CKA_LABEL, "p11-aes")], PyKCS11.CKM_AES_KEY_GEN),  # the label is taken
                ([(CKA_ID, b"\x0b\x0c")], PyKCS11.CKM_AES_KEY_GEN)):  # so is the CKA_ID
            assert refused(s.generateKey, tok + template, Mechanism(mech)) == \
                PyKCS11.CKR_ATTRIBUTE_VALUE_INVALID, (template, mech)
        assert refused(s.generateKey, tok, Mechanism(PyKCS11.CKM_GENERIC_SECRET_KEY_GEN)) == \
            PyKCS11.CKR_TEMPLATE_INCOMPLETE
        assert refused(s.generateKey, [], Mechanism(PyKCS11.CKM_DES3_KEY_GEN)) == \
            PyKCS11.CKR_MECHANISM_INVALID
    # A taken label or CKA_ID is refused before a key is made: none was.
    assert {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]} == before
    for kid, spec, usage, aliases in (
            (aes_id, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", ["alias/p11-aes"]),
            (mac_id, "HMAC_384", "GENERATE_VERIFY_MAC", ["alias/p11-mac",
                                                         "alias/pkcs11-id/0b0c"])):
        md = officer.describe_key(KeyId=kid)["KeyMetadata"]
        assert (md["KeySpec"], md["KeyUsage"], md["KeyState"]) == (spec, usage, "Enabled")
        assert [a["AliasName"] for a in officer.list_aliases(KeyId=kid)["Aliases"]] == aliases
    with session(p11, user.pin) as s:
        (key,) = find(s, CKO_SECRET_KEY, aes_id)
        m = PyKCS11.AES_GCM_Mechanism(bytes(12), b"", 128)
        ct = bytes(s.encrypt(key, b"sealed", m))
        iv = bytes(m._source_iv)
        assert bytes(s.decrypt(key, ct, PyKCS11.AES_GCM_Mechanism(iv, b"", 128))) == b"sealed"
        (hkey,) = s.findObjects([(CKA_ID, b"\x0b\x0c"), (CKA_CLASS, CKO_SECRET_KEY)])
        tag = sign(s, hkey, Mechanism(PyKCS11.CKM_SHA384_HMAC), MSG)
        assert user.kms.verify_mac(KeyId=mac_id, Message=MSG, Mac=tag,
                                   MacAlgorithm="HMAC_SHA_384")["MacValid"] is True


# ---- 6. destruction --------------------------------------------------------------------------

def assert_pending_deletion(officer, kid):
    md = officer.describe_key(KeyId=kid)["KeyMetadata"]
    assert md["KeyState"] == "PendingDeletion", md
    left = md["DeletionDate"] - datetime.datetime.now(datetime.timezone.utc)
    days = left.total_seconds() / 86400
    assert 6.9 < days <= 7.01, md["DeletionDate"]


def test_destroy_object_schedules_deletion(p11, officer):
    mac = officer.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")[
        "KeyMetadata"]["KeyId"]
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        eck = generate(s, "ec", "p11-doomed", label_in_public=True)
        (pub,) = find(s, CKO_PUBLIC_KEY, eck)
        ckr(CKR_ACTION_PROHIBITED, s.destroyObject, pub)
        assert attrs(s, pub, PyKCS11.CKA_DESTROYABLE) == [b"\x00"]  # it goes with its key
        assert officer.describe_key(KeyId=eck)["KeyMetadata"]["KeyState"] == "Enabled"
        (priv,) = find(s, CKO_PRIVATE_KEY, eck)
        assert attrs(s, priv, PyKCS11.CKA_DESTROYABLE) == [b"\x01"]
    # A read-only session changes no token object (PKCS#11 5.7).
    ro = p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION)
    try:
        ro.login(f"{DEV_AKID}:{DEV_SECRET}")
        (priv,) = find(ro, CKO_PRIVATE_KEY, eck)
        ckr(PyKCS11.CKR_SESSION_READ_ONLY, ro.destroyObject, priv)
        ro.logout()
    finally:
        ro.closeSession()
    assert officer.describe_key(KeyId=eck)["KeyMetadata"]["KeyState"] == "Enabled"
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, eck)
        s.destroyObject(priv)
        assert_pending_deletion(officer, eck)
        assert find(s, None, eck) == []
        (secret,) = find(s, CKO_SECRET_KEY, mac)
        s.destroyObject(secret)
        assert_pending_deletion(officer, mac)
        assert find(s, None, mac) == []
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:  # not back after a new login
        assert find(s, None, eck) == [] and find(s, None, mac) == []


# ---- 7. random -------------------------------------------------------------------------------

def test_generate_random(p11, user):
    with session(p11, user.pin) as s:
        a, b = bytes(s.generateRandom(32)), bytes(s.generateRandom(32))
        assert len(a) == len(b) == 32 and a != b
        big = bytes(s.generateRandom(4096))
        assert len(big) == 4096 and len(set(big)) > 200


# ---- 7b. digests -----------------------------------------------------------------------------

DIGESTS = [("CKM_SHA_1", "sha1"), ("CKM_SHA224", "sha224"), ("CKM_SHA256", "sha256"),
           ("CKM_SHA384", "sha384"), ("CKM_SHA512", "sha512")]


def digest_parts(s, mech, parts):
    """C_DigestInit, C_DigestUpdate for each part, C_DigestFinal (size, then digest)."""
    check(s.lib.C_DigestInit(s.session, Mechanism(mech).to_native()), "C_DigestInit")
    for p in parts:
        check(s.lib.C_DigestUpdate(s.session, ckbytelist(p)), "C_DigestUpdate")
    out = ckbytelist()
    check(s.lib.C_DigestFinal(s.session, out), "C_DigestFinal (length)")
    check(s.lib.C_DigestFinal(s.session, out), "C_DigestFinal")
    return bytes(out)


def test_digests_in_the_module(p11, server, user, keys):
    """SHA-1 and SHA-2 digests, in one part or several, match hashlib; no login is
    needed and hsmd is not called (a digest uses no key)."""
    big = os.urandom(1 << 20) + b"tail"
    before = len(audit_records(server.data_dir))
    with session(p11) as s:  # never logged in
        for mech, name in DIGESTS:
            for data in (b"x", MSG, big):  # PyKCS11 itself refuses an empty buffer
                assert bytes(s.digest(data, Mechanism(CKM[mech]))) == hashlib.new(name, data).digest()
            parts = [big[:1], big[1:70000], big[70000:]]
            assert digest_parts(s, CKM[mech], parts) == hashlib.new(name, big).digest()
            info = p11.getMechanismInfo(0, mech)
            assert info.flags == PyKCS11.CKF_DIGEST, info.flags2text()
    requests = [r for r in audit_records(server.data_dir)[before:] if r["type"] == "request"]
    assert requests == []  # (the scheduler's own events, a backup say, may come meanwhile)

    sha256 = Mechanism(CKM["CKM_SHA256"]).to_native()
    with session(p11, user.pin) as s:
        lib, h = s.lib, s.session
        out = ckbytelist()
        # Without C_DigestInit; then twice in a row.
        assert lib.C_Digest(h, ckbytelist(MSG), out) == PyKCS11.CKR_OPERATION_NOT_INITIALIZED
        assert lib.C_DigestFinal(h, out) == PyKCS11.CKR_OPERATION_NOT_INITIALIZED
        check(lib.C_DigestInit(h, sha256), "C_DigestInit")
        assert lib.C_DigestInit(h, sha256) == PyKCS11.CKR_OPERATION_ACTIVE
        # A length query, then a buffer one byte short, keep the operation and its input.
        check(lib.C_DigestUpdate(h, ckbytelist(MSG)), "C_DigestUpdate")
        check(lib.C_DigestFinal(h, out), "C_DigestFinal (length)")
        assert len(out) == 32
        out = ckbytelist([0] * 31)
        assert lib.C_DigestFinal(h, out) == PyKCS11.CKR_BUFFER_TOO_SMALL
        out = ckbytelist([0] * 32)
        check(lib.C_DigestFinal(h, out), "C_DigestFinal")
        assert bytes(out) == hashlib.sha256(MSG).digest()
        assert lib.C_DigestFinal(h, out) == PyKCS11.CKR_OPERATION_NOT_INITIALIZED
        # A key cannot be digested (the module holds no key material): the operation ends.
        (aes,) = find(s, CKO_SECRET_KEY, keys["aes"])
        check(lib.C_DigestInit(h, sha256), "C_DigestInit")
        assert lib.C_DigestKey(h, aes) == PyKCS11.CKR_KEY_INDIGESTIBLE
        assert lib.C_DigestUpdate(h, ckbytelist(MSG)) == PyKCS11.CKR_OPERATION_NOT_INITIALIZED
        check(lib.C_DigestInit(h, sha256), "C_DigestInit")
        nothing = LowLevel.CK_OBJECT_HANDLE()
        nothing.assign(0xDEAD)
        assert lib.C_DigestKey(h, nothing) == PyKCS11.CKR_KEY_HANDLE_INVALID
        # After a logout a public key keeps its handle, hidden until the next login: no
        # object shows, so its handle names none here either, as a bogus one does.
        (pub,) = find(s, CKO_PUBLIC_KEY, keys["ec"])
        s.logout()
        check(lib.C_DigestInit(h, sha256), "C_DigestInit")
        assert lib.C_DigestKey(h, pub) == PyKCS11.CKR_KEY_HANDLE_INVALID
        s.login(user.pin)
        # Mechanisms that are not digests, and a digest mechanism with a parameter.
        for m in (Mechanism(CKM["CKM_SHA256_RSA_PKCS"]), Mechanism(CKM["CKM_SHA256_HMAC"])):
            assert lib.C_DigestInit(h, m.to_native()) == PyKCS11.CKR_MECHANISM_INVALID
        with_param = Mechanism(CKM["CKM_SHA256"], b"\x01")
        assert lib.C_DigestInit(h, with_param.to_native()) == PyKCS11.CKR_MECHANISM_PARAM_INVALID
        # A digest mechanism does not sign; signing and digesting run side by side.
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
        ckr(PyKCS11.CKR_MECHANISM_INVALID, s.sign, priv, MSG, Mechanism(CKM["CKM_SHA256"]))
        check(lib.C_DigestInit(h, sha256), "C_DigestInit")
        sig = sign(s, priv, Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS), MSG)
        out = ckbytelist()
        check(lib.C_Digest(h, ckbytelist(sig), out), "C_Digest (length)")
        check(lib.C_Digest(h, ckbytelist(sig), out), "C_Digest")
        assert bytes(out) == hashlib.sha256(sig).digest()
        # C_Digest answers a length query, or a buffer too small, before it reads the data:
        # an Update call after either begins the data (as SoftHSMv2 does).
        for room in ([], [0] * 31):
            check(lib.C_DigestInit(h, sha256), "C_DigestInit")
            out = ckbytelist(room)
            assert lib.C_Digest(h, ckbytelist(b"one"), out) == \
                (CKR_OK if not room else PyKCS11.CKR_BUFFER_TOO_SMALL)
            check(lib.C_DigestUpdate(h, ckbytelist(b"two")), "C_DigestUpdate")
            out = ckbytelist([0] * 32)
            check(lib.C_DigestFinal(h, out), "C_DigestFinal")
            assert bytes(out) == hashlib.sha256(b"two").digest(), room
        # C_Digest does not end a multi-part digest: refused, and the operation ended.
        check(lib.C_DigestInit(h, sha256), "C_DigestInit")
        check(lib.C_DigestUpdate(h, ckbytelist(MSG)), "C_DigestUpdate")
        out = ckbytelist([0] * 32)
        assert lib.C_Digest(h, ckbytelist(MSG), out) == PyKCS11.CKR_OPERATION_NOT_INITIALIZED
        assert lib.C_DigestFinal(h, out) == PyKCS11.CKR_OPERATION_NOT_INITIALIZED
    # A session closed in the middle of a digest leaves nothing behind for the next.
    with session(p11) as s:
        check(s.lib.C_DigestInit(s.session, sha256), "C_DigestInit")
        check(s.lib.C_DigestUpdate(s.session, ckbytelist(MSG)), "C_DigestUpdate")
    with session(p11) as s:
        assert bytes(s.digest(b"x", Mechanism(CKM["CKM_SHA256"]))) == hashlib.sha256(b"x").digest()


def test_pkcs11_tool_hash(server, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    data = tmp_path / "data"
    data.write_bytes(os.urandom(100000))
    for src in (empty, data):
        for mech, name in (("SHA256", "sha256"), ("SHA512", "sha512"), ("SHA-1", "sha1")):
            out = tmp_path / ("digest-" + name)
            p = tool(server.endpoint, "--hash", "-m", mech, "-i", str(src), "-o", str(out))
            assert p.returncode == 0, p.stderr
            assert out.read_bytes() == hashlib.new(name, src.read_bytes()).digest(), (src, mech)


# ---- 8. pkcs11-tool --------------------------------------------------------------------------

def tool(endpoint, *args, **settings):
    """Runs pkcs11-tool on the module; settings are HSM_PKCS11_* variables (ca_file=...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_PKCS11_")}
    if endpoint:
        env["HSM_PKCS11_ENDPOINT"] = endpoint
    env.update({"HSM_PKCS11_" + k.upper(): v for k, v in settings.items()})
    return subprocess.run(["pkcs11-tool", "--module", MODULE] + list(args), env=env,
                          capture_output=True, text=True, timeout=120)


def login_fails(p):
    return p.returncode != 0 and "C_Login failed" in p.stderr


def test_pkcs11_tool(server, user, officer, keys, tmp_path):
    p = tool(server.endpoint, "-L")
    assert p.returncode == 0, p.stderr
    assert "Slot 0 (0x0)" in p.stdout and "token label        : hsmd\n" in p.stdout, p.stdout
    assert "token manufacturer : hsmd\n" in p.stdout, p.stdout
    # Without an endpoint the slot is still listed, but nobody can log in.
    p = tool(None, "-L")
    assert p.returncode == 0 and "token label        : hsmd\n" in p.stdout, (p.stdout, p.stderr)
    assert login_fails(tool(None, "--login", "--pin", user.pin, "-O"))
    # The endpoints are tried in order: a dead one first.
    # Bound and not listening, until the call is done: it refuses connections, and no other
    # node (the dev user's credentials work on every test's node) can take its port meanwhile.
    with socket.socket() as hold:
        hold.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{hold.getsockname()[1]}"
        p = tool(f"{dead},{server.endpoint}", "--login", "--pin", user.pin, "-O")
    assert p.returncode == 0, p.stderr
    assert "CKR_ATTRIBUTE_TYPE_INVALID" not in p.stderr, p.stderr  # each class its own only
    for kind, kid, label in (("RSA", keys["rsa"], "web-tls"), ("EC", keys["ec"], keys["ec"])):
        block = f"Private Key Object; {kind}"
        assert block in p.stdout, p.stdout
        assert f"label:      {label}\n  ID:         {kid.encode().hex()}\n" in p.stdout, p.stdout
    assert "Secret Key Object; AES length 32\n  label:      session-aes\n" in p.stdout, p.stdout
    # The key agreement key: a private key object that derives, and its public key object.
    objects = []  # each object's lines: a header ("Public Key Object; EC ..."), then indented
    for line in p.stdout.splitlines():
        if line and not line[0].isspace():
            objects.append([])
        if objects:
            objects[-1].append(line.strip())
    ecdh = [o for o in objects if f"ID:         {keys['ecdh'].encode().hex()}" in o]
    assert sorted(o[0].split(";")[0] for o in ecdh) == ["Private Key Object",
                                                       "Public Key Object"], p.stdout
    for o in ecdh:
        usage = "derive" if o[0].startswith("Private") else "none"
        assert "label:      ecdh-key" in o and f"Usage:      {usage}" in o, ecdh
    data = tmp_path / "data"
    data.write_bytes(MSG * 3)
    for kid, mech, extra in ((keys["rsa"], "SHA256-RSA-PKCS", []),
                             (keys["ec"], "ECDSA-SHA256", ["--signature-format", "openssl"])):
        sig, pem = tmp_path / f"{mech}.sig", tmp_path / f"{mech}.pem"
        pem.write_bytes(public_key(officer, kid).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        p = tool(server.endpoint, "--login", "--pin", user.pin, "--sign", "-m", mech,
                 "--id", kid.encode().hex(), "-i", str(data), "-o", str(sig), *extra)
        assert p.returncode == 0, (mech, p.stdout, p.stderr)
        v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pem), "-signature",
                            str(sig), str(data)], capture_output=True, text=True, timeout=60)
        assert v.returncode == 0 and "Verified OK" in v.stdout, (mech, v.stdout, v.stderr)
    # An AES key made with pkcs11-tool is an hsmd key; it must be asked for sensitive (the
    # tool's default is a key whose CKA_VALUE may be read, which hsmd never gives) and
    # private (the tool's default is CKA_PRIVATE false; secret keys read true).
    p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "--keygen",
             "--key-type", "AES:32", "--label", "tool-aes")
    assert p.returncode == 1 and "CKR_ATTRIBUTE_VALUE_INVALID" in p.stderr, p.stderr
    p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "--keygen",
             "--key-type", "AES:32", "--sensitive", "--label", "tool-aes")
    assert p.returncode == 1 and "CKR_TEMPLATE_INCONSISTENT" in p.stderr, p.stderr
    p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "--keygen",
             "--key-type", "AES:32", "--sensitive", "--private", "--label", "tool-aes")
    assert p.returncode == 0, (p.stdout, p.stderr)
    md = officer.describe_key(KeyId="alias/tool-aes")["KeyMetadata"]
    assert (md["KeySpec"], md["KeyUsage"]) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"), md
    # pkcs11-tool asks a pair for two usages unless told one (sign and decrypt for RSA, sign
    # and derive for EC): an hsmd key has one, so such a template is refused, and none made.
    p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "--keypairgen",
             "--key-type", "EC:prime256v1", "--label", "tool-two-usages")
    assert p.returncode == 1 and "CKR_TEMPLATE_INCONSISTENT" in p.stderr, p.stderr
    with pytest.raises(Exception):
        officer.describe_key(KeyId="alias/tool-two-usages")
    for usage, kind, label in (("--usage-sign", "SIGN_VERIFY", "tool-signs"),
                               ("--usage-decrypt", "ENCRYPT_DECRYPT", "tool-decrypts")):
        p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}",
                 "--keypairgen", "--key-type", "rsa:2048", usage, "--label", label)
        assert p.returncode == 0, (p.stdout, p.stderr)
        md = officer.describe_key(KeyId="alias/" + label)["KeyMetadata"]
        assert (md["KeySpec"], md["KeyUsage"]) == ("RSA_2048", kind), md
    # An HMAC key: --usage-sign (by default the tool asks a secret key to encrypt).
    p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "--keygen",
             "--key-type", "GENERIC:32", "--sensitive", "--private", "--usage-sign", "--label",
             "tool-mac")
    assert p.returncode == 0, (p.stdout, p.stderr)
    md = officer.describe_key(KeyId="alias/tool-mac")["KeyMetadata"]
    assert (md["KeySpec"], md["KeyUsage"]) == ("HMAC_256", "GENERATE_VERIFY_MAC"), md
    # A key pair made to derive (--usage-derive) is a KEY_AGREEMENT key; --derive with a
    # peer's public key (DER SubjectPublicKeyInfo) writes the peer's own ECDH secret.
    p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "--keypairgen",
             "--key-type", "EC:prime256v1", "--usage-derive", "--label", "tool-agree")
    assert p.returncode == 0, (p.stdout, p.stderr)
    md = officer.describe_key(KeyId="alias/tool-agree")["KeyMetadata"]
    assert (md["KeySpec"], md["KeyUsage"]) == ("ECC_NIST_P256", "KEY_AGREEMENT"), md
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_der, secret = tmp_path / "peer.der", tmp_path / "secret"
    peer_der.write_bytes(peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "--derive",
             "-m", "ECDH1-DERIVE", "--id", md["KeyId"].encode().hex(), "-i", str(peer_der),
             "-o", str(secret))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert secret.read_bytes() == peer.exchange(ec.ECDH(), public_key(officer, md["KeyId"]))


def test_pkcs11_tool_keeps_the_id_it_generates_with(server, user, officer, p11, tmp_path):
    """pkcs11-tool --keypairgen --id: the key keeps that CKA_ID (as its alias
    alias/pkcs11-id/<hex>), and --sign --id finds it by it, as on any token; an id
    another key has is refused and makes no key; an operator gives an existing key one
    with CreateAlias."""
    pin = f"{DEV_AKID}:{DEV_SECRET}"
    p = tool(server.endpoint, "--login", "--pin", pin, "--keypairgen", "--key-type",
             "EC:prime256v1", "--usage-sign", "--id", "0a1b2c", "--label", "tool-id")
    assert p.returncode == 0, (p.stdout, p.stderr)
    kid = officer.describe_key(KeyId="alias/pkcs11-id/0a1b2c")["KeyMetadata"]["KeyId"]
    assert officer.describe_key(KeyId="alias/tool-id")["KeyMetadata"]["KeyId"] == kid
    p = tool(server.endpoint, "--login", "--pin", user.pin, "--list-objects", "--type", "privkey")
    assert p.returncode == 0 and "label:      tool-id\n  ID:         0a1b2c\n" in p.stdout, \
        (p.stdout, p.stderr)
    data, sig, pem = tmp_path / "data", tmp_path / "sig", tmp_path / "pub.pem"
    data.write_bytes(MSG)
    pem.write_bytes(public_key(officer, kid).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    p = tool(server.endpoint, "--login", "--pin", user.pin, "--sign", "-m", "ECDSA-SHA256",
             "--id", "0a1b2c", "--signature-format", "openssl", "-i", str(data), "-o", str(sig))
    assert p.returncode == 0, (p.stdout, p.stderr)
    v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pem), "-signature",
                        str(sig), str(data)], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and "Verified OK" in v.stdout, (v.stdout, v.stderr)
    # The same id again: refused before a key is made.
    before = {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]}
    p = tool(server.endpoint, "--login", "--pin", pin, "--keypairgen", "--key-type",
             "EC:prime256v1", "--usage-sign", "--id", "0a1b2c", "--label", "tool-id-again")
    assert p.returncode == 1 and "CKR_ATTRIBUTE_VALUE_INVALID" in p.stderr, (p.stdout, p.stderr)
    assert {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]} == before
    with pytest.raises(officer.exceptions.NotFoundException):
        officer.describe_key(KeyId="alias/tool-id-again")
    # Deleted (pending deletion, gone from the token), a key gives up its id and label:
    # a script that deletes a key and makes it again under the same names works.
    p = tool(server.endpoint, "--login", "--pin", pin, "--delete-object", "--type", "privkey",
             "--id", "0a1b2c")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert officer.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    p = tool(server.endpoint, "--login", "--pin", pin, "--keypairgen", "--key-type",
             "EC:prime256v1", "--usage-sign", "--id", "0a1b2c", "--label", "tool-id")
    assert p.returncode == 0, (p.stdout, p.stderr)
    again = officer.describe_key(KeyId="alias/pkcs11-id/0a1b2c")["KeyMetadata"]["KeyId"]
    assert again != kid and officer.describe_key(KeyId="alias/tool-id")["KeyMetadata"][
        "KeyId"] == again
    assert officer.list_aliases(KeyId=kid)["Aliases"] == []
    officer.cancel_key_deletion(KeyId=kid)
    officer.enable_key(KeyId=kid)
    # Names under alias/pkcs11-id/ spell one id one way, and a key has one at most.
    for bad in ("alias/pkcs11-id/0A1B", "alias/pkcs11-id/0", "alias/pkcs11-id/zz",
                "alias/pkcs11-id/" + kid.encode().hex()):  # spells a key id
        with pytest.raises(officer.exceptions.InvalidAliasNameException):
            officer.create_alias(AliasName=bad, TargetKeyId=kid)
    officer.create_alias(AliasName="alias/pkcs11-id/0d", TargetKeyId=kid)
    with pytest.raises(ClientError) as e:
        officer.create_alias(AliasName="alias/pkcs11-id/09", TargetKeyId=kid)
    assert e.value.response["Error"]["Code"] == "ValidationException", e.value.response
    with pytest.raises(ClientError) as e:  # moving one onto a key that has one
        officer.update_alias(AliasName="alias/pkcs11-id/0a1b2c", TargetKeyId=kid)
    assert e.value.response["Error"]["Code"] == "ValidationException", e.value.response
    kid = again
    # A key made through the KMS API gets an id of its own from an alias; its label stays
    # its other alias, and a search by the id finds its objects (and by its key id, none).
    other = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"]["KeyId"]
    officer.create_alias(AliasName="alias/api-made", TargetKeyId=other)
    officer.create_alias(AliasName="alias/pkcs11-id/feed", TargetKeyId=other)
    with session(p11, user.pin) as s:
        found = s.findObjects([(CKA_ID, b"\xfe\xed")])
        assert sorted(attrs(s, o, CKA_CLASS)[0] for o in found) == sorted(
            [CKO_PRIVATE_KEY, CKO_PUBLIC_KEY])
        assert {attrs(s, o, CKA_LABEL)[0] for o in found} == {"api-made"}
        assert s.findObjects([(CKA_ID, other.encode())]) == []
        # The id moved to another key: a search by it finds that key now, and the first
        # key has its key id as CKA_ID again.
        third = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
            "KeyMetadata"]["KeyId"]
        officer.update_alias(AliasName="alias/pkcs11-id/feed", TargetKeyId=third)
        found = s.findObjects([(CKA_ID, b"\xfe\xed")])
        assert {attrs(s, o, CKA_LABEL)[0] for o in found} == {third}
        assert len(found) == 2
        assert len(s.findObjects([(CKA_ID, other.encode())])) == 2


def dev_over_https(tmp_path, extra=()):
    """A dev node serving HTTPS with a certificate of a CA of its own, and that PKI."""
    pki = make_pki(str(tmp_path))
    server = Hsmd(["--dev", "--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"],
                   *extra],
                  env={"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET},
                  tls_ca=pki["ca.pem"])
    return server, pki


def test_pkcs11_tool_over_https_and_region(tmp_path):
    server, pki = dev_over_https(tmp_path)
    try:
        kid = client(server).create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
            "KeyMetadata"]["KeyId"]
        args = ("--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "-O")
        p = tool(server.endpoint, *args, ca_file=pki["ca.pem"])
        assert p.returncode == 0 and kid.encode().hex() in p.stdout, (p.stdout, p.stderr)
        p = tool(server.endpoint, *args, ca_file=pki["ca.pem"], region="us-east-1")
        assert p.returncode == 0 and kid.encode().hex() in p.stdout, (p.stdout, p.stderr)
        # An untrusted server, or credentials scoped to another region, do not log in.
        assert login_fails(tool(server.endpoint, *args, ca_file=pki["other-ca.pem"]))
        assert login_fails(tool(server.endpoint, *args))
        assert login_fails(tool(server.endpoint, *args, ca_file=pki["ca.pem"], region="eu-west-1"))
    finally:
        server.cleanup()


def tls_life(tmp_path, extra, *how):
    """pkcs11_tls_life's exit, output and errors, signing over HTTPS as how says."""
    server, pki = dev_over_https(tmp_path, extra)
    try:
        kms = client(server)
        kid = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
            "KeyId"]
        kms.create_alias(AliasName="alias/tls-life", TargetKeyId=kid)
        exe = c_program(tmp_path, "pkcs11_tls_life")
        env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint,
                   HSM_PKCS11_CA_FILE=pki["ca.pem"])
        p = subprocess.run([str(exe), MODULE, f"{DEV_AKID}:{DEV_SECRET}", "tls-life", *how],
                           env=env, capture_output=True, text=True, timeout=180)
        return p.returncode, p.stdout.strip(), p.stderr
    finally:
        server.cleanup()


def test_a_kept_tls_connection_hsmd_closed_does_not_end_the_application(tmp_path):
    """hsmd closes a kept connection it finds idle (or as it restarts) without a TLS
    close_notify; the next call writes to it, and OpenSSL writes its alert to a socket
    the peer closed: the application, whose SIGPIPE ends it, lives on, and the call is
    made again on a new connection."""
    assert tls_life(tmp_path, ["--idle-timeout-ms", "200"], "idle", "1000") == (0, "ok", "")


def test_signals_the_application_handles_do_not_fail_calls_over_tls(tmp_path):
    """A signal handled under SA_RESTART still interrupts a socket read or write that has a
    timeout (signal(7)): over TLS as over HTTP, the module reads or writes again."""
    assert tls_life(tmp_path, [], "signals", "2000") == (0, "ok", "")


def test_the_applications_own_sigpipe_is_left_to_it(tmp_path):
    """The module takes back only a SIGPIPE its own write raised: one the application
    sends to a thread of its own while that thread is inside the module reaches the
    application's handler, or stays pending where the thread blocks it."""
    import socket
    import threading
    exe = c_program(tmp_path, "pkcs11_sigpipe")
    for mode, expect in (("handled", "handler=1 pending=0"), ("blocked", "handler=0 pending=1")):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        got, go = threading.Event(), threading.Event()

        def serve():
            c, _ = listener.accept()
            with c:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += c.recv(65536)
                got.set()
                go.wait(60)
                body = b'{"__type":"ValidationException","message":"no"}'
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/"
                          b"x-amz-json-1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        env = dict(os.environ, HSM_PKCS11_ENDPOINT=f"http://127.0.0.1:{listener.getsockname()[1]}")
        p = subprocess.Popen([str(exe), MODULE, f"{DEV_AKID}:{DEV_SECRET}", mode], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert got.wait(60), "the module sent no request"
            p.stdin.write("in\n")
            p.stdin.flush()
            assert p.stdout.readline() == "sent\n"
            go.set()
            out, _ = p.communicate(timeout=60)
        finally:
            go.set()
            if p.poll() is None:
                p.kill()
            listener.close()
        assert (p.returncode, out.strip()) == (0, expect), mode


def test_the_applications_openssl_error_queue_is_left_as_it_was(tmp_path):
    """The module runs inside applications that use OpenSSL themselves, on the same thread
    (an OpenSSL provider or engine calls it in the middle of OpenSSL's own work): every
    call, one that works or one that fails, a TLS handshake refused included, leaves the
    thread's error queue as it found it, the application's entries there and none of the
    module's."""
    server, pki = dev_over_https(tmp_path)
    try:
        kid = client(server).create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")[
            "KeyMetadata"]["KeyId"]
        exe = c_program(tmp_path, "pkcs11_err_queue", ["-lcrypto"])

        def run(ca):
            env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint, HSM_PKCS11_CA_FILE=ca)
            p = subprocess.run([str(exe), MODULE, f"{DEV_AKID}:{DEV_SECRET}", kid], env=env,
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
            return {w[0]: tuple(w[1:]) for w in map(str.split, p.stdout.splitlines())}

        ok = hex(PyKCS11.CKR["CKR_OK"])
        trusted = run(pki["ca.pem"])
        assert trusted == {
            "initialize": (ok, "kept"), "open_session": (ok, "kept"),
            "login_bad_pin": (hex(PyKCS11.CKR["CKR_PIN_INCORRECT"]), "kept"), "login": (ok, "kept"),
            "digest_init": (ok, "kept"), "digest": (ok, "kept"), "random": (ok, "kept"),
            "find_init": (ok, "kept"), "find": (ok, "kept"), "find_final": (ok, "kept"),
            "encrypt_init": (ok, "kept"), "encrypt": (ok, "kept"),
            "decrypt_init": (ok, "kept"),
            "decrypt_tampered": (hex(PyKCS11.CKR["CKR_ENCRYPTED_DATA_INVALID"]), "kept"),
            "logout": (ok, "kept"), "close_session": (ok, "kept"), "finalize": (ok, "kept"),
        }, trusted
        # A server the module must not trust: the handshake fails inside the module.
        untrusted = run(pki["other-ca.pem"])
        assert untrusted["login"] == (hex(PyKCS11.CKR["CKR_DEVICE_ERROR"]), "kept"), untrusted
        assert all(state == "kept" for _, state in untrusted.values()), untrusted
        assert "random" not in untrusted, untrusted
    finally:
        server.cleanup()


# ---- 9. audit --------------------------------------------------------------------------------

def audited(server, op, user, key_id):
    return [r for r in audit_records(server.data_dir)
            if r.get("op") == op and r.get("principal") == user.arn and r.get("key_id") == key_id]


def test_signatures_are_audited_as_the_pin_user(p11, server, user, keys):
    before = {op: len(audited(server, op, user, keys[k]))
              for op, k in (("Sign", "ec"), ("GenerateMac", "mac"))}
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        sign(s, priv, Mechanism(PyKCS11.CKM_ECDSA_SHA256), b"audited message")
        (mac,) = find(s, CKO_SECRET_KEY, keys["mac"])
        sign(s, mac, Mechanism(PyKCS11.CKM_SHA256_HMAC), b"audited message")
    for op, k in (("Sign", "ec"), ("GenerateMac", "mac")):
        deadline = time.time() + 5
        while len(audited(server, op, user, keys[k])) <= before[op] and time.time() < deadline:
            time.sleep(0.05)
        new = audited(server, op, user, keys[k])[before[op]:]
        assert new, f"no {op} by {user.arn} on {keys[k]} in the audit trail"
        assert all(r["outcome"] == "success" and r["access_key"] == user.akid for r in new), new


# ---- 10. the connection ----------------------------------------------------------------------

KEEPALIVE_SCRIPT = """
import sys, time, PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
s = lib.openSession(0)
s.login(sys.argv[2])
(key,) = s.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                        (PyKCS11.CKA_ID, sys.argv[3].encode())])
mech = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA_SHA256)
for i in range(10):
    s.sign(key, b"kept alive %d" % i, mech)
time.sleep(4.0)  # hsmd closes the idle connection meanwhile
s.sign(key, b"after the idle timeout", mech)
print("signed")
"""


def test_one_connection_kept_alive_and_renewed(tmp_path):
    """The module keeps one connection to hsmd (a TLS handshake per call would
    cost more than the signature): ten signatures arrive from one client
    address.  When hsmd closes it for being idle, the next call opens another
    and succeeds."""
    # Long enough that a pause of the client between its ten calls (a loaded machine)
    # does not close the connection; short against the script's 4 s pause.
    server = start_dev(["--idle-timeout-ms", "1500"])
    try:
        kid = client(server).create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
            "KeyMetadata"]["KeyId"]
        script = tmp_path / "keepalive.py"
        script.write_text(KEEPALIVE_SCRIPT)
        env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
        p = subprocess.run(["/usr/bin/python3", str(script), MODULE, f"{DEV_AKID}:{DEV_SECRET}",
                            kid], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "signed" in p.stdout, (p.stdout, p.stderr)
        deadline = time.time() + 5
        while time.time() < deadline:
            signs = [r for r in audit_records(server.data_dir)
                     if r.get("op") == "Sign" and r.get("key_id") == kid]
            if len(signs) == 11:
                break
            time.sleep(0.05)
        assert len(signs) == 11 and all(r["outcome"] == "success" for r in signs), signs
        sources = [r["source"] for r in signs]
        assert len(set(sources[:10])) == 1, sources
        assert sources[10] != sources[0], sources
    finally:
        server.cleanup()


# ---- 11. searches that name a key ------------------------------------------------------------

def calls_by(server, user,
             ops=("ListKeys", "ListAliases", "DescribeKey", "GetPublicKey", "DescribeKeys")):
    """How many of each listing call the user has made, as the audit trail records them."""
    recs = [r for r in audit_records(server.data_dir) if r.get("principal") == user.arn]
    return {op: sum(r.get("op") == op for r in recs) for op in ops}


def settled_calls(server, user, before_total):
    deadline = time.time() + 5
    while True:
        now = calls_by(server, user)
        if sum(now.values()) > before_total or time.time() > deadline:
            time.sleep(0.2)  # the audit writer flushes in batches
            return calls_by(server, user)
        time.sleep(0.05)


def test_search_by_id_or_label_reads_that_key_only(p11, server, user, officer, keys):
    """An application naming its key (CKA_ID, or CKA_LABEL as a pkcs11 URI does)
    costs a few calls, not a listing of every key; and what it finds is current:
    a moved alias finds the key it names now, a key deleted elsewhere is gone."""
    for _ in range(12):  # enough keys that a listing would show in the counts
        officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    with session(p11, user.pin) as s:
        base = calls_by(server, user)
        assert len(s.findObjects([])) >= 2 * 12  # a search naming nothing reads every key
        full = settled_calls(server, user, sum(base.values()))
        # A page of up to 100 keys, metadata and public keys, a request: none per key.
        n_keys = len(listed_key_ids(officer))
        assert full["DescribeKeys"] - base["DescribeKeys"] == (n_keys + 99) // 100
        for op in ("ListKeys", "DescribeKey", "GetPublicKey"):
            assert full[op] == base[op], op

        (priv,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
        by_id = settled_calls(server, user, sum(full.values()))
        assert by_id["ListKeys"] == full["ListKeys"]
        # That key alone: its metadata and public key in one DescribeKeys naming it.
        assert by_id["DescribeKeys"] - full["DescribeKeys"] == 1
        assert by_id["DescribeKey"] == full["DescribeKey"]
        assert by_id["GetPublicKey"] == full["GetPublicKey"]

        assert len(s.findObjects([(CKA_LABEL, "web-tls")])) == 2
        by_label = settled_calls(server, user, sum(by_id.values()))
        assert by_label["ListKeys"] == by_id["ListKeys"]
        assert by_label["DescribeKey"] - by_id["DescribeKey"] == 1  # the alias
        assert by_label["DescribeKeys"] - by_id["DescribeKeys"] == 1  # then the key

        # The alias moves to another RSA key: the label now finds that key's objects.
        other = officer.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        officer.update_alias(AliasName="alias/web-tls", TargetKeyId=other)
        try:
            found = s.findObjects([(CKA_LABEL, "web-tls"), (CKA_CLASS, CKO_PRIVATE_KEY)])
            assert [attrs(s, o, CKA_ID)[0] for o in found] == [other.encode()]
            (old,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
            assert attrs(s, old, CKA_LABEL)[0] == keys["rsa"]  # no alias left: its id
        finally:
            officer.update_alias(AliasName="alias/web-tls", TargetKeyId=keys["rsa"])
        # Deleted through the KMS API: a search by its id finds nothing.
        officer.schedule_key_deletion(KeyId=other, PendingWindowInDays=7)
        assert find(s, None, other) == []


def test_a_label_spelling_a_key_id_finds_the_key_it_is_the_alias_of(p11, user, officer):
    """A label that spells a key id names that key (a key without an alias has its id as its
    label) but may as well be an alias's name ("alias/<a key id>" is one): a search by it
    finds the key that alias names, made after the login, not only after a listing."""
    with session(p11, user.pin) as s:
        bare = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
        bare = bare["KeyMetadata"]["KeyId"]
        named = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
        named = named["KeyMetadata"]["KeyId"]
        label = str(uuid.uuid4())
        officer.create_alias(AliasName=f"alias/{label}", TargetKeyId=named)
        try:
            found = s.findObjects([(CKA_LABEL, label)])
            assert sorted(attrs(s, o, CKA_ID)[0] for o in found) == [named.encode()] * 2
            found = s.findObjects([(CKA_LABEL, bare)])
            assert sorted(attrs(s, o, CKA_ID)[0] for o in found) == [bare.encode()] * 2
        finally:
            officer.delete_alias(AliasName=f"alias/{label}")
            for k in (bare, named):
                officer.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)


def find_raw(s, template):
    """C_FindObjectsInit with a raw template: its code, and the handles C_FindObjects gives."""
    rv = s.lib.C_FindObjectsInit(s.session, raw_template(s, template))
    if rv != CKR_OK:
        return rv, []
    out = LowLevel.ckobjlist(16)
    check(s.lib.C_FindObjects(s.session, out), "C_FindObjects")
    check(s.lib.C_FindObjectsFinal(s.session), "C_FindObjectsFinal")
    return rv, [h.value() for h in out]


def test_a_label_no_alias_can_be_is_searched_without_hsmd(p11, server, user, keys):
    """A key's label is an alias name (letters, digits, "/_-:", at most 250 of them): a
    search by another label, not UTF-8 (which no JSON request can carry), with a space or too
    long, asks hsmd nothing and answers CKR_OK, finding the module's own objects that have it,
    such as a derived secret."""
    point = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    label = "shared secret \u00e9"
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ecdh"])
        k = s.deriveKey(priv, SECRET_TEMPLATE + [(CKA_LABEL, label)], ecdh(point))
        base = calls_by(server, user)
        for raw in (b"caf\xe9", b"\xff", b"caf\xc3", b"web tls", b"x" * 251):
            assert find_raw(s, [(CKA_LABEL, Raw(raw))]) == (CKR_OK, []), raw
        assert find_raw(s, [(CKA_LABEL, Raw(label.encode()))]) == (CKR_OK, [k.value()])
        # Only the search by an alias's label that ends this asks hsmd: for the alias, then
        # for its key.
        assert len(s.findObjects([(CKA_LABEL, "ecdh-key"), (CKA_CLASS, CKO_PRIVATE_KEY)])) == 1
        after = settled_calls(server, user, sum(base.values()))
        assert {op: after[op] - base[op] for op in base} == {
            "ListKeys": 0, "ListAliases": 1, "DescribeKey": 1, "GetPublicKey": 0,
            "DescribeKeys": 1}


# ---- 12. RSA-OAEP ----------------------------------------------------------------------------

def oaep(hash_ck, mgf):
    return PyKCS11.RSAOAEPMechanism(hash_ck, mgf)


def test_rsa_oaep_encrypt_and_decrypt(p11, user, officer, keys):
    """ENCRYPT_DECRYPT RSA keys: C_Encrypt is hsmd's Encrypt, C_Decrypt its Decrypt
    (RSAES_OAEP_SHA_1 / SHA_256), interchangeable with boto3 and with OAEP done
    locally with the public key; parameters hsmd's OAEP cannot honour are refused."""
    pk = public_key(officer, keys["rsa_enc"])
    with session(p11, user.pin) as s:
        (dec,) = find(s, CKO_PRIVATE_KEY, keys["rsa_enc"])
        (enc,) = find(s, CKO_PUBLIC_KEY, keys["rsa_enc"])
        for hash_ck, mgf, h, kms_alg in (
                (CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256, hashes.SHA256(), "RSAES_OAEP_SHA_256"),
                (CKM["CKM_SHA_1"], PyKCS11.CKG_MGF1_SHA1, hashes.SHA1(), "RSAES_OAEP_SHA_1")):
            m = oaep(hash_ck, mgf)
            secret = os.urandom(32)
            ct = bytes(s.encrypt(enc, secret, m))
            assert len(ct) == 256
            assert bytes(s.decrypt(dec, ct, m)) == secret
            # hsmd's own Decrypt opens what the module encrypted, and the reverse.
            assert user.kms.decrypt(KeyId=keys["rsa_enc"], CiphertextBlob=ct,
                                    EncryptionAlgorithm=kms_alg)["Plaintext"] == secret
            ct2 = user.kms.encrypt(KeyId=keys["rsa_enc"], Plaintext=b"from boto3",
                                   EncryptionAlgorithm=kms_alg)["CiphertextBlob"]
            assert bytes(s.decrypt(dec, ct2, m)) == b"from boto3"
            # OAEP done locally with the public key, as a relying party would.
            local = pk.encrypt(b"local", padding.OAEP(padding.MGF1(h), h, None))
            assert bytes(s.decrypt(dec, local, m)) == b"local"
        m = oaep(CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256)
        bad = bytearray(s.encrypt(enc, b"x" * 16, m))
        bad[100] ^= 1
        assert refused(s.decrypt, dec, bytes(bad), m) == PyKCS11.CKR_ENCRYPTED_DATA_INVALID
        assert refused(s.decrypt, dec, bytes(bad[:255]), m) == \
            PyKCS11.CKR_ENCRYPTED_DATA_LEN_RANGE
        assert refused(s.encrypt, enc, b"x" * 191, m) == PyKCS11.CKR_DATA_LEN_RANGE  # 256-2*32-2
        # An empty message: OAEP carries one, and one encrypted with the public key decrypts;
        # but hsmd's Encrypt, like AWS KMS's, takes 1 to 4096 bytes, so C_Encrypt refuses it.
        empty = pk.encrypt(b"", padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
        assert bytes(s.decrypt(dec, empty, m)) == b""
        c = ctypes.CDLL(MODULE)  # PyKCS11 passes no empty data: ctypes calls the module
        h, out, n = ctypes.c_ulong(s.session.value()), ctypes.create_string_buffer(256), \
            ctypes.c_ulong(256)
        check(s.lib.C_EncryptInit(s.session, m.to_native(), enc), "C_EncryptInit")
        assert c.C_Encrypt(h, None, ctypes.c_ulong(0), out, ctypes.byref(n)) == \
            PyKCS11.CKR_DATA_LEN_RANGE
        mixed = oaep(CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA1)
        assert refused(s.decrypt, dec, bytes(bad), mixed) == PyKCS11.CKR_MECHANISM_PARAM_INVALID
        labelled = PyKCS11.RSAOAEPMechanism(CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256, b"label")
        assert refused(s.encrypt, enc, b"x", labelled) == PyKCS11.CKR_MECHANISM_PARAM_INVALID
        # The pair decrypts only; signing keys do not decrypt.
        assert refused(s.sign, dec, b"x", Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS)) == \
            PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED
        (signer,) = find(s, CKO_PRIVATE_KEY, keys["rsa"])
        assert refused(s.decrypt, signer, bytes(bad), m) == PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED
        (ec_pub,) = find(s, CKO_PUBLIC_KEY, keys["ec"])
        assert refused(s.encrypt, ec_pub, b"x", m) == PyKCS11.CKR_KEY_TYPE_INCONSISTENT


# ---- 12b. AES-GCM ----------------------------------------------------------------------------

def parts_rv(s, encrypt, key, mech, chunks, out=None):
    """C_EncryptInit/C_DecryptInit, two Update calls per chunk, then Final; the first error.

    Each chunk's first Update call passes no output buffer (PyKCS11 passes NULL for an
    empty list): it asks how much output the chunk gives, and must take nothing.  The
    second passes a buffer of that size (at least one byte, so that it is not NULL)."""
    init, update, final = (
        (s.lib.C_EncryptInit, s.lib.C_EncryptUpdate, s.lib.C_EncryptFinal) if encrypt else
        (s.lib.C_DecryptInit, s.lib.C_DecryptUpdate, s.lib.C_DecryptFinal))
    rv = init(s.session, mech.to_native(), key)
    if rv != CKR_OK:
        return rv
    got = b""
    for chunk in chunks:
        piece = ckbytelist()
        rv = update(s.session, ckbytelist(chunk), piece)  # the length
        if rv != CKR_OK:
            return rv
        assert len(piece) == 0  # all the output comes with the Final call
        piece = ckbytelist([0])
        rv = update(s.session, ckbytelist(chunk), piece)  # the part
        if rv != CKR_OK:
            return rv
        got += bytes(piece)
    last = ckbytelist()
    rv = final(s.session, last)  # the length (the operation goes on), as PyKCS11 does
    if rv == CKR_OK:
        rv = final(s.session, last)  # the output
    if rv == CKR_OK and out is not None:
        out.append(got + bytes(last))
    return rv


def parts(s, encrypt, key, mech, chunks):
    out = []
    rv = parts_rv(s, encrypt, key, mech, chunks, out)
    assert rv == CKR_OK, hex(rv)
    return out[0]


def test_aes_gcm_encrypt_and_decrypt(p11, server, user, officer, keys):
    """CKM_AES_GCM with a symmetric key is hsmd's GcmEncrypt / GcmDecrypt: the IV is hsmd's,
    written into the caller's parameters; the output is standard AES-GCM (checked with
    imported material), older key versions still decrypt, and bad input is refused."""
    import base64
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from test_import import do_import
    material = os.urandom(32)
    byok = officer.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    do_import(officer, byok, material)
    with session(p11, user.pin) as s:
        (key,) = find(s, CKO_SECRET_KEY, byok)
        m = PyKCS11.AES_GCM_Mechanism(bytes(12), b"row=42", 128)
        ct = bytes(s.encrypt(key, b"account balance", m))
        iv = bytes(m._source_iv)
        assert len(ct) == len(b"account balance") + 16 and iv != bytes(12)
        assert AESGCM(material).decrypt(iv, ct, b"row=42") == b"account balance"
        # Each encryption draws its own IV.
        m2 = PyKCS11.AES_GCM_Mechanism(bytes(12), b"row=42", 128)
        s.encrypt(key, b"account balance", m2)
        assert bytes(m2._source_iv) not in (iv, bytes(12))
        # An IV of the caller's own is refused at C_EncryptInit: hsmd would not use it, and
        # PKCS#11 lets the caller free pIv once C_EncryptInit returned, so the module writes
        # hsmd's only where the caller asked for it (zeros) and keeps the buffer.
        own = PyKCS11.AES_GCM_Mechanism(os.urandom(12), b"row=42", 128)
        assert refused(s.encrypt, key, b"x", own) == PyKCS11.CKR_MECHANISM_PARAM_INVALID
        assert bytes(s.decrypt(key, ct, PyKCS11.AES_GCM_Mechanism(iv, b"row=42", 128))) == \
            b"account balance"
        nonce = os.urandom(12)
        sealed = AESGCM(material).encrypt(nonce, b"made elsewhere", None)
        assert bytes(s.decrypt(key, sealed, PyKCS11.AES_GCM_Mechanism(nonce, b"", 128))) == \
            b"made elsewhere"
        # Tampering, another IV or other additional data: CKR_ENCRYPTED_DATA_INVALID.
        for bad_ct, bad_iv, bad_aad in ((ct[:-1] + bytes([ct[-1] ^ 1]), iv, b"row=42"),
                                        (ct, nonce, b"row=42"), (ct, iv, b"row=43")):
            assert refused(s.decrypt, key, bad_ct,
                           PyKCS11.AES_GCM_Mechanism(bad_iv, bad_aad, 128)) == \
                PyKCS11.CKR_ENCRYPTED_DATA_INVALID
        assert refused(s.decrypt, key, ct[:15], PyKCS11.AES_GCM_Mechanism(iv, b"", 128)) == \
            PyKCS11.CKR_ENCRYPTED_DATA_LEN_RANGE
        # Parameters hsmd cannot honour: a short tag, an IV that is not 96 bits.
        for bad in (PyKCS11.AES_GCM_Mechanism(bytes(12), b"", 96),
                    PyKCS11.AES_GCM_Mechanism(bytes(16), b"", 128)):
            assert refused(s.encrypt, key, b"x", bad) == PyKCS11.CKR_MECHANISM_PARAM_INVALID
        # AES keys do not sign; other keys do not do AES-GCM.
        assert refused(s.sign, key, b"x", Mechanism(PyKCS11.CKM_SHA256_HMAC)) in (
            PyKCS11.CKR_KEY_TYPE_INCONSISTENT, PyKCS11.CKR_KEY_FUNCTION_NOT_PERMITTED)
        (mac,) = find(s, CKO_SECRET_KEY, keys["mac"])
        assert refused(s.encrypt, mac, b"x", PyKCS11.AES_GCM_Mechanism(bytes(12), b"", 128)) == \
            PyKCS11.CKR_KEY_TYPE_INCONSISTENT
        # A key hsmd made: what the module seals, hsmd's own GcmDecrypt opens, across rotation.
        (own,) = find(s, CKO_SECRET_KEY, keys["aes"])
        m = PyKCS11.AES_GCM_Mechanism(bytes(12), b"", 128)
        old = bytes(s.encrypt(own, b"before rotation", m))
        old_iv = bytes(m._source_iv)
        st, out = signed_call(server, "TrentService.RotateKeyOnDemand", {"KeyId": keys["aes"]})
        assert st == 200, out
        st, out = signed_call(server, "HsmdCipher.GcmDecrypt",
                              {"KeyId": keys["aes"], "Iv": base64.b64encode(old_iv).decode(),
                               "Ciphertext": base64.b64encode(old).decode()},
                              akid=user.akid, secret=user.pin.split(":", 1)[1])
        assert st == 200 and base64.b64decode(out["Plaintext"]) == b"before rotation", out
        assert bytes(s.decrypt(own, old, PyKCS11.AES_GCM_Mechanism(old_iv, b"", 128))) == \
            b"before rotation"
    # In parts: the Update calls gather, the Final call answers (decryption releases nothing
    # before the tag verified); RSA-OAEP has no parts.
    with session(p11, user.pin) as s:
        (key,) = find(s, CKO_SECRET_KEY, byok)
        m = PyKCS11.AES_GCM_Mechanism(bytes(12), b"hdr", 128)
        ct = parts(s, True, key, m, [b"first part, ", b"second part"])
        iv = bytes(m._source_iv)
        assert AESGCM(material).decrypt(iv, ct, b"hdr") == b"first part, second part"
        pt = parts(s, False, key, PyKCS11.AES_GCM_Mechanism(iv, b"hdr", 128),
                   [ct[:5], ct[5:20], ct[20:]])
        assert pt == b"first part, second part"
        bad = ct[:-1] + bytes([ct[-1] ^ 1])
        assert parts_rv(s, False, key, PyKCS11.AES_GCM_Mechanism(iv, b"hdr", 128),
                        [bad[:10], bad[10:]]) == PyKCS11.CKR_ENCRYPTED_DATA_INVALID
        assert parts_rv(s, True, key, PyKCS11.AES_GCM_Mechanism(bytes(12), b"", 128),
                        [bytes(40000), bytes(40000)]) == PyKCS11.CKR_DATA_LEN_RANGE
        (enc,) = find(s, CKO_PUBLIC_KEY, keys["rsa_enc"])
        assert parts_rv(s, True, enc, oaep(CKM["CKM_SHA256"], PyKCS11.CKG_MGF1_SHA256),
                        [b"x"]) == PyKCS11.CKR_OPERATION_NOT_INITIALIZED  # one part only
    recs = [r for r in audit_records(server.data_dir) if r.get("op") == "GcmEncrypt"]
    assert recs and all(r["principal"] == user.arn for r in recs)


# ---- 12a. a view of some keys -----------------------------------------------------------------

def test_keys_view(tmp_path, server, user, officer, keys):
    """HSM_PKCS11_KEYS: the token shows the keys named (by key id, key ARN or
    alias, each resolved at every listing) and no other; names of no key show
    nothing; unset, every key the user sees."""
    pin = ("--login", "--pin", user.pin, "-O")

    def ids(**settings):
        p = tool(server.endpoint, *pin, **settings)
        assert p.returncode == 0, p.stderr
        # (keys with an id of their own, made by other tests, have ids that are not text)
        return sorted(set(bytes.fromhex(line.split()[1]).decode(errors="replace")
                          for line in p.stdout.splitlines() if line.strip().startswith("ID:")))

    everything = ids()
    assert {keys["rsa"], keys["ec"], keys["mac"]} <= set(everything)
    arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{keys['ec']}"
    assert ids(keys=f"alias/web-tls,{arn},{keys['mac']}") == sorted(
        [keys["rsa"], keys["ec"], keys["mac"]])
    assert ids(keys=f"alias/no-such-key,{keys['aes']},,00000000-0000-4000-8000-000000000000") == \
        [keys["aes"]]
    # A name that is not UTF-8 cannot be sent (JSON carries none): the setting is refused
    # when the module is initialized, not at login as the caller's fault
    # (test_a_keys_setting_no_listing_can_use_stops_the_initialization).
    p = tool(server.endpoint, *pin, keys="alias/caf\udce9")  # the byte 0xe9, as the OS passes it
    assert p.returncode != 0 and "C_Initialize failed" in p.stderr, p.stderr
    assert "CKR_GENERAL_ERROR" in p.stderr and "HSM_PKCS11_KEYS is not UTF-8" in p.stderr
    # An alias is resolved at each listing: moved, it shows the key it names now.
    other = officer.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"]["KeyId"]
    officer.create_alias(AliasName="alias/view-test", TargetKeyId=keys["ec"])
    assert ids(keys="alias/view-test") == [keys["ec"]]
    officer.update_alias(AliasName="alias/view-test", TargetKeyId=other)
    assert ids(keys="alias/view-test") == [other]
    # A key found by CKA_ID (a search naming it) outside the view is not there.
    data = tmp_path / "data"
    data.write_bytes(MSG)
    for view, found in ((keys["ec"], False), (keys["rsa"], True)):
        p = tool(server.endpoint, "--login", "--pin", user.pin, "--sign", "-m", "SHA256-RSA-PKCS",
                 "--id", keys["rsa"].encode().hex(), "-i", str(data), "-o",
                 str(tmp_path / "sig"), keys=view)
        assert (p.returncode == 0) == found, (view, p.stdout, p.stderr)


INIT_CODE = r"""
import sys, PyKCS11
lib = PyKCS11.PyKCS11Lib()
try:
    lib.load(sys.argv[1])
    print("CKR_OK", len(lib.getSlotList()))
except PyKCS11.PyKCS11Error as e:
    print(PyKCS11.CKR.get(e.value, e.value))
"""


def test_a_keys_setting_no_listing_can_use_stops_the_initialization(tmp_path, server, user):
    """HSM_PKCS11_KEYS that is not UTF-8 (JSON, hence hsmd, takes no other text), longer than
    the module keeps, or naming a key by more than a KeyId's 2048 bytes (a name cut short
    would be another key's) is a configuration no listing can use: C_Initialize fails with
    CKR_GENERAL_ERROR and says why on stderr, as for HSM_PKCS11_TIMEOUT, instead of every
    login failing with CKR_ARGUMENTS_BAD, a code that blames the caller's arguments.  The
    longest settings it takes initialize, and a well-formed view still logs in."""
    script = tmp_path / "init_code.py"
    script.write_text(INIT_CODE)
    base = {k: v for k, v in os.environ.items() if not k.startswith("HSM_PKCS11_")}
    base["HSM_PKCS11_ENDPOINT"] = server.endpoint

    def init(keys):
        env = dict(base)
        env["HSM_PKCS11_KEYS"] = keys
        p = subprocess.run(["/usr/bin/python3", str(script), MODULE], env=env,
                           capture_output=True, text=True, timeout=60)
        return p.stdout.strip(), p.stderr

    for keys, why in (("alias/caf\udce9", "is not UTF-8"),
                      ("alias/ok,\udcff\udcfe", "is not UTF-8"),
                      ("alias/a," + "x" * 4090, "is longer than 4095 bytes"),
                      ("alias/a," + "k" * 2049, "names a key with more than 2048 bytes")):
        out, err = init(keys)
        assert out == "CKR_GENERAL_ERROR", (keys[:20], out, err)
        assert f"libhsm_pkcs11: HSM_PKCS11_KEYS {why}" in err, (keys[:20], err)
    for keys in ("alias/caf\u00e9", "k" * 2048 + ",alias/a", ",".join(["x" * 2047] * 2)):
        assert init(keys) == ("CKR_OK 1", ""), keys[:20]
    p = tool(server.endpoint, "--login", "--pin", user.pin, "-O", keys="alias/caf\u00e9")
    assert p.returncode == 0, p.stderr


VIEW_MAKER = r"""
import sys, PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
s = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
s.login(sys.argv[2])
def ids():
    return sorted({bytes(s.getAttributeValue(o, [PyKCS11.CKA_ID])[0]).decode()
                   for o in s.findObjects([])})
print(" ".join(ids()))
pub, priv = s.generateKeyPair(
    [(PyKCS11.CKA_EC_PARAMS, bytes.fromhex(sys.argv[3])), (PyKCS11.CKA_TOKEN, True),
     (PyKCS11.CKA_VERIFY, True)],
    [(PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_PRIVATE, True), (PyKCS11.CKA_SENSITIVE, True),
     (PyKCS11.CKA_SIGN, True), (PyKCS11.CKA_LABEL, sys.argv[4])],
    mecha=PyKCS11.MechanismECGENERATEKEYPAIR)
made = bytes(s.getAttributeValue(priv, [PyKCS11.CKA_ID])[0]).decode()
print(made)
print(" ".join(ids()))
s.logout()
s.login(sys.argv[2])
print(" ".join(ids()))
"""


def test_keys_view_shows_the_keys_it_makes(tmp_path, server, officer, keys):
    """Under HSM_PKCS11_KEYS, a key pair the application generates is answered with its
    handles, and stays in the token at later listings (a search, a new login) beside the
    keys the view names; another process's view does not name it."""
    script = tmp_path / "view_maker.py"
    script.write_text(VIEW_MAKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_PKCS11_")}
    env.update(HSM_PKCS11_ENDPOINT=server.endpoint, HSM_PKCS11_KEYS=keys["ec"])
    p = subprocess.run(["/usr/bin/python3", str(script), MODULE, f"{DEV_AKID}:{DEV_SECRET}",
                        P256_OID.hex(), "view-made"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    before, made, after, relogged = p.stdout.splitlines()
    try:
        assert before.split() == [keys["ec"]]
        assert officer.describe_key(KeyId="alias/view-made")["KeyMetadata"]["KeyId"] == made
        assert sorted(after.split()) == sorted([keys["ec"], made])
        assert relogged == after
        p = tool(server.endpoint, "--login", "--pin", f"{DEV_AKID}:{DEV_SECRET}", "-O",
                 keys=keys["ec"])
        assert p.returncode == 0 and made.encode().hex() not in p.stdout, p.stdout
    finally:
        officer.schedule_key_deletion(KeyId=made, PendingWindowInDays=7)


# ---- 12b. OpenSSL's pkcs11 engine ------------------------------------------------------------

ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"


def engine_env(tmp_path, server, pin, view):
    """An OPENSSL_CONF that loads OpenSSL's pkcs11 engine (libp11) on this module,
    as nginx or any OpenSSL application is configured to use an HSM key; the
    token shows the keys of `view` alone (HSM_PKCS11_KEYS): libp11 0.4.12 gives
    up on a token that has any key type it does not know, such as Ed25519."""
    assert os.path.exists(ENGINE), f"{ENGINE} missing: run `make deps` (libengine-pkcs11-openssl)"
    conf = tmp_path / "openssl-pkcs11.cnf"
    conf.write_text("openssl_conf = init\n[init]\nengines = engines\n[engines]\n"
                    "pkcs11 = pkcs11\n[pkcs11]\nengine_id = pkcs11\n"
                    f"dynamic_path = {ENGINE}\nMODULE_PATH = {MODULE}\nPIN = {pin}\ninit = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_PKCS11_")}
    env.update(OPENSSL_CONF=str(conf), HSM_PKCS11_ENDPOINT=server.endpoint,
               HSM_PKCS11_KEYS=view)
    return env


def ossl(args, env=None, **kw):
    env = env if env is not None else {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    return subprocess.run(["openssl"] + args, env=env, capture_output=True, text=True,
                          timeout=120, **kw)


def uri_of(key_id):
    return "pkcs11:id=" + "".join(f"%{b:02x}" for b in key_id.encode()) + ";type=private"


def test_openssl_engine_certificates_and_tls(tmp_path, server, user, officer, keys):
    """OpenSSL's pkcs11 engine loads hsmd's keys through this module: `openssl req`
    makes self-signed certificates with the RSA key (by label) and the P-256 key
    (by id), whose public keys are hsmd's; `openssl s_server` serves TLS 1.3 and
    1.2 with them, and `openssl s_client` verifies the handshakes; every
    signature is a Sign of the PIN's user in the audit trail."""
    officer.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")  # see engine_env
    env = engine_env(tmp_path, server, user.pin,
                     f"alias/web-tls,arn:aws:kms:{REGION}:{ACCOUNT}:key/{keys['ec']}")
    before = sum(r.get("op") == "Sign" and r.get("principal") == user.arn
                 for r in audit_records(server.data_dir))
    certs = {}
    for name, key, uri in (("rsa", keys["rsa"], "pkcs11:object=web-tls;type=private"),
                           ("ec", keys["ec"], uri_of(keys["ec"]))):
        cert = tmp_path / f"{name}.pem"
        p = ossl(["req", "-new", "-x509", "-engine", "pkcs11", "-keyform", "engine", "-key", uri,
                  "-subj", f"/CN=hsmd-{name}", "-days", "1", "-sha256", "-out", str(cert)], env)
        assert p.returncode == 0, (name, p.stderr)
        assert ossl(["verify", "-CAfile", str(cert), str(cert)]).returncode == 0, name
        pub = ossl(["x509", "-in", str(cert), "-pubkey", "-noout"]).stdout.encode()
        assert serialization.load_pem_public_key(pub).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == \
            public_key(officer, key).public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        certs[name] = (cert, uri)
    handshakes = 0
    for name, versions in (("rsa", ("-tls1_3", "-tls1_2")), ("ec", ("-tls1_3",))):
        cert, uri = certs[name]
        # Port 0: s_server binds a free port itself and names it once it listens ("ACCEPT
        # 127.0.0.1:PORT"); a port chosen before it starts may be taken before it binds it
        # (it loads the engine and the key first), and the handshakes would go elsewhere.
        srv = subprocess.Popen(["openssl", "s_server", "-engine", "pkcs11", "-keyform", "engine",
                                "-key", uri, "-cert", str(cert), "-accept", "127.0.0.1:0",
                                "-www"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            stuck = threading.Timer(30, srv.kill)  # the bound the wait for it had
            stuck.start()
            port = None
            try:
                for line in srv.stdout:  # until it listens, or ends
                    if line.startswith("ACCEPT "):
                        port = int(line.rsplit(":", 1)[1])
                        break
            finally:
                stuck.cancel()
            assert port is not None, (name, srv.poll(), srv.stderr.read() if srv.poll() else "")
            for v in versions:
                p = ossl(["s_client", "-connect", f"127.0.0.1:{port}", v, "-CAfile", str(cert),
                          "-verify_return_error", "-brief"], input="")
                assert p.returncode == 0 and "Verification: OK" in p.stderr, (name, v, p.stderr)
                handshakes += 1
        finally:
            srv.terminate()
            srv.wait(timeout=30)
    deadline = time.time() + 5
    signs = 0
    while time.time() < deadline and signs < before + 2 + handshakes:
        signs = sum(r.get("op") == "Sign" and r.get("principal") == user.arn
                    for r in audit_records(server.data_dir))
        time.sleep(0.1)
    assert signs >= before + 2 + handshakes  # two certificates, one signature per handshake


# ---- 12c. OpenSSH ------------------------------------------------------------------------------

def test_ssh_agent_signs_with_hsmd_keys(tmp_path, server, user, officer, keys):
    """ssh-agent loads the module (ssh-add -s, the PIN from SSH_ASKPASS), lists
    hsmd's RSA and P-256 keys as OpenSSH keys equal to GetPublicKey's, and signs
    with them: `ssh-keygen -Y sign` through the agent, `-Y verify` checks."""
    module = os.path.realpath(MODULE)
    askpass = tmp_path / "askpass"
    askpass.write_text('#!/bin/sh\nprintf "%s\\n" "$HSM_TEST_PIN"\n')
    askpass.chmod(0o700)
    sock_dir = tempfile.mkdtemp(prefix="hsmd-ssh-", dir="/tmp")  # a socket path is short
    sock = Path(sock_dir) / "agent.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSM_PKCS11_", "SSH_"))}
    # OpenSSH gives up on a token with a key on a curve it does not know (secp256k1):
    # the agent's token shows its two keys alone.
    officer.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")
    env.update(HSM_PKCS11_ENDPOINT=server.endpoint, SSH_AUTH_SOCK=str(sock),
               SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0",
               HSM_TEST_PIN=user.pin, HSM_PKCS11_KEYS=f"{keys['rsa']},{keys['ec']}")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock), "-P", module], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.05)
        p = subprocess.run(["ssh-add", "-s", module], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        listed = subprocess.run(["ssh-add", "-L"], env=env, capture_output=True, text=True,
                                timeout=60).stdout.splitlines()
        assert len(listed) == 2, listed
        msg = tmp_path / "msg"
        msg.write_bytes(MSG)
        for kid in (keys["rsa"], keys["ec"]):
            want = public_key(officer, kid).public_bytes(serialization.Encoding.OpenSSH,
                                                         serialization.PublicFormat.OpenSSH)
            (line,) = [x for x in listed if x.split(" ")[1] == want.decode().split(" ")[1]]
            pub = tmp_path / f"{kid}.pub"
            pub.write_text(line + "\n")
            sig = tmp_path / "msg.sig"
            sig.unlink(missing_ok=True)
            p = subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(pub), "-n", "file",
                                str(msg)], env=env, capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, (kid, p.stderr)
            allowed = tmp_path / "allowed"
            allowed.write_text("app " + " ".join(line.split(" ")[:2]) + "\n")
            with open(msg, "rb") as f:
                v = subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "app",
                                    "-n", "file", "-s", str(sig)], stdin=f, capture_output=True,
                                   text=True, timeout=60)
            assert v.returncode == 0 and "Good" in v.stdout, (kid, v.stdout, v.stderr)
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        shutil.rmtree(sock_dir, ignore_errors=True)


# ---- 12d. GnuTLS -------------------------------------------------------------------------------

def test_gnutls_p11tool(server, user, keys):
    """GnuTLS's p11tool lists the private keys and, with --test-sign, signs with
    the RSA and the P-256 key and checks each signature against the key's
    public values and the token's public key object."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_PKCS11_")}
    env.update(HSM_PKCS11_ENDPOINT=server.endpoint, GNUTLS_PIN=user.pin)

    def p11tool(*args):
        return subprocess.run(["p11tool", "--provider", MODULE, "--login", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    p = p11tool("--list-privkeys")
    assert p.returncode == 0, p.stderr
    for kid in (keys["rsa"], keys["ec"]):
        assert "id=" + "".join(f"%{b:02X}" for b in kid.encode()) in p.stdout, p.stdout
    for kid, alg in ((keys["rsa"], "RSA-SHA256"), (keys["ec"], "ECDSA-SHA256")):
        p = p11tool("--test-sign", "pkcs11:token=hsmd;" + uri_of(kid)[len("pkcs11:"):])
        out = p.stdout + p.stderr
        assert p.returncode == 0, out
        assert f"Signing using {alg}... ok" in out and \
            "Verifying against public key in the token... ok" in out, out


# ---- 12c. certificates are not keys; token and mechanism information ----------------------

def self_signed_der():
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a key")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def test_a_certificate_is_no_key_handle(p11, user, keys):
    """A certificate's handle given where a key's is expected is CKR_KEY_HANDLE_INVALID (not
    a key whose function is not permitted)."""
    with session(p11, user.pin) as s:
        cert = s.createObject([(CKA_CLASS, PyKCS11.CKO_CERTIFICATE),
                               (PyKCS11.CKA_CERTIFICATE_TYPE, PyKCS11.CKC_X_509),
                               (CKA_TOKEN, False), (CKA_VALUE, self_signed_der())])
        gcm = PyKCS11.AES_GCM_Mechanism(bytes(12), b"", 128)
        for init, mech in ((s.lib.C_SignInit, Mechanism(PyKCS11.CKM_ECDSA_SHA256)),
                           (s.lib.C_VerifyInit, Mechanism(PyKCS11.CKM_ECDSA_SHA256)),
                           (s.lib.C_EncryptInit, gcm),
                           (s.lib.C_DecryptInit, oaep(PyKCS11.CKM_SHA256, PyKCS11.CKG_MGF1_SHA256))):
            assert init(s.session, mech.to_native(), cert) == PyKCS11.CKR_KEY_HANDLE_INVALID, init
        ckr(PyKCS11.CKR_KEY_HANDLE_INVALID, s.deriveKey, cert, SECRET_TEMPLATE,
            ecdh(bytes.fromhex("04") + bytes(96)))
        check(s.lib.C_DigestInit(s.session, Mechanism(CKM["CKM_SHA256"]).to_native()),
              "C_DigestInit")
        assert s.lib.C_DigestKey(s.session, cert) == PyKCS11.CKR_KEY_HANDLE_INVALID


def test_token_counts_rw_sessions_and_mechanisms_say_hw(p11):
    """C_GetTokenInfo counts the R/W sessions as it counts the sessions; every mechanism hsmd
    performs has CKF_HW (so clients such as pkcs11-tool --test use them), the digests the
    module computes itself do not."""
    rw = p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    ro = [p11.openSession(0, PyKCS11.CKF_SERIAL_SESSION) for _ in range(2)]
    try:
        info = p11.getTokenInfo(0)
        assert (info.ulSessionCount, info.ulRwSessionCount) == (3, 1)
    finally:
        for x in [rw] + ro:
            x.closeSession()
    info = p11.getTokenInfo(0)
    assert (info.ulSessionCount, info.ulRwSessionCount) == (0, 0)
    digests = {CKM[n] for n in ("CKM_SHA_1", "CKM_SHA224", "CKM_SHA256", "CKM_SHA384",
                                "CKM_SHA512")}
    for m in MECHANISMS:
        hw = bool(p11.getMechanismInfo(0, CKM[m]).flags & PyKCS11.CKF_HW)  # takes a name
        assert hw == (m not in digests), CKM[m]


def test_pkcs11_tool_test(server, user, keys):
    """pkcs11-tool --test with an RSA and an EC key: random numbers, digests, and the
    signature tests (run since the mechanisms say CKF_HW) pass in parts and in one, until its
    CKM_RSA_PKCS signature of a SHA-1 DigestInfo, which hsmd does not make (no SHA-1
    signatures): that one case stops it."""
    p = tool(server.endpoint, "--login", "--pin", user.pin, "--test",
             keys=f"{keys['rsa']},{keys['ec']}")
    out = p.stdout
    assert "C_GenerateRandom" in out and "seems to be OK" in out, out
    assert "all 4 digest functions seem to work" in out, out
    assert "Signatures (currently only for RSA)" in out, out
    assert "all 4 signature functions seem to work" in out, out
    assert "ERR" not in out, out
    assert out.rstrip().endswith("RSA-PKCS:"), out
    assert "C_Sign failed: rv = CKR_DATA_INVALID" in p.stderr, p.stderr


# ---- 13. threads -----------------------------------------------------------------------------

def c_program(tmp_path, name, libs=()):
    """Compiles tests/integration/<name>.c, a client of the module."""
    exe = tmp_path / name
    src = os.path.join(os.path.dirname(__file__), name + ".c")
    cc = subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-I/usr/include/p11-kit-1", "-o",
                         str(exe), src, "-ldl", "-lpthread", *libs], capture_output=True,
                        text=True, timeout=120)
    assert cc.returncode == 0, cc.stderr
    return exe


def threads_program(tmp_path):
    return c_program(tmp_path, "pkcs11_threads")


def test_gcm_parts_end_with_final_not_a_one_part_call(tmp_path, server, user, keys):
    """Parts given to C_EncryptUpdate / C_DecryptUpdate end with the Final call: a one-part
    C_Encrypt / C_Decrypt after them is refused (CKR_OPERATION_NOT_INITIALIZED) and ends
    the operation, rather than silently dropping the parts given."""
    exe = c_program(tmp_path, "pkcs11_gcm_parts")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin, keys["aes"]], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["encrypt", "0x91", "after", "0x91", "decrypt", "0x91"], p.stdout


def test_calls_end_their_operation_on_bad_arguments(tmp_path, server, user, keys):
    """C_Sign, C_Encrypt, C_Decrypt, C_Digest and their Final calls end the active operation
    on any answer but a length query's CKR_OK and CKR_BUFFER_TOO_SMALL; C_Verify and
    C_VerifyFinal always; Update calls on any error (PKCS#11 v2.40 5.8-5.12). Bad arguments
    (a NULL length pointer, NULL data with a length) are such answers: the operation they
    leave is ended, not kept for a next call."""
    exe = c_program(tmp_path, "pkcs11_op_ends")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin, keys["ec"], keys["aes"]], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = {line.split()[0]: tuple(line.split()[1:]) for line in p.stdout.splitlines()}
    going_on = {"sign_query": "0x0", "sign_short": "0x150", "encrypt_query": "0x0",
                "digest_query": "0x0"}
    assert len(got) == 23, p.stdout
    for case, (rv, state) in got.items():
        if case in going_on:
            assert (rv, state) == (going_on[case], "active"), case
        else:
            assert (rv, state) == ("0x7", "ended"), case  # CKR_ARGUMENTS_BAD


def test_answers_only_a_c_caller_meets(tmp_path, server, user, keys):
    """A decryption into too small a buffer answers CKR_BUFFER_TOO_SMALL with the exact
    length and goes on (PKCS#11 v2.40 5.2); OAEP parameters with a label's length and no
    label (pSourceData NULL) are CKR_MECHANISM_PARAM_INVALID, not taken for no label; a
    signature of the wrong length is CKR_SIGNATURE_LEN_RANGE; C_GetAttributeValue failing
    in two ways answers the same code whatever the order (CKR_ATTRIBUTE_SENSITIVE, then
    CKR_ATTRIBUTE_TYPE_INVALID, then CKR_BUFFER_TOO_SMALL), with every attribute answered;
    objects, views of hsmd's keys, are not modified, copied, wrapped or sized; functions the
    token does not offer say so."""
    exe = c_program(tmp_path, "pkcs11_edges")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin, keys["rsa_enc"], keys["ec"]], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = {line.split()[0]: " ".join(line.split()[1:]) for line in p.stdout.splitlines()}
    assert got == {
        "decrypt_short": "0x150 20",                 # CKR_BUFFER_TOO_SMALL, the exact length
        "decrypt_again": "0x0 20 same ended",
        "decrypt_wrong_length": "0x41 ended",        # CKR_ENCRYPTED_DATA_LEN_RANGE
        "oaep_label_length_only_encrypt": "0x71",    # CKR_MECHANISM_PARAM_INVALID
        "oaep_label_length_only_decrypt": "0x71",
        "verify_short_signature": "0xc1 ended",      # CKR_SIGNATURE_LEN_RANGE
        "verify_zero_signature": "0xc0 ended",       # CKR_SIGNATURE_INVALID
        "verify_long_signature": "0xc1",
        # CKR_ATTRIBUTE_SENSITIVE before CKR_ATTRIBUTE_TYPE_INVALID before CKR_BUFFER_TOO_SMALL
        "attributes_sensitive_invalid": "0x11 unavailable unavailable class",
        "attributes_invalid_sensitive": "0x11 unavailable unavailable class",
        "attributes_sensitive_small": "0x11 unavailable unavailable class",
        "attributes_small_sensitive": "0x11 unavailable unavailable class",
        "attributes_invalid_small": "0x12 unavailable unavailable class",
        "attributes_small_invalid": "0x12 unavailable unavailable class",
        "set_attribute": "0x1b",                     # CKR_ACTION_PROHIBITED
        "set_attribute_bad_handle": "0x82",          # CKR_OBJECT_HANDLE_INVALID
        "object_size": "0x0 unavailable",
        "object_size_bad_handle": "0x82",
        "object_size_no_out": "0x7",                 # CKR_ARGUMENTS_BAD
        "copy_object": "0x54",                       # CKR_FUNCTION_NOT_SUPPORTED
        "wrap_key": "0x54",
        "unwrap_key": "0x54",
        "get_operation_state": "0x54",
        "set_pin": "0x54",
        "function_status": "0x51",                   # CKR_FUNCTION_NOT_PARALLEL
        "cancel_function": "0x51",
        "wait_for_slot_event": "0x8",                # CKR_NO_EVENT: the slot never changes
        "wait_for_slot_event_blocking": "0x54",      # no wait for an event that never comes
    }, p.stdout


def test_initialization_and_the_session_handle_come_before_the_arguments(tmp_path, server,
                                                                          user):
    """A call both made on no valid session and given NULL where it needs a pointer answers
    CKR_CRYPTOKI_NOT_INITIALIZED before C_Initialize and CKR_SESSION_HANDLE_INVALID after
    it, not CKR_ARGUMENTS_BAD: the codes of PKCS#11 v2.40 5.1.2 come before 5.1.6's
    (5.1.7).  With a valid session the same call is CKR_ARGUMENTS_BAD.  The functions the
    token does not offer answer the same two codes first, and only then say so
    (CKR_FUNCTION_NOT_SUPPORTED, or CKR_FUNCTION_NOT_PARALLEL for the legacy functions of
    parallel sessions)."""
    exe = c_program(tmp_path, "pkcs11_precedence")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    got = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()}
    not_offered = {"C_InitPIN", "C_SetPIN", "C_GetOperationState", "C_SetOperationState",
                   "C_CopyObject", "C_SignRecoverInit", "C_SignRecover", "C_VerifyRecoverInit",
                   "C_VerifyRecover", "C_DigestEncryptUpdate", "C_DecryptDigestUpdate",
                   "C_SignEncryptUpdate", "C_DecryptVerifyUpdate", "C_WrapKey", "C_UnwrapKey"}
    not_parallel = {"C_GetFunctionStatus", "C_CancelFunction"}
    sessionless = {"C_InitToken", "C_WaitForSlotEvent"}  # no handle to be wrong
    assert len(got) == 13 + len(not_offered | not_parallel | sessionless), p.stdout
    for name, codes in got.items():
        # CKR_CRYPTOKI_NOT_INITIALIZED, CKR_SESSION_HANDLE_INVALID, then with a good handle
        # CKR_ARGUMENTS_BAD, CKR_FUNCTION_NOT_SUPPORTED or CKR_FUNCTION_NOT_PARALLEL
        last = "0x54" if name in not_offered | sessionless else \
            "0x51" if name in not_parallel else "0x7"
        bad = "-" if name in sessionless else "0xb3"
        assert codes == ["0x190", bad, last], (name, codes)


def test_a_logout_ends_a_long_random_draw_in_another_thread(tmp_path, server, user):
    """C_GenerateRandom asks for its bytes a chunk at a time and lets the module's lock go
    meanwhile: a C_Logout from another thread wipes the credentials, and the draw must end
    with CKR_USER_NOT_LOGGED_IN, not go on without them (it aborted the application)."""
    exe = c_program(tmp_path, "pkcs11_logout_race")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, (p.returncode, p.stderr)
    # Ended by the logout (0x101), or done before it came on a fast machine (0x0).
    assert p.stdout.strip() in ("random 0x101", "random 0x0"), p.stdout + p.stderr


class HoldingProxy:
    """A loopback TCP proxy to port that holds back, for `hold` seconds, each chunk a
    client sends that carries `marker` (one request of the module's, on its own
    connection), and forwards everything else at once."""

    def __init__(self, port, marker, hold):
        import socket
        import threading
        self.port, self.marker, self.hold = port, marker, hold
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                cli, _ = self.listener.accept()
            except OSError:
                return
            srv = socket.create_connection(("127.0.0.1", self.port))
            self.socks += [cli, srv]
            threading.Thread(target=self._pump, args=(cli, srv, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(srv, cli, False), daemon=True).start()

    def _pump(self, src, dst, holding):
        try:
            while chunk := src.recv(65536):
                if holding and self.marker in chunk:
                    time.sleep(self.hold)
                dst.sendall(chunk)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.close()
            except OSError:
                pass

    def close(self):
        self.listener.close()
        for sock in self.socks:
            try:
                sock.close()
            except OSError:
                pass


def test_a_late_refusal_ends_its_own_login_not_the_next(tmp_path, server):
    """An answer refusing a login's credentials (its access key revoked) ends that login
    (CKR_USER_NOT_LOGGED_IN, PKCS#11's C_Login answers being the refusal's). When it comes
    back after another thread logged out and in again with other credentials, it ends only
    the call it answers: the new login stays, and its calls are served."""
    akid_a, secret_a = new_user(server, "p11-late", ["crypto-user"])
    b = admin(server, "CreateAccessKey", {"UserName": "p11-late"})
    exe = c_program(tmp_path, "pkcs11_late_refusal")
    proxy = HoldingProxy(int(server.endpoint.rsplit(":", 1)[1]),
                         b"TrentService.GenerateRandom", 1.5)
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=proxy.endpoint)
    p = subprocess.Popen([str(exe), MODULE, f"{akid_a}:{secret_a}",
                          f"{b['AccessKeyId']}:{b['SecretAccessKey']}"], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == "ready\n", p.stderr.read()
        admin(server, "RevokeAccessKey", {"AccessKeyId": akid_a})
        out, err = p.communicate("go\n", timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        proxy.close()
    assert p.returncode == 0, (p.returncode, err)
    # The held draw was refused (the key revoked), as a call whose login ended...
    # ...but the login that ended was the revoked key's: the new one is still in.
    assert out.split("\n")[:3] == ["random 0x101", "state 1", "after 0x0"], out + err


def answers_left_in_the_application(exe, env, pin, key):
    """Runs pkcs11_wipe (a C_Decrypt and a C_GenerateRandom, the application's own copies
    wiped) and searches its writable memory for the plaintext and the random bytes, raw
    or as the base64 they travel in: once with the session open, once after C_Finalize.
    Returns what was found, by label."""
    from test_memory import forms, traces
    p = subprocess.Popen([str(exe), MODULE, pin, key], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    found = {}
    try:
        got = {}
        for line in p.stdout:
            if line.strip() == "ready":
                break
            label, value = line.split()
            got[label] = bytes.fromhex(value)
        assert set(got) == {"plaintext", "random"}, (got, p.stderr.read())
        canaries = {}
        canaries.update(forms("plaintext", got["plaintext"]))
        canaries.update(forms("random bytes", got["random"]))
        # The positive control: the PIN is in the application's memory (its argv, and
        # the module's copy while logged in), so a scan that cannot read it fails here.
        control = {"control": pin.split(":", 1)[1].encode()}
        assert "control" in traces(p.pid, control), "the scan cannot read it"
        for label, where in traces(p.pid, canaries).items():
            found[f"{label}, logged in"] = where
        p.stdin.write("done\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "finalized", p.stderr.read()
        assert "control" in traces(p.pid, control), "the scan cannot read it"
        for label, where in traces(p.pid, canaries).items():
            found[f"{label}, after C_Finalize"] = where
        p.stdin.write("exit\n")
        p.stdin.flush()
        assert p.wait(timeout=30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_plaintexts_and_random_bytes_do_not_stay_in_the_application(tmp_path, server, user,
                                                                    keys):
    """The module runs inside the application, whose freed memory may reach its core
    dumps.  After a C_Decrypt (AES-GCM) and a C_GenerateRandom, and the application's
    own copies wiped, neither the plaintext nor the random bytes are anywhere in the
    application's writable memory, raw or as the base64 they travel in, while it is
    logged in or after C_Finalize."""
    exe = c_program(tmp_path, "pkcs11_wipe")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    found = answers_left_in_the_application(exe, env, user.pin, keys["aes"])
    assert not found, f"left in the application's memory: {found}"


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's memory needs root")
def test_answers_over_tls_do_not_stay_in_the_application(tmp_path):
    """Over HTTPS the answers pass through OpenSSL's record buffers inside the
    application too: the module has OpenSSL wipe each record's plaintext once read
    (SSL_OP_CLEANSE_PLAINTEXT), so the last answer (the random bytes) is not left in
    the application's heap, in a buffer still held or in one freed by C_Finalize.
    Not yet covered: while logged in, a copy of the last record can stay in dead
    stack below the module's frames, until the application's next calls overwrite
    it (it is gone after C_Finalize)."""
    server, pki = dev_over_https(tmp_path)
    try:
        kid = client(server).create_key()["KeyMetadata"]["KeyId"]
        exe = c_program(tmp_path, "pkcs11_wipe")
        env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint,
                   HSM_PKCS11_CA_FILE=pki["ca.pem"])
        found = answers_left_in_the_application(exe, env, f"{DEV_AKID}:{DEV_SECRET}", kid)
        found = {label: [w for w in where if w[0] != "[stack]" or "C_Finalize" in label]
                 for label, where in found.items()}
        found = {label: where for label, where in found.items() if where}
        assert not found, f"left in the application's memory: {found}"
    finally:
        server.cleanup()


def test_threads_sign_at_once(tmp_path, server, user, officer, keys):
    """Eight threads, each in its own session, sign at once through the module
    (which lets its lock go while hsmd answers, each request on a connection of
    its own): every one of the 400 signatures verifies for its own message."""
    exe = threads_program(tmp_path)
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin, keys["ec"], "8", "50"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr)
    lines = p.stdout.splitlines()
    assert lines[-1].startswith("rate ")
    pk = public_key(officer, keys["ec"])
    seen = set()
    for line in lines[:-1]:
        msg, sig = line.split(" ")
        sig = bytes.fromhex(sig)
        assert len(sig) == 64
        der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                         int.from_bytes(sig[32:], "big"))
        pk.verify(der, msg.encode(), ec.ECDSA(hashes.SHA256()))
        seen.add(msg)
    assert seen == {f"thread-{t}-message-{i}" for t in range(8) for i in range(50)}


def test_threads_derive_at_once(tmp_path, server, user, officer, keys):
    """Eight threads derive at once (the module lets its lock go while hsmd
    answers), each making, reading and destroying session objects while the
    others add theirs: all 240 secrets are the peer's own ECDH secret."""
    exe = threads_program(tmp_path)
    theirs = ec.generate_private_key(ec.SECP384R1())
    expected = theirs.exchange(ec.ECDH(), public_key(officer, keys["ecdh"]))
    point = theirs.public_key().public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin, keys["ecdh"], "8", "30", point.hex()],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr)
    lines = p.stdout.splitlines()[:-1]
    assert sorted(line.split(" ")[0] for line in lines) == sorted(
        f"{t}-{i}" for t in range(8) for i in range(30))
    assert {line.split(" ")[1] for line in lines} == {expected.hex()}


# ---- 14. Ed25519 -----------------------------------------------------------------------------

ED25519_OID = bytes.fromhex("06032b6570")


def test_ed25519(p11, user, officer):
    """ECC_NIST_EDWARDS25519 keys as CKK_EC_EDWARDS objects, CKM_EDDSA (PureEdDSA
    over the message, as hsmd signs), and CKM_EC_EDWARDS_KEY_PAIR_GEN."""
    kid = officer.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")[
        "KeyMetadata"]["KeyId"]
    pk = public_key(officer, kid)
    raw = pk.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    m = Mechanism(CKM["CKM_EDDSA"])
    with session(p11, user.pin) as s:
        (priv,) = find(s, CKO_PRIVATE_KEY, kid)
        (pub,) = find(s, CKO_PUBLIC_KEY, kid)
        assert attrs(s, pub, CKA_KEY_TYPE, CKA_EC_PARAMS, CKA_EC_POINT) == [
            PyKCS11.CKK_EC_EDWARDS, ED25519_OID, b"\x04\x20" + raw]
        assert attrs(s, priv, CKA_SIGN, CKA_SENSITIVE, CKA_EXTRACTABLE) == [True, True, False]
        for msg in (b"an EdDSA-signed token", MSG * 60):
            sig = sign(s, priv, m, msg)
            assert len(sig) == 64
            pk.verify(sig, msg)  # raises if not valid
            assert s.verify(pub, msg, ckbytelist(sig), m) is True
        bad = bytearray(sign(s, priv, m, b"x"))
        bad[5] ^= 1
        assert s.verify(pub, b"x", ckbytelist(bytes(bad)), m) is False  # CKR_SIGNATURE_INVALID
        assert refused(s.sign, priv, b"x" * 4097, m) == PyKCS11.CKR_DATA_LEN_RANGE
        assert refused(s.sign, priv, b"x", Mechanism(PyKCS11.CKM_ECDSA_SHA256)) == \
            PyKCS11.CKR_KEY_TYPE_INCONSISTENT
        # A parameter length without parameters (pParameter NULL) is no "no parameter".
        lengthy = Mechanism(CKM["CKM_EDDSA"]).to_native()
        lengthy.ulParameterLen = 24
        assert s.lib.C_SignInit(s.session, lengthy, priv) == PyKCS11.CKR_MECHANISM_PARAM_INVALID
        assert s.lib.C_VerifyInit(s.session, lengthy, pub) == PyKCS11.CKR_MECHANISM_PARAM_INVALID
        assert len(sign(s, priv, m, b"no operation was left active")) == 64

    # Key generation: the OID, or the curve's name as PKCS#11 v3.0 also writes it.
    with session(p11, DEV_AKID + ":" + DEV_SECRET) as s:
        made = []
        for params in (ED25519_OID, bytes([0x13, 0x0c]) + b"edwards25519"):
            pubk, privk = s.generateKeyPair(
                [(CKA_TOKEN, True), (CKA_EC_PARAMS, params)], [(CKA_TOKEN, True)],
                mecha=Mechanism(CKM["CKM_EC_EDWARDS_KEY_PAIR_GEN"]))
            new = attrs(s, privk, CKA_ID)[0].decode()
            md = officer.describe_key(KeyId=new)["KeyMetadata"]
            assert (md["KeySpec"], md["KeyUsage"]) == ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
            sig = sign(s, privk, m, b"made through PKCS#11")
            public_key(officer, new).verify(sig, b"made through PKCS#11")
            made.append(new)
        with pytest.raises(PyKCS11.PyKCS11Error) as e:  # an Edwards curve is not for EC_KEY_PAIR_GEN
            s.generateKeyPair([(CKA_TOKEN, True), (CKA_EC_PARAMS, ED25519_OID)],
                              [(CKA_TOKEN, True)], mecha=Mechanism(CKM["CKM_EC_KEY_PAIR_GEN"]))
        assert e.value.value == PyKCS11.CKR_TEMPLATE_INCONSISTENT
        for k in made:
            officer.schedule_key_deletion(KeyId=k, PendingWindowInDays=7)


def test_fork_while_another_thread_is_in_the_module(tmp_path, server, user):
    """A child forked while another thread waits on hsmd inside the module starts the module
    afresh instead of waiting forever for a lock the parent's thread held at fork."""
    exe = c_program(tmp_path, "pkcs11_fork")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin, "20"], env=env, capture_output=True,
                       text=True, timeout=600)
    assert (p.returncode, p.stdout.strip()) == (0, "ok 20"), (p.stdout, p.stderr)


TIMEOUT_CLIENT = """
import os, signal, sys, time, PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
s = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
s.login(sys.argv[2])
pid = int(sys.argv[3])


def stopped():
    # Every thread: one finishing a disk write stops only when the write returns.
    tasks = os.listdir(f"/proc/{pid}/task")
    return all(open(f"/proc/{pid}/task/{t}/stat").read().rsplit(")", 1)[1].split()[0] == "T"
               for t in tasks)


os.kill(pid, signal.SIGSTOP)  # hsmd takes the request in, and answers nothing
deadline = time.monotonic() + 10
while not stopped() and time.monotonic() < deadline:
    time.sleep(0.01)
try:
    if not stopped():
        raise SystemExit("hsmd did not stop")
    s.generateKey([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY), (PyKCS11.CKA_TOKEN, True),
                   (PyKCS11.CKA_VALUE_LEN, 32)],
                  PyKCS11.Mechanism(PyKCS11.CKM_AES_KEY_GEN))
    print("made, hsmd", "stopped" if stopped() else "running")  # what a failure says
except PyKCS11.PyKCS11Error as e:
    print("error", PyKCS11.CKR.get(e.value, e.value))
finally:
    os.kill(pid, signal.SIGCONT)
"""


def test_a_call_that_timed_out_is_not_sent_again(tmp_path, server, officer):
    """HSM_PKCS11_TIMEOUT bounds the wait for hsmd; a call whose answer did not come in time is
    not sent a second time, since hsmd may be making the change: one CreateKey, one key."""
    def keys_now():
        return {k["KeyId"] for k in officer.list_keys(Limit=1000)["Keys"]}
    before = keys_now()
    script = tmp_path / "timeout_client.py"
    script.write_text(TIMEOUT_CLIENT)
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint, HSM_PKCS11_TIMEOUT="2")
    p = subprocess.run(["/usr/bin/python3", str(script), MODULE,
                        f"{DEV_AKID}:{DEV_SECRET}", str(server.proc.pid)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "error CKR_DEVICE_ERROR", (p.stdout, p.stderr)
    deadline = time.monotonic() + 30  # hsmd, continued, makes the key it took in
    while len(keys_now() - before) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # a second request, had one gone, would be answered by now too
    assert len(keys_now() - before) == 1
    # A timeout that is not a number of seconds: C_Initialize refuses the setting.
    bad = subprocess.run(["/usr/bin/python3", "-c", "import sys, PyKCS11\n"
                          "lib = PyKCS11.PyKCS11Lib()\n"
                          "try:\n    lib.load(sys.argv[1])\nexcept PyKCS11.PyKCS11Error as e:\n"
                          "    print(PyKCS11.CKR.get(e.value, e.value))\n", MODULE],
                         env=dict(env, HSM_PKCS11_TIMEOUT="soon"), capture_output=True,
                         text=True, timeout=60)
    assert bad.stdout.strip() == "CKR_GENERAL_ERROR", (bad.stdout, bad.stderr)
    assert "HSM_PKCS11_TIMEOUT must be a number of seconds" in bad.stderr


def test_sessions_closed_and_logouts_while_calls_wait_on_hsmd(tmp_path, server, user, keys):
    """Threads encrypt (AES-GCM, 64 KiB, hsmd's IV written into pIv) and sign while others log
    out and in, close their sessions (handles are reused) and finally finalize the module, all
    while calls wait on hsmd without the module's lock: no crash, every return value one these
    races explain (CKR_SESSION_CLOSED for a session closed during the call), and no output
    written by a call that failed (pkcs11_race.c checks each)."""
    exe = c_program(tmp_path, "pkcs11_race")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint)
    p = subprocess.run([str(exe), MODULE, user.pin, keys["aes"], keys["ec"], "6"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    words = p.stdout.split()
    assert words[0::2] == ["encrypted", "signed", "closed"], p.stdout
    print(p.stdout)
    encrypted, signed, _ = (int(w) for w in words[1::2])
    assert encrypted > 0 and signed > 0, p.stdout


def test_secret_keys_have_check_values(p11, server, user, officer, keys):
    """CKA_CHECK_VALUE of AES and HMAC keys: hsmd's GetKeyCheckValue of the key's current
    material, readable although the key is sensitive, usable in a search; a generation
    template may not set it; a key whose policy denies it is listed without one."""
    expected = {}
    for name in ("aes", "mac"):
        st, out = signed_call(server, "HsmdCipher.GetKeyCheckValue",
                              {"KeyId": keys[name]})
        assert st == 200, out
        expected[name] = bytes.fromhex(out["KeyCheckValue"])
    with session(p11, user.pin) as s:
        for name in ("aes", "mac"):
            (key,) = find(s, CKO_SECRET_KEY, keys[name])
            assert attrs(s, key, PyKCS11.CKA_CHECK_VALUE) == [expected[name]], name
            assert attrs(s, key, CKA_SENSITIVE) == [True]
            found = s.findObjects([(CKA_CLASS, CKO_SECRET_KEY),
                                   (PyKCS11.CKA_CHECK_VALUE, expected[name])])
            assert [o.value() for o in found] == [key.value()], name
        other = expected["aes"][:2] + bytes([expected["aes"][2] ^ 1])
        (aes,) = find(s, CKO_SECRET_KEY, keys["aes"])
        assert aes.value() not in [o.value() for o in s.findObjects(
            [(PyKCS11.CKA_CHECK_VALUE, other)])]
        # Asymmetric keys have none.
        (priv,) = find(s, CKO_PRIVATE_KEY, keys["ec"])
        assert attr_rv(s, priv, PyKCS11.CKA_CHECK_VALUE) == PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID
    with session(p11, f"{DEV_AKID}:{DEV_SECRET}") as s:
        template = [(CKA_TOKEN, True), (PyKCS11.CKA_CHECK_VALUE, b"\x01\x02\x03")]
        assert refused(s.generateKey, template, Mechanism(PyKCS11.CKM_AES_KEY_GEN)) == \
            PyKCS11.CKR_ATTRIBUTE_READ_ONLY
    # A policy that denies the value leaves the key usable, without one.
    hidden = key_denying(officer, "kms:GetKeyCheckValue")
    with session(p11, user.pin) as s:
        (key,) = find(s, CKO_SECRET_KEY, hidden)
        assert attr_rv(s, key, PyKCS11.CKA_CHECK_VALUE) == PyKCS11.CKR_ATTRIBUTE_TYPE_INVALID
        assert attrs(s, key, CKA_ENCRYPT) == [True]


def test_check_values_are_read_when_asked_for(p11, server, user, keys):
    """A listing costs no request per secret key: a key's check value is read from hsmd when
    first asked for after a listing (a read, or a search naming it), once."""
    def reads():
        return len([r for r in audit_records(server.data_dir)
                    if r.get("op") == "GetKeyCheckValue" and r.get("outcome") == "success"])
    before = reads()
    with session(p11, user.pin) as s:
        secret = s.findObjects([(CKA_CLASS, CKO_SECRET_KEY)])
        assert len(secret) >= 2
        for o in secret:
            assert attrs(s, o, CKA_SENSITIVE, CKA_VALUE_LEN)[0] is True
        (aes,) = find(s, CKO_SECRET_KEY, keys["aes"])
        assert reads() == before
        value = attrs(s, aes, PyKCS11.CKA_CHECK_VALUE)
        assert len(value[0]) == 3 and reads() == before + 1
        assert attrs(s, aes, PyKCS11.CKA_CHECK_VALUE) == value and reads() == before + 1
        # A search naming it reads the values of the keys the rest of its template leaves.
        found = s.findObjects([(CKA_CLASS, CKO_SECRET_KEY), (CKA_ID, keys["aes"].encode()),
                               (PyKCS11.CKA_CHECK_VALUE, value[0])])
        assert [o.value() for o in found] == [aes.value()]
        assert reads() == before + 2


OLDER_NODE_CLIENT = r"""
import sys, PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
s = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
s.login(sys.argv[2])
(key,) = s.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
                        (PyKCS11.CKA_ID, sys.argv[3].encode())])
tpl = PyKCS11.LowLevel.ckattrlist(1)
tpl[0].SetType(PyKCS11.CKA_CHECK_VALUE)
print(PyKCS11.CKR[s.lib.C_GetAttributeValue(s.session, key, tpl)])
print(s.getAttributeValue(key, [PyKCS11.CKA_ENCRYPT])[0])
# The whole token: each object's class, id, label and public values.
seen = []
for o in s.findObjects([]):
    vals = []
    for t in (PyKCS11.CKA_CLASS, PyKCS11.CKA_ID, PyKCS11.CKA_LABEL, PyKCS11.CKA_MODULUS,
              PyKCS11.CKA_EC_POINT):
        tpl = PyKCS11.LowLevel.ckattrlist(1)
        tpl[0].SetType(t)
        if s.lib.C_GetAttributeValue(s.session, o, tpl) == PyKCS11.CKR_OK:
            vals.append(repr(s.getAttributeValue(o, [t])[0]))
    seen.append("|".join(vals))
print(len(seen), hash(tuple(sorted(seen))))
"""


def test_a_node_without_check_values_still_serves_the_module(tmp_path, server, keys):
    """A module newer than the node it talks to: where the node answers GetKeyCheckValue and
    HsmdToken.DescribeKeys with UnknownOperationException, the login works, the token lists
    the same objects (ListKeys, DescribeKey and GetPublicKey key by key), and secret keys have
    no CKA_CHECK_VALUE."""
    def answer(target, body):
        if target in ("HsmdCipher.GetKeyCheckValue", "HsmdToken.DescribeKeys"):
            return 400, json.dumps({"__type": "UnknownOperationException",
                                    "message": "unknown"}).encode()
        return None

    with kms_front(server, answer) as (front, targets):
        script = tmp_path / "older_node_client.py"
        script.write_text(OLDER_NODE_CLIENT)

        def run(endpoint):
            env = dict(os.environ, HSM_PKCS11_ENDPOINT=endpoint, PYTHONHASHSEED="0")
            p = subprocess.run(["/usr/bin/python3", str(script), MODULE,
                                f"{DEV_AKID}:{DEV_SECRET}", keys["aes"]],
                               env=env, capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
            return p.stdout.split()

        older = run(front)
        assert older[:2] == ["CKR_ATTRIBUTE_TYPE_INVALID", "True"], older
        assert "HsmdToken.DescribeKeys" in targets and "TrentService.DescribeKey" in targets
        current = run(server.endpoint)
        assert current[0] == "CKR_OK" and int(current[2]) >= 10, current
        assert older[2:] == current[2:]  # the same objects, with the same values


NAMED_KEYS_CLIENT = r"""
import sys, PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
s = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
s.login(sys.argv[2])
# Each key as a search naming it reads it: its objects' class, label and public values.
for kid in sys.argv[3:]:
    vals = []
    for o in s.findObjects([(PyKCS11.CKA_ID, kid.encode())]):
        for t in (PyKCS11.CKA_CLASS, PyKCS11.CKA_LABEL, PyKCS11.CKA_SIGN, PyKCS11.CKA_MODULUS,
                  PyKCS11.CKA_EC_POINT):
            tpl = PyKCS11.LowLevel.ckattrlist(1)
            tpl[0].SetType(t)
            if s.lib.C_GetAttributeValue(s.session, o, tpl) == PyKCS11.CKR_OK:
                vals.append(repr(s.getAttributeValue(o, [t])[0]))
    print(kid, hash(tuple(sorted(vals))), len(vals))
"""


def test_a_node_ignoring_a_key_id_in_describe_keys_still_serves_the_module(tmp_path, server,
                                                                           keys):
    """A node that has HsmdToken.DescribeKeys but not its KeyId member ignores the member and
    answers the first page of every key: the module sees an entry of another key, or none
    where more are to come, and reads the key a search names with DescribeKey and
    GetPublicKey, finding the same objects as on a current node."""
    def answer(target, body):
        asked = json.loads(body or b"{}")
        if target == "HsmdToken.DescribeKeys" and "KeyId" in asked:
            # What a node without the member answers: a page from the first key.
            page = {k: v for k, v in asked.items() if k in ("Limit", "Marker")}
            status, out = signed_call(server, target, page)
            return status, json.dumps(out).encode()
        return None

    with kms_front(server, answer) as (front, targets):
        script = tmp_path / "named_keys_client.py"
        script.write_text(NAMED_KEYS_CLIENT)

        def run(endpoint):
            env = dict(os.environ, HSM_PKCS11_ENDPOINT=endpoint, PYTHONHASHSEED="0")
            p = subprocess.run(["/usr/bin/python3", str(script), MODULE,
                                f"{DEV_AKID}:{DEV_SECRET}", *keys.values()],
                               env=env, capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stderr
            return p.stdout.splitlines()

        older = run(front)
        assert "TrentService.DescribeKey" in targets and "TrentService.GetPublicKey" in targets
        current = run(server.endpoint)
        assert all(int(line.split()[2]) >= 2 for line in current), current
        assert older == current
