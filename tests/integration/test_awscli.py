"""A short session with Debian's aws-cli v2 (/usr/bin/aws), isolated from the
machine's AWS configuration: keys, aliases, encryption, signatures, listing
and deletion, and KMS error names in its error output."""
import base64
import subprocess

import pytest

from helpers import AWS_CLI, AwsCli, key_arn


@pytest.fixture(scope="module")
def cli(hsmd):
    c = AwsCli(hsmd)
    yield c
    c.close()


def test_it_is_aws_cli_v2():
    out = subprocess.run([AWS_CLI, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("aws-cli/2."), out.stdout + out.stderr


def test_symmetric_session(cli):
    m = cli.json("create-key", "--description", "made by aws-cli",
                 "--tags", "TagKey=team,TagValue=cli")["KeyMetadata"]
    kid = m["KeyId"]
    assert (m["KeySpec"], m["Description"], m["Arn"]) == ("SYMMETRIC_DEFAULT", "made by aws-cli",
                                                          key_arn(kid))
    cli.run("create-alias", "--alias-name", "alias/cli-session", "--target-key-id", kid)
    aliases = cli.json("list-aliases", "--key-id", kid)["Aliases"]
    assert [a["AliasName"] for a in aliases] == ["alias/cli-session"]

    pt = bytes(range(256)) * 4
    with open(cli.path("pt.bin"), "wb") as f:
        f.write(pt)
    enc = cli.json("encrypt", "--key-id", "alias/cli-session", "--plaintext",
                   "fileb://" + cli.path("pt.bin"), "--encryption-context", "app=cli,env=test")
    assert enc["KeyId"] == key_arn(kid)
    with open(cli.path("ct.bin"), "wb") as f:
        f.write(base64.b64decode(enc["CiphertextBlob"]))
    dec = cli.json("decrypt", "--ciphertext-blob", "fileb://" + cli.path("ct.bin"),
                   "--encryption-context", "env=test,app=cli")
    assert base64.b64decode(dec["Plaintext"]) == pt and dec["KeyId"] == key_arn(kid)
    # The wrong context: the KMS exception name is in the CLI's error output.
    p = cli.run("decrypt", "--ciphertext-blob", "fileb://" + cli.path("ct.bin"), check=False)
    assert p.returncode != 0 and "InvalidCiphertextException" in p.stderr, p.stderr

    keys = cli.json("list-keys")["Keys"]
    assert kid in [k["KeyId"] for k in keys]
    tags = cli.json("list-resource-tags", "--key-id", kid)["Tags"]
    assert tags == [{"TagKey": "team", "TagValue": "cli"}]

    r = cli.json("schedule-key-deletion", "--key-id", kid, "--pending-window-in-days", "7")
    assert (r["KeyState"], r["PendingWindowInDays"], r["KeyId"]) == ("PendingDeletion", 7,
                                                                      key_arn(kid))
    p = cli.run("encrypt", "--key-id", kid, "--plaintext", "fileb://" + cli.path("pt.bin"),
                check=False)
    assert p.returncode != 0 and "KMSInvalidStateException" in p.stderr, p.stderr
    assert cli.json("cancel-key-deletion", "--key-id", kid)["KeyId"] == key_arn(kid)
    assert cli.json("describe-key", "--key-id", kid)["KeyMetadata"]["KeyState"] == "Disabled"


def test_sign_verify_session(cli):
    kid = cli.json("create-key", "--key-spec", "ECC_NIST_P256", "--key-usage",
                   "SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with open(cli.path("msg.txt"), "wb") as f:
        f.write(b"signed by aws-cli\n")
    sig = cli.json("sign", "--key-id", kid, "--message", "fileb://" + cli.path("msg.txt"),
                   "--message-type", "RAW", "--signing-algorithm", "ECDSA_SHA_256")
    assert sig["SigningAlgorithm"] == "ECDSA_SHA_256"
    with open(cli.path("sig.bin"), "wb") as f:
        f.write(base64.b64decode(sig["Signature"]))
    v = cli.json("verify", "--key-id", kid, "--message", "fileb://" + cli.path("msg.txt"),
                 "--signature", "fileb://" + cli.path("sig.bin"), "--signing-algorithm",
                 "ECDSA_SHA_256")
    assert v["SignatureValid"] is True
    with open(cli.path("msg2.txt"), "wb") as f:
        f.write(b"signed by someone else\n")
    p = cli.run("verify", "--key-id", kid, "--message", "fileb://" + cli.path("msg2.txt"),
                "--signature", "fileb://" + cli.path("sig.bin"), "--signing-algorithm",
                "ECDSA_SHA_256", check=False)
    assert p.returncode != 0 and "KMSInvalidSignatureException" in p.stderr, p.stderr
    pub = cli.json("get-public-key", "--key-id", kid)
    assert pub["KeySpec"] == "ECC_NIST_P256" and pub["SigningAlgorithms"] == ["ECDSA_SHA_256"]


def test_paginated_listing(cli):
    made = {cli.json("create-key")["KeyMetadata"]["KeyId"] for _ in range(3)}
    # --page-size makes the CLI follow NextMarker page by page.
    keys = cli.json("list-keys", "--page-size", "1")["Keys"]
    ids = [k["KeyId"] for k in keys]
    assert made <= set(ids) and len(ids) == len(set(ids))
    assert ids == [k["KeyId"] for k in cli.json("list-keys")["Keys"]]


def test_errors_name_the_kms_exception(cli):
    cases = [
        (["describe-key", "--key-id", "alias/does-not-exist"], "NotFoundException"),
        (["create-key", "--key-spec", "HMAC_256"], "ValidationException"),
        (["create-alias", "--alias-name", "alias/aws/nope", "--target-key-id",
          "11111111-2222-3333-4444-555555555555"], "InvalidAliasNameException"),
        (["generate-random", "--number-of-bytes", "8", "--custom-key-store-id", "cks-1"],
         "CustomKeyStoreNotFoundException"),
        (["connect-custom-key-store", "--custom-key-store-id", "cks-1"],
         "CustomKeyStoreNotFoundException"),
        (["create-key", "--multi-region"], "UnsupportedOperationException"),
    ]
    for args, code in cases:
        p = cli.run(*args, check=False)
        assert p.returncode != 0 and code in p.stderr, (args, p.stderr)


def test_bad_credentials(hsmd):
    stranger = AwsCli(hsmd, akid="AKIANOSUCHKEY0000000", secret="x" * 40)
    try:
        p = stranger.run("list-keys", check=False)
        assert p.returncode != 0 and "UnrecognizedClientException" in p.stderr, p.stderr
    finally:
        stranger.close()
