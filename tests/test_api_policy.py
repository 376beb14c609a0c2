"""REST API: MQTT accounts, groups, rules and explain; authentication and permissions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from brokerauth.models import Account, Group, Rule
from tests.conftest import DEVICE_PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(operator: Any) -> APIClient:
    client = APIClient()
    token = Token.objects.create(user=operator)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def viewer_api(django_user_model: Any) -> APIClient:
    user = django_user_model.objects.create_user("viewer", password="viewer-pass-1")
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/accounts/",
        "/api/v1/groups/",
        "/api/v1/rules/",
        "/api/v1/explain/",
        "/api/v1/clients/",
        "/api/v1/sessions/",
        "/api/v1/telemetry/",
        "/api/v1/broker/stats/",
        "/api/v1/broker/samples/",
        "/api/v1/audit/",
        "/api/v1/schema/",
        "/api/v1/docs/",
    ],
)
def test_every_endpoint_needs_authentication(url: str) -> None:
    assert APIClient().get(url).status_code in (401, 403)


def test_a_bad_token_is_refused() -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert client.get("/api/v1/accounts/").status_code == 401


def test_session_authentication_works_for_the_browsable_api(operator: Any) -> None:
    client = APIClient()
    client.force_login(operator)
    assert client.get("/api/v1/accounts/").status_code == 200


def test_listing_accounts_is_paginated_and_filtered(api: APIClient, sensors: Group) -> None:
    Account.objects.create_account("bob", "bob-password", is_active=False)
    body = api.get("/api/v1/accounts/").json()
    assert body["count"] == 2
    assert body["results"][0]["username"] == "alice"
    assert body["results"][0]["groups"] == ["sensors"]
    assert "password" not in body["results"][0] and "password_hash" not in body["results"][0]
    assert [
        a["username"] for a in api.get("/api/v1/accounts/?is_active=false").json()["results"]
    ] == ["bob"]
    assert api.get("/api/v1/accounts/?search=ali").json()["count"] == 1


def test_creating_an_account_without_a_password_returns_a_generated_one(
    api: APIClient, sensors: Group
) -> None:
    response = api.post("/api/v1/accounts/", {"username": "pump-1", "groups": ["sensors"]})
    assert response.status_code == 201, response.json()
    password = response.json()["password"]
    account = Account.objects.get(username="pump-1")
    assert account.check_password(password)
    assert list(account.groups.values_list("name", flat=True)) == ["sensors"]
    assert "password" not in api.get(f"/api/v1/accounts/{account.pk}/").json()


def test_creating_an_account_with_a_password_does_not_echo_it(api: APIClient) -> None:
    response = api.post("/api/v1/accounts/", {"username": "pump-2", "password": "long-enough-1"})
    assert response.status_code == 201
    assert "password" not in response.json()
    assert Account.objects.get(username="pump-2").check_password("long-enough-1")


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"username": "alice"}, "username", 409),  # taken
        ({"username": ""}, "username", 400),
        ({"username": "x", "password": "short"}, "password", 400),
        ({"username": "x", "password": "é" * 40}, "password", 400),  # 80 bytes: past bcrypt's 72
        ({"username": "x", "groups": ["nope"]}, "groups", 404),  # no such group
        ({"username": "x", "is_active": "maybe"}, "is_active", 400),
        ({"username": "alice", "is_active": "maybe"}, "is_active", 400),  # malformed wins
    ],
)
def test_bad_account_input_is_a_4xx_naming_the_field(
    api: APIClient, device: Account, body: dict[str, Any], field: str, status: int
) -> None:
    response = api.post("/api/v1/accounts/", body, format="json")
    assert response.status_code == status
    assert field in response.json()


def test_a_password_past_72_bytes_is_a_400_on_every_way_in(api: APIClient, device: Account) -> None:
    url = f"/api/v1/accounts/{device.pk}/"
    long = {"password": "x" * 73}
    assert api.post(url + "set-password/", long, format="json").status_code == 400
    assert api.patch(url, long, format="json").status_code == 400
    assert api.post(url + "set-password/", long).status_code == 400  # form-encoded
    assert device.check_password(DEVICE_PASSWORD)


def test_updating_and_deleting_an_account(api: APIClient, device: Account) -> None:
    response = api.patch(f"/api/v1/accounts/{device.pk}/", {"is_active": False}, format="json")
    assert response.status_code == 200 and response.json()["is_active"] is False
    assert api.delete(f"/api/v1/accounts/{device.pk}/").status_code == 204
    assert not Account.objects.filter(pk=device.pk).exists()


def test_setting_and_resetting_a_password(api: APIClient, device: Account) -> None:
    url = f"/api/v1/accounts/{device.pk}/"
    assert api.post(url + "set-password/", {"password": "brand-new-pass"}).status_code == 204
    device.refresh_from_db()
    assert device.check_password("brand-new-pass")
    response = api.post(url + "set-password/", {"password": "short"})
    assert response.status_code == 400 and "password" in response.json()
    response = api.post(url + "reset-password/")
    assert response.status_code == 200
    device.refresh_from_db()
    assert device.check_password(response.json()["password"])


def test_a_new_password_lifts_a_lockout(api: APIClient, device: Account) -> None:
    url = f"/api/v1/accounts/{device.pk}/"
    for change in (
        lambda: api.post(url + "set-password/", {"password": "brand-new-pass"}),
        lambda: api.patch(url, {"password": "another-new-pass"}, format="json"),
        lambda: api.post(url + "reset-password/"),
    ):
        now = timezone.now()
        until = now + timedelta(hours=1)
        device.lockouts.create(
            source="10.0.0.5", failures=9, last_failure_at=now, locked_until=until
        )
        assert api.get(url).json()["lockouts"][0]["source"] == "10.0.0.5"
        assert change().status_code in (200, 204)
        assert api.get(url).json()["lockouts"] == []


def test_a_non_staff_user_reads_but_cannot_write(viewer_api: APIClient, device: Account) -> None:
    assert viewer_api.get("/api/v1/accounts/").status_code == 200
    assert viewer_api.post("/api/v1/accounts/", {"username": "x"}).status_code == 403
    assert viewer_api.post(f"/api/v1/accounts/{device.pk}/reset-password/").status_code == 403
    assert viewer_api.delete(f"/api/v1/accounts/{device.pk}/").status_code == 403
    assert viewer_api.post("/api/v1/groups/", {"name": "g"}).status_code == 403
    assert viewer_api.post("/api/v1/rules/", {}).status_code == 403
    assert viewer_api.post("/api/v1/test-service/").status_code == 403


def test_groups_with_members(api: APIClient, device: Account) -> None:
    response = api.post("/api/v1/groups/", {"name": "pumps", "accounts": ["alice"]}, format="json")
    assert response.status_code == 201, response.json()
    assert list(device.groups.values_list("name", flat=True)) == ["pumps"]
    group_id = response.json()["id"]
    response = api.patch(f"/api/v1/groups/{group_id}/", {"accounts": []}, format="json")
    assert response.json()["accounts"] == []
    assert api.post("/api/v1/groups/", {"name": "pumps"}).status_code == 409
    assert api.post("/api/v1/groups/", {"name": "x", "accounts": ["ghost"]}).status_code == 404


def test_rules_are_created_validated_and_filtered(api: APIClient, sensors: Group) -> None:
    body = {"account": "alice", "pattern": "alerts/%u", "access": 2, "priority": 5}
    response = api.post("/api/v1/rules/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["access_name"] == "publish"
    assert Rule.objects.filter(account__username="alice", pattern="alerts/%u").exists()
    assert api.get("/api/v1/rules/?account=alice").json()["count"] == 2
    assert api.get("/api/v1/rules/?group=sensors").json()["count"] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pattern": "a/#", "access": 1}, "exactly one account or one group"),
        ({"account": "alice", "group": "sensors", "pattern": "a", "access": 1}, "exactly one"),
        ({"account": "alice", "pattern": "a/#/b", "access": 1}, "pattern"),
        ({"account": "alice", "pattern": "a", "access": 9}, "access"),
    ],
)
def test_bad_rules_are_a_400_with_a_clear_message(
    api: APIClient, sensors: Group, body: dict[str, Any], message: str
) -> None:
    response = api.post("/api/v1/rules/", body, format="json")
    assert response.status_code == 400
    assert message in str(response.json())


def test_a_rule_for_an_unknown_account_is_a_404(api: APIClient, sensors: Group) -> None:
    body = {"account": "ghost", "pattern": "a", "access": 1}
    response = api.post("/api/v1/rules/", body, format="json")
    assert response.status_code == 404
    assert "ghost" in str(response.json()["account"])


def test_a_rule_moves_to_the_owner_a_patch_names(api: APIClient, sensors: Group) -> None:
    rule = Rule.objects.get(group=sensors, access=4)
    response = api.patch(f"/api/v1/rules/{rule.pk}/", {"account": "alice"}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["account"], response.json()["group"]) == ("alice", None)


def test_explain_by_get_and_post(api: APIClient, sensors: Group) -> None:
    query = {"username": "alice", "client_id": "c1", "topic": "commands/c1", "access": "receive"}
    body = api.get("/api/v1/explain/", query).json()
    assert body["allowed"] is True
    assert "commands/%c" in body["rule"]
    body = api.post("/api/v1/explain/", {**query, "topic": "devices/bob/x", "access": 2}).json()
    assert body == {"allowed": False, "reason": "no rule matched", "rule_id": None, "rule": None}


def test_explain_as_rabbitmq_asks(api: APIClient, device: Account) -> None:
    query = {"username": "alice", "topic": "devices.alice.t", "access": "publish"}
    assert api.get("/api/v1/explain/", {**query, "broker": "rabbitmq"}).json()["allowed"] is True
    assert api.get("/api/v1/explain/", query).json()["allowed"] is False
    assert api.get("/api/v1/audit/", {"broker": "mosquitto"}).status_code == 200


def test_explain_is_allowed_to_non_staff(viewer_api: APIClient, device: Account) -> None:
    query = {"username": "alice", "topic": "devices/alice/t", "access": "publish"}
    assert viewer_api.get("/api/v1/explain/", query).json()["allowed"] is True


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"topic": "a", "access": "publish"}, "username"),
        ({"username": "alice", "topic": "a", "access": "fly"}, "access"),
        ({"username": "alice", "topic": "a/#/b", "access": "publish"}, "topic"),
        ({"username": "alice", "topic": "a/+", "access": "3"}, "access"),
    ],
)
def test_bad_explain_input_is_a_400(
    api: APIClient, device: Account, query: dict[str, str], field: str
) -> None:
    response = api.get("/api/v1/explain/", query)
    assert response.status_code == 400
    assert field in response.json()
