"""The client-id takeover of issue 9, through a real Mosquitto and its plugin: a device that
connects with the monitor's client id, or with a live device's, is refused; the victim stays
connected and its queued QoS 1 messages are intact."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Rule
from monitor import account as monitor_account
from tests.brokers import NOT_AUTHORIZED, Broker, MqttSession
from tests.conftest import DEVICE_PASSWORD

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


def kept_session() -> Properties:
    """MQTT 5: keep the session (and its queue) for an hour after the connection ends."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    return properties


def connect(broker: Broker, username: str, client_id: str, clean_start: bool = True) -> MqttSession:
    session = broker.session(username, DEVICE_PASSWORD, client_id)
    session.connect(timeout=8, properties=kept_session(), clean_start=clean_start)
    return session


def refused(session: MqttSession) -> bool:
    return session.connack is not None and session.connack.value == NOT_AUTHORIZED


@pytest.fixture
def mallory(db: None) -> Account:
    """An attacker holding one ordinary device credential, with the usual rights."""
    account = Account.objects.create_account("mallory", DEVICE_PASSWORD)
    Rule.objects.create(account=account, pattern="devices/%u/#", access=Access.ALL)
    return account


def test_nobody_takes_the_monitors_client_id_nor_its_queued_telemetry(
    mosquitto: Broker, device: Account, mallory: Account, settings: Any
) -> None:
    service = Account.objects.create_account(settings.MONITOR_USERNAME, DEVICE_PASSWORD)
    monitor_account.ensure_rules(service)
    monitor_id = settings.MONITOR_CLIENT_ID
    monitor = connect(mosquitto, service.username, monitor_id, clean_start=False)
    assert monitor.connected()
    assert not monitor.subscribe("devices/+/telemetry", qos=1).is_failure
    alice = connect(mosquitto, "alice", "alice-1")
    for clean_start in (True, False):
        assert refused(connect(mosquitto, "mallory", monitor_id, clean_start=clean_start))
    assert not monitor.disconnected.is_set()
    alice.publish("devices/alice/telemetry", "while connected")
    assert monitor.expect("while connected", timeout=5)

    monitor.close()  # away, its session kept: what alice publishes now is queued for it
    for i in range(5):
        assert not alice.publish("devices/alice/telemetry", f"queued {i}").is_failure
    for clean_start in (False, True):
        assert refused(connect(mosquitto, "mallory", monitor_id, clean_start=clean_start))
    back = connect(mosquitto, service.username, monitor_id, clean_start=False)
    assert back.connected()
    for i in range(5):
        assert back.expect(f"queued {i}", timeout=5)
    reasons = AuthEvent.objects.filter(username="mallory").values_list("reason", flat=True)
    assert set(reasons) == {f"client id {monitor_id!r} is reserved for the service account "
                            f"{service.username!r}"}  # fmt: skip
    for session in (alice, back):
        session.close()


def test_nobody_takes_a_live_devices_client_id_nor_its_queue(
    mosquitto: Broker, device: Account, mallory: Account
) -> None:
    victim = connect(mosquitto, "alice", "alice-1", clean_start=False)
    assert victim.connected()
    assert not victim.subscribe("devices/alice/#", qos=1).is_failure
    sender = connect(mosquitto, "alice", "alice-sender")
    for clean_start in (True, False):
        assert refused(connect(mosquitto, "mallory", "alice-1", clean_start=clean_start))
    assert not victim.disconnected.is_set()
    sender.publish("devices/alice/cmd", "still yours")
    assert victim.expect("still yours", timeout=5)

    victim.close()
    for i in range(3):
        assert not sender.publish("devices/alice/cmd", f"queued {i}").is_failure
    assert refused(connect(mosquitto, "mallory", "alice-1", clean_start=True))
    back = connect(mosquitto, "alice", "alice-1", clean_start=False)
    assert back.connected()
    for i in range(3):
        assert back.expect(f"queued {i}", timeout=5)
    reasons = AuthEvent.objects.filter(username="mallory").values_list("reason", flat=True)
    assert set(reasons) == {"client id 'alice-1' is in use by account 'alice'"}
    for session in (back, sender):
        session.close()
