"""Helpers shared by the integration tests (not a test module itself).

Assertions on KMS errors, the admin API, users with chosen roles, the audit
trail, aws-cli, restarting a dev node on the same data directory, a test PKI, a
throwaway PostgreSQL server (tests/support/pg-server.sh), and hsmd killed under gdb at a
chosen function.
"""
import base64
import contextlib
import datetime
import glob
import json
import mmap
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import types
import unittest.mock
import urllib.parse

import botocore.auth
import botocore.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import (DEV_AKID, DEV_SECRET, REGION, Hsmd, signed_call, signed_request,
                      parsed_body)

AWS_CLI = "/usr/bin/aws"
PG_SERVER = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                          "../support/pg-server.sh"))
ACCOUNT = "111122223333"
# What an offline key create gives a store that records no account and region yet: the
# nodes' (hsmd's defaults, which the tests' nodes run with).
IDENTITY = ["--region", REGION, "--account-id", ACCOUNT]


def key_arn(key_id):
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


def raises(code, fn, *args, status=None, message=None, **kwargs):
    """Calls a boto3 method expecting the KMS error `code`; returns the error response."""
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn(*args, **kwargs)
    resp = e.value.response
    assert resp["Error"]["Code"] == code, resp
    if status is not None:
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == status, resp
    if message is not None:
        assert message.lower() in resp["Error"]["Message"].lower(), resp
    return resp


def call_error(server, op, body, code, status=400, **kw):
    """A signed TrentService call (for what boto3 would refuse to send) expecting `code`."""
    st, out = signed_call(server, "TrentService." + op, body, **kw)
    assert (st, out.get("__type")) == (status, code), (st, out)
    return out


def call_ok(server, op, body, **kw):
    st, out = signed_call(server, "TrentService." + op, body, **kw)
    assert st == 200, (st, out)
    return out


def admin(server, op, body=None, akid=DEV_AKID, secret=DEV_SECRET, expect=200):
    """An HsmdAdmin.<op> call signed by botocore; asserts the HTTP status."""
    st, out = signed_call(server, "HsmdAdmin." + op, body or {}, akid=akid, secret=secret)
    assert st == expect, (op, st, out)
    return out


def new_user(server, name, roles):
    """Creates a user with roles (as the dev officer) and an access key; returns (akid, secret)."""
    admin(server, "CreateUser", {"UserName": name, "Roles": list(roles)})
    k = admin(server, "CreateAccessKey", {"UserName": name})
    assert k["UserName"] == name and k["AccessKeyId"].startswith("AKIA")
    assert len(k["SecretAccessKey"]) == 40
    return k["AccessKeyId"], k["SecretAccessKey"]


def restart_dev(server):
    """Stops a dev node and starts a new one on the same data directory (new port)."""
    server.stop()
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    new = Hsmd(["--dev"], env=env, data_dir=server.data_dir)
    own_cleanup = new.cleanup

    def cleanup():  # the data directory lives in the first node's temporary directory
        own_cleanup()
        server.cleanup()

    new.cleanup = cleanup
    return new


# ---- metrics ------------------------------------------------------------------------------

def metric(server, name):
    """The value of an unlabelled sample in /metrics."""
    st, body, _ = server.get("/metrics")
    assert st == 200
    m = re.search(rb"^" + name.encode() + rb" (\S+)$", body, re.M)
    assert m, name
    return float(m.group(1))


def eventually(fn, timeout=10.0, step=0.05):
    """Polls fn until it returns a true value and returns that value, or fn's last (false)
    one once `timeout` seconds passed: what hsmd does on its own (a scheduler, a watch,
    a writer) shows a moment after what caused it."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


# ---- audit trail --------------------------------------------------------------------------

def audit_records(data_dir):
    recs = []
    for path in sorted(glob.glob(os.path.join(data_dir, "audit", "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                # A line without its newline is a record hsmd is still appending.
                if line.strip() and line.endswith("\n"):
                    recs.append(json.loads(line))
    return recs


def audit_records_until(data_dir, match, n=1, timeout=10.0):
    """The records match() accepts, once there are n of them or timeout
    passed: events hsmd writes on its own (a scheduler, a sweeper) reach the
    log a moment after what they changed is visible."""
    deadline = time.time() + timeout
    while True:
        found = [r for r in audit_records(data_dir) if match(r)]
        if len(found) >= n or time.time() > deadline:
            return found
        time.sleep(0.05)


def audit_record(data_dir, request_id, timeout=5.0):
    """The audit record of a request, waiting for the writer to flush it."""
    deadline = time.time() + timeout
    while True:
        found = [r for r in audit_records(data_dir) if r.get("request_id") == request_id]
        if found or time.time() > deadline:
            break
        time.sleep(0.05)
    assert len(found) == 1, f"request {request_id}: {len(found)} audit records"
    return found[0]


def request_id(resp):
    rid = resp.headers.get("x-amzn-RequestId")
    assert rid, dict(resp.headers)
    return rid


# ---- signing at another time ----------------------------------------------------------------

@contextlib.contextmanager
def signing_clock(when):
    """Makes botocore's SigV4 signer sign as if the UTC time were `when`."""
    class Clock(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return when

    fake = types.SimpleNamespace(**{k: getattr(datetime, k) for k in dir(datetime)
                                    if not k.startswith("__")})
    fake.datetime = Clock
    with unittest.mock.patch.object(botocore.auth, "datetime", fake):
        yield


def signed_at(server, when, target, body, **kw):
    with signing_clock(when):
        return signed_request(server, target, body, **kw)


# ---- aws-cli ------------------------------------------------------------------------------

class AwsCli:
    """Runs Debian's aws-cli v2 against a node, isolated from the machine's AWS config."""

    def __init__(self, server, akid=DEV_AKID, secret=DEV_SECRET):
        self.server = server
        self.dir = tempfile.mkdtemp(prefix="hsmd-cli-")
        config = os.path.join(self.dir, "config")
        creds = os.path.join(self.dir, "credentials")
        for p in (config, creds):
            open(p, "w").close()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update({
            "AWS_ACCESS_KEY_ID": akid, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": config,
            "AWS_SHARED_CREDENTIALS_FILE": creds, "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
            "AWS_EC2_METADATA_DISABLED": "true", "HOME": self.dir,
        })

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def run(self, *args, check=True):
        cmd = [AWS_CLI, "kms"] + list(args) + ["--endpoint-url", self.server.endpoint,
                                                "--output", "json"]
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check:
            assert p.returncode == 0, (cmd, p.returncode, p.stderr)
        return p

    def json(self, *args):
        out = self.run(*args).stdout
        return json.loads(out) if out.strip() else {}


def b64(data):
    return base64.b64encode(data).decode()


__all__ = ["AWS_CLI", "ACCOUNT", "AwsCli", "admin", "audit_record", "audit_records", "b64",
           "call_error", "call_ok", "key_arn", "key_denying", "make_pki", "new_user", "parsed_body",
           "raises", "request_id", "restart_dev", "self_signed", "signed_at", "signing_clock"]


def self_signed(cn):
    """A self-signed P-256 certificate (DER) made here."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def openssl(*args, cwd):
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p


def make_pki(d, san="IP:127.0.0.1"):
    """ca.pem, server.pem (CN 127.0.0.1, subjectAltName san, signed by the CA), server.key;
    P-256."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=hsmd test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
            cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n"
                "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    # A second CA that did not sign the server certificate.
    openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other-ca.pem", "-days", "2",
            "-subj", "/CN=another CA", cwd=d)
    return {n: os.path.join(d, n) for n in ("ca.pem", "server.pem", "server.key",
                                            "other-ca.pem")}


class Postgres:
    """A PostgreSQL server of its own, on a free loopback port."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="hsmd-pg-")
        p = subprocess.run([PG_SERVER, "start", self.dir], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        self.uri = p.stdout.strip().splitlines()[-1]
        assert self.uri.startswith("postgresql://"), self.uri

    def database(self, name):
        """A new empty database; its URI."""
        p = subprocess.run(["psql", self.uri, "-q", "-c", f"CREATE DATABASE {name}"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        u = urllib.parse.urlsplit(self.uri)
        return urllib.parse.urlunsplit(u._replace(path="/" + name))

    def sql(self, uri, query):
        p = subprocess.run(["psql", uri, "-At", "-c", query], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def ctl(self, action):
        p = subprocess.run([PG_SERVER, action, self.dir], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr

    def _processes(self):
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            main = int(f.readline())
        kids = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True)
        return [main] + [int(p) for p in kids.stdout.split()]

    def freeze(self):
        """Stops every process of the server (SIGSTOP): connections stay open, nothing
        answers, and the server enforces none of its timeouts (a frozen VM, a hung disk)."""
        for pid in self._processes():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self):
        for pid in self._processes():
            os.kill(pid, signal.SIGCONT)

    def close(self):
        subprocess.run([PG_SERVER, "stop", self.dir], capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


def gdb_can_trace():
    """gdb is installed and may trace a child or attach to a process here (ptrace can be
    denied: a container without CAP_SYS_PTRACE, kernel.yama.ptrace_scope 3)."""
    if shutil.which("gdb") is None:
        return False
    p = subprocess.run(["gdb", "-q", "-nx", "-batch", "-ex", "run", "--args", "/bin/true"],
                       capture_output=True, text=True, timeout=60)
    return "exited normally" in p.stdout


def listed_key_ids(kms):
    """Every key id ListKeys names, in its order (all pages)."""
    return [k["KeyId"] for page in kms.get_paginator("list_keys").paginate()
            for k in page["Keys"]]


def key_denying(kms, action, **create):
    """A new key whose policy lets the account do everything but `action`, denied to all."""
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": action, "Resource": "*"}]}
    return kms.create_key(Policy=json.dumps(policy), BypassPolicyLockoutSafetyCheck=True,
                          **create)["KeyMetadata"]["KeyId"]


# ---- oomfault.c's control file ---------------------------------------------------------------

# struct ctl of oomfault.c: mode, gen, at, seen, fired, then the thread list.
CTL_SIZE = 256
MODE, GEN, AT, SEEN, FIRED = range(5)


class Faults:
    """The shared control file of a process's oomfault.c (threads: the comma-separated
    prefixes of the names of the threads whose allocations count)."""

    def __init__(self, path, threads):
        with open(path, "wb") as f:
            f.write(b"\0" * CTL_SIZE)
        self.f = open(path, "r+b")
        self.m = mmap.mmap(self.f.fileno(), CTL_SIZE)
        self.threads = threads
        self.m[40:40 + len(threads)] = threads.encode()

    def _get(self, field):
        return struct.unpack_from("<q", self.m, field * 8)[0]

    def _set(self, field, value):
        struct.pack_into("<q", self.m, field * 8, value)

    def command(self, mode, at=0):
        self._set(MODE, 0)
        self._set(AT, at)
        self._set(SEEN, 0)
        self._set(FIRED, 0)
        self._set(GEN, self._get(GEN) + 1)
        self._set(MODE, mode)

    def off(self):
        self._set(MODE, 0)
        self._set(GEN, self._get(GEN) + 1)

    @property
    def seen(self):
        return self._get(SEEN)

    @property
    def fired(self):
        return self._get(FIRED) == 1

    @property
    def refused(self):
        """In mode 3 (every at-th refused), how many were."""
        return self._get(FIRED)

    def close(self):
        self.m.close()
        self.f.close()


def raw_exchange(port, data, shut=True):
    """Sends bytes on a loopback connection of their own to port, shuts the sending
    side unless shut is false, and returns every byte the server sent until it closed
    (a reset raises ConnectionResetError)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def sigv4_headers(server, target, body):
    """The headers botocore's SigV4 signer gives a KMS JSON request (Host and
    Content-Length left for the caller to write), and the body's bytes."""
    import botocore.awsrequest
    import botocore.credentials
    data = json.dumps(body).encode()
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=server.endpoint + "/", data=data,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(DEV_AKID, DEV_SECRET), "kms",
                            REGION).add_auth(req)
    headers = {k: v for k, v in req.prepare().headers.items()
               if k.lower() not in ("host", "content-length")}
    return headers, data


def points(n, spread, tail):
    """Which of n allocations to refuse: every one, or `spread` spread over them all and
    every one of the last `tail` (over TLS the handshake comes first, with hundreds
    of allocations, and the request's own come last)."""
    if n <= spread:
        return list(range(1, n + 1))
    spread = {1 + round(i * (n - 1) / (spread - 1)) for i in range(spread)}
    return sorted(spread | set(range(max(1, n - tail + 1), n + 1)))


class Clock:
    """The shift of a node's wall clock, in whole seconds."""

    def __init__(self, path):
        self.path = path
        self.set(0)

    def set(self, seconds):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(int(seconds)))
        os.replace(tmp, self.path)


class KilledAt:
    """gdb attached to a running hsmd, which it kills (SIGKILL) the first time any
    thread reaches the function stop_at: a crash or a power cut at that point."""

    def __init__(self, server, stop_at):
        self.server = server
        self.gdb = subprocess.Popen(
            ["gdb", "-q", "-nx", "-batch", "-p", str(server.proc.pid),
             "-ex", f"break {stop_at}", "-ex", "continue", "-ex", "kill"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.out = []
        ready = threading.Event()

        def read():
            for line in self.gdb.stdout:
                self.out.append(line)
                # Set, and the process goes on: a request sent from now on stops there
                # (one sent before the continue waits in its socket until then).
                if line.startswith("Breakpoint 1 at "):
                    ready.set()
            ready.set()
        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        assert ready.wait(60) and self.gdb.poll() is None, "".join(self.out)

    def wait(self):
        self.gdb.wait(timeout=60)
        self.reader.join(10)
        text = "".join(self.out)
        assert "Breakpoint 1, " in text, text
        self.server.proc.wait(timeout=30)
        return text


def killed_before_its_record(server, call):
    """Runs call (one request) with hsmd killed once the change it commits is made and
    before its record is submitted: the client gets no answer."""
    killer = KilledAt(server, "hsm_audit_submit_lazy")
    with pytest.raises((botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectionClosedError,
                        botocore.exceptions.ReadTimeoutError)):
        call()
    killer.wait()


@contextlib.contextmanager
def kms_front(server, answer):
    """A loopback HTTP front for server, as a node of another release would answer:
    answer(target, body) returns (status, bytes) for a request it answers itself, or None
    to pass the request on as signed (hsmd checks the Host header the client signed).
    Yields (url, targets): the front's address and the X-Amz-Target of every request."""
    import http.server
    import urllib.error
    import urllib.request

    targets = []

    class Front(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            target = self.headers["X-Amz-Target"]
            targets.append(target)
            mine = answer(target, body)
            if mine is not None:
                status, out = mine
            else:
                req = urllib.request.Request(server.endpoint + self.path, data=body,
                                             headers=dict(self.headers), method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, out = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, out = e.code, e.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Front)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{front.server_port}", targets
    finally:
        front.shutdown()
        front.server_close()
