"""Client ids belong to accounts (issue 9): at login, in every ACL check, and as the UI and
the API show them."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client as HttpClient
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from brokerauth import acl, clientids
from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, ClientId, Rule
from brokerauth.policy import PolicyCache
from monitor.models import Client
from tests.conftest import DEVICE_PASSWORD, BrokerClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob(db: None) -> Account:
    """A second device account with the same rights as alice, and its own client ids."""
    account = Account.objects.create_account("bob", DEVICE_PASSWORD)
    Rule.objects.create(account=account, pattern="devices/%c/#", access=Access.ALL)
    return account


@pytest.fixture
def service(db: None, settings: Any) -> Account:
    """The monitor's account (MONITOR_USERNAME), which the service's own client ids are for."""
    return Account.objects.create_account(settings.MONITOR_USERNAME, DEVICE_PASSWORD)


@pytest.fixture
def api(operator: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=operator).key}")
    return client


def login(username: str, clientid: str) -> str | None:
    """None when the login is allowed, else the audited reason."""
    decision = Account.objects.authenticate(username, DEVICE_PASSWORD, clientid)
    return None if decision.allowed else decision.reason


def acl_check(broker: BrokerClient, username: str, clientid: str, topic: str) -> Any:
    fields = {"username": username, "clientid": clientid, "topic": topic, "acc": 2}
    return broker.ask("acl", **fields)


def test_a_client_id_belongs_to_the_first_account_that_uses_it(
    device: Account, bob: Account
) -> None:
    assert login("alice", "dev-1") is None
    assert login("bob", "dev-1") == "client id 'dev-1' is in use by account 'alice'"
    assert login("alice", "dev-1") is None  # its own, again
    assert ClientId.objects.get().account == device


def test_the_ids_the_service_uses_are_reserved_for_its_account(
    device: Account, service: Account, settings: Any
) -> None:
    probe = clientids.probe_id(settings.MONITOR_USERNAME)
    for client_id in (settings.MONITOR_CLIENT_ID, probe):
        reason = login("alice", client_id)
        assert reason is not None and "reserved for the service account" in reason
        assert login(service.username, client_id) is None
    assert not ClientId.objects.exists()  # reserved ids need no claim


def test_ids_the_broker_makes_up_belong_to_nobody(device: Account, bob: Account) -> None:
    assert login("alice", "auto-5E3A6D2C-1F34") is None
    assert login("bob", "auto-5E3A6D2C-1F34") is None
    assert not ClientId.objects.exists()


def test_an_id_too_long_to_own_is_refused(device: Account) -> None:
    assert login("alice", "c" * 256) == "client id longer than 255 characters"
    assert login("alice", "c" * 255) is None


def test_a_prefix_makes_every_id_under_it_the_accounts_own(device: Account, bob: Account) -> None:
    device.edit(client_id_prefix="alice-")
    assert login("alice", "alice-7") is None
    assert login("alice", "pump-1") == "account may only use client ids starting with 'alice-'"
    assert (
        login("bob", "alice-8")
        == "client id 'alice-8' is under the client id prefix of account 'alice'"
    )
    assert not ClientId.objects.filter(client_id="alice-8").exists()


@pytest.mark.parametrize(
    ("prefix", "error"),
    [
        ("bob-", "overlaps 'bob-x', the prefix of account 'bob'"),
        ("bob-x-1", "overlaps 'bob-x', the prefix of account 'bob'"),
        ("mqtt-", "covers client ids the service uses"),
        ("a/b", "contains '/'"),
    ],
)
def test_prefixes_never_overlap_nor_cover_the_services_ids(
    device: Account, bob: Account, prefix: str, error: str
) -> None:
    bob.edit(client_id_prefix="bob-x")
    with pytest.raises(ValidationError, match=error):
        device.edit(client_id_prefix=prefix)


def test_binding_an_id_another_account_uses_is_refused_with_a_way_out(
    device: Account, bob: Account, operator_client: HttpClient
) -> None:
    assert login("bob", "pump-1") is None
    data = {"description": "", "client_id": "pump-1", "is_active": "on"}
    response = operator_client.post(f"/accounts/{device.pk}/edit/", data)
    assert (
        "Client id &#x27;pump-1&#x27; is in use by account &#x27;bob&#x27;. Release it first."
        in (response.content.decode())
    )
    device.refresh_from_db()
    assert device.client_id == ""


def test_a_bound_id_is_claimed_and_cannot_be_released(device: Account, bob: Account) -> None:
    device.edit(client_id="pump-1")
    assert login("bob", "pump-1") == "client id 'pump-1' is in use by account 'alice'"
    with pytest.raises(ValidationError, match="change its binding first"):
        device.release_client_id("pump-1")


def test_an_operator_releases_an_id_for_another_account(
    device: Account, bob: Account, operator_client: HttpClient
) -> None:
    assert login("alice", "dev-1") is None
    page = operator_client.get(f"/accounts/{device.pk}/").content.decode()
    assert "dev-1" in page and 'aria-label="Release dev-1"' in page
    before = Account.objects.get(pk=device.pk).changed_at
    response = operator_client.post(
        f"/accounts/{device.pk}/client-ids/release/", {"client_id": "dev-1"}, follow=True
    )
    assert "Client id dev-1 released" in response.content.decode()
    assert Account.objects.get(pk=device.pk).changed_at > before  # every process forgets it
    assert login("bob", "dev-1") is None


def test_only_staff_release(device: Account, viewer_client: HttpClient) -> None:
    assert login("alice", "dev-1") is None
    response = viewer_client.post(
        f"/accounts/{device.pk}/client-ids/release/", {"client_id": "dev-1"}
    )
    assert response.status_code == 403
    assert ClientId.objects.exists()


def test_the_api_lists_and_releases_client_ids(
    api: APIClient, device: Account, bob: Account
) -> None:
    assert login("alice", "dev-1") is None
    device.edit(client_id="pump-1")
    body = api.get("/api/v1/client-ids/", {"account__username": "alice"}).json()
    claims = {c["client_id"]: c for c in body["results"]}
    assert set(claims) == {"pump-1", "dev-1"}
    assert claims["pump-1"]["bound"] and claims["dev-1"]["account"] == "alice"
    refused = api.delete(f"/api/v1/client-ids/{claims['pump-1']['id']}/")
    assert refused.status_code == 409 and "change its binding first" in str(refused.json())
    assert api.delete(f"/api/v1/client-ids/{claims['dev-1']['id']}/").status_code == 204
    assert login("bob", "dev-1") is None


def test_the_api_and_the_client_page_say_who_owns_a_client_id(
    api: APIClient, operator_client: HttpClient, device: Account, settings: Any
) -> None:
    assert login("alice", "dev-1") is None
    for client_id in ("dev-1", settings.MONITOR_CLIENT_ID, "nobodys"):
        Client.objects.create(client_id=client_id)
    owners = {c["client_id"]: c["owner"] for c in api.get("/api/v1/clients/").json()["results"]}
    assert owners == {
        "dev-1": {"username": "alice", "why": "in use by account"},
        settings.MONITOR_CLIENT_ID: {
            "username": settings.MONITOR_USERNAME,
            "why": "reserved for the service account",
        },
        "nobodys": None,
    }
    page = operator_client.get(f"/clients/{Client.objects.get(client_id='dev-1').pk}/")
    html = page.content.decode()
    assert "In use by account" in html and f'href="/accounts/{device.pk}/"' in html
    assert ">Release</button>" in html


def test_acl_checks_keep_a_binding_that_a_login_cache_would_widen(
    broker: BrokerClient, device: Account
) -> None:
    """go-auth caches logins on (username, password): a bound account's client may reach the
    broker from another client id without Django being asked; its ACL checks are refused."""
    device.edit(client_id="dev-1")
    assert acl_check(broker, "alice", "dev-1", "devices/alice/t").status_code == 200
    refused = acl_check(broker, "alice", "dev-2", "devices/alice/t")
    assert refused.status_code == 403
    assert refused.json()["error"] == "account is bound to client id 'dev-1'"


def test_acl_checks_refuse_another_accounts_client_id(
    broker: BrokerClient, device: Account, bob: Account
) -> None:
    assert login("alice", "dev-1") is None
    refused = acl_check(broker, "bob", "dev-1", "devices/dev-1/t")
    assert refused.json()["error"] == "client id 'dev-1' is in use by account 'alice'"
    assert AuthEvent.objects.get().reason == refused.json()["error"]


def test_an_acl_check_claims_a_free_id_for_the_account_asking(
    broker: BrokerClient, device: Account, bob: Account
) -> None:
    """A login through go-auth's cache reaches Django only as ACL checks."""
    assert acl_check(broker, "alice", "dev-9", "devices/alice/t").status_code == 200
    assert ClientId.objects.get(client_id="dev-9").account == device
    assert acl_check(broker, "bob", "dev-9", "devices/dev-9/t").status_code == 403
    assert login("bob", "dev-9") == "client id 'dev-9' is in use by account 'alice'"


def test_the_explain_page_gives_the_brokers_answer(device: Account, bob: Account) -> None:
    assert login("alice", "dev-1") is None
    decision = Account.objects.explain_acl("bob", "dev-1", "devices/dev-1/t", Access.PUBLISH)
    assert decision.reason == "client id 'dev-1' is in use by account 'alice'"
    assert not ClientId.objects.filter(account=bob).exists()  # explaining claims nothing


@override_settings(POLICY_REFRESH_SECONDS=3600)
def test_steady_state_acl_checks_with_owners_and_prefixes_cost_no_query(
    broker: BrokerClient, device: Account, bob: Account, django_assert_num_queries: Any
) -> None:
    bob.edit(client_id_prefix="bob-")
    assert login("alice", "dev-1") is None
    checks = [("alice", "dev-1", "devices/alice/t"), ("bob", "bob-1", "devices/bob-1/t")]
    for username, clientid, topic in checks:
        assert acl_check(broker, username, clientid, topic).status_code == 200
    with django_assert_num_queries(0):
        for _ in range(10):
            for username, clientid, topic in checks:
                assert acl_check(broker, username, clientid, topic).status_code == 200


def test_a_reconnect_storm_of_new_client_ids_flushes_no_cache(device: Account) -> None:
    """Fresh devices claiming their ids must not make every process re-read the policy:
    claims are no policy change (issue 9: mind the reconnect storm)."""
    secrets = {f"fleet-{i}": Account(username=f"fleet-{i}").save_new() for i in range(100)}
    clock = [1000.0]
    cache = PolicyCache(clock=lambda: clock[0])
    before = cache.lookup("alice")
    assert cache.owner("dev-1", claimant=before) == acl.Owner("alice")
    fingerprint = cache._fingerprint
    for name, secret in secrets.items():
        assert Account.objects.authenticate(name, secret, f"{name}-client").allowed
    assert ClientId.objects.count() == 101
    clock[0] += 10
    with CaptureQueriesContext(connection) as queries:
        assert cache.lookup("alice") is before
        assert cache.owner("dev-1") == acl.Owner("alice")
    assert len(queries) == 1  # the fingerprint, unchanged: nothing was dropped
    assert cache._fingerprint == fingerprint


def test_the_api_answers_a_taken_client_id_with_a_409(
    api: APIClient, device: Account, bob: Account
) -> None:
    """Taken by another account is a conflict with what exists, as a taken username is."""
    assert login("bob", "pump-1") is None
    url = f"/api/v1/accounts/{device.pk}/"
    response = api.patch(url, {"client_id": "pump-1"}, format="json")
    assert response.status_code == 409
    assert response.json() == {
        "client_id": ["Client id 'pump-1' is in use by account 'bob'. Release it first."]
    }
    response = api.patch(url, {"client_id": "bad/id"}, format="json")
    assert response.status_code == 400
