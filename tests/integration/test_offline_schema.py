"""Offline hsmctl commands on a store of the build before (one schema step behind): a
command refused for what the store holds is refused before it brings the schema forward,
as a refused start of hsmd is, so the older hsmd still opens the store and no upgrade is
left on it; a command that goes on migrates and leaves the upgrade for the next Startup
record."""
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


def test_a_store_copy_refused_for_its_destination_leaves_its_schema(base):
    """store copy into a store that is not empty (an older one, say a shared store in use
    named by mistake) is refused before that store is brought forward."""
    data, _ = init_store(base)
    other, _ = init_store(base, "other")
    old, other_old = older_schema(data), older_schema(other)
    p = hsmctl("store", "copy", "--data-dir", data, "--to", "sqlite:" + other)
    assert p.returncode == 1 and "the destination store is not empty" in p.stderr, p.stderr
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
