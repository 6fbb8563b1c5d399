"""The audit outbox: a request that changes the store commits a row naming
it in the same transaction, so a change whose record was lost (hsmd killed
between the commit and the record) is recorded at the next start
(RequestRecordRecovered), and a change whose record was written is not
recorded twice."""
import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time

import botocore.exceptions
import pytest

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, client, signed_call
from conftest import start_dev as conftest_start_dev
from helpers import (IDENTITY, KilledAt, audit_records, eventually, gdb_can_trace,
                     killed_before_its_record, metric)

DEV_ENV = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
RECOVERED = "RequestRecordRecovered"


GDB = gdb_can_trace()


def outbox_rows(data_dir):
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'hsmd.db')}?mode=ro", uri=True)
    try:
        return db.execute("SELECT request_id, operation, key_id FROM audit_outbox").fetchall()
    finally:
        db.close()


def rows_of(data_dir, node):
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'hsmd.db')}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT request_id FROM audit_outbox WHERE node_id = ?",
                                         (node,))]
    finally:
        db.close()


def recovered(data_dir):
    return [r for r in audit_records(data_dir) if r.get("op") == RECOVERED]


def verify(data_dir):
    files = sorted(os.path.join(data_dir, "audit", f)
                   for f in os.listdir(os.path.join(data_dir, "audit")) if f.endswith(".jsonl"))
    return subprocess.run([HSMCTL, "audit", "verify", "--live"] + files, capture_output=True,
                          text=True)


# The nodes here make no scheduled backup unless a test asks for one: a node's first round
# backs up a store that has none, and that backup's own outbox row, committed at a moment
# no test chooses, would stand beside the rows a test counts.
QUIET = ["--backup-interval-seconds", "0"]


def start_dev(extra_args=()):
    extra = list(extra_args)
    return conftest_start_dev(extra if "--backup-interval-seconds" in extra else extra + QUIET)


def restart(server):
    server.log.close()
    return Hsmd(["--dev"] + QUIET, env=DEV_ENV, data_dir=server.data_dir)


def test_rows_of_recorded_changes_go_and_a_clean_restart_recovers_nothing():
    server = start_dev()
    try:
        kms = client(server)
        key = kms.create_key(Description="outbox kept clean")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName="alias/outbox-clean", TargetKeyId=key)
        kms.encrypt(KeyId=key, Plaintext=b"x")
        # Each change committed a row; once its record is durable the row goes.
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10), \
            outbox_rows(server.data_dir)
        server.stop()
        server = restart(server)
        assert recovered(server.data_dir) == []
        assert metric(server, "hsmd_audit_records_recovered_total") == 0
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="killing hsmd between a commit and its record needs gdb, "
                                    "allowed to attach")
def test_a_change_whose_record_was_lost_is_recorded_at_the_next_start():
    server = start_dev()
    try:
        kms = client(server)
        # The change commits; hsmd dies before its record is submitted: no answer.
        killed_before_its_record(server,
                                 lambda: kms.create_key(Description="committed, then killed"))
        rows = outbox_rows(server.data_dir)
        assert len(rows) == 1 and rows[0][1] == "CreateKey", rows
        request_id = rows[0][0]
        assert not [r for r in audit_records(server.data_dir)
                    if r.get("request_id") == request_id], "the record was written after all"

        server = restart(server)
        kms = client(server)
        keys = [k for k in (kms.describe_key(KeyId=e["KeyId"])["KeyMetadata"]
                            for e in kms.list_keys()["Keys"])
                if k.get("Description") == "committed, then killed"]
        assert len(keys) == 1, keys
        recs = recovered(server.data_dir)
        assert len(recs) == 1, recs
        r = recs[0]
        assert r["type"] == "event" and r["principal"] == "hsmd", r
        assert r["request_id"] == request_id and r["key_id"] == keys[0]["KeyId"], r
        extra = r["extra"]
        assert extra["request_op"] == "CreateKey", r
        assert extra["request_principal"].endswith(":user/dev"), r
        assert extra["request_access_key"] == DEV_AKID, r
        assert extra["request_source"].startswith("127.0.0.1:"), r
        assert extra["committed"].endswith("Z"), r
        assert extra["record_lost"].startswith("the node stopped before writing it"), r
        # The row is settled, the trail still verifies, the count says so.
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10), \
            outbox_rows(server.data_dir)
        assert metric(server, "hsmd_audit_records_recovered_total") == 1
        p = verify(server.data_dir)
        assert p.returncode == 0 and "VALID" in p.stdout, p.stdout + p.stderr

        # Settled once: the next start records nothing more.
        server.stop()
        server = restart(server)
        assert len(recovered(server.data_dir)) == 1
    finally:
        server.cleanup()


def audit_report(data_dir, *args):
    return subprocess.run([HSMCTL, "audit", "report", *args, os.path.join(data_dir, "audit")],
                          capture_output=True, text=True)


@pytest.mark.skipif(not GDB, reason="killing hsmd between a commit and its record needs gdb, "
                                    "allowed to attach")
def test_the_report_lists_a_recovered_change_as_its_request_s_by_its_principal():
    server = start_dev()
    try:
        kms = client(server)
        killed_before_its_record(server,
                                 lambda: kms.create_key(Description="reported, recovered"))
        server = restart(server)
        (rec,) = recovered(server.data_dir)
        server.stop()
        p = audit_report(server.data_dir, "--json")
        assert p.returncode == 0, p.stdout + p.stderr
        rep = json.loads(p.stdout)
        # A change like any other, in the list of changes, by whoever asked for it, flagged.
        (change,) = [c for c in rep["changes"] if c.get("request_id") == rec["request_id"]]
        assert change["op"] == "CreateKey" and change["flag"] == "recovered", change
        assert change["principal"] == rec["extra"]["request_principal"], change
        assert change["access_key"] == DEV_AKID and change["key_id"] == rec["key_id"], change
        assert change["source"] == rec["extra"]["request_source"], change
        assert change["extra"]["committed"] == rec["extra"]["committed"], change
        assert not [e for e in rep["events"] if e.get("request_id") == rec["request_id"]]
        # Counted under its principal and its operation, not as the node's own event.
        creates = [r for r in audit_records(server.data_dir) if r.get("op") == "CreateKey"]
        assert rep["operations"]["CreateKey"]["success"] == len(creates) + 1, rep["operations"]
        assert RECOVERED not in rep["operations"], rep["operations"]
        mine = rep["principals"][rec["extra"]["request_principal"]]
        assert mine["success"] == len([r for r in audit_records(server.data_dir)
                                       if r.get("principal") == rec["extra"]["request_principal"]
                                       and r.get("outcome") == "success"]) + 1, mine
        hsmd = rep["principals"].get("hsmd", {"total": 0})
        assert hsmd["total"] == len([r for r in audit_records(server.data_dir)
                                     if r.get("type") == "event" and r.get("op") != RECOVERED
                                     and r.get("principal", "hsmd") == "hsmd"]), rep["principals"]
        p = audit_report(server.data_dir)
        assert p.returncode == 0, p.stdout + p.stderr
        changes = p.stdout.split("\nchanges (")[1].split("\nnode events (")[0]
        assert changes.split("\n")[0].endswith(", 1 flagged)"), \
            changes
        (line,) = [l for l in changes.splitlines() if f"key={rec['key_id']}" in l]
        assert " CreateKey " in line and "** RECOVERED" in line, line
        assert f"by={rec['extra']['request_principal']}" in line, line
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="killing hsmd before its outbox rows go needs gdb, "
                                    "allowed to attach")
def test_a_change_recorded_before_a_kill_is_not_recorded_twice():
    server = start_dev()
    try:
        kms = client(server)
        killer = KilledAt(server, "hsm_store_outbox_delete")
        # Answered, so recorded; hsmd dies when it comes to delete the row.
        key = kms.create_key(Description="recorded, then killed")["KeyMetadata"]["KeyId"]
        killer.wait()
        rows = outbox_rows(server.data_dir)
        assert [r[1] for r in rows] == ["CreateKey"], rows
        mine = [r for r in audit_records(server.data_dir)
                if r.get("request_id") == rows[0][0]]
        assert [r["op"] for r in mine] == ["CreateKey"] and mine[0]["key_id"] == key, mine

        server = restart(server)
        assert recovered(server.data_dir) == []
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10), \
            outbox_rows(server.data_dir)
        assert metric(server, "hsmd_audit_records_recovered_total") == 0
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="failing an audit write needs gdb, allowed to attach")
def test_a_change_whose_record_an_outage_failed_is_on_the_trail_once_it_recovers():
    server = start_dev()
    try:
        kms = client(server)
        # The pwrite(2) of the request's record writes nothing, once: an outage (EIO), which
        # fails the records it held (the client gets a 503); the trail recovers by itself.
        fd = [n for n in os.listdir(f"/proc/{server.proc.pid}/fd")
              if os.readlink(f"/proc/{server.proc.pid}/fd/{n}").endswith(".jsonl")]
        assert len(fd) == 1, fd
        script = os.path.join(server.tmp, "fail-once.gdb")
        with open(script, "w") as f:
            # Armed by the request's own submission, so the write that fails is the one
            # carrying its record, not one of hsmd's own events.
            f.write("set pagination off\nset confirm off\n"
                    "break hsm_audit_submit_lazy\n"
                    f"break pwrite64 if $rdi == {fd[0]}\n"
                    "disable 2\n"
                    "commands 1\n  delete 1\n  enable 2\n  continue\nend\n"
                    "commands 2\n  return (long) 0\n  delete 2\n  detach\n"
                    "  quit\nend\n"
                    "continue\n")
        gdb = subprocess.Popen(["gdb", "-q", "-nx", "-batch", "-p", str(server.proc.pid),
                                "-x", script],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = []
        ready = threading.Event()

        def read():
            for line in gdb.stdout:
                out.append(line)
                if line.startswith("Breakpoint 2 at "):
                    ready.set()
            ready.set()
        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(60), "".join(out)
        # One HTTP request, no client retry (a retry would make a second key).
        st, body = signed_call(server, "TrentService.CreateKey",
                               {"Description": "committed, record failed"})
        assert st == 409 and body["__type"] == "KMSInternalException", (st, body)
        gdb.wait(timeout=60)
        assert server.proc.poll() is None, "".join(out)
        # The change stands; once the trail takes records again, it is on it exactly once:
        # its own record (the trail writes what it held again when it recovers, so here it
        # usually is) or one in its stead; either way the row is settled.
        assert eventually(lambda: server.get("/readyz")[0] == 200, 20)
        key = [k["KeyId"] for k in kms.list_keys()["Keys"]
               if kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"].get("Description")
               == "committed, record failed"]
        assert len(key) == 1
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10), \
            outbox_rows(server.data_dir)
        mine = [r for r in audit_records(server.data_dir) if r.get("key_id") == key[0]
                and (r.get("op") == "CreateKey" or r.get("op") == RECOVERED)]
        assert len(mine) == 1, mine
        if mine[0]["op"] == RECOVERED:
            assert mine[0]["extra"]["record_lost"] == "the audit trail could not write it"
            assert metric(server, "hsmd_audit_records_recovered_total") == 1
    finally:
        server.cleanup()


def age_rows(data_dir, node, seconds):
    """Makes node's rows look committed `seconds` earlier (hsmd stopped)."""
    db = sqlite3.connect(os.path.join(data_dir, "hsmd.db"))
    try:
        with db:
            db.execute("UPDATE audit_outbox SET created_ms = created_ms - ? WHERE node_id = ?",
                       (seconds * 1000, node))
    finally:
        db.close()


@pytest.mark.skipif(not GDB, reason="killing hsmd between a commit and its record needs gdb, "
                                    "allowed to attach")
def test_rows_left_under_an_earlier_node_id_are_adopted_once_old_enough():
    """A data directory whose node_id was changed between a kill and the next start: the
    rows of the old id are its own node's no more, and are settled once they are older than
    outbox_adopt_after_seconds (the directory lock proves nobody runs under the old id)."""
    server = Hsmd(["--dev", "--node-id", "old-name"] + QUIET, env=DEV_ENV)
    try:
        kms = client(server)
        killed_before_its_record(server, lambda: kms.create_key(Description="old name's"))
        ((request_id, op, _),) = outbox_rows(server.data_dir)
        assert op == "CreateKey"
        server.log.close()
        args = ["--dev", "--node-id", "new-name", "--scheduler-interval-seconds", "1"]
        # Younger than the setting: left as it is.
        server = Hsmd(args + ["--outbox-adopt-after-seconds", "3600"], env=DEV_ENV,
                      data_dir=server.data_dir)
        assert eventually(lambda: metric(server, "hsmd_scheduler_leader") == 1, 10)
        time.sleep(2)  # rounds of the scheduler, the first of which looks at once
        # old-name's row alone: the new node's own rows (its first round's backup) go
        # when the flusher next finds their events durable, about a second later.
        assert rows_of(server.data_dir, "old-name") == [request_id]
        assert recovered(server.data_dir) == []
        server.stop()
        server.log.close()
        age_rows(server.data_dir, "old-name", 2 * 3600)
        server = Hsmd(args + ["--outbox-adopt-after-seconds", "3600"], env=DEV_ENV,
                      data_dir=server.data_dir)
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 20), \
            outbox_rows(server.data_dir)
        (r,) = recovered(server.data_dir)
        assert r["node"] == "new-name" and r["request_id"] == request_id, r
        assert r["extra"]["request_op"] == "CreateKey" and r["extra"]["request_node"] == "old-name"
        assert r["extra"]["record_lost"].startswith(
            "node old-name did not come back within outbox_adopt_after_seconds (3600 s)"), r
        assert metric(server, "hsmd_audit_records_recovered_total") == 1
        assert metric(server, "hsmd_audit_records_adopted_total") == 1
        # Logged once the pass is over: after the rows go and the hold is released.
        assert eventually(lambda: "adopted 1 row(s) of node old-name" in server.read_log(), 10), \
            server.read_log()
        p = verify(server.data_dir)
        assert p.returncode == 0 and "VALID" in p.stdout, p.stdout + p.stderr
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="killing hsmd between a commit and its record needs gdb, "
                                    "allowed to attach")
def test_an_adoption_killed_before_its_rows_go_records_nothing_twice():
    """The adopting node killed once its records are durable, before the adopted rows go:
    its next pass finds those records in its own trail, writes none again, and deletes
    the rows."""
    server = Hsmd(["--dev", "--node-id", "old-name"] + QUIET, env=DEV_ENV)
    try:
        kms = client(server)
        killed_before_its_record(server, lambda: kms.create_key(Description="old name's"))
        ((request_id, _, _),) = outbox_rows(server.data_dir)
        server.log.close()
        age_rows(server.data_dir, "old-name", 2 * 3600)
        args = ["--dev", "--node-id", "new-name", "--scheduler-interval-seconds", "1",
                "--outbox-adopt-after-seconds", "3600"]
        gdb = ["gdb", "-q", "-nx", "-batch", "-ex",
               'break hsm_store_outbox_delete if $_streq(node_id, "old-name")',
               "-ex", "run", "-ex", "kill", "--args"]
        server = Hsmd(args, env=DEV_ENV, data_dir=server.data_dir, wrapper=gdb)
        assert server.proc.wait(timeout=60) == 0
        assert "Breakpoint 1, " in server.read_log(), server.read_log()
        # Killed at the adopted rows' delete (another of its own rows may be left too).
        assert rows_of(server.data_dir, "old-name") == [request_id]
        assert [r["request_id"] for r in recovered(server.data_dir)] == [request_id]
        server.log.close()
        server = Hsmd(args, env=DEV_ENV, data_dir=server.data_dir)
        assert eventually(lambda: rows_of(server.data_dir, "old-name") == [], 20), \
            outbox_rows(server.data_dir)
        assert [r["request_id"] for r in recovered(server.data_dir)
                if r["extra"].get("request_node") == "old-name"] == [request_id]
        # Logged once the pass is over: after the rows go and the hold is released.
        assert eventually(lambda: "adopted 1 row(s) of node old-name, which did not come back "
                          "within 3600 s; 0 recorded now" in server.read_log(), 10), \
            server.read_log()
        assert metric(server, "hsmd_audit_records_adopted_total") == 0
    finally:
        server.cleanup()


def expiring_key(kms, seconds):
    """An imported AES key whose material expires in `seconds`: the scheduler's work then."""
    from test_import import external_key, wrap
    key = external_key(kms)
    params = kms.get_parameters_for_import(KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                           WrappingKeySpec="RSA_2048")
    valid_to = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    kms.import_key_material(KeyId=key, ImportToken=params["ImportToken"],
                            EncryptedKeyMaterial=wrap(params, os.urandom(32), "RSAES_OAEP_SHA_256"),
                            ValidTo=valid_to)
    return key


@pytest.mark.skipif(not GDB, reason="killing hsmd between a scheduled change and its event "
                                    "needs gdb, allowed to attach")
def test_scheduled_work_killed_before_its_event_is_recorded_at_the_next_start():
    server = start_dev()
    try:
        kms = client(server)
        key = expiring_key(kms, 3)
        # The scheduler deletes the expired material, then dies before its event.
        killer = KilledAt(server, "on_kms_event")
        killer.wait()
        rows = outbox_rows(server.data_dir)
        assert [(r[1], r[2]) for r in rows] == [("ScheduledKeyWork", key)], rows
        assert not [r for r in audit_records(server.data_dir)
                    if r.get("op") == "DeleteExpiredKeyMaterial"]

        server = restart(server)
        kms = client(server)
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingImport"
        recs = recovered(server.data_dir)
        assert len(recs) == 1, recs
        r = recs[0]
        assert r["key_id"] == key and r["request_id"] == rows[0][0], r
        assert r["extra"]["request_op"] == "ScheduledKeyWork", r
        assert r["extra"]["request_principal"] == "hsmd", r
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10), \
            outbox_rows(server.data_dir)
    finally:
        server.cleanup()


def test_scheduled_work_recorded_leaves_no_row_and_its_event_names_it():
    server = start_dev()
    try:
        kms = client(server)
        key = expiring_key(kms, 2)
        assert eventually(lambda: [r for r in audit_records(server.data_dir)
                                 if r.get("op") == "DeleteExpiredKeyMaterial"], 30)
        ev = [r for r in audit_records(server.data_dir)
              if r.get("op") == "DeleteExpiredKeyMaterial"][0]
        # The event carries the id of its change's outbox row; the row is gone.
        assert ev["key_id"] == key and len(ev.get("request_id", "")) == 36, ev
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10), \
            outbox_rows(server.data_dir)
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="killing hsmd between a commit and its record needs gdb, "
                                    "allowed to attach")
def test_a_recovered_change_names_a_key_its_handler_names_only_afterwards():
    server = start_dev()
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10)
        killed_before_its_record(
            server, lambda: kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7))
        server = restart(server)
        kms = client(server)
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
        recs = recovered(server.data_dir)
        assert len(recs) == 1 and recs[0]["key_id"] == key, recs
        assert recs[0]["extra"]["request_op"] == "ScheduleKeyDeletion", recs
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="killing hsmd between a lockout and its record needs gdb, "
                                    "allowed to attach")
def test_a_lockout_whose_records_were_lost_is_recorded_at_the_next_start():
    from helpers import new_user
    server = start_dev(["--lockout-threshold", "2"])
    try:
        akid, secret = new_user(server, "victim", ["crypto-user"])
        st, _ = signed_call(server, "TrentService.ListKeys", {}, akid=akid, secret="x" * 40)
        assert st == 400
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10)
        # The second wrong signature locks the user; hsmd dies right after that commit,
        # before UserLocked and the refusal's record.
        killer = KilledAt(server, "hsm_server_auth_flush")
        with pytest.raises(Exception):
            signed_call(server, "TrentService.ListKeys", {}, akid=akid, secret="x" * 40)
        killer.wait()
        rows = outbox_rows(server.data_dir)
        assert [r[1] for r in rows] == ["Authenticate"], rows

        server = restart(server)
        st, body = signed_call(server, "TrentService.ListKeys", {}, akid=akid, secret=secret)
        assert st == 403 and "locked" in body.get("message", ""), (st, body)
        recs = recovered(server.data_dir)
        assert len(recs) == 1 and recs[0]["request_id"] == rows[0][0], recs
        extra = recs[0]["extra"]
        assert extra["request_op"] == "Authenticate", recs
        assert extra["request_principal"].endswith(":user/victim"), recs
        assert extra["request_access_key"] == akid, recs
        assert extra["request_source"].startswith("127.0.0.1:"), recs
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10)
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="killing hsmd between a commit and its record needs gdb, "
                                    "allowed to attach")
def test_a_change_after_a_failed_signature_is_recovered_as_what_it_did():
    """A correct signature after a wrong one resets the count (authentication's own commit,
    under the request's row) before the handler commits: the row names the handler's work."""
    from helpers import new_user
    server = start_dev(["--lockout-threshold", "5"])
    try:
        akid, secret = new_user(server, "alice", ["crypto-officer"])
        kms = client(server, akid=akid, secret=secret)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        st, _ = signed_call(server, "TrentService.ListKeys", {}, akid=akid, secret="x" * 40)
        assert st == 400
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10)
        killed_before_its_record(
            server, lambda: kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7))
        rows = outbox_rows(server.data_dir)
        assert [(r[1], r[2]) for r in rows] == [("ScheduleKeyDeletion", key)], rows
        server = restart(server)
        recs = recovered(server.data_dir)
        assert len(recs) == 1 and recs[0]["key_id"] == key, recs
        assert recs[0]["extra"]["request_op"] == "ScheduleKeyDeletion", recs
        assert recs[0]["extra"]["request_principal"].endswith(":user/alice"), recs
    finally:
        server.cleanup()


def test_a_count_reset_refused_for_want_of_audit_space_still_gets_its_record():
    """A refusal for want of audit space is counted, not recorded, unless its
    authentication changed the store (a failed-signature count reset): that one gets
    its record, from the space kept for records, and its row goes under it."""
    from conftest import signed_request
    from helpers import new_user
    from test_audit_server import mount_tmpfs
    tmp = tempfile.mkdtemp(prefix="hsmd-it-low-")
    audit_dir = os.path.join(tmp, "audit")
    mount_tmpfs(audit_dir, "16m")
    server = None
    try:
        server = start_dev(["--audit-dir", audit_dir, "--lockout-threshold", "5"])
        akid, secret = new_user(server, "alice", ["crypto-user"])
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        st, _ = signed_call(server, "TrentService.ListKeys", {}, akid=akid, secret="x" * 40)
        assert st == 400
        # Fill the disk until the trail cannot keep its reserve: requests are refused.
        subprocess.run(["dd", "if=/dev/zero", f"of={os.path.join(audit_dir, 'filler')}",
                        "bs=64k"], capture_output=True)
        for _ in range(20000):
            try:
                kms.encrypt(KeyId=key, Plaintext=b"x" * 2000,
                            EncryptionContext={"pad": "y" * 2000})
            except botocore.exceptions.ClientError:
                break
        r = signed_request(server, "TrentService.ListKeys", {}, akid=akid, secret=secret)
        assert r.status_code == 503, r.text
        request_id = r.headers["x-amzn-RequestId"]
        os.remove(os.path.join(audit_dir, "filler"))
        assert eventually(lambda: server.get("/readyz")[0] == 200, 30)
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10), \
            outbox_rows(server.data_dir)
        server.stop()
        recs = []
        for f in sorted(os.listdir(audit_dir)):
            if f.endswith(".jsonl"):
                with open(os.path.join(audit_dir, f)) as fh:
                    recs += [json.loads(line) for line in fh if line.strip()]
        mine = [x for x in recs if x.get("request_id") == request_id]
        assert [(x["op"], x["error"]) for x in mine] == \
            [("ListKeys", "ServiceUnavailableException")], mine
    finally:
        if server is not None:
            server.cleanup()
        subprocess.run(["umount", "-l", audit_dir])
        shutil.rmtree(tmp, ignore_errors=True)


# ---- hsmctl's offline changes -------------------------------------------------------------

def offline_rows(data_dir):
    """The rows hsmctl's offline changes left: under a node id of their own."""
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'hsmd.db')}?mode=ro", uri=True)
    try:
        return db.execute("SELECT node_id, request_id, operation, principal, source "
                          "FROM audit_outbox WHERE node_id LIKE 'hsmctl-%'").fetchall()
    finally:
        db.close()


def offline_hsmctl(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    return subprocess.run([HSMCTL, *args], capture_output=True, text=True, timeout=120, env=env)


def offline_killed_at(stop_at, *args):
    """hsmctl run under gdb and killed (SIGKILL) the first time it reaches stop_at."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    p = subprocess.run(["gdb", "-q", "-nx", "-batch", "-ex", f"break {stop_at}", "-ex", "run",
                        "-ex", "kill", "--args", HSMCTL, *args],
                       capture_output=True, text=True, timeout=180, env=env)
    assert "Breakpoint 1, " in p.stdout and ") killed]" in p.stdout, p.stdout + p.stderr


@pytest.fixture()
def offline_store(tmp_path):
    data, shares = tmp_path / "data", tmp_path / "shares"
    p = offline_hsmctl("init", "--data-dir", str(data), "--share-dir", str(shares), "--shares",
                       "2", "--threshold", "2", "--admin", "ops")
    assert p.returncode == 0, p.stderr
    quorum = ["--share", str(shares / "share-1-of-2.share"),
              "--share", str(shares / "share-2-of-2.share")]
    assert offline_rows(str(data)) == []  # the ceremony's own changes were recorded
    return str(data), quorum


def by_request(data_dir):
    return {r["request_id"]: r for r in audit_records(data_dir) if r.get("request_id")}


def test_offline_changes_carry_request_ids_and_leave_no_row(offline_store):
    data, quorum = offline_store
    for args in (["user", "create", "app", "--roles", "crypto-user"],
                 ["access-key", "create", "app"]):
        p = offline_hsmctl(*args, "--data-dir", data, *quorum)
        assert p.returncode == 0, p.stderr
        assert offline_rows(data) == []
    recs = [r for r in audit_records(data) if r.get("op") in ("CreateUser", "CreateAccessKey")
            and r.get("source") == "hsmctl" and r["extra"].get("target_user") == "app"]
    assert [r["op"] for r in recs] == ["CreateUser", "CreateAccessKey"], recs
    ids = [r.get("request_id") for r in recs]
    assert all(ids) and len(set(ids)) == 2, ids  # one per change


@pytest.mark.skipif(not GDB, reason="killing hsmctl between a change and its record needs gdb")
def test_an_offline_change_killed_before_its_record_is_recorded_at_the_nodes_start(
        offline_store):
    data, quorum = offline_store
    offline_killed_at('hsmctl_local_audit_fields if $_streq(operation, "CreateUser")',
                      "user", "create", "app", "--roles", "crypto-user", "--data-dir", data,
                      *quorum)
    # The change stands, without its record; its row names it.
    p = offline_hsmctl("user", "list", "--data-dir", data)
    assert p.returncode == 0 and "UserName: app" in p.stdout, p.stdout + p.stderr
    assert not [r for r in audit_records(data) if r.get("op") == "CreateUser"
                and r["extra"].get("target_user") == "app"]
    (row,) = offline_rows(data)
    assert row[2:] == ("hsmctl user create", f"local:uid={os.getuid()}", "hsmctl"), row
    request = row[1]
    server = Hsmd([], data_dir=data)  # the directory's node, sealed: its start settles it
    try:
        assert eventually(lambda: offline_rows(data) == [], 20), offline_rows(data)
        (rec,) = recovered(data)
        assert rec["request_id"] == request and rec["principal"] == "hsmd", rec
        assert rec["extra"]["request_op"] == "hsmctl user create", rec
        assert rec["extra"]["request_principal"] == f"local:uid={os.getuid()}", rec
        assert rec["extra"]["request_source"] == "hsmctl", rec
        assert rec["extra"]["record_lost"].startswith("hsmctl stopped before writing it"), rec
        assert metric(server, "hsmd_audit_records_recovered_total") == 1
    finally:
        server.stop()
    server = Hsmd([], data_dir=data)  # once: a second start finds nothing to settle
    try:
        assert len(recovered(data)) == 1
    finally:
        server.stop()
    p = verify(data)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.skipif(not GDB, reason="killing hsmctl between a change and its record needs gdb")
def test_the_next_offline_command_records_what_a_killed_one_left(offline_store):
    data, quorum = offline_store
    offline_killed_at('hsmctl_local_audit_fields if $_streq(operation, "CreateKey")',
                      "key", "create", "--data-dir", data, *quorum, "--description", "killed",
                      *IDENTITY)
    (row,) = offline_rows(data)
    request = row[1]
    p = offline_hsmctl("user", "create", "app", "--roles", "crypto-user", "--data-dir", data,
                       *quorum)
    assert p.returncode == 0, p.stderr
    assert "1 offline change(s) an earlier hsmctl made without a record" in p.stderr, p.stderr
    assert offline_rows(data) == []
    (rec,) = recovered(data)
    assert rec["request_id"] == request and rec["extra"]["request_op"] == "hsmctl key create"
    assert rec["principal"] == f"local:uid={os.getuid()}", rec
    # It names the key the killed command made: the only one, listed offline.
    p = offline_hsmctl("key", "list", "--data-dir", data)
    keys = [l.split()[0] for l in p.stdout.splitlines() if l.strip()]
    assert p.returncode == 0 and keys == [rec["key_id"]], (p.stdout, rec)
    # The later command's own records are there, once each; nothing is recorded again.
    p = offline_hsmctl("user", "disable", "app", "--data-dir", data, *quorum)
    assert p.returncode == 0, p.stderr
    assert len(recovered(data)) == 1 and offline_rows(data) == []
    p = verify(data)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.skipif(not GDB, reason="killing hsmctl before its rows go needs gdb")
def test_an_offline_change_recorded_before_a_kill_is_not_recorded_twice(offline_store):
    data, quorum = offline_store
    offline_killed_at("hsm_store_outbox_delete", "user", "create", "app", "--roles",
                      "crypto-user", "--data-dir", data, *quorum)
    (row,) = offline_rows(data)
    assert by_request(data)[row[1]]["op"] == "CreateUser", row  # recorded, then killed
    server = Hsmd([], data_dir=data)
    try:
        assert eventually(lambda: offline_rows(data) == [], 20), offline_rows(data)
        assert recovered(data) == []
    finally:
        server.stop()


# ---- hsmctl restore ------------------------------------------------------------------------

@pytest.fixture()
def backup_file(offline_store, tmp_path):
    data, quorum = offline_store
    p = offline_hsmctl("user", "create", "app", "--roles", "crypto-user", "--data-dir", data,
                       *quorum)
    assert p.returncode == 0, p.stderr
    (tmp_path / "backups").mkdir()
    p = offline_hsmctl("backup", "create", "--data-dir", data, *quorum,
                       "--dir", str(tmp_path / "backups"))
    assert p.returncode == 0, p.stderr
    path = dict(l.split(": ", 1) for l in p.stdout.splitlines() if ": " in l)["file"]
    return path, quorum


def test_a_restore_carries_its_request_id_and_leaves_no_row(backup_file, tmp_path):
    path, quorum = backup_file
    target = str(tmp_path / "restored")
    p = offline_hsmctl("restore", "--data-dir", target, *quorum, path)
    assert p.returncode == 0, p.stderr
    assert offline_rows(target) == []
    (rec,) = [r for r in audit_records(target) if r.get("op") == "Restore"]
    assert rec.get("request_id") and rec["source"] == "hsmctl", rec
    assert recovered(target) == []


@pytest.mark.skipif(not GDB, reason="killing hsmctl between a restore and its record needs gdb")
def test_a_restore_killed_before_its_record_is_recorded_at_the_nodes_start(backup_file,
                                                                           tmp_path):
    path, quorum = backup_file
    target = str(tmp_path / "restored")
    offline_killed_at('hsmctl_local_audit_fields if $_streq(operation, "Restore")',
                      "restore", "--data-dir", target, *quorum, path)
    # The store is in place, its restore on no trail; the restored store's row says so.
    assert os.path.exists(os.path.join(target, "hsmd.db"))
    assert not [r for r in audit_records(target) if r.get("op") == "Restore"]
    (row,) = offline_rows(target)
    assert row[2:] == ("hsmctl restore", f"local:uid={os.getuid()}", "hsmctl"), row
    server = Hsmd([], data_dir=target)
    try:
        assert eventually(lambda: offline_rows(target) == [], 20), offline_rows(target)
        (rec,) = recovered(target)
        assert rec["request_id"] == row[1] and rec["principal"] == "hsmd", rec
        assert rec["extra"]["request_op"] == "hsmctl restore", rec
    finally:
        server.stop()
    p = verify(target)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.skipif(not GDB, reason="killing hsmctl between a restore and its record needs gdb")
def test_the_next_offline_command_records_a_restore_a_killed_one_left(backup_file, tmp_path):
    path, quorum = backup_file
    target = str(tmp_path / "restored")
    offline_killed_at('hsmctl_local_audit_fields if $_streq(operation, "Restore")',
                      "restore", "--data-dir", target, *quorum, path)
    (row,) = offline_rows(target)
    p = offline_hsmctl("user", "disable", "app", "--data-dir", target, *quorum)
    assert p.returncode == 0, p.stderr
    assert "1 offline change(s) an earlier hsmctl made without a record" in p.stderr, p.stderr
    assert offline_rows(target) == []
    (rec,) = recovered(target)
    assert rec["request_id"] == row[1] and rec["extra"]["request_op"] == "hsmctl restore", rec
    p = verify(target)
    assert p.returncode == 0, p.stdout + p.stderr


def killed_restore_moved(backup_file, tmp_path):
    """A restore killed before its record, its directory then moved: served from another path."""
    path, quorum = backup_file
    staging, target = str(tmp_path / "staging"), str(tmp_path / "moved")
    offline_killed_at('hsmctl_local_audit_fields if $_streq(operation, "Restore")',
                      "restore", "--data-dir", staging, *quorum, path)
    (row,) = offline_rows(staging)
    shutil.move(staging, target)
    return target, quorum, row


@pytest.mark.skipif(not GDB, reason="killing hsmctl between a restore and its record needs gdb")
def test_a_killed_restore_is_recorded_at_the_start_of_a_node_serving_it_elsewhere(backup_file,
                                                                                  tmp_path):
    target, _, row = killed_restore_moved(backup_file, tmp_path)
    server = Hsmd([], data_dir=target)
    try:
        assert eventually(lambda: offline_rows(target) == [], 20), offline_rows(target)
        (rec,) = recovered(target)
        assert rec["request_id"] == row[1] and rec["extra"]["request_op"] == "hsmctl restore", rec
    finally:
        server.stop()
    p = verify(target)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.skipif(not GDB, reason="killing hsmctl between a restore and its record needs gdb")
def test_a_killed_restore_is_recorded_by_an_offline_command_on_the_moved_directory(backup_file,
                                                                                   tmp_path):
    target, quorum, row = killed_restore_moved(backup_file, tmp_path)
    p = offline_hsmctl("user", "disable", "app", "--data-dir", target, *quorum)
    assert p.returncode == 0, p.stderr
    assert "1 offline change(s) an earlier hsmctl made without a record" in p.stderr, p.stderr
    assert offline_rows(target) == []
    (rec,) = recovered(target)
    assert rec["request_id"] == row[1] and rec["extra"]["request_op"] == "hsmctl restore", rec
    server = Hsmd([], data_dir=target)  # nothing left for the node to record again
    try:
        assert len(recovered(target)) == 1
    finally:
        server.stop()
    p = verify(target)
    assert p.returncode == 0, p.stdout + p.stderr


# ---- Backups -------------------------------------------------------------------------------

def backup_files(data_dir):
    d = os.path.join(data_dir, "backups")
    return sorted(f for f in os.listdir(d) if f.endswith(".hsmbak")) if os.path.isdir(d) else []


def test_a_backup_s_event_carries_its_row_s_id_and_the_row_goes():
    server = start_dev(["--backup-interval-seconds", "1"])
    try:
        def backups():
            return [r for r in audit_records(server.data_dir) if r.get("op") == "Backup"]
        assert eventually(lambda: len(backups()) >= 2, 30), backups()
        for ev in backups():
            assert ev["outcome"] == "success" and len(ev.get("request_id", "")) == 36, ev
        assert len({ev["request_id"] for ev in backups()}) == len(backups())
        named = {ev["extra"]["file"] for ev in backups()}
        assert named <= set(backup_files(server.data_dir)), (named, backup_files(server.data_dir))
        assert eventually(lambda: not [r for r in outbox_rows(server.data_dir)
                                     if r[1] == "Backup"], 10), outbox_rows(server.data_dir)
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="killing hsmd between a backup and its event needs gdb, "
                                    "allowed to attach")
def test_a_backup_killed_before_its_event_is_recorded_at_the_next_start():
    server = start_dev(["--backup-interval-seconds", "1"])
    try:
        assert eventually(lambda: backup_files(server.data_dir), 30)
        # The next scheduled backup writes its file, then the node dies before its event.
        killer = KilledAt(server, 'hsm_server_event_of if $_streq(event, "Backup")')
        killer.wait()
        named = {r["extra"]["file"] for r in audit_records(server.data_dir)
                 if r.get("op") == "Backup"}
        unnamed = [f for f in backup_files(server.data_dir) if f not in named]
        assert len(unnamed) == 1, (unnamed, named)
        rows = [r for r in outbox_rows(server.data_dir) if r[1] == "Backup"]
        assert len(rows) == 1, outbox_rows(server.data_dir)

        server.log.close()
        server = Hsmd(["--dev", "--backup-interval-seconds", "0"], env=DEV_ENV,
                      data_dir=server.data_dir)
        (rec,) = recovered(server.data_dir)
        assert rec["request_id"] == rows[0][0] and rec["principal"] == "hsmd", rec
        assert rec["extra"]["request_op"] == "Backup", rec
        assert rec["extra"]["request_principal"] == "hsmd", rec
        assert eventually(lambda: outbox_rows(server.data_dir) == [], 10), \
            outbox_rows(server.data_dir)
        server.stop()
        p = verify(server.data_dir)
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        server.cleanup()


@pytest.mark.skipif(not GDB, reason="killing hsmd between a backup and its event needs gdb, "
                                    "allowed to attach")
def test_a_requested_backup_killed_before_its_event_is_recorded_as_its_request():
    server = start_dev(["--backup-interval-seconds", "0"])
    try:
        killer = KilledAt(server, 'hsm_server_event_of if $_streq(event, "Backup")')
        with pytest.raises(Exception):
            signed_call(server, "HsmdAdmin.CreateBackup", {})
        killer.wait()
        assert backup_files(server.data_dir) and not [
            r for r in audit_records(server.data_dir) if r.get("op") == "Backup"]
        (row,) = outbox_rows(server.data_dir)
        assert row[1] == "CreateBackup", row

        server.log.close()
        server = Hsmd(["--dev", "--backup-interval-seconds", "0"], env=DEV_ENV,
                      data_dir=server.data_dir)
        (rec,) = recovered(server.data_dir)
        assert rec["request_id"] == row[0], rec
        assert rec["extra"]["request_op"] == "CreateBackup", rec
        assert rec["extra"]["request_access_key"] == DEV_AKID, rec
    finally:
        server.cleanup()


def test_an_offline_backup_carries_its_request_id_and_leaves_no_row(offline_store, tmp_path):
    data, quorum = offline_store
    (tmp_path / "backups").mkdir()
    p = offline_hsmctl("backup", "create", "--data-dir", data, *quorum,
                       "--dir", str(tmp_path / "backups"))
    assert p.returncode == 0, p.stderr
    assert offline_rows(data) == []
    (rec,) = [r for r in audit_records(data) if r.get("op") == "Backup"]
    assert rec["extra"]["trigger"] == "offline" and rec.get("request_id"), rec


@pytest.mark.skipif(not GDB, reason="killing hsmctl between a backup and its record needs gdb")
def test_an_offline_backup_killed_before_its_record_is_recorded_next_time(offline_store,
                                                                          tmp_path):
    data, quorum = offline_store
    backups = tmp_path / "backups"
    backups.mkdir()
    offline_killed_at('hsmctl_local_audit_fields if $_streq(operation, "Backup")',
                      "backup", "create", "--data-dir", data, *quorum, "--dir", str(backups))
    # The file was written, its record not; the row says a backup was under way, and which.
    (killed,) = [f for f in os.listdir(backups) if f.endswith(".hsmbak")]
    assert not [r for r in audit_records(data) if r.get("op") == "Backup"]
    (row,) = offline_rows(data)
    op, _, backup_id = row[2].rpartition(" ")
    assert op == "hsmctl backup create" and killed.endswith(f"-{backup_id[:8]}.hsmbak"), row
    assert row[3:] == (f"local:uid={os.getuid()}", "hsmctl"), row
    p = offline_hsmctl("backup", "verify", *quorum, str(backups / killed))
    assert p.returncode == 0 and f"backup-id: {backup_id}\n" in p.stdout, p.stdout + p.stderr
    p = offline_hsmctl("backup", "create", "--data-dir", data, *quorum, "--dir", str(backups))
    assert p.returncode == 0, p.stderr
    assert "1 offline change(s) an earlier hsmctl made without a record" in p.stderr, p.stderr
    assert offline_rows(data) == []
    (rec,) = recovered(data)
    assert rec["request_id"] == row[1], rec
    assert rec["extra"]["request_op"] == "hsmctl backup create", rec
    assert rec["extra"]["backup_id"] == backup_id, rec  # the file it names survived
    p = verify(data)
    assert p.returncode == 0, p.stdout + p.stderr
