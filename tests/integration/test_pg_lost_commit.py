"""A COMMIT whose answer is lost, on a shared PostgreSQL store.

hsmd reaches a throwaway PostgreSQL server through pg_commit_proxy.py, which,
once armed, loses the answer to the COMMIT of the next transaction that ran a
chosen statement: it drops the COMMIT (PostgreSQL rolls the transaction
back) or passes it on and withholds the answer (the transaction committed),
and in either case closes the connection.  hsmd then asks PostgreSQL, on
another connection, how that transaction ended (txid_status of the id its
outbox row's insert returned): a change that was made is answered as made, one
that was not as failed ("the change was not applied"), and one whose outcome
cannot be learned ("may or may not have been applied") keeps the approval it
ran on used, so that sending it again cannot make the change a second time
on the same approvals.

The node runs with approval_quorum 2 (custodians from the ceremony's
--custodian-users); CreateKey does not wait for approvals, CreateUser and
CreateAccessKey do.  The PostgreSQL server, the proxy and the node are the
module's own and are stopped whatever fails.
"""
import os
import re
import shutil
import subprocess
import tempfile
import types
import urllib.parse

import botocore.exceptions
import pytest

from conftest import HSMCTL, Hsmd, client, signed_call
from helpers import Postgres, admin, eventually, listed_key_ids
from pg_commit_proxy import CommitProxy

CUSTODIANS = ["alice", "bob", "carol"]
APPROVAL = re.compile(r"approval request ([0-9a-f]{32})")
NOT_APPLIED = "the change was not applied"
UNKNOWN = "may or may not have been applied"


def hsmctl(*args, endpoint=None, store=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HSM_"))}
    if store:
        env["HSM_STORE"] = store  # the password stays off the command line
    cmd = [HSMCTL] + (["--endpoint", endpoint] if endpoint else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def credentials(shares, name):
    with open(os.path.join(shares, name + ".credentials")) as f:
        fields = dict(l.split(" = ", 1) for l in f.read().splitlines() if " = " in l)
    return fields["aws_access_key_id"], fields["aws_secret_access_key"]


def through(uri, port):
    """uri with the proxy's port, and without TLS or GSS encryption (the proxy reads the
    stream)."""
    u = urllib.parse.urlsplit(uri)
    host = u.netloc.rsplit(":", 1)[0]
    return urllib.parse.urlunsplit(u._replace(netloc=f"{host}:{port}",
                                              query="sslmode=disable&gssencmode=disable"))


def start_node(args, env):
    """Hsmd(args, env), whose process is killed if it does not come up."""
    node = Hsmd.__new__(Hsmd)
    try:
        node.__init__(args, env=env)
    except BaseException:
        proc = getattr(node, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return node


@pytest.fixture(scope="module")
def env():
    """A 2-of-3 ceremony on a new PostgreSQL store with a user for each custodian, and a
    node with approval_quorum 2 reaching the store through the proxy, unsealed; a first
    CreateKey has recorded the store's account, so a CreateKey's transaction is only its
    key's."""
    base = tempfile.mkdtemp(prefix="hsmd-lostcommit-")
    pg = proxy = node = None
    try:
        pg = Postgres()
        direct = pg.database("lostcommit")
        proxy = CommitProxy(urllib.parse.urlsplit(direct).port)
        shares = os.path.join(base, "shares")
        p = hsmctl("init", "--data-dir", os.path.join(base, "ceremony"), "--share-dir", shares,
                   "--shares", "3", "--threshold", "2", "--custodians", ",".join(CUSTODIANS),
                   "--admin", "ops", "--custodian-users", store=direct)
        assert "quorum: 2 of 3" in p.stdout, p.stdout
        node = start_node(["--node-id", "lostcommit", "--approval-quorum", "2"],
                          {"HSM_STORE": through(direct, proxy.port)})
        for c in ("alice", "bob"):
            hsmctl("unseal", os.path.join(shares, c + ".share"), endpoint=node.endpoint)
        st, body, _ = node.get("/readyz")
        assert st == 200, body
        ns = types.SimpleNamespace(
            pg=pg, direct=direct, proxy=proxy, node=node,
            ops=credentials(shares, "ops"),
            custodians={c: credentials(shares, c) for c in CUSTODIANS})
        ns.kms = client(node, *ns.ops)
        ns.kms.create_key(Description="records the store's account")
        yield ns
    finally:
        if node is not None:
            node.cleanup()
        if proxy is not None:
            proxy.close()
        if pg is not None:
            pg.close()
        shutil.rmtree(base, ignore_errors=True)


def as_ops(env, target, body):
    return signed_call(env.node, target, body, akid=env.ops[0], secret=env.ops[1])


def approved(env, target, body):
    """Sends body as the officer, expecting ApprovalRequiredException; alice and bob approve
    the approval request it names; returns its id.  The identical request then runs."""
    st, out = as_ops(env, target, body)
    assert (st, out.get("__type")) == (400, "ApprovalRequiredException"), (st, out)
    approval = APPROVAL.search(out["message"]).group(1)
    for c in ("alice", "bob"):
        akid, secret = env.custodians[c]
        admin(env.node, "ApproveRequest", {"ApprovalId": approval}, akid=akid, secret=secret)
    return approval


def new_user(env, name):
    """A crypto-user, made with the custodians' approval, with no access key."""
    body = {"UserName": name, "Roles": ["crypto-user"]}
    approved(env, "HsmdAdmin.CreateUser", body)
    st, out = as_ops(env, "HsmdAdmin.CreateUser", body)
    assert st == 200, out


def access_keys(env, user):
    return [k["AccessKeyId"] for k in admin(env.node, "ListAccessKeys", {"UserName": user},
                                            akid=env.ops[0], secret=env.ops[1])["AccessKeys"]]


def approval_state(env, approval):
    return admin(env.node, "GetApproval", {"ApprovalId": approval}, akid=env.ops[0],
                 secret=env.ops[1])["State"]


def failed_signatures(env, user):
    """The user's failed-signature counter, read in the store (asking hsmd as that user
    would reset it)."""
    return int(env.pg.sql(env.direct, f"SELECT failed_auth FROM users WHERE name = '{user}'"))


def fired(env):
    """What the armed proxy did (it must have lost a COMMIT's answer)."""
    if not env.proxy.fired.wait(10):
        env.proxy.disarm()
        pytest.fail("the proxy lost no COMMIT's answer: " + repr(env.proxy.events))
    return env.proxy.fired_what


def test_a_rolled_back_commit_is_refused_after_an_earlier_commit_of_the_same_request(env):
    """A CreateKey whose COMMIT never reached PostgreSQL (dropped: rolled back) is refused
    with "the change was not applied", and ListKeys names the keys it named before.

    The request follows one with a bad signature by the same officer, so its own
    authentication first commits the reset of the officer's failed-signature counter
    with the request's outbox row: that row is in the store whatever became of the key's
    transaction.  hsmd asked before whether that row was there, and answered 200 with the
    KeyId of a key that did not exist; it must ask about the key's own transaction."""
    before = listed_key_ids(env.kms)
    bad = client(env.node, env.ops[0], "x" * 40)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        bad.list_keys()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException", e.value.response
    assert eventually(lambda: failed_signatures(env, "ops") == 1), "no failed signature counted"

    env.proxy.arm("INSERT INTO keys ")
    st, out = as_ops(env, "TrentService.CreateKey", {"Description": "rolled back"})
    event = fired(env)
    reset = failed_signatures(env, "ops")  # before the officer's next request resets it
    after = listed_key_ids(env.kms)
    answered = out.get("KeyMetadata", {}).get("KeyId")
    outcome = {"status": st, "type": out.get("__type"), "says not applied":
               NOT_APPLIED in out.get("message", ""), "keys listed unchanged": after == before,
               "answered KeyId listed": answered in after if answered else None}
    assert outcome == {"status": 500, "type": "KMSInternalException", "says not applied": True,
                       "keys listed unchanged": True, "answered KeyId listed": None}, \
        (outcome, out, event)
    assert event.startswith("dropped a COMMIT"), event
    # The counter's reset did commit, under this request's id: the row the outbox probe of
    # earlier hsmd found.
    assert reset == 0, "the CreateKey's authentication reset no failed-signature counter"


def test_a_commit_whose_answer_was_lost_is_answered_as_made(env):
    """A CreateKey whose COMMIT PostgreSQL carried out but whose answer never reached
    hsmd is answered 200, and its key exists: DescribeKey finds it and ListKeys names
    it."""
    before = listed_key_ids(env.kms)
    env.proxy.arm("INSERT INTO keys ", forward=True)
    st, out = as_ops(env, "TrentService.CreateKey", {"Description": "committed"})
    event = fired(env)
    assert event.startswith("passed on a COMMIT and withheld its answer"), event
    assert st == 200, (st, out, event)
    kid = out["KeyMetadata"]["KeyId"]
    meta = env.kms.describe_key(KeyId=kid)["KeyMetadata"]
    assert (meta["KeyId"], meta["Description"], meta["KeyState"]) == (kid, "committed", "Enabled")
    assert sorted(listed_key_ids(env.kms)) == sorted(before + [kid])


def test_an_approved_change_whose_commit_answer_was_lost_is_settled_as_made(env):
    """An approved CreateAccessKey whose access-key COMMIT PostgreSQL carried out but
    whose answer was lost is answered 200 with the new access key, the user has that one
    key, and the approval is Used: the identical request sent again opens a new approval
    request (ApprovalRequiredException) and makes no second key.

    The request's first transaction (closing the approval as Used) carried its outbox row,
    so hsmd did not settle the access key's lost COMMIT: it answered 500 and gave the
    approval back, and the identical request then made a second access key on the same
    approvals."""
    new_user(env, "app-settled")
    body = {"UserName": "app-settled"}
    approval = approved(env, "HsmdAdmin.CreateAccessKey", body)
    env.proxy.arm("INSERT INTO access_keys ", forward=True)
    st, out = as_ops(env, "HsmdAdmin.CreateAccessKey", body)
    event = fired(env)
    state = approval_state(env, approval)
    again_st, again = as_ops(env, "HsmdAdmin.CreateAccessKey", body)
    keys = access_keys(env, "app-settled")
    outcome = {"status": st, "approval": state, "again": (again_st, again.get("__type")),
               "access keys": len(keys)}
    assert outcome == {"status": 200, "approval": "Used",
                       "again": (400, "ApprovalRequiredException"), "access keys": 1}, \
        (outcome, out, again, event)
    assert event.startswith("passed on a COMMIT and withheld its answer"), event
    assert keys == [out["AccessKeyId"]] and len(out["SecretAccessKey"]) == 40, (keys, out)
    # The new access key works, and the retry waits on an approval request of its own.
    assert client(env.node, out["AccessKeyId"], out["SecretAccessKey"]) \
        .generate_random(NumberOfBytes=8)["Plaintext"]
    assert APPROVAL.search(again["message"]).group(1) != approval, again


def test_an_approved_change_of_unknown_outcome_keeps_its_approval_used(env):
    """An approved CreateAccessKey whose access-key COMMIT PostgreSQL carried out, but
    whose answer was lost and whose outcome hsmd cannot learn (the proxy cuts the
    connection that asks how the transaction ended), is refused with "may or may not
    have been applied"; its approval stays Used, so the identical request sent again
    opens a new approval request (ApprovalRequiredException) rather than running a
    second time: the user has the one access key the lost COMMIT made.

    Only the question is cut, not the store: a node that gives the approval back
    (Pending) can, and the retry then makes a second access key on the same approvals,
    as hsmd did."""
    new_user(env, "app-unknown")
    body = {"UserName": "app-unknown"}
    approval = approved(env, "HsmdAdmin.CreateAccessKey", body)
    cut_before = env.proxy.questions_cut
    env.proxy.arm("INSERT INTO access_keys ", forward=True, unanswerable=True)
    try:
        st, out = as_ops(env, "HsmdAdmin.CreateAccessKey", body)
        event = fired(env)
        asked = env.proxy.questions_cut - cut_before
    finally:
        env.proxy.answerable()
    state = approval_state(env, approval)
    again_st, again = as_ops(env, "HsmdAdmin.CreateAccessKey", body)
    keys = access_keys(env, "app-unknown")
    outcome = {"status": st, "type": out.get("__type"), "says unknown":
               UNKNOWN in out.get("message", ""), "approval": state,
               "again": (again_st, again.get("__type")), "access keys": len(keys)}
    assert outcome == {"status": 500, "type": "KMSInternalException", "says unknown": True,
                       "approval": "Used", "again": (400, "ApprovalRequiredException"),
                       "access keys": 1}, (outcome, out, again, event)
    assert event.startswith("passed on a COMMIT and withheld its answer; how it ended "
                            "cannot be asked"), event
    # The outcome was unknown because hsmd asked and the question was cut.
    assert asked >= 1, env.proxy.events
    assert APPROVAL.search(again["message"]).group(1) != approval, again
