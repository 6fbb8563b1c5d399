"""`hsmctl rekey`: a new master key and new custodians' share files for a stopped
node.  Every secret the store holds (keys of every kind and version, imported
material, access keys, the audit signing key) is re-wrapped in one transaction:
afterwards the old shares open nothing, the new ones open everything, and the
audit trail verifies across it, and it is listed in the audit report with no
share in the trail.  A refused or interrupted rekey changes nothing.  On a shared
PostgreSQL store, the rekey is refused while any node runs, sealed or not."""
import base64
import glob
import hashlib
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

import pytest

from conftest import HSMCTL, Hsmd, client, signed_call
from helpers import Postgres, admin, audit_records, eventually, gdb_can_trace, raises
from test_backup import fields, hsmctl
from test_import import do_import, external_key
from test_sealed import create_first_officer, init_store, unseal


def share_args(shares, names):
    return [a for n in names for a in ("--share", shares[n])]


def rekey(data, shares, names, new_dir, *extra):
    return hsmctl("rekey", "--data-dir", data, *share_args(shares, names), "--share-dir", new_dir,
                  *extra)


def fingerprints(paths):
    """The share files as Init and Rekey records list them: "1:<16 hex of SHA-256>,2:..."."""
    def sha(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    return ",".join(f"{i}:{sha(p)}" for i, p in enumerate(paths, 1))


def store_bytes(data):
    with open(os.path.join(data, "hsmd.db"), "rb") as f:
        db = f.read()
    wal = os.path.join(data, "hsmd.db-wal")
    return db + (open(wal, "rb").read() if os.path.exists(wal) else b"")


def wrapped_rows(data):
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    try:
        rows = db.execute("SELECT key_id, version, wrapped FROM key_versions "
                          "ORDER BY key_id, version").fetchall()
        rows += db.execute("SELECT id, 0, wrapped_secret FROM access_keys ORDER BY id").fetchall()
        rows += db.execute("SELECT name, 0, value FROM meta ORDER BY name").fetchall()
        return rows
    finally:
        db.close()


@pytest.fixture(scope="module")
def stopped():
    """A 3-of-5 store with keys of every kind, used, then stopped."""
    base = tempfile.mkdtemp(prefix="hsmd-rekey-")
    data, shares = init_store(base)
    node = Hsmd(["--backup-interval-seconds", "0"], data_dir=data)
    try:
        for c in ("alice", "bob", "carol"):
            assert unseal(node, shares[c]).returncode == 0
        ops = create_first_officer(node, data, shares)
        admin(node, "CreateUser", {"UserName": "app", "Roles": ["crypto-user"]}, *ops)
        k = admin(node, "CreateAccessKey", {"UserName": "app"}, *ops)
        app = (k["AccessKeyId"], k["SecretAccessKey"])
        kms, use = client(node, *ops), client(node, *app)
        st = {"base": base, "data": data, "shares": shares, "ops": ops, "app": app}
        aes = kms.create_key(Description="aes")["KeyMetadata"]["KeyId"]
        st["ct1"] = use.encrypt(KeyId=aes, Plaintext=b"v1 secret",
                                EncryptionContext={"t": "1"})["CiphertextBlob"]
        status, _ = signed_call(node, "TrentService.RotateKeyOnDemand", {"KeyId": aes}, *ops)
        assert status == 200
        st["ct2"] = use.encrypt(KeyId=aes, Plaintext=b"v2 secret")["CiphertextBlob"]
        rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        ec = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        hmac = kms.create_key(KeySpec="HMAC_256",
                              KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
        st["sign"] = {}
        for key, alg in ((rsa, "RSASSA_PSS_SHA_256"), (ec, "ECDSA_SHA_256")):
            sig = use.sign(KeyId=key, Message=b"signed before", SigningAlgorithm=alg)["Signature"]
            st["sign"][key] = (alg, sig, kms.get_public_key(KeyId=key)["PublicKey"])
        st["hmac"] = hmac
        st["mac"] = use.generate_mac(KeyId=hmac, Message=b"mac me",
                                     MacAlgorithm="HMAC_SHA_256")["Mac"]
        imported = external_key(kms)
        st["material"] = os.urandom(32)
        do_import(kms, imported, st["material"])
        st["imported"] = imported
        st["ct_imported"] = use.encrypt(KeyId=imported, Plaintext=b"byok")["CiphertextBlob"]
        # Imported material erased before the rekey: a reimport after it must still match.
        erased = external_key(kms)
        st["erased_material"] = os.urandom(32)
        do_import(kms, erased, st["erased_material"])
        st["ct_erased"] = use.encrypt(KeyId=erased, Plaintext=b"erased")["CiphertextBlob"]
        kms.delete_imported_key_material(KeyId=erased)
        st["erased"] = erased
        p = hsmctl("audit", "pubkey", endpoint=node.endpoint, creds=ops)
        assert p.returncode == 0, p.stderr
        st["pubkey"] = os.path.join(base, "audit.pem")
        with open(st["pubkey"], "w") as f:
            f.write(p.stdout)
    finally:
        node.stop()
    yield st
    shutil.rmtree(base, ignore_errors=True)


def test_refused_rekeys_change_nothing(stopped):
    """Too few shares, a mistyped share, another store's shares, an existing share
    file in the new directory and a quorum outside 2..16: each refused by name,
    the store's bytes untouched, no share file left behind."""
    data, shares, base = stopped["data"], stopped["shares"], stopped["base"]
    before = wrapped_rows(data)
    new_dir = os.path.join(base, "refused")
    p = rekey(data, shares, ["alice", "bob"], new_dir)
    assert p.returncode == 1 and "1 more needed" in p.stderr, p.stderr
    bad = os.path.join(base, "mistyped.share")
    with open(shares["carol"]) as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    i = next(i for i, l in enumerate(lines) if l.startswith("value "))
    lines[i] = lines[i][:-2] + ("0" if lines[i][-2] != "0" else "1") + "\n"
    with open(bad, "w") as f:
        f.write("".join(lines))
    p = hsmctl("rekey", "--data-dir", data, "--share", shares["alice"], "--share",
               shares["bob"], "--share", bad, "--share-dir", new_dir)
    assert p.returncode == 1 and "mistyped.share" in p.stderr, p.stderr
    _, other = init_store(base, "other")
    p = rekey(data, other, ["alice", "bob", "carol"], new_dir)
    assert p.returncode == 1 and "share is for store" in p.stderr, p.stderr
    p = rekey(data, shares, ["alice", "bob", "carol"], new_dir, "--shares", "3",
              "--threshold", "1")
    assert p.returncode == 1 and "threshold must be" in p.stderr, p.stderr
    p = rekey(data, shares, ["alice", "bob", "carol"], new_dir, "--shares", "5",
              "--custodians", "x,y")
    assert p.returncode == 1 and "2 custodian names given for 5 shares" in p.stderr, p.stderr
    # Fewer shares than the current quorum of 3 do not lower it unasked.
    for extra in (["--custodians", "xena,yann"], ["--shares", "2"]):
        p = rekey(data, shares, ["alice", "bob", "carol"], new_dir, *extra)
        assert p.returncode == 1 and "2 new shares cannot keep the current quorum of 3: " \
            "give --threshold to lower it, or more shares" in p.stderr, p.stderr
    # One person under two spellings would hold two of the new shares: refused before
    # the shares are read (so with no record), nothing written.
    p = rekey(data, shares, ["alice", "bob", "carol"], new_dir, "--shares", "2",
              "--threshold", "2", "--custodians", "xena,Xena")
    assert p.returncode == 2 and "custodians xena and Xena differ only by case" in p.stderr, \
        p.stderr
    assert not os.path.exists(new_dir)  # a refused quorum makes no directory either
    # A share directory others may write to: they could replace the new shares before
    # the custodians take them.  Refused before the shares are read, nothing written.
    os.makedirs(new_dir)
    for mode in (0o777, 0o770):
        os.chmod(new_dir, mode)
        p = rekey(data, shares, ["alice", "bob", "carol"], new_dir, "--shares", "2",
                  "--threshold", "2", "--custodians", "xena,yann")
        assert p.returncode != 0 and f"{new_dir} is writable by" in p.stderr and \
            f"chmod go-w {new_dir}" in p.stderr, p.stderr
        assert os.listdir(new_dir) == []
    os.chmod(new_dir, 0o700)
    open(os.path.join(new_dir, "yann.share"), "w").close()
    p = rekey(data, shares, ["alice", "bob", "carol"], new_dir, "--shares", "2",
              "--threshold", "2", "--custodians", "xena,yann")
    assert p.returncode == 1 and "yann.share already exists" in p.stderr, p.stderr
    assert sorted(os.listdir(new_dir)) == ["yann.share"]
    assert wrapped_rows(data) == before
    # Those refused after the shares rebuilt the master key are on the trail as failed
    # rekeys (the quorum outside 2..16, the names, the file in the way); none succeeded.
    rekeys = [r for r in audit_records(data) if r.get("op") == "Rekey"]
    assert len(rekeys) == 5 and all(r["outcome"] == "error" for r in rekeys), rekeys


def test_a_rekey_keeps_the_quorum_and_says_when_names_go(stopped):
    """Without --threshold the current quorum stays (3, here of 4 new shares), and
    named current shares with no --custodians given make unnamed new ones: said on
    stderr.  With --custodians, or --threshold for fewer shares, nothing is said."""
    base, shares = stopped["base"], stopped["shares"]
    copy = os.path.join(base, "quorum-copy")
    shutil.copytree(stopped["data"], copy)
    warning = "warning: the current share files name their custodians and the new ones " \
        "will not: give --custodians to name them"
    p = rekey(copy, shares, ["alice", "bob", "carol"], os.path.join(base, "unnamed"),
              "--shares", "4")
    assert p.returncode == 0 and fields(p.stdout)["quorum"] == "3 of 4", p.stdout + p.stderr
    assert warning in p.stderr, p.stderr
    with open(os.path.join(base, "unnamed", "share-1-of-4.share")) as f:
        assert "custodian" not in f.read()
    copy = os.path.join(base, "quorum-copy-2")
    shutil.copytree(stopped["data"], copy)
    p = rekey(copy, shares, ["alice", "bob", "carol"], os.path.join(base, "named"),
              "--custodians", "xena,yann", "--threshold", "2")
    assert p.returncode == 0 and fields(p.stdout)["quorum"] == "2 of 2", p.stdout + p.stderr
    assert "warning" not in p.stderr, p.stderr


def test_a_rekey_keeps_the_new_shares_out_of_the_data_directory(stopped):
    """New share files in the data directory would give whoever holds it the quorum with
    the store: refused, named, before the store is opened or a file made."""
    data, shares = stopped["data"], stopped["shares"]
    before = wrapped_rows(data)
    trail = len(audit_records(data))
    real = os.path.realpath(data)
    for new_dir, why in ((data, f"--share-dir is the data directory, {real}:"),
                         (os.path.join(data, "new-shares"),
                          f"--share-dir {real}/new-shares is inside --data-dir {real}:"),
                         (os.path.join(data, "audit", ".."),
                          f"--share-dir is the data directory, {real}:")):
        listing = sorted(os.listdir(data))
        p = rekey(data, shares, ["alice", "bob", "carol"], new_dir)
        assert p.returncode == 1 and why in p.stderr, p.stderr
        assert "its holder would hold the quorum with the store; nothing was created" in \
            p.stderr, p.stderr
        assert sorted(os.listdir(data)) == listing
    assert wrapped_rows(data) == before and len(audit_records(data)) == trail


@pytest.mark.skipif(not gdb_can_trace(), reason="a rekey killed just before its commit is "
                    "made with gdb")
def test_a_rekey_killed_before_its_commit_leaves_a_pending_transcript(stopped):
    """hsmctl killed (SIGKILL) once its share files and transcript are written, just
    before the store commits: the store is on the old key, so the transcript left says
    it is pending and how to tell, never that the old shares no longer open the store.
    A rekey that commits leaves only the final transcript."""
    base, shares = stopped["base"], stopped["shares"]
    copy = os.path.join(base, "killed-copy")
    shutil.copytree(stopped["data"], copy)
    new_dir = os.path.join(base, "killed-shares")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    p = subprocess.run(["gdb", "-q", "-nx", "-batch", "-ex", "break hsm_ks_rekey_commit",
                        "-ex", "run", "-ex", "kill", "--args", HSMCTL, "rekey", "--data-dir",
                        copy, *share_args(shares, ["alice", "bob", "carol"]), "--share-dir",
                        new_dir, "--custodians", "a,b,c,d,e"],
                       capture_output=True, text=True, timeout=180, env=env)
    assert "Breakpoint 1, " in p.stdout, p.stdout + p.stderr
    names = sorted(os.listdir(new_dir))
    pending = [n for n in names if n.endswith(".txt.pending")]
    assert names == ["a.share", "b.share", "c.share", "d.share", "e.share"] + pending, names
    assert len(pending) == 1 and pending[0].startswith("rekey-"), names
    with open(os.path.join(new_dir, pending[0])) as f:
        text = f.read()
    old_set = re.search(r"^old share set: (\w+) ", text, re.M).group(1)
    new_set = re.search(r"^new share set: (\w+)$", text, re.M).group(1)
    assert "no longer opens this store" not in text, text
    assert "PENDING" in text and "still opens this store unless this rekey committed" in text
    assert f"split: {old_set} means nothing" in text and f"{new_set} means the rekey " \
        "committed" in text, text
    # What the pending transcript says is so: the store is on the old split.
    p = hsmctl("status", "--data-dir", copy)
    assert p.returncode == 0 and f"split: {old_set}\n" in p.stdout, p.stdout + p.stderr
    p = hsmctl("unseal", "--data-dir", copy, *[os.path.join(new_dir, c + ".share")
                                               for c in ("a", "b", "c")])
    assert p.returncode == 1 and "different split" in p.stderr, p.stderr
    p = hsmctl("unseal", "--data-dir", copy, shares["alice"], shares["bob"], shares["carol"])
    assert p.returncode == 0, p.stderr
    # A rekey that commits writes the final transcript and deletes the pending one.
    done_dir = os.path.join(base, "committed-shares")
    p = rekey(copy, shares, ["alice", "bob", "carol"], done_dir)
    assert p.returncode == 0, p.stderr
    out = fields(p.stdout)
    assert out["transcript"].endswith(".txt") and os.path.dirname(out["transcript"]) == done_dir
    assert not [n for n in os.listdir(done_dir) if n.endswith(".pending")], os.listdir(done_dir)
    with open(out["transcript"]) as f:
        text = f.read()
    assert "PENDING" not in text and f"old share set: {out['old share set']} (quorum 3 of 5): " \
        "no longer opens this store\n" in text, text
    # Unnamed new shares: the Rekey record lists their fingerprints and no custodians.
    done = [r for r in audit_records(copy) if r.get("op") == "Rekey"][-1]
    assert done["outcome"] == "success" and "custodians" not in done["extra"], done
    assert done["extra"]["share_sha256"] == fingerprints(
        [os.path.join(done_dir, f"share-{i}-of-5.share") for i in range(1, 6)]), done


def test_interrupted_rekey_leaves_the_old_shares_working(stopped):
    """A failure inside the store transaction (injected on its last rows) rolls
    everything back: the new share files are deleted, the old shares still
    unseal, the store's bytes are what they were."""
    data, shares, base = stopped["data"], stopped["shares"], stopped["base"]
    before = wrapped_rows(data)
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    db.execute("CREATE TRIGGER poison BEFORE UPDATE ON access_keys "
               "BEGIN SELECT RAISE(ABORT, 'injected'); END")
    db.commit()
    db.close()
    new_dir = os.path.join(base, "interrupted")
    try:
        p = rekey(data, shares, ["bob", "carol", "dave"], new_dir, "--shares", "3",
                  "--threshold", "2", "--custodians", "xena,yann,zoe")
    finally:
        db = sqlite3.connect(os.path.join(data, "hsmd.db"))
        db.execute("DROP TRIGGER poison")
        db.commit()
        db.close()
    assert p.returncode == 1, p.stdout
    assert "this rekey changed nothing" in p.stderr and "were deleted" in p.stderr, p.stderr
    assert os.listdir(new_dir) == []
    assert wrapped_rows(data) == before
    p = hsmctl("unseal", "--data-dir", data, shares["alice"], shares["dave"], shares["erin"])
    assert p.returncode == 0, p.stderr
    # The injected failure's record: the last Rekey on the trail (the refusals before it
    # in this module are there too).
    ev = [r for r in audit_records(data) if r.get("op") == "Rekey"]
    assert len(ev) == 6 and all(r["outcome"] == "error" for r in ev), ev


def test_rekey_then_everything_works_with_the_new_shares_only(stopped):
    data, shares, base = stopped["data"], stopped["shares"], stopped["base"]
    # A backup made before the rekey, offline, with the old shares.
    os.mkdir(os.path.join(base, "pre-rekey-backups"))
    p = hsmctl("backup", "create", "--data-dir", data, *share_args(shares, ["bob", "dave", "erin"]),
               "--dir", os.path.join(base, "pre-rekey-backups"))
    assert p.returncode == 0, p.stderr
    backup = fields(p.stdout)["file"]
    new_dir = os.path.join(base, "new-shares")
    p = rekey(data, shares, ["alice", "carol", "erin"], new_dir, "--shares", "3",
              "--threshold", "2", "--custodians", "xena,yann,zoe")
    assert p.returncode == 0, p.stderr
    out = fields(p.stdout)
    assert out["quorum"] == "2 of 3" and out["share set"] != out["old share set"]
    # AES (2 versions), RSA, EC, HMAC, the imported key; the erased material has nothing to wrap.
    assert "re-wrapped: 6 key versions, 2 access keys, the audit signing key" in p.stdout
    assert "open only with the old shares" in p.stdout
    new = {c: os.path.join(new_dir, c + ".share") for c in ("xena", "yann", "zoe")}
    for c, path in new.items():
        assert oct(os.stat(path).st_mode & 0o777) == "0o400"
        with open(path) as f:
            text = f.read()
        assert f"custodian {c}\n" in text and f"set {out['share set']}\n" in text
        with open(out["transcript"]) as f:
            assert hashlib.sha256(text.encode()).hexdigest() in f.read()
    # Audited: the sets and quorums, and the new share files as the Init record names a
    # ceremony's (each file's fingerprint, the custodians), never a share or a key.
    prints = fingerprints([new[c] for c in ("xena", "yann", "zoe")])
    ev = [r for r in audit_records(data) if r.get("op") == "Rekey" and r["outcome"] == "success"]
    assert len(ev) == 1, ev
    assert ev[0]["extra"] == {"old_share_set": out["old share set"], "old_threshold": "3",
                              "old_shares": "5", "share_set": out["share set"],
                              "threshold": "2", "shares": "3", "key_versions": "6",
                              "access_keys": "2", "share_sha256": prints,
                              "custodians": "xena,yann,zoe"}
    # Rekeying again over the same directory refuses to overwrite.
    p = rekey(data, {"x": new["xena"], "y": new["yann"]}, ["x", "y"], new_dir, "--shares", "3",
              "--threshold", "2", "--custodians", "xena,yann,zoe")
    assert p.returncode == 1 and "already exists" in p.stderr, p.stderr

    node = Hsmd(["--backup-interval-seconds", "0"], data_dir=data)
    try:
        p = unseal(node, shares["alice"])
        # Said whole, over the API too, and neutrally: the share's split and no more.
        assert p.returncode != 0 and f"share is of split {out['old share set']}; this store " \
            "or backup is of a different split: give its split's shares (`hsmctl status " \
            "--data-dir` names a store's, `hsmctl backup inspect` a backup's)" in p.stderr, \
            p.stderr
        # Unseal answers anyone: it names the share's set, never the store's current one.
        assert out["old share set"] in p.stderr and out["share set"] not in p.stderr, p.stderr
        assert unseal(node, new["zoe"]).returncode == 0
        assert unseal(node, new["xena"]).returncode == 0
        kms, use = client(node, *stopped["ops"]), client(node, *stopped["app"])  # access keys
        assert use.decrypt(CiphertextBlob=stopped["ct1"],
                           EncryptionContext={"t": "1"})["Plaintext"] == b"v1 secret"
        assert use.decrypt(CiphertextBlob=stopped["ct2"])["Plaintext"] == b"v2 secret"
        for key, (alg, sig, pub) in stopped["sign"].items():
            assert kms.get_public_key(KeyId=key)["PublicKey"] == pub
            assert use.verify(KeyId=key, Message=b"signed before", Signature=sig,
                              SigningAlgorithm=alg)["SignatureValid"]
            fresh = use.sign(KeyId=key, Message=b"signed after", SigningAlgorithm=alg)
            assert use.verify(KeyId=key, Message=b"signed after", Signature=fresh["Signature"],
                              SigningAlgorithm=alg)["SignatureValid"]
        assert use.generate_mac(KeyId=stopped["hmac"], Message=b"mac me",
                                MacAlgorithm="HMAC_SHA_256")["Mac"] == stopped["mac"]
        assert use.decrypt(CiphertextBlob=stopped["ct_imported"])["Plaintext"] == b"byok"
        # The erased material's digest still identifies it: the same material comes back.
        do_import(kms, stopped["erased"], stopped["erased_material"])
        assert use.decrypt(CiphertextBlob=stopped["ct_erased"])["Plaintext"] == b"erased"
        raises("IncorrectKeyMaterialException", do_import, kms, stopped["imported"],
               os.urandom(32))
    finally:
        node.stop()
    # The old shares open nothing the store holds; the audit trail verifies across the rekey.
    p = hsmctl("unseal", "--data-dir", data, shares["bob"], shares["carol"], shares["dave"])
    assert p.returncode == 1 and f"share is of split {out['old share set']}; this store or " \
        "backup is of a different split" in p.stderr, p.stderr
    assert "`hsmctl backup inspect` a backup's)" in p.stderr, p.stderr
    # The backup made before the rekey: the new shares are the newer ones, and not its own.
    new_args = share_args(new, ["xena", "yann"])
    p = hsmctl("backup", "verify", *new_args, backup)
    assert p.returncode == 1 and f"share is of split {out['share set']}; this store or " \
        "backup is of a different split" in p.stderr, p.stderr
    assert "replaced" not in p.stderr and "current" not in p.stderr, p.stderr
    p = hsmctl("backup", "verify", *share_args(shares, ["alice", "bob", "carol"]), backup)
    assert p.returncode == 0, p.stderr
    # The operator, on the data directory, reads which split is current.
    p = hsmctl("status", "--data-dir", data)
    assert p.returncode == 0 and f"split: {out['share set']}\n" in p.stdout, p.stdout + p.stderr
    with open(new["zoe"]) as f:
        assert f"set {out['share set']}\n" in f.read()
    p = hsmctl("audit", "verify", "--pubkey", stopped["pubkey"],
               *sorted(glob.glob(os.path.join(data, "audit", "*.jsonl"))))
    assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr


def share_value(path):
    """The secret part of a share file: its `value` line's hex."""
    with open(path) as f:
        values = [l.split(" ", 1)[1].strip() for l in f if l.startswith("value ")]
    assert len(values) == 1 and len(values[0]) >= 64, path
    return values[0]


def test_the_audit_trail_reports_the_rekey_and_holds_no_share(stopped):
    """After the rekey above: `audit report` lists it among the node events with both
    share sets, both quorums and the counts; `audit verify` with the audit public key
    taken before the rekey accepts the whole trail; and no share value, old or new,
    is anywhere in the data directory's audit files (in hex, either case, or base64)."""
    data, shares, base = stopped["data"], stopped["shares"], stopped["base"]
    files = sorted(glob.glob(os.path.join(data, "audit", "*.jsonl")))
    p = hsmctl("audit", "report", "--pubkey", stopped["pubkey"], "--json", *files)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["verified"]["valid"] and report["verified"]["signatures_checked"]
    assert report["verified"]["checkpoints_verified"] > 0, report["verified"]
    rekeys = [e for e in report["events"] if e["op"] == "Rekey"]
    # Five refused, one rolled back by an injected failure, the one that was made, and
    # one refused after it (its share files were in the way).
    assert [e["outcome"] for e in rekeys] == ["error"] * 6 + ["success", "error"], rekeys
    done = rekeys[6]["extra"]
    with open(os.path.join(base, "new-shares", "xena.share")) as f:
        new_set = next(l.split()[1] for l in f if l.startswith("set "))
    with open(shares["alice"]) as f:
        old_set = next(l.split()[1] for l in f if l.startswith("set "))
    prints = fingerprints([os.path.join(base, "new-shares", c + ".share")
                           for c in ("xena", "yann", "zoe")])
    assert done == {"old_share_set": old_set, "old_threshold": "3", "old_shares": "5",
                    "share_set": new_set, "threshold": "2", "shares": "3",
                    "key_versions": "6", "access_keys": "2", "share_sha256": prints,
                    "custodians": "xena,yann,zoe"}, done
    # The failed one names the sets it was between, and no counts or share files.
    assert rekeys[0]["extra"]["old_share_set"] == old_set
    assert "key_versions" not in rekeys[0]["extra"], rekeys[0]
    assert "share_sha256" not in rekeys[0]["extra"], rekeys[0]
    p = hsmctl("audit", "report", "--pubkey", stopped["pubkey"], *files)
    assert p.returncode == 0, p.stderr
    events = p.stdout.split("\nnode events (", 1)[1].splitlines()
    line = next(l for l in events if " Rekey " in l and "outcome=" not in l)
    assert f"old_share_set={old_set}" in line and f"share_set={new_set}" in line, line
    assert "threshold=2" in line and "key_versions=6" in line, line
    p = hsmctl("audit", "verify", "--pubkey", stopped["pubkey"], *files)
    assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr

    new = sorted(glob.glob(os.path.join(base, "new-shares", "*.share")))
    values = [share_value(f) for f in list(shares.values()) + new]
    assert len(values) == 8 and len(set(values)) == 8
    trail = b"".join(open(f, "rb").read() for f in
                     glob.glob(os.path.join(data, "audit", "**"), recursive=True)
                     if os.path.isfile(f))
    assert b"Rekey" in trail  # the files searched are the trail
    for v in values:
        raw = bytes.fromhex(v)
        for form in (v.lower(), v.upper(), base64.b64encode(raw).decode(),
                     base64.urlsafe_b64encode(raw).decode().rstrip("=")):
            assert form.encode() not in trail, f"a share value ({form[:8]}...) is in the audit trail"


# ---- A shared PostgreSQL store ----------------------------------------------------------

CUSTODIANS = ["alice", "bob", "carol", "dave", "erin"]
# The metadata a rekey replaces (keystore_internal.h).
REKEY_META = ("share_set", "kcv", "threshold", "shares", "audit_key", "import_digest_key")


@pytest.fixture(scope="module")
def pg():
    server = Postgres()
    yield server
    server.close()


def store_hsmctl(store, *args):
    """hsmctl on the shared store: HSM_STORE keeps the password off the command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    env["HSM_STORE"] = store
    return subprocess.run([HSMCTL] + list(args), capture_output=True, text=True, timeout=120,
                          env=env)


def pg_secrets(pg, store):
    """Every wrapped secret of the store and the metadata naming its master key, by row."""
    out = pg.sql(store, "SELECT 'version ' || key_id || ' ' || version, md5(wrapped) "
                        "FROM key_versions WHERE length(wrapped) > 0 "
                        "UNION ALL SELECT 'access key ' || id, md5(wrapped_secret) "
                        "FROM access_keys UNION ALL SELECT 'meta ' || name, md5(value) "
                        "FROM meta WHERE name IN ('" + "','".join(REKEY_META) + "')")
    return dict(l.split("|") for l in out.splitlines())


def hsmd_sessions(pg, store):
    return int(pg.sql(store, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                             "current_database() AND application_name = 'hsmd'"))


def make_keys(node, ops):
    """A crypto user's access key, and AES, RSA, EC and HMAC keys used once each."""
    admin(node, "CreateUser", {"UserName": "app", "Roles": ["crypto-user"]}, *ops)
    k = admin(node, "CreateAccessKey", {"UserName": "app"}, *ops)
    app = (k["AccessKeyId"], k["SecretAccessKey"])
    kms, use = client(node, *ops), client(node, *app)
    aes = kms.create_key(Description="aes")["KeyMetadata"]["KeyId"]
    ct = use.encrypt(KeyId=aes, Plaintext=b"pg secret",
                     EncryptionContext={"t": "pg"})["CiphertextBlob"]
    sign = {}
    for spec, alg in (("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"),
                      ("ECC_NIST_P256", "ECDSA_SHA_256")):
        key = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        sig = use.sign(KeyId=key, Message=b"signed before", SigningAlgorithm=alg)["Signature"]
        sign[key] = (alg, sig, kms.get_public_key(KeyId=key)["PublicKey"])
    hmac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    mac = use.generate_mac(KeyId=hmac, Message=b"mac me", MacAlgorithm="HMAC_SHA_256")["Mac"]
    return types.SimpleNamespace(app=app, aes=aes, ct=ct, sign=sign, hmac=hmac, mac=mac)


def check_keys(node, ops, k):
    """What make_keys made still opens, verifies and matches through node."""
    kms, use = client(node, *ops), client(node, *k.app)
    assert use.decrypt(CiphertextBlob=k.ct, EncryptionContext={"t": "pg"})["Plaintext"] == \
        b"pg secret"
    for key, (alg, sig, pub) in k.sign.items():
        assert kms.get_public_key(KeyId=key)["PublicKey"] == pub
        assert use.verify(KeyId=key, Message=b"signed before", Signature=sig,
                          SigningAlgorithm=alg)["SignatureValid"]
    assert use.generate_mac(KeyId=k.hmac, Message=b"mac me",
                            MacAlgorithm="HMAC_SHA_256")["Mac"] == k.mac
    ct = use.encrypt(KeyId=k.aes, Plaintext=b"fresh")["CiphertextBlob"]
    assert use.decrypt(CiphertextBlob=ct)["Plaintext"] == b"fresh"


def wait_no_sessions(pg, store):
    """A stopped node's PostgreSQL backends end just after it closes their connections."""
    deadline = time.monotonic() + 30
    while hsmd_sessions(pg, store) > 0:
        assert time.monotonic() < deadline, "hsmd sessions still connected"
        time.sleep(0.05)


def test_rekey_of_a_shared_postgresql_store(pg):
    """A 3-of-5 ceremony on a PostgreSQL store and a node that uses keys of every kind.
    The rekey is refused while that node runs, and while a node that never unsealed
    runs (it is connected to the store all the same: every node must be stopped); each
    refusal changes no row and leaves no share file, and the old shares still unseal.
    With every node stopped, the rekey to 2-of-3 re-wraps every row; two nodes refuse
    the old shares by name, unseal with the new ones, and serve the keys as before."""
    base = tempfile.mkdtemp(prefix="hsmd-rekey-pg-")
    store = pg.database("rekey")
    nodes = []

    def start(name):
        n = Hsmd(["--node-id", name, "--backup-interval-seconds", "0"], env={"HSM_STORE": store})
        nodes.append(n)
        return n

    def stop(n):
        n.stop()
        wait_no_sessions(pg, store)

    try:
        old_dir = os.path.join(base, "shares")
        p = store_hsmctl(store, "init", "--data-dir", os.path.join(base, "ceremony"),
                         "--share-dir", old_dir, "--shares", "5", "--threshold", "3",
                         "--custodians", ",".join(CUSTODIANS), "--admin", "ops")
        assert p.returncode == 0 and "quorum: 3 of 5" in p.stdout, p.stdout + p.stderr
        old = {c: os.path.join(old_dir, c + ".share") for c in CUSTODIANS}
        a = start("node-a")
        ops = create_first_officer(a, None, old)
        for c in ("alice", "bob", "carol"):
            assert unseal(a, old[c]).returncode == 0
        k = make_keys(a, ops)
        before = pg_secrets(pg, store)
        assert sum(name.startswith("version ") for name in before) == 4  # AES, RSA, EC, HMAC
        assert sum(name.startswith("access key ") for name in before) == 2  # ops, app
        ctl = os.path.join(base, "rekey-data")  # the rekeying machine's audit trail

        def rekey_pg(new_dir):
            return store_hsmctl(store, "rekey", "--data-dir", ctl,
                                *share_args(old, ["bob", "dave", "erin"]), "--share-dir",
                                new_dir, "--shares", "3", "--threshold", "2",
                                "--custodians", "xena,yann,zoe")

        def refused(p, new_dir):
            assert p.returncode == 1, p.stdout
            assert re.search(r"\d+ other hsmd sessions? (is|are) connected", p.stderr), p.stderr
            assert "this rekey changed nothing" in p.stderr and "were deleted" in p.stderr, \
                p.stderr
            assert os.listdir(new_dir) == []
            assert pg_secrets(pg, store) == before

        # (a) An unsealed node is running.
        refused(rekey_pg(os.path.join(base, "refused-running")), os.path.join(base,
                                                                               "refused-running"))
        check_keys(a, ops, k)
        stop(a)

        # (b) A node that started and never unsealed: connected to the store all the same.
        sealed = start("node-sealed")
        st, body, _ = sealed.get("/readyz")
        assert st == 503, body
        assert hsmd_sessions(pg, store) > 0
        refused(rekey_pg(os.path.join(base, "refused-sealed")), os.path.join(base,
                                                                              "refused-sealed"))
        for c in ("carol", "dave", "erin"):  # the old shares still open the store
            assert unseal(sealed, old[c]).returncode == 0
        check_keys(sealed, ops, k)
        stop(sealed)

        # (c) Every node stopped.
        new_dir = os.path.join(base, "new-shares")
        p = rekey_pg(new_dir)
        assert p.returncode == 0, p.stdout + p.stderr
        out = fields(p.stdout)
        assert out["quorum"] == "2 of 3" and out["share set"] != out["old share set"]
        assert "re-wrapped: 4 key versions, 2 access keys, the audit signing key" in p.stdout
        after = pg_secrets(pg, store)
        # The import-digest key is carried from the first rekey on (master.c).
        assert "meta import_digest_key" not in before and "meta import_digest_key" in after
        assert sorted(after) == sorted(list(before) + ["meta import_digest_key"])
        changed = [name for name in before if after[name] != before[name]]
        assert sorted(changed) == sorted(before), "rows left under the old master key"
        new = {c: os.path.join(new_dir, c + ".share") for c in ("xena", "yann", "zoe")}
        assert all(os.path.exists(f) for f in new.values())

        n1, n2 = start("node-1"), start("node-2")
        for n, who in ((n1, ("xena", "zoe")), (n2, ("yann", "zoe"))):
            p = unseal(n, old["alice"])
            assert p.returncode != 0 and "different split" in p.stderr, p.stderr
            for c in who:
                assert unseal(n, new[c]).returncode == 0
            st, body, _ = n.get("/readyz")
            assert st == 200, body
        for n in (n1, n2):
            check_keys(n, ops, k)

        # Audited where hsmctl ran: the two refusals, then the rekey.
        ev = [r for r in audit_records(ctl) if r.get("op") == "Rekey"]
        assert [r["outcome"] for r in ev] == ["error", "error", "success"], ev
        assert all(r["error"] == "ConflictException" for r in ev[:2]), ev
        assert ev[2]["extra"]["share_set"] == out["share set"]
        assert ev[2]["extra"]["key_versions"] == "4" and ev[2]["extra"]["access_keys"] == "2"
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_shared_store_rekey_sees_every_node_whatever_its_uri_names_it(pg):
    """A node whose store URI sets its own application_name (any libpq option may go in the
    query string) is an hsmd session all the same: the rekey is refused while it runs, and
    changes nothing.  So is any session holding a node id's lock, whatever its name.  With
    both gone the rekey goes through."""
    base = tempfile.mkdtemp(prefix="hsmd-rekey-pgname-")
    store = pg.database("rekeyname")
    nodes = []
    try:
        old_dir = os.path.join(base, "shares")
        p = store_hsmctl(store, "init", "--data-dir", os.path.join(base, "ceremony"),
                         "--share-dir", old_dir, "--shares", "5", "--threshold", "3",
                         "--custodians", ",".join(CUSTODIANS), "--admin", "ops")
        assert p.returncode == 0, p.stdout + p.stderr
        old = {c: os.path.join(old_dir, c + ".share") for c in CUSTODIANS}
        named = store + "?application_name=hsm-prod"
        a = Hsmd(["--node-id", "node-a", "--backup-interval-seconds", "0"],
                 env={"HSM_STORE": named})
        nodes.append(a)
        ops = create_first_officer(a, None, old)
        for c in ("alice", "bob", "carol"):
            assert unseal(a, old[c]).returncode == 0
        k = make_keys(a, ops)
        before = pg_secrets(pg, store)
        ctl = os.path.join(base, "rekey-data")

        def rekey_pg(new_dir):
            return store_hsmctl(store, "rekey", "--data-dir", ctl,
                                *share_args(old, ["bob", "dave", "erin"]), "--share-dir",
                                new_dir, "--shares", "3", "--threshold", "2",
                                "--custodians", "xena,yann,zoe")

        def refused(new_dir):
            p = rekey_pg(new_dir)
            assert p.returncode == 1, p.stdout + p.stderr
            assert re.search(r"\d+ other hsmd sessions? (is|are) connected", p.stderr), p.stderr
            assert os.listdir(new_dir) == []
            assert pg_secrets(pg, store) == before

        refused(os.path.join(base, "refused-named"))
        check_keys(a, ops, k)
        a.stop()

        def hsm_sessions():
            return int(pg.sql(store, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                     "current_database() AND (application_name LIKE 'hsm%')"))
        deadline = time.monotonic() + 30
        while hsm_sessions() > 0:
            assert time.monotonic() < deadline, "hsmd sessions still connected"
            time.sleep(0.05)

        # A session under another name holding a node id's lock ("HSMN", any id's key).
        holder = subprocess.Popen(["psql", store + "?application_name=renamed", "-Atq", "-c",
                                   "SELECT pg_advisory_lock(1213418830, 12345)", "-c",
                                   "SELECT pg_sleep(60)"], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while pg.sql(store, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                "AND classid = 1213418830 AND objid = 12345") != "1":
                assert time.monotonic() < deadline, "the lock was never taken"
                time.sleep(0.05)
            refused(os.path.join(base, "refused-lock"))
        finally:
            pg.sql(store, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'renamed'")
            holder.kill()
            holder.wait()
        deadline = time.monotonic() + 30
        while pg.sql(store, "SELECT count(*) FROM pg_stat_activity WHERE "
                            "application_name = 'renamed'") != "0":
            assert time.monotonic() < deadline, "the holder's session stayed"
            time.sleep(0.05)

        new_dir = os.path.join(base, "new-shares")
        p = rekey_pg(new_dir)
        assert p.returncode == 0, p.stdout + p.stderr
        assert pg_secrets(pg, store) != before
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_node_that_missed_a_shared_store_rekey_seals_itself(pg):
    """A node whose sessions the database ended (a restart, an administrator) has none
    until it next reaches the store: a rekey in that gap is not refused.  At its next
    scheduler round the node finds the store's master key replaced and seals itself (a log
    line, a metric) rather than wrap anything under the old one; the new shares unseal it
    and it serves the keys as before."""
    base = tempfile.mkdtemp(prefix="hsmd-rekey-pggap-")
    store = pg.database("rekeygap")
    nodes = []
    try:
        old_dir = os.path.join(base, "shares")
        p = store_hsmctl(store, "init", "--data-dir", os.path.join(base, "ceremony"),
                         "--share-dir", old_dir, "--shares", "5", "--threshold", "3",
                         "--custodians", ",".join(CUSTODIANS), "--admin", "ops")
        assert p.returncode == 0, p.stdout + p.stderr
        old = {c: os.path.join(old_dir, c + ".share") for c in CUSTODIANS}
        a = Hsmd(["--node-id", "node-a", "--backup-interval-seconds", "0",
                  "--scheduler-interval-seconds", "1"], env={"HSM_STORE": store})
        nodes.append(a)
        ops = create_first_officer(a, None, old)
        for c in ("alice", "bob", "carol"):
            assert unseal(a, old[c]).returncode == 0
        k = make_keys(a, ops)
        new_dir = os.path.join(base, "new-shares")
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            pg.sql(store, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND application_name LIKE 'hsmd%'")
            wait_no_sessions(pg, store)
            assert eventually(lambda: pg.sql(store, "SELECT count(*) FROM pg_stat_activity "
                                                    "WHERE application_name LIKE 'hsmd%'") == "0",
                              30)
            p = store_hsmctl(store, "rekey", "--data-dir", os.path.join(base, "rekey-data"),
                             *share_args(old, ["bob", "dave", "erin"]), "--share-dir", new_dir,
                             "--shares", "3", "--threshold", "2", "--custodians", "xena,yann,zoe")
            assert p.returncode == 0, p.stdout + p.stderr
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        assert eventually(lambda: a.get("/readyz")[0] == 503, 20), a.read_log()
        # Sealed (/readyz) a moment before the seal is counted and logged (master_watch.c).
        said = "the store's master key was replaced (hsmctl rekey) after this node unsealed: sealed"
        assert eventually(lambda: said in a.read_log(), 10), a.read_log()

        def seal_counted():
            body = a.get("/metrics")[1].decode()
            return body if re.search(r"^hsmd_master_key_replaced_seals_total 1$", body, re.M) \
                else ""
        body = eventually(seal_counted, 10)
        assert re.search(r"^hsmd_master_key_replaced_seals_total 1$", body, re.M), body
        assert re.search(r"^hsmd_sealed 1$", body, re.M), body
        p = unseal(a, old["alice"])
        assert p.returncode != 0 and "different split" in p.stderr, p.stderr
        new = {c: os.path.join(new_dir, c + ".share") for c in ("xena", "yann", "zoe")}
        for c in ("xena", "zoe"):
            assert unseal(a, new[c]).returncode == 0
        check_keys(a, ops, k)
        time.sleep(2)  # rounds after the unseal leave it unsealed
        assert a.get("/readyz")[0] == 200
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(base, ignore_errors=True)
