"""A SQLite store whose data pages are damaged after it was made: no full check runs at
start (it would cost seconds on a large store), but once a request meets the damage
(SQLITE_CORRUPT) the node is no longer ready, counts it in a metric and logs it, rate-limited,
so a load balancer and an alert take it out of service."""
import json
import os
import sqlite3
import time

import botocore.exceptions
import pytest

from conftest import DEV_AKID, DEV_SECRET, Hsmd, client, start_dev
from helpers import eventually, metric

DEV_ENV = {"HSM_DEV_ACCESS_KEY_ID": DEV_AKID, "HSM_DEV_SECRET_ACCESS_KEY": DEV_SECRET}
DAMAGED = "the store's database file is damaged"


def damage_keys_table(db_path):
    """Overwrites the second half of the keys table's leaf pages with garbage."""
    db = sqlite3.connect(db_path)
    try:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        leaves = [p for (p,) in db.execute(
            "SELECT pageno FROM dbstat WHERE name = 'keys' AND pagetype = 'leaf' "
            "ORDER BY pageno")]
    finally:
        db.close()
    assert len(leaves) >= 4, leaves
    with open(db_path, "r+b") as f:
        for p in leaves[len(leaves) // 2:]:
            f.seek((p - 1) * page)
            f.write(b"\xa5" * page)


def test_a_damaged_store_makes_the_node_not_ready():
    server = start_dev()
    try:
        kms = client(server)
        for _ in range(100):
            kms.create_key(Description="d" * 200)
        st, body, _ = server.get("/readyz")
        assert st == 200 and "store_damaged" not in json.loads(body), body
        assert metric(server, "hsmd_store_corrupt_errors_total") == 0
    finally:
        server.stop()
    data = server.data_dir
    for f in ("hsmd.db-wal", "hsmd.db-shm"):
        assert not os.path.exists(os.path.join(data, f))
    damage_keys_table(os.path.join(data, "hsmd.db"))
    server = Hsmd(["--dev", "--scheduler-interval-seconds", "1"], env=DEV_ENV, data_dir=data)
    try:
        kms = client(server)
        for _ in range(5):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                kms.list_keys(Limit=1000)
            assert e.value.response["Error"]["Code"] == "KMSInternalException"
        st, body, _ = server.get("/readyz")
        ready = json.loads(body)
        assert st == 503 and ready["ready"] is False, body
        assert ready["store_damaged"] is True and "restore a backup" in ready["reason"], body
        assert ready["state"] == "unsealed" and ready["store"] is True, body
        assert metric(server, "hsmd_store_corrupt_errors_total") >= 5
        # A scheduler round says it (each second); then several more rounds: once, not once
        # a round.
        assert eventually(lambda: DAMAGED in server.read_log(), 20), server.read_log()
        time.sleep(3)
        for _ in range(5):
            with pytest.raises(botocore.exceptions.ClientError):
                kms.list_keys(Limit=1000)
        time.sleep(2)
        log = server.read_log()
        assert log.count(DAMAGED) == 1, log
        assert "stop it, keep the damaged file for study and restore the latest backup" in log
    finally:
        server.stop()
