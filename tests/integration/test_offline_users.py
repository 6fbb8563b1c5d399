"""Users and access keys managed offline, a quorum of custodians standing in for an officer:
the way back when no officer can act through the API (locked out, credentials lost or
stolen, or a ceremony that stopped before it wrote its officer)."""
import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, client, signed_request, start_dev
from helpers import audit_records, raises
from test_auth import BAD_SIG
from test_backup import fields, hsmctl
from test_sealed import create_first_officer, init_store

TARGET, BODY = "TrentService.ListKeys", {"Limit": 5}


def unsealed(data, shares):
    server = Hsmd([], data_dir=data)
    for c in ("alice", "dave", "erin"):
        p = hsmctl("unseal", shares[c], endpoint=server.endpoint)
        assert p.returncode == 0, p.stderr
    return server


def offline(*args):
    return hsmctl(*args)


def users(data):
    p = offline("user", "list", "--data-dir", data)
    assert p.returncode == 0, p.stderr
    blocks = [dict(l.split(": ", 1) for l in b.splitlines()) for b in p.stdout.split("\n\n")
              if b.strip()]
    return {b["UserName"]: b for b in blocks}


@pytest.fixture()
def store():
    base = tempfile.mkdtemp(prefix="hsmd-offline-users-")
    data, shares = init_store(base)
    yield data, shares
    shutil.rmtree(base, ignore_errors=True)


def test_a_quorum_unlocks_the_only_officer_and_makes_another(store):
    data, shares = store
    ops = create_first_officer(None, data, shares)
    server = unsealed(data, shares)
    try:
        # Whoever knows the officer's access key id locks it with five wrong signatures;
        # no other officer exists to unlock it.
        for _ in range(5):
            r = signed_request(server, TARGET, BODY, akid=ops[0], secret=ops[1], mutate=BAD_SIG)
            assert r.status_code == 400, r.text
        r = signed_request(server, TARGET, BODY, akid=ops[0], secret=ops[1])
        assert r.status_code == 403 and "locked" in r.json()["message"], r.text
    finally:
        server.stop()

    quorum = ["--share", shares["alice"], "--share", shares["dave"], "--share", shares["erin"]]
    # The data directory alone grants no authority: changes need the quorum, whole.
    p = offline("user", "unlock", "ops", "--data-dir", data)
    assert p.returncode == 2 and "quorum of the custodians' share files" in p.stderr, p.stderr
    p = offline("user", "unlock", "ops", "--data-dir", data, *quorum[:4])
    assert p.returncode == 1 and "2 of 3 shares given" in p.stderr, p.stderr
    assert users(data)["ops"]["Locked"] == "true"
    p = offline("user", "unlock", "nobody", "--data-dir", data, *quorum)
    assert p.returncode == 1 and "nobody" in p.stderr, p.stderr

    p = offline("user", "unlock", "ops", "--data-dir", data, *quorum)
    assert p.returncode == 0, p.stderr
    u = users(data)["ops"]
    assert (u["Locked"], u["FailedAuthentications"], u["Roles"]) == (
        "false", "0", "crypto-officer,auditor"), u
    # A second officer, so one lockout no longer stops administration.
    p = offline("user", "create", "ops2", "--roles", "crypto-officer,auditor", "--data-dir",
                data, *quorum)
    assert p.returncode == 0, p.stderr
    p = offline("access-key", "create", "ops2", "--data-dir", data, *quorum)
    assert p.returncode == 0, p.stderr
    made = fields(p.stdout)
    akid2, secret2 = made["AccessKeyId"], made["SecretAccessKey"]
    assert made["UserName"] == "ops2" and akid2.startswith("AKIA") and len(secret2) == 40
    p = offline("access-key", "list", "ops2", "--data-dir", data)
    assert p.returncode == 0 and fields(p.stdout) == {
        "AccessKeyId": akid2, "UserName": "ops2", "Status": "Active"}, p.stdout
    p = offline("user", "create", "OPS2", "--roles", "crypto-user", "--data-dir", data, *quorum)
    assert p.returncode == 1 and "already exists" in p.stderr, p.stderr

    server = unsealed(data, shares)
    try:
        kms = client(server, *ops)
        kms.list_keys()
        kms2 = client(server, akid2, secret2)
        key = kms2.create_key()["KeyMetadata"]["KeyId"]
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key
    finally:
        server.stop()

    # Stolen credentials are revoked the same way.
    p = offline("access-key", "revoke", akid2, "--data-dir", data, *quorum)
    assert p.returncode == 0, p.stderr
    server = unsealed(data, shares)
    try:
        raises("UnrecognizedClientException", client(server, akid2, secret2).list_keys)
        client(server, *ops).list_keys()
    finally:
        server.stop()

    # On the trail as hsmd records the API's changes, by the local operator; the secret
    # appears nowhere in it.
    recs = [r for r in audit_records(data) if r.get("source") == "hsmctl"]
    done = [(r["op"], r["outcome"], r.get("extra", {}).get("target_user"),
             r.get("extra", {}).get("target_access_key_id")) for r in recs
            if r["op"] in ("UnlockUser", "CreateUser", "CreateAccessKey", "RevokeAccessKey")]
    assert ("UnlockUser", "error", "nobody", None) in done, done
    assert done[-5:] == [("UnlockUser", "success", "ops", None),
                         ("CreateUser", "success", "ops2", None),
                         ("CreateAccessKey", "success", "ops2", akid2),
                         ("CreateUser", "error", "OPS2", None),
                         ("RevokeAccessKey", "success", None, akid2)], done
    created = [r for r in recs if r["op"] == "CreateUser" and r["outcome"] == "success"]
    assert created[-1]["extra"]["target_roles"] == "crypto-officer,auditor", created[-1]
    for path in glob.glob(os.path.join(data, "audit", "*")):
        with open(path, "rb") as f:
            assert secret2.encode() not in f.read(), path


def test_offline_user_commands_need_a_store_and_name_what_they_need(store, tmp_path):
    data, shares = store
    p = offline("user", "list", "--data-dir", str(tmp_path / "none"))
    assert p.returncode == 1 and "no hsmd store in" in p.stderr, p.stderr
    assert not (tmp_path / "none").exists()
    quorum = ["--share", shares["alice"], "--share", shares["dave"], "--share", shares["erin"]]
    p = offline("user", "create", "x", "--data-dir", data, *quorum)
    assert p.returncode == 1 and "user create needs --roles" in p.stderr, p.stderr
    p = offline("user", "create", "x", "--roles", "root", "--data-dir", data, *quorum)
    assert p.returncode == 1 and "root" in p.stderr, p.stderr
    # Refused for its roles, and on the trail naming them as given, as hsmd's record does.
    rec = [r for r in audit_records(data) if r.get("op") == "CreateUser"][-1]
    assert (rec["outcome"], rec["extra"]) == ("error", {"target_user": "x",
                                                        "target_roles": "root"}), rec
    p = offline("user", "disable", "ops", "--roles", "auditor", "--data-dir", data, *quorum)
    assert p.returncode == 2 and "--roles goes with create only" in p.stderr, p.stderr
    p = offline("user", "list")
    assert p.returncode == 2 and "--data-dir DIR" in p.stderr, p.stderr
    p = offline("user", "rename", "x", "--data-dir", data)
    assert p.returncode == 2 and "unknown subcommand 'rename'" in p.stderr, p.stderr
    p = offline("access-key", "create", "--data-dir", data, "--share", shares["alice"])
    assert p.returncode == 2 and "needs a user NAME" in p.stderr, p.stderr
    assert list(users(data)) == ["ops"]


def test_an_explicit_data_dir_is_not_sent_to_the_endpoint_the_environment_names(store):
    # HSM_ENDPOINT is exported for the running nodes; a command given --data-dir works on
    # that directory all the same, not on the node the variable names (status would report
    # the node's state, user list its users).
    data, shares = store
    node = start_dev()
    try:
        ops = client(node)
        assert ops.list_keys()["Keys"] is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
        env.update(HSM_ENDPOINT=node.endpoint, AWS_ACCESS_KEY_ID=DEV_AKID,
                   AWS_SECRET_ACCESS_KEY=DEV_SECRET)

        def run(*args):
            return subprocess.run([HSMCTL, *args], capture_output=True, text=True, timeout=60,
                                  env=env)

        p = run("status")  # no --data-dir: the node the environment names
        assert p.returncode == 0 and "unsealed" in p.stdout, p.stdout + p.stderr
        p = run("status", "--data-dir", data)
        assert p.returncode == 0 and "unsealed" not in p.stdout and "sealed" in p.stdout, \
            p.stdout + p.stderr
        p = run("user", "list", "--data-dir", data)
        assert p.returncode == 0, p.stderr
        assert "UserName: ops" in p.stdout and "UserName: dev" not in p.stdout, p.stdout
        p = run("unseal", "--data-dir", data, shares["alice"], shares["dave"], shares["erin"])
        assert p.returncode == 0, p.stdout + p.stderr
        # Both named on the command line: which one was meant is not guessed.
        p = run("--endpoint", node.endpoint, "status", "--data-dir", data)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "--endpoint (a running node) and --data-dir (a stopped one) name two places" \
            in p.stderr, p.stderr
        # So are a node's backups and a directory's: backup list --dir reads one here.
        p = run("--endpoint", node.endpoint, "backup", "list", "--dir", data)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "--endpoint (a node's backups) and --dir (a directory here) name two places" \
            in p.stderr, p.stderr
        p = run("backup", "list", "--dir", data)  # the environment's endpoint aside
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        node.cleanup()


def test_a_global_option_after_the_command_is_named_when_the_arguments_are_refused():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    env["HSM_ENDPOINT"] = "http://127.0.0.1:9"  # refused before anything is sent

    def run(*args):
        return subprocess.run([HSMCTL, *args], capture_output=True, text=True, timeout=60,
                              env=env)

    p = run("user", "create", "api", "--roles", "crypto-user", "--approval-wait", "1")
    assert p.returncode == 2, p.stderr
    assert "--approval-wait is a global option: give it before the command" in p.stderr, \
        p.stderr
    # An option the command takes itself (jwt's --endpoint) is not called misplaced.
    p = run("jwt", "sign", "--endpoint", "http://127.0.0.1:9", "k")
    assert p.returncode == 2 and "--claims" in p.stderr, p.stderr
    assert "global option" not in p.stderr, p.stderr


def test_user_names_differing_only_by_case(store):
    """A custodian is a person, and a key policy's aws:username names one spelling: a user
    whose name equals another's ignoring case is refused, offline as through the API, and
    nothing is made. A store that holds such a pair from before (planted here) still
    starts and serves both, and hsmd names the pair at every start."""
    data, shares = store
    ops = create_first_officer(None, data, shares)
    quorum = [a for c in ("alice", "dave", "erin") for a in ("--share", shares[c])]
    before = users(data)
    for name in ("OPS", "Ops"):
        p = offline("user", "create", name, "--roles", "custodian", "--data-dir", data,
                    *quorum)
        assert p.returncode == 1, p.stdout + p.stderr
        assert "user ops already exists (user names are unique regardless of case)" \
            in p.stderr, p.stderr
    assert users(data) == before
    # A pair made before names were unique so.
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    with db:
        db.execute("INSERT INTO users (name, role, disabled, locked, failed_auth, created) "
                   "SELECT 'Ops', 'auditor', 0, 0, 0, created FROM users WHERE name = 'ops'")
    db.close()
    server = unsealed(data, shares)
    try:
        log = server.read_log()
        assert "users whose names differ only by case: Ops/ops (made before" in log, log
        p = hsmctl("user", "create", "oPS", "--roles", "custodian", endpoint=server.endpoint,
                   creds=ops)
        assert p.returncode == 1 and "AlreadyExistsException" in p.stderr, p.stderr
        assert "(user names are unique regardless of case)" in p.stderr, p.stderr
        p = hsmctl("user", "list", endpoint=server.endpoint, creds=ops)
        assert p.returncode == 0, p.stderr
        listed = {b.split(": ", 1)[1] for b in p.stdout.splitlines()
                  if b.startswith("UserName: ")}
        assert {"ops", "Ops"} <= listed and "oPS" not in listed, listed
    finally:
        server.stop()
