"""The admin sets passwords through a form and never shows a hash; its actions and forms
change accounts through the model's own methods, as the UI and the API do."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from brokerauth.models import Account, Lockout

pytestmark = pytest.mark.django_db
# The change page's inlines that the add page does not have.
CHANGE_INLINES = {
    "claimed_client_ids-TOTAL_FORMS": "0",
    "claimed_client_ids-INITIAL_FORMS": "0",
    "lockouts-TOTAL_FORMS": "0",
    "lockouts-INITIAL_FORMS": "0",
}


def lock(account: Account, source: str = "") -> None:
    until = timezone.now() + timedelta(hours=1)
    Lockout.objects.create(
        account=account,
        source=source,
        failures=9,
        last_failure_at=timezone.now(),
        locked_until=until,
    )


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
    lock(device, "10.0.0.5")
    lock(device)
    client.force_login(operator)
    data = {
        "username": "alice",
        "new_password": "a brand new secret",
        "is_active": "on",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
        **CHANGE_INLINES,
    }
    response = client.post(f"/admin/brokerauth/account/{device.pk}/change/", data)
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.check_password("a brand new secret")
    assert not device.lockouts.exists()


def test_the_disable_and_unlock_actions(client: Client, operator: Any, device: Account) -> None:
    before = device.changed_at
    lock(device, "10.0.0.5")
    client.force_login(operator)
    url = "/admin/brokerauth/account/"
    assert "locked for 1 of 1 sources" in client.get(url).content.decode()
    for action in ("unlock", "disable"):
        client.post(url, {"action": action, "_selected_action": [device.pk]})
    device.refresh_from_db()
    assert not device.lockouts.exists()
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
