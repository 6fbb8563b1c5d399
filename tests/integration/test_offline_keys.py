"""hsmctl's key commands on a stopped node's data directory (a key ceremony, a recovery):
enable, disable, the rotation schedule, scheduled deletion and its cancelling.  Each
changes what a node started on the directory then serves, refuses bad input without
changing anything, and is on the directory's audit trail with its outcome."""
import datetime
import glob
import os
import re
import subprocess

import pytest

from conftest import HSMCTL, Hsmd, client
from helpers import IDENTITY, audit_records


def run(*args):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    return subprocess.run([HSMCTL, *args], capture_output=True, text=True, timeout=120, env=e)


def fields(stdout):
    """hsmctl's "name: value" lines as a dict."""
    return dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory):
    base = tmp_path_factory.mktemp("offline-keys")
    data, shares = base / "data", base / "shares"
    p = run("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
            "--threshold", "2", "--admin", "ops")
    assert p.returncode == 0, p.stderr
    quorum = ["--share", str(shares / "share-1-of-2.share"),
              "--share", str(shares / "share-2-of-2.share")]
    # The first key records the nodes' account and region; the others take the store's.
    p = run("key", "create", "--data-dir", str(data), *quorum, *IDENTITY)
    assert p.returncode == 0, p.stderr
    return str(data), quorum, str(shares / "ops.credentials")


def audit_verify(ceremony):
    """hsmctl audit verify of the directory's trail against the ceremony's audit key."""
    data = ceremony[0]
    transcript, = glob.glob(os.path.join(os.path.dirname(data), "shares", "ceremony-*.txt"))
    pem = re.search(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----\n",
                    open(transcript).read(), re.S).group(0)
    path = os.path.join(os.path.dirname(data), "audit.pem")
    with open(path, "w") as f:
        f.write(pem)
    return run("audit", "verify", "--pubkey", path, os.path.join(data, "audit"))


def key_cmd(ceremony, *args):
    data, quorum, _ = ceremony
    return run("key", args[0], "--data-dir", data, *quorum, *args[1:])


def create(ceremony, *args):
    p = key_cmd(ceremony, "create", *args)
    assert p.returncode == 0, p.stderr
    return fields(p.stdout)


def describe(ceremony, key):
    p = key_cmd(ceremony, "describe", key)
    assert p.returncode == 0, p.stderr
    return fields(p.stdout)


def outcomes(ceremony, key, op):
    return [r["outcome"] for r in audit_records(ceremony[0])
            if r.get("key_id") == key and r.get("op") == op]


def test_the_spec_implies_the_usage(ceremony):
    assert create(ceremony, "--spec", "HMAC_256")["usage"] == "GENERATE_VERIFY_MAC"
    assert create(ceremony, "--spec", "ECC_NIST_P256")["usage"] == "SIGN_VERIFY"
    assert create(ceremony, "--spec", "ECC_NIST_EDWARDS25519")["usage"] == "SIGN_VERIFY"
    # RSA keys can do either, and default to encryption as AWS KMS's CreateKey does.
    assert create(ceremony, "--spec", "RSA_3072")["usage"] == "ENCRYPT_DECRYPT"
    assert create(ceremony, "--spec", "RSA_3072", "--usage", "SIGN_VERIFY")["usage"] == \
        "SIGN_VERIFY"
    p = key_cmd(ceremony, "create", "--spec", "HMAC_256", "--usage", "ENCRYPT_DECRYPT")
    assert p.returncode == 1 and "ENCRYPT_DECRYPT" in p.stderr, p.stderr


def test_disable_and_enable(ceremony):
    key = create(ceremony)["key"]
    p = key_cmd(ceremony, "disable", key)
    assert p.returncode == 0, p.stderr
    assert fields(p.stdout)["state"] == "Disabled"
    assert describe(ceremony, key)["state"] == "Disabled"
    p = key_cmd(ceremony, "enable", key)
    assert p.returncode == 0, p.stderr
    assert describe(ceremony, key)["state"] == "Enabled"
    assert outcomes(ceremony, key, "DisableKey") == ["success"]
    assert outcomes(ceremony, key, "EnableKey") == ["success"]
    # An unknown key: refused, and recorded as refused.
    p = key_cmd(ceremony, "enable", "1234abcd-12ab-34cd-56ef-1234567890ab")
    assert p.returncode == 1 and "1234abcd-12ab-34cd-56ef-1234567890ab" in p.stderr, p.stderr
    assert [r["outcome"] for r in audit_records(ceremony[0])
            if r.get("op") == "EnableKey"][-1] == "error"


def test_rotation_schedule(ceremony):
    key = create(ceremony)["key"]
    assert describe(ceremony, key)["rotation"].startswith("disabled")
    before = datetime.datetime.now(datetime.timezone.utc)
    p = key_cmd(ceremony, "rotation", key, "--enable", "--period", "30")
    assert p.returncode == 0, p.stderr
    rot = describe(ceremony, key)["rotation"]
    assert rot.startswith("enabled (period 30 days, next "), rot
    nxt = datetime.datetime.strptime(rot.split("next ")[1].rstrip(")"), "%Y-%m-%dT%H:%M:%SZ")
    nxt = nxt.replace(tzinfo=datetime.timezone.utc)
    assert abs((nxt - before).total_seconds() - 30 * 86400) < 120, rot
    # The default period is 90 days.
    other = create(ceremony)["key"]
    assert key_cmd(ceremony, "rotation", other, "--enable").returncode == 0
    assert describe(ceremony, other)["rotation"].startswith("enabled (period 90 days")
    p = key_cmd(ceremony, "rotation", key, "--disable")
    assert p.returncode == 0, p.stderr
    assert describe(ceremony, key)["rotation"].startswith("disabled")
    assert outcomes(ceremony, key, "EnableKeyRotation") == ["success"]
    assert outcomes(ceremony, key, "DisableKeyRotation") == ["success"]
    # Neither or both of --enable and --disable, or a period out of range: nothing changes.
    for args, code in ((["--enable", "--disable"], 1), ([], 1), (["--enable", "--period", "0"], 2),
                       (["--enable", "--period", "2561"], 2)):
        p = key_cmd(ceremony, "rotation", other, *args)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert describe(ceremony, other)["rotation"].startswith("enabled (period 90 days")


def test_schedule_and_cancel_deletion(ceremony):
    key = create(ceremony, "--alias", "alias/offline-doomed")["key"]
    before = datetime.datetime.now(datetime.timezone.utc)
    p = key_cmd(ceremony, "schedule-deletion", key, "--days", "7")
    assert p.returncode == 0, p.stderr
    got = describe(ceremony, key)
    assert got["state"] == "PendingDeletion"
    when = datetime.datetime.strptime(got["deletion-date"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    assert abs((when - before).total_seconds() - 7 * 86400) < 120, got["deletion-date"]
    # A key pending deletion is not enabled again before its deletion is cancelled.
    p = key_cmd(ceremony, "enable", key)
    assert p.returncode == 1, p.stderr
    assert describe(ceremony, key)["state"] == "PendingDeletion"
    p = key_cmd(ceremony, "cancel-deletion", key)
    assert p.returncode == 0, p.stderr
    got = describe(ceremony, key)
    assert got["state"] == "Disabled" and got["deletion-date"] == "-", got  # as in AWS KMS
    assert outcomes(ceremony, key, "ScheduleKeyDeletion") == ["success"]
    assert outcomes(ceremony, key, "CancelKeyDeletion") == ["success"]
    # The default waiting period is 30 days; outside 7-30 is refused and changes nothing.
    other = create(ceremony)["key"]
    for days in ("6", "31"):
        p = key_cmd(ceremony, "schedule-deletion", other, "--days", days)
        assert p.returncode == 1 and "7" in p.stderr and "30" in p.stderr, p.stderr
        assert describe(ceremony, other)["state"] == "Enabled"
    assert outcomes(ceremony, other, "ScheduleKeyDeletion") == ["error"] * 2
    p = key_cmd(ceremony, "schedule-deletion", other)
    assert p.returncode == 0, p.stderr
    when = datetime.datetime.strptime(describe(ceremony, other)["deletion-date"],
                                      "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((when - before).total_seconds() - 30 * 86400) < 120
    # Cancelling a deletion that is not scheduled is refused.
    p = key_cmd(ceremony, "cancel-deletion", key)
    assert p.returncode == 1, p.stderr


def test_changes_need_the_quorum_and_leave_a_trail_that_verifies(ceremony):
    # The data directory alone disables and destroys nothing: the shares stand in for an
    # officer, as for offline user changes (and online, deletion may wait for custodians).
    key = create(ceremony)["key"]
    data = ceremony[0]
    for args in (["disable"], ["enable"], ["rotation", "--enable"], ["rotation", "--disable"],
                 ["schedule-deletion", "--days", "7"], ["cancel-deletion"], ["rotate"]):
        p = run("key", args[0], "--data-dir", data, key, *args[1:])
        assert p.returncode == 1, (args, p.returncode, p.stderr)
        assert f"offline, key {args[0]} needs a quorum of the custodians' share files, " \
               "--share FILE for each of 2 shares" in p.stderr, p.stderr
    got = describe(ceremony, key)
    assert (got["state"], got["rotation"][:8]) == ("Enabled", "disabled"), got
    changes = {"DisableKey", "EnableKey", "EnableKeyRotation", "DisableKeyRotation",
               "ScheduleKeyDeletion", "CancelKeyDeletion", "RotateKeyOnDemand"}
    assert [r for r in audit_records(data) if r.get("op") in changes and
            r.get("key_id") == key] == []
    # With the quorum, the changes' checkpoints are signed: the trail verifies against the
    # ceremony's audit key (an unsigned one after a change would read as a rewritten log).
    for args in (["disable"], ["enable"], ["rotation", "--enable"],
                 ["schedule-deletion", "--days", "7"], ["cancel-deletion"]):
        p = key_cmd(ceremony, args[0], key, *args[1:])
        assert p.returncode == 0, (args, p.stderr)
    p = audit_verify(ceremony)
    assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr
    # Reads need no shares.
    assert run("key", "describe", "--data-dir", data, key).returncode == 0
    assert run("key", "list", "--data-dir", data).returncode == 0


def test_a_node_serves_what_the_ceremony_changed(ceremony):
    """The changes are in the store: a node started on the directory serves them."""
    enabled = create(ceremony)["key"]
    disabled = create(ceremony)["key"]
    assert key_cmd(ceremony, "disable", disabled).returncode == 0
    assert key_cmd(ceremony, "rotation", enabled, "--enable", "--period", "45").returncode == 0
    data, quorum, credentials = ceremony
    with open(credentials) as f:
        creds = dict(line.split(" = ", 1) for line in f.read().splitlines() if " = " in line)
    node = Hsmd([], data_dir=data)
    try:
        for share in quorum[1::2]:
            p = run("--endpoint", node.endpoint, "unseal", share)
            assert p.returncode == 0, p.stderr
        kms = client(node, creds["aws_access_key_id"], creds["aws_secret_access_key"])
        assert kms.describe_key(KeyId=disabled)["KeyMetadata"]["KeyState"] == "Disabled"
        assert kms.get_key_rotation_status(KeyId=enabled)["KeyRotationEnabled"] is True
        assert kms.describe_key(KeyId=enabled)["KeyMetadata"]["KeyState"] == "Enabled"
        assert kms.get_key_rotation_status(KeyId=disabled)["KeyRotationEnabled"] is False
    finally:
        node.cleanup()


def test_keys_made_offline_carry_the_nodes_account_and_region(tmp_path):
    """An offline key create records the account and region given for a store that records
    none (the nodes' own), takes the store's afterwards, and makes no key without them: a
    key under an account the nodes do not have would stop them starting on the store."""
    data, shares = tmp_path / "data", tmp_path / "shares"
    p = run("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
            "--threshold", "2", "--admin", "ops")
    assert p.returncode == 0, p.stderr
    quorum = ["--data-dir", str(data), "--share", str(shares / "share-1-of-2.share"),
              "--share", str(shares / "share-2-of-2.share")]
    ceremony = ["--origin", "EXTERNAL", "--spec", "RSA_4096", "--usage", "SIGN_VERIFY"]

    def keys():
        p = run("key", "list", "--data-dir", str(data))
        assert p.returncode == 0, p.stderr
        return p.stdout.splitlines()

    for given in ([], ["--region", "eu-west-1"], ["--account-id", "444455556666"]):
        p = run("key", "create", *quorum, *ceremony, *given)
        assert p.returncode == 1, (given, p.stdout, p.stderr)
        assert "records no account and region yet" in p.stderr and \
            "--account-id ID --region R" in p.stderr, p.stderr
    assert keys() == []
    for bad in (["--region", "EU_WEST", "--account-id", "444455556666"],
                ["--region", "eu-west-1", "--account-id", "4444"]):
        p = run("key", "create", *quorum, *bad)
        assert p.returncode == 2, (bad, p.stderr)
    assert keys() == []
    p = run("key", "create", *quorum, *ceremony, "--region", "eu-west-1",
            "--account-id", "444455556666")
    assert p.returncode == 0, p.stderr
    # The store's, from then on: none needed, another refused.
    p = run("key", "create", *quorum)
    assert p.returncode == 0, p.stderr
    p = run("key", "create", *quorum, "--region", "us-east-1")
    assert p.returncode == 1 and "account 444455556666 in region eu-west-1" in p.stderr, p.stderr
    assert len(keys()) == 2
    # The nodes of that account and region start on the store; another's does not.
    node = Hsmd(["--region", "eu-west-1", "--account-id", "444455556666"], data_dir=str(data))
    node.cleanup()
    with pytest.raises(RuntimeError, match="account 444455556666 in region eu-west-1"):
        Hsmd([], data_dir=str(data))


def test_a_store_older_than_its_account_record_takes_its_keys_account(tmp_path):
    """A store whose keys were made before stores recorded their account: an offline key
    create under another account than the one their policies name is refused, as it
    would stop that account's nodes starting on the store; refused, it leaves the store as
    it was, its schema too (it is not brought forward for nothing)."""
    import sqlite3
    data, shares = tmp_path / "data", tmp_path / "shares"
    p = run("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
            "--threshold", "2", "--admin", "ops")
    assert p.returncode == 0, p.stderr
    quorum = ["--data-dir", str(data), "--share", str(shares / "share-1-of-2.share"),
              "--share", str(shares / "share-2-of-2.share")]
    p = run("key", "create", *quorum, "--region", "eu-west-1", "--account-id", "444455556666")
    assert p.returncode == 0, p.stderr
    # As an older hsmd left it: no account recorded, the schema before the last
    # (idempotent) step.
    db = sqlite3.connect(str(data / "hsmd.db"))
    latest = db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    db.execute("DELETE FROM schema_version WHERE version = ?", (latest,))
    db.execute("DELETE FROM meta WHERE name = 'account'")
    db.commit()
    db.close()

    def state():
        db = sqlite3.connect(str(data / "hsmd.db"))
        try:
            return (db.execute("SELECT max(version) FROM schema_version").fetchone()[0],
                    db.execute("SELECT count(*) FROM keys").fetchone()[0],
                    db.execute("SELECT count(*) FROM meta WHERE name = 'account'").fetchone()[0])
        finally:
            db.close()

    before = state()
    assert before == (latest - 1, 1, 0), before
    p = run("key", "create", *quorum, "--region", "eu-west-1", "--account-id", "999988887777")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "name account 444455556666, not the 999988887777 given" in p.stderr, p.stderr
    assert "nothing was created" in p.stderr, p.stderr
    assert state() == before
    p = run("key", "create", *quorum)
    assert p.returncode == 1 and "records no account and region yet" in p.stderr, p.stderr
    assert state() == before
    p = run("key", "create", *quorum, "--region", "eu-west-1", "--account-id", "444455556666")
    assert p.returncode == 0, p.stderr
    assert state() == (latest, 2, 1)
    node = Hsmd(["--region", "eu-west-1", "--account-id", "444455556666"], data_dir=str(data))
    node.cleanup()


def test_hsm_region_and_account_id_as_hsmd_reads_them(tmp_path):
    data, shares = tmp_path / "data", tmp_path / "shares"
    p = run("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
            "--threshold", "2")
    assert p.returncode == 0, p.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    env.update(HSM_REGION="ap-south-1", HSM_ACCOUNT_ID="123456789012")
    p = subprocess.run([HSMCTL, "key", "create", "--data-dir", str(data),
                        "--share", str(shares / "share-1-of-2.share"),
                        "--share", str(shares / "share-2-of-2.share")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    node = Hsmd([], data_dir=str(data), env={"HSM_REGION": "ap-south-1",
                                             "HSM_ACCOUNT_ID": "123456789012"})
    node.cleanup()


def test_an_alias_refused_makes_no_key(ceremony):
    """key create --alias checks the alias before it makes the key: a bad or taken name
    leaves no key nobody names behind (one more with every retry)."""
    data = ceremony[0]
    taken = create(ceremony, "--alias", "alias/offline-taken")["key"]

    def keys():
        p = run("key", "list", "--data-dir", data)
        assert p.returncode == 0, p.stderr
        return p.stdout.splitlines()

    before = keys()
    for alias, why in (("app", 'prefix "alias/"'), ("alias/aws/kms", "reserved"),
                       ("alias/a b", "only letters, digits"),
                       ("alias/pkcs11-id/zz", "lowercase hex"),
                       ("alias/offline-taken", f"already exists (key {taken})")):
        p = key_cmd(ceremony, "create", "--alias", alias)
        assert p.returncode == 1 and why in p.stderr, (alias, p.stderr)
        assert "nothing was created" in p.stderr or alias != "alias/offline-taken", p.stderr
        assert p.stdout == "", p.stdout
    assert keys() == before
    assert describe(ceremony, "alias/offline-taken")["key"] == taken
