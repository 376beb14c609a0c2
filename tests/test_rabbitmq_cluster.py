"""A real 2-node RabbitMQ 3.10 cluster asking the live Django: MQTT 3.1.1 over TLS."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
from django.test import override_settings

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Rule
from tests.brokers import NOT_AUTHORIZED, wait_for
from tests.conftest import DEVICE_PASSWORD, Connect

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(transaction=True)]

BAD_CREDENTIALS = 0x86  # CONNACK 4 in MQTT 3.1.1, as paho reports it


@pytest.fixture
def bob(db: None) -> Account:
    """Another device, with the same rule on its own topics."""
    account = Account.objects.create_account("bob", DEVICE_PASSWORD)
    Rule.objects.create(account=account, pattern="devices/%u/#", access=Access.ALL)
    return account


@pytest.mark.parametrize("node", [0, 1])
def test_a_device_logs_in_on_either_node(connect: Connect, device: Account, node: int) -> None:
    session = connect("alice", "dev-1", node=node)
    assert session.connected(), session.connack
    event = AuthEvent.objects.get()
    assert (event.kind, event.broker, event.allowed) == ("login", "rabbitmq", True)


def test_a_wrong_password_is_refused(connect: Connect, device: Account) -> None:
    session = connect("alice", "dev-1", password="wrong")
    assert session.connack is not None and session.connack.value == BAD_CREDENTIALS
    assert AuthEvent.objects.get().reason == "wrong password"


def test_a_client_without_credentials_is_refused(connect: Connect, device: Account) -> None:
    # mqtt.allow_anonymous = false: the default would log it in as guest.
    session = connect(None, "anonymous", password=None)
    assert session.connack is not None and session.connack.is_failure


def test_mqtt5_clients_get_no_connack(connect: Connect, device: Account) -> None:
    # RabbitMQ 3.10 speaks MQTT 3.1 and 3.1.1 only: it drops an MQTT 5 CONNECT unanswered.
    session = connect("alice", "dev-1", protocol=mqtt.MQTTv5)
    assert session.connack is None and session.disconnected.is_set()


def test_a_device_publishes_and_receives_on_its_own_topics(
    connect: Connect, device: Account
) -> None:
    session = connect("alice", "dev-1")
    assert session.subscribe("devices/alice/#").value == 1
    session.publish("devices/alice/temp", b"21.5")
    assert session.next_message().topic == "devices/alice/temp"


def test_publishing_on_another_devices_topic_is_refused(
    connect: Connect, device: Account, bob: Account
) -> None:
    watcher = connect("bob", "dev-bob")
    assert watcher.subscribe("devices/bob/#").value == 1
    intruder = connect("alice", "dev-1")
    intruder.client.publish("devices/bob/cmd", b"open", qos=1)
    # No negative PUBACK in MQTT 3.1.1: RabbitMQ closes the connection.
    # (paho then reconnects and sends it again, and again: one denial per round.)
    wait_for(intruder.disconnected.is_set, 10, "the intruder's connection closed")
    intruder.client.loop_stop()
    assert watcher.no_message(0.5)
    event = AuthEvent.objects.filter(allowed=False).first()
    assert event is not None
    assert (event.broker, event.topic, event.access) == ("rabbitmq", "devices/bob/cmd", 2)


def test_subscribing_to_another_devices_topic_is_refused(
    connect: Connect, device: Account, bob: Account
) -> None:
    session = connect("alice", "dev-1")
    session.client.subscribe("devices/bob/#", qos=1)
    # Nor a failed SUBACK: the connection is closed.
    wait_for(session.disconnected.is_set, 10, "the connection closed")
    session.client.loop_stop()
    event = AuthEvent.objects.filter(allowed=False).first()
    assert event is not None and event.topic == "devices/bob/#"


def test_a_message_published_on_one_node_is_delivered_on_the_other(
    connect: Connect, device: Account, bob: Account
) -> None:
    for access in (Access.SUBSCRIBE, Access.RECEIVE):
        Rule.objects.create(account=device, pattern="devices/+/temp", access=access)
    subscriber = connect("alice", "dev-1", node=1)
    assert subscriber.subscribe("devices/+/temp").value == 1
    publisher = connect("bob", "dev-bob", node=0)
    publisher.publish("devices/bob/temp", b"19.0")
    message = subscriber.expect(b"19.0")
    assert (message.topic, message.qos) == ("devices/bob/temp", 1)


def test_a_broker_without_the_secret_is_refused(connect: Connect, device: Account) -> None:
    with override_settings(MQTT_AUTH_SECRET="not the one the cluster has"):
        session = connect("alice", "dev-1")
    assert session.connack is not None and session.connack.value == BAD_CREDENTIALS
    assert not AuthEvent.objects.exists()  # refused at the fence, before any decision


@override_settings(MQTT_AUTH_ALLOWED_NETS=["10.0.0.0/8"])
def test_a_broker_outside_the_allowed_networks_is_refused(
    connect: Connect, device: Account
) -> None:
    session = connect("alice", "dev-1")
    assert session.connack is not None and session.connack.value in (
        BAD_CREDENTIALS,
        NOT_AUTHORIZED,
    )
    assert not AuthEvent.objects.exists()
