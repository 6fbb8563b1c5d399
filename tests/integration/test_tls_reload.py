"""TLS files loaded again without a restart: SIGHUP, and tls_watch seeing a
renewal.  The same process (a production node would stay unsealed) serves the
new certificate to new connections while open ones go on; the reload is on
the audit trail and in /metrics; a certificate with the wrong key, or any
file that does not load, changes nothing; a new client CA bundle decides
which client certificates the next handshakes take."""
import datetime
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import DEV_AKID, DEV_SECRET, HSMD, Hsmd, client, free_port, unsigned_call
from helpers import audit_records_until, eventually, gdb_can_trace, make_pki, metric, openssl

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def issue(d, ca, name, days, usage="serverAuth", cn="127.0.0.1"):
    """name.pem and name.key: a certificate for 127.0.0.1 signed by ca (ca.pem/ca.key, or
    other-ca.pem/other.key), valid for `days`."""
    ca_pem, ca_key = {"ca": ("ca.pem", "ca.key"), "other": ("other-ca.pem", "other.key")}[ca]
    openssl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
            cwd=d)
    with open(os.path.join(d, f"{name}.cnf"), "w") as f:
        f.write(f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n"
                "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", ca_pem, "-CAkey", ca_key,
            "-CAcreateserial", "-out", f"{name}.pem", "-days", str(days), "-extfile",
            f"{name}.cnf", cwd=d)
    return os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")


def put(path, src):
    """Replaces path with a copy of src in one rename, as a renewal tool does."""
    tmp = path + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, path)


def certificate(pem_path):
    with open(pem_path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def fingerprint_of(pem_path):
    return hashlib.sha256(certificate(pem_path).public_bytes(Encoding.DER)).hexdigest()


def not_after(pem_path):
    end = certificate(pem_path).not_valid_after
    return int(end.replace(tzinfo=datetime.timezone.utc).timestamp())


def served(server, ca, client_cert=None):
    """The SHA-256 of the certificate a new handshake gets."""
    ctx = ssl.create_default_context(cafile=ca)
    if client_cert:
        ctx.load_cert_chain(*client_cert)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
            if client_cert:  # TLS 1.3: a refused client certificate shows at the first read
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert tls.recv(64).startswith(b"HTTP/1.1 200"), "no answer"
    return hashlib.sha256(der).hexdigest()


def reloads(server):
    st, body, _ = server.get("/metrics")
    assert st == 200
    got = dict(re.findall(rb'^hsmd_tls_reloads_total\{result="(\w+)"\} (\d+)$', body, re.M))
    expiry = dict(re.findall(rb'^hsmd_tls_certificate_expiry_time_seconds\{file="(\w+)"\} (\d+)$',
                             body, re.M))
    return ({k.decode(): int(v) for k, v in got.items()},
            {k.decode(): int(v) for k, v in expiry.items()})


def last_ok(server):
    st, body, _ = server.get("/metrics")
    m = re.search(rb"^hsmd_tls_last_reload_successful (\d)$", body, re.M)
    assert st == 200 and m, body[-300:]
    return int(m.group(1))


def reload_events(server, n):
    return audit_records_until(server.data_dir, lambda r: r.get("op") == "TlsReload", n=n)


@pytest.fixture
def pki():
    d = tempfile.mkdtemp(prefix="hsmd-tls-reload-")
    p = make_pki(d)
    p["dir"] = d
    yield p
    shutil.rmtree(d, ignore_errors=True)


def start(pki, cert, key, *extra, client_cert=None):
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    return Hsmd(["--dev", "--tls-cert", cert, "--tls-key", key, *extra], env=env,
                tls_ca=pki["ca.pem"], client_cert=client_cert)


def test_sighup_serves_a_renewed_certificate_without_a_restart(pki):
    d = pki["dir"]
    cert, key = os.path.join(d, "live.pem"), os.path.join(d, "live.key")
    put(cert, pki["server.pem"])
    put(key, pki["server.key"])
    new_cert, new_key = issue(d, "ca", "renewed", days=30)
    server = start(pki, cert, key, "--tls-watch=false")
    try:
        old = fingerprint_of(pki["server.pem"])
        assert served(server, pki["ca.pem"]) == old
        assert reloads(server) == ({"success": 0, "failure": 0},
                                   {"tls_cert": not_after(pki["server.pem"])})
        assert last_ok(server) == 1
        kms = client(server)
        kid = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=kid, Plaintext=b"before")["CiphertextBlob"]
        # A keep-alive connection opened before the reload.
        ctx = ssl.create_default_context(cafile=pki["ca.pem"])
        kept = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=10)
        kept.request("GET", "/healthz")
        assert kept.getresponse().read() is not None
        pid = server.proc.pid

        put(cert, new_cert)
        put(key, new_key)
        # Without tls_watch nothing changes until asked.
        time.sleep(6)
        assert served(server, pki["ca.pem"]) == old
        server.proc.send_signal(signal.SIGHUP)
        renewed = fingerprint_of(new_cert)
        assert eventually(lambda: served(server, pki["ca.pem"]) == renewed), server.read_log()
        # New handshakes get the new certificate a moment before the reload is counted,
        # its expiry gauge set and the line logged (tls_reload.c): the line comes last.
        assert eventually(lambda: "TLS files loaded again (signal)" in server.read_log()), \
            server.read_log()

        assert server.proc.poll() is None and server.proc.pid == pid
        assert reloads(server) == ({"success": 1, "failure": 0},
                                   {"tls_cert": not_after(new_cert)})
        # The connection from before goes on, with the certificate it began with.
        kept.request("GET", "/healthz")
        r = kept.getresponse()
        assert r.status == 200 and r.read()
        assert hashlib.sha256(kept.sock.getpeercert(binary_form=True)).hexdigest() == old
        kept.close()
        # Keys and state are as they were: nothing restarted.
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"
        [ev] = reload_events(server, 1)
        assert ev["outcome"] == "success" and ev["principal"] == "hsmd", ev
        assert ev["extra"]["trigger"] == "signal"
        assert ev["extra"]["certificate_sha256"] == renewed
        assert ev["extra"]["certificate_subject"] == "CN=127.0.0.1"
        assert ev["extra"]["certificate_not_after"] == datetime.datetime.fromtimestamp(
            not_after(new_cert), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert "client_ca_not_after" not in ev["extra"]
        assert "TLS files loaded again (signal)" in server.read_log()
    finally:
        server.cleanup()


def test_a_failed_reload_changes_nothing(pki):
    d = pki["dir"]
    cert, key = os.path.join(d, "live.pem"), os.path.join(d, "live.key")
    put(cert, pki["server.pem"])
    put(key, pki["server.key"])
    server = start(pki, cert, key, "--tls-watch=false")
    try:
        old = fingerprint_of(pki["server.pem"])
        new_cert, new_key = issue(d, "ca", "renewed", days=30)
        put(cert, new_cert)  # the certificate, with the old key: they do not match
        server.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: reloads(server)[0]["failure"] == 1), server.read_log()
        # The failure is counted a moment before the flag is cleared and the line logged.
        assert eventually(lambda: "still get what was loaded" in server.read_log()), \
            server.read_log()
        assert served(server, pki["ca.pem"]) == old
        assert reloads(server) == ({"success": 0, "failure": 1},
                                   {"tls_cert": not_after(pki["server.pem"])})
        assert last_ok(server) == 0
        [ev] = reload_events(server, 1)
        assert ev["outcome"] == "error" and ev["error"] == "ValidationException", ev
        assert "does not match the certificate" in ev["extra"]["reason"], ev
        assert "tls_key" in ev["extra"]["reason"] and "PRIVATE KEY" not in str(ev)
        log = server.read_log()
        assert "does not match the certificate" in log and "still get what was loaded" in log
        # Not a certificate at all, then a missing key file: refused the same way.
        with open(cert + ".new", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        os.replace(cert + ".new", cert)
        server.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: reloads(server)[0]["failure"] == 2), server.read_log()
        put(cert, new_cert)
        os.remove(key)
        server.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: reloads(server)[0]["failure"] == 3), server.read_log()
        assert served(server, pki["ca.pem"]) == old
        assert server.proc.poll() is None
        # With the key in place the next signal loads them.
        put(key, new_key)
        server.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: served(server, pki["ca.pem"]) == fingerprint_of(new_cert))
        assert eventually(lambda: "TLS files loaded again (signal)" in server.read_log()), \
            server.read_log()
        assert reloads(server)[0] == {"success": 1, "failure": 3}
        assert last_ok(server) == 1
        assert [e["outcome"] for e in reload_events(server, 4)] == ["error"] * 3 + ["success"]
    finally:
        server.cleanup()


def test_a_reload_names_the_os_error_of_a_missing_file(pki):
    """A tls_cert or tls_client_ca gone at reload is reported with the OS error (what an
    operator can act on), not OpenSSL's "system lib"."""
    d = pki["dir"]
    cert, key = os.path.join(d, "live.pem"), os.path.join(d, "live.key")
    bundle = os.path.join(d, "clients.pem")
    put(cert, pki["server.pem"])
    put(key, pki["server.key"])
    put(bundle, pki["ca.pem"])
    server = start(pki, cert, key, "--tls-client-ca", bundle, "--tls-client-auth", "optional",
                   "--tls-watch=false")
    try:
        for n, gone in enumerate([bundle, cert], 1):
            os.remove(gone)
            server.proc.send_signal(signal.SIGHUP)
            assert eventually(lambda: reloads(server)[0]["failure"] == n), server.read_log()
            reason = reload_events(server, n)[-1]["extra"]["reason"]
            assert reason == f"{'tls_client_ca' if gone == bundle else 'tls_cert'} {gone}: " \
                "No such file or directory", reason
            assert reason in server.read_log()
            put(gone, pki["ca.pem"] if gone == bundle else pki["server.pem"])
        assert served(server, pki["ca.pem"]) == fingerprint_of(pki["server.pem"])
    finally:
        server.cleanup()


def issue_dated(d, name, valid_from, valid_until):
    """name.pem and name.key: a certificate for 127.0.0.1 signed by the test CA, valid from
    valid_from until valid_until (datetimes; openssl x509 -req dates only from now)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    with open(os.path.join(d, "ca.key"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    ca = certificate(os.path.join(d, "ca.pem"))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from).not_valid_after(valid_until)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem, pkey = os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}.key")
    with open(pem, "wb") as f:
        f.write(cert.public_bytes(Encoding.PEM))
    with open(pkey, "wb") as f:
        f.write(key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(pkey, 0o600)
    return pem, pkey


def test_a_reload_refuses_a_certificate_out_of_its_dates(pki):
    """An expired (or not yet valid) certificate would fail every new client: a reload
    keeps the old one and counts a failure, as for a key that does not match."""
    d = pki["dir"]
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    cert, key = os.path.join(d, "live.pem"), os.path.join(d, "live.key")
    put(cert, pki["server.pem"])
    put(key, pki["server.key"])
    server = start(pki, cert, key, "--tls-watch=false")
    try:
        old = fingerprint_of(pki["server.pem"])
        for n, (name, since, until, said) in enumerate([
                ("expired", now - 3 * day, now - day, "the certificate expired at"),
                ("early", now + day, now + 3 * day, "the certificate is not valid until")], 1):
            new_cert, new_key = issue_dated(d, name, since, until)
            put(cert, new_cert)
            put(key, new_key)
            server.proc.send_signal(signal.SIGHUP)
            assert eventually(lambda: reloads(server)[0]["failure"] == n), server.read_log()
            assert served(server, pki["ca.pem"]) == old
            assert reloads(server) == ({"success": 0, "failure": n},
                                       {"tls_cert": not_after(pki["server.pem"])})
            assert last_ok(server) == 0
            ev = reload_events(server, n)[-1]
            assert ev["outcome"] == "error" and ev["error"] == "ValidationException", ev
            assert said in ev["extra"]["reason"] and cert in ev["extra"]["reason"], ev
            assert said in server.read_log()
        assert server.proc.poll() is None
    finally:
        server.cleanup()


def test_a_start_with_an_expired_certificate_warns(pki):
    """A node starts with an expired certificate (so that it can be renewed and reloaded),
    but says so in its log as a warning."""
    d = pki["dir"]
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    cert, key = issue_dated(d, "expired", now - 3 * day, now - day)
    env = dict(os.environ, HSM_DEV_ACCESS_KEY_ID=DEV_AKID, HSM_DEV_SECRET_ACCESS_KEY=DEV_SECRET)
    log_path = os.path.join(d, "hsmd.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([HSMD, "--dev", "--listen", "127.0.0.1:%d" % free_port(),
                                 "--data-dir", os.path.join(d, "data"), "--tls-cert", cert,
                                 "--tls-key", key, "--tls-watch=false"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)

    def said():
        with open(log_path, errors="replace") as f:
            return f.read()

    try:
        assert eventually(lambda: "listening on" in said(), 30), said()
        assert proc.poll() is None, said()
        warned = [line for line in said().splitlines() if "the certificate expired at" in line]
        assert len(warned) == 1 and " warn" in warned[0] and cert in warned[0], said()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.skipif(not gdb_can_trace(), reason="an audit outage is made with gdb, allowed to "
                                              "attach")
def test_a_reload_the_trail_cannot_record_is_not_made(pki, tmp_path):
    """In an audit outage the files load but their TlsReload event cannot be written: new
    connections keep the old certificate.  Once the trail is back, the watch loads them
    at its next look, though they did not change again."""
    from test_audit_server import TrailOutage
    d = pki["dir"]
    cert, key = os.path.join(d, "live.pem"), os.path.join(d, "live.key")
    put(cert, pki["server.pem"])
    put(key, pki["server.key"])
    new_cert, new_key = issue(d, "ca", "renewed", days=30)
    server = start(pki, cert, key)
    try:
        old = fingerprint_of(pki["server.pem"])
        outage = TrailOutage(server, str(tmp_path))
        try:
            st, _ = unsigned_call(server, "HsmdAdmin.Status", {})  # its record starts it
            assert st in (409, 503)  # it ran, its result withheld; or refused
            assert eventually(lambda: metric(server, "hsmd_audit_healthy") == 0)
            put(cert, new_cert)
            put(key, new_key)
            server.proc.send_signal(signal.SIGHUP)
            assert eventually(lambda: reloads(server)[0]["failure"] >= 1), server.read_log()
            assert served(server, pki["ca.pem"]) == old
            assert last_ok(server) == 0 and reloads(server)[0]["success"] == 0
            assert "could not be recorded in the audit trail" in server.read_log()
        finally:
            outage.end()
        renewed = fingerprint_of(new_cert)
        assert eventually(lambda: served(server, pki["ca.pem"]) == renewed, 30), \
            server.read_log()
        assert eventually(lambda: "TLS files loaded again (file change)" in server.read_log()), \
            server.read_log()
        assert last_ok(server) == 1
        done = [e for e in reload_events(server, 1) if e["outcome"] == "success"]
        assert [(e["extra"]["trigger"], e["extra"]["certificate_sha256"]) for e in done] == \
            [("file change", renewed)], done
    finally:
        server.cleanup()


def test_tls_watch_loads_a_renewal_that_swaps_a_link(pki):
    """As Kubernetes mounts a renewed secret: the files are links through a directory
    link that is swapped in one rename."""
    d = pki["dir"]
    for gen, (c, k) in (("v1", (pki["server.pem"], pki["server.key"])),
                        ("v2", issue(d, "ca", "renewed", days=30))):
        os.mkdir(os.path.join(d, gen))
        shutil.copyfile(c, os.path.join(d, gen, "tls.crt"))
        shutil.copyfile(k, os.path.join(d, gen, "tls.key"))
    os.symlink("v1", os.path.join(d, "..data"))
    for n in ("tls.crt", "tls.key"):
        os.symlink(os.path.join("..data", n), os.path.join(d, n))
    server = start(pki, os.path.join(d, "tls.crt"), os.path.join(d, "tls.key"))
    try:
        assert served(server, pki["ca.pem"]) == fingerprint_of(pki["server.pem"])
        os.symlink("v2", os.path.join(d, "..data_tmp"))
        os.replace(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
        renewed = fingerprint_of(os.path.join(d, "v2", "tls.crt"))
        assert eventually(lambda: served(server, pki["ca.pem"]) == renewed), server.read_log()
        [ev] = reload_events(server, 1)
        assert ev["outcome"] == "success" and ev["extra"]["trigger"] == "file change", ev
        assert ev["extra"]["certificate_sha256"] == renewed
        # One change, one reload: the watch does not load unchanged files again.
        time.sleep(6)
        assert reloads(server)[0] == {"success": 1, "failure": 0}
    finally:
        server.cleanup()


def test_a_new_client_ca_bundle_decides_the_next_handshakes(pki):
    d = pki["dir"]
    first = issue(d, "ca", "client1", days=2, usage="clientAuth", cn="operator")
    second = issue(d, "other", "client2", days=2, usage="clientAuth", cn="operator")
    bundle = os.path.join(d, "clients.pem")
    put(bundle, pki["ca.pem"])
    server = start(pki, pki["server.pem"], pki["server.key"], "--tls-client-ca", bundle,
                   "--tls-client-auth", "required", "--tls-watch=false", client_cert=first)
    try:
        served(server, pki["ca.pem"], client_cert=first)
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            served(server, pki["ca.pem"], client_cert=second)
        put(bundle, pki["other-ca.pem"])
        server.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: "TLS files loaded again (signal)" in server.read_log())
        server.client_cert = second  # what the fixture's own probes (/metrics) present now
        served(server, pki["ca.pem"], client_cert=second)
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            served(server, pki["ca.pem"], client_cert=first)
        counts, expiry = reloads(server)
        assert counts == {"success": 1, "failure": 0}
        assert expiry == {"tls_cert": not_after(pki["server.pem"]),
                          "tls_client_ca": not_after(pki["other-ca.pem"])}
        [ev] = reload_events(server, 1)
        assert ev["extra"]["client_ca_not_after"] == datetime.datetime.fromtimestamp(
            not_after(pki["other-ca.pem"]), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    finally:
        server.cleanup()


def test_sighup_without_tls_is_harmless():
    env = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
    server = Hsmd(["--dev"], env=env)
    try:
        server.proc.send_signal(signal.SIGHUP)
        assert eventually(lambda: "there are no TLS files to load" in server.read_log())
        assert server.proc.poll() is None and server.get("/healthz")[0] == 200
        st, body, _ = server.get("/metrics")
        assert b"hsmd_tls_reloads_total" not in body
        assert b"hsmd_tls_last_reload_successful" not in body
        assert not audit_records_until(server.data_dir, lambda r: r.get("op") == "TlsReload",
                                       timeout=0.5)
    finally:
        server.cleanup()
