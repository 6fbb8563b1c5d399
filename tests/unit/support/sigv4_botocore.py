#!/usr/bin/python3
"""Reference SigV4 signatures from Debian's botocore, for tests/unit/sigv4_test.c.

Each request below is signed by botocore.auth.SigV4Auth.add_auth (the signer
that aws-cli and boto3 use) at a fixed time.  The output is a JSON array with,
for every request, what was sent on the wire (method, raw path, raw query,
header lines including Authorization, body), the credentials and scope, and
the canonical request botocore built.  The C test checks that hsmd verifies
each request, rebuilds the same canonical request, and that hsm_sigv4_sign
produces the same Authorization header.

Run with /usr/bin/python3 (Debian's python3-botocore); prints to stdout.
"""
import calendar
import datetime
import json
import sys
import types
from urllib.parse import urlsplit

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

TIMESTAMP = "20150830T123600Z"
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


class _FixedClock(datetime.datetime):
    @classmethod
    def utcnow(cls):
        return cls.strptime(TIMESTAMP, "%Y%m%dT%H%M%SZ")


# add_auth reads the clock through the module's `datetime` name.
botocore.auth.datetime = types.SimpleNamespace(datetime=_FixedClock)


class _Recorder(botocore.auth.SigV4Auth):
    def canonical_request(self, request):
        self.recorded = super().canonical_request(request)
        return self.recorded


def sign(name, url, body=b"", headers=(), params=None, region="us-east-1", service="kms",
         method="POST", signer_compatible=True):
    req = AWSRequest(method=method, url=url, data=body, params=params or {})
    for k, v in headers:
        req.headers[k] = v  # HTTPHeaders appends: repeated names stay repeated
    auth = _Recorder(Credentials(AKID, SECRET), service, region)
    auth.add_auth(req)
    wire = req.prepare()
    parts = urlsplit(wire.url)
    # The prepared request keeps one line per header name; the AWSRequest
    # still has every line that was signed, so send those (and the
    # Content-Length that prepare() adds after signing, which stays unsigned).
    sent = [[k, v] for k, v in req.headers.items()]
    if "Content-Length" in wire.headers:
        sent.append(["Content-Length", wire.headers["Content-Length"]])
    return {
        "name": name,
        "method": method,
        "path": parts.path or "/",
        "query": parts.query,
        "headers": sent,
        "body_hex": (body if isinstance(body, bytes) else body.encode()).hex(),
        "access_key_id": AKID,
        "secret": SECRET,
        "region": region,
        "service": service,
        "epoch": calendar.timegm(_FixedClock.utcnow().timetuple()),
        "authorization": wire.headers["Authorization"],
        "canonical_request": auth.recorded,
        "signer_compatible": signer_compatible,
    }


def kms_headers(op, host="kms.us-east-1.amazonaws.com"):
    return [
        ("Host", host),
        ("X-Amz-Target", "TrentService." + op),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("User-Agent", "aws-cli/2 botocore/1.29"),  # not signed by botocore
    ]


def main():
    vectors = [
        sign("kms-encrypt", "https://kms.us-east-1.amazonaws.com/",
             body=b'{"KeyId": "alias/app", "Plaintext": "aGVsbG8="}',
             headers=kms_headers("Encrypt")),
        sign("kms-list-keys-empty-body", "https://kms.eu-west-3.amazonaws.com/",
             body=b"", headers=kms_headers("ListKeys", "kms.eu-west-3.amazonaws.com"),
             region="eu-west-3"),
        sign("kms-unicode-body", "http://localhost:8443/",
             body='{"EncryptionContext": {"p\u00e4th": "\u00fc \u20ac"}}'.encode(),
             headers=kms_headers("Decrypt", "localhost:8443")),
        sign("query-params", "https://kms.us-east-1.amazonaws.com/",
             params=[("b", "2"), ("a", "x y/z~"), ("a", "0"), ("c", "\u00e9&=+"), ("A", "")],
             headers=kms_headers("ListAliases"), method="GET"),
        sign("path-normalized", "https://kms.us-east-1.amazonaws.com/foo%20bar/./baz//qux/../q~x/",
             headers=kms_headers("ListAliases"), method="GET"),
        sign("header-folding", "https://kms.us-east-1.amazonaws.com/",
             body=b"{}",
             headers=kms_headers("DescribeKey") + [
                 ("X-Spaces", "  a   b \t c  "),
                 ("X-Dup", "one"),
                 ("x-dup", " two "),
                 ("X-Empty", ""),
             ]),
        sign("date-header", "https://kms.us-east-1.amazonaws.com/",
             body=b"{}", headers=kms_headers("DescribeKey") + [("Date", "placeholder")],
             signer_compatible=False),
    ]
    json.dump(vectors, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
