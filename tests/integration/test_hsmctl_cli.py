"""hsmctl's command line: what it refuses before acting, and failures it must not hide
(output that was never written, options of another command, stray arguments)."""
import hashlib
import os
import re
import shutil
import socket
import subprocess
import tempfile

import pytest

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, start_dev


def ctl(*args, endpoint=None, out=None, env_set=None):
    """hsmctl with the dev node's officer credentials; out: a file for its stdout;
    env_set: variables to set (None: to remove) after those."""
    cmd = [HSMCTL] + (["--endpoint", endpoint] if endpoint else []) + list(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = DEV_AKID, DEV_SECRET
    for k, v in (env_set or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    if out is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    return subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, timeout=120,
                          env=env)


@pytest.fixture(scope="module")
def dev():
    # No scheduled backup: one landing mid-test would change the count a test reads.
    server = start_dev(["--backup-interval-seconds", "0"])
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def store():
    """A stopped node's data directory (2 of 2) and its quorum."""
    base = tempfile.mkdtemp(prefix="hsmd-cli-")
    data, shares = os.path.join(base, "data"), os.path.join(base, "shares")
    p = ctl("init", "--data-dir", data, "--share-dir", shares, "--shares", "2",
            "--threshold", "2", "--admin", "ops")
    assert p.returncode == 0, p.stderr
    quorum = ["--share", os.path.join(shares, "share-1-of-2.share"),
              "--share", os.path.join(shares, "share-2-of-2.share")]
    yield {"base": base, "data": data, "quorum": quorum}
    shutil.rmtree(base, ignore_errors=True)


def access_keys(endpoint=None, data=None, user="dev"):
    where = ["--data-dir", data] if data else []
    p = ctl("access-key", "list", user, *where, endpoint=endpoint)
    assert p.returncode == 0, p.stderr
    return re.findall(r"^AccessKeyId: (\S+)$", p.stdout, re.M)


# ---- output that could not be written ---------------------------------------------------

def test_a_secret_not_written_out_fails_and_names_the_key_to_revoke(dev, store):
    with open("/dev/full", "w") as full:
        p = ctl("access-key", "create", "dev", endpoint=dev.endpoint, out=full)
    assert p.returncode == 1, p.stderr
    m = re.search(r"access key (\S+) of dev exists, but nobody holds its secret: revoke it "
                  r"\(hsmctl access-key revoke (\S+)\)", p.stderr)
    assert m and m.group(1) == m.group(2), p.stderr
    assert m.group(1) in access_keys(dev.endpoint)
    assert ctl("access-key", "revoke", m.group(1), endpoint=dev.endpoint).returncode == 0
    # Offline alike.
    with open("/dev/full", "w") as full:
        p = ctl("access-key", "create", "ops", "--data-dir", store["data"], *store["quorum"],
                out=full)
    assert p.returncode == 1, p.stderr
    m = re.search(r"access key (\S+) of ops exists, but nobody holds its secret: revoke it "
                  r"\(hsmctl access-key revoke \1\)", p.stderr)
    assert m and m.group(1) in access_keys(data=store["data"], user="ops"), p.stderr


def test_output_not_written_is_a_failure(dev, store):
    for args, endpoint in ((["audit", "pubkey"], dev.endpoint), (["status"], dev.endpoint),
                           (["user", "list", "--data-dir", store["data"]], None),
                           (["help"], None)):
        with open("/dev/full", "w") as full:
            p = ctl(*args, endpoint=endpoint, out=full)
        assert p.returncode == 1 and "cannot write the output: No space left on device" in \
            p.stderr, (args, p.returncode, p.stderr)


# ---- options of another command or mode -------------------------------------------------

def test_online_backup_create_refuses_what_it_would_ignore(dev, store, tmp_path):
    def backups():
        p = ctl("backup", "list", endpoint=dev.endpoint)
        assert p.returncode == 0, p.stderr
        return p.stdout.count("backup-id:") + p.stdout.count("BackupId")

    before = backups()
    out = tmp_path / "out"
    for args in (["--dir", str(out)], ["--share", store["quorum"][1]], ["extra"],
                 ["--data-dir", store["data"], "--endpoint", dev.endpoint]):
        p = ctl("backup", "create", *args, endpoint=dev.endpoint)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
    assert not out.exists() and backups() == before
    p = ctl("backup", "create", "--dir", str(out), endpoint=dev.endpoint)
    assert "--dir does not go with backup create: with --endpoint it takes nothing" in p.stderr
    # Offline and the other forms alike.
    p = ctl("backup", "create", "--data-dir", store["data"], *store["quorum"], "--dir", str(out),
            "stray")
    assert p.returncode == 2 and "unexpected argument 'stray'" in p.stderr, p.stderr
    assert not out.exists()
    p = ctl("backup", "inspect", "--share", store["quorum"][1], "FILE")
    assert p.returncode == 2 and "--share does not go with backup inspect FILE" in p.stderr
    p = ctl("backup", "list", "--dir", str(tmp_path), "stray")
    assert p.returncode == 2, p.stderr


def test_jwt_subcommands_refuse_each_others_options(dev, tmp_path):
    from conftest import client
    kms = client(dev)
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    assert ctl("jwt", "enable", key, endpoint=dev.endpoint).returncode == 0
    p = ctl("jwt", "sign", key, "--claims", '{"sub":"u1"}', endpoint=dev.endpoint)
    assert p.returncode == 0 and p.stdout.count(".") == 2, p.stderr
    for opt in (["--issuer", "https://issuer.example"], ["--audience", "payments-api"],
                ["--leeway", "5"], ["--jwks", "jwks.json"]):
        p = ctl("jwt", "sign", key, "--claims", '{"sub":"u1"}', *opt, endpoint=dev.endpoint)
        assert p.returncode == 2 and f"{opt[0]} is not an option of jwt sign" in p.stderr, \
            (opt, p.returncode, p.stdout, p.stderr)
        assert p.stdout == ""
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys":[]}')
    for opt in (["--claims", "{}"], ["--lifetime", "5"], ["--typ", "JWT"], ["--alg", "RS256"]):
        p = ctl("jwt", "verify", "--jwks", str(jwks), "a.b.c", *opt)
        assert p.returncode == 2 and f"{opt[0]} is not an option of jwt verify" in p.stderr, \
            (opt, p.returncode, p.stderr)
    p = ctl("jwt", "disable", key, "--alg", "RS256", endpoint=dev.endpoint)
    assert p.returncode == 2, p.stderr
    assert ctl("jwt", "disable", key, endpoint=dev.endpoint).returncode == 0


def test_key_subcommands_refuse_each_others_options(store):
    data, quorum = store["data"], store["quorum"]
    p = ctl("key", "create", "--data-dir", data, *quorum, "--region", "us-east-1",
            "--account-id", "111122223333")
    assert p.returncode == 0, p.stderr
    key = re.search(r"^key: (\S+)$", p.stdout, re.M).group(1)

    def state():
        p = ctl("key", "describe", "--data-dir", data, key)
        assert p.returncode == 0, p.stderr
        return re.search(r"^state: (\S+)$", p.stdout, re.M).group(1), \
            re.search(r"^rotation: (\S+)", p.stdout, re.M).group(1)

    for args, why in ((["schedule-deletion", key, "--period", "7"],
                       "--period is not an option of key schedule-deletion (its waiting period "
                       "is --days N)"),
                      (["rotation", key, "--enable", "--days", "30"],
                       "--days is not an option of key rotation (its period is --period DAYS)"),
                      (["disable", key, "--spec", "HMAC_256"], "--spec is not an option"),
                      (["enable", key, "--alias", "alias/x"], "--alias is not an option"),
                      (["bogus", key], "unknown subcommand 'bogus'"),
                      (["create", "stray"], "unexpected argument 'stray'")):
        p = ctl("key", args[0], "--data-dir", data, *quorum, *args[1:])
        assert p.returncode == 2 and why in p.stderr, (args, p.returncode, p.stderr)
        assert state() == ("Enabled", "disabled")
    p = ctl("key", "list", "--data-dir", data)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1, p.stdout


# ---- a data directory that holds no store -----------------------------------------------

def test_offline_changes_on_a_mistyped_data_dir_make_no_store(store, tmp_path):
    typo = str(tmp_path / "typo")
    quorum = store["quorum"]
    for args in (["user", "unlock", "ops"], ["user", "create", "u2", "--roles", "auditor"],
                 ["access-key", "create", "ops"], ["access-key", "revoke", "AKIAXXXXXXXXXXXXXXXX"],
                 ["key", "create", "--region", "us-east-1", "--account-id", "111122223333"],
                 ["key", "disable", "1234abcd-12ab-34cd-56ef-1234567890ab"],
                 ["rekey", "--share-dir", str(tmp_path / "new-shares"), "--shares", "2",
                  "--threshold", "2"]):
        p = ctl(*args, "--data-dir", typo, *quorum)
        assert p.returncode == 1 and f"no hsmd store in {typo}" in p.stderr, \
            (args, p.returncode, p.stderr)
        assert not os.path.exists(typo), args
    p = ctl("store", "copy", "--data-dir", typo, "--to", "postgresql://hsmd@127.0.0.1:1/none")
    assert p.returncode == 1 and f"no hsmd store in {typo}" in p.stderr, p.stderr
    assert not os.path.exists(typo) and not os.path.exists(tmp_path / "new-shares")


def test_a_data_dir_others_may_write_to_is_refused(store):
    """hsmctl writes audit files under --data-dir (its audit directory): one that its
    group or others may write to could hold a link another user planted where they go.
    Refused before anything is done, with the fix; the store is left as it was."""
    data = store["data"]
    audit = os.path.join(data, "audit")
    for where, mode in ((data, 0o770), (audit, 0o777)):
        before = os.stat(where).st_mode & 0o7777
        os.chmod(where, mode)
        try:
            for args in (["status", "--data-dir", data], ["status", f"--data-dir={data}"],
                         ["user", "unlock", "ops", "--data-dir", data, *store["quorum"]]):
                p = ctl(*args)
                assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
                assert f"{where} is writable by" in p.stderr, p.stderr
                assert f"chmod go-w {where}" in p.stderr, p.stderr
        finally:
            os.chmod(where, before)
    p = ctl("status", "--data-dir", data)
    assert p.returncode == 0, p.stderr


def test_offline_commands_run_as_the_data_directorys_owner():
    """The node runs as its data directory's owner (the unit's user hsmd).  hsmctl run
    as another user there (root, as an operator would without sudo -u hsmd) would leave
    files the node cannot open at its next start (hsmd.lock, audit files, backups, all
    0600): refused, naming both users, before anything is made."""
    base = tempfile.mkdtemp(prefix="hsmd-owner-")
    try:
        os.chmod(base, 0o711)  # the other user reaches the directory, as under /var/lib
        data, shares = os.path.join(base, "data"), os.path.join(base, "shares")
        p = ctl("init", "--data-dir", data, "--share-dir", shares, "--shares", "2",
                "--threshold", "2", "--admin", "ops")
        assert p.returncode == 0, p.stderr
        nobody = 65534
        for root, dirs, files in os.walk(data):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, nobody, nobody)
        quorum = ["--share", os.path.join(shares, "share-1-of-2.share"),
                  "--share", os.path.join(shares, "share-2-of-2.share")]
        for args in (["status", "--data-dir", data],
                     ["user", "unlock", "ops", "--data-dir", data, *quorum]):
            p = ctl(*args)
            assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
            assert f"{data} belongs to uid {nobody}, not to this user (uid 0)" in p.stderr, \
                p.stderr
            assert "sudo -u hsmd" in p.stderr, p.stderr
        made_by_root = [os.path.join(r, n) for r, ds, fs in os.walk(data) for n in ds + fs
                        if os.lstat(os.path.join(r, n)).st_uid != nobody]
        assert made_by_root == [], made_by_root
        # As the owner, the same command works (a copy of hsmctl it can reach: the build
        # may lie under a directory only root enters).
        own = os.path.join(base, "hsmctl")
        shutil.copy(HSMCTL, own)
        os.chmod(own, 0o755)
        p = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}",
                            "--clear-groups", own, "status", "--data-dir", data],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "quorum" in p.stdout, p.stdout + p.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_init_refused_for_its_custodians_leaves_nothing(tmp_path):
    data, shares = tmp_path / "data", tmp_path / "shares"
    for names, why in (("a b,c", "custodian 1, 'a b': a name is 1 to 64 of"),
                       ("carol,carol", "custodian carol is named twice"),
                       # One person under two spellings would hold two shares.
                       ("alice,Alice", "custodians alice and Alice differ only by case"),
                       ("alice,b/ob", "custodian 2, 'b/ob'")):
        p = ctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
                "--threshold", "2", "--custodians", names)
        assert p.returncode == 2 and why in p.stderr, (names, p.returncode, p.stderr)
        assert not data.exists() and not shares.exists(), names
    p = ctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
            "--threshold", "2", "--custodians", "alice,bob")
    assert p.returncode == 0, p.stderr


def test_init_refuses_a_share_dir_others_may_write(tmp_path):
    """The shares and the transcript are written there: another user who may write to
    the directory could replace them, and with them the quorum, before the custodians
    take them.  Refused as a data directory would be, before anything is made."""
    data, shares = tmp_path / "data", tmp_path / "shares"
    shares.mkdir()
    for mode in (0o777, 0o770, 0o1777):
        os.chmod(shares, mode)
        p = ctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
                "--threshold", "2", "--custodians", "alice,bob")
        assert p.returncode != 0, (oct(mode), p.stdout, p.stderr)
        assert f"{shares} is writable by" in p.stderr and f"chmod go-w {shares}" in p.stderr, \
            p.stderr
        assert not data.exists() and os.listdir(shares) == [], oct(mode)
    os.chmod(shares, 0o750)  # others may read: the operator's choice, as for the data dir
    p = ctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "2",
            "--threshold", "2", "--custodians", "alice,bob")
    assert p.returncode == 0, p.stderr


# ---- 1-of-1 stores ----------------------------------------------------------------------

SINGLE_SHARE = "the store's master key is split 1 of 1"


def test_init_makes_no_single_share_store(tmp_path):
    data, shares = tmp_path / "data", tmp_path / "shares"
    for extra in (["--dev"], []):
        p = ctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares", "1",
                "--threshold", "1", "--admin", "ops", *extra)
        assert p.returncode == 2, (extra, p.returncode, p.stderr)
        assert not data.exists(), extra
    p = ctl("help")
    assert p.returncode == 0 and "--dev" not in p.stdout


def test_a_production_node_on_a_single_share_store_warns(store, tmp_path):
    data = str(tmp_path / "dev-data")
    dev = Hsmd(["--dev"], data_dir=data, env={"HSM_DEV_ACCESS_KEY_ID": DEV_AKID,
                                               "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET})
    dev.stop()
    with open(dev.log_path) as f:
        assert SINGLE_SHARE not in f.read()
    node = Hsmd([], data_dir=data)
    try:
        log = node.read_log()
        assert SINGLE_SHARE in log and "hsmctl rekey" in log, log
        p = ctl("unseal", os.path.join(data, "dev-unseal.share"), endpoint=node.endpoint)
        assert p.returncode == 0 and "unsealed" in p.stdout, p.stdout + p.stderr
    finally:
        node.cleanup()
    # A ceremony's store (2 of 2) says nothing of the kind.
    node = Hsmd([], data_dir=store["data"])
    try:
        assert SINGLE_SHARE not in node.read_log()
    finally:
        node.stop()


# ---- stray arguments to online commands -------------------------------------------------

def test_online_commands_with_stray_arguments_do_nothing(dev):
    ep = dev.endpoint
    assert ctl("user", "create", "stray-u", "--roles", "crypto-user", endpoint=ep).returncode == 0

    def user_status():
        p = ctl("user", "list", endpoint=ep)
        assert p.returncode == 0, p.stderr
        block = next(b for b in p.stdout.split("\n\n") if "UserName: stray-u" in b)
        return re.search(r"^Disabled: (\S+)$", block, re.M).group(1)

    enabled = user_status()
    for args in (["seal", "now"], ["status", "--json"], ["audit", "pubkey", "extra"],
                 ["user", "disable", "stray-u", "extra", "junk"], ["user", "list", "--bogus"],
                 ["access-key", "list", "stray-u", "extra"],
                 ["access-key", "create", "stray-u", "extra"],
                 ["user", "create", "stray-v", "--roles", "auditor", "extra"]):
        p = ctl(*args, endpoint=ep)
        assert p.returncode == 2 and p.stdout == "", (args, p.returncode, p.stdout, p.stderr)
    p = ctl("status", endpoint=ep)
    assert p.returncode == 0 and "Sealed: false" in p.stdout, p.stdout
    assert user_status() == enabled
    assert access_keys(ep, user="stray-u") == []
    assert "stray-v" not in ctl("user", "list", endpoint=ep).stdout
    # The options in either place, as offline.
    for args in (["stray-w", "--roles=auditor"], ["--roles", "auditor", "stray-x"]):
        p = ctl("user", "create", *args, endpoint=ep)
        assert p.returncode == 0, (args, p.stderr)


def test_unseal_and_seal_refuse_a_list_of_nodes(dev, tmp_path):
    """Unsealing and sealing act on the node that answers: given a list, hsmctl would hand
    a custodian's share (or the seal) to whichever node answered first, without naming
    it. They take one node's address, and act on nothing otherwise."""
    share = os.path.join(dev.data_dir, "dev-unseal.share")
    both = f"http://127.0.0.1:1,{dev.endpoint}"  # the first one down: B would answer
    for args in (("unseal", share), ("seal",)):
        p = ctl(*args, endpoint=both)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "acts on one node: give --endpoint that node's address alone" in p.stderr, \
            p.stderr
    p = ctl("status", endpoint=dev.endpoint)
    assert p.returncode == 0 and "Sealed: false" in p.stdout, p.stdout + p.stderr


# ---- global options ---------------------------------------------------------------------

def test_a_missing_command_is_a_usage_error():
    for args in ((), ("--region", "us-east-1")):
        p = ctl(*args)
        assert p.returncode == 2 and p.stdout == "", (args, p.returncode, p.stdout)
        assert "no command given (see 'hsmctl help')" in p.stderr, p.stderr
    # The command word taken as an option's value is named as such.
    p = ctl("--endpoint", "status")
    assert p.returncode == 2 and p.stdout == "", (p.returncode, p.stdout)
    assert "'status' was taken as the value of --endpoint" in p.stderr, p.stderr
    for args in (("help",), ("--help",)):
        p = ctl(*args)
        assert p.returncode == 0 and "commands:" in p.stdout, (args, p.returncode, p.stderr)


def test_global_options_need_a_value_and_take_the_equals_form(dev):
    for args in (["--endpoint"], ["--endpoint="], ["--ca-file", "--endpoint", dev.endpoint,
                                                   "status"], ["--approval-wait"]):
        p = ctl(*args)
        opt = args[0].rstrip("=")
        assert p.returncode == 2 and f"hsmctl: {opt} needs a value" in p.stderr, \
            (args, p.returncode, p.stderr)
        assert "unknown command" not in p.stderr and p.stdout == "", p.stderr
    p = ctl(f"--endpoint={dev.endpoint}", "status")
    assert p.returncode == 0 and "Sealed: false" in p.stdout, p.stdout + p.stderr
    p = ctl("--region=us-east-1", "--approval-wait=30", "user", "list", endpoint=dev.endpoint)
    assert p.returncode == 0 and "UserName: dev" in p.stdout, p.stdout + p.stderr
    # Given after the command, the = form is named as hsmctl's option.
    p = ctl("user", "list", f"--endpoint={dev.endpoint}")
    assert p.returncode == 2 and "--endpoint is a global option" in p.stderr, p.stderr


def test_a_global_option_given_twice_is_refused(dev, store, tmp_path):
    down = "http://127.0.0.1:1"
    for args in (["--endpoint", down, "status"], [f"--endpoint={down}", "status"],
                 ["--region", "us-east-1", "--region=eu-west-1", "status"],
                 ["jwt", "disable", "k", "--endpoint", down]):
        p = ctl(*args, endpoint=dev.endpoint)
        twice = "--region" if "--region" in args else "--endpoint"
        assert p.returncode == 2 and f"{twice} is given twice: give it once" in p.stderr, \
            (args, p.returncode, p.stderr)
        assert p.stdout == "", (args, p.stdout)
    other = str(tmp_path / "other")
    p = ctl("user", "list", "--data-dir", store["data"], f"--data-dir={other}")
    assert p.returncode == 2 and p.stdout == "", (p.returncode, p.stdout)
    assert "hsmctl user list: --data-dir is given twice" in p.stderr, p.stderr
    assert not os.path.exists(other)


def test_only_commands_that_sign_read_the_credentials(dev, store, tmp_path):
    creds = tmp_path / "ops.credentials"
    creds.write_text(f"[ops]\naws_access_key_id = {DEV_AKID}\n"
                     f"aws_secret_access_key = {DEV_SECRET}\n")
    audit = os.path.join(store["data"], "audit")
    for broken in ({"AWS_PROFILE": "nope", "AWS_SHARED_CREDENTIALS_FILE": str(creds),
                    "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
                   {"HSM_APPROVAL_WAIT": "abc"}):
        for args, endpoint in ((["version"], None), (["help"], None),
                               (["audit", "verify", audit], None),
                               (["init", "--data-dir", str(tmp_path / "d"), "--share-dir",
                                 str(tmp_path / "s"), "--shares", "2", "--threshold", "2"],
                                None),
                               (["status"], dev.endpoint)):
            p = ctl(*args, endpoint=endpoint, env_set={**broken, "HSM_ENDPOINT": dev.endpoint}
                    if args[0] == "version" else broken)
            assert p.returncode == 0, (broken, args, p.returncode, p.stderr)
            shutil.rmtree(tmp_path / "d", ignore_errors=True)
            shutil.rmtree(tmp_path / "s", ignore_errors=True)
        # A command that signs still says what is wrong.
        p = ctl("user", "list", endpoint=dev.endpoint, env_set=broken)
        assert p.returncode == 2 and p.stdout == "", (broken, p.returncode, p.stderr)
        assert "profile 'nope'" in p.stderr or "HSM_APPROVAL_WAIT" in p.stderr, p.stderr


def test_an_empty_access_key_id_is_unset(dev, tmp_path):
    """As botocore: AWS_ACCESS_KEY_ID= leaves the credentials file in force."""
    creds = tmp_path / "ops.credentials"
    creds.write_text(f"[ops]\naws_access_key_id = {DEV_AKID}\n"
                     f"aws_secret_access_key = {DEV_SECRET}\n")
    p = ctl("user", "list", endpoint=dev.endpoint,
            env_set={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": None,
                     "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_PROFILE": "ops"})
    assert p.returncode == 0 and "UserName: dev" in p.stdout, p.stdout + p.stderr


def test_a_client_key_without_its_certificate_is_refused(dev):
    for args, env in ((["--client-key", "/nonexistent/client.key"], None),
                      ([], {"HSM_CLIENT_KEY": "/nonexistent/client.key"})):
        p = ctl(*args, "status", endpoint=dev.endpoint, env_set=env)
        assert p.returncode == 2 and p.stdout == "", (args, p.returncode, p.stdout)
        assert "--client-key (HSM_CLIENT_KEY) is the key of a client certificate: give the " \
            "certificate too" in p.stderr, p.stderr


# ---- what a failure says ----------------------------------------------------------------

def test_a_ca_file_that_cannot_be_used_says_why(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with socket.socket() as listener:  # connections wait in its backlog: TLS setup comes first
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        node = f"https://127.0.0.1:{listener.getsockname()[1]}"
        for ca, why in ((tmp_path / "missing.pem", "No such file or directory"),
                        (junk, "no certificate or crl found")):
            p = ctl("--ca-file", str(ca), "status", endpoint=node)
            assert p.returncode == 1, (ca, p.returncode, p.stderr)
            assert f"cannot set up TLS for 127.0.0.1 (CA file {ca}): {why}" in p.stderr, p.stderr


# ---- audit report's window --------------------------------------------------------------

def test_audit_report_refuses_a_window_that_holds_nothing(store):
    audit = os.path.join(store["data"], "audit")
    for since, until in (("2027-01-01", "2026-01-01"), ("2026-01-01", "2026-01-01T00:00:00Z")):
        p = ctl("audit", "report", "--since", since, "--until", until, audit)
        assert p.returncode == 2 and p.stdout == "", (since, until, p.returncode, p.stdout)
        assert "is not after --since" in p.stderr, p.stderr
    p = ctl("audit", "report", "--since", "2026-01-01", "--until", "2026-01-01T00:00:01Z", audit)
    assert p.returncode == 0, p.stderr


# ---- a command's options given twice ----------------------------------------------------

def tree(base):
    """Every file under base: its path, size and contents' hash (what a refusal must leave)."""
    out = {}
    for root, dirs, files in os.walk(base):
        for d in dirs:
            out[os.path.join(root, d)] = None
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[path] = hashlib.sha256(fh.read()).hexdigest()
    return out


def test_an_option_given_twice_is_refused_by_every_command(store, tmp_path):
    """A second value of an option would silently replace the first (a script appending
    options, a pasted line): each command refuses it, naming the option, and does
    nothing. Options that collect values (--share) still repeat: every offline change
    below gives two."""
    data, quorum, down = store["data"], store["quorum"], "http://127.0.0.1:1"
    new, other = str(tmp_path / "new"), str(tmp_path / "other")
    key = "1234abcd-12ab-34cd-56ef-1234567890ab"
    region = ["--region", "us-east-1", "--account-id", "111122223333"]
    offline = [
        (["init", "--data-dir", new, "--share-dir", other, "--shares", "3", "--threshold",
          "2", "--threshold", "3"], "threshold"),
        (["init", "--data-dir", new, "--share-dir", other, "--shares", "2", "--threshold",
          "2", "--custodians", "a,b", "--custodians=c,d"], "custodians"),
        (["init", "--data-dir", new, "--share-dir", other, "--share-dir", new], "share-dir"),
        # An abbreviation is the option it stands for.
        (["status", "--data-dir", data, "--data", data], "data-dir"),
        (["unseal", "--data-dir", data, "--data=" + data, quorum[1], quorum[3]], "data-dir"),
        (["user", "create", "twice", "--roles", "auditor", "--roles", "crypto-officer",
          "--data-dir", data, *quorum], "roles"),
        (["access-key", "create", "ops", "--data-dir", data, "--data", other, *quorum],
         "data-dir"),
        (["key", "create", "--data-dir", data, *quorum, *region, "--spec", "HMAC_256",
          "--spec", "SYMMETRIC_DEFAULT"], "spec"),
        (["key", "create", "--data-dir", data, *quorum, *region, "--region", "eu-west-1"],
         "region"),
        (["key", "create", "--data-dir", data, *quorum, *region, "--description", "a",
          "--descr=b"], "description"),
        (["key", "rotation", key, "--data-dir", data, *quorum, "--enable", "--period", "30",
          "--period", "90"], "period"),
        (["key", "rotation", key, "--data-dir", data, *quorum, "--enable", "--enable"],
         "enable"),
        (["key", "schedule-deletion", key, "--data-dir", data, *quorum, "--days", "30",
          "--days", "7"], "days"),
        (["key", "import", key, "--data-dir", data, *quorum, "--material", new,
          "--material", other], "material"),
        (["backup", "create", "--data-dir", data, *quorum, "--dir", new, "--dir", other],
         "dir"),
        (["backup", "list", "--dir", data, "--dir", other], "dir"),
        (["backup", "verify", *quorum, "--data-dir", data, "--data", data, new], "data-dir"),
        (["restore", "--data-dir", new, *quorum, "--dir", other, "--dir", data, new], "dir"),
        (["rekey", "--data-dir", data, *quorum, "--share-dir", new, "--shares", "2",
          "--threshold", "2", "--threshold", "2"], "threshold"),
        (["rekey", "--data-dir", data, *quorum, "--share-dir", new, "--shares", "2",
          "--threshold", "2", "--custodians", "a,b", "--custodians", "c,d"], "custodians"),
        (["store", "copy", "--data-dir", data, "--to", "postgresql://hsmd@127.0.0.1:1/a",
          "--to", "postgresql://hsmd@127.0.0.1:1/b"], "to"),
        (["audit", "verify", "--pubkey", new, "--pubkey", other, data + "/audit"], "pubkey"),
        (["audit", "verify", "--live", "--live", data + "/audit"], "live"),
        (["audit", "report", "--since", "2026-01-01", "--since", "2026-02-01",
          data + "/audit"], "since"),
        (["audit", "report", "--key", key, "--json", "--key", key, data + "/audit"], "key"),
    ]
    # Online commands, at a node that is down: refused before connecting (else exit 1).
    online = [
        (["user", "create", "twice", "--roles", "auditor", "--roles=custodian"], "roles"),
        (["key", "usage", "--unused-days", "1", "--unused-days", "2"], "unused-days"),
        (["key", "import", key, "--material", new, "--valid-days", "1", "--valid-days", "2"],
         "valid-days"),
        (["jwt", "sign", key, "--claims", "{}", "--lifetime", "60", "--lifetime", "600"],
         "lifetime"),
        (["jwt", "enable", key, "--alg", "RS256", "--alg", "PS256"], "alg"),
        (["jwt", "verify", "--jwks", new, "--audience", "a", "--audience", "b", "tok"],
         "audience"),
        (["cert", "import", new, "--label", "a", "--label", "b"], "label"),
        (["cert", "list", "--key", key, "--key", key], "key"),
    ]
    before = tree(store["base"])
    for args, opt, endpoint in [(a, o, None) for a, o in offline] + \
            [(a, o, down) for a, o in online]:
        p = ctl(*args, endpoint=endpoint)
        assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
        assert f"--{opt} is given twice: give it once" in p.stderr, (args, p.stderr)
        assert p.stdout == "", (args, p.stdout)
        assert tree(store["base"]) == before, args
        assert not os.path.exists(new) and not os.path.exists(other), args
