"""The operator UI manages rules, groups and memberships: staff change, others read."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as HttpClient

from brokerauth import acl
from brokerauth.models import Account, Group, Membership, Rule

pytestmark = pytest.mark.django_db

RULE = {"pattern": "telemetry/%u/+", "access": "2", "allow": "True", "priority": "5"}


def may_publish(username: str, topic: str, client_id: str = "c1") -> bool:
    return Account.objects.explain_acl(username, client_id, topic, acl.Access.PUBLISH).allowed


@pytest.mark.parametrize("url", ["/groups/", "/groups/1/"])
def test_group_pages_ask_for_a_login(client: HttpClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_staff_adds_a_rule_to_an_account_and_it_decides(
    operator_client: HttpClient, device: Account
) -> None:
    assert not may_publish("alice", "telemetry/alice/temp")
    response = operator_client.post(f"/accounts/{device.pk}/rules/new/", RULE, follow=True)
    assert response.redirect_chain == [(f"/accounts/{device.pk}/", 302)]
    rule = device.rules.get(pattern="telemetry/%u/+")
    assert (rule.access, rule.allow, rule.priority) == (acl.Access.PUBLISH, True, 5)
    assert "POLICY_REFRESH_SECONDS" in response.content.decode()
    assert may_publish("alice", "telemetry/alice/temp")


@pytest.mark.parametrize(
    ("pattern", "error"),
    [("a/#/b", "#"), ("devices/x%u/#", "whole level"), ("", "required")],
)
def test_a_bad_pattern_shows_the_error_and_saves_nothing(
    operator_client: HttpClient, device: Account, pattern: str, error: str
) -> None:
    response = operator_client.post(
        f"/accounts/{device.pk}/rules/new/", {**RULE, "pattern": pattern}
    )
    assert response.status_code == 200
    assert error in " ".join(response.context["form"].errors["pattern"])
    assert 'role="alert"' in response.content.decode()
    assert device.rules.count() == 1


def test_staff_edits_and_deletes_an_account_rule(
    operator_client: HttpClient, device: Account
) -> None:
    rule = device.rules.get()
    edit = {"pattern": "devices/%u/#", "access": "7", "allow": "False", "priority": "9"}
    response = operator_client.post(f"/rules/{rule.pk}/edit/", edit)
    assert response["Location"] == f"/accounts/{device.pk}/"
    rule.refresh_from_db()
    assert (rule.allow, rule.priority) == (False, 9)
    assert not may_publish("alice", "devices/alice/x")

    confirm = operator_client.get(f"/rules/{rule.pk}/delete/")
    assert confirm.status_code == 200 and "devices/%u/#" in confirm.content.decode()
    assert Rule.objects.filter(pk=rule.pk).exists()
    response = operator_client.post(f"/rules/{rule.pk}/delete/")
    assert response["Location"] == f"/accounts/{device.pk}/"
    assert not Rule.objects.filter(pk=rule.pk).exists()


def test_editing_a_rule_with_a_bad_pattern_keeps_the_old_one(
    operator_client: HttpClient, device: Account
) -> None:
    rule = device.rules.get()
    response = operator_client.post(f"/rules/{rule.pk}/edit/", {**RULE, "pattern": "a/#/b"})
    assert response.status_code == 200 and response.context["form"].errors["pattern"]
    rule.refresh_from_db()
    assert rule.pattern == "devices/%u/#"


def test_staff_manages_a_group_and_its_rules(operator_client: HttpClient, sensors: Group) -> None:
    response = operator_client.post(f"/groups/{sensors.pk}/rules/new/", RULE)
    assert response["Location"] == f"/groups/{sensors.pk}/"
    rule = sensors.rules.get(pattern="telemetry/%u/+")
    assert may_publish("alice", "telemetry/alice/temp")

    operator_client.post(f"/rules/{rule.pk}/edit/", {**RULE, "allow": "False"})
    assert not may_publish("alice", "telemetry/alice/temp")
    response = operator_client.post(f"/rules/{rule.pk}/delete/")
    assert response["Location"] == f"/groups/{sensors.pk}/"
    assert not sensors.rules.filter(pk=rule.pk).exists()

    bad = operator_client.post(f"/groups/{sensors.pk}/rules/new/", {**RULE, "pattern": "a/#/b"})
    assert bad.status_code == 200 and bad.context["form"].errors["pattern"]
    assert sensors.rules.count() == 2


def test_staff_creates_renames_and_deletes_a_group(operator_client: HttpClient) -> None:
    response = operator_client.post("/groups/new/", {"name": "pumps", "description": "all"})
    group = Group.objects.get(name="pumps")
    assert response["Location"] == f"/groups/{group.pk}/"
    taken = operator_client.post("/groups/new/", {"name": "pumps"})
    assert taken.status_code == 200 and "already exists" in taken.content.decode()

    operator_client.post(f"/groups/{group.pk}/edit/", {"name": "valves", "description": ""})
    group.refresh_from_db()
    assert group.name == "valves"
    assert "valves" in operator_client.get("/groups/").content.decode()

    Rule.objects.create(group=group, pattern="valves/#", access=acl.Access.ALL)
    confirm = operator_client.get(f"/groups/{group.pk}/delete/")
    assert "1 rule(s)" in confirm.content.decode()
    assert operator_client.post(f"/groups/{group.pk}/delete/")["Location"] == "/groups/"
    assert not Group.objects.exists() and not Rule.objects.filter(pattern="valves/#").exists()


def test_group_membership_changes_the_decision(
    operator_client: HttpClient, device: Account
) -> None:
    group = Group.objects.create(name="writers")
    Rule.objects.create(group=group, pattern="shared/+", access=acl.Access.PUBLISH)
    assert not may_publish("alice", "shared/x")

    response = operator_client.post(f"/groups/{group.pk}/members/", {"username": "alice"})
    assert response["Location"] == f"/groups/{group.pk}/"
    assert may_publish("alice", "shared/x")
    again = operator_client.post(f"/groups/{group.pk}/members/", {"username": "alice"})
    assert again.status_code == 200 and "already a member" in again.content.decode()
    nobody = operator_client.post(f"/groups/{group.pk}/members/", {"username": "nobody"})
    assert nobody.status_code == 200 and "No account named" in nobody.content.decode()

    operator_client.post(f"/groups/{group.pk}/members/{device.pk}/remove/")
    assert not may_publish("alice", "shared/x")


def test_an_account_joins_and_leaves_groups_from_its_page(
    operator_client: HttpClient, device: Account
) -> None:
    group = Group.objects.create(name="writers")
    Rule.objects.create(group=group, pattern="shared/+", access=acl.Access.PUBLISH)
    page = operator_client.get(f"/accounts/{device.pk}/")
    assert list(page.context["join_form"].fields["group"].queryset) == [group]

    response = operator_client.post(f"/accounts/{device.pk}/groups/", {"group": group.pk})
    assert response["Location"] == f"/accounts/{device.pk}/"
    assert may_publish("alice", "shared/x")
    page = operator_client.get(f"/accounts/{device.pk}/")
    assert list(page.context["join_form"].fields["group"].queryset) == []

    response = operator_client.post(f"/accounts/{device.pk}/groups/{group.pk}/remove/")
    assert response["Location"] == f"/accounts/{device.pk}/"
    assert not may_publish("alice", "shared/x")


def test_a_non_staff_user_reads_groups_but_changes_nothing(
    viewer_client: HttpClient, sensors: Group, device: Account
) -> None:
    assert viewer_client.get("/groups/").status_code == 200
    page = viewer_client.get(f"/groups/{sensors.pk}/")
    assert page.status_code == 200 and "Add a rule" not in page.content.decode()
    rule = sensors.rules.first()
    assert rule is not None
    for url, data in [
        (f"/accounts/{device.pk}/rules/new/", RULE),
        (f"/groups/{sensors.pk}/rules/new/", RULE),
        (f"/rules/{rule.pk}/edit/", RULE),
        (f"/rules/{rule.pk}/delete/", {}),
        ("/groups/new/", {"name": "x"}),
        (f"/groups/{sensors.pk}/edit/", {"name": "x"}),
        (f"/groups/{sensors.pk}/delete/", {}),
        (f"/groups/{sensors.pk}/members/", {"username": "alice"}),
        (f"/groups/{sensors.pk}/members/{device.pk}/remove/", {}),
        (f"/accounts/{device.pk}/groups/", {"group": sensors.pk}),
        (f"/accounts/{device.pk}/groups/{sensors.pk}/remove/", {}),
    ]:
        assert viewer_client.post(url, data).status_code == 403, url
    assert viewer_client.get(f"/rules/{rule.pk}/delete/").status_code == 403
    assert Rule.objects.count() == 3 and Membership.objects.count() == 1
    assert Group.objects.get().name == "sensors"


def test_group_page_query_count_does_not_grow(
    operator_client: HttpClient, sensors: Group, django_assert_num_queries: Any
) -> None:
    for i in range(5):
        account = Account.objects.create_account(f"dev-{i}", "pw-123456")
        sensors.memberships.create(account=account)
        Rule.objects.create(group=sensors, pattern=f"x/{i}/#", access=acl.Access.ALL)
    with django_assert_num_queries(5):
        operator_client.get(f"/groups/{sensors.pk}/")


def test_groups_list_query_count_does_not_grow(
    operator_client: HttpClient, sensors: Group, django_assert_num_queries: Any
) -> None:
    for i in range(5):
        Group.objects.create(name=f"g{i}")
    with django_assert_num_queries(3):
        operator_client.get("/groups/")


def test_account_page_query_count_does_not_grow(
    operator_client: HttpClient, sensors: Group, device: Account, django_assert_num_queries: Any
) -> None:
    for i in range(5):
        Rule.objects.create(account=device, pattern=f"own/{i}", access=acl.Access.ALL)
        group = Group.objects.create(name=f"g{i}")
        group.memberships.create(account=device)
        Rule.objects.create(group=group, pattern=f"g/{i}", access=acl.Access.ALL)
    # session, user, account, groups, rules, client ids, lockouts, events, join form
    with django_assert_num_queries(9):
        operator_client.get(f"/accounts/{device.pk}/")
