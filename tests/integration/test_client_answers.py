"""hsmctl (and the client code it shares with the PKCS#11 module) against an
endpoint that answers wrongly: a rogue node, or anything on an http:// path.

A fake endpoint on loopback answers each request with what the test chose:
a header holding a NUL byte, a 200 without the member the command prints, a
wrapping key too small to wrap under.  hsmctl must refuse each with a message
and exit 1, never crash (conftest fails a test whose program dies of a
signal).  Also: `jwt verify` with an empty token, and endpoints refused
before anything is sent, without their passwords or tokens in any message.
"""
import base64
import json
import os
import socket
import subprocess
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import HSMCTL


class FakeEndpoint:
    """Answers every request on a loopback port with answer(target) (raw bytes)."""

    def __init__(self, answer):
        self.answer = answer
        self.targets = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                target = ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    if name.strip().lower() == b"x-amz-target":
                        target = value.strip().decode()
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.targets.append(target or head.split(b" ")[1].decode())
                conn.sendall(self.answer(target))

    def close(self):
        self.sock.close()


def json_answer(obj, status="200 OK"):
    body = json.dumps(obj).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def hsmctl(endpoint, *args, stdin=None):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIAFAKEFAKEFAKE1234",
               AWS_SECRET_ACCESS_KEY="fake-secret", AWS_DEFAULT_REGION="us-east-1")
    return subprocess.run([HSMCTL, "--endpoint", endpoint, *args], capture_output=True,
                          text=True, env=env, input=stdin, timeout=60)


@pytest.fixture
def fake():
    made = []

    def start(answer):
        f = FakeEndpoint(answer)
        made.append(f)
        return f
    yield start
    for f in made:
        f.close()


def test_a_header_with_a_nul_byte_is_refused(fake, tmp_path):
    f = fake(lambda target: b"HTTP/1.1 200 OK\x00\r\n\r\n")
    p = hsmctl(f.url, "audit", "hash", "x")
    assert p.returncode == 1 and "NUL" in p.stderr, (p.returncode, p.stderr)
    # The same client code fetches a JWK Set for `jwt verify`.
    p = hsmctl(f.url, "jwt", "verify", "--jwks", f.url + "/jwks.json", "a.b.c")
    assert p.returncode == 1 and "NUL" in p.stderr, (p.returncode, p.stderr)
    f2 = fake(lambda target: b"HTTP/1.1 200 OK\r\nX-A: b\x00c\r\nContent-Length: 2\r\n\r\n{}")
    p = hsmctl(f2.url, "audit", "hash", "x")
    assert p.returncode == 1 and "NUL" in p.stderr, (p.returncode, p.stderr)


@pytest.mark.parametrize("args,member", [
    (["audit", "hash", "x"], "Hash"),
    (["audit", "pubkey"], "PublicKey"),
    (["jwt", "sign", "alias/x", "--claims", '{"sub":"a"}'], "Token"),
])
def test_an_answer_without_the_member_printed_is_refused(fake, args, member):
    for answer in ({}, {member: 123}):
        f = fake(lambda target, a=answer: json_answer(a))
        p = hsmctl(f.url, *args)
        assert p.returncode == 1 and f"has no {member}" in p.stderr, (answer, p.returncode,
                                                                     p.stdout, p.stderr)
        assert p.stdout == ""


def test_an_empty_token_is_refused(tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys":[]}')
    for args, stdin in ((["", ], None), (["-"], ""), (["-"], " \n")):
        p = subprocess.run([HSMCTL, "jwt", "verify", "--jwks", str(jwks), *args],
                           capture_output=True, text=True, input=stdin, timeout=60)
        assert p.returncode == 1 and "the token is empty" in p.stderr, (args, p.returncode,
                                                                         p.stderr)


@pytest.mark.parametrize("endpoint,why", [
    # A password holding a comma: a list of two pieces, the first "http://admin:s3cr3t".
    ("http://admin:s3cr3t,x@10.0.0.1", "user name or password"),
    ("http://127.0.0.1:9,http://admin:s3cr3t,x@10.0.0.1", "user name or password"),
    ("http://admin:s3/cr3t@127.0.0.1:9", "user name or password"),
    # Requests go to hsmd's own paths: a proxy's /kms and a ?token= would be dropped.
    ("http://127.0.0.1:9/kms?token=s3cr3t#x", "has a path, query or fragment"),
])
def test_an_endpoint_is_refused_without_its_secret(tmp_path, endpoint, why):
    share = tmp_path / "share.txt"
    share.write_text("not a share\n")
    for args in (["status"], ["unseal", str(share)], ["audit", "hash", "x"]):
        p = hsmctl(endpoint, *args)
        assert p.returncode != 0 and why in p.stderr, (args, p.returncode, p.stderr)
        assert "s3" not in p.stderr + p.stdout, (args, p.stderr)


def test_a_jwks_url_is_refused_without_its_password():
    for url in ("https://user:hunter2@jwks.example", "https://user:hunter2@jwks.example/k.json",
                "https://user:hun/ter2@jwks.example/k.json"):
        p = subprocess.run([HSMCTL, "jwt", "verify", "--jwks", url, "a.b.c"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and "user name or password" in p.stderr, (url, p.stderr)
        assert "hun" not in p.stderr + p.stdout, (url, p.stderr)


def test_import_refuses_a_wrapping_key_under_2048_bits(fake, tmp_path):
    """A node (or whatever answers an http:// endpoint) offering a small wrapping key would
    let its holder unwrap the material: hsmctl wraps under 2048 bits and more only."""
    material = tmp_path / "aes.bin"
    material.write_bytes(os.urandom(32))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    spki = small.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    params = {"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
              "ImportToken": base64.b64encode(b"t" * 32).decode(),
              "PublicKey": base64.b64encode(spki).decode(), "ParametersValidTo": 2000000000}
    f = fake(lambda target: json_answer(params))
    p = hsmctl(f.url, "key", "import", "1234abcd-12ab-34cd-56ef-1234567890ab", "--material",
               str(material))
    assert p.returncode == 1 and "fewer than 2048" in p.stderr, (p.returncode, p.stderr)
    assert "TrentService.ImportKeyMaterial" not in f.targets, f.targets
