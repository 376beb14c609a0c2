"""Operator actions are audited: who changed which account, group or rule, and when, from
the UI, the API and the admin alike, shown on the audit page and in the API."""

from __future__ import annotations

from typing import Any

from django.test import Client as HttpClient
from rest_framework.test import APIClient

from brokerauth.models import Account, Group, Rule


def actions(http: Any) -> list[tuple[str, str, str, str]]:
    body = http.get("/api/v1/operator-actions/").json()
    return [(a["user"], a["action"], a["kind"], a["object_repr"]) for a in body["results"]]


def test_ui_changes_are_audited(operator_client: HttpClient, device: Account) -> None:
    operator_client.post(f"/accounts/{device.pk}/active/", {"active": "0"})
    operator_client.post(f"/accounts/{device.pk}/edit/", {"description": "pump", "is_active": ""})
    operator_client.post("/groups/new/", {"name": "pumps"})
    group = Group.objects.get(name="pumps")
    operator_client.post(f"/groups/{group.pk}/members/", {"username": "alice"})
    rule = device.rules.get()
    operator_client.post(f"/rules/{rule.pk}/delete/")
    assert actions(operator_client) == [
        ("operator", "deleted", "rule", str(rule)),
        ("operator", "changed", "group", "pumps"),
        ("operator", "added", "group", "pumps"),
        ("operator", "changed", "account", "alice"),
        ("operator", "changed", "account", "alice"),
    ]
    html = operator_client.get("/audit/operators/").content.decode()
    assert "Added member alice." in html and "Changed Description." in html
    assert "Disabled." in html


def test_api_changes_are_audited(operator: Any, device: Account) -> None:
    api = APIClient()
    api.force_authenticate(operator)
    api.patch(f"/api/v1/accounts/{device.pk}/", {"description": "x"}, format="json")
    api.post(f"/api/v1/accounts/{device.pk}/reset-password/")
    response = api.post("/api/v1/rules/", {"account": "alice", "pattern": "a", "access": 1})
    api.delete(f"/api/v1/rules/{response.json()['id']}/")
    found = api.get("/api/v1/operator-actions/", {"kind": "account"}).json()["results"]
    assert [a["message"] for a in found] == ["Password reset.", "Changed description."]
    assert [action for _u, action, _k, _o in actions(api)][:2] == ["deleted", "added"]


def test_admin_changes_and_actions_are_audited(
    operator_client: HttpClient, device: Account
) -> None:
    operator_client.post(
        "/admin/brokerauth/account/",
        {"action": "disable", "_selected_action": [device.pk]},
    )
    assert ("operator", "changed", "account", "alice") in actions(operator_client)
    assert not Account.objects.get(pk=device.pk).is_active
    assert Rule.objects.filter(account=device).exists()


def test_the_operator_actions_page_has_pinned_queries(
    operator_client: HttpClient, device: Account, django_assert_num_queries: Any
) -> None:
    for _ in range(30):
        operator_client.post(f"/accounts/{device.pk}/active/", {"active": "1"})
    # session, user, count, page (with users and content types)
    with django_assert_num_queries(4):
        operator_client.get("/audit/operators/")
