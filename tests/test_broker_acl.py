"""Publish, subscribe and delivery rights through a real Mosquitto asking the live Django."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Group, Rule
from tests.brokers import (
    NOT_AUTHORIZED,
    SUBACK_FAILURE,
    Broker,
    MqttSession,
    change_bound,
    wait_for,
)
from tests.conftest import DEVICE_PASSWORD

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

PROTOCOLS = pytest.mark.parametrize(
    "protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"]
)
# A negative check ("nothing arrives") can only wait: keep it short.
QUIET = 0.5
Connect = Callable[..., MqttSession]


def accepted(reason: ReasonCode | None) -> bool:
    """A PUBACK without failure: 0x00, or 0x10 "no matching subscribers" on MQTT 5."""
    return reason is not None and not reason.is_failure


@pytest.fixture
def connect(mosquitto: Broker) -> Iterator[Connect]:
    opened: list[MqttSession] = []

    def connect(username: str, client_id: str, protocol: int = mqtt.MQTTv5) -> MqttSession:
        session = mosquitto.session(username, DEVICE_PASSWORD, client_id, protocol=protocol)
        opened.append(session)
        session.connect(timeout=8)
        assert session.connected(), session.connack
        return session

    yield connect
    for session in opened:
        session.close()


@pytest.fixture
def watcher(connect: Connect, superuser_account: Account) -> MqttSession:
    """A superuser subscribed to everything: what the broker let through."""
    session = connect("root", "watcher")
    assert session.subscribe("#").value == 1
    return session


@PROTOCOLS
def test_a_device_publishes_and_receives_in_its_own_tree(
    connect: Connect, device: Account, protocol: int
) -> None:
    alice = connect("alice", "alice-1", protocol)
    assert alice.subscribe("devices/alice/#").value == 1
    assert alice.publish("devices/alice/temp", "21.5").value == 0
    assert alice.expect("21.5", timeout=5).topic == "devices/alice/temp"


def test_a_publish_outside_its_topics_gets_puback_not_authorised(
    connect: Connect, device: Account, watcher: MqttSession
) -> None:
    alice = connect("alice", "alice-1")
    # devices/%u/# became devices/alice/#: the neighbour's tree is out of reach.
    assert alice.publish("devices/mallory/temp", "forged").value == NOT_AUTHORIZED
    assert alice.publish("elsewhere", "forged").value == NOT_AUTHORIZED
    assert alice.publish("devices/alice/temp", "mine").value == 0
    assert watcher.next_message(5).payload == b"mine"


def test_on_mqtt311_a_refused_publish_is_acked_but_never_delivered(
    connect: Connect, device: Account, watcher: MqttSession
) -> None:
    alice = connect("alice", "alice-1", mqtt.MQTTv311)
    assert alice.publish("devices/mallory/temp", "forged").value == 0  # 3.1.1 has no reason
    alice.publish("devices/alice/temp", "mine")
    # Messages from one publisher arrive in order: "mine" first means "forged" was dropped.
    assert watcher.next_message(5).payload == b"mine"


@PROTOCOLS
def test_subscribe_outside_its_topics_gets_a_suback_failure(
    connect: Connect, device: Account, protocol: int
) -> None:
    alice = connect("alice", "alice-1", protocol)
    refused = NOT_AUTHORIZED if protocol == mqtt.MQTTv5 else SUBACK_FAILURE
    assert alice.subscribe("devices/alice/+/temp").value == 1
    assert alice.subscribe("devices/+/temp").value == refused
    assert alice.subscribe("#").value == refused
    assert alice.subscribe("$SYS/#").value == refused


def test_an_account_without_rules_may_do_nothing(
    connect: Connect, device_without_rights: Account, watcher: MqttSession
) -> None:
    mallory = connect("mallory", "mallory-1")
    assert mallory.subscribe("devices/mallory/#").value == NOT_AUTHORIZED
    assert mallory.publish("devices/mallory/temp", "x").value == NOT_AUTHORIZED
    assert watcher.no_message(QUIET)


def test_group_rules_with_client_id_apply_and_leaving_the_group_revokes_them(
    connect: Connect, device: Account, sensors: Group, superuser_account: Account
) -> None:
    alice = connect("alice", "dev-1")
    # commands/%c became commands/dev-1 for this client id only.
    assert alice.subscribe("commands/dev-1").value == 1
    assert alice.subscribe("commands/dev-2").value == NOT_AUTHORIZED
    root = connect("root", "root-1")
    root.publish("commands/dev-1", "reboot")
    assert alice.expect("reboot", timeout=5).topic == "commands/dev-1"

    sensors.memberships.filter(account=device).delete()
    wait_for(
        lambda: alice.subscribe("commands/dev-1").value == NOT_AUTHORIZED,
        change_bound(),
        "the group's rights revoked on the broker",
    )


def test_a_superuser_may_do_everything(
    connect: Connect, device: Account, superuser_account: Account
) -> None:
    root = connect("root", "root-1")
    assert root.subscribe("#").value == 1
    # Not $SYS/#: every delivery is an ACL check over HTTP, and $SYS changes every second.
    assert root.subscribe("$SYS/broker/version").value == 1
    assert root.next_message(5).payload.startswith(b"mosquitto version")
    assert root.publish("anything/at/all", "hello").value == 0
    assert root.expect("hello", timeout=5).topic == "anything/at/all"
    alice = connect("alice", "alice-1")
    alice.publish("devices/alice/temp", "from alice")
    assert root.expect("from alice", timeout=5).topic == "devices/alice/temp"


def test_a_deny_rule_overrides_an_allow_at_equal_priority(
    connect: Connect, device: Account, watcher: MqttSession
) -> None:
    Rule.objects.create(
        account=device,
        pattern="devices/%u/secret/#",
        access=Access.PUBLISH,
        allow=False,
    )
    alice = connect("alice", "alice-1")
    assert alice.publish("devices/alice/secret/key", "leak").value == NOT_AUTHORIZED
    assert alice.publish("devices/alice/open", "fine").value == 0
    assert watcher.next_message(5).payload == b"fine"


def test_a_new_rule_and_its_removal_reach_the_broker_within_the_bound(
    connect: Connect, device: Account
) -> None:
    alice = connect("alice", "alice-1")
    assert alice.publish("shared/news", "x").value == NOT_AUTHORIZED
    rule = Rule.objects.create(account=device, pattern="shared/#", access=Access.PUBLISH)
    wait_for(lambda: accepted(alice.publish("shared/news", "x")), change_bound(), "the new rule")
    rule.delete()
    wait_for(
        lambda: alice.publish("shared/news", "x").value == NOT_AUTHORIZED,
        change_bound(),
        "the rule's removal",
    )


def test_a_subscriber_whose_receive_right_is_removed_gets_nothing_more(
    connect: Connect, device: Account, superuser_account: Account
) -> None:
    bob = Account.objects.create_account("bob", DEVICE_PASSWORD)
    rule = Rule.objects.create(account=bob, pattern="news/#", access=Access.ALL)
    bob_session = connect("bob", "bob-1")
    assert bob_session.subscribe("news/#").value == 1
    control = connect("root", "control")
    assert control.subscribe("news/#").value == 1
    publisher = connect("root", "publisher")
    publisher.publish("news/today", "before")
    bob_session.expect("before", timeout=5)
    control.expect("before", timeout=5)

    rule.access = Access.SUBSCRIBE  # still subscribed, no longer allowed to receive
    rule.save()
    probes = count()

    def delivery_refused() -> bool:
        probe = f"probe-{next(probes)}"
        publisher.publish("news/today", probe)
        control.expect(probe, timeout=5)
        return AuthEvent.objects.filter(username="bob", access=1, allowed=False).exists()

    wait_for(delivery_refused, change_bound(), "the broker asking Django and being refused")
    bob_session.drain()
    publisher.publish("news/today", "after")
    control.expect("after", timeout=5)
    assert bob_session.no_message(QUIET)
