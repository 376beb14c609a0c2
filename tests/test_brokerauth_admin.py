"""The admin sets passwords through a form and never shows a hash; its actions and forms
change accounts through the model's own methods, as the UI and the API do."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from brokerauth.models import Account

pytestmark = pytest.mark.django_db

ADD = {
    "username": "sensor-7",
    "is_active": "on",
    "memberships-TOTAL_FORMS": "0",
    "memberships-INITIAL_FORMS": "0",
    "rules-TOTAL_FORMS": "1",
    "rules-INITIAL_FORMS": "0",
    "rules-0-pattern": "devices/%u/#",
    "rules-0-access": "7",
    "rules-0-allow": "on",
    "rules-0-priority": "0",
}


def test_generated_password_is_shown_once(client: Client, operator: Any) -> None:
    client.force_login(operator)
    response = client.post("/admin/brokerauth/account/add/", {**ADD, "generate": "on"}, follow=True)
    account = Account.objects.get(username="sensor-7")
    message = next(str(m) for m in response.context["messages"])
    password = message.split(": ", 1)[1].split(" ")[0]
    assert account.check_password(password)
    assert account.rules.get().pattern == "devices/%u/#"
    page = client.get(f"/admin/brokerauth/account/{account.pk}/change/").content.decode()
    assert account.password_hash not in page
    assert password not in page


def test_a_new_account_needs_a_password(client: Client, operator: Any) -> None:
    client.force_login(operator)
    response = client.post("/admin/brokerauth/account/add/", ADD)
    assert "A new account needs a password" in response.content.decode()


@pytest.mark.parametrize(
    ("password", "error"),
    [("short", "at least 8 characters"), ("é" * 40, "limited to 72 bytes")],
)
def test_the_password_rules_are_the_apis(
    client: Client, operator: Any, password: str, error: str
) -> None:
    client.force_login(operator)
    response = client.post("/admin/brokerauth/account/add/", {**ADD, "new_password": password})
    assert error in response.content.decode()
    assert not Account.objects.exists()


def test_a_new_password_in_the_change_form_lifts_the_lockout(
    client: Client, operator: Any, device: Account
) -> None:
    Account.objects.filter(pk=device.pk).update(
        failed_logins=9, locked_until=timezone.now() + timedelta(hours=1)
    )
    client.force_login(operator)
    data = {
        "username": "alice",
        "new_password": "a brand new secret",
        "is_active": "on",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
    }
    response = client.post(f"/admin/brokerauth/account/{device.pk}/change/", data)
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.check_password("a brand new secret")
    assert (device.failed_logins, device.locked_until) == (0, None)


def test_the_disable_and_unlock_actions(client: Client, operator: Any, device: Account) -> None:
    before = device.changed_at
    Account.objects.filter(pk=device.pk).update(
        failed_logins=9, locked_until=timezone.now() + timedelta(hours=1)
    )
    client.force_login(operator)
    url = "/admin/brokerauth/account/"
    for action in ("unlock", "disable"):
        client.post(url, {"action": action, "_selected_action": [device.pk]})
    device.refresh_from_db()
    assert (device.failed_logins, device.locked_until) == (0, None)
    assert not device.is_active and device.changed_at > before  # every process re-reads


def test_an_invalid_pattern_is_refused(client: Client, operator: Any) -> None:
    client.force_login(operator)
    data = {**ADD, "new_password": "a long password", "rules-0-pattern": "a/#/b"}
    response = client.post("/admin/brokerauth/account/add/", data)
    assert "must be a whole level and the last one" in response.content.decode()
    assert not Account.objects.exists()


def test_audit_is_read_only(client: Client, operator: Any) -> None:
    client.force_login(operator)
    assert client.get("/admin/brokerauth/authevent/").status_code == 200
    assert client.get("/admin/brokerauth/authevent/add/").status_code == 403
