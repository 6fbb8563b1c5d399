"""The wall clock steps while hsmd runs: what each step must not do.

hsmd runs with clockshift.c preloaded, which moves its wall clock (only) by
the seconds the test writes in a file, as a time server or an administrator
stepping the clock would; the monotonic and boot-time clocks go on.
- A step back must not stop the scheduled work (key counts, rotation,
  destruction, backups) for as long as the step.
- A step far ahead must not let audit retention delete the trail: the pass
  deletes nothing and hsmd_audit_retention_held says so.
- Each backup the retention deletes is named in a BackupExpired event.
Requests to hsmd's API are signed with the real time, so a test that moves
the clock more than SigV4's five minutes reads only /metrics and the files.
"""
import glob
import os
import re
import subprocess

import pytest

from conftest import HSMCTL, start_dev
from helpers import admin, audit_records, eventually

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    out = tmp_path_factory.mktemp("clockshift") / "clockshift.so"
    cc = subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(out),
                         os.path.join(HERE, "clockshift.c"), "-ldl", "-lpthread"],
                        capture_output=True, text=True, timeout=120)
    assert cc.returncode == 0, cc.stderr
    return str(out)


class Clock:
    """The shift of a node's wall clock, in whole seconds."""

    def __init__(self, path):
        self.path = path
        self.set(0)

    def set(self, seconds):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(int(seconds)))
        os.replace(tmp, self.path)


def start_shifted(shim, tmp_path, args=()):
    clock = Clock(str(tmp_path / "shift"))
    server = start_dev(list(args), env={"LD_PRELOAD": shim,
                                        "HSM_TEST_CLOCK_SHIFT_FILE": clock.path})
    return server, clock


def gauge(server, name):
    st, body, _ = server.get("/metrics")
    assert st == 200
    m = re.search(rb"^" + name.encode() + rb" (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def test_scheduled_work_goes_on_after_the_clock_steps_back(shim, tmp_path):
    server, clock = start_shifted(shim, tmp_path)
    try:
        assert eventually(lambda: (gauge(server, "hsmd_keys_counted_time_seconds") or 0) > 0, 30)
        before = gauge(server, "hsmd_keys_counted_time_seconds")
        clock.set(-600)
        # The scheduler counts every 5 s: the next count is dated by the stepped clock.
        assert eventually(lambda: gauge(server, "hsmd_keys_counted_time_seconds") < before - 300,
                        30), "the scheduler stopped when the clock stepped back"
    finally:
        server.cleanup()


def test_audit_retention_holds_when_the_clock_jumps_ahead(shim, tmp_path):
    server, clock = start_shifted(shim, tmp_path, ["--audit-retention-days", "1",
                                                   "--audit-rotate-seconds", "60"])
    try:
        audit_dir = os.path.join(server.data_dir, "audit")
        admin(server, "AuditHash", {"Value": "a record"})
        files = sorted(glob.glob(os.path.join(audit_dir, "audit-*.jsonl")))
        assert len(files) == 1
        # Ten years ahead: the current file is 10 years old by the wall clock and rotates;
        # retention then finds every closed file expired, and holds.
        clock.set(3653 * 86400)
        assert eventually(lambda: gauge(server, "hsmd_audit_retention_held") == 1, 30), \
            "retention did not hold"
        assert set(files) <= set(glob.glob(os.path.join(audit_dir, "audit-*.jsonl")))
        assert gauge(server, "hsmd_audit_files_expired_total") == 0
        clock.set(0)
        server.stop()
        assert not any(r.get("op") == "AuditFilesExpired" for r in audit_records(server.data_dir))
        verify = subprocess.run([HSMCTL, "audit", "verify", audit_dir], capture_output=True,
                                text=True, timeout=120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        server.cleanup()


def test_each_backup_the_retention_deletes_is_audited(shim, tmp_path):
    server, clock = start_shifted(shim, tmp_path, ["--backup-retention-days", "1",
                                                   "--backup-interval-seconds", "86400"])
    try:
        for _ in range(16):  # more names than one audit field would hold
            admin(server, "CreateBackup", {})
        backup_dir = os.path.join(server.data_dir, "backups")

        def backups():
            return {os.path.basename(p) for p in glob.glob(os.path.join(backup_dir, "*.hsmbak"))}
        before = backups()
        assert len(before) >= 16  # and the one made at start, if it was due
        # Two days later (by the node's clock) the daily backup is due, and every backup
        # made before is older than a day: the seven newest stay, the others go, named.
        clock.set(2 * 86400)

        def expired_events():
            return [r for r in audit_records(server.data_dir) if r.get("op") == "BackupExpired"]
        want = len(before) + 1 - 7
        assert eventually(lambda: len(expired_events()) >= want, 30), expired_events()
        events = expired_events()
        names = {r["extra"]["file"] for r in events}
        assert len(events) == len(names) == want, (events, before)
        assert all(r["extra"]["dir"] == "backup_dir" for r in events)
        assert names <= before and not names & backups(), (names, before)
    finally:
        server.cleanup()
