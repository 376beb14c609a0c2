"""Whatever arrives at /mqtt/auth/, the answer is never a 500 (issue 9: 91 of 2,868 fuzzed
requests were), and password bytes are verified as the device sent them."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from brokerauth import passwords
from brokerauth.models import Account, AuthEvent
from tests.conftest import BrokerClient, basic_auth

pytestmark = pytest.mark.django_db
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
ANSWERS = (200, 400, 403, 405)

# Text as hypothesis makes it includes lone surrogates and NUL (categories Cs and Cc).
texts = st.text(st.characters(codec=None), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children),
    max_leaves=8,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "username": json_values | st.sampled_from(["alice", "ghost", "\ud800", "a\0b"]),
        "password": json_values,
        "clientid": json_values | st.sampled_from(["dev-1", "\udcff", "x" * 300]),
        "topic": json_values | st.text(alphabet="ab/+#$\0é\ud800", max_size=20),
        "acc": json_values | st.sampled_from(["1", "2", "4", " 2", "٢"]),
        "address": json_values | st.sampled_from(["10.0.0.5", "::1", "garbage"]),
    },
)


def _splice(body: bytes, junk: bytes, at: int) -> bytes:
    at = at % (len(body) + 1)
    return body[:at] + junk + body[at:]


# JSON as go-auth writes it, JSON with raw bytes (invalid UTF-8 included) spliced in anywhere,
# urlencoded forms of the same fields, and plain garbage.
json_bodies = fields.map(lambda d: json.dumps(d).encode())
raw_json_bodies = st.builds(_splice, json_bodies, st.binary(min_size=1, max_size=8), st.integers())
form_bodies = st.dictionaries(
    st.sampled_from(["username", "password", "clientid", "topic", "acc", "address"]),
    st.binary(max_size=20),
).map(lambda d: "&".join(f"{k}={quote_from_bytes(v)}" for k, v in d.items()).encode())
bodies = st.one_of(st.binary(max_size=200), json_bodies, raw_json_bodies, form_bodies)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=utf-8",
        "multipart/form-data; boundary=x",
        "text/plain",
        "",
        "\xff\xfe/\x00",
    ]
)
# What a WSGI server hands Django: each header byte as one Latin-1 character.
raw_headers = st.binary(max_size=40).map(lambda b: b.decode("latin-1"))
authorizations = st.one_of(
    raw_headers,
    raw_headers.map(lambda junk: basic_auth() + junk).filter(lambda h: h != basic_auth()),
    raw_headers.map(lambda junk: "Basic " + junk),
    st.sampled_from(["", "Basic", "Basic %%%", "Basic Zm9vOmJhcg==", "Digest x", "Basic é"]),
)
endpoints = st.sampled_from(["user", "acl", "superuser", "user/", "acl/"])
methods = st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"])


@pytest.fixture
def accounts(db: None) -> None:
    Account.objects.create_account("alice", "correct horse battery staple", client_id="dev-1")
    Account(username="pump").save_new()


@FUZZ
@given(endpoint=endpoints, method=methods, body=bodies, content_type=content_types)
@example(
    endpoint="user",
    method="POST",
    body=b'{"username": "\\ud800", "password": "x", "clientid": "c"}',
    content_type="application/json",
)  # noqa: E501
@example(
    endpoint="acl",
    method="POST",
    body=b'{"username": "alice", "clientid": "\\udcff", "topic": "a", "acc": 2}',
    content_type="application/json",
)  # noqa: E501
@example(
    endpoint="user",
    method="POST",
    body=b"username=%ED%A0%80&password=x&clientid=c",
    content_type="application/x-www-form-urlencoded",
)  # noqa: E501
def test_fuzzed_bodies_never_produce_a_500(
    broker: BrokerClient, accounts: None, endpoint: str, method: str, body: bytes, content_type: str
) -> None:
    response = broker.generic(method, f"/mqtt/auth/{endpoint}", body, content_type)
    assert response.status_code in ANSWERS
    assert response.status_code == 200 or response.json()["ok"] is False


@FUZZ
@given(header=authorizations, endpoint=endpoints, body=bodies, user_agent=raw_headers)
@example(
    header="Basic \xe9\xe9\xe9", endpoint="superuser", body=b'{"username": "x"}', user_agent=""
)
def test_fuzzed_callers_are_refused_cleanly(
    accounts: None, header: str, endpoint: str, body: bytes, user_agent: str
) -> None:
    client = BrokerClient(HTTP_AUTHORIZATION=header, HTTP_USER_AGENT=user_agent)
    response = client.generic("POST", f"/mqtt/auth/{endpoint}", body, "application/json")
    assert (response.status_code, response.json()["error"]) == (403, "caller not allowed")


@FUZZ
@given(
    secret=st.binary(min_size=1, max_size=64).filter(lambda b: b"\0" not in b),
    other=st.binary(max_size=64),
)
def test_password_bytes_are_verified_as_the_device_sent_them(
    broker: BrokerClient, secret: bytes, other: bytes
) -> None:
    """Bytes that are not UTF-8 (MQTT passwords are binary) survive the JSON body, where a
    plugin passes them raw, and the form body, where they are percent-encoded."""
    account, _created = Account.objects.get_or_create(username="binary")
    account.import_hash(passwords.hash_secret(secret))
    for password in (secret, other):
        raw_json = b'{"username": "binary", "clientid": "c", "password": "%s"}' % _json_escape(
            password
        )
        form = b"username=binary&clientid=c&password=" + quote_from_bytes(password).encode()
        for body, kind in (
            (raw_json, "application/json"),
            (form, "application/x-www-form-urlencoded"),
        ):
            response = broker.generic("POST", "/mqtt/auth/user", body, kind)
            assert response.status_code == (200 if password == secret else 403), (body, kind)
    AuthEvent.objects.all().delete()


def _json_escape(data: bytes) -> bytes:
    """A JSON string body holding `data` as it is, as cJSON writes bytes it does not know to be
    text: only the quote, the backslash and control characters are escaped."""
    out = bytearray()
    for byte in data:
        if byte in (0x22, 0x5C) or byte < 0x20:
            out += b"\\u%04x" % byte
        else:
            out.append(byte)
    return bytes(out)


def test_a_password_with_a_nul_is_a_wrong_password_not_a_bad_request(
    broker: BrokerClient, accounts: Any
) -> None:
    """A NUL cannot be in anyone's secret; PBKDF2 (HMAC) would otherwise let `pw\\0` pass for
    `pw`, and bcrypt stops at it."""
    secret = Account(username="pump-2").save_new()
    for username, password in (("alice", "correct horse battery staple"), ("pump-2", secret)):
        for suffix in ("\0", "\0\0\0", "\0x"):
            fields = {"username": username, "password": password + suffix, "clientid": "dev-1"}
            assert broker.ask("user", **fields).status_code == 403
    assert set(AuthEvent.objects.values_list("reason", flat=True)) == {"wrong password"}
