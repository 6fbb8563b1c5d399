"""hsmd behind a TCP load balancer that speaks the PROXY protocol.

The balancer here is a small relay in the test: it accepts a client on a
loopback port, connects to hsmd and sends a PROXY header (version 1 or 2)
claiming the client is 203.0.113.7 before relaying the bytes both ways.
hsmd trusts 127.0.0.0/8 (proxy_protocol_from), so boto3 through the relay
is seen as 203.0.113.7: in the audit records' source and in aws:SourceIp of
key policies, over plain HTTP and over TLS.  A loopback client without a
header is closed before any request is read; a node that does not trust
the relay takes a header as a malformed request.
"""
import json
import shutil
import socket
import struct
import tempfile
import threading
import time
import types

import botocore.exceptions
import pytest
import requests

from conftest import DEV_AKID, DEV_SECRET, Hsmd, client, signed_request
from helpers import ACCOUNT, audit_record, audit_records, make_pki, raises

CLIENT = "203.0.113.7"
OTHER_CLIENT = "198.51.100.9"
DEV_ARN = f"arn:aws:iam::{ACCOUNT}:user/dev"
DEV_ENV = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header(version, src, src_port, dst_port):
    if version == 1:
        return f"PROXY TCP4 {src} 127.0.0.1 {src_port} {dst_port}\r\n".encode()
    addrs = socket.inet_aton(src) + socket.inet_aton("127.0.0.1") + struct.pack(
        "!HH", src_port, dst_port)
    tlv = b"\x04\x00\x03abc"  # a NOOP TLV, skipped
    return V2_SIG + b"\x21\x11" + struct.pack("!H", len(addrs) + len(tlv)) + addrs + tlv


def local_header(version):
    """The balancer's own connections (health checks): no client named."""
    return b"PROXY UNKNOWN\r\n" if version == 1 else V2_SIG + b"\x20\x00\x00\x00"


class Relay:
    """A TCP relay on a loopback port that opens each connection with a PROXY header."""

    def __init__(self, target_port, version, source=CLIENT):
        self.target_port, self.version, self.source = target_port, version, source
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, addr = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c, addr[1]), daemon=True).start()

    def _serve(self, c, client_port):
        try:
            up = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
        except OSError:
            c.close()
            return
        up.sendall(proxy_header(self.version, self.source, client_port, self.target_port))
        threading.Thread(target=self._pump, args=(c, up), daemon=True).start()
        self._pump(up, c)

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def endpoint(self, scheme="http"):
        return f"{scheme}://127.0.0.1:{self.port}"

    def close(self):
        self.closed = True
        self.sock.close()


class ProxiedHsmd(Hsmd):
    """A node trusting 127.0.0.0/8: its own probes must send a header too."""

    def get(self, path):
        import http.client
        import ssl
        if self.tls_ca:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        conn.sock.sendall(local_header(2))
        if self.tls_ca:
            conn.sock = ctx.wrap_socket(conn.sock, server_hostname="127.0.0.1")
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            conn.close()


def through(relay, scheme="http", tls_ca=None):
    return client(types.SimpleNamespace(endpoint=relay.endpoint(scheme), tls_ca=tls_ca))


def guarded_key(kms, statement):
    kid = kms.create_key()["KeyMetadata"]["KeyId"]
    admin = {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": DEV_ARN}, "Action": "kms:*",
             "Resource": "*"}
    kms.put_key_policy(KeyId=kid, PolicyName="default", Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [admin, statement]}))
    return kid


@pytest.fixture(scope="module")
def node():
    server = ProxiedHsmd(["--dev", "--proxy-protocol-from", "127.0.0.0/8"], env=DEV_ENV)
    relays = {v: Relay(server.port, v) for v in (1, 2)}
    relays["other"] = Relay(server.port, 2, source=OTHER_CLIENT)
    yield server, relays
    for r in relays.values():
        r.close()
    server.cleanup()


@pytest.mark.parametrize("version", [1, 2])
def test_requests_carry_the_client_address(node, version):
    server, relays = node
    kms = through(relays[version])
    kid = kms.create_key()["KeyMetadata"]["KeyId"]
    out = kms.encrypt(KeyId=kid, Plaintext=b"behind the balancer")
    assert kms.decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"] == b"behind the balancer"
    rec = audit_record(server.data_dir, out["ResponseMetadata"]["RequestId"])
    assert (rec["op"], rec["outcome"]) == ("Encrypt", "success"), rec
    host, port = rec["source"].rsplit(":", 1)
    assert host == CLIENT and 1024 <= int(port) <= 65535, rec
    # A raw signed request through the relay: the same.
    r = signed_request(types.SimpleNamespace(endpoint=relays[version].endpoint(), tls_ca=None),
                       "TrentService.ListKeys", {})
    assert r.status_code == 200, r.text
    rec = audit_record(server.data_dir, r.headers["x-amzn-RequestId"])
    assert rec["source"].startswith(CLIENT + ":"), rec


def test_source_ip_in_key_policies(node):
    _, relays = node
    kms = through(relays[2])
    kid = guarded_key(kms, {"Sid": "NotFromThere", "Effect": "Deny", "Principal": "*",
                            "Action": "kms:Encrypt", "Resource": "*",
                            "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}})
    raises("AccessDeniedException", kms.encrypt, KeyId=kid, Plaintext=b"x")
    raises("AccessDeniedException", through(relays[1]).encrypt, KeyId=kid, Plaintext=b"x")
    through(relays["other"]).encrypt(KeyId=kid, Plaintext=b"x")
    # The guard rail the README recommends: use only from the named network.
    kid = guarded_key(kms, {"Sid": "OnlyFromThere", "Effect": "Deny", "Principal": "*",
                            "Action": "kms:Encrypt", "Resource": "*",
                            "Condition": {"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}})
    kms.encrypt(KeyId=kid, Plaintext=b"x")
    raises("AccessDeniedException", through(relays["other"]).encrypt, KeyId=kid, Plaintext=b"x")


def closed_without_answer(port, payload, end=False):
    """Sends payload (then ends the sending side if end); True if closed unanswered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        if end:
            s.shutdown(socket.SHUT_WR)
        try:
            return s.recv(4096) == b""
        except ConnectionResetError:
            return True


def test_loopback_client_without_header_is_refused(node):
    server, _ = node
    before = len(audit_records(server.data_dir))
    direct = types.SimpleNamespace(endpoint=f"http://127.0.0.1:{server.port}", tls_ca=None)
    with pytest.raises(requests.exceptions.ConnectionError):
        signed_request(direct, "TrentService.ListKeys", {})
    with pytest.raises(botocore.exceptions.BotoCoreError):
        client(direct).list_keys()
    assert closed_without_answer(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    # A header that is not one: malformed, truncated by the close, a family mismatch.
    assert closed_without_answer(server.port, b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\n")
    assert closed_without_answer(server.port, b"PROXY TCP4 203.0.113.7 ", end=True)
    assert closed_without_answer(server.port, b"PROXY TCP6 203.0.113.7 ::1 1 2\r\n")
    time.sleep(0.5)  # the audit writer's batch (a refused connection adds nothing)
    new = audit_records(server.data_dir)[before:]
    assert not [r for r in new if r.get("op") not in (None, "Checkpoint")], new
    assert server.get("/healthz")[0] == 200
    assert "no valid PROXY protocol header" in server.read_log()


def test_untrusted_relay_header_is_not_believed():
    server = Hsmd(["--dev", "--proxy-protocol-from", "192.0.2.0/24"], env=DEV_ENV)
    relay = Relay(server.port, 1)
    try:
        via = types.SimpleNamespace(endpoint=relay.endpoint(), tls_ca=None)
        r = signed_request(via, "TrentService.ListKeys", {})
        assert r.status_code == 400, r.text  # the header is a malformed request
        direct = types.SimpleNamespace(endpoint=server.endpoint, tls_ca=None)
        r = signed_request(direct, "TrentService.ListKeys", {})
        assert r.status_code == 200, r.text
        rec = audit_record(server.data_dir, r.headers["x-amzn-RequestId"])
        assert rec["source"].startswith("127.0.0.1:"), rec
        assert not [x for x in audit_records(server.data_dir) if CLIENT in x.get("source", "")]
    finally:
        relay.close()
        server.cleanup()


def test_tls_after_the_header():
    d = tempfile.mkdtemp(prefix="hsmd-pki-")
    pki = make_pki(d)
    server = ProxiedHsmd(["--dev", "--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"],
                          "--proxy-protocol-from", "127.0.0.0/8"], env=DEV_ENV,
                         tls_ca=pki["ca.pem"])
    relay = Relay(server.port, 2)
    try:
        kms = through(relay, "https", pki["ca.pem"])
        kid = kms.create_key()["KeyMetadata"]["KeyId"]
        out = kms.encrypt(KeyId=kid, Plaintext=b"over tls")
        rec = audit_record(server.data_dir, out["ResponseMetadata"]["RequestId"])
        assert rec["source"].startswith(CLIENT + ":"), rec
        # A ClientHello straight from a trusted address: no header, no handshake.
        direct = client(types.SimpleNamespace(endpoint=server.endpoint, tls_ca=pki["ca.pem"]))
        with pytest.raises(botocore.exceptions.BotoCoreError):
            direct.list_keys()
    finally:
        relay.close()
        server.cleanup()
        shutil.rmtree(d, ignore_errors=True)
