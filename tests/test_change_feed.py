"""The change feed the project's plugin follows (GET /mqtt/auth/changes): its answers, its
hold, its fence, and the notes every policy write path leaves in it."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client as HttpClient
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from brokerauth.acl import Access
from brokerauth.models import Account, Change, ClientId, Follower, Group, Rule
from monitor.models import Client as MqttClient
from tests.conftest import BrokerClient, basic_auth

pytestmark = pytest.mark.django_db


def poll(broker: BrokerClient, query: str = "") -> Any:
    response = broker.get(f"/mqtt/auth/changes{query}")
    assert response.status_code == 200, response.content
    return response.json()


def newest() -> int:
    return Change.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def notes_since(seq: int) -> list[tuple[str, str, str, bool]]:
    rows = Change.objects.filter(seq__gt=seq).order_by("seq")
    return [(c.scope, c.username, c.client_id, c.kick) for c in rows]


@pytest.fixture
def api(operator: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


def test_without_a_seq_the_follower_resets(broker: BrokerClient, device: Account) -> None:
    answer = poll(broker)
    assert answer["reset"] is True and answer["changes"] == []
    assert answer["seq"] == newest() > 0
    assert answer["settle"] == pytest.approx(1.0)


def test_it_lists_what_changed_after_the_seq(broker: BrokerClient, device: Account) -> None:
    seq = poll(broker)["seq"]
    device.set_active(False)
    answer = poll(broker, f"?after={seq}")
    assert answer["reset"] is False
    assert answer["changes"] == [
        {
            "seq": seq + 1,
            "scope": "account",
            "username": "alice",
            "client_id": "",
            "kick": True,
            "why": "account disabled",
        }
    ]
    assert answer["seq"] == seq + 1
    assert poll(broker, f"?after={seq + 1}")["changes"] == []


def test_with_nothing_new_it_holds_the_request_then_answers_empty(
    broker: BrokerClient, device: Account
) -> None:
    seq = newest()
    started = time.monotonic()
    with override_settings(CHANGE_FEED_POLL_SECONDS=0.05):
        answer = poll(broker, f"?after={seq}&wait=0.3")
    assert time.monotonic() - started >= 0.3
    assert answer == {"seq": seq, "reset": False, "settle": 1.0, "changes": []}


def test_the_wait_is_capped(broker: BrokerClient, device: Account) -> None:
    started = time.monotonic()
    with override_settings(CHANGE_FEED_MAX_WAIT=0.2, CHANGE_FEED_POLL_SECONDS=0.05):
        poll(broker, f"?after={newest()}&wait=3600")
    assert time.monotonic() - started < 2


def test_a_seq_from_elsewhere_or_pruned_resets(broker: BrokerClient, device: Account) -> None:
    seq = newest()
    assert poll(broker, f"?after={seq + 100}")["reset"] is True
    device.set_active(False)
    device.set_active(True)
    Change.objects.update(created_at=timezone.now() - timedelta(days=2))
    call_command("prune_audit", stdout=open("/dev/null", "w"))  # noqa: SIM115
    assert list(Change.objects.values_list("seq", flat=True)) == [seq + 2]  # the newest stays
    pruned = poll(broker, f"?after={seq}")  # what is kept comes along, for its kicks
    assert pruned["reset"] is True and [c["seq"] for c in pruned["changes"]] == [seq + 2]
    assert poll(broker, f"?after={seq + 1}") == {
        "seq": seq + 2,
        "reset": False,
        "settle": 1.0,
        "changes": [Change.objects.get().as_wire()],
    }


@pytest.mark.parametrize("query", ["?after=x", "?after=-1", "?wait=soon", "?wait=nan", "?wait=-1"])
def test_bad_queries_are_a_400(broker: BrokerClient, query: str) -> None:
    assert broker.get(f"/mqtt/auth/changes{query}").status_code == 400


def test_it_answers_only_the_broker(device: Account) -> None:
    assert HttpClient().get("/mqtt/auth/changes").status_code == 403
    wrong = HttpClient(HTTP_AUTHORIZATION=basic_auth("wrong"))
    assert wrong.get("/mqtt/auth/changes").status_code == 403
    stranger = BrokerClient(REMOTE_ADDR="203.0.113.9")
    assert stranger.get("/mqtt/auth/changes").status_code == 403


def test_it_never_redirects(broker: BrokerClient) -> None:
    assert broker.get("/mqtt/auth/changes/").status_code == 200


def test_each_poll_records_its_follower(broker: BrokerClient, device: Account) -> None:
    poll(broker, "?name=broker-a")
    poll(BrokerClient(HTTP_USER_AGENT="mosquitto-2.0.11"))
    followers = {f.name: f for f in Follower.objects.live()}
    assert set(followers) == {"broker-a", "127.0.0.1"}
    assert followers["127.0.0.1"].user_agent == "mosquitto-2.0.11"
    assert followers["broker-a"].seq == newest()
    Follower.objects.update(polled_at=timezone.now() - timedelta(minutes=5))
    assert not Follower.objects.live().exists()


# -- the notes of every write path ---------------------------------------------------------------


def test_account_methods_note_what_they_change(device: Account) -> None:
    seq = newest()
    device.set_active(False)
    device.set_active(True)
    device.change_password("another horse battery staple")
    device.reset_password()
    device.edit(description="pump")
    device.edit(username="alice2")
    assert notes_since(seq) == [
        ("account", "alice", "", True),
        ("account", "alice", "", False),
        ("account", "alice", "", True),
        ("account", "alice", "", True),
        ("account", "alice", "", False),
        ("account", "alice", "", True),
        ("account", "alice2", "", False),
    ]
    seq = newest()
    Account.objects.create_account("bob", "a fine password to pass")
    device.remove()
    assert notes_since(seq) == [("account", "bob", "", False), ("account", "alice2", "", True)]


def test_a_released_client_id_is_noted(device: Account) -> None:
    ClientId.objects.claim("pump-1", account_id=device.pk, username="alice")
    seq = newest()
    device.release_client_id("pump-1")
    assert notes_since(seq) == [("client", "alice", "pump-1", False)]


def test_ui_rule_and_group_changes_are_noted(operator_client: HttpClient, device: Account) -> None:
    seq = newest()
    operator_client.post("/groups/new/", {"name": "pumps"})
    group = Group.objects.get(name="pumps")
    operator_client.post(f"/groups/{group.pk}/members/", {"username": "alice"})
    operator_client.post(
        f"/groups/{group.pk}/rules/new/", {"pattern": "p/#", "access": 1, "priority": 0}
    )
    rule = Rule.objects.get(pattern="p/#")
    operator_client.post(f"/rules/{rule.pk}/delete/")
    operator_client.post(f"/groups/{group.pk}/members/{device.pk}/remove/")
    operator_client.post(f"/groups/{group.pk}/delete/")
    assert [note[0] for note in notes_since(seq)] == ["all"] * 6


def test_ui_account_changes_are_noted(operator_client: HttpClient, device: Account) -> None:
    seq = newest()
    operator_client.post(f"/accounts/{device.pk}/active/", {"active": "0"})
    operator_client.post(f"/accounts/{device.pk}/reset-password/")
    assert notes_since(seq) == [("account", "alice", "", True)] * 2


def test_api_changes_are_noted(api: APIClient, device: Account) -> None:
    seq = newest()
    api.patch(f"/api/v1/accounts/{device.pk}/", {"is_active": False}, format="json")
    api.post(f"/api/v1/accounts/{device.pk}/set-password/", {"password": "yet another fine one"})
    response = api.post("/api/v1/rules/", {"account": "alice", "pattern": "a", "access": 1})
    assert response.status_code == 201, response.content
    api.delete(f"/api/v1/rules/{response.json()['id']}/")
    api.delete(f"/api/v1/accounts/{device.pk}/")
    notes = notes_since(seq)
    assert ("account", "alice", "", True) in notes[:2]
    assert notes[-4:] == [
        ("account", "alice", "", True),  # password set
        ("all", "", "", False),
        ("all", "", "", False),
        ("account", "alice", "", True),  # deleted
    ]


def test_admin_changes_are_noted(operator_client: HttpClient, device: Account) -> None:
    rule = Rule.objects.create(account=device, pattern="x/#", access=Access.ALL)
    seq = newest()
    operator_client.post(f"/admin/brokerauth/rule/{rule.pk}/delete/", {"post": "yes"})
    operator_client.post(f"/admin/brokerauth/account/{device.pk}/delete/", {"post": "yes"})
    assert notes_since(seq) == [("all", "", "", False), ("account", "alice", "", True)]


# -- Disconnect -------------------------------------------------------------------------------


def test_the_api_disconnect_notes_a_kick_and_is_audited(api: APIClient, operator: Any) -> None:
    response = api.post("/api/v1/clients/disconnect/", {"client_id": "pump-7"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["client_id"] == "pump-7" and body["followers"] == 0
    assert "needs the project's Mosquitto plugin" in body["detail"]
    assert notes_since(body["seq"] - 1) == [("client", "", "pump-7", True)]
    action = api.get("/api/v1/operator-actions/").json()["results"][0]
    assert action["user"] == "operator" and "Disconnected client pump-7." in str(action)


def test_only_staff_may_disconnect(viewer_client: HttpClient, sensor: MqttClient) -> None:
    viewer = APIClient()
    viewer.force_authenticate(User.objects.get(username="viewer"))
    response = viewer.post("/api/v1/clients/disconnect/", {"client_id": "x"}, format="json")
    assert response.status_code == 403
    assert viewer_client.post(f"/clients/{sensor.pk}/disconnect/").status_code == 403
    page = viewer_client.get(f"/clients/{sensor.pk}/").content.decode()
    assert "Disconnect</button>" not in page
    assert not Change.objects.filter(kick=True, scope="client").exists()


def test_the_client_page_says_whether_a_disconnect_reaches_a_broker(
    operator_client: HttpClient, sensor: MqttClient, broker: BrokerClient
) -> None:
    page = operator_client.get(f"/clients/{sensor.pk}/").content.decode()
    assert "Disconnect</button>" in page and "go-auth cannot follow it" in page
    poll(broker, "?name=mosquitto-1")
    page = operator_client.get(f"/clients/{sensor.pk}/").content.decode()
    assert "Reaches 1 broker(s) that follow the change feed: mosquitto-1." in page


def test_the_client_page_button_notes_a_kick_and_is_audited(
    operator_client: HttpClient, sensor: MqttClient
) -> None:
    response = operator_client.post(f"/clients/{sensor.pk}/disconnect/")
    assert response.status_code == 302
    assert Change.objects.filter(scope="client", client_id="sensor-1", kick=True).exists()
    assert operator_client.get(f"/clients/{sensor.pk}/disconnect/").status_code == 405
    page = operator_client.get("/audit/operators/").content.decode()
    assert "Disconnected client sensor-1." in page
