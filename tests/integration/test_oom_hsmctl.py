"""hsmctl short of memory: a refused allocation fails the command and says so, never
gives a verdict on its input, and leaves nothing half done that it does not name.

Custodians run hsmctl at the key ceremony, for backups and restores, and to check
their shares.  A false verdict there ("the backup was altered", "this share does not
match") sends people after an intruder or a lost share that do not exist, and a
half-made store, share file or backup that nothing names is worse than none.

hsmctl runs here with oomfault.c preloaded: each command's allocations are counted,
then it runs again with one of them refused, for a spread of them and every one of
the last few.  After each run:
- hsmctl did not die of a signal, and exited 0 or 1;
- its output holds none of the verdicts hsmctl gives on bad input (each checked
  first: they are what hsmctl says of an altered backup and an altered share);
- a failure says that memory ran out, or that the power-on self-test failed
  (OpenSSL can swallow an allocation failure while it fetches an algorithm and
  hand back an implementation that fails its known answer: what the self-test is
  there to catch);
- what it leaves is whole, as each test below says.
"""
import glob
import os
import re
import shutil
import subprocess

import pytest

from conftest import HSMCTL
from helpers import IDENTITY, Faults, audit_records, points

SPREAD = 30  # refusals spread over a command's allocations,
TAIL = 20  # and each of its last TAIL (the command's own work comes after OpenSSL's set-up)
VERDICTS = re.compile(r"altered|integrity|does not match|differs|another store|share is for "
                      r"store|INVALID|mistyped")
OUT_OF_MEMORY = re.compile(r"out of memory|power-on self-test '[a-z0-9-]+' failed")


def ctl(*args, check=True):
    p = subprocess.run([HSMCTL, *args], capture_output=True, text=True, timeout=120)
    assert not check or p.returncode == 0, p.stdout + p.stderr
    return p


def trail_verifies(data_dir):
    files = sorted(glob.glob(os.path.join(data_dir, "audit", "audit-*.jsonl")))
    p = ctl("audit", "verify", *files, check=False)
    assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A 2-of-3 store with a key and a backup, its shares, and share and backup files
    altered by one byte (what the verdicts are about)."""
    base = tmp_path_factory.mktemp("oom-hsmctl")
    d, s = str(base / "data"), str(base / "shares")
    ctl("init", "--data-dir", d, "--share-dir", s, "--shares", "3", "--threshold", "2")
    shares = sorted(glob.glob(os.path.join(s, "*.share")))[:2]
    quorum = [a for sh in shares for a in ("--share", sh)]
    ctl("key", "create", "--data-dir", d, *quorum, *IDENTITY)
    (base / "backups").mkdir()
    ctl("backup", "create", "--data-dir", d, *quorum, "--dir", str(base / "backups"))
    backup = glob.glob(str(base / "backups" / "*.hsmbak"))[0]
    altered_backup = str(base / "altered.hsmbak")
    shutil.copy(backup, altered_backup)
    with open(altered_backup, "r+b") as f:
        f.seek(os.path.getsize(altered_backup) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    altered_share = str(base / "altered.share")
    with open(shares[0]) as f:
        lines = f.read().splitlines()
    lines = [ln[:6] + ("1" if ln[6] == "0" else "0") + ln[7:] if ln.startswith("value ") else ln
             for ln in lines]
    with open(altered_share, "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"base": base, "data": d, "shares": shares, "quorum": quorum, "backup": backup,
            "altered_backup": altered_backup, "altered_share": altered_share}


@pytest.fixture()
def refuse(shim, tmp_path):
    """refuse(argv_for, after, rounds, tail): runs hsmctl with argv_for(at) (at 0: the
    count) once unrefused to count its allocations, then once with each chosen allocation
    refused, the last `tail` `rounds` times (a run's count moves by a few allocations
    from one run to the next, so a single allocation near the end is not always met at
    the same number); checks what the module docstring says, and calls after(at, p) for
    the rest.  Returns how many runs failed and how many succeeded."""
    faults = Faults(str(tmp_path / "ctl"), "hsmctl")
    env = dict(os.environ, LD_PRELOAD=shim, HSM_TEST_OOM_CTL=str(tmp_path / "ctl"))

    def run(argv_for, after, rounds=1, tail=TAIL):
        faults.command(1)
        p = subprocess.run([HSMCTL, *argv_for(0)], capture_output=True, text=True, env=env,
                           timeout=120)
        n = faults.seen
        assert p.returncode == 0 and n > 0, p.stdout + p.stderr
        after(0, p)
        tally = {"failed": 0, "succeeded": 0, "loader": 0}
        for at in points(n, SPREAD, tail) + list(range(n - tail + 1, n + 1)) * (rounds - 1):
            faults.command(2, at)
            p = subprocess.run([HSMCTL, *argv_for(at)], capture_output=True, text=True, env=env,
                               timeout=120)
            fired = faults.fired
            faults.off()
            out, where = p.stdout + p.stderr, f"allocation {at} of {n} refused"
            assert p.returncode >= 0, f"{where}: hsmctl died of signal {-p.returncode}\n{out}"
            if p.returncode == 127 and "ld.so" in p.stderr:
                tally["loader"] += 1  # the dynamic loader's own allocation, before hsmctl runs
                continue
            assert not VERDICTS.search(out), f"{where}: a verdict on good input\n{out}"
            if p.returncode == 0:
                tally["succeeded"] += 1
            else:
                assert p.returncode == 1 and fired and OUT_OF_MEMORY.search(p.stderr), \
                    f"{where}: {out}"
                tally["failed"] += 1
            after(at, p)
        print(f"{argv_for(0)[:2]}: {n} allocations, {tally}")  # shown on failure
        assert tally["failed"] > 0, tally
        return tally

    yield run
    faults.close()


def test_the_verdicts_are_what_hsmctl_says_of_bad_input(store):
    """The words this file looks for are hsmctl's own on an altered backup or share:
    a test that looks for words hsmctl never prints could not fail."""
    p = ctl("backup", "verify", *store["quorum"], store["altered_backup"], check=False)
    assert p.returncode == 1 and VERDICTS.search(p.stderr), p.stderr
    p = ctl("unseal", "--data-dir", store["data"], store["altered_share"], store["shares"][1],
            check=False)
    assert p.returncode == 1 and VERDICTS.search(p.stderr), p.stderr
    other = str(store["base"] / "restore-altered")
    p = ctl("restore", "--data-dir", other, *store["quorum"], store["altered_backup"], check=False)
    assert p.returncode == 1 and VERDICTS.search(p.stderr), p.stderr
    assert not os.path.exists(os.path.join(other, "hsmd.db"))


def test_checks_short_of_memory(store, refuse):
    """`backup verify` and the offline share check of `unseal` give no verdict on a
    good backup or good shares when memory runs out."""
    def verified(at, p):
        assert p.returncode != 0 or "verified: every chunk authenticated" in p.stdout, p.stdout

    refuse(lambda at: ["backup", "verify", *store["quorum"], store["backup"]], verified, rounds=4)

    def reconstructed(at, p):
        assert p.returncode != 0 or "reconstruct the master key" in p.stdout, p.stdout

    refuse(lambda at: ["unseal", "--data-dir", store["data"], *store["shares"]], reconstructed)


def test_init_short_of_memory(store, refuse):
    """A key ceremony that runs out of memory either says the store was initialized
    (its shares then unseal it) or leaves no share file, and a new ceremony in the same
    directories succeeds: no share that opens nothing reaches a custodian, and nothing
    half made stands in the way."""
    base = store["base"] / "init"

    def argv(at):
        d, s = base / f"data-{at}", base / f"shares-{at}"
        return ["init", "--data-dir", str(d), "--share-dir", str(s), "--shares", "3",
                "--threshold", "2"]

    def after(at, p):
        d, s = str(base / f"data-{at}"), str(base / f"shares-{at}")
        shares = sorted(glob.glob(os.path.join(s, "*.share")))
        if p.returncode == 0 or "the store was initialized" in p.stderr:
            assert len(shares) == 3, (shares, p.stderr)
            ctl("unseal", "--data-dir", d, *shares[:2])
        else:
            assert shares == [], (shares, p.stderr)
            ctl(*argv(at))
        shutil.rmtree(d)
        shutil.rmtree(s)

    refuse(argv, after)


def test_backup_short_of_memory(store, refuse):
    """An offline backup that runs out of memory leaves no file, or says which file it
    wrote and that its record is still to come; the next offline command records it,
    so that every backup file written is named on the store's trail, which verifies."""
    base, written = store["base"] / "backup", []

    def argv(at):
        (base / str(at)).mkdir(parents=True, exist_ok=True)  # the medium, there
        return ["backup", "create", "--data-dir", store["data"], *store["quorum"], "--dir",
                str(base / str(at))]

    def after(at, p):
        files = [os.path.basename(f) for f in glob.glob(str(base / str(at) / "*.hsmbak"))]
        if p.returncode == 0 or "is written, but its Backup record could not be" in p.stderr:
            assert len(files) == 1, (files, p.stderr)
            written.append((files[0], p.returncode == 0))
        else:
            assert files == [], (files, p.stderr)

    refuse(argv, after, tail=60)  # the record comes in the last 30 or so
    ctl("key", "create", "--data-dir", store["data"], *store["quorum"])  # settles what is left
    recs = audit_records(store["data"])
    named = {r.get("extra", {}).get("file") for r in recs
             if r.get("op") == "Backup" and r.get("outcome") == "success"}
    recovered = [r for r in recs if r.get("op") == "RequestRecordRecovered"
                 and r.get("extra", {}).get("request_op") == "hsmctl backup create"]
    unnamed = [f for f, ok in written if f not in named]
    print(f"backups written: {len(written)}, unnamed: {len(unnamed)}, recovered: {len(recovered)}")
    assert all(f in named for f, ok in written if ok), (written, named)
    assert len(unnamed) <= len(recovered), (unnamed, recovered)
    trail_verifies(store["data"])


def test_restore_short_of_memory(store, refuse):
    """A restore that runs out of memory leaves no store in the target directory (and
    a new restore into it succeeds), or says the store is restored and its record still
    to come: the next offline command records it, and the trail verifies."""
    base = store["base"] / "restore"

    def argv(at):
        return ["restore", "--data-dir", str(base / str(at)), *store["quorum"], store["backup"]]

    def after(at, p):
        target = str(base / str(at))
        if p.returncode == 0:
            assert os.path.exists(os.path.join(target, "hsmd.db"))
        elif "the backup is restored into" in p.stderr:
            ctl("key", "create", "--data-dir", target, *store["quorum"], *IDENTITY)
            ops = [(r.get("op"), r.get("extra", {}).get("request_op")) for r in audit_records(target)]
            assert ("Restore", None) in ops or ("RequestRecordRecovered", "hsmctl restore") in ops, \
                ops
            trail_verifies(target)
        else:
            assert not os.path.exists(os.path.join(target, "hsmd.db")), p.stderr
            ctl(*argv(at))
        shutil.rmtree(target, ignore_errors=True)

    refuse(argv, after)


def test_backup_of_an_older_store_short_of_memory(store, refuse):
    """A store of the schema before this hsmctl's is backed up as it is, without an
    audit outbox (it is not migrated): a backup whose record could not be written is
    then deleted, since nothing would ever record it.  Every backup file left is named
    on the trail, which verifies."""
    import sqlite3
    base = store["base"] / "older-backup"
    older = str(store["base"] / "older")
    shutil.copytree(store["data"], older, ignore=shutil.ignore_patterns("backups"))
    db = sqlite3.connect(os.path.join(older, "hsmd.db"))
    db.execute("DELETE FROM schema_version WHERE version = (SELECT max(version) FROM "
               "schema_version)")
    db.commit()
    db.close()
    kept = []

    def argv(at):
        (base / str(at)).mkdir(parents=True, exist_ok=True)  # the medium, there
        return ["backup", "create", "--data-dir", older, *store["quorum"], "--dir",
                str(base / str(at))]

    def after(at, p):
        files = [os.path.basename(f) for f in glob.glob(str(base / str(at) / "*.hsmbak"))]
        if p.returncode == 0:
            assert len(files) == 1, (files, p.stdout)
            kept.append(files[0])
        else:
            assert files == [], (files, p.stderr)

    refuse(argv, after, tail=60)  # the record comes in the last 30 or so
    named = {r.get("extra", {}).get("file") for r in audit_records(older)
             if r.get("op") == "Backup" and r.get("outcome") == "success"}
    assert set(kept) <= named, (kept, named)
    trail_verifies(older)


def test_access_key_create_short_of_memory(store, refuse):
    """An offline access-key create that runs out of memory makes no key, or prints the
    one it made with its secret, or names the key it made and withholds the secret from
    (its record failed): the key to revoke is never one nobody knows of.  The trail
    then verifies, the creation recorded by the next offline command."""
    ctl("user", "create", "oom-user", "--roles", "crypto-user", "--data-dir", store["data"],
        *store["quorum"])

    def keys():
        p = ctl("access-key", "list", "oom-user", "--data-dir", store["data"])
        return set(re.findall(r"AccessKeyId: (AKIA[A-Z0-9]{16})", p.stdout))

    held = keys()
    named = []

    def after(at, p):
        made = keys() - held
        held.update(made)
        assert len(made) <= 1, made
        if p.returncode == 0:
            assert len(made) == 1 and f"AccessKeyId: {min(made)}" in p.stdout, p.stdout
            assert "SecretAccessKey: " in p.stdout, p.stdout
        elif made:
            akid = min(made)
            assert "SecretAccessKey" not in p.stdout, p.stdout
            assert f"revoke it (hsmctl access-key revoke {akid})" in p.stderr, p.stderr
            named.append(akid)
        # Revoked at once: a user holds at most 10 active keys, and each run may make one.
        for akid in made:
            r = ctl("access-key", "revoke", akid, "--data-dir", store["data"], *store["quorum"])
            assert r.returncode == 0, r.stderr

    refuse(lambda at: ["access-key", "create", "oom-user", "--data-dir", store["data"],
                       *store["quorum"]], after, tail=60)
    print(f"keys made but withheld: {named}")
    trail_verifies(store["data"])
