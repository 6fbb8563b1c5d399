"""hsmd over TLS: a CA and a server certificate for 127.0.0.1 (IP SAN) made
with the openssl CLI, boto3 verifying against the CA, the protocol floor
(TLS 1.2; TLS 1.1 refused, plain HTTP answered 400 in plain text, and a
ClientHello on a plain port refused at once), and client certificates presented
by hsmctl and the PKCS#11 module to a node that requires one."""
import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest
import requests

from conftest import DEV_AKID, DEV_SECRET, HSMCTL, HSMD, REGION, Hsmd, client, signed_call
from helpers import audit_records_until, make_pki, metric, openssl


@pytest.fixture(scope="module")
def tls():
    d = tempfile.mkdtemp(prefix="hsmd-pki-")
    pki = make_pki(d)
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    server = Hsmd(["--dev", "--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"]],
                  env=env, tls_ca=pki["ca.pem"])
    yield server, pki
    server.cleanup()
    shutil.rmtree(d, ignore_errors=True)


def test_boto3_over_tls(tls):
    server, _ = tls
    assert server.endpoint.startswith("https://127.0.0.1:")
    kms = client(server)
    kid = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=kid, Plaintext=b"over tls")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"over tls"
    assert server.get("/healthz")[0] == 200
    st, out = signed_call(server, "TrentService.ListKeys", {})
    assert st == 200 and kid in [k["KeyId"] for k in out["Keys"]]



def wait_metric(server, name, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    value = metric(server, name)
    while not pred(value) and time.monotonic() < deadline:
        time.sleep(0.05)
        value = metric(server, name)
    return value


def test_warm_connections_give_their_buffers_back(tls):
    """A keep-alive client's connection keeps OpenSSL's record buffers between
    requests, gives them back after a second of idling, and answers as before."""
    server, _ = tls
    name = "hsmd_http_tls_warm_connections"
    kms = client(server)
    kid = kms.create_key()["KeyMetadata"]["KeyId"]
    idle_from = time.monotonic()  # hsmd's connection idles from before this
    # urllib's /metrics request closes its connection: it is never counted.
    assert wait_metric(server, name, lambda v: v >= 1) >= 1
    assert wait_metric(server, name, lambda v: v == 0) == 0
    assert time.monotonic() - idle_from >= 0.8  # after a second's idling, not at once
    blob = kms.encrypt(KeyId=kid, Plaintext=b"after idling")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"after idling"
    assert wait_metric(server, name, lambda v: v >= 1) >= 1

def test_dev_banner_names_the_tls_endpoint(tls):
    server, _ = tls
    port = server.endpoint.rsplit(":", 1)[1]
    # hsmd prints the banner once its listener is started: /healthz may answer before.
    deadline = time.monotonic() + 30
    log = server.read_log()
    while f"--endpoint-url https://127.0.0.1:{port}\n" not in log and time.monotonic() < deadline:
        time.sleep(0.05)
        log = server.read_log()
    assert f"endpoint:          https://127.0.0.1:{port}\n" in log, log
    assert f"--endpoint-url https://127.0.0.1:{port}\n" in log and "auto-unsealed, TLS." in log
    assert "http://" not in log and "plain HTTP" not in log, log


def test_certificate_is_verified(tls):
    server, pki = tls
    cfg = botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10)
    for verify in (pki["other-ca.pem"], True):  # a CA that did not sign it; the system store
        kms = boto3.client("kms", region_name=REGION, endpoint_url=server.endpoint,
                           aws_access_key_id=DEV_AKID, aws_secret_access_key=DEV_SECRET,
                           config=cfg, verify=verify)
        with pytest.raises(botocore.exceptions.SSLError):
            kms.list_keys()


def test_plain_http_to_the_tls_port_is_told_so(tls):
    """Plain HTTP where a ClientHello was due gets a plain 400 saying the port speaks
    TLS (KMS-style, nothing of the request echoed) and the connection ends; the
    request is not served."""
    server, pki = tls
    url = server.endpoint.replace("https://", "http://")
    marker = "echo-me-not-7d1f"
    r = requests.post(url + "/" + marker, data=b"{}", timeout=10,
                      headers={"X-Amz-Target": "TrentService.CreateKey", "X-Marker": marker,
                               "Content-Type": "application/x-amz-json-1.1"})
    assert r.status_code == 400, r.text
    assert r.json()["__type"] == "ValidationException" and "TLS" in r.json()["message"]
    assert r.headers["Connection"] == "close"
    assert marker not in r.text and marker not in str(r.headers)
    # Refused before it was read, and recorded so: the status, nothing the client sent.
    rid = r.headers["x-amzn-RequestId"]
    (rec,) = audit_records_until(server.data_dir, lambda x: x.get("request_id") == rid)
    assert rec["op"] == "HttpRequest" and rec["extra"]["http_status"] == "400", rec
    assert "TLS" in rec["extra"]["reason"] and marker not in json.dumps(rec), rec
    # Any method, and the empty lines a client may send first, are recognised.
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"\r\nBREW / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 "), data[:100]
    # The port still speaks TLS.
    ctx = ssl.create_default_context(cafile=pki["ca.pem"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls_sock:
            assert tls_sock.version() in ("TLSv1.2", "TLSv1.3")


def test_tls_to_the_plain_port_is_refused_at_once(hsmd):
    """A ClientHello sent to a plain-HTTP port cannot begin a request: refused with 400
    as it arrives, not held until read_timeout (10 s)."""
    with socket.create_connection(("127.0.0.1", hsmd.port), timeout=5) as s:
        start = time.monotonic()
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert time.monotonic() - start < 4
    assert data.startswith(b"HTTP/1.1 400 "), data[:100]
    assert b'"__type":"ValidationException"' in data
    # A TLS client sees its handshake fail at once.
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", hsmd.port), timeout=5) as s:
        start = time.monotonic()
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(s)
        assert time.monotonic() - start < 4


def handshake(server, ca, minimum, maximum):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old protocols at all
    ctx.minimum_version, ctx.maximum_version = minimum, maximum
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls_sock:
            return tls_sock.version()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_versions(tls):
    server, pki = tls
    assert handshake(server, pki["ca.pem"], ssl.TLSVersion.TLSv1_2,
                     ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(server, pki["ca.pem"], ssl.TLSVersion.TLSv1_3,
                     ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        with pytest.raises(ssl.SSLError) as e:
            handshake(server, pki["ca.pem"], ssl.TLSVersion.TLSv1, old)
        # The server refused the version (an alert), rather than the client offering nothing.
        assert "ALERT_PROTOCOL_VERSION" in str(e.value).upper(), e.value


def test_openssl_s_client_tls1_1_is_refused(tls):
    server, pki = tls
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-CAfile",
            pki["ca.pem"], "-verify_return_error", "-brief"]
    ok = subprocess.run(base + ["-tls1_2"], input="", capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "TLSv1.2" in ok.stdout + ok.stderr, ok.stderr
    old = subprocess.run(base + ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], input="",
                         capture_output=True, text=True, timeout=30)
    assert old.returncode != 0
    assert "protocol version" in (old.stdout + old.stderr).lower(), old.stderr


def ipv6_loopback_port():
    """A free port on ::1, or None where this machine has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


def test_ipv6_endpoint_over_tls(tmp_path):
    """A node on [::1]: hsmctl and boto3 reach it by its bracketed address, the certificate's
    IP name is checked against the address, and SigV4's Host (brackets and all) is the same
    on both ends."""
    port = ipv6_loopback_port()
    if port is None:
        pytest.skip("no IPv6 loopback on this machine")
    good = tmp_path / "good"
    wrong = tmp_path / "wrong"
    good.mkdir()
    wrong.mkdir()
    pki = make_pki(str(good), san="IP:::1")
    other = make_pki(str(wrong))  # for 127.0.0.1 only
    env = dict(os.environ, HSM_DEV_ACCESS_KEY_ID=DEV_AKID, HSM_DEV_SECRET_ACCESS_KEY=DEV_SECRET,
               AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET)
    endpoint = f"https://[::1]:{port}"

    def hsmctl(ca, *args):
        return subprocess.run([HSMCTL, "--endpoint", endpoint, "--ca-file", ca, *args],
                              capture_output=True, text=True, timeout=30, env=env)

    for server_pki, ok in ((pki, True), (other, False)):
        log = open(tmp_path / f"hsmd-{ok}.log", "w")
        proc = subprocess.Popen([HSMD, "--dev", "--listen", f"[::1]:{port}", "--data-dir",
                                 str(tmp_path / f"data-{ok}"), "--tls-cert", server_pki["server.pem"],
                                 "--tls-key", server_pki["server.key"]],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, open(tmp_path / f"hsmd-{ok}.log").read()
                try:
                    socket.create_connection(("::1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "hsmd did not come up on [::1]"
                    time.sleep(0.05)
            p = hsmctl(server_pki["ca.pem"], "status")
            if not ok:
                assert p.returncode != 0 and "IP address mismatch" in p.stderr, p.stdout + p.stderr
                continue
            assert p.returncode == 0 and "Sealed: false" in p.stdout, p.stdout + p.stderr
            # Signed by hsmctl's own client: hsmd checks the signature over "[::1]:port".
            p = hsmctl(pki["ca.pem"], "audit", "hash", "some value")
            assert p.returncode == 0 and len(p.stdout.strip()) >= 64, p.stdout + p.stderr
            kms = boto3.client("kms", endpoint_url=endpoint, region_name=REGION,
                               aws_access_key_id=DEV_AKID, aws_secret_access_key=DEV_SECRET,
                               verify=pki["ca.pem"])
            kid = kms.create_key()["KeyMetadata"]["KeyId"]
            blob = kms.encrypt(KeyId=kid, Plaintext=b"over IPv6")["CiphertextBlob"]
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"over IPv6"
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()


def test_hsmctl_over_tls(tls):
    server, pki = tls
    p = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "--ca-file", pki["ca.pem"],
                        "status"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "Sealed: false" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([HSMCTL, "--endpoint", server.endpoint, "--ca-file", pki["other-ca.pem"],
                        "status"], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0


@pytest.fixture(scope="module")
def mtls():
    """A node with tls_client_auth = required, and a client certificate from its client CA."""
    d = tempfile.mkdtemp(prefix="hsmd-mtls-")
    pki = make_pki(d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=operator",
            cwd=d)
    with open(os.path.join(d, "client.cnf"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.pem", "-days", "2", "-extfile", "client.cnf", cwd=d)
    pki.update({n: os.path.join(d, n) for n in ("client.pem", "client.key")})
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    server = Hsmd(["--dev", "--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"],
                   "--tls-client-ca", pki["ca.pem"], "--tls-client-auth", "required"],
                  env=env, tls_ca=pki["ca.pem"], client_cert=(pki["client.pem"], pki["client.key"]))
    yield server, pki
    server.cleanup()
    shutil.rmtree(d, ignore_errors=True)


def test_metrics_say_when_the_tls_files_expire(mtls):
    """/metrics carries the earliest notAfter of the served chain and of the client CA
    bundle, for the alert that asks for their renewal."""
    import re
    from cryptography import x509
    server, pki = mtls
    st, body, _ = server.get("/metrics")
    assert st == 200
    got = dict(re.findall(r'^hsmd_tls_certificate_expiry_time_seconds\{file="(\w+)"\} (\d+)$',
                          body.decode(), re.M))

    def not_after(path):
        with open(path, "rb") as f:
            end = b"-----END CERTIFICATE-----"
            certs = [x509.load_pem_x509_certificate(block + end)
                     for block in f.read().split(end) if b"BEGIN CERTIFICATE" in block]
        return min(int(c.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp())
                   for c in certs)
    assert got == {"tls_cert": str(not_after(pki["server.pem"])),
                   "tls_client_ca": str(not_after(pki["ca.pem"]))}, got


def test_hsmctl_presents_a_client_certificate(mtls):
    server, pki = mtls
    base = [HSMCTL, "--endpoint", server.endpoint, "--ca-file", pki["ca.pem"]]
    p = subprocess.run(base + ["status"], capture_output=True, text=True, timeout=30)
    # Refused at the handshake, and the message says why.
    assert p.returncode != 0 and "certificate required" in p.stderr, p.stdout + p.stderr
    p = subprocess.run(base[:1] + ["--client-cert", pki["client.pem"], "--client-key",
                                   pki["client.key"]] + base[1:] + ["status"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "Sealed: false" in p.stdout, p.stdout + p.stderr
    env = dict(os.environ, HSM_CLIENT_CERT=pki["client.pem"], HSM_CLIENT_KEY=pki["client.key"])
    p = subprocess.run(base + ["status"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "Sealed: false" in p.stdout, p.stdout + p.stderr
    # A certificate whose key is not its own is refused before anything is sent.
    env["HSM_CLIENT_KEY"] = pki["server.key"]
    p = subprocess.run(base + ["status"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and "client certificate" in p.stderr, p.stdout + p.stderr


PKCS11_LOGIN = """
import sys, PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
s = lib.openSession(0, PyKCS11.CKF_SERIAL_SESSION)
try:
    s.login(sys.argv[2])
    print("CKR_OK")
except PyKCS11.PyKCS11Error as e:
    print(PyKCS11.CKR.get(e.value, e.value))
"""


def test_pkcs11_module_presents_a_client_certificate(mtls):
    server, pki = mtls
    module = os.path.join(os.path.dirname(HSMCTL), "libhsm_pkcs11.so")
    env = dict(os.environ, HSM_PKCS11_ENDPOINT=server.endpoint, HSM_PKCS11_CA_FILE=pki["ca.pem"])

    def login(e):
        p = subprocess.run(["/usr/bin/python3", "-c", PKCS11_LOGIN, module,
                            f"{DEV_AKID}:{DEV_SECRET}"], env=e, capture_output=True, text=True,
                           timeout=60)
        return p.stdout.strip() or p.stderr

    assert login(env) == "CKR_DEVICE_ERROR"
    env.update(HSM_PKCS11_CLIENT_CERT=pki["client.pem"], HSM_PKCS11_CLIENT_KEY=pki["client.key"])
    assert login(env) == "CKR_OK"


def test_a_tls_request_cut_by_the_clients_fin_ends_the_connection_at_once(tls):
    """Over TLS as over plain HTTP (test_bad_input): a client that shuts its sending
    side in the middle of a request is done, also when the FIN comes with the last
    record, after a handshake that left the socket drained."""
    server, pki = tls
    ctx = ssl.create_default_context(cafile=pki["ca.pem"])
    for partial in (b"POST / HTTP/1.1\r\nHost: x\r\n",
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{}"):
        for _ in range(3):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                time.sleep(0.2)  # the handshake done, as a real client's is before it sends
                s.sendall(partial)
                socket.socket(fileno=os.dup(s.fileno())).shutdown(socket.SHUT_WR)
                t = time.monotonic()
                try:
                    while s.recv(100):
                        pass
                except (ssl.SSLError, ConnectionError):
                    pass  # an alert for the cut record, or a reset: ended either way
                assert time.monotonic() - t < 2, "kept open until read_timeout"
    # A whole request followed at once by the FIN is still answered.
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        time.sleep(0.2)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        socket.socket(fileno=os.dup(s.fileno())).shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ssl.SSLError:
            pass
        assert out.startswith(b"HTTP/1.1 200 "), out[:200]
