"""A request that fails names its own failure: the audit record's lookup of a KeyId
that does not resolve (an alias that does not exist, a key ARN of another region or
account) must not replace the answer's message (dispatch.c note_key, hsm_api_note_ref)."""
import base64
import uuid

import pytest

from conftest import signed_call

CROSS = "arn:aws:kms:eu-west-1:999999999999:key/" + str(uuid.uuid4())

CASES = [
    ("Encrypt", {"KeyId": "alias/none", "Plaintext": base64.b64encode(b"a" * 4097).decode()},
     "ValidationException", "'plaintext'"),
    ("Encrypt", {"KeyId": CROSS, "Plaintext": "!!"}, "SerializationException",
     "Plaintext is not valid base64"),
    ("GenerateDataKey", {"KeyId": "alias/none", "NumberOfBytes": 0}, "ValidationException",
     "'numberOfBytes'"),
    ("ScheduleKeyDeletion", {"KeyId": "alias/none", "PendingWindowInDays": 6},
     "ValidationException", "'pendingWindowInDays'"),
    ("ListGrants", {"KeyId": "alias/none"}, "ValidationException", "do not take an alias"),
    ("CreateGrant", {"KeyId": "alias/none", "GranteePrincipal": "bad principal!",
                     "Operations": ["Encrypt"]}, "ValidationException", "GranteePrincipal"),
]


@pytest.mark.parametrize("op,body,code,text", CASES, ids=[c[0] + str(i) for i, c in enumerate(CASES)])
def test_failure_keeps_its_message(hsmd, op, body, code, text):
    status, out = signed_call(hsmd, "TrentService." + op, body)
    assert (status, out.get("__type")) == (400, code), out
    assert text in out["message"], out
    assert "is not found" not in out["message"] and "does not exist" not in out["message"], out
