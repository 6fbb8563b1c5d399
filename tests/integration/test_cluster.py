"""Several hsmd nodes sharing one PostgreSQL store.

A throwaway PostgreSQL server (tests/support/pg-server.sh) holds the store.
`hsmctl --store URI init` runs the key ceremony against it; two nodes started
with HSM_STORE=URI unseal with the custodians' shares and serve the same keys:
what one node creates or changes, the other uses; a node that stops is
replaced by the next endpoint of a client's list (hsmctl, the PKCS#11
module); a node that cannot reach the store says so on /readyz; the store
survives a PostgreSQL restart under running nodes, and follows a standby
promoted after the primary died; a backup of the shared store restores into
a single SQLite node and into another PostgreSQL database; `hsmctl store
copy` moves a single node's store into PostgreSQL.
"""
import base64
import concurrent.futures
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import types
import urllib.parse

import pytest

from conftest import BUILD, HSMCTL, Hsmd, client, signed_call, signed_request
from helpers import (IDENTITY, PG_SERVER, Clock, Postgres, admin, audit_records, eventually, gdb_can_trace,
                     killed_before_its_record, raises, listed_key_ids, metric, self_signed)

MODULE = os.path.join(BUILD, "libhsm_pkcs11.so")
CUSTODIANS = ["alice", "bob", "carol", "dave", "erin"]
CACHE_MS = 500


def hsmctl(*args, endpoint=None, store=None, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    if store:
        env["HSM_STORE"] = store  # the password stays off the command line
    cmd = [HSMCTL] + (["--endpoint", endpoint] if endpoint else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def ceremony(base, store):
    shares = os.path.join(base, "shares")
    p = hsmctl("init", "--data-dir", os.path.join(base, "ceremony"), "--share-dir", shares,
               "--shares", "5", "--threshold", "3", "--custodians", ",".join(CUSTODIANS),
               "--admin", "ops", store=store)
    assert "quorum: 3 of 5" in p.stdout
    with open(os.path.join(shares, "ops.credentials")) as f:
        fields = dict(l.split(" = ", 1) for l in f.read().splitlines() if " = " in l)
    files = {c: os.path.join(shares, c + ".share") for c in CUSTODIANS}
    return files, (fields["aws_access_key_id"], fields["aws_secret_access_key"])


# Tokens live at most 10 s with 2 s of skew: a JWK Set max-age of 3 s, and a lead of 3 s plus
# a node's JWK Set document lifetime (the store cache's, rounded up to a second).
JWT_FLAGS = ["--jwt-max-lifetime-seconds", "10", "--jwt-default-lifetime-seconds", "10",
             "--jwt-clock-skew-seconds", "2"]
JWT_LEAD = 3 + -(-CACHE_MS // 1000)


# Scheduler rounds of 1 s and a leadership lease of 5 s, for the tests of the scheduled work
# (the defaults, 5 s and 30 s, would make them wait six times as long).
ROUNDS = ["--scheduler-interval-seconds", "1", "--leader-lease-seconds", "5"]


def node(store, name, extra=()):
    return Hsmd(["--node-id", name, "--store-cache-ms", str(CACHE_MS)] + JWT_FLAGS + list(extra),
                env={"HSM_STORE": store})


def unseal(server, files, who=("alice", "carol", "erin")):
    for c in who:
        hsmctl("unseal", files[c], endpoint=server.endpoint)
    st, body, _ = server.get("/readyz")
    assert st == 200, body


def readyz(server):
    st, body, _ = server.get("/readyz")
    return st, json.loads(body)


def stale_for(refused, within=5):
    """Polls refused() until it is true; how long after the first poll the last call that
    was still served began.  A slow call on a loaded machine does not count against the
    cache's bound, only what the node still served and when it was asked."""
    t0 = last_served = time.monotonic()
    while True:
        began = time.monotonic()
        if refused():
            return last_served - t0
        last_served = began
        assert began - t0 < within, "the change never reached the other node"
        time.sleep(0.05)


def disabled_on(kms, kid):
    """Whether Encrypt with kid through this client is refused as disabled."""
    try:
        kms.encrypt(KeyId=kid, Plaintext=b"x")
        return False
    except kms.exceptions.DisabledException:
        return True


@pytest.fixture(scope="module")
def pg():
    server = Postgres()
    yield server
    server.close()


@pytest.fixture(scope="module")
def cluster(pg):
    base = tempfile.mkdtemp(prefix="hsmd-cluster-")
    store = pg.database("hsm")
    files, ops = ceremony(base, store)
    a, b = node(store, "node-a"), node(store, "node-b")
    for n in (a, b):
        unseal(n, files)
    k = admin(a, "CreateUser", {"UserName": "app", "Roles": ["crypto-user"]},
              akid=ops[0], secret=ops[1])
    k = admin(a, "CreateAccessKey", {"UserName": "app"}, akid=ops[0], secret=ops[1])
    app = (k["AccessKeyId"], k["SecretAccessKey"])
    yield types.SimpleNamespace(store=store, a=a, b=b, files=files, ops=ops, app=app, base=base)
    for n in (a, b):
        n.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def kms(server, who):
    return client(server, who[0], who[1])


def test_nodes_serve_the_same_keys(cluster):
    a_off, b_off = kms(cluster.a, cluster.ops), kms(cluster.b, cluster.ops)
    a_app, b_app = kms(cluster.a, cluster.app), kms(cluster.b, cluster.app)
    kid = a_off.create_key(Description="shared")["KeyMetadata"]["KeyId"]
    a_off.create_alias(AliasName="alias/shared", TargetKeyId=kid)
    # A key, an alias and a user made through node A are there on node B at once:
    # nothing about them was cached on B yet.
    assert b_off.describe_key(KeyId="alias/shared")["KeyMetadata"]["KeyId"] == kid
    blob = a_app.encrypt(KeyId="alias/shared", Plaintext=b"made on a",
                         EncryptionContext={"tenant": "t1"})["CiphertextBlob"]
    out = b_app.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "t1"})
    assert out["Plaintext"] == b"made on a" and out["KeyId"].endswith(kid)
    sk = b_off.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sig = b_app.sign(KeyId=sk, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    assert a_app.verify(KeyId=sk, Message=b"m", Signature=sig,
                        SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]
    listed = {k["KeyId"] for k in a_off.list_keys()["Keys"]}
    assert {kid, sk} <= listed == {k["KeyId"] for k in b_off.list_keys()["Keys"]}
    # Each node audits its own requests, in its own trail.
    ops_a = [r.get("op") for r in audit_records(cluster.a.data_dir)]
    ops_b = [r.get("op") for r in audit_records(cluster.b.data_dir)]
    assert "CreateAlias" in ops_a and "CreateAlias" not in ops_b
    assert "Decrypt" in ops_b and "Decrypt" not in ops_a


def test_a_change_on_one_node_shows_on_the_other_within_the_cache_lifetime(cluster):
    off_a, app_b = kms(cluster.a, cluster.ops), kms(cluster.b, cluster.app)
    kid = off_a.create_key()["KeyMetadata"]["KeyId"]
    blob = app_b.encrypt(KeyId=kid, Plaintext=b"x")["CiphertextBlob"]  # B caches the key
    off_a.disable_key(KeyId=kid)
    waited = stale_for(lambda: disabled_on(app_b, kid))
    assert waited < CACHE_MS / 1000 + 0.5, waited
    off_a.enable_key(KeyId=kid)
    assert eventually(lambda: _try(lambda: app_b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"),
                      20)
    # An access key revoked on A stops working on B (credentials are cached 2 s).
    k = admin(cluster.a, "CreateAccessKey", {"UserName": "app"}, akid=cluster.ops[0],
              secret=cluster.ops[1])
    temp = kms(cluster.b, (k["AccessKeyId"], k["SecretAccessKey"]))
    temp.generate_random(NumberOfBytes=8)
    admin(cluster.a, "RevokeAccessKey", {"AccessKeyId": k["AccessKeyId"]},
          akid=cluster.ops[0], secret=cluster.ops[1])

    def revoked():
        try:
            temp.generate_random(NumberOfBytes=8)
            return False
        except Exception as e:  # botocore's ClientError
            return "UnrecognizedClient" in str(e) or "InvalidSignature" in str(e) or \
                "AccessDenied" in str(e)
    assert eventually(revoked, 20), "a revoked access key still works on the other node"


def test_a_node_whose_wall_clock_steps_back_still_sees_the_others_changes(cluster, clockshift,
                                                                         tmp_path):
    """Cached keys, aliases and the JWK Set age on the monotonic clock: a node whose wall
    clock an administrator or a time server steps back four minutes (inside SigV4's five)
    sees another node's changes within the cache lifetime, not four minutes later."""
    clock = Clock(str(tmp_path / "shift"))
    c = Hsmd(["--node-id", "node-c", "--store-cache-ms", str(CACHE_MS)] + JWT_FLAGS,
             env={"HSM_STORE": cluster.store, "LD_PRELOAD": clockshift,
                  "HSM_TEST_CLOCK_SHIFT_FILE": clock.path})
    try:
        unseal(c, cluster.files)
        off_a, app_c = kms(cluster.a, cluster.ops), kms(c, cluster.app)
        kid = off_a.create_key()["KeyMetadata"]["KeyId"]
        off_a.create_alias(AliasName="alias/steps-back", TargetKeyId=kid)
        jwt_key = off_a.create_key(KeySpec="ECC_NIST_P256",
                                   KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        st, out = signed_call(cluster.a, "HsmdJwt.EnableJwtSigning", {"KeyId": jwt_key},
                              akid=cluster.ops[0], secret=cluster.ops[1])
        assert st == 200, out

        def c_kids():
            st, body, _ = c.get("/.well-known/jwks.json")
            assert st == 200, body
            return {k["kid"] for k in json.loads(body)["keys"]}
        assert eventually(lambda: f"{jwt_key}.v1" in c_kids(), 5)
        app_c.encrypt(KeyId="alias/steps-back", Plaintext=b"x")  # C caches key and alias
        clock.set(-240)
        time.sleep(0.2)
        app_c.encrypt(KeyId="alias/steps-back", Plaintext=b"x")  # and again, stepped back
        off_a.disable_key(KeyId=kid)
        waited = stale_for(lambda: disabled_on(app_c, kid))
        assert waited < CACHE_MS / 1000 + 0.5, waited
        # An alias moved on A names the new key on C within the cache lifetime too.
        other = off_a.create_key()["KeyMetadata"]["KeyId"]
        off_a.update_alias(AliasName="alias/steps-back", TargetKeyId=other)
        waited = stale_for(lambda: app_c.encrypt(KeyId="alias/steps-back",
                                                 Plaintext=b"x")["KeyId"].endswith(other))
        assert waited < CACHE_MS / 1000 + 0.5, waited
        # A rotation on A shows in C's JWK Set within its document's lifetime (1 s here).
        st, out = signed_call(cluster.a, "TrentService.RotateKeyOnDemand", {"KeyId": jwt_key},
                              akid=cluster.ops[0], secret=cluster.ops[1])
        assert st == 200, out
        waited = stale_for(lambda: f"{jwt_key}.v2" in c_kids())
        assert waited < -(-CACHE_MS // 1000) + 0.5, waited
    finally:
        clock.set(0)
        c.cleanup()


def test_material_of_a_key_disabled_or_deleted_on_one_node_leaves_the_other(cluster):
    """A node holds the material of the keys it used.  Disabled, or scheduled for
    deletion, through the other node, the key's material leaves this node's memory too
    within a scheduler pass or two, without anything asking for the key here."""
    off_a, app_b = kms(cluster.a, cluster.ops), kms(cluster.b, cluster.app)
    keys = [off_a.create_key()["KeyMetadata"]["KeyId"] for _ in range(2)]
    for kid in keys:
        app_b.encrypt(KeyId=kid, Plaintext=b"x")  # B unwraps and keeps each key's material
    held = gauge(cluster.b, "hsmd_key_cache_entries")
    assert held >= 2
    off_a.disable_key(KeyId=keys[0])
    off_a.schedule_key_deletion(KeyId=keys[1], PendingWindowInDays=7)
    assert eventually(lambda: gauge(cluster.b, "hsmd_key_cache_entries") <= held - 2, 20), \
        "the other node still holds the material of keys it can no longer use"
    off_a.enable_key(KeyId=keys[0])  # usable again: B unwraps it again when asked
    assert eventually(lambda: _try(lambda: app_b.encrypt(KeyId=keys[0], Plaintext=b"y")), 20)


def test_a_use_on_one_node_is_the_last_use_on_the_other(cluster):
    """GetKeyLastUsage: each node writes its uses to the shared store about every second; a
    node answers with the later of the store's record and its own unwritten uses."""
    off_a = kms(cluster.a, cluster.ops)
    app_a, app_b = kms(cluster.a, cluster.app), kms(cluster.b, cluster.app)
    kid = off_a.create_key()["KeyMetadata"]["KeyId"]

    def last(server):
        st, out = signed_call(server, "TrentService.GetKeyLastUsage", {"KeyId": kid},
                              akid=cluster.ops[0], secret=cluster.ops[1])
        assert st == 200, out
        return out.get("KeyLastUsage")
    assert last(cluster.a) == {} and last(cluster.b) == {}
    blob = app_a.encrypt(KeyId=kid, Plaintext=b"u")["CiphertextBlob"]
    rid = last(cluster.a)["KmsRequestId"]  # node A knows at once
    assert eventually(lambda: (last(cluster.b) or {}).get("KmsRequestId") == rid, 20)
    # A later use on B wins on both nodes, whichever node writes last.
    app_b.decrypt(CiphertextBlob=blob)
    b_last = last(cluster.b)
    assert b_last["Operation"] == "Decrypt"
    assert eventually(lambda: last(cluster.a) == b_last, 20)
    time.sleep(1.5)  # both nodes have flushed since
    assert last(cluster.a) == last(cluster.b) == b_last


def test_grants_made_on_one_node_hold_on_the_other(cluster):
    off_a, off_b = kms(cluster.a, cluster.ops), kms(cluster.b, cluster.ops)
    app_b = kms(cluster.b, cluster.app)
    ops_arn = "arn:aws:iam::111122223333:user/ops"
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": ops_arn}, "Action": "kms:*",
        "Resource": "*"}]})
    kid = off_a.create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    denied = app_b.exceptions.ClientError

    def refused():
        try:
            app_b.encrypt(KeyId=kid, Plaintext=b"x")
            return False
        except denied as e:
            assert e.response["Error"]["Code"] == "AccessDeniedException", e.response
            return True
    assert refused()  # node B now holds the key, and that it has no grant, in its cache
    g = off_a.create_grant(KeyId=kid, GranteePrincipal="arn:aws:iam::111122223333:user/app",
                           Operations=["Encrypt", "Decrypt"])
    # With the grant's token, B reads the grants afresh: the grant holds at once.
    blob = app_b.encrypt(KeyId=kid, Plaintext=b"x", GrantTokens=[g["GrantToken"]])
    assert blob["KeyId"].endswith(kid)
    # Without it, within the cache lifetime.
    assert eventually(lambda: not refused(), 20), "node B never honoured node A's grant"
    assert [x["GrantId"] for x in off_b.list_grants(KeyId=kid)["Grants"]] == [g["GrantId"]]
    off_a.revoke_grant(KeyId=kid, GrantId=g["GrantId"])
    assert stale_for(refused) < CACHE_MS / 1000 + 0.5, "node B honoured a revoked grant"


def test_a_value_made_with_a_version_rotated_in_elsewhere_is_taken_at_once(cluster):
    """A node that cached a key before another node rotated it trusts its cached record for
    the cache lifetime (30 s here), but a value made with the new version is not refused
    meanwhile as forged: a value none of the versions it knows accepts makes it read the key
    again, once, and try the versions that read adds.  Forgeries are refused as before."""
    slow = Hsmd(["--node-id", "node-slow", "--store-cache-ms", "30000"] + JWT_FLAGS,
                env={"HSM_STORE": cluster.store})
    try:
        unseal(slow, cluster.files)
        off_a, app_a, app_s = (kms(cluster.a, cluster.ops), kms(cluster.a, cluster.app),
                               kms(slow, cluster.app))

        def rotate(kid):
            st, out = signed_call(cluster.a, "TrentService.RotateKeyOnDemand", {"KeyId": kid},
                                  akid=cluster.ops[0], secret=cluster.ops[1])
            assert st == 200, out

        def gcm(server, op, body):
            r = signed_request(server, "HsmdCipher." + op, body, akid=cluster.app[0],
                               secret=cluster.app[1])
            return r.status_code, r.json()

        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        ecdsa = dict(SigningAlgorithm="ECDSA_SHA_256")
        hmac = dict(MacAlgorithm="HMAC_SHA_256")
        oaep = dict(EncryptionAlgorithm="RSAES_OAEP_SHA_256")
        def new_key(spec="SYMMETRIC_DEFAULT", usage="ENCRYPT_DECRYPT"):
            return off_a.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
        sym, gk = new_key(), new_key()
        ec = new_key("ECC_NIST_P256", "SIGN_VERIFY")
        mac = new_key("HMAC_256", "GENERATE_VERIFY_MAC")
        rsa = new_key("RSA_2048")
        # The slow node caches each key at version 1.
        app_s.decrypt(CiphertextBlob=app_a.encrypt(KeyId=sym, Plaintext=b"1")["CiphertextBlob"])
        app_s.verify(KeyId=ec, Message=b"m", Signature=app_a.sign(
            KeyId=ec, Message=b"m", **ecdsa)["Signature"], **ecdsa)
        app_s.verify_mac(KeyId=mac, Message=b"m", Mac=app_a.generate_mac(
            KeyId=mac, Message=b"m", **hmac)["Mac"], **hmac)
        app_s.decrypt(KeyId=rsa, CiphertextBlob=app_a.encrypt(
            KeyId=rsa, Plaintext=b"1", **oaep)["CiphertextBlob"], **oaep)
        st, out = gcm(slow, "GcmEncrypt", {"KeyId": gk, "Plaintext": b64(b"1")})
        assert st == 200, out
        for kid in (sym, ec, mac, rsa, gk):
            rotate(kid)
        # Values made on A with version 2 are taken on the slow node at once.
        blob = app_a.encrypt(KeyId=sym, Plaintext=b"2")["CiphertextBlob"]
        out = app_s.decrypt(CiphertextBlob=blob)
        assert out["Plaintext"] == b"2" and out["KeyId"].endswith(sym)
        sig = app_a.sign(KeyId=ec, Message=b"m", **ecdsa)["Signature"]
        assert app_s.verify(KeyId=ec, Message=b"m", Signature=sig, **ecdsa)["SignatureValid"]
        tag = app_a.generate_mac(KeyId=mac, Message=b"m", **hmac)["Mac"]
        assert app_s.verify_mac(KeyId=mac, Message=b"m", Mac=tag, **hmac)["MacValid"]
        ct = app_a.encrypt(KeyId=rsa, Plaintext=b"2", **oaep)["CiphertextBlob"]
        assert app_s.decrypt(KeyId=rsa, CiphertextBlob=ct, **oaep)["Plaintext"] == b"2"
        st, sealed = gcm(cluster.a, "GcmEncrypt", {"KeyId": gk, "Plaintext": b64(b"2")})
        assert st == 200, sealed
        st, out = gcm(slow, "GcmDecrypt", {"KeyId": gk, "Iv": sealed["Iv"],
                                           "Ciphertext": sealed["Ciphertext"]})
        assert st == 200 and base64.b64decode(out["Plaintext"]) == b"2", out
        # ReEncrypt from a version the slow node has not seen yet, too.
        rotate(sym)
        blob = app_a.encrypt(KeyId=sym, Plaintext=b"3")["CiphertextBlob"]
        again = app_s.re_encrypt(CiphertextBlob=blob, DestinationKeyId=sym)["CiphertextBlob"]
        assert app_a.decrypt(CiphertextBlob=again)["Plaintext"] == b"3"
        # What no version accepts is refused as it was, the read again notwithstanding.
        forged = bytearray(blob)
        forged[17:21] = (99).to_bytes(4, "big")  # a version the key never had
        raises("InvalidCiphertextException", app_s.decrypt, CiphertextBlob=bytes(forged))
        raises("KMSInvalidSignatureException", app_s.verify, KeyId=ec, Message=b"other",
               Signature=sig, **ecdsa)
        raises("KMSInvalidMacException", app_s.verify_mac, KeyId=mac, Message=b"other",
               Mac=tag, **hmac)
        raises("InvalidCiphertextException", app_s.decrypt, KeyId=rsa,
               CiphertextBlob=bytes(len(ct)), **oaep)
        st, out = gcm(slow, "GcmDecrypt", {"KeyId": gk, "Iv": sealed["Iv"],
                                           "Ciphertext": b64(bytes(20))})
        assert st == 400 and out["__type"] == "InvalidCiphertextException", out
    finally:
        slow.cleanup()


def test_imported_material_across_nodes(cluster):
    """An import token from node A opens on node B (same master key, nothing kept between the
    calls); material deleted on A stops working on B within the cache lifetime, and a
    different material is refused whichever node is asked."""
    from test_import import wrap
    off_a, off_b = kms(cluster.a, cluster.ops), kms(cluster.b, cluster.ops)
    app_b = kms(cluster.b, cluster.app)
    kid = off_a.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    material = os.urandom(32)
    params = off_a.get_parameters_for_import(KeyId=kid, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                             WrappingKeySpec="RSA_2048")
    off_b.import_key_material(KeyId=kid, ImportToken=params["ImportToken"],
                              EncryptedKeyMaterial=wrap(params, material, "RSAES_OAEP_SHA_256"),
                              ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    # A cached the key PendingImport: it sees the import within the cache lifetime.
    assert eventually(lambda: off_a.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"]
                      == "Enabled", 20)
    blob = app_b.encrypt(KeyId=kid, Plaintext=b"imported")["CiphertextBlob"]  # B caches it
    off_a.delete_imported_key_material(KeyId=kid)

    def refused():
        try:
            app_b.decrypt(CiphertextBlob=blob)
            return False
        except app_b.exceptions.KMSInvalidStateException:
            return True
    assert stale_for(refused) < CACHE_MS / 1000 + 0.5, "node B decrypted with deleted material"
    other = off_b.get_parameters_for_import(KeyId=kid, WrappingAlgorithm="RSAES_OAEP_SHA_1",
                                            WrappingKeySpec="RSA_2048")
    with pytest.raises(off_a.exceptions.IncorrectKeyMaterialException):
        off_a.import_key_material(KeyId=kid, ImportToken=other["ImportToken"],
                                  EncryptedKeyMaterial=wrap(other, os.urandom(32),
                                                            "RSAES_OAEP_SHA_1"),
                                  ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    off_a.import_key_material(KeyId=kid, ImportToken=other["ImportToken"],
                              EncryptedKeyMaterial=wrap(other, material, "RSAES_OAEP_SHA_1"),
                              ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    assert eventually(lambda: _try(lambda: app_b.decrypt(CiphertextBlob=blob)["Plaintext"]
                                   == b"imported"), 20)


def test_new_imported_material_across_nodes(cluster):
    """Two nodes importing new material into one key at once: exactly one wins; rotation
    through node B shows on node A within the cache lifetime, and both decrypt both."""
    import base64
    import concurrent.futures
    from test_import import wrap
    off_a, off_b = kms(cluster.a, cluster.ops), kms(cluster.b, cluster.ops)
    app_a, app_b = kms(cluster.a, cluster.app), kms(cluster.b, cluster.app)
    kid = off_a.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]

    def body(client, material, **more):
        p = client.get_parameters_for_import(KeyId=kid, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                             WrappingKeySpec="RSA_2048")
        b = {"KeyId": kid, "ImportToken": base64.b64encode(p["ImportToken"]).decode(),
             "EncryptedKeyMaterial": base64.b64encode(
                 wrap(p, material, "RSAES_OAEP_SHA_256")).decode(),
             "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
        b.update(more)
        return b

    ops = {"akid": cluster.ops[0], "secret": cluster.ops[1]}
    st, out = signed_call(cluster.a, "TrentService.ImportKeyMaterial",
                          body(off_a, os.urandom(32)), **ops)
    assert st == 200, out
    id1 = out["KeyMaterialId"]
    old = app_a.encrypt(KeyId=kid, Plaintext=b"old")["CiphertextBlob"]
    bodies = [(cluster.a, body(off_a, os.urandom(32), ImportType="NEW_KEY_MATERIAL")),
              (cluster.b, body(off_b, os.urandom(32), ImportType="NEW_KEY_MATERIAL"))]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda nb: signed_call(nb[0], "TrentService.ImportKeyMaterial",
                                                       nb[1], **ops), bodies))
    won = [out for st, out in results if st == 200]
    lost = [out["__type"] for st, out in results if st != 200]
    assert len(won) == 1 and lost in (["KMSInvalidStateException"], ["ConflictException"]), \
        results
    id2 = won[0]["KeyMaterialId"]
    st, out = signed_call(cluster.b, "TrentService.RotateKeyOnDemand", {"KeyId": kid}, **ops)
    assert st == 200, out

    def current_on_a():
        st, out = signed_call(cluster.a, "TrentService.DescribeKey", {"KeyId": kid}, **ops)
        return st == 200 and out["KeyMetadata"]["CurrentKeyMaterialId"] == id2
    assert eventually(current_on_a, 20)
    st, out = signed_call(cluster.a, "TrentService.ListKeyRotations",
                          {"KeyId": kid, "IncludeKeyMaterial": "ALL_KEY_MATERIAL"}, **ops)
    assert st == 200, out
    assert [(r["KeyMaterialId"], r["KeyMaterialState"]) for r in out["Rotations"]] == [
        (id1, "NON_CURRENT"), (id2, "CURRENT")]
    new = app_a.encrypt(KeyId=kid, Plaintext=b"new")["CiphertextBlob"]
    for app in (app_a, app_b):
        assert app.decrypt(CiphertextBlob=old)["Plaintext"] == b"old"
        assert app.decrypt(CiphertextBlob=new)["Plaintext"] == b"new"


def test_a_token_signed_on_one_node_verifies_through_the_other_nodes_jwks(cluster):
    """After a rotation on node A, A keeps signing with the old version until the lead has
    passed, and node B publishes the new version before A signs with it, so a verifier
    fetching B's JWK Set accepts every token A signs."""
    import jwt as pyjwt
    off = kms(cluster.a, cluster.ops)
    kid = off.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    st, out = signed_call(cluster.a, "HsmdJwt.EnableJwtSigning", {"KeyId": kid},
                          akid=cluster.ops[0], secret=cluster.ops[1])
    assert st == 200, out

    def token():
        st, out = signed_call(cluster.a, "HsmdJwt.SignToken",
                              {"KeyId": kid, "Claims": {"sub": "svc"}},
                              akid=cluster.app[0], secret=cluster.app[1])
        assert st == 200, out
        return out

    def b_kids():
        st, body, _ = cluster.b.get("/.well-known/jwks.json")
        assert st == 200, body
        return {k["kid"] for k in json.loads(body)["keys"]}

    def verifies_on_b(tok):
        client = pyjwt.PyJWKClient(cluster.b.endpoint + "/.well-known/jwks.json",
                                   cache_jwk_set=False)
        try:
            key = client.get_signing_key_from_jwt(tok)
        except pyjwt.exceptions.PyJWKClientError:
            return False
        return pyjwt.decode(tok, key.key, algorithms=["ES256"])["sub"] == "svc"

    assert eventually(lambda: verifies_on_b(token()["Token"]), 20)
    before = int(time.time())
    st, out = signed_call(cluster.a, "TrentService.RotateKeyOnDemand", {"KeyId": kid},
                          akid=cluster.ops[0], secret=cluster.ops[1])
    assert st == 200, out
    after = time.time()
    first = token()
    assert first["IssuedAt"] < before + JWT_LEAD, "too slow to observe the lead"
    assert first["Kid"] == f"{kid}.v1"
    assert verifies_on_b(first["Token"])
    assert eventually(lambda: f"{kid}.v2" in b_kids(), JWT_LEAD), \
        "node B never published version 2"
    # Every token A signs verifies through B; the first of version 2 comes after B has it.
    new = None
    while new is None and time.time() < after + JWT_LEAD + 5:
        t = token()
        assert verifies_on_b(t["Token"]), t["Kid"]
        # Within the lead of the earliest the rotation can be dated: v1; from the second
        # after the lead of the latest: v2.
        if t["IssuedAt"] <= before + JWT_LEAD:
            assert t["Kid"] == f"{kid}.v1", t
        if t["IssuedAt"] >= int(after) + JWT_LEAD + 1:
            assert t["Kid"] == f"{kid}.v2", t
        if t["Kid"] == f"{kid}.v2":
            new = t
        time.sleep(0.1)
    assert new is not None, "node A never signed with version 2"
    assert before + JWT_LEAD + 1 <= new["IssuedAt"]


JWT_MAX_AGE = (10 + 2) // 4  # the JWK Set's max-age under JWT_FLAGS


def test_the_jwks_outlives_a_short_store_outage(cluster, pg):
    """With the store out of reach a node serves the last JWK Set it built, so a verifier
    whose cached copy expired still verifies the tokens out there (no key can change
    meanwhile), asking the store again at most once a second, and for at most max-age
    past the document's due rebuild; then it answers 500, and 200 again once the store
    is back."""
    import jwt as pyjwt
    off = kms(cluster.a, cluster.ops)
    kid = off.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    st, out = signed_call(cluster.a, "HsmdJwt.EnableJwtSigning", {"KeyId": kid},
                          akid=cluster.ops[0], secret=cluster.ops[1])
    assert st == 200, out
    st, out = signed_call(cluster.a, "HsmdJwt.SignToken", {"KeyId": kid, "Claims": {"sub": "s"}},
                          akid=cluster.app[0], secret=cluster.app[1])
    assert st == 200, out
    token, url = out["Token"], cluster.a.endpoint + "/.well-known/jwks.json"
    st, served, _ = cluster.a.get("/.well-known/jwks.json")
    assert st == 200 and kid.encode() in served
    said = cluster.a.read_log().count("the last document is served")
    pg.ctl("halt")
    try:
        halted = time.time()
        # The document fetched just now is due again within a second (the store cache's
        # lifetime, rounded up): up to max-age past that, it is still served.
        while time.time() < halted + JWT_MAX_AGE:
            st, body, _ = cluster.a.get("/.well-known/jwks.json")
            assert (st, body) == (200, served), (round(time.time() - halted, 1), st, body)
            client = pyjwt.PyJWKClient(url, cache_jwk_set=False)
            key = client.get_signing_key_from_jwt(token).key
            assert pyjwt.decode(token, key, algorithms=["ES256"])["sub"] == "s"
            time.sleep(0.2)
        assert eventually(lambda: cluster.a.get("/.well-known/jwks.json")[0] == 500,
                          JWT_MAX_AGE + 3)
        retries = cluster.a.read_log().count("the last document is served") - said
        assert 1 <= retries <= time.time() - halted + 1, retries
    finally:
        pg.ctl("resume")
    assert eventually(lambda: cluster.a.get("/.well-known/jwks.json")[0] == 200, 20)


def test_a_hanging_store_holds_up_one_jwks_request_not_all(cluster, pg):
    """A store that stops answering (frozen: hsmd waits out its own limit, 20 s) holds up
    the request that rebuilds the JWK Set, not the others: while it waits they are served
    the last document at once, within its max-age past its due rebuild."""
    import urllib.request
    off = kms(cluster.a, cluster.ops)
    kid = off.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    st, out = signed_call(cluster.a, "HsmdJwt.EnableJwtSigning", {"KeyId": kid},
                          akid=cluster.ops[0], secret=cluster.ops[1])
    assert st == 200, out
    url = cluster.a.endpoint + "/.well-known/jwks.json"
    fetched = time.time()
    st, served, _ = cluster.a.get("/.well-known/jwks.json")
    assert st == 200 and kid.encode() in served

    def get():
        try:
            with urllib.request.urlopen(url, timeout=1.5) as r:
                return r.status, r.read()
        except OSError as e:
            return None, str(e)

    pg.freeze()
    try:
        # The document is due again within a second, and served up to max-age past that.
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            answers = []
            while time.time() < fetched + JWT_MAX_AGE - 0.3:
                answers.append(pool.submit(get))
                time.sleep(0.2)
            answers = [a.result() for a in answers]
    finally:
        pg.thaw()
    late = [a for a in answers if a != (200, served)]
    assert len(answers) >= 10 and len(late) <= 1, late
    assert eventually(lambda: cluster.a.get("/.well-known/jwks.json")[0] == 200, 30)


def test_hsmctl_works_on_the_shared_store_beside_running_nodes(cluster, tmp_path):
    """`hsmctl --store` key commands write to the store the nodes serve; the nodes see
    the new key at once and a disabled one within the cache lifetime."""
    quorum = [x for c in ("alice", "bob", "dave") for x in ("--share", cluster.files[c])]
    audit_dir = str(tmp_path / "operator")
    p = hsmctl("key", "create", "--data-dir", audit_dir, *quorum, "--description", "offline",
               "--alias", "alias/made-offline", *IDENTITY, store=cluster.store)
    kid = re.search(r"^key: (\S+)$", p.stdout, re.M).group(1)
    app = kms(cluster.b, cluster.app)
    blob = app.encrypt(KeyId="alias/made-offline", Plaintext=b"o")["CiphertextBlob"]
    hsmctl("key", "disable", "--data-dir", audit_dir, *quorum, kid, store=cluster.store)
    assert eventually(lambda: not _try(lambda: app.decrypt(CiphertextBlob=blob)), 20)
    # hsmctl's own audit trail, in --data-dir, records both changes.
    ops = [r.get("op") for r in audit_records(audit_dir)]
    assert "CreateKey" in ops and "DisableKey" in ops, ops


def test_a_password_in_store_on_the_command_line_is_masked(pg, tmp_path):
    """Every user may read a process's arguments (ps, /proc/PID/cmdline): hsmd and
    hsmctl mask a password given in --store there at once, connect with it all the
    same, and say where it belongs instead."""
    store = pg.database("masked")
    password = urllib.parse.urlsplit(store).password
    assert password and len(password) >= 8, store
    hidden = store.replace(f":{password}@", ":" + "*" * len(password) + "@")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    p = subprocess.run([HSMCTL, "--store", store, "init", "--data-dir", str(tmp_path / "ops"),
                        "--share-dir", str(tmp_path / "shares"), "--shares", "2",
                        "--threshold", "2", "--admin", "ops"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "holds a password" in p.stderr and "~/.pgpass" in p.stderr, p.stderr
    assert password not in p.stdout + p.stderr
    server = Hsmd(["--store", store, "--node-id", "masked"])
    try:
        with open(f"/proc/{server.proc.pid}/cmdline", "rb") as f:
            args = f.read().decode().split("\0")
        assert password not in " ".join(args), args
        assert hidden in args, args
        assert "holds a password" in server.read_log(), server.read_log()
        # The node runs on the store it was given: sealed, as init left it.
        st, body, _ = server.get("/readyz")
        assert json.loads(body)["state"] == "sealed", body
        # A reload reads the arguments again: the store did not change.
        server.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: "configuration read again" in server.read_log())
        assert "store changed" not in server.read_log(), server.read_log()
    finally:
        server.cleanup()


def test_hsmctl_reads_the_shared_store_as_it_is(cluster, pg, tmp_path):
    """The offline commands that only read (status, the unseal check, user list) open the
    shared store as it is, beside the running nodes: they report what the nodes serve, and
    a database that holds no store is reported as such, not made into one."""
    data = str(tmp_path / "operator")
    node = admin(cluster.a, "Status", {}, akid=cluster.ops[0], secret=cluster.ops[1])
    kms(cluster.a, cluster.ops).create_key(Description="counted offline")
    listed = len(listed_key_ids(kms(cluster.b, cluster.ops)))
    p = hsmctl("status", "--data-dir", data, store=cluster.store)
    fields = dict(l.split(": ", 1) for l in p.stdout.splitlines() if ": " in l)
    assert fields["store"] == node["StoreId"], (p.stdout, node)
    # hsmctl's own keystore is sealed: no share was given to it.
    assert fields["state"] == "sealed" and fields["quorum"] == "3", p.stdout
    assert int(fields["keys"]) == listed, (p.stdout, listed)
    latest = int(pg.sql(cluster.store, "SELECT max(version) FROM schema_version"))
    assert int(fields["schema"]) == latest, p.stdout

    quorum = [cluster.files[c] for c in ("bob", "dave", "erin")]
    p = hsmctl("unseal", "--data-dir", data, *quorum, store=cluster.store)
    assert f"reconstruct the master key of store {node['StoreId']}" in p.stdout, p.stdout
    p = hsmctl("unseal", "--data-dir", data, *quorum[:2], store=cluster.store, check=False)
    assert p.returncode != 0 and "reconstruct" not in p.stdout, p.stdout + p.stderr

    p = hsmctl("user", "list", "--data-dir", data, store=cluster.store)
    names = set(re.findall(r"^UserName: (\S+)$", p.stdout, re.M))
    assert {"ops", "app"} <= names, p.stdout

    empty = pg.database("nostore")
    p = hsmctl("status", "--data-dir", data, store=empty, check=False)
    assert p.returncode != 0, p.stdout
    assert "no hsmd store in that PostgreSQL database" in p.stderr, p.stderr
    assert pg.sql(empty, "SELECT count(*) FROM information_schema.tables "
                         "WHERE table_schema = 'public'") == "0"


def test_concurrent_writes_through_both_nodes(cluster):
    """Tags written through both nodes at once on one key all land (no lost update)."""
    import concurrent.futures
    off = [kms(cluster.a, cluster.ops), kms(cluster.b, cluster.ops)]
    kid = off[0].create_key()["KeyMetadata"]["KeyId"]

    def tag(i):
        off[i % 2].tag_resource(KeyId=kid, Tags=[{"TagKey": f"k{i}", "TagValue": str(i)}])
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(tag, range(40)))
    tags = off[1].list_resource_tags(KeyId=kid, Limit=50)["Tags"]
    assert {t["TagKey"] for t in tags} == {f"k{i}" for i in range(40)}
    # Rotations through both nodes at once: each makes one new version, none is lost.
    def rotate(i):
        return signed_call(cluster.a if i % 2 else cluster.b, "TrentService.RotateKeyOnDemand",
                           {"KeyId": kid}, akid=cluster.ops[0], secret=cluster.ops[1])
    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(rotate, range(6)))
    ok = sum(1 for st, _ in results if st == 200)
    assert ok >= 1 and all(st in (200, 400, 409) for st, _ in results), results
    # One that lost the race is told so, as KMS says a rotation in progress.
    for st, out in results:
        if st != 200:
            assert out.get("__type", "").endswith("ConflictException"), out
            assert "another rotation of this key was in progress" in str(out), out
    st, out = signed_call(cluster.b, "TrentService.ListKeyRotations", {"KeyId": kid},
                          akid=cluster.ops[0], secret=cluster.ops[1])
    assert st == 200 and len(out["Rotations"]) == ok, (ok, out)
    # One after the other, through A then at once through B (which has the key cached from
    # before A's rotation): both rotate; B's is not taken for a rotation racing A's.
    for first, then in ((cluster.a, cluster.b), (cluster.b, cluster.a)):
        off[0 if then is cluster.a else 1].describe_key(KeyId=kid)
        for node in (first, then):
            st, out = signed_call(node, "TrentService.RotateKeyOnDemand", {"KeyId": kid},
                                  akid=cluster.ops[0], secret=cluster.ops[1])
            assert st == 200, out
    st, out = signed_call(cluster.a, "TrentService.ListKeyRotations", {"KeyId": kid},
                          akid=cluster.ops[0], secret=cluster.ops[1])
    assert st == 200 and len(out["Rotations"]) == ok + 4, (ok, out)


def test_a_state_change_made_elsewhere_a_moment_ago_is_seen(cluster):
    """B has the key cached as Enabled; A schedules its deletion.  A CancelKeyDeletion
    through B at once cancels it: the cached state must not refuse it."""
    off_a, off_b = kms(cluster.a, cluster.ops), kms(cluster.b, cluster.ops)
    for _ in range(3):
        kid = off_a.create_key()["KeyMetadata"]["KeyId"]
        off_b.describe_key(KeyId=kid)  # B caches it Enabled
        off_a.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
        off_b.cancel_key_deletion(KeyId=kid)
        assert off_a.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "Disabled"
        # And the other way: B has it cached pending deletion; A cancels; B schedules again.
        off_b.describe_key(KeyId=kid)
        off_a.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
        off_b.describe_key(KeyId=kid)
        off_a.cancel_key_deletion(KeyId=kid)
        off_b.schedule_key_deletion(KeyId=kid, PendingWindowInDays=8)
        md = off_a.describe_key(KeyId=kid)["KeyMetadata"]
        assert md["KeyState"] == "PendingDeletion", md


def test_writes_on_a_key_whose_state_changed_elsewhere_a_moment_ago(cluster):
    """B has the key cached as Enabled; A schedules its deletion, or disables it.  B refuses
    at once what the key's new state refuses (KMS key state table), although its cached
    record still says Enabled: the write asks the state under the key's row lock.  Nothing
    is written.  And a refusal B would make on a stale cached record is not made."""
    off_a, off_b = kms(cluster.a, cluster.ops), kms(cluster.b, cluster.ops)
    grantee = "arn:aws:iam::111122223333:user/app"
    spare = off_a.create_key()["KeyMetadata"]["KeyId"]
    off_a.create_alias(AliasName="alias/moving-elsewhere", TargetKeyId=spare)
    for i in range(3):
        kid = off_a.create_key()["KeyMetadata"]["KeyId"]
        off_a.tag_resource(KeyId=kid, Tags=[{"TagKey": "kept", "TagValue": "1"}])
        off_b.describe_key(KeyId=kid)  # B caches it Enabled
        off_a.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
        refused = {
            "CreateGrant": lambda: off_b.create_grant(KeyId=kid, GranteePrincipal=grantee,
                                                      Operations=["Encrypt"]),
            "CreateAlias": lambda: off_b.create_alias(AliasName=f"alias/late-{i}",
                                                      TargetKeyId=kid),
            "UpdateAlias": lambda: off_b.update_alias(AliasName="alias/moving-elsewhere",
                                                      TargetKeyId=kid),
            "TagResource": lambda: off_b.tag_resource(
                KeyId=kid, Tags=[{"TagKey": "late", "TagValue": "1"}]),
            "UntagResource": lambda: off_b.untag_resource(KeyId=kid, TagKeys=["kept"]),
        }
        for op, call in refused.items():
            with pytest.raises(off_b.exceptions.KMSInvalidStateException,
                               match="is pending deletion") as e:
                call()
            assert kid in str(e.value), (op, e.value)
        assert off_a.list_grants(KeyId=kid)["Grants"] == []
        aliases = off_a.list_aliases()["Aliases"]
        assert not any(a["AliasName"] == f"alias/late-{i}" for a in aliases), aliases
        assert [a.get("TargetKeyId") for a in aliases
                if a["AliasName"] == "alias/moving-elsewhere"] == [spare], aliases
        assert off_a.list_resource_tags(KeyId=kid)["Tags"] == [
            {"TagKey": "kept", "TagValue": "1"}]
        # B now has it cached pending deletion; A cancels (the key is Disabled): B tags it at
        # once, and refuses a grant on it as disabled.
        off_b.describe_key(KeyId=kid)
        off_a.cancel_key_deletion(KeyId=kid)
        off_b.tag_resource(KeyId=kid, Tags=[{"TagKey": "back", "TagValue": "1"}])
        with pytest.raises(off_b.exceptions.DisabledException):
            off_b.create_grant(KeyId=kid, GranteePrincipal=grantee, Operations=["Encrypt"])
        # A grant on a key B has cached Enabled that A has just disabled: DisabledException.
        off_a.enable_key(KeyId=kid)
        off_b.describe_key(KeyId=kid)
        off_a.disable_key(KeyId=kid)
        with pytest.raises(off_b.exceptions.DisabledException):
            off_b.create_grant(KeyId=kid, GranteePrincipal=grantee, Operations=["Encrypt"])
        assert off_a.list_grants(KeyId=kid)["Grants"] == []


def test_a_node_of_another_account_is_refused(cluster):
    """The keys on the shared store are the account's (their ARNs, the policies' root
    principal): a node of another account_id would refuse every key request and make keys
    the others cannot manage, so it does not start; nor does one whose store it shares
    with a node started first, which recorded the account when it made a key."""
    kms(cluster.a, cluster.ops).create_key()
    with pytest.raises(RuntimeError) as e:
        node(cluster.store, "node-other-account", ["--account-id", "999988887777"])
    said = str(e.value)
    assert "hsmd exited with 2" in said and "belong to account 111122223333" in said, said


def test_node_started_before_the_ceremony(pg, tmp_path):
    """A node pointed at an empty store waits uninitialized, then unseals with the shares
    of a ceremony run after it started; a second ceremony on that store is refused."""
    store = pg.database("late")
    n = node(store, "early")
    try:
        st, out = signed_call(n, "HsmdAdmin.Status", {})
        assert out["State"] == "uninitialized", out
        files, _ = ceremony(str(tmp_path), store)
        st, out = signed_call(n, "HsmdAdmin.Status", {})
        assert (out["State"], out["Threshold"]) == ("sealed", 3), out
        unseal(n, files)
        p = hsmctl("init", "--data-dir", str(tmp_path / "again"), "--share-dir",
                   str(tmp_path / "again-shares"), store=store, check=False)
        assert p.returncode != 0 and "already initialized" in p.stderr, p.stderr
        assert not os.path.exists(tmp_path / "again-shares" / "share-1-of-3.share")
        assert n.get("/readyz")[0] == 200
        # Its trail began before the store was initialized: the store learns of it from
        # the scheduler's next pass, so a trail of this node taken away later is flagged.
        deadline = time.time() + 30
        while not pg.sql(store, "SELECT count(*) FROM meta WHERE name = 'audit_trail:early'") \
                == "1":
            assert time.time() < deadline, "the store never recorded the node's trail"
            time.sleep(0.2)
    finally:
        n.cleanup()


def test_a_node_that_would_trust_its_cache_for_good_is_warned(pg, tmp_path):
    """store_cache_ms = 0 means "until this node changes it": on a shared store, changes
    made through other nodes would never show here. Allowed (one node alone on
    PostgreSQL), but said at start."""
    store = pg.database("nocache")
    n = node(store, "trusting", ["--store-cache-ms", "0"])
    try:
        assert "store_cache_ms is 0 with a shared store" in n.read_log()
    finally:
        n.cleanup()
    n = node(store, "default")
    try:
        assert "store_cache_ms is 0" not in n.read_log()
    finally:
        n.cleanup()


def test_a_node_older_than_the_shared_schema_gives_up_the_scheduled_work(pg, tmp_path):
    """A newer hsmd migrating the shared store during an upgrade leaves this node a build
    that does not know the new tables: it stops running the scheduled work (its backups
    would leave them out), says so once rather than at every pass, and keeps serving."""
    store = pg.database("newer")
    files, ops = ceremony(str(tmp_path), store)
    n = node(store, "older", ROUNDS)
    try:
        unseal(n, files)
        assert eventually(lambda: gauge(n, "hsmd_scheduler_leader") == 1, 20)
        latest = int(pg.sql(store, "SELECT max(version) FROM schema_version"))
        pg.sql(store, f"INSERT INTO schema_version (version, applied) VALUES ({latest + 1}, 0)")
        assert eventually(lambda: gauge(n, "hsmd_scheduler_leader") == 0, 20)
        log = lambda: n.read_log()  # noqa: E731
        assert eventually(lambda: "cannot take the store's leadership" in log(), 20), log()
        time.sleep(2.5)  # two more scheduler rounds, each refused again
        assert log().count("cannot take the store's leadership") == 1, log()
        assert f"upgraded to schema {latest + 1} by a newer hsmd" in log(), log()
        st, out = signed_call(n, "TrentService.ListKeys", {}, akid=ops[0], secret=ops[1])
        assert st == 200, out
    finally:
        n.cleanup()


def refused_start(store, node_id, args, env=None):
    """Runs a node on store expecting its start to be refused as a setting's fault (exit
    status 2); its stderr."""
    from conftest import HSMD, free_port
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    full_env.update({"HSM_STORE": store}, **(env or {}))
    data = tempfile.mkdtemp(prefix="hsmd-refused-")
    try:
        p = subprocess.run([HSMD, "--data-dir", data, "--node-id", node_id,
                            "--allow-plaintext-loopback",
                            "--listen", f"127.0.0.1:{free_port()}"] + args,
                           capture_output=True, text=True, timeout=90, env=full_env)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    assert p.returncode == 2, (p.returncode, p.stderr)
    return p.stderr


def test_a_refused_start_leaves_the_shared_schema_to_the_nodes_serving_it(pg, tmp_path):
    """A newer node whose start is refused for its settings or its identity (another
    account than the store's keys, a node id a running node holds, an address in use, a
    quorum the custodians cannot meet) is refused before it brings the shared schema
    forward: the nodes still serving the older schema keep serving it and keep the
    scheduled work, and no upgrade is left for a later Startup record to claim.  A start
    that goes on then migrates as before, and its Startup record says so."""
    store = pg.database("upgrade")
    files, ops = ceremony(str(tmp_path), store)
    old = node(store, "old", ROUNDS)
    try:
        unseal(old, files)
        kms(old, ops).create_key()  # records the store's account
        assert eventually(lambda: gauge(old, "hsmd_scheduler_leader") == 1, 20)
        latest = int(pg.sql(store, "SELECT max(version) FROM schema_version"))
        # The store as the build before the last schema step left it (the step is idempotent).
        pg.sql(store, f"DELETE FROM schema_version WHERE version = {latest}")

        def schema():
            return int(pg.sql(store, "SELECT max(version) FROM schema_version"))

        def upgrades():
            return pg.sql(store, "SELECT count(*) FROM meta WHERE name LIKE 'schema_upgrade%'")

        refusals = [
            ("new", ["--account-id", "999988887777"], {},
             "belong to account 111122223333", "(account_id from --account-id)"),
            ("old", [], {}, "node_id 'old' is held by another running node",
             "(node_id from --node-id)"),
            ("new", ["--listen", f"127.0.0.1:{old.port}"], {},
             f"cannot listen on 127.0.0.1:{old.port}", "(listen from --listen)"),
            ("new", [], {"HSM_APPROVAL_QUORUM": "6"},
             "approval_quorum = 6, but the store has 0 enabled custodians",
             "(approval_quorum from HSM_APPROVAL_QUORUM)"),
        ]
        left = []
        for node_id, args, env, said, setting in refusals:
            err = refused_start(store, node_id, args, env)
            assert said in err and setting in err, err
            left.append((said, schema(), upgrades(), "schema migrated" in err))
            # Each refusal on its own: an upgrade one of them made is undone for the next.
            pg.sql(store, f"DELETE FROM schema_version WHERE version = {latest}")
            pg.sql(store, "DELETE FROM meta WHERE name LIKE 'schema_upgrade%'")
        assert left == [(r[3], latest - 1, "0", False) for r in refusals], left
        # The old node kept its leadership all along, and serves.
        assert gauge(old, "hsmd_scheduler_leader") == 1
        assert "cannot take the store's leadership" not in old.read_log(), old.read_log()
        st, out = signed_call(old, "TrentService.ListKeys", {}, akid=ops[0], secret=ops[1])
        assert st == 200 and len(out["Keys"]) == 1, out
    finally:
        old.cleanup()
    new = node(store, "new")
    try:
        assert schema() == latest
        assert f"PostgreSQL schema migrated from version {latest - 1} to {latest}" in \
            new.read_log(), new.read_log()
        starts = [r["extra"] for r in audit_records(new.data_dir) if r.get("op") == "Startup"]
        assert len(starts) == 1 and starts[0]["schema_migrated_from"] == str(latest - 1), \
            starts
        assert starts[0]["store_schema"] == str(latest), starts
    finally:
        new.cleanup()


def gauge(server, name):
    st, body, _ = server.get("/metrics")
    assert st == 200
    m = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    assert m, name
    return float(m.group(1))


def backups(server):
    d = os.path.join(server.data_dir, "backups")
    return sorted(f for f in os.listdir(d) if f.endswith(".hsmbak")) if os.path.isdir(d) else []


def test_one_node_at_a_time_runs_the_scheduled_work(pg, tmp_path):
    store = pg.database("leader")
    files, ops = ceremony(str(tmp_path), store)
    args = ["--store-cache-ms", str(CACHE_MS), "--backup-interval-seconds", "1"] + ROUNDS
    nodes = [Hsmd(["--node-id", f"node-{n}"] + args, env={"HSM_STORE": store}) for n in "cd"]
    try:
        for n in nodes:
            unseal(n, files)

        def one_leader():
            flags = [gauge(n, "hsmd_scheduler_leader") for n in nodes]
            return sorted(flags) == [0, 1] and nodes[flags.index(1)]
        leader = eventually(one_leader, 30)
        assert leader, "no single node took the store's leadership"
        follower = nodes[1 - nodes.index(leader)]
        # Scheduled backups (every scheduler round here) come from the leader alone.
        assert eventually(lambda: len(backups(leader)) >= 2, 40), leader.read_log()
        assert backups(follower) == [] and gauge(follower, "hsmd_scheduler_leader") == 0
        assert "runs the store's scheduled work" in leader.read_log()
        # The leader dies: the other node takes over within a few scheduler rounds.
        leader.stop(signal.SIGKILL)
        t0 = time.monotonic()
        assert eventually(lambda: gauge(follower, "hsmd_scheduler_leader") == 1, 20)
        assert time.monotonic() - t0 < 10
        assert eventually(lambda: len(backups(follower)) >= 1, 30), follower.read_log()
        # A sealed leader gives the work up, to a node that can do it.
        back = Hsmd(["--node-id", "node-e"] + args, env={"HSM_STORE": store})
        nodes.append(back)
        unseal(back, files)
        time.sleep(2.5)  # two scheduler rounds: it asks, and the live leader keeps the work
        assert gauge(back, "hsmd_scheduler_leader") == 0 and backups(back) == []
        admin(follower, "Seal", {}, akid=ops[0], secret=ops[1])
        assert eventually(lambda: gauge(back, "hsmd_scheduler_leader") == 1, 20)
        # The sealed node frees the store's lock first, then clears its flag and logs it.
        assert eventually(lambda: gauge(follower, "hsmd_scheduler_leader") == 0, 20)
        assert eventually(lambda: "no longer runs the store's scheduled work"
                          in follower.read_log(), 20), follower.read_log()
        assert eventually(lambda: len(backups(back)) >= 1, 30), back.read_log()
        # A stopped leader (SIGSTOP, a frozen VM: its connections stay open) holds the
        # lead only as a lease, which the server ends after leader_lease_seconds (5 s here;
        # its last statement was at most a round before the stop) without a statement.
        unseal(follower, files)
        back.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            assert eventually(lambda: gauge(follower, "hsmd_scheduler_leader") == 1, 60), \
                follower.read_log()
            took = time.monotonic() - t0
            assert took >= 3, f"the lease ended long before its time: {took:.1f} s"
            assert took < 20, f"the lease set is 5 s, not the default 30 s: {took:.1f} s"
        finally:
            back.proc.send_signal(signal.SIGCONT)
        # Woken, it finds its session gone and leaves the work to the new leader.
        assert eventually(lambda: gauge(back, "hsmd_scheduler_leader") == 0, 20), back.read_log()
        time.sleep(2.5)
        assert gauge(follower, "hsmd_scheduler_leader") == 1
    finally:
        for n in nodes:
            n.cleanup()


def test_a_new_leader_counts_the_backup_the_old_one_left_in_a_shared_backup_dir(pg, tmp_path):
    """Nodes sharing one backup_dir: the leader backs up at once, then dies; the node that
    takes over finds that backup in the directory (made after it started) and makes none
    until the interval has passed."""
    store = pg.database("sharedbackups")
    files, ops = ceremony(str(tmp_path), store)
    shared = str(tmp_path / "backups")
    args = ["--store-cache-ms", str(CACHE_MS), "--backup-interval-seconds", "3600",
            "--backup-dir", shared] + ROUNDS
    nodes = [Hsmd(["--node-id", f"node-{n}"] + args, env={"HSM_STORE": store}) for n in "fg"]

    def made():
        return sorted(f for f in os.listdir(shared) if f.endswith(".hsmbak"))
    try:
        for n in nodes:
            unseal(n, files)
        assert eventually(lambda: len(made()) == 1, 30), [n.read_log() for n in nodes]

        def one_leader():
            flags = [gauge(n, "hsmd_scheduler_leader") for n in nodes]
            return sorted(flags) == [0, 1] and nodes[flags.index(1)]
        leader = eventually(one_leader, 30)
        assert leader
        follower = nodes[1 - nodes.index(leader)]
        # The file is in place a moment before the leader's gauge says so.
        assert eventually(lambda: gauge(leader, "hsmd_backup_last_success_time_seconds") > 0,
                          10), leader.read_log()
        first = gauge(leader, "hsmd_backup_last_success_time_seconds")
        leader.stop(signal.SIGKILL)
        assert eventually(lambda: gauge(follower, "hsmd_scheduler_leader") == 1, 20)
        # Its flag is set at the start of its first round as the leader; the backup in the
        # directory is counted later in that round (the key work and the lead asked again
        # come between): polled, as for the old leader.
        assert eventually(lambda: gauge(follower, "hsmd_backup_last_success_time_seconds")
                          == first, 20), follower.read_log()
        time.sleep(3)  # three scheduler rounds as the leader
        assert made() and len(made()) == 1, (made(), follower.read_log())
        assert gauge(follower, "hsmd_backup_last_success_time_seconds") == first
    finally:
        for n in nodes:
            n.cleanup()


class Netns:
    """A network namespace joined to this one by a veth pair: a machine of its own on the
    network, which can be cut off without any connection being closed."""

    def __init__(self):
        self.name = f"hsmdit{os.getpid() % 100000}"
        self.host_ip, self.ip = "10.213.77.1", "10.213.77.2"
        self.made = False

    def _ip(self, *args, ns=False):
        cmd = (["ip", "netns", "exec", self.name] if ns else []) + ["ip", *args]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"{cmd}: {p.stderr}"

    def create(self):
        self._ip("netns", "add", self.name)
        self.made = True
        outer, inner = self.name + "a", self.name + "b"
        self._ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        self._ip("link", "set", inner, "netns", self.name)
        self._ip("addr", "add", self.host_ip + "/30", "dev", outer)
        self._ip("link", "set", outer, "up")
        self._ip("addr", "add", self.ip + "/30", "dev", inner, ns=True)
        self._ip("link", "set", inner, "up", ns=True)
        self._ip("link", "set", "lo", "up", ns=True)

    def cut(self):
        """Packets stop flowing both ways; every socket stays open on both ends."""
        self._ip("link", "set", self.name + "b", "down", ns=True)

    def run(self, *cmd, **kw):
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True,
                              text=True, timeout=60, **kw)

    def close(self):
        if self.made:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
            subprocess.run(["ip", "link", "del", self.name + "a"], capture_output=True,
                           timeout=30)


def _netns_unusable():
    """Why this machine cannot make a namespace joined by a veth pair and run in it (a
    container without the capability, no veth driver), or None when it can."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and the ip command"
    probe = Netns()
    probe.name += "p"
    try:
        probe.create()
        p = probe.run("true")
        return None if p.returncode == 0 else f"ip netns exec: {p.stderr.strip()}"
    except AssertionError as e:
        return f"cannot make a network namespace here: {e}"
    finally:
        probe.close()


NETNS_UNUSABLE = _netns_unusable()


@pytest.mark.skipif(NETNS_UNUSABLE is not None, reason=str(NETNS_UNUSABLE))
def test_the_leader_cut_off_from_the_store_is_replaced(tmp_path):
    """The leader's machine vanishes from the network (power lost, a cable cut): nothing
    closes its connections, yet PostgreSQL drops its session, and with it the leadership,
    within seconds, and the other node takes the scheduled work over; the cut-off node
    itself stops claiming it and says it cannot reach the store."""
    from conftest import HSMD, free_port
    pg, ns = Postgres(), Netns()
    a = None
    nodes = []
    try:
        ns.create()
        with open(os.path.join(pg.dir, "data", "postgresql.conf"), "a") as f:
            f.write(f"listen_addresses = '127.0.0.1,{ns.host_ip}'\n")
        with open(os.path.join(pg.dir, "data", "pg_hba.conf"), "a") as f:
            f.write(f"host all all {ns.ip}/32 scram-sha-256\n")
        pg.ctl("halt")
        pg.ctl("resume")
        store = pg.database("cut")
        files, _ = ceremony(str(tmp_path), store)
        # Node A in the namespace, reaching the server across the veth pair.
        port = free_port()
        log = open(tmp_path / "node-a.log", "w")
        a = subprocess.Popen(["ip", "netns", "exec", ns.name, HSMD, "--listen",
                              f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "a"),
                              "--allow-plaintext-loopback", "--node-id", "node-a",
                              "--backup-interval-seconds", "0"] + ROUNDS,
                             env=dict(os.environ, HSM_STORE=store.replace("127.0.0.1",
                                                                         ns.host_ip)),
                             stdout=log, stderr=subprocess.STDOUT)

        def get_a(path):
            p = ns.run("/usr/bin/python3", "-c",
                       "import sys, urllib.request, urllib.error\n"
                       f"try: r = urllib.request.urlopen('http://127.0.0.1:{port}{path}', "
                       "timeout=5); print(r.status); print(r.read().decode())\n"
                       "except urllib.error.HTTPError as e: print(e.code); "
                       "print(e.read().decode())")
            lines = p.stdout.splitlines()
            return (int(lines[0]), "\n".join(lines[1:])) if lines else (0, p.stderr)

        assert eventually(lambda: get_a("/healthz")[0] == 200, 30), open(log.name).read()
        for c in ("alice", "carol", "erin"):
            p = ns.run(HSMCTL, "--endpoint", f"http://127.0.0.1:{port}", "unseal", files[c])
            assert p.returncode == 0, p.stderr

        def a_leads():
            m = re.search(r"^hsmd_scheduler_leader (\d)$", get_a("/metrics")[1], re.M)
            return m is not None and m.group(1) == "1"
        assert eventually(a_leads, 30), open(log.name).read()
        b = node(store, "node-b", ROUNDS)
        nodes.append(b)
        unseal(b, files)
        time.sleep(2.5)  # two scheduler rounds: B asks, and A keeps the work
        assert gauge(b, "hsmd_scheduler_leader") == 0

        ns.cut()
        t0 = time.monotonic()
        assert eventually(lambda: gauge(b, "hsmd_scheduler_leader") == 1, 40), b.read_log()
        assert time.monotonic() - t0 < 30
        # hsmd_scheduler_leader reads the flag B sets before it logs the change.
        assert eventually(lambda: "runs the store's scheduled work" in b.read_log(), 20), \
            b.read_log()
        # The cut-off node gives the work up and is not ready: a load balancer moves on.
        assert eventually(lambda: not a_leads(), 30), open(log.name).read()
        st, body = get_a("/readyz")
        assert st == 503 and json.loads(body)["store"] is False, body
    finally:
        if a is not None:
            a.kill()
            a.wait()
        for n in nodes:
            n.cleanup()
        ns.close()
        pg.close()


def pkcs11_tool(endpoints, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_PKCS11_")}
    env["HSM_PKCS11_ENDPOINT"] = endpoints
    return subprocess.run(["pkcs11-tool", "--module", MODULE] + list(args), env=env,
                          capture_output=True, text=True, timeout=120)


def test_clients_fail_over_to_the_next_node(pg, tmp_path):
    store = pg.database("failover")
    files, ops = ceremony(str(tmp_path), store)
    a, b = node(store, "fo-a"), node(store, "fo-b")
    try:
        for n in (a, b):
            unseal(n, files)
        off = kms(a, ops)
        kid = off.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        pub = off.get_public_key(KeyId=kid)["PublicKey"]
        admin(a, "CreateUser", {"UserName": "signer", "Roles": ["crypto-user"]},
              akid=ops[0], secret=ops[1])
        k = admin(a, "CreateAccessKey", {"UserName": "signer"}, akid=ops[0], secret=ops[1])
        endpoints = f"{a.endpoint},{b.endpoint}"
        pin = f"{k['AccessKeyId']}:{k['SecretAccessKey']}"
        data = tmp_path / "msg"
        data.write_bytes(b"signed through whichever node answers")
        a.stop(signal.SIGKILL)  # node A dies without a word
        for tool_args in (["--login", "--pin", pin, "--sign", "-m", "ECDSA-SHA256",
                           "--id", kid.encode().hex(), "-i", str(data), "-o",
                           str(tmp_path / "sig")],):
            p = pkcs11_tool(endpoints, *tool_args)
            assert p.returncode == 0, p.stdout + p.stderr
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, utils
        raw = (tmp_path / "sig").read_bytes()
        der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                         int.from_bytes(raw[32:], "big"))
        serialization.load_der_public_key(pub).verify(der, data.read_bytes(),
                                                      ec.ECDSA(hashes.SHA256()))
        # hsmctl takes the same list.
        p = hsmctl("status", endpoint=endpoints)
        assert "Sealed: false" in p.stdout, p.stdout
        recs = audit_records(b.data_dir)
        assert any(r.get("op") == "Sign" and r.get("key_id") == kid for r in recs)
    finally:
        a.cleanup()
        b.cleanup()


def test_store_outage_and_postgres_restart(cluster, pg):
    app = kms(cluster.b, cluster.app)
    off = kms(cluster.a, cluster.ops)
    kid = off.create_key()["KeyMetadata"]["KeyId"]
    app.encrypt(KeyId=kid, Plaintext=b"before")
    pg.ctl("halt")
    try:
        # Within a probe period (5 s) both nodes say they are not ready, naming the store.
        for n in (cluster.a, cluster.b):
            assert eventually(lambda: readyz(n)[0] == 503, 20), readyz(n)
            st, body = readyz(n)
            assert body["store"] is False and body["state"] == "unsealed", body
        # A write cannot succeed; it fails with a KMS error, and the node stays up.  The
        # node's cached credentials (2 s) are gone by now: the failure comes before anyone
        # is authenticated.
        time.sleep(2.5)
        with pytest.raises(Exception) as e:
            off.create_key()
        assert re.search(r"KMSInternal|DependencyTimeout|ServiceUnavailable", str(e.value))
        # The answer names no part of the database (its log does, by request id).
        port = urllib.parse.urlsplit(cluster.store).port
        said = str(e.value).replace(e.value.response["ResponseMetadata"].get("RequestId", "-"), "")
        assert f":{port}" not in said and "PostgreSQL" not in said, e.value
        if "KMSInternal" in str(e.value):
            rid = e.value.response["ResponseMetadata"]["RequestId"]
            assert rid in str(e.value)
            assert eventually(lambda: f"request {rid} failed: " in cluster.a.read_log(), 5)
        assert cluster.a.get("/healthz")[0] == 200
    finally:
        pg.ctl("resume")
    for n in (cluster.a, cluster.b):
        assert eventually(lambda: readyz(n)[0] == 200, 20), readyz(n)
    # Reconnected: reads and writes work again on both nodes, with no restart of hsmd.
    assert eventually(lambda: _try(lambda: off.create_key()["KeyMetadata"]["KeyId"]), 20)
    assert eventually(lambda: _try(lambda: kms(cluster.b, cluster.ops).create_key()), 20)
    blob = app.encrypt(KeyId=kid, Plaintext=b"after")["CiphertextBlob"]
    assert kms(cluster.a, cluster.app).decrypt(CiphertextBlob=blob)["Plaintext"] == b"after"


def _requests(server, operation, outcome):
    st, body, _ = server.get("/metrics")
    assert st == 200
    m = re.search(rb'^hsmd_requests_total\{operation="%s",outcome="%s"\} (\S+)$'
                  % (operation.encode(), outcome.encode()), body, re.M)
    return float(m.group(1)) if m else 0.0


def test_store_outage_refusals_log_at_most_a_line_a_second(cluster, pg):
    """While the store is out of reach, a client with made-up credentials (whose access key
    cannot be looked up) makes a failure per request: the log gets at most a line a second,
    with a count of those left out, and /metrics counts them unavailable (the store's own
    gauge and alert say why), not as server errors that page HsmdErrors."""
    n = cluster.a
    errors0 = _requests(n, "ListKeys", "server_error")
    unavailable0 = _requests(n, "ListKeys", "unavailable")
    pg.ctl("halt")
    try:
        assert eventually(lambda: readyz(n)[0] == 503, 20), readyz(n)
        start = len(n.read_log())
        t0 = time.monotonic()
        sent = 60
        for i in range(sent):
            r = signed_request(n, "TrentService.ListKeys", {},
                               akid="AKIAUNKNOWN%09d" % i, secret="x" * 40)
            assert r.status_code in (500, 503), r.text
        time.sleep(1.1)
        r = signed_request(n, "TrentService.ListKeys", {}, akid="AKIAUNKNOWNLAST00000",
                           secret="x" * 40)
        assert r.status_code in (500, 503), r.text
        sent += 1
        took = time.monotonic() - t0
        lines = re.findall(r"request \S+ failed: [^\n]*", n.read_log()[start:])
        assert 2 <= len(lines) <= took + 2, lines
        left_out = sum(int(m) for m in re.findall(r"and (\d+) more internal failures",
                                                  "\n".join(lines)))
        assert len(lines) + left_out == sent, lines
        assert _requests(n, "ListKeys", "server_error") == errors0
        assert _requests(n, "ListKeys", "unavailable") - unavailable0 == sent
    finally:
        pg.ctl("resume")
    assert eventually(lambda: readyz(n)[0] == 200, 20), readyz(n)


def test_a_frozen_store_fails_requests_in_bounded_time(cluster, pg):
    """PostgreSQL stopped without its connections closing (SIGSTOP: a frozen VM, a hung
    disk) enforces none of its own timeouts: hsmd stops waiting by itself, answers
    DependencyTimeoutException instead of hanging, and works again once the store does.
    Meanwhile each node turns unready after one wait for its store probe (a round, 5 s,
    and the 20 s limit), not after other checks of the round have waited their own."""
    import threading
    import botocore.exceptions
    off = client(cluster.a, cluster.ops[0], cluster.ops[1], read_timeout=120)
    kid = off.create_key()["KeyMetadata"]["KeyId"]
    unready_after = {}
    watching = threading.Event()

    def watch():
        t0 = time.monotonic()
        while watching.is_set() and time.monotonic() - t0 < 60:
            st, body = readyz(cluster.b)
            if st == 503:
                unready_after["s"], unready_after["body"] = time.monotonic() - t0, body
                return
            time.sleep(0.5)

    watcher = threading.Thread(target=watch)
    # The freeze comes between rounds, not inside the round a new key's recount started
    # (its later steps would each wait out the limit first; see README "Monitoring").
    time.sleep(6)
    pg.freeze()
    watching.set()
    watcher.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(botocore.exceptions.ClientError) as e:
            off.tag_resource(KeyId=kid, Tags=[{"TagKey": "frozen", "TagValue": "yes"}])
        waited = time.monotonic() - t0
        assert e.value.response["Error"]["Code"] == "DependencyTimeoutException", e.value
        # The client-side limit (20 s), once or twice (the credential, then the change).
        assert waited < 50, waited
        # An authenticated caller is not told where the database is either.
        said = e.value.response["Error"]["Message"]
        assert "failed inside hsmd" in said, said
        assert "PostgreSQL" not in said and "127.0.0.1" not in said, said
        assert f":{urllib.parse.urlsplit(cluster.store).port}" not in said, said
        # A caller not authenticated (a made-up access key, whose lookup is what waits)
        # is told the store failed, not where it is.
        r = signed_request(cluster.a, "TrentService.ListKeys", {},
                           akid="AKIAZZZZZZZZZZZZZZZZ", secret="x" * 40)
        assert r.status_code == 503 and r.json()["__type"] == "DependencyTimeoutException", \
            r.text
        assert "failed inside hsmd" in r.json()["message"], r.text
        assert "PostgreSQL" not in r.text and "127.0.0.1" not in r.text, r.text
        watcher.join(60)
        assert "s" in unready_after, "a node stayed ready with its store frozen"
        # A round (5 s) and one wait (20 s), with room for a loaded machine: 40 s before.
        assert unready_after["s"] < 33, unready_after
        assert unready_after["body"]["store"] is False, unready_after
    finally:
        watching.clear()
        pg.thaw()
    assert eventually(lambda: _try(lambda: off.tag_resource(
        KeyId=kid, Tags=[{"TagKey": "thawed", "TagValue": "yes"}])), 30)
    tags = {t["TagKey"] for t in off.list_resource_tags(KeyId=kid)["Tags"]}
    assert "thawed" in tags and "frozen" not in tags, tags


class LateAnswers:
    """A TCP proxy to PostgreSQL that holds back, `delay` seconds, each answer holding the
    bytes `only`: a store answering one read late (a slow path, a busy server)."""

    def __init__(self, host, port):
        import socket
        import threading
        self.target, self.delay, self.only = (host, port), 0.0, None
        self.holding = threading.Event()  # set when an answer is being held back
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(c, s, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, True), daemon=True).start()

    def _pipe(self, src, dst, answers):
        try:
            while data := src.recv(65536):
                if answers and self.delay > 0 and self.only is not None and self.only in data:
                    self.holding.set()
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.close()
            except OSError:
                pass

    def close(self):
        self.listener.close()


def test_a_late_store_answer_counts_from_when_it_was_asked(cluster, pg):
    """A node's cached copy of a key or an alias is as old as the store's reading of it,
    not as its answer: read just before another node disables the key (or moves the
    alias) and answered late, it must not keep the old state store_cache_ms after that
    late answer, but only store_cache_ms after the read."""
    import threading
    u = urllib.parse.urlsplit(cluster.store)
    proxy = LateAnswers(u.hostname, u.port)
    query = "&".join(q for q in (u.query, "sslmode=disable&gssencmode=disable") if q)
    via = urllib.parse.urlunsplit(u._replace(
        netloc=u.netloc.replace(f":{u.port}", f":{proxy.port}"), query=query))
    late = node(via, "node-late")
    try:
        unseal(late, cluster.files)
        off = kms(cluster.a, cluster.ops)
        app = client(late, cluster.app[0], cluster.app[1], read_timeout=60)
        app.generate_random(NumberOfBytes=8)  # the caller's credential is read and cached
        kid = off.create_key()["KeyMetadata"]["KeyId"]
        other = off.create_key()["KeyMetadata"]["KeyId"]
        off.create_alias(AliasName="alias/late", TargetKeyId=kid)
        app.encrypt(KeyId=other, Plaintext=b"x")

        def served_after_a_change_during_a_late_read(only, use, change, refused):
            """How long after the change the node still served the old state."""
            done = []
            proxy.holding.clear()
            proxy.only, proxy.delay = only, 3.0
            first = threading.Thread(target=lambda: done.append(use()))
            first.start()
            # The node's read is in the store's hands, its answer held.
            assert proxy.holding.wait(20), "the node's read never reached the store"
            change()
            changed = time.monotonic()
            proxy.delay = 0.0
            first.join(60)
            assert done, "the first use did not complete"
            last_served = changed
            while not refused():
                last_served = time.monotonic()
                assert last_served - changed < 30, "the change never reached the node"
                time.sleep(0.05)
            return last_served - changed

        # A key disabled on another node while this one reads it: the answer comes 2.5 s
        # after the change, and the copy read before the change is too old to use by then.
        assert served_after_a_change_during_a_late_read(
            kid.encode(), lambda: app.encrypt(KeyId=kid, Plaintext=b"x"),
            lambda: off.disable_key(KeyId=kid),
            lambda: disabled_on(app, kid)) < CACHE_MS / 1000 + 0.5
        # An alias moved while this node reads it.
        off.enable_key(KeyId=kid)
        assert eventually(lambda: _try(lambda: app.encrypt(KeyId=kid, Plaintext=b"x")), 10)
        assert served_after_a_change_during_a_late_read(
            b"alias/late", lambda: app.encrypt(KeyId="alias/late", Plaintext=b"x"),
            lambda: off.update_alias(AliasName="alias/late", TargetKeyId=other),
            lambda: app.encrypt(KeyId="alias/late", Plaintext=b"x")["KeyId"].endswith(other)
        ) < CACHE_MS / 1000 + 0.5
    finally:
        late.cleanup()
        proxy.close()


def _try(fn):
    try:
        return fn() or True
    except Exception:
        return False


def certificates(server, who):
    out = admin(server, "ListCertificates", {}, akid=who[0], secret=who[1])["Certificates"]
    return {c["CertificateId"]: base64.b64decode(c["Certificate"]) for c in out}


def test_backup_of_the_shared_store(cluster, pg, tmp_path):
    off = kms(cluster.a, cluster.ops)
    kid = off.create_key(Description="in the backup")["KeyMetadata"]["KeyId"]
    off.create_alias(AliasName="alias/backed-up", TargetKeyId=kid)
    # A certificate stored through one node is the other's at once (no cache), and backed up.
    cert = self_signed("backed-up.example")
    cid = admin(cluster.a, "ImportCertificate", {"Certificate": base64.b64encode(cert).decode(),
                                                 "Label": "backed-up"},
                akid=cluster.ops[0], secret=cluster.ops[1])["CertificateId"]
    assert certificates(cluster.b, cluster.app)[cid] == cert
    blob = kms(cluster.a, cluster.app).encrypt(KeyId=kid, Plaintext=b"kept")["CiphertextBlob"]
    out = admin(cluster.b, "CreateBackup", {}, akid=cluster.ops[0], secret=cluster.ops[1])
    path = out["Path"]
    assert os.path.dirname(path) == os.path.join(cluster.b.data_dir, "backups"), out
    shares = [cluster.files[c] for c in ("bob", "dave", "erin")]
    share_args = [x for f in shares for x in ("--share", f)]
    # Into a single node's SQLite directory ...
    dest = tmp_path / "restored"
    hsmctl("restore", "--data-dir", str(dest), *share_args, path)
    # The header states the schema of the copy inside, a SQLite store at this build's
    # SQLite schema (which a restore leaves as it is), not the PostgreSQL schema's number.
    info = dict(l.split(": ", 1) for l in
                hsmctl("backup", "inspect", path).stdout.splitlines() if ": " in l)
    db = sqlite3.connect(str(dest / "hsmd.db"))
    try:
        restored_schema = db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    finally:
        db.close()
    assert info["schema"] == str(restored_schema), (info, restored_schema)
    single = Hsmd([], data_dir=str(dest))
    try:
        unseal(single, cluster.files, who=("bob", "dave", "erin"))
        app = kms(single, cluster.app)
        assert app.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
        assert kms(single, cluster.ops).describe_key(
            KeyId="alias/backed-up")["KeyMetadata"]["KeyId"] == kid
        assert certificates(single, cluster.app)[cid] == cert
    finally:
        single.cleanup()
    # ... and into another, empty PostgreSQL database, served by a new node.
    store2 = pg.database("restored")
    hsmctl("restore", "--data-dir", str(tmp_path / "restore-audit"), *share_args, path,
           store=store2)
    n = node(store2, "restored")
    try:
        unseal(n, cluster.files, who=("alice", "bob", "carol"))
        assert kms(n, cluster.app).decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
        assert kms(n, cluster.ops).describe_key(
            KeyId="alias/backed-up")["KeyMetadata"]["KeyId"] == kid
        assert certificates(n, cluster.app)[cid] == cert
    finally:
        n.cleanup()
    # A store that is not empty is never restored over.
    p = hsmctl("restore", "--data-dir", str(tmp_path / "again"), *share_args, path,
               store=cluster.store, check=False)
    assert p.returncode != 0 and "not empty" in p.stderr, p.stderr


@pytest.mark.skipif(not gdb_can_trace(), reason="killing hsmctl between a restore and its "
                    "record needs gdb")
def test_a_restore_into_the_shared_store_is_recorded_though_hsmctl_was_killed(pg, tmp_path):
    """The copy into the shared store commits the restore's outbox row with it: hsmctl
    killed before its Restore record leaves the row in the store, and the next offline
    command on the data directory records the restore in its stead."""
    data, shares = tmp_path / "single", tmp_path / "shares"
    hsmctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
           "--threshold", "2", "--admin", "ops")
    quorum = ["--share", str(shares / "share-1-of-2.share"),
              "--share", str(shares / "share-2-of-2.share")]
    (tmp_path / "backups").mkdir()
    p = hsmctl("backup", "create", "--data-dir", str(data), *quorum, "--dir",
               str(tmp_path / "backups"))
    path = dict(l.split(": ", 1) for l in p.stdout.splitlines() if ": " in l)["file"]
    store, audit = pg.database("restored_killed"), tmp_path / "restore-audit"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    env["HSM_STORE"] = store
    p = subprocess.run(["gdb", "-q", "-nx", "-batch", "-ex",
                        'break hsmctl_local_audit_fields if $_streq(operation, "Restore")',
                        "-ex", "run", "-ex", "kill", "--args", HSMCTL, "restore", "--data-dir",
                        str(audit), *quorum, path],
                       capture_output=True, text=True, timeout=180, env=env)
    assert "Breakpoint 1, " in p.stdout and ") killed]" in p.stdout, p.stdout + p.stderr
    row = pg.sql(store, "SELECT request_id, operation, source FROM audit_outbox")
    request, op, source = row.split("|")
    assert (op, source) == ("hsmctl restore", "hsmctl"), row
    assert not [r for r in audit_records(str(audit)) if r.get("op") == "Restore"]
    p = hsmctl("user", "create", "app", "--roles", "crypto-user", "--data-dir", str(audit),
               *quorum, store=store)
    assert "1 offline change(s) an earlier hsmctl made without a record" in p.stderr, p.stderr
    assert pg.sql(store, "SELECT count(*) FROM audit_outbox") == "0"
    (rec,) = [r for r in audit_records(str(audit)) if r.get("op") == "RequestRecordRecovered"]
    assert rec["request_id"] == request and rec["extra"]["request_op"] == "hsmctl restore", rec


def test_no_password_in_logs_or_errors(cluster, pg):
    password = urllib.parse.urlsplit(cluster.store).password
    assert password
    u = urllib.parse.urlsplit(cluster.store)
    for n in (cluster.a, cluster.b):
        assert password not in n.read_log()
        # The start-up line names the store, without its credentials.
        assert f"store postgresql://{u.hostname}:{u.port}{u.path}\n" in n.read_log()
        st, body, _ = n.get("/metrics")
        assert password.encode() not in body
    bad = cluster.store.replace(password, password + "-wrong")
    p = subprocess.run([os.path.join(BUILD, "hsmd"), "--listen", "127.0.0.1:1", "--data-dir",
                        tempfile.mkdtemp(prefix="hsmd-badpw-"), "--allow-plaintext-loopback"],
                       env=dict(os.environ, HSM_STORE=bad), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0
    assert password not in p.stdout + p.stderr
    assert "store" in (p.stdout + p.stderr).lower()


def test_a_single_node_moves_to_the_shared_store(pg, tmp_path):
    """`hsmctl store copy` moves a stopped SQLite node's store, record for record, into an
    empty PostgreSQL database; its custodians then unseal nodes of the shared store."""
    data = str(tmp_path / "single")
    p = hsmctl("init", "--data-dir", data, "--share-dir", str(tmp_path / "shares"),
               "--shares", "3", "--threshold", "2", "--admin", "ops")
    shares = [str(tmp_path / "shares" / f"share-{i}-of-3.share") for i in (1, 2, 3)]
    with open(tmp_path / "shares" / "ops.credentials") as f:
        fields = dict(l.split(" = ", 1) for l in f.read().splitlines() if " = " in l)
    ops = (fields["aws_access_key_id"], fields["aws_secret_access_key"])
    single = Hsmd([], data_dir=data)
    try:
        for f in shares[:2]:
            hsmctl("unseal", f, endpoint=single.endpoint)
        off = kms(single, ops)
        kid = off.create_key(Description="moved")["KeyMetadata"]["KeyId"]
        off.create_alias(AliasName="alias/moved", TargetKeyId=kid)
        off.tag_resource(KeyId=kid, Tags=[{"TagKey": "team", "TagValue": "platform"}])
        doomed = off.create_key()["KeyMetadata"]["KeyId"]
        off.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
        admin(single, "CreateUser", {"UserName": "app", "Roles": ["crypto-user"]},
              akid=ops[0], secret=ops[1])
        k = admin(single, "CreateAccessKey", {"UserName": "app"}, akid=ops[0], secret=ops[1])
        app = (k["AccessKeyId"], k["SecretAccessKey"])
        blob = kms(single, app).encrypt(KeyId="alias/moved", Plaintext=b"moved")["CiphertextBlob"]
        store = pg.database("moved")
        # Not beside the running node: the directory is locked.
        p = hsmctl("store", "copy", "--data-dir", data, "--to", store, check=False)
        assert p.returncode != 0 and "in use" in p.stderr, p.stderr
    finally:
        single.stop()
    p = hsmctl("store", "copy", "--data-dir", data, store=store)
    assert "keys: 2" in p.stdout, p.stdout
    password = urllib.parse.urlsplit(store).password
    assert password not in p.stdout + p.stderr
    rec = [r for r in audit_records(data) if r.get("op") == "StoreCopy"]
    assert len(rec) == 1 and rec[0]["outcome"] == "success", rec
    assert rec[0]["extra"]["to"] == store.replace(f"hsmd:{password}@", ""), rec
    # The copy holds what the node held.
    n = node(store, "moved")
    try:
        for f in shares[1:]:
            hsmctl("unseal", f, endpoint=n.endpoint)
        assert kms(n, app).decrypt(CiphertextBlob=blob)["Plaintext"] == b"moved"
        off = kms(n, ops)
        assert off.describe_key(KeyId="alias/moved")["KeyMetadata"]["Description"] == "moved"
        assert off.list_resource_tags(KeyId=kid)["Tags"] == [
            {"TagKey": "team", "TagValue": "platform"}]
        assert off.describe_key(KeyId=doomed)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    finally:
        n.cleanup()
    # Never into a store that is not empty.
    p = hsmctl("store", "copy", "--data-dir", data, "--to", store, check=False)
    assert p.returncode != 0 and "not empty" in p.stderr, p.stderr
    rec = [r for r in audit_records(data) if r.get("op") == "StoreCopy"]
    assert [r["outcome"] for r in rec] == ["success", "error"], rec


def test_the_store_fails_over_to_a_promoted_standby(tmp_path):
    """A node given both PostgreSQL servers (postgresql://...@primary,standby/db) follows
    the primary: after the primary dies and the standby is promoted, the node serves
    again without a restart, with every key the standby had replayed."""
    primary = Postgres()
    standby_dir = tempfile.mkdtemp(prefix="hsmd-pg-standby-")
    n = None
    try:
        p = subprocess.run([PG_SERVER, "standby", standby_dir, primary.dir], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        standby_uri = p.stdout.strip().splitlines()[-1]
        store = primary.database("ha")  # replicated to the standby like any change
        pu, su = urllib.parse.urlsplit(store), urllib.parse.urlsplit(standby_uri)
        both = store.replace(pu.netloc, f"{pu.netloc},{su.hostname}:{su.port}")
        on_standby = urllib.parse.urlunsplit(su._replace(path="/ha"))
        files, ops = ceremony(str(tmp_path), both)
        n = node(both, "follows-primary")
        unseal(n, files)
        off = kms(n, ops)
        kid = off.create_key(Description="before the failover")["KeyMetadata"]["KeyId"]
        admin(n, "CreateUser", {"UserName": "app", "Roles": ["crypto-user"]},
              akid=ops[0], secret=ops[1])
        k = admin(n, "CreateAccessKey", {"UserName": "app"}, akid=ops[0], secret=ops[1])
        app = kms(n, (k["AccessKeyId"], k["SecretAccessKey"]))
        blob = app.encrypt(KeyId=kid, Plaintext=b"survives")["CiphertextBlob"]
        # Asynchronous replication: wait until the standby has replayed all of it.
        lsn = primary.sql(store, "SELECT pg_current_wal_lsn()")
        assert eventually(lambda: primary.sql(
            on_standby, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") == "t", 30)
        primary.ctl("halt")
        subprocess.run([PG_SERVER, "promote", standby_dir], check=True, capture_output=True,
                       timeout=120)
        made = eventually(lambda: _try(lambda: off.create_key(
            Description="after the failover")["KeyMetadata"]["KeyId"]), 30)
        assert made, "no key could be created after the failover:\n" + n.read_log()[-2000:]
        assert eventually(lambda: readyz(n)[0] == 200, 20), readyz(n)
        assert app.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives"
        # The new key is in the promoted server, which was the standby.
        assert primary.sql(on_standby, "SELECT count(*) FROM keys WHERE id = "
                                       f"'{made}'") == "1"
        assert urllib.parse.urlsplit(both).password not in n.read_log()
    finally:
        if n is not None:
            n.cleanup()
        subprocess.run([PG_SERVER, "stop", standby_dir], capture_output=True, timeout=120)
        primary.close()


def test_approvals_are_shared_by_the_nodes(pg):
    """approval_quorum on two nodes of one store: a request opened on one node is
    approved through either, and an approval is used once across both."""
    base = tempfile.mkdtemp(prefix="hsmd-cluster-approvals-")
    store = pg.database("hsm_approvals")
    shares = os.path.join(base, "shares")
    hsmctl("init", "--data-dir", os.path.join(base, "ceremony"), "--share-dir", shares,
           "--shares", "5", "--threshold", "3", "--custodians", ",".join(CUSTODIANS),
           "--admin", "ops", "--custodian-users", store=store)

    def creds(name):
        with open(os.path.join(shares, name + ".credentials")) as f:
            fields = dict(l.split(" = ", 1) for l in f.read().splitlines() if " = " in l)
        return fields["aws_access_key_id"], fields["aws_secret_access_key"]

    files = {c: os.path.join(shares, c + ".share") for c in CUSTODIANS}
    nodes = [Hsmd(["--node-id", name, "--store-cache-ms", str(CACHE_MS), "--approval-quorum",
                   "2"], env={"HSM_STORE": store}) for name in ("node-a", "node-b")]
    try:
        a, b = nodes
        for n in nodes:
            unseal(n, files)
        ops = creds("ops")
        off_a, off_b = kms(a, ops), kms(b, ops)
        kid = off_a.create_key()["KeyMetadata"]["KeyId"]
        e = raises("ApprovalRequiredException", off_a.schedule_key_deletion, KeyId=kid)
        approval = re.search(r"approval request ([0-9a-f]{32})", e["Error"]["Message"]).group(1)
        # The same request through node B finds the request node A opened.
        e = raises("ApprovalRequiredException", off_b.schedule_key_deletion, KeyId=kid)
        assert approval in e["Error"]["Message"]
        for server, who in ((b, "alice"), (a, "dave")):
            akid, secret = creds(who)
            admin(server, "ApproveRequest", {"ApprovalId": approval}, akid=akid, secret=secret)
        # Both nodes retry at once: one runs it; the others are told it was used or, when
        # they check the key after the winner's change, that it is pending deletion already.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(
                lambda n: signed_call(n, "TrentService.ScheduleKeyDeletion", {"KeyId": kid},
                                      akid=ops[0], secret=ops[1]), [a, b, a, b]))
        assert sorted(st for st, _ in outs) == [200, 400, 400, 400], outs
        assert all(o["__type"] in ("ApprovalRequiredException", "KMSInvalidStateException")
                   for st, o in outs if st == 400), outs
        # Whichever node ran it, the other sees it within its cache lifetime.
        for off in (off_a, off_b):
            assert eventually(lambda: off.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"]
                              == "PendingDeletion", CACHE_MS / 1000 + 2)
        got = admin(a, "GetApproval", {"ApprovalId": approval}, akid=ops[0], secret=ops[1])
        assert (got["State"], got["Approvers"]) == ("Used", ["alice", "dave"])
    finally:
        for n in nodes:
            n.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_a_node_id_is_held_by_one_running_node_at_a_time(pg, tmp_path):
    """Two running nodes with one node_id would settle each other's audit outbox rows and
    copy their trails over each other: the second waits for the id (a vanished node keeps it
    until the database ends its session), then refuses to start; a node that finds its id
    taken after its session was lost stops itself."""
    store = pg.database("nodeids")
    files, ops = ceremony(str(tmp_path), store)
    nodes = [node(store, "node-x")]
    try:
        unseal(nodes[0], files)
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as refused:
            node(store, "node-x")
        said = str(refused.value)
        assert time.monotonic() - t0 >= 20, said
        assert "hsmd exited with 2" in said, said
        assert "node_id 'node-x' is held by another running node on this store " \
               "(PostgreSQL session" in said and '"hsmd node node-x"' in said, said
        assert "waiting up to 20 s for it to be freed" in said, said
        assert "(node_id from" in said, said
        kms(nodes[0], ops).list_keys()  # the first one serves on
        # Stopped, it frees the id at once.
        nodes[0].stop()
        nodes.append(node(store, "node-x"))
        b = nodes[-1]
        unseal(b, files)
        # Its session to the store ends under it (a network cut, a restart of the database,
        # an administrator) while it is frozen, and another node takes the id in the gap.
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            holder = pg.sql(store, "SELECT pid FROM pg_stat_activity "
                                   "WHERE application_name = 'hsmd node node-x'")
            assert holder.isdigit(), holder
            assert pg.sql(store, f"SELECT pg_terminate_backend({holder}, 5000)") == "t"
            nodes.append(node(store, "node-x"))
            twin = nodes[-1]
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        # Within a scheduler period it finds out, and stops, non-zero.
        assert b.proc.wait(timeout=30) == 1, b.read_log()
        assert "this node's id was taken while its session to the store was lost; stopping" \
            in b.read_log(), b.read_log()
        unseal(twin, files)
        kms(twin, ops).list_keys()
        # Different ids share the store as before.
        nodes.append(node(store, "node-y"))
        unseal(nodes[-1], files)
        assert twin.proc.poll() is None
    finally:
        for n in nodes:
            n.cleanup()


def fnv31(node_id):
    """The node id's lock key of earlier releases (store_pg.c, pg_node_lock_key)."""
    h = 2166136261
    for b in node_id.encode():
        h = ((h ^ b) * 16777619) & 0xffffffff
    return h & 0x7fffffff


def test_two_node_ids_that_share_a_lock_key_both_run(pg, tmp_path):
    """hsm-node-58538 and hsm-node-1019222 meet on the 31-bit key earlier releases lock: both
    start, each under its own 63-bit key.  A node still holds the old key too, so a node of
    an earlier release with its id is kept out, and it is kept out by one."""
    store = pg.database("collide")
    files, ops = ceremony(str(tmp_path), store)
    first, second = "hsm-node-58538", "hsm-node-1019222"
    assert fnv31(first) == fnv31(second)
    nodes = [node(store, first)]
    holder = None
    try:
        nodes.append(node(store, second))
        for n in nodes:
            unseal(n, files)
            kms(n, ops).list_keys()
        assert "shares the lock key of earlier hsmd releases with the running node_id " \
            f"'{first}'" in nodes[1].read_log(), nodes[1].read_log()
        locks = pg.sql(store, "SELECT a.application_name, l.classid, l.objid, l.objsubid "
                              "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                              "WHERE l.locktype = 'advisory' AND a.datname = "
                              "current_database() ORDER BY 1, 4").splitlines()
        old = f"{1213418830}|{fnv31(first)}|2"
        assert f"hsmd node {first}|" + old in locks, locks
        mine = [l for l in locks if l.startswith(f"hsmd node {second}|")]
        assert len(mine) == 1 and int(mine[0].split("|")[1]) >= 2 ** 31, locks
        # A node of an earlier release holding the old key of an id (its session named as
        # theirs are) keeps this release's node with that id out.
        holder = subprocess.Popen(["psql", store + "?application_name=hsmd%20node%20node-z",
                                   "-Atq", "-c",
                                   f"SELECT pg_advisory_lock(1213418830, {fnv31('node-z')})",
                                   "-c", "SELECT pg_sleep(120)"], stdout=subprocess.DEVNULL)
        assert eventually(lambda: pg.sql(store, "SELECT count(*) FROM pg_locks WHERE "
                                                f"objid = {fnv31('node-z')}") == "1", 10)
        with pytest.raises(RuntimeError) as refused:
            node(store, "node-z")
        said = str(refused.value)
        assert "node_id 'node-z' is held by another running node on this store" in said, said
        assert "share one lock key" not in said, said
        # No lock of node-z's stays behind with the refused node.
        assert pg.sql(store, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND objsubid = 1 AND classid >= 2147483648 AND database = "
                             "(SELECT oid FROM pg_database WHERE datname = current_database())"
                      ) == "2"
    finally:
        if holder is not None:
            pg.sql(store, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'hsmd node node-z'")
            holder.kill()
            holder.wait()
        for n in nodes:
            n.cleanup()


def outbox_of(pg, store, node_id):
    out = pg.sql(store, "SELECT request_id, operation FROM audit_outbox "
                        f"WHERE node_id = '{node_id}' ORDER BY request_id")
    return [tuple(l.split("|")) for l in out.splitlines()]


def verify_trail(server):
    d = os.path.join(server.data_dir, "audit")
    files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jsonl"))
    return subprocess.run([HSMCTL, "audit", "verify", "--live"] + files, capture_output=True,
                          text=True)


@pytest.mark.skipif(not gdb_can_trace(), reason="killing hsmd between a commit and its record "
                                                "needs gdb, allowed to attach")
def test_the_leader_adopts_the_outbox_rows_of_a_node_that_never_comes_back(pg, tmp_path):
    """A node killed between a change and its record, that does not come back: the node that
    leads settles its rows in its own trail once they are older than
    outbox_adopt_after_seconds, holding the dead node's id meanwhile; a node that runs, and
    hsmctl's offline node ids, are left alone; the dead node, started again, finds nothing
    left to settle and records nothing twice."""
    store = pg.database("adopt")
    files, ops = ceremony(str(tmp_path), store)
    nodes = []
    try:
        # No scheduled backup on B: its outbox row, still there on a busy machine when B is
        # killed, would be a second row of B's for the leader to adopt.
        b = node(store, "node-b", ROUNDS + ["--backup-interval-seconds", "0"])
        nodes.append(b)
        unseal(b, files)
        # node-0 runs (sealed: it holds its id all the same), with a row as old as B's will be.
        nodes.append(node(store, "node-0", ROUNDS))
        old = "(extract(epoch from now()) * 1000)::bigint - 7200000"
        pg.sql(store, "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
                      f"VALUES ('node-0', 'runs', {old}, 'CreateKey'), "
                      f"('hsmctl-0123456789abcdef', 'offline', {old}, 'hsmctl user create')")
        # B's own rows so far (its unseal's) settled first: the kill leaves one row only.
        assert eventually(lambda: outbox_of(pg, store, "node-b") == [], 30), b.read_log()
        killed_before_its_record(
            b, lambda: kms(b, ops).create_key(Description="committed on b, then killed"))
        rows = outbox_of(pg, store, "node-b")
        assert len(rows) == 1, (rows, b.read_log())
        ((request_id, op),) = rows
        assert op == "CreateKey"
        pg.sql(store, "UPDATE audit_outbox SET created_ms = created_ms - 7200000 "
                      "WHERE node_id = 'node-b'")
        # The leader (the only node unsealed) adopts B's row at its first round.
        a = node(store, "node-a", ROUNDS + ["--outbox-adopt-after-seconds", "60"])
        nodes.append(a)
        unseal(a, files)
        assert eventually(lambda: outbox_of(pg, store, "node-b") == [], 30), a.read_log()
        (r,) = [r for r in audit_records(a.data_dir) if r.get("op") == "RequestRecordRecovered"]
        assert r["node"] == "node-a" and r["principal"] == "hsmd", r
        assert r["request_id"] == request_id, r
        extra = r["extra"]
        assert extra["request_op"] == "CreateKey" and extra["request_node"] == "node-b", r
        assert extra["request_principal"].endswith(":user/ops"), r
        assert extra["record_lost"] == (
            "node node-b did not come back within outbox_adopt_after_seconds (60 s) to record "
            "it; its own trail, not searched here, may hold the record"), r
        assert metric(a, "hsmd_audit_records_recovered_total") == 1
        assert metric(a, "hsmd_audit_records_adopted_total") == 1
        # Logged once the pass is over: after the rows go and the hold is released.
        assert eventually(lambda: "audit outbox: adopted 1 row(s) of node node-b"
                          in a.read_log(), 10), a.read_log()
        p = verify_trail(a)
        assert p.returncode == 0 and "VALID" in p.stdout, p.stdout + p.stderr
        # node-0 (which sorts before node-b, so that pass looked at it first) runs: its row
        # stays, and so does hsmctl's, which the node serving its data directory settles.
        assert outbox_of(pg, store, "node-0") == [("runs", "CreateKey")]
        assert outbox_of(pg, store, "hsmctl-0123456789abcdef") == [("offline", "hsmctl user create")]
        # B comes back after all: it starts at once (its id is free again), finds nothing of
        # its own to settle, and the change is on A's trail alone.
        b.log.close()
        t0 = time.monotonic()
        b = Hsmd(["--node-id", "node-b", "--store-cache-ms", str(CACHE_MS)] + JWT_FLAGS + ROUNDS,
                 env={"HSM_STORE": store}, data_dir=b.data_dir)
        nodes.append(b)
        assert time.monotonic() - t0 < 15, b.read_log()
        unseal(b, files)
        assert [r for r in audit_records(b.data_dir)
                if r.get("op") == "RequestRecordRecovered"] == []
        assert metric(b, "hsmd_audit_records_recovered_total") == 0
        assert [k for k in kms(b, ops).list_keys()["Keys"]
                if kms(b, ops).describe_key(KeyId=k["KeyId"])["KeyMetadata"].get("Description")
                == "committed on b, then killed"]
        assert len([r for r in audit_records(a.data_dir)
                    if r.get("request_id") == request_id]) == 1
    finally:
        for n in nodes:
            n.cleanup()


OLD_MS = "(extract(epoch from now()) * 1000)::bigint - 7200000"


def test_only_rows_older_than_the_threshold_are_adopted(pg, tmp_path):
    """A node whose oldest row is old gives up that row, not its young ones: those may be
    requests it is recording right now."""
    store = pg.database("adoptyoung")
    files, _ = ceremony(str(tmp_path), store)
    nodes = []
    try:
        pg.sql(store, "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
                      f"VALUES ('node-gone', 'old-1', {OLD_MS}, 'CreateKey'), "
                      f"('node-gone', 'old-2', {OLD_MS} + 1, 'CreateKey'), "
                      "('node-gone', 'young', (extract(epoch from now()) * 1000)::bigint, "
                      "'CreateKey')")
        a = node(store, "node-a", ROUNDS + ["--outbox-adopt-after-seconds", "60"])
        nodes.append(a)
        unseal(a, files)
        assert eventually(lambda: ("old-1", "CreateKey") not in outbox_of(pg, store, "node-gone"),
                          30), a.read_log()
        assert eventually(lambda: "adopted 2 row(s) of node node-gone" in a.read_log(), 10), \
            a.read_log()
        assert outbox_of(pg, store, "node-gone") == [("young", "CreateKey")]
        adopted = sorted(r["request_id"] for r in audit_records(a.data_dir)
                         if r.get("op") == "RequestRecordRecovered")
        assert adopted == ["old-1", "old-2"], adopted
    finally:
        for n in nodes:
            n.cleanup()


@pytest.mark.skipif(not gdb_can_trace(), reason="ending the hold's session at a chosen moment "
                                                "needs gdb, allowed to attach")
def test_an_adoption_whose_hold_was_lost_deletes_nothing(pg, tmp_path):
    """The hold's session ended after the adopted rows were recorded, before they go: the id
    may be the node's again, so the rows stay (the next pass finds the records written)."""
    store = pg.database("adoptlost")
    files, _ = ceremony(str(tmp_path), store)
    nodes = []
    try:
        pg.sql(store, "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
                      f"VALUES ('node-gone', 'old-1', {OLD_MS}, 'CreateKey')")
        script = tmp_path / "end-hold.gdb"
        script.write_text(
            "set pagination off\n"
            "break hsm_audit_append if $_streq(rec->operation, \"RequestRecordRecovered\")\n"
            "commands\n"
            f"shell psql '{store}' -Atc \"SELECT pg_terminate_backend(pid) FROM "
            "pg_stat_activity WHERE application_name = 'hsmd adopting node-gone'\"\n"
            "delete 1\n"
            "continue\n"
            "end\n"
            "run\n")
        gdb = ["gdb", "-q", "-nx", "-batch", "-x", str(script), "--args"]
        a = Hsmd(["--node-id", "node-a", "--store-cache-ms", str(CACHE_MS)] + JWT_FLAGS + ROUNDS
                 + ["--outbox-adopt-after-seconds", "60"], env={"HSM_STORE": store},
                 wrapper=gdb)
        nodes.append(a)
        unseal(a, files)
        assert eventually(lambda: "audit outbox: adopting the rows of nodes that did not come "
                                  "back" in a.read_log(), 30), a.read_log()
        assert "Breakpoint 1, " in a.read_log(), a.read_log()
        assert outbox_of(pg, store, "node-gone") == [("old-1", "CreateKey")]
        assert [r["request_id"] for r in audit_records(a.data_dir)
                if r.get("op") == "RequestRecordRecovered"] == ["old-1"]
    finally:
        for n in nodes:
            n.cleanup()


@pytest.mark.skipif(not gdb_can_trace(), reason="looking at the hold at a chosen moment "
                                                "needs gdb, allowed to attach")
def test_an_adoption_searches_its_trail_before_it_holds_the_id(pg, tmp_path):
    """The search of the adopter's trail, which for a node gone for months can span the whole
    trail, runs before the node's id is held: a node starting meanwhile does not wait for it."""
    store = pg.database("adoptsearch")
    files, _ = ceremony(str(tmp_path), store)
    nodes = []
    try:
        pg.sql(store, "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
                      f"VALUES ('node-gone', 'old-1', {OLD_MS}, 'CreateKey')")
        seen = tmp_path / "holds-at-search"
        script = tmp_path / "look.gdb"
        script.write_text(
            "set pagination off\n"
            "break hsm_audit_find_requests\n"
            "commands\n"
            f"shell psql '{store}' -Atc \"SELECT count(*) FROM pg_stat_activity WHERE "
            f"application_name = 'hsmd adopting node-gone'\" > {seen}\n"
            "delete 1\n"
            "continue\n"
            "end\n"
            "run\n")
        gdb = ["gdb", "-q", "-nx", "-batch", "-x", str(script), "--args"]
        a = Hsmd(["--node-id", "node-a", "--store-cache-ms", str(CACHE_MS)] + JWT_FLAGS + ROUNDS
                 + ["--outbox-adopt-after-seconds", "60"], env={"HSM_STORE": store},
                 wrapper=gdb)
        nodes.append(a)
        unseal(a, files)
        assert eventually(lambda: outbox_of(pg, store, "node-gone") == [], 30), a.read_log()
        assert "Breakpoint 1, " in a.read_log(), a.read_log()
        assert seen.read_text().strip() == "0", a.read_log()
    finally:
        for n in nodes:
            n.cleanup()


@pytest.mark.skipif(not gdb_can_trace(), reason="holding an adoption at a chosen moment "
                                                "needs gdb, allowed to attach")
def test_a_node_starting_outwaits_a_slow_adoption_of_its_id(pg, tmp_path):
    """An adoption stalled for 22 s holding the node's id (longer than the 20 s a start waits
    for a running holder): the node starting meanwhile waits for the hold and starts; the hold,
    too old, deletes nothing, and the node settles its own row."""
    store = pg.database("adoptslow")
    files, _ = ceremony(str(tmp_path), store)
    nodes = []
    try:
        pg.sql(store, "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
                      f"VALUES ('node-b', 'old-1', {OLD_MS}, 'CreateKey')")
        script = tmp_path / "stall.gdb"
        script.write_text(
            "set pagination off\n"
            "break hsm_audit_append if $_streq(rec->operation, \"RequestRecordRecovered\")\n"
            "commands\n"
            "shell sleep 22\n"
            "delete 1\n"
            "continue\n"
            "end\n"
            "run\n")
        gdb = ["gdb", "-q", "-nx", "-batch", "-x", str(script), "--args"]
        a = Hsmd(["--node-id", "node-a", "--store-cache-ms", str(CACHE_MS)] + JWT_FLAGS + ROUNDS
                 + ["--outbox-adopt-after-seconds", "60"], env={"HSM_STORE": store},
                 wrapper=gdb)
        nodes.append(a)
        unseal(a, files)
        assert eventually(lambda: "Breakpoint 1, " in a.read_log(), 30), a.read_log()
        t0 = time.monotonic()
        b = node(store, "node-b", ROUNDS)
        nodes.append(b)
        assert b.proc.poll() is None, b.read_log()
        assert time.monotonic() - t0 > 15, b.read_log()
        assert "for the adoption to end" in b.read_log(), b.read_log()
        unseal(b, files)
        assert eventually(lambda: outbox_of(pg, store, "node-b") == [], 30), b.read_log()
        assert eventually(lambda: "held too long to delete its rows" in a.read_log(), 30), \
            a.read_log()
        assert b.proc.poll() is None and a.proc.poll() is None
    finally:
        for n in nodes:
            n.cleanup()


def test_a_running_node_that_lost_its_session_outwaits_an_adoption_of_its_id(pg, tmp_path):
    """A running node whose store session dropped has no lock on its id until its next
    round; a leader may adopt its old rows meanwhile.  The node, finding its id held by that
    adoption, waits for the hold to end and keeps running (it used to stop itself)."""
    store = pg.database("adoptrunning")
    files, ops = ceremony(str(tmp_path), store)
    nodes = []
    try:
        z = node(store, "node-0", ROUNDS)
        nodes.append(z)
        unseal(z, files)
        pg.sql(store, "INSERT INTO audit_outbox (node_id, request_id, created_ms, operation) "
                      f"SELECT 'node-0', 'r' || g, {OLD_MS}, 'CreateKey' "
                      "FROM generate_series(1, 20000) g")
        os.kill(z.proc.pid, signal.SIGSTOP)  # a pause, with its session cut meanwhile
        try:
            pg.sql(store, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'hsmd node node-0'")
            a = node(store, "node-a", ROUNDS + ["--outbox-adopt-after-seconds", "60"])
            nodes.append(a)
            unseal(a, files)
            count = lambda: int(pg.sql(store, "SELECT count(*) FROM audit_outbox "
                                              "WHERE node_id = 'node-0'"))
            assert eventually(lambda: count() < 20000, 60, step=0.02), a.read_log()
        finally:
            os.kill(z.proc.pid, signal.SIGCONT)
        # Its scheduler's next rounds meet the adoption's holds and wait them out.
        time.sleep(8)
        assert z.proc.poll() is None, z.read_log()[-2000:]
        assert "this node's id was taken" not in z.read_log(), z.read_log()[-2000:]
        st, _, _ = z.get("/readyz")
        assert st == 200
        assert kms(z, ops).list_keys()["Keys"] is not None
    finally:
        for n in nodes:
            n.cleanup()


def test_a_new_node_id_is_flagged_unless_a_node_it_joins_runs(pg):
    """A trail that begins under a node id new to a shared store is a node joining it
    while a node whose trail the store has seen runs (unflagged, the known ids named);
    with none of them running it may be a stopped node whose trail was deleted whole and
    that was started again under another --node-id: flagged (AuditTrailBeginsAfterStore,
    and a warning in the log)."""
    base = tempfile.mkdtemp(prefix="hsmd-cluster-rename-")
    store = pg.database("rename")
    ceremony(base, store)
    nodes = []

    def head(n):
        return [r for r in audit_records(n.data_dir)[:6]]
    try:
        x = node(store, "node-x")
        nodes.append(x)
        x.stop()
        y = node(store, "node-y")  # node-x is stopped: flagged
        nodes.append(y)
        ev = [r for r in head(y) if r.get("op") == "AuditTrailBeginsAfterStore"]
        assert len(ev) == 1 and ev[0]["extra"]["known_nodes"] == "node-x", head(y)
        assert "none of them running" in y.read_log()
        z = node(store, "node-z")  # node-y runs: a node joining
        nodes.append(z)
        ev = [r for r in head(z) if r.get("op") == "AuditTrailJoinsStore"]
        assert len(ev) == 1, head(z)
        assert ev[0]["extra"] == {"node_id": "node-z", "known_nodes": "node-x,node-y"}, ev
        assert not [r for r in head(z) if r.get("op") == "AuditTrailBeginsAfterStore"]
    finally:
        for n in nodes:
            n.cleanup()
        shutil.rmtree(base, ignore_errors=True)


# ---- The disaster-recovery copies of backups, across a change of leader ---------------
# README ("Backups and disaster recovery"): the node that makes the backups (the leader)
# copies whatever backup_copy_dir lacks, and hsmd_backup_copies_missing counts what is
# still missing.  What a node counted when it last led is stale once another has led.


def copy_nodes(pg, tmp_path, database):
    """Two nodes, f and g, sharing a store, backup_dir and backup_copy_dir."""
    store = pg.database(database)
    files, ops = ceremony(str(tmp_path), store)
    shared, copies = str(tmp_path / "backups"), str(tmp_path / "dr")
    os.makedirs(copies, mode=0o700)
    args = ["--store-cache-ms", str(CACHE_MS), "--backup-interval-seconds", "3600",
            "--backup-dir", shared, "--backup-copy-dir", copies] + ROUNDS
    f = Hsmd(["--node-id", "node-f"] + args, env={"HSM_STORE": store})
    try:
        g = Hsmd(["--node-id", "node-g"] + args, env={"HSM_STORE": store})
    except BaseException:
        f.cleanup()
        raise
    return files, ops, shared, copies, f, g


def copy_backup(server, ops):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    env.update(AWS_ACCESS_KEY_ID=ops[0], AWS_SECRET_ACCESS_KEY=ops[1])
    p = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "backup", "create"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def copy_names(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".hsmbak"))


def copy_leader(nodes):
    flags = [gauge(n, "hsmd_scheduler_leader") for n in nodes]
    return sorted(flags) == [0, 1] and nodes[flags.index(1)]


def fail_a_copy(leader, ops, copies):
    """The copy directory's mount goes away for one backup, then comes back."""
    gone = copies + ".gone"
    os.rename(copies, gone)
    assert "Copied: false" in copy_backup(leader, ops)
    os.makedirs(copies, mode=0o700)
    for f in os.listdir(gone):
        shutil.copy2(os.path.join(gone, f), copies)
    shutil.rmtree(gone)


def test_a_new_leader_makes_the_copies_the_dead_leader_left_missing(pg, tmp_path):
    files, ops, shared, copies, f, g = copy_nodes(pg, tmp_path, "copiesafterdeath")
    try:
        unseal(f, files)  # f leads first: it counts the copies (none missing)
        assert eventually(lambda: gauge(f, "hsmd_scheduler_leader") == 1, 20)
        assert eventually(lambda: len(copy_names(shared)) == 1 and
                          copy_names(copies) == copy_names(shared), 20)
        unseal(g, files)
        os.kill(f.proc.pid, signal.SIGSTOP)  # f hangs: g takes the lead
        assert eventually(lambda: gauge(g, "hsmd_scheduler_leader") == 1, 30)
        os.kill(f.proc.pid, signal.SIGCONT)
        assert eventually(lambda: copy_leader([f, g]) is g, 30)
        fail_a_copy(g, ops, copies)
        assert gauge(g, "hsmd_backup_copies_missing") >= 1
        g.stop(signal.SIGKILL)  # the leader dies; f leads again, and looks again
        assert eventually(lambda: gauge(f, "hsmd_scheduler_leader") == 1, 30)
        assert eventually(lambda: copy_names(copies) == copy_names(shared), 10), \
            (copy_names(shared), copy_names(copies))
        assert gauge(f, "hsmd_backup_copies_missing") == 0
    finally:
        for n in (f, g):
            n.cleanup()


def test_a_node_that_gave_the_lead_up_reports_no_stale_missing_copies(pg, tmp_path):
    files, ops, shared, copies, f, g = copy_nodes(pg, tmp_path, "copiesstale")
    try:
        unseal(f, files)
        assert eventually(lambda: gauge(f, "hsmd_scheduler_leader") == 1, 20)
        unseal(g, files)
        fail_a_copy(f, ops, copies)
        assert gauge(f, "hsmd_backup_copies_missing") >= 1
        os.kill(f.proc.pid, signal.SIGSTOP)  # f hangs: g takes the lead and makes the copy
        assert eventually(lambda: gauge(g, "hsmd_scheduler_leader") == 1, 30)
        assert eventually(lambda: copy_names(copies) == copy_names(shared), 10)
        os.kill(f.proc.pid, signal.SIGCONT)
        assert eventually(lambda: gauge(f, "hsmd_scheduler_leader") == 0, 10)
        # What f counted while it led is no longer so: max(hsmd_backup_copies_missing) is 0.
        assert eventually(lambda: gauge(f, "hsmd_backup_copies_missing") == 0, 10)
    finally:
        for n in (f, g):
            n.cleanup()
