"""The PKCS#11 module short of memory in the application's process.

The module lives in its host's process: a failed allocation there must cost
the call that made it, answered CKR_HOST_MEMORY, and leave the application
nothing else to deal with: not a crash, not a wrong answer (a good signature
called invalid, a ciphertext called corrupt, a key not found), not an
operation left active, a login lost or a connection left broken.

pkcs11_oom.c loads the module with oomfault.c preloaded and, for each of its
scenarios (signing, verifying, HMAC, AES-GCM, RSA-OAEP, ECDH, digests, random
bytes, attributes, searches, sessions, login, C_Initialize, key generation
and destruction, certificates parsed in C_CreateObject and at a login that
first sees one), counts the allocations the module makes for it and refuses
each of them in turn (or CAP of them, spread from the first to the last:
reading the objects again makes thousands), each refused run followed by an
unrefused one.  This test starts the node (over HTTP, then TLS), makes the
keys, runs the program, reads its report and counts the keys made.
"""
import os
import subprocess

import pytest

from conftest import BUILD, DEV_AKID, DEV_SECRET, Hsmd, client
from helpers import make_pki, self_signed

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = os.path.join(BUILD, "libhsm_pkcs11.so")
CAP = int(os.environ.get("HSM_TEST_OOM_P11_CAP", "150"))
SCENARIOS = {"sign_ecdsa", "sign_ecdsa_parts", "sign_rsa", "verify_ecdsa", "verify_ecdsa_forged",
             "hmac", "hmac_verify", "gcm_encrypt", "gcm_decrypt", "oaep_encrypt", "oaep_decrypt",
             "digest", "random", "ec_point", "rsa_modulus", "find", "token_info", "session",
             "login", "initialize", "gcm_parts", "derive", "generate_pair", "generate_secret",
             "destroy", "cert_session", "cert_login"}
# The scenarios that allocate: those that ask hsmd, or hash in the module.
ALLOCATING = SCENARIOS - {"ec_point", "rsa_modulus", "token_info", "session", "initialize"}


@pytest.fixture(params=["http", "https"])
def server(request, tmp_path_factory):
    """A dev node over plain HTTP, or over TLS (whose client side, in the
    application's process, allocates in its handshake and records too)."""
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    args, tls_ca = ["--dev"], None
    if request.param == "https":
        pki = make_pki(str(tmp_path_factory.mktemp("p11oompki")))
        args += ["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"]]
        tls_ca = pki["ca.pem"]
    s = Hsmd(args, env=env, tls_ca=tls_ca)
    yield s
    s.cleanup()


def all_keys(kms):
    return {k["KeyId"] for page in kms.get_paginator("list_keys").paginate()
            for k in page["Keys"]}


def program(tmp_path):
    exe = tmp_path / "pkcs11_oom"
    cc = subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-I/usr/include/p11-kit-1",
                         "-o", str(exe), os.path.join(HERE, "pkcs11_oom.c"), "-ldl"],
                        capture_output=True, text=True, timeout=120)
    assert cc.returncode == 0, cc.stderr
    return exe


def test_the_module_short_of_memory(tmp_path, server, shim):
    assert os.path.exists(MODULE), f"{MODULE} is not built"
    kms = client(server)

    def create(spec, usage):
        return kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]

    ids = [create("ECC_NIST_P256", "SIGN_VERIFY"), create("RSA_2048", "SIGN_VERIFY"),
           create("HMAC_256", "GENERATE_VERIFY_MAC"),
           create("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"), create("RSA_2048", "ENCRYPT_DECRYPT"),
           create("ECC_NIST_P256", "KEY_AGREEMENT")]
    keys_before = all_keys(kms)
    ctl = tmp_path / "ctl"
    ctl.write_bytes(b"\0" * 256)  # oomfault.c's control file; pkcs11_oom.c drives it
    cert = tmp_path / "cert.der"  # stored once, then parsed by the module under refusal
    cert.write_bytes(self_signed("oom-cert"))
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint, HSM_TEST_OOM_CTL=str(ctl),
               HSM_TEST_OOM_CERT=str(cert), LD_PRELOAD=shim)
    if server.tls_ca:
        env["HSM_PKCS11_CA_FILE"] = server.tls_ca
    p = subprocess.run([str(program(tmp_path)), MODULE, f"{DEV_AKID}:{DEV_SECRET}", *ids,
                        str(CAP)], env=env, capture_output=True, text=True, timeout=1200)
    report = p.stdout
    print(report, p.stderr[-20000:])  # shown when the test fails
    assert p.returncode == 0, (p.returncode, report[-3000:], p.stderr[-3000:])
    bad = [line for line in report.splitlines() if line.startswith("bad ")]
    assert not bad, "\n".join(bad[:40])
    seen = {}
    for line in report.splitlines():
        if line.startswith("scenario "):
            w = line.split()
            seen[w[1]] = dict(zip(w[2::2], map(int, w[3::2])))
    assert set(seen) == SCENARIOS, report
    for name, s in seen.items():
        # Each refusal tried was made, and each answered as usual or CKR_HOST_MEMORY.
        assert s["fired"] == s["tried"], (name, s)
        assert s["tried"] == min(s["allocs"], CAP), (name, s)  # every one, or a spread
        assert s["usual"] + s["host_memory"] == s["tried"], (name, s)
        if name in ALLOCATING:
            # It made a difference at least once: the module does not swallow them all.
            assert s["host_memory"] > 0, (name, s)
        else:
            # What needs no memory cannot run out of it (module state, cached attributes).
            assert s["allocs"] == 0, (name, s)
    assert report.splitlines()[-1] == "done bad 0", report[-500:]
    # Each generation that answered CKR_OK made one key, with its label.  One that
    # answered CKR_HOST_MEMORY made none; or, when it failed after hsmd made the key,
    # one the module scheduled for deletion, its label given up (pkcs11_oom.c checks
    # that no object with the label is left); or, when the CreateKey answer itself was
    # lost as it came, one the module never learnt of, so never labelled.  Never two.
    made = all_keys(kms) - keys_before
    labelled = {a["TargetKeyId"] for page in kms.get_paginator("list_aliases").paginate()
                for a in page["Aliases"] if a["AliasName"].startswith("alias/oom-")}
    count = {}
    for k in made:
        md = kms.describe_key(KeyId=k)["KeyMetadata"]
        key = (md["KeySpec"], md["KeyState"], k in labelled)
        count[key] = count.get(key, 0) + 1
    print("keys made:", count)
    assert {state for _, state, _ in count} <= {"Enabled", "PendingDeletion"}, count

    def ok_runs(s):  # the three unrefused runs before the sweep, and one after each refusal
        return s["usual"] + 3 + s["tried"]

    pair, aes, destroy = seen["generate_pair"], seen["generate_secret"], seen["destroy"]
    # C_DestroyObject's keys (made by C_GenerateKey, one a run) are all scheduled for
    # deletion, by the run or after it.
    destroyed = 3 + 2 * destroy["tried"]
    for spec, s, others in (("ECC_NIST_P256", pair, 0), ("SYMMETRIC_DEFAULT", aes, destroyed)):
        assert count.get((spec, "Enabled", True), 0) == ok_runs(s), (spec, count, s)
        lost = count.get((spec, "Enabled", False), 0)
        pending = count.get((spec, "PendingDeletion", True), 0) + \
            count.get((spec, "PendingDeletion", False), 0)
        assert others <= pending and lost + pending - others <= s["host_memory"], \
            (spec, count, s)
