"""Offline hsmctl commands on a store of the build before (one schema step behind): a
command refused for its shares, its arguments or what the store holds is refused before it
brings the schema forward, as a refused start of hsmd is, so the older hsmd still opens the
store and no upgrade is left on it; a command that goes on migrates and leaves the upgrade
for the next Startup record."""
import os
import shutil
import sqlite3
import tempfile

import pytest

from test_backup import hsmctl
from test_sealed import init_store
from test_startup import older_schema, schema_of


def upgrades(data):
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    try:
        return db.execute("SELECT count(*) FROM meta WHERE name LIKE 'schema_upgrade%'") \
            .fetchone()[0]
    finally:
        db.close()


@pytest.fixture()
def base():
    d = tempfile.mkdtemp(prefix="hsmd-offline-schema-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def quorum(shares, n=3):
    out = []
    for c in ["alice", "bob", "carol"][:n]:
        out += ["--share", shares[c]]
    return out


# Each: the command (data: the store's directory; q: a quorum; base: a directory of the
# test's own), what its refusal says, and its exit status.
REFUSALS = {
    "user create, the user exists": (
        lambda data, q, base: ["user", "create", "ops", "--roles", "crypto-user",
                               "--data-dir", data] + q,
        "user ops already exists", 1),
    "user create, an unknown role": (
        lambda data, q, base: ["user", "create", "eve", "--roles", "root", "--data-dir",
                               data] + q,
        "root", 1),
    "user create, too few shares": (
        lambda data, q, base: ["user", "create", "eve", "--roles", "crypto-user",
                               "--data-dir", data] + q[:4],
        "2 of 3 shares given", 1),
    "user unlock, no such user": (
        lambda data, q, base: ["user", "unlock", "nobody", "--data-dir", data] + q,
        "user nobody does not exist", 1),
    "access-key create, no such user": (
        lambda data, q, base: ["access-key", "create", "nobody", "--data-dir", data] + q,
        "user nobody does not exist", 1),
    "access-key revoke, no such key": (
        lambda data, q, base: ["access-key", "revoke", "AKIAAAAAAAAAAAAAAAAA", "--data-dir",
                               data] + q,
        "access key AKIAAAAAAAAAAAAAAAAA does not exist", 1),
    "key enable, no shares": (
        lambda data, q, base: ["key", "enable", "1234abcd-12ab-34cd-56ef-1234567890ab",
                               "--data-dir", data],
        "needs a quorum of the custodians' share files", 1),
    "key enable, no such key": (
        lambda data, q, base: ["key", "enable", "1234abcd-12ab-34cd-56ef-1234567890ab",
                               "--data-dir", data] + q,
        "1234abcd-12ab-34cd-56ef-1234567890ab", 1),
    "key create, an unknown spec": (
        lambda data, q, base: ["key", "create", "--spec", "NO_SUCH_SPEC", "--account-id",
                               "111122223333", "--region", "us-east-1", "--data-dir",
                               data] + q,
        "NO_SUCH_SPEC", 1),
    "key import, no such key": (
        lambda data, q, base: ["key", "import", "1234abcd-12ab-34cd-56ef-1234567890ab",
                               "--material", material(base), "--data-dir", data] + q,
        "1234abcd-12ab-34cd-56ef-1234567890ab", 1),
    "init, already initialized": (
        lambda data, q, base: ["init", "--data-dir", data, "--share-dir",
                               os.path.join(base, "again")],
        "this store is already initialized", 1),
    "rekey, too few new shares for the quorum": (
        lambda data, q, base: ["rekey", "--data-dir", data, "--share-dir",
                               os.path.join(base, "new"), "--shares", "2"] + q,
        "2 new shares cannot keep the current quorum of 3", 1),
}


def material(base):
    path = os.path.join(base, "material.bin")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(os.urandom(32))
    return path


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_offline_command_leaves_the_schema_as_it_was(base, case):
    data, shares = init_store(base)
    old = older_schema(data)
    command, said, status = REFUSALS[case]
    p = hsmctl(*command(data, quorum(shares), base))
    assert p.returncode == status and said in p.stderr, (p.returncode, p.stderr)
    assert "schema migrated" not in p.stderr, p.stderr
    assert (schema_of(data), upgrades(data)) == (old, 0)
    # A command that goes on brings the schema forward, and keeps the upgrade for the next
    # Startup record.
    p = hsmctl("user", "create", "eve", "--roles", "crypto-user", "--data-dir", data,
               *quorum(shares))
    assert p.returncode == 0, p.stderr
    assert (schema_of(data), upgrades(data)) == (old + 1, 1)


def test_a_store_copy_refused_for_its_destination_leaves_both_schemas(base):
    """store copy into a store that is not empty (an older one, say a shared store in use
    named by mistake) is refused before either store is brought forward."""
    data, _ = init_store(base)
    other, _ = init_store(base, "other")
    old, other_old = older_schema(data), older_schema(other)
    p = hsmctl("store", "copy", "--data-dir", data, "--to", "sqlite:" + other)
    assert p.returncode == 1 and "the destination store is not empty" in p.stderr, p.stderr
    assert (schema_of(data), upgrades(data)) == (old, 0)
    assert (schema_of(other), upgrades(other)) == (other_old, 0)
    empty = os.path.join(base, "copy")
    p = hsmctl("store", "copy", "--data-dir", data, "--to", "sqlite:" + empty)
    assert p.returncode == 0, p.stderr
    assert (schema_of(data), upgrades(data)) == (old + 1, 1)
    assert schema_of(empty) == old + 1


def test_a_restore_refused_for_its_shared_store_leaves_its_schema(base):
    """restore into a shared store that is not empty is refused before that store is
    brought forward."""
    data, shares = init_store(base)
    out = os.path.join(base, "backups")
    os.mkdir(out)
    p = hsmctl("backup", "create", "--data-dir", data, "--dir", out, *quorum(shares))
    assert p.returncode == 0, p.stderr
    backup = [os.path.join(out, f) for f in os.listdir(out) if f.endswith(".hsmbak")]
    assert len(backup) == 1, os.listdir(out)
    old = older_schema(data)
    p = hsmctl("--store", "sqlite:" + data, "restore", "--data-dir", os.path.join(base, "node"),
               *quorum(shares), backup[0])
    assert p.returncode == 1 and "is not empty" in p.stderr, p.stderr
    assert (schema_of(data), upgrades(data)) == (old, 0)
    empty = os.path.join(base, "shared")
    p = hsmctl("--store", "sqlite:" + empty, "restore", "--data-dir",
               os.path.join(base, "node2"), *quorum(shares), backup[0])
    assert p.returncode == 0, p.stderr
    assert schema_of(empty) == old + 1
