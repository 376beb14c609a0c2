"""Usernames and client ids are validated where they are created (issue 9): the model refuses
them, so the admin, the UI, the API and the system checks say the same; old rows keep
working."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ValidationError
from django.test import Client as HttpClient
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from brokerauth import names, passwords
from brokerauth.models import Account
from tests.conftest import DEVICE_PASSWORD

pytestmark = pytest.mark.django_db

BAD = [
    ("+", "contains '+'"),
    ("#", "contains '#'"),
    ("x/y", "contains '/'"),
    ("tab\there", "contains whitespace"),
    ("two words", "contains whitespace"),
    ("nbsp\u00a0x", "contains whitespace"),
    ("..", "contains '..'"),
    ("a..b", "contains '..'"),
    ("nul\0x", "U+0000"),
    ("bell\x07", "U+0007"),
    ("\ud800x", "U+D800"),
    ("rtl\u202eoverride", "U+202E"),
    ("zero\u200bwidth", "U+200B"),
    ("non\ufffe", "U+FFFE"),
    ("$SYS", "starts with '$'"),
    ("x" * 256, "longer than 255 characters"),
]
GOOD = ["alice", "dev-1", "pump_7.kitchen", "mqtt-service-monitor", "Zürich-3", "a" * 255, "é"]


@pytest.mark.parametrize(("name", "problem"), BAD)
def test_a_bad_name_is_refused_with_what_is_wrong(name: str, problem: str) -> None:
    wrong = names.problem(name)
    assert wrong is not None and problem in wrong
    with pytest.raises(ValidationError, match="This username"):
        names.validate_username(name)
    with pytest.raises(ValidationError, match="This client id"):
        names.validate_client_id(name)


@pytest.mark.parametrize("name", GOOD)
def test_ordinary_names_pass(name: str) -> None:
    assert names.problem(name) is None


@pytest.mark.parametrize(("name", "problem"), BAD[:6])
def test_the_model_the_ui_the_api_and_the_admin_refuse_a_bad_username(
    name: str, problem: str, operator: Any, operator_client: HttpClient
) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        Account(username=name).save_new()
    response = operator_client.post("/accounts/new/", {"username": name})
    assert problem in " ".join(response.context["form"].errors["username"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=operator).key}")
    refused = api.post("/api/v1/accounts/", {"username": name}, format="json")
    assert refused.status_code == 400 and problem in str(refused.json()["username"])
    admin = operator_client.post(
        "/admin/brokerauth/account/add/",
        {
            "username": name,
            "generate": "on",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "rules-TOTAL_FORMS": "0",
            "rules-INITIAL_FORMS": "0",
        },
    )
    assert admin.status_code == 200 and html.escape(problem) in admin.content.decode()
    assert not Account.objects.exists()


@pytest.mark.parametrize("field", ["client_id", "client_id_prefix"])
def test_a_bad_client_id_cannot_be_bound_nor_made_a_prefix(
    device: Account, operator_client: HttpClient, field: str
) -> None:
    data = {"description": "", "is_active": "on", field: "dev/1"}
    response = operator_client.post(f"/accounts/{device.pk}/edit/", data)
    assert "This client id contains &#x27;/&#x27;" in response.content.decode()
    with pytest.raises(ValidationError, match="contains '/'"):
        device.edit(**{field: "dev/1"})
    device.refresh_from_db()
    assert getattr(device, field) == ""


def test_an_account_made_before_the_rules_keeps_working(
    device: Account, operator_client: HttpClient
) -> None:
    Account.objects.filter(pk=device.pk).update(username="old name", client_id="old/id")
    assert Account.objects.authenticate("old name", DEVICE_PASSWORD, "old/id").allowed
    data = {"description": "still here", "client_id": "old/id", "is_active": "on"}
    response = operator_client.post(f"/accounts/{device.pk}/edit/", data)
    assert response.status_code == 302
    account = Account.objects.get(pk=device.pk)
    assert (account.username, account.client_id, account.description) == (
        "old name",
        "old/id",
        "still here",
    )
    account.edit(description="and editable through the model")
    with pytest.raises(ValidationError, match="contains '/'"):
        account.edit(client_id="new/id")  # a change is checked


@override_settings(MONITOR_USERNAME="mqtt monitor", MONITOR_CLIENT_ID="+")
def test_the_services_own_names_are_checked_at_start() -> None:
    errors = [e.msg for e in run_checks() if e.id == "brokerauth.E005"]
    assert errors == [
        "MONITOR_USERNAME='mqtt monitor' contains whitespace.",
        "MONITOR_CLIENT_ID='+' contains '+', an MQTT wildcard or the topic separator.",
    ]


def test_a_name_from_an_imported_password_file_is_kept_as_it_is(db: None) -> None:
    """Its devices already log in with it (import_mosquitto); a new account may not have it."""
    stored = passwords.hash_secret("site 7's secret")
    Account(username="site/7").import_hash(stored)
    assert Account.objects.authenticate("site/7", "site 7's secret", "s7").allowed
    with pytest.raises(ValidationError, match="at most 255 characters"):
        Account(username="x" * 256).import_hash(stored)  # still what the database can keep
    with pytest.raises(ValidationError, match="contains '/'"):
        Account(username="site/8").save_new()


def test_every_name_the_apis_schema_calls_valid_is_accepted() -> None:
    """The schema's pattern (web/api/schema.py) is a subset of what names.py accepts: each of
    its characters, and its shapes."""
    safe = [chr(c) for c in range(0x110000) if re.fullmatch(names.SCHEMA_PATTERN, chr(c))]
    assert len(safe) > 300
    assert [ch for ch in safe if names.problem(ch) is not None] == []
    for name in ("a.b", "a.b.c", "Zürich-3", "x" * 255):
        assert re.fullmatch(names.SCHEMA_PATTERN, name) and names.problem(name) is None
    for name in ("a..b", ".a", "a.", "$SYS", "a b", "", "a/b"):
        assert not re.fullmatch(names.SCHEMA_PATTERN, name)
