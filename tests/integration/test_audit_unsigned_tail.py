"""Records a crashed run left unsigned: the next run names them in its AuditLogOpened
(range and head, as it found them), and verify and report say plainly that no signature
of the run that wrote them covers them, though later signatures cover them by the chain
(so a rewrite made while the node was down is not passed off as signed at write)."""
import glob
import hashlib
import json
import os
import signal
import subprocess

from conftest import HSMCTL, client, start_dev
from test_audit_server import audit_pem, records, verify


def live_file(data):
    return sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))[-1]


def rechain_principal(path, old, new):
    """Rewrites old into new in the records after the last checkpoint and chains the
    lines again, as someone who can write the files while hsmd is stopped could."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]
    last_ck = max(i for i, line in enumerate(lines) if b'"type":"checkpoint"' in line)
    for i in range(last_ck + 1, len(lines)):
        lines[i] = lines[i].replace(old, new)
        prev = hashlib.sha256(lines[i - 1]).hexdigest().encode()
        j = lines[i].rfind(b'"prev":"')
        lines[i] = lines[i][:j + 8] + prev + b'"}'
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return last_ck


def test_records_a_crash_left_unsigned_are_named_as_never_signed(tmp_path):
    data = str(tmp_path / "data")
    server = start_dev(["--data-dir", data, "--backup-interval-seconds", "0"])
    server.data_dir = data
    try:
        pem = audit_pem(server, str(tmp_path))
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        for _ in range(3):
            kms.encrypt(KeyId=key, Plaintext=b"x")
        server.stop(signal.SIGKILL)
        before = records(server)
        assert before[-1]["type"] == "request"
        signed = [r["seq"] for r in before if r["type"] == "checkpoint"
                  and r["checkpoint"].get("signed")]
        first, last = signed[-1] + 1, before[-1]["seq"]
        rechain_principal(live_file(data), b"user/dev", b"user/alice")
        with open(live_file(data), "rb") as f:
            head = hashlib.sha256(f.read().split(b"\n")[-2]).hexdigest()

        server = start_dev(["--data-dir", data, "--backup-interval-seconds", "0"])
        server.data_dir = data
        server.stop()
        opened = [r for r in records(server) if r.get("op") == "AuditLogOpened"][-1]
        assert opened["extra"]["previous_shutdown"] == "unclean", opened
        assert opened["extra"]["unsigned_first_seq"] == str(first), opened
        assert opened["extra"]["unsigned_last_seq"] == str(last), opened
        assert opened["extra"]["unsigned_head"] == head, opened

        # The chain holds and later signatures cover the records: VALID, but said plainly.
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout
        assert (f"unsigned at write: records {first} to {last} were never signed by the run "
                f"that wrote them" in res.stdout), res.stdout
        assert f"the run that opened at seq {opened['seq']}" in res.stdout, res.stdout

        files = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))
        rep = subprocess.run([HSMCTL, "audit", "report", "--pubkey", pem] + files,
                             capture_output=True, text=True)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        assert f"unsigned at write: records {first} to {last}" in rep.stdout, rep.stdout
        assert (f"records {first} to {last} before it were never signed by the run that "
                f"wrote them" in rep.stdout), rep.stdout
        rep = subprocess.run([HSMCTL, "audit", "report", "--json", "--pubkey", pem] + files,
                             capture_output=True, text=True)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        uw = json.loads(rep.stdout)["verified"]["unsigned_at_write"]
        assert uw == [{"first_seq": first, "last_seq": last, "opened_seq": opened["seq"]}], uw
    finally:
        server.cleanup()


def test_a_clean_restart_inherits_nothing_unsigned(tmp_path):
    data = str(tmp_path / "data")
    server = start_dev(["--data-dir", data, "--backup-interval-seconds", "0"])
    server.data_dir = data
    try:
        pem = audit_pem(server, str(tmp_path))
        client(server).create_key()
        server.stop()
        server = start_dev(["--data-dir", data, "--backup-interval-seconds", "0"])
        server.data_dir = data
        server.stop()
        opened = [r for r in records(server) if r.get("op") == "AuditLogOpened"][-1]
        assert opened["extra"]["previous_shutdown"] == "clean", opened
        assert "unsigned_first_seq" not in opened["extra"], opened
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "unsigned at write" not in res.stdout, res.stdout
    finally:
        server.cleanup()
