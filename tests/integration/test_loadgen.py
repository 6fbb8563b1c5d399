"""The benchmark's load generator (bench/loadgen) counts what hsmd really did.

`make bench` reports its figures, so they are checked here against hsmd's own
audit trail: every request the load generator counts as answered is an
audited, successful Encrypt, at the rate it was asked for, and refused
requests are counted as errors, not as throughput.  Short runs only: speed
itself is measured by `make bench`, not asserted here.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BUILD, DEV_AKID, DEV_SECRET, Hsmd, client, start_dev
from helpers import audit_records, b64, make_pki

LOADGEN = os.path.join(BUILD, "bench", "loadgen")

pytestmark = pytest.mark.skipif(not os.path.exists(LOADGEN),
                                reason="the bench programs are not built (HSM_BENCH=OFF)")


def loadgen(server, key, *args, plaintext=b"loadgen check"):
    body = json.dumps({"KeyId": "@KEY@", "Plaintext": b64(plaintext),
                       "EncryptionContext": {"run": "test"}})
    env = dict(os.environ, AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET)
    p = subprocess.run([LOADGEN, "--url", server.endpoint, "--op", "Encrypt", "--body", body,
                        "--key", key, "--warmup", "0.2", *args],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), p.stderr


def encrypt_successes(server):
    return sum(1 for r in audit_records(server.data_dir)
               if r.get("op") == "Encrypt" and r.get("outcome") == "success")


@pytest.fixture(scope="module")
def served():
    server = start_dev()
    key = client(server).create_key()["KeyMetadata"]["KeyId"]
    yield server, key
    server.cleanup()


def test_closed_loop_counts_only_audited_successes(served):
    server, key = served
    before = encrypt_successes(server)
    out, _ = loadgen(server, key, "--connections", "8", "--duration", "1")
    assert (out["mode"], out["errors"], out["incomplete"]) == ("closed", 0, 0)
    assert out["ok"] > 100
    # Warm-up requests are audited too but not counted: at least ok more records.
    assert encrypt_successes(server) - before >= out["ok"]
    assert 0 < out["p50_us"] <= out["p99_us"] <= out["max_us"]


def test_constant_rate_keeps_its_schedule(served):
    server, key = served
    out, _ = loadgen(server, key, "--connections", "4", "--duration", "2", "--rate", "400")
    assert (out["mode"], out["errors"]) == ("rate", 0)
    # 400/s for 2 s: never more than scheduled; fewer only when the shared machine
    # starves both the client and the server for a while.
    assert 600 <= out["ok"] <= 880
    # The window in 50 ms slots of scheduled time, each with its worst latency.
    assert (out["slot_ms"], out["slots"]) == (50, 40)
    assert 0 <= out["slow_slots"] <= out["slots"]
    assert len(out["stalls"]) == min(out["n_stalls"], 20)


def test_a_server_that_stops_shows_as_a_stall(served):
    """hsmd stopped (SIGSTOP) for 400 ms in the middle of a constant-rate run: the
    requests due meanwhile wait for it, and loadgen reports one stall there."""
    server, key = served

    def pause():
        time.sleep(1.2)
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(0.4)
        os.kill(server.proc.pid, signal.SIGCONT)

    t = threading.Thread(target=pause)
    t.start()
    try:
        out, _ = loadgen(server, key, "--connections", "4", "--duration", "3", "--rate", "200")
    finally:
        t.join()
        os.kill(server.proc.pid, signal.SIGCONT)
    assert out["errors"] == 0 and out["n_stalls"] >= 1, out
    start, length, worst = max(out["stalls"], key=lambda s: s[2])
    assert worst >= 300 and 0 <= start < 3000 and length >= 50, out
    assert out["slow_slots"] >= 2, out


def test_refused_requests_are_errors_not_throughput(served):
    server, _ = served
    out, err = loadgen(server, "alias/no-such-key", "--connections", "2", "--duration", "0.5")
    assert out["ok"] == 0 and out["errors"] > 0
    assert "HTTP 400" in err and "NotFoundException" in err


def test_over_tls_every_answer_is_read_whole():
    """Over HTTPS the load generator reads each TLS record's header and body in
    one read (read-ahead): answers small and large (a 4 KiB Encrypt's answer is
    about 5.5 KiB) are counted only when whole, and each is an audited success."""
    d = tempfile.mkdtemp(prefix="hsmd-pki-")
    pki = make_pki(d)
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    server = Hsmd(["--dev", "--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"]],
                  env=env, tls_ca=pki["ca.pem"])
    try:
        key = client(server).create_key()["KeyMetadata"]["KeyId"]
        for plaintext in (b"x" * 64, os.urandom(4096)):
            before = encrypt_successes(server)
            out, _ = loadgen(server, key, "--connections", "4", "--duration", "0.5",
                             "--cafile", pki["ca.pem"], plaintext=plaintext)
            assert (out["mode"], out["errors"], out["incomplete"]) == ("closed", 0, 0), out
            assert out["ok"] > 20, out
            assert encrypt_successes(server) - before >= out["ok"]
        # A certificate it cannot verify: no request is sent at all.
        p = subprocess.run([LOADGEN, "--url", server.endpoint, "--op", "Encrypt", "--body", "{}",
                            "--key", key, "--duration", "0.2", "--cafile", pki["other-ca.pem"]],
                           env=dict(os.environ, AWS_ACCESS_KEY_ID=DEV_AKID,
                                    AWS_SECRET_ACCESS_KEY=DEV_SECRET),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "TLS handshake failed" in p.stderr, p.stderr
    finally:
        server.cleanup()
        shutil.rmtree(d, ignore_errors=True)
