"""Staff edit an account's own fields in the operator UI; superuser takes a confirmation."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as HttpClient

from brokerauth import acl
from brokerauth.models import Account, Group
from tests.conftest import DEVICE_PASSWORD

pytestmark = pytest.mark.django_db


def form_data(account: Account, **changes: Any) -> dict[str, str]:
    """What the browser posts for the account as it is, with `changes` applied (False: unticked)."""
    data: dict[str, Any] = {
        "description": account.description,
        "client_id": account.client_id,
        "is_active": account.is_active,
        "is_superuser": account.is_superuser,
        **changes,
    }
    return {
        name: "on" if value is True else value for name, value in data.items() if value is not False
    }


def may_log_in(client_id: str) -> bool:
    return Account.objects.authenticate("alice", DEVICE_PASSWORD, client_id).allowed


def may_publish_anywhere(username: str) -> bool:
    return Account.objects.explain_acl(
        username, "c1", "anything/at/all", acl.Access.PUBLISH
    ).allowed


def test_staff_binds_a_client_id_and_the_login_decision_follows(
    operator_client: HttpClient, device: Account
) -> None:
    assert may_log_in("pump-1") and may_log_in("other")
    data = form_data(device, description="the pump", client_id="pump-1")
    response = operator_client.post(f"/accounts/{device.pk}/edit/", data, follow=True)
    assert response.redirect_chain == [(f"/accounts/{device.pk}/", 302)]
    html = response.content.decode()
    assert "Account alice saved: description, bound client id." in html
    assert "POLICY_REFRESH_SECONDS" in html and "CACHE_ACL_TTL" in html
    device.refresh_from_db()
    assert (device.description, device.client_id) == ("the pump", "pump-1")
    assert may_log_in("pump-1")
    decision = Account.objects.authenticate("alice", DEVICE_PASSWORD, "other")
    assert not decision.allowed and "bound to client id 'pump-1'" in decision.reason

    operator_client.post(f"/accounts/{device.pk}/edit/", form_data(device, client_id=""))
    assert may_log_in("other")


def test_staff_disables_an_account_from_the_form(
    operator_client: HttpClient, device: Account
) -> None:
    operator_client.post(f"/accounts/{device.pk}/edit/", form_data(device, is_active=False))
    device.refresh_from_db()
    assert not device.is_active
    assert Account.objects.authenticate("alice", DEVICE_PASSWORD, "c1").reason == "account disabled"


def test_the_edit_form_shows_the_current_values(
    operator_client: HttpClient, device: Account
) -> None:
    Account.objects.filter(pk=device.pk).update(client_id="pump-1", description="the pump")
    response = operator_client.get(f"/accounts/{device.pk}/edit/")
    assert response.status_code == 200
    assert response.context["form"].initial["client_id"] == "pump-1"
    html = response.content.decode()
    assert 'value="pump-1"' in html and "the pump</textarea>" in html
    assert "csrfmiddlewaretoken" in html
    assert "I understand this account may then use every topic" in html


def test_a_bad_value_shows_the_error_inline_and_saves_nothing(
    operator_client: HttpClient, device: Account
) -> None:
    data = form_data(device, client_id="x" * 256, description="changed")
    response = operator_client.post(f"/accounts/{device.pk}/edit/", data)
    assert response.status_code == 200
    assert response.context["form"].errors["client_id"]
    assert 'role="alert"' in response.content.decode()
    device.refresh_from_db()
    assert (device.client_id, device.description) == ("", "")


def test_making_a_superuser_needs_the_confirmation(
    operator_client: HttpClient, device: Account
) -> None:
    assert not may_publish_anywhere("alice")
    url = f"/accounts/{device.pk}/edit/"
    response = operator_client.post(url, form_data(device, is_superuser=True))
    assert response.status_code == 200
    assert response.context["form"].errors["confirm_superuser"]
    assert 'role="alert"' in response.content.decode()
    device.refresh_from_db()
    assert not device.is_superuser and not may_publish_anywhere("alice")

    data = form_data(device, is_superuser=True, confirm_superuser=True)
    response = operator_client.post(url, data, follow=True)
    assert "Account alice saved: superuser." in response.content.decode()
    device.refresh_from_db()
    assert device.is_superuser and may_publish_anywhere("alice")


def test_a_superuser_is_not_asked_again_and_demotion_needs_no_confirmation(
    operator_client: HttpClient, superuser_account: Account
) -> None:
    url = f"/accounts/{superuser_account.pk}/edit/"
    assert "confirm_superuser" not in operator_client.get(url).context["form"].fields
    operator_client.post(url, form_data(superuser_account, description="root of all"))
    superuser_account.refresh_from_db()
    assert superuser_account.description == "root of all" and superuser_account.is_superuser

    operator_client.post(url, form_data(superuser_account, is_superuser=False))
    superuser_account.refresh_from_db()
    assert not superuser_account.is_superuser and not may_publish_anywhere("root")


def test_creating_a_superuser_needs_the_confirmation_too(operator_client: HttpClient) -> None:
    data = {"username": "root", "is_superuser": "on"}
    response = operator_client.post("/accounts/new/", data)
    assert response.status_code == 200 and response.context["form"].errors["confirm_superuser"]
    assert not Account.objects.exists()
    response = operator_client.post("/accounts/new/", {**data, "confirm_superuser": "on"})
    assert Account.objects.get(username="root").is_superuser
    assert response.context["password"]


def test_saving_without_a_change_writes_nothing(
    operator_client: HttpClient, device: Account
) -> None:
    before = device.changed_at
    response = operator_client.post(f"/accounts/{device.pk}/edit/", form_data(device), follow=True)
    assert "Nothing changed." in response.content.decode()
    device.refresh_from_db()
    assert device.changed_at == before


def test_the_edit_form_refuses_a_post_without_the_csrf_token(
    operator: Any, device: Account
) -> None:
    browser = HttpClient(enforce_csrf_checks=True)
    browser.force_login(operator)
    response = browser.post(f"/accounts/{device.pk}/edit/", form_data(device, client_id="x"))
    assert response.status_code == 403
    device.refresh_from_db()
    assert device.client_id == ""


def test_only_staff_may_edit_an_account(
    client: HttpClient, viewer_client: HttpClient, device: Account
) -> None:
    url = f"/accounts/{device.pk}/edit/"
    assert client.get(url)["Location"].startswith("/accounts/login/?next=")
    assert viewer_client.get(url).status_code == 403
    data = form_data(device, client_id="x", is_superuser=True, confirm_superuser=True)
    assert viewer_client.post(url, data).status_code == 403
    device.refresh_from_db()
    assert (device.client_id, device.is_superuser) == ("", False)
    page = viewer_client.get(f"/accounts/{device.pk}/").content.decode()
    assert url not in page and "Edit account" not in page


def test_the_account_page_links_the_edit_form_not_the_admin(
    operator_client: HttpClient, device: Account
) -> None:
    html = operator_client.get(f"/accounts/{device.pk}/").content.decode()
    assert f'href="/accounts/{device.pk}/edit/"' in html
    assert "/admin/" not in html
    assert operator_client.get("/accounts/999/edit/").status_code == 404


def test_an_account_in_every_group_is_offered_no_empty_list(
    operator_client: HttpClient, sensors: Group, device: Account
) -> None:
    response = operator_client.get(f"/accounts/{device.pk}/")
    html = response.content.decode()
    assert "Member of every group." in html
    assert "Add to group" not in html and not response.context["joinable"]


def test_with_no_group_at_all_the_page_says_so(
    operator_client: HttpClient, device: Account
) -> None:
    html = operator_client.get(f"/accounts/{device.pk}/").content.decode()
    assert "No group exists yet" in html and "Add to group" not in html


def test_the_add_to_group_list_offers_only_other_groups_in_the_same_queries(
    operator_client: HttpClient,
    sensors: Group,
    device: Account,
    django_assert_num_queries: Any,
) -> None:
    for i in range(5):
        Group.objects.create(name=f"g{i}")
    # As many queries as when the account is in every group (tests/test_web_rules.py).
    with django_assert_num_queries(9):
        response = operator_client.get(f"/accounts/{device.pk}/")
    html = response.content.decode()
    assert "Add to group" in html and "Member of every group." not in html
    for i in range(5):
        assert f">g{i}</option>" in html
    assert ">sensors</option>" not in html
