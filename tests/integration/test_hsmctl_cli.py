"""hsmctl's command line: what it refuses before acting, and failures it must not hide
(output that was never written, options of another command, stray arguments)."""
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, start_dev


def ctl(*args, endpoint=None, out=None):
    """hsmctl with the dev node's officer credentials; out: a file for its stdout."""
    cmd = [HSMCTL] + (["--endpoint", endpoint] if endpoint else []) + list(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = DEV_AKID, DEV_SECRET
    if out is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    return subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, timeout=120,
                          env=env)


@pytest.fixture(scope="module")
def dev():
    server = start_dev()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def store():
    """A stopped node's data directory (2 of 2) and its quorum."""
    base = tempfile.mkdtemp(prefix="hsmd-cli-")
    data, shares = os.path.join(base, "data"), os.path.join(base, "shares")
    p = ctl("init", "--data-dir", data, "--share-dir", shares, "--shares", "2",
            "--threshold", "2", "--admin", "ops")
    assert p.returncode == 0, p.stderr
    quorum = ["--share", os.path.join(shares, "share-1-of-2.share"),
              "--share", os.path.join(shares, "share-2-of-2.share")]
    yield {"base": base, "data": data, "quorum": quorum}
    shutil.rmtree(base, ignore_errors=True)


def access_keys(endpoint=None, data=None, user="dev"):
    where = ["--data-dir", data] if data else []
    p = ctl("access-key", "list", user, *where, endpoint=endpoint)
    assert p.returncode == 0, p.stderr
    return re.findall(r"^AccessKeyId: (\S+)$", p.stdout, re.M)


# ---- output that could not be written ---------------------------------------------------

def test_a_secret_not_written_out_fails_and_names_the_key_to_revoke(dev, store):
    with open("/dev/full", "w") as full:
        p = ctl("access-key", "create", "dev", endpoint=dev.endpoint, out=full)
    assert p.returncode == 1, p.stderr
    m = re.search(r"access key (\S+) of dev exists, but nobody holds its secret: revoke it "
                  r"\(hsmctl access-key revoke (\S+)\)", p.stderr)
    assert m and m.group(1) == m.group(2), p.stderr
    assert m.group(1) in access_keys(dev.endpoint)
    assert ctl("access-key", "revoke", m.group(1), endpoint=dev.endpoint).returncode == 0
    # Offline alike.
    with open("/dev/full", "w") as full:
        p = ctl("access-key", "create", "ops", "--data-dir", store["data"], *store["quorum"],
                out=full)
    assert p.returncode == 1, p.stderr
    m = re.search(r"access key (\S+) of ops exists, but nobody holds its secret: revoke it "
                  r"\(hsmctl access-key revoke \1\)", p.stderr)
    assert m and m.group(1) in access_keys(data=store["data"], user="ops"), p.stderr


def test_output_not_written_is_a_failure(dev, store):
    for args, endpoint in ((["audit", "pubkey"], dev.endpoint), (["status"], dev.endpoint),
                           (["user", "list", "--data-dir", store["data"]], None),
                           (["help"], None)):
        with open("/dev/full", "w") as full:
            p = ctl(*args, endpoint=endpoint, out=full)
        assert p.returncode == 1 and "cannot write the output: No space left on device" in \
            p.stderr, (args, p.returncode, p.stderr)
