"""Audit retention and records lost from the trail: only retention may start the trail
past seq 1, and only where the chain proves what it deleted.

hsmd runs with clockshift.c preloaded (test_clock_steps.py), which moves its wall
clock, so files can be days or years old without waiting.
"""
import base64
import datetime
import glob
import hashlib
import json
import os
import re
import signal
import subprocess

import pytest

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, signed_call, start_dev
from helpers import Clock, admin, audit_records, eventually, signed_at
from test_audit_server import audit_pem, verify

DAY = 86400


def audit_files(data_dir):
    return sorted(glob.glob(os.path.join(data_dir, "audit", "audit-*.jsonl")))


def start_shifted(clockshift, clock, args, data_dir=None):
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET,
           "LD_PRELOAD": clockshift, "HSM_TEST_CLOCK_SHIFT_FILE": clock.path}
    return Hsmd(["--dev", "--backup-interval-seconds", "0"] + list(args), env=env,
                data_dir=data_dir)


def shifted_admin(server, clock_s, op, body):
    """An HsmdAdmin call signed at the node's shifted time (SigV4 checks the date)."""
    when = datetime.datetime.utcnow() + datetime.timedelta(seconds=clock_s)
    r = signed_at(server, when, "HsmdAdmin." + op, body)
    assert r.status_code == 200, (op, r.status_code, r.text)


def gauge(server, name):
    """An unlabelled sample of /metrics, or None when there is none."""
    st, body, _ = server.get("/metrics")
    assert st == 200
    m = re.search(rb"^" + name.encode() + rb" (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def records_of_op(data_dir, op):
    return [r for r in audit_records(data_dir) if r.get("op") == op]


def test_retention_does_not_pass_a_file_deleted_by_hand_off_as_retention(clockshift, tmp_path):
    """File A (two days old) has expired under audit_retention_days = 1; file B after it,
    of today, is deleted by hand while hsmd is stopped.  At the next start retention
    must not delete A and state the first record of C, the file after the gap, as the
    floor: the trail would then verify as if retention had deleted A and B.  It deletes
    nothing, says so in /metrics, and verify still names B's records as missing."""
    args = ["--audit-retention-days", "1", "--audit-rotate-seconds", "60"]
    clock = Clock(str(tmp_path / "shift"))
    clock.set(-2 * DAY)
    server = start_shifted(clockshift, clock, args)
    data = server.data_dir
    try:
        for i in range(3):
            shifted_admin(server, -2 * DAY, "AuditHash", {"Value": f"a{i}"})
        clock.set(-2 * DAY + 70)  # A is older than the rotation age: it ends, B begins
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        for i in range(2):
            shifted_admin(server, -2 * DAY + 70, "AuditHash", {"Value": f"b{i}"})
        clock.set(0)  # B ends now, C begins
        assert eventually(lambda: len(audit_files(data)) == 3, 10), audit_files(data)
        admin(server, "AuditHash", {"Value": "c"})
        pem = audit_pem(server, str(tmp_path))
        server.stop()
        a, b, _ = audit_files(data)
        os.unlink(b)
        res = verify(server, pubkey=pem)
        assert res.returncode == 1 and "are missing" in res.stdout, res.stdout

        again = start_shifted(clockshift, clock, args, data_dir=data)
        try:
            # The pass at start: it deletes, or it says why not.
            assert eventually(lambda: gauge(again, "hsmd_audit_retention_blocked") == 1
                              or gauge(again, "hsmd_audit_files_expired_total"), 15)
            blocked = gauge(again, "hsmd_audit_retention_blocked")
            log = again.read_log()
        finally:
            again.stop()
        assert os.path.exists(a), "retention deleted the file before the gap"
        assert blocked == 1 and "audit retention deletes nothing: records" in log, log
        assert not records_of_op(data, "AuditFilesExpired")
        assert not [r for r in audit_records(data) if r["type"] == "checkpoint"
                    and r["checkpoint"]["reason"] == "retention"]
        res = verify(server, pubkey=pem)
        assert res.returncode == 1, res.stdout
        assert "result: INVALID" in res.stdout and "are missing" in res.stdout, res.stdout
        assert "deleted by retention" not in res.stdout, res.stdout
    finally:
        server.cleanup()


def test_a_floor_is_never_taken_from_the_oldest_file_name(clockshift, tmp_path):
    """hsmd is killed after a rotation, before the new file B holds a checkpoint, and
    file A before it is deleted by hand.  No checkpoint is left to state the floor:
    the next start must keep stating every record from seq 1 (A's records are a loss),
    not B's first seq, or retention later deletes B under a signed retention
    checkpoint and the trail verifies as if retention had deleted A."""
    args = ["--audit-retention-days", "1", "--audit-rotate-seconds", "60"]
    clock = Clock(str(tmp_path / "shift"))
    clock.set(-3 * DAY)
    server = start_shifted(clockshift, clock, args)
    data = server.data_dir
    try:
        for i in range(3):
            shifted_admin(server, -3 * DAY, "AuditHash", {"Value": f"a{i}"})
        clock.set(-3 * DAY + 70)  # A ends, B begins
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        for i in range(2):
            shifted_admin(server, -3 * DAY + 70, "AuditHash", {"Value": f"b{i}"})
        server.stop(signal.SIGKILL)
        a, b = audit_files(data)
        assert not [r for r in audit_records(data) if r["type"] == "checkpoint"
                    and r["seq"] > int(os.path.basename(b)[6:-6])], "B holds a checkpoint"
        os.unlink(a)
        again = start_shifted(clockshift, clock, args, data_dir=data)
        again.stop()
        floors = [r["checkpoint"].get("kept_from") for r in audit_records(data)
                  if r["type"] == "checkpoint"]
        assert floors and set(floors) == {1}, floors

        clock.set(0)  # B ends (rotation), C begins
        third = start_shifted(clockshift, clock, args, data_dir=data)
        try:
            pem = audit_pem(third, str(tmp_path))
            admin(third, "AuditHash", {"Value": "c"})
            assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        finally:
            third.stop()
        clock.set(2 * DAY)  # B has expired
        fourth = start_shifted(clockshift, clock, args, data_dir=data)
        try:
            assert eventually(lambda: gauge(fourth, "hsmd_audit_retention_blocked") == 1
                              or gauge(fourth, "hsmd_audit_files_expired_total"), 15)
            blocked = gauge(fourth, "hsmd_audit_retention_blocked")
            log = fourth.read_log()
        finally:
            fourth.stop()
        assert os.path.exists(b), "retention deleted the file after the deleted one"
        assert blocked == 1 and "records 1 to " in log, log
        assert not [r for r in audit_records(data) if r["type"] == "checkpoint"
                    and r["checkpoint"]["reason"] == "retention"]
        res = verify(server, pubkey=pem)
        assert res.returncode == 1 and "result: INVALID" in res.stdout, res.stdout
        assert "deleted by retention" not in res.stdout, res.stdout
    finally:
        server.cleanup()


@pytest.mark.parametrize("forged_sig", [False, True])
def test_a_checkpoint_added_while_stopped_sets_no_floor(clockshift, tmp_path, forged_sig):
    """File A is deleted by hand while hsmd is stopped, and a retention checkpoint
    stating B's first seq as the floor is appended to B: unsigned, or with a
    signature that is not the node's.  Retention must not take that floor and delete B
    as expired under its own signed checkpoint: it deletes nothing, and says so."""
    args = ["--audit-retention-days", "1", "--audit-rotate-seconds", "60"]
    clock = Clock(str(tmp_path / "shift"))
    clock.set(-3 * DAY)
    server = start_shifted(clockshift, clock, args)
    data = server.data_dir
    try:
        for i in range(3):
            shifted_admin(server, -3 * DAY, "AuditHash", {"Value": f"a{i}"})
        clock.set(-3 * DAY + 70)  # A ends, B begins
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        shifted_admin(server, -3 * DAY + 70, "AuditHash", {"Value": "b"})
        server.stop()
        a, b = audit_files(data)
        os.unlink(a)
        with open(b, "rb") as f:
            last = f.read().splitlines()[-1]
        rec = json.loads(last)
        ckpt = {"reason": "retention", "kept_from": int(os.path.basename(b)[6:-6]),
                "trail_format": 2}
        if forged_sig:
            ckpt.update(signed=True, alg="Ed25519", sig=base64.b64encode(b"Z" * 64).decode())
        else:
            ckpt.update(signed=False, why="sealed")
        forged = {"seq": rec["seq"] + 1, "time": rec["time"], "node": rec["node"],
                  "type": "checkpoint", "checkpoint": ckpt,
                  "prev": hashlib.sha256(last).hexdigest()}
        with open(b, "a") as f:
            f.write(json.dumps(forged, separators=(",", ":")) + "\n")

        clock.set(0)  # B ends (rotation), C begins
        again = start_shifted(clockshift, clock, args, data_dir=data)
        try:
            admin(again, "AuditHash", {"Value": "c"})
            assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        finally:
            again.stop()
        clock.set(2 * DAY)  # B has expired
        third = start_shifted(clockshift, clock, args, data_dir=data)
        try:
            assert eventually(lambda: gauge(third, "hsmd_audit_retention_blocked") == 1
                              or gauge(third, "hsmd_audit_files_expired_total"), 15)
            blocked = gauge(third, "hsmd_audit_retention_blocked")
            log = third.read_log()
        finally:
            third.stop()
        assert os.path.exists(b), "retention deleted B under a floor it did not sign"
        assert blocked == 1 and "audit retention deletes nothing" in log, log
        assert not records_of_op(data, "AuditFilesExpired")
    finally:
        server.cleanup()


def test_a_trail_lost_under_the_node_never_verifies_as_retention(tmp_path):
    """The whole trail deleted under a running node: the next request's sync finds its
    file gone, and the node goes on in a new file past seq 1.  It records the loss at
    once (AuditRecordsLost, the range, then a checkpoint), so verify --live reports the
    records missing; and after a kill -9 before the next interval checkpoint and a
    restart, the node keeps the floor its checkpoints stated (seq 1), not the oldest
    file's, so verify still reports a deletion, never retention."""
    server = start_dev(["--backup-interval-seconds", "0"])
    data = server.data_dir
    try:
        for i in range(10):
            admin(server, "AuditHash", {"Value": f"r{i}"})
        pem = audit_pem(server, str(tmp_path))
        for path in audit_files(data):
            os.unlink(path)
        # The first request's record goes to the deleted file; its sync finds it gone.
        signed_call(server, "HsmdAdmin.AuditHash", {"Value": "after"})
        # The writer notes the outage's end, then writes the "lost" checkpoint: the kill
        # below must not come between the two (the trail's end is asserted after it).
        assert eventually(lambda: [r for r in audit_records(data) if r["type"] == "checkpoint"
                                   and r["checkpoint"]["reason"] == "lost"], 15), \
            server.read_log()
        first = min(r["seq"] for r in audit_records(data))
        assert first > 1
        live = verify(server, pubkey=pem, live=True)
        assert live.returncode == 1 and "result: INVALID" in live.stdout, live.stdout
        assert f"records 1 to {first - 1}" in live.stdout, live.stdout
        server.stop(signal.SIGKILL)  # before the next interval checkpoint

        again = Hsmd(["--dev", "--backup-interval-seconds", "0"],
                     env={"HSM_DEV_ACCESS_KEY_ID": DEV_AKID,
                          "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}, data_dir=data)
        again.stop()
        ckpts = [r["checkpoint"] for r in audit_records(data) if r["type"] == "checkpoint"]
        assert ckpts and all(c["kept_from"] == 1 for c in ckpts), ckpts
        res = verify(server, pubkey=pem)
        assert res.returncode == 1 and "result: INVALID" in res.stdout, res.stdout
        assert f"records 1 to {first - 1}" in res.stdout, res.stdout
        assert "deleted by retention" not in res.stdout, res.stdout
        # The loss is on the record, named, and a checkpoint followed it at once.
        lost = records_of_op(data, "AuditRecordsLost")
        assert len(lost) == 1 and lost[0]["extra"]["first_seq"] == "1", lost
        assert int(lost[0]["extra"]["last_seq"]) == first - 1, lost
        after = [r for r in audit_records(data) if r["seq"] > lost[0]["seq"]]
        assert [r["op"] for r in after[:1]] == ["AuditOutageEnded"], after[:2]
        assert after[1]["type"] == "checkpoint" and after[1]["checkpoint"]["reason"] == "lost"
    finally:
        server.cleanup()


def retention_pass_two_days_on(clockshift, clock, args, data, tmp_path):
    """Starts the node again with the clock two days on and waits for its first retention
    pass: whether it was blocked, the node's log, and the audit public key's PEM file."""
    again = start_shifted(clockshift, clock, args, data_dir=data)
    try:
        r = signed_at(again, datetime.datetime.utcnow() + datetime.timedelta(days=2),
                      "HsmdAdmin.AuditPublicKey", {})
        assert r.status_code == 200, r.text
        pem = os.path.join(str(tmp_path), "audit.pem")
        with open(pem, "w") as f:
            f.write(r.json()["PublicKey"])
        assert eventually(lambda: gauge(again, "hsmd_audit_retention_blocked") == 1
                          or gauge(again, "hsmd_audit_files_expired_total"), 15)
        return gauge(again, "hsmd_audit_retention_blocked"), again.read_log(), pem
    finally:
        again.stop()


def test_retention_passes_a_loss_the_node_recorded(clockshift, tmp_path):
    """The trail is deleted under a running node: the node records the loss
    (AuditRecordsLost naming the records, then a signed checkpoint) and goes on past
    seq 1.  Verify reports the records missing while the file recording the loss is
    there; once that file has expired, retention deletes it (nothing can put the
    records back, so blocking for good would only let the trail grow), and the trail
    verifies as starting where retention left it."""
    args = ["--audit-retention-days", "1", "--audit-rotate-seconds", "60"]
    clock = Clock(str(tmp_path / "shift"))
    clock.set(-3 * DAY)
    server = start_shifted(clockshift, clock, args)
    data = server.data_dir
    try:
        for i in range(3):
            shifted_admin(server, -3 * DAY, "AuditHash", {"Value": f"a{i}"})
        for path in audit_files(data):
            os.unlink(path)
        # The next request's record goes to the deleted file; its sync finds it gone.
        signed_at(server, datetime.datetime.utcnow() - datetime.timedelta(days=3),
                  "HsmdAdmin.AuditHash", {"Value": "after"})
        assert eventually(lambda: [r for r in audit_records(data) if r["type"] == "checkpoint"
                                   and r["checkpoint"]["reason"] == "lost"], 15)
        lost = records_of_op(data, "AuditRecordsLost")
        assert len(lost) == 1 and lost[0]["extra"]["first_seq"] == "1", lost
        clock.set(-3 * DAY + 70)  # the file recording the loss ends
        shifted_admin(server, -3 * DAY + 70, "AuditHash", {"Value": "b"})
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        server.stop()
        b, _ = audit_files(data)

        clock.set(2 * DAY)  # B has expired
        blocked, log, pem = retention_pass_two_days_on(clockshift, clock, args, data, tmp_path)
        assert blocked == 0, log
        assert not os.path.exists(b), "retention kept the expired file after the loss"
        assert "were lost and recorded so (AuditRecordsLost)" in log, log
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "deleted by retention" in res.stdout, res.stdout
    finally:
        server.cleanup()


def rechained(lines):
    """Lines (each ending with ,"prev":"<64 hex>"} and a newline), each made to chain to
    the one before again: what someone who edits one of them does to the rest."""
    out = lines[:1]
    for line in lines[1:]:
        prev = hashlib.sha256(out[-1][:-1]).hexdigest().encode()
        out.append(line[:-67] + prev + line[-3:])
    return out


@pytest.mark.parametrize("changed", [False, True])
def test_retention_passes_records_written_again_after_a_copy_put_back(clockshift, tmp_path,
                                                                      changed):
    """The live file A is replaced by a copy of itself while records written into it wait
    for their fsync: the copy holds them, and the node writes them again at the start of
    its new file B before it records the loss of the others.  Nothing is missing, so
    once A and B have expired retention deletes them (B's first records, the same bytes
    as A's last, do not break the chain it checks), and the trail verifies as starting
    where retention left it.  Changed (a byte of one of them, the rest chained again),
    they are no longer A's records: retention deletes nothing."""
    args = ["--audit-retention-days", "1", "--audit-rotate-seconds", "60",
            "--audit-fsync-ms", "10000", "--audit-fsync-max-lag-ms", "20000"]
    clock = Clock(str(tmp_path / "shift"))
    clock.set(-3 * DAY)
    server = start_shifted(clockshift, clock, args)
    data = server.data_dir
    try:
        # Synced as it is written (every checkpoint is): the records below are not yet.
        assert eventually(lambda: [r for r in audit_records(data) if r["type"] == "checkpoint"
                                   and r["checkpoint"]["reason"] == "signer"], 25)
        for i in range(3):
            shifted_admin(server, -3 * DAY, "AuditHash", {"Value": f"a{i}"})
        (a,) = audit_files(data)
        with open(a, "rb") as f:
            copied = f.read()
        with open(a + ".new", "wb") as f:
            f.write(copied)
        os.chmod(a + ".new", 0o600)
        os.replace(a + ".new", a)
        signed_at(server, datetime.datetime.utcnow() - datetime.timedelta(days=3),
                  "HsmdAdmin.AuditHash", {"Value": "after"})
        assert eventually(lambda: [r for r in audit_records(data) if r["type"] == "checkpoint"
                                   and r["checkpoint"]["reason"] == "lost"], 15)
        (lost,) = records_of_op(data, "AuditRecordsLost")
        last_a = json.loads(copied.splitlines()[-1])["seq"]
        assert int(lost["extra"]["last_seq"]) < last_a, "no record was written again"
        clock.set(-3 * DAY + 70)  # B ends
        shifted_admin(server, -3 * DAY + 70, "AuditHash", {"Value": "b"})
        assert eventually(lambda: len(audit_files(data)) == 3, 10), audit_files(data)
        server.stop()
        _, b, _ = audit_files(data)
        if changed:
            with open(b, "rb") as f:
                lines = f.read().splitlines(keepends=True)
            lines[0] = lines[0].replace(b'"op":"', b'"op":"X', 1)
            assert b'"op":"X' in lines[0], lines[0]
            with open(b, "wb") as f:
                f.write(b"".join(rechained(lines)))

        clock.set(2 * DAY)  # A and B have expired
        blocked, log, pem = retention_pass_two_days_on(clockshift, clock, args, data, tmp_path)
        if changed:
            assert blocked == 1, log
            assert f"{os.path.basename(b)} does not continue {os.path.basename(a)}" in log, log
            assert os.path.exists(a) and os.path.exists(b)
            return
        assert blocked == 0, log
        assert not os.path.exists(a) and not os.path.exists(b), "retention kept them"
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "deleted by retention" in res.stdout, res.stdout
    finally:
        server.cleanup()


def test_hsmctl_offline_commands_run_no_retention(clockshift, tmp_path):
    """hsmctl's offline commands write to the node's trail without the node's
    configuration: they must not apply retention (with the default 2557 days and no
    copy directory) to files the node keeps (audit_retention_days = 36500)."""
    copies = str(tmp_path / "copies")
    os.mkdir(copies)
    args = ["--audit-retention-days", "36500", "--audit-copy-dir", copies,
            "--audit-rotate-seconds", "60"]
    clock = Clock(str(tmp_path / "shift"))
    clock.set(-8 * 365 * DAY)
    server = start_shifted(clockshift, clock, args)
    data = server.data_dir
    try:
        shifted_admin(server, -8 * 365 * DAY, "AuditHash", {"Value": "eight years ago"})
        clock.set(-8 * 365 * DAY + 100)
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        clock.set(0)
        assert eventually(lambda: len(audit_files(data)) == 3, 10), audit_files(data)
        admin(server, "AuditHash", {"Value": "today"})
        copy_files = lambda: sorted(glob.glob(os.path.join(copies, "**", "audit-*.jsonl"),
                                              recursive=True))
        assert eventually(lambda: len(copy_files()) >= 2, 10), copy_files()
        server.stop()
        before = audit_files(data)
        copied = copy_files()
        share = os.path.join(data, "dev-unseal.share")
        out = subprocess.run([HSMCTL, "unseal", "--data-dir", data, share],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert set(before) <= set(audit_files(data)), (before, audit_files(data))
        assert copy_files() == copied
        assert not records_of_op(data, "AuditFilesExpired")
        res = subprocess.run([HSMCTL, "audit", "verify", os.path.join(data, "audit")],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "deleted by retention" not in res.stdout, res.stdout
    finally:
        server.cleanup()


def test_offline_hsmctl_keeps_the_floor_retention_left(clockshift, tmp_path):
    """After retention deleted files, an offline hsmctl command (the backup before an
    upgrade, rekey, unseal --data-dir) writes to the node's trail under its own node
    id.  It must carry the floor of the node's signed retention checkpoint forward, and
    the node must take the floor from hsmctl's signed checkpoint in turn: the trail
    stays VALID through both, as "deleted by retention"."""
    args = ["--audit-retention-days", "1", "--audit-rotate-seconds", "60"]
    clock = Clock(str(tmp_path / "shift"))
    clock.set(-3 * DAY)
    server = start_shifted(clockshift, clock, args)
    data = server.data_dir
    try:
        for i in range(3):
            shifted_admin(server, -3 * DAY, "AuditHash", {"Value": f"a{i}"})
        clock.set(-3 * DAY + 70)  # A ends, B begins
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        server.stop()
        a = audit_files(data)[0]

        clock.set(0)  # A has expired
        again = start_shifted(clockshift, clock, args, data_dir=data)
        try:
            pem = audit_pem(again, str(tmp_path))
            assert eventually(lambda: gauge(again, "hsmd_audit_files_expired_total"), 15)
        finally:
            again.stop()
        assert not os.path.exists(a)
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "deleted by retention" in res.stdout, res.stdout

        share = os.path.join(data, "dev-unseal.share")
        out = subprocess.run([HSMCTL, "unseal", "--data-dir", data, share],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, LD_PRELOAD=clockshift,
                                      HSM_TEST_CLOCK_SHIFT_FILE=clock.path))
        assert out.returncode == 0, out.stdout + out.stderr
        assert "not signed by this node" not in out.stdout + out.stderr, out.stderr
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "deleted by retention" in res.stdout, res.stdout

        third = start_shifted(clockshift, clock, args, data_dir=data)
        try:
            admin(third, "AuditHash", {"Value": "after hsmctl"})
            log = third.read_log()
        finally:
            third.stop()
        assert "not signed by this node" not in log, log
        floors = [r["checkpoint"].get("kept_from") for r in audit_records(data)
                  if r["type"] == "checkpoint"]
        assert 1 not in floors[-2:], floors
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "deleted by retention" in res.stdout, res.stdout
    finally:
        server.cleanup()


def test_another_nodes_floor_is_not_taken_through_hsmctl(clockshift, tmp_path):
    """Node A's trail, whose retention raised its floor, put in place of node C's: an
    offline hsmctl command carries A's floor forward in its own signed checkpoint, but
    C must not take it over through hsmctl's checkpoint (the floor came from A, not
    from C): C states every record from seq 1 kept, and verify reports the records
    before A's floor missing instead of deleted by retention."""
    args = ["--audit-retention-days", "1", "--audit-rotate-seconds", "60"]
    clock = Clock(str(tmp_path / "shift"))
    clock.set(-3 * DAY)
    server = start_shifted(clockshift, clock, args + ["--node-id", "node-a"])
    data = server.data_dir
    try:
        for i in range(3):
            shifted_admin(server, -3 * DAY, "AuditHash", {"Value": f"a{i}"})
        clock.set(-3 * DAY + 70)
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        server.stop()
        clock.set(0)
        again = start_shifted(clockshift, clock, args + ["--node-id", "node-a"], data_dir=data)
        try:
            pem = audit_pem(again, str(tmp_path))
            assert eventually(lambda: gauge(again, "hsmd_audit_files_expired_total"), 15)
        finally:
            again.stop()
        share = os.path.join(data, "dev-unseal.share")
        out = subprocess.run([HSMCTL, "unseal", "--data-dir", data, share],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, LD_PRELOAD=clockshift,
                                      HSM_TEST_CLOCK_SHIFT_FILE=clock.path))
        assert out.returncode == 0, out.stdout + out.stderr
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "deleted by retention" in res.stdout, res.stdout

        other = start_shifted(clockshift, clock, args + ["--node-id", "node-c"], data_dir=data)
        try:
            admin(other, "AuditHash", {"Value": "node c"})
            log = other.read_log()
        finally:
            other.stop()
        assert "not signed by this node" in log, log
        floors = [r["checkpoint"].get("kept_from") for r in audit_records(data)
                  if r["type"] == "checkpoint" and r["node"] == "node-c"]
        assert floors and set(floors) == {1}, floors
        res = verify(server, pubkey=pem)
        assert res.returncode == 1 and "result: INVALID" in res.stdout, res.stdout
        assert "deleted by retention" not in res.stdout, res.stdout
    finally:
        server.cleanup()


def test_a_clock_set_ahead_before_a_start_cannot_expire_the_trail(clockshift, tmp_path):
    """hsmd started with its wall clock eight years ahead (past the default retention of
    seven), then again with the clock right: retention must not take the current files
    for expired (it counts at most a week of the time since the trail's newest record,
    holds, says so in the log and in hsmd_audit_retention_held), and verify and report,
    which the trail still satisfies, warn that the records' times went back."""
    args = ["--audit-rotate-seconds", "60"]
    clock = Clock(str(tmp_path / "shift"))
    server = start_shifted(clockshift, clock, args)
    data = server.data_dir
    ahead = 8 * 366 * DAY
    try:
        admin(server, "AuditHash", {"Value": "a"})
        clock.set(70)  # the first file is older than the rotation age: it ends
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        shifted_admin(server, 70, "AuditHash", {"Value": "b"})
        server.stop()
        before = audit_files(data)
        clock.set(ahead)
        second = start_shifted(clockshift, clock, args, data_dir=data)
        try:
            assert eventually(lambda: gauge(second, "hsmd_audit_retention_held") == 1
                              or gauge(second, "hsmd_audit_files_expired_total"), 15)
            held = gauge(second, "hsmd_audit_retention_held")
            log = second.read_log()
        finally:
            second.stop()
        assert set(before) <= set(audit_files(data)), "retention deleted current files"
        assert held == 1 and "audit retention holds: at start the wall clock" in log, log
        assert not records_of_op(data, "AuditFilesExpired")
        clock.set(0)
        third = start_shifted(clockshift, clock, args, data_dir=data)
        third.stop()
        files = audit_files(data)
        res = subprocess.run([HSMCTL, "audit", "verify"] + files, capture_output=True,
                             text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "result: VALID, WITH A WARNING" in res.stdout, res.stdout
        # The first record of the third run, dated eight years before the second run's last.
        m = re.search(r"^WARNING: the records' times go back: \d+ record\(s\) dated more than "
                      r"300 s before an earlier one, the first seq (\d+) \((\S+)\) after seq "
                      r"(\d+) \((\S+)\)", res.stdout, re.M)
        assert m and int(m.group(1)) > int(m.group(3)), res.stdout
        assert m.group(4) > m.group(2), res.stdout
        rep = subprocess.run([HSMCTL, "audit", "report", "--json"] + files,
                             capture_output=True, text=True)
        assert rep.returncode == 0, rep.stderr
        back = json.loads(rep.stdout)["verified"]["time_steps_back"]
        assert back["count"] >= 1 and back["time"] < back["after_time"], back
        rep = subprocess.run([HSMCTL, "audit", "report"] + files, capture_output=True,
                             text=True)
        assert "WARNING: the records' times go back" in rep.stdout, rep.stdout
    finally:
        server.cleanup()
