"""DESIGN invariant 2 against the running daemon: a key that hsmd acknowledged
as created survives kill -9 at any moment, and stays usable."""
import os
import random
import signal
import tempfile
import threading
import time

import botocore.exceptions

from conftest import client, start_dev


def test_acknowledged_keys_survive_kill_9():
    tmp = tempfile.mkdtemp(prefix="hsmd-crash-")
    data = os.path.join(tmp, "data")
    acked = {}  # key id -> ciphertext made right after creation
    rng = random.Random(1234)
    for round_ in range(4):
        server = start_dev(["--data-dir", data])
        kms = client(server)
        stop = threading.Event()

        def creator():
            while not stop.is_set():
                try:
                    key = kms.create_key(Description=f"round {round_}")["KeyMetadata"]["KeyId"]
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                    return  # the server is gone
                try:
                    blob = kms.encrypt(KeyId=key, Plaintext=key.encode())["CiphertextBlob"]
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                    blob = None
                acked[key] = blob

        t = threading.Thread(target=creator)
        t.start()
        time.sleep(rng.uniform(0.2, 1.5))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        stop.set()
        t.join(timeout=30)
        server.log.close()
    assert len(acked) >= 4, "the test did not create enough keys to mean anything"
    server = start_dev(["--data-dir", data])
    try:
        kms = client(server)
        listed = set()
        for page in kms.get_paginator("list_keys").paginate():
            listed |= {k["KeyId"] for k in page["Keys"]}
        for key, blob in acked.items():
            assert key in listed, f"acknowledged key {key} was lost"
            meta = kms.describe_key(KeyId=key)["KeyMetadata"]
            assert meta["KeyState"] == "Enabled"
            if blob is not None:
                assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == key.encode()
            kms.encrypt(KeyId=key, Plaintext=b"still usable")
    finally:
        server.cleanup()
        os.system(f"rm -rf '{tmp}'")
