"""Secrets do not linger in hsmd's memory once a request is answered.

A request body can carry a custodian's share, a plaintext or encryption
context values, and a response can carry a data key.  Their bytes pass
through libevent's buffers, jansson's values and OpenSSL's record buffers,
which free memory without wiping it; hsmd wipes them (docs in
src/common/secret.h).  These tests send random canaries through the real
daemon, over plain HTTP and over TLS, then read all of its writable memory
through /proc/PID/mem and look for any piece of every form the request path
held each canary in.  hsmd marks itself non-dumpable, so only root may read
its memory: the tests are skipped, saying so, for anyone else.
"""
import base64
import os
import shutil
import tempfile

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from conftest import DEV_AKID, DEV_SECRET, Hsmd, client, plain_build_only, start_dev, unsigned_call
from helpers import admin, make_pki, restart_dev

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="reading a non-dumpable process's memory needs root")

WINDOW = 16  # bytes of a canary that count as a trace of it
STRIDE = 8   # windows overlap, so a trace survives a free-list pointer written over a block's start


def writable_regions(pid):
    """(start, end, name) of every private writable mapping: heaps, arenas, stacks, secure heap."""
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            name = parts[5] if len(parts) > 5 else ""
            if parts[1].startswith("rw") and not name.startswith("/") and name not in (
                    "[vvar]", "[vsyscall]"):
                yield start, end, name


def traces(pid, canaries):
    """{label: [(region, address)]} for every window of every canary found in memory."""
    plain_build_only("its shadow memory, terabytes of writable mappings, cannot be read through "
                     "/proc/PID/mem")
    needles = [(label, c[i:i + WINDOW]) for label, c in canaries.items()
               for i in range(0, len(c) - WINDOW + 1, STRIDE)]
    found = {}
    with open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for start, end, name in writable_regions(pid):
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except OSError:
                continue  # a guard page
            for label, n in needles:
                at = data.find(n)
                if at >= 0:
                    found.setdefault(label, []).append((name or "anonymous", hex(start + at)))
    return found


def forms(label, raw):
    """The forms a value takes on its way through hsmd: raw and base64 (JSON strings)."""
    return {label: raw, label + " (base64)": base64.b64encode(raw)}


def assert_no_traces(server, canaries):
    # The positive control: the dev secret is in hsmd's environment, so a scan that
    # cannot read the process (or searches wrongly) fails here instead of passing.
    control = traces(server.proc.pid, {"control": DEV_SECRET.encode()})
    assert "control" in control, "the memory scan did not find a value hsmd holds"
    found = traces(server.proc.pid, canaries)
    assert not found, f"secret bytes left in hsmd's memory: {found}"


def exercise_crypto(kms, key, canaries, tag):
    pt, ctx_value = os.urandom(48), base64.b64encode(os.urandom(24)).decode()
    ctx = {"tenant": ctx_value}
    blob = kms.encrypt(KeyId=key, Plaintext=pt, EncryptionContext=ctx)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=ctx)["Plaintext"] == pt
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256")["Plaintext"]
    canaries.update(forms(f"{tag} plaintext", pt))
    canaries.update(forms(f"{tag} data key", dk))
    canaries[f"{tag} context value"] = ctx_value.encode()


def test_plaintexts_data_keys_context_and_shares_are_wiped():
    server = start_dev()
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        canaries = {}
        exercise_crypto(kms, key, canaries, "http")
        with open(os.path.join(server.data_dir, "dev-unseal.share")) as f:
            share = f.read()
        assert admin(server, "Seal")["Sealed"] is True
        st, out = unsigned_call(server, "HsmdAdmin.Unseal", {"Share": share})
        assert st == 200 and out["Sealed"] is False, out
        value = [line.split()[1] for line in share.splitlines() if line.startswith("value ")][0]
        canaries["share"] = value.encode()
        canaries["share (bytes)"] = bytes.fromhex(value)
        # The node works after the unseal, and the scan runs with connections still open.
        assert kms.decrypt(CiphertextBlob=kms.encrypt(KeyId=key, Plaintext=b"x")[
            "CiphertextBlob"])["Plaintext"] == b"x"
        assert_no_traces(server, canaries)
    finally:
        server.cleanup()


def scalar_of(private_key):
    n = private_key.private_numbers().private_value
    return n.to_bytes((private_key.curve.key_size + 7) // 8, "big")


def test_private_keys_loaded_made_and_returned_are_wiped():
    """RSA and EC keys pass through OpenSSL's PKCS#8 decoder and encoder when
    hsmd loads, makes or returns them, and those free a copy of the DER
    unwiped; hsmd has every OpenSSL free wipe.  An imported P-256 key whose
    scalar is known, loaded again after a restart by a Sign, and a P-384 pair
    from GenerateDataKeyPair leave no trace of their private halves."""
    server = start_dev()
    try:
        kms = client(server)
        imported = ec.generate_private_key(ec.SECP256R1())
        der = imported.private_bytes(serialization.Encoding.DER,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        key = kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_P256",
                             KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        params = kms.get_parameters_for_import(KeyId=key, WrappingKeySpec="RSA_2048",
                                               WrappingAlgorithm="RSA_AES_KEY_WRAP_SHA_256")
        wrapping = serialization.load_der_public_key(params["PublicKey"])
        aes = os.urandom(32)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                            label=None)
        kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                                EncryptedKeyMaterial=wrapping.encrypt(aes, oaep) +
                                aes_key_wrap_with_padding(aes, der),
                                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
        wrapper = kms.create_key()["KeyMetadata"]["KeyId"]
        server = restart_dev(server)  # the key is loaded from the store, not imported
        kms = client(server)
        kms.sign(KeyId=key, Message=b"m", MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
        pair = kms.generate_data_key_pair(KeyId=wrapper, KeyPairSpec="ECC_NIST_P384")
        made = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], None)
        canaries = {"imported P-256 key": scalar_of(imported),
                    "GenerateDataKeyPair P-384 key": scalar_of(made)}
        canaries.update(forms("P-384 PKCS#8", pair["PrivateKeyPlaintext"][-64:]))
        kms.list_keys(Limit=1)  # same connection: the last response's wipe has run
        assert_no_traces(server, canaries)
    finally:
        server.cleanup()


def test_request_bodies_over_tls_are_wiped():
    d = tempfile.mkdtemp(prefix="hsmd-pki-")
    server = None
    try:
        pki = make_pki(d)
        env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
        server = Hsmd(["--dev", "--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"]],
                      env=env, tls_ca=pki["ca.pem"])
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        canaries = {}
        exercise_crypto(kms, key, canaries, "tls")
        kms.list_keys(Limit=1)  # same connection: the last response's wipe has run
        assert_no_traces(server, canaries)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(d, ignore_errors=True)
