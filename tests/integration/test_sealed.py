"""The sealed node: `hsmctl init` with a 3-of-5 quorum, hsmd starting sealed,
unsealing share by share with `hsmctl --endpoint ... unseal`, and sealing
again (HsmdAdmin.Seal, which needs a crypto-officer)."""
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import HSMCTL, Hsmd, client, signed_call, start_dev, unsigned_call
from helpers import (IDENTITY, admin, audit_record, audit_records, eventually, gdb_can_trace,
                     raises)

CUSTODIANS = ["alice", "bob", "carol", "dave", "erin"]


def hsmctl(*args, endpoint=None):
    cmd = [HSMCTL] + (["--endpoint", endpoint] if endpoint else []) + list(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def init_store(base, name="data"):
    data, shares = os.path.join(base, name), os.path.join(base, name + "-shares")
    p = hsmctl("init", "--data-dir", data, "--share-dir", shares, "--shares", "5",
               "--threshold", "3", "--custodians", ",".join(CUSTODIANS), "--admin", "ops")
    assert p.returncode == 0, p.stderr
    assert "quorum: 3 of 5" in p.stdout
    files = {c: os.path.join(shares, c + ".share") for c in CUSTODIANS}
    assert all(os.path.exists(f) for f in files.values())
    return data, files


def status(server):
    st, out = unsigned_call(server, "HsmdAdmin.Status", {})
    assert st == 200, out
    return out


def assert_sealed(server):
    st, body, _ = server.get("/readyz")
    assert st == 503 and b'"ready":false' in body and b'"state":"sealed"' in body
    assert server.get("/healthz")[0] == 200
    e = raises("ServiceUnavailableException", client(server).list_keys, status=503)
    assert "sealed" in e["Error"]["Message"]
    rec = audit_record(server.data_dir, e["ResponseMetadata"]["RequestId"])
    assert (rec["op"], rec["outcome"], rec["error"]) == ("ListKeys", "denied",
                                                         "ServiceUnavailableException")
    raises("ServiceUnavailableException", client(server).generate_random, NumberOfBytes=8,
           status=503)
    s = status(server)
    assert s["Sealed"] is True and s["State"] == "sealed"
    assert "KeyCount" not in s


def unseal(server, share_file):
    return hsmctl("unseal", share_file, endpoint=server.endpoint)


def create_first_officer(server, data_dir, share_files):
    """The first crypto-officer of a production store: `hsmctl init --admin ops`
    wrote its access key as an AWS credentials file next to the shares."""
    path = os.path.join(os.path.dirname(next(iter(share_files.values()))), "ops.credentials")
    with open(path) as f:
        fields = dict(l.split(" = ", 1) for l in f.read().splitlines() if " = " in l)
    assert oct(os.stat(path).st_mode & 0o777) == "0o400"
    return fields["aws_access_key_id"], fields["aws_secret_access_key"]


@pytest.fixture(scope="module")
def prod():
    base = tempfile.mkdtemp(prefix="hsmd-sealed-")
    data, shares = init_store(base)
    server = Hsmd([], data_dir=data)
    yield server, data, shares, base
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


def test_init_writes_only_new_files_and_checks_them_before_the_store_commits(tmp_path):
    """A share or credentials file already in the share directory, or a directory that takes
    no files, stops the ceremony before the master key exists: a store initialized with shares
    that could not be written could never be unsealed, nor initialized again."""
    data, shares = str(tmp_path / "data"), tmp_path / "shares"
    shares.mkdir()
    args = ["init", "--data-dir", data, "--share-dir", str(shares), "--shares", "2",
            "--threshold", "2", "--custodians", "alice,bob", "--admin", "ops"]
    for existing in ("bob.share", "ops.credentials"):
        (shares / existing).write_text("keep me")
        p = hsmctl(*args)
        assert p.returncode == 1 and f"{existing} already exists" in p.stderr, p.stderr
        assert "nothing was created" in p.stderr and "store:" not in p.stdout, p.stdout
        assert (shares / existing).read_text() == "keep me"
        assert sorted(os.listdir(shares)) == [existing]
        (shares / existing).unlink()
    # Users are checked too: a name IAM would refuse, or one user named twice.
    for extra, why in ((["--admin", "bad name"], "user names may contain only"),
                       (["--admin", "alice", "--custodian-users"], "user alice is named twice")):
        p = hsmctl(*(args[:-2] + extra))
        assert p.returncode == 1 and why in p.stderr, p.stderr
        assert os.listdir(shares) == [] and "store:" not in p.stdout, p.stdout
        assert not os.path.exists(os.path.join(data, "hsmd.db"))
    # A quorum the store cannot take is refused before any file or directory is made.
    for n, t in (("2", "1"), ("3", "4"), ("1", "1")):
        p = hsmctl("init", "--data-dir", data + "-q", "--share-dir", str(tmp_path / "q"),
                   "--shares", n, "--threshold", t)
        assert p.returncode == 2 and "must be between 2 and" in p.stderr, p.stderr
        assert not os.path.exists(data + "-q") and not os.path.exists(tmp_path / "q")
    if os.geteuid() != 0:  # root writes anywhere: the mode cannot stop it
        shares.chmod(0o500)
        p = hsmctl(*args)
        shares.chmod(0o700)
        assert p.returncode == 1 and "cannot write files in" in p.stderr, p.stderr
    # Nothing was committed: the same data directory takes the ceremony now.
    p = hsmctl(*args)
    assert p.returncode == 0 and "quorum: 2 of 2" in p.stdout, p.stdout + p.stderr
    p = hsmctl("unseal", "--data-dir", data, str(shares / "alice.share"), str(shares / "bob.share"))
    assert p.returncode == 0 and "reconstruct the master key" in p.stdout, p.stdout + p.stderr


def test_init_keeps_the_shares_out_of_the_data_directory(tmp_path):
    """Shares in the data directory (or the data directory in the share directory) would
    give whoever holds that directory the quorum with the store: refused, named, after
    symlinks and dot-dot are resolved, before any file or directory is made."""
    os.mkdir(tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "link")
    cases = [
        ("d", "d", "--share-dir is the data directory, {t}/d: its holder would hold the quorum"),
        ("d", "d/", "--share-dir is the data directory, {t}/d: its holder would hold the quorum"),
        ("d", "d/shares", "--share-dir {t}/d/shares is inside --data-dir {t}/d: its holder "
                          "would hold the quorum"),
        ("d/x/..", "d/s", "--share-dir {t}/d/s is inside --data-dir {t}/d: "),
        ("real", "link/s", "--share-dir {t}/real/s is inside --data-dir {t}/real: "),
        ("s/data", "s", "--data-dir {t}/s/data is inside --share-dir {t}/s: its holder would "
                        "hold the store with its quorum"),
    ]
    t = os.path.realpath(tmp_path)
    for d, s, why in cases:
        data, shares = str(tmp_path / d), str(tmp_path / s)
        before = sorted(os.listdir(tmp_path))
        p = hsmctl("init", "--data-dir", data, "--share-dir", shares, "--shares", "3",
                   "--threshold", "2")
        assert p.returncode == 1, p.stdout
        assert why.format(t=t) in p.stderr, p.stderr
        assert "nothing was created" in p.stderr and "store:" not in p.stdout, p.stdout
        assert sorted(os.listdir(tmp_path)) == before and os.listdir(tmp_path / "real") == []
    p = hsmctl("init", "--data-dir", str(tmp_path / "d"), "--share-dir", str(tmp_path / "ds"),
               "--shares", "3", "--threshold", "2")
    assert p.returncode == 0, p.stderr



@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_init_and_rekey_refuse_a_share_directory_another_user_owns(tmp_path):
    """A share directory's owner may write to it whatever its mode (a USB stick mounted
    for a desktop user is that user's, 0755), and so may the owner of a directory above
    it: either could replace the share files and the transcript before the custodians
    take them.  Refused, named, nothing made; one of this user's (or root's) is taken."""
    other = 65534  # nobody
    data, files = init_store(str(tmp_path))
    for cmd in ("init", "rekey"):
        shares = tmp_path / f"{cmd}-stick"
        shares.mkdir(mode=0o755)
        os.chown(shares, other, other)
        if cmd == "init":
            args = ["init", "--data-dir", str(tmp_path / "new"), "--share-dir", str(shares),
                    "--shares", "3", "--threshold", "2"]
        else:
            args = ["rekey", "--data-dir", data, "--share-dir", str(shares)]
            for c in CUSTODIANS[:3]:
                args += ["--share", files[c]]
        p = hsmctl(*args)
        assert p.returncode == 1, p.stdout
        assert f"{shares} belongs to uid {other}, who could replace the share files" in \
            p.stderr and "nothing was created" in p.stderr, p.stderr
        assert os.listdir(shares) == []
        assert cmd == "rekey" or not os.path.exists(tmp_path / "new")
        os.chown(shares, os.geteuid(), os.getegid())
        # Nor may anyone else write to a directory above it: they could put a directory
        # of their own, files and all, in its place.  One not made yet is checked so too.
        parent = tmp_path / f"{cmd}-parent"
        parent.mkdir(mode=0o755)
        inner = parent / "ceremony"
        for owner, mode, why in ((other, 0o755, "belongs to another user"),
                                 (os.geteuid(), 0o777, "may be written by its group or others")):
            os.chown(parent, owner, owner)
            os.chmod(parent, mode)
            i = args.index("--share-dir") + 1
            p = hsmctl(*args[:i], str(inner), *args[i + 1:])
            assert p.returncode == 1, p.stdout
            assert f"{parent}, above the share directory, {why} (uid {owner}" in p.stderr and \
                "nothing was created" in p.stderr, p.stderr
            assert os.listdir(parent) == []
        p = hsmctl(*args)
        assert p.returncode == 0, p.stderr
        assert any(f.endswith(".share") for f in os.listdir(shares))



def test_init_and_rekey_records_never_cut_a_custodian_name(tmp_path):
    """16 custodians named by address do not fit one audit value: the Init and Rekey
    records name those that fit whole and say how many more there are, rather than
    ending on a name cut short (which would read as another custodian's)."""
    def long_names(tag):
        return [f"custodian.{tag}{i:02d}@security.example.com" for i in range(1, 17)]

    def named(data, op):
        rec = [r for r in audit_records(data) if r.get("op") == op][-1]
        listed = rec["extra"]["custodians"].split(",")
        return listed[:-1], listed[-1]

    data, shares = str(tmp_path / "data"), str(tmp_path / "shares")
    p = hsmctl("init", "--data-dir", data, "--share-dir", shares, "--shares", "16",
               "--threshold", "9", "--custodians", ",".join(long_names("a")))
    assert p.returncode == 0, p.stderr
    given = [os.path.join(shares, n + ".share") for n in long_names("a")[:9]]
    args = ["rekey", "--data-dir", data, "--share-dir", str(tmp_path / "new"), "--shares",
            "16", "--threshold", "9", "--custodians", ",".join(long_names("b"))]
    for f in given:
        args += ["--share", f]
    p = hsmctl(*args)
    assert p.returncode == 0, p.stderr
    for op, tag in (("Init", "a"), ("Rekey", "b")):
        whole, tail = named(data, op)
        assert 0 < len(whole) < 16 and whole == long_names(tag)[:len(whole)], whole
        assert tail == f"+{16 - len(whole)} more (named in the transcript)", tail
    # A list that fits is named whole, as before.
    small = str(tmp_path / "small")
    p = hsmctl("init", "--data-dir", small, "--share-dir", small + "-shares", "--shares", "3",
               "--threshold", "2", "--custodians", "alice,bob,carol")
    assert p.returncode == 0, p.stderr
    assert named(small, "Init") == (["alice", "bob"], "carol")


def test_init_takes_the_share_count_from_the_custodians_and_names_the_split(tmp_path):
    """--custodians without --shares makes one share a name, as rekey does; the transcript
    names the split, as `hsmctl status` and the Init record do.  Given both, they must
    agree, and the quorum is checked on the count the names give."""
    data, shares = str(tmp_path / "data"), str(tmp_path / "shares")
    p = hsmctl("init", "--data-dir", data, "--share-dir", shares, "--threshold", "2",
               "--custodians", "alice,bob,carol")
    assert p.returncode == 0, p.stderr
    assert "quorum: 2 of 3" in p.stdout, p.stdout
    assert sorted(f for f in os.listdir(shares) if f.endswith(".share")) == [
        "alice.share", "bob.share", "carol.share"]
    (transcript,) = [os.path.join(shares, f) for f in os.listdir(shares)
                     if f.startswith("ceremony-")]
    with open(transcript) as f:
        text = f.read()
    assert "quorum: 2 of 3 custodian shares" in text, text
    (named,) = re.findall(r"^share set: ([0-9a-f]+)$", text, re.M)
    st = hsmctl("status", "--data-dir", data)
    assert st.returncode == 0, st.stderr
    assert f"split: {named}\n" in st.stdout, (named, st.stdout)
    (init,) = [r for r in audit_records(data) if r.get("op") == "Init"]
    assert init["extra"]["share_set"] == named and init["extra"]["shares"] == "3", init

    for extra, why in ((["--shares", "4"], "3 custodian names given for 4 shares"),
                       (["--threshold", "4"], "threshold")):
        other = str(tmp_path / ("other" + extra[1]))
        p = hsmctl("init", "--data-dir", other, "--share-dir", other + "-shares",
                   "--custodians", "alice,bob,carol", *extra)
        assert p.returncode == 2 and why in p.stderr, (extra, p.stderr)
        assert not os.path.exists(other) and not os.path.exists(other + "-shares")


def test_a_share_file_others_may_read_is_warned_of(tmp_path):
    """Share files are written 0400.  One copied so that others may read it (a USB stick,
    a careless cp) still unseals, and hsmctl warns, once a file, naming it."""
    data, shares = str(tmp_path / "data"), str(tmp_path / "shares")
    p = hsmctl("init", "--data-dir", data, "--share-dir", shares, "--threshold", "2",
               "--custodians", "alice,bob,carol")
    assert p.returncode == 0, p.stderr
    alice, bob = os.path.join(shares, "alice.share"), os.path.join(shares, "bob.share")
    p = hsmctl("unseal", "--data-dir", data, alice, bob)
    assert p.returncode == 0 and "warning" not in p.stderr, p.stderr
    os.chmod(alice, 0o644)
    p = hsmctl("unseal", "--data-dir", data, alice, bob)
    assert p.returncode == 0, p.stderr
    warnings = [l for l in p.stderr.splitlines() if "may be read by its group or others" in l]
    assert len(warnings) == 1 and alice in warnings[0] and "0644" in warnings[0], p.stderr
    with open(alice) as f:
        (value,) = [l.split()[1] for l in f.read().splitlines() if l.startswith("value ")]
    assert value not in p.stderr


GDB = gdb_can_trace()


def killed_init(base, stop_at, ignore=0):
    """Runs `hsmctl init` (3 of 5) under gdb, killed the first time (or the ignore+1-th time)
    it reaches the function stop_at: a crash, a power cut or an operator's ^C at that point."""
    data, shares = os.path.join(base, "data"), os.path.join(base, "shares")
    cmd = ["gdb", "-q", "-nx", "-batch", "-ex", f"break {stop_at}"]
    cmd += ["-ex", f"ignore 1 {ignore}"] if ignore else []
    cmd += ["-ex", "run", "-ex", "kill", "--args", HSMCTL, "init", "--data-dir", data,
            "--share-dir", shares, "--shares", "5", "--threshold", "3",
            "--custodians", ",".join(CUSTODIANS), "--admin", "ops"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert "Breakpoint 1, " in p.stdout and "killed]" in p.stdout, p.stdout + p.stderr
    return data, shares


def written_shares(shares):
    return sorted(f for f in os.listdir(shares) if f.endswith(".share")) \
        if os.path.isdir(shares) else []


@pytest.mark.skipif(not GDB, reason="stopping hsmctl init midway needs gdb, allowed to trace")
@pytest.mark.parametrize("stop_at,ignore,n_files,committed", [
    ("hsmctl_write_new_file", 0, 0, False),     # before the first share file
    ("hsmctl_write_new_file", 2, 2, False),     # two share files written, the third not
    ("hsm_store_meta_put", 0, 5, False),        # every file written, the store not yet
    ("hsmctl_local_audit_fields", 0, 5, True),  # the store committed, Init not yet recorded
])
def test_init_stopped_midway_leaves_a_usable_store_or_none(tmp_path, stop_at, ignore, n_files,
                                                           committed):
    """An init killed at any point leaves either no store (init runs again) or a store its
    share files unseal: the share files and the transcript are written and fsynced before the
    store records the master key.  Never a store that says "sealed, quorum 3" whose shares
    exist nowhere, which could neither be unsealed nor initialized again."""
    data, shares = killed_init(str(tmp_path), stop_at, ignore)
    state = hsmctl("status", "--data-dir", data)
    assert state.returncode == 0, state.stderr
    files = written_shares(shares)
    assert len(files) == n_files, files
    # The trail never names an Init that did not finish: the record follows the commit.
    assert [r for r in audit_records(data) if r.get("op") == "Init"] == []
    if committed:
        assert "state: sealed" in state.stdout, state.stdout
        assert len([f for f in os.listdir(shares) if f.startswith("ceremony-")]) == 1
        p = hsmctl("unseal", "--data-dir", data, *(os.path.join(shares, f) for f in files[:3]))
        assert p.returncode == 0 and "reconstruct the master key" in p.stdout, p.stdout + p.stderr
        again = hsmctl("init", "--data-dir", data, "--share-dir", str(tmp_path / "again"))
        assert again.returncode == 1 and "already initialized" in again.stderr, again.stderr
        return
    assert "state: uninitialized" in state.stdout, state.stdout
    # The files of a stopped ceremony stay in the way (init overwrites nothing); with another
    # share directory, the same data directory takes a new ceremony.
    if files:
        p = hsmctl("init", "--data-dir", data, "--share-dir", shares, "--shares", "5",
                   "--threshold", "3", "--custodians", ",".join(CUSTODIANS))
        assert p.returncode == 1 and "already exists" in p.stderr, p.stderr
    fresh = str(tmp_path / "shares2") if files else shares
    p = hsmctl("init", "--data-dir", data, "--share-dir", fresh, "--shares", "2",
               "--threshold", "2", "--custodians", "alice,bob")
    assert p.returncode == 0 and "quorum: 2 of 2" in p.stdout, p.stdout + p.stderr
    p = hsmctl("unseal", "--data-dir", data, os.path.join(fresh, "alice.share"),
               os.path.join(fresh, "bob.share"))
    assert p.returncode == 0 and "reconstruct the master key" in p.stdout, p.stdout + p.stderr


@pytest.mark.skipif(not GDB, reason="failing a write midway needs gdb, allowed to trace")
def test_init_that_cannot_write_a_file_deletes_those_it_wrote(tmp_path):
    """A file init cannot write (here the transcript: something took its name after the
    checks) stops the ceremony before the store commits: the share files already written are
    deleted, the store stays uninitialized, and the trail records a failed Init."""
    data, shares = str(tmp_path / "data"), str(tmp_path / "shares")
    args = ["init", "--data-dir", data, "--share-dir", shares, "--shares", "2",
            "--threshold", "2", "--custodians", "alice,bob"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    p = subprocess.run(["gdb", "-q", "-nx", "-batch", "-ex", "break hsmctl_write_new_file",
                        "-ex", "ignore 1 2", "-ex", "run", "-ex", "call (int)mkdir(path, 0700)",
                        "-ex", "continue", "--args", HSMCTL] + args,
                       capture_output=True, text=True, timeout=120, env=env)
    out = p.stdout + p.stderr
    assert "cannot create" in out and "File exists" in out, out
    assert "the store was not initialized: run init again" in out, out
    assert written_shares(shares) == []
    state = hsmctl("status", "--data-dir", data)
    assert "state: uninitialized" in state.stdout, state.stdout + state.stderr
    inits = [r for r in audit_records(data) if r.get("op") == "Init"]
    assert [r["outcome"] for r in inits] == ["error"], inits
    shutil.rmtree(shares)
    p = hsmctl(*args)
    assert p.returncode == 0 and "quorum: 2 of 2" in p.stdout, p.stdout + p.stderr


def test_hsmctl_share_files_help_and_missing_shares(tmp_path):
    """Share files with CRLF line endings (a Windows editor, a mail client) are the same
    shares, offline and online; an offline command that needs the master key without
    --share says which option is missing and how many; --help and -h print the usage."""
    for flag in ("--help", "-h"):
        p = hsmctl(flag)
        assert p.returncode == 0 and p.stdout.startswith("usage: hsmctl"), p
        assert "unknown command" not in p.stderr
        # Each command's own usage, and a family named without its command.
        p = hsmctl("backup", "create", flag)
        assert p.returncode == 0 and p.stdout.startswith(
            "usage: hsmctl [global options] backup create "), p
    p = hsmctl("audit")
    assert p.returncode == 2 and "'audit' needs one of its commands" in p.stderr, p.stderr
    assert "hsmctl audit verify " in p.stderr and "unknown command" not in p.stderr
    # Asked for help, a family lists its commands (success), and a command that has
    # others under its name (key: key import, key usage) lists them too.
    for family in ("audit", "jwt", "backup", "store"):
        p = hsmctl(family, "--help")
        assert p.returncode == 0 and f"hsmctl {family} " in p.stdout, (family, p)
    p = hsmctl("key", "--help")
    assert p.returncode == 0 and "hsmctl key import KEY" in p.stdout, p
    assert "hsmctl key usage " in p.stdout
    assert "--ca-file  " in hsmctl("help").stdout
    data, shares = init_store(str(tmp_path))
    crlf = {}
    for c in ("alice", "carol", "erin"):
        crlf[c] = str(tmp_path / f"{c}-crlf.share")
        with open(shares[c], "rb") as f, open(crlf[c], "wb") as out:
            out.write(f.read().replace(b"\n", b"\r\n"))
    p = hsmctl("unseal", "--data-dir", data, *crlf.values())
    assert p.returncode == 0 and "reconstruct the master key" in p.stdout, p.stdout + p.stderr
    # Rebuilding the master key offline is on the trail, as an unseal; so is a failed attempt.
    p = hsmctl("unseal", "--data-dir", data, crlf["alice"], crlf["alice"], crlf["carol"])
    assert p.returncode == 1, p.stdout
    unseals = [r for r in audit_records(data) if r.get("op") == "Unseal"]
    assert [(r["source"], r["outcome"]) for r in unseals] == [("hsmctl", "success"),
                                                              ("hsmctl", "error")], unseals
    assert all(r["principal"].startswith("local:uid=") for r in unseals)
    # The ceremony is on the trail: store, split, quorum, custodians, each file's hash.
    init = [r for r in audit_records(data) if r.get("op") == "Init"]
    assert len(init) == 1 and init[0]["outcome"] == "success", init
    with open(shares["alice"]) as f:
        alice = f.read()
    import hashlib
    assert init[0]["extra"]["share_set"] == re.search(r"^set (\w+)$", alice, re.M).group(1)
    assert init[0]["extra"]["store"] == re.search(r"^store (\S+)$", alice, re.M).group(1)
    assert (init[0]["extra"]["threshold"], init[0]["extra"]["shares"]) == ("3", "5")
    assert init[0]["extra"]["custodians"] == ",".join(CUSTODIANS)
    first = hashlib.sha256(alice.encode()).hexdigest()[:16]
    assert init[0]["extra"]["share_sha256"].startswith(f"1:{first},2:"), init
    # Each unseal names the shares it read (custodian and file hash, never a value).
    given = unseals[0]["extra"]["shares"].split("; ")
    assert [g.split(", ")[1] for g in given] == \
        ["custodian alice", "custodian carol", "custodian erin"], given
    assert all(re.search(r", sha256:[0-9a-f]{64}$", g) for g in given), given
    p = hsmctl("key", "create", "--data-dir", data, *IDENTITY, "--description", "no-shares")
    assert p.returncode == 1, p.stdout
    assert "--share FILE for each of 3 shares" in p.stderr and "hsmd is sealed" not in p.stderr, \
        p.stderr
    p = hsmctl("key", "create", "--data-dir", data, *IDENTITY, *[a for c in crlf.values()
                                                                   for a in ("--share", c)])
    assert p.returncode == 0 and "state: Enabled" in p.stdout, p.stdout + p.stderr
    server = Hsmd([], data_dir=data)
    try:
        for i, c in enumerate(crlf.values(), 1):
            p = unseal(server, c)
            assert p.returncode == 0 and f"{i} of 3 shares" in p.stdout, p.stdout + p.stderr
        assert not status(server)["Sealed"]
    finally:
        server.cleanup()


def test_production_node_starts_sealed(prod):
    server, _, _, _ = prod
    assert_sealed(server)
    s = status(server)
    assert (s["Progress"], s["Threshold"]) == (0, 3)
    assert re.fullmatch(r"[0-9a-f-]{36}", s["StoreId"])
    # hsmctl status over the API says the same.
    p = hsmctl("status", endpoint=server.endpoint)
    assert p.returncode == 0 and "Sealed: true" in p.stdout, p.stdout + p.stderr


def test_unseal_share_by_share(prod):
    server, data, shares, base = prod
    p = unseal(server, shares["alice"])
    assert p.returncode == 0, p.stderr
    assert "1 of 3 shares" in p.stdout and "unsealed" not in p.stdout
    p = unseal(server, shares["carol"])
    assert p.returncode == 0 and "2 of 3 shares" in p.stdout, p.stdout + p.stderr
    assert_sealed(server)
    assert status(server)["Progress"] == 2

    # A share given twice, a corrupted share and a share of another store are refused
    # and change nothing.
    p = unseal(server, shares["alice"])
    assert p.returncode == 1 and "InvalidShareException" in p.stderr, p.stdout + p.stderr
    assert "already provided" in p.stderr
    corrupted = os.path.join(base, "corrupted.share")
    with open(shares["dave"]) as f:
        text = f.read()
    value = re.search(r"^value ([0-9a-f]+)$", text, re.M)
    i = value.start(1) + 5
    with open(corrupted, "w") as f:
        f.write(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1:])
    other_store = init_store(base, "other")[1]["dave"]
    for bad, why in ((corrupted, "checksum"), (other_store, "store")):
        p = unseal(server, bad)
        assert p.returncode == 1 and "InvalidShareException" in p.stderr, p.stdout + p.stderr
        st, out = unsigned_call(server, "HsmdAdmin.Unseal", {"Share": open(bad).read()})
        assert (st, out["__type"]) == (400, "InvalidShareException"), out
        assert why in out["message"].lower(), out
        # The refusal names the problem, never the share's value.
        with open(bad) as f:
            bad_value = re.search(r"^value ([0-9a-f]+)$", f.read(), re.M).group(1)
        assert bad_value[:16] not in out["message"] and bad_value[:16] not in p.stderr
    st, out = unsigned_call(server, "HsmdAdmin.Unseal", {"Share": "not a share"})
    assert (st, out["__type"]) == (400, "InvalidShareException")
    assert status(server)["Progress"] == 2
    assert_sealed(server)

    # The third distinct share unseals.
    p = unseal(server, shares["erin"])
    assert p.returncode == 0 and "3 of 3 shares; unsealed" in p.stdout, p.stdout + p.stderr
    st, body, _ = server.get("/readyz")
    assert st == 200 and b'"ready":true' in body
    s = status(server)
    assert (s["Sealed"], s["State"], s["KeyCount"]) == (False, "unsealed", 0)
    # Unseal attempts are audited, failures included; no share value is in the log.
    recs = [r for r in audit_records(data) if r.get("op") == "Unseal"]
    assert [r["outcome"] for r in recs].count("success") == 3
    assert any(r["outcome"] != "success" and r.get("error") == "InvalidShareException"
               for r in recs)
    with open(shares["erin"]) as f:
        erin_value = re.search(r"^value ([0-9a-f]+)$", f.read(), re.M).group(1)
    # Unseal takes no credentials: each record names the share given, as the ceremony's
    # transcript does (index, custodian, the file's SHA-256), refused ones included.
    import hashlib
    with open(shares["erin"], "rb") as f:
        erin_sha = hashlib.sha256(f.read()).hexdigest()
    named = [r["extra"]["share"] for r in recs if r["outcome"] == "success"]
    assert named[-1].endswith(f", custodian erin, sha256:{erin_sha}"), named
    assert named[-1].startswith("share ") and " of 5" in named[-1], named
    assert any(r["outcome"] != "success" and "custodian alice" in r["extra"].get("share", "")
               for r in recs), recs  # alice's share given twice
    for path in os.listdir(os.path.join(data, "audit")):
        with open(os.path.join(data, "audit", path), errors="replace") as f:
            assert erin_value not in f.read()


def test_a_refused_first_share_begins_no_unseal(tmp_path):
    """A share of another store, given first, is refused and leaves no unseal pending:
    giving it again must not report an unfinished unseal abandoned, and the node's
    progress stays 0 for the right shares that follow."""
    data, shares = init_store(str(tmp_path))
    other = init_store(str(tmp_path), "other")[1]["dave"]
    server = Hsmd([], data_dir=data)
    try:
        for _ in range(2):
            st, out = unsigned_call(server, "HsmdAdmin.Unseal", {"Share": open(other).read()})
            assert (st, out["__type"]) == (400, "InvalidShareException"), out
            assert status(server)["Progress"] == 0
        assert "abandoned" not in server.read_log(), server.read_log()
        for i, c in enumerate(("alice", "carol", "erin"), 1):
            p = unseal(server, shares[c])
            assert p.returncode == 0 and f"{i} of 3 shares" in p.stdout, p.stdout + p.stderr
        assert not status(server)["Sealed"]
        assert "abandoned" not in server.read_log(), server.read_log()
    finally:
        server.cleanup()



def test_an_unseal_left_unfinished_is_wiped_when_its_time_is_up(tmp_path):
    """An unseal left without a new share for unseal_timeout_seconds is abandoned, its
    shares wiped, when its time is up: not kept in the node until someone next asks it,
    and an UnsealAbandoned event on the trail says how many shares went.  The custodians
    then start again, the shares given before counting afresh."""
    data, shares = init_store(str(tmp_path))
    server = Hsmd(["--unseal-timeout-seconds", "2", "--scheduler-interval-seconds", "1"],
                  data_dir=data)
    try:
        for i, c in enumerate(("alice", "bob"), 1):
            p = unseal(server, shares[c])
            assert p.returncode == 0 and f"{i} of 3 shares" in p.stdout, p.stdout + p.stderr
        # Nothing is sent to the node now: the wipe must be its own doing.
        line = "an unseal left unfinished for 2 s was abandoned: its 2 share(s) are forgotten"
        assert eventually(lambda: line in server.read_log(), timeout=15), server.read_log()
        # On the trail too: custodians who find the progress back at 0 can see why.
        def abandoned():
            return [r for r in audit_records(data) if r.get("op") == "UnsealAbandoned"]
        assert eventually(abandoned), audit_records(data)[-5:]
        assert [r["extra"] for r in abandoned()] == [{"shares_forgotten": "2"}]
        assert status(server)["Progress"] == 0
        for i, c in enumerate(("alice", "bob", "erin"), 1):
            p = unseal(server, shares[c])
            assert p.returncode == 0 and f"{i} of 3 shares" in p.stdout, p.stdout + p.stderr
        assert not status(server)["Sealed"]
    finally:
        server.cleanup()


def test_a_share_refused_unparsed_is_named_on_the_trail(tmp_path):
    """A share file that does not decode (a mistyped hex digit, a truncated file, no share
    at all) is refused, and its Unseal record names what of it reads: the header's index,
    count and custodian where they parse, and always the file's SHA-256; never the value.
    Over the API and offline alike."""
    import hashlib
    data, shares = init_store(str(tmp_path))
    with open(shares["dave"]) as f:
        text = f.read()
    value = re.search(r"^value ([0-9a-f]+)$", text, re.M)
    i = value.start(1)
    bodies = {
        "typo": text[:i] + ("f" if text[i] != "f" else "e") + text[i + 1:],
        "truncated": text[:value.start(1) + 10],
        "header-cut": text[:text.index("threshold ") + 4],
        "garbage": "not a share\n",
    }
    sha = {k: hashlib.sha256(b.encode()).hexdigest() for k, b in bodies.items()}
    want = {"typo": f"share 4 of 5, custodian dave, sha256:{sha['typo']}",
            "truncated": f"share 4 of 5, custodian dave, sha256:{sha['truncated']}",
            "header-cut": f"share 4, sha256:{sha['header-cut']}",
            "garbage": f"sha256:{sha['garbage']}"}
    server = Hsmd([], data_dir=data)
    try:
        for n, (k, body) in enumerate(bodies.items(), 1):
            st, out = unsigned_call(server, "HsmdAdmin.Unseal", {"Share": body})
            assert (st, out["__type"]) == (400, "InvalidShareException"), (k, out)
            recs = [r for r in audit_records(data) if r.get("op") == "Unseal"]
            assert len(recs) == n, recs
            rec = recs[-1]
            assert rec["outcome"] != "success" and rec["error"] == "InvalidShareException"
            assert rec.get("extra", {}).get("share") == want[k], (k, rec)
        assert status(server)["Progress"] == 0
    finally:
        server.cleanup()
    paths = {}
    for k, body in bodies.items():
        paths[k] = str(tmp_path / f"{k}.share")
        with open(paths[k], "w") as f:
            f.write(body)
    for k in bodies:
        p = hsmctl("unseal", "--data-dir", data, shares["alice"], paths[k], shares["bob"])
        assert p.returncode == 1 and f"{k}.share" in p.stderr, p.stdout + p.stderr
        rec = [r for r in audit_records(data) if r.get("op") == "Unseal"][-1]
        assert rec["source"] == "hsmctl" and rec["outcome"] == "error", rec
        given = rec["extra"]["shares"].split("; ")
        assert len(given) == 2 and given[0].startswith("share 1 of 5, custodian alice, "), given
        assert given[1] == want[k], (k, given)
    trail = "".join(open(os.path.join(data, "audit", f), errors="replace").read()
                    for f in os.listdir(os.path.join(data, "audit")))
    assert value.group(1)[1:] not in trail and value.group(1)[:16] not in trail


def test_unsealed_production_node_has_no_users(prod):
    server, _, _, _ = prod
    if status(server)["Sealed"]:
        pytest.fail("the previous test did not unseal the node")
    # Serving now, but no access key exists yet.
    raises("UnrecognizedClientException", client(server).list_keys, status=400)


def test_seal_with_an_officer(prod):
    server, data, shares, _ = prod
    akid, secret = create_first_officer(server, data, shares)
    kms = client(server, akid, secret)
    kms.list_keys()
    out = admin(server, "Seal", akid=akid, secret=secret)
    assert out["Sealed"] is True
    assert_sealed(server)
    for c in ("alice", "bob", "carol"):
        assert unseal(server, shares[c]).returncode == 0
    kms.list_keys()
    # hsmctl reads the credentials file init wrote, as aws-cli does (AWS_PROFILE names its
    # section), when the environment holds no access key.
    creds = os.path.join(os.path.dirname(shares["alice"]), "ops.credentials")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run = lambda **extra: subprocess.run(  # noqa: E731
        [HSMCTL, "--endpoint", server.endpoint, "user", "list"], capture_output=True,
        text=True, timeout=60, env=dict(env, AWS_SHARED_CREDENTIALS_FILE=creds, **extra))
    p = run(AWS_PROFILE="ops")
    assert p.returncode == 0 and "ops" in p.stdout, p.stdout + p.stderr
    p = run(AWS_PROFILE="nobody")
    assert p.returncode == 2 and "no aws_access_key_id" in p.stderr and "'nobody'" in p.stderr
    p = run(AWS_PROFILE="ops", AWS_ACCESS_KEY_ID="AKIANOTAKEY000000000", AWS_SECRET_ACCESS_KEY="x")
    assert p.returncode != 0 and "UnrecognizedClient" in p.stderr, p.stderr  # env first


def non_loopback_address():
    """This machine's address on its way out (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        addr = s.getsockname()[0]
    return None if addr.startswith("127.") else addr


def test_secrets_go_over_plain_http_only_to_loopback(prod):
    """hsmd serves plain HTTP only on loopback; hsmctl sends a share, asks for a new secret
    access key or wraps key material (under a key the node sends) over plain HTTP only to a
    loopback address.  To another (a node behind a proxy, whoever answers on the path) it
    refuses with exit 2 before sending anything: the listener there receives nothing."""
    server, data, shares, base = prod
    host = non_loopback_address()
    if host is None:
        pytest.skip("no non-loopback address to listen on")
    received = []
    with socket.socket() as lst:
        lst.bind((host, 0))
        lst.listen()
        lst.settimeout(0.5)

        def listen():
            try:
                conn, _ = lst.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    while chunk := conn.recv(65536):
                        received.append(chunk)
                except OSError:
                    pass
        far = f"http://{host}:{lst.getsockname()[1]}"
        refusal = f"{far} is plain HTTP to an address that is not loopback, and "
        t = threading.Thread(target=listen)
        t.start()
        try:
            # Also behind a loopback endpoint: a failover would carry the share there.
            for endpoint in (far, f"{server.endpoint},{far}"):
                p = hsmctl("unseal", shares["bob"], endpoint=endpoint)
                assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
                assert refusal + "a custodian share would cross the network in clear: use " \
                    "https://, or http:// only to a loopback address" in p.stderr, p.stderr
            p = hsmctl("access-key", "create", "ops", endpoint=far)
            assert p.returncode == 2 and refusal + "the new secret access key" in p.stderr, \
                p.stderr
            material = os.path.join(base, "material.bin")
            with open(material, "wb") as f:
                f.write(os.urandom(32))
            p = hsmctl("key", "import", "alias/none", "--material", material, endpoint=far)
            assert p.returncode == 2 and refusal + "the key material" in p.stderr, p.stderr
        finally:
            t.join()
    assert received == []
    # Loopback by name or address passes: the node (unsealed by now) answers.
    for name in ("localhost", "127.0.0.1"):
        p = hsmctl("unseal", shares["bob"], endpoint=f"http://{name}:{server.port}")
        assert p.returncode == 1 and "the node is already unsealed" in p.stderr, p.stderr


def gauge(server, name):
    st, body, _ = server.get("/metrics")
    assert st == 200
    return float(re.search(rf"^{name} (\S+)$", body.decode(), re.M).group(1))


def gauge_becomes(server, name, want, within):
    """Whether the gauge reads want within `within` seconds."""
    deadline = time.monotonic() + within
    while gauge(server, name) != want:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_seal_and_unseal_in_dev_mode():
    """Seal needs a crypto-officer; the dev user is one."""
    # No scheduled backup: one in progress would hold up the recount a seal asks for.
    server = start_dev(["--backup-interval-seconds", "0"])
    try:
        kms = client(server)
        kid = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=kid, Plaintext=b"survives a seal")["CiphertextBlob"]
        # Counted at start-up (before the first request could be served) and
        # every 5 s; a seal or an unseal has the count made at once.
        assert gauge(server, "hsmd_keys_counted_time_seconds") > 0
        assert gauge_becomes(server, "hsmd_keys", 1, 30)  # the scheduler's next pass
        assert status(server)["KeyCount"] == 1  # the same count, without credentials
        assert admin(server, "Seal")["Sealed"] is True
        assert_sealed(server)
        assert gauge_becomes(server, "hsmd_keys", 0, 4), "a sealed node reports no keys"
        raises("ServiceUnavailableException", kms.decrypt, CiphertextBlob=blob, status=503)
        # Every signed call, Seal included, is refused while sealed: access key
        # secrets are sealed too, so no signature can be checked.
        st, out = signed_call(server, "HsmdAdmin.Seal", {})
        assert (st, out["__type"]) == (503, "ServiceUnavailableException"), out
        with open(os.path.join(server.data_dir, "dev-unseal.share")) as f:
            share = f.read()
        st, out = unsigned_call(server, "HsmdAdmin.Unseal", {"Share": share})
        assert st == 200 and out["Sealed"] is False, out
        st, body, _ = server.get("/readyz")
        assert st == 200
        assert gauge_becomes(server, "hsmd_keys", 1, 4), "counted again on unseal"
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives a seal"
        ops = [r.get("op") for r in audit_records(server.data_dir)]
        assert "Seal" in ops and "Unseal" in ops
    finally:
        server.cleanup()


def test_requests_without_credentials_stay_small_and_out_of_the_lane():
    """Status and Unseal take no credentials: their bodies are bounded (a share file, or
    "{}"), refused before they are parsed; Status is answered at once however busy the
    lane of store writes and signatures is."""
    from conftest import unsigned_call
    server = start_dev(["--backup-interval-seconds", "0"])
    try:
        st, out = unsigned_call(server, "HsmdAdmin.Status", {})
        assert st == 200 and out["State"] == "unsealed", out
        big = {"a": [0] * 3000}  # 6 KB of JSON
        for op in ("Status", "Unseal"):
            st, out = unsigned_call(server, "HsmdAdmin." + op, big)
            assert (st, out["__type"]) == (400, "ValidationException"), out
            assert "at most 4096 bytes" in out["message"], out
        st, out = unsigned_call(server, "HsmdAdmin.Unseal", {"Share": "x" * 3000})
        assert st == 400 and "4096" not in out["message"], out  # parsed: not a share
        # Status while the lane is busy making RSA-4096 keys: answered without waiting.
        # Eight key generations share the lane's threads (two on two cores) for seconds;
        # Status queued behind them would come back only once the lane had emptied, so
        # the lane still holding work when Status is back shows it did not wait (however
        # fast or slow the machine makes keys).
        import concurrent.futures
        kms = client(server, read_timeout=600)  # the last keys wait for all the others
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            busy = [pool.submit(kms.create_key, KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY")
                    for _ in range(8)]
            # The lane holds work (the generations reached it), whatever the machine's load.
            assert eventually(lambda: gauge(server, "hsmd_lane_requests") >= 2, 60)
            st, out = unsigned_call(server, "HsmdAdmin.Status", {})
            lane_after = gauge(server, "hsmd_lane_requests")
            for f in busy:
                f.result()
        assert st == 200, out
        assert lane_after >= 1, "Status waited for the lane to empty"
    finally:
        server.cleanup()


def test_clients_move_past_a_sealed_node():
    """A sealed node refuses every signed request before doing anything with it: hsmctl
    (and the PKCS#11 module, which shares its client) given a list of nodes takes the
    request to the next one; given only the sealed node, it reports the refusal."""
    from conftest import DEV_AKID, DEV_SECRET
    sealed = start_dev(["--backup-interval-seconds", "0"])
    serving = start_dev(["--backup-interval-seconds", "0"])
    try:
        assert admin(sealed, "Seal")["Sealed"] is True
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
        env.update(AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET)

        def users(endpoints):
            return subprocess.run([HSMCTL, "--endpoint", endpoints, "user", "list"],
                                  capture_output=True, text=True, timeout=60, env=env)
        p = users(f"{sealed.endpoint},{serving.endpoint}")
        assert p.returncode == 0, p.stderr
        assert any(r.get("op") == "ListUsers" for r in audit_records(serving.data_dir))
        p = users(sealed.endpoint)
        assert p.returncode != 0 and "ServiceUnavailableException" in p.stderr, p.stderr
    finally:
        sealed.cleanup()
        serving.cleanup()


def test_pkcs11_token_of_a_sealed_node(tmp_path):
    """The PKCS#11 module's token stays present while its node is sealed (C_GetSlotList with
    tokenPresent, CKF_TOKEN_PRESENT, C_GetTokenInfo and C_OpenSession say so), so the calls
    the node refuses answer CKR_DEVICE_ERROR, not CKR_TOKEN_NOT_PRESENT, which the slot
    would contradict: a login, and once logged in, a search; the session and its login stay,
    and serve again once the node is unsealed."""
    import PyKCS11
    from conftest import BUILD
    data, shares = init_store(str(tmp_path))
    server = Hsmd([], data_dir=data)
    old = os.environ.get("HSM_PKCS11_ENDPOINT")
    os.environ["HSM_PKCS11_ENDPOINT"] = server.endpoint
    lib = PyKCS11.PyKCS11Lib()
    lib.load(os.path.join(BUILD, "libhsm_pkcs11.so"))
    try:
        akid, secret = create_first_officer(server, data, shares)
        pin = f"{akid}:{secret}"

        def present():
            assert lib.getSlotList(tokenPresent=True) == [0]
            assert lib.getSlotInfo(0).flags & PyKCS11.CKF_TOKEN_PRESENT
            assert lib.getTokenInfo(0).label.strip() == "hsmd"

        def refused(fn, *args):
            with pytest.raises(PyKCS11.PyKCS11Error) as e:
                fn(*args)
            assert e.value.value == PyKCS11.CKR_DEVICE_ERROR, PyKCS11.CKR.get(e.value.value)

        present()
        s = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
        refused(s.login, pin)
        assert s.getSessionInfo().state == PyKCS11.CKS_RW_PUBLIC_SESSION
        for c in ("alice", "carol", "erin"):
            assert unseal(server, shares[c]).returncode == 0
        s.login(pin)
        assert s.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)]) == []
        assert admin(server, "Seal", akid=akid, secret=secret)["Sealed"] is True
        present()
        refused(s.findObjects, [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)])
        assert s.getSessionInfo().state == PyKCS11.CKS_RW_USER_FUNCTIONS
        for c in ("bob", "dave", "erin"):
            assert unseal(server, shares[c]).returncode == 0
        assert s.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)]) == []
        s.logout()
        s.closeSession()
    finally:
        lib.lib.Unload()  # C_Finalize
        if old is None:
            os.environ.pop("HSM_PKCS11_ENDPOINT", None)
        else:
            os.environ["HSM_PKCS11_ENDPOINT"] = old
        server.cleanup()
