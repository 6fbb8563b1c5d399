"""Start-up refusals a setting causes: told to the operator like the
configuration's own errors, naming the setting and where it came from (flag,
variable or file line), without source paths or internal error codes, and
with exit status 2 as for any configuration error."""
import os
import shutil
import socket
import stat
import subprocess
import tempfile

import pytest

from conftest import DEV_AKID, DEV_SECRET, HSMD, Hsmd, free_port


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="hsmd-startup-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def refused(args, env=None):
    """Runs hsmd expecting it to refuse to start; its stderr."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    full_env.update(env or {})
    p = subprocess.run([HSMD] + args, capture_output=True, text=True, timeout=30, env=full_env)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "HSM_ERR_" not in p.stderr and ".c:" not in p.stderr, p.stderr
    return p.stderr


def blocker(tmp):
    path = os.path.join(tmp, "a-file")
    open(path, "w").close()
    return path


def test_a_data_dir_that_cannot_be_made(tmp):
    err = refused(["--dev", "--listen", f"127.0.0.1:{free_port()}",
                   "--data-dir", os.path.join(blocker(tmp), "data")])
    assert "(data_dir from --data-dir)" in err, err


def test_a_data_dir_or_audit_dir_others_may_write_to(tmp):
    """hsmd writes the dev unseal share in data_dir and audit files in audit_dir: in
    a directory its group or others may write to, another user could plant a link
    where they go.  Refused at start, saying how to fix it."""
    data = os.path.join(tmp, "data")
    os.mkdir(data, 0o700)
    os.chmod(data, 0o775)
    err = refused(["--dev", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", data])
    assert f"{data} is writable by its group (mode 0775)" in err, err
    assert f"chmod go-w {data}" in err and "(data_dir from --data-dir)" in err, err
    os.chmod(data, 0o700)
    audit = os.path.join(tmp, "audit")
    os.mkdir(audit, 0o700)
    os.chmod(audit, 0o1777)
    err = refused(["--dev", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", data,
                   "--audit-dir", audit])
    assert f"{audit} is writable by its group and others (mode 1777)" in err, err
    assert f"chmod go-w {audit}" in err and "(audit_dir from --audit-dir)" in err, err


def test_an_audit_dir_that_is_a_file(tmp):
    """Refused for the setting, not taken for an earlier store's unreadable trail."""
    for bad in (blocker(tmp), os.path.join(blocker(tmp), "sub")):
        err = refused(["--dev", "--listen", f"127.0.0.1:{free_port()}", "--data-dir",
                       os.path.join(tmp, "data"), "--audit-dir", bad])
        assert "(audit_dir from --audit-dir)" in err and bad in err, err
        assert "earlier store" not in err, err


def test_the_dev_share_is_not_written_through_a_planted_link(tmp):
    """The dev unseal share is written to a temporary file, then renamed: a symbolic
    link planted under the temporary's name (once PATH.tmp.PID, known in advance)
    must not receive the share."""
    data = os.path.join(tmp, "data")
    os.mkdir(data, 0o700)
    victim = os.path.join(tmp, "victim")
    with open(victim, "w") as f:
        f.write("untouched")
    share = os.path.join(data, "dev-unseal.share")
    # The shell plants the link under its own pid, then becomes hsmd (same pid).
    plant = f'ln -s {victim} {share}.tmp.$$ && exec "$0" "$@"'
    server = Hsmd(["--dev"], env={"HSM_DEV_ACCESS_KEY_ID": DEV_AKID,
                                  "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET},
                  data_dir=data, wrapper=("sh", "-c", plant))
    try:
        with open(victim) as f:
            assert f.read() == "untouched", "the share went to the planted link's file"
        assert not os.path.islink(share) and os.path.isfile(share)
        assert os.stat(share).st_mode & 0o777 == 0o600
        # The link is still there, as it was planted: nothing opened or renamed it.
        assert os.readlink(f"{share}.tmp.{server.proc.pid}") == victim
    finally:
        server.cleanup()


def test_the_dev_share_is_not_read_through_a_planted_link(tmp):
    """A symbolic link in the place of the dev unseal share (to the share itself, moved
    away) is refused by name, not followed."""
    from conftest import start_dev
    server = start_dev()
    server.stop()
    try:
        share = os.path.join(server.data_dir, "dev-unseal.share")
        moved = os.path.join(tmp, "moved.share")
        shutil.move(share, moved)
        os.symlink(moved, share)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
        env.update({"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET})
        p = subprocess.run([HSMD, "--dev", "--data-dir", server.data_dir, "--listen",
                            f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                           timeout=30, env=env)
        assert p.returncode != 0, p.stderr
        assert f"cannot open {share}: it is a symbolic link" in p.stderr, p.stderr
        assert os.path.islink(share)
    finally:
        server.cleanup()


def test_an_address_already_in_use(tmp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = refused(["--dev", "--data-dir", os.path.join(tmp, "data"),
                       "--listen", f"127.0.0.1:{port}"])
    assert f"cannot listen on 127.0.0.1:{port}" in err and "(listen from --listen)" in err, err


def test_port_0_is_told_as_the_port_the_system_chose(tmp):
    """--listen with port 0 lets the system choose a free port; the dev banner and the
    start's log line name that port, where a client can reach the node, not 0."""
    import re
    import urllib.request
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    p = subprocess.Popen([HSMD, "--dev", "--data-dir", os.path.join(tmp, "data"), "--listen",
                          "127.0.0.1:0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        while not any("listening on" in line for line in lines):
            line = p.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        endpoint = re.search(r"endpoint: +(http://127\.0\.0\.1:(\d+))", text)
        assert endpoint and endpoint.group(2) != "0", text
        assert f"listening on 127.0.0.1:{endpoint.group(2)} " in text, text
        assert f"--endpoint-url {endpoint.group(1)}" in text, text
        with urllib.request.urlopen(endpoint.group(1) + "/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        p.terminate()
        p.wait(timeout=30)
        p.stderr.close()


def test_a_backup_copy_dir_from_the_config_file(tmp):
    conf = os.path.join(tmp, "hsmd.conf")
    with open(conf, "w") as f:
        f.write(f"dev = true\nbackup_copy_dir = {blocker(tmp)}   # the DR disk\n")
    err = refused(["--config", conf, "--data-dir", os.path.join(tmp, "data"),
                   "--listen", f"127.0.0.1:{free_port()}"])
    assert "backup_copy_dir" in err and f"(backup_copy_dir from {conf}:2)" in err, err


def test_an_audit_copy_dir_from_the_environment(tmp):
    err = refused(["--dev", "--data-dir", os.path.join(tmp, "data"),
                   "--listen", f"127.0.0.1:{free_port()}"],
                  env={"HSM_AUDIT_COPY_DIR": blocker(tmp)})
    assert "audit_copy_dir" in err and "(audit_copy_dir from HSM_AUDIT_COPY_DIR)" in err, err


def test_an_audit_copy_dir_that_is_the_audit_dir(tmp):
    data = os.path.join(tmp, "data")
    err = refused(["--dev", "--data-dir", data, "--listen", f"127.0.0.1:{free_port()}",
                   "--audit-copy-dir", os.path.join(data, "audit", ".")])
    assert "is the audit directory itself" in err and "--audit-copy-dir" in err, err
    # Nor may the node's own directory in it be: here the data directory, for a node named audit.
    err = refused(["--dev", "--data-dir", data, "--listen", f"127.0.0.1:{free_port()}",
                   "--node-id", "audit", "--audit-copy-dir", data])
    assert (f"audit_copy_dir/NODE_ID = '{data}/audit' is the audit directory itself" in err
            and "(audit_copy_dir from --audit-copy-dir)" in err), err


def test_a_backup_copy_dir_that_is_the_backup_dir(tmp):
    """A copy in the backup directory itself is no copy: each backup would report it
    copied while one file exists.  Refused as the same directory, also through a
    symlink, naming the setting."""
    data, backups = os.path.join(tmp, "data"), os.path.join(tmp, "backups")
    os.makedirs(os.path.join(data, "backups"))
    os.mkdir(backups)
    os.symlink(backups, os.path.join(tmp, "dr-mount"))
    for extra, copy in (([], os.path.join(data, "backups")),
                        (["--backup-dir", backups], os.path.join(tmp, "dr-mount")),
                        (["--backup-dir", os.path.join(tmp, "dr-mount")], backups + "/.")):
        err = refused(["--dev", "--data-dir", data, "--listen", f"127.0.0.1:{free_port()}",
                       *extra, "--backup-copy-dir", copy])
        assert (f"backup_copy_dir = '{copy}' is the backup directory itself: give a "
                "directory on another disk or in another region" in err
                and "(backup_copy_dir from --backup-copy-dir)" in err), err


def test_a_store_that_cannot_be_reached(tmp):
    """A shared store hsmd cannot connect to is named like a setting's other faults (the
    setting and where it came from), but the status is 1, not 2: the database restarting or
    failing over is no setting refused, and docs/hsmd.service restarts on 1, never on 2."""
    conf = os.path.join(tmp, "node.conf")
    with open(conf, "w") as f:
        f.write(f"data_dir = {os.path.join(tmp, 'data')}\n"
                f"store = postgresql://hsmd@127.0.0.1:{free_port()}/hsm?connect_timeout=3\n")
    p = subprocess.run([HSMD, "--config", conf, "--listen", f"127.0.0.1:{free_port()}",
                        "--allow-plaintext-loopback"], capture_output=True, text=True, timeout=30,
                       env={k: v for k, v in os.environ.items() if not k.startswith("HSM_")})
    assert p.returncode == 1, (p.returncode, p.stderr)
    err = p.stderr
    assert "cannot connect to PostgreSQL" in err and f"(store from {conf}:2)" in err, err


def test_a_quorum_from_the_environment(tmp):
    err = refused(["--dev", "--data-dir", os.path.join(tmp, "data"),
                   "--listen", f"127.0.0.1:{free_port()}"], env={"HSM_APPROVAL_QUORUM": "2"})
    assert "approval_quorum = 2, but the store has 0 enabled custodians" in err, err
    assert "(approval_quorum from HSM_APPROVAL_QUORUM)" in err, err


def test_a_data_dir_without_a_store(tmp):
    """A production node on its own store file refuses a directory the key ceremony never
    made a store in (a typo, a disk not mounted yet): it would have started on a new, empty
    store, writing its audit trail and backups beside it, and created nothing."""
    data = os.path.join(tmp, "mistyped")
    err = refused(["--data-dir", data, "--listen", f"127.0.0.1:{free_port()}",
                   "--allow-plaintext-loopback"])
    assert f"data_dir {data} holds no store" in err and "hsmctl init" in err, err
    assert "(data_dir from --data-dir)" in err, err
    assert not os.path.exists(data)
    # An existing but empty directory (a mount point with nothing mounted) too.
    os.mkdir(data)
    err = refused(["--data-dir", data, "--listen", f"127.0.0.1:{free_port()}",
                   "--allow-plaintext-loopback"])
    assert "holds no store" in err, err
    assert os.listdir(data) == []


def test_a_data_dir_whose_store_file_is_empty(tmp):
    """A zero-length hsmd.db (a copy cut short) is no store either: the node refuses it
    instead of writing an empty schema into it and starting uninitialized."""
    data = os.path.join(tmp, "data")
    os.mkdir(data)
    db = os.path.join(data, "hsmd.db")
    open(db, "w").close()
    err = refused(["--data-dir", data, "--listen", f"127.0.0.1:{free_port()}",
                   "--allow-plaintext-loopback"])
    assert f"{db} is empty (0 bytes), so it holds no store" in err, err
    assert "hsmctl restore" in err and "(data_dir from --data-dir)" in err, err
    assert os.path.getsize(db) == 0
    assert sorted(os.listdir(data)) == ["hsmd.db"]


def test_a_lost_dev_store_is_not_replaced_over_its_share_trail_or_backups():
    """hsmd --dev whose hsmd.db is missing or empty beside what an earlier store left (its
    share, its audit trail, its backups) refuses to make a new store: a new share would
    overwrite the only one that opens the old backups."""
    from conftest import HSMCTL, signed_call, start_dev
    server = start_dev(["--backup-interval-seconds", "0"])  # one backup: the one asked for
    try:
        st, out = signed_call(server, "HsmdAdmin.CreateBackup", {})
        assert st == 200, out
    finally:
        server.stop()
    data = server.data_dir
    share = os.path.join(data, "dev-unseal.share")
    with open(share, "rb") as f:
        before = f.read()
    (backup,) = [os.path.join(data, "backups", f) for f in os.listdir(os.path.join(data, "backups"))
                 if f.endswith(".hsmbak")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    env.update({"HSM_DEV_ACCESS_KEY_ID": "AKIAHSMDDEVELOPMENT1",
                "HSM_DEV_SECRET_ACCESS_KEY": "secretsecretsecretsecretsecretsecret12"})

    def dev_refused(found, store="has no store (hsmd.db missing or empty)"):
        for f in ("hsmd.db-wal", "hsmd.db-shm"):
            if os.path.exists(os.path.join(data, f)):
                os.unlink(os.path.join(data, f))
        p = subprocess.run([HSMD, "--dev", "--data-dir", data, "--listen",
                            f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                           timeout=30, env=env)
        assert p.returncode != 0, p.stderr
        assert f"{store}, yet an earlier store left {found}" in p.stderr, p.stderr
        assert "hsmctl restore" in p.stderr, p.stderr

    open(os.path.join(data, "hsmd.db"), "w").close()  # empty
    dev_refused(f"the share {share}")
    with open(share, "rb") as f:
        assert f.read() == before  # not overwritten
    p = subprocess.run([HSMCTL, "backup", "verify", "--share", share, backup],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr  # the old backups still open
    os.unlink(os.path.join(data, "hsmd.db"))  # missing
    dev_refused(f"the share {share}")
    assert not os.path.exists(os.path.join(data, "hsmd.db"))  # the refusal made no store
    os.rename(share, share + ".kept")
    dev_refused(f"the audit trail in {os.path.join(data, 'audit')} (a successful Init at seq")
    shutil.rmtree(os.path.join(data, "audit"))
    dev_refused(f"the backups in {os.path.join(data, 'backups')}")
    assert not os.path.exists(share)
    assert not os.path.exists(os.path.join(data, "audit"))
    # A store file that was never initialized (a start that stopped before it) is said as such.
    shutil.copy(uninitialized_store(), os.path.join(data, "hsmd.db"))
    dev_refused(f"the backups in {os.path.join(data, 'backups')}",
                "holds an uninitialized store (hsmd.db was never initialized)")


def uninitialized_store():
    """The hsmd.db of a first --dev start that stopped before initializing it (its port
    taken), in a directory of its own that lives as long as the test run."""
    data = os.path.join(tempfile.mkdtemp(prefix="hsmd-uninit-"), "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        p = subprocess.run([HSMD, "--dev", "--data-dir", data, "--listen",
                            f"127.0.0.1:{busy.getsockname()[1]}"], capture_output=True,
                           text=True, timeout=30, env=env)
    assert p.returncode != 0 and "Address already in use" in p.stderr, p.stderr
    return os.path.join(data, "hsmd.db")


def listing(root):
    """Every name under root with its size (None for a directory, whose size the file
    system chooses)."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            st = os.lstat(os.path.join(d, n))
            out[os.path.relpath(os.path.join(d, n), root)] = (
                None if stat.S_ISDIR(st.st_mode) else st.st_size)
    return out


def test_a_refused_dev_start_leaves_the_data_dir_as_it_found_it():
    """hsmd --dev refused for what an earlier store left creates nothing (no hsmd.db, no
    lock, no audit record): the next attempt sees the same directory and says the same."""
    from conftest import start_dev
    server = start_dev()
    server.stop()
    data = server.data_dir
    for f in ("hsmd.db", "hsmd.db-wal", "hsmd.db-shm"):
        if os.path.exists(os.path.join(data, f)):
            os.unlink(os.path.join(data, f))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    for leftover in ("the share", "the audit trail"):
        if leftover == "the audit trail":
            os.unlink(os.path.join(data, "dev-unseal.share"))
        before = listing(data)
        messages = []
        for _ in range(2):
            p = subprocess.run([HSMD, "--dev", "--data-dir", data, "--listen",
                                f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                               timeout=30, env=env)
            assert p.returncode != 0, p.stderr
            assert "has no store (hsmd.db missing or empty), yet an earlier store left " \
                f"{leftover}" in p.stderr, p.stderr
            assert listing(data) == before
            messages.append([line.split(" ", 1)[-1] for line in p.stderr.splitlines()])
        assert messages[0] == messages[1]  # but for the times


def test_a_dev_start_that_never_initialized_leaves_no_reason_to_refuse(tmp):
    """A first hsmd --dev start that fails before its store is initialized (its port taken)
    leaves an uninitialized hsmd.db and a trail of its own start: neither is an earlier
    store's, and the next start on a free port initializes the store."""
    data = os.path.join(tmp, "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    env.update({"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        p = subprocess.run([HSMD, "--dev", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode != 0 and "Address already in use" in p.stderr, p.stderr
    assert os.path.getsize(os.path.join(data, "hsmd.db")) > 0  # an uninitialized store
    assert not os.path.exists(os.path.join(data, "dev-unseal.share"))
    assert os.listdir(os.path.join(data, "audit"))
    server = Hsmd(["--dev"], env={"HSM_DEV_ACCESS_KEY_ID": DEV_AKID,
                                  "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}, data_dir=data)
    try:
        assert os.path.exists(os.path.join(data, "dev-unseal.share"))
    finally:
        server.stop()


def test_running_out_of_descriptors_is_said_once_a_spell():
    """A node whose open-file limit drops below what its connections need once it runs
    (max_connections was sized at start) fails accepts with EMFILE: it pauses and gives an
    idle descriptor back each time, so an accept succeeds after nearly every pause.  That
    is not the end of the shortage: the warning is said once, and the spell ends only after
    a few seconds without a failure."""
    import time
    from conftest import start_dev
    server = start_dev()
    held = []
    try:
        subprocess.run(["prlimit", "--pid", str(server.proc.pid), "--nofile=40:40"], check=True)
        for _ in range(200):
            try:
                held.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
            except OSError:
                break
        time.sleep(4)  # dozens of pauses, each followed by an accept
        log = server.read_log()
        assert log.count("accept: Too many open files") == 1, log[-3000:]
        assert "accepting connections again" not in log, log[-3000:]
        for s in held:
            s.close()
        held = []
        time.sleep(5.5)  # quiet: the next accept ends the spell, once
        st, _, _ = server.get("/readyz")
        assert st == 200
        log = server.read_log()
        assert log.count("accepting connections again") == 1, log[-3000:]
        assert log.count("accept: Too many open files") == 1, log[-3000:]
    finally:
        for s in held:
            s.close()
        server.cleanup()


def test_a_low_open_file_limit_lowers_max_connections():
    """Under an open-file limit too low for max_connections, hsmd takes fewer connections
    instead of failing to accept them: when they are all held by clients that sent
    nothing, a new client still gets through (a stalled connection gives way), and the log
    says it once at start, not once per refused accept."""
    import time
    from conftest import start_dev
    server = start_dev(wrapper=["prlimit", "--nofile=128:128", "--"])
    held = []
    try:
        assert "max_connections lowered to 64" in server.read_log(), server.read_log()
        for _ in range(150):  # more than the descriptors it has
            try:
                held.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            except OSError:
                break

        def sockets():  # hsmd's: the connections it took in, and its listening sockets
            fds, n = f"/proc/{server.proc.pid}/fd", 0
            for fd in os.listdir(fds):
                try:
                    n += os.readlink(os.path.join(fds, fd)).startswith("socket:")
                except OSError:
                    pass  # closed meanwhile (a connection turned away)
            return n
        # The kernel completes the connections; hsmd takes them in when its workers run,
        # which on a loaded machine may be a while later: the second counts from then.
        deadline = time.monotonic() + 30
        while sockets() < 64 + 1:  # max_connections lowered to 64, and a listener
            assert time.monotonic() < deadline, sockets()
            time.sleep(0.05)
        time.sleep(1.5)  # a connection that sent nothing for a second has stalled
        t0 = time.monotonic()
        st, _, _ = server.get("/readyz")
        assert st == 200 and time.monotonic() - t0 < 5
        log = server.read_log()
        assert "Too many open files" not in log, log[-2000:]
    finally:
        for s in held:
            s.close()
        server.cleanup()


def test_each_start_records_its_version_and_the_schema_it_brought_forward(tmp):
    """The Startup record says which hsmd ran and the store's schema; a start that
    migrated the store says from which version, so an upgrade is on the trail of the node
    that made it (and the log says it too)."""
    import sqlite3

    from conftest import start_dev
    from helpers import audit_records

    data = os.path.join(tmp, "data")
    version = subprocess.run([HSMD, "--version"], capture_output=True, text=True,
                             check=True).stdout.split()[-1]
    node = start_dev(["--data-dir", data])
    node.cleanup()
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    latest = db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    # The store as the build before the last schema step left it (the step is idempotent).
    db.execute("DELETE FROM schema_version WHERE version = ?", (latest,))
    db.commit()
    db.close()
    node = start_dev(["--data-dir", data])
    try:
        starts = [r["extra"] for r in audit_records(data) if r.get("op") == "Startup"]
        assert [(s["version"], s["store_schema"]) for s in starts] == \
            [(version, str(latest))] * 2, starts
        assert "schema_migrated_from" not in starts[0], starts
        assert starts[1]["schema_migrated_from"] == str(latest - 1), starts
        assert f"SQLite schema migrated from version {latest - 1} to {latest}" in \
            node.read_log()
    finally:
        node.cleanup()


DEV_ENV = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}


def older_schema(data):
    """Makes the store at data as the build before the last schema step left it (the
    step is idempotent); the version it then has."""
    import sqlite3
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    latest = db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    db.execute("DELETE FROM schema_version WHERE version = ?", (latest,))
    db.commit()
    db.close()
    return latest - 1


def schema_of(data):
    import sqlite3
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    try:
        return db.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    finally:
        db.close()


def test_a_start_refused_for_its_audit_dir_leaves_the_schema_as_it_was(tmp):
    """The directories a start checks are checked before the store is opened: a start
    refused for one does not bring the schema forward (on a shared store, that would take
    the scheduled work from the nodes not yet upgraded)."""
    from conftest import start_dev
    data = os.path.join(tmp, "data")
    start_dev(["--data-dir", data]).cleanup()
    old = older_schema(data)
    err = refused(["--dev", "--data-dir", data, "--listen", f"127.0.0.1:{free_port()}",
                   "--audit-dir", blocker(tmp)],
                  DEV_ENV)
    assert "(audit_dir from --audit-dir)" in err, err
    assert schema_of(data) == old


@pytest.mark.parametrize("why", ["account", "listen", "quorum"])
def test_a_start_refused_after_opening_the_store_leaves_the_schema_as_it_was(tmp, why):
    """What refuses a start on what the store holds (another account than its keys'), or
    on a setting checked once it is open (an address in use, a quorum its custodians
    cannot meet), refuses it before the schema is brought forward: the store stays one the
    build before can open, and no upgrade is left on it for a later Startup record."""
    from conftest import start_dev, client
    data = os.path.join(tmp, "data")
    node = start_dev(["--data-dir", data])
    try:
        client(node).create_key()  # records the store's account
    finally:
        node.cleanup()
    old = older_schema(data)
    args = ["--dev", "--data-dir", data]
    env = dict(DEV_ENV)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1] if why == "listen" else free_port()
        if why == "account":
            args += ["--account-id", "999988887777"]
        if why == "quorum":
            env["HSM_APPROVAL_QUORUM"] = "2"
        err = refused(args + ["--listen", f"127.0.0.1:{port}"], env)
    said = {"account": "(account_id from --account-id)", "listen": "(listen from --listen)",
            "quorum": "(approval_quorum from HSM_APPROVAL_QUORUM)"}[why]
    assert said in err, err
    assert "schema migrated" not in err, err
    assert schema_of(data) == old
    import sqlite3
    db = sqlite3.connect(os.path.join(data, "hsmd.db"))
    try:
        assert db.execute("SELECT count(*) FROM meta WHERE name LIKE 'schema_upgrade%'") \
            .fetchone()[0] == 0
    finally:
        db.close()
    node = start_dev(["--data-dir", data])
    node.cleanup()
    assert schema_of(data) == old + 1


def test_an_upgrade_no_start_said_is_said_by_the_next_one(tmp):
    """An upgrade with no Startup record after it (made by an offline hsmctl command that
    changes the store, or by a start killed before its record) cannot be on that trail:
    the store keeps it until a Startup record says it, so the next start does, once."""
    from conftest import start_dev, HSMCTL
    from helpers import audit_records
    data = os.path.join(tmp, "data")
    start_dev(["--data-dir", data]).cleanup()
    old = older_schema(data)
    p = subprocess.run([HSMCTL, "store", "copy", "--data-dir", data,
                        "--to", "sqlite:" + os.path.join(tmp, "copy")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert schema_of(data) == old + 1
    for _ in range(2):
        start_dev(["--data-dir", data]).cleanup()
    starts = [r["extra"] for r in audit_records(data) if r.get("op") == "Startup"]
    assert len(starts) == 3, starts
    assert starts[1]["schema_migrated_from"] == str(old), starts
    assert "schema_migrated_from" not in starts[2], starts


def test_the_version_names_the_commit_it_was_built_from():
    """hsmd --version, hsmctl version, the Status answer and /metrics' hsmd_build_info say
    the release and, as build metadata, the commit the programs were built from (with
    ".dirty" when the tree had changes), so the trail and a fleet mid-upgrade show it."""
    import re

    from conftest import HSMCTL, start_dev, unsigned_call

    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    git = subprocess.run(["git", "-C", source, "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True)
    want = rf"0\.1\.0\+g{git.stdout.strip()}(\.dirty)?" if git.returncode == 0 else \
        r"0\.1\.0\+unknown"
    version = subprocess.run([HSMD, "--version"], capture_output=True, text=True, check=True)
    assert re.fullmatch(rf"hsmd ({want})\n", version.stdout), (version.stdout, want)
    release = version.stdout.split()[1]
    p = subprocess.run([HSMCTL, "version"], capture_output=True, text=True, check=True)
    assert p.stdout == f"hsmctl {release}\n", p.stdout
    node = start_dev()
    try:
        st, out = unsigned_call(node, "HsmdAdmin.Status", {})
        assert st == 200 and out["Version"] == release, out
        st, body, _ = node.get("/metrics")
        lines = [l for l in body.decode().splitlines() if l.startswith("hsmd_build_info")]
        assert st == 200 and lines == [f'hsmd_build_info{{version="{release}"}} 1'], lines
    finally:
        node.cleanup()


def test_a_data_dir_another_user_owns(tmp):
    """hsmd, as hsmctl, runs only as its data directory's owner: root's hsmd on the node
    user's directory would leave files that user's node cannot open, and would follow the
    links that user may put there (an audit directory pointing elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory to another user")
    data = os.path.join(tmp, "data")
    victim = os.path.join(tmp, "elsewhere")
    os.mkdir(data, 0o700)
    os.mkdir(victim, 0o755)
    os.symlink(victim, os.path.join(data, "audit"))
    os.lchown(os.path.join(data, "audit"), 65534, 65534)
    os.chown(data, 65534, 65534)
    err = refused(["--dev", "--data-dir", data, "--listen", f"127.0.0.1:{free_port()}"])
    assert f"{data} belongs to uid 65534, not to the user hsmd runs as (uid 0)" in err, err
    assert "(data_dir from --data-dir)" in err, err
    assert os.listdir(victim) == [], os.listdir(victim)
