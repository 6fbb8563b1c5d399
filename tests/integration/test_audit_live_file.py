"""The live audit file cut or moved away under a running node: the next write finds it
before it writes (never into the damaged or moved file), the trail goes on in a new file
that records exactly the records that went (AuditRecordsLost), and verify says so: the
records missing, the loss recorded, nothing modified or inserted; and a file put back
verifies.  Bytes another process appends to the live file are kept aside and recorded
(AuditForeignBytes), not destroyed."""
import glob
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

import pytest

from conftest import HSMCTL, signed_call, start_dev
from helpers import Clock, admin, audit_records, eventually, metric
from test_audit_retention import start_shifted
from test_audit_server import audit_pem, verify


def not_answered(server, body):
    """An AuditHash the trail could not take: its own record failed (409, its result
    withheld) or the trail had already failed (503, refused)."""
    st, out = signed_call(server, "HsmdAdmin.AuditHash", body)
    assert (st, out["__type"]) in ((409, "KMSInternalException"),
                                   (503, "ServiceUnavailableException")), (st, out)


def serves_again(server):
    """The node answers again once its recovery is over: the event that records the
    recovery reaches the file a moment before the trail is marked healthy."""
    assert eventually(lambda: signed_call(server, "HsmdAdmin.AuditHash",
                                          {"Value": "later"})[0] == 200, 25), server.read_log()


def audit_files(data_dir):
    return sorted(glob.glob(os.path.join(data_dir, "audit", "audit-*.jsonl")))


def seqs_of(path):
    with open(path, "rb") as f:
        return [int(line.split(b",", 1)[0][len(b'{"seq":'):]) for line in f if line.strip()]


def lost_events(data_dir):
    return [r for r in audit_records(data_dir) if r.get("op") == "AuditRecordsLost"]


def lost_checkpoint_after(data_dir, lost):
    after = [r for r in audit_records(data_dir) if r["seq"] > lost["seq"]]
    return [r for r in after if r["type"] == "checkpoint"][:1]


def no_seq_twice(data_dir):
    seqs = [s for path in audit_files(data_dir) for s in seqs_of(path)]
    return len(seqs) == len(set(seqs))


def stopped_and_valid(server, pem, *notes):
    """Stops the node; its trail then verifies, with each of notes in the summary."""
    server.stop()
    res = verify(server, pubkey=pem)
    assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
    for note in notes:
        assert note in res.stdout, res.stdout


@pytest.mark.parametrize("next_write", ["request", "checkpoint"])
def test_a_live_file_cut_records_exactly_the_records_cut(tmp_path, next_write):
    """Three records are cut from the end of the live file; the next write (a request's
    record, or an interval checkpoint with no request) finds the cut.  The cut file keeps
    what was left, nothing more; the new file names exactly the three records lost."""
    # Each answer once its record is synced: the records cut are synced ones, whatever the
    # machine's load (a cut of records not yet synced is written again: no loss to find).
    args = ["--backup-interval-seconds", "0", "--audit-ack-durable"]
    if next_write == "checkpoint":
        args += ["--audit-checkpoint-seconds", "1"]
    server = start_dev(args)
    data = server.data_dir
    try:
        for i in range(6):
            admin(server, "AuditHash", {"Value": f"r{i}"})
        pem = audit_pem(server, str(tmp_path))
        (live,) = audit_files(data)
        with open(live, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        kept = b"".join(lines[:-3])
        with open(live, "r+b") as f:
            f.truncate(len(kept))
        if next_write == "request":
            not_answered(server, {"Value": "after"})
        assert eventually(lambda: lost_events(data), 25), server.read_log()
        assert eventually(lambda: len(audit_files(data)) == 2
                          and lost_checkpoint_after(data, lost_events(data)[0]), 10)
        serves_again(server)

        cut, new = audit_files(data)
        assert cut == live
        with open(cut, "rb") as f:
            assert f.read() == kept, "the cut file holds more than what was left in it"
        last_kept = seqs_of(cut)[-1]
        first_new = seqs_of(new)[0]
        (lost,) = lost_events(data)
        assert lost["extra"] == {"first_seq": str(last_kept + 1),
                                 "last_seq": str(first_new - 1)}, lost
        # What went is what was cut, and whatever was written after it that was synced.
        assert last_kept + 1 == int(lines[-3].split(b",", 1)[0][len(b'{"seq":'):])
        ck = lost_checkpoint_after(data, lost)
        assert ck[0]["checkpoint"]["reason"] == "lost", ck
        assert no_seq_twice(data)
        # Cut at a line's end: nothing past the last whole record, nothing foreign kept.
        assert not glob.glob(os.path.join(data, "audit", "*.foreign-*"))
        assert not foreign_events(data)

        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 1 and "result: INVALID" in res.stdout, res.stdout
        assert (f"deleted: records {last_kept + 1} to {first_new - 1} are missing"
                in res.stdout), res.stdout
        assert f"AuditRecordsLost, seq {lost['seq']}" in res.stdout, res.stdout
        assert "modified" not in res.stdout and "inserted" not in res.stdout, res.stdout
    finally:
        server.cleanup()


def test_a_live_file_moved_away_is_recorded_once_and_verifies_put_back(tmp_path):
    """The live file is renamed away: the next request's record lands only in the new
    file, which names every record of the moved one as lost.  Put back (renamed to its
    own name again), the trail verifies, the loss noted."""
    # Answers once synced: bytes not yet synced are not left in the moved file.
    server = start_dev(["--backup-interval-seconds", "0", "--audit-ack-durable"])
    data = server.data_dir
    try:
        for i in range(5):
            admin(server, "AuditHash", {"Value": f"r{i}"})
        pem = audit_pem(server, str(tmp_path))
        (live,) = audit_files(data)
        moved = os.path.join(str(tmp_path), "moved.jsonl")
        shutil.move(live, moved)
        with open(moved, "rb") as f:
            before = f.read()
        not_answered(server, {"Value": "after"})
        assert eventually(lambda: lost_events(data), 25), server.read_log()
        (new,) = audit_files(data)
        assert eventually(lambda: lost_checkpoint_after(data, lost_events(data)[0]), 10)
        with open(moved, "rb") as f:
            assert f.read() == before, "a record went into the moved file"
        assert not glob.glob(os.path.join(data, "audit", "*.foreign-*"))
        moved_seqs = seqs_of(moved)
        (lost,) = lost_events(data)
        assert lost["extra"] == {"first_seq": "1", "last_seq": str(moved_seqs[-1])}, lost
        assert seqs_of(new)[0] == moved_seqs[-1] + 1

        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 1 and "result: INVALID" in res.stdout, res.stdout
        assert f"records 1 to {moved_seqs[-1]}" in res.stdout, res.stdout
        assert "AuditRecordsLost" in res.stdout, res.stdout
        assert "modified" not in res.stdout and "inserted" not in res.stdout, res.stdout

        shutil.move(moved, live)
        assert no_seq_twice(data)
        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
        assert (f"hsmd recorded records 1 to {moved_seqs[-1]} as lost with its live file"
                in res.stdout), res.stdout
        assert "the file was put back" in res.stdout, res.stdout
        stopped_and_valid(server, pem)
    finally:
        server.cleanup()


def signer_checkpoint(data_dir):
    return [r for r in audit_records(data_dir)
            if r["type"] == "checkpoint" and r["checkpoint"]["reason"] == "signer"]


def test_a_live_file_replaced_by_its_copy_under_unsynced_records_verifies(tmp_path):
    """The live file is replaced by a copy of itself (as `sed -i`, or `cp` then `mv`, do)
    while records written into it wait for their fsync.  The copy holds them, but hsmd
    cannot know it will stay: it writes them again at the start of its new file, then
    records the loss of the synced ones.  With the copy in place the trail verifies: the
    loss noted as put back, the records in both files (the same bytes) counted once."""
    # A long fsync wait: the records below stay unsynced until the file is replaced.
    server = start_dev(["--backup-interval-seconds", "0", "--audit-fsync-ms", "10000",
                        "--audit-fsync-max-lag-ms", "20000"])
    data = server.data_dir
    try:
        # Written and synced at once, as every checkpoint: what came before it is durable.
        assert eventually(lambda: signer_checkpoint(data), 25), server.read_log()
        started = time.monotonic()
        pem = audit_pem(server, str(tmp_path))
        for i in range(5):
            admin(server, "AuditHash", {"Value": f"r{i}"})
        (live,) = audit_files(data)
        with open(live, "rb") as f:
            before = f.read()
        copy = live + ".new"
        with open(copy, "wb") as f:
            f.write(before)
        os.chmod(copy, 0o600)
        os.replace(copy, live)
        assert time.monotonic() - started < 8, "too slow to stay within one fsync wait"
        not_answered(server, {"Value": "after"})
        assert eventually(lambda: lost_events(data), 25), server.read_log()
        assert eventually(lambda: lost_checkpoint_after(data, lost_events(data)[0]), 10)
        serves_again(server)

        put_back, new = audit_files(data)
        assert put_back == live
        with open(live, "rb") as f:
            assert f.read() == before, "hsmd wrote into the copy put in its place"
        first_new, last_copied = seqs_of(new)[0], seqs_of(live)[-1]
        assert first_new <= last_copied, "no record waited for its fsync: none is in both files"
        repeated = before.splitlines(keepends=True)[first_new - 1:]
        with open(new, "rb") as f:
            assert f.read().splitlines(keepends=True)[:len(repeated)] == repeated
        (lost,) = lost_events(data)
        assert lost["extra"] == {"first_seq": "1", "last_seq": str(first_new - 1)}, lost
        seqs = sorted(set(s for path in audit_files(data) for s in seqs_of(path)))
        assert seqs == list(range(1, seqs[-1] + 1))

        note = (f"note: hsmd recorded records 1 to {first_new - 1} as lost with its live file "
                f"(AuditRecordsLost, seq {lost['seq']}): they are all here (the file was put "
                f"back)")
        twice = (f"records {first_new} to {last_copied}, not yet synced when it went, are in "
                 f"it and again at the start of the next file, the same bytes: counted once")
        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
        assert note in res.stdout and twice in res.stdout, res.stdout
        assert f"records: {len(seqs)} (seq 1 to {seqs[-1]})" in res.stdout, res.stdout
        # audit report counts them once too.
        hashes = {r["seq"] for r in audit_records(data) if r.get("op") == "AuditHash"}
        rep = subprocess.run([HSMCTL, "audit", "report", "--live", "--pubkey", pem,
                              os.path.join(data, "audit")], capture_output=True, text=True)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        (line,) = [x for x in rep.stdout.splitlines() if x.split()[:1] == ["AuditHash"]]
        assert line.split()[1:3] == [str(len(hashes))] * 2, (line, len(hashes))
        server.stop()
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
        assert note in res.stdout and twice in res.stdout, res.stdout
    finally:
        server.cleanup()


# Rotation by age, the node's wall clock moved past it (clockshift.c); no interval
# checkpoint comes meanwhile, and records wait 10 s for their fsync.
ROTATING = ["--audit-rotate-seconds", "60", "--audit-checkpoint-seconds", "3600",
            "--audit-fsync-ms", "10000", "--audit-fsync-max-lag-ms", "20000"]


def test_a_new_file_replaced_by_its_copy_before_its_first_sync_is_gone_on_in(clockshift,
                                                                               tmp_path):
    """A rotation begins a new file, and before any record in it is synced, `cp` then `mv`
    replace it by a copy of itself.  The new file hsmd then wants begins with those same
    records, so it has the copy's name: the copy holds them and nothing else, and hsmd
    goes on in it as it would have in an empty file.  Requests are served again, nothing
    is lost or kept aside, and the trail verifies."""
    clock = Clock(str(tmp_path / "shift"))
    server = start_shifted(clockshift, clock, ROTATING)
    data = server.data_dir
    try:
        assert eventually(lambda: signer_checkpoint(data), 25), server.read_log()
        clock.set(120)  # the file is older than the rotation age: the next write ends it
        admin(server, "AuditHash", {"Value": "rotate"})
        assert eventually(lambda: len(audit_files(data)) == 2, 10), audit_files(data)
        started = time.monotonic()
        for i in range(3):
            admin(server, "AuditHash", {"Value": f"r{i}"})
        old, new = audit_files(data)
        subprocess.run(["cp", new, new + ".tmp"], check=True)
        subprocess.run(["mv", new + ".tmp", new], check=True)
        assert time.monotonic() - started < 8, "too slow to stay within one fsync wait"
        ino = os.stat(new).st_ino
        with open(new, "rb") as f:
            copied = f.read()
        not_answered(server, {"Value": "after"})
        serves_again(server)

        # One new file, the copy: a record synced before would have made another.
        assert audit_files(data) == [old, new], audit_files(data)
        assert os.stat(new).st_ino == ino, "hsmd did not go on in the copy"
        with open(new, "rb") as f:
            now = f.read()
        assert now.startswith(copied) and len(now) > len(copied)
        assert seqs_of(new)[0] == seqs_of(old)[-1] + 1
        seqs = [s for path in audit_files(data) for s in seqs_of(path)]
        assert seqs == list(range(1, len(seqs) + 1)), "a record is missing or twice"
        assert not lost_events(data) and not foreign_events(data)
        assert not glob.glob(os.path.join(data, "audit", "*.foreign-*"))
        log = server.read_log()
        assert f"the first {len(copied)} bytes hsmd writes there, and nothing else" in log, log

        pem = audit_pem(server, str(tmp_path))
        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
        assert "modified" not in res.stdout and "inserted" not in res.stdout, res.stdout
        stopped_and_valid(server, pem)
    finally:
        server.cleanup()


def test_a_file_planted_at_the_next_file_name_is_kept_aside(clockshift, tmp_path):
    """Another process puts a file of its own at the name of the file hsmd's next rotation
    begins.  hsmd neither writes over it nor stops at it: it copies its bytes to
    <file>.foreign-0-<ms>, records them (AuditForeignBytes) before anything else in the
    file, cuts them off and goes on there.  Requests are served throughout, and verify
    says VALID with a note of the bytes."""
    clock = Clock(str(tmp_path / "shift"))
    server = start_shifted(clockshift, clock, ROTATING)
    data = server.data_dir
    try:
        assert eventually(lambda: signer_checkpoint(data), 25), server.read_log()
        (old,) = audit_files(data)
        # Synced, as every checkpoint: no sync wakes the writer before the request below.
        (last,) = signer_checkpoint(data)
        assert audit_records(data)[-1] == last
        # That request's record ends the file, then the rotate checkpoint; the new file
        # begins after it.
        first = last["seq"] + 3
        name = os.path.join(data, "audit", f"audit-{first:020d}.jsonl")
        planted = b'{"seq":%d,"op":"CreateKey","outcome":"success"}\nnot hsmd\'s' % first
        with open(name + ".tmp", "wb") as f:
            f.write(planted)
        os.replace(name + ".tmp", name)
        clock.set(120)
        admin(server, "AuditHash", {"Value": "rotate"})
        assert eventually(lambda: foreign_events(data), 10), server.read_log()
        admin(server, "AuditHash", {"Value": "after"})

        (side,) = glob.glob(os.path.join(data, "audit", "*.foreign-*"))
        saved_to = os.path.basename(side)
        assert saved_to.startswith(os.path.basename(name) + ".foreign-0-"), saved_to
        assert stat.S_IMODE(os.stat(side).st_mode) == 0o600
        with open(side, "rb") as f:
            assert f.read() == planted
        (ev,) = foreign_events(data)
        assert ev["seq"] == first, ev
        assert ev["extra"] == {"file": os.path.basename(name), "offset": "0",
                               "length": str(len(planted)), "saved_to": saved_to,
                               "saved_bytes": str(len(planted)),
                               "sha256": hashlib.sha256(planted).hexdigest()}, ev
        assert audit_files(data) == [old, name]
        with open(name, "rb") as f:
            held = f.read()
        assert b"CreateKey" not in held and b"not hsmd" not in held, held
        assert seqs_of(name)[0] == first
        assert not lost_events(data)
        assert metric(server, "hsmd_audit_outages_total") == 0, server.read_log()

        pem = audit_pem(server, str(tmp_path))
        note = (f"note: hsmd found {len(planted)} bytes in its live file "
                f"{os.path.basename(name)}, from offset 0, that were not its records as it "
                f"wrote them, and cut them off (AuditForeignBytes, seq {first})")
        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
        assert note in res.stdout, res.stdout
        stopped_and_valid(server, pem, note)
    finally:
        server.cleanup()


def test_a_cut_under_many_unsynced_records_is_still_the_loss_recorded(tmp_path):
    """The live file is cut while more records wait for their fsync than verify looks
    ahead of a record (64): hsmd writes them all into the new file before the
    AuditRecordsLost that names the records cut, and verify still finds it there: the
    records missing, the loss recorded, the records after the gap verified (not a file
    truncated)."""
    server = start_dev(["--backup-interval-seconds", "0", "--audit-fsync-ms", "8000",
                        "--audit-fsync-max-lag-ms", "16000"])
    data = server.data_dir
    try:
        for i in range(20):
            admin(server, "AuditHash", {"Value": f"r{i}"})
        pem = audit_pem(server, str(tmp_path))
        # Synced: the one fsync of these records (8 s after the first) has run, and the
        # writer has taken its result (at its next write, before the cut below).
        syncs = metric(server, "hsmd_audit_sync_duration_seconds_count")
        assert eventually(lambda: metric(server, "hsmd_audit_sync_duration_seconds_count")
                          > syncs, 30), server.read_log()
        time.sleep(0.5)  # from its count to its result handed over: a few instructions
        (live,) = audit_files(data)
        with open(live, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        kept = b"".join(lines[:len(lines) // 2])
        started = time.monotonic()
        for i in range(120):  # written, not yet synced
            admin(server, "AuditHash", {"Value": f"b{i}"})
        assert time.monotonic() - started < 6.5, "too slow to stay within one fsync wait"
        with open(live, "r+b") as f:
            f.truncate(len(kept))
        assert eventually(lambda: lost_events(data), 25), server.read_log()
        assert eventually(lambda: lost_checkpoint_after(data, lost_events(data)[0]), 10)
        serves_again(server)

        cut, new = audit_files(data)
        last_kept, first_new = seqs_of(cut)[-1], seqs_of(new)[0]
        (lost,) = lost_events(data)
        assert lost["extra"] == {"first_seq": str(last_kept + 1),
                                 "last_seq": str(first_new - 1)}, lost
        assert lost["seq"] - first_new > 64, (lost["seq"], first_new)
        assert no_seq_twice(data)

        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 1 and "result: INVALID" in res.stdout, res.stdout
        assert (f"deleted: records {last_kept + 1} to {first_new - 1} are missing: hsmd "
                f"lost them" in res.stdout), res.stdout
        assert f"AuditRecordsLost, seq {lost['seq']}" in res.stdout, res.stdout
        assert "truncated" not in res.stdout, res.stdout
        server.stop()
        res = verify(server, pubkey=pem)
        assert (f"deleted: records {last_kept + 1} to {first_new - 1} are missing: hsmd "
                f"lost them" in res.stdout), res.stdout
    finally:
        server.cleanup()


def test_every_loss_recorded_is_noted(tmp_path):
    """The live file is moved away twice, each time recorded lost: put back, the trail
    verifies, and the summary notes both losses, not the first only, as the verdict names
    every range still missing."""
    server = start_dev(["--backup-interval-seconds", "0"])
    data = server.data_dir
    try:
        pem = audit_pem(server, str(tmp_path))
        moves = []
        for n in (1, 2):
            for i in range(3):
                admin(server, "AuditHash", {"Value": f"r{n}.{i}"})
            time.sleep(0.5)  # synced (10 ms): bytes not yet synced are not left behind
            live = audit_files(data)[-1]
            moved = os.path.join(str(tmp_path), f"moved{n}.jsonl")
            shutil.move(live, moved)
            moves.append((moved, live))
            not_answered(server, {"Value": f"after{n}"})
            # The first loss's record went with the second file moved: look for this one's.
            first = str(seqs_of(moved)[0])

            def this_loss():
                return [r for r in lost_events(data) if r["extra"]["first_seq"] == first]
            assert eventually(this_loss, 25), server.read_log()
            assert eventually(lambda: lost_checkpoint_after(data, this_loss()[0]), 10)
            admin(server, "AuditHash", {"Value": f"later{n}"})
        for moved, live in moves:
            shutil.move(moved, live)
        assert no_seq_twice(data)
        losses = lost_events(data)
        assert [r["extra"]["first_seq"] for r in losses] == \
            [str(seqs_of(live)[0]) for _, live in moves], losses

        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
        for lost in losses:
            note = (f"note: hsmd recorded records {lost['extra']['first_seq']} to "
                    f"{lost['extra']['last_seq']} as lost with its live file "
                    f"(AuditRecordsLost, seq {lost['seq']}): they are all here (the file "
                    f"was put back)")
            assert note in res.stdout, res.stdout
    finally:
        server.cleanup()


def dev_start(data):
    """hsmd --dev on data, expected to be refused; its stderr."""
    from conftest import DEV_AKID, DEV_SECRET, HSMD, free_port
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_")}
    env.update(HSM_DEV_ACCESS_KEY_ID=DEV_AKID, HSM_DEV_SECRET_ACCESS_KEY=DEV_SECRET)
    p = subprocess.run([HSMD, "--dev", "--data-dir", data, "--listen",
                        f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                       timeout=30, env=env)
    assert p.returncode != 0, p.stderr
    return p.stderr


@pytest.mark.parametrize("target_exists", [True, False])
def test_a_link_planted_as_the_audit_lock_is_not_followed(tmp_path, target_exists):
    """A symbolic link in place of the audit directory's .lock: hsmd refuses to start,
    naming it, and neither makes nor opens what it points to."""
    data = tmp_path / "data"
    os.makedirs(data / "audit", mode=0o700)
    target = tmp_path / "elsewhere"
    if target_exists:
        target.write_bytes(b"not hsmd's\n")
        os.chmod(target, 0o644)
    os.symlink(target, data / "audit" / ".lock")
    err = dev_start(str(data))
    lock = str(data / "audit" / ".lock")
    assert f"cannot open the audit lock {lock}: it is a symbolic link" in err, err
    assert os.path.islink(lock)
    if target_exists:
        assert target.read_bytes() == b"not hsmd's\n"
        assert os.stat(target).st_mode & 0o777 == 0o644
    else:
        assert not os.path.lexists(target)


def test_a_link_planted_as_the_live_file_is_not_followed(tmp_path):
    """The live audit file of a stopped node replaced by a symbolic link to a copy of it:
    neither hsmd nor an hsmctl command that writes the trail follows it, each names the
    file, and the copy is left as it was."""
    server = start_dev()
    server.stop()
    data = server.data_dir
    try:
        (live,) = audit_files(data)
        target = tmp_path / "copy.jsonl"
        shutil.copy(live, target)
        before = target.read_bytes()
        os.unlink(live)
        os.symlink(target, live)
        err = dev_start(data)
        assert f"cannot open {live}: it is a symbolic link" in err, err
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
        p = subprocess.run([HSMCTL, "user", "list", "--data-dir", data], capture_output=True,
                           text=True, timeout=60, env=env)
        assert p.returncode != 0, p.stdout + p.stderr
        assert f"{live}: it is a symbolic link" in p.stderr, p.stderr
        assert os.path.islink(live) and target.read_bytes() == before
    finally:
        server.cleanup()


def foreign_events(data_dir):
    return [r for r in audit_records(data_dir) if r.get("op") == "AuditForeignBytes"]


def test_bytes_appended_to_the_live_file_are_kept_and_recorded(tmp_path):
    """Another process appends bytes to the live file of a running node.  The next
    request's write finds the file longer than hsmd wrote it and is refused; the recovery
    copies exactly those bytes to a side file in the audit directory (mode 0600, not a
    trail file), cuts them off, and records where they were (AuditForeignBytes: offset,
    length, how many kept, their SHA-256).  The live file holds hsmd's records only, verify
    says VALID with a note of the bytes, and report lists the event, flagged."""
    server = start_dev(["--backup-interval-seconds", "0"])
    data = server.data_dir
    try:
        for i in range(4):
            admin(server, "AuditHash", {"Value": f"r{i}"})
        pem = audit_pem(server, str(tmp_path))
        time.sleep(0.5)  # synced (10 ms)
        (live,) = audit_files(data)
        size = os.path.getsize(live)
        foreign = (b'{"seq":999999,"op":"CreateKey","outcome":"success"}\n'
                   b"and a line without its end")
        with open(live, "ab") as f:
            f.write(foreign)
        not_answered(server, {"Value": "after"})
        assert eventually(lambda: foreign_events(data), 25), server.read_log()
        serves_again(server)

        sides = glob.glob(os.path.join(data, "audit", "*foreign*"))
        assert len(sides) == 1, sides
        side = sides[0]
        name = os.path.basename(side)
        assert name.startswith(f"{os.path.basename(live)}.foreign-{size}-"), name
        assert stat.S_IMODE(os.stat(side).st_mode) == 0o600
        with open(side, "rb") as f:
            assert f.read() == foreign, "the side file does not hold exactly the bytes appended"
        (ev,) = foreign_events(data)
        assert ev["type"] == "event" and ev["outcome"] == "error", ev
        assert ev["extra"] == {"file": os.path.basename(live), "offset": str(size),
                               "length": str(len(foreign)), "saved_to": name,
                               "saved_bytes": str(len(foreign)),
                               "sha256": hashlib.sha256(foreign).hexdigest()}, ev
        assert not lost_events(data), "nothing of hsmd's was lost"

        assert audit_files(data) == [live]
        with open(live, "rb") as f:
            lines = f.read().splitlines(keepends=True)
        recs = [json.loads(line) for line in lines]
        assert all(line.endswith(b"\n") for line in lines)
        assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
        assert all(r["node"] == recs[0]["node"] for r in recs)
        assert not any(b"999999" in line or b"without its end" in line for line in lines)

        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
        note = (f"note: hsmd found {len(foreign)} bytes in its live file "
                f"{os.path.basename(live)}, from offset {size}, that were not its records as "
                f"it wrote them, and cut them off (AuditForeignBytes, seq {ev['seq']}): "
                f"something else wrote into the trail; {len(foreign)} of them are kept in "
                f"{name}")
        assert note in res.stdout, res.stdout
        rep = subprocess.run([HSMCTL, "audit", "report", "--live", "--pubkey", pem,
                              os.path.join(data, "audit")], capture_output=True, text=True)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        events = rep.stdout.split("\nnode events", 1)[1].splitlines()
        (line,) = [x for x in events if " AuditForeignBytes " in x]
        assert f"offset={size}" in line and f"saved_to={name}" in line, line
        assert "SOMETHING ELSE WROTE INTO THE LIVE FILE" in line, line
        stopped_and_valid(server, pem, note)
    finally:
        server.cleanup()


def test_bytes_kept_aside_are_copied_to_the_audit_copy_dir(tmp_path):
    """With audit_copy_dir (another disk, another region), the side file holding bytes
    someone else wrote into the live file goes there too, as soon as the event saying so
    is written: evidence kept off the node like the trail's own files."""
    copies = tmp_path / "copies"
    copies.mkdir()
    server = start_dev(["--backup-interval-seconds", "0", "--audit-copy-dir", str(copies)])
    data = server.data_dir
    try:
        admin(server, "AuditHash", {"Value": "r"})
        time.sleep(0.5)  # synced (10 ms)
        (live,) = audit_files(data)
        foreign = b'{"seq":0}\nwritten by something else'  # no end: audit_records skips it
        with open(live, "ab") as f:
            f.write(foreign)
        not_answered(server, {"Value": "after"})
        assert eventually(lambda: foreign_events(data), 25), server.read_log()
        (side,) = glob.glob(os.path.join(data, "audit", "*.foreign-*"))
        name = os.path.basename(side)
        copied = eventually(lambda: glob.glob(str(copies / "*" / name)), 25)
        assert len(copied) == 1, (copied, server.read_log())
        assert stat.S_IMODE(os.stat(copied[0]).st_mode) == 0o600
        with open(copied[0], "rb") as f:
            assert f.read() == foreign
        # Once: a later pass finds it there and copies nothing again.
        assert not glob.glob(str(copies / "*" / ".*.part"))
    finally:
        server.cleanup()
