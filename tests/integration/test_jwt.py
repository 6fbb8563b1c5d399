"""JWT signing (HsmdJwt.*) and the JWKS, checked with independent JOSE libraries.

Tokens signed by a real hsmd are verified by PyJWT (PyJWKClient fetching
/.well-known/jwks.json) and by jwcrypto (JWKSet), for every algorithm; a
rotation's lead (the new version published before it signs) and grace period
are observed on an hsmd started with a short maximum token lifetime; hsmctl's jwt commands are run end to end.
"""
import base64
import glob
import json
import os
import subprocess
import time
import urllib.request

import jwt as pyjwt
import pytest
from jwcrypto import jwk as jcjwk
from jwcrypto import jwt as jcjwt

from conftest import (ACCOUNT, DEV_AKID, DEV_SECRET, HSMCTL, signed_call, start_dev,
                      unsigned_call)

JWKS_PATH = "/.well-known/jwks.json"
ISSUER = "catalytic-computing-api"
AUDIENCE = ["catalytic-api", "saas-api"]

# (KeySpec, JWS algorithm) for every algorithm hsmd signs with.
EVERY_ALG = [
    ("RSA_2048", "RS256"), ("RSA_2048", "RS384"), ("RSA_2048", "RS512"),
    ("RSA_2048", "PS256"), ("RSA_2048", "PS384"), ("RSA_2048", "PS512"),
    ("ECC_NIST_P256", "ES256"), ("ECC_NIST_P384", "ES384"), ("ECC_NIST_P521", "ES512"),
    ("ECC_NIST_EDWARDS25519", "EdDSA"),
]


def jwt_call(server, op, body, **kw):
    return signed_call(server, "HsmdJwt." + op, body, **kw)


def ok(result):
    status, body = result
    assert status == 200, body
    return body


def error(result):
    status, body = result
    assert status != 200, body
    return body["__type"], body["message"]


def new_key(kms, spec, usage="SIGN_VERIFY"):
    return kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]


def jwt_key(server, kms, spec, alg=None):
    key = new_key(kms, spec)
    body = {"KeyId": key}
    if alg:
        body["Algorithm"] = alg
    out = ok(jwt_call(server, "EnableJwtSigning", body))
    assert out["JwtSigningEnabled"] is True
    return key, out["Algorithm"]


def sign(server, key, claims, **extra):
    body = {"KeyId": key, "Claims": claims}
    body.update(extra)
    return ok(jwt_call(server, "SignToken", body))


def fetch_jwks(server):
    status, body, headers = server.get(JWKS_PATH)
    assert status == 200, body
    return json.loads(body), headers


def b64url_json(part):
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def pyjwt_verify(server, token, alg, **kw):
    """PyJWT with a fresh PyJWKClient on hsmd's JWKS (no cached set between checks)."""
    client = pyjwt.PyJWKClient(server.endpoint + JWKS_PATH, cache_jwk_set=False)
    key = client.get_signing_key_from_jwt(token)
    return pyjwt.decode(token, key.key, algorithms=[alg], **kw)


def jwcrypto_verify(server, token, alg, leeway=60):
    jwks, _ = fetch_jwks(server)
    keyset = jcjwk.JWKSet.from_json(json.dumps(jwks))
    t = jcjwt.JWT()
    t.leeway = leeway
    t.deserialize(token, keyset)
    if alg:
        assert json.loads(t.header)["alg"] == alg
    return json.loads(t.claims)


def tamper(token, part, offset=5):
    parts = token.split(".")
    s = parts[part]
    c = "B" if s[offset] == "A" else "A"
    parts[part] = s[:offset] + c + s[offset + 1:]
    return ".".join(parts)


PLATFORM_CLAIMS = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42"}


@pytest.mark.parametrize("spec,alg", EVERY_ALG)
def test_every_algorithm_verifies_through_the_jwks(hsmd, kms, spec, alg):
    key, got_alg = jwt_key(hsmd, kms, spec, alg)
    assert got_alg == alg
    out = sign(hsmd, key, PLATFORM_CLAIMS)
    token = out["Token"]
    assert out["Algorithm"] == alg and out["KeyVersion"] == 1
    assert out["Kid"] == f"{key}.v1"
    assert out["KeyId"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key}"
    header = b64url_json(token.split(".")[0])
    assert header == {"alg": alg, "kid": f"{key}.v1", "typ": "JWT"}

    claims = pyjwt_verify(hsmd, token, alg, audience="saas-api", issuer=ISSUER)
    assert claims["sub"] == "user-42" and claims["aud"] == AUDIENCE
    assert claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"]
    assert claims["iat"] == out["IssuedAt"] and claims["exp"] == out["ExpiresAt"]
    assert jwcrypto_verify(hsmd, token, alg)["sub"] == "user-42"

    # The JWK hsmd publishes for it: RFC 7517/7518/8037 members, one algorithm.
    jwks, _ = fetch_jwks(hsmd)
    (entry,) = [k for k in jwks["keys"] if k["kid"] == f"{key}.v1"]
    assert entry["use"] == "sig" and entry["alg"] == alg
    assert "d" not in entry
    if spec.startswith("RSA"):
        assert entry["kty"] == "RSA" and set(entry) == {"kty", "use", "alg", "kid", "n", "e"}
    elif alg == "EdDSA":
        assert entry["kty"] == "OKP" and entry["crv"] == "Ed25519"
        assert set(entry) == {"kty", "use", "alg", "kid", "crv", "x"}
    else:
        assert entry["kty"] == "EC" and set(entry) == {"kty", "use", "alg", "kid", "crv", "x", "y"}
        # ES*: R || S of fixed length (RFC 7518 3.4), not DER.
        sig = base64.urlsafe_b64decode(token.split(".")[2] + "==")
        assert len(sig) == {"ES256": 64, "ES384": 96, "ES512": 132}[alg]

    # A changed byte in the header, the payload or the signature fails in both libraries.
    for part in (0, 1, 2):
        bad = tamper(token, part)
        with pytest.raises(Exception):
            pyjwt_verify(hsmd, bad, alg, audience="saas-api", issuer=ISSUER)
        with pytest.raises(Exception):
            jwcrypto_verify(hsmd, bad, alg)
    # Verification with another algorithm than the key's is refused by the library.
    other = "RS256" if alg != "RS256" else "PS256"
    with pytest.raises(pyjwt.exceptions.InvalidAlgorithmError):
        pyjwt_verify(hsmd, token, other, audience="saas-api", issuer=ISSUER)


def test_expired_token_fails(hsmd, kms):
    key, alg = jwt_key(hsmd, kms, "ECC_NIST_P256")
    out = sign(hsmd, key, {"sub": "s"}, LifetimeSeconds=3)
    assert out["ExpiresAt"] - out["IssuedAt"] == 3
    pyjwt_verify(hsmd, out["Token"], alg)
    time.sleep(max(0.0, out["ExpiresAt"] + 1.2 - time.time()))
    with pytest.raises(pyjwt.exceptions.ExpiredSignatureError):
        pyjwt_verify(hsmd, out["Token"], alg)
    with pytest.raises(jcjwt.JWTExpired):
        jwcrypto_verify(hsmd, out["Token"], alg, leeway=0)


def test_header_typ_and_cty(hsmd, kms):
    key, alg = jwt_key(hsmd, kms, "ECC_NIST_EDWARDS25519")
    out = sign(hsmd, key, {"sub": "s"}, Header={"typ": "at+jwt"}, Algorithm="EdDSA")
    assert b64url_json(out["Token"].split(".")[0]) == {
        "alg": "EdDSA", "kid": f"{key}.v1", "typ": "at+jwt"}
    pyjwt_verify(hsmd, out["Token"], alg)


def test_a_token_key_refuses_kms_sign(hsmd, kms):
    """KMS Sign on a key marked for tokens would let a caller with kms:Sign make a token
    of its own, any claims and any lifetime, that the JWK Set vouches for: refused, with
    RAW and DIGEST messages alike, while the mark is on."""
    import hashlib
    from botocore.exceptions import ClientError
    key, alg = jwt_key(hsmd, kms, "RSA_2048")
    header = base64.urlsafe_b64encode(json.dumps(
        {"alg": "RS256", "kid": f"{key}.v1", "typ": "JWT"}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(
        {"sub": "admin", "exp": int(time.time()) + 10 * 365 * 86400}).encode()).rstrip(b"=")
    forged = header + b"." + payload
    for kind, message in (("RAW", forged), ("DIGEST", hashlib.sha256(forged).digest())):
        with pytest.raises(ClientError) as e:
            kms.sign(KeyId=key, Message=message, MessageType=kind,
                     SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")
        assert e.value.response["Error"]["Code"] == "InvalidKeyUsageException", kind
        # The whole message, the way out at its end included (messages are at most 255 bytes).
        assert e.value.response["Error"]["Message"].endswith(
            "use another key, or DisableJwtSigning first"), e.value.response["Error"]
        assert "SignToken" in e.value.response["Error"]["Message"]
    # Verifying and the public key work as before; a token it signed verifies.
    token = sign(hsmd, key, {"sub": "svc"})["Token"]
    pyjwt_verify(hsmd, token, alg)
    assert kms.get_public_key(KeyId=key)["KeySpec"] == "RSA_2048"
    # Unmarked (and so out of the JWK Set), it signs messages again.
    ok(jwt_call(hsmd, "DisableJwtSigning", {"KeyId": key}))
    sig = kms.sign(KeyId=key, Message=forged, MessageType="RAW",
                   SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")["Signature"]
    assert kms.verify(KeyId=key, Message=forged, MessageType="RAW", Signature=sig,
                      SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256")["SignatureValid"]
    with pytest.raises(pyjwt.exceptions.PyJWKClientError):
        pyjwt.PyJWKClient(hsmd.endpoint + JWKS_PATH).get_signing_key_from_jwt(
            (forged + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode())


def test_a_deny_of_kms_sign_stands_against_a_sign_grant_signing_tokens(hsmd, kms):
    """A grant allows SignToken through its Sign operation: a key policy's explicit Deny
    of kms:Sign to the grantee stands against it there as it does against Sign."""
    from conftest import client
    from helpers import ACCOUNT, audit_records_until, new_user
    akid, secret = new_user(hsmd, "jwt-grantee", ["crypto-user"])
    grantee = f"arn:aws:iam::{ACCOUNT}:user/jwt-grantee"
    allow_dev = {"Effect": "Allow", "Action": "kms:*", "Resource": "*",
                 "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/dev"}}
    deny_sign = {"Effect": "Deny", "Action": "kms:Sign", "Resource": "*",
                 "Principal": {"AWS": grantee}}
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [allow_dev, deny_sign]}))["KeyMetadata"]["KeyId"]
    ok(jwt_call(hsmd, "EnableJwtSigning", {"KeyId": key}))
    kms.create_grant(KeyId=key, GranteePrincipal=grantee, Operations=["Sign"])
    as_grantee = {"akid": akid, "secret": secret}
    with pytest.raises(Exception) as e:
        client(hsmd, akid, secret).sign(KeyId=key, Message=b"m",
                                        SigningAlgorithm="ECDSA_SHA_256")
    assert "explicit deny" in str(e.value)
    typ, msg = error(jwt_call(hsmd, "SignToken", {"KeyId": key, "Claims": {"sub": "x"}},
                              **as_grantee))
    assert typ == "AccessDeniedException" and "explicit deny" in msg, msg
    (rec,) = audit_records_until(hsmd.data_dir, lambda r: r.get("op") == "SignToken" and
                                 r.get("outcome") == "denied" and r.get("key_id") == key)
    assert rec["principal"] == grantee
    # Without the Deny the grant allows it, as documented.
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [allow_dev]}))
    out = ok(jwt_call(hsmd, "SignToken", {"KeyId": key, "Claims": {"sub": "x"}}, **as_grantee))
    assert out["KeyId"].endswith("key/" + key)


def nested(depth):
    v = "bottom"
    for _ in range(depth):
        v = {"n": v}
    return v


def test_bad_input_gets_clear_errors(hsmd, kms):
    key, _ = jwt_key(hsmd, kms, "RSA_2048")
    cases = [
        ({"Claims": ["a"]}, "ValidationException", "JSON object"),
        ({"Claims": "text"}, "ValidationException", "JSON object"),
        ({}, "ValidationException", "claims"),
        ({"Claims": {"exp": 1}}, "ValidationException", '"exp"'),
        ({"Claims": {"iat": 1}}, "ValidationException", '"iat"'),
        ({"Claims": {"nbf": 1}}, "ValidationException", '"nbf"'),
        ({"Claims": {"iss": 7}}, "ValidationException", '"iss"'),
        ({"Claims": {"sub": None}}, "ValidationException", '"sub"'),
        ({"Claims": {"aud": []}}, "ValidationException", '"aud"'),
        ({"Claims": {"aud": ["a", 1]}}, "ValidationException", '"aud"'),
        ({"Claims": {"pad": "x" * 17000}}, "ValidationException", "16384"),
        # Valid JSON nested past what hsmd reads: said so, not called invalid JSON.
        ({"Claims": nested(70)}, "SerializationException", "more than 64 deep"),
        ({"Claims": {}, "Header": {"alg": "none"}}, "ValidationException", '"alg"'),
        ({"Claims": {}, "Header": {"kid": "other"}}, "ValidationException", '"kid"'),
        ({"Claims": {}, "Header": {"cty": "JWT"}}, "ValidationException", "nested JWT"),
        ({"Claims": {}, "Header": {"crit": ["exp"]}}, "ValidationException", '"crit"'),
        ({"Claims": {}, "Header": "JWT"}, "ValidationException", "Header"),
        ({"Claims": {}, "Algorithm": "none"}, "ValidationException", "Algorithm"),
        ({"Claims": {}, "Algorithm": "HS256"}, "ValidationException", "Algorithm"),
        ({"Claims": {}, "Algorithm": "ES256"}, "InvalidKeyUsageException", "RS256"),
        ({"Claims": {}, "Algorithm": "PS256"}, "InvalidKeyUsageException", "RS256"),
        ({"Claims": {}, "LifetimeSeconds": 0}, "ValidationException", "lifetimeSeconds"),
        ({"Claims": {}, "LifetimeSeconds": 86401}, "ValidationException", "86400"),
        ({"Claims": {}, "LifetimeSeconds": "60"}, "SerializationException", "LifetimeSeconds"),
    ]
    for extra, code, needle in cases:
        body = {"KeyId": key}
        body.update(extra)
        got_code, message = error(jwt_call(hsmd, "SignToken", body))
        assert (got_code, needle in message) == (code, True), (extra, got_code, message)

    # Keys that cannot sign tokens, or may not yet.
    plain = new_key(kms, "RSA_2048")
    assert error(jwt_call(hsmd, "SignToken", {"KeyId": plain, "Claims": {}}))[0] == \
        "InvalidKeyUsageException"
    for spec, usage in [("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"), ("HMAC_256", "GENERATE_VERIFY_MAC"),
                        ("ECC_SECG_P256K1", "SIGN_VERIFY")]:
        k = new_key(kms, spec, usage)
        assert error(jwt_call(hsmd, "EnableJwtSigning", {"KeyId": k}))[0] == \
            "InvalidKeyUsageException"
    assert error(jwt_call(hsmd, "EnableJwtSigning", {"KeyId": plain, "Algorithm": "EdDSA"}))[0] == \
        "InvalidKeyUsageException"
    code, message = error(jwt_call(hsmd, "EnableJwtSigning", {"KeyId": key, "Algorithm": "PS256"}))
    assert code == "ValidationException" and "RS256" in message
    # Nor after a disable: verifiers cached this key's kids with RS256 (one kid, one alg).
    ps = new_key(kms, "RSA_2048")
    ok(jwt_call(hsmd, "EnableJwtSigning", {"KeyId": ps, "Algorithm": "PS384"}))
    ok(jwt_call(hsmd, "DisableJwtSigning", {"KeyId": ps}))
    code, message = error(jwt_call(hsmd, "EnableJwtSigning", {"KeyId": ps, "Algorithm": "RS384"}))
    assert code == "ValidationException" and "PS384" in message, message
    ok(jwt_call(hsmd, "EnableJwtSigning", {"KeyId": ps}))  # takes the algorithm it had
    header = pyjwt.get_unverified_header(sign(hsmd, ps, {"sub": "s"})["Token"])
    assert header["alg"] == "PS384" and header["kid"].startswith(ps), header
    missing = "11111111-2222-4333-8444-555555555555"
    assert error(jwt_call(hsmd, "SignToken", {"KeyId": missing, "Claims": {}}))[0] == \
        "NotFoundException"
    # Each target prefix answers only its own operations; signatures are required.
    assert error(signed_call(hsmd, "TrentService.SignToken", {"KeyId": key, "Claims": {}}))[0] == \
        "UnknownOperationException"
    assert error(jwt_call(hsmd, "Encrypt", {"KeyId": key, "Plaintext": "AA=="}))[0] == \
        "UnknownOperationException"
    status, body = unsigned_call(hsmd, "HsmdJwt.SignToken", {"KeyId": key, "Claims": {}})
    assert status == 400 and body["__type"] == "MissingAuthenticationTokenException"


def test_disabled_key_is_refused_and_unpublished(hsmd, kms):
    key, alg = jwt_key(hsmd, kms, "ECC_NIST_P256")
    token = sign(hsmd, key, {"sub": "s"})["Token"]
    pyjwt_verify(hsmd, token, alg)
    kms.disable_key(KeyId=key)
    code, _ = error(jwt_call(hsmd, "SignToken", {"KeyId": key, "Claims": {}}))
    assert code == "DisabledException"
    # Disabling is revocation: the key leaves the JWKS and its tokens stop verifying.
    with pytest.raises(pyjwt.exceptions.PyJWKClientError):
        pyjwt_verify(hsmd, token, alg)
    kms.enable_key(KeyId=key)
    pyjwt_verify(hsmd, token, alg)
    ok(jwt_call(hsmd, "DisableJwtSigning", {"KeyId": key}))
    assert not any(k["kid"].startswith(key) for k in fetch_jwks(hsmd)[0]["keys"])
    assert error(jwt_call(hsmd, "SignToken", {"KeyId": key, "Claims": {}}))[0] == \
        "InvalidKeyUsageException"


def test_jwks_http_caching(hsmd, kms):
    status, body, headers = hsmd.get(JWKS_PATH)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "public, max-age=300"
    assert headers["Access-Control-Allow-Origin"] == "*"  # browsers may verify tokens too
    # ... and a script may read the ETag, to send it back in If-None-Match.
    assert headers["Access-Control-Expose-Headers"] == "ETag"
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) == 24
    json.loads(body)

    def get(h):
        req = urllib.request.Request(hsmd.endpoint + JWKS_PATH, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    for inm in (etag, "W/" + etag, f'"other", {etag}', "*"):
        status, payload, h = get({"If-None-Match": inm})
        assert status == 304 and payload == b"" and h["ETag"] == etag, inm
        assert h["Cache-Control"] == "public, max-age=300"
        assert h["Access-Control-Expose-Headers"] == "ETag"
    status, payload, _ = get({"If-None-Match": '"stale"'})
    assert status == 200 and payload == body
    # HEAD: headers without the body.
    req = urllib.request.Request(hsmd.endpoint + JWKS_PATH, method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.read() == b"" and r.headers["ETag"] == etag
    # Publishing a key changes the document and its ETag at once.
    jwt_key(hsmd, kms, "ECC_NIST_P256")
    status, body2, headers2 = hsmd.get(JWKS_PATH)
    assert status == 200 and headers2["ETag"] != etag and body2 != body
    status, _, _ = get({"If-None-Match": etag})
    assert status == 200


def test_jwks_answers_the_cors_preflight(hsmd):
    """A browser's script that sends If-None-Match itself (or Cache-Control) preflights its
    GET with OPTIONS: the JWK Set allows any origin to GET and HEAD it with those headers,
    and says so for a day.  OPTIONS of other paths stays a 405 listing what they allow,
    or a 404 where hsmd serves nothing."""
    def options(path, headers):
        req = urllib.request.Request(hsmd.endpoint + path, method="OPTIONS", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    status, body, h = options(JWKS_PATH, {
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "if-none-match"})
    assert status == 204 and body == b"", (status, body)
    # No content, so no Content-Type (nor Content-Length) to describe it.
    assert "Content-Type" not in h and "Content-Length" not in h, dict(h)
    assert h["Access-Control-Allow-Origin"] == "*"
    assert [m.strip() for m in h["Access-Control-Allow-Methods"].split(",")] == ["GET", "HEAD"]
    allowed = [x.strip().lower() for x in h["Access-Control-Allow-Headers"].split(",")]
    assert "if-none-match" in allowed and "cache-control" in allowed, allowed
    assert h["Access-Control-Max-Age"] == "86400"
    for path, status_allow in (("/", (405, "POST")), ("/metrics", (405, "GET, HEAD")),
                               ("/.well-known/jwks.json/x", (404, None))):
        status, _, h = options(path, {"Origin": "https://app.example",
                                      "Access-Control-Request-Method": "POST"})
        assert (status, h["Allow"]) == status_allow, (path, status)
        assert "Access-Control-Allow-Origin" not in h, path
    # The GET the preflight allowed.
    req = urllib.request.Request(hsmd.endpoint + JWKS_PATH,
                                 headers={"Origin": "https://app.example"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"


def test_signing_is_audited_and_counted(hsmd, kms):
    key, _ = jwt_key(hsmd, kms, "ECC_NIST_P384")
    out = sign(hsmd, key, {"sub": "s"})
    error(jwt_call(hsmd, "SignToken", {"KeyId": key, "Claims": {"exp": 1}}))
    deadline = time.time() + 5
    records = []
    while time.time() < deadline:
        records = []
        for path in glob.glob(os.path.join(hsmd.data_dir, "audit", "*.jsonl")):
            with open(path) as f:
                records += [json.loads(line) for line in f if key in line]
        if len(records) >= 3:
            break
        time.sleep(0.1)
    ops = [(r["op"], r["outcome"]) for r in records]
    assert ("EnableJwtSigning", "success") in ops
    assert ("SignToken", "success") in ops and ("SignToken", "error") in ops
    (good,) = [r for r in records if r["op"] == "SignToken" and r["outcome"] == "success"]
    assert good["key_version"] == 1 and good["extra"]["algorithm"] == "ES384"
    # Neither the token nor the claims are written to the audit trail.
    assert all(out["Token"].split(".")[2] not in json.dumps(r) for r in records)
    status, metrics, _ = hsmd.get("/metrics")
    assert b'operation="SignToken"' in metrics


@pytest.fixture(scope="module")
def short_hsmd():
    """hsmd whose tokens live at most 20 s, with 4 s of clock skew: a 24 s grace period,
    a JWK Set max-age of 6 s, and so a 6 s lead (one node: nothing else to wait for)."""
    server = start_dev(["--jwt-max-lifetime-seconds", "20", "--jwt-default-lifetime-seconds",
                        "20", "--jwt-clock-skew-seconds", "4"])
    yield server
    server.cleanup()


LEAD, GRACE = 6, 24


def test_rotation_lead_and_grace_period(short_hsmd):
    """A rotation publishes the new version at once; the old one signs for the lead (the
    JWK Set's max-age), then the new one, and the old one stays published for max lifetime
    + skew after its last token."""
    server = short_hsmd
    from conftest import client
    k = client(server)
    key, alg = jwt_key(server, k, "ECC_NIST_P256")
    _, headers = fetch_jwks(server)
    assert headers["Cache-Control"] == f"public, max-age={LEAD}"  # (20 + 4) / 4
    old = sign(server, key, PLATFORM_CLAIMS)
    assert old["ExpiresAt"] - old["IssuedAt"] == 20  # the default, capped by the maximum
    assert error(jwt_call(server, "SignToken", {"KeyId": key, "Claims": {},
                                                "LifetimeSeconds": 21}))[0] == "ValidationException"
    before = int(time.time())
    ok(signed_call(server, "TrentService.RotateKeyOnDemand", {"KeyId": key}))
    after = time.time()
    # A verifier that fetches the set now already holds the version that will sign next.
    kids = {k["kid"] for k in fetch_jwks(server)[0]["keys"]}
    assert {f"{key}.v1", f"{key}.v2"} <= kids
    first = sign(server, key, PLATFORM_CLAIMS)
    assert first["IssuedAt"] < before + LEAD, "too slow to observe the lead"
    assert first["Kid"] == f"{key}.v1" and first["KeyVersion"] == 1
    # EnableJwtSigning (again: a no-op) names the kid new tokens carry.
    assert ok(jwt_call(server, "EnableJwtSigning", {"KeyId": key}))["Kid"] == f"{key}.v1"
    # The old version signs until the lead has passed, then the new one: every token
    # issued within the lead of the earliest the rotation can have been dated is v1,
    # and every one from the second after the lead of its latest is v2.
    last_v1, new = first, None
    while new is None and time.time() < after + LEAD + 5:
        t = sign(server, key, PLATFORM_CLAIMS)
        if t["IssuedAt"] <= before + LEAD:
            assert t["KeyVersion"] == 1, t
        if t["IssuedAt"] >= int(after) + LEAD + 1:
            assert t["KeyVersion"] == 2, t
        if t["KeyVersion"] == 1:
            last_v1 = t
        else:
            new = t
        time.sleep(0.1)
    assert new is not None, "the new version never signed"
    assert new["Kid"] == f"{key}.v2" and new["KeyVersion"] == 2
    assert b64url_json(new["Token"].split(".")[0])["kid"] == f"{key}.v2"
    # Published for the lead in full: from the second after created + lead.
    assert before + LEAD + 1 <= new["IssuedAt"]
    assert last_v1["IssuedAt"] <= after + LEAD
    assert ok(jwt_call(server, "EnableJwtSigning", {"KeyId": key}))["Kid"] == f"{key}.v2"
    # Tokens of the old version still verify, in both libraries.
    assert time.time() < old["ExpiresAt"], "too slow to observe the grace period"
    for t in (old, last_v1):
        pyjwt_verify(server, t["Token"], alg, audience="catalytic-api", issuer=ISSUER)
        jwcrypto_verify(server, t["Token"], alg, leeway=0)
    pyjwt_verify(server, new["Token"], alg, audience="catalytic-api", issuer=ISSUER)
    # After lead + max lifetime + skew the old version leaves the JWKS; the new one stays.
    assert time.time() < before + LEAD + GRACE, "too slow to observe the grace period"
    assert f"{key}.v1" in {k["kid"] for k in fetch_jwks(server)[0]["keys"]}
    time.sleep(max(0.0, after + LEAD + GRACE + 1.1 - time.time()))
    kids = {k["kid"] for k in fetch_jwks(server)[0]["keys"]}
    assert f"{key}.v1" not in kids and f"{key}.v2" in kids
    with pytest.raises(pyjwt.exceptions.PyJWKClientError):
        pyjwt.PyJWKClient(server.endpoint + JWKS_PATH).get_signing_key_from_jwt(old["Token"])
    fresh = sign(server, key, PLATFORM_CLAIMS)
    pyjwt_verify(server, fresh["Token"], alg, audience="saas-api", issuer=ISSUER)


def test_platform_flow(hsmd, kms):
    """RSA-4096 key, 90-day rotation, 15-minute access and 1-day refresh tokens."""
    key = kms.create_key(KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY",
                         Description="platform JWT signing")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/platform-jwt", TargetKeyId=key)
    marked = ok(jwt_call(hsmd, "EnableJwtSigning", {"KeyId": "alias/platform-jwt"}))
    assert marked["Algorithm"] == "RS256" and marked["Kid"] == f"{key}.v1"
    ok(signed_call(hsmd, "TrentService.EnableKeyRotation",
                   {"KeyId": key, "RotationPeriodInDays": 90}))
    status = ok(signed_call(hsmd, "TrentService.GetKeyRotationStatus", {"KeyId": key}))
    assert status["KeyRotationEnabled"] and status["RotationPeriodInDays"] == 90

    access = sign(hsmd, "alias/platform-jwt",
                  dict(PLATFORM_CLAIMS, token_use="access", scope="read write"),
                  LifetimeSeconds=900)
    refresh = sign(hsmd, "alias/platform-jwt",
                   dict(PLATFORM_CLAIMS, token_use="refresh", jti="r-1"),
                   LifetimeSeconds=86400)
    client = pyjwt.PyJWKClient(hsmd.endpoint + JWKS_PATH)
    for out, lifetime, use in ((access, 900, "access"), (refresh, 86400, "refresh")):
        signing_key = client.get_signing_key_from_jwt(out["Token"])
        assert signing_key.key_id == f"{key}.v1"
        assert signing_key.key.key_size == 4096
        claims = pyjwt.decode(out["Token"], signing_key.key, algorithms=["RS256"],
                              audience="catalytic-api", issuer=ISSUER,
                              options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]})
        assert claims["token_use"] == use and claims["exp"] - claims["iat"] == lifetime
        with pytest.raises(pyjwt.exceptions.InvalidAudienceError):
            pyjwt.decode(out["Token"], signing_key.key, algorithms=["RS256"],
                         audience="other-api", issuer=ISSUER)
        with pytest.raises(pyjwt.exceptions.InvalidIssuerError):
            pyjwt.decode(out["Token"], signing_key.key, algorithms=["RS256"],
                         audience="saas-api", issuer="someone-else")


def hsmctl(*args, stdin=None):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=DEV_AKID, AWS_SECRET_ACCESS_KEY=DEV_SECRET,
               AWS_REGION="us-east-1")
    return subprocess.run([HSMCTL, *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=60)


def test_hsmctl_jwt_sign_and_verify(hsmd, kms, tmp_path):
    key = new_key(kms, "ECC_NIST_P256")
    r = hsmctl("jwt", "enable", "--endpoint", hsmd.endpoint, key, "--alg", "ES256")
    assert r.returncode == 0 and "Algorithm: ES256" in r.stdout, r.stderr
    claims = json.dumps(PLATFORM_CLAIMS)
    r = hsmctl("jwt", "sign", "--endpoint", hsmd.endpoint, key, "--claims", claims,
               "--lifetime", "120")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    body = pyjwt_verify(hsmd, token, "ES256", audience="saas-api", issuer=ISSUER)
    assert body["exp"] - body["iat"] == 120

    url = hsmd.endpoint + JWKS_PATH
    r = hsmctl("jwt", "verify", "--jwks", url, token, "--issuer", ISSUER, "--audience", "saas-api")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("valid") and '"sub": "user-42"' in r.stdout
    # From a JWKS file and with the token on stdin.
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_bytes(hsmd.get(JWKS_PATH)[1])
    r = hsmctl("jwt", "verify", "--jwks", str(jwks_file), "-", "--audience", "catalytic-api",
               stdin=token + "\n")
    assert r.returncode == 0, r.stderr
    # Refusals: tampered payload, wrong audience, wrong issuer, no audience given.
    for args, needle in [
        ((tamper(token, 1), "--audience", "saas-api"), "signature"),
        ((token, "--audience", "other"), "audience"),
        ((token, "--audience", "saas-api", "--issuer", "x"), "issuer"),
        ((token,), "aud"),
    ]:
        r = hsmctl("jwt", "verify", "--jwks", url, *args)
        assert r.returncode == 1 and needle in r.stderr, (args, r.stderr)
    # Expired: beyond the leeway.
    r = hsmctl("jwt", "sign", "--endpoint", hsmd.endpoint, key, "--claims", '{"sub":"s"}',
               "--lifetime", "1")
    short = r.stdout.strip()
    time.sleep(2.2)
    r = hsmctl("jwt", "verify", "--jwks", url, short, "--leeway", "0")
    assert r.returncode == 1 and "expired" in r.stderr, r.stderr
    r = hsmctl("jwt", "verify", "--jwks", url, short, "--leeway", "30")
    assert r.returncode == 0, r.stderr
    # A lifetime of 0 is refused, as the API refuses it, not taken for the default.
    r = hsmctl("jwt", "sign", "--endpoint", hsmd.endpoint, key, "--claims", "{}",
               "--lifetime", "0")
    assert r.returncode == 2 and "at least 1" in r.stderr and r.stdout == "", (r.stdout, r.stderr)
    # Server errors come back by name; the key was marked for ES256 only.
    r = hsmctl("jwt", "sign", "--endpoint", hsmd.endpoint, key, "--claims", "{}", "--alg", "RS256")
    assert r.returncode == 1 and "InvalidKeyUsageException" in r.stderr
    r = hsmctl("jwt", "sign", "--endpoint", hsmd.endpoint, key, "--claims", "[1]")
    assert r.returncode == 1 and "JSON object" in r.stderr
    # The header's typ and cty as asked; claims from a file.
    claims_file = tmp_path / "claims.json"
    claims_file.write_text(json.dumps({"sub": "file-claims"}))
    r = hsmctl("jwt", "sign", "--endpoint", hsmd.endpoint, key, "--claims", "@" + str(claims_file),
               "--typ", "at+jwt", "--cty", "example")
    assert r.returncode == 0, r.stderr
    header = pyjwt.get_unverified_header(r.stdout.strip())
    assert (header["typ"], header["cty"], header["alg"]) == ("at+jwt", "example", "ES256"), header
    assert pyjwt_verify(hsmd, r.stdout.strip(), "ES256")["sub"] == "file-claims"
    r = hsmctl("jwt", "sign", "--endpoint", hsmd.endpoint, key, "--claims", "@/nonexistent/c.json")
    assert r.returncode == 1 and "/nonexistent/c.json" in r.stderr, r.stderr
    r = hsmctl("jwt", "disable", "--endpoint", hsmd.endpoint, key)
    assert r.returncode == 0 and "JwtSigningEnabled: false" in r.stdout
    r = hsmctl("jwt", "verify", "--jwks", url, token, "--audience", "saas-api")
    assert r.returncode == 1 and "kid" in r.stderr
