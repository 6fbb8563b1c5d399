"""Backups and restore: `hsmctl backup create|list|inspect|verify` and
`hsmctl restore` on a 3-of-5 store, scheduled backups with a copy directory,
the backup metrics and audit events, and the roles that may back up."""
import base64
import glob
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

import pytest

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, client, signed_call, start_dev

DEV_ENV = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
from helpers import (admin, audit_records, audit_records_until, eventually, gdb_can_trace,
                     metric, new_user, raises, self_signed)
from test_sealed import create_first_officer, init_store, unseal


def hsmctl(*args, endpoint=None, creds=None):
    cmd = [HSMCTL] + (["--endpoint", endpoint] if endpoint else []) + list(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    if creds:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = creds
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def fields(stdout):
    return dict(l.split(": ", 1) for l in stdout.splitlines() if ": " in l)


@pytest.fixture(scope="module")
def node():
    """A production node (3 of 5), unsealed, with keys, an alias and a user, then a backup."""
    base = tempfile.mkdtemp(prefix="hsmd-backup-")
    data, shares = init_store(base)
    server = Hsmd(["--backup-interval-seconds", "0"], data_dir=data)
    try:
        state = populate_and_back_up(server, data, shares, base)
    except BaseException:
        server.cleanup()
        raise
    yield state
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def populate_and_back_up(server, data, shares, base):
    for c in ("alice", "bob", "carol"):
        assert unseal(server, shares[c]).returncode == 0
    ops = create_first_officer(server, data, shares)
    admin(server, "CreateUser", {"UserName": "app", "Roles": ["crypto-user"]}, *ops)
    k = admin(server, "CreateAccessKey", {"UserName": "app"}, *ops)
    app = (k["AccessKeyId"], k["SecretAccessKey"])
    kms, use = client(server, *ops), client(server, *app)
    key = kms.create_key(Description="payments-db-key-before-backup")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/payments-before-backup", TargetKeyId=key)
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "team", "TagValue": "payments-team-tag"}])
    ct = use.encrypt(KeyId="alias/payments-before-backup", Plaintext=b"card vault row",
                     EncryptionContext={"table": "cards"})["CiphertextBlob"]
    sign_key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sig = use.sign(KeyId=sign_key, Message=b"token", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    cert = self_signed("backed-up.example")
    cert_id = admin(server, "ImportCertificate", {"Certificate": base64.b64encode(cert).decode(),
                                                  "Label": "backed-up"}, *ops)["CertificateId"]

    p = hsmctl("backup", "create", endpoint=server.endpoint, creds=ops)
    assert p.returncode == 0, p.stderr
    made = fields(p.stdout)
    after = kms.create_key(Description="made-after-the-backup")["KeyMetadata"]["KeyId"]
    return dict(server=server, data=data, shares=shares, ops=ops, app=app, key=key, ct=ct,
                sign_key=sign_key, sig=sig, made=made, after=after, base=base, cert=cert,
                cert_id=cert_id)


def test_backup_create_list_metrics_audit(node):
    server, made = node["server"], node["made"]
    path = made["Path"]
    assert os.path.dirname(path) == os.path.join(node["data"], "backups")
    assert made["File"] == os.path.basename(path) and path.endswith(".hsmbak")
    assert made["Threshold"] == "3" and made["Copied"] == "false"
    assert int(made["SizeBytes"]) == os.path.getsize(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    # Nothing of the store's plain copy is left behind.
    assert not glob.glob(os.path.join(node["data"], ".backup-*"))
    assert not glob.glob(os.path.join(node["data"], "backups", ".*"))

    p = hsmctl("backup", "list", endpoint=server.endpoint, creds=node["ops"])
    assert p.returncode == 0, p.stderr
    assert made["BackupId"] in p.stdout and path in p.stdout

    assert metric(server, "hsmd_backups_created_total") == 1
    assert metric(server, "hsmd_backup_failures_total") == 0
    assert metric(server, "hsmd_backup_last_success_time_seconds") == int(made["CreationDate"])
    assert metric(server, "hsmd_backup_last_size_bytes") == int(made["SizeBytes"])

    recs = audit_records(node["data"])
    ev = [r for r in recs if r.get("op") == "Backup"]
    assert len(ev) == 1 and ev[0]["outcome"] == "success" and ev[0]["type"] == "event"
    assert ev[0]["extra"] == {"trigger": "requested", "backup_id": made["BackupId"],
                              "file": made["File"], "copy": "none"}
    assert any(r.get("op") == "CreateBackup" and r["outcome"] == "success" for r in recs)


def test_backup_holds_no_plaintext(node):
    with open(node["made"]["Path"], "rb") as f:
        blob = f.read()
    for text in (node["key"], node["sign_key"], "alias/payments-before-backup",
                 "payments-db-key-before-backup", "payments-team-tag",
                 node["ops"][0], node["app"][0]):  # access key ids, not 3-letter names:
        assert text.encode() not in blob, text    # those turn up in random bytes
    # The store itself does hold it (in the database or its write-ahead log).
    store = b""
    for name in ("hsmd.db", "hsmd.db-wal"):
        with open(os.path.join(node["data"], name), "rb") as f:
            store += f.read()
    assert b"payments-db-key-before-backup" in store
    assert node["app"][0].encode() in store


def test_inspect_without_shares(node):
    p = hsmctl("backup", "inspect", node["made"]["Path"])
    assert p.returncode == 0, p.stderr
    f = fields(p.stdout)
    assert f["backup-id"] == node["made"]["BackupId"]
    assert f["store-id"] == node["made"]["StoreId"]
    assert f["quorum"] == "3 of 5 custodian shares"
    assert int(f["file-bytes"]) == os.path.getsize(node["made"]["Path"])
    # The split that opens it: the "set" line of the share files it was made under.
    with open(node["shares"]["alice"]) as share:
        assert f"set {f['split']}\n" in share.read()


def test_verify_needs_the_quorum_of_this_store(node):
    path, shares = node["made"]["Path"], node["shares"]
    # No share at all is a usage error (exit 2), as for the offline commands that open a store.
    p = hsmctl("backup", "verify", path)
    assert p.returncode == 2 and "needs the custodians' --share files" in p.stderr, p.stderr
    target = os.path.join(node["base"], "no-shares")
    p = hsmctl("restore", "--data-dir", target, path)
    assert p.returncode == 2 and "needs the custodians' --share files" in p.stderr, p.stderr
    assert not os.path.exists(target)
    p = hsmctl("backup", "verify", "--share", shares["alice"], "--share", shares["erin"], path)
    assert p.returncode == 1 and "1 more needed" in p.stderr, p.stderr
    other, other_shares = init_store(node["base"], "other")
    p = hsmctl("backup", "verify", "--share", other_shares["alice"], path)
    assert p.returncode == 1 and "share is for store" in p.stderr, p.stderr
    assert f"this store is {node['made']['StoreId']}" in p.stderr
    assert "they are not this backup's shares, or the backup is of another store" in p.stderr
    p = hsmctl("backup", "verify", "--share", shares["bob"], "--share", shares["dave"],
               "--share", shares["erin"], path)
    assert p.returncode == 0, p.stderr
    assert "verified: every chunk authenticated" in p.stdout


def tampered(node, name, edit):
    with open(node["made"]["Path"], "rb") as f:
        blob = bytearray(f.read())
    blob = edit(blob)
    path = os.path.join(node["base"], name)
    with open(path, "wb") as f:
        f.write(blob)
    return path


def flip(i):
    def edit(b):
        b[i] ^= 0x01
        return b
    return edit


@pytest.mark.parametrize("name,edit", [
    ("header-created", flip(120)),
    ("chunk-data", flip(-1 - 16 - 4096)),
    ("last-tag", flip(-1)),
    ("truncated", lambda b: b[:-100]),
    ("appended", lambda b: b + b"\0"),
])
def test_tampered_backup_is_refused_and_restores_nothing(node, name, edit):
    path = tampered(node, name + ".hsmbak", edit)
    s = node["shares"]
    three = ["--share", s["alice"], "--share", s["bob"], "--share", s["carol"]]
    p = hsmctl("backup", "verify", *three, path)
    assert p.returncode == 1, (name, p.stdout)
    target = os.path.join(node["base"], "restore-" + name)
    p = hsmctl("restore", "--data-dir", target, *three, path)
    assert p.returncode == 1, (name, p.stdout)
    assert re.search(r"integrity check|truncated|after its last chunk|header", p.stderr), p.stderr
    assert not os.path.exists(os.path.join(target, "hsmd.db"))
    assert not os.path.exists(os.path.join(target, ".restore"))


def test_a_header_naming_another_store_is_not_blamed_on_the_shares(node):
    """The store id in a backup's header altered: the right shares refuse it (they are of
    another store, as far as the header says), and hsmctl says the three ways that can be,
    not only that the shares are for another store; nothing is restored."""
    sid = node["made"]["StoreId"]
    altered = ("0" if sid[0] != "0" else "1") + sid[1:]

    def edit(b):
        i = b.index(sid.encode())
        b[i:i + len(sid)] = altered.encode()
        return b
    path = tampered(node, "header-store.hsmbak", edit)
    s = node["shares"]
    three = ["--share", s["alice"], "--share", s["bob"], "--share", s["carol"]]
    hint = (f"its header names store {altered}, and the shares given are all of store {sid}: "
            "they are not this backup's shares, or the backup is of another store, or its "
            "header was altered")
    p = hsmctl("backup", "verify", *three, path)
    assert p.returncode == 1 and hint in p.stderr, p.stderr
    target = os.path.join(node["base"], "restore-header-store")
    p = hsmctl("restore", "--data-dir", target, *three, path)
    assert p.returncode == 1 and hint in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(target, "hsmd.db"))
    # Shares of two stores: the shares are what is wrong, and no more is said.
    other, other_shares = init_store(node["base"], "two-stores")
    p = hsmctl("backup", "verify", "--share", other_shares["alice"], "--share", s["bob"],
               node["made"]["Path"])
    assert p.returncode == 1 and "share is for store" in p.stderr, p.stderr
    assert "its header names" not in p.stderr, p.stderr


def test_restore_on_another_machine(node):
    """Restore with another subset of custodians, start a node on it, unseal:
    the keys, aliases, tags, principals, certificates and ciphertexts of before the backup
    work; the key made after it does not exist; the restore is audited."""
    s, made = node["shares"], node["made"]
    target = os.path.join(node["base"], "dr-site")
    three = ["--share", s["carol"], "--share", s["dave"], "--share", s["erin"]]
    p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
    assert p.returncode == 0, p.stderr
    assert f"restored into: {target}" in p.stdout
    p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
    assert p.returncode == 1 and "already holds a store" in p.stderr

    restore_rec = [r for r in audit_records(target) if r.get("op") == "Restore"]
    assert len(restore_rec) == 1 and restore_rec[0]["outcome"] == "success"
    assert restore_rec[0]["extra"]["backup_id"] == made["BackupId"]

    dr = Hsmd(["--backup-interval-seconds", "0"], data_dir=target)
    try:
        for c in ("carol", "dave", "erin"):
            assert unseal(dr, s[c]).returncode == 0
        kms, use = client(dr, *node["ops"]), client(dr, *node["app"])  # principals came back
        out = use.decrypt(CiphertextBlob=node["ct"], EncryptionContext={"table": "cards"})
        assert out["Plaintext"] == b"card vault row" and out["KeyId"].endswith(node["key"])
        assert kms.describe_key(KeyId="alias/payments-before-backup")["KeyMetadata"]["KeyId"] \
            == node["key"]
        tags = kms.list_resource_tags(KeyId=node["key"])["Tags"]
        assert {"TagKey": "team", "TagValue": "payments-team-tag"} in tags
        assert use.verify(KeyId=node["sign_key"], Message=b"token", Signature=node["sig"],
                          SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]
        raises("NotFoundException", kms.describe_key, KeyId=node["after"])
        got = admin(dr, "GetCertificate", {"CertificateId": node["cert_id"]}, *node["app"])
        assert base64.b64decode(got["Certificate"]["Certificate"]) == node["cert"]
        assert "key policies name account" not in dr.read_log()
    finally:
        dr.cleanup()


def test_a_restored_node_of_another_account_is_refused(node):
    """Key ARNs and policies name the store's account: a node started on a restored store
    with another account_id would refuse every key request (and make keys its peers could
    not manage), so it refuses to start, naming both; a store whose keys predate the
    record of its account is warned about instead, and not recorded as the wrong one."""
    s, made = node["shares"], node["made"]
    target = os.path.join(node["base"], "dr-other-account")
    three = ["--share", s["carol"], "--share", s["dave"], "--share", s["erin"]]
    p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
    assert p.returncode == 0, p.stderr
    with pytest.raises(RuntimeError) as e:
        Hsmd(["--backup-interval-seconds", "0", "--account-id", "999988887777"],
             data_dir=target)
    said = str(e.value)
    assert "hsmd exited with 2" in said, said
    assert "the store's keys belong to account 111122223333 in region us-east-1, and this " \
           "node's account_id and region are 999988887777 and us-east-1" in said, said
    with pytest.raises(RuntimeError) as e:
        Hsmd(["--backup-interval-seconds", "0", "--region", "eu-west-1"], data_dir=target)
    assert "in region us-east-1" in str(e.value) and "eu-west-1" in str(e.value), e.value
    # Keys made before the store recorded its account: the first key's policy tells.
    db = sqlite3.connect(os.path.join(target, "hsmd.db"))
    with db:
        db.execute("DELETE FROM meta WHERE name = 'account'")
    db.close()
    dr = Hsmd(["--backup-interval-seconds", "0", "--account-id", "999988887777"],
              data_dir=target)
    try:
        log = dr.read_log()
        assert "the store's key policies name account 111122223333, and this node's " \
               "account_id is 999988887777" in log, log
    finally:
        dr.cleanup()
    db = sqlite3.connect(os.path.join(target, "hsmd.db"))
    assert db.execute("SELECT count(*) FROM meta WHERE name = 'account'").fetchone() == (0,)
    db.close()
    # The right account is recorded by its first start.
    dr = Hsmd(["--backup-interval-seconds", "0"], data_dir=target)
    dr.cleanup()
    db = sqlite3.connect(os.path.join(target, "hsmd.db"))
    row = db.execute("SELECT value FROM meta WHERE name = 'account'").fetchone()
    db.close()
    assert row is not None and bytes(row[0]) == b"111122223333 us-east-1", row


def test_restore_refuses_a_data_directory_with_an_audit_trail(node):
    """The restore is the first record of the restored node's trail: a data directory
    whose audit directory holds another store's records is refused and left as it was;
    an empty audit directory is a fresh trail, which verifies after the restore."""
    s, made, base = node["shares"], node["made"], node["base"]
    other, _ = init_store(base, "other-store")
    target = os.path.join(base, "reused")
    shutil.copytree(os.path.join(other, "audit"), os.path.join(target, "audit"))

    def files():
        out = {}
        for root, _, names in os.walk(target):
            for n in names:
                with open(os.path.join(root, n), "rb") as f:
                    out[os.path.relpath(os.path.join(root, n), target)] = f.read()
        return out
    before = files()
    assert any(n.startswith("audit/audit-") and b for n, b in before.items()), before.keys()
    three = ["--share", s["carol"], "--share", s["dave"], "--share", s["erin"]]
    p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
    assert p.returncode == 1, p.stdout
    assert f"{target}/audit already holds an audit trail" in p.stderr, p.stderr
    assert "restore into a new data directory" in p.stderr, p.stderr
    assert files() == before  # nothing written

    shutil.rmtree(os.path.join(target, "audit"))
    os.mkdir(os.path.join(target, "audit"))
    p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
    assert p.returncode == 0, p.stderr
    recs = audit_records(target)
    assert recs[0]["seq"] == 1 and recs[0]["op"] == "AuditLogOpened", recs[0]
    # The trail opens, the quorum rebuilds the master key (an unseal), the restore is recorded.
    assert [r["op"] for r in recs if r.get("op")][1:3] == ["Unseal", "Restore"], recs
    p = hsmctl("audit", "verify", *sorted(glob.glob(os.path.join(target, "audit", "*.jsonl"))))
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.fixture(scope="module")
def stale_wal(node):
    """The hsmd.db-wal a node of another store left when it was killed mid-write."""
    data, shares = init_store(node["base"], "killed")
    server = Hsmd(["--backup-interval-seconds", "0"], data_dir=data)
    try:
        for c in ("alice", "bob", "carol"):
            assert unseal(server, shares[c]).returncode == 0
        ops = create_first_officer(server, data, shares)
        client(server, *ops).create_key(Description="in the write-ahead log")
        server.stop(signal.SIGKILL)
    finally:
        server.cleanup()
    wal = os.path.join(data, "hsmd.db-wal")
    assert os.path.getsize(wal) > 0
    return wal


def test_restore_refuses_a_data_directory_with_sqlite_leftovers(node, stale_wal):
    """A node killed mid-write leaves hsmd.db-wal (and -shm) beside its store: with only
    hsmd.db removed, SQLite would replay that log into the restored copy at its first
    opening, leaving a malformed store, or another store's.  Any of the files is refused,
    named, and the directory left as it was; without them the restore goes on."""
    s, made = node["shares"], node["made"]
    target = os.path.join(node["base"], "killed-node")
    os.mkdir(target)
    shutil.copy(stale_wal, target)
    three = ["--share", s["carol"], "--share", s["dave"], "--share", s["erin"]]
    for name in ("hsmd.db-wal", "hsmd.db-shm", "hsmd.db-journal"):
        if name != "hsmd.db-wal":
            open(os.path.join(target, name), "w").close()
        before = sorted(os.listdir(target))
        p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
        assert p.returncode == 1, p.stdout
        assert f"{target}/{name} is left by a store no longer there" in p.stderr, p.stderr
        assert "move it away" in p.stderr and "restored into" not in p.stdout, p.stderr
        assert sorted(os.listdir(target)) == before
        os.unlink(os.path.join(target, name))
    p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
    assert p.returncode == 0, p.stderr
    p = hsmctl("status", "--data-dir", target)
    assert p.returncode == 0 and fields(p.stdout)["store"] == made["StoreId"], p.stdout


def test_a_staging_directory_left_by_an_interrupted_restore(node):
    """A restore killed while SQLite had its staged copy open leaves .restore/ with
    hsmd.db and any of its logs (hsmd.db-journal, -wal, -shm): the next restore removes
    them and goes on.  A .restore/ that cannot be removed (holding a file no restore
    makes) is named, with why, and the restore refused before anything is made."""
    s, made = node["shares"], node["made"]
    three = ["--share", s["carol"], "--share", s["dave"], "--share", s["erin"]]
    target = os.path.join(node["base"], "journal-left")
    staging = os.path.join(target, ".restore")
    os.makedirs(staging)
    for name in ("hsmd.db", "hsmd.db-journal", "hsmd.db-wal", "hsmd.db-shm"):
        open(os.path.join(staging, name), "w").close()
    p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(staging)
    p = hsmctl("status", "--data-dir", target)
    assert p.returncode == 0 and fields(p.stdout)["store"] == made["StoreId"], p.stdout

    target = os.path.join(node["base"], "staging-kept")
    staging = os.path.join(target, ".restore")
    os.makedirs(staging)
    open(os.path.join(staging, "notes.txt"), "w").close()
    p = hsmctl("restore", "--data-dir", target, *three, made["Path"])
    assert p.returncode == 1, p.stdout
    assert f"cannot remove {staging}, left by an interrupted restore: Directory not empty; " \
        "move it away" in p.stderr, p.stderr
    assert os.listdir(staging) == ["notes.txt"]
    assert not os.path.exists(os.path.join(target, "hsmd.db"))


@pytest.mark.skipif(not gdb_can_trace(), reason="a log appearing beside the store just as "
                    "it is moved into place is made with gdb")
def test_a_restored_store_is_checked_where_it_lands(node, stale_wal):
    """A log that appears beside hsmd.db after the restore looked for one is applied by
    SQLite when the store in place is first opened: that opening is checked (whole, the
    backup's store) before anything is recorded or reported restored."""
    s, made = node["shares"], node["made"]
    target = os.path.join(node["base"], "raced-node")
    os.mkdir(target)
    three = ["--share", s["carol"], "--share", s["dave"], "--share", s["erin"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    # hsm_fsync_dir(target) comes right after the rename that puts the store in place.
    p = subprocess.run(["gdb", "-q", "-nx", "-batch", "-ex",
                        f'break hsm_fsync_dir if $_streq(path, "{target}")', "-ex", "run",
                        "-ex", f"shell cp {stale_wal} {target}/", "-ex", "continue",
                        "--args", HSMCTL, "restore", "--data-dir", target, *three,
                        made["Path"]],
                       capture_output=True, text=True, timeout=180, env=env)
    assert "Breakpoint 1, " in p.stdout and "exited with code 01" in p.stdout, p.stdout
    assert f"the store moved into {target} does not open as the backup's, so it is not " \
        "restored" in p.stderr, p.stderr
    assert "restored into" not in p.stdout and "is restored into" not in p.stderr, p.stderr
    assert not [r for r in audit_records(target) if r.get("op") == "Restore"]


def test_backup_list_of_a_directory_that_is_missing_or_empty(node):
    """A directory that does not exist (an unmounted DR volume, a typo) is an error naming
    it, not an empty list; an empty one says it holds no backups; a backup directory lists
    its backups."""
    missing = os.path.join(node["base"], "dr-mount-typo")
    p = hsmctl("backup", "list", "--dir", missing)
    assert p.returncode == 1 and p.stdout == "", p
    assert f"cannot read the backup directory {missing}: No such file or directory" in p.stderr
    empty = os.path.join(node["base"], "empty-dr-mount")
    os.mkdir(empty)
    p = hsmctl("backup", "list", "--dir", empty)
    assert p.returncode == 0 and p.stdout == "", p
    assert f"no backups in {empty}" in p.stderr, p.stderr
    p = hsmctl("backup", "list", "--dir", os.path.dirname(node["made"]["Path"]))
    assert p.returncode == 0 and node["made"]["BackupId"] in p.stdout, p
    assert "no backups" not in p.stderr, p.stderr


def test_scheduled_backups_copy_and_roles():
    """backup_interval_seconds=1: the scheduler (every 5 s) backs up at each
    pass; each backup is copied to backup_copy_dir, byte for byte."""
    copy_dir = tempfile.mkdtemp(prefix="hsmd-dr-copy-")
    server = start_dev(["--backup-interval-seconds", "1", "--backup-copy-dir", copy_dir])
    try:
        # The second pass starts 5 s after the first has ended: on a loaded machine two
        # backups (each fsynced, then copied) can take well over 10 s.
        deadline = time.time() + 40
        while metric(server, "hsmd_backups_created_total") < 2 and time.time() < deadline:
            time.sleep(0.5)
        assert metric(server, "hsmd_backups_created_total") >= 2
        assert metric(server, "hsmd_backup_copy_failures_total") == 0
        made = sorted(os.listdir(os.path.join(server.data_dir, "backups")))
        made = [f for f in made if f.endswith(".hsmbak")]
        assert len(made) >= 2

        def copied():
            return sum(os.path.exists(os.path.join(copy_dir, f)) for f in made)

        while copied() < 2 and time.time() < deadline + 10:  # the copy follows the backup
            time.sleep(0.2)
        for f in made:
            copy = os.path.join(copy_dir, f)
            if os.path.exists(copy):
                with open(os.path.join(server.data_dir, "backups", f), "rb") as a, \
                        open(copy, "rb") as b:
                    assert a.read() == b.read()
        assert copied() >= 2
        # The Backup event is written after the copy is made: wait for it.
        ev = backup_events(server, 2)
        assert len(ev) >= 2 and all(r["extra"]["trigger"] == "scheduled" for r in ev)
        p = hsmctl("backup", "list", "--dir", copy_dir)
        assert p.returncode == 0 and all(f in p.stdout for f in made[:2]), p.stdout

        # Roles: a crypto-user may not back up; an auditor may list.
        user = new_user(server, "app", ["crypto-user"])
        auditor = new_user(server, "auditor1", ["auditor"])
        st, out = signed_call(server, "HsmdAdmin.CreateBackup", {}, *user)
        assert st == 400 and out["__type"] == "AccessDeniedException", out
        listed = admin(server, "ListBackups", akid=auditor[0], secret=auditor[1])
        assert {b["File"] for b in listed["Backups"]} >= set(made[:2])
        st, out = signed_call(server, "HsmdAdmin.CreateBackup", {}, *auditor)
        assert st == 400 and out["__type"] == "AccessDeniedException", out
    finally:
        server.cleanup()
        shutil.rmtree(copy_dir, ignore_errors=True)


def test_failed_backup_is_counted_audited_and_reported():
    """A backup directory that cannot be made: the request fails with the
    reason, the failure counter rises (what an alert watches), the event is
    audited as an error, and no plain copy of the store is left behind."""
    tmp = tempfile.mkdtemp(prefix="hsmd-badbackup-")
    backups = os.path.join(tmp, "backups")
    server = start_dev(["--backup-interval-seconds", "0", "--backup-dir", backups])
    try:
        # Usable at start (it is checked then), a file where it was by the time of the backup.
        os.rmdir(backups)
        open(backups, "w").close()
        st, out = signed_call(server, "HsmdAdmin.CreateBackup", {})
        assert st >= 400 and "backups" in out.get("message", out.get("Message", "")), out
        assert metric(server, "hsmd_backup_failures_total") == 1
        assert metric(server, "hsmd_backups_created_total") == 0
        assert metric(server, "hsmd_backup_last_success_time_seconds") == 0
        ev = [r for r in audit_records(server.data_dir) if r.get("op") == "Backup"]
        assert len(ev) == 1 and ev[0]["outcome"] == "error", ev
        # The event keeps the reason, as the log does: the trail alone tells what went wrong.
        assert backups in ev[0]["extra"]["backup_error"], ev
        assert ev[0]["extra"]["trigger"] == "requested", ev
        assert not glob.glob(os.path.join(server.data_dir, ".backup-*"))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def backup_events(server, n, timeout=30.0):
    deadline = time.time() + timeout
    while True:
        ev = [r for r in audit_records(server.data_dir) if r.get("op") == "Backup"]
        if len(ev) >= n or time.time() > deadline:
            return ev
        time.sleep(0.05)


def test_a_failed_copy_is_a_copy_failure_not_a_failed_backup():
    """The backup is made but backup_copy_dir fails (here a file took its place
    after start): only the copy failure counter rises, the request succeeds
    with Copied false, and the Backup event says the copy failed and why.
    Once the directory is back, the next backup is copied again."""
    tmp = tempfile.mkdtemp(prefix="hsmd-badcopy-")
    copy_dir = os.path.join(tmp, "dr")
    os.mkdir(copy_dir)
    server = start_dev(["--backup-interval-seconds", "0", "--backup-copy-dir", copy_dir])
    try:
        os.rmdir(copy_dir)
        open(copy_dir, "w").close()
        made = admin(server, "CreateBackup")
        assert made["Copied"] is False and os.path.exists(made["Path"])
        assert metric(server, "hsmd_backups_created_total") == 1
        assert metric(server, "hsmd_backup_copy_failures_total") == 1
        assert metric(server, "hsmd_backup_failures_total") == 0
        assert metric(server, "hsmd_backup_copies_missing") == 1
        ev = backup_events(server, 1)
        assert len(ev) == 1 and ev[0]["outcome"] == "success", ev
        assert ev[0]["extra"]["copy"] == "failed" and copy_dir in ev[0]["extra"]["copy_error"], ev
        first = made
        os.unlink(copy_dir)
        os.mkdir(copy_dir)
        made = admin(server, "CreateBackup")
        assert made["Copied"] is True
        assert os.path.exists(os.path.join(copy_dir, made["File"]))
        # The copy that failed is made now too, byte for byte, and audited.
        with open(first["Path"], "rb") as a, open(os.path.join(copy_dir, first["File"]), "rb") as b:
            assert a.read() == b.read()
        assert metric(server, "hsmd_backup_copies_missing") == 0
        assert metric(server, "hsmd_backup_copy_failures_total") == 1
        assert metric(server, "hsmd_backup_failures_total") == 0
        ev = backup_events(server, 2)
        assert ev[1]["extra"]["copy"] == "made" and "copy_error" not in ev[1]["extra"], ev
        late = [r for r in audit_records(server.data_dir) if r.get("op") == "BackupCopy"]
        assert [(r["extra"]["file"], r["extra"]["copy"]) for r in late] == \
            [(first["File"], "made")], late
        # Gone altogether (a mount that went away): a failed copy, not one made on the
        # local disk in a directory made again.
        shutil.rmtree(copy_dir)
        made = admin(server, "CreateBackup")
        assert made["Copied"] is False and not os.path.exists(copy_dir)
        assert metric(server, "hsmd_backup_copy_failures_total") == 2
        assert metric(server, "hsmd_backup_copies_missing") == 3
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_copy_dir_whose_mount_went_away_is_a_failed_copy():
    """backup_copy_dir is the mount point of the disaster-recovery file system (here a
    tmpfs).  Unmounted while the node runs, what is left is an empty directory on the
    node's own disk, where a copy would read as made: it is a failed copy, counted and
    audited, and nothing is written below the mount.  Mounted again, the copies that
    failed are made there."""
    from test_audit_server import mount_tmpfs
    tmp = tempfile.mkdtemp(prefix="hsmd-drmount-")
    mnt = os.path.join(tmp, "dr")
    mount_tmpfs(mnt, "4m")
    server = start_dev(["--backup-interval-seconds", "0", "--backup-copy-dir", mnt])
    try:
        first = admin(server, "CreateBackup")
        assert first["Copied"] is True and os.listdir(mnt) == [first["File"]]
        subprocess.run(["umount", mnt], check=True)
        made = admin(server, "CreateBackup")
        assert made["Copied"] is False and os.listdir(mnt) == []
        assert metric(server, "hsmd_backup_copy_failures_total") == 1
        assert metric(server, "hsmd_backups_created_total") == 2
        assert metric(server, "hsmd_backup_failures_total") == 0
        assert metric(server, "hsmd_backup_copies_missing") == 2
        ev = backup_events(server, 2)
        assert ev[1]["extra"]["copy"] == "failed", ev
        assert f"backup_copy_dir {mnt} was a mount point when hsmd started and is none now" \
            in ev[1]["extra"]["copy_error"], ev
        mount_tmpfs(mnt, "4m")  # back: a file system again, though not the same one
        again = admin(server, "CreateBackup")
        assert again["Copied"] is True
        assert set(os.listdir(mnt)) == {first["File"], made["File"], again["File"]}
        assert metric(server, "hsmd_backup_copies_missing") == 0
    finally:
        server.cleanup()
        subprocess.run(["umount", mnt], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

def test_a_copy_that_failed_is_made_by_the_scheduler():
    """A copy that failed is not forgotten: the node looks for missing copies when it
    starts (and every 5 minutes while one is missing) and makes them, without waiting for
    the next backup (here none is scheduled)."""
    tmp = tempfile.mkdtemp(prefix="hsmd-latecopy-")
    copy_dir, data = os.path.join(tmp, "dr"), os.path.join(tmp, "data")
    os.mkdir(copy_dir)
    args = ["--dev", "--backup-interval-seconds", "0", "--backup-copy-dir", copy_dir]
    server = Hsmd(args, env=DEV_ENV, data_dir=data)
    try:
        os.rmdir(copy_dir)  # the mount went away
        made = admin(server, "CreateBackup")
        assert made["Copied"] is False
        assert metric(server, "hsmd_backup_copies_missing") == 1
        server.stop()
        os.mkdir(copy_dir)  # and is back
        server = Hsmd(args, env=DEV_ENV, data_dir=data)
        copy = os.path.join(copy_dir, made["File"])
        deadline = time.time() + 30
        while not os.path.exists(copy) and time.time() < deadline:
            time.sleep(0.1)
        with open(made["Path"], "rb") as a, open(copy, "rb") as b:
            assert a.read() == b.read()
        deadline = time.time() + 10
        while metric(server, "hsmd_backup_copies_missing") != 0:
            assert time.time() < deadline, "the gauge still counts the copy made"
            time.sleep(0.1)
        # The event reaches the trail a moment after the copy it records.
        late = audit_records_until(data, lambda r: r.get("op") == "BackupCopy")
        assert [(r["extra"]["file"], r["extra"]["copy"], r["outcome"]) for r in late] == \
            [(made["File"], "made", "success")], late
        p = hsmctl("backup", "list", "--dir", copy_dir)
        assert made["BackupId"] in p.stdout
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("setting", ["backup-dir", "backup-copy-dir"])
def test_an_unusable_backup_directory_stops_the_start(setting):
    """A regular file, or a path under one, is refused at start, naming the setting."""
    from conftest import HSMD, free_port
    tmp = tempfile.mkdtemp(prefix="hsmd-baddir-")
    try:
        blocker = os.path.join(tmp, "a-file")
        open(blocker, "w").close()
        for bad in (blocker, os.path.join(blocker, "sub")):
            p = subprocess.run([HSMD, "--dev", "--data-dir", os.path.join(tmp, "data"),
                                "--listen", f"127.0.0.1:{free_port()}", f"--{setting}", bad],
                               capture_output=True, text=True, timeout=20)
            assert p.returncode == 2, p.stderr
            assert setting.replace("-", "_") in p.stderr and bad in p.stderr, p.stderr
            assert f"from --{setting})" in p.stderr and ".c:" not in p.stderr, p.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_missing_copy_dir_stops_the_start():
    """backup_copy_dir (and audit_copy_dir) name another disk or a mount in another
    region: hsmd does not make them, so a mount missing at boot stops the start
    instead of the copies landing on the node's own disk."""
    from conftest import HSMD, free_port
    tmp = tempfile.mkdtemp(prefix="hsmd-nocopy-")
    try:
        mount = os.path.join(tmp, "mnt-dr")  # the mount point, with nothing mounted
        os.mkdir(mount)
        for setting in ("backup-copy-dir", "audit-copy-dir"):
            missing = os.path.join(mount, "hsmd")
            p = subprocess.run([HSMD, "--dev", "--data-dir", os.path.join(tmp, "data"),
                                "--listen", f"127.0.0.1:{free_port()}", f"--{setting}", missing],
                               capture_output=True, text=True, timeout=20)
            assert p.returncode == 2 and "does not exist" in p.stderr, p.stderr
            assert f"from --{setting})" in p.stderr and not os.path.exists(missing), p.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_backup_dated_in_the_future_does_not_stop_the_schedule():
    """A backup's header is authenticated only when it is restored, and clocks step:
    a file dated ten years ahead in backup_dir is not taken as the newest backup, so
    scheduled backups go on and the last-success metric stays true; the retention
    neither deletes it nor keeps it as one of the newest, and warns of it."""
    server = start_dev(["--backup-interval-seconds", "0"])
    try:
        made = admin(server, "CreateBackup")
        with open(made["Path"], "rb") as f:
            raw = bytearray(f.read())
        stamp = made["CreationDate"].to_bytes(8, "big")
        at = raw.index(stamp, 0, 512)
        raw[at:at + 8] = (made["CreationDate"] + 10 * 365 * 86400).to_bytes(8, "big")
        forged = os.path.join(os.path.dirname(made["Path"]), "hsmd-forged.hsmbak")
        with open(forged, "wb") as f:
            f.write(raw)
        data = server.data_dir
        server.stop()
        again = Hsmd(["--dev", "--backup-interval-seconds", "1"], env=DEV_ENV, data_dir=data)
        try:
            deadline = time.time() + 20
            while metric(again, "hsmd_backups_created_total") < 1 and time.time() < deadline:
                time.sleep(0.2)
            assert metric(again, "hsmd_backups_created_total") >= 1
            assert metric(again, "hsmd_backup_last_success_time_seconds") <= time.time() + 60
            assert "made in the future" in again.read_log()
            # The retention that followed the backup left it, named in a warning, and does
            # not count it among the newest kept.
            assert os.path.exists(forged)
            assert eventually(lambda: f"backup {forged} is dated " in again.read_log())
            assert "not wanted" in again.read_log()
        finally:
            again.stop()
    finally:
        server.cleanup()


def test_last_backup_size_survives_a_restart():
    """After a restart the newest backup's time and size come from backup_dir;
    its duration is not in the file, so it reads 0 until this run makes one."""
    from helpers import restart_dev
    server = start_dev(["--backup-interval-seconds", "0"])
    try:
        made = admin(server, "CreateBackup")
        server = restart_dev(server)
        assert metric(server, "hsmd_backup_last_success_time_seconds") == made["CreationDate"]
        assert metric(server, "hsmd_backup_last_size_bytes") == made["SizeBytes"]
        assert metric(server, "hsmd_backup_last_duration_seconds") == 0
    finally:
        server.cleanup()


def test_leftovers_of_an_interrupted_backup_are_removed_at_start():
    """A crash mid-backup leaves the plain store copy in the data directory (for a
    PostgreSQL store, a directory holding it) and a partial file in the backup
    directory: the next start removes them, and only those."""
    tmp = tempfile.mkdtemp(prefix="hsmd-leftovers-")
    data = os.path.join(tmp, "data")
    os.makedirs(os.path.join(data, "backups"))
    left = [os.path.join(data, ".backup-0a2fe434-118d-41e9-a909-2dee290e0c51.db"),
            os.path.join(data, "backups", ".hsmd-x-20261130T024233Z-0a2fe434.hsmbak.part")]
    kept = [os.path.join(data, "backups", "notes.txt"), os.path.join(data, ".backup-notes.txt")]
    # A PostgreSQL store's snapshot is first a SQLite store in a directory beside it.
    snapdir = os.path.join(data, ".backup-7d1e2b9c-55aa-4a0e-9d0e-1f2e3d4c5b6a.db.tmp-Ab12Cd")
    os.makedirs(snapdir)
    left += [os.path.join(snapdir, n) for n in ("hsmd.db", "hsmd.db-wal", "hsmd.lock")]
    for p in left + kept:
        with open(p, "w") as f:
            f.write("x")
    left.append(snapdir)
    server = Hsmd(["--dev", "--backup-interval-seconds", "0"], data_dir=data,
                  env=DEV_ENV)
    try:
        assert not any(os.path.exists(p) for p in left)
        assert all(os.path.exists(p) for p in kept)
        assert "left by a backup that did not finish" in server.read_log()
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_backup_cut_short_is_not_taken_for_one():
    """A file whose header is whole but whose body is cut short (a copy interrupted by
    hand, a damaged disk) is no backup: `backup list` does not offer it, naming it in a
    warning instead; the node does not take it for its newest backup, nor count it among
    those the retention keeps, nor delete it."""
    server = start_dev(["--backup-interval-seconds", "0"])
    try:
        made = admin(server, "CreateBackup")
        backups = os.path.dirname(made["Path"])
        with open(made["Path"], "rb") as f:
            raw = bytearray(f.read())
        # Dated a day later than the whole one: the newest, were it believed.
        stamp = made["CreationDate"].to_bytes(8, "big")
        at = raw.index(stamp, 0, 512)
        raw[at:at + 8] = (made["CreationDate"] + 86400 - 60).to_bytes(8, "big")
        cut = os.path.join(backups, "hsmd-cut-short.hsmbak")
        with open(cut, "wb") as f:
            f.write(raw[:len(raw) // 2])
        p = hsmctl("backup", "list", "--dir", backups)
        assert p.returncode == 0 and made["Path"] in p.stdout, p
        assert cut not in p.stdout, p.stdout
        assert f"{cut} is not a whole backup: {len(raw) // 2} bytes, where its header says " \
            f"{len(raw)}" in p.stderr, p.stderr
        listed = admin(server, "ListBackups")
        assert [b["Path"] for b in listed["Backups"]] == [made["Path"]], listed
        data = server.data_dir
        server.stop()
        again = Hsmd(["--dev", "--backup-interval-seconds", "0"], env=DEV_ENV, data_dir=data)
        try:
            assert metric(again, "hsmd_backup_last_success_time_seconds") == \
                made["CreationDate"]
            assert metric(again, "hsmd_backup_last_size_bytes") == made["SizeBytes"]
            admin(again, "CreateBackup")
            assert os.path.exists(cut)
        finally:
            again.stop()
    finally:
        server.cleanup()


def test_offline_backup_of_a_stopped_node():
    """Right after the key ceremony (or before an upgrade) a stopped node's data
    directory is backed up with a quorum of shares; the backup is audited in that
    directory and restores a node the custodians can unseal.  A running node's
    directory is locked, and two shares are not a quorum.  A --dir that is not there
    (a medium not mounted) is refused, not made on this machine's own disk."""
    base = tempfile.mkdtemp(prefix="hsmd-offline-backup-")
    try:
        data, shares = init_store(base)
        out = os.path.join(base, "offline-media")
        quorum = ["--share", shares["alice"], "--share", shares["dave"], "--share", shares["erin"]]
        p = hsmctl("backup", "create", "--data-dir", data, "--share", shares["alice"],
                   "--share", shares["bob"])
        assert p.returncode == 1 and "1 more needed" in p.stderr, p.stderr
        trail = audit_records(data)
        p = hsmctl("backup", "create", "--data-dir", data, *quorum, "--dir", out)
        assert p.returncode == 1 and f"--dir {out} does not exist: hsmctl does not make it" \
            in p.stderr, p.stderr
        assert not os.path.exists(out) and audit_records(data) == trail
        open(out, "w").close()
        p = hsmctl("backup", "create", "--data-dir", data, *quorum, "--dir", out)
        assert p.returncode == 1 and f"--dir {out} is not a directory" in p.stderr, p.stderr
        os.unlink(out)
        os.mkdir(out)  # the medium, mounted
        p = hsmctl("backup", "create", "--data-dir", data, *quorum, "--dir", out)
        assert p.returncode == 0, p.stderr
        made = fields(p.stdout)
        assert os.path.dirname(made["file"]) == out and made["quorum"] == "3 of 5 custodian shares"
        ev = [r for r in audit_records(data) if r.get("op") == "Backup"]
        assert len(ev) == 1 and ev[0]["outcome"] == "success", ev
        assert ev[0]["extra"] == {"trigger": "offline", "backup_id": made["backup-id"],
                                  "file": os.path.basename(made["file"])}
        assert not glob.glob(os.path.join(data, ".backup-*"))

        target = os.path.join(base, "restored")
        p = hsmctl("restore", "--data-dir", target, "--share", shares["bob"], "--share",
                   shares["carol"], "--share", shares["dave"], made["file"])
        assert p.returncode == 0, p.stderr
        node = Hsmd(["--backup-interval-seconds", "0"], data_dir=target)
        try:
            for c in ("bob", "carol", "dave"):
                assert unseal(node, shares[c]).returncode == 0
            st, body, _ = node.get("/readyz")
            assert st == 200, body
            # While it runs, its directory cannot be backed up offline.
            p = hsmctl("backup", "create", "--data-dir", target, *quorum)
            assert p.returncode == 1 and f"in use by process {node.proc.pid}" in p.stderr, p.stderr
        finally:
            node.cleanup()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def schema_of(data):
    import sqlite3
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    try:
        return db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    finally:
        db.close()


def test_read_only_commands_neither_create_nor_migrate_the_store():
    """status, unseal, an offline backup and key list/describe read a store as it is: a mistyped or empty
    directory is reported and left as it was (no hsmd.db, audit/ or hsmd.lock that would
    later pass for a store), and an older store keeps its schema, so the hsmd that wrote
    it still opens it; its backup restores with this hsmctl, which migrates the copy."""
    base = tempfile.mkdtemp(prefix="hsmd-inspect-")
    try:
        empty, missing = os.path.join(base, "empty"), os.path.join(base, "missing")
        os.mkdir(empty)
        for d in (empty, missing):
            p = hsmctl("status", "--data-dir", d)
            assert p.returncode == 1 and f"no hsmd store in {d}" in p.stderr, p.stderr
        assert os.listdir(empty) == [] and not os.path.exists(missing)

        data, shares = init_store(base)
        latest = schema_of(data)
        # The store as the build before the last schema step left it.
        import sqlite3
        db = sqlite3.connect(os.path.join(data, "hsmd.db"))
        db.execute("DELETE FROM schema_version WHERE version = ?", (latest,))
        db.commit()
        db.close()
        quorum = ["--share", shares["alice"], "--share", shares["dave"], "--share", shares["erin"]]
        p = hsmctl("status", "--data-dir", data)
        assert p.returncode == 0 and fields(p.stdout)["schema"] == str(latest - 1), p.stdout
        p = hsmctl("unseal", "--data-dir", data, shares["alice"], shares["dave"], shares["erin"])
        assert p.returncode == 0, p.stderr
        p = hsmctl("backup", "create", "--data-dir", data, *quorum)
        assert p.returncode == 0, p.stderr
        made = fields(p.stdout)
        assert schema_of(data) == latest - 1
        # Listing and describing keys read too; on an older schema they are refused, not
        # half done, and the store keeps its version.
        for sub in (["list"], ["describe", "alias/none"]):
            p = hsmctl("key", *sub, "--data-dir", data)
            assert p.returncode == 1, (sub, p.stdout, p.stderr)
            assert f"the store has schema version {latest - 1}, older than this hsmctl's " \
                f"{latest}, and key {sub[0]} never brings it forward" in p.stderr, p.stderr
        p = hsmctl("key", "list", "--data-dir", empty)
        assert p.returncode == 1 and f"no hsmd store in {empty}" in p.stderr, p.stderr
        assert os.listdir(empty) == []
        assert schema_of(data) == latest - 1

        target = os.path.join(base, "restored")
        p = hsmctl("restore", "--data-dir", target, *quorum, made["file"])
        assert p.returncode == 0, p.stderr
        assert schema_of(target) == latest
        p = hsmctl("status", "--data-dir", target)
        assert p.returncode == 0 and fields(p.stdout)["schema"] == str(latest), p.stdout
        p = hsmctl("key", "list", "--data-dir", target)
        assert p.returncode == 0, p.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_every_custodian_may_bring_a_share():
    """A drill or a disaster restore with all five custodians present: shares beyond the
    quorum are checked and not needed, for the offline share check, an offline backup,
    `backup verify` and `restore`.  One of another store among them is still refused,
    named, even past the quorum."""
    base = tempfile.mkdtemp(prefix="hsmd-all-shares-")
    try:
        data, shares = init_store(base)
        every = [shares[c] for c in sorted(shares)]
        quorum = [a for f in every for a in ("--share", f)]
        p = hsmctl("unseal", "--data-dir", data, *every)
        assert p.returncode == 0 and "reconstruct the master key" in p.stdout, p.stderr
        p = hsmctl("backup", "create", "--data-dir", data, *quorum)
        assert p.returncode == 0, p.stderr
        made = fields(p.stdout)["file"]
        p = hsmctl("backup", "verify", *quorum, made)
        assert p.returncode == 0 and "verified: every chunk authenticated" in p.stdout, p.stderr
        target = os.path.join(base, "restored")
        p = hsmctl("restore", "--data-dir", target, *quorum, made)
        assert p.returncode == 0, p.stderr
        # A share of another store after the quorum: the file is named, nothing restored.
        _, others = init_store(base, name="other")
        stray = others[sorted(others)[0]]
        p = hsmctl("backup", "verify", *quorum, "--share", stray, made)
        assert p.returncode == 1 and f"{stray}: share is for store" in p.stderr, p.stderr
        again = os.path.join(base, "restored-again")
        p = hsmctl("restore", "--data-dir", again, *quorum, "--share", stray, made)
        assert p.returncode == 1 and f"{stray}: share is for store" in p.stderr, p.stderr
        assert not os.path.exists(again)  # nor the directory it would have made
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_fifo_named_like_a_backup_blocks_nothing():
    """A FIFO named like a backup, in a copy directory or backup directory others may write
    to, is no backup: skipped with a warning, never opened for reading (which would block a
    lane thread for ever, and with two such every store write, or a start)."""
    name = "hsmd-00000000-0000-4000-8000-000000000000-20260101T000000Z-00000000.hsmbak"
    drop = tempfile.mkdtemp(prefix="hsmd-drop-")
    os.mkfifo(os.path.join(drop, name))
    # No scheduled backup (due at the first round, 5 s on, on a slow machine before the
    # three below): the listing then holds exactly the three made here.
    server = start_dev(["--backup-copy-dir", drop, "--backup-interval-seconds", "0"])
    try:
        for _ in range(3):  # more than the lane has threads on two cores
            out = admin(server, "CreateBackup")
            assert out["Copied"] is True, out
        assert "is not a regular file" in server.read_log()
        backups = os.path.join(server.data_dir, "backups")
        server.stop()
        os.mkfifo(os.path.join(backups, name))
        again = Hsmd(["--dev", "--backup-interval-seconds", "0"], env=DEV_ENV,
                     data_dir=server.data_dir)
        try:
            listed = admin(again, "ListBackups")
            assert len(listed["Backups"]) == 3, listed
        finally:
            again.cleanup()
    finally:
        server.cleanup()
        shutil.rmtree(drop, ignore_errors=True)
