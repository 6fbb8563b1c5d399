"""Shared fixtures for hsmd's integration tests.

Every test talks to a real hsmd started here on a free loopback port with its
own data directory, using real clients: boto3/botocore, aws-cli, and raw
requests signed by botocore's own SigV4 signer.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import pytest

BUILD = os.environ.get("HSM_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
HSMD = os.path.join(BUILD, "hsmd")
HSMCTL = os.path.join(BUILD, "hsmctl")
SOURCE_DIR = os.environ.get("HSM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
REGION = "us-east-1"
ACCOUNT = "111122223333"
DEV_AKID = "AKIAHSMDTESTDEVKEY01"
DEV_SECRET = "hsmd-integration-test-secret-key-0123456789"
# "address" when the programs under test are built with AddressSanitizer and
# UndefinedBehaviorSanitizer (scripts/asan_integration.py).
SANITIZER = os.environ.get("HSM_SANITIZER", "")


def plain_build_only(why):
    """Skips the calling test when the programs run under a sanitizer; `why` says what
    the sanitizer's runtime takes away from the test."""
    if SANITIZER:
        pytest.skip(f"not under the {SANITIZER} sanitizer: {why}")


# A program a test runs that dies of a crash signal fails that test, whatever the test
# asserts about it: a test expecting a non-zero exit must not take a crash for a refusal.
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
_crashes = []
_handle_exitstatus = subprocess.Popen._handle_exitstatus


def _note_crash(self, *args, **kwargs):
    _handle_exitstatus(self, *args, **kwargs)
    if self.returncode is not None and -self.returncode in CRASH_SIGNALS:
        _crashes.append(f"{self.args!r} died of {signal.Signals(-self.returncode).name}")


subprocess.Popen._handle_exitstatus = _note_crash


@pytest.fixture(autouse=True)
def no_crashes():
    del _crashes[:]
    yield
    assert not _crashes, "a program crashed: " + "; ".join(_crashes)


# Every node's scratch directory (its log; its data unless given one).  A test
# that only stops its node, to read the log or restart on the same data, leaves
# it behind: removed when the session ends, kept for reading if a test failed.
_scratch = []


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        for d in _scratch:
            shutil.rmtree(d, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hsmd:
    """A running hsmd process."""

    def __init__(self, args, env=None, data_dir=None, tls_ca=None, client_cert=None,
                 wrapper=()):
        """client_cert: (certificate, key) files the test's own probes present over TLS;
        wrapper: a command that execs hsmd (prlimit ... --), so the process is hsmd."""
        self.client_cert = client_cert
        self.tmp = tempfile.mkdtemp(prefix="hsmd-it-")
        _scratch.append(self.tmp)
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.scheme = "https" if tls_ca else "http"
        self.tls_ca = tls_ca
        self.log_path = os.path.join(self.tmp, "hsmd.log")
        full_env = dict(os.environ)
        full_env.update(env or {})
        # A free port is free only until another process takes it (tests run in parallel):
        # a start that lost the race is tried again on another port.
        for attempt in range(5):
            self.port = free_port()
            self.endpoint = f"{self.scheme}://127.0.0.1:{self.port}"
            cmd = list(wrapper) + [HSMD, "--listen", f"127.0.0.1:{self.port}", "--data-dir",
                                   self.data_dir] + args
            if not tls_ca and "--dev" not in args:
                cmd.append("--allow-plaintext-loopback")  # production mode, plain HTTP
            self.log = open(self.log_path, "w")
            self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                         env=full_env)
            try:
                self.wait_alive()
                return
            except RuntimeError:
                if attempt == 4 or "Address already in use" not in self.read_log():
                    raise
                self.log.close()

    def processes(self):
        """This process and its descendants: a wrapper (gdb) may run hsmd as its child."""
        parent = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    pass  # gone meanwhile
        found, todo = set(), [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo += [c for c, pp in parent.items() if pp == pid and c not in found]
        return found

    def listening(self):
        """Whether this process (not another that took the port first) listens on the port."""
        inodes = set()
        for pid in self.processes():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
        for table in ("tcp", "tcp6"):  # as the process sees them (its network namespace)
            with open(f"/proc/{self.proc.pid}/net/{table}") as f:
                for line in list(f)[1:]:
                    row = line.split()
                    if row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == self.port \
                            and row[9] in inodes:
                        return True
        return False

    def wait_alive(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hsmd exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                self.get("/healthz")
                # Another node that took the port first answers /healthz as well.
                if self.listening():
                    return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("hsmd did not come up:\n" + self.read_log())

    def get(self, path):
        import ssl
        ctx = ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else None
        if ctx is not None and self.client_cert:
            ctx.load_cert_chain(*self.client_cert)
        try:
            with urllib.request.urlopen(self.endpoint + path, timeout=5, context=ctx) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def read_log(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_dev(extra_args=(), env=None, wrapper=()):
    e = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    e.update(env or {})
    return Hsmd(["--dev"] + list(extra_args), env=e, wrapper=wrapper)


@pytest.fixture(scope="module")
def hsmd():
    server = start_dev()
    yield server
    server.cleanup()


def client(server, akid=DEV_AKID, secret=DEV_SECRET, retries=0, read_timeout=30):
    # total_max_attempts counts the first attempt; botocore's max_attempts counts retries only
    # (max_attempts 1 is two attempts: a 503 would be retried unseen).
    cfg = botocore.config.Config(retries={"total_max_attempts": retries + 1, "mode": "standard"},
                                 connect_timeout=5, read_timeout=read_timeout)
    return boto3.client("kms", region_name=REGION, endpoint_url=server.endpoint,
                        aws_access_key_id=akid, aws_secret_access_key=secret, config=cfg,
                        verify=server.tls_ca if server.tls_ca else None)


@pytest.fixture(scope="module")
def kms(hsmd):
    return client(hsmd)


def signed_request(server, target, body, akid=DEV_AKID, secret=DEV_SECRET, mutate=None,
                   raw=None, send_path="/"):
    """POSTs a request signed by botocore's own SigV4 signer; returns the requests.Response.

    body is JSON-encoded unless raw (bytes, sent and signed as given) is set.
    mutate(headers, payload) may change the signed request before it is sent
    and returns the (headers, payload) to send.  The request is signed for
    path "/" and sent to send_path (path and query).
    """
    import requests
    data = raw if raw is not None else json.dumps(body).encode()
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=server.endpoint + "/", data=data,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    creds = botocore.credentials.Credentials(akid, secret)
    botocore.auth.SigV4Auth(creds, "kms", REGION).add_auth(req)
    prepared = req.prepare()
    headers = dict(prepared.headers)
    payload = prepared.body
    if mutate is not None:
        headers, payload = mutate(headers, payload)
    return requests.post(server.endpoint + send_path, data=payload, headers=headers, timeout=30,
                         verify=server.tls_ca if server.tls_ca else True)


def parsed_body(r):
    try:
        return r.json()
    except ValueError:
        return {"raw": r.text}


def signed_call(server, target, body, akid=DEV_AKID, secret=DEV_SECRET, mutate=None):
    """POSTs a JSON request signed by botocore's own SigV4 signer.

    target is e.g. "TrentService.RotateKeyOnDemand" or "HsmdAdmin.CreateUser".
    mutate(headers, payload) may change the signed request before it is sent.
    Returns (status, parsed JSON body).
    """
    r = signed_request(server, target, body, akid=akid, secret=secret, mutate=mutate)
    return r.status_code, parsed_body(r)


def unsigned_call(server, target, body):
    import requests
    r = requests.post(server.endpoint + "/", data=json.dumps(body).encode(), timeout=30,
                      headers={"Content-Type": "application/x-amz-json-1.1",
                               "X-Amz-Target": target},
                      verify=server.tls_ca if server.tls_ca else True)
    return r.status_code, r.json()


def error_code(exc_info):
    return exc_info.value.response["Error"]["Code"]


def build_preload(tmp_path_factory, name):
    """tests/integration/<name>.c built as a library to preload into hsmd."""
    out = tmp_path_factory.mktemp(name) / (name + ".so")
    cc = subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o",
                         str(out), os.path.join(os.path.dirname(__file__), name + ".c"),
                         "-ldl", "-lpthread"],
                        capture_output=True, text=True, timeout=120)
    assert cc.returncode == 0, cc.stderr
    return str(out)


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """oomfault.c built: the preload that refuses a process's allocations on command."""
    plain_build_only("oomfault.c replaces the allocator, which the sanitizer's runtime owns")
    return build_preload(tmp_path_factory, "oomfault")


@pytest.fixture(scope="module")
def securewatch(tmp_path_factory):
    """securewatch.c built: the preload that notes the largest secure-heap allocation
    of hsmd's HTTP workers in the file HSM_TEST_SECURE_WATCH names."""
    return build_preload(tmp_path_factory, "securewatch")


@pytest.fixture(scope="module")
def listhold(tmp_path_factory):
    """listhold.c built: the preload that holds hsmd's periodic read of its access key
    ids between the read and its use, once, on command (HSM_TEST_LIST_HOLD)."""
    return build_preload(tmp_path_factory, "listhold")


@pytest.fixture(scope="module")
def clockshift(tmp_path_factory):
    """clockshift.c built: the preload that moves a process's wall clock (only) by the
    seconds written in the file HSM_TEST_CLOCK_SHIFT_FILE names (helpers.Clock)."""
    return build_preload(tmp_path_factory, "clockshift")
