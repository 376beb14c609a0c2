"""Contract tests: go-auth's exact requests, and the answers each response mode reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import override_settings

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Rule
from tests.conftest import DEVICE_PASSWORD, BrokerClient, basic_auth

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"
LOGIN = {"username": "alice", "password": DEVICE_PASSWORD, "clientid": "dev-1"}


def acl(topic: str, acc: Any, username: str = "alice", clientid: str = "dev-1") -> dict:
    return {"username": username, "clientid": clientid, "topic": topic, "acc": acc}


def test_login_allowed_as_json(broker: BrokerClient, device: Account) -> None:
    response = broker.ask("user", **LOGIN)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "error": ""}


def test_login_allowed_as_form(broker: BrokerClient, device: Account) -> None:
    response = broker.post(
        "/mqtt/auth/user", urlencode(LOGIN), content_type=FORM, HTTP_USER_AGENT="Go-http-client/1.1"
    )
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["get", "put"])
def test_json_body_with_get_and_put(broker: BrokerClient, device: Account, method: str) -> None:
    body = json.dumps(LOGIN)
    response = broker.generic(method.upper(), "/mqtt/auth/user", body, "application/json")
    assert response.status_code == 200


REFUSED = {"ok": False, "error": "not authorised"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({**LOGIN, "password": "wrong"}, "wrong password"),
        ({**LOGIN, "username": "nobody"}, "unknown account"),
        ({**LOGIN, "clientid": "taken"}, "client id 'taken' is in use by account 'bob'"),
        ({**LOGIN, "clientid": "mqtt-service-monitor"}, "is reserved for the service account"),
    ],
)
def test_every_refused_login_gets_the_same_answer_and_the_audit_keeps_why(
    broker: BrokerClient, device: Account, fields: dict, reason: str
) -> None:
    bob = Account.objects.create_account("bob", DEVICE_PASSWORD, client_id="taken")
    response = broker.ask("user", **fields)
    assert response.status_code == 403
    assert response.json() == {**REFUSED, "limit_username": fields["password"] == "wrong"}
    event = AuthEvent.objects.get()
    assert not event.allowed and reason in event.reason
    assert bob.claimed_client_ids.get().client_id == "taken"


def test_disabled_locked_and_bound_accounts_are_refused_alike(
    broker: BrokerClient, device: Account
) -> None:
    device.edit(client_id="dev-1")
    assert broker.ask("user", **{**LOGIN, "clientid": "other"}).json()["error"] == "not authorised"
    assert broker.ask("user", **LOGIN).status_code == 200
    device.set_active(False)
    assert broker.ask("user", **LOGIN).json() == {**REFUSED, "limit_username": True}
    reasons = list(AuthEvent.objects.order_by("created_at").values_list("reason", flat=True))
    assert reasons == [
        "account is bound to client id 'dev-1'",
        "password verified",
        "account disabled",
    ]


def test_the_plugins_address_keys_the_lockout_and_goes_to_the_audit(
    broker: BrokerClient, device: Account
) -> None:
    with override_settings(LOGIN_LOCKOUT_THRESHOLD=1):
        broker.ask("user", **{**LOGIN, "password": "wrong", "address": "203.0.113.7"})
        assert broker.ask("user", **{**LOGIN, "address": "203.0.113.7"}).status_code == 403
        assert broker.ask("user", **{**LOGIN, "address": "10.0.0.5"}).status_code == 200
    addresses = AuthEvent.objects.order_by("created_at").values_list("address", "allowed")
    assert list(addresses) == [("203.0.113.7", False), ("203.0.113.7", False), ("10.0.0.5", True)]


def test_every_login_is_audited(broker: BrokerClient, device: Account) -> None:
    broker.ask("user", **LOGIN)
    broker.ask("user", **{**LOGIN, "password": "nope"})
    events = list(AuthEvent.objects.order_by("created_at").values("allowed", "reason"))
    assert events == [
        {"allowed": True, "reason": "password verified"},
        {"allowed": False, "reason": "wrong password"},
    ]


@pytest.mark.parametrize("acc", [2, "2"])
def test_acl_acc_as_int_and_string(broker: BrokerClient, device: Account, acc: Any) -> None:
    assert broker.ask("acl", **acl("devices/alice/temp", acc)).status_code == 200
    form = broker.post(
        "/mqtt/auth/acl", urlencode(acl("devices/alice/temp", acc)), content_type=FORM
    )
    assert form.status_code == 200


def test_acl_denial_is_audited_with_its_reason(broker: BrokerClient, device: Account) -> None:
    response = broker.ask("acl", **acl("devices/bob/temp", 2))
    assert response.status_code == 403
    assert response.json()["error"] == "no rule matched"
    event = AuthEvent.objects.get()
    assert (event.kind, event.topic, event.access) == ("acl", "devices/bob/temp", 2)


def test_allowed_acl_checks_write_nothing(broker: BrokerClient, device: Account) -> None:
    for _ in range(3):
        broker.ask("acl", **acl("devices/alice/temp", 1))
    assert not AuthEvent.objects.exists()


def test_acl_endpoint_answers_superusers(broker: BrokerClient, superuser_account: Account) -> None:
    assert broker.ask("acl", **acl("$SYS/#", 4, username="root")).status_code == 200
    assert broker.ask("superuser", username="root").status_code == 200
    assert broker.ask("superuser", username="alice").status_code == 403


def test_group_rules_apply(broker: BrokerClient, device: Account, sensors: Any) -> None:
    assert broker.ask("acl", **acl("commands/dev-1", 4)).status_code == 200
    assert broker.ask("acl", **acl("commands/dev-2", 4)).status_code == 403


@override_settings(MQTT_AUTH_RESPONSE_MODE="text")
def test_text_response_mode(broker: BrokerClient, device: Account) -> None:
    """`text` reads a 2xx whose body is `ok`; any 4xx is a denial, so denials stay JSON and
    keep the limiter hint."""
    allowed = broker.ask("user", **LOGIN)
    assert (allowed.status_code, allowed.content) == (200, b"ok")
    denied = broker.ask("acl", **acl("elsewhere", 2))
    assert (denied.status_code, denied.json()) == (403, {"ok": False, "error": "no rule matched"})
    refused = broker.ask("user", **{**LOGIN, "password": "wrong"})
    assert refused.json() == {**REFUSED, "limit_username": True}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"username": "alice"}',
        b'{"username": "alice", "clientid": "c", "topic": "a", "acc": 3}',
        b'{"username": "alice", "clientid": "c", "topic": "a", "acc": true}',
        b'{"username": "alice", "clientid": "c", "topic": "a/#", "acc": 2}',
        b'{"username": "alice", "clientid": "c", "topic": "a/#/b", "acc": 4}',
        b'{"username": ["x"], "clientid": "c", "topic": "a", "acc": 2}',
        b'{"username": "a\\u0000", "clientid": "c", "topic": "a", "acc": 2}',
        b"[" * 100000,
    ],
)
def test_malformed_requests_are_a_400_deny(broker: BrokerClient, body: bytes) -> None:
    response = broker.post("/mqtt/auth/acl", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["ok"] is False


def test_oversized_body_is_a_400_deny(broker: BrokerClient) -> None:
    body = json.dumps(acl("a" * 200_000, 2))
    response = broker.post("/mqtt/auth/acl", body, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "header", ["", basic_auth(secret="wrong"), basic_auth(user="someone"), "Bearer x", "Basic !!"]
)
def test_callers_without_the_secret_are_refused(device: Account, header: str) -> None:
    response = BrokerClient(HTTP_AUTHORIZATION=header).ask("user", **LOGIN)
    assert response.status_code == 403
    assert response.json()["error"] == "caller not allowed"


@override_settings(MQTT_AUTH_SECRET="")
@pytest.mark.parametrize("header", ["", basic_auth(secret=""), "Basic YnJva2VyOg=="])
@pytest.mark.parametrize("endpoint", ["user", "acl", "superuser"])
def test_without_a_secret_configured_every_caller_is_refused(
    superuser_account: Account, header: str, endpoint: str
) -> None:
    """Fail closed (issue 14): /mqtt/auth/superuser said yes without any Authorization."""
    fields = {**LOGIN, "username": "root", "topic": "a", "acc": 2}
    response = BrokerClient(HTTP_AUTHORIZATION=header).ask(endpoint, **fields)
    assert (response.status_code, response.json()["error"]) == (403, "caller not allowed")


@override_settings(MQTT_AUTH_ALLOWED_NETS=["10.0.0.0/8"])
def test_callers_outside_the_allowed_networks_are_refused(
    broker: BrokerClient, device: Account
) -> None:
    assert broker.ask("user", **LOGIN).status_code == 403
    other = BrokerClient(REMOTE_ADDR="10.1.2.3")
    assert other.ask("user", **LOGIN).status_code == 200


def test_endpoints_never_redirect(broker: BrokerClient, device: Account) -> None:
    response = broker.ask("user/", **LOGIN)
    assert response.status_code == 200


def test_database_trouble_is_a_503(
    broker: BrokerClient, device: Account, database_outage: Callable[[], Any]
) -> None:
    with database_outage():
        login = broker.ask("user", **LOGIN)
        check = broker.ask("acl", **acl("devices/alice/t", 2))
    assert (login.status_code, check.status_code) == (503, 503)
    assert login.json() == {"ok": False, "error": "service unavailable"}


def test_a_rule_change_reaches_the_endpoint(broker: BrokerClient, device: Account) -> None:
    assert broker.ask("acl", **acl("shared/news", 4)).status_code == 403
    Rule.objects.create(account=device, pattern="shared/#", access=Access.SUBSCRIBE)
    with override_settings(POLICY_REFRESH_SECONDS=0):
        assert broker.ask("acl", **acl("shared/news", 4)).status_code == 200
