"""Custody of the shares: the store's commitment to each share of a split binds the
custodian named in it, so a custodian who edits their share file to carry another's name
(the checksum recomputed) is refused wherever shares are checked against the store's
commitments, and no unseal record names a custodian who gave no share; a store whose
commitments an earlier hsmd made (no name in them) keeps working as it did until its next
rekey.  `backup verify`, which has no commitments, checks shares past the quorum against
the split the quorum rebuilt."""
import hashlib
import os
import shutil
import sqlite3
import tempfile

import pytest

from conftest import Hsmd
from helpers import audit_records
from test_backup import fields, hsmctl
from test_sealed import init_store, unseal

ISSUED = "is not the share this store issued as share"
RELABELLED = "carrying a custodian name it was not issued to"
OFF_SPLIT = "is not a share of the split the others rebuild (altered or forged)"


def rewrite_share(src, dst, custodian=None, value=None, index=None):
    """The share file src with its custodian name, value or index changed and its check line
    recomputed, written to dst: what anyone holding (or having seen) a share can write."""
    with open(src) as f:
        lines = f.read().splitlines()
    assert lines[-1].startswith("check "), lines
    out = []
    for line in lines[:-1]:
        key = line.split(" ", 1)[0]
        if key == "custodian" and custodian is not None:
            line = f"custodian {custodian}"
        elif key == "value" and value is not None:
            line = f"value {value}"
        elif key == "index" and index is not None:
            line = f"index {index}"
        out.append(line)
    body = "".join(l + "\n" for l in out)
    check = hashlib.sha256(body.encode()).hexdigest()[:16]
    with open(dst, "w") as f:
        f.write(body + f"check {check}\n")
    return dst


def share_fields(path):
    with open(path) as f:
        return dict(l.split(" ", 1) for l in f.read().splitlines())


def other_value(path):
    """A share value that is not path's (each of its bytes changed)."""
    v = bytes.fromhex(share_fields(path)["value"])
    return bytes(b ^ 0x5a for b in v).hex()


def share_args(files):
    return [a for f in files for a in ("--share", f)]


def write_v1_commitments(data, share_files):
    """Rewrites the store's commitments as an hsmd from before names were bound made them:
    bare hex of SHA-256(label, store id, set id, index, value) per share, by index."""
    by_index = {}
    for f in share_files:
        s = share_fields(f)
        msg = (b"hsmd/v1/share-commitment\0" + s["store"].encode() + bytes.fromhex(s["set"]) +
               int(s["index"]).to_bytes(4, "big") + bytes.fromhex(s["value"]))
        by_index[int(s["index"])] = hashlib.sha256(msg).hexdigest()
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    try:
        (current,) = db.execute("SELECT value FROM meta WHERE name = 'share_commits'").fetchone()
        assert bytes(current).startswith(b"v2:"), current  # a split made now is version 2
        old = "".join(by_index[i] for i in sorted(by_index))
        db.execute("UPDATE meta SET value = ? WHERE name = 'share_commits'", (old.encode(),))
        db.commit()
    finally:
        db.close()


@pytest.fixture(scope="module")
def custody():
    """A 3-of-5 store of named custodians, an offline backup of it, and bob's share relabelled
    as carol's."""
    base = tempfile.mkdtemp(prefix="hsmd-custody-")
    data, shares = init_store(base)
    p = hsmctl("backup", "create", "--data-dir", data,
               *share_args([shares["alice"], shares["bob"], shares["carol"]]))
    assert p.returncode == 0, p.stderr
    backup = fields(p.stdout)["file"]
    bob_as_carol = rewrite_share(shares["bob"], os.path.join(base, "bob-as-carol.share"),
                                 custodian="carol")
    yield base, data, shares, backup, bob_as_carol
    shutil.rmtree(base, ignore_errors=True)


def test_a_relabelled_share_is_refused_offline(custody):
    """Bob's share carrying carol's name is refused by the offline unseal, within the quorum
    and past it, by restore (within the quorum and past it) and by rekey, each naming the
    file; bob's own share still works beside the others."""
    base, data, shares, backup, bob_as_carol = custody
    for given in ([shares["alice"], bob_as_carol, shares["dave"]],
                  [shares["alice"], shares["dave"], shares["erin"], bob_as_carol]):
        p = hsmctl("unseal", "--data-dir", data, *given)
        assert p.returncode == 1, p.stdout + p.stderr
        assert f"{bob_as_carol}: share 2 {ISSUED} 2 (altered, forged, or {RELABELLED})" \
            in p.stderr, p.stderr
    p = hsmctl("unseal", "--data-dir", data, shares["alice"], shares["bob"], shares["dave"])
    assert p.returncode == 0 and "reconstruct the master key" in p.stdout, p.stderr
    for n, given in enumerate(([shares["alice"], bob_as_carol, shares["dave"]],
                               [shares["alice"], shares["dave"], shares["erin"], bob_as_carol])):
        target = os.path.join(base, f"restored-{n}")
        p = hsmctl("restore", "--data-dir", target, *share_args(given), backup)
        assert p.returncode == 1 and f"{bob_as_carol}: share 2 " in p.stderr, p.stderr
        assert not os.path.exists(os.path.join(target, "hsmd.db"))
    p = hsmctl("rekey", "--data-dir", data,
               *share_args([shares["alice"], bob_as_carol, shares["dave"]]),
               "--share-dir", os.path.join(base, "rekey-refused"))
    assert p.returncode == 1 and RELABELLED in p.stderr, p.stdout + p.stderr
    assert not os.path.exists(os.path.join(base, "rekey-refused", "alice.share"))


def test_a_relabelled_share_is_refused_by_the_node(tmp_path):
    """Online, the relabelled share is refused by itself (the shares given before it stay),
    its refusal is recorded, and the unseal that follows names only the custodians whose
    shares were given."""
    data, shares = init_store(str(tmp_path))
    bob_as_carol = rewrite_share(shares["bob"], str(tmp_path / "bob-as-carol.share"),
                                 custodian="carol")
    server = Hsmd([], data_dir=data)
    try:
        assert unseal(server, shares["alice"]).returncode == 0
        p = unseal(server, bob_as_carol)
        assert p.returncode != 0 and RELABELLED in p.stderr, p.stdout + p.stderr
        assert unseal(server, shares["dave"]).returncode == 0
        p = unseal(server, shares["erin"])
        assert p.returncode == 0, p.stdout + p.stderr
        unseals = [r for r in audit_records(data) if r.get("op") == "Unseal"]
        named = [(r["outcome"] == "success", r["extra"]["share"]) for r in unseals]
        assert [ok for ok, _ in named] == [True, False, True, True], named
        assert ", custodian carol, " in named[1][1]  # the refused file's claim, refused
        assert [s.split(", ")[1] for ok, s in named if ok] == \
            ["custodian alice", "custodian dave", "custodian erin"], named
    finally:
        server.cleanup()


def test_old_commitments_keep_working_until_the_next_rekey(tmp_path):
    """A store whose commitments an earlier hsmd wrote (no name in them) unseals with a
    renamed share as before, and still refuses an altered one; its rekey makes a new split,
    whose commitments bind the new custodians' names."""
    base = str(tmp_path)
    data, shares = init_store(base)
    write_v1_commitments(data, shares.values())
    renamed = rewrite_share(shares["bob"], os.path.join(base, "bob-renamed.share"),
                            custodian="robert")
    altered = rewrite_share(shares["carol"], os.path.join(base, "carol-altered.share"),
                            value=other_value(shares["carol"]))
    p = hsmctl("unseal", "--data-dir", data, shares["alice"], renamed, shares["dave"])
    assert p.returncode == 0 and "reconstruct the master key" in p.stdout, p.stdout + p.stderr
    p = hsmctl("unseal", "--data-dir", data, shares["alice"], altered, shares["dave"])
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"{altered}: share 3 {ISSUED} 3 (altered or forged)" in p.stderr, p.stderr
    new_dir = os.path.join(base, "rekeyed")
    p = hsmctl("rekey", "--data-dir", data,
               *share_args([shares["alice"], renamed, shares["dave"]]), "--share-dir", new_dir,
               "--custodians", "fay,gus,hana,ivan,jo")
    assert p.returncode == 0, p.stdout + p.stderr
    new = {c: os.path.join(new_dir, c + ".share") for c in ("fay", "gus", "hana", "ivan", "jo")}
    gus_as_hana = rewrite_share(new["gus"], os.path.join(base, "gus-as-hana.share"),
                                custodian="hana")
    p = hsmctl("unseal", "--data-dir", data, new["fay"], gus_as_hana, new["ivan"])
    assert p.returncode == 1 and RELABELLED in p.stderr, p.stdout + p.stderr
    p = hsmctl("unseal", "--data-dir", data, new["fay"], new["gus"], new["ivan"])
    assert p.returncode == 0 and "reconstruct the master key" in p.stdout, p.stdout + p.stderr


def test_backup_verify_checks_every_share_past_the_quorum(custody):
    """`backup verify` with all five custodians: a forged share past the quorum (another
    value, or another share's value under its index) is refused and named, as restore
    refuses it; the real ones pass."""
    base, data, shares, backup, _ = custody
    quorum = [shares["alice"], shares["bob"], shares["carol"]]
    p = hsmctl("backup", "verify", *share_args(quorum + [shares["dave"], shares["erin"]]), backup)
    assert p.returncode == 0 and "verified: every chunk authenticated" in p.stdout, p.stderr
    forged = [rewrite_share(shares["dave"], os.path.join(base, "dave-forged.share"),
                            value=other_value(shares["dave"])),
              rewrite_share(shares["erin"], os.path.join(base, "erin-as-4.share"), index=4,
                            custodian="dave")]
    for f in forged:
        p = hsmctl("backup", "verify", *share_args(quorum + [f]), backup)
        assert p.returncode == 1, p.stdout + p.stderr
        assert f"{f}: share 4 {OFF_SPLIT}: refused" in p.stderr, p.stderr
        assert "verified" not in p.stdout
        target = os.path.join(base, "restored-forged")
        p = hsmctl("restore", "--data-dir", target, *share_args(quorum + [f]), backup)
        assert p.returncode == 1 and f"{f}: share 4 " in p.stderr, p.stderr
        assert not os.path.exists(target)


def drop_commitments(data):
    """Makes data's store one from before commitments existed: no share_commits."""
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    try:
        assert db.execute("DELETE FROM meta WHERE name = 'share_commits'").rowcount == 1
        db.commit()
    finally:
        db.close()


def test_a_store_without_commitments_checks_every_share_past_the_quorum(tmp_path):
    """A store made before commitments existed has none to check shares against: a share
    given past the quorum is checked against the split the quorum rebuilt, as `backup
    verify` checks it, by every offline command that takes shares.  A forged one (another
    value, or another share's value under its index) is refused and named, and the command
    does nothing; the genuine ones pass."""
    base = str(tmp_path)
    data, shares = init_store(base)
    drop_commitments(data)
    quorum = [shares["alice"], shares["bob"], shares["carol"]]
    forged = [rewrite_share(shares["dave"], os.path.join(base, "dave-forged.share"),
                            value=other_value(shares["dave"])),
              rewrite_share(shares["erin"], os.path.join(base, "erin-as-4.share"), index=4,
                            custodian="dave")]
    p = hsmctl("unseal", "--data-dir", data, *quorum, shares["dave"], shares["erin"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "the 5 share files reconstruct the master key" in p.stdout, p.stdout
    p = hsmctl("backup", "create", "--data-dir", data,
               *share_args(quorum + [shares["dave"], shares["erin"]]))
    assert p.returncode == 0, p.stdout + p.stderr
    backup = fields(p.stdout)["file"]
    backups = set(os.listdir(os.path.dirname(backup)))
    for n, f in enumerate(forged):
        refused = f"{f}: share 4 {OFF_SPLIT}: refused"
        p = hsmctl("unseal", "--data-dir", data, *quorum, f)
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert "reconstruct" not in p.stdout
        p = hsmctl("backup", "create", "--data-dir", data, *share_args(quorum + [f]))
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert set(os.listdir(os.path.dirname(backup))) == backups
        target = os.path.join(base, f"restored-{n}")
        p = hsmctl("restore", "--data-dir", target, *share_args(quorum + [f]), backup)
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert not os.path.exists(target)
        new_dir = os.path.join(base, f"rekey-refused-{n}")
        p = hsmctl("rekey", "--data-dir", data, *share_args(quorum + [f]),
                   "--share-dir", new_dir)
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert not os.path.exists(new_dir) or os.listdir(new_dir) == []
    # The refusals changed nothing: the restore and the rekey go through with the real ones.
    target = os.path.join(base, "restored")
    p = hsmctl("restore", "--data-dir", target, *share_args(quorum + [shares["dave"]]), backup)
    assert p.returncode == 0, p.stdout + p.stderr
    new_dir = os.path.join(base, "rekeyed")
    p = hsmctl("rekey", "--data-dir", data, *share_args(quorum + [shares["erin"]]),
               "--share-dir", new_dir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len([f for f in os.listdir(new_dir) if f.endswith(".share")]) == 5


def test_a_share_repeated_past_the_quorum_is_refused_and_named(tmp_path):
    """Each share past the quorum was checked on its own, so one given twice (a share of
    the quorum again, or an extra twice) passed: `unseal s1 s2 s3 s3 s1` said the 5 share
    files reconstruct the master key with shares 4 and 5 missing.  Every offline command
    that takes shares refuses a repeat past the quorum as it does within it, names it,
    and does nothing; distinct shares past the quorum pass."""
    base = str(tmp_path)
    data, shares = init_store(base)
    quorum = [shares["alice"], shares["bob"], shares["carol"]]
    p = hsmctl("backup", "create", "--data-dir", data, *share_args(quorum))
    assert p.returncode == 0, p.stdout + p.stderr
    backup = fields(p.stdout)["file"]
    backups = set(os.listdir(os.path.dirname(backup)))
    repeats = [(quorum + [shares["carol"], shares["alice"]], shares["carol"], 3),
               (quorum + [shares["alice"]], shares["alice"], 1),
               (quorum + [shares["dave"], shares["dave"]], shares["dave"], 4),
               (quorum + [shares["dave"], shares["erin"], shares["bob"]], shares["bob"], 2)]
    for n, (given, repeated, index) in enumerate(repeats):
        refused = f"{repeated}: share {index} was already provided"
        p = hsmctl("unseal", "--data-dir", data, *given)
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert "reconstruct" not in p.stdout, p.stdout
        p = hsmctl("backup", "create", "--data-dir", data, *share_args(given))
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert set(os.listdir(os.path.dirname(backup))) == backups
        p = hsmctl("backup", "verify", *share_args(given), backup)
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert "verified" not in p.stdout, p.stdout
        target = os.path.join(base, f"restored-{n}")
        p = hsmctl("restore", "--data-dir", target, *share_args(given), backup)
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert not os.path.exists(target)
        new_dir = os.path.join(base, f"rekey-refused-{n}")
        p = hsmctl("rekey", "--data-dir", data, *share_args(given), "--share-dir", new_dir)
        assert p.returncode == 1 and refused in p.stderr, p.stdout + p.stderr
        assert not os.path.exists(new_dir) or os.listdir(new_dir) == []
    # Distinct shares past the quorum pass, and the refusals changed nothing.
    everyone = quorum + [shares["dave"], shares["erin"]]
    p = hsmctl("unseal", "--data-dir", data, *everyone)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "the 5 share files reconstruct the master key" in p.stdout, p.stdout
    p = hsmctl("backup", "create", "--data-dir", data, *share_args(everyone))
    assert p.returncode == 0, p.stdout + p.stderr
    p = hsmctl("backup", "verify", *share_args(everyone), backup)
    assert p.returncode == 0 and "verified: every chunk authenticated" in p.stdout, p.stderr
    new_dir = os.path.join(base, "rekeyed")
    p = hsmctl("rekey", "--data-dir", data, *share_args(everyone), "--share-dir", new_dir)
    assert p.returncode == 0, p.stdout + p.stderr
