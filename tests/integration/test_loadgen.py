"""The benchmark's load generator (bench/loadgen) counts what hsmd really did.

`make bench` reports its figures, so they are checked here against hsmd's own
audit trail: every request the load generator counts as answered is an
audited, successful Encrypt, at the rate it was asked for, and refused
requests are counted as errors, not as throughput.  Short runs only: speed
itself is measured by `make bench`, not asserted here.
"""
import json
import os
import subprocess

import pytest

from conftest import BUILD, DEV_AKID, DEV_SECRET, client, start_dev
from helpers import audit_records, b64

LOADGEN = os.path.join(BUILD, "bench", "loadgen")

pytestmark = pytest.mark.skipif(not os.path.exists(LOADGEN),
                                reason="the bench programs are not built (HSM_BENCH=OFF)")


def loadgen(server, key, *args):
    body = json.dumps({"KeyId": "@KEY@", "Plaintext": b64(b"loadgen check"),
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
    assert 720 <= out["ok"] <= 880  # 400/s for 2 s, give or take a scheduling tick


def test_refused_requests_are_errors_not_throughput(served):
    server, _ = served
    out, err = loadgen(server, "alias/no-such-key", "--connections", "2", "--duration", "0.5")
    assert out["ok"] == 0 and out["errors"] > 0
    assert "HTTP 400" in err and "NotFoundException" in err
