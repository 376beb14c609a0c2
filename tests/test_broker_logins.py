"""Logins through a real Mosquitto, its plugin asking the live Django: who gets in, over what."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from brokerauth.models import Account, AuthEvent
from tests.brokers import NOT_AUTHORIZED, Broker, MqttSession, change_bound, live_port, wait_for
from tests.conftest import DEVICE_PASSWORD

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

PROTOCOLS = pytest.mark.parametrize(
    "protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["mqtt5", "mqtt311"]
)
# What a change made in Django may take to reach the broker: the web process's policy refresh
# plus the plugin's decision cache (0 s in the `mosquitto` fixture), and some slack.


def login(
    broker: Broker, username: str | None, password: str | None, client_id: str, **kw: Any
) -> MqttSession:
    session = broker.session(username, password, client_id, **kw)
    session.connect(timeout=8)
    return session


@PROTOCOLS
def test_a_device_logs_in_with_its_password(
    mosquitto: Broker, device: Account, protocol: int
) -> None:
    session = login(mosquitto, "alice", DEVICE_PASSWORD, "alice-1", protocol=protocol)
    assert session.connected()
    session.close()


@PROTOCOLS
@pytest.mark.parametrize(
    ("username", "password"),
    [("alice", "wrong password"), ("nobody", DEVICE_PASSWORD), ("alice", "")],
    ids=["wrong-password", "unknown-user", "empty-password"],
)
def test_bad_credentials_are_not_authorised(
    mosquitto: Broker, device: Account, protocol: int, username: str, password: str
) -> None:
    session = login(mosquitto, username, password, "dev-1", protocol=protocol)
    assert session.connack is not None
    assert session.connack.value == NOT_AUTHORIZED  # 3.1.1: rc 5, which paho reports as 0x87


@PROTOCOLS
def test_a_disabled_account_is_not_authorised(
    mosquitto: Broker, device: Account, protocol: int
) -> None:
    device.is_active = False
    device.save()
    session = login(mosquitto, "alice", DEVICE_PASSWORD, "alice-1", protocol=protocol)
    assert session.connack is not None and session.connack.value == NOT_AUTHORIZED


@PROTOCOLS
def test_an_account_bound_to_a_client_id_refuses_others(
    mosquitto: Broker, device: Account, protocol: int
) -> None:
    device.client_id = "alice-1"
    device.save()
    other = login(mosquitto, "alice", DEVICE_PASSWORD, "alice-2", protocol=protocol)
    assert other.connack is not None and other.connack.value == NOT_AUTHORIZED
    bound_client = login(mosquitto, "alice", DEVICE_PASSWORD, "alice-1", protocol=protocol)
    assert bound_client.connected()
    bound_client.close()


def test_a_client_without_credentials_is_not_authorised(mosquitto: Broker) -> None:
    session = login(mosquitto, None, None, "anonymous-1")
    assert session.connack is not None and session.connack.value == NOT_AUTHORIZED


def test_plain_mqtt_on_the_tls_port_gets_no_connack(mosquitto: Broker, device: Account) -> None:
    session = login(mosquitto, "alice", DEVICE_PASSWORD, "alice-1", tls=False)
    assert session.connack is None
    assert session.disconnected.is_set()
    assert mosquitto.alive()


def test_a_client_trusting_another_ca_refuses_the_broker(
    mosquitto: Broker, device: Account, other_ca: Path
) -> None:
    session = mosquitto.session("alice", DEVICE_PASSWORD, "alice-1", ca_file=other_ca / "ca.crt")
    with pytest.raises(ssl.SSLCertVerificationError):
        session.client.connect("127.0.0.1", mosquitto.port, keepalive=30)
    assert session.connack is None
    assert mosquitto.alive()


def test_a_changed_password_takes_effect_at_once(mosquitto: Broker, device: Account) -> None:
    first = login(mosquitto, "alice", DEVICE_PASSWORD, "alice-1")
    assert first.connected()
    first.close()
    device.change_password("a brand new secret")

    def refused_old_and_accepted_new() -> bool:
        old = login(mosquitto, "alice", DEVICE_PASSWORD, "alice-2")
        if old.connected():
            old.close()
            return False
        new = login(mosquitto, "alice", "a brand new secret", "alice-3")
        new.close()
        return new.connected()

    wait_for(refused_old_and_accepted_new, change_bound(), "the new password on the broker")


def test_a_login_is_reused_for_the_cache_ttl_and_a_disabled_account_refused_after_it(
    live_server: Any, start_mosquitto: Callable[..., Broker], device: Account
) -> None:
    cache_ttl = 3
    port = live_port(live_server)
    broker = start_mosquitto(auth_port=port, cache_ttl=cache_ttl)
    for _ in range(2):
        session = login(broker, "alice", DEVICE_PASSWORD, "alice-1")
        assert session.connected()
        session.close()
    # Django audits every login it is asked about: the second came from the plugin's cache.
    assert AuthEvent.objects.filter(kind=AuthEvent.Kind.LOGIN, username="alice").count() == 1
    Account.objects.filter(pk=device.pk).update(is_active=False)

    def refused() -> bool:
        session = login(broker, "alice", DEVICE_PASSWORD, "alice-1")
        session.close()
        return not session.connected()

    wait_for(refused, change_bound(cache_ttl), "the disabled account refused")
