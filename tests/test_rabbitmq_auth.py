"""Contract tests: RabbitMQ 3.10's auth_http requests (as seen on the wire) and its answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.test import Client, override_settings

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Rule
from brokerauth.rabbitmq import mqtt_topic
from monitor.account import ensure_rules
from tests.conftest import DEVICE_PASSWORD, BrokerClient, basic_auth

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"


class RabbitClient(Client):
    """Speaks to /mqtt/auth/rabbitmq/ as rabbitmq_auth_backend_http does: a form POST with
    the URL's credentials as Basic auth, and no user agent."""

    def __init__(self, **defaults: Any) -> None:
        defaults.setdefault("HTTP_AUTHORIZATION", basic_auth())
        super().__init__(**defaults)

    def ask(self, path: str, **fields: str) -> Any:
        return self.post(f"/mqtt/auth/rabbitmq/{path}", urlencode(fields), content_type=FORM)


def login(**fields: str) -> dict[str, str]:
    sent = {"username": "alice", "password": DEVICE_PASSWORD, "vhost": "/", "client_id": "dev-1"}
    return {**sent, **fields}


def vhost(**fields: str) -> dict[str, str]:
    sent = {"username": "alice", "vhost": "/", "ip": "127.0.0.1", "tags": "", "client_id": "dev-1"}
    return {**sent, **fields}


def resource(kind: str, name: str, permission: str, client_id: str = "dev-1") -> dict[str, str]:
    return {
        "username": "alice",
        "vhost": "/",
        "resource": kind,
        "name": name,
        "permission": permission,
        "tags": "",
        "client_id": client_id,
    }


def topic(routing_key: str, permission: str, username: str = "alice") -> dict[str, str]:
    return {
        "username": username,
        "vhost": "/",
        "resource": "topic",
        "name": "amq.topic",
        "permission": permission,
        "tags": "",
        "routing_key": routing_key,
        "variable_map.client_id": "dev-1",
        "variable_map.username": username,
        "variable_map.vhost": "/",
    }


def answer(response: Any) -> str:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return str(response.content.decode())


@pytest.fixture
def rabbitmq() -> RabbitClient:
    return RabbitClient()


def test_a_login_with_the_right_password_is_allowed_without_tags(
    rabbitmq: RabbitClient, device: Account
) -> None:
    assert answer(rabbitmq.ask("user", **login())) == "allow"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"password": "wrong"}, "wrong password"),
        ({"username": "nobody"}, "unknown account"),
        ({"client_id": ""}, "no MQTT client id: only MQTT clients and the monitor log in here"),
    ],
)
def test_refused_logins_answer_deny_and_are_audited_as_rabbitmq(
    rabbitmq: RabbitClient, device: Account, fields: dict[str, str], reason: str
) -> None:
    # Exactly "deny": RabbitMQ 3.10 reads anything else as an error.
    assert answer(rabbitmq.ask("user", **login(**fields))) == "deny"
    event = AuthEvent.objects.get()
    assert (event.kind, event.broker, event.allowed, event.reason) == (
        "login",
        "rabbitmq",
        False,
        reason,
    )


def test_a_login_without_the_client_id_field_is_refused(
    rabbitmq: RabbitClient, device: Account
) -> None:
    fields = login()
    del fields["client_id"]
    assert answer(rabbitmq.ask("user", **fields)) == "deny"


def test_a_bound_client_id_is_enforced(rabbitmq: RabbitClient, device: Account) -> None:
    device.client_id = "dev-1"
    device.save()
    assert answer(rabbitmq.ask("user", **login(client_id="other"))) == "deny"
    assert answer(rabbitmq.ask("user", **login())) == "allow"


def test_only_the_mqtt_vhost_is_allowed(rabbitmq: RabbitClient, device: Account) -> None:
    assert answer(rabbitmq.ask("vhost", **vhost())) == "allow"
    assert answer(rabbitmq.ask("vhost", **vhost(vhost="billing"))) == "deny"
    assert answer(rabbitmq.ask("vhost", **vhost(username="nobody"))) == "deny"
    with override_settings(RABBITMQ_VHOST="mqtt"):
        assert answer(rabbitmq.ask("vhost", **vhost(vhost="mqtt"))) == "allow"
    kinds = set(AuthEvent.objects.values_list("kind", "broker"))
    assert kinds == {("vhost", "rabbitmq")}


@pytest.mark.parametrize("permission", ["configure", "write", "read"])
@pytest.mark.parametrize("queue", ["mqtt-subscription-dev-1qos0", "mqtt-subscription-dev-1qos1"])
def test_the_clients_own_subscription_queues_are_allowed(
    rabbitmq: RabbitClient, device: Account, queue: str, permission: str
) -> None:
    assert answer(rabbitmq.ask("resource", **resource("queue", queue, permission))) == "allow"


@pytest.mark.parametrize(
    ("kind", "name", "permission"),
    [
        ("queue", "mqtt-subscription-dev-2qos1", "read"),
        ("queue", "orders", "configure"),
        ("exchange", "amq.topic", "configure"),
        ("exchange", "amq.direct", "write"),
        ("exchange", "amq.rabbitmq.event", "read"),
    ],
)
def test_other_resources_are_denied(
    rabbitmq: RabbitClient, device: Account, kind: str, name: str, permission: str
) -> None:
    assert answer(rabbitmq.ask("resource", **resource(kind, name, permission))) == "deny"
    assert AuthEvent.objects.get().kind == "resource"


def test_a_session_without_client_id_has_no_queue(rabbitmq: RabbitClient, device: Account) -> None:
    queue = resource("queue", "mqtt-subscription-qos1", "read", client_id="")
    assert answer(rabbitmq.ask("resource", **queue)) == "deny"


@pytest.mark.parametrize("permission", ["read", "write"])
def test_the_mqtt_exchange_is_allowed(
    rabbitmq: RabbitClient, device: Account, permission: str
) -> None:
    allowed = rabbitmq.ask("resource", **resource("exchange", "amq.topic", permission))
    assert answer(allowed) == "allow"


def test_a_disabled_account_gets_no_resources(rabbitmq: RabbitClient, device: Account) -> None:
    device.is_active = False
    device.save()
    exchange = resource("exchange", "amq.topic", "write")
    assert answer(rabbitmq.ask("resource", **exchange)) == "deny"


def test_routing_keys_are_read_back_as_mqtt_topics() -> None:
    assert mqtt_topic("devices.alice.temp") == "devices/alice/temp"
    assert mqtt_topic("devices.*.temp") == "devices/+/temp"
    assert mqtt_topic("devices.alice.#") == "devices/alice/#"
    assert mqtt_topic(".lead..gap") == "/lead//gap"


@pytest.mark.parametrize(
    ("routing_key", "permission", "verdict"),
    [
        ("devices.alice.temp", "write", "allow"),
        ("devices.bob.temp", "write", "deny"),
        ("devices.alice.#", "read", "allow"),
        ("devices.alice.*.temp", "read", "allow"),
        ("devices.#", "read", "deny"),
        ("devices.*.temp", "read", "deny"),
        # An MQTT topic with a '*' level is a wildcard to RabbitMQ: never a topic name.
        ("devices.alice.*", "write", "deny"),
    ],
)
def test_topic_permissions_follow_the_rules(
    rabbitmq: RabbitClient, device: Account, routing_key: str, permission: str, verdict: str
) -> None:
    assert answer(rabbitmq.ask("topic", **topic(routing_key, permission))) == verdict


def test_a_dot_inside_a_level_is_a_level_to_rabbitmq(
    rabbitmq: RabbitClient, device: Account
) -> None:
    # A device "alice" publishing devices/alice.x/t sends the key devices.alice.x.t, which
    # RabbitMQ delivers as devices/alice/x/t: inside alice's own topics.
    assert answer(rabbitmq.ask("topic", **topic("devices.alice.x.t", "write"))) == "allow"
    # An account whose name has a dot gets nothing from %u: its levels would be another's.
    dotted = Account.objects.create_account("alice.x", DEVICE_PASSWORD)
    Rule.objects.create(account=dotted, pattern="devices/%u/#", access=Access.ALL)
    refused = topic("devices.alice.x.t", "write", username="alice.x")
    assert answer(rabbitmq.ask("topic", **refused)) == "deny"


def test_a_subscription_needs_receive_too(rabbitmq: RabbitClient, device: Account) -> None:
    Rule.objects.create(account=device, pattern="news/#", access=Access.SUBSCRIBE)
    assert answer(rabbitmq.ask("topic", **topic("news.#", "read"))) == "deny"
    event = AuthEvent.objects.get()
    assert (event.broker, event.topic, event.access) == ("rabbitmq", "news/#", 4)
    assert event.reason == "receive no rule matched, checked at subscribe"
    # Mosquitto asks about each delivery, so there the subscription itself is allowed.
    acl = {"username": "alice", "clientid": "dev-1", "topic": "news/#", "acc": 4}
    assert BrokerClient().ask("acl", **acl).status_code == 200


def test_topics_of_other_exchanges_or_vhosts_are_denied(
    rabbitmq: RabbitClient, device: Account
) -> None:
    other_exchange = {**topic("devices.alice.t", "write"), "name": "amq.match"}
    other_vhost = {**topic("devices.alice.t", "write"), "vhost": "billing"}
    assert answer(rabbitmq.ask("topic", **other_exchange)) == "deny"
    assert answer(rabbitmq.ask("topic", **other_vhost)) == "deny"


def test_a_steady_topic_check_runs_no_query(
    rabbitmq: RabbitClient, device: Account, django_assert_num_queries: Any
) -> None:
    rabbitmq.ask("topic", **topic("devices.alice.t", "write"))
    with django_assert_num_queries(0):
        assert answer(rabbitmq.ask("topic", **topic("devices.alice.t", "write"))) == "allow"


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("user", {"username": "alice"}),
        ("resource", resource("queue", "q", "delete")),
        ("topic", topic("devices.alice.t", "configure")),
        ("topic", {**topic("devices.alice.t", "write"), "username": "a\0"}),
    ],
)
def test_malformed_requests_are_a_400(
    rabbitmq: RabbitClient, device: Account, path: str, fields: dict[str, str]
) -> None:
    assert rabbitmq.ask(path, **fields).status_code == 400


def test_get_is_refused_since_it_puts_the_password_in_the_url(
    rabbitmq: RabbitClient, device: Account
) -> None:
    response = rabbitmq.get("/mqtt/auth/rabbitmq/user", login())
    assert response.status_code == 400
    assert "auth_http.http_method = post" in response.json()["error"]


@pytest.mark.parametrize(
    "header", ["", basic_auth(secret="wrong"), basic_auth(user="someone"), "Basic !!"]
)
def test_callers_without_the_secret_are_refused(device: Account, header: str) -> None:
    response = RabbitClient(HTTP_AUTHORIZATION=header).ask("user", **login())
    assert response.status_code == 403  # an error to RabbitMQ: the client is refused


@override_settings(MQTT_AUTH_ALLOWED_NETS=["10.0.0.0/8"])
def test_callers_outside_the_allowed_networks_are_refused(device: Account) -> None:
    assert RabbitClient().ask("topic", **topic("devices.alice.t", "write")).status_code == 403
    inside = RabbitClient(REMOTE_ADDR="10.1.2.3")
    assert answer(inside.ask("topic", **topic("devices.alice.t", "write"))) == "allow"


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("user", login()),
        ("vhost", vhost()),
        ("resource", resource("exchange", "amq.topic", "write")),
        ("topic", topic("devices.alice.t", "write")),
    ],
)
def test_the_endpoints_never_redirect(
    rabbitmq: RabbitClient, device: Account, path: str, fields: dict[str, str]
) -> None:
    response = rabbitmq.post(f"/mqtt/auth/rabbitmq/{path}/", urlencode(fields), content_type=FORM)
    assert answer(response) == "allow"


def test_database_trouble_is_a_503(
    rabbitmq: RabbitClient, device: Account, database_outage: Callable[[], Any]
) -> None:
    with database_outage():
        assert rabbitmq.ask("user", **login()).status_code == 503
        assert rabbitmq.ask("topic", **topic("devices.alice.t", "write")).status_code == 503


# -- the monitor's AMQP connection (monitor/amqp.py) ---------------------------------------


@pytest.fixture
def monitor(db: None) -> Account:
    account = Account.objects.create_account(settings.MONITOR_USERNAME, "monitor secret")
    ensure_rules(account)
    return account


def as_monitor(fields: dict[str, str]) -> dict[str, str]:
    changed = {**fields, "username": settings.MONITOR_USERNAME, "client_id": ""}
    if "variable_map.client_id" in changed:
        changed["variable_map.client_id"] = ""
        changed["variable_map.username"] = settings.MONITOR_USERNAME
    return changed


def test_the_monitor_logs_in_without_a_client_id_with_the_monitoring_tag(
    rabbitmq: RabbitClient, monitor: Account
) -> None:
    fields = login(username=settings.MONITOR_USERNAME, password="monitor secret", client_id="")
    assert answer(rabbitmq.ask("user", **fields)) == "allow monitoring"
    fields["password"] = "wrong"
    assert answer(rabbitmq.ask("user", **fields)) == "deny"


@pytest.mark.parametrize("permission", ["configure", "write", "read"])
def test_the_monitors_queues_are_its_own(
    rabbitmq: RabbitClient, device: Account, monitor: Account, permission: str
) -> None:
    queue = resource("queue", "mqtt-service.telemetry", permission)
    assert answer(rabbitmq.ask("resource", **as_monitor(queue))) == "allow"
    assert answer(rabbitmq.ask("resource", **queue)) == "deny"
    other = as_monitor(resource("queue", "mqtt-subscription-dev-1qos1", permission))
    assert answer(rabbitmq.ask("resource", **other)) == "deny"


def test_only_the_monitor_binds_to_connection_events(
    rabbitmq: RabbitClient, device: Account, monitor: Account
) -> None:
    exchange = resource("exchange", "amq.rabbitmq.event", "read")
    assert answer(rabbitmq.ask("resource", **as_monitor(exchange))) == "allow"
    assert answer(rabbitmq.ask("resource", **exchange)) == "deny"
    events = {**topic("connection.*", "read"), "name": "amq.rabbitmq.event"}
    assert answer(rabbitmq.ask("topic", **as_monitor(events))) == "allow"
    assert answer(rabbitmq.ask("topic", **events)) == "deny"


def test_the_monitor_binds_telemetry_under_its_rules(
    rabbitmq: RabbitClient, monitor: Account
) -> None:
    binding = as_monitor(topic("devices.*.telemetry", "read"))
    assert answer(rabbitmq.ask("topic", **binding)) == "allow"
    assert answer(rabbitmq.ask("topic", **as_monitor(topic("billing.#", "read")))) == "deny"
