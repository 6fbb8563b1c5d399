"""The configuration read again on SIGHUP, without the restart that would seal the node:
log_level and the incident levers change at once, every other changed setting is named as waiting for the next
start, and a configuration that would not start the node is reported now and changes
nothing.  Each reading is on the audit trail and in /metrics."""
import http.client
import os
import re
import signal
import time

import pytest

from conftest import DEV_AKID, DEV_SECRET, Hsmd, unsigned_call
from helpers import (audit_records, audit_records_until, eventually, gdb_can_trace, metric,
                     new_user)

# An info line each SIGHUP writes on a node without TLS: it shows which level is in force.
INFO_LINE = "there are no TLS files to load"


def start(conf, text):
    with open(conf, "w") as f:
        f.write(text)
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    return Hsmd(["--dev", "--config", conf], env=env)


def edit(conf, text):
    with open(conf + ".new", "w") as f:
        f.write(text)
    os.replace(conf + ".new", conf)


def reloads(server):
    st, body, _ = server.get("/metrics")
    assert st == 200
    got = dict(re.findall(rb'^hsmd_config_reloads_total\{result="(\w+)"\} (\d+)$', body, re.M))
    return {k.decode(): int(v) for k, v in got.items()}


def events(server, n):
    found = audit_records_until(server.data_dir, lambda r: r.get("op") == "ConfigReload", n=n)
    assert len(found) == n, found
    return found


def hup(server, n_events):
    """Sends SIGHUP and returns the ConfigReload events once there are n_events and the
    readings are done: the event is written before a change is applied, the counter after."""
    server.proc.send_signal(signal.SIGHUP)
    found = events(server, n_events)
    assert eventually(lambda: sum(reloads(server).values()) >= n_events), reloads(server)
    return found


def test_sighup_applies_log_level_and_names_what_waits_for_a_restart(tmp_path):
    conf = str(tmp_path / "hsmd.conf")
    server = start(conf, "log_level = info\nbackup_retention_days = 90\n")
    try:
        assert reloads(server) == {"success": 0, "failure": 0}
        assert metric(server, "hsmd_config_last_reload_successful") == 1
        assert metric(server, "hsmd_config_restart_pending") == 0

        edit(conf, "log_level = warn\nbackup_retention_days = 30\napproval_ttl_seconds = 3600\n")
        ev = hup(server, 1)[0]
        assert ev["outcome"] == "success", ev
        assert ev["extra"]["applied"] == "log_level: info -> warn"
        assert ev["extra"]["restart_pending_count"] == "2"
        assert sorted(ev["extra"]["restart_pending"].split(", ")) == \
            ["approval_ttl_seconds", "backup_retention_days"]
        assert eventually(lambda: reloads(server)["success"] == 1)
        assert metric(server, "hsmd_config_restart_pending") == 2
        log = server.read_log()
        assert (f"backup_retention_days changed from '90' to '30' ({conf}:2); it takes effect "
                "at the next start") in log, log
        assert f"approval_ttl_seconds changed from '86400' to '3600' ({conf}:3)" in log
        assert "configuration read again: log_level: info -> warn at once; 2 settings wait " \
            "for the next start" in log

        # Back to info, and the other two as they were: nothing waits any more.
        edit(conf, "log_level = info\nbackup_retention_days = 90\n")
        ev = hup(server, 2)[1]
        assert ev["extra"] == {"restart_pending_count": "0", "applied": "log_level: warn -> info"}
        # The TLS step of each SIGHUP writes an info line: only this one's, not the first's,
        # which ran under warn.
        assert eventually(lambda: INFO_LINE in server.read_log()), server.read_log()
        assert server.read_log().count(INFO_LINE) == 1
        assert metric(server, "hsmd_config_restart_pending") == 0

        # Nothing changed: recorded all the same, and said so.
        ev = hup(server, 3)[2]
        assert ev["extra"] == {"restart_pending_count": "0"}
        assert eventually(lambda: "configuration read again: nothing changed"
                          in server.read_log())
        assert reloads(server) == {"success": 3, "failure": 0}
        assert server.get("/healthz")[0] == 200
    finally:
        server.cleanup()


def test_a_configuration_that_would_not_start_is_reported_and_changes_nothing(tmp_path):
    conf = str(tmp_path / "hsmd.conf")
    server = start(conf, "log_level = info\n")
    try:
        edit(conf, "log_level = warn\nbogus = 1\n")
        ev = hup(server, 1)[0]
        assert ev["outcome"] == "error" and ev["error"] == "ValidationException", ev
        assert ev["extra"] == {"reason": f"{conf}:2: unknown key 'bogus'"}
        assert eventually(lambda: reloads(server)["failure"] == 1)
        assert metric(server, "hsmd_config_last_reload_successful") == 0
        log = server.read_log()
        assert "the configuration does not load, and would not start the node as it stands" in log
        # log_level stayed info: the TLS step's info line is there.
        assert eventually(lambda: INFO_LINE in server.read_log())

        # A value out of range is caught the same way, and named with its source.
        edit(conf, "log_level = warn\nlockout_threshold = 0\n")
        ev = hup(server, 2)[1]
        assert ev["outcome"] == "error"
        assert ev["extra"]["reason"].startswith(f"lockout_threshold = '0' (from {conf}:2)")
        assert eventually(lambda: reloads(server)["failure"] == 2)

        edit(conf, "log_level = info\n")
        ev = hup(server, 3)[2]
        assert ev["outcome"] == "success" and ev["extra"] == {"restart_pending_count": "0"}
        assert eventually(lambda: metric(server, "hsmd_config_last_reload_successful") == 1)
        assert reloads(server) == {"success": 1, "failure": 2}
    finally:
        server.cleanup()


@pytest.mark.skipif(not gdb_can_trace(), reason="an audit outage is made with gdb, allowed to "
                                              "attach")
def test_a_reading_the_trail_cannot_record_changes_nothing(tmp_path):
    """In an audit outage the configuration loads but its ConfigReload event cannot be
    written: log_level stays as it was, and the reading counts as failed."""
    from test_audit_server import TrailOutage
    conf = str(tmp_path / "hsmd.conf")
    server = start(conf, "log_level = info\n")
    try:
        outage = TrailOutage(server, str(tmp_path))
        try:
            st, _ = unsigned_call(server, "HsmdAdmin.Status", {})  # its record starts it
            assert st in (409, 503)  # it ran, its result withheld; or refused
            assert eventually(lambda: metric(server, "hsmd_audit_healthy") == 0)
            edit(conf, "log_level = warn\n")
            server.proc.send_signal(signal.SIGHUP)
            assert eventually(lambda: reloads(server)["failure"] == 1), server.read_log()
            # Still info: the TLS step of the same SIGHUP writes its info line.
            assert eventually(lambda: INFO_LINE in server.read_log()), server.read_log()
            assert "could not be recorded in the audit trail: nothing was changed" in \
                server.read_log()
            assert reloads(server)["success"] == 0
            # The file loads, but nothing of it took effect: the reading failed, as the
            # TLS reload of the same SIGHUP did, until one is recorded.
            assert metric(server, "hsmd_config_last_reload_successful") == 0
        finally:
            outage.end()
        assert eventually(lambda: metric(server, "hsmd_audit_healthy") == 1, 30)
        ev = hup(server, 1)[0]
        assert ev["extra"]["applied"] == "log_level: info -> warn"
        assert eventually(lambda: metric(server, "hsmd_config_last_reload_successful") == 1)
    finally:
        server.cleanup()


def test_the_incident_levers_apply_at_once(tmp_path):
    """lockout_threshold and the refusal record rates, which an operator may need in an
    incident, change without a restart; a rate lowered under a full bucket holds at once."""
    from test_auth import bad, users
    from test_refusals import flood
    conf = str(tmp_path / "hsmd.conf")
    server = start(conf, "lockout_threshold = 5\nrefusal_record_rate = 10\n")
    try:
        akid, secret = new_user(server, "lever", ["crypto-user"])
        flood(server, 30)  # within the burst of 100: each gets a record of its own
        assert metric(server, "hsmd_refusals_summarized_total") == 0

        edit(conf, "lockout_threshold = 2\nrefusal_record_rate = 1\n")
        ev = hup(server, 1)[0]
        assert ev["extra"] == {"restart_pending_count": "0",
                               "applied": "lockout_threshold: 5 -> 2, refusal_record_rate: 10 -> 1"}
        bad(server, akid, secret, 2)
        assert users(server)["lever"]["Locked"] is True
        # A burst of 10 now, though the bucket held 70: at most 10 more records of their
        # own, and one a second while the flood lasts.
        started = time.monotonic()
        flood(server, 40)
        seconds = time.monotonic() - started
        assert metric(server, "hsmd_refusals_summarized_total") >= 30 - int(seconds) - 1
    finally:
        server.cleanup()


def test_a_lockout_a_lowered_threshold_brings_is_on_the_trail(tmp_path):
    """A user with more failures than a lowered lockout_threshold is locked by the next
    one, and that failure is followed by its UserLocked event, once, as at the threshold."""
    from test_auth import bad, users
    conf = str(tmp_path / "hsmd.conf")
    server = start(conf, "lockout_threshold = 5\n")
    try:
        akid, secret = new_user(server, "lowered", ["crypto-user"])
        bad(server, akid, secret, 3)
        assert users(server)["lowered"]["FailedAuthentications"] == 3
        edit(conf, "lockout_threshold = 2\n")
        hup(server, 1)
        bad(server, akid, secret, 1)
        u = users(server)["lowered"]
        assert u["Locked"] is True and u["FailedAuthentications"] == 4
        locked = audit_records_until(server.data_dir, lambda r: r.get("op") == "UserLocked")
        assert len(locked) == 1 and locked[0]["extra"]["target_user"] == "lowered", locked
        bad(server, akid, secret, 1)  # refused as locked: no second event
        time.sleep(0.5)
        assert len([r for r in audit_records(server.data_dir)
                    if r.get("op") == "UserLocked"]) == 1
    finally:
        server.cleanup()


def held_connection(server, source):
    """A keep-alive connection from `source` that has had one answer."""
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5,
                                   source_address=(source, 0))
    c.request("GET", "/healthz")
    r = c.getresponse()
    r.read()
    assert r.status == 200
    return c


def answered(conn):
    try:
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        r.read()
        return r.status == 200
    except (OSError, http.client.HTTPException):
        return False


def test_max_connections_per_source_applies_at_once(tmp_path):
    """One client holding the connections is bounded without a restart: the source above a
    new bound keeps what it holds and opens nothing more until it is below it."""
    conf = str(tmp_path / "hsmd.conf")
    server = start(conf, "max_connections_per_source = 0\n")
    held = []
    try:
        held = [held_connection(server, "127.0.0.5") for _ in range(4)]
        edit(conf, "max_connections_per_source = 3\n")
        ev = hup(server, 1)[0]
        assert ev["extra"] == {"restart_pending_count": "0",
                               "applied": "max_connections_per_source: 0 -> 3"}
        refused = re.compile(rb'^hsmd_http_connections_refused_total\{reason="per_source"\} '
                             rb'(\d+)$', re.M)

        def refusals():
            st, body, _ = server.get("/metrics")  # from 127.0.0.1, which holds none
            assert st == 200
            return int(refused.search(body).group(1))

        assert refusals() == 0
        assert not answered(http.client.HTTPConnection(
            "127.0.0.1", server.port, timeout=5, source_address=("127.0.0.5", 0)))
        assert refusals() == 1
        assert all(answered(c) for c in held)  # what it held stays open
        held.pop().close()
        held.pop().close()
        held.append(eventually(lambda: answered_new(server)))
        assert not answered(http.client.HTTPConnection(
            "127.0.0.1", server.port, timeout=5, source_address=("127.0.0.5", 0)))
        assert "max_connections_per_source (3)" in server.read_log()

        edit(conf, "max_connections_per_source = 0\n")
        hup(server, 2)
        held += [held_connection(server, "127.0.0.5") for _ in range(3)]
        assert len(held) == 6
    finally:
        for c in held:
            c.close()
        server.cleanup()


def answered_new(server):
    """A new connection from 127.0.0.5 if it is answered, else None."""
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5,
                                   source_address=("127.0.0.5", 0))
    if answered(c):
        return c
    c.close()
    return None


def test_a_setting_the_next_start_would_refuse_is_reported_now(tmp_path):
    """A waiting setting that loads but that the next start would refuse once it looks at the
    machine (a copy directory that is not there, or is the directory it copies; a quorum the
    store's custodians cannot meet) is reported at the SIGHUP as a configuration that does
    not load: named with its source, nothing changed, and HsmdConfigInvalid's metric at 0."""
    conf = str(tmp_path / "hsmd.conf")
    server = start(conf, "log_level = info\n")
    missing = str(tmp_path / "unmounted")
    there = tmp_path / "dr"
    there.mkdir()
    try:
        audit_dir = os.path.join(server.data_dir, "audit")
        cases = [
            (f"backup_copy_dir = {missing}\n",
             f"backup_copy_dir = '{missing}' does not exist", "backup_copy_dir"),
            (f"audit_copy_dir = {missing}\n",
             f"audit_copy_dir = '{missing}' does not exist", "audit_copy_dir"),
            (f"audit_copy_dir = {audit_dir}\n", "audit_copy_dir", "audit_copy_dir"),
            ("approval_quorum = 2\n",
             "approval_quorum = 2, but the store has 0 enabled custodians", "approval_quorum"),
        ]
        for i, (line, reason, setting) in enumerate(cases, start=1):
            edit(conf, "log_level = warn\n" + line)
            ev = hup(server, i)[i - 1]
            assert ev["outcome"] == "error" and ev["error"] == "ValidationException", ev
            why = ev["extra"]["reason"]
            assert why.startswith(reason), why
            assert why.endswith(f"({setting} from {conf}:2)"), why
            assert eventually(lambda: reloads(server)["failure"] == i)
            assert metric(server, "hsmd_config_last_reload_successful") == 0
            assert metric(server, "hsmd_config_restart_pending") == 0
        # log_level stayed info through all of them.
        assert server.read_log().count(INFO_LINE) == len(cases)

        # A copy directory that is there: it waits for the next start, as any other setting;
        # so do new backup and audit directories beside it, which the start makes.
        edit(conf, f"log_level = info\nbackup_copy_dir = {there}\naudit_copy_dir = {there}\n"
                   f"backup_dir = {tmp_path / 'new-backups'}\naudit_dir = {tmp_path / 'new-audit'}\n")
        ev = hup(server, len(cases) + 1)[-1]
        assert ev["outcome"] == "success", ev
        assert sorted(ev["extra"]["restart_pending"].split(", ")) == [
            "audit_copy_dir", "audit_dir", "backup_copy_dir", "backup_dir"], ev
        assert eventually(lambda: metric(server, "hsmd_config_last_reload_successful") == 1)
        assert metric(server, "hsmd_config_restart_pending") == 4
        assert not [p for p in os.listdir(there) if p.startswith(".hsmd-probe")]
        for made_by_start in (missing, tmp_path / "new-backups", tmp_path / "new-audit"):
            assert not os.path.exists(made_by_start)  # not made by the check
    finally:
        server.cleanup()


def test_a_config_file_others_may_write_is_warned_of(tmp_path):
    """Whoever can edit the configuration file chooses the next start's store, trail and
    quorum: a file its group or others may write is warned of at start and at each
    SIGHUP, with the chmod that ends it."""
    conf = str(tmp_path / "hsmd.conf")
    with open(conf, "w") as f:
        f.write("log_level = info\n")
    os.chmod(conf, 0o666)
    server = start(conf, "log_level = info\n")
    try:
        said = f"config file {conf} may be written by its group and others"
        assert said in server.read_log() and f"(chmod go-w {conf})" in server.read_log()
        assert server.read_log().count(said) == 1
        os.chmod(conf, 0o620)
        hup(server, 1)
        assert eventually(lambda: f"config file {conf} may be written by its group:"
                          in server.read_log()), server.read_log()
        os.chmod(conf, 0o644)
        hup(server, 2)  # returns once the reading is done
        assert server.read_log().count("may be written by its") == 2  # start, first SIGHUP
    finally:
        server.cleanup()
