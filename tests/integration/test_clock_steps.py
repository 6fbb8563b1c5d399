"""The wall clock steps while hsmd runs: what each step must not do; and what else
must not stop, or hide a failure of, the scheduler's rounds.

hsmd runs with clockshift.c preloaded, which moves its wall clock (only) by
the seconds the test writes in a file, as a time server or an administrator
stepping the clock would; the monotonic and boot-time clocks go on.
- A step back must not stop the scheduled work (key counts, rotation,
  destruction, backups) for as long as the step.
- A step far ahead must not let audit retention delete the trail: the pass
  deletes nothing and hsmd_audit_retention_held says so.
- Each backup the retention deletes is named in a BackupExpired event.
- Recounts asked for between rounds (certificate imports and deletions) must
  not put the next round off, and a key whose scheduled work fails must be
  counted in hsmd_scheduler_failures_total, the others done.
- A key whose deletion date passed over an hour ago and that still exists is
  counted in hsmd_keys_deletion_overdue, until it is destroyed.
- A key rotated on demand (offline) after its date passed while its node was down is
  not rotated again when the node starts, and its next date counts from that rotation.
Requests to hsmd's API are signed with the real time, so a test that moves
the clock more than SigV4's five minutes reads only /metrics and the files.
"""
import base64
import datetime
import glob
import os
import re
import shutil
import sqlite3
import subprocess
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, client, signed_call, start_dev
from helpers import Clock, admin, audit_records, call_ok, eventually, signed_at


def start_shifted(clockshift, tmp_path, args=(), elapsed=False):
    """elapsed: the shifts are time that passes (the boot-time clock moves too), not steps
    of the wall clock, which hold the scheduled key work and audit retention."""
    clock = Clock(str(tmp_path / "shift"))
    env = {"LD_PRELOAD": clockshift, "HSM_TEST_CLOCK_SHIFT_FILE": clock.path}
    if elapsed:
        env["HSM_TEST_CLOCK_SHIFT_ELAPSED"] = "1"
    server = start_dev(list(args), env=env)
    return server, clock


def gauge(server, name):
    st, body, _ = server.get("/metrics")
    assert st == 200
    m = re.search(rb"^" + name.encode() + rb" (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


def test_scheduled_work_goes_on_after_the_clock_steps_back(clockshift, tmp_path):
    server, clock = start_shifted(clockshift, tmp_path)
    try:
        assert eventually(lambda: (gauge(server, "hsmd_keys_counted_time_seconds") or 0) > 0, 30)
        before = gauge(server, "hsmd_keys_counted_time_seconds")
        clock.set(-600)
        # The scheduler counts every 5 s: the next count is dated by the stepped clock.
        assert eventually(lambda: gauge(server, "hsmd_keys_counted_time_seconds") < before - 300,
                        30), "the scheduler stopped when the clock stepped back"
    finally:
        server.cleanup()


def test_audit_retention_holds_when_the_clock_jumps_ahead(clockshift, tmp_path):
    server, clock = start_shifted(clockshift, tmp_path, ["--audit-retention-days", "1",
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


def test_each_backup_the_retention_deletes_is_audited(clockshift, tmp_path):
    # Time that passes (a wall clock stepped ahead holds the retention: below).
    server, clock = start_shifted(clockshift, tmp_path, ["--backup-retention-days", "1",
                                                   "--backup-interval-seconds", "86400"],
                                  elapsed=True)
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


def test_a_clock_stepped_ahead_deletes_no_backup(clockshift, tmp_path):
    """The wall clock stepped two days ahead of the time hsmd has run: every backup but the
    seven newest would look expired, here and in backup_copy_dir, and a deleted backup
    cannot be had back.  The retention holds, as audit retention and the key work do; the
    backup that falls due is still made, and the log says why nothing was deleted."""
    copy_dir = tmp_path / "dr"
    copy_dir.mkdir()
    server, clock = start_shifted(clockshift, tmp_path, ["--backup-retention-days", "1",
                                                   "--backup-interval-seconds", "86400",
                                                   "--backup-copy-dir", str(copy_dir)])
    try:
        for _ in range(9):
            admin(server, "CreateBackup", {})
        backup_dir = os.path.join(server.data_dir, "backups")

        def backups(d):
            return {os.path.basename(p) for p in glob.glob(os.path.join(str(d), "*.hsmbak"))}
        before = backups(backup_dir)
        assert len(before) >= 9 and backups(copy_dir) == before

        def scheduled():
            return [r for r in audit_records(server.data_dir)
                    if r.get("op") == "Backup" and r["extra"].get("trigger") == "scheduled"]
        runs = len(scheduled())  # the one made at start, if it was due
        clock.set(2 * 86400)
        # The daily backup is due by the stepped clock; its event comes after its retention.
        assert eventually(lambda: len(scheduled()) > runs, 30), scheduled()
        assert scheduled()[-1]["outcome"] == "success", scheduled()
        assert not [r for r in audit_records(server.data_dir) if r.get("op") == "BackupExpired"]
        assert backups(backup_dir) > before and backups(copy_dir) > before
        assert gauge(server, "hsmd_scheduler_clock_held") == 1
        assert "backup retention holds: the wall clock is" in server.read_log()
        assert gauge(server, "hsmd_backups_expired_total") == 0
        assert gauge(server, "hsmd_backup_failures_total") == 0
        assert gauge(server, "hsmd_backup_copy_failures_total") == 0
    finally:
        server.cleanup()


def test_a_failed_backup_is_tried_again_after_the_clock_steps_back(clockshift, tmp_path):
    """A scheduled backup that failed is tried again once the interval (at most 5 minutes)
    has passed.  A wall clock stepped back meanwhile (a time server correcting a clock that
    ran ahead) must not put that retry, and every scheduled backup with it, off by the
    whole step: here an hour."""
    backups = tmp_path / "backups"
    server, clock = start_shifted(clockshift, tmp_path, ["--backup-interval-seconds", "1",
                                                   "--backup-dir", str(backups)])
    try:
        # Usable at start (it is checked then), a file in its place by the next backup.
        shutil.rmtree(backups)
        backups.write_text("")
        assert eventually(lambda: gauge(server, "hsmd_backup_failures_total") >= 1, 30)
        clock.set(-3600)
        backups.unlink()
        backups.mkdir()
        made = gauge(server, "hsmd_backups_created_total")
        assert eventually(lambda: gauge(server, "hsmd_backups_created_total") > made, 30), \
            "no scheduled backup in the 30 s after the clock stepped back an hour"
        assert glob.glob(str(backups / "*.hsmbak"))
    finally:
        server.cleanup()


def self_signed():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recount")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def test_recounts_between_rounds_do_not_put_the_round_off(tmp_path):
    """Each certificate import or deletion asks for the gauges to be counted again at
    once; a stream of them, closer together than the interval, must leave the full
    round (rotation, destruction, backups) on its schedule: here the node's first
    scheduled backup, due at its first full round, 10 s after start."""
    server = start_dev(["--scheduler-interval-seconds", "10"])
    try:
        started = time.monotonic()
        backup_dir = os.path.join(server.data_dir, "backups")
        cert = self_signed()
        made = []
        while time.monotonic() - started < 30 and not made:
            cid = admin(server, "ImportCertificate", {"Certificate": cert})["CertificateId"]
            admin(server, "DeleteCertificate", {"CertificateId": cid})
            time.sleep(1.5)
            made = glob.glob(os.path.join(backup_dir, "*.hsmbak"))
        assert made, "no scheduled backup in 30 s of recounts, with a 10 s interval"
    finally:
        server.cleanup()


def test_a_failing_key_is_counted_and_the_others_done(clockshift, tmp_path):
    """Two keys due for rotation, one of which the store refuses to change: the other
    rotates, and the failure is counted (hsmd_scheduler_failures_total, which the
    README's HsmdSchedulerFailing alert watches), logged and audited."""
    server, clock = start_shifted(clockshift, tmp_path, elapsed=True)
    try:
        kms = client(server)
        keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2)]
        for k in keys:
            st, out = signed_call(server, "TrentService.EnableKeyRotation",
                                  {"KeyId": k, "RotationPeriodInDays": 1})
            assert st == 200, out
        failing, rotating = keys
        db = sqlite3.connect(os.path.join(server.data_dir, "hsmd.db"), timeout=10)
        db.execute("CREATE TRIGGER refuse_one BEFORE UPDATE ON keys WHEN OLD.id = '%s' "
                   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END" % failing)
        db.commit()
        db.close()
        assert gauge(server, "hsmd_scheduler_failures_total") == 0
        clock.set(2 * 86400)  # both keys' rotation dates pass

        def rotations():
            return {(r.get("key_id"), r.get("outcome")) for r in audit_records(server.data_dir)
                    if r.get("op") == "RotateKey"}
        assert eventually(lambda: {(failing, "error"), (rotating, "success")} <= rotations(),
                          30), rotations()
        assert eventually(lambda: gauge(server, "hsmd_scheduler_failures_total") >= 1, 30)
        assert (failing, "success") not in rotations()
        assert "scheduled key work" in server.read_log()
    finally:
        server.cleanup()


def test_a_deletion_that_does_not_happen_is_counted_overdue(clockshift, tmp_path):
    """A key scheduled for deletion whose date passed over an hour ago and that still
    exists (here its destruction keeps failing: the store refuses to change it) is
    counted in hsmd_keys_deletion_overdue, which the README's HsmdDeletionOverdue alert
    watches; once it is destroyed, it is not."""
    server, clock = start_shifted(clockshift, tmp_path, elapsed=True)
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
        db = sqlite3.connect(os.path.join(server.data_dir, "hsmd.db"), timeout=10)
        db.execute("CREATE TRIGGER refuse_one BEFORE UPDATE ON keys WHEN OLD.id = '%s' "
                   "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END" % key)
        db.commit()
        assert eventually(lambda: (gauge(server, "hsmd_keys_counted_time_seconds") or 0) > 0, 30)
        assert gauge(server, "hsmd_keys_deletion_overdue") == 0
        # Past the date, within the hour: due, not yet overdue.
        clock.set(7 * 86400 + 600)
        assert eventually(lambda: gauge(server, "hsmd_scheduler_failures_total") >= 1, 30)
        assert gauge(server, "hsmd_keys_deletion_overdue") == 0
        clock.set(7 * 86400 + 2 * 3600)
        assert eventually(lambda: gauge(server, "hsmd_keys_deletion_overdue") == 1, 30)
        # The store takes the change again: the next round destroys the key.
        db.execute("DROP TRIGGER refuse_one")
        db.commit()
        db.close()

        def destroyed():
            return any(r.get("key_id") == key and r.get("outcome") == "success"
                       for r in audit_records(server.data_dir) if r.get("op") == "DeleteKey")
        assert eventually(lambda: gauge(server, "hsmd_keys_deletion_overdue") == 0, 30)
        assert eventually(destroyed, 10), [r for r in audit_records(server.data_dir)
                                          if r.get("key_id") == key]
    finally:
        server.cleanup()


def test_a_deletion_past_its_date_cannot_be_cancelled(clockshift, tmp_path):
    """Once a key's waiting period has ended it is due for destruction: CancelKeyDeletion
    is refused (KMSInvalidStateException, the key unchanged) even while the scheduler has
    not destroyed it yet (here its destruction is held back by the store).  It used to
    succeed, leaving a key whose destruction was due (and perhaps approved) Disabled,
    ready to be enabled again.  Within the period, cancelling works as before."""
    server, clock = start_shifted(clockshift, tmp_path, elapsed=True)
    try:
        kms = client(server)
        kept, due = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
        kms.schedule_key_deletion(KeyId=kept, PendingWindowInDays=30)
        kms.schedule_key_deletion(KeyId=due, PendingWindowInDays=7)
        db = sqlite3.connect(os.path.join(server.data_dir, "hsmd.db"), timeout=10)
        db.execute("CREATE TRIGGER hold_destruction BEFORE UPDATE ON keys WHEN OLD.id = '%s' "
                   "AND NEW.state = 'Destroyed' BEGIN SELECT RAISE(ABORT, 'held'); END" % due)
        db.commit()
        clock.set(7 * 86400 + 600)
        later = datetime.datetime.utcnow() + datetime.timedelta(seconds=7 * 86400 + 600)
        assert eventually(lambda: gauge(server, "hsmd_scheduler_failures_total") >= 1, 30)
        r = signed_at(server, later, "TrentService.CancelKeyDeletion", {"KeyId": due})
        assert r.status_code == 400, r.text
        assert r.json()["__type"] == "KMSInvalidStateException", r.text
        assert "waiting period ended" in r.json()["message"], r.text
        r = signed_at(server, later, "TrentService.DescribeKey", {"KeyId": due})
        assert r.json()["KeyMetadata"]["KeyState"] == "PendingDeletion", r.text
        r = signed_at(server, later, "TrentService.CancelKeyDeletion", {"KeyId": kept})
        assert r.status_code == 200, r.text
        db.execute("DROP TRIGGER hold_destruction")
        db.commit()
        db.close()

        def destroyed():
            r = signed_at(server, later, "TrentService.DescribeKey", {"KeyId": due})
            return r.status_code == 400 and r.json()["__type"] == "NotFoundException"
        assert eventually(destroyed, 30)
    finally:
        server.cleanup()


def test_a_step_ahead_destroys_expires_and_rotates_nothing(clockshift, tmp_path):
    """A wall clock stepped a year ahead for a moment (a bad time server) is not time that
    passed: the node, which holds audit retention for it, holds its scheduled key work as
    well (destructions, material expiries, rotations), until the clock agrees with the time
    it has run again: here no key pending deletion is destroyed and no rotation schedule
    moves.  It used to destroy and rotate in its next round."""
    server, clock = start_shifted(clockshift, tmp_path, ["--scheduler-interval-seconds", "1"])
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=30)
        rot = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.enable_key_rotation(KeyId=rot)
        nxt = signed_call(server, "TrentService.GetKeyRotationStatus", {"KeyId": rot})[1]
        clock.set(365 * 86400)
        assert eventually(lambda: gauge(server, "hsmd_scheduler_clock_held") == 1, 30)
        time.sleep(3)  # three rounds
        clock.set(0)
        assert eventually(lambda: gauge(server, "hsmd_scheduler_clock_held") == 0, 30)
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
        st, rotations = signed_call(server, "TrentService.ListKeyRotations", {"KeyId": rot})
        assert (st, rotations["Rotations"]) == (200, []), rotations
        assert signed_call(server, "TrentService.GetKeyRotationStatus", {"KeyId": rot})[1] == nxt
        assert not [r for r in audit_records(server.data_dir)
                    if r.get("op") in ("DeleteKey", "RotateKey")]
    finally:
        server.cleanup()


def test_no_approval_request_is_purged_for_its_age_by_a_clock_stepped_ahead(clockshift,
                                                                           tmp_path):
    """Opening an approval request purges those expired over 90 days ago: with the wall
    clock stepped 100 days ahead (a bad time server), not even in the moments before the
    scheduler's next round has seen the step, the earlier requests stay."""
    from conftest import DEV_AKID, DEV_SECRET, Hsmd
    from helpers import new_user
    from test_approvals import deletion_refused, new_key
    first = start_dev()
    users = {n: new_user(first, n, r) for n, r in {"alice": ["custodian"], "bob": ["custodian"],
                                                    "ops": ["crypto-officer"]}.items()}
    first.stop()
    clock = Clock(str(tmp_path / "shift"))
    server = Hsmd(["--dev", "--approval-quorum", "2", "--scheduler-interval-seconds", "10"],
                  env={"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET,
                       "LD_PRELOAD": clockshift, "HSM_TEST_CLOCK_SHIFT_FILE": clock.path},
                  data_dir=first.data_dir)
    try:
        ops = client(server, *users["ops"])
        earlier = deletion_refused(ops, new_key(ops), 7)
        key = new_key(ops)
        shift = 100 * 86400
        clock.set(shift)

        def opened():
            # Signed at the node's new time, which its workers see a moment after the step
            # (until then the signature is "not yet current", and nothing is opened).
            later = datetime.datetime.utcnow() + datetime.timedelta(seconds=shift)
            r = signed_at(server, later, "TrentService.ScheduleKeyDeletion",
                          {"KeyId": key, "PendingWindowInDays": 7},
                          akid=users["ops"][0], secret=users["ops"][1])
            # (a tuple: a Response of a 4xx is false itself)
            return (r,) if r.json()["__type"] != "InvalidSignatureException" else None
        got = eventually(opened, 5)
        assert got is not None and got[0].json()["__type"] == "ApprovalRequiredException", got
        later = datetime.datetime.utcnow() + datetime.timedelta(seconds=shift)
        got = signed_at(server, later, "HsmdAdmin.GetApproval", {"ApprovalId": earlier},
                        akid=users["alice"][0], secret=users["alice"][1])
        assert got.status_code == 200, got.text
    finally:
        server.cleanup()
        first.cleanup()



def rotated_offline_past_the_date(clockshift, tmp_path, imported):
    """A key rotating every 10 days, whose node is down over the date: in a ceremony (an
    imported key's gets its next material first) it is rotated offline, and the node starts
    again.  Returns the node that ran before (cleaned up by the caller), the one running,
    the key, the shift of the clocks and when the rotation was made."""
    from test_import import external_key, run_hsmctl
    from test_import_rotation import import_body
    server, clock = start_shifted(clockshift, tmp_path, elapsed=True)
    kms = client(server)
    if imported:
        key = external_key(kms)
        call_ok(server, "ImportKeyMaterial", import_body(kms, key, os.urandom(32)))
    else:
        key = kms.create_key()["KeyMetadata"]["KeyId"]
    call_ok(server, "EnableKeyRotation", {"KeyId": key, "RotationPeriodInDays": 10})
    server.stop()
    shift = 11 * 86400
    clock.set(shift)
    env = {"LD_PRELOAD": clockshift, "HSM_TEST_CLOCK_SHIFT_FILE": clock.path,
           "HSM_TEST_CLOCK_SHIFT_ELAPSED": "1"}
    quorum = ["--data-dir", server.data_dir,
              "--share", os.path.join(server.data_dir, "dev-unseal.share")]
    if imported:
        material = tmp_path / "next.bin"
        material.write_bytes(os.urandom(32))
        p = run_hsmctl("key", "import", *quorum, key, "--material", str(material), "--new",
                       "--wrapping-key-spec", "RSA_2048", env=env)
        assert p.returncode == 0, p.stderr
    p = run_hsmctl("key", "rotate", *quorum, key, env=env)
    assert p.returncode == 0, p.stderr
    rotated = time.time() + shift
    env.update({"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET})
    return server, Hsmd(["--dev"], env=env, data_dir=server.data_dir), key, shift, rotated


def shifted_call(server, shift, op, body):
    now = datetime.datetime.utcnow() + datetime.timedelta(seconds=shift)
    r = signed_at(server, now, "TrentService." + op, body)
    assert r.status_code == 200, r.text
    return r.json()


def test_an_overdue_rotation_done_on_demand_moves_the_schedule_on(clockshift, tmp_path):
    """An imported key whose rotation date passed with no new material: the rotation the
    ceremony makes to the material it imports (hsmctl key rotate, as RotateKeyOnDemand) is
    the one that was due.  The next date counts from it, so the alerts' gauges clear and
    the next material, imported for the next date, is not rotated to at once.  It used to
    leave the date in the past: the key stayed counted as needing material and overdue."""
    server, again, key, shift, rotated = rotated_offline_past_the_date(clockshift, tmp_path,
                                                                       True)
    try:
        started = time.time() + shift
        assert eventually(lambda: gauge(again, "hsmd_keys_counted_time_seconds") > started, 30)
        for name in ("hsmd_keys_rotation_due_7d", "hsmd_keys_rotation_material_needed_7d",
                     "hsmd_keys_rotation_overdue"):
            assert gauge(again, name) == 0, name
        status = shifted_call(again, shift, "GetKeyRotationStatus", {"KeyId": key})
        assert abs(status["NextRotationDate"] - (rotated + 10 * 86400)) < 120, status
    finally:
        again.stop()
        server.cleanup()


def test_an_overdue_rotation_done_on_demand_is_not_done_again(clockshift, tmp_path):
    """A generated key rotated on demand after its date passed with no scheduler running:
    the node that starts again does not rotate it a second time.  It used to, at once."""
    server, again, key, shift, rotated = rotated_offline_past_the_date(clockshift, tmp_path,
                                                                       False)
    try:
        started = time.time() + shift
        assert eventually(lambda: gauge(again, "hsmd_keys_counted_time_seconds") > started, 30)
        first = gauge(again, "hsmd_keys_counted_time_seconds")
        # Each round counts, then does the work due: a later count follows a round's work.
        assert eventually(lambda: gauge(again, "hsmd_keys_counted_time_seconds") > first, 30)
        rotations = shifted_call(again, shift, "ListKeyRotations", {"KeyId": key})["Rotations"]
        assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"], rotations
        status = shifted_call(again, shift, "GetKeyRotationStatus", {"KeyId": key})
        assert abs(status["NextRotationDate"] - (rotated + 10 * 86400)) < 120, status
    finally:
        again.stop()
        server.cleanup()
