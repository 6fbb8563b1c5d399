"""Which of hsmd's threads run under SCHED_BATCH (the batch_scheduling setting).

By default the HTTP workers and the audit writer run under SCHED_BATCH, so that
when woken they wait for a core instead of preempting the signature running on
it (bench/PROFILE.md item 33); the lane threads that sign, the audit syncer
and the watchdog keep the normal policy.  batch_scheduling = false leaves every
thread under the normal policy.  The writer's nice value (five levels below
the workers) holds either way."""
import os
import time

from conftest import client, start_dev

SCHED_OTHER, SCHED_BATCH = 0, 3


def threads(pid):
    """{thread name: [(policy, nice)]} read from /proc/PID/task/*/stat."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            name = f.read().strip()
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is stat's field 3 (state): nice is field 19, policy field 41.
        out.setdefault(name, []).append((int(fields[38]), int(fields[16])))
    return out


def pool(seen, prefix):
    """(policy, nice) of every thread whose name starts with prefix."""
    return [v for name, vs in seen.items() if name.startswith(prefix) for v in vs]


def run_and_look(extra_args):
    server = start_dev(["--workers=2"] + extra_args)
    try:
        kms = client(server)
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
        # Each thread names itself and sets its policy as it starts: one not yet run shows
        # as "hsmd" beside the main thread.  Wait until every one has.
        want = {"hsmd-http-0", "hsmd-http-1", "hsmd-audit", "hsmd-audit-sync", "hsmd-audit-dog"}
        deadline = time.time() + 30
        while True:
            seen = threads(server.proc.pid)
            if (want <= set(seen) and len(seen.get("hsmd", [])) == 1) or time.time() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.1)  # a thread that has just named itself sets its policy next
        return threads(server.proc.pid)
    finally:
        server.cleanup()


def test_workers_and_writer_run_as_batch_by_default():
    seen = run_and_look([])
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    workers, lanes = pool(seen, "hsmd-http-"), pool(seen, "hsmd-lane-")
    assert [p for p, _ in workers] == [SCHED_BATCH, SCHED_BATCH]
    assert [n for _, n in workers] == [own_nice, own_nice]
    assert seen["hsmd-audit"] == [(SCHED_BATCH, min(own_nice + 5, 19))]
    assert len(lanes) >= 2 and all(p == SCHED_OTHER for p, _ in lanes)
    for name in ("hsmd-audit-sync", "hsmd-audit-dog", "hsmd"):
        assert [p for p, _ in seen[name]] == [SCHED_OTHER], name


def test_batch_scheduling_off_leaves_every_thread_normal():
    seen = run_and_look(["--batch-scheduling=false"])
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    assert {p for vs in seen.values() for p, _ in vs} == {SCHED_OTHER}
    assert len(pool(seen, "hsmd-http-")) == 2
    assert seen["hsmd-audit"] == [(SCHED_OTHER, min(own_nice + 5, 19))]
