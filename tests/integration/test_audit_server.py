"""The audit trail as hsmd writes it: one record per request, no secrets,
fail closed with bounded refusals when the log cannot be written, automatic
recovery, and a chain that verifies across restarts."""
import base64
import concurrent.futures
import contextlib
import glob
import json
import os
import hashlib
import re
import shutil
import signal
import subprocess
import tempfile
import time

import botocore.exceptions
import pytest

from conftest import (DEV_AKID, DEV_SECRET, HSMCTL, Hsmd, client, signed_call, start_dev,
                      unsigned_call)
from helpers import audit_records, eventually, gdb_can_trace, metric


def audit_pem(server, directory):
    """The node's audit public key, written to DIRECTORY/audit.pem; its path."""
    st, pub = signed_call(server, "HsmdAdmin.AuditPublicKey", {})
    assert st == 200 and "BEGIN PUBLIC KEY" in pub["PublicKey"], pub
    pem = os.path.join(directory, "audit.pem")
    with open(pem, "w") as f:
        f.write(pub["PublicKey"])
    return pem


def records(server):
    out = []
    for path in sorted(glob.glob(os.path.join(server.data_dir, "audit", "audit-*.jsonl"))):
        with open(path) as f:
            out += [json.loads(line) for line in f if line.strip()]
    return out


def verify(server, pubkey=None, live=False, extra=()):
    files = sorted(glob.glob(os.path.join(server.data_dir, "audit", "audit-*.jsonl")))
    cmd = [HSMCTL, "audit", "verify"] + (["--live"] if live else []) + list(extra)
    if pubkey:
        cmd += ["--pubkey", pubkey]
    return subprocess.run(cmd + files, capture_output=True, text=True)


def test_every_request_is_recorded_with_its_request_id():
    server = start_dev()
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        ids = []
        for i in range(5):
            r = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"n": str(i)})
            ids.append(r["ResponseMetadata"]["RequestId"])
        with pytest.raises(botocore.exceptions.ClientError) as e:
            kms.describe_key(KeyId="alias/missing")
        ids.append(e.value.response["ResponseMetadata"]["RequestId"])
        bad = client(server, secret=DEV_SECRET + "x")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            bad.list_keys()
        denied_id = e.value.response["ResponseMetadata"]["RequestId"]
        by_id = {r.get("request_id"): r for r in records(server)}
        for rid in ids[:5]:
            rec = by_id[rid]
            assert rec["op"] == "Encrypt" and rec["outcome"] == "success"
            assert rec["key_id"] == key and rec["key_version"] == 1
            assert rec["principal"].endswith(":user/dev") and rec["access_key"] == DEV_AKID
        assert by_id[ids[5]]["outcome"] == "error" and by_id[ids[5]]["error"] == "NotFoundException"
        assert by_id[denied_id]["outcome"] == "denied"
        assert by_id[denied_id]["error"] == "InvalidSignatureException"
        seqs = [r["seq"] for r in records(server)]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        server.cleanup()


def test_failed_decrypts_name_the_key_their_ciphertext_names():
    """A Decrypt (or ReEncrypt) that fails after its ciphertext's header parsed
    is recorded against the key that header names, so the key's trail (and
    `audit report --key`) shows it; the caller's answer is unchanged.  A
    ciphertext that does not parse names no key."""
    from helpers import audit_record, raises
    server = start_dev()
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        other = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"app": "a"})[
            "CiphertextBlob"]
        r = raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=blob,
                   EncryptionContext={"app": "b"})
        rec = audit_record(server.data_dir, r["ResponseMetadata"]["RequestId"])
        assert (rec["op"], rec["outcome"], rec.get("key_id")) == ("Decrypt", "error", key), rec
        # Named the wrong key: the record names the ciphertext's.
        r = raises("IncorrectKeyException", kms.decrypt, CiphertextBlob=blob, KeyId=other,
                   EncryptionContext={"app": "a"})
        assert audit_record(server.data_dir, r["ResponseMetadata"]["RequestId"])["key_id"] == key
        r = raises("InvalidCiphertextException", kms.re_encrypt, CiphertextBlob=blob,
                   DestinationKeyId=other, SourceEncryptionContext={"app": "b"})
        rec = audit_record(server.data_dir, r["ResponseMetadata"]["RequestId"])
        assert (rec["op"], rec["outcome"]) == ("ReEncrypt", "error"), rec
        assert rec["extra"]["source_key_id"] == key, rec
        r = raises("InvalidCiphertextException", kms.decrypt, CiphertextBlob=b"\x09" * 64,
                   message="ciphertext")
        rec = audit_record(server.data_dir, r["ResponseMetadata"]["RequestId"])
        assert rec["outcome"] == "error" and "key_id" not in rec, rec
    finally:
        server.cleanup()


def test_encryption_context_values_are_keyed_hashes():
    server = start_dev()
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        r = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"tenant": "CANARY-TENANT-77"})
        rec = next(x for x in records(server)
                   if x.get("request_id") == r["ResponseMetadata"]["RequestId"])
        field = rec["extra"]["encryption_context"]
        assert field.startswith("tenant=") and "CANARY" not in field
        env = dict(os.environ, AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET)
        out = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "audit", "hash",
                              "CANARY-TENANT-77"], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert field == "tenant=" + out.stdout.strip()[:32]
        other = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "audit", "hash",
                                "CANARY-TENANT-78"], capture_output=True, text=True, env=env)
        assert field != "tenant=" + other.stdout.strip()[:32]
        # "-": the value from standard input (an argument shows in /proc to every user),
        # less its line end.
        piped = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "audit", "hash", "-"],
                               input="CANARY-TENANT-77\n", capture_output=True, text=True,
                               env=env)
        assert piped.returncode == 0, piped.stderr
        assert piped.stdout == out.stdout
        bad = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "audit", "hash", "-"],
                             input=b"caf\xe9\n", capture_output=True, env=env)
        assert bad.returncode == 1 and b"not UTF-8" in bad.stderr, bad.stderr
    finally:
        server.cleanup()


def forms(secret: bytes):
    """The ways a secret could leak into text: raw, hex, base64 (std/url)."""
    out = {secret, secret.hex().encode(), base64.b64encode(secret),
           base64.urlsafe_b64encode(secret).rstrip(b"=")}
    return {f for f in out if len(f) >= 8}


def test_secrets_never_reach_logs_or_store():
    server = start_dev()
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        canaries = set()
        plaintext = b"CANARY-PLAINTEXT-" + os.urandom(8).hex().encode()
        ct = kms.encrypt(KeyId=key, Plaintext=plaintext)["CiphertextBlob"]
        canaries |= forms(plaintext)
        for _ in range(3):
            canaries |= forms(kms.generate_data_key(KeyId=key, KeySpec="AES_256")["Plaintext"])
        canaries |= forms(kms.decrypt(CiphertextBlob=ct)["Plaintext"])
        canaries |= forms(DEV_SECRET.encode())
        # A new access key's secret.
        st, out = signed_call(server, "HsmdAdmin.CreateUser",
                              {"UserName": "canary", "Roles": ["crypto-user"]})
        assert st == 200, out
        st, out = signed_call(server, "HsmdAdmin.CreateAccessKey", {"UserName": "canary"})
        assert st == 200, out
        canaries |= forms(out["SecretAccessKey"].encode())
        with open(os.path.join(server.data_dir, "dev-unseal.share")) as f:
            share_value = [l.split()[1] for l in f if l.startswith("value ")][0]
        canaries |= forms(share_value.encode()) | forms(bytes.fromhex(share_value))
        log_text = server.read_log()
        server.stop()
        haystacks = {"hsmd output": log_text.encode()}
        for path in glob.glob(os.path.join(server.data_dir, "**"), recursive=True):
            if os.path.isfile(path) and not path.endswith("dev-unseal.share"):
                with open(path, "rb") as f:
                    haystacks[path] = f.read()
        assert any("audit-" in p for p in haystacks) and any("hsmd.db" in p for p in haystacks)
        for name, data in haystacks.items():
            for c in canaries:
                if c == DEV_SECRET.encode() and name == "hsmd output":
                    continue  # dev mode prints its own credentials on purpose
                assert c not in data, f"secret found in {name}"
    finally:
        server.cleanup()


def test_chain_continues_across_restarts_and_verifies_with_the_audit_key():
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-restart-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data])
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key, Plaintext=b"one")
        st, pub = signed_call(server, "HsmdAdmin.AuditPublicKey", {})
        assert st == 200 and "BEGIN PUBLIC KEY" in pub["PublicKey"]
        server.stop()
        server2 = start_dev(["--data-dir", data])
        try:
            client(server2).encrypt(KeyId=key, Plaintext=b"two")
        finally:
            server2.stop()
        pem = os.path.join(tmp, "audit.pem")
        with open(pem, "w") as f:
            f.write(pub["PublicKey"])
        server.data_dir = data
        res = verify(server, pubkey=pem)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "VALID" in res.stdout
        seqs = [r["seq"] for r in records(server)]
        assert seqs == list(range(1, len(seqs) + 1))
        ops = [r.get("op") for r in records(server)]
        assert ops.count("Startup") == 2 and ops.count("Shutdown") == 2
        # One changed byte anywhere is caught.
        path = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))[0]
        with open(path, "rb") as f:
            raw = bytearray(f.read())
        i = raw.index(b'"op":"Encrypt"') + 6
        raw[i] ^= 0x01
        with open(path, "wb") as f:
            f.write(raw)
        res = verify(server, pubkey=pem)
        assert res.returncode != 0 and "line" in (res.stdout + res.stderr)
    finally:
        server.cleanup()
        subprocess.run(["rm", "-rf", tmp])


def test_a_crash_after_signing_verifies_once_a_later_run_signs(tmp_path):
    """kill -9 of a node that signed and then answered requests leaves them unsigned;
    the next run's signed checkpoint covers them by the chain, so the trail verifies
    (the requests a crash left unsigned are not a rewrite)."""
    data = str(tmp_path / "data")
    server = start_dev(["--data-dir", data])
    server.data_dir = data
    try:
        pem = audit_pem(server, str(tmp_path))
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        for _ in range(5):
            kms.encrypt(KeyId=key, Plaintext=b"x")
        server.stop(signal.SIGKILL)
        assert records(server)[-1]["type"] == "request"
        server = start_dev(["--data-dir", data])
        server.data_dir = data
        client(server).encrypt(KeyId=key, Plaintext=b"after")
        server.stop()
        opened = [r for r in records(server) if r.get("op") == "AuditLogOpened"]
        assert opened[-1]["extra"]["previous_shutdown"] == "unclean", opened
        res = verify(server, pubkey=pem)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout + res.stderr
    finally:
        server.cleanup()


def test_records_appended_after_a_shutdown_checkpoint_are_refused(tmp_path):
    """A run ends with its shutdown checkpoint: records added after it, chained and
    ended with an unsigned shutdown checkpoint of their own, belong to no run."""
    data = str(tmp_path / "data")
    server = start_dev(["--data-dir", data])
    server.data_dir = data
    try:
        pem = audit_pem(server, str(tmp_path))
        client(server).create_key()
        server.stop()
        path = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))[-1]
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]
        last = json.loads(lines[-1])
        assert last["checkpoint"]["reason"] == "shutdown" and last["checkpoint"]["signed"]
        forged = [('{"seq":%d,"time":"%s","node":"%s","type":"request","principal":'
                   '"arn:aws:iam::111122223333:user/dev","access_key":"%s","source":'
                   '"10.0.0.5:5555","op":"DisableKey","key_id":"%s","outcome":"success",'
                   '"request_id":"11111111-2222-3333-4444-555555555555","latency_us":100'
                   % (last["seq"] + 1, last["time"], last["node"], DEV_AKID,
                      "1234abcd-12ab-34cd-56ef-1234567890ab")),
                  ('{"seq":%d,"time":"%s","node":"%s","type":"checkpoint","checkpoint":'
                   '{"reason":"shutdown","kept_from":1,"trail_format":2,"signed":false,'
                   '"why":"sealed"}' % (last["seq"] + 2, last["time"], last["node"]))]
        out, prev = list(lines), lines[-1]
        for body in forged:
            line = (body + ',"prev":"%s"}' % hashlib.sha256(prev).hexdigest()).encode()
            out.append(line)
            prev = line
        with open(path, "wb") as f:
            f.write(b"".join(ln + b"\n" for ln in out))
        res = verify(server, pubkey=pem)
        assert res.returncode == 1, res.stdout
        assert "follows a shutdown checkpoint, which ends its run" in res.stdout, res.stdout
    finally:
        server.cleanup()


def test_a_live_trail_verified_without_live_reads_as_truncated_not_rewritten(tmp_path):
    """A running node's trail ends with requests its next checkpoint will sign: verified
    with the key but without --live it is refused as truncated, naming --live, not called
    rewritten; with --live it verifies."""
    server = start_dev(["--data-dir", str(tmp_path / "data")])
    server.data_dir = str(tmp_path / "data")
    try:
        pem = audit_pem(server, str(tmp_path))
        kms = client(server)
        kms.encrypt(KeyId=kms.create_key()["KeyMetadata"]["KeyId"], Plaintext=b"x")
        assert records(server)[-1]["type"] != "checkpoint"
        res = verify(server, pubkey=pem)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "problem: truncated: the log ends at seq" in res.stdout, res.stdout
        assert "still writing it (--live)" in res.stdout and "rewritten" not in res.stdout, \
            res.stdout
        res = verify(server, pubkey=pem, live=True)
        assert res.returncode == 0 and "result: VALID" in res.stdout, res.stdout + res.stderr
    finally:
        server.cleanup()


def test_shutdown_checkpoint_is_signed_so_a_forged_end_shows():
    """An unsealed node that stops signs its shutdown checkpoint: every record,
    the Shutdown event included, is covered by a signature.  A trail cut short
    and ended with a forged unsigned shutdown checkpoint then shows records
    that no signature covers."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-shutdown-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data])
    server.data_dir = data
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key, Plaintext=b"one")
        pem = audit_pem(server, tmp)
        server.stop()
        last = records(server)[-1]
        assert last["type"] == "checkpoint" and last["checkpoint"]["reason"] == "shutdown"
        assert last["checkpoint"]["signed"] is True, last
        res = verify(server, pubkey=pem)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"up to seq {last['seq']} (0 records after it)" in res.stdout, res.stdout
        # Cut the Shutdown event and forge an unsigned end in its place.
        path = sorted(glob.glob(os.path.join(server.data_dir, "audit", "audit-*.jsonl")))[-1]
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]
        kept = lines[:-2]
        prev = json.loads(kept[-1])
        forged = ('{"seq":%d,"time":"%s","node":"%s","type":"checkpoint","checkpoint":'
                  '{"reason":"shutdown","trail_format":2,"signed":false,"why":"sealed"},'
                  '"prev":"%s"}' %
                  (prev["seq"] + 1, prev["time"], prev["node"],
                   hashlib.sha256(kept[-1]).hexdigest()))
        with open(path, "wb") as f:
            f.write(b"".join(l + b"\n" for l in kept + [forged.encode()]))
        res = verify(server, pubkey=pem)
        assert "(0 records after it)" not in res.stdout, res.stdout
        # With the key it fails: the node was signing, and nothing sealed, stopped or
        # restarted it before that checkpoint.
        assert res.returncode == 1, res.stdout
        assert "problem: unsigned: this shutdown checkpoint carries no signature" in res.stdout, \
            res.stdout
        # Forged without the format every checkpoint declares: refused as a rewrite.
        with open(path, "wb") as f:
            f.write(b"".join(l + b"\n" for l in kept + [forged.replace(
                ',"trail_format":2', '').encode()]))
        res = verify(server, pubkey=pem)
        assert res.returncode == 1, res.stdout
        assert "this shutdown checkpoint declares trail format 0" in res.stdout, res.stdout
        assert verify(server).returncode == 0  # the chain alone cannot tell
    finally:
        server.cleanup()
        subprocess.run(["rm", "-rf", tmp])


def test_a_sealed_node_signs_its_seal_then_checkpoints_unsigned():
    """Seal writes a signed "seal" checkpoint before giving up the key: the
    unsigned checkpoints after it verify with the key, where the same ones
    without it (a rewrite that stripped the signatures) do not."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-seal-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data, "--audit-checkpoint-seconds", "1"])
    server.data_dir = data
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key, Plaintext=b"one")
        pem = audit_pem(server, tmp)
        st, out = signed_call(server, "HsmdAdmin.Seal", {})
        assert st == 200 and out["Sealed"] is True, out
        time.sleep(2.5)  # checkpoints while sealed: unsigned
        server.stop()
        recs = records(server)
        ckpts = [r["checkpoint"] for r in recs if r["type"] == "checkpoint"]
        seal = [c for c in ckpts if c["reason"] == "seal"]
        assert len(seal) == 1 and seal[0]["signed"] is True, ckpts
        after = ckpts[ckpts.index(seal[0]) + 1:]
        assert after and all(c["signed"] is False and c["why"] == "sealed" for c in after), after
        res = verify(server, pubkey=pem)
        assert res.returncode == 0, res.stdout
        # The same trail with the seal checkpoint's signature stripped, chain redone.
        path = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))[-1]
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]
        out_lines, prev, rewriting = [], None, False
        for line in lines:
            rec = json.loads(line)
            if rec["type"] == "checkpoint" and rec["checkpoint"]["reason"] == "seal":
                rewriting = True
                rec["checkpoint"] = {k: v for k, v in rec["checkpoint"].items()
                                     if k not in ("alg", "sig")}
                rec["checkpoint"].update(signed=False, why="sealed")
            if rewriting:  # the lines before the seal stay byte for byte
                rec["prev"] = hashlib.sha256(prev).hexdigest()
                line = json.dumps(rec, separators=(",", ":")).encode()
            out_lines.append(line)
            prev = line
        with open(path, "wb") as f:
            f.write(b"".join(l + b"\n" for l in out_lines))
        res = verify(server, pubkey=pem)
        assert res.returncode == 1 and "problem: unsigned: this seal checkpoint" in res.stdout, \
            res.stdout
    finally:
        server.cleanup()
        subprocess.run(["rm", "-rf", tmp])


def test_a_trail_taken_away_whole_is_said_so_by_the_next():
    """A node whose audit files were all removed while it was stopped starts a new
    trail at seq 1 (nothing to chain to): that trail says, from its first records,
    that it began after the store, and a node's first trail does not."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-gone-")
    data = os.path.join(tmp, "data")
    try:
        server = start_dev(["--data-dir", data])
        server.data_dir = data
        client(server).list_keys()
        server.stop()
        first = records(server)
        assert first[0]["op"] == "AuditLogOpened"
        assert first[0]["extra"]["previous_shutdown"] == "none"
        assert not [r for r in first if r.get("op") == "AuditTrailBeginsAfterStore"]
        for path in glob.glob(os.path.join(data, "audit", "audit-*.jsonl")):
            os.unlink(path)
        server = start_dev(["--data-dir", data])
        server.data_dir = data
        client(server).list_keys()
        server.stop()
        again = records(server)
        assert again[0]["seq"] == 1 and again[0]["extra"]["previous_shutdown"] == "none"
        said = [r for r in again[:5] if r.get("op") == "AuditTrailBeginsAfterStore"]
        assert len(said) == 1, again[:5]
        rep = subprocess.run([HSMCTL, "audit", "report", os.path.join(data, "audit")],
                             capture_output=True, text=True)
        assert rep.returncode == 0 and "THE TRAIL BEGINS AFTER THE STORE" in rep.stdout, \
            rep.stdout + rep.stderr
        # Restarted on its own trail, it says nothing of the kind.
        server = start_dev(["--data-dir", data])
        server.data_dir = data
        server.stop()
        later = records(server)[len(again):]
        assert later[0]["extra"]["previous_shutdown"] == "clean"
        assert not [r for r in later if r.get("op") == "AuditTrailBeginsAfterStore"]

        # Another node id with a trail of its own, on a store that has seen another node's
        # trail: on SQLite (one node at a time) that other node cannot be running, so this
        # may be the same node renamed after its trail was taken away (the trail deleted
        # whole and the node started with another --node-id): flagged, naming the ids the
        # store has seen, and warned of; the store remembers the new id from then on.
        # (A node joining a shared store while a node it knows runs: test_cluster.py.)
        first_node = first[0]["node"]
        joined = os.path.join(tmp, "audit-node-b")
        for round_ in ("first", "taken away"):
            if round_ == "taken away":
                subprocess.run(["rm", "-rf", joined], check=True)
            server = start_dev(["--data-dir", data, "--node-id", "node-b",
                                "--audit-dir", joined])
            log = server.read_log()
            server.stop()
            with open(sorted(glob.glob(os.path.join(joined, "audit-*.jsonl")))[0]) as f:
                head = [json.loads(line) for line in f][:6]
            ops = [r.get("op") for r in head]
            if round_ == "first":
                ev = [r for r in head if r.get("op") == "AuditTrailBeginsAfterStore"]
                assert len(ev) == 1 and ev[0]["extra"]["known_nodes"] == first_node, head
                assert ev[0]["extra"]["node_id"] == "node-b", head
                assert "AuditTrailJoinsStore" not in ops, head
                assert "none of them running" in log, log
                rep = subprocess.run([HSMCTL, "audit", "report", joined], capture_output=True,
                                     text=True)
                assert rep.returncode == 0, rep.stdout + rep.stderr
                assert "THE TRAIL BEGINS AFTER THE STORE" in rep.stdout, rep.stdout
                assert "known_nodes=" + first_node in rep.stdout, rep.stdout
            else:  # the same node id, its trail gone: flagged as before
                assert "AuditTrailBeginsAfterStore" in ops, head
                assert "AuditTrailJoinsStore" not in ops, head
    finally:
        subprocess.run(["rm", "-rf", tmp])


def test_anchor_shows_records_cut_back_to_an_earlier_shutdown():
    """Cutting the trail back to an earlier run's signed shutdown checkpoint
    leaves a chain and signatures that verify: only something kept outside
    the log shows it.  verify prints the head to keep; --anchor with it
    names the cut, and a trail rewritten past it after a restart."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-anchor-")
    data = os.path.join(tmp, "data")
    try:
        for run in range(2):
            server = start_dev(["--data-dir", data])
            client(server).list_keys()
            if run == 0:
                st, pub = signed_call(server, "HsmdAdmin.AuditPublicKey", {})
                assert st == 200
            server.stop()
        server.data_dir = data
        pem = os.path.join(tmp, "audit.pem")
        with open(pem, "w") as f:
            f.write(pub["PublicKey"])
        res = verify(server, pubkey=pem)
        assert res.returncode == 0, res.stdout
        head = re.search(r"^head: (\d+):([0-9a-f]{64}) ", res.stdout, re.M)
        assert head, res.stdout
        anchor = ["--anchor", f"{head.group(1)}:{head.group(2)}"]
        assert verify(server, pubkey=pem, extra=anchor).returncode == 0
        # Cut back to the first run's shutdown checkpoint, as if run 2 never was.
        path = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))[-1]
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")[:-1]
        first_end = next(i for i, l in enumerate(lines)
                         if b'"reason":"shutdown"' in l)
        with open(path, "wb") as f:
            f.write(b"".join(l + b"\n" for l in lines[:first_end + 1]))
        assert verify(server, pubkey=pem).returncode == 0  # what the anchor is for
        res = verify(server, pubkey=pem, extra=anchor)
        assert res.returncode == 1, res.stdout
        assert f"before seq {head.group(1)} that the anchor names" in res.stdout, res.stdout
        # hsmd started on the cut trail writes new records past the anchor's seq.
        server = start_dev(["--data-dir", data])
        kms = client(server)
        for _ in range(5):
            kms.list_keys()
        server.stop()
        server.data_dir = data
        assert verify(server, pubkey=pem).returncode == 0
        res = verify(server, pubkey=pem, extra=anchor)
        assert res.returncode == 1, res.stdout
        assert f"seq {head.group(1)} is not the record the anchor names" in res.stdout, res.stdout
        bad = subprocess.run([HSMCTL, "audit", "verify", "--anchor", "12:xyz", path],
                             capture_output=True, text=True)
        assert bad.returncode == 2 and "SEQ:SHA256" in bad.stderr, bad.stdout + bad.stderr
    finally:
        subprocess.run(["rm", "-rf", tmp])


def test_files_deleted_from_the_start_show():
    """Every checkpoint states the first record hsmd keeps, and only
    retention raises it.  Audit files deleted from the start while hsmd is
    stopped do not move it at the next start (hsmd takes it from the trail's
    own checkpoints, not from the oldest file left); verify names the records,
    where before it took them for retention."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-start-")
    data = os.path.join(tmp, "data")
    try:
        server = start_dev(["--data-dir", data, "--audit-rotate-bytes", "1M"])
        server.data_dir = data
        kms = client(server)
        files = lambda: sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            while len(files()) < 2:
                list(pool.map(lambda _: kms.list_keys(), range(400)))
        pem = audit_pem(server, tmp)
        server.stop()
        ckpts = [r["checkpoint"] for r in records(server) if r["type"] == "checkpoint"]
        assert ckpts and all(c["kept_from"] == 1 for c in ckpts), ckpts
        res = verify(server, pubkey=pem)
        assert res.returncode == 0, res.stdout
        first = files()[0]
        second_seq = int(os.path.basename(files()[1])[len("audit-"):-len(".jsonl")])
        os.unlink(first)
        server = start_dev(["--data-dir", data])
        client(server).list_keys()
        server.stop()
        server.data_dir = data
        res = verify(server, pubkey=pem)
        assert res.returncode == 1, res.stdout
        assert "result: INVALID" in res.stdout and "earlier records" not in res.stdout, res.stdout
        # The checkpoint that shows it is not counted as covering anything.
        assert re.search(r"up to seq \d+ \(\d{1,3} records after it\)", res.stdout), res.stdout
        assert (f"records 1 to {second_seq - 1} were not given, or were deleted, and not by "
                "retention" in res.stdout), res.stdout
        ckpts = [r["checkpoint"] for r in records(server) if r["type"] == "checkpoint"]
        assert all(c["kept_from"] == 1 for c in ckpts), ckpts
    finally:
        subprocess.run(["rm", "-rf", tmp])


def test_two_nodes_trails_given_together_are_refused_not_called_modified():
    """Each node writes its own trail, numbered from seq 1: files of two nodes' trails
    given to one `audit verify` are no log, and verify says so and names the trails
    (exit 2, the usage error), where it reported the mix as modified (exit 1) although
    each trail verifies alone.  A trail genuinely modified is still reported modified
    (exit 1), given alone, beside its own copy, or beside another node's trail; so is
    a trail given from a later file on beside another, and one whose file had a record
    cut and its node renamed."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-two-")
    nodes = {}
    try:
        for name in ("node-a", "node-b"):
            data = os.path.join(tmp, name)
            server = start_dev(["--data-dir", data, "--node-id", name,
                                "--audit-rotate-bytes", "1M", "--backup-interval-seconds", "0"])
            server.data_dir = data
            nodes[name] = server
        files = lambda name: sorted(glob.glob(os.path.join(tmp, name, "audit",
                                                           "audit-*.jsonl")))
        client(nodes["node-a"]).create_key()
        # Trails of several files: node-b's second file, which starts past seq 1, holds
        # seqs node-a's three files hold too.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for name, n in (("node-a", 3), ("node-b", 2)):
                kms = client(nodes[name])
                while len(files(name)) < n:
                    list(pool.map(lambda _: kms.list_keys(), range(400)))
        for server in nodes.values():
            server.stop()
        dirs = {name: os.path.join(tmp, name, "audit") for name in nodes}

        def run(*args):
            return subprocess.run([HSMCTL, "audit", *args], capture_output=True, text=True)
        for name in nodes:
            p = run("verify", dirs[name])
            assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr
        n_b = len(files("node-b"))
        p = run("verify", dirs["node-a"], dirs["node-b"])  # files of the same names
        assert p.returncode == 2, p.stdout + p.stderr
        assert "result:" not in p.stdout and "modified" not in p.stderr, p.stdout + p.stderr
        assert "the files given hold 2 audit trails" in p.stderr, p.stderr
        assert f"node-a's ({len(files('node-a'))} files in {dirs['node-a']})" in p.stderr, \
            p.stderr
        assert f"node-b's ({n_b} files in {dirs['node-b']})" in p.stderr, p.stderr
        assert "verify each trail alone" in p.stderr, p.stderr
        # An anchor names one record of one trail: given with both trails, in either
        # order, it is checked on its own trail only (the other's genuine trail was
        # called modified, exit 1), and the answer is still the usage error.
        anchors = {}
        for name in nodes:
            p = run("verify", dirs[name])
            head = re.search(r"^head: (\d+:[0-9a-f]{64}) ", p.stdout, re.M)
            assert head, p.stdout
            anchors[name] = head.group(1)
            p = run("verify", "--anchor", anchors[name], dirs[name])
            assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr
        for name in nodes:
            for order in ((dirs["node-a"], dirs["node-b"]), (dirs["node-b"], dirs["node-a"])):
                p = run("verify", "--anchor", anchors[name], *order)
                assert p.returncode == 2, p.stdout + p.stderr
                assert "result:" not in p.stdout and "modified" not in p.stderr, \
                    p.stdout + p.stderr
                assert "the files given hold 2 audit trails" in p.stderr, p.stderr
                assert "give the anchor only with its own trail, " \
                    f"{name}'s ({len(files(name))} files in {dirs[name]})" in p.stderr, p.stderr
        # node-a's trail cut back before the record its anchor names: live, only the
        # anchor shows it, and beside node-b's trail it still does (exit 1, never 2).
        cut = os.path.join(tmp, "cut")
        shutil.copytree(dirs["node-a"], cut)
        last = sorted(glob.glob(os.path.join(cut, "audit-*.jsonl")))[-1]
        with open(last) as f:
            lines = f.readlines()
        with open(last, "w") as f:
            f.write("".join(lines[:-2]))
        p = run("verify", "--live", cut)
        assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr
        p = run("verify", "--live", "--anchor", anchors["node-a"], cut)
        assert p.returncode == 1 and "that the anchor names" in p.stdout, p.stdout + p.stderr
        for order in ((cut, dirs["node-b"]), (dirs["node-b"], cut)):
            p = run("verify", "--live", "--anchor", anchors["node-a"], *order)
            assert p.returncode == 1 and "result: INVALID" in p.stdout, p.stdout + p.stderr
            assert "none of the 2 audit trails given holds" in p.stdout, p.stdout
            assert dirs["node-b"] not in p.stdout.split("problem:")[0], p.stdout
        shutil.rmtree(cut)
        p = run("report", dirs["node-a"], dirs["node-b"])
        assert p.returncode == 2 and "2 audit trails" in p.stderr, p.stdout + p.stderr
        # node-b from its second file on does not verify alone (its start is missing):
        # that is the verdict, beside node-a's trail too.
        p = run("verify", *files("node-b")[1:])
        assert p.returncode == 1 and "deleted" in p.stdout, p.stdout + p.stderr
        p = run("verify", *files("node-a"), *files("node-b")[1:])
        assert p.returncode == 1 and "result: INVALID" in p.stdout, p.stdout + p.stderr
        assert "deleted" in p.stdout and files("node-b")[1] in p.stdout, p.stdout
        # One trail, one file of which lost a record and had its node renamed: not two
        # trails (no seq is claimed twice), but modified.
        tampered = os.path.join(tmp, "tampered")
        shutil.copytree(dirs["node-a"], tampered)
        middle = sorted(glob.glob(os.path.join(tampered, "audit-*.jsonl")))[1]
        with open(middle) as f:
            lines = f.readlines()
        assert '"node":"node-a"' in lines[5]
        renamed = [line.replace('"node":"node-a"', '"node":"node-z"') for line in lines]
        for text in ("".join(renamed[:5] + renamed[6:]), "".join(renamed)):
            with open(middle, "w") as f:
                f.write(text)
            p = run("verify", tampered)
            assert p.returncode == 1 and "result: INVALID" in p.stdout, p.stdout + p.stderr
            assert "modified" in p.stdout and middle in p.stdout, p.stdout
            p = run("report", tampered)
            assert p.returncode == 1 and "does not verify" in p.stderr, p.stdout + p.stderr
        shutil.rmtree(tampered)
        # A modified trail: alone, and beside its unmodified copy, it is modified.
        copy = os.path.join(tmp, "copy")
        shutil.copytree(dirs["node-a"], copy)
        path = files("node-a")[0]
        with open(path) as f:
            text = f.read()
        assert '"op":"CreateKey"' in text
        with open(path, "w") as f:
            f.write(text.replace('"op":"CreateKey"', '"op":"DescribeKey"', 1))
        for given in ([dirs["node-a"]], [copy, dirs["node-a"]]):
            p = run("verify", *given)
            assert p.returncode == 1 and "result: INVALID" in p.stdout, p.stdout + p.stderr
            assert "modified" in p.stdout, p.stdout
        # Beside another node's genuine trail, verified alone, it is modified all the same.
        for given in ([dirs["node-a"], dirs["node-b"]], [dirs["node-b"], copy, dirs["node-a"]]):
            p = run("verify", *given)
            assert p.returncode == 1 and "result: INVALID" in p.stdout, p.stdout + p.stderr
            assert "modified" in p.stdout and "audit trails" not in p.stderr, p.stdout
            p = run("report", *given)
            assert p.returncode == 1 and "does not verify" in p.stderr, p.stdout + p.stderr
            # With either trail's anchor too: its verdict, naming its file.
            for name in nodes:
                p = run("verify", "--anchor", anchors[name], *given)
                assert p.returncode == 1 and "result: INVALID" in p.stdout, \
                    p.stdout + p.stderr
                assert "modified" in p.stdout and path in p.stdout, p.stdout
    finally:
        for server in nodes.values():
            server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

def test_two_stores_made_on_one_host_have_trails_of_their_own(tmp_path):
    """hsmctl's offline records in a data directory's trail name hsmctl, the host and
    that directory: two stores made on one host (a primary and its recovery copy) have
    two trails, each of which verifies, and given together they are refused as two
    trails.  Both named their records "hsmctl-<host>" before, and together read as one
    log with two different files of one name: "modified"."""
    dirs = []
    for name in ("primary", "recovery"):
        p = subprocess.run([HSMCTL, "init", "--data-dir", str(tmp_path / name), "--share-dir",
                            str(tmp_path / f"{name}-shares"), "--shares", "3", "--threshold",
                            "2"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        dirs.append(str(tmp_path / name / "audit"))
    nodes = set()
    for d in dirs:
        p = subprocess.run([HSMCTL, "audit", "verify", d], capture_output=True, text=True)
        assert p.returncode == 0 and "result: VALID" in p.stdout, p.stdout + p.stderr
        with open(sorted(glob.glob(os.path.join(d, "audit-*.jsonl")))[0]) as f:
            named = {json.loads(line)["node"] for line in f}
        assert len(named) == 1 and next(iter(named)).startswith("hsmctl-"), named
        nodes |= named
    assert len(nodes) == 2, nodes
    p = subprocess.run([HSMCTL, "audit", "verify", *dirs], capture_output=True, text=True)
    assert p.returncode == 2 and "the files given hold 2 audit trails" in p.stderr, \
        p.stdout + p.stderr
    assert "result:" not in p.stdout and "modified" not in p.stderr, p.stdout + p.stderr


def test_closed_audit_files_are_copied_to_the_copy_dir():
    """audit_copy_dir (another disk, a mount in another region) receives each
    closed file, byte for byte, soon after its rotation, in a directory named
    after the node: two nodes given the same audit_copy_dir (one configuration
    for a cluster) keep their trails apart, although both trails' files are
    named alike from seq 1 on.  Each node's copies and the file it was writing
    verify as one trail."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-copy-")
    copies = os.path.join(tmp, "dr", "audit")
    os.makedirs(copies)  # the mount in the other region: hsmd does not make it
    nodes = {}
    try:
        for name in ("node-a", "node-b"):
            data = os.path.join(tmp, name)
            server = start_dev(["--data-dir", data, "--node-id", name,
                                "--audit-rotate-bytes", "1M", "--audit-copy-dir", copies])
            server.data_dir = data
            nodes[name] = server
        files = lambda d: sorted(glob.glob(os.path.join(d, "audit-*.jsonl")))
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for server in nodes.values():
                kms = client(server)
                while len(files(os.path.join(server.data_dir, "audit"))) < 2:
                    list(pool.map(lambda _: kms.list_keys(), range(400)))

        def counter(server, name):
            st, body, _ = server.get("/metrics")
            m = re.search(rf"^{name} (\d+)$", body.decode(), re.M)
            return int(m.group(1)) if st == 200 and m else -1
        for name, server in nodes.items():
            assert eventually(lambda: counter(server, "hsmd_audit_files_copied_total") >= 1,
                            timeout=30), name
            assert counter(server, "hsmd_audit_copy_failures_total") == 0, name
        pubkeys = {}
        for name, server in nodes.items():
            st, pub = signed_call(server, "HsmdAdmin.AuditPublicKey", {})
            assert st == 200
            pubkeys[name] = os.path.join(tmp, f"{name}.pem")
            with open(pubkeys[name], "w") as f:
                f.write(pub["PublicKey"])
            server.stop()
        assert sorted(os.listdir(copies)) == ["node-a", "node-b"]
        for name, server in nodes.items():
            audit_dir = os.path.join(server.data_dir, "audit")
            originals, dr = files(audit_dir), files(os.path.join(copies, name))
            assert len(dr) == len(originals) - 1 >= 1, (name, originals, dr)
            for c in dr:
                with open(c, "rb") as f1, open(os.path.join(audit_dir, os.path.basename(c)),
                                                "rb") as f2:
                    assert f1.read() == f2.read(), c
            assert os.stat(dr[0]).st_mode & 0o777 == 0o600
            res = subprocess.run([HSMCTL, "audit", "verify", "--pubkey", pubkeys[name]]
                                 + dr + originals[-1:], capture_output=True, text=True)
            assert res.returncode == 0 and "VALID" in res.stdout, res.stdout
            # Both directories whole, as an auditor would give them: the same verdict.
            whole = subprocess.run([HSMCTL, "audit", "verify", "--pubkey", pubkeys[name]]
                                   + dr + originals, capture_output=True, text=True)
            assert whole.returncode == 0, whole.stdout
            assert whole.stdout.split("head:")[1] == res.stdout.split("head:")[1], whole.stdout
            # Directories stand for their files; the report counts a file and its copy once.
            node_copies = os.path.join(copies, name)
            dirs = subprocess.run([HSMCTL, "audit", "verify", "--pubkey", pubkeys[name],
                                   node_copies, audit_dir], capture_output=True, text=True)
            assert dirs.returncode == 0 and dirs.stdout == whole.stdout, dirs.stdout
            reports = [subprocess.run([HSMCTL, "audit", "report", "--json", *where],
                                      capture_output=True, text=True)
                       for where in ([audit_dir], [node_copies, audit_dir])]
            assert all(p.returncode == 0 for p in reports), [p.stderr for p in reports]
            alone, both = (json.loads(p.stdout) for p in reports)
            assert both == alone and alone["records"] > 1000, both
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        p = subprocess.run([HSMCTL, "audit", "verify", empty], capture_output=True, text=True)
        assert p.returncode == 1 and f"{empty} holds no audit file" in p.stderr, p.stderr
        # Beside the trail, an empty copy directory (none closed yet, as on day one) is fine.
        name, server = next(iter(nodes.items()))
        audit_dir = os.path.join(server.data_dir, "audit")
        p = subprocess.run([HSMCTL, "audit", "verify", "--pubkey", pubkeys[name], empty,
                            audit_dir], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        # The same names in both: one copy directory without the node's would have mixed them.
        assert ({os.path.basename(f) for f in files(os.path.join(copies, "node-a"))}
                & {os.path.basename(f) for f in files(os.path.join(copies, "node-b"))})
    finally:
        for server in nodes.values():
            server.cleanup()
        subprocess.run(["rm", "-rf", tmp])


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                       capture_output=True, text=True)
    assert r.returncode == 0, ("this test needs to mount a small tmpfs (run as root): "
                               + r.stderr)


def test_full_disk_refuses_requests_before_any_goes_unrecorded():
    """The audit disk fills while requests are served.  hsmd keeps 4 MiB allocated ahead of
    the trail's file: once it cannot keep that much, it refuses new requests (503, /readyz
    not ready, hsmd_audit_low_space 1) while the records of those already admitted go into
    what it kept, so a request either changed nothing or is in the trail.  With room again
    it serves by itself, and the trail verifies without a gap."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-full-")
    audit_dir = os.path.join(tmp, "audit")
    mount_tmpfs(audit_dir, "16m")
    server = None
    try:
        server = start_dev(["--audit-dir", audit_dir])
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.encrypt(KeyId=key, Plaintext=b"before")
        filler = os.path.join(audit_dir, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        served, refused = 0, 0
        for i in range(20000):
            t0 = time.time()
            try:
                if i % 10 == 0:
                    kms.create_key(Description=f"full-disk-{i}")
                else:
                    kms.encrypt(KeyId=key, Plaintext=b"x" * 2000,
                                EncryptionContext={"pad": "y" * 2000})
                served += 1
            except botocore.exceptions.ClientError as e:
                assert e.response["Error"]["Code"] == "ServiceUnavailableException"
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 503
                refused += 1
            # Bounded (the node's audit deadline is 1 s), with room for a loaded machine.
            assert time.time() - t0 < 10.0, "a refusal must come within a bounded time"
            if refused >= 3:
                break
        assert refused >= 3, "requests kept succeeding on a full audit disk"
        # Clients retrying their 503s: refusals get no record each (one would eat into the
        # space kept), so thousands of them leave it whole.
        def retry(n):
            c = client(server)
            for _ in range(n):
                try:
                    c.encrypt(KeyId=key, Plaintext=b"x" * 2000,
                              EncryptionContext={"pad": "y" * 2000})
                except botocore.exceptions.ClientError as e:
                    assert e.response["Error"]["Code"] == "ServiceUnavailableException"
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(retry, [2000] * 4))
        refused += 8000
        # Refused for want of room, not by an outage: the trail itself is healthy.
        st, body, _ = server.get("/readyz")
        assert st == 503 and json.loads(body)["audit"] is False
        assert metric(server, "hsmd_audit_low_space") == 1
        assert metric(server, "hsmd_audit_healthy") == 1
        assert metric(server, "hsmd_audit_outages_total") == 0
        with pytest.raises(botocore.exceptions.ClientError):  # every request waits for room
            kms.list_keys()
        os.remove(filler)
        assert eventually(lambda: server.get("/readyz")[0] == 200, timeout=30)  # retried each 0.5 s
        assert metric(server, "hsmd_audit_low_space") == 0
        kms.encrypt(KeyId=key, Plaintext=b"after")
        made = [k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]]
        server.stop()
        files = sorted(glob.glob(os.path.join(audit_dir, "audit-*.jsonl")))
        res = subprocess.run([HSMCTL, "audit", "verify"] + files, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        recs = []
        for p in files:
            with open(p) as f:
                recs += [json.loads(l) for l in f if l.strip()]
        assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
        (ended,) = [r for r in recs if r.get("op") == "AuditLowSpaceEnded"]
        assert int(ended["extra"]["refused"]) >= refused, ended
        ok = [r for r in recs if r.get("outcome") == "success"]
        # Every request served is in the trail: the two before the disk filled, those
        # served while it filled, and the one after.
        assert len([r for r in ok if r.get("op") in ("Encrypt", "CreateKey")]) == served + 3
        # Every key that exists was made by a recorded CreateKey: none by a refused one.
        created = {r.get("key_id") for r in ok if r.get("op") == "CreateKey"}
        assert set(made) <= created, set(made) - created
    finally:
        if server is not None:
            server.cleanup()
        subprocess.run(["umount", "-l", audit_dir])
        subprocess.run(["rm", "-rf", tmp])


def test_full_store_disk_refuses_writes_and_says_so():
    """The SQLite store's disk (data_dir) fills: writes are refused with
    KMSInternalException naming a full file system (and logged, not once per request),
    nothing is half-made, /metrics shows the space left, and with room again writes work."""
    tmp = tempfile.mkdtemp(prefix="hsmd-store-full-")
    data_dir = os.path.join(tmp, "data")
    mount_tmpfs(data_dir, "24m")
    server = None
    try:
        server = Hsmd(["--dev", "--audit-dir", os.path.join(tmp, "audit")],
                      env={"HSM_DEV_ACCESS_KEY_ID": DEV_AKID,
                           "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET},
                      data_dir=data_dir)
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        before = {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}
        filler = os.path.join(data_dir, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        assert metric(server, "hsmd_data_disk_free_bytes") < 64 << 10
        failures = 0
        for i in range(200):  # the WAL's free pages take a few before the disk says no
            try:
                kms.create_key(Description="x" * 8000)
            except botocore.exceptions.ClientError as e:
                assert e.response["Error"]["Code"] == "KMSInternalException", e.response
                assert "file system is full" in e.response["Error"]["Message"], e.response
                failures += 1
                if failures == 20:
                    break
        assert failures == 20
        log = server.read_log()
        assert "file system is full" in log
        assert log.count("file system is full") < 20  # one line a second at most
        assert kms.encrypt(KeyId=key, Plaintext=b"reads and crypto go on")["KeyId"]
        os.remove(filler)
        made = kms.create_key()["KeyMetadata"]["KeyId"]
        after = {k["KeyId"] for k in kms.list_keys(Limit=1000)["Keys"]}
        # Keys made before the disk refused (its WAL had room) stay; the refused made none.
        assert before < after and made in after
        ok = [r for r in audit_records(tmp)  # the trail is in tmp/audit
              if r.get("op") == "CreateKey" and r.get("outcome") == "success"]
        assert {r["key_id"] for r in ok} >= after - {key}
    finally:
        if server is not None:
            server.cleanup()
        subprocess.run(["umount", "-l", data_dir])
        subprocess.run(["rm", "-rf", tmp])


@contextlib.contextmanager
def node_on_a_small_data_disk():
    """A dev node whose data_dir (the SQLite store) is an 8 MiB tmpfs of its own, its
    trail and backups elsewhere: (server, tmp, data_dir)."""
    tmp = tempfile.mkdtemp(prefix="hsmd-small-data-")
    data_dir = os.path.join(tmp, "data")
    mount_tmpfs(data_dir, "8m")
    server = None
    try:
        server = Hsmd(["--dev", "--audit-dir", os.path.join(tmp, "audit"),
                       "--backup-dir", os.path.join(tmp, "backup"),
                       "--backup-interval-seconds", "0"],
                      env={"HSM_DEV_ACCESS_KEY_ID": DEV_AKID,
                           "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET},
                      data_dir=data_dir)
        yield server, tmp, data_dir
    finally:
        if server is not None:
            server.cleanup()
        subprocess.run(["umount", "-l", data_dir])
        subprocess.run(["rm", "-rf", tmp])


def test_failed_authentications_not_counted_on_a_full_disk_are_said_once():
    """Wrong signatures on a full store disk cannot be counted toward lockout_threshold:
    the log says so once, not once per request, and says when they are counted again."""
    from conftest import signed_request
    from helpers import new_user
    from test_auth import BAD_SIG, BODY, TARGET

    def bad(akid, secret, n):
        for _ in range(n):
            r = signed_request(server, TARGET, BODY, akid=akid, secret=secret, mutate=BAD_SIG)
            assert (r.status_code, r.json()["__type"]) == (400, "InvalidSignatureException")

    with node_on_a_small_data_disk() as (server, tmp, data_dir):
        akid, secret = new_user(server, "guessed", ["crypto-user"])
        filler = os.path.join(data_dir, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        kms = client(server)
        for _ in range(200):  # the WAL's free pages take a few writes before the disk says no
            try:
                kms.create_key()
            except botocore.exceptions.ClientError:
                break
        bad(akid, secret, 6)
        said = "no failure is counted toward lockout_threshold until one can be"
        assert server.read_log().count(said) == 1, server.read_log()
        os.remove(filler)
        bad(akid, secret, 1)
        assert eventually(lambda: "failed authentications are counted toward lockout_threshold "
                          "again" in server.read_log())
        assert server.read_log().count(said) == 1


def test_an_erasure_committed_on_a_full_disk_is_answered_as_done():
    """DeleteImportedKeyMaterial commits, then empties the write-ahead log of the old
    material (a checkpoint, which grows the database file).  On a disk too full for that
    checkpoint the change is done all the same: answered and audited as done, not as a
    failure the client would retry; the emptying is owed, logged once, and done by a
    later write once there is room."""
    import sqlite3
    from conftest import signed_request
    from helpers import audit_record
    from test_import import do_import, external_key
    with node_on_a_small_data_disk() as (server, tmp, data_dir):
        kms = client(server)
        key = external_key(kms)
        do_import(kms, key, os.urandom(32))
        db = os.path.join(data_dir, "hsmd.db")
        wal = db + "-wal"

        def growth():  # what a checkpoint now would add to the database file
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
                pages = c.execute("PRAGMA page_count").fetchone()[0]
                size = c.execute("PRAGMA page_size").fetchone()[0]
            return pages * size - os.path.getsize(db)

        # Pages in the WAL that the checkpoint must copy out past the end of the database
        # file, twice the room left below.  SQLite's automatic checkpoints (every 1000
        # frames) copy earlier writes out on their own, so a count of writes alone may
        # leave the erasure's checkpoint less to add than the room left, and succeed.
        for _ in range(400):
            kms.create_key(Description="pad" * 300)
            if os.path.getsize(wal) > 2 << 20 and growth() >= 128 << 10:
                break
        assert os.path.getsize(wal) > 2 << 20 and growth() >= 128 << 10
        filler = os.path.join(data_dir, "filler")
        st = os.statvfs(data_dir)
        with open(filler, "wb") as f:
            f.write(bytes(st.f_bavail * st.f_frsize - (64 << 10)))
        r = signed_request(server, "TrentService.DeleteImportedKeyMaterial", {"KeyId": key})
        assert r.status_code == 200, r.text
        rec = audit_record(tmp, r.headers["x-amzn-RequestId"])
        assert (rec["op"], rec["outcome"]) == ("DeleteImportedKeyMaterial", "success"), rec
        assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingImport"
        owed = "a change was committed, but the old bytes it replaced stay in the write-ahead log"
        assert owed in server.read_log()
        assert os.path.getsize(wal) > 0
        os.remove(filler)
        kms.create_key()  # a later write does what is owed
        assert eventually(lambda: "the write-ahead log is checkpointed and emptied again"
                          in server.read_log())
        assert os.path.getsize(wal) == 0
        assert server.read_log().count(owed) == 1


def test_an_owed_scrub_does_not_hold_other_writes_up():
    """An erasure's WAL truncation waits for readers on older snapshots (an outside reader,
    a backup's VACUUM INTO) for the store's busy timeout, 5 s, and is then owed.  Tried
    again at the end of later writes, it does not wait: those writes are not held up while
    the reader stays, and it is done once the reader has gone."""
    import sqlite3
    from conftest import signed_request
    from test_import import do_import, external_key
    server = start_dev(["--backup-interval-seconds", "0"])
    try:
        kms = client(server)
        key = external_key(kms)
        do_import(kms, key, os.urandom(32))
        db = sqlite3.connect(os.path.join(server.data_dir, "hsmd.db"), isolation_level=None)
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM keys").fetchone()
        r = signed_request(server, "TrentService.DeleteImportedKeyMaterial", {"KeyId": key})
        assert r.status_code == 200, r.text
        assert "the old bytes it replaced stay in the write-ahead log" in server.read_log()
        for _ in range(3):  # each would wait the busy timeout again, were it to wait
            started = time.monotonic()
            kms.create_key()
            assert time.monotonic() - started < 3.0
        db.execute("COMMIT")
        db.close()
        kms.create_key()
        assert eventually(lambda: "the write-ahead log is checkpointed and emptied again"
                          in server.read_log())
        assert os.path.getsize(os.path.join(server.data_dir, "hsmd.db-wal")) == 0
    finally:
        server.cleanup()


def test_threads_are_named_and_the_audit_writer_yields_to_the_workers():
    """Every thread carries its role's name (ps, top -H, perf), and the audit
    writer, alone, runs five nice levels below the rest, so it batches what the
    busy workers queue instead of preempting them."""
    server = start_dev()
    try:
        def nice_of(stat_path):
            with open(stat_path) as f:
                # Field 19 (nice) counted after the ")" that ends the command name.
                return int(f.read().rsplit(")", 1)[1].split()[16])
        pid = server.proc.pid
        base = nice_of(f"/proc/{pid}/stat")
        threads = {}

        def all_named():
            # Each thread names itself as it starts; the scheduler starts
            # after the workers, so it may still be on its way when hsmd answers,
            # and a worker that has not run yet leaves a gap in their numbers.
            threads.clear()
            for task in glob.glob(f"/proc/{pid}/task/*"):
                with open(os.path.join(task, "comm")) as f:
                    threads[f.read().strip()] = nice_of(os.path.join(task, "stat"))
            workers = http_workers()
            return {"hsmd-audit", "hsmd-audit-sync", "hsmd-audit-dog", "hsmd-audit-ret",
                    "hsmd-sched"} <= set(threads) and \
                workers == [f"hsmd-http-{i}" for i in range(len(workers))]

        def http_workers():  # in the order of their numbers (one per CPU: 10 sorts after 9)
            return sorted((n for n in threads if n.startswith("hsmd-http-")),
                          key=lambda n: int(n.rsplit("-", 1)[1]))

        eventually(all_named, timeout=30)
        workers = http_workers()
        assert workers == [f"hsmd-http-{i}" for i in range(len(workers))] and workers
        for name in ("hsmd-audit", "hsmd-audit-sync", "hsmd-audit-dog", "hsmd-audit-ret", "hsmd-sched"):
            assert name in threads, sorted(threads)
        assert threads["hsmd-audit"] == min(base + 5, 19)
        assert all(n == base for name, n in threads.items() if name != "hsmd-audit"), threads
    finally:
        server.cleanup()


def report(files, *args):
    return subprocess.run([HSMCTL, "audit", "report"] + list(args) + files, capture_output=True,
                          text=True)


def test_audit_report_counts_only_what_it_verified(tmp_path):
    """The report reads the files again after verifying them: a file that changes in
    between (here a FIFO serving the genuine bytes to verify, then an edited copy) is
    refused, not counted."""
    import threading
    server = start_dev(["--data-dir", str(tmp_path / "data")])
    try:
        client(server).create_key()
    finally:
        server.stop()
    path, = glob.glob(str(tmp_path / "data" / "audit" / "audit-*.jsonl"))
    with open(path, "rb") as f:
        genuine = f.read()
    edited = genuine.replace(b"user/dev", b"user/eve")
    assert edited != genuine
    fifo = str(tmp_path / os.path.basename(path))
    os.mkfifo(fifo)

    def serve():
        for content in (genuine, edited):
            with open(fifo, "wb") as f:
                f.write(content)
            time.sleep(1)  # verify reads to the end (no writer) before the next opening

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    p = report([fifo])
    t.join(timeout=30)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "changed after it was verified" in p.stderr and "user/eve" not in p.stdout, \
        p.stdout + p.stderr


def test_audit_report_summarizes_a_verified_trail():
    """`hsmctl audit report` verifies the files first, then counts operations, principals
    and failed authentications and lists every change and node event; --key, --since,
    --until and --json narrow and reshape it; a tampered trail gives no report."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-report-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data])
    try:
        kms = client(server)
        key = kms.create_key(Description="reported")["KeyMetadata"]["KeyId"]
        other = kms.create_key()["KeyMetadata"]["KeyId"]
        third = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=third, Plaintext=b"y")["CiphertextBlob"]
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=other)
        kms.encrypt(KeyId=key, Plaintext=b"x")
        kms.disable_key(KeyId=key)
        with pytest.raises(botocore.exceptions.ClientError):
            kms.encrypt(KeyId=key, Plaintext=b"x")
        with pytest.raises(botocore.exceptions.ClientError):
            client(server, secret="wrong-secret-wrong-secret-wrong-secret-00").list_keys()
        kms.schedule_key_deletion(KeyId=other, PendingWindowInDays=7)
        st, pub = signed_call(server, "HsmdAdmin.AuditPublicKey", {})
        assert st == 200
        before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    finally:
        server.stop()
    pem = os.path.join(tmp, "audit.pem")
    with open(pem, "w") as f:
        f.write(pub["PublicKey"])
    files = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))
    p = report(files, "--pubkey", pem)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith("verified: ") and " 0 signed checkpoints" not in out, out
    assert "\nretention: " not in out, out  # the trail starts at seq 1: nothing expired
    rows = {m.group(1): tuple(map(int, m.group(2).split()))
            for m in re.finditer(r"^  (\S+)\s+((?:\d+\s+){3}\d+)$", out, re.M)}
    assert rows["CreateKey"] == (3, 3, 0, 0) and rows["Encrypt"] == (3, 2, 1, 0), rows
    assert rows["ListKeys"] == (1, 0, 0, 1) and rows["DisableKey"] == (1, 1, 0, 0), rows
    assert re.search(rf"^  {DEV_AKID} from 127\.0\.0\.1\s+1  InvalidSignatureException 1$",
                     out, re.M), out
    changes = out.split("\nchanges (")[1].split("\nnode events (")[0]
    assert changes.startswith("5)"), changes
    for op, k in (("CreateKey", key), ("CreateKey", other), ("DisableKey", key),
                  ("ScheduleKeyDeletion", other)):
        assert re.search(rf" {op} key={k}\b.* by=arn:aws:iam::\d+:user/", changes), (op, changes)
    assert "Encrypt" not in changes and "ListKeys" not in changes
    events = out.split("\nnode events (")[1]
    assert " Startup by=hsmd self_test=passed" in events and " Shutdown by=hsmd" in events
    # One key's story, and the same report as JSON.
    p = report(files, "--key", key, "--json")
    j = json.loads(p.stdout)
    assert j["verified"]["valid"] is True and j["key_id"] == key
    assert j["verified"]["kept_from"] == 1 and j["verified"]["first_seq"] == 1, j["verified"]
    assert {op: c["total"] for op, c in j["operations"].items()} == \
        {"CreateKey": 1, "Encrypt": 2, "DisableKey": 1}
    assert [c["op"] for c in j["changes"]] == ["CreateKey", "DisableKey"]
    assert j["records"] == 4 and j["events"] == []
    # A ReEncrypt belongs to the story of the key it decrypted from, as to its destination's.
    for k in (third, other):
        j = json.loads(report(files, "--key", k, "--json").stdout)
        assert j["operations"]["ReEncrypt"]["total"] == 1, (k, j["operations"])
    # A time window: everything happened after `before` and before `after`.
    assert "records: 0\n" in report(files, "--since", after).stdout
    assert "records: 0\n" in report(files, "--until", before).stdout
    assert report(files, "--since", before, "--until", after).stdout == \
        report(files).stdout.replace("period:", "period:").replace(
            "\nrecords:", f" (asked: from {before[:19]}.000Z until {after[:19]}.000Z)\nrecords:", 1)
    p = report(files, "--since", "yesterday")
    assert p.returncode == 2 and "expected a UTC date or time" in p.stderr
    # A trail that does not verify gives no report.
    with open(files[0], "r+b") as f:
        raw = f.read()
        i = raw.index(b'"CreateKey"')
        f.seek(i + 1)
        f.write(b"D")
    p = report(files, "--pubkey", pem)
    assert p.returncode == 1 and "does not verify" in p.stderr and p.stdout == "", p


def rechain(files, edit):
    """Rewrites the trail with edit(line) applied to each record's line (None: unchanged),
    recomputing every prev hash after it, as a writer would have chained them."""
    prev = "0" * 64
    for path in files:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        out = []
        for line in lines:
            new = edit(line)
            if new is not None:
                line = new
            line = re.sub(r'"prev":"[0-9a-f]{64}"}$', f'"prev":"{prev}"}}', line)
            prev = hashlib.sha256(line.encode()).hexdigest()
            out.append(line)
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")


def test_audit_report_node_events_sources_and_arguments():
    """Seal and unseal are node events, not changes; a start after kill -9 is a flagged node
    event; failed authentications group by address, whatever the client's port; dates,
    times and keys the report could only match nothing with are refused; a user or
    access-key change shows the user, roles and access key its record names."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-report-events-")
    data = os.path.join(tmp, "data")
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    # No scheduled backup: its event could come between the seal and the unseal.
    server = start_dev(["--data-dir", data, "--backup-interval-seconds", "0"])
    try:
        key = client(server).create_key()["KeyMetadata"]["KeyId"]
        for _ in range(3):  # a new client, a new connection: another source port each time
            with pytest.raises(botocore.exceptions.ClientError):
                client(server, secret="wrong-secret-wrong-secret-wrong-secret-00").list_keys()
        st, out = signed_call(server, "HsmdAdmin.CreateUser",
                              {"UserName": "bob", "Roles": ["crypto-user", "auditor"]})
        assert st == 200, out
        st, out = signed_call(server, "HsmdAdmin.CreateAccessKey", {"UserName": "bob"})
        assert st == 200, out
        akid = out["AccessKeyId"]
        st, out = signed_call(server, "HsmdAdmin.Seal", {})
        assert st == 200, out
        with open(os.path.join(data, "dev-unseal.share")) as f:
            st, out = unsigned_call(server, "HsmdAdmin.Unseal", {"Share": f.read()})
        assert st == 200 and not out["Sealed"], out
        server.stop(signal.SIGKILL)
        server = Hsmd(["--dev", "--backup-interval-seconds", "0"], env=env, data_dir=data)
        client(server).describe_key(KeyId=key)
    finally:
        server.stop()
    files = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))
    p = report(files)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    auth = out.split("\nfailed authentications (")[1].split("\nrefusals before authentication (")[0]
    assert auth.startswith("1 sources)"), auth
    assert re.search(rf"^  {DEV_AKID} from 127\.0\.0\.1\s+3  InvalidSignatureException 3$",
                     auth, re.M), auth
    refused = out.split("\nrefusals before authentication (")[1].split("\nchanges (")[0]
    assert refused == "0 sources)\n", refused  # the unsigned Unseal was answered
    changes = out.split("\nchanges (")[1].split("\nnode events (")[0]
    events = out.split("\nnode events (")[1]
    assert " Seal " not in changes and " Unseal " not in changes, changes
    assert re.search(r" Seal by=arn:aws:iam::\d+:user/dev", events), events
    assert re.search(r" Unseal\b", events.split(" Seal by=")[1]), events  # after the seal
    assert events.startswith(f"{events.split(',')[0]}, 1 flagged)"), events
    unclean = [l for l in events.splitlines() if "AuditLogOpened" in l]
    assert len(unclean) == 1 and "previous_shutdown=unclean" in unclean[0] and \
        "UNCLEAN SHUTDOWN" in unclean[0], events
    j = json.loads(report(files, "--json").stdout)
    assert [e["flag"] for e in j["events"] if "flag" in e] == ["unclean_shutdown"], j["events"]
    ops = [e["op"] for e in j["events"]]
    assert ops[ops.index("Seal") + 1] == "Unseal", ops
    assert not {"Seal", "Unseal"} & {c["op"] for c in j["changes"]}
    assert j["failed_authentications"] == \
        {f"{DEV_AKID} from 127.0.0.1": {"total": 3, "InvalidSignatureException": 3}}
    assert j["refusals_before_authentication"] == {}
    # Dates and times that exist, keys the trail can name.
    for bad, why in (("2026-13-01", "no month 13"), ("2026-00-10", "no month 0"),
                     ("2026-02-29", "no day 29"), ("2026-04-31", "no day 31"),
                     ("2026-11-30T24:00:00Z", "no time 24:00:00"),
                     ("2026-11-30T12:60:00Z", "no time 12:60:00")):
        p = report(files, "--since", bad)
        assert p.returncode == 2 and why in p.stderr and p.stdout == "", (bad, p.stderr)
    assert report(files, "--until", "2028-02-29").returncode == 0
    assert "records: 0\n" in report(files, "--until", "2000-02-29T23:59:59Z").stdout
    for bad, why in (("alias/app", "an alias cannot be resolved offline"),
                     ("arn:aws:kms:us-east-1:111122223333:alias/app",
                      "an alias cannot be resolved offline"),
                     ("payments", "expected a key id"), (key.upper(), "expected a key id")):
        p = report(files, "--key", bad)
        assert p.returncode == 2 and why in p.stderr and p.stdout == "", (bad, p.stderr)
    by_id = report(files, "--key", key, "--json")
    by_arn = report(files, "--key", f"arn:aws:kms:us-east-1:111122223333:key/{key}", "--json")
    assert by_id.returncode == 0 and json.loads(by_id.stdout)["records"] == 2, by_id.stdout
    assert by_arn.stdout == by_id.stdout
    # Where user and access-key changes name their target, the report shows it (hsmd writes
    # extra.target_user, target_roles, target_access_key_id; user, roles and access_key_id
    # are read too); a change whose record names none shows none.
    def named(extra):
        return {"target_user", "user", "target_access_key_id", "access_key_id"} & set(extra)
    for c in json.loads(report(files, "--json").stdout)["changes"]:
        assert ("user" in c or "access_key_id" in c) == bool(named(c.get("extra", {}))), c

    def target(raw):
        rec = json.loads(raw)
        extra = {"CreateUser": '"target_user":"bob","target_roles":"crypto-user,auditor"',
                 "CreateAccessKey": f'"user":"bob","access_key_id":"{akid}"'}.get(rec.get("op"))
        if extra is None or named(rec.get("extra", {})):
            return None  # hsmd named them already
        if '"extra":{' in raw:
            return raw.replace('"extra":{', '"extra":{' + extra + ",", 1)
        return raw.replace(',"prev":', ',"extra":{' + extra + '},"prev":', 1)
    rechain(files, target)
    recs = {r.get("op"): r.get("extra", {}) for r in records_of(files)}
    user = recs["CreateUser"].get("target_user")
    roles = recs["CreateUser"].get("target_roles", "").split(",")
    assert user == "bob" and sorted(roles) == ["auditor", "crypto-user"], recs["CreateUser"]
    key_extra = recs["CreateAccessKey"]
    key_id = key_extra.get("target_access_key_id", key_extra.get("access_key_id"))
    assert key_id == akid, key_extra
    p = report(files)
    assert p.returncode == 0, p.stderr
    changes = p.stdout.split("\nchanges (")[1].split("\nnode events (")[0]
    line = [l for l in changes.splitlines() if " CreateUser " in l]
    assert len(line) == 1 and f" user=bob roles={','.join(roles)}" in line[0], changes
    assert "target_" not in line[0], line  # shown once, by its name in the report
    line = [l for l in changes.splitlines() if " CreateAccessKey " in l]
    assert len(line) == 1 and f" user=bob access_key_id={akid}" in line[0], changes
    assert line[0].count(akid) == 1, line
    j = {c["op"]: c for c in json.loads(report(files, "--json").stdout)["changes"]}
    assert (j["CreateUser"]["user"], j["CreateUser"]["roles"]) == ("bob", roles)
    assert (j["CreateAccessKey"]["user"], j["CreateAccessKey"]["access_key_id"]) == ("bob", akid)


def records_of(files):
    out = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            out += [json.loads(line) for line in f if line.strip()]
    return out


FAIL_TRAIL_CALLS = r'''
import os
import gdb


class FailTrailCalls(gdb.Breakpoint):
    """A call (pwrite(2), fdatasync(2)) on one of the trail's files fails (EBADF) until the
    test's flag file exists; the first such call after that stops hsmd, so the test's gdb
    detaches."""

    def stop(self):
        fd = int(gdb.parse_and_eval("$rdi"))
        try:
            target = os.readlink("/proc/%d/fd/%d" % (gdb.selected_inferior().pid, fd))
        except OSError:
            return False
        if not target.endswith(".jsonl"):
            return False
        if os.path.exists(os.environ["HSMD_TEST_OUTAGE_OVER"]):
            return True
        gdb.execute("set $rdi = -1")
        return False


FailTrailCalls(os.environ["HSMD_TEST_OUTAGE_CALL"])
'''


class TrailOutage:
    """An audit outage: every call (pwrite(2), or fdatasync(2)) on the trail's files fails
    until end()."""

    def __init__(self, server, tmp, call="pwrite64"):
        self.server = server
        self.over = os.path.join(tmp, f"outage-over-{server.proc.pid}")
        script = os.path.join(tmp, "fail-trail.py")
        with open(script, "w") as f:
            f.write(FAIL_TRAIL_CALLS)
        self.gdb = subprocess.Popen(
            ["gdb", "-q", "-nx", "-batch", "-p", str(server.proc.pid), "-x", script,
             "-ex", "continue", "-ex", "delete", "-ex", "detach"],
            env=dict(os.environ, HSMD_TEST_OUTAGE_OVER=self.over, HSMD_TEST_OUTAGE_CALL=call),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.out = []
        for line in self.gdb.stdout:
            self.out.append(line)
            if line.startswith("Breakpoint 1 at "):
                break
        assert self.gdb.poll() is None, "".join(self.out)
        time.sleep(0.5)  # the continue

    def end(self):
        with open(self.over, "w"):
            pass
        # The trail's next try writes: that write stops hsmd, and gdb detaches.
        rest, _ = self.gdb.communicate(timeout=60)
        assert ") detached]" in rest, "".join(self.out) + rest
        assert self.server.proc.poll() is None


@pytest.mark.skipif(not gdb_can_trace(), reason="an audit outage is made with gdb, allowed to "
                                              "attach")
def test_requests_refused_in_an_outage_say_that_nothing_ran(tmp_path):
    """In an audit outage every request is refused with a 503 that says no request is
    served, not that its result is withheld (which says it ran): a CreateKey made no key,
    an Unseal applied no share."""
    from test_metrics import outcome_count, scrape
    from test_sealed import init_store, status
    data, shares = init_store(str(tmp_path))
    sealed = Hsmd([], data_dir=data)
    dev = start_dev()
    try:
        for server in (sealed, dev):
            outage = TrailOutage(server, str(tmp_path))
            try:
                # The first record that fails starts the outage; its request ran, and
                # its answer is withheld.
                st, out = unsigned_call(server, "HsmdAdmin.Status", {})
                assert (st, out["__type"]) == (409, "KMSInternalException"), out
                assert "withheld" in out["message"], out
                assert eventually(lambda: metric(server, "hsmd_audit_healthy") == 0)
                if server is sealed:
                    with open(shares["alice"]) as f:
                        st, out = unsigned_call(server, "HsmdAdmin.Unseal",
                                                {"Share": f.read()})
                    assert (st, out["__type"]) == (503, "ServiceUnavailableException"), out
                    assert out["message"] == ("the audit trail cannot be written; retry "
                                              "later"), out
                else:
                    st, out = signed_call(server, "TrentService.CreateKey",
                                          {"Description": "in the outage"})
                    assert (st, out["__type"]) == (503, "ServiceUnavailableException"), out
                    assert out["message"] == ("the audit trail cannot be written, so no "
                                              "request is served; retry later"), out
                assert metric(server, "hsmd_audit_refusals_total") >= 2
                # Refused for the trail's sake: outcome unavailable (HsmdAuditOutage's
                # to report), not a server error for HsmdErrors to page on as well.
                samples = scrape(server)
                for op in ("Status", "Unseal" if server is sealed else "CreateKey"):
                    assert outcome_count(samples, op, "unavailable") >= 1, op
                    assert outcome_count(samples, op, "server_error") == 0, op
            finally:
                outage.end()
            assert eventually(lambda: metric(server, "hsmd_audit_healthy") == 1, 30)
        assert status(sealed)["Progress"] == 0  # the refused share was not applied
        with open(shares["alice"]) as f:
            st, out = unsigned_call(sealed, "HsmdAdmin.Unseal", {"Share": f.read()})
        assert st == 200 and status(sealed)["Progress"] == 1, out
        kms = client(dev)
        described = [kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"].get("Description")
                     for k in kms.list_keys()["Keys"]]
        assert "in the outage" not in described
    finally:
        dev.cleanup()
        sealed.cleanup()


FAIL_ONE_RECORD = r'''
import os
import gdb


class FailOneRecord(gdb.Breakpoint):
    """At the entry of audit_format_line(buf, seq, body, body_len, prev): once the test's
    flag file exists, the next record of the test's operation gets a body_len too long to
    format, so that record alone fails (as when there is no memory for it); once the over
    file exists, the next record stops hsmd, so the test's gdb detaches."""

    def stop(self):
        if os.path.exists(os.environ["HSMD_TEST_FAIL_OVER"]):
            return True
        flag = os.environ["HSMD_TEST_FAIL_FLAG"]
        if not os.path.exists(flag):
            return False
        n = int(gdb.parse_and_eval("$rcx"))
        body = gdb.selected_inferior().read_memory(int(gdb.parse_and_eval("$rdx")), min(n, 4096))
        if os.environ["HSMD_TEST_FAIL_OP"].encode() not in bytes(body):
            return False
        os.unlink(flag)
        gdb.execute("set $rcx = 0x4000000000000000")
        return False


FailOneRecord("*audit_format_line")
'''


@pytest.mark.skipif(not gdb_can_trace(), reason="failing one record is done with gdb, allowed "
                                              "to attach")
def test_a_record_that_fails_alone_counts_as_a_server_error(tmp_path):
    """A request whose own record cannot be written while the trail stays healthy (no
    memory to format it, a full queue) is answered 409, its result withheld, and counted
    as a server_error: no audit gauge or alert shows it (hsmd_audit_healthy stays 1, no
    outage is counted), so HsmdErrors must.  Only refusals because the trail is down count
    as unavailable (test_requests_refused_in_an_outage_say_that_nothing_ran)."""
    from test_metrics import outcome_count, scrape
    server = start_dev()
    tmp = str(tmp_path)
    flag, over = os.path.join(tmp, "fail-one"), os.path.join(tmp, "fail-over")
    script = os.path.join(tmp, "fail-one.py")
    with open(script, "w") as f:
        f.write(FAIL_ONE_RECORD)
    gdb = None
    try:
        assert signed_call(server, "TrentService.ListKeys", {})[0] == 200
        gdb = subprocess.Popen(
            ["gdb", "-q", "-nx", "-batch", "-p", str(server.proc.pid), "-x", script,
             "-ex", "continue", "-ex", "delete", "-ex", "detach"],
            env=dict(os.environ, HSMD_TEST_FAIL_FLAG=flag, HSMD_TEST_FAIL_OVER=over,
                     HSMD_TEST_FAIL_OP='"op":"ListKeys"'),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = []
        for line in gdb.stdout:
            out.append(line)
            if line.startswith("Breakpoint 1 at "):
                break
        assert gdb.poll() is None, "".join(out)
        time.sleep(0.5)  # the continue
        with open(flag, "w"):
            pass
        st, body = signed_call(server, "TrentService.ListKeys", {})
        assert not os.path.exists(flag), "".join(out)  # the record did fail
        assert (st, body["__type"]) == (409, "KMSInternalException"), body
        assert "could not be audited, so its result is withheld" in body["message"], body
        assert metric(server, "hsmd_audit_healthy") == 1
        assert metric(server, "hsmd_audit_outages_total") == 0
        samples = scrape(server)
        assert outcome_count(samples, "ListKeys", "server_error") == 1, samples
        assert outcome_count(samples, "ListKeys", "unavailable") == 0, samples
        assert outcome_count(samples, "ListKeys", "ok") == 1, samples
        with open(over, "w"):
            pass
        assert signed_call(server, "TrentService.ListKeys", {})[0] == 200
        rest, _ = gdb.communicate(timeout=60)
        assert ") detached]" in rest, "".join(out) + rest
        assert signed_call(server, "TrentService.ListKeys", {})[0] == 200
    finally:
        if gdb is not None and gdb.poll() is None:
            gdb.kill()
            gdb.wait()
        server.cleanup()


@pytest.mark.skipif(not gdb_can_trace(), reason="failing the trail's fdatasync needs gdb, "
                                              "allowed to attach")
def test_with_durable_acks_no_answer_comes_before_its_record_is_synced(tmp_path):
    """audit_ack_durable: a request whose record could not be made durable (its fdatasync
    failed) is answered 409, its result withheld.  By default the same request is answered
    once its record is written, before any sync: a power cut then could take the record."""
    normal = start_dev(["--backup-interval-seconds", "0"])
    durable = start_dev(["--backup-interval-seconds", "0", "--audit-ack-durable"])
    try:
        for server in (normal, durable):
            st, out = unsigned_call(server, "HsmdAdmin.Status", {})
            assert st == 200 and out["AuditAckDurable"] == (server is durable), out
            kms = client(server)
            key = kms.create_key(Description="durable acks")["KeyMetadata"]["KeyId"]
            outage = TrailOutage(server, str(tmp_path), call="fdatasync")
            try:
                st, out = signed_call(server, "TrentService.Encrypt",
                                      {"KeyId": key, "Plaintext": "aGVsbG8="})
                if server is durable:
                    assert (st, out["__type"]) == (409, "KMSInternalException"), out
                    assert "withheld" in out["message"], out
                else:
                    assert st == 200 and out["KeyId"].endswith(key), out
                assert eventually(lambda: metric(server, "hsmd_audit_healthy") == 0, 10)
            finally:
                outage.end()
            assert eventually(lambda: metric(server, "hsmd_audit_healthy") == 1, 30)
            assert kms.encrypt(KeyId=key, Plaintext=b"after")["KeyId"].endswith(key)
            # Its record was written all the same: the trail holds it, and verifies.
            encrypts = [r for r in audit_records(server.data_dir) if r.get("op") == "Encrypt"]
            assert len(encrypts) == 2, encrypts
    finally:
        normal.cleanup()
        durable.cleanup()


def test_audit_report_leaves_out_no_verified_record():
    """A record longer than hsmd writes (1 MiB) in the unsigned tail of a live trail,
    which no signature covers: verify refuses it unread (hostile JSON that long would
    cost many times its size to parse), and so does the report, rather than count the
    trail without it."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-long-")
    data = os.path.join(tmp, "data")
    server = start_dev(["--data-dir", data])
    try:
        kms = client(server)
        kms.encrypt(KeyId=kms.create_key()["KeyMetadata"]["KeyId"], Plaintext=b"x")
    finally:
        server.stop()
    files = sorted(glob.glob(os.path.join(data, "audit", "audit-*.jsonl")))
    with open(files[-1], "rb") as f:
        lines = f.read().splitlines()
    rec = next(json.loads(ln) for ln in lines if b'"op":"Encrypt"' in ln)
    rec["seq"] = json.loads(lines[-1])["seq"] + 1
    rec["extra"] = {"note": "x" * (1 << 20)}
    rec.pop("prev")
    rec["prev"] = hashlib.sha256(lines[-1]).hexdigest()
    with open(files[-1], "ab") as f:
        f.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
    v = subprocess.run([HSMCTL, "audit", "verify", "--live"] + files, capture_output=True,
                       text=True)
    assert v.returncode == 1 and "result: INVALID" in v.stdout, v.stdout + v.stderr
    assert "longer than hsmd writes (at most 65536)" in v.stdout, v.stdout
    p = report(files, "--live")
    assert p.returncode == 1 and "longer than hsmd writes" in p.stdout + p.stderr, \
        p.stdout + p.stderr
    shutil.rmtree(tmp, ignore_errors=True)


def test_an_answer_withheld_is_said_so_on_the_trail():
    """The trail's disk fills with nothing kept ahead of the file (its reserve punched
    out): records fail while being written, their requests are answered "its result is
    withheld" with a 409 no SDK sends again by itself (sent again, a CreateKey would make a
    second key), and the records the writer had numbered reach the trail on recovery
    saying how the requests ended.  Each such request is named by a RequestAnswerWithheld
    event (extra.answer withheld), so no record of a success stands for an answer the
    caller never got."""
    tmp = tempfile.mkdtemp(prefix="hsmd-audit-withheld-")
    audit_dir = os.path.join(tmp, "audit")
    mount_tmpfs(audit_dir, "16m")
    server = None
    try:
        server = start_dev(["--audit-dir", audit_dir])
        kms = client(server, retries=3)  # an SDK's default: refusals are sent again
        ok, withheld = set(), set()

        def trail():
            out = []
            for path in sorted(glob.glob(os.path.join(audit_dir, "audit-*.jsonl"))):
                with open(path) as f:
                    out += [json.loads(ln) for ln in f if ln.endswith("\n") and ln.strip()]
            return out

        def create(n):
            for _ in range(n):
                try:
                    ok.add(kms.create_key()["ResponseMetadata"]["RequestId"])
                except botocore.exceptions.ClientError as e:
                    code, meta = e.response["Error"]["Code"], e.response["ResponseMetadata"]
                    if code == "KMSInternalException":
                        assert "withheld" in e.response["Error"]["Message"], e.response
                        assert (meta["HTTPStatusCode"], meta["RetryAttempts"]) == (409, 0)
                        withheld.add(meta["RequestId"])
                    else:
                        assert code == "ServiceUnavailableException", e.response
                        assert "withheld" not in e.response["Error"]["Message"], e.response
                time.sleep(0.05)
        create(3)
        live = sorted(glob.glob(os.path.join(audit_dir, "audit-*.jsonl")))[-1]
        subprocess.run(["fallocate", "-p", "-o", str(os.path.getsize(live)), "-l",
                        str(8 << 20), live], check=True)
        filler = os.path.join(audit_dir, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True)
        create(30)
        os.remove(filler)
        assert eventually(lambda: server.get("/readyz")[0] == 200, timeout=30)
        create(3)
        assert withheld, "no answer was withheld: the disk did not fill as it should"
        said = lambda: {r["extra"].get("withheld_request_id") for r in trail()
                        if r.get("op") == "RequestAnswerWithheld"}
        assert eventually(lambda: withheld <= said(), timeout=10), (withheld, said())
        server.stop()
        recs = trail()
        events = [r for r in recs if r.get("op") == "RequestAnswerWithheld"]
        assert all(e["extra"]["answer"].startswith("withheld") and
                   "answered 409 KMSInternalException" in e["extra"]["answer"] and
                   e["extra"]["request_op"] == "CreateKey" and "request_id" not in e
                   for e in events), events
        # Every record of a success the caller did not get is named by such an event.
        unseen = {r["request_id"] for r in recs if r.get("op") == "CreateKey" and
                  r["outcome"] == "success" and r["request_id"] not in ok}
        assert unseen <= said(), (unseen, said())
        files = sorted(glob.glob(os.path.join(audit_dir, "audit-*.jsonl")))
        res = subprocess.run([HSMCTL, "audit", "verify"] + files, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        if server is not None:
            server.cleanup()
        subprocess.run(["umount", "-l", audit_dir])
        subprocess.run(["rm", "-rf", tmp])
